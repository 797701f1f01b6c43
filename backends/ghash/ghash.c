/*
 * ghash: the reference backend on GHashTable.  Simple on purpose.  It does
 * no locking of its own: its caps ask the core for a reader/writer lock,
 * so lookups run in parallel and writes are exclusive.
 *
 * One table, every entry by its full key (hashed with the key's
 * precomputed hash, so lookups never re-hash), and per namespace a list
 * of its entries through links in the entries themselves (16 bytes an
 * entry, where a GHashTable set per namespace cost about 21 at 1M), so
 * that listing, counting or dropping one namespace never visits the
 * others.  Entries live in the instance's slab (backends/slab), next to
 * each other, not spread through the heap, with ckht's compact header
 * (ghash_entry): at 1M entries of procreg-bench's keys, 72 bytes of entry
 * and 25 of by_key's buckets (bench/results/issue18-s14/ghash-mem).
 * Groups live apart, in ghash-groups.c.
 */
#include "ghash-internal.h"

#include <string.h>

/* flags: what sits in front of the entry in its allocation, each flag
 * worth its size in pointers (front_size()), as in ckht; GH_PROBE marks
 * a lookup's probe (find()), never an entry. */
#define GH_HAS_METADATA 0x1u  /* a GVariant *, just before the entry */
#define GH_OWNER_IN_FRONT 0x2u /* the whole procreg_owner, before that */
#define GH_FRONT (GH_HAS_METADATA | GH_OWNER_IN_FRONT)
#define GH_PROBE 0x4u
G_STATIC_ASSERT(sizeof(procreg_owner) == 2 * sizeof(void *));
G_STATIC_ASSERT(2 * PROCREG_NAME_MAX + 1 <= UINT16_MAX);

/* An entry: 47 bytes of header, then the key's bytes "ns\0name" without
 * a trailing NUL, so that procreg-bench's keys (24 and 25 bytes) fit a
 * 72-byte slot; the metadata pointer and an owner that does not pack sit
 * in front of it only when there are such (flags).  A lookup reads bytes
 * 32 to 71: the owner, hash, key_size, flags and key. */
typedef struct ghash_entry {
    /* Its namespace's list (gh_namespace); written under the core's
     * write lock only, like everything else here.  In a probe, ns_next's
     * place holds the bytes looked for. */
    struct ghash_entry *ns_prev;
    union {
        struct ghash_entry *ns_next;
        const char *probe_key;
    };
    uint64_t revision;
    int64_t registered_at;
    uint64_t owner;    /* backends/slab/packed-owner.h; 0: in front */
    uint32_t hash;     /* gh_hash(): what by_key hashes, so never rehashed */
    uint16_t key_size; /* bytes of key[] */
    uint8_t flags;
    char key[];
} ghash_entry;
G_STATIC_ASSERT(offsetof(ghash_entry, key) <= 47);

/* One namespace: its entries' list and their count.  by_namespace maps
 * ns (the record's own copy) to it; it goes when its last entry does. */
typedef struct {
    ghash_entry *head;
    size_t count;
    char ns[]; /* NUL-terminated */
} gh_namespace;

/* What a namespace's record costs: its allocation (malloc's header and
 * rounding left out) and its by_namespace bucket (hash, key, value) at a
 * load of about 1/2. */
static size_t namespace_bytes(const gh_namespace *n)
{
    return sizeof *n + strlen(n->ns) + 1 +
           2 * (sizeof(guint) + 2 * sizeof(gpointer));
}

/* by_key's hash of @key: the low 32 bits of its hash, as ckht's. */
static uint32_t key_hash32(const procreg_key *key)
{
    return (uint32_t)key->hash;
}

static size_t front_size(const ghash_entry *e)
{
    return (size_t)(e->flags & GH_FRONT) * sizeof(void *);
}

static void *entry_base(ghash_entry *e)
{
    return (char *)e - front_size(e);
}

static size_t entry_alloc_size(const ghash_entry *e)
{
    return front_size(e) + offsetof(ghash_entry, key) + e->key_size;
}

/* What @e takes: its slot, or its malloc block. */
static size_t entry_bytes(ghash_entry *e)
{
    return procreg_slab_bytes(entry_base(e), entry_alloc_size(e));
}

static GVariant *entry_metadata(const ghash_entry *e)
{
    return e->flags & GH_HAS_METADATA ? ((GVariant *const *)(const void *)e)[-1]
                                      : NULL;
}

static void entry_owner(const ghash_entry *e, procreg_owner *out)
{
    if (G_UNLIKELY(!procreg_owner_unpack(e->owner, out)))
        *out = *(const procreg_owner *)(const void *)((const char *)e -
                                                      front_size(e));
}

/* by_key's functions.  The hash is the one the entry keeps, or the
 * probe's (find()). */
static guint gh_hash(gconstpointer p)
{
    return ((const ghash_entry *)p)->hash;
}

/* GHashTable calls its key_equal_func with the key in the table first
 * and the key looked for second (g_hash_table_new()'s documentation):
 * @a is an entry, since a probe never goes in; @b is a probe (a lookup)
 * or an entry (g_hash_table_add(), g_hash_table_remove()).  Only for keys
 * whose hashes GHashTable found equal, so the hashes are not compared
 * again. */
static gboolean gh_equal(gconstpointer a, gconstpointer b)
{
    const ghash_entry *in = a, *sought = b;
    const char *bytes = sought->flags & GH_PROBE ? sought->probe_key
                                                 : sought->key;
    return in->key_size == sought->key_size &&
           memcmp(in->key, bytes, in->key_size) == 0;
}

/* by_key holds each entry as key and value alike (g_hash_table_add()),
 * so GHashTable keeps one array for both.  A lookup passes a probe: the
 * header's hash, key_size and flags, and a pointer to the key's bytes
 * (an entry-shaped object on the stack, no copy of the key). */
static ghash_entry *find(ghash_state *s, const procreg_key *key)
{
    ghash_entry probe;
    probe.probe_key = procreg_key_bytes(key);
    probe.hash = key_hash32(key);
    probe.key_size = (uint16_t)procreg_key_size(key);
    probe.flags = GH_PROBE;
    return g_hash_table_lookup(s->by_key, &probe);
}

/* A new entry, not yet in by_key or a list (NULL: no memory). */
static ghash_entry *entry_new(ghash_state *s, const procreg_key *key,
                              const procreg_owner *owner, GVariant *metadata,
                              int64_t registered_at, uint64_t revision)
{
    size_t key_size = procreg_key_size(key);
    unsigned int flags = (procreg_owner_packs(owner) ? 0 : GH_OWNER_IN_FRONT) |
                         (metadata ? GH_HAS_METADATA : 0);
    size_t pre = flags * sizeof(void *);
    char *base = procreg_slab_alloc(&s->slab, pre + offsetof(ghash_entry, key) +
                                                  key_size);
    if (base == NULL)
        return NULL;
    ghash_entry *e = (ghash_entry *)(void *)(base + pre);
    e->owner = procreg_owner_pack(owner);
    if (flags & GH_OWNER_IN_FRONT)
        *(procreg_owner *)(void *)base = *owner;
    if (metadata != NULL)
        ((GVariant **)(void *)e)[-1] = g_variant_ref(metadata);
    e->revision = revision;
    e->registered_at = registered_at;
    e->hash = key_hash32(key);
    e->key_size = (uint16_t)key_size;
    e->flags = (uint8_t)flags;
    memcpy(e->key, procreg_key_bytes(key), key_size);
    return e;
}

/* by_key's value_destroy_func. */
static void entry_free(gpointer p)
{
    ghash_entry *e = p;
    GVariant *metadata = entry_metadata(e);
    if (metadata != NULL)
        g_variant_unref(metadata);
    procreg_slab_release(entry_base(e), entry_alloc_size(e));
}

/* The name's bytes of @e (after "ns\0"), and their length. */
static const char *entry_name(const ghash_entry *e, size_t *len)
{
    size_t ns_len = strlen(e->key);
    *len = e->key_size - ns_len - 1;
    return e->key + ns_len + 1;
}

static int ghash_init(const procreg_spec *spec, procreg_backend_host *host,
                      void **state, GError **error)
{
    ghash_state *s = g_new0(ghash_state, 1);
    s->by_key = g_hash_table_new_full(gh_hash, gh_equal, NULL, entry_free);
    s->by_namespace = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                            g_free);
    s->groups = procreg_ghash_groups_new();
    procreg_slab_init(&s->slab);
    *state = s;
    return 0;
}

static void ghash_destroy(void *state)
{
    ghash_state *s = state;
    procreg_ghash_groups_free(s->groups);
    /* Namespace records only point at entries; drop them first. */
    g_hash_table_unref(s->by_namespace);
    g_hash_table_unref(s->by_key); /* releases every entry */
    procreg_slab_destroy(&s->slab);
    g_free(s);
}

/* Copy what callers own out of @e.  Inlined, for lookup_entry's sake
 * (a read path: its instructions are counted, bench/callgrind-ops.sh). */
G_ALWAYS_INLINE static inline void fill_entry(const ghash_entry *e,
                                              procreg_entry *out, bool names)
{
    if (out == NULL)
        return;
    out->ns = NULL;
    out->name = NULL;
    if (names) {
        size_t len;
        const char *name = entry_name(e, &len);
        out->ns = g_strdup(e->key);
        out->name = g_strndup(name, len);
    }
    entry_owner(e, &out->owner);
    GVariant *metadata = entry_metadata(e);
    out->metadata = metadata ? g_variant_ref(metadata) : NULL;
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
    ghash_entry *e = entry_new(s, key, &record->owner, record->metadata,
                               record->registered_at, s->revision + 1);
    if (e == NULL)
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ghash: out of memory for an entry");
    s->revision++;
    g_hash_table_add(s->by_key, e);

    const char *ns = procreg_key_namespace(key);
    gh_namespace *n = g_hash_table_lookup(s->by_namespace, ns);
    if (n == NULL) {
        n = g_malloc(sizeof *n + key->ns_len + 1);
        n->head = NULL;
        n->count = 0;
        memcpy(n->ns, ns, key->ns_len + 1);
        g_hash_table_insert(s->by_namespace, n->ns, n);
        s->ns_bytes += namespace_bytes(n);
    }
    e->ns_prev = NULL;
    e->ns_next = n->head;
    if (n->head != NULL)
        n->head->ns_prev = e;
    n->head = e;
    n->count++;
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
    entry_owner(e, out);
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
    gh_namespace *n = g_hash_table_lookup(s->by_namespace, e->key);
    if (e->ns_prev != NULL)
        e->ns_prev->ns_next = e->ns_next;
    else
        n->head = e->ns_next;
    if (e->ns_next != NULL)
        e->ns_next->ns_prev = e->ns_prev;
    if (--n->count == 0) {
        s->ns_bytes -= namespace_bytes(n);
        g_hash_table_remove(s->by_namespace, n->ns); /* frees n */
    }
    s->bytes -= entry_bytes(e);
    g_hash_table_remove(s->by_key, e); /* frees e */
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
    procreg_owner held;
    entry_owner(e, &held);
    if (!procreg_backend_owner_same(&held, owner))
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
    if ((entry_metadata(e) != NULL) == (metadata != NULL)) {
        if (metadata != NULL) {
            GVariant **slot = &((GVariant **)(void *)e)[-1];
            g_variant_ref(metadata);
            g_variant_unref(*slot);
            *slot = metadata;
        }
        e->revision = ++s->revision;
        fill_entry(e, updated, false);
        return 0;
    }
    /* The metadata pointer comes or goes in front of the entry: a new
     * allocation takes the entry's place in its list and in by_key. */
    procreg_owner owner;
    entry_owner(e, &owner);
    ghash_entry *moved = entry_new(s, key, &owner, metadata, e->registered_at,
                                   s->revision + 1);
    if (moved == NULL)
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ghash: out of memory for an entry");
    s->revision++;
    moved->ns_prev = e->ns_prev;
    moved->ns_next = e->ns_next;
    if (e->ns_prev != NULL)
        e->ns_prev->ns_next = moved;
    else
        ((gh_namespace *)g_hash_table_lookup(s->by_namespace, e->key))->head =
            moved;
    if (e->ns_next != NULL)
        e->ns_next->ns_prev = moved;
    s->bytes += entry_bytes(moved);
    s->bytes -= entry_bytes(e);
    /* The equal key is replaced and the old value freed
     * (g_hash_table_replace()'s contract): entry_free(e). */
    g_hash_table_add(s->by_key, moved);
    fill_entry(moved, updated, false);
    return 0;
}

static void append_namespace(const gh_namespace *n, GArray *out)
{
    for (const ghash_entry *e = n->head; e != NULL; e = e->ns_next) {
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
        gh_namespace *n = g_hash_table_lookup(s->by_namespace, ns);
        if (n != NULL)
            append_namespace(n, out);
        return 0;
    }
    GHashTableIter it;
    gpointer n;
    g_hash_table_iter_init(&it, s->by_namespace);
    while (g_hash_table_iter_next(&it, NULL, &n))
        append_namespace(n, out);
    return 0;
}

static int ghash_count(void *state, const char *ns, size_t *out,
                       GError **error)
{
    ghash_state *s = state;
    if (ns == NULL) {
        *out = g_hash_table_size(s->by_key);
        return 0;
    }
    gh_namespace *n = g_hash_table_lookup(s->by_namespace, ns);
    *out = n != NULL ? n->count : 0;
    return 0;
}

static int ghash_count_namespaces(void *state, GArray *out, GError **error)
{
    ghash_state *s = state;
    GHashTableIter it;
    gpointer p;
    g_hash_table_iter_init(&it, s->by_namespace);
    while (g_hash_table_iter_next(&it, NULL, &p)) {
        const gh_namespace *n = p; /* never empty: see remove_entry() */
        procreg_namespace_info info = {g_strdup(n->ns), n->count};
        g_array_append_val(out, info);
    }
    return 0;
}

static int ghash_list_names(void *state, const char *ns, size_t max,
                            GPtrArray *out)
{
    ghash_state *s = state;
    const gh_namespace *n = g_hash_table_lookup(s->by_namespace, ns);
    if (n == NULL)
        return 0;
    for (const ghash_entry *e = n->head; e != NULL && out->len < max;
         e = e->ns_next) {
        size_t len;
        const char *name = entry_name(e, &len);
        g_ptr_array_add(out, g_strndup(name, len));
    }
    return 0;
}

static int ghash_drop_namespace(void *state, const char *ns, GArray *removed,
                                GError **error)
{
    ghash_state *s = state;
    gh_namespace *n = g_hash_table_lookup(s->by_namespace, ns);
    if (n == NULL)
        return 0;
    append_namespace(n, removed);
    ghash_entry *e = n->head;
    while (e != NULL) {
        ghash_entry *next = e->ns_next;
        s->bytes -= entry_bytes(e);
        g_hash_table_remove(s->by_key, e); /* frees e */
        e = next;
    }
    s->revision++;
    s->ns_bytes -= namespace_bytes(n);
    g_hash_table_remove(s->by_namespace, n->ns); /* frees n */
    return 0;
}

static int ghash_memory_usage(void *state, size_t *bytes)
{
    ghash_state *s = state;
    /* by_key keeps a hash and a key slot per bucket (its keys are its
     * values), its load between 1/4 and 15/16 (3/8 to 3/4 after a
     * resize): counted at 1/2. */
    size_t buckets = g_hash_table_size(s->by_key) * 2;
    size_t chunk_bytes, free_bytes;
    procreg_slab_figures(&s->slab, &chunk_bytes, &free_bytes);
    *bytes = s->bytes + free_bytes + s->ns_bytes +
             buckets * (sizeof(guint) + sizeof(gpointer)) +
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
