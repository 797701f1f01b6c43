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
    *why = "not a JSON object";
    if (len == 0 || len > G_MAXSSIZE)
        return false;
    JsonParser *p = json_parser_new();
    bool ok = false;
    if (json_parser_load_from_data(p, data, (gssize)len, NULL)) {
        JsonNode *root = json_parser_get_root(p);
        if (root != NULL && JSON_NODE_HOLDS_OBJECT(root))
            ok = decode_object(json_node_get_object(root), out, why);
    }
    g_object_unref(p);
    if (!ok)
        procreg_etcd_value_clear(out);
    return ok;
}
