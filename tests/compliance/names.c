/*
 * Compliance cases for what a key and its metadata may be: prepared keys
 * (procreg_key) against strings, the names every entry point refuses or
 * takes, the default namespace, metadata of every GVariant type round
 * trip and a value that is not a{sv} refused, and namespaces kept apart.
 */
#include "compliance-private.h"

#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Cases: prepared keys                                                     */

void case_prepared_keys(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(procreg_key) k = NULL;
    CHECK_OK(procreg_key_new(NULL, "k", &k, &err), err);
    CHECK(strcmp(procreg_key_namespace(k), PROCREG_NS_PRODUCTION) == 0);
    CHECK(strcmp(procreg_key_name(k), "k") == 0);

    g_auto(procreg_entry) reg = {0};
    CHECK_OK(procreg_register_key(f->reg, k, NULL,
                                  g_variant_new_parsed("{'a': <1>}"), &reg,
                                  &err),
             err);
    procreg_owner o1 = {0}, o2 = {0};
    CHECK_OK(procreg_lookup(f->reg, "production", "k", &o1, &err), err);
    CHECK_OK(procreg_lookup_key(f->reg, k, &o2, &err), err);
    CHECK(cx_owner_eq(&o1, &o2));
    g_auto(procreg_entry) e1 = {0};
    g_auto(procreg_entry) e2 = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, NULL, "k", &e1, &err), err);
    CHECK_OK(procreg_lookup_entry_key(f->reg, k, &e2, &err), err);
    CHECK(e1.revision == reg.revision && e2.revision == reg.revision);
    CHECK(cx_variant_eq0(e1.metadata, e2.metadata));
    CHECK(e2.ns == NULL && e2.name == NULL);

    /* A string registration is found by an equal key made later. */
    CHECK_RC(cx_quick_register(f->reg, "kx", "n", "{'b': <2>}"), 0);
    g_autoptr(procreg_key) k2 = NULL;
    CHECK_OK(procreg_key_new("kx", "n", &k2, &err), err);
    g_auto(procreg_entry) e3 = {0};
    CHECK_OK(procreg_lookup_entry_key(f->reg, k2, &e3, &err), err);
    g_autoptr(GVariant) want = cx_md("{'b': <2>}");
    CHECK(cx_variant_eq0(e3.metadata, want));
    CHECK_RC(procreg_register_key(f->reg, k2, NULL, NULL, NULL, NULL),
             PROCREG_EEXISTS);

    /* Updates by key are seen by strings and back. */
    CHECK_OK(procreg_update_metadata_key(f->reg, k2,
                                         g_variant_new_parsed("{'c': <3>}"),
                                         PROCREG_UPDATE_REPLACE, 0, NULL,
                                         &err),
             err);
    g_auto(procreg_entry) e4 = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "kx", "n", &e4, &err), err);
    g_autoptr(GVariant) want4 = cx_md("{'c': <3>}");
    CHECK(cx_variant_eq0(e4.metadata, want4));
    CHECK_OK(procreg_unregister(f->reg, "kx", "n", &err), err);
    CHECK_RC(procreg_lookup_key(f->reg, k2, &o1, NULL), PROCREG_ENOTFOUND);
    CHECK_OK(procreg_unregister_key(f->reg, k, 0, &err), err);
    CHECK_RC(procreg_lookup(f->reg, NULL, "k", &o1, NULL), PROCREG_ENOTFOUND);

    /* A reference outlives the creator's. */
    procreg_key *k3 = procreg_key_ref(k);
    CHECK(k3 == k);
    procreg_key_unref(k3);
    CHECK(strcmp(procreg_key_name(k), "k") == 0);

    /* Invalid keys are refused at creation. */
    procreg_key *bad = NULL;
    CHECK_ERR(procreg_key_new("ns", "", &bad, &err), err, PROCREG_EINVAL);
    CHECK(bad == NULL);
}

/* ------------------------------------------------------------------------ */
/* Cases: names                                                             */

/* Every API entry point refuses (ns, name) with EINVAL. */
static void check_key_refused(Fixture *f, const char *ns, const char *name,
                              const char *what)
{
    g_autoptr(GError) err = NULL;
    procreg_owner o;
    size_t n;
    g_auto(procreg_entry) e = {0};
    g_auto(EntryList) l = {0};
    procreg_key *k = NULL;
    int rc;

#define REFUSED(call)                                                      \
    do {                                                                   \
        rc = (call);                                                       \
        CHECK_MSG(rc == PROCREG_EINVAL,                                    \
                  "%s: %s gave %d (%s), expected EINVAL", what, #call, rc, \
                  procreg_strerror(rc));                                   \
        CHECK_MSG(err != NULL && err->code == PROCREG_EINVAL &&            \
                      err->message[0] != '\0',                             \
                  "%s: %s set no EINVAL GError", what, #call);             \
        g_clear_error(&err);                                               \
    } while (0)

    REFUSED(procreg_register(f->reg, ns, name, NULL, NULL, NULL, &err));
    REFUSED(procreg_lookup(f->reg, ns, name, &o, &err));
    REFUSED(procreg_lookup_entry(f->reg, ns, name, &e, &err));
    REFUSED(procreg_unregister(f->reg, ns, name, &err));
    REFUSED(procreg_update_metadata(f->reg, ns, name, NULL,
                                    PROCREG_UPDATE_REPLACE, &err));
    REFUSED(procreg_key_new(ns, name, &k, &err));
    CHECK(k == NULL);
    CHECK_RC(procreg_lookup(f->reg, ns, name, &o, NULL), PROCREG_EINVAL);
    if (ns != NULL && procreg_validate_name(ns, "namespace", NULL) != 0) {
        REFUSED(procreg_list(f->reg, ns, &l.v, &l.n, &err));
        REFUSED(procreg_count(f->reg, ns, &n, &err));
        g_autoptr(GVariant) v = cx_parsed("'x'");
        REFUSED(procreg_find(f->reg, ns, "k", v, &l.v, &l.n, &err));
    }
#undef REFUSED
}

static void check_key_works(Fixture *f, const char *ns, const char *name,
                            const char *what)
{
    g_autoptr(GError) err = NULL;
    procreg_owner o;
    int rc = procreg_register(f->reg, ns, name, NULL, NULL, NULL, &err);
    CHECK_MSG(rc == 0, "%s: register gave %d (%s): %s", what, rc,
              procreg_strerror(rc), err ? err->message : "");
    rc = procreg_lookup(f->reg, ns, name, &o, &err);
    CHECK_MSG(rc == 0, "%s: lookup gave %d (%s)", what, rc,
              procreg_strerror(rc));
    g_auto(EntryList) l = {0};
    CHECK_OK(procreg_list(f->reg, ns, &l.v, &l.n, &err), err);
    bool seen = false;
    for (size_t i = 0; i < l.n; i++)
        seen |= strcmp(l.v[i].name, name) == 0 &&
                strcmp(l.v[i].ns, ns ? ns : PROCREG_NS_PRODUCTION) == 0;
    CHECK_MSG(seen, "%s: list does not return the name intact", what);
}

void case_names(Fixture *f)
{
    char n255[256], n256[257], ns255[256];
    memset(n255, 'n', 255);
    n255[255] = '\0';
    memset(n256, 'n', 256);
    n256[256] = '\0';
    memset(ns255, 's', 255);
    ns255[255] = '\0';

    /* 85 three-byte characters = 255 bytes; 86 = 258. */
    GString *kana = g_string_new(NULL);
    for (int i = 0; i < 85; i++)
        g_string_append(kana, "\xe3\x81\x82"); /* U+3042 */
    g_autofree char *kana255 = g_strdup(kana->str);
    g_string_append(kana, "\xe3\x81\x82");
    g_autofree char *kana258 = g_string_free(kana, FALSE);
    /* 63 four-byte characters + "abc" = 255 bytes. */
    GString *emoji = g_string_new(NULL);
    for (int i = 0; i < 63; i++)
        g_string_append(emoji, "\xf0\x9f\x9a\x80"); /* U+1F680 */
    g_string_append(emoji, "abc");
    g_autofree char *emoji255 = g_string_free(emoji, FALSE);

    check_key_works(f, "ns", n255, "a 255-byte name");
    CHECK_HELPER();
    check_key_works(f, ns255, "x", "a 255-byte namespace");
    CHECK_HELPER();
    check_key_works(f, ns255, n255, "255-byte namespace and name");
    CHECK_HELPER();
    check_key_works(f, "ns", kana255, "255 bytes of 3-byte UTF-8");
    CHECK_HELPER();
    check_key_works(f, "ns", emoji255, "255 bytes with 4-byte UTF-8");
    CHECK_HELPER();
    check_key_works(f, "\xe6\x9c\x8d\xe5\x8a\xa1", /* 服务 */
                    "\xe3\x82\xb5\xe3\x83\xbc\xe3\x83\x93\xe3\x82\xb9-\xc3\xb1",
                    "multi-byte namespace and name");
    CHECK_HELPER();
    check_key_works(f, "ns", "with space/slash:colon=eq,comma[x]\\b",
                    "punctuation");
    CHECK_HELPER();
    check_key_works(f, NULL, "default-ns", "NULL namespace");
    CHECK_HELPER();

    check_key_refused(f, "ns", n256, "a 256-byte name");
    CHECK_HELPER();
    check_key_refused(f, n256, "x", "a 256-byte namespace");
    CHECK_HELPER();
    check_key_refused(f, "ns", kana258, "258 bytes of UTF-8");
    CHECK_HELPER();
    check_key_refused(f, "ns", "", "an empty name");
    CHECK_HELPER();
    check_key_refused(f, "", "x", "an empty namespace");
    CHECK_HELPER();
    check_key_refused(f, "ns", NULL, "a NULL name");
    CHECK_HELPER();
    const char *bad[] = {
        "\xff",             "abc\xc3",      "\xc0\xaf",  "\xed\xa0\x80",
        "\xf4\x90\x80\x80", "a\nb",         "\t",        "a\x01",
        "x\x1f",            "del\x7f",      "c1\xc2\x85", "esc\x1b[0m",
    };
    const char *bad_what[] = {
        "invalid UTF-8 0xff", "truncated UTF-8", "overlong UTF-8",
        "a UTF-16 surrogate", "beyond U+10FFFF", "a newline",
        "a tab", "\\x01", "\\x1f", "DEL", "C1 control U+0085",
        "an escape sequence",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *w1 = g_strdup_printf("name with %s", bad_what[i]);
        check_key_refused(f, "ns", bad[i], w1);
        CHECK_HELPER();
        g_autofree char *w2 = g_strdup_printf("namespace with %s",
                                              bad_what[i]);
        check_key_refused(f, bad[i], "x", w2);
        CHECK_HELPER();
    }

    /* Only the valid registrations were stored. */
    g_autoptr(GError) err = NULL;
    size_t n = 0;
    CHECK_OK(procreg_count(f->reg, NULL, &n, &err), err);
    CHECK_MSG(n == 8, "count %zu after 8 valid registrations", n);
}

void case_default_namespace(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    procreg_owner o;
    CHECK_OK(procreg_register(f->reg, NULL, "svc", NULL, NULL, NULL, &err),
             err);
    CHECK_OK(procreg_lookup(f->reg, PROCREG_NS_PRODUCTION, "svc", &o, &err),
             err);
    CHECK_ERR(procreg_register(f->reg, PROCREG_NS_PRODUCTION, "svc", NULL,
                               NULL, NULL, &err),
              err, PROCREG_EEXISTS);
    g_auto(EntryList) l = {0};
    CHECK_OK(procreg_list(f->reg, PROCREG_NS_PRODUCTION, &l.v, &l.n, &err),
             err);
    CHECK_NAMES(l, "production/svc");
    size_t n = 0;
    CHECK_OK(procreg_count(f->reg, PROCREG_NS_PRODUCTION, &n, &err), err);
    CHECK(n == 1);
    CHECK_OK(procreg_unregister(f->reg, PROCREG_NS_PRODUCTION, "svc", &err),
             err);
    CHECK_RC(procreg_lookup(f->reg, NULL, "svc", &o, NULL), PROCREG_ENOTFOUND);
}

/* ------------------------------------------------------------------------ */
/* Cases: metadata                                                          */

/* Values of every basic type and nested containers, as GVariant text. */
static const char *const metadata_samples[] = {
    "true",
    "false",
    "byte 0xff",
    "int16 -32768",
    "uint16 65535",
    "int32 -2147483648",
    "uint32 4294967295",
    "int64 -9223372036854775808",
    "uint64 18446744073709551615",
    "handle 3",
    "3.25",
    "-1.5e300",
    "0.0",
    "'text \xc3\xa9 \xf0\x9f\x9a\x80'",
    "''",
    "objectpath '/org/example/Obj'",
    "signature 'a{sv}'",
    "<int32 7>",
    "<<'twice wrapped'>>",
    "@as []",
    "['a', 'b', '']",
    "b'bytes'",
    "[byte 0x00, 0x01, 0xff]",
    "{'k': 'v', 'l': 'w'}",
    "@a{sv} {}",
    "@a{sv} {'nested': <{'deep': <[int32 1, 2]>}>}",
    "(int32 1, 'two', true)",
    "()",
    "[(1, 'x'), (2, 'y')]",
    "@ms 'just'",
    "@ms nothing",
    "@mi 5",
    "[[1, 2], [3]]",
    "{1: 'one', 2: 'two'}",
    "[<'a'>, <int64 2>, <('t', false)>]",
    "{'a': [{'b': <(uint16 1, [1.5])>}]}",
};

static void check_roundtrip(Fixture *f, const char *name, GVariant *m)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *want = cx_describe(m);
    g_auto(procreg_entry) cur = {0};
    int rc = procreg_register(f->reg, "md", name, NULL, m, &cur, &err);
    CHECK_MSG(rc == 0, "register with %s: %d (%s): %s", want, rc,
              procreg_strerror(rc), err ? err->message : "");
    g_autofree char *got_cur = cx_describe(cur.metadata);
    CHECK_MSG(cx_variant_eq0(cur.metadata, m), "register current: stored %s, "
              "got %s", want, got_cur);
    g_auto(procreg_entry) e = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "md", name, &e, &err), err);
    g_autofree char *got = cx_describe(e.metadata);
    CHECK_MSG(cx_variant_eq0(e.metadata, m), "lookup_entry: stored %s, got %s",
              want, got);
    CHECK(e.metadata == NULL || !g_variant_is_floating(e.metadata));
}

void case_metadata_types(Fixture *f)
{
    GVariantBuilder all;
    g_variant_builder_init(&all, G_VARIANT_TYPE_VARDICT);
    for (size_t i = 0; i < G_N_ELEMENTS(metadata_samples); i++) {
        GVariant *v = cx_parsed(metadata_samples[i]);
        GVariantBuilder one;
        g_variant_builder_init(&one, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&one, "{sv}", "v", v);
        g_autoptr(GVariant) m = g_variant_ref_sink(g_variant_builder_end(&one));
        g_autofree char *name = g_strdup_printf("t%02zu", i);
        check_roundtrip(f, name, m);
        CHECK_HELPER();
        g_autofree char *key = g_strdup_printf("k%02zu", i);
        g_variant_builder_add(&all, "{sv}", key, v);
        g_variant_unref(v);
    }
    /* A 64 KiB string. */
    char *big = g_malloc(65537);
    for (size_t i = 0; i < 65536; i++)
        big[i] = (char)('a' + i % 26);
    big[65536] = '\0';
    g_variant_builder_add(&all, "{sv}", "big", g_variant_new_take_string(big));
    g_variant_builder_add(&all, "{sv}", "text",
                          g_variant_new_string("findable \xc3\xa9"));
    g_autoptr(GVariant) everything = g_variant_ref_sink(
        g_variant_builder_end(&all));
    check_roundtrip(f, "everything", everything);
    CHECK_HELPER();

    /* The same values come back from list and find. */
    g_autoptr(GError) err = NULL;
    g_auto(EntryList) l = {0};
    CHECK_OK(procreg_list(f->reg, "md", &l.v, &l.n, &err), err);
    CHECK(l.n == G_N_ELEMENTS(metadata_samples) + 1);
    CHECK(strcmp(l.v[0].name, "everything") == 0);
    CHECK_MSG(cx_variant_eq0(l.v[0].metadata, everything),
              "list returned different metadata");
    g_autoptr(GVariant) want_key = cx_parsed("'findable \xc3\xa9'");
    g_auto(EntryList) found = {0};
    CHECK_OK(procreg_find(f->reg, "md", "text", want_key, &found.v, &found.n,
                          &err),
             err);
    CHECK_NAMES(found, "md/everything");
    CHECK(cx_variant_eq0(found.v[0].metadata, everything));

    /* A caller's non-floating reference stays the caller's. */
    GVariant *mine = cx_md("{'mine': <'x'>}");
    CHECK_OK(procreg_register(f->reg, "md", "mine", NULL, mine, NULL, &err),
             err);
    g_variant_unref(mine);
    g_autoptr(GVariant) copy = cx_md("{'mine': <'x'>}");
    g_auto(procreg_entry) e = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "md", "mine", &e, &err), err);
    CHECK(cx_variant_eq0(e.metadata, copy));
}

void case_metadata_wrong_type(Fixture *f)
{
    const char *wrong[] = {
        "'a string'",  "{'k': 'v'}",    "@a{si} {'k': 1}", "<@a{sv} {}>",
        "(@a{sv} {},)", "[@a{sv} {}]", "int32 7",         "@aa{sv} []",
    };
    g_autoptr(GError) err = NULL;
    g_auto(procreg_entry) first = {0};
    g_autoptr(GVariant) good = cx_md("{'good': <true>}");
    CHECK_OK(procreg_register(f->reg, "svc", "exists", NULL, good, &first,
                              &err),
             err);
    for (size_t i = 0; i < G_N_ELEMENTS(wrong); i++) {
        g_autoptr(GVariant) v = cx_parsed(wrong[i]);
        int rc = procreg_register(f->reg, "svc", "bad", NULL, v, NULL, &err);
        CHECK_MSG(rc == PROCREG_EINVAL && err && err->code == PROCREG_EINVAL,
                  "register with %s metadata gave %d (%s)",
                  g_variant_get_type_string(v), rc, procreg_strerror(rc));
        g_clear_error(&err);
        for (int mode = 0; mode < 2; mode++) {
            rc = procreg_update_metadata(f->reg, "svc", "exists", v,
                                         (procreg_update_mode)mode, &err);
            CHECK_MSG(rc == PROCREG_EINVAL,
                      "update (%s) with %s metadata gave %d (%s)",
                      mode ? "merge" : "replace",
                      g_variant_get_type_string(v), rc, procreg_strerror(rc));
            g_clear_error(&err);
        }
    }
    /* A floating wrong value is refused (and not leaked). */
    CHECK_RC(procreg_register(f->reg, "svc", "bad", NULL,
                              g_variant_new_string("floating"), NULL, NULL),
             PROCREG_EINVAL);

    procreg_owner o;
    CHECK_RC(procreg_lookup(f->reg, "svc", "bad", &o, NULL),
             PROCREG_ENOTFOUND);
    g_auto(procreg_entry) e = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "svc", "exists", &e, &err), err);
    CHECK_MSG(e.revision == first.revision,
              "a refused update changed the revision");
    CHECK(cx_variant_eq0(e.metadata, good));
    size_t n = 0;
    CHECK_OK(procreg_count(f->reg, NULL, &n, &err), err);
    CHECK(n == 1);
}


/* ------------------------------------------------------------------------ */
/* Cases: namespace isolation                                               */

void case_namespace_isolation(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    procreg_owner other = {0}, self, o;
    procreg_owner_self(&self);
    CHECK_OK(procreg_owner_from_pid(getppid(), &other, &err), err);

    CHECK_OK(procreg_register(f->reg, "ns1", "svc", NULL,
                              g_variant_new_parsed("{'where': <'ns1'>}"),
                              NULL, &err),
             err);
    CHECK_OK(procreg_register(f->reg, "ns2", "svc", &other,
                              g_variant_new_parsed("{'where': <'ns2'>}"),
                              NULL, &err),
             err);
    /* Keys that concatenate alike stay apart. */
    CHECK_RC(cx_quick_register(f->reg, "ab", "c", "{'k': <'ab/c'>}"), 0);
    CHECK_RC(cx_quick_register(f->reg, "a", "bc", "{'k': <'a/bc'>}"), 0);
    CHECK_RC(cx_quick_register(f->reg, "a", "b", NULL), 0);
    CHECK_RC(cx_quick_register(f->reg, "a b", "c", NULL), 0);

    CHECK_OK(procreg_lookup(f->reg, "ns1", "svc", &o, &err), err);
    CHECK(cx_owner_eq(&o, &self));
    CHECK_OK(procreg_lookup(f->reg, "ns2", "svc", &o, &err), err);
    CHECK(cx_owner_eq(&o, &other));
    g_auto(procreg_entry) eab = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "ab", "c", &eab, &err), err);
    g_autoptr(GVariant) want_ab = cx_md("{'k': <'ab/c'>}");
    CHECK(cx_variant_eq0(eab.metadata, want_ab));

    /* Changes in ns1 leave ns2 alone. */
    g_auto(procreg_entry) before = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "ns2", "svc", &before, &err), err);
    CHECK_OK(procreg_update_metadata(f->reg, "ns1", "svc",
                                     g_variant_new_parsed("{'x': <1>}"),
                                     PROCREG_UPDATE_REPLACE, &err),
             err);
    CHECK_OK(procreg_unregister(f->reg, "ns1", "svc", &err), err);
    g_auto(procreg_entry) after = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "ns2", "svc", &after, &err), err);
    CHECK(after.revision == before.revision);
    CHECK(cx_variant_eq0(after.metadata, before.metadata));
    CHECK_RC(procreg_lookup(f->reg, "ns1", "svc", &o, NULL),
             PROCREG_ENOTFOUND);

    g_auto(EntryList) la = {0};
    CHECK_OK(procreg_list(f->reg, "a", &la.v, &la.n, &err), err);
    CHECK_NAMES(la, "a/b a/bc");
    size_t n = 0;
    CHECK_OK(procreg_count(f->reg, "ab", &n, &err), err);
    CHECK(n == 1);
    CHECK_OK(procreg_count(f->reg, "ns1", &n, &err), err);
    CHECK(n == 0);
    g_autoptr(GVariant) v = cx_parsed("'a/bc'");
    g_auto(EntryList) fa = {0};
    CHECK_OK(procreg_find(f->reg, "ab", "k", v, &fa.v, &fa.n, &err), err);
    CHECK_NAMES(fa, "");
    g_auto(EntryList) fb = {0};
    CHECK_OK(procreg_find(f->reg, NULL, "k", v, &fb.v, &fb.n, &err), err);
    CHECK_NAMES(fb, "a/bc");
    CHECK_ERR(procreg_register(f->reg, "ab", "c", NULL, NULL, NULL, &err),
              err, PROCREG_EEXISTS);
    CHECK_OK(procreg_register(f->reg, "ns1", "svc", NULL, NULL, NULL, &err),
             err);
}
