/*
 * group-probe: the figures of doc/groups.md that procreg-bench's timed
 * cells cannot give.
 *
 *   group-probe memory SPEC N
 *       join N members (no metadata) to one group of a fresh registry and
 *       print the bytes per member: malloc's (mallinfo2 delta), the
 *       process's anonymous RSS delta, and what the backend reports
 *       (procreg_stats "memory_bytes" delta).
 *   group-probe churn SPEC N PAIRS
 *   group-probe dispatch SPEC N ROUNDS
 *       fill one group with N members, then run PAIRS join+leave pairs
 *       (churn_loop) or ROUNDS dispatches over it (dispatch_loop), on one
 *       thread, and print the wall-clock and the thread's CPU time of
 *       each (pair, or member visited); run under valgrind
 *       --tool=callgrind --toggle-collect=churn_loop (or dispatch_loop) for
 *       the instructions of those alone.
 */
#include <procreg/procreg.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static procreg *open_or_die(const char *spec)
{
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0) {
        fprintf(stderr, "group-probe: %s\n", err->message);
        exit(1);
    }
    return reg;
}

static void fill(procreg *reg, const procreg_key *key, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (procreg_join_key(reg, key, NULL, NULL, NULL, NULL) != 0) {
            fprintf(stderr, "group-probe: join %zu failed\n", i);
            exit(1);
        }
}

static size_t heap_bytes(void)
{
    malloc_trim(0);
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static size_t rss_bytes(void)
{
    malloc_trim(0);
    long pages = 0, resident = 0, shared = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL || fscanf(f, "%ld %ld %ld", &pages, &resident, &shared) != 3)
        resident = shared = 0;
    if (f != NULL)
        fclose(f);
    return (size_t)(resident - shared) * (size_t)sysconf(_SC_PAGESIZE);
}

static guint64 backend_bytes(procreg *reg)
{
    GVariant *st = NULL;
    guint64 n = 0;
    if (procreg_stats(reg, &st, NULL) == 0) {
        g_variant_lookup(st, "memory_bytes", "t", &n);
        g_variant_unref(st);
    }
    return n;
}

/* The calling thread's CPU time, ns. */
static double thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

__attribute__((noinline)) static void churn_loop(procreg *reg,
                                                 const procreg_key *key,
                                                 size_t pairs)
{
    for (size_t i = 0; i < pairs; i++) {
        procreg_member m = {0};
        procreg_join_key(reg, key, NULL, NULL, &m, NULL);
        procreg_leave_key(reg, key, m.id, 0, NULL, NULL);
        procreg_member_clear(&m);
    }
}

/* Reads its member, as a real callback does. */
static bool visit(const procreg_member *m, gpointer data)
{
    *(size_t *)data += m->owner.pid != 0;
    return true;
}

__attribute__((noinline)) static size_t dispatch_loop(procreg *reg,
                                                      const procreg_key *key,
                                                      size_t rounds)
{
    size_t seen = 0;
    for (size_t i = 0; i < rounds; i++)
        procreg_dispatch_key(reg, key, visit, &seen, NULL, NULL);
    return seen;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: group-probe memory SPEC N | churn SPEC N "
                        "PAIRS | dispatch SPEC N ROUNDS\n");
        return 2;
    }
    const char *mode = argv[1];
    size_t n = strtoull(argv[3], NULL, 10);
    size_t k = argc > 4 ? strtoull(argv[4], NULL, 10) : 0;
    procreg *reg = open_or_die(argv[2]);
    procreg_key *key = NULL;
    procreg_key_new("probe", "group", &key, NULL);
    int status = 0;
    if (strcmp(mode, "memory") == 0 && n > 0) {
        size_t heap0 = heap_bytes(), rss0 = rss_bytes();
        guint64 be0 = backend_bytes(reg);
        fill(reg, key, n);
        size_t heap1 = heap_bytes(), rss1 = rss_bytes();
        guint64 be1 = backend_bytes(reg);
        printf("%s: %zu members: heap %.1f B/member, RSS %.1f B/member, "
               "backend %.1f B/member\n", argv[2], n,
               (double)(heap1 - heap0) / (double)n,
               (double)(rss1 - rss0) / (double)n,
               (double)(be1 - be0) / (double)n);
    } else if (strcmp(mode, "churn") == 0) {
        fill(reg, key, n);
        gint64 t0 = g_get_monotonic_time();
        double cpu0 = thread_cpu_ns();
        churn_loop(reg, key, k);
        double cpu = thread_cpu_ns() - cpu0;
        double ns = (double)(g_get_monotonic_time() - t0) * 1e3;
        printf("%s: %zu join+leave pairs on a group of %zu, %.0f ns each "
               "(wall clock), %.0f CPU ns each\n", argv[2], k, n,
               k ? ns / (double)k : 0, k ? cpu / (double)k : 0);
    } else if (strcmp(mode, "dispatch") == 0) {
        fill(reg, key, n);
        gint64 t0 = g_get_monotonic_time();
        double cpu0 = thread_cpu_ns();
        size_t seen = dispatch_loop(reg, key, k);
        double cpu = thread_cpu_ns() - cpu0;
        double ns = (double)(g_get_monotonic_time() - t0) * 1e3;
        printf("%s: %zu dispatches, %zu members visited, %.2f ns each "
               "(wall clock), %.2f CPU ns each\n", argv[2], k, seen,
               seen ? ns / (double)seen : 0, seen ? cpu / (double)seen : 0);
    } else {
        fprintf(stderr, "group-probe: unknown mode '%s'\n", mode);
        status = 2;
    }
    procreg_key_unref(key);
    procreg_close(reg);
    return status;
}
