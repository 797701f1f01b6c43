/*
 * The optimized decorator's cache, shared by its two rooms: cache.c (the
 * readers, the coherence of fills with writes, the API the decorator
 * calls) and cache-store.c (entries, the ck_ht table and its allocator,
 * the CLOCK ring, inserting, removing and evicting under the lock).  The
 * design and its invariants are in cache.c's header comment.
 */
#ifndef PROCREG_OPTIMIZED_CACHE_INTERNAL_H
#define PROCREG_OPTIMIZED_CACHE_INTERNAL_H

#include "optimized.h"

#include "../ck-common/ck-common.h"

#include <ck_ht.h>
#include <stdlib.h>
#include <string.h>

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
    /* Set under the lock once the cache holds `capacity` entries, cleared
     * once removals leave it an eighth empty; read relaxed by misses. */
    atomic_bool full;

    opt_shard shards[OPT_SHARDS + 1];
    /* Read (acquire) by misses, written (release) under the lock. */
    _Atomic uint64_t seq[OPT_GEN_STRIPES] __attribute__((aligned(64)));

    /* Under the lock. */
    procreg_mutex lock __attribute__((aligned(64)));
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
    /* Pairs with the release in procreg_opt_insert_locked(). */
    PROCREG_TSAN_ACQUIRE(e);
    return e;
}

/* ---- cache-store.c: everything below runs under the cache lock ---- */

/* Take the lock, and make @c the cache whose ck_ht allocations this thread
 * makes; returns the previous one, for opt_write_end(). */
opt_cache *procreg_opt_write_begin(opt_cache *c);
void procreg_opt_write_end(opt_cache *c, opt_cache *previous);
/* ck_ht's allocator for the cache being written (table rebuilds). */
extern struct ck_malloc procreg_opt_ht_allocator;
opt_centry *procreg_opt_centry_new(const procreg_key *key, opt_kind kind,
                                   const procreg_entry *src, int64_t expires);
/* procreg_epoch_free_fn for retired entries (and destroy). */
void procreg_opt_centry_free(void *p);
/* Drop @e from the set and the ring and retire it. */
void procreg_opt_remove_locked(opt_cache *c, opt_centry *e);
/* Make @e the entry of its key, replacing (and retiring) any other;
 * evicts one when full.  Takes @e: it is freed when it cannot be
 * stored. */
void procreg_opt_insert_locked(opt_cache *c, const procreg_key *key,
                               opt_centry *e);

#endif
