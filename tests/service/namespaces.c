/* Namespaces: fresh test namespaces, drop with events, listing, and many
 * isolated namespaces used in parallel in one registry. */
#include "common.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void test_new_test(fixture *f, gconstpointer spec)
{
    GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                             NULL);
    for (int i = 0; i < 100; i++) {
        char *ns = NULL;
        CHECK_RC(0, procreg_namespace_new_test(i % 2 ? f->reg : NULL, &ns,
                                               &err_));
        g_assert_true(g_str_has_prefix(ns, PROCREG_NS_TEST_PREFIX));
        g_assert_true(procreg_namespace_is_test(ns));
        CHECK_RC(0, procreg_validate_name(ns, "namespace", &err_));
        g_assert_false(g_hash_table_contains(seen, ns));
        g_hash_table_add(seen, ns);
    }
    g_hash_table_unref(seen);
    g_assert_false(procreg_namespace_is_test(PROCREG_NS_PRODUCTION));
    g_assert_false(procreg_namespace_is_test("test-xyz"));
    g_assert_false(procreg_namespace_is_test(NULL));
}

typedef struct {
    pthread_mutex_t lock;
    int dropped;
    int other;
} drop_log;

static void on_drop(procreg *reg, const procreg_event *ev, gpointer data)
{
    drop_log *d = data;
    pthread_mutex_lock(&d->lock);
    if (ev->kind == PROCREG_EVENT_UNREGISTERED &&
        ev->reason == PROCREG_REASON_NAMESPACE_DROPPED)
        d->dropped++;
    else if (ev->kind == PROCREG_EVENT_UNREGISTERED)
        d->other++;
    pthread_mutex_unlock(&d->lock);
}

static int dropped_count(drop_log *d)
{
    pthread_mutex_lock(&d->lock);
    int n = d->dropped;
    pthread_mutex_unlock(&d->lock);
    return n;
}

static void test_drop(fixture *f, gconstpointer spec)
{
    drop_log d = {0};
    pthread_mutex_init(&d.lock, NULL);
    uint64_t id;
    CHECK_RC(0, procreg_subscribe(f->reg, f->ns, NULL, on_drop, &d, NULL, NULL,
                                  &id, &err_));
    char *keep = NULL;
    CHECK_RC(0, procreg_namespace_new_test(f->reg, &keep, &err_));
    for (int i = 0; i < 50; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        CHECK_RC(0, procreg_register(f->reg, f->ns, name, NULL, NULL, NULL,
                                     &err_));
    }
    CHECK_RC(0, procreg_register(f->reg, keep, "stays", NULL, NULL, NULL, &err_));
    size_t removed = 0;
    bool atomic = false;
    CHECK_RC(0, procreg_namespace_drop(f->reg, f->ns, &removed, &atomic, &err_));
    g_assert_cmpuint(removed, ==, 50);
    /* ghash drops in one step; the gate decorator has no drop slot, so
     * the core falls back to one unregister per entry. */
    if (strcmp(spec, "ghash") == 0)
        g_assert_true(atomic);
    if (strcmp(spec, "gate") == 0)
        g_assert_false(atomic);
    g_test_message("drop on %s: atomic=%d", (const char *)spec, atomic);
    size_t n = 1;
    CHECK_RC(0, procreg_count(f->reg, f->ns, &n, &err_));
    g_assert_cmpuint(n, ==, 0);
    CHECK_RC(0, procreg_count(f->reg, keep, &n, &err_));
    g_assert_cmpuint(n, ==, 1);
    g_assert_true(WAIT_UNTIL(dropped_count(&d) == 50, 1000));
    pthread_mutex_lock(&d.lock);
    g_assert_cmpint(d.other, ==, 0);
    pthread_mutex_unlock(&d.lock);
    /* Dropping an empty namespace removes nothing and is fine. */
    CHECK_RC(0, procreg_namespace_drop(f->reg, f->ns, &removed, NULL, &err_));
    g_assert_cmpuint(removed, ==, 0);
    CHECK_RC(PROCREG_EINVAL, procreg_namespace_drop(f->reg, "", &removed, NULL,
                                                    &err_));
    procreg_unsubscribe(f->reg, id);
    procreg_namespace_drop(f->reg, keep, NULL, NULL, NULL);
    g_free(keep);
    pthread_mutex_destroy(&d.lock);
}

static void test_list(fixture *f, gconstpointer spec)
{
    char *b = NULL;
    CHECK_RC(0, procreg_namespace_new_test(f->reg, &b, &err_));
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "n%d", i);
        CHECK_RC(0, procreg_register(f->reg, f->ns, name, NULL, NULL, NULL,
                                     &err_));
    }
    CHECK_RC(0, procreg_register(f->reg, b, "one", NULL, NULL, NULL, &err_));
    procreg_namespace_info *infos = NULL;
    size_t n = 0;
    CHECK_RC(0, procreg_namespace_list(f->reg, &infos, &n, &err_));
    size_t got_a = 0, got_b = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            g_assert_cmpint(strcmp(infos[i - 1].ns, infos[i].ns), <, 0);
        if (strcmp(infos[i].ns, f->ns) == 0)
            got_a = infos[i].entries;
        if (strcmp(infos[i].ns, b) == 0)
            got_b = infos[i].entries;
    }
    g_assert_cmpuint(got_a, ==, 3);
    g_assert_cmpuint(got_b, ==, 1);
    procreg_namespace_info_free(infos, n);
    procreg_namespace_drop(f->reg, b, NULL, NULL, NULL);
    g_free(b);
}

/* ---- parallel isolated namespaces ---- */

#define TENANTS 8
#define PER_TENANT 150

typedef struct {
    procreg *reg;
    char *ns;
    int failures;
    char first_failure[256];
    pthread_barrier_t *barrier;
} tenant;

#define FAIL(t, ...)                                                         \
    do {                                                                     \
        if ((t)->failures++ == 0)                                            \
            snprintf((t)->first_failure, sizeof (t)->first_failure,          \
                     __VA_ARGS__);                                           \
    } while (0)

static gpointer tenant_thread(gpointer data)
{
    tenant *t = data;
    pthread_barrier_wait(t->barrier);
    /* The same names in every namespace: isolation, not luck. */
    for (int i = 0; i < PER_TENANT; i++) {
        char name[16];
        snprintf(name, sizeof name, "svc%d", i);
        GVariant *meta = g_variant_new_parsed("{'tenant': <%s>}", t->ns);
        if (procreg_register(t->reg, t->ns, name, NULL, meta, NULL, NULL) != 0)
            FAIL(t, "register %s/%s", t->ns, name);
    }
    for (int round = 0; round < 3; round++) {
        size_t n = 0;
        if (procreg_count(t->reg, t->ns, &n, NULL) != 0 || n != PER_TENANT)
            FAIL(t, "count %zu", n);
        procreg_entry *all = NULL;
        if (procreg_list(t->reg, t->ns, &all, &n, NULL) != 0 || n != PER_TENANT)
            FAIL(t, "list %zu", n);
        for (size_t i = 0; i < n; i++) {
            const char *who = NULL;
            if (strcmp(all[i].ns, t->ns) != 0 ||
                !g_variant_lookup(all[i].metadata, "tenant", "&s", &who) ||
                strcmp(who, t->ns) != 0)
                FAIL(t, "foreign entry %s/%s", all[i].ns, all[i].name);
        }
        procreg_entries_free(all, n);
        GVariant *v = g_variant_new_string(t->ns);
        if (procreg_find_count(t->reg, NULL, "tenant", v, &n, NULL) != 0 ||
            n != PER_TENANT)
            FAIL(t, "find_count %zu", n);
    }
    size_t removed = 0;
    if (procreg_namespace_drop(t->reg, t->ns, &removed, NULL, NULL) != 0 ||
        removed != PER_TENANT)
        FAIL(t, "drop removed %zu", removed);
    return NULL;
}

static void test_parallel_isolation(fixture *f, gconstpointer spec)
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, TENANTS);
    tenant t[TENANTS];
    GThread *th[TENANTS];
    for (int i = 0; i < TENANTS; i++) {
        t[i] = (tenant){.reg = f->reg, .barrier = &barrier};
        CHECK_RC(0, procreg_namespace_new_test(f->reg, &t[i].ns, &err_));
        th[i] = g_thread_new("tenant", tenant_thread, &t[i]);
    }
    for (int i = 0; i < TENANTS; i++) {
        g_thread_join(th[i]);
        if (t[i].failures)
            g_error("tenant %s: %d failures; first: %s", t[i].ns,
                    t[i].failures, t[i].first_failure);
        size_t n = 1;
        CHECK_RC(0, procreg_count(f->reg, t[i].ns, &n, &err_));
        g_assert_cmpuint(n, ==, 0);
        g_free(t[i].ns);
    }
    pthread_barrier_destroy(&barrier);
}

void add_namespace_cases(void)
{
    add_case("namespaces/new_test", test_new_test);
    add_case("namespaces/drop", test_drop);
    add_case("namespaces/list", test_list);
    add_case("namespaces/parallel_isolation", test_parallel_isolation);
}
