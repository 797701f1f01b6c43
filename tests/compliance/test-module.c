/*
 * A backend built as a separate shared module, the way an out-of-tree
 * backend is: a GHashTable of entries keyed by the key bytes.  It declares
 * no capability flags, so the core serialises every call to it, and it
 * leaves every optional slot empty, so the core's fallbacks (count,
 * list_names, drop_namespace, find) run on it.
 *
 * Built twice: as "test_module" (correct) and, with
 * -DTEST_MODULE_BROKEN, as "test_broken", whose option bug=NAME plants
 * one contract violation for the suite to catch:
 *   dup       register does not detect a taken key (it overwrites);
 *   stale     lookup answers from a cache that is never invalidated;
 *   revision  update_metadata keeps the old revision;
 *   nsleak    list_all ignores the namespace filter.
 */
#define PROCREG_ENABLE_BACKEND 1
#include <procreg/backend.h>

#include <string.h>

#ifdef TEST_MODULE_BROKEN
#define MODULE_NAME "test_broken"
#else
#define MODULE_NAME "test_module"
#endif

typedef struct {
    char *ns;
    char *name;
    procreg_owner owner;
    GVariant *metadata;
    int64_t registered_at;
    uint64_t revision;
} Item;

typedef struct {
    GHashTable *items; /* GBytes (key bytes) -> Item* */
    uint64_t last_revision;
#ifdef TEST_MODULE_BROKEN
    char *bug;
    GHashTable *stale_cache; /* GBytes -> procreg_owner* */
#endif
} State;

static void item_free(gpointer p)
{
    Item *it = p;
    g_free(it->ns);
    g_free(it->name);
    if (it->metadata != NULL)
        g_variant_unref(it->metadata);
    g_free(it);
}

static GBytes *key_bytes(const procreg_key *key)
{
    return g_bytes_new(procreg_key_bytes(key), procreg_key_size(key));
}

static void fill(const Item *it, procreg_entry *out, bool names)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    if (names) {
        out->ns = g_strdup(it->ns);
        out->name = g_strdup(it->name);
    }
    out->owner = it->owner;
    out->metadata = it->metadata ? g_variant_ref(it->metadata) : NULL;
    out->registered_at = it->registered_at;
    out->revision = it->revision;
}

#ifdef TEST_MODULE_BROKEN
static bool bug(const State *s, const char *name)
{
    return s->bug != NULL && strcmp(s->bug, name) == 0;
}
#endif

static int tm_init(const procreg_spec *spec, procreg_backend_host *host,
                   void **state, GError **error)
{
    (void)host;
    State *s = g_new0(State, 1);
    s->items = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                     (GDestroyNotify)g_bytes_unref, item_free);
#ifdef TEST_MODULE_BROKEN
    const char *b = procreg_spec_get(spec, "bug");
    static const char *const known[] = {"dup", "stale", "revision", "nsleak"};
    bool ok = b == NULL;
    for (size_t i = 0; b != NULL && i < G_N_ELEMENTS(known); i++)
        ok |= strcmp(b, known[i]) == 0;
    if (!ok) {
        g_hash_table_unref(s->items);
        g_free(s);
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "bug=%s: expected dup, stale, revision or "
                                 "nsleak", b);
    }
    s->bug = g_strdup(b);
    s->stale_cache = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                           (GDestroyNotify)g_bytes_unref,
                                           g_free);
#else
    (void)spec;
    (void)error;
#endif
    *state = s;
    return 0;
}

static void tm_destroy(void *state)
{
    State *s = state;
    g_hash_table_unref(s->items);
#ifdef TEST_MODULE_BROKEN
    g_hash_table_unref(s->stale_cache);
    g_free(s->bug);
#endif
    g_free(s);
}

static int tm_register(void *state, const procreg_key *key,
                       const procreg_record *record, procreg_entry *current,
                       GError **error)
{
    State *s = state;
    GBytes *kb = key_bytes(key);
    Item *old = g_hash_table_lookup(s->items, kb);
    bool detect = true;
#ifdef TEST_MODULE_BROKEN
    detect = !bug(s, "dup");
#endif
    if (old != NULL && detect) {
        g_bytes_unref(kb);
        fill(old, current, true);
        return procreg_set_error(error, PROCREG_EEXISTS,
                                 "%s/%s is already registered by pid %d",
                                 old->ns, old->name, (int)old->owner.pid);
    }
    Item *it = g_new0(Item, 1);
    it->ns = g_strdup(procreg_key_bytes(key));
    it->name = g_strdup(procreg_key_bytes(key) + key->ns_len + 1);
    it->owner = record->owner;
    it->metadata = record->metadata ? g_variant_ref(record->metadata) : NULL;
    it->registered_at = record->registered_at;
    it->revision = ++s->last_revision;
    g_hash_table_replace(s->items, kb, it);
    fill(it, current, true);
    return 0;
}

static int tm_lookup(void *state, const procreg_key *key, procreg_owner *out)
{
    State *s = state;
    GBytes *kb = key_bytes(key);
#ifdef TEST_MODULE_BROKEN
    if (bug(s, "stale")) {
        procreg_owner *cached = g_hash_table_lookup(s->stale_cache, kb);
        if (cached != NULL) {
            g_bytes_unref(kb);
            *out = *cached;
            return 0;
        }
    }
#endif
    Item *it = g_hash_table_lookup(s->items, kb);
    if (it == NULL) {
        g_bytes_unref(kb);
        return PROCREG_ENOTFOUND;
    }
    *out = it->owner;
#ifdef TEST_MODULE_BROKEN
    if (bug(s, "stale")) {
        g_hash_table_replace(s->stale_cache, kb,
                             g_memdup2(&it->owner, sizeof it->owner));
        return 0;
    }
#endif
    g_bytes_unref(kb);
    return 0;
}

static int not_found(GError **error, const procreg_key *key)
{
    return procreg_set_error(error, PROCREG_ENOTFOUND, "%s/%s not found",
                             procreg_key_bytes(key),
                             procreg_key_bytes(key) + key->ns_len + 1);
}

static int tm_lookup_entry(void *state, const procreg_key *key,
                           procreg_entry *out, GError **error)
{
    State *s = state;
    GBytes *kb = key_bytes(key);
    Item *it = g_hash_table_lookup(s->items, kb);
    g_bytes_unref(kb);
    if (it == NULL)
        return not_found(error, key);
    fill(it, out, false);
    return 0;
}

static int tm_unregister(void *state, const procreg_key *key,
                         uint64_t if_revision, procreg_entry *removed,
                         GError **error)
{
    State *s = state;
    GBytes *kb = key_bytes(key);
    Item *it = g_hash_table_lookup(s->items, kb);
    if (it == NULL) {
        g_bytes_unref(kb);
        return not_found(error, key);
    }
    if (if_revision != 0 && it->revision != if_revision) {
        g_bytes_unref(kb);
        return procreg_set_error(error, PROCREG_ECONFLICT,
                                 "%s/%s is at revision %" G_GUINT64_FORMAT
                                 ", not %" G_GUINT64_FORMAT, it->ns,
                                 it->name, it->revision, if_revision);
    }
    fill(it, removed, true);
    g_hash_table_remove(s->items, kb);
    g_bytes_unref(kb);
    return 0;
}

static int tm_list_all(void *state, const char *ns, GArray *out,
                       GError **error)
{
    (void)error;
    State *s = state;
    bool filter = ns != NULL;
#ifdef TEST_MODULE_BROKEN
    if (bug(s, "nsleak"))
        filter = false;
#endif
    GHashTableIter iter;
    gpointer value;
    g_hash_table_iter_init(&iter, s->items);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        Item *it = value;
        if (filter && strcmp(it->ns, ns) != 0)
            continue;
        procreg_entry e;
        fill(it, &e, true);
        g_array_append_val(out, e);
    }
    return 0;
}

static int tm_update_metadata(void *state, const procreg_key *key,
                              GVariant *metadata, uint64_t if_revision,
                              procreg_entry *updated, GError **error)
{
    State *s = state;
    GBytes *kb = key_bytes(key);
    Item *it = g_hash_table_lookup(s->items, kb);
    g_bytes_unref(kb);
    if (it == NULL)
        return not_found(error, key);
    if (if_revision != 0 && it->revision != if_revision)
        return procreg_set_error(error, PROCREG_ECONFLICT,
                                 "%s/%s is at revision %" G_GUINT64_FORMAT
                                 ", not %" G_GUINT64_FORMAT, it->ns,
                                 it->name, it->revision, if_revision);
    if (metadata != NULL)
        g_variant_ref(metadata);
    if (it->metadata != NULL)
        g_variant_unref(it->metadata);
    it->metadata = metadata;
    bool bump = true;
#ifdef TEST_MODULE_BROKEN
    bump = !bug(s, "revision");
#endif
    if (bump)
        it->revision = ++s->last_revision;
    fill(it, updated, true);
    return 0;
}

static int tm_health_check(void *state, GVariantDict *details, char **message)
{
    State *s = state;
    g_variant_dict_insert(details, "entries", "t",
                          (guint64)g_hash_table_size(s->items));
    *message = g_strdup_printf("%u entries", g_hash_table_size(s->items));
    return PROCREG_HEALTH_OK;
}

#ifdef TEST_MODULE_BROKEN
static const procreg_backend_option tm_options[] = {
    {"bug", "the contract violation to plant: dup, stale, revision, nsleak"},
    {NULL, NULL},
};
#endif

static const procreg_backend_ops tm_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = MODULE_NAME,
    .description = "GHashTable test backend loaded from a module",
    .caps = 0,
#ifdef TEST_MODULE_BROKEN
    .options = tm_options,
#else
    .options = NULL,
#endif
    .init = tm_init,
    .destroy = tm_destroy,
    .register_entry = tm_register,
    .lookup = tm_lookup,
    .lookup_entry = tm_lookup_entry,
    .unregister = tm_unregister,
    .list_all = tm_list_all,
    .update_metadata = tm_update_metadata,
    .health_check = tm_health_check,
};

__attribute__((visibility("default"))) const procreg_backend_ops *
procreg_backend_module(void);

__attribute__((visibility("default"))) const procreg_backend_ops *
procreg_backend_module(void)
{
    return &tm_ops;
}
