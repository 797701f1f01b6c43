/*
 * The optimized decorator's metadata index: (namespace, metadata key,
 * value) -> the keys whose metadata holds that value.
 *
 * Values are normalised so that equal values in the sense of
 * procreg_metadata_value_equal() get equal bytes: strings "s" + text,
 * booleans "b" + 0/1, integers of every width "u" + the value as 64 bits
 * when it is >= 0 and "n" + the value as 64 bits when it is negative (a
 * negative integer equals only a signed integer of the same value).  Other
 * types are not indexed: find cannot ask for them.  When a dictionary holds
 * a key twice, only the first counts, as g_variant_lookup_value() (and so
 * the scan) sees it.
 *
 * Each indexed key keeps the list of postings it is in, with its position
 * in each posting's member array.  Removing a key (unregister, drop, or
 * the old side of an update) visits exactly those postings and takes the
 * key out of each by swapping the last member into its place: the cost is
 * that key's metadata, whatever the size of the table or of a posting.
 * Adding (procreg_opt_index_add()) appends the new postings to a key's
 * list and keeps the old ones: the decorator indexes a write's new
 * metadata before the inner call, so that the index never lacks a key
 * the inner backend may already show (optimized.c, opt_before_write()).
 *
 * Postings carry the namespace, so a find in one namespace touches only
 * its matches; a find in every namespace probes each namespace that has
 * indexed keys once.
 *
 * One reader/writer lock (pthread, which ThreadSanitizer sees): finds read
 * in parallel, updates are short and exclusive.
 */
#include "optimized.h"

#include <pthread.h>
#include <string.h>

typedef struct ix_value ix_value;

typedef struct {
    ix_value *value;
    guint pos; /* index of the entry in value->members */
} ix_ref;

typedef struct {
    guint n_refs;
    /* refs[0 .. n_stale) are not in the metadata last added (ix_add_locked
     * keeps the others after them); procreg_opt_index_settle() drops them. */
    guint n_stale;
    ix_ref *refs;
    procreg_key key; /* last: the key bytes follow */
} ix_entry;

struct ix_value {
    GPtrArray *members; /* ix_entry* */
    guint hash;
    gsize len;
    char bytes[]; /* ns \0 meta_key \0 tag payload */
};

struct opt_index {
    pthread_rwlock_t lock;
    GHashTable *by_key;     /* procreg_key* (in the entry) -> ix_entry* */
    GHashTable *by_value;   /* ix_value* -> ix_value* */
    GHashTable *namespaces; /* char* ns -> GUINT count of indexed keys */
    uint64_t postings;
    size_t bytes;           /* entry and value allocations */
};

/* ------------------------------------------------------------------------ */
/* Hashing                                                                  */

static guint ix_key_hash(gconstpointer p)
{
    const procreg_key *k = p;

    return (guint)(k->hash ^ (k->hash >> 32));
}

static gboolean ix_key_equal(gconstpointer a, gconstpointer b)
{
    const procreg_key *x = a, *y = b;

    return x->hash == y->hash && x->ns_len == y->ns_len &&
           x->name_len == y->name_len &&
           memcmp(x->bytes, y->bytes, procreg_key_size(x)) == 0;
}

static guint ix_value_hash(gconstpointer p)
{
    return ((const ix_value *)p)->hash;
}

static gboolean ix_value_equal(gconstpointer a, gconstpointer b)
{
    const ix_value *x = a, *y = b;

    return x->len == y->len && memcmp(x->bytes, y->bytes, x->len) == 0;
}

static guint ix_bytes_hash(const char *bytes, gsize len)
{
    uint64_t h = procreg_hash(bytes, len);

    return (guint)(h ^ (h >> 32));
}

/* ------------------------------------------------------------------------ */
/* Values                                                                   */

static void ix_put_u64(GString *s, char tag, uint64_t v)
{
    char buf[9];
    int i;

    buf[0] = tag;
    for (i = 0; i < 8; i++)
        buf[1 + i] = (char)(v >> (56 - 8 * i));
    g_string_append_len(s, buf, sizeof buf);
}

/* Append the normalised form of @v; false when it is not indexable. */
static bool ix_encode_value(GString *s, GVariant *v)
{
    gint64 i;

    switch (g_variant_classify(v)) {
    case G_VARIANT_CLASS_STRING: {
        gsize n;
        const char *str = g_variant_get_string(v, &n);

        g_string_append_c(s, 's');
        g_string_append_len(s, str, (gssize)n);
        return true;
    }
    case G_VARIANT_CLASS_BOOLEAN:
        g_string_append_c(s, 'b');
        g_string_append_c(s, g_variant_get_boolean(v) ? '1' : '0');
        return true;
    case G_VARIANT_CLASS_BYTE:
        ix_put_u64(s, 'u', g_variant_get_byte(v));
        return true;
    case G_VARIANT_CLASS_UINT16:
        ix_put_u64(s, 'u', g_variant_get_uint16(v));
        return true;
    case G_VARIANT_CLASS_UINT32:
        ix_put_u64(s, 'u', g_variant_get_uint32(v));
        return true;
    case G_VARIANT_CLASS_UINT64:
        ix_put_u64(s, 'u', g_variant_get_uint64(v));
        return true;
    case G_VARIANT_CLASS_INT16:
        i = g_variant_get_int16(v);
        break;
    case G_VARIANT_CLASS_INT32:
        i = g_variant_get_int32(v);
        break;
    case G_VARIANT_CLASS_INT64:
        i = g_variant_get_int64(v);
        break;
    default:
        return false;
    }
    ix_put_u64(s, i < 0 ? 'n' : 'u', (uint64_t)i);
    return true;
}

/* Start a posting's bytes: ns \0 meta_key \0. */
static void ix_posting_prefix(GString *s, const char *ns, gsize ns_len,
                              const char *meta_key)
{
    g_string_truncate(s, 0);
    g_string_append_len(s, ns, (gssize)ns_len);
    g_string_append_c(s, '\0');
    g_string_append(s, meta_key);
    g_string_append_c(s, '\0');
}

/* The posting of @s, or NULL.  Under the lock (either side). */
static ix_value *ix_value_find(opt_index *ix, const GString *s)
{
    ix_value *probe = g_malloc(sizeof(ix_value) + s->len);
    ix_value *v;

    probe->len = s->len;
    probe->hash = ix_bytes_hash(s->str, s->len);
    memcpy(probe->bytes, s->str, s->len);
    v = g_hash_table_lookup(ix->by_value, probe);
    g_free(probe);
    return v;
}

static size_t ix_value_size(gsize len)
{
    return sizeof(ix_value) + len + sizeof(GPtrArray) + 4 * sizeof(void *);
}

static ix_value *ix_value_get(opt_index *ix, const GString *s)
{
    ix_value *v = ix_value_find(ix, s);

    if (v != NULL)
        return v;
    v = g_malloc(sizeof(ix_value) + s->len);
    v->members = g_ptr_array_new();
    v->len = s->len;
    v->hash = ix_bytes_hash(s->str, s->len);
    memcpy(v->bytes, s->str, s->len);
    g_hash_table_add(ix->by_value, v);
    ix->bytes += ix_value_size(v->len);
    return v;
}

/* ------------------------------------------------------------------------ */
/* Entries (under the write lock)                                           */

static void ix_ns_add(opt_index *ix, const char *ns, int delta)
{
    gpointer count = NULL;
    guint n = 0;

    if (g_hash_table_lookup_extended(ix->namespaces, ns, NULL, &count))
        n = GPOINTER_TO_UINT(count);
    n = delta > 0 ? n + 1 : n - 1;
    if (n == 0)
        g_hash_table_remove(ix->namespaces, ns);
    else
        g_hash_table_replace(ix->namespaces, g_strdup(ns), GUINT_TO_POINTER(n));
}

/* Take @e out of the postings of its refs [0, @n). */
static void ix_entry_unlink_first(opt_index *ix, ix_entry *e, guint n)
{
    guint i, j;

    for (i = 0; i < n; i++) {
        ix_value *v = e->refs[i].value;
        guint pos = e->refs[i].pos;

        g_ptr_array_remove_index_fast(v->members, pos);
        if (pos < v->members->len) {
            /* The last member moved into @pos: tell it. */
            ix_entry *moved = g_ptr_array_index(v->members, pos);

            for (j = 0; j < moved->n_refs; j++) {
                if (moved->refs[j].value == v) {
                    moved->refs[j].pos = pos;
                    break;
                }
            }
        }
        if (v->members->len == 0) {
            g_hash_table_remove(ix->by_value, v);
            ix->bytes -= ix_value_size(v->len);
            g_ptr_array_unref(v->members);
            g_free(v);
        }
    }
    ix->postings -= n;
}

static void ix_entry_unlink(opt_index *ix, ix_entry *e)
{
    ix_entry_unlink_first(ix, e, e->n_refs);
}

static size_t ix_entry_size(const ix_entry *e)
{
    return sizeof(ix_entry) + procreg_key_size(&e->key) + 1 +
           e->n_refs * sizeof(ix_ref) + 3 * sizeof(void *);
}

static void ix_remove_locked(opt_index *ix, const procreg_key *key)
{
    ix_entry *e = g_hash_table_lookup(ix->by_key, key);

    if (e == NULL)
        return;
    ix_entry_unlink(ix, e);
    ix_ns_add(ix, procreg_key_bytes(&e->key), -1);
    g_hash_table_remove(ix->by_key, &e->key);
    ix->bytes -= ix_entry_size(e);
    g_free(e->refs);
    g_free(e);
}

/* The @i-th pair of @metadata: its key (a string GVariant: unref it after
 * use of the text) and its unboxed value.  Read from the tree without
 * flattening it: g_variant_get_child() with a "&" format would serialise
 * the whole dictionary, which other threads may be reading (GVariant
 * allows that, but ThreadSanitizer cannot see its internal lock).  The
 * key is kept referenced because a serialisation elsewhere releases the
 * tree's children. */
static GVariant *ix_pair(GVariant *metadata, gsize i, GVariant **value)
{
    GVariant *pair = g_variant_get_child_value(metadata, i);
    GVariant *k = g_variant_get_child_value(pair, 0);
    GVariant *boxed = g_variant_get_child_value(pair, 1);

    *value = g_variant_get_variant(boxed);
    g_variant_unref(boxed);
    g_variant_unref(pair);
    return k;
}

/* Whether @k appears among the first @n keys of @metadata. */
static bool ix_seen_before(GVariant *metadata, gsize n, const char *k)
{
    gsize i;

    for (i = 0; i < n; i++) {
        GVariant *v = NULL;
        GVariant *other = ix_pair(metadata, i, &v);
        bool same = strcmp(g_variant_get_string(other, NULL), k) == 0;

        g_variant_unref(v);
        g_variant_unref(other);
        if (same)
            return true;
    }
    return false;
}

/* If @e is already in posting @v (among its stale refs, a scan for each
 * new posting: metadata is small), move that ref among the fresh ones,
 * the last, and return true. */
static bool ix_entry_keep(ix_entry *e, const ix_value *v)
{
    for (guint i = 0; i < e->n_stale; i++) {
        if (e->refs[i].value == v) {
            ix_ref r = e->refs[i];

            e->n_stale--;
            e->refs[i] = e->refs[e->n_stale];
            e->refs[e->n_stale] = r;
            return true;
        }
    }
    return false;
}

/* Add @key to the postings of @metadata, keeping the postings it is
 * already in (a key may then be in two values of one metadata key).  The
 * refs are ordered so that those of @metadata come last: n_stale counts
 * the others.  @e: the key's entry (NULL: it has none). */
static void ix_add_locked(opt_index *ix, const procreg_key *key,
                          GVariant *metadata, ix_entry *e)
{
    gsize n, i, key_size = procreg_key_size(key);
    GHashTable *seen = NULL;
    GString *s;
    guint old = 0;
    bool fresh;

    if (e != NULL)
        e->n_stale = e->n_refs;
    if (metadata == NULL ||
        !g_variant_is_of_type(metadata, G_VARIANT_TYPE_VARDICT))
        return;
    n = g_variant_n_children(metadata);
    if (n == 0)
        return;
    fresh = e == NULL;
    if (!fresh) {
        old = e->n_refs;
        ix->bytes -= ix_entry_size(e);
        e->refs = g_renew(ix_ref, e->refs, old + n);
    } else {
        e = g_malloc(sizeof(ix_entry) + key_size + 1);
        e->n_refs = 0;
        e->n_stale = 0;
        e->refs = g_new(ix_ref, n);
        e->key.hash = key->hash;
        e->key.refcount = 0;
        e->key.ns_len = key->ns_len;
        e->key.name_len = key->name_len;
        memcpy(e->key.bytes, procreg_key_bytes(key), key_size);
        e->key.bytes[key_size] = '\0';
    }
    /* Duplicate keys: first wins.  Small dictionaries compare pairwise,
     * large ones remember what they saw. */
    if (n > 8)
        seen = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                     (GDestroyNotify)g_variant_unref);
    s = g_string_new(NULL);
    for (i = 0; i < n; i++) {
        GVariant *v = NULL;
        GVariant *kv = ix_pair(metadata, i, &v);
        const char *k = g_variant_get_string(kv, NULL);
        bool skip, indexable = false;
        ix_value *iv;

        if (seen != NULL) {
            /* The set keeps the key GVariants alive until it goes. */
            skip = g_hash_table_contains(seen, k);
            if (!skip)
                g_hash_table_insert(seen, (gpointer)k, g_variant_ref(kv));
        } else {
            skip = ix_seen_before(metadata, i, k);
        }
        if (!skip) {
            ix_posting_prefix(s, procreg_key_bytes(key), key->ns_len, k);
            indexable = ix_encode_value(s, v);
        }
        g_variant_unref(v);
        g_variant_unref(kv);
        if (skip || !indexable)
            continue;
        iv = ix_value_get(ix, s);
        if (!fresh && ix_entry_keep(e, iv))
            continue;
        e->refs[e->n_refs].value = iv;
        e->refs[e->n_refs].pos = iv->members->len;
        e->n_refs++;
        g_ptr_array_add(iv->members, e);
    }
    g_string_free(s, TRUE);
    if (seen != NULL)
        g_hash_table_unref(seen);
    if (fresh && e->n_refs == 0) {
        /* Nothing indexable. */
        g_free(e->refs);
        g_free(e);
        return;
    }
    if (e->n_refs < old + n)
        e->refs = g_renew(ix_ref, e->refs, e->n_refs);
    ix->postings += e->n_refs - old;
    if (fresh) {
        g_hash_table_insert(ix->by_key, &e->key, e);
        ix_ns_add(ix, procreg_key_bytes(key), +1);
    }
    ix->bytes += ix_entry_size(e);
}

static void ix_set_locked(opt_index *ix, const procreg_key *key,
                          GVariant *metadata)
{
    ix_remove_locked(ix, key);
    ix_add_locked(ix, key, metadata, NULL);
}

/* ------------------------------------------------------------------------ */
/* Public (to the decorator)                                                */

opt_index *procreg_opt_index_new(void)
{
    opt_index *ix = g_new0(opt_index, 1);

    pthread_rwlock_init(&ix->lock, NULL);
    ix->by_key = g_hash_table_new(ix_key_hash, ix_key_equal);
    ix->by_value = g_hash_table_new(ix_value_hash, ix_value_equal);
    ix->namespaces = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                           NULL);
    return ix;
}

static void ix_clear_locked(opt_index *ix)
{
    GHashTableIter it;
    gpointer p;

    g_hash_table_iter_init(&it, ix->by_key);
    while (g_hash_table_iter_next(&it, NULL, &p)) {
        ix_entry *e = p;

        g_free(e->refs);
        g_free(e);
    }
    g_hash_table_remove_all(ix->by_key);
    g_hash_table_iter_init(&it, ix->by_value);
    while (g_hash_table_iter_next(&it, &p, NULL)) {
        ix_value *v = p;

        g_ptr_array_unref(v->members);
        g_free(v);
    }
    g_hash_table_remove_all(ix->by_value);
    g_hash_table_remove_all(ix->namespaces);
    ix->postings = 0;
    ix->bytes = 0;
}

void procreg_opt_index_free(opt_index *ix)
{
    if (ix == NULL)
        return;
    ix_clear_locked(ix);
    g_hash_table_unref(ix->by_key);
    g_hash_table_unref(ix->by_value);
    g_hash_table_unref(ix->namespaces);
    pthread_rwlock_destroy(&ix->lock);
    g_free(ix);
}

void procreg_opt_index_set(opt_index *ix, const procreg_key *key,
                           GVariant *metadata)
{
    pthread_rwlock_wrlock(&ix->lock);
    ix_set_locked(ix, key, metadata);
    pthread_rwlock_unlock(&ix->lock);
}

void procreg_opt_index_add(opt_index *ix, const procreg_key *key,
                           GVariant *metadata)
{
    pthread_rwlock_wrlock(&ix->lock);
    ix_add_locked(ix, key, metadata, g_hash_table_lookup(ix->by_key, key));
    pthread_rwlock_unlock(&ix->lock);
}

void procreg_opt_index_settle(opt_index *ix, const procreg_key *key)
{
    ix_entry *e;

    pthread_rwlock_wrlock(&ix->lock);
    e = g_hash_table_lookup(ix->by_key, key);
    if (e != NULL && e->n_stale == e->n_refs) {
        ix_remove_locked(ix, key);
    } else if (e != NULL && e->n_stale > 0) {
        /* Unlink the stale refs, then move the fresh ones down (ix_ref.pos
         * is the position in the posting, so it moves with its ref). */
        ix->bytes -= ix_entry_size(e);
        ix_entry_unlink_first(ix, e, e->n_stale);
        e->n_refs -= e->n_stale;
        memmove(e->refs, e->refs + e->n_stale, e->n_refs * sizeof(ix_ref));
        e->n_stale = 0;
        ix->bytes += ix_entry_size(e);
    }
    pthread_rwlock_unlock(&ix->lock);
}

void procreg_opt_index_remove(opt_index *ix, const procreg_key *key)
{
    pthread_rwlock_wrlock(&ix->lock);
    ix_remove_locked(ix, key);
    pthread_rwlock_unlock(&ix->lock);
}

void procreg_opt_index_clear(opt_index *ix)
{
    pthread_rwlock_wrlock(&ix->lock);
    ix_clear_locked(ix);
    pthread_rwlock_unlock(&ix->lock);
}

static void ix_collect(const ix_value *v, GPtrArray *out)
{
    guint i;

    for (i = 0; v != NULL && i < v->members->len; i++) {
        const ix_entry *e = g_ptr_array_index(v->members, i);

        g_ptr_array_add(out, g_memdup2(&e->key, sizeof(procreg_key) +
                                                    procreg_key_size(&e->key) +
                                                    1));
    }
}

GPtrArray *procreg_opt_index_find(opt_index *ix, const char *ns,
                                  const char *meta_key, GVariant *value)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    GString *s = g_string_new(NULL);
    GString *tail = g_string_new(NULL);

    if (!ix_encode_value(tail, value)) {
        g_string_free(s, TRUE);
        g_string_free(tail, TRUE);
        return out;
    }
    pthread_rwlock_rdlock(&ix->lock);
    if (ns != NULL) {
        ix_posting_prefix(s, ns, strlen(ns), meta_key);
        g_string_append_len(s, tail->str, (gssize)tail->len);
        ix_collect(ix_value_find(ix, s), out);
    } else {
        GHashTableIter it;
        gpointer p;

        g_hash_table_iter_init(&it, ix->namespaces);
        while (g_hash_table_iter_next(&it, &p, NULL)) {
            ix_posting_prefix(s, p, strlen(p), meta_key);
            g_string_append_len(s, tail->str, (gssize)tail->len);
            ix_collect(ix_value_find(ix, s), out);
        }
    }
    pthread_rwlock_unlock(&ix->lock);
    g_string_free(s, TRUE);
    g_string_free(tail, TRUE);
    return out;
}

void procreg_opt_index_get_stats(opt_index *ix, opt_index_stats *out)
{
    pthread_rwlock_rdlock(&ix->lock);
    out->entries = g_hash_table_size(ix->by_key);
    out->postings = ix->postings;
    out->values = g_hash_table_size(ix->by_value);
    /* Allocations, plus about three words per hash table slot. */
    out->bytes = ix->bytes +
                 (out->entries + out->values) * 3 * 2 * sizeof(void *) +
                 out->postings * sizeof(void *);
    pthread_rwlock_unlock(&ix->lock);
}
