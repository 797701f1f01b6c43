/*
 * Specs and backend types: parsing (nesting, brackets, escapes, sizes,
 * booleans), error messages that list what is available, the backend
 * table checks of procreg_backend_register(), and module loading errors.
 * The fake decorator (fake_deco) takes a spec as an option and opens it,
 * so nested specs are checked end to end.
 */
#include "fake-backend.h"

#include <string.h>

static procreg *open_ok(const char *spec)
{
    procreg *reg = NULL;
    GError *err = NULL;
    int rc = procreg_open(spec, &reg, &err);
    if (rc != 0)
        g_error("procreg_open(\"%s\"): %d (%s): %s", spec, rc,
                procreg_strerror(rc), err ? err->message : "(no GError)");
    g_assert_no_error(err);
    return reg;
}

/* Open @spec expecting @code; returns the message (g_free it). */
static char *open_fails(const char *spec, int code)
{
    procreg *reg = NULL;
    GError *err = NULL;
    int rc = procreg_open(spec, &reg, &err);
    if (rc != code)
        g_error("procreg_open(\"%s\"): expected %d (%s), got %d (%s)", spec,
                code, procreg_strerror(code), rc, procreg_strerror(rc));
    g_assert_null(reg);
    g_assert_error(err, PROCREG_ERROR, code);
    g_assert_cmpstr(err->message, !=, "");
    char *msg = g_strdup(err->message);
    g_error_free(err);
    return msg;
}

static void assert_contains(const char *msg, const char *needle)
{
    if (strstr(msg, needle) == NULL)
        g_error("message \"%s\" does not mention \"%s\"", msg, needle);
}

static void test_nesting(void)
{
    procreg *reg = open_ok("fake_deco:inner=[fake:a=1,b=2],ttl_ms=5");
    FakeDeco *d = fake_deco_last();
    FakeBackend *fb = fake_backend_last();
    g_assert_nonnull(d);
    g_assert_cmpuint(d->ttl_ms, ==, 5);
    g_assert_cmpstr(fb->opt_a, ==, "1");
    g_assert_cmpstr(fb->opt_b, ==, "2");
    /* The inner spec reaches the decorator whole and parses again. */
    g_assert_nonnull(d->inner_spec);
    g_assert_true(g_str_has_prefix(d->inner_spec, "fake:"));

    /* The registry works through the decorator. */
    procreg_owner o;
    g_assert_cmpint(procreg_register(reg, "n", "x", NULL, NULL, NULL, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_lookup(reg, "n", "x", &o, NULL), ==, 0);
    g_assert_cmpint(fb->calls[FAKE_OP_LOOKUP], ==, 1);

    /* The normalised spec opens the same thing again. */
    char *norm = g_strdup(procreg_get_spec(reg));
    procreg_close(reg);
    reg = open_ok(norm);
    d = fake_deco_last();
    fb = fake_backend_last();
    g_assert_cmpuint(d->ttl_ms, ==, 5);
    g_assert_cmpstr(fb->opt_a, ==, "1");
    g_assert_cmpstr(fb->opt_b, ==, "2");
    g_assert_cmpstr(procreg_get_spec(reg), ==, norm);
    procreg_close(reg);
    g_free(norm);
}

static void test_deep_nesting(void)
{
    procreg *reg = open_ok("fake_deco:inner=[fake_deco:inner=[fake:a=x\\,y,"
                           "b=[p,q]],ttl_ms=1],ttl_ms=2");
    FakeDeco *outer = fake_deco_last(); /* set when its init returns */
    FakeBackend *fb = fake_backend_last();
    g_assert_cmpuint(outer->ttl_ms, ==, 2);
    g_assert_cmpstr(fb->opt_a, ==, "x,y");
    g_assert_cmpstr(fb->opt_b, ==, "p,q");
    char *norm = g_strdup(procreg_get_spec(reg));
    procreg_close(reg);
    reg = open_ok(norm);
    fb = fake_backend_last();
    g_assert_cmpstr(fb->opt_a, ==, "x,y");
    g_assert_cmpstr(fb->opt_b, ==, "p,q");
    procreg_close(reg);
    g_free(norm);
}

static void test_escapes_and_brackets(void)
{
    static const struct {
        const char *spec, *a, *b;
    } cases[] = {
        {"fake", NULL, NULL},
        {"fake:a=plain", "plain", NULL},
        {"fake:a=x\\,y,b=2", "x,y", "2"},
        {"fake:a=[p,q],b=[]", "p,q", ""},
        {"fake:a=[with [nested] brackets]", "with [nested] brackets", NULL},
        {"fake:a=back\\\\slash", "back\\slash", NULL},
        {"fake:b=\\[not a bracket", NULL, "[not a bracket"},
        {"fake:a=x=y", "x=y", NULL},
        {"fake:a=\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9", NULL},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        procreg *reg = open_ok(cases[i].spec);
        FakeBackend *fb = fake_backend_last();
        if (g_strcmp0(fb->opt_a, cases[i].a) != 0 ||
            g_strcmp0(fb->opt_b, cases[i].b) != 0)
            g_error("\"%s\": a=%s b=%s, expected a=%s b=%s", cases[i].spec,
                    fb->opt_a, fb->opt_b, cases[i].a, cases[i].b);
        /* The normalised form means the same. */
        procreg *again = open_ok(procreg_get_spec(reg));
        fb = fake_backend_last();
        g_assert_cmpstr(fb->opt_a, ==, cases[i].a);
        g_assert_cmpstr(fb->opt_b, ==, cases[i].b);
        procreg_close(again);
        procreg_close(reg);
    }
}

static void test_malformed(void)
{
    const char *bad[] = {
        "fake:a=[unclosed",
        "fake:a=[x]junk",
        "fake:=1",
        "fake:a=x]",
        "fake_deco:inner=[fake:a=[1]",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
        g_free(open_fails(bad[i], PROCREG_EINVAL));
    /* Options without a name: malformed or unknown, refused with a
     * message. */
    procreg *reg = NULL;
    GError *err = NULL;
    int rc = procreg_open(":a=1", &reg, &err);
    g_assert_true(rc == PROCREG_EINVAL || rc == PROCREG_EUNKNOWN_BACKEND);
    g_assert_error(err, PROCREG_ERROR, rc);
    g_assert_null(reg);
    g_error_free(err);
    /* An empty spec means the default, as NULL does. */
    reg = open_ok("");
    char **names = procreg_backend_names();
    g_assert_true(g_str_has_prefix(procreg_get_spec(reg), names[0]));
    g_strfreev(names);
    procreg_close(reg);
}

static void test_unknown_backend(void)
{
    char *msg = open_fails("nosuch:a=1", PROCREG_EUNKNOWN_BACKEND);
    assert_contains(msg, "nosuch");
    char **names = procreg_backend_names();
    for (char **n = names; *n; n++)
        assert_contains(msg, *n);
    g_strfreev(names);
    g_free(msg);
    /* Also when nested. */
    msg = open_fails("fake_deco:inner=[nosuch]", PROCREG_EUNKNOWN_BACKEND);
    assert_contains(msg, "nosuch");
    assert_contains(msg, "ghash");
    g_free(msg);
}

static void test_unknown_option(void)
{
    char *msg = open_fails("fake:zzz=1", PROCREG_EINVAL);
    assert_contains(msg, "zzz");
    for (const procreg_backend_option *o = fake_ops.options; o->name; o++)
        assert_contains(msg, o->name);
    g_free(msg);
    msg = open_fails("fake_deco:inner=[fake:a=1,zzz=2]", PROCREG_EINVAL);
    assert_contains(msg, "zzz");
    assert_contains(msg, "fail_init");
    g_free(msg);
    /* A backend without options refuses any. */
    msg = open_fails("ghash:zzz=1", PROCREG_EINVAL);
    assert_contains(msg, "zzz");
    g_free(msg);
}

static void test_sizes(void)
{
    static const struct {
        const char *text;
        uint64_t value;
    } good[] = {
        {"0", 0},
        {"12345", 12345},
        {"1K", 1024},
        {"1KiB", 1024},
        {"64M", 64ull << 20},
        {"64MiB", 64ull << 20},
        {"3G", 3ull << 30},
        {"2GiB", 2ull << 30},
        {"18446744073709551615", UINT64_MAX},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
        char *spec = g_strdup_printf("fake:size=%s", good[i].text);
        procreg *reg = open_ok(spec);
        FakeBackend *fb = fake_backend_last();
        if (fb->opt_size != good[i].value)
            g_error("size=%s gave %" G_GUINT64_FORMAT ", expected %"
                    G_GUINT64_FORMAT, good[i].text, fb->opt_size,
                    good[i].value);
        procreg_close(reg);
        g_free(spec);
    }
    /* Absent: the default. */
    procreg *reg = open_ok("fake");
    g_assert_cmpuint(fake_backend_last()->opt_size, ==, 0);
    procreg_close(reg);

    const char *bad[] = {"12XB", "-1", "MiB", "1.5M", "0x10",
                         "18446744073709551616", "17179869184GiB", "1 K",
                         ""};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        char *spec = g_strdup_printf("fake:size=%s", bad[i]);
        char *msg = open_fails(spec, PROCREG_EINVAL);
        assert_contains(msg, "size");
        if (bad[i][0] != '\0')
            assert_contains(msg, bad[i]);
        g_free(msg);
        g_free(spec);
    }
}

static void test_bools(void)
{
    static const struct {
        const char *text;
        bool value;
    } good[] = {
        {"true", true}, {"false", false}, {"yes", true}, {"no", false},
        {"on", true},   {"off", false},   {"1", true},   {"0", false},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
        char *spec = g_strdup_printf("fake:flag=%s", good[i].text);
        procreg *reg = open_ok(spec);
        g_assert_cmpint(fake_backend_last()->opt_flag, ==, good[i].value);
        procreg_close(reg);
        g_free(spec);
    }
    const char *bad[] = {"maybe", "2", "truee", "-1"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        char *spec = g_strdup_printf("fake:flag=%s", bad[i]);
        char *msg = open_fails(spec, PROCREG_EINVAL);
        assert_contains(msg, "flag");
        assert_contains(msg, bad[i]);
        g_free(msg);
        g_free(spec);
    }
}

static void test_names(void)
{
    char **names = procreg_backend_names();
    g_assert_nonnull(names);
    g_assert_cmpstr(names[0], ==, "ghash");
    gint ghash_at = -1, fake_at = -1;
    for (gint i = 0; names[i]; i++) {
        if (strcmp(names[i], "ghash") == 0)
            ghash_at = i;
        if (strcmp(names[i], "fake") == 0)
            fake_at = i;
    }
    g_assert_cmpint(ghash_at, ==, 0);
    g_assert_cmpint(fake_at, >, ghash_at); /* built-in first */
    g_strfreev(names);
}

/* procreg_open(NULL) with PROCREG_BACKEND set to @data (NULL: unset).  The
 * environment is changed in a fresh subprocess before any thread exists
 * (setenv is not thread-safe, and every registry runs threads). */
static void test_env(gconstpointer data)
{
    const char *value = data;
    if (!g_test_subprocess()) {
        g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_INHERIT_STDERR);
        g_test_trap_assert_passed();
        return;
    }
    if (value != NULL)
        g_setenv("PROCREG_BACKEND", value, TRUE);
    else
        g_unsetenv("PROCREG_BACKEND");
    if (value == NULL || value[0] == '\0') {
        char **names = procreg_backend_names();
        procreg *reg = open_ok(NULL);
        g_assert_true(g_str_has_prefix(procreg_get_spec(reg), names[0]));
        procreg_close(reg);
        g_strfreev(names);
    } else if (strcmp(value, "nosuch") == 0) {
        char *msg = open_fails(NULL, PROCREG_EUNKNOWN_BACKEND);
        assert_contains(msg, "nosuch");
        g_free(msg);
    } else {
        procreg *reg = open_ok(NULL);
        g_assert_cmpstr(fake_backend_last()->opt_a, ==, "from-env");
        procreg_close(reg);
        /* An explicit spec wins over the environment. */
        reg = open_ok("fake:a=explicit");
        g_assert_cmpstr(fake_backend_last()->opt_a, ==, "explicit");
        procreg_close(reg);
    }
}

/* ------------------------------------------------------------------------ */
/* procreg_backend_register checks                                          */

static void register_fails(const procreg_backend_ops *ops, int code,
                           const char *mention)
{
    GError *err = NULL;
    int rc = procreg_backend_register(ops, &err);
    if (rc != code)
        g_error("registering a table (%s): expected %d, got %d (%s)",
                mention, code, rc, procreg_strerror(rc));
    g_assert_error(err, PROCREG_ERROR, code);
    if (mention != NULL)
        assert_contains(err->message, mention);
    g_clear_error(&err);
    /* procreg_open_with_backend refuses the same tables. */
    if (code == PROCREG_EINVAL) {
        procreg *reg = NULL;
        rc = procreg_open_with_backend(ops, NULL, &reg, &err);
        g_assert_cmpint(rc, ==, PROCREG_EINVAL);
        g_assert_error(err, PROCREG_ERROR, PROCREG_EINVAL);
        g_assert_null(reg);
        if (mention != NULL)
            assert_contains(err->message, mention);
        g_clear_error(&err);
    }
}

/* Refused tables must not be kept, but give them static storage anyway. */
static procreg_backend_ops broken_tables[16];

static void test_backend_register_checks(void)
{
    size_t t = 0;
    procreg_backend_ops *ops;

#define FRESH(nm)                                                          \
    do {                                                                   \
        ops = &broken_tables[t++];                                         \
        *ops = fake_ops;                                                   \
        ops->name = (nm);                                                  \
    } while (0)

    FRESH("v0");
    ops->version = 0;
    register_fails(ops, PROCREG_EINVAL, "version");
    FRESH("vnext");
    ops->version = PROCREG_BACKEND_VERSION + 1;
    register_fails(ops, PROCREG_EINVAL, "version");

    static const struct {
        const char *slot;
        size_t offset;
    } required[] = {
        {"init", offsetof(procreg_backend_ops, init)},
        {"destroy", offsetof(procreg_backend_ops, destroy)},
        {"register_entry", offsetof(procreg_backend_ops, register_entry)},
        {"lookup", offsetof(procreg_backend_ops, lookup)},
        {"lookup_entry", offsetof(procreg_backend_ops, lookup_entry)},
        {"unregister", offsetof(procreg_backend_ops, unregister)},
        {"list_all", offsetof(procreg_backend_ops, list_all)},
        {"update_metadata", offsetof(procreg_backend_ops, update_metadata)},
        {"health_check", offsetof(procreg_backend_ops, health_check)},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(required); i++) {
        FRESH("missing_slot");
        memset((char *)ops + required[i].offset, 0, sizeof(void (*)(void)));
        register_fails(ops, PROCREG_EINVAL, required[i].slot);
    }
    FRESH(NULL);
    register_fails(ops, PROCREG_EINVAL, "name");
    FRESH("");
    register_fails(ops, PROCREG_EINVAL, "name");
    FRESH("bad:name"); /* ':' separates the name from the options */
    register_fails(ops, PROCREG_EINVAL, "bad:name");
    FRESH("bad name");
    register_fails(ops, PROCREG_EINVAL, "bad name");
    g_assert_cmpuint(t, <=, G_N_ELEMENTS(broken_tables));
#undef FRESH

    /* Names are unique, built-in ones included. */
    register_fails(&fake_ops, PROCREG_EEXISTS, "fake");
    static procreg_backend_ops ghash_again;
    ghash_again = fake_ops;
    ghash_again.name = "ghash";
    register_fails(&ghash_again, PROCREG_EEXISTS, "ghash");

    GError *err = NULL;
    g_assert_cmpint(procreg_backend_register(NULL, &err), ==, PROCREG_EINVAL);
    g_assert_error(err, PROCREG_ERROR, PROCREG_EINVAL);
    g_clear_error(&err);

    /* None of the refused tables is listed. */
    char **names = procreg_backend_names();
    for (char **n = names; *n; n++) {
        g_assert_cmpstr(*n, !=, "v0");
        g_assert_cmpstr(*n, !=, "missing_slot");
    }
    g_strfreev(names);
}

static void test_load_module_errors(void)
{
    GError *err = NULL;
    char *name = NULL;
    int rc = procreg_backend_load_module("/nonexistent/procreg-x.so", &name,
                                         &err);
    g_assert_cmpint(rc, ==, PROCREG_EINVAL);
    g_assert_error(err, PROCREG_ERROR, PROCREG_EINVAL);
    assert_contains(err->message, "/nonexistent/procreg-x.so");
    g_assert_null(name);
    g_clear_error(&err);

    /* A real shared library without the entry point. */
    const char *lib = g_getenv("PROCREG_TEST_LIBPROCREG");
    if (lib == NULL) {
        g_test_skip("PROCREG_TEST_LIBPROCREG not set");
        return;
    }
    rc = procreg_backend_load_module(lib, &name, &err);
    g_assert_cmpint(rc, ==, PROCREG_EINVAL);
    g_assert_error(err, PROCREG_ERROR, PROCREG_EINVAL);
    assert_contains(err->message, "procreg_backend_module");
    g_assert_null(name);
    g_clear_error(&err);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    fake_backend_register_all();
    g_test_add_func("/core/spec/nesting", test_nesting);
    g_test_add_func("/core/spec/deep-nesting", test_deep_nesting);
    g_test_add_func("/core/spec/escapes-and-brackets",
                    test_escapes_and_brackets);
    g_test_add_func("/core/spec/malformed", test_malformed);
    g_test_add_func("/core/spec/unknown-backend", test_unknown_backend);
    g_test_add_func("/core/spec/unknown-option", test_unknown_option);
    g_test_add_func("/core/spec/sizes", test_sizes);
    g_test_add_func("/core/spec/bools", test_bools);
    g_test_add_func("/core/spec/names", test_names);
    g_test_add_data_func("/core/spec/env/unset", NULL, test_env);
    g_test_add_data_func("/core/spec/env/empty", "", test_env);
    g_test_add_data_func("/core/spec/env/set", "fake:a=from-env", test_env);
    g_test_add_data_func("/core/spec/env/unknown", "nosuch", test_env);
    g_test_add_func("/core/backends/register-checks",
                    test_backend_register_checks);
    g_test_add_func("/core/backends/load-module-errors",
                    test_load_module_errors);
    return g_test_run();
}
