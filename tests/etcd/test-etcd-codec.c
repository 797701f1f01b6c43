/*
 * The etcd backend's parsers of text from the cluster, without a server:
 * the one-JSON-object guard every such text passes before json-glib sees
 * it (procreg_etcd_json_one_object), and the state-independent parsers
 * built on it (values, reason markers, watch lines, error replies).
 *
 * json-glib 1.6.6 accepts '{"a":1}{"b":2}', keeps one value and leaks the
 * other; it also accepts comments, so a guard that only matched braces
 * would let '{ / * " * / }{ "x": "}" }' (without the spaces in the
 * comment marks) through.  Under AddressSanitizer the two-value cases
 * also run LeakSanitizer on the spot, next to a control that shows the
 * check sees json-glib's leak when the guard is bypassed (with
 * G_SLICE=always-malloc, as meson test runs it).
 */
#include "etcd-codec.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

/* Length-explicit texts (some hold NUL bytes). */
typedef struct {
    const char *text;
    size_t len;
    const char *why; /* a substring of the reason; NULL: accepted */
} sample;

#define S(lit, why) {lit, sizeof(lit) - 1, why}

static const sample two_values[] = {
    S("{\"a\":1}{\"b\":2}", "more than one JSON value"),
    S("{\"a\":1} {\"b\":2}", "more than one JSON value"),
    S("{\"a\":1}\n{\"b\":2}\n", "more than one JSON value"),
    S("{\"a\":1}[1]", "more than one JSON value"),
    S("{\"a\":1}\"x\"", "more than one JSON value"),
    S("{\"a\":1}7", "more than one JSON value"),
    S("{\"a\":1}null", "more than one JSON value"),
    S("{\"a\":\"}{\"}{\"b\":\"{\"}", "more than one JSON value"),
    /* tests/reliability/fuzz/regressions/etcd/two-json-values-leak */
    S("{\"v\":\":1S0010000ef\"}{\"revisio(n\":\"43\"},\"events\":[...]}",
      "more than one JSON value"),
    /* A comment hiding a quote: a brace counter sees one object. */
    S("{ /* \" */ }{ \"x\": \"}\" }", "member name"),
    S("{\"a\":1}\0{\"b\":2}", "after the JSON object"),
    S("{\"a\":1}x", "after the JSON object"),
    S("{\"a\":1}}", "after the JSON object"),
};

static const sample accepted[] = {
    S("{}", NULL),
    S("{\"a\":1}", NULL),
    S("{\"a\":1}   \n\t\r\n", NULL),
    S(" \r\n\t{\"a\":1}", NULL),
    S("{ \"a\" : [ 1 , 2 , { } , [ ] ] , \"b\" : { \"c\" : null } }", NULL),
    S("{\"n\":[0,-0,1.5,-2.25e-3,1E+2,3e7,10,123456789012345]}", NULL),
    S("{\"t\":true,\"f\":false,\"z\":null}", NULL),
    S("{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\ude00\"}", NULL),
    S("{\"s\":\"\\udbff\\uDFFF\\uD800\\uDC00\\ud7ff\\ue000\"}", NULL),
    S("{\"\":\"\"}", NULL),
    S("{\"a\":\"caf\xc3\xa9\"}", NULL),
};

static const sample refused[] = {
    S("", "empty"),
    S("  \n", "empty"),
    S("[1,2]", "not a JSON object"),
    S("\"x\"", "not a JSON object"),
    S("\xef\xbb\xbf{\"a\":1}", "not a JSON object"),
    S("{", "truncated"),
    S("{\"a\":", "truncated"),
    S("{\"a\":1,", "truncated"),
    S("{\"a", "unterminated"),
    S("{\"a\":\"x\\", "unterminated"),
    S("{\"a\":\"\\u12", "unterminated"),
    S("{\"a\":\"\\u12x4\"}", "\\u escape"),
    /* json-glib 1.6 leaks a string buffer on the first of these. */
    S("{\"a\":\"\\ud800\\u0041\"}", "lone UTF-16 surrogate"),
    S("{\"a\":\"\\ud800x\"}", "lone UTF-16 surrogate"),
    S("{\"a\":\"\\uDBFF\"}", "lone UTF-16 surrogate"),
    S("{\"a\":\"\\udc00\\ud800\"}", "lone UTF-16 surrogate"),
    S("{\"\\ud83d\\ud83d\":1}", "lone UTF-16 surrogate"),
    S("{\"a\":\"\\ud800\\udc0g\"}", "lone UTF-16 surrogate"),
    S("{\"a\":\"\\x41\"}", "bad escape"),
    S("{\"a\":\"\\101\"}", "bad escape"),
    S("{\"a\":\"x\ny\"}", "control character"),
    S("{\"a\":\"x\0y\"}", "control character"),
    S("{'a':1}", "member name"),
    S("{a:1}", "member name"),
    S("{\"a\":'x'}", "unexpected character"),
    S("{\"a\":1 /* c */}", "unexpected character"),
    S("{\"a\":1,}", "member name"),
    S("{\"a\":[1,]}", "unexpected character"),
    S("{\"a\":[,1]}", "unexpected character"),
    S("{\"a\" 1}", "':'"),
    S("{\"a\":1]", "unexpected character"),
    S("{\"a\":[1}", "unexpected character"),
    S("{\"a\":0x10}", "number"),
    S("{\"a\":01}", "number"),
    S("{\"a\":.5}", "unexpected character"),
    S("{\"a\":1.}", "number"),
    S("{\"a\":1e}", "number"),
    S("{\"a\":+1}", "unexpected character"),
    S("{\"a\":-}", "number"),
    S("{\"a\":NaN}", "unexpected character"),
    S("{\"a\":TRUE}", "unexpected character"),
    S("{\"a\":truex}", "unexpected character"),
    S("{\"a\":nul}", "unexpected character"),
};

static void check(const sample *s, size_t i)
{
    const char *why = NULL;
    bool ok = procreg_etcd_json_one_object(s->text, s->len, &why);
    if (s->why == NULL) {
        if (!ok)
            g_error("sample %zu '%.*s' refused: %s", i, (int)s->len, s->text,
                    why);
        JsonNode *root =
            procreg_etcd_json_parse_object(s->text, s->len, &why, NULL);
        if (root == NULL)
            g_error("sample %zu passed the guard, json-glib refused it: %s",
                    i, why);
        json_node_unref(root);
        return;
    }
    if (ok)
        g_error("sample %zu '%.*s' accepted", i, (int)s->len, s->text);
    g_assert_nonnull(why);
    if (strstr(why, s->why) == NULL)
        g_error("sample %zu: reason '%s', expected '%s'", i, why, s->why);
    GError *err = NULL;
    const char *why2 = NULL;
    g_assert_null(procreg_etcd_json_parse_object(s->text, s->len, &why2, &err));
    g_assert_cmpstr(why2, ==, why);
    g_assert_no_error(err); /* refused before json-glib */
}

#ifdef HAVE_LSAN
/* Whether LeakSanitizer finds a leak now. */
static bool leaks_now(void)
{
    return __lsan_do_recoverable_leak_check() != 0;
}
#endif

static void test_two_values(void)
{
    for (size_t i = 0; i < G_N_ELEMENTS(two_values); i++)
        check(&two_values[i], i);
    /* Two complete entry values: refused, not decoded as either. */
    etcd_value v = {.owner = {.pid = 42, .start_time = 7},
                    .registered_at = 99};
    g_strlcpy(v.host, "host-a", sizeof v.host);
    g_strlcpy(v.writer, "0123456789abcdef", sizeof v.writer);
    size_t len = 0;
    char *one = procreg_etcd_value_encode(&v, &len);
    char *two = g_strconcat(one, one, NULL);
    etcd_value out;
    const char *why = NULL;
    g_assert_true(procreg_etcd_value_decode(one, len, &out, &why));
    g_assert_cmpint(out.owner.pid, ==, 42);
    procreg_etcd_value_clear(&out);
    g_assert_false(procreg_etcd_value_decode(two, 2 * len, &out, &why));
    g_assert_cmpstr(why, ==, "more than one JSON value");
    g_assert_cmpint(out.owner.pid, ==, 0);
    g_assert_null(out.metadata);
    /* The same through every other parser of cluster text. */
    char w[ETCD_WRITER_LEN + 1] = "";
    int r = -1;
    uint64_t nonce = 0;
    const char *markers = "{\"w\":\"a\",\"r\":1}{\"w\":\"b\",\"r\":2}";
    g_assert_false(procreg_etcd_marker_parse(markers, strlen(markers), w, &r,
                                             &nonce));
    g_assert_cmpstr(w, ==, "");
    g_assert_cmpint(r, ==, -1);
    etcd_watch_batch b;
    const char *line = "{\"result\":{}}{\"result\":{}}";
    g_assert_false(procreg_etcd_watch_line_parse(line, strlen(line), &b, &why));
    g_assert_cmpstr(why, ==, "more than one JSON value");
    g_assert_null(b.events);
    procreg_etcd_watch_batch_clear(&b);
    int code = 0;
    char *msg = NULL;
    const char *reply = "{\"code\":3,\"message\":\"a\"}{\"code\":5}";
    procreg_etcd_error_reply_parse(reply, strlen(reply), &code, &msg);
    g_assert_cmpint(code, ==, -1);
    g_assert_cmpstr(msg, ==, reply);
    g_free(msg);
    g_free(one);
    g_free(two);
#ifdef HAVE_LSAN
    g_assert_false(leaks_now());
#else
    g_test_message("not built with AddressSanitizer: no leak check");
#endif
}

/* The control: json-glib itself on two values, in a child, leaks. */
static void test_leak_control(void)
{
#ifndef HAVE_LSAN
    g_test_skip("needs AddressSanitizer (-Db_sanitize=address)");
#else
    /* GSlice's magazines keep json-glib's objects reachable: LeakSanitizer
     * sees them only with plain malloc (tests/meson.build sets this). */
    if (g_strcmp0(g_getenv("G_SLICE"), "always-malloc") != 0) {
        g_test_skip("needs G_SLICE=always-malloc");
        return;
    }
    if (g_test_subprocess()) {
        JsonParser *p = json_parser_new();
        gboolean ok = json_parser_load_from_data(p, "{\"a\":1}{\"b\":2}", -1,
                                                 NULL);
        g_object_unref(p);
        printf("json-glib %s; leak %s\n", ok ? "accepted" : "refused",
               leaks_now() ? "seen" : "not seen");
        fflush(stdout);
        _exit(0); /* no second report at exit */
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    g_test_trap_assert_stdout("*json-glib accepted; leak seen*");
#endif
}

static void test_accepted(void)
{
    for (size_t i = 0; i < G_N_ELEMENTS(accepted); i++)
        check(&accepted[i], i);
    /* Braces, brackets and escaped quotes inside strings are text. */
    const char *t = "{\"a\":\"}{\",\"b\":\"\\\"}{\\\"\",\"c\":\"\\\\\","
                    "\"d\":\"[\\\\\\\"{\",\"}\":\"]\"}  \n";
    const char *why = NULL;
    JsonNode *root = procreg_etcd_json_parse_object(t, strlen(t), &why, NULL);
    g_assert_nonnull(root);
    JsonObject *o = json_node_get_object(root);
    g_assert_cmpstr(json_object_get_string_member(o, "a"), ==, "}{");
    g_assert_cmpstr(json_object_get_string_member(o, "b"), ==, "\"}{\"");
    g_assert_cmpstr(json_object_get_string_member(o, "c"), ==, "\\");
    g_assert_cmpstr(json_object_get_string_member(o, "d"), ==, "[\\\"{");
    g_assert_cmpstr(json_object_get_string_member(o, "}"), ==, "]");
    json_node_unref(root);
    /* An escaped backslash ends before the quote: the quote closes. */
    const char *u = "{\"a\":\"\\\\\"}{\"b\":1}";
    g_assert_false(procreg_etcd_json_one_object(u, strlen(u), &why));
    g_assert_cmpstr(why, ==, "more than one JSON value");
    /* An escaped quote does not close: one object. */
    const char *q = "{\"a\":\"\\\"}{\\\"b\\\":1}\"}";
    g_assert_true(procreg_etcd_json_one_object(q, strlen(q), &why));
    /* An entry value with whitespace after it decodes. */
    etcd_value v = {.owner = {.pid = 5, .start_time = 1}};
    g_strlcpy(v.host, "h", sizeof v.host);
    g_strlcpy(v.writer, "1", sizeof v.writer);
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "k", "s", "{\"}{\"");
    v.metadata = g_variant_ref_sink(g_variant_dict_end(&d));
    size_t len = 0;
    char *text = procreg_etcd_value_encode(&v, &len);
    char *spaced = g_strconcat(" \n", text, " \r\n\t ", NULL);
    etcd_value out;
    g_assert_true(procreg_etcd_value_decode(spaced, strlen(spaced), &out,
                                            &why));
    g_assert_cmpint(out.owner.pid, ==, 5);
    g_assert_cmpuint(out.nonce, ==, 0);
    g_assert_true(g_variant_equal(out.metadata, v.metadata));
    procreg_etcd_value_clear(&out);
    g_free(text);
    g_free(spaced);

    /* The write nonce survives the round trip; a bad one is refused. */
    v.nonce = 123456789012345ull;
    text = procreg_etcd_value_encode(&v, &len);
    g_assert_true(procreg_etcd_value_decode(text, len, &out, &why));
    g_assert_cmpuint(out.nonce, ==, 123456789012345ull);
    procreg_etcd_value_clear(&out);
    g_free(text);
    static const char *const bad_nonces[] = {"0", "-3", "\"7\"", "1.5"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad_nonces); i++) {
        char *bad = g_strdup_printf("{\"v\":1,\"pid\":5,\"start\":1,"
                                    "\"host\":\"h\",\"at\":0,\"w\":\"1\","
                                    "\"n\":%s}", bad_nonces[i]);
        g_assert_false(procreg_etcd_value_decode(bad, strlen(bad), &out, &why));
        g_assert_cmpstr(why, ==, "bad write nonce");
        g_free(bad);
    }
    procreg_etcd_value_clear(&v);
}

static void test_refused(void)
{
    for (size_t i = 0; i < G_N_ELEMENTS(refused); i++)
        check(&refused[i], i);
}

/* json-glib recurses once per level: a deep text must stop at the guard. */
static void test_depth(void)
{
    const size_t depths[] = {ETCD_JSON_MAX_DEPTH - 1, ETCD_JSON_MAX_DEPTH,
                             ETCD_JSON_MAX_DEPTH + 1, 300000};
    for (size_t k = 0; k < G_N_ELEMENTS(depths); k++) {
        size_t levels = depths[k];
        /* {"a": + levels-1 arrays + 1 + ] ... + }: levels in all. */
        GString *s = g_string_new("{\"a\":");
        for (size_t i = 1; i < levels; i++)
            g_string_append_c(s, '[');
        g_string_append_c(s, '1');
        for (size_t i = 1; i < levels; i++)
            g_string_append_c(s, ']');
        g_string_append_c(s, '}');
        const char *why = NULL;
        bool ok = procreg_etcd_json_one_object(s->str, s->len, &why);
        if (levels <= ETCD_JSON_MAX_DEPTH) {
            g_assert_true(ok);
        } else {
            g_assert_false(ok);
            g_assert_cmpstr(why, ==, "JSON nested too deeply");
            etcd_value out;
            g_assert_false(procreg_etcd_value_decode(s->str, s->len, &out,
                                                     &why));
        }
        g_string_free(s, TRUE);
    }
}

static void test_marker(void)
{
    char text[ETCD_MARKER_MAX];
    size_t n = procreg_etcd_marker_encode("0123456789abcdef", 3, 0, text);
    g_assert_cmpuint(n, ==, strlen(text));
    char w[ETCD_WRITER_LEN + 1] = "";
    int r = -1;
    uint64_t nonce = 7;
    g_assert_true(procreg_etcd_marker_parse(text, n, w, &r, &nonce));
    g_assert_cmpstr(w, ==, "0123456789abcdef");
    g_assert_cmpint(r, ==, 3);
    g_assert_cmpuint(nonce, ==, 0);
    /* The longest marker fits, nonce and all. */
    n = procreg_etcd_marker_encode("0123456789abcdef", 64, G_MAXINT64, text);
    g_assert_cmpuint(n, ==, strlen(text));
    g_assert_true(procreg_etcd_marker_parse(text, n, w, &r, &nonce));
    g_assert_cmpint(r, ==, 64);
    g_assert_cmpuint(nonce, ==, G_MAXINT64);
    /* "r" as etcd-style string, and absent (0). */
    const char *as_string = "{\"w\":\"0\",\"r\":\"64\"}";
    g_assert_true(procreg_etcd_marker_parse(as_string, strlen(as_string), w,
                                            &r, &nonce));
    g_assert_cmpint(r, ==, 64);
    const char *no_r = "{\"w\":\"ab\"}";
    g_assert_true(procreg_etcd_marker_parse(no_r, strlen(no_r), w, &r,
                                            &nonce));
    g_assert_cmpstr(w, ==, "ab");
    g_assert_cmpint(r, ==, 0);
    const char *bad[] = {"", "{}", "{\"w\":1,\"r\":1}", "{\"w\":\"a\",\"r\":65}",
                         "{\"w\":\"a\",\"r\":-1}", "{\"w\":\"a\",\"r\":\"x\"}",
                         "[\"w\"]", "{\"w\":\"a\",\"r\":1,\"n\":0}",
                         "{\"w\":\"a\",\"r\":1,\"n\":\"5\"}"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        r = -7;
        g_assert_false(procreg_etcd_marker_parse(bad[i], strlen(bad[i]), w, &r,
                                                 &nonce));
        g_assert_cmpint(r, ==, -7);
    }
}

static char *b64(const char *s)
{
    return g_base64_encode((const guchar *)s, strlen(s));
}

static void test_watch_line(void)
{
    char *k1 = g_base64_encode((const guchar *)"/p/e/ns\0a", 9);
    char *v1 = b64("{\"v\":1}");
    char *kw = b64("/p/why"), *vw = b64("{\"w\":\"ab\",\"r\":2}");
    char *line = g_strdup_printf(
        "{\"result\":{\"header\":{\"cluster_id\":\"1\",\"revision\":\"12\"},"
        "\"events\":["
        "{\"kv\":{\"key\":\"%s\",\"create_revision\":\"10\","
        "\"mod_revision\":\"10\",\"version\":\"1\",\"value\":\"%s\","
        "\"lease\":\"77\"}},"
        "{\"type\":\"DELETE\",\"kv\":{\"key\":\"%s\",\"mod_revision\":\"12\"},"
        "\"prev_kv\":{\"key\":\"%s\",\"create_revision\":\"10\","
        "\"mod_revision\":\"10\",\"value\":\"%s\"}},"
        "{\"kv\":{\"key\":\"%s\",\"mod_revision\":\"12\",\"value\":\"%s\"}},"
        "{\"kv\":{\"key\":\"not base64!\"}},"
        "{\"type\":\"DELETE\"},"
        "17"
        "]}}\n",
        k1, v1, k1, k1, v1, kw, vw);
    etcd_watch_batch b;
    const char *why = NULL;
    g_assert_true(procreg_etcd_watch_line_parse(line, strlen(line), &b, &why));
    g_assert_false(b.error);
    g_assert_false(b.created);
    g_assert_false(b.canceled);
    g_assert_null(b.message);
    g_assert_cmpint(b.header_revision, ==, 12);
    g_assert_cmpuint(b.events->len, ==, 6);
    etcd_watch_event *e = (etcd_watch_event *)(void *)b.events->data;
    g_assert_cmpint(e[0].type, ==, ETCD_EVENT_PUT);
    g_assert_cmpmem(e[0].kv.key, e[0].kv.key_len, "/p/e/ns\0a", 9);
    g_assert_cmpstr((const char *)e[0].kv.value, ==, "{\"v\":1}");
    g_assert_cmpint(e[0].kv.create_rev, ==, 10);
    g_assert_cmpint(e[0].kv.mod_rev, ==, 10);
    g_assert_cmpint(e[0].kv.lease, ==, 77);
    g_assert_false(e[0].have_prev);
    g_assert_cmpint(e[1].type, ==, ETCD_EVENT_DELETE);
    g_assert_cmpint(e[1].kv.mod_rev, ==, 12);
    g_assert_cmpuint(e[1].kv.value_len, ==, 0);
    g_assert_true(e[1].have_prev);
    g_assert_cmpstr((const char *)e[1].prev.value, ==, "{\"v\":1}");
    g_assert_cmpint(e[2].type, ==, ETCD_EVENT_PUT);
    char w[ETCD_WRITER_LEN + 1];
    int r = 0;
    uint64_t nonce = 0;
    g_assert_true(procreg_etcd_marker_parse(e[2].kv.value, e[2].kv.value_len,
                                            w, &r, &nonce));
    g_assert_cmpstr(w, ==, "ab");
    g_assert_cmpint(r, ==, 2);
    g_assert_cmpint(e[3].type, ==, ETCD_EVENT_BAD);
    g_assert_null(e[3].kv.key);
    g_assert_cmpint(e[4].type, ==, ETCD_EVENT_BAD);
    g_assert_cmpint(e[5].type, ==, ETCD_EVENT_NOT_OBJECT);
    procreg_etcd_watch_batch_clear(&b);
    g_assert_null(b.events);

    struct {
        const char *line;
        bool error, created, canceled;
        int64_t compact, header;
        const char *message;
    } cases[] = {
        {"{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}",
         false, true, false, 0, 5, NULL},
        {"{\"result\":{\"header\":{\"revision\":\"9\"},\"canceled\":true,"
         "\"compact_revision\":\"7\"}}",
         false, false, true, 7, 9, NULL},
        {"{\"result\":{\"canceled\":true,\"cancel_reason\":\"gone\"}}", false,
         false, true, 0, 0, "gone"},
        {"{\"error\":{\"grpc_code\":14,\"message\":\"no leader\"}}", true,
         false, false, 0, 0, "no leader"},
        {"{\"error\":\"x\"}", true, false, false, 0, 0, NULL},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_assert_true(procreg_etcd_watch_line_parse(
            cases[i].line, strlen(cases[i].line), &b, &why));
        g_assert_cmpint(b.error, ==, cases[i].error);
        g_assert_cmpint(b.created, ==, cases[i].created);
        g_assert_cmpint(b.canceled, ==, cases[i].canceled);
        g_assert_cmpint(b.compact_revision, ==, cases[i].compact);
        g_assert_cmpint(b.header_revision, ==, cases[i].header);
        g_assert_cmpstr(b.message, ==, cases[i].message);
        g_assert_cmpuint(b.events->len, ==, 0);
        procreg_etcd_watch_batch_clear(&b);
    }
    g_assert_false(procreg_etcd_watch_line_parse("not json", 8, &b, &why));
    g_assert_cmpstr(why, ==, "not a JSON object");
    procreg_etcd_watch_batch_clear(&b);
    g_free(line);
    g_free(k1);
    g_free(v1);
    g_free(kw);
    g_free(vw);
}

static void test_error_reply(void)
{
    int code;
    char *msg;
    const char *unary = "{\"error\":\"etcdserver: too many operations\","
                        "\"code\":3,\"message\":\"etcdserver: too many "
                        "operations\"}";
    procreg_etcd_error_reply_parse(unary, strlen(unary), &code, &msg);
    g_assert_cmpint(code, ==, 3);
    g_assert_cmpstr(msg, ==, "etcdserver: too many operations");
    g_free(msg);
    const char *stream = "{\"error\":{\"grpc_code\":14,\"http_code\":503,"
                         "\"message\":\"etcdserver: no leader\"}}";
    procreg_etcd_error_reply_parse(stream, strlen(stream), &code, &msg);
    g_assert_cmpint(code, ==, 14);
    g_assert_cmpstr(msg, ==, "etcdserver: no leader");
    g_free(msg);
    const char *plain = "upstream connect error";
    procreg_etcd_error_reply_parse(plain, strlen(plain), &code, &msg);
    g_assert_cmpint(code, ==, -1);
    g_assert_cmpstr(msg, ==, plain);
    g_free(msg);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/etcd/codec/two-values", test_two_values);
    g_test_add_func("/etcd/codec/leak-control", test_leak_control);
    g_test_add_func("/etcd/codec/accepted", test_accepted);
    g_test_add_func("/etcd/codec/refused", test_refused);
    g_test_add_func("/etcd/codec/depth", test_depth);
    g_test_add_func("/etcd/codec/marker", test_marker);
    g_test_add_func("/etcd/codec/watch-line", test_watch_line);
    g_test_add_func("/etcd/codec/error-reply", test_error_reply);
    return g_test_run();
}
