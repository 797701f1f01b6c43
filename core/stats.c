/*
 * Statistics: procreg_stats() and its Prometheus and JSON forms, summed
 * from the per-thread counter blocks (counters.c) and the figures of the
 * backend, the event hub and the monitor.  The top of the core: it reads
 * every layer below.
 */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- totals ---- */

typedef struct {
    uint64_t calls[PROCREG_OP_COUNT];
    uint64_t misses[PROCREG_OP_COUNT];
    uint64_t errors[PROCREG_OP_COUNT];
    uint64_t timed[PROCREG_OP_COUNT];
    uint64_t sum_ns[PROCREG_OP_COUNT];
    uint64_t max_ns[PROCREG_OP_COUNT];
    uint64_t hist[PROCREG_OP_COUNT][PROCREG_LAT_BUCKETS];
    size_t blocks;
} totals;

static uint64_t rd(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void sum_block(procreg_tblock *b, void *data)
{
    totals *t = data;
    t->blocks++;
    for (int op = 0; op < PROCREG_OP_COUNT; op++) {
        t->calls[op] += rd(&b->calls[op]);
        t->misses[op] += rd(&b->misses[op]);
        t->errors[op] += rd(&b->errors[op]);
        t->timed[op] += rd(&b->timed[op]);
        t->sum_ns[op] += rd(&b->time_sum_ns[op]);
        uint64_t m = rd(&b->time_max_ns[op]);
        if (m > t->max_ns[op])
            t->max_ns[op] = m;
        for (int i = 0; i < PROCREG_LAT_BUCKETS; i++)
            t->hist[op][i] += rd(&b->hist[op][i]);
    }
}

static void totals_get(procreg *reg, totals *t)
{
    memset(t, 0, sizeof *t);
    procreg_tstats_foreach(reg, sum_block, t);
}

/* Upper bound of the bucket holding quantile @q: durations are known to
 * within a factor of two. */
static uint64_t quantile(const uint64_t *hist, uint64_t n, double q)
{
    if (n == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)n);
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (int i = 0; i < PROCREG_LAT_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= want)
            return i == 0 ? 0 : (1ull << i);
    }
    return 1ull << (PROCREG_LAT_BUCKETS - 1);
}

/* ---- procreg_stats ---- */

static GVariant *per_op(const uint64_t *v)
{
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a{st}"));
    for (int op = 0; op < PROCREG_OP_COUNT; op++)
        g_variant_builder_add(&b, "{st}", procreg_op_name((procreg_op)op),
                              (guint64)v[op]);
    return g_variant_builder_end(&b);
}

static int stats_build(procreg *reg, const totals *t, GVariant **out,
                       GError **error)
{
    size_t entries = 0;
    int rc = procreg_backend_count(reg->backend, NULL, &entries, error);
    GArray *ns_counts = NULL;
    if (rc == 0)
        rc = procreg_namespace_counts(reg, &ns_counts, error);
    if (rc != 0) {
        *out = NULL;
        return rc;
    }
    GVariantDict dict;
    g_variant_dict_init(&dict, NULL);
    g_variant_dict_insert(&dict, "backend", "s", reg->ops->name);
    g_variant_dict_insert(&dict, "spec", "s", procreg_get_spec(reg));
    g_variant_dict_insert(&dict, "entries", "t", (guint64)entries);

    GVariantBuilder nsb;
    g_variant_builder_init(&nsb, G_VARIANT_TYPE("a{st}"));
    guint64 test_ns = 0;
    for (guint i = 0; i < ns_counts->len; i++) {
        const procreg_namespace_info *info =
            &g_array_index(ns_counts, procreg_namespace_info, i);
        g_variant_builder_add(&nsb, "{st}", info->ns, (guint64)info->entries);
        if (procreg_namespace_is_test(info->ns))
            test_ns++;
    }
    g_variant_dict_insert_value(&dict, "namespaces",
                                g_variant_builder_end(&nsb));
    g_variant_dict_insert(&dict, "test_namespaces", "t", test_ns);
    g_array_unref(ns_counts);

    g_variant_dict_insert_value(&dict, "operations", per_op(t->calls));
    g_variant_dict_insert_value(&dict, "misses", per_op(t->misses));
    g_variant_dict_insert_value(&dict, "errors", per_op(t->errors));

    GVariantBuilder lat;
    g_variant_builder_init(&lat, G_VARIANT_TYPE("a{sa{st}}"));
    for (int op = 0; op < PROCREG_OP_COUNT; op++) {
        GVariantBuilder one;
        g_variant_builder_init(&one, G_VARIANT_TYPE("a{st}"));
        g_variant_builder_add(&one, "{st}", "count", (guint64)t->timed[op]);
        g_variant_builder_add(&one, "{st}", "sum_ns", (guint64)t->sum_ns[op]);
        g_variant_builder_add(&one, "{st}", "max_ns", (guint64)t->max_ns[op]);
        g_variant_builder_add(&one, "{st}", "p50_ns",
                              (guint64)quantile(t->hist[op], t->timed[op], 0.5));
        g_variant_builder_add(&one, "{st}", "p99_ns",
                              (guint64)quantile(t->hist[op], t->timed[op], 0.99));
        g_variant_builder_add(&lat, "{s@a{st}}",
                              procreg_op_name((procreg_op)op),
                              g_variant_builder_end(&one));
    }
    g_variant_dict_insert_value(&dict, "latency", g_variant_builder_end(&lat));

    size_t bytes = 0;
    if (procreg_backend_memory_usage(reg->backend, &bytes) == 0)
        g_variant_dict_insert(&dict, "memory_bytes", "t", (guint64)bytes);
    uint64_t owners = 0;
    size_t index_bytes = 0;
    procreg_monitor_stats(reg, &dict, &owners, &index_bytes);
    g_variant_dict_insert(&dict, "owners", "t", (guint64)owners);
    size_t core = sizeof(procreg) + index_bytes +
                  t->blocks * sizeof(procreg_tblock);
    g_variant_dict_insert(&dict, "core_memory_bytes", "t", (guint64)core);
    /* Per-thread counter blocks (plus the shared overflow one). */
    g_variant_dict_insert(&dict, "counter_blocks", "t",
                          (guint64)(t->blocks > 0 ? t->blocks - 1 : 0));
    procreg_events_stats(reg, &dict);

    GVariantDict backend;
    g_variant_dict_init(&backend, NULL);
    procreg_backend_stats(reg->backend, &backend);
    g_variant_dict_insert_value(&dict, "backend_stats",
                                g_variant_dict_end(&backend));
    *out = g_variant_ref_sink(g_variant_dict_end(&dict));
    return 0;
}

PROCREG_API int procreg_stats(procreg *reg, GVariant **out, GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL, PROCREG_EINVAL);
    totals *t = g_new(totals, 1);
    totals_get(reg, t);
    int rc = stats_build(reg, t, out, error);
    g_free(t);
    return rc;
}

/* ---- Prometheus ---- */

static void prom_label(GString *s, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            g_string_append(s, "\\\\");
        else if (*p == '"')
            g_string_append(s, "\\\"");
        else if (*p == '\n')
            g_string_append(s, "\\n");
        else
            g_string_append_c(s, *p);
    }
}

static void prom_head(GString *s, const char *name, const char *type,
                      const char *help)
{
    g_string_append_printf(s, "# HELP %s %s\n# TYPE %s %s\n", name, help,
                           name, type);
}

static guint64 dict_u64(GVariant *dict, const char *key)
{
    guint64 v = 0;
    g_variant_lookup(dict, key, "t", &v);
    return v;
}

/* Each figure of the a{st} @part as its own metric; those named in
 * @counters (NULL-terminated) are counters, the others gauges. */
static void prom_dict_metrics(GString *s, GVariant *stats, const char *part,
                              const char *prefix, const char *help,
                              const char *const *counters)
{
    GVariant *d = g_variant_lookup_value(stats, part, G_VARIANT_TYPE("a{st}"));
    if (d == NULL)
        return;
    GVariantIter it;
    const char *k;
    guint64 v;
    g_variant_iter_init(&it, d);
    while (g_variant_iter_next(&it, "{&st}", &k, &v)) {
        bool counter = g_strv_contains(counters, k);
        char *name = g_strdup_printf("%s_%s%s", prefix, k,
                                     counter ? "_total" : "");
        char *text = g_strdup_printf("%s: %s.", help, k);
        prom_head(s, name, counter ? "counter" : "gauge", text);
        g_string_append_printf(s, "%s %" G_GUINT64_FORMAT "\n", name, v);
        g_free(text);
        g_free(name);
    }
    g_variant_unref(d);
}

static void prom_write(GString *s, procreg *reg, GVariant *stats,
                       const totals *t)
{
    const char *backend = reg->ops->name;
    prom_head(s, "procreg_entries", "gauge", "Entries registered.");
    g_string_append(s, "procreg_entries{backend=\"");
    prom_label(s, backend);
    g_string_append_printf(s, "\"} %" G_GUINT64_FORMAT "\n",
                           dict_u64(stats, "entries"));

    prom_head(s, "procreg_namespace_entries", "gauge",
              "Entries registered per namespace.");
    GVariant *ns = g_variant_lookup_value(stats, "namespaces",
                                          G_VARIANT_TYPE("a{st}"));
    GVariantIter it;
    const char *k;
    guint64 v;
    g_variant_iter_init(&it, ns);
    while (g_variant_iter_next(&it, "{&st}", &k, &v)) {
        g_string_append(s, "procreg_namespace_entries{namespace=\"");
        prom_label(s, k);
        g_string_append_printf(s, "\"} %" G_GUINT64_FORMAT "\n", v);
    }
    g_variant_unref(ns);

    prom_head(s, "procreg_test_namespaces", "gauge",
              "Namespaces made by procreg_namespace_new_test() that hold "
              "entries.");
    g_string_append_printf(s, "procreg_test_namespaces %" G_GUINT64_FORMAT
                           "\n", dict_u64(stats, "test_namespaces"));
    prom_head(s, "procreg_owners", "gauge",
              "Owner processes this registry tracks.");
    g_string_append_printf(s, "procreg_owners %" G_GUINT64_FORMAT "\n",
                           dict_u64(stats, "owners"));

    prom_head(s, "procreg_operations_total", "counter",
              "Calls per operation and result (ok, miss: not found, exists, "
              "conflict, timeout or cancelled; error: anything else).");
    for (int op = 0; op < PROCREG_OP_COUNT; op++) {
        const char *name = procreg_op_name((procreg_op)op);
        uint64_t ok = t->calls[op] - t->misses[op] - t->errors[op];
        g_string_append_printf(s,
                               "procreg_operations_total{op=\"%s\",result=\"ok\"} %"
                               G_GUINT64_FORMAT "\n"
                               "procreg_operations_total{op=\"%s\",result=\"miss\"} %"
                               G_GUINT64_FORMAT "\n"
                               "procreg_operations_total{op=\"%s\",result=\"error\"} %"
                               G_GUINT64_FORMAT "\n",
                               name, (guint64)ok, name, (guint64)t->misses[op],
                               name, (guint64)t->errors[op]);
    }

    prom_head(s, "procreg_operation_duration_seconds", "histogram",
              "Duration of timed calls (every call; lookups 1 in 256 per "
              "thread unless telemetry is attached).");
    for (int op = 0; op < PROCREG_OP_COUNT; op++) {
        const char *name = procreg_op_name((procreg_op)op);
        if (t->timed[op] == 0)
            continue;
        uint64_t cum = 0;
        int top = PROCREG_LAT_BUCKETS - 1;
        while (top > 0 && t->hist[op][top] == 0)
            top--;
        for (int i = 0; i <= top && i < PROCREG_LAT_BUCKETS - 1; i++) {
            cum += t->hist[op][i];
            /* bucket i holds durations < 2^i ns */
            g_string_append_printf(s,
                                   "procreg_operation_duration_seconds_bucket"
                                   "{op=\"%s\",le=\"%.9g\"} %" G_GUINT64_FORMAT
                                   "\n",
                                   name, (double)(1ull << i) * 1e-9,
                                   (guint64)cum);
        }
        g_string_append_printf(s,
                               "procreg_operation_duration_seconds_bucket"
                               "{op=\"%s\",le=\"+Inf\"} %" G_GUINT64_FORMAT "\n"
                               "procreg_operation_duration_seconds_sum"
                               "{op=\"%s\"} %.9g\n"
                               "procreg_operation_duration_seconds_count"
                               "{op=\"%s\"} %" G_GUINT64_FORMAT "\n",
                               name, (guint64)t->timed[op], name,
                               (double)t->sum_ns[op] * 1e-9, name,
                               (guint64)t->timed[op]);
    }

    prom_head(s, "procreg_memory_bytes", "gauge",
              "Memory held, by part (backend entries; core bookkeeping).");
    guint64 mem;
    if (g_variant_lookup(stats, "memory_bytes", "t", &mem))
        g_string_append_printf(s, "procreg_memory_bytes{part=\"backend\"} %"
                               G_GUINT64_FORMAT "\n", mem);
    g_string_append_printf(s, "procreg_memory_bytes{part=\"core\"} %"
                           G_GUINT64_FORMAT "\n",
                           dict_u64(stats, "core_memory_bytes"));

    static const char *const event_counters[] = {"emitted", "delivered",
                                                 NULL};
    static const char *const cleanup_counters[] = {
        "owners_exited", "entries_removed", "failures", NULL};
    prom_dict_metrics(s, stats, "events", "procreg_events", "Events",
                      event_counters);
    prom_dict_metrics(s, stats, "cleanup", "procreg_cleanup",
                      "Dead-owner cleanup", cleanup_counters);

    /* Backend figures that are plain numbers. */
    GVariant *bs = g_variant_lookup_value(stats, "backend_stats",
                                          G_VARIANT_TYPE_VARDICT);
    if (bs != NULL) {
        GVariant *val;
        g_variant_iter_init(&it, bs);
        while (g_variant_iter_next(&it, "{&sv}", &k, &val)) {
            double x = 0;
            bool num = true;
            switch (g_variant_classify(val)) {
            case G_VARIANT_CLASS_UINT64: x = (double)g_variant_get_uint64(val); break;
            case G_VARIANT_CLASS_INT64: x = (double)g_variant_get_int64(val); break;
            case G_VARIANT_CLASS_UINT32: x = g_variant_get_uint32(val); break;
            case G_VARIANT_CLASS_INT32: x = g_variant_get_int32(val); break;
            case G_VARIANT_CLASS_DOUBLE: x = g_variant_get_double(val); break;
            case G_VARIANT_CLASS_BOOLEAN: x = g_variant_get_boolean(val); break;
            default: num = false;
            }
            if (num) {
                GString *metric = g_string_new("procreg_backend_");
                for (const char *p = k; *p; p++)
                    g_string_append_c(metric, g_ascii_isalnum(*p) ? *p : '_');
                prom_head(s, metric->str, "gauge",
                          "Backend specific figure.");
                g_string_append_printf(s, "%s{backend=\"", metric->str);
                prom_label(s, backend);
                g_string_append_printf(s, "\"} %.17g\n", x);
                g_string_free(metric, TRUE);
            }
            g_variant_unref(val);
        }
        g_variant_unref(bs);
    }
}

PROCREG_API int procreg_stats_write_prometheus(procreg *reg, GString *out,
                                               GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL, PROCREG_EINVAL);
    totals *t = g_new(totals, 1);
    totals_get(reg, t);
    GVariant *stats = NULL;
    int rc = stats_build(reg, t, &stats, error);
    if (rc == 0) {
        prom_write(out, reg, stats, t);
        g_variant_unref(stats);
    }
    g_free(t);
    return rc;
}

/* ---- JSON ---- */

static void json_string(GString *s, const char *v)
{
    g_string_append_c(s, '"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        switch (*p) {
        case '"': g_string_append(s, "\\\""); break;
        case '\\': g_string_append(s, "\\\\"); break;
        case '\n': g_string_append(s, "\\n"); break;
        case '\r': g_string_append(s, "\\r"); break;
        case '\t': g_string_append(s, "\\t"); break;
        default:
            if (*p < 0x20)
                g_string_append_printf(s, "\\u%04x", *p);
            else
                g_string_append_c(s, (char)*p);
        }
    }
    g_string_append_c(s, '"');
}

static void json_value(GString *s, GVariant *v)
{
    switch (g_variant_classify(v)) {
    case G_VARIANT_CLASS_BOOLEAN:
        g_string_append(s, g_variant_get_boolean(v) ? "true" : "false");
        break;
    case G_VARIANT_CLASS_BYTE:
        g_string_append_printf(s, "%u", g_variant_get_byte(v));
        break;
    case G_VARIANT_CLASS_INT16:
        g_string_append_printf(s, "%d", g_variant_get_int16(v));
        break;
    case G_VARIANT_CLASS_UINT16:
        g_string_append_printf(s, "%u", g_variant_get_uint16(v));
        break;
    case G_VARIANT_CLASS_INT32:
        g_string_append_printf(s, "%d", g_variant_get_int32(v));
        break;
    case G_VARIANT_CLASS_UINT32:
        g_string_append_printf(s, "%u", g_variant_get_uint32(v));
        break;
    case G_VARIANT_CLASS_INT64:
        g_string_append_printf(s, "%" G_GINT64_FORMAT, g_variant_get_int64(v));
        break;
    case G_VARIANT_CLASS_UINT64:
        g_string_append_printf(s, "%" G_GUINT64_FORMAT,
                               g_variant_get_uint64(v));
        break;
    case G_VARIANT_CLASS_DOUBLE: {
        double d = g_variant_get_double(v);
        if (isfinite(d))
            g_string_append_printf(s, "%.17g", d);
        else
            g_string_append(s, "null");
        break;
    }
    case G_VARIANT_CLASS_STRING:
    case G_VARIANT_CLASS_OBJECT_PATH:
    case G_VARIANT_CLASS_SIGNATURE:
        json_string(s, g_variant_get_string(v, NULL));
        break;
    case G_VARIANT_CLASS_VARIANT: {
        GVariant *inner = g_variant_get_variant(v);
        json_value(s, inner);
        g_variant_unref(inner);
        break;
    }
    case G_VARIANT_CLASS_MAYBE: {
        GVariant *inner = g_variant_get_maybe(v);
        if (inner == NULL) {
            g_string_append(s, "null");
        } else {
            json_value(s, inner);
            g_variant_unref(inner);
        }
        break;
    }
    case G_VARIANT_CLASS_ARRAY:
    case G_VARIANT_CLASS_TUPLE:
    case G_VARIANT_CLASS_DICT_ENTRY: {
        const GVariantType *t = g_variant_get_type(v);
        bool object = g_variant_type_is_array(t) &&
                      g_variant_type_is_dict_entry(g_variant_type_element(t)) &&
                      g_variant_type_equal(
                          g_variant_type_key(g_variant_type_element(t)),
                          G_VARIANT_TYPE_STRING);
        g_string_append_c(s, object ? '{' : '[');
        gsize n = g_variant_n_children(v);
        for (gsize i = 0; i < n; i++) {
            GVariant *child = g_variant_get_child_value(v, i);
            if (i > 0)
                g_string_append_c(s, ',');
            if (object) {
                GVariant *key = g_variant_get_child_value(child, 0);
                GVariant *val = g_variant_get_child_value(child, 1);
                json_string(s, g_variant_get_string(key, NULL));
                g_string_append_c(s, ':');
                json_value(s, val);
                g_variant_unref(key);
                g_variant_unref(val);
            } else {
                json_value(s, child);
            }
            g_variant_unref(child);
        }
        g_string_append_c(s, object ? '}' : ']');
        break;
    }
    default:
        g_string_append(s, "null");
    }
}

PROCREG_API int procreg_stats_to_json(procreg *reg, char **out,
                                      GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL, PROCREG_EINVAL);
    *out = NULL;
    GVariant *stats = NULL;
    int rc = procreg_stats(reg, &stats, error);
    if (rc != 0)
        return rc;
    GString *s = g_string_new(NULL);
    json_value(s, stats);
    g_variant_unref(stats);
    *out = g_string_free(s, FALSE);
    return 0;
}
