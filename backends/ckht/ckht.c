/*
 * ckht: an in-process backend on Concurrency Kit's ck_ht, with lookups
 * that take no lock.
 *
 * Concurrency (ck_ht is single-producer, multi-consumer):
 *  - Writers (register, unregister, update, drop, and every scan) hold the
 *    instance's writer lock, one at a time.
 *  - Lookups take no lock: they run inside a ck_epoch read section on the
 *    calling thread's own record and do no atomic read-modify-write on
 *    shared memory.  The key's prepared hash goes to ck_ht as is (ck_ht
 *    keeps each slot's hash and never rehashes when it grows), so a lookup
 *    by prepared key hashes nothing.
 *  - Entries are immutable once published.  An update publishes a new
 *    entry in the same slot (ck_ht_set_spmc) and retires the old one;
 *    unregister retires.  Retired entries, and the tables ck_ht replaces
 *    when it grows (its free(p, n, defer = true)), are freed through
 *    ck_epoch only after every read section that could see them ended.
 *  - A reader sees either no entry or one complete entry.  Metadata handed
 *    out is a reference taken inside the read section, so it outlives the
 *    entry's retirement.
 *  - Scans (list_all, count of a namespace, list_names, find_by_metadata,
 *    drop_namespace) iterate the table under the writer lock, because
 *    ck_ht cannot be iterated while it changes.  Each one is therefore a
 *    snapshot of the registry at one instant between two writes; lookups
 *    carry on meanwhile, writers wait for the scan.
 *
 * Groups (duplicate keys) live in ckht-groups.c, under the same writer
 * lock and revision counter.
 *
 * Memory: an entry is one allocation holding the owner, times, revision
 * and the key bytes ("ns\0name\0", which ck_ht compares against), plus a
 * metadata pointer in front of it only when there is metadata.  ck_ht
 * slots are 32 bytes (this ck has no pointer packing) and the table keeps
 * its load at or below 1/2, so the table alone costs 64 to 128 bytes per
 * entry; see the memory figures in health_check and stats.
 */
#include <procreg/backend.h>

#include <ck_ht.h>
#include <ck_md.h>
#include <ck_pr.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "ckht-internal.h"

/* Default and bounds for the initial_size option (entries).  The table
 * doubles as it fills, so a large start is only an optimisation; the
 * bound keeps a spec string (which may come from $PROCREG_BACKEND) from
 * asking for tens of GiB at open: 16 Mi entries is 1 GiB of slots. */
#define CKHT_DEFAULT_INITIAL 64
#define CKHT_MAX_INITIAL (UINT64_C(1) << 24)
/* Smallest table we ask ck_ht for, in slots: keeps the capacity figure
 * derived from the table's allocation size exact (see ckht_capacity). */
#define CKHT_MIN_SLOTS 16
/* Health turns "degraded" when this many retired objects (beyond the
 * number of live entries) still wait for readers to move on. */
#define CKHT_PENDING_DEGRADED 65536

/* ------------------------------------------------------------------------ */
/* Entries                                                                  */

enum { CKHT_HAS_METADATA = 1u << 0 };

typedef struct {
    uint64_t revision;
    int64_t registered_at;
    uint64_t start_time;
    pid_t pid;
    uint8_t flags;
    uint8_t ns_len;
    uint8_t name_len;
    /* "ns\0name\0": the first ns_len + 1 + name_len bytes are the ck_ht
     * key.  When CKHT_HAS_METADATA is set, a GVariant * precedes the
     * entry in the same allocation. */
    char key[];
} ckht_entry;

G_STATIC_ASSERT(PROCREG_NAME_MAX <= UINT8_MAX);

static inline GVariant *ckht_entry_metadata(const ckht_entry *e)
{
    if (!(e->flags & CKHT_HAS_METADATA))
        return NULL;
    return ((GVariant *const *)(const void *)e)[-1];
}

static inline void *ckht_entry_base(ckht_entry *e)
{
    return (e->flags & CKHT_HAS_METADATA) ? (char *)e - sizeof(GVariant *)
                                          : (char *)e;
}

static inline const char *ckht_entry_name(const ckht_entry *e)
{
    return e->key + e->ns_len + 1;
}

/* Bytes of the ck_ht key: ns, NUL, name (no trailing NUL). */
static inline size_t ckht_entry_key_size(const ckht_entry *e)
{
    return (size_t)e->ns_len + 1 + e->name_len;
}

/* What an allocation costs: the usable size plus malloc's chunk header,
 * where the C library tells; the requested size otherwise. */
static size_t ckht_alloc_bytes(void *p, size_t requested)
{
#ifdef __GLIBC__
    (void)requested;
    return malloc_usable_size(p) + sizeof(size_t);
#else
    (void)p;
    return requested;
#endif
}

/* Bytes an entry holds: its allocation and its metadata's data. */
static size_t ckht_entry_bytes(ckht_entry *e)
{
    GVariant *metadata = ckht_entry_metadata(e);
    size_t requested = (metadata ? sizeof(GVariant *) : 0) +
                       offsetof(ckht_entry, key) + ckht_entry_key_size(e) + 1;

    return ckht_alloc_bytes(ckht_entry_base(e), requested) +
           (metadata ? g_variant_get_size(metadata) : 0);
}

static ckht_entry *ckht_entry_new(const procreg_key *key,
                                  const procreg_owner *owner,
                                  GVariant *metadata, int64_t registered_at,
                                  uint64_t revision)
{
    size_t key_size = procreg_key_size(key);
    size_t pre = metadata ? sizeof(GVariant *) : 0;
    char *base = malloc(pre + offsetof(ckht_entry, key) + key_size + 1);
    ckht_entry *e;

    if (base == NULL)
        return NULL;
    e = (ckht_entry *)(void *)(base + pre);
    e->revision = revision;
    e->registered_at = registered_at;
    e->start_time = owner->start_time;
    e->pid = owner->pid;
    e->flags = 0;
    e->ns_len = (uint8_t)key->ns_len;
    e->name_len = (uint8_t)key->name_len;
    if (metadata != NULL) {
        /* Serialise it now, in the writer: a GVariant built as a tree is
         * otherwise serialised by the first reader that looks inside it,
         * under a lock inside the GVariant that readers would contend on
         * (and that ThreadSanitizer cannot see). */
        (void)g_variant_get_data(metadata);
        *(GVariant **)(void *)base = g_variant_ref(metadata);
        e->flags |= CKHT_HAS_METADATA;
    }
    memcpy(e->key, procreg_key_bytes(key), key_size);
    e->key[key_size] = '\0';
    return e;
}

/* procreg_epoch_free_fn for retired entries (and destroy). */
static void ckht_entry_free(void *p)
{
    ckht_entry *e = p;
    GVariant *metadata = ckht_entry_metadata(e);

    if (metadata != NULL)
        g_variant_unref(metadata);
    free(ckht_entry_base(e));
}

/* Fill @out (caller-owned copies) from @e. */
static void ckht_entry_fill(procreg_entry *out, const ckht_entry *e,
                            bool names)
{
    GVariant *metadata = ckht_entry_metadata(e);

    memset(out, 0, sizeof(*out));
    if (names) {
        out->ns = g_strdup(e->key);
        out->name = g_strdup(ckht_entry_name(e));
    }
    out->owner.pid = e->pid;
    out->owner.start_time = e->start_time;
    out->metadata = metadata ? g_variant_ref(metadata) : NULL;
    out->registered_at = e->registered_at;
    out->revision = e->revision;
}

static void ckht_entry_append(GArray *out, const ckht_entry *e)
{
    procreg_entry copy;

    ckht_entry_fill(&copy, e, true);
    g_array_append_val(out, copy);
}

/* ------------------------------------------------------------------------ */
/* The instance and ck_ht's allocator                                       */

/* ck_malloc callbacks have no context argument: the instance whose writer
 * lock this thread holds is found here.  Saved and restored around each
 * write so that a decorator's writer over another instance nests. */
static _Thread_local ckht *ckht_current_writer;

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
static size_t ckht_capacity(const ckht *self)
{
    return procreg_ck_ht_slots(self->map_size);
}

static ckht *ckht_write_begin(ckht *self)
{
    ckht *previous;

    procreg_ck_lock_lock(&self->lock);
    previous = ckht_current_writer;
    ckht_current_writer = self;
    return previous;
}

static void ckht_write_end(ckht *self, ckht *previous)
{
    procreg_epoch_tick(self->epoch);
    ckht_current_writer = previous;
    procreg_ck_lock_unlock(&self->lock);
}

/* The entry of @key, or NULL.  Readers call it inside a read section;
 * writers under the writer lock. */
static inline ckht_entry *ckht_get(ckht *self, const procreg_key *key)
{
    ck_ht_t *ht;
    ck_ht_entry_t slot;
    ck_ht_hash_t h;
    ckht_entry *e;
    bool found;

    h.value = key->hash;
    ck_ht_entry_key_set(&slot, procreg_key_bytes(key),
                        (uint16_t)procreg_key_size(key));
    ht = ck_pr_load_ptr(&self->ht);
    /* Pairs with the release in procreg_ck_ht_rebuild(). */
    PROCREG_TSAN_ACQUIRE(ht);
    PROCREG_TSAN_IGNORE_READS_BEGIN();
    found = ck_ht_get_spmc(ht, h, &slot);
    PROCREG_TSAN_IGNORE_READS_END();
    if (!found)
        return NULL;
    e = ck_ht_entry_value(&slot);
    ck_pr_fence_load_depends();
    /* Pairs with the release in ckht_publish(). */
    PROCREG_TSAN_ACQUIRE(e);
    return e;
}

/* Make @e reachable as the value of @key: inserted (@replace false) or
 * replacing the current entry, which goes to @old.  Under the lock. */
static bool ckht_publish(ckht *self, const procreg_key *key, ckht_entry *e,
                         bool replace, ckht_entry **old)
{
    ck_ht_entry_t slot;
    ck_ht_hash_t h;

    h.value = key->hash;
    ck_ht_entry_set(&slot, h, e->key, (uint16_t)procreg_key_size(key), e);
    /* The entry's contents before the slot that points to it. */
    PROCREG_TSAN_RELEASE(e);
    ck_pr_fence_store();
    if (!replace)
        return ck_ht_put_spmc(self->ht, h, &slot);
    if (!ck_ht_set_spmc(self->ht, h, &slot))
        return false;
    *old = ck_ht_entry_empty(&slot) ? NULL : ck_ht_entry_value(&slot);
    return true;
}

/* Unpublish the entry of key (@bytes, @size, @hash) and return it, or NULL
 * when there is none.  Under the lock; follow with ckht_retire(). */
static ckht_entry *ckht_unpublish(ckht *self, const char *bytes, size_t size,
                                  uint64_t hash)
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
static void ckht_retire(ckht *self, ckht_entry *e)
{
    atomic_store_explicit(&self->n_entries,
                          atomic_load_explicit(&self->n_entries,
                                               memory_order_relaxed) - 1,
                          memory_order_relaxed);
    {
        size_t bytes = ckht_entry_bytes(e);

        self->entry_bytes -= bytes;
        procreg_epoch_retire(self->epoch, e, ckht_entry_free, bytes);
    }
    /* Removals leave tombstones that only a new table clears (see
     * procreg_ck_ht_rebuild()).  ck_ht does not say whether an insert
     * reused one, so count removals: rebuilding once they reach half the
     * slots bounds the tombstones by what the load (at most 1/2) leaves
     * free, before inserts run out of empty slots to stop at.  A rebuild
     * copies at most half a table per half table of removals: O(1)
     * amortised (its cost: see backends/ckht/README.md).  Out of memory,
     * the next removal tries again. */
    if (++self->removals > ckht_capacity(self) / 2) {
        self->rebuilding = true;
        if (procreg_ck_ht_rebuild(&self->ht, ckht_capacity(self),
                                  &ckht_allocator, self->epoch)) {
            self->removals = 0;
            self->rebuilds++;
        }
        self->rebuilding = false;
    }
}

/* Next live entry of the table, or NULL.  Under the lock. */
static ckht_entry *ckht_next(ckht *self, ck_ht_iterator_t *it)
{
    ck_ht_entry_t *slot;

    if (!ck_ht_next(self->ht, it, &slot))
        return NULL;
    return ck_ht_entry_value(slot);
}

static inline bool ckht_in_ns(const ckht_entry *e, const char *ns)
{
    return ns == NULL || (strncmp(e->key, ns, e->ns_len) == 0 &&
                          ns[e->ns_len] == '\0');
}

static int ckht_not_found(GError **error, const procreg_key *key)
{
    /* A miss without a GError must not allocate. */
    if (error == NULL)
        return PROCREG_ENOTFOUND;
    return procreg_set_error(error, PROCREG_ENOTFOUND,
                             "no entry \"%s\" in namespace \"%s\"",
                             procreg_key_bytes(key) + key->ns_len + 1,
                             procreg_key_bytes(key));
}

/* ------------------------------------------------------------------------ */
/* Ops                                                                      */

static const procreg_backend_option ckht_options[] = {
    {"initial_size",
     "entries to size the table for at start (default 64); the table "
     "doubles as it fills"},
    {NULL, NULL},
};

static int ckht_init(const procreg_spec *spec, procreg_backend_host *host,
                     void **state, GError **error)
{
    uint64_t initial;
    uint64_t slots;
    ckht *self;
    ckht *previous;
    bool ok;
    int r;

    (void)host;
    r = procreg_spec_get_uint64(spec, "initial_size", CKHT_DEFAULT_INITIAL,
                                &initial, error);
    if (r < 0)
        return r;
    if (initial > CKHT_MAX_INITIAL)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "ckht: initial_size=%" G_GUINT64_FORMAT
                                 " is too large (at most %" G_GUINT64_FORMAT
                                 ")",
                                 initial, CKHT_MAX_INITIAL);
    /* ck_ht keeps its load at or below 1/2. */
    slots = initial * 2;
    if (slots < CKHT_MIN_SLOTS)
        slots = CKHT_MIN_SLOTS;

    self = aligned_alloc(_Alignof(ckht), sizeof(*self));
    if (self == NULL)
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ckht: out of memory");
    memset(self, 0, sizeof(*self));
    self->epoch = procreg_epoch_domain_new();
    if (self->epoch == NULL) {
        free(self);
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ckht: out of memory for an epoch record");
    }
    procreg_ck_lock_init(&self->lock);
    atomic_init(&self->n_entries, 0);
    self->groups = procreg_ckht_groups_new(self);
    if (self->groups == NULL) {
        procreg_epoch_domain_free(self->epoch);
        procreg_ck_lock_clear(&self->lock);
        free(self);
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ckht: out of memory for the groups");
    }

    self->ht = malloc(sizeof(*self->ht));
    previous = ckht_write_begin(self);
    /* Without CK_HT_WORKLOAD_DELETE: its per-slot probe bounds cost a
     * byte per slot and, worse, one more cache miss on every lookup; the
     * rebuilds in ckht_retire() keep misses short instead. */
    ok = self->ht != NULL &&
         ck_ht_init(self->ht, CK_HT_MODE_BYTESTRING, procreg_ck_ht_hash,
                    &ckht_allocator, slots, 0);
    ckht_write_end(self, previous);
    if (!ok) {
        procreg_ckht_groups_free(self->groups);
        free(self->ht);
        procreg_epoch_domain_free(self->epoch);
        procreg_ck_lock_clear(&self->lock);
        free(self);
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ckht: out of memory for a table of %"
                                 G_GUINT64_FORMAT " slots", slots);
    }
    *state = self;
    return 0;
}

static void ckht_destroy(void *state)
{
    ckht *self = state;
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ckht_entry *e;
    ckht *previous;

    if (self == NULL)
        return;
    /* No call on this instance runs any more, so live entries can go at
     * once; retired ones wait for the readers of other instances that
     * share the epoch. */
    previous = ckht_write_begin(self);
    procreg_ckht_groups_free(self->groups);
    while ((e = ckht_next(self, &it)) != NULL)
        ckht_entry_free(e);
    ck_ht_destroy(self->ht);
    free(self->ht);
    procreg_epoch_domain_free(self->epoch);
    ckht_current_writer = previous;
    procreg_ck_lock_unlock(&self->lock);
    procreg_ck_lock_clear(&self->lock);
    free(self);
}

static int ckht_register(void *state, const procreg_key *key,
                         const procreg_record *record,
                         procreg_entry *current, GError **error)
{
    ckht *self = state;
    ckht *previous = ckht_write_begin(self);
    ckht_entry *e;
    int r = 0;

    /* Look first: ck_ht_put_spmc is no insert-if-absent on its own, it
     * reuses a tombstone that comes before a present key in the probe
     * sequence and would add the key twice. */
    e = ckht_get(self, key);
    if (e != NULL) {
        if (current != NULL)
            ckht_entry_fill(current, e, false);
        r = procreg_set_error(error, PROCREG_EEXISTS,
                              "\"%s\" is already registered in namespace "
                              "\"%s\" (owner pid %d)",
                              ckht_entry_name(e), e->key, (int)e->pid);
        goto out;
    }
    e = ckht_entry_new(key, &record->owner, record->metadata,
                       record->registered_at, self->revision + 1);
    if (e == NULL) {
        r = procreg_set_error(error, PROCREG_ENOMEM, "ckht: out of memory");
        goto out;
    }
    if (!ckht_publish(self, key, e, false, NULL)) {
        ckht_entry_free(e);
        r = procreg_set_error(error, PROCREG_ENOMEM,
                              "ckht: out of memory growing the table");
        goto out;
    }
    self->revision++;
    self->entry_bytes += ckht_entry_bytes(e);
    atomic_store_explicit(&self->n_entries,
                          atomic_load_explicit(&self->n_entries,
                                               memory_order_relaxed) + 1,
                          memory_order_relaxed);
    if (current != NULL)
        ckht_entry_fill(current, e, false);
out:
    ckht_write_end(self, previous);
    return r;
}

static int ckht_lookup(void *state, const procreg_key *key,
                       procreg_owner *out)
{
    ckht *self = state;
    ck_epoch_record_t *record = procreg_epoch_read_begin();
    const ckht_entry *e;

    if (G_UNLIKELY(record == NULL))
        return PROCREG_EBACKEND;
    e = ckht_get(self, key);
    if (e == NULL) {
        procreg_epoch_read_end(record);
        return PROCREG_ENOTFOUND;
    }
    out->pid = e->pid;
    out->start_time = e->start_time;
    procreg_epoch_read_end(record);
    return 0;
}

static int ckht_lookup_entry(void *state, const procreg_key *key,
                             procreg_entry *out, GError **error)
{
    ckht *self = state;
    ck_epoch_record_t *record = procreg_epoch_read_begin();
    const ckht_entry *e;

    if (G_UNLIKELY(record == NULL))
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ckht: out of memory for an epoch record");
    e = ckht_get(self, key);
    if (e == NULL) {
        procreg_epoch_read_end(record);
        return ckht_not_found(error, key);
    }
    /* The metadata reference is taken while the entry cannot be freed. */
    ckht_entry_fill(out, e, false);
    procreg_epoch_read_end(record);
    return 0;
}

static int ckht_unregister(void *state, const procreg_key *key,
                           uint64_t if_revision, procreg_entry *removed,
                           GError **error)
{
    ckht *self = state;
    ckht *previous = ckht_write_begin(self);
    ckht_entry *e;
    int r = 0;

    /* Check the revision before removing; without one, remove directly
     * (one probe instead of two). */
    if (if_revision != 0) {
        e = ckht_get(self, key);
        if (e == NULL) {
            r = ckht_not_found(error, key);
            goto out;
        }
        if (e->revision != if_revision) {
            r = procreg_set_error(error, PROCREG_ECONFLICT,
                                  "\"%s\" in namespace \"%s\" is at revision %"
                                  G_GUINT64_FORMAT ", not %" G_GUINT64_FORMAT,
                                  ckht_entry_name(e), e->key, e->revision,
                                  if_revision);
            goto out;
        }
    }
    e = ckht_unpublish(self, procreg_key_bytes(key), procreg_key_size(key),
                       key->hash);
    if (e == NULL) {
        r = ckht_not_found(error, key);
        goto out;
    }
    if (removed != NULL)
        ckht_entry_fill(removed, e, false);
    ckht_retire(self, e);
out:
    ckht_write_end(self, previous);
    return r;
}

static int ckht_update_metadata(void *state, const procreg_key *key,
                                GVariant *metadata, uint64_t if_revision,
                                procreg_entry *updated, GError **error)
{
    ckht *self = state;
    ckht *previous = ckht_write_begin(self);
    ckht_entry *e, *next, *old = NULL;
    procreg_owner owner;
    int r = 0;

    e = ckht_get(self, key);
    if (e == NULL) {
        r = ckht_not_found(error, key);
        goto out;
    }
    if (if_revision != 0 && e->revision != if_revision) {
        r = procreg_set_error(error, PROCREG_ECONFLICT,
                              "\"%s\" in namespace \"%s\" is at revision %"
                              G_GUINT64_FORMAT ", not %" G_GUINT64_FORMAT,
                              ckht_entry_name(e), e->key, e->revision,
                              if_revision);
        goto out;
    }
    owner.pid = e->pid;
    owner.start_time = e->start_time;
    next = ckht_entry_new(key, &owner, metadata, e->registered_at,
                          self->revision + 1);
    if (next == NULL) {
        r = procreg_set_error(error, PROCREG_ENOMEM, "ckht: out of memory");
        goto out;
    }
    if (!ckht_publish(self, key, next, true, &old)) {
        ckht_entry_free(next);
        r = procreg_set_error(error, PROCREG_ENOMEM,
                              "ckht: out of memory growing the table");
        goto out;
    }
    self->revision++;
    self->entry_bytes += ckht_entry_bytes(next);
    if (old != NULL) {
        size_t bytes = ckht_entry_bytes(old);

        self->entry_bytes -= bytes;
        procreg_epoch_retire(self->epoch, old, ckht_entry_free, bytes);
    }
    if (updated != NULL)
        ckht_entry_fill(updated, next, false);
out:
    ckht_write_end(self, previous);
    return r;
}

static int ckht_list_all(void *state, const char *ns, GArray *out,
                         GError **error)
{
    ckht *self = state;
    ckht *previous = ckht_write_begin(self);
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ckht_entry *e;

    (void)error;
    while ((e = ckht_next(self, &it)) != NULL) {
        if (ckht_in_ns(e, ns))
            ckht_entry_append(out, e);
    }
    ckht_write_end(self, previous);
    return 0;
}

static int ckht_count(void *state, const char *ns, size_t *out,
                      GError **error)
{
    ckht *self = state;
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ckht *previous;
    ckht_entry *e;
    size_t n = 0;

    (void)error;
    if (ns == NULL) {
        *out = atomic_load_explicit(&self->n_entries, memory_order_relaxed);
        return 0;
    }
    previous = ckht_write_begin(self);
    while ((e = ckht_next(self, &it)) != NULL)
        n += ckht_in_ns(e, ns);
    ckht_write_end(self, previous);
    *out = n;
    return 0;
}

static int ckht_count_namespaces(void *state, GArray *out, GError **error)
{
    ckht *self = state;
    ckht *previous = ckht_write_begin(self);
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    /* Namespace -> its index in @out; the keys are the entries' own bytes,
     * which no write can free while the writer lock is held. */
    GHashTable *index = g_hash_table_new(g_str_hash, g_str_equal);
    ckht_entry *e;
    gpointer at;

    (void)error;
    while ((e = ckht_next(self, &it)) != NULL) {
        if (g_hash_table_lookup_extended(index, e->key, NULL, &at)) {
            g_array_index(out, procreg_namespace_info,
                          GPOINTER_TO_UINT(at)).entries++;
        } else {
            procreg_namespace_info info = {g_strdup(e->key), 1};

            g_hash_table_insert(index, e->key, GUINT_TO_POINTER(out->len));
            g_array_append_val(out, info);
        }
    }
    ckht_write_end(self, previous);
    g_hash_table_unref(index);
    return 0;
}

static int ckht_list_names(void *state, const char *ns, size_t max,
                           GPtrArray *out)
{
    ckht *self = state;
    ckht *previous = ckht_write_begin(self);
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ckht_entry *e;
    size_t n = 0;

    while (n < max && (e = ckht_next(self, &it)) != NULL) {
        if (ckht_in_ns(e, ns)) {
            g_ptr_array_add(out, g_strdup(ckht_entry_name(e)));
            n++;
        }
    }
    ckht_write_end(self, previous);
    return 0;
}

static int ckht_drop_namespace(void *state, const char *ns, GArray *removed,
                               GError **error)
{
    ckht *self = state;
    ckht *previous = ckht_write_begin(self);
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    GPtrArray *doomed = g_ptr_array_new();
    ckht_entry *e;
    unsigned int i;
    int r = 0;

    /* ck_ht cannot be changed while iterated: collect, then remove. */
    while ((e = ckht_next(self, &it)) != NULL) {
        if (ckht_in_ns(e, ns))
            g_ptr_array_add(doomed, e);
    }
    for (i = 0; i < doomed->len; i++) {
        size_t size;

        e = g_ptr_array_index(doomed, i);
        size = ckht_entry_key_size(e);
        /* The prepared key's hash is procreg_key_hash() of these bytes. */
        if (ckht_unpublish(self, e->key, size,
                           procreg_key_hash(e->key, size)) != e) {
            r = procreg_set_error(error, PROCREG_EBACKEND,
                                  "ckht: table lost \"%s\" while dropping "
                                  "namespace \"%s\"",
                                  ckht_entry_name(e), ns);
            break;
        }
        if (removed != NULL)
            ckht_entry_append(removed, e);
        ckht_retire(self, e);
    }
    g_ptr_array_free(doomed, TRUE);
    ckht_write_end(self, previous);
    return r;
}

static int ckht_find_by_metadata(void *state, const char *ns,
                                 const char *meta_key, GVariant *value,
                                 GArray *out, GError **error)
{
    ckht *self = state;
    ckht *previous = ckht_write_begin(self);
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ckht_entry *e;

    (void)error;
    while ((e = ckht_next(self, &it)) != NULL) {
        GVariant *metadata = ckht_entry_metadata(e);
        GVariant *v;

        if (metadata == NULL || !ckht_in_ns(e, ns))
            continue;
        v = g_variant_lookup_value(metadata, meta_key, NULL);
        if (v == NULL)
            continue;
        if (procreg_metadata_value_equal(v, value))
            ckht_entry_append(out, e);
        g_variant_unref(v);
    }
    ckht_write_end(self, previous);
    return 0;
}

/* Figures for memory_usage, health_check and stats.  Under the lock. */
typedef struct {
    size_t entries;
    size_t capacity;
    size_t table_bytes;
    size_t entry_bytes;
    size_t group_bytes;
    size_t total_bytes;
    procreg_epoch_stats epoch;
} ckht_figures;

static void ckht_get_figures(ckht *self, ckht_figures *f)
{
    /* Reclaim what readers let go of, so the figures are current. */
    procreg_epoch_flush(self->epoch);
    procreg_epoch_get_stats(self->epoch, &f->epoch);
    f->entries = atomic_load_explicit(&self->n_entries, memory_order_relaxed);
    f->capacity = ckht_capacity(self);
    f->table_bytes = sizeof(*self->ht) + self->table_bytes;
    f->entry_bytes = self->entry_bytes;
    f->group_bytes = procreg_ckht_groups_bytes(self->groups);
    f->total_bytes = sizeof(*self) + f->table_bytes + f->entry_bytes +
                     f->group_bytes + f->epoch.pending_bytes +
                     f->epoch.overhead_bytes;
}

static int ckht_memory_usage(void *state, size_t *bytes)
{
    ckht *self = state;
    ckht *previous = ckht_write_begin(self);
    ckht_figures f;

    ckht_get_figures(self, &f);
    ckht_write_end(self, previous);
    *bytes = f.total_bytes;
    return 0;
}

static void ckht_add_figures(GVariantDict *d, const ckht_figures *f)
{
    g_variant_dict_insert(d, "entries", "t", (guint64)f->entries);
    g_variant_dict_insert(d, "table_capacity", "t", (guint64)f->capacity);
    g_variant_dict_insert(d, "load_factor", "d",
                          f->capacity ? (double)f->entries / (double)f->capacity
                                      : 0.0);
    g_variant_dict_insert(d, "table_bytes", "t", (guint64)f->table_bytes);
    g_variant_dict_insert(d, "entry_bytes", "t", (guint64)f->entry_bytes);
    g_variant_dict_insert(d, "group_bytes", "t", (guint64)f->group_bytes);
    g_variant_dict_insert(d, "memory_bytes", "t", (guint64)f->total_bytes);
    g_variant_dict_insert(d, "epoch_pending", "t", (guint64)f->epoch.pending);
    g_variant_dict_insert(d, "epoch_pending_bytes", "t",
                          (guint64)f->epoch.pending_bytes);
    g_variant_dict_insert(d, "epoch_reclaimed", "t",
                          (guint64)f->epoch.reclaimed);
    g_variant_dict_insert(d, "epoch_records", "t",
                          (guint64)procreg_epoch_records_allocated());
    g_variant_dict_insert(d, "epoch_records_in_use", "t",
                          (guint64)procreg_epoch_records_in_use());
}

static int ckht_health_check(void *state, GVariantDict *details,
                             char **message)
{
    ckht *self = state;
    ckht *previous = ckht_write_begin(self);
    uint64_t table_count = ck_ht_count(self->ht);
    ckht_figures f;
    int status = PROCREG_HEALTH_OK;

    ckht_get_figures(self, &f);
    ckht_write_end(self, previous);
    ckht_add_figures(details, &f);

    if (table_count != f.entries) {
        status = PROCREG_HEALTH_FAILED;
        *message = g_strdup_printf("ckht: the table holds %" G_GUINT64_FORMAT
                                   " entries but %zu were registered",
                                   table_count, f.entries);
    } else if (f.epoch.pending > f.entries + CKHT_PENDING_DEGRADED) {
        status = PROCREG_HEALTH_DEGRADED;
        *message = g_strdup_printf("ckht: %zu retired objects wait for "
                                   "reclamation: a reader may be stalled "
                                   "inside a lookup", f.epoch.pending);
    } else {
        *message = g_strdup_printf("ckht: %zu entries, %zu slots, %zu "
                                   "retired objects pending",
                                   f.entries, f.capacity, f.epoch.pending);
    }
    return status;
}

static void ckht_stats(void *state, GVariantDict *out)
{
    ckht *self = state;
    ckht *previous = ckht_write_begin(self);
    struct ck_ht_stat st;
    ckht_figures f;
    uint64_t revision, grows, rebuilds;

    ckht_get_figures(self, &f);
    ck_ht_stat(self->ht, &st);
    procreg_ckht_groups_stats(self->groups, out);
    revision = self->revision;
    grows = self->grows;
    rebuilds = self->rebuilds;
    ckht_write_end(self, previous);
    ckht_add_figures(out, &f);
    g_variant_dict_insert(out, "probe_maximum", "t", (guint64)st.probe_maximum);
    g_variant_dict_insert(out, "table_grows", "t", (guint64)grows);
    g_variant_dict_insert(out, "table_rebuilds", "t", (guint64)rebuilds);
    g_variant_dict_insert(out, "revision", "t", (guint64)revision);
}

const procreg_backend_ops procreg_ckht_backend_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "ckht",
    .description = "In-process hash table (Concurrency Kit ck_ht): lookups "
                   "take no lock, one writer at a time",
    .caps = PROCREG_CAP_THREADSAFE | PROCREG_CAP_LOCKFREE_READS |
            PROCREG_CAP_GROUPS,
    .options = ckht_options,
    .init = ckht_init,
    .destroy = ckht_destroy,
    .register_entry = ckht_register,
    .lookup = ckht_lookup,
    .lookup_entry = ckht_lookup_entry,
    .unregister = ckht_unregister,
    .list_all = ckht_list_all,
    .update_metadata = ckht_update_metadata,
    .health_check = ckht_health_check,
    .count = ckht_count,
    .list_names = ckht_list_names,
    .drop_namespace = ckht_drop_namespace,
    .find_by_metadata = ckht_find_by_metadata,
    .memory_usage = ckht_memory_usage,
    .stats = ckht_stats,
    .count_namespaces = ckht_count_namespaces,
    .group_join = procreg_ckht_group_join,
    .group_leave = procreg_ckht_group_leave,
    .group_members = procreg_ckht_group_members,
    .group_list_all = procreg_ckht_group_list_all,
    .group_count = procreg_ckht_group_count,
    .group_list = procreg_ckht_group_list,
    .group_dispatch = procreg_ckht_group_dispatch,
    .group_pick = procreg_ckht_group_pick,
    .group_member = procreg_ckht_group_member,
};
