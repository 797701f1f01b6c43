/*
 * Telemetry handlers.
 *
 * The handler list is an immutable snapshot behind an atomic pointer, so
 * emitting takes no lock and no shared read-modify-write.  Detaching
 * publishes a new snapshot and reclaims the old one only when no thread
 * can still be reading it, by an epoch scheme over the per-thread counter
 * blocks: a thread about to read the snapshot stores the current epoch in
 * its block (tel_active), then loads the snapshot; a detacher publishes
 * the new snapshot, advances the epoch, and waits until every block is
 * outside (0) or entered at the new epoch or later.  The two stores and
 * two loads of that handshake are seq_cst, so one side always sees the
 * other (no standalone fences: ThreadSanitizer cannot model those).
 *
 * With no handler attached, nothing here runs: the PROCREG_SLOW_TELEMETRY
 * bit of procreg.slow is clear and the lookup path sees only that.
 */
#include "internal.h"

#include <sched.h>
#include <string.h>

typedef struct {
    uint64_t id;
    unsigned ops;
    procreg_telemetry_fn fn;
    gpointer user_data;
    GDestroyNotify destroy;
} handler;

typedef struct {
    guint n;
    handler h[];
} snapshot;

typedef struct {
    snapshot *snap;
    uint64_t epoch; /* readers entered before this epoch may hold it */
    handler gone;   /* destroy runs when reclaimed (fn NULL: none) */
} retired;

struct procreg_telemetry {
    pthread_mutex_t lock; /* writers: attach and detach */
    _Atomic(snapshot *) current;
    _Atomic uint64_t epoch;
    GArray *retired; /* retired */
    uint64_t next_id;
};

PROCREG_API const char *procreg_op_name(procreg_op op)
{
    switch (op) {
    case PROCREG_OP_LOOKUP: return "lookup";
    case PROCREG_OP_LOOKUP_ENTRY: return "lookup_entry";
    case PROCREG_OP_REGISTER: return "register";
    case PROCREG_OP_UNREGISTER: return "unregister";
    case PROCREG_OP_UPDATE: return "update";
    case PROCREG_OP_LIST: return "list";
    case PROCREG_OP_FIND: return "find";
    case PROCREG_OP_DROP_NAMESPACE: return "drop_namespace";
    case PROCREG_OP_CLEANUP: return "cleanup";
    case PROCREG_OP_WAIT: return "wait";
    case PROCREG_OP_JOIN: return "join";
    case PROCREG_OP_LEAVE: return "leave";
    case PROCREG_OP_MEMBERS: return "members";
    case PROCREG_OP_DISPATCH: return "dispatch";
    case PROCREG_OP_COUNT: break;
    }
    return "unknown";
}

PROCREG_INTERNAL procreg_telemetry *procreg_telemetry_new(void)
{
    procreg_telemetry *t = g_new0(procreg_telemetry, 1);
    pthread_mutex_init(&t->lock, NULL);
    atomic_init(&t->current, g_malloc0(sizeof(snapshot)));
    atomic_init(&t->epoch, 1);
    t->retired = g_array_new(FALSE, FALSE, sizeof(retired));
    t->next_id = 1;
    return t;
}

/* ---- emitting ---- */

PROCREG_INTERNAL void procreg_telemetry_emit(procreg *reg, procreg_tblock *b,
                                             const procreg_telemetry_event *ev)
{
    procreg_telemetry *t = reg->telemetry;
    /* Calls made by a handler are not reported again; threads past the
     * block limit share a block and cannot mark themselves: skip them. */
    if (b->shared ||
        atomic_load_explicit(&b->tel_active, memory_order_relaxed) != 0)
        return;
    uint64_t e = atomic_load_explicit(&t->epoch, memory_order_relaxed);
    atomic_store_explicit(&b->tel_active, e, memory_order_seq_cst);
    snapshot *s = atomic_load_explicit(&t->current, memory_order_seq_cst);
    for (guint i = 0; i < s->n; i++)
        if (s->h[i].ops & PROCREG_OP_BIT(ev->op))
            s->h[i].fn(reg, ev, s->h[i].user_data);
    atomic_store_explicit(&b->tel_active, 0, memory_order_release);
}

PROCREG_INTERNAL void procreg_op_done_slow(procreg *reg, procreg_tblock *b,
                                           procreg_op op, int rc, uint64_t t0,
                                           const char *ns, const char *name,
                                           uint64_t count)
{
    uint64_t dur = t0 != 0 ? procreg_since_ns(t0) : 0;
    procreg_tblock_record(b, op, rc, t0 != 0, dur);
    if (atomic_load_explicit(&reg->slow, memory_order_relaxed) &
        PROCREG_SLOW_TELEMETRY) {
        procreg_telemetry_event ev = {
            .op = op,
            .result = rc,
            .duration_ns = dur,
            .ns = ns,
            .name = name,
            .backend = reg->ops->name,
            .reason = op == PROCREG_OP_CLEANUP ? PROCREG_REASON_OWNER_EXITED
                                               : PROCREG_REASON_NONE,
            .count = count,
        };
        procreg_telemetry_emit(reg, b, &ev);
    }
}

/* ---- reclaiming ---- */

typedef struct {
    uint64_t epoch;
    procreg_tblock *self;
    bool busy;      /* another thread may still read */
    bool self_busy; /* this thread is inside a handler */
} scan;

static void scan_block(procreg_tblock *b, void *data)
{
    scan *s = data;
    if (b->shared)
        return;
    uint64_t a = atomic_load_explicit(&b->tel_active, memory_order_seq_cst);
    if (a == 0 || a >= s->epoch)
        return;
    if (b == s->self)
        s->self_busy = true;
    else
        s->busy = true;
}

/* Whether readers that entered before @epoch are all gone (other threads
 * waited for when @wait; this thread's own entry cannot be waited for). */
static bool quiescent(procreg *reg, uint64_t epoch, bool wait)
{
    procreg_tblock *self = procreg_tblock_get(reg);
    for (unsigned spins = 0;; spins++) {
        scan s = {.epoch = epoch, .self = self};
        procreg_tstats_foreach(reg, scan_block, &s);
        if (s.self_busy)
            return false;
        if (!s.busy)
            return true;
        if (!wait)
            return false;
        if (spins < 64)
            sched_yield();
        else
            g_usleep(50);
    }
}

static void retired_release(retired *r)
{
    g_free(r->snap);
    if (r->gone.fn != NULL && r->gone.destroy != NULL)
        r->gone.destroy(r->gone.user_data);
}

/* Free the retired snapshots no reader can hold.  Call without t->lock. */
static void reclaim(procreg *reg)
{
    procreg_telemetry *t = reg->telemetry;
    for (;;) {
        pthread_mutex_lock(&t->lock);
        retired r = {0};
        bool found = false;
        for (guint i = 0; i < t->retired->len; i++) {
            retired *c = &g_array_index(t->retired, retired, i);
            if (quiescent(reg, c->epoch, false)) {
                r = *c;
                g_array_remove_index_fast(t->retired, i);
                found = true;
                break;
            }
        }
        pthread_mutex_unlock(&t->lock);
        if (!found)
            return;
        retired_release(&r);
    }
}

/* Publish @next (t->lock held); returns the epoch readers must leave. */
static uint64_t publish(procreg *reg, snapshot *next)
{
    procreg_telemetry *t = reg->telemetry;
    atomic_store_explicit(&t->current, next, memory_order_seq_cst);
    if (next->n > 0)
        atomic_fetch_or_explicit(&reg->slow, PROCREG_SLOW_TELEMETRY,
                                 memory_order_relaxed);
    else
        atomic_fetch_and_explicit(&reg->slow, ~(unsigned)PROCREG_SLOW_TELEMETRY,
                                  memory_order_relaxed);
    return atomic_fetch_add_explicit(&t->epoch, 1, memory_order_seq_cst) + 1;
}

PROCREG_API int procreg_telemetry_attach(procreg *reg, unsigned ops,
                                         procreg_telemetry_fn fn,
                                         gpointer user_data,
                                         GDestroyNotify destroy, uint64_t *id,
                                         GError **error)
{
    g_return_val_if_fail(reg != NULL, PROCREG_EINVAL);
    if (fn == NULL)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "telemetry handler is NULL");
    if (ops == 0 || (ops & ~PROCREG_OP_ALL) != 0)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "telemetry operation mask 0x%x is empty or "
                                 "names unknown operations", ops);
    procreg_telemetry *t = reg->telemetry;
    pthread_mutex_lock(&t->lock);
    snapshot *cur = atomic_load_explicit(&t->current, memory_order_relaxed);
    snapshot *next = g_malloc(sizeof(snapshot) + (cur->n + 1) * sizeof(handler));
    memcpy(next->h, cur->h, cur->n * sizeof(handler));
    next->n = cur->n + 1;
    uint64_t hid = t->next_id++;
    next->h[cur->n] = (handler){hid, ops, fn, user_data, destroy};
    uint64_t e = publish(reg, next);
    retired r = {.snap = cur, .epoch = e};
    g_array_append_val(t->retired, r);
    pthread_mutex_unlock(&t->lock);
    reclaim(reg);
    if (id != NULL)
        *id = hid;
    return 0;
}

PROCREG_API int procreg_telemetry_detach(procreg *reg, uint64_t id)
{
    g_return_val_if_fail(reg != NULL, PROCREG_EINVAL);
    procreg_telemetry *t = reg->telemetry;
    pthread_mutex_lock(&t->lock);
    snapshot *cur = atomic_load_explicit(&t->current, memory_order_relaxed);
    guint at = cur->n;
    for (guint i = 0; i < cur->n; i++)
        if (cur->h[i].id == id)
            at = i;
    if (at == cur->n) {
        pthread_mutex_unlock(&t->lock);
        return PROCREG_ENOTFOUND;
    }
    snapshot *next = g_malloc(sizeof(snapshot) + cur->n * sizeof(handler));
    next->n = 0;
    for (guint i = 0; i < cur->n; i++)
        if (i != at)
            next->h[next->n++] = cur->h[i];
    retired r = {.snap = cur, .gone = cur->h[at]};
    r.epoch = publish(reg, next);
    pthread_mutex_unlock(&t->lock);

    if (quiescent(reg, r.epoch, true)) {
        retired_release(&r);
    } else {
        /* Inside a handler on this thread: it may still read @cur. */
        pthread_mutex_lock(&t->lock);
        g_array_append_val(t->retired, r);
        pthread_mutex_unlock(&t->lock);
    }
    reclaim(reg);
    return 0;
}

PROCREG_INTERNAL void procreg_telemetry_free(procreg *reg)
{
    procreg_telemetry *t = reg->telemetry;
    if (t == NULL)
        return;
    /* No call is running (procreg_close's contract): all is quiescent. */
    for (guint i = 0; i < t->retired->len; i++)
        retired_release(&g_array_index(t->retired, retired, i));
    g_array_unref(t->retired);
    snapshot *cur = atomic_load_explicit(&t->current, memory_order_relaxed);
    for (guint i = 0; i < cur->n; i++)
        if (cur->h[i].destroy != NULL)
            cur->h[i].destroy(cur->h[i].user_data);
    g_free(cur);
    pthread_mutex_destroy(&t->lock);
    g_free(t);
    reg->telemetry = NULL;
}
