/*
 * Compliance cases for volume and threads: many entries in several
 * namespaces (list order, counts, find over them); threads racing to
 * register the same keys (one winner each, the others told who won);
 * readers never see a torn or mixed entry while writers replace it.
 */
#include "compliance-private.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Cases: volume                                                            */

void case_many_entries(Fixture *f)
{
    enum { PER_NS = 300 };
    const char *nss[] = {"m1", "m2", "m3"};
    g_autoptr(GError) err = NULL;
    for (size_t s = 0; s < G_N_ELEMENTS(nss); s++)
        for (int i = 0; i < PER_NS; i++) {
            g_autofree char *name = g_strdup_printf("svc-%05d", i);
            CHECK_OK(procreg_register(
                         f->reg, nss[s], name, NULL,
                         g_variant_new_parsed("{'mod': <%i>, 'i': <%i>}",
                                              i % 7, i),
                         NULL, &err),
                     err);
        }
    size_t n = 0;
    CHECK_OK(procreg_count(f->reg, NULL, &n, &err), err);
    CHECK(n == 3 * PER_NS);
    for (size_t s = 0; s < G_N_ELEMENTS(nss); s++) {
        g_auto(EntryList) l = {0};
        CHECK_OK(procreg_list(f->reg, nss[s], &l.v, &l.n, &err), err);
        CHECK_MSG(l.n == PER_NS, "list(%s) gave %zu", nss[s], l.n);
        cx_check_list_shape(&l);
        CHECK_HELPER();
        for (int i = 0; i < PER_NS; i++) {
            g_autofree char *name = g_strdup_printf("svc-%05d", i);
            CHECK(strcmp(l.v[i].name, name) == 0);
            int32_t got = -1;
            CHECK(l.v[i].metadata != NULL &&
                  g_variant_lookup(l.v[i].metadata, "i", "i", &got) &&
                  got == i);
        }
    }
    /* Remove the odd ones from m2. */
    for (int i = 1; i < PER_NS; i += 2) {
        g_autofree char *name = g_strdup_printf("svc-%05d", i);
        CHECK_OK(procreg_unregister(f->reg, "m2", name, &err), err);
    }
    CHECK_OK(procreg_count(f->reg, "m2", &n, &err), err);
    CHECK(n == PER_NS / 2);
    for (int i = 0; i < PER_NS; i++) {
        g_autofree char *name = g_strdup_printf("svc-%05d", i);
        procreg_owner o;
        CHECK_RC(procreg_lookup(f->reg, "m2", name, &o, NULL),
                 i % 2 ? PROCREG_ENOTFOUND : 0);
        CHECK_RC(procreg_lookup(f->reg, "m3", name, &o, NULL), 0);
    }
    g_autoptr(GVariant) three = cx_parsed("3");
    size_t want = 0;
    for (int i = 0; i < PER_NS; i++)
        want += (i % 7 == 3) + (i % 7 == 3 && i % 2 == 0) + (i % 7 == 3);
    CHECK_OK(procreg_find_count(f->reg, NULL, "mod", three, &n, &err), err);
    CHECK_MSG(n == want, "find_count(mod=3) = %zu, expected %zu", n, want);
}

static uint32_t checksum(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

/* ------------------------------------------------------------------------ */
/* Cases: concurrency                                                       */

/* pthread primitives rather than GMutex/GCond: glib's are bare futexes
 * that ThreadSanitizer cannot see. */
typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    guint n, count, gen;
} Barrier;

static void barrier_wait(Barrier *b)
{
    pthread_mutex_lock(&b->m);
    guint gen = b->gen;
    if (++b->count == b->n) {
        b->count = 0;
        b->gen++;
        pthread_cond_broadcast(&b->c);
    } else {
        while (gen == b->gen)
            pthread_cond_wait(&b->c, &b->m);
    }
    pthread_mutex_unlock(&b->m);
}

/* First failure seen by a worker thread, reported by the main thread. */
typedef struct {
    pthread_mutex_t m;
    gint failures;
    char *first;
} FailLog;

static void faillog_add(FailLog *l, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void faillog_add(FailLog *l, const char *fmt, ...)
{
    if (g_atomic_int_add(&l->failures, 1) == 0) {
        va_list ap;
        va_start(ap, fmt);
        char *msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&l->m);
        l->first = msg;
        pthread_mutex_unlock(&l->m);
    }
}

/* Metadata shared between threads is handed over in serialised form.  A
 * GVariant built by g_variant_new_parsed() is a tree that glib serialises
 * lazily on first use, under a bit lock ThreadSanitizer cannot see; doing
 * it before publishing keeps TSan runs free of that false report.  (Real
 * readers are safe either way: glib guards the lazy step.) */
static GVariant *serialised(GVariant *v)
{
    (void)g_variant_get_data(v);
    return v;
}

enum { RACE_THREADS = 8, RACE_ROUNDS = 40 };

typedef struct {
    procreg *reg;
    Barrier *bar;
    procreg_key **keys;
    int tid;
    int rc[RACE_ROUNDS];
    uint64_t rev[RACE_ROUNDS];
    int32_t seen[RACE_ROUNDS]; /* thread id in current.metadata */
    pid_t pid[RACE_ROUNDS];
    int cas_rc[RACE_ROUNDS];
    int del_rc[RACE_ROUNDS];
} RaceArg;

static gpointer race_thread(gpointer data)
{
    RaceArg *a = data;
    for (int r = 0; r < RACE_ROUNDS; r++) {
        barrier_wait(a->bar);
        procreg_entry cur = {0};
        a->rc[r] = procreg_register_key(
            a->reg, a->keys[r], NULL,
            serialised(g_variant_new_parsed("{'thread': <int32 %i>}", a->tid)),
            &cur, NULL);
        a->rev[r] = cur.revision;
        a->pid[r] = cur.owner.pid;
        a->seen[r] = -1;
        if (cur.metadata != NULL)
            g_variant_lookup(cur.metadata, "thread", "i", &a->seen[r]);
        procreg_entry_clear(&cur);

        /* Compare-and-set: all update at the revision just registered. */
        barrier_wait(a->bar);
        procreg_entry now = {0};
        int rc = procreg_lookup_entry_key(a->reg, a->keys[r], &now, NULL);
        uint64_t seen_rev = now.revision;
        procreg_entry_clear(&now);
        barrier_wait(a->bar);
        a->cas_rc[r] = rc != 0 ? rc
                               : procreg_update_metadata_key(
                                     a->reg, a->keys[r],
                                     serialised(g_variant_new_parsed(
                                         "{'cas': <int32 %i>}", a->tid)),
                                     PROCREG_UPDATE_REPLACE, seen_rev, NULL,
                                     NULL);
        barrier_wait(a->bar);
        rc = procreg_lookup_entry_key(a->reg, a->keys[r], &now, NULL);
        seen_rev = now.revision;
        procreg_entry_clear(&now);
        barrier_wait(a->bar);
        a->del_rc[r] = rc != 0 ? rc
                               : procreg_unregister_key(a->reg, a->keys[r],
                                                        seen_rev, NULL);
    }
    return NULL;
}

void case_concurrent_register_race(Fixture *f)
{
    Barrier bar = {.n = RACE_THREADS};
    pthread_mutex_init(&bar.m, NULL);
    pthread_cond_init(&bar.c, NULL);
    procreg_key *keys[RACE_ROUNDS];
    for (int r = 0; r < RACE_ROUNDS; r++) {
        g_autofree char *name = g_strdup_printf("race-%d", r);
        int rc = procreg_key_new("race", name, &keys[r], NULL);
        g_assert_cmpint(rc, ==, 0); /* the suite's own key */
    }
    RaceArg *args = g_new0(RaceArg, RACE_THREADS);
    GThread *th[RACE_THREADS];
    for (int t = 0; t < RACE_THREADS; t++) {
        args[t] = (RaceArg){.reg = f->reg, .bar = &bar, .keys = keys,
                            .tid = t};
        th[t] = g_thread_new("race", race_thread, &args[t]);
    }
    for (int t = 0; t < RACE_THREADS; t++)
        g_thread_join(th[t]);
    for (int r = 0; r < RACE_ROUNDS; r++)
        procreg_key_unref(keys[r]);
    pthread_mutex_destroy(&bar.m);
    pthread_cond_destroy(&bar.c);

    g_autofree RaceArg *res = args;
    pid_t self = getpid();
    for (int r = 0; r < RACE_ROUNDS; r++) {
        int winner = -1, winners = 0, cas_ok = 0, del_ok = 0;
        for (int t = 0; t < RACE_THREADS; t++) {
            if (res[t].rc[r] == 0) {
                winner = t;
                winners++;
            } else if (res[t].rc[r] != PROCREG_EEXISTS) {
                FAIL("round %d thread %d: register gave %d (%s), expected "
                     "0 or EEXISTS", r, t, res[t].rc[r],
                     procreg_strerror(res[t].rc[r]));
            }
            cas_ok += res[t].cas_rc[r] == 0;
            CHECK_MSG(res[t].cas_rc[r] == 0 ||
                          res[t].cas_rc[r] == PROCREG_ECONFLICT,
                      "round %d: racing update at one revision gave %d (%s)",
                      r, res[t].cas_rc[r], procreg_strerror(res[t].cas_rc[r]));
            del_ok += res[t].del_rc[r] == 0;
            CHECK_MSG(res[t].del_rc[r] == 0 ||
                          res[t].del_rc[r] == PROCREG_ENOTFOUND ||
                          res[t].del_rc[r] == PROCREG_ECONFLICT,
                      "round %d: racing unregister gave %d (%s)", r,
                      res[t].del_rc[r], procreg_strerror(res[t].del_rc[r]));
        }
        CHECK_MSG(winners == 1, "round %d: %d threads won the registration "
                  "of one key", r, winners);
        CHECK_MSG(res[winner].seen[r] == winner,
                  "round %d: the winner's current holds thread %d", r,
                  res[winner].seen[r]);
        for (int t = 0; t < RACE_THREADS; t++) {
            if (t == winner)
                continue;
            CHECK_MSG(res[t].rev[r] == res[winner].rev[r] &&
                          res[t].seen[r] == winner &&
                          res[t].pid[r] == self,
                      "round %d: loser %d was told revision %" G_GUINT64_FORMAT
                      " thread %d, but the winner is thread %d at revision %"
                      G_GUINT64_FORMAT, r, t, res[t].rev[r], res[t].seen[r],
                      winner, res[winner].rev[r]);
        }
        CHECK_MSG(cas_ok == 1, "round %d: %d updates succeeded at the same "
                  "if_revision, expected exactly 1", r, cas_ok);
        CHECK_MSG(del_ok == 1, "round %d: %d unregisters succeeded at the "
                  "same if_revision, expected exactly 1", r, del_ok);
    }
    size_t n = 1;
    CHECK_RC(procreg_count(f->reg, "race", &n, NULL), 0);
    CHECK_MSG(n == 0, "%zu race keys left after every round removed its", n);
}

enum { TORN_KEYS = 8, TORN_WRITERS = 2, TORN_READERS = 3 };
#define TORN_DURATION_US (400 * 1000)

typedef struct {
    procreg *reg;
    procreg_key **keys;
    FailLog *log;
    int64_t deadline;
    guint seed;
    gint *writes_ok;
    gint *reads_ok;
} TornArg;

static GVariant *torn_metadata(GRand *rnd, uint64_t prev)
{
    int len = g_rand_int_range(rnd, 0, 300);
    char *payload = g_malloc(len + 1);
    for (int i = 0; i < len; i++)
        payload[i] = (char)g_rand_int_range(rnd, 'a', 'z' + 1);
    payload[len] = '\0';
    uint32_t sum = checksum(payload) ^ (uint32_t)prev;
    GVariant *v = g_variant_new_parsed("{'prev': <%t>, 'payload': <%s>, "
                                       "'sum': <%u>}",
                                       (guint64)prev, payload, sum);
    g_free(payload);
    return serialised(v);
}

/* An entry whose metadata says which revision it replaced and a checksum
 * of its payload: a torn or mixed entry fails one of the two. */
static bool torn_check(FailLog *log, const char *where, const procreg_entry *e)
{
    if (e->owner.pid != getpid()) {
        faillog_add(log, "%s: owner pid %d", where, (int)e->owner.pid);
        return false;
    }
    if (e->metadata == NULL ||
        !g_variant_is_of_type(e->metadata, G_VARIANT_TYPE_VARDICT)) {
        faillog_add(log, "%s: metadata missing or not a{sv}", where);
        return false;
    }
    guint64 prev;
    const char *payload;
    guint32 sum;
    if (!g_variant_lookup(e->metadata, "prev", "t", &prev) ||
        !g_variant_lookup(e->metadata, "payload", "&s", &payload) ||
        !g_variant_lookup(e->metadata, "sum", "u", &sum)) {
        faillog_add(log, "%s: metadata lacks prev/payload/sum", where);
        return false;
    }
    if ((checksum(payload) ^ (uint32_t)prev) != sum) {
        faillog_add(log, "%s: torn metadata (checksum mismatch)", where);
        return false;
    }
    if (prev >= e->revision) {
        faillog_add(log, "%s: revision %" G_GUINT64_FORMAT " with metadata "
                    "written over revision %" G_GUINT64_FORMAT " (stale "
                    "revision with new metadata)", where, e->revision,
                    (guint64)prev);
        return false;
    }
    return true;
}

/* Run until the deadline, and past it (up to TORN_MAX_US) until both
 * readers and writers got something done: under valgrind the threads
 * run serialised and 400 ms may pass before one of them is scheduled. */
#define TORN_MAX_US (60 * 1000 * 1000)

static bool torn_keep_going(const TornArg *a)
{
    if (g_atomic_int_get(&a->log->failures) != 0)
        return false;
    int64_t now = g_get_monotonic_time();
    if (now < a->deadline)
        return true;
    return now < a->deadline - TORN_DURATION_US + TORN_MAX_US &&
           (g_atomic_int_get(a->writes_ok) == 0 ||
            g_atomic_int_get(a->reads_ok) == 0);
}

static gpointer torn_writer(gpointer data)
{
    TornArg *a = data;
    GRand *rnd = g_rand_new_with_seed(a->seed);
    while (torn_keep_going(a)) {
        procreg_key *k = a->keys[g_rand_int_range(rnd, 0, TORN_KEYS)];
        procreg_entry e = {0};
        int rc = procreg_lookup_entry_key(a->reg, k, &e, NULL);
        if (rc == PROCREG_ENOTFOUND) {
            rc = procreg_register_key(a->reg, k, NULL, torn_metadata(rnd, 0),
                                      NULL, NULL);
            if (rc != 0 && rc != PROCREG_EEXISTS)
                faillog_add(a->log, "writer: register gave %d (%s)", rc,
                            procreg_strerror(rc));
            continue;
        }
        if (rc != 0) {
            faillog_add(a->log, "writer: lookup_entry gave %d (%s)", rc,
                        procreg_strerror(rc));
            break;
        }
        uint64_t rev = e.revision, nrev = 0;
        procreg_entry_clear(&e);
        if (g_rand_int_range(rnd, 0, 10) == 0) {
            rc = procreg_unregister_key(a->reg, k, rev, NULL);
        } else {
            rc = procreg_update_metadata_key(a->reg, k, torn_metadata(rnd, rev),
                                             PROCREG_UPDATE_REPLACE, rev,
                                             &nrev, NULL);
            if (rc == 0 && nrev <= rev)
                faillog_add(a->log, "writer: update from revision %"
                            G_GUINT64_FORMAT " returned revision %"
                            G_GUINT64_FORMAT, rev, nrev);
        }
        if (rc == 0)
            g_atomic_int_inc(a->writes_ok);
        else if (rc != PROCREG_ECONFLICT && rc != PROCREG_ENOTFOUND)
            faillog_add(a->log, "writer: change gave %d (%s)", rc,
                        procreg_strerror(rc));
    }
    g_rand_free(rnd);
    return NULL;
}

static gpointer torn_reader(gpointer data)
{
    TornArg *a = data;
    GRand *rnd = g_rand_new_with_seed(a->seed);
    unsigned iter = 0;
    while (torn_keep_going(a)) {
        procreg_key *k = a->keys[g_rand_int_range(rnd, 0, TORN_KEYS)];
        procreg_entry e = {0};
        int rc = procreg_lookup_entry_key(a->reg, k, &e, NULL);
        if (rc == 0) {
            if (torn_check(a->log, "lookup_entry", &e))
                g_atomic_int_inc(a->reads_ok);
        } else if (rc != PROCREG_ENOTFOUND) {
            faillog_add(a->log, "reader: lookup_entry gave %d (%s)", rc,
                        procreg_strerror(rc));
        }
        procreg_entry_clear(&e);
        procreg_owner o;
        rc = procreg_lookup_key(a->reg, k, &o, NULL);
        if (rc == 0 && o.pid != getpid())
            faillog_add(a->log, "reader: lookup gave pid %d", (int)o.pid);
        else if (rc != 0 && rc != PROCREG_ENOTFOUND)
            faillog_add(a->log, "reader: lookup gave %d (%s)", rc,
                        procreg_strerror(rc));
        if (++iter % 16 == 0) {
            procreg_entry *v = NULL;
            size_t n = 0;
            rc = procreg_list(a->reg, "torn", &v, &n, NULL);
            if (rc != 0)
                faillog_add(a->log, "reader: list gave %d (%s)", rc,
                            procreg_strerror(rc));
            for (size_t i = 0; i < n; i++) {
                if (!torn_check(a->log, "list", &v[i]))
                    break;
                if (i > 0 && strcmp(v[i - 1].name, v[i].name) >= 0)
                    faillog_add(a->log, "reader: list unsorted");
            }
            procreg_entries_free(v, n);
        }
    }
    g_rand_free(rnd);
    return NULL;
}

void case_concurrent_readers_writers(Fixture *f)
{
    procreg_key *keys[TORN_KEYS];
    for (int i = 0; i < TORN_KEYS; i++) {
        g_autofree char *name = g_strdup_printf("k%d", i);
        int rc = procreg_key_new("torn", name, &keys[i], NULL);
        g_assert_cmpint(rc, ==, 0);
    }
    FailLog log = {0};
    pthread_mutex_init(&log.m, NULL);
    gint writes_ok = 0, reads_ok = 0;
    TornArg args[TORN_WRITERS + TORN_READERS];
    GThread *th[TORN_WRITERS + TORN_READERS];
    int64_t deadline = g_get_monotonic_time() + TORN_DURATION_US;
    for (int i = 0; i < TORN_WRITERS + TORN_READERS; i++) {
        args[i] = (TornArg){.reg = f->reg, .keys = keys, .log = &log,
                            .deadline = deadline, .seed = 1000u + (guint)i,
                            .writes_ok = &writes_ok, .reads_ok = &reads_ok};
        th[i] = g_thread_new(i < TORN_WRITERS ? "writer" : "reader",
                             i < TORN_WRITERS ? torn_writer : torn_reader,
                             &args[i]);
    }
    for (int i = 0; i < TORN_WRITERS + TORN_READERS; i++)
        g_thread_join(th[i]);
    for (int i = 0; i < TORN_KEYS; i++)
        procreg_key_unref(keys[i]);
    pthread_mutex_destroy(&log.m);
    g_autofree char *first = log.first;
    CHECK_MSG(log.failures == 0, "%d failures under concurrency; first: %s",
              log.failures, first);
    CHECK_MSG(writes_ok > 0 && reads_ok > 0,
              "nothing was exercised (%d writes, %d reads)", writes_ok,
              reads_ok);
    g_test_message("%d changes and %d consistent reads in %d ms", writes_ok,
                   reads_ok, TORN_DURATION_US / 1000);
}
