/*
 * Namespace settings (Elixir's Registry.meta/put_meta/delete_meta): small
 * key -> value settings per namespace, kept as entries of the reserved
 * namespace "procreg:meta:NS" (name: the key; metadata {"value": v}), so
 * they are shared, persisted and reported exactly as entries are, on every
 * backend.
 *
 * A setting belongs to no process of the application: its owner is
 * process 1 of the host that created it, which outlives every
 * application process (so no liveness reaper removes it when its writer
 * exits), and every change is made with PROCREG_FORCE, since anyone may
 * change a setting.  Subscribers see changes through
 * procreg_namespace_meta_subscribe(), which turns the entry events into
 * (key, value) calls.
 */
#include "internal.h"

#include <string.h>

#define META_PREFIX PROCREG_NS_RESERVED_PREFIX "meta:"
/* Puts tried again when a concurrent put or delete changes the key
 * between our look and our write. */
#define PUT_ATTEMPTS 16

/* The key (procreg:meta:NS, KEY) on the stack, or PROCREG_EINVAL. */
static int meta_key(procreg_stack_key *k, const char *ns, const char *key,
                    GError **error)
{
    if (ns == NULL)
        ns = PROCREG_NS_PRODUCTION;
    int rc = procreg_validate_name(ns, "namespace", error);
    if (rc != 0)
        return rc;
    if (strlen(META_PREFIX) + strlen(ns) > PROCREG_NAME_MAX)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "namespace '%s' is too long for settings: "
                                 "at most %zu bytes", ns,
                                 PROCREG_NAME_MAX - strlen(META_PREFIX));
    char qns[PROCREG_NAME_MAX + 1];
    g_snprintf(qns, sizeof qns, "%s%s", META_PREFIX, ns);
    return procreg_key_init_stack(k, qns, key, error);
}

static GVariant *wrap(GVariant *value)
{
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert_value(&d, "value", value);
    return g_variant_dict_end(&d);
}

/* Process 1 of this host: the owner of settings (see above). */
static int host_owner(procreg_owner *out, GError **error)
{
    return procreg_owner_from_pid(1, out, error);
}

PROCREG_API int procreg_namespace_meta_put(procreg *reg, const char *ns,
                                           const char *key, GVariant *value,
                                           GError **error)
{
    g_return_val_if_fail(reg != NULL, PROCREG_EINVAL);
    if (value != NULL)
        g_variant_ref_sink(value);
    procreg_stack_key k;
    int rc = meta_key(&k, ns, key, error);
    if (rc == 0 && value == NULL)
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "setting '%s': no value (delete it with "
                               "procreg_namespace_meta_delete())", key);
    procreg_owner host;
    if (rc == 0)
        rc = host_owner(&host, error);
    /* Change it where it is; create it where it is not; a concurrent
     * create or delete between the two sends us round again. */
    for (int attempt = 0; rc == 0 && attempt < PUT_ATTEMPTS; attempt++) {
        rc = procreg_update_metadata_full(reg, &k.key, wrap(value),
                                          PROCREG_UPDATE_REPLACE, 0,
                                          PROCREG_FORCE, NULL, NULL);
        if (rc != PROCREG_ENOTFOUND)
            break;
        rc = procreg_register_reserved(reg, &k.key, &host, wrap(value), NULL,
                                       NULL);
        if (rc != PROCREG_EEXISTS)
            break;
        rc = 0;
    }
    if (rc == PROCREG_EEXISTS || rc == PROCREG_ENOTFOUND)
        rc = PROCREG_ECONFLICT; /* changed under us every time */
    if (rc != 0)
        procreg_set_error(error, rc, "setting '%s' of namespace '%s': %s",
                          key, ns ? ns : PROCREG_NS_PRODUCTION,
                          procreg_strerror(rc));
    if (value != NULL)
        g_variant_unref(value);
    return rc;
}

/* The value inside a setting's metadata (a new reference), or NULL. */
static GVariant *unwrap(GVariant *metadata)
{
    return metadata != NULL
               ? g_variant_lookup_value(metadata, "value", NULL)
               : NULL;
}

PROCREG_API int procreg_namespace_meta_get(procreg *reg, const char *ns,
                                           const char *key, GVariant **value,
                                           GError **error)
{
    g_return_val_if_fail(reg != NULL && value != NULL, PROCREG_EINVAL);
    *value = NULL;
    procreg_stack_key k;
    int rc = meta_key(&k, ns, key, error);
    procreg_entry e = {0};
    if (rc == 0)
        rc = procreg_lookup_entry_key(reg, &k.key, &e, NULL);
    if (rc == 0)
        *value = unwrap(e.metadata);
    procreg_entry_clear(&e);
    if (rc == 0 && *value == NULL)
        rc = PROCREG_EBACKEND;
    if (rc == PROCREG_ENOTFOUND)
        procreg_set_error(error, rc, "namespace '%s' has no setting '%s'",
                          ns ? ns : PROCREG_NS_PRODUCTION, key);
    else if (rc == PROCREG_EBACKEND)
        procreg_set_error(error, rc, "setting '%s' of namespace '%s' has "
                          "no value (written by something else than "
                          "procreg_namespace_meta_put()?)", key,
                          ns ? ns : PROCREG_NS_PRODUCTION);
    else if (rc != 0)
        procreg_set_error(error, rc, "setting '%s': %s", key,
                          procreg_strerror(rc));
    return rc;
}

PROCREG_API int procreg_namespace_meta_delete(procreg *reg, const char *ns,
                                              const char *key, GError **error)
{
    g_return_val_if_fail(reg != NULL, PROCREG_EINVAL);
    procreg_stack_key k;
    int rc = meta_key(&k, ns, key, error);
    if (rc == 0)
        rc = procreg_unregister_full(reg, &k.key, 0, PROCREG_FORCE, NULL);
    if (rc == PROCREG_ENOTFOUND)
        procreg_set_error(error, rc, "namespace '%s' has no setting '%s'",
                          ns ? ns : PROCREG_NS_PRODUCTION, key);
    else if (rc != 0)
        procreg_set_error(error, rc, "setting '%s': %s", key,
                          procreg_strerror(rc));
    return rc;
}

PROCREG_API int procreg_namespace_meta_list(procreg *reg, const char *ns,
                                            GVariant **settings,
                                            GError **error)
{
    g_return_val_if_fail(reg != NULL && settings != NULL, PROCREG_EINVAL);
    *settings = NULL;
    procreg_stack_key k;
    int rc = meta_key(&k, ns, "-", error); /* checks the namespace */
    procreg_entry *v = NULL;
    size_t n = 0;
    if (rc == 0)
        rc = procreg_list(reg, procreg_key_namespace(&k.key), &v, &n, error);
    if (rc != 0)
        return rc;
    GVariantBuilder b; /* in key order, as the listing is sorted */
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    for (size_t i = 0; i < n; i++) {
        GVariant *value = unwrap(v[i].metadata);
        if (value != NULL) {
            g_variant_builder_add(&b, "{sv}", v[i].name, value);
            g_variant_unref(value);
        }
    }
    procreg_entries_free(v, n);
    *settings = g_variant_ref_sink(g_variant_builder_end(&b));
    return 0;
}

/* ---- subscriptions ---- */

typedef struct {
    procreg_namespace_meta_fn fn;
    gpointer user_data;
    GDestroyNotify destroy;
} meta_sub;

static void meta_sub_free(gpointer p)
{
    meta_sub *s = p;
    if (s->destroy != NULL)
        s->destroy(s->user_data);
    g_free(s);
}

static void on_setting(procreg *reg, const procreg_event *ev, gpointer data)
{
    meta_sub *s = data;
    GVariant *value = ev->kind == PROCREG_EVENT_UNREGISTERED
                          ? NULL
                          : unwrap(ev->entry->metadata);
    if (value == NULL && ev->kind != PROCREG_EVENT_UNREGISTERED)
        return; /* not a setting's shape: nothing to report */
    s->fn(reg, ev->ns + strlen(META_PREFIX), ev->name, value, s->user_data);
    if (value != NULL)
        g_variant_unref(value);
}

PROCREG_API int procreg_namespace_meta_subscribe(
    procreg *reg, const char *ns, procreg_namespace_meta_fn fn,
    gpointer user_data, GDestroyNotify destroy, GMainContext *context,
    uint64_t *id, GError **error)
{
    g_return_val_if_fail(reg != NULL && id != NULL, PROCREG_EINVAL);
    *id = 0;
    procreg_stack_key k;
    int rc = meta_key(&k, ns, "-", error);
    if (rc == 0 && fn == NULL)
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "settings callback is NULL");
    if (rc != 0)
        return rc;
    meta_sub *s = g_new0(meta_sub, 1);
    *s = (meta_sub){fn, user_data, destroy};
    rc = procreg_subscribe(reg, procreg_key_namespace(&k.key), NULL,
                           on_setting, s, meta_sub_free, context, id, error);
    if (rc != 0)
        g_free(s); /* as procreg_subscribe(): the caller keeps user_data */
    return rc;
}
