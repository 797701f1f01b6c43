/*
 * ckht's table: ck_hs with its allocator, hash and compare callbacks, the
 * writer lock, and the steps that make an entry reachable (publish),
 * unreachable (unpublish) and freed once no reader can see it (retire),
 * with the rebuild that clears tombstones.  See ckht.c for the
 * concurrency model.
 *
 * ck_hs (single writer, many readers: CK_HS_MODE_SPMC) keeps one 8-byte
 * slot per entry, the entry's pointer, at a load of at most 1/2.  Its
 * slots hold no hash (this ck has no pointer packing), so it calls the
 * compare callback on every occupied slot a probe passes; the callback
 * rejects other keys on the hash kept in the entry, one load.  The key
 * handed to every ck_hs call is a procreg_key, never an entry, so the
 * callback compares an entry with a procreg_key and nothing else: inserts
 * and replacements go through ck_hs_apply(), which probes with the key
 * and stores the entry the apply function returns.
 *
 * Invariant (what keeps readers off freed memory): an entry or a map is
 * freed only through the epoch, after it became unreachable: entries
 * once unpublished (removed, or replaced by ck_hs_apply), maps once ck_hs
 * replaced them (growth, ckht_rebuild()) or destroyed them, and a whole
 * ck_hs once ckht_rebuild() published its successor.  Readers load
 * `self->hs`, its map, the slots and the entries only inside a read
 * section, so none of these is freed while a reader that could have
 * reached it is still inside (tests/ckht/reclaim.c pauses a reader inside
 * ck_hs_get() while the writer removes and grows).
 */
#include "ckht-internal.h"

/* ck_hs's mode: one writer, many readers; slots hold pointers. */
#define CKHT_HS_MODE (CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT)

/* ck_malloc callbacks have no context argument: the instance whose writer
 * lock this thread holds is found in procreg_ckht_writer
 * (ckht-internal.h). */
_Thread_local ckht *procreg_ckht_writer
    __attribute__((tls_model("initial-exec")));

/* Tests' allocation failures (tests/ckht/map-figures.c): how many more
 * ck_hs maps may be allocated; SIZE_MAX: no limit.  Hidden, and read only
 * when ck_hs allocates a map (never on a lookup or a plain write). */
size_t procreg_ckht_test_map_budget = SIZE_MAX;

/* ck_hs allocates only maps, in ck_hs_init() and when it grows.  A map
 * it allocates may still be discarded: when copying into it overflows
 * its probe limit, ck_hs frees it and tries a map twice as large, which
 * may fail.  So the allocation is only noted here (new_map), and the
 * figures describe it once it is installed: ckht_commit_map(). */
static void *ckht_hs_malloc(size_t size)
{
    ckht *self = procreg_ckht_writer;
    void *p;

    if (self == NULL) {
        g_critical("ckht: ck_hs allocated outside a write");
        return NULL;
    }
    if (procreg_ckht_test_map_budget != SIZE_MAX) {
        if (procreg_ckht_test_map_budget == 0)
            return NULL;
        procreg_ckht_test_map_budget--;
    }
    p = malloc(size);
    if (p == NULL)
        return NULL;
    self->table_bytes += size;
    self->new_map = p;
    self->new_map_size = size;
    return p;
}

static void ckht_hs_free(void *p, size_t size, bool defer)
{
    ckht *self = procreg_ckht_writer;

    if (p == NULL)
        return;
    if (self == NULL) {
        /* Cannot tell which epoch protects it: leaking is the safe way. */
        g_critical("ckht: ck_hs freed memory outside a write");
        return;
    }
    /* Always deferred, whatever ck_hs's `defer` says: ck_hs_destroy()
     * frees with defer=false, and ckht_rebuild() destroys maps that
     * readers may still probe. */
    (void)defer;
    if (p == self->new_map) /* discarded before it was installed */
        self->new_map = NULL;
    self->table_bytes -= size;
    procreg_ck_ht_free_table(self->epoch, p, size);
}

/* After a ck_hs call that may allocate a map on @hs: when the map it
 * allocated is the one @hs now uses, it is the current map (a new map
 * holds no tombstone); a map allocated and discarded, or none, changes
 * nothing.  Returns whether a new map was installed. */
static bool ckht_commit_map(ckht *self, const ck_hs_t *hs)
{
    bool installed = self->new_map != NULL &&
                     (const void *)hs->map == self->new_map;

    if (installed) {
        self->map_size = self->new_map_size;
        self->removals = 0;
    }
    self->new_map = NULL;
    return installed;
}

static struct ck_malloc ckht_allocator = {
    .malloc = ckht_hs_malloc,
    .realloc = NULL, /* ck_hs never reallocates */
    .free = ckht_hs_free,
};

/* ck_hs's hash callback, called when a map is rebuilt (growth): the hash
 * the entry keeps, equal to ckht_hs_hash() of its key. */
static unsigned long ckht_hs_hash_entry(const void *entry, unsigned long seed)
{
    (void)seed;
    return ((const ckht_entry *)entry)->hash;
}

/* ck_hs's compare callback: @stored is an entry, @key always a
 * procreg_key (see the top of this file).  Called on every occupied slot
 * of a probe, so the hash goes first. */
static bool ckht_hs_compare(const void *stored, const void *key)
{
    const ckht_entry *e = stored;
    const procreg_key *k = key;
    size_t size = procreg_key_size(k);

    return e->hash == ckht_hs_hash(k) && ckht_entry_key_size(e) == size &&
           memcmp(e->key, procreg_key_bytes(k), size) == 0;
}

/* Slots of the current table: a map's allocation is a header (80 bytes),
 * 8 bytes per slot and up to a cache line of alignment, so with at least
 * CKHT_MIN_SLOTS slots, the largest power of two that fits. */
size_t procreg_ckht_capacity(const ckht *self)
{
    return procreg_ck_map_slots(self->map_size, sizeof(void *));
}

typedef struct {
    ckht_entry *e;
    bool replace;
    ckht_entry *found;
} ckht_put;

static void *ckht_put_fn(void *present, void *data);

/* ck_hs_apply() of @fn on the table, and the figures of a map it grew
 * into. */
static bool ckht_apply(ckht *self, const procreg_key *key,
                       ck_hs_apply_fn_t *fn, void *data)
{
    bool ok = ck_hs_apply(self->hs, ckht_hs_hash(key), key, fn, data);

    if (ckht_commit_map(self, self->hs))
        self->grows++;
    return ok;
}

/* ck_hs_apply()'s function: given the entry of the key or NULL, return
 * what the slot is to hold (the same pointer: no change). */
static void *ckht_put_fn(void *present, void *data)
{
    ckht_put *put = data;

    put->found = present;
    if (present != NULL && !put->replace)
        return present;
    return put->e;
}

bool procreg_ckht_publish(ckht *self, const procreg_key *key,
                          ckht_entry *e, bool replace, ckht_entry **found)
{
    ckht_put put = {e, replace, NULL};

    /* The entry's contents before the slot that points to it. */
    PROCREG_TSAN_RELEASE(e);
    ck_pr_fence_store();
    if (replace) {
        /* Callers replace only an entry they found under the lock. */
        if (!ckht_apply(self, key, ckht_put_fn, &put))
            return false;
        procreg_ckht_ns_replace(put.found, e);
        *found = put.found;
        return true;
    }
    /* Linked first, so that out of memory for a new namespace leaves the
     * table untouched; readers never read the links. */
    if (!procreg_ckht_ns_link(self, e))
        return false;
    if (!ckht_apply(self, key, ckht_put_fn, &put)) {
        procreg_ckht_ns_unlink(self, e);
        return false;
    }
    if (put.found != NULL) /* present: @e was not stored */
        procreg_ckht_ns_unlink(self, e);
    *found = put.found;
    return true;
}

ckht_entry *procreg_ckht_unpublish(ckht *self, const procreg_key *key)
{
    return ck_hs_remove(self->hs, ckht_hs_hash(key), key);
}

typedef struct {
    const procreg_owner *owner;
    ckht_entry *found;
    bool taken;
} ckht_take;

/* ck_hs_apply()'s function for procreg_ckht_unpublish_owned(): NULL
 * (remove; nothing when absent) for @owner's entry, the entry itself (no
 * change) for another owner's. */
static void *ckht_take_fn(void *present, void *data)
{
    ckht_take *take = data;
    procreg_owner holder;

    take->found = present;
    if (present == NULL)
        return NULL;
    ckht_entry_owner(present, &holder);
    take->taken = procreg_backend_owner_same(&holder, take->owner);
    return take->taken ? NULL : present;
}

ckht_entry *procreg_ckht_unpublish_owned(ckht *self, const procreg_key *key,
                                         const procreg_owner *owner,
                                         ckht_entry **kept)
{
    ckht_take take = {owner, NULL, false};

    /* The owner's check and the removal in the one probe of
     * ck_hs_apply(), which leaves a tombstone as ck_hs_remove() does.  It
     * grows the table only when its probe met neither the key nor a free
     * slot within ck_hs's probe limit, and fails only when that growth
     * does: the key is absent then. */
    if (!ckht_apply(self, key, ckht_take_fn, &take)) {
        *kept = NULL;
        return NULL;
    }
    *kept = take.taken ? NULL : take.found;
    return take.taken ? take.found : NULL;
}

/* Replace the table's map with one holding the same entries and no
 * tombstones, sized for 4 times the entries (so that inserts find room
 * before the next rebuild) but never larger than @slots.  O(slots); false
 * when out of memory (nothing changed).
 *
 * A map of the same size (the table is at least a quarter full) is made
 * by ck_hs_rebuild() in place: ck_hs's own growth into the same capacity,
 * which copies the slots without calling the compare callback and
 * publishes the new map as every growth does (the store of hs->map after
 * a fence; a reader inside ck_hs_get() finishes on the map it loaded),
 * and frees the old one through ckht_hs_free(), that is through the
 * epoch.  A smaller one needs a new ck_hs, filled with ck_hs_put(): readers
 * load `self->hs` inside their read section, so the new one is published
 * with a release store, and the old one and its map go through the epoch.
 * (tests/ckht/reclaim.c pauses a reader across both.) */
static bool ckht_rebuild(ckht *self, size_t slots)
{
    ck_hs_t *old = self->hs;
    ck_hs_t *fresh;
    ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
    size_t want = 4 * (size_t)ck_hs_count(old);
    void *e;

    if (want < CKHT_MIN_SLOTS)
        want = CKHT_MIN_SLOTS;
    if (want >= slots) {
        /* ck_hs_grow() into the capacity it has: the copy is ck_hs's
         * loop over the slots, 93 instructions per entry at 100 000
         * entries against 215 for ck_hs_next() and ck_hs_put()
         * (bench/results/issue18-s14/churn-cut/NOTES.md). */
        if (!ck_hs_rebuild(old)) {
            self->new_map = NULL;
            return false;
        }
        ckht_commit_map(self, old); /* the old map: ckht_hs_free() */
        return true;
    }
    fresh = malloc(sizeof(*fresh));
    if (fresh == NULL)
        return false;
    /* No compare callback while it fills: entries are distinct, and
     * ck_hs_put() passes the entry itself as the key, which the callback
     * does not take. */
    if (!ck_hs_init(fresh, CKHT_HS_MODE, ckht_hs_hash_entry, NULL,
                    &ckht_allocator, want, 0)) {
        free(fresh);
        self->new_map = NULL;
        return false;
    }
    while (ck_hs_next(old, &it, &e)) {
        if (!ck_hs_put(fresh, ((ckht_entry *)e)->hash, e)) {
            ck_hs_destroy(fresh); /* its maps go through the epoch */
            free(fresh);
            self->new_map = NULL;
            return false;
        }
    }
    ckht_commit_map(self, fresh);
    fresh->compare = ckht_hs_compare;
    /* The new table's slots before the pointer that leads to them. */
    PROCREG_TSAN_RELEASE(fresh);
    ck_pr_fence_store();
    ck_pr_store_ptr(&self->hs, fresh);
    ck_hs_destroy(old); /* its map goes through the epoch */
    procreg_epoch_retire(self->epoch, old, free, sizeof(*old));
    procreg_epoch_flush(self->epoch);
    return true;
}

/* Account for the unpublished @e and retire it.  Under the lock. */
void procreg_ckht_retire(ckht *self, ckht_entry *e)
{
    size_t bytes = procreg_ckht_entry_bytes(e);

    procreg_ckht_ns_unlink(self, e);
    atomic_store_explicit(&self->n_entries,
                          atomic_load_explicit(&self->n_entries,
                                               memory_order_relaxed) - 1,
                          memory_order_relaxed);
    self->entry_bytes -= bytes;
    procreg_epoch_retire(self->epoch, e, procreg_ckht_entry_free, bytes);
    /* A removal leaves a tombstone.  ck_hs reuses the first tombstone an
     * insert passes, but an insert whose probe meets an empty slot first
     * takes the empty slot, so with keys that come and go (fresh names)
     * empty slots slowly turn into tombstones, and misses and inserts,
     * which stop at an empty slot, probe up to ck_hs's probe maximum
     * instead.  Only a new map clears them.  ck_hs does not say whether
     * an insert reused a tombstone, so count removals since the map was
     * made (growth makes one too): rebuilding once they reach half the
     * slots bounds the tombstones by what the load (at most 1/2) leaves
     * free.  A rebuild copies at most half a table per half table of
     * removals: O(1) amortised (its cost: see backends/ckht/README.md).
     * Out of memory, the next removal tries again. */
    if (++self->removals > procreg_ckht_capacity(self) / 2 &&
        ckht_rebuild(self, procreg_ckht_capacity(self)))
        self->rebuilds++;
}

/* Next live entry of the table, or NULL.  Under the lock. */
ckht_entry *procreg_ckht_next(ckht *self, ck_hs_iterator_t *it)
{
    void *e;

    if (!ck_hs_next(self->hs, it, &e))
        return NULL;
    return e;
}

bool procreg_ckht_table_init(ckht *self, uint64_t slots)
{
    ckht *previous;
    bool ok;

    self->hs = malloc(sizeof(*self->hs));
    procreg_ckht_ns_init(self);
    previous = procreg_ckht_write_begin(self);
    /* Without CK_HS_MODE_DELETE: its per-slot probe bounds cost a byte
     * per slot and one more cache miss on every lookup; the rebuilds in
     * procreg_ckht_retire() keep probes short instead. */
    ok = self->hs != NULL &&
         ck_hs_init(self->hs, CKHT_HS_MODE, ckht_hs_hash_entry,
                    ckht_hs_compare, &ckht_allocator, slots, 0);
    if (ok)
        ckht_commit_map(self, self->hs);
    procreg_ckht_write_end(self, previous);
    if (!ok) {
        free(self->hs);
        procreg_ckht_ns_destroy(self);
    }
    return ok;
}

/* Free every live entry and the table.  No call on this instance runs
 * any more, so live entries can go at once; retired ones wait for the
 * readers of other instances that share the epoch. */
void procreg_ckht_table_destroy(ckht *self)
{
    ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
    ckht_entry *e;
    ckht *previous;

    previous = procreg_ckht_write_begin(self);
    while ((e = procreg_ckht_next(self, &it)) != NULL)
        procreg_ckht_entry_free(e);
    ck_hs_destroy(self->hs);
    free(self->hs);
    procreg_ckht_ns_destroy(self);
    procreg_ckht_writer = previous;
    procreg_mutex_unlock(&self->lock);
}
