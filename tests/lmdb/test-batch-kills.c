/*
 * Group commit (backends/lmdb/batch.c) under random SIGKILLs: an
 * adversary for its claims, where test-batch.c forces one interleaving
 * at a time.
 *
 * Each round, CHILDREN registrant processes (this program, re-executed;
 * two of them with three threads) register names of a namespace of the
 * round on behalf of this long-lived parent (so no owner cleanup can hide
 * a loss): contended names "s*" that all of them race for, names "c*"
 * that only one thread registers, and names "x*" that one thread
 * registers and unregisters in turn (solo writers that contend for the
 * writer lock with the batches).  A thread reports each operation on the
 * pipe before it starts ("b") and its answer as soon as it has it ("r",
 * "u"), before anything else.  Meanwhile the parent SIGKILLs children at
 * random moments, often whoever holds the writer lock, and the children
 * kill themselves now and then at the library's batch hook points
 * (this test links the backend built with PROCREG_TEST_BATCH_HOOK):
 * leaders between collecting, applying, committing and answering.  Some
 * rounds also run a lockless reader (another user's read-only registry
 * whose lock file it cannot write), which holds the writer lock's byte
 * shared while it reads.
 *
 * After the last kill of a round every surviving thread must finish the
 * operation it had in flight and one more within HANG_MS (else the test
 * fails naming the thread and what it waits for).  Then every child is
 * killed and the file checked through a fresh handle: every registration
 * acknowledged 0 is there with its registrant's metadata and the parent
 * as owner; a contended name has at most one acknowledged winner, and
 * every EEXISTS named the name's final holder, never the registrant
 * itself (a request applied twice); a name unregistered with 0 is gone;
 * nothing is half-written and no entry comes from an operation never
 * begun.
 *
 * PROCREG_BATCH_KILL_ROUNDS sets the number of rounds (default 100).
 */
#include "lmdb-test-util.h"

#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>

extern void (*procreg_lmdb_batch_hook)(const char *point);

#define CHILDREN 4
#define MAX_THREADS 3
#define SHARED 8
/* The longest any registration may take: batch.c bounds a wait at one
 * commit plus 100 ms after a dead leader; the rest is slack for a loaded
 * machine and sanitizers. */
#define HANG_MS 10000
/* A child kills itself at one hook point in this many, in half the
 * children. */
#define HOOK_KILL_ONE_IN 150

/* ---- the children ---- */

static int write_line(const char *line)
{
    /* One write() of less than PIPE_BUF: lines of threads never mix. */
    size_t len = strlen(line);
    return write(STDOUT_FILENO, line, len) == (ssize_t)len ? 0 : -1;
}

static void say(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *line = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (write_line(line) != 0)
        _exit(3);
    g_free(line);
}

static GVariant *payload(const char *who)
{
    /* Mostly small enough for a batch slot, now and then too big for one
     * (the solo path, in the same races). */
    guint len = g_random_int_range(0, 10) == 0
                    ? (guint)g_random_int_range(600, 3000)
                    : (guint)g_random_int_range(0, 200);
    char *blob = g_malloc(len + 1);
    for (guint i = 0; i < len; i++)
        blob[i] = (char)('a' + g_random_int_range(0, 26));
    blob[len] = '\0';
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "who", "s", who);
    g_variant_dict_insert(&d, "blob", "s", blob);
    g_variant_dict_insert(&d, "check", "u", g_str_hash(blob) ^ g_str_hash(who));
    g_free(blob);
    return g_variant_dict_end(&d);
}

/* The registrant's id in a complete payload @m; NULL when half-written. */
static const char *payload_who(GVariant *m)
{
    const char *who = NULL, *blob = NULL;
    guint32 check = 0;
    if (m == NULL || !g_variant_lookup(m, "who", "&s", &who) ||
        !g_variant_lookup(m, "blob", "&s", &blob) ||
        !g_variant_lookup(m, "check", "u", &check) ||
        (g_str_hash(blob) ^ g_str_hash(who)) != check)
        return NULL;
    return who;
}

static const char *child_ns;
/* A handle per thread (threads sharing one would queue on the core's
 * per-key locks, in front of the backend), opened before they start. */
static procreg *child_regs[MAX_THREADS];
static procreg_owner child_parent;
static int hook_kill_one_in;

static void kill_hook(const char *point)
{
    if (hook_kill_one_in > 0 &&
        g_random_int_range(0, hook_kill_one_in) == 0)
        raise(SIGKILL);
}

static int unregister_forced(procreg *reg, const char *name, GError **err)
{
    procreg_key *key = NULL;
    int rc = procreg_key_new(child_ns, name, &key, err);
    if (rc == 0)
        rc = procreg_unregister_full(reg, key, 0, PROCREG_FORCE, err);
    procreg_key_unref(key);
    return rc;
}

static gpointer registrant_main(gpointer data)
{
    int t = GPOINTER_TO_INT(data);
    procreg *reg = child_regs[t];
    bool churn_held = false;
    for (int i = 0;; i++) {
        char name[64], who[64];
        g_snprintf(who, sizeof who, "%d.%d.%d", (int)getpid(), t, i);
        int pick = g_random_int_range(0, 10);
        if (pick < 4)
            g_snprintf(name, sizeof name, "s%d",
                       g_random_int_range(0, SHARED));
        else if (pick < 7)
            g_snprintf(name, sizeof name, "c%s", who);
        else
            g_snprintf(name, sizeof name, "x%d.%d", (int)getpid(), t);
        bool unreg = name[0] == 'x' && churn_held;
        say("b %d %s %s %c\n", t, name, who, unreg ? 'u' : 'r');
        gint64 t0 = g_get_monotonic_time();
        procreg_entry cur = {0};
        GError *err = NULL;
        /* The entries are the parent's: unregistered as a supervisor
         * would, with PROCREG_FORCE. */
        int rc = unreg ? unregister_forced(reg, name, &err)
                       : procreg_register(reg, child_ns, name, &child_parent,
                                          payload(who), &cur, &err);
        gint64 us = g_get_monotonic_time() - t0;
        const char *holder = rc == PROCREG_EEXISTS
                                 ? payload_who(cur.metadata) : NULL;
        if (err != NULL && rc != PROCREG_EEXISTS)
            say("! %s\n", err->message);
        say("%c %d %s %d %" G_GINT64_FORMAT " %s\n", unreg ? 'u' : 'r', t,
            name, rc, us, holder != NULL ? holder : "-");
        if (name[0] == 'x' && rc == 0)
            churn_held = !churn_held;
        g_clear_error(&err);
        procreg_entry_clear(&cur);
    }
    return NULL;
}

/* --registrant SPEC NS THREADS HOOK_KILLS */
static G_NORETURN void registrant_child(char **argv)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* no orphan when the test fails */
    child_ns = argv[1];
    int threads = CLAMP(atoi(argv[2]), 1, MAX_THREADS);
    hook_kill_one_in = atoi(argv[3]);
    if (procreg_owner_from_pid(getppid(), &child_parent, NULL) != 0)
        _exit(2);
    for (int t = 0; t < threads; t++)
        child_regs[t] = lt_open(argv[0]);
    procreg_lmdb_batch_hook = kill_hook;
    for (int t = 0; t < threads; t++)
        g_thread_unref(g_thread_new("registrant", registrant_main,
                                    GINT_TO_POINTER(t)));
    for (;;)
        pause();
}

/* --reader PATH NS: as nobody (65534), read the namespace over and over
 * through a lockless registry; says "ready" once it is one. */
static G_NORETURN void reader_child(char **argv)
{
    procreg *reg = NULL;
    pid_t parent = getppid();
    /* After setuid(), which clears a parent-death signal. */
    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0 ||
        prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(5);
    char *lock = g_strconcat(argv[0], "-lock", NULL);
    char *spec = g_strconcat("lmdb:path=", argv[0], NULL);
    /* Lockless: it may read the file and write neither it nor its lock. */
    if (access(lock, W_OK) == 0 || procreg_open(spec, &reg, NULL) != 0 ||
        lt_stat(reg, "read_only") != 1)
        _exit(2);
    say("ready\n");
    for (;;) {
        procreg_entry *all = NULL;
        size_t n = 0;
        if (procreg_list(reg, argv[1], &all, &n, NULL) != 0)
            _exit(4);
        procreg_entries_free(all, n);
    }
}

/* ---- the parent ---- */

typedef struct {
    GPid pid;
    int fd;
    GString *buf;
    bool alive, ready, reader;
    int threads;
    int done[MAX_THREADS];      /* answers reported */
    bool killed;                 /* by this parent */
    char *inflight[MAX_THREADS]; /* the name of the operation begun */
    char *who[MAX_THREADS];      /* the id of the last operation begun */
    gint64 since[MAX_THREADS];  /* when its "b" came */
} child;

/* What the round's reports say about one name. */
typedef struct {
    GHashTable *begun; /* the ids that began an operation on it */
    char *winner;      /* a registration acknowledged 0 ("s", "c") */
    GPtrArray *holders; /* the holders EEXISTS answers named */
    /* "x" names: the last operation begun and whether it was answered. */
    char last_op;
    char *last_who, *prev_who;
    int last_rc;
    bool last_answered;
} name_state;

typedef struct {
    int round;
    const char *ns;
    GHashTable *names; /* name -> name_state */
    gint64 acks, eexists, max_us, kills, holder_kills, hook_kills, unregs,
        reader_rounds;
} round_state;

static void name_state_free(gpointer p)
{
    name_state *s = p;
    g_hash_table_unref(s->begun);
    g_ptr_array_unref(s->holders);
    g_free(s->winner);
    g_free(s->last_who);
    g_free(s->prev_who);
    g_free(s);
}

static name_state *name_get(round_state *r, const char *name)
{
    name_state *s = g_hash_table_lookup(r->names, name);
    if (s == NULL) {
        s = g_new0(name_state, 1);
        s->begun = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                         NULL);
        s->holders = g_ptr_array_new_with_free_func(g_free);
        g_hash_table_insert(r->names, g_strdup(name), s);
    }
    return s;
}

static void on_line(round_state *r, child *c, char *line)
{
    int t = -1, rc = 0;
    char name[64], who[64], holder[64], op;
    gint64 us = 0;
    if (strcmp(line, "ready") == 0) {
        c->ready = true;
    } else if (line[0] == '!') {
        g_test_message("round %d: child %d: %s", r->round, (int)c->pid,
                       line + 2);
    } else if (sscanf(line, "b %d %63s %63s %c", &t, name, who, &op) == 4 &&
               t >= 0 && t < c->threads) {
        name_state *s = name_get(r, name);
        g_hash_table_add(s->begun, g_strdup(who));
        if (name[0] == 'x') {
            g_free(s->prev_who);
            s->prev_who = s->last_who;
            s->last_who = g_strdup(who);
            s->last_op = op;
            s->last_answered = false;
        }
        g_free(c->inflight[t]);
        c->inflight[t] = g_strdup(name);
        g_free(c->who[t]);
        c->who[t] = g_strdup(who);
        c->since[t] = g_get_monotonic_time();
    } else if (sscanf(line, "%c %d %63s %d %" G_GINT64_FORMAT " %63s", &op,
                      &t, name, &rc, &us, holder) == 6 &&
               (op == 'r' || op == 'u') && t >= 0 && t < c->threads &&
               c->inflight[t] != NULL && strcmp(c->inflight[t], name) == 0) {
        name_state *s = name_get(r, name);
        c->done[t]++;
        g_clear_pointer(&c->inflight[t], g_free);
        r->max_us = MAX(r->max_us, us);
        if (us > 300000)
            g_test_message("round %d: child %d thread %d waited %.1f ms for "
                           "'%s' (%c)", r->round, (int)c->pid, t, us / 1e3,
                           name, op);
        if (us > HANG_MS * 1000)
            g_error("round %d: child %d thread %d waited %.1f s for its %s "
                    "of '%s'", r->round, (int)c->pid, t, us / 1e6,
                    op == 'r' ? "registration" : "unregistration", name);
        bool ok = op == 'u' ? rc == 0
                            : rc == 0 || (rc == PROCREG_EEXISTS && name[0] == 's');
        if (!ok || (rc == PROCREG_EEXISTS && strcmp(holder, "-") == 0))
            g_error("round %d: child %d thread %d: %s of '%s' answered %d "
                    "(holder %s)", r->round, (int)c->pid, t,
                    op == 'r' ? "registration" : "unregistration", name, rc,
                    holder);
        if (op == 'u')
            r->unregs++;
        else if (rc == 0)
            r->acks++;
        else
            r->eexists++;
        if (name[0] == 'x') {
            s->last_rc = rc;
            s->last_answered = true;
        } else if (rc == 0) {
            if (s->winner != NULL)
                g_error("round %d: '%s' acknowledged to %s and to %s",
                        r->round, name, s->winner, c->who[t]);
            s->winner = g_strdup(c->who[t]);
        } else if (strcmp(holder, c->who[t]) == 0) {
            g_error("round %d: %s's registration of '%s' answered EEXISTS "
                    "naming itself: applied twice", r->round, c->who[t],
                    name);
        } else {
            g_ptr_array_add(s->holders, g_strdup(holder));
        }
    } else {
        g_error("round %d: child %d said '%s'", r->round, (int)c->pid, line);
    }
}

/* Read what the children say, for @ms at most (0: what is there now). */
static void pump(round_state *r, child *kids, int n, int ms)
{
    GPollFD p[CHILDREN + 1];
    int idx[CHILDREN + 1], np = 0;
    for (int i = 0; i < n; i++)
        if (kids[i].fd >= 0) {
            p[np] = (GPollFD){kids[i].fd, G_IO_IN | G_IO_HUP, 0};
            idx[np++] = i;
        }
    if (np == 0 || g_poll(p, np, ms) <= 0)
        return;
    for (int j = 0; j < np; j++) {
        if (p[j].revents == 0)
            continue;
        child *c = &kids[idx[j]];
        char chunk[8192];
        ssize_t got = read(c->fd, chunk, sizeof chunk);
        if (got <= 0) {
            close(c->fd);
            c->fd = -1;
            continue;
        }
        g_string_append_len(c->buf, chunk, got);
        char *nl;
        while ((nl = memchr(c->buf->str, '\n', c->buf->len)) != NULL) {
            *nl = '\0';
            on_line(r, c, c->buf->str);
            g_string_erase(c->buf, 0, nl - c->buf->str + 1);
        }
    }
}

static void spawn(child *c, char **argv, int threads)
{
    memset(c, 0, sizeof *c);
    GError *err = NULL;
    if (!g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                  NULL, NULL, &c->pid, NULL, &c->fd, NULL,
                                  &err))
        g_error("spawning a child: %s", err->message);
    c->buf = g_string_new(NULL);
    c->alive = true;
    c->threads = threads;
}

/* Reap @c if it is dead; whether it is.  Only a SIGKILL may end it. */
static bool reaped(round_state *r, child *c, bool block)
{
    if (!c->alive)
        return true;
    int status = 0;
    pid_t got = waitpid(c->pid, &status, block ? 0 : WNOHANG);
    if (got == 0)
        return false;
    g_assert_cmpint(got, ==, c->pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        g_error("round %d: %s %d ended by itself (status 0x%x)", r->round,
                c->reader ? "the reader" : "registrant", (int)c->pid, status);
    c->alive = false;
    if (!c->killed)
        r->hook_kills++;
    return true;
}

static int live_registrants(round_state *r, child *kids, int n)
{
    int live = 0;
    for (int i = 0; i < n; i++)
        live += !kids[i].reader && !reaped(r, &kids[i], false);
    return live;
}

/* Whether @pid holds a write lock through one of its descriptors of the
 * file FILE-notify: the writer lock, so it is leading or writing. */
static bool holds_writer_lock(pid_t pid)
{
    char *dir = g_strdup_printf("/proc/%d/fdinfo", pid);
    GDir *d = g_dir_open(dir, 0, NULL);
    bool held = false;
    const char *fd;
    while (d != NULL && !held && (fd = g_dir_read_name(d)) != NULL) {
        char *p = g_strdup_printf("%s/%s", dir, fd), *text = NULL;
        /* "lock:\t1: OFDLCK ADVISORY  WRITE -1 ..." (the spacing varies
         * between kernels). */
        char **lines = NULL;
        if (g_file_get_contents(p, &text, NULL, NULL))
            lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; l != NULL && *l != NULL && !held; l++)
            held = g_str_has_prefix(*l, "lock:") &&
                   strstr(*l, "OFDLCK") != NULL &&
                   strstr(*l, " WRITE ") != NULL;
        g_strfreev(lines);
        g_free(text);
        g_free(p);
    }
    if (d != NULL)
        g_dir_close(d);
    g_free(dir);
    return held;
}

/* SIGKILL one live registrant: half the time whichever holds the writer
 * lock, if one does; now and then the lockless reader instead, which may
 * die holding the lock's byte shared. */
static void kill_one(round_state *r, child *kids, int n)
{
    int live[CHILDREN], nl = 0, victim = -1;
    for (int i = 0; i < n; i++)
        if (!reaped(r, &kids[i], false)) {
            if (!kids[i].reader)
                live[nl++] = i;
            else if (g_random_int_range(0, 4) == 0)
                victim = i;
        }
    if (nl == 0 && victim < 0)
        return;
    if (victim < 0 && g_random_boolean())
        for (int j = 0; j < nl && victim < 0; j++)
            if (holds_writer_lock(kids[live[j]].pid)) {
                victim = live[j];
                r->holder_kills++;
            }
    if (victim < 0)
        victim = live[g_random_int_range(0, nl)];
    kids[victim].killed = true;
    kill(kids[victim].pid, SIGKILL);
    reaped(r, &kids[victim], true);
    r->kills++;
}

/* Every live registrant thread answers what it had in flight and one
 * more operation within HANG_MS. */
static void settle(round_state *r, child *kids, int n)
{
    int want[CHILDREN][MAX_THREADS];
    pump(r, kids, n, 0);
    for (int i = 0; i < n; i++)
        for (int t = 0; t < kids[i].threads; t++)
            want[i][t] = kids[i].done[t] + 2;
    for (;;) {
        int late_child = -1, late_thread = -1;
        for (int i = 0; i < n && late_child < 0; i++)
            for (int t = 0; t < kids[i].threads && late_child < 0; t++)
                if (!reaped(r, &kids[i], false) &&
                    kids[i].done[t] < want[i][t]) {
                    late_child = i;
                    late_thread = t;
                }
        if (late_child < 0)
            return;
        child *c = &kids[late_child];
        if (c->inflight[late_thread] != NULL &&
            g_get_monotonic_time() - c->since[late_thread] > HANG_MS * 1000)
            g_error("round %d: child %d thread %d hangs: its operation on "
                    "'%s' began %.1f s ago and has no answer", r->round,
                    (int)c->pid, late_thread, c->inflight[late_thread],
                    (g_get_monotonic_time() - c->since[late_thread]) / 1e6);
        pump(r, kids, n, 10);
    }
}

/* The file against the reports, through a fresh handle of @spec. */
static void verify(round_state *r, const char *spec)
{
    procreg *reg = lt_open(spec);
    procreg_owner self;
    procreg_owner_self(&self);
    procreg_entry *all = NULL;
    size_t n = 0;
    GError *err = NULL;
    if (procreg_list(reg, r->ns, &all, &n, &err) != 0)
        g_error("round %d: list: %s", r->round, err->message);
    GHashTable *holder = g_hash_table_new(g_str_hash, g_str_equal);
    for (size_t i = 0; i < n; i++) {
        const char *who = payload_who(all[i].metadata);
        if (who == NULL)
            g_error("round %d: '%s' is half-written", r->round, all[i].name);
        if (all[i].owner.pid != self.pid)
            g_error("round %d: '%s' has owner %d", r->round, all[i].name,
                    (int)all[i].owner.pid);
        name_state *s = g_hash_table_lookup(r->names, all[i].name);
        if (s == NULL || !g_hash_table_contains(s->begun, who))
            g_error("round %d: '%s' holds %s's registration, never begun",
                    r->round, all[i].name, who);
        if (!g_hash_table_insert(holder, all[i].name, (gpointer)who))
            g_error("round %d: '%s' listed twice", r->round, all[i].name);
    }
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, r->names);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        const char *name = k, *now = g_hash_table_lookup(holder, name);
        name_state *s = v;
        if (s->winner != NULL && g_strcmp0(now, s->winner) != 0)
            g_error("round %d: '%s' was acknowledged to %s but holds %s",
                    r->round, name, s->winner, now ? now : "nothing (lost)");
        for (guint i = 0; i < s->holders->len; i++) {
            const char *h = s->holders->pdata[i];
            if (g_strcmp0(now, h) != 0)
                g_error("round %d: an EEXISTS for '%s' named %s, the name "
                        "holds %s", r->round, name, h, now ? now : "nothing");
        }
        if (name[0] != 'x' || s->last_who == NULL)
            continue;
        /* One thread's register/unregister turns. */
        if (s->last_answered && s->last_op == 'u' && now != NULL)
            g_error("round %d: '%s' was unregistered, still holds %s",
                    r->round, name, now);
        if (s->last_answered && s->last_op == 'r' &&
            g_strcmp0(now, s->last_who) != 0)
            g_error("round %d: '%s' was acknowledged to %s but holds %s",
                    r->round, name, s->last_who, now ? now : "nothing (lost)");
        if (!s->last_answered && now != NULL &&
            g_strcmp0(now, s->last_op == 'r' ? s->last_who : s->prev_who) !=
                0)
            g_error("round %d: '%s' holds %s", r->round, name, now);
    }
    g_hash_table_unref(holder);
    procreg_entries_free(all, n);
    /* A write works whoever died holding what, and the round's names go. */
    if (procreg_register(reg, r->ns, "probe", NULL, NULL, NULL, &err) != 0 ||
        procreg_namespace_drop(reg, r->ns, NULL, NULL, &err) != 0)
        g_error("round %d: writing after the kills: %s", r->round,
                err->message);
    /* That write led a batch with every registrant dead: it dropped
     * their slots, so none is left taken. */
    g_assert_cmpint(lt_stat(reg, "batch_slots_used"), ==, 0);
    procreg_close(reg);
}

static void test_kills(void)
{
    int rounds = 100;
    const char *env_rounds = g_getenv("PROCREG_BATCH_KILL_ROUNDS");
    if (env_rounds != NULL)
        rounds = atoi(env_rounds);
    char *dir = lt_tmpdir();
    char *path = g_build_filename(dir, "kills.mdb", NULL);
    char *exe = g_file_read_link("/proc/self/exe", NULL);
    /* The files exist, readable by the lockless reader (another user). */
    char *keep_spec = g_strdup_printf("lmdb:path=%s", path);
    procreg *keep = lt_open(keep_spec);
    g_free(keep_spec);
    bool with_reader = geteuid() == 0;
    if (with_reader) {
        g_assert_cmpint(chmod(dir, 0755), ==, 0);
        const char *suffixes[] = {"", "-lock", "-notify"};
        for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
            char *p = g_strconcat(path, suffixes[i], NULL);
            g_assert_cmpint(chmod(p, 0644), ==, 0);
            g_free(p);
        }
    }
    round_state total = {0};
    gint64 t0 = g_get_monotonic_time();
    for (int round = 0; round < rounds; round++) {
        char *ns = g_strdup_printf("r%d", round);
        char *spec = g_strdup_printf("lmdb:path=%s,durability=%s", path,
                                     round % 2 ? "nosync" : "sync");
        round_state r = {
            .round = round,
            .ns = ns,
            .names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                           name_state_free),
        };
        child kids[CHILDREN + 1];
        int n = 0;
        for (; n < CHILDREN; n++) {
            char threads[4], hook[8];
            int nt = n % 2 == 0 ? MAX_THREADS : 1;
            g_snprintf(threads, sizeof threads, "%d", nt);
            g_snprintf(hook, sizeof hook, "%d",
                       (n + round) % 2 ? HOOK_KILL_ONE_IN : 0);
            char *argv[] = {exe, (char *)"--registrant", spec, ns, threads,
                            hook, NULL};
            spawn(&kids[n], argv, nt);
        }
        if (with_reader && round % 3 == 0) {
            char *argv[] = {exe, (char *)"--reader", path, ns, NULL};
            spawn(&kids[n], argv, 0);
            kids[n].reader = true;
            gint64 end = g_get_monotonic_time() + HANG_MS * 1000;
            while (!kids[n].ready && g_get_monotonic_time() < end &&
                   !reaped(&r, &kids[n], false))
                pump(&r, kids, n + 1, 10);
            if (!kids[n].ready)
                g_error("round %d: the lockless reader never started", round);
            n++;
            total.reader_rounds++;
        }
        /* Until 10-40 answers came, with 1-3 kills at random moments
         * among them. */
        int goal = g_random_int_range(10, 41);
        int kills = g_random_int_range(1, 4);
        gint64 end = g_get_monotonic_time() + HANG_MS * 1000;
        while (r.acks + r.eexists + r.unregs < goal &&
               live_registrants(&r, kids, n) > 0) {
            if (g_get_monotonic_time() > end)
                g_error("round %d: %" G_GINT64_FORMAT " answers of %d in "
                        "%d s", round, r.acks + r.eexists + r.unregs, goal,
                        HANG_MS / 1000);
            pump(&r, kids, n, g_random_int_range(0, 4));
            if (kills > 0 && g_random_int_range(0, goal) < 2) {
                kill_one(&r, kids, n);
                kills--;
            }
        }
        settle(&r, kids, n);
        for (int i = 0; i < n; i++) {
            if (!reaped(&r, &kids[i], false)) {
                kids[i].killed = true;
                kill(kids[i].pid, SIGKILL);
                reaped(&r, &kids[i], true);
            }
        }
        for (int i = 0; i < n; i++)
            while (kids[i].fd >= 0)
                pump(&r, kids, n, -1);
        for (int i = 0; i < n; i++) {
            g_string_free(kids[i].buf, TRUE);
            for (int t = 0; t < MAX_THREADS; t++) {
                g_free(kids[i].inflight[t]);
                g_free(kids[i].who[t]);
            }
        }
        verify(&r, spec);
        total.acks += r.acks;
        total.eexists += r.eexists;
        total.unregs += r.unregs;
        total.kills += r.kills;
        total.holder_kills += r.holder_kills;
        total.hook_kills += r.hook_kills;
        total.max_us = MAX(total.max_us, r.max_us);
        g_hash_table_unref(r.names);
        g_free(spec);
        g_free(ns);
    }
    g_test_message("%d rounds (%" G_GINT64_FORMAT " with a lockless "
                   "reader), %" G_GINT64_FORMAT " SIGKILLs (%" G_GINT64_FORMAT
                   " of a writer-lock holder) and %" G_GINT64_FORMAT
                   " deaths at hook points; %" G_GINT64_FORMAT
                   " registrations acknowledged, %" G_GINT64_FORMAT
                   " EEXISTS, %" G_GINT64_FORMAT " unregistrations; longest "
                   "wait %.1f ms; %.1f s", rounds, total.reader_rounds,
                   total.kills, total.holder_kills,
                   total.hook_kills, total.acks, total.eexists, total.unregs,
                   total.max_us / 1e3, (g_get_monotonic_time() - t0) / 1e6);
    g_assert_cmpint(total.acks, >, rounds);
    g_assert_cmpint(total.eexists, >, 0);
    procreg_close(keep);
    lt_rmtree(dir);
    g_free(dir);
    g_free(path);
    g_free(exe);
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "--registrant") == 0)
        registrant_child(argv + 2);
    if (argc == 4 && strcmp(argv[1], "--reader") == 0)
        reader_child(argv + 2);
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/lmdb/batch/kills", test_kills);
    return g_test_run();
}
