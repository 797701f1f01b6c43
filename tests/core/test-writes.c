/*
 * The core's write paths through their dangerous interleavings, forced
 * with the fake backend's on_call hook (a step taken inside the backend
 * call, with the core's locks held as for the slot):
 *  - the owner rule's check and its write see the same entry even when
 *    another process replaces the entry between them;
 *  - a register for an owner that dies during the call does not bring the
 *    dead process back after its old entry went with it.
 */
#include "fake-backend.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t sleeping_child(void)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        for (;;)
            pause();
    }
    return pid;
}

static void kill_and_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static procreg *open_fake(const char *spec, FakeBackend **fb)
{
    procreg *reg = NULL;
    g_assert_cmpint(procreg_open(spec, &reg, NULL), ==, 0);
    *fb = fake_backend_last();
    return reg;
}

/* ---- the owner rule against a writer in between ---- */

typedef struct {
    FakeBackend *fb;
    procreg_owner other;
    bool done;
} replace_ctx;

/* Inside the first unregister: another process takes the key over (a new
 * owner, a new revision), as it can on a backend shared between processes
 * (fake_mp says MULTIPROCESS; on one that does not, the core may and does
 * trust that only its own writes, serialised by its stripes, replace an
 * entry). */
static void replace_in_unregister(FakeOp op, void *data)
{
    replace_ctx *c = data;
    if (op != FAKE_OP_UNREGISTER || c->done)
        return;
    c->done = true;
    pthread_mutex_lock(&c->fb->lock);
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, c->fb->store);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        FakeItem *item = v;
        item->owner = c->other;
        item->revision = ++c->fb->last_revision;
    }
    pthread_mutex_unlock(&c->fb->lock);
}

static void test_replaced_between_check_and_write(void)
{
    FakeBackend *fb;
    procreg *reg = open_fake("fake_mp", &fb);
    pid_t child = sleeping_child();
    replace_ctx c = {.fb = fb};
    g_assert_cmpint(procreg_owner_from_pid(child, &c.other, NULL), ==, 0);
    g_assert_cmpint(procreg_register(reg, "ns", "k", NULL, NULL, NULL, NULL),
                    ==, 0);
    fake_backend_set_on_call(fb, replace_in_unregister, &c);
    /* Ours when checked, the child's when written: the write must not
     * remove the child's entry, and the second look refuses it. */
    GError *err = NULL;
    g_assert_cmpint(procreg_unregister(reg, "ns", "k", &err), ==,
                    PROCREG_EPERM);
    g_assert_true(c.done);
    g_clear_error(&err);
    fake_backend_set_on_call(fb, NULL, NULL);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "ns", "k", &o, NULL), ==, 0);
    g_assert_cmpint(o.pid, ==, child);
    procreg_close(reg);
    kill_and_reap(child);
}

/* ---- a register for an owner that dies during the call ---- */

typedef struct {
    pid_t pid;
    bool killed;
} kill_ctx;

/* Inside the register: the owner dies (and is reaped) after the core
 * found it alive, before the backend answers. */
static void kill_in_register(FakeOp op, void *data)
{
    kill_ctx *c = data;
    if (op != FAKE_OP_REGISTER || c->killed)
        return;
    c->killed = true;
    kill_and_reap(c->pid);
}

static void test_owner_dies_during_register(void)
{
    FakeBackend *fb;
    procreg *reg = open_fake("fake_ts", &fb);
    kill_ctx c = {.pid = sleeping_child()};
    procreg_owner o;
    g_assert_cmpint(procreg_owner_from_pid(c.pid, &o, NULL), ==, 0);
    procreg_entry first = {0};
    g_assert_cmpint(procreg_register(reg, "ns", "k", &o, NULL, &first, NULL),
                    ==, 0);
    fake_backend_set_on_call(fb, kill_in_register, &c);
    /* The key is held by o, who dies inside this call: o's entry goes
     * with o, and o must not get a new one. */
    GError *err = NULL;
    procreg_entry cur = {0};
    int rc = procreg_register(reg, "ns", "k", &o, NULL, &cur, &err);
    fake_backend_set_on_call(fb, NULL, NULL);
    g_assert_true(c.killed);
    if (rc == 0)
        g_error("registered dead process %d again (revision %" G_GUINT64_FORMAT
                " after %" G_GUINT64_FORMAT ")", (int)c.pid, cur.revision,
                first.revision);
    g_assert_cmpint(rc, ==, PROCREG_ENOTALIVE);
    g_assert_nonnull(err);
    g_clear_error(&err);
    procreg_entry_clear(&cur);
    procreg_entry_clear(&first);
    /* The key is free for a live owner. */
    g_assert_cmpint(procreg_register(reg, "ns", "k", NULL, NULL, NULL, NULL),
                    ==, 0);
    procreg_close(reg);
}

/* The key is free and the owner dies inside the register, after the core
 * found it alive: the register must not leave an entry of a dead process
 * (its death may have been cleaned up already: a history on a slow
 * machine registered one 11 ms after its owner's cleanup). */
static void test_owner_dies_during_free_register(void)
{
    FakeBackend *fb;
    procreg *reg = open_fake("fake_ts", &fb);
    kill_ctx c = {.pid = sleeping_child()};
    procreg_owner o;
    g_assert_cmpint(procreg_owner_from_pid(c.pid, &o, NULL), ==, 0);
    fake_backend_set_on_call(fb, kill_in_register, &c);
    GError *err = NULL;
    int rc = procreg_register(reg, "ns", "free", &o, NULL, NULL, &err);
    fake_backend_set_on_call(fb, NULL, NULL);
    g_assert_true(c.killed);
    g_assert_cmpint(rc, ==, PROCREG_ENOTALIVE);
    g_assert_nonnull(err);
    g_clear_error(&err);
    procreg_owner held;
    g_assert_cmpint(procreg_lookup(reg, "ns", "free", &held, NULL), ==,
                    PROCREG_ENOTFOUND);
    g_assert_cmpint(procreg_register(reg, "ns", "free", NULL, NULL, NULL,
                                     NULL), ==, 0);
    procreg_close(reg);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    fake_backend_register_all();
    g_test_add_func("/core/writes/replaced-between-check-and-write",
                    test_replaced_between_check_and_write);
    g_test_add_func("/core/writes/owner-dies-during-register",
                    test_owner_dies_during_register);
    g_test_add_func("/core/writes/owner-dies-during-free-register",
                    test_owner_dies_during_free_register);
    return g_test_run();
}
