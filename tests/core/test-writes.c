/*
 * The core's write paths through their dangerous interleavings, forced
 * with the fake backend's on_call hook (a step taken inside the backend
 * call, with the core's locks held as for the slot):
 *  - the owner rule's check and its write see the same entry even when
 *    another process replaces the entry between them;
 *  - a register for an owner that dies during the call does not bring the
 *    dead process back after its old entry went with it;
 *  - a register whose key's dead holder is evicted while another
 *    process takes the key answers EEXISTS naming that process;
 *  - a fork() child writes as itself, not as the parent whose owner the
 *    write paths had read in line;
 *  - an unregister at no revision is one call of a backend's
 *    unregister_owned slot, whose check sees a holder that took the key
 *    over just before it, and whose refusal leads to the general path's
 *    answers (PROCREG_EPERM with the holder, PROCREG_FORCE); a table of
 *    version 4 never has the slot called.
 */
#include "child-util.h"
#include "fake-backend.h"

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
    FakeOp op; /* the slot to do it in: 0 means FAKE_OP_UNREGISTER */
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
    if (op != (c->op != 0 ? c->op : FAKE_OP_UNREGISTER) || c->done)
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

/* ---- a dead holder's key taken by another process meanwhile ---- */

/* The key's holder is dead, and while this process evicts it another
 * process (which reaped it on its own) takes the key: the eviction at
 * the dead holder's revision finds a newer entry.  The register must
 * answer EEXISTS naming the live holder, not the dead one whose entry is
 * gone (a history on lmdb caught an EEXISTS naming a holder reaped 29 us
 * before the register began). */
static void test_dead_holder_key_changes_hands(void)
{
    FakeBackend *fb;
    procreg *reg = open_fake("fake_mp", &fb);
    pid_t dead = sleeping_child();
    replace_ctx to_dead = {.fb = fb, .op = FAKE_OP_UNREGISTER};
    replace_ctx to_live = {.fb = fb};
    g_assert_cmpint(procreg_owner_from_pid(dead, &to_dead.other, NULL), ==, 0);
    pid_t live = sleeping_child();
    g_assert_cmpint(procreg_owner_from_pid(live, &to_live.other, NULL), ==, 0);
    g_assert_cmpint(procreg_register(reg, "ns", "k", NULL, NULL, NULL, NULL),
                    ==, 0);
    /* The holder becomes a process that then dies, written behind this
     * registry's back as another process of a shared backend writes. */
    replace_in_unregister(FAKE_OP_UNREGISTER, &to_dead);
    kill_and_reap(dead);
    fake_backend_set_on_call(fb, replace_in_unregister, &to_live);
    GError *err = NULL;
    procreg_entry cur = {0};
    int rc = procreg_register(reg, "ns", "k", NULL, NULL, &cur, &err);
    fake_backend_set_on_call(fb, NULL, NULL);
    g_assert_true(to_live.done);
    g_assert_cmpint(rc, ==, PROCREG_EEXISTS);
    if (cur.owner.pid != live)
        g_error("EEXISTS names process %d as the holder; %d holds the key "
                "(%d is dead)", (int)cur.owner.pid, (int)live, (int)dead);
    g_assert_nonnull(err);
    g_clear_error(&err);
    procreg_entry_clear(&cur);
    procreg_close(reg);
    kill_and_reap(live);
}

/* An entry of a process this registry does not watch (written by another
 * process of a shared backend), which has died: the backend still shows
 * it (its own view of liveness may lag), and so do lookups.  A write's
 * owner check must agree with them (PROCREG_EPERM, the entry still
 * there), not answer PROCREG_ENOTFOUND before a lookup finds the entry
 * (an lmdb history run: 37 us apart). */
static void test_unwatched_dead_holder(void)
{
    FakeBackend *fb;
    procreg *reg = open_fake("fake_mp", &fb);
    pid_t dead = sleeping_child();
    replace_ctx to_dead = {.fb = fb, .op = FAKE_OP_UNREGISTER};
    g_assert_cmpint(procreg_owner_from_pid(dead, &to_dead.other, NULL), ==, 0);
    g_assert_cmpint(procreg_register(reg, "ns", "k", NULL, NULL, NULL, NULL),
                    ==, 0);
    replace_in_unregister(FAKE_OP_UNREGISTER, &to_dead);
    kill_and_reap(dead);
    int rc = procreg_update_metadata(reg, "ns", "k", NULL,
                                     PROCREG_UPDATE_REPLACE, NULL);
    procreg_owner held;
    int seen = procreg_lookup(reg, "ns", "k", &held, NULL);
    if (rc == PROCREG_ENOTFOUND && seen == 0)
        g_error("an update answered ENOTFOUND for the dead holder %d's "
                "entry, and a lookup after it found the entry", (int)dead);
    g_assert_cmpint(rc, ==, PROCREG_EPERM);
    g_assert_cmpint(seen, ==, 0);
    g_assert_cmpint(held.pid, ==, dead);
    procreg_close(reg);
}

/* ---- the owner rule in the backend's one step (unregister_owned) ---- */

static void reset_calls(FakeBackend *fb)
{
    for (int op = FAKE_OP_REGISTER; op < FAKE_N_OPS; op++)
        g_atomic_int_set(&fb->calls[op], 0);
}

/* Our own entry: the slot alone, no read before it, on a backend that
 * other processes write too (fake_own is MULTIPROCESS): the check is
 * the backend's, in the same step as the removal. */
static void test_owned_removal_one_call(void)
{
    FakeBackend *fb;
    procreg *reg = open_fake("fake_own", &fb);
    g_assert_cmpint(procreg_register(reg, "ns", "k", NULL, NULL, NULL, NULL),
                    ==, 0);
    reset_calls(fb);
    g_assert_cmpint(procreg_unregister(reg, "ns", "k", NULL), ==, 0);
    g_assert_cmpint(fb->calls[FAKE_OP_UNREGISTER_OWNED], ==, 1);
    g_assert_cmpint(fake_backend_data_calls(fb), ==, 1);
    g_assert_cmpint(procreg_unregister(reg, "ns", "k", NULL), ==,
                    PROCREG_ENOTFOUND);
    /* At a revision, the general path: read, check, write at it. */
    uint64_t rev = 0;
    procreg_entry cur = {0};
    g_assert_cmpint(procreg_register(reg, "ns", "k", NULL, NULL, &cur, NULL),
                    ==, 0);
    rev = cur.revision;
    procreg_entry_clear(&cur);
    reset_calls(fb);
    procreg_key *key = NULL;
    g_assert_cmpint(procreg_key_new("ns", "k", &key, NULL), ==, 0);
    g_assert_cmpint(procreg_unregister_key(reg, key, rev, NULL), ==, 0);
    g_assert_cmpint(fb->calls[FAKE_OP_UNREGISTER_OWNED], ==, 0);
    g_assert_cmpint(fb->calls[FAKE_OP_LOOKUP_ENTRY], ==, 1);
    g_assert_cmpint(fb->calls[FAKE_OP_UNREGISTER], ==, 1);
    procreg_key_unref(key);
    procreg_close(reg);
}

/* Another process's entry: the slot refuses and changes nothing, and the
 * core's general path answers as it always did: PROCREG_EPERM with the
 * holder's details, or the removal with PROCREG_FORCE. */
static void test_owned_removal_refused(void)
{
    FakeBackend *fb;
    procreg *reg = open_fake("fake_own", &fb);
    pid_t child = sleeping_child();
    procreg_owner theirs;
    g_assert_cmpint(procreg_owner_from_pid(child, &theirs, NULL), ==, 0);
    g_assert_cmpint(procreg_register(reg, "ns", "k", &theirs, NULL, NULL,
                                     NULL), ==, 0);
    reset_calls(fb);
    GError *err = NULL;
    g_assert_cmpint(procreg_unregister(reg, "ns", "k", &err), ==,
                    PROCREG_EPERM);
    g_assert_error(err, PROCREG_ERROR, PROCREG_EPERM);
    const procreg_error_details *d = procreg_error_get_details(err);
    g_assert_nonnull(d);
    g_assert_nonnull(d->entry);
    g_assert_cmpint(d->entry->owner.pid, ==, child);
    g_assert_cmpuint(d->entry->owner.start_time, ==, theirs.start_time);
    g_clear_error(&err);
    g_assert_cmpint(fb->calls[FAKE_OP_UNREGISTER_OWNED], ==, 1);
    g_assert_cmpint(fb->calls[FAKE_OP_UNREGISTER], ==, 0);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "ns", "k", &o, NULL), ==, 0);
    g_assert_cmpint(o.pid, ==, child);

    procreg_key *key = NULL;
    g_assert_cmpint(procreg_key_new("ns", "k", &key, NULL), ==, 0);
    g_assert_cmpint(procreg_unregister_full(reg, key, 0, PROCREG_FORCE, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_lookup(reg, "ns", "k", &o, NULL), ==,
                    PROCREG_ENOTFOUND);
    procreg_key_unref(key);
    procreg_close(reg);
    kill_and_reap(child);
}

/* Inside the slot, before its check: another process takes the key over.
 * The check sees the new holder (it is part of the same step as the
 * removal), so the removal does not happen, and the answer names the new
 * holder. */
static void test_owned_removal_replaced_before_check(void)
{
    FakeBackend *fb;
    procreg *reg = open_fake("fake_own", &fb);
    pid_t child = sleeping_child();
    replace_ctx c = {.fb = fb, .op = FAKE_OP_UNREGISTER_OWNED};
    g_assert_cmpint(procreg_owner_from_pid(child, &c.other, NULL), ==, 0);
    g_assert_cmpint(procreg_register(reg, "ns", "k", NULL, NULL, NULL, NULL),
                    ==, 0);
    fake_backend_set_on_call(fb, replace_in_unregister, &c);
    GError *err = NULL;
    g_assert_cmpint(procreg_unregister(reg, "ns", "k", &err), ==,
                    PROCREG_EPERM);
    fake_backend_set_on_call(fb, NULL, NULL);
    g_assert_true(c.done);
    const procreg_error_details *d = procreg_error_get_details(err);
    g_assert_nonnull(d);
    g_assert_nonnull(d->entry);
    g_assert_cmpint(d->entry->owner.pid, ==, child);
    g_clear_error(&err);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "ns", "k", &o, NULL), ==, 0);
    g_assert_cmpint(o.pid, ==, child);
    procreg_close(reg);
    kill_and_reap(child);
}

/* A table of version 4 has no unregister_owned slot: whatever its memory
 * holds there is never called (a module built before version 5 ends
 * with history_read). */
static void test_owned_removal_needs_version_5(void)
{
    procreg_backend_ops ops = fake_own_ops;
    ops.version = 4;
    procreg *reg = NULL;
    g_assert_cmpint(procreg_open_with_backend(&ops, NULL, &reg, NULL), ==, 0);
    FakeBackend *fb = fake_backend_last();
    g_assert_cmpint(procreg_register(reg, "ns", "k", NULL, NULL, NULL, NULL),
                    ==, 0);
    reset_calls(fb);
    g_assert_cmpint(procreg_unregister(reg, "ns", "k", NULL), ==, 0);
    g_assert_cmpint(fb->calls[FAKE_OP_UNREGISTER_OWNED], ==, 0);
    g_assert_cmpint(fb->calls[FAKE_OP_LOOKUP_ENTRY], ==, 1);
    g_assert_cmpint(fb->calls[FAKE_OP_UNREGISTER], ==, 1);
    procreg_close(reg);
}

/* ---- the caller's owner after fork() ---- */

/* The write paths read the caller's owner in line (internal.h,
 * procreg_owner_self_fast()) from the pair owner.c publishes; a fork()
 * child must see its own pid there, not the parent's, although the
 * parent had read it before the fork. */
static void test_owner_self_after_fork(void)
{
    procreg *reg = NULL;
    g_assert_cmpint(procreg_open("fake_ts", &reg, NULL), ==, 0);
    g_assert_cmpint(procreg_register(reg, "ns", "parent", NULL, NULL, NULL,
                                     NULL), ==, 0);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "ns", "parent", &o, NULL), ==, 0);
    g_assert_cmpint(o.pid, ==, getpid());
    procreg_close(reg);
    pid_t child = fork();
    g_assert_cmpint(child, >=, 0);
    if (child == 0) {
        procreg *r = NULL;
        int ok = procreg_open("fake_ts", &r, NULL) == 0 &&
                 procreg_register(r, "ns", "child", NULL, NULL, NULL,
                                  NULL) == 0 &&
                 procreg_lookup(r, "ns", "child", &o, NULL) == 0 &&
                 o.pid == getpid() &&
                 procreg_unregister(r, "ns", "child", NULL) == 0;
        _exit(ok ? 0 : 1);
    }
    int status;
    g_assert_cmpint(waitpid(child, &status, 0), ==, child);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
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
    g_test_add_func("/core/writes/owner-self-after-fork",
                    test_owner_self_after_fork);
    g_test_add_func("/core/writes/owned-removal/one-call",
                    test_owned_removal_one_call);
    g_test_add_func("/core/writes/owned-removal/refused",
                    test_owned_removal_refused);
    g_test_add_func("/core/writes/unwatched-dead-holder",
                    test_unwatched_dead_holder);
    g_test_add_func("/core/writes/dead-holder-key-changes-hands",
                    test_dead_holder_key_changes_hands);
    g_test_add_func("/core/writes/owned-removal/replaced-before-check",
                    test_owned_removal_replaced_before_check);
    g_test_add_func("/core/writes/owned-removal/needs-version-5",
                    test_owned_removal_needs_version_5);
    return g_test_run();
}
