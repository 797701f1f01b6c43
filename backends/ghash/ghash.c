/*
 * ghash: the reference backend on GHashTable.  Simple on purpose.  It does
 * no locking of its own: its caps ask the core for a reader/writer lock,
 * so lookups run in parallel and writes are exclusive.
 *
 * Two tables: every entry by its full key (hashed with the key's
 * precomputed hash, so lookups never re-hash), and per namespace the set
 * of its entries, so listing, counting or dropping one namespace never
 * visits the others.  Entries live in the instance's slab
 * (backends/slab), next to each other, not spread through the heap.
 * Groups live apart, in ghash-groups.c.
 */
#include "ghash-internal.h"

#include <string.h>

typedef struct {
    procreg_owner owner;
    GVariant *metadata; /* a{sv} or NULL */
    int64_t registered_at;
    uint64_t revision;
    procreg_key key; /* last: flexible bytes */
} ghash_entry;

static size_t entry_size(const procreg_key *key)
{
    return sizeof(ghash_entry) + procreg_key_size(key) + 1;
}

/* What @e takes: its slot, or its malloc block. */
static size_t entry_bytes(ghash_entry *e)
{
    return procreg_slab_bytes(e, entry_size(&e->key));
}

/* by_key holds each entry's &e->key as key and value alike
 * (g_hash_table_add()), so GHashTable keeps one array for both: 8 bytes
 * a bucket fewer than a separate value. */
static ghash_entry *entry_of(gconstpointer key)
{
    return (ghash_entry *)(void *)((char *)key - offsetof(ghash_entry, key));
}

static ghash_entry *find(ghash_state *s, const procreg_key *key)
{
    gpointer k = g_hash_table_lookup(s->by_key, key);
    return k != NULL ? entry_of(k) : NULL;
}

static void entry_free(gpointer key)
{
    ghash_entry *e = entry_of(key);
    if (e->metadata != NULL)
        g_variant_unref(e->metadata);
    procreg_slab_release(e, entry_size(&e->key));
}

static int ghash_init(const procreg_spec *spec, procreg_backend_host *host,
                      void **state, GError **error)
{
    ghash_state *s = g_new0(ghash_state, 1);
    s->by_key = g_hash_table_new_full(procreg_ghash_key_hash,
                                      procreg_ghash_key_equal, NULL,
                                      entry_free);
    s->by_namespace = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                            (GDestroyNotify)g_hash_table_unref);
    s->groups = procreg_ghash_groups_new();
    procreg_slab_init(&s->slab);
    *state = s;
    return 0;
}

static void ghash_destroy(void *state)
{
    ghash_state *s = state;
    procreg_ghash_groups_free(s->groups);
    /* Namespace sets only point at entries; drop them first. */
    g_hash_table_unref(s->by_namespace);
    g_hash_table_unref(s->by_key); /* releases every entry */
    procreg_slab_destroy(&s->slab);
    g_free(s);
}

/* Copy what callers own out of @e. */
static void fill_entry(const ghash_entry *e, procreg_entry *out, bool names)
{
    if (out == NULL)
        return;
    out->ns = names ? g_strdup(procreg_key_namespace(&e->key)) : NULL;
    out->name = names ? g_strdup(procreg_key_name(&e->key)) : NULL;
    out->owner = e->owner;
    out->metadata = e->metadata ? g_variant_ref(e->metadata) : NULL;
    out->registered_at = e->registered_at;
    out->revision = e->revision;
}

static int ghash_register(void *state, const procreg_key *key,
                          const procreg_record *record, procreg_entry *current,
                          GError **error)
{
    ghash_state *s = state;
    ghash_entry *held = find(s, key);
    if (held != NULL) {
        fill_entry(held, current, false);
        return PROCREG_EEXISTS;
    }
    ghash_entry *e = procreg_slab_alloc(&s->slab, entry_size(key));
    if (e == NULL)
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ghash: out of memory for an entry");
    e->owner = record->owner;
    e->metadata = record->metadata ? g_variant_ref(record->metadata) : NULL;
    e->registered_at = record->registered_at;
    e->revision = ++s->revision;
    memcpy(&e->key, key, sizeof *key + procreg_key_size(key) + 1);
    g_hash_table_add(s->by_key, &e->key);

    const char *ns = procreg_key_namespace(key);
    GHashTable *set = g_hash_table_lookup(s->by_namespace, ns);
    if (set == NULL) {
        set = g_hash_table_new(g_direct_hash, g_direct_equal);
        g_hash_table_insert(s->by_namespace, g_strdup(ns), set);
    }
    g_hash_table_add(set, e);
    s->bytes += entry_bytes(e);
    fill_entry(e, current, false);
    return 0;
}

static int ghash_lookup(void *state, const procreg_key *key,
                        procreg_owner *out)
{
    ghash_state *s = state;
    const ghash_entry *e = find(s, key);
    if (e == NULL)
        return PROCREG_ENOTFOUND;
    *out = e->owner;
    return 0;
}

static int ghash_lookup_entry(void *state, const procreg_key *key,
                              procreg_entry *out, GError **error)
{
    ghash_state *s = state;
    const ghash_entry *e = find(s, key);
    if (e == NULL)
        return PROCREG_ENOTFOUND;
    fill_entry(e, out, false);
    return 0;
}

/* Find @key and check @if_revision; returns the entry or NULL with @rc. */
static ghash_entry *find_for_write(ghash_state *s, const procreg_key *key,
                                   uint64_t if_revision, int *rc)
{
    ghash_entry *e = find(s, key);
    *rc = e == NULL                                        ? PROCREG_ENOTFOUND
          : (if_revision != 0 && e->revision != if_revision) ? PROCREG_ECONFLICT
                                                           : 0;
    return *rc == 0 ? e : NULL;
}

static void remove_entry(ghash_state *s, ghash_entry *e)
{
    const char *ns = procreg_key_namespace(&e->key);
    GHashTable *set = g_hash_table_lookup(s->by_namespace, ns);
    g_hash_table_remove(set, e);
    if (g_hash_table_size(set) == 0)
        g_hash_table_remove(s->by_namespace, ns);
    s->bytes -= entry_bytes(e);
    g_hash_table_remove(s->by_key, &e->key); /* frees e */
}

static int ghash_unregister(void *state, const procreg_key *key,
                            uint64_t if_revision, procreg_entry *removed,
                            GError **error)
{
    ghash_state *s = state;
    int rc;
    ghash_entry *e = find_for_write(s, key, if_revision, &rc);
    if (e == NULL)
        return rc;
    fill_entry(e, removed, false);
    s->revision++; /* a removal is a change too */
    remove_entry(s, e);
    return 0;
}

/* The owner rule's check and the removal in one call (the core holds its
 * write lock around it). */
static int ghash_unregister_owned(void *state, const procreg_key *key,
                                  const procreg_owner *owner,
                                  procreg_entry *removed)
{
    ghash_state *s = state;
    ghash_entry *e = find(s, key);
    if (e == NULL)
        return PROCREG_ENOTFOUND;
    if (!procreg_backend_owner_same(&e->owner, owner))
        return PROCREG_EPERM;
    fill_entry(e, removed, false);
    s->revision++; /* a removal is a change too */
    remove_entry(s, e);
    return 0;
}

static int ghash_update_metadata(void *state, const procreg_key *key,
                                 GVariant *metadata, uint64_t if_revision,
                                 procreg_entry *updated, GError **error)
{
    ghash_state *s = state;
    int rc;
    ghash_entry *e = find_for_write(s, key, if_revision, &rc);
    if (e == NULL)
        return rc;
    if (e->metadata != NULL)
        g_variant_unref(e->metadata);
    e->metadata = metadata ? g_variant_ref(metadata) : NULL;
    e->revision = ++s->revision;
    fill_entry(e, updated, false);
    return 0;
}

static void append_set(GHashTable *set, GArray *out)
{
    GHashTableIter it;
    gpointer e;
    g_hash_table_iter_init(&it, set);
    while (g_hash_table_iter_next(&it, &e, NULL)) {
        procreg_entry pe = {0};
        fill_entry(e, &pe, true);
        g_array_append_val(out, pe);
    }
}

static int ghash_list_all(void *state, const char *ns, GArray *out,
                          GError **error)
{
    ghash_state *s = state;
    if (ns != NULL) {
        GHashTable *set = g_hash_table_lookup(s->by_namespace, ns);
        if (set != NULL)
            append_set(set, out);
        return 0;
    }
    GHashTableIter it;
    gpointer set;
    g_hash_table_iter_init(&it, s->by_namespace);
    while (g_hash_table_iter_next(&it, NULL, &set))
        append_set(set, out);
    return 0;
}

static int ghash_count(void *state, const char *ns, size_t *out,
                       GError **error)
{
    ghash_state *s = state;
    GHashTable *set = ns ? g_hash_table_lookup(s->by_namespace, ns) : s->by_key;
    *out = set ? g_hash_table_size(set) : 0;
    return 0;
}

static int ghash_count_namespaces(void *state, GArray *out, GError **error)
{
    ghash_state *s = state;
    GHashTableIter it;
    gpointer ns, set;
    g_hash_table_iter_init(&it, s->by_namespace);
    while (g_hash_table_iter_next(&it, &ns, &set)) {
        procreg_namespace_info info = {g_strdup(ns), g_hash_table_size(set)};
        if (info.entries > 0)
            g_array_append_val(out, info);
        else
            g_free(info.ns);
    }
    return 0;
}

static int ghash_list_names(void *state, const char *ns, size_t max,
                            GPtrArray *out)
{
    ghash_state *s = state;
    GHashTable *set = g_hash_table_lookup(s->by_namespace, ns);
    if (set == NULL)
        return 0;
    GHashTableIter it;
    gpointer p;
    g_hash_table_iter_init(&it, set);
    while (out->len < max && g_hash_table_iter_next(&it, &p, NULL))
        g_ptr_array_add(out, g_strdup(procreg_key_name(&((ghash_entry *)p)->key)));
    return 0;
}

static int ghash_drop_namespace(void *state, const char *ns, GArray *removed,
                                GError **error)
{
    ghash_state *s = state;
    GHashTable *set = g_hash_table_lookup(s->by_namespace, ns);
    if (set == NULL)
        return 0;
    append_set(set, removed);
    GHashTableIter it;
    gpointer p;
    g_hash_table_iter_init(&it, set);
    while (g_hash_table_iter_next(&it, &p, NULL)) {
        ghash_entry *e = p;
        s->bytes -= entry_bytes(e);
        g_hash_table_remove(s->by_key, &e->key);
    }
    s->revision++;
    g_hash_table_remove(s->by_namespace, ns);
    return 0;
}

static int ghash_memory_usage(void *state, size_t *bytes)
{
    ghash_state *s = state;
    /* GHashTable keeps a hash and a key slot per bucket (its keys are
     * its values, in by_key and in the namespace sets alike). */
    size_t buckets = g_hash_table_size(s->by_key) * 2;
    size_t chunk_bytes, free_bytes;
    procreg_slab_figures(&s->slab, &chunk_bytes, &free_bytes);
    *bytes = s->bytes + free_bytes +
             2 * buckets * (sizeof(guint) + sizeof(gpointer)) +
             procreg_ghash_groups_bytes(s->groups);
    return 0;
}

static int ghash_health_check(void *state, GVariantDict *details,
                              char **message)
{
    ghash_state *s = state;
    g_variant_dict_insert(details, "entries", "u",
                          g_hash_table_size(s->by_key));
    g_variant_dict_insert(details, "namespaces", "u",
                          g_hash_table_size(s->by_namespace));
    return PROCREG_HEALTH_OK;
}

static void ghash_stats(void *state, GVariantDict *out)
{
    ghash_state *s = state;
    g_variant_dict_insert(out, "namespaces", "u",
                          g_hash_table_size(s->by_namespace));
    g_variant_dict_insert(out, "revision", "t", (guint64)s->revision);
    size_t chunk_bytes, free_bytes;
    procreg_slab_figures(&s->slab, &chunk_bytes, &free_bytes);
    g_variant_dict_insert(out, "entry_bytes", "t", (guint64)s->bytes);
    g_variant_dict_insert(out, "entry_free_bytes", "t", (guint64)free_bytes);
    g_variant_dict_insert(out, "entry_slab_bytes", "t", (guint64)chunk_bytes);
}

const procreg_backend_ops procreg_ghash_backend_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "ghash",
    .description = "in-memory GHashTable; reads in parallel, writes exclusive",
    .caps = PROCREG_CAP_PARALLEL_READS | PROCREG_CAP_ATOMIC_DROP |
            PROCREG_CAP_GROUPS,
    .options = NULL,
    .init = ghash_init,
    .destroy = ghash_destroy,
    .register_entry = ghash_register,
    .lookup = ghash_lookup,
    .lookup_entry = ghash_lookup_entry,
    .unregister = ghash_unregister,
    .unregister_owned = ghash_unregister_owned,
    .list_all = ghash_list_all,
    .update_metadata = ghash_update_metadata,
    .health_check = ghash_health_check,
    .count = ghash_count,
    .list_names = ghash_list_names,
    .drop_namespace = ghash_drop_namespace,
    .memory_usage = ghash_memory_usage,
    .stats = ghash_stats,
    .count_namespaces = ghash_count_namespaces,
    .group_join = procreg_ghash_group_join,
    .group_leave = procreg_ghash_group_leave,
    .group_members = procreg_ghash_group_members,
    .group_list_all = procreg_ghash_group_list_all,
    .group_count = procreg_ghash_group_count,
    .group_list = procreg_ghash_group_list,
    .group_dispatch = procreg_ghash_group_dispatch,
    .group_pick = procreg_ghash_group_pick,
    .group_member = procreg_ghash_group_member,
};
