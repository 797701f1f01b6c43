/*
 * ProcregRegistry (include/procreg/gtypes.h): a reference-counted handle
 * over a procreg, whose calls return their results as boxed values, so
 * that GObject Introspection can describe them.  Each call is the
 * procreg.h call of the same name; a failing one also leaves its error's
 * details where procreg_error_details_from_error() finds them (gtypes.c).
 */
#include "internal.h"

#include <procreg/gtypes.h>

struct _ProcregRegistry {
    gatomicrefcount refs;
    procreg *reg; /* NULL once closed */
};

G_DEFINE_BOXED_TYPE(ProcregRegistry, procreg_registry, procreg_registry_ref,
                    procreg_registry_unref)

/* The open procreg of @registry, or NULL with @error set. */
static procreg *handle(ProcregRegistry *registry, GError **error)
{
    if (registry->reg == NULL) {
        procreg_set_error(error, PROCREG_EINVAL, "the registry is closed");
        procreg_gi_note_error(error);
    }
    return registry->reg;
}

/* Keep the details of a failure (rc != 0) for the binding; true if it
 * failed. */
static bool failed(int rc, GError **error)
{
    if (rc != 0)
        procreg_gi_note_error(error);
    return rc != 0;
}

PROCREG_API ProcregRegistry *procreg_registry_open(const char *spec,
                                                   GError **error)
{
    procreg *reg = NULL;
    if (failed(procreg_open(spec, &reg, error), error))
        return NULL;
    ProcregRegistry *r = g_new(ProcregRegistry, 1);
    g_atomic_ref_count_init(&r->refs);
    r->reg = reg;
    return r;
}

PROCREG_API ProcregRegistry *procreg_registry_ref(ProcregRegistry *registry)
{
    g_atomic_ref_count_inc(&registry->refs);
    return registry;
}

PROCREG_API void procreg_registry_close(ProcregRegistry *registry)
{
    procreg *reg = registry->reg;
    registry->reg = NULL;
    procreg_close(reg);
}

PROCREG_API void procreg_registry_unref(ProcregRegistry *registry)
{
    if (registry == NULL || !g_atomic_ref_count_dec(&registry->refs))
        return;
    procreg_registry_close(registry);
    g_free(registry);
}

PROCREG_API procreg *procreg_registry_get_handle(ProcregRegistry *registry)
{
    return registry->reg;
}

PROCREG_API const char *procreg_registry_get_spec(ProcregRegistry *registry)
{
    return registry->reg ? procreg_get_spec(registry->reg) : NULL;
}

/* ---- one key ---- */

PROCREG_API ProcregEntry *procreg_registry_register(ProcregRegistry *registry,
                                                    const char *ns,
                                                    const char *name,
                                                    const ProcregOwner *owner,
                                                    GVariant *metadata,
                                                    GError **error)
{
    procreg *reg = handle(registry, error);
    if (reg == NULL)
        return NULL;
    procreg_entry e = {0};
    if (failed(procreg_register(reg, ns, name, owner, metadata, &e, error),
               error)) {
        procreg_entry_clear(&e);
        return NULL;
    }
    /* procreg_register() leaves the key out of a single-key entry. */
    e.ns = g_strdup(ns ? ns : PROCREG_NS_PRODUCTION);
    e.name = g_strdup(name);
    return procreg_gi_entry_take(&e);
}

PROCREG_API ProcregOwner *procreg_registry_lookup(ProcregRegistry *registry,
                                                  const char *ns,
                                                  const char *name,
                                                  GError **error)
{
    procreg *reg = handle(registry, error);
    procreg_owner o;
    if (reg == NULL || failed(procreg_lookup(reg, ns, name, &o, error), error))
        return NULL;
    return g_boxed_copy(PROCREG_TYPE_OWNER, &o);
}

PROCREG_API ProcregOwner *procreg_registry_lookup_key(ProcregRegistry *registry,
                                                      const ProcregKey *key,
                                                      GError **error)
{
    procreg *reg = handle(registry, error);
    procreg_owner o;
    if (reg == NULL || failed(procreg_lookup_key(reg, key, &o, error), error))
        return NULL;
    return g_boxed_copy(PROCREG_TYPE_OWNER, &o);
}

PROCREG_API ProcregEntry *procreg_registry_lookup_entry(ProcregRegistry *registry,
                                                        const char *ns,
                                                        const char *name,
                                                        GError **error)
{
    procreg *reg = handle(registry, error);
    procreg_entry e = {0};
    if (reg == NULL ||
        failed(procreg_lookup_entry(reg, ns, name, &e, error), error))
        return NULL;
    e.ns = g_strdup(ns ? ns : PROCREG_NS_PRODUCTION);
    e.name = g_strdup(name);
    return procreg_gi_entry_take(&e);
}

/* A prepared key for (ns, name), or NULL with @error set. */
static procreg_key *key_for(const char *ns, const char *name, GError **error)
{
    procreg_key *key = NULL;
    failed(procreg_key_new(ns, name, &key, error), error);
    return key;
}

PROCREG_API gboolean procreg_registry_unregister(ProcregRegistry *registry,
                                                 const char *ns,
                                                 const char *name,
                                                 guint64 if_revision,
                                                 ProcregWriteFlags flags,
                                                 GError **error)
{
    procreg *reg = handle(registry, error);
    procreg_key *key = reg ? key_for(ns, name, error) : NULL;
    if (key == NULL)
        return FALSE;
    int rc = procreg_unregister_full(reg, key, if_revision, flags, error);
    procreg_key_unref(key);
    return !failed(rc, error);
}

PROCREG_API guint64 procreg_registry_update_metadata(ProcregRegistry *registry,
                                                     const char *ns,
                                                     const char *name,
                                                     GVariant *metadata,
                                                     ProcregUpdateMode mode,
                                                     guint64 if_revision,
                                                     ProcregWriteFlags flags,
                                                     GError **error)
{
    procreg *reg = handle(registry, error);
    procreg_key *key = reg ? key_for(ns, name, error) : NULL;
    if (key == NULL) {
        /* The metadata is not taken: a floating one is released here. */
        if (metadata != NULL)
            g_variant_unref(g_variant_ref_sink(metadata));
        return 0;
    }
    uint64_t revision = 0;
    int rc = procreg_update_metadata_full(reg, key, metadata, mode,
                                          if_revision, flags, &revision,
                                          error);
    procreg_key_unref(key);
    return failed(rc, error) ? 0 : revision;
}

/* ---- many entries ---- */

/* A GPtrArray of boxed entries that takes over @entries (freed). */
static GPtrArray *entry_array(procreg_entry *entries, size_t n)
{
    GPtrArray *a = g_ptr_array_new_full((guint)n,
                                        (GDestroyNotify)procreg_gi_entry_free);
    for (size_t i = 0; i < n; i++)
        g_ptr_array_add(a, procreg_gi_entry_take(&entries[i]));
    g_free(entries);
    return a;
}

PROCREG_API GPtrArray *procreg_registry_list(ProcregRegistry *registry,
                                             const char *ns, GError **error)
{
    procreg *reg = handle(registry, error);
    procreg_entry *all = NULL;
    size_t n = 0;
    if (reg == NULL || failed(procreg_list(reg, ns, &all, &n, error), error))
        return NULL;
    return entry_array(all, n);
}

PROCREG_API guint64 procreg_registry_count(ProcregRegistry *registry,
                                           const char *ns, GError **error)
{
    procreg *reg = handle(registry, error);
    size_t n = 0;
    if (reg == NULL || failed(procreg_count(reg, ns, &n, error), error))
        return 0;
    return n;
}

PROCREG_API GPtrArray *procreg_registry_find(ProcregRegistry *registry,
                                             const char *ns,
                                             const char *meta_key,
                                             GVariant *value, GError **error)
{
    procreg *reg = handle(registry, error);
    procreg_entry *all = NULL;
    size_t n = 0;
    if (reg == NULL ||
        failed(procreg_find(reg, ns, meta_key, value, &all, &n, error), error))
        return NULL;
    return entry_array(all, n);
}

PROCREG_API GPtrArray *procreg_registry_list_owned(ProcregRegistry *registry,
                                                   gint pid, GError **error)
{
    procreg *reg = handle(registry, error);
    procreg_entry *all = NULL;
    size_t n = 0;
    if (reg == NULL ||
        failed(procreg_list_owned(reg, pid, &all, &n, error), error))
        return NULL;
    return entry_array(all, n);
}

/* ---- events and waiting ---- */

/* A binding's subscription: the registry handle handed to its callback is
 * @registry's, which outlives the subscription (closing ends it). */
typedef struct {
    ProcregRegistry *registry;
    ProcregEventFunc func;
    gpointer user_data;
    GDestroyNotify destroy;
} subscription;

static void subscription_call(procreg *reg, const procreg_event *event,
                              gpointer data)
{
    subscription *s = data;
    s->func(s->registry, event, s->user_data);
}

static void subscription_free(gpointer data)
{
    subscription *s = data;
    if (s->destroy != NULL)
        s->destroy(s->user_data);
    g_free(s);
}

/* procreg_registry_subscribe(), from @after when not NULL. */
static guint64 subscribe(ProcregRegistry *registry, const char *ns,
                         const char *name, const guint64 *after,
                         ProcregEventFunc func, gpointer user_data,
                         GDestroyNotify destroy, GError **error)
{
    procreg *reg = handle(registry, error);
    uint64_t id = 0;
    int rc = PROCREG_EINVAL;
    if (reg != NULL) {
        subscription *s = g_new(subscription, 1);
        *s = (subscription){registry, func, user_data, destroy};
        GMainContext *context = g_main_context_ref_thread_default();
        rc = after != NULL
                 ? procreg_subscribe_from(reg, ns, name, *after,
                                          subscription_call, s,
                                          subscription_free, context, &id,
                                          error)
                 : procreg_subscribe(reg, ns, name, subscription_call, s,
                                     subscription_free, context, &id, error);
        g_main_context_unref(context);
        if (rc != 0)
            g_free(s); /* procreg_subscribe() did not take it */
    }
    if (failed(rc, error)) {
        /* A binding frees its callback when told the call is done with it. */
        if (destroy != NULL)
            destroy(user_data);
        return 0;
    }
    return id;
}

PROCREG_API guint64 procreg_registry_subscribe(ProcregRegistry *registry,
                                               const char *ns,
                                               const char *name,
                                               ProcregEventFunc func,
                                               gpointer user_data,
                                               GDestroyNotify destroy,
                                               GError **error)
{
    return subscribe(registry, ns, name, NULL, func, user_data, destroy,
                     error);
}

PROCREG_API guint64 procreg_registry_subscribe_from(
    ProcregRegistry *registry, const char *ns, const char *name,
    guint64 after, ProcregEventFunc func, gpointer user_data,
    GDestroyNotify destroy, GError **error)
{
    return subscribe(registry, ns, name, &after, func, user_data, destroy,
                     error);
}

PROCREG_API guint64 procreg_registry_get_position(ProcregRegistry *registry,
                                                  GError **error)
{
    procreg *reg = handle(registry, error);
    uint64_t position = 0;
    int rc = reg != NULL ? procreg_event_position(reg, &position, error)
                         : PROCREG_EINVAL;
    return failed(rc, error) ? 0 : position;
}

PROCREG_API gboolean procreg_registry_unsubscribe(ProcregRegistry *registry,
                                                  guint64 id, GError **error)
{
    procreg *reg = handle(registry, error);
    if (reg == NULL)
        return FALSE;
    int rc = procreg_unsubscribe(reg, id);
    if (rc != 0)
        procreg_set_error(error, rc, "no subscription %" G_GUINT64_FORMAT, id);
    return !failed(rc, error);
}

PROCREG_API ProcregEntry *procreg_registry_wait_for(ProcregRegistry *registry,
                                                    const char *ns,
                                                    const char *name,
                                                    gint timeout_ms,
                                                    GCancellable *cancellable,
                                                    GError **error)
{
    procreg *reg = handle(registry, error);
    procreg_entry e = {0};
    if (reg == NULL ||
        failed(procreg_wait_for(reg, ns, name, timeout_ms, cancellable, &e,
                                error),
               error))
        return NULL;
    e.ns = g_strdup(ns ? ns : PROCREG_NS_PRODUCTION);
    e.name = g_strdup(name);
    return procreg_gi_entry_take(&e);
}

/* ---- namespaces, health, statistics ---- */

PROCREG_API char *procreg_registry_new_test_namespace(ProcregRegistry *registry,
                                                      GError **error)
{
    procreg *reg = handle(registry, error);
    char *ns = NULL;
    if (reg == NULL ||
        failed(procreg_namespace_new_test(reg, &ns, error), error))
        return NULL;
    return ns;
}

PROCREG_API guint64 procreg_registry_drop_namespace(ProcregRegistry *registry,
                                                    const char *ns,
                                                    gboolean *atomic,
                                                    GError **error)
{
    procreg *reg = handle(registry, error);
    size_t removed = 0;
    bool was_atomic = false;
    if (reg == NULL ||
        failed(procreg_namespace_drop(reg, ns, &removed, &was_atomic, error),
               error))
        return 0;
    if (atomic != NULL)
        *atomic = was_atomic;
    return removed;
}

PROCREG_API GPtrArray *procreg_registry_list_namespaces(ProcregRegistry *registry,
                                                        GError **error)
{
    procreg *reg = handle(registry, error);
    procreg_namespace_info *infos = NULL;
    size_t n = 0;
    if (reg == NULL ||
        failed(procreg_namespace_list(reg, &infos, &n, error), error))
        return NULL;
    GPtrArray *a = g_ptr_array_new_full(
        (guint)n, (GDestroyNotify)procreg_gi_namespace_info_free);
    for (size_t i = 0; i < n; i++) {
        procreg_namespace_info *info = g_new(procreg_namespace_info, 1);
        *info = infos[i]; /* takes the name */
        g_ptr_array_add(a, info);
    }
    g_free(infos);
    return a;
}

PROCREG_API ProcregHealth *procreg_registry_check_health(ProcregRegistry *registry,
                                                         GError **error)
{
    procreg *reg = handle(registry, error);
    procreg_health h = {0};
    if (reg == NULL || failed(procreg_health_check(reg, &h, error), error))
        return NULL;
    return g_memdup2(&h, sizeof h); /* takes what @h holds */
}

PROCREG_API GVariant *procreg_registry_get_stats(ProcregRegistry *registry,
                                                 GError **error)
{
    procreg *reg = handle(registry, error);
    GVariant *stats = NULL;
    if (reg == NULL || failed(procreg_stats(reg, &stats, error), error))
        return NULL;
    return stats;
}

PROCREG_API char *procreg_registry_get_stats_prometheus(ProcregRegistry *registry,
                                                        GError **error)
{
    procreg *reg = handle(registry, error);
    if (reg == NULL)
        return NULL;
    GString *text = g_string_new(NULL);
    if (failed(procreg_stats_write_prometheus(reg, text, error), error)) {
        g_string_free(text, TRUE);
        return NULL;
    }
    return g_string_free(text, FALSE);
}
