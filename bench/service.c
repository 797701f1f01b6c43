/*
 * Service-layer latencies: how long after a registration a waiter wakes
 * (procreg_wait_for_key) or a subscriber's callback runs (procreg_subscribe).
 *
 * Both run cycles one at a time (ping-pong), so each sample is the latency
 * of an otherwise idle registry: a cycle registers one key of thread 0's
 * write pool, waits for the other side to see it, then unregisters it.
 * Every cycle is timed (rdtsc or clock_gettime, as the header says); the
 * start stamp is taken just before the register call, on the registering
 * thread, and the end stamp on the waking side (the TSC is invariant and
 * shared by all cores, so the two may differ).
 */
#include "bench.h"

#if defined(BENCH_HAVE_SERVICE)

#include <math.h>
#include <pthread.h>
#include <sched.h>

typedef struct {
    bench_context *ctx;
    const bench_params *p;
    atomic_uint_fast64_t go;    /* cycle the waiter may start; UINT64_MAX: stop */
    atomic_uint_fast64_t armed; /* cycle the waiter is about to wait in */
    atomic_uint_fast64_t done;  /* cycle the waiter finished */
    atomic_uint_fast64_t t0;    /* register stamp of the current cycle */
    atomic_uint_fast64_t events; /* watch: events the callback saw */
    uint64_t errors;
    char *error_example;
    bench_hist hist;            /* written by the waking side only */
} service_state;

#define STOP UINT64_MAX

static void spin_until(atomic_uint_fast64_t *v, uint64_t want)
{
    while (atomic_load_explicit(v, memory_order_acquire) < want)
        sched_yield();
}

static void service_error(service_state *st, const char *what, int rc)
{
    st->errors++;
    if (!st->error_example)
        st->error_example = g_strdup_printf("%s returned %d (%s)", what, rc,
                                            procreg_strerror(rc));
}

static const bench_key *cycle_key(service_state *st, uint64_t i)
{
    const bench_dataset *ds = st->ctx->ds;
    return &ds->pool[i % ds->pool_per_thread];
}

/* ---- wait ---- */

static void *waiter_main(void *arg)
{
    service_state *st = arg;
    procreg *reg = st->ctx->target->reg;
    for (uint64_t i = 1;; i++) {
        uint64_t go;
        while ((go = atomic_load_explicit(&st->go, memory_order_acquire)) < i)
            sched_yield();
        if (go == STOP)
            break;
        atomic_store_explicit(&st->armed, i, memory_order_release);
        int rc = procreg_wait_for_key(reg, cycle_key(st, i)->pkey, 5000, NULL,
                                      NULL, NULL);
        uint64_t t1 = bench_ticks_end();
        if (rc == 0)
            bench_hist_add_ticks(&st->hist,
                                 t1 - atomic_load(&st->t0));
        else
            service_error(st, "procreg_wait_for_key", rc);
        atomic_store_explicit(&st->done, i, memory_order_release);
    }
    return NULL;
}

/* One repetition of wait cycles; returns cycles per second. */
static double wait_rep(service_state *st, double seconds, uint64_t ops,
                       uint64_t *next)
{
    procreg *reg = st->ctx->target->reg;
    double start = bench_now(), now = start;
    uint64_t n = 0;
    while (ops ? n < ops : (now = bench_now()) - start < seconds) {
        uint64_t i = ++*next;
        const bench_key *k = cycle_key(st, i);
        atomic_store_explicit(&st->go, i, memory_order_release);
        spin_until(&st->armed, i);
        /* Let the waiter get into its sleep: the register must wake it,
         * not find it still on its way in. */
        g_usleep(200);
        atomic_store(&st->t0, bench_ticks_begin());
        int rc = procreg_register_key(reg, k->pkey, NULL, NULL, NULL, NULL);
        if (rc != 0)
            service_error(st, "register", rc);
        spin_until(&st->done, i);
        rc = procreg_unregister_key(reg, k->pkey, 0, NULL);
        if (rc != 0)
            service_error(st, "unregister", rc);
        n++;
    }
    now = bench_now();
    return (double)n / (now - start);
}

/* ---- watch ---- */

static void watch_cb(procreg *reg, const procreg_event *ev, gpointer data)
{
    (void)reg;
    service_state *st = data;
    if (ev->kind == PROCREG_EVENT_REGISTERED)
        bench_hist_add_ticks(&st->hist,
                             bench_ticks_end() - atomic_load(&st->t0));
    atomic_fetch_add_explicit(&st->events, 1, memory_order_release);
}

static double watch_rep(service_state *st, double seconds, uint64_t ops,
                        uint64_t *next)
{
    procreg *reg = st->ctx->target->reg;
    double start = bench_now(), now = start;
    uint64_t n = 0;
    while (ops ? n < ops : (now = bench_now()) - start < seconds) {
        uint64_t i = ++*next;
        const bench_key *k = cycle_key(st, i);
        uint64_t seen = atomic_load(&st->events);
        atomic_store(&st->t0, bench_ticks_begin());
        int rc = procreg_register_key(reg, k->pkey, NULL, NULL, NULL, NULL);
        if (rc != 0) {
            service_error(st, "register", rc);
            break;
        }
        spin_until(&st->events, seen + 1);
        rc = procreg_unregister_key(reg, k->pkey, 0, NULL);
        if (rc != 0) {
            service_error(st, "unregister", rc);
            break;
        }
        /* The UNREGISTERED event too, so the next cycle starts idle. */
        spin_until(&st->events, seen + 2);
        n++;
    }
    now = bench_now();
    return (double)n / (now - start);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void bench_run_service(bench_context *ctx, const bench_workload *wl,
                       bench_result *r)
{
    const bench_params *p = ctx->params;
    r->workload = wl;
    r->target_kind = ctx->target->kind;
    r->keys = ctx->ds->n_keys;
    r->dist = "-";
    r->threads = wl->fixed_threads;
    r->reps = p->reps;
    r->mops = g_new0(double, p->reps);
    r->items_per_op = NAN;
    r->mem_rss_per_entry = r->mem_heap_per_entry = NAN;
    r->mem_backend_per_entry = NAN;
    r->ratio_reference = NAN;
    r->cpu_ns_per_op = NAN;
    if (ctx->target->kind != BENCH_TARGET_PROCREG) {
        r->skipped = g_strdup("a procreg feature; no baseline");
        return;
    }
    service_state *st = g_new0(service_state, 1);
    st->ctx = ctx;
    st->p = p;
    uint64_t next = 0;
    pthread_t waiter;
    uint64_t sub = 0;
    GError *error = NULL;
    if (wl->id == BENCH_W_WAIT) {
        pthread_create(&waiter, NULL, waiter_main, st);
    } else if (procreg_subscribe(ctx->target->reg, PROCREG_NS_PRODUCTION,
                                 NULL, watch_cb, st, NULL, NULL, &sub,
                                 &error) < 0) {
        r->skipped = g_strdup(error->message);
        g_error_free(error);
        g_free(st);
        return;
    }
    /* Warm-up: a few cycles, not recorded. */
    if (p->warmup > 0) {
        if (wl->id == BENCH_W_WAIT)
            wait_rep(st, p->warmup, 0, &next);
        else
            watch_rep(st, p->warmup, 0, &next);
    }
    memset(&st->hist, 0, sizeof st->hist); /* the waking side is idle */
    /* A cycle is a whole round trip (and wait sleeps 200 us in it): with
     * --ops, run one cycle per 16 ops. */
    uint64_t cycles = p->ops ? MAX(p->ops / 16, (uint64_t)1) : 0;
    for (int rep = 0; rep < p->reps && !st->errors; rep++)
        r->mops[rep] = (wl->id == BENCH_W_WAIT
                            ? wait_rep(st, p->seconds, cycles, &next)
                            : watch_rep(st, p->seconds, cycles, &next)) /
                       1e6;
    if (wl->id == BENCH_W_WAIT) {
        atomic_store_explicit(&st->go, STOP, memory_order_release);
        pthread_join(waiter, NULL);
    } else {
        procreg_unsubscribe(ctx->target->reg, sub);
    }
    double *sorted = g_memdup2(r->mops, sizeof(double) * (size_t)r->reps);
    qsort(sorted, (size_t)r->reps, sizeof(double), cmp_double);
    r->mops_min = sorted[0];
    r->mops_max = sorted[r->reps - 1];
    r->mops_median = r->reps % 2
                         ? sorted[r->reps / 2]
                         : (sorted[r->reps / 2 - 1] + sorted[r->reps / 2]) / 2;
    g_free(sorted);
    r->ns_per_op = r->mops_median > 0 ? 1e3 / r->mops_median : NAN;
    r->p50 = bench_hist_percentile(&st->hist, 0.50);
    r->p99 = bench_hist_percentile(&st->hist, 0.99);
    r->p999 = bench_hist_percentile(&st->hist, 0.999);
    r->samples = st->hist.count;
    r->errors = st->errors;
    r->error_example = st->error_example;
    g_free(st);
}

#else /* !BENCH_HAVE_SERVICE */

void bench_run_service(bench_context *ctx, const bench_workload *wl,
                       bench_result *r)
{
    (void)ctx;
    r->workload = wl;
    r->skipped = g_strdup("this build's procreg has no service layer");
}

#endif
