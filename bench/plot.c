/*
 * --plot DIR: gnuplot data and one script (plot.gp) that draws, for each
 * (workload, keys, dist):
 *   - throughput-<workload>-<keys>-<dist>.{svg,png}: Mops/s (median, bars
 *     min..max) vs threads, one line per target — the first picture;
 *   - latency-<workload>-<keys>-<dist>.{svg,png}: p50 / p99 / p99.9 per
 *     target at the smallest thread count, log scale;
 *   - cpu-<workload>-<keys>-<dist>.{svg,png}: CPU ns per op per target, a
 *     bar per thread count, log scale (steady on a loaded machine);
 * and index.html showing them all.  gnuplot runs when it is installed.
 */
#include "bench.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <limits.h>
#include <math.h>

typedef struct {
    const bench_workload *wl;
    size_t keys;
    const char *dist;
} plot_group;

static char *group_stem(const plot_group *g)
{
    return g_strdup_printf("%s-%zu-%s", g->wl->name, g->keys,
                           strcmp(g->dist, "-") == 0 ? "all" : g->dist);
}

/* gnuplot single-quoted string: '' stands for a quote. */
static void gp_quote(GString *s, const char *v)
{
    g_string_append_c(s, '\'');
    for (const char *c = v; *c; c++) {
        if (*c == '\'')
            g_string_append_c(s, '\'');
        g_string_append_c(s, *c);
    }
    g_string_append_c(s, '\'');
}

static bool in_group(const bench_result *r, const plot_group *g)
{
    return !r->skipped && r->workload == g->wl && r->keys == g->keys &&
           strcmp(r->dist, g->dist) == 0;
}

static void terminals(GString *gp, const char *stem, const char *kind,
                      const char *plot_cmds)
{
    g_string_append_printf(gp,
        "set terminal svg size 960,600 dynamic noenhanced font 'Sans,13' "
        "background rgb 'white'\n"
        "set output '%s-%s.svg'\n%s"
        "set terminal pngcairo size 1200,750 noenhanced font 'Sans,13' "
        "background rgb 'white'\n"
        "set output '%s-%s.png'\n%s"
        "unset output\n\n",
        kind, stem, plot_cmds, kind, stem, plot_cmds);
}

/* Bottom margin (character heights) for x labels rotated by 25 degrees. */
static int label_margin(GPtrArray *targets)
{
    size_t longest = 0;
    for (guint t = 0; t < targets->len; t++)
        longest = MAX(longest, strlen(targets->pdata[t]));
    return 3 + (int)((double)longest * 0.22 + 0.5);
}

/* The power of ten below @v (with room for the smallest bar to show). */
static double log_floor(double v)
{
    if (!(v > 0) || isinf(v))
        return 1;
    return pow(10, floor(log10(v * 0.8)));
}

/* Distinct colours: greys for the baselines, strong ones for backends. */
static const char *colour(const char *label, guint index)
{
    static const char *const strong[] = {
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd",
        "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    };
    if (strcmp(label, "raw-ckht") == 0)
        return "#404040";
    if (strcmp(label, "raw-ghash") == 0)
        return "#a0a0a0";
    return strong[index % G_N_ELEMENTS(strong)];
}

/* The thread counts measured in @g, in the order they first appear. */
static GArray *group_threads(const bench_report *rep, const plot_group *g)
{
    GArray *thr = g_array_new(FALSE, FALSE, sizeof(int));
    for (guint i = 0; i < rep->results->len; i++) {
        const bench_result *r = rep->results->pdata[i];
        if (!in_group(r, g))
            continue;
        bool seen = false;
        for (guint j = 0; j < thr->len; j++)
            seen |= g_array_index(thr, int, j) == r->threads;
        if (!seen)
            g_array_append_val(thr, r->threads);
    }
    return thr;
}

static void write_throughput(const bench_report *rep, const plot_group *g,
                             const char *stem, GPtrArray *targets,
                             GString *gp, GString *data)
{
    GString *cmd = g_string_new(NULL);
    char *title = g_strdup_printf(
        "%s: throughput vs threads (%zu keys%s%s)\\n%s, %d cores; median of "
        "%d rep%s, bars min..max",
        g->wl->name, g->keys, strcmp(g->dist, "-") ? ", " : "",
        strcmp(g->dist, "-") ? g->dist : "", rep->sys.cpu_model,
        rep->sys.cores, rep->params->reps, rep->params->reps == 1 ? "" : "s");
    g_string_append(cmd, "set title \"");
    g_string_append(cmd, title);
    g_string_append(cmd, "\"\nset xlabel 'threads'\nset ylabel 'Mops/s'\n"
                         "set yrange [0:*]\nset grid\n"
                         "set key outside right top\nset xtics (");
    g_free(title);
    /* x tics at the thread counts measured */
    GArray *thr = group_threads(rep, g);
    int tmax = 1;
    for (guint j = 0; j < thr->len; j++) {
        int t = g_array_index(thr, int, j);
        tmax = MAX(tmax, t);
        g_string_append_printf(cmd, "%s%d", j ? "," : "", t);
    }
    g_string_append_printf(cmd, ")\nset xrange [0.5:%f]\n", tmax + 0.5);
    g_array_free(thr, TRUE);
    g_string_append(cmd, "plot ");
    for (guint t = 0; t < targets->len; t++) {
        const char *label = targets->pdata[t];
        g_string_append_printf(data, "# %s\n", label);
        for (guint i = 0; i < rep->results->len; i++) {
            const bench_result *r = rep->results->pdata[i];
            if (in_group(r, g) && strcmp(r->target, label) == 0)
                g_string_append_printf(data, "%d %.6g %.6g %.6g\n",
                                       r->threads, r->mops_median,
                                       r->mops_min, r->mops_max);
        }
        g_string_append(data, "\n\n");
        /* Baselines dashed grey, backends solid colours. */
        bool base = strncmp(label, "raw-", 4) == 0;
        g_string_append_printf(cmd, "%s'throughput-%s.dat' index %u using "
                                    "1:2:3:4 with yerrorlines lw 2 pt %d ps 1.2 "
                                    "dt %d lc rgb '%s' title ",
                               t ? ", \\\n     " : "", stem, t,
                               base ? 6 : 7, base ? 2 : 1,
                               colour(label, t));
        gp_quote(cmd, label);
    }
    g_string_append(cmd, "\n");
    terminals(gp, stem, "throughput", cmd->str);
    g_string_append(gp, "reset\n");
    g_string_free(cmd, TRUE);
}

static void write_latency(const bench_report *rep, const plot_group *g,
                          const char *stem, GPtrArray *targets, GString *gp,
                          GString *data)
{
    int tmin = INT_MAX;
    for (guint i = 0; i < rep->results->len; i++) {
        const bench_result *r = rep->results->pdata[i];
        if (in_group(r, g))
            tmin = MIN(tmin, r->threads);
    }
    g_string_append(data, "# target p50 p99 p99.9 (ns)\n");
    int rows = 0;
    double vmin = INFINITY;
    for (guint t = 0; t < targets->len; t++) {
        for (guint i = 0; i < rep->results->len; i++) {
            const bench_result *r = rep->results->pdata[i];
            if (in_group(r, g) && r->threads == tmin &&
                strcmp(r->target, targets->pdata[t]) == 0 && r->samples) {
                g_string_append_c(data, '"');
                g_string_append(data, r->target);
                g_string_append_printf(data, "\" %.6g %.6g %.6g\n", r->p50,
                                       r->p99, r->p999);
                if (r->p50 > 0)
                    vmin = MIN(vmin, r->p50);
                rows++;
            }
        }
    }
    GString *cmd = g_string_new(NULL);
    g_string_append_printf(cmd,
        "set title \"%s: latency percentiles, %d thread%s (%zu keys%s%s)\\n"
        "timed alone with %s; log scale\"\n"
        "set ylabel 'ns per op'\nset logscale y\nset grid ytics\n"
        "set format y '%%.0s%%c'\n"
        "set style data histograms\n"
        "set style histogram clustered gap 1\n"
        "set style fill solid 0.85 border -1\nset boxwidth 0.9\n"
        "set xtics rotate by 25 right\nset key outside right top\n"
        "set bmargin %d\nset xrange [-0.6:%d.4]\nset yrange [%g:*]\n"
        "plot 'latency-%s.dat' using 2:xtic(1) title 'p50', "
        "'' using 3 title 'p99', '' using 4 title 'p99.9'\n",
        g->wl->name, tmin, tmin == 1 ? "" : "s", g->keys,
        strcmp(g->dist, "-") ? ", " : "", strcmp(g->dist, "-") ? g->dist : "",
        bench_clock.source, label_margin(targets), rows - 1, log_floor(vmin),
        stem);
    terminals(gp, stem, "latency", cmd->str);
    g_string_append(gp, "reset\n");
    g_string_free(cmd, TRUE);
}

/* CPU ns per op of each target, one bar per thread count: the cost of
 * an op, which a loaded machine does not blur as it does throughput. */
static void write_cpu(const bench_report *rep, const plot_group *g,
                      const char *stem, GPtrArray *targets, GString *gp,
                      GString *data)
{
    GArray *thr = group_threads(rep, g);
    g_string_append(data, "# target");
    for (guint j = 0; j < thr->len; j++)
        g_string_append_printf(data, " T=%d", g_array_index(thr, int, j));
    g_string_append(data, " (cpu ns per op)\n");
    int rows = 0;
    double vmin = INFINITY;
    for (guint t = 0; t < targets->len; t++) {
        GString *line = g_string_new(NULL);
        bool any = false;
        g_string_append_printf(line, "\"%s\"", (char *)targets->pdata[t]);
        for (guint j = 0; j < thr->len; j++) {
            double v = NAN;
            for (guint i = 0; i < rep->results->len; i++) {
                const bench_result *r = rep->results->pdata[i];
                if (in_group(r, g) && strcmp(r->target, targets->pdata[t]) == 0 &&
                    r->threads == g_array_index(thr, int, j))
                    v = r->cpu_ns_per_op;
            }
            any |= !isnan(v);
            if (!isnan(v) && v > 0)
                vmin = MIN(vmin, v);
            if (isnan(v))
                g_string_append(line, " NaN");
            else
                g_string_append_printf(line, " %.6g", v);
        }
        if (any) {
            g_string_append_printf(data, "%s\n", line->str);
            rows++;
        }
        g_string_free(line, TRUE);
    }
    if (rows > 0) {
        GString *cmd = g_string_new(NULL);
        g_string_append_printf(cmd,
            "set title \"%s: CPU time per op (%zu keys%s%s)\\n"
            "CPU time of the worker threads / ops, median of %d rep%s; log "
            "scale\"\n"
            "set ylabel 'CPU ns per op'\nset logscale y\nset grid ytics\n"
            "set format y '%%.0s%%c'\n"
            "set style data histograms\n"
            "set style histogram clustered gap 1\n"
            "set style fill solid 0.85 border -1\nset boxwidth 0.9\n"
            "set xtics rotate by 25 right\nset key outside right top\n"
            "set bmargin %d\nset xrange [-0.6:%d.4]\nset yrange [%g:*]\n",
            g->wl->name, g->keys, strcmp(g->dist, "-") ? ", " : "",
            strcmp(g->dist, "-") ? g->dist : "", rep->params->reps,
            rep->params->reps == 1 ? "" : "s", label_margin(targets), rows - 1,
            log_floor(vmin));
        g_string_append(cmd, "plot ");
        for (guint j = 0; j < thr->len; j++)
            g_string_append_printf(cmd,
                                   "%s'cpu-%s.dat' using %u%s title '%d "
                                   "thread%s'",
                                   j ? ", " : "", stem, j + 2,
                                   j ? "" : ":xtic(1)",
                                   g_array_index(thr, int, j),
                                   g_array_index(thr, int, j) == 1 ? "" : "s");
        g_string_append(cmd, "\n");
        terminals(gp, stem, "cpu", cmd->str);
        g_string_append(gp, "reset\n");
        g_string_free(cmd, TRUE);
    }
    g_array_free(thr, TRUE);
}

static int write_file(const char *dir, const char *name, const GString *s,
                      GError **error)
{
    char *path = g_build_filename(dir, name, NULL);
    gboolean ok = g_file_set_contents(path, s->str, (gssize)s->len, error);
    g_free(path);
    return ok ? 0 : -1;
}

int bench_report_plot(const bench_report *rep, const char *dir,
                      GError **error)
{
    if (g_mkdir_with_parents(dir, 0755) < 0) {
        int e = errno;
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                    "cannot create %s: %s", dir, g_strerror(e));
        return -1;
    }
    GArray *groups = g_array_new(FALSE, FALSE, sizeof(plot_group));
    for (int wid = 0; wid < BENCH_W_COUNT; wid++) {
        for (guint i = 0; i < rep->results->len; i++) {
            const bench_result *r = rep->results->pdata[i];
            if (r->skipped || r->workload != &bench_workloads[wid])
                continue;
            bool seen = false;
            for (guint j = 0; j < groups->len && !seen; j++) {
                plot_group *g = &g_array_index(groups, plot_group, j);
                seen = g->wl == r->workload && g->keys == r->keys &&
                       strcmp(g->dist, r->dist) == 0;
            }
            if (!seen) {
                plot_group g = {r->workload, r->keys, r->dist};
                g_array_append_val(groups, g);
            }
        }
    }
    GString *gp = g_string_new("# Generated by procreg-bench; run: gnuplot plot.gp\n");
    GString *html = g_string_new(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        "<title>procreg-bench</title></head>\n<body style=\"font-family:sans-serif\">\n"
        "<h1>procreg-bench</h1>\n<pre>");
    g_string_append_printf(html, "%s\n%s, %d cores\n", rep->sys.date,
                           rep->sys.cpu_model, rep->sys.cores);
    char *cmd = g_markup_escape_text(rep->sys.command, -1);
    g_string_append_printf(html, "%s</pre>\n", cmd);
    g_free(cmd);
    int rc = 0;
    for (guint j = 0; j < groups->len && rc == 0; j++) {
        plot_group *g = &g_array_index(groups, plot_group, j);
        GPtrArray *targets = g_ptr_array_new();
        for (guint i = 0; i < rep->results->len; i++) {
            const bench_result *r = rep->results->pdata[i];
            if (!in_group(r, g))
                continue;
            bool seen = false;
            for (guint t = 0; t < targets->len && !seen; t++)
                seen = strcmp(targets->pdata[t], r->target) == 0;
            if (!seen)
                g_ptr_array_add(targets, r->target);
        }
        char *stem = group_stem(g);
        GString *tdata = g_string_new(NULL), *ldata = g_string_new(NULL);
        GString *cdata = g_string_new(NULL);
        write_throughput(rep, g, stem, targets, gp, tdata);
        write_latency(rep, g, stem, targets, gp, ldata);
        write_cpu(rep, g, stem, targets, gp, cdata);
        char *tname = g_strdup_printf("throughput-%s.dat", stem);
        char *lname = g_strdup_printf("latency-%s.dat", stem);
        char *cname = g_strdup_printf("cpu-%s.dat", stem);
        rc = write_file(dir, tname, tdata, error);
        if (rc == 0)
            rc = write_file(dir, lname, ldata, error);
        if (rc == 0)
            rc = write_file(dir, cname, cdata, error);
        g_string_append_printf(html,
            "<h2>%s (%zu keys, %s)</h2>\n<img src=\"throughput-%s.svg\" "
            "width=\"960\"><br>\n<img src=\"cpu-%s.svg\" width=\"960\"><br>\n"
            "<img src=\"latency-%s.svg\" width=\"960\">\n",
            g->wl->name, g->keys, g->dist, stem, stem, stem);
        g_free(tname);
        g_free(lname);
        g_free(cname);
        g_string_free(cdata, TRUE);
        g_string_free(tdata, TRUE);
        g_string_free(ldata, TRUE);
        g_free(stem);
        g_ptr_array_free(targets, TRUE);
    }
    g_string_append(html, "</body></html>\n");
    if (rc == 0)
        rc = write_file(dir, "plot.gp", gp, error);
    if (rc == 0)
        rc = write_file(dir, "index.html", html, error);
    g_string_free(gp, TRUE);
    g_string_free(html, TRUE);
    g_array_free(groups, TRUE);
    if (rc < 0)
        return rc;

    char *gnuplot = g_find_program_in_path("gnuplot");
    if (!gnuplot) {
        fprintf(stderr, "procreg-bench: gnuplot not found; wrote %s/plot.gp "
                        "(install gnuplot-nox, then: cd %s && gnuplot plot.gp)\n",
                dir, dir);
        return 0;
    }
    char *argv[] = {gnuplot, (char *)"plot.gp", NULL};
    char *err_out = NULL;
    int status = 0;
    gboolean ok = g_spawn_sync(dir, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                               NULL, &err_out, &status, error);
    g_free(gnuplot);
    if (ok && !g_spawn_check_wait_status(status, error)) {
        g_prefix_error(error, "gnuplot failed (%s): ",
                       err_out && *err_out ? g_strstrip(err_out) : "no output");
        ok = FALSE;
    }
    g_free(err_out);
    return ok ? 0 : -1;
}
