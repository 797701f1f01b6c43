/*
 * Groups on the etcd backend, where etcd differs from the other backends
 * (the compliance suite runs the common cases), against a real
 * single-member etcd this program starts:
 *   - a member on another host's lease goes when that lease expires
 *     (its registry closed: nobody keeps the lease alive), reported with
 *     reason expired, through watch=true and watch=used alike;
 *   - a join or a leave held by a hanging member and applied late, after
 *     its repetition and a change by another writer, changes nothing;
 *   - members never show among entries, nor entries among members;
 *   - a leave of more members than one transaction takes.
 * Skipped (exit 77) without an etcd binary.
 */
#include "etcd-harness.h"
#include "etcd-test-util.h"

#include <procreg/backend.h>

#include <string.h>

static etcd_cluster cluster;
static char *url;  /* the member's client URL */
static char *tag;  /* this run's random prefix component */
static int case_no;

static char *new_prefix(void)
{
    return g_strdup_printf("/procreg-test/%s/g%d", tag, ++case_no);
}

static procreg *open_reg(const char *prefix, const char *extra)
{
    return open_spec("etcd:endpoints=[%s],prefix=%s,%s", url, prefix, extra);
}

static size_t group_count(procreg *reg, const char *ns, const char *group)
{
    size_t n = 0;
    GError *err = NULL;
    g_assert_cmpint(procreg_group_count(reg, ns, group, &n, &err), ==, 0);
    g_assert_no_error(err);
    return n;
}

/* Host A joins and its registry closes without leaving (a crash, as far
 * as etcd can tell): B, another host, sees the join, then the member go
 * when A's lease expires, reason expired, within the TTL and a margin. */
static void test_other_host_expiry(gconstpointer watch)
{
    char *prefix = new_prefix();
    char *bopts = g_strdup_printf("host_id=host-b,watch=%s",
                                  (const char *)watch);
    procreg *b = open_reg(prefix, bopts);
    recorder rb;
    recorder_start(&rb, b);
    GError *err = NULL;
    /* watch=used: B uses the namespace before A joins. */
    g_assert_cmpuint(group_count(b, "jobs", "resize"), ==, 0);
    procreg *a = open_reg(prefix, "host_id=host-a,lease_ttl=2");
    procreg_member joined = {0};
    g_assert_cmpint(procreg_join(a, "jobs", "resize", NULL,
                                 g_variant_new_parsed("{'q': <'w1'>}"),
                                 &joined, &err),
                    ==, 0);
    const rec_event *ev = recorder_wait(&rb, PROCREG_EVENT_JOINED, -1, "jobs",
                                        "resize", 5000);
    g_assert_nonnull(ev);
    g_assert_true(ev->external);
    g_assert_cmpuint(ev->revision, ==, joined.id);
    g_assert_cmpuint(group_count(b, "jobs", "resize"), ==, 1);
    gint64 t0 = g_get_monotonic_time();
    procreg_close(a);
    ev = recorder_wait(&rb, PROCREG_EVENT_LEFT, -1, "jobs", "resize", 8000);
    gint64 took = (g_get_monotonic_time() - t0) / 1000;
    g_assert_nonnull(ev);
    g_test_message("host A's member left after %" G_GINT64_FORMAT
                   " ms (lease TTL 2 s)", took);
    g_assert_cmpint(ev->reason, ==, PROCREG_REASON_EXPIRED);
    g_assert_cmpuint(ev->revision, ==, joined.id);
    g_assert_cmpuint(group_count(b, "jobs", "resize"), ==, 0);
    procreg_member_clear(&joined);
    recorder_stop(&rb);
    procreg_close(b);
    g_free(bopts);
    g_free(prefix);
}

/* A join, then a leave, each held by the proxy in front of the first
 * endpoint and applied by the member behind the second; another instance
 * then changes the group (removes the joined member; joins one of the
 * same owner), and the held attempt reaches etcd late: it changes
 * nothing.  A join compares the group's marker, which the removal moved;
 * a leave pins the revision of each member it removes. */
static void test_late_repetition(void)
{
    char *prefix = new_prefix();
    holding_proxy hp;
    holding_proxy_start(&hp, &cluster, prefix);
    procreg_record record = {.registered_at = g_get_real_time()};
    procreg_owner_self(&record.owner);
    GError *err = NULL;
    procreg_key *key = NULL;
    g_assert_cmpint(procreg_key_new("svc", "g", &key, NULL), ==, 0);
    for (int op = 0; op < 2; op++) {
        procreg_backend *b = holding_proxy_open(&hp);
        procreg_member mine = {0};
        if (op == 1)
            g_assert_cmpint(procreg_backend_group_join(b, key, &record, &mine,
                                                       &err),
                            ==, 0);
        holding_proxy_hold(&hp);
        procreg_member m = {0};
        int rc = op == 0 ? procreg_backend_group_join(b, key, &record, &m,
                                                      &err)
                         : procreg_backend_group_leave(
                               b, key, 0, &record.owner,
                               PROCREG_REASON_EXPLICIT, NULL, &err);
        g_assert_no_error(err);
        g_assert_cmpint(rc, ==, op == 0 ? 0 : 1);
        /* The group changes: the joined member forced away, or a new
         * member of the same owner. */
        procreg_member now = {0};
        rc = op == 0 ? procreg_backend_group_leave(hp.other, key, m.id, NULL,
                                                   PROCREG_REASON_FORCED, NULL,
                                                   &err)
                     : procreg_backend_group_join(hp.other, key, &record, &now,
                                                  &err);
        g_assert_no_error(err);
        g_assert_cmpint(rc, ==, op == 0 ? 1 : 0);
        /* The member behind the proxy resumes: the held attempt reaches
         * etcd. */
        holding_proxy_release(&hp);
        GArray *after = procreg_member_array_new();
        g_assert_cmpint(procreg_backend_group_members(hp.other, key, after,
                                                      &err),
                        ==, 0);
        if (op == 0) {
            g_assert_cmpuint(after->len, ==, 0);
        } else {
            g_assert_cmpuint(after->len, ==, 1);
            g_assert_cmpuint(g_array_index(after, procreg_member, 0).id, ==,
                             now.id);
            g_assert_cmpint(procreg_backend_group_leave(
                                hp.other, key, now.id, NULL,
                                PROCREG_REASON_EXPLICIT, NULL, &err),
                            ==, 1);
        }
        g_array_unref(after);
        procreg_member_clear(&m);
        procreg_member_clear(&now);
        procreg_member_clear(&mine);
        procreg_backend_close(b);
    }
    procreg_key_unref(key);
    holding_proxy_stop(&hp);
    g_free(prefix);
}

/* A group and an entry of one name, in one namespace: neither shows in
 * the other's reads, counts or drops; a member's id is its join's
 * revision, above the entry's. */
static void test_apart_from_entries(void)
{
    char *prefix = new_prefix();
    procreg *reg = open_reg(prefix, "host_id=host-a");
    GError *err = NULL;
    procreg_entry e = {0};
    g_assert_cmpint(procreg_register(reg, "ns", "x", NULL, NULL, &e, &err), ==,
                    0);
    procreg_member m = {0};
    g_assert_cmpint(procreg_join(reg, "ns", "x", NULL, NULL, &m, &err), ==, 0);
    g_assert_cmpint(procreg_join(reg, "ns", "y", NULL, NULL, NULL, &err), ==,
                    0);
    g_assert_cmpuint(m.id, >, e.revision);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, "ns", &n, &err), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    g_assert_cmpint(procreg_count(reg, NULL, &n, &err), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    procreg_group_info *groups = NULL;
    g_assert_cmpint(procreg_groups(reg, "ns", &groups, &n, &err), ==, 0);
    g_assert_cmpuint(n, ==, 2);
    for (size_t i = 0; i < n; i++)
        g_assert_cmpuint(groups[i].members, ==, 1);
    procreg_group_info_free(groups, n);
    g_assert_cmpint(procreg_groups(reg, NULL, &groups, &n, &err), ==, 0);
    g_assert_cmpuint(n, ==, 2);
    procreg_group_info_free(groups, n);
    /* The drop takes the members too (the core removes them, as on the
     * other backends). */
    size_t removed = 0;
    g_assert_cmpint(procreg_namespace_drop(reg, "ns", &removed, NULL, &err),
                    ==, 0);
    g_assert_no_error(err);
    g_assert_cmpuint(group_count(reg, "ns", "x"), ==, 0);
    g_assert_cmpuint(group_count(reg, "ns", "y"), ==, 0);
    procreg_member_clear(&m);
    procreg_entry_clear(&e);
    procreg_close(reg);
    g_free(prefix);
}

/* A leave of more members than one transaction takes (48: etcd takes 128
 * operations by default) removes them all, in several. */
static void test_leave_many(void)
{
    char *prefix = new_prefix();
    procreg *reg = open_reg(prefix, "host_id=host-a,watch=false");
    GError *err = NULL;
    for (int i = 0; i < 100; i++)
        g_assert_cmpint(procreg_join(reg, "ns", "many", NULL, NULL, NULL,
                                     &err),
                        ==, 0);
    g_assert_cmpuint(group_count(reg, "ns", "many"), ==, 100);
    size_t removed = 0;
    g_assert_cmpint(procreg_leave(reg, "ns", "many", &removed, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpuint(removed, ==, 100);
    g_assert_cmpuint(group_count(reg, "ns", "many"), ==, 0);
    procreg_close(reg);
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
    g_test_add_data_func("/etcd-groups/other-host-expiry/watch-true", "true",
                         test_other_host_expiry);
    g_test_add_data_func("/etcd-groups/other-host-expiry/watch-used", "used",
                         test_other_host_expiry);
    g_test_add_func("/etcd-groups/late-repetition", test_late_repetition);
    g_test_add_func("/etcd-groups/apart-from-entries", test_apart_from_entries);
    g_test_add_func("/etcd-groups/leave-many", test_leave_many);
    int rc = g_test_run();
    etcd_cluster_destroy(&cluster);
    g_free(url);
    g_free(tag);
    return rc;
}
