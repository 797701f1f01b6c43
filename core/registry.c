/* The public registry API: validates, then dispatches to the backend. */
#include "internal.h"

#include <string.h>

struct procreg {
    procreg_backend *backend;
};

/* How many existing names a not-found message shows. */
#define NOT_FOUND_SAMPLE 5

/* ---- opening ---- */

static int registry_new(procreg_backend *backend, procreg **out)
{
    procreg *reg = g_new0(procreg, 1);
    reg->backend = backend;
    *out = reg;
    return 0;
}

PROCREG_API int procreg_open(const char *spec, procreg **out, GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    if (spec == NULL)
        spec = g_getenv("PROCREG_BACKEND");
    if (spec == NULL || *spec == '\0')
        spec = procreg_builtin_backends[0]->name;
    procreg_backend *backend = NULL;
    int rc = procreg_backend_open(spec, NULL, &backend, error);
    return rc != 0 ? rc : registry_new(backend, out);
}

PROCREG_API int procreg_open_with_backend(const procreg_backend_ops *ops,
                                          const char *options, procreg **out,
                                          GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    int rc = procreg_backend_ops_check(ops, error);
    if (rc != 0)
        return rc;
    procreg_spec *spec = NULL;
    rc = procreg_spec_parse_options(ops->name, options, &spec, error);
    if (rc != 0)
        return rc;
    procreg_backend *backend = NULL;
    rc = procreg_backend_open_ops(ops, spec, NULL, &backend, error);
    procreg_spec_free(spec);
    return rc != 0 ? rc : registry_new(backend, out);
}

PROCREG_API void procreg_close(procreg *reg)
{
    if (reg == NULL)
        return;
    procreg_backend_close(reg->backend);
    g_free(reg);
}

PROCREG_API const char *procreg_get_spec(const procreg *reg)
{
    return procreg_backend_spec_string(reg->backend);
}

/* ---- register ---- */

/* The owner to store: the caller by default; otherwise a live process,
 * with its start time filled in so a reused pid never matches. */
static int resolve_owner(const procreg_owner *given, procreg_owner *out,
                         GError **error)
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

PROCREG_API int procreg_register_key(procreg *reg, const procreg_key *key,
                                     const procreg_owner *owner,
                                     GVariant *metadata,
                                     procreg_entry *current, GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL, PROCREG_EINVAL);
    if (metadata != NULL)
        g_variant_ref_sink(metadata);
    procreg_record record = {.metadata = metadata,
                             .registered_at = g_get_real_time()};
    int rc = procreg_metadata_check(metadata, error);
    if (rc == 0)
        rc = resolve_owner(owner, &record.owner, error);
    if (rc == 0) {
        GError *local = NULL;
        rc = procreg_backend_register_entry(reg->backend, key, &record,
                                            current, &local);
        if (rc == PROCREG_EEXISTS && local == NULL)
            procreg_set_error(&local, rc,
                              "'%s' is already registered in namespace '%s'",
                              procreg_key_name(key),
                              procreg_key_namespace(key));
        if (local != NULL)
            g_propagate_error(error, local);
    }
    if (metadata != NULL)
        g_variant_unref(metadata);
    return rc;
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
    g_ptr_array_unref(names);
    return PROCREG_ENOTFOUND;
}

static int backend_failure(int rc, const procreg_key *key, GError **error)
{
    return procreg_set_error(error, rc, "lookup of '%s' in '%s': %s",
                             procreg_key_name(key), procreg_key_namespace(key),
                             procreg_strerror(rc));
}

PROCREG_API int procreg_lookup_key(procreg *reg, const procreg_key *key,
                                   procreg_owner *out, GError **error)
{
    int rc = procreg_backend_lookup(reg->backend, key, out);
    if (G_LIKELY(rc == 0))
        return 0;
    return rc == PROCREG_ENOTFOUND ? not_found(reg, key, error)
                                   : backend_failure(rc, key, error);
}

PROCREG_API int procreg_lookup(procreg *reg, const char *ns, const char *name,
                               procreg_owner *out, GError **error)
{
    procreg_stack_key key;
    int rc = procreg_key_init_stack(&key, ns, name, error);
    return rc != 0 ? rc : procreg_lookup_key(reg, &key.key, out, error);
}

PROCREG_API int procreg_lookup_entry_key(procreg *reg, const procreg_key *key,
                                         procreg_entry *out, GError **error)
{
    memset(out, 0, sizeof *out);
    GError *local = NULL;
    int rc = procreg_backend_lookup_entry(reg->backend, key, out, &local);
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

/* ---- unregister ---- */

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

PROCREG_API int procreg_unregister_key(procreg *reg, const procreg_key *key,
                                       uint64_t if_revision, GError **error)
{
    GError *local = NULL;
    int rc = procreg_backend_unregister(reg->backend, key, if_revision, NULL,
                                        &local);
    return rc == 0 ? 0 : missing_or(reg, rc, local, key, error);
}

PROCREG_API int procreg_unregister(procreg *reg, const char *ns,
                                   const char *name, GError **error)
{
    procreg_stack_key key;
    int rc = procreg_key_init_stack(&key, ns, name, error);
    return rc != 0 ? rc : procreg_unregister_key(reg, &key.key, 0, error);
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

/* A merge is read, combine, write-if-unchanged; it retries when another
 * writer got in between, unless the caller pinned a revision. */
#define MERGE_ATTEMPTS 64

static int update_once(procreg *reg, const procreg_key *key,
                       GVariant *metadata, procreg_update_mode mode,
                       uint64_t if_revision, uint64_t *revision,
                       GError **error)
{
    GVariant *to_store = metadata ? g_variant_ref(metadata) : NULL;
    uint64_t expect = if_revision;
    int rc = 0;
    if (mode == PROCREG_UPDATE_MERGE && metadata != NULL) {
        procreg_entry cur = {0};
        rc = procreg_backend_lookup_entry(reg->backend, key, &cur, error);
        if (rc == 0 && if_revision != 0 && cur.revision != if_revision)
            rc = PROCREG_ECONFLICT;
        if (rc == 0) {
            g_variant_unref(to_store);
            to_store = cur.metadata ? merge_dicts(cur.metadata, metadata)
                                    : g_variant_ref(metadata);
            expect = cur.revision;
        }
        procreg_entry_clear(&cur);
    }
    procreg_entry updated = {0};
    if (rc == 0)
        rc = procreg_backend_update_metadata(reg->backend, key, to_store,
                                             expect, &updated, error);
    if (rc == 0 && revision != NULL)
        *revision = updated.revision;
    procreg_entry_clear(&updated);
    if (to_store != NULL)
        g_variant_unref(to_store);
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
    if (metadata != NULL)
        g_variant_ref_sink(metadata);
    int rc = procreg_metadata_check(metadata, error);
    if (rc == 0 && mode != PROCREG_UPDATE_REPLACE && mode != PROCREG_UPDATE_MERGE)
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "unknown update mode %d", (int)mode);
    for (int attempt = 0; rc == 0; attempt++) {
        GError *local = NULL;
        rc = update_once(reg, key, metadata, mode, if_revision, revision,
                         &local);
        bool retry = rc == PROCREG_ECONFLICT && if_revision == 0 &&
                     mode == PROCREG_UPDATE_MERGE &&
                     attempt + 1 < MERGE_ATTEMPTS;
        if (rc != 0 && !retry) {
            rc = missing_or(reg, rc, local, key, error);
            break;
        }
        g_clear_error(&local);
        if (rc == 0)
            break;
        rc = 0;
    }
    if (metadata != NULL)
        g_variant_unref(metadata);
    return rc;
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
    return procreg_update_metadata_key(reg, &key.key, metadata, mode, 0, NULL,
                                       error);
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
    int rc = check_ns(ns, error);
    if (rc != 0)
        return rc;
    GArray *all = procreg_entry_array_new();
    rc = procreg_backend_list_all(reg->backend, ns, all, error);
    if (rc != 0) {
        g_array_unref(all);
        return rc;
    }
    procreg_entry_array_steal(all, out, n_out);
    return 0;
}

PROCREG_API int procreg_count(procreg *reg, const char *ns, size_t *out,
                              GError **error)
{
    *out = 0;
    int rc = check_ns(ns, error);
    return rc != 0 ? rc : procreg_backend_count(reg->backend, ns, out, error);
}

static int check_find(const char *ns, const char *meta_key, GVariant *value,
                      GError **error)
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
    int rc = check_find(ns, meta_key, value, error);
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
    GArray *found = procreg_entry_array_new();
    int rc = find_into(reg, ns, meta_key, value, found, error);
    if (rc != 0) {
        g_array_unref(found);
        return rc;
    }
    procreg_entry_array_steal(found, out, n_out);
    return 0;
}

PROCREG_API int procreg_find_count(procreg *reg, const char *ns,
                                   const char *meta_key, GVariant *value,
                                   size_t *out, GError **error)
{
    GArray *found = procreg_entry_array_new();
    int rc = find_into(reg, ns, meta_key, value, found, error);
    *out = rc == 0 ? found->len : 0;
    g_array_unref(found);
    return rc;
}

/* ---- health and stats ---- */

PROCREG_API const char *procreg_health_status_name(procreg_health_status s)
{
    switch (s) {
    case PROCREG_HEALTH_OK: return "ok";
    case PROCREG_HEALTH_DEGRADED: return "degraded";
    case PROCREG_HEALTH_FAILED: return "failed";
    }
    return "unknown";
}

PROCREG_API int procreg_health_check(procreg *reg, procreg_health *out,
                                     GError **error)
{
    memset(out, 0, sizeof *out);
    const procreg_backend_ops *ops = procreg_backend_get_ops(reg->backend);
    GVariantDict backend_details;
    g_variant_dict_init(&backend_details, NULL);
    char *message = NULL;
    int status = procreg_backend_health_check(reg->backend, &backend_details,
                                              &message);
    if (status < 0) {
        /* The check itself failed: that is the report, not an error. */
        char *why = g_strdup_printf("health check failed: %s%s%s",
                                    procreg_strerror(status),
                                    message ? ": " : "",
                                    message ? message : "");
        g_free(message);
        message = why;
        status = PROCREG_HEALTH_FAILED;
    } else if (status > PROCREG_HEALTH_FAILED) {
        status = PROCREG_HEALTH_FAILED;
    }

    GVariantDict details;
    g_variant_dict_init(&details, NULL);
    g_variant_dict_insert(&details, "backend_status", "s",
                          procreg_health_status_name(status));
    g_variant_dict_insert_value(&details, "backend",
                                g_variant_dict_end(&backend_details));
    size_t entries = 0;
    if (procreg_backend_count(reg->backend, NULL, &entries, NULL) == 0)
        g_variant_dict_insert(&details, "entries", "t", (guint64)entries);

    out->status = (procreg_health_status)status;
    out->backend = g_strdup(ops->name);
    out->message = message ? message
                           : g_strdup_printf("%s backend is %s", ops->name,
                                             procreg_health_status_name(
                                                 out->status));
    out->details = g_variant_ref_sink(g_variant_dict_end(&details));
    (void)error;
    return 0;
}

PROCREG_API void procreg_health_clear(procreg_health *health)
{
    if (health == NULL)
        return;
    g_free(health->backend);
    g_free(health->message);
    if (health->details != NULL)
        g_variant_unref(health->details);
    memset(health, 0, sizeof *health);
}

PROCREG_API int procreg_stats(procreg *reg, GVariant **out, GError **error)
{
    const procreg_backend_ops *ops = procreg_backend_get_ops(reg->backend);
    size_t entries = 0;
    int rc = procreg_backend_count(reg->backend, NULL, &entries, error);
    if (rc != 0) {
        *out = NULL;
        return rc;
    }
    GVariantDict dict, backend;
    g_variant_dict_init(&dict, NULL);
    g_variant_dict_insert(&dict, "backend", "s", ops->name);
    g_variant_dict_insert(&dict, "spec", "s", procreg_get_spec(reg));
    g_variant_dict_insert(&dict, "entries", "t", (guint64)entries);
    size_t bytes = 0;
    if (procreg_backend_memory_usage(reg->backend, &bytes) == 0)
        g_variant_dict_insert(&dict, "memory_bytes", "t", (guint64)bytes);
    g_variant_dict_init(&backend, NULL);
    procreg_backend_stats(reg->backend, &backend);
    g_variant_dict_insert_value(&dict, "backend_stats",
                                g_variant_dict_end(&backend));
    *out = g_variant_ref_sink(g_variant_dict_end(&dict));
    return 0;
}
