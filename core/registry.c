/*
 * The public registry API: validates, then dispatches to the backend, and
 * wires in the service layer: each write holds its key's stripe across the
 * backend call, the owner index update and the event enqueue; each call is
 * counted in the calling thread's counter block and reported to telemetry.
 */
#include "internal.h"

#include <string.h>

#include "brlock.h"

/* How many existing names a not-found message shows. */
#define NOT_FOUND_SAMPLE 5

/* ---- opening ---- */

static uint64_t next_registry_id(void)
{
    static _Atomic uint64_t ids;
    return atomic_fetch_add_explicit(&ids, 1, memory_order_relaxed) + 1;
}

/* A registry without its backend: the backend is opened with its host. */
static procreg *registry_alloc(void)
{
    procreg *reg = g_new0(procreg, 1);
    atomic_init(&reg->slow, 0);
    reg->id = next_registry_id();
    procreg_owner self;
    procreg_owner_self(&self);
    reg->creator = self.pid;
    /* Adaptive: a writer that meets another on its stripe spins for the
     * few microseconds a write holds it instead of sleeping at once. */
    for (int i = 0; i < PROCREG_STRIPES; i++)
        procreg_mutex_init_adaptive(&reg->stripes[i].m);
    reg->tstats = procreg_tstats_new();
    reg->telemetry = procreg_telemetry_new();
    reg->events = procreg_events_new();
    reg->wakes = procreg_wakes_new();
    reg->monitor = procreg_monitor_new(reg);
    reg->host = procreg_host_new_root(reg);
    return reg;
}

static void registry_free(procreg *reg)
{
    procreg_events_shutdown(reg);
    procreg_monitor_stop(reg);
    procreg_backend_close(reg->backend); /* may still notify: hub is alive */
    procreg_host_free_root(reg->host);
    procreg_events_free(reg->events);
    procreg_wakes_free(reg->wakes);
    procreg_monitor_free(reg->monitor);
    procreg_telemetry_free(reg);
    procreg_tstats_free(reg->tstats);
    for (int i = 0; i < PROCREG_STRIPES; i++)
        pthread_mutex_destroy(&reg->stripes[i].m);
    g_free(reg);
}

static int registry_start(procreg *reg, procreg **out)
{
    reg->ops = procreg_backend_get_ops(reg->backend);
    unsigned caps = procreg_backend_get_caps(reg->backend);
    reg->owners_local = !(caps & PROCREG_CAP_DISTRIBUTED);
    reg->groups = procreg_backend_has_groups(reg->backend);
    reg->backend_orders_events = caps & PROCREG_CAP_ORDERED_EVENTS;
    reg->backend_history = procreg_backend_has_history(reg->backend);
    reg->writes_local =
        !(caps & (PROCREG_CAP_MULTIPROCESS | PROCREG_CAP_DISTRIBUTED));
    /* Without the monitor the registry still works; health says so. */
    procreg_monitor_start(reg);
    *out = reg;
    return 0;
}

PROCREG_API int procreg_open(const char *spec, procreg **out, GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    *out = NULL;
    if (spec == NULL)
        spec = g_getenv("PROCREG_BACKEND");
    if (spec == NULL || *spec == '\0')
        spec = procreg_builtin_backends[0]->name;
    procreg *reg = registry_alloc();
    int rc = procreg_backend_open(spec, reg->host, &reg->backend, error);
    if (rc != 0) {
        registry_free(reg);
        return rc;
    }
    return registry_start(reg, out);
}

PROCREG_API int procreg_open_with_backend(const procreg_backend_ops *ops,
                                          const char *options, procreg **out,
                                          GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    *out = NULL;
    int rc = procreg_backend_ops_check(ops, error);
    if (rc != 0)
        return rc;
    procreg_spec *spec = NULL;
    rc = procreg_spec_parse_options(ops->name, options, &spec, error);
    if (rc != 0)
        return rc;
    procreg *reg = registry_alloc();
    rc = procreg_backend_open_ops(ops, spec, reg->host, &reg->backend, error);
    procreg_spec_free(spec);
    if (rc != 0) {
        registry_free(reg);
        return rc;
    }
    return registry_start(reg, out);
}

PROCREG_API void procreg_close(procreg *reg)
{
    if (reg == NULL)
        return;
    /* In a fork() child the registry's threads do not exist and its locks
     * may be held by threads that were not copied: touching them would
     * hang.  The child leaves the parent's registry alone. */
    procreg_owner self;
    procreg_owner_self(&self);
    if (self.pid != reg->creator)
        return;
    registry_free(reg);
}

PROCREG_API const char *procreg_get_spec(const procreg *reg)
{
    return procreg_backend_spec_string(reg->backend);
}

static bool owner_known_dead(procreg *reg, const procreg_owner *owner)
{
    return (atomic_load_explicit(&reg->slow, memory_order_relaxed) &
            PROCREG_SLOW_DEAD_OWNERS) &&
           procreg_owner_known_dead(reg, owner);
}

static bool dead_pending(procreg *reg)
{
    return atomic_load_explicit(&reg->slow, memory_order_relaxed) &
           PROCREG_SLOW_DEAD_OWNERS;
}

/* Drop from @a the entries whose owner is known dead.  @pending says
 * whether a cleanup was pending when the backend was read: the monitor
 * may have finished it (and forgotten the owner) since, and an entry it
 * removed after our read would show again; those owners are checked
 * directly (only while cleanups are pending, and never our own process). */
static void filter_dead(procreg *reg, GArray *a, bool pending)
{
    if (!pending && !dead_pending(reg))
        return;
    procreg_owner self;
    procreg_owner_self(&self);
    for (guint i = a->len; i-- > 0;) {
        const procreg_owner *o = &g_array_index(a, procreg_entry, i).owner;
        if (procreg_owner_known_dead(reg, o) ||
            (pending && o->pid != self.pid && !procreg_owner_is_alive(o)))
            g_array_remove_index(a, i);
    }
}


/* Serialise @metadata now, on the writer's thread: a GVariant built in
 * tree form serialises itself lazily on first read, under GLib's own
 * locks, and the entry's metadata is read by every thread that looks it
 * up.  Doing it once here keeps lookups from allocating. */
static void metadata_flatten(GVariant *metadata)
{
    if (metadata != NULL)
        (void)g_variant_get_data(metadata);
}

/* ---- register ---- */

/* The owner to store: the caller by default; otherwise a live process,
 * with its start time filled in so a reused pid never matches. */
PROCREG_INTERNAL int procreg_resolve_owner(const procreg_owner *given,
                                           procreg_owner *out, GError **error)
{
    if (given == NULL) {
        procreg_owner_self(out);
        return 0;
    }
    int rc = procreg_owner_from_pid(given->pid, out, error);
    if (rc != 0)
        return rc;
    if (given->start_time != 0 && given->start_time != out->start_time)
        return procreg_set_error(error, PROCREG_ENOTALIVE,
                                 "process %d is not alive (its pid now "
                                 "belongs to another process)",
                                 (int)given->pid);
    return 0;
}

/* Whether the holder of a key is dead: known to the monitor, or, on a
 * backend whose owners all live on this host, no longer a live process
 * (it may have died a moment ago, before any monitor noticed: a dead
 * holder must never block its key).  Asked only on a conflict. */
static bool holder_dead(procreg *reg, const procreg_owner *holder)
{
    if (owner_known_dead(reg, holder))
        return true;
#ifdef PROCREG_INJECT_DEAD_HOLDER
    /* Test builds only (tests/history): trust the monitor alone, as before
     * this check, so the history checker can prove it catches a register
     * that reports a dead holder. */
    return false;
#endif
    if (!reg->owners_local)
        return false;
    procreg_owner self;
    procreg_owner_self(&self);
    return !procreg_owner_same(holder, &self) &&
           !procreg_owner_is_alive(holder);
}

PROCREG_INTERNAL bool procreg_owner_died_meanwhile(procreg *reg,
                                                  const procreg_owner *owner)
{
    procreg_owner self;
    procreg_owner_self(&self);
    return !procreg_owner_same(owner, &self) && holder_dead(reg, owner);
}

/* The key is held by a dead owner, its cleanup still pending: remove that
 * entry now (as the cleanup would) so the caller can take the key.  The
 * stripe is held.  Returns whether the entry is gone: removed here, or by
 * someone else meanwhile (a shared backend's own reaper); false when the
 * key changed hands, so the conflict stands. */
static bool evict_dead_holder(procreg *reg, const procreg_key *key,
                              const procreg_entry *holder)
{
    uint64_t t0 = procreg_now_ns();
    procreg_entry gone = {0};
    int rc = procreg_backend_unregister(reg->backend, key, holder->revision,
                                        &gone, NULL);
    if (rc == 0)
        procreg_owner_exit_removed(reg, procreg_key_namespace(key),
                                   procreg_key_name(key), &gone, t0);
    procreg_entry_clear(&gone);
    return rc == 0 || rc == PROCREG_ENOTFOUND;
}

/* A holder known dead, or dead by the check above, loses its key now: its
 * entry is removed at the revision @holder was read at (as its cleanup
 * would remove it).  Returns whether that entry is gone; false when the
 * holder lives or the key changed hands meanwhile. */
PROCREG_INTERNAL bool procreg_evict_if_dead(procreg *reg,
                                            const procreg_key *key,
                                            const procreg_entry *holder)
{
    if (!holder_dead(reg, &holder->owner))
        return false;
    pthread_mutex_t *stripe = procreg_stripe_of(reg, key);
    pthread_mutex_lock(stripe);
    bool gone = evict_dead_holder(reg, key, holder);
    pthread_mutex_unlock(stripe);
    return gone;
}

/* procreg_register_key(); @reserved_ok lets the core's own records (lock
 * tickets, namespace settings) into the reserved namespaces. */
static int register_entry(procreg *reg, const procreg_key *key,
                          const procreg_owner *owner, GVariant *metadata,
                          procreg_entry *current, bool reserved_ok,
                          GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL, PROCREG_EINVAL);
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_write_clock(reg, b, PROCREG_OP_REGISTER);
    if (metadata != NULL)
        g_variant_ref_sink(metadata);
    metadata_flatten(metadata);
    procreg_record record = {.metadata = metadata,
                             .registered_at = g_get_real_time()};
    const char *ns = procreg_key_namespace(key), *name = procreg_key_name(key);
    int rc = reserved_ok ? 0 : procreg_ns_check_writable(ns, error);
    if (rc == 0)
        rc = procreg_metadata_check(metadata, error);
    if (rc == 0)
        rc = procreg_resolve_owner(owner, &record.owner, error);
    if (rc == 0) {
        GError *local = NULL;
        procreg_entry cur = {0};
        pthread_mutex_t *stripe = procreg_stripe_of(reg, key);
        pthread_mutex_lock(stripe);
        GError **lp = error != NULL ? &local : NULL;
        rc = procreg_backend_register_entry(reg->backend, key, &record, &cur,
                                            lp);
        bool dead = rc == PROCREG_EEXISTS && holder_dead(reg, &cur.owner);
        if (dead && procreg_owner_same(&cur.owner, &record.owner)) {
            /* The owner we register for died since resolve_owner() saw
             * it alive: its old entry is part of its death, and a new one
             * would bring a dead process back. */
            g_clear_error(&local);
            rc = procreg_set_error(lp, PROCREG_ENOTALIVE,
                                   "process %d is not alive",
                                   (int)record.owner.pid);
        } else if (dead && evict_dead_holder(reg, key, &cur)) {
            procreg_entry_clear(&cur);
            g_clear_error(&local);
            rc = procreg_backend_register_entry(reg->backend, key, &record,
                                                &cur, lp);
        }
        if (rc == 0 && reg->writes_local &&
            procreg_owner_died_meanwhile(reg, &record.owner)) {
            /* The owner died after resolve_owner() saw it alive (while
             * this call waited for its stripe, say): its death may have
             * been cleaned up already, and this entry would bring a dead
             * process back.  Undone before the stripe lets another writer
             * of the key in, and before any event.  Only where the stripe
             * excludes every writer: a shared backend checks the owner in
             * its own commit (lmdb), and there another process may change
             * the entry before an undo. */
            procreg_backend_unregister(reg->backend, key, cur.revision, NULL,
                                       NULL);
            procreg_entry_clear(&cur);
            rc = procreg_set_error(lp, PROCREG_ENOTALIVE,
                                   "process %d is not alive (it died during "
                                   "the registration)",
                                   (int)record.owner.pid);
        }
        if (rc == 0) {
            procreg_owner_index_add(reg, ns, name, &cur.owner, cur.revision);
            procreg_events_emit_own(reg, PROCREG_EVENT_REGISTERED,
                                    PROCREG_REASON_NONE, ns, name, &cur);
        }
        pthread_mutex_unlock(stripe);
        if (rc == PROCREG_EEXISTS && lp != NULL) {
            if (local == NULL)
                procreg_set_error(&local, rc,
                                  "'%s' is already registered in namespace "
                                  "'%s' (by process %d)", name, ns,
                                  (int)cur.owner.pid);
            procreg_error_detail_entry(&local, ns, name, &cur);
        }
        if (local != NULL)
            g_propagate_error(error, local);
        if (current != NULL && (rc == 0 || rc == PROCREG_EEXISTS))
            *current = cur;
        else
            procreg_entry_clear(&cur);
    }
    if (metadata != NULL)
        g_variant_unref(metadata);
    procreg_op_done(reg, b, PROCREG_OP_REGISTER, rc, t0, ns, name, rc == 0);
    return rc;
}

PROCREG_API int procreg_register_key(procreg *reg, const procreg_key *key,
                                     const procreg_owner *owner,
                                     GVariant *metadata,
                                     procreg_entry *current, GError **error)
{
    return register_entry(reg, key, owner, metadata, current, false, error);
}

PROCREG_INTERNAL int procreg_register_reserved(procreg *reg,
                                               const procreg_key *key,
                                               const procreg_owner *owner,
                                               GVariant *metadata,
                                               procreg_entry *current,
                                               GError **error)
{
    return register_entry(reg, key, owner, metadata, current, true, error);
}

PROCREG_API int procreg_register(procreg *reg, const char *ns,
                                 const char *name, const procreg_owner *owner,
                                 GVariant *metadata, procreg_entry *current,
                                 GError **error)
{
    procreg_stack_key key;
    int rc = procreg_key_init_stack(&key, ns, name, error);
    if (rc != 0) {
        /* The call consumed a floating reference either way. */
        if (metadata != NULL && g_variant_is_floating(metadata))
            g_variant_unref(g_variant_ref_sink(metadata));
        return rc;
    }
    return procreg_register_key(reg, &key.key, owner, metadata, current,
                                error);
}

/* ---- lookup ---- */

/* A not-found error that helps: the namespace and a few names it holds. */
static int not_found(procreg *reg, const procreg_key *key, GError **error)
{
    if (error == NULL)
        return PROCREG_ENOTFOUND;
    const char *ns = procreg_key_namespace(key);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    procreg_backend_list_names(reg->backend, ns, NOT_FOUND_SAMPLE, names);
    GString *msg = g_string_new(NULL);
    g_string_printf(msg, "'%s' is not registered in namespace '%s'",
                    procreg_key_name(key), ns);
    if (names->len == 0) {
        g_string_append(msg, " (the namespace is empty)");
    } else {
        g_string_append(msg, " (it holds ");
        for (guint i = 0; i < names->len; i++)
            g_string_append_printf(msg, "%s'%s'", i ? ", " : "",
                                   (char *)names->pdata[i]);
        g_string_append(msg, names->len == NOT_FOUND_SAMPLE ? ", ...)" : ")");
    }
    procreg_set_error(error, PROCREG_ENOTFOUND, "%s", msg->str);
    g_string_free(msg, TRUE);
    g_ptr_array_add(names, NULL);
    procreg_error_detail_alternatives(error, (char **)names->pdata);
    g_ptr_array_unref(names);
    return PROCREG_ENOTFOUND;
}

static int backend_failure(int rc, const procreg_key *key, GError **error)
{
    return procreg_set_error(error, rc, "lookup of '%s' in '%s': %s",
                             procreg_key_name(key), procreg_key_namespace(key),
                             procreg_strerror(rc));
}

static int lookup_failed(procreg *reg, int rc, const procreg_key *key,
                         GError **error)
{
    return rc == PROCREG_ENOTFOUND ? not_found(reg, key, error)
                                   : backend_failure(rc, key, error);
}

/* Timed, filtered for dead owners, reported to telemetry. */
static __attribute__((noinline)) int lookup_slow(procreg *reg, procreg_tblock *b,
                                       const procreg_key *key,
                                       procreg_owner *out, GError **error)
{
    uint64_t t0 = procreg_now_ns();
    int rc = procreg_backend_lookup(reg->backend, key, out);
    if (rc == 0 && owner_known_dead(reg, out))
        rc = PROCREG_ENOTFOUND;
    procreg_op_done(reg, b, PROCREG_OP_LOOKUP, rc, t0,
                    procreg_key_namespace(key), procreg_key_name(key), rc == 0);
    return rc == 0 ? 0 : lookup_failed(reg, rc, key, error);
}

/* A fast-path lookup that did not find: counted and reported. */
static __attribute__((noinline)) int lookup_missed(procreg *reg,
                                                   procreg_tblock *b, int rc,
                                                   const procreg_key *key,
                                                   GError **error)
{
    procreg_counter_add(rc == PROCREG_ENOTFOUND
                            ? &b->misses[PROCREG_OP_LOOKUP]
                            : &b->errors[PROCREG_OP_LOOKUP],
                        1);
    return lookup_failed(reg, rc, key, error);
}

/*
 * The hot path.  With no telemetry handler and no dead owner pending
 * (procreg.slow == 0, one relaxed load) it is the backend lookup plus this
 * thread's call counter (a thread-local compare, a load and a store); one
 * call in 256 per thread takes the slow path to be timed.  Inlined into
 * both entry points: a call by strings pays no second call.
 */
static inline __attribute__((always_inline)) int
lookup_key(procreg *reg, const procreg_key *key, procreg_owner *out,
           GError **error)
{
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t n = atomic_load_explicit(&b->calls[PROCREG_OP_LOOKUP],
                                      memory_order_relaxed);
    unsigned slow = atomic_load_explicit(&reg->slow, memory_order_relaxed);
    if (G_UNLIKELY(slow != 0 || (n & PROCREG_LOOKUP_SAMPLE_MASK) == 0 ||
                   b->shared))
        return lookup_slow(reg, b, key, out, error);
    int rc = procreg_backend_lookup(reg->backend, key, out);
    atomic_store_explicit(&b->calls[PROCREG_OP_LOOKUP], n + 1,
                          memory_order_relaxed);
    if (G_LIKELY(rc == 0))
        return 0;
    return lookup_missed(reg, b, rc, key, error);
}

PROCREG_API int procreg_lookup_key(procreg *reg, const procreg_key *key,
                                   procreg_owner *out, GError **error)
{
    return lookup_key(reg, key, out, error);
}

PROCREG_API int procreg_lookup(procreg *reg, const char *ns, const char *name,
                               procreg_owner *out, GError **error)
{
    procreg_stack_key key;
    int rc = procreg_key_init_stack(&key, ns, name, error);
    return rc != 0 ? rc : lookup_key(reg, &key.key, out, error);
}

PROCREG_API int procreg_lookup_entry_key(procreg *reg, const procreg_key *key,
                                         procreg_entry *out, GError **error)
{
    memset(out, 0, sizeof *out);
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t n = atomic_load_explicit(&b->calls[PROCREG_OP_LOOKUP_ENTRY],
                                      memory_order_relaxed);
    unsigned slow = atomic_load_explicit(&reg->slow, memory_order_relaxed);
    bool timed = slow != 0 || (n & PROCREG_LOOKUP_SAMPLE_MASK) == 0;
    uint64_t t0 = timed ? procreg_now_ns() : 0;
    GError *local = NULL;
    int rc = procreg_backend_lookup_entry(reg->backend, key, out,
                                          error != NULL ? &local : NULL);
    if (rc == 0 && (slow & PROCREG_SLOW_DEAD_OWNERS) &&
        procreg_owner_known_dead(reg, &out->owner)) {
        procreg_entry_clear(out);
        rc = PROCREG_ENOTFOUND;
    }
    if (timed || b->shared)
        procreg_op_done(reg, b, PROCREG_OP_LOOKUP_ENTRY, rc, t0,
                        procreg_key_namespace(key), procreg_key_name(key),
                        rc == 0);
    else
        procreg_tblock_record(b, PROCREG_OP_LOOKUP_ENTRY, rc, false, 0);
    if (rc == PROCREG_ENOTFOUND) {
        g_clear_error(&local);
        return not_found(reg, key, error);
    }
    if (local != NULL)
        g_propagate_error(error, local);
    else if (rc != 0)
        backend_failure(rc, key, error);
    return rc;
}

PROCREG_API int procreg_lookup_entry(procreg *reg, const char *ns,
                                     const char *name, procreg_entry *out,
                                     GError **error)
{
    procreg_stack_key key;
    int rc = procreg_key_init_stack(&key, ns, name, error);
    if (rc != 0) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    return procreg_lookup_entry_key(reg, &key.key, out, error);
}

/* ---- the owner rule: unregister and update ---- */

static int missing_or(procreg *reg, int rc, GError *local,
                      const procreg_key *key, GError **error)
{
    if (rc == PROCREG_ENOTFOUND) {
        g_clear_error(&local);
        return not_found(reg, key, error);
    }
    if (rc == PROCREG_ECONFLICT && local == NULL)
        procreg_set_error(&local, rc,
                          "'%s' in '%s' changed since the revision given",
                          procreg_key_name(key), procreg_key_namespace(key));
    if (local != NULL)
        g_propagate_error(error, local);
    return rc;
}

/*
 * A write to an existing entry (unregister, update) reads the entry, checks
 * that the caller may write it (the owner rule, procreg.h), and writes only
 * while the entry is still at the revision it read.  Invariant: the entry a
 * write changes is the entry its check saw.  The key's stripe keeps writes
 * through this registry apart; the backend's if_revision catches a write
 * by another process (lmdb) or host (etcd) between the read and the write,
 * and the read is then tried again, unless the caller pinned a revision.
 */
#define WRITE_ATTEMPTS 64

typedef struct {
    uint64_t if_revision; /* the caller's; 0: any */
    unsigned flags;       /* procreg_write_flags */
    procreg_entry cur;    /* the entry the check saw */
    uint64_t expect;      /* the revision to hand the backend */
    procreg_event_reason reason; /* EXPLICIT, or FORCED on another's */
} write_check;

static int check_flags(unsigned flags, GError **error)
{
    return (flags & ~(unsigned)PROCREG_FORCE) == 0
               ? 0
               : procreg_set_error(error, PROCREG_EINVAL,
                                   "unknown write flags 0x%x", flags);
}

/*
 * The owner rule for an unregister at no revision on a backend whose
 * entries only this registry's writes replace (writes_local): the owner
 * alone decides, so the check reads it with the backend's hot lookup
 * instead of a whole entry, and the write goes ahead at no revision,
 * which spares the backend a second search.  Sound because the caller
 * holds the key's stripe: no write through this registry can replace
 * the entry between the read and the write, and nothing else can (an
 * entry that vanishes meanwhile, say expired, makes the write fail with
 * PROCREG_ENOTFOUND, as it would have).  Returns 0 (w set),
 * PROCREG_ENOTFOUND, or 1 when the caller must take the general path
 * (not our entry, or a backend failure).
 */
static int check_own_removal(procreg *reg, const procreg_key *key,
                             write_check *w)
{
    procreg_owner holder, self;
    int rc = procreg_backend_lookup(reg->backend, key, &holder);
    if (rc == PROCREG_ENOTFOUND)
        return rc;
    procreg_owner_self(&self);
    if (rc != 0 || !procreg_owner_same(&holder, &self) ||
        owner_known_dead(reg, &holder))
        return 1;
    procreg_entry_clear(&w->cur);
    w->expect = 0;
    w->reason = PROCREG_REASON_EXPLICIT;
    return 0;
}

/* Read the entry and apply the owner rule: 0 (w->cur, w->expect and
 * w->reason set), PROCREG_ENOTFOUND (absent, or its owner is known
 * dead), PROCREG_ECONFLICT, PROCREG_EPERM, or the backend's failure.  A
 * forced unregister of an entry the backend cannot read (a damaged
 * record) goes ahead by name: that is how an operator repairs it. */
static int check_write(procreg *reg, const procreg_key *key, write_check *w,
                       bool removing, GError **error)
{
    if (removing && reg->writes_local && w->if_revision == 0) {
        int rc = check_own_removal(reg, key, w);
        if (rc != 1)
            return rc;
    }
    procreg_entry_clear(&w->cur);
    w->expect = w->if_revision;
    w->reason = PROCREG_REASON_EXPLICIT;
    GError *local = NULL;
    int rc = procreg_backend_lookup_entry(reg->backend, key, &w->cur,
                                          error != NULL ? &local : NULL);
    if (rc == PROCREG_EBACKEND && removing && (w->flags & PROCREG_FORCE)) {
        g_clear_error(&local);
        w->reason = PROCREG_REASON_FORCED;
        return 0;
    }
    if (local != NULL)
        g_propagate_error(error, local);
    if (rc == 0 && owner_known_dead(reg, &w->cur.owner))
        rc = PROCREG_ENOTFOUND;
    if (rc == 0 && w->if_revision != 0 && w->cur.revision != w->if_revision)
        rc = PROCREG_ECONFLICT;
    if (rc != 0)
        return rc;
    w->expect = w->cur.revision;
    procreg_owner self;
    procreg_owner_self(&self);
    if (procreg_owner_same(&w->cur.owner, &self))
        return 0;
    if (!(w->flags & PROCREG_FORCE)) {
        procreg_set_error(
            error, PROCREG_EPERM,
            "'%s' in '%s' is owned by process %d, not by this process (%d): "
            "only its owner may %s it (PROCREG_FORCE overrides)",
            procreg_key_name(key), procreg_key_namespace(key),
            (int)w->cur.owner.pid, (int)self.pid,
            removing ? "unregister" : "update");
        procreg_error_detail_entry(error, procreg_key_namespace(key),
                                   procreg_key_name(key), &w->cur);
        return PROCREG_EPERM;
    }
    w->reason = PROCREG_REASON_FORCED;
    return 0;
}

/* Whether a failed write should read the entry again: another process
 * changed it between our read and our write, and the caller did not pin
 * a revision. */
static bool write_retry(const write_check *w, int rc, int attempt)
{
    return rc == PROCREG_ECONFLICT && w->if_revision == 0 &&
           attempt + 1 < WRITE_ATTEMPTS;
}

/* ---- unregister ---- */

static int unregister_once(procreg *reg, const procreg_key *key,
                           write_check *w, GError **error)
{
    const char *ns = procreg_key_namespace(key), *name = procreg_key_name(key);
    int rc = check_write(reg, key, w, true, error);
    procreg_entry removed = {0};
    if (rc == 0)
        rc = procreg_backend_unregister(reg->backend, key, w->expect,
                                        &removed, error);
    if (rc == 0) {
        procreg_owner_index_remove(reg, ns, name, &removed.owner,
                                   removed.revision);
        procreg_events_emit_own(reg, PROCREG_EVENT_UNREGISTERED, w->reason,
                                ns, name, &removed);
    }
    procreg_entry_clear(&removed);
    return rc;
}

PROCREG_API int procreg_unregister_full(procreg *reg, const procreg_key *key,
                                        uint64_t if_revision, unsigned flags,
                                        GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL, PROCREG_EINVAL);
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_write_clock(reg, b, PROCREG_OP_UNREGISTER);
    write_check w = {.if_revision = if_revision, .flags = flags};
    int rc = check_flags(flags, error);
    pthread_mutex_t *stripe = procreg_stripe_of(reg, key);
    for (int attempt = 0; rc == 0; attempt++) {
        GError *local = NULL;
        pthread_mutex_lock(stripe);
        rc = unregister_once(reg, key, &w, error != NULL ? &local : NULL);
        pthread_mutex_unlock(stripe);
        if (rc == 0 || !write_retry(&w, rc, attempt)) {
            if (rc != 0)
                rc = missing_or(reg, rc, local, key, error);
            break;
        }
        g_clear_error(&local);
        rc = 0;
    }
    procreg_entry_clear(&w.cur);
    procreg_op_done(reg, b, PROCREG_OP_UNREGISTER, rc, t0,
                    procreg_key_namespace(key), procreg_key_name(key),
                    rc == 0);
    return rc;
}

PROCREG_API int procreg_unregister_key(procreg *reg, const procreg_key *key,
                                       uint64_t if_revision, GError **error)
{
    return procreg_unregister_full(reg, key, if_revision, 0, error);
}

PROCREG_API int procreg_unregister(procreg *reg, const char *ns,
                                   const char *name, GError **error)
{
    procreg_stack_key key;
    int rc = procreg_key_init_stack(&key, ns, name, error);
    return rc != 0 ? rc : procreg_unregister_full(reg, &key.key, 0, 0, error);
}

/* ---- update ---- */

/* @old's entries that @update lacks, then all of @update. */
static GVariant *merge_dicts(GVariant *old, GVariant *update)
{
    GVariantDict dict;
    g_variant_dict_init(&dict, old);
    GVariantIter iter;
    const char *k;
    GVariant *v;
    g_variant_iter_init(&iter, update);
    while (g_variant_iter_next(&iter, "{&sv}", &k, &v)) {
        g_variant_dict_insert_value(&dict, k, v);
        g_variant_unref(v);
    }
    return g_variant_ref_sink(g_variant_dict_end(&dict));
}

/* What an update stores: @metadata, or merged into the current one
 * (merging nothing keeps what is there; the revision still moves on). */
static GVariant *metadata_to_store(GVariant *cur, GVariant *metadata,
                                   procreg_update_mode mode)
{
    GVariant *out;
    if (mode != PROCREG_UPDATE_MERGE || cur == NULL)
        out = metadata ? g_variant_ref(metadata) : NULL;
    else if (metadata == NULL)
        out = g_variant_ref(cur);
    else
        out = merge_dicts(cur, metadata);
    metadata_flatten(out);
    return out;
}

static int update_once(procreg *reg, const procreg_key *key, write_check *w,
                       GVariant *metadata, procreg_update_mode mode,
                       uint64_t *revision, GError **error)
{
    int rc = check_write(reg, key, w, false, error);
    if (rc != 0)
        return rc;
    GVariant *to_store = metadata_to_store(w->cur.metadata, metadata, mode);
    procreg_entry updated = {0};
    rc = procreg_backend_update_metadata(reg->backend, key, to_store,
                                         w->expect, &updated, error);
    if (rc == 0) {
        if (revision != NULL)
            *revision = updated.revision;
        procreg_events_emit_own(reg, PROCREG_EVENT_UPDATED,
                                w->reason == PROCREG_REASON_FORCED
                                    ? PROCREG_REASON_FORCED
                                    : PROCREG_REASON_NONE,
                                procreg_key_namespace(key),
                                procreg_key_name(key), &updated);
    }
    procreg_entry_clear(&updated);
    if (to_store != NULL)
        g_variant_unref(to_store);
    return rc;
}

PROCREG_API int procreg_update_metadata_full(procreg *reg,
                                             const procreg_key *key,
                                             GVariant *metadata,
                                             procreg_update_mode mode,
                                             uint64_t if_revision,
                                             unsigned flags,
                                             uint64_t *revision,
                                             GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL, PROCREG_EINVAL);
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_write_clock(reg, b, PROCREG_OP_UPDATE);
    if (metadata != NULL)
        g_variant_ref_sink(metadata);
    metadata_flatten(metadata);
    int rc = procreg_metadata_check(metadata, error);
    if (rc == 0 && mode != PROCREG_UPDATE_REPLACE && mode != PROCREG_UPDATE_MERGE)
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "unknown update mode %d", (int)mode);
    if (rc == 0)
        rc = check_flags(flags, error);
    write_check w = {.if_revision = if_revision, .flags = flags};
    pthread_mutex_t *stripe = procreg_stripe_of(reg, key);
    for (int attempt = 0; rc == 0; attempt++) {
        GError *local = NULL;
        pthread_mutex_lock(stripe);
        rc = update_once(reg, key, &w, metadata, mode, revision,
                         error != NULL ? &local : NULL);
        pthread_mutex_unlock(stripe);
        if (rc == 0 || !write_retry(&w, rc, attempt)) {
            if (rc != 0)
                rc = missing_or(reg, rc, local, key, error);
            break;
        }
        g_clear_error(&local);
        rc = 0;
    }
    procreg_entry_clear(&w.cur);
    if (metadata != NULL)
        g_variant_unref(metadata);
    procreg_op_done(reg, b, PROCREG_OP_UPDATE, rc, t0,
                    procreg_key_namespace(key), procreg_key_name(key),
                    rc == 0);
    return rc;
}

PROCREG_API int procreg_update_metadata_key(procreg *reg,
                                            const procreg_key *key,
                                            GVariant *metadata,
                                            procreg_update_mode mode,
                                            uint64_t if_revision,
                                            uint64_t *revision,
                                            GError **error)
{
    return procreg_update_metadata_full(reg, key, metadata, mode, if_revision,
                                        0, revision, error);
}

PROCREG_API int procreg_update_metadata(procreg *reg, const char *ns,
                                        const char *name, GVariant *metadata,
                                        procreg_update_mode mode,
                                        GError **error)
{
    procreg_stack_key key;
    int rc = procreg_key_init_stack(&key, ns, name, error);
    if (rc != 0) {
        if (metadata != NULL && g_variant_is_floating(metadata))
            g_variant_unref(g_variant_ref_sink(metadata));
        return rc;
    }
    return procreg_update_metadata_full(reg, &key.key, metadata, mode, 0, 0,
                                        NULL, error);
}

/* ---- listing, counting, finding ---- */

static int check_ns(const char *ns, GError **error)
{
    return ns == NULL ? 0 : procreg_validate_name(ns, "namespace", error);
}

PROCREG_API int procreg_list(procreg *reg, const char *ns, procreg_entry **out,
                             size_t *n_out, GError **error)
{
    *out = NULL;
    *n_out = 0;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    int rc = check_ns(ns, error);
    GArray *all = procreg_entry_array_new();
    bool pending = dead_pending(reg);
    if (rc == 0)
        rc = procreg_backend_list_all(reg->backend, ns, all, error);
    if (rc == 0) {
        filter_dead(reg, all, pending);
        procreg_entry_array_steal(all, out, n_out);
    } else {
        g_array_unref(all);
    }
    procreg_op_done(reg, b, PROCREG_OP_LIST, rc, t0, ns, NULL, *n_out);
    return rc;
}

PROCREG_API int procreg_count(procreg *reg, const char *ns, size_t *out,
                              GError **error)
{
    *out = 0;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    int rc = check_ns(ns, error);
    if (rc == 0 && dead_pending(reg)) {
        /* Count what list shows: not the entries of owners known dead. */
        GArray *all = procreg_entry_array_new();
        rc = procreg_backend_list_all(reg->backend, ns, all, error);
        filter_dead(reg, all, true);
        *out = rc == 0 ? all->len : 0;
        g_array_unref(all);
    } else if (rc == 0) {
        rc = procreg_backend_count(reg->backend, ns, out, error);
    }
    procreg_op_done(reg, b, PROCREG_OP_LIST, rc, t0, ns, NULL, *out);
    return rc;
}

PROCREG_INTERNAL int procreg_find_check(const char *ns, const char *meta_key,
                                        GVariant *value, GError **error)
{
    int rc = check_ns(ns, error);
    if (rc != 0)
        return rc;
    if (meta_key == NULL || *meta_key == '\0')
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "metadata key is empty");
    if (!g_utf8_validate(meta_key, -1, NULL))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "metadata key is not valid UTF-8");
    if (!procreg_metadata_value_indexable(value))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "find matches strings, booleans and "
                                 "integers, not %s",
                                 value ? g_variant_get_type_string(value)
                                       : "NULL");
    return 0;
}

static int find_into(procreg *reg, const char *ns, const char *meta_key,
                     GVariant *value, GArray *out, GError **error)
{
    if (value != NULL)
        g_variant_ref_sink(value);
    int rc = procreg_find_check(ns, meta_key, value, error);
    if (rc == 0)
        rc = procreg_backend_find_by_metadata(reg->backend, ns, meta_key,
                                              value, out, error);
    if (value != NULL)
        g_variant_unref(value);
    return rc;
}

PROCREG_API int procreg_find(procreg *reg, const char *ns,
                             const char *meta_key, GVariant *value,
                             procreg_entry **out, size_t *n_out,
                             GError **error)
{
    *out = NULL;
    *n_out = 0;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    GArray *found = procreg_entry_array_new();
    bool pending = dead_pending(reg);
    int rc = find_into(reg, ns, meta_key, value, found, error);
    if (rc == 0) {
        filter_dead(reg, found, pending);
        procreg_entry_array_steal(found, out, n_out);
    } else {
        g_array_unref(found);
    }
    procreg_op_done(reg, b, PROCREG_OP_FIND, rc, t0, ns, NULL, *n_out);
    return rc;
}

PROCREG_API int procreg_find_count(procreg *reg, const char *ns,
                                   const char *meta_key, GVariant *value,
                                   size_t *out, GError **error)
{
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    GArray *found = procreg_entry_array_new();
    bool pending = dead_pending(reg);
    int rc = find_into(reg, ns, meta_key, value, found, error);
    if (rc == 0)
        filter_dead(reg, found, pending);
    *out = rc == 0 ? found->len : 0;
    g_array_unref(found);
    procreg_op_done(reg, b, PROCREG_OP_FIND, rc, t0, ns, NULL, *out);
    return rc;
}
