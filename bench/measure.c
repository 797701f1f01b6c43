/* Timer calibration, latency histograms, machine facts and RSS. */
#include "bench.h"

#include <malloc.h>
#include <math.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

bench_timer bench_clock = {"clock_gettime(CLOCK_MONOTONIC)", 1.0, 0};
bool bench_use_tsc = false;

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double bench_thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t bench_tick_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Median cost of an empty begin/end pair, in ticks. */
static uint64_t measure_overhead(void)
{
    enum { N = 20001 };
    uint64_t *d = g_new(uint64_t, N);
    for (int i = 0; i < N; i++) {
        uint64_t t0 = bench_ticks_begin();
        uint64_t t1 = bench_ticks_end();
        d[i] = t1 - t0;
    }
    qsort(d, N, sizeof *d, cmp_u64);
    uint64_t m = d[N / 2];
    g_free(d);
    return m;
}

#if defined(BENCH_HAVE_X86_TSC)
/* The TSC is a usable clock only when it ticks at a constant rate and
 * keeps ticking in idle states. */
static bool tsc_invariant(void)
{
    char *text = NULL;
    if (!g_file_get_contents("/proc/cpuinfo", &text, NULL, NULL))
        return false;
    bool ok = false;
    char *flags = strstr(text, "\nflags");
    if (flags) {
        char *eol = strchr(flags + 1, '\n');
        if (eol)
            *eol = '\0';
        ok = strstr(flags, " constant_tsc") && strstr(flags, " nonstop_tsc");
    }
    g_free(text);
    return ok;
}
#endif

void bench_timer_init(bool allow_tsc)
{
#if defined(BENCH_HAVE_X86_TSC)
    if (allow_tsc && tsc_invariant()) {
        /* Ticks per ns against CLOCK_MONOTONIC over ~50 ms. */
        double w0 = bench_now();
        uint64_t t0 = bench_tick_start();
        double w1;
        do {
            w1 = bench_now();
        } while (w1 - w0 < 0.05);
        uint64_t t1 = bench_tick_end();
        double rate = (double)(t1 - t0) / ((w1 - w0) * 1e9);
        if (rate > 0.1 && rate < 20.0) {
            bench_use_tsc = true;
            bench_clock.source = "rdtsc";
            bench_clock.ticks_per_ns = rate;
        }
    }
#else
    (void)allow_tsc;
#endif
    bench_clock.overhead_ticks = 0;
    bench_clock.overhead_ticks = measure_overhead();
}

void bench_hist_merge(bench_hist *into, const bench_hist *from)
{
    into->count += from->count;
    for (unsigned int i = 0; i < BENCH_HIST_BUCKETS; i++)
        into->buckets[i] += from->buckets[i];
}

static double bucket_middle(unsigned int i)
{
    if (i < BENCH_HIST_LINEAR)
        return (double)i;
    unsigned int k = i - BENCH_HIST_LINEAR;
    unsigned int msb = 6 + k / BENCH_HIST_SUB;
    unsigned int sub = k % BENCH_HIST_SUB;
    unsigned int shift = msb - 5;
    double lower = (double)((uint64_t)(BENCH_HIST_SUB + sub) << shift);
    return lower + (double)((uint64_t)1 << shift) / 2.0;
}

double bench_hist_percentile(const bench_hist *h, double q)
{
    if (h->count == 0)
        return NAN;
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned int i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank)
            return bucket_middle(i);
    }
    return bucket_middle(BENCH_HIST_BUCKETS - 1);
}

/* ------------------------------------------------------------------------ */

static char *cpu_model(void)
{
    char *text = NULL;
    char *model = NULL;
    if (g_file_get_contents("/proc/cpuinfo", &text, NULL, NULL)) {
        char **lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l && !model; l++) {
            if (g_str_has_prefix(*l, "model name") ||
                g_str_has_prefix(*l, "Model") ||
                g_str_has_prefix(*l, "cpu model")) {
                char *colon = strchr(*l, ':');
                if (colon)
                    model = g_strstrip(g_strdup(colon + 1));
            }
        }
        g_strfreev(lines);
        g_free(text);
    }
    return model ? model : g_strdup("unknown");
}

char *bench_loadavg(void)
{
    char *text = NULL;
    if (!g_file_get_contents("/proc/loadavg", &text, NULL, NULL))
        return g_strdup("unknown");
    char **f = g_strsplit(text, " ", 4);
    char *out = g_strv_length(f) >= 3
                    ? g_strdup_printf("%s %s %s", f[0], f[1], f[2])
                    : g_strdup("unknown");
    g_strfreev(f);
    g_free(text);
    return out;
}

void bench_sysinfo_collect(bench_sysinfo *info, int argc, char **argv)
{
    info->cpu_model = cpu_model();
    info->cores = (int)g_get_num_processors();
    struct utsname u;
    if (uname(&u) == 0)
        info->kernel = g_strdup_printf("%s %s %s", u.sysname, u.release,
                                       u.machine);
    else
        info->kernel = g_strdup("unknown");
    GDateTime *now = g_date_time_new_now_utc();
    info->date = g_date_time_format(now, "%Y-%m-%dT%H:%M:%SZ");
    g_date_time_unref(now);
    info->hostname = g_strdup(g_get_host_name());
    info->loadavg = bench_loadavg();

    GString *cmd = g_string_new(NULL);
    for (int i = 0; i < argc; i++) {
        char *q = g_shell_quote(argv[i]);
        /* Leave plain words unquoted so the line reads naturally. */
        bool plain = argv[i][0] != '\0';
        for (const char *c = argv[i]; *c; c++)
            if (!g_ascii_isalnum(*c) && !strchr("-_=,./:+@%", *c))
                plain = false;
        if (i)
            g_string_append_c(cmd, ' ');
        g_string_append(cmd, plain ? argv[i] : q);
        g_free(q);
    }
    info->command = g_string_free(cmd, FALSE);
}

void bench_sysinfo_clear(bench_sysinfo *info)
{
    g_free(info->cpu_model);
    g_free(info->kernel);
    g_free(info->date);
    g_free(info->command);
    g_free(info->hostname);
    g_free(info->loadavg);
    memset(info, 0, sizeof *info);
}

size_t bench_rss_bytes(void)
{
    malloc_trim(0);
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long size = 0, resident = 0, shared = 0;
    int n = fscanf(f, "%lu %lu %lu", &size, &resident, &shared);
    fclose(f);
    if (n != 3 || shared > resident)
        return 0;
    /* Anonymous pages only: file-backed ones are code and libraries. */
    return (size_t)(resident - shared) * (size_t)sysconf(_SC_PAGESIZE);
}

size_t bench_heap_bytes(void)
{
#if defined(BENCH_HAVE_MALLINFO2)
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
#else
    return 0;
#endif
}
