/*
 * The optimized decorator, internal interfaces between its files:
 *
 *   cache.c      the TTL lookup cache (ck_ht + ck_epoch through ck-common,
 *                CLOCK eviction, per-thread hit/miss counters);
 *   index.c      the metadata index ((ns, meta key, value) -> keys);
 *   optimized.c  the backend: options, forwarding, write ordering;
 *   groups.c     its group slots: forwarding, and the member index.
 *
 * Everything here is hidden inside the library (it is built with
 * -fvisibility=hidden); only procreg_optimized_backend_ops is referenced
 * from outside this folder.
 */
#ifndef PROCREG_OPTIMIZED_H
#define PROCREG_OPTIMIZED_H

#include <procreg/backend.h>

#include "../ck-common/ck-common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

G_BEGIN_DECLS

/* Room for the largest key on the stack (as the core's procreg_stack_key). */
typedef union {
    procreg_key key;
    char bytes[sizeof(procreg_key) + 2 * (PROCREG_NAME_MAX + 1)];
} opt_stack_key;

/* Fill @buf with the key (ns, name) and its hash.  false when a part is
 * empty or longer than PROCREG_NAME_MAX (no valid key can be made). */
bool procreg_opt_key_make(opt_stack_key *buf, const char *ns,
                          const char *name);

/* ------------------------------------------------------------------------ */
/* Cache                                                                    */

typedef struct opt_cache opt_cache;

typedef enum {
    OPT_CACHE_MISS = 0,   /* nothing usable cached: ask the inner backend */
    OPT_CACHE_FOUND = 1,  /* served: the key is registered */
    OPT_CACHE_ABSENT = 2, /* served from a negative entry: not registered */
} opt_cache_result;

/* What a cache entry holds. */
typedef enum {
    OPT_KIND_NEGATIVE = 0, /* the key was not registered */
    OPT_KIND_OWNER = 1,    /* owner only (filled by lookup) */
    OPT_KIND_FULL = 2,     /* the whole entry (lookup_entry, writes) */
} opt_kind;

/* Figures of one cache; counters are totals since it was made. */
typedef struct {
    uint64_t hits;          /* lookups answered from the cache */
    uint64_t negative_hits; /* of which from a negative entry */
    uint64_t misses;        /* lookups that went to the inner backend */
    uint64_t expirations;   /* of which found an expired entry */
    uint64_t fills;         /* entries stored after a miss */
    uint64_t fill_races;    /* fills dropped: a write or notification raced */
    uint64_t updates;       /* entries stored by writes through the cache */
    uint64_t invalidations; /* entries dropped by writes or notifications */
    uint64_t evictions;     /* entries dropped to make room (CLOCK) */
    uint64_t rebuilds;      /* tables rebuilt without their tombstones */
    uint64_t entries;       /* entries held now */
    uint64_t capacity;
    uint64_t ttl_ms;
    uint64_t bytes;         /* entries, table and ring */
    uint64_t retired_pending; /* retired, waiting for readers to move on */
    bool negative;          /* negative caching on */
} opt_cache_stats;

/* A cache of at most @capacity entries that live @ttl_ms.  NULL when out
 * of memory. */
opt_cache *procreg_opt_cache_new(uint64_t capacity, uint64_t ttl_ms,
                                 bool negative);
void procreg_opt_cache_free(opt_cache *c);

/* The hot path: no lock, no allocation, no atomic read-modify-write on
 * shared memory.  OPT_CACHE_FOUND fills @out. */
opt_cache_result procreg_opt_cache_lookup(opt_cache *c, const procreg_key *key,
                                          procreg_owner *out);
/* The same for a whole entry: only FULL (or negative) entries answer.
 * OPT_CACHE_FOUND fills @out (metadata referenced, ns and name NULL). */
opt_cache_result procreg_opt_cache_lookup_entry(opt_cache *c,
                                                const procreg_key *key,
                                                procreg_entry *out);

/* Before asking the inner backend after a miss: the sequence word of
 * @key's stripe, to hand to procreg_opt_cache_fill() (cache.c explains the
 * protocol). */
uint64_t procreg_opt_cache_sequence(opt_cache *c, const procreg_key *key);

/* Store what the inner backend answered for @key, unless a write of the
 * key's stripe was in flight at any time since @sequence was read, or one
 * began or ended, or a notification came (then the answer may be older
 * than what another thread already saw, and is dropped).  @entry: the
 * entry (OPT_KIND_OWNER uses only its owner) or NULL for
 * OPT_KIND_NEGATIVE, which is stored only when negative caching is on. */
void procreg_opt_cache_fill(opt_cache *c, const procreg_key *key,
                            uint64_t sequence, opt_kind kind,
                            const procreg_entry *entry);

/* A write through the decorator, from before its inner call to after. */
typedef struct {
    unsigned int stripe;
    uint64_t notified; /* the stripe's notifications at write_begin */
} opt_cache_write;

/* Before a write of @key reaches the inner backend: drop the key's entry
 * and hold back fills of its stripe until procreg_opt_cache_write_end(),
 * which must follow on every path.  Writes of one key must not overlap
 * (optimized.c holds the key's write stripe from begin to end). */
void procreg_opt_cache_write_begin(opt_cache *c, const procreg_key *key,
                                   opt_cache_write *w);
/* After the inner call of @w: @known, the key now is @now (FULL; NULL: not
 * registered), which the cache answers at once; not @known (a conflict
 * or a failure, which may or may not have reached the inner backend), the
 * key stays uncached. */
void procreg_opt_cache_write_end(opt_cache *c, const procreg_key *key,
                                 const opt_cache_write *w, bool known,
                                 const procreg_entry *now);
/* The same around a drop of namespace @ns: every stripe is held back, and
 * every entry of @ns dropped.  The caller excludes every other write. */
void procreg_opt_cache_drop_begin(opt_cache *c, const char *ns);
void procreg_opt_cache_drop_end(opt_cache *c);

/* A notification: @key changed elsewhere; forget it. */
void procreg_opt_cache_invalidate(opt_cache *c, const procreg_key *key);
/* A notification of an unknown change: forget everything. */
void procreg_opt_cache_invalidate_all(opt_cache *c);

void procreg_opt_cache_get_stats(opt_cache *c, opt_cache_stats *out);

/* ------------------------------------------------------------------------ */
/* Metadata index                                                           */

typedef struct opt_index opt_index;

typedef struct {
    uint64_t entries;  /* keys with at least one indexed value */
    uint64_t postings; /* (key, meta key, value) triples */
    uint64_t values;   /* distinct (ns, meta key, value) */
    uint64_t bytes;    /* approximate memory */
} opt_index_stats;

opt_index *procreg_opt_index_new(void);
void procreg_opt_index_free(opt_index *ix);

/* Index @key with @metadata (a{sv} or NULL), replacing what it had.  Cost:
 * the old and the new metadata of this key, nothing else. */
void procreg_opt_index_set(opt_index *ix, const procreg_key *key,
                           GVariant *metadata);
/* Add @key to the postings of @metadata (a{sv} or NULL) and keep the
 * ones it is in: the union, for a write in flight whose outcome is not
 * known yet.  Cost: the key's old and new metadata. */
void procreg_opt_index_add(opt_index *ix, const procreg_key *key,
                           GVariant *metadata);
/* Keep only the postings of the metadata last added for @key: what
 * procreg_opt_index_set() with that metadata gives, without reading the
 * metadata again.  Cost: the postings dropped. */
void procreg_opt_index_settle(opt_index *ix, const procreg_key *key);
/* Forget @key.  Cost: its metadata. */
void procreg_opt_index_remove(opt_index *ix, const procreg_key *key);
/* Forget everything. */
void procreg_opt_index_clear(opt_index *ix);

/* The keys of @ns (NULL: every namespace) indexed with @meta_key equal to
 * @value (procreg_metadata_value_equal()): a new array of g_malloc'ed
 * procreg_key copies (refcount 0).  Cost: the matches (and, for NULL @ns,
 * one probe per namespace). */
GPtrArray *procreg_opt_index_find(opt_index *ix, const char *ns,
                                  const char *meta_key, GVariant *value);

void procreg_opt_index_get_stats(opt_index *ix, opt_index_stats *out);

/* ------------------------------------------------------------------------ */
/* The backend (optimized.c) and its groups (groups.c)                      */

#define OPT_WRITE_STRIPES 64
/* In opt_state.member_joins: a join failed, so its member may be in the
 * inner backend and not in the member index. */
#define OPT_MEMBERS_STALE (UINT64_C(1) << 63)

typedef struct {
    procreg_backend *inner;
    procreg_backend_host *child;
    const procreg_backend_ops *inner_ops;
    opt_cache *cache;        /* NULL: caching is off */
    opt_index *index;        /* NULL: finds go to the inner backend */
    opt_index *member_index; /* group members' metadata, with `index` */
    const char *index_state; /* for health and stats */
    /* Notifications from the inner backend: changes made elsewhere. */
    _Atomic uint64_t notifications;
    /* The notification count the index reflects. */
    _Atomic uint64_t index_synced;
    _Atomic uint64_t finds_indexed;
    _Atomic uint64_t finds_forwarded;
    _Atomic uint64_t index_rebuilds;
    /* With the member index: the group joins in flight (low bits) and
     * OPT_MEMBERS_STALE; group_find reads the member index only while this
     * is 0 (the invariant is in groups.c, above procreg_opt_group_join()).
     * Written by every join: 72 bytes past `cache`, never on the cache
     * line a lookup hit reads. */
    _Atomic uint64_t member_joins;
    /* Writes of one key hold `writes` shared and the key's stripe; a
     * namespace drop and an index rebuild hold `writes` exclusive.  (One
     * rwlock rather than every stripe: ThreadSanitizer tracks at most 64
     * locks held by one thread.) */
    pthread_rwlock_t writes;
    procreg_mutex stripes[OPT_WRITE_STRIPES];
} opt_state;

/* Order the writes of @key (its stripe, `writes` shared): returns the
 * stripe to pass to procreg_opt_stripe_unlock(). */
procreg_mutex *procreg_opt_stripe_lock(opt_state *s, const procreg_key *key);
void procreg_opt_stripe_unlock(opt_state *s, procreg_mutex *stripe);
/* Bring the indexes up to date with what the inner backend reported. */
int procreg_opt_index_sync(opt_state *s, GError **error);
/* Rebuild the member index from the inner backend (`writes` exclusive). */
int procreg_opt_groups_reindex(opt_state *s, GError **error);

int procreg_opt_group_join(void *state, const procreg_key *key,
                           const procreg_record *record,
                           procreg_member *joined, GError **error);
int procreg_opt_group_leave(void *state, const procreg_key *key,
                            uint64_t member_id, const procreg_owner *owner,
                            procreg_event_reason reason, GArray *removed,
                            GError **error);
int procreg_opt_group_members(void *state, const procreg_key *key,
                              GArray *out, GError **error);
int procreg_opt_group_list_all(void *state, const char *ns, GArray *out,
                               GError **error);
int procreg_opt_group_count(void *state, const procreg_key *key, size_t *out,
                            GError **error);
int procreg_opt_group_list(void *state, const char *ns, GArray *out,
                           GError **error);
int procreg_opt_group_dispatch(void *state, const procreg_key *key,
                               procreg_member_fn fn, gpointer user_data,
                               size_t *visited, GError **error);
int procreg_opt_group_pick(void *state, const procreg_key *key,
                           bool round_robin, uint64_t arg,
                           procreg_member *out, GError **error);
int procreg_opt_group_find(void *state, const char *ns, const char *group,
                           const char *meta_key, GVariant *value, GArray *out,
                           GError **error);
int procreg_opt_group_member(void *state, const procreg_key *key,
                             uint64_t member_id, procreg_member *out,
                             GError **error);

G_END_DECLS

#endif /* PROCREG_OPTIMIZED_H */
