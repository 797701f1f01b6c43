/*
 * The procreg command-line program, driven as a user drives it: each call
 * is a separate process on one shared LMDB file; wait, watch and --hold
 * run in the background while other invocations change the registry.
 *
 * argv[1] is the path of the procreg program (meson passes it).
 */
#include "cli-harness.h"

#include <glib/gstdio.h>
#include <procreg/procreg.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *completion_path; /* tools/procreg-completion.bash */

/* ------------------------------------------------------------------------ */

static void test_help(Fixture *f, gconstpointer data)
{
    char *out = NULL, *err = NULL;
    g_assert_cmpint(run(&out, NULL, "--help", NULL), ==, 0);
    ASSERT_HAS(out, "Exit status");
    for (int code = 0; code <= 7; code++) {
        char line[8];
        g_snprintf(line, sizeof line, "  %d  ", code);
        ASSERT_HAS(out, line);
    }
    ASSERT_HAS(out, "--hold");
    g_free(out);
    g_assert_cmpint(run(NULL, &err, NULL, NULL), ==, 2);
    ASSERT_HAS(err, "Usage");
    g_free(err);
    g_assert_cmpint(run(NULL, &err, "frobnicate", NULL), ==, 2);
    ASSERT_HAS(err, "unknown command");
    g_free(err);
    g_assert_cmpint(run(NULL, &err, "list", "--hold", NULL), ==, 2);
    ASSERT_HAS(err, "unknown option --hold for list");
    g_free(err);
    g_assert_cmpint(run(&out, NULL, "--version", NULL), ==, 0);
    ASSERT_HAS(out, "procreg 0.");
    g_free(out);
}

static void test_register_refused(Fixture *f, gconstpointer data)
{
    char *err = NULL;
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "register", "ns", "a",
                        NULL), ==, 2);
    ASSERT_HAS(err, "--pid PID");
    ASSERT_HAS(err, "--hold");
    g_free(err);
    char *out = NULL;
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "list", "--json", NULL),
                    ==, 0);
    g_assert_cmpstr(out, ==, "[]\n");
    g_free(out);
}

/* Each call is its own process on the same file. */
static void test_lifecycle(Fixture *f, gconstpointer data)
{
    char *pid = self_pid();
    char *out = NULL, *err = NULL;
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "register", "prod", "web",
                        "--pid", pid, "--meta", "port=8080", "--meta",
                        "role=api", "--meta", "tls=true", "--meta",
                        "w:=uint16 3", NULL), ==, 0);
    ASSERT_HAS(out, "registered prod/web");
    g_free(out);

    g_assert_cmpint(run(&out, NULL, "--backend", f->spec, "--json", "lookup",
                        "prod", "web", NULL), ==, 0);
    char *want = g_strdup_printf("\"pid\":%s,", pid);
    ASSERT_HAS(out, want);
    g_free(want);
    ASSERT_HAS(out, "\"metadata\":{\"port\":8080,\"role\":\"api\","
                    "\"tls\":true,\"w\":3}");
    g_free(out);

    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "list", NULL), ==, 0);
    ASSERT_HAS(out, "prod");
    ASSERT_HAS(out, "web");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "find",
                        "role=api", NULL), ==, 0);
    ASSERT_HAS(out, "\"name\":\"web\"");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "find",
                        "port=8080", "--ns", "prod", NULL), ==, 0);
    ASSERT_HAS(out, "\"name\":\"web\"");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "find",
                        "role=db", NULL), ==, 0);
    g_assert_cmpstr(out, ==, "[]\n");
    g_free(out);

    /* The entry belongs to process @pid, not to this command: changing it
     * is refused (exit 8, the owner named) unless forced. */
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "update", "prod", "web",
                        "--meta", "port=9090", NULL), ==, 8);
    ASSERT_HAS(err, "owned by process");
    ASSERT_HAS(err, pid);
    g_free(err);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "unregister", "prod", "web",
                        NULL), ==, 8);
    g_free(err);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "update", "prod", "web",
                        "--meta", "port=9090", "--force", NULL), ==, 0);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "lookup", "prod",
                        "web", NULL), ==, 0);
    ASSERT_HAS(out, "\"port\":9090,\"role\":\"api\"");
    g_free(out);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "update", "prod", "web",
                        "--replace", "--meta", "only=1", "--force", NULL), ==,
                    0);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "lookup", "prod",
                        "web", NULL), ==, 0);
    ASSERT_HAS(out, "\"metadata\":{\"only\":1}");
    g_free(out);

    /* Taken: exit 4, the holder printed. */
    g_assert_cmpint(run(&out, &err, "-b", f->spec, "register", "prod", "web",
                        "--pid", pid, NULL), ==, 4);
    ASSERT_HAS(err, "already registered");
    ASSERT_HAS(out, pid);
    g_free(out);
    g_free(err);

    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "unregister", "prod", "web",
                        "--force", NULL), ==, 0);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "lookup", "prod", "web",
                        NULL), ==, 3);
    ASSERT_HAS(err, "not registered");
    g_free(err);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "unregister", "prod", "web",
                        NULL), ==, 3);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "update", "prod", "web",
                        "--meta", "a=1", NULL), ==, 3);
    g_free(pid);
}

static void test_invalid(Fixture *f, gconstpointer data)
{
    char *pid = self_pid();
    char *longname = g_strnfill(256, 'x');
    char *err = NULL;
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "register", "ns", longname,
                        "--pid", pid, NULL), ==, 2);
    ASSERT_HAS(err, "255");
    g_free(err);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "lookup", "ns", "a\tb",
                        NULL), ==, 2);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "register", "ns", "a",
                        "--pid", "abc", NULL), ==, 2);
    ASSERT_HAS(err, "not a process id");
    g_free(err);
    /* A pid that has exited. */
    GPid dead = 0;
    char *true_argv[] = {(char *)"/bin/true", NULL};
    g_assert_true(g_spawn_async(NULL, true_argv, NULL,
                                G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &dead,
                                NULL));
    waitpid(dead, NULL, 0);
    char *deadpid = g_strdup_printf("%d", (int)dead);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "register", "ns", "a",
                        "--pid", deadpid, NULL), ==, 2);
    ASSERT_HAS(err, "not alive");
    g_free(err);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "register", "ns", "a",
                        "--pid", pid, "--meta", "novalue", NULL), ==, 2);
    ASSERT_HAS(err, "KEY=VALUE");
    g_free(err);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "ns", "a",
                        "--pid", pid, "--meta", "x:=not a variant", NULL),
                    ==, 2);
    /* Bytes that are not UTF-8 (a shell in another locale): refused, for
     * values, keys, typed values and find alike. */
    const char *not_utf8[] = {"a=x\274y", "\274k=1", "k:='\274'"};
    for (size_t i = 0; i < G_N_ELEMENTS(not_utf8); i++) {
        g_assert_cmpint(run(NULL, &err, "-b", f->spec, "register", "ns", "a",
                            "--pid", pid, "--meta", not_utf8[i], NULL), ==, 2);
        ASSERT_HAS(err, "not valid UTF-8");
        g_free(err);
    }
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "find", "a=x\274y", NULL),
                    ==, 2);
    ASSERT_HAS(err, "not valid UTF-8");
    g_free(err);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "wait", "ns", "a",
                        "--timeout", "soon", NULL), ==, 2);
    g_assert_cmpint(run(NULL, &err, "-b", "nosuchbackend", "list", NULL), ==,
                    2);
    ASSERT_HAS(err, "lmdb");
    g_free(err);
    g_assert_cmpint(run(NULL, &err, "-b", "lmdb:colour=red", "list", NULL), ==,
                    2);
    ASSERT_HAS(err, "durability");
    g_free(err);
    /* A damaged registry file: a backend error, exit 6. */
    char *garbage = g_build_filename(f->dir, "garbage.mdb", NULL);
    char junk[16384];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 7 + 3);
    g_assert_true(g_file_set_contents(garbage, junk, sizeof junk, NULL));
    char *gspec = g_strdup_printf("lmdb:path=%s", garbage);
    g_assert_cmpint(run(NULL, &err, "-b", gspec, "list", NULL), ==, 6);
    ASSERT_HAS(err, "not an LMDB file");
    g_free(err);
    g_free(gspec);
    g_free(garbage);
    g_free(deadpid);
    g_free(longname);
    g_free(pid);
}

/* wait in one process wakes when another registers. */
static void test_wait(Fixture *f, gconstpointer data)
{
    bg w = start("-b", f->spec, "wait", "svc", "late", "--timeout", "20",
                 NULL);
    g_usleep(300 * 1000);
    char *pid = self_pid();
    gint64 t0 = g_get_monotonic_time();
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "svc", "late",
                        "--pid", pid, NULL), ==, 0);
    char *line = read_line(w.out, 10000);
    g_assert_nonnull(line);
    ASSERT_HAS(line, "svc/late");
    g_test_message("wait woke %" G_GINT64_FORMAT " ms after the register "
                   "command started", (g_get_monotonic_time() - t0) / 1000);
    g_free(line);
    g_assert_cmpint(finish(&w, 0), ==, 0);

    /* Nobody registers: exit 5 after the timeout. */
    t0 = g_get_monotonic_time();
    char *err = NULL;
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "wait", "svc", "never",
                        "--timeout", "0.3", NULL), ==, 5);
    gint64 took = g_get_monotonic_time() - t0;
    g_assert_cmpint(took, >=, 290 * 1000);
    ASSERT_HAS(err, "300 ms");
    g_free(err);
    g_free(pid);
}

/* --hold keeps the name while the command runs; SIGKILL makes it vanish,
 * SIGTERM unregisters it. */
static void test_hold(Fixture *f, gconstpointer data)
{
    bg h = start("-b", f->spec, "register", "svc", "held", "--hold", "--meta",
                 "k=v", NULL);
    char *line = read_line(h.out, 10000);
    g_assert_nonnull(line);
    ASSERT_HAS(line, "holding svc/held");
    g_free(line);
    char *out = NULL;
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "list", "svc",
                        NULL), ==, 0);
    char *want = g_strdup_printf("\"name\":\"held\",\"pid\":%d,", (int)h.pid);
    ASSERT_HAS(out, want);
    g_free(want);
    g_free(out);

    gint64 t0 = g_get_monotonic_time();
    g_assert_cmpint(finish(&h, SIGKILL), ==, 128 + SIGKILL);
    int rc;
    while ((rc = run(NULL, NULL, "-b", f->spec, "lookup", "svc", "held",
                     NULL)) == 0 &&
           g_get_monotonic_time() - t0 < 5 * G_USEC_PER_SEC)
        g_usleep(20 * 1000);
    g_assert_cmpint(rc, ==, 3);
    g_test_message("a SIGKILLed --hold owner was gone for lookup after %"
                   G_GINT64_FORMAT " ms", (g_get_monotonic_time() - t0) / 1000);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "list", "svc", NULL), ==, 0);
    ASSERT_LACKS(out, "held");
    g_free(out);

    h = start("-b", f->spec, "register", "svc", "polite", "--hold", NULL);
    line = read_line(h.out, 10000);
    g_assert_nonnull(line);
    g_free(line);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "lookup", "svc", "polite",
                        NULL), ==, 0);
    g_assert_cmpint(finish(&h, SIGTERM), ==, 0);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "lookup", "svc", "polite",
                        NULL), ==, 3);
}

/* watch streams the changes other processes make. */
static void test_watch(Fixture *f, gconstpointer data)
{
    bg w = start("-b", f->spec, "--json", "watch", "wns", NULL);
    char *ready = read_line(w.err, 10000);
    g_assert_nonnull(ready);
    ASSERT_HAS(ready, "watching wns");
    g_free(ready);
    char *pid = self_pid();
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "wns", "a",
                        "--pid", pid, "--meta", "v=1", NULL), ==, 0);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "other", "b",
                        "--pid", pid, NULL), ==, 0);
    /* The entry is this test's: the commands force their changes, and
     * the watcher sees that. */
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "update", "wns", "a",
                        "--meta", "v=2", "--force", NULL), ==, 0);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "unregister", "wns", "a",
                        "--force", NULL), ==, 0);
    const char *expect[] = {"\"event\":\"registered\"",
                            "\"event\":\"updated\",\"reason\":\"forced\"",
                            "\"event\":\"unregistered\",\"reason\":"
                            "\"forced\""};
    for (size_t i = 0; i < G_N_ELEMENTS(expect); i++) {
        char *line = read_line(w.out, 10000);
        if (line == NULL)
            g_error("watch printed no event %zu", i);
        ASSERT_HAS(line, expect[i]);
        ASSERT_HAS(line, "\"external\":true");
        ASSERT_HAS(line, "\"namespace\":\"wns\",\"name\":\"a\"");
        g_free(line);
    }
    g_assert_cmpint(finish(&w, SIGINT), ==, 0);
    g_free(pid);
}

/* The "position" of a --json watch line. */
static guint64 position_of(const char *line)
{
    const char *p = strstr(line, "\"position\":");
    g_assert_nonnull(p);
    return g_ascii_strtoull(p + strlen("\"position\":"), NULL, 10);
}

/* A watch restarted with --from the position of the last line it printed
 * goes on from there, in a new process; a position the history no longer
 * holds is an error. */
static void test_watch_from(Fixture *f, gconstpointer data)
{
    (void)data;
    char *pid = self_pid();
    bg w = start("-b", f->spec, "--json", "watch", "wns", NULL);
    char *ready = read_line(w.err, 10000);
    g_assert_nonnull(ready);
    g_free(ready);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "wns", "a",
                        "--pid", pid, NULL), ==, 0);
    char *first = read_line(w.out, 10000);
    g_assert_nonnull(first);
    ASSERT_HAS(first, "\"event\":\"registered\"");
    guint64 stopped = position_of(first);
    g_assert_cmpint(finish(&w, SIGINT), ==, 0);

    /* Changes while no watch runs. */
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "unregister", "wns", "a",
                        "--force", NULL), ==, 0);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "wns", "b",
                        "--pid", pid, NULL), ==, 0);
    char *from = g_strdup_printf("%" G_GUINT64_FORMAT, stopped);
    bg w2 = start("-b", f->spec, "--json", "watch", "wns", "--from", from,
                  NULL);
    const char *expect[] = {"\"event\":\"unregistered\"",
                            "\"event\":\"registered\""};
    guint64 last = stopped;
    for (size_t i = 0; i < G_N_ELEMENTS(expect); i++) {
        char *line = read_line(w2.out, 10000);
        if (line == NULL)
            g_error("watch --from printed no event %zu", i);
        ASSERT_HAS(line, expect[i]);
        g_assert_cmpuint(position_of(line), >, last);
        last = position_of(line);
        g_free(line);
    }
    g_assert_cmpint(finish(&w2, SIGINT), ==, 0);

    char *err = NULL;
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "watch", "wns", "--from",
                        "999999999", NULL), ==, 1);
    ASSERT_HAS(err, "past the end of the change log");
    g_free(err);
    g_free(from);
    g_free(first);
    g_free(pid);
}

/* Groups: join --hold and --pid, members, groups, leave (forced: the
 * command owns no member), and watch shows the joins and leaves.  A held
 * member leaves on SIGTERM and vanishes when its holder is SIGKILLed. */
static void test_groups(Fixture *f, gconstpointer data)
{
    bg w = start("-b", f->spec, "--json", "watch", "gcli", NULL);
    char *line = read_line(w.err, 10000);
    g_assert_nonnull(line);
    g_free(line);
    bg h = start("-b", f->spec, "join", "gcli", "workers", "--hold", "--meta",
                 "role=a", NULL);
    line = read_line(h.out, 10000);
    g_assert_nonnull(line);
    char *want = g_strdup_printf("of gcli/workers as pid %d", (int)h.pid);
    ASSERT_HAS(line, "holding member ");
    ASSERT_HAS(line, want);
    g_free(want);
    g_free(line);
    char *pid = self_pid(), *out = NULL, *err = NULL;
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "join", "gcli",
                        "workers", "--pid", pid, "--meta", "role=b", NULL),
                    ==, 0);
    guint64 mine = 0;
    const char *at = strstr(out, "\"id\":");
    g_assert_nonnull(at);
    mine = g_ascii_strtoull(at + 5, NULL, 10);
    g_assert_cmpuint(mine, >, 0);
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "members",
                        "gcli", "workers", NULL), ==, 0);
    want = g_strdup_printf("\"pid\":%d,", (int)h.pid);
    ASSERT_HAS(out, want);
    g_free(want);
    ASSERT_HAS(out, "{\"role\":\"a\"}");
    ASSERT_HAS(out, "{\"role\":\"b\"}");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "groups", "gcli", NULL),
                    ==, 0);
    ASSERT_HAS(out, "gcli/workers 2");
    g_free(out);

    /* Not ours to remove without --force: exit 8, nothing changes. */
    char *id = g_strdup_printf("%" G_GUINT64_FORMAT, mine);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "leave", "gcli", "workers",
                        "--member", id, NULL), ==, 8);
    ASSERT_HAS(err, pid);
    g_free(err);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "leave", "gcli", "workers",
                        "--member", id, "--force", NULL), ==, 0);
    ASSERT_HAS(out, "removed 1 member of gcli/workers");
    g_free(out);
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "leave", "gcli", "workers",
                        NULL), ==, 2);
    g_free(err);
    /* The holder leaves on SIGTERM. */
    g_assert_cmpint(finish(&h, SIGTERM), ==, 0);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "members", "gcli",
                        "workers", NULL), ==, 0);
    ASSERT_HAS(out, "(no members)");
    g_free(out);
    const char *expect[] = {
        "\"event\":\"joined\"", "\"event\":\"joined\"",
        "\"event\":\"left\",\"reason\":\"forced\"",
        "\"event\":\"left\",\"reason\":\"explicit\""};
    for (size_t i = 0; i < G_N_ELEMENTS(expect); i++) {
        line = read_line(w.out, 10000);
        if (line == NULL)
            g_error("watch printed no event %zu", i);
        ASSERT_HAS(line, expect[i]);
        ASSERT_HAS(line, "\"namespace\":\"gcli\",\"name\":\"workers\"");
        g_free(line);
    }
    g_assert_cmpint(finish(&w, SIGINT), ==, 0);

    /* A SIGKILLed holder's member vanishes with it. */
    h = start("-b", f->spec, "join", "gcli", "killed", "--hold", NULL);
    line = read_line(h.out, 10000);
    g_assert_nonnull(line);
    g_free(line);
    g_assert_cmpint(finish(&h, SIGKILL), ==, 128 + SIGKILL);
    gint64 t0 = g_get_monotonic_time();
    bool gone = false;
    while (!gone && g_get_monotonic_time() - t0 < 5 * G_USEC_PER_SEC) {
        g_assert_cmpint(run(&out, NULL, "-b", f->spec, "members", "gcli",
                            "killed", NULL), ==, 0);
        gone = strstr(out, "(no members)") != NULL;
        g_free(out);
        if (!gone)
            g_usleep(20 * 1000);
    }
    g_assert_true(gone);
    g_free(id);
    g_free(pid);
}

static void test_namespaces(Fixture *f, gconstpointer data)
{
    char *pid = self_pid();
    const char *keys[][2] = {{"nsa", "1"}, {"nsa", "2"}, {"nsb", "1"}};
    for (size_t i = 0; i < G_N_ELEMENTS(keys); i++)
        g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", keys[i][0],
                            keys[i][1], "--pid", pid, NULL), ==, 0);
    char *out = NULL;
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "namespaces",
                        NULL), ==, 0);
    ASSERT_HAS(out, "{\"namespace\":\"nsa\",\"entries\":2}");
    ASSERT_HAS(out, "{\"namespace\":\"nsb\",\"entries\":1}");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "drop-namespace",
                        "nsa", NULL), ==, 0);
    ASSERT_HAS(out, "\"removed\":2,\"atomic\":true");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "namespaces", NULL), ==, 0);
    ASSERT_LACKS(out, "nsa");
    ASSERT_HAS(out, "nsb");
    g_free(out);
    g_free(pid);
}

static void test_stats_health(Fixture *f, gconstpointer data)
{
    char *pid = self_pid();
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "s", "x",
                        "--pid", pid, NULL), ==, 0);
    char *out = NULL;
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "stats", "--prometheus",
                        NULL), ==, 0);
    ASSERT_HAS(out, "# TYPE procreg_entries gauge");
    ASSERT_HAS(out, "procreg_entries{backend=\"lmdb\"} 1");
    g_free(out);
    /* The registry's figures (everyone's), then this process's own. */
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "s2", "y",
                        "--pid", pid, NULL), ==, 0);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "stats", "--json", NULL),
                    ==, 0);
    ASSERT_HAS(out, "{\"registry\":{\"entries\":2,\"owners\":1,"
                    "\"namespaces\":{\"s\":1,\"s2\":1}},\"process\":{");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "stats", NULL), ==, 0);
    ASSERT_HAS(out, "registry (everyone's entries):\n  entries: 2\n"
                    "  owners: 1 processes\n  namespaces: 2\n    s: 1\n");
    ASSERT_HAS(out, "this procreg process");
    ASSERT_HAS(out, "backend_stats:");
    ASSERT_HAS(out, "map_size:");
    g_free(out);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "stats", "--json",
                        "--prometheus", NULL), ==, 2);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "health", NULL), ==, 0);
    g_assert_true(g_str_has_prefix(out, "ok: "));
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "health", NULL),
                    ==, 0);
    ASSERT_HAS(out, "\"status\":\"ok\",\"backend\":\"lmdb\"");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "backends", NULL), ==, 0);
    ASSERT_HAS(out, "lmdb\n");
    ASSERT_HAS(out, "ghash\n");
    g_free(out);
    g_assert_cmpint(run(&out, NULL, "--json", "backends", NULL), ==, 0);
    ASSERT_HAS(out, "\"lmdb\"");
    g_free(out);
    g_free(pid);
}

/* Without --backend: the shared file under $XDG_RUNTIME_DIR, so two
 * shells see one registry. */
static void test_default_backend(Fixture *f, gconstpointer data)
{
    char *pid = self_pid();
    char **env = child_env(f->dir);
    char *argv1[] = {cli_path, (char *)"register", (char *)"d", (char *)"one",
                     (char *)"--pid", pid, NULL};
    char *argv2[] = {cli_path, (char *)"--json", (char *)"lookup", (char *)"d",
                     (char *)"one", NULL};
    int status = 0;
    char *out = NULL;
    g_assert_true(g_spawn_sync(NULL, argv1, env, G_SPAWN_DEFAULT, NULL, NULL,
                               NULL, NULL, &status, NULL));
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    g_assert_true(g_spawn_sync(NULL, argv2, env, G_SPAWN_DEFAULT, NULL, NULL,
                               &out, NULL, &status, NULL));
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    ASSERT_HAS(out, "\"name\":\"one\"");
    g_free(out);
    char *file = g_build_filename(f->dir, "procreg", "registry.mdb", NULL);
    g_assert_true(g_file_test(file, G_FILE_TEST_IS_REGULAR));
    g_free(file);
    g_strfreev(env);
    g_free(pid);
}

/* Metadata typing: what each --meta form stores. */
static void test_meta_types(Fixture *f, gconstpointer data)
{
    char *pid = self_pid();
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "t", "a",
                        "--pid", pid, "--meta", "f=1.5", "--meta", "n=7",
                        "--meta", "neg=-3.25", "--meta", "e=2e3", "--meta",
                        "b=true", "--meta", "s=hello", "--meta", "x=0x10",
                        "--meta", "v=1.2.3", "--meta-string", "id=0042",
                        "--meta-string", "t=true", "--meta-string",
                        "g=2.5", "--meta", "u:=uint16 8080", NULL), ==, 0);
    char *out = NULL;
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "--json", "lookup", "t",
                        "a", NULL), ==, 0);
    const char *want[] = {"\"f\":1.5", "\"n\":7", "\"neg\":-3.25",
                          "\"e\":2000", "\"b\":true", "\"s\":\"hello\"",
                          "\"x\":\"0x10\"", "\"v\":\"1.2.3\"",
                          "\"id\":\"0042\"", "\"t\":\"true\"",
                          "\"g\":\"2.5\"", "\"u\":8080"};
    for (size_t i = 0; i < G_N_ELEMENTS(want); i++)
        ASSERT_HAS(out, want[i]);
    g_free(out);
    /* The types themselves, as GVariant text. */
    g_assert_cmpint(run(&out, NULL, "-b", f->spec, "lookup", "t", "a", NULL),
                    ==, 0);
    ASSERT_HAS(out, "'f': <1.5>");
    ASSERT_HAS(out, "'u': <uint16 8080>");
    ASSERT_HAS(out, "'id': <'0042'>");
    g_free(out);
    g_free(pid);
}

/* With --json, an error is one JSON object on stderr with the library's
 * facts as data (procreg_error_get_details()). */
static void test_json_errors(Fixture *f, gconstpointer data)
{
    char *pid = self_pid();
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "j", "a",
                        "--pid", pid, NULL), ==, 0);
    char *err = NULL;
    /* A miss: the names the namespace holds. */
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "--json", "lookup", "j",
                        "zz", NULL), ==, 3);
    ASSERT_HAS(err, "{\"error\":{\"code\":-3,\"name\":\"PROCREG_ENOTFOUND\"");
    ASSERT_HAS(err, "\"details\":{\"alternatives\":[\"a\"]}");
    g_free(err);
    /* Taken: the holder. */
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "--json", "register", "j",
                        "a", "--pid", pid, NULL), ==, 4);
    ASSERT_HAS(err, "\"name\":\"PROCREG_EEXISTS\"");
    char *holder = g_strdup_printf("\"entry\":{\"namespace\":\"j\","
                                   "\"name\":\"a\",\"pid\":%s,", pid);
    ASSERT_HAS(err, holder);
    g_free(holder);
    g_free(err);
    /* Another process's entry: the owner. */
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "--json", "unregister",
                        "j", "a", NULL), ==, 8);
    ASSERT_HAS(err, "\"name\":\"PROCREG_EPERM\"");
    char *owner = g_strdup_printf("\"pid\":%s,", pid);
    ASSERT_HAS(err, owner);
    g_free(owner);
    g_free(err);
    /* A bad spec: where. */
    g_assert_cmpint(run(NULL, &err, "--json", "-b", "lmdb:path", "list",
                        NULL), ==, 2);
    ASSERT_HAS(err, "\"name\":\"PROCREG_EINVAL\"");
    ASSERT_HAS(err, "\"position\":5");
    g_free(err);
    /* Without --json: text, as before. */
    g_assert_cmpint(run(NULL, &err, "-b", f->spec, "lookup", "j", "zz", NULL),
                    ==, 3);
    ASSERT_HAS(err, "procreg: 'zz' is not registered");
    g_free(err);
    g_free(pid);
}

/* What the bash completion offers for the words of @line (the last one
 * is completed; procreg found through PATH, as a shell would). */
static char *complete(const char *line)
{
    char *dir = g_path_get_dirname(cli_path);
    char *script = g_strdup_printf(
        "PATH=%s:$PATH; source %s; COMP_WORDS=(%s); "
        "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _procreg; "
        "printf '%%s\\n' \"${COMPREPLY[@]}\" | sort", dir,
        completion_path, line);
    char *argv[] = {(char *)"bash", (char *)"-c", script, NULL};
    char *out = NULL;
    int status = 0;
    char **env = child_env(NULL);
    if (!g_spawn_sync(NULL, argv, env, G_SPAWN_SEARCH_PATH, NULL, NULL, &out,
                      NULL, &status, NULL))
        g_error("cannot run bash");
    g_strfreev(env);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    g_free(script);
    g_free(dir);
    return out;
}

static void test_completion(Fixture *f, gconstpointer data)
{
    char *pid = self_pid();
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "prod", "web",
                        "--pid", pid, NULL), ==, 0);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "prod", "db",
                        "--pid", pid, NULL), ==, 0);
    g_assert_cmpint(run(NULL, NULL, "-b", f->spec, "register", "stage", "w",
                        "--pid", pid, NULL), ==, 0);
    char *out = complete("procreg lo");
    g_assert_cmpstr(out, ==, "lock\nlookup\n");
    g_free(out);
    char *line = g_strdup_printf("procreg -b '%s' lookup ''", f->spec);
    out = complete(line);
    g_assert_cmpstr(out, ==, "prod\nstage\n");
    g_free(out);
    g_free(line);
    line = g_strdup_printf("procreg -b '%s' unregister prod ''", f->spec);
    out = complete(line);
    g_assert_cmpstr(out, ==, "db\nweb\n");
    g_free(out);
    g_free(line);
    out = complete("procreg update --");
    ASSERT_HAS(out, "--force\n");
    ASSERT_HAS(out, "--meta-string\n");
    g_free(out);
    g_free(pid);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH-TO-procreg\n", argv[0]);
        return 2;
    }
    cli_path = argv[1];
    completion_path = argc > 2 ? argv[2] : NULL;
#define ADD(path, fn) \
    g_test_add(path, Fixture, NULL, fx_setup, fn, fx_teardown)
    ADD("/tools/cli/help", test_help);
    ADD("/tools/cli/register-refused", test_register_refused);
    ADD("/tools/cli/lifecycle", test_lifecycle);
    ADD("/tools/cli/invalid", test_invalid);
    ADD("/tools/cli/wait", test_wait);
    ADD("/tools/cli/hold", test_hold);
    ADD("/tools/cli/groups", test_groups);
    ADD("/tools/cli/watch", test_watch);
    ADD("/tools/cli/watch-from", test_watch_from);
    ADD("/tools/cli/namespaces", test_namespaces);
    ADD("/tools/cli/stats-health", test_stats_health);
    ADD("/tools/cli/default-backend", test_default_backend);
    ADD("/tools/cli/json-errors", test_json_errors);
    ADD("/tools/cli/meta-types", test_meta_types);
    if (completion_path != NULL)
        ADD("/tools/cli/completion", test_completion);
    return g_test_run();
}
