/*
 * etcd backend: operations on one key.  Lookup is a range read of the
 * key; register is one transaction "create if absent, else tell me who
 * holds it" (procreg_etcd_create_guarded(), a group's join's too);
 * unregister and update compare mod_revision in the same transaction;
 * evict removes an entry whose owner died, with a reason marker, while it
 * is unchanged (a lookup or a registration that finds one of this host
 * does so at once).
 *
 * Every operation has one deadline (timeout_ms from its start) for all
 * the requests it makes.  A request may reach etcd twice (its first
 * attempt got no answer in time and the client sent it to another
 * member), so every write here recognises its own earlier effect:
 *  - register: the value carries a nonce; finding the key held by our
 *    writer with our nonce on our lease is our own put;
 *  - unregister: the reason marker carries a nonce; finding the key gone
 *    and the marker ours is our own removal;
 *  - update: the new value carries a fresh nonce; finding it in place is
 *    our own update;
 *  - evict compares mod_revision, so a repeat changes nothing.
 * That recognition fails when another writer changed the key between our
 * lost attempt and the repetition (removed our entry, say): the write
 * then ends with PROCREG_EBACKEND, its outcome unknown
 * (procreg_etcd_outcome_unknown()), rather than with an answer that may be
 * false.
 */
#include "etcd-private.h"

#include <string.h>


/* ------------------------------------------------------------------------ */
/* Reads                                                                    */

ETCD_HIDDEN uint64_t procreg_etcd_nonce(etcd_state *s)
{
    return __atomic_add_fetch(&s->writes, 1, __ATOMIC_RELAXED);
}

ETCD_HIDDEN int64_t procreg_etcd_revision_known(etcd_state *s)
{
    return MAX(__atomic_load_n(&s->watch_rev, __ATOMIC_ACQUIRE),
               __atomic_load_n(&s->seen_rev, __ATOMIC_ACQUIRE));
}

ETCD_HIDDEN void procreg_etcd_revision_seen(etcd_state *s, int64_t rev)
{
    int64_t cur = __atomic_load_n(&s->seen_rev, __ATOMIC_RELAXED);
    while (cur < rev &&
           !__atomic_compare_exchange_n(&s->seen_rev, &cur, rev, true,
                                        __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        ;
}

ETCD_HIDDEN int procreg_etcd_get_kv(etcd_state *s, const GString *key,
                                    bool linearizable, gint64 deadline,
                                    etcd_kv *kv, bool *found, GError **error)
{
    GString *b = g_string_sized_new(64 + key->len * 2);
    g_string_append_c(b, '{');
    procreg_etcd_json_key(b, "key", key->str, key->len);
    bool ser = s->serializable && !linearizable;
    if (ser)
        g_string_append(b, ",\"serializable\":true");
    g_string_append_c(b, '}');
    JsonNode *reply = NULL;
    int rc = procreg_etcd_call(s->client, "/v3/kv/range", b->str,
                               ser ? ETCD_CALL_NO_LEADER_NEEDED : 0, deadline,
                               &reply, error);
    g_string_free(b, TRUE);
    if (rc != 0)
        return rc == ETCD_ELEASE_GONE ? PROCREG_EBACKEND : rc;
    JsonObject *o = json_node_get_object(reply);
    *found = false;
    JsonArray *kvs = procreg_etcd_json_array(o, "kvs");
    if (kvs != NULL && json_array_get_length(kvs) > 0) {
        if (!procreg_etcd_first_kv(o, "kvs", kv))
            rc = procreg_set_error(error, PROCREG_EBACKEND,
                                   "etcd sent a malformed range reply");
        else
            *found = true;
    }
    json_node_unref(reply);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Ops                                                                      */

ETCD_HIDDEN int procreg_etcd_outcome_unknown(GError **error, const char *what,
                                             const char *thing)
{
    return procreg_set_error(error, PROCREG_EBACKEND,
                             "etcd: the %s was sent again after a member "
                             "did not answer, and another writer changed "
                             "the %s meanwhile: whether the %s was "
                             "applied is unknown",
                             what, thing, what);
}

/* Remove @k while it is at @rev, with a marker naming @writer and
 * @reason.  *@removed: whether it was (else it had changed). */
static int evict_txn(etcd_state *s, const GString *k, int64_t rev,
                     const char *writer, procreg_event_reason reason,
                     gint64 deadline, bool *removed, int64_t *at,
                     GError **error)
{
    GString *b = g_string_new("{\"compare\":[");
    procreg_etcd_op_compare(b, k, "MOD", "EQUAL", "mod_revision", rev);
    g_string_append(b, "],\"success\":[");
    procreg_etcd_op_delete(b, k, NULL);
    g_string_append_c(b, ',');
    procreg_etcd_op_marker(s, b, k, writer, 0, reason);
    g_string_append(b, "]}");
    JsonNode *reply = NULL;
    int rc = procreg_etcd_call(s->client, "/v3/kv/txn", b->str, 0, deadline,
                               &reply, error);
    g_string_free(b, TRUE);
    if (rc != 0)
        return rc == ETCD_ELEASE_GONE ? PROCREG_EBACKEND : rc;
    rc = procreg_etcd_txn_outcome(json_node_get_object(reply), 0, removed,
                                  at, error);
    if (rc == 0 && *removed)
        procreg_etcd_owned_remove(s, k->str, k->len, *at);
    json_node_unref(reply);
    return rc;
}

/* The backend's own removals (the keeper's reaping): writer "0", so
 * every watcher, this instance's too, reports them. */
ETCD_HIDDEN int procreg_etcd_evict(etcd_state *s, const GString *k,
                                   int64_t rev, procreg_event_reason reason,
                                   gint64 deadline, bool *removed,
                                   GError **error)
{
    int64_t at;
    return evict_txn(s, k, rev, "0", reason, deadline, removed, &at, error);
}

/* Remove the entry @held of a process that died on this host (found by a
 * registration that wants the key, or a lookup).  The core does not see
 * this removal, so it is reported to it before the op returns: by the
 * watch when it reports our changes (ordered), else here, at once. */
static int evict_dead_holder(etcd_state *s, const GString *k,
                             const etcd_kv *held, gint64 deadline,
                             GError **error)
{
    bool removed = false;
    int64_t at = 0;
    int rc = evict_txn(s, k, held->mod_rev, s->writer,
                       PROCREG_REASON_OWNER_EXITED, deadline, &removed, &at,
                       error);
    if (rc == 0 && removed && procreg_etcd_ordered(s))
        procreg_etcd_watch_await(s, at, deadline);
    else if (rc == 0 && removed)
        procreg_etcd_notify(s, false, PROCREG_EVENT_UNREGISTERED,
                            PROCREG_REASON_OWNER_EXITED, held->key,
                            held->key_len, held->value, held->value_len,
                            held->mod_rev, at);
    return rc;
}

/* Read @key.  An entry whose owner died on this host is absent here at
 * once, and removed (unless changed meanwhile), its removal reported now
 * with reason owner_exited: the core's monitor, which sees the death
 * within milliseconds and looks the key up to clean it, would otherwise
 * find nothing to remove, and other hosts would learn only from the
 * keeper's next round or the lease. */
static int lookup_full(etcd_state *s, const procreg_key *key, etcd_value *v,
                       int64_t *rev, GError **error)
{
    procreg_etcd_watch_use(s, procreg_key_bytes(key));
    gint64 deadline = procreg_etcd_deadline(s->client);
    GString *k = procreg_etcd_entry_key(s, key);
    etcd_kv kv;
    bool found = false;
    int rc = procreg_etcd_get_kv(s, k, false, deadline, &kv, &found, error);
    if (rc == 0 && !found)
        rc = PROCREG_ENOTFOUND;
    if (rc == 0) {
        rc = procreg_etcd_kv_value(&kv, v, error);
        *rev = kv.mod_rev;
        if (rc == 0 && procreg_etcd_owner_dead_here(s, v)) {
            procreg_etcd_value_clear(v);
            /* Failing, it is left to the keeper and the lease. */
            evict_dead_holder(s, k, &kv, deadline, NULL);
            rc = PROCREG_ENOTFOUND;
        }
        procreg_etcd_kv_clear(&kv);
    }
    g_string_free(k, TRUE);
    return rc;
}

ETCD_HIDDEN int procreg_etcd_lookup(void *state, const procreg_key *key,
                                    procreg_owner *out)
{
    etcd_value v;
    int64_t rev;
    int rc = lookup_full(state, key, &v, &rev, NULL);
    if (rc == 0) {
        *out = v.owner;
        procreg_etcd_value_clear(&v);
        return 0;
    }
    return rc == PROCREG_ENOTFOUND ? rc : PROCREG_EBACKEND;
}

ETCD_HIDDEN int procreg_etcd_lookup_entry(void *state, const procreg_key *key,
                                          procreg_entry *out, GError **error)
{
    etcd_value v;
    int64_t rev;
    int rc = lookup_full(state, key, &v, &rev, error);
    if (rc == 0) {
        procreg_etcd_fill_entry(&v, rev, NULL, NULL, out);
        procreg_etcd_value_clear(&v);
    }
    return rc;
}

ETCD_HIDDEN char *procreg_etcd_record_value(etcd_state *s,
                                           const procreg_record *record,
                                           etcd_value *v, size_t *vlen)
{
    *v = (etcd_value){.owner = record->owner,
                      .registered_at = record->registered_at,
                      .metadata = record->metadata};
    g_strlcpy(v->host, s->host_id, sizeof v->host);
    g_strlcpy(v->writer, s->writer, sizeof v->writer);
    v->nonce = procreg_etcd_nonce(s);
    return procreg_etcd_value_encode(v, vlen);
}

ETCD_HIDDEN int procreg_etcd_create_guarded(etcd_state *s, const GString *k,
                                            const char *value, size_t vlen,
                                            const char *what,
                                            const char *thing,
                                            gint64 deadline,
                                            etcd_held_fn held_fn, void *user,
                                            int64_t *created, GError **error)
{
    GString *mk = procreg_etcd_marker_key(s, k->str, k->len);
    int64_t known = procreg_etcd_revision_known(s);
    bool lease_retry_done = false, unsure = false;
    int rc = PROCREG_EBACKEND;
    for (int attempt = 0; attempt < ETCD_WRITE_ATTEMPTS; attempt++) {
        int64_t lease = 0;
        rc = procreg_etcd_lease_for_write(s, deadline, &lease, error);
        if (rc != 0)
            break;
        GString *b = g_string_new("{\"compare\":[");
        procreg_etcd_op_compare(b, k, "CREATE", "EQUAL", "create_revision", 0);
        g_string_append_c(b, ',');
        procreg_etcd_op_compare(b, mk, "MOD", "LESS", "mod_revision",
                                known + 1);
        g_string_append(b, "],\"success\":[");
        procreg_etcd_op_put(b, k, value, vlen, lease, false);
        g_string_append(b, "],\"failure\":[");
        procreg_etcd_op_range(b, k);
        g_string_append(b, "]}");
        JsonNode *reply = NULL;
        GError *local = NULL;
        bool resent = false;
        rc = procreg_etcd_call_write(s->client, "/v3/kv/txn", b->str,
                                     deadline, &reply, &resent, &local);
        unsure = unsure || resent;
        g_string_free(b, TRUE);
        if (rc == ETCD_ELEASE_GONE && !lease_retry_done) {
            /* Our lease expired (a partition longer than its TTL): take a
             * new one and try again. */
            g_clear_error(&local);
            lease_retry_done = true;
            rc = procreg_etcd_lease_renew(s, lease, deadline, error);
            if (rc != 0)
                break;
            rc = PROCREG_EBACKEND;
            continue;
        }
        if (rc != 0) {
            if (rc == ETCD_ELEASE_GONE)
                rc = PROCREG_EBACKEND;
            g_propagate_error(error, local);
            break;
        }
        JsonObject *o = json_node_get_object(reply);
        bool succeeded;
        int64_t rev;
        rc = procreg_etcd_txn_outcome(o, 1, &succeeded, &rev, error);
        etcd_kv held;
        bool have = rc == 0 && !succeeded &&
                    procreg_etcd_first_kv(
                        procreg_etcd_txn_response(o, 0, "response_range"),
                        "kvs", &held);
        json_node_unref(reply);
        if (rc != 0)
            break;
        procreg_etcd_revision_seen(s, rev);
        if (succeeded) {
            *created = rev;
            break;
        }
        if (have) {
            rc = held_fn(s, &held, lease, unsure, user, created, error);
            procreg_etcd_kv_clear(&held);
            if (rc != ETCD_CREATE_AGAIN)
                break;
        } else if (unsure) {
            /* Ours, perhaps, and removed since. */
            rc = procreg_etcd_outcome_unknown(error, what, thing);
            break;
        } else {
            /* Free, but a removal under the marker came after the
             * revision we knew: try again knowing the latest. */
            known = rev;
        }
        rc = PROCREG_EBACKEND;
    }
    g_string_free(mk, TRUE);
    return rc;
}

/* What a registration knows when it finds its key held. */
typedef struct {
    const GString *k;
    const etcd_value *v; /* what it writes */
    gint64 deadline;
    procreg_entry *current;
} register_ctx;

/* The key held: by our own put (an attempt whose answer was lost before
 * a retry on another endpoint), by a dead process of this host (evicted,
 * and the registration tries again), or by another (PROCREG_EEXISTS). */
static int register_held(etcd_state *s, const etcd_kv *held, int64_t lease,
                         bool unsure, void *user, int64_t *created,
                         GError **error)
{
    register_ctx *c = user;
    etcd_value hv;
    int rc = procreg_etcd_kv_value(held, &hv, error);
    if (rc != 0)
        return rc;
    if (strcmp(hv.writer, s->writer) == 0 && hv.nonce == c->v->nonce &&
        held->lease == lease) {
        *created = held->mod_rev;
    } else if (unsure) {
        /* Another's now; ours, perhaps, before. */
        rc = procreg_etcd_outcome_unknown(error, "registration", "entry");
    } else if (procreg_etcd_owner_dead_here(s, &hv)) {
        /* The holder's process died on this host (a moment ago, perhaps,
         * before any monitor saw it): a dead holder never blocks its
         * key. */
        rc = evict_dead_holder(s, c->k, held, c->deadline, error);
        if (rc == 0)
            rc = ETCD_CREATE_AGAIN;
    } else {
        procreg_etcd_fill_entry(&hv, held->mod_rev, NULL, NULL, c->current);
        rc = PROCREG_EEXISTS;
    }
    procreg_etcd_value_clear(&hv);
    return rc;
}

ETCD_HIDDEN int procreg_etcd_register(void *state, const procreg_key *key,
                                      const procreg_record *record,
                                      procreg_entry *current, GError **error)
{
    etcd_state *s = state;
    procreg_etcd_watch_use(s, procreg_key_bytes(key));
    gint64 deadline = procreg_etcd_deadline(s->client);
    etcd_value v;
    size_t vlen = 0;
    char *value = procreg_etcd_record_value(s, record, &v, &vlen);
    GString *k = procreg_etcd_entry_key(s, key);
    procreg_etcd_owned_begin(s, k);
    register_ctx c = {.k = k, .v = &v, .deadline = deadline,
                      .current = current};
    int64_t committed = 0; /* the revision of our put */
    int rc = procreg_etcd_create_guarded(s, k, value, vlen, "registration",
                                         "entry", deadline, register_held, &c,
                                         &committed, error);
    if (rc == 0) {
        procreg_etcd_owned_put(s, k, value, vlen, committed, &record->owner);
        procreg_etcd_fill_entry(&v, committed, NULL, NULL, current);
        procreg_etcd_watch_await(s, committed, deadline);
    } else if (rc == PROCREG_EBACKEND && error != NULL && *error == NULL) {
        procreg_set_error(error, rc,
                          "etcd: registration kept losing races (%d attempts)",
                          ETCD_WRITE_ATTEMPTS);
    }
    procreg_etcd_owned_end(s, k);
    g_string_free(k, TRUE);
    g_free(value);
    return rc;
}

ETCD_HIDDEN bool procreg_etcd_own_marker(etcd_state *s, JsonObject *r,
                                         uint64_t nonce, int64_t *rev)
{
    etcd_kv kv;
    if (!procreg_etcd_first_kv(r, "kvs", &kv))
        return false;
    char writer[ETCD_WRITER_LEN + 1];
    int reason;
    uint64_t n = 0;
    bool ours = procreg_etcd_marker_parse(kv.value, kv.value_len, writer,
                                          &reason, &n) &&
                n == nonce && strcmp(writer, s->writer) == 0;
    *rev = kv.mod_rev;
    procreg_etcd_kv_clear(&kv);
    return ours;
}

/* @out from the entry this instance owned at @k, when it knows it (a
 * removal whose reply was lost: the entry removed is what we wrote). */
static void owned_entry_of(etcd_state *s, const GString *k, procreg_entry *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->lock);
    GBytes *kb = g_bytes_new(k->str, k->len);
    owned_entry *o = g_hash_table_lookup(s->owned, kb);
    etcd_value v;
    const char *why;
    if (o != NULL && procreg_etcd_value_decode(o->value, o->value_len, &v,
                                               &why)) {
        procreg_etcd_fill_entry(&v, o->mod_rev, NULL, NULL, out);
        procreg_etcd_value_clear(&v);
    }
    g_bytes_unref(kb);
    pthread_mutex_unlock(&s->lock);
}

/* What a removal of @k removes: *@rev, the revision of the entry there
 * (the one this instance wrote, when @use_owned and it knows it; else
 * read), and *@reason, the reason to write in its marker.  The core
 * removes an entry it cannot read only by force.  PROCREG_ENOTFOUND when
 * there is none, PROCREG_ECONFLICT when it is not at @if_revision. */
static int removal_target(etcd_state *s, const GString *k,
                          uint64_t if_revision, bool use_owned,
                          gint64 deadline, int64_t *rev,
                          procreg_event_reason *reason, GError **error)
{
    etcd_value v;
    const char *why;
    pthread_mutex_lock(&s->lock);
    GBytes *kb = g_bytes_new(k->str, k->len);
    owned_entry *o = use_owned ? g_hash_table_lookup(s->owned, kb) : NULL;
    bool known = o != NULL &&
                 (if_revision == 0 || (uint64_t)o->mod_rev == if_revision) &&
                 procreg_etcd_value_decode(o->value, o->value_len, &v, &why);
    if (known)
        *rev = o->mod_rev;
    g_bytes_unref(kb);
    pthread_mutex_unlock(&s->lock);
    if (!known) {
        etcd_kv kv;
        bool found = false;
        int rc = procreg_etcd_get_kv(s, k, true, deadline, &kv, &found, error);
        if (rc != 0)
            return rc;
        if (!found)
            return PROCREG_ENOTFOUND;
        *rev = kv.mod_rev;
        known = procreg_etcd_value_decode(kv.value, kv.value_len, &v, &why);
        procreg_etcd_kv_clear(&kv);
        if (if_revision != 0 && (uint64_t)*rev != if_revision) {
            if (known)
                procreg_etcd_value_clear(&v);
            return PROCREG_ECONFLICT;
        }
        *reason = PROCREG_REASON_FORCED;
        if (!known)
            return 0;
    }
    *reason = procreg_etcd_removal_reason(s, &v);
    procreg_etcd_value_clear(&v);
    return 0;
}

/* @removed from the entry in a removal's prev_kvs. */
static void removed_from_reply(JsonObject *o, procreg_entry *removed)
{
    memset(removed, 0, sizeof *removed);
    etcd_kv prev;
    if (!procreg_etcd_first_kv(
            procreg_etcd_txn_response(o, 0, "response_delete_range"),
            "prev_kvs", &prev))
        return;
    etcd_value v;
    const char *why;
    if (procreg_etcd_value_decode(prev.value, prev.value_len, &v, &why)) {
        procreg_etcd_fill_entry(&v, prev.mod_rev, NULL, NULL, removed);
        procreg_etcd_value_clear(&v);
    } else {
        removed->revision = (uint64_t)prev.mod_rev;
    }
    procreg_etcd_kv_clear(&prev);
}

/* The removal compares the entry's revision (pinned: a repetition of it
 * that reaches etcd late, after the entry changed, removes nothing), and
 * reads the entry again when it changed and the caller did not pin one. */
ETCD_HIDDEN int procreg_etcd_unregister(void *state, const procreg_key *key,
                                        uint64_t if_revision,
                                        procreg_entry *removed,
                                        GError **error)
{
    etcd_state *s = state;
    procreg_etcd_watch_use(s, procreg_key_bytes(key));
    gint64 deadline = procreg_etcd_deadline(s->client);
    GString *k = procreg_etcd_entry_key(s, key);
    GString *mk = procreg_etcd_marker_key(s, k->str, k->len);
    uint64_t nonce = procreg_etcd_nonce(s);
    int64_t committed = 0;
    int rc = PROCREG_ECONFLICT;
    for (int attempt = 0; attempt < ETCD_WRITE_ATTEMPTS; attempt++) {
        procreg_event_reason reason = PROCREG_REASON_EXPLICIT;
        int64_t at = 0;
        rc = removal_target(s, k, if_revision, attempt == 0, deadline, &at,
                            &reason, error);
        if (rc != 0)
            break;
        GString *b = g_string_new("{\"compare\":[");
        procreg_etcd_op_compare(b, k, "MOD", "EQUAL", "mod_revision", at);
        g_string_append(b, "],\"success\":[");
        procreg_etcd_op_delete(b, k, NULL);
        g_string_append_c(b, ',');
        procreg_etcd_op_marker(s, b, k, s->writer, nonce, reason);
        g_string_append(b, "],\"failure\":[");
        procreg_etcd_op_range(b, k);
        g_string_append_c(b, ',');
        procreg_etcd_op_range(b, mk);
        g_string_append(b, "]}");
        JsonNode *reply = NULL;
        bool unsure = false;
        rc = procreg_etcd_call_write(s->client, "/v3/kv/txn", b->str,
                                     deadline, &reply, &unsure, error);
        g_string_free(b, TRUE);
        if (rc != 0) {
            if (rc == ETCD_ELEASE_GONE)
                rc = PROCREG_EBACKEND;
            break;
        }
        JsonObject *o = json_node_get_object(reply);
        bool succeeded;
        int64_t rev;
        rc = procreg_etcd_txn_outcome(o, 2, &succeeded, &rev, error);
        if (rc == 0)
            procreg_etcd_revision_seen(s, rev);
        if (rc == 0 && succeeded) {
            procreg_etcd_owned_remove(s, k->str, k->len, rev);
            if (removed != NULL)
                removed_from_reply(o, removed);
            committed = rev;
        } else if (rc == 0 &&
                   procreg_etcd_own_marker(
                       s, procreg_etcd_txn_response(o, 1, "response_range"),
                       nonce, &rev)) {
            /* Our own removal, applied by an attempt whose answer was
             * lost before a retry on another endpoint (and registered
             * again since, perhaps). */
            if (removed != NULL)
                owned_entry_of(s, k, removed);
            procreg_etcd_owned_remove(s, k->str, k->len, rev);
            committed = rev;
        } else if (rc == 0 && unsure) {
            rc = procreg_etcd_outcome_unknown(error, "removal", "entry");
        } else if (rc == 0) {
            /* Changed since it was read, or gone. */
            JsonArray *kvs = procreg_etcd_json_array(
                procreg_etcd_txn_response(o, 0, "response_range"), "kvs");
            rc = kvs != NULL && json_array_get_length(kvs) > 0
                     ? PROCREG_ECONFLICT
                     : PROCREG_ENOTFOUND;
        }
        json_node_unref(reply);
        if (rc != PROCREG_ECONFLICT || if_revision != 0)
            break;
    }
    g_string_free(mk, TRUE);
    g_string_free(k, TRUE);
    if (rc == 0)
        procreg_etcd_watch_await(s, committed, deadline);
    else if (rc == PROCREG_ECONFLICT && if_revision == 0)
        rc = procreg_set_error(error, rc,
                               "etcd: the entry kept changing during the "
                               "removal (%d attempts)",
                               ETCD_WRITE_ATTEMPTS);
    return rc;
}

/* An entry this instance owns was updated to @kv's value and revision:
 * the owned copy follows (for a re-registration after a lease loss). */
static void remember_update(etcd_state *s, const GString *k,
                            const etcd_kv *kv, const procreg_owner *owner)
{
    pthread_mutex_lock(&s->lock);
    GBytes *kb = g_bytes_new(k->str, k->len);
    if (g_hash_table_contains(s->owned, kb))
        procreg_etcd_owned_put_locked(s, k, (const char *)kv->value,
                                      kv->value_len, kv->mod_rev, owner);
    g_bytes_unref(kb);
    pthread_mutex_unlock(&s->lock);
}

ETCD_HIDDEN int
procreg_etcd_update_metadata(void *state, const procreg_key *key,
                             GVariant *metadata, uint64_t if_revision,
                             procreg_entry *updated, GError **error)
{
    etcd_state *s = state;
    procreg_etcd_watch_use(s, procreg_key_bytes(key));
    gint64 deadline = procreg_etcd_deadline(s->client);
    GString *k = procreg_etcd_entry_key(s, key);
    uint64_t nonce = procreg_etcd_nonce(s);
    int rc = PROCREG_ECONFLICT;
    int64_t committed = 0; /* the revision of our update */
    bool unsure = false;
    for (int attempt = 0; attempt < ETCD_WRITE_ATTEMPTS; attempt++) {
        etcd_kv kv;
        bool found = false;
        rc = procreg_etcd_get_kv(s, k, true, deadline, &kv, &found, error);
        if (rc != 0)
            break;
        if (!found) {
            rc = unsure ? procreg_etcd_outcome_unknown(error, "update",
                                                       "entry")
                        : PROCREG_ENOTFOUND;
            break;
        }
        etcd_value v;
        rc = procreg_etcd_kv_value(&kv, &v, error);
        if (rc == 0 && v.nonce == nonce && strcmp(v.writer, s->writer) == 0) {
            /* Our own update, applied by an attempt whose answer was
             * lost before a retry on another endpoint. */
            remember_update(s, k, &kv, &v.owner);
            procreg_etcd_fill_entry(&v, kv.mod_rev, NULL, NULL, updated);
            committed = kv.mod_rev;
            procreg_etcd_value_clear(&v);
            procreg_etcd_kv_clear(&kv);
            break;
        }
        if (rc == 0 && unsure) /* not ours now; ours, perhaps, before */
            rc = procreg_etcd_outcome_unknown(error, "update", "entry");
        if (rc == 0 && if_revision != 0 &&
            (uint64_t)kv.mod_rev != if_revision)
            rc = PROCREG_ECONFLICT;
        if (rc == 0 && procreg_etcd_owner_dead_here(s, &v))
            rc = PROCREG_ENOTFOUND;
        if (rc != 0) {
            procreg_etcd_value_clear(&v);
            procreg_etcd_kv_clear(&kv);
            break;
        }
        /* Another's entry (the core allowed it: PROCREG_FORCE): other
         * hosts learn that from a marker. */
        bool forced = procreg_etcd_removal_reason(s, &v) ==
                      PROCREG_REASON_FORCED;
        if (v.metadata != NULL)
            g_variant_unref(v.metadata);
        v.metadata = metadata ? g_variant_ref(metadata) : NULL;
        g_strlcpy(v.writer, s->writer, sizeof v.writer);
        v.nonce = nonce;
        size_t vlen = 0;
        char *value = procreg_etcd_value_encode(&v, &vlen);
        GString *b = g_string_new("{\"compare\":[");
        procreg_etcd_op_compare(b, k, "MOD", "EQUAL", "mod_revision",
                                kv.mod_rev);
        g_string_append(b, "],\"success\":[");
        /* ignore_lease: the entry keeps the lease it has, whoever's. */
        procreg_etcd_op_put(b, k, value, vlen, 0, true);
        if (forced) {
            g_string_append_c(b, ',');
            procreg_etcd_op_marker(s, b, k, s->writer, nonce,
                                   PROCREG_REASON_FORCED);
        }
        g_string_append(b, "]}");
        JsonNode *reply = NULL;
        bool resent = false;
        rc = procreg_etcd_call_write(s->client, "/v3/kv/txn", b->str,
                                     deadline, &reply, &resent, error);
        unsure = unsure || resent;
        g_string_free(b, TRUE);
        if (rc == 0) {
            bool succeeded;
            etcd_kv written = {.value = (guchar *)value, .value_len = vlen};
            rc = procreg_etcd_txn_outcome(json_node_get_object(reply), 0,
                                          &succeeded, &written.mod_rev, error);
            if (rc == 0 && succeeded) {
                remember_update(s, k, &written, &v.owner);
                procreg_etcd_fill_entry(&v, written.mod_rev, NULL, NULL,
                                        updated);
                committed = written.mod_rev;
            } else if (rc == 0) {
                rc = PROCREG_ECONFLICT;
            }
            json_node_unref(reply);
        } else if (rc == ETCD_ELEASE_GONE) {
            rc = PROCREG_EBACKEND;
        }
        g_free(value);
        procreg_etcd_value_clear(&v);
        procreg_etcd_kv_clear(&kv);
        /* Changed between the read and the write (by another writer, or
         * by this very update): read again. */
        if (rc != PROCREG_ECONFLICT)
            break;
    }
    g_string_free(k, TRUE);
    if (rc == 0)
        procreg_etcd_watch_await(s, committed, deadline);
    if (rc == PROCREG_ECONFLICT && error != NULL && *error == NULL &&
        if_revision == 0)
        procreg_set_error(error, rc,
                          "etcd: the entry kept changing during the update "
                          "(%d attempts)", ETCD_WRITE_ATTEMPTS);
    return rc;
}
