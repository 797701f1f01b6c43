/*
 * What an etcd registry costs a process, against a member this program
 * starts on 127.0.0.1 (skipped, exit 77, without etcd):
 *   - watch=used reads and watches only the namespaces the registry uses
 *     (and watch_namespaces), each when first used, and reports every
 *     change of them from then on, none twice;
 *   - the registries of one process (same cluster, same host id) share
 *     one lease and keeper; a registry closed while another stays open
 *     leaves its entries to the session, which removes them as their
 *     owners die; the last one closed, they expire with the lease;
 *   - a fork() child opens its own session;
 *   - /etcd-scope/cost measures open time, memory and watch traffic for
 *     watch=true, used and false (PROCREG_ETCD_COST_ENTRIES entries,
 *     default 1000; doc/etcd.md has the 10000 run).
 */
#include "etcd-harness.h"
#include "etcd-test-util.h"

#include <procreg/procreg.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TTL_S 2

static etcd_cluster cluster;
static char *url;
static char *tag;
static int case_no;

static char *new_prefix(void)
{
    return g_strdup_printf("/procreg-test/%s/s%d", tag, ++case_no);
}

static procreg *open_reg(const char *prefix, const char *extra)
{
    return open_spec("etcd:endpoints=[%s],prefix=%s,lease_ttl=%d%s%s", url,
                     prefix, TTL_S, extra ? "," : "", extra ? extra : "");
}

static void reg_ok(procreg *reg, const char *ns, const char *name,
                   const procreg_owner *owner)
{
    GError *err = NULL;
    int rc = procreg_register(reg, ns, name, owner, NULL, NULL, &err);
    if (rc != 0)
        g_error("register %s/%s: %s", ns, name, err ? err->message : "?");
}

static gint64 memory_bytes(procreg *reg)
{
    GVariant *st = NULL;
    g_assert_cmpint(procreg_stats(reg, &st, NULL), ==, 0);
    guint64 n = 0;
    g_assert_true(g_variant_lookup(st, "memory_bytes", "t", &n));
    g_variant_unref(st);
    return (gint64)n;
}

/* ------------------------------------------------------------------------ */

static gpointer late_register(gpointer w)
{
    g_usleep(300 * 1000);
    reg_ok(w, "z", "q", NULL);
    return NULL;
}

static void test_watch_used(void)
{
    char *prefix = new_prefix();
    procreg *w = open_reg(prefix, "host_id=writer");
    reg_ok(w, "x", "a", NULL);
    reg_ok(w, "y", "b", NULL);
    procreg *a = open_reg(prefix, "host_id=reader,watch=used,"
                                  "watch_namespaces=[x]");
    g_assert_cmpint(backend_stat_int(a, "watched_namespaces"), ==, 1);
    recorder ra;
    recorder_start(&ra, a);

    /* x is watched from the start; y is not used yet. */
    reg_ok(w, "x", "c", NULL);
    reg_ok(w, "y", "d", NULL);
    const rec_event *ev = recorder_wait(&ra, PROCREG_EVENT_REGISTERED, -1,
                                        "x", "c", 3000);
    g_assert_nonnull(ev);
    g_assert_true(ev->external);
    g_usleep(300 * 1000);
    g_assert_cmpuint(recorder_count(&ra, PROCREG_EVENT_REGISTERED, "y", "d"),
                     ==, 0);

    /* A lookup in y puts it in scope: its later changes are reported,
     * not those before the lookup read it. */
    procreg_owner o;
    GError *err = NULL;
    g_assert_cmpint(procreg_lookup(a, "y", "b", &o, &err), ==, 0);
    g_assert_cmpint(backend_stat_int(a, "watched_namespaces"), ==, 2);
    reg_ok(w, "y", "e", NULL);
    g_assert_nonnull(recorder_wait(&ra, PROCREG_EVENT_REGISTERED, -1, "y",
                                   "e", 3000));
    g_assert_cmpint(procreg_unregister(w, "x", "a", &err), ==, 0);
    ev = recorder_wait(&ra, PROCREG_EVENT_UNREGISTERED, -1, "x", "a", 3000);
    g_assert_nonnull(ev);
    g_assert_cmpint(ev->reason, ==, PROCREG_REASON_EXPLICIT);

    /* wait_for on a namespace not yet used: its lookup puts it in scope,
     * and the registration that follows wakes it. */
    GThread *t = g_thread_new("late", late_register, w);
    procreg_entry e = {0};
    g_assert_cmpint(procreg_wait_for(a, "z", "q", 3000, NULL, &e, &err), ==,
                    0);
    g_assert_cmpint(e.owner.pid, ==, getpid());
    procreg_entry_clear(&e);
    g_thread_join(t);

    g_usleep(200 * 1000);
    char *dump = recorder_dump(&ra);
    g_test_message("reader saw: %s", dump);
    g_free(dump);
    g_assert_cmpuint(recorder_count(&ra, PROCREG_EVENT_REGISTERED, "y", "d"),
                     ==, 0);
    g_assert_cmpuint(recorder_count(&ra, PROCREG_EVENT_REGISTERED, "y", "b"),
                     ==, 0);
    g_assert_cmpuint(recorder_count(&ra, PROCREG_EVENT_REGISTERED, "x", "c"),
                     ==, 1);
    g_assert_cmpuint(recorder_count(&ra, PROCREG_EVENT_REGISTERED, "y", "e"),
                     ==, 1);
    recorder_stop(&ra);
    procreg_close(a);
    procreg_close(w);
    g_free(prefix);
}

/* Two registries of one process and host share a lease; different hosts
 * do not. */
static void test_shared_lease(void)
{
    char *prefix = new_prefix();
    char *prefix2 = new_prefix();
    procreg *r1 = open_reg(prefix, "host_id=shared");
    procreg *r2 = open_reg(prefix2, "host_id=shared,watch=false");
    procreg *obs = open_reg(prefix, "host_id=observer");
    g_assert_cmpint(backend_stat_int(r1, "lease"), >, 0);
    g_assert_cmpint(backend_stat_int(r1, "lease"), ==,
                    backend_stat_int(r2, "lease"));
    g_assert_cmpint(backend_stat_int(r1, "lease"), !=,
                    backend_stat_int(obs, "lease"));
    g_assert_cmpint(backend_stat_int(r2, "lease_registries"), ==, 2);
    recorder ro;
    recorder_start(&ro, obs);

    /* r1 registers itself and a child, then closes: r2 keeps the lease,
     * so the entries stay past the TTL... */
    const char *argv[] = {"sleep", "60", NULL};
    GPid child = 0;
    GError *err = NULL;
    g_assert_true(g_spawn_async(NULL, (char **)argv, NULL,
                                G_SPAWN_SEARCH_PATH |
                                    G_SPAWN_DO_NOT_REAP_CHILD,
                                NULL, NULL, &child, &err));
    procreg_owner co;
    g_assert_cmpint(procreg_owner_from_pid(child, &co, &err), ==, 0);
    reg_ok(r1, "svc", "self", NULL);
    reg_ok(r1, "svc", "child", &co);
    g_assert_nonnull(recorder_wait(&ro, PROCREG_EVENT_REGISTERED, -1, "svc",
                                   "child", 3000));
    procreg_close(r1);
    g_assert_cmpint(backend_stat_int(r2, "lease_registries"), ==, 1);
    g_assert_cmpint(backend_stat_int(r2, "lease_retired"), ==, 1);
    g_usleep((TTL_S + 1) * G_USEC_PER_SEC);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(obs, "svc", "self", &o, &err), ==, 0);
    g_assert_cmpint(procreg_lookup(obs, "svc", "child", &o, &err), ==, 0);

    /* ... the child's goes when it dies, within a keeper round ... */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    g_spawn_close_pid(child);
    gint64 t0 = g_get_monotonic_time();
    const rec_event *ev = recorder_wait(&ro, PROCREG_EVENT_UNREGISTERED, -1,
                                        "svc", "child", 3000);
    g_assert_nonnull(ev);
    g_test_message("closed registry's dead owner removed after %" G_GINT64_FORMAT
                   " ms, reason %s",
                   (ev->at - t0) / 1000,
                   procreg_event_reason_name(ev->reason));
    g_assert_cmpint(ev->reason, ==, PROCREG_REASON_OWNER_EXITED);
    g_assert_cmpint(procreg_lookup(obs, "svc", "self", &o, &err), ==, 0);

    /* ... and the rest with the lease, once the last registry closed. */
    procreg_close(r2);
    ev = recorder_wait(&ro, PROCREG_EVENT_UNREGISTERED, -1, "svc", "self",
                       (TTL_S + 3) * 1000);
    g_assert_nonnull(ev);
    g_assert_cmpint(ev->reason, ==, PROCREG_REASON_EXPIRED);
    recorder_stop(&ro);
    procreg_close(obs);
    g_free(prefix);
    g_free(prefix2);
}

/* A fork() child's registry is its own: its own session and lease. */
static void test_fork_child(void)
{
#if defined(__SANITIZE_THREAD__)
    g_test_skip("ThreadSanitizer cannot follow a forked child of a threaded "
                "process that starts threads (die_after_fork)");
    return;
#elif defined(__SANITIZE_ADDRESS__)
    g_test_skip("AddressSanitizer's allocator is not fork-safe in a threaded "
                "process (a child can block for ever in malloc); the fork "
                "path runs in the plain build");
    return;
#endif
    char *prefix = new_prefix();
    procreg *r = open_reg(prefix, "host_id=forker");
    reg_ok(r, "f", "parent", NULL);
    gint64 lease = backend_stat_int(r, "lease");
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        procreg *c = open_reg(prefix, "host_id=forker");
        int bad = backend_stat_int(c, "lease") == lease ||
                  backend_stat_int(c, "lease_registries") != 1;
        bad |= procreg_register(c, "f", "child", NULL, NULL, NULL, NULL) != 0;
        procreg_close(c);
        procreg_close(r); /* the parent's: left alone */
        _exit(bad ? 1 : 0);
    }
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(r, "f", "parent", &o, NULL), ==, 0);
    reg_ok(r, "f", "after", NULL);
    g_assert_cmpint(backend_stat_int(r, "lease"), ==, lease);
    procreg_close(r);
    g_free(prefix);
}

/* ------------------------------------------------------------------------ */
/* Cost                                                                     */

static gint64 rss_kib(void)
{
    char *text = NULL;
    gint64 kib = -1;
    if (g_file_get_contents("/proc/self/status", &text, NULL, NULL)) {
        const char *p = strstr(text, "VmRSS:");
        if (p != NULL)
            kib = g_ascii_strtoll(p + 6, NULL, 10);
        g_free(text);
    }
    return kib;
}

typedef struct {
    procreg *reg;
    int from, to, namespaces;
} fill_arg;

static gpointer fill_thread(gpointer data)
{
    fill_arg *f = data;
    for (int i = f->from; i < f->to; i++) {
        char ns[16], name[16];
        g_snprintf(ns, sizeof ns, "n%03d", i % f->namespaces);
        g_snprintf(name, sizeof name, "e%06d", i);
        reg_ok(f->reg, ns, name, NULL);
    }
    return NULL;
}

static void test_cost(void)
{
    const char *env = g_getenv("PROCREG_ETCD_COST_ENTRIES");
    int entries = env ? atoi(env) : 1000;
    const int namespaces = 100, threads = 8, readers = 10, changes = 200;
    char *prefix = new_prefix();
    procreg *w = open_reg(prefix, "host_id=filler,watch=false");
    fill_arg fa[8];
    GThread *t[8];
    for (int i = 0; i < threads; i++) {
        fa[i] = (fill_arg){w, entries * i / threads,
                           entries * (i + 1) / threads, namespaces};
        t[i] = g_thread_new("fill", fill_thread, &fa[i]);
    }
    for (int i = 0; i < threads; i++)
        g_thread_join(t[i]);

    static const char *const modes[] = {
        "watch=true", "watch=used,watch_namespaces=[n000]", "watch=false"};
    /* Each mode opened OPENS times (as many processes: one host id
     * each); the median open time, the memory of the last. */
    enum { OPENS = 5 };
    gint64 mem[3];
    for (int m = 0; m < 3; m++) {
        gint64 ms[OPENS], ready_ms[OPENS], rss = 0;
        for (int i = 0; i < OPENS; i++) {
            gint64 r0 = rss_kib();
            gint64 t0 = g_get_monotonic_time();
            char *extra = g_strdup_printf("host_id=cost%d-%d,%s", m, i,
                                          modes[m]);
            procreg *r = open_reg(prefix, extra);
            gint64 took = (g_get_monotonic_time() - t0) / 1000;
            int j = i;
            for (; j > 0 && ms[j - 1] > took; j--)
                ms[j] = ms[j - 1];
            ms[j] = took;
            /* The prefix is read after open returns, by the watch: a
             * registration made now is reported once that is done. */
            recorder rec;
            recorder_start(&rec, r);
            char ready[32];
            g_snprintf(ready, sizeof ready, "ready-%d-%d", m, i);
            reg_ok(w, "n000", ready, NULL);
            g_assert_true(m == 2 ||
                          recorder_wait(&rec, PROCREG_EVENT_REGISTERED, -1,
                                        "n000", ready, 10000) != NULL);
            recorder_stop(&rec);
            took = (g_get_monotonic_time() - t0) / 1000;
            for (j = i; j > 0 && ready_ms[j - 1] > took; j--)
                ready_ms[j] = ready_ms[j - 1];
            ready_ms[j] = took;
            mem[m] = memory_bytes(r);
            rss = rss_kib() - r0;
            procreg_owner o;
            g_assert_cmpint(procreg_lookup(r, "n001", "e000001", &o, NULL),
                            ==, 0);
            procreg_close(r);
            g_free(extra);
        }
        char *reported = m == 2 ? g_strdup("none (no watch)")
                                : g_strdup_printf("after %" G_GINT64_FORMAT
                                                  " ms",
                                                  ready_ms[OPENS / 2]);
        printf("# %d entries, %s: open %" G_GINT64_FORMAT " ms (median of %d; "
               "%" G_GINT64_FORMAT " to %" G_GINT64_FORMAT "), a change "
               "reported %s, backend memory %" G_GINT64_FORMAT " bytes, RSS +%"
               G_GINT64_FORMAT " KiB\n",
               entries, modes[m], ms[OPENS / 2], OPENS, ms[0], ms[OPENS - 1],
               reported, mem[m], rss);
        g_free(reported);
    }
    /* Read at open and mirrored: only watch=true. */
    g_assert_cmpint(mem[1] * 10, <, mem[0]);
    g_assert_cmpint(mem[2] * 10, <, mem[0]);

    /* Watch traffic: @readers registries (as many processes: one host id
     * each) while the writer changes @changes entries across every
     * namespace. */
    gint64 bytes[2] = {0, 0};
    for (int m = 0; m < 2; m++) {
        procreg *r[16];
        for (int i = 0; i < readers; i++) {
            char *extra = g_strdup_printf("host_id=traffic%d-%d,%s", m, i,
                                          modes[m]);
            r[i] = open_reg(prefix, extra);
            g_free(extra);
        }
        gint64 before = 0;
        for (int i = 0; i < readers; i++)
            before += backend_stat_int(r[i], "watch_bytes");
        for (int i = 0; i < changes; i++) {
            char ns[16], name[24];
            g_snprintf(ns, sizeof ns, "n%03d", i % namespaces);
            g_snprintf(name, sizeof name, "t%d-%d", m, i);
            reg_ok(w, ns, name, NULL);
        }
        g_usleep(500 * 1000);
        for (int i = 0; i < readers; i++) {
            bytes[m] += backend_stat_int(r[i], "watch_bytes");
            procreg_close(r[i]);
        }
        bytes[m] -= before;
        printf("# %d registrations over %d namespaces, %d watching "
               "registries, %s: %" G_GINT64_FORMAT " watch bytes in all (%"
               G_GINT64_FORMAT " per registry)\n",
               changes, namespaces, readers, modes[m], bytes[m],
               bytes[m] / readers);
    }
    g_assert_cmpint(bytes[1] * 10, <, bytes[0]);
    procreg_close(w);
    g_free(prefix);
}

int main(int argc, char **argv)
{
    etcd_harness_env(argv);
    etcd_harness_args(&argc, argv);
    g_test_init(&argc, &argv, NULL);
    etcd_cluster_start_or_exit(&cluster, 1);
    url = etcd_member_url(&cluster, 0);
    tag = etcd_random_tag();
    g_test_add_func("/etcd-scope/watch-used", test_watch_used);
    g_test_add_func("/etcd-scope/shared-lease", test_shared_lease);
    g_test_add_func("/etcd-scope/fork-child", test_fork_child);
    g_test_add_func("/etcd-scope/cost", test_cost);
    int rc = g_test_run();
    etcd_cluster_destroy(&cluster);
    g_free(url);
    g_free(tag);
    return rc;
}
