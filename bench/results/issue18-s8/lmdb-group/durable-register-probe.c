/*
 * durable-register: durable registrations per second on an lmdb registry
 * with N concurrent registrants, as threads of one process and as
 * processes (fork), next to raw LMDB in the same run: N registrants each
 * doing one put per transaction, committed with LMDB's default (synced)
 * flags.  The issue 18 row "lmdb durable registration" (doc/benchmarks.md).
 *
 *   durable-register [--seconds S] [--reps R] [--counts 1,8] [--dir DIR]
 *
 * Each cell gets a fresh file in a private directory made under DIR
 * (default: $TMPDIR), so put DIR on the file system to measure (ext4,
 * not tmpfs).  Every registrant registers distinct names; a cell runs S
 * seconds; R pairs of runs (raw and procreg back to back, the first of
 * each pair alternating, since a shared disk's flush time drifts by 10x
 * within a minute) give the medians printed and the median of the pairs'
 * ratios.  procreg runs with its default durability (sync).
 */
#include <procreg/procreg.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static double opt_seconds = 2.0;
static int opt_reps = 3;
static char *opt_counts = NULL;
static char *opt_dir = NULL;

typedef enum { RAW, PROCREG } target;

/* What one registrant needs: its target's handle, its number, the end. */
typedef struct {
    target tgt;
    const char *path;
    MDB_env *env; /* RAW */
    MDB_dbi dbi;
    procreg *reg; /* PROCREG */
    int id;
    gint64 end;
    guint64 done;
    GError *err;
} worker;

static void die(const char *what, const char *why)
{
    fprintf(stderr, "durable-register: %s: %s\n", what, why);
    exit(1);
}

static void raw_open(worker *w)
{
    MDB_txn *txn;
    int rc = mdb_env_create(&w->env);
    if (rc == 0)
        rc = mdb_env_set_mapsize(w->env, (size_t)64 << 20); /* procreg's */
    if (rc == 0)
        rc = mdb_env_open(w->env, w->path, MDB_NOSUBDIR, 0600);
    if (rc == 0)
        rc = mdb_txn_begin(w->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, NULL, 0, &w->dbi);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    if (rc != 0)
        die(w->path, mdb_strerror(rc));
}

static void probe_stats(procreg *reg)
{
    if (getenv("PROBE") == NULL)
        return;
    GVariant *v = NULL;
    if (procreg_stats(reg, &v, NULL) != 0)
        return;
    guint64 c = 0, r = 0, so = 0;
    GVariant *all = v;
    v = g_variant_lookup_value(all, "backend_stats", G_VARIANT_TYPE_VARDICT);
    g_variant_unref(all);
    if (v == NULL)
        return;
    g_variant_lookup(v, "batch_commits", "t", &c);
    g_variant_lookup(v, "batch_requests", "t", &r);
    g_variant_lookup(v, "batch_solo", "t", &so);
    fprintf(stderr, "PROBE pid %d commits %" G_GUINT64_FORMAT " requests %" G_GUINT64_FORMAT " solo %" G_GUINT64_FORMAT "\n", (int)getpid(), c, r, so);
    g_variant_unref(v);
}

static void procreg_open_or_die(worker *w)
{
    char *spec = g_strdup_printf("lmdb:path=%s", w->path);
    GError *err = NULL;
    if (procreg_open(spec, &w->reg, &err) != 0)
        die(spec, err->message);
    g_free(spec);
}

/* One registration: one synced transaction (raw) or procreg_register(). */
static bool register_one(worker *w, guint64 n)
{
    char name[64];
    int len = g_snprintf(name, sizeof name, "r%d-%" G_GUINT64_FORMAT, w->id,
                         n);
    if (w->tgt == PROCREG)
        return procreg_register(w->reg, "bench", name, NULL, NULL, NULL,
                                &w->err) == 0;
    MDB_txn *txn;
    MDB_val k = {(size_t)len, name}, v = {sizeof n, &n};
    int rc = mdb_txn_begin(w->env, NULL, 0, &txn);
    if (rc == 0) {
        rc = mdb_put(txn, w->dbi, &k, &v, MDB_NOOVERWRITE);
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    if (rc != 0)
        g_set_error(&w->err, g_quark_from_static_string("lmdb"), rc, "%s",
                    mdb_strerror(rc));
    return rc == 0;
}

static gpointer run(gpointer data)
{
    worker *w = data;
    while (g_get_monotonic_time() < w->end && register_one(w, w->done))
        w->done++;
    return NULL;
}

/* @n registrants as threads sharing one handle; registrations done. */
static guint64 cell_threads(target tgt, const char *path, int n, gint64 len)
{
    worker proto = {.tgt = tgt, .path = path};
    if (tgt == RAW)
        raw_open(&proto);
    else
        procreg_open_or_die(&proto);
    worker *ws = g_new0(worker, n);
    GThread **ts = g_new0(GThread *, n);
    gint64 end = g_get_monotonic_time() + len;
    for (int i = 0; i < n; i++) {
        ws[i] = proto;
        ws[i].id = i;
        ws[i].end = end;
        ts[i] = g_thread_new("registrant", run, &ws[i]);
    }
    guint64 total = 0;
    for (int i = 0; i < n; i++) {
        g_thread_join(ts[i]);
        if (ws[i].err != NULL)
            die("register", ws[i].err->message);
        total += ws[i].done;
    }
    if (tgt == RAW)
        mdb_env_close(proto.env);
    else {
        probe_stats(proto.reg);
        procreg_close(proto.reg);
    }
    g_free(ws);
    g_free(ts);
    return total;
}

/* @n registrants as processes, each opening the file itself and starting
 * when the parent closes the start pipe; registrations done. */
static guint64 cell_processes(target tgt, const char *path, int n,
                              gint64 len)
{
    int start[2], counts[2];
    if (pipe(start) != 0 || pipe(counts) != 0)
        die("pipe", g_strerror(errno));
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork", g_strerror(errno));
        if (pid > 0)
            continue;
        close(start[1]);
        close(counts[0]);
        worker w = {.tgt = tgt, .path = path, .id = i};
        if (tgt == RAW)
            raw_open(&w);
        else
            procreg_open_or_die(&w);
        char c;
        if (read(start[0], &c, 1) != 0)
            _exit(2);
        w.end = g_get_monotonic_time() + len;
        run(&w);
        if (w.err != NULL)
            die("register", w.err->message);
        if (tgt == PROCREG)
            probe_stats(w.reg);
        if (write(counts[1], &w.done, sizeof w.done) != sizeof w.done)
            _exit(3);
        _exit(0);
    }
    close(start[0]);
    close(counts[1]);
    /* Every child opened its file before the clock starts. */
    g_usleep(G_USEC_PER_SEC / 2);
    close(start[1]);
    guint64 total = 0, one;
    while (read(counts[0], &one, sizeof one) == sizeof one)
        total += one;
    close(counts[0]);
    for (int i = 0; i < n; i++) {
        int status;
        if (wait(&status) < 0 || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            die("registrant", "a child process failed");
    }
    return total;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Registrations per second of one run of @tgt in a fresh directory. */
static double one_run(target tgt, bool processes, int n)
{
    gint64 len = (gint64)(opt_seconds * G_USEC_PER_SEC);
    char *tmpl = g_build_filename(opt_dir ? opt_dir : g_get_tmp_dir(),
                                  "durable-register-XXXXXX", NULL);
    char *dir = g_mkdtemp(tmpl);
    if (dir == NULL)
        die(tmpl, g_strerror(errno));
    char *path = g_build_filename(dir, "reg.mdb", NULL);
    guint64 done = processes ? cell_processes(tgt, path, n, len)
                             : cell_threads(tgt, path, n, len);
    if (getenv("PROBE")) {
        MDB_env *e;
        MDB_envinfo info;
        mdb_env_create(&e);
        if (mdb_env_open(e, path, MDB_NOSUBDIR | MDB_RDONLY, 0600) == 0) {
            mdb_env_info(e, &info);
            MDB_stat ms;
            mdb_env_stat(e, &ms);
            fprintf(stderr, "PROBE %s %s n=%d done=%" G_GUINT64_FORMAT " txnid=%zu lastpg=%zu\n", tgt == RAW ? "raw" : "procreg", processes ? "proc" : "thr", n, done, info.me_last_txnid, info.me_last_pgno);
        }
        mdb_env_close(e);
    }
    const char *sfx[] = {"", "-lock", "-notify"};
    for (size_t i = 0; i < G_N_ELEMENTS(sfx); i++) {
        char *f = g_strconcat(path, sfx[i], NULL);
        g_unlink(f);
        g_free(f);
    }
    g_rmdir(dir);
    g_free(path);
    g_free(dir);
    return (double)done * G_USEC_PER_SEC / (double)len;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return v[n / 2];
}

/* opt_reps pairs of runs, raw and procreg back to back (which one first
 * alternates), so that both see the same drift of the disk's flush time:
 * the medians of each, and the median of the pairs' ratios. */
static void cell(bool processes, int n, double *raw, double *reg,
                 double *ratio)
{
    double r[64], p[64], q[64];
    for (int i = 0; i < opt_reps; i++) {
        if (i % 2 == 0)
            r[i] = one_run(RAW, processes, n);
        p[i] = one_run(PROCREG, processes, n);
        if (i % 2 == 1)
            r[i] = one_run(RAW, processes, n);
        q[i] = r[i] > 0 ? p[i] / r[i] : 0;
    }
    *raw = median(r, opt_reps);
    *reg = median(p, opt_reps);
    *ratio = median(q, opt_reps);
}

int main(int argc, char **argv)
{
    GOptionEntry entries[] = {
        {"seconds", 's', 0, G_OPTION_ARG_DOUBLE, &opt_seconds,
         "Seconds per run (default 2)", "S"},
        {"reps", 'r', 0, G_OPTION_ARG_INT, &opt_reps,
         "Runs per cell; the median is printed (default 3)", "R"},
        {"counts", 'n', 0, G_OPTION_ARG_STRING, &opt_counts,
         "Registrant counts (default 1,8)", "LIST"},
        {"dir", 'd', 0, G_OPTION_ARG_FILENAME, &opt_dir,
         "Where the private directories go (default $TMPDIR)", "DIR"},
        {NULL},
    };
    GOptionContext *ctx = g_option_context_new("- durable registrations/s");
    g_option_context_add_main_entries(ctx, entries, NULL);
    GError *err = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &err))
        die("options", err->message);
    g_option_context_free(ctx);
    if (opt_reps < 1 || opt_reps > 64 || opt_seconds <= 0)
        die("options", "--reps must be 1..64 and --seconds positive");
    char **counts = g_strsplit(opt_counts ? opt_counts : "1,8", ",", -1);
    printf("%-10s %4s %14s %14s %7s\n", "mode", "N", "raw reg/s",
           "procreg reg/s", "ratio");
    printf("(medians of %d pairs of %.2f s runs; ratio: the pairs' median)\n",
           opt_reps, opt_seconds);
    for (int p = 0; p < 2; p++) {
        for (char **c = counts; *c != NULL; c++) {
            int n = atoi(*c);
            if (n < 1 || n > 256)
                die("--counts", "each count must be 1..256");
            double raw, reg, ratio;
            cell(p, n, &raw, &reg, &ratio);
            printf("%-10s %4d %14.0f %14.0f %6.2fx\n",
                   p ? "processes" : "threads", n, raw, reg, ratio);
            fflush(stdout);
        }
    }
    g_strfreev(counts);
    return 0;
}
