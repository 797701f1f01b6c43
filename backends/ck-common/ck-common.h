/*
 * Lock-free helpers shared by the Concurrency Kit backends (ckht, and the
 * optimized decorator): safe memory reclamation with ck_epoch, per-thread
 * reader records, and the writer lock.  Hidden: compiled into the library
 * through backend_sources, never installed or exported.
 *
 * The model (one writer, many readers, after ck's SPMC contract):
 *
 *  - Readers bracket every access to shared memory with
 *    procreg_epoch_read_begin() / procreg_epoch_read_end().  The record is
 *    the calling thread's own (created on the thread's first use, handed
 *    back to the epoch for recycling when the thread exits), so a read
 *    section does no atomic read-modify-write on a shared cache line.
 *    Sections nest (a decorator over a ck backend may hold one while the
 *    inner backend opens its own).
 *
 *  - Writers hold a procreg_mutex and own one procreg_epoch_domain each.
 *    Memory that readers may still see is never freed directly: it is
 *    procreg_epoch_retire()d and freed once every read section that could
 *    have seen it has ended.  All domain calls need the writer lock.
 *
 *  - One process-wide ck_epoch serves every domain and every reader, so a
 *    thread needs a single record however many registries it reads.
 *
 * Blocking calls (procreg_epoch_barrier(), and procreg_epoch_retire() when
 * it runs out of memory) wait for all readers: never call them from inside
 * a read section, or they wait for themselves.
 *
 * ThreadSanitizer: ck's atomics are inline assembly and libck is not
 * instrumented, so TSan sees neither the ordering ck_pr provides nor the
 * grace periods of ck_epoch.  The PROCREG_TSAN_* annotations below tell
 * TSan about exactly the happens-before edges the code relies on:
 * publication of an object (release before the ck store, acquire after
 * the ck load), the end of read sections before a reclamation, and the
 * hand-over of recycled epoch records.  (The writer lock is a pthread
 * mutex, which TSan models itself.)  They compile to nothing otherwise.
 */
#ifndef PROCREG_CK_COMMON_H
#define PROCREG_CK_COMMON_H

#include <ck_epoch.h>
#include <ck_ht.h>
#include <ck_pr.h>
#include <glib.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#include <procreg/backend.h>

#include "../../core/mutex.h"

G_BEGIN_DECLS

/* ------------------------------------------------------------------------ */
/* ThreadSanitizer annotations                                              */

#if defined(__SANITIZE_THREAD__)
#define PROCREG_CK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PROCREG_CK_TSAN 1
#endif
#endif

#ifdef PROCREG_CK_TSAN
#include <sanitizer/tsan_interface.h>
/* @p was made visible to other threads by a ck store that follows. */
#define PROCREG_TSAN_RELEASE(p) __tsan_release((void *)(p))
/* @p was obtained from a ck load: what was released on it is visible. */
#define PROCREG_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
/* libck is not instrumented, but the memcmp it calls to compare keys is
 * intercepted: TSan checks those reads before the caller can tell it (with
 * PROCREG_TSAN_ACQUIRE) which entry ck found, and reports the writer's
 * memcpy of the key as a race.  Bracket ck lookups with these. */
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#define PROCREG_TSAN_IGNORE_READS_BEGIN() \
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define PROCREG_TSAN_IGNORE_READS_END() \
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define PROCREG_TSAN_RELEASE(p) ((void)(p))
#define PROCREG_TSAN_ACQUIRE(p) ((void)(p))
#define PROCREG_TSAN_IGNORE_READS_BEGIN() ((void)0)
#define PROCREG_TSAN_IGNORE_READS_END() ((void)0)
#endif

/* ------------------------------------------------------------------------ */
/* Writer lock                                                              */

/* Writers hold a procreg_mutex (core/mutex.h): critical sections here
 * are short, a probe and a publish. */

/* ------------------------------------------------------------------------ */
/* Readers                                                                  */

/* The calling thread's record, NULL until its first read section (or
 * after the thread released it on exit).  Use the functions below. */
extern _Thread_local ck_epoch_record_t *procreg_epoch_tls_record
    __attribute__((tls_model("initial-exec")));

/* Address TSan uses to order the end of read sections before reclamation. */
extern char procreg_epoch_tsan_sync;

/* Slow path of procreg_epoch_read_begin(): recycle or make the thread's
 * record.  NULL only when out of memory. */
ck_epoch_record_t *procreg_epoch_reader_slow(void);

/**
 * Enter a read section on the calling thread's record.
 * @return the record to pass to procreg_epoch_read_end(), or NULL when the
 *         thread has no record and none could be allocated (no section
 *         was entered: report the failure, do not touch shared memory).
 */
static inline ck_epoch_record_t *procreg_epoch_read_begin(void)
{
    ck_epoch_record_t *record = procreg_epoch_tls_record;

    if (G_UNLIKELY(record == NULL)) {
        record = procreg_epoch_reader_slow();
        if (record == NULL)
            return NULL;
    }
    ck_epoch_begin(record, NULL);
    return record;
}

/** Leave the read section begun with @record. */
static inline void procreg_epoch_read_end(ck_epoch_record_t *record)
{
    PROCREG_TSAN_RELEASE(&procreg_epoch_tsan_sync);
    ck_epoch_end(record, NULL);
}

/* ------------------------------------------------------------------------ */
/* Writers                                                                  */

/** The reclamation state of one writer (one backend instance). */
typedef struct procreg_epoch_domain procreg_epoch_domain;

/** Frees one retired object. */
typedef void procreg_epoch_free_fn(void *p);

/* The batches and the domain are epoch.c's; they are here only so that
 * procreg_epoch_retire() and procreg_epoch_tick(), called on every write,
 * are in line (their slow paths are in epoch.c).  Everything in a domain
 * is its writer's, under the writer's lock (a domain has one writer). */

/* Retired objects travel in batches so that an object needs no
 * ck_epoch_entry of its own (16 bytes each): one epoch callback frees a
 * whole batch.  A batch is handed to the epoch when it is full, or earlier
 * when it holds much memory (an old hash table) or on flush. */
#define PROCREG_RETIRE_BATCH_ITEMS 62
#define PROCREG_RETIRE_BATCH_FLUSH_BYTES ((size_t)256 * 1024)
/* procreg_epoch_tick() hands a partial batch over every this many calls,
 * so that memory retired by a few writes is not held until more come. */
#define PROCREG_RETIRE_TICKS 32

typedef struct {
    void *p;
    procreg_epoch_free_fn *free_fn;
} procreg_retired_item;

typedef struct procreg_retire_batch {
    ck_epoch_entry_t epoch_entry;
    procreg_epoch_domain *domain;
    size_t bytes;
    unsigned int n;
    procreg_retired_item items[PROCREG_RETIRE_BATCH_ITEMS];
} procreg_retire_batch;

struct procreg_epoch_domain {
    ck_epoch_record_t *record;
    procreg_retire_batch *open; /* filling; not handed to the epoch yet */
    size_t pending;             /* objects retired and not freed */
    size_t pending_bytes;
    size_t batches;             /* batches allocated and not freed */
    unsigned int ticks;
    uint64_t reclaimed;
};

/** Figures for health checks and memory reports. */
typedef struct {
    size_t pending;       /**< Retired objects not freed yet. */
    size_t pending_bytes; /**< Bytes they hold, as retire() was told. */
    size_t overhead_bytes;/**< Bookkeeping (retire batches) they cost. */
    uint64_t reclaimed;   /**< Objects freed since the domain was made. */
} procreg_epoch_stats;

/**
 * A new domain with its own epoch record (recycled when possible).
 * @return NULL when out of memory.
 */
procreg_epoch_domain *procreg_epoch_domain_new(void);

/**
 * Wait for a grace period, free everything still retired and give the
 * domain's record back for recycling.  Not inside a read section.
 */
void procreg_epoch_domain_free(procreg_epoch_domain *domain);

/**
 * Free @p with @free_fn once no reader can hold it.  @p must already be
 * unreachable for new readers (unpublished).  @bytes is what @p holds, for
 * the figures.  Never fails: when the bookkeeping cannot be allocated it
 * waits for a grace period and frees @p at once.
 */
static inline void procreg_epoch_retire(procreg_epoch_domain *domain,
                                        void *p,
                                        procreg_epoch_free_fn *free_fn,
                                        size_t bytes);

/**
 * Hand what was retired to the epoch now instead of when a batch fills,
 * then poll.  Use after retiring something large.
 */
void procreg_epoch_flush(procreg_epoch_domain *domain);

/* procreg_epoch_retire() without an open batch: opens one (or, out of
 * memory, waits for a grace period and frees @p at once). */
void procreg_epoch_retire_open(procreg_epoch_domain *domain, void *p,
                               procreg_epoch_free_fn *free_fn, size_t bytes);

static inline void procreg_epoch_retire(procreg_epoch_domain *domain,
                                        void *p,
                                        procreg_epoch_free_fn *free_fn,
                                        size_t bytes)
{
    procreg_retire_batch *batch = domain->open;

    if (__builtin_expect(batch == NULL, 0)) {
        procreg_epoch_retire_open(domain, p, free_fn, bytes);
        return;
    }
    batch->items[batch->n].p = p;
    batch->items[batch->n].free_fn = free_fn;
    batch->n++;
    batch->bytes += bytes;
    domain->pending++;
    domain->pending_bytes += bytes;
    if (batch->n == PROCREG_RETIRE_BATCH_ITEMS ||
        batch->bytes >= PROCREG_RETIRE_BATCH_FLUSH_BYTES)
        procreg_epoch_flush(domain);
}

/**
 * Call once per write operation: now and then it hands a partial batch to
 * the epoch and polls, so that what a few writes retired is freed soon
 * even when no batch fills.
 */
static inline void procreg_epoch_tick(procreg_epoch_domain *domain)
{
    if (__builtin_expect(++domain->ticks < PROCREG_RETIRE_TICKS, 1))
        return;
    domain->ticks = 0;
    if (domain->pending > 0)
        procreg_epoch_flush(domain);
}

/**
 * Free what no reader can hold any longer, without waiting.  Cheap when
 * nothing is pending; the domain also polls by itself as batches fill.
 * @return whether anything is still pending.
 */
bool procreg_epoch_poll(procreg_epoch_domain *domain);

/** Flush, wait for a grace period and free everything retired so far.
 *  Not inside a read section. */
void procreg_epoch_barrier(procreg_epoch_domain *domain);

/** Fill @out with the domain's figures. */
void procreg_epoch_get_stats(const procreg_epoch_domain *domain,
                             procreg_epoch_stats *out);

/** Epoch records ever allocated in this process (records are never freed:
 *  ck cannot unlink them; they are recycled instead). */
size_t procreg_epoch_records_allocated(void);
/** Epoch records now held by a thread or a domain. */
size_t procreg_epoch_records_in_use(void);

/* ---- ck_ht glue shared by the ckht backend and the optimized cache ---- */

/**
 * The hash callback for a ck_ht whose keys are procreg key bytes.  ck_ht
 * keeps each slot's hash and never rehashes by itself in Debian's build
 * (no pointer packing); should it, it gets the keys' own function, so the
 * prepared key's hash passed to lookups stays valid.
 */
static inline void procreg_ck_ht_hash(ck_ht_hash_t *h, const void *key,
                                      size_t len, uint64_t seed)
{
    (void)seed;
    h->value = procreg_key_hash(key, len);
}

/**
 * Free a ck_ht table (or ckht's ck_hs map) allocation through @domain's
 * epoch, handed over now rather than with the next batch.  Always
 * deferred, whatever ck's `defer` says: ck_ht_destroy() frees a table with
 * defer=false, and procreg_ck_ht_rebuild() destroys tables readers may
 * still probe.
 */
static inline void procreg_ck_ht_free_table(procreg_epoch_domain *domain,
                                            void *p, size_t bytes)
{
    procreg_epoch_retire(domain, p, free, bytes);
    procreg_epoch_flush(domain);
}

/**
 * ck_ht's removals leave tombstones that only a new table clears: its gc
 * moves entries but never turns a tombstone back into an empty slot, and
 * an insert probes until an empty slot.  With keys that come and go
 * (fresh names), tombstones end up filling every empty slot, and each
 * insert then probes up to an eighth of the table.
 *
 * Rebuild *@table (of @slots slots) into a new ck_ht with the same mode
 * and allocator (which must free through the epoch:
 * procreg_ck_ht_free_table()), publish it for readers (who load *@table
 * inside their read section) and retire the old one through @domain.  The
 * new table has as many slots, or fewer when at most a quarter of them
 * would be in use.  O(slots); writer lock held.
 * @return false when out of memory (*@table is then unchanged).
 */
bool procreg_ck_ht_rebuild(ck_ht_t **table, size_t slots,
                           struct ck_malloc *allocator,
                           procreg_epoch_domain *domain);

/** The slots of a ck map allocation of @bytes with slots of @slot_size
 *  bytes: the largest power of two that fits (ck sizes maps in powers of
 *  two, and the header and alignment are under half the slots' bytes). */
static inline size_t procreg_ck_map_slots(size_t bytes, size_t slot_size)
{
    size_t n = bytes / slot_size;

    /* The highest bit of n (ckht asks on every removal: a count leading
     * zeros, not a loop over the bits). */
    if (n == 0)
        return 0;
    return (size_t)1 << (sizeof(unsigned long long) * CHAR_BIT - 1 -
                         (unsigned)__builtin_clzll((unsigned long long)n));
}

/** The slots of a ck_ht table allocation of @bytes (32-byte slots plus a
 *  header under 320 bytes, for tables of at least 64 slots). */
static inline size_t procreg_ck_ht_slots(size_t bytes)
{
    return procreg_ck_map_slots(bytes, sizeof(ck_ht_entry_t));
}

G_END_DECLS

#endif /* PROCREG_CK_COMMON_H */
