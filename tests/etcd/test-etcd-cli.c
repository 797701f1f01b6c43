/*
 * The procreg program (--cli=PATH) on the etcd backend, against a member
 * this program starts on 127.0.0.1.  An etcd entry lives on the lease of
 * the registry that made it, so `register --pid PID` alone would leave an
 * entry that vanishes lease_ttl after the command exits while PID runs:
 *   - without --hold it is refused, the reason and the remedy named;
 *   - with --hold the command keeps the entry past lease_ttl while PID
 *     lives, and ends when PID dies, the entry removed at once (reason
 *     owner_exited);
 *   - interrupted, it removes the entry (reason forced: it is not the
 *     owner) and ends;
 *   - one-shot commands open without a watch, `watch NS` watches NS;
 *   - `procreg lock` excludes across hosts (two host_ids): the waiter runs
 *     its command when the holder's ends, and when the holder's host dies
 *     whole (SIGKILL: a host that cannot judge the dead pid) only once its
 *     lease has run out.
 * Skipped (exit 77) without etcd, or without the program.
 */
#include "etcd-harness.h"
#include "etcd-test-util.h"

#include <procreg/procreg.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TTL_S 2

static etcd_cluster cluster;
static char *cli;
static char *spec;   /* the command's registry (host h-cli) */

/* A child that sleeps until killed; reaped by reap(). */
static GPid sleeper(void)
{
    const char *argv[] = {"sleep", "60", NULL};
    GPid pid = 0;
    GError *err = NULL;
    g_assert_true(g_spawn_async(NULL, (char **)argv, NULL,
                                G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD,
                                NULL, NULL, &pid, &err));
    return pid;
}

/* Wait for @pid, up to @ms; its wait status, or -1 on timeout. */
static int reap(GPid pid, int ms)
{
    gint64 until = g_get_monotonic_time() + (gint64)ms * 1000;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            g_spawn_close_pid(pid);
            return status;
        }
        if (r < 0 && errno != EINTR)
            return -1;
        if (g_get_monotonic_time() > until)
            return -1;
        g_usleep(10 * 1000);
    }
}

static void kill_and_reap(GPid pid)
{
    kill(pid, SIGKILL);
    g_assert_cmpint(reap(pid, 5000), !=, -1);
}

/* The command "register NS NAME --pid PID [--hold]" running in the
 * background, its stdout a pipe. */
typedef struct {
    GPid pid;
    int out;
} holder;

static holder start_register(const char *ns, const char *name, GPid owner,
                             bool hold)
{
    char *pid = g_strdup_printf("%d", (int)owner);
    const char *argv[] = {cli, "-b", spec, "register", ns, name, "--pid", pid,
                          hold ? "--hold" : NULL, NULL};
    holder h = {0};
    GError *err = NULL;
    g_assert_true(g_spawn_async_with_pipes(NULL, (char **)argv, NULL,
                                           G_SPAWN_DO_NOT_REAP_CHILD, NULL,
                                           NULL, &h.pid, NULL, &h.out, NULL,
                                           &err));
    g_free(pid);
    return h;
}

/* What @fd says within @ms (up to its end, or a line once @line). */
static char *read_out(int fd, int ms, bool line)
{
    GString *s = g_string_new(NULL);
    gint64 until = g_get_monotonic_time() + (gint64)ms * 1000;
    for (;;) {
        int left = (int)((until - g_get_monotonic_time()) / 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char c;
        if (left <= 0 || poll(&p, 1, left) <= 0 || read(fd, &c, 1) != 1)
            break;
        g_string_append_c(s, c);
        if (line && c == '\n')
            break;
    }
    return g_string_free(s, FALSE);
}

static procreg *open_watcher(void)
{
    char *u = etcd_member_url(&cluster, 0);
    procreg *reg = open_spec("etcd:endpoints=[%s],prefix=/procreg-test/cli,"
                             "host_id=h-test",
                             u);
    g_free(u);
    return reg;
}

static void test_refused_without_hold(void)
{
    GPid owner = sleeper();
    char *pid = g_strdup_printf("%d", (int)owner);
    const char *argv[] = {cli, "-b", spec, "register", "svc", "a", "--pid",
                          pid, NULL};
    char *out = NULL, *err_text = NULL;
    int status = 0;
    GError *err = NULL;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, &out,
                               &err_text, &status, &err));
    g_test_message("%s", err_text);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 2);
    g_assert_nonnull(strstr(err_text, "--hold"));
    g_assert_nonnull(strstr(err_text, "lease_ttl"));
    procreg *w = open_watcher();
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(w, "svc", "a", &o, NULL), ==,
                    PROCREG_ENOTFOUND);
    procreg_close(w);
    kill_and_reap(owner);
    g_free(out);
    g_free(err_text);
    g_free(pid);
}

static void test_hold_while_owner_lives(void)
{
    procreg *w = open_watcher();
    recorder rw;
    recorder_start(&rw, w);
    GPid owner = sleeper();
    holder h = start_register("svc", "b", owner, true);
    char *first = read_out(h.out, 10000, true);
    g_test_message("%s", first);
    g_assert_nonnull(strstr(first, "holding svc/b for pid"));
    /* Past the lease's TTL, the entry is there, the owner's. */
    g_usleep((TTL_S * 1000 + 1500) * 1000);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(w, "svc", "b", &o, NULL), ==, 0);
    g_assert_cmpint(o.pid, ==, owner);
    /* The owner dies: the entry goes at once, and the command ends. */
    kill_and_reap(owner);
    const rec_event *ev = recorder_wait(&rw, PROCREG_EVENT_UNREGISTERED, -1,
                                        "svc", "b", 3000);
    g_assert_nonnull(ev);
    g_assert_cmpint(ev->reason, ==, PROCREG_REASON_OWNER_EXITED);
    int status = reap(h.pid, 5000);
    char *rest = read_out(h.out, 1000, false);
    g_test_message("%s", rest);
    g_assert_cmpint(status, !=, -1);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    g_assert_nonnull(strstr(rest, "exited; svc/b unregistered"));
    g_usleep(200 * 1000);
    g_assert_cmpuint(recorder_count(&rw, PROCREG_EVENT_UNREGISTERED, "svc",
                                    "b"),
                     ==, 1);
    close(h.out);
    recorder_stop(&rw);
    procreg_close(w);
    g_free(first);
    g_free(rest);
}

static void test_hold_interrupted(void)
{
    procreg *w = open_watcher();
    recorder rw;
    recorder_start(&rw, w);
    GPid owner = sleeper();
    holder h = start_register("svc", "c", owner, true);
    char *first = read_out(h.out, 10000, true);
    g_assert_nonnull(strstr(first, "holding svc/c"));
    kill(h.pid, SIGTERM);
    int status = reap(h.pid, 5000);
    g_assert_cmpint(status, !=, -1);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    const rec_event *ev = recorder_wait(&rw, PROCREG_EVENT_UNREGISTERED, -1,
                                        "svc", "c", 3000);
    g_assert_nonnull(ev);
    g_assert_cmpint(ev->reason, ==, PROCREG_REASON_FORCED);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(w, "svc", "c", &o, NULL), ==,
                    PROCREG_ENOTFOUND);
    kill_and_reap(owner);
    close(h.out);
    recorder_stop(&rw);
    procreg_close(w);
    g_free(first);
}

/* One-shot commands open without a watch, `watch NS` with NS's alone
 * (watch=used,watch_namespaces=[NS]: a subscription by itself would not
 * put NS in scope), and each still does its work. */
static void test_commands_watch_what_they_need(void)
{
    const char *argv[] = {cli, "-b", spec, "watch", "w1", NULL};
    GPid pid = 0;
    int out = -1, err_fd = -1;
    GError *err = NULL;
    g_assert_true(g_spawn_async_with_pipes(NULL, (char **)argv, NULL,
                                           G_SPAWN_DO_NOT_REAP_CHILD, NULL,
                                           NULL, &pid, NULL, &out, &err_fd,
                                           &err));
    char *said = read_out(err_fd, 10000, true);
    g_assert_nonnull(strstr(said, "watching w1"));
    procreg *w = open_watcher();
    g_assert_cmpint(procreg_register(w, "w2", "other", NULL, NULL, NULL,
                                     &err),
                    ==, 0);
    g_assert_cmpint(procreg_register(w, "w1", "x", NULL, NULL, NULL, &err),
                    ==, 0);
    char *line = read_out(out, 5000, true);
    g_test_message("watch printed: %s", line);
    g_assert_nonnull(strstr(line, "w1/x"));
    kill(pid, SIGTERM);
    g_assert_cmpint(reap(pid, 5000), !=, -1);

    /* A one-shot command reads the cluster as before. */
    const char *lookup[] = {cli, "-b", spec, "lookup", "w1", "x", NULL};
    char *text = NULL;
    int status = 0;
    g_assert_true(g_spawn_sync(NULL, (char **)lookup, NULL, 0, NULL, NULL,
                               &text, NULL, &status, &err));
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char *mine = g_strdup_printf("%d", (int)getpid());
    g_assert_nonnull(strstr(text, mine));
    procreg_close(w);
    close(out);
    close(err_fd);
    g_free(mine);
    g_free(text);
    g_free(line);
    g_free(said);
}

/* `procreg lock jobs x -- ARGV...` on host @host_spec, stdin and stdout
 * pipes (@in may be NULL: no stdin pipe). */
static GPid start_lock(const char *host_spec, const char *const *command,
                       int *in, int *out)
{
    GPtrArray *argv = g_ptr_array_new();
    const char *head[] = {cli, "-b", host_spec, "lock", "jobs", "x", "--"};
    for (size_t i = 0; i < G_N_ELEMENTS(head); i++)
        g_ptr_array_add(argv, (gpointer)head[i]);
    for (size_t i = 0; command[i] != NULL; i++)
        g_ptr_array_add(argv, (gpointer)command[i]);
    g_ptr_array_add(argv, NULL);
    GPid pid = 0;
    GError *err = NULL;
    g_assert_true(g_spawn_async_with_pipes(NULL, (char **)argv->pdata, NULL,
                                           G_SPAWN_DO_NOT_REAP_CHILD, NULL,
                                           NULL, &pid, in, out, NULL, &err));
    g_ptr_array_unref(argv);
    return pid;
}

/* Whether the lock (jobs, x) has @want tickets within 10 s. */
static bool tickets_reach(procreg *w, size_t want)
{
    gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    size_t n = 0;
    while (procreg_count(w, "procreg:lock:jobs", &n, NULL) == 0 && n != want &&
           g_get_monotonic_time() < until)
        g_usleep(10 * 1000);
    return n == want;
}

static void test_lock_across_hosts(void)
{
    char *u = etcd_member_url(&cluster, 0);
    char *other = g_strdup_printf("etcd:endpoints=[%s],prefix=/procreg-test/"
                                  "cli,host_id=h-other,lease_ttl=%d",
                                  u, TTL_S);
    g_free(u);
    procreg *w = open_watcher();

    /* Handover: the waiter on the other host runs once the holder ends. */
    const char *reads[] = {"sh", "-c", "echo in; read line", NULL};
    const char *second[] = {"echo", "second", NULL};
    int holder_in = -1, holder_out = -1, waiter_out = -1;
    GPid first = start_lock(spec, reads, &holder_in, &holder_out);
    char *said = read_out(holder_out, 10000, true);
    g_assert_cmpstr(said, ==, "in\n");
    g_free(said);
    GPid waiter = start_lock(other, second, NULL, &waiter_out);
    g_assert_true(tickets_reach(w, 2));
    g_assert_cmpint(write(holder_in, "go\n", 3), ==, 3);
    int status = reap(first, 10000);
    g_assert_true(status != -1 && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 0);
    said = read_out(waiter_out, 10000, false);
    g_assert_cmpstr(said, ==, "second\n");
    g_free(said);
    status = reap(waiter, 10000);
    g_assert_true(status != -1 && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 0);
    close(holder_in);
    close(holder_out);
    close(waiter_out);

    /* The holder's host dies whole: SIGKILL, and the other host cannot
     * tell that pid is dead, so its waiter waits for the lease. */
    const char *sleeps[] = {"sh", "-c", "echo in; exec sleep 60", NULL};
    first = start_lock(spec, sleeps, NULL, &holder_out);
    said = read_out(holder_out, 10000, true);
    g_assert_cmpstr(said, ==, "in\n");
    g_free(said);
    waiter = start_lock(other, second, NULL, &waiter_out);
    g_assert_true(tickets_reach(w, 2));
    kill_and_reap(first);
    /* Not before the lease (TTL_S, renewed every third of it) ran out. */
    said = read_out(waiter_out, 500, false);
    g_assert_cmpstr(said, ==, "");
    g_free(said);
    said = read_out(waiter_out, (TTL_S + 10) * 1000, false);
    g_assert_cmpstr(said, ==, "second\n");
    g_free(said);
    status = reap(waiter, 10000);
    g_assert_true(status != -1 && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 0);
    close(holder_out);
    close(waiter_out);
    g_assert_true(tickets_reach(w, 0));
    procreg_close(w);
    g_free(other);
}

int main(int argc, char **argv)
{
    etcd_harness_env(argv);
    etcd_harness_args(&argc, argv);
    for (int i = 1; i < argc; i++)
        if (g_str_has_prefix(argv[i], "--cli="))
            cli = g_strdup(argv[i] + strlen("--cli="));
    g_test_init(&argc, &argv, NULL);
    etcd_harness_require();
    if (cli == NULL) {
        fprintf(stderr, "SKIP: no procreg program given (--cli=PATH)\n");
        return 77;
    }
    etcd_cluster_start_or_exit(&cluster, 1);
    char *u = etcd_member_url(&cluster, 0);
    spec = g_strdup_printf("etcd:endpoints=[%s],prefix=/procreg-test/cli,"
                           "host_id=h-cli,lease_ttl=%d",
                           u, TTL_S);
    g_free(u);
    g_test_add_func("/etcd-cli/refused-without-hold",
                    test_refused_without_hold);
    g_test_add_func("/etcd-cli/hold-while-owner-lives",
                    test_hold_while_owner_lives);
    g_test_add_func("/etcd-cli/hold-interrupted", test_hold_interrupted);
    g_test_add_func("/etcd-cli/commands-watch-what-they-need",
                    test_commands_watch_what_they_need);
    g_test_add_func("/etcd-cli/lock-across-hosts", test_lock_across_hosts);
    int rc = g_test_run();
    etcd_cluster_destroy(&cluster);
    g_free(spec);
    g_free(cli);
    return rc;
}
