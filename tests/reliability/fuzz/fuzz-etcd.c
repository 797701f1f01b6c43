/*
 * What the etcd backend reads from the cluster (backends/etcd): the first
 * input byte picks the reader, the rest is the text.
 *
 *   0  an entry value (JSON written by any host sharing the prefix):
 *      procreg_etcd_value_decode()
 *   1  a reply: procreg_etcd_json_parse_object() (the strict one-object
 *      guard, then json-glib), the typed accessors on every member,
 *      procreg_etcd_header_revision(), procreg_etcd_kv_parse() on "kvs"
 *   2  a line of the watch stream: procreg_etcd_watch_line_parse()
 *   3  a reason marker value: procreg_etcd_marker_parse()
 *   4  an error reply: procreg_etcd_error_reply_parse()
 *
 * Expectations: every reader returns true, or false with a reason and its
 * output cleared; what is accepted is consistent (a decoded value has a
 * pid > 0, a valid host id and normal-form a{sv} metadata and re-encodes
 * to JSON that decodes to the same value; a marker with a hex writer
 * re-encodes to itself; the guard refuses whatever the parser refuses to
 * make an object of; kv keys and values are readable to their lengths);
 * base64 round-trips; nothing leaks, nothing crashes.
 */
#include "fuzz-common.h"
#include "etcd-codec.h"

#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init_common();
    return 0;
}

static bool same_value(const etcd_value *a, const etcd_value *b)
{
    if (a->owner.pid != b->owner.pid ||
        a->owner.start_time != b->owner.start_time ||
        a->registered_at != b->registered_at ||
        strcmp(a->host, b->host) != 0 || strcmp(a->writer, b->writer) != 0)
        return false;
    if (a->metadata == NULL || b->metadata == NULL)
        return a->metadata == b->metadata;
    return g_variant_equal(a->metadata, b->metadata);
}

static void fuzz_value(const uint8_t *data, size_t size)
{
    etcd_value v;
    const char *why = NULL;
    if (!procreg_etcd_value_decode(data, size, &v, &why)) {
        FUZZ_CHECK(why != NULL && *why != '\0');
        FUZZ_CHECK(v.metadata == NULL && v.owner.pid == 0);
        return;
    }
    FUZZ_CHECK(v.owner.pid > 0);
    FUZZ_CHECK(procreg_etcd_host_id_valid(v.host));
    FUZZ_CHECK(v.writer[0] != '\0');
    if (v.metadata != NULL) {
        FUZZ_CHECK(g_variant_is_of_type(v.metadata, G_VARIANT_TYPE_VARDICT));
        FUZZ_CHECK(g_variant_is_normal_form(v.metadata));
    }
    size_t len = 0;
    char *text = procreg_etcd_value_encode(&v, &len);
    FUZZ_CHECK(text != NULL && len == strlen(text));
    etcd_value again;
    if (!procreg_etcd_value_decode(text, len, &again, &why)) {
        fprintf(stderr, "re-encoded value does not decode (%s): %s\n", why,
                text);
        abort();
    }
    if (!same_value(&v, &again)) {
        fprintf(stderr, "value changed on the way back: %s\n", text);
        abort();
    }
    procreg_etcd_value_clear(&again);
    g_free(text);
    procreg_etcd_value_clear(&v);
}

static void poke_object(JsonObject *o, int depth);

static void poke_node(JsonNode *n, int depth)
{
    if (n == NULL || depth > 8)
        return;
    if (JSON_NODE_HOLDS_OBJECT(n)) {
        poke_object(json_node_get_object(n), depth + 1);
    } else if (JSON_NODE_HOLDS_ARRAY(n)) {
        JsonArray *a = json_node_get_array(n);
        guint len = json_array_get_length(a);
        for (guint i = 0; i < len && i < 16; i++)
            poke_node(json_array_get_element(a, i), depth + 1);
    }
}

static void poke_object(JsonObject *o, int depth)
{
    GList *members = json_object_get_members(o);
    int budget = 32;
    for (GList *l = members; l != NULL && budget-- > 0; l = l->next) {
        const char *m = l->data;
        int64_t i64 = 0;
        (void)procreg_etcd_json_int(o, m, &i64);
        guchar *raw = NULL;
        gsize raw_len = 12345;
        if (procreg_etcd_json_b64(o, m, &raw, &raw_len)) {
            /* Decoded data is readable to its length. */
            volatile unsigned sum = 0;
            for (gsize i = 0; i < raw_len; i++)
                sum += raw[i];
            (void)sum;
        }
        g_free(raw);
        (void)procreg_etcd_json_bool(o, m);
        JsonObject *sub = procreg_etcd_json_obj(o, m);
        if (sub != NULL)
            poke_object(sub, depth + 1);
        JsonArray *arr = procreg_etcd_json_array(o, m);
        if (arr != NULL)
            poke_node(json_object_get_member(o, m), depth);
        /* Entry values arrive base64-encoded inside replies. */
        if (strcmp(m, "value") == 0) {
            guchar *val = NULL;
            gsize vlen = 0;
            if (procreg_etcd_json_b64(o, m, &val, &vlen))
                fuzz_value(val, vlen);
            g_free(val);
        }
    }
    g_list_free(members);
}

static void touch(const guchar *p, gsize n)
{
    volatile unsigned sum = 0;
    for (gsize i = 0; i < n; i++)
        sum += p[i];
    (void)sum;
}

static void check_kv(const etcd_kv *kv)
{
    FUZZ_CHECK(kv->key != NULL);
    touch(kv->key, kv->key_len + 1); /* NUL-terminated past the length */
    if (kv->value != NULL)
        touch(kv->value, kv->value_len + 1);
}

static void fuzz_json(const uint8_t *data, size_t size)
{
    const char *why = NULL, *why2 = NULL;
    bool one = procreg_etcd_json_one_object(data, size, &why);
    if (!one)
        FUZZ_CHECK(why != NULL);
    GError *err = NULL;
    JsonNode *root = procreg_etcd_json_parse_object(data, size, &why2, &err);
    if (root == NULL) {
        FUZZ_CHECK(why2 != NULL);
    } else {
        FUZZ_CHECK(one);
        FUZZ_CHECK(JSON_NODE_HOLDS_OBJECT(root));
        JsonObject *o = json_node_get_object(root);
        poke_object(o, 0);
        (void)procreg_etcd_header_revision(o);
        JsonArray *kvs = procreg_etcd_json_array(o, "kvs");
        guint n = kvs ? json_array_get_length(kvs) : 0;
        for (guint i = 0; i < n && i < 16; i++) {
            JsonNode *e = json_array_get_element(kvs, i);
            etcd_kv kv;
            if (JSON_NODE_HOLDS_OBJECT(e) &&
                procreg_etcd_kv_parse(json_node_get_object(e), &kv)) {
                check_kv(&kv);
                if (kv.value != NULL)
                    fuzz_value(kv.value, kv.value_len);
                procreg_etcd_kv_clear(&kv);
            }
        }
        json_node_unref(root);
    }
    g_clear_error(&err);
    /* The base64 writer round-trips whatever it is given. */
    GString *s = g_string_new("{\"x\":");
    procreg_etcd_append_b64(s, data, size);
    g_string_append_c(s, '}');
    JsonNode *q = procreg_etcd_json_parse_object(s->str, s->len, &why, NULL);
    FUZZ_CHECK(q != NULL);
    guchar *back = NULL;
    gsize back_len = 0;
    FUZZ_CHECK(procreg_etcd_json_b64(json_node_get_object(q), "x", &back,
                                     &back_len));
    FUZZ_CHECK(back_len == size && (size == 0 || memcmp(back, data, size) == 0));
    g_free(back);
    json_node_unref(q);
    g_string_free(s, TRUE);
}

static void fuzz_watch_line(const uint8_t *data, size_t size)
{
    etcd_watch_batch b;
    const char *why = NULL;
    bool ok = procreg_etcd_watch_line_parse((const char *)data, size, &b, &why);
    if (!ok) {
        FUZZ_CHECK(why != NULL);
    } else if (b.events != NULL) {
        for (guint i = 0; i < b.events->len; i++) {
            etcd_watch_event *ev = &g_array_index(b.events, etcd_watch_event, i);
            if (ev->type == ETCD_EVENT_PUT || ev->type == ETCD_EVENT_DELETE) {
                check_kv(&ev->kv);
                if (ev->type == ETCD_EVENT_PUT && ev->kv.value != NULL)
                    fuzz_value(ev->kv.value, ev->kv.value_len);
            }
            if (ev->have_prev)
                check_kv(&ev->prev);
        }
    }
    if (ok && b.message != NULL)
        touch((const guchar *)b.message, strlen(b.message));
    procreg_etcd_watch_batch_clear(&b);
}

static bool all_hex(const char *w)
{
    if (*w == '\0')
        return false;
    for (; *w; w++)
        if (!g_ascii_isxdigit(*w))
            return false;
    return true;
}

static void fuzz_marker(const uint8_t *data, size_t size)
{
    char writer[ETCD_WRITER_LEN + 1] = "untouched";
    int reason = -12345;
    uint64_t nonce = 0;
    if (!procreg_etcd_marker_parse(data, size, writer, &reason, &nonce)) {
        FUZZ_CHECK(reason == -12345);
        return;
    }
    FUZZ_CHECK(reason >= 0 && reason <= 64);
    FUZZ_CHECK(strlen(writer) <= ETCD_WRITER_LEN);
    if (!all_hex(writer))
        return; /* the encoder writes hex ids only */
    char text[ETCD_MARKER_MAX];
    size_t n = procreg_etcd_marker_encode(writer, reason, nonce, text);
    char w2[ETCD_WRITER_LEN + 1];
    int r2 = -1;
    uint64_t n2 = 0;
    FUZZ_CHECK(procreg_etcd_marker_parse(text, n, w2, &r2, &n2));
    FUZZ_CHECK(r2 == reason && strcmp(w2, writer) == 0 && n2 == nonce);
}

static void fuzz_error_reply(const uint8_t *data, size_t size)
{
    int code = -7;
    char *message = NULL;
    procreg_etcd_error_reply_parse((const char *)data, size, &code, &message);
    FUZZ_CHECK(message != NULL);
    g_free(message);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *text = data + 1;
    size_t len = size - 1;
    switch (data[0] % 5) {
    case 0: fuzz_value(text, len); break;
    case 1: fuzz_json(text, len); break;
    case 2: fuzz_watch_line(text, len); break;
    case 3: fuzz_marker(text, len); break;
    default: fuzz_error_reply(text, len); break;
    }
    return 0;
}
