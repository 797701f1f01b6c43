/*
 * procreg-bench: compare procreg backends and two raw baselines side by
 * side, in one run.  See doc/benchmarks.md.
 */
#include "bench.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdlib.h>

typedef struct {
    const char *name;
    const char *keys;
    const char *threads; /* "nproc" expands to the core count */
    const char *dists;
    double seconds;
    uint64_t ops;        /* > 0: fixed operations per thread instead */
    double warmup;
    int reps;
    const char *help;
} bench_profile;

static const bench_profile profiles[] = {
    {"smoke", "1000", "1,2", "uniform,zipf", 0.004, 32, 0.0, 1,
     "a second or two: every workload, 32 ops per thread, for the test suite"},
    {"quick", "10000", "1,nproc", "uniform", 0.05, 0, 0.02, 3,
     "well under a minute on 2 cores: the comparison of the README"},
    {"full", "1000,100000,1000000", "pow2,nproc", "uniform,zipf", 0.5, 0,
     0.1, 5, "every dimension; minutes to an hour"},
};

static const bench_profile *profile_find(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(profiles); i++)
        if (strcmp(profiles[i].name, name) == 0)
            return &profiles[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Option values                                                            */

static char *opt_profile = NULL;
static char *opt_backends = NULL;
static char **opt_backend = NULL;
static gboolean opt_no_baselines = FALSE;
static char *opt_workloads = NULL;
static char *opt_keys = NULL;
static char *opt_threads = NULL;
static char *opt_dist = NULL;
static double opt_seconds = -1;
static gint64 opt_ops = 0;
static double opt_warmup = -1;
static int opt_reps = 0;
static int opt_sample_every = 16;
static char *opt_mix = NULL;
static gint64 opt_seed = 0x5eed;
static char *opt_csv = NULL;
static char *opt_json = NULL;
static char *opt_plot = NULL;
static gboolean opt_no_tsc = FALSE;
static gboolean opt_quiet = FALSE;
static gboolean opt_list = FALSE;
static gboolean opt_memory_probe = FALSE;
static char *opt_scratch = NULL;
static gboolean opt_pin = FALSE;

static GOptionEntry entries[] = {
    {"profile", 'p', 0, G_OPTION_ARG_STRING, &opt_profile,
     "smoke, quick (default) or full: defaults for the options below", "NAME"},
    {"backends", 'b', 0, G_OPTION_ARG_STRING, &opt_backends,
     "Comma-separated backend specs (default: every built backend; "
     "options of one spec may follow it: optimized:inner=ghash,ttl_ms=250)",
     "LIST"},
    {"backend", 0, 0, G_OPTION_ARG_STRING_ARRAY, &opt_backend,
     "One backend spec, taken verbatim (repeatable)", "SPEC"},
    {"no-baselines", 0, 0, G_OPTION_ARG_NONE, &opt_no_baselines,
     "Do not add raw-ckht and raw-ghash", NULL},
    {"workloads", 'w', 0, G_OPTION_ARG_STRING, &opt_workloads,
     "Comma-separated workloads (default: all; --list shows them)", "LIST"},
    {"keys", 'k', 0, G_OPTION_ARG_STRING, &opt_keys,
     "Key counts, e.g. 1k,100k,1M", "LIST"},
    {"threads", 't', 0, G_OPTION_ARG_STRING, &opt_threads,
     "Thread counts, e.g. 1,2,4 ('nproc': the core count; 'pow2': 1,2,4.. "
     "below it)", "LIST"},
    {"dist", 'd', 0, G_OPTION_ARG_STRING, &opt_dist,
     "Key distributions: uniform, zipf (s=0.99)", "LIST"},
    {"seconds", 's', 0, G_OPTION_ARG_DOUBLE, &opt_seconds,
     "Duration of one repetition", "S"},
    {"ops", 0, 0, G_OPTION_ARG_INT64, &opt_ops,
     "Fixed operations per thread and repetition instead of --seconds", "N"},
    {"warmup", 0, 0, G_OPTION_ARG_DOUBLE, &opt_warmup,
     "Unrecorded run before the repetitions, seconds (0: none)", "S"},
    {"reps", 'r', 0, G_OPTION_ARG_INT, &opt_reps,
     "Repetitions (median, min and max are reported)", "N"},
    {"sample-every", 0, 0, G_OPTION_ARG_INT, &opt_sample_every,
     "Time every Nth op for the latency histogram (power of two; default 16)",
     "N"},
    {"mix", 0, 0, G_OPTION_ARG_STRING, &opt_mix,
     "Mixed workload lookup/register/unregister percentages (default 90/5/5)",
     "L/R/U"},
    {"seed", 0, 0, G_OPTION_ARG_INT64, &opt_seed,
     "Random seed (names, key streams)", "N"},
    {"csv", 0, 0, G_OPTION_ARG_FILENAME, &opt_csv,
     "Also write the results as CSV", "FILE"},
    {"json", 0, 0, G_OPTION_ARG_FILENAME, &opt_json,
     "Also write the results as JSON", "FILE"},
    {"plot", 0, 0, G_OPTION_ARG_FILENAME, &opt_plot,
     "Write gnuplot data and scripts to DIR and draw SVG and PNG", "DIR"},
    {"scratch", 0, 0, G_OPTION_ARG_FILENAME, &opt_scratch,
     "Where default specs of file backends (lmdb) put their files "
     "(default: /dev/shm when it exists, else the temporary directory)",
     "DIR"},
    {"pin", 0, 0, G_OPTION_ARG_NONE, &opt_pin,
     "Pin worker thread i to the i-th allowed CPU (default: no pinning)",
     NULL},
    {"no-tsc", 0, 0, G_OPTION_ARG_NONE, &opt_no_tsc,
     "Time samples with clock_gettime instead of rdtsc", NULL},
    {"quiet", 'q', 0, G_OPTION_ARG_NONE, &opt_quiet,
     "No progress on stderr", NULL},
    {"list", 0, 0, G_OPTION_ARG_NONE, &opt_list,
     "List workloads, profiles and the default targets, then exit", NULL},
    {"memory-probe", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE,
     &opt_memory_probe, "Internal: measure memory per entry of one --backend "
     "at one --keys count in this fresh process", NULL},
    {NULL, 0, 0, 0, NULL, NULL, NULL},
};

/* ------------------------------------------------------------------------ */
/* Parsing lists                                                            */

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

static bool parse_count(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    double v = g_ascii_strtod(s, &end);
    if (end == s || errno)
        return false;
    if (*end == 'k' || *end == 'K')
        v *= 1e3, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1e6, end++;
    if (*end || v < 1 || v > 1e8 || v != floor(v))
        return false;
    *out = (size_t)v;
    return true;
}

static GArray *parse_keys(const char *text, GError **error)
{
    GArray *a = g_array_new(FALSE, FALSE, sizeof(size_t));
    char **parts = g_strsplit(text, ",", -1);
    for (char **p = parts; *p; p++) {
        size_t v;
        char *s = g_strstrip(*p);
        if (!parse_count(s, &v)) {
            g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--keys: '%s' is not a key count (e.g. 1000, 100k, 1M)",
                        s);
            g_strfreev(parts);
            g_array_free(a, TRUE);
            return NULL;
        }
        g_array_append_val(a, v);
    }
    g_strfreev(parts);
    g_array_sort(a, cmp_size);
    return a;
}

static void add_unique_int(GArray *a, int v)
{
    for (guint i = 0; i < a->len; i++)
        if (g_array_index(a, int, i) == v)
            return;
    g_array_append_val(a, v);
}

static GArray *parse_threads(const char *text, int nproc, GError **error)
{
    GArray *a = g_array_new(FALSE, FALSE, sizeof(int));
    char **parts = g_strsplit(text, ",", -1);
    for (char **p = parts; *p; p++) {
        char *s = g_strstrip(*p);
        if (strcmp(s, "nproc") == 0 || strcmp(s, "max") == 0) {
            add_unique_int(a, nproc);
        } else if (strcmp(s, "pow2") == 0) {
            for (int t = 1; t < nproc; t *= 2)
                add_unique_int(a, t);
        } else {
            char *end;
            long v = strtol(s, &end, 10);
            if (end == s || *end || v < 1 || v > 1024) {
                g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "--threads: '%s' is not a thread count (1..1024, "
                            "nproc, pow2)", s);
                g_strfreev(parts);
                g_array_free(a, TRUE);
                return NULL;
            }
            add_unique_int(a, (int)v);
        }
    }
    g_strfreev(parts);
    g_array_sort(a, cmp_int);
    return a;
}

/* Split a --backends list at top-level commas.  A piece that is an
 * option ("ttl_ms=250": an '=' before any ':') continues the spec before
 * it, since a backend name never holds '='. */
static GPtrArray *parse_backends(const char *text, GError **error)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    GString *cur = g_string_new(NULL);
    int depth = 0;
    bool escaped = false;
    GPtrArray *pieces = g_ptr_array_new_with_free_func(g_free);
    for (const char *c = text;; c++) {
        if (*c == '\0' || (*c == ',' && depth == 0 && !escaped)) {
            g_ptr_array_add(pieces, g_strdup(cur->str));
            g_string_truncate(cur, 0);
            if (*c == '\0')
                break;
            continue;
        }
        if (!escaped) {
            if (*c == '[')
                depth++;
            else if (*c == ']' && depth > 0)
                depth--;
        }
        escaped = !escaped && *c == '\\';
        g_string_append_c(cur, *c);
    }
    g_string_free(cur, TRUE);
    for (guint i = 0; i < pieces->len; i++) {
        char *p = g_strstrip((char *)pieces->pdata[i]);
        if (!*p)
            continue;
        const char *eq = strchr(p, '=');
        const char *colon = strchr(p, ':');
        bool option = eq && (!colon || eq < colon);
        if (option) {
            if (out->len == 0) {
                g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                            "--backends: '%s' is an option with no backend "
                            "before it", p);
                g_ptr_array_free(pieces, TRUE);
                g_ptr_array_free(out, TRUE);
                return NULL;
            }
            char *prev = out->pdata[out->len - 1];
            out->pdata[out->len - 1] = g_strdup_printf(
                "%s%s%s", prev, strchr(prev, ':') ? "," : ":", p);
            g_free(prev);
        } else {
            g_ptr_array_add(out, g_strdup(p));
        }
    }
    g_ptr_array_free(pieces, TRUE);
    return out;
}

/* ------------------------------------------------------------------------ */
/* Default targets                                                          */

/* The spec measured for a built-in name when none is given: decorators
 * get an inner backend, persistent ones a scratch file (never the real
 * registry).  Backends that need a server are left out (NULL). */
static char *default_spec(const char *name, GString *notes, char **label)
{
    *label = NULL;
    if (strcmp(name, "etcd") == 0) {
        g_string_append_printf(notes, "%s%s (needs a server: name it, e.g. "
                                      "--backends etcd:endpoints=...)",
                               notes->len ? "; " : "", name);
        return NULL;
    }
    if (strcmp(name, "optimized") == 0)
        return g_strdup("optimized:inner=ghash");
    if (strcmp(name, "lmdb") == 0) {
        *label = g_strdup("lmdb");
        return g_strdup_printf("lmdb:path=%s/registry.mdb",
                               bench_scratch_dir());
    }
    return g_strdup(name);
}

/* Specs, and the labels shown for them (the spec itself, or a short
 * name for specs that hold a scratch path). */
static GPtrArray *default_targets(GString *notes, GPtrArray *labels)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    char **names = procreg_backend_names();
    for (char **n = names; n && *n; n++) {
        char *label;
        char *spec = default_spec(*n, notes, &label);
        if (spec) {
            g_ptr_array_add(out, spec);
            g_ptr_array_add(labels, label ? label : g_strdup(spec));
        }
    }
    /* The cache is meant for a slow inner backend: LMDB when it is built. */
    if (names && g_strv_contains((const char *const *)names, "optimized") &&
        g_strv_contains((const char *const *)names, "lmdb")) {
        g_ptr_array_add(out, g_strdup_printf(
                                 "optimized:inner=[lmdb:path=%s/optimized.mdb]",
                                 bench_scratch_dir()));
        g_ptr_array_add(labels, g_strdup("optimized:inner=lmdb"));
    }
    g_strfreev(names);
    return out;
}

/* ------------------------------------------------------------------------ */

static char *join_ints(GArray *a)
{
    GString *s = g_string_new(NULL);
    for (guint i = 0; i < a->len; i++)
        g_string_append_printf(s, "%s%d", i ? "," : "", g_array_index(a, int, i));
    return g_string_free(s, FALSE);
}

static char *join_sizes(GArray *a)
{
    GString *s = g_string_new(NULL);
    for (guint i = 0; i < a->len; i++)
        g_string_append_printf(s, "%s%zu", i ? "," : "",
                               g_array_index(a, size_t, i));
    return g_string_free(s, FALSE);
}

static char *join_ptrs(GPtrArray *a, const char *sep)
{
    GString *s = g_string_new(NULL);
    for (guint i = 0; i < a->len; i++)
        g_string_append_printf(s, "%s%s", i ? sep : "", (char *)a->pdata[i]);
    return g_string_free(s, FALSE);
}

typedef struct {
    int target;
    int dist;
} result_order;

static GHashTable *order_of; /* bench_result * -> result_order * */

static int cmp_result(gconstpointer a, gconstpointer b)
{
    const bench_result *x = *(bench_result *const *)a;
    const bench_result *y = *(bench_result *const *)b;
    const result_order *ox = g_hash_table_lookup(order_of, x);
    const result_order *oy = g_hash_table_lookup(order_of, y);
    if (x->workload->id != y->workload->id)
        return x->workload->id < y->workload->id ? -1 : 1;
    if (x->keys != y->keys)
        return x->keys < y->keys ? -1 : 1;
    if (ox->dist != oy->dist)
        return ox->dist < oy->dist ? -1 : 1;
    if (x->threads != y->threads)
        return x->threads < y->threads ? -1 : 1;
    return ox->target < oy->target ? -1 : ox->target > oy->target;
}

static void list_and_exit(void)
{
    printf("Workloads:\n");
    for (int i = 0; i < BENCH_W_COUNT; i++)
        if (!bench_workloads[i].unavailable)
            printf("  %-16s %s\n", bench_workloads[i].name,
                   bench_workloads[i].summary);
    printf("\nProfiles:\n");
    for (size_t i = 0; i < G_N_ELEMENTS(profiles); i++)
        if (profiles[i].ops)
            printf("  %-6s keys %s, threads %s, dist %s, %d rep x %" G_GUINT64_FORMAT
                   " ops: %s\n", profiles[i].name, profiles[i].keys,
                   profiles[i].threads, profiles[i].dists, profiles[i].reps,
                   profiles[i].ops, profiles[i].help);
        else
            printf("  %-6s keys %s, threads %s, dist %s, %d reps x %.3g s: %s\n",
                   profiles[i].name, profiles[i].keys, profiles[i].threads,
                   profiles[i].dists, profiles[i].reps, profiles[i].seconds,
                   profiles[i].help);
    GString *notes = g_string_new(NULL);
    GPtrArray *labels = g_ptr_array_new_with_free_func(g_free);
    GPtrArray *t = default_targets(notes, labels);
    char *j = join_ptrs(t, " ");
    printf("\nDefault targets: raw-ckht raw-ghash %s\n", j);
    g_ptr_array_free(labels, TRUE);
    if (notes->len)
        printf("Not measured by default: %s\n", notes->str);
    g_free(j);
    g_ptr_array_free(t, TRUE);
    g_string_free(notes, TRUE);
    bench_scratch_remove();
    exit(0);
}

static bool is_baseline(const char *spec)
{
    return strcmp(spec, "raw-ckht") == 0 || strcmp(spec, "raw-ghash") == 0 ||
           strcmp(spec, "raw-lmdb") == 0;
}

static void add_target(GPtrArray *labels, GPtrArray *specs,
                       const char *label, const char *spec)
{
    for (guint i = 0; i < specs->len; i++)
        if (strcmp(specs->pdata[i], spec) == 0)
            return;
    g_ptr_array_add(labels, g_strdup(label));
    g_ptr_array_add(specs, g_strdup(spec));
}

static bench_result *new_result(bench_report *rep, const char *target,
                                int target_index, int dist_index)
{
    bench_result *r = g_new0(bench_result, 1);
    r->target = g_strdup(target);
    r->mem_rss_per_entry = NAN;
    r->mem_heap_per_entry = NAN;
    r->mem_backend_per_entry = NAN;
    r->items_per_op = NAN;
    r->ratio_raw_ckht = r->ratio_raw_ghash = NAN;
    r->ratio_reference = NAN;
    r->cpu_ns_per_op = NAN;
    result_order *o = g_new(result_order, 1);
    o->target = target_index;
    o->dist = dist_index;
    g_hash_table_insert(order_of, r, o);
    g_ptr_array_add(rep->results, r);
    return r;
}

/* Progress on stderr, and wrong results or skips make the exit status 1. */
static void report_cell(const bench_result *r, const char *label, size_t done,
                        size_t total, double t_begin, int *status)
{
    if (!opt_quiet && !r->skipped)
        fprintf(stderr, "[%3zu/%zu %6.1fs] %zu keys  %s: %s %s T=%d  %.3g "
                        "Mops/s\n",
                done, total, bench_now() - t_begin, r->keys, label,
                r->workload->name, r->dist, r->threads, r->mops_median);
    if (r->skipped) {
        fprintf(stderr, "procreg-bench: %s %s: %s\n", label,
                r->workload->name, r->skipped);
        *status = 1;
    }
    if (r->errors) {
        fprintf(stderr, "procreg-bench: %s %s: %" G_GUINT64_FORMAT
                        " wrong results, e.g. %s\n",
                label, r->workload->name, r->errors, r->error_example);
        *status = 1;
    }
}

static void result_free(gpointer p)
{
    bench_result_clear(p);
    g_free(p);
}

int main(int argc, char **argv)
{
    bench_report rep;
    memset(&rep, 0, sizeof rep);
    bench_sysinfo_collect(&rep.sys, argc, argv);
    /* Scratch files go on every exit path (a signal still leaves them). */
    atexit(bench_scratch_remove);

    GError *error = NULL;
    GOptionContext *oc = g_option_context_new(
        "- compare procreg backends and raw baselines");
    g_option_context_add_main_entries(oc, entries, NULL);
    g_option_context_set_summary(oc,
        "Runs the workloads over every target (backend spec or baseline) in\n"
        "one run, so the figures are comparable, and prints a table per\n"
        "workload.  Baselines: raw-ckht (ck_ht, no procreg) and raw-ghash\n"
        "(GHashTable under a GRWLock); raw-lmdb (one LMDB database, each\n"
        "thread's reset read transaction) when named in --backends.\n"
        "Progress goes to stderr.");
    if (!g_option_context_parse(oc, &argc, &argv, &error)) {
        fprintf(stderr, "procreg-bench: %s\n", error->message);
        g_error_free(error);
        g_option_context_free(oc);
        return 2;
    }
    g_option_context_free(oc);
    if (argc > 1) {
        fprintf(stderr, "procreg-bench: unexpected argument '%s' (see --help)\n",
                argv[1]);
        return 2;
    }
    if (opt_scratch)
        bench_scratch_set_parent(opt_scratch);
    if (opt_list)
        list_and_exit();
    if (opt_memory_probe) {
        size_t n = 0;
        if (!opt_backend || !opt_backend[0] || opt_backend[1] || !opt_keys ||
            !parse_count(opt_keys, &n)) {
            fprintf(stderr, "procreg-bench: --memory-probe needs one --backend "
                            "and one --keys count\n");
            return 2;
        }
        int rc = bench_memory_probe_child(opt_backend[0], n,
                                          (uint64_t)opt_seed);
        bench_sysinfo_clear(&rep.sys);
        return rc;
    }

    const bench_profile *prof = profile_find(opt_profile ? opt_profile : "quick");
    if (!prof) {
        fprintf(stderr, "procreg-bench: unknown profile '%s' (smoke, quick, full)\n",
                opt_profile);
        return 2;
    }
    rep.profile = prof->name;

    bench_params params = {
        .seconds = opt_seconds >= 0 ? opt_seconds : prof->seconds,
        .ops = opt_ops > 0 ? (uint64_t)opt_ops
               : opt_seconds >= 0 ? 0 : prof->ops,
        .warmup = opt_warmup >= 0 ? opt_warmup : prof->warmup,
        .reps = opt_reps > 0 ? opt_reps : prof->reps,
        .sample_every = (unsigned int)opt_sample_every,
        .mix_lookup = 90, .mix_register = 5, .mix_unregister = 5,
        .seed = (uint64_t)opt_seed,
        .pin = opt_pin,
    };
    rep.params = &params;
    if (opt_sample_every < 1 || (opt_sample_every & (opt_sample_every - 1))) {
        fprintf(stderr, "procreg-bench: --sample-every must be a power of two\n");
        return 2;
    }
    if (opt_ops < 0 || params.seconds <= 0 || params.seconds > 3600 ||
        params.warmup > 3600) {
        fprintf(stderr, "procreg-bench: --seconds must be in (0, 3600], "
                        "--warmup in [0, 3600], --ops >= 0\n");
        return 2;
    }
    if (opt_mix) {
        unsigned int l, r, u;
        char tail;
        if (sscanf(opt_mix, "%u/%u/%u%c", &l, &r, &u, &tail) != 3 ||
            l + r + u != 100) {
            fprintf(stderr, "procreg-bench: --mix wants three percentages that "
                            "add up to 100, e.g. 90/5/5\n");
            return 2;
        }
        params.mix_lookup = l;
        params.mix_register = r;
        params.mix_unregister = u;
    }

    int nproc = (int)g_get_num_processors();
    GArray *keys = parse_keys(opt_keys ? opt_keys : prof->keys, &error);
    GArray *threads = keys ? parse_threads(opt_threads ? opt_threads
                                                       : prof->threads,
                                           nproc, &error)
                           : NULL;
    if (!keys || !threads) {
        fprintf(stderr, "procreg-bench: %s\n", error->message);
        return 2;
    }

    /* distributions */
    GArray *dists = g_array_new(FALSE, FALSE, sizeof(int));
    {
        char **parts = g_strsplit(opt_dist ? opt_dist : prof->dists, ",", -1);
        for (char **p = parts; *p; p++) {
            char *s = g_strstrip(*p);
            int d;
            if (strcmp(s, "uniform") == 0)
                d = BENCH_DIST_UNIFORM;
            else if (strcmp(s, "zipf") == 0)
                d = BENCH_DIST_ZIPF;
            else {
                fprintf(stderr, "procreg-bench: --dist: unknown '%s' "
                                "(uniform, zipf)\n", s);
                return 2;
            }
            add_unique_int(dists, d);
        }
        g_strfreev(parts);
    }
    bool want_zipf = false;
    for (guint i = 0; i < dists->len; i++)
        want_zipf |= g_array_index(dists, int, i) == BENCH_DIST_ZIPF;

    /* workloads */
    bool wanted[BENCH_W_COUNT] = {false};
    if (opt_workloads) {
        char **parts = g_strsplit(opt_workloads, ",", -1);
        for (char **p = parts; *p; p++) {
            const bench_workload *w = bench_workload_find(g_strstrip(*p));
            if (!w) {
                fprintf(stderr, "procreg-bench: unknown workload '%s' "
                                "(--list shows them)\n", *p);
                return 2;
            }
            wanted[w->id] = true;
        }
        g_strfreev(parts);
    } else {
        for (int i = 0; i < BENCH_W_COUNT; i++)
            wanted[i] = !bench_workloads[i].unavailable;
    }
    GPtrArray *wnames = g_ptr_array_new();
    for (int i = 0; i < BENCH_W_COUNT; i++)
        if (wanted[i])
            g_ptr_array_add(wnames, (char *)bench_workloads[i].name);

    /* targets: baselines first, then backends in the order given */
    GString *notes = g_string_new(NULL);
    GPtrArray *targets = g_ptr_array_new_with_free_func(g_free); /* labels */
    GPtrArray *specs = g_ptr_array_new_with_free_func(g_free);
    GPtrArray *given, *given_labels = g_ptr_array_new_with_free_func(g_free);
    if (opt_backends || opt_backend) {
        given = opt_backends ? parse_backends(opt_backends, &error)
                             : g_ptr_array_new_with_free_func(g_free);
        if (!given) {
            fprintf(stderr, "procreg-bench: %s\n", error->message);
            return 2;
        }
        for (char **b = opt_backend; b && *b; b++)
            g_ptr_array_add(given, g_strdup(*b));
        /* Bare names of file backends get a scratch file, as in the
         * default list: a benchmark never writes the real registry. */
        for (guint i = 0; i < given->len; i++) {
            const char *g = given->pdata[i];
            char *spec = NULL;
            if (strcmp(g, "lmdb") == 0)
                spec = g_strdup_printf("lmdb:path=%s/registry.mdb",
                                       bench_scratch_dir());
            else if (g_str_has_prefix(g, "optimized:inner=lmdb") &&
                     (g[20] == '\0' || g[20] == ','))
                spec = g_strdup_printf(
                    "optimized:inner=[lmdb:path=%s/optimized.mdb]%s",
                    bench_scratch_dir(), g + 20);
            g_ptr_array_add(given_labels, g_strdup(g));
            if (spec) {
                g_free(given->pdata[i]);
                given->pdata[i] = spec;
            }
        }
    } else {
        given = default_targets(notes, given_labels);
    }
    if (!opt_no_baselines) {
#if defined(BENCH_HAVE_CK)
        add_target(targets, specs, "raw-ckht", "raw-ckht");
#endif
        add_target(targets, specs, "raw-ghash", "raw-ghash");
    }
    for (guint i = 0; i < given->len; i++)
        add_target(targets, specs, given_labels->pdata[i], given->pdata[i]);
    g_ptr_array_free(given, TRUE);
    g_ptr_array_free(given_labels, TRUE);
    if (targets->len == 0) {
        fprintf(stderr, "procreg-bench: nothing to measure\n");
        return 2;
    }

    bench_timer_init(!opt_no_tsc);

    rep.targets_joined = join_ptrs(targets, " ");
    rep.keys_joined = join_sizes(keys);
    rep.threads_joined = join_ints(threads);
    {
        GString *s = g_string_new(NULL);
        for (guint i = 0; i < dists->len; i++)
            g_string_append_printf(s, "%s%s", i ? "," : "",
                                   g_array_index(dists, int, i) == BENCH_DIST_ZIPF
                                       ? "zipf" : "uniform");
        rep.dists_joined = g_string_free(s, FALSE);
    }
    rep.workloads_joined = join_ptrs(wnames, ",");
    rep.results = g_ptr_array_new_with_free_func(result_free);
    order_of = g_hash_table_new_full(NULL, NULL, NULL, g_free);

    bench_report_header(stdout, &rep);
    for (guint i = 0; i < targets->len; i++)
        if (strcmp(targets->pdata[i], specs->pdata[i]) != 0)
            printf("# %s = %s (a scratch file, removed at exit)\n",
                   (char *)targets->pdata[i], (char *)specs->pdata[i]);
    if (notes->len)
        printf("# not measured by default: %s\n", notes->str);
    fflush(stdout);

    /* Plan, for the progress counter. */
    int max_threads = g_array_index(threads, int, threads->len - 1);
    size_t total = 0;
    for (int i = 0; i < BENCH_W_COUNT; i++) {
        if (!wanted[i])
            continue;
        const bench_workload *w = &bench_workloads[i];
        size_t per = (w->uses_dist ? dists->len : 1) *
                     (w->single_thread ? 1 : threads->len);
        for (guint t = 0; t < specs->len; t++)
            if (!w->procreg_only || !is_baseline(specs->pdata[t]))
                total += per;
    }
    total *= keys->len;
    size_t done = 0;
    double t_begin = bench_now();
    int status = 0;

    for (guint ki = 0; ki < keys->len; ki++) {
        size_t n_keys = g_array_index(keys, size_t, ki);
        bench_dataset ds;
        if (!opt_quiet)
            fprintf(stderr, "procreg-bench: generating %zu keys\n", n_keys);
        if (bench_dataset_init(&ds, n_keys, (size_t)max_threads, want_zipf, true,
                               params.seed, &error) < 0) {
            fprintf(stderr, "procreg-bench: %s\n", error->message);
            return 1;
        }
        guint nt = targets->len;
        /* 1. load: each repetition opens a fresh instance of one target. */
        for (guint ti = 0; ti < nt && wanted[BENCH_W_LOAD]; ti++) {
            const char *label = targets->pdata[ti];
            bench_result *r = new_result(&rep, label, (int)ti, 0);
            if (!opt_quiet)
                fprintf(stderr, "[%3zu/%zu %6.1fs] %zu keys  %s: load\n",
                        ++done, total, bench_now() - t_begin, n_keys, label);
            bench_run_load(&params, &ds, specs->pdata[ti], r);
            if (r->skipped) {
                fprintf(stderr, "procreg-bench: %s: %s\n", label, r->skipped);
                status = 1;
            }
        }

        /* 2. Every target open and filled at once, so that the repetitions
         * of one cell can be interleaved: background load on a shared
         * machine then hits every target alike. */
        bool cells_wanted = false;
        for (int wi = 0; wi < BENCH_W_COUNT; wi++)
            cells_wanted |= wanted[wi] && wi != BENCH_W_LOAD;
        bench_target *tg = g_new0(bench_target, nt);
        char **skip = g_new0(char *, nt);
        bench_context *ctx = g_new0(bench_context, nt);
        for (guint ti = 0; ti < nt && cells_wanted; ti++) {
            if (!opt_quiet)
                fprintf(stderr, "procreg-bench: %zu keys  %s: filling the "
                                "table\n", n_keys, (char *)targets->pdata[ti]);
            if (bench_target_open(&tg[ti], specs->pdata[ti],
                                  n_keys + ds.pool_threads * ds.pool_per_thread,
                                  &error) < 0) {
                skip[ti] = g_strdup_printf("cannot open: %s", error->message);
                g_clear_error(&error);
            } else if (bench_load_table(&tg[ti], &ds, &error) < 0) {
                skip[ti] = g_strdup_printf("cannot load the keys: %s",
                                           error->message);
                g_clear_error(&error);
                bench_target_close(&tg[ti]);
            }
            if (skip[ti]) {
                fprintf(stderr, "procreg-bench: %s: %s\n",
                        (char *)targets->pdata[ti], skip[ti]);
                status = 1;
            }
            ctx[ti] = (bench_context){
                .params = &params,
                .ds = &ds,
                .target = &tg[ti],
                .pool_registered = g_new0(size_t, (size_t)max_threads),
                .pool_removed = g_new0(size_t, (size_t)max_threads),
            };
        }

        for (guint ti = 0; ti < nt && cells_wanted; ti++)
            if (!skip[ti])
                bench_settle_table(&tg[ti], &ds);

        /* 3. The cells. */
        for (int wi = 0; wi < BENCH_W_COUNT; wi++) {
            const bench_workload *w = &bench_workloads[wi];
            if (!wanted[wi] || w->id == BENCH_W_LOAD)
                continue;
            guint nd = w->uses_dist ? dists->len : 1;
            guint nthr = w->single_thread ? 1 : threads->len;
            for (guint di = 0; di < nd; di++) {
                int dist = w->uses_dist ? g_array_index(dists, int, di)
                                        : BENCH_DIST_UNIFORM;
                for (guint thi = 0; thi < nthr; thi++) {
                    int t = w->fixed_threads > 0 ? w->fixed_threads
                            : w->single_thread   ? 1
                                                 : g_array_index(threads, int, thi);
                    bench_result **rs = g_new0(bench_result *, nt);
                    bench_cell **cells = g_new0(bench_cell *, nt);
                    for (guint ti = 0; ti < nt; ti++) {
                        if (w->procreg_only && is_baseline(specs->pdata[ti]))
                            continue;
                        rs[ti] = new_result(&rep, targets->pdata[ti], (int)ti,
                                            dist);
                        if (skip[ti]) {
                            rs[ti]->workload = w;
                            rs[ti]->keys = n_keys;
                            rs[ti]->dist = !w->uses_dist ? "-"
                                           : dist == BENCH_DIST_ZIPF ? "zipf"
                                                                     : "uniform";
                            rs[ti]->threads = t;
                            rs[ti]->skipped = g_strdup(skip[ti]);
                        } else if (w->group) {
                            bench_run_groups(&ctx[ti], w, t, rs[ti]);
                        } else if (w->fixed_threads > 0) {
                            /* Latency of an idle registry: one at a time. */
                            bench_run_service(&ctx[ti], w, rs[ti]);
                        } else {
                            cells[ti] = bench_cell_begin(&ctx[ti], w,
                                                         (bench_dist)dist, t,
                                                         rs[ti]);
                        }
                    }
                    for (guint ti = 0; ti < nt; ti++)
                        if (cells[ti])
                            bench_cell_warmup(cells[ti]);
                    /* Repetition r starts with target r mod n. */
                    for (int r = 0; r < params.reps; r++)
                        for (guint k = 0; k < nt; k++) {
                            guint ti = ((guint)r + k) % nt;
                            if (cells[ti])
                                bench_cell_rep(cells[ti], r);
                        }
                    for (guint ti = 0; ti < nt; ti++) {
                        if (cells[ti])
                            bench_cell_end(cells[ti]);
                        if (rs[ti]) {
                            done++;
                            if (!skip[ti])
                                report_cell(rs[ti], targets->pdata[ti], done,
                                            total, t_begin, &status);
                        }
                    }
                    g_free(cells);
                    g_free(rs);
                }
            }
        }

        /* 4. Close them. */
        for (guint ti = 0; ti < nt && cells_wanted; ti++) {
            g_free(ctx[ti].pool_registered);
            g_free(ctx[ti].pool_removed);
            if (!skip[ti])
                bench_target_close(&tg[ti]);
            g_free(skip[ti]);
        }
        g_free(ctx);
        g_free(skip);
        g_free(tg);
        bench_dataset_clear(&ds);
    }

    rep.loadavg_end = bench_loadavg();
    g_ptr_array_sort(rep.results, cmp_result);
    bench_report_ratios(&rep);
    bench_report_table(stdout, &rep);
    fflush(stdout);
    printf("\n# load average %s at the end (1, 5, 15 min; %d cores)\n",
           rep.loadavg_end, rep.sys.cores);
    if (!opt_quiet)
        fprintf(stderr, "procreg-bench: done in %.1f s\n",
                bench_now() - t_begin);

    if (opt_csv && bench_report_csv(&rep, opt_csv, &error) < 0) {
        fprintf(stderr, "procreg-bench: --csv: %s\n", error->message);
        g_clear_error(&error);
        status = 1;
    }
    if (opt_json && bench_report_json(&rep, opt_json, &error) < 0) {
        fprintf(stderr, "procreg-bench: --json: %s\n", error->message);
        g_clear_error(&error);
        status = 1;
    }
    if (opt_plot) {
        if (bench_report_plot(&rep, opt_plot, &error) < 0) {
            fprintf(stderr, "procreg-bench: --plot: %s\n", error->message);
            g_clear_error(&error);
            status = 1;
        } else if (!opt_quiet) {
            fprintf(stderr, "procreg-bench: plots in %s (index.html)\n",
                    opt_plot);
        }
    }

    bench_scratch_remove();
    g_ptr_array_free(rep.results, TRUE);
    g_hash_table_destroy(order_of);
    g_free(rep.targets_joined);
    g_free(rep.keys_joined);
    g_free(rep.threads_joined);
    g_free(rep.dists_joined);
    g_free(rep.workloads_joined);
    g_free(rep.loadavg_end);
    g_ptr_array_free(wnames, TRUE);
    g_ptr_array_free(targets, TRUE);
    g_ptr_array_free(specs, TRUE);
    g_string_free(notes, TRUE);
    g_array_free(keys, TRUE);
    g_array_free(threads, TRUE);
    g_array_free(dists, TRUE);
    bench_sysinfo_clear(&rep.sys);
    return status;
}
