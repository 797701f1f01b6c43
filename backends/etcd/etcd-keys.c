/*
 * etcd backend: the etcd keys of entries, namespaces and group members
 * (layout: etcd-codec.h), the checks on a value read back, and the JSON
 * bodies of transactions (compare, put, delete, range, reason marker).
 * Pure functions of their input and the instance's prefix: no I/O, no
 * locks.
 */
#include "etcd-private.h"

#include <string.h>

ETCD_HIDDEN GString *procreg_etcd_entry_key(etcd_state *s,
                                            const procreg_key *key)
{
    GString *k =
        g_string_sized_new(s->eprefix->len + procreg_key_size(key) + 1);
    g_string_append_len(k, s->eprefix->str, (gssize)s->eprefix->len);
    g_string_append_len(k, procreg_key_bytes(key),
                         (gssize)procreg_key_size(key));
    return k;
}

/* Range end for every key starting with @k (@n bytes): the key with its
 * last byte increased; a run of 0xff bytes is dropped first. */
ETCD_HIDDEN GString *procreg_etcd_prefix_end(const char *k, size_t n)
{
    GString *e = g_string_new_len(k, (gssize)n);
    while (e->len > 0 && (guchar)e->str[e->len - 1] == 0xff)
        g_string_truncate(e, e->len - 1);
    if (e->len > 0)
        e->str[e->len - 1] = (char)((guchar)e->str[e->len - 1] + 1);
    return e;
}

/* The range of namespace @ns (NULL: all entries) as [*start, *end). */
ETCD_HIDDEN void procreg_etcd_ns_range(etcd_state *s, const char *ns,
                                       GString **start, GString **end)
{
    *start = g_string_new_len(s->eprefix->str, (gssize)s->eprefix->len);
    if (ns != NULL) {
        g_string_append(*start, ns);
        g_string_append_c(*start, '\0');
    }
    *end = procreg_etcd_prefix_end((*start)->str, (*start)->len);
}

ETCD_HIDDEN void procreg_etcd_json_key(GString *b, const char *member,
                                       const void *k, size_t n)
{
    g_string_append_printf(b, "\"%s\":", member);
    procreg_etcd_append_b64(b, k, n);
}

/* Split an etcd key prefix/e/ns\0name into ns and name (validated). */
ETCD_HIDDEN bool procreg_etcd_split_key(etcd_state *s, const guchar *k,
                                        size_t n, char **ns, char **name)
{
    *ns = *name = NULL;
    if (n <= s->eprefix->len ||
        memcmp(k, s->eprefix->str, s->eprefix->len) != 0)
        return false;
    const char *p = (const char *)k + s->eprefix->len;
    size_t rest = n - s->eprefix->len;
    const char *nul = memchr(p, '\0', rest);
    if (nul == NULL)
        return false;
    char *a = g_strndup(p, (gsize)(nul - p));
    char *b = g_strndup(nul + 1, (gsize)(rest - (size_t)(nul - p) - 1));
    /* g_strndup stops at a NUL: a name holding one is not ours. */
    if (strlen(b) != rest - (size_t)(nul - p) - 1 ||
        procreg_validate_name(a, "namespace", NULL) != 0 ||
        procreg_validate_name(b, "name", NULL) != 0) {
        g_free(a);
        g_free(b);
        return false;
    }
    *ns = a;
    *name = b;
    return true;
}

/* A printable form of an etcd key for messages; g_free it. */
ETCD_HIDDEN char *procreg_etcd_key_for_humans(const guchar *k, size_t n)
{
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < n && i < 600; i++) {
        if (k[i] == 0)
            g_string_append(s, "\\0");
        else if (k[i] < 0x20 || k[i] == 0x7f)
            g_string_append_printf(s, "\\x%02x", k[i]);
        else
            g_string_append_c(s, (char)k[i]);
    }
    return g_string_free(s, FALSE);
}

/* Decode @kv's value or report it corrupt. */
ETCD_HIDDEN int procreg_etcd_kv_value(const etcd_kv *kv, etcd_value *v,
                                      GError **error)
{
    const char *why = NULL;
    if (procreg_etcd_value_decode(kv->value, kv->value_len, v, &why))
        return 0;
    char *k = procreg_etcd_key_for_humans(kv->key, kv->key_len);
    int rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "etcd: corrupt value at key '%s': %s", k, why);
    g_free(k);
    return rc;
}

/* An entry on this host whose owner process is gone: treated as absent
 * here at once (the lease removes it everywhere later, or its registry's
 * keeper reaps it). */
ETCD_HIDDEN bool procreg_etcd_owner_dead_here(etcd_state *s,
                                              const etcd_value *v)
{
    return strcmp(v->host, s->host_id) == 0 &&
           !procreg_owner_is_alive(&v->owner);
}

ETCD_HIDDEN void procreg_etcd_fill_entry(const etcd_value *v, int64_t revision,
                                         char *ns, char *name,
                                         procreg_entry *out)
{
    if (out == NULL) {
        g_free(ns);
        g_free(name);
        return;
    }
    memset(out, 0, sizeof *out);
    out->ns = ns;
    out->name = name;
    out->owner = v->owner;
    out->metadata = v->metadata ? g_variant_ref(v->metadata) : NULL;
    out->registered_at = v->registered_at;
    out->revision = (uint64_t)revision;
}

/* Responses of a txn: the @i-th op's reply object of @kind
 * ("response_range", ...), or NULL. */
ETCD_HIDDEN JsonObject *procreg_etcd_txn_response(JsonObject *reply, guint i,
                                                  const char *kind)
{
    JsonArray *a = procreg_etcd_json_array(reply, "responses");
    if (a == NULL || i >= json_array_get_length(a))
        return NULL;
    JsonNode *n = json_array_get_element(a, i);
    if (!JSON_NODE_HOLDS_OBJECT(n))
        return NULL;
    return procreg_etcd_json_obj(json_node_get_object(n), kind);
}

/* The first kv of a range reply (or a prev_kvs array holder), parsed. */
ETCD_HIDDEN bool procreg_etcd_first_kv(JsonObject *o, const char *member,
                                       etcd_kv *kv)
{
    JsonArray *a = procreg_etcd_json_array(o, member);
    if (a == NULL || json_array_get_length(a) == 0)
        return false;
    JsonNode *n = json_array_get_element(a, 0);
    return JSON_NODE_HOLDS_OBJECT(n) &&
           procreg_etcd_kv_parse(json_node_get_object(n), kv);
}

ETCD_HIDDEN bool procreg_etcd_change_decode(etcd_state *s, const void *key,
                                            size_t klen, const void *value,
                                            size_t vlen, int64_t revision,
                                            procreg_change *c)
{
    if (procreg_etcd_is_member_key(s, key, klen))
        return procreg_etcd_member_decode(s, key, klen, value, vlen,
                                          revision, c);
    char *ns = NULL, *name = NULL;
    if (!procreg_etcd_split_key(s, key, klen, &ns, &name)) {
        atomic_add(&s->corrupt_seen, 1);
        return false;
    }
    procreg_entry e = {0};
    etcd_value v;
    const char *why;
    if (value != NULL && procreg_etcd_value_decode(value, vlen, &v, &why)) {
        procreg_etcd_fill_entry(&v, revision, ns, name, &e);
        procreg_etcd_value_clear(&v);
    } else if (c->kind != PROCREG_EVENT_UNREGISTERED) {
        /* A registration we cannot read is not one to announce. */
        atomic_add(&s->corrupt_seen, 1);
        g_free(ns);
        g_free(name);
        return false;
    } else {
        e.ns = ns;
        e.name = name;
        e.revision = (uint64_t)revision;
    }
    c->entry = e;
    return true;
}

ETCD_HIDDEN void procreg_etcd_notify(etcd_state *s, bool own,
                                     procreg_event_kind kind,
                                     procreg_event_reason reason,
                                     const void *key, size_t klen,
                                     const void *value, size_t vlen,
                                     int64_t revision, uint64_t position)
{
    if (s->host == NULL) /* retired: no core to tell */
        return;
    procreg_change c = {.kind = kind, .reason = reason, .own = own,
                        .position = position};
    if (!procreg_etcd_change_decode(s, key, klen, value, vlen, revision, &c))
        return;
    atomic_add(&s->notified, 1);
    procreg_backend_host_notify_at(s->host, c.kind, c.reason, &c.entry, own,
                                   c.position);
    procreg_entry_clear(&c.entry);
}

ETCD_HIDDEN procreg_event_reason procreg_etcd_removal_reason(etcd_state *s,
                                                           const etcd_value *v)
{
    if (procreg_etcd_owner_dead_here(s, v))
        return PROCREG_REASON_OWNER_EXITED;
    procreg_owner self;
    procreg_owner_self(&self);
    bool mine = strcmp(v->host, s->host_id) == 0 && v->owner.pid == self.pid &&
                (v->owner.start_time == 0 ||
                 v->owner.start_time == self.start_time);
    return mine ? PROCREG_REASON_EXPLICIT : PROCREG_REASON_FORCED;
}

ETCD_HIDDEN int procreg_etcd_txn_outcome(JsonObject *reply,
                                         guint failure_ranges,
                                         bool *succeeded, int64_t *rev,
                                         GError **error)
{
    *succeeded = procreg_etcd_json_bool(reply, "succeeded");
    *rev = procreg_etcd_header_revision(reply);
    const char *why = NULL;
    if (*rev <= 0)
        why = "no revision in its header";
    for (guint i = 0; why == NULL && !*succeeded && i < failure_ranges; i++)
        if (procreg_etcd_txn_response(reply, i, "response_range") == NULL)
            why = "a comparison failed, and the ranges it asks for then "
                  "are missing";
    if (why == NULL)
        return 0;
    return procreg_set_error(error, PROCREG_EBACKEND,
                             "etcd sent a malformed transaction reply: %s",
                             why);
}

/* ---- txn bodies ---- */

ETCD_HIDDEN void procreg_etcd_op_put(GString *b, const GString *key,
                                     const char *value, size_t value_len,
                                     int64_t lease, bool ignore_lease)
{
    g_string_append(b, "{\"request_put\":{");
    procreg_etcd_json_key(b, "key", key->str, key->len);
    g_string_append_c(b, ',');
    procreg_etcd_json_key(b, "value", value, value_len);
    if (ignore_lease)
        g_string_append(b, ",\"ignore_lease\":true");
    else if (lease != 0)
        g_string_append_printf(b, ",\"lease\":\"%" G_GINT64_FORMAT "\"",
                               (gint64)lease);
    g_string_append(b, "}}");
}

ETCD_HIDDEN void procreg_etcd_op_delete(GString *b, const GString *key,
                                        const GString *end)
{
    g_string_append(b, "{\"request_delete_range\":{");
    procreg_etcd_json_key(b, "key", key->str, key->len);
    if (end != NULL) {
        g_string_append_c(b, ',');
        procreg_etcd_json_key(b, "range_end", end->str, end->len);
    }
    g_string_append(b, ",\"prev_kv\":true}}");
}

ETCD_HIDDEN void procreg_etcd_op_range(GString *b, const GString *key)
{
    g_string_append(b, "{\"request_range\":{");
    procreg_etcd_json_key(b, "key", key->str, key->len);
    g_string_append(b, "}}");
}

/* Whether the namespace part of @k (under eprefix) ends with \x01: a
 * group's key.  No valid namespace holds a control character. */
static bool in_group(etcd_state *s, const void *k, size_t n)
{
    const char *p = (const char *)k + s->eprefix->len;
    const char *nul = memchr(p, '\0', n - s->eprefix->len);
    const char *one = memchr(p, '\x01', n - s->eprefix->len);
    return one != NULL && (nul == NULL || one < nul);
}

ETCD_HIDDEN bool procreg_etcd_is_entry_key(etcd_state *s, const void *k,
                                           size_t n)
{
    if (n <= s->eprefix->len || memcmp(k, s->eprefix->str, s->eprefix->len))
        return false;
    const char *nul = memchr((const char *)k + s->eprefix->len, '\0',
                             n - s->eprefix->len);
    return nul != NULL && nul != (const char *)k + n - 1 &&
           !in_group(s, k, n);
}

ETCD_HIDDEN bool procreg_etcd_is_member_key(etcd_state *s, const void *k,
                                            size_t n)
{
    if (n <= s->eprefix->len || memcmp(k, s->eprefix->str, s->eprefix->len))
        return false;
    const char *nul = memchr((const char *)k + s->eprefix->len, '\0',
                             n - s->eprefix->len);
    return nul != NULL && nul != (const char *)k + n - 1 && in_group(s, k, n);
}

ETCD_HIDDEN GString *procreg_etcd_group_marker_key(etcd_state *s,
                                                   const procreg_key *key)
{
    GString *k = procreg_etcd_entry_key(s, key);
    char *nul = memchr(k->str + s->eprefix->len, '\0', k->len - s->eprefix->len);
    *nul = '\x01';
    g_string_append_c(k, '\0');
    return k;
}

ETCD_HIDDEN bool procreg_etcd_split_member_key(etcd_state *s, const guchar *k,
                                               size_t n, char **ns,
                                               char **group)
{
    *ns = *group = NULL;
    if (!procreg_etcd_is_member_key(s, k, n))
        return false;
    const char *p = (const char *)k + s->eprefix->len;
    const char *one = memchr(p, '\x01', n - s->eprefix->len);
    const char *nul = memchr(one, '\0', n - (size_t)(one - (const char *)k));
    char *a = g_strndup(p, (gsize)(one - p));
    char *b = g_strndup(one + 1, (gsize)(nul - one - 1));
    if (strlen(b) != (size_t)(nul - one - 1) ||
        procreg_validate_name(a, "namespace", NULL) != 0 ||
        procreg_validate_name(b, "group", NULL) != 0) {
        g_free(a);
        g_free(b);
        return false;
    }
    *ns = a;
    *group = b;
    return true;
}

ETCD_HIDDEN void procreg_etcd_ns_watch_range(etcd_state *s, const char *ns,
                                             GString **start, GString **end)
{
    procreg_etcd_ns_range(s, ns, start, end);
    if (ns != NULL)
        (*end)->str[(*end)->len - 1] = '\x02';
}

ETCD_HIDDEN bool procreg_etcd_is_marker_key(etcd_state *s, const void *k,
                                            size_t n)
{
    return n > s->eprefix->len + 1 &&
           memcmp(k, s->eprefix->str, s->eprefix->len) == 0 &&
           memchr((const char *)k + s->eprefix->len, '\0',
                  n - s->eprefix->len) == (const char *)k + n - 1;
}

ETCD_HIDDEN GString *procreg_etcd_marker_key(etcd_state *s, const void *k,
                                             size_t n)
{
    const char *nul = memchr((const char *)k + s->eprefix->len, '\0',
                             n - s->eprefix->len);
    return g_string_new_len(k, (gssize)((nul - (const char *)k) + 1));
}

/* The reason marker written with a removal (or a forced update) of the
 * entry @key, in its namespace's marker key. */
ETCD_HIDDEN void procreg_etcd_op_marker(etcd_state *s, GString *b,
                                        const GString *key,
                                        const char *writer, uint64_t nonce,
                                        procreg_event_reason reason)
{
    char value[ETCD_MARKER_MAX];
    size_t n = procreg_etcd_marker_encode(writer, (int)reason, nonce, value);
    GString *mk = procreg_etcd_marker_key(s, key->str, key->len);
    procreg_etcd_op_put(b, mk, value, n, 0, false);
    g_string_free(mk, TRUE);
}

ETCD_HIDDEN void procreg_etcd_op_compare(GString *b, const GString *key,
                                         const char *target, const char *result,
                                         const char *field, int64_t v)
{
    g_string_append_c(b, '{');
    procreg_etcd_json_key(b, "key", key->str, key->len);
    g_string_append_printf(b,
                           ",\"target\":\"%s\",\"result\":\"%s\",\"%s\":\"%"
                           G_GINT64_FORMAT "\"}",
                           target, result, field, (gint64)v);
}
