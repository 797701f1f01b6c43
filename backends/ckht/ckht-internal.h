/*
 * What the files of the ckht backend share: the instance (ckht.c owns the
 * entries, ckht-groups.c the groups), and the group slots.  Hidden.
 */
#ifndef PROCREG_CKHT_INTERNAL_H
#define PROCREG_CKHT_INTERNAL_H

#include <procreg/backend.h>

#include <ck_ht.h>
#include <ck_md.h>
#include <stdatomic.h>

#include "../ck-common/ck-common.h"

typedef struct ckht_groups ckht_groups;

/* Lookups read only `ht` (and the table it points to); everything a
 * writer changes on each operation lives on the following cache lines, so
 * that writes do not keep invalidating the line readers need.  `ht` is a
 * pointer so that a rebuild can replace the whole ck_ht (see ckht_retire). */
typedef struct {
    _Alignas(CK_MD_CACHELINE) ck_ht_t *ht;
    _Alignas(CK_MD_CACHELINE) procreg_ck_lock lock; /* the writer lock */
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
    ckht_groups *groups;  /* ckht-groups.c, under the lock */
} ckht;

/* Groups: made at init (NULL when out of memory), freed at destroy with
 * the writer lock held. */
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

#endif
