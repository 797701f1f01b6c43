/*
 * Compliance cases for locks (procreg_lock()), which the core builds of
 * entries, so every backend must carry them:
 *  - one process: exclusion, a try that says who holds the lock, names
 *    apart from entries, FIFO order between threads;
 *  - real processes on a shared backend: a counter that processes bump
 *    under the lock comes out exact; a holder SIGKILLed while two waiters
 *    queue hands the lock to the first of them; a waiter SIGKILLed in the
 *    queue does not block the one behind it.
 * The child side is cx_lock_child() (mode "lock"), driven by lines on its
 * stdin; it serves the start-once and namespace-settings cases too
 * (start.c, nsmeta.c).
 */
#include "compliance-private.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Long enough for an etcd lease (the suite's is 5 s) to run out. */
#define LOCK_WAIT_MS 30000
#define NS "lk"
#define QNS "procreg:lock:" NS

/* ---- the child ---- */

/* Bump the number in @path @rounds times, each time under the lock: read,
 * yield, write (without the lock, processes would lose updates). */
static int count_rounds(procreg *reg, const char *path, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        procreg_lock_handle *h = NULL;
        GError *err = NULL;
        if (procreg_lock(reg, NS, "counter", LOCK_WAIT_MS, NULL, &h, &err)) {
            fprintf(stderr, "child: lock: %s\n", err->message);
            g_error_free(err);
            return 1;
        }
        int fd = open(path, O_RDWR);
        char buf[32] = {0};
        bool ok = fd >= 0 && pread(fd, buf, sizeof buf - 1, 0) > 0;
        sched_yield();
        if (ok) {
            int len = g_snprintf(buf, sizeof buf, "%-20ld\n",
                                 strtol(buf, NULL, 10) + 1);
            ok = pwrite(fd, buf, (size_t)len, 0) == len;
        }
        if (fd >= 0)
            close(fd);
        if (procreg_unlock(reg, h, NULL) != 0 || !ok) {
            fprintf(stderr, "child: round %d failed\n", i);
            return 1;
        }
    }
    return 0;
}

/* The child's start function: says "starting", then returns what the
 * parent tells it ("ok": started, the child owns it; else a failure). */
static int child_start(procreg *reg, const char *ns, const char *name,
                       procreg_owner *owner, GVariant **metadata,
                       gpointer user_data, GError **error)
{
    printf("starting\n");
    fflush(stdout);
    char line[64] = "";
    if (fgets(line, sizeof line, stdin) == NULL || strcmp(line, "ok\n") != 0)
        return procreg_set_error(error, PROCREG_EBACKEND, "told to fail");
    *metadata = g_variant_new_parsed("{'by': <'child'>}");
    return 0;
}

int cx_lock_child(procreg *reg)
{
    char line[1024];
    procreg_lock_handle *held = NULL;
    int status = 0;
    while (fgets(line, sizeof line, stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        GError *err = NULL;
        if (g_str_has_prefix(line, "count ")) {
            char *path = line + 6, *sp = strrchr(path, ' ');
            if (sp == NULL)
                return 2;
            *sp = '\0';
            int rc = count_rounds(reg, path, atoi(sp + 1));
            printf(rc == 0 ? "done\n" : "failed\n");
            status |= rc;
        } else if (g_str_has_prefix(line, "hold ") && held == NULL) {
            if (procreg_lock(reg, NS, line + 5, LOCK_WAIT_MS, NULL, &held,
                             &err) == 0) {
                printf("held\n");
            } else {
                printf("failed %s\n", err->message);
                g_clear_error(&err);
                status = 1;
            }
        } else if (g_str_has_prefix(line, "start ")) {
            bool started = false;
            int rc = procreg_start_once(reg, NS, line + 6, child_start, NULL,
                                        NULL, LOCK_WAIT_MS, NULL, NULL,
                                        &started, NULL);
            printf("started %d %d\n", (int)started, rc);
        } else if (g_str_has_prefix(line, "put ")) {
            /* A setting, and an entry of our own that goes with us. */
            int rc = procreg_namespace_meta_put(reg, NS, line + 4,
                                                g_variant_new_string("child"),
                                                NULL);
            if (rc == 0)
                rc = procreg_register(reg, NS, "child-entry", NULL, NULL,
                                      NULL, NULL);
            printf(rc == 0 ? "put\n" : "failed %d\n", rc);
        } else if (strcmp(line, "release") == 0 && held != NULL) {
            status |= procreg_unlock(reg, held, NULL) != 0;
            held = NULL;
            printf("released\n");
        } else {
            fprintf(stderr, "child: unexpected command '%s'\n", line);
            return 2;
        }
        fflush(stdout);
    }
    if (held != NULL)
        procreg_unlock(reg, held, NULL);
    return status;
}

/* ---- helpers ---- */

static size_t tickets(procreg *reg)
{
    size_t n = 0;
    return procreg_count(reg, QNS, &n, NULL) == 0 ? n : 0;
}

static bool wait_tickets(procreg *reg, size_t want)
{
    gint64 until = g_get_monotonic_time() + (gint64)LOCK_WAIT_MS * 1000;
    while (tickets(reg) != want && g_get_monotonic_time() < until)
        g_usleep(2000);
    return tickets(reg) == want;
}

/* Whether @c has written nothing yet. */
static bool silent(const Spawned *c)
{
    struct pollfd p = {.fd = c->out, .events = POLLIN};
    return poll(&p, 1, 0) == 0;
}

/* Send @cmd to @c and check its answer begins with @want. */
static bool ask(Spawned *c, const char *cmd, const char *want, int ms)
{
    if (cmd != NULL && !cx_write_line(c->in, cmd))
        return false;
    g_autofree char *line = cx_read_line_within(c->out, ms);
    if (line == NULL || !g_str_has_prefix(line, want)) {
        g_test_message("child %d answered '%s' to '%s'", (int)c->pid,
                       line ? line : "(nothing)", cmd ? cmd : "");
        return false;
    }
    return true;
}

/* A thread that takes a lock, for the one-process cases. */
typedef struct {
    procreg *reg;
    const char *name;
    int timeout_ms;
    int rc;
    GError *err;
    procreg_lock_handle *lock;
    pthread_t thread;
} Locker;

static void *locker_run(void *p)
{
    Locker *l = p;
    l->rc = procreg_lock(l->reg, NS, l->name, l->timeout_ms, NULL, &l->lock,
                         &l->err);
    return NULL;
}

static void locker_start(Locker *l, procreg *reg, const char *name,
                         int timeout_ms)
{
    *l = (Locker){.reg = reg, .name = name, .timeout_ms = timeout_ms};
    pthread_create(&l->thread, NULL, locker_run, l);
}

/* ---- one process ---- */

void case_lock_basic(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    procreg_lock_handle *h = NULL;
    CHECK_OK(procreg_lock(f->reg, NS, "db", -1, NULL, &h, &err), err);
    CHECK(procreg_lock_handle_get_revision(h) > 0);
    /* The entry (lk, db) is another thing than the lock (lk, db). */
    int rc_reg = cx_quick_register(f->reg, NS, "db", NULL);

    Locker l;
    locker_start(&l, f->reg, "db", 0);
    pthread_join(l.thread, NULL);
    const procreg_error_details *d = procreg_error_get_details(l.err);
    bool says_holder = d != NULL && d->entry != NULL &&
                       d->entry->owner.pid == getpid() &&
                       g_str_has_prefix(d->entry->name, "db#");
    g_clear_error(&l.err);
    size_t n_held = tickets(f->reg);
    int rc_unlock = procreg_unlock(f->reg, h, &err);
    CHECK_RC(rc_reg, 0);
    CHECK_MSG(l.rc == PROCREG_ETIMEDOUT,
              "a try of a held lock gave %d (%s)", l.rc,
              procreg_strerror(l.rc));
    CHECK_MSG(says_holder, "the try's error does not name the holder");
    CHECK_MSG(n_held == 1, "%zu tickets while one lock was held", n_held);
    CHECK_OK(rc_unlock, err);
    CHECK_MSG(tickets(f->reg) == 0, "a ticket stayed after unlock");
    procreg_owner o;
    CHECK_OK(procreg_lookup(f->reg, NS, "db", &o, &err), err);

    CHECK_ERR(procreg_register(f->reg, QNS, "db#0", NULL, NULL, NULL, &err),
              err, PROCREG_EINVAL);
    CHECK_OK(procreg_lock(f->reg, NS, "db", 0, NULL, &h, &err), err);
    CHECK_OK(procreg_unlock(f->reg, h, &err), err);
}

void case_lock_fifo(Fixture *f)
{
    enum { WAITERS = 3 };
    g_autoptr(GError) err = NULL;
    procreg_lock_handle *h = NULL;
    CHECK_OK(procreg_lock(f->reg, NS, "q", -1, NULL, &h, &err), err);
    Locker l[WAITERS];
    int started = 0;
    bool queued = true;
    for (; started < WAITERS && queued; started++) {
        locker_start(&l[started], f->reg, "q", LOCK_WAIT_MS);
        queued = wait_tickets(f->reg, (size_t)started + 2);
    }
    /* Each unlock must let exactly the next one in. */
    int order_broken = -1;
    procreg_lock_handle *prev = h;
    for (int i = 0; i < started; i++) {
        procreg_unlock(f->reg, prev, NULL);
        pthread_join(l[i].thread, NULL);
        prev = l[i].lock;
        if (l[i].rc != 0 && order_broken < 0)
            order_broken = i;
        g_clear_error(&l[i].err);
    }
    if (prev != NULL)
        procreg_unlock(f->reg, prev, NULL);
    CHECK_MSG(queued, "a waiter's ticket did not show");
    CHECK_MSG(order_broken < 0, "waiter %d did not get the lock in turn",
              order_broken);
    CHECK_MSG(tickets(f->reg) == 0, "tickets stayed");
}

/* ---- real processes ---- */

/* Rounds per process: $PROCREG_COMPLIANCE_LOCK_ROUNDS (the coord suite
 * runs lmdb with 1000), else 250, or 25 on a distributed backend (etcd:
 * each round is three quorum writes). */
static int lock_rounds(const Fixture *f)
{
    const char *env = g_getenv("PROCREG_COMPLIANCE_LOCK_ROUNDS");
    if (env != NULL && atoi(env) > 0)
        return atoi(env);
    return (f->caps & PROCREG_CAP_DISTRIBUTED) ? 25 : 250;
}

void case_lock_processes(Fixture *f)
{
    enum { PROCS = 4 };
    int rounds = lock_rounds(f);
    g_autoptr(GError) err = NULL;
    g_autofree char *dir = g_dir_make_tmp("procreg-lock-XXXXXX", &err);
    CHECK_MSG(dir != NULL, "no temporary directory: %s", err->message);
    g_autofree char *path = g_build_filename(dir, "counter", NULL);
    CHECK(g_file_set_contents(path, "0\n", -1, NULL));
    g_autofree char *cmd = g_strdup_printf("count %s %d", path, rounds);
    g_auto(SpawnedKilled) c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
    Spawned *c[PROCS] = {&c0, &c1, &c2, &c3};
    bool ok = true;
    for (int i = 0; i < PROCS && ok; i++)
        ok = cx_spawn(f, "lock", c[i], &err) &&
             cx_write_line(c[i]->in, cmd);
    for (int i = 0; i < PROCS && ok; i++)
        ok = ask(c[i], NULL, "done", 300000);
    g_autofree char *text = NULL;
    g_file_get_contents(path, &text, NULL, NULL);
    unlink(path);
    rmdir(dir);
    CHECK_MSG(ok, "a child failed (its stderr says why)");
    long want = (long)PROCS * rounds, got = text ? strtol(text, NULL, 10) : -1;
    CHECK_MSG(got == want, "%d processes x %d rounds under the lock: the "
              "counter is %ld, not %ld", PROCS, rounds, got, want);
    CHECK_MSG(tickets(f->reg) == 0, "tickets stayed");
}

void case_lock_holder_killed(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_auto(SpawnedKilled) holder = {0}, w1 = {0}, w2 = {0};
    CHECK_MSG(cx_spawn(f, "lock", &holder, &err) &&
                  cx_spawn(f, "lock", &w1, &err) &&
                  cx_spawn(f, "lock", &w2, &err),
              "cannot run the children: %s", err->message);
    CHECK_MSG(ask(&holder, "hold a", "held", LOCK_WAIT_MS),
              "the first child did not get the lock");
    CHECK(cx_write_line(w1.in, "hold a"));
    CHECK_MSG(wait_tickets(f->reg, 2), "the first waiter did not queue");
    CHECK(cx_write_line(w2.in, "hold a"));
    CHECK_MSG(wait_tickets(f->reg, 3), "the second waiter did not queue");

    cx_spawned_kill(&holder);
    CHECK_MSG(ask(&w1, NULL, "held", LOCK_WAIT_MS),
              "the first waiter did not get the lock after the holder was "
              "killed");
    CHECK_MSG(silent(&w2), "the second waiter got the lock too");
    CHECK_MSG(ask(&w1, "release", "released", LOCK_WAIT_MS),
              "the first waiter could not unlock");
    CHECK_MSG(ask(&w2, NULL, "held", LOCK_WAIT_MS),
              "the second waiter did not get the lock after the first");
    CHECK_MSG(ask(&w2, "release", "released", LOCK_WAIT_MS),
              "the second waiter could not unlock");
}

void case_lock_waiter_killed(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    procreg_lock_handle *h = NULL;
    CHECK_OK(procreg_lock(f->reg, NS, "b", -1, NULL, &h, &err), err);
    g_auto(SpawnedKilled) w1 = {0}, w2 = {0};
    bool spawned = cx_spawn(f, "lock", &w1, &err) &&
                   cx_spawn(f, "lock", &w2, &err);
    bool queued = spawned && cx_write_line(w1.in, "hold b") &&
                  wait_tickets(f->reg, 2) && cx_write_line(w2.in, "hold b") &&
                  wait_tickets(f->reg, 3);
    cx_spawned_kill(&w1);
    int rc = procreg_unlock(f->reg, h, &err);
    CHECK_MSG(spawned, "cannot run the children: %s", err->message);
    CHECK_MSG(queued, "the waiters did not queue");
    CHECK_OK(rc, err);
    CHECK_MSG(ask(&w2, NULL, "held", LOCK_WAIT_MS),
              "the waiter behind a killed one did not get the lock");
    CHECK_MSG(ask(&w2, "release", "released", LOCK_WAIT_MS),
              "the waiter could not unlock");
}
