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
#include "cache-internal.h"

#include <pthread.h>
#include <time.h>

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
    atomic_init(&c->full, false);
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
    procreg_mutex_init(&c->lock);
    previous = procreg_opt_write_begin(c);
    /* Without CK_HT_WORKLOAD_DELETE: its per-slot probe bounds cost one
     * more cache miss per lookup; the rebuilds in
     * procreg_opt_remove_locked() keep probes short instead. */
    c->ht = malloc(sizeof(*c->ht));
    ok = c->ht != NULL &&
         ck_ht_init(c->ht, CK_HT_MODE_BYTESTRING, procreg_ck_ht_hash,
                    &procreg_opt_ht_allocator,
                    MIN(capacity * 2, OPT_HT_INITIAL), 0);
    procreg_opt_write_end(c, previous);
    if (!ok) {
        free(c->ht);
        procreg_epoch_domain_free(c->epoch);
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
    previous = procreg_opt_write_begin(c);
    for (i = 0; i < c->ring_used; i++)
        if (c->ring[i] != NULL)
            procreg_opt_centry_free(c->ring[i]);
    ck_ht_destroy(c->ht);
    free(c->ht);
    procreg_opt_write_end(c, previous);
    procreg_epoch_domain_free(c->epoch);
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

/* Misses per thread between two fills while the cache is full. */
#define OPT_FULL_ADMIT 16

/* Counts this thread's misses that met a full cache. */
static _Thread_local uint32_t opt_full_misses
    __attribute__((tls_model("initial-exec")));

void procreg_opt_cache_fill(opt_cache *c, const procreg_key *key,
                            uint64_t sequence, opt_kind kind,
                            const procreg_entry *entry)
{
    unsigned int stripe = opt_gen_stripe(key);
    opt_cache *previous;
    opt_centry *e;

    if (kind == OPT_KIND_NEGATIVE && !c->negative)
        return;
    /* Admission: while the cache is full, a fill evicts an entry that is
     * as likely to be read again as the new one when the keys read
     * outnumber the slots, and it costs an allocation, the cache lock
     * and a CLOCK sweep; done on every miss, that made a full cache
     * slower than no cache.  So a full cache takes one miss in
     * OPT_FULL_ADMIT (per thread, no shared counter): a key that keeps
     * being read still gets in after a few misses, and a miss costs the
     * probe, the inner lookup and a sixteenth of a fill.  Which misses
     * fill is all this changes: a fill that is made follows the protocol
     * above, and one that is skipped leaves the key absent, which is
     * always allowed. */
    if (atomic_load_explicit(&c->full, memory_order_relaxed) &&
        ++opt_full_misses % OPT_FULL_ADMIT != 0)
        return;
    e = procreg_opt_centry_new(key, kind, entry, opt_now_ns() + c->ttl_ns);
    if (e == NULL)
        return; /* the cache is an optimisation: skip it */
#ifdef PROCREG_TEST_SLOW_FILL
    /* Test builds only (tests/history): a fill that always comes late, as
     * on a loaded machine, so a write lands between its read of the inner
     * backend and its store in most runs. */
    g_usleep(500);
#endif
    previous = procreg_opt_write_begin(c);
    if (!opt_fill_acceptable(sequence,
                             atomic_load_explicit(&c->seq[stripe],
                                                  memory_order_relaxed))) {
        c->fill_races++;
        procreg_opt_centry_free(e);
    } else {
        procreg_opt_insert_locked(c, key, e);
        c->fills++;
    }
    procreg_opt_write_end(c, previous);
}

/* Under the lock: drop @key's entry, if any. */
static void opt_drop_key_locked(opt_cache *c, const procreg_key *key)
{
    opt_centry *current = opt_get(c, key);

    if (current != NULL) {
        procreg_opt_remove_locked(c, current);
        c->invalidations++;
    }
}

void procreg_opt_cache_write_begin(opt_cache *c, const procreg_key *key,
                                   opt_cache_write *w)
{
    opt_cache *previous = procreg_opt_write_begin(c);

    w->stripe = opt_gen_stripe(key);
    w->notified = c->notified[w->stripe];
    opt_drop_key_locked(c, key);
    opt_seq_add(c, w->stripe, 1);
    procreg_opt_write_end(c, previous);
}

void procreg_opt_cache_write_end(opt_cache *c, const procreg_key *key,
                                 const opt_cache_write *w, bool known,
                                 const procreg_entry *now)
{
    int64_t expires = opt_now_ns() + c->ttl_ns;
    opt_centry *e = NULL;
    opt_cache *previous;
    /* A full cache takes no write's outcome: storing it would evict an
     * entry readers may be using, and a burst of registrations would turn
     * the whole cache over, an allocation and an eviction per write, whose
     * holes between the inner backend's longer-lived entries the heap
     * could not reuse (1M registrations through the default cache of
     * 100 000: 332 B of RSS per entry, the inner ckht alone 147 B).  A key
     * left absent is always safe (invariant (1)); a later miss may fill
     * it. */
    bool room = !atomic_load_explicit(&c->full, memory_order_relaxed);

    if (known && room && now != NULL)
        e = procreg_opt_centry_new(key, OPT_KIND_FULL, now, expires);
    else if (known && room && c->negative)
        e = procreg_opt_centry_new(key, OPT_KIND_NEGATIVE, NULL, expires);
    previous = procreg_opt_write_begin(c);
    /* The key has no entry (invariant (1)): store the outcome, unless a
     * notification since write_begin may have brought a newer change. */
    if (e != NULL && c->notified[w->stripe] == w->notified) {
        procreg_opt_insert_locked(c, key, e);
        c->updates++;
    } else if (e != NULL) {
        procreg_opt_centry_free(e);
    }
    opt_seq_add(c, w->stripe, OPT_SEQ_GEN - 1);
    procreg_opt_write_end(c, previous);
}

/* Under the lock: drop every entry of @ns (NULL: every entry). */
static void opt_drop_matching_locked(opt_cache *c, const char *ns)
{
    uint32_t slot;

    for (slot = 0; slot < c->ring_used; slot++) {
        opt_centry *e = c->ring[slot];

        if (e != NULL && (ns == NULL || strcmp(e->key, ns) == 0)) {
            procreg_opt_remove_locked(c, e);
            c->invalidations++;
        }
    }
}

void procreg_opt_cache_drop_begin(opt_cache *c, const char *ns)
{
    opt_cache *previous = procreg_opt_write_begin(c);
    unsigned int i;

    for (i = 0; i < OPT_GEN_STRIPES; i++)
        opt_seq_add(c, i, 1);
    opt_drop_matching_locked(c, ns);
    procreg_opt_write_end(c, previous);
}

void procreg_opt_cache_drop_end(opt_cache *c)
{
    opt_cache *previous = procreg_opt_write_begin(c);
    unsigned int i;

    for (i = 0; i < OPT_GEN_STRIPES; i++)
        opt_seq_add(c, i, OPT_SEQ_GEN - 1);
    procreg_opt_write_end(c, previous);
}

void procreg_opt_cache_invalidate(opt_cache *c, const procreg_key *key)
{
    opt_cache *previous = procreg_opt_write_begin(c);
    unsigned int stripe = opt_gen_stripe(key);

    c->notified[stripe]++;
    opt_seq_add(c, stripe, OPT_SEQ_GEN);
    opt_drop_key_locked(c, key);
    procreg_opt_write_end(c, previous);
}

void procreg_opt_cache_invalidate_all(opt_cache *c)
{
    opt_cache *previous = procreg_opt_write_begin(c);
    unsigned int i;

    for (i = 0; i < OPT_GEN_STRIPES; i++) {
        c->notified[i]++;
        opt_seq_add(c, i, OPT_SEQ_GEN);
    }
    opt_drop_matching_locked(c, NULL);
    procreg_opt_write_end(c, previous);
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
    previous = procreg_opt_write_begin(c);
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
    procreg_opt_write_end(c, previous);
    out->capacity = c->capacity;
    out->ttl_ms = (uint64_t)(c->ttl_ns / G_GINT64_CONSTANT(1000000));
    out->negative = c->negative;
}
