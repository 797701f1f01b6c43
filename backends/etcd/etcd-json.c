/* JSON from the cluster, checked and read: see etcd-json.h. */
#include "etcd-json.h"

#include <string.h>

static size_t skip_ws(const char *t, size_t i, size_t n)
{
    while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' ||
                     t[i] == '\r'))
        i++;
    return i;
}

/* The four hex digits at t[k..k+3] (the caller checked n - k >= 4), or -1. */
static long hex4(const char *t, size_t k)
{
    long v = 0;
    for (int d = 0; d < 4; d++) {
        int x = g_ascii_xdigit_value(t[k + d]);
        if (x < 0)
            return -1;
        v = v << 4 | x;
    }
    return v;
}

/* A string starting at t[*i] == '"'; *@i moves past its closing quote.
 * A \u escape of a UTF-16 surrogate must be a high one followed by a low
 * one: a lone surrogate is no character, etcd's gateway never writes one,
 * and json-glib 1.6 leaks its string buffer on "\ud800\u0041". */
static bool scan_string(const char *t, size_t n, size_t *i, const char **why)
{
    for (size_t k = *i + 1; k < n; k++) {
        unsigned char c = (unsigned char)t[k];
        if (c == '"') {
            *i = k + 1;
            return true;
        }
        if (c < 0x20) {
            *why = "control character in a JSON string";
            return false;
        }
        if (c != '\\')
            continue;
        if (++k == n)
            break;
        switch (t[k]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n':
        case 'r': case 't':
            break;
        case 'u': {
            if (n - k <= 4) {
                *why = "unterminated JSON string";
                return false;
            }
            long u = hex4(t, k + 1);
            if (u < 0) {
                *why = "bad \\u escape in a JSON string";
                return false;
            }
            k += 4;
            if (u < 0xd800 || u > 0xdfff)
                break;
            /* k + 1 .. k + 6 must be \uDC00-\uDFFF after a high one. */
            long low = u <= 0xdbff && n - k > 6 && t[k + 1] == '\\' &&
                               t[k + 2] == 'u'
                           ? hex4(t, k + 3)
                           : -1;
            if (low < 0xdc00 || low > 0xdfff) {
                *why = "lone UTF-16 surrogate in a JSON string";
                return false;
            }
            k += 6;
            break;
        }
        default:
            *why = "bad escape in a JSON string";
            return false;
        }
    }
    *why = "unterminated JSON string";
    return false;
}

static size_t skip_digits(const char *t, size_t i, size_t n)
{
    while (i < n && g_ascii_isdigit(t[i]))
        i++;
    return i;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at t[*i]. */
static bool scan_number(const char *t, size_t n, size_t *i, const char **why)
{
    size_t k = *i;
    *why = "bad JSON number";
    if (k < n && t[k] == '-')
        k++;
    if (k == n || !g_ascii_isdigit(t[k]))
        return false;
    if (t[k] == '0')
        k++;
    else
        k = skip_digits(t, k, n);
    if (k < n && t[k] == '.') {
        size_t f = skip_digits(t, k + 1, n);
        if (f == k + 1)
            return false;
        k = f;
    }
    if (k < n && (t[k] == 'e' || t[k] == 'E')) {
        k++;
        if (k < n && (t[k] == '+' || t[k] == '-'))
            k++;
        size_t e = skip_digits(t, k, n);
        if (e == k)
            return false;
        k = e;
    }
    /* "01", "1x": the next byte must end the number. */
    if (k < n && (g_ascii_isalnum(t[k]) || t[k] == '.' || t[k] == '_'))
        return false;
    *i = k;
    return true;
}

static bool scan_word(const char *t, size_t n, size_t *i, const char **why)
{
    static const char *const words[] = {"true", "false", "null"};
    for (size_t w = 0; w < G_N_ELEMENTS(words); w++) {
        size_t l = strlen(words[w]);
        if (n - *i >= l && memcmp(t + *i, words[w], l) == 0 &&
            (n - *i == l || !g_ascii_isalnum(t[*i + l]))) {
            *i += l;
            return true;
        }
    }
    *why = "unexpected character in JSON";
    return false;
}

ETCD_HIDDEN bool procreg_etcd_json_one_object(const void *text, size_t len,
                                              const char **why)
{
    const char *t = text;
    size_t n = len, i = skip_ws(t, 0, n);
    if (i == n) {
        *why = "empty text, not a JSON object";
        return false;
    }
    if (t[i] != '{') {
        *why = "not a JSON object";
        return false;
    }
    /* Bit d of in_object: level d is an object (else an array). */
    G_STATIC_ASSERT(ETCD_JSON_MAX_DEPTH <= 64);
    uint64_t in_object = 0;
    int depth = 0;
    enum { VALUE, VALUE_OR_CLOSE, NAME, NAME_OR_CLOSE, COLON, AFTER } st =
        VALUE;
    while (st != AFTER || depth > 0) {
        i = skip_ws(t, i, n);
        if (i == n) {
            *why = "truncated JSON";
            return false;
        }
        char c = t[i];
        bool top_is_object = depth > 0 && (in_object >> (depth - 1) & 1);
        bool closes = depth > 0 && c == (top_is_object ? '}' : ']');
        if (closes && (st == AFTER || st == VALUE_OR_CLOSE ||
                       st == NAME_OR_CLOSE)) {
            depth--;
            i++;
            st = AFTER;
        } else if (st == AFTER) {
            if (c != ',') {
                *why = "unexpected character in JSON";
                return false;
            }
            i++;
            st = top_is_object ? NAME : VALUE;
        } else if (st == COLON) {
            if (c != ':') {
                *why = "expected ':' in JSON";
                return false;
            }
            i++;
            st = VALUE;
        } else if (st == NAME || st == NAME_OR_CLOSE) {
            if (c != '"') {
                *why = "expected a member name in JSON";
                return false;
            }
            if (!scan_string(t, n, &i, why))
                return false;
            st = COLON;
        } else if (c == '{' || c == '[') {
            if (depth == ETCD_JSON_MAX_DEPTH) {
                *why = "JSON nested too deeply";
                return false;
            }
            if (c == '{')
                in_object |= UINT64_C(1) << depth;
            else
                in_object &= ~(UINT64_C(1) << depth);
            depth++;
            i++;
            st = c == '{' ? NAME_OR_CLOSE : VALUE_OR_CLOSE;
        } else {
            bool ok = c == '"' ? scan_string(t, n, &i, why)
                      : c == '-' || g_ascii_isdigit(c)
                          ? scan_number(t, n, &i, why)
                          : scan_word(t, n, &i, why);
            if (!ok)
                return false;
            st = AFTER;
        }
    }
    i = skip_ws(t, i, n);
    if (i == n)
        return true;
    *why = strchr("{[\"-0123456789tfn", t[i]) != NULL && t[i] != '\0'
               ? "more than one JSON value"
               : "characters after the JSON object";
    return false;
}

ETCD_HIDDEN JsonNode *procreg_etcd_json_parse_object(const void *text,
                                                     size_t len,
                                                     const char **why,
                                                     GError **error)
{
    if (len > G_MAXSSIZE) {
        *why = "text too long";
        return NULL;
    }
    if (!procreg_etcd_json_one_object(text, len, why))
        return NULL;
    JsonParser *p = json_parser_new();
    JsonNode *root = NULL;
    if (json_parser_load_from_data(p, text, (gssize)len, error) &&
        json_parser_get_root(p) != NULL &&
        JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
        root = json_parser_steal_root(p);
    else
        *why = "not valid JSON";
    g_object_unref(p);
    return root;
}

ETCD_HIDDEN void procreg_etcd_error_reply_parse(const char *text, size_t len,
                                                int *grpc_code,
                                                char **message)
{
    *grpc_code = -1;
    *message = NULL;
    const char *why;
    JsonNode *root = procreg_etcd_json_parse_object(text, len, &why, NULL);
    if (root != NULL) {
        JsonObject *o = json_node_get_object(root);
        JsonObject *inner = procreg_etcd_json_obj(o, "error");
        JsonObject *src = inner ? inner : o;
        int64_t code = -1;
        if (procreg_etcd_json_int(src, inner ? "grpc_code" : "code", &code) &&
            json_object_has_member(src, inner ? "grpc_code" : "code"))
            *grpc_code = (int)code;
        JsonNode *m = json_object_get_member(src, "message");
        if (m == NULL && !inner)
            m = json_object_get_member(src, "error");
        if (m != NULL && JSON_NODE_HOLDS_VALUE(m) &&
            json_node_get_value_type(m) == G_TYPE_STRING)
            *message = g_strdup(json_node_get_string(m));
        json_node_unref(root);
    }
    if (*message == NULL)
        *message = g_strndup(text, MIN(len, 200));
}

ETCD_HIDDEN bool procreg_etcd_json_int(JsonObject *o, const char *member,
                                       int64_t *out)
{
    *out = 0;
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;
    if (n == NULL || JSON_NODE_HOLDS_NULL(n))
        return true;
    if (!JSON_NODE_HOLDS_VALUE(n))
        return false;
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_INT64) {
        *out = json_node_get_int(n);
        return true;
    }
    if (t == G_TYPE_STRING) {
        const char *s = json_node_get_string(n);
        return g_ascii_string_to_signed(s, 10, G_MININT64, G_MAXINT64,
                                        (gint64 *)out, NULL);
    }
    return false;
}

ETCD_HIDDEN bool procreg_etcd_json_b64(JsonObject *o, const char *member,
                                       guchar **out, gsize *len)
{
    *out = NULL;
    *len = 0;
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;
    if (n == NULL || JSON_NODE_HOLDS_NULL(n)) {
        *out = g_malloc0(1);
        return true;
    }
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
        return false;
    const char *s = json_node_get_string(n);
    size_t sl = strlen(s);
    if (sl % 4 != 0)
        return false;
    for (size_t i = 0; i < sl; i++) {
        char ch = s[i];
        if (!(g_ascii_isalnum(ch) || ch == '+' || ch == '/' ||
              (ch == '=' && i + 2 >= sl)))
            return false;
    }
    /* g_base64_decode() leaves room for a terminating NUL we add. */
    guchar *raw = g_base64_decode(s, len);
    *out = g_realloc(raw, *len + 1);
    (*out)[*len] = '\0';
    return true;
}

ETCD_HIDDEN bool procreg_etcd_json_bool(JsonObject *o, const char *member)
{
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;
    return n != NULL && JSON_NODE_HOLDS_VALUE(n) &&
           json_node_get_value_type(n) == G_TYPE_BOOLEAN &&
           json_node_get_boolean(n);
}

ETCD_HIDDEN JsonObject *procreg_etcd_json_obj(JsonObject *o,
                                              const char *member)
{
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;
    return n != NULL && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n)
                                                  : NULL;
}

ETCD_HIDDEN JsonArray *procreg_etcd_json_array(JsonObject *o,
                                               const char *member)
{
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;
    return n != NULL && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n)
                                                 : NULL;
}

ETCD_HIDDEN void procreg_etcd_append_b64(GString *s, const void *data,
                                         size_t len)
{
    g_string_append_c(s, '"');
    if (len > 0) {
        char *enc = g_base64_encode(data, len);
        g_string_append(s, enc);
        g_free(enc);
    }
    g_string_append_c(s, '"');
}
