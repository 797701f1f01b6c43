/*
 * Entries, and the operations on one key: register, lookup,
 * lookup_entry, unregister, update_metadata.
 *
 * Owns: how an entry is written (with its owner row, format.c, when it
 * is new) and removed, and the revision counter; reading an entry for a write
 * (a dead owner's entry is reaped on the way, reason OWNER_EXITED); the
 * metadata limit; turning a stored record into a procreg_entry; and the
 * error for a corrupt record.
 * Relies on: txn.c for transactions, changelog.c to log each change,
 * liveness.c for whether an owner lives, env.c for a handle's env.
 */
#include "lmdb-internal.h"

#include <string.h>

/* One search: the cursor that read the counter writes it back in place
 * (since format 4 the counter is in the main database, three levels deep at
 * 100 000 entries). */
bool procreg_lmdb_counter_next(lmdb_env *env, MDB_txn *txn,
                               const char *name, uint64_t *out, wstate *w)
{
    const lmdb_layout *lay = procreg_lmdb_layout(env, txn);
    char buf[META_KEY_MAX];
    MDB_val k = procreg_lmdb_meta_key(lay, name, buf), v;
    uint64_t n = 0;
    MDB_cursor *c;
    if (!procreg_lmdb_step_check(w, mdb_cursor_open(txn, lay->meta, &c),
                                 "reading a counter"))
        return false;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
    if (rc == 0 && v.mv_size != sizeof n) {
        mdb_cursor_close(c);
        w->corrupt = g_strdup_printf("the '%s' counter is corrupt", name);
        return false;
    }
    if (rc == 0)
        memcpy(&n, v.mv_data, sizeof n);
    n++;
    v.mv_size = sizeof n;
    v.mv_data = &n;
    if (rc == 0)
        rc = mdb_cursor_put(c, &k, &v, MDB_CURRENT);
    else if (rc == MDB_NOTFOUND)
        rc = mdb_cursor_put(c, &k, &v, 0);
    mdb_cursor_close(c);
    if (!procreg_lmdb_step_check(w, rc, "writing a counter"))
        return false;
    *out = n;
    return true;
}

bool procreg_lmdb_entry_delete(lmdb_env *env, MDB_txn *txn, wstate *w,
                               const MDB_val *key)
{
    MDB_val kk = *key;
    if (!procreg_lmdb_step_check(
            w, mdb_del(txn, entries_dbi(env, txn), &kk, NULL),
            "removing an entry"))
        return false;
    w->dirty = true;
    return true;
}

static bool entry_put(lmdb_env *env, MDB_txn *txn, wstate *w,
                      const MDB_val *key, const raw_entry *e, bool is_new)
{
    MDB_val k = *key, v = {procreg_lmdb_entry_size(e), NULL};
    if (!procreg_lmdb_step_check(
            w, mdb_put(txn, entries_dbi(env, txn), &k, &v,
                       MDB_RESERVE),
            "writing an entry"))
        return false;
    procreg_lmdb_entry_encode(e, v.mv_data);
    if (is_new && !procreg_lmdb_step_check(
                      w, procreg_lmdb_owner_row_put(txn, &e->owner, key),
                      "writing an owner row"))
        return false;
    w->dirty = true;
    return true;
}

static void set_corrupt(wstate *w, const MDB_val *key, const char *why)
{
    char *k = key_printable(key);
    g_free(w->corrupt);
    w->corrupt = g_strdup_printf("corrupt entry '%s': %s", k, why);
    g_free(k);
}

/* Read the entry at @key for a write.  Returns 1 when it is there and
 * its owner lives, 0 when absent (a dead owner's entry is reaped on the
 * way, reason OWNER_EXITED), -1 on failure (in @w). */
static int entry_get_live(lmdb_env *env, MDB_txn *txn, wstate *w,
                          const MDB_val *key, raw_entry *out)
{
    MDB_val k = *key, v;
    int rc = mdb_get(txn, entries_dbi(env, txn), &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (!procreg_lmdb_step_check(w, rc, "reading an entry"))
        return -1;
    const char *why = entry_decode(&v, out);
    if (why != NULL) {
        set_corrupt(w, key, why);
        return -1;
    }
    if (procreg_lmdb_owner_alive(env, &out->owner))
        return 1;
    if (!procreg_lmdb_log_change(env, txn, w, PROCREG_EVENT_UNREGISTERED,
                                 PROCREG_REASON_OWNER_EXITED, 0, key, out) ||
        !procreg_lmdb_entry_delete(env, txn, w, key))
        return -1;
    g_atomic_pointer_add(&env->reaped, 1);
    return 0;
}

bool procreg_lmdb_fill_entry(const raw_entry *r, procreg_entry *out,
                             const char **why)
{
    GVariant *m = procreg_lmdb_meta_decode(r->has_meta, r->meta, r->meta_len,
                                           why);
    if (*why != NULL)
        return false;
    if (out == NULL) {
        if (m != NULL)
            g_variant_unref(m);
        return true;
    }
    out->owner = r->owner;
    out->metadata = m;
    out->registered_at = r->registered_at;
    out->revision = r->revision;
    return true;
}

static MDB_val key_val(const procreg_key *key)
{
    MDB_val k = {procreg_key_size(key), (void *)procreg_key_bytes(key)};
    return k;
}

int procreg_lmdb_register_step(lmdb_env *env, MDB_txn *txn,
                               register_req *req, wstate *w)
{
    int live = entry_get_live(env, txn, w, &req->key, &req->held);
    if (live < 0)
        return PROCREG_EBACKEND;
    if (live > 0)
        return PROCREG_EEXISTS;
    /* An owner this process already knows dead gets no new entry: when it
     * was the holder just reaped above, that removal was part of its
     * death, and an entry now would bring it back.  (First sight probes
     * it and starts watching it.) */
    if (!procreg_lmdb_owner_alive(env, &req->owner))
        return PROCREG_ENOTALIVE;
    req->held = (raw_entry){
        .owner = req->owner,
        .registered_at = req->registered_at,
        .has_meta = req->has_meta,
        .meta = req->meta,
        .meta_len = req->meta_len,
    };
    if (!procreg_lmdb_counter_next(env, txn, "revision", &req->held.revision,
                                   w) ||
        !entry_put(env, txn, w, &req->key, &req->held, true) ||
        !procreg_lmdb_log_change(env, txn, w, PROCREG_EVENT_REGISTERED,
                                 PROCREG_REASON_NONE, req->instance_id,
                                 &req->key, &req->held) ||
        !procreg_lmdb_log_finish(env, txn, w))
        return PROCREG_EBACKEND;
    return 0;
}

typedef struct {
    register_req req;
    GVariant *metadata;
    procreg_entry *current;
    bool again;  /* a batch may have applied it (PROCREG_LMDB_SOLO_AGAIN) */
    bool looked; /* the solo step ran: it saw the truth under the lock */
} register_ctx;

/* Whether the entry @req holds is @req's own registration: its owner,
 * time and metadata.  (Two registrations of one key by one owner in the
 * same microsecond, with the same metadata, are not told apart.) */
static bool held_is_request(const register_req *req)
{
    const raw_entry *e = &req->held;
    return owner_same(&e->owner, &req->owner) &&
           e->registered_at == req->registered_at &&
           e->has_meta == req->has_meta && e->meta_len == req->meta_len &&
           (req->meta_len == 0 ||
            memcmp(e->meta, req->meta, req->meta_len) == 0);
}

/* The solo path: one registration in its own transaction. */
static int register_solo_step(lmdb_env *env, MDB_txn *txn, void *data,
                              wstate *w)
{
    register_ctx *ctx = data;
    procreg_entry_clear(ctx->current);
    ctx->looked = true;
    int rc = procreg_lmdb_register_step(env, txn, &ctx->req, w);
    /* A batch applied this very request and its answer was lost: the
     * entry found is this registration's. */
    if (rc == PROCREG_EEXISTS && ctx->again && held_is_request(&ctx->req))
        rc = 0;
    const char *why;
    if (rc == PROCREG_EEXISTS &&
        !procreg_lmdb_fill_entry(&ctx->req.held, ctx->current, &why)) {
        set_corrupt(w, &ctx->req.key, why);
        return PROCREG_EBACKEND;
    }
    if (rc == 0 && ctx->current != NULL) {
        ctx->current->owner = ctx->req.held.owner;
        ctx->current->metadata =
            ctx->metadata ? g_variant_ref(ctx->metadata) : NULL;
        ctx->current->registered_at = ctx->req.held.registered_at;
        ctx->current->revision = ctx->req.held.revision;
    }
    return rc;
}

/* Metadata above this is refused (PROCREG_EFULL): a registry entry is a
 * pointer to a service, not a blob store. */
#define META_MAX ((size_t)1 << 20)

int procreg_lmdb_meta_bytes(lmdb_env *env, GVariant *metadata, GVariant **norm,
                            const void **data, size_t *len, GError **error)
{
    *norm = NULL;
    *data = NULL;
    *len = 0;
    if (metadata == NULL)
        return 0;
    *norm = g_variant_get_normal_form(metadata);
    *len = g_variant_get_size(*norm);
    if (*len > META_MAX) {
        g_variant_unref(*norm);
        *norm = NULL;
        return procreg_set_error(error, PROCREG_EFULL,
                                 "lmdb registry '%s': metadata of %zu bytes "
                                 "is over the %zu-byte limit", env->path,
                                 *len, META_MAX);
    }
    *data = g_variant_get_data(*norm);
    return 0;
}

int procreg_lmdb_register(void *state, const procreg_key *key,
                          const procreg_record *record, procreg_entry *current,
                          GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    GVariant *norm;
    register_ctx ctx = {
        .req = {.key = key_val(key), .owner = record->owner,
                .registered_at = record->registered_at,
                .has_meta = record->metadata != NULL,
                .instance_id = st->instance_id},
        .metadata = record->metadata,
        .current = current,
    };
    int rc = procreg_lmdb_meta_bytes(env, record->metadata, &norm,
                                     &ctx.req.meta, &ctx.req.meta_len, error);
    if (rc != 0)
        return rc;
    procreg_entry_clear(current);
    rc = procreg_lmdb_batch_register(env, &ctx.req, record->metadata,
                                     current, error);
    if (rc == PROCREG_LMDB_SOLO || rc == PROCREG_LMDB_SOLO_AGAIN) {
        ctx.again = rc == PROCREG_LMDB_SOLO_AGAIN;
        GError *local = NULL;
        rc = procreg_lmdb_write_txn(env, "register", register_solo_step, &ctx,
                                    &local);
        /* A batch may have committed it, and no look under the lock
         * told: its failure to look is not the registration's. */
        if (rc != 0 && ctx.again && !ctx.looked) {
            rc = procreg_set_error(error, PROCREG_EBACKEND,
                                   "lmdb registry '%s': whether the "
                                   "registration was committed is unknown: "
                                   "a writer that judged this process dead "
                                   "dropped its request, maybe after "
                                   "committing it, and looking again "
                                   "failed: %s", env->path,
                                   local != NULL ? local->message : "");
            g_clear_error(&local);
        } else if (local != NULL) {
            g_propagate_error(error, local);
        }
    }
    if (norm != NULL)
        g_variant_unref(norm);
    if (rc == PROCREG_ENOTALIVE)
        procreg_set_error(error, rc, "process %d is not alive",
                          (int)record->owner.pid);
    return rc;
}

/* Read the entry at @key: 0 with @out filled (with @all, every field;
 * else only the owner, after the same checks), PROCREG_ENOTFOUND (absent),
 * or a failure.  The owner is not checked: callers test its liveness.
 * @why gets a corruption. */
static inline __attribute__((always_inline)) int
read_entry(lmdb_env *env, MDB_txn *txn, const procreg_key *key,
           raw_entry *out, const char **why, bool all)
{
    MDB_val k = key_val(key), v;
    *why = NULL;
    int rc = mdb_get(txn, entries_dbi(env, txn), &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? PROCREG_ENOTFOUND : procreg_lmdb_code(rc);
    *why = all ? entry_decode(&v, out)
               : procreg_lmdb_entry_decode_owner(v.mv_data, v.mv_size, out);
    if (*why != NULL)
        return PROCREG_EBACKEND;
    return 0;
}

int procreg_lmdb_lookup(void *state, const procreg_key *key, procreg_owner *out)
{
    lmdb_state *st = state;
    STATE_ENV(st, NULL);
    MDB_txn *txn;
    if (procreg_lmdb_read_begin(env, &txn) != 0)
        return PROCREG_EBACKEND;
    raw_entry e;
    const char *why;
    int rc = read_entry(env, txn, key, &e, &why, false);
    procreg_lmdb_read_end(env, txn);
    if (why != NULL)
        g_atomic_pointer_add(&env->corrupt_reads, 1);
    if (rc != 0)
        return rc == PROCREG_ENOTFOUND ? rc : PROCREG_EBACKEND;
    if (!procreg_lmdb_owner_alive(env, &e.owner))
        return PROCREG_ENOTFOUND;
    *out = e.owner;
    return 0;
}

int procreg_lmdb_corrupt_error(lmdb_env *env, const MDB_val *k,
                               const char *why, GError **error)
{
    g_atomic_pointer_add(&env->corrupt_reads, 1);
    char *p = key_printable(k);
    int rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "lmdb registry '%s': corrupt entry '%s': %s",
                               env->path, p, why);
    g_free(p);
    return rc;
}

int procreg_lmdb_lookup_entry(void *state, const procreg_key *key,
                              procreg_entry *out, GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    MDB_txn *txn;
    int rc = procreg_lmdb_read_begin(env, &txn);
    if (rc != 0)
        return procreg_lmdb_fail(env, rc, "lookup", error);
    raw_entry e;
    const char *why = NULL;
    rc = read_entry(env, txn, key, &e, &why, true);
    bool filled = rc == 0 && procreg_lmdb_fill_entry(&e, out, &why);
    procreg_lmdb_read_end(env, txn);
    MDB_val k = key_val(key);
    if (why != NULL)
        return procreg_lmdb_corrupt_error(env, &k, why, error);
    if (rc == PROCREG_ENOTFOUND)
        return rc;
    if (rc != 0)
        return procreg_set_error(error, rc, "lmdb registry '%s': lookup "
                                 "failed: %s", env->path,
                                 procreg_strerror(rc));
    if (filled && !procreg_lmdb_owner_alive(env, &out->owner)) {
        procreg_entry_clear(out);
        return PROCREG_ENOTFOUND;
    }
    return 0;
}

typedef struct {
    const procreg_key *key;
    uint64_t if_revision;
    uint32_t instance_id;
    procreg_entry *removed;
} unregister_ctx;

static int unregister_step(lmdb_env *env, MDB_txn *txn, void *data, wstate *w)
{
    unregister_ctx *ctx = data;
    procreg_entry_clear(ctx->removed);
    MDB_val k = key_val(ctx->key), v;
    raw_entry e;
    MDB_dbi dbi = entries_dbi(env, txn);
    if (ctx->if_revision == 0 && mdb_get(txn, dbi, &k, &v) == 0 &&
        entry_decode(&v, &e) != NULL) {
        /* A damaged entry: removing it by name is how it is repaired (its
         * owner row, if any, is dropped by the next reap of that owner). */
        procreg_lmdb_step_check(w, mdb_del(txn, dbi, &k, NULL), "removing");
        w->dirty = true;
        return 0;
    }
    int live = entry_get_live(env, txn, w, &k, &e);
    int result = 0;
    if (live < 0)
        return PROCREG_EBACKEND;
    if (live == 0) {
        result = PROCREG_ENOTFOUND;
    } else if (ctx->if_revision != 0 && e.revision != ctx->if_revision) {
        result = PROCREG_ECONFLICT;
    } else {
        const char *why = NULL;
        uint64_t rev;
        if (ctx->removed != NULL &&
            !procreg_lmdb_fill_entry(&e, ctx->removed, &why)) {
            /* Removing a damaged entry is how an operator repairs it. */
            procreg_entry_clear(ctx->removed);
            e.has_meta = false;
            e.meta_len = 0;
        }
        /* The reason other processes read: the core removes the entries
         * of owners that died (owner_exited), and a live owner's entry is
         * removed by another process only with PROCREG_FORCE (forced). */
        procreg_event_reason reason =
            !procreg_owner_is_alive(&e.owner) ? PROCREG_REASON_OWNER_EXITED
            : !owner_same(&e.owner, &env->self) ? PROCREG_REASON_FORCED
                                                : PROCREG_REASON_EXPLICIT;
        if (!procreg_lmdb_log_change(env, txn, w, PROCREG_EVENT_UNREGISTERED,
                                     reason, ctx->instance_id, &k, &e) ||
            !procreg_lmdb_entry_delete(env, txn, w, &k) ||
            !procreg_lmdb_counter_next(env, txn, "revision", &rev, w))
            return PROCREG_EBACKEND;
    }
    procreg_lmdb_log_finish(env, txn, w);
    return result;
}

int procreg_lmdb_unregister(void *state, const procreg_key *key,
                            uint64_t if_revision, procreg_entry *removed,
                            GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    unregister_ctx ctx = {key, if_revision, st->instance_id, removed};
    return procreg_lmdb_write_txn(env, "unregister", unregister_step, &ctx,
                                  error);
}

typedef struct {
    const procreg_key *key;
    GVariant *metadata;
    const void *meta;
    size_t meta_len;
    uint64_t if_revision;
    uint32_t instance_id;
    procreg_entry *updated;
} update_ctx;

static int update_step(lmdb_env *env, MDB_txn *txn, void *data, wstate *w)
{
    update_ctx *ctx = data;
    procreg_entry_clear(ctx->updated);
    MDB_val k = key_val(ctx->key);
    raw_entry e;
    int live = entry_get_live(env, txn, w, &k, &e);
    int result = 0;
    if (live < 0)
        return PROCREG_EBACKEND;
    if (live == 0) {
        result = PROCREG_ENOTFOUND;
    } else if (ctx->if_revision != 0 && e.revision != ctx->if_revision) {
        result = PROCREG_ECONFLICT;
    } else {
        e.has_meta = ctx->metadata != NULL;
        e.meta = ctx->meta;
        e.meta_len = ctx->meta_len;
        if (!procreg_lmdb_counter_next(env, txn, "revision", &e.revision, w) ||
            !entry_put(env, txn, w, &k, &e, false) ||
            !procreg_lmdb_log_change(env, txn, w, PROCREG_EVENT_UPDATED,
                                     owner_same(&e.owner, &env->self)
                                         ? PROCREG_REASON_NONE
                                         : PROCREG_REASON_FORCED,
                                     ctx->instance_id, &k, &e))
            return PROCREG_EBACKEND;
        if (ctx->updated != NULL) {
            ctx->updated->owner = e.owner;
            ctx->updated->metadata =
                ctx->metadata ? g_variant_ref(ctx->metadata) : NULL;
            ctx->updated->registered_at = e.registered_at;
            ctx->updated->revision = e.revision;
        }
    }
    procreg_lmdb_log_finish(env, txn, w);
    return result;
}

int procreg_lmdb_update_metadata(void *state, const procreg_key *key,
                                 GVariant *metadata, uint64_t if_revision,
                                 procreg_entry *updated, GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    GVariant *norm;
    update_ctx ctx = {.key = key, .metadata = metadata,
                      .if_revision = if_revision,
                      .instance_id = st->instance_id, .updated = updated};
    int rc = procreg_lmdb_meta_bytes(env, metadata, &norm, &ctx.meta,
                                     &ctx.meta_len, error);
    if (rc != 0)
        return rc;
    rc = procreg_lmdb_write_txn(env, "update metadata", update_step, &ctx,
                                error);
    if (norm != NULL)
        g_variant_unref(norm);
    return rc;
}
