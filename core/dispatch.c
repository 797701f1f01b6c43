/*
 * The only caller of backend vtable slots.  Each wrapper applies the
 * locking policy the backend's capability flags ask for:
 *   THREADSAFE          no lock at all (the backend does its own);
 *   PARALLEL_READS      a reader/writer lock: reads share, writes exclude;
 *   neither             every call is exclusive.
 * Optional slots fall back to what the required ones can do.
 */
#include "internal.h"

#include <string.h>

#include "brlock.h"

typedef enum { LOCK_NONE, LOCK_SHARED_READS, LOCK_EXCLUSIVE } lock_policy;

struct procreg_backend {
    const procreg_backend_ops *ops;
    void *state;
    lock_policy policy;
    procreg_brlock lock; /* LOCK_SHARED_READS and LOCK_EXCLUSIVE */
    char *spec; /* canonical spec string */
};

/* A read's lock: returns what to hand read_unlock(). */
static inline int read_lock(procreg_backend *b)
{
    if (b->policy == LOCK_SHARED_READS)
        return procreg_brlock_read_lock(&b->lock);
    if (b->policy == LOCK_EXCLUSIVE)
        procreg_brlock_write_lock(&b->lock);
    return 0;
}

static inline void read_unlock(procreg_backend *b, int slot)
{
    if (b->policy == LOCK_SHARED_READS)
        procreg_brlock_read_unlock(&b->lock, slot);
    else if (b->policy == LOCK_EXCLUSIVE)
        procreg_brlock_write_unlock(&b->lock);
}

static inline void write_lock(procreg_backend *b)
{
    if (b->policy != LOCK_NONE)
        procreg_brlock_write_lock(&b->lock);
}

static inline void write_unlock(procreg_backend *b)
{
    if (b->policy != LOCK_NONE)
        procreg_brlock_write_unlock(&b->lock);
}

PROCREG_INTERNAL int procreg_backend_open_ops(const procreg_backend_ops *ops,
                                              const procreg_spec *spec,
                                              procreg_backend_host *host,
                                              procreg_backend **out,
                                              GError **error)
{
    int rc = procreg_backend_ops_check(ops, error);
    if (rc == 0)
        rc = procreg_spec_check_options(spec, ops, error);
    if (rc != 0)
        return rc;
    /* Aligned: the lock keeps its slots on cache lines of their own. */
    procreg_backend *b =
        g_aligned_alloc0(1, sizeof *b, _Alignof(procreg_backend));
    b->ops = ops;
    b->policy = (ops->caps & PROCREG_CAP_THREADSAFE)       ? LOCK_NONE
                : (ops->caps & PROCREG_CAP_PARALLEL_READS) ? LOCK_SHARED_READS
                                                           : LOCK_EXCLUSIVE;
    procreg_brlock_init(&b->lock);
    GError *local = NULL;
    rc = ops->init(spec, host, &b->state, &local);
    if (rc != 0) {
        if (local == NULL)
            procreg_set_error(&local, rc, "backend '%s' failed to start: %s",
                              ops->name, procreg_strerror(rc));
        g_propagate_error(error, local);
        g_aligned_free(b);
        return rc < 0 ? rc : PROCREG_EBACKEND;
    }
    g_clear_error(&local);
    b->spec = procreg_spec_to_string(spec);
    *out = b;
    return 0;
}

PROCREG_API int procreg_backend_open(const char *spec_text,
                                     procreg_backend_host *host,
                                     procreg_backend **out, GError **error)
{
    procreg_spec *spec = NULL;
    int rc = procreg_spec_parse(spec_text, &spec, error);
    if (rc != 0)
        return rc;
    const procreg_backend_ops *ops = procreg_backend_find(procreg_spec_backend(spec));
    if (ops == NULL) {
        char *names = procreg_backend_names_joined();
        rc = procreg_set_error(error, PROCREG_EUNKNOWN_BACKEND,
                               "unknown backend '%s'; available: %s",
                               procreg_spec_backend(spec), names);
        g_free(names);
        char **all = procreg_backend_names();
        procreg_error_detail_alternatives(error, all);
        g_strfreev(all);
    } else {
        rc = procreg_backend_open_ops(ops, spec, host, out, error);
    }
    procreg_spec_free(spec);
    return rc;
}

PROCREG_API void procreg_backend_close(procreg_backend *b)
{
    if (b == NULL)
        return;
    b->ops->destroy(b->state);
    g_free(b->spec);
    g_aligned_free(b);
}

PROCREG_API const procreg_backend_ops *
procreg_backend_get_ops(const procreg_backend *b)
{
    return b->ops;
}

PROCREG_API unsigned int procreg_backend_get_caps(const procreg_backend *b)
{
    return b->ops->instance_caps != NULL ? b->ops->instance_caps(b->state)
                                         : b->ops->caps;
}

PROCREG_INTERNAL const char *procreg_backend_spec_string(const procreg_backend *b)
{
    return b->spec;
}

/* ---- required slots ---- */

PROCREG_API int procreg_backend_register_entry(procreg_backend *b,
                                               const procreg_key *key,
                                               const procreg_record *record,
                                               procreg_entry *current,
                                               GError **error)
{
    write_lock(b);
    int rc = b->ops->register_entry(b->state, key, record, current, error);
    write_unlock(b);
    return rc;
}

static __attribute__((noinline)) int lookup_locked(procreg_backend *b,
                                                   const procreg_key *key,
                                                   procreg_owner *out)
{
    int slot = read_lock(b);
    int rc = b->ops->lookup(b->state, key, out);
    read_unlock(b, slot);
    return rc;
}

/* The hottest call: a lock-free backend's lookup is a tail call, with no
 * frame of its own (the locked path is out of line). */
PROCREG_API int procreg_backend_lookup(procreg_backend *b,
                                       const procreg_key *key,
                                       procreg_owner *out)
{
    if (G_LIKELY(b->policy == LOCK_NONE))
        return b->ops->lookup(b->state, key, out);
    return lookup_locked(b, key, out);
}

PROCREG_API int procreg_backend_lookup_entry(procreg_backend *b,
                                             const procreg_key *key,
                                             procreg_entry *out,
                                             GError **error)
{
    int slot = read_lock(b);
    int rc = b->ops->lookup_entry(b->state, key, out, error);
    read_unlock(b, slot);
    return rc;
}

PROCREG_API int procreg_backend_unregister(procreg_backend *b,
                                           const procreg_key *key,
                                           uint64_t if_revision,
                                           procreg_entry *removed,
                                           GError **error)
{
    write_lock(b);
    int rc = b->ops->unregister(b->state, key, if_revision, removed, error);
    write_unlock(b);
    return rc;
}

PROCREG_API int procreg_backend_unregister_owned(procreg_backend *b,
                                                 const procreg_key *key,
                                                 const procreg_owner *owner,
                                                 procreg_entry *removed)
{
    if (b->ops->version < 5 || b->ops->unregister_owned == NULL)
        return PROCREG_ENOTSUP;
    write_lock(b);
    int rc = b->ops->unregister_owned(b->state, key, owner, removed);
    write_unlock(b);
    return rc;
}

PROCREG_API int procreg_backend_list_all(procreg_backend *b, const char *ns,
                                         GArray *out, GError **error)
{
    int slot = read_lock(b);
    int rc = b->ops->list_all(b->state, ns, out, error);
    read_unlock(b, slot);
    return rc;
}

PROCREG_API int procreg_backend_update_metadata(procreg_backend *b,
                                                const procreg_key *key,
                                                GVariant *metadata,
                                                uint64_t if_revision,
                                                procreg_entry *updated,
                                                GError **error)
{
    write_lock(b);
    int rc = b->ops->update_metadata(b->state, key, metadata, if_revision,
                                     updated, error);
    write_unlock(b);
    return rc;
}

PROCREG_API int procreg_backend_health_check(procreg_backend *b,
                                             GVariantDict *details,
                                             char **message)
{
    int slot = read_lock(b);
    int rc = b->ops->health_check(b->state, details, message);
    read_unlock(b, slot);
    return rc;
}

/* ---- optional slots, with fallbacks ---- */

PROCREG_API int procreg_backend_count(procreg_backend *b, const char *ns,
                                      size_t *out, GError **error)
{
    if (b->ops->count != NULL) {
        int slot = read_lock(b);
        int rc = b->ops->count(b->state, ns, out, error);
        read_unlock(b, slot);
        return rc;
    }
    GArray *all = procreg_entry_array_new();
    int rc = procreg_backend_list_all(b, ns, all, error);
    if (rc == 0)
        *out = all->len;
    g_array_unref(all);
    return rc;
}

/* Fallback: count what list_all returns. */
static int count_namespaces_by_listing(procreg_backend *b, GArray *out,
                                       GError **error)
{
    GArray *all = procreg_entry_array_new();
    int rc = procreg_backend_list_all(b, NULL, all, error);
    GHashTable *index = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; rc == 0 && i < all->len; i++) {
        procreg_entry *e = &g_array_index(all, procreg_entry, i);
        if (e->ns == NULL)
            continue;
        gpointer at;
        if (g_hash_table_lookup_extended(index, e->ns, NULL, &at)) {
            g_array_index(out, procreg_namespace_info,
                          GPOINTER_TO_UINT(at)).entries++;
        } else {
            procreg_namespace_info info = {g_steal_pointer(&e->ns), 1};
            g_hash_table_insert(index, info.ns, GUINT_TO_POINTER(out->len));
            g_array_append_val(out, info);
        }
    }
    g_hash_table_unref(index);
    g_array_unref(all);
    return rc;
}

PROCREG_API int procreg_backend_count_namespaces(procreg_backend *b,
                                                GArray *out, GError **error)
{
    guint before = out->len;
    int rc;
    if (b->ops->version >= 2 && b->ops->count_namespaces != NULL) {
        int slot = read_lock(b);
        rc = b->ops->count_namespaces(b->state, out, error);
        read_unlock(b, slot);
    } else {
        rc = count_namespaces_by_listing(b, out, error);
    }
    if (rc != 0)
        g_array_set_size(out, before);
    return rc;
}

PROCREG_API int procreg_backend_list_names(procreg_backend *b, const char *ns,
                                           size_t max, GPtrArray *out)
{
    if (b->ops->list_names != NULL) {
        int slot = read_lock(b);
        int rc = b->ops->list_names(b->state, ns, max, out);
        read_unlock(b, slot);
        return rc;
    }
    GArray *all = procreg_entry_array_new();
    int rc = procreg_backend_list_all(b, ns, all, NULL);
    for (guint i = 0; rc == 0 && i < all->len && i < max; i++) {
        procreg_entry *e = &g_array_index(all, procreg_entry, i);
        g_ptr_array_add(out, e->name);
        e->name = NULL;
    }
    g_array_unref(all);
    return rc;
}

PROCREG_API int procreg_backend_drop_namespace(procreg_backend *b,
                                               const char *ns,
                                               GArray *removed,
                                               GError **error)
{
    if (b->ops->drop_namespace != NULL) {
        write_lock(b);
        int rc = b->ops->drop_namespace(b->state, ns, removed, error);
        write_unlock(b);
        return rc;
    }
    /* Not atomic: entries registered meanwhile may survive the drop; the
     * caps (no ATOMIC_DROP) say so. */
    GArray *all = procreg_entry_array_new();
    int rc = procreg_backend_list_all(b, ns, all, error);
    for (guint i = 0; rc == 0 && i < all->len; i++) {
        procreg_entry *e = &g_array_index(all, procreg_entry, i);
        procreg_stack_key key;
        procreg_entry gone = {0};
        rc = procreg_key_init_stack(&key, e->ns, e->name, error);
        if (rc != 0)
            break;
        rc = procreg_backend_unregister(b, &key.key, e->revision, &gone,
                                        NULL);
        if (rc == 0) {
            /* The listed entry's names are ours to move; a backend may
             * have filled them too. */
            if (gone.ns == NULL)
                gone.ns = g_steal_pointer(&e->ns);
            if (gone.name == NULL)
                gone.name = g_steal_pointer(&e->name);
            if (removed != NULL)
                g_array_append_val(removed, gone);
            else
                procreg_entry_clear(&gone);
        } else if (rc == PROCREG_ENOTFOUND || rc == PROCREG_ECONFLICT) {
            rc = 0; /* changed under us: not ours to remove */
        } else {
            procreg_set_error(error, rc, "dropping namespace '%s': %s", ns,
                              procreg_strerror(rc));
        }
    }
    g_array_unref(all);
    return rc;
}

PROCREG_API int procreg_backend_find_by_metadata(procreg_backend *b,
                                                 const char *ns,
                                                 const char *meta_key,
                                                 GVariant *value, GArray *out,
                                                 GError **error)
{
    if (b->ops->find_by_metadata != NULL) {
        int slot = read_lock(b);
        int rc = b->ops->find_by_metadata(b->state, ns, meta_key, value, out,
                                          error);
        read_unlock(b, slot);
        return rc;
    }
    GArray *all = procreg_entry_array_new();
    int rc = procreg_backend_list_all(b, ns, all, error);
    for (guint i = 0; rc == 0 && i < all->len; i++) {
        procreg_entry *e = &g_array_index(all, procreg_entry, i);
        if (e->metadata == NULL)
            continue;
        GVariant *v = g_variant_lookup_value(e->metadata, meta_key, NULL);
        if (v != NULL && procreg_metadata_value_equal(v, value)) {
            g_array_append_val(out, *e);
            memset(e, 0, sizeof *e); /* moved */
        }
        if (v != NULL)
            g_variant_unref(v);
    }
    g_array_unref(all);
    return rc;
}

PROCREG_API int procreg_backend_memory_usage(procreg_backend *b,
                                             size_t *bytes)
{
    if (b->ops->memory_usage == NULL)
        return PROCREG_ENOTSUP;
    int slot = read_lock(b);
    int rc = b->ops->memory_usage(b->state, bytes);
    read_unlock(b, slot);
    return rc;
}

PROCREG_API void procreg_backend_stats(procreg_backend *b, GVariantDict *out)
{
    if (b->ops->stats == NULL)
        return;
    int slot = read_lock(b);
    b->ops->stats(b->state, out);
    read_unlock(b, slot);
}

/* ---- version 3: groups ---- */

static bool slots_have_groups(const procreg_backend *b)
{
    return b->ops->version >= 3 && b->ops->group_join != NULL;
}

PROCREG_API bool procreg_backend_has_groups(const procreg_backend *b)
{
    return slots_have_groups(b) &&
           (procreg_backend_get_caps(b) & PROCREG_CAP_GROUPS);
}

static int no_groups(const procreg_backend *b, GError **error)
{
    return procreg_set_error(error, PROCREG_ENOTSUP,
                             "backend '%s' has no groups", b->ops->name);
}

PROCREG_API int procreg_backend_group_join(procreg_backend *b,
                                           const procreg_key *key,
                                           const procreg_record *record,
                                           procreg_member *joined,
                                           GError **error)
{
    if (!slots_have_groups(b))
        return no_groups(b, error);
    write_lock(b);
    int rc = b->ops->group_join(b->state, key, record, joined, error);
    write_unlock(b);
    return rc;
}

PROCREG_API int procreg_backend_group_leave(procreg_backend *b,
                                            const procreg_key *key,
                                            uint64_t member_id,
                                            const procreg_owner *owner,
                                            procreg_event_reason reason,
                                            GArray *removed, GError **error)
{
    if (!slots_have_groups(b))
        return no_groups(b, error);
    write_lock(b);
    int rc = b->ops->group_leave(b->state, key, member_id, owner, reason,
                                 removed, error);
    write_unlock(b);
    return rc;
}

PROCREG_API int procreg_backend_group_members(procreg_backend *b,
                                              const procreg_key *key,
                                              GArray *out, GError **error)
{
    if (!slots_have_groups(b))
        return no_groups(b, error);
    int slot = read_lock(b);
    int rc = b->ops->group_members(b->state, key, out, error);
    read_unlock(b, slot);
    return rc;
}

PROCREG_API int procreg_backend_group_list_all(procreg_backend *b,
                                               const char *ns, GArray *out,
                                               GError **error)
{
    if (!slots_have_groups(b))
        return no_groups(b, error);
    int slot = read_lock(b);
    int rc = b->ops->group_list_all(b->state, ns, out, error);
    read_unlock(b, slot);
    return rc;
}

PROCREG_API int procreg_backend_group_count(procreg_backend *b,
                                            const procreg_key *key,
                                            size_t *out, GError **error)
{
    if (!slots_have_groups(b))
        return no_groups(b, error);
    if (b->ops->group_count != NULL) {
        int slot = read_lock(b);
        int rc = b->ops->group_count(b->state, key, out, error);
        read_unlock(b, slot);
        return rc;
    }
    GArray *members = procreg_member_array_new();
    int rc = procreg_backend_group_members(b, key, members, error);
    *out = rc == 0 ? members->len : 0;
    g_array_unref(members);
    return rc;
}

/* Fallback: count what group_list_all returns, by (ns, group). */
static int group_list_by_listing(procreg_backend *b, const char *ns,
                                 GArray *out, GError **error)
{
    GArray *all = procreg_member_array_new();
    int rc = procreg_backend_group_list_all(b, ns, all, error);
    GHashTable *index = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                              NULL);
    for (guint i = 0; rc == 0 && i < all->len; i++) {
        procreg_member *m = &g_array_index(all, procreg_member, i);
        char *k = procreg_key_string(m->ns, m->group);
        gpointer at;
        if (g_hash_table_lookup_extended(index, k, NULL, &at)) {
            g_array_index(out, procreg_group_info,
                          GPOINTER_TO_UINT(at)).members++;
            g_free(k);
        } else {
            procreg_group_info info = {g_steal_pointer(&m->ns),
                                       g_steal_pointer(&m->group), 1};
            g_hash_table_insert(index, k, GUINT_TO_POINTER(out->len));
            g_array_append_val(out, info);
        }
    }
    g_hash_table_unref(index);
    g_array_unref(all);
    return rc;
}

PROCREG_API int procreg_backend_group_list(procreg_backend *b, const char *ns,
                                           GArray *out, GError **error)
{
    if (!slots_have_groups(b))
        return no_groups(b, error);
    guint before = out->len;
    int rc;
    if (b->ops->group_list != NULL) {
        int slot = read_lock(b);
        rc = b->ops->group_list(b->state, ns, out, error);
        read_unlock(b, slot);
    } else {
        rc = group_list_by_listing(b, ns, out, error);
    }
    if (rc != 0)
        g_array_set_size(out, before);
    return rc;
}

PROCREG_API int procreg_backend_group_dispatch(procreg_backend *b,
                                               const procreg_key *key,
                                               procreg_member_fn fn,
                                               gpointer user_data,
                                               size_t *visited,
                                               GError **error)
{
    *visited = 0;
    if (!slots_have_groups(b))
        return no_groups(b, error);
    /* The slot promises its own safety: no lock here, so @fn may write. */
    if (b->ops->group_dispatch != NULL)
        return b->ops->group_dispatch(b->state, key, fn, user_data, visited,
                                      error);
    GArray *members = procreg_member_array_new();
    int rc = procreg_backend_group_members(b, key, members, error);
    for (guint i = 0; rc == 0 && i < members->len; i++) {
        (*visited)++;
        if (!fn(&g_array_index(members, procreg_member, i), user_data))
            break;
    }
    g_array_unref(members);
    return rc;
}

/* Fallback of group_pick over the members in id order. */
static const procreg_member *pick_from(GArray *members, bool round_robin,
                                       uint64_t arg)
{
    if (members->len == 0)
        return NULL;
    if (!round_robin)
        return &g_array_index(members, procreg_member,
                              arg % members->len);
    for (guint i = 0; i < members->len; i++) {
        const procreg_member *m = &g_array_index(members, procreg_member, i);
        if (m->id > arg)
            return m;
    }
    return &g_array_index(members, procreg_member, 0);
}

PROCREG_API int procreg_backend_group_pick(procreg_backend *b,
                                           const procreg_key *key,
                                           bool round_robin, uint64_t arg,
                                           procreg_member *out,
                                           GError **error)
{
    if (!slots_have_groups(b))
        return no_groups(b, error);
    if (b->ops->group_pick != NULL) {
        int slot = read_lock(b);
        int rc = b->ops->group_pick(b->state, key, round_robin, arg, out,
                                    error);
        read_unlock(b, slot);
        return rc;
    }
    GArray *members = procreg_member_array_new();
    int rc = procreg_backend_group_members(b, key, members, error);
    const procreg_member *m = rc == 0 ? pick_from(members, round_robin, arg)
                                      : NULL;
    if (rc == 0 && m == NULL)
        rc = PROCREG_ENOTFOUND;
    if (m != NULL) {
        *out = *m;
        memset((void *)m, 0, sizeof *m); /* moved */
    }
    g_array_unref(members);
    return rc;
}

static bool member_matches(const procreg_member *m, const char *meta_key,
                           GVariant *value)
{
    if (m->metadata == NULL)
        return false;
    GVariant *v = g_variant_lookup_value(m->metadata, meta_key, NULL);
    bool match = v != NULL && procreg_metadata_value_equal(v, value);
    if (v != NULL)
        g_variant_unref(v);
    return match;
}

PROCREG_API int procreg_backend_group_find(procreg_backend *b, const char *ns,
                                           const char *group,
                                           const char *meta_key,
                                           GVariant *value, GArray *out,
                                           GError **error)
{
    if (!slots_have_groups(b))
        return no_groups(b, error);
    if (b->ops->group_find != NULL) {
        int slot = read_lock(b);
        int rc = b->ops->group_find(b->state, ns, group, meta_key, value, out,
                                    error);
        read_unlock(b, slot);
        return rc;
    }
    /* One group: its members; else every member of the namespace. */
    GArray *all = procreg_member_array_new();
    procreg_stack_key key;
    int rc = 0;
    if (group == NULL)
        rc = procreg_backend_group_list_all(b, ns, all, error);
    else if ((rc = procreg_key_init_stack(&key, ns, group, error)) == 0)
        rc = procreg_backend_group_members(b, &key.key, all, error);
    for (guint i = 0; rc == 0 && i < all->len; i++) {
        procreg_member *m = &g_array_index(all, procreg_member, i);
        if (!member_matches(m, meta_key, value))
            continue;
        if (m->ns == NULL)
            m->ns = g_strdup(ns);
        if (m->group == NULL)
            m->group = g_strdup(group);
        g_array_append_val(out, *m);
        memset(m, 0, sizeof *m); /* moved */
    }
    g_array_unref(all);
    return rc;
}

PROCREG_API int procreg_backend_group_member(procreg_backend *b,
                                             const procreg_key *key,
                                             uint64_t member_id,
                                             procreg_member *out,
                                             GError **error)
{
    if (!slots_have_groups(b))
        return no_groups(b, error);
    if (b->ops->group_member != NULL) {
        int slot = read_lock(b);
        int rc = b->ops->group_member(b->state, key, member_id, out, error);
        read_unlock(b, slot);
        return rc;
    }
    GArray *members = procreg_member_array_new();
    int rc = procreg_backend_group_members(b, key, members, error);
    if (rc == 0)
        rc = PROCREG_ENOTFOUND;
    for (guint i = 0; rc == PROCREG_ENOTFOUND && i < members->len; i++) {
        procreg_member *m = &g_array_index(members, procreg_member, i);
        if (m->id == member_id) {
            *out = *m;
            memset(m, 0, sizeof *m); /* moved */
            rc = 0;
        }
    }
    g_array_unref(members);
    return rc;
}

/* ---- version 4: history ---- */

PROCREG_API bool procreg_backend_has_history(const procreg_backend *b)
{
    const unsigned need = PROCREG_CAP_HISTORY | PROCREG_CAP_ORDERED_EVENTS;
    return b->ops->version >= 4 && b->ops->history_head != NULL &&
           b->ops->history_read != NULL &&
           (procreg_backend_get_caps(b) & need) == need;
}

static int no_history(const procreg_backend *b, GError **error)
{
    return procreg_set_error(error, PROCREG_ENOTSUP,
                             "backend '%s' keeps no history of its own",
                             b->ops->name);
}

PROCREG_API int procreg_backend_history_head(procreg_backend *b,
                                             uint64_t *out, GError **error)
{
    if (!procreg_backend_has_history(b))
        return no_history(b, error);
    int slot = read_lock(b);
    int rc = b->ops->history_head(b->state, out, error);
    read_unlock(b, slot);
    return rc;
}

PROCREG_API int procreg_backend_history_read(procreg_backend *b,
                                             const char *ns, uint64_t after,
                                             GArray *out, uint64_t *head,
                                             GError **error)
{
    if (!procreg_backend_has_history(b))
        return no_history(b, error);
    guint before = out->len;
    int slot = read_lock(b);
    int rc = b->ops->history_read(b->state, ns, after, out, head, error);
    read_unlock(b, slot);
    if (rc != 0)
        g_array_set_size(out, before);
    return rc;
}
