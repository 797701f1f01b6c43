/*
 * etcd backend: operations on ranges of keys, read page by page at one
 * revision: list, count, the names for not-found messages, and the drop
 * of a namespace in one transaction.
 */
#include "etcd-private.h"

#include <string.h>

/* Entries per page when reading a range. */
#define RANGE_PAGE 1000

/* Visit every kv in [start, end), page by page, all pages at the
 * revision of the first.  @keys_only skips values.  @max: stop after that
 * many (0: all).  *@revision (optional) receives the snapshot revision.
 * Namespaces' marker keys are skipped.
 * Each page is one operation with its own deadline (timeout_ms); a page
 * whose reply would pass max_reply_bytes is asked again with half the
 * keys, down to one. */
ETCD_HIDDEN int procreg_etcd_range_all(etcd_state *s, const GString *start,
                                       const GString *end, bool keys_only,
                                       bool serializable, size_t max,
                                       etcd_kv_fn fn, void *user,
                                       int64_t *revision, GError **error)
{
    GString *from = g_string_new_len(start->str, (gssize)start->len);
    int64_t rev = revision != NULL ? *revision : 0;
    size_t seen = 0, page_max = RANGE_PAGE;
    int rc = 0;
    for (;;) {
        size_t page = page_max;
        if (max != 0 && max - seen < page)
            page = max - seen;
        GString *b = g_string_new("{");
        procreg_etcd_json_key(b, "key", from->str, from->len);
        g_string_append_c(b, ',');
        procreg_etcd_json_key(b, "range_end", end->str, end->len);
        g_string_append_printf(b, ",\"limit\":\"%zu\"", page);
        if (rev != 0)
            g_string_append_printf(b, ",\"revision\":\"%" G_GINT64_FORMAT "\"",
                                   (gint64)rev);
        if (keys_only)
            g_string_append(b, ",\"keys_only\":true");
        if (serializable)
            g_string_append(b, ",\"serializable\":true");
        g_string_append_c(b, '}');
        JsonNode *reply = NULL;
        GError *local = NULL;
        rc = procreg_etcd_call(
            s->client, "/v3/kv/range", b->str,
            ETCD_CALL_REPORT_TOO_BIG |
                (serializable ? ETCD_CALL_NO_LEADER_NEEDED : 0),
            procreg_etcd_deadline(s->client), &reply, &local);
        g_string_free(b, TRUE);
        if (rc == ETCD_EREPLY_TOO_BIG && page > 1) {
            /* Large values: fewer keys a page keeps a reply under
             * max_reply_bytes. */
            g_clear_error(&local);
            page_max = page / 2;
            continue;
        }
        if (local != NULL)
            g_propagate_error(error, local);
        if (rc == ETCD_EREPLY_TOO_BIG)
            rc = PROCREG_EBACKEND;
        if (rc != 0) {
            if (rc == ETCD_ELEASE_GONE)
                rc = PROCREG_EBACKEND;
            break;
        }
        JsonObject *o = json_node_get_object(reply);
        if (rev == 0)
            rev = procreg_etcd_header_revision(o);
        JsonArray *kvs = procreg_etcd_json_array(o, "kvs");
        guint n = kvs ? json_array_get_length(kvs) : 0;
        etcd_kv last = {0};
        for (guint i = 0; rc == 0 && i < n; i++) {
            JsonNode *node = json_array_get_element(kvs, i);
            etcd_kv kv;
            if (!JSON_NODE_HOLDS_OBJECT(node) ||
                !procreg_etcd_kv_parse(json_node_get_object(node), &kv)) {
                rc = procreg_set_error(error, PROCREG_EBACKEND,
                                       "etcd sent a malformed range reply");
                break;
            }
            /* Namespaces' reason markers live among their entries. */
            if (!procreg_etcd_is_marker_key(s, kv.key, kv.key_len)) {
                rc = fn(s, &kv, user, error);
                seen++;
            }
            procreg_etcd_kv_clear(&last);
            last = kv;
        }
        bool more = procreg_etcd_json_bool(o, "more");
        json_node_unref(reply);
        if (rc != 0 || !more || n == 0 || (max != 0 && seen >= max)) {
            procreg_etcd_kv_clear(&last);
            break;
        }
        /* Next page: just after the last key. */
        g_string_truncate(from, 0);
        g_string_append_len(from, (const char *)last.key, (gssize)last.key_len);
        g_string_append_c(from, '\0');
        procreg_etcd_kv_clear(&last);
    }
    g_string_free(from, TRUE);
    if (rc == 0 && revision != NULL)
        *revision = rev;
    return rc;
}

typedef struct {
    GArray *out;
    bool count_only;
    size_t count;
} list_ctx;

static int list_one(etcd_state *s, etcd_kv *kv, void *user, GError **error)
{
    list_ctx *c = user;
    char *ns = NULL, *name = NULL;
    if (procreg_etcd_is_member_key(s, kv->key, kv->key_len))
        return 0; /* a group's, when reading the whole prefix */
    if (!procreg_etcd_split_key(s, kv->key, kv->key_len, &ns, &name)) {
        char *k = procreg_etcd_key_for_humans(kv->key, kv->key_len);
        int rc = procreg_set_error(error, PROCREG_EBACKEND,
                                   "etcd: corrupt key '%s' (not "
                                   "<prefix>/e/<namespace>\\0<name>)", k);
        g_free(k);
        return rc;
    }
    etcd_value v;
    int rc = procreg_etcd_kv_value(kv, &v, error);
    if (rc == 0 && !procreg_etcd_owner_dead_here(s, &v)) {
        if (c->count_only) {
            c->count++;
        } else {
            procreg_entry e;
            procreg_etcd_fill_entry(&v, kv->mod_rev, ns, name, &e);
            ns = name = NULL;
            g_array_append_val(c->out, e);
        }
    }
    if (rc == 0)
        procreg_etcd_value_clear(&v);
    g_free(ns);
    g_free(name);
    /* The caller keeps the kv for paging. */
    return rc;
}

ETCD_HIDDEN int procreg_etcd_list_all(void *state, const char *ns, GArray *out,
                         GError **error)
{
    etcd_state *s = state;
    GString *start, *end;
    if (ns != NULL)
        procreg_etcd_watch_use(s, ns);
    procreg_etcd_ns_range(s, ns, &start, &end);
    list_ctx c = {.out = out};
    int rc = procreg_etcd_range_all(s, start, end, false, s->serializable, 0,
                                    list_one, &c, NULL, error);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    return rc;
}

ETCD_HIDDEN int procreg_etcd_count(void *state, const char *ns, size_t *out,
                      GError **error)
{
    etcd_state *s = state;
    GString *start, *end;
    if (ns != NULL)
        procreg_etcd_watch_use(s, ns);
    procreg_etcd_ns_range(s, ns, &start, &end);
    list_ctx c = {.count_only = true};
    int rc = procreg_etcd_range_all(s, start, end, false, s->serializable, 0,
                                    list_one, &c, NULL, error);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    *out = rc == 0 ? c.count : 0;
    return rc;
}

typedef struct {
    GPtrArray *out;
} names_ctx;

static int name_one(etcd_state *s, etcd_kv *kv, void *user, GError **error)
{
    names_ctx *c = user;
    char *ns = NULL, *name = NULL;
    if (procreg_etcd_split_key(s, kv->key, kv->key_len, &ns, &name))
        g_ptr_array_add(c->out, name);
    g_free(ns);
    return 0;
}

ETCD_HIDDEN int procreg_etcd_list_names(void *state, const char *ns, size_t max,
                           GPtrArray *out)
{
    etcd_state *s = state;
    if (max == 0)
        return 0;
    GString *start, *end;
    if (ns != NULL)
        procreg_etcd_watch_use(s, ns);
    procreg_etcd_ns_range(s, ns, &start, &end);
    names_ctx c = {.out = out};
    int rc = procreg_etcd_range_all(s, start, end, true, s->serializable, max,
                                    name_one, &c, NULL, NULL);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    return rc;
}

ETCD_HIDDEN int procreg_etcd_drop_namespace(void *state, const char *ns,
                                            GArray *removed, GError **error)
{
    etcd_state *s = state;
    GString *start, *end;
    if (ns != NULL)
        procreg_etcd_watch_use(s, ns);
    gint64 deadline = procreg_etcd_deadline(s->client);
    procreg_etcd_ns_range(s, ns, &start, &end);
    /* One transaction: the entries go in one revision, with the marker
     * (its key, the namespace's start, is left out of the deleted range:
     * etcd refuses a put inside a range the transaction deletes).  It
     * compares the marker with the latest revision known, so that a
     * repetition reaching etcd late (after the marker moved) removes
     * nothing registered since; a marker moved by another removal
     * meanwhile costs one more try. */
    GString *entries = g_string_new_len(start->str, (gssize)start->len);
    g_string_append_c(entries, '\x01');
    uint64_t nonce = procreg_etcd_nonce(s);
    int64_t known = procreg_etcd_revision_known(s), rev = 0;
    JsonNode *reply = NULL;
    bool succeeded = false, ours = false;
    int rc = 0;
    for (int attempt = 0; rc == 0 && !succeeded && !ours; attempt++) {
        if (attempt == ETCD_WRITE_ATTEMPTS) {
            rc = procreg_set_error(error, PROCREG_ECONFLICT,
                                   "etcd: the namespace kept changing during "
                                   "the drop (%d attempts)",
                                   ETCD_WRITE_ATTEMPTS);
            break;
        }
        GString *b = g_string_new("{\"compare\":[");
        procreg_etcd_op_compare(b, start, "MOD", "LESS", "mod_revision",
                                known + 1);
        g_string_append(b, "],\"success\":[");
        procreg_etcd_op_delete(b, entries, end);
        g_string_append_c(b, ',');
        procreg_etcd_op_marker(s, b, start, s->writer, nonce,
                               PROCREG_REASON_NAMESPACE_DROPPED);
        g_string_append(b, "],\"failure\":[");
        procreg_etcd_op_range(b, start);
        g_string_append(b, "]}");
        bool unsure = false;
        if (reply != NULL)
            json_node_unref(reply);
        reply = NULL;
        rc = procreg_etcd_call_write(s->client, "/v3/kv/txn", b->str,
                                     deadline, &reply, &unsure, error);
        g_string_free(b, TRUE);
        if (rc != 0)
            break;
        rc = procreg_etcd_txn_outcome(json_node_get_object(reply), 1,
                                      &succeeded, &rev, error);
        if (rc != 0 || succeeded)
            break;
        procreg_etcd_revision_seen(s, rev);
        known = rev;
        /* Our own drop, applied by an attempt whose answer was lost
         * (what it removed is then not known). */
        ours = procreg_etcd_own_marker(
            s, procreg_etcd_txn_response(json_node_get_object(reply), 0,
                                         "response_range"),
            nonce, &rev);
        if (!ours && unsure)
            rc = procreg_set_error(error, PROCREG_EBACKEND,
                                   "etcd: the drop was sent again after a "
                                   "member did not answer, and the namespace "
                                   "changed meanwhile: whether the drop was "
                                   "applied is unknown");
    }
    g_string_free(entries, TRUE);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    if (rc != 0) {
        if (reply != NULL)
            json_node_unref(reply);
        return rc == ETCD_ELEASE_GONE ? PROCREG_EBACKEND : rc;
    }
    procreg_etcd_revision_seen(s, rev);
    JsonObject *o = json_node_get_object(reply);
    JsonArray *prev = procreg_etcd_json_array(
        procreg_etcd_txn_response(o, 0, "response_delete_range"), "prev_kvs");
    guint n = prev ? json_array_get_length(prev) : 0;
    pthread_mutex_lock(&s->lock);
    for (guint i = 0; i < n; i++) {
        JsonNode *node = json_array_get_element(prev, i);
        etcd_kv kv;
        if (!JSON_NODE_HOLDS_OBJECT(node) ||
            !procreg_etcd_kv_parse(json_node_get_object(node), &kv))
            continue;
        procreg_etcd_owned_remove_locked(s, kv.key, kv.key_len, rev);
        char *kns = NULL, *kname = NULL;
        if (removed != NULL &&
            procreg_etcd_split_key(s, kv.key, kv.key_len, &kns, &kname)) {
            etcd_value v;
            const char *why;
            procreg_entry e = {0};
            if (procreg_etcd_value_decode(kv.value, kv.value_len, &v, &why)) {
                procreg_etcd_fill_entry(&v, kv.mod_rev, kns, kname, &e);
                procreg_etcd_value_clear(&v);
            } else {
                e.ns = kns;
                e.name = kname;
                e.revision = (uint64_t)kv.mod_rev;
            }
            g_array_append_val(removed, e);
        }
        procreg_etcd_kv_clear(&kv);
    }
    pthread_mutex_unlock(&s->lock);
    json_node_unref(reply);
    procreg_etcd_watch_await(s, rev, deadline);
    return 0;
}
