/*
 * The entry slab (backends/slab/slab.c), through ckht and ghash and
 * alone: slots are reused by size, what the slab keeps is in the
 * figures, large entries go to malloc, and an allocation and a release
 * at the same time lose no slot.  Then every path by which ckht makes or
 * frees an entry (register, a register that finds its key taken,
 * update_metadata, unregister, unregister_owned, drop_namespace, close),
 * entries of every front at class boundaries and at PROCREG_SLAB_MAX,
 * and two instances at once, checked through the figures: each slot
 * goes back to its own class in its own instance.
 */
#include <procreg/backend.h>

#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

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
    enum { N = 40000 }; /* 72-byte entries: two 2 MiB chunks */
    procreg_backend *b = NULL;
    procreg_record r = {0};

    g_assert_cmpint(procreg_backend_open("ckht", NULL, &b, NULL), ==, 0);
    procreg_owner_self(&r.owner);
    g_assert_cmpuint(stat_of(b, "entry_slab_bytes"), ==, 0);
    put(b, &r, NULL, "svc-", 0, N);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==, (guint64)N * 72);
    guint64 slab_bytes = stat_of(b, "entry_slab_bytes");
    g_assert_cmpuint(slab_bytes, ==, (guint64)2 << 21);

    drop(b, NULL, "svc-", 0, N);
    wait_reclaimed(b);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==, 0);
    g_assert_cmpuint(stat_of(b, "entry_free_bytes"), ==, (guint64)N * 72);
    g_assert_cmpuint(stat_of(b, "memory_bytes"), >=, (guint64)N * 72);

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
    g_assert_cmpuint(live / N % 8, ==, 0); /* one size class */
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

/* ------------------------------------------------------------------------ */
/* Every path that makes or frees an entry, seen through the figures: each
 * slot an entry took is back on its class's free list once it is gone,
 * in the instance it came from, and no other. */

static size_t free_bytes_now(procreg_backend *b)
{
    wait_reclaimed(b);
    return stat_of(b, "entry_free_bytes");
}

/* A key of @ns_len + 1 + @name_len bytes: 'n's, and a name that starts
 * with @tag, padded with 'x'. */
static procreg_key *key_sized(size_t ns_len, size_t name_len, const char *tag)
{
    char ns[PROCREG_NAME_MAX + 1], name[PROCREG_NAME_MAX + 1];
    procreg_key *key = NULL;
    size_t tag_len = strlen(tag);

    g_assert_cmpuint(ns_len, <=, PROCREG_NAME_MAX);
    g_assert_cmpuint(name_len, <=, PROCREG_NAME_MAX);
    g_assert_cmpuint(tag_len, <=, name_len);
    memset(ns, 'n', ns_len);
    ns[ns_len] = '\0';
    memcpy(name, tag, tag_len);
    memset(name + tag_len, 'x', name_len - tag_len);
    name[name_len] = '\0';
    g_assert_cmpint(procreg_key_new(ns, name, &key, NULL), ==, 0);
    return key;
}

static GVariant *metadata_new(const char *value)
{
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "v", "s", value);
    return g_variant_ref_sink(g_variant_dict_end(&d));
}

#define HEADER_BYTES offsetof(ckht_entry, key)

/* Entries of every front (none, metadata, an owner that does not pack,
 * both) and sizes on both sides of a class boundary and of
 * PROCREG_SLAB_MAX: each costs its slot, or malloc for 513 bytes and more,
 * and gives the same slot back when it goes. */
static void test_sizes_and_fronts(void)
{
    static const struct {
        size_t size;     /* the entry's allocation */
        bool in_front;   /* an owner that does not pack */
        bool metadata;
        size_t slot;     /* its slot; 0: malloc */
    } cases[] = {
        {72, false, false, 72},   {73, false, false, 80},
        {80, false, false, 80},   {81, false, false, 88},
        {88, false, true, 88},    {89, false, true, 96},
        {96, true, false, 96},    {112, true, true, 112},
        {113, true, true, 120},   {504, false, false, 504},
        {505, false, false, 512}, {512, false, false, 512},
        {512, true, true, 512},   {513, false, false, 0},
        {513, true, true, 0},     {16 + HEADER_BYTES + 2, false, false, 72},
    };
    procreg_backend *b = NULL;
    GVariant *md = metadata_new("m");
    procreg_key *keys[G_N_ELEMENTS(cases)];
    size_t live_slots = 0;

    g_assert_cmpint(procreg_backend_open("ckht", NULL, &b, NULL), ==, 0);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        procreg_record r = {.metadata = cases[i].metadata ? md : NULL};
        size_t pre = (cases[i].metadata ? 8 : 0) + (cases[i].in_front ? 16 : 0);
        size_t key_size = cases[i].size - pre - HEADER_BYTES;
        size_t ns_len = key_size / 2, name_len = key_size - ns_len - 1;
        char tag[8];

        if (cases[i].in_front)
            r.owner = (procreg_owner){.pid = -7, .start_time = 1};
        else
            procreg_owner_self(&r.owner);
        g_snprintf(tag, sizeof tag, "k%zu", i);
        keys[i] = key_sized(ns_len, name_len, tag);
        guint64 before = stat_of(b, "entry_bytes");
        guint64 slab_before = stat_of(b, "entry_slab_bytes");
        g_assert_cmpint(procreg_backend_register_entry(b, keys[i], &r, NULL,
                                                       NULL), ==, 0);
        guint64 cost = stat_of(b, "entry_bytes") - before -
                       (cases[i].metadata ? g_variant_get_size(md) : 0);
        if (cases[i].slot != 0) {
            g_assert_cmpuint(cost, ==, cases[i].slot);
            live_slots += cases[i].slot;
            g_assert_cmpuint(stat_of(b, "entry_slab_bytes"), ==,
                             (guint64)2 << 20);
        } else {
            g_assert_cmpuint(cost, >=, cases[i].size);
            g_assert_cmpuint(stat_of(b, "entry_slab_bytes"), ==, slab_before);
        }
    }
    /* Every entry reads back whole. */
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        procreg_entry e = {0};
        g_assert_cmpint(procreg_backend_lookup_entry(b, keys[i], &e, NULL), ==,
                        0);
        g_assert_cmpint(e.owner.pid, ==,
                        cases[i].in_front ? -7 : (int)getpid());
        g_assert_true((e.metadata != NULL) == cases[i].metadata);
        procreg_entry_clear(&e);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
        g_assert_cmpint(procreg_backend_unregister(b, keys[i], 0, NULL, NULL),
                        ==, 0);
    g_assert_cmpuint(free_bytes_now(b), ==, live_slots);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==, 0);
    /* The same entries again: each takes a slot of its own class back. */
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        procreg_record r = {.metadata = cases[i].metadata ? md : NULL};
        if (cases[i].in_front)
            r.owner = (procreg_owner){.pid = -7, .start_time = 1};
        else
            procreg_owner_self(&r.owner);
        g_assert_cmpint(procreg_backend_register_entry(b, keys[i], &r, NULL,
                                                       NULL), ==, 0);
    }
    g_assert_cmpuint(stat_of(b, "entry_free_bytes"), ==, 0);
    g_assert_cmpuint(stat_of(b, "entry_slab_bytes"), ==, (guint64)2 << 20);
    procreg_backend_close(b);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
        procreg_key_unref(keys[i]);
    g_variant_unref(md);
}

/* update_metadata (a new entry, the old one retired), a register that
 * finds its key taken (its entry never published), unregister_owned and
 * drop_namespace each give their slots back. */
static void test_write_paths(void)
{
    procreg_backend *b = NULL;
    procreg_record r = {0};
    GVariant *md = metadata_new("m");
    /* 80-byte entries without metadata, 88 with. */
    procreg_key *k = key_sized(10, 22, "k");
    procreg_key *d[3];

    g_assert_cmpint(procreg_backend_open("ckht", NULL, &b, NULL), ==, 0);
    procreg_owner_self(&r.owner);
    g_assert_cmpint(procreg_backend_register_entry(b, k, &r, NULL, NULL), ==,
                    0);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==, 80);

    /* Metadata added: an entry of 88 in, the 80 out. */
    g_assert_cmpint(procreg_backend_update_metadata(b, k, md, 0, NULL, NULL),
                    ==, 0);
    g_assert_cmpuint(free_bytes_now(b), ==, 80);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==,
                     88 + g_variant_get_size(md));
    /* Metadata replaced: an 88 for an 88. */
    g_assert_cmpint(procreg_backend_update_metadata(b, k, md, 0, NULL, NULL),
                    ==, 0);
    g_assert_cmpuint(free_bytes_now(b), ==, 80 + 88);
    /* Metadata dropped: back to 80 (the free one), the 88 out. */
    g_assert_cmpint(procreg_backend_update_metadata(b, k, NULL, 0, NULL, NULL),
                    ==, 0);
    g_assert_cmpuint(free_bytes_now(b), ==, 88 + 88);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==, 80);

    /* Taken: the entry made for it goes back at once, no reader saw it. */
    g_assert_cmpint(procreg_backend_register_entry(b, k, &r, NULL, NULL), ==,
                    PROCREG_EEXISTS);
    g_assert_cmpuint(stat_of(b, "entry_free_bytes"), ==, 80 + 88 + 88);
    /* With metadata: it takes a free 88 and gives it back. */
    procreg_record rm = r;
    rm.metadata = md;
    g_assert_cmpint(procreg_backend_register_entry(b, k, &rm, NULL, NULL), ==,
                    PROCREG_EEXISTS);
    g_assert_cmpuint(stat_of(b, "entry_free_bytes"), ==, 80 + 88 + 88);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==, 80);

    /* unregister_owned: another owner's try keeps it, the owner's frees. */
    procreg_owner other = {.pid = -9, .start_time = 3};
    g_assert_cmpint(procreg_backend_unregister_owned(b, k, &other, NULL), ==,
                    PROCREG_EPERM);
    g_assert_cmpuint(free_bytes_now(b), ==, 80 + 88 + 88);
    g_assert_cmpint(procreg_backend_unregister_owned(b, k, &r.owner, NULL), ==,
                    0);
    g_assert_cmpuint(free_bytes_now(b), ==, 2 * 80 + 88 + 88);

    /* drop_namespace: three 80-byte entries of ns "dddddddddd". */
    for (size_t i = 0; i < G_N_ELEMENTS(d); i++) {
        char tag[4];
        g_snprintf(tag, sizeof tag, "d%zu", i);
        d[i] = key_sized(10, 22, tag);
        g_assert_cmpint(procreg_backend_register_entry(b, d[i], &r, NULL,
                                                       NULL), ==, 0);
    }
    /* Two came from the free 80s: one came from the chunk. */
    g_assert_cmpuint(stat_of(b, "entry_free_bytes"), ==, 88 + 88);
    g_assert_cmpint(procreg_backend_drop_namespace(b, "nnnnnnnnnn", NULL,
                                                   NULL), ==, 0);
    g_assert_cmpuint(free_bytes_now(b), ==, 3 * 80 + 88 + 88);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==, 0);
    g_assert_cmpuint(stat_of(b, "entries"), ==, 0);
    procreg_backend_close(b);
    for (size_t i = 0; i < G_N_ELEMENTS(d); i++)
        procreg_key_unref(d[i]);
    procreg_key_unref(k);
    g_variant_unref(md);
}

/* Two instances at once: a slot goes back to the slab of the instance it
 * came from (found from its address), and closing one leaves the other's
 * entries where they are. */
static void test_two_instances(void)
{
    procreg_backend *a = NULL, *b = NULL;
    procreg_record r = {0};
    procreg_key *ka[2], *kb[2];

    procreg_owner_self(&r.owner);
    g_assert_cmpint(procreg_backend_open("ckht", NULL, &a, NULL), ==, 0);
    g_assert_cmpint(procreg_backend_open("ckht", NULL, &b, NULL), ==, 0);
    for (int i = 0; i < 2; i++) {
        char tag[4];
        g_snprintf(tag, sizeof tag, "a%d", i);
        ka[i] = key_sized(10, 22, tag);
        g_snprintf(tag, sizeof tag, "b%d", i);
        kb[i] = key_sized(10, 22, tag);
    }
    g_assert_cmpint(procreg_backend_register_entry(a, ka[0], &r, NULL, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_backend_register_entry(b, kb[0], &r, NULL, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_backend_register_entry(a, ka[1], &r, NULL, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_backend_unregister(a, ka[0], 0, NULL, NULL), ==, 0);
    g_assert_cmpuint(free_bytes_now(a), ==, 80);
    g_assert_cmpuint(free_bytes_now(b), ==, 0);
    /* b's next entry comes from b's chunk, not a's free slot. */
    g_assert_cmpint(procreg_backend_register_entry(b, kb[1], &r, NULL, NULL),
                    ==, 0);
    g_assert_cmpuint(free_bytes_now(a), ==, 80);
    g_assert_cmpuint(free_bytes_now(b), ==, 0);
    procreg_backend_close(a);
    for (int i = 0; i < 2; i++) {
        procreg_entry e = {0};
        g_assert_cmpint(procreg_backend_lookup_entry(b, kb[i], &e, NULL), ==,
                        0);
        g_assert_cmpint(e.owner.pid, ==, r.owner.pid);
        procreg_entry_clear(&e);
        g_assert_cmpint(procreg_backend_unregister(b, kb[i], 0, NULL, NULL),
                        ==, 0);
    }
    g_assert_cmpuint(free_bytes_now(b), ==, 2 * 80);
    g_assert_cmpuint(stat_of(b, "entry_slab_bytes"), ==, (guint64)2 << 20);
    procreg_backend_close(b);
    for (int i = 0; i < 2; i++) {
        procreg_key_unref(ka[i]);
        procreg_key_unref(kb[i]);
    }
}

/* Closing an instance with live entries (with metadata and without) and
 * retired ones (an update's old entries, an unregistered one) releases
 * every one of them: each metadata's last reference goes, which its
 * bytes' destroy notify counts. */
static int md_freed;

static void md_bytes_free(gpointer data)
{
    g_free(data);
    md_freed++;
}

static GVariant *metadata_tracked(const char *value)
{
    GVariant *plain = metadata_new(value);
    gsize size = g_variant_get_size(plain);
    gpointer data = g_memdup2(g_variant_get_data(plain), size);
    GVariant *md = g_variant_ref_sink(g_variant_new_from_data(
        G_VARIANT_TYPE_VARDICT, data, size, TRUE, md_bytes_free, data));

    g_variant_unref(plain);
    return md;
}

static void test_close_releases_all(void)
{
    procreg_backend *b = NULL;
    procreg_record r = {0};
    GVariant *md1 = metadata_tracked("one"), *md2 = metadata_tracked("two");
    procreg_key *k[4];

    md_freed = 0;
    procreg_owner_self(&r.owner);
    r.metadata = md1;
    g_assert_cmpint(procreg_backend_open("ckht", NULL, &b, NULL), ==, 0);
    for (int i = 0; i < 4; i++) {
        char tag[4];
        g_snprintf(tag, sizeof tag, "c%d", i);
        k[i] = key_sized(10, 22, tag);
        g_assert_cmpint(procreg_backend_register_entry(b, k[i], &r, NULL,
                                                       NULL), ==, 0);
    }
    g_assert_cmpint(procreg_backend_update_metadata(b, k[0], NULL, 0, NULL,
                                                    NULL), ==, 0);
    g_assert_cmpint(procreg_backend_update_metadata(b, k[1], md2, 0, NULL,
                                                    NULL), ==, 0);
    g_assert_cmpint(procreg_backend_unregister(b, k[2], 0, NULL, NULL), ==, 0);
    g_variant_unref(md1);
    g_variant_unref(md2);
    g_assert_cmpint(md_freed, ==, 0); /* k[3] and k[1] hold them */
    procreg_backend_close(b);
    g_assert_cmpint(md_freed, ==, 2);
    for (int i = 0; i < 4; i++)
        procreg_key_unref(k[i]);
}

/* Closing while a reader (of any instance: the epoch is shared) holds a
 * read section, so that the retired entries outlive the table's end: the
 * reader lets go only once destroy has freed the live entries (the hook),
 * and the retired ones must then be released into a slab still mapped. */
static gint reader_state; /* 1: in its section; 2: told to leave */

static gpointer reader_thread(gpointer data)
{
    (void)data;
    ck_epoch_record_t *rec = procreg_epoch_read_begin();

    g_assert_nonnull(rec);
    g_atomic_int_set(&reader_state, 1);
    while (g_atomic_int_get(&reader_state) != 2)
        g_usleep(100);
    procreg_epoch_read_end(rec);
    return NULL;
}

static void let_reader_go(void)
{
    procreg_ckht_test_destroy_hook = NULL;
    g_atomic_int_set(&reader_state, 2);
}

static void test_close_with_reader(void)
{
    procreg_backend *b = NULL;
    procreg_record r = {0};
    GVariant *md = metadata_tracked("one");
    procreg_key *k[3];

    md_freed = 0;
    procreg_owner_self(&r.owner);
    r.metadata = md;
    g_assert_cmpint(procreg_backend_open("ckht", NULL, &b, NULL), ==, 0);
    for (int i = 0; i < 3; i++) {
        char tag[4];
        g_snprintf(tag, sizeof tag, "r%d", i);
        k[i] = key_sized(10, 22, tag);
        g_assert_cmpint(procreg_backend_register_entry(b, k[i], &r, NULL,
                                                       NULL), ==, 0);
    }
    g_variant_unref(md);
    g_atomic_int_set(&reader_state, 0);
    GThread *reader = g_thread_new("reader", reader_thread, NULL);
    while (g_atomic_int_get(&reader_state) != 1)
        g_usleep(100);
    for (int i = 0; i < 3; i++)
        g_assert_cmpint(procreg_backend_unregister(b, k[i], 0, NULL, NULL),
                        ==, 0);
    /* The reader holds them: flushed and polled, still pending. */
    g_assert_cmpuint(stat_of(b, "epoch_pending"), ==, 3);
    procreg_ckht_test_destroy_hook = let_reader_go;
    procreg_backend_close(b);
    g_thread_join(reader);
    g_assert_cmpint(md_freed, ==, 1);
    for (int i = 0; i < 3; i++)
        procreg_key_unref(k[i]);
}

/* Out of memory for a chunk (the address space limited, in a child so
 * that nothing else sees the limit): a register and an update that need
 * a slot fail with ENOMEM and change nothing; entries from malloc still
 * come; and once memory is back the slab works (its lock was let go).
 * Sanitizers and valgrind own the address space: skipped under them. */
static bool address_space_is_ours(void)
{
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    return false;
#else
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    return false;
#endif
#endif
    return !RUNNING_ON_VALGRIND;
#endif
}

static void limit_address_space(rlim_t above_now)
{
    unsigned long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    struct rlimit rl;

    g_assert_nonnull(f);
    g_assert_cmpint(fscanf(f, "%lu", &pages), ==, 1);
    fclose(f);
    g_assert_cmpint(getrlimit(RLIMIT_AS, &rl), ==, 0);
    rl.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + above_now;
    g_assert_cmpint(setrlimit(RLIMIT_AS, &rl), ==, 0);
}

static void test_no_memory_child(void)
{
    procreg_backend *b = NULL;
    procreg_record big = {.owner = {.pid = -7, .start_time = 1}};
    procreg_record small = {0};
    GVariant *md = metadata_new("m");
    /* 24 in front + 47 + 449 = 520: malloc; without metadata 512: slab. */
    procreg_key *kbig = key_sized(225, 223, "big");
    procreg_key *k = key_sized(10, 22, "k");
    procreg_entry e = {0};
    struct rlimit saved;
    GError *error = NULL;

    procreg_owner_self(&small.owner);
    big.metadata = md;
    g_assert_cmpint(getrlimit(RLIMIT_AS, &saved), ==, 0);
    g_assert_cmpint(procreg_backend_open("ckht", NULL, &b, NULL), ==, 0);
    /* Room for small allocations, not for a chunk's 4 MiB mapping. */
    limit_address_space((rlim_t)3 << 20);

    g_assert_cmpint(procreg_backend_register_entry(b, kbig, &big, NULL, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_backend_register_entry(b, k, &small, NULL, &error),
                    ==, PROCREG_ENOMEM);
    g_clear_error(&error);
    g_assert_cmpint(procreg_backend_lookup_entry(b, k, &e, NULL), ==,
                    PROCREG_ENOTFOUND);
    g_assert_cmpint(procreg_backend_update_metadata(b, kbig, NULL, 0, NULL,
                                                    &error), ==,
                    PROCREG_ENOMEM);
    g_clear_error(&error);
    g_assert_cmpint(procreg_backend_lookup_entry(b, kbig, &e, NULL), ==, 0);
    g_assert_nonnull(e.metadata);
    g_assert_cmpuint(e.revision, ==, 1);
    procreg_entry_clear(&e);
    g_assert_cmpuint(stat_of(b, "entry_slab_bytes"), ==, 0);
    g_assert_cmpuint(stat_of(b, "entries"), ==, 1);

    g_assert_cmpint(setrlimit(RLIMIT_AS, &saved), ==, 0);
    g_assert_cmpint(procreg_backend_register_entry(b, k, &small, NULL, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_backend_update_metadata(b, kbig, NULL, 0, NULL,
                                                    NULL), ==, 0);
    g_assert_cmpuint(stat_of(b, "entry_bytes"), ==, 80 + 512);
    g_assert_cmpuint(stat_of(b, "entry_slab_bytes"), ==, (guint64)2 << 20);
    procreg_backend_close(b);
    procreg_key_unref(kbig);
    procreg_key_unref(k);
    g_variant_unref(md);
}

static void test_no_memory(void)
{
    if (!address_space_is_ours()) {
        g_test_skip("the address space belongs to a sanitizer or valgrind");
        return;
    }
    if (g_test_subprocess()) {
        test_no_memory_child();
        return;
    }
    g_test_trap_subprocess(NULL, 10 * G_USEC_PER_SEC,
                           G_TEST_SUBPROCESS_INHERIT_STDERR);
    g_test_trap_assert_passed();
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
    g_test_add_func("/ckht/slab/sizes-and-fronts", test_sizes_and_fronts);
    g_test_add_func("/ckht/slab/write-paths", test_write_paths);
    g_test_add_func("/ckht/slab/two-instances", test_two_instances);
    g_test_add_func("/ckht/slab/close-releases-all", test_close_releases_all);
    g_test_add_func("/ckht/slab/close-with-reader", test_close_with_reader);
    g_test_add_func("/ckht/slab/no-memory", test_no_memory);
    return g_test_run();
}
