/*
 * What the files of the ghash backend share: the instance, and the group
 * slots ghash-groups.c implements for the table in ghash.c.  Hidden.
 */
#ifndef PROCREG_GHASH_INTERNAL_H
#define PROCREG_GHASH_INTERNAL_H

#include <procreg/backend.h>

#include <string.h>

#include "../slab/packed-owner.h"
#include "../slab/slab.h"

/* GHashTable functions for procreg_key* keys, with their prepared hash. */
static inline guint procreg_ghash_key_hash(gconstpointer k)
{
    const procreg_key *key = k;
    return (guint)(key->hash ^ (key->hash >> 32));
}

static inline gboolean procreg_ghash_key_equal(gconstpointer a,
                                               gconstpointer b)
{
    const procreg_key *x = a, *y = b;
    return x->hash == y->hash && x->ns_len == y->ns_len &&
           x->name_len == y->name_len &&
           memcmp(x->bytes, y->bytes, procreg_key_size(x)) == 0;
}

typedef struct gh_groups gh_groups;

typedef struct {
    GHashTable *by_key;       /* procreg_key* (inside the entry), key and value */
    GHashTable *by_namespace; /* char* ns -> gh_namespace (ghash.c) */
    uint64_t revision;        /* entries' and members' changes */
    size_t bytes; /* entry allocations, for memory_usage */
    size_t ns_bytes; /* namespace records, for memory_usage */
    gh_groups *groups;
    procreg_slab slab; /* the entries' memory (backends/slab) */
} ghash_state;

gh_groups *procreg_ghash_groups_new(void);
void procreg_ghash_groups_free(gh_groups *g);
/* Bytes the groups hold. */
size_t procreg_ghash_groups_bytes(gh_groups *g);

int procreg_ghash_group_join(void *state, const procreg_key *key,
                             const procreg_record *record,
                             procreg_member *joined, GError **error);
int procreg_ghash_group_leave(void *state, const procreg_key *key,
                              uint64_t member_id, const procreg_owner *owner,
                              procreg_event_reason reason, GArray *removed,
                              GError **error);
int procreg_ghash_group_members(void *state, const procreg_key *key,
                                GArray *out, GError **error);
int procreg_ghash_group_list_all(void *state, const char *ns, GArray *out,
                                 GError **error);
int procreg_ghash_group_count(void *state, const procreg_key *key,
                              size_t *out, GError **error);
int procreg_ghash_group_list(void *state, const char *ns, GArray *out,
                             GError **error);
int procreg_ghash_group_dispatch(void *state, const procreg_key *key,
                                 procreg_member_fn fn, gpointer user_data,
                                 size_t *visited, GError **error);
int procreg_ghash_group_pick(void *state, const procreg_key *key,
                             bool round_robin, uint64_t arg,
                             procreg_member *out, GError **error);

int procreg_ghash_group_member(void *state, const procreg_key *key,
                               uint64_t member_id, procreg_member *out,
                               GError **error);

#endif
