/*
 * What a lock costs, per backend (doc/benchmarks.md, "Locks"):
 *   - uncontended: procreg_lock() + procreg_unlock() in one thread, wall
 *     and CPU time per pair;
 *   - handover: from the start of the holder's procreg_unlock() to the
 *     return of the waiter's procreg_lock(), two parties taking turns
 *     (threads on an in-process backend, processes on a shared one);
 *   - death (shared backends): from the holder's SIGKILL to the return of
 *     the waiter's procreg_lock().
 *
 *   lock-bench [--etcd-bin=PATH] [--rounds=N] [--handovers=N] [--deaths=N]
 *              [--uncontended] [SPEC...]
 *
 * --uncontended measures the first part only (for callgrind: run it with
 * two --rounds and divide the difference of the instruction counts).
 *
 * Without SPECs: ghash, ckht, optimized:inner=ghash, lmdb (nosync and
 * synced) in a temporary directory, and etcd (lease_ttl=2) on a member
 * this program starts when an etcd binary is found.  @TMPDIR@ in a SPEC
 * becomes that directory.  Not a test: the figures depend on the machine
 * and its load.
 */
#ifdef HAVE_ETCD_HARNESS
#include "../etcd/etcd-harness.h"
#endif

#include <procreg/backend.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_HANDOVERS 100000

static int rounds = 2000, handovers = 400, deaths = 20;
static bool uncontended_only; /* --uncontended: for callgrind */

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static double cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec +
           ((double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_usec) / 1e6;
}

static procreg *open_or_die(const char *spec)
{
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0) {
        fprintf(stderr, "open %s: %s\n", spec, err->message);
        exit(1);
    }
    return reg;
}

static procreg_lock_handle *lock_or_die(procreg *reg, const char *name)
{
    procreg_lock_handle *h = NULL;
    GError *err = NULL;
    if (procreg_lock(reg, "bench", name, 60000, NULL, &h, &err) != 0) {
        fprintf(stderr, "lock: %s\n", err->message);
        exit(1);
    }
    return h;
}

static size_t tickets(procreg *reg)
{
    size_t n = 0;
    procreg_count(reg, "procreg:lock:bench", &n, NULL);
    return n;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* p50, p90 and max of @n samples in µs, as text. */
static char *percentiles(uint64_t *v, size_t n)
{
    if (n == 0)
        return g_strdup("-");
    qsort(v, n, sizeof *v, cmp_u64);
    return g_strdup_printf("%.0f / %.0f / %.0f", v[n / 2] / 1e3,
                           v[n * 9 / 10] / 1e3, v[n - 1] / 1e3);
}

/* ---- uncontended ---- */

static void uncontended(const char *spec, double *wall_us, double *cpu_us)
{
    procreg *reg = open_or_die(spec);
    procreg_unlock(reg, lock_or_die(reg, "u"), NULL); /* warm up */
    double c0 = cpu_s();
    uint64_t t0 = now_ns();
    for (int i = 0; i < rounds; i++)
        procreg_unlock(reg, lock_or_die(reg, "u"), NULL);
    *wall_us = (double)(now_ns() - t0) / 1e3 / rounds;
    *cpu_us = (cpu_s() - c0) * 1e6 / rounds;
    procreg_close(reg);
}

/* ---- handover ---- */

/* Shared by the two parties (an anonymous shared mapping when they are
 * processes). */
typedef struct {
    _Atomic uint64_t unlock_at; /* when the last unlock started */
    _Atomic int taken;          /* acquisitions so far, both parties */
    _Atomic int finished;       /* parties done */
    uint64_t lat[MAX_HANDOVERS];
    _Atomic int n_lat;
} board;

static void party(procreg *reg, board *b)
{
    for (;;) {
        procreg_lock_handle *h = lock_or_die(reg, "h");
        uint64_t at = now_ns();
        uint64_t from = atomic_exchange(&b->unlock_at, 0);
        if (from != 0) {
            int i = atomic_fetch_add(&b->n_lat, 1);
            if (i < MAX_HANDOVERS)
                b->lat[i] = at - from;
        }
        bool last = atomic_fetch_add(&b->taken, 1) + 1 >= handovers;
        /* Hand over only to a waiter that is queued already. */
        while (!last && atomic_load(&b->finished) == 0 && tickets(reg) < 2)
            g_usleep(100);
        if (!last && atomic_load(&b->finished) == 0)
            atomic_store(&b->unlock_at, now_ns());
        procreg_unlock(reg, h, NULL);
        if (last || atomic_load(&b->finished) != 0)
            break;
    }
    atomic_fetch_add(&b->finished, 1);
}

static gpointer party_thread(gpointer reg_board)
{
    void **a = reg_board;
    party(a[0], a[1]);
    return NULL;
}

static char *handover(const char *spec, bool processes)
{
    board *b = mmap(NULL, sizeof *b, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED)
        exit(1);
    memset(b, 0, sizeof *b);
    pid_t child = -1;
    GThread *t = NULL;
    if (processes) {
        child = fork();
        if (child == 0) {
            procreg *own = open_or_die(spec);
            party(own, b);
            procreg_close(own);
            _exit(0);
        }
    }
    /* Threads share one registry: an in-process backend is per registry. */
    procreg *reg = open_or_die(spec);
    void *args[2] = {reg, b};
    if (!processes)
        t = g_thread_new("party", party_thread, args);
    party(reg, b);
    if (processes)
        waitpid(child, NULL, 0);
    else
        g_thread_join(t);
    procreg_close(reg);
    char *s = percentiles(b->lat, (size_t)MIN(b->n_lat, MAX_HANDOVERS));
    munmap(b, sizeof *b);
    return s;
}

/* ---- death ---- */

typedef struct {
    procreg *reg;
    pid_t victim;
    uint64_t killed_at;
} killer;

/* Once the main thread's ticket is queued behind the victim's, SIGKILL
 * the victim. */
static gpointer kill_when_queued(gpointer p)
{
    killer *k = p;
    while (tickets(k->reg) < 2)
        g_usleep(100);
    k->killed_at = now_ns();
    kill(k->victim, SIGKILL);
    return NULL;
}

static char *death(const char *spec)
{
    uint64_t *lat = g_new0(uint64_t, deaths);
    procreg *reg = open_or_die(spec);
    for (int i = 0; i < deaths; i++) {
        int ready[2];
        if (pipe(ready) != 0)
            exit(1);
        pid_t child = fork();
        if (child == 0) {
            procreg *r = open_or_die(spec);
            lock_or_die(r, "d");
            if (write(ready[1], "x", 1) != 1)
                _exit(1);
            for (;;)
                pause();
        }
        char c;
        if (read(ready[0], &c, 1) != 1)
            exit(1);
        close(ready[0]);
        close(ready[1]);
        killer k = {reg, child, 0};
        GThread *t = g_thread_new("killer", kill_when_queued, &k);
        procreg_lock_handle *h = lock_or_die(reg, "d");
        uint64_t at = now_ns();
        g_thread_join(t);
        waitpid(child, NULL, 0);
        lat[i] = at - k.killed_at;
        procreg_unlock(reg, h, NULL);
    }
    procreg_close(reg);
    char *s = percentiles(lat, (size_t)deaths);
    g_free(lat);
    return s;
}

/* ---- main ---- */

/* Whether @spec's backend is shared between processes. */
static bool shared(const char *spec)
{
    procreg_backend *b = NULL;
    GError *err = NULL;
    if (procreg_backend_open(spec, NULL, &b, &err) != 0) {
        fprintf(stderr, "open %s: %s\n", spec, err->message);
        exit(1);
    }
    unsigned caps = procreg_backend_get_caps(b);
    procreg_backend_close(b);
    return caps & (PROCREG_CAP_MULTIPROCESS | PROCREG_CAP_DISTRIBUTED);
}

static void measure(const char *spec, const char *label)
{
    bool procs = shared(spec);
    double wall, cpu;
    uncontended(spec, &wall, &cpu);
    if (uncontended_only) {
        printf("| %s | %.1f | %.1f |\n", label, wall, cpu);
        return;
    }
    g_autofree char *hand = handover(spec, procs);
    g_autofree char *dead = procs ? death(spec) : g_strdup("-");
    printf("| %s | %.1f | %.1f | %s (%s) | %s |\n", label, wall, cpu, hand,
           procs ? "processes" : "threads", dead);
    fflush(stdout);
}

static bool have_backend(const char *name)
{
    g_auto(GStrv) names = procreg_backend_names();
    return g_strv_contains((const char *const *)names, name);
}

/* @s with every @what replaced by @with; g_free it. */
static char *replace(const char *s, const char *what, const char *with)
{
    g_auto(GStrv) parts = g_strsplit(s, what, -1);
    return g_strjoinv(with, parts);
}

int main(int argc, char **argv)
{
#ifdef HAVE_ETCD_HARNESS
    etcd_harness_env(argv);
    etcd_harness_args(&argc, argv);
    etcd_cluster cluster = {0};
#endif
    bool etcd_up = false;
    g_autofree char *dir = g_dir_make_tmp("lock-bench-XXXXXX", NULL);
    GPtrArray *specs = g_ptr_array_new_with_free_func(g_free);
    for (int i = 1; i < argc; i++) {
        if (sscanf(argv[i], "--rounds=%d", &rounds) == 1 ||
            sscanf(argv[i], "--handovers=%d", &handovers) == 1 ||
            sscanf(argv[i], "--deaths=%d", &deaths) == 1)
            continue;
        if (strcmp(argv[i], "--uncontended") == 0) {
            uncontended_only = true;
            continue;
        }
        if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [--etcd-bin=PATH] [--rounds=N] "
                    "[--handovers=N] [--deaths=N] [--uncontended] "
                    "[SPEC...]\n", argv[0]);
            return 2;
        }
        g_ptr_array_add(specs, replace(argv[i], "@TMPDIR@", dir));
    }
    handovers = CLAMP(handovers, 2, MAX_HANDOVERS);
    if (specs->len == 0) {
        g_ptr_array_add(specs, g_strdup("ghash"));
        if (have_backend("ckht"))
            g_ptr_array_add(specs, g_strdup("ckht"));
        if (have_backend("optimized"))
            g_ptr_array_add(specs, g_strdup("optimized:inner=ghash"));
        if (have_backend("lmdb")) {
            g_ptr_array_add(specs, g_strdup_printf(
                "lmdb:path=%s/nosync.mdb,durability=nosync", dir));
            g_ptr_array_add(specs, g_strdup_printf("lmdb:path=%s/sync.mdb",
                                                   dir));
        }
#ifdef HAVE_ETCD_HARNESS
        const char *bin = g_getenv("ETCD_BIN");
        if (have_backend("etcd") &&
            (bin != NULL || g_find_program_in_path("etcd") != NULL)) {
            GError *err = NULL;
            etcd_up = etcd_cluster_start(&cluster, 1, &err);
            if (etcd_up) {
                g_autofree char *ep = etcd_cluster_endpoints(&cluster);
                g_autofree char *tag = etcd_random_tag();
                g_ptr_array_add(specs, g_strdup_printf(
                    "etcd:endpoints=[%s],prefix=/lock-bench/%s,lease_ttl=2",
                    ep, tag));
            } else {
                fprintf(stderr, "etcd left out: %s\n", err->message);
                g_clear_error(&err);
            }
        }
#endif
    }
    printf("%d uncontended rounds, %d handovers, %d deaths per backend\n\n",
           rounds, handovers, deaths);
    if (uncontended_only)
        printf("| backend | lock+unlock µs (wall) | CPU µs |\n|---|---|---|\n");
    else
        printf("| backend | lock+unlock µs (wall) | CPU µs | handover µs p50 / "
               "p90 / max | death µs p50 / p90 / max |\n"
               "|---|---|---|---|---|\n");
    for (guint i = 0; i < specs->len; i++) {
        const char *spec = specs->pdata[i];
        g_autofree char *label = replace(spec, dir, "TMP");
        if (g_str_has_prefix(label, "etcd:"))
            strcpy(strchr(label, ':'), ":…,lease_ttl=2");
        measure(spec, label);
    }
#ifdef HAVE_ETCD_HARNESS
    if (etcd_up)
        etcd_cluster_destroy(&cluster);
#endif
    g_ptr_array_unref(specs);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return 0;
}
