/* Stats: exact per-operation counts from many threads, counter blocks
 * recycled when threads exit, Prometheus and JSON output. */
#include "common.h"

#include <string.h>
#ifdef HAVE_JSON_GLIB
#include <json-glib/json-glib.h>
#endif

static guint64 op_count(GVariant *stats, const char *part, const char *op)
{
    GVariant *d = g_variant_lookup_value(stats, part, G_VARIANT_TYPE("a{st}"));
    g_assert_nonnull(d);
    guint64 v = 0;
    g_assert_true(g_variant_lookup(d, op, "t", &v));
    g_variant_unref(d);
    return v;
}

static GVariant *stats_of(procreg *reg)
{
    GVariant *s = NULL;
    CHECK_RC(0, procreg_stats(reg, &s, &err_));
    return s;
}

#define THREADS 4
#define LOOKUPS 20000

typedef struct {
    fixture *f;
} lookup_arg;

static gpointer lookup_many(gpointer data)
{
    fixture *f = data;
    procreg_key *hit = NULL, *miss = NULL;
    procreg_key_new(f->ns, "s", &hit, NULL);
    procreg_key_new(f->ns, "absent", &miss, NULL);
    procreg_owner o;
    for (int i = 0; i < LOOKUPS; i++)
        procreg_lookup_key(f->reg, (i % 4) ? hit : miss, &o, NULL);
    procreg_key_unref(hit);
    procreg_key_unref(miss);
    return NULL;
}

static void test_counts(fixture *f, gconstpointer spec)
{
    CHECK_RC(0, procreg_register(f->reg, f->ns, "s", NULL, NULL, NULL, &err_));
    GVariant *before = stats_of(f->reg);
    GThread *t[THREADS];
    for (int i = 0; i < THREADS; i++)
        t[i] = g_thread_new("lookups", lookup_many, f);
    for (int i = 0; i < THREADS; i++)
        g_thread_join(t[i]);
    CHECK_RC(PROCREG_EEXISTS,
             procreg_register(f->reg, f->ns, "s", NULL, NULL, NULL, &err_));
    GVariant *after = stats_of(f->reg);
    g_assert_cmpuint(op_count(after, "operations", "lookup") -
                         op_count(before, "operations", "lookup"),
                     ==, THREADS * LOOKUPS);
    g_assert_cmpuint(op_count(after, "misses", "lookup") -
                         op_count(before, "misses", "lookup"),
                     ==, THREADS * LOOKUPS / 4);
    g_assert_cmpuint(op_count(after, "errors", "lookup"), ==, 0);
    g_assert_cmpuint(op_count(after, "operations", "register") -
                         op_count(before, "operations", "register"),
                     ==, 1);
    g_assert_cmpuint(op_count(after, "misses", "register") -
                         op_count(before, "misses", "register"),
                     ==, 1);
    /* Lookups are timed 1 in 256 per thread (writes 1 in 16). */
    GVariant *lat = g_variant_lookup_value(after, "latency",
                                           G_VARIANT_TYPE("a{sa{st}}"));
    GVariant *lk = g_variant_lookup_value(lat, "lookup", G_VARIANT_TYPE("a{st}"));
    guint64 timed = 0, p50 = 0, p99 = 0, max = 0;
    g_assert_true(g_variant_lookup(lk, "count", "t", &timed));
    g_assert_true(g_variant_lookup(lk, "p50_ns", "t", &p50));
    g_assert_true(g_variant_lookup(lk, "p99_ns", "t", &p99));
    g_assert_true(g_variant_lookup(lk, "max_ns", "t", &max));
    g_assert_cmpuint(timed, >=, THREADS * LOOKUPS / 256);
    g_assert_cmpuint(p50, <=, p99);
    g_assert_cmpuint(p50, >, 0);
    g_test_message("lookup latency sample: %" G_GUINT64_FORMAT " timed, p50 <= "
                   "%" G_GUINT64_FORMAT " ns, p99 <= %" G_GUINT64_FORMAT " ns",
                   timed, p50, p99);
    g_variant_unref(lk);
    g_variant_unref(lat);

    /* Entries per namespace and test namespaces. */
    GVariant *ns = g_variant_lookup_value(after, "namespaces",
                                          G_VARIANT_TYPE("a{st}"));
    guint64 mine = 0;
    g_assert_true(g_variant_lookup(ns, f->ns, "t", &mine));
    g_assert_cmpuint(mine, ==, 1);
    g_variant_unref(ns);
    guint64 test_ns = 0;
    g_assert_true(g_variant_lookup(after, "test_namespaces", "t", &test_ns));
    g_assert_cmpuint(test_ns, >=, 1);
    g_variant_unref(before);
    g_variant_unref(after);
}

static gpointer short_lived(gpointer data)
{
    fixture *f = data;
    procreg_owner o;
    for (int i = 0; i < 100; i++)
        procreg_lookup(f->reg, f->ns, "s", &o, NULL);
    return NULL;
}

/* Threads that exit hand their counter blocks to the next threads: the
 * number of blocks follows the threads alive at once, not ever made; and
 * their counts are kept. */
static void test_blocks_recycled(fixture *f, gconstpointer spec)
{
    CHECK_RC(0, procreg_register(f->reg, f->ns, "s", NULL, NULL, NULL, &err_));
    GVariant *before = stats_of(f->reg);
    for (int i = 0; i < 200; i++)
        g_thread_join(g_thread_new("short", short_lived, f));
    GVariant *after = stats_of(f->reg);
    guint64 blocks = 0;
    g_assert_true(g_variant_lookup(after, "counter_blocks", "t", &blocks));
    /* This thread, the monitor, the dispatcher, and the short ones one at
     * a time (plus slack for other tests' threads still exiting). */
    g_assert_cmpuint(blocks, <=, 8);
    g_assert_cmpuint(op_count(after, "operations", "lookup") -
                         op_count(before, "operations", "lookup"),
                     ==, 200 * 100);
    g_variant_unref(before);
    g_variant_unref(after);
}

static void test_prometheus(fixture *f, gconstpointer spec)
{
    CHECK_RC(0, procreg_register(f->reg, f->ns, "p", NULL, NULL, NULL, &err_));
    procreg_owner o;
    for (int i = 0; i < 300; i++)
        procreg_lookup(f->reg, f->ns, "p", &o, NULL);
    GString *s = g_string_new("# existing\n");
    CHECK_RC(0, procreg_stats_write_prometheus(f->reg, s, &err_));
    g_assert_true(g_str_has_prefix(s->str, "# existing\n"));
    char *ns_line = g_strdup_printf("procreg_namespace_entries{namespace=\"%s\"} 1\n",
                                    f->ns);
    g_assert_nonnull(strstr(s->str, ns_line));
    g_free(ns_line);
    g_assert_nonnull(strstr(s->str, "# TYPE procreg_operations_total counter\n"));
    g_assert_nonnull(strstr(s->str, "procreg_operations_total{op=\"register\","
                                    "result=\"ok\"} 1\n"));
    g_assert_nonnull(strstr(s->str, "# TYPE procreg_operation_duration_seconds "
                                    "histogram\n"));
    g_assert_nonnull(strstr(s->str, "procreg_operation_duration_seconds_bucket"
                                    "{op=\"lookup\",le=\"+Inf\"}"));
    g_assert_nonnull(strstr(s->str, "procreg_owners "));
    /* Every sample line: name{labels} value, and every metric has a TYPE. */
    char **lines = g_strsplit(s->str, "\n", -1);
    for (char **l = lines + 1; *l && **l; l++) {
        if (g_str_has_prefix(*l, "# "))
            continue;
        char *space = strrchr(*l, ' ');
        g_assert_nonnull(space);
        char *end = NULL;
        g_ascii_strtod(space + 1, &end);
        g_assert_true(end != NULL && *end == '\0');
    }
    g_strfreev(lines);
    g_string_free(s, TRUE);
}

static void test_json(fixture *f, gconstpointer spec)
{
    CHECK_RC(0, procreg_register(f->reg, f->ns, "j", NULL, NULL, NULL, &err_));
    char *json = NULL;
    CHECK_RC(0, procreg_stats_to_json(f->reg, &json, &err_));
    g_assert_true(g_str_has_prefix(json, "{"));
    g_assert_nonnull(strstr(json, "\"operations\":{"));
#ifdef HAVE_JSON_GLIB
    JsonParser *p = json_parser_new();
    GError *error = NULL;
    if (!json_parser_load_from_data(p, json, -1, &error))
        g_error("stats JSON does not parse: %s\n%s", error->message, json);
    JsonObject *root = json_node_get_object(json_parser_get_root(p));
    JsonObject *ns = json_object_get_object_member(root, "namespaces");
    g_assert_cmpint(json_object_get_int_member(ns, f->ns), ==, 1);
    g_assert_true(json_object_has_member(root, "latency"));
    g_object_unref(p);
#endif
    g_free(json);
}

void add_stats_cases(void)
{
    add_case("stats/counts", test_counts);
    add_case("stats/blocks_recycled", test_blocks_recycled);
    add_case("stats/prometheus", test_prometheus);
    add_case("stats/json", test_json);
}
