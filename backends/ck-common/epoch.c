/*
 * Safe memory reclamation for the ck backends: one process-wide ck_epoch,
 * per-thread reader records that are recycled when threads exit, and
 * per-writer domains that retire memory in batches.  See ck-common.h.
 */
#include "ck-common.h"

#include <ck_md.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

_Thread_local ck_epoch_record_t *procreg_epoch_tls_record
    __attribute__((tls_model("initial-exec")));
char procreg_epoch_tsan_sync;

static ck_epoch_t global_epoch;
static atomic_size_t records_allocated;
static atomic_size_t records_in_use;

static void global_epoch_init(void)
{
    static gsize done;

    if (g_once_init_enter(&done)) {
        ck_epoch_init(&global_epoch);
        g_once_init_leave(&done, 1);
    }
}

/* A record from the free list of the epoch, or a new one.  Records are
 * never freed (ck keeps them linked in the epoch), so recycling is what
 * bounds their number by the threads alive at once. */
static ck_epoch_record_t *record_acquire(void)
{
    ck_epoch_record_t *record;
    size_t size;

    global_epoch_init();
    record = ck_epoch_recycle(&global_epoch, NULL);
    if (record != NULL) {
        /* Pairs with the release in record_release(): the previous owner's
         * use of the record happened before ours. */
        PROCREG_TSAN_ACQUIRE(record);
    } else {
        /* The record is cache-line aligned so that readers never share a
         * line; aligned_alloc wants a multiple of the alignment. */
        size = (sizeof(*record) + CK_MD_CACHELINE - 1) &
               ~(size_t)(CK_MD_CACHELINE - 1);
        record = aligned_alloc(CK_MD_CACHELINE, size);
        if (record == NULL)
            return NULL;
        memset(record, 0, size);
        ck_epoch_register(&global_epoch, record, NULL);
        atomic_fetch_add_explicit(&records_allocated, 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&records_in_use, 1, memory_order_relaxed);
    return record;
}

/* Give @record back.  It must not be inside a section and must have no
 * pending callbacks (ck_epoch_unregister drops them). */
static void record_release(ck_epoch_record_t *record)
{
    PROCREG_TSAN_RELEASE(record);
    ck_epoch_unregister(record);
    atomic_fetch_sub_explicit(&records_in_use, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* Readers                                                                  */

/* Runs when a thread that used a record exits. */
static void reader_record_release(gpointer data)
{
    ck_epoch_record_t *record = data;

    /* Should anything later in this thread's exit read again, it makes a
     * fresh record instead of using one another thread may recycle. */
    if (procreg_epoch_tls_record == record)
        procreg_epoch_tls_record = NULL;
    record_release(record);
}

static GPrivate reader_key = G_PRIVATE_INIT(reader_record_release);

ck_epoch_record_t *procreg_epoch_reader_slow(void)
{
    ck_epoch_record_t *record = record_acquire();

    if (record == NULL)
        return NULL;
    /* The GPrivate is only there for its destroy notify at thread exit;
     * the hot path reads the initial-exec TLS pointer. */
    g_private_set(&reader_key, record);
    procreg_epoch_tls_record = record;
    return record;
}

size_t procreg_epoch_records_allocated(void)
{
    return atomic_load_explicit(&records_allocated, memory_order_relaxed);
}

size_t procreg_epoch_records_in_use(void)
{
    return atomic_load_explicit(&records_in_use, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* Writers                                                                  */

typedef procreg_retire_batch retire_batch; /* ck-common.h */

static void batch_dispatch(ck_epoch_entry_t *entry)
{
    retire_batch *batch = (retire_batch *)((char *)entry -
                                           offsetof(retire_batch, epoch_entry));
    procreg_epoch_domain *domain = batch->domain;
    unsigned int i;

    /* Pairs with procreg_epoch_read_end(): every read section that could
     * see these objects ended before this grace period. */
    PROCREG_TSAN_ACQUIRE(&procreg_epoch_tsan_sync);
    for (i = 0; i < batch->n; i++)
        batch->items[i].free_fn(batch->items[i].p);
    domain->pending -= batch->n;
    domain->pending_bytes -= batch->bytes;
    domain->reclaimed += batch->n;
    domain->batches--;
    free(batch);
}

procreg_epoch_domain *procreg_epoch_domain_new(void)
{
    procreg_epoch_domain *domain = calloc(1, sizeof(*domain));

    if (domain == NULL)
        return NULL;
    domain->record = record_acquire();
    if (domain->record == NULL) {
        free(domain);
        return NULL;
    }
    return domain;
}

void procreg_epoch_domain_free(procreg_epoch_domain *domain)
{
    if (domain == NULL)
        return;
    procreg_epoch_barrier(domain);
    record_release(domain->record);
    free(domain);
}

static void domain_hand_over(procreg_epoch_domain *domain)
{
    retire_batch *batch = domain->open;

    if (batch == NULL)
        return;
    domain->open = NULL;
    if (batch->n == 0) {
        domain->batches--;
        free(batch);
        return;
    }
    ck_epoch_call(domain->record, &batch->epoch_entry, batch_dispatch);
}

bool procreg_epoch_poll(procreg_epoch_domain *domain)
{
    /* Only batches handed to the epoch can be reclaimed; the open one is
     * still filling. */
    if (domain->pending > 0 &&
        (domain->open == NULL || domain->open->n < domain->pending))
        ck_epoch_poll(domain->record);
    return domain->pending > 0;
}

void procreg_epoch_flush(procreg_epoch_domain *domain)
{
    domain_hand_over(domain);
    procreg_epoch_poll(domain);
}

void procreg_epoch_barrier(procreg_epoch_domain *domain)
{
    domain_hand_over(domain);
    ck_epoch_barrier(domain->record);
}

void procreg_epoch_retire_open(procreg_epoch_domain *domain, void *p,
                               procreg_epoch_free_fn *free_fn, size_t bytes)
{
    retire_batch *batch = malloc(sizeof(*batch));

    if (batch == NULL) {
        /* No memory for bookkeeping: wait until no reader can hold @p
         * instead (it is already unpublished), then free it. */
        ck_epoch_synchronize(domain->record);
        PROCREG_TSAN_ACQUIRE(&procreg_epoch_tsan_sync);
        free_fn(p);
        domain->reclaimed++;
        return;
    }
    batch->domain = domain;
    batch->bytes = 0;
    batch->n = 0;
    domain->open = batch;
    domain->batches++;
    procreg_epoch_retire(domain, p, free_fn, bytes);
}

void procreg_epoch_get_stats(const procreg_epoch_domain *domain,
                             procreg_epoch_stats *out)
{
    out->pending = domain->pending;
    out->pending_bytes = domain->pending_bytes;
    out->overhead_bytes = sizeof(*domain) + domain->batches * sizeof(retire_batch);
    out->reclaimed = domain->reclaimed;
}

/* ------------------------------------------------------------------------ */
/* Rebuilding a ck_ht without its tombstones                                */

bool procreg_ck_ht_rebuild(ck_ht_t **table, size_t slots,
                           struct ck_malloc *allocator,
                           procreg_epoch_domain *domain)
{
    ck_ht_t *old = *table;
    ck_ht_t *fresh = malloc(sizeof(*fresh));
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ck_ht_entry_t *slot;
    size_t want = 4 * (size_t)ck_ht_count(old);

    if (fresh == NULL)
        return false;
    /* At most a quarter full, so that inserts find room before the next
     * rebuild; never larger than before. */
    if (want < 64)
        want = 64;
    if (slots > 0 && want > slots)
        want = slots;
    if (!ck_ht_init(fresh, old->mode, procreg_ck_ht_hash, allocator, want,
                    0)) {
        free(fresh);
        return false;
    }
    while (ck_ht_next(old, &it, &slot)) {
        ck_ht_entry_t copy = *slot;
        ck_ht_hash_t h;

#ifdef CK_HT_PP
        h.value = procreg_key_hash(ck_ht_entry_key(slot),
                                   ck_ht_entry_key_length(slot));
#else
        h.value = slot->hash; /* ck_ht keeps it */
#endif
        if (!ck_ht_put_spmc(fresh, h, &copy)) {
            ck_ht_destroy(fresh);
            free(fresh);
            return false;
        }
    }
    /* The new table's slots before the pointer that leads to them. */
    PROCREG_TSAN_RELEASE(fresh);
    ck_pr_fence_store();
    ck_pr_store_ptr(table, fresh);
    ck_ht_destroy(old); /* its table goes through the epoch */
    procreg_epoch_retire(domain, old, free, sizeof(*old));
    procreg_epoch_flush(domain);
    return true;
}
