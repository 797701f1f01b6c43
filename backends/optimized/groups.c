/*
 * The optimized decorator's groups.  Every group slot goes to the inner
 * backend through the procreg_backend_group_* wrappers (a dispatch too:
 * the wrapper takes no lock, so a ckht or ghash inner iterates in place).
 * What the decorator adds is the member index: with `index` on (an inner
 * backend no other process or host writes), the metadata of each member is
 * indexed in a second opt_index (index.c), under a key of its own,
 * (ns, "group\x1fID"), so group_find costs its matches instead of a scan
 * of the namespace's members.
 *
 * Order: a join indexes its member after the inner join (its id comes
 * from the inner backend's answer), a leave unindexes the members the
 * inner leave reports, both under the group key's write stripe, so the
 * index follows the inner backend's order for each group.  A find reads
 * each match again from the inner backend (group_member) and checks it,
 * as the entries' find does: a member that left since the index was read
 * is not returned, so a leave in flight needs nothing more.  A join in
 * flight does: while one is, finds go to the inner backend (member_joins,
 * the invariant above procreg_opt_group_join()).  A notification from the
 * inner backend marks both indexes stale; the next find rebuilds them.
 * Groups never touch the lookup cache, which holds entries.
 */
#include "optimized.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for the longest member key: ns, group, '\x1f', 20 digits. */
typedef union {
    procreg_key key;
    char bytes[sizeof(procreg_key) + 2 * (PROCREG_NAME_MAX + 1) + 24];
} opt_member_key;

/* The index key of member @id of group (ns, group). */
static void member_key_make(opt_member_key *buf, const char *ns,
                            size_t ns_len, const char *group,
                            size_t group_len, uint64_t id)
{
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%" G_GUINT64_FORMAT, id);
    char *p = buf->key.bytes;

    buf->key.refcount = 0;
    buf->key.ns_len = (uint16_t)ns_len;
    buf->key.name_len = (uint16_t)(group_len + 1 + (size_t)n);
    memcpy(p, ns, ns_len);
    p[ns_len] = '\0';
    p += ns_len + 1;
    memcpy(p, group, group_len);
    p[group_len] = '\x1f';
    memcpy(p + group_len + 1, digits, (size_t)n + 1);
    buf->key.hash = procreg_key_hash(buf->key.bytes, procreg_key_size(&buf->key));
}

static void member_key_of(opt_member_key *buf, const procreg_key *group,
                          uint64_t id)
{
    member_key_make(buf, procreg_key_bytes(group), group->ns_len,
                    procreg_key_bytes(group) + group->ns_len + 1,
                    group->name_len, id);
}

/* Split a member key into its group key and id; false when malformed. */
static bool member_key_split(const procreg_key *k, opt_stack_key *group,
                             uint64_t *id)
{
    const char *name = procreg_key_bytes(k) + k->ns_len + 1;
    const char *sep = strrchr(name, '\x1f');
    char group_name[PROCREG_NAME_MAX + 1];
    char *end = NULL;

    if (sep == NULL || (size_t)(sep - name) > PROCREG_NAME_MAX)
        return false;
    memcpy(group_name, name, (size_t)(sep - name));
    group_name[sep - name] = '\0';
    *id = g_ascii_strtoull(sep + 1, &end, 10);
    return end != sep + 1 && *end == '\0' &&
           procreg_opt_key_make(group, procreg_key_bytes(k), group_name);
}

static bool member_matches(const procreg_member *m, const char *meta_key,
                           GVariant *value)
{
    GVariant *v;
    bool match;

    if (m->metadata == NULL)
        return false;
    v = g_variant_lookup_value(m->metadata, meta_key, NULL);
    match = v != NULL && procreg_metadata_value_equal(v, value);
    if (v != NULL)
        g_variant_unref(v);
    return match;
}

int procreg_opt_groups_reindex(opt_state *s, GError **error)
{
    GArray *all;
    int rc;

    if (s->member_index == NULL || !procreg_backend_has_groups(s->inner))
        return 0;
    all = procreg_member_array_new();
    rc = procreg_backend_group_list_all(s->inner, NULL, all, error);
    if (rc == 0) {
        procreg_opt_index_clear(s->member_index);
        for (guint i = 0; i < all->len; i++) {
            procreg_member *m = &g_array_index(all, procreg_member, i);
            opt_member_key key;

            if (m->metadata == NULL)
                continue;
            member_key_make(&key, m->ns, strlen(m->ns), m->group,
                            strlen(m->group), m->id);
            procreg_opt_index_set(s->member_index, &key.key, m->metadata);
        }
        /* `writes` is held exclusive: no join is in flight, and the index
         * now holds every member a failed join may have left out. */
        atomic_fetch_and_explicit(&s->member_joins, ~OPT_MEMBERS_STALE,
                                  memory_order_release);
    }
    g_array_unref(all);
    return rc;
}

/* Rebuild the member index after a failed join (OPT_MEMBERS_STALE), with
 * every write through the decorator excluded; false when it could not. */
static bool members_rebuild(opt_state *s)
{
    bool ok = true;

    pthread_rwlock_wrlock(&s->writes);
    if (atomic_load_explicit(&s->member_joins, memory_order_relaxed) &
        OPT_MEMBERS_STALE) {
        ok = procreg_opt_groups_reindex(s, NULL) == 0;
        if (ok)
            atomic_fetch_add_explicit(&s->index_rebuilds, 1,
                                      memory_order_relaxed);
    }
    pthread_rwlock_unlock(&s->writes);
    return ok;
}

/* ---- writes: through the inner backend, then the member index ---- */

#ifdef PROCREG_OPT_JOIN_HOOK
/* Test builds only (tests/optimized/meson.build links this file built with
 * the macro ahead of the library): called by a join after its inner call
 * returned and before the decorator updates the member index or the count,
 * the part of the join's window the inner backend cannot hold. */
void (*procreg_opt_join_hook)(int rc);
#define OPT_JOIN_HOOK(rc)                                                     \
    do {                                                                      \
        if (procreg_opt_join_hook != NULL)                                    \
            procreg_opt_join_hook(rc);                                        \
    } while (0)
#else
#define OPT_JOIN_HOOK(rc) ((void)0)
#endif

/*
 * Joins in flight.  A join learns its member's id only from the inner
 * join's answer, so it can index the member only after the inner join;
 * in between another thread can read the member from the inner backend
 * (group_members, pick, dispatch, list_all) and then call group_find,
 * which must list it (monotonic reads, doc/optimized.md).
 *
 * Invariant: every member the inner backend holds with metadata is in the
 * member index, except members of the joins counted in member_joins, and,
 * while OPT_MEMBERS_STALE is set, a member a failed join may have added.
 * A join raises the count (seq_cst) before its inner call and lowers it
 * (release) after the index holds its member, or after setting
 * OPT_MEMBERS_STALE when the inner join failed (its outcome unknown, its
 * member's id too); a rebuild of the member index clears the bit, with
 * `writes` held exclusive, so with no join in flight.  All three changes
 * are read-modify-writes made while the join holds its stripe (`writes`
 * shared).
 *
 * group_find reads the member index only when member_joins reads 0
 * (acquire): else it asks the inner backend, or, when only the bit is
 * set, rebuilds first.  Why that is enough: a thread that read member M
 * from the inner backend did so after M's join raised the count (the
 * raise comes before the inner join, whose effect that read saw), so its
 * load reads that raise or a later value of the count.  A 0 means M's join
 * has lowered it (each lowering follows its own raise, so at a 0 every
 * earlier raise was lowered), and, every change being a read-modify-write,
 * the 0 is in the release sequence of that lowering: the load synchronizes
 * with it, and the member index holds M.  (The argument needs of the
 * raise only that it is sequenced before the inner call, whose own
 * publication carries it to whoever reads M; seq_cst adds nothing on x86,
 * where every read-modify-write is a locked instruction.)  A leave needs no
 * count: a find re-reads each match from the inner backend and skips a
 * member that left.  Cost: a join two atomic read-modify-writes; a find
 * with no join in flight one load; one during a join asks the inner
 * backend (over ckht or ghash, which have no group_find, the core scans
 * the group's members, or the namespace's for a find in every group).
 */
int procreg_opt_group_join(void *state, const procreg_key *key,
                           const procreg_record *record,
                           procreg_member *joined, GError **error)
{
    opt_state *s = state;
    procreg_member m = {0};
    procreg_mutex *stripe;
    int rc;

    if (s->member_index == NULL)
        return procreg_backend_group_join(s->inner, key, record, joined,
                                          error);
    stripe = procreg_opt_stripe_lock(s, key);
    atomic_fetch_add_explicit(&s->member_joins, 1, memory_order_seq_cst);
    rc = procreg_backend_group_join(s->inner, key, record, &m, error);
    OPT_JOIN_HOOK(rc);
    if (rc == 0 && m.metadata != NULL) {
        opt_member_key mk;

        member_key_of(&mk, key, m.id);
        procreg_opt_index_set(s->member_index, &mk.key, m.metadata);
    } else if (rc != 0) {
        atomic_fetch_or_explicit(&s->member_joins, OPT_MEMBERS_STALE,
                                 memory_order_relaxed);
    }
    atomic_fetch_sub_explicit(&s->member_joins, 1, memory_order_release);
    procreg_opt_stripe_unlock(s, stripe);
    if (joined != NULL)
        *joined = m;
    else
        procreg_member_clear(&m);
    return rc;
}

int procreg_opt_group_leave(void *state, const procreg_key *key,
                            uint64_t member_id, const procreg_owner *owner,
                            procreg_event_reason reason, GArray *removed,
                            GError **error)
{
    opt_state *s = state;
    GArray *gone;
    guint before;
    procreg_mutex *stripe;
    int rc;

    if (s->member_index == NULL)
        return procreg_backend_group_leave(s->inner, key, member_id, owner,
                                           reason, removed, error);
    /* The index needs to know what went, even when the caller does not. */
    gone = removed != NULL ? removed : procreg_member_array_new();
    before = gone->len;
    stripe = procreg_opt_stripe_lock(s, key);
    rc = procreg_backend_group_leave(s->inner, key, member_id, owner, reason,
                                     gone, error);
    for (guint i = before; i < gone->len; i++) {
        opt_member_key mk;

        member_key_of(&mk, key, g_array_index(gone, procreg_member, i).id);
        procreg_opt_index_remove(s->member_index, &mk.key);
    }
    procreg_opt_stripe_unlock(s, stripe);
    if (gone != removed)
        g_array_unref(gone);
    return rc;
}

/* ---- finds: the member index ---- */

static int group_find_forward(opt_state *s, const char *ns, const char *group,
                              const char *meta_key, GVariant *value,
                              GArray *out, GError **error)
{
    atomic_fetch_add_explicit(&s->finds_forwarded, 1, memory_order_relaxed);
    return procreg_backend_group_find(s->inner, ns, group, meta_key, value,
                                      out, error);
}

int procreg_opt_group_find(void *state, const char *ns, const char *group,
                           const char *meta_key, GVariant *value, GArray *out,
                           GError **error)
{
    opt_state *s = state;
    GPtrArray *keys;
    uint64_t joins;
    int rc;

    if (s->member_index == NULL)
        return group_find_forward(s, ns, group, meta_key, value, out, error);
    /* The member index only while no join is in flight and none failed
     * since the last rebuild (see above procreg_opt_group_join()). */
    joins = atomic_load_explicit(&s->member_joins, memory_order_acquire);
    if (G_UNLIKELY(joins != 0) &&
        (joins != OPT_MEMBERS_STALE || !members_rebuild(s)))
        return group_find_forward(s, ns, group, meta_key, value, out, error);
    rc = procreg_opt_index_sync(s, error);
    if (rc != 0)
        return rc;
    atomic_fetch_add_explicit(&s->finds_indexed, 1, memory_order_relaxed);
    keys = procreg_opt_index_find(s->member_index, ns, meta_key, value);
    for (guint i = 0; rc == 0 && i < keys->len; i++) {
        const procreg_key *k = g_ptr_array_index(keys, i);
        opt_stack_key gkey;
        procreg_member m = {0};
        uint64_t id;

        if (!member_key_split(k, &gkey, &id) ||
            (group != NULL &&
             strcmp(procreg_key_bytes(&gkey.key) + gkey.key.ns_len + 1,
                    group) != 0))
            continue;
        rc = procreg_backend_group_member(s->inner, &gkey.key, id, &m, error);
        if (rc == PROCREG_ENOTFOUND) {
            rc = 0;
            continue;
        }
        if (rc == 0 && member_matches(&m, meta_key, value)) {
            m.ns = g_strdup(procreg_key_bytes(&gkey.key));
            m.group = g_strdup(procreg_key_bytes(&gkey.key) +
                               gkey.key.ns_len + 1);
            g_array_append_val(out, m);
        } else {
            procreg_member_clear(&m);
        }
    }
    g_ptr_array_unref(keys);
    return rc;
}

/* ---- everything else goes to the inner backend ---- */

int procreg_opt_group_members(void *state, const procreg_key *key,
                              GArray *out, GError **error)
{
    opt_state *s = state;

    return procreg_backend_group_members(s->inner, key, out, error);
}

int procreg_opt_group_list_all(void *state, const char *ns, GArray *out,
                               GError **error)
{
    opt_state *s = state;

    return procreg_backend_group_list_all(s->inner, ns, out, error);
}

int procreg_opt_group_count(void *state, const procreg_key *key, size_t *out,
                            GError **error)
{
    opt_state *s = state;

    return procreg_backend_group_count(s->inner, key, out, error);
}

int procreg_opt_group_list(void *state, const char *ns, GArray *out,
                           GError **error)
{
    opt_state *s = state;

    return procreg_backend_group_list(s->inner, ns, out, error);
}

int procreg_opt_group_dispatch(void *state, const procreg_key *key,
                               procreg_member_fn fn, gpointer user_data,
                               size_t *visited, GError **error)
{
    opt_state *s = state;

    return procreg_backend_group_dispatch(s->inner, key, fn, user_data,
                                          visited, error);
}

int procreg_opt_group_pick(void *state, const procreg_key *key,
                           bool round_robin, uint64_t arg,
                           procreg_member *out, GError **error)
{
    opt_state *s = state;

    return procreg_backend_group_pick(s->inner, key, round_robin, arg, out,
                                      error);
}

int procreg_opt_group_member(void *state, const procreg_key *key,
                             uint64_t member_id, procreg_member *out,
                             GError **error)
{
    opt_state *s = state;

    return procreg_backend_group_member(s->inner, key, member_id, out, error);
}
