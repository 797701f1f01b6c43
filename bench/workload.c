/*
 * The workloads and the thread harness.
 *
 * A cell is (workload, target, keys, dist, threads).  It runs one
 * unrecorded warm-up and then --reps repetitions.  In each repetition the
 * worker threads (created for it, pinned nowhere) wait at a barrier, then
 * run the workload until the main thread raises `stop` after --seconds (or
 * each has done --ops operations).  Throughput is all operations over the
 * wall time from the barrier to the last thread's end.  Every Nth
 * operation of each thread is timed on its own into a histogram.
 *
 * Each op checks its result (a hit must find the key, a miss must not, a
 * list must return the whole namespace...): an unexpected result counts
 * as an error and fails the run, so a fast wrong answer cannot pass.
 */
#include "bench.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>

const bench_workload bench_workloads[BENCH_W_COUNT] = {
    [BENCH_W_LOAD] = {BENCH_W_LOAD, "load",
                      "register every key into an empty registry (no metadata); memory per entry",
                      "register", false, true, false},
    [BENCH_W_LOOKUP_HIT] = {BENCH_W_LOOKUP_HIT, "lookup-hit",
                            "procreg_lookup(ns, name) of a registered key: owner only",
                            "lookup", true, false, false},
    [BENCH_W_LOOKUP_HIT_KEY] = {BENCH_W_LOOKUP_HIT_KEY, "lookup-hit-key",
                                "procreg_lookup_key() with a prepared key (validated and hashed once)",
                                "lookup", true, false, false},
    [BENCH_W_LOOKUP_ENTRY] = {BENCH_W_LOOKUP_ENTRY, "lookup-entry",
                              "procreg_lookup_entry(ns, name): owner, metadata reference, revision; cleared after",
                              "lookup", true, false, false},
    [BENCH_W_LOOKUP_MISS] = {BENCH_W_LOOKUP_MISS, "lookup-miss",
                             "procreg_lookup(ns, name) of a key that is not registered",
                             "lookup", false, false, false},
    [BENCH_W_LOOKUP_TELEMETRY] = {BENCH_W_LOOKUP_TELEMETRY, "lookup-telemetry",
                                  "lookup-hit with a telemetry handler attached for lookups (compare with lookup-hit: no handler)",
                                  "lookup", true, false, false, true, 0,
#if !defined(BENCH_HAVE_SERVICE)
                                  true
#endif
    },
    [BENCH_W_LIST_NS] = {BENCH_W_LIST_NS, "list-ns",
                         "procreg_list() of one test namespace (100 entries) among many",
                         "list", false, false, true},
    [BENCH_W_COUNT_NS] = {BENCH_W_COUNT_NS, "count-ns",
                          "procreg_count() of one test namespace (100 entries) among many",
                          "count", false, false, true},
    [BENCH_W_FIND_NS] = {BENCH_W_FIND_NS, "find-ns",
                         "procreg_find(test namespace, role = \"api\"): 25 of its 100 entries",
                         "find", false, false, true},
    [BENCH_W_FIND] = {BENCH_W_FIND, "find",
                      "procreg_find(production, group = <int>): 10 matches; index or scan",
                      "find", false, false, true},
    [BENCH_W_UPDATE] = {BENCH_W_UPDATE, "update",
                        "procreg_update_metadata_key(REPLACE) of a registered key",
                        "update", true, false, false},
    [BENCH_W_MIXED] = {BENCH_W_MIXED, "mixed",
                       "lookup / register / unregister in the --mix ratio (default 90/5/5)",
                       "op", true, false, false},
    [BENCH_W_CHURN] = {BENCH_W_CHURN, "churn",
                       "register_key then unregister_key of a fresh key (one op = both)",
                       "register+unregister", false, false, false},
    [BENCH_W_WAIT] = {BENCH_W_WAIT, "wait",
                      "wake-up latency of procreg_wait_for_key(): from the register call to the waiter's return",
                      "wait+register+unregister", false, true, true, true, 2,
#if !defined(BENCH_HAVE_SERVICE)
                      true
#endif
    },
    [BENCH_W_WATCH] = {BENCH_W_WATCH, "watch",
                       "event latency: from the register call to the subscriber's callback",
                       "register+unregister", false, true, true, true, 1,
#if !defined(BENCH_HAVE_SERVICE)
                       true
#endif
    },
    [BENCH_W_GROUP_CHURN] = {BENCH_W_GROUP_CHURN, "group-churn",
                             "procreg_join_key then procreg_leave_key of that member, on one group of --keys members (one op = both)",
                             "join+leave", .group = true},
    [BENCH_W_DISPATCH] = {BENCH_W_DISPATCH, "dispatch",
                          "procreg_dispatch_key over a group of --keys members while a second thread joins and leaves it (one op = one member's callback)",
                          "member", .single_thread = true,
                          .fixed_threads = 2, .group = true},
    [BENCH_W_GROUP_MEMBERS] = {BENCH_W_GROUP_MEMBERS, "group-members",
                               "procreg_members_key of a 10-member group, freed; ref = its CPU time over a lookup_entry's",
                               "list of 10", .single_thread = true,
                               .group = true},
};

const bench_workload *bench_workload_find(const char *name)
{
    for (int i = 0; i < BENCH_W_COUNT; i++)
        if (!bench_workloads[i].unavailable &&
            strcmp(bench_workloads[i].name, name) == 0)
            return &bench_workloads[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Workers                                                                  */

typedef struct {
    bench_context *ctx;
    const bench_workload *w;
    int tid;
    pthread_barrier_t *barrier;
    atomic_bool *stop;
    uint64_t ops_target;      /* 0: until stop */
    unsigned int batch;       /* ops between two looks at stop */
    uint64_t sample_mask;
    const uint32_t *zipf;     /* NULL: uniform */
    size_t zpos;
    const bench_key *keyset;  /* what next_key() draws from */
    size_t keyset_n;
    bool prefetch_pkey;
    unsigned int apos;
    size_t ahead[BENCH_AHEAD];
    uint64_t rng;
    pid_t pid;
    bench_target_thread tt;

    uint64_t ops;
    uint64_t errors;
    char *error_example;
    uint64_t items;
    double t_start, t_end;
    double cpu_start, cpu_end;
    bench_hist hist;
} worker;

static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1du;
}

/* Uniform in [0, n) (Lemire's multiply-shift; n < 2^32). */
static inline size_t rng_below(uint64_t *s, size_t n)
{
    return (size_t)(((rng_next(s) >> 32) * (uint64_t)n) >> 32);
}

static inline size_t draw_key(worker *w)
{
    if (w->zipf)
        return w->zipf[w->zpos++ & (BENCH_ZIPF_SAMPLES - 1)];
    return rng_below(&w->rng, w->keyset_n);
}

/* The next key, drawn BENCH_AHEAD ops in advance: its 64-byte slot is
 * prefetched then (and its prepared key half-way), so the caller's side
 * of an op is in cache as it would be in a real caller, and the time
 * measured is the registry's, cache misses included. */
static inline const bench_key *next_key(worker *w)
{
    size_t idx = w->ahead[w->apos];
    size_t nxt = draw_key(w);
    w->ahead[w->apos] = nxt;
    w->apos = (w->apos + 1) & (BENCH_AHEAD - 1);
    __builtin_prefetch(&w->keyset[nxt]);
    if (w->prefetch_pkey)
        __builtin_prefetch(
            w->keyset[w->ahead[(w->apos + BENCH_AHEAD / 2 - 1) &
                               (BENCH_AHEAD - 1)]].pkey);
    return &w->keyset[idx];
}

G_GNUC_NORETURN static void unreachable_kind(void)
{
    g_error("procreg-bench: unknown target kind");
}

G_GNUC_PRINTF(2, 3) G_GNUC_NO_INLINE
static void op_error(worker *w, const char *fmt, ...)
{
    w->errors++;
    if (!w->error_example) {
        va_list ap;
        va_start(ap, fmt);
        w->error_example = g_strdup_vprintf(fmt, ap);
        va_end(ap);
    }
}

/* ---- the operations, per target kind (a predictable switch) ---- */

static inline int t_lookup(worker *w, const bench_key *k, procreg_owner *o)
{
    bench_target *t = w->ctx->target;
    switch (t->kind) {
    case BENCH_TARGET_PROCREG:
        return procreg_lookup(t->reg, k->ns, k->name, o, NULL);
    case BENCH_TARGET_RAW_GHASH:
        return raw_ghash_lookup(t->rg, k->ns, k->name, o);
    case BENCH_TARGET_RAW_CKHT:
#if defined(BENCH_HAVE_CK)
        return raw_ckht_lookup(t->rc, &w->tt, k->ns, k->name, o);
#endif
        break;
    case BENCH_TARGET_RAW_LMDB:
#if defined(BENCH_HAVE_LMDB)
        return raw_lmdb_lookup(t->rl, &w->tt, k->ns, k->name, o);
#endif
        break;
    }
    unreachable_kind();
}

static inline int t_lookup_key(worker *w, const bench_key *k,
                               procreg_owner *o)
{
    bench_target *t = w->ctx->target;
    switch (t->kind) {
    case BENCH_TARGET_PROCREG:
        return procreg_lookup_key(t->reg, k->pkey, o, NULL);
    case BENCH_TARGET_RAW_GHASH:
        return raw_ghash_lookup_prepared(t->rg, k, o);
    case BENCH_TARGET_RAW_CKHT:
#if defined(BENCH_HAVE_CK)
        return raw_ckht_lookup_prepared(t->rc, &w->tt, k, o);
#endif
        break;
    case BENCH_TARGET_RAW_LMDB:
#if defined(BENCH_HAVE_LMDB)
        return raw_lmdb_lookup_prepared(t->rl, &w->tt, k, o);
#endif
        break;
    }
    unreachable_kind();
}

static inline int t_lookup_entry(worker *w, const bench_key *k,
                                 procreg_entry *e)
{
    bench_target *t = w->ctx->target;
    switch (t->kind) {
    case BENCH_TARGET_PROCREG:
        return procreg_lookup_entry(t->reg, k->ns, k->name, e, NULL);
    case BENCH_TARGET_RAW_GHASH:
        return raw_ghash_lookup_entry(t->rg, k->ns, k->name, e);
    case BENCH_TARGET_RAW_CKHT:
#if defined(BENCH_HAVE_CK)
        return raw_ckht_lookup_entry(t->rc, &w->tt, k->ns, k->name, e);
#endif
        break;
    case BENCH_TARGET_RAW_LMDB:
#if defined(BENCH_HAVE_LMDB)
        return raw_lmdb_lookup_entry(t->rl, &w->tt, k->ns, k->name, e);
#endif
        break;
    }
    unreachable_kind();
}

static int t_register(bench_target *t, bench_target_thread *tt,
                      const bench_key *k, GVariant *md)
{
    switch (t->kind) {
    case BENCH_TARGET_PROCREG:
        return procreg_register_key(t->reg, k->pkey, NULL, md, NULL, NULL);
    case BENCH_TARGET_RAW_GHASH:
        return raw_ghash_register(t->rg, k, md);
    case BENCH_TARGET_RAW_CKHT:
#if defined(BENCH_HAVE_CK)
        return raw_ckht_register(t->rc, tt, k, md);
#endif
        break;
    case BENCH_TARGET_RAW_LMDB:
#if defined(BENCH_HAVE_LMDB)
        return raw_lmdb_register(t->rl, k, md);
#endif
        break;
    }
    (void)tt;
    unreachable_kind();
}

static int t_unregister(bench_target *t, bench_target_thread *tt,
                        const bench_key *k)
{
    switch (t->kind) {
    case BENCH_TARGET_PROCREG:
        return procreg_unregister_key(t->reg, k->pkey, 0, NULL);
    case BENCH_TARGET_RAW_GHASH:
        return raw_ghash_unregister(t->rg, k);
    case BENCH_TARGET_RAW_CKHT:
#if defined(BENCH_HAVE_CK)
        return raw_ckht_unregister(t->rc, tt, k);
#endif
        break;
    case BENCH_TARGET_RAW_LMDB:
#if defined(BENCH_HAVE_LMDB)
        return raw_lmdb_unregister(t->rl, k);
#endif
        break;
    }
    (void)tt;
    unreachable_kind();
}

static inline int t_update(worker *w, const bench_key *k, GVariant *md)
{
    bench_target *t = w->ctx->target;
    switch (t->kind) {
    case BENCH_TARGET_PROCREG:
        return procreg_update_metadata_key(t->reg, k->pkey, md,
                                           PROCREG_UPDATE_REPLACE, 0, NULL,
                                           NULL);
    case BENCH_TARGET_RAW_GHASH:
        return raw_ghash_update(t->rg, k, md);
    case BENCH_TARGET_RAW_CKHT:
#if defined(BENCH_HAVE_CK)
        return raw_ckht_update(t->rc, &w->tt, k, md);
#endif
        break;
    case BENCH_TARGET_RAW_LMDB:
#if defined(BENCH_HAVE_LMDB)
        return raw_lmdb_update(t->rl, k, md);
#endif
        break;
    }
    unreachable_kind();
}

static int t_list(worker *w, const char *ns, procreg_entry **out, size_t *n)
{
    bench_target *t = w->ctx->target;
    switch (t->kind) {
    case BENCH_TARGET_PROCREG:
        return procreg_list(t->reg, ns, out, n, NULL);
    case BENCH_TARGET_RAW_GHASH:
        return raw_ghash_list(t->rg, ns, out, n);
    case BENCH_TARGET_RAW_CKHT:
#if defined(BENCH_HAVE_CK)
        return raw_ckht_list(t->rc, ns, out, n);
#endif
        break;
    case BENCH_TARGET_RAW_LMDB:
#if defined(BENCH_HAVE_LMDB)
        return raw_lmdb_list(t->rl, &w->tt, ns, out, n);
#endif
        break;
    }
    unreachable_kind();
}

static int t_find(worker *w, const char *ns, const char *meta_key,
                  GVariant *value, procreg_entry **out, size_t *n)
{
    bench_target *t = w->ctx->target;
    switch (t->kind) {
    case BENCH_TARGET_PROCREG:
        return procreg_find(t->reg, ns, meta_key, value, out, n, NULL);
    case BENCH_TARGET_RAW_GHASH:
        return raw_ghash_find(t->rg, ns, meta_key, value, out, n);
    case BENCH_TARGET_RAW_CKHT:
#if defined(BENCH_HAVE_CK)
        return raw_ckht_find(t->rc, ns, meta_key, value, out, n);
#endif
        break;
    case BENCH_TARGET_RAW_LMDB:
#if defined(BENCH_HAVE_LMDB)
        return raw_lmdb_find(t->rl, &w->tt, ns, meta_key, value, out, n);
#endif
        break;
    }
    unreachable_kind();
}

/* ---- the loop: PICK runs untimed, OP is what a sample times ---- */

#define RUN_LOOP(w, PICK, OP)                                                 \
    do {                                                                      \
        uint64_t n_ = 0;                                                      \
        for (;;) {                                                            \
            for (unsigned int b_ = 0; b_ < (w)->batch; b_++, n_++) {          \
                PICK;                                                         \
                if ((n_ & (w)->sample_mask) == 0) {                           \
                    uint64_t t0_ = bench_ticks_begin();                       \
                    OP;                                                       \
                    uint64_t t1_ = bench_ticks_end();                         \
                    bench_hist_add_ticks(&(w)->hist, t1_ - t0_);              \
                } else {                                                      \
                    OP;                                                       \
                }                                                             \
            }                                                                 \
            if ((w)->ops_target ? n_ >= (w)->ops_target                       \
                                : atomic_load_explicit((w)->stop,             \
                                                       memory_order_relaxed)) \
                break;                                                        \
        }                                                                     \
        (w)->ops = n_;                                                        \
    } while (0)

/* Each loop stays a function of its own: bench/callgrind-ops.sh counts
 * the instructions inside it. */
#define LOOP_FN static __attribute__((noinline)) void

/* Results are checked inside the op, off the fast path. */
#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (G_UNLIKELY(!(cond)))                                              \
            op_error(w, __VA_ARGS__);                                         \
    } while (0)

LOOP_FN loop_lookup_hit(worker *w)
{
    const bench_key *k;
    procreg_owner o;
    RUN_LOOP(w, k = next_key(w),
             {
                 int rc = t_lookup(w, k, &o);
                 CHECK(rc == 0 && o.pid == w->pid,
                       "lookup %s/%s returned %d (pid %d)", k->ns, k->name,
                       rc, (int)o.pid);
             });
}

LOOP_FN loop_lookup_hit_key(worker *w)
{
    const bench_key *k;
    procreg_owner o;
    RUN_LOOP(w, k = next_key(w),
             {
                 int rc = t_lookup_key(w, k, &o);
                 CHECK(rc == 0 && o.pid == w->pid,
                       "lookup_key %s/%s returned %d", k->ns, k->name, rc);
             });
}

LOOP_FN loop_lookup_entry(worker *w)
{
    const bench_key *k;
    procreg_entry e;
    RUN_LOOP(w, k = next_key(w),
             {
                 memset(&e, 0, sizeof e);
                 int rc = t_lookup_entry(w, k, &e);
                 CHECK(rc == 0 && e.owner.pid == w->pid && e.metadata,
                       "lookup_entry %s/%s returned %d", k->ns, k->name, rc);
                 procreg_entry_clear(&e);
             });
}

LOOP_FN loop_lookup_miss(worker *w)
{
    const bench_key *k;
    procreg_owner o;
    RUN_LOOP(w, k = next_key(w),
             {
                 int rc = t_lookup(w, k, &o);
                 CHECK(rc == PROCREG_ENOTFOUND,
                       "lookup of unregistered %s/%s returned %d", k->ns,
                       k->name, rc);
             });
}

#if defined(BENCH_HAVE_SERVICE)
/* Telemetry handlers run on the calling thread: a thread-local count
 * must match the lookups that thread made. */
static _Thread_local uint64_t telemetry_seen;

static void telemetry_count(procreg *reg, const procreg_telemetry_event *ev,
                            gpointer user_data)
{
    (void)reg;
    (void)user_data;
    if (ev->op == PROCREG_OP_LOOKUP)
        telemetry_seen++;
}

LOOP_FN loop_lookup_telemetry(worker *w)
{
    const bench_key *k;
    procreg_owner o;
    telemetry_seen = 0;
    RUN_LOOP(w, k = next_key(w),
             {
                 int rc = t_lookup(w, k, &o);
                 CHECK(rc == 0 && o.pid == w->pid,
                       "lookup %s/%s returned %d (pid %d)", k->ns, k->name,
                       rc, (int)o.pid);
             });
    CHECK(telemetry_seen == w->ops,
          "telemetry handler saw %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
          " lookups", telemetry_seen, w->ops);
}
#endif

LOOP_FN loop_list_ns(worker *w)
{
    const bench_dataset *ds = w->ctx->ds;
    const char *ns;
    size_t expect = ds->n_test_ns ? ds->test_ns_size : ds->n_production;
    RUN_LOOP(w,
             ns = ds->n_test_ns ? ds->test_ns[rng_below(&w->rng, ds->n_test_ns)]
                                : PROCREG_NS_PRODUCTION,
             {
                 procreg_entry *out = NULL;
                 size_t n = 0;
                 int rc = t_list(w, ns, &out, &n);
                 CHECK(rc == 0 && n == expect,
                       "list %s returned %d with %zu entries, expected %zu",
                       ns, rc, n, expect);
                 w->items += n;
                 procreg_entries_free(out, n);
             });
}

/* The baselines count by listing: neither has a count of its own. */
static int t_count(worker *w, const char *ns, size_t *n)
{
    bench_target *t = w->ctx->target;
    if (t->kind == BENCH_TARGET_PROCREG)
        return procreg_count(t->reg, ns, n, NULL);
    procreg_entry *out = NULL;
    int rc = t_list(w, ns, &out, n);
    procreg_entries_free(out, *n);
    return rc;
}

static const char *pick_test_ns(worker *w)
{
    const bench_dataset *ds = w->ctx->ds;
    return ds->n_test_ns ? ds->test_ns[rng_below(&w->rng, ds->n_test_ns)]
                         : PROCREG_NS_PRODUCTION;
}

LOOP_FN loop_count_ns(worker *w)
{
    const bench_dataset *ds = w->ctx->ds;
    const char *ns;
    size_t expect = ds->n_test_ns ? ds->test_ns_size : ds->n_production;
    RUN_LOOP(w, ns = pick_test_ns(w),
             {
                 size_t n = 0;
                 int rc = t_count(w, ns, &n);
                 CHECK(rc == 0 && n == expect,
                       "count %s returned %d with %zu, expected %zu", ns, rc,
                       n, expect);
                 w->items += n;
             });
}

LOOP_FN loop_find_ns(worker *w)
{
    const bench_dataset *ds = w->ctx->ds;
    const char *ns;
    size_t size = ds->n_test_ns ? ds->test_ns_size : ds->n_production;
    RUN_LOOP(w, ns = pick_test_ns(w),
             {
                 procreg_entry *out = NULL;
                 size_t n = 0;
                 int rc = t_find(w, ns, "role", ds->role_api, &out, &n);
                 CHECK(rc == 0 && n == (size + 3) / 4,
                       "find role=api in %s returned %d with %zu entries, "
                       "expected %zu", ns, rc, n, (size + 3) / 4);
                 w->items += n;
                 procreg_entries_free(out, n);
             });
}

LOOP_FN loop_find(worker *w)
{
    const bench_dataset *ds = w->ctx->ds;
    size_t g;
    RUN_LOOP(w, g = rng_below(&w->rng, ds->n_groups),
             {
                 procreg_entry *out = NULL;
                 size_t n = 0;
                 size_t expect = MIN((size_t)10, ds->n_production - g * 10);
                 int rc = t_find(w, PROCREG_NS_PRODUCTION, "group",
                                 ds->group_values[g], &out, &n);
                 CHECK(rc == 0 && n == expect,
                       "find group=%zu returned %d with %zu entries, "
                       "expected %zu", g, rc, n, expect);
                 w->items += n;
                 procreg_entries_free(out, n);
             });
}

LOOP_FN loop_update(worker *w)
{
    const bench_dataset *ds = w->ctx->ds;
    const bench_key *k;
    GVariant *md;
    RUN_LOOP(w, (k = next_key(w), md = ds->update_md[n_ & 3]),
             {
                 int rc = t_update(w, k, md);
                 CHECK(rc == 0, "update %s/%s returned %d", k->ns, k->name,
                       rc);
             });
}

/* Each thread writes only its private pool: a FIFO of registered keys
 * between the cursors removed <= registered (<= removed + pool size). */
LOOP_FN loop_mixed(worker *w)
{
    bench_context *ctx = w->ctx;
    const bench_dataset *ds = ctx->ds;
    const bench_params *p = ctx->params;
    const bench_key *pool = ds->pool + (size_t)w->tid * ds->pool_per_thread;
    size_t P = ds->pool_per_thread;
    size_t reg = ctx->pool_registered[w->tid];
    size_t rem = ctx->pool_removed[w->tid];
    unsigned int lookup_pct = p->mix_lookup;
    unsigned int register_pct = p->mix_lookup + p->mix_register;
    bench_target *t = ctx->target;
    const bench_key *k;
    int kind; /* 0 lookup, 1 register, 2 unregister */
    procreg_owner o;
    RUN_LOOP(w,
             {
                 unsigned int r = (unsigned int)rng_below(&w->rng, 100);
                 if (r < lookup_pct) {
                     kind = 0;
                     k = next_key(w);
                 } else {
                     kind = r < register_pct ? 1 : 2;
                     if (kind == 1 && reg - rem == P)
                         kind = 2;
                     else if (kind == 2 && reg == rem)
                         kind = 1;
                     k = kind == 1 ? &pool[reg++ % P] : &pool[rem++ % P];
                 }
             },
             {
                 int rc;
                 if (kind == 0) {
                     rc = t_lookup(w, k, &o);
                 } else if (kind == 1) {
                     rc = t_register(t, &w->tt, k, NULL);
                 } else {
                     rc = t_unregister(t, &w->tt, k);
                 }
                 CHECK(rc == 0, "mixed %s of %s/%s returned %d",
                       kind == 0 ? "lookup"
                                 : kind == 1 ? "register" : "unregister",
                       k->ns, k->name, rc);
             });
    ctx->pool_registered[w->tid] = reg;
    ctx->pool_removed[w->tid] = rem;
}

LOOP_FN loop_churn(worker *w)
{
    const bench_dataset *ds = w->ctx->ds;
    const bench_key *pool = ds->pool + (size_t)w->tid * ds->pool_per_thread;
    size_t P = ds->pool_per_thread;
    bench_target *t = w->ctx->target;
    const bench_key *k;
    RUN_LOOP(w, k = &pool[n_ % P],
             {
                 int rc = t_register(t, &w->tt, k, NULL);
                 int rc2 = t_unregister(t, &w->tt, k);
                 CHECK(rc == 0 && rc2 == 0,
                       "churn of %s/%s: register %d, unregister %d", k->ns,
                       k->name, rc, rc2);
             });
}

/* Pin the calling thread to the @i-th CPU it may run on (modulo). */
static void pin_to(int i)
{
    cpu_set_t allowed, one;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0)
        return;
    int n = CPU_COUNT(&allowed);
    if (n <= 0)
        return;
    int want = i % n;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &allowed) && want-- == 0) {
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            pthread_setaffinity_np(pthread_self(), sizeof one, &one);
            return;
        }
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    if (w->ctx->params->pin)
        pin_to(w->tid);
    bench_target_thread_begin(w->ctx->target, &w->tt);
    w->tt.protect_reads = w->w->id == BENCH_W_MIXED;
    pthread_barrier_wait(w->barrier);
    w->t_start = bench_now();
    w->cpu_start = bench_thread_cpu();
    switch (w->w->id) {
    case BENCH_W_LOOKUP_HIT:
        loop_lookup_hit(w);
        break;
    case BENCH_W_LOOKUP_HIT_KEY:
        loop_lookup_hit_key(w);
        break;
    case BENCH_W_LOOKUP_ENTRY:
        loop_lookup_entry(w);
        break;
    case BENCH_W_LOOKUP_MISS:
        loop_lookup_miss(w);
        break;
    case BENCH_W_LOOKUP_TELEMETRY:
#if defined(BENCH_HAVE_SERVICE)
        loop_lookup_telemetry(w);
#endif
        break;
    case BENCH_W_LIST_NS:
        loop_list_ns(w);
        break;
    case BENCH_W_FIND:
        loop_find(w);
        break;
    case BENCH_W_COUNT_NS:
        loop_count_ns(w);
        break;
    case BENCH_W_FIND_NS:
        loop_find_ns(w);
        break;
    case BENCH_W_UPDATE:
        loop_update(w);
        break;
    case BENCH_W_MIXED:
        loop_mixed(w);
        break;
    case BENCH_W_CHURN:
        loop_churn(w);
        break;
    case BENCH_W_LOAD:
    case BENCH_W_WAIT:
    case BENCH_W_WATCH:
    case BENCH_W_GROUP_CHURN: /* groups.c runs these */
    case BENCH_W_DISPATCH:
    case BENCH_W_GROUP_MEMBERS:
    case BENCH_W_COUNT:
        break;
    }
    w->cpu_end = bench_thread_cpu();
    w->t_end = bench_now();
    bench_target_thread_end(w->ctx->target, &w->tt);
    return NULL;
}

/* Run @threads workers once.  Returns Mops/s; merges samples into @hist
 * and results into @r when @record. */
static double run_once(bench_context *ctx, const bench_workload *wl,
                       bench_dist dist, int threads, double seconds,
                       uint64_t ops, uint64_t seed, bool record,
                       bench_hist *hist, bench_result *r,
                       uint64_t *ops_done, uint64_t *items,
                       double *cpu_ns_per_op)
{
    const bench_params *p = ctx->params;
    worker *ws = g_new0(worker, threads);
    pthread_t *ids = g_new(pthread_t, threads);
    pthread_barrier_t barrier;
    atomic_bool stop = false;
    pthread_barrier_init(&barrier, NULL, (unsigned int)threads + 1);
    uint64_t sample_mask = wl->slow ? 0 : (uint64_t)p->sample_every - 1;
    for (int i = 0; i < threads; i++) {
        worker *w = &ws[i];
        w->ctx = ctx;
        w->w = wl;
        w->tid = i;
        w->barrier = &barrier;
        w->stop = &stop;
        w->ops_target = ops;
        w->batch = wl->slow ? 1 : 64;
        w->sample_mask = sample_mask;
        w->rng = seed ^ (0x9e3779b97f4a7c15u * (uint64_t)(i + 1));
        if (w->rng == 0)
            w->rng = 1;
        for (int s = 0; s < 4; s++)
            rng_next(&w->rng);
        if (dist == BENCH_DIST_ZIPF && wl->uses_dist) {
            w->zipf = ctx->ds->zipf;
            w->zpos = rng_next(&w->rng) & (BENCH_ZIPF_SAMPLES - 1);
        }
        bool miss = wl->id == BENCH_W_LOOKUP_MISS;
        w->keyset = miss ? ctx->ds->miss : ctx->ds->keys;
        w->keyset_n = miss ? ctx->ds->n_miss : ctx->ds->n_keys;
        w->prefetch_pkey = wl->id == BENCH_W_LOOKUP_HIT_KEY ||
                           wl->id == BENCH_W_UPDATE;
        for (unsigned int a = 0; a < BENCH_AHEAD; a++)
            w->ahead[a] = draw_key(w);
        w->pid = getpid();
        pthread_create(&ids[i], NULL, worker_main, w);
    }
    pthread_barrier_wait(&barrier);
    double start = bench_now();
    if (!ops) {
        g_usleep((gulong)(seconds * 1e6));
        atomic_store(&stop, true);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(ids[i], NULL);
    double first = start, last = start;
    uint64_t total = 0;
    for (int i = 0; i < threads; i++) {
        first = MIN(first, ws[i].t_start);
        last = MAX(last, ws[i].t_end);
        total += ws[i].ops;
    }
    double mops = (double)total / (last - first) / 1e6;
    double cpu = 0;
    for (int i = 0; i < threads; i++)
        cpu += ws[i].cpu_end - ws[i].cpu_start;
    if (cpu_ns_per_op)
        *cpu_ns_per_op = total ? cpu * 1e9 / (double)total : NAN;
    for (int i = 0; i < threads; i++) {
        worker *w = &ws[i];
        if (record) {
            bench_hist_merge(hist, &w->hist);
            *items += w->items;
        }
        /* Wrong results count in the warm-up too. */
        r->errors += w->errors;
        if (w->error_example && !r->error_example)
            r->error_example = g_steal_pointer(&w->error_example);
        g_free(w->error_example);
    }
    if (record)
        *ops_done += total;
    pthread_barrier_destroy(&barrier);
    g_free(ids);
    g_free(ws);
    return mops;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of @n values (sorts a copy). */
static double median(const double *v, int n)
{
    if (n <= 0)
        return NAN;
    double *sorted = g_memdup2(v, sizeof(double) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(double), cmp_double);
    double m = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    g_free(sorted);
    return m;
}

static void summarize(bench_result *r, const bench_hist *hist)
{
    double *sorted = g_memdup2(r->mops, sizeof(double) * (size_t)r->reps);
    qsort(sorted, (size_t)r->reps, sizeof(double), cmp_double);
    r->mops_min = sorted[0];
    r->mops_max = sorted[r->reps - 1];
    r->mops_median = r->reps % 2
                         ? sorted[r->reps / 2]
                         : (sorted[r->reps / 2 - 1] + sorted[r->reps / 2]) / 2;
    g_free(sorted);
    r->ns_per_op = r->mops_median > 0
                       ? 1e3 * (double)r->threads / r->mops_median
                       : NAN;
    r->p50 = bench_hist_percentile(hist, 0.50);
    r->p99 = bench_hist_percentile(hist, 0.99);
    r->p999 = bench_hist_percentile(hist, 0.999);
}

/* Undo what mixed left registered in the pools (untimed). */
static void mixed_cleanup(bench_context *ctx, int threads)
{
    const bench_dataset *ds = ctx->ds;
    bench_target_thread tt = {0};
    bench_target_thread_begin(ctx->target, &tt);
    for (int i = 0; i < threads; i++) {
        const bench_key *pool = ds->pool + (size_t)i * ds->pool_per_thread;
        while (ctx->pool_removed[i] < ctx->pool_registered[i]) {
            t_unregister(ctx->target, &tt,
                         &pool[ctx->pool_removed[i] % ds->pool_per_thread]);
            ctx->pool_removed[i]++;
        }
        ctx->pool_removed[i] = ctx->pool_registered[i] = 0;
    }
    bench_target_thread_end(ctx->target, &tt);
}

struct bench_cell {
    bench_context *ctx;
    const bench_workload *wl;
    bench_dist dist;
    int threads;
    bench_result *r;
    bench_hist *hist;
    uint64_t seed;
    uint64_t ops, items;
    uint64_t telemetry_id;
    double *off_cpu;  /* lookup-telemetry: CPU ns/op without a handler */
    double *cpu;      /* CPU ns per op of each repetition */
};

bench_cell *bench_cell_begin(bench_context *ctx, const bench_workload *wl,
                             bench_dist dist, int threads, bench_result *r)
{
    const bench_params *p = ctx->params;
    r->workload = wl;
    r->target_kind = ctx->target->kind;
    r->keys = ctx->ds->n_keys;
    r->dist = !wl->uses_dist ? "-"
              : dist == BENCH_DIST_ZIPF ? "zipf" : "uniform";
    r->threads = threads;
    r->reps = p->reps;
    r->mops = g_new0(double, p->reps);
    r->mem_rss_per_entry = NAN;
    r->mem_heap_per_entry = NAN;
    r->mem_backend_per_entry = NAN;
    r->ratio_reference = NAN;
    r->cpu_ns_per_op = NAN;

    bench_cell *c = g_new0(bench_cell, 1);
    c->ctx = ctx;
    c->wl = wl;
    c->dist = dist;
    c->threads = threads;
    c->r = r;
    c->hist = g_new0(bench_hist, 1);
    c->seed = p->seed ^ ((uint64_t)wl->id << 40) ^ ((uint64_t)threads << 32);
    if (wl->id == BENCH_W_LOOKUP_TELEMETRY)
        c->off_cpu = g_new0(double, p->reps);
    c->cpu = g_new0(double, p->reps);
    return c;
}

#if defined(BENCH_HAVE_SERVICE)
static bool telemetry_on(bench_cell *c)
{
    GError *error = NULL;
    if (procreg_telemetry_attach(c->ctx->target->reg,
                                 PROCREG_OP_BIT(PROCREG_OP_LOOKUP),
                                 telemetry_count, NULL, NULL,
                                 &c->telemetry_id, &error) < 0) {
        c->r->skipped = g_strdup(error->message);
        g_error_free(error);
        return false;
    }
    return true;
}

static void telemetry_off(bench_cell *c)
{
    procreg_telemetry_detach(c->ctx->target->reg, c->telemetry_id);
    c->telemetry_id = 0;
}
#endif

void bench_cell_warmup(bench_cell *c)
{
    const bench_params *p = c->ctx->params;
    if (p->warmup <= 0 || c->r->skipped)
        return;
#if defined(BENCH_HAVE_SERVICE)
    if (c->wl->id == BENCH_W_LOOKUP_TELEMETRY && !telemetry_on(c))
        return;
#endif
    run_once(c->ctx, c->wl, c->dist, c->threads, p->warmup, 0, c->seed, false,
             c->hist, c->r, &c->ops, &c->items, NULL);
#if defined(BENCH_HAVE_SERVICE)
    if (c->telemetry_id)
        telemetry_off(c);
#endif
}

/* lookup-telemetry measures each repetition twice, back to back: as
 * lookup-hit without a handler, then with one attached, so the ratio of
 * the pair is not blurred by load that comes and goes between cells. */
void bench_cell_rep(bench_cell *c, int rep)
{
    const bench_params *p = c->ctx->params;
    if (c->r->skipped)
        return;
    uint64_t seed = c->seed + 1 + (uint64_t)rep;
#if defined(BENCH_HAVE_SERVICE)
    if (c->wl->id == BENCH_W_LOOKUP_TELEMETRY) {
        /* Alternate which goes first, so warming (a cache, the page
         * cache) favours neither. */
        for (int half = 0; half < 2; half++) {
            if ((half == 0) == (rep % 2 == 0)) {
                uint64_t ops = 0, items = 0;
                run_once(c->ctx, &bench_workloads[BENCH_W_LOOKUP_HIT], c->dist,
                         c->threads, p->seconds, p->ops, seed, false, c->hist,
                         c->r, &ops, &items, &c->off_cpu[rep]);
            } else {
                if (!telemetry_on(c))
                    return;
                c->r->mops[rep] = run_once(c->ctx, c->wl, c->dist, c->threads,
                                           p->seconds, p->ops, seed, true,
                                           c->hist, c->r, &c->ops, &c->items,
                                           &c->cpu[rep]);
                telemetry_off(c);
            }
        }
        return;
    }
#endif
    c->r->mops[rep] = run_once(c->ctx, c->wl, c->dist, c->threads,
                               p->seconds, p->ops, seed, true, c->hist, c->r,
                               &c->ops, &c->items, &c->cpu[rep]);
}

void bench_cell_end(bench_cell *c)
{
    bench_result *r = c->r;
    if (c->wl->id == BENCH_W_MIXED)
        mixed_cleanup(c->ctx, c->threads);
    if (c->off_cpu && !r->skipped) {
        /* The median of the paired ratios of CPU time per lookup (with a
         * handler / without): the handler's cost is CPU work, and CPU
         * time does not count the moments another process had the core. */
        double *ratio = g_new(double, (size_t)r->reps);
        for (int i = 0; i < r->reps; i++)
            ratio[i] = c->off_cpu[i] > 0 ? c->cpu[i] / c->off_cpu[i] : NAN;
        qsort(ratio, (size_t)r->reps, sizeof(double), cmp_double);
        r->ratio_reference = r->reps % 2 ? ratio[r->reps / 2]
                                         : (ratio[r->reps / 2 - 1] +
                                            ratio[r->reps / 2]) / 2;
        g_free(ratio);
    }
    g_free(c->off_cpu);
    if (!r->skipped) {
        r->items_per_op =
            (c->wl->id == BENCH_W_LIST_NS || c->wl->id == BENCH_W_FIND ||
             c->wl->id == BENCH_W_COUNT_NS || c->wl->id == BENCH_W_FIND_NS) &&
                    c->ops
                ? (double)c->items / (double)c->ops
                : NAN;
        summarize(r, c->hist);
        r->samples = c->hist->count;
        r->cpu_ns_per_op = median(c->cpu, r->reps);
    }
    g_free(c->cpu);
    g_free(c->hist);
    g_free(c);
}

void bench_run_cell(bench_context *ctx, const bench_workload *wl,
                    bench_dist dist, int threads, bench_result *r)
{
    bench_cell *c = bench_cell_begin(ctx, wl, dist, threads, r);
    bench_cell_warmup(c);
    for (int rep = 0; rep < ctx->params->reps; rep++)
        bench_cell_rep(c, rep);
    bench_cell_end(c);
}

void bench_settle_table(bench_target *target, const bench_dataset *ds)
{
    bench_target_thread tt = {0};
    bench_target_thread_begin(target, &tt);
    worker w = {0};
    bench_context ctx = {.ds = ds, .target = target};
    w.ctx = &ctx;
    w.tt = tt;
    procreg_owner o;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < ds->n_keys; i++)
            (void)t_lookup(&w, &ds->keys[i], &o);
    bench_target_thread_end(target, &w.tt);
}

int bench_load_table(bench_target *target, const bench_dataset *ds,
                     GError **error)
{
    bench_target_thread tt = {0};
    bench_target_thread_begin(target, &tt);
    int rc = 0;
    for (size_t i = 0; i < ds->n_keys && rc == 0; i++) {
        GVariant *md = bench_key_metadata(ds, i);
        rc = t_register(target, &tt, &ds->keys[i], md);
        g_variant_unref(md);
        if (rc < 0)
            g_set_error(error, PROCREG_ERROR, rc,
                        "loading %s/%s failed: %s", ds->keys[i].ns,
                        ds->keys[i].name, procreg_strerror(rc));
    }
    bench_target_thread_end(target, &tt);
    return rc;
}

void bench_run_load(const bench_params *p, const bench_dataset *ds,
                    const char *label, bench_result *r)
{
    r->workload = &bench_workloads[BENCH_W_LOAD];
    r->keys = ds->n_keys;
    r->dist = "-";
    r->threads = 1;
    r->reps = p->reps;
    r->mops = g_new0(double, p->reps);
    r->items_per_op = NAN;
    bench_hist *hist = g_new0(bench_hist, 1);
    double *cpu = g_new0(double, p->reps);
    for (int rep = 0; rep < p->reps; rep++) {
        bench_target t;
        GError *error = NULL;
        if (bench_target_open(&t, label, ds->n_keys, &error) < 0) {
            r->skipped = g_strdup(error->message);
            g_error_free(error);
            break;
        }
        r->target_kind = t.kind;
        bench_target_thread tt = {0};
        bench_target_thread_begin(&t, &tt);
        double c0 = bench_thread_cpu();
        double t0 = bench_now();
        for (size_t i = 0; i < ds->n_keys; i++) {
            const bench_key *k = &ds->keys[i];
            int rc;
            if ((i & ((uint64_t)p->sample_every - 1)) == 0) {
                uint64_t a = bench_ticks_begin();
                rc = t_register(&t, &tt, k, NULL);
                uint64_t b = bench_ticks_end();
                bench_hist_add_ticks(hist, b - a);
            } else {
                rc = t_register(&t, &tt, k, NULL);
            }
            if (G_UNLIKELY(rc != 0)) {
                r->errors++;
                if (!r->error_example)
                    r->error_example = g_strdup_printf(
                        "register %s/%s returned %d", k->ns, k->name, rc);
            }
        }
        double t1 = bench_now();
        cpu[rep] = (bench_thread_cpu() - c0) * 1e9 / (double)ds->n_keys;
        bench_target_thread_end(&t, &tt);
        r->mops[rep] = (double)ds->n_keys / (t1 - t0) / 1e6;
        bench_target_close(&t);
    }
    if (!r->skipped) {
        summarize(r, hist);
        r->samples = hist->count;
        r->cpu_ns_per_op = median(cpu, p->reps);
        char *why = NULL;
        if (!bench_memory_probe(label, ds->n_keys, p->seed,
                                &r->mem_rss_per_entry,
                                &r->mem_heap_per_entry,
                                &r->mem_backend_per_entry, &why)) {
            fprintf(stderr, "procreg-bench: %s: memory probe failed: %s\n",
                    label, why);
            g_free(why);
        }
    }
    g_free(cpu);
    g_free(hist);
}

/* ------------------------------------------------------------------------ */
/* Memory per entry, in a fresh process                                     */

#define PROBE_TAG "procreg-bench-memory"

int bench_memory_probe_child(const char *label, size_t n_keys, uint64_t seed)
{
    bench_dataset ds;
    GError *error = NULL;
    if (bench_dataset_init(&ds, n_keys, 1, false, false, seed, &error) < 0) {
        fprintf(stderr, "%s\n", error->message);
        return 1;
    }
    size_t rss0 = bench_rss_bytes();
    size_t heap0 = bench_heap_bytes();
    bench_target t;
    if (bench_target_open(&t, label, n_keys, &error) < 0) {
        fprintf(stderr, "%s\n", error->message);
        return 1;
    }
    bench_target_thread tt = {0};
    bench_target_thread_begin(&t, &tt);
    for (size_t i = 0; i < n_keys; i++) {
        int rc = t_register(&t, &tt, &ds.keys[i], NULL);
        if (rc != 0) {
            fprintf(stderr, "register %s/%s: %s\n", ds.keys[i].ns,
                    ds.keys[i].name, procreg_strerror(rc));
            return 1;
        }
    }
    bench_target_thread_end(&t, &tt);
    size_t rss1 = bench_rss_bytes();
    size_t heap1 = bench_heap_bytes();
    size_t backend = 0;
    bool have_backend = bench_target_memory(&t, &backend);
    printf(PROBE_TAG " rss=%.17g heap=%.17g backend=%.17g\n",
           ((double)rss1 - (double)rss0) / (double)n_keys,
           heap0 || heap1 ? ((double)heap1 - (double)heap0) / (double)n_keys
                          : NAN,
           have_backend ? (double)backend / (double)n_keys : NAN);
    bench_target_close(&t);
    bench_dataset_clear(&ds);
    return 0;
}

bool bench_memory_probe(const char *label, size_t n_keys, uint64_t seed,
                        double *rss, double *heap, double *backend,
                        char **error)
{
    *rss = *heap = *backend = NAN;
    char keys[32], seed_s[32];
    g_snprintf(keys, sizeof keys, "%zu", n_keys);
    g_snprintf(seed_s, sizeof seed_s, "%" G_GUINT64_FORMAT, seed);
    char *argv[] = {(char *)"/proc/self/exe", (char *)"--memory-probe",
                    (char *)"--backend", (char *)label, (char *)"--keys", keys,
                    (char *)"--seed", seed_s, NULL};
    char *out = NULL, *err = NULL;
    int status = 0;
    GError *e = NULL;
    /* The child starts from an empty registry too. */
    bench_scratch_empty();
    if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out,
                      &err, &status, &e) ||
        !g_spawn_check_wait_status(status, &e)) {
        *error = g_strdup_printf("%s%s%s", e->message, err && *err ? ": " : "",
                                 err && *err ? g_strstrip(err) : "");
        g_error_free(e);
        g_free(out);
        g_free(err);
        return false;
    }
    const char *line = out ? strstr(out, PROBE_TAG " ") : NULL;
    bool ok = false;
    if (line) {
        /* g_ascii_strtod: the numbers are written in the C locale. */
        const char *r = strstr(line, "rss="), *h = strstr(line, "heap="),
                   *b = strstr(line, "backend=");
        if (r && h && b) {
            *rss = g_ascii_strtod(r + 4, NULL);
            *heap = g_ascii_strtod(h + 5, NULL);
            *backend = g_ascii_strtod(b + 8, NULL);
            ok = true;
        }
    }
    if (!ok)
        *error = g_strdup_printf("unexpected output: %s", out ? out : "");
    g_free(out);
    g_free(err);
    return ok;
}

void bench_result_clear(bench_result *r)
{
    g_free(r->mops);
    g_free(r->target);
    g_free(r->error_example);
    g_free(r->skipped);
    memset(r, 0, sizeof *r);
}
