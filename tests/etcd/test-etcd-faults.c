/*
 * The etcd backend against misbehaving servers (tests/etcd/etcd-fake.c:
 * raw listeners and proxies on 127.0.0.1) in front of, or instead of, a
 * real single-member etcd this program starts:
 *   - a write whose answer is lost and that is sent again recognises its
 *     own effect; one held by a hanging member and applied late, after
 *     its repetition and a change by another, changes nothing; one whose
 *     key another removed before its repetition says its outcome is
 *     unknown;
 *   - each failure names its cause, with the right code, at once unless a
 *     member stalls;
 *   - a reply or a watch response that never ends costs at most
 *     max_reply_bytes: the call fails naming it, the watch reads the
 *     prefix again and goes on; tombstones do not pile up under a flood
 *     of other writers' removals.
 * Skipped (exit 77) without an etcd binary.
 */
#include "etcd-fake.h"
#include "etcd-harness.h"
#include "etcd-test-util.h"

#include <procreg/backend.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static etcd_cluster cluster;
static char *url;  /* the member's client URL */
static char *tag;  /* this run's random prefix component */
static int case_no;

/* A fresh prefix for one case. */
static char *new_prefix(void)
{
    return g_strdup_printf("/procreg-test/%s/f%d", tag, ++case_no);
}

/* A write whose first attempt etcd applied but whose answer was lost,
 * sent again to another member, recognises its own effect instead of
 * reporting EEXISTS, ECONFLICT or ENOTFOUND.  The first endpoint is a
 * proxy that swallows the member's replies to transactions (once asked
 * to); the second a proxy that holds requests until the first has seen
 * the member answer, so the repeat always reaches etcd after the first
 * attempt was applied. */
static void test_lost_answer(void)
{
    char *prefix = new_prefix();
    int port = cluster.m[0].client_port;
    etcd_gate *applied = etcd_gate_new();
    etcd_fake *lossy = etcd_fake_start(&(etcd_fake_config){
        .mode = FAKE_PROXY, .target_port = port, .on_reply = applied});
    etcd_fake *held = etcd_fake_start(&(etcd_fake_config){
        .mode = FAKE_PROXY, .target_port = port, .hold = applied});
    char *u1 = etcd_fake_url(lossy), *u2 = etcd_fake_url(held);
    char *spec = g_strdup_printf("etcd:endpoints=[%s,%s],prefix=%s,"
                                 "attempt_timeout_ms=500,watch=false,"
                                 "lease_ttl=60",
                                 u1, u2, prefix);
    procreg_key *key = NULL;
    g_assert_cmpint(procreg_key_new("svc", "k", &key, NULL), ==, 0);
    procreg_record record = {.registered_at = g_get_real_time()};
    procreg_owner_self(&record.owner);
    GError *err = NULL;
    for (int op = 0; op < 3; op++) {
        /* A fresh instance talks to the lossy proxy first. */
        etcd_fake_set_swallow(lossy, NULL);
        procreg_backend *b = NULL;
        g_assert_cmpint(procreg_backend_open(spec, NULL, &b, &err), ==, 0);
        procreg_entry e = {0};
        if (op == 2) {
            /* Registered through this instance, so it knows what it
             * removes when the answer to its removal is lost. */
            g_assert_cmpint(procreg_backend_unregister(b, key, 0, NULL, &err),
                            ==, 0);
            g_assert_cmpint(procreg_backend_register_entry(b, key, &record,
                                                           NULL, &err),
                            ==, 0);
        }
        if (op > 0)
            g_assert_cmpint(procreg_backend_lookup_entry(b, key, &e, &err),
                            ==, 0);
        etcd_gate_close(applied);
        etcd_fake_set_swallow(lossy, "/v3/kv/txn");
        procreg_entry out = {0};
        GVariant *md = g_variant_ref_sink(g_variant_new_parsed("{'v': <%i>}",
                                                               op));
        int rc = op == 0 ? procreg_backend_register_entry(b, key, &record,
                                                          &out, &err)
                 : op == 1 ? procreg_backend_update_metadata(
                                 b, key, md, e.revision, &out, &err)
                           : procreg_backend_unregister(b, key, 0, &out, &err);
        g_test_message("op %d after a lost answer: %d %s", op, rc,
                       err ? err->message : "");
        g_assert_no_error(err);
        g_assert_cmpint(rc, ==, 0);
        g_assert_true(etcd_gate_wait(applied, 0));
        g_assert_cmpint(etcd_fake_connections(held), >=, 1);
        GVariantDict st;
        g_variant_dict_init(&st, NULL);
        procreg_backend_stats(b, &st);
        guint64 slow = 0;
        g_assert_true(g_variant_dict_lookup(&st, "slow_attempts", "t", &slow));
        g_assert_cmpuint(slow, >=, 1);
        g_variant_dict_clear(&st);
        /* The outcome, as another instance sees it. */
        etcd_fake_set_swallow(lossy, NULL);
        procreg_entry now = {0};
        rc = procreg_backend_lookup_entry(b, key, &now, NULL);
        if (op < 2) {
            g_assert_cmpint(rc, ==, 0);
            g_assert_cmpint(now.owner.pid, ==, getpid());
            g_assert_cmpuint(now.revision, ==, out.revision);
            if (op == 1)
                g_assert_true(g_variant_equal(now.metadata, md));
        } else {
            g_assert_cmpint(rc, ==, PROCREG_ENOTFOUND);
            g_assert_cmpint(out.owner.pid, ==, getpid());
            g_assert_cmpuint(out.revision, ==, e.revision);
        }
        procreg_entry_clear(&now);
        procreg_entry_clear(&out);
        procreg_entry_clear(&e);
        g_variant_unref(md);
        procreg_backend_close(b);
    }
    procreg_key_unref(key);
    etcd_fake_stop(lossy);
    etcd_fake_stop(held);
    etcd_gate_free(applied);
    g_free(u1);
    g_free(u2);
    g_free(spec);
    g_free(prefix);
}

/* One misbehaving endpoint per case: each failure names its cause, with
 * the right code, and fails at once unless the cause is a member that
 * does not answer. */
typedef struct {
    const char *name;
    etcd_fake_mode mode;
    const char *reply;
    bool tls;              /* an https:// URL to the fake server, which
                            * answers before the TLS client hello */
    int code;
    const char *needle;    /* in the message */
    bool slow;             /* fails at the budget, not at once */
} fault_case;

/* A write's first attempt held by a member that hangs, sent again to
 * another member and applied there, and then applied late by the first
 * when it resumes (a SIGSTOPped member does that), after the entry changed:
 * the late repetition changes nothing.  A removal is pinned to the
 * revision it removes, so it cannot remove the entry registered since; a
 * registration compares its namespace's marker, so it cannot bring back
 * the entry removed since.  The first endpoint is a proxy that holds
 * requests while its gate is closed. */
static void test_late_repetition(void)
{
    char *prefix = new_prefix();
    holding_proxy hp;
    holding_proxy_start(&hp, &cluster, prefix);
    procreg_record record = {.registered_at = g_get_real_time()};
    procreg_owner_self(&record.owner);
    GError *err = NULL;
    for (int op = 0; op < 2; op++) {
        procreg_key *key = NULL;
        g_assert_cmpint(procreg_key_new("svc", op == 0 ? "k" : "k2", &key,
                                        NULL), ==, 0);
        procreg_backend *b = holding_proxy_open(&hp);
        if (op == 0)
            g_assert_cmpint(procreg_backend_register_entry(b, key, &record,
                                                           NULL, &err),
                            ==, 0);
        /* Held by the proxy, then applied by the member behind the
         * second endpoint. */
        holding_proxy_hold(&hp);
        int rc = op == 0
                     ? procreg_backend_unregister(b, key, 0, NULL, &err)
                     : procreg_backend_register_entry(b, key, &record, NULL,
                                                      &err);
        g_assert_no_error(err);
        g_assert_cmpint(rc, ==, 0);
        /* The entry changes: registered again by another instance, or
         * removed. */
        procreg_entry now = {0};
        rc = op == 0 ? procreg_backend_register_entry(hp.other, key, &record,
                                                      &now, &err)
                     : procreg_backend_unregister(hp.other, key, 0, NULL, &err);
        g_assert_no_error(err);
        g_assert_cmpint(rc, ==, 0);
        /* The member behind the proxy resumes: the held attempt reaches
         * etcd. */
        holding_proxy_release(&hp);
        procreg_entry after = {0};
        rc = procreg_backend_lookup_entry(hp.other, key, &after, &err);
        if (op == 0) {
            g_assert_cmpint(rc, ==, 0);
            g_assert_cmpuint(after.revision, ==, now.revision);
        } else {
            g_clear_error(&err);
            g_assert_cmpint(rc, ==, PROCREG_ENOTFOUND);
        }
        procreg_entry_clear(&after);
        procreg_entry_clear(&now);
        procreg_backend_close(b);
        procreg_key_unref(key);
    }
    holding_proxy_stop(&hp);
    g_free(prefix);
}

/* What another instance does between a write's lost answer and its
 * repetition: removes the entry (op 0) or the group's members (op 1). */
typedef struct {
    etcd_gate *applied; /* the member applied the first attempt */
    etcd_gate *go;      /* the repetition may reach the member */
    procreg_backend *other;
    procreg_key *key;
    int op;
} meanwhile;

static gpointer remove_meanwhile(gpointer data)
{
    meanwhile *m = data;
    g_assert_true(etcd_gate_wait(m->applied, 10000));
    GError *err = NULL;
    int rc = m->op == 0
                 ? procreg_backend_unregister(m->other, m->key, 0, NULL, &err)
                 : procreg_backend_group_leave(m->other, m->key, 0, NULL,
                                               PROCREG_REASON_FORCED, NULL,
                                               &err);
    g_assert_no_error(err);
    g_assert_cmpint(rc, ==, m->op == 0 ? 0 : 1);
    etcd_gate_open(m->go);
    return NULL;
}

/* A registration (op 0) or a join (op 1) whose first attempt etcd applied
 * but whose answer was lost, removed by another instance before the
 * repetition (held by the proxy of the second endpoint until then)
 * reaches etcd: the repetition finds the key absent and the marker moved,
 * and cannot tell whether its first attempt was applied; it says so
 * rather than try again (which would create the key a second time). */
static void test_unknown_outcome(void)
{
    char *prefix = new_prefix();
    int port = cluster.m[0].client_port;
    meanwhile m = {.applied = etcd_gate_new(), .go = etcd_gate_new()};
    etcd_fake *lossy = etcd_fake_start(&(etcd_fake_config){
        .mode = FAKE_PROXY, .target_port = port, .on_reply = m.applied});
    etcd_fake *held = etcd_fake_start(&(etcd_fake_config){
        .mode = FAKE_PROXY, .target_port = port, .hold = m.go});
    char *u1 = etcd_fake_url(lossy), *u2 = etcd_fake_url(held);
    char *spec = g_strdup_printf("etcd:endpoints=[%s,%s],prefix=%s,"
                                 "attempt_timeout_ms=500,watch=false,"
                                 "lease_ttl=60",
                                 u1, u2, prefix);
    char *direct = g_strdup_printf("etcd:endpoints=[%s],prefix=%s,"
                                   "watch=false,lease_ttl=60",
                                   url, prefix);
    procreg_record record = {.registered_at = g_get_real_time()};
    procreg_owner_self(&record.owner);
    GError *err = NULL;
    g_assert_cmpint(procreg_backend_open(direct, NULL, &m.other, &err), ==, 0);
    for (m.op = 0; m.op < 2; m.op++) {
        g_assert_cmpint(procreg_key_new("svc", m.op == 0 ? "k" : "g", &m.key,
                                        NULL), ==, 0);
        etcd_gate_open(m.go);
        etcd_fake_set_swallow(lossy, NULL);
        procreg_backend *b = NULL;
        g_assert_cmpint(procreg_backend_open(spec, NULL, &b, &err), ==, 0);
        etcd_gate_close(m.applied);
        etcd_gate_close(m.go);
        etcd_fake_set_swallow(lossy, "/v3/kv/txn");
        GThread *t = g_thread_new("meanwhile", remove_meanwhile, &m);
        int rc = m.op == 0 ? procreg_backend_register_entry(b, m.key, &record,
                                                            NULL, &err)
                           : procreg_backend_group_join(b, m.key, &record,
                                                        NULL, &err);
        g_thread_join(t);
        g_test_message("op %d: %d %s", m.op, rc, err ? err->message : "");
        g_assert_cmpint(rc, ==, PROCREG_EBACKEND);
        char *says = g_strdup_printf("whether the %s was applied is unknown",
                                     m.op == 0 ? "registration" : "join");
        g_assert_nonnull(strstr(err->message, says));
        g_free(says);
        g_clear_error(&err);
        procreg_backend_close(b);
        procreg_key_unref(m.key);
    }
    procreg_backend_close(m.other);
    etcd_fake_stop(lossy);
    etcd_fake_stop(held);
    etcd_gate_free(m.applied);
    etcd_gate_free(m.go);
    g_free(u1);
    g_free(u2);
    g_free(spec);
    g_free(direct);
    g_free(prefix);
}

/* An HTTP reply of @body; g_free it. */
static char *http_reply(const char *body)
{
    return g_strdup_printf("HTTP/1.1 200 OK\r\nContent-Type: application/json"
                           "\r\nConnection: close\r\nContent-Length: %zu\r\n"
                           "\r\n%s",
                           strlen(body), body);
}

static void test_faults_named(void)
{
    const fault_case cases[] = {
        {"garbage", FAKE_REPLY, "garbage\r\n\r\n", false, PROCREG_EBACKEND,
         "not HTTP", false},
        {"not etcd", FAKE_REPLY,
         "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: "
         "9\r\n\r\nnot found",
         false, PROCREG_EBACKEND, "HTTP 404 that is not an etcd reply", false},
        {"not JSON", FAKE_REPLY,
         "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n"
         "hello",
         false, PROCREG_EBACKEND, "a reply etcd would not send", false},
        {"TLS to plain HTTP", FAKE_REPLY, "HTTP/1.1 200 OK\r\n\r\n", true,
         PROCREG_EBACKEND, "TLS failed with every etcd endpoint", false},
        {"empty reply", FAKE_REPLY, "", false, PROCREG_EBACKEND,
         "Empty reply", false},
        {"stall", FAKE_STALL, NULL, false, PROCREG_ETIMEDOUT,
         "no answer within", true},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        const fault_case *fc = &cases[i];
        etcd_fake *f = etcd_fake_start(&(etcd_fake_config){
            .mode = fc->mode, .reply = fc->reply,
            .reply_len = fc->reply ? strlen(fc->reply) : 0, .at_once = fc->tls});
        char *spec = g_strdup_printf("etcd:endpoints=[%s://127.0.0.1:%d],"
                                     "timeout_ms=2000,watch=false",
                                     fc->tls ? "https" : "http",
                                     etcd_fake_port(f));
        GError *err = NULL;
        gint64 t0 = g_get_monotonic_time();
        int rc = open_rc(spec, &err);
        gint64 took = (g_get_monotonic_time() - t0) / 1000;
        g_test_message("%s: %d after %" G_GINT64_FORMAT " ms: %s", fc->name,
                       rc, took, err ? err->message : "");
        g_assert_cmpint(rc, ==, fc->code);
        if (strstr(err->message, fc->needle) == NULL)
            g_error("%s: \"%s\" does not say \"%s\"", fc->name, err->message,
                    fc->needle);
        if (fc->slow)
            g_assert_cmpint(took, >=, 2000);
        else
            g_assert_cmpint(took, <, 1000);
        g_clear_error(&err);
        g_free(spec);
        etcd_fake_stop(f);
    }

    /* A reply to a transaction that is no transaction reply: a lease
     * grant's fields pass, the comparison's outcome is missing. */
    char *not_txn = http_reply("{\"header\":{\"revision\":\"5\"},"
                               "\"ID\":\"7\",\"TTL\":\"10\"}");
    etcd_fake *f = etcd_fake_start(&(etcd_fake_config){
        .mode = FAKE_REPLY, .reply = not_txn, .reply_len = strlen(not_txn)});
    char *u = etcd_fake_url(f);
    char *spec = g_strdup_printf("etcd:endpoints=[%s],watch=false", u);
    procreg *reg = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_open(spec, &reg, &err), ==, 0);
    gint64 t0 = g_get_monotonic_time();
    int rc = procreg_register(reg, "ns", "x", NULL, NULL, NULL, &err);
    gint64 took = (g_get_monotonic_time() - t0) / 1000;
    g_test_message("malformed transaction reply: %d after %" G_GINT64_FORMAT
                   " ms: %s", rc, took, err ? err->message : "");
    g_assert_cmpint(rc, ==, PROCREG_EBACKEND);
    g_assert_nonnull(strstr(err->message, "malformed transaction reply"));
    g_assert_cmpint(took, <, 1000);
    g_clear_error(&err);
    procreg_close(reg);
    g_free(spec);
    g_free(u);
    g_free(not_txn);
    etcd_fake_stop(f);

    /* Two causes at once are both named; a good endpoint after a bad one
     * is used. */
    f = etcd_fake_start(&(etcd_fake_config){.mode = FAKE_REPLY,
                                            .reply = "garbage\r\n\r\n",
                                            .reply_len = 9});
    spec = g_strdup_printf("etcd:endpoints=[http://127.0.0.1:%d,"
                           "http://127.0.0.1:%d],watch=false",
                           etcd_fake_port(f), etcd_free_port());
    g_assert_cmpint(open_rc(spec, &err), ==, PROCREG_EBACKEND);
    g_test_message("mixed: %s", err->message);
    g_assert_nonnull(strstr(err->message, "no etcd endpoint usable"));
    g_assert_nonnull(strstr(err->message, "not HTTP"));
    g_assert_nonnull(strstr(err->message, "Couldn't connect"));
    g_clear_error(&err);
    g_free(spec);
    char *prefix = new_prefix();
    spec = g_strdup_printf("etcd:endpoints=[http://127.0.0.1:%d,%s],prefix=%s",
                           etcd_fake_port(f), url, prefix);
    g_assert_cmpint(procreg_open(spec, &reg, &err), ==, 0);
    g_assert_cmpint(procreg_register(reg, "ns", "x", NULL, NULL, NULL, &err),
                    ==, 0);
    procreg_close(reg);
    g_free(spec);
    g_free(prefix);
    etcd_fake_stop(f);
}

/* ---- bounded memory ---- */

/* The child of test_endless_reply: open @spec (a flooding server), say
 * what came of it and the peak resident size, exit. */
static int rss_child(const char *spec)
{
    procreg *reg = NULL;
    GError *err = NULL;
    gint64 t0 = g_get_monotonic_time();
    int rc = procreg_open(spec, &reg, &err);
    gint64 took = (g_get_monotonic_time() - t0) / 1000;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%d %ld %" G_GINT64_FORMAT " %s\n", rc, ru.ru_maxrss, took,
           err ? err->message : "");
    procreg_close(reg);
    g_clear_error(&err);
    return 0;
}

typedef struct {
    int rc;
    long maxrss_kib;
    gint64 took_ms;
    char *message;
} rss_result;

/* Run rss_child(@spec) in a fresh process of this program. */
static rss_result run_rss_child(const char *spec)
{
    char *self = g_file_read_link("/proc/self/exe", NULL);
    const char *argv[] = {self, "--rss-child", spec, NULL};
    char *out = NULL;
    int status = 0;
    GError *err = NULL;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                      &out, NULL, &status, &err) ||
        !g_spawn_check_wait_status(status, NULL))
        g_error("the child failed: %s", err ? err->message : out);
    rss_result r = {0};
    char *rest = NULL;
    r.rc = (int)g_ascii_strtoll(out, &rest, 10);
    r.maxrss_kib = (long)g_ascii_strtoll(rest, &rest, 10);
    r.took_ms = g_ascii_strtoll(rest, &rest, 10);
    r.message = g_strstrip(g_strdup(rest));
    g_free(out);
    g_free(self);
    return r;
}

/* A server whose reply never ends: the call reads max_reply_bytes, no
 * more, and fails naming it.  Peak memory is measured in a fresh process
 * against one that fails at once (refused). */
static void test_endless_reply(void)
{
    etcd_fake *f = etcd_fake_start(&(etcd_fake_config){.mode = FAKE_FLOOD});
    char *fu = etcd_fake_url(f);
    char *flood = g_strdup_printf("etcd:endpoints=[%s],watch=false,"
                                  "max_reply_bytes=4MiB",
                                  fu);
    char *refused = g_strdup_printf("etcd:endpoints=[http://127.0.0.1:%d],"
                                    "watch=false",
                                    etcd_free_port());
    rss_result base = run_rss_child(refused);
    rss_result r = run_rss_child(flood);
    g_test_message("endless reply: %d after %" G_GINT64_FORMAT " ms, peak "
                   "RSS %ld KiB (refused at once: %ld KiB): %s",
                   r.rc, r.took_ms, r.maxrss_kib, base.maxrss_kib, r.message);
    g_assert_cmpint(base.rc, ==, PROCREG_EBACKEND);
    g_assert_cmpint(r.rc, ==, PROCREG_EBACKEND);
    g_assert_nonnull(strstr(r.message, "max_reply_bytes"));
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    /* The 4 MiB read (in a buffer that doubles: up to 8 MiB), and slack
     * for the malloc arenas of the calls' threads. */
    g_assert_cmpint(r.maxrss_kib - base.maxrss_kib, <, 16 * 1024);
#endif
    g_free(r.message);
    g_free(base.message);
    g_free(flood);
    g_free(fu);
    g_free(refused);
    etcd_fake_stop(f);
}

/* A watch response that never ends: the stream is cut at
 * max_reply_bytes, the prefix read again page by page, and the watch goes
 * on; what another registry did meanwhile is reported. */
static void test_endless_watch_line(void)
{
    char *prefix = new_prefix();
    etcd_fake *p = etcd_fake_start(&(etcd_fake_config){
        .mode = FAKE_PROXY, .target_port = cluster.m[0].client_port,
        .flood = "/v3/watch", .flood_count = 1});
    char *pu = etcd_fake_url(p);
    char *spec_a = g_strdup_printf("etcd:endpoints=[%s],prefix=%s,"
                                   "max_reply_bytes=1MiB",
                                   pu, prefix);
    char *spec_b = g_strdup_printf("etcd:endpoints=[%s],prefix=%s", url,
                                   prefix);
    procreg *b = NULL, *a = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_open(spec_b, &b, &err), ==, 0);
    g_assert_cmpint(procreg_register(b, "svc", "before", NULL, NULL, NULL,
                                     &err),
                    ==, 0);
    g_assert_cmpint(procreg_open(spec_a, &a, &err), ==, 0);
    recorder ra;
    recorder_start(&ra, a);
    g_assert_cmpint(procreg_register(b, "svc", "during", NULL, NULL, NULL,
                                     &err),
                    ==, 0);
    if (recorder_wait(&ra, PROCREG_EVENT_REGISTERED, -1, "svc", "during",
                      10000) == NULL) {
        char *d = recorder_dump(&ra);
        g_error("no event for 'during'; saw %s", d);
    }
    g_assert_cmpint(backend_stat_int(a, "oversized_watch_lines"), ==, 1);
    /* Once past the flood, the watch follows changes one by one. */
    g_assert_cmpint(procreg_register(b, "svc", "after", NULL, NULL, NULL,
                                     &err),
                    ==, 0);
    g_assert_nonnull(recorder_wait(&ra, PROCREG_EVENT_REGISTERED, -1, "svc",
                                   "after", 5000));
    g_assert_cmpuint(recorder_count(&ra, PROCREG_EVENT_REGISTERED, "svc",
                                    "during"),
                     ==, 1);
    recorder_stop(&ra);
    procreg_close(a);
    procreg_close(b);
    etcd_fake_stop(p);
    g_free(pu);
    g_free(spec_a);
    g_free(spec_b);
    g_free(prefix);
}

/* A flood of other writers' removals leaves no tombstones behind: they
 * are kept only while this instance has a write of the key in flight. */
static void test_no_tombstone_pileup(void)
{
    char *prefix = new_prefix();
    char *spec = g_strdup_printf("etcd:endpoints=[%s],prefix=%s", url,
                                 prefix);
    procreg *a = NULL, *b = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_open(spec, &a, &err), ==, 0);
    g_assert_cmpint(procreg_open(spec, &b, &err), ==, 0);
    recorder ra;
    recorder_start(&ra, a);
    for (int i = 0; i < 300; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "k%d", i);
        g_assert_cmpint(procreg_register(b, "flood", name, NULL, NULL, NULL,
                                         &err),
                        ==, 0);
        g_assert_cmpint(procreg_unregister(b, "flood", name, &err), ==, 0);
    }
    g_assert_nonnull(recorder_wait(&ra, PROCREG_EVENT_UNREGISTERED, -1,
                                   "flood", "k299", 10000));
    g_assert_cmpint(backend_stat_int(a, "tombstones"), ==, 0);
    g_assert_cmpint(backend_stat_int(b, "tombstones"), ==, 0);
    recorder_stop(&ra);
    procreg_close(a);
    procreg_close(b);
    g_free(spec);
    g_free(prefix);
}

int main(int argc, char **argv)
{
    etcd_harness_env(argv);
    if (argc == 3 && strcmp(argv[1], "--rss-child") == 0)
        return rss_child(argv[2]);
    etcd_harness_args(&argc, argv);
    g_test_init(&argc, &argv, NULL);
    etcd_cluster_start_or_exit(&cluster, 1);
    url = etcd_member_url(&cluster, 0);
    tag = etcd_random_tag();
    g_test_add_func("/etcd-faults/lost-answer", test_lost_answer);
    g_test_add_func("/etcd-faults/late-repetition", test_late_repetition);
    g_test_add_func("/etcd-faults/unknown-outcome", test_unknown_outcome);
    g_test_add_func("/etcd-faults/named", test_faults_named);
    g_test_add_func("/etcd-faults/endless-reply", test_endless_reply);
    g_test_add_func("/etcd-faults/endless-watch-line",
                    test_endless_watch_line);
    g_test_add_func("/etcd-faults/no-tombstone-pileup",
                    test_no_tombstone_pileup);
    int rc = g_test_run();
    etcd_cluster_destroy(&cluster);
    g_free(url);
    g_free(tag);
    return rc;
}
