/*
 * ckht's table: ck_ht with its allocator, the writer lock, and the steps
 * that make an entry reachable (publish), unreachable (unpublish) and
 * freed once no reader can see it (retire), with the rebuild that clears
 * tombstones.  See ckht.c for the concurrency model.
 */
#include "ckht-internal.h"

/* ck_malloc callbacks have no context argument: the instance whose writer
 * lock this thread holds is found here.  Saved and restored around each
 * write so that a decorator's writer over another instance nests. */
static _Thread_local ckht *ckht_current_writer
    __attribute__((tls_model("initial-exec")));

static void *ckht_ht_malloc(size_t size)
{
    ckht *self = ckht_current_writer;
    void *p;

    if (self == NULL) {
        g_critical("ckht: ck_ht allocated outside a write");
        return NULL;
    }
    p = malloc(size);
    if (p == NULL)
        return NULL;
    if (self->table_bytes > 0 && !self->rebuilding)
        self->grows++;
    self->table_bytes += size;
    self->map_size = size;
    return p;
}

static void ckht_ht_free(void *p, size_t size, bool defer)
{
    ckht *self = ckht_current_writer;

    if (p == NULL)
        return;
    if (self == NULL) {
        /* Cannot tell which epoch protects it: leaking is the safe way. */
        g_critical("ckht: ck_ht freed memory outside a write");
        return;
    }
    (void)defer; /* always deferred: see procreg_ck_ht_free_table() */
    self->table_bytes -= size;
    procreg_ck_ht_free_table(self->epoch, p, size);
}

static struct ck_malloc ckht_allocator = {
    .malloc = ckht_ht_malloc,
    .realloc = NULL, /* ck_ht never reallocates */
    .free = ckht_ht_free,
};

/* Slots of the current table. */
size_t procreg_ckht_capacity(const ckht *self)
{
    return procreg_ck_ht_slots(self->map_size);
}

ckht *procreg_ckht_write_begin(ckht *self)
{
    ckht *previous;

    procreg_mutex_lock(&self->lock);
    previous = ckht_current_writer;
    ckht_current_writer = self;
    return previous;
}

void procreg_ckht_write_end(ckht *self, ckht *previous)
{
    procreg_epoch_tick(self->epoch);
    ckht_current_writer = previous;
    procreg_mutex_unlock(&self->lock);
}

bool procreg_ckht_publish(ckht *self, const procreg_key *key,
                          ckht_entry *e, bool replace, ckht_entry **old)
{
    ck_ht_entry_t slot;
    ck_ht_hash_t h;

    h.value = key->hash;
    ck_ht_entry_set(&slot, h, e->key, (uint16_t)procreg_key_size(key), e);
    /* The entry's contents before the slot that points to it. */
    PROCREG_TSAN_RELEASE(e);
    ck_pr_fence_store();
    if (!replace) {
        if (!procreg_ckht_ns_link(self, e))
            return false;
        if (ck_ht_put_spmc(self->ht, h, &slot))
            return true;
        procreg_ckht_ns_unlink(self, e);
        return false;
    }
    /* Callers replace only an entry they found under the lock. */
    if (!ck_ht_set_spmc(self->ht, h, &slot))
        return false;
    *old = ck_ht_entry_value(&slot);
    procreg_ckht_ns_replace(*old, e);
    return true;
}

/* Unpublish the entry of key (@bytes, @size, @hash) and return it, or NULL
 * when there is none.  Under the lock; follow with procreg_ckht_retire(). */
ckht_entry *procreg_ckht_unpublish(ckht *self, const char *bytes,
                                   size_t size, uint64_t hash)
{
    ck_ht_entry_t slot;
    ck_ht_hash_t h;

    h.value = hash;
    ck_ht_entry_key_set(&slot, bytes, (uint16_t)size);
    if (!ck_ht_remove_spmc(self->ht, h, &slot))
        return NULL;
    return ck_ht_entry_value(&slot);
}

/* Account for the unpublished @e and retire it.  Under the lock. */
void procreg_ckht_retire(ckht *self, ckht_entry *e)
{
    procreg_ckht_ns_unlink(self, e);
    atomic_store_explicit(&self->n_entries,
                          atomic_load_explicit(&self->n_entries,
                                               memory_order_relaxed) - 1,
                          memory_order_relaxed);
    {
        size_t bytes = procreg_ckht_entry_bytes(e);

        self->entry_bytes -= bytes;
        procreg_epoch_retire(self->epoch, e, procreg_ckht_entry_free, bytes);
    }
    /* Removals leave tombstones that only a new table clears (see
     * procreg_ck_ht_rebuild()).  ck_ht does not say whether an insert
     * reused one, so count removals: rebuilding once they reach half the
     * slots bounds the tombstones by what the load (at most 1/2) leaves
     * free, before inserts run out of empty slots to stop at.  A rebuild
     * copies at most half a table per half table of removals: O(1)
     * amortised (its cost: see backends/ckht/README.md).  Out of memory,
     * the next removal tries again. */
    if (++self->removals > procreg_ckht_capacity(self) / 2) {
        self->rebuilding = true;
        if (procreg_ck_ht_rebuild(&self->ht, procreg_ckht_capacity(self),
                                  &ckht_allocator, self->epoch)) {
            self->removals = 0;
            self->rebuilds++;
        }
        self->rebuilding = false;
    }
}

/* Next live entry of the table, or NULL.  Under the lock. */
ckht_entry *procreg_ckht_next(ckht *self, ck_ht_iterator_t *it)
{
    ck_ht_entry_t *slot;

    if (!ck_ht_next(self->ht, it, &slot))
        return NULL;
    return ck_ht_entry_value(slot);
}


bool procreg_ckht_table_init(ckht *self, uint64_t slots)
{
    ckht *previous;
    bool ok;

    self->ht = malloc(sizeof(*self->ht));
    procreg_ckht_ns_init(self);
    previous = procreg_ckht_write_begin(self);
    /* Without CK_HT_WORKLOAD_DELETE: its per-slot probe bounds cost a
     * byte per slot and, worse, one more cache miss on every lookup; the
     * rebuilds in procreg_ckht_retire() keep misses short instead. */
    ok = self->ht != NULL &&
         ck_ht_init(self->ht, CK_HT_MODE_BYTESTRING, procreg_ck_ht_hash,
                    &ckht_allocator, slots, 0);
    procreg_ckht_write_end(self, previous);
    if (!ok) {
        free(self->ht);
        procreg_ckht_ns_destroy(self);
    }
    return ok;
}

/* Free every live entry and the table.  No call on this instance runs
 * any more, so live entries can go at once; retired ones wait for the
 * readers of other instances that share the epoch. */
void procreg_ckht_table_destroy(ckht *self)
{
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ckht_entry *e;
    ckht *previous;

    previous = procreg_ckht_write_begin(self);
    while ((e = procreg_ckht_next(self, &it)) != NULL)
        procreg_ckht_entry_free(e);
    ck_ht_destroy(self->ht);
    free(self->ht);
    procreg_ckht_ns_destroy(self);
    ckht_current_writer = previous;
    procreg_mutex_unlock(&self->lock);
}
