/*
 * Locks in one process (suite 'coord'): the contract on the in-memory
 * backends, and the dangerous interleavings forced with the gated fake
 * backend of tests/optimized (fake-inner.h):
 *  - an unlock that lands between a waiter's listing and its sleep;
 *  - an unlock that lands between the waiter's check of the ticket ahead
 *    and its sleep;
 *  - tickets of dead processes (a killed holder, a killed waiter) ahead of
 *    a waiter, which must not block it;
 * and, with a real process holding a lock on lmdb, a waiter's timeout and
 * cancellation, then the holder's SIGKILL.
 * The same contract across real processes is in the compliance suite
 * (tests/compliance/lock.c).
 */
#include "coord-test.h"

#include <gio/gio.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static size_t tickets(procreg *reg, const char *ns)
{
    return queue_len(reg, "procreg:lock:", ns);
}

static bool wait_tickets(procreg *reg, const char *ns, size_t want)
{
    return wait_queue_len(reg, "procreg:lock:", ns, want);
}

/* ---- a thread that takes a lock ---- */

typedef struct {
    procreg *reg;
    const char *ns, *name;
    int timeout_ms;
    GCancellable *cancellable;
    int rc;
    GError *err;
    procreg_lock_handle *lock;
    gint64 took_us; /* how long procreg_lock() took */
    GThread *thread;
} locker;

static gpointer locker_run(gpointer p)
{
    locker *l = p;
    gint64 t0 = g_get_monotonic_time();
    l->rc = procreg_lock(l->reg, l->ns, l->name, l->timeout_ms,
                         l->cancellable, &l->lock, &l->err);
    l->took_us = g_get_monotonic_time() - t0;
    return NULL;
}

static void locker_start(locker *l, procreg *reg, const char *ns,
                         const char *name, int timeout_ms)
{
    l->reg = reg;
    l->ns = ns;
    l->name = name;
    l->timeout_ms = timeout_ms;
    l->thread = g_thread_new("locker", locker_run, l);
}

static void locker_join(locker *l)
{
    g_thread_join(l->thread);
    l->thread = NULL;
}

/* ---- the contract, one process ---- */

static void test_basic(gconstpointer spec)
{
    procreg *reg = open_reg(spec);
    GError *err = NULL;
    procreg_lock_handle *a = NULL, *b = NULL;
    g_assert_cmpint(procreg_lock(reg, "jobs", "nightly", -1, NULL, &a, &err),
                    ==, 0);
    g_assert_no_error(err);
    uint64_t first = procreg_lock_handle_get_revision(a);
    g_assert_cmpuint(first, >, 0);
    g_assert_cmpuint(tickets(reg, "jobs"), ==, 1);

    /* Held: a try fails at once, and says who holds it. */
    locker l = {0};
    locker_start(&l, reg, "jobs", "nightly", 0);
    locker_join(&l);
    g_assert_cmpint(l.rc, ==, PROCREG_ETIMEDOUT);
    g_assert_null(l.lock);
    g_assert_nonnull(l.err);
    const procreg_error_details *d = procreg_error_get_details(l.err);
    g_assert_nonnull(d->entry);
    g_assert_cmpint(d->entry->owner.pid, ==, getpid());
    g_assert_true(g_str_has_prefix(d->entry->name, "nightly#"));
    g_assert_cmpstr(d->entry->ns, ==, "procreg:lock:jobs");
    g_assert_nonnull(strstr(l.err->message, "held by process"));
    g_clear_error(&l.err);
    /* The failed try left nothing behind. */
    g_assert_cmpuint(tickets(reg, "jobs"), ==, 1);

    /* Another name is another lock. */
    g_assert_cmpint(procreg_lock(reg, "jobs", "hourly", 0, NULL, &b, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_unlock(reg, b, NULL), ==, 0);

    g_assert_cmpint(procreg_unlock(reg, a, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpuint(tickets(reg, "jobs"), ==, 0);
    g_assert_cmpint(procreg_lock(reg, "jobs", "nightly", 0, NULL, &a, NULL),
                    ==, 0);
    g_assert_cmpuint(procreg_lock_handle_get_revision(a), >, first);

    /* A lock whose ticket was forced away is lost: unlock says so. */
    procreg_entry *v = NULL;
    size_t n = 0;
    g_assert_cmpint(procreg_list(reg, "procreg:lock:jobs", &v, &n, NULL), ==,
                    0);
    g_assert_cmpuint(n, ==, 1);
    procreg_key *k = NULL;
    g_assert_cmpint(procreg_key_new(v[0].ns, v[0].name, &k, NULL), ==, 0);
    procreg_entries_free(v, n);
    g_assert_cmpint(procreg_unregister_full(reg, k, 0, PROCREG_FORCE, NULL),
                    ==, 0);
    procreg_key_unref(k);
    g_assert_cmpint(procreg_unlock(reg, a, &err), ==, PROCREG_ENOTFOUND);
    g_assert_nonnull(strstr(err->message, "not held to the end"));
    g_clear_error(&err);
    procreg_close(reg);
}

/* Locks and entries of one (ns, name) are apart; the reserved namespaces
 * are closed to applications' writes; names too long for a ticket are
 * refused with the limit. */
static void test_names_apart(void)
{
    procreg *reg = open_reg("ghash");
    GError *err = NULL;
    procreg_lock_handle *h = NULL;
    g_assert_cmpint(procreg_lock(reg, "svc", "db", -1, NULL, &h, NULL), ==, 0);
    g_assert_cmpint(procreg_register(reg, "svc", "db", NULL, NULL, NULL, NULL),
                    ==, 0);
    size_t n = 9;
    g_assert_cmpint(procreg_count(reg, "svc", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    g_assert_cmpint(procreg_unregister(reg, "svc", "db", NULL), ==, 0);
    g_assert_cmpuint(tickets(reg, "svc"), ==, 1);

    g_assert_cmpint(procreg_register(reg, "procreg:lock:svc", "db#0", NULL,
                                     NULL, NULL, &err),
                    ==, PROCREG_EINVAL);
    g_assert_nonnull(strstr(err->message, "reserved"));
    g_clear_error(&err);
    g_assert_cmpint(procreg_namespace_drop(reg, "procreg:lock:svc", NULL,
                                           NULL, &err),
                    ==, PROCREG_EINVAL);
    g_clear_error(&err);
    g_assert_cmpuint(tickets(reg, "svc"), ==, 1);
    g_assert_cmpint(procreg_unlock(reg, h, NULL), ==, 0);

    char name[PROCREG_NAME_MAX + 1];
    memset(name, 'n', sizeof name - 1);
    name[238] = '\0';
    g_assert_cmpint(procreg_lock(reg, "svc", name, 0, NULL, &h, NULL), ==, 0);
    g_assert_cmpint(procreg_unlock(reg, h, NULL), ==, 0);
    name[238] = 'n';
    name[239] = '\0';
    g_assert_cmpint(procreg_lock(reg, "svc", name, 0, NULL, &h, &err), ==,
                    PROCREG_EINVAL);
    g_assert_nonnull(strstr(err->message, "at most 238"));
    g_assert_null(h);
    g_clear_error(&err);
    char ns[PROCREG_NAME_MAX + 1];
    memset(ns, 's', sizeof ns - 1);
    ns[243] = '\0';
    g_assert_cmpint(procreg_lock(reg, ns, "x", 0, NULL, &h, &err), ==,
                    PROCREG_EINVAL);
    g_assert_nonnull(strstr(err->message, "at most 242"));
    g_clear_error(&err);
    g_assert_cmpint(procreg_lock(reg, "svc", "", 0, NULL, &h, &err), ==,
                    PROCREG_EINVAL);
    g_clear_error(&err);
    procreg_close(reg);
}

/* Waiters get the lock in the order they came. */
static void test_fifo(gconstpointer spec)
{
    enum { N = 6 };
    procreg *reg = open_reg(spec);
    procreg_lock_handle *h = NULL;
    g_assert_cmpint(procreg_lock(reg, "q", "k", -1, NULL, &h, NULL), ==, 0);
    locker l[N] = {{0}};
    for (int i = 0; i < N; i++) {
        locker_start(&l[i], reg, "q", "k", WAIT_MS);
        /* Queued (its ticket is there) before the next comes. */
        g_assert_true(wait_tickets(reg, "q", (size_t)i + 2));
    }
    procreg_lock_handle *prev = h;
    for (int i = 0; i < N; i++) {
        g_assert_cmpint(procreg_unlock(reg, prev, NULL), ==, 0);
        locker_join(&l[i]);
        g_assert_cmpint(l[i].rc, ==, 0);
        /* The next ones still wait: their tickets are all there. */
        g_assert_cmpuint(tickets(reg, "q"), ==, (size_t)(N - i));
        prev = l[i].lock;
    }
    g_assert_cmpint(procreg_unlock(reg, prev, NULL), ==, 0);
    procreg_close(reg);
}

/* Mutual exclusion between threads: a read-pause-write counter comes out
 * exact. */
typedef struct {
    procreg *reg;
    int rounds;
    int *counter;
    int failures;
} counting;

static gpointer count_run(gpointer p)
{
    counting *c = p;
    for (int i = 0; i < c->rounds; i++) {
        procreg_lock_handle *h = NULL;
        if (procreg_lock(c->reg, "count", "c", WAIT_MS, NULL, &h, NULL) != 0) {
            c->failures++;
            continue;
        }
        int v = *c->counter;
        g_thread_yield();
        *c->counter = v + 1;
        if (procreg_unlock(c->reg, h, NULL) != 0)
            c->failures++;
    }
    return NULL;
}

static void test_threads_exclusive(gconstpointer spec)
{
    enum { THREADS = 4, ROUNDS = 300 };
    procreg *reg = open_reg(spec);
    int counter = 0;
    counting c[THREADS];
    GThread *t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        c[i] = (counting){reg, ROUNDS, &counter, 0};
        t[i] = g_thread_new("count", count_run, &c[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        g_thread_join(t[i]);
        g_assert_cmpint(c[i].failures, ==, 0);
    }
    g_assert_cmpint(counter, ==, THREADS * ROUNDS);
    g_assert_cmpuint(tickets(reg, "count"), ==, 0);
    procreg_close(reg);
}

static void test_timeout(void)
{
    procreg *reg = open_reg("ghash");
    procreg_lock_handle *h = NULL;
    g_assert_cmpint(procreg_lock(reg, "t", "k", -1, NULL, &h, NULL), ==, 0);
    locker l = {0};
    locker_start(&l, reg, "t", "k", 100);
    locker_join(&l);
    g_assert_cmpint(l.rc, ==, PROCREG_ETIMEDOUT);
    g_assert_cmpint(l.took_us, >=, 100000);
    g_assert_error(l.err, PROCREG_ERROR, PROCREG_ETIMEDOUT);
    g_clear_error(&l.err);
    g_assert_cmpuint(tickets(reg, "t"), ==, 1);
    g_assert_cmpint(procreg_unlock(reg, h, NULL), ==, 0);
    procreg_close(reg);
}

static void test_cancel(void)
{
    procreg *reg = open_reg("ghash");
    procreg_lock_handle *h = NULL;
    g_assert_cmpint(procreg_lock(reg, "c", "k", -1, NULL, &h, NULL), ==, 0);
    GCancellable *c = g_cancellable_new();
    locker l = {.cancellable = c};
    locker_start(&l, reg, "c", "k", -1);
    g_assert_true(wait_tickets(reg, "c", 2));
    g_cancellable_cancel(c);
    locker_join(&l);
    g_assert_cmpint(l.rc, ==, PROCREG_ECANCELLED);
    g_assert_error(l.err, PROCREG_ERROR, PROCREG_ECANCELLED);
    g_clear_error(&l.err);
    g_assert_cmpuint(tickets(reg, "c"), ==, 1);
    /* Cancelled before the call: it does not even queue. */
    procreg_lock_handle *h2 = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_lock(reg, "c", "k", -1, c, &h2, &err), ==,
                    PROCREG_ECANCELLED);
    g_assert_error(err, PROCREG_ERROR, PROCREG_ECANCELLED);
    g_clear_error(&err);
    g_assert_cmpuint(tickets(reg, "c"), ==, 1);
    g_object_unref(c);
    g_assert_cmpint(procreg_unlock(reg, h, NULL), ==, 0);
    procreg_close(reg);
}

/* ---- forced interleavings, on the gated fake ---- */

static procreg *open_fake(unsigned id, fake_inner **f)
{
    g_autofree char *spec = g_strdup_printf("fake:id=%u", id);
    procreg *reg = open_reg(spec);
    *f = fake_instance(id);
    g_assert_nonnull(*f);
    return reg;
}

/* The holder unlocks after the waiter listed the queue (and saw the
 * holder's ticket ahead) and before it joined the wake-up board: the
 * waiter's check after joining finds the ticket gone.  A lost wake-up
 * would leave it asleep until its timeout (the fake is not shared: no
 * periodic look). */
static void test_unlock_before_sleep(void)
{
    fake_inner *f;
    procreg *reg = open_fake(0, &f);
    procreg_lock_handle *h = NULL;
    g_assert_cmpint(procreg_lock(reg, "r", "k", -1, NULL, &h, NULL), ==, 0);
    fake_hold_next(f, FAKE_LIST_ALL);
    locker l = {0};
    locker_start(&l, reg, "r", "k", WAIT_MS);
    fake_wait_held(f, FAKE_LIST_ALL); /* it listed: the holder is ahead */
    g_assert_cmpint(procreg_unlock(reg, h, NULL), ==, 0);
    fake_release(f, FAKE_LIST_ALL);
    locker_join(&l);
    g_assert_cmpint(l.rc, ==, 0);
    g_assert_cmpint(l.took_us, <, WAIT_MS * 1000 / 2);
    g_assert_cmpint(procreg_unlock(reg, l.lock, NULL), ==, 0);
    procreg_close(reg);
}

/* The holder unlocks after the waiter joined the board, read its
 * generation and saw the ticket still there, and before it slept: the
 * removal moved the generation, so the sleep returns at once. */
static void test_unlock_before_sleep_after_check(void)
{
    fake_inner *f;
    procreg *reg = open_fake(1, &f);
    procreg_lock_handle *h = NULL;
    g_assert_cmpint(procreg_lock(reg, "r", "k", -1, NULL, &h, NULL), ==, 0);
    fake_hold_next(f, FAKE_LOOKUP_ENTRY);
    locker l = {0};
    locker_start(&l, reg, "r", "k", WAIT_MS);
    fake_wait_held(f, FAKE_LOOKUP_ENTRY); /* it saw the ticket ahead */
    g_assert_cmpint(procreg_unlock(reg, h, NULL), ==, 0);
    fake_release(f, FAKE_LOOKUP_ENTRY);
    locker_join(&l);
    g_assert_cmpint(l.rc, ==, 0);
    g_assert_cmpint(l.took_us, <, WAIT_MS * 1000 / 2);
    g_assert_cmpint(procreg_unlock(reg, l.lock, NULL), ==, 0);
    procreg_close(reg);
}

static void count_exits(procreg *reg, const procreg_event *ev, gpointer data)
{
    if (ev->kind == PROCREG_EVENT_UNREGISTERED &&
        ev->reason == PROCREG_REASON_OWNER_EXITED)
        g_atomic_int_inc((gint *)data);
}

/* Tickets of processes that died (a holder killed; a waiter killed while
 * it queued), as another process would have left them in a shared
 * backend, never block the lock: the waiter behind each evicts it, as
 * the owner's cleanup would (reason owner_exited). */
static void test_dead_tickets(void)
{
    fake_inner *f;
    procreg *reg = open_fake(2, &f);
    gint exits = 0;
    uint64_t sub = 0;
    g_assert_cmpint(procreg_subscribe(reg, "procreg:lock:d", NULL,
                                      count_exits, &exits, NULL, NULL, &sub,
                                      NULL),
                    ==, 0);
    fake_set(f, "procreg:lock:d", "k#00000000000000aa", dead_pid(), NULL);
    fake_set(f, "procreg:lock:d", "k#00000000000000bb", dead_pid(), NULL);
    procreg_lock_handle *h = NULL;
    g_assert_cmpint(procreg_lock(reg, "d", "k", 0, NULL, &h, NULL), ==, 0);
    g_assert_cmpuint(tickets(reg, "d"), ==, 1);
    /* A dead ticket behind the holder: the waiter behind it is not held
     * up by it when the holder lets go. */
    fake_set(f, "procreg:lock:d", "k#00000000000000cc", dead_pid(), NULL);
    locker l = {0};
    locker_start(&l, reg, "d", "k", WAIT_MS);
    /* It evicted the dead ticket ahead of it and waits for ours. */
    gint64 until = g_get_monotonic_time() + WAIT_MS * 1000;
    while (g_atomic_int_get(&exits) < 3 && g_get_monotonic_time() < until)
        g_usleep(1000);
    g_assert_cmpint(g_atomic_int_get(&exits), ==, 3);
    g_assert_cmpint(procreg_unlock(reg, h, NULL), ==, 0);
    locker_join(&l);
    g_assert_cmpint(l.rc, ==, 0);
    g_assert_cmpint(procreg_unlock(reg, l.lock, NULL), ==, 0);
    g_assert_cmpint(procreg_unsubscribe(reg, sub), ==, 0);
    g_assert_cmpuint(tickets(reg, "d"), ==, 0);
    procreg_close(reg);
}

/* Another process's unlock on a shared backend reaches a waiter through
 * the backend's notification. */
static void test_external_unlock(void)
{
    fake_inner *f;
    procreg *reg = open_fake(3, &f);
    pid_t other = fork(); /* a live "other process" that owns the ticket */
    g_assert_cmpint(other, >=, 0);
    if (other == 0) {
        pause();
        _exit(0);
    }
    procreg_owner o;
    g_assert_cmpint(procreg_owner_from_pid(other, &o, NULL), ==, 0);
    fake_set_owner(f, "procreg:lock:x", "k#0000000000000001", &o, NULL);
    locker l = {0};
    locker_start(&l, reg, "x", "k", WAIT_MS);
    g_assert_true(wait_tickets(reg, "x", 2));
    g_usleep(20000); /* asleep by now (the test passes either way) */
    g_assert_true(fake_remove(f, "procreg:lock:x", "k#0000000000000001"));
    fake_notify(f, PROCREG_EVENT_UNREGISTERED, "procreg:lock:x",
                "k#0000000000000001");
    locker_join(&l);
    g_assert_cmpint(l.rc, ==, 0);
    g_assert_cmpint(l.took_us, <, WAIT_MS * 1000 / 2);
    g_assert_cmpint(procreg_unlock(reg, l.lock, NULL), ==, 0);
    kill(other, SIGKILL);
    waitpid(other, NULL, 0);
    procreg_close(reg);
}

/* Remove @dir and the files in it. */
static void remove_dir(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *name;
    while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
        g_autofree char *path = g_build_filename(dir, name, NULL);
        unlink(path);
    }
    if (d != NULL)
        g_dir_close(d);
    rmdir(dir);
}

/* Another process holds the lock (lmdb): a waiter here times out naming
 * it, a cancelled one leaves no ticket, and once the holder is SIGKILLed
 * the next one gets in. */
static void test_process_holds(void)
{
    g_autofree char *dir = g_dir_make_tmp("coord-lock-XXXXXX", NULL);
    g_assert_nonnull(dir);
    g_autofree char *spec =
        g_strdup_printf("lmdb:path=%s/r.mdb,durability=nosync", dir);
    int ready[2];
    g_assert_cmpint(pipe(ready), ==, 0);
    pid_t holder = fork();
    g_assert_cmpint(holder, >=, 0);
    if (holder == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        procreg *r = NULL;
        procreg_lock_handle *h = NULL;
        if (procreg_open(spec, &r, NULL) != 0 ||
            procreg_lock(r, "p", "k", -1, NULL, &h, NULL) != 0 ||
            write(ready[1], "x", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    char c;
    g_assert_cmpint(read(ready[0], &c, 1), ==, 1);
    close(ready[0]);
    close(ready[1]);
    procreg *reg = open_reg(spec);

    procreg_lock_handle *h = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_lock(reg, "p", "k", 200, NULL, &h, &err), ==,
                    PROCREG_ETIMEDOUT);
    g_autofree char *who = g_strdup_printf("held by process %d", (int)holder);
    g_assert_nonnull(strstr(err->message, who));
    g_clear_error(&err);
    g_assert_cmpuint(tickets(reg, "p"), ==, 1);

    GCancellable *cancel = g_cancellable_new();
    locker l = {.cancellable = cancel};
    locker_start(&l, reg, "p", "k", -1);
    g_assert_true(wait_tickets(reg, "p", 2));
    g_cancellable_cancel(cancel);
    locker_join(&l);
    g_assert_cmpint(l.rc, ==, PROCREG_ECANCELLED);
    g_clear_error(&l.err);
    g_object_unref(cancel);
    g_assert_cmpuint(tickets(reg, "p"), ==, 1);

    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
    g_assert_cmpint(procreg_lock(reg, "p", "k", WAIT_MS, NULL, &h, &err), ==,
                    0);
    g_assert_no_error(err);
    g_assert_cmpint(procreg_unlock(reg, h, NULL), ==, 0);
    g_assert_cmpuint(tickets(reg, "p"), ==, 0);
    procreg_close(reg);
    remove_dir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    fake_inner_register_types();
    for (size_t i = 0; i < G_N_ELEMENTS(thread_specs); i++) {
        const char *s = thread_specs[i];
        if (!backend_built(s))
            continue;
        g_autofree char *p1 = g_strdup_printf("/coord/lock/%s/basic", s);
        g_autofree char *p2 = g_strdup_printf("/coord/lock/%s/fifo", s);
        g_autofree char *p3 = g_strdup_printf("/coord/lock/%s/exclusive", s);
        g_test_add_data_func(p1, s, test_basic);
        g_test_add_data_func(p2, s, test_fifo);
        g_test_add_data_func(p3, s, test_threads_exclusive);
    }
    if (backend_built("lmdb"))
        g_test_add_func("/coord/lock/process-holds", test_process_holds);
    g_test_add_func("/coord/lock/names-apart", test_names_apart);
    g_test_add_func("/coord/lock/timeout", test_timeout);
    g_test_add_func("/coord/lock/cancel", test_cancel);
    g_test_add_func("/coord/lock/race/unlock-before-sleep",
                    test_unlock_before_sleep);
    g_test_add_func("/coord/lock/race/unlock-after-check",
                    test_unlock_before_sleep_after_check);
    g_test_add_func("/coord/lock/dead-tickets", test_dead_tickets);
    g_test_add_func("/coord/lock/external-unlock", test_external_unlock);
    return g_test_run();
}
