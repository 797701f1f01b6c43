/*
 * The optimized decorator over a counting fake inner backend: what reaches
 * the inner backend, what the cache answers, when it expires, what writes
 * and notifications invalidate, exact statistics, CLOCK eviction, the
 * metadata index against the scan, and the options.
 */
#include "fake-inner.h"

#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static procreg_backend *open_backend(const char *spec)
{
    procreg_backend *b = NULL;
    GError *error = NULL;
    int rc = procreg_backend_open(spec, NULL, &b, &error);

    g_assert_no_error(error);
    g_assert_cmpint(rc, ==, 0);
    return b;
}

static procreg_key *key(const char *ns, const char *name)
{
    procreg_key *k = NULL;
    GError *error = NULL;

    g_assert_cmpint(procreg_key_new(ns, name, &k, &error), ==, 0);
    g_assert_no_error(error);
    return k;
}

static void reg(procreg_backend *b, const char *ns, const char *name,
                pid_t pid, GVariant *metadata)
{
    procreg_key *k = key(ns, name);
    procreg_record r = {.owner = {pid, 1},
                        .metadata = metadata ? g_variant_ref_sink(metadata)
                                             : NULL,
                        .registered_at = g_get_real_time()};
    GError *error = NULL;

    g_assert_cmpint(procreg_backend_register_entry(b, k, &r, NULL, &error), ==,
                    0);
    g_assert_no_error(error);
    if (r.metadata != NULL)
        g_variant_unref(r.metadata);
    procreg_key_unref(k);
}

/* The owner pid of (ns, name), or -1 when not found. */
static pid_t look(procreg_backend *b, const char *ns, const char *name)
{
    procreg_key *k = key(ns, name);
    procreg_owner o = {0};
    int rc = procreg_backend_lookup(b, k, &o);

    procreg_key_unref(k);
    g_assert_true(rc == 0 || rc == PROCREG_ENOTFOUND);
    return rc == 0 ? o.pid : -1;
}

/* A figure from the decorator's stats: @part ("cache" or "index"). */
static guint64 stat_of(procreg_backend *b, const char *part, const char *name)
{
    GVariantDict d;
    GVariant *all, *sub, *v;
    guint64 n;

    g_variant_dict_init(&d, NULL);
    procreg_backend_stats(b, &d);
    all = g_variant_ref_sink(g_variant_dict_end(&d));
    sub = g_variant_lookup_value(all, part, G_VARIANT_TYPE_VARDICT);
    g_assert_nonnull(sub);
    v = g_variant_lookup_value(sub, name, G_VARIANT_TYPE_UINT64);
    if (v == NULL)
        g_error("no figure %s.%s in the stats", part, name);
    n = g_variant_get_uint64(v);
    g_variant_unref(v);
    g_variant_unref(sub);
    g_variant_unref(all);
    return n;
}

#define CACHE(b, what) stat_of((b), "cache", (what))

static GVariant *md_str(const char *k, const char *v)
{
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, k, "s", v);
    return g_variant_dict_end(&d);
}

/* ------------------------------------------------------------------------ */
/* Cache                                                                    */

static void test_hit_does_not_reach_inner(void)
{
    procreg_backend *b = open_backend("optimized:inner=[fake:id=1],ttl_ms=60000");
    fake_inner *f = fake_instance(1);

    g_assert_nonnull(f);
    /* Written through the decorator: cached at once. */
    reg(b, "ns", "a", 101, NULL);
    for (int i = 0; i < 100; i++)
        g_assert_cmpint(look(b, "ns", "a"), ==, 101);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, 0);

    /* Made behind its back: the first lookup asks, the rest do not. */
    fake_set(f, "ns", "b", 202, NULL);
    for (int i = 0; i < 50; i++)
        g_assert_cmpint(look(b, "ns", "b"), ==, 202);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, 1);

    g_assert_cmpuint(CACHE(b, "hits"), ==, 149);
    g_assert_cmpuint(CACHE(b, "misses"), ==, 1);
    g_assert_cmpuint(CACHE(b, "fills"), ==, 1);
    g_assert_cmpuint(CACHE(b, "updates"), ==, 1);
    g_assert_cmpuint(CACHE(b, "expirations"), ==, 0);
    g_assert_cmpuint(CACHE(b, "entries"), ==, 2);

    /* lookup_entry wants the whole entry: "b" was cached owner-only. */
    procreg_key *k = key("ns", "b");
    procreg_entry e = {0};
    g_assert_cmpint(procreg_backend_lookup_entry(b, k, &e, NULL), ==, 0);
    g_assert_cmpint(e.owner.pid, ==, 202);
    procreg_entry_clear(&e);
    g_assert_cmpint(procreg_backend_lookup_entry(b, k, &e, NULL), ==, 0);
    procreg_entry_clear(&e);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP_ENTRY), ==, 1);
    procreg_key_unref(k);
    /* Not found: not cached when negative caching is off. */
    g_assert_cmpint(look(b, "ns", "nobody"), ==, -1);
    g_assert_cmpint(look(b, "ns", "nobody"), ==, -1);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, 3);
    procreg_backend_close(b);
}

static void test_expired_reaches_inner(void)
{
    procreg_backend *b = open_backend("optimized:inner=[fake:id=1],ttl_ms=40");
    fake_inner *f = fake_instance(1);

    fake_set(f, "ns", "a", 101, NULL);
    g_assert_cmpint(look(b, "ns", "a"), ==, 101);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, 1);
    g_usleep(60 * 1000);
    g_assert_cmpint(look(b, "ns", "a"), ==, 101);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, 2);
    g_assert_cmpuint(CACHE(b, "expirations"), ==, 1);
    g_assert_cmpuint(CACHE(b, "misses"), ==, 2);
    g_assert_cmpuint(CACHE(b, "fills"), ==, 2);
    /* Refilled: the entry was replaced, not added. */
    g_assert_cmpuint(CACHE(b, "entries"), ==, 1);
    procreg_backend_close(b);
}

static void test_write_invalidates(void)
{
    procreg_backend *b = open_backend("optimized:inner=[fake:id=1],ttl_ms=60000");
    fake_inner *f = fake_instance(1);
    procreg_key *k = key("ns", "a");
    procreg_entry e = {0}, updated = {0};
    GError *error = NULL;

    fake_set(f, "ns", "a", 101, md_str("v", "1"));
    g_assert_cmpint(procreg_backend_lookup_entry(b, k, &e, NULL), ==, 0);
    g_assert_cmpstr(g_variant_get_type_string(e.metadata), ==, "a{sv}");
    procreg_entry_clear(&e);

    /* Update through the decorator: read-your-writes, without asking. */
    GVariant *md = g_variant_ref_sink(md_str("v", "2"));
    g_assert_cmpint(procreg_backend_update_metadata(b, k, md, 0, &updated,
                                                    &error), ==, 0);
    g_assert_no_error(error);
    g_variant_unref(md);
    g_assert_cmpint(procreg_backend_lookup_entry(b, k, &e, NULL), ==, 0);
    g_assert_cmpuint(e.revision, ==, updated.revision);
    const char *v = NULL;
    g_assert_true(g_variant_lookup(e.metadata, "v", "&s", &v));
    g_assert_cmpstr(v, ==, "2");
    procreg_entry_clear(&e);
    procreg_entry_clear(&updated);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP_ENTRY), ==, 1);

    /* Unregister through the decorator: gone at once. */
    g_assert_cmpint(procreg_backend_unregister(b, k, 0, NULL, NULL), ==, 0);
    g_assert_cmpint(look(b, "ns", "a"), ==, -1);
    g_assert_cmpint(procreg_backend_lookup_entry(b, k, &e, NULL), ==,
                    PROCREG_ENOTFOUND);
    /* Each write dropped the key's entry before its inner call: the
     * update, then the unregister. */
    g_assert_cmpuint(CACHE(b, "invalidations"), ==, 2);

    /* A write the inner backend refuses (conflict) drops the cached
     * entry: it proves the cache may be stale. */
    reg(b, "ns", "a", 303, NULL);
    fake_set(f, "ns", "a", 404, NULL); /* behind its back */
    g_assert_cmpint(look(b, "ns", "a"), ==, 303); /* stale, within TTL */
    g_assert_cmpint(procreg_backend_unregister(b, k, 1, NULL, NULL), ==,
                    PROCREG_ECONFLICT);
    g_assert_cmpint(look(b, "ns", "a"), ==, 404);

    /* Dropping a namespace drops its cached entries, and only those. */
    reg(b, "other", "x", 505, NULL);
    g_assert_cmpint(look(b, "other", "x"), ==, 505);
    GArray *removed = procreg_entry_array_new();
    g_assert_cmpint(procreg_backend_drop_namespace(b, "ns", removed, NULL), ==,
                    0);
    g_assert_cmpuint(removed->len, ==, 1);
    g_array_unref(removed);
    guint64 asked = fake_calls(f, FAKE_LOOKUP);
    g_assert_cmpint(look(b, "ns", "a"), ==, -1);
    g_assert_cmpint(look(b, "other", "x"), ==, 505);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, asked + 1);
    procreg_key_unref(k);
    procreg_backend_close(b);
}

static void test_negative_cache(void)
{
    procreg_backend *b = open_backend(
        "optimized:inner=[fake:id=1],ttl_ms=60000,negative_cache=on");
    fake_inner *f = fake_instance(1);

    g_assert_cmpint(look(b, "ns", "a"), ==, -1);
    g_assert_cmpint(look(b, "ns", "a"), ==, -1);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, 1);
    g_assert_cmpuint(CACHE(b, "negative_hits"), ==, 1);
    /* A register through the decorator clears the negative entry. */
    reg(b, "ns", "a", 101, NULL);
    g_assert_cmpint(look(b, "ns", "a"), ==, 101);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, 1);
    /* Unregister through it caches the absence. */
    procreg_key *k = key("ns", "a");
    g_assert_cmpint(procreg_backend_unregister(b, k, 0, NULL, NULL), ==, 0);
    g_assert_cmpint(look(b, "ns", "a"), ==, -1);
    procreg_entry e = {0};
    GError *error = NULL;
    g_assert_cmpint(procreg_backend_lookup_entry(b, k, &e, &error), ==,
                    PROCREG_ENOTFOUND);
    g_assert_error(error, PROCREG_ERROR, PROCREG_ENOTFOUND);
    g_clear_error(&error);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, 1);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP_ENTRY), ==, 0);
    /* A register refused with EEXISTS replaces a stale negative entry
     * with the holder. */
    fake_set(f, "ns", "a", 202, NULL);
    g_assert_cmpint(look(b, "ns", "a"), ==, -1); /* stale, within TTL */
    procreg_record r = {.owner = {303, 1}};
    procreg_entry cur = {0};
    g_assert_cmpint(procreg_backend_register_entry(b, k, &r, &cur, NULL), ==,
                    PROCREG_EEXISTS);
    g_assert_cmpint(cur.owner.pid, ==, 202);
    g_assert_cmpint(look(b, "ns", "a"), ==, 202);
    procreg_key_unref(k);
    procreg_backend_close(b);
}

static void test_stats_exact(void)
{
    procreg_backend *b = open_backend("optimized:inner=[fake:id=2],ttl_ms=60000");
    fake_inner *f = fake_instance(2);
    guint64 hits = 0, misses = 0;

    for (int i = 0; i < 20; i++) {
        char name[16];

        g_snprintf(name, sizeof name, "k%d", i);
        fake_set(f, "s", name, 1000 + i, NULL);
    }
    /* Round r looks up keys 0 .. 2r: each key misses once, then hits. */
    gboolean seen[20] = {FALSE};
    for (int r = 0; r < 10; r++) {
        for (int i = 0; i <= 2 * r; i++) {
            char name[16];

            g_snprintf(name, sizeof name, "k%d", i);
            g_assert_cmpint(look(b, "s", name), ==, 1000 + i);
            if (seen[i]) {
                hits++;
            } else {
                misses++;
                seen[i] = TRUE;
            }
        }
    }
    g_assert_cmpuint(misses, ==, 19);
    g_assert_cmpuint(CACHE(b, "misses"), ==, misses);
    g_assert_cmpuint(CACHE(b, "hits"), ==, hits);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, misses);
    g_assert_cmpuint(CACHE(b, "fills"), ==, misses);
    g_assert_cmpuint(CACHE(b, "entries"), ==, 19);
    g_assert_cmpuint(CACHE(b, "evictions"), ==, 0);
    g_assert_cmpuint(CACHE(b, "invalidations"), ==, 0);

    /* hit_rate is hits / (hits + misses). */
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    procreg_backend_stats(b, &d);
    GVariant *all = g_variant_ref_sink(g_variant_dict_end(&d));
    GVariant *cache = g_variant_lookup_value(all, "cache", NULL);
    double rate = 0;
    g_assert_true(g_variant_lookup(cache, "hit_rate", "d", &rate));
    g_assert_cmpfloat_with_epsilon(rate, (double)hits / (hits + misses), 1e-9);
    g_variant_unref(cache);
    g_variant_unref(all);

    /* The same figures in the health report. */
    GVariantDict details;
    char *message = NULL;
    g_variant_dict_init(&details, NULL);
    g_assert_cmpint(procreg_backend_health_check(b, &details, &message), ==,
                    PROCREG_HEALTH_OK);
    GVariant *h = g_variant_ref_sink(g_variant_dict_end(&details));
    GVariant *hc = g_variant_lookup_value(h, "cache", NULL);
    guint64 n = 0;
    g_assert_true(g_variant_lookup(hc, "hits", "t", &n));
    g_assert_cmpuint(n, ==, hits);
    g_assert_true(g_variant_lookup(h, "inner_backend", "&s", NULL));
    g_variant_unref(hc);
    g_variant_unref(h);
    g_free(message);
    procreg_backend_close(b);
}

/* A write stores its outcome only while the cache has room: into a full
 * cache it would evict an entry readers use, and a burst of registrations
 * would turn the whole cache over. */
static void test_full_cache_keeps_writes_out(void)
{
    procreg_backend *b = open_backend(
        "optimized:inner=[fake:id=10],ttl_ms=60000,cache_capacity=4");
    fake_inner *f = fake_instance(10);
    char name[16];

    for (int i = 0; i < 4; i++) {
        g_snprintf(name, sizeof name, "k%d", i);
        reg(b, "s", name, 100 + i, NULL);
    }
    g_assert_cmpuint(CACHE(b, "updates"), ==, 4);
    g_assert_cmpuint(CACHE(b, "entries"), ==, 4);
    for (int i = 4; i < 10; i++) {
        g_snprintf(name, sizeof name, "k%d", i);
        reg(b, "s", name, 100 + i, NULL);
    }
    g_assert_cmpuint(CACHE(b, "updates"), ==, 4);
    g_assert_cmpuint(CACHE(b, "evictions"), ==, 0);
    g_assert_cmpuint(CACHE(b, "entries"), ==, 4);
    /* The first four are still served from the cache; the later ones
     * from the inner backend, with the right answer. */
    for (int i = 0; i < 10; i++) {
        g_snprintf(name, sizeof name, "k%d", i);
        g_assert_cmpint(look(b, "s", name), ==, 100 + i);
    }
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, 6);
    g_assert_cmpuint(CACHE(b, "hits"), ==, 4);
    procreg_backend_close(b);
}

/* Run in a thread of its own: the fill admission counts the misses of
 * each thread from zero, so the figures below are exact. */
static gpointer eviction_keeps_hot(gpointer data)
{
    procreg_backend *b = open_backend(
        "optimized:inner=[fake:id=3],ttl_ms=60000,cache_capacity=64");
    fake_inner *f = fake_instance(3);
    const int cold = 4000;

    (void)data;
    fake_set(f, "s", "hot", 7, NULL);
    for (int i = 0; i < cold; i++) {
        char name[16];

        g_snprintf(name, sizeof name, "cold%d", i);
        fake_set(f, "s", name, 100 + i, NULL);
    }
    g_assert_cmpint(look(b, "s", "hot"), ==, 7);
    for (int i = 0; i < cold; i++) {
        char name[16];

        g_snprintf(name, sizeof name, "cold%d", i);
        g_assert_cmpint(look(b, "s", name), ==, 100 + i);
        /* The hot key is read between every two cold ones. */
        g_assert_cmpint(look(b, "s", "hot"), ==, 7);
    }
    /* 4001 keys for 64 slots: the first 64 misses filled the cache, then
     * one miss in 16 (OPT_FULL_ADMIT) was let in, evicting a cold key.
     * The hot key was never evicted, so it was asked for exactly once. */
    g_assert_cmpuint(CACHE(b, "entries"), ==, 64);
    g_assert_cmpuint(CACHE(b, "fills"), ==, 64 + (1 + cold - 64) / 16);
    g_assert_cmpuint(CACHE(b, "evictions"), ==, (1 + cold - 64) / 16);
    /* Evictions leave tombstones: the table was rebuilt without them,
     * and the hot entry survived every rebuild. */
    g_assert_cmpuint(CACHE(b, "table_rebuilds"), >, 0);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, 1 + cold);
    g_assert_cmpuint(CACHE(b, "hits"), ==, cold);

    /* A key read again and again gets in within 16 misses. */
    guint64 asked = fake_calls(f, FAKE_LOOKUP);
    for (int i = 0; i < 32; i++)
        g_assert_cmpint(look(b, "s", "cold0"), ==, 100);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP) - asked, <=, 16);
    procreg_backend_close(b);
    return NULL;
}

static void test_eviction_keeps_hot(void)
{
    g_thread_join(g_thread_new("eviction", eviction_keeps_hot, NULL));
}

static void test_notify_invalidates(void)
{
    procreg_backend *b = open_backend("optimized:inner=[fake:id=4],ttl_ms=60000");
    fake_inner *f = fake_instance(4);

    fake_set(f, "s", "a", 1, NULL);
    g_assert_cmpint(look(b, "s", "a"), ==, 1);
    fake_set(f, "s", "a", 2, NULL);
    g_assert_cmpint(look(b, "s", "a"), ==, 1); /* no notification yet */
    fake_notify(f, PROCREG_EVENT_REGISTERED, "s", "a");
    g_assert_cmpint(look(b, "s", "a"), ==, 2);
    fake_remove(f, "s", "a");
    fake_notify(f, PROCREG_EVENT_UNREGISTERED, "s", "a");
    g_assert_cmpint(look(b, "s", "a"), ==, -1);
    g_assert_cmpuint(CACHE(b, "invalidations"), ==, 2);
    procreg_backend_close(b);
}

/* A change made directly in the inner backend shows through the
 * decorator no later than the TTL plus a small margin. */
static void test_staleness_bound(void)
{
    const gint64 ttl_ms = 80;
    procreg_backend *b = open_backend("optimized:inner=[fake:id=5],ttl_ms=80");
    fake_inner *f = fake_instance(5);

    for (int round = 0; round < 3; round++) {
        fake_set(f, "s", "a", 1, NULL);
        /* Let whatever is cached expire, then cache pid 1. */
        g_usleep((ttl_ms + 20) * 1000);
        g_assert_cmpint(look(b, "s", "a"), ==, 1);
        gint64 cached_at = g_get_monotonic_time();
        fake_set(f, "s", "a", 2, NULL);
        gint64 changed_at = g_get_monotonic_time();
        /* Served from the cache meanwhile (unless this thread slept
         * through the whole TTL). */
        if (g_get_monotonic_time() - cached_at < ttl_ms * 1000 / 2)
            g_assert_cmpint(look(b, "s", "a"), ==, 1);
        /* The bound is on the reads that return the old value, timed from
         * when each one started: a read that started later than the bound
         * and still saw pid 1 breaks it.  (Timing the first read that sees
         * pid 2 instead would add however long the scheduler kept this
         * thread from polling: 40 ms more, once, under TSan on a loaded
         * 2-core machine.) */
        gint64 last_stale_at = changed_at, seen_at = 0;
        while (seen_at == 0) {
            gint64 started = g_get_monotonic_time();
            if (look(b, "s", "a") == 2) {
                seen_at = g_get_monotonic_time();
            } else {
                last_stale_at = started;
                g_usleep(1000);
            }
            g_assert_cmpint(g_get_monotonic_time() - changed_at, <,
                            (ttl_ms + 1000) * 1000);
        }
        gint64 stale_ms = (last_stale_at - changed_at) / 1000;
        g_test_message("round %d: old value read %" G_GINT64_FORMAT
                       " ms after the change, new one seen after %"
                       G_GINT64_FORMAT " ms (ttl %" G_GINT64_FORMAT " ms)",
                       round, stale_ms, (seen_at - changed_at) / 1000,
                       ttl_ms);
        /* TTL + one coarse clock tick (<= 10 ms) + slack for the clock
         * reads around the lookup. */
        g_assert_cmpint(stale_ms, <=, ttl_ms + 40);
    }
    procreg_backend_close(b);
}

/* Over a backend shared by processes (LMDB): a change made through
 * another instance on the same file reaches the decorator through the
 * inner backend's notification, long before the TTL (a minute here). */
static void test_shared_inner_notification(void)
{
    char **names = procreg_backend_names();
    gboolean have = g_strv_contains((const char *const *)names, "lmdb");
    g_strfreev(names);
    if (!have) {
        g_test_skip("the lmdb backend is not built");
        return;
    }
    char *dir = g_dir_make_tmp("procreg-optimized-XXXXXX", NULL);
    g_assert_nonnull(dir);
    char *path = g_build_filename(dir, "r.mdb", NULL);
    char *spec_opt = g_strdup_printf("optimized:inner=[lmdb:path=%s],"
                                     "ttl_ms=60000", path);
    char *spec_other = g_strdup_printf("lmdb:path=%s", path);
    procreg_backend *opt = open_backend(spec_opt);
    procreg_backend *other = open_backend(spec_other);
    procreg_key *k = key("s", "svc");
    procreg_owner self, parent, o;
    procreg_record r = {.registered_at = g_get_real_time()};

    procreg_owner_self(&self);
    g_assert_cmpint(procreg_owner_from_pid(getppid(), &parent, NULL), ==, 0);
    r.owner = self;
    g_assert_cmpint(procreg_backend_register_entry(other, k, &r, NULL, NULL),
                    ==, 0);
    /* Cached by the first lookup (or by the notification's arrival). */
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    while (procreg_backend_lookup(opt, k, &o) != 0) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(1000);
    }
    g_assert_cmpint(o.pid, ==, self.pid);
    g_assert_cmpint(procreg_backend_lookup(opt, k, &o), ==, 0);

    g_assert_cmpint(procreg_backend_unregister(other, k, 0, NULL, NULL), ==,
                    0);
    r.owner = parent;
    g_assert_cmpint(procreg_backend_register_entry(other, k, &r, NULL, NULL),
                    ==, 0);
    gint64 changed = g_get_monotonic_time();
    while (procreg_backend_lookup(opt, k, &o) != 0 || o.pid != parent.pid) {
        g_assert_cmpint(g_get_monotonic_time() - changed, <,
                        5 * G_USEC_PER_SEC);
        g_usleep(1000);
    }
    g_test_message("a change through another instance was visible after "
                   "%" G_GINT64_FORMAT " us (ttl 60 s)",
                   g_get_monotonic_time() - changed);
    g_assert_cmpuint(stat_of(opt, "cache", "invalidations"), >, 0);

    /* The index is off over a shared backend: find asks it. */
    GArray *out = procreg_entry_array_new();
    GVariant *v = g_variant_ref_sink(g_variant_new_string("x"));
    g_assert_cmpint(procreg_backend_find_by_metadata(opt, "s", "role", v, out,
                                                     NULL), ==, 0);
    g_assert_cmpuint(stat_of(opt, "index", "finds_forwarded"), ==, 1);
    g_variant_unref(v);
    g_array_unref(out);

    procreg_key_unref(k);
    procreg_backend_close(opt);
    procreg_backend_close(other);
    GDir *d = g_dir_open(dir, 0, NULL);
    for (const char *f; d && (f = g_dir_read_name(d));) {
        char *p = g_build_filename(dir, f, NULL);
        g_unlink(p);
        g_free(p);
    }
    if (d)
        g_dir_close(d);
    g_rmdir(dir);
    g_free(spec_opt);
    g_free(spec_other);
    g_free(path);
    g_free(dir);
}

/* ------------------------------------------------------------------------ */
/* Index                                                                    */

static void test_index_writes_never_scan(void)
{
    procreg_backend *b = open_backend("optimized:inner=[fake:id=6]");
    fake_inner *f = fake_instance(6);
    /* Opening indexes what is there: one listing. */
    g_assert_cmpuint(fake_calls(f, FAKE_LIST_ALL), ==, 1);

    for (int i = 0; i < 200; i++) {
        char name[16];
        GVariantDict d;

        g_snprintf(name, sizeof name, "k%d", i);
        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "role", "s", i % 10 == 0 ? "db" : "web");
        g_variant_dict_insert(&d, "port", "q", (guint16)(8000 + i % 3));
        reg(b, "s", name, 10 + i, g_variant_dict_end(&d));
    }
    for (int i = 0; i < 200; i += 7) {
        char name[16];
        procreg_key *k;

        g_snprintf(name, sizeof name, "k%d", i);
        k = key("s", name);
        if (i % 2 == 0) {
            g_assert_cmpint(procreg_backend_unregister(b, k, 0, NULL, NULL),
                            ==, 0);
        } else {
            GVariant *md = g_variant_ref_sink(md_str("role", "db"));
            g_assert_cmpint(procreg_backend_update_metadata(b, k, md, 0, NULL,
                                                            NULL), ==, 0);
            g_variant_unref(md);
        }
        procreg_key_unref(k);
    }
    /* No write listed the table. */
    g_assert_cmpuint(fake_calls(f, FAKE_LIST_ALL), ==, 1);

    GArray *out = procreg_entry_array_new();
    GVariant *db = g_variant_ref_sink(g_variant_new_string("db"));
    g_assert_cmpint(procreg_backend_find_by_metadata(b, "s", "role", db, out,
                                                     NULL), ==, 0);
    /* k0, k10, ... (20 keys) minus the unregistered even multiples of 7
     * among them (k0, k70, k140), plus the odd multiples of 7 updated to
     * "db" (k7, k21, ..., k189: 14 keys, none a multiple of 10). */
    g_assert_cmpuint(out->len, ==, 20 - 3 + 14);
    for (guint i = 0; i < out->len; i++) {
        procreg_entry *e = &g_array_index(out, procreg_entry, i);
        g_assert_cmpstr(e->ns, ==, "s");
        g_assert_nonnull(e->name);
    }
    g_array_unref(out);
    g_variant_unref(db);
    /* The find asked for each match, and listed nothing. */
    g_assert_cmpuint(fake_calls(f, FAKE_LIST_ALL), ==, 1);
    g_assert_cmpuint(stat_of(b, "index", "finds_indexed"), ==, 1);
    g_assert_cmpuint(stat_of(b, "index", "finds_forwarded"), ==, 0);
    procreg_backend_close(b);
}

static void test_index_notify_rebuilds(void)
{
    procreg_backend *b = open_backend("optimized:inner=[fake:id=7]");
    fake_inner *f = fake_instance(7);
    GVariant *db = g_variant_ref_sink(g_variant_new_string("db"));
    GArray *out = procreg_entry_array_new();

    reg(b, "s", "a", 1, md_str("role", "db"));
    /* A change the decorator did not make, and was told about. */
    fake_set(f, "s", "b", 2, md_str("role", "db"));
    fake_notify(f, PROCREG_EVENT_REGISTERED, "s", "b");
    g_assert_cmpint(procreg_backend_find_by_metadata(b, NULL, "role", db, out,
                                                     NULL), ==, 0);
    g_assert_cmpuint(out->len, ==, 2);
    g_assert_cmpuint(fake_calls(f, FAKE_LIST_ALL), ==, 2);
    g_assert_cmpuint(stat_of(b, "index", "rebuilds"), ==, 2);
    /* Up to date now: the next find does not list again. */
    g_array_set_size(out, 0);
    g_assert_cmpint(procreg_backend_find_by_metadata(b, "s", "role", db, out,
                                                     NULL), ==, 0);
    g_assert_cmpuint(out->len, ==, 2);
    g_assert_cmpuint(fake_calls(f, FAKE_LIST_ALL), ==, 2);
    g_array_unref(out);
    g_variant_unref(db);
    procreg_backend_close(b);
}

static void test_index_off_for_shared_inner(void)
{
    procreg_backend *b = open_backend("optimized:inner=[fake_shared:id=8]");
    fake_inner *f = fake_instance(8);
    GVariant *db = g_variant_ref_sink(g_variant_new_string("db"));
    GArray *out = procreg_entry_array_new();

    /* Another process registers: no notification needed for find. */
    fake_set(f, "s", "b", 2, md_str("role", "db"));
    g_assert_cmpint(procreg_backend_find_by_metadata(b, "s", "role", db, out,
                                                     NULL), ==, 0);
    g_assert_cmpuint(out->len, ==, 1);
    g_assert_cmpuint(stat_of(b, "index", "finds_forwarded"), ==, 1);
    g_array_unref(out);
    g_variant_unref(db);
    procreg_backend_close(b);
}

/* Same operations on "ghash" and "optimized:inner=ghash": every find
 * through the index equals the scan, for every value type. */
static void test_index_equals_scan(void)
{
    procreg_backend *plain = open_backend("ghash");
    procreg_backend *opt = open_backend("optimized:inner=ghash");
    procreg_backend *both[2] = {plain, opt};
    GRand *rand = g_rand_new_with_seed(42);
    const char *nss[] = {"a", "b", "c"};
    const char *roles[] = {"db", "web", "cache", ""};

    for (int step = 0; step < 3000; step++) {
        char name[16];
        const char *ns = nss[g_rand_int_range(rand, 0, 3)];
        int op = g_rand_int_range(rand, 0, 10);
        procreg_key *k;
        GVariantDict d;

        g_snprintf(name, sizeof name, "n%d", g_rand_int_range(rand, 0, 300));
        k = key(ns, name);
        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "role", "s",
                              roles[g_rand_int_range(rand, 0, 4)]);
        switch (g_rand_int_range(rand, 0, 8)) {
        case 0: g_variant_dict_insert(&d, "port", "y", (guint8)80); break;
        case 1: g_variant_dict_insert(&d, "port", "n", (gint16)80); break;
        case 2: g_variant_dict_insert(&d, "port", "u", (guint32)80); break;
        case 3: g_variant_dict_insert(&d, "port", "x", (gint64)-80); break;
        case 4: g_variant_dict_insert(&d, "port", "i", (gint32)-80); break;
        case 5: g_variant_dict_insert(&d, "port", "t", G_MAXUINT64); break;
        case 6: g_variant_dict_insert(&d, "port", "d", 80.0); break;
        default: g_variant_dict_insert(&d, "port", "s", "80"); break;
        }
        g_variant_dict_insert(&d, "up", "b", g_rand_boolean(rand));
        GVariant *md = g_variant_ref_sink(g_variant_dict_end(&d));
        if (op == 9 && g_rand_int_range(rand, 0, 20) == 0) {
            /* A dictionary with "role" twice: the first counts. */
            GVariantBuilder bld;
            g_variant_builder_init(&bld, G_VARIANT_TYPE_VARDICT);
            g_variant_builder_add(&bld, "{sv}", "role",
                                  g_variant_new_string("dup"));
            g_variant_builder_add(&bld, "{sv}", "role",
                                  g_variant_new_string("db"));
            g_variant_unref(md);
            md = g_variant_ref_sink(g_variant_builder_end(&bld));
        }
        for (int i = 0; i < 2; i++) {
            procreg_record r = {.owner = {100, 1}, .metadata = md};
            if (op < 5) {
                procreg_backend_register_entry(both[i], k, &r, NULL, NULL);
            } else if (op < 8) {
                procreg_backend_update_metadata(both[i], k,
                                                op == 7 ? NULL : md, 0, NULL,
                                                NULL);
            } else if (op < 9) {
                procreg_backend_unregister(both[i], k, 0, NULL, NULL);
            } else {
                procreg_backend_register_entry(both[i], k, &r, NULL, NULL);
                if (step % 500 == 0) {
                    GArray *gone = procreg_entry_array_new();
                    procreg_backend_drop_namespace(both[i], ns, gone, NULL);
                    g_array_unref(gone);
                }
            }
        }
        g_variant_unref(md);
        procreg_key_unref(k);

        if (step % 100 != 99)
            continue;
        GVariant *queries[] = {
            g_variant_new_string("db"),     g_variant_new_string("web"),
            g_variant_new_string(""),       g_variant_new_string("dup"),
            g_variant_new_string("80"),     g_variant_new_int32(80),
            g_variant_new_uint64(80),       g_variant_new_byte(80),
            g_variant_new_int64(-80),       g_variant_new_int16(-80),
            g_variant_new_uint64(G_MAXUINT64), g_variant_new_int64(-1),
            g_variant_new_boolean(TRUE),    g_variant_new_boolean(FALSE),
        };
        const char *keys[] = {"role", "role", "role", "role", "port", "port",
                              "port", "port", "port", "port", "port", "port",
                              "up", "up"};
        for (guint q = 0; q < G_N_ELEMENTS(queries); q++) {
            GVariant *v = g_variant_ref_sink(queries[q]);
            for (int nsi = -1; nsi < 3; nsi++) {
                const char *qns = nsi < 0 ? NULL : nss[nsi];
                GArray *ra = procreg_entry_array_new();
                GArray *rb = procreg_entry_array_new();
                GHashTable *seen = g_hash_table_new_full(g_str_hash,
                                                         g_str_equal, g_free,
                                                         NULL);
                g_assert_cmpint(procreg_backend_find_by_metadata(
                                    plain, qns, keys[q], v, ra, NULL), ==, 0);
                g_assert_cmpint(procreg_backend_find_by_metadata(
                                    opt, qns, keys[q], v, rb, NULL), ==, 0);
                g_assert_cmpuint(ra->len, ==, rb->len);
                for (guint i = 0; i < ra->len; i++) {
                    procreg_entry *e = &g_array_index(ra, procreg_entry, i);
                    g_hash_table_add(seen, g_strdup_printf(
                                               "%s/%s/%" G_GUINT64_FORMAT,
                                               e->ns, e->name, e->revision));
                }
                for (guint i = 0; i < rb->len; i++) {
                    procreg_entry *e = &g_array_index(rb, procreg_entry, i);
                    char *id = g_strdup_printf("%s/%s/%" G_GUINT64_FORMAT,
                                               e->ns, e->name, e->revision);
                    if (!g_hash_table_contains(seen, id))
                        g_error("find(%s, %s=%s) through the index returned "
                                "%s, the scan did not", qns ? qns : "*",
                                keys[q], g_variant_print(v, TRUE), id);
                    g_free(id);
                }
                g_hash_table_unref(seen);
                g_array_unref(ra);
                g_array_unref(rb);
            }
            g_variant_unref(v);
        }
    }
    g_assert_cmpuint(stat_of(opt, "index", "finds_forwarded"), ==, 0);
    g_assert_cmpuint(stat_of(opt, "index", "finds_indexed"), >, 0);
    g_assert_cmpuint(stat_of(opt, "index", "rebuilds"), ==, 1);
    g_rand_free(rand);
    procreg_backend_close(plain);
    procreg_backend_close(opt);
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */

static void expect_open_error(const char *spec, int code, const char *needle)
{
    procreg_backend *b = NULL;
    GError *error = NULL;
    int rc = procreg_backend_open(spec, NULL, &b, &error);

    g_assert_cmpint(rc, ==, code);
    g_assert_null(b);
    g_assert_error(error, PROCREG_ERROR, code);
    if (strstr(error->message, needle) == NULL)
        g_error("opening '%s': message '%s' lacks '%s'", spec, error->message,
                needle);
    g_error_free(error);
}

static void test_options(void)
{
    expect_open_error("optimized", PROCREG_EINVAL, "'inner' is required");
    expect_open_error("optimized:ttl_ms=5", PROCREG_EINVAL, "'inner'");
    expect_open_error("optimized:inner=ghash,ttl_ms=soon", PROCREG_EINVAL,
                      "ttl_ms");
    expect_open_error("optimized:inner=ghash,ttl_ms=999999999999",
                      PROCREG_EINVAL, "too long");
    expect_open_error("optimized:inner=ghash,cache_capacity=1G",
                      PROCREG_EINVAL, "too large");
    expect_open_error("optimized:inner=ghash,negative_cache=maybe",
                      PROCREG_EINVAL, "negative_cache");
    expect_open_error("optimized:inner=ghash,colour=red", PROCREG_EINVAL,
                      "inner");
    expect_open_error("optimized:inner=nosuch", PROCREG_EUNKNOWN_BACKEND,
                      "optimized: inner backend");
    expect_open_error("optimized:inner=[ghash:x=1]", PROCREG_EINVAL,
                      "optimized: inner backend");

    /* Nested specs, and a cache turned off. */
    procreg_backend *b = open_backend(
        "optimized:inner=[optimized:inner=[fake:id=9],ttl_ms=0],"
        "cache_capacity=10K,negative_cache=yes,index=off");
    fake_inner *f = fake_instance(9);
    reg(b, "s", "a", 5, NULL);
    g_assert_cmpint(look(b, "s", "a"), ==, 5);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, 0);
    g_assert_cmpuint(CACHE(b, "capacity"), ==, 10240);
    procreg_backend_close(b);

    b = open_backend("optimized:inner=[fake:id=9],ttl_ms=0");
    f = fake_instance(9);
    reg(b, "s", "a", 5, NULL);
    g_assert_cmpint(look(b, "s", "a"), ==, 5);
    g_assert_cmpint(look(b, "s", "a"), ==, 5);
    g_assert_cmpuint(fake_calls(f, FAKE_LOOKUP), ==, 2);
    procreg_backend_close(b);
}

/* Through the public API: a registry on the decorator behaves as one on
 * its inner backend, with procreg_find answered by the index. */
static void test_public_api(void)
{
    procreg *r = NULL;
    GError *error = NULL;
    procreg_owner o;
    procreg_entry *found = NULL;
    size_t n = 0;

    g_assert_cmpint(procreg_open("optimized:inner=ghash,ttl_ms=1000", &r,
                                 &error), ==, 0);
    g_assert_no_error(error);
    g_assert_cmpint(procreg_register(r, "prod", "web", NULL,
                                     md_str("role", "front"), NULL, &error),
                    ==, 0);
    g_assert_cmpint(procreg_lookup(r, "prod", "web", &o, &error), ==, 0);
    g_assert_cmpint(o.pid, ==, getpid());
    g_assert_cmpint(procreg_find(r, NULL, "role",
                                 g_variant_new_string("front"), &found, &n,
                                 &error), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    g_assert_cmpstr(found[0].name, ==, "web");
    procreg_entries_free(found, n);
    g_assert_cmpint(procreg_unregister(r, "prod", "web", &error), ==, 0);
    g_assert_cmpint(procreg_lookup(r, "prod", "web", &o, &error), ==,
                    PROCREG_ENOTFOUND);
    g_assert_error(error, PROCREG_ERROR, PROCREG_ENOTFOUND);
    g_clear_error(&error);
    procreg_health h;
    g_assert_cmpint(procreg_health_check(r, &h, &error), ==, 0);
    g_assert_cmpint(h.status, ==, PROCREG_HEALTH_OK);
    procreg_health_clear(&h);
    procreg_close(r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    fake_inner_register_types();
    g_test_add_func("/optimized/cache/hit-does-not-reach-inner",
                    test_hit_does_not_reach_inner);
    g_test_add_func("/optimized/cache/expired-reaches-inner",
                    test_expired_reaches_inner);
    g_test_add_func("/optimized/cache/write-invalidates",
                    test_write_invalidates);
    g_test_add_func("/optimized/cache/negative", test_negative_cache);
    g_test_add_func("/optimized/cache/stats-exact", test_stats_exact);
    g_test_add_func("/optimized/cache/full-cache-keeps-writes-out",
                    test_full_cache_keeps_writes_out);
    g_test_add_func("/optimized/cache/eviction-keeps-hot",
                    test_eviction_keeps_hot);
    g_test_add_func("/optimized/cache/notify-invalidates",
                    test_notify_invalidates);
    g_test_add_func("/optimized/cache/staleness-bound", test_staleness_bound);
    g_test_add_func("/optimized/cache/shared-inner-notification",
                    test_shared_inner_notification);
    g_test_add_func("/optimized/index/writes-never-scan",
                    test_index_writes_never_scan);
    g_test_add_func("/optimized/index/notify-rebuilds",
                    test_index_notify_rebuilds);
    g_test_add_func("/optimized/index/off-for-shared-inner",
                    test_index_off_for_shared_inner);
    g_test_add_func("/optimized/index/equals-scan", test_index_equals_scan);
    g_test_add_func("/optimized/options", test_options);
    g_test_add_func("/optimized/public-api", test_public_api);
    return g_test_run();
}
