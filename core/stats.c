/*
 * Statistics: per-thread counter blocks, procreg_stats(), and the
 * Prometheus and JSON forms.
 *
 * Counters never contend.  Each thread that uses a registry gets its own
 * block of counters for it, found through a one-entry thread-local cache
 * (registry id -> block).  Only that thread writes the block, with a
 * relaxed load and a relaxed store (no atomic read-modify-write, no lock,
 * no shared cache line); readers sum every block with relaxed loads.
 *
 * Blocks are indexed by a small per-thread slot number.  A thread gives its
 * slot back when it exits and the next new thread reuses it together with
 * the blocks, which keep their counts: the memory is bounded by the
 * largest number of threads alive at once, and sums never go backwards.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * The clock for durations.  clock_gettime() costs 20 ns on bare metal but
 * 70 ns and more under a hypervisor's clock source (kvm-clock), and every
 * timed call reads it twice.  Where the TSC is invariant (constant_tsc
 * and nonstop_tsc in /proc/cpuinfo) it is read instead, scaled to ns by a
 * calibration against CLOCK_MONOTONIC taken over the first 50 ms or more
 * of the process's use of the clock (meanwhile clock_gettime answers).
 * The value stays close to CLOCK_MONOTONIC; only differences are used.
 */
enum { CLOCK_CALIBRATING, CLOCK_TSC, CLOCK_MONO, CLOCK_SWITCHING };

static atomic_int clock_mode = CLOCK_CALIBRATING;
static uint64_t cal_t0, cal_c0;      /* set once, before clock_mode moves */
static uint64_t tsc_base_t, tsc_base_c, tsc_mult; /* ns = base_t + d*mult>>32 */
static pthread_once_t clock_once = PTHREAD_ONCE_INIT;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#if defined(__x86_64__)
#include <x86intrin.h>

static uint64_t tsc_read(void)
{
    return __rdtsc();
}

static bool tsc_invariant(void)
{
    char *info = NULL;
    if (!g_file_get_contents("/proc/cpuinfo", &info, NULL, NULL))
        return false;
    char *flags = strstr(info, "\nflags");
    char *end = flags ? strchr(flags + 1, '\n') : NULL;
    if (end != NULL)
        *end = '\0';
    bool ok = flags != NULL && strstr(flags, " constant_tsc") != NULL &&
              strstr(flags, " nonstop_tsc") != NULL;
    g_free(info);
    return ok;
}
#else
static uint64_t tsc_read(void)
{
    return 0;
}

static bool tsc_invariant(void)
{
    return false;
}
#endif

static void clock_init(void)
{
    if (g_getenv("PROCREG_NO_TSC") != NULL || !tsc_invariant()) {
        atomic_store_explicit(&clock_mode, CLOCK_MONO, memory_order_release);
        return;
    }
    cal_c0 = tsc_read();
    cal_t0 = mono_ns();
}

static void clock_calibrate(uint64_t t)
{
    if (t - cal_t0 < 50000000ull)
        return;
    int expect = CLOCK_CALIBRATING;
    if (!atomic_compare_exchange_strong(&clock_mode, &expect, CLOCK_SWITCHING))
        return;
    uint64_t c = tsc_read();
    t = mono_ns();
    if (c <= cal_c0 || t <= cal_t0) {
        atomic_store_explicit(&clock_mode, CLOCK_MONO, memory_order_release);
        return;
    }
    tsc_mult = (uint64_t)(((unsigned __int128)(t - cal_t0) << 32) /
                          (c - cal_c0));
    tsc_base_t = t;
    tsc_base_c = c;
    atomic_store_explicit(&clock_mode, CLOCK_TSC, memory_order_release);
}

PROCREG_INTERNAL uint64_t procreg_now_ns(void)
{
    int mode = atomic_load_explicit(&clock_mode, memory_order_acquire);
    if (G_LIKELY(mode == CLOCK_TSC)) {
        uint64_t d = tsc_read() - tsc_base_c;
        return tsc_base_t + (uint64_t)(((unsigned __int128)d * tsc_mult) >> 32);
    }
    if (mode == CLOCK_CALIBRATING) {
        pthread_once(&clock_once, clock_init);
        uint64_t t = mono_ns();
        if (atomic_load_explicit(&clock_mode, memory_order_acquire) ==
            CLOCK_CALIBRATING)
            clock_calibrate(t);
        return t;
    }
    return mono_ns();
}

/* Nanoseconds since @t0 (0 if the clock switched source in between and
 * the difference came out negative). */
PROCREG_INTERNAL uint64_t procreg_since_ns(uint64_t t0)
{
    uint64_t t = procreg_now_ns();
    return t > t0 ? t - t0 : 0;
}

PROCREG_INTERNAL char *procreg_key_string(const char *ns, const char *name)
{
    return g_strconcat(ns, "\x1f", name, NULL);
}

/* ---- thread slots ---- */

PROCREG_INTERNAL __thread procreg_tls_cache procreg_tls
    __attribute__((tls_model("initial-exec")));

static __thread unsigned tls_slot_plus1
    __attribute__((tls_model("initial-exec")));

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static GArray *free_slots; /* unsigned */
static unsigned next_slot;
static pthread_key_t slot_key;
static pthread_once_t slot_key_once = PTHREAD_ONCE_INIT;

static void slot_release(void *p)
{
    unsigned slot = (unsigned)GPOINTER_TO_UINT(p) - 1;
    pthread_mutex_lock(&slots_lock);
    g_array_append_val(free_slots, slot);
    pthread_mutex_unlock(&slots_lock);
    tls_slot_plus1 = 0;
    procreg_tls.reg_id = 0;
    procreg_tls.block = NULL;
}

static void slot_key_init(void)
{
    pthread_key_create(&slot_key, slot_release);
    free_slots = g_array_new(FALSE, FALSE, sizeof(unsigned));
}

static unsigned slot_get(void)
{
    if (G_LIKELY(tls_slot_plus1 != 0))
        return tls_slot_plus1 - 1;
    pthread_once(&slot_key_once, slot_key_init);
    unsigned slot;
    pthread_mutex_lock(&slots_lock);
    if (free_slots->len > 0) {
        /* Lowest-numbered reuse is not needed; the last freed is fine. */
        slot = g_array_index(free_slots, unsigned, free_slots->len - 1);
        g_array_set_size(free_slots, free_slots->len - 1);
    } else {
        slot = next_slot++;
    }
    pthread_mutex_unlock(&slots_lock);
    pthread_setspecific(slot_key, GUINT_TO_POINTER(slot + 1));
    tls_slot_plus1 = slot + 1;
    return slot;
}

/* ---- blocks ---- */

#define CHUNK_BITS 6
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define MAX_CHUNKS 1024 /* 65536 threads alive at once */

typedef _Atomic(procreg_tblock *) block_ptr;

struct procreg_tstats {
    pthread_mutex_t lock; /* allocation only */
    _Atomic(block_ptr *) chunks[MAX_CHUNKS];
    /* Threads beyond MAX_CHUNKS * CHUNK_SIZE share this one; their counts
     * may lose increments, and they skip telemetry. */
    procreg_tblock *overflow;
};

static procreg_tblock *block_alloc(bool shared)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, sizeof(procreg_tblock)) != 0)
        g_error("procreg: out of memory for a counter block");
    memset(p, 0, sizeof(procreg_tblock));
    procreg_tblock *b = p;
    b->shared = shared;
    return b;
}

PROCREG_INTERNAL procreg_tstats *procreg_tstats_new(void)
{
    procreg_tstats *t = g_new0(procreg_tstats, 1);
    pthread_mutex_init(&t->lock, NULL);
    t->overflow = block_alloc(true);
    return t;
}

PROCREG_INTERNAL void procreg_tstats_free(procreg_tstats *t)
{
    if (t == NULL)
        return;
    for (unsigned c = 0; c < MAX_CHUNKS; c++) {
        block_ptr *chunk = atomic_load_explicit(&t->chunks[c],
                                                memory_order_acquire);
        if (chunk == NULL)
            continue;
        for (unsigned i = 0; i < CHUNK_SIZE; i++)
            free(atomic_load_explicit(&chunk[i], memory_order_acquire));
        g_free(chunk);
    }
    free(t->overflow);
    pthread_mutex_destroy(&t->lock);
    g_free(t);
}

PROCREG_INTERNAL procreg_tblock *procreg_tblock_get_slow(procreg *reg)
{
    procreg_tstats *t = reg->tstats;
    unsigned slot = slot_get();
    procreg_tblock *b;
    if (slot >= MAX_CHUNKS * CHUNK_SIZE) {
        b = t->overflow;
    } else {
        block_ptr *chunk = atomic_load_explicit(&t->chunks[slot >> CHUNK_BITS],
                                                memory_order_acquire);
        b = chunk ? atomic_load_explicit(&chunk[slot & (CHUNK_SIZE - 1)],
                                         memory_order_acquire)
                  : NULL;
        if (b == NULL) {
            pthread_mutex_lock(&t->lock);
            chunk = atomic_load_explicit(&t->chunks[slot >> CHUNK_BITS],
                                         memory_order_relaxed);
            if (chunk == NULL) {
                chunk = g_new0(block_ptr, CHUNK_SIZE);
                atomic_store_explicit(&t->chunks[slot >> CHUNK_BITS], chunk,
                                      memory_order_release);
            }
            b = atomic_load_explicit(&chunk[slot & (CHUNK_SIZE - 1)],
                                     memory_order_relaxed);
            if (b == NULL) {
                b = block_alloc(false);
                atomic_store_explicit(&chunk[slot & (CHUNK_SIZE - 1)], b,
                                      memory_order_release);
            }
            pthread_mutex_unlock(&t->lock);
        }
    }
    procreg_tls.reg_id = reg->id;
    procreg_tls.block = b;
    return b;
}

PROCREG_INTERNAL void procreg_tstats_foreach(procreg *reg,
                                             void (*fn)(procreg_tblock *b,
                                                        void *data),
                                             void *data)
{
    procreg_tstats *t = reg->tstats;
    for (unsigned c = 0; c < MAX_CHUNKS; c++) {
        block_ptr *chunk = atomic_load_explicit(&t->chunks[c],
                                                memory_order_acquire);
        if (chunk == NULL)
            continue;
        for (unsigned i = 0; i < CHUNK_SIZE; i++) {
            procreg_tblock *b = atomic_load_explicit(&chunk[i],
                                                     memory_order_acquire);
            if (b != NULL)
                fn(b, data);
        }
    }
    fn(t->overflow, data);
}

static unsigned lat_bucket(uint64_t ns)
{
    if (ns == 0)
        return 0;
    unsigned bits = 64u - (unsigned)__builtin_clzll(ns);
    return bits < PROCREG_LAT_BUCKETS ? bits : PROCREG_LAT_BUCKETS - 1;
}

static inline void add(procreg_tblock *b, _Atomic uint64_t *c, uint64_t v)
{
    if (G_UNLIKELY(b->shared))
        atomic_fetch_add_explicit(c, v, memory_order_relaxed);
    else
        procreg_counter_add(c, v);
}

PROCREG_INTERNAL void procreg_tblock_record(procreg_tblock *b, procreg_op op,
                                            int rc, bool timed,
                                            uint64_t duration_ns)
{
    add(b, &b->calls[op], 1);
    if (rc != 0)
        add(b, procreg_rc_is_miss(rc) ? &b->misses[op] : &b->errors[op], 1);
    if (!timed)
        return;
    add(b, &b->timed[op], 1);
    add(b, &b->time_sum_ns[op], duration_ns);
    add(b, &b->hist[op][lat_bucket(duration_ns)], 1);
    uint64_t max = atomic_load_explicit(&b->time_max_ns[op],
                                        memory_order_relaxed);
    if (duration_ns > max)
        atomic_store_explicit(&b->time_max_ns[op], duration_ns,
                              memory_order_relaxed);
}

/* ---- totals ---- */

typedef struct {
    uint64_t calls[PROCREG_OP_COUNT];
    uint64_t misses[PROCREG_OP_COUNT];
    uint64_t errors[PROCREG_OP_COUNT];
    uint64_t timed[PROCREG_OP_COUNT];
    uint64_t sum_ns[PROCREG_OP_COUNT];
    uint64_t max_ns[PROCREG_OP_COUNT];
    uint64_t hist[PROCREG_OP_COUNT][PROCREG_LAT_BUCKETS];
    size_t blocks;
} totals;

static uint64_t rd(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void sum_block(procreg_tblock *b, void *data)
{
    totals *t = data;
    t->blocks++;
    for (int op = 0; op < PROCREG_OP_COUNT; op++) {
        t->calls[op] += rd(&b->calls[op]);
        t->misses[op] += rd(&b->misses[op]);
        t->errors[op] += rd(&b->errors[op]);
        t->timed[op] += rd(&b->timed[op]);
        t->sum_ns[op] += rd(&b->time_sum_ns[op]);
        uint64_t m = rd(&b->time_max_ns[op]);
        if (m > t->max_ns[op])
            t->max_ns[op] = m;
        for (int i = 0; i < PROCREG_LAT_BUCKETS; i++)
            t->hist[op][i] += rd(&b->hist[op][i]);
    }
}

static void totals_get(procreg *reg, totals *t)
{
    memset(t, 0, sizeof *t);
    procreg_tstats_foreach(reg, sum_block, t);
}

/* Upper bound of the bucket holding quantile @q: durations are known to
 * within a factor of two. */
static uint64_t quantile(const uint64_t *hist, uint64_t n, double q)
{
    if (n == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)n);
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (int i = 0; i < PROCREG_LAT_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= want)
            return i == 0 ? 0 : (1ull << i);
    }
    return 1ull << (PROCREG_LAT_BUCKETS - 1);
}

/* ---- procreg_stats ---- */

static GVariant *per_op(const uint64_t *v)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a{st}"));
    for (int op = 0; op < PROCREG_OP_COUNT; op++)
        g_variant_builder_add(&b, "{st}", procreg_op_name((procreg_op)op),
                              (guint64)v[op]);
    return g_variant_builder_end(&b);
}

static int stats_build(procreg *reg, const totals *t, GVariant **out,
                       GError **error)
{
    size_t entries = 0;
    int rc = procreg_backend_count(reg->backend, NULL, &entries, error);
    GArray *ns_counts = NULL;
    if (rc == 0)
        rc = procreg_namespace_counts(reg, &ns_counts, error);
    if (rc != 0) {
        *out = NULL;
        return rc;
    }
    GVariantDict dict;
    g_variant_dict_init(&dict, NULL);
    g_variant_dict_insert(&dict, "backend", "s", reg->ops->name);
    g_variant_dict_insert(&dict, "spec", "s", procreg_get_spec(reg));
    g_variant_dict_insert(&dict, "entries", "t", (guint64)entries);

    GVariantBuilder nsb;
    g_variant_builder_init(&nsb, G_VARIANT_TYPE("a{st}"));
    guint64 test_ns = 0;
    for (guint i = 0; i < ns_counts->len; i++) {
        const procreg_namespace_info *info =
            &g_array_index(ns_counts, procreg_namespace_info, i);
        g_variant_builder_add(&nsb, "{st}", info->ns, (guint64)info->entries);
        if (procreg_namespace_is_test(info->ns))
            test_ns++;
    }
    g_variant_dict_insert_value(&dict, "namespaces",
                                g_variant_builder_end(&nsb));
    g_variant_dict_insert(&dict, "test_namespaces", "t", test_ns);
    g_array_unref(ns_counts);

    g_variant_dict_insert_value(&dict, "operations", per_op(t->calls));
    g_variant_dict_insert_value(&dict, "misses", per_op(t->misses));
    g_variant_dict_insert_value(&dict, "errors", per_op(t->errors));

    GVariantBuilder lat;
    g_variant_builder_init(&lat, G_VARIANT_TYPE("a{sa{st}}"));
    for (int op = 0; op < PROCREG_OP_COUNT; op++) {
        GVariantBuilder one;
        g_variant_builder_init(&one, G_VARIANT_TYPE("a{st}"));
        g_variant_builder_add(&one, "{st}", "count", (guint64)t->timed[op]);
        g_variant_builder_add(&one, "{st}", "sum_ns", (guint64)t->sum_ns[op]);
        g_variant_builder_add(&one, "{st}", "max_ns", (guint64)t->max_ns[op]);
        g_variant_builder_add(&one, "{st}", "p50_ns",
                              (guint64)quantile(t->hist[op], t->timed[op], 0.5));
        g_variant_builder_add(&one, "{st}", "p99_ns",
                              (guint64)quantile(t->hist[op], t->timed[op], 0.99));
        g_variant_builder_add(&lat, "{s@a{st}}",
                              procreg_op_name((procreg_op)op),
                              g_variant_builder_end(&one));
    }
    g_variant_dict_insert_value(&dict, "latency", g_variant_builder_end(&lat));

    size_t bytes = 0;
    if (procreg_backend_memory_usage(reg->backend, &bytes) == 0)
        g_variant_dict_insert(&dict, "memory_bytes", "t", (guint64)bytes);
    uint64_t owners = 0;
    size_t index_bytes = 0;
    procreg_monitor_stats(reg, &dict, &owners, &index_bytes);
    g_variant_dict_insert(&dict, "owners", "t", (guint64)owners);
    size_t core = sizeof(procreg) + index_bytes +
                  t->blocks * sizeof(procreg_tblock);
    g_variant_dict_insert(&dict, "core_memory_bytes", "t", (guint64)core);
    /* Per-thread counter blocks (plus the shared overflow one). */
    g_variant_dict_insert(&dict, "counter_blocks", "t",
                          (guint64)(t->blocks > 0 ? t->blocks - 1 : 0));
    procreg_events_stats(reg, &dict);

    GVariantDict backend;
    g_variant_dict_init(&backend, NULL);
    procreg_backend_stats(reg->backend, &backend);
    g_variant_dict_insert_value(&dict, "backend_stats",
                                g_variant_dict_end(&backend));
    *out = g_variant_ref_sink(g_variant_dict_end(&dict));
    return 0;
}

PROCREG_API int procreg_stats(procreg *reg, GVariant **out, GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL, PROCREG_EINVAL);
    totals *t = g_new(totals, 1);
    totals_get(reg, t);
    int rc = stats_build(reg, t, out, error);
    g_free(t);
    return rc;
}

/* ---- Prometheus ---- */

static void prom_label(GString *s, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            g_string_append(s, "\\\\");
        else if (*p == '"')
            g_string_append(s, "\\\"");
        else if (*p == '\n')
            g_string_append(s, "\\n");
        else
            g_string_append_c(s, *p);
    }
}

static void prom_head(GString *s, const char *name, const char *type,
                      const char *help)
{
    g_string_append_printf(s, "# HELP %s %s\n# TYPE %s %s\n", name, help,
                           name, type);
}

static guint64 dict_u64(GVariant *dict, const char *key)
{
    guint64 v = 0;
    g_variant_lookup(dict, key, "t", &v);
    return v;
}

/* Each figure of the a{st} @part as its own metric; those named in
 * @counters (NULL-terminated) are counters, the others gauges. */
static void prom_dict_metrics(GString *s, GVariant *stats, const char *part,
                              const char *prefix, const char *help,
                              const char *const *counters)
{
    GVariant *d = g_variant_lookup_value(stats, part, G_VARIANT_TYPE("a{st}"));
    if (d == NULL)
        return;
    GVariantIter it;
    const char *k;
    guint64 v;
    g_variant_iter_init(&it, d);
    while (g_variant_iter_next(&it, "{&st}", &k, &v)) {
        bool counter = g_strv_contains(counters, k);
        char *name = g_strdup_printf("%s_%s%s", prefix, k,
                                     counter ? "_total" : "");
        char *text = g_strdup_printf("%s: %s.", help, k);
        prom_head(s, name, counter ? "counter" : "gauge", text);
        g_string_append_printf(s, "%s %" G_GUINT64_FORMAT "\n", name, v);
        g_free(text);
        g_free(name);
    }
    g_variant_unref(d);
}

static void prom_write(GString *s, procreg *reg, GVariant *stats,
                       const totals *t)
{
    const char *backend = reg->ops->name;
    prom_head(s, "procreg_entries", "gauge", "Entries registered.");
    g_string_append(s, "procreg_entries{backend=\"");
    prom_label(s, backend);
    g_string_append_printf(s, "\"} %" G_GUINT64_FORMAT "\n",
                           dict_u64(stats, "entries"));

    prom_head(s, "procreg_namespace_entries", "gauge",
              "Entries registered per namespace.");
    GVariant *ns = g_variant_lookup_value(stats, "namespaces",
                                          G_VARIANT_TYPE("a{st}"));
    GVariantIter it;
    const char *k;
    guint64 v;
    g_variant_iter_init(&it, ns);
    while (g_variant_iter_next(&it, "{&st}", &k, &v)) {
        g_string_append(s, "procreg_namespace_entries{namespace=\"");
        prom_label(s, k);
        g_string_append_printf(s, "\"} %" G_GUINT64_FORMAT "\n", v);
    }
    g_variant_unref(ns);

    prom_head(s, "procreg_test_namespaces", "gauge",
              "Namespaces made by procreg_namespace_new_test() that hold "
              "entries.");
    g_string_append_printf(s, "procreg_test_namespaces %" G_GUINT64_FORMAT
                           "\n", dict_u64(stats, "test_namespaces"));
    prom_head(s, "procreg_owners", "gauge",
              "Owner processes this registry tracks.");
    g_string_append_printf(s, "procreg_owners %" G_GUINT64_FORMAT "\n",
                           dict_u64(stats, "owners"));

    prom_head(s, "procreg_operations_total", "counter",
              "Calls per operation and result (ok, miss: not found, exists, "
              "conflict, timeout or cancelled; error: anything else).");
    for (int op = 0; op < PROCREG_OP_COUNT; op++) {
        const char *name = procreg_op_name((procreg_op)op);
        uint64_t ok = t->calls[op] - t->misses[op] - t->errors[op];
        g_string_append_printf(s,
                               "procreg_operations_total{op=\"%s\",result=\"ok\"} %"
                               G_GUINT64_FORMAT "\n"
                               "procreg_operations_total{op=\"%s\",result=\"miss\"} %"
                               G_GUINT64_FORMAT "\n"
                               "procreg_operations_total{op=\"%s\",result=\"error\"} %"
                               G_GUINT64_FORMAT "\n",
                               name, (guint64)ok, name, (guint64)t->misses[op],
                               name, (guint64)t->errors[op]);
    }

    prom_head(s, "procreg_operation_duration_seconds", "histogram",
              "Duration of timed calls (every call; lookups 1 in 256 per "
              "thread unless telemetry is attached).");
    for (int op = 0; op < PROCREG_OP_COUNT; op++) {
        const char *name = procreg_op_name((procreg_op)op);
        if (t->timed[op] == 0)
            continue;
        uint64_t cum = 0;
        int top = PROCREG_LAT_BUCKETS - 1;
        while (top > 0 && t->hist[op][top] == 0)
            top--;
        for (int i = 0; i <= top && i < PROCREG_LAT_BUCKETS - 1; i++) {
            cum += t->hist[op][i];
            /* bucket i holds durations < 2^i ns */
            g_string_append_printf(s,
                                   "procreg_operation_duration_seconds_bucket"
                                   "{op=\"%s\",le=\"%.9g\"} %" G_GUINT64_FORMAT
                                   "\n",
                                   name, (double)(1ull << i) * 1e-9,
                                   (guint64)cum);
        }
        g_string_append_printf(s,
                               "procreg_operation_duration_seconds_bucket"
                               "{op=\"%s\",le=\"+Inf\"} %" G_GUINT64_FORMAT "\n"
                               "procreg_operation_duration_seconds_sum"
                               "{op=\"%s\"} %.9g\n"
                               "procreg_operation_duration_seconds_count"
                               "{op=\"%s\"} %" G_GUINT64_FORMAT "\n",
                               name, (guint64)t->timed[op], name,
                               (double)t->sum_ns[op] * 1e-9, name,
                               (guint64)t->timed[op]);
    }

    prom_head(s, "procreg_memory_bytes", "gauge",
              "Memory held, by part (backend entries; core bookkeeping).");
    guint64 mem;
    if (g_variant_lookup(stats, "memory_bytes", "t", &mem))
        g_string_append_printf(s, "procreg_memory_bytes{part=\"backend\"} %"
                               G_GUINT64_FORMAT "\n", mem);
    g_string_append_printf(s, "procreg_memory_bytes{part=\"core\"} %"
                           G_GUINT64_FORMAT "\n",
                           dict_u64(stats, "core_memory_bytes"));

    static const char *const event_counters[] = {"emitted", "delivered",
                                                 NULL};
    static const char *const cleanup_counters[] = {
        "owners_exited", "entries_removed", "failures", NULL};
    prom_dict_metrics(s, stats, "events", "procreg_events", "Events",
                      event_counters);
    prom_dict_metrics(s, stats, "cleanup", "procreg_cleanup",
                      "Dead-owner cleanup", cleanup_counters);

    /* Backend figures that are plain numbers. */
    GVariant *bs = g_variant_lookup_value(stats, "backend_stats",
                                          G_VARIANT_TYPE_VARDICT);
    if (bs != NULL) {
        GVariant *val;
        g_variant_iter_init(&it, bs);
        while (g_variant_iter_next(&it, "{&sv}", &k, &val)) {
            double x = 0;
            bool num = true;
            switch (g_variant_classify(val)) {
            case G_VARIANT_CLASS_UINT64: x = (double)g_variant_get_uint64(val); break;
            case G_VARIANT_CLASS_INT64: x = (double)g_variant_get_int64(val); break;
            case G_VARIANT_CLASS_UINT32: x = g_variant_get_uint32(val); break;
            case G_VARIANT_CLASS_INT32: x = g_variant_get_int32(val); break;
            case G_VARIANT_CLASS_DOUBLE: x = g_variant_get_double(val); break;
            case G_VARIANT_CLASS_BOOLEAN: x = g_variant_get_boolean(val); break;
            default: num = false;
            }
            if (num) {
                GString *metric = g_string_new("procreg_backend_");
                for (const char *p = k; *p; p++)
                    g_string_append_c(metric, g_ascii_isalnum(*p) ? *p : '_');
                prom_head(s, metric->str, "gauge",
                          "Backend specific figure.");
                g_string_append_printf(s, "%s{backend=\"", metric->str);
                prom_label(s, backend);
                g_string_append_printf(s, "\"} %.17g\n", x);
                g_string_free(metric, TRUE);
            }
            g_variant_unref(val);
        }
        g_variant_unref(bs);
    }
}

PROCREG_API int procreg_stats_write_prometheus(procreg *reg, GString *out,
                                               GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL, PROCREG_EINVAL);
    totals *t = g_new(totals, 1);
    totals_get(reg, t);
    GVariant *stats = NULL;
    int rc = stats_build(reg, t, &stats, error);
    if (rc == 0) {
        prom_write(out, reg, stats, t);
        g_variant_unref(stats);
    }
    g_free(t);
    return rc;
}

/* ---- JSON ---- */

static void json_string(GString *s, const char *v)
{
    g_string_append_c(s, '"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        switch (*p) {
        case '"': g_string_append(s, "\\\""); break;
        case '\\': g_string_append(s, "\\\\"); break;
        case '\n': g_string_append(s, "\\n"); break;
        case '\r': g_string_append(s, "\\r"); break;
        case '\t': g_string_append(s, "\\t"); break;
        default:
            if (*p < 0x20)
                g_string_append_printf(s, "\\u%04x", *p);
            else
                g_string_append_c(s, (char)*p);
        }
    }
    g_string_append_c(s, '"');
}

static void json_value(GString *s, GVariant *v)
{
    switch (g_variant_classify(v)) {
    case G_VARIANT_CLASS_BOOLEAN:
        g_string_append(s, g_variant_get_boolean(v) ? "true" : "false");
        break;
    case G_VARIANT_CLASS_BYTE:
        g_string_append_printf(s, "%u", g_variant_get_byte(v));
        break;
    case G_VARIANT_CLASS_INT16:
        g_string_append_printf(s, "%d", g_variant_get_int16(v));
        break;
    case G_VARIANT_CLASS_UINT16:
        g_string_append_printf(s, "%u", g_variant_get_uint16(v));
        break;
    case G_VARIANT_CLASS_INT32:
        g_string_append_printf(s, "%d", g_variant_get_int32(v));
        break;
    case G_VARIANT_CLASS_UINT32:
        g_string_append_printf(s, "%u", g_variant_get_uint32(v));
        break;
    case G_VARIANT_CLASS_INT64:
        g_string_append_printf(s, "%" G_GINT64_FORMAT, g_variant_get_int64(v));
        break;
    case G_VARIANT_CLASS_UINT64:
        g_string_append_printf(s, "%" G_GUINT64_FORMAT,
                               g_variant_get_uint64(v));
        break;
    case G_VARIANT_CLASS_DOUBLE: {
        double d = g_variant_get_double(v);
        if (isfinite(d))
            g_string_append_printf(s, "%.17g", d);
        else
            g_string_append(s, "null");
        break;
    }
    case G_VARIANT_CLASS_STRING:
    case G_VARIANT_CLASS_OBJECT_PATH:
    case G_VARIANT_CLASS_SIGNATURE:
        json_string(s, g_variant_get_string(v, NULL));
        break;
    case G_VARIANT_CLASS_VARIANT: {
        GVariant *inner = g_variant_get_variant(v);
        json_value(s, inner);
        g_variant_unref(inner);
        break;
    }
    case G_VARIANT_CLASS_MAYBE: {
        GVariant *inner = g_variant_get_maybe(v);
        if (inner == NULL) {
            g_string_append(s, "null");
        } else {
            json_value(s, inner);
            g_variant_unref(inner);
        }
        break;
    }
    case G_VARIANT_CLASS_ARRAY:
    case G_VARIANT_CLASS_TUPLE:
    case G_VARIANT_CLASS_DICT_ENTRY: {
        const GVariantType *t = g_variant_get_type(v);
        bool object = g_variant_type_is_array(t) &&
                      g_variant_type_is_dict_entry(g_variant_type_element(t)) &&
                      g_variant_type_equal(
                          g_variant_type_key(g_variant_type_element(t)),
                          G_VARIANT_TYPE_STRING);
        g_string_append_c(s, object ? '{' : '[');
        gsize n = g_variant_n_children(v);
        for (gsize i = 0; i < n; i++) {
            GVariant *child = g_variant_get_child_value(v, i);
            if (i > 0)
                g_string_append_c(s, ',');
            if (object) {
                GVariant *key = g_variant_get_child_value(child, 0);
                GVariant *val = g_variant_get_child_value(child, 1);
                json_string(s, g_variant_get_string(key, NULL));
                g_string_append_c(s, ':');
                json_value(s, val);
                g_variant_unref(key);
                g_variant_unref(val);
            } else {
                json_value(s, child);
            }
            g_variant_unref(child);
        }
        g_string_append_c(s, object ? '}' : ']');
        break;
    }
    default:
        g_string_append(s, "null");
    }
}

PROCREG_API int procreg_stats_to_json(procreg *reg, char **out,
                                      GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL, PROCREG_EINVAL);
    *out = NULL;
    GVariant *stats = NULL;
    int rc = procreg_stats(reg, &stats, error);
    if (rc != 0)
        return rc;
    GString *s = g_string_new(NULL);
    json_value(s, stats);
    g_variant_unref(stats);
    *out = g_string_free(s, FALSE);
    return 0;
}
