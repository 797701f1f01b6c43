/*
 * The optimized decorator's TTL lookup cache.
 *
 * Readers (lookup, lookup_entry) take no lock: a ck_epoch read section on
 * the thread's own record (ck-common), one ck_ht_get_spmc with the key's
 * prepared hash, and a copy of the owner.  (ck_ht rather than ck_hs:
 * its slots keep each key's hash, so a probe compares hashes in the table
 * and reads only the entry that matches; ck_hs, without pointer packing
 * in this build of ck, reads every entry on the probe path.)  Entries are immutable once
 * published except for their `referenced` byte, which a reader stores
 * (plain, relaxed) only when it is not already set, so a hot entry's line
 * is not written on every hit.  Counters are per thread (see the shards
 * below): a hit does no atomic read-modify-write on shared memory.
 *
 * Writers (fills after a miss, writes through the decorator,
 * invalidations) hold the cache lock, one at a time (ck_ht is single
 * writer, many readers).  Replaced and removed entries, and ck_ht tables
 * replaced when it grows, are retired through the epoch and freed once no
 * read section can still see them.
 *
 * Staleness: an entry expires ttl_ms after it was stored (a coarse
 * monotonic clock, so up to one clock tick later).
 *
 * Writes, notifications and fills (doc/optimized.md states the promise
 * this keeps).  Keys fall into OPT_GEN_STRIPES stripes.  Each stripe has a
 * sequence word, (generation << OPT_SEQ_GEN_SHIFT) | writes in flight,
 * changed only under the lock:
 *  - write_begin, before a write through the decorator reaches the inner
 *    backend, drops the key's entry and counts the write in flight;
 *  - write_end, once the inner backend answered, stores the key's new
 *    state (unless a notification of the stripe came since write_begin:
 *    the inner backend may hold a newer change, so the key stays absent),
 *    then bumps the generation and uncounts the write, in one store;
 *  - a notification (a change made elsewhere) drops the key and bumps the
 *    generation (and the stripe's notification count);
 *  - a miss reads the word before it asks the inner backend, and its fill
 *    stores the answer only if, under the lock, the word is the same and
 *    counted no write in flight (opt_fill_acceptable()).
 * Every step changes the word, and it never comes back to a value it had
 * while no write was in flight (the generation only grows; the count only
 * falls through write_end, which bumps it).  Hence the invariants:
 *  (1) a write in flight has no entry for its key: write_begin drops it,
 *      fills of its stripe are refused until write_end, and writes of one
 *      key are serialised by the caller (optimized.c's write stripes).  So
 *      while the inner backend may already hold the write, every read of
 *      the key goes to the inner backend, as list and find do;
 *  (2) a stored fill was read from the inner backend while no write
 *      through the decorator to its stripe was in flight and after every
 *      notification of its stripe that came before the store; so it is the
 *      state every completed write left, or newer, and never older than a
 *      notification already delivered.
 * (1) and (2) give monotonic reads per thread for writes through the
 * decorator and keep a removed key from coming back.
 *
 * Capacity: at most `capacity` entries.  Each entry owns a slot of a ring;
 * when the cache is full a CLOCK hand sweeps the ring, clearing referenced
 * bits, and evicts the first entry not referenced since the hand last
 * passed it (second chance), so keys that are being read stay.
 */
#include "optimized.h"

#include "../ck-common/ck-common.h"

#include <ck_ht.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Per-thread counter blocks per cache; threads beyond share one more. */
#define OPT_SHARDS 64
/* Sequence words: see the header comment. */
#define OPT_GEN_STRIPES 64
/* At most one write per write stripe of optimized.c (64) is in flight, and
 * a namespace drop excludes the others: 16 bits count them with room. */
#define OPT_SEQ_GEN_SHIFT 16
#define OPT_SEQ_WRITING_MASK ((UINT64_C(1) << OPT_SEQ_GEN_SHIFT) - 1)
#define OPT_SEQ_GEN (UINT64_C(1) << OPT_SEQ_GEN_SHIFT)
/* ck_ht slots to start with (it doubles as it fills, at load 1/2). */
#define OPT_HT_INITIAL 128

/* A cache entry: one allocation, aligned to a cache line, laid out so
 * that a hit reads one line for keys of up to 31 bytes: ck_ht compares
 * the key bytes, then the reader checks expiry and kind and copies the
 * owner.  What only FULL entries and writers need follows the key
 * (opt_ctail). */
typedef struct {
    int64_t expires_ns; /* coarse monotonic */
    uint64_t start_time;
    pid_t pid;
    uint16_t ns_len;
    uint8_t kind; /* opt_kind */
    _Atomic uint8_t referenced;
    uint16_t name_len;
    uint16_t pad;
    uint32_t ring_slot; /* writer only */
    char key[];         /* ns \0 name \0 */
} opt_centry;

typedef struct {
    uint64_t hash;      /* the key's */
    GVariant *metadata; /* FULL entries: a reference, or NULL */
    int64_t registered_at;
    uint64_t revision;
} opt_ctail;

static inline size_t opt_centry_key_size(const opt_centry *e)
{
    return (size_t)e->ns_len + 1 + e->name_len;
}

static inline size_t opt_ctail_offset(size_t key_size)
{
    return (offsetof(opt_centry, key) + key_size + 1 + 7) & ~(size_t)7;
}

static inline opt_ctail *opt_centry_tail(const opt_centry *e)
{
    return (opt_ctail *)(void *)((char *)e +
                                 opt_ctail_offset(opt_centry_key_size(e)));
}

/* One thread's counters (or, for the last shard, every thread beyond
 * OPT_SHARDS): a cache line of its own. */
typedef struct {
    _Atomic uint64_t hits;
    _Atomic uint64_t negative_hits;
    _Atomic uint64_t misses;
    _Atomic uint64_t expirations;
} __attribute__((aligned(64))) opt_shard;

struct opt_cache {
    /* Read by every reader; written only when the table is rebuilt. */
    ck_ht_t *ht;
    int64_t ttl_ns;
    uint64_t capacity;
    bool negative;

    opt_shard shards[OPT_SHARDS + 1];
    /* Read (acquire) by misses, written (release) under the lock. */
    _Atomic uint64_t seq[OPT_GEN_STRIPES] __attribute__((aligned(64)));

    /* Under the lock. */
    procreg_ck_lock lock __attribute__((aligned(64)));
    uint64_t notified[OPT_GEN_STRIPES]; /* notifications per stripe */
    procreg_epoch_domain *epoch;
    opt_centry **ring;   /* slot -> entry, NULL when free */
    uint32_t *free_slots;
    uint32_t n_free;
    uint32_t ring_used;  /* slots ever handed out */
    uint32_t ring_len;   /* slots allocated */
    uint32_t hand;       /* the CLOCK hand */
    uint64_t n_entries;
    size_t entry_bytes;
    size_t table_bytes;  /* ck_ht allocations alive */
    size_t map_size;     /* the newest table's allocation: the current one */
    uint64_t removals;   /* since the last rebuild */
    uint64_t fills, fill_races, updates, invalidations, evictions, rebuilds;
};

/* ------------------------------------------------------------------------ */
/* Time                                                                     */

static inline int64_t opt_now_ns(void)
{
    struct timespec ts;

    /* A vDSO read of the tick clock: no system call. */
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * G_GINT64_CONSTANT(1000000000) + ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* Per-thread counter slots                                                 */

/* A thread gets a slot (0 .. OPT_SHARDS - 1) on its first lookup and gives
 * it back when it exits; the next thread continues its counts (the mutex
 * orders the two threads).  Slot s writes shard s of every cache with a
 * plain load and store.  Threads beyond OPT_SHARDS share the last shard
 * and add atomically. */
#define OPT_SLOT_NONE 0u
#define OPT_SLOT_SHARED (OPT_SHARDS + 1u)

static _Thread_local unsigned int opt_tls_slot
    __attribute__((tls_model("initial-exec")));
static pthread_mutex_t opt_slot_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int opt_slot_next;
static unsigned int opt_slot_free[OPT_SHARDS];
static unsigned int opt_slot_n_free;

static void opt_slot_release(gpointer data)
{
    unsigned int slot = GPOINTER_TO_UINT(data) - 1;

    /* Anything this thread counts later in its exit goes to the shared
     * shard: the slot may already belong to another thread. */
    opt_tls_slot = OPT_SLOT_SHARED;
    pthread_mutex_lock(&opt_slot_lock);
    opt_slot_free[opt_slot_n_free++] = slot;
    pthread_mutex_unlock(&opt_slot_lock);
}

static GPrivate opt_slot_key = G_PRIVATE_INIT(opt_slot_release);

static unsigned int opt_slot_slow(void)
{
    unsigned int slot = OPT_SHARDS;

    pthread_mutex_lock(&opt_slot_lock);
    if (opt_slot_n_free > 0)
        slot = opt_slot_free[--opt_slot_n_free];
    else if (opt_slot_next < OPT_SHARDS)
        slot = opt_slot_next++;
    pthread_mutex_unlock(&opt_slot_lock);
    if (slot < OPT_SHARDS) {
        g_private_set(&opt_slot_key, GUINT_TO_POINTER(slot + 1));
        opt_tls_slot = slot + 1;
    } else {
        opt_tls_slot = OPT_SLOT_SHARED;
    }
    return slot;
}

/* The calling thread's shard index; OPT_SHARDS is the shared one. */
static inline unsigned int opt_slot(void)
{
    unsigned int t = opt_tls_slot;

    if (G_LIKELY(t != OPT_SLOT_NONE && t != OPT_SLOT_SHARED))
        return t - 1;
    if (t == OPT_SLOT_SHARED)
        return OPT_SHARDS;
    return opt_slot_slow();
}

static inline void opt_count(_Atomic uint64_t *c, unsigned int slot)
{
    if (G_LIKELY(slot < OPT_SHARDS))
        atomic_store_explicit(c,
                              atomic_load_explicit(c, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* ck_ht glue                                                               */

/* ck_malloc has no context argument: the cache whose lock this thread
 * holds is found here (saved and restored, so caches may nest). */
static _Thread_local opt_cache *opt_cache_writer;

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

static struct ck_malloc opt_ht_allocator = {
    .malloc = opt_ht_malloc,
    .realloc = NULL, /* ck_ht never reallocates */
    .free = opt_ht_free,
};

/* The entry of @key or NULL: readers inside a read section, writers under
 * the lock. */
static inline opt_centry *opt_get(opt_cache *c, const procreg_key *key)
{
    ck_ht_t *ht = ck_pr_load_ptr(&c->ht);
    ck_ht_entry_t slot;
    ck_ht_hash_t h;
    opt_centry *e;
    bool found;

    h.value = key->hash;
    ck_ht_entry_key_set(&slot, procreg_key_bytes(key),
                        (uint16_t)procreg_key_size(key));
    /* libck compares keys with memcmp, which TSan checks before it can
     * be told (below) which entry was found. */
    /* Pairs with the release in procreg_ck_ht_rebuild(). */
    PROCREG_TSAN_ACQUIRE(ht);
    PROCREG_TSAN_IGNORE_READS_BEGIN();
    found = ck_ht_get_spmc(ht, h, &slot);
    PROCREG_TSAN_IGNORE_READS_END();
    if (!found)
        return NULL;
    e = ck_ht_entry_value(&slot);
    ck_pr_fence_load_depends();
    /* Pairs with the release in opt_insert_locked(). */
    PROCREG_TSAN_ACQUIRE(e);
    return e;
}

static opt_cache *opt_write_begin(opt_cache *c)
{
    opt_cache *previous;

    procreg_ck_lock_lock(&c->lock);
    previous = opt_cache_writer;
    opt_cache_writer = c;
    return previous;
}

static void opt_write_end(opt_cache *c, opt_cache *previous)
{
    procreg_epoch_tick(c->epoch);
    opt_cache_writer = previous;
    procreg_ck_lock_unlock(&c->lock);
}

static inline unsigned int opt_gen_stripe(const procreg_key *key)
{
    return (unsigned int)((key->hash >> 17) % OPT_GEN_STRIPES);
}

/* Under the lock: add @delta (wrapping) to the stripe's sequence word.
 * Every fill that read the word before now will be dropped. */
static void opt_seq_add(opt_cache *c, unsigned int stripe, uint64_t delta)
{
    atomic_store_explicit(&c->seq[stripe],
                          atomic_load_explicit(&c->seq[stripe],
                                               memory_order_relaxed) + delta,
                          memory_order_release);
}

/* Under the lock: may a fill that read the sequence word @read store its
 * answer, the word being @now?  Only if nothing happened to the stripe in
 * between and no write was in flight all along (invariant (2) above). */
static bool opt_fill_acceptable(uint64_t read, uint64_t now)
{
#ifdef PROCREG_INJECT_STALE_FILL
    /* Test builds only (tests/optimized/meson.build): the check before
     * writes in flight were counted, which compared the generation alone
     * and so took fills that raced a write still in flight.  It lets the
     * tests prove that they catch a stale fill. */
    return (read >> OPT_SEQ_GEN_SHIFT) == (now >> OPT_SEQ_GEN_SHIFT);
#else
    return read == now && (read & OPT_SEQ_WRITING_MASK) == 0;
#endif
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

static opt_centry *opt_centry_new(const procreg_key *key, opt_kind kind,
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

/* procreg_epoch_free_fn for retired entries (and destroy). */
static void opt_centry_free(void *p)
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

/* Drop @e from the set and the ring and retire it. */
static void opt_remove_locked(opt_cache *c, opt_centry *e)
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
    c->entry_bytes -= bytes;
    procreg_epoch_retire(c->epoch, e, opt_centry_free, bytes);
    /* Removals (evictions above all) leave tombstones that only a new
     * table clears: rebuild once they reach half the slots, as ckht does
     * (amortised O(1)). */
    size_t slots = procreg_ck_ht_slots(c->map_size);
    if (++c->removals > slots / 2 &&
        procreg_ck_ht_rebuild(&c->ht, slots, &opt_ht_allocator, c->epoch)) {
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
        opt_remove_locked(c, e);
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

/* Make @e the entry of its key, replacing (and retiring) any other.  Takes
 * @e: it is freed when it cannot be stored. */
static void opt_insert_locked(opt_cache *c, const procreg_key *key,
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
        opt_centry_free(e);
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
        opt_centry_free(e);
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
        procreg_epoch_retire(c->epoch, old, opt_centry_free, old_bytes);
    } else {
        e->ring_slot = slot;
        c->ring[slot] = e;
        c->n_entries++;
    }
    c->entry_bytes += opt_centry_size(e);
}

/* ------------------------------------------------------------------------ */
/* Public (to the decorator)                                                */

opt_cache *procreg_opt_cache_new(uint64_t capacity, uint64_t ttl_ms,
                                 bool negative)
{
    size_t size = (sizeof(opt_cache) + 63) & ~(size_t)63;
    opt_cache *c = aligned_alloc(64, size);
    opt_cache *previous;
    bool ok;
    unsigned int i;

    if (c == NULL)
        return NULL;
    memset(c, 0, size);
    c->capacity = capacity;
    c->ttl_ns = (int64_t)ttl_ms * G_GINT64_CONSTANT(1000000);
    c->negative = negative;
    for (i = 0; i < G_N_ELEMENTS(c->shards); i++) {
        atomic_init(&c->shards[i].hits, 0);
        atomic_init(&c->shards[i].negative_hits, 0);
        atomic_init(&c->shards[i].misses, 0);
        atomic_init(&c->shards[i].expirations, 0);
    }
    for (i = 0; i < OPT_GEN_STRIPES; i++)
        atomic_init(&c->seq[i], 0);
    c->epoch = procreg_epoch_domain_new();
    if (c->epoch == NULL) {
        free(c);
        return NULL;
    }
    procreg_ck_lock_init(&c->lock);
    previous = opt_write_begin(c);
    /* Without CK_HT_WORKLOAD_DELETE: its per-slot probe bounds cost one
     * more cache miss per lookup; the rebuilds in opt_remove_locked() keep
     * probes short instead. */
    c->ht = malloc(sizeof(*c->ht));
    ok = c->ht != NULL &&
         ck_ht_init(c->ht, CK_HT_MODE_BYTESTRING, procreg_ck_ht_hash,
                    &opt_ht_allocator, MIN(capacity * 2, OPT_HT_INITIAL), 0);
    opt_write_end(c, previous);
    if (!ok) {
        free(c->ht);
        procreg_epoch_domain_free(c->epoch);
        procreg_ck_lock_clear(&c->lock);
        free(c);
        return NULL;
    }
    return c;
}

void procreg_opt_cache_free(opt_cache *c)
{
    opt_cache *previous;
    uint32_t i;

    if (c == NULL)
        return;
    /* No reader is left (the backend is being destroyed), but retired
     * entries may still wait for readers of other instances' sections. */
    previous = opt_write_begin(c);
    for (i = 0; i < c->ring_used; i++)
        if (c->ring[i] != NULL)
            opt_centry_free(c->ring[i]);
    ck_ht_destroy(c->ht);
    free(c->ht);
    opt_write_end(c, previous);
    procreg_epoch_domain_free(c->epoch);
    procreg_ck_lock_clear(&c->lock);
    free(c->ring);
    free(c->free_slots);
    free(c);
}

opt_cache_result procreg_opt_cache_lookup(opt_cache *c, const procreg_key *key,
                                          procreg_owner *out)
{
    unsigned int slot = opt_slot();
    opt_shard *sh = &c->shards[slot];
    int64_t now = opt_now_ns();
    opt_cache_result r = OPT_CACHE_MISS;
    bool expired = false;
    ck_epoch_record_t *record = procreg_epoch_read_begin();
    opt_centry *e;

    if (G_UNLIKELY(record == NULL)) {
        opt_count(&sh->misses, slot);
        return OPT_CACHE_MISS;
    }
    e = opt_get(c, key);
    if (e != NULL) {
        if (G_LIKELY(now < e->expires_ns)) {
            if (!atomic_load_explicit(&e->referenced, memory_order_relaxed))
                atomic_store_explicit(&e->referenced, 1, memory_order_relaxed);
            if (e->kind == OPT_KIND_NEGATIVE) {
                r = OPT_CACHE_ABSENT;
            } else {
                out->pid = e->pid;
                out->start_time = e->start_time;
                r = OPT_CACHE_FOUND;
            }
        } else {
            expired = true;
        }
    }
    procreg_epoch_read_end(record);
    if (r == OPT_CACHE_FOUND) {
        opt_count(&sh->hits, slot);
    } else if (r == OPT_CACHE_ABSENT) {
        opt_count(&sh->hits, slot);
        opt_count(&sh->negative_hits, slot);
    } else {
        opt_count(&sh->misses, slot);
        if (expired)
            opt_count(&sh->expirations, slot);
    }
    return r;
}

opt_cache_result procreg_opt_cache_lookup_entry(opt_cache *c,
                                                const procreg_key *key,
                                                procreg_entry *out)
{
    unsigned int slot = opt_slot();
    opt_shard *sh = &c->shards[slot];
    int64_t now = opt_now_ns();
    opt_cache_result r = OPT_CACHE_MISS;
    bool expired = false;
    ck_epoch_record_t *record = procreg_epoch_read_begin();
    opt_centry *e;

    if (G_UNLIKELY(record == NULL)) {
        opt_count(&sh->misses, slot);
        return OPT_CACHE_MISS;
    }
    e = opt_get(c, key);
    if (e != NULL && e->kind != OPT_KIND_OWNER) {
        if (now < e->expires_ns) {
            if (!atomic_load_explicit(&e->referenced, memory_order_relaxed))
                atomic_store_explicit(&e->referenced, 1, memory_order_relaxed);
            if (e->kind == OPT_KIND_NEGATIVE) {
                r = OPT_CACHE_ABSENT;
            } else {
                const opt_ctail *t = opt_centry_tail(e);

                out->owner.pid = e->pid;
                out->owner.start_time = e->start_time;
                /* The reference is taken inside the section: it outlives
                 * the entry's retirement. */
                out->metadata = t->metadata ? g_variant_ref(t->metadata)
                                            : NULL;
                out->registered_at = t->registered_at;
                out->revision = t->revision;
                r = OPT_CACHE_FOUND;
            }
        } else {
            expired = true;
        }
    } else if (e != NULL && now >= e->expires_ns) {
        expired = true;
    }
    procreg_epoch_read_end(record);
    if (r != OPT_CACHE_MISS) {
        opt_count(&sh->hits, slot);
        if (r == OPT_CACHE_ABSENT)
            opt_count(&sh->negative_hits, slot);
    } else {
        opt_count(&sh->misses, slot);
        if (expired)
            opt_count(&sh->expirations, slot);
    }
    return r;
}

uint64_t procreg_opt_cache_sequence(opt_cache *c, const procreg_key *key)
{
    /* Acquire: the inner backend is asked after this read. */
    return atomic_load_explicit(&c->seq[opt_gen_stripe(key)],
                                memory_order_acquire);
}

void procreg_opt_cache_fill(opt_cache *c, const procreg_key *key,
                            uint64_t sequence, opt_kind kind,
                            const procreg_entry *entry)
{
    unsigned int stripe = opt_gen_stripe(key);
    opt_cache *previous;
    opt_centry *e;

    if (kind == OPT_KIND_NEGATIVE && !c->negative)
        return;
    e = opt_centry_new(key, kind, entry, opt_now_ns() + c->ttl_ns);
    if (e == NULL)
        return; /* the cache is an optimisation: skip it */
#ifdef PROCREG_TEST_SLOW_FILL
    /* Test builds only (tests/history): a fill that always comes late, as
     * on a loaded machine, so a write lands between its read of the inner
     * backend and its store in most runs. */
    g_usleep(500);
#endif
    previous = opt_write_begin(c);
    if (!opt_fill_acceptable(sequence,
                             atomic_load_explicit(&c->seq[stripe],
                                                  memory_order_relaxed))) {
        c->fill_races++;
        opt_centry_free(e);
    } else {
        opt_insert_locked(c, key, e);
        c->fills++;
    }
    opt_write_end(c, previous);
}

/* Under the lock: drop @key's entry, if any. */
static void opt_drop_key_locked(opt_cache *c, const procreg_key *key)
{
    opt_centry *current = opt_get(c, key);

    if (current != NULL) {
        opt_remove_locked(c, current);
        c->invalidations++;
    }
}

void procreg_opt_cache_write_begin(opt_cache *c, const procreg_key *key,
                                   opt_cache_write *w)
{
    opt_cache *previous = opt_write_begin(c);

    w->stripe = opt_gen_stripe(key);
    w->notified = c->notified[w->stripe];
    opt_drop_key_locked(c, key);
    opt_seq_add(c, w->stripe, 1);
    opt_write_end(c, previous);
}

void procreg_opt_cache_write_end(opt_cache *c, const procreg_key *key,
                                 const opt_cache_write *w, bool known,
                                 const procreg_entry *now)
{
    int64_t expires = opt_now_ns() + c->ttl_ns;
    opt_centry *e = NULL;
    opt_cache *previous;

    if (known && now != NULL)
        e = opt_centry_new(key, OPT_KIND_FULL, now, expires);
    else if (known && c->negative)
        e = opt_centry_new(key, OPT_KIND_NEGATIVE, NULL, expires);
    previous = opt_write_begin(c);
    /* The key has no entry (invariant (1)): store the outcome, unless a
     * notification since write_begin may have brought a newer change. */
    if (e != NULL && c->notified[w->stripe] == w->notified) {
        opt_insert_locked(c, key, e);
        c->updates++;
    } else if (e != NULL) {
        opt_centry_free(e);
    }
    opt_seq_add(c, w->stripe, OPT_SEQ_GEN - 1);
    opt_write_end(c, previous);
}

/* Under the lock: drop every entry of @ns (NULL: every entry). */
static void opt_drop_matching_locked(opt_cache *c, const char *ns)
{
    uint32_t slot;

    for (slot = 0; slot < c->ring_used; slot++) {
        opt_centry *e = c->ring[slot];

        if (e != NULL && (ns == NULL || strcmp(e->key, ns) == 0)) {
            opt_remove_locked(c, e);
            c->invalidations++;
        }
    }
}

void procreg_opt_cache_drop_begin(opt_cache *c, const char *ns)
{
    opt_cache *previous = opt_write_begin(c);
    unsigned int i;

    for (i = 0; i < OPT_GEN_STRIPES; i++)
        opt_seq_add(c, i, 1);
    opt_drop_matching_locked(c, ns);
    opt_write_end(c, previous);
}

void procreg_opt_cache_drop_end(opt_cache *c)
{
    opt_cache *previous = opt_write_begin(c);
    unsigned int i;

    for (i = 0; i < OPT_GEN_STRIPES; i++)
        opt_seq_add(c, i, OPT_SEQ_GEN - 1);
    opt_write_end(c, previous);
}

void procreg_opt_cache_invalidate(opt_cache *c, const procreg_key *key)
{
    opt_cache *previous = opt_write_begin(c);
    unsigned int stripe = opt_gen_stripe(key);

    c->notified[stripe]++;
    opt_seq_add(c, stripe, OPT_SEQ_GEN);
    opt_drop_key_locked(c, key);
    opt_write_end(c, previous);
}

void procreg_opt_cache_invalidate_all(opt_cache *c)
{
    opt_cache *previous = opt_write_begin(c);
    unsigned int i;

    for (i = 0; i < OPT_GEN_STRIPES; i++) {
        c->notified[i]++;
        opt_seq_add(c, i, OPT_SEQ_GEN);
    }
    opt_drop_matching_locked(c, NULL);
    opt_write_end(c, previous);
}

void procreg_opt_cache_get_stats(opt_cache *c, opt_cache_stats *out)
{
    procreg_epoch_stats epoch;
    opt_cache *previous;
    unsigned int i;

    memset(out, 0, sizeof(*out));
    for (i = 0; i < G_N_ELEMENTS(c->shards); i++) {
        opt_shard *sh = &c->shards[i];

        out->hits += atomic_load_explicit(&sh->hits, memory_order_relaxed);
        out->negative_hits +=
            atomic_load_explicit(&sh->negative_hits, memory_order_relaxed);
        out->misses += atomic_load_explicit(&sh->misses, memory_order_relaxed);
        out->expirations +=
            atomic_load_explicit(&sh->expirations, memory_order_relaxed);
    }
    previous = opt_write_begin(c);
    out->fills = c->fills;
    out->fill_races = c->fill_races;
    out->updates = c->updates;
    out->invalidations = c->invalidations;
    out->evictions = c->evictions;
    out->rebuilds = c->rebuilds;
    out->entries = c->n_entries;
    procreg_epoch_get_stats(c->epoch, &epoch);
    out->retired_pending = epoch.pending;
    out->bytes = sizeof(*c) + c->entry_bytes + c->table_bytes +
                 (size_t)c->ring_len * (sizeof(*c->ring) +
                                        sizeof(*c->free_slots)) +
                 epoch.pending_bytes + epoch.overhead_bytes;
    opt_write_end(c, previous);
    out->capacity = c->capacity;
    out->ttl_ms = (uint64_t)(c->ttl_ns / G_GINT64_CONSTANT(1000000));
    out->negative = c->negative;
}
