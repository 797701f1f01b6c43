/*
 * The ckht backend's private header: the entry layout, the instance, and
 * the functions one room of backends/ckht offers the others.  Every
 * function here is hidden in the library (procreg_ckht_ prefix).
 *
 * Rooms: ckht.c (the instance, the ops on one key, the vtable), entry.c
 * (entries: allocation, copies out, in the instance's slab:
 * backends/slab), table.c (ck_hs: its allocator, the writer lock, publish, unpublish,
 * retire, rebuild), scan.c (ops over many entries), figures.c (memory,
 * health, stats).
 */
#ifndef PROCREG_CKHT_INTERNAL_H
#define PROCREG_CKHT_INTERNAL_H

#include <procreg/backend.h>

#include <ck_hs.h>
#include <ck_md.h>
#include <ck_pr.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../ck-common/ck-common.h"
#include "../slab/packed-owner.h"
#include "../slab/slab.h"

/* Smallest table we ask ck_hs for, in slots: keeps the capacity figure
 * derived from the map's allocation size exact (procreg_ckht_capacity()). */
#define CKHT_MIN_SLOTS 32

/* Health turns "degraded" when this many retired objects (beyond the
 * number of live entries) still wait for readers to move on. */
#define CKHT_PENDING_DEGRADED 65536

/* ------------------------------------------------------------------------ */
/* Tests only (tests/ckht/slab.c): called by destroy after the live
 * entries were freed and before the retired ones are waited for. */
extern void (*procreg_ckht_test_destroy_hook)(void);

/* ------------------------------------------------------------------------ */
/* Entries                                                                  */

/* Links of the namespace index (namespaces.c); writers only. */
typedef struct ckht_link {
    struct ckht_link *prev, *next;
} ckht_link;

/* flags: what sits in front of the entry, each flag worth its size in
 * pointers, so that the flags times sizeof(void *) is the bytes in front
 * (ckht_entry_front_size(): writers pay a shift, not two tests). */
#define CKHT_HAS_METADATA 0x1u  /* a GVariant *, just before the entry */
#define CKHT_OWNER_IN_FRONT 0x2u /* the whole procreg_owner, before that */
G_STATIC_ASSERT(sizeof(procreg_owner) == 2 * sizeof(void *));
G_STATIC_ASSERT(2 * PROCREG_NAME_MAX + 1 <= UINT16_MAX);

/* At most 47 bytes of header, so that both of procreg-bench's keys (24
 * and 25 bytes) and production/svc-NNNNNNN (22) fit a 72-byte slot of
 * the slab's 8-byte classes (an 80-byte one before those).  The fields
 * lookups read (owner, hash, key_size, key) come last, next to each
 * other: a hit reads bytes 32 to 71 of the entry, not both ends.  ck_hs's
 * compare callback (table.c) reads hash first on every occupied slot it
 * passes. */
typedef struct {
    ckht_link ns_link; /* under the writer lock; lookups never read it */
    uint64_t revision;
    int64_t registered_at;
    uint64_t owner; /* backends/slab/packed-owner.h; 0: in front */
    /* ck_hs's hash of the key: the low 32 bits of its procreg_key hash
     * (ckht_hs_hash()).  Kept so that a growing table never rehashes key
     * bytes, and so that a compare rejects other keys with one load. */
    uint32_t hash;
    uint16_t key_size; /* bytes of key[] */
    uint8_t flags;
    /* "ns\0name", the key's bytes, without a trailing NUL (it would cost
     * the 72-byte slot above).  In front of the entry, in the same
     * allocation, as flags says: the owner when it does not pack, then
     * the metadata's GVariant *. */
    char key[];
} ckht_entry;
G_STATIC_ASSERT(offsetof(ckht_entry, key) <= 47);

/* The hash ck_hs is given for a key: all ck_hs calls pass this, and the
 * entry keeps it. */
static inline uint32_t ckht_hs_hash(const procreg_key *key)
{
    return (uint32_t)key->hash;
}

/* Bytes in front of @e in its allocation. */
static inline size_t ckht_entry_front_size(const ckht_entry *e)
{
    return (size_t)e->flags * sizeof(void *);
}

static inline void *ckht_entry_base(ckht_entry *e)
{
    return (char *)e - ckht_entry_front_size(e);
}

/* The owner of @e, exactly as registered.  Lookups call it: when the
 * owner packs, a load, a mask (which also tests for the sentinel), a
 * shift and the two stores, with no jump taken. */
static inline void ckht_entry_owner(const ckht_entry *e, procreg_owner *out)
{
    if (G_UNLIKELY(!procreg_owner_unpack(e->owner, out)))
        *out = *(const procreg_owner *)(const void *)((const char *)e -
                                                      ckht_entry_front_size(e));
}

static inline GVariant *ckht_entry_metadata(const ckht_entry *e)
{
    if (!(e->flags & CKHT_HAS_METADATA))
        return NULL;
    return ((GVariant *const *)(const void *)e)[-1];
}

/* Bytes of the key: ns, NUL, name. */
static inline size_t ckht_entry_key_size(const ckht_entry *e)
{
    return e->key_size;
}

/* The namespace is NUL-terminated (by the key's separator); the name is
 * not: it has ckht_entry_name_len() bytes. */
static inline const char *ckht_entry_name(const ckht_entry *e)
{
    return e->key + strlen(e->key) + 1;
}

static inline int ckht_entry_name_len(const ckht_entry *e)
{
    return (int)(ckht_entry_key_size(e) - strlen(e->key) - 1);
}

static inline ckht_entry *ckht_entry_of_link(ckht_link *link)
{
    return (ckht_entry *)(void *)((char *)link - offsetof(ckht_entry,
                                                          ns_link));
}

/* Room for the largest key on the stack. */
typedef union {
    procreg_key key;
    char bytes[sizeof(procreg_key) + 2 * (PROCREG_NAME_MAX + 1)];
} ckht_stack_key;

/* The key of @e, built in @buf. */
const procreg_key *procreg_ckht_entry_key(const ckht_entry *e,
                                          ckht_stack_key *buf);
/* The allocation of @e: what is in front of it, its header and its key. */
static inline size_t ckht_entry_alloc_size(const ckht_entry *e)
{
    return ckht_entry_front_size(e) + offsetof(ckht_entry, key) +
           ckht_entry_key_size(e);
}
/* Bytes an entry holds: its allocation (its slot's size class) and its
 * metadata's data.  In line: every write accounts for an entry. */
static inline size_t procreg_ckht_entry_bytes(ckht_entry *e)
{
    GVariant *metadata = ckht_entry_metadata(e);

    return procreg_slab_bytes(ckht_entry_base(e), ckht_entry_alloc_size(e)) +
           (metadata ? g_variant_get_size(metadata) : 0);
}
ckht_entry *procreg_ckht_entry_new(procreg_slab *slab, const procreg_key *key,
                                   const procreg_owner *owner,
                                   GVariant *metadata, int64_t registered_at,
                                   uint64_t revision);
/* A procreg_epoch_free_fn for retired entries (and destroy). */
void procreg_ckht_entry_free(void *p);
/* Fill @out (caller-owned copies) from @e, with ns and name when @names
 * (else NULL, as single-entry slots may leave them): every write copies
 * one out, so that case is in line. */
void procreg_ckht_entry_fill_names(procreg_entry *out, const ckht_entry *e);
static inline void procreg_ckht_entry_fill(procreg_entry *out,
                                           const ckht_entry *e, bool names)
{
    GVariant *metadata;

    if (names) {
        procreg_ckht_entry_fill_names(out, e);
        return;
    }
    metadata = ckht_entry_metadata(e);
    out->ns = NULL;
    out->name = NULL;
    ckht_entry_owner(e, &out->owner);
    out->metadata = metadata ? g_variant_ref(metadata) : NULL;
    out->registered_at = e->registered_at;
    out->revision = e->revision;
}
void procreg_ckht_entry_append(GArray *out, const ckht_entry *e);

/* ------------------------------------------------------------------------ */
/* The instance                                                             */

typedef struct ckht_groups ckht_groups;

/* Lookups read only `hs` (and the table it points to); everything a
 * writer changes on each operation lives on the following cache lines, so
 * that writes do not keep invalidating the line readers need.  `hs` is a
 * pointer so that a rebuild can replace the whole ck_hs (see
 * procreg_ckht_retire()). */
typedef struct {
    _Alignas(CK_MD_CACHELINE) ck_hs_t *hs;
    _Alignas(CK_MD_CACHELINE) procreg_mutex lock; /* the writer lock */
    procreg_epoch_domain *epoch;
    atomic_size_t n_entries; /* written under the lock, read anywhere */
    /* Under the lock: */
    uint64_t revision;    /* last revision handed out */
    size_t entry_bytes;   /* what live entries hold */
    size_t table_bytes;   /* ck_hs's maps not yet retired */
    size_t map_size;      /* the current map's allocation */
    uint64_t grows;
    size_t removals;      /* since the current map was made */
    uint64_t rebuilds;
    GHashTable *namespaces; /* name -> ckht_ns (namespaces.c) */
    struct ckht_ns *last_ns; /* the namespace written last, or NULL */
    size_t ns_bytes;        /* what the namespace index holds */
    ckht_groups *groups;    /* ckht-groups.c, under the lock */
    /* ck_hs's allocation while it may still be discarded (table.c:
     * ckht_hs_malloc()); NULL outside a ck_hs call. */
    void *new_map;
    size_t new_map_size;
    procreg_slab slab; /* the entries' memory, under its own lock */
} ckht;

/* The namespace index (namespaces.c); everything under the writer lock. */
typedef struct ckht_ns ckht_ns;
void procreg_ckht_ns_init(ckht *self);
void procreg_ckht_ns_destroy(ckht *self);
/* The namespace @ns, or NULL when it holds no entry. */
ckht_ns *procreg_ckht_ns_find(ckht *self, const char *ns);
/* Its entries: first, then next after @e; NULL after the last. */
ckht_entry *procreg_ckht_ns_first(ckht_ns *ns);
ckht_entry *procreg_ckht_ns_next(ckht_ns *ns, ckht_entry *e);
/* @e joins its namespace's list (false: out of memory, nothing done);
 * leaves it; takes the place of @old. */
bool procreg_ckht_ns_link(ckht *self, ckht_entry *e);
void procreg_ckht_ns_unlink(ckht *self, ckht_entry *e);
void procreg_ckht_ns_replace(ckht_entry *old, ckht_entry *e);

/* Writes: procreg_ckht_write_begin() takes the writer lock and returns
 * what to hand procreg_ckht_write_end(); every function below needs the
 * lock, except procreg_ckht_get(), which readers call in a read section. */
/* The instance whose writer lock this thread holds (ck_malloc's
 * callbacks have no context argument): saved and restored around each
 * write so that a decorator's writer over another instance nests. */
extern _Thread_local ckht *procreg_ckht_writer
    __attribute__((tls_model("initial-exec")));
/* In line: every write takes and leaves the lock. */
static inline ckht *procreg_ckht_write_begin(ckht *self)
{
    ckht *previous;

    procreg_mutex_lock(&self->lock);
    previous = procreg_ckht_writer;
    procreg_ckht_writer = self;
    return previous;
}
static inline void procreg_ckht_write_end(ckht *self, ckht *previous)
{
    procreg_epoch_tick(self->epoch);
    procreg_ckht_writer = previous;
    procreg_mutex_unlock(&self->lock);
}
/* The table of a new instance (false: out of memory), and its end. */
bool procreg_ckht_table_init(ckht *self, uint64_t slots);
void procreg_ckht_table_destroy(ckht *self);
/* Tests only (tests/ckht/map-figures.c): how many more maps ck_hs may
 * allocate before an allocation fails; SIZE_MAX (the default): no limit. */
extern size_t procreg_ckht_test_map_budget;
/* Slots of the current table. */
size_t procreg_ckht_capacity(const ckht *self);
/* Make @e, built for @key, reachable: inserted when @key has no entry
 * (*@found = NULL, and @e joins its namespace's list), or, with @replace,
 * in the place of the entry of @key, which must exist and goes to
 * *@found.  Without @replace a present entry stays and goes to *@found.
 * false: out of memory, nothing changed. */
bool procreg_ckht_publish(ckht *self, const procreg_key *key,
                          ckht_entry *e, bool replace, ckht_entry **found);
/* Unpublish the entry of @key and return it, or NULL when there is none;
 * follow with procreg_ckht_retire(). */
ckht_entry *procreg_ckht_unpublish(ckht *self, const procreg_key *key);
/* Unpublish the entry of @key only if its owner is @owner
 * (procreg_backend_owner_same()), in one probe, and return it; NULL when
 * it stays, with *@kept = the entry of another owner, or NULL when @key
 * has none.  Follow a removal with procreg_ckht_retire(). */
ckht_entry *procreg_ckht_unpublish_owned(ckht *self, const procreg_key *key,
                                         const procreg_owner *owner,
                                         ckht_entry **kept);
/* Account for the unpublished @e and retire it. */
void procreg_ckht_retire(ckht *self, ckht_entry *e);
/* Next live entry of the table, or NULL. */
ckht_entry *procreg_ckht_next(ckht *self, ck_hs_iterator_t *it);

/* The entry of @key, or NULL.  Readers call it inside a read section;
 * writers under the writer lock.  ck_hs gets the prepared key's hash
 * (nothing is hashed) and calls the compare callback (table.c) on the
 * occupied slots it probes. */
static inline ckht_entry *procreg_ckht_get(ckht *self, const procreg_key *key)
{
    ck_hs_t *hs = ck_pr_load_ptr(&self->hs);
    ckht_entry *e;

    /* Pairs with the release in ckht_rebuild(). */
    PROCREG_TSAN_ACQUIRE(hs);
    PROCREG_TSAN_IGNORE_READS_BEGIN();
    e = ck_hs_get(hs, ckht_hs_hash(key), key);
    PROCREG_TSAN_IGNORE_READS_END();
    if (e == NULL)
        return NULL;
    ck_pr_fence_load_depends();
    /* Pairs with the release in procreg_ckht_publish(). */
    PROCREG_TSAN_ACQUIRE(e);
    return e;
}

/* Ops over many entries (scan.c) and figures (figures.c). */
int procreg_ckht_list_all(void *state, const char *ns, GArray *out,
                          GError **error);
int procreg_ckht_count(void *state, const char *ns, size_t *out,
                       GError **error);
int procreg_ckht_count_namespaces(void *state, GArray *out, GError **error);
int procreg_ckht_list_names(void *state, const char *ns, size_t max,
                            GPtrArray *out);
int procreg_ckht_drop_namespace(void *state, const char *ns, GArray *removed,
                                GError **error);
int procreg_ckht_find_by_metadata(void *state, const char *ns,
                                  const char *meta_key, GVariant *value,
                                  GArray *out, GError **error);
int procreg_ckht_memory_usage(void *state, size_t *bytes);
int procreg_ckht_health_check(void *state, GVariantDict *details,
                              char **message);
void procreg_ckht_stats(void *state, GVariantDict *out);

/* Groups (ckht-groups.c): made at init (NULL when out of memory), freed
 * at destroy, when no call on the instance runs any more. */
ckht_groups *procreg_ckht_groups_new(ckht *self);
void procreg_ckht_groups_free(ckht_groups *g);
/* Bytes the groups hold (the writer lock held). */
size_t procreg_ckht_groups_bytes(const ckht_groups *g);
/* Groups and members now, for stats (the writer lock held). */
void procreg_ckht_groups_stats(const ckht_groups *g, GVariantDict *out);

int procreg_ckht_group_join(void *state, const procreg_key *key,
                            const procreg_record *record,
                            procreg_member *joined, GError **error);
int procreg_ckht_group_leave(void *state, const procreg_key *key,
                             uint64_t member_id, const procreg_owner *owner,
                             procreg_event_reason reason, GArray *removed,
                             GError **error);
int procreg_ckht_group_members(void *state, const procreg_key *key,
                               GArray *out, GError **error);
int procreg_ckht_group_list_all(void *state, const char *ns, GArray *out,
                                GError **error);
int procreg_ckht_group_count(void *state, const procreg_key *key,
                             size_t *out, GError **error);
int procreg_ckht_group_list(void *state, const char *ns, GArray *out,
                            GError **error);
int procreg_ckht_group_dispatch(void *state, const procreg_key *key,
                                procreg_member_fn fn, gpointer user_data,
                                size_t *visited, GError **error);
int procreg_ckht_group_pick(void *state, const procreg_key *key,
                            bool round_robin, uint64_t arg,
                            procreg_member *out, GError **error);
int procreg_ckht_group_member(void *state, const procreg_key *key,
                              uint64_t member_id, procreg_member *out,
                              GError **error);

#endif /* PROCREG_CKHT_INTERNAL_H */
