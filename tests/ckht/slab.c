/*
 * The entry slab (backends/slab/slab.c), through ckht and ghash and
 * alone: slots are reused by size, what the slab keeps is in the
 * figures, large entries go to malloc, and an allocation and a release
 * at the same time lose no slot.
 */
#include <procreg/backend.h>

#include <stdio.h>

#include "ckht/ckht-internal.h"

static guint64 stat_of(procreg_backend *b, const char *name)
{
    GVariantDict d;
    guint64 value = 0;

    g_variant_dict_init(&d, NULL);
    procreg_backend_stats(b, &d);
    GVariant *stats = g_variant_ref_sink(g_variant_dict_end(&d));
    g_assert_true(g_variant_lookup(stats, name, "t", &value));
    g_variant_unref(stats);
    return value;
}

static void wait_reclaimed(procreg_backend *b)
{
    for (int tries = 0; tries < 1000 && stat_of(b, "epoch_pending") > 0;
         tries++)
        g_usleep(1000);
    g_assert_cmpuint(stat_of(b, "epoch_pending"), ==, 0);
}

/* Name @prefix followed by @i in 7 digits. */
static procreg_key *key_of(const char *ns, const char *prefix, size_t i)
{
    procreg_key *key = NULL;
    char *name = g_strdup_printf("%s%07zu", prefix, i);

    g_assert_cmpint(procreg_key_new(ns, name, &key, NULL), ==, 0);
    g_free(name);
    return key;
}

static void put(procreg_backend *b, const procreg_record *r,
                const char *ns, const char *prefix, size_t first, size_t n)
{
    for (size_t i = first; i < first + n; i++) {
        procreg_key *key = key_of(ns, prefix, i);
        g_assert_cmpint(procreg_backend_register_entry(b, key, r, NULL, NULL),
                        ==, 0);
        procreg_key_unref(key);
    }
}

static void drop(procreg_backend *b, const char *ns, const char *prefix,
                 size_t first, size_t n)
{
    for (size_t i = first; i < first + n; i++) {
        procreg_key *key = key_of(ns, prefix, i);
        g_assert_cmpint(procreg_backend_unregister(b, key, 0, NULL, NULL), ==,
                        0);
        procreg_key_unref(key);
    }
}

/* Removed entries' slots are kept, shown, and taken by the next entries
 * of their size; the chunks grow only past what was ever live at once. */
static void test_reuse(void)
{
    enum { N = 40000 }; /* 80-byte entries: two 2 MiB chunks */
    procreg_backend *b = NULL;
    procreg_record r = {0};

    g_assert_cmpint(procreg_backend_open("ckht", NULL, &b, NULL), ==, 0);
    procreg_owner_self(&r.owner);
    g_assert_cmpuint(stat_of(b, "entry_slab_bytes"), ==, 0);
    put(b, &r, NULL, "svc-", 0, N);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==, (guint64)N * 80);
    guint64 slab_bytes = stat_of(b, "entry_slab_bytes");
    g_assert_cmpuint(slab_bytes, ==, (guint64)2 << 21);

    drop(b, NULL, "svc-", 0, N);
    wait_reclaimed(b);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==, 0);
    g_assert_cmpuint(stat_of(b, "entry_free_bytes"), ==, (guint64)N * 80);
    g_assert_cmpuint(stat_of(b, "memory_bytes"), >=, (guint64)N * 80);

    /* Other names of the same size take the same slots. */
    put(b, &r, NULL, "web-", 0, N);
    g_assert_cmpuint(stat_of(b, "entry_free_bytes"), ==, 0);
    g_assert_cmpuint(stat_of(b, "entry_slab_bytes"), ==, slab_bytes);
    procreg_backend_close(b);
}

/* ghash keeps its entries in a slab too (released at once, under the
 * core's write lock): the same reuse, the same figures. */
static void test_ghash_reuse(void)
{
    enum { N = 30000 };
    procreg_backend *b = NULL;
    procreg_record r = {0};
    size_t memory = 0;

    g_assert_cmpint(procreg_backend_open("ghash", NULL, &b, NULL), ==, 0);
    procreg_owner_self(&r.owner);
    put(b, &r, NULL, "svc-", 0, N);
    guint64 live = stat_of(b, "entry_bytes");
    g_assert_cmpuint(live % N, ==, 0);
    g_assert_cmpuint(live / N % 16, ==, 0); /* one size class */
    guint64 slab_bytes = stat_of(b, "entry_slab_bytes");
    g_assert_cmpuint(slab_bytes, >=, live);
    drop(b, NULL, "svc-", 0, N);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==, 0);
    g_assert_cmpuint(stat_of(b, "entry_free_bytes"), ==, live);
    g_assert_cmpint(procreg_backend_memory_usage(b, &memory), ==, 0);
    g_assert_cmpuint(memory, >=, live);
    put(b, &r, NULL, "web-", 0, N);
    g_assert_cmpuint(stat_of(b, "entry_free_bytes"), ==, 0);
    g_assert_cmpuint(stat_of(b, "entry_slab_bytes"), ==, slab_bytes);
    procreg_backend_close(b);
}

/* An entry over PROCREG_SLAB_MAX (long names, an owner that does not pack)
 * comes from malloc and goes back to it: the slab never sees it. */
static void test_large_entry(void)
{
    procreg_backend *b = NULL;
    procreg_record r = {.owner = {.pid = -7, .start_time = 1}};
    char ns[PROCREG_NAME_MAX + 1], prefix[PROCREG_NAME_MAX + 1 - 7];

    memset(ns, 'n', sizeof ns - 1);
    ns[sizeof ns - 1] = '\0';
    memset(prefix, 'x', sizeof prefix - 1); /* names of 255 characters */
    prefix[sizeof prefix - 1] = '\0';
    g_assert_cmpint(procreg_backend_open("ckht", NULL, &b, NULL), ==, 0);
    put(b, &r, ns, prefix, 0, 3);
    g_assert_cmpuint(stat_of(b, "entries"), ==, 3);
    g_assert_cmpuint(stat_of(b, "entry_slab_bytes"), ==, 0);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), >, 3 * PROCREG_SLAB_MAX);
    drop(b, ns, prefix, 0, 3);
    wait_reclaimed(b);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==, 0);
    g_assert_cmpuint(stat_of(b, "entry_free_bytes"), ==, 0);
    procreg_backend_close(b);
}

/* The race the slab's lock prevents: an allocation pops a free slot
 * (entries are made before ckht's writer lock is taken) while a release
 * pushes one (epoch reclamation, under that lock).  The hook stops the
 * allocation between reading the free list's head and replacing it, and
 * starts the release there; the release must wait for the allocation, or
 * the allocation's store drops the released slot from the list. */
static procreg_slab slab;
static void *released;
static gint release_done;

static gpointer release_thread(gpointer data)
{
    (void)data;
    procreg_slab_release(released, 80);
    g_atomic_int_set(&release_done, 1);
    return NULL;
}

static GThread *releaser;

static void start_release_inside_pop(void)
{
    procreg_slab_test_hook = NULL;
    releaser = g_thread_new("release", release_thread, NULL);
    /* A release that does not wait for the lock ends well within this. */
    for (int i = 0; i < 200 && !g_atomic_int_get(&release_done); i++)
        g_usleep(1000);
    g_assert_false(g_atomic_int_get(&release_done));
}

static void test_release_during_pop(void)
{
    procreg_slab_init(&slab);
    void *a = procreg_slab_alloc(&slab, 80);
    released = procreg_slab_alloc(&slab, 80);
    g_assert_nonnull(a);
    g_assert_nonnull(released);
    procreg_slab_release(a, 80);

    procreg_slab_test_hook = start_release_inside_pop;
    void *got = procreg_slab_alloc(&slab, 80);
    g_thread_join(releaser);
    g_assert_true(got == a);
    /* The slot released meanwhile is the next one handed out. */
    void *next = procreg_slab_alloc(&slab, 80);
    g_assert_true(next == released);
    size_t chunk_bytes, free_bytes;
    procreg_slab_figures(&slab, &chunk_bytes, &free_bytes);
    g_assert_cmpuint(free_bytes, ==, 0);
    procreg_slab_release(got, 80);
    procreg_slab_release(next, 80);
    procreg_slab_destroy(&slab);
}

/* The VmFlags line of the mapping holding @p in /proc/self/smaps. */
static char *vm_flags_of(const void *p)
{
    char *text = NULL;
    g_assert_true(g_file_get_contents("/proc/self/smaps", &text, NULL, NULL));
    char **lines = g_strsplit(text, "\n", -1);
    char *flags = NULL;
    bool inside = false;
    for (char **l = lines; *l != NULL && flags == NULL; l++) {
        unsigned long lo, hi;
        if (sscanf(*l, "%lx-%lx ", &lo, &hi) == 2)
            inside = lo <= (uintptr_t)p && (uintptr_t)p < hi;
        else if (inside && g_str_has_prefix(*l, "VmFlags:"))
            flags = g_strdup(*l);
    }
    g_strfreev(lines);
    g_free(text);
    g_assert_nonnull(flags);
    return flags;
}

/* The first chunk is kept off transparent huge pages (a registry of a
 * few entries must not cost 2 MiB where THP is "always"); later ones
 * are left to the system. */
static void test_first_chunk_small_pages(void)
{
    if (!g_file_test("/sys/kernel/mm/transparent_hugepage/enabled",
                     G_FILE_TEST_EXISTS)) {
        g_test_skip("this kernel has no transparent huge pages");
        return;
    }
    procreg_slab s;
    procreg_slab_init(&s);
    void *first = procreg_slab_alloc(&s, 80);
    char *flags = vm_flags_of(first);
    g_assert_nonnull(strstr(flags, " nh"));
    g_free(flags);
    /* Fill the first chunk: the next slot comes from a second. */
    GPtrArray *big = g_ptr_array_new();
    void *p;
    do {
        p = procreg_slab_alloc(&s, 512);
        g_ptr_array_add(big, p);
    } while (((uintptr_t)p ^ (uintptr_t)first) < ((size_t)2 << 20));
    flags = vm_flags_of(p);
    g_assert_null(strstr(flags, " nh"));
    g_free(flags);
    g_assert_cmpuint(big->len, >, 4000);
    for (guint i = 0; i < big->len; i++)
        procreg_slab_release(big->pdata[i], 512);
    g_ptr_array_free(big, TRUE);
    procreg_slab_release(first, 80);
    procreg_slab_destroy(&s);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ckht/slab/reuse", test_reuse);
    g_test_add_func("/ckht/slab/large-entry", test_large_entry);
    g_test_add_func("/ckht/slab/ghash-reuse", test_ghash_reuse);
    g_test_add_func("/ckht/slab/release-during-pop", test_release_during_pop);
    g_test_add_func("/ckht/slab/first-chunk-small-pages",
                    test_first_chunk_small_pages);
    return g_test_run();
}
