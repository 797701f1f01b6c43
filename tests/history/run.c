/*
 * history-run: records histories of random registry operations and
 * checks them (history.h).  Setups:
 *
 *   history-run threads SPEC   client threads of this process on one
 *                              registry, owners among helper processes
 *                              that are SIGKILLed and replaced (@DIR@ in
 *                              SPEC: the run's private directory)
 *   history-run lmdb           client processes on one lmdb file (procs.c)
 *   history-run etcd           client processes on a 3-member etcd cluster
 *   history-run check FILE...  check recorded histories again
 *
 * Options: --clients N, --keys N, --seconds S, --ops N (per client, at
 * most), --helpers N and --kills N (threads: helper owners, and how many
 * kills a run makes), --seed N, --keep (keep the histories and say where),
 * --etcd-bin=PATH, --session-ms N (check: the optimized promise with
 * that staleness), --backend-module PATH (load a backend first),
 * --expect TEXT (the run must find a violation whose report holds TEXT,
 * or one of the TEXTs separated by '|': exit 0 then, 1 otherwise; not a
 * should_fail test, which a crash or the OOM killer would pass).
 * $PROCREG_HISTORY_SECONDS=S repeats the run, each time with a new seed,
 * for S seconds (the long run; it stops at the first violation).
 * This file also holds the threads setup and what the setups share.
 */
#define PROCREG_ENABLE_BACKEND 1
#include "run.h"

#include <procreg/backend.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- shared ---- */

int run_check_dir(const run_opts *o, const hist_check_opts *check,
                  const char *what)
{
    g_autoptr(hist) h = hist_new();
    g_autoptr(GError) err = NULL;
    g_autoptr(GDir) d = g_dir_open(o->dir, 0, &err);
    if (d == NULL) {
        fprintf(stderr, "history: %s\n", err->message);
        return RUN_ERROR;
    }
    guint files = 0;
    for (const char *name; (name = g_dir_read_name(d)) != NULL;) {
        if (!g_str_has_suffix(name, ".log"))
            continue;
        g_autofree char *path = g_build_filename(o->dir, name, NULL);
        if (!hist_load_file(h, path, &err)) {
            fprintf(stderr, "history: %s\n", err->message);
            return RUN_ERROR;
        }
        files++;
    }
    guint pending = 0, ops = 0;
    for (guint i = 0; i < h->ops->len; i++) {
        const hist_op *op = &g_array_index(h->ops, hist_op, i);
        ops += op->kind != HIST_DEATH;
        pending += op->kind != HIST_DEATH && op->res == HIST_PENDING;
    }
    g_autoptr(GString) report = g_string_new(NULL);
    hist_check_stats st;
    bool ok = hist_check(h, check, report, &st);
    printf("history: %s: %u operations (%u without an answer) from %u "
           "files, %zu events, %u keys; checked (%s) in %.3f s: %zu "
           "per-key operations, %zu search states, %.0f operations/s\n",
           what, ops, pending, files, st.events, h->keys->len,
           check->session ? "optimized promise" : "linearizability",
           st.seconds, st.ops, st.states,
           st.seconds > 0 ? ops / st.seconds : 0.0);
    g_string_append(o->report, report->str);
    if (o->keep)
        printf("history: the histories are in %s\n", o->dir);
    fflush(stdout);
    return ok ? RUN_OK : RUN_VIOLATION;
}

GPid run_spawn_self(const run_opts *o, const char *const *args, int *in,
                    int *out, GError **error)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_ptr_array_add(argv, o->self);
    for (const char *const *a = args; *a; a++)
        g_ptr_array_add(argv, (char *)*a);
    g_ptr_array_add(argv, NULL);
    GPid pid = 0;
    if (!g_spawn_async_with_pipes(NULL, (char **)argv->pdata, NULL,
                                  G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &pid,
                                  in, out, NULL, error))
        return 0;
    return pid;
}

void run_kill(GPid pid)
{
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    g_spawn_close_pid(pid);
}

bool run_wait_reaped(procreg *reg, const char *ns, GHashTable *dead,
                     int timeout_ms, GString *report)
{
    gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        procreg_entry *es = NULL;
        size_t n = 0;
        const char *holder = NULL;
        g_autofree char *holder_s = NULL;
        if (procreg_list(reg, ns, &es, &n, NULL) == 0) {
            for (size_t i = 0; i < n && holder == NULL; i++) {
                g_autofree char *o = hist_owner_text(&es[i].owner);
                if (g_hash_table_contains(dead, o)) {
                    holder_s = g_strdup_printf("%s (owner %s)", es[i].name, o);
                    holder = holder_s;
                }
            }
        }
        procreg_entries_free(es, n);
        if (holder == NULL)
            return true;
        if (g_get_monotonic_time() > end) {
            g_string_append_printf(report,
                "history: %s still listed %d ms after its owner was "
                "killed and reaped by waitpid\n", holder, timeout_ms);
            return false;
        }
        g_usleep(10000);
    }
}

/* ---- threads ---- */

typedef struct {
    const run_opts *o;
    procreg *reg;
    hist_owner_pool *pool;
    hist_workload w;
    gint64 deadline; /* monotonic µs */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    gboolean stop;
    GHashTable *dead; /* owners killed: "PID:START" */
    hist_client *prober; /* registers every key after each kill */
    GPid *helpers;
    int n_helpers;
    guint kills;
    bool failed;
#ifdef PROCREG_TEST_FORCE_DEAD_HOLDER
    /* The gate (gate_close()): closed while a kill is under way. */
    pthread_mutex_t gate;
    pthread_cond_t gate_cond;
    bool closed;
    int active; /* clients inside an operation */
#endif
} threads_run;

typedef struct {
    threads_run *run;
    hist_client *client;
    hist_log *log;
    guint64 ops;
} client_thread;

#ifdef PROCREG_TEST_FORCE_DEAD_HOLDER
/* history-detects-dead-holder only (tests/history/meson.build): the
 * planted bug shows when a register invoked after the victim's death was
 * confirmed meets a key the victim still holds before the monitor knows
 * it dead.  The monitor's side is forced in the library (liveness.c holds
 * the death back until a register met the dead holder); this is the
 * other side: no client operation runs from before the victim is given
 * a key until the prober has registered every key after the kill, so no
 * forced unregister or drop of a client takes that key away meanwhile,
 * and the victim always holds one (k0, freed first).  Waits are bounded
 * (10 s here, in gate_enter(), and the monitor's 2 s): a broken gate slows
 * a run down, it never hangs it. */
static void gate_enter(threads_run *r)
{
    pthread_mutex_lock(&r->gate);
    gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (r->closed && hist_cond_wait_until(&r->gate_cond, &r->gate, end))
        ; /* false at @end: go on, slower but never stuck */
    r->active++;
    pthread_mutex_unlock(&r->gate);
}

static void gate_leave(threads_run *r)
{
    pthread_mutex_lock(&r->gate);
    if (--r->active == 0)
        pthread_cond_broadcast(&r->gate_cond);
    pthread_mutex_unlock(&r->gate);
}

static void gate_close(threads_run *r)
{
    pthread_mutex_lock(&r->gate);
    r->closed = true;
    gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (r->active > 0 &&
           hist_cond_wait_until(&r->gate_cond, &r->gate, end))
        ; /* false at @end: go on */
    pthread_mutex_unlock(&r->gate);
}

static void gate_open(threads_run *r)
{
    pthread_mutex_lock(&r->gate);
    r->closed = false;
    pthread_cond_broadcast(&r->gate_cond);
    pthread_mutex_unlock(&r->gate);
}
#else
static void gate_enter(threads_run *r) { (void)r; }
static void gate_leave(threads_run *r) { (void)r; }
#endif

static gpointer client_loop(gpointer data)
{
    client_thread *t = data;
    guint64 max = t->run->o->ops ? t->run->o->ops : G_MAXUINT64;
    while (t->ops < max && g_get_monotonic_time() < t->run->deadline) {
        gate_enter(t->run);
        hist_client_step(t->client);
        t->ops++;
        gate_leave(t->run);
    }
    return NULL;
}

/* A helper owner: a process of ours that only waits to be killed. */
static bool start_helper(threads_run *r, int slot, GError **error)
{
    char ppid[16];
    g_snprintf(ppid, sizeof ppid, "%d", (int)getpid());
    const char *args[] = {"--sleeper", ppid, NULL};
    int out = -1;
    GPid pid = run_spawn_self(r->o, args, NULL, &out, error);
    if (pid == 0)
        return false;
    /* It says "up" once it exists as itself (not a fork of us). */
    char c = 0;
    ssize_t n;
    while ((n = read(out, &c, 1)) < 0 && errno == EINTR)
        ;
    close(out);
    procreg_owner o;
    if (n != 1 || procreg_owner_from_pid(pid, &o, error) != 0) {
        if (error && *error == NULL)
            g_set_error(error, G_SPAWN_ERROR, G_SPAWN_ERROR_FAILED,
                        "the helper process did not start");
        run_kill(pid);
        return false;
    }
    r->helpers[slot] = pid;
    hist_owner_pool_set(r->pool, (guint)slot, &o);
    return true;
}

/* Kills a helper owner at times spread over the run and replaces it;
 * each death is a fault in the history.  The prober registers every key
 * it can for the victim just before, and every key for itself right
 * after (before the registry's monitor can have noticed): one still held
 * by the dead owner must be taken, not refused. */
static gpointer killer_loop(gpointer data)
{
    threads_run *r = data;
    g_autoptr(GError) err = NULL;
    g_autofree char *path = g_build_filename(r->o->dir, "faults.log", NULL);
    hist_log *log = hist_log_open(path, true, &err);
    GRand *rand = g_rand_new_with_seed(r->o->seed ^ 0x5eed);
    gint64 period = (gint64)(r->o->seconds * G_USEC_PER_SEC / r->o->kills);
    pthread_mutex_lock(&r->lock);
    while (log != NULL && !r->stop) {
        gint64 wake = g_get_monotonic_time() + period / 2 +
                      g_rand_int_range(rand, 0, (gint32)MAX(period, 2));
        if (wake >= r->deadline ||
            hist_cond_wait_until(&r->cond, &r->lock, wake) || r->stop)
            break;
        int slot = g_rand_int_range(rand, 0, r->n_helpers);
        procreg_owner o;
        procreg_owner_from_pid(r->helpers[slot], &o, NULL);
        char *owner = hist_owner_text(&o);
#ifdef PROCREG_TEST_FORCE_DEAD_HOLDER
        gate_close(r);
        hist_client_unregister_forced(r->prober, 0);
#endif
        hist_client_register_each(r->prober, &o);
        int64_t inv = hist_now();
        run_kill(r->helpers[slot]);
        int64_t res = hist_now();
        hist_log_printf(log, "death owner=%s inv=%" PRId64 " res=%" PRId64,
                        owner, inv, res);
        g_hash_table_add(r->dead, owner);
        r->kills++;
        hist_client_register_each(r->prober, NULL);
#ifdef PROCREG_TEST_FORCE_DEAD_HOLDER
        gate_open(r);
#endif
        if (!start_helper(r, slot, &err)) {
            fprintf(stderr, "history: %s\n", err->message);
            r->failed = true;
            break;
        }
    }
    pthread_mutex_unlock(&r->lock);
    g_rand_free(rand);
    if (log == NULL || !hist_log_close(log, &err)) {
        fprintf(stderr, "history: faults: %s\n", err->message);
        r->failed = true;
    }
    return NULL;
}

int run_threads(const run_opts *o, const char *spec, int helpers)
{
    /* @DIR@: the run's private directory (an lmdb file inside). */
    g_auto(GStrv) parts = g_strsplit(spec, "@DIR@", -1);
    g_autofree char *opened = g_strjoinv(o->dir, parts);
    threads_run r = {.o = o, .n_helpers = helpers};
    r.w = (hist_workload){.n_keys = o->keys, .ns = RUN_NS, .drop = true,
                          .list = true};
    r.pool = hist_owner_pool_new();
    r.dead = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    r.helpers = g_new0(GPid, MAX(helpers, 1));
    pthread_mutex_init(&r.lock, NULL);
    hist_cond_init(&r.cond);
#ifdef PROCREG_TEST_FORCE_DEAD_HOLDER
    pthread_mutex_init(&r.gate, NULL);
    hist_cond_init(&r.gate_cond);
#endif
    int result = RUN_ERROR;
    g_autoptr(GError) err = NULL;
    g_autoptr(GString) report = g_string_new(NULL);
    /* The clients, then the one that recounts, then the prober. */
    int n_logs = o->clients + 2;
    client_thread *threads = g_new0(client_thread, n_logs);
    GThread **handles = g_new0(GThread *, o->clients);
    GThread *killer = NULL;
    int started = 0;

    for (int i = 0; i < helpers; i++)
        if (!start_helper(&r, i, &err))
            goto out;
    if (procreg_open(opened, &r.reg, &err) != 0)
        goto out;
    for (int i = 0; i < n_logs; i++) {
        g_autofree char *name = g_strdup_printf("client-%d.log", i);
        g_autofree char *path = g_build_filename(o->dir, name, NULL);
        threads[i].run = &r;
        threads[i].log = hist_log_open(path, false, &err);
        if (threads[i].log == NULL)
            goto out;
        threads[i].client = hist_client_new(r.reg, i, o->seed + (guint32)i,
                                            &r.w, threads[i].log,
                                            helpers ? r.pool : NULL);
        if (i < o->clients &&
            hist_client_subscribe(threads[i].client, NULL, &err) != 0)
            goto out;
    }
    r.prober = threads[o->clients + 1].client;
    r.deadline = g_get_monotonic_time() +
                 (gint64)(o->seconds * G_USEC_PER_SEC);
    for (; started < o->clients; started++)
        handles[started] = g_thread_new("history-client", client_loop,
                                        &threads[started]);
    if (helpers > 0)
        killer = g_thread_new("history-killer", killer_loop, &r);
    guint64 total = 0;
    for (int i = 0; i < started; i++) {
        g_thread_join(handles[i]);
        total += threads[i].ops;
    }
    started = 0;
    if (killer != NULL) {
        pthread_mutex_lock(&r.lock);
        r.stop = TRUE;
        pthread_cond_signal(&r.cond);
        pthread_mutex_unlock(&r.lock);
        g_thread_join(killer);
        killer = NULL;
    }
    /* Drain: every subscription must deliver up to the last event. */
    uint64_t last = procreg_event_last_seq(r.reg);
    for (int i = 0; i < o->clients; i++)
        hist_client_end_events(threads[i].client,
                               hist_client_wait_seq(threads[i].client, last,
                                                    10000));
    bool recount = run_wait_reaped(r.reg, RUN_NS, r.dead, 5000, report) &&
                   hist_client_recount(threads[o->clients].client, report);
    printf("history: %s: %d threads ran %" G_GUINT64_FORMAT
           " operations in %.1f s; %u owner processes killed\n",
           spec, o->clients, total, o->seconds, r.kills);
    result = r.failed ? RUN_ERROR : RUN_OK;
    for (int i = 0; i < n_logs; i++) {
        hist_client_free(threads[i].client);
        threads[i].client = NULL;
        if (!hist_log_close(threads[i].log, &err) && result == RUN_OK)
            result = RUN_ERROR;
        threads[i].log = NULL;
    }
    if (result == RUN_OK) {
        bool session = g_str_has_prefix(spec, "optimized");
        const char *ttl = strstr(spec, "ttl_ms=");
        /* The decorator's bound: its TTL plus a coarse-clock tick; the
         * rest is this loaded machine's scheduling. */
        int64_t ttl_ms = ttl ? atoi(ttl + 7) : 250;
        hist_check_opts check = {.session = session,
                                 .stale_ns = (ttl_ms + 50) * 1000000};
        result = run_check_dir(o, &check, spec);
        if (!recount) {
            g_string_append(o->report, report->str);
            result = RUN_VIOLATION;
        }
    }
out:
    if (err != NULL)
        fprintf(stderr, "history: %s\n", err->message);
    for (int i = 0; i < started; i++)
        g_thread_join(handles[i]);
    for (int i = 0; i < n_logs; i++) {
        hist_client_free(threads[i].client);
        if (threads[i].log != NULL)
            hist_log_close(threads[i].log, NULL);
    }
    procreg_close(r.reg);
    for (int i = 0; i < helpers; i++)
        if (r.helpers[i] != 0)
            run_kill(r.helpers[i]);
    g_free(r.helpers);
    g_free(handles);
    g_free(threads);
    g_hash_table_unref(r.dead);
    hist_owner_pool_free(r.pool);
    pthread_mutex_destroy(&r.lock);
    pthread_cond_destroy(&r.cond);
#ifdef PROCREG_TEST_FORCE_DEAD_HOLDER
    pthread_mutex_destroy(&r.gate);
    pthread_cond_destroy(&r.gate_cond);
#endif
    return result;
}

/* ---- main ---- */

/* A helper owner.  It watches its parent process itself: the kernel's
 * PR_SET_PDEATHSIG fires when the parent *thread* that spawned it exits,
 * and the killer thread that replaces helpers ends before the test. */
static int sleeper_main(const char *parent)
{
    if (write(STDOUT_FILENO, "u", 1) != 1)
        return 1;
    while (getppid() == atoi(parent))
        g_usleep(100000);
    return 0;
}

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s threads SPEC | lmdb | etcd | check [--session-ms N] "
            "FILE...\n  [--clients N] [--keys N] [--seconds S] [--seed N] "
            "[--keep] [--helpers N] [--kills N] [--ops N] [--etcd-bin=PATH]\n",
            prog);
}

static void rm_rf(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    for (const char *name; d && (name = g_dir_read_name(d)) != NULL;) {
        g_autofree char *p = g_build_filename(dir, name, NULL);
        if (g_file_test(p, G_FILE_TEST_IS_DIR) &&
            !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
            rm_rf(p);
        else
            unlink(p);
    }
    rmdir(dir);
}

/* One run of @mode in a fresh private directory. */
static int run_once(run_opts *o, GPtrArray *rest, int helpers)
{
    const char *mode = rest->pdata[0];
    g_autoptr(GError) err = NULL;
    o->dir = g_dir_make_tmp("procreg-history-XXXXXX", &err);
    if (o->dir == NULL) {
        fprintf(stderr, "history: %s\n", err->message);
        return RUN_ERROR;
    }
    printf("history: seed %u (rerun with --seed %u)\n", o->seed, o->seed);
    fflush(stdout); /* before any fork copies the buffer */
    int rc;
    if (strcmp(mode, "threads") == 0)
        rc = run_threads(o, rest->pdata[1], helpers);
    else if (strcmp(mode, "lmdb") == 0)
        rc = run_lmdb(o);
    else
        rc = run_etcd(o);
    if (!o->keep)
        rm_rf(o->dir);
    g_clear_pointer(&o->dir, g_free);
    return rc;
}

static int check_files(GPtrArray *rest, int session_ms)
{
    hist_check_opts check = {.session = session_ms >= 0,
                             .stale_ns = (int64_t)session_ms * 1000000};
    g_autoptr(hist) h = hist_new();
    g_autoptr(GError) err = NULL;
    for (guint i = 1; i < rest->len; i++)
        if (!hist_load_file(h, rest->pdata[i], &err)) {
            fprintf(stderr, "history: %s\n", err->message);
            return RUN_ERROR;
        }
    g_autoptr(GString) report = g_string_new(NULL);
    hist_check_stats st;
    bool ok = hist_check(h, &check, report, &st);
    printf("history: %u operations checked in %.3f s\n%s", h->ops->len,
           st.seconds, report->str);
    return ok ? RUN_OK : RUN_VIOLATION;
}

/* The rounds of a run (the long run repeats it until the time is
 * spent), then the verdict, with --expect applied. */
static int run_rounds(run_opts *o, GPtrArray *rest, int helpers,
                      const char *expect)
{
    const char *env = g_getenv("PROCREG_HISTORY_SECONDS");
    gint64 until = g_get_monotonic_time() +
                   (gint64)(env ? g_ascii_strtod(env, NULL) : 0) *
                       G_USEC_PER_SEC;
    int rc, rounds = 0;
    do {
        rc = run_once(o, rest, helpers);
        rounds++;
        o->seed = (guint32)g_random_int();
    } while (rc == RUN_OK && g_get_monotonic_time() < until);
    if (env != NULL)
        printf("history: %d rounds\n", rounds);
    printf("%s", o->report->str);
    if (expect == NULL)
        return rc;
    g_auto(GStrv) texts = g_strsplit(expect, "|", -1);
    bool seen = false;
    for (char **t = texts; rc == RUN_VIOLATION && *t && !seen; t++)
        seen = strstr(o->report->str, *t) != NULL;
    if (!seen)
        printf("history: FAIL: expected a violation that says '%s'\n",
               expect);
    else
        printf("history: found the expected violation ('%s')\n", expect);
    return seen ? RUN_OK : RUN_VIOLATION;
}

int main(int argc, char **argv)
{
    /* glib allocates the lock of its GVariant type cache on first use,
     * with an atomic exchange ThreadSanitizer cannot see: take it here,
     * before any thread (a client's, or a backend's) makes a variant. */
    g_variant_unref(g_variant_ref_sink(g_variant_new("a{sv}", NULL)));
    if (argc >= 3 && strcmp(argv[1], "--sleeper") == 0)
        return sleeper_main(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "--txn-holder") == 0)
        return run_txn_holder_main(argv[2]);
    run_opts o = {.seconds = 2, .clients = 4, .keys = 6, .kills = 6,
                  .seed = (guint32)g_random_int()};
    int helpers = 2;
    int session_ms = -1;
    int client_id = -1;
    const char *expect = NULL;
    const char *dir = NULL;
    g_autoptr(GPtrArray) rest = g_ptr_array_new();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--clients") == 0 && next)
            o.clients = atoi(argv[++i]);
        else if (strcmp(a, "--keys") == 0 && next)
            o.keys = atoi(argv[++i]);
        else if (strcmp(a, "--seconds") == 0 && next)
            o.seconds = g_ascii_strtod(argv[++i], NULL);
        else if (strcmp(a, "--ops") == 0 && next)
            o.ops = g_ascii_strtoull(argv[++i], NULL, 10);
        else if (strcmp(a, "--seed") == 0 && next)
            o.seed = (guint32)strtoul(argv[++i], NULL, 10);
        else if (strcmp(a, "--helpers") == 0 && next)
            helpers = atoi(argv[++i]);
        else if (strcmp(a, "--kills") == 0 && next)
            o.kills = atoi(argv[++i]);
        else if (strcmp(a, "--session-ms") == 0 && next)
            session_ms = atoi(argv[++i]);
        else if (strcmp(a, "--dir") == 0 && next)
            dir = argv[++i];
        else if (strcmp(a, "--client") == 0 && next)
            client_id = atoi(argv[++i]);
        else if (strcmp(a, "--expect") == 0 && next)
            expect = argv[++i];
        else if (strcmp(a, "--backend-module") == 0 && next) {
            g_autoptr(GError) err = NULL;
            if (procreg_backend_load_module(argv[++i], NULL, &err) != 0) {
                fprintf(stderr, "history: %s\n", err->message);
                return RUN_ERROR;
            }
        } else if (strcmp(a, "--keep") == 0)
            o.keep = true;
        else if (g_str_has_prefix(a, "--etcd-bin="))
            o.etcd_bin = a + strlen("--etcd-bin=");
        else
            g_ptr_array_add(rest, argv[i]);
    }
    const char *mode = rest->len ? rest->pdata[0] : "";
    if (strcmp(mode, "check") == 0)
        return check_files(rest, session_ms);
    bool known = (client_id >= 0 && dir != NULL && rest->len == 1) ||
                 (strcmp(mode, "threads") == 0 && rest->len == 2) ||
                 ((strcmp(mode, "lmdb") == 0 || strcmp(mode, "etcd") == 0) &&
                  rest->len == 1);
    if (!known || o.clients < 1 || o.keys < 1 || o.kills < 1 ||
        o.seconds <= 0) {
        usage(argv[0]);
        return RUN_ERROR;
    }
    o.self = g_file_read_link("/proc/self/exe", NULL);
    o.report = g_string_new(NULL);
    int rc;
    if (client_id >= 0) {
        o.dir = g_strdup(dir);
        rc = run_client_main(&o, client_id, rest->pdata[0]);
        g_free(o.dir);
    } else {
        rc = run_rounds(&o, rest, helpers, expect);
    }
    g_string_free(o.report, TRUE);
    g_free(o.self);
    return rc;
}
