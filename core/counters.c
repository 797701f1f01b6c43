/*
 * Counters: the clock for durations, and the per-thread counter blocks
 * every call counts itself in (stats.c reports them).  The bottom layer
 * of the service layer: it calls nothing above it.
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

