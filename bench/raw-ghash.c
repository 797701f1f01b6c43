/*
 * Baseline "raw-ghash": the same work as a procreg backend, done directly
 * on a GHashTable under a GRWLock.  Keys are "ns\0name" built from the
 * strings on every string-form call (as the core builds its stack key)
 * and hashed with procreg_key_hash(), the hash procreg itself uses; there is
 * no validation, no dispatcher and no liveness check.
 */
#include "bench.h"

typedef struct {
    uint32_t hash;
    uint16_t len;
    const char *bytes;
} raw_hkey;

typedef struct {
    raw_hkey k; /* first: the table's key is the entry itself */
    procreg_owner owner;
    GVariant *metadata;
    int64_t registered_at;
    uint64_t revision;
    char bytes[];
} raw_gentry;

struct raw_ghash {
    GRWLock lock;
    GHashTable *table;
    uint64_t revision;
    procreg_owner self;
};

static guint hkey_hash(gconstpointer p)
{
    return ((const raw_hkey *)p)->hash;
}

static gboolean hkey_equal(gconstpointer a, gconstpointer b)
{
    const raw_hkey *x = a, *y = b;
    return x->len == y->len && memcmp(x->bytes, y->bytes, x->len) == 0;
}

static void gentry_free(gpointer p)
{
    raw_gentry *e = p;
    if (e->metadata)
        g_variant_unref(e->metadata);
    g_free(e);
}

raw_ghash *raw_ghash_new(void)
{
    raw_ghash *rg = g_new0(raw_ghash, 1);
    g_rw_lock_init(&rg->lock);
    rg->table = g_hash_table_new_full(hkey_hash, hkey_equal, NULL,
                                      gentry_free);
    procreg_owner_self(&rg->self);
    return rg;
}

void raw_ghash_free(raw_ghash *rg)
{
    if (!rg)
        return;
    g_hash_table_destroy(rg->table);
    g_rw_lock_clear(&rg->lock);
    g_free(rg);
}

static inline raw_hkey hkey_of(const char *bytes, size_t len)
{
    raw_hkey k = {(uint32_t)procreg_key_hash(bytes, len), (uint16_t)len,
                  bytes};
    return k;
}

int raw_ghash_register(raw_ghash *rg, const bench_key *k, GVariant *md)
{
    raw_gentry *e = g_malloc(sizeof *e + (size_t)k->len + 1);
    memcpy(e->bytes, k->text, (size_t)k->len + 1);
    e->k = hkey_of(e->bytes, k->len);
    e->owner = rg->self;
    e->metadata = md ? g_variant_ref_sink(md) : NULL;
    e->registered_at = g_get_real_time();
    g_rw_lock_writer_lock(&rg->lock);
    if (g_hash_table_contains(rg->table, &e->k)) {
        g_rw_lock_writer_unlock(&rg->lock);
        gentry_free(e);
        return PROCREG_EEXISTS;
    }
    e->revision = ++rg->revision;
    g_hash_table_add(rg->table, e);
    g_rw_lock_writer_unlock(&rg->lock);
    return 0;
}

static inline int lookup_owner(raw_ghash *rg, const raw_hkey *k,
                               procreg_owner *out)
{
    g_rw_lock_reader_lock(&rg->lock);
    const raw_gentry *e = g_hash_table_lookup(rg->table, k);
    if (e)
        *out = e->owner;
    g_rw_lock_reader_unlock(&rg->lock);
    return e ? 0 : PROCREG_ENOTFOUND;
}

int raw_ghash_lookup(raw_ghash *rg, const char *ns, const char *name,
                     procreg_owner *out)
{
    char buf[2 * (PROCREG_NAME_MAX + 1)];
    size_t len = raw_key_build(buf, ns, name);
    raw_hkey k = hkey_of(buf, len);
    return lookup_owner(rg, &k, out);
}

int raw_ghash_lookup_prepared(raw_ghash *rg, const bench_key *bk,
                              procreg_owner *out)
{
    raw_hkey k = hkey_of(bk->text, bk->len);
    return lookup_owner(rg, &k, out);
}

int raw_ghash_lookup_entry(raw_ghash *rg, const char *ns, const char *name,
                           procreg_entry *out)
{
    char buf[2 * (PROCREG_NAME_MAX + 1)];
    size_t len = raw_key_build(buf, ns, name);
    raw_hkey k = hkey_of(buf, len);
    g_rw_lock_reader_lock(&rg->lock);
    const raw_gentry *e = g_hash_table_lookup(rg->table, &k);
    if (e) {
        out->ns = NULL;
        out->name = NULL;
        out->owner = e->owner;
        out->metadata = e->metadata ? g_variant_ref(e->metadata) : NULL;
        out->registered_at = e->registered_at;
        out->revision = e->revision;
    }
    g_rw_lock_reader_unlock(&rg->lock);
    return e ? 0 : PROCREG_ENOTFOUND;
}

int raw_ghash_unregister(raw_ghash *rg, const bench_key *bk)
{
    raw_hkey k = hkey_of(bk->text, bk->len);
    g_rw_lock_writer_lock(&rg->lock);
    gboolean removed = g_hash_table_remove(rg->table, &k);
    g_rw_lock_writer_unlock(&rg->lock);
    return removed ? 0 : PROCREG_ENOTFOUND;
}

int raw_ghash_update(raw_ghash *rg, const bench_key *bk, GVariant *md)
{
    raw_hkey k = hkey_of(bk->text, bk->len);
    GVariant *old = NULL;
    if (md)
        g_variant_ref_sink(md);
    g_rw_lock_writer_lock(&rg->lock);
    raw_gentry *e = g_hash_table_lookup(rg->table, &k);
    if (e) {
        old = e->metadata;
        e->metadata = md;
        e->revision = ++rg->revision;
    } else {
        old = md;
    }
    g_rw_lock_writer_unlock(&rg->lock);
    if (old)
        g_variant_unref(old);
    return e ? 0 : PROCREG_ENOTFOUND;
}

static void entry_copy(const raw_gentry *e, procreg_entry *out)
{
    size_t ns_len = strlen(e->bytes);
    out->ns = g_strndup(e->bytes, ns_len);
    out->name = g_strndup(e->bytes + ns_len + 1, e->k.len - ns_len - 1);
    out->owner = e->owner;
    out->metadata = e->metadata ? g_variant_ref(e->metadata) : NULL;
    out->registered_at = e->registered_at;
    out->revision = e->revision;
}

static inline bool in_ns(const raw_gentry *e, const char *ns, size_t ns_len)
{
    return !ns || (e->k.len > ns_len && e->bytes[ns_len] == '\0' &&
                   memcmp(e->bytes, ns, ns_len) == 0);
}

/* A scan of the whole table, as a plain hash table has to do. */
static int scan(raw_ghash *rg, const char *ns, const char *meta_key,
                GVariant *value, procreg_entry **out, size_t *n)
{
    size_t ns_len = ns ? strlen(ns) : 0;
    GArray *a = g_array_new(FALSE, FALSE, sizeof(procreg_entry));
    GHashTableIter it;
    gpointer key;
    g_rw_lock_reader_lock(&rg->lock);
    g_hash_table_iter_init(&it, rg->table);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        const raw_gentry *e = key;
        if (!in_ns(e, ns, ns_len))
            continue;
        if (meta_key) {
            if (!e->metadata)
                continue;
            GVariant *v = g_variant_lookup_value(e->metadata, meta_key, NULL);
            bool match = v && procreg_metadata_value_equal(v, value);
            if (v)
                g_variant_unref(v);
            if (!match)
                continue;
        }
        procreg_entry pe;
        entry_copy(e, &pe);
        g_array_append_val(a, pe);
    }
    g_rw_lock_reader_unlock(&rg->lock);
    *n = a->len;
    raw_entries_sort((procreg_entry *)(void *)a->data, a->len);
    *out = (procreg_entry *)(void *)g_array_free(a, FALSE);
    return 0;
}

int raw_ghash_list(raw_ghash *rg, const char *ns, procreg_entry **out,
                   size_t *n)
{
    return scan(rg, ns, NULL, NULL, out, n);
}

int raw_ghash_find(raw_ghash *rg, const char *ns, const char *meta_key,
                   GVariant *value, procreg_entry **out, size_t *n)
{
    return scan(rg, ns, meta_key, value, out, n);
}

static int entry_cmp(const void *a, const void *b)
{
    const procreg_entry *x = a, *y = b;
    int c = strcmp(x->ns, y->ns);
    return c ? c : strcmp(x->name, y->name);
}

void raw_entries_sort(procreg_entry *entries, size_t n)
{
    if (n > 1)
        qsort(entries, n, sizeof *entries, entry_cmp);
}
