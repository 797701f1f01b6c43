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
        procreg_brlock_clear(&b->lock);
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
    procreg_brlock_clear(&b->lock);
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

PROCREG_API int procreg_backend_lookup(procreg_backend *b,
                                       const procreg_key *key,
                                       procreg_owner *out)
{
    if (b->policy == LOCK_NONE)
        return b->ops->lookup(b->state, key, out);
    int slot = read_lock(b);
    int rc = b->ops->lookup(b->state, key, out);
    read_unlock(b, slot);
    return rc;
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
