/*
 * A minimal complete procreg backend, built as a loadable module: entries
 * in a GHashTable keyed by the key bytes, behind a reader/writer lock of
 * its own.  doc/backends.md walks through it; the build compiles it as a
 * module and runs the compliance suite on it (test compliance-example).
 *
 * What a backend must do (include/procreg/backend.h has the contract):
 *  - fill a static procreg_backend_ops table, version first, and export
 *    procreg_backend_module() returning it;
 *  - implement the required slots; the core validates every key and
 *    metadata before a slot sees them, and calls the optional slots'
 *    fallbacks (count, find, drop_namespace, ...) when they are NULL;
 *  - give every change a revision above every revision handed out before;
 *  - with PROCREG_CAP_THREADSAFE, be safe for any calls at once (here, the
 *    lock); without it the core serialises the calls itself.
 */
#define PROCREG_ENABLE_BACKEND 1
#include <procreg/backend.h>

#include <pthread.h>
#include <string.h>

typedef struct {
    procreg_entry e; /* ns and name set */
} item;

typedef struct {
    pthread_rwlock_t lock;
    GHashTable *items; /* GBytes (the key's bytes) -> item* */
    uint64_t revision; /* the last one handed out */
} example;

static void item_free(gpointer p)
{
    item *it = p;
    procreg_entry_clear(&it->e);
    g_free(it);
}

static GBytes *key_of(const procreg_key *key)
{
    return g_bytes_new(procreg_key_bytes(key), procreg_key_size(key));
}

/* Copy @it out: the caller owns what it gets (strings, a metadata ref). */
static void copy_out(const item *it, procreg_entry *out, bool with_names)
{
    if (out == NULL)
        return;
    *out = it->e;
    out->ns = with_names ? g_strdup(it->e.ns) : NULL;
    out->name = with_names ? g_strdup(it->e.name) : NULL;
    if (out->metadata != NULL)
        g_variant_ref(out->metadata);
}

static int example_init(const procreg_spec *spec, procreg_backend_host *host,
                        void **state, GError **error)
{
    example *x = g_new0(example, 1);
    pthread_rwlock_init(&x->lock, NULL);
    x->items = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                     (GDestroyNotify)g_bytes_unref,
                                     item_free);
    *state = x;
    return 0;
}

static void example_destroy(void *state)
{
    example *x = state;
    g_hash_table_unref(x->items);
    pthread_rwlock_destroy(&x->lock);
    g_free(x);
}

static int example_register(void *state, const procreg_key *key,
                            const procreg_record *record,
                            procreg_entry *current, GError **error)
{
    example *x = state;
    GBytes *k = key_of(key);
    pthread_rwlock_wrlock(&x->lock);
    item *held = g_hash_table_lookup(x->items, k);
    int rc = PROCREG_EEXISTS;
    if (held == NULL) {
        held = g_new0(item, 1);
        held->e.ns = g_strdup(procreg_key_namespace(key));
        held->e.name = g_strdup(procreg_key_name(key));
        held->e.owner = record->owner;
        held->e.metadata =
            record->metadata ? g_variant_ref(record->metadata) : NULL;
        held->e.registered_at = record->registered_at;
        held->e.revision = ++x->revision;
        g_hash_table_insert(x->items, g_bytes_ref(k), held);
        rc = 0;
    }
    copy_out(held, current, false); /* the new entry, or the holder */
    pthread_rwlock_unlock(&x->lock);
    g_bytes_unref(k);
    return rc;
}

static int example_lookup(void *state, const procreg_key *key,
                          procreg_owner *out)
{
    example *x = state;
    GBytes *k = key_of(key);
    pthread_rwlock_rdlock(&x->lock);
    item *it = g_hash_table_lookup(x->items, k);
    if (it != NULL)
        *out = it->e.owner;
    pthread_rwlock_unlock(&x->lock);
    g_bytes_unref(k);
    return it != NULL ? 0 : PROCREG_ENOTFOUND;
}

static int example_lookup_entry(void *state, const procreg_key *key,
                                procreg_entry *out, GError **error)
{
    example *x = state;
    GBytes *k = key_of(key);
    pthread_rwlock_rdlock(&x->lock);
    item *it = g_hash_table_lookup(x->items, k);
    copy_out(it, it != NULL ? out : NULL, false);
    pthread_rwlock_unlock(&x->lock);
    g_bytes_unref(k);
    return it != NULL ? 0 : PROCREG_ENOTFOUND;
}

/* Look @key up for a write: PROCREG_ENOTFOUND, PROCREG_ECONFLICT when
 * @if_revision is set and differs, else 0 with *@it. */
static int find_for_write(example *x, GBytes *k, uint64_t if_revision,
                          item **it)
{
    *it = g_hash_table_lookup(x->items, k);
    if (*it == NULL)
        return PROCREG_ENOTFOUND;
    if (if_revision != 0 && (*it)->e.revision != if_revision)
        return PROCREG_ECONFLICT;
    return 0;
}

static int example_unregister(void *state, const procreg_key *key,
                              uint64_t if_revision, procreg_entry *removed,
                              GError **error)
{
    example *x = state;
    GBytes *k = key_of(key);
    item *it;
    pthread_rwlock_wrlock(&x->lock);
    int rc = find_for_write(x, k, if_revision, &it);
    if (rc == 0) {
        copy_out(it, removed, false);
        x->revision++; /* a removal is a change too */
        g_hash_table_remove(x->items, k);
    }
    pthread_rwlock_unlock(&x->lock);
    g_bytes_unref(k);
    return rc;
}

static int example_update(void *state, const procreg_key *key,
                          GVariant *metadata, uint64_t if_revision,
                          procreg_entry *updated, GError **error)
{
    example *x = state;
    GBytes *k = key_of(key);
    item *it;
    pthread_rwlock_wrlock(&x->lock);
    int rc = find_for_write(x, k, if_revision, &it);
    if (rc == 0) {
        if (it->e.metadata != NULL)
            g_variant_unref(it->e.metadata);
        it->e.metadata = metadata ? g_variant_ref(metadata) : NULL;
        it->e.revision = ++x->revision;
        copy_out(it, updated, false);
    }
    pthread_rwlock_unlock(&x->lock);
    g_bytes_unref(k);
    return rc;
}

static int example_list_all(void *state, const char *ns, GArray *out,
                            GError **error)
{
    example *x = state;
    pthread_rwlock_rdlock(&x->lock);
    GHashTableIter iter;
    gpointer v;
    g_hash_table_iter_init(&iter, x->items);
    while (g_hash_table_iter_next(&iter, NULL, &v)) {
        const item *it = v;
        if (ns != NULL && strcmp(ns, it->e.ns) != 0)
            continue;
        procreg_entry e;
        copy_out(it, &e, true);
        g_array_append_val(out, e);
    }
    pthread_rwlock_unlock(&x->lock);
    return 0;
}

static int example_health(void *state, GVariantDict *details, char **message)
{
    example *x = state;
    pthread_rwlock_rdlock(&x->lock);
    guint n = g_hash_table_size(x->items);
    pthread_rwlock_unlock(&x->lock);
    g_variant_dict_insert(details, "entries", "u", n);
    return PROCREG_HEALTH_OK;
}

static const procreg_backend_ops example_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "example",
    .description = "a GHashTable behind a reader/writer lock (doc/backends.md)",
    .caps = PROCREG_CAP_THREADSAFE,
    .init = example_init,
    .destroy = example_destroy,
    .register_entry = example_register,
    .lookup = example_lookup,
    .lookup_entry = example_lookup_entry,
    .unregister = example_unregister,
    .list_all = example_list_all,
    .update_metadata = example_update,
    .health_check = example_health,
};

/* The one symbol a module exports. */
__attribute__((visibility("default"))) const procreg_backend_ops *
procreg_backend_module(void);

const procreg_backend_ops *procreg_backend_module(void)
{
    return &example_ops;
}
