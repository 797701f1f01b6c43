/*
 * What the etcd backend reads from the cluster (backends/etcd): the JSON
 * value of an entry, which any host sharing the prefix may have written
 * (procreg_etcd_value_decode), and the typed accessors the backend uses on
 * etcd's JSON replies (procreg_etcd_json_*).  The first input byte picks
 * which; the rest is the text.
 *
 * Expectations:
 *  - decode returns true, or false with a reason and a cleared value;
 *  - a decoded value has a pid > 0, a valid host id and normal-form a{sv}
 *    metadata, and encodes to JSON that decodes to the same value;
 *  - the accessors never crash on any member of any JSON object, and
 *    what they return is consistent (b64 data with its length).
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

static void fuzz_json(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    JsonParser *p = json_parser_new();
    if (json_parser_load_from_data(p, (const char *)data, (gssize)size,
                                   NULL)) {
        JsonNode *root = json_parser_get_root(p);
        if (root != NULL && JSON_NODE_HOLDS_OBJECT(root))
            poke_object(json_node_get_object(root), 0);
    }
    g_object_unref(p);
    /* The base64 writer round-trips whatever it is given. */
    GString *s = g_string_new("{\"x\":");
    procreg_etcd_append_b64(s, data, size);
    g_string_append_c(s, '}');
    JsonParser *q = json_parser_new();
    FUZZ_CHECK(json_parser_load_from_data(q, s->str, (gssize)s->len, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(q));
    guchar *back = NULL;
    gsize back_len = 0;
    FUZZ_CHECK(procreg_etcd_json_b64(o, "x", &back, &back_len));
    FUZZ_CHECK(back_len == size && memcmp(back, data, size) == 0);
    g_free(back);
    g_object_unref(q);
    g_string_free(s, TRUE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        fuzz_json(data + 1, size - 1);
    else
        fuzz_value(data + 1, size - 1);
    return 0;
}
