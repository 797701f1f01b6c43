/*
 * Concurrency tests of the ckht backend: lock-free readers against a
 * writer, the unique-registration race, short-lived reader threads (epoch
 * records must be recycled), growth under concurrent lookups, and metadata
 * that outlives its entry.  Meant to run under ThreadSanitizer and
 * AddressSanitizer as well as plain.
 */
#include <procreg/backend.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "ck-common/ck-common.h"

#ifdef PROCREG_CK_TSAN
/* False positives from libglib, which is not instrumented (each needs
 * glib's own atomics, which TSan cannot see):
 *  - A static GRWLock allocates its pthread_rwlock_t on first use and
 *    publishes it with a compare-and-swap; the first GError made in two
 *    threads at once (glib's error-domain table) is reported as a race on
 *    the lock's own memory.  Only races inside the lock calls are exempt,
 *    not the data they protect.
 *  - GVariant reference counts: when the last reference of a metadata
 *    dictionary is dropped in another thread than the one that last read
 *    it, TSan sees a free() with no happens-before edge to those reads,
 *    although the reference count orders them.  Frees of entries
 *    themselves (ckht_entry_free) are still checked. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race:g_rw_lock_reader_lock\n"
           "race:g_rw_lock_writer_lock\n"
           "race:g_variant_unref\n";
}
#endif

/* How long the reader/writer stress runs. */
#define STRESS_SECONDS 2.0

static procreg *open_ckht(const char *options)
{
    procreg *reg = NULL;
    GError *error = NULL;
    char *spec = options ? g_strdup_printf("ckht:%s", options)
                         : g_strdup("ckht");
    int rc = procreg_open(spec, &reg, &error);

    g_assert_no_error(error);
    g_assert_cmpint(rc, ==, 0);
    g_free(spec);
    return reg;
}

static procreg_key **make_keys(const char *ns, const char *prefix, size_t n)
{
    procreg_key **keys = g_new0(procreg_key *, n);
    size_t i;

    for (i = 0; i < n; i++) {
        char name[64];
        GError *error = NULL;

        g_snprintf(name, sizeof name, "%s-%zu", prefix, i);
        g_assert_cmpint(procreg_key_new(ns, name, &keys[i], &error), ==, 0);
        g_assert_no_error(error);
    }
    return keys;
}

static void free_keys(procreg_key **keys, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        procreg_key_unref(keys[i]);
    g_free(keys);
}

/* A backend figure from procreg_stats(): backend_stats[@name]. */
static guint64 backend_stat(procreg *reg, const char *name)
{
    GVariant *stats = NULL, *backend;
    guint64 value = 0;

    g_assert_cmpint(procreg_stats(reg, &stats, NULL), ==, 0);
    backend = g_variant_lookup_value(stats, "backend_stats",
                                     G_VARIANT_TYPE_VARDICT);
    g_assert_nonnull(backend);
    g_assert_true(g_variant_lookup(backend, name, "t", &value));
    g_variant_unref(backend);
    g_variant_unref(stats);
    return value;
}

/* Poll until every retired object was freed.  Each stats call hands
 * retired memory to the epoch and polls it; with no reader inside a
 * section a few polls pass a grace period. */
static void wait_reclaimed(procreg *reg)
{
    int i;

    for (i = 0; i < 1000 && backend_stat(reg, "epoch_pending") > 0; i++)
        g_usleep(1000);
    g_assert_cmpuint(backend_stat(reg, "epoch_pending"), ==, 0);
}

/* ------------------------------------------------------------------------ */
/* Readers against a writer                                                 */

#define RW_KEYS 32
#define RW_READERS 3

static guint64 checksum(guint64 seq, guint64 k)
{
    guint64 x = seq * UINT64_C(0x9E3779B97F4A7C15) ^ (k + 1);

    x ^= x >> 31;
    return x * UINT64_C(0xBF58476D1CE4E5B9);
}

static GVariant *rw_metadata(guint64 seq, guint64 k)
{
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "seq", "t", seq);
    g_variant_dict_insert(&d, "check", "t", checksum(seq, k));
    /* Some bulk, so a torn or freed entry is likelier to show. */
    g_variant_dict_insert(&d, "pad", "s",
                          "0123456789abcdef0123456789abcdef");
    return g_variant_dict_end(&d);
}

typedef struct {
    procreg *reg;
    procreg_key **keys;
    atomic_bool stop;
    atomic_uint errors;
    atomic_ulong hits, misses;
    GMutex first_error_lock;
    char *first_error;
} rw_shared;

static void rw_fail(rw_shared *s, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void rw_fail(rw_shared *s, const char *fmt, ...)
{
    va_list ap;

    atomic_fetch_add(&s->errors, 1);
    g_mutex_lock(&s->first_error_lock);
    if (s->first_error == NULL) {
        va_start(ap, fmt);
        s->first_error = g_strdup_vprintf(fmt, ap);
        va_end(ap);
    }
    g_mutex_unlock(&s->first_error_lock);
}

static gpointer rw_reader(gpointer data)
{
    rw_shared *s = data;
    guint64 last_rev[RW_KEYS] = {0}, last_seq[RW_KEYS] = {0};
    GRand *rand = g_rand_new();
    pid_t self = getpid();
    unsigned long hits = 0, misses = 0;

    while (!atomic_load(&s->stop)) {
        guint k = g_rand_int_range(rand, 0, RW_KEYS);
        procreg_entry e;
        procreg_owner owner;
        guint64 seq, check;
        int rc;

        if (g_rand_boolean(rand)) {
            rc = procreg_lookup_key(s->reg, s->keys[k], &owner, NULL);
            if (rc == PROCREG_ENOTFOUND) {
                misses++;
            } else if (rc != 0) {
                rw_fail(s, "lookup: %d", rc);
            } else {
                hits++;
                if (owner.pid != self)
                    rw_fail(s, "lookup: pid %d", (int)owner.pid);
            }
            continue;
        }
        rc = procreg_lookup_entry_key(s->reg, s->keys[k], &e, NULL);
        if (rc == PROCREG_ENOTFOUND) {
            misses++;
            continue;
        }
        if (rc != 0) {
            rw_fail(s, "lookup_entry: %d", rc);
            continue;
        }
        hits++;
        if (e.owner.pid != self)
            rw_fail(s, "key %u: pid %d", k, (int)e.owner.pid);
        if (e.metadata == NULL ||
            !g_variant_lookup(e.metadata, "seq", "t", &seq) ||
            !g_variant_lookup(e.metadata, "check", "t", &check)) {
            rw_fail(s, "key %u: incomplete metadata", k);
        } else if (check != checksum(seq, k)) {
            rw_fail(s, "key %u: checksum mismatch at seq %" G_GUINT64_FORMAT,
                    k, seq);
        } else if (e.revision < last_rev[k] ||
                   (e.revision == last_rev[k] && seq != last_seq[k]) ||
                   (e.revision > last_rev[k] && seq <= last_seq[k])) {
            rw_fail(s, "key %u: went back from revision %" G_GUINT64_FORMAT
                    " (seq %" G_GUINT64_FORMAT ") to %" G_GUINT64_FORMAT
                    " (seq %" G_GUINT64_FORMAT ")", k, last_rev[k],
                    last_seq[k], e.revision, seq);
        } else {
            last_rev[k] = e.revision;
            last_seq[k] = seq;
        }
        procreg_entry_clear(&e);
    }
    atomic_fetch_add(&s->hits, hits);
    atomic_fetch_add(&s->misses, misses);
    g_rand_free(rand);
    return NULL;
}

static void test_readers_vs_writer(void)
{
    rw_shared s = {0};
    GThread *readers[RW_READERS];
    guint64 rev[RW_KEYS] = {0};
    guint64 seq = 0, max_rev = 0, writes = 0;
    GRand *rand = g_rand_new_with_seed(42);
    GTimer *timer = g_timer_new();
    int i;

    s.reg = open_ckht(NULL);
    s.keys = make_keys("stress", "rw", RW_KEYS);
    g_mutex_init(&s.first_error_lock);
    for (i = 0; i < RW_READERS; i++)
        readers[i] = g_thread_new("reader", rw_reader, &s);

    while (g_timer_elapsed(timer, NULL) < STRESS_SECONDS) {
        guint k = g_rand_int_range(rand, 0, RW_KEYS);
        procreg_entry cur;
        uint64_t new_rev = 0;
        int rc;

        seq++;
        if (rev[k] == 0) {
            rc = procreg_register_key(s.reg, s.keys[k], NULL,
                                      rw_metadata(seq, k), &cur, NULL);
            g_assert_cmpint(rc, ==, 0);
            new_rev = cur.revision;
            procreg_entry_clear(&cur);
        } else if (g_rand_int_range(rand, 0, 3) != 0) {
            rc = procreg_update_metadata_key(s.reg, s.keys[k],
                                             rw_metadata(seq, k),
                                             PROCREG_UPDATE_REPLACE, rev[k],
                                             &new_rev, NULL);
            g_assert_cmpint(rc, ==, 0);
        } else {
            rc = procreg_unregister_key(s.reg, s.keys[k], rev[k], NULL);
            g_assert_cmpint(rc, ==, 0);
        }
        if (new_rev != 0) {
            /* One counter per instance: strictly increasing. */
            g_assert_cmpuint(new_rev, >, max_rev);
            max_rev = new_rev;
        }
        rev[k] = new_rev;
        writes++;
    }
    atomic_store(&s.stop, true);
    for (i = 0; i < RW_READERS; i++)
        g_thread_join(readers[i]);

    g_test_message("%" G_GUINT64_FORMAT " writes, %lu hits, %lu misses, "
                   "%u errors", writes, atomic_load(&s.hits),
                   atomic_load(&s.misses), atomic_load(&s.errors));
    if (s.first_error != NULL)
        g_test_message("first error: %s", s.first_error);
    g_assert_cmpuint(atomic_load(&s.errors), ==, 0);
    g_assert_cmpuint(atomic_load(&s.hits), >, 0);
    g_assert_cmpuint(atomic_load(&s.misses), >, 0);
    g_assert_cmpuint(writes, >, 100);
    /* The table was rebuilt without its tombstones while readers probed. */
    g_assert_cmpuint(backend_stat(s.reg, "table_rebuilds"), >, 0);

    /* The final state is the writer's view. */
    for (i = 0; i < RW_KEYS; i++) {
        procreg_entry e;
        int rc = procreg_lookup_entry_key(s.reg, s.keys[i], &e, NULL);

        if (rev[i] == 0) {
            g_assert_cmpint(rc, ==, PROCREG_ENOTFOUND);
        } else {
            g_assert_cmpint(rc, ==, 0);
            g_assert_cmpuint(e.revision, ==, rev[i]);
            procreg_entry_clear(&e);
            g_assert_cmpint(procreg_unregister_key(s.reg, s.keys[i], 0, NULL),
                            ==, 0);
        }
    }
    g_assert_cmpuint(backend_stat(s.reg, "entries"), ==, 0);
    wait_reclaimed(s.reg);
    g_assert_cmpuint(backend_stat(s.reg, "entry_bytes"), ==, 0);

    g_free(s.first_error);
    g_mutex_clear(&s.first_error_lock);
    free_keys(s.keys, RW_KEYS);
    procreg_close(s.reg);
    g_rand_free(rand);
    g_timer_destroy(timer);
}

/* ------------------------------------------------------------------------ */
/* The unique-registration race                                             */

#define UR_THREADS 8
#define UR_ROUNDS 200

typedef struct {
    procreg *reg;
    procreg_key **keys;
    pthread_barrier_t barrier;
    procreg_owner owners[3];
    int n_owners;
    int rc[UR_ROUNDS][UR_THREADS];
    procreg_entry current[UR_ROUNDS][UR_THREADS];
} ur_shared;

typedef struct {
    ur_shared *s;
    int index;
} ur_thread;

static gpointer ur_racer(gpointer data)
{
    ur_thread *t = data;
    ur_shared *s = t->s;
    int r;

    for (r = 0; r < UR_ROUNDS; r++) {
        GVariantDict d;

        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "thread", "i", t->index);
        pthread_barrier_wait(&s->barrier);
        s->rc[r][t->index] = procreg_register_key(
            s->reg, s->keys[r], &s->owners[t->index % s->n_owners],
            g_variant_dict_end(&d), &s->current[r][t->index], NULL);
    }
    return NULL;
}

static void test_unique_register(void)
{
    ur_shared *s = g_new0(ur_shared, 1);
    GThread *threads[UR_THREADS];
    ur_thread args[UR_THREADS];
    int r, i;

    s->reg = open_ckht(NULL);
    s->keys = make_keys("race", "unique", UR_ROUNDS);
    /* Distinct live owners, so a loser can tell whose entry it got. */
    procreg_owner_self(&s->owners[s->n_owners++]);
    if (procreg_owner_from_pid(getppid(), &s->owners[s->n_owners], NULL) == 0)
        s->n_owners++;
    if (procreg_owner_from_pid(1, &s->owners[s->n_owners], NULL) == 0 &&
        s->owners[s->n_owners].pid != s->owners[s->n_owners - 1].pid)
        s->n_owners++;
    pthread_barrier_init(&s->barrier, NULL, UR_THREADS);
    for (i = 0; i < UR_THREADS; i++) {
        args[i].s = s;
        args[i].index = i;
        threads[i] = g_thread_new("racer", ur_racer, &args[i]);
    }
    for (i = 0; i < UR_THREADS; i++)
        g_thread_join(threads[i]);

    for (r = 0; r < UR_ROUNDS; r++) {
        int winner = -1;
        procreg_entry e;

        for (i = 0; i < UR_THREADS; i++) {
            if (s->rc[r][i] == 0) {
                g_assert_cmpint(winner, ==, -1); /* exactly one winner */
                winner = i;
            } else {
                g_assert_cmpint(s->rc[r][i], ==, PROCREG_EEXISTS);
            }
        }
        g_assert_cmpint(winner, >=, 0);
        for (i = 0; i < UR_THREADS; i++) {
            const procreg_entry *c = &s->current[r][i];
            gint32 who = -1;

            /* Winner and losers all got the winner's entry. */
            g_assert_nonnull(c->metadata);
            g_assert_true(g_variant_lookup(c->metadata, "thread", "i", &who));
            g_assert_cmpint(who, ==, winner);
            g_assert_cmpint(c->owner.pid, ==,
                            s->owners[winner % s->n_owners].pid);
            g_assert_cmpuint(c->owner.start_time, ==,
                             s->owners[winner % s->n_owners].start_time);
            g_assert_cmpuint(c->revision, ==,
                             s->current[r][winner].revision);
        }
        g_assert_cmpint(procreg_lookup_entry_key(s->reg, s->keys[r], &e, NULL),
                        ==, 0);
        g_assert_cmpuint(e.revision, ==, s->current[r][winner].revision);
        procreg_entry_clear(&e);
        for (i = 0; i < UR_THREADS; i++)
            procreg_entry_clear(&s->current[r][i]);
    }
    g_assert_cmpuint(backend_stat(s->reg, "entries"), ==, UR_ROUNDS);

    pthread_barrier_destroy(&s->barrier);
    free_keys(s->keys, UR_ROUNDS);
    procreg_close(s->reg);
    g_free(s);
}

/* ------------------------------------------------------------------------ */
/* Short-lived reader threads                                               */

#define SL_WAVES 100
#define SL_WAVE_THREADS 4

typedef struct {
    procreg *reg;
    procreg_key *key;
    atomic_uint found;
} sl_shared;

static gpointer sl_reader(gpointer data)
{
    sl_shared *s = data;
    procreg_owner owner;
    int i;

    for (i = 0; i < 10; i++) {
        if (procreg_lookup_key(s->reg, s->key, &owner, NULL) == 0)
            atomic_fetch_add(&s->found, 1);
    }
    return NULL;
}

static void test_short_lived_threads(void)
{
    sl_shared s = {0};
    procreg_key **keys;
    size_t allocated, in_use;
    int w, i;

    s.reg = open_ckht(NULL);
    keys = make_keys("threads", "short", 1);
    s.key = keys[0];
    g_assert_cmpint(procreg_register_key(s.reg, s.key, NULL, NULL, NULL, NULL),
                    ==, 0);
    /* This thread has its record and the registry its writer record. */
    sl_reader(&s);
    allocated = procreg_epoch_records_allocated();
    in_use = procreg_epoch_records_in_use();

    for (w = 0; w < SL_WAVES; w++) {
        GThread *threads[SL_WAVE_THREADS];

        for (i = 0; i < SL_WAVE_THREADS; i++)
            threads[i] = g_thread_new("short", sl_reader, &s);
        for (i = 0; i < SL_WAVE_THREADS; i++)
            g_thread_join(threads[i]);
        /* Joined threads gave their records back. */
        g_assert_cmpuint(procreg_epoch_records_in_use(), ==, in_use);
    }
    g_assert_cmpuint(atomic_load(&s.found), ==,
                     10 * (SL_WAVES * SL_WAVE_THREADS + 1));
    /* 400 threads, at most 4 at a time: at most 4 new records. */
    g_test_message("records allocated: %zu before, %zu after %d threads",
                   allocated, procreg_epoch_records_allocated(),
                   SL_WAVES * SL_WAVE_THREADS);
    g_assert_cmpuint(procreg_epoch_records_allocated(), <=,
                     allocated + SL_WAVE_THREADS);
    g_assert_cmpuint(backend_stat(s.reg, "epoch_records"), ==,
                     procreg_epoch_records_allocated());

    free_keys(keys, 1);
    procreg_close(s.reg);
}

/* ------------------------------------------------------------------------ */
/* Growth under concurrent lookups                                          */

#define GR_STABLE 8
#define GR_KEYS 100000
#define GR_READERS 2

typedef struct {
    procreg *reg;
    procreg_key **stable;
    procreg_key **keys;
    atomic_size_t published;
    atomic_bool stop;
    atomic_uint errors;
    atomic_ulong reads;
} gr_shared;

static gpointer gr_reader(gpointer data)
{
    gr_shared *s = data;
    GRand *rand = g_rand_new();
    pid_t self = getpid();
    unsigned long reads = 0;

    while (!atomic_load(&s->stop)) {
        procreg_owner owner;
        size_t n = atomic_load(&s->published);
        int i;

        /* Present from the start: always found, however the table moves. */
        for (i = 0; i < GR_STABLE; i++) {
            if (procreg_lookup_key(s->reg, s->stable[i], &owner, NULL) != 0 ||
                owner.pid != self)
                atomic_fetch_add(&s->errors, 1);
        }
        /* Registered before `published` was raised: found too. */
        if (n > 0) {
            size_t k = (size_t)g_rand_int_range(rand, 0, (gint32)n);

            if (procreg_lookup_key(s->reg, s->keys[k], &owner, NULL) != 0)
                atomic_fetch_add(&s->errors, 1);
        }
        reads += GR_STABLE + 1;
    }
    atomic_fetch_add(&s->reads, reads);
    g_rand_free(rand);
    return NULL;
}

static void test_grow_under_lookups(void)
{
    gr_shared s = {0};
    GThread *readers[GR_READERS];
    guint64 capacity_before;
    size_t i;

    s.reg = open_ckht("initial_size=1");
    s.stable = make_keys("grow", "stable", GR_STABLE);
    s.keys = make_keys("grow", "key", GR_KEYS);
    for (i = 0; i < GR_STABLE; i++)
        g_assert_cmpint(procreg_register_key(s.reg, s.stable[i], NULL, NULL,
                                             NULL, NULL), ==, 0);
    capacity_before = backend_stat(s.reg, "table_capacity");
    g_assert_cmpuint(capacity_before, <=, 32);

    for (i = 0; i < GR_READERS; i++)
        readers[i] = g_thread_new("reader", gr_reader, &s);
    for (i = 0; i < GR_KEYS; i++) {
        g_assert_cmpint(procreg_register_key(s.reg, s.keys[i], NULL, NULL,
                                             NULL, NULL), ==, 0);
        atomic_store(&s.published, i + 1);
    }
    atomic_store(&s.stop, true);
    for (i = 0; i < GR_READERS; i++)
        g_thread_join(readers[i]);

    g_test_message("%lu reads, capacity %" G_GUINT64_FORMAT " -> %"
                   G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT " grows",
                   atomic_load(&s.reads), capacity_before,
                   backend_stat(s.reg, "table_capacity"),
                   backend_stat(s.reg, "table_grows"));
    g_assert_cmpuint(atomic_load(&s.errors), ==, 0);
    g_assert_cmpuint(atomic_load(&s.reads), >, 0);
    g_assert_cmpuint(backend_stat(s.reg, "entries"), ==, GR_KEYS + GR_STABLE);
    /* Load stays at or below 1/2. */
    g_assert_cmpuint(backend_stat(s.reg, "table_capacity"), >=,
                     2 * (GR_KEYS + GR_STABLE));
    g_assert_cmpuint(backend_stat(s.reg, "table_grows"), >=, 10);
    /* Old tables are reclaimed. */
    wait_reclaimed(s.reg);
    g_assert_cmpuint(backend_stat(s.reg, "table_bytes"), <,
                     40 * backend_stat(s.reg, "table_capacity"));

    free_keys(s.stable, GR_STABLE);
    free_keys(s.keys, GR_KEYS);
    procreg_close(s.reg);
}

/* ------------------------------------------------------------------------ */
/* Metadata outlives its entry                                              */

static void test_metadata_outlives_entry(void)
{
    procreg *reg = open_ckht(NULL);
    procreg_key **keys = make_keys("meta", "k", 200);
    procreg_entry e;
    GVariantDict d;
    const char *s = NULL;
    int i, round;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "greeting", "s", "hello");
    g_assert_cmpint(procreg_register_key(reg, keys[0], NULL,
                                         g_variant_dict_end(&d), NULL, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_lookup_entry_key(reg, keys[0], &e, NULL), ==, 0);
    g_assert_cmpint(procreg_unregister_key(reg, keys[0], 0, NULL), ==, 0);

    /* Churn so that the retired entry is certainly reclaimed, and the
     * memory it held reused. */
    for (round = 0; round < 5; round++) {
        for (i = 1; i < 200; i++) {
            GVariantDict m;

            g_variant_dict_init(&m, NULL);
            g_variant_dict_insert(&m, "greeting", "s", "other");
            g_assert_cmpint(procreg_register_key(reg, keys[i], NULL,
                                                 g_variant_dict_end(&m), NULL,
                                                 NULL), ==, 0);
        }
        for (i = 1; i < 200; i++)
            g_assert_cmpint(procreg_unregister_key(reg, keys[i], 0, NULL), ==,
                            0);
    }
    wait_reclaimed(reg);

    g_assert_nonnull(e.metadata);
    g_assert_true(g_variant_lookup(e.metadata, "greeting", "&s", &s));
    g_assert_cmpstr(s, ==, "hello");
    procreg_entry_clear(&e);

    free_keys(keys, 200);
    procreg_close(reg);
}

/* ------------------------------------------------------------------------ */
/* Scans and namespace drops against a writer                               */

/* The writer fills namespace "fill" with SC_KEYS entries, one at a time in
 * index order, tagged with a cycle number, then drops the namespace and
 * starts the next cycle.  A scan is a snapshot between two writes, and a
 * drop is one write, so every listing of "fill" must be exactly the
 * indexes 0..n-1 of a single cycle.  Keys in "other" churn meanwhile. */

#define SC_KEYS 40
#define SC_LISTERS 2

typedef struct {
    procreg_backend *b;
    procreg_key **fill;
    procreg_key **other;
    atomic_bool stop;
    atomic_uint errors;
    atomic_ulong scans, reads;
    GMutex first_error_lock;
    char *first_error;
} sc_shared;

static void sc_fail(sc_shared *s, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void sc_fail(sc_shared *s, const char *fmt, ...)
{
    va_list ap;

    atomic_fetch_add(&s->errors, 1);
    g_mutex_lock(&s->first_error_lock);
    if (s->first_error == NULL) {
        va_start(ap, fmt);
        s->first_error = g_strdup_vprintf(fmt, ap);
        va_end(ap);
    }
    g_mutex_unlock(&s->first_error_lock);
}

static GVariant *sc_metadata(guint64 cycle, guint64 idx)
{
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "cycle", "t", cycle);
    g_variant_dict_insert(&d, "idx", "t", idx);
    g_variant_dict_insert(&d, "check", "t", checksum(cycle, idx));
    return g_variant_ref_sink(g_variant_dict_end(&d));
}

/* Check one entry of "fill"; returns its cycle and index. */
static bool sc_entry_ok(sc_shared *s, const procreg_entry *e, guint64 *cycle,
                        guint64 *idx)
{
    guint64 check;
    char expect[32];

    if (e->metadata == NULL ||
        !g_variant_lookup(e->metadata, "cycle", "t", cycle) ||
        !g_variant_lookup(e->metadata, "idx", "t", idx) ||
        !g_variant_lookup(e->metadata, "check", "t", &check) ||
        check != checksum(*cycle, *idx)) {
        sc_fail(s, "incomplete or torn entry %s", e->name ? e->name : "?");
        return false;
    }
    g_snprintf(expect, sizeof expect, "fill-%" G_GUINT64_FORMAT, *idx);
    if (e->name != NULL && strcmp(e->name, expect) != 0) {
        sc_fail(s, "entry %s carries index %" G_GUINT64_FORMAT, e->name,
                *idx);
        return false;
    }
    return true;
}

/* Check a listing holds exactly indexes 0..n-1 of one cycle. */
static void sc_check_listing(sc_shared *s, GArray *entries, const char *what)
{
    guint64 cycle0 = 0;
    bool seen[SC_KEYS] = {false};
    size_t n = 0;
    guint i;

    for (i = 0; i < entries->len; i++) {
        const procreg_entry *e = &g_array_index(entries, procreg_entry, i);
        guint64 cycle, idx;

        if (g_strcmp0(e->ns, "fill") != 0)
            continue;
        if (!sc_entry_ok(s, e, &cycle, &idx))
            return;
        if (n == 0)
            cycle0 = cycle;
        if (cycle != cycle0 || idx >= SC_KEYS || seen[idx]) {
            sc_fail(s, "%s: mixed cycles or duplicate index", what);
            return;
        }
        seen[idx] = true;
        n++;
    }
    for (i = 0; i < n; i++) {
        if (!seen[i]) {
            sc_fail(s, "%s: %zu entries but index %u missing: not a "
                    "snapshot", what, n, i);
            return;
        }
    }
}

static gpointer sc_lister(gpointer data)
{
    sc_shared *s = data;
    unsigned long scans = 0;

    while (!atomic_load(&s->stop)) {
        GArray *all = procreg_entry_array_new();
        GArray *fill = procreg_entry_array_new();
        GArray *found = procreg_entry_array_new();
        GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
        size_t count = 0;
        guint i;

        if (procreg_backend_list_all(s->b, NULL, all, NULL) != 0 ||
            procreg_backend_list_all(s->b, "fill", fill, NULL) != 0 ||
            procreg_backend_count(s->b, "fill", &count, NULL) != 0 ||
            procreg_backend_list_names(s->b, "fill", 5, names) != 0)
            sc_fail(s, "a scan failed");
        sc_check_listing(s, all, "list_all(NULL)");
        sc_check_listing(s, fill, "list_all(fill)");
        for (i = 0; i < fill->len; i++) {
            if (g_strcmp0(g_array_index(fill, procreg_entry, i).ns, "fill"))
                sc_fail(s, "list_all(fill) returned another namespace");
        }
        if (count > SC_KEYS || names->len > 5)
            sc_fail(s, "count %zu, %u names", count, names->len);
        for (i = 0; i < names->len; i++) {
            if (!g_str_has_prefix(g_ptr_array_index(names, i), "fill-"))
                sc_fail(s, "list_names(fill) gave %s",
                        (char *)g_ptr_array_index(names, i));
        }
        /* The cycle of the listing, if any: find must return only it. */
        if (fill->len > 0) {
            guint64 cycle = 0, idx;
            GVariant *v;

            if (sc_entry_ok(s, &g_array_index(fill, procreg_entry, 0), &cycle,
                            &idx)) {
                v = g_variant_ref_sink(g_variant_new_uint64(cycle));
                if (procreg_backend_find_by_metadata(s->b, "fill", "cycle", v,
                                                     found, NULL) != 0)
                    sc_fail(s, "find failed");
                sc_check_listing(s, found, "find(cycle)");
                g_variant_unref(v);
            }
        }
        g_ptr_array_unref(names);
        g_array_unref(found);
        g_array_unref(fill);
        g_array_unref(all);
        scans++;
    }
    atomic_fetch_add(&s->scans, scans);
    return NULL;
}

static gpointer sc_reader(gpointer data)
{
    sc_shared *s = data;
    GRand *rand = g_rand_new();
    unsigned long reads = 0;

    while (!atomic_load(&s->stop)) {
        guint k = g_rand_int_range(rand, 0, SC_KEYS);
        procreg_entry e;
        guint64 cycle, idx;
        int rc = procreg_backend_lookup_entry(s->b, s->fill[k], &e, NULL);

        if (rc == 0) {
            if (sc_entry_ok(s, &e, &cycle, &idx) && idx != k)
                sc_fail(s, "fill-%u read as index %" G_GUINT64_FORMAT, k,
                        idx);
            procreg_entry_clear(&e);
        } else if (rc != PROCREG_ENOTFOUND) {
            sc_fail(s, "lookup_entry: %d", rc);
        }
        reads++;
    }
    atomic_fetch_add(&s->reads, reads);
    g_rand_free(rand);
    return NULL;
}

static void test_scans_vs_writer(void)
{
    sc_shared s = {0};
    GThread *threads[SC_LISTERS + 1];
    GTimer *timer = g_timer_new();
    procreg_record record = {0};
    guint64 cycle = 0;
    GError *error = NULL;
    int i;

    g_assert_cmpint(procreg_backend_open("ckht", NULL, &s.b, &error), ==, 0);
    g_assert_no_error(error);
    s.fill = make_keys("fill", "fill", SC_KEYS);
    s.other = make_keys("other", "other", SC_KEYS);
    g_mutex_init(&s.first_error_lock);
    procreg_owner_self(&record.owner);
    for (i = 0; i < SC_LISTERS; i++)
        threads[i] = g_thread_new("lister", sc_lister, &s);
    threads[SC_LISTERS] = g_thread_new("reader", sc_reader, &s);

    while (g_timer_elapsed(timer, NULL) < STRESS_SECONDS) {
        GArray *removed = procreg_entry_array_new();
        guint j;

        cycle++;
        for (i = 0; i < SC_KEYS; i++) {
            record.metadata = sc_metadata(cycle, (guint64)i);
            record.registered_at = g_get_real_time();
            g_assert_cmpint(procreg_backend_register_entry(s.b, s.fill[i],
                                                           &record, NULL,
                                                           NULL), ==, 0);
            g_variant_unref(record.metadata);
            /* Churn the other namespace in between. */
            record.metadata = NULL;
            if (procreg_backend_register_entry(s.b, s.other[i], &record,
                                               NULL, NULL) != 0)
                g_assert_cmpint(procreg_backend_unregister(s.b, s.other[i], 0,
                                                           NULL, NULL), ==, 0);
        }
        g_assert_cmpint(procreg_backend_drop_namespace(s.b, "fill", removed,
                                                       NULL), ==, 0);
        g_assert_cmpuint(removed->len, ==, SC_KEYS);
        for (j = 0; j < removed->len; j++) {
            const procreg_entry *e = &g_array_index(removed, procreg_entry, j);
            guint64 c = 0;

            g_assert_cmpstr(e->ns, ==, "fill");
            g_assert_true(g_variant_lookup(e->metadata, "cycle", "t", &c));
            g_assert_cmpuint(c, ==, cycle);
        }
        g_array_unref(removed);
    }
    atomic_store(&s.stop, true);
    for (i = 0; i < SC_LISTERS + 1; i++)
        g_thread_join(threads[i]);

    g_test_message("%" G_GUINT64_FORMAT " cycles, %lu scans, %lu reads, %u "
                   "errors", cycle, atomic_load(&s.scans),
                   atomic_load(&s.reads), atomic_load(&s.errors));
    if (s.first_error != NULL)
        g_test_message("first error: %s", s.first_error);
    g_assert_cmpuint(atomic_load(&s.errors), ==, 0);
    g_assert_cmpuint(atomic_load(&s.scans), >, 0);
    g_assert_cmpuint(cycle, >, 1);

    g_free(s.first_error);
    g_mutex_clear(&s.first_error_lock);
    free_keys(s.fill, SC_KEYS);
    free_keys(s.other, SC_KEYS);
    procreg_backend_close(s.b);
    g_timer_destroy(timer);
}

/* ------------------------------------------------------------------------ */
/* Registration over tombstones                                             */

/* An insert reuses a tombstone that comes before a present key in the
 * probe sequence: one that stopped there (as ck_hs_put_unique does) would
 * add a present key twice.  Many removals in a small table make that case
 * common. */
static void test_register_over_tombstones(void)
{
    procreg *reg = open_ckht("initial_size=64");
    procreg_key **keys = make_keys("tomb", "k", 60);
    bool present[60] = {false};
    GRand *rand = g_rand_new_with_seed(7);
    int round, i;

    for (round = 0; round < 200; round++) {
        procreg_health health;
        size_t count = 0;

        for (i = 0; i < 60; i++) {
            int rc = procreg_register_key(reg, keys[i], NULL, NULL, NULL,
                                          NULL);

            g_assert_cmpint(rc, ==, present[i] ? PROCREG_EEXISTS : 0);
            present[i] = true;
        }
        g_assert_cmpint(procreg_count(reg, "tomb", &count, NULL), ==, 0);
        g_assert_cmpuint(count, ==, 60);
        /* The health check compares ck_hs's own count with ours. */
        g_assert_cmpint(procreg_health_check(reg, &health, NULL), ==, 0);
        g_assert_cmpint(health.status, ==, PROCREG_HEALTH_OK);
        procreg_health_clear(&health);
        for (i = 0; i < 60; i++) {
            if (g_rand_boolean(rand)) {
                g_assert_cmpint(procreg_unregister_key(reg, keys[i], 0, NULL),
                                ==, 0);
                present[i] = false;
            }
        }
    }
    g_rand_free(rand);
    free_keys(keys, 60);
    procreg_close(reg);
}

/* ------------------------------------------------------------------------ */
/* Fresh names                                                              */

/* Services that come and go under names never used again (worker-<pid>)
 * leave a tombstone per unregistration; only rebuilding the table clears
 * them, or every insert ends up probing a long run of tombstones (this
 * loop took 3.9 us per register+unregister here before the rebuilds,
 * 0.3 us with them).  The table must stay sized for what is live. */
static void test_fresh_names(void)
{
    enum { LIVE = 1000, FRESH = 100000 };
    procreg *reg = open_ckht(NULL);
    procreg_key **live = make_keys("fresh", "base", LIVE);
    gint64 t0;
    int i;

    for (i = 0; i < LIVE; i++)
        g_assert_cmpint(procreg_register_key(reg, live[i], NULL, NULL, NULL,
                                             NULL), ==, 0);
    t0 = g_get_monotonic_time();
    for (i = 0; i < FRESH; i++) {
        char name[32];

        g_snprintf(name, sizeof name, "worker-%d", i);
        g_assert_cmpint(procreg_register(reg, "fresh", name, NULL, NULL, NULL,
                                         NULL), ==, 0);
        g_assert_cmpint(procreg_unregister(reg, "fresh", name, NULL), ==, 0);
    }
    g_test_message("%d fresh names: %.0f ns per register+unregister, %"
                   G_GUINT64_FORMAT " rebuilds, %" G_GUINT64_FORMAT " slots",
                   FRESH, (g_get_monotonic_time() - t0) * 1000.0 / FRESH,
                   backend_stat(reg, "table_rebuilds"),
                   backend_stat(reg, "table_capacity"));
    g_assert_cmpuint(backend_stat(reg, "table_rebuilds"), >, 0);
    g_assert_cmpuint(backend_stat(reg, "table_capacity"), <=, 4 * 1024);
    g_assert_cmpuint(backend_stat(reg, "entries"), ==, LIVE);
    for (i = 0; i < LIVE; i++) {
        procreg_owner o;

        g_assert_cmpint(procreg_lookup_key(reg, live[i], &o, NULL), ==, 0);
    }
    free_keys(live, LIVE);
    procreg_close(reg);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ckht/stress/readers-vs-writer", test_readers_vs_writer);
    g_test_add_func("/ckht/stress/scans-vs-writer", test_scans_vs_writer);
    g_test_add_func("/ckht/stress/unique-register", test_unique_register);
    g_test_add_func("/ckht/stress/short-lived-threads",
                    test_short_lived_threads);
    g_test_add_func("/ckht/stress/grow-under-lookups", test_grow_under_lookups);
    g_test_add_func("/ckht/register-over-tombstones",
                    test_register_over_tombstones);
    g_test_add_func("/ckht/fresh-names", test_fresh_names);
    g_test_add_func("/ckht/metadata-outlives-entry",
                    test_metadata_outlives_entry);
    return g_test_run();
}
