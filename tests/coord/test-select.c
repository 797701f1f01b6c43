/*
 * Filters and select (suite 'coord'):
 *  - the text form: what parses, what it means, what errors say (position
 *    and expected tokens, as text and as data), and that printing and
 *    parsing again gives the same filter;
 *  - the comparison rules of procreg.h, term by term;
 *  - a property test: random entries in ghash and in optimized:inner=ghash
 *    (whose index answers equality terms), random filters; select on both
 *    equals an independent evaluation of the documented rules over the
 *    listing, and so does select with the filter printed and parsed back;
 *  - procreg_unregister_match(): only the caller's own entries, each only
 *    at the revision it matched at (a change between the match and the
 *    removal forced with the gated fake backend).
 */
#include "coord-test.h"

#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static procreg_filter *parse_ok(const char *text)
{
    procreg_filter *f = NULL;
    GError *err = NULL;
    if (procreg_filter_parse(text, &f, &err) != 0)
        g_error("'%s' did not parse: %s", text, err->message);
    return f;
}

/* ---- the text form ---- */

static void test_parse_print(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"role == \"api\"", "role == \"api\""},
        {"role==\"api\"and port>=8000", "role == \"api\" and port >= 8000"},
        {"a == 1 or b == 2 and c == 3", "a == 1 or b == 2 and c == 3"},
        {"(a == 1 or b == 2) and c == 3", "(a == 1 or b == 2) and c == 3"},
        {"a == 1 and (b == 2 and c == 3)", "a == 1 and (b == 2 and c == 3)"},
        {"not not exists x", "not not exists x"},
        {"not (a == 1 or b == 2)", "not (a == 1 or b == 2)"},
        {"name startswith \"web-\" and name glob \"w*b?\"",
         "name startswith \"web-\" and name glob \"w*b?\""},
        {"pid != -1", "pid != -1"},
        {"meta[\"load avg\"] < 0.5 and meta[\"name\"] == \"x\"",
         "meta[\"load avg\"] < 0.5 and meta[\"name\"] == \"x\""},
        {"meta[\"plain\"] == 1", "plain == 1"},
        {"x == 2.0 and y == 1e3 and z == -0.25", "x == 2.0 and y == 1000.0 and z == -0.25"},
        {"big == 18446744073709551615", "big == 18446744073709551615"},
        {"up == true or up != false", "up == true or up != false"},
        {"s == \"q\\\"\\\\\\n\\t\\u00e9\\/\"", "s == \"q\\\"\\\\\\n\\t\xc3\xa9/\""},
        {"a.b-c_d == 1", "a.b-c_d == 1"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        procreg_filter *f = parse_ok(cases[i].in);
        char *s = procreg_filter_to_string(f);
        g_assert_cmpstr(s, ==, cases[i].out);
        procreg_filter *g = parse_ok(s);
        char *s2 = procreg_filter_to_string(g);
        g_assert_cmpstr(s2, ==, s);
        g_free(s);
        g_free(s2);
        procreg_filter_unref(f);
        procreg_filter_unref(g);
    }
}

static void expect_error(const char *text, int position, const char *in_msg,
                         const char *expected)
{
    procreg_filter *f = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_filter_parse(text, &f, &err), ==, PROCREG_EINVAL);
    g_assert_null(f);
    g_assert_error(err, PROCREG_ERROR, PROCREG_EINVAL);
    if (strstr(err->message, in_msg) == NULL)
        g_error("'%s': message '%s' lacks '%s'", text, err->message, in_msg);
    const procreg_error_details *d = procreg_error_get_details(err);
    g_assert_nonnull(d);
    if (d->position != position)
        g_error("'%s': position %d, not %d (%s)", text, d->position, position,
                err->message);
    if (expected != NULL) {
        g_assert_nonnull(d->alternatives);
        g_assert_true(g_strv_contains((const char *const *)d->alternatives,
                                      expected));
    }
    g_error_free(err);
}

static void test_parse_errors(void)
{
    expect_error("", 0, "found the end", "name");
    expect_error("role ==", 7, "found the end", "a string");
    expect_error("role = 3", 5, "'=' is not an operator", "==");
    expect_error("(a == 1", 7, "found the end", ")");
    expect_error("a == 1)", 6, "found ')'", "the end");
    expect_error("name == 3", 8, "found '3'", "a string");
    expect_error("pid startswith \"1\"", 4, "found 'startswith'", "<=");
    expect_error("pid == \"1\"", 7, "found '\"1\"'", "an integer");
    expect_error("x == true and", 13, "found the end", "exists");
    expect_error("x == 1 y == 2", 7, "found 'y'", "and");
    expect_error("x @ 1", 2, "unexpected character U+0040", NULL);
    expect_error("x == \"abc", 5, "not closed", NULL);
    expect_error("x == \"a\\qb\"", 7, "bad escape", NULL);
    expect_error("x == \"\\u0000\"", 6, "bad escape", NULL);
    expect_error("x == 99999999999999999999", 5, "out of range", NULL);
    expect_error("x == 1e999", 5, "out of range", NULL);
    expect_error("flag < true", 0, "booleans compare with == and !=", NULL);
    expect_error("x startswith 3", 0, "startswith takes a string", NULL);
    expect_error("exists and", 7, "found 'and'", "a metadata key");
    expect_error("meta(\"x\") == 1", 4, "found '('", "[");
    expect_error("and == 1", 0, "found 'and'", "(");
    expect_error("x == \xff", 5, "not valid UTF-8", NULL);

    GString *deep = g_string_new(NULL);
    for (int i = 0; i <= PROCREG_FILTER_DEPTH_MAX; i++)
        g_string_append_c(deep, '(');
    g_string_append(deep, "x == 1");
    expect_error(deep->str, PROCREG_FILTER_DEPTH_MAX, "nested deeper", NULL);
    g_string_truncate(deep, 0);
    for (int i = 0; i < PROCREG_FILTER_DEPTH_MAX; i++)
        g_string_append(deep, "not ");
    g_string_append(deep, "x == 1");
    expect_error(deep->str, 0, "nested deeper", NULL);
    g_string_free(deep, TRUE);
}

/* ---- the comparison rules ---- */

static bool match(const char *filter, const char *metadata)
{
    procreg_filter *f = parse_ok(filter);
    procreg_entry e = {.name = (char *)"web-1", .owner = {.pid = 42}};
    if (metadata != NULL)
        e.metadata = g_variant_ref_sink(g_variant_new_parsed(metadata));
    bool r = procreg_filter_matches(f, &e);
    if (e.metadata != NULL)
        g_variant_unref(e.metadata);
    procreg_filter_unref(f);
    return r;
}

static void test_rules(void)
{
    /* Integers of any width by value; never equal to a double. */
    g_assert_true(match("n == 7", "{'n': <byte 7>}"));
    g_assert_true(match("n == 7", "{'n': <uint64 7>}"));
    g_assert_true(match("n == -7", "{'n': <int16 -7>}"));
    g_assert_false(match("n == 7", "{'n': <7.0>}"));
    g_assert_true(match("n == 7.0", "{'n': <7.0>}"));
    g_assert_false(match("n != 7", "{'n': <7.0>}"));
    g_assert_true(match("n == 18446744073709551615",
                        "{'n': <uint64 18446744073709551615>}"));
    g_assert_true(match("n > 9223372036854775807",
                        "{'n': <uint64 9223372036854775808>}"));
    g_assert_true(match("n < 0", "{'n': <int64 -9223372036854775808>}"));
    /* Orderings mix integers and doubles. */
    g_assert_true(match("n >= 7", "{'n': <7.0>}"));
    g_assert_true(match("n < 7.5", "{'n': <uint32 7>}"));
    /* Strings: bytewise; prefixes and globs. */
    g_assert_true(match("s < \"b\"", "{'s': <'abc'>}"));
    g_assert_true(match("s startswith \"ab\"", "{'s': <'abc'>}"));
    g_assert_true(match("s glob \"a?c\"", "{'s': <'abc'>}"));
    g_assert_false(match("s glob \"a?\"", "{'s': <'abc'>}"));
    g_assert_false(match("s < 3", "{'s': <'abc'>}"));
    g_assert_true(match("s == \"/o\"", "{'s': <objectpath '/o'>}"));
    /* Booleans. */
    g_assert_true(match("up == true", "{'up': <true>}"));
    g_assert_false(match("up == 1", "{'up': <true>}"));
    /* A missing key or another class: false, != too. */
    g_assert_false(match("x != 1", "{'y': <1>}"));
    g_assert_false(match("x != 1", NULL));
    g_assert_true(match("not x == 1", "{'y': <1>}"));
    g_assert_false(match("x == 1", "{'x': <[1]>}"));
    g_assert_true(match("exists x", "{'x': <[1]>}"));
    g_assert_false(match("exists x", NULL));
    /* Names and pids. */
    g_assert_true(match("name == \"web-1\" and pid == 42", NULL));
    g_assert_true(match("name glob \"web-*\" and pid > 41 and pid <= 42",
                        NULL));
    g_assert_true(match("name startswith \"web\" and not name < \"web-1\"",
                        NULL));
    /* NaN compares with nothing. */
    procreg_filter *f = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_filter_new_meta("d", PROCREG_FILTER_GE,
                                            g_variant_new_double(0), &f, NULL),
                    ==, 0);
    procreg_entry e = {.metadata = g_variant_ref_sink(
                           g_variant_new_parsed("{'d': <%d>}", NAN))};
    g_assert_false(procreg_filter_matches(f, &e));
    g_variant_unref(e.metadata);
    procreg_filter_unref(f);
    g_assert_cmpint(procreg_filter_new_meta("d", PROCREG_FILTER_EQ,
                                            g_variant_new_double(INFINITY), &f,
                                            &err),
                    ==, PROCREG_EINVAL);
    g_clear_error(&err);
    g_assert_cmpint(procreg_filter_new_meta("d", PROCREG_FILTER_EQ,
                                            g_variant_new_parsed("[1]"), &f,
                                            &err),
                    ==, PROCREG_EINVAL);
    g_clear_error(&err);
    g_assert_cmpint(procreg_filter_new_pid(PROCREG_FILTER_GLOB, 1, &f, &err),
                    ==, PROCREG_EINVAL);
    g_clear_error(&err);
    g_assert_cmpint(procreg_filter_new_exists("", &f, &err), ==,
                    PROCREG_EINVAL);
    g_clear_error(&err);
    g_assert_cmpint(procreg_filter_new_name(99, "x", &f, &err), ==,
                    PROCREG_EINVAL);
    g_clear_error(&err);
    g_assert_cmpint(procreg_filter_and(NULL, NULL, &f, &err), ==,
                    PROCREG_EINVAL);
    g_clear_error(&err);
}

/* ---- the property test ---- */

/* The generator's own filter: evaluated by eval() below, from the rules
 * of procreg.h, independently of core/filter.c. */
typedef enum { G_AND, G_OR, G_NOT, G_NAME, G_PID, G_META, G_EXISTS } gkind;
typedef enum { V_STR, V_BOOL, V_INT, V_DBL } vkind;

typedef struct gen {
    gkind kind;
    procreg_filter_op op;
    const char *key;
    vkind vk;
    const char *s;
    bool b;
    int64_t i;
    double d;
    struct gen *a, *b2;
} gen;

static const char *const keys[] = {"role", "port", "load", "up", "zone",
                                   "nokey"};
static const char *const strings[] = {"api", "web", "db", "a", "b", "",
                                      "web-1", "db-2", "w*", "we"};

static int rand_int(int n)
{
    return g_test_rand_int_range(0, n);
}

static gen *gen_term(pid_t other)
{
    gen *g = g_new0(gen, 1);
    int k = rand_int(10);
    g->op = (procreg_filter_op)rand_int(8);
    if (k == 0) {
        g->kind = G_NAME;
        g->vk = V_STR;
        g->s = strings[rand_int(G_N_ELEMENTS(strings))];
    } else if (k == 1) {
        g->kind = G_PID;
        g->op = (procreg_filter_op)rand_int(6);
        g->vk = V_INT;
        g->i = rand_int(2) ? getpid() : other;
    } else if (k == 2) {
        g->kind = G_EXISTS;
        g->key = keys[rand_int(G_N_ELEMENTS(keys))];
    } else {
        g->kind = G_META;
        g->key = keys[rand_int(G_N_ELEMENTS(keys))];
        g->vk = (vkind)rand_int(4);
        if (g->op >= PROCREG_FILTER_PREFIX)
            g->vk = V_STR;
        if (g->vk == V_BOOL)
            g->op = (procreg_filter_op)rand_int(2);
        g->s = strings[rand_int(G_N_ELEMENTS(strings))];
        g->b = rand_int(2);
        g->i = rand_int(12) - 2;
        g->d = rand_int(8) / 4.0;
    }
    return g;
}

static gen *gen_filter(int depth, pid_t other)
{
    if (depth == 0 || rand_int(3) == 0)
        return gen_term(other);
    gen *g = g_new0(gen, 1);
    g->kind = (gkind)rand_int(3);
    g->a = gen_filter(depth - 1, other);
    if (g->kind != G_NOT)
        g->b2 = gen_filter(depth - 1, other);
    return g;
}

static void gen_free(gen *g)
{
    if (g == NULL)
        return;
    gen_free(g->a);
    gen_free(g->b2);
    g_free(g);
}

static procreg_filter *build(const gen *g)
{
    procreg_filter *f = NULL, *a = NULL, *b = NULL;
    int rc = 0;
    switch (g->kind) {
    case G_AND:
    case G_OR:
    case G_NOT:
        a = build(g->a);
        b = g->b2 ? build(g->b2) : NULL;
        rc = g->kind == G_AND  ? procreg_filter_and(a, b, &f, NULL)
             : g->kind == G_OR ? procreg_filter_or(a, b, &f, NULL)
                               : procreg_filter_not(a, &f, NULL);
        procreg_filter_unref(a);
        procreg_filter_unref(b);
        break;
    case G_NAME: rc = procreg_filter_new_name(g->op, g->s, &f, NULL); break;
    case G_PID: rc = procreg_filter_new_pid(g->op, g->i, &f, NULL); break;
    case G_EXISTS: rc = procreg_filter_new_exists(g->key, &f, NULL); break;
    case G_META: {
        GVariant *v = g->vk == V_STR    ? g_variant_new_string(g->s)
                      : g->vk == V_BOOL ? g_variant_new_boolean(g->b)
                      : g->vk == V_INT  ? g_variant_new_int64(g->i)
                                        : g_variant_new_double(g->d);
        rc = procreg_filter_new_meta(g->key, g->op, v, &f, NULL);
    }
    }
    g_assert_cmpint(rc, ==, 0);
    return f;
}

/* -1, 0, 1, or 2 when the two cannot be compared by @op's rules. */
static int order(const gen *g, GVariant *v, bool equality)
{
    const GVariantType *t = g_variant_get_type(v);
    bool is_str = g_variant_type_equal(t, G_VARIANT_TYPE_STRING);
    bool is_bool = g_variant_type_equal(t, G_VARIANT_TYPE_BOOLEAN);
    bool is_dbl = g_variant_type_equal(t, G_VARIANT_TYPE_DOUBLE);
    bool is_int = !is_str && !is_bool && !is_dbl; /* the data uses i, q, x */
    if (g->vk == V_STR)
        return is_str ? (strcmp(g_variant_get_string(v, NULL), g->s) > 0) -
                            (strcmp(g_variant_get_string(v, NULL), g->s) < 0)
                      : 2;
    if (g->vk == V_BOOL)
        return is_bool && equality ? g_variant_get_boolean(v) != g->b : 2;
    if (equality && ((g->vk == V_INT) != is_int || is_bool || is_str))
        return 2;
    if (is_bool || is_str)
        return 2;
    double x = is_dbl ? g_variant_get_double(v)
               : g_variant_type_equal(t, G_VARIANT_TYPE_INT32)
                   ? g_variant_get_int32(v)
               : g_variant_type_equal(t, G_VARIANT_TYPE_UINT16)
                   ? g_variant_get_uint16(v)
                   : (double)g_variant_get_int64(v);
    double y = g->vk == V_INT ? (double)g->i : g->d;
    return (x > y) - (x < y);
}

static bool holds(procreg_filter_op op, int c)
{
    switch (op) {
    case PROCREG_FILTER_EQ: return c == 0;
    case PROCREG_FILTER_NE: return c != 0 && c != 2;
    case PROCREG_FILTER_LT: return c == -1;
    case PROCREG_FILTER_LE: return c == -1 || c == 0;
    case PROCREG_FILTER_GT: return c == 1;
    default: return c == 1 || c == 0;
    }
}

static bool eval(const gen *g, const procreg_entry *e)
{
    switch (g->kind) {
    case G_AND: return eval(g->a, e) && eval(g->b2, e);
    case G_OR: return eval(g->a, e) || eval(g->b2, e);
    case G_NOT: return !eval(g->a, e);
    case G_PID: {
        int c = (e->owner.pid > g->i) - (e->owner.pid < g->i);
        return holds(g->op, c);
    }
    default: break;
    }
    GVariant *v = NULL;
    if (g->kind == G_NAME)
        v = g_variant_ref_sink(g_variant_new_string(e->name));
    else if (e->metadata != NULL)
        v = g_variant_lookup_value(e->metadata, g->key, NULL);
    if (v == NULL)
        return false;
    bool r;
    if (g->kind == G_EXISTS) {
        r = true;
    } else if (g->op == PROCREG_FILTER_PREFIX || g->op == PROCREG_FILTER_GLOB) {
        bool str = g_variant_is_of_type(v, G_VARIANT_TYPE_STRING);
        const char *s = str ? g_variant_get_string(v, NULL) : NULL;
        r = str && (g->op == PROCREG_FILTER_PREFIX
                        ? strncmp(s, g->s, strlen(g->s)) == 0
                        : g_pattern_match_simple(g->s, s));
    } else {
        bool eq = g->op == PROCREG_FILTER_EQ || g->op == PROCREG_FILTER_NE;
        r = holds(g->op, order(g, v, eq));
    }
    g_variant_unref(v);
    return r;
}

/* Random entries, the same in each registry of @regs. */
static void fill(procreg **regs, int n_regs, pid_t other)
{
    static const char *const names[] = {"web", "db", "api", "w", "we"};
    for (int i = 0; i < 120; i++) {
        const char *ns = rand_int(3) ? "p" : "q";
        g_autofree char *name = g_strdup_printf(
            "%s-%d", names[rand_int(G_N_ELEMENTS(names))], rand_int(40));
        GVariantDict d;
        g_variant_dict_init(&d, NULL);
        if (rand_int(4))
            g_variant_dict_insert(&d, "role", "s",
                                  strings[rand_int(G_N_ELEMENTS(strings))]);
        if (rand_int(4)) {
            int p = rand_int(12) - 2;
            switch (rand_int(4)) {
            case 0: g_variant_dict_insert(&d, "port", "i", p); break;
            case 1: g_variant_dict_insert(&d, "port", "x", (gint64)p); break;
            case 2: g_variant_dict_insert(&d, "port", "q", (guint16)MAX(p, 0)); break;
            default: g_variant_dict_insert(&d, "port", "d", (double)p);
            }
        }
        if (rand_int(2))
            g_variant_dict_insert(&d, "load", "d", rand_int(8) / 4.0);
        if (rand_int(2))
            g_variant_dict_insert(&d, "up", "b", (gboolean)rand_int(2));
        if (rand_int(3) == 0)
            g_variant_dict_insert(&d, "zone", "s", rand_int(2) ? "a" : "b");
        GVariant *md = g_variant_ref_sink(g_variant_dict_end(&d));
        procreg_owner o;
        g_assert_cmpint(procreg_owner_from_pid(rand_int(4) ? getpid() : other,
                                               &o, NULL),
                        ==, 0);
        for (int r = 0; r < n_regs; r++)
            procreg_register(regs[r], ns, name, &o, md, NULL, NULL);
        g_variant_unref(md);
    }
}

static char *names_of(procreg_entry *v, size_t n)
{
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < n; i++)
        g_string_append_printf(s, "%s/%s ", v[i].ns, v[i].name);
    return g_string_free(s, FALSE);
}

static char *selected(procreg *reg, const char *ns, const procreg_filter *f)
{
    procreg_entry *v = NULL;
    size_t n = 0, count = 99;
    GError *err = NULL;
    if (procreg_select(reg, ns, f, &v, &n, &err) != 0)
        g_error("select: %s", err->message);
    g_assert_cmpint(procreg_select_count(reg, ns, f, &count, NULL), ==, 0);
    g_assert_cmpuint(count, ==, n);
    char *s = names_of(v, n);
    procreg_entries_free(v, n);
    return s;
}

static char *expected(procreg *reg, const char *ns, const gen *g)
{
    procreg_entry *all = NULL;
    size_t n = 0, kept = 0;
    g_assert_cmpint(procreg_list(reg, ns, &all, &n, NULL), ==, 0);
    for (size_t i = 0; i < n; i++) {
        if (eval(g, &all[i]))
            all[kept++] = all[i];
        else
            procreg_entry_clear(&all[i]);
    }
    char *s = names_of(all, kept);
    procreg_entries_free(all, kept);
    return s;
}

static pid_t live_child(void)
{
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pause();
        _exit(0);
    }
    return pid;
}

static void test_property(void)
{
    int rounds = g_test_slow() ? 5000 : 600;
    pid_t other = live_child();
    procreg *regs[2] = {open_reg("ghash"), open_reg("optimized:inner=ghash")};
    fill(regs, 2, other);
    for (int round = 0; round < rounds; round++) {
        gen *g = gen_filter(rand_int(5), other);
        procreg_filter *f = build(g);
        char *text = procreg_filter_to_string(f);
        procreg_filter *back = parse_ok(text);
        char *text2 = procreg_filter_to_string(back);
        g_assert_cmpstr(text2, ==, text);
        const char *ns = rand_int(3) == 0 ? NULL : rand_int(2) ? "p" : "q";
        char *want = expected(regs[0], ns, g);
        for (int r = 0; r < 2; r++) {
            char *got = selected(regs[r], ns, f);
            char *got_back = selected(regs[r], ns, back);
            if (strcmp(got, want) != 0 || strcmp(got_back, want) != 0)
                g_error("round %d, %s, filter %s (ns %s):\n  want %s\n  got  "
                        "%s\n  parsed back: %s", round, r ? "optimized" : "ghash",
                        text, ns ? ns : "(all)", want, got, got_back);
            g_free(got);
            g_free(got_back);
        }
        g_free(want);
        g_free(text);
        g_free(text2);
        procreg_filter_unref(f);
        procreg_filter_unref(back);
        gen_free(g);
    }
    /* The optimized backend's index answered (it counts its queries). */
    GVariant *stats = NULL;
    g_assert_cmpint(procreg_stats(regs[1], &stats, NULL), ==, 0);
    GVariant *ops = g_variant_lookup_value(stats, "operations", NULL);
    guint64 finds = 0;
    g_assert_true(g_variant_lookup(ops, "find", "t", &finds));
    g_assert_cmpuint(finds, >, 0);
    g_variant_unref(ops);
    g_variant_unref(stats);
    procreg_close(regs[0]);
    procreg_close(regs[1]);
    kill(other, SIGKILL);
    waitpid(other, NULL, 0);
}

/* ---- select and unregister_match ---- */

static void test_select_basic(void)
{
    procreg *reg = open_reg("ghash");
    procreg_register(reg, "s", "web-1", NULL,
                     g_variant_new_parsed("{'role': <'api'>, 'port': <8080>}"),
                     NULL, NULL);
    procreg_register(reg, "s", "web-2", NULL,
                     g_variant_new_parsed("{'role': <'api'>, 'port': <7000>}"),
                     NULL, NULL);
    procreg_register(reg, "s", "db", NULL,
                     g_variant_new_parsed("{'role': <'db'>}"), NULL, NULL);
    procreg_register(reg, "t", "web-3", NULL,
                     g_variant_new_parsed("{'role': <'api'>, 'port': <9000>}"),
                     NULL, NULL);
    procreg_filter *f = parse_ok("role == \"api\" and port >= 8000");
    g_autofree char *s1 = selected(reg, "s", f);
    g_assert_cmpstr(s1, ==, "s/web-1 ");
    g_autofree char *s2 = selected(reg, NULL, f);
    g_assert_cmpstr(s2, ==, "s/web-1 t/web-3 ");
    g_autofree char *s3 = selected(reg, "s", NULL);
    g_assert_cmpstr(s3, ==, "s/db s/web-1 s/web-2 ");
    procreg_filter_unref(f);
    f = parse_ok("name == \"db\"");
    g_autofree char *s4 = selected(reg, "s", f);
    g_assert_cmpstr(s4, ==, "s/db ");
    g_autofree char *s5 = selected(reg, "t", f);
    g_assert_cmpstr(s5, ==, "");
    procreg_filter_unref(f);
    f = parse_ok("name == \"\" or name == \"a\\nb\"");
    g_autofree char *s6 = selected(reg, "s", f);
    g_assert_cmpstr(s6, ==, "");
    procreg_filter_unref(f);
    procreg_entry *v = NULL;
    size_t n = 0;
    GError *err = NULL;
    g_assert_cmpint(procreg_select(reg, "", NULL, &v, &n, &err), ==,
                    PROCREG_EINVAL);
    g_clear_error(&err);
    procreg_close(reg);
}

static void test_unregister_match(void)
{
    procreg *reg = open_reg("ghash");
    pid_t other = live_child();
    procreg_owner theirs;
    g_assert_cmpint(procreg_owner_from_pid(other, &theirs, NULL), ==, 0);
    GVariant *api = g_variant_ref_sink(g_variant_new_parsed("{'role': <'api'>}"));
    procreg_register(reg, "u", "mine-1", NULL, api, NULL, NULL);
    procreg_register(reg, "u", "mine-2", NULL, api, NULL, NULL);
    procreg_register(reg, "u", "theirs", &theirs, api, NULL, NULL);
    procreg_register(reg, "u", "mine-db", NULL, NULL, NULL, NULL);
    g_variant_unref(api);
    procreg_filter *f = parse_ok("role == \"api\"");
    size_t removed = 0;
    g_assert_cmpint(procreg_unregister_match(reg, "u", f, &removed, NULL), ==,
                    0);
    g_assert_cmpuint(removed, ==, 2);
    g_autofree char *left = selected(reg, "u", NULL);
    g_assert_cmpstr(left, ==, "u/mine-db u/theirs ");
    procreg_filter_unref(f);
    procreg_close(reg);
    kill(other, SIGKILL);
    waitpid(other, NULL, 0);
}

typedef struct {
    procreg *reg;
    procreg_filter *f;
    size_t removed;
    int rc;
} matcher;

static gpointer unregister_match_run(gpointer p)
{
    matcher *m = p;
    m->rc = procreg_unregister_match(m->reg, "u", m->f, &m->removed, NULL);
    return NULL;
}

/* An entry changed after it matched and before its removal: it stays
 * (the removal is at the revision it matched at). */
static void test_unregister_match_changed(void)
{
    procreg *reg = open_reg("fake:id=5");
    fake_inner *fake = fake_instance(5);
    procreg_register(reg, "u", "a", NULL,
                     g_variant_new_parsed("{'role': <'api'>}"), NULL, NULL);
    procreg_register(reg, "u", "b", NULL,
                     g_variant_new_parsed("{'role': <'api'>}"), NULL, NULL);
    matcher m = {reg, parse_ok("exists role"), 0, -1};
    fake_hold_next(fake, FAKE_LIST_ALL);
    GThread *t = g_thread_new("match", unregister_match_run, &m);
    fake_wait_held(fake, FAKE_LIST_ALL); /* it matched both */
    g_assert_cmpint(procreg_update_metadata(reg, "u", "b",
                                            g_variant_new_parsed(
                                                "{'role': <'db'>}"),
                                            PROCREG_UPDATE_REPLACE, NULL),
                    ==, 0);
    fake_release(fake, FAKE_LIST_ALL);
    g_thread_join(t);
    g_assert_cmpint(m.rc, ==, 0);
    g_assert_cmpuint(m.removed, ==, 1);
    g_autofree char *left = selected(reg, "u", NULL);
    g_assert_cmpstr(left, ==, "u/b ");
    procreg_filter_unref(m.f);
    procreg_close(reg);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    fake_inner_register_types();
    g_test_add_func("/coord/filter/parse-print", test_parse_print);
    g_test_add_func("/coord/filter/parse-errors", test_parse_errors);
    g_test_add_func("/coord/filter/rules", test_rules);
    g_test_add_func("/coord/select/basic", test_select_basic);
    g_test_add_func("/coord/select/unregister-match", test_unregister_match);
    g_test_add_func("/coord/select/unregister-match-changed",
                    test_unregister_match_changed);
    if (backend_built("optimized"))
        g_test_add_func("/coord/select/property", test_property);
    return g_test_run();
}
