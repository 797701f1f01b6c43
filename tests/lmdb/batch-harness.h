/* What the group-commit tests (test-batch.c, test-batch-truth.c) share:
 * the children they drive through the library's test hook (this program
 * re-executed with --child), the fixture, and registrant threads.  They
 * link the lmdb backend built with PROCREG_TEST_BATCH_HOOK. */
#ifndef PROCREG_TESTS_LMDB_BATCH_HARNESS_H
#define PROCREG_TESTS_LMDB_BATCH_HARNESS_H

#include "lmdb-test-util.h"

#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

extern void (*procreg_lmdb_batch_hook)(const char *point);
extern int procreg_lmdb_batch_wait_ms;
extern int procreg_lmdb_batch_judge_dead;
extern int procreg_lmdb_batch_lock_errno;

#define NS "batch"

/* ---- child processes ---- */

/* --child SPEC NAME ACTIONS: ACTIONS is "point:action,..." with action s
 * (say the point's name on a line), w (say it, then wait for a byte), k
 * (SIGKILL this process), d (from now on, as a leader, judge every other
 * process's registrant dead) or e (from now on, fail every take of the
 * writer lock, the batch's tries and the solo path's), at the point's
 * first time; an item "ms=N" sets the registrant's longest sleep on its
 * slot (batch.c's BATCH_WAIT_MS).
 * Registers NAME, says "= RC RECOVERIES DROPPED" (and "! MESSAGE" on a
 * failure) and sleeps until killed. */
static char **child_actions;

static inline void child_hook(const char *point)
{
    for (char **a = child_actions; *a != NULL; a++) {
        char *colon = strchr(*a, ':');
        if (colon == NULL || strncmp(*a, point, (size_t)(colon - *a)) != 0 ||
            point[colon - *a] != '\0')
            continue;
        char act = colon[1];
        colon[1] = '-'; /* once */
        if (act == 'k')
            raise(SIGKILL);
        if (act == 'd')
            procreg_lmdb_batch_judge_dead = 1;
        if (act == 'e')
            __atomic_store_n(&procreg_lmdb_batch_lock_errno, ENOLCK,
                             __ATOMIC_RELAXED);
        if (act == 's' || act == 'w') {
            printf("%s\n", point);
            fflush(stdout);
        }
        char c;
        if (act == 'w' && read(STDIN_FILENO, &c, 1) != 1)
            _exit(3);
    }
}

static inline G_NORETURN void child_main(const char *spec, const char *name,
                                  const char *actions)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* no orphan when the test fails */
    child_actions = g_strsplit(actions, ",", -1);
    for (char **a = child_actions; *a != NULL; a++)
        if (g_str_has_prefix(*a, "ms="))
            procreg_lmdb_batch_wait_ms = atoi(*a + 3);
    procreg *reg = lt_open(spec);
    procreg_lmdb_batch_hook = child_hook;
    GError *err = NULL;
    int rc = procreg_register(reg, NS, name, NULL, NULL, NULL, &err);
    printf("= %d %" G_GINT64_FORMAT " %" G_GINT64_FORMAT "\n", rc,
           lt_stat(reg, "batch_recoveries"), lt_stat(reg, "batch_dropped"));
    if (err != NULL)
        printf("! %s\n", err->message);
    fflush(stdout);
    for (;;)
        pause();
}

typedef struct {
    GPid pid;
    int in;
    FILE *out;
} child;

static inline void spawn_child(child *c, const char *spec, const char *name,
                        const char *actions)
{
    char *exe = g_file_read_link("/proc/self/exe", NULL);
    char *argv[] = {exe, (char *)"--child", (char *)spec, (char *)name,
                    (char *)actions, NULL};
    int out;
    GError *err = NULL;
    if (!g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                  NULL, NULL, &c->pid, &c->in, &out, NULL,
                                  &err))
        g_error("spawning a child: %s", err->message);
    c->out = fdopen(out, "r");
    /* Unbuffered: a line read ahead would hide from child_says()'s poll. */
    setvbuf(c->out, NULL, _IONBF, 0);
    g_free(exe);
}

/* The next line @c says (within @ms). */
static inline char *child_says(child *c, int ms)
{
    struct pollfd p = {.fd = fileno(c->out), .events = POLLIN};
    char line[128];
    if (poll(&p, 1, ms) != 1 || fgets(line, sizeof line, c->out) == NULL)
        g_error("child %d said nothing within %d ms", (int)c->pid, ms);
    return g_strdup(g_strchomp(line));
}

/* @c says @want within @ms. */
static inline void expect_within(child *c, const char *want, int ms)
{
    char *got = child_says(c, ms);
    g_assert_cmpstr(got, ==, want);
    g_free(got);
}

/* @c says nothing for @ms. */
static inline void expect_silent(child *c, int ms)
{
    struct pollfd p = {.fd = fileno(c->out), .events = POLLIN};
    g_assert_cmpint(poll(&p, 1, ms), ==, 0);
}

static inline void expect(child *c, const char *want)
{
    expect_within(c, want, 10000);
}

/* Whether @pid's main thread sleeps in a shared FUTEX_WAIT (glibc's own
 * locks are private): a registrant asleep on its slot, after its hook
 * "wait". */
static inline bool asleep_on_slot(pid_t pid)
{
    char *path = g_strdup_printf("/proc/%d/syscall", pid), *text = NULL;
    char *stat_path = g_strdup_printf("/proc/%d/stat", pid), *st = NULL;
    bool asleep = false;
    if (g_file_get_contents(path, &text, NULL, NULL) &&
        g_file_get_contents(stat_path, &st, NULL, NULL)) {
        const char *state = strrchr(st, ')');
        char *end = NULL;
        long nr = strtol(text, &end, 10);
        strtoul(end, &end, 16); /* the futex's address */
        long op = (long)strtoul(end, NULL, 16);
        asleep = state != NULL && state[1] == ' ' && state[2] == 'S' &&
                 nr == SYS_futex && op == FUTEX_WAIT;
    }
    g_free(text);
    g_free(st);
    g_free(path);
    g_free(stat_path);
    return asleep;
}

/* Wait until @c sleeps on its slot, where only a wake-up or the sleep's
 * bound can end its wait. */
static inline void wait_asleep(child *c)
{
    gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (!asleep_on_slot(c->pid))
        if (g_get_monotonic_time() > end)
            g_error("child %d never slept on its slot", (int)c->pid);
        else
            g_usleep(1000);
}

static inline void go(child *c)
{
    g_assert_cmpint(write(c->in, "g", 1), ==, 1);
}

/* Reap @c, which dies of a SIGKILL: its own (at a hook point), or ours
 * when @kill_it. */
static inline void reap_how(child *c, bool kill_it)
{
    int status;
    if (kill_it)
        kill(c->pid, SIGKILL);
    g_assert_cmpint(waitpid(c->pid, &status, 0), ==, c->pid);
    g_assert_true(WIFSIGNALED(status));
    g_assert_cmpint(WTERMSIG(status), ==, SIGKILL);
    close(c->in);
    fclose(c->out);
}

static inline void reap(child *c)
{
    reap_how(c, true);
}

/* Reap @c once it killed itself at its hook point. */
static inline void reap_self_killed(child *c)
{
    reap_how(c, false);
}

/* ---- fixture ---- */

typedef lt_fixture fixture;

/* Set up by lt_fx_setup(); the batch hook a test set goes with its files. */
static inline void teardown(fixture *f, gconstpointer data)
{
    procreg_lmdb_batch_hook = NULL;
    lt_fx_teardown(f, data);
}

/* The owner of @name, or pid 0 when it is not registered. */
static inline pid_t owner_of(procreg *reg, const char *name)
{
    procreg_owner o = {0};
    int rc = procreg_lookup(reg, NS, name, &o, NULL);
    g_assert_true(rc == 0 || rc == PROCREG_ENOTFOUND);
    return rc == 0 ? o.pid : 0;
}

/* pthreads, not GMutex: glib 2.74's GMutex is a bare futex that
 * ThreadSanitizer cannot see. */
static inline struct timespec deadline_in(int seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += seconds;
    return ts;
}

/* A registrant thread with a handle of its own (threads sharing one
 * would queue on the core's per-key locks, in front of the backend). */
typedef struct {
    procreg *reg;
    char name[32];
    int rc;
    procreg_entry current;
} registrant;

static inline gpointer registrant_main(gpointer data)
{
    registrant *r = data;
    r->rc = procreg_register(r->reg, NS, r->name, NULL, NULL, &r->current,
                             NULL);
    return NULL;
}

static inline void registrant_finish(registrant *r, GThread *t)
{
    g_thread_join(t);
    procreg_entry_clear(&r->current);
    procreg_close(r->reg);
}

/* How long a registrant asleep on its slot may take to lead after its
 * leader died: its sleep ends within batch.c's BATCH_WAIT_MS (100 ms),
 * then it takes the lock; the rest is slack for a loaded machine. */
#define DEAD_LEADER_MS 2000

#endif
