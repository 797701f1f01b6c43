/*
 * Group commit (backends/lmdb/batch.c) when a judgement errs: a live
 * registrant judged dead by a leader (its slot freed under it, even
 * claimed again by another thread of its process), and a writer lock
 * whose tries fail while a leader has the request.  The registrant must
 * return, and its answer must be the truth: registered once, or a
 * failure only when nothing was applied, or "unknown" when that cannot
 * be told.  The hook build's stand-ins force each case: a leader that
 * judges every other registrant dead (child action d), a lock that
 * fails (e), registrants that look for a slot from a fixed one on.
 */
#include "batch-harness.h"

extern int procreg_lmdb_batch_first_slot;

/* Leader L wrongly judges registrant R dead (the hook's stand-in for a
 * liveness check that errs) and frees R's pending request.  R must
 * notice its slot is no longer its request and register solo, once,
 * within DEAD_LEADER_MS (it used to wait for ever for an answer). */
static void test_freed_pending(fixture *f, gconstpointer d)
{
    child l, r;
    spawn_child(&l, f->spec, "l", "lead:d,lead:w");
    expect(&l, "lead");
    spawn_child(&r, f->spec, "r", "wait:s");
    expect(&r, "wait");
    wait_asleep(&r);
    go(&l);
    expect(&l, "= 0 0 1"); /* R's request dropped */
    expect_within(&r, "= 0 0 0", DEAD_LEADER_MS);
    procreg *reg = lt_open(f->spec);
    procreg_entry el = {0}, er = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, NS, "l", &el, NULL), ==, 0);
    g_assert_cmpint(procreg_lookup_entry(reg, NS, "r", &er, NULL), ==, 0);
    g_assert_cmpint(er.owner.pid, ==, r.pid);
    g_assert_cmpuint(er.revision, ==, el.revision + 1); /* solo, after L */
    procreg_entry_clear(&el);
    procreg_entry_clear(&er);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&l);
    reap(&r);
    procreg_close(reg);
}

/* R's request is applied and answered (DONE) by leader L, but before R
 * takes its answer another leader (this process) wrongly judges R dead
 * and frees the slot.  R must still return 0 (its registration was
 * committed: its solo re-run finds its own entry, and must not answer
 * EEXISTS), and the entry must be there once, unchanged. */
static void test_freed_done(fixture *f, gconstpointer d)
{
    child l, r;
    spawn_child(&l, f->spec, "l", "lead:w");
    expect(&l, "lead");
    spawn_child(&r, f->spec, "r", "wait:w");
    expect(&r, "wait");
    go(&l);
    expect(&l, "= 0 0 0"); /* R's request applied and answered */
    procreg *reg = lt_open(f->spec);
    procreg_entry er = {0}, ep = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, NS, "r", &er, NULL), ==, 0);
    procreg_lmdb_batch_judge_dead = 1;
    g_assert_cmpint(procreg_register(reg, NS, "p", NULL, NULL, &ep, NULL),
                    ==, 0);
    procreg_lmdb_batch_judge_dead = 0;
    g_assert_cmpint(lt_stat(reg, "batch_dropped"), ==, 1); /* R's answer */
    go(&r);
    expect_within(&r, "= 0 0 0", DEAD_LEADER_MS);
    procreg_entry now = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, NS, "r", &now, NULL), ==, 0);
    g_assert_cmpint(now.owner.pid, ==, r.pid);
    g_assert_cmpuint(now.revision, ==, er.revision); /* not registered again */
    g_assert_cmpuint(now.revision, <, ep.revision);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, NS, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 3);
    procreg_entry_clear(&er);
    procreg_entry_clear(&ep);
    procreg_entry_clear(&now);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&l);
    reap(&r);
    procreg_close(reg);
}

/* As above, but R's every take of the writer lock fails from its first
 * sleep on: its solo re-run cannot look under the lock whether L
 * committed its request (L did).  R must not report a plain failure of
 * a registration that is there, but that the outcome is unknown. */
static void test_freed_done_lock_error(fixture *f, gconstpointer d)
{
    child l, r;
    spawn_child(&l, f->spec, "l", "lead:w");
    expect(&l, "lead");
    spawn_child(&r, f->spec, "r", "wait:e,wait:w");
    expect(&r, "wait");
    go(&l);
    expect(&l, "= 0 0 0"); /* R's request applied and answered */
    procreg *reg = lt_open(f->spec);
    procreg_lmdb_batch_judge_dead = 1;
    g_assert_cmpint(procreg_register(reg, NS, "p", NULL, NULL, NULL, NULL),
                    ==, 0);
    procreg_lmdb_batch_judge_dead = 0;
    g_assert_cmpint(lt_stat(reg, "batch_dropped"), ==, 1); /* R's answer */
    go(&r);
    char *want = g_strdup_printf("= %d 0 0", PROCREG_EBACKEND);
    expect_within(&r, want, DEAD_LEADER_MS);
    g_free(want);
    char *why = child_says(&r, 10000);
    g_assert_nonnull(strstr(why, "is unknown"));
    g_free(why);
    g_assert_cmpint(owner_of(reg, "r"), ==, r.pid); /* committed, once */
    reap(&l);
    reap(&r);
    procreg_close(reg);
}

/* Leader L has committed its batch (its request and R's), let the lock
 * go and is held before its flush; a leader here wrongly judges both
 * dead and frees their COMMITTED slots.  Each must flush before its solo
 * re-run finds its own entry (committed, maybe not yet on disk) and
 * answers 0, not EEXISTS, and not register again. */
static void test_freed_committed(fixture *f, gconstpointer d)
{
    child l, r;
    spawn_child(&l, f->spec, "l", "lead:w,unlocked:w");
    expect(&l, "lead");
    spawn_child(&r, f->spec, "r", "wait:s");
    expect(&r, "wait");
    wait_asleep(&r);
    go(&l);
    expect(&l, "unlocked");
    procreg *reg = lt_open(f->spec);
    procreg_entry ep = {0};
    procreg_lmdb_batch_judge_dead = 1;
    g_assert_cmpint(procreg_register(reg, NS, "p", NULL, NULL, &ep, NULL),
                    ==, 0);
    procreg_lmdb_batch_judge_dead = 0;
    g_assert_cmpint(lt_stat(reg, "batch_dropped"), ==, 2);
    expect_within(&r, "= 0 0 0", DEAD_LEADER_MS);
    go(&l);
    expect(&l, "= 0 0 0");
    g_assert_cmpuint(ep.revision, ==, 3); /* after l and r, once each */
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, NS, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 3);
    procreg_entry_clear(&ep);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&l);
    reap(&r);
    procreg_close(reg);
}

/* Threads A and B of this process, each held at its first hook "wait"
 * until the test lets it go on. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool at_wait[2], go[2], done[2];
} pair = {.lock = PTHREAD_MUTEX_INITIALIZER,
          .cond = PTHREAD_COND_INITIALIZER};
static _Thread_local int pair_role = -1;
static _Thread_local bool pair_waited;

static void pair_hook(const char *point)
{
    if (strcmp(point, "wait") != 0 || pair_role < 0 || pair_waited)
        return;
    pair_waited = true;
    pthread_mutex_lock(&pair.lock);
    pair.at_wait[pair_role] = true;
    pthread_cond_broadcast(&pair.cond);
    struct timespec end = deadline_in(60);
    while (!pair.go[pair_role])
        if (pthread_cond_timedwait(&pair.cond, &pair.lock, &end) != 0)
            g_error("registrant %d held 60 s", pair_role);
    pthread_mutex_unlock(&pair.lock);
}

typedef struct {
    registrant r;
    int role;
} pair_member;

static gpointer pair_main(gpointer data)
{
    pair_member *m = data;
    pair_role = m->role;
    registrant_main(&m->r);
    pthread_mutex_lock(&pair.lock);
    pair.done[m->role] = true;
    pthread_cond_broadcast(&pair.cond);
    pthread_mutex_unlock(&pair.lock);
    return NULL;
}

/* Wait (10 s at most) until @flag, under pair.lock, is set. */
static void pair_wait_for(const bool *flag, const char *what)
{
    struct timespec end = deadline_in(10);
    pthread_mutex_lock(&pair.lock);
    while (!*flag)
        if (pthread_cond_timedwait(&pair.cond, &pair.lock, &end) != 0)
            g_error("waited 10 s for %s", what);
    pthread_mutex_unlock(&pair.lock);
}

static void pair_go(int role)
{
    pthread_mutex_lock(&pair.lock);
    pair.go[role] = true;
    pthread_cond_broadcast(&pair.cond);
    pthread_mutex_unlock(&pair.lock);
}

/* Leader L wrongly frees the pending request of thread A (held before
 * its sleep), and thread B of the same process claims that very slot
 * (registrants look from the same slot on), publishes its own request
 * and is held in turn.  A, let go, finds its slot PENDING under its own
 * pid: only the ticket tells it the request is B's.  A must register
 * "a" (solo), not lead B's request and take B's answer for its own. */
static void test_freed_reclaimed(fixture *f, gconstpointer d)
{
    child l;
    spawn_child(&l, f->spec, "l", "lead:d,lead:w,committed:w");
    expect(&l, "lead");
    for (int i = 0; i < 2; i++)
        pair.at_wait[i] = pair.go[i] = pair.done[i] = false;
    procreg_lmdb_batch_hook = pair_hook;
    procreg_lmdb_batch_first_slot = 5;
    pair_member a = {.role = 0}, b = {.role = 1};
    a.r.reg = lt_open(f->spec);
    b.r.reg = lt_open(f->spec);
    g_strlcpy(a.r.name, "a", sizeof a.r.name);
    g_strlcpy(b.r.name, "b", sizeof b.r.name);
    GThread *ta = g_thread_new("a", pair_main, &a);
    pair_wait_for(&pair.at_wait[0], "A to find the lock taken");
    go(&l);
    expect(&l, "committed"); /* A's slot freed; L's still held */
    GThread *tb = g_thread_new("b", pair_main, &b);
    pair_wait_for(&pair.at_wait[1], "B to find the lock taken");
    pair_go(0);
    go(&l);
    expect(&l, "= 0 0 1");
    pair_wait_for(&pair.done[0], "A's answer");
    pair_go(1);
    pair_wait_for(&pair.done[1], "B's answer");
    procreg_lmdb_batch_first_slot = -1;
    g_assert_cmpint(a.r.rc, ==, 0);
    g_assert_cmpint(b.r.rc, ==, 0);
    g_assert_cmpuint(a.r.current.revision, !=, b.r.current.revision);
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(owner_of(reg, "a"), ==, getpid());
    g_assert_cmpint(owner_of(reg, "b"), ==, getpid());
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    registrant_finish(&a.r, ta);
    registrant_finish(&b.r, tb);
    reap(&l);
    procreg_close(reg);
}

/* R's tries of the writer lock fail (an error, not "taken") once leader
 * L has applied its request: R must not report a failure for a
 * registration L is about to commit, but wait for L's answer. */
static void test_lock_error_applied(fixture *f, gconstpointer d)
{
    child l, r;
    spawn_child(&l, f->spec, "l", "lead:w,applied:w");
    expect(&l, "lead");
    spawn_child(&r, f->spec, "r", "wait:e,wait:w,lock-failed:s");
    expect(&r, "wait");
    go(&l);
    expect(&l, "applied");
    go(&r);
    expect(&r, "lock-failed");
    go(&l);
    expect(&l, "= 0 0 0");
    expect(&r, "= 0 0 0");
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(owner_of(reg, "r"), ==, r.pid);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&l);
    reap(&r);
    procreg_close(reg);
}

/* As above, but L dies before its commit: no answer will come, and the
 * recovery needs the lock R cannot take.  R must say, within batch.c's
 * UNKNOWN_MS (50 sleeps of 20 ms here), that the outcome is unknown; the
 * next writer recovers, and drops R's abandoned request and L's. */
static void test_lock_error_leader_died(fixture *f, gconstpointer d)
{
    child l, r;
    spawn_child(&l, f->spec, "l", "lead:w,applied:k");
    expect(&l, "lead");
    spawn_child(&r, f->spec, "r", "ms=20,wait:e,wait:w,lock-failed:s");
    expect(&r, "wait");
    go(&l);
    reap_self_killed(&l);
    go(&r);
    expect(&r, "lock-failed");
    char *want = g_strdup_printf("= %d 0 0", PROCREG_EBACKEND);
    expect(&r, want);
    g_free(want);
    char *why = child_says(&r, 10000);
    g_assert_nonnull(strstr(why, "unknown"));
    g_free(why);
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(procreg_register(reg, NS, "p", NULL, NULL, NULL, NULL),
                    ==, 0);
    g_assert_cmpint(lt_stat(reg, "batch_recoveries"), ==, 1);
    g_assert_cmpint(lt_stat(reg, "batch_dropped"), ==, 2);
    g_assert_cmpint(owner_of(reg, "r"), ==, 0);
    g_assert_cmpint(owner_of(reg, "l"), ==, 0);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&r);
    procreg_close(reg);
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--child") == 0)
        child_main(argv[2], argv[3], argv[4]);
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn)                                                         \
    g_test_add("/lmdb/batch-truth/" path, fixture, NULL, lt_fx_setup, fn,     \
               teardown)
    ADD("freed-pending", test_freed_pending);
    ADD("freed-done", test_freed_done);
    ADD("freed-done-lock-error", test_freed_done_lock_error);
    ADD("freed-reclaimed", test_freed_reclaimed);
    ADD("freed-committed", test_freed_committed);
    ADD("lock-error-applied", test_lock_error_applied);
    ADD("lock-error-leader-died", test_lock_error_leader_died);
    return g_test_run();
}
