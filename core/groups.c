/*
 * Groups, the public API of duplicate keys (procreg.h, "Groups"): it
 * validates, then calls the backend's group slots through dispatch.c, with
 * the service layer wired in as for entries:
 *  - a write (join, leave; a dead owner's cleanup in liveness.c, a
 *    namespace drop in namespaces.c) holds the group's stripe across the
 *    backend call, the owner index update and the event enqueue, so the
 *    events of one group follow the backend's order;
 *  - members of owners other than this process are indexed under their
 *    owner (owner-index.c), whose monitor (liveness.c) removes them
 *    when it dies;
 *  - reads leave out members whose owner is known dead, as lookups do;
 *  - every call is counted (PROCREG_OP_JOIN, _LEAVE, _MEMBERS, _DISPATCH)
 *    and reported to telemetry.
 */
#include "internal.h"

#include <string.h>

static int need_groups(procreg *reg, GError **error)
{
    if (G_LIKELY(reg->groups))
        return 0;
    return procreg_set_error(error, PROCREG_ENOTSUP,
                             "backend '%s' has no groups (duplicate keys)",
                             reg->ops->name);
}

/* The key of group (ns, group), its name checked as a group's. */
static int group_key(procreg_stack_key *buf, const char *ns, const char *group,
                     GError **error)
{
    int rc = procreg_validate_name(group, "group", error);
    return rc != 0 ? rc : procreg_key_init_stack(buf, ns, group, error);
}

static void filter_dead_members(procreg *reg, GArray *a, bool pending)
{
    if (!pending && !procreg_dead_pending(reg))
        return;
    procreg_owner self;
    procreg_owner_self(&self);
    for (guint i = a->len; i-- > 0;)
        if (procreg_owner_gone(reg,
                               &g_array_index(a, procreg_member, i).owner,
                               pending, &self))
            g_array_remove_index(a, i);
}

/* A member's event with the names of @key filled in where the backend
 * left them NULL. */
static void emit_member(procreg *reg, procreg_event_kind kind,
                        procreg_event_reason reason, const procreg_key *key,
                        const procreg_member *m)
{
    procreg_member view = *m;
    view.ns = (char *)procreg_key_namespace(key);
    view.group = (char *)procreg_key_name(key);
    procreg_events_emit_member(reg, kind, reason, &view, false);
}

/* ---- join ---- */

PROCREG_API int procreg_join_key(procreg *reg, const procreg_key *key,
                                 const procreg_owner *owner,
                                 GVariant *metadata, procreg_member *joined,
                                 GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL, PROCREG_EINVAL);
    if (joined != NULL)
        memset(joined, 0, sizeof *joined);
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_write_clock(reg, b, PROCREG_OP_JOIN);
    if (metadata != NULL) {
        g_variant_ref_sink(metadata);
        /* Serialised here, once: readers never do it (see writes.c). */
        (void)g_variant_get_data(metadata);
    }
    procreg_record record = {.metadata = metadata,
                             .registered_at = g_get_real_time()};
    int rc = need_groups(reg, error);
    if (rc == 0)
        rc = procreg_metadata_check(metadata, error);
    if (rc == 0)
        rc = procreg_resolve_owner(owner, &record.owner, error);
    const char *ns = procreg_key_namespace(key);
    const char *group = procreg_key_name(key);
    if (rc == 0) {
        procreg_member m = {0};
        procreg_mutex *stripe = procreg_stripe_of(reg, key);
        procreg_mutex_lock(stripe);
        rc = procreg_backend_group_join(reg->backend, key, &record, &m, error);
        if (rc == 0 && reg->writes_local &&
            procreg_owner_died_meanwhile(reg, &record.owner)) {
            /* As writes.c's register: undone before any event. */
            procreg_backend_group_leave(reg->backend, key, m.id,
                                        &record.owner,
                                        PROCREG_REASON_OWNER_EXITED, NULL,
                                        NULL);
            procreg_member_clear(&m);
            rc = procreg_set_error(error, PROCREG_ENOTALIVE,
                                   "process %d is not alive (it died during "
                                   "the join)",
                                   (int)record.owner.pid);
        }
        if (rc == 0) {
            procreg_owner_index_add_member(reg, ns, group, &m.owner, m.id);
            if (!reg->backend_orders_events)
                emit_member(reg, PROCREG_EVENT_JOINED, PROCREG_REASON_NONE,
                            key, &m);
        }
        procreg_mutex_unlock(stripe);
        if (rc == 0 && joined != NULL)
            *joined = m;
        else
            procreg_member_clear(&m);
    }
    if (metadata != NULL)
        g_variant_unref(metadata);
    procreg_op_done(reg, b, PROCREG_OP_JOIN, rc, t0, ns, group, rc == 0);
    return rc;
}

PROCREG_API int procreg_join(procreg *reg, const char *ns, const char *group,
                             const procreg_owner *owner, GVariant *metadata,
                             procreg_member *joined, GError **error)
{
    procreg_stack_key key;
    int rc = group_key(&key, ns, group, error);
    if (rc != 0) {
        /* The call consumed a floating reference either way. */
        if (metadata != NULL && g_variant_is_floating(metadata))
            g_variant_unref(g_variant_ref_sink(metadata));
        if (joined != NULL)
            memset(joined, 0, sizeof *joined);
        return rc;
    }
    return procreg_join_key(reg, &key.key, owner, metadata, joined, error);
}

/* ---- leave ---- */

/* Remove members of @key through the backend, the group's stripe held,
 * and report them (procreg_members_gone()).  @filter: as the group_leave
 * slot's @owner.  Returns how many went, or a failure. */
static int leave_locked(procreg *reg, const procreg_key *key,
                        uint64_t member_id, const procreg_owner *filter,
                        procreg_event_reason reason, GError **error)
{
    procreg_owner self;
    procreg_owner_self(&self);
    /* This process's members are not indexed (owner-index.c): a leave of our
     * own, nobody listening, needs no copy of what went. */
    bool report = !reg->backend_orders_events && procreg_events_wanted(reg);
    bool index = filter == NULL || !procreg_owner_same(filter, &self);
    GArray *gone = report || index ? procreg_member_array_new() : NULL;
    int rc = procreg_backend_group_leave(reg->backend, key, member_id, filter,
                                         reason, gone, error);
    if (gone != NULL) {
        procreg_members_gone(reg, key, gone, reason, 0);
        g_array_unref(gone);
    }
    return rc;
}

static int check_leave_flags(unsigned flags, GError **error)
{
    return (flags & ~(unsigned)PROCREG_FORCE) == 0
               ? 0
               : procreg_set_error(error, PROCREG_EINVAL,
                                   "unknown leave flags 0x%x", flags);
}

PROCREG_API int procreg_leave_key(procreg *reg, const procreg_key *key,
                                  uint64_t member_id, unsigned flags,
                                  size_t *removed, GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL, PROCREG_EINVAL);
    if (removed != NULL)
        *removed = 0;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_write_clock(reg, b, PROCREG_OP_LEAVE);
    size_t gone = 0;
    int rc = need_groups(reg, error);
    if (rc == 0)
        rc = check_leave_flags(flags, error);
    if (rc == 0) {
        procreg_owner self;
        procreg_owner_self(&self);
        procreg_mutex *stripe = procreg_stripe_of(reg, key);
        bool force = member_id != 0 && (flags & PROCREG_FORCE);
        procreg_mutex_lock(stripe);
        /* Our own members first, reason explicit; a forced leave of
         * another's member is tried only when that is what it is (the
         * first try's PROCREG_EPERM), so its event says forced. */
        rc = leave_locked(reg, key, member_id, &self, PROCREG_REASON_EXPLICIT,
                          force ? NULL : error);
        if (rc == PROCREG_EPERM && force)
            rc = leave_locked(reg, key, member_id, NULL,
                              PROCREG_REASON_FORCED, error);
        procreg_mutex_unlock(stripe);
        if (rc > 0) {
            gone = (size_t)rc;
            rc = 0;
        }
    }
    if (removed != NULL)
        *removed = gone;
    procreg_op_done(reg, b, PROCREG_OP_LEAVE, rc, t0,
                    procreg_key_namespace(key), procreg_key_name(key), gone);
    return rc;
}

PROCREG_API int procreg_leave(procreg *reg, const char *ns, const char *group,
                              size_t *removed, GError **error)
{
    procreg_stack_key key;
    int rc = group_key(&key, ns, group, error);
    if (rc != 0) {
        if (removed != NULL)
            *removed = 0;
        return rc;
    }
    return procreg_leave_key(reg, &key.key, 0, 0, removed, error);
}

/* ---- reading ---- */

PROCREG_API int procreg_members_key(procreg *reg, const procreg_key *key,
                                    procreg_member **out, size_t *n_out,
                                    GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL && out != NULL &&
                             n_out != NULL,
                         PROCREG_EINVAL);
    *out = NULL;
    *n_out = 0;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    GArray *a = procreg_member_array_new();
    bool pending = procreg_dead_pending(reg);
    int rc = need_groups(reg, error);
    if (rc == 0)
        rc = procreg_backend_group_members(reg->backend, key, a, error);
    if (rc == 0) {
        filter_dead_members(reg, a, pending);
        /* The group_members slot gives them in id order. */
        procreg_member_array_take(a, out, n_out);
    } else {
        g_array_unref(a);
    }
    procreg_op_done(reg, b, PROCREG_OP_MEMBERS, rc, t0,
                    procreg_key_namespace(key), procreg_key_name(key), *n_out);
    return rc;
}

PROCREG_API int procreg_members(procreg *reg, const char *ns,
                                const char *group, procreg_member **out,
                                size_t *n_out, GError **error)
{
    procreg_stack_key key;
    int rc = group_key(&key, ns, group, error);
    if (rc != 0) {
        *out = NULL;
        *n_out = 0;
        return rc;
    }
    return procreg_members_key(reg, &key.key, out, n_out, error);
}

/* The number of members of @key that reads show. */
static int count_live(procreg *reg, const procreg_key *key, size_t *out,
                      GError **error)
{
    if (!procreg_dead_pending(reg))
        return procreg_backend_group_count(reg->backend, key, out, error);
    GArray *a = procreg_member_array_new();
    int rc = procreg_backend_group_members(reg->backend, key, a, error);
    filter_dead_members(reg, a, true);
    *out = rc == 0 ? a->len : 0;
    g_array_unref(a);
    return rc;
}

PROCREG_API int procreg_group_count_key(procreg *reg, const procreg_key *key,
                                        size_t *out, GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL && out != NULL,
                         PROCREG_EINVAL);
    *out = 0;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    int rc = need_groups(reg, error);
    if (rc == 0)
        rc = count_live(reg, key, out, error);
    procreg_op_done(reg, b, PROCREG_OP_MEMBERS, rc, t0,
                    procreg_key_namespace(key), procreg_key_name(key), *out);
    return rc;
}

PROCREG_API int procreg_group_count(procreg *reg, const char *ns,
                                    const char *group, size_t *out,
                                    GError **error)
{
    procreg_stack_key key;
    int rc = group_key(&key, ns, group, error);
    if (rc != 0) {
        *out = 0;
        return rc;
    }
    return procreg_group_count_key(reg, &key.key, out, error);
}

static gint group_info_cmp(gconstpointer a, gconstpointer b)
{
    const procreg_group_info *x = a, *y = b;
    int c = strcmp(x->ns, y->ns);
    return c != 0 ? c : strcmp(x->group, y->group);
}

PROCREG_API int procreg_groups(procreg *reg, const char *ns,
                               procreg_group_info **out, size_t *n_out,
                               GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL && n_out != NULL,
                         PROCREG_EINVAL);
    *out = NULL;
    *n_out = 0;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    int rc = ns == NULL ? 0 : procreg_validate_name(ns, "namespace", error);
    if (rc == 0)
        rc = need_groups(reg, error);
    GArray *infos = procreg_group_info_array_new();
    if (rc == 0)
        rc = procreg_backend_group_list(reg->backend, ns, infos, error);
    if (rc == 0 && infos->len > 0) {
        g_array_sort(infos, group_info_cmp);
        g_array_set_clear_func(infos, NULL);
        *n_out = infos->len;
        *out = (procreg_group_info *)(void *)g_array_free(infos, FALSE);
    } else {
        g_array_unref(infos);
    }
    procreg_op_done(reg, b, PROCREG_OP_MEMBERS, rc, t0, ns, NULL, *n_out);
    return rc;
}

PROCREG_API int procreg_memberships(procreg *reg, pid_t pid,
                                    procreg_member **out, size_t *n_out,
                                    GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL && n_out != NULL,
                         PROCREG_EINVAL);
    *out = NULL;
    *n_out = 0;
    if (pid <= 0)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "pid %d is not a process id", (int)pid);
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    GArray *all = procreg_member_array_new();
    bool pending = procreg_dead_pending(reg);
    int rc = need_groups(reg, error);
    if (rc == 0)
        rc = procreg_backend_group_list_all(reg->backend, NULL, all, error);
    if (rc == 0) {
        for (guint i = all->len; i-- > 0;)
            if (g_array_index(all, procreg_member, i).owner.pid != pid)
                g_array_remove_index_fast(all, i);
        filter_dead_members(reg, all, pending);
        procreg_member_array_steal(all, out, n_out);
    } else {
        g_array_unref(all);
    }
    procreg_op_done(reg, b, PROCREG_OP_MEMBERS, rc, t0, NULL, NULL, *n_out);
    return rc;
}

PROCREG_API int procreg_find_members(procreg *reg, const char *ns,
                                     const char *group, const char *meta_key,
                                     GVariant *value, procreg_member **out,
                                     size_t *n_out, GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL && n_out != NULL,
                         PROCREG_EINVAL);
    *out = NULL;
    *n_out = 0;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    if (value != NULL)
        g_variant_ref_sink(value);
    int rc = procreg_find_check(ns, meta_key, value, error);
    if (rc == 0 && group != NULL)
        rc = ns == NULL ? procreg_set_error(error, PROCREG_EINVAL,
                                            "finding in group '%s' needs a "
                                            "namespace", group)
                        : procreg_validate_name(group, "group", error);
    if (rc == 0)
        rc = need_groups(reg, error);
    GArray *found = procreg_member_array_new();
    bool pending = procreg_dead_pending(reg);
    if (rc == 0)
        rc = procreg_backend_group_find(reg->backend, ns, group, meta_key,
                                        value, found, error);
    if (rc == 0) {
        filter_dead_members(reg, found, pending);
        procreg_member_array_steal(found, out, n_out);
    } else {
        g_array_unref(found);
    }
    if (value != NULL)
        g_variant_unref(value);
    procreg_op_done(reg, b, PROCREG_OP_MEMBERS, rc, t0, ns, group, *n_out);
    return rc;
}

/* ---- picking one ---- */

/* Random bits for a pick: a per-thread xorshift, seeded once. */
static uint64_t pick_random(void)
{
    static __thread uint64_t state
        __attribute__((tls_model("initial-exec")));
    if (G_UNLIKELY(state == 0))
        state = ((uint64_t)g_random_int() << 32 | g_random_int()) | 1;
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545f4914f6cdd1dull;
}

/* While a dead owner's cleanup is pending, pick among the members reads
 * show, as the backend's group_pick would among all. */
static int pick_live(procreg *reg, const procreg_key *key, bool round_robin,
                     uint64_t arg, procreg_member *out, GError **error)
{
    GArray *a = procreg_member_array_new();
    int rc = procreg_backend_group_members(reg->backend, key, a, error);
    filter_dead_members(reg, a, true);
    guint at = a->len; /* the members come in id order */
    if (rc == 0 && a->len > 0) {
        at = round_robin ? 0 : (guint)(arg % a->len);
        for (guint i = 0; round_robin && i < a->len; i++) {
            if (g_array_index(a, procreg_member, i).id > arg) {
                at = i;
                break;
            }
        }
    }
    if (rc == 0 && at == a->len)
        rc = PROCREG_ENOTFOUND;
    if (rc == 0) {
        *out = g_array_index(a, procreg_member, at);
        memset(&g_array_index(a, procreg_member, at), 0, sizeof *out);
    }
    g_array_unref(a);
    return rc;
}

PROCREG_API int procreg_pick_member_key(procreg *reg, const procreg_key *key,
                                        uint64_t *cursor, procreg_member *out,
                                        GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL && out != NULL,
                         PROCREG_EINVAL);
    memset(out, 0, sizeof *out);
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    bool round_robin = cursor != NULL;
    uint64_t arg = round_robin ? *cursor : pick_random();
    GError *local = NULL;
    int rc = need_groups(reg, error);
    if (rc == 0)
        rc = procreg_dead_pending(reg)
                 ? pick_live(reg, key, round_robin, arg, out, &local)
                 : procreg_backend_group_pick(reg->backend, key, round_robin,
                                              arg, out, &local);
    if (rc == 0 && round_robin)
        *cursor = out->id;
    if (rc == PROCREG_ENOTFOUND) {
        g_clear_error(&local);
        procreg_set_error(error, rc, "group '%s' in '%s' has no members",
                          procreg_key_name(key), procreg_key_namespace(key));
    } else if (local != NULL) {
        g_propagate_error(error, local);
    }
    procreg_op_done(reg, b, PROCREG_OP_MEMBERS, rc, t0,
                    procreg_key_namespace(key), procreg_key_name(key),
                    rc == 0);
    return rc;
}

PROCREG_API int procreg_pick_member(procreg *reg, const char *ns,
                                    const char *group, uint64_t *cursor,
                                    procreg_member *out, GError **error)
{
    procreg_stack_key key;
    int rc = group_key(&key, ns, group, error);
    if (rc != 0) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    return procreg_pick_member_key(reg, &key.key, cursor, out, error);
}

/* ---- dispatch ---- */

/* While a dead owner's cleanup is pending: @fn, for members reads show. */
typedef struct {
    procreg *reg;
    procreg_member_fn fn;
    gpointer user_data;
    procreg_owner self;
    size_t called;
} live_only;

static bool call_if_live(const procreg_member *m, gpointer data)
{
    live_only *l = data;
    if (procreg_owner_gone(l->reg, &m->owner, true, &l->self))
        return true;
    l->called++;
    return l->fn(m, l->user_data);
}

PROCREG_API int procreg_dispatch_key(procreg *reg, const procreg_key *key,
                                     procreg_member_fn fn, gpointer user_data,
                                     size_t *n_called, GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL, PROCREG_EINVAL);
    if (n_called != NULL)
        *n_called = 0;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    size_t called = 0;
    int rc = fn == NULL ? procreg_set_error(error, PROCREG_EINVAL,
                                            "dispatch callback is NULL")
                        : need_groups(reg, error);
    if (rc == 0 && !procreg_dead_pending(reg)) {
        rc = procreg_backend_group_dispatch(reg->backend, key, fn, user_data,
                                            &called, error);
    } else if (rc == 0) {
        live_only l = {reg, fn, user_data, {0}, 0};
        procreg_owner_self(&l.self);
        size_t visited;
        rc = procreg_backend_group_dispatch(reg->backend, key, call_if_live,
                                            &l, &visited, error);
        called = l.called;
    }
    if (n_called != NULL)
        *n_called = called;
    procreg_op_done(reg, b, PROCREG_OP_DISPATCH, rc, t0,
                    procreg_key_namespace(key), procreg_key_name(key), called);
    return rc;
}

PROCREG_API int procreg_dispatch(procreg *reg, const char *ns,
                                 const char *group, procreg_member_fn fn,
                                 gpointer user_data, size_t *n_called,
                                 GError **error)
{
    procreg_stack_key key;
    int rc = group_key(&key, ns, group, error);
    if (rc != 0) {
        if (n_called != NULL)
            *n_called = 0;
        return rc;
    }
    return procreg_dispatch_key(reg, &key.key, fn, user_data, n_called,
                                error);
}

/* ---- waiting for members ---- */

typedef struct {
    const procreg_key *key;
    size_t want;
    size_t have;
} size_probe;

static int enough_members(procreg *reg, void *ctx, GError **error)
{
    size_probe *p = ctx;
    int rc = count_live(reg, p->key, &p->have, error);
    return rc != 0 ? rc : p->have >= p->want ? 0 : PROCREG_ENOTFOUND;
}

PROCREG_API int procreg_wait_members_key(procreg *reg, const procreg_key *key,
                                         size_t min_members, int timeout_ms,
                                         GCancellable *cancellable,
                                         size_t *n_out, GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL, PROCREG_EINVAL);
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    const char *ns = procreg_key_namespace(key), *group = procreg_key_name(key);
    size_probe p = {key, min_members > 0 ? min_members : 1, 0};
    GError *local = NULL;
    int rc = need_groups(reg, &local);
    if (rc == 0)
        rc = procreg_wait_until(reg, ns, group, true, enough_members, &p,
                                timeout_ms, cancellable, &local);
    if (local != NULL)
        g_propagate_error(error, local);
    else if (rc == PROCREG_ETIMEDOUT)
        procreg_set_error(error, rc,
                          "group '%s' in '%s' did not reach %zu members "
                          "within %d ms (it has %zu)", group, ns, p.want,
                          timeout_ms, p.have);
    else if (rc == PROCREG_ECANCELLED)
        procreg_set_error(error, rc,
                          "waiting for members of group '%s' in '%s' was "
                          "cancelled", group, ns);
    if (n_out != NULL)
        *n_out = p.have;
    procreg_op_done(reg, b, PROCREG_OP_WAIT, rc, t0, ns, group, rc == 0);
    return rc;
}

PROCREG_API int procreg_wait_members(procreg *reg, const char *ns,
                                     const char *group, size_t min_members,
                                     int timeout_ms, GCancellable *cancellable,
                                     size_t *n_out, GError **error)
{
    procreg_stack_key key;
    int rc = group_key(&key, ns, group, error);
    if (rc != 0) {
        if (n_out != NULL)
            *n_out = 0;
        return rc;
    }
    return procreg_wait_members_key(reg, &key.key, min_members, timeout_ms,
                                    cancellable, n_out, error);
}
