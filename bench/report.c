/* The results as a table on stdout, and as CSV and JSON files. */
#include "bench.h"

#include <math.h>

static bool same_cell(const bench_result *a, const bench_result *b)
{
    return a->workload == b->workload && a->keys == b->keys &&
           strcmp(a->dist, b->dist) == 0 && a->threads == b->threads;
}

static const bench_result *baseline(const bench_report *rep,
                                    const bench_result *r,
                                    bench_target_kind kind)
{
    for (guint i = 0; i < rep->results->len; i++) {
        const bench_result *b = rep->results->pdata[i];
        if (b->target_kind == kind && !b->skipped && same_cell(b, r))
            return b;
    }
    return NULL;
}

void bench_report_ratios(bench_report *rep)
{
    for (guint i = 0; i < rep->results->len; i++) {
        bench_result *r = rep->results->pdata[i];
        const bench_result *c = baseline(rep, r, BENCH_TARGET_RAW_CKHT);
        const bench_result *g = baseline(rep, r, BENCH_TARGET_RAW_GHASH);
        /* A time ratio: this target's time per op over the baseline's. */
        r->ratio_raw_ckht = c && !r->skipped && r->mops_median > 0
                                ? c->mops_median / r->mops_median
                                : NAN;
        r->ratio_raw_ghash = g && !r->skipped && r->mops_median > 0
                                 ? g->mops_median / r->mops_median
                                 : NAN;
        r->ratio_cpu_raw_ckht = c && !r->skipped
                                    ? r->cpu_ns_per_op / c->cpu_ns_per_op
                                    : NAN;
        r->ratio_cpu_raw_ghash = g && !r->skipped
                                     ? r->cpu_ns_per_op / g->cpu_ns_per_op
                                     : NAN;
    }
}

/* A duration given in ns: plain ns below 10 us, else with a unit. */
static const char *dur(char *buf, size_t size, double v)
{
    if (isnan(v))
        g_strlcpy(buf, "-", size);
    else if (v < 10)
        g_snprintf(buf, size, "%.1f", v);
    else if (v < 1e4)
        g_snprintf(buf, size, "%.0f", v);
    else if (v < 1e6)
        g_snprintf(buf, size, "%.3gus", v / 1e3);
    else if (v < 1e9)
        g_snprintf(buf, size, "%.3gms", v / 1e6);
    else
        g_snprintf(buf, size, "%.3gs", v / 1e9);
    return buf;
}

/* A rate given in Mops/s, written as ops/s with an SI suffix. */
static const char *rate(char *buf, size_t size, double mops)
{
    double v = mops * 1e6;
    if (isnan(v))
        g_strlcpy(buf, "-", size);
    else if (v >= 1e6)
        g_snprintf(buf, size, "%.3gM", v / 1e6);
    else if (v >= 1e3)
        g_snprintf(buf, size, "%.3gk", v / 1e3);
    else
        g_snprintf(buf, size, "%.3g", v);
    return buf;
}

static const char *ratio(char *buf, size_t size, double v)
{
    if (isnan(v))
        g_strlcpy(buf, "-", size);
    else if (v >= 1000)
        g_snprintf(buf, size, "%.0f", v);
    else
        g_snprintf(buf, size, "%.3g", v);
    return buf;
}

void bench_report_header(FILE *out, const bench_report *rep)
{
    const bench_params *p = rep->params;
    fprintf(out, "# procreg-bench %s (%s)\n", PROCREG_BENCH_VERSION,
            PROCREG_BENCH_GIT);
    fprintf(out, "# date:    %s\n", rep->sys.date);
    fprintf(out, "# command: %s\n", rep->sys.command);
    fprintf(out, "# machine: %s, %d cores online, %s; load average %s at "
                 "the start\n",
            rep->sys.cpu_model, rep->sys.cores, rep->sys.kernel,
            rep->sys.loadavg);
    fprintf(out, "# profile: %s; keys %s; threads %s; dist %s (zipf s=%.2f)\n",
            rep->profile, rep->keys_joined, rep->threads_joined,
            rep->dists_joined, BENCH_ZIPF_S);
    if (p->ops)
        fprintf(out, "# runs:    %d rep%s of %" G_GUINT64_FORMAT
                     " ops per thread after a %.3g s warm-up; median [min .. max]\n",
                p->reps, p->reps == 1 ? "" : "s", p->ops, p->warmup);
    else
        fprintf(out, "# runs:    %d rep%s of %.3g s after a %.3g s warm-up; median [min .. max]\n",
                p->reps, p->reps == 1 ? "" : "s", p->seconds, p->warmup);
    fprintf(out, "# latency: 1 op in %u (every op of list-ns and find) timed alone with %s",
            p->sample_every, bench_clock.source);
    if (bench_use_tsc)
        fprintf(out, " (%.3f GHz, calibrated)", bench_clock.ticks_per_ns);
    fprintf(out, "; timer overhead %.0f ns subtracted\n",
            (double)bench_clock.overhead_ticks / bench_clock.ticks_per_ns);
    fprintf(out, "# mixed:   %u/%u/%u lookup/register/unregister\n",
            p->mix_lookup, p->mix_register, p->mix_unregister);
    fprintf(out, "# threads: %s; each has its own random stream; all start at "
                 "a barrier\n",
            p->pin ? "worker i pinned to the i-th allowed CPU" : "not pinned");
    fprintf(out, "# targets: %s\n", rep->targets_joined);
    fprintf(out, "# cpu ns = CPU time of the worker threads / ops (median of "
                 "the reps): the cost of an op whatever else runs on the "
                 "machine; waiting for a lock or the disk is not CPU time\n");
    fprintf(out, "# ns/op = threads / throughput (time per op in one thread); "
                 "x ckht, x ghash = time per op relative to the baseline "
                 "raw-ckht, raw-ghash (1.50 = 50%% slower)\n"
                 "# memory per entry (load): RSS = anonymous RSS delta, heap = "
                 "malloc delta (mallinfo2), backend = procreg_stats "
                 "memory_bytes; in a fresh process, no metadata\n");
}

static int label_width(const bench_report *rep)
{
    int w = 6;
    for (guint i = 0; i < rep->results->len; i++) {
        const bench_result *r = rep->results->pdata[i];
        w = MAX(w, (int)strlen(r->target));
    }
    return w;
}

void bench_report_table(FILE *out, const bench_report *rep)
{
    int lw = label_width(rep);
    char a[32], b[32], c[32], d[32], e[32], f[32], g[32], h[32], k[32];
    for (int wid = 0; wid < BENCH_W_COUNT; wid++) {
        const bench_workload *wl = &bench_workloads[wid];
        bool any = false;
        for (guint i = 0; i < rep->results->len && !any; i++)
            any = ((bench_result *)rep->results->pdata[i])->workload == wl;
        if (!any)
            continue;
        fprintf(out, "\n== %s: %s (op: %s)\n", wl->name, wl->summary,
                wl->unit);
        fprintf(out, "%8s %-7s %3s  %-*s %7s %-17s %8s %8s %8s %8s %8s %7s %7s  %s\n",
                "keys", "dist", "thr", lw, "target", "ops/s", " [min .. max]",
                "ns/op", "cpu ns", "p50", "p99", "p99.9", "x ckht", "x ghash",
                "");
        const bench_result *prev = NULL;
        for (guint i = 0; i < rep->results->len; i++) {
            const bench_result *r = rep->results->pdata[i];
            if (r->workload != wl)
                continue;
            if (prev && (prev->keys != r->keys ||
                         strcmp(prev->dist, r->dist) != 0 ||
                         prev->threads != r->threads))
                fputc('\n', out);
            prev = r;
            if (r->skipped) {
                fprintf(out, "%8zu %-7s %3d  %-*s skipped: %s\n", r->keys,
                        r->dist, r->threads, lw, r->target, r->skipped);
                continue;
            }
            char range[48];
            g_snprintf(range, sizeof range, " [%s .. %s]",
                       rate(a, sizeof a, r->mops_min),
                       rate(b, sizeof b, r->mops_max));
            GString *extra = g_string_new(NULL);
            if (!isnan(r->items_per_op))
                g_string_append_printf(extra, "%.1f entries/op",
                                       r->items_per_op);
            if (!isnan(r->ratio_reference))
                g_string_append_printf(
                    extra, r->workload->id == BENCH_W_GROUP_MEMBERS
                               ? "%.3g x a lookup_entry's CPU time"
                               : "%.3g x the CPU time without a handler",
                    r->ratio_reference);
            if (!isnan(r->mem_rss_per_entry))
                g_string_append_printf(extra, "B/entry: RSS %.0f",
                                       r->mem_rss_per_entry);
            if (!isnan(r->mem_heap_per_entry))
                g_string_append_printf(extra, ", heap %.0f",
                                       r->mem_heap_per_entry);
            if (!isnan(r->mem_backend_per_entry))
                g_string_append_printf(extra, ", backend %.0f",
                                       r->mem_backend_per_entry);
            if (r->errors)
                g_string_append_printf(extra, "%sWRONG RESULTS: %" G_GUINT64_FORMAT
                                       " (%s)", extra->len ? "; " : "",
                                       r->errors, r->error_example);
            char cpu[32];
            fprintf(out, "%8zu %-7s %3d  %-*s %7s %-17s %8s %8s %8s %8s %8s %7s %7s  %s\n",
                    r->keys, r->dist, r->threads, lw, r->target,
                    rate(c, sizeof c, r->mops_median), range,
                    dur(d, sizeof d, r->ns_per_op),
                    dur(cpu, sizeof cpu, r->cpu_ns_per_op),
                    dur(e, sizeof e, r->p50),
                    dur(f, sizeof f, r->p99), dur(g, sizeof g, r->p999),
                    ratio(h, sizeof h, r->ratio_raw_ckht),
                    ratio(k, sizeof k, r->ratio_raw_ghash), extra->str);
            g_string_free(extra, TRUE);
        }
    }
}

/* ------------------------------------------------------------------------ */

static void csv_str(GString *s, const char *v)
{
    g_string_append_c(s, '"');
    for (const char *c = v ? v : ""; *c; c++) {
        if (*c == '"')
            g_string_append_c(s, '"');
        g_string_append_c(s, *c);
    }
    g_string_append_c(s, '"');
}

static void csv_num(GString *s, double v)
{
    if (!isnan(v))
        g_string_append_printf(s, "%.6g", v);
}

static const char *kind_name(bench_target_kind k)
{
    return k == BENCH_TARGET_PROCREG ? "procreg" : "baseline";
}

int bench_report_csv(const bench_report *rep, const char *path,
                     GError **error)
{
    GString *s = g_string_new(
        "workload,target,kind,keys,dist,threads,reps,mops_median,mops_min,"
        "mops_max,mops_reps,ns_per_op,cpu_ns_per_op,p50_ns,p99_ns,p999_ns,latency_samples,"
        "ratio_raw_ckht,ratio_raw_ghash,ratio_cpu_raw_ckht,ratio_cpu_raw_ghash,"
        "ratio_without_handler,entries_per_op,rss_bytes_per_entry,"
        "heap_bytes_per_entry,backend_bytes_per_entry,errors,skipped\n");
    for (guint i = 0; i < rep->results->len; i++) {
        const bench_result *r = rep->results->pdata[i];
        csv_str(s, r->workload->name);
        g_string_append_c(s, ',');
        csv_str(s, r->target);
        g_string_append_printf(s, ",%s,%zu,%s,%d,%d,", kind_name(r->target_kind),
                               r->keys, r->dist, r->threads, r->reps);
        if (!r->skipped) {
            csv_num(s, r->mops_median);
            g_string_append_c(s, ',');
            csv_num(s, r->mops_min);
            g_string_append_c(s, ',');
            csv_num(s, r->mops_max);
            g_string_append_c(s, ',');
            g_string_append_c(s, '"');
            for (int j = 0; j < r->reps; j++)
                g_string_append_printf(s, "%s%.6g", j ? ";" : "", r->mops[j]);
            g_string_append_c(s, '"');
        } else {
            g_string_append(s, ",,,");
        }
        double v[] = {r->ns_per_op, r->cpu_ns_per_op, r->p50, r->p99,
                      r->p999};
        for (size_t j = 0; j < G_N_ELEMENTS(v); j++) {
            g_string_append_c(s, ',');
            if (!r->skipped)
                csv_num(s, v[j]);
        }
        g_string_append_printf(s, ",%" G_GUINT64_FORMAT ",", r->samples);
        csv_num(s, r->ratio_raw_ckht);
        g_string_append_c(s, ',');
        csv_num(s, r->ratio_raw_ghash);
        g_string_append_c(s, ',');
        csv_num(s, r->ratio_cpu_raw_ckht);
        g_string_append_c(s, ',');
        csv_num(s, r->ratio_cpu_raw_ghash);
        g_string_append_c(s, ',');
        csv_num(s, r->ratio_reference);
        g_string_append_c(s, ',');
        csv_num(s, r->items_per_op);
        g_string_append_c(s, ',');
        csv_num(s, r->mem_rss_per_entry);
        g_string_append_c(s, ',');
        csv_num(s, r->mem_heap_per_entry);
        g_string_append_c(s, ',');
        csv_num(s, r->mem_backend_per_entry);
        g_string_append_printf(s, ",%" G_GUINT64_FORMAT ",", r->errors);
        csv_str(s, r->skipped);
        g_string_append_c(s, '\n');
    }
    gboolean ok = g_file_set_contents(path, s->str, (gssize)s->len, error);
    g_string_free(s, TRUE);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------------------ */

static void json_str(GString *s, const char *v)
{
    if (!v) {
        g_string_append(s, "null");
        return;
    }
    g_string_append_c(s, '"');
    for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
        switch (*c) {
        case '"':
            g_string_append(s, "\\\"");
            break;
        case '\\':
            g_string_append(s, "\\\\");
            break;
        case '\n':
            g_string_append(s, "\\n");
            break;
        case '\t':
            g_string_append(s, "\\t");
            break;
        default:
            if (*c < 0x20)
                g_string_append_printf(s, "\\u%04x", *c);
            else
                g_string_append_c(s, (char)*c);
        }
    }
    g_string_append_c(s, '"');
}

static void json_num(GString *s, double v)
{
    if (isnan(v) || isinf(v))
        g_string_append(s, "null");
    else
        g_string_append_printf(s, "%.6g", v);
}

static void json_kv_str(GString *s, const char *k, const char *v, bool comma)
{
    json_str(s, k);
    g_string_append_c(s, ':');
    json_str(s, v);
    if (comma)
        g_string_append_c(s, ',');
}

static void json_kv_num(GString *s, const char *k, double v, bool comma)
{
    json_str(s, k);
    g_string_append_c(s, ':');
    json_num(s, v);
    if (comma)
        g_string_append_c(s, ',');
}

int bench_report_json(const bench_report *rep, const char *path,
                      GError **error)
{
    const bench_params *p = rep->params;
    GString *s = g_string_new("{\n  ");
    json_kv_str(s, "program", "procreg-bench", true);
    json_kv_str(s, "version", PROCREG_BENCH_VERSION, true);
    json_kv_str(s, "git", PROCREG_BENCH_GIT, true);
    json_kv_str(s, "date", rep->sys.date, true);
    json_kv_str(s, "command", rep->sys.command, true);
    g_string_append(s, "\n  \"machine\":{");
    json_kv_str(s, "cpu_model", rep->sys.cpu_model, true);
    json_kv_num(s, "cores", rep->sys.cores, true);
    json_kv_str(s, "kernel", rep->sys.kernel, true);
    json_kv_str(s, "hostname", rep->sys.hostname, true);
    json_kv_str(s, "loadavg_start", rep->sys.loadavg, true);
    json_kv_str(s, "loadavg_end", rep->loadavg_end, false);
    g_string_append(s, "},\n  \"params\":{");
    json_kv_str(s, "profile", rep->profile, true);
    json_kv_str(s, "targets", rep->targets_joined, true);
    json_kv_str(s, "keys", rep->keys_joined, true);
    json_kv_str(s, "threads", rep->threads_joined, true);
    json_kv_str(s, "dist", rep->dists_joined, true);
    json_kv_str(s, "workloads", rep->workloads_joined, true);
    json_kv_num(s, "zipf_s", BENCH_ZIPF_S, true);
    json_kv_num(s, "seconds", p->ops ? NAN : p->seconds, true);
    json_kv_num(s, "ops_per_thread", p->ops ? (double)p->ops : NAN, true);
    json_kv_num(s, "warmup_seconds", p->warmup, true);
    json_kv_num(s, "reps", p->reps, true);
    json_kv_num(s, "sample_every", p->sample_every, true);
    char mix[64];
    g_snprintf(mix, sizeof mix, "%u/%u/%u", p->mix_lookup, p->mix_register,
               p->mix_unregister);
    json_kv_str(s, "mix", mix, true);
    json_kv_num(s, "seed", (double)p->seed, true);
    json_str(s, "pin");
    g_string_append(s, p->pin ? ":true" : ":false");
    g_string_append(s, "},\n  \"timer\":{");
    json_kv_str(s, "source", bench_clock.source, true);
    json_kv_num(s, "ticks_per_ns", bench_clock.ticks_per_ns, true);
    json_kv_num(s, "overhead_ns",
                (double)bench_clock.overhead_ticks / bench_clock.ticks_per_ns,
                false);
    g_string_append(s, "},\n  \"results\":[");
    for (guint i = 0; i < rep->results->len; i++) {
        const bench_result *r = rep->results->pdata[i];
        g_string_append(s, i ? ",\n    {" : "\n    {");
        json_kv_str(s, "workload", r->workload->name, true);
        json_kv_str(s, "target", r->target, true);
        json_kv_str(s, "kind", kind_name(r->target_kind), true);
        json_kv_num(s, "keys", (double)r->keys, true);
        json_kv_str(s, "dist", r->dist, true);
        json_kv_num(s, "threads", r->threads, true);
        if (r->skipped) {
            json_kv_str(s, "skipped", r->skipped, false);
            g_string_append_c(s, '}');
            continue;
        }
        json_str(s, "mops");
        g_string_append(s, ":[");
        for (int j = 0; j < r->reps; j++) {
            if (j)
                g_string_append_c(s, ',');
            json_num(s, r->mops[j]);
        }
        g_string_append(s, "],");
        json_kv_num(s, "mops_median", r->mops_median, true);
        json_kv_num(s, "mops_min", r->mops_min, true);
        json_kv_num(s, "mops_max", r->mops_max, true);
        json_kv_num(s, "ns_per_op", r->ns_per_op, true);
        json_kv_num(s, "cpu_ns_per_op", r->cpu_ns_per_op, true);
        json_kv_num(s, "p50_ns", r->p50, true);
        json_kv_num(s, "p99_ns", r->p99, true);
        json_kv_num(s, "p999_ns", r->p999, true);
        json_kv_num(s, "latency_samples", (double)r->samples, true);
        json_kv_num(s, "ratio_raw_ckht", r->ratio_raw_ckht, true);
        json_kv_num(s, "ratio_raw_ghash", r->ratio_raw_ghash, true);
        json_kv_num(s, "ratio_cpu_raw_ckht", r->ratio_cpu_raw_ckht, true);
        json_kv_num(s, "ratio_cpu_raw_ghash", r->ratio_cpu_raw_ghash, true);
        json_kv_num(s, "ratio_without_handler", r->ratio_reference, true);
        json_kv_num(s, "entries_per_op", r->items_per_op, true);
        json_kv_num(s, "rss_bytes_per_entry", r->mem_rss_per_entry, true);
        json_kv_num(s, "heap_bytes_per_entry", r->mem_heap_per_entry, true);
        json_kv_num(s, "backend_bytes_per_entry", r->mem_backend_per_entry,
                    true);
        json_kv_num(s, "errors", (double)r->errors, true);
        json_kv_str(s, "error_example", r->error_example, false);
        g_string_append_c(s, '}');
    }
    g_string_append(s, "\n  ]\n}\n");
    gboolean ok = g_file_set_contents(path, s->str, (gssize)s->len, error);
    g_string_free(s, TRUE);
    return ok ? 0 : -1;
}
