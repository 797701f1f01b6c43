/*
 * The registry's writes: register, unregister and update_metadata, and
 * the owner rule they apply.  Each write validates, holds its key's
 * stripe across the backend call, the owner index update and the event
 * enqueue, and is counted in the calling thread's counter block and
 * reported to telemetry.  A register evicts a dead holder of its key.
 * Relies on: registry.c for its not-found errors, dispatch.c for the
 * backend, owner-index.c for owners known dead, events.c for the events.
 */
#include "internal.h"

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

/* procreg_resolve_owner() (internal.h) of a given owner: a live process,
 * with its start time filled in so a reused pid never matches. */
PROCREG_INTERNAL int procreg_resolve_owner_pid(const procreg_owner *given,
                                               procreg_owner *out,
                                               GError **error)
{
    int rc = procreg_owner_from_pid(given->pid, out, error);
    if (rc != 0)
        return rc;
    /* A hidden process (start time 0 here, procreg.h): the caller's start
     * time cannot be checked, and is kept for those who can see it. */
    if (out->start_time == 0)
        out->start_time = given->start_time;
    else if (given->start_time != 0 && given->start_time != out->start_time)
        return procreg_set_error(error, PROCREG_ENOTALIVE,
                                 "process %d is not alive (its pid now "
                                 "belongs to another process)",
                                 (int)given->pid);
    return 0;
}

/* Whether @holder's process is gone, found here before any monitor (on
 * a backend whose owners all live on this host; never this process);
 * the death is then marked as the monitor's where this registry watches
 * the owner (*@marked, procreg_owner_seen_dead()). */
static bool found_dead(procreg *reg, const procreg_owner *holder,
                       bool *marked)
{
    *marked = false;
    if (!reg->owners_local)
        return false;
    procreg_owner self;
    procreg_owner_self_fast(&self);
    if (procreg_owner_same(holder, &self) || procreg_owner_is_alive(holder))
        return false;
    *marked = procreg_owner_seen_dead(reg, holder);
    return true;
}

/* Whether the holder of a key is dead: known to the monitor, or found
 * dead (it may have died a moment ago, before any monitor noticed: a dead
 * holder must never block its key, which the caller then evicts).  Asked
 * on a conflict, and after a write by procreg_owner_died_meanwhile()
 * (internal.h). */
PROCREG_INTERNAL bool procreg_holder_dead(procreg *reg,
                                          const procreg_owner *holder)
{
    if (procreg_owner_known_dead_fast(reg, holder))
        return true;
#ifdef PROCREG_TEST_FORCE_DEAD_HOLDER
    /* Test builds only (tests/history/meson.build): a holder dead before
     * the monitor knew it; the monitor, which holds that death back until
     * a register has met it so (liveness.c), may go on now. */
    if (reg->owners_local && !procreg_owner_is_alive(holder))
        atomic_store(&procreg_test_dead_holder_met, holder->pid);
#endif
#ifdef PROCREG_INJECT_DEAD_HOLDER
    /* Test builds only (tests/history): trust the monitor alone, as before
     * this check, so the history checker can prove it catches a register
     * that reports a dead holder. */
    return false;
#endif
    bool marked;
    return found_dead(reg, holder, &marked);
}

/* For a write's owner check, which removes nothing: whether the holder's
 * entry is gone for every read after it too.  Known dead, or found dead
 * and marked so; an owner this registry does not watch (written by
 * another process of a shared backend) is the backend's to judge, since
 * its reads show the entry until its own view of liveness has the death
 * (an lmdb history run: an update answered ENOTFOUND and a lookup 37 us
 * later found the entry).  /core/writes/unwatched-dead-holder. */
static bool holder_gone(procreg *reg, const procreg_owner *holder)
{
    bool marked;
    return procreg_owner_known_dead_fast(reg, holder) ||
           (found_dead(reg, holder, &marked) && marked);
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
        procreg_owner_exit_removed(reg, procreg_key_ns_of(key),
                                   procreg_key_name_of(key), &gone, t0);
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
    if (!procreg_holder_dead(reg, &holder->owner))
        return false;
    procreg_mutex *stripe = procreg_stripe_of(reg, key);
    procreg_mutex_lock(stripe);
    bool gone = evict_dead_holder(reg, key, holder);
    procreg_mutex_unlock(stripe);
    return gone;
}

/* Tries of a registration whose key a dead holder keeps (each evicts the
 * holder it read first). */
#define DEAD_HOLDER_ATTEMPTS 4

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
    const char *ns = procreg_key_ns_of(key), *name = procreg_key_name_of(key);
    int rc = reserved_ok ? 0 : procreg_key_check_writable(key, error);
    if (rc == 0)
        rc = procreg_metadata_check(metadata, error);
    if (rc == 0)
        rc = procreg_resolve_owner(owner, &record.owner, error);
    if (rc == 0) {
        GError *local = NULL;
        procreg_entry cur = {0};
        procreg_mutex *stripe = procreg_stripe_of(reg, key);
        procreg_mutex_lock(stripe);
        GError **lp = error != NULL ? &local : NULL;
        /* A dead holder loses its key: its entry is evicted at the
         * revision it was read at, and the registration tried again.
         * Again also when the eviction finds the key changed hands
         * (another process reaped the holder and registered, say): an
         * EEXISTS names the holder the last try read, never a dead one
         * whose entry is already gone. */
        for (int attempt = 1;; attempt++) {
            rc = procreg_backend_register_entry(reg->backend, key, &record,
                                                &cur, lp);
            if (rc != PROCREG_EEXISTS ||
                !procreg_holder_dead(reg, &cur.owner))
                break;
            if (procreg_owner_same(&cur.owner, &record.owner)) {
                /* The owner we register for died since resolve_owner()
                 * saw it alive: its old entry is part of its death, and a
                 * new one would bring a dead process back. */
                g_clear_error(&local);
                rc = procreg_set_error(lp, PROCREG_ENOTALIVE,
                                       "process %d is not alive",
                                       (int)record.owner.pid);
                break;
            }
            (void)evict_dead_holder(reg, key, &cur);
            if (attempt == DEAD_HOLDER_ATTEMPTS)
                break; /* the eviction keeps failing: the conflict stands */
            procreg_entry_clear(&cur);
            g_clear_error(&local);
        }
        if (rc == 0 && reg->writes_local &&
            procreg_owner_died_meanwhile(reg, &record.owner)) {
            /* The owner died after resolve_owner() saw it alive (while
             * this call waited for its stripe, say): its death may have
             * been cleaned up already, and this entry would bring a dead
             * process back.  Undone before the stripe lets another writer
             * of the key in, and before any event; lock-free readers may
             * see the entry until then (procreg.h says so, and the
             * history checker allows it: tests/history/model.c).  Only
             * where the stripe excludes every writer: a shared backend
             * checks the owner in its own commit (lmdb), and there another
             * process may change the entry before an undo. */
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
        procreg_mutex_unlock(stripe);
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
            procreg_entry_clear_fast(&cur);
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

/* ---- the owner rule: unregister and update ---- */

static int missing_or(procreg *reg, int rc, GError *local,
                      const procreg_key *key, GError **error)
{
    if (rc == PROCREG_ENOTFOUND) {
        g_clear_error(&local);
        return procreg_not_found(reg, key, error);
    }
    if (rc == PROCREG_ECONFLICT && local == NULL)
        procreg_set_error(&local, rc,
                          "'%s' in '%s' changed since the revision given",
                          procreg_key_name_of(key), procreg_key_ns_of(key));
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
 * The owner rule for an unregister at no revision, when the caller owns
 * the entry (the common case): 0 (removed, @removed and w set),
 * PROCREG_ENOTFOUND, or 1 when the caller must take the general path
 * (check_write(): not our entry, this process known dead, or a backend
 * failure).
 *
 * With the backend's unregister_owned slot, the check and the removal are
 * one step of the backend (one probe), so no write can come between them
 * on any backend.  A refusal (another owner's entry) changed nothing and
 * sends the caller down the general path, which reads the holder and
 * answers PROCREG_EPERM with its details, PROCREG_ENOTFOUND when it is
 * known dead, or removes it with PROCREG_FORCE.
 *
 * Without the slot, and only on a backend whose entries only this
 * registry's writes replace (writes_local): the owner alone decides, so
 * the check reads it with the backend's hot lookup instead of a whole
 * entry, and the write goes ahead at no revision.  Sound because the
 * caller holds the key's stripe: no write through this registry can
 * replace the entry between the read and the write, and nothing else can
 * (an entry that vanishes meanwhile, say expired, makes the write fail
 * with PROCREG_ENOTFOUND, as it would have).
 */
static int remove_own(procreg *reg, const procreg_key *key, write_check *w,
                      procreg_entry *removed, GError **error)
{
    procreg_owner self;
    procreg_owner_self_fast(&self);
    /* The general path answers PROCREG_ENOTFOUND for an entry whose owner
     * is known dead, ours included. */
    if (procreg_owner_known_dead_fast(reg, &self))
        return 1;
    w->expect = 0;
    w->reason = PROCREG_REASON_EXPLICIT;
    int rc = procreg_backend_unregister_owned(reg->backend, key, &self,
                                              removed);
    if (rc == 0 || rc == PROCREG_ENOTFOUND)
        return rc;
    if (rc != PROCREG_ENOTSUP || !reg->writes_local)
        return 1;
    procreg_owner holder;
    rc = procreg_backend_lookup(reg->backend, key, &holder);
    if (rc == PROCREG_ENOTFOUND)
        return rc;
    if (rc != 0 || !procreg_owner_same(&holder, &self))
        return 1;
    return procreg_backend_unregister(reg->backend, key, 0, removed, error);
}

/* Read the entry and apply the owner rule: 0 (w->cur, w->expect and
 * w->reason set), PROCREG_ENOTFOUND (absent, or its owner is dead:
 * holder_gone()), PROCREG_ECONFLICT, PROCREG_EPERM, or the backend's
 * failure.  A forced unregister of an entry the backend cannot read (a damaged
 * record) goes ahead by name: that is how an operator repairs it. */
static int check_write(procreg *reg, const procreg_key *key, write_check *w,
                       bool removing, GError **error)
{
    procreg_entry_clear_fast(&w->cur);
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
    if (rc == 0 && holder_gone(reg, &w->cur.owner))
        rc = PROCREG_ENOTFOUND;
    if (rc == 0 && w->if_revision != 0 && w->cur.revision != w->if_revision)
        rc = PROCREG_ECONFLICT;
    if (rc != 0)
        return rc;
    w->expect = w->cur.revision;
    procreg_owner self;
    procreg_owner_self_fast(&self);
    if (procreg_owner_same(&w->cur.owner, &self))
        return 0;
    if (!(w->flags & PROCREG_FORCE)) {
        procreg_set_error(
            error, PROCREG_EPERM,
            "'%s' in '%s' is owned by process %d, not by this process (%d): "
            "only its owner may %s it (PROCREG_FORCE overrides)",
            procreg_key_name_of(key), procreg_key_ns_of(key),
            (int)w->cur.owner.pid, (int)self.pid,
            removing ? "unregister" : "update");
        procreg_error_detail_entry(error, procreg_key_ns_of(key),
                                   procreg_key_name_of(key), &w->cur);
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
    const char *ns = procreg_key_ns_of(key), *name = procreg_key_name_of(key);
    procreg_entry removed = {0};
    int rc = w->if_revision == 0 ? remove_own(reg, key, w, &removed, error)
                                 : 1;
    if (rc == 1) {
        rc = check_write(reg, key, w, true, error);
        if (rc == 0)
            rc = procreg_backend_unregister(reg->backend, key, w->expect,
                                            &removed, error);
    }
    if (rc == 0) {
        procreg_owner_index_remove(reg, ns, name, &removed.owner,
                                   removed.revision);
        procreg_events_emit_own(reg, PROCREG_EVENT_UNREGISTERED, w->reason,
                                ns, name, &removed);
    }
    procreg_entry_clear_fast(&removed);
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
    procreg_mutex *stripe = procreg_stripe_of(reg, key);
    for (int attempt = 0; rc == 0; attempt++) {
        GError *local = NULL;
        procreg_mutex_lock(stripe);
        rc = unregister_once(reg, key, &w, error != NULL ? &local : NULL);
        procreg_mutex_unlock(stripe);
        if (rc == 0 || !write_retry(&w, rc, attempt)) {
            if (rc != 0)
                rc = missing_or(reg, rc, local, key, error);
            break;
        }
        g_clear_error(&local);
        rc = 0;
    }
    procreg_entry_clear_fast(&w.cur);
    procreg_op_done(reg, b, PROCREG_OP_UNREGISTER, rc, t0,
                    procreg_key_ns_of(key), procreg_key_name_of(key),
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
                                procreg_key_ns_of(key),
                                procreg_key_name_of(key), &updated);
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
    procreg_mutex *stripe = procreg_stripe_of(reg, key);
    for (int attempt = 0; rc == 0; attempt++) {
        GError *local = NULL;
        procreg_mutex_lock(stripe);
        rc = update_once(reg, key, &w, metadata, mode, revision,
                         error != NULL ? &local : NULL);
        procreg_mutex_unlock(stripe);
        if (rc == 0 || !write_retry(&w, rc, attempt)) {
            if (rc != 0)
                rc = missing_or(reg, rc, local, key, error);
            break;
        }
        g_clear_error(&local);
        rc = 0;
    }
    procreg_entry_clear_fast(&w.cur);
    if (metadata != NULL)
        g_variant_unref(metadata);
    procreg_op_done(reg, b, PROCREG_OP_UPDATE, rc, t0,
                    procreg_key_ns_of(key), procreg_key_name_of(key),
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
