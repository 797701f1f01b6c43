/* Values of the etcd backend: see etcd-codec.h. */
#include "etcd-codec.h"

#include <string.h>

ETCD_HIDDEN bool procreg_etcd_host_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > ETCD_HOST_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!g_ascii_isalnum(id[i]) && id[i] != '.' && id[i] != '_' &&
            id[i] != '-')
            return false;
    return true;
}

static bool writer_valid(const char *w)
{
    size_t n = strlen(w);
    if (n == 0 || n > ETCD_WRITER_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!g_ascii_isxdigit(w[i]))
            return false;
    return true;
}

ETCD_HIDDEN char *procreg_etcd_value_encode(const etcd_value *v, size_t *len)
{
    GString *s = g_string_sized_new(160);
    g_string_append_printf(s,
                           "{\"v\":%d,\"pid\":%d,\"start\":%" G_GUINT64_FORMAT
                           ",\"host\":\"%s\",\"at\":%" G_GINT64_FORMAT
                           ",\"w\":\"%s\"",
                           ETCD_VALUE_VERSION, (int)v->owner.pid,
                           (guint64)v->owner.start_time, v->host,
                           (gint64)v->registered_at, v->writer);
    if (v->nonce != 0)
        g_string_append_printf(s, ",\"n\":%" G_GINT64_FORMAT,
                               (gint64)(v->nonce & G_MAXINT64));
    if (v->metadata != NULL) {
        GVariant *normal = g_variant_get_normal_form(v->metadata);
        g_string_append(s, ",\"meta\":");
        procreg_etcd_append_b64(s, g_variant_get_data(normal),
                                g_variant_get_size(normal));
        g_variant_unref(normal);
    }
    g_string_append_c(s, '}');
    *len = s->len;
    return g_string_free(s, FALSE);
}

ETCD_HIDDEN void procreg_etcd_value_clear(etcd_value *v)
{
    if (v->metadata != NULL)
        g_variant_unref(v->metadata);
    memset(v, 0, sizeof *v);
}

static const char *get_string(JsonObject *o, const char *member)
{
    JsonNode *n = json_object_get_member(o, member);
    if (n == NULL || !JSON_NODE_HOLDS_VALUE(n) ||
        json_node_get_value_type(n) != G_TYPE_STRING)
        return NULL;
    return json_node_get_string(n);
}

/* As get_string() in an object that may be NULL. */
static const char *get_string_in(JsonObject *o, const char *member)
{
    return o != NULL ? get_string(o, member) : NULL;
}

static bool get_number(JsonObject *o, const char *member, int64_t *out)
{
    JsonNode *n = json_object_get_member(o, member);
    if (n == NULL || !JSON_NODE_HOLDS_VALUE(n) ||
        json_node_get_value_type(n) != G_TYPE_INT64)
        return false;
    *out = json_node_get_int(n);
    return true;
}

static bool decode_object(JsonObject *o, etcd_value *out, const char **why)
{
    int64_t version, pid, start, at;
    if (!get_number(o, "v", &version) || version != ETCD_VALUE_VERSION) {
        *why = "unknown or missing format version";
        return false;
    }
    if (!get_number(o, "pid", &pid) || pid <= 0 || pid > G_MAXINT32) {
        *why = "missing or bad owner pid";
        return false;
    }
    if (!get_number(o, "start", &start) || start < 0) {
        *why = "missing or bad owner start time";
        return false;
    }
    if (!get_number(o, "at", &at)) {
        *why = "missing registration time";
        return false;
    }
    const char *host = get_string(o, "host");
    if (host == NULL || !procreg_etcd_host_id_valid(host)) {
        *why = "missing or bad host id";
        return false;
    }
    const char *writer = get_string(o, "w");
    if (writer == NULL || !writer_valid(writer)) {
        *why = "missing or bad writer id";
        return false;
    }
    int64_t nonce = 0;
    if (json_object_has_member(o, "n") &&
        (!get_number(o, "n", &nonce) || nonce <= 0)) {
        *why = "bad write nonce";
        return false;
    }
    out->nonce = (uint64_t)nonce;
    out->owner.pid = (pid_t)pid;
    out->owner.start_time = (uint64_t)start;
    out->registered_at = at;
    g_strlcpy(out->host, host, sizeof out->host);
    g_strlcpy(out->writer, writer, sizeof out->writer);
    if (json_object_has_member(o, "meta")) {
        guchar *raw = NULL;
        gsize len = 0;
        if (!procreg_etcd_json_b64(o, "meta", &raw, &len)) {
            *why = "metadata is not base64";
            return false;
        }
        GBytes *bytes = g_bytes_new_take(raw, len);
        GVariant *m = g_variant_new_from_bytes(G_VARIANT_TYPE_VARDICT, bytes,
                                               FALSE);
        g_bytes_unref(bytes);
        g_variant_ref_sink(m);
        if (!g_variant_is_normal_form(m)) {
            g_variant_unref(m);
            *why = "metadata is not a serialised a{sv}";
            return false;
        }
        out->metadata = m;
    }
    return true;
}

ETCD_HIDDEN bool procreg_etcd_value_decode(const void *data, size_t len,
                                           etcd_value *out, const char **why)
{
    memset(out, 0, sizeof *out);
    JsonNode *root = procreg_etcd_json_parse_object(data, len, why, NULL);
    if (root == NULL)
        return false;
    bool ok = decode_object(json_node_get_object(root), out, why);
    json_node_unref(root);
    if (!ok)
        procreg_etcd_value_clear(out);
    return ok;
}

/* ---- reason markers ---- */

ETCD_HIDDEN size_t procreg_etcd_marker_encode(const char *writer, int reason,
                                              uint64_t nonce,
                                              char out[ETCD_MARKER_MAX])
{
    int n = nonce != 0
                ? g_snprintf(out, ETCD_MARKER_MAX,
                             "{\"w\":\"%.*s\",\"r\":%d,\"n\":%" G_GINT64_FORMAT
                             "}",
                             ETCD_WRITER_LEN, writer, reason,
                             (gint64)(nonce & G_MAXINT64))
                : g_snprintf(out, ETCD_MARKER_MAX, "{\"w\":\"%.*s\",\"r\":%d}",
                             ETCD_WRITER_LEN, writer, reason);
    return (size_t)MIN(n, ETCD_MARKER_MAX - 1);
}

ETCD_HIDDEN bool procreg_etcd_marker_parse(const void *value, size_t len,
                                           char writer[ETCD_WRITER_LEN + 1],
                                           int *reason, uint64_t *nonce)
{
    const char *why;
    JsonNode *root = procreg_etcd_json_parse_object(value, len, &why, NULL);
    if (root == NULL)
        return false;
    JsonObject *o = json_node_get_object(root);
    const char *w = get_string(o, "w");
    int64_t r = 0, n = 0;
    bool ok = w != NULL && procreg_etcd_json_int(o, "r", &r) && r >= 0 &&
              r <= 64 &&
              (!json_object_has_member(o, "n") ||
               (get_number(o, "n", &n) && n > 0));
    if (ok) {
        g_strlcpy(writer, w, ETCD_WRITER_LEN + 1);
        *reason = (int)r;
        *nonce = (uint64_t)n;
    }
    json_node_unref(root);
    return ok;
}

/* ---- etcd's replies ---- */

ETCD_HIDDEN void procreg_etcd_kv_clear(etcd_kv *kv)
{
    g_free(kv->key);
    g_free(kv->value);
    memset(kv, 0, sizeof *kv);
}

ETCD_HIDDEN bool procreg_etcd_kv_parse(JsonObject *o, etcd_kv *kv)
{
    memset(kv, 0, sizeof *kv);
    if (o == NULL)
        return false;
    if (!procreg_etcd_json_b64(o, "key", &kv->key, &kv->key_len) ||
        !procreg_etcd_json_b64(o, "value", &kv->value, &kv->value_len) ||
        !procreg_etcd_json_int(o, "mod_revision", &kv->mod_rev) ||
        !procreg_etcd_json_int(o, "create_revision", &kv->create_rev) ||
        !procreg_etcd_json_int(o, "lease", &kv->lease)) {
        procreg_etcd_kv_clear(kv);
        return false;
    }
    return true;
}

ETCD_HIDDEN int64_t procreg_etcd_header_revision(JsonObject *reply)
{
    int64_t rev = 0;
    procreg_etcd_json_int(procreg_etcd_json_obj(reply, "header"), "revision",
                          &rev);
    return rev;
}

static void watch_event_clear(gpointer p)
{
    etcd_watch_event *e = p;
    procreg_etcd_kv_clear(&e->kv);
    procreg_etcd_kv_clear(&e->prev);
}

ETCD_HIDDEN void procreg_etcd_watch_batch_clear(etcd_watch_batch *b)
{
    if (b->events != NULL)
        g_array_unref(b->events);
    g_free(b->message);
    memset(b, 0, sizeof *b);
}

static void watch_event_parse(JsonNode *n, etcd_watch_event *e)
{
    memset(e, 0, sizeof *e);
    if (!JSON_NODE_HOLDS_OBJECT(n)) {
        e->type = ETCD_EVENT_NOT_OBJECT;
        return;
    }
    JsonObject *ev = json_node_get_object(n);
    if (!procreg_etcd_kv_parse(procreg_etcd_json_obj(ev, "kv"), &e->kv)) {
        e->type = ETCD_EVENT_BAD;
        return;
    }
    const char *type = get_string(ev, "type");
    e->type = type != NULL && strcmp(type, "DELETE") == 0 ? ETCD_EVENT_DELETE
                                                          : ETCD_EVENT_PUT;
    e->have_prev =
        procreg_etcd_kv_parse(procreg_etcd_json_obj(ev, "prev_kv"), &e->prev);
}

ETCD_HIDDEN bool procreg_etcd_watch_line_parse(const char *line, size_t len,
                                               etcd_watch_batch *out,
                                               const char **why)
{
    memset(out, 0, sizeof *out);
    JsonNode *root = procreg_etcd_json_parse_object(line, len, why, NULL);
    if (root == NULL)
        return false;
    out->events = g_array_new(FALSE, TRUE, sizeof(etcd_watch_event));
    g_array_set_clear_func(out->events, watch_event_clear);
    JsonObject *o = json_node_get_object(root);
    JsonObject *res = procreg_etcd_json_obj(o, "result");
    if (res == NULL) {
        out->error = true;
        const char *m = get_string_in(procreg_etcd_json_obj(o, "error"),
                                      "message");
        out->message = g_strdup(m);
        json_node_unref(root);
        return true;
    }
    out->created = procreg_etcd_json_bool(res, "created");
    out->canceled = procreg_etcd_json_bool(res, "canceled");
    if (out->canceled) {
        procreg_etcd_json_int(res, "compact_revision", &out->compact_revision);
        out->message = g_strdup(get_string(res, "cancel_reason"));
    }
    out->header_revision = procreg_etcd_header_revision(res);
    JsonArray *events = procreg_etcd_json_array(res, "events");
    guint n = events ? json_array_get_length(events) : 0;
    g_array_set_size(out->events, n);
    for (guint i = 0; i < n; i++)
        watch_event_parse(json_array_get_element(events, i),
                          &g_array_index(out->events, etcd_watch_event, i));
    json_node_unref(root);
    return true;
}
