/*
 * A registry shared by processes that cannot see each other in /proc
 * (mounted hidepid=2): a live owner of another user must never look dead,
 * so its entries are neither reaped nor hidden, and a group-commit
 * leader never drops its pending request (backends/lmdb/batch.c).
 *
 * The hidden view is a child forked before anything else runs, which
 * enters it for good (tests/hidden-proc.h: a private mount namespace,
 * uid 65534) and then waits for a byte; the test's own process (root)
 * owns the entries and registers.  The files are made writable for the
 * child.  This test links the lmdb backend built with
 * PROCREG_TEST_BATCH_HOOK, whose hook holds the child's leader.
 */
#include "lmdb-test-util.h"
#include "../hidden-proc.h"

#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern void (*procreg_lmdb_batch_hook)(const char *point);

#define NS "hidden"

typedef lt_fixture fixture;

/* Set up by lt_fx_setup(); the batch hook a test set goes with its files. */
static void teardown(fixture *f, gconstpointer data)
{
    procreg_lmdb_batch_hook = NULL;
    lt_fx_teardown(f, data);
}

/* ---- the hidden child ---- */

typedef struct {
    pid_t pid;
    int in;   /* bytes to it: go on */
    FILE *out; /* its lines */
} hidden;

/* What the hidden child runs once it is told to go: it says its
 * findings on @out. */
typedef void (*hidden_body)(const char *spec, int in, FILE *out);

/* Wait for a byte from the parent; exit if it is gone. */
static void hidden_wait(int in)
{
    char c;
    if (read(in, &c, 1) != 1)
        _exit(3);
}

static void hidden_say(FILE *out, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void hidden_say(FILE *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fputc('\n', out);
    fflush(out);
}

/* Fork the hidden child (before this process opens anything: the child
 * is single-threaded); false with the test skipped when the view cannot
 * be had. */
static bool hidden_start(hidden *h, const char *spec, hidden_body body)
{
    int to[2], from[2];
    g_assert_cmpint(pipe(to), ==, 0);
    g_assert_cmpint(pipe(from), ==, 0);
    h->pid = fork();
    g_assert_cmpint(h->pid, >=, 0);
    if (h->pid == 0) {
        close(to[1]);
        close(from[0]);
        FILE *out = fdopen(from[1], "w");
        char *why = hidden_proc_enter();
        if (why != NULL) {
            hidden_say(out, "skip: %s", why);
            _exit(0);
        }
        hidden_say(out, "ready");
        hidden_wait(to[0]);
        body(spec, to[0], out);
        _exit(0);
    }
    close(to[0]);
    close(from[1]);
    h->in = to[1];
    h->out = fdopen(from[0], "r");
    setvbuf(h->out, NULL, _IONBF, 0);
    char line[256];
    struct pollfd p = {.fd = from[0], .events = POLLIN};
    if (poll(&p, 1, 10000) != 1 || fgets(line, sizeof line, h->out) == NULL)
        g_error("the hidden child said nothing");
    g_strchomp(line);
    if (g_str_has_prefix(line, "skip: ")) {
        g_test_skip(line + 6);
        g_assert_cmpint(waitpid(h->pid, NULL, 0), ==, h->pid);
        close(h->in);
        fclose(h->out);
        return false;
    }
    g_assert_cmpstr(line, ==, "ready");
    return true;
}

static void hidden_go(hidden *h)
{
    g_assert_cmpint(write(h->in, "g", 1), ==, 1);
}

/* The next line the hidden child says, within 10 s. */
static char *hidden_says(hidden *h)
{
    struct pollfd p = {.fd = fileno(h->out), .events = POLLIN};
    char line[256];
    if (poll(&p, 1, 10000) != 1 || fgets(line, sizeof line, h->out) == NULL)
        g_error("the hidden child said nothing within 10 s");
    return g_strdup(g_strchomp(line));
}

static void hidden_expect(hidden *h, const char *want)
{
    char *got = hidden_says(h);
    g_assert_cmpstr(got, ==, want);
    g_free(got);
}

static void hidden_finish(hidden *h)
{
    int status;
    g_assert_cmpint(waitpid(h->pid, &status, 0), ==, h->pid);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    close(h->in);
    fclose(h->out);
}

/* The registry's files, created by this (root) process, writable by the
 * hidden child. */
static void share_files(const char *dir)
{
    g_assert_cmpint(chmod(dir, 0777), ==, 0);
    GDir *d = g_dir_open(dir, 0, NULL);
    g_assert_nonnull(d);
    const char *n;
    while ((n = g_dir_read_name(d)) != NULL) {
        char *p = g_build_filename(dir, n, NULL);
        g_assert_cmpint(chmod(p, 0666), ==, 0);
        g_free(p);
    }
    g_dir_close(d);
}

/* ---- entries of a live owner ---- */

/* The hidden child looks up, counts and registers over the entries of
 * its parent (live, root) and of a reaped root process. */
static void entries_body(const char *spec, int in, FILE *out)
{
    procreg *reg = lt_open(spec);
    procreg_owner o = {0};
    int lookup = procreg_lookup(reg, NS, "live", &o, NULL);
    size_t n = 0, listed = 0;
    procreg_entry *all = NULL;
    int counted = procreg_count(reg, NS, &n, NULL);
    int list = procreg_list(reg, NS, &all, &listed, NULL);
    procreg_entries_free(all, listed);
    int over_live = procreg_register(reg, NS, "live", NULL, NULL, NULL, NULL);
    int over_dead = procreg_register(reg, NS, "dead", NULL, NULL, NULL, NULL);
    hidden_say(out, "lookup %d %d count %d %zu list %d %zu register %d %d",
               lookup, (int)o.pid, counted, n, list, listed, over_live,
               over_dead);
    procreg_close(reg);
}

/* Entries of a live root process survive a hidden child's lookup, count,
 * list and registration over them; a reaped owner's are still reaped
 * there. */
static void test_entries_survive(fixture *f, gconstpointer data)
{
    hidden h;
    if (!hidden_start(&h, f->spec, entries_body))
        return;
    pid_t doomed = fork();
    if (doomed == 0) {
        pause();
        _exit(0);
    }
    procreg *reg = lt_open(f->spec);
    procreg_owner dead_owner;
    g_assert_cmpint(procreg_owner_from_pid(doomed, &dead_owner, NULL), ==, 0);
    procreg_entry live = {0};
    g_assert_cmpint(procreg_register(reg, NS, "live", NULL, NULL, &live,
                                     NULL), ==, 0);
    g_assert_cmpint(procreg_register(reg, NS, "dead", &dead_owner, NULL, NULL,
                                     NULL), ==, 0);
    /* Closed before the death: no monitor of ours reaps it. */
    procreg_close(reg);
    kill(doomed, SIGKILL);
    g_assert_cmpint(waitpid(doomed, NULL, 0), ==, doomed);
    share_files(f->dir);

    hidden_go(&h);
    char *want = g_strdup_printf("lookup 0 %d count 0 1 list 0 1 register "
                                 "%d 0", (int)getpid(), PROCREG_EEXISTS);
    hidden_expect(&h, want);
    g_free(want);
    hidden_finish(&h);

    reg = lt_open(f->spec);
    procreg_entry now = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, NS, "live", &now, NULL), ==, 0);
    g_assert_cmpint(now.owner.pid, ==, getpid());
    g_assert_cmpuint(now.revision, ==, live.revision);
    procreg_entry_clear(&now);
    procreg_entry_clear(&live);
    procreg_close(reg);
}

/* ---- a batch led by the hidden child ---- */

/* This process's registrant: asleep on its slot (hook "wait"), then
 * done. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool waiting, done;
    int rc;
} root = {.lock = PTHREAD_MUTEX_INITIALIZER,
          .cond = PTHREAD_COND_INITIALIZER};

static void root_hook(const char *point)
{
    if (strcmp(point, "wait") != 0)
        return;
    pthread_mutex_lock(&root.lock);
    root.waiting = true;
    pthread_cond_broadcast(&root.cond);
    pthread_mutex_unlock(&root.lock);
}

static gpointer root_registrant(gpointer data)
{
    procreg *reg = lt_open(data);
    int rc = procreg_register(reg, NS, "root", NULL, NULL, NULL, NULL);
    procreg_close(reg);
    pthread_mutex_lock(&root.lock);
    root.rc = rc;
    root.done = true;
    pthread_cond_broadcast(&root.cond);
    pthread_mutex_unlock(&root.lock);
    return NULL;
}

/* Wait (10 s at most) until @flag is set under root.lock. */
static void root_wait_for(const bool *flag, const char *what)
{
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += 10;
    pthread_mutex_lock(&root.lock);
    while (!*flag)
        if (pthread_cond_timedwait(&root.cond, &root.lock, &end) != 0)
            g_error("the root registrant never %s within 10 s", what);
    pthread_mutex_unlock(&root.lock);
}

static int leader_in;
static FILE *leader_out;

/* The hidden child's hook: its first "lead" says so and waits. */
static void leader_hook(const char *point)
{
    if (strcmp(point, "lead") != 0)
        return;
    procreg_lmdb_batch_hook = NULL;
    hidden_say(leader_out, "lead");
    hidden_wait(leader_in);
}

static void leader_body(const char *spec, int in, FILE *out)
{
    procreg *reg = lt_open(spec);
    leader_in = in;
    leader_out = out;
    procreg_lmdb_batch_hook = leader_hook;
    int rc = procreg_register(reg, NS, "hidden", NULL, NULL, NULL, NULL);
    hidden_say(out, "= %d dropped %" G_GINT64_FORMAT, rc,
               lt_stat(reg, "batch_dropped"));
    procreg_close(reg);
}

/* The hidden child leads a batch (the writer lock its own) while this
 * process's registrant sleeps on its slot: the leader must apply that
 * request, not drop it as a dead registrant's, and the registrant must
 * get its answer (dropped, it used to wait for ever). */
static void test_batch_leader(fixture *f, gconstpointer data)
{
    hidden h;
    if (!hidden_start(&h, f->spec, leader_body))
        return;
    procreg *reg = lt_open(f->spec);
    share_files(f->dir);
    hidden_go(&h);
    hidden_expect(&h, "lead");
    root.waiting = root.done = false;
    procreg_lmdb_batch_hook = root_hook;
    GThread *t = g_thread_new("root-registrant", root_registrant, f->spec);
    root_wait_for(&root.waiting, "slept on its slot");
    hidden_go(&h);
    hidden_expect(&h, "= 0 dropped 0");
    root_wait_for(&root.done, "was answered");
    g_thread_join(t);
    g_assert_cmpint(root.rc, ==, 0);
    hidden_finish(&h);
    procreg_owner o = {0};
    g_assert_cmpint(procreg_lookup(reg, NS, "root", &o, NULL), ==, 0);
    g_assert_cmpint(o.pid, ==, getpid());
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    procreg_close(reg);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add("/lmdb/hidepid/entries-survive", fixture, NULL, lt_fx_setup,
               test_entries_survive, teardown);
    g_test_add("/lmdb/hidepid/batch-leader", fixture, NULL, lt_fx_setup,
               test_batch_leader, teardown);
    return g_test_run();
}
