/*
 * The group workloads (duplicate keys), on one group of --keys members
 * owned by this process, created for the cell and removed after it:
 *
 *   group-churn    join a member and leave it again, by id (one op: both),
 *                  every thread on the same big group;
 *   dispatch       procreg_dispatch() over the big group (one op: one
 *                  member's callback) on thread 0, while thread 1 does
 *                  group-churn on the same group;
 *   group-members  procreg_members() of a 10-member group (one op: the
 *                  list, freed), with the CPU time of a
 *                  procreg_lookup_entry() of a unique entry, timed right
 *                  after, as the reference.
 *
 * The baselines do the same work without procreg: "raw-ckht" is a ck_ht of
 * groups, each a plain array of member pointers plus a GHashTable from
 * member id to slot (a leave moves the last member into the hole), one
 * writer at a time under a mutex, readers in a ck_epoch section, removed
 * members and outgrown arrays retired through the epoch; "raw-ghash" is
 * the same arrays in a GHashTable under a GRWLock (a dispatch holds it
 * for reading).  They are what a program would write for itself; they do
 * not promise what procreg_dispatch() does (a member moved by a leave may
 * be missed or seen twice), nor events, owners or liveness.
 */
#include "bench.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>

#if defined(BENCH_HAVE_CK)
#include <ck_epoch.h>
#include <ck_ht.h>
#include <ck_pr.h>
#endif

#define GROUP_NS "bench-groups"
#define BIG "big"
#define SMALL "ten"
#define SMALL_SIZE 10

/* ------------------------------------------------------------------------ */
/* The baselines                                                            */

typedef struct {
#if defined(BENCH_HAVE_CK)
    ck_epoch_entry_t epoch_entry; /* first: retired members are cast back */
#endif
    procreg_member m; /* what a callback gets */
    size_t slot;      /* writer: its index in the array */
} raw_member;

typedef struct {
    raw_member **slot;
    size_t cap;
} raw_array;

typedef struct {
    raw_array *arr;    /* readers load it (and len) */
    size_t len;
    GHashTable *index; /* set of raw_member* by id; writer only */
} raw_group;

typedef struct {
    bool ck;
    GRWLock lock;              /* raw-ghash: everything */
    pthread_mutex_t write_lock; /* raw-ckht: the writer */
    GHashTable *groups;        /* raw-ghash: name -> raw_group* */
#if defined(BENCH_HAVE_CK)
    ck_ht_t ht;                /* raw-ckht: name -> raw_group* */
    ck_epoch_t epoch;
    GPtrArray *records;        /* every epoch record, freed at the end */
    pthread_mutex_t records_lock;
#endif
    uint64_t next_id;
    unsigned int retired; /* raw-ckht: under the writer's mutex */
    procreg_owner self;
} raw_groups;

#if defined(BENCH_HAVE_CK)
static void *ht_malloc(size_t r)
{
    return malloc(r);
}

/* The table holds two groups and never grows: nothing to defer. */
static void ht_free(void *p, size_t b, bool defer)
{
    (void)b;
    (void)defer;
    free(p);
}

static struct ck_malloc ht_allocator = {.malloc = ht_malloc,
                                        .free = ht_free};

static void member_free_cb(ck_epoch_entry_t *e)
{
    free(e);
}

typedef struct {
    ck_epoch_entry_t epoch_entry;
    raw_array *arr;
} retired_array;

static void array_free_cb(ck_epoch_entry_t *e)
{
    retired_array *r = (retired_array *)(void *)e;
    free(r->arr->slot);
    free(r->arr);
    free(r);
}
#endif

static guint member_hash(gconstpointer p)
{
    uint64_t id = ((const raw_member *)p)->m.id;
    return (guint)(id ^ (id >> 32));
}

static gboolean member_equal(gconstpointer a, gconstpointer b)
{
    return ((const raw_member *)a)->m.id == ((const raw_member *)b)->m.id;
}

static raw_group *raw_group_new(void)
{
    raw_group *g = g_new0(raw_group, 1);
    g->arr = g_new0(raw_array, 1);
    g->index = g_hash_table_new(member_hash, member_equal);
    return g;
}

static raw_groups *raw_groups_new(bool ck)
{
    raw_groups *r = g_new0(raw_groups, 1);
    r->ck = ck;
    procreg_owner_self(&r->self);
    g_rw_lock_init(&r->lock);
    pthread_mutex_init(&r->write_lock, NULL);
#if defined(BENCH_HAVE_CK)
    if (ck) {
        ck_ht_init(&r->ht, CK_HT_MODE_BYTESTRING, NULL, &ht_allocator, 16, 1);
        ck_epoch_init(&r->epoch);
        r->records = g_ptr_array_new();
        pthread_mutex_init(&r->records_lock, NULL);
    }
#endif
    if (!ck)
        r->groups = g_hash_table_new(g_str_hash, g_str_equal);
    const char *names[] = {BIG, SMALL};
    for (size_t i = 0; i < 2; i++) {
        raw_group *g = raw_group_new();
#if defined(BENCH_HAVE_CK)
        if (ck) {
            ck_ht_entry_t e;
            ck_ht_hash_t h;
            ck_ht_hash(&h, &r->ht, names[i], strlen(names[i]));
            ck_ht_entry_set(&e, h, names[i], (uint16_t)strlen(names[i]), g);
            ck_ht_put_spmc(&r->ht, h, &e);
            continue;
        }
#endif
        g_hash_table_insert(r->groups, (gpointer)names[i], g);
    }
    return r;
}

static raw_group *raw_find(raw_groups *r, const char *name)
{
#if defined(BENCH_HAVE_CK)
    if (r->ck) {
        ck_ht_entry_t e;
        ck_ht_hash_t h;
        ck_ht_hash(&h, &r->ht, name, strlen(name));
        ck_ht_entry_key_set(&e, name, (uint16_t)strlen(name));
        return ck_ht_get_spmc(&r->ht, h, &e) ? ck_ht_entry_value(&e) : NULL;
    }
#endif
    return g_hash_table_lookup(r->groups, name);
}

static void raw_group_free(raw_group *g)
{
    for (size_t i = 0; i < g->len; i++)
        free(g->arr->slot[i]);
    free(g->arr->slot);
    g_free(g->arr);
    g_hash_table_unref(g->index);
    g_free(g);
}

static void raw_groups_free(raw_groups *r)
{
    raw_group_free(raw_find(r, BIG));
    raw_group_free(raw_find(r, SMALL));
#if defined(BENCH_HAVE_CK)
    if (r->ck) {
        ck_ht_destroy(&r->ht);
        for (guint i = 0; i < r->records->len; i++)
            free(r->records->pdata[i]);
        g_ptr_array_unref(r->records);
        pthread_mutex_destroy(&r->records_lock);
    }
#endif
    if (!r->ck)
        g_hash_table_unref(r->groups);
    pthread_mutex_destroy(&r->write_lock);
    g_rw_lock_clear(&r->lock);
    g_free(r);
}

static void *raw_thread_begin(raw_groups *r)
{
#if defined(BENCH_HAVE_CK)
    if (r->ck) {
        ck_epoch_record_t *rec = NULL;
        if (posix_memalign((void **)&rec, 64, sizeof *rec) != 0)
            g_error("raw groups: out of memory");
        ck_epoch_register(&r->epoch, rec, NULL);
        pthread_mutex_lock(&r->records_lock);
        g_ptr_array_add(r->records, rec);
        pthread_mutex_unlock(&r->records_lock);
        return rec;
    }
#endif
    (void)r;
    return NULL;
}

static void raw_thread_end(raw_groups *r, void *rec)
{
#if defined(BENCH_HAVE_CK)
    if (r->ck) {
        ck_epoch_barrier(rec);
        ck_epoch_unregister(rec);
    }
#else
    (void)r;
    (void)rec;
#endif
}

static void raw_write_lock(raw_groups *r)
{
    if (r->ck)
        pthread_mutex_lock(&r->write_lock);
    else
        g_rw_lock_writer_lock(&r->lock);
}

static void raw_write_unlock(raw_groups *r)
{
    if (r->ck)
        pthread_mutex_unlock(&r->write_lock);
    else
        g_rw_lock_writer_unlock(&r->lock);
}

/* Join: a new member at the end; the array doubles when full. */
static uint64_t raw_join(raw_groups *r, void *rec, const char *name)
{
    raw_member *m = calloc(1, sizeof *m);
    if (m == NULL)
        g_error("raw groups: out of memory");
    m->m.owner = r->self;
    m->m.joined_at = g_get_real_time();
    raw_write_lock(r);
    raw_group *g = raw_find(r, name);
    m->m.id = ++r->next_id;
    if (g->len == g->arr->cap) {
        raw_array *bigger = g_new0(raw_array, 1);
        bigger->cap = g->arr->cap ? 2 * g->arr->cap : 16;
        bigger->slot = malloc(bigger->cap * sizeof(raw_member *));
        memcpy(bigger->slot, g->arr->slot, g->len * sizeof(raw_member *));
        raw_array *old = g->arr;
#if defined(BENCH_HAVE_CK)
        if (r->ck) {
            ck_pr_store_ptr(&g->arr, bigger);
            retired_array *ra = malloc(sizeof *ra);
            ra->arr = old;
            ck_epoch_call(rec, &ra->epoch_entry, array_free_cb);
        }
#endif
        if (!r->ck) {
            g->arr = bigger;
            free(old->slot);
            g_free(old);
        }
    }
    m->slot = g->len;
#if defined(BENCH_HAVE_CK)
    ck_pr_store_ptr(&g->arr->slot[g->len], m);
    ck_pr_store_64((uint64_t *)&g->len, g->len + 1);
#else
    g->arr->slot[g->len++] = m;
#endif
    g_hash_table_add(g->index, m);
    raw_write_unlock(r);
    (void)rec;
    return m->m.id;
}

/* Leave by id: the last member moves into the hole. */
static bool raw_leave(raw_groups *r, void *rec, const char *name, uint64_t id)
{
    raw_write_lock(r);
    raw_group *g = raw_find(r, name);
    raw_member probe = {.m.id = id};
    raw_member *m = g_hash_table_lookup(g->index, &probe);
    if (m == NULL) {
        raw_write_unlock(r);
        return false;
    }
    size_t i = m->slot;
    raw_member *last = g->arr->slot[g->len - 1];
    g_hash_table_remove(g->index, m);
    last->slot = i;
#if defined(BENCH_HAVE_CK)
    ck_pr_store_ptr(&g->arr->slot[i], last);
    ck_pr_store_64((uint64_t *)&g->len, g->len - 1);
    if (r->ck) {
        /* As raw-ckht's entries: a poll every 64 retirements. */
        ck_epoch_call(rec, &m->epoch_entry, member_free_cb);
        if ((++r->retired & 63) == 0)
            ck_epoch_poll(rec);
    }
#else
    g->arr->slot[i] = last;
    g->len--;
#endif
    raw_write_unlock(r);
    if (!r->ck)
        free(m);
    return true;
}

/* Call @fn for each member (the iteration a program would write). */
static size_t raw_dispatch(raw_groups *r, void *rec, const char *name,
                           procreg_member_fn fn, void *data)
{
    size_t n = 0;
#if defined(BENCH_HAVE_CK)
    if (r->ck) {
        ck_epoch_begin(rec, NULL);
        raw_group *g = raw_find(r, name);
        raw_array *a = ck_pr_load_ptr(&g->arr);
        size_t len = ck_pr_load_64((uint64_t *)&g->len);
        for (size_t i = 0; i < len && i < a->cap; i++) {
            raw_member *m = ck_pr_load_ptr(&a->slot[i]);
            if (m == NULL)
                continue;
            n++;
            if (!fn(&m->m, data))
                break;
        }
        ck_epoch_end(rec, NULL);
        return n;
    }
#endif
    (void)rec;
    g_rw_lock_reader_lock(&r->lock);
    raw_group *g = raw_find(r, name);
    for (size_t i = 0; i < g->len; i++) {
        n++;
        if (!fn(&g->arr->slot[i]->m, data))
            break;
    }
    g_rw_lock_reader_unlock(&r->lock);
    return n;
}

static bool copy_member(const procreg_member *m, gpointer data)
{
    GArray *out = data;
    procreg_member c = *m;
    if (c.metadata != NULL)
        g_variant_ref(c.metadata);
    g_array_append_val(out, c);
    return true;
}

/* ------------------------------------------------------------------------ */
/* The workloads on one target                                              */

typedef struct {
    bench_context *ctx;
    const bench_workload *w;
    raw_groups *raw; /* baselines */
    procreg_key *big, *small;
    atomic_bool stop;
    pthread_barrier_t barrier;
} gstate;

typedef struct {
    gstate *g;
    int tid;
    bool churn; /* dispatch: the writer beside the dispatcher */
    void *rec;  /* raw-ckht: this thread's epoch record */
    uint64_t ops, errors;
    char *error_example;
    double t_start, t_end, cpu_start, cpu_end;
    bench_hist hist;
} gworker;

G_GNUC_PRINTF(2, 3)
static void gw_error(gworker *w, const char *fmt, ...)
{
    w->errors++;
    if (w->error_example == NULL) {
        va_list ap;
        va_start(ap, fmt);
        w->error_example = g_strdup_vprintf(fmt, ap);
        va_end(ap);
    }
}

static bool is_raw(const gstate *g)
{
    return g->ctx->target->kind != BENCH_TARGET_PROCREG;
}

/* One join and its leave. */
static void churn_pair(gworker *w)
{
    gstate *g = w->g;
    if (is_raw(g)) {
        uint64_t id = raw_join(g->raw, w->rec, BIG);
        if (!raw_leave(g->raw, w->rec, BIG, id))
            gw_error(w, "raw leave of member %" G_GUINT64_FORMAT " failed",
                     id);
        return;
    }
    procreg *reg = g->ctx->target->reg;
    procreg_member m = {0};
    int rc = procreg_join_key(reg, g->big, NULL, NULL, &m, NULL);
    size_t removed = 0;
    if (rc == 0)
        rc = procreg_leave_key(reg, g->big, m.id, 0, &removed, NULL);
    if (rc != 0 || removed != 1)
        gw_error(w, "join+leave: %d (%s), removed %zu", rc,
                 procreg_strerror(rc), removed);
    procreg_member_clear(&m);
}

/* A dispatch's callback reads its member, as a real one does (the owner
 * to write to); the pid sum keeps the read from being optimised away. */
typedef struct {
    size_t seen;
    uint64_t pids;
} visit_sum;

static bool count_visit(const procreg_member *m, gpointer data)
{
    visit_sum *v = data;
    v->seen++;
    v->pids += (uint64_t)m->owner.pid;
    return true;
}

/* One dispatch over the big group; the members visited. */
static size_t dispatch_once(gworker *w)
{
    gstate *g = w->g;
    visit_sum v = {0, 0};
    size_t calls = 0;
    if (is_raw(g)) {
        calls = raw_dispatch(g->raw, w->rec, BIG, count_visit, &v);
    } else {
        int rc = procreg_dispatch_key(g->ctx->target->reg, g->big,
                                      count_visit, &v, &calls, NULL);
        if (rc != 0)
            gw_error(w, "dispatch: %d (%s)", rc, procreg_strerror(rc));
    }
    size_t seen = v.seen;
    if (v.pids == 0 && seen > 0)
        gw_error(w, "dispatch: members without an owner");
    /* Every member of the cell was there throughout. */
    if (seen != calls || seen < g->ctx->ds->n_keys)
        gw_error(w, "dispatch visited %zu of %zu members (%zu calls)", seen,
                 g->ctx->ds->n_keys, calls);
    return seen;
}

static void members_once(gworker *w)
{
    gstate *g = w->g;
    if (is_raw(g)) {
        GArray *out = procreg_member_array_new();
        raw_dispatch(g->raw, w->rec, SMALL, copy_member, out);
        if (out->len != SMALL_SIZE)
            gw_error(w, "raw members: %u", out->len);
        g_array_unref(out);
        return;
    }
    procreg_member *all = NULL;
    size_t n = 0;
    int rc = procreg_members_key(g->ctx->target->reg, g->small, &all, &n,
                                 NULL);
    if (rc != 0 || n != SMALL_SIZE)
        gw_error(w, "members: %d, %zu", rc, n);
    procreg_members_free(all, n);
}

static void *gworker_main(void *arg)
{
    gworker *w = arg;
    gstate *g = w->g;
    const bench_params *p = g->ctx->params;
    uint64_t mask = p->sample_every - 1;
    if (is_raw(g))
        w->rec = raw_thread_begin(g->raw);
    pthread_barrier_wait(&g->barrier);
    w->t_start = bench_now();
    w->cpu_start = bench_thread_cpu();
    for (uint64_t i = 0; !atomic_load_explicit(&g->stop, memory_order_relaxed);
         i++) {
        if (p->ops && w->ops >= p->ops)
            break;
        bool timed = (i & mask) == 0;
        uint64_t t0 = timed ? bench_ticks_begin() : 0;
        uint64_t n = 1;
        if (w->churn || g->w->id == BENCH_W_GROUP_CHURN)
            churn_pair(w);
        else if (g->w->id == BENCH_W_DISPATCH)
            n = dispatch_once(w);
        else
            members_once(w);
        if (timed && n > 0) /* dispatch: per member */
            bench_hist_add_ticks(&w->hist, (bench_ticks_end() - t0) / n);
        if (!w->churn)
            w->ops += n;
    }
    w->t_end = bench_now();
    w->cpu_end = bench_thread_cpu();
    if (is_raw(g))
        raw_thread_end(g->raw, w->rec);
    return NULL;
}

/* One repetition with @threads workers; Mops/s of the measured ones. */
static double run_rep(gstate *g, int threads, bench_result *r,
                      bench_hist *hist, double *cpu_ns)
{
    const bench_params *p = g->ctx->params;
    gworker *ws = g_new0(gworker, threads);
    pthread_t *tids = g_new(pthread_t, threads);
    atomic_store(&g->stop, false);
    pthread_barrier_init(&g->barrier, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        ws[i] = (gworker){.g = g, .tid = i,
                          .churn = g->w->id == BENCH_W_DISPATCH && i > 0};
        pthread_create(&tids[i], NULL, gworker_main, &ws[i]);
    }
    pthread_barrier_wait(&g->barrier);
    if (p->ops == 0) {
        g_usleep((gulong)(p->seconds * 1e6));
        atomic_store(&g->stop, true);
    }
    uint64_t ops = 0;
    double t0 = INFINITY, t1 = 0, cpu = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tids[i], NULL);
        /* With --ops, the dispatcher's partner stops when it does. */
        if (i == 0 && p->ops)
            atomic_store(&g->stop, true);
        r->errors += ws[i].errors;
        if (ws[i].error_example && !r->error_example)
            r->error_example = ws[i].error_example;
        else
            g_free(ws[i].error_example);
        if (ws[i].churn)
            continue;
        ops += ws[i].ops;
        t0 = MIN(t0, ws[i].t_start);
        t1 = MAX(t1, ws[i].t_end);
        cpu += ws[i].cpu_end - ws[i].cpu_start;
        bench_hist_merge(hist, &ws[i].hist);
    }
    pthread_barrier_destroy(&g->barrier);
    g_free(ws);
    g_free(tids);
    *cpu_ns = ops ? cpu * 1e9 / (double)ops : NAN;
    return t1 > t0 ? (double)ops / (t1 - t0) / 1e6 : 0;
}

/* ---- the cell's groups ---- */

static int setup(gstate *g, GError **error)
{
    size_t n = g->ctx->ds->n_keys;
    if (is_raw(g)) {
        g->raw = raw_groups_new(g->ctx->target->kind == BENCH_TARGET_RAW_CKHT);
        void *rec = raw_thread_begin(g->raw);
        for (size_t i = 0; i < n; i++)
            raw_join(g->raw, rec, BIG);
        for (size_t i = 0; i < SMALL_SIZE; i++)
            raw_join(g->raw, rec, SMALL);
        raw_thread_end(g->raw, rec);
        return 0;
    }
    int rc = procreg_key_new(GROUP_NS, BIG, &g->big, error);
    if (rc == 0)
        rc = procreg_key_new(GROUP_NS, SMALL, &g->small, error);
    procreg *reg = g->ctx->target->reg;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = procreg_join_key(reg, g->big, NULL, NULL, NULL, error);
    for (size_t i = 0; rc == 0 && i < SMALL_SIZE; i++)
        rc = procreg_join_key(reg, g->small, NULL, NULL, NULL, error);
    return rc;
}

static void teardown(gstate *g)
{
    if (g->raw != NULL)
        raw_groups_free(g->raw);
    if (g->big != NULL) {
        procreg_leave_key(g->ctx->target->reg, g->big, 0, 0, NULL, NULL);
        procreg_leave_key(g->ctx->target->reg, g->small, 0, 0, NULL, NULL);
    }
    procreg_key_unref(g->big);
    procreg_key_unref(g->small);
}

/* group-members' reference: CPU ns per lookup_entry of a registered key
 * (CPU time, as the cell's: a loaded machine stretches both alike). */
static double lookup_entry_cpu_ns(gstate *g, uint64_t n)
{
    bench_target *t = g->ctx->target;
    const bench_key *k = &g->ctx->ds->keys[0];
    bench_target_thread tt = {0};
    bench_target_thread_begin(t, &tt);
    double start = bench_thread_cpu();
    for (uint64_t i = 0; i < n; i++) {
        procreg_entry e = {0};
        switch (t->kind) {
        case BENCH_TARGET_PROCREG:
            procreg_lookup_entry_key(t->reg, k->pkey, &e, NULL);
            break;
        case BENCH_TARGET_RAW_GHASH:
            raw_ghash_lookup_entry(t->rg, k->ns, k->name, &e);
            break;
        case BENCH_TARGET_RAW_CKHT:
#if defined(BENCH_HAVE_CK)
            raw_ckht_lookup_entry(t->rc, &tt, k->ns, k->name, &e);
#endif
            break;
        case BENCH_TARGET_RAW_LMDB:
#if defined(BENCH_HAVE_LMDB)
            raw_lmdb_lookup_entry(t->rl, &tt, k->ns, k->name, &e);
#endif
            break;
        }
        procreg_entry_clear(&e);
    }
    double ns = (bench_thread_cpu() - start) * 1e9 / (double)n;
    bench_target_thread_end(t, &tt);
    return ns;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    double *s = g_memdup2(v, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    double m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    g_free(s);
    return m;
}

void bench_run_groups(bench_context *ctx, const bench_workload *wl,
                      int threads, bench_result *r)
{
    const bench_params *p = ctx->params;
    r->workload = wl;
    r->target_kind = ctx->target->kind;
    r->keys = ctx->ds->n_keys;
    r->dist = "-";
    r->threads = threads;
    r->reps = p->reps;
    r->mops = g_new0(double, p->reps);
    r->items_per_op = NAN;
    r->mem_rss_per_entry = r->mem_heap_per_entry = NAN;
    r->mem_backend_per_entry = NAN;
    r->ratio_reference = NAN;
    gstate *g = g_new0(gstate, 1);
    g->ctx = ctx;
    g->w = wl;
    GError *error = NULL;
    if (setup(g, &error) != 0) {
        r->skipped = g_strdup_printf("cannot fill the group: %s",
                                     error ? error->message : "?");
        g_clear_error(&error);
        teardown(g);
        g_free(g);
        return;
    }
    bench_hist hist = {0}, scratch = {0};
    double cpu_scratch;
    if (p->warmup > 0) {
        bench_params warm = *p;
        warm.seconds = p->warmup;
        const bench_params *saved = ctx->params;
        ctx->params = &warm;
        run_rep(g, threads, r, &scratch, &cpu_scratch);
        ctx->params = saved;
    }
    double *cpu = g_new0(double, p->reps);
    for (int rep = 0; rep < p->reps; rep++)
        r->mops[rep] = run_rep(g, threads, r, &hist, &cpu[rep]);
    r->mops_median = median(r->mops, p->reps);
    double lo = INFINITY, hi = 0;
    for (int rep = 0; rep < p->reps; rep++) {
        lo = MIN(lo, r->mops[rep]);
        hi = MAX(hi, r->mops[rep]);
    }
    r->mops_min = lo;
    r->mops_max = hi;
    r->ns_per_op = r->mops_median > 0 ? threads * 1e3 / r->mops_median : NAN;
    if (wl->id == BENCH_W_DISPATCH)
        r->ns_per_op = r->mops_median > 0 ? 1e3 / r->mops_median : NAN;
    r->cpu_ns_per_op = median(cpu, p->reps);
    g_free(cpu);
    r->p50 = bench_hist_percentile(&hist, 0.50);
    r->p99 = bench_hist_percentile(&hist, 0.99);
    r->p999 = bench_hist_percentile(&hist, 0.999);
    r->samples = hist.count;
    if (wl->id == BENCH_W_GROUP_MEMBERS && r->mops_median > 0)
        r->ratio_reference =
            r->cpu_ns_per_op /
            lookup_entry_cpu_ns(g, p->ops ? p->ops
                                          : (uint64_t)(r->mops_median *
                                                       p->seconds * 1e6));
    teardown(g);
    g_free(g);
}
