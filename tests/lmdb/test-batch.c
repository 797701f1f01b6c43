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
#include "lmdb-test-util.h"

#include <fcntl.h>
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
extern int procreg_lmdb_batch_first_slot;

#define NS "batch"
/* The request area's slots (batch.c's BATCH_SLOTS). */
#define SLOTS 64

/* ---- child processes ---- */

/* --child SPEC NAME ACTIONS: ACTIONS is "point:action,..." with action s
 * (say the point's name on a line), w (say it, then wait for a byte), k
 * (SIGKILL this process), d (from now on, as a leader, judge every other
 * process's registrant dead) or e (from now on, fail every try of the
 * writer lock), at the point's first time; an item "ms=N" sets the
 * registrant's longest sleep on its slot (batch.c's BATCH_WAIT_MS).
 * Registers NAME, says "= RC RECOVERIES DROPPED" (and "! MESSAGE" on a
 * failure) and sleeps until killed. */
static char **child_actions;

static void child_hook(const char *point)
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
            procreg_lmdb_batch_lock_errno = ENOLCK;
        if (act == 's' || act == 'w') {
            printf("%s\n", point);
            fflush(stdout);
        }
        char c;
        if (act == 'w' && read(STDIN_FILENO, &c, 1) != 1)
            _exit(3);
    }
}

static G_NORETURN void child_main(const char *spec, const char *name,
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

static void spawn_child(child *c, const char *spec, const char *name,
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
static char *child_says(child *c, int ms)
{
    struct pollfd p = {.fd = fileno(c->out), .events = POLLIN};
    char line[128];
    if (poll(&p, 1, ms) != 1 || fgets(line, sizeof line, c->out) == NULL)
        g_error("child %d said nothing within %d ms", (int)c->pid, ms);
    return g_strdup(g_strchomp(line));
}

/* @c says @want within @ms. */
static void expect_within(child *c, const char *want, int ms)
{
    char *got = child_says(c, ms);
    g_assert_cmpstr(got, ==, want);
    g_free(got);
}

static void expect(child *c, const char *want)
{
    expect_within(c, want, 10000);
}

/* Whether @pid's main thread sleeps in a shared FUTEX_WAIT (glibc's own
 * locks are private): a registrant asleep on its slot, after its hook
 * "wait". */
static bool asleep_on_slot(pid_t pid)
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

/* Wait until @c sleeps on its slot, where only a wake-up or the sleep's
 * bound can end its wait. */
static void wait_asleep(child *c)
{
    gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (!asleep_on_slot(c->pid))
        if (g_get_monotonic_time() > end)
            g_error("child %d never slept on its slot", (int)c->pid);
        else
            g_usleep(1000);
}

static void go(child *c)
{
    g_assert_cmpint(write(c->in, "g", 1), ==, 1);
}

/* Reap @c, which dies of a SIGKILL: its own (at a hook point), or ours
 * when @kill_it. */
static void reap_how(child *c, bool kill_it)
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

static void reap(child *c)
{
    reap_how(c, true);
}

/* Reap @c once it killed itself at its hook point. */
static void reap_self_killed(child *c)
{
    reap_how(c, false);
}

/* ---- fixture ---- */

typedef struct {
    char *dir, *spec;
} fixture;

static void setup(fixture *f, gconstpointer data)
{
    f->dir = lt_tmpdir();
    f->spec = g_strdup_printf("lmdb:path=%s/reg.mdb", f->dir);
}

static void teardown(fixture *f, gconstpointer data)
{
    procreg_lmdb_batch_hook = NULL;
    lt_rmtree(f->dir);
    g_free(f->dir);
    g_free(f->spec);
}

/* The owner of @name, or pid 0 when it is not registered. */
static pid_t owner_of(procreg *reg, const char *name)
{
    procreg_owner o = {0};
    int rc = procreg_lookup(reg, NS, name, &o, NULL);
    g_assert_true(rc == 0 || rc == PROCREG_ENOTFOUND);
    return rc == 0 ? o.pid : 0;
}

/* ---- threads of one process ---- */

/* pthreads, not GMutex: glib 2.74's GMutex is a bare futex that
 * ThreadSanitizer cannot see. */
static struct timespec deadline_in(int seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += seconds;
    return ts;
}

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

/* A registrant thread with a handle of its own (threads sharing one
 * would queue on the core's per-key locks, in front of the backend). */
typedef struct {
    procreg *reg;
    char name[32];
    int rc;
    procreg_entry current;
} registrant;

static gpointer registrant_main(gpointer data)
{
    registrant *r = data;
    r->rc = procreg_register(r->reg, NS, r->name, NULL, NULL, &r->current,
                             NULL);
    return NULL;
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

static void registrant_finish(registrant *r, GThread *t)
{
    g_thread_join(t);
    procreg_entry_clear(&r->current);
    procreg_close(r->reg);
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

/* How long a registrant asleep on its slot may take to lead after its
 * leader died: its sleep ends within batch.c's BATCH_WAIT_MS (100 ms),
 * then it takes the lock; the rest is slack for a loaded machine. */
#define DEAD_LEADER_MS 2000

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

/* ---- a live registrant judged dead, a lock that fails ---- */

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
    g_test_add("/lmdb/batch/" path, fixture, NULL, setup, fn, teardown)
    ADD("threads", test_threads);
    ADD("full", test_full);
    ADD("leader-killed-before-commit", test_leader_killed_before_commit);
    ADD("leader-killed-after-commit", test_leader_killed_after_commit);
    ADD("answered-asleep", test_answered_asleep);
    ADD("published-after-collect", test_published_after_collect);
    ADD("lockless-reader-releases", test_lockless_reader_releases);
    ADD("requester-killed-published", test_requester_killed_published);
    ADD("requester-killed-claimed", test_requester_killed_claimed);
    ADD("freed-pending", test_freed_pending);
    ADD("freed-done", test_freed_done);
    ADD("freed-reclaimed", test_freed_reclaimed);
    ADD("lock-error-applied", test_lock_error_applied);
    ADD("lock-error-leader-died", test_lock_error_leader_died);
    return g_test_run();
}
