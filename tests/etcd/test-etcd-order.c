/*
 * Events of one key arrive in revision order on etcd, whoever writes the
 * key.  The dangerous interleaving is a change made elsewhere (a
 * register, revision N) followed at once by one made here (its
 * unregister, N+1): a registry that reported its own change when the
 * write returned, and others' when its watch read them, told its
 * subscribers UNREGISTERED before REGISTERED.  With watch=true the watch
 * reports every change of the prefix, ours too, in revision order, and a
 * write returns once the watch passed its revision; each round below is
 * that interleaving, forced by a watch that always comes late (the
 * backend built with PROCREG_TEST_SLOW_WATCH: tests/etcd/meson.build).
 * Built with EXPECT_OUT_OF_ORDER, the same rounds run with watch=used,
 * which leaves our own changes to the core as before, and must find the
 * events out of order: proof that the test catches the bug.
 */
#include "etcd-harness.h"
#include "etcd-test-util.h"

#include <procreg/procreg.h>

#include <pthread.h>

#define ROUNDS 20
#define WAIT_US (20 * G_USEC_PER_SEC)

#ifdef EXPECT_OUT_OF_ORDER
#define WATCH "used,watch_namespaces=[order]"
#else
#define WATCH "true"
#endif

static etcd_cluster cluster;

typedef struct {
    pthread_mutex_t lock;
    GArray *kinds;     /* int: procreg_event_kind */
    GArray *revisions; /* uint64_t */
} seen;

static void on_event(procreg *reg, const procreg_event *ev, gpointer data)
{
    (void)reg;
    seen *s = data;
    int kind = ev->kind;
    pthread_mutex_lock(&s->lock);
    g_array_append_val(s->kinds, kind);
    g_array_append_val(s->revisions, ev->entry->revision);
    pthread_mutex_unlock(&s->lock);
}

static bool wait_for_count(seen *s, guint n)
{
    gint64 until = g_get_monotonic_time() + WAIT_US;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        guint have = s->kinds->len;
        pthread_mutex_unlock(&s->lock);
        if (have >= n)
            return true;
        if (g_get_monotonic_time() > until)
            return false;
        g_usleep(1000);
    }
}

/* REGISTERED only while the key is absent, UNREGISTERED of the revision
 * it holds. */
static bool in_order(seen *s, const char *who)
{
    uint64_t held = 0, last = 0;
    for (guint i = 0; i < s->kinds->len; i++) {
        int kind = g_array_index(s->kinds, int, i);
        uint64_t rev = g_array_index(s->revisions, uint64_t, i);
        bool ok = kind == PROCREG_EVENT_REGISTERED ? held == 0 && rev > last
                                                   : held == rev;
        if (!ok) {
            g_test_message("%s: event %u: %s of rev %" G_GUINT64_FORMAT
                           " while the key is %s: out of order",
                           who, i, procreg_event_kind_name(kind), rev,
                           held ? "held" : "absent");
            return false;
        }
        if (kind == PROCREG_EVENT_REGISTERED)
            held = last = rev;
        else
            held = 0;
    }
    return true;
}

static procreg *open_reg(const char *prefix)
{
    char *endpoints = etcd_cluster_endpoints(&cluster);
    procreg *reg = open_spec("etcd:endpoints=[%s],prefix=%s,watch=" WATCH,
                             endpoints, prefix);
    g_free(endpoints);
    return reg;
}

/* Two registries of this process, each its own writer with its own
 * watch: the key registered through one, removed at once through the
 * other, which must see REGISTERED before its own UNREGISTERED. */
static void test_two_writers(void)
{
    char *tag = etcd_random_tag();
    char *prefix = g_strdup_printf("/procreg-test/%s", tag);
    procreg *a = open_reg(prefix), *b = open_reg(prefix);
    seen sa = {.kinds = g_array_new(FALSE, FALSE, sizeof(int)),
               .revisions = g_array_new(FALSE, FALSE, sizeof(uint64_t))};
    pthread_mutex_init(&sa.lock, NULL);
    uint64_t id = 0;
    GError *err = NULL;
    if (procreg_subscribe(a, "order", NULL, on_event, &sa, NULL, NULL, &id,
                          &err) != 0)
        g_error("subscribe: %s", err->message);
    for (int i = 0; i < ROUNDS; i++) {
        g_assert_cmpint(procreg_register(b, "order", "k", NULL, NULL, NULL,
                                         NULL), ==, 0);
        g_assert_cmpint(procreg_unregister(a, "order", "k", NULL), ==, 0);
    }
    g_assert_true(wait_for_count(&sa, 2 * ROUNDS));
    procreg_unsubscribe(a, id);
    g_assert_cmpuint(sa.kinds->len, ==, 2 * ROUNDS);
#ifdef EXPECT_OUT_OF_ORDER
    g_assert_false(in_order(&sa, "the registry that removed"));
#else
    g_assert_true(in_order(&sa, "the registry that removed"));
#endif
    g_array_unref(sa.kinds);
    g_array_unref(sa.revisions);
    pthread_mutex_destroy(&sa.lock);
    procreg_close(a);
    procreg_close(b);
    g_free(prefix);
    g_free(tag);
}

int main(int argc, char **argv)
{
    etcd_harness_env(argv);
    etcd_harness_args(&argc, argv);
    g_test_init(&argc, &argv, NULL);
    etcd_cluster_start_or_exit(&cluster, 1);
    g_test_add_func("/etcd-order/two-writers", test_two_writers);
    int rc = g_test_run();
    etcd_cluster_destroy(&cluster);
    return rc;
}
