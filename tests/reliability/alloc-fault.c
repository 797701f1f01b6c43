/*
 * Allocation-failure injection, where procreg can fail an allocation.
 *
 * glib's g_malloc() family aborts the process when memory runs out (by
 * design, documented); code that uses it cannot return PROCREG_ENOMEM, so
 * failures are injected only where procreg calls an allocator that can
 * fail: g_try_malloc() & co (core/key.c) and the C library's malloc(),
 * calloc() and realloc() (the ckht backend, its epoch reclamation, the
 * optimized backend's cache, and what Concurrency Kit allocates through
 * their callbacks).
 *
 * How: this program is linked with -Wl,--wrap for those functions, so
 * every call to them from procreg's code (the static library's objects,
 * nothing in shared libraries) goes through the wrappers below, which
 * count the calls made on the test thread and fail the Nth.  For each
 * path (open, key_new, register, lookup_entry, list, update REPLACE and
 * MERGE, find, unregister) and each backend, N runs from 0 until a run
 * makes fewer than N+1 such calls; each run checks that
 *  - the call returns 0 or PROCREG_ENOMEM (with a GError of that code),
 *    nothing else;
 *  - after PROCREG_ENOMEM the registry holds what it held before (the
 *    operation had no effect), after 0 what the operation should give;
 *  - the registry then works: a register/lookup/update/list/unregister
 *    round succeeds and the registry closes;
 *  - nothing leaked: LeakSanitizer at exit in sanitizer builds, valgrind
 *    in the valgrind setup (see doc/reliability.md).
 * The number of failure points found per path and backend is printed
 * ("alloc-fault: ..." lines); 0 means the path makes no fallible
 * allocation on the calling thread.
 */
#include <procreg/procreg.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the wrappers ---- */

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
gpointer __real_g_try_malloc(gsize size);
gpointer __real_g_try_malloc0(gsize size);
gpointer __real_g_try_realloc(gpointer p, gsize size);

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
gpointer __wrap_g_try_malloc(gsize size);
gpointer __wrap_g_try_malloc0(gsize size);
gpointer __wrap_g_try_realloc(gpointer p, gsize size);

static _Thread_local bool armed; /* count on this thread only */
static _Thread_local long calls;
static _Thread_local long fail_at = -1;
static _Thread_local long injected;

static bool fail_now(void)
{
    if (!armed)
        return false;
    if (calls++ != fail_at)
        return false;
    injected++;
    return true;
}

void *__wrap_malloc(size_t size)
{
    return fail_now() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    return fail_now() ? NULL : __real_realloc(p, size);
}

gpointer __wrap_g_try_malloc(gsize size)
{
    return fail_now() ? NULL : __real_g_try_malloc(size);
}

gpointer __wrap_g_try_malloc0(gsize size)
{
    return fail_now() ? NULL : __real_g_try_malloc0(size);
}

gpointer __wrap_g_try_realloc(gpointer p, gsize size)
{
    return fail_now() ? NULL : __real_g_try_realloc(p, size);
}

static void arm(long n)
{
    calls = 0;
    injected = 0;
    fail_at = n;
    armed = true;
}

static void disarm(void)
{
    armed = false;
    fail_at = -1;
}

/* ---- the paths ---- */

#define NS "af"
#define MANY 120

static GVariant *meta(const char *tag)
{
    return g_variant_ref_sink(
        g_variant_new_parsed("{'tag': <%s>, 'n': <7>}", tag));
}

static procreg *open_filled(const char *spec)
{
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0)
        g_error("cannot open %s: %s", spec, err->message);
    /* Enough entries that growth paths run. */
    for (int i = 0; i < 40; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "pre%d", i);
        GVariant *m = meta(i % 2 ? "odd" : "even");
        g_assert_cmpint(procreg_register(reg, NS, name, NULL, m, NULL, NULL),
                        ==, 0);
        g_variant_unref(m);
    }
    GVariant *m = meta("x");
    g_assert_cmpint(procreg_register(reg, NS, "target", NULL, m, NULL, NULL),
                    ==, 0);
    g_variant_unref(m);
    return reg;
}

/* A snapshot of everything the registry holds, as text. */
static char *snapshot(procreg *reg)
{
    procreg_entry *a = NULL;
    size_t n = 0;
    g_assert_cmpint(procreg_list(reg, NULL, &a, &n, NULL), ==, 0);
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < n; i++) {
        char *m = a[i].metadata ? g_variant_print(a[i].metadata, TRUE) : NULL;
        g_string_append_printf(s, "%s/%s %d %" G_GUINT64_FORMAT " %s\n",
                               a[i].ns, a[i].name, (int)a[i].owner.pid,
                               a[i].revision, m ? m : "-");
        g_free(m);
    }
    procreg_entries_free(a, n);
    return g_string_free(s, FALSE);
}

/* Still works after the failure: a whole round of operations. */
static void check_usable(procreg *reg)
{
    GError *err = NULL;
    GVariant *m = meta("after");
    g_assert_cmpint(procreg_register(reg, NS, "after", NULL, m, NULL, &err),
                    ==, 0);
    g_assert_no_error(err);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, NS, "after", &o, NULL), ==, 0);
    g_assert_cmpint(procreg_update_metadata(reg, NS, "after", m,
                                            PROCREG_UPDATE_MERGE, NULL),
                    ==, 0);
    size_t n = 0;
    g_assert_cmpint(procreg_find_count(reg, NS, "tag",
                                       g_variant_new_string("after"), &n,
                                       NULL), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    g_assert_cmpint(procreg_unregister(reg, NS, "after", NULL), ==, 0);
    g_variant_unref(m);
}

typedef enum {
    P_OPEN,
    P_KEY_NEW,
    P_REGISTER,
    P_REGISTER_MANY,
    P_LOOKUP,
    P_LOOKUP_ENTRY,
    P_LIST,
    P_UPDATE_REPLACE,
    P_UPDATE_MERGE,
    P_FIND,
    P_UNREGISTER,
    P_COUNT
} path;

static const char *const path_names[P_COUNT] = {
    "open", "key_new", "register", "register_many", "lookup",
    "lookup_entry", "list",
    "update_replace", "update_merge", "find", "unregister",
};

/* Run @p once with the Nth fallible allocation failing (never when
 * @n < 0).  Returns whether a failure was injected. */
static bool run_once(const char *spec, path p, long n)
{
    GError *err = NULL;
    int rc;
    if (p == P_OPEN) {
        procreg *reg = NULL;
        arm(n);
        rc = procreg_open(spec, &reg, &err);
        disarm();
        bool hit = injected > 0;
        if (rc != 0) {
            g_assert_cmpint(rc, ==, PROCREG_ENOMEM);
            g_assert_error(err, PROCREG_ERROR, PROCREG_ENOMEM);
            g_assert_null(reg);
            g_clear_error(&err);
            g_assert_true(hit);
            return hit;
        }
        g_assert_no_error(err);
        check_usable(reg);
        procreg_close(reg);
        return hit;
    }

    procreg *reg = open_filled(spec);
    char *before = snapshot(reg);
    procreg_key *key = NULL;
    GVariant *m = meta("new");
    procreg_entry e = {0};
    procreg_entry *a = NULL;
    size_t count = 0;
    procreg_owner o = {0};
    bool many_ok[MANY] = {false};
    arm(n);
    switch (p) {
    case P_KEY_NEW:
        rc = procreg_key_new(NS, "fresh", &key, &err);
        break;
    case P_REGISTER:
        rc = procreg_register(reg, NS, "fresh", NULL, m, &e, &err);
        break;
    case P_REGISTER_MANY:
        /* Enough that tables grow; each may fail on its own. */
        rc = 0;
        for (int i = 0; i < MANY; i++) {
            char name[16];
            g_snprintf(name, sizeof name, "many%d", i);
            GError *one = NULL;
            int r = procreg_register(reg, NS, name, NULL, m, NULL, &one);
            if (r == 0) {
                many_ok[i] = true;
            } else {
                if (r != PROCREG_ENOMEM)
                    g_error("%s register_many, allocation %ld failing: %s",
                            spec, n, one ? one->message : "?");
                g_assert_error(one, PROCREG_ERROR, PROCREG_ENOMEM);
                g_error_free(one);
                rc = r;
            }
        }
        break;
    case P_LOOKUP:
        /* The hot path has no PROCREG_ENOMEM: a failure inside (a cache
         * fill) must be absorbed. */
        rc = procreg_lookup(reg, NS, "target", &o, &err);
        if (rc == 0)
            rc = procreg_lookup(reg, NS, "target", &o, &err);
        if (rc == 0)
            rc = procreg_lookup(reg, NS, "absent", &o, NULL) ==
                         PROCREG_ENOTFOUND ? 0 : -1;
        break;
    case P_LOOKUP_ENTRY:
        rc = procreg_lookup_entry(reg, NS, "target", &e, &err);
        break;
    case P_LIST:
        rc = procreg_list(reg, NS, &a, &count, &err);
        break;
    case P_UPDATE_REPLACE:
        rc = procreg_update_metadata(reg, NS, "target", m,
                                     PROCREG_UPDATE_REPLACE, &err);
        break;
    case P_UPDATE_MERGE:
        rc = procreg_update_metadata(reg, NS, "target", m,
                                     PROCREG_UPDATE_MERGE, &err);
        break;
    case P_FIND:
        rc = procreg_find(reg, NS, "tag", g_variant_new_string("odd"), &a,
                          &count, &err);
        break;
    case P_UNREGISTER:
        rc = procreg_unregister(reg, NS, "target", &err);
        break;
    default:
        g_assert_not_reached();
    }
    disarm();
    bool hit = injected > 0;
    char *after = snapshot(reg);
    if (p == P_LOOKUP && rc != 0)
        g_error("%s lookup, allocation %ld failing: %s", spec, n,
                procreg_strerror(rc));
    if (p == P_REGISTER_MANY) {
        /* Exactly the registrations that succeeded are there. */
        for (int i = 0; i < MANY; i++) {
            char name[16];
            g_snprintf(name, sizeof name, "many%d", i);
            procreg_owner x;
            g_assert_cmpint(procreg_lookup(reg, NS, name, &x, NULL), ==,
                            many_ok[i] ? 0 : PROCREG_ENOTFOUND);
        }
        size_t total = 0;
        g_assert_cmpint(procreg_count(reg, NS, &total, NULL), ==, 0);
        size_t ok = 0;
        for (int i = 0; i < MANY; i++)
            ok += many_ok[i];
        g_assert_cmpuint(total, ==, 41 + ok);
        g_assert_true(rc == 0 || hit);
    } else if (rc != 0) {
        /* Only an injected failure may fail, and only as ENOMEM, and the
         * operation must not have happened. */
        if (rc != PROCREG_ENOMEM || !hit)
            g_error("%s %s, allocation %ld failing: %s (%s)", spec,
                    path_names[p], n, procreg_strerror(rc),
                    err ? err->message : "no message");
        g_assert_error(err, PROCREG_ERROR, PROCREG_ENOMEM);
        g_clear_error(&err);
        g_assert_cmpstr(after, ==, before);
        g_assert_null(key);
        g_assert_null(a);
        g_assert_null(e.metadata);
    } else {
        g_assert_no_error(err);
        switch (p) {
        case P_KEY_NEW:
            g_assert_cmpstr(procreg_key_name(key), ==, "fresh");
            break;
        case P_REGISTER:
            g_assert_cmpint(procreg_lookup(reg, NS, "fresh", &o, NULL), ==, 0);
            break;
        case P_LOOKUP_ENTRY:
            g_assert_nonnull(e.metadata);
            break;
        case P_LIST:
            g_assert_cmpuint(count, ==, 41);
            break;
        case P_FIND:
            g_assert_cmpuint(count, ==, 20);
            break;
        case P_UPDATE_REPLACE:
        case P_UPDATE_MERGE:
        case P_UNREGISTER:
            g_assert_cmpstr(after, !=, before);
            break;
        default:
            break;
        }
    }
    check_usable(reg);
    procreg_entries_free(a, count);
    procreg_entry_clear(&e);
    procreg_key_unref(key);
    g_variant_unref(m);
    g_free(before);
    g_free(after);
    procreg_close(reg);
    return hit;
}

typedef struct {
    char *spec;
    path p;
} fault_case;

static void test_path(gconstpointer data)
{
    const fault_case *c = data;
    /* A run without failures first: the path works. */
    run_once(c->spec, c->p, -1);
    long n = 0;
    while (run_once(c->spec, c->p, n))
        n++;
    char *line = g_strdup_printf("alloc-fault: %s %s: %ld fallible "
                                 "allocations, each failed once: every "
                                 "failure gave PROCREG_ENOMEM or was "
                                 "absorbed, changed nothing, and the "
                                 "registry stayed usable",
                                 c->spec, path_names[c->p], n);
    printf("%s\n", line);
    g_free(line);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* The wrappers are in place: a failure injected by hand must show. */
    void *(*volatile alloc)(size_t) = malloc; /* not optimised away */
    arm(0);
    void *p = alloc(16);
    disarm();
    if (p != NULL)
        g_error("malloc is not wrapped: link with -Wl,--wrap=malloc");

    char **names = procreg_backend_names();
    const char *const *have = (const char *const *)names;
    GPtrArray *specs = g_ptr_array_new();
    g_ptr_array_add(specs, "ghash");
    if (g_strv_contains(have, "ckht"))
        g_ptr_array_add(specs, "ckht");
    if (g_strv_contains(have, "optimized")) {
        g_ptr_array_add(specs, "optimized:inner=ghash");
        if (g_strv_contains(have, "ckht"))
            g_ptr_array_add(specs, "optimized:inner=ckht");
    }
    fault_case *cases = g_new0(fault_case, specs->len * P_COUNT);
    for (guint i = 0; i < specs->len; i++) {
        for (int q = 0; q < P_COUNT; q++) {
            fault_case *c = &cases[i * P_COUNT + q];
            c->spec = specs->pdata[i];
            c->p = (path)q;
            char *label = g_strdup(c->spec);
            g_strdelimit(label, ":=,", '-');
            char *tp = g_strdup_printf("/reliability/alloc-fault/%s/%s", label,
                                       path_names[q]);
            g_test_add_data_func(tp, c, test_path);
            g_free(tp);
            g_free(label);
        }
    }
    int rc = g_test_run();
    g_free(cases);
    g_ptr_array_unref(specs);
    g_strfreev(names);
    return rc;
}
