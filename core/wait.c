/*
 * Waiting: procreg_wait_for() for a service, and (through
 * procreg_wait_until(), for groups.c) procreg_wait_members() for a group
 * to grow.  A waiter sleeps on the wake-up board of events.c until a
 * registration of its key (a join of its group) wakes it (no polling), a
 * GCancellable fires, or the timeout passes; entries and members of
 * owners the monitor knows dead (owner-index.c) do not count.  The
 * cancellable and deadline helpers serve the lock waiters (lock.c) too.
 */
#include "internal.h"

#include <gmodule.h>
#include <string.h>
#include <time.h>

/* GIO's cancellable functions, found in the process at run time (see
 * procreg.h: libprocreg links GLib and GObject, not GIO).  A caller that
 * has a GCancellable to pass has GIO loaded. */
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
    procreg_wake_cancel(data);
}

PROCREG_INTERNAL int procreg_cancellable_check(GCancellable *cancellable,
                                               GError **error)
{
    if (cancellable == NULL)
        return 0;
    const gio_api *api = gio_get();
    if (api == NULL)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "a GCancellable was given but GIO is not "
                                 "loaded in this process");
    return api->is_cancelled(cancellable) ? PROCREG_ECANCELLED : 0;
}

PROCREG_INTERNAL gulong procreg_cancellable_link(GCancellable *cancellable,
                                                 procreg_wake *w)
{
    const gio_api *api = cancellable != NULL ? gio_get() : NULL;
    return api != NULL ? api->connect(cancellable,
                                      (void (*)(void))on_cancelled, w, NULL)
                       : 0;
}

PROCREG_INTERNAL void procreg_cancellable_unlink(GCancellable *cancellable,
                                                 gulong handler)
{
    if (handler != 0)
        gio_get()->disconnect(cancellable, handler);
}

PROCREG_INTERNAL void procreg_deadline_in(struct timespec *deadline,
                                          int timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, deadline);
    deadline->tv_sec += timeout_ms / 1000;
    deadline->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline->tv_nsec >= 1000000000L) {
        deadline->tv_sec++;
        deadline->tv_nsec -= 1000000000L;
    }
}

/* A lookup that leaves out entries whose owner is gone, as lookups do
 * (procreg_read_owner_gone()): the probe of procreg_wait_for_key(). */
typedef struct {
    const procreg_key *key;
    procreg_entry *out;
} entry_probe;

static int try_get(procreg *reg, void *ctx, GError **error)
{
    entry_probe *p = ctx;
    procreg_entry e = {0};
    GError *local = NULL;
    bool pending = procreg_dead_pending(reg);
    int rc = procreg_backend_lookup_entry(reg->backend, p->key, &e, &local);
    /* A miss is the normal case here: only a failure keeps its message. */
    if (rc != 0 && rc != PROCREG_ENOTFOUND && local != NULL)
        g_propagate_error(error, local);
    else
        g_clear_error(&local);
    if (rc == 0 && procreg_read_owner_gone(reg, pending, &e.owner)) {
        procreg_entry_clear(&e);
        rc = PROCREG_ENOTFOUND;
    }
    if (rc == 0 && p->out != NULL)
        *p->out = e;
    else
        procreg_entry_clear(&e);
    return rc;
}

static int wait_loop(procreg *reg, const char *ns, const char *name,
                     bool group, procreg_wait_probe probe, void *ctx,
                     int timeout_ms, GCancellable *cancellable,
                     GError **error)
{
    procreg_wake *w = procreg_wake_join(reg, ns, name, group);
    gulong handler = procreg_cancellable_link(cancellable, w);
    struct timespec deadline;
    procreg_deadline_in(&deadline, timeout_ms > 0 ? timeout_ms : 0);

    /* Read the generation, then look: a registration after the read bumps
     * it, so the sleep below cannot miss one the probe did not see. */
    int rc;
    for (;;) {
        uint64_t gen;
        if (!procreg_wake_read(w, &gen)) {
            rc = PROCREG_ECANCELLED;
            break;
        }
        rc = probe(reg, ctx, error);
        if (rc != PROCREG_ENOTFOUND)
            break;
        if (!procreg_wake_sleep(w, gen, timeout_ms < 0 ? NULL : &deadline)) {
            rc = PROCREG_ETIMEDOUT;
            break;
        }
    }

    procreg_cancellable_unlink(cancellable, handler);
    procreg_wake_leave(w);
    return rc;
}

PROCREG_INTERNAL int procreg_wait_until(procreg *reg, const char *ns,
                                        const char *name, bool group,
                                        procreg_wait_probe probe, void *ctx,
                                        int timeout_ms,
                                        GCancellable *cancellable,
                                        GError **error)
{
    int rc = procreg_cancellable_check(cancellable, error);
    if (rc != 0)
        return rc;
    GError *local = NULL;
    rc = probe(reg, ctx, &local);
    if (rc == PROCREG_ENOTFOUND) {
        g_clear_error(&local);
        rc = timeout_ms == 0 ? PROCREG_ETIMEDOUT
                             : wait_loop(reg, ns, name, group, probe, ctx,
                                         timeout_ms, cancellable, &local);
    }
    if (local != NULL)
        g_propagate_error(error, local);
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
