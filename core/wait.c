/*
 * Waiting: procreg_wait_for() until a key is registered, and
 * procreg_wait_members() until a group is large enough.
 *
 * Waiters sleep on a condition variable per awaited key or group, with a
 * generation that every registration of the key (every join of the group)
 * bumps with a broadcast, directly from the thread that emits the event
 * (events.c): waking needs no dispatcher.  A woken waiter probes again
 * (a lookup, a count) and sleeps on if the answer is still "not yet".
 */
#include "internal.h"

#include <errno.h>
#include <gmodule.h>
#include <string.h>
#include <time.h>

/* One awaited key or group. */
typedef struct {
    pthread_cond_t cond;
    uint64_t gen; /* bumped by each registration of the key (join) */
    int waiters;
} awaited;

struct procreg_waits {
    pthread_mutex_t lock; /* waits and every awaited */
    GHashTable *waits;    /* wait_key_string() -> awaited* */
    atomic_int n_waiters;
};

static void awaited_free(gpointer p)
{
    awaited *a = p;
    pthread_cond_destroy(&a->cond);
    g_free(a);
}

PROCREG_INTERNAL procreg_waits *procreg_waits_new(void)
{
    procreg_waits *h = g_new0(procreg_waits, 1);
    pthread_mutex_init(&h->lock, NULL);
    h->waits = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                     awaited_free);
    return h;
}

PROCREG_INTERNAL void procreg_waits_free(procreg_waits *h)
{
    if (h == NULL)
        return;
    g_hash_table_unref(h->waits);
    pthread_mutex_destroy(&h->lock);
    g_free(h);
}

PROCREG_INTERNAL size_t procreg_waits_count(procreg *reg)
{
    return (size_t)atomic_load(&reg->waits->n_waiters);
}

/* What waiters of key (ns, name), or of group (ns, name), wait on. */
static char *wait_key_string(const char *ns, const char *name, bool group)
{
    char *k = procreg_key_string(ns, name);
    if (!group)
        return k;
    /* Names hold no control characters: a leading one marks a group. */
    char *g = g_strconcat("\x1e", k, NULL);
    g_free(k);
    return g;
}

PROCREG_INTERNAL void procreg_waits_wake(procreg *reg, const char *ns,
                                         const char *name, bool group)
{
    procreg_waits *h = reg->waits;
    /* A read-modify-write, not a load: it either reads the waiter's
     * increment (and we wake it), or its value is what the waiter's
     * increment reads, which then synchronises with us and the waiter's
     * lookup sees the new entry.  (No standalone fence: ThreadSanitizer
     * cannot model those.) */
    if (atomic_fetch_add_explicit(&h->n_waiters, 0, memory_order_seq_cst) == 0)
        return;
    char *k = wait_key_string(ns, name, group);
    pthread_mutex_lock(&h->lock);
    awaited *a = g_hash_table_lookup(h->waits, k);
    if (a != NULL) {
        a->gen++;
        pthread_cond_broadcast(&a->cond);
    }
    pthread_mutex_unlock(&h->lock);
    g_free(k);
}

typedef struct {
    /* Published with a release store before the cancellable can call
     * on_cancelled, which may run on another thread. */
    _Atomic(procreg_waits *) h;
    awaited *a;
    bool cancelled; /* under h->lock */
} waiter;

/* GIO's cancellable functions, found in the process at run time (see
 * procreg.h: libprocreg links GLib only).  A caller that has a
 * GCancellable to pass has GIO loaded. */
typedef struct {
    gboolean (*is_cancelled)(GCancellable *c);
    gulong (*connect)(GCancellable *c, void (*cb)(void), gpointer data,
                      GDestroyNotify destroy);
    void (*disconnect)(GCancellable *c, gulong id);
} gio_api;

static gio_api gio;
static bool gio_found;
static pthread_once_t gio_once = PTHREAD_ONCE_INIT;

static void gio_resolve(void)
{
    GModule *self = g_module_open(NULL, G_MODULE_BIND_LAZY);
    if (self == NULL)
        return;
    gpointer a = NULL, b = NULL, c = NULL;
    if (g_module_symbol(self, "g_cancellable_is_cancelled", &a) &&
        g_module_symbol(self, "g_cancellable_connect", &b) &&
        g_module_symbol(self, "g_cancellable_disconnect", &c) && a && b && c) {
        gio.is_cancelled = (gboolean(*)(GCancellable *))a;
        gio.connect = (gulong(*)(GCancellable *, void (*)(void), gpointer,
                                 GDestroyNotify))b;
        gio.disconnect = (void (*)(GCancellable *, gulong))c;
        gio_found = true;
    }
    g_module_make_resident(self);
    g_module_close(self);
}

static const gio_api *gio_get(void)
{
    pthread_once(&gio_once, gio_resolve);
    return gio_found ? &gio : NULL;
}

static void on_cancelled(GCancellable *c, gpointer data)
{
    waiter *w = data;
    procreg_waits *h = atomic_load_explicit(&w->h, memory_order_acquire);
    pthread_mutex_lock(&h->lock);
    w->cancelled = true;
    pthread_cond_broadcast(&w->a->cond);
    pthread_mutex_unlock(&h->lock);
}

/* A lookup that ignores entries whose owner is known dead: the probe of
 * procreg_wait_for_key(). */
typedef struct {
    const procreg_key *key;
    procreg_entry *out;
} entry_probe;

static int try_get(procreg *reg, void *ctx, GError **error)
{
    entry_probe *p = ctx;
    procreg_entry e = {0};
    GError *local = NULL;
    int rc = procreg_backend_lookup_entry(reg->backend, p->key, &e, &local);
    /* A miss is the normal case here: only a failure keeps its message. */
    if (rc != 0 && rc != PROCREG_ENOTFOUND && local != NULL)
        g_propagate_error(error, local);
    else
        g_clear_error(&local);
    if (rc == 0 &&
        (atomic_load_explicit(&reg->slow, memory_order_relaxed) &
         PROCREG_SLOW_DEAD_OWNERS) &&
        procreg_owner_known_dead(reg, &e.owner)) {
        procreg_entry_clear(&e);
        rc = PROCREG_ENOTFOUND;
    }
    if (rc == 0 && p->out != NULL) {
        procreg_entry_clear(p->out);
        *p->out = e;
    } else {
        procreg_entry_clear(&e);
    }
    return rc;
}

static int wait_loop(procreg *reg, const char *k, procreg_wait_probe probe,
                     void *ctx, int timeout_ms, GCancellable *cancellable,
                     const gio_api *api, GError **error)
{
    procreg_waits *h = reg->waits;
    pthread_mutex_lock(&h->lock);
    awaited *a = g_hash_table_lookup(h->waits, k);
    if (a == NULL) {
        a = g_new0(awaited, 1);
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&a->cond, &attr);
        pthread_condattr_destroy(&attr);
        g_hash_table_insert(h->waits, g_strdup(k), a);
    }
    a->waiters++;
    atomic_fetch_add_explicit(&h->n_waiters, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&h->lock);

    waiter w = {.a = a};
    atomic_store_explicit(&w.h, h, memory_order_release);
    gulong handler = 0;
    if (api != NULL)
        handler = api->connect(cancellable, (void (*)(void))on_cancelled, &w,
                               NULL);

    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ms > 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }

    int rc;
    for (;;) {
        pthread_mutex_lock(&h->lock);
        uint64_t gen = a->gen;
        bool cancelled = w.cancelled;
        pthread_mutex_unlock(&h->lock);
        if (cancelled) {
            rc = PROCREG_ECANCELLED;
            break;
        }
        rc = probe(reg, ctx, error);
        if (rc != PROCREG_ENOTFOUND)
            break;
        bool timed_out = false;
        pthread_mutex_lock(&h->lock);
        while (a->gen == gen && !w.cancelled && !timed_out) {
            if (timeout_ms < 0)
                pthread_cond_wait(&a->cond, &h->lock);
            else
                timed_out = pthread_cond_timedwait(&a->cond, &h->lock,
                                                   &deadline) == ETIMEDOUT;
        }
        bool woken = a->gen != gen;
        pthread_mutex_unlock(&h->lock);
        if (timed_out && !woken) {
            rc = PROCREG_ETIMEDOUT;
            break;
        }
    }

    if (handler != 0)
        api->disconnect(cancellable, handler);
    pthread_mutex_lock(&h->lock);
    atomic_fetch_sub_explicit(&h->n_waiters, 1, memory_order_relaxed);
    if (--a->waiters == 0)
        g_hash_table_remove(h->waits, k);
    pthread_mutex_unlock(&h->lock);
    return rc;
}

PROCREG_INTERNAL int procreg_wait_until(procreg *reg, const char *ns,
                                        const char *name, bool group,
                                        procreg_wait_probe probe, void *ctx,
                                        int timeout_ms,
                                        GCancellable *cancellable,
                                        GError **error)
{
    const gio_api *api = cancellable != NULL ? gio_get() : NULL;
    if (cancellable != NULL && api == NULL)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "a GCancellable was given but GIO is not "
                                 "loaded in this process");
    if (api != NULL && api->is_cancelled(cancellable))
        return PROCREG_ECANCELLED;
    int rc = probe(reg, ctx, error);
    if (rc != PROCREG_ENOTFOUND)
        return rc;
    if (timeout_ms == 0)
        return PROCREG_ETIMEDOUT;
    char *k = wait_key_string(ns, name, group);
    rc = wait_loop(reg, k, probe, ctx, timeout_ms, cancellable, api, error);
    g_free(k);
    return rc;
}

PROCREG_API int procreg_wait_for_key(procreg *reg, const procreg_key *key,
                                     int timeout_ms, GCancellable *cancellable,
                                     procreg_entry *out, GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL, PROCREG_EINVAL);
    if (out != NULL)
        memset(out, 0, sizeof *out);
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    const char *ns = procreg_key_namespace(key), *name = procreg_key_name(key);
    GError *local = NULL;
    entry_probe p = {key, out};
    int rc = procreg_wait_until(reg, ns, name, false, try_get, &p, timeout_ms,
                                cancellable, &local);
    if (local != NULL)
        g_propagate_error(error, local);
    else if (rc == PROCREG_ETIMEDOUT)
        procreg_set_error(error, rc,
                          "'%s' was not registered in namespace '%s' within "
                          "%d ms", name, ns, timeout_ms);
    else if (rc == PROCREG_ECANCELLED)
        procreg_set_error(error, rc, "waiting for '%s' in '%s' was cancelled",
                          name, ns);
    else if (rc != 0)
        procreg_set_error(error, rc, "waiting for '%s' in '%s': %s", name, ns,
                          procreg_strerror(rc));
    procreg_op_done(reg, b, PROCREG_OP_WAIT, rc, t0, ns, name, rc == 0);
    return rc;
}

PROCREG_API int procreg_wait_for(procreg *reg, const char *ns,
                                 const char *name, int timeout_ms,
                                 GCancellable *cancellable, procreg_entry *out,
                                 GError **error)
{
    procreg_stack_key key;
    int rc = procreg_key_init_stack(&key, ns, name, error);
    if (rc != 0) {
        if (out != NULL)
            memset(out, 0, sizeof *out);
        return rc;
    }
    return procreg_wait_for_key(reg, &key.key, timeout_ms, cancellable, out,
                                error);
}
