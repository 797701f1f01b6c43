/*
 * Reads against a death the monitor has not noticed yet, forced with the
 * fake backend's on_call hook: the monitor thread is held inside one dead
 * owner's cleanup (its first call into the backend), so that a second
 * owner's death stays unnoticed for as long as the test needs.
 *  - reads agree on deaths: a list that left out the second owner's
 *    entry (it found the process gone while a cleanup was pending) is not
 *    followed by a lookup, a count or a list that shows it
 *    (core/liveness.c, procreg_owner_seen_dead());
 *  - so do writes: an unregister or an update of that entry by another
 *    process answers PROCREG_ENOTFOUND (not PROCREG_EPERM naming the dead
 *    holder), and no read after it shows the entry;
 *  - a lookup or a wait that read a dead owner's entry before its
 *    cleanup removed it, and looks at the owner after the monitor forgot
 *    it, leaves the entry out (the fake's on_return hook runs the cleanup
 *    to its end between the two; core/owner-index.c,
 *    procreg_read_owner_gone()).
 */
#include "child-util.h"
#include "fake-backend.h"

/* Holds the first backend call of any thread but the test's until let
 * go; every wait ends after 10 s (a test that breaks never hangs). */
typedef struct {
    pthread_t test_thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool entered, released;
} hold_ctx;

static struct timespec in_10_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += 10;
    return t;
}

static void wait_for(hold_ctx *h, const bool *flag)
{
    struct timespec end = in_10_s();
    while (!*flag && pthread_cond_timedwait(&h->cond, &h->lock, &end) == 0)
        ;
}

static void hold_other_thread(FakeOp op, void *data)
{
    hold_ctx *h = data;
    if (pthread_equal(pthread_self(), h->test_thread))
        return;
    pthread_mutex_lock(&h->lock);
    if (!h->entered) {
        h->entered = true;
        pthread_cond_broadcast(&h->cond);
        wait_for(h, &h->released);
    }
    pthread_mutex_unlock(&h->lock);
}

static void wait_entered(hold_ctx *h)
{
    pthread_mutex_lock(&h->lock);
    wait_for(h, &h->entered);
    bool entered = h->entered;
    pthread_mutex_unlock(&h->lock);
    if (!entered)
        g_error("the monitor did not start the first owner's cleanup "
                "within 10 s");
}

static void release(hold_ctx *h)
{
    pthread_mutex_lock(&h->lock);
    h->released = true;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

static procreg_owner owner_of(pid_t pid)
{
    procreg_owner o;
    g_assert_cmpint(procreg_owner_from_pid(pid, &o, NULL), ==, 0);
    return o;
}

/* A registry whose owner A has died with its cleanup held inside the
 * backend, and whose owner B, holding "ns"/"b", has died unnoticed. */
typedef struct {
    procreg *reg;
    FakeBackend *fb;
    hold_ctx h;
    pid_t b;
} two_deaths;

static void two_deaths_setup(two_deaths *t)
{
    g_assert_cmpint(procreg_open("fake_ts", &t->reg, NULL), ==, 0);
    t->fb = fake_backend_last();
    pid_t a = sleeping_child();
    t->b = sleeping_child();
    procreg_owner oa = owner_of(a), ob = owner_of(t->b);
    g_assert_cmpint(procreg_register(t->reg, "ns", "a", &oa, NULL, NULL,
                                     NULL), ==, 0);
    g_assert_cmpint(procreg_register(t->reg, "ns", "b", &ob, NULL, NULL,
                                     NULL), ==, 0);
    t->h = (hold_ctx){.test_thread = pthread_self()};
    pthread_mutex_init(&t->h.lock, NULL);
    pthread_cond_init(&t->h.cond, NULL);
    fake_backend_set_on_call(t->fb, hold_other_thread, &t->h);
    kill_and_reap(a);
    wait_entered(&t->h); /* A is known dead, its cleanup pending and held */
    kill_and_reap(t->b); /* unnoticed: the monitor is inside A's cleanup */
}

static void two_deaths_end(two_deaths *t)
{
    release(&t->h);
    fake_backend_set_on_call(t->fb, NULL, NULL);
    procreg_close(t->reg);
    pthread_mutex_destroy(&t->h.lock);
    pthread_cond_destroy(&t->h.cond);
}

/* After an operation that treated B's entry as gone: no read shows it. */
static void assert_b_gone(two_deaths *t, const char *after)
{
    procreg_owner held;
    int rc = procreg_lookup(t->reg, "ns", "b", &held, NULL);
    if (rc == 0)
        g_error("%s left out 'b' (its owner %d is dead), and a lookup after "
                "it found 'b' held by %d", after, (int)t->b, (int)held.pid);
    g_assert_cmpint(rc, ==, PROCREG_ENOTFOUND);
    procreg_entry *list = NULL;
    size_t n = 99, count = 99;
    g_assert_cmpint(procreg_list(t->reg, "ns", &list, &n, NULL), ==, 0);
    procreg_entries_free(list, n);
    g_assert_cmpuint(n, ==, 0);
    g_assert_cmpint(procreg_count(t->reg, "ns", &count, NULL), ==, 0);
    g_assert_cmpuint(count, ==, 0);
}

/* A list, a cleanup being pending, finds B's process gone and leaves B's
 * entry out (before the fix a lookup after it showed the entry: lookups
 * trusted a monitor that had not seen B's death). */
static void test_list_then_lookup(void)
{
    two_deaths t;
    two_deaths_setup(&t);
    procreg_entry *list = NULL;
    size_t n = 99;
    g_assert_cmpint(procreg_list(t.reg, "ns", &list, &n, NULL), ==, 0);
    procreg_entries_free(list, n);
    g_assert_cmpuint(n, ==, 0);
    assert_b_gone(&t, "a list");
    two_deaths_end(&t);
}

/* An unregister and an update of B's entry by this process: the entry of
 * a dead holder is not there to refuse (before the fix: PROCREG_EPERM
 * naming B, after a list had left the entry out). */
static void test_write_then_lookup(void)
{
    two_deaths t;
    two_deaths_setup(&t);
    GError *err = NULL;
    int rc = procreg_update_metadata(t.reg, "ns", "b", NULL,
                                     PROCREG_UPDATE_REPLACE, &err);
    if (rc == PROCREG_EPERM)
        g_error("an update answered EPERM naming a dead holder: %s",
                err->message);
    g_assert_cmpint(rc, ==, PROCREG_ENOTFOUND);
    g_clear_error(&err);
    assert_b_gone(&t, "an update");
    g_assert_cmpint(procreg_unregister(t.reg, "ns", "b", NULL), ==,
                    PROCREG_ENOTFOUND);
    two_deaths_end(&t);
}

static guint64 owners_watched(procreg *reg)
{
    GVariant *stats = NULL;
    guint64 n = G_MAXUINT64;
    g_assert_cmpint(procreg_stats(reg, &stats, NULL), ==, 0);
    g_assert_true(g_variant_lookup(stats, "owners", "t", &n));
    g_variant_unref(stats);
    return n;
}

typedef struct {
    pthread_t test_thread;
    procreg *reg;
    hold_ctx *h;
    bool done;
} across_ctx;

/* After the test thread's lookup read the dead owner's entry: let the
 * monitor finish that owner's cleanup (remove the entry, forget the
 * owner) before the core looks at the owner. */
static void finish_cleanup_after_read(FakeOp op, void *data)
{
    across_ctx *c = data;
    if ((op != FAKE_OP_LOOKUP && op != FAKE_OP_LOOKUP_ENTRY) ||
        !pthread_equal(pthread_self(), c->test_thread) || c->done)
        return;
    c->done = true;
    release(c->h);
    for (int i = 0; i < 10000 && owners_watched(c->reg) > 0; i++)
        g_usleep(1000);
    g_assert_cmpuint(owners_watched(c->reg), ==, 0);
}

typedef enum { BY_LOOKUP, BY_LOOKUP_ENTRY, BY_WAIT } read_kind;

/* A lookup (or a wait's look) whose backend read came before a dead
 * owner's cleanup removed the entry, and whose check of the owner came
 * after the monitor forgot it (before the fix it returned the entry:
 * "known dead" no longer said so, though an update had already answered
 * "not found" for it). */
static void lookup_across_cleanup(read_kind kind)
{
    static const char *const kind_names[] = {"lookup", "lookup_entry",
                                             "wait_for"};
    procreg *reg = NULL;
    g_assert_cmpint(procreg_open("fake_ts", &reg, NULL), ==, 0);
    FakeBackend *fb = fake_backend_last();
    pid_t b = sleeping_child();
    procreg_owner ob = owner_of(b);
    g_assert_cmpint(procreg_register(reg, "ns", "b", &ob, NULL, NULL, NULL),
                    ==, 0);
    hold_ctx h = {.test_thread = pthread_self()};
    pthread_mutex_init(&h.lock, NULL);
    pthread_cond_init(&h.cond, NULL);
    fake_backend_set_on_call(fb, hold_other_thread, &h);
    kill_and_reap(b);
    wait_entered(&h); /* B known dead, its cleanup held in the backend */
    across_ctx c = {.test_thread = pthread_self(), .reg = reg, .h = &h};
    fake_backend_set_on_return(fb, finish_cleanup_after_read, &c);
    int rc;
    procreg_owner held = {0};
    procreg_entry e = {0};
    if (kind == BY_LOOKUP) {
        rc = procreg_lookup(reg, "ns", "b", &held, NULL);
    } else {
        rc = kind == BY_LOOKUP_ENTRY
                 ? procreg_lookup_entry(reg, "ns", "b", &e, NULL)
                 : procreg_wait_for(reg, "ns", "b", 0, NULL, &e, NULL);
        held = e.owner;
        procreg_entry_clear(&e);
    }
    g_assert_true(c.done);
    if (rc == 0)
        g_error("a %s read 'b' before its dead owner's cleanup and returned "
                "it (held by %d) after the cleanup removed it",
                kind_names[kind], (int)held.pid);
    /* A wait with no time to wait answers "not there" as a timeout. */
    g_assert_cmpint(rc, ==,
                    kind == BY_WAIT ? PROCREG_ETIMEDOUT : PROCREG_ENOTFOUND);
    fake_backend_set_on_return(fb, NULL, NULL);
    fake_backend_set_on_call(fb, NULL, NULL);
    procreg_close(reg);
    pthread_mutex_destroy(&h.lock);
    pthread_cond_destroy(&h.cond);
}

static void test_lookup_across_cleanup(void)
{
    lookup_across_cleanup(BY_LOOKUP);
    lookup_across_cleanup(BY_LOOKUP_ENTRY);
    lookup_across_cleanup(BY_WAIT);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    fake_backend_register_all();
    g_test_add_func("/core/liveness/list-then-lookup", test_list_then_lookup);
    g_test_add_func("/core/liveness/write-then-lookup",
                    test_write_then_lookup);
    g_test_add_func("/core/liveness/lookup-across-cleanup",
                    test_lookup_across_cleanup);
    return g_test_run();
}
