/*
 * Group commit of registrations (backends/lmdb/batch.c): the registrants
 * waiting for the writer lock are committed in one transaction, nothing
 * answered before it is durable, nothing applied twice, whoever dies.
 *
 * The interleavings are forced with the library's test hook (this test
 * links the lmdb backend built with PROCREG_TEST_BATCH_HOOK): threads of
 * this process wait at a hook point until the others got where the case
 * needs them; child processes (this program, re-executed with --child)
 * say when they reach a point, wait there for a byte, or SIGKILL
 * themselves there; a child whose sleep on its slot must end only by a
 * wake-up sleeps 60 s at most instead of batch.c's 100 ms.
 */
#include "batch-harness.h"

#include <fcntl.h>

/* The request area's slots (batch.c's BATCH_SLOTS). */
#define SLOTS 64

/* Whether @pid's main thread blocks in fcntl(): waiting for the writer
 * lock (F_OFD_SETLKW). */
static bool blocked_in_fcntl(pid_t pid)
{
    char *path = g_strdup_printf("/proc/%d/syscall", pid), *text = NULL;
    bool blocked = g_file_get_contents(path, &text, NULL, NULL) &&
                   strtol(text, NULL, 10) == SYS_fcntl;
    g_free(text);
    g_free(path);
    return blocked;
}

/* ---- threads of one process ---- */

/* What this process's hook sees: requests published, and a gate that
 * holds the first leader. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int published, solo;
    int hold_until;   /* the first leader waits for this many published */
    bool hold_solo;   /* ...and for a registration sent solo */
    bool released;    /* the first leader went on */
} gate = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void gate_hook(const char *point)
{
    pthread_mutex_lock(&gate.lock);
    if (strcmp(point, "published") == 0)
        gate.published++;
    else if (strcmp(point, "solo") == 0)
        gate.solo++;
    pthread_cond_broadcast(&gate.cond);
    if (strcmp(point, "lead") == 0 && !gate.released) {
        /* A bound against a hang, long enough for valgrind. */
        struct timespec end = deadline_in(60);
        while (gate.published < gate.hold_until ||
               (gate.hold_solo && gate.solo == 0))
            if (pthread_cond_timedwait(&gate.cond, &gate.lock, &end) != 0)
                g_error("the leader waited 60 s for %d requests (%d)",
                        gate.hold_until, gate.published);
        gate.released = true;
    }
    pthread_mutex_unlock(&gate.lock);
}

static void gate_arm(int hold_until, bool hold_solo)
{
    gate.published = gate.solo = 0;
    gate.hold_until = hold_until;
    gate.hold_solo = hold_solo;
    gate.released = false;
    procreg_lmdb_batch_hook = gate_hook;
}

/* Open @n registrants' handles, then start them all. */
static void registrants_start(registrant *r, GThread **t, int n,
                              const char *spec, const char *prefix,
                              int duplicate_of_0)
{
    for (int i = 0; i < n; i++) {
        r[i].reg = lt_open(spec);
        g_snprintf(r[i].name, sizeof r[i].name, "%s%d", prefix,
                   i == duplicate_of_0 ? 0 : i);
    }
    for (int i = 0; i < n; i++)
        t[i] = g_thread_new("registrant", registrant_main, &r[i]);
}

/* Events seen by a subscriber: names and revisions, in delivery order. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    GPtrArray *names;
    GArray *revisions, *positions;
} seen;

static void on_event(procreg *reg, const procreg_event *ev, gpointer data)
{
    seen *s = data;
    if (ev->kind != PROCREG_EVENT_REGISTERED)
        return;
    pthread_mutex_lock(&s->lock);
    g_ptr_array_add(s->names, g_strdup(ev->name));
    g_array_append_val(s->revisions, ev->entry->revision);
    g_array_append_val(s->positions, ev->position);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* Eight threads, two of them for the same name, committed in one batch:
 * each new name is there once, the duplicate gets EEXISTS with the
 * winner's entry, and the subscriber sees the seven registrations once
 * each, in commit order. */
static void test_threads(fixture *f, gconstpointer data)
{
    enum { N = 8 };
    procreg *reg = lt_open(f->spec);
    seen s = {.names = g_ptr_array_new_with_free_func(g_free),
              .revisions = g_array_new(FALSE, FALSE, sizeof(guint64)),
              .positions = g_array_new(FALSE, FALSE, sizeof(guint64))};
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.cond, NULL);
    uint64_t sub;
    g_assert_cmpint(procreg_subscribe(reg, NS, NULL, on_event, &s, NULL, NULL,
                                      &sub, NULL), ==, 0);
    gint64 commits = lt_stat(reg, "batch_commits");
    gate_arm(N, false);
    registrant r[N] = {0};
    GThread *t[N];
    registrants_start(r, t, N, f->spec, "t", N - 1);
    for (int i = 0; i < N; i++)
        g_thread_join(t[i]);
    g_assert_cmpint(lt_stat(reg, "batch_commits"), ==, commits + 1);
    g_assert_cmpint(lt_stat(reg, "batch_requests"), ==, N);

    /* t0 twice: one got it, the other EEXISTS with its entry. */
    registrant *won = r[0].rc == 0 ? &r[0] : &r[N - 1];
    registrant *lost = won == &r[0] ? &r[N - 1] : &r[0];
    g_assert_cmpint(won->rc, ==, 0);
    g_assert_cmpint(lost->rc, ==, PROCREG_EEXISTS);
    g_assert_cmpint(lost->current.owner.pid, ==, getpid());
    g_assert_cmpuint(lost->current.revision, ==, won->current.revision);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, NS, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, N - 1);
    /* Each name once: t0 by whichever of its two registrants won. */
    for (int i = 0; i < N - 1; i++) {
        const registrant *ri = i == 0 ? won : &r[i];
        g_assert_cmpint(ri->rc, ==, 0);
        procreg_entry e = {0};
        g_assert_cmpint(procreg_lookup_entry(reg, NS, ri->name, &e, NULL),
                        ==, 0);
        g_assert_cmpuint(e.revision, ==, ri->current.revision);
        procreg_entry_clear(&e);
    }

    pthread_mutex_lock(&s.lock);
    struct timespec end = deadline_in(60);
    while (s.names->len < N - 1)
        if (pthread_cond_timedwait(&s.cond, &s.lock, &end) != 0)
            g_error("saw %u of %d registrations", s.names->len, N - 1);
    pthread_mutex_unlock(&s.lock);
    g_assert_cmpint(procreg_unsubscribe(reg, sub), ==, 0);
    g_assert_cmpuint(s.names->len, ==, N - 1);
    GHashTable *names = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; i < s.names->len; i++) {
        g_assert_true(g_hash_table_add(names, s.names->pdata[i]));
        if (i > 0) {
            g_assert_cmpuint(g_array_index(s.revisions, guint64, i), >,
                             g_array_index(s.revisions, guint64, i - 1));
            g_assert_cmpuint(g_array_index(s.positions, guint64, i), ==,
                             g_array_index(s.positions, guint64, i - 1) + 1);
        }
    }
    g_hash_table_unref(names);
    for (int i = 0; i < N; i++) {
        procreg_entry_clear(&r[i].current);
        procreg_close(r[i].reg);
    }
    g_ptr_array_unref(s.names);
    g_array_unref(s.revisions);
    g_array_unref(s.positions);
    pthread_mutex_destroy(&s.lock);
    pthread_cond_destroy(&s.cond);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    procreg_close(reg);
}

/* Every slot taken (the first leader held until all are published): one
 * more registrant goes solo, and everything is registered once. */
static void test_full(fixture *f, gconstpointer data)
{
    enum { N = SLOTS + 1 };
    procreg *reg = lt_open(f->spec);
    gint64 solo = lt_stat(reg, "batch_solo");
    gate_arm(SLOTS, true);
    registrant *r = g_new0(registrant, N);
    GThread **t = g_new0(GThread *, N);
    registrants_start(r, t, N, f->spec, "f", -1);
    for (int i = 0; i < N; i++) {
        registrant_finish(&r[i], t[i]);
        g_assert_cmpint(r[i].rc, ==, 0);
    }
    g_assert_cmpint(lt_stat(reg, "batch_solo"), ==, solo + 1);
    g_assert_cmpint(lt_stat(reg, "batch_requests"), ==, SLOTS);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, NS, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, N);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    g_free(r);
    g_free(t);
    procreg_close(reg);
}

/* ---- processes killed ---- */

/* Leader L is killed after applying its batch (its own request and R's),
 * before the commit, while R sleeps on its slot (no one will wake it):
 * within DEAD_LEADER_MS R takes the lock, finds both requests pending
 * again, drops the dead L's and commits its own once. */
static void test_leader_killed_before_commit(fixture *f, gconstpointer d)
{
    child l, r;
    spawn_child(&l, f->spec, "l", "lead:w,applied:k");
    expect(&l, "lead");
    spawn_child(&r, f->spec, "r", "wait:s,lead:w");
    expect(&r, "wait");
    wait_asleep(&r);
    go(&l);
    reap_self_killed(&l);
    expect_within(&r, "lead", DEAD_LEADER_MS);
    go(&r);
    expect(&r, "= 0 1 1"); /* registered; one recovery; L's request dropped */
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(owner_of(reg, "r"), ==, r.pid);
    g_assert_cmpint(owner_of(reg, "l"), ==, 0);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, NS, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&r);
    procreg_close(reg);
}

/* Leader L is killed after its commit, before it answered, while R
 * sleeps on its slot: within DEAD_LEADER_MS R takes the lock, finds its
 * request committed and is answered 0 (not EEXISTS, and not applied
 * again); L's answered slot goes with the next batch. */
static void test_leader_killed_after_commit(fixture *f, gconstpointer d)
{
    child l, r;
    spawn_child(&l, f->spec, "l", "lead:w,committed:k");
    expect(&l, "lead");
    spawn_child(&r, f->spec, "r", "wait:s,lead:k");
    expect(&r, "wait");
    wait_asleep(&r);
    go(&l);
    reap_self_killed(&l);
    /* R never led: its hook "lead" would kill it. */
    expect_within(&r, "= 0 1 0", DEAD_LEADER_MS);
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(owner_of(reg, "r"), ==, r.pid);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 1);
    procreg_entry p = {0};
    g_assert_cmpint(procreg_register(reg, NS, "p", NULL, NULL, &p, NULL),
                    ==, 0);
    /* l and r were registered once each, before p. */
    g_assert_cmpuint(p.revision, ==, 3);
    procreg_entry_clear(&p);
    g_assert_cmpint(lt_stat(reg, "batch_dropped"), ==, 1);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&r);
    procreg_close(reg);
}

/* ---- the flush after the lock ---- */

/* Leader L commits its batch (its request and R's) and lets the writer
 * lock go, and is held before its flush.  Meanwhile P takes the lock and
 * commits a batch of its own: the lock is free during L's flush.  R,
 * asleep with no bound worth the name (60 s), must not be answered
 * before L's flush (a version that answered at the commit fails here),
 * and never takes the lock (its hook "locked" would kill it). */
static void test_flush_after_unlock(fixture *f, gconstpointer d)
{
    child l, r, p;
    spawn_child(&l, f->spec, "l", "lead:w,unlocked:w");
    expect(&l, "lead");
    spawn_child(&r, f->spec, "r", "wait:s,locked:k,ms=60000");
    expect(&r, "wait");
    wait_asleep(&r);
    go(&l);
    expect(&l, "unlocked");
    spawn_child(&p, f->spec, "p", "");
    expect(&p, "= 0 0 0"); /* committed while L is held */
    expect_silent(&r, 300);
    g_assert_true(asleep_on_slot(r.pid));
    go(&l);
    expect(&l, "= 0 0 0");
    expect(&r, "= 0 0 0");
    procreg *reg = lt_open(f->spec);
    procreg_entry el = {0}, er = {0}, ep = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, NS, "l", &el, NULL), ==, 0);
    g_assert_cmpint(procreg_lookup_entry(reg, NS, "r", &er, NULL), ==, 0);
    g_assert_cmpint(procreg_lookup_entry(reg, NS, "p", &ep, NULL), ==, 0);
    g_assert_cmpuint(ep.revision, >, MAX(el.revision, er.revision));
    procreg_entry_clear(&el);
    procreg_entry_clear(&er);
    procreg_entry_clear(&ep);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&l);
    reap(&r);
    reap(&p);
    procreg_close(reg);
}

/* Leader L is killed after its commit and the lock's release, before its
 * flush, while R sleeps on its COMMITTED slot: no one will answer it.
 * Within DEAD_LEADER_MS R must flush the file itself and take its
 * answer, without the lock (its hook "locked" would kill it). */
static void test_leader_killed_before_flush(fixture *f, gconstpointer d)
{
    child l, r;
    spawn_child(&l, f->spec, "l", "lead:w,unlocked:k");
    expect(&l, "lead");
    spawn_child(&r, f->spec, "r", "wait:s,locked:k,flush-self:s");
    expect(&r, "wait");
    wait_asleep(&r);
    go(&l);
    reap_self_killed(&l);
    expect_within(&r, "flush-self", DEAD_LEADER_MS);
    expect(&r, "= 0 0 0");
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(owner_of(reg, "r"), ==, r.pid);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 1); /* L's */
    procreg_entry p = {0};
    g_assert_cmpint(procreg_register(reg, NS, "p", NULL, NULL, &p, NULL),
                    ==, 0);
    g_assert_cmpuint(p.revision, ==, 3); /* l and r once each */
    procreg_entry_clear(&p);
    g_assert_cmpint(lt_stat(reg, "batch_dropped"), ==, 1);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&r);
    procreg_close(reg);
}

/* ---- processes waiting for their answers ---- */

/* Registrant R finds the lock held by leader L, which has not collected
 * yet, and sleeps on its slot: L answers it and wakes it, and R returns
 * without ever taking the writer lock (its hook "locked" would kill
 * it).  R is asleep before L goes on, and its sleep has no bound worth
 * the name (60 s), so only L's wake-up can end it within the test's
 * 10 s. */
static void test_answered_asleep(fixture *f, gconstpointer d)
{
    child l, r;
    spawn_child(&l, f->spec, "l", "lead:w");
    expect(&l, "lead");
    spawn_child(&r, f->spec, "r", "wait:s,locked:k,ms=60000");
    expect(&r, "wait");
    wait_asleep(&r);
    go(&l);
    expect(&l, "= 0 0 0");
    expect(&r, "= 0 0 0");
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(owner_of(reg, "l"), ==, l.pid);
    g_assert_cmpint(owner_of(reg, "r"), ==, r.pid);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&l);
    reap(&r);
    procreg_close(reg);
}

/* R publishes its request just after leader L collected its batch and
 * finds the lock taken; before R sleeps, L commits without it and
 * releases the lock (the worst moment: R read its slot's word before the
 * release, and will sleep after it).  L's release must still end R's
 * sleep, for R to lead its request: R's sleep has no bound worth the
 * name (60 s), so a lost wake-up fails the test's 10 s. */
static void test_published_after_collect(fixture *f, gconstpointer d)
{
    child l, r;
    spawn_child(&l, f->spec, "l", "collected:w");
    expect(&l, "collected");
    spawn_child(&r, f->spec, "r", "wait:w,locked:s,ms=60000");
    expect(&r, "wait");
    go(&l);
    expect(&l, "= 0 0 0"); /* L released the lock */
    go(&r);
    expect(&r, "locked"); /* R leads its own request */
    expect(&r, "= 0 0 0");
    procreg *reg = lt_open(f->spec);
    procreg_entry el = {0}, er = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, NS, "l", &el, NULL), ==, 0);
    g_assert_cmpint(procreg_lookup_entry(reg, NS, "r", &er, NULL), ==, 0);
    g_assert_cmpint(er.owner.pid, ==, r.pid);
    g_assert_cmpuint(er.revision, ==, el.revision + 1); /* a batch of its own */
    procreg_entry_clear(&el);
    procreg_entry_clear(&er);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&l);
    reap(&r);
    procreg_close(reg);
}

/* A lockless reader (writer.c) holds the writer lock's byte shared when
 * registrant R tries it.  A reader's release nudges no slot, so R must
 * wait for it in the kernel, as a writer does, and lead as soon as the
 * reader lets go; asleep on its slot instead, R would see the lock free
 * only when its sleep (60 s here, 100 ms in the library) happens to end
 * between two reads, and a reader that reads on and on starves it. */
static void test_lockless_reader_releases(fixture *f, gconstpointer d)
{
    procreg_close(lt_open(f->spec)); /* the files exist */
    char *path = g_strdup_printf("%s/reg.mdb-notify", f->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    /* What procreg_lmdb_writer_lock_shared() takes. */
    struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_len = 1};
    g_assert_cmpint(fcntl(fd, F_OFD_SETLK, &fl), ==, 0);
    child r;
    spawn_child(&r, f->spec, "r", "published:s,locked:s,ms=60000");
    expect(&r, "published");
    gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (!blocked_in_fcntl(r.pid) && !asleep_on_slot(r.pid))
        if (g_get_monotonic_time() > end)
            g_error("the registrant never waited for the lock");
        else
            g_usleep(1000);
    fl.l_type = F_UNLCK;
    g_assert_cmpint(fcntl(fd, F_OFD_SETLK, &fl), ==, 0);
    expect(&r, "locked");
    expect(&r, "= 0 0 0");
    close(fd);
    g_free(path);
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(owner_of(reg, "r"), ==, r.pid);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&r);
    procreg_close(reg);
}

/* A registrant killed after publishing its request: the leader drops it
 * (never applied, never answered) and frees its slot. */
static void test_requester_killed_published(fixture *f, gconstpointer d)
{
    child l, r;
    spawn_child(&l, f->spec, "l", "lead:w");
    expect(&l, "lead");
    spawn_child(&r, f->spec, "r", "published:w");
    expect(&r, "published");
    reap(&r);
    go(&l);
    expect(&l, "= 0 0 1");
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(owner_of(reg, "l"), ==, l.pid);
    g_assert_cmpint(owner_of(reg, "r"), ==, 0);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    reap(&l);
    procreg_close(reg);
}

/* A registrant killed after claiming a slot, before publishing: the next
 * leader frees the slot. */
static void test_requester_killed_claimed(fixture *f, gconstpointer d)
{
    child r;
    spawn_child(&r, f->spec, "r", "claimed:k");
    reap_self_killed(&r);
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 1);
    g_assert_cmpint(procreg_register(reg, NS, "p", NULL, NULL, NULL, NULL),
                    ==, 0);
    g_assert_cmpint(lt_stat(reg, "batch_dropped"), ==, 1);
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    g_assert_cmpint(owner_of(reg, "r"), ==, 0);
    procreg_close(reg);
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--child") == 0)
        child_main(argv[2], argv[3], argv[4]);
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn)                                                         \
    g_test_add("/lmdb/batch/" path, fixture, NULL, lt_fx_setup, fn, teardown)
    ADD("threads", test_threads);
    ADD("full", test_full);
    ADD("leader-killed-before-commit", test_leader_killed_before_commit);
    ADD("leader-killed-after-commit", test_leader_killed_after_commit);
    ADD("flush-after-unlock", test_flush_after_unlock);
    ADD("leader-killed-before-flush", test_leader_killed_before_flush);
    ADD("answered-asleep", test_answered_asleep);
    ADD("published-after-collect", test_published_after_collect);
    ADD("lockless-reader-releases", test_lockless_reader_releases);
    ADD("requester-killed-published", test_requester_killed_published);
    ADD("requester-killed-claimed", test_requester_killed_claimed);
    return g_test_run();
}
