/*
 * The ckht backend's private header: the entry layout, the instance, and
 * the functions one room of backends/ckht offers the others.  Every
 * function here is hidden in the library (procreg_ckht_ prefix).
 *
 * Rooms: ckht.c (the instance, the ops on one key, the vtable), entry.c
 * (entries: allocation, copies out), table.c (ck_ht: its allocator, the
 * writer lock, publish, unpublish, retire, rebuild), scan.c (ops over
 * many entries), figures.c (memory, health, stats).
 */
#ifndef PROCREG_CKHT_INTERNAL_H
#define PROCREG_CKHT_INTERNAL_H

#include <procreg/backend.h>

#include <ck_ht.h>
#include <ck_md.h>
#include <ck_pr.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../ck-common/ck-common.h"

/* Health turns "degraded" when this many retired objects (beyond the
 * number of live entries) still wait for readers to move on. */
#define CKHT_PENDING_DEGRADED 65536

/* ------------------------------------------------------------------------ */
/* Entries                                                                  */

enum { CKHT_HAS_METADATA = 1u << 0 };

/* Links of the namespace index (namespaces.c); writers only. */
typedef struct ckht_link {
    struct ckht_link *prev, *next;
} ckht_link;

typedef struct {
    ckht_link ns_link; /* under the writer lock; lookups never read it */
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

static inline ckht_entry *ckht_entry_of_link(ckht_link *link)
{
    return (ckht_entry *)(void *)((char *)link - offsetof(ckht_entry,
                                                          ns_link));
}

/* Bytes of the ck_ht key: ns, NUL, name (no trailing NUL). */
static inline size_t ckht_entry_key_size(const ckht_entry *e)
{
    return (size_t)e->ns_len + 1 + e->name_len;
}

/* Bytes an entry holds: its allocation and its metadata's data. */
size_t procreg_ckht_entry_bytes(ckht_entry *e);
ckht_entry *procreg_ckht_entry_new(const procreg_key *key,
                                   const procreg_owner *owner,
                                   GVariant *metadata, int64_t registered_at,
                                   uint64_t revision);
/* A procreg_epoch_free_fn for retired entries (and destroy). */
void procreg_ckht_entry_free(void *p);
/* Fill @out (caller-owned copies) from @e. */
void procreg_ckht_entry_fill(procreg_entry *out, const ckht_entry *e,
                             bool names);
void procreg_ckht_entry_append(GArray *out, const ckht_entry *e);

/* ------------------------------------------------------------------------ */
/* The instance                                                             */

typedef struct ckht_groups ckht_groups;

/* Lookups read only `ht` (and the table it points to); everything a
 * writer changes on each operation lives on the following cache lines, so
 * that writes do not keep invalidating the line readers need.  `ht` is a
 * pointer so that a rebuild can replace the whole ck_ht (see
 * procreg_ckht_retire()). */
typedef struct {
    _Alignas(CK_MD_CACHELINE) ck_ht_t *ht;
    _Alignas(CK_MD_CACHELINE) procreg_mutex lock; /* the writer lock */
    procreg_epoch_domain *epoch;
    atomic_size_t n_entries; /* written under the lock, read anywhere */
    /* Under the lock: */
    uint64_t revision;    /* last revision handed out */
    size_t entry_bytes;   /* what live entries hold */
    size_t table_bytes;   /* ck_ht's tables not yet retired */
    size_t map_size;      /* the newest table's allocation: the current one */
    bool rebuilding;
    uint64_t grows;
    size_t removals;      /* since the last rebuild */
    uint64_t rebuilds;
    GHashTable *namespaces; /* name -> ckht_ns (namespaces.c) */
    struct ckht_ns *last_ns; /* the namespace written last, or NULL */
    size_t ns_bytes;        /* what the namespace index holds */
    ckht_groups *groups;    /* ckht-groups.c, under the lock */
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
ckht *procreg_ckht_write_begin(ckht *self);
void procreg_ckht_write_end(ckht *self, ckht *previous);
/* The table of a new instance (false: out of memory), and its end. */
bool procreg_ckht_table_init(ckht *self, uint64_t slots);
void procreg_ckht_table_destroy(ckht *self);
/* Slots of the current table. */
size_t procreg_ckht_capacity(const ckht *self);
/* Make @e reachable as the value of @key, on its namespace's list:
 * inserted (@replace false) or replacing the current entry, which must
 * exist, and goes to @old. */
bool procreg_ckht_publish(ckht *self, const procreg_key *key,
                          ckht_entry *e, bool replace, ckht_entry **old);
/* Unpublish the entry of key (@bytes, @size, @hash) and return it, or
 * NULL when there is none; follow with procreg_ckht_retire(). */
ckht_entry *procreg_ckht_unpublish(ckht *self, const char *bytes,
                                   size_t size, uint64_t hash);
/* Account for the unpublished @e and retire it. */
void procreg_ckht_retire(ckht *self, ckht_entry *e);
/* Next live entry of the table, or NULL. */
ckht_entry *procreg_ckht_next(ckht *self, ck_ht_iterator_t *it);

/* The entry of @key, or NULL.  Readers call it inside a read section;
 * writers under the writer lock. */
static inline ckht_entry *procreg_ckht_get(ckht *self, const procreg_key *key)
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
