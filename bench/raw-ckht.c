/*
 * Baseline "raw-ckht": the same work on Concurrency Kit's ck_ht
 * (bytestring keys "ns\0name", MurmurHash64A through ck_ht_hash on every
 * call), one writer at a time under a mutex, readers without a lock.
 *
 * Reclamation: an entry that is replaced or removed is retired through
 * ck_epoch.  Readers enter an epoch section only in workloads where writers
 * run at the same time (bench_target_thread.protect_reads); in read-only
 * workloads a lookup is the bare ck_ht_get_spmc, the figure the issue
 * compares the ckht backend against.
 */
#include "bench.h"

#if defined(BENCH_HAVE_CK)

#include <ck_epoch.h>
#include <ck_ht.h>
#include <pthread.h>
#include <stdlib.h>

typedef struct {
    ck_epoch_entry_t epoch_entry; /* first: retired entries are cast back */
    procreg_owner owner;
    GVariant *metadata;
    int64_t registered_at;
    uint64_t revision;
    uint16_t len;
    char bytes[];
} raw_centry;

struct raw_ckht {
    ck_ht_t ht;
    ck_epoch_t epoch;
    /* A pthread mutex rather than a GMutex: glib's futex-based GMutex is
     * invisible to ThreadSanitizer, pthread's is intercepted. */
    pthread_mutex_t write_lock;
    GMutex records_lock;
    GPtrArray *records; /* every epoch record allocated, freed at the end */
    uint64_t revision;
    procreg_owner self;
};

/* ck_ht frees an old map with defer=true after a resize, when readers may
 * still walk it.  Resizes are rare (the table is sized for the key
 * count), so deferred maps wait here until the table is destroyed.
 * Only one raw-ckht instance is alive at a time in this program. */
static GMutex deferred_lock;
static GSList *deferred_maps;

static void *ht_malloc(size_t r)
{
    return malloc(r);
}

static void *ht_realloc(void *p, size_t old, size_t r, bool defer)
{
    (void)old;
    (void)defer;
    return realloc(p, r);
}

static void ht_free(void *p, size_t b, bool defer)
{
    (void)b;
    if (defer) {
        g_mutex_lock(&deferred_lock);
        deferred_maps = g_slist_prepend(deferred_maps, p);
        g_mutex_unlock(&deferred_lock);
    } else {
        free(p);
    }
}

static struct ck_malloc ht_allocator = {
    .malloc = ht_malloc,
    .realloc = ht_realloc,
    .free = ht_free,
};

raw_ckht *raw_ckht_new(size_t capacity)
{
    raw_ckht *rc = g_new0(raw_ckht, 1);
    if (!ck_ht_init(&rc->ht, CK_HT_MODE_BYTESTRING, NULL, &ht_allocator,
                    capacity < 64 ? 64 : capacity * 2,
                    g_random_int() | ((uint64_t)g_random_int() << 32))) {
        g_free(rc);
        return NULL;
    }
    ck_epoch_init(&rc->epoch);
    pthread_mutex_init(&rc->write_lock, NULL);
    g_mutex_init(&rc->records_lock);
    rc->records = g_ptr_array_new();
    procreg_owner_self(&rc->self);
    return rc;
}

static void centry_free(raw_centry *e)
{
    if (e->metadata)
        g_variant_unref(e->metadata);
    free(e);
}

static void centry_free_cb(ck_epoch_entry_t *ee)
{
    centry_free((raw_centry *)(void *)ee);
}

void raw_ckht_free(raw_ckht *rc)
{
    if (!rc)
        return;
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ck_ht_entry_t *ent;
    while (ck_ht_next(&rc->ht, &it, &ent))
        centry_free(ck_ht_entry_value(ent));
    ck_ht_destroy(&rc->ht);
    g_mutex_lock(&deferred_lock);
    g_slist_free_full(deferred_maps, free);
    deferred_maps = NULL;
    g_mutex_unlock(&deferred_lock);
    /* Every thread flushed its record (raw_ckht_thread_end). */
    for (guint i = 0; i < rc->records->len; i++)
        free(rc->records->pdata[i]);
    g_ptr_array_free(rc->records, TRUE);
    pthread_mutex_destroy(&rc->write_lock);
    g_mutex_clear(&rc->records_lock);
    g_free(rc);
}

void raw_ckht_thread_begin(raw_ckht *rc, bench_target_thread *tt)
{
    ck_epoch_record_t *rec = ck_epoch_recycle(&rc->epoch, NULL);
    if (!rec) {
        void *mem = NULL;
        if (posix_memalign(&mem, 64, sizeof(ck_epoch_record_t)) != 0)
            g_error("raw-ckht: out of memory for an epoch record");
        rec = mem;
        ck_epoch_register(&rc->epoch, rec, NULL);
        g_mutex_lock(&rc->records_lock);
        g_ptr_array_add(rc->records, rec);
        g_mutex_unlock(&rc->records_lock);
    }
    tt->epoch_record = rec;
    tt->retired = 0;
}

void raw_ckht_thread_end(raw_ckht *rc, bench_target_thread *tt)
{
    (void)rc;
    ck_epoch_record_t *rec = tt->epoch_record;
    if (!rec)
        return;
    ck_epoch_barrier(rec); /* runs every callback this record deferred */
    ck_epoch_unregister(rec);
    tt->epoch_record = NULL;
}

static void retire(bench_target_thread *tt, raw_centry *e)
{
    ck_epoch_record_t *rec = tt->epoch_record;
    ck_epoch_call(rec, &e->epoch_entry, centry_free_cb);
    if ((++tt->retired & 63) == 0)
        ck_epoch_poll(rec);
}

static raw_centry *centry_new(raw_ckht *rc, const char *bytes, uint16_t len,
                              GVariant *md)
{
    raw_centry *e = malloc(sizeof *e + (size_t)len + 1);
    if (!e)
        g_error("raw-ckht: out of memory");
    memcpy(e->bytes, bytes, (size_t)len + 1);
    e->len = len;
    e->owner = rc->self;
    e->metadata = md ? g_variant_ref_sink(md) : NULL;
    e->registered_at = g_get_real_time();
    e->revision = 0;
    return e;
}

int raw_ckht_register(raw_ckht *rc, bench_target_thread *tt,
                      const bench_key *k, GVariant *md)
{
    (void)tt;
    raw_centry *e = centry_new(rc, k->text, k->len, md);
    ck_ht_hash_t h;
    ck_ht_entry_t ent;
    ck_ht_hash(&h, &rc->ht, e->bytes, e->len);
    ck_ht_entry_set(&ent, h, e->bytes, e->len, e);
    pthread_mutex_lock(&rc->write_lock);
    e->revision = ++rc->revision;
    bool ok = ck_ht_put_spmc(&rc->ht, h, &ent);
    pthread_mutex_unlock(&rc->write_lock);
    if (!ok) {
        /* Never published: free at once. */
        centry_free(e);
        return PROCREG_EEXISTS;
    }
    return 0;
}

static inline const raw_centry *get(raw_ckht *rc, const char *bytes,
                                    uint16_t len)
{
    ck_ht_hash_t h;
    ck_ht_entry_t ent;
    ck_ht_hash(&h, &rc->ht, bytes, len);
    ck_ht_entry_key_set(&ent, bytes, len);
    if (!ck_ht_get_spmc(&rc->ht, h, &ent))
        return NULL;
    return ck_ht_entry_value(&ent);
}

static inline int lookup_bytes(raw_ckht *rc, bench_target_thread *tt,
                               const char *bytes, uint16_t len,
                               procreg_owner *out)
{
    int rv;
    if (tt->protect_reads) {
        ck_epoch_begin(tt->epoch_record, NULL);
        const raw_centry *e = get(rc, bytes, len);
        if (e)
            *out = e->owner;
        ck_epoch_end(tt->epoch_record, NULL);
        rv = e ? 0 : PROCREG_ENOTFOUND;
    } else {
        const raw_centry *e = get(rc, bytes, len);
        if (e)
            *out = e->owner;
        rv = e ? 0 : PROCREG_ENOTFOUND;
    }
    return rv;
}

int raw_ckht_lookup(raw_ckht *rc, bench_target_thread *tt, const char *ns,
                    const char *name, procreg_owner *out)
{
    char buf[2 * (PROCREG_NAME_MAX + 1)];
    size_t len = raw_key_build(buf, ns, name);
    return lookup_bytes(rc, tt, buf, (uint16_t)len, out);
}

int raw_ckht_lookup_prepared(raw_ckht *rc, bench_target_thread *tt,
                             const bench_key *k, procreg_owner *out)
{
    return lookup_bytes(rc, tt, k->text, k->len, out);
}

int raw_ckht_lookup_entry(raw_ckht *rc, bench_target_thread *tt,
                          const char *ns, const char *name,
                          procreg_entry *out)
{
    char buf[2 * (PROCREG_NAME_MAX + 1)];
    size_t len = raw_key_build(buf, ns, name);
    if (tt->protect_reads)
        ck_epoch_begin(tt->epoch_record, NULL);
    const raw_centry *e = get(rc, buf, (uint16_t)len);
    if (e) {
        out->ns = NULL;
        out->name = NULL;
        out->owner = e->owner;
        out->metadata = e->metadata ? g_variant_ref(e->metadata) : NULL;
        out->registered_at = e->registered_at;
        out->revision = e->revision;
    }
    if (tt->protect_reads)
        ck_epoch_end(tt->epoch_record, NULL);
    return e ? 0 : PROCREG_ENOTFOUND;
}

int raw_ckht_unregister(raw_ckht *rc, bench_target_thread *tt,
                        const bench_key *k)
{
    ck_ht_hash_t h;
    ck_ht_entry_t ent;
    ck_ht_hash(&h, &rc->ht, k->text, k->len);
    ck_ht_entry_key_set(&ent, k->text, k->len);
    pthread_mutex_lock(&rc->write_lock);
    bool removed = ck_ht_remove_spmc(&rc->ht, h, &ent);
    pthread_mutex_unlock(&rc->write_lock);
    if (!removed)
        return PROCREG_ENOTFOUND;
    retire(tt, ck_ht_entry_value(&ent));
    return 0;
}

int raw_ckht_update(raw_ckht *rc, bench_target_thread *tt, const bench_key *k,
                    GVariant *md)
{
    ck_ht_hash_t h;
    ck_ht_entry_t ent;
    ck_ht_hash(&h, &rc->ht, k->text, k->len);
    ck_ht_entry_key_set(&ent, k->text, k->len);
    if (md)
        g_variant_ref_sink(md);
    pthread_mutex_lock(&rc->write_lock);
    if (!ck_ht_get_spmc(&rc->ht, h, &ent)) {
        pthread_mutex_unlock(&rc->write_lock);
        if (md)
            g_variant_unref(md);
        return PROCREG_ENOTFOUND;
    }
    /* Entries are immutable once published: copy, replace, retire. */
    const raw_centry *old = ck_ht_entry_value(&ent);
    raw_centry *e = centry_new(rc, old->bytes, old->len, NULL);
    e->metadata = md;
    e->registered_at = old->registered_at;
    e->revision = ++rc->revision;
    ck_ht_entry_set(&ent, h, e->bytes, e->len, e);
    bool ok = ck_ht_set_spmc(&rc->ht, h, &ent);
    pthread_mutex_unlock(&rc->write_lock);
    if (!ok) {
        centry_free(e);
        return PROCREG_ENOMEM;
    }
    /* ck_ht_set_spmc hands back the pair it replaced. */
    retire(tt, ck_ht_entry_value(&ent));
    return 0;
}

static void entry_copy(const raw_centry *e, procreg_entry *out)
{
    size_t ns_len = strlen(e->bytes);
    out->ns = g_strndup(e->bytes, ns_len);
    out->name = g_strndup(e->bytes + ns_len + 1, e->len - ns_len - 1);
    out->owner = e->owner;
    out->metadata = e->metadata ? g_variant_ref(e->metadata) : NULL;
    out->registered_at = e->registered_at;
    out->revision = e->revision;
}

/* A full scan (ck_ht_next: no concurrent writers in list-ns and find). */
static int scan(raw_ckht *rc, const char *ns, const char *meta_key,
                GVariant *value, procreg_entry **out, size_t *n)
{
    size_t ns_len = ns ? strlen(ns) : 0;
    GArray *a = g_array_new(FALSE, FALSE, sizeof(procreg_entry));
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ck_ht_entry_t *ent;
    while (ck_ht_next(&rc->ht, &it, &ent)) {
        const raw_centry *e = ck_ht_entry_value(ent);
        if (ns && !(e->len > ns_len && e->bytes[ns_len] == '\0' &&
                    memcmp(e->bytes, ns, ns_len) == 0))
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
    *n = a->len;
    raw_entries_sort((procreg_entry *)(void *)a->data, a->len);
    *out = (procreg_entry *)(void *)g_array_free(a, FALSE);
    return 0;
}

int raw_ckht_list(raw_ckht *rc, const char *ns, procreg_entry **out,
                  size_t *n)
{
    return scan(rc, ns, NULL, NULL, out, n);
}

int raw_ckht_find(raw_ckht *rc, const char *ns, const char *meta_key,
                  GVariant *value, procreg_entry **out, size_t *n)
{
    return scan(rc, ns, meta_key, value, out, n);
}

#endif /* BENCH_HAVE_CK */
