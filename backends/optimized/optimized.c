/*
 * optimized: a decorator that puts a TTL lookup cache and a metadata index
 * in front of any other backend.
 *
 *   optimized:inner=<spec>[,ttl_ms=250][,cache_capacity=100000]
 *             [,negative_cache=off][,index=on]
 *   e.g. optimized:inner=[lmdb:path=/run/x.mdb,map_size=64MiB],ttl_ms=250
 *
 * It opens the inner backend with procreg_backend_open() (the core adds
 * whatever lock the inner backend's caps ask for) and calls it only
 * through the procreg_backend_* wrappers.  What it does not answer itself
 * it forwards.
 *
 * Consistency (doc/optimized.md has the long form):
 *  - Read-your-writes, monotonic reads, no resurrection: every write
 *    through the decorator drops the key's cache entry before its inner
 *    call and stores or drops it, and updates the index postings, before
 *    it returns.  Writes of one key are ordered by a write stripe held
 *    across all of it; a lookup miss only stores its answer when no write
 *    of the key's cache stripe was in flight while it asked (cache.c).
 *  - Bounded staleness: a change made elsewhere (another process on a
 *    shared LMDB file, another host on etcd, or directly in the inner
 *    instance) is seen at the latest when the cached entry expires, ttl_ms
 *    after it was stored (plus one tick of the coarse clock); sooner when
 *    the inner backend reports it with procreg_backend_host_notify(),
 *    which drops the key at once.
 *  - Dead owners: the core never returns an entry whose owner it knows to
 *    be dead (its lookup slow path), and its monitor removes such entries
 *    through this decorator, which drops them from the cache.
 *  - Finds keep monotonic reads too (opt_before_write()): the index is a
 *    candidate list, each candidate read again from the inner backend and
 *    checked, so an extra posting costs a read and a missing one is a
 *    wrong answer.  Invariant: while no write of a key through the
 *    decorator is in flight, the key's postings are exactly its metadata
 *    in the inner backend as the last write reported it; while one is in
 *    flight (and after one whose outcome is unknown) they include both the
 *    old and the new metadata.  So a find that follows any read of the
 *    new state (its own snapshot of the index is taken after that read,
 *    hence after the write added the new postings) lists the key, and a
 *    find of the old value lists it until the inner backend changed.  A
 *    removal needs no such step: a find reads each candidate again, and a
 *    key the inner backend no longer holds is skipped.
 *  - The index answers find_by_metadata only when it sees every change:
 *    for inner backends shared with other processes or hosts
 *    (MULTIPROCESS or DISTRIBUTED) finds go to the inner backend, and a
 *    notification from any other inner marks the index stale, to be
 *    rebuilt by the next find.
 */
#include "optimized.h"

#include "../ck-common/ck-common.h"

#include <pthread.h>
#include <string.h>

#define OPT_DEFAULT_TTL_MS 250
#define OPT_MAX_TTL_MS (UINT64_C(24) * 3600 * 1000)
#define OPT_DEFAULT_CAPACITY 100000
#define OPT_MAX_CAPACITY (UINT64_C(1) << 26)


/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

bool procreg_opt_key_make(opt_stack_key *buf, const char *ns,
                          const char *name)
{
    size_t ns_len, name_len;

    if (ns == NULL || name == NULL)
        return false;
    ns_len = strlen(ns);
    name_len = strlen(name);
    if (ns_len == 0 || name_len == 0 || ns_len > PROCREG_NAME_MAX ||
        name_len > PROCREG_NAME_MAX)
        return false;
    buf->key.refcount = 0;
    buf->key.ns_len = (uint16_t)ns_len;
    buf->key.name_len = (uint16_t)name_len;
    memcpy(buf->key.bytes, ns, ns_len + 1);
    memcpy(buf->key.bytes + ns_len + 1, name, name_len + 1);
    buf->key.hash = procreg_key_hash(buf->key.bytes, ns_len + 1 + name_len);
    return true;
}

procreg_mutex *procreg_opt_stripe_lock(opt_state *s,
                                         const procreg_key *key)
{
    procreg_mutex *stripe = &s->stripes[(key->hash >> 11) %
                                          OPT_WRITE_STRIPES];

    pthread_rwlock_rdlock(&s->writes);
    procreg_mutex_lock(stripe);
    return stripe;
}

void procreg_opt_stripe_unlock(opt_state *s, procreg_mutex *stripe)
{
    procreg_mutex_unlock(stripe);
    pthread_rwlock_unlock(&s->writes);
}

/* Order the writes of @key and begin the write in the cache (@w, for
 * opt_after_write()): returns the stripe to pass to
 * procreg_opt_stripe_unlock(). */
static procreg_mutex *opt_write_lock(opt_state *s, const procreg_key *key,
                                       opt_cache_write *w)
{
    procreg_mutex *stripe = procreg_opt_stripe_lock(s, key);

    if (s->cache != NULL)
        procreg_opt_cache_write_begin(s->cache, key, w);
    return stripe;
}

/* Exclude every write through the decorator. */
static void opt_lock_all(opt_state *s)
{
    pthread_rwlock_wrlock(&s->writes);
}

static void opt_unlock_all(opt_state *s)
{
    pthread_rwlock_unlock(&s->writes);
}

static bool opt_entry_matches(const procreg_entry *e, const char *meta_key,
                              GVariant *value)
{
    GVariant *v;
    bool match;

    if (e->metadata == NULL)
        return false;
    v = g_variant_lookup_value(e->metadata, meta_key, NULL);
    match = v != NULL && procreg_metadata_value_equal(v, value);
    if (v != NULL)
        g_variant_unref(v);
    return match;
}

/* Rebuild the index from the inner backend.  With every stripe held, so
 * no write through the decorator runs meanwhile. */
static int opt_index_rebuild_locked(opt_state *s, GError **error)
{
    uint64_t seen = atomic_load_explicit(&s->notifications,
                                         memory_order_acquire);
    GArray *all = procreg_entry_array_new();
    int rc = procreg_backend_list_all(s->inner, NULL, all, error);

    if (rc == 0)
        rc = procreg_opt_groups_reindex(s, error);
    if (rc == 0) {
        procreg_opt_index_clear(s->index);
        for (guint i = 0; i < all->len; i++) {
            procreg_entry *e = &g_array_index(all, procreg_entry, i);
            opt_stack_key key;

            if (e->metadata != NULL &&
                procreg_opt_key_make(&key, e->ns, e->name))
                procreg_opt_index_set(s->index, &key.key, e->metadata);
        }
        /* A notification during the listing leaves the index stale. */
        atomic_store_explicit(&s->index_synced, seen, memory_order_release);
        atomic_fetch_add_explicit(&s->index_rebuilds, 1, memory_order_relaxed);
    }
    g_array_unref(all);
    return rc;
}

/* Called by the inner backend's host on a change made elsewhere. */
static void opt_on_inner_change(gpointer user_data, procreg_event_kind kind,
                                procreg_event_reason reason,
                                const procreg_entry *entry)
{
    opt_state *s = user_data;
    opt_stack_key key;

    (void)kind;
    (void)reason;
    atomic_fetch_add_explicit(&s->notifications, 1, memory_order_acq_rel);
    if (s->cache == NULL)
        return;
    if (entry != NULL && procreg_opt_key_make(&key, entry->ns, entry->name))
        procreg_opt_cache_invalidate(s->cache, &key.key);
    else
        procreg_opt_cache_invalidate_all(s->cache);
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */

static const procreg_backend_option opt_options[] = {
    {"inner", "the backend to decorate, a spec: inner=ghash or "
              "inner=[lmdb:path=/x,map_size=64MiB] (required)"},
    {"ttl_ms", "how long a cached lookup may be served, in ms (default 250; "
               "0 turns the cache off)"},
    {"cache_capacity", "most entries the cache holds (default 100000; "
                       "0 turns the cache off)"},
    {"negative_cache", "also cache 'not registered' answers (on/off, "
                       "default off)"},
    {"index", "keep a metadata index for find (on/off, default on; always "
              "off over a backend shared with other processes or hosts)"},
    {NULL, NULL},
};

static void opt_state_free(opt_state *s)
{
    procreg_backend_close(s->inner);
    procreg_backend_host_free(s->child);
    procreg_opt_cache_free(s->cache);
    procreg_opt_index_free(s->index);
    procreg_opt_index_free(s->member_index);
    pthread_rwlock_destroy(&s->writes);
    g_free(s);
}

static int opt_init(const procreg_spec *spec, procreg_backend_host *host,
                    void **state, GError **error)
{
    const char *inner_spec = procreg_spec_get(spec, "inner");
    uint64_t ttl_ms, capacity;
    bool negative, use_index;
    opt_state *s;
    int rc;

    if (inner_spec == NULL || *inner_spec == '\0')
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "optimized: the option 'inner' is required "
                                 "(the backend to decorate, e.g. "
                                 "optimized:inner=ghash or "
                                 "optimized:inner=[lmdb:path=/x])");
    rc = procreg_spec_get_uint64(spec, "ttl_ms", OPT_DEFAULT_TTL_MS, &ttl_ms,
                                 error);
    if (rc == 0 && ttl_ms > OPT_MAX_TTL_MS)
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "optimized: ttl_ms=%" G_GUINT64_FORMAT
                               " is too long (at most %" G_GUINT64_FORMAT
                               ", one day)", ttl_ms, OPT_MAX_TTL_MS);
    if (rc == 0)
        rc = procreg_spec_get_uint64(spec, "cache_capacity",
                                     OPT_DEFAULT_CAPACITY, &capacity, error);
    if (rc == 0 && capacity > OPT_MAX_CAPACITY)
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "optimized: cache_capacity=%" G_GUINT64_FORMAT
                               " is too large (at most %" G_GUINT64_FORMAT ")",
                               capacity, OPT_MAX_CAPACITY);
    if (rc == 0)
        rc = procreg_spec_get_bool(spec, "negative_cache", false, &negative,
                                   error);
    if (rc == 0)
        rc = procreg_spec_get_bool(spec, "index", true, &use_index, error);
    if (rc != 0)
        return rc;

    s = g_new0(opt_state, 1);
    {
        pthread_rwlockattr_t attr;

        /* A drop must not wait behind an endless stream of writes. */
        pthread_rwlockattr_init(&attr);
        pthread_rwlockattr_setkind_np(
            &attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&s->writes, &attr);
        pthread_rwlockattr_destroy(&attr);
    }
    for (unsigned int i = 0; i < OPT_WRITE_STRIPES; i++)
        procreg_mutex_init(&s->stripes[i]);
    if (ttl_ms > 0 && capacity > 0) {
        s->cache = procreg_opt_cache_new(capacity, ttl_ms, negative);
        if (s->cache == NULL) {
            opt_state_free(s);
            return procreg_set_error(error, PROCREG_ENOMEM,
                                     "optimized: out of memory for the cache");
        }
    }
    /* The cache exists before the inner backend can notify. */
    s->child = procreg_backend_host_new_child(host, opt_on_inner_change, s);
    rc = procreg_backend_open(inner_spec, s->child, &s->inner, error);
    if (rc != 0) {
        g_prefix_error(error, "optimized: inner backend: ");
        opt_state_free(s);
        return rc;
    }
    s->inner_ops = procreg_backend_get_ops(s->inner);

    if (!use_index) {
        s->index_state = "off (index=off)";
    } else if (procreg_backend_get_caps(s->inner) &
               (PROCREG_CAP_MULTIPROCESS | PROCREG_CAP_DISTRIBUTED)) {
        s->index_state = "off (inner backend is shared: finds go to it)";
    } else {
        s->index = procreg_opt_index_new();
        s->member_index = procreg_opt_index_new();
        s->index_state = "on";
        /* A persistent inner backend may start with entries. */
        opt_lock_all(s);
        rc = opt_index_rebuild_locked(s, error);
        opt_unlock_all(s);
        if (rc != 0) {
            g_prefix_error(error, "optimized: indexing the inner backend: ");
            opt_state_free(s);
            return rc;
        }
    }
    *state = s;
    return 0;
}

static void opt_destroy(void *state)
{
    opt_state_free(state);
}

/* ------------------------------------------------------------------------ */
/* Reads                                                                    */

static int opt_lookup(void *state, const procreg_key *key, procreg_owner *out)
{
    opt_state *s = state;
    uint64_t sequence;
    int rc;

    if (G_UNLIKELY(s->cache == NULL))
        return procreg_backend_lookup(s->inner, key, out);
    switch (procreg_opt_cache_lookup(s->cache, key, out)) {
    case OPT_CACHE_FOUND:
        return 0;
    case OPT_CACHE_ABSENT:
        return PROCREG_ENOTFOUND;
    case OPT_CACHE_MISS:
        break;
    }
    /* Read before asking, so that a write racing with the question makes
     * the answer be dropped rather than cached. */
    sequence = procreg_opt_cache_sequence(s->cache, key);
    rc = procreg_backend_lookup(s->inner, key, out);
    if (rc == 0) {
        procreg_entry e = {.owner = *out};

        procreg_opt_cache_fill(s->cache, key, sequence, OPT_KIND_OWNER, &e);
    } else if (rc == PROCREG_ENOTFOUND) {
        procreg_opt_cache_fill(s->cache, key, sequence, OPT_KIND_NEGATIVE,
                               NULL);
    }
    return rc;
}

static int opt_lookup_entry(void *state, const procreg_key *key,
                            procreg_entry *out, GError **error)
{
    opt_state *s = state;
    uint64_t sequence;
    int rc;

    if (G_UNLIKELY(s->cache == NULL))
        return procreg_backend_lookup_entry(s->inner, key, out, error);
    switch (procreg_opt_cache_lookup_entry(s->cache, key, out)) {
    case OPT_CACHE_FOUND:
        return 0;
    case OPT_CACHE_ABSENT:
        if (error == NULL)
            return PROCREG_ENOTFOUND;
        return procreg_set_error(error, PROCREG_ENOTFOUND,
                                 "'%s' is not registered in namespace '%s'",
                                 procreg_key_bytes(key) + key->ns_len + 1,
                                 procreg_key_bytes(key));
    case OPT_CACHE_MISS:
        break;
    }
    sequence = procreg_opt_cache_sequence(s->cache, key);
    rc = procreg_backend_lookup_entry(s->inner, key, out, error);
    if (rc == 0)
        procreg_opt_cache_fill(s->cache, key, sequence, OPT_KIND_FULL, out);
    else if (rc == PROCREG_ENOTFOUND)
        procreg_opt_cache_fill(s->cache, key, sequence, OPT_KIND_NEGATIVE,
                               NULL);
    return rc;
}

static int opt_list_all(void *state, const char *ns, GArray *out,
                        GError **error)
{
    opt_state *s = state;

    return procreg_backend_list_all(s->inner, ns, out, error);
}

static int opt_count(void *state, const char *ns, size_t *out, GError **error)
{
    opt_state *s = state;

    return procreg_backend_count(s->inner, ns, out, error);
}

static int opt_count_namespaces(void *state, GArray *out, GError **error)
{
    opt_state *s = state;

    return procreg_backend_count_namespaces(s->inner, out, error);
}

static int opt_list_names(void *state, const char *ns, size_t max,
                          GPtrArray *out)
{
    opt_state *s = state;

    return procreg_backend_list_names(s->inner, ns, max, out);
}

int procreg_opt_index_sync(opt_state *s, GError **error)
{
    int rc = 0;

    if (atomic_load_explicit(&s->notifications, memory_order_acquire) ==
        atomic_load_explicit(&s->index_synced, memory_order_acquire))
        return 0;
    opt_lock_all(s);
    if (atomic_load_explicit(&s->notifications, memory_order_acquire) !=
        atomic_load_explicit(&s->index_synced, memory_order_acquire))
        rc = opt_index_rebuild_locked(s, error);
    opt_unlock_all(s);
    return rc;
}

static int opt_find_by_metadata(void *state, const char *ns,
                                const char *meta_key, GVariant *value,
                                GArray *out, GError **error)
{
    opt_state *s = state;
    GPtrArray *keys;
    int rc;

    if (s->index == NULL) {
        atomic_fetch_add_explicit(&s->finds_forwarded, 1,
                                  memory_order_relaxed);
        return procreg_backend_find_by_metadata(s->inner, ns, meta_key, value,
                                                out, error);
    }
    rc = procreg_opt_index_sync(s, error);
    if (rc != 0)
        return rc;
    atomic_fetch_add_explicit(&s->finds_indexed, 1, memory_order_relaxed);
    keys = procreg_opt_index_find(s->index, ns, meta_key, value);
    /* The entries themselves come from the inner backend; each is checked
     * again, as a write may have changed it since the index was read. */
    for (guint i = 0; rc == 0 && i < keys->len; i++) {
        const procreg_key *key = g_ptr_array_index(keys, i);
        procreg_entry e = {0};

        rc = procreg_backend_lookup_entry(s->inner, key, &e, error);
        if (rc == PROCREG_ENOTFOUND) {
            rc = 0;
            continue;
        }
        if (rc == 0 && opt_entry_matches(&e, meta_key, value)) {
            e.ns = g_strdup(procreg_key_bytes(key));
            e.name = g_strdup(procreg_key_bytes(key) + key->ns_len + 1);
            g_array_append_val(out, e);
        } else {
            procreg_entry_clear(&e);
        }
    }
    g_ptr_array_unref(keys);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Writes                                                                   */

/* Before the inner call of a write that may give @key @metadata: add the
 * key to the new postings, keeping the old ones (see the invariant at the
 * top: a thread may read the new state from the inner backend, in a miss
 * or list_all, before the call returns, and its next find must list the
 * key; a find of the old value must list it until the inner backend
 * changed).  Under the key's stripe. */
static void opt_before_write(opt_state *s, const procreg_key *key,
                             GVariant *metadata)
{
    /* No metadata adds no posting (opt_after_write() then sets). */
    if (s->index != NULL && metadata != NULL)
        procreg_opt_index_add(s->index, key, metadata);
}

/* After a write of @key (begun with @w) whose outcome was @rc (@now: the
 * entry the inner backend reports, when rc is 0 or EEXISTS): bring cache
 * and index in line and end the write in the cache: the postings become
 * exactly the outcome's when it is known, and stay the union
 * opt_before_write() made when it is not.  Under the key's stripe; every
 * write calls it once, whatever its outcome. */
static void opt_after_write(opt_state *s, const procreg_key *key,
                            const opt_cache_write *w, int rc,
                            const procreg_entry *now, bool reindex,
                            GVariant *added)
{
    bool known = true;

    if (rc == 0 || rc == PROCREG_EEXISTS) {
        GVariant *m = now ? now->metadata : NULL;

        /* The metadata added before the call, as the outcome: drop the
         * old postings without reading it again. */
        if (s->index != NULL && reindex && rc == 0 && m == added &&
            added != NULL)
            procreg_opt_index_settle(s->index, key);
        else if (s->index != NULL && reindex)
            procreg_opt_index_set(s->index, key, m);
    } else if (rc == PROCREG_ENOTFOUND) {
        /* The key is known to be absent. */
        if (s->index != NULL)
            procreg_opt_index_remove(s->index, key);
        now = NULL;
    } else {
        /* A conflict or a failure: the inner call may have changed the
         * key or not; the index keeps both the old and the new postings. */
        known = false;
    }
    if (s->cache != NULL)
        procreg_opt_cache_write_end(s->cache, key, w, known, now);
}

static int opt_register(void *state, const procreg_key *key,
                        const procreg_record *record, procreg_entry *current,
                        GError **error)
{
    opt_state *s = state;
    procreg_entry now = {0};
    opt_cache_write w;
    procreg_mutex *stripe = opt_write_lock(s, key, &w);
    int rc;

    opt_before_write(s, key, record->metadata);
    rc = procreg_backend_register_entry(s->inner, key, record, &now, error);
    /* Refused, the holder's postings replace the ones added before. */
    opt_after_write(s, key, &w, rc, &now,
                    rc == 0 || rc == PROCREG_EEXISTS, record->metadata);
    procreg_opt_stripe_unlock(s, stripe);
    if (current != NULL)
        *current = now;
    else
        procreg_entry_clear(&now);
    return rc;
}

static int opt_unregister(void *state, const procreg_key *key,
                          uint64_t if_revision, procreg_entry *removed,
                          GError **error)
{
    opt_state *s = state;
    opt_cache_write w;
    procreg_mutex *stripe = opt_write_lock(s, key, &w);
    int rc;

    rc = procreg_backend_unregister(s->inner, key, if_revision, removed,
                                    error);
    /* Removed, the key is absent, as ENOTFOUND says. */
    opt_after_write(s, key, &w, rc == 0 ? PROCREG_ENOTFOUND : rc, NULL,
                    false, NULL);
    procreg_opt_stripe_unlock(s, stripe);
    return rc;
}

/* The inner backend's owner-checked removal (unregister_owned), with the
 * cache and index kept in line as for unregister; PROCREG_ENOTSUP, having
 * touched nothing, when the inner backend has no such slot (the core then
 * checks and removes in two calls). */
static int opt_unregister_owned(void *state, const procreg_key *key,
                                const procreg_owner *owner,
                                procreg_entry *removed)
{
    opt_state *s = state;
    opt_cache_write w;
    procreg_mutex *stripe;
    int rc;

    if (s->inner_ops->version < 5 || s->inner_ops->unregister_owned == NULL)
        return PROCREG_ENOTSUP;
    stripe = opt_write_lock(s, key, &w);
    rc = procreg_backend_unregister_owned(s->inner, key, owner, removed);
    /* Removed, the key is absent; refused (EPERM), the entry is another
     * owner's, unchanged, and the cache forgets it like after a failure. */
    opt_after_write(s, key, &w, rc == 0 ? PROCREG_ENOTFOUND : rc, NULL,
                    false, NULL);
    procreg_opt_stripe_unlock(s, stripe);
    return rc;
}

static int opt_update_metadata(void *state, const procreg_key *key,
                               GVariant *metadata, uint64_t if_revision,
                               procreg_entry *updated, GError **error)
{
    opt_state *s = state;
    procreg_entry now = {0};
    opt_cache_write w;
    procreg_mutex *stripe = opt_write_lock(s, key, &w);
    int rc;

    opt_before_write(s, key, metadata);
    rc = procreg_backend_update_metadata(s->inner, key, metadata, if_revision,
                                         &now, error);
    opt_after_write(s, key, &w, rc, rc == 0 ? &now : NULL, rc == 0,
                    metadata);
    procreg_opt_stripe_unlock(s, stripe);
    if (updated != NULL)
        *updated = now;
    else
        procreg_entry_clear(&now);
    return rc;
}

static int opt_drop_namespace(void *state, const char *ns, GArray *removed,
                              GError **error)
{
    opt_state *s = state;
    GArray *gone = removed != NULL ? removed : procreg_entry_array_new();
    guint before = gone->len;
    int rc;

    opt_lock_all(s);
    if (s->cache != NULL)
        procreg_opt_cache_drop_begin(s->cache, ns);
    rc = procreg_backend_drop_namespace(s->inner, ns, gone, error);
    /* Even a failed drop may have removed some. */
    for (guint i = before; s->index != NULL && i < gone->len; i++) {
        procreg_entry *e = &g_array_index(gone, procreg_entry, i);
        opt_stack_key key;

        if (procreg_opt_key_make(&key, e->ns ? e->ns : ns, e->name))
            procreg_opt_index_remove(s->index, &key.key);
    }
    if (s->cache != NULL)
        procreg_opt_cache_drop_end(s->cache);
    opt_unlock_all(s);
    if (gone != removed)
        g_array_unref(gone);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Health, stats, memory                                                    */

static void opt_insert_figures(opt_state *s, GVariantDict *out)
{
    GVariantDict d;
    opt_index_stats ixs;

    g_variant_dict_insert(out, "inner_backend", "s", s->inner_ops->name);
    g_variant_dict_init(&d, NULL);
    if (s->cache != NULL) {
        opt_cache_stats cs;
        uint64_t lookups;

        procreg_opt_cache_get_stats(s->cache, &cs);
        lookups = cs.hits + cs.misses;
        g_variant_dict_insert(&d, "enabled", "b", TRUE);
        g_variant_dict_insert(&d, "hits", "t", (guint64)cs.hits);
        g_variant_dict_insert(&d, "negative_hits", "t",
                              (guint64)cs.negative_hits);
        g_variant_dict_insert(&d, "misses", "t", (guint64)cs.misses);
        g_variant_dict_insert(&d, "hit_rate", "d",
                              lookups ? (double)cs.hits / (double)lookups
                                      : 0.0);
        g_variant_dict_insert(&d, "expirations", "t",
                              (guint64)cs.expirations);
        g_variant_dict_insert(&d, "fills", "t", (guint64)cs.fills);
        g_variant_dict_insert(&d, "fill_races", "t", (guint64)cs.fill_races);
        g_variant_dict_insert(&d, "updates", "t", (guint64)cs.updates);
        g_variant_dict_insert(&d, "invalidations", "t",
                              (guint64)cs.invalidations);
        g_variant_dict_insert(&d, "evictions", "t", (guint64)cs.evictions);
        g_variant_dict_insert(&d, "table_rebuilds", "t",
                              (guint64)cs.rebuilds);
        g_variant_dict_insert(&d, "entries", "t", (guint64)cs.entries);
        g_variant_dict_insert(&d, "capacity", "t", (guint64)cs.capacity);
        g_variant_dict_insert(&d, "ttl_ms", "t", (guint64)cs.ttl_ms);
        g_variant_dict_insert(&d, "negative_cache", "b",
                              (gboolean)cs.negative);
        g_variant_dict_insert(&d, "bytes", "t", (guint64)cs.bytes);
        g_variant_dict_insert(&d, "retired_pending", "t",
                              (guint64)cs.retired_pending);
    } else {
        g_variant_dict_insert(&d, "enabled", "b", FALSE);
    }
    g_variant_dict_insert_value(out, "cache", g_variant_dict_end(&d));

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "state", "s", s->index_state);
    if (s->index != NULL) {
        procreg_opt_index_get_stats(s->index, &ixs);
        g_variant_dict_insert(&d, "entries", "t", (guint64)ixs.entries);
        g_variant_dict_insert(&d, "postings", "t", (guint64)ixs.postings);
        g_variant_dict_insert(&d, "values", "t", (guint64)ixs.values);
        g_variant_dict_insert(&d, "bytes", "t", (guint64)ixs.bytes);
        g_variant_dict_insert(
            &d, "stale", "b",
            (gboolean)(atomic_load_explicit(&s->notifications,
                                            memory_order_acquire) !=
                       atomic_load_explicit(&s->index_synced,
                                            memory_order_acquire)));
    }
    g_variant_dict_insert(&d, "finds_indexed", "t",
                          (guint64)atomic_load_explicit(&s->finds_indexed,
                                                        memory_order_relaxed));
    g_variant_dict_insert(&d, "finds_forwarded", "t",
                          (guint64)atomic_load_explicit(&s->finds_forwarded,
                                                        memory_order_relaxed));
    g_variant_dict_insert(&d, "rebuilds", "t",
                          (guint64)atomic_load_explicit(&s->index_rebuilds,
                                                        memory_order_relaxed));
    g_variant_dict_insert_value(out, "index", g_variant_dict_end(&d));
    g_variant_dict_insert(out, "inner_notifications", "t",
                          (guint64)atomic_load_explicit(&s->notifications,
                                                        memory_order_relaxed));
}

static int opt_health_check(void *state, GVariantDict *details,
                            char **message)
{
    opt_state *s = state;
    GVariantDict inner;
    char *inner_message = NULL;
    int status;

    g_variant_dict_init(&inner, NULL);
    status = procreg_backend_health_check(s->inner, &inner, &inner_message);
    g_variant_dict_insert_value(details, "inner", g_variant_dict_end(&inner));
    g_variant_dict_insert(details, "inner_status", "s",
                          status < 0 ? "failed"
                                     : procreg_health_status_name(
                                           (procreg_health_status)status));
    opt_insert_figures(s, details);
    if (inner_message != NULL) {
        *message = g_strdup_printf("inner backend %s: %s",
                                   s->inner_ops->name, inner_message);
        g_free(inner_message);
    }
    return status;
}

static void opt_stats(void *state, GVariantDict *out)
{
    opt_state *s = state;
    GVariantDict inner;

    g_variant_dict_init(&inner, NULL);
    procreg_backend_stats(s->inner, &inner);
    g_variant_dict_insert_value(out, "inner", g_variant_dict_end(&inner));
    opt_insert_figures(s, out);
}

static int opt_memory_usage(void *state, size_t *bytes)
{
    opt_state *s = state;
    size_t total = sizeof(*s);
    size_t inner = 0;

    if (procreg_backend_memory_usage(s->inner, &inner) == 0)
        total += inner;
    if (s->cache != NULL) {
        opt_cache_stats cs;

        procreg_opt_cache_get_stats(s->cache, &cs);
        total += cs.bytes;
    }
    if (s->index != NULL) {
        opt_index_stats ixs;

        procreg_opt_index_get_stats(s->index, &ixs);
        total += ixs.bytes;
    }
    *bytes = total;
    return 0;
}

/* What the inner backend adds (sharing, persistence, atomic drops) holds
 * for the decorator too. */
#define OPT_CAPS (PROCREG_CAP_THREADSAFE | PROCREG_CAP_LOCKFREE_READS)

static unsigned int opt_instance_caps(void *state)
{
    opt_state *s = state;
    return OPT_CAPS |
           (procreg_backend_get_caps(s->inner) &
            (PROCREG_CAP_PERSISTENT | PROCREG_CAP_MULTIPROCESS |
             PROCREG_CAP_DISTRIBUTED | PROCREG_CAP_ATOMIC_DROP |
             PROCREG_CAP_ORDERED_EVENTS)) |
           (procreg_backend_has_groups(s->inner) ? PROCREG_CAP_GROUPS : 0) |
           (procreg_backend_has_history(s->inner) ? PROCREG_CAP_HISTORY : 0);
}

/* The inner backend's history is the decorator's: its notifications reach
 * the registry through the child host with their positions. */
static int opt_history_head(void *state, uint64_t *out, GError **error)
{
    opt_state *s = state;
    return procreg_backend_history_head(s->inner, out, error);
}

static int opt_history_read(void *state, const char *ns, uint64_t after,
                            GArray *out, uint64_t *head, GError **error)
{
    opt_state *s = state;
    return procreg_backend_history_read(s->inner, ns, after, out, head,
                                        error);
}

const procreg_backend_ops procreg_optimized_backend_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "optimized",
    .description = "decorator: lock-free TTL lookup cache and metadata index "
                   "over another backend (inner=SPEC)",
    /* Cache hits take no lock.  Writes and misses are ordered by the
     * decorator itself; the core locks the inner backend as its own caps
     * ask. */
    .caps = OPT_CAPS,
    .options = opt_options,
    .init = opt_init,
    .destroy = opt_destroy,
    .register_entry = opt_register,
    .lookup = opt_lookup,
    .lookup_entry = opt_lookup_entry,
    .unregister = opt_unregister,
    .unregister_owned = opt_unregister_owned,
    .list_all = opt_list_all,
    .update_metadata = opt_update_metadata,
    .health_check = opt_health_check,
    .count = opt_count,
    .list_names = opt_list_names,
    .drop_namespace = opt_drop_namespace,
    .find_by_metadata = opt_find_by_metadata,
    .memory_usage = opt_memory_usage,
    .stats = opt_stats,
    .instance_caps = opt_instance_caps,
    .count_namespaces = opt_count_namespaces,
    .group_join = procreg_opt_group_join,
    .group_leave = procreg_opt_group_leave,
    .group_members = procreg_opt_group_members,
    .group_list_all = procreg_opt_group_list_all,
    .group_count = procreg_opt_group_count,
    .group_list = procreg_opt_group_list,
    .group_dispatch = procreg_opt_group_dispatch,
    .group_pick = procreg_opt_group_pick,
    .group_find = procreg_opt_group_find,
    .group_member = procreg_opt_group_member,
    .history_head = opt_history_head,
    .history_read = opt_history_read,
};
