/*
 * The optimized decorator's cache: its storage.  Owns the entries (one
 * aligned allocation each), the ck_ht table that maps keys to them and
 * the allocator ck_ht uses (table bytes counted per cache), the ring of
 * slots the CLOCK hand sweeps, and inserting, removing and evicting, all
 * under the cache lock (procreg_opt_write_begin()).  Readers and the
 * coherence of fills with writes are cache.c's.
 */
#include "cache-internal.h"

/* ------------------------------------------------------------------------ */
/* ck_ht glue                                                               */

/* ck_malloc has no context argument: the cache whose lock this thread
 * holds is found here (saved and restored, so caches may nest). */
static _Thread_local opt_cache *opt_cache_writer
    __attribute__((tls_model("initial-exec")));

static void *opt_ht_malloc(size_t size)
{
    opt_cache *c = opt_cache_writer;
    void *p;

    if (c == NULL) {
        g_critical("optimized: ck_ht allocated outside a write");
        return NULL;
    }
    p = malloc(size);
    if (p != NULL) {
        c->table_bytes += size;
        c->map_size = size;
    }
    return p;
}

static void opt_ht_free(void *p, size_t size, bool defer)
{
    opt_cache *c = opt_cache_writer;

    if (p == NULL)
        return;
    if (c == NULL) {
        /* Which epoch protects it is unknown: leaking is the safe way. */
        g_critical("optimized: ck_ht freed memory outside a write");
        return;
    }
    (void)defer; /* always deferred: see procreg_ck_ht_free_table() */
    c->table_bytes -= size;
    procreg_ck_ht_free_table(c->epoch, p, size);
}

struct ck_malloc procreg_opt_ht_allocator = {
    .malloc = opt_ht_malloc,
    .realloc = NULL, /* ck_ht never reallocates */
    .free = opt_ht_free,
};

opt_cache *procreg_opt_write_begin(opt_cache *c)
{
    opt_cache *previous;

    procreg_mutex_lock(&c->lock);
    previous = opt_cache_writer;
    opt_cache_writer = c;
    return previous;
}

void procreg_opt_write_end(opt_cache *c, opt_cache *previous)
{
    procreg_epoch_tick(c->epoch);
    opt_cache_writer = previous;
    procreg_mutex_unlock(&c->lock);
}

/* ------------------------------------------------------------------------ */
/* Entries                                                                  */

/* Bytes allocated for an entry of a key of @key_size bytes. */
static size_t opt_centry_alloc_size(size_t key_size)
{
    return (opt_ctail_offset(key_size) + sizeof(opt_ctail) + 63) &
           ~(size_t)63;
}

static size_t opt_centry_size(const opt_centry *e)
{
    return opt_centry_alloc_size(opt_centry_key_size(e));
}

opt_centry *procreg_opt_centry_new(const procreg_key *key, opt_kind kind,
                                   const procreg_entry *src, int64_t expires)
{
    size_t key_size = procreg_key_size(key);
    opt_centry *e = aligned_alloc(64, opt_centry_alloc_size(key_size));
    opt_ctail *t;

    if (e == NULL)
        return NULL;
    memset(e, 0, offsetof(opt_centry, key));
    e->expires_ns = expires;
    e->kind = (uint8_t)kind;
    atomic_init(&e->referenced, 0);
    e->ns_len = key->ns_len;
    e->name_len = key->name_len;
    memcpy(e->key, procreg_key_bytes(key), key_size);
    e->key[key_size] = '\0';
    t = opt_centry_tail(e);
    memset(t, 0, sizeof(*t));
    t->hash = key->hash;
    if (kind != OPT_KIND_NEGATIVE && src != NULL) {
        e->pid = src->owner.pid;
        e->start_time = src->owner.start_time;
        if (kind == OPT_KIND_FULL) {
            t->metadata = src->metadata ? g_variant_ref(src->metadata) : NULL;
            t->registered_at = src->registered_at;
            t->revision = src->revision;
        }
    }
    return e;
}

void procreg_opt_centry_free(void *p)
{
    opt_centry *e = p;
    opt_ctail *t = opt_centry_tail(e);

    if (t->metadata != NULL)
        g_variant_unref(t->metadata);
    free(e);
}

/* ------------------------------------------------------------------------ */
/* Writer side (under the lock)                                             */

/* Make the ring and the free list hold at least @want slots. */
static bool opt_ring_reserve(opt_cache *c, uint32_t want)
{
    uint32_t len = c->ring_len ? c->ring_len : 64;
    opt_centry **ring;
    uint32_t *free_slots;

    if (want <= c->ring_len)
        return true;
    while (len < want)
        len = len > UINT32_MAX / 2 ? UINT32_MAX : len * 2;
    if (len > c->capacity)
        len = (uint32_t)c->capacity;
    ring = realloc(c->ring, (size_t)len * sizeof(*ring));
    if (ring == NULL)
        return false;
    c->ring = ring;
    free_slots = realloc(c->free_slots, (size_t)len * sizeof(*free_slots));
    if (free_slots == NULL)
        return false; /* the ring grew; the old length still holds */
    c->free_slots = free_slots;
    memset(ring + c->ring_len, 0, (size_t)(len - c->ring_len) * sizeof(*ring));
    c->ring_len = len;
    return true;
}

void procreg_opt_remove_locked(opt_cache *c, opt_centry *e)
{
    size_t bytes = opt_centry_size(e);

    ck_ht_entry_t slot;
    ck_ht_hash_t h;

    h.value = opt_centry_tail(e)->hash;
    ck_ht_entry_key_set(&slot, e->key, (uint16_t)opt_centry_key_size(e));
    ck_ht_remove_spmc(c->ht, h, &slot);
    c->ring[e->ring_slot] = NULL;
    c->free_slots[c->n_free++] = e->ring_slot;
    c->n_entries--;
    if (c->n_entries < c->capacity - c->capacity / 8 &&
        atomic_load_explicit(&c->full, memory_order_relaxed))
        atomic_store_explicit(&c->full, false, memory_order_relaxed);
    c->entry_bytes -= bytes;
    procreg_epoch_retire(c->epoch, e, procreg_opt_centry_free, bytes);
    /* Removals (evictions above all) leave tombstones that only a new
     * table clears: rebuild once they reach half the slots, as ckht does
     * (amortised O(1)). */
    size_t slots = procreg_ck_ht_slots(c->map_size);
    if (++c->removals > slots / 2 &&
        procreg_ck_ht_rebuild(&c->ht, slots, &procreg_opt_ht_allocator,
                              c->epoch)) {
        c->removals = 0;
        c->rebuilds++;
    }
}

/* CLOCK: evict the first entry the hand finds unreferenced, clearing the
 * referenced bits it passes.  Ends within two sweeps. */
static void opt_evict_one(opt_cache *c)
{
    uint64_t steps;

    for (steps = 0; steps < 2 * (uint64_t)c->ring_used + 1; steps++) {
        opt_centry *e = c->ring[c->hand];

        c->hand = c->hand + 1 >= c->ring_used ? 0 : c->hand + 1;
        if (e == NULL)
            continue;
        if (atomic_load_explicit(&e->referenced, memory_order_relaxed)) {
            atomic_store_explicit(&e->referenced, 0, memory_order_relaxed);
            continue;
        }
        procreg_opt_remove_locked(c, e);
        c->evictions++;
        return;
    }
}

/* A ring slot for a new entry, or false when out of memory. */
static bool opt_take_slot(opt_cache *c, uint32_t *slot)
{
    if (c->n_free > 0) {
        *slot = c->free_slots[--c->n_free];
        return true;
    }
    if (!opt_ring_reserve(c, c->ring_used + 1))
        return false;
    *slot = c->ring_used++;
    return true;
}

void procreg_opt_insert_locked(opt_cache *c, const procreg_key *key,
                               opt_centry *e)
{
    opt_centry *current = opt_get(c, key);
    opt_centry *previous = NULL;
    ck_ht_entry_t entry;
    ck_ht_hash_t h;
    uint32_t slot = 0;

    if (current == NULL && c->n_entries >= c->capacity)
        opt_evict_one(c);
    if (current == NULL && !opt_take_slot(c, &slot)) {
        procreg_opt_centry_free(e);
        return;
    }
    /* The entry's contents before the slot that points to it. */
    PROCREG_TSAN_RELEASE(e);
    ck_pr_fence_store();
    h.value = key->hash;
    ck_ht_entry_set(&entry, h, e->key, (uint16_t)procreg_key_size(key), e);
    if (!ck_ht_set_spmc(c->ht, h, &entry)) {
        /* Only growth can fail, and only for a new key. */
        if (current == NULL)
            c->free_slots[c->n_free++] = slot;
        procreg_opt_centry_free(e);
        return;
    }
    if (!ck_ht_entry_empty(&entry))
        previous = ck_ht_entry_value(&entry);
    if (previous != NULL) {
        opt_centry *old = previous;
        size_t old_bytes = opt_centry_size(old);

        e->ring_slot = old->ring_slot;
        /* A refreshed hot key stays hot. */
        atomic_store_explicit(&e->referenced,
                              atomic_load_explicit(&old->referenced,
                                                   memory_order_relaxed),
                              memory_order_relaxed);
        c->ring[e->ring_slot] = e;
        c->entry_bytes -= old_bytes;
        procreg_epoch_retire(c->epoch, old, procreg_opt_centry_free, old_bytes);
    } else {
        e->ring_slot = slot;
        c->ring[slot] = e;
        c->n_entries++;
        if (c->n_entries >= c->capacity &&
            !atomic_load_explicit(&c->full, memory_order_relaxed))
            atomic_store_explicit(&c->full, true, memory_order_relaxed);
    }
    c->entry_bytes += opt_centry_size(e);
}
