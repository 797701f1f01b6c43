/*
 * Start once in one process (suite 'coord'): one start among concurrent
 * callers, and the interleavings that matter, forced with gates in the
 * start functions themselves:
 *  - a waiter queued while the starter's function runs, which then
 *    succeeds (the waiter gets its entry) or fails (the waiter starts);
 *  - a starter that died between claiming and registering (its claim
 *    ticket left by a dead process, on the gated fake backend);
 *  - a registration that bypasses start once while a start runs.
 * Across real processes: tests/compliance/start.c.
 */
#include "coord-test.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static size_t claims(procreg *reg, const char *ns)
{
    return queue_len(reg, "procreg:start:", ns);
}

static bool wait_claims(procreg *reg, const char *ns, size_t want)
{
    return wait_queue_len(reg, "procreg:start:", ns, want);
}

/* ---- a start function with a gate ---- */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool gated;   /* wait for open before returning */
    bool inside;  /* it is running */
    bool open;
    int result;   /* what it returns once open */
    int calls;
    int destroyed;
    pid_t owner;  /* 0: the caller */
    /* run inside, before returning (a registration that bypasses) */
    void (*also)(procreg *reg, const char *ns, const char *name);
} starter;

static void starter_init(starter *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
}

static void starter_clear(starter *s)
{
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
}

static int start_fn(procreg *reg, const char *ns, const char *name,
                    procreg_owner *owner, GVariant **metadata,
                    gpointer user_data, GError **error)
{
    starter *s = user_data;
    pthread_mutex_lock(&s->lock);
    s->calls++;
    s->inside = true;
    pthread_cond_broadcast(&s->cond);
    while (s->gated && !s->open)
        pthread_cond_wait(&s->cond, &s->lock);
    int rc = s->result;
    pthread_mutex_unlock(&s->lock);
    if (s->also != NULL)
        s->also(reg, ns, name);
    if (rc != 0) {
        g_set_error(error, PROCREG_ERROR, rc, "start of %s failed", name);
        return rc;
    }
    if (s->owner != 0)
        owner->pid = s->owner;
    *metadata = g_variant_new_parsed("{'by': <%i>}", (gint32)getpid());
    return 0;
}

static void starter_destroy(gpointer p)
{
    starter *s = p;
    pthread_mutex_lock(&s->lock);
    s->destroyed++;
    pthread_mutex_unlock(&s->lock);
}

static void starter_wait_inside(starter *s)
{
    pthread_mutex_lock(&s->lock);
    while (!s->inside)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

static void starter_open(starter *s, int result)
{
    pthread_mutex_lock(&s->lock);
    s->result = result;
    s->open = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* ---- a thread that calls procreg_start_once() ---- */

typedef struct {
    procreg *reg;
    const char *ns, *name;
    int timeout_ms;
    starter *s;
    int rc;
    bool started;
    procreg_entry entry;
    GError *err;
    GThread *thread;
} caller;

static gpointer caller_run(gpointer p)
{
    caller *c = p;
    c->rc = procreg_start_once(c->reg, c->ns, c->name, start_fn, c->s,
                               starter_destroy, c->timeout_ms, NULL,
                               &c->entry, &c->started, &c->err);
    return NULL;
}

static void caller_start(caller *c, procreg *reg, const char *ns,
                         const char *name, starter *s)
{
    c->reg = reg;
    c->ns = ns;
    c->name = name;
    c->s = s;
    if (c->timeout_ms == 0)
        c->timeout_ms = WAIT_MS;
    c->thread = g_thread_new("caller", caller_run, c);
}

static void caller_join(caller *c)
{
    g_thread_join(c->thread);
    c->thread = NULL;
}

static void caller_clear(caller *c)
{
    procreg_entry_clear(&c->entry);
    g_clear_error(&c->err);
}

/* ---- cases ---- */

static void test_basic(void)
{
    procreg *reg = open_reg("ghash");
    starter s;
    starter_init(&s);
    procreg_entry e = {0}, again = {0};
    bool started = false;
    GError *err = NULL;
    g_assert_cmpint(procreg_start_once(reg, "svc", "web", start_fn, &s,
                                       starter_destroy, -1, NULL, &e,
                                       &started, &err),
                    ==, 0);
    g_assert_no_error(err);
    g_assert_true(started);
    g_assert_cmpint(s.calls, ==, 1);
    g_assert_cmpint(s.destroyed, ==, 1);
    g_assert_cmpint(e.owner.pid, ==, getpid());
    g_assert_nonnull(e.metadata);
    g_assert_cmpuint(claims(reg, "svc"), ==, 0);
    /* Running: the holder comes back and nothing starts. */
    g_assert_cmpint(procreg_start_once(reg, "svc", "web", start_fn, &s,
                                       starter_destroy, 0, NULL, &again,
                                       &started, NULL),
                    ==, 0);
    g_assert_false(started);
    g_assert_cmpint(s.calls, ==, 1);
    g_assert_cmpint(s.destroyed, ==, 2);
    g_assert_cmpuint(again.revision, ==, e.revision);
    procreg_entry_clear(&again);
    /* Bad input: refused, and user_data still released. */
    g_assert_cmpint(procreg_start_once(reg, "svc", "", start_fn, &s,
                                       starter_destroy, 0, NULL, &again,
                                       &started, &err),
                    ==, PROCREG_EINVAL);
    g_clear_error(&err);
    g_assert_cmpint(procreg_start_once(reg, "svc", "x", NULL, &s,
                                       starter_destroy, 0, NULL, NULL, NULL,
                                       &err),
                    ==, PROCREG_EINVAL);
    g_clear_error(&err);
    g_assert_cmpint(s.destroyed, ==, 4);
    procreg_entry_clear(&e);
    procreg_entry_clear(&again);
    starter_clear(&s);
    procreg_close(reg);
}

/* Many callers at once: one start, one entry for all. */
static void test_concurrent(gconstpointer spec)
{
    enum { N = 8 };
    procreg *reg = open_reg(spec);
    starter s;
    starter_init(&s);
    caller c[N];
    memset(c, 0, sizeof c);
    for (int i = 0; i < N; i++)
        caller_start(&c[i], reg, "svc", "db", &s);
    int started = 0;
    for (int i = 0; i < N; i++) {
        caller_join(&c[i]);
        g_assert_cmpint(c[i].rc, ==, 0);
        started += c[i].started;
        g_assert_cmpuint(c[i].entry.revision, ==, c[0].entry.revision);
    }
    g_assert_cmpint(started, ==, 1);
    g_assert_cmpint(s.calls, ==, 1);
    g_assert_cmpint(s.destroyed, ==, N);
    g_assert_cmpuint(claims(reg, "svc"), ==, 0);
    for (int i = 0; i < N; i++)
        caller_clear(&c[i]);
    starter_clear(&s);
    procreg_close(reg);
}

/* A waiter queues while the starter's function runs; the start succeeds:
 * the waiter gets that entry and never starts. */
static void test_waiter_gets_result(void)
{
    procreg *reg = open_reg("ghash");
    starter a, b;
    starter_init(&a);
    starter_init(&b);
    a.gated = true;
    caller ca = {0}, cb = {0};
    caller_start(&ca, reg, "svc", "q", &a);
    starter_wait_inside(&a);
    caller_start(&cb, reg, "svc", "q", &b);
    g_assert_true(wait_claims(reg, "svc", 2));
    starter_open(&a, 0);
    caller_join(&ca);
    caller_join(&cb);
    g_assert_cmpint(ca.rc, ==, 0);
    g_assert_true(ca.started);
    g_assert_cmpint(cb.rc, ==, 0);
    g_assert_false(cb.started);
    g_assert_cmpint(b.calls, ==, 0);
    g_assert_cmpuint(cb.entry.revision, ==, ca.entry.revision);
    caller_clear(&ca);
    caller_clear(&cb);
    starter_clear(&a);
    starter_clear(&b);
    procreg_close(reg);
}

/* The starter's function fails while a waiter queues: the starter gets
 * its error, nothing is registered, and the waiter starts it itself. */
static void test_waiter_takes_over(void)
{
    procreg *reg = open_reg("ghash");
    starter a, b;
    starter_init(&a);
    starter_init(&b);
    a.gated = true;
    caller ca = {0}, cb = {0};
    caller_start(&ca, reg, "svc", "q", &a);
    starter_wait_inside(&a);
    caller_start(&cb, reg, "svc", "q", &b);
    g_assert_true(wait_claims(reg, "svc", 2));
    starter_open(&a, PROCREG_EBACKEND);
    caller_join(&ca);
    caller_join(&cb);
    g_assert_cmpint(ca.rc, ==, PROCREG_EBACKEND);
    g_assert_false(ca.started);
    g_assert_error(ca.err, PROCREG_ERROR, PROCREG_EBACKEND);
    g_assert_cmpint(cb.rc, ==, 0);
    g_assert_true(cb.started);
    g_assert_cmpint(b.calls, ==, 1);
    g_assert_cmpuint(claims(reg, "svc"), ==, 0);
    caller_clear(&ca);
    caller_clear(&cb);
    starter_clear(&a);
    starter_clear(&b);
    procreg_close(reg);
}

/* A wait for another's start honours its timeout. */
static void test_timeout(void)
{
    procreg *reg = open_reg("ghash");
    starter a, b;
    starter_init(&a);
    starter_init(&b);
    a.gated = true;
    caller ca = {0}, cb = {.timeout_ms = 100};
    caller_start(&ca, reg, "svc", "slow", &a);
    starter_wait_inside(&a);
    caller_start(&cb, reg, "svc", "slow", &b);
    caller_join(&cb);
    g_assert_cmpint(cb.rc, ==, PROCREG_ETIMEDOUT);
    g_assert_cmpint(b.calls, ==, 0);
    g_assert_cmpint(b.destroyed, ==, 1);
    starter_open(&a, 0);
    caller_join(&ca);
    g_assert_cmpint(ca.rc, ==, 0);
    caller_clear(&ca);
    caller_clear(&cb);
    starter_clear(&a);
    starter_clear(&b);
    procreg_close(reg);
}

static void register_directly(procreg *reg, const char *ns, const char *name)
{
    g_assert_cmpint(procreg_register(reg, ns, name, NULL, NULL, NULL, NULL),
                    ==, 0);
}

/* A registration that bypasses start once while a start runs wins: the
 * starter learns the holder (PROCREG_EEXISTS). */
static void test_bypass(void)
{
    procreg *reg = open_reg("ghash");
    starter s;
    starter_init(&s);
    s.also = register_directly;
    procreg_entry e = {0};
    bool started = true;
    GError *err = NULL;
    g_assert_cmpint(procreg_start_once(reg, "svc", "b", start_fn, &s, NULL,
                                       -1, NULL, &e, &started, &err),
                    ==, PROCREG_EEXISTS);
    g_assert_false(started);
    g_assert_cmpint(e.owner.pid, ==, getpid());
    g_assert_null(e.metadata); /* the direct registration's */
    g_clear_error(&err);
    procreg_entry_clear(&e);
    starter_clear(&s);
    procreg_close(reg);
}

static pid_t forked_child(void)
{
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the test */
        pause();
        _exit(0);
    }
    return pid;
}

/* The start function names another process as the owner; when it dies
 * its entry goes, and the next start once starts it again. */
static void test_worker_owner(void)
{
    procreg *reg = open_reg("ghash");
    starter s;
    starter_init(&s);
    s.owner = forked_child();
    procreg_entry e = {0};
    bool started = false;
    g_assert_cmpint(procreg_start_once(reg, "svc", "w", start_fn, &s, NULL,
                                       -1, NULL, &e, &started, NULL),
                    ==, 0);
    g_assert_true(started);
    g_assert_cmpint(e.owner.pid, ==, s.owner);
    procreg_entry_clear(&e);
    kill(s.owner, SIGKILL);
    waitpid(s.owner, NULL, 0);
    s.owner = 0;
    g_assert_cmpint(procreg_start_once(reg, "svc", "w", start_fn, &s, NULL,
                                       -1, NULL, &e, &started, NULL),
                    ==, 0);
    g_assert_true(started);
    g_assert_cmpint(e.owner.pid, ==, getpid());
    g_assert_cmpint(s.calls, ==, 2);
    procreg_entry_clear(&e);
    starter_clear(&s);
    procreg_close(reg);
}

/* A starter that died between claiming and registering left its claim
 * (as another process on a shared backend would): the next caller is not
 * held up by it and starts the service. */
static void test_dead_starter(void)
{
    procreg *reg = open_reg("fake:id=4");
    fake_inner *f = fake_instance(4);
    procreg_owner dead = {.pid = dead_pid()};
    fake_set_owner(f, "procreg:start:svc", "d#00000000000000aa", &dead, NULL);
    starter s;
    starter_init(&s);
    procreg_entry e = {0};
    bool started = false;
    g_assert_cmpint(procreg_start_once(reg, "svc", "d", start_fn, &s, NULL,
                                       0, NULL, &e, &started, NULL),
                    ==, 0);
    g_assert_true(started);
    g_assert_cmpint(s.calls, ==, 1);
    g_assert_cmpuint(claims(reg, "svc"), ==, 0);
    procreg_entry_clear(&e);
    starter_clear(&s);
    procreg_close(reg);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    fake_inner_register_types();
    g_test_add_func("/coord/start/basic", test_basic);
    for (size_t i = 0; i < G_N_ELEMENTS(thread_specs); i++) {
        if (!backend_built(thread_specs[i]))
            continue;
        g_autofree char *path =
            g_strdup_printf("/coord/start/%s/concurrent", thread_specs[i]);
        g_test_add_data_func(path, thread_specs[i], test_concurrent);
    }
    g_test_add_func("/coord/start/waiter-gets-result",
                    test_waiter_gets_result);
    g_test_add_func("/coord/start/waiter-takes-over", test_waiter_takes_over);
    g_test_add_func("/coord/start/timeout", test_timeout);
    g_test_add_func("/coord/start/bypass", test_bypass);
    g_test_add_func("/coord/start/worker-owner", test_worker_owner);
    g_test_add_func("/coord/start/dead-starter", test_dead_starter);
    return g_test_run();
}
