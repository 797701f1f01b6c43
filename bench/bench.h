/*
 * procreg-bench: shared types.
 *
 * One run measures a set of *targets* (procreg backends opened by spec,
 * plus two baselines that do the same work without procreg: raw-ghash and
 * raw-ckht) on a set of *workloads*, over key counts, key distributions
 * and thread counts.  Every result is the median of --reps repetitions
 * with min and max, plus latency percentiles from a sampled histogram.
 */
#ifndef PROCREG_BENCH_H
#define PROCREG_BENCH_H

#include <procreg/procreg.h>
#include <procreg/backend.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bench-config.h"

/* The service layer (telemetry, events, waiting) came after the core API;
 * its workloads are built when the header has it. */
#if defined(PROCREG_OP_BIT)
#define BENCH_HAVE_SERVICE 1
#endif
#include "bench-git.h"

/* ------------------------------------------------------------------------ */
/* Timer and latency histogram (measure.c)                                  */

typedef struct {
    const char *source;      /* "rdtsc" or "clock_gettime(CLOCK_MONOTONIC)" */
    double ticks_per_ns;     /* 1.0 for clock_gettime */
    uint64_t overhead_ticks; /* median cost of an empty timed section */
} bench_timer;

extern bench_timer bench_clock;

/* Calibrate bench_clock (about 50 ms). */
void bench_timer_init(bool allow_tsc);

/* Monotonic wall time in seconds, for throughput windows. */
double bench_now(void);
/* CPU time of the calling thread in seconds. */
double bench_thread_cpu(void);

#if defined(BENCH_HAVE_X86_TSC)
#include <x86intrin.h>
static inline uint64_t bench_tick_start(void)
{
    _mm_lfence();
    uint64_t t = __rdtsc();
    _mm_lfence();
    return t;
}
static inline uint64_t bench_tick_end(void)
{
    unsigned int aux;
    uint64_t t = __rdtscp(&aux);
    _mm_lfence();
    return t;
}
#endif
uint64_t bench_tick_clock(void);

extern bool bench_use_tsc;

static inline uint64_t bench_ticks_begin(void)
{
#if defined(BENCH_HAVE_X86_TSC)
    if (bench_use_tsc)
        return bench_tick_start();
#endif
    return bench_tick_clock();
}

static inline uint64_t bench_ticks_end(void)
{
#if defined(BENCH_HAVE_X86_TSC)
    if (bench_use_tsc)
        return bench_tick_end();
#endif
    return bench_tick_clock();
}

/* Log-linear histogram of nanoseconds: exact below 64 ns, then 32
 * sub-buckets per power of two (at most 3% error), up to 2^40 ns. */
#define BENCH_HIST_SUB 32
#define BENCH_HIST_LINEAR 64
#define BENCH_HIST_BUCKETS (BENCH_HIST_LINEAR + (40 - 6) * BENCH_HIST_SUB)

typedef struct {
    uint64_t count;
    uint64_t buckets[BENCH_HIST_BUCKETS];
} bench_hist;

static inline unsigned int bench_hist_index(uint64_t ns)
{
    if (ns < BENCH_HIST_LINEAR)
        return (unsigned int)ns;
    unsigned int msb = 63u - (unsigned int)__builtin_clzll(ns);
    if (msb >= 40)
        return BENCH_HIST_BUCKETS - 1;
    unsigned int shift = msb - 5;
    unsigned int sub = (unsigned int)(ns >> shift) & (BENCH_HIST_SUB - 1);
    return BENCH_HIST_LINEAR + (msb - 6) * BENCH_HIST_SUB + sub;
}

/* Record one sample given in timer ticks (the timer overhead is
 * subtracted here). */
static inline void bench_hist_add_ticks(bench_hist *h, uint64_t ticks)
{
    ticks = ticks > bench_clock.overhead_ticks
                ? ticks - bench_clock.overhead_ticks
                : 0;
    uint64_t ns = (uint64_t)((double)ticks / bench_clock.ticks_per_ns);
    h->buckets[bench_hist_index(ns)]++;
    h->count++;
}

void bench_hist_merge(bench_hist *into, const bench_hist *from);
/* The value (ns) below which a fraction @q of the samples lie: the middle
 * of the bucket that holds that rank.  NAN when empty. */
double bench_hist_percentile(const bench_hist *h, double q);

/* ------------------------------------------------------------------------ */
/* Machine facts (measure.c)                                                */

typedef struct {
    char *cpu_model;
    int cores;         /* online processors */
    char *kernel;      /* uname -sr */
    char *date;        /* ISO 8601, UTC */
    char *command;     /* the exact command line, shell-quoted */
    char *hostname;
    char *loadavg;     /* /proc/loadavg (1, 5, 15 min) at the start */
} bench_sysinfo;

/* The 1, 5 and 15 minute load averages now, "x.xx y.yy z.zz", g_free it. */
char *bench_loadavg(void);

void bench_sysinfo_collect(bench_sysinfo *info, int argc, char **argv);
void bench_sysinfo_clear(bench_sysinfo *info);

/* Anonymous resident memory in bytes (/proc/self/statm: resident -
 * shared), after malloc_trim. */
size_t bench_rss_bytes(void);
/* Bytes malloc has handed out and not had back (mallinfo2: in-use chunks
 * plus mmapped ones), or 0 without mallinfo2. */
size_t bench_heap_bytes(void);

/* ------------------------------------------------------------------------ */
/* Data set (dataset.c)                                                     */

/* One key, 64 bytes with its text inline, so the caller side of a lookup
 * is a single cache line (prefetched ahead by the workload loops). */
#define BENCH_KEY_TEXT 34
typedef struct {
    procreg_key *pkey;   /* prepared key */
    const char *ns;      /* = text: "ns\0name\0" */
    const char *name;    /* = text + ns_len + 1 */
    int32_t group;       /* metadata "group" (production keys), else -1 */
    uint16_t len;        /* ns_len + 1 + name_len: the key identity */
    char text[BENCH_KEY_TEXT];
} bench_key;
G_STATIC_ASSERT(sizeof(bench_key) == 64);

typedef struct {
    size_t n_keys;          /* registered keys (the table) */
    bench_key *keys;
    size_t n_production;    /* keys[0 .. n_production) are in production */
    size_t n_groups;        /* distinct "group" values among them */

    size_t n_miss;          /* well-formed keys that are never registered */
    bench_key *miss;

    char **test_ns;         /* test-<hex> namespaces, ... */
    size_t n_test_ns;
    size_t test_ns_size;    /* ... each holding this many keys */

    size_t pool_per_thread; /* private write pool of each thread */
    size_t pool_threads;
    bench_key *pool;        /* pool_threads * pool_per_thread keys */

    uint32_t *zipf;         /* BENCH_ZIPF_SAMPLES key indices, or NULL */

    GVariant **metadata;     /* n_keys dictionaries, or NULL */
    GVariant **group_values; /* n_groups int32 values for find */
    GVariant *update_md[4];  /* metadata dictionaries for update */
    GVariant *role_api;      /* "api": a quarter of any 100 keys (find-ns) */

} bench_dataset;

#define BENCH_ZIPF_SAMPLES (1u << 20)
/* Keys are drawn this many ops ahead and prefetched (power of two). */
#define BENCH_AHEAD 8
#define BENCH_ZIPF_S 0.99

/* @metadata: build every key's metadata now (bench_key_metadata() then
 * hands out references to it). */
int bench_dataset_init(bench_dataset *ds, size_t n_keys, size_t threads,
                       bool zipf, bool metadata, uint64_t seed,
                       GError **error);
void bench_dataset_clear(bench_dataset *ds);
/* The metadata a key is registered with: a new (full) reference to a
 * serialised a{sv}. */
GVariant *bench_key_metadata(const bench_dataset *ds, size_t index);

/* ------------------------------------------------------------------------ */
/* Targets: what is measured (target.c, raw-*.c)                           */

typedef enum {
    BENCH_TARGET_PROCREG,
    BENCH_TARGET_RAW_GHASH,
    BENCH_TARGET_RAW_CKHT,
    BENCH_TARGET_RAW_LMDB,
} bench_target_kind;

typedef struct raw_ghash raw_ghash;
typedef struct raw_ckht raw_ckht;
typedef struct raw_lmdb raw_lmdb;

typedef struct {
    bench_target_kind kind;
    char *label;        /* the spec, or raw-ghash / raw-ckht / raw-lmdb */
    procreg *reg;
    raw_ghash *rg;
    raw_ckht *rc;
    raw_lmdb *rl;
} bench_target;

/* Per-thread state a target needs (an epoch record for raw-ckht, a read
 * transaction for raw-lmdb). */
typedef struct {
    void *epoch_record;
    void *lmdb_txn;
    unsigned int retired;
    bool protect_reads; /* writers run concurrently: raw-ckht readers use
                           epoch sections */
} bench_target_thread;

/* @capacity: the number of keys to expect (a sizing hint). */
int bench_target_open(bench_target *t, const char *label, size_t capacity,
                      GError **error);
void bench_target_close(bench_target *t);
void bench_target_thread_begin(bench_target *t, bench_target_thread *tt);
void bench_target_thread_end(bench_target *t, bench_target_thread *tt);
/* Bytes the backend reports for its entries (procreg_stats), or 0. */
bool bench_target_memory(bench_target *t, size_t *bytes);

/* A private scratch directory for backends that need files (removed at
 * exit by bench_scratch_remove); opening a target whose spec names it
 * empties it first, so every open starts from an empty registry. */
const char *bench_scratch_dir(void);
/* Where to make it (--scratch); call before bench_scratch_dir(). */
void bench_scratch_set_parent(const char *dir);
/* Remove what backends left in it. */
void bench_scratch_empty(void);
void bench_scratch_remove(void);

/* raw-ghash: a GHashTable under a GRWLock. */
raw_ghash *raw_ghash_new(void);
void raw_ghash_free(raw_ghash *rg);
int raw_ghash_register(raw_ghash *rg, const bench_key *k, GVariant *md);
int raw_ghash_lookup(raw_ghash *rg, const char *ns, const char *name,
                     procreg_owner *out);
int raw_ghash_lookup_prepared(raw_ghash *rg, const bench_key *k,
                              procreg_owner *out);
int raw_ghash_lookup_entry(raw_ghash *rg, const char *ns, const char *name,
                           procreg_entry *out);
int raw_ghash_unregister(raw_ghash *rg, const bench_key *k);
int raw_ghash_update(raw_ghash *rg, const bench_key *k, GVariant *md);
int raw_ghash_list(raw_ghash *rg, const char *ns, procreg_entry **out,
                   size_t *n);
int raw_ghash_find(raw_ghash *rg, const char *ns, const char *meta_key,
                   GVariant *value, procreg_entry **out, size_t *n);

#if defined(BENCH_HAVE_LMDB)
/* raw-lmdb: one LMDB database in @dir (raw-lmdb.c). */
raw_lmdb *raw_lmdb_new(const char *dir, GError **error);
void raw_lmdb_free(raw_lmdb *rl);
void raw_lmdb_thread_end(raw_lmdb *rl, bench_target_thread *tt);
int raw_lmdb_register(raw_lmdb *rl, const bench_key *k, GVariant *md);
int raw_lmdb_lookup(raw_lmdb *rl, bench_target_thread *tt, const char *ns,
                    const char *name, procreg_owner *out);
int raw_lmdb_lookup_prepared(raw_lmdb *rl, bench_target_thread *tt,
                             const bench_key *k, procreg_owner *out);
int raw_lmdb_lookup_entry(raw_lmdb *rl, bench_target_thread *tt,
                          const char *ns, const char *name,
                          procreg_entry *out);
int raw_lmdb_unregister(raw_lmdb *rl, const bench_key *k);
int raw_lmdb_update(raw_lmdb *rl, const bench_key *k, GVariant *md);
int raw_lmdb_list(raw_lmdb *rl, bench_target_thread *tt, const char *ns,
                  procreg_entry **out, size_t *n);
int raw_lmdb_find(raw_lmdb *rl, bench_target_thread *tt, const char *ns,
                  const char *meta_key, GVariant *value, procreg_entry **out,
                  size_t *n);
/* The bytes of the file in use (as the lmdb backend reports its own). */
bool raw_lmdb_file_bytes(raw_lmdb *rl, size_t *bytes);
#endif

#if defined(BENCH_HAVE_CK)
raw_ckht *raw_ckht_new(size_t capacity);
void raw_ckht_free(raw_ckht *rc);
void raw_ckht_thread_begin(raw_ckht *rc, bench_target_thread *tt);
void raw_ckht_thread_end(raw_ckht *rc, bench_target_thread *tt);
int raw_ckht_register(raw_ckht *rc, bench_target_thread *tt,
                      const bench_key *k, GVariant *md);
int raw_ckht_lookup(raw_ckht *rc, bench_target_thread *tt, const char *ns,
                    const char *name, procreg_owner *out);
int raw_ckht_lookup_prepared(raw_ckht *rc, bench_target_thread *tt,
                             const bench_key *k, procreg_owner *out);
int raw_ckht_lookup_entry(raw_ckht *rc, bench_target_thread *tt,
                          const char *ns, const char *name,
                          procreg_entry *out);
int raw_ckht_unregister(raw_ckht *rc, bench_target_thread *tt,
                        const bench_key *k);
int raw_ckht_update(raw_ckht *rc, bench_target_thread *tt, const bench_key *k,
                    GVariant *md);
int raw_ckht_list(raw_ckht *rc, const char *ns, procreg_entry **out,
                  size_t *n);
int raw_ckht_find(raw_ckht *rc, const char *ns, const char *meta_key,
                  GVariant *value, procreg_entry **out, size_t *n);
#endif

/* Shared by the raw baselines: "ns\0name" from strings into @buf (at
 * least 2 * (PROCREG_NAME_MAX + 1) bytes); returns the identity length. */
static inline size_t raw_key_build(char *buf, const char *ns,
                                   const char *name)
{
    size_t ns_len = strlen(ns);
    size_t name_len = strlen(name);
    memcpy(buf, ns, ns_len);
    buf[ns_len] = '\0';
    memcpy(buf + ns_len + 1, name, name_len);
    buf[ns_len + 1 + name_len] = '\0';
    return ns_len + 1 + name_len;
}

/* Sort like procreg_list: namespace, then name. */
void raw_entries_sort(procreg_entry *entries, size_t n);

/* ------------------------------------------------------------------------ */
/* Workloads (workload.c)                                                   */

typedef enum {
    BENCH_W_LOAD,
    BENCH_W_LOOKUP_HIT,
    BENCH_W_LOOKUP_HIT_KEY,
    BENCH_W_LOOKUP_ENTRY,
    BENCH_W_LOOKUP_MISS,
    BENCH_W_LOOKUP_TELEMETRY,
    BENCH_W_LIST_NS,
    BENCH_W_COUNT_NS,
    BENCH_W_FIND,
    BENCH_W_FIND_NS,
    BENCH_W_UPDATE,
    BENCH_W_MIXED,
    BENCH_W_CHURN,
    BENCH_W_WAIT,
    BENCH_W_WATCH,
    BENCH_W_GROUP_CHURN,
    BENCH_W_DISPATCH,
    BENCH_W_GROUP_MEMBERS,
    BENCH_W_COUNT
} bench_workload_id;

typedef struct {
    bench_workload_id id;
    const char *name;
    const char *summary;   /* one line for the table header */
    const char *unit;      /* what one op is */
    bool uses_dist;        /* key choice follows --dist */
    bool single_thread;    /* measured at one thread only */
    bool slow;             /* ms-scale ops: check the clock every op */
    bool procreg_only;     /* no baseline: a service-layer feature */
    int fixed_threads;     /* > 0: runs its own threads (wait, watch) */
    bool unavailable;      /* not in this build (no service layer) */
    bool group;            /* a group workload (groups.c) */
} bench_workload;

extern const bench_workload bench_workloads[BENCH_W_COUNT];
const bench_workload *bench_workload_find(const char *name);

typedef enum { BENCH_DIST_UNIFORM, BENCH_DIST_ZIPF } bench_dist;

typedef struct {
    double seconds;       /* per repetition, when ops == 0 */
    uint64_t ops;         /* per thread and repetition; 0: use seconds */
    double warmup;        /* seconds of unrecorded run before the reps */
    int reps;
    unsigned int sample_every; /* power of two */
    unsigned int mix_lookup, mix_register, mix_unregister; /* percent */
    uint64_t seed;
    bool pin;             /* pin worker i to online CPU i % cores */
} bench_params;

/* One measured cell: (workload, target, keys, dist, threads). */
typedef struct {
    const bench_workload *workload;
    char *target;         /* label, owned */
    bench_target_kind target_kind;
    size_t keys;
    const char *dist;     /* "uniform", "zipf" or "-" */
    int threads;
    int reps;
    double *mops;         /* per repetition */
    double mops_median, mops_min, mops_max;
    double ns_per_op;     /* threads / median throughput */
    double cpu_ns_per_op; /* workers' CPU time / ops, median of the reps:
                             what an op costs, whatever else runs */
    double p50, p99, p999;
    uint64_t samples;
    double items_per_op;  /* list-ns / find: entries returned per op */
    double mem_rss_per_entry;     /* load: RSS delta / keys, or NAN */
    double mem_heap_per_entry;    /* load: malloc delta / keys, or NAN */
    double mem_backend_per_entry; /* load: backend report / keys, or NAN */
    uint64_t errors;      /* ops whose result was not the expected one */
    char *error_example;
    char *skipped;        /* why it was not measured, or NULL */
    double ratio_raw_ckht;  /* time ratio vs the baseline, NAN if none */
    double ratio_raw_ghash;
    double ratio_reference; /* lookup-telemetry: time vs lookup-hit */
    double ratio_cpu_raw_ckht; /* the same on CPU ns per op */
    double ratio_cpu_raw_ghash;
} bench_result;

typedef struct {
    const bench_params *params;
    const bench_dataset *ds;
    bench_target *target;
    /* mixed: per-thread pool state that survives repetitions */
    size_t *pool_registered; /* [thread]: keys registered, cursor */
    size_t *pool_removed;    /* [thread]: keys unregistered, cursor */
} bench_context;

/* Measure one cell; fills @r (allocated by the caller, fields zeroed). */
void bench_run_cell(bench_context *ctx, const bench_workload *w,
                    bench_dist dist, int threads, bench_result *r);

/* The same in steps, so that the repetitions of several targets can be
 * interleaved: begin, warmup, rep 0 .. reps-1 (any order), end. */
typedef struct bench_cell bench_cell;
bench_cell *bench_cell_begin(bench_context *ctx, const bench_workload *w,
                             bench_dist dist, int threads, bench_result *r);
void bench_cell_warmup(bench_cell *c);
void bench_cell_rep(bench_cell *c, int rep);
void bench_cell_end(bench_cell *c);

/* wait: a waiter blocks in procreg_wait_for_key() on an absent key, a
 * second thread registers it; the latency is from just before the
 * register call to the waiter's return.  watch: a subscriber to the
 * namespace; from just before the register call to the callback. */
void bench_run_service(bench_context *ctx, const bench_workload *w,
                       bench_result *r);

/* The group workloads (groups.c): group-churn, dispatch, group-members on
 * a group of --keys members made for the cell, with @threads threads. */
void bench_run_groups(bench_context *ctx, const bench_workload *w,
                      int threads, bench_result *r);

/* Fill @target's table with every key of the data set and its metadata
 * (untimed).  Returns 0 or an error with a message. */
int bench_load_table(bench_target *target, const bench_dataset *ds,
                     GError **error);

/* Look every key up twice, untimed, after all tables are filled: the
 * first cell measured then does not pay for first touches (page tables,
 * caches, lazily built structures) that the later ones do not. */
void bench_settle_table(bench_target *target, const bench_dataset *ds);

/* The load workload: opens a fresh instance of @spec per repetition. */
void bench_run_load(const bench_params *params, const bench_dataset *ds,
                    const char *spec, bench_result *r);

void bench_result_clear(bench_result *r);

/* Memory per entry of @label holding @n_keys keys without metadata,
 * measured in a fresh process (this program re-executed with
 * --memory-probe) so the heap of earlier runs does not hide growth.
 * Each figure is NAN when unknown.  Returns false with @error set when
 * the probe failed. */
bool bench_memory_probe(const char *label, size_t n_keys, uint64_t seed,
                        double *rss, double *heap, double *backend,
                        char **error);
/* The probe itself: prints one line and returns the exit status. */
int bench_memory_probe_child(const char *label, size_t n_keys,
                             uint64_t seed);

/* ------------------------------------------------------------------------ */
/* Reports (report.c, plot.c)                                               */

typedef struct {
    bench_sysinfo sys;
    const char *profile;
    char *targets_joined;
    char *keys_joined;
    char *threads_joined;
    char *dists_joined;
    char *workloads_joined;
    char *loadavg_end;
    const bench_params *params;
    GPtrArray *results; /* bench_result * */
} bench_report;

void bench_report_ratios(bench_report *rep);
void bench_report_header(FILE *out, const bench_report *rep);
void bench_report_table(FILE *out, const bench_report *rep);
int bench_report_csv(const bench_report *rep, const char *path,
                     GError **error);
int bench_report_json(const bench_report *rep, const char *path,
                      GError **error);
int bench_report_plot(const bench_report *rep, const char *dir,
                      GError **error);

#endif
