/*
 * The hot path allocates nothing: a lookup, hit or miss, with no GError
 * makes no heap allocation, whatever the form (strings or prepared key).
 *
 * Allocations are counted by interposing malloc/calloc/realloc in this
 * program over glibc's (__libc_* entry points), for the calling thread
 * only.  Sanitizer builds own malloc themselves, so there the test is
 * skipped.
 */
#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND 1
#endif
#include <procreg/backend.h>

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COUNTING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||   \
    __has_feature(memory_sanitizer)
#define COUNTING 0
#endif
#endif
#if !defined(COUNTING) && defined(__GLIBC__)
#define COUNTING 1
#endif
#ifndef COUNTING
#define COUNTING 0
#endif

static _Thread_local int counting;
static _Thread_local unsigned long allocations;

#if COUNTING
void *__libc_malloc(size_t size);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t size);

void *malloc(size_t size);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t size);

void *malloc(size_t size)
{
    if (counting)
        allocations++;
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    if (counting)
        allocations++;
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
    if (counting)
        allocations++;
    return __libc_realloc(p, size);
}
#endif

static void check_backend(const char *spec)
{
    procreg *reg = NULL;
    GError *err = NULL;
    int rc = procreg_open(spec, &reg, &err);
    g_assert_no_error(err);
    g_assert_cmpint(rc, ==, 0);
    g_assert_cmpint(procreg_register(reg, "hot", "present", NULL,
                                     g_variant_new_parsed("{'a': <1>}"), NULL,
                                     NULL), ==, 0);
    for (int i = 0; i < 20; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "other%d", i);
        g_assert_cmpint(procreg_register(reg, "hot", name, NULL, NULL, NULL,
                                         NULL), ==, 0);
    }
    procreg_key *hit = NULL, *miss = NULL;
    g_assert_cmpint(procreg_key_new("hot", "present", &hit, NULL), ==, 0);
    g_assert_cmpint(procreg_key_new("hot", "absent", &miss, NULL), ==, 0);
    procreg_owner o;
    /* Warm up whatever is made once (thread-locals, lazy tables). */
    for (int i = 0; i < 3; i++) {
        (void)procreg_lookup(reg, "hot", "present", &o, NULL);
        (void)procreg_lookup(reg, "hot", "absent", &o, NULL);
        (void)procreg_lookup(reg, "cold", "absent", &o, NULL);
        (void)procreg_lookup_key(reg, hit, &o, NULL);
        (void)procreg_lookup_key(reg, miss, &o, NULL);
    }

    static const char *const what[] = {"string hit", "string miss",
                                       "miss in an empty namespace",
                                       "key hit", "key miss"};
    for (int form = 0; form < 5; form++) {
        allocations = 0;
        counting = 1;
        int rcs[100];
        for (int i = 0; i < 100; i++) {
            switch (form) {
            case 0:
                rcs[i] = procreg_lookup(reg, "hot", "present", &o, NULL);
                break;
            case 1:
                rcs[i] = procreg_lookup(reg, "hot", "absent", &o, NULL);
                break;
            case 2:
                rcs[i] = procreg_lookup(reg, "cold", "absent", &o, NULL);
                break;
            case 3:
                rcs[i] = procreg_lookup_key(reg, hit, &o, NULL);
                break;
            default:
                rcs[i] = procreg_lookup_key(reg, miss, &o, NULL);
                break;
            }
        }
        counting = 0;
        unsigned long n = allocations;
        for (int i = 0; i < 100; i++)
            g_assert_cmpint(rcs[i], ==,
                            form == 0 || form == 3 ? 0 : PROCREG_ENOTFOUND);
        if (n != 0)
            g_error("%s: 100 lookups (%s) made %lu allocations", spec,
                    what[form], n);
    }
    /* The counter works: a lookup with a GError on a miss allocates. */
    allocations = 0;
    counting = 1;
    rc = procreg_lookup(reg, "hot", "absent", &o, &err);
    counting = 0;
    g_assert_cmpint(rc, ==, PROCREG_ENOTFOUND);
    g_assert_cmpuint(allocations, >, 0);
    g_clear_error(&err);

    procreg_key_unref(hit);
    procreg_key_unref(miss);
    procreg_close(reg);
}

static void test_lookup_no_alloc(void)
{
    if (!COUNTING) {
        g_test_skip("allocation counting needs glibc without sanitizers");
        return;
    }
    char **names = procreg_backend_names();
    for (char **n = names; *n; n++) {
        /* Built-in backends that need no options. */
        if (strcmp(*n, "ghash") == 0 || strcmp(*n, "ckht") == 0)
            check_backend(*n);
    }
    g_strfreev(names);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/core/alloc/lookup-no-alloc", test_lookup_no_alloc);
    return g_test_run();
}
