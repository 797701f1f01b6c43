/*
 * Lookup throughput of the etcd backend (and of optimized:inner=etcd when
 * that backend is built) against a single etcd member this program starts
 * on 127.0.0.1.  Prints one line per configuration:
 *
 *   etcd-lookup-bench [--etcd-bin=PATH] [--seconds=S] [--threads=N]
 *
 * Not a test: the figures depend on the machine (etcd fsyncs its WAL;
 * lookups are linearizable reads, one HTTP round trip each).
 */
#include "etcd-harness.h"

#include <procreg/procreg.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KEYS 100

typedef struct {
    procreg *reg;
    procreg_key **keys;
    gint64 until;
    guint64 done;
    guint64 failed;
    GArray *lat_ns; /* guint64 per lookup */
} worker;

static gpointer run(gpointer p)
{
    worker *w = p;
    guint i = 0;
    /* Every 64th lookup is timed on its own (clock_gettime costs as much
     * as a cached lookup); the deadline is checked every 64 too. */
    while (g_get_monotonic_time() < w->until) {
        for (int j = 0; j < 64; j++, i++) {
            procreg_owner o;
            struct timespec a, b;
            if (j == 0)
                clock_gettime(CLOCK_MONOTONIC, &a);
            int rc = procreg_lookup_key(w->reg, w->keys[i % KEYS], &o, NULL);
            if (j == 0) {
                clock_gettime(CLOCK_MONOTONIC, &b);
                guint64 ns = (guint64)(b.tv_sec - a.tv_sec) * 1000000000u +
                             (guint64)(b.tv_nsec - a.tv_nsec);
                g_array_append_val(w->lat_ns, ns);
            }
            if (rc == 0)
                w->done++;
            else
                w->failed++;
        }
    }
    return NULL;
}

static gint cmp_u64(gconstpointer a, gconstpointer b)
{
    guint64 x = *(const guint64 *)a, y = *(const guint64 *)b;
    return x < y ? -1 : x > y;
}

static void bench(const char *label, const char *spec, int threads,
                  double seconds)
{
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0) {
        fprintf(stderr, "%s: %s\n", spec, err->message);
        exit(1);
    }
    procreg_key *keys[KEYS];
    for (int i = 0; i < KEYS; i++) {
        char name[32];
        g_snprintf(name, sizeof name, "svc-%03d", i);
        procreg_key_new("bench", name, &keys[i], NULL);
        if (procreg_register_key(reg, keys[i], NULL, NULL, NULL, &err) != 0) {
            fprintf(stderr, "register: %s\n", err->message);
            exit(1);
        }
    }
    /* Warm up: connections, caches. */
    for (int i = 0; i < KEYS; i++) {
        procreg_owner o;
        procreg_lookup_key(reg, keys[i], &o, NULL);
    }
    worker *w = g_new0(worker, threads);
    GThread **th = g_new0(GThread *, threads);
    gint64 t0 = g_get_monotonic_time();
    gint64 until = t0 + (gint64)(seconds * G_USEC_PER_SEC);
    for (int t = 0; t < threads; t++) {
        w[t] = (worker){.reg = reg, .keys = keys, .until = until,
                        .lat_ns = g_array_new(FALSE, FALSE, sizeof(guint64))};
        th[t] = g_thread_new("bench", run, &w[t]);
    }
    guint64 done = 0, failed = 0;
    GArray *all = g_array_new(FALSE, FALSE, sizeof(guint64));
    for (int t = 0; t < threads; t++) {
        g_thread_join(th[t]);
        done += w[t].done;
        failed += w[t].failed;
        g_array_append_vals(all, w[t].lat_ns->data, w[t].lat_ns->len);
        g_array_unref(w[t].lat_ns);
    }
    double took = (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC;
    g_array_sort(all, cmp_u64);
    guint64 p50 = all->len ? g_array_index(all, guint64, all->len / 2) : 0;
    guint64 p99 = all->len ? g_array_index(all, guint64, all->len * 99 / 100) : 0;
    printf("%-28s threads=%d lookups=%" G_GUINT64_FORMAT " failed=%"
           G_GUINT64_FORMAT " %.0f lookups/s p50=%.2f us p99=%.2f us\n",
           label, threads, done, failed, (double)done / took, p50 / 1000.0,
           p99 / 1000.0);
    fflush(stdout);
    g_array_unref(all);
    g_free(th);
    g_free(w);
    for (int i = 0; i < KEYS; i++)
        procreg_key_unref(keys[i]);
    procreg_close(reg);
}

int main(int argc, char **argv)
{
    etcd_harness_env(argv);
    etcd_harness_args(&argc, argv);
    double seconds = 2.0;
    int threads = 4;
    for (int i = 1; i < argc; i++) {
        if (g_str_has_prefix(argv[i], "--seconds="))
            seconds = g_ascii_strtod(argv[i] + 10, NULL);
        else if (g_str_has_prefix(argv[i], "--threads="))
            threads = atoi(argv[i] + 10);
    }
    if (seconds <= 0 || threads <= 0) {
        fprintf(stderr, "usage: %s [--etcd-bin=PATH] [--seconds=S] "
                        "[--threads=N]\n", argv[0]);
        return 2;
    }
    etcd_cluster c;
    etcd_cluster_start_or_exit(&c, 1);
    char *url = etcd_member_url(&c, 0);
    char *tag = etcd_random_tag();
    char **names = procreg_backend_names();
    bool have_optimized = g_strv_contains((const char *const *)names,
                                          "optimized");
    g_strfreev(names);
    const char *modes[] = {"linearizable", "serializable"};
    int run_no = 0;
    for (int m = 0; m < 2; m++) {
        char *label = g_strdup_printf("etcd (%s)", modes[m]);
        for (int t = 0; t < 2; t++) {
            char *spec = g_strdup_printf("etcd:endpoints=[%s],prefix=/bench/%s/"
                                         "%d,consistency=%s",
                                         url, tag, run_no++, modes[m]);
            bench(label, spec, t == 0 ? 1 : threads, seconds);
            g_free(spec);
        }
        g_free(label);
    }
    if (have_optimized) {
        for (int t = 0; t < 2; t++) {
            char *spec = g_strdup_printf("optimized:inner=[etcd:endpoints=[%s],"
                                         "prefix=/bench/%s/%d]",
                                         url, tag, run_no++);
            bench("optimized:inner=etcd", spec, t == 0 ? 1 : threads, seconds);
            g_free(spec);
        }
    } else {
        printf("optimized:inner=etcd         not built\n");
    }
    etcd_cluster_destroy(&c);
    g_free(url);
    g_free(tag);
    return 0;
}
