/*
 * ghash's groups: a table of groups by key, each holding its members in a
 * procreg_grp_set (backends/groups-common) in REFCOUNT mode.
 *
 * Locking.  The core's reader/writer lock orders every slot but dispatch:
 * joins and leaves are exclusive, reads share.  Dispatch runs without it
 * (backend.h), so one more lock, `lock` below, orders what dispatch
 * touches: the table of groups and each group's array pointer.  Writers
 * hold it for their whole (short) change; a dispatch holds it only to find
 * the group and take a reference on its array (a snapshot), then iterates
 * that array with no lock.  A writer never changes an array a snapshot
 * holds: it copies it first (member-set.h, R2), so writers never wait for
 * a dispatch, and a dispatch never copies.  The cost: a join or leave that
 * finds a dispatch in progress on its group copies the array, O(members),
 * once per dispatch.
 */
#include "ghash-internal.h"

#include "../groups-common/member-set.h"

#include <pthread.h>

typedef struct {
    procreg_grp_set set;
    procreg_key key; /* last: the key bytes follow */
} gh_group;

struct gh_groups {
    pthread_mutex_t lock;   /* see the header comment */
    GHashTable *by_key;     /* procreg_key* (in the group) -> gh_group* */
    procreg_grp_index *ix;
    size_t group_bytes;
};

static size_t group_size(const procreg_key *key)
{
    return sizeof(gh_group) + procreg_key_size(key) + 1;
}

gh_groups *procreg_ghash_groups_new(void)
{
    gh_groups *g = g_new0(gh_groups, 1);
    pthread_mutex_init(&g->lock, NULL);
    g->by_key = g_hash_table_new(procreg_ghash_key_hash,
                                 procreg_ghash_key_equal);
    g->ix = procreg_grp_index_new(PROCREG_GRP_REFCOUNT, NULL, NULL);
    return g;
}

void procreg_ghash_groups_free(gh_groups *g)
{
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, g->by_key);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        procreg_grp_set_destroy(&((gh_group *)v)->set);
        g_free(v);
    }
    g_hash_table_unref(g->by_key);
    procreg_grp_index_free(g->ix);
    pthread_mutex_destroy(&g->lock);
    g_free(g);
}

size_t procreg_ghash_groups_bytes(gh_groups *g)
{
    return procreg_grp_index_bytes(g->ix) + g->group_bytes +
           g_hash_table_size(g->by_key) * (sizeof(guint) + sizeof(gpointer)) *
               3 / 2;
}

static gh_groups *groups_of(void *state)
{
    return ((ghash_state *)state)->groups;
}

static gh_group *group_get(gh_groups *g, const procreg_key *key)
{
    return g_hash_table_lookup(g->by_key, key);
}

/* ---- writes (the core's write lock held, and ours) ---- */

int procreg_ghash_group_join(void *state, const procreg_key *key,
                             const procreg_record *record,
                             procreg_member *joined, GError **error)
{
    ghash_state *s = state;
    gh_groups *g = s->groups;
    int rc = 0;
    pthread_mutex_lock(&g->lock);
    gh_group *grp = group_get(g, key);
    bool fresh = grp == NULL;
    if (fresh) {
        grp = g_malloc0(group_size(key));
        memcpy(&grp->key, key, sizeof *key + procreg_key_size(key) + 1);
        grp->key.refcount = 0;
    }
    procreg_grp_member *m =
        procreg_grp_add(g->ix, &grp->set, record, s->revision + 1);
    if (m == NULL) {
        if (fresh)
            g_free(grp);
        rc = procreg_set_error(error, PROCREG_ENOMEM, "ghash: out of memory");
    } else {
        s->revision++;
        if (fresh) {
            g_hash_table_insert(g->by_key, &grp->key, grp);
            g->group_bytes += group_size(key);
        }
        if (joined != NULL)
            procreg_grp_member_copy(m, joined);
    }
    pthread_mutex_unlock(&g->lock);
    return rc;
}

int procreg_ghash_group_leave(void *state, const procreg_key *key,
                              uint64_t member_id, const procreg_owner *owner,
                              procreg_event_reason reason, GArray *removed,
                              GError **error)
{
    ghash_state *s = state;
    gh_groups *g = s->groups;
    (void)reason; /* the core reports it: ghash orders no events */
    pthread_mutex_lock(&g->lock);
    gh_group *grp = group_get(g, key);
    guint before = removed ? removed->len : 0;
    int rc = procreg_grp_leave(g->ix, grp ? &grp->set : NULL, key, member_id,
                               owner, removed, error);
    /* A removal is a change too; out of memory, some may have gone. */
    if (rc > 0 || (removed != NULL && removed->len > before))
        s->revision++;
    if (grp != NULL && procreg_grp_live(&grp->set) == 0) {
        g_hash_table_remove(g->by_key, &grp->key);
        g->group_bytes -= group_size(&grp->key);
        procreg_grp_set_retire(g->ix, &grp->set);
        g_free(grp);
    }
    pthread_mutex_unlock(&g->lock);
    return rc;
}

/* ---- reads (the core's read lock held: no writer runs) ---- */

int procreg_ghash_group_members(void *state, const procreg_key *key,
                                GArray *out, GError **error)
{
    gh_group *grp = group_get(groups_of(state), key);
    if (grp != NULL)
        procreg_grp_set_append(&grp->set, out);
    return 0;
}

int procreg_ghash_group_count(void *state, const procreg_key *key,
                              size_t *out, GError **error)
{
    gh_group *grp = group_get(groups_of(state), key);
    *out = grp != NULL ? procreg_grp_live(&grp->set) : 0;
    return 0;
}

static bool in_ns(const gh_group *grp, const char *ns)
{
    return ns == NULL || strcmp(procreg_key_namespace(&grp->key), ns) == 0;
}

int procreg_ghash_group_list_all(void *state, const char *ns, GArray *out,
                                 GError **error)
{
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, groups_of(state)->by_key);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        gh_group *grp = v;
        if (!in_ns(grp, ns))
            continue;
        guint from = out->len;
        procreg_grp_set_append(&grp->set, out);
        for (guint i = from; i < out->len; i++) {
            procreg_member *m = &g_array_index(out, procreg_member, i);
            m->ns = g_strdup(procreg_key_namespace(&grp->key));
            m->group = g_strdup(procreg_key_name(&grp->key));
        }
    }
    return 0;
}

int procreg_ghash_group_list(void *state, const char *ns, GArray *out,
                             GError **error)
{
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, groups_of(state)->by_key);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        gh_group *grp = v;
        if (!in_ns(grp, ns))
            continue;
        procreg_group_info info = {
            g_strdup(procreg_key_namespace(&grp->key)),
            g_strdup(procreg_key_name(&grp->key)),
            procreg_grp_live(&grp->set)};
        g_array_append_val(out, info);
    }
    return 0;
}

int procreg_ghash_group_pick(void *state, const procreg_key *key,
                             bool round_robin, uint64_t arg,
                             procreg_member *out, GError **error)
{
    gh_group *grp = group_get(groups_of(state), key);
    const procreg_grp_array *a = grp ? procreg_grp_load(&grp->set) : NULL;
    if (a == NULL || !procreg_grp_array_pick(a, round_robin, arg, out))
        return PROCREG_ENOTFOUND;
    return 0;
}

int procreg_ghash_group_member(void *state, const procreg_key *key,
                               uint64_t member_id, procreg_member *out,
                               GError **error)
{
    gh_groups *g = groups_of(state);
    gh_group *grp = group_get(g, key);
    procreg_grp_member *m = grp ? procreg_grp_find(g->ix, member_id) : NULL;
    if (m == NULL || !procreg_grp_in_set(m, &grp->set))
        return PROCREG_ENOTFOUND;
    procreg_grp_member_copy(m, out);
    return 0;
}

/* ---- dispatch (no core lock: see the header comment) ---- */

int procreg_ghash_group_dispatch(void *state, const procreg_key *key,
                                 procreg_member_fn fn, gpointer user_data,
                                 size_t *visited, GError **error)
{
    gh_groups *g = groups_of(state);
    pthread_mutex_lock(&g->lock);
    gh_group *grp = group_get(g, key);
    procreg_grp_array *snapshot = grp ? procreg_grp_snapshot(&grp->set) : NULL;
    pthread_mutex_unlock(&g->lock);
    *visited = snapshot ? procreg_grp_array_foreach(snapshot, fn, user_data)
                        : 0;
    procreg_grp_snapshot_release(snapshot);
    return 0;
}
