/*
 * Writers killed at the worst moments, forced one system call at a time
 * with ptrace (doc/lmdb.md, "Writers that are killed"): procreg's writer
 * lock must leave no surviving writer waiting, let readers and opens
 * through while a writer holds it, and survive a forked child.
 *
 * Each writer is this program, re-executed (--one-write): it opens the
 * registry, waits for a byte on stdin, makes one write and says so.  The
 * test holds a writer inside its write transaction by stopping it at the
 * entry of the commit's first write, and sees a writer wait for the
 * right to write as a blocking system call: LMDB's shared FUTEX_WAIT (on
 * its mutex in FILE-lock), the writer lock's fcntl(F_OFD_SETLKW), or a
 * batched registration's shared FUTEX_WAIT on its request slot (in
 * FILE-notify, backends/lmdb/batch.c), which returns every 100 ms at
 * most to try the writer lock again.
 */
#include "lmdb-test-util.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define NS "writers"
/* A writer that waits longer than this after the lock is free stalls. */
#define STALL_US G_USEC_PER_SEC

/* --one-write SPEC KEY [fork]: open the registry (and fork a child that
 * sleeps), say 'r', wait for a byte on stdin, register KEY, say 'd', and
 * sleep until killed. */
static G_NORETURN void one_write_main(const char *spec, const char *key,
                                      bool fork_child)
{
    procreg *reg = NULL;
    GError *err = NULL;
    char c;
    if (procreg_open(spec, &reg, &err) != 0) {
        g_printerr("one-write: %s\n", err->message);
        _exit(2);
    }
    pid_t test = getppid();
    if (fork_child && fork() == 0) {
        /* Outlives this writer; goes with the test. */
        while (kill(test, 0) == 0)
            g_usleep(100000);
        _exit(0);
    }
    if (write(STDOUT_FILENO, "r", 1) != 1 || read(STDIN_FILENO, &c, 1) != 1)
        _exit(3);
    if (procreg_register(reg, NS, key, NULL, NULL, NULL, &err) != 0) {
        g_printerr("one-write %s: %s\n", key, err->message);
        _exit(4);
    }
    if (write(STDOUT_FILENO, "d", 1) != 1)
        _exit(3);
    for (;;)
        pause();
}

/* --read SPEC [UID]: (as UID) open the registry, say 'r', wait for a
 * byte on stdin, count its entries, say 'd', and sleep until killed. */
static G_NORETURN void read_main(const char *spec, const char *uid)
{
    procreg *reg = NULL;
    size_t n;
    char c;
    if (uid != NULL && (setgroups(0, NULL) != 0 ||
                        setgid((gid_t)atoi(uid)) != 0 ||
                        setuid((uid_t)atoi(uid)) != 0))
        _exit(5);
    if (procreg_open(spec, &reg, NULL) != 0 ||
        write(STDOUT_FILENO, "r", 1) != 1 || read(STDIN_FILENO, &c, 1) != 1 ||
        procreg_count(reg, NULL, &n, NULL) != 0 ||
        write(STDOUT_FILENO, "d", 1) != 1)
        _exit(2);
    for (;;)
        pause();
}

typedef struct {
    const char *name;
    GPid pid;
    int in, out; /* its stdin and stdout */
} writer;

/* Whether @w said @c within @timeout_us. */
static bool said(writer *w, char c, gint64 timeout_us)
{
    struct pollfd p = {.fd = w->out, .events = POLLIN};
    char got = 0;
    if (poll(&p, 1, (int)(timeout_us / 1000)) != 1 ||
        read(w->out, &got, 1) != 1)
        return false;
    if (got != c)
        g_error("writer %s said '%c', not '%c'", w->name, got, c);
    return true;
}

static void spawn_mode(writer *w, const char *name, char **argv)
{
    w->name = name;
    GError *err = NULL;
    if (!g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                  NULL, NULL, &w->pid, &w->in, &w->out, NULL,
                                  &err))
        g_error("spawning %s: %s", name, err->message);
}

/* Start writer @name of @spec; @extra: NULL or "fork". */
static void start(writer *w, const char *name, const char *exe,
                  const char *spec, const char *extra)
{
    char *argv[] = {(char *)exe, (char *)"--one-write", (char *)spec,
                    (char *)name, (char *)extra, NULL};
    spawn_mode(w, name, argv);
    g_assert_true(said(w, 'r', 10 * G_USEC_PER_SEC));
}

static void go(writer *w)
{
    g_assert_cmpint(write(w->in, "g", 1), ==, 1);
}

static void finish(writer *w)
{
    int status;
    kill(w->pid, SIGKILL);
    while (waitpid(w->pid, &status, __WALL) == w->pid && !WIFEXITED(status) &&
           !WIFSIGNALED(status))
        ;
    close(w->in);
    close(w->out);
}

/* A ptrace stop of @pid within @timeout_us: its status, or -1. */
static int stopped(pid_t pid, gint64 timeout_us)
{
    gint64 end = g_get_monotonic_time() + timeout_us;
    do {
        int status;
        pid_t got = waitpid(pid, &status, WNOHANG | __WALL);
        if (got == pid) {
            if (!WIFSTOPPED(status))
                g_error("traced writer %d ended (status %d)", pid, status);
            return status;
        }
        g_usleep(500);
    } while (g_get_monotonic_time() < end);
    return -1;
}

/* Resume @pid to its next system call boundary, passing on a signal that
 * stopped it. */
static void step(pid_t pid, int status)
{
    int sig = WSTOPSIG(status);
    bool pass = sig != (SIGTRAP | 0x80) && (status >> 16) == 0;
    g_assert_cmpint(ptrace(PTRACE_SYSCALL, pid, 0, pass ? sig : 0), ==, 0);
}

/* Skip the test when Yama forbids tracing our children. */
static bool skip_without_ptrace(void)
{
    char *text = NULL;
    int scope = 0;
    if (g_file_get_contents("/proc/sys/kernel/yama/ptrace_scope", &text, NULL,
                            NULL))
        scope = atoi(text);
    g_free(text);
    if (scope < 3 && (scope < 2 || geteuid() == 0))
        return false;
    g_test_skip("ptrace is not allowed here (kernel.yama.ptrace_scope)");
    return true;
}

/* Take @w under ptrace, stopped; the stop's status. */
static int trace(writer *w)
{
    g_assert_cmpint(ptrace(PTRACE_SEIZE, w->pid, 0,
                           PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL),
                    ==, 0);
    g_assert_cmpint(ptrace(PTRACE_INTERRUPT, w->pid, 0, 0), ==, 0);
    int status = stopped(w->pid, 5 * G_USEC_PER_SEC);
    g_assert_cmpint(status, >=, 0);
    return status;
}

static bool syscall_entry(pid_t pid, struct __ptrace_syscall_info *si)
{
    return ptrace(PTRACE_GET_SYSCALL_INFO, pid, sizeof *si, si) > 0 &&
           si->op == PTRACE_SYSCALL_INFO_ENTRY;
}

/* The system calls of a commit: LMDB writes the pages, then the meta
 * page, and flushes. */
static bool is_commit(pid_t pid, const struct __ptrace_syscall_info *si)
{
    long nr = (long)si->entry.nr;
    return nr == SYS_writev || nr == SYS_pwritev || nr == SYS_pwrite64 ||
           nr == SYS_fdatasync || nr == SYS_fsync;
}

/* What a writer waits for the right to write in. */
typedef enum {
    WAIT_NONE,
    WAIT_WRITER_LOCK, /* a blocking file lock: procreg's writer lock */
    WAIT_REQUEST,     /* a shared futex in FILE-notify: a batch request */
    WAIT_LMDB,        /* any other shared futex: LMDB's writer mutex */
} wait_kind;

/* Whether @addr lies in @pid's mapping of a registry's FILE-notify. */
static bool in_notify(pid_t pid, unsigned long addr)
{
    char *path = g_strdup_printf("/proc/%d/maps", pid), *text = NULL;
    bool found = false;
    if (g_file_get_contents(path, &text, NULL, NULL)) {
        char **lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l != NULL && !found; l++) {
            unsigned long start, end;
            if (sscanf(*l, "%lx-%lx", &start, &end) == 2 && addr >= start &&
                addr < end)
                found = g_str_has_suffix(*l, "-notify");
        }
        g_strfreev(lines);
    }
    g_free(text);
    g_free(path);
    return found;
}

/* The wait of @pid's system call @nr, whose first two arguments are
 * @addr and @op. */
static wait_kind wait_of(pid_t pid, long nr, unsigned long addr, long op)
{
    if (nr == SYS_fcntl && (op == F_OFD_SETLKW || op == F_SETLKW))
        return WAIT_WRITER_LOCK;
    if (nr != SYS_futex || (op & FUTEX_PRIVATE_FLAG) != 0 ||
        ((op & FUTEX_CMD_MASK) != FUTEX_WAIT &&
         (op & FUTEX_CMD_MASK) != FUTEX_WAIT_BITSET))
        return WAIT_NONE;
    return in_notify(pid, addr) ? WAIT_REQUEST : WAIT_LMDB;
}

static wait_kind entry_wait(pid_t pid, const struct __ptrace_syscall_info *si)
{
    return wait_of(pid, (long)si->entry.nr, (unsigned long)si->entry.args[0],
                   (long)si->entry.args[1]);
}

static bool is_lock_wait(pid_t pid, const struct __ptrace_syscall_info *si)
{
    return entry_wait(pid, si) != WAIT_NONE;
}

/* Run traced @w call by call until it enters a system call @want
 * accepts, and leave it stopped there; false when instead a call did
 * not return within @timeout_us (it is blocked inside it, running). */
static bool run_to(writer *w,
                   bool (*want)(pid_t, const struct __ptrace_syscall_info *),
                   int status, gint64 timeout_us)
{
    gint64 end = g_get_monotonic_time() + timeout_us;
    for (;;) {
        step(w->pid, status);
        status = stopped(w->pid, end - g_get_monotonic_time());
        if (status < 0)
            return false;
        struct __ptrace_syscall_info si;
        if (WSTOPSIG(status) == (SIGTRAP | 0x80) && syscall_entry(w->pid, &si) &&
            want(w->pid, &si))
            return true;
    }
}

/* Run traced @w (stopped with @status) until it sleeps waiting for the
 * right to write: a lock wait that has not returned after 300 ms, or the
 * wait of a batch request, which returns by itself within 100 ms (@w is
 * then held at its return); what it waits in. */
static wait_kind run_to_lock_wait(writer *w, int status)
{
    for (;;) {
        if (!run_to(w, is_lock_wait, status, 5 * G_USEC_PER_SEC))
            g_error("writer %s: no lock wait within 5 s", w->name);
        struct __ptrace_syscall_info si;
        g_assert_true(syscall_entry(w->pid, &si));
        wait_kind kind = entry_wait(w->pid, &si);
        g_assert_cmpint(ptrace(PTRACE_SYSCALL, w->pid, 0, 0), ==, 0);
        if (kind == WAIT_REQUEST)
            return kind;
        status = stopped(w->pid, 300000);
        if (status < 0)
            return kind;
    }
}

/* The system call @pid sleeps in, and its first two arguments, from
 * /proc (-1: not asleep). */
static long asleep_in(pid_t pid, unsigned long *addr, long *op)
{
    char *path = g_strdup_printf("/proc/%d/syscall", pid), *text = NULL;
    char *stat_path = g_strdup_printf("/proc/%d/stat", pid), *st = NULL;
    long nr = -1;
    if (g_file_get_contents(path, &text, NULL, NULL) &&
        g_file_get_contents(stat_path, &st, NULL, NULL)) {
        const char *state = strrchr(st, ')');
        char *end = NULL;
        if (state != NULL && state[1] == ' ' && state[2] == 'S') {
            nr = strtol(text, &end, 10);
            *addr = strtoul(end, &end, 16);
            *op = (long)strtoul(end, NULL, 16);
        }
    }
    g_free(text);
    g_free(st);
    g_free(path);
    g_free(stat_path);
    return nr;
}

/* Wait until @w sleeps waiting for the right to write; what in. */
static wait_kind wait_in_lock_wait(writer *w)
{
    gint64 end = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    for (;;) {
        unsigned long addr = 0;
        long op = 0, nr = asleep_in(w->pid, &addr, &op);
        wait_kind kind = nr < 0 ? WAIT_NONE : wait_of(w->pid, nr, addr, op);
        if (kind != WAIT_NONE)
            return kind;
        if (g_get_monotonic_time() > end)
            g_error("writer %s did not wait for the right to write",
                    w->name);
        g_usleep(1000);
    }
}

typedef struct {
    char *dir, *spec, *exe;
} forced;

static void forced_setup(forced *f, gconstpointer data)
{
    f->dir = lt_tmpdir();
    f->spec = g_strdup_printf("lmdb:path=%s/forced.mdb", f->dir);
    f->exe = g_file_read_link("/proc/self/exe", NULL);
}

static void forced_teardown(forced *f, gconstpointer data)
{
    lt_rmtree(f->dir);
    g_free(f->dir);
    g_free(f->spec);
    g_free(f->exe);
}

/* Stop @a inside its write transaction, at the commit. */
static void hold_at_commit(writer *a)
{
    int status = trace(a);
    go(a);
    if (!run_to(a, is_commit, status, 5 * G_USEC_PER_SEC))
        g_error("writer %s did not reach its commit", a->name);
}

/* B, then C, wait for the right to write (B traced when @trace_b); what
 * they wait in. */
static wait_kind queue_two(writer *b, writer *c, bool trace_b)
{
    wait_kind kind;
    if (trace_b) {
        int status = trace(b);
        go(b);
        kind = run_to_lock_wait(b, status);
    } else {
        go(b);
        kind = wait_in_lock_wait(b);
    }
    go(c);
    g_assert_cmpint(wait_in_lock_wait(c), ==, kind);
    g_test_message("B and C wait in %s", kind == WAIT_REQUEST
                                             ? "their batch requests"
                                             : "a lock");
    return kind;
}

/* Whether @w said 'd' within @timeout_us; @done remembers it. */
static bool done_by(writer *w, bool *done, gint64 timeout_us)
{
    *done = *done || said(w, 'd', timeout_us);
    return *done;
}

/* With LMDB's mutex never contended, a writer waits in the writer
 * lock's fcntl(F_OFD_SETLKW) or on its batch request, never in LMDB's
 * shared futex. */
static void check_wait(wait_kind kind)
{
    if (kind == WAIT_LMDB)
        g_error("writers waited in LMDB's mutex (a shared futex outside "
                "FILE-notify), not in the writer lock or a batch request");
}

/* The interleaving that strands LMDB's waiters: A holds the right to
 * write; B, then C, wait for it.  A finishes, which hands the mutex to B
 * (FUTEX_WAKE of one waiter, FUTEX_WAITERS cleared); before B runs, S
 * starts a write and takes the free mutex; B is killed.  The kernel
 * passes a dead waiter's wake-up on only when the mutex word has no
 * owner, and S owns it, so nobody wakes C: it sleeps on a free mutex
 * until some later writer happens to contend.  Here every write is
 * forced to that point with ptrace (B is held at the return of its
 * wait, S before its commit), and C and S must both finish within
 * STALL_US after B's death. */
static void test_woken_waiter_killed(forced *f, gconstpointer data)
{
    if (skip_without_ptrace())
        return;
    writer a, b, c, s;
    start(&a, "A", f->exe, f->spec, NULL);
    start(&b, "B", f->exe, f->spec, NULL);
    start(&c, "C", f->exe, f->spec, NULL);
    start(&s, "S", f->exe, f->spec, NULL);
    hold_at_commit(&a);
    wait_kind waited = queue_two(&b, &c, true);

    /* A finishes; B returns from its wait and is held there. */
    g_assert_cmpint(ptrace(PTRACE_DETACH, a.pid, 0, 0), ==, 0);
    g_assert_true(said(&a, 'd', 5 * G_USEC_PER_SEC));
    bool c_done = false, s_done = false;
    gint64 end = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    while (stopped(b.pid, 10000) < 0) {
        done_by(&c, &c_done, 0); /* C may take the lock before B */
        if (g_get_monotonic_time() > end)
            g_error("B did not return from its wait");
    }
    /* S starts a write: it takes a free mutex (held at its commit), or
     * waits behind B. */
    int status = trace(&s);
    go(&s);
    bool s_traced = !run_to(&s, is_commit, status, 300000);
    g_test_message("S %s", s_traced ? "waits for B" : "took the free mutex");
    kill(b.pid, SIGKILL);
    if (!s_traced)
        g_assert_cmpint(ptrace(PTRACE_DETACH, s.pid, 0, 0), ==, 0);

    gint64 t0 = g_get_monotonic_time();
    end = t0 + STALL_US;
    while (!(done_by(&c, &c_done, 1000) & done_by(&s, &s_done, 1000)) &&
           g_get_monotonic_time() < end) {
        if (s_traced && stopped(s.pid, 0) >= 0) {
            /* S has the lock: let it go on untraced. */
            g_assert_cmpint(ptrace(PTRACE_DETACH, s.pid, 0, 0), ==, 0);
            s_traced = false;
        }
    }
    if (!c_done || !s_done)
        g_error("after B's death, %s still waiting %.1f s later",
                !c_done ? "C is" : "S is",
                (g_get_monotonic_time() - t0) / 1e6);
    check_wait(waited);
    writer *all[] = {&a, &b, &c, &s};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
        finish(all[i]);
}

/* Opening the registry and reading it wait for no writer: a process
 * does both while A is held inside its write transaction. */
static void test_reader_not_blocked(forced *f, gconstpointer data)
{
    if (skip_without_ptrace())
        return;
    writer a, r;
    start(&a, "A", f->exe, f->spec, NULL);
    hold_at_commit(&a);
    char *argv[] = {f->exe, (char *)"--read", f->spec, NULL};
    spawn_mode(&r, "reader", argv);
    if (!said(&r, 'r', STALL_US))
        g_error("opening the registry still waits %.1f s later, behind a "
                "writer", STALL_US / 1e6);
    go(&r);
    if (!said(&r, 'd', STALL_US))
        g_error("a read still waits %.1f s later, behind a writer",
                STALL_US / 1e6);
    finish(&r);
    finish(&a);
}

/* The unlock of the writer lock's read lock. */
static bool is_shared_unlock(pid_t pid,
                             const struct __ptrace_syscall_info *si)
{
    return (long)si->entry.nr == SYS_fcntl &&
           (long)si->entry.args[1] == F_OFD_SETLK;
}

/* Wait until every thread of @pid but the first sleeps. */
static void wait_threads_asleep(pid_t pid)
{
    gint64 end = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    char *dir = g_strdup_printf("/proc/%d/task", pid);
    for (int quiet = 0; quiet < 2; g_usleep(10000)) {
        GDir *d = g_dir_open(dir, 0, NULL);
        g_assert_nonnull(d);
        bool all = true;
        const char *tid;
        while ((tid = g_dir_read_name(d)) != NULL) {
            unsigned long addr;
            long op;
            if (atoi(tid) != pid && asleep_in(atoi(tid), &addr, &op) < 0)
                all = false;
        }
        g_dir_close(d);
        quiet = all ? quiet + 1 : 0;
        if (g_get_monotonic_time() > end)
            g_error("the threads of %d never settled", pid);
    }
    g_free(dir);
}

/* A registry whose lock file the reader cannot write is read with no
 * reader slot, so no writer may commit while a read runs: the writer's
 * pages would replace the ones being read.  The reader is held inside
 * its read (at the release of its read lock); a writer must wait until
 * it goes on. */
static void test_lockless_reader(forced *f, gconstpointer data)
{
    if (skip_without_ptrace())
        return;
    if (geteuid() != 0) {
        g_test_skip("needs root to read as another user");
        return;
    }
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(procreg_register(reg, NS, "kept", NULL, NULL, NULL, NULL),
                    ==, 0);
    procreg_close(reg);
    /* Another user may read the three files and write none. */
    g_assert_cmpint(chmod(f->dir, 0755), ==, 0);
    const char *suffixes[] = {"", "-lock", "-notify"};
    for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
        char *p = g_strconcat(f->dir, "/forced.mdb", suffixes[i], NULL);
        g_assert_cmpint(chmod(p, 0644), ==, 0);
        g_free(p);
    }
    writer r, w;
    char *argv[] = {f->exe, (char *)"--read", f->spec, (char *)"65534", NULL};
    spawn_mode(&r, "reader", argv);
    g_assert_true(said(&r, 'r', 10 * G_USEC_PER_SEC));
    wait_threads_asleep(r.pid); /* its monitor's first sweep read is over */
    int status = trace(&r);
    go(&r);
    if (!run_to(&r, is_shared_unlock, status, 5 * G_USEC_PER_SEC))
        g_error("the reader did not release a read lock");
    start(&w, "W", f->exe, f->spec, NULL);
    go(&w);
    check_wait(wait_in_lock_wait(&w));
    if (said(&w, 'd', 300000))
        g_error("a writer committed while a lockless read ran");
    g_assert_cmpint(ptrace(PTRACE_DETACH, r.pid, 0, 0), ==, 0);
    g_assert_true(said(&r, 'd', STALL_US));
    g_assert_true(said(&w, 'd', STALL_US));
    finish(&r);
    finish(&w);
}

/* The one child process of @pid. */
static pid_t only_child(pid_t pid)
{
    char *path = g_strdup_printf("/proc/%d/task/%d/children", pid, pid);
    char *text = NULL;
    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    pid_t child = (pid_t)strtol(text, NULL, 10);
    g_assert_cmpint(child, >, 0);
    g_free(text);
    g_free(path);
    return child;
}

/* A writer killed inside its transaction: the kernel frees the lock.  A
 * child A forked (sharing the writer lock's open file description) lives
 * on and must not keep it. */
static void test_holder_killed(forced *f, gconstpointer data)
{
    if (skip_without_ptrace())
        return;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    const char *fork_child = NULL; /* test_fork (test-lmdb.c) says why */
#else
    const char *fork_child = "fork";
#endif
    writer a, b, c;
    start(&a, "A", f->exe, f->spec, fork_child);
    pid_t g = fork_child != NULL ? only_child(a.pid) : 0;
    start(&b, "B", f->exe, f->spec, NULL);
    start(&c, "C", f->exe, f->spec, NULL);
    hold_at_commit(&a);
    wait_kind waited = queue_two(&b, &c, false);
    kill(a.pid, SIGKILL);
    gint64 t0 = g_get_monotonic_time();
    bool b_done = false, c_done = false;
    while (!(done_by(&b, &b_done, 1000) & done_by(&c, &c_done, 1000)) &&
           g_get_monotonic_time() < t0 + STALL_US)
        ;
    if (!b_done || !c_done)
        g_error("after A's death, %s still waiting %.1f s later",
                !b_done ? "B is" : "C is",
                (g_get_monotonic_time() - t0) / 1e6);
    check_wait(waited);
    if (g > 0)
        kill(g, SIGKILL);
    writer *all[] = {&a, &b, &c};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
        finish(all[i]);
}

/* A file whose writer lock cannot be opened is read-only, and says so. */
static void test_no_lock_file(forced *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(procreg_register(reg, NS, "kept", NULL, NULL, NULL, NULL),
                    ==, 0);
    procreg_close(reg);
    char *notify = g_strdup_printf("%s/forced.mdb-notify", f->dir);
    g_assert_cmpint(g_unlink(notify), ==, 0);
    g_assert_cmpint(g_mkdir(notify, 0700), ==, 0);
    reg = lt_open(f->spec);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, NS, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    GError *err = NULL;
    g_assert_cmpint(procreg_register(reg, NS, "new", NULL, NULL, NULL, &err),
                    ==, PROCREG_EBACKEND);
    g_test_message("%s", err->message);
    g_assert_nonnull(strstr(err->message, "cannot open its writer lock"));
    g_error_free(err);
    procreg_close(reg);
    g_free(notify);
}

int main(int argc, char **argv)
{
    const char *test = g_getenv("PROCREG_TEST_WRITERS_PARENT");
    if (test != NULL && argc > 1 && strncmp(argv[1], "--", 2) == 0) {
        /* A writer: it dies with the test, even one that died first. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != (pid_t)atoi(test))
            return 0;
    }
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "--read") == 0)
        read_main(argv[2], argc == 4 ? argv[3] : NULL);
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "--one-write") == 0)
        one_write_main(argv[2], argv[3], argc == 5);
    char *self = g_strdup_printf("%d", getpid());
    g_setenv("PROCREG_TEST_WRITERS_PARENT", self, TRUE);
    g_free(self);
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn)                                                         \
    g_test_add(path, forced, NULL, forced_setup, fn, forced_teardown)
    ADD("/lmdb/writers/woken-waiter-killed", test_woken_waiter_killed);
    ADD("/lmdb/writers/holder-killed", test_holder_killed);
    ADD("/lmdb/writers/reader-not-blocked", test_reader_not_blocked);
    ADD("/lmdb/writers/lockless-reader", test_lockless_reader);
    ADD("/lmdb/writers/no-lock-file", test_no_lock_file);
    return g_test_run();
}
