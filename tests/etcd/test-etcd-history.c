/*
 * The etcd backend's history slots (history_head, history_read), called
 * through its ops table on instances opened here, against a real etcd:
 *  - a mix of register, update, unregister, join and leave by two
 *    instances comes back in revision order with the kinds, reasons and
 *    own flags the changes had, at the positions the live watch gave the
 *    same changes (a registry with watch=true, subscribed);
 *  - a namespace drop's removals, one transaction, share its revision but
 *    not a position, live and replayed alike, and a watcher that handled
 *    the first resumes (procreg_subscribe_from(), another registry) with
 *    the others;
 *  - a namespace's history holds only its changes;
 *  - a position below the compaction revision, or inside it, is
 *    PROCREG_ECOMPACTED, its message naming the revision, and one above
 *    the store's too;
 *  - a history with no change of the prefix after the position, while
 *    keys outside it change, ends at once (etcd sends nothing for such a
 *    replay: a read that waited for an event would time out), and one
 *    read at the store's revision writes nothing.
 */
#include "etcd-harness.h"
#include "etcd-private.h"
#include "etcd-test-util.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

extern const procreg_backend_ops procreg_etcd_backend_ops;
#define OPS (&procreg_etcd_backend_ops)

#define WAIT_MS 20000

static etcd_cluster cluster;
static char *url;
static char *tag;
static int case_no;

static char *new_prefix(void)
{
    return g_strdup_printf("/procreg-test/%s/h%d", tag, ++case_no);
}

/* An instance of the etcd backend on @prefix with @extra options, its
 * notifications going nowhere. */
typedef struct {
    void *state;
    procreg_backend_host *host;
} raw;

static raw raw_open(const char *prefix, const char *extra)
{
    char *text = g_strdup_printf("etcd:endpoints=[%s],prefix=%s,"
                                 "timeout_ms=%d%s",
                                 url, prefix, WAIT_MS, extra);
    procreg_spec *spec = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_spec_parse(text, &spec, &err), ==, 0);
    raw r = {.host = procreg_backend_host_new_child(NULL, NULL, NULL)};
    g_assert_cmpint(OPS->init(spec, r.host, &r.state, &err), ==, 0);
    g_assert_no_error(err);
    procreg_spec_free(spec);
    g_free(text);
    return r;
}

static void raw_close(raw *r)
{
    OPS->destroy(r->state);
    procreg_backend_host_free(r->host);
}

static procreg_key *key(const char *ns, const char *name)
{
    procreg_key *k = NULL;
    g_assert_cmpint(procreg_key_new(ns, name, &k, NULL), ==, 0);
    return k;
}

static procreg_record self_record(void)
{
    procreg_record rec = {.registered_at = g_get_real_time()};
    procreg_owner_self(&rec.owner);
    return rec;
}

static uint64_t head_of(raw *r)
{
    uint64_t h = 0;
    GError *err = NULL;
    g_assert_cmpint(OPS->history_head(r->state, &h, &err), ==, 0);
    g_assert_no_error(err);
    return h;
}

/* history_read() that must succeed. */
static GArray *history(raw *r, const char *ns, uint64_t after,
                       uint64_t *head)
{
    GArray *out = procreg_change_array_new();
    GError *err = NULL;
    int rc = OPS->history_read(r->state, ns, after, out, head, &err);
    g_assert_no_error(err);
    g_assert_cmpint(rc, ==, 0);
    return out;
}

/* history_read() that must fail with @code; its message. */
static char *history_error(raw *r, uint64_t after, int code)
{
    GArray *out = procreg_change_array_new();
    GError *err = NULL;
    uint64_t head = 0;
    g_assert_cmpint(OPS->history_read(r->state, NULL, after, out, &head, &err),
                    ==, code);
    g_assert_nonnull(err);
    g_assert_cmpuint(out->len, ==, 0);
    g_array_unref(out);
    char *msg = g_strdup(err->message);
    g_error_free(err);
    return msg;
}

static void put_outside(const char *k)
{
    char *kb = g_base64_encode((const guchar *)k, strlen(k));
    char *body = g_strdup_printf("{\"key\":\"%s\",\"value\":\"eA==\"}", kb);
    g_free(etcd_post(url, "/v3/kv/put", body));
    g_free(body);
    g_free(kb);
}

/* What each change of the mix is: by whom, and what it was. */
typedef struct {
    bool by_raw; /* the raw instance made it (else the registry) */
    procreg_event_kind kind;
    procreg_event_reason reason;
    const char *ns, *name;
} expected;

static void test_mix(void)
{
    char *prefix = new_prefix();
    procreg *reg =
        open_spec("etcd:endpoints=[%s],prefix=%s,watch=true", url, prefix);
    GError *err = NULL;
    recorder rec;
    recorder_start(&rec, reg);
    raw a = raw_open(prefix, "");
    raw quiet = raw_open(prefix, ",watch=false");
    uint64_t h0 = head_of(&a);
    procreg_record self = self_record();
    procreg_owner me;
    procreg_owner_self(&me);

    procreg_key *x = key("ns1", "x"), *y = key("ns1", "y"),
                *g = key("ns1", "g"), *z = key("ns2", "z");
    g_assert_cmpint(procreg_register(reg, "ns1", "x", NULL, NULL, NULL, &err),
                    ==, 0);
    g_assert_cmpint(OPS->register_entry(a.state, y, &self, NULL, &err), ==, 0);
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "v", "i", 2);
    g_assert_cmpint(procreg_update_metadata(reg, "ns1", "x",
                                            g_variant_dict_end(&d),
                                            PROCREG_UPDATE_REPLACE, &err),
                    ==, 0);
    procreg_member ma = {0}, mr = {0};
    g_assert_cmpint(OPS->group_join(a.state, g, &self, &ma, &err), ==, 0);
    g_assert_cmpint(procreg_join(reg, "ns1", "g", NULL, NULL, &mr, &err), ==,
                    0);
    g_assert_cmpint(OPS->unregister(a.state, y, 0, NULL, &err), ==, 0);
    size_t removed = 0;
    g_assert_cmpint(procreg_leave_key(reg, g, mr.id, 0, &removed, &err), ==,
                    0);
    g_assert_cmpuint(removed, ==, 1);
    g_assert_cmpint(OPS->group_leave(a.state, g, ma.id, &me,
                                     PROCREG_REASON_EXPLICIT, NULL, &err),
                    ==, 1);
    g_assert_cmpint(procreg_unregister(reg, "ns1", "x", &err), ==, 0);
    g_assert_cmpint(OPS->register_entry(a.state, z, &self, NULL, &err), ==, 0);
    g_assert_no_error(err);

    static const expected want[] = {
        {false, PROCREG_EVENT_REGISTERED, PROCREG_REASON_NONE, "ns1", "x"},
        {true, PROCREG_EVENT_REGISTERED, PROCREG_REASON_NONE, "ns1", "y"},
        {false, PROCREG_EVENT_UPDATED, PROCREG_REASON_NONE, "ns1", "x"},
        {true, PROCREG_EVENT_JOINED, PROCREG_REASON_NONE, "ns1", "g"},
        {false, PROCREG_EVENT_JOINED, PROCREG_REASON_NONE, "ns1", "g"},
        {true, PROCREG_EVENT_UNREGISTERED, PROCREG_REASON_EXPLICIT, "ns1",
         "y"},
        {false, PROCREG_EVENT_LEFT, PROCREG_REASON_EXPLICIT, "ns1", "g"},
        {true, PROCREG_EVENT_LEFT, PROCREG_REASON_EXPLICIT, "ns1", "g"},
        {false, PROCREG_EVENT_UNREGISTERED, PROCREG_REASON_EXPLICIT, "ns1",
         "x"},
        {true, PROCREG_EVENT_REGISTERED, PROCREG_REASON_NONE, "ns2", "z"},
    };
    const guint n = G_N_ELEMENTS(want);
    /* The registry's watch reports the last change, and every one before
     * it. */
    g_assert_nonnull(recorder_wait(&rec, PROCREG_EVENT_REGISTERED, -1, "ns2",
                                   "z", WAIT_MS));

    uint64_t head = 0;
    GArray *all = history(&a, NULL, h0, &head);
    char *live = recorder_dump(&rec);
    pthread_mutex_lock(&rec.m);
    if (all->len != n || rec.events->len != n)
        g_error("history: %u changes, live: %u (%s), expected %u", all->len,
                rec.events->len, live, n);
    g_free(live);
    uint64_t last = h0;
    for (guint i = 0; i < n; i++) {
        const procreg_change *c = &g_array_index(all, procreg_change, i);
        const rec_event *e = rec.events->pdata[i];
        g_test_message("%u: %s %s %s/%s at %" G_GUINT64_FORMAT "%s", i,
                       procreg_event_kind_name(c->kind),
                       procreg_event_reason_name(c->reason), c->entry.ns,
                       c->entry.name, c->position, c->own ? " own" : "");
        g_assert_cmpint(c->kind, ==, want[i].kind);
        g_assert_cmpint(c->reason, ==, want[i].reason);
        g_assert_cmpstr(c->entry.ns, ==, want[i].ns);
        g_assert_cmpstr(c->entry.name, ==, want[i].name);
        g_assert_true(c->own == want[i].by_raw);
        /* In commit order, each change alone in its revision here: the
         * revision's first. */
        g_assert_cmpuint(c->position, >, last);
        g_assert_cmpuint(c->position, ==,
                         procreg_etcd_position(
                             procreg_etcd_position_revision(c->position), 0));
        last = c->position;
        /* The live event of the same change: same position and kind. */
        g_assert_cmpint(e->kind, ==, c->kind);
        g_assert_cmpint(e->reason, ==, c->reason);
        g_assert_cmpstr(e->name, ==, c->entry.name);
        g_assert_cmpuint(e->position, ==, c->position);
        g_assert_true(e->external == want[i].by_raw);
    }
    pthread_mutex_unlock(&rec.m);
    g_assert_cmpuint(head, >=, last);

    /* Another instance reads the same history, none of it its own. */
    uint64_t qhead = 0;
    GArray *q = history(&quiet, NULL, h0, &qhead);
    g_assert_cmpuint(q->len, ==, n);
    for (guint i = 0; i < n; i++) {
        const procreg_change *c = &g_array_index(q, procreg_change, i);
        g_assert_cmpuint(c->position, ==,
                         g_array_index(all, procreg_change, i).position);
        g_assert_false(c->own);
    }
    g_array_unref(q);

    /* One namespace's, and from a later position. */
    GArray *ns2 = history(&a, "ns2", h0, &head);
    g_assert_cmpuint(ns2->len, ==, 1);
    g_assert_cmpstr(g_array_index(ns2, procreg_change, 0).entry.name, ==, "z");
    g_array_unref(ns2);
    uint64_t mid = g_array_index(all, procreg_change, 4).position;
    GArray *tail = history(&a, NULL, mid, &head);
    g_assert_cmpuint(tail->len, ==, n - 5);
    g_assert_cmpuint(g_array_index(tail, procreg_change, 0).position, ==,
                     g_array_index(all, procreg_change, 5).position);
    g_array_unref(tail);

    /* The sentinel the reads wrote is no entry. */
    size_t count = 99;
    g_assert_cmpint(OPS->count(a.state, NULL, &count, &err), ==, 0);
    g_assert_cmpuint(count, ==, 1);

    g_array_unref(all);
    procreg_key_unref(x);
    procreg_key_unref(y);
    procreg_key_unref(g);
    procreg_key_unref(z);
    raw_close(&quiet);
    raw_close(&a);
    recorder_stop(&rec);
    procreg_close(reg);
    g_free(prefix);
}

/* A namespace drop of three entries: one transaction, three changes of
 * one revision, indexed 0, 1, 2 as the watch reports them; the history
 * gives the same positions, and resuming after the first gives the
 * other two. */
static void test_drop(void)
{
    char *prefix = new_prefix();
    procreg *reg =
        open_spec("etcd:endpoints=[%s],prefix=%s,watch=true", url, prefix);
    GError *err = NULL;
    recorder rec;
    recorder_start(&rec, reg);
    raw quiet = raw_open(prefix, ",watch=false");
    static const char *const names[] = {"a", "b", "c"};
    const guint n = G_N_ELEMENTS(names);
    for (guint i = 0; i < n; i++)
        g_assert_cmpint(procreg_register(reg, "drop", names[i], NULL, NULL,
                                         NULL, &err),
                        ==, 0);
    uint64_t h0 = head_of(&quiet);
    size_t removed = 0;
    g_assert_cmpint(procreg_namespace_drop(reg, "drop", &removed, NULL, &err),
                    ==, 0);
    g_assert_no_error(err);
    g_assert_cmpuint(removed, ==, n);
    for (guint i = 0; i < n; i++)
        g_assert_nonnull(recorder_wait(&rec, PROCREG_EVENT_UNREGISTERED,
                                       PROCREG_REASON_NAMESPACE_DROPPED,
                                       "drop", names[i], WAIT_MS));

    /* Live: the registrations, then the removals, one revision's. */
    uint64_t live[3];
    char *live_name[3];
    pthread_mutex_lock(&rec.m);
    g_assert_cmpuint(rec.events->len, ==, 2 * n);
    int64_t rev = procreg_etcd_position_revision(
        ((const rec_event *)rec.events->pdata[n])->position);
    for (guint i = 0; i < n; i++) {
        const rec_event *e = rec.events->pdata[n + i];
        g_assert_cmpint(e->kind, ==, PROCREG_EVENT_UNREGISTERED);
        g_assert_cmpuint(e->position, ==, procreg_etcd_position(rev, i));
        live[i] = e->position;
        live_name[i] = g_strdup(e->name);
    }
    pthread_mutex_unlock(&rec.m);

    /* The history: the same changes at the same positions. */
    uint64_t head = 0;
    GArray *all = history(&quiet, "drop", h0, &head);
    g_assert_cmpuint(all->len, ==, n);
    for (guint i = 0; i < n; i++) {
        const procreg_change *c = &g_array_index(all, procreg_change, i);
        g_assert_cmpint(c->kind, ==, PROCREG_EVENT_UNREGISTERED);
        g_assert_cmpint(c->reason, ==, PROCREG_REASON_NAMESPACE_DROPPED);
        g_assert_cmpstr(c->entry.name, ==, live_name[i]);
        g_assert_cmpuint(c->position, ==, live[i]);
    }
    g_assert_cmpuint(head, >, live[n - 1]);
    g_array_unref(all);
    /* After the first, the history holds the other two. */
    GArray *rest = history(&quiet, "drop", live[0], &head);
    g_assert_cmpuint(rest->len, ==, n - 1);
    g_assert_cmpuint(g_array_index(rest, procreg_change, 0).position, ==,
                     live[1]);
    g_array_unref(rest);

    /* A watcher that handled the first removal resumes in another
     * registry: the other two, then what comes live, and nothing else. */
    procreg *other =
        open_spec("etcd:endpoints=[%s],prefix=%s,watch=true", url, prefix);
    recorder resumed;
    recorder_start_from(&resumed, other, "drop", live[0]);
    g_assert_cmpint(procreg_register(reg, "drop", "later", NULL, NULL, NULL,
                                     &err),
                    ==, 0);
    g_assert_nonnull(recorder_wait(&resumed, PROCREG_EVENT_REGISTERED, -1,
                                   "drop", "later", WAIT_MS));
    char *seen = recorder_dump(&resumed);
    pthread_mutex_lock(&resumed.m);
    if (resumed.events->len != n)
        g_error("resumed after %" G_GUINT64_FORMAT ": %s", live[0], seen);
    g_free(seen);
    for (guint i = 1; i < n; i++) {
        const rec_event *e = resumed.events->pdata[i - 1];
        g_assert_cmpint(e->kind, ==, PROCREG_EVENT_UNREGISTERED);
        g_assert_cmpstr(e->name, ==, live_name[i]);
        g_assert_cmpuint(e->position, ==, live[i]);
    }
    pthread_mutex_unlock(&resumed.m);

    recorder_stop(&resumed);
    procreg_close(other);
    for (guint i = 0; i < n; i++)
        g_free(live_name[i]);
    raw_close(&quiet);
    recorder_stop(&rec);
    procreg_close(reg);
    g_free(prefix);
}

/* Nothing of the prefix changes after the position while other keys do:
 * the replay holds no event, and ends all the same. */
static void test_empty(void)
{
    char *prefix = new_prefix();
    raw a = raw_open(prefix, ",watch=false");
    procreg_record self = self_record();
    procreg_key *k = key("ns", "one");
    GError *err = NULL;
    g_assert_cmpint(OPS->register_entry(a.state, k, &self, NULL, &err), ==, 0);
    uint64_t h0 = head_of(&a);
    for (int i = 0; i < 5; i++) {
        char *other = g_strdup_printf("/procreg-test/%s/outside-%d", tag, i);
        put_outside(other);
        g_free(other);
    }
    uint64_t h1 = head_of(&a);
    g_assert_cmpint(procreg_etcd_position_revision(h1), >=,
                    procreg_etcd_position_revision(h0) + 5);
    uint64_t head = 0;
    GArray *out = history(&a, NULL, h0, &head);
    g_assert_cmpuint(out->len, ==, 0);
    g_assert_cmpuint(head, >, h1);
    g_array_unref(out);

    /* At the store's revision: nothing to read, nothing written. */
    uint64_t h2 = head_of(&a);
    out = history(&a, NULL, h2, &head);
    g_assert_cmpuint(out->len, ==, 0);
    g_assert_cmpuint(head, ==, h2);
    g_assert_cmpuint(head_of(&a), ==, h2);
    g_array_unref(out);

    /* Above it: a history that restarted. */
    uint64_t ahead =
        procreg_etcd_position(procreg_etcd_position_revision(h2) + 1, 0);
    char *msg = history_error(&a, ahead, PROCREG_ECOMPACTED);
    g_assert_nonnull(strstr(msg, "ahead of the store"));
    g_free(msg);
    procreg_key_unref(k);
    raw_close(&a);
    g_free(prefix);
}

/* Last: a compaction holds for the whole cluster. */
static void test_compacted(void)
{
    char *prefix = new_prefix();
    raw a = raw_open(prefix, ",watch=false");
    procreg_record self = self_record();
    GError *err = NULL;
    uint64_t h0 = head_of(&a);
    for (int i = 0; i < 4; i++) {
        char name[8];
        g_snprintf(name, sizeof name, "k%d", i);
        procreg_key *k = key("ns", name);
        g_assert_cmpint(OPS->register_entry(a.state, k, &self, NULL, &err), ==,
                        0);
        procreg_key_unref(k);
    }
    uint64_t c = head_of(&a);
    int64_t crev = procreg_etcd_position_revision(c);
    procreg_key *k0 = key("ns", "k0");
    g_assert_cmpint(OPS->unregister(a.state, k0, 0, NULL, &err), ==, 0);
    procreg_key_unref(k0);
    char *body = g_strdup_printf("{\"revision\":\"%" G_GINT64_FORMAT
                                 "\",\"physical\":true}",
                                 (gint64)crev);
    char *reply = etcd_post(url, "/v3/kv/compaction", body);
    g_assert_nonnull(reply);
    g_free(reply);
    g_free(body);

    char *want = g_strdup_printf("compacted its history at revision %"
                                 G_GINT64_FORMAT, (gint64)crev);
    /* Below the compaction; just below it (a removal at the compaction
     * revision itself is not kept); inside its revision (the rest of that
     * revision may have lost a removal). */
    uint64_t afters[] = {h0, procreg_etcd_position(crev - 1, ETCD_INDEX_ALL),
                         procreg_etcd_position(crev, 0)};
    for (guint i = 0; i < G_N_ELEMENTS(afters); i++) {
        char *msg = history_error(&a, afters[i], PROCREG_ECOMPACTED);
        if (strstr(msg, want) == NULL)
            g_error("after %" G_GUINT64_FORMAT ": %s", afters[i], msg);
        g_free(msg);
    }
    g_free(want);
    /* At it: what came after is all kept. */
    uint64_t head = 0;
    GArray *out = history(&a, NULL, c, &head);
    g_assert_cmpuint(out->len, ==, 1);
    g_assert_cmpint(g_array_index(out, procreg_change, 0).kind, ==,
                    PROCREG_EVENT_UNREGISTERED);
    g_assert_cmpuint(g_array_index(out, procreg_change, 0).position, ==,
                     procreg_etcd_position(crev + 1, 0));
    g_array_unref(out);
    raw_close(&a);
    g_free(prefix);
}

int main(int argc, char **argv)
{
    etcd_harness_env(argv);
    etcd_harness_args(&argc, argv);
    g_test_init(&argc, &argv, NULL);
    etcd_harness_require();
    etcd_cluster_start_or_exit(&cluster, 1);
    url = etcd_member_url(&cluster, 0);
    tag = etcd_random_tag();
    g_test_add_func("/etcd-history/mix", test_mix);
    g_test_add_func("/etcd-history/drop", test_drop);
    g_test_add_func("/etcd-history/empty", test_empty);
    g_test_add_func("/etcd-history/compacted", test_compacted);
    int rc = g_test_run();
    g_free(tag);
    g_free(url);
    etcd_cluster_destroy(&cluster);
    return rc;
}
