/*
 * Group members in the shared file: joins, leaves, reads, and the reaping
 * of a dead owner's members.
 *
 * Owns three databases (LMDB keys are at most 511 bytes, so a member is
 * keyed by its id, not by its group's name and id):
 *   "members"        id (BE64) -> key length (u16), the group's key
 *                    "ns\0group", then an entry record (lmdb-codec.h) of
 *                    the member: owner, join time, id as the revision;
 *   "group_ids"      (DUPSORT) "ns\0group" -> each member id (BE64), in id
 *                    order: a group is one key, its size a dup count;
 *   "member_owners"  owner key (pid BE32, start BE64) + id (BE64) -> "",
 *                    so a dead owner's members are reaped, and one owner's
 *                    members of a group found, without a scan.
 * Every change goes through the change log in its transaction (kinds
 * JOINED and LEFT, the group's key, the member as the entry), so other
 * processes get them in commit order, and this process's handles get
 * their own before the call returns (changelog.c's delivery invariant).
 * Reads skip members whose owner is dead (and so queue them for reaping),
 * as entries are skipped.
 * Relies on: txn.c for transactions, changelog.c to log changes,
 * liveness.c for whether an owner lives, ops.c for the revision counter
 * and records.
 */
#include "lmdb-internal.h"

#include <string.h>

#define ID_SIZE 8
#define MEMBER_OWNER_KEY_SIZE (OWNER_KEY_SIZE + ID_SIZE)

static void id_be(uint64_t id, uint8_t out[ID_SIZE])
{
    uint64_t be = GUINT64_TO_BE(id);
    memcpy(out, &be, sizeof be);
}

static uint64_t id_from(const void *p)
{
    uint64_t be;
    memcpy(&be, p, sizeof be);
    return GUINT64_FROM_BE(be);
}

static void member_owner_key(const procreg_owner *o, uint64_t id,
                             uint8_t out[MEMBER_OWNER_KEY_SIZE])
{
    procreg_lmdb_owner_key(o, out);
    id_be(id, out + OWNER_KEY_SIZE);
}

int procreg_lmdb_groups_open(lmdb_env *env, MDB_txn *txn, bool create)
{
    unsigned int flags = create ? MDB_CREATE : 0;
    int rc = mdb_dbi_open(txn, "members", flags, &env->db_members);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "group_ids", flags | MDB_DUPSORT |
                                                MDB_DUPFIXED,
                          &env->db_group_ids);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "member_owners", flags,
                          &env->db_member_owners);
    env->has_groups = rc == 0;
    /* A read-only file of format 1 has none: it has no members either. */
    return rc == MDB_NOTFOUND && !create ? 0 : rc;
}

/* ---- the member record ---- */

typedef struct {
    const char *key; /* "ns\0group", in the value */
    size_t key_len;
    raw_entry e;     /* its revision is the member id */
} raw_member;

static const char *member_decode(const MDB_val *v, raw_member *out)
{
    uint16_t n;
    size_t ns_len;
    if (v->mv_size < sizeof n)
        return "member value shorter than its header";
    memcpy(&n, v->mv_data, sizeof n);
    if (v->mv_size < sizeof n + n)
        return "member key longer than its value";
    out->key = (const char *)v->mv_data + sizeof n;
    out->key_len = n;
    if (!procreg_lmdb_key_split(out->key, n, &ns_len))
        return "malformed group key";
    return procreg_lmdb_entry_decode(out->key + n, v->mv_size - sizeof n - n,
                                     &out->e);
}

static size_t member_size(size_t key_len, const raw_entry *e)
{
    return sizeof(uint16_t) + key_len + procreg_lmdb_entry_size(e);
}

static void member_encode(const void *key, size_t key_len, const raw_entry *e,
                          void *out)
{
    uint16_t n = (uint16_t)key_len;
    memcpy(out, &n, sizeof n);
    memcpy((char *)out + sizeof n, key, key_len);
    procreg_lmdb_entry_encode(e, (char *)out + sizeof n + key_len);
}

/* @out (may be NULL) from @m; false with *why when its metadata is bad. */
static bool fill_member(const raw_member *m, procreg_member *out,
                        bool names, const char **why)
{
    procreg_entry e = {0};
    if (!procreg_lmdb_fill_entry(&m->e, out ? &e : NULL, why))
        return false;
    if (out == NULL)
        return true;
    out->id = e.revision;
    out->owner = e.owner;
    out->metadata = e.metadata;
    out->joined_at = e.registered_at;
    if (names)
        procreg_lmdb_key_strings(m->key, m->key_len, &out->ns, &out->group);
    return true;
}

static MDB_val key_val(const procreg_key *key)
{
    MDB_val k = {procreg_key_size(key), (void *)procreg_key_bytes(key)};
    return k;
}

static void set_corrupt(wstate *w, uint64_t id, const char *why)
{
    g_free(w->corrupt);
    w->corrupt = g_strdup_printf("corrupt member %" G_GUINT64_FORMAT ": %s",
                                 id, why);
}

/* ---- writes ---- */

typedef struct {
    const procreg_key *key;
    const procreg_record *record;
    const void *meta;
    size_t meta_len;
    uint32_t instance_id;
    procreg_member *joined;
} join_ctx;

static int join_step(lmdb_env *env, MDB_txn *txn, void *data, wstate *w)
{
    join_ctx *ctx = data;
    MDB_val k = key_val(ctx->key);
    raw_entry e = {
        .owner = ctx->record->owner,
        .registered_at = ctx->record->registered_at,
        .has_meta = ctx->record->metadata != NULL,
        .meta = ctx->meta,
        .meta_len = ctx->meta_len,
    };
    if (!procreg_lmdb_counter_next(env, txn, "revision", &e.revision, w))
        return PROCREG_EBACKEND;
    uint8_t idb[ID_SIZE], okb[MEMBER_OWNER_KEY_SIZE];
    id_be(e.revision, idb);
    member_owner_key(&e.owner, e.revision, okb);
    MDB_val mk = {sizeof idb, idb}, mv = {member_size(k.mv_size, &e), NULL};
    if (!procreg_lmdb_step_check(
            w, mdb_put(txn, env->db_members, &mk, &mv, MDB_RESERVE),
            "writing a member"))
        return PROCREG_EBACKEND;
    member_encode(k.mv_data, k.mv_size, &e, mv.mv_data);
    MDB_val gk = k, gv = {sizeof idb, idb};
    MDB_val ok = {sizeof okb, okb}, empty = {0, ""};
    if (!procreg_lmdb_step_check(
            w, mdb_put(txn, env->db_group_ids, &gk, &gv, MDB_NODUPDATA),
            "writing a group") ||
        !procreg_lmdb_step_check(
            w, mdb_put(txn, env->db_member_owners, &ok, &empty, 0),
            "writing a member's owner record") ||
        !procreg_lmdb_log_change(env, txn, w, PROCREG_EVENT_JOINED,
                                 PROCREG_REASON_NONE, ctx->instance_id, &k,
                                 &e) ||
        !procreg_lmdb_log_finish(env, txn, w))
        return PROCREG_EBACKEND;
    w->dirty = true;
    procreg_member_clear(ctx->joined);
    if (ctx->joined != NULL) {
        ctx->joined->id = e.revision;
        ctx->joined->owner = e.owner;
        ctx->joined->joined_at = e.registered_at;
        ctx->joined->metadata = ctx->record->metadata
                                    ? g_variant_ref(ctx->record->metadata)
                                    : NULL;
    }
    return 0;
}

int procreg_lmdb_group_join(void *state, const procreg_key *key,
                            const procreg_record *record,
                            procreg_member *joined, GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    if (!env->has_groups)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "lmdb registry '%s' is read-only (%s)",
                                 env->path, env->read_only_why);
    GVariant *norm = NULL;
    join_ctx ctx = {.key = key, .record = record,
                    .instance_id = st->instance_id, .joined = joined};
    int rc = procreg_lmdb_meta_bytes(env, record->metadata, &norm, &ctx.meta,
                                     &ctx.meta_len, error);
    if (rc == 0)
        rc = procreg_lmdb_write_txn(env, "join", join_step, &ctx, error);
    if (norm != NULL)
        g_variant_unref(norm);
    if (rc == 0)
        procreg_lmdb_owner_alive(env, &record->owner); /* start watching */
    return rc;
}

/* Remove member @id (decoded as @m) and its index records, logging LEFT
 * with @reason for @origin; the member's copy goes to @removed.  The
 * metadata is copied out first: a change moves what values point at. */
static bool member_delete(lmdb_env *env, MDB_txn *txn, wstate *w, uint64_t id,
                          const raw_member *m, procreg_event_reason reason,
                          uint32_t origin, GArray *removed)
{
    GBytes *meta = g_bytes_new(m->e.meta, m->e.meta_len);
    char *key = g_memdup2(m->key, m->key_len);
    raw_entry e = m->e;
    e.meta = g_bytes_get_data(meta, NULL);
    MDB_val k = {m->key_len, key};
    if (removed != NULL) {
        raw_member copy = {key, m->key_len, e};
        procreg_member out = {0};
        const char *why = NULL;
        if (fill_member(&copy, &out, false, &why))
            g_array_append_val(removed, out);
    }
    uint8_t idb[ID_SIZE], okb[MEMBER_OWNER_KEY_SIZE];
    id_be(id, idb);
    member_owner_key(&e.owner, id, okb);
    MDB_val mk = {sizeof idb, idb}, gk = k, gv = {sizeof idb, idb};
    MDB_val ok = {sizeof okb, okb};
    bool done =
        procreg_lmdb_log_change(env, txn, w, PROCREG_EVENT_LEFT, reason,
                                origin, &k, &e) &&
        procreg_lmdb_step_check(w, mdb_del(txn, env->db_members, &mk, NULL),
                                "removing a member");
    int rc = done ? mdb_del(txn, env->db_group_ids, &gk, &gv) : 0;
    done = done && procreg_lmdb_step_check(w, rc == MDB_NOTFOUND ? 0 : rc,
                                           "removing a member of a group");
    rc = done ? mdb_del(txn, env->db_member_owners, &ok, NULL) : 0;
    done = done && procreg_lmdb_step_check(w, rc == MDB_NOTFOUND ? 0 : rc,
                                           "removing a member's owner "
                                           "record");
    w->dirty = true;
    g_free(key);
    g_bytes_unref(meta);
    return done;
}

/* Read member @id: 1 with @m (pointing into the map), 0 absent, -1 on a
 * failure or corruption (in @w). */
static int member_get(lmdb_env *env, MDB_txn *txn, wstate *w, uint64_t id,
                      raw_member *m)
{
    uint8_t idb[ID_SIZE];
    id_be(id, idb);
    MDB_val k = {sizeof idb, idb}, v;
    int rc = mdb_get(txn, env->db_members, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (!procreg_lmdb_step_check(w, rc, "reading a member"))
        return -1;
    const char *why = member_decode(&v, m);
    if (why != NULL) {
        set_corrupt(w, id, why);
        return -1;
    }
    return 1;
}

static bool in_group(const raw_member *m, const procreg_key *key)
{
    return m->key_len == procreg_key_size(key) &&
           memcmp(m->key, procreg_key_bytes(key), m->key_len) == 0;
}

typedef struct {
    const procreg_key *key;
    uint64_t member_id;
    const procreg_owner *owner;
    procreg_event_reason reason;
    uint32_t instance_id;
    GArray *removed;
    guint removed_before;
    procreg_owner holder; /* PROCREG_EPERM: the member's owner */
} leave_ctx;

/* The ids of @owner's members of group @key. */
static bool owner_ids(lmdb_env *env, MDB_txn *txn, wstate *w,
                      const procreg_owner *owner, const procreg_key *key,
                      GArray *ids)
{
    uint8_t prefix[OWNER_KEY_SIZE];
    procreg_lmdb_owner_key(owner, prefix);
    MDB_cursor *c;
    if (!procreg_lmdb_step_check(
            w, mdb_cursor_open(txn, env->db_member_owners, &c), "leaving"))
        return false;
    MDB_val k = {sizeof prefix, prefix}, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != MEMBER_OWNER_KEY_SIZE ||
            memcmp(k.mv_data, prefix, sizeof prefix) != 0)
            break;
        g_array_append_val(ids, (uint64_t){id_from((char *)k.mv_data +
                                                   OWNER_KEY_SIZE)});
    }
    mdb_cursor_close(c);
    if (!procreg_lmdb_step_check(w, rc == MDB_NOTFOUND ? 0 : rc, "leaving"))
        return false;
    /* Keep those of this group. */
    for (guint i = ids->len; i-- > 0;) {
        raw_member m;
        int got = member_get(env, txn, w, g_array_index(ids, uint64_t, i), &m);
        if (got < 0)
            return false;
        if (got == 0 || !in_group(&m, key))
            g_array_remove_index(ids, i);
    }
    return true;
}

static int leave_step(lmdb_env *env, MDB_txn *txn, void *data, wstate *w)
{
    leave_ctx *ctx = data;
    /* Called again from scratch after the map grows. */
    if (ctx->removed != NULL)
        g_array_set_size(ctx->removed, ctx->removed_before);
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    int result = 0;
    if (ctx->member_id != 0) {
        raw_member m;
        int got = member_get(env, txn, w, ctx->member_id, &m);
        if (got < 0) {
            result = PROCREG_EBACKEND;
        } else if (got > 0 && in_group(&m, ctx->key)) {
            if (ctx->owner != NULL && !owner_same(&m.e.owner, ctx->owner)) {
                ctx->holder = m.e.owner;
                result = PROCREG_EPERM;
            } else {
                g_array_append_val(ids, ctx->member_id);
            }
        }
    } else if (ctx->owner != NULL &&
               !owner_ids(env, txn, w, ctx->owner, ctx->key, ids)) {
        result = PROCREG_EBACKEND;
    }
    for (guint i = 0; result == 0 && i < ids->len; i++) {
        uint64_t id = g_array_index(ids, uint64_t, i);
        raw_member m;
        if (member_get(env, txn, w, id, &m) != 1 ||
            !member_delete(env, txn, w, id, &m, ctx->reason, ctx->instance_id,
                           ctx->removed))
            result = PROCREG_EBACKEND;
    }
    uint64_t rev;
    if (result == 0 && ids->len > 0 &&
        (!procreg_lmdb_counter_next(env, txn, "revision", &rev, w) ||
         !procreg_lmdb_log_finish(env, txn, w)))
        result = PROCREG_EBACKEND;
    int n = (int)ids->len;
    g_array_unref(ids);
    return result != 0 ? result : n;
}

int procreg_lmdb_group_leave(void *state, const procreg_key *key,
                             uint64_t member_id, const procreg_owner *owner,
                             procreg_event_reason reason, GArray *removed,
                             GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    if (!env->has_groups)
        return 0; /* a read-only file of format 1: no member to remove */
    leave_ctx ctx = {.key = key, .member_id = member_id, .owner = owner,
                     .reason = reason, .instance_id = st->instance_id,
                     .removed = removed,
                     .removed_before = removed ? removed->len : 0};
    int rc = procreg_lmdb_write_txn(env, "leave", leave_step, &ctx, error);
    if (rc == PROCREG_EPERM)
        procreg_set_member_owner_error(error, key, member_id, &ctx.holder);
    return rc;
}

/* ---- reaping ---- */

int procreg_lmdb_reap_members(lmdb_env *env, MDB_txn *txn, wstate *w,
                              const procreg_owner *owner)
{
    if (!env->has_groups)
        return 0;
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    uint8_t prefix[OWNER_KEY_SIZE];
    procreg_lmdb_owner_key(owner, prefix);
    MDB_cursor *c;
    int n = -1;
    if (procreg_lmdb_step_check(
            w, mdb_cursor_open(txn, env->db_member_owners, &c), "reaping")) {
        MDB_val k = {sizeof prefix, prefix}, v;
        int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            if (k.mv_size != MEMBER_OWNER_KEY_SIZE ||
                memcmp(k.mv_data, prefix, sizeof prefix) != 0)
                break;
            g_array_append_val(ids, (uint64_t){id_from(
                                         (char *)k.mv_data + OWNER_KEY_SIZE)});
        }
        mdb_cursor_close(c);
        if (procreg_lmdb_step_check(w, rc == MDB_NOTFOUND ? 0 : rc,
                                    "reaping"))
            n = 0;
    }
    for (guint i = 0; n >= 0 && i < ids->len; i++) {
        uint64_t id = g_array_index(ids, uint64_t, i);
        raw_member m;
        int got = member_get(env, txn, w, id, &m);
        if (got == 0) {
            /* A stale owner record: drop it alone. */
            uint8_t okb[MEMBER_OWNER_KEY_SIZE];
            member_owner_key(owner, id, okb);
            MDB_val ok = {sizeof okb, okb};
            w->dirty = true;
            if (!procreg_lmdb_step_check(
                    w, mdb_del(txn, env->db_member_owners, &ok, NULL),
                    "reaping"))
                n = -1;
        } else if (got < 0 || !member_delete(env, txn, w, id, &m,
                                             PROCREG_REASON_OWNER_EXITED, 0,
                                             NULL)) {
            n = -1;
        } else {
            n++;
        }
    }
    g_array_unref(ids);
    return n;
}

bool procreg_lmdb_owner_has_members(lmdb_env *env, MDB_txn *txn,
                                    const procreg_owner *owner)
{
    if (!env->has_groups)
        return false;
    uint8_t prefix[OWNER_KEY_SIZE];
    procreg_lmdb_owner_key(owner, prefix);
    MDB_cursor *c;
    if (mdb_cursor_open(txn, env->db_member_owners, &c) != 0)
        return true; /* let the reap find out */
    MDB_val k = {sizeof prefix, prefix}, v;
    bool has = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE) == 0 &&
               k.mv_size == MEMBER_OWNER_KEY_SIZE &&
               memcmp(k.mv_data, prefix, sizeof prefix) == 0;
    mdb_cursor_close(c);
    return has;
}

void procreg_lmdb_member_owners(lmdb_env *env, MDB_txn *txn, GArray *owners)
{
    MDB_cursor *c;
    if (!env->has_groups ||
        mdb_cursor_open(txn, env->db_member_owners, &c) != 0)
        return;
    MDB_val k, v;
    procreg_owner last = {0, 0};
    int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    for (; rc == 0 && owners->len < 65536;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        procreg_owner o;
        MDB_val ok = {OWNER_KEY_SIZE, k.mv_data};
        if (k.mv_size != MEMBER_OWNER_KEY_SIZE || !owner_from_key(&ok, &o) ||
            owner_same(&o, &last))
            continue;
        g_array_append_val(owners, o);
        last = o;
    }
    mdb_cursor_close(c);
}

bool procreg_lmdb_members_drop_all(lmdb_env *env, MDB_txn *txn, wstate *w)
{
    if (!env->has_groups)
        return true;
    MDB_cursor *c;
    if (!procreg_lmdb_step_check(w, mdb_cursor_open(txn, env->db_members, &c),
                                 "removing the members of an earlier boot"))
        return false;
    MDB_val k, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    GArray *gone = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
        if (k.mv_size == ID_SIZE)
            g_array_append_val(gone, (uint64_t){id_from(k.mv_data)});
    mdb_cursor_close(c);
    bool ok = procreg_lmdb_step_check(w, rc == MDB_NOTFOUND ? 0 : rc,
                                      "removing the members of an earlier "
                                      "boot");
    for (guint i = 0; ok && i < gone->len; i++) {
        raw_member m;
        uint64_t id = g_array_index(gone, uint64_t, i);
        int got = member_get(env, txn, w, id, &m);
        if (got < 0) {
            /* Damaged: the drops below take it. */
            g_clear_pointer(&w->corrupt, g_free);
            continue;
        }
        ok = got == 0 || member_delete(env, txn, w, id, &m,
                                       PROCREG_REASON_OWNER_EXITED, 0, NULL);
    }
    g_array_unref(gone);
    return ok &&
           procreg_lmdb_step_check(w, mdb_drop(txn, env->db_members, 0),
                                   "removing the members of an earlier boot") &&
           procreg_lmdb_step_check(w, mdb_drop(txn, env->db_group_ids, 0),
                                   "removing the groups of an earlier boot") &&
           procreg_lmdb_step_check(w, mdb_drop(txn, env->db_member_owners, 0),
                                   "removing the member owners of an "
                                   "earlier boot");
}

/* ---- reads ---- */

/* Visit the live members of the group at @gk (the cursor of
 * "group_ids" stands on its first id): @fn(@m, @ctx) for each.  0, or the
 * failure (in @error). */
typedef void member_visit_fn(const raw_member *m, void *ctx);

static int visit_group(lmdb_env *env, MDB_txn *txn, MDB_cursor *c,
                       MDB_val *gk, MDB_val *gv, member_visit_fn *fn,
                       void *ctx, GError **error)
{
    int rc = 0;
    for (; rc == 0; rc = mdb_cursor_get(c, gk, gv, MDB_NEXT_DUP)) {
        if (gv->mv_size != ID_SIZE)
            return procreg_lmdb_corrupt_error(env, gk, "malformed member id",
                                              error);
        MDB_val mk = *gv, mv;
        int got = mdb_get(txn, env->db_members, &mk, &mv);
        if (got == MDB_NOTFOUND)
            continue; /* removed in the same snapshot: never both */
        if (got != 0)
            return procreg_lmdb_fail(env, got, "reading a member", error);
        raw_member m;
        const char *why = member_decode(&mv, &m);
        if (why != NULL)
            return procreg_lmdb_corrupt_error(env, gk, why, error);
        if (procreg_lmdb_owner_alive(env, &m.e.owner))
            fn(&m, ctx);
    }
    return rc == MDB_NOTFOUND ? 0 : procreg_lmdb_fail(env, rc, "listing",
                                                      error);
}

typedef struct {
    GArray *out;
    bool names;
    const char *why; /* a member whose metadata is bad */
} append_ctx;

static void append_member(const raw_member *m, void *data)
{
    append_ctx *a = data;
    procreg_member out = {0};
    if (fill_member(m, &out, a->names, &a->why))
        g_array_append_val(a->out, out);
}

static void count_member(const raw_member *m, void *data)
{
    (void)m;
    (*(size_t *)data)++;
}

int procreg_lmdb_group_members(void *state, const procreg_key *key,
                               GArray *out, GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    if (!env->has_groups)
        return 0;
    MDB_txn *txn;
    int rc = procreg_lmdb_read_begin(env, &txn);
    if (rc != 0)
        return procreg_lmdb_fail(env, rc, "listing members", error);
    MDB_cursor *c;
    rc = mdb_cursor_open(txn, env->db_group_ids, &c);
    if (rc == 0) {
        MDB_val gk = key_val(key), gv;
        append_ctx a = {out, false, NULL};
        rc = mdb_cursor_get(c, &gk, &gv, MDB_SET_KEY);
        rc = rc == MDB_NOTFOUND ? 0
             : rc != 0
                 ? procreg_lmdb_fail(env, rc, "listing members", error)
                 : visit_group(env, txn, c, &gk, &gv, append_member, &a,
                               error);
        if (rc == 0 && a.why != NULL)
            rc = procreg_lmdb_corrupt_error(env, &gk, a.why, error);
        mdb_cursor_close(c);
    } else {
        rc = procreg_lmdb_fail(env, rc, "listing members", error);
    }
    procreg_lmdb_read_end(env, txn);
    return rc;
}

int procreg_lmdb_group_member(void *state, const procreg_key *key,
                              uint64_t member_id, procreg_member *out,
                              GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    if (!env->has_groups)
        return PROCREG_ENOTFOUND;
    MDB_txn *txn;
    int rc = procreg_lmdb_read_begin(env, &txn);
    if (rc != 0)
        return procreg_lmdb_fail(env, rc, "reading a member", error);
    uint8_t idb[ID_SIZE];
    id_be(member_id, idb);
    MDB_val k = {sizeof idb, idb}, v;
    raw_member m;
    const char *why = NULL;
    rc = mdb_get(txn, env->db_members, &k, &v);
    if (rc == MDB_NOTFOUND)
        rc = PROCREG_ENOTFOUND;
    else if (rc != 0)
        rc = procreg_lmdb_fail(env, rc, "reading a member", error);
    else if ((why = member_decode(&v, &m)) != NULL)
        rc = procreg_lmdb_corrupt_error(env, &k, why, error);
    else if (!in_group(&m, key))
        rc = PROCREG_ENOTFOUND;
    else if (!fill_member(&m, out, false, &why))
        rc = procreg_lmdb_corrupt_error(env, &k, why, error);
    procreg_lmdb_read_end(env, txn);
    if (rc == 0 && !procreg_lmdb_owner_alive(env, &out->owner)) {
        procreg_member_clear(out);
        rc = PROCREG_ENOTFOUND;
    }
    return rc;
}

/* Walk every group of @ns (NULL: all): @per_group(the group's key, ctx)
 * then its live members. */
typedef void group_visit_fn(const MDB_val *gk, void *ctx);

static int walk_groups(lmdb_env *env, const char *ns, group_visit_fn *per_group,
                       member_visit_fn *per_member, void *ctx, GError **error)
{
    MDB_txn *txn;
    int rc = procreg_lmdb_read_begin(env, &txn);
    if (rc != 0)
        return procreg_lmdb_fail(env, rc, "listing groups", error);
    MDB_cursor *c;
    rc = mdb_cursor_open(txn, env->db_group_ids, &c);
    if (rc != 0) {
        procreg_lmdb_read_end(env, txn);
        return procreg_lmdb_fail(env, rc, "listing groups", error);
    }
    size_t prefix_len = ns ? strlen(ns) + 1 : 0;
    MDB_val gk = {prefix_len, (void *)ns}, gv;
    rc = mdb_cursor_get(c, &gk, &gv, ns ? MDB_SET_RANGE : MDB_FIRST);
    while (rc == 0) {
        if (ns != NULL && (gk.mv_size < prefix_len ||
                           memcmp(gk.mv_data, ns, prefix_len) != 0))
            break;
        size_t ns_len;
        if (!key_split(&gk, &ns_len)) {
            rc = procreg_lmdb_corrupt_error(env, &gk, "malformed group key",
                                            error);
            break;
        }
        per_group(&gk, ctx);
        MDB_val at = gk;
        rc = visit_group(env, txn, c, &at, &gv, per_member, ctx, error);
        if (rc != 0)
            break;
        rc = mdb_cursor_get(c, &gk, &gv, MDB_SET_KEY);
        if (rc == 0)
            rc = mdb_cursor_get(c, &gk, &gv, MDB_NEXT_NODUP);
    }
    mdb_cursor_close(c);
    procreg_lmdb_read_end(env, txn);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static void no_group(const MDB_val *gk, void *ctx)
{
    (void)gk;
    (void)ctx;
}

int procreg_lmdb_group_list_all(void *state, const char *ns, GArray *out,
                                GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    if (!env->has_groups)
        return 0;
    append_ctx a = {out, true, NULL};
    int rc = walk_groups(env, ns, no_group, append_member, &a, error);
    if (rc == 0 && a.why != NULL)
        rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "lmdb registry '%s': corrupt member: %s",
                               env->path, a.why);
    return rc;
}

typedef struct {
    GArray *out; /* procreg_group_info */
} list_ctx;

/* A group's live count goes into the info appended for it; groups whose
 * members all belong to dead owners are dropped afterwards. */
static void start_group(const MDB_val *gk, void *data)
{
    list_ctx *l = data;
    procreg_group_info info = {0};
    procreg_lmdb_key_strings(gk->mv_data, gk->mv_size, &info.ns, &info.group);
    g_array_append_val(l->out, info);
}

static void count_live(const raw_member *m, void *data)
{
    list_ctx *l = data;
    count_member(m, &g_array_index(l->out, procreg_group_info,
                                   l->out->len - 1).members);
}

int procreg_lmdb_group_list(void *state, const char *ns, GArray *out,
                            GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    if (!env->has_groups)
        return 0;
    list_ctx l = {out};
    guint before = out->len;
    int rc = walk_groups(env, ns, start_group, count_live, &l, error);
    for (guint i = out->len; i-- > before;)
        if (g_array_index(out, procreg_group_info, i).members == 0)
            g_array_remove_index(out, i);
    return rc;
}
