/*
 * A small timing run for the optimized decorator (meson benchmark, suite
 * 'optimized'; not part of `meson test`):
 *
 *   1. cached lookups: procreg_lookup_key() of N registered keys in a
 *      shuffled order, on ckht, ghash and optimized:inner=ghash (every
 *      lookup a cache hit: the TTL outlasts the run);
 *   2. find: procreg_find(ns, "group", <int>) matching 10 of N entries,
 *      through the index (optimized:inner=ghash) and by the scan
 *      (optimized:inner=ghash,index=off, which forwards to the core's scan
 *      over ghash; and plain ghash).
 *
 * Times are the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so
 * that time spent preempted by other load does not count; each figure is
 * the fastest of several repetitions, with the median next to it.
 *
 *   perf-optimized [N_KEYS (default 100000)] [REPS (default 7)] [SPEC]
 *
 * With SPEC, only the lookup loop of that spec runs (for a profiler).
 */
#include <procreg/procreg.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GROUP_MATCHES 10

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

typedef struct {
    double min, median;
} figure;

static figure summarise(double *v, int n)
{
    figure f;

    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    f.min = v[0];
    f.median = v[n / 2];
    return f;
}

static procreg *open_filled(const char *spec, procreg_key **keys, int n)
{
    procreg *reg = NULL;
    GError *error = NULL;

    if (procreg_open(spec, &reg, &error) != 0)
        g_error("open %s: %s", spec, error->message);
    for (int i = 0; i < n; i++) {
        GVariantDict d;

        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "group", "i", i % (n / GROUP_MATCHES));
        g_variant_dict_insert(&d, "role", "s", i % 2 ? "web" : "db");
        if (procreg_register_key(reg, keys[i], NULL, g_variant_dict_end(&d),
                                 NULL, &error) != 0)
            g_error("register: %s", error->message);
    }
    return reg;
}

/* One unrecorded pass over @order (fills a cache not filled yet). */
static void warm(procreg *reg, procreg_key **order, int n)
{
    procreg_owner o;

    for (int i = 0; i < n; i++)
        if (procreg_lookup_key(reg, order[i], &o, NULL) != 0)
            g_error("lookup failed");
}

/* ns per lookup of ten passes over @order. */
static double lookup_pass(procreg *reg, procreg_key **order, int n)
{
    procreg_owner o;
    double t0 = now_s();

    for (int pass = 0; pass < 10; pass++)
        for (int i = 0; i < n; i++)
            procreg_lookup_key(reg, order[i], &o, NULL);
    return (now_s() - t0) * 1e9 / (10.0 * n);
}

static figure time_lookups(procreg *reg, procreg_key **order, int n,
                           int reps)
{
    double *v = g_new(double, reps);

    warm(reg, order, n);
    for (int r = 0; r < reps; r++)
        v[r] = lookup_pass(reg, order, n);
    figure f = summarise(v, reps);
    g_free(v);
    return f;
}

static figure time_find(procreg *reg, int reps, int n)
{
    double *v = g_new(double, reps);

    for (int r = 0; r < reps; r++) {
        procreg_entry *out = NULL;
        size_t n_out = 0;
        GError *error = NULL;
        double t0 = now_s();

        if (procreg_find(reg, "production", "group",
                         g_variant_new_int32(r % (n / GROUP_MATCHES)), &out,
                         &n_out, &error) != 0)
            g_error("find: %s", error->message);
        v[r] = (now_s() - t0) * 1e6;
        if (n_out != GROUP_MATCHES)
            g_error("find returned %zu entries, not %d", n_out,
                    GROUP_MATCHES);
        procreg_entries_free(out, n_out);
    }
    figure f = summarise(v, reps);
    g_free(v);
    return f;
}

static void print_cache_figures(procreg *reg)
{
    GVariant *stats = NULL, *backend, *cache;
    guint64 hits = 0, misses = 0, evictions = 0;

    if (procreg_stats(reg, &stats, NULL) != 0)
        return;
    backend = g_variant_lookup_value(stats, "backend_stats", NULL);
    cache = backend ? g_variant_lookup_value(backend, "cache", NULL) : NULL;
    if (cache != NULL) {
        g_variant_lookup(cache, "hits", "t", &hits);
        g_variant_lookup(cache, "misses", "t", &misses);
        g_variant_lookup(cache, "evictions", "t", &evictions);
        printf("    (cache: %" G_GUINT64_FORMAT " hits, %" G_GUINT64_FORMAT
               " misses, %" G_GUINT64_FORMAT " evictions)\n",
               hits, misses, evictions);
        g_variant_unref(cache);
    }
    if (backend != NULL)
        g_variant_unref(backend);
    g_variant_unref(stats);
}

static void print_index_figures(procreg *reg)
{
    GVariant *stats = NULL, *backend, *index;
    guint64 entries = 0, postings = 0, bytes = 0;

    if (procreg_stats(reg, &stats, NULL) != 0)
        return;
    backend = g_variant_lookup_value(stats, "backend_stats", NULL);
    index = backend ? g_variant_lookup_value(backend, "index", NULL) : NULL;
    if (index != NULL) {
        g_variant_lookup(index, "entries", "t", &entries);
        g_variant_lookup(index, "postings", "t", &postings);
        g_variant_lookup(index, "bytes", "t", &bytes);
        printf("    (index: %" G_GUINT64_FORMAT " keys, %" G_GUINT64_FORMAT
               " postings, about %" G_GUINT64_FORMAT " bytes, %.0f per key)\n",
               entries, postings, bytes,
               entries ? (double)bytes / (double)entries : 0.0);
        g_variant_unref(index);
    }
    if (backend != NULL)
        g_variant_unref(backend);
    g_variant_unref(stats);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100000;
    int reps = argc > 2 ? atoi(argv[2]) : 7;
    procreg_key **keys, **order;
    char **names = procreg_backend_names();
    gboolean have_ckht = g_strv_contains((const char *const *)names, "ckht");
    GRand *rand = g_rand_new_with_seed(7);

    g_strfreev(names);
    if (n < 100 || reps < 1) {
        fprintf(stderr, "usage: %s [N_KEYS >= 100] [REPS >= 1]\n", argv[0]);
        return 2;
    }
    keys = g_new(procreg_key *, n);
    order = g_new(procreg_key *, n);
    for (int i = 0; i < n; i++) {
        char name[32];

        g_snprintf(name, sizeof name, "service-%d", i);
        if (procreg_key_new("production", name, &keys[i], NULL) != 0)
            g_error("key");
        order[i] = keys[i];
    }
    for (int i = n - 1; i > 0; i--) {
        int j = g_rand_int_range(rand, 0, i + 1);
        procreg_key *t = order[i];

        order[i] = order[j];
        order[j] = t;
    }

    if (argc > 3) {
        procreg *reg = open_filled(argv[3], keys, n);
        figure f = time_lookups(reg, order, n, reps);

        printf("%s: %.1f [%.1f] ns/op\n", argv[3], f.min, f.median);
        print_cache_figures(reg);
        procreg_close(reg);
        return 0;
    }
    printf("# %d keys, thread CPU time, fastest [median] of %d repetitions, "
           "load average at start: ", n, reps);
    {
        double load[3];

        if (getloadavg(load, 3) == 3)
            printf("%.2f %.2f %.2f\n", load[0], load[1], load[2]);
        else
            printf("unknown\n");
    }

    printf("cached lookups (procreg_lookup_key, ns/op):\n");
    char *cap = g_strdup_printf("optimized:inner=ghash,ttl_ms=3600000,"
                                "cache_capacity=%d", n);
    const char *lookup_specs[] = {have_ckht ? "ckht" : NULL, "ghash", cap,
                                  "optimized:inner=ghash"};
    /* The targets take turns within each repetition, so that a burst of
     * load elsewhere does not land on one target only. */
    size_t n_specs = G_N_ELEMENTS(lookup_specs);
    procreg *regs[G_N_ELEMENTS(lookup_specs)] = {NULL};
    double *times = g_new0(double, n_specs * (size_t)reps);
    for (size_t s = 0; s < n_specs; s++) {
        if (lookup_specs[s] == NULL)
            continue;
        regs[s] = open_filled(lookup_specs[s], keys, n);
        warm(regs[s], order, n);
    }
    for (int r = 0; r < reps; r++)
        for (size_t s = 0; s < n_specs; s++)
            if (regs[s] != NULL)
                times[s * (size_t)reps + (size_t)r] =
                    lookup_pass(regs[s], order, n);
    for (size_t s = 0; s < n_specs; s++) {
        if (regs[s] == NULL)
            continue;
        figure f = summarise(times + s * (size_t)reps, reps);

        printf("  %-60s %8.1f  [%.1f]\n", lookup_specs[s], f.min, f.median);
        print_cache_figures(regs[s]);
        procreg_close(regs[s]);
    }
    g_free(times);
    g_free(cap);

    printf("find, %d matches of %d (procreg_find, us/op):\n", GROUP_MATCHES,
           n);
    const char *find_specs[] = {"optimized:inner=ghash",
                                "optimized:inner=ghash,index=off", "ghash"};
    figure ff[G_N_ELEMENTS(find_specs)];
    for (size_t s = 0; s < G_N_ELEMENTS(find_specs); s++) {
        procreg *reg = open_filled(find_specs[s], keys, n);

        ff[s] = time_find(reg, reps, n);
        printf("  %-60s %10.1f  [%.1f]\n", find_specs[s], ff[s].min,
               ff[s].median);
        if (s == 0)
            print_index_figures(reg);
        procreg_close(reg);
    }
    printf("index speed-up: %.0fx over the scan through the decorator, "
           "%.0fx over ghash's scan (fastest runs)\n",
           ff[1].min / ff[0].min, ff[2].min / ff[0].min);

    for (int i = 0; i < n; i++)
        procreg_key_unref(keys[i]);
    g_free(keys);
    g_free(order);
    g_rand_free(rand);
    return 0;
}
