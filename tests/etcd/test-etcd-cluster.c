/*
 * The etcd backend on a three-member cluster on 127.0.0.1 (started here):
 * with one member stopped, registration, lookup and watch go on; with two
 * stopped (no quorum) operations fail with a clear error within their
 * time budget and work again once a member returns; a watch that fell
 * behind a compaction re-reads and reports what it missed.
 * Skipped (exit 77) without an etcd binary.  The cases run in order.
 */
#include "etcd-harness.h"
#include "etcd-test-util.h"

#include <procreg/procreg.h>

#include <string.h>
#include <unistd.h>

#define TIMEOUT_MS 2000

static etcd_cluster cl;
static char *tag;

/* "http://...:P1,http://...:P2" for members @a, @b, @c (-1: none). */
static char *urls(int a, int b, int c)
{
    GString *s = g_string_new(NULL);
    int idx[] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        if (idx[i] < 0)
            continue;
        char *u = etcd_member_url(&cl, idx[i]);
        g_string_append_printf(s, "%s%s", s->len ? "," : "", u);
        g_free(u);
    }
    return g_string_free(s, FALSE);
}

static procreg *open_on(const char *endpoints, const char *prefix,
                        const char *extra)
{
    return open_spec("etcd:endpoints=[%s],prefix=%s,timeout_ms=%d%s%s",
                     endpoints, prefix, TIMEOUT_MS, extra ? "," : "",
                     extra ? extra : "");
}

/* Retry @what until it succeeds or @ms pass; returns its last code. */
static int register_until(procreg *reg, const char *ns, const char *name,
                          int ms, GError **last)
{
    gint64 until = g_get_monotonic_time() + (gint64)ms * 1000;
    int rc;
    do {
        g_clear_error(last);
        rc = procreg_register(reg, ns, name, NULL, NULL, NULL, last);
        if (rc == 0 || rc == PROCREG_EEXISTS)
            return rc;
        g_usleep(100 * 1000);
    } while (g_get_monotonic_time() < until);
    return rc;
}

static void test_one_member_down(void)
{
    char *prefix = g_strdup_printf("/procreg-test/%s/one-down", tag);
    char *all = urls(0, 1, 2), *rev = urls(2, 1, 0);
    procreg *r = open_on(all, prefix, "host_id=h1,lease_ttl=5");
    procreg *w = open_on(rev, prefix, "host_id=h2");
    recorder rec;
    recorder_start(&rec, r);
    GError *err = NULL;
    g_assert_cmpint(procreg_register(r, "svc", "a", NULL, NULL, NULL, &err),
                    ==, 0);

    /* Stop the member r talks to (its first endpoint). */
    etcd_member_stop(&cl, 0);
    gint64 t0 = g_get_monotonic_time();
    g_assert_cmpint(register_until(r, "svc", "b", 5000, &err), ==, 0);
    g_test_message("registration went on after %" G_GINT64_FORMAT " ms "
                   "with member 1 stopped",
                   (g_get_monotonic_time() - t0) / 1000);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(r, "svc", "a", &o, &err), ==, 0);
    g_assert_no_error(err);
    /* The watch moved to another member: w's change reaches r. */
    g_assert_cmpint(register_until(w, "svc", "c", 5000, &err), ==, 0);
    const rec_event *ev = recorder_wait(&rec, PROCREG_EVENT_REGISTERED, -1,
                                        "svc", "c", 8000);
    if (ev == NULL) {
        char *d = recorder_dump(&rec);
        g_error("no event for c; saw %s", d);
    }
    g_assert_true(ev->external);
    procreg_health h = {0};
    g_assert_cmpint(procreg_health_check(r, &h, NULL), ==, 0);
    g_test_message("health with one member down: %s: %s",
                   procreg_health_status_name(h.status), h.message);
    g_assert_cmpint(h.status, ==, PROCREG_HEALTH_DEGRADED);
    procreg_health_clear(&h);
    g_assert_cmpint(backend_stat_int(r, "failovers"), >=, 1);
    recorder_stop(&rec);
    procreg_close(w);
    procreg_close(r);
    g_free(all);
    g_free(rev);
    g_free(prefix);
}

static void test_no_quorum(void)
{
    char *prefix = g_strdup_printf("/procreg-test/%s/no-quorum", tag);
    char *all = urls(0, 1, 2);
    /* Member 1 is still down from the previous case. */
    procreg *r = open_on(all, prefix, "host_id=h1,lease_ttl=30");
    GError *err = NULL;
    g_assert_cmpint(procreg_register(r, "svc", "before", NULL, NULL, NULL,
                                     &err),
                    ==, 0);
    etcd_member_stop(&cl, 1);

    gint64 t0 = g_get_monotonic_time();
    int rc = procreg_register(r, "svc", "during", NULL, NULL, NULL, &err);
    gint64 took = (g_get_monotonic_time() - t0) / 1000;
    g_test_message("register without quorum: %d (%s) after %" G_GINT64_FORMAT
                   " ms: %s", rc, procreg_strerror(rc), took,
                   err ? err->message : "");
    g_assert_cmpint(rc, ==, PROCREG_ETIMEDOUT);
    g_assert_true(strstr(err->message, "leader") != NULL ||
                  strstr(err->message, "quorum") != NULL);
    g_assert_cmpint(took, <=, TIMEOUT_MS + 1500);
    g_clear_error(&err);

    procreg_entry e = {0};
    t0 = g_get_monotonic_time();
    rc = procreg_lookup_entry(r, "svc", "before", &e, &err);
    took = (g_get_monotonic_time() - t0) / 1000;
    g_assert_cmpint(rc, ==, PROCREG_ETIMEDOUT);
    g_assert_cmpint(took, <=, TIMEOUT_MS + 1500);
    g_test_message("lookup without quorum: %s", err->message);
    g_clear_error(&err);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(r, "svc", "before", &o, NULL), ==,
                    PROCREG_EBACKEND);

    procreg_health h = {0};
    g_assert_cmpint(procreg_health_check(r, &h, NULL), ==, 0);
    g_test_message("health without quorum: %s", h.message);
    g_assert_cmpint(h.status, ==, PROCREG_HEALTH_FAILED);
    procreg_health_clear(&h);

    /* A member returns: quorum, and the registry works again. */
    g_assert_true(etcd_member_restart(&cl, 1, &err));
    t0 = g_get_monotonic_time();
    rc = register_until(r, "svc", "after", 15000, &err);
    g_test_message("registration worked again %" G_GINT64_FORMAT " ms after "
                   "member 2 restarted",
                   (g_get_monotonic_time() - t0) / 1000);
    g_assert_cmpint(rc, ==, 0);
    g_assert_cmpint(procreg_lookup(r, "svc", "before", &o, &err), ==, 0);
    g_assert_true(etcd_member_restart(&cl, 0, &err));
    procreg_close(r);
    g_free(all);
    g_free(prefix);
}

static gint64 current_revision(const char *url)
{
    char *r = etcd_post(url, "/v3/kv/range", "{\"key\":\"AA==\"}");
    g_assert_nonnull(r);
    const char *p = strstr(r, "\"revision\":\"");
    g_assert_nonnull(p);
    gint64 rev = g_ascii_strtoll(p + strlen("\"revision\":\""), NULL, 10);
    g_free(r);
    return rev;
}

static void test_compaction_resync(void)
{
    char *prefix = g_strdup_printf("/procreg-test/%s/compaction", tag);
    /* Wait for the whole cluster (the previous case restarted members). */
    gint64 until = g_get_monotonic_time() + 15 * G_USEC_PER_SEC;
    while (!(etcd_member_healthy(&cl, 0) && etcd_member_healthy(&cl, 1) &&
             etcd_member_healthy(&cl, 2)) &&
           g_get_monotonic_time() < until)
        g_usleep(50 * 1000);
    char *m1 = urls(0, -1, -1), *others = urls(1, 2, -1);
    procreg *a = open_on(m1, prefix, "host_id=ha,lease_ttl=20");
    procreg *b = open_on(others, prefix, "host_id=hb");
    recorder rec;
    recorder_start(&rec, a);
    GError *err = NULL;
    g_assert_cmpint(register_until(b, "svc", "r0", 5000, &err), ==, 0);
    g_assert_nonnull(recorder_wait(&rec, PROCREG_EVENT_REGISTERED, -1, "svc",
                                   "r0", 5000));

    /* a's only member goes away; b changes things and compacts. */
    etcd_member_stop(&cl, 0);
    g_assert_cmpint(register_until(b, "svc", "r1", 5000, &err), ==, 0);
    g_assert_cmpint(procreg_unregister(b, "svc", "r0", &err), ==, 0);
    char *url2 = etcd_member_url(&cl, 1);
    gint64 rev = current_revision(url2);
    char *body = g_strdup_printf("{\"revision\":\"%" G_GINT64_FORMAT
                                 "\",\"physical\":true}", rev);
    char *r = etcd_post(url2, "/v3/kv/compaction", body);
    g_assert_nonnull(r);
    g_test_message("compacted at %" G_GINT64_FORMAT ": %s", rev, r);
    g_free(r);
    g_free(body);
    g_free(url2);

    g_assert_true(etcd_member_restart(&cl, 0, &err));
    const rec_event *ev = recorder_wait(&rec, PROCREG_EVENT_REGISTERED, -1,
                                        "svc", "r1", 15000);
    if (ev == NULL) {
        char *d = recorder_dump(&rec);
        g_error("no event for r1 after the compaction; saw %s", d);
    }
    g_assert_nonnull(recorder_wait(&rec, PROCREG_EVENT_UNREGISTERED, -1, "svc",
                                   "r0", 2000));
    g_assert_cmpint(backend_stat_int(a, "compactions"), >=, 1);
    recorder_stop(&rec);
    procreg_close(a);
    procreg_close(b);
    g_free(m1);
    g_free(others);
    g_free(prefix);
}

int main(int argc, char **argv)
{
    etcd_harness_env(argv);
    etcd_harness_args(&argc, argv);
    g_test_init(&argc, &argv, NULL);
    etcd_cluster_start_or_exit(&cl, 3);
    tag = etcd_random_tag();
    g_test_add_func("/etcd-cluster/one-member-down", test_one_member_down);
    g_test_add_func("/etcd-cluster/no-quorum", test_no_quorum);
    g_test_add_func("/etcd-cluster/compaction-resync", test_compaction_resync);
    int rc = g_test_run();
    etcd_cluster_destroy(&cl);
    g_free(tag);
    return rc;
}
