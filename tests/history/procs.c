/*
 * The multi-process setups of history-run: client processes (this
 * program re-executed, each its own owner) record histories on one lmdb
 * file or on a three-member etcd cluster while the parent injects
 * faults: clients SIGKILLed mid-operation (their entries must vanish as
 * their owner died; their last operation stays without an answer), an
 * lmdb writer killed inside its write transaction, etcd members
 * SIGKILLed and restarted or SIGSTOPped (a client's own first endpoint).
 *
 * Protocol on each client's stdin/stdout: it prints "ready PID:START"
 * and runs for the given time, prints "done"; on "drain ID..." it
 * registers its end marker and waits until its subscription delivered
 * every listed client's marker (which each wrote after all its
 * operations), then prints "drained"; on "exit" it closes and exits.
 */
#include "run.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#if HIST_HAVE_LMDB
#include <lmdb.h>
#endif
#if HIST_HAVE_ETCD
#include "etcd-harness.h"
#endif

/* ---- the client process ---- */

static char *read_stdin_line(void)
{
    GString *s = g_string_new(NULL);
    char c;
    ssize_t n;
    while ((n = read(STDIN_FILENO, &c, 1)) == 1 ||
           (n < 0 && errno == EINTR))
        if (n == 1) {
            if (c == '\n')
                return g_string_free(s, FALSE);
            g_string_append_c(s, c);
        }
    g_string_free(s, TRUE);
    return NULL;
}

static void say(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

int run_client_main(const run_opts *o, int id, const char *spec)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *name = g_strdup_printf("client-%d.log", id);
    g_autofree char *path = g_build_filename(o->dir, name, NULL);
    hist_log *log = hist_log_open(path, true, &err);
    procreg *reg = NULL;
    if (log == NULL || procreg_open(spec, &reg, &err) != 0) {
        fprintf(stderr, "history client %d: %s\n", id, err->message);
        return RUN_ERROR;
    }
    hist_workload w = {.n_keys = o->keys, .ns = RUN_NS, .drop = true,
                       .list = true};
    hist_client *c = hist_client_new(reg, id, o->seed + (guint32)id, &w, log,
                                     NULL);
    if (hist_client_subscribe(c, RUN_DRAIN_NS, &err) != 0) {
        fprintf(stderr, "history client %d: %s\n", id, err->message);
        return RUN_ERROR;
    }
    procreg_owner self;
    procreg_owner_self(&self);
    g_autofree char *owner = hist_owner_text(&self);
    say("ready %s", owner);
    gint64 deadline = g_get_monotonic_time() +
                      (gint64)(o->seconds * G_USEC_PER_SEC);
    for (guint64 n = 0; (o->ops == 0 || n < o->ops) &&
                        g_get_monotonic_time() < deadline; n++)
        hist_client_step(c);
    say("done");
    for (char *line; (line = read_stdin_line()) != NULL; g_free(line)) {
        if (g_str_has_prefix(line, "drain")) {
            g_auto(GStrv) ids_s = g_strsplit(line + 5, " ", -1);
            g_autoptr(GArray) ids = g_array_new(FALSE, FALSE, sizeof(int));
            for (char **p = ids_s; *p; p++)
                if (**p) {
                    int x = atoi(*p);
                    g_array_append_val(ids, x);
                }
            g_autofree char *marker = g_strdup_printf("end-%d", id);
            int rc = procreg_register(reg, RUN_DRAIN_NS, marker, NULL, NULL,
                                      NULL, &err);
            if (rc != 0)
                fprintf(stderr, "history client %d: end marker: %s\n", id,
                        err->message);
            bool complete =
                rc == 0 && hist_client_wait_markers(c, (int *)ids->data,
                                                    (int)ids->len, 20000);
            hist_client_end_events(c, complete);
            say("drained");
        } else if (strcmp(line, "exit") == 0) {
            g_free(line);
            break;
        }
    }
    hist_client_free(c);
    procreg_close(reg);
    if (!hist_log_close(log, &err)) {
        fprintf(stderr, "history client %d: %s\n", id, err->message);
        return RUN_ERROR;
    }
    return RUN_OK;
}

/* ---- the parent ---- */

typedef struct {
    int id;
    GPid pid; /* 0: gone */
    int in, out;
    GString *buf;
    char *owner; /* "PID:START", from its ready line */
} child;

typedef struct {
    const run_opts *o;
    GPtrArray *children; /* child* */
    int next_id;
    GHashTable *dead;    /* owners killed */
    hist_log *faults;
    gint64 end;          /* monotonic µs when the clients stop */
    guint kills;
    /* The parent's own registry and client, which registers every key
     * around each kill (see kill_client). */
    procreg *reg;
    hist_log *prober_log;
    hist_client *prober;
} procs;

static void child_free(gpointer p)
{
    child *c = p;
    if (c->pid != 0)
        run_kill(c->pid);
    if (c->in >= 0)
        close(c->in);
    if (c->out >= 0)
        close(c->out);
    g_string_free(c->buf, TRUE);
    g_free(c->owner);
    g_free(c);
}

/* The next line @c printed, waiting up to @timeout_ms; NULL on timeout
 * or end of file. */
static char *child_line(child *c, int timeout_ms)
{
    gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        char *nl = memchr(c->buf->str, '\n', c->buf->len);
        if (nl != NULL) {
            char *line = g_strndup(c->buf->str, nl - c->buf->str);
            g_string_erase(c->buf, 0, nl - c->buf->str + 1);
            return line;
        }
        gint64 left = (end - g_get_monotonic_time()) / 1000;
        if (left <= 0)
            return NULL;
        struct pollfd p = {c->out, POLLIN, 0};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return NULL;
        char buf[256];
        ssize_t n = read(c->out, buf, sizeof buf);
        if (n <= 0)
            return NULL;
        g_string_append_len(c->buf, buf, n);
    }
}

static bool child_tell(child *c, const char *line)
{
    g_autofree char *l = g_strconcat(line, "\n", NULL);
    size_t len = strlen(l);
    return write(c->in, l, len) == (ssize_t)len;
}

/* Start client @id on @spec for what is left of the run. */
static child *start_client(procs *p, const char *spec, GError **error)
{
    child *c = g_new0(child, 1);
    c->id = p->next_id++;
    c->in = c->out = -1;
    c->buf = g_string_new(NULL);
    double left = (double)(p->end - g_get_monotonic_time()) / G_USEC_PER_SEC;
    char id[16], seconds[32], keys[16], seed[16], ops[32];
    g_snprintf(id, sizeof id, "%d", c->id);
    g_ascii_dtostr(seconds, sizeof seconds, MAX(left, 0.1));
    g_snprintf(keys, sizeof keys, "%d", p->o->keys);
    g_snprintf(seed, sizeof seed, "%u", p->o->seed);
    g_snprintf(ops, sizeof ops, "%" G_GUINT64_FORMAT, p->o->ops);
    const char *args[] = {"--client", id, "--dir", p->o->dir, "--seconds",
                          seconds, "--keys", keys, "--seed", seed, "--ops",
                          ops, spec, NULL};
    c->pid = run_spawn_self(p->o, args, &c->in, &c->out, error);
    g_autofree char *ready = c->pid ? child_line(c, 30000) : NULL;
    if (ready == NULL || !g_str_has_prefix(ready, "ready ")) {
        if (error && *error == NULL)
            g_set_error(error, G_SPAWN_ERROR, G_SPAWN_ERROR_FAILED,
                        "client %d did not start", c->id);
        child_free(c);
        return NULL;
    }
    c->owner = g_strdup(ready + strlen("ready "));
    g_ptr_array_add(p->children, c);
    return c;
}

/* SIGKILL a running client (a fault: its owner dies mid-operation).
 * Just before, the prober registers every key it can for the victim;
 * right after waitpid, every key for itself: a key the dead client still
 * holds must be taken, not refused. */
static void kill_client(procs *p, child *c)
{
    procreg_owner victim = {0};
    if (sscanf(c->owner, "%d:%" SCNu64, &victim.pid,
               &victim.start_time) == 2)
        hist_client_register_each(p->prober, &victim);
    int64_t inv = hist_now();
    run_kill(c->pid);
    c->pid = 0;
    hist_log_printf(p->faults, "death owner=%s inv=%" PRId64 " res=%" PRId64,
                    c->owner, inv, hist_now());
    g_hash_table_add(p->dead, g_strdup(c->owner));
    p->kills++;
    hist_client_register_each(p->prober, NULL);
}

static child *random_live_client(procs *p, GRand *rand)
{
    g_autoptr(GPtrArray) live = g_ptr_array_new();
    for (guint i = 0; i < p->children->len; i++) {
        child *c = p->children->pdata[i];
        if (c->pid != 0)
            g_ptr_array_add(live, c);
    }
    return live->len ? live->pdata[g_rand_int_range(rand, 0, (int)live->len)]
                     : NULL;
}

/* Sleep until @at (monotonic µs). */
static void sleep_until(gint64 at)
{
    gint64 d = at - g_get_monotonic_time();
    if (d > 0)
        g_usleep((gulong)d);
}

/* Say that client @c did not @what in time, with the last line of its
 * history: the call it is stuck in. */
static int stuck(procs *p, child *c, const char *what)
{
    g_autofree char *name = g_strdup_printf("client-%d.log", c->id);
    g_autofree char *path = g_build_filename(p->o->dir, name, NULL);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        text = g_strdup("");
    g_strchomp(text);
    const char *last = strrchr(text, '\n');
    fprintf(stderr, "history: client %d did not %s in 60 s; its last "
            "record: %s\n", c->id, what, last ? last + 1 : text);
    return RUN_ERROR;
}

/* After the run: "done" from each, drain their subscriptions, recount
 * through a registry of this process, let them exit, check. */
static int finish(procs *p, const char *spec, int reap_ms, const char *what)
{
    g_autoptr(GString) report = g_string_new(NULL);
    g_autoptr(GString) ids = g_string_new("drain");
    int rc = RUN_OK;
    for (guint i = 0; i < p->children->len; i++) {
        child *c = p->children->pdata[i];
        if (c->pid == 0)
            continue;
        g_autofree char *l = child_line(c, 60000);
        if (l == NULL || strcmp(l, "done") != 0)
            return stuck(p, c, "finish");
        g_string_append_printf(ids, " %d", c->id);
    }
    for (guint i = 0; i < p->children->len; i++) {
        child *c = p->children->pdata[i];
        if (c->pid != 0 && !child_tell(c, ids->str))
            return RUN_ERROR;
    }
    for (guint i = 0; i < p->children->len; i++) {
        child *c = p->children->pdata[i];
        g_autofree char *l = c->pid ? child_line(c, 60000) : NULL;
        if (c->pid != 0 && (l == NULL || strcmp(l, "drained") != 0))
            return stuck(p, c, "drain");
    }
    /* The recount, with every client alive but idle. */
    g_autoptr(GError) err = NULL;
    g_autofree char *path = g_build_filename(p->o->dir, "final.log", NULL);
    hist_log *log = hist_log_open(path, false, &err);
    procreg *reg = NULL;
    if (log == NULL || procreg_open(spec, &reg, &err) != 0) {
        fprintf(stderr, "history: %s\n", err->message);
        if (log != NULL)
            hist_log_close(log, NULL);
        return RUN_ERROR;
    }
    hist_workload w = {.n_keys = p->o->keys, .ns = RUN_NS};
    hist_client *final = hist_client_new(reg, 1000000, p->o->seed, &w, log,
                                         NULL);
    bool recount = run_wait_reaped(reg, RUN_NS, p->dead, reap_ms, report) &&
                   hist_client_recount(final, report);
    hist_client_free(final);
    procreg_close(reg);
    if (!hist_log_close(log, &err)) {
        fprintf(stderr, "history: %s\n", err->message);
        return RUN_ERROR;
    }
    for (guint i = 0; i < p->children->len; i++) {
        child *c = p->children->pdata[i];
        if (c->pid == 0)
            continue;
        child_tell(c, "exit");
        int status = 0;
        while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
            ;
        g_spawn_close_pid(c->pid);
        c->pid = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "history: client %d failed (status %d)\n", c->id,
                    status);
            rc = RUN_ERROR;
        }
    }
    /* Every log complete before the check reads them. */
    g_clear_pointer(&p->prober, hist_client_free);
    g_clear_pointer(&p->reg, procreg_close);
    hist_log *logs[] = {p->faults, p->prober_log};
    p->faults = p->prober_log = NULL;
    for (guint i = 0; i < G_N_ELEMENTS(logs); i++) {
        g_clear_error(&err);
        if (!hist_log_close(logs[i], &err)) {
            fprintf(stderr, "history: %s\n", err->message);
            rc = RUN_ERROR;
        }
    }
    if (rc != RUN_OK)
        return rc;
    printf("history: %s: %d clients started, %u killed\n", what, p->next_id,
           p->kills);
    hist_check_opts check = {0};
    rc = run_check_dir(p->o, &check, what);
    if (!recount) {
        g_string_append(p->o->report, report->str);
        rc = RUN_VIOLATION;
    }
    return rc;
}

static bool procs_init(procs *p, const run_opts *o, const char *spec)
{
    *p = (procs){.o = o};
    p->children = g_ptr_array_new_with_free_func(child_free);
    p->dead = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GError) err = NULL;
    g_autofree char *faults = g_build_filename(o->dir, "faults.log", NULL);
    g_autofree char *prober = g_build_filename(o->dir, "prober.log", NULL);
    if ((p->faults = hist_log_open(faults, true, &err)) == NULL ||
        (p->prober_log = hist_log_open(prober, false, &err)) == NULL ||
        procreg_open(spec, &p->reg, &err) != 0) {
        fprintf(stderr, "history: %s\n", err->message);
        return false;
    }
    hist_workload w = {.n_keys = o->keys, .ns = RUN_NS};
    p->prober = hist_client_new(p->reg, 1000001, o->seed, &w, p->prober_log,
                                NULL);
    p->end = g_get_monotonic_time() + (gint64)(o->seconds * G_USEC_PER_SEC);
    return true;
}

static void procs_clear(procs *p)
{
    g_ptr_array_unref(p->children);
    g_hash_table_unref(p->dead);
    hist_client_free(p->prober);
    procreg_close(p->reg);
    if (p->prober_log != NULL)
        hist_log_close(p->prober_log, NULL);
    if (p->faults != NULL)
        hist_log_close(p->faults, NULL);
}

/* ---- lmdb ---- */

#if HIST_HAVE_LMDB
int run_txn_holder_main(const char *path)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = mdb_env_create(&env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(env, 4);
    if (rc == 0)
        rc = mdb_env_open(env, path, MDB_NOSUBDIR | MDB_NOTLS, 0600);
    if (rc == 0)
        rc = mdb_txn_begin(env, NULL, 0, &txn);
    /* Format 4: the entries are in the main database, "ns\0name" (those
     * without a NUL are the named databases' records;
     * backends/lmdb/format.c). */
    if (rc == 0)
        rc = mdb_dbi_open(txn, NULL, 0, &dbi);
    /* Delete the first entry, uncommitted: dying now must lose it. */
    if (rc == 0)
        rc = mdb_cursor_open(txn, dbi, &cur);
    k.mv_size = 1;
    k.mv_data = "\x01";
    int grc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : rc;
    while (grc == 0 && memchr(k.mv_data, 0, k.mv_size) == NULL)
        grc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    if (rc == 0 && grc == 0)
        rc = mdb_cursor_del(cur, 0);
    if (rc != 0) {
        fprintf(stderr, "history txn holder: %s\n", mdb_strerror(rc));
        return RUN_ERROR;
    }
    say("in-txn");
    for (;;)
        pause();
}
#else
int run_txn_holder_main(const char *path)
{
    (void)path;
    return RUN_ERROR;
}
#endif

int run_lmdb(const run_opts *o)
{
#if !HIST_HAVE_LMDB
    (void)o;
    printf("history: no lmdb backend in this build\n");
    return RUN_SKIP;
#else
    g_autofree char *file = g_build_filename(o->dir, "registry.mdb", NULL);
    g_autofree char *spec = g_strdup_printf("lmdb:path=%s,durability=nosync",
                                            file);
    procs p;
    if (!procs_init(&p, o, spec)) {
        procs_clear(&p);
        return RUN_ERROR;
    }
    g_autoptr(GError) err = NULL;
    GRand *rand = g_rand_new_with_seed(o->seed ^ 0xfa17);
    int rc = RUN_ERROR;
    gint64 start = g_get_monotonic_time();
    gint64 span = p.end - start;
    for (int i = 0; i < o->clients; i++)
        if (start_client(&p, spec, &err) == NULL)
            goto out;
    /* A quarter in: kill a client mid-operation, start another. */
    sleep_until(start + span / 4);
    kill_client(&p, random_live_client(&p, rand));
    if (start_client(&p, spec, &err) == NULL)
        goto out;
    /* Half way: a writer dies inside its write transaction (holding
     * LMDB's writer lock, with a deletion not committed); the clients
     * wait for the lock, then recover it. */
    sleep_until(start + span / 2);
    {
        int out = -1;
        const char *args[] = {"--txn-holder", file, NULL};
        child holder = {.pid = run_spawn_self(o, args, NULL, &out, &err),
                        .out = out, .in = -1, .buf = g_string_new(NULL)};
        g_autofree char *l = holder.pid ? child_line(&holder, 10000) : NULL;
        bool held = l != NULL && strcmp(l, "in-txn") == 0;
        if (holder.pid && held)
            g_usleep(100000);
        if (holder.pid)
            run_kill(holder.pid);
        close(out);
        g_string_free(holder.buf, TRUE);
        if (!held) {
            fprintf(stderr, "history: the transaction holder did not start\n");
            goto out;
        }
        hist_log_printf(p.faults, "# an lmdb writer was killed inside its "
                        "transaction at %" PRId64, hist_now());
    }
    /* Three quarters: another client dies. */
    sleep_until(start + 3 * span / 4);
    kill_client(&p, random_live_client(&p, rand));
    rc = finish(&p, spec, 5000, "lmdb, processes");
out:
    if (err != NULL)
        fprintf(stderr, "history: %s\n", err->message);
    g_rand_free(rand);
    procs_clear(&p);
    return rc;
#endif
}

/* ---- etcd ---- */

#if HIST_HAVE_ETCD
/* Endpoints starting at member @first: that member is the client's own. */
static char *rotated_endpoints(const etcd_cluster *cl, int first)
{
    GString *s = g_string_new(NULL);
    for (int i = 0; i < cl->n; i++) {
        g_autofree char *u = etcd_member_url(cl, (first + i) % cl->n);
        g_string_append_printf(s, "%s%s", i ? "," : "", u);
    }
    return g_string_free(s, FALSE);
}

static void kill_member(etcd_cluster *cl, int i)
{
    run_kill(cl->m[i].pid);
    cl->m[i].pid = 0;
}
#endif

int run_etcd(const run_opts *o)
{
#if !HIST_HAVE_ETCD
    (void)o;
    printf("history: no etcd backend in this build\n");
    return RUN_SKIP;
#else
    if (o->etcd_bin != NULL)
        g_setenv("ETCD_BIN", o->etcd_bin, TRUE);
    etcd_harness_require(); /* exits 77 without etcd */
    etcd_cluster cl;
    g_autoptr(GError) err = NULL;
    if (!etcd_cluster_start(&cl, 3, &err)) {
        fprintf(stderr, "history: %s\n", err->message);
        return RUN_ERROR;
    }
    g_autofree char *tag = etcd_random_tag();
    g_autoptr(GPtrArray) specs = g_ptr_array_new_with_free_func(g_free);
    for (int i = 0; i < cl.n; i++) {
        g_autofree char *eps = rotated_endpoints(&cl, i);
        g_ptr_array_add(specs, g_strdup_printf(
            "etcd:endpoints=[%s],prefix=/procreg-history/%s,lease_ttl=5,"
            "timeout_ms=2000", eps, tag));
    }
    procs p;
    if (!procs_init(&p, o, specs->pdata[0])) {
        procs_clear(&p);
        etcd_cluster_destroy(&cl);
        return RUN_ERROR;
    }
    GRand *rand = g_rand_new_with_seed(o->seed ^ 0xe7cd);
    int rc = RUN_ERROR;
    gint64 start = g_get_monotonic_time();
    gint64 span = p.end - start;
    for (int i = 0; i < o->clients; i++)
        if (start_client(&p, specs->pdata[i % cl.n], &err) == NULL)
            goto out;
    /* Client 0's own member stops answering (SIGSTOP), then resumes. */
    sleep_until(start + span / 5);
    kill(cl.m[0].pid, SIGSTOP);
    hist_log_printf(p.faults, "# etcd member 0 stopped at %" PRId64,
                    hist_now());
    g_usleep(1500000);
    kill(cl.m[0].pid, SIGCONT);
    /* A member dies (SIGKILL) and comes back on its data. */
    sleep_until(start + span / 2);
    int victim = 1 + g_rand_int_range(rand, 0, 2);
    kill_member(&cl, victim);
    hist_log_printf(p.faults, "# etcd member %d killed at %" PRId64, victim,
                    hist_now());
    g_usleep(1000000);
    if (!etcd_member_restart(&cl, victim, &err))
        goto out;
    /* A client dies: its entries go when the registry notices. */
    sleep_until(start + 7 * span / 10);
    kill_client(&p, random_live_client(&p, rand));
    if (start_client(&p, specs->pdata[p.next_id % cl.n], &err) == NULL)
        goto out;
    /* Leases: the dead client's entries may last up to lease_ttl. */
    rc = finish(&p, specs->pdata[0], 10000, "etcd, 3 members, processes");
out:
    if (err != NULL)
        fprintf(stderr, "history: %s\n", err->message);
    g_rand_free(rand);
    procs_clear(&p);
    etcd_cluster_destroy(&cl);
    return rc;
#endif
}
