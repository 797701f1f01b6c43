/*
 * The optimized decorator under concurrency: readers on the cache while
 * writers register, update and unregister, entries expire every
 * millisecond and a tiny capacity makes the CLOCK evict all the time.
 * Checks read-your-writes for every writer, revisions that never go back
 * for any reader, that finds only return matches, and that the hit and
 * miss counters add up exactly to the lookups made, also with more threads
 * than the cache has counter slots.  Meant to run under ThreadSanitizer
 * and AddressSanitizer too (see meson.build).
 */
#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND
#endif
#include <procreg/backend.h>

#include <stdatomic.h>
#include <string.h>

#if defined(__SANITIZE_THREAD__)
/* False positives from libglib, which is not instrumented (the same as
 * tests/ckht/stress.c has, for the same reasons):
 *  - A static GRWLock allocates its pthread_rwlock_t on first use and
 *    publishes it with a compare-and-swap TSan cannot see.  Only races
 *    inside the lock calls are exempt, not the data they protect.
 *  - GVariant and GBytes reference counts: when the last reference of a
 *    metadata dictionary is dropped in another thread than the one that
 *    last read it (here often a retired cache entry freed after its grace
 *    period), TSan sees a free() with no happens-before edge to those
 *    reads, although glib's atomic reference count orders them.  The
 *    frees of cache entries themselves (free() in opt_centry_free) are
 *    still checked. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race:g_rw_lock_reader_lock\n"
           "race:g_rw_lock_writer_lock\n"
           "race:g_variant_unref\n"
           "race:g_bytes_unref\n";
}
#endif

#define N_KEYS 128
#define N_WRITERS 2
#define N_READERS 4
#define N_FINDERS 1

static double run_seconds(void)
{
    const char *s = g_getenv("OPTIMIZED_STRESS_SECONDS");

    return s != NULL ? g_ascii_strtod(s, NULL) : 1.0;
}

typedef struct {
    procreg_backend *b;
    procreg_key *keys[N_KEYS];
    atomic_bool stop;
    atomic_ulong cache_reads; /* lookups + lookup_entries, all threads */
    atomic_ulong writes;
    atomic_ulong finds;
} shared;

typedef struct {
    shared *sh;
    int id;
} worker;

static guint64 cache_figure(procreg_backend *b, const char *name)
{
    GVariantDict d;
    GVariant *all, *cache;
    guint64 n = 0;

    g_variant_dict_init(&d, NULL);
    procreg_backend_stats(b, &d);
    all = g_variant_ref_sink(g_variant_dict_end(&d));
    cache = g_variant_lookup_value(all, "cache", G_VARIANT_TYPE_VARDICT);
    g_assert_nonnull(cache);
    g_assert_true(g_variant_lookup(cache, name, "t", &n));
    g_variant_unref(cache);
    g_variant_unref(all);
    return n;
}

static GVariant *md_role(int role)
{
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "role", "i", role);
    return g_variant_ref_sink(g_variant_dict_end(&d));
}

/* Each writer owns the keys i with i % N_WRITERS == id: nothing else
 * writes them, so what it reads back must be at least what it wrote. */
static gpointer writer_main(gpointer data)
{
    worker *w = data;
    shared *sh = w->sh;
    gulong reads = 0, writes = 0;
    guint32 round = 0;

    while (!atomic_load(&sh->stop)) {
        for (int i = w->id; i < N_KEYS; i += N_WRITERS) {
            procreg_key *k = sh->keys[i];
            GVariant *md = md_role((int)(round % 3));
            procreg_record r = {.owner = {1000 + w->id, 1}, .metadata = md};
            procreg_entry cur = {0}, got = {0};
            procreg_owner o;
            uint64_t rev;

            g_assert_cmpint(procreg_backend_register_entry(sh->b, k, &r, &cur,
                                                           NULL), ==, 0);
            rev = cur.revision;
            procreg_entry_clear(&cur);
            g_assert_cmpint(procreg_backend_lookup(sh->b, k, &o), ==, 0);
            g_assert_cmpint(o.pid, ==, 1000 + w->id);
            g_assert_cmpint(procreg_backend_lookup_entry(sh->b, k, &got, NULL),
                            ==, 0);
            g_assert_cmpuint(got.revision, >=, rev);
            procreg_entry_clear(&got);
            g_variant_unref(md);

            md = md_role((int)((round + 1) % 3));
            g_assert_cmpint(procreg_backend_update_metadata(sh->b, k, md, 0,
                                                            &cur, NULL), ==, 0);
            rev = cur.revision;
            procreg_entry_clear(&cur);
            g_variant_unref(md);
            g_assert_cmpint(procreg_backend_lookup_entry(sh->b, k, &got, NULL),
                            ==, 0);
            g_assert_cmpuint(got.revision, >=, rev);
            procreg_entry_clear(&got);

            if ((round + (guint32)i) % 2 == 0) {
                g_assert_cmpint(procreg_backend_unregister(sh->b, k, 0, NULL,
                                                           NULL), ==, 0);
                g_assert_cmpint(procreg_backend_lookup(sh->b, k, &o), ==,
                                PROCREG_ENOTFOUND);
                reads++;
                writes++;
            } else {
                /* Unregister, register again, unregister: each step is
                 * read back at once. */
                g_assert_cmpint(procreg_backend_unregister(sh->b, k, 0, NULL,
                                                           NULL), ==, 0);
                g_assert_cmpint(procreg_backend_lookup_entry(sh->b, k, &got,
                                                             NULL), ==,
                                PROCREG_ENOTFOUND);
                reads++;
                writes++;
                md = md_role(7);
                r.metadata = md;
                g_assert_cmpint(procreg_backend_register_entry(sh->b, k, &r,
                                                               NULL, NULL),
                                ==, 0);
                g_variant_unref(md);
                g_assert_cmpint(procreg_backend_lookup(sh->b, k, &o), ==, 0);
                g_assert_cmpint(procreg_backend_unregister(sh->b, k, 0, NULL,
                                                           NULL), ==, 0);
                reads++;
                writes += 2;
            }
            reads += 3;
            writes += 2;
        }
        round++;
    }
    atomic_fetch_add(&sh->cache_reads, reads);
    atomic_fetch_add(&sh->writes, writes);
    return NULL;
}

static gpointer reader_main(gpointer data)
{
    worker *w = data;
    shared *sh = w->sh;
    uint64_t last_rev[N_KEYS] = {0};
    GRand *rand = g_rand_new_with_seed(1234 + (guint32)w->id);
    gulong reads = 0;

    while (!atomic_load(&sh->stop)) {
        int i = g_rand_int_range(rand, 0, N_KEYS);
        procreg_key *k = sh->keys[i];

        if (g_rand_boolean(rand)) {
            procreg_owner o;
            int rc = procreg_backend_lookup(sh->b, k, &o);

            g_assert_true(rc == 0 || rc == PROCREG_ENOTFOUND);
            if (rc == 0)
                g_assert_cmpint(o.pid, ==, 1000 + i % N_WRITERS);
        } else {
            procreg_entry e = {0};
            int rc = procreg_backend_lookup_entry(sh->b, k, &e, NULL);

            g_assert_true(rc == 0 || rc == PROCREG_ENOTFOUND);
            if (rc == 0) {
                /* Never older than what this thread already saw. */
                g_assert_cmpuint(e.revision, >=, last_rev[i]);
                last_rev[i] = e.revision;
                g_assert_cmpint(e.owner.pid, ==, 1000 + i % N_WRITERS);
                g_assert_nonnull(e.metadata);
            }
            procreg_entry_clear(&e);
        }
        reads++;
    }
    g_rand_free(rand);
    atomic_fetch_add(&sh->cache_reads, reads);
    return NULL;
}

static gpointer finder_main(gpointer data)
{
    worker *w = data;
    shared *sh = w->sh;
    gulong finds = 0;

    while (!atomic_load(&sh->stop)) {
        GVariant *v = g_variant_ref_sink(g_variant_new_uint16(
            (guint16)(finds % 3)));
        GArray *out = procreg_entry_array_new();

        g_assert_cmpint(procreg_backend_find_by_metadata(sh->b, NULL, "role",
                                                         v, out, NULL), ==, 0);
        for (guint j = 0; j < out->len; j++) {
            procreg_entry *e = &g_array_index(out, procreg_entry, j);
            GVariant *role = g_variant_lookup_value(e->metadata, "role", NULL);

            g_assert_nonnull(role);
            g_assert_true(procreg_metadata_value_equal(role, v));
            g_variant_unref(role);
        }
        g_array_unref(out);
        g_variant_unref(v);
        finds++;
    }
    atomic_fetch_add(&sh->finds, finds);
    (void)w;
    return NULL;
}

static void run_readers_writers(const char *spec)
{
    shared sh;
    GThread *threads[N_WRITERS + N_READERS + N_FINDERS];
    worker workers[G_N_ELEMENTS(threads)];
    GError *error = NULL;
    int n = 0;

    memset(&sh, 0, sizeof sh);
    /* glib creates the lock of its GVariant type cache on first use and
     * publishes it with atomics ThreadSanitizer cannot see: make it here,
     * before the threads. */
    g_variant_unref(md_role(0));
    g_assert_cmpint(procreg_backend_open(spec, NULL, &sh.b, &error), ==, 0);
    g_assert_no_error(error);
    for (int i = 0; i < N_KEYS; i++) {
        char name[16];

        g_snprintf(name, sizeof name, "k%d", i);
        g_assert_cmpint(procreg_key_new("stress", name, &sh.keys[i], NULL), ==,
                        0);
    }
    for (int i = 0; i < N_WRITERS; i++, n++) {
        workers[n] = (worker){&sh, i};
        threads[n] = g_thread_new("writer", writer_main, &workers[n]);
    }
    for (int i = 0; i < N_READERS; i++, n++) {
        workers[n] = (worker){&sh, i};
        threads[n] = g_thread_new("reader", reader_main, &workers[n]);
    }
    for (int i = 0; i < N_FINDERS; i++, n++) {
        workers[n] = (worker){&sh, i};
        threads[n] = g_thread_new("finder", finder_main, &workers[n]);
    }
    g_usleep((gulong)(run_seconds() * G_USEC_PER_SEC));
    atomic_store(&sh.stop, true);
    for (int i = 0; i < n; i++)
        g_thread_join(threads[i]);

    guint64 hits = cache_figure(sh.b, "hits");
    guint64 misses = cache_figure(sh.b, "misses");
    g_test_message("%s: %lu cache reads (%" G_GUINT64_FORMAT " hits, %"
                   G_GUINT64_FORMAT " misses, %" G_GUINT64_FORMAT
                   " expirations, %" G_GUINT64_FORMAT " evictions, %"
                   G_GUINT64_FORMAT " fill races), %lu writes, %lu finds",
                   spec, (unsigned long)atomic_load(&sh.cache_reads), hits,
                   misses, cache_figure(sh.b, "expirations"),
                   cache_figure(sh.b, "evictions"),
                   cache_figure(sh.b, "fill_races"),
                   (unsigned long)atomic_load(&sh.writes),
                   (unsigned long)atomic_load(&sh.finds));
    /* Every lookup counted once, as a hit or as a miss. */
    g_assert_cmpuint(hits + misses, ==, atomic_load(&sh.cache_reads));
    g_assert_cmpuint(atomic_load(&sh.writes), >, 0);
    for (int i = 0; i < N_KEYS; i++)
        procreg_key_unref(sh.keys[i]);
    procreg_backend_close(sh.b);
}

static void test_rw_ghash(void)
{
    run_readers_writers(
        "optimized:inner=ghash,ttl_ms=1,cache_capacity=32,negative_cache=on");
}

static void test_rw_ghash_long_ttl(void)
{
    run_readers_writers("optimized:inner=ghash,ttl_ms=60000,cache_capacity=64");
}

static void test_rw_ckht(void)
{
    char **names = procreg_backend_names();
    gboolean have = g_strv_contains((const char *const *)names, "ckht");

    g_strfreev(names);
    if (!have) {
        g_test_skip("the ckht backend is not built");
        return;
    }
    run_readers_writers(
        "optimized:inner=ckht,ttl_ms=1,cache_capacity=32,negative_cache=on");
}

/* ------------------------------------------------------------------------ */
/* More threads than counter slots, in waves (slots are recycled)           */

#define WAVE_THREADS 80
#define WAVE_LOOKUPS 2000

typedef struct {
    procreg_backend *b;
    procreg_key *keys[4];
} wave_ctx;

static gpointer wave_main(gpointer data)
{
    wave_ctx *ctx = data;

    for (int i = 0; i < WAVE_LOOKUPS; i++) {
        procreg_owner o;

        g_assert_cmpint(procreg_backend_lookup(ctx->b, ctx->keys[i % 4], &o),
                        ==, 0);
    }
    return NULL;
}

static void test_counters_many_threads(void)
{
    wave_ctx ctx;
    GError *error = NULL;
    GThread *threads[WAVE_THREADS];
    const int waves = 3;

    g_assert_cmpint(procreg_backend_open("optimized:inner=ghash,ttl_ms=2",
                                         NULL, &ctx.b, &error), ==, 0);
    g_assert_no_error(error);
    for (int i = 0; i < 4; i++) {
        char name[8];
        procreg_record r = {.owner = {42, 1}};

        g_snprintf(name, sizeof name, "w%d", i);
        g_assert_cmpint(procreg_key_new("waves", name, &ctx.keys[i], NULL), ==,
                        0);
        g_assert_cmpint(procreg_backend_register_entry(ctx.b, ctx.keys[i], &r,
                                                       NULL, NULL), ==, 0);
    }
    for (int w = 0; w < waves; w++) {
        for (int i = 0; i < WAVE_THREADS; i++)
            threads[i] = g_thread_new("wave", wave_main, &ctx);
        for (int i = 0; i < WAVE_THREADS; i++)
            g_thread_join(threads[i]);
    }
    guint64 hits = cache_figure(ctx.b, "hits");
    guint64 misses = cache_figure(ctx.b, "misses");
    g_test_message("%d lookups: %" G_GUINT64_FORMAT " hits, %"
                   G_GUINT64_FORMAT " misses", waves * WAVE_THREADS *
                   WAVE_LOOKUPS, hits, misses);
    g_assert_cmpuint(hits + misses, ==,
                     (guint64)waves * WAVE_THREADS * WAVE_LOOKUPS);
    g_assert_cmpuint(hits, >, 0);
    for (int i = 0; i < 4; i++)
        procreg_key_unref(ctx.keys[i]);
    procreg_backend_close(ctx.b);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/optimized/concurrency/readers-writers-ghash",
                    test_rw_ghash);
    g_test_add_func("/optimized/concurrency/readers-writers-ghash-long-ttl",
                    test_rw_ghash_long_ttl);
    g_test_add_func("/optimized/concurrency/readers-writers-ckht",
                    test_rw_ckht);
    g_test_add_func("/optimized/concurrency/counters-many-threads",
                    test_counters_many_threads);
    return g_test_run();
}
