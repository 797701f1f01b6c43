/*
 * The coordination commands of the procreg program, driven as a user
 * drives them, in separate processes on one LMDB file: `procreg lock`,
 * `procreg select`, `procreg meta`.
 *
 * argv[1] is the path of the procreg program (meson passes it).
 */
#include "cli-harness.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Whether process @pid is gone (or a zombie) within @ms. */
static bool gone_within(pid_t pid, int ms)
{
    gint64 until = g_get_monotonic_time() + (gint64)ms * 1000;
    for (;;) {
        g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int)pid);
        g_autofree char *stat = NULL;
        if (!g_file_get_contents(path, &stat, NULL, NULL))
            return true;
        const char *close_paren = strrchr(stat, ')');
        if (close_paren != NULL && close_paren[1] == ' ' &&
            close_paren[2] == 'Z')
            return true;
        if (g_get_monotonic_time() > until)
            return false;
        g_usleep(10 * 1000);
    }
}

/* The command runs under the lock and gives its exit status. */
static void test_lock_status(Fixture *f, gconstpointer data)
{
    char *out = NULL;
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "lock", "jobs", "x", "--",
                        "sh", "-c", "echo inside; exit 3", NULL),
                    ==, 3);
    g_assert_cmpstr(out, ==, "inside\n");
    g_free(out);
    char *err = NULL;
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "lock", "jobs", "x", "--",
                        "no-such-command-procreg", NULL),
                    ==, 127);
    ASSERT_HAS(err, "cannot run 'no-such-command-procreg'");
    g_free(err);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "lock", "jobs", "x", NULL),
                    ==, 2);
    ASSERT_HAS(err, "lock NS NAME");
    g_free(err);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "lock", "jobs", "x",
                        "--timeout", "soon", "--", "true", NULL),
                    ==, 2);
    g_free(err);
    /* Nothing stays behind: the lock is free. */
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "list", "procreg:lock:jobs",
                        NULL),
                    ==, 0);
    ASSERT_LACKS(out, "x#");
    g_free(out);
}

/* While one command holds the lock another cannot take it (and learns
 * who holds it); a `procreg lock` SIGKILLed takes its command with it and
 * frees the lock. */
static void test_lock_exclusion(Fixture *f, gconstpointer data)
{
    bg holder = start("-b", f->spec, "lock", "jobs", "x", "--", "sh", "-c",
                      "echo $$; exec sleep 60", NULL);
    char *line = read_line(holder.out, 10000);
    g_assert_nonnull(line);
    pid_t command = (pid_t)atoi(line);
    g_free(line);
    g_assert_cmpint(command, >, 0);

    char *err = NULL, *holder_pid = g_strdup_printf("%d", (int)holder.pid);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "lock", "jobs", "x",
                        "--timeout", "0.2", "--", "true", NULL),
                    ==, 5);
    ASSERT_HAS(err, "held by process");
    ASSERT_HAS(err, holder_pid);
    g_free(err);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "--json", "lock", "jobs",
                        "x", "--timeout", "0", "--", "true", NULL),
                    ==, 5);
    ASSERT_HAS(err, "\"name\":\"PROCREG_ETIMEDOUT\"");
    char *pid_field = g_strdup_printf("\"pid\":%s,", holder_pid);
    ASSERT_HAS(err, pid_field);
    g_free(pid_field);
    g_free(err);

    g_assert_cmpint(finish(&holder, SIGKILL), ==, 128 + SIGKILL);
    g_assert_true(gone_within(command, 5000));
    char *out = NULL;
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "lock", "jobs", "x",
                        "--timeout", "10", "--", "echo", "mine", NULL),
                    ==, 0);
    g_assert_cmpstr(out, ==, "mine\n");
    g_free(out);
    g_free(holder_pid);
}

/* A waiting `procreg lock` runs its command once the holder's ends;
 * SIGTERM reaches the command. */
static void test_lock_handover_and_signals(Fixture *f, gconstpointer data)
{
    bg holder = start("-b", f->spec, "lock", "jobs", "y", "--", "sh", "-c",
                      "trap 'exit 7' TERM; echo in; "
                      "while :; do sleep 0.05; done",
                      NULL);
    char *line = read_line(holder.out, 10000);
    g_assert_cmpstr(line, ==, "in");
    g_free(line);
    bg waiter = start("-b", f->spec, "lock", "jobs", "y", "--", "echo",
                      "second", NULL);
    char *out = NULL;
    /* Queued: two tickets. */
    gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    for (;;) {
        g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "list",
                            "procreg:lock:jobs", NULL),
                        ==, 0);
        int n = 0;
        for (const char *p = out; (p = strstr(p, "\"y#")) != NULL; p++)
            n++;
        bool two = n == 2;
        g_free(out);
        if (two)
            break;
        g_assert_cmpint(g_get_monotonic_time(), <, until);
        g_usleep(10 * 1000);
    }
    g_assert_cmpint(finish(&holder, SIGTERM), ==, 7);
    line = read_line(waiter.out, 10000);
    g_assert_cmpstr(line, ==, "second");
    g_free(line);
    g_assert_cmpint(finish(&waiter, 0), ==, 0);
}

/* select: entries by a filter; errors say where, for people and as JSON. */
static void test_select(Fixture *f, gconstpointer data)
{
    char *pid = self_pid(), *out = NULL, *err = NULL;
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "s", "web-1",
                        "--pid", pid, "--meta", "role=api", "--meta",
                        "port=8080", NULL),
                    ==, 0);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "s", "web-2",
                        "--pid", pid, "--meta", "role=api", "--meta",
                        "port=7000", NULL),
                    ==, 0);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "t", "db",
                        "--pid", pid, "--meta", "role=db", NULL),
                    ==, 0);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "select",
                        "role == \"api\" and port >= 8000", NULL),
                    ==, 0);
    ASSERT_HAS(out, "web-1");
    ASSERT_LACKS(out, "web-2");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "select",
                        "name glob \"web-*\" or role == \"db\"", "--ns",
                        "s", NULL),
                    ==, 0);
    ASSERT_HAS(out, "\"name\":\"web-1\"");
    ASSERT_HAS(out, "\"name\":\"web-2\"");
    ASSERT_LACKS(out, "\"name\":\"db\"");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "select", "--count",
                        "exists role", NULL),
                    ==, 0);
    g_assert_cmpstr(out, ==, "3\n");
    g_free(out);

    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "select", "name == 3",
                        NULL),
                    ==, 2);
    ASSERT_HAS(err, "at byte 8");
    ASSERT_HAS(err, "expected a string");
    ASSERT_HAS(err, "  name == 3\n          ^\n");
    g_free(err);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "--json", "select",
                        "port >=", NULL),
                    ==, 2);
    ASSERT_HAS(err, "\"position\":7");
    ASSERT_HAS(err, "\"alternatives\":[\"a string\",\"a number\"");
    g_free(err);
    g_free(pid);
}

/* meta: settings set by one command outlive it and are read by the next. */
static void test_meta(Fixture *f, gconstpointer data)
{
    char *out = NULL, *err = NULL;
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "meta", "prod", "--meta",
                        "config_version=42", "--meta-string", "tag=0042",
                        NULL),
                    ==, 0);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "meta", "prod", NULL), ==,
                    0);
    g_assert_cmpstr(out, ==, "config_version: 42\ntag: '0042'\n");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "meta", "prod",
                        NULL),
                    ==, 0);
    g_assert_cmpstr(out, ==, "{\"config_version\":42,\"tag\":\"0042\"}\n");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "meta", "prod", "tag",
                        NULL),
                    ==, 0);
    g_assert_cmpstr(out, ==, "'0042'\n");
    g_free(out);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "meta", "prod", "tag",
                        "--delete", NULL),
                    ==, 0);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "meta", "prod", "tag",
                        NULL),
                    ==, 3);
    ASSERT_HAS(err, "no setting 'tag'");
    g_free(err);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "meta", "prod", "--delete",
                        NULL),
                    ==, 2);
    g_free(err);
    /* Not entries of the namespace. */
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "list", "prod", NULL), ==,
                    0);
    ASSERT_LACKS(out, "config_version");
    g_free(out);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH-TO-procreg\n", argv[0]);
        return 2;
    }
    cli_path = argv[1];
#define ADD(path, fn) \
    g_test_add(path, Fixture, NULL, fx_setup, fn, fx_teardown)
    ADD("/tools/coord/lock-status", test_lock_status);
    ADD("/tools/coord/lock-exclusion", test_lock_exclusion);
    ADD("/tools/coord/lock-handover-signals", test_lock_handover_and_signals);
    ADD("/tools/coord/select", test_select);
    ADD("/tools/coord/meta", test_meta);
    return g_test_run();
}
