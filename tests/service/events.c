/* Events: kinds, reasons, sequence order, scopes, GMainContext delivery,
 * unsubscribe against a callback in flight, callbacks that call back. */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>

typedef struct {
    uint64_t seq;
    procreg_event_kind kind;
    procreg_event_reason reason;
    char *ns, *name;
    uint64_t revision;
    bool external;
    GThread *thread;
} seen;

typedef struct {
    pthread_mutex_t lock;
    GArray *events; /* seen */
} recorder;

static void recorder_init(recorder *r)
{
    pthread_mutex_init(&r->lock, NULL);
    r->events = g_array_new(FALSE, TRUE, sizeof(seen));
}

static void recorder_clear(recorder *r)
{
    for (guint i = 0; i < r->events->len; i++) {
        seen *s = &g_array_index(r->events, seen, i);
        g_free(s->ns);
        g_free(s->name);
    }
    g_array_unref(r->events);
    pthread_mutex_destroy(&r->lock);
}

static guint recorded(recorder *r)
{
    pthread_mutex_lock(&r->lock);
    guint n = r->events->len;
    pthread_mutex_unlock(&r->lock);
    return n;
}

static void record(procreg *reg, const procreg_event *ev, gpointer data)
{
    recorder *r = data;
    g_assert_nonnull(ev->entry);
    g_assert_cmpstr(ev->entry->ns, ==, ev->ns);
    g_assert_cmpstr(ev->entry->name, ==, ev->name);
    seen s = {ev->seq, ev->kind, ev->reason, g_strdup(ev->ns),
              g_strdup(ev->name), ev->entry->revision, ev->external,
              g_thread_self()};
    pthread_mutex_lock(&r->lock);
    g_array_append_val(r->events, s);
    pthread_mutex_unlock(&r->lock);
}

static seen *at(recorder *r, guint i)
{
    return &g_array_index(r->events, seen, i);
}

static void test_kinds_reasons_order(fixture *f, gconstpointer spec)
{
    recorder all, ns, key;
    recorder_init(&all);
    recorder_init(&ns);
    recorder_init(&key);
    uint64_t s1, s2, s3;
    CHECK_RC(0, procreg_subscribe(f->reg, NULL, NULL, record, &all, NULL, NULL,
                                  &s1, &err_));
    CHECK_RC(0, procreg_subscribe(f->reg, f->ns, NULL, record, &ns, NULL, NULL,
                                  &s2, &err_));
    CHECK_RC(0, procreg_subscribe(f->reg, f->ns, "a", record, &key, NULL, NULL,
                                  &s3, &err_));
    char *other = NULL;
    CHECK_RC(0, procreg_namespace_new_test(f->reg, &other, &err_));
    uint64_t base = procreg_event_last_seq(f->reg);
    CHECK_RC(0, procreg_register(f->reg, f->ns, "a", NULL, NULL, NULL, &err_));
    CHECK_RC(0, procreg_register(f->reg, f->ns, "b", NULL, NULL, NULL, &err_));
    CHECK_RC(0, procreg_register(f->reg, other, "x", NULL, NULL, NULL, &err_));
    CHECK_RC(PROCREG_EEXISTS,
             procreg_register(f->reg, f->ns, "a", NULL, NULL, NULL, &err_));
    CHECK_RC(0, procreg_update_metadata(f->reg, f->ns, "a",
                                        g_variant_new_parsed("{'v': <1>}"),
                                        PROCREG_UPDATE_MERGE, &err_));
    CHECK_RC(0, procreg_unregister(f->reg, f->ns, "b", &err_));
    pid_t pid = spawn_child();
    procreg_owner o = {.pid = pid};
    CHECK_RC(0, procreg_register(f->reg, f->ns, "c", &o, NULL, NULL, &err_));
    kill_child(pid);
    g_assert_true(WAIT_UNTIL(recorded(&all) == 7, 1000));
    size_t dropped = 0;
    CHECK_RC(0, procreg_namespace_drop(f->reg, f->ns, &dropped, NULL, &err_));
    g_assert_cmpuint(dropped, ==, 1);
    CHECK_RC(0, procreg_namespace_drop(f->reg, other, &dropped, NULL, &err_));
    g_assert_cmpuint(dropped, ==, 1);

    struct {
        procreg_event_kind kind;
        procreg_event_reason reason;
        const char *name;
    } expect[] = {
        {PROCREG_EVENT_REGISTERED, PROCREG_REASON_NONE, "a"},
        {PROCREG_EVENT_REGISTERED, PROCREG_REASON_NONE, "b"},
        {PROCREG_EVENT_REGISTERED, PROCREG_REASON_NONE, "x"},
        {PROCREG_EVENT_UPDATED, PROCREG_REASON_NONE, "a"},
        {PROCREG_EVENT_UNREGISTERED, PROCREG_REASON_EXPLICIT, "b"},
        {PROCREG_EVENT_REGISTERED, PROCREG_REASON_NONE, "c"},
        {PROCREG_EVENT_UNREGISTERED, PROCREG_REASON_OWNER_EXITED, "c"},
        {PROCREG_EVENT_UNREGISTERED, PROCREG_REASON_NAMESPACE_DROPPED, "a"},
        {PROCREG_EVENT_UNREGISTERED, PROCREG_REASON_NAMESPACE_DROPPED, "x"},
    };
    guint n = G_N_ELEMENTS(expect);
    g_assert_true(WAIT_UNTIL(recorded(&all) == n, 1000));
    g_assert_true(WAIT_UNTIL(recorded(&ns) == n - 2, 1000));
    g_assert_true(WAIT_UNTIL(recorded(&key) == 3, 1000));
    /* The registry is this test's alone (a private directory): the
     * numbers are in order and gap-free. */
    g_assert_cmpuint(procreg_event_last_seq(f->reg), ==, base + n);
    for (guint i = 0; i < n; i++) {
        seen *s = at(&all, i);
        g_assert_cmpuint(s->seq, ==, base + 1 + i);
        g_assert_cmpint(s->kind, ==, expect[i].kind);
        g_assert_cmpint(s->reason, ==, expect[i].reason);
        g_assert_cmpstr(s->name, ==, expect[i].name);
        /* Everything was made here; the dead child's removal is nobody's
         * (never external), whether the core's monitor or the backend's
         * own reaper (lmdb) removed it. */
        g_assert_false(s->external);
        /* Never on the thread that made the change. */
        g_assert_true(s->thread != g_thread_self());
    }
    /* Revisions of one key increase along its events. */
    g_assert_cmpuint(at(&key, 0)->revision, <, at(&key, 1)->revision);
    uint64_t last = 0;
    for (guint i = 0; i < recorded(&ns); i++) {
        g_assert_cmpstr(at(&ns, i)->ns, ==, f->ns);
        g_assert_cmpuint(at(&ns, i)->seq, >, last);
        last = at(&ns, i)->seq;
    }
    for (guint i = 0; i < 3; i++)
        g_assert_cmpstr(at(&key, i)->name, ==, "a");
    g_assert_cmpint(procreg_unsubscribe(f->reg, s1), ==, 0);
    g_assert_cmpint(procreg_unsubscribe(f->reg, s2), ==, 0);
    g_assert_cmpint(procreg_unsubscribe(f->reg, s3), ==, 0);
    g_assert_cmpint(procreg_unsubscribe(f->reg, s3), ==, PROCREG_ENOTFOUND);
    recorder_clear(&all);
    recorder_clear(&ns);
    recorder_clear(&key);
    g_free(other);
}

static void test_bad_subscriptions(fixture *f, gconstpointer spec)
{
    recorder r;
    recorder_init(&r);
    uint64_t id;
    CHECK_RC(PROCREG_EINVAL, procreg_subscribe(f->reg, NULL, "x", record, &r,
                                               NULL, NULL, &id, &err_));
    CHECK_RC(PROCREG_EINVAL, procreg_subscribe(f->reg, "", NULL, record, &r,
                                               NULL, NULL, &id, &err_));
    CHECK_RC(PROCREG_EINVAL, procreg_subscribe(f->reg, f->ns, NULL, NULL, &r,
                                               NULL, NULL, &id, &err_));
    recorder_clear(&r);
}

/* Many writer threads: each subscriber to everything still sees gap-free
 * numbers, and per key the events alternate registered/unregistered. */
typedef struct {
    fixture *f;
    int id;
    int changes; /* successful registers and unregisters */
} writer;

#define WRITERS 4
#define WRITES 300

static gpointer write_thread(gpointer data)
{
    writer *w = data;
    for (int i = 0; i < WRITES; i++) {
        char name[32];
        g_snprintf(name, sizeof name, "k%d", i % 5); /* shared keys */
        if (procreg_register(w->f->reg, w->f->ns, name, NULL, NULL, NULL,
                             NULL) == 0) {
            w->changes++;
            if (procreg_unregister(w->f->reg, w->f->ns, name, NULL) == 0)
                w->changes++;
        }
    }
    return NULL;
}

static void test_concurrent_order(fixture *f, gconstpointer spec)
{
    recorder r, all;
    recorder_init(&r);
    recorder_init(&all);
    uint64_t id, id_all;
    CHECK_RC(0, procreg_subscribe(f->reg, f->ns, NULL, record, &r, NULL, NULL,
                                  &id, &err_));
    CHECK_RC(0, procreg_subscribe(f->reg, NULL, NULL, record, &all, NULL,
                                  NULL, &id_all, &err_));
    uint64_t base = procreg_event_last_seq(f->reg);
    writer w[WRITERS];
    GThread *t[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer){f, i, 0};
        t[i] = g_thread_new("writer", write_thread, &w[i]);
    }
    guint changes = 0;
    for (int i = 0; i < WRITERS; i++) {
        g_thread_join(t[i]);
        changes += (guint)w[i].changes;
    }
    g_assert_true(WAIT_UNTIL(recorded(&r) == changes, 2000));
    g_assert_true(WAIT_UNTIL(recorded(&all) == changes, 2000));
    GHashTable *present = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; i < recorded(&r); i++) {
        seen *s = at(&r, i);
        g_assert_cmpuint(s->seq, ==, base + 1 + i);
        bool was = g_hash_table_contains(present, s->name);
        if (s->kind == PROCREG_EVENT_REGISTERED) {
            g_assert_false(was);
            g_hash_table_add(present, s->name);
        } else {
            g_assert_cmpint(s->kind, ==, PROCREG_EVENT_UNREGISTERED);
            g_assert_true(was);
            g_hash_table_remove(present, s->name);
        }
    }
    g_assert_cmpuint(g_hash_table_size(present), ==, 0);
    g_hash_table_unref(present);
    procreg_unsubscribe(f->reg, id);
    procreg_unsubscribe(f->reg, id_all);
    recorder_clear(&r);
    recorder_clear(&all);
}

/* ---- GMainContext delivery ---- */

static void test_main_context(fixture *f, gconstpointer spec)
{
    GMainContext *ctx = g_main_context_new();
    recorder r;
    recorder_init(&r);
    uint64_t id;
    CHECK_RC(0, procreg_subscribe(f->reg, f->ns, NULL, record, &r, NULL, ctx,
                                  &id, &err_));
    uint64_t base = procreg_event_last_seq(f->reg);
    for (int i = 0; i < 20; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "m%02d", i);
        CHECK_RC(0, procreg_register(f->reg, f->ns, name, NULL, NULL, NULL,
                                     &err_));
    }
    /* Nothing runs until the context is iterated, here, on this thread. */
    g_usleep(20000);
    g_assert_cmpuint(recorded(&r), ==, 0);
    gint64 until = g_get_monotonic_time() + G_USEC_PER_SEC;
    while (recorded(&r) < 20 && g_get_monotonic_time() < until)
        g_main_context_iteration(ctx, FALSE);
    g_assert_cmpuint(recorded(&r), ==, 20);
    for (guint i = 0; i < 20; i++) {
        g_assert_cmpuint(at(&r, i)->seq, ==, base + 1 + i);
        g_assert_true(at(&r, i)->thread == g_thread_self());
    }
    /* Unsubscribed with events pending: they are dropped. */
    CHECK_RC(0, procreg_register(f->reg, f->ns, "late", NULL, NULL, NULL, &err_));
    g_usleep(20000);
    procreg_unsubscribe(f->reg, id);
    while (g_main_context_iteration(ctx, FALSE))
        ;
    g_assert_cmpuint(recorded(&r), ==, 20);
    recorder_clear(&r);
    g_main_context_unref(ctx);
}

/* ---- unsubscribe safety ---- */

typedef struct {
    pthread_mutex_t lock;
    bool inside, finished, destroyed, called_after;
    bool unsubscribed;
    procreg *reg;
    uint64_t id;
    int calls;
} slow_cb;

static void slow_callback(procreg *reg, const procreg_event *ev, gpointer data)
{
    slow_cb *s = data;
    pthread_mutex_lock(&s->lock);
    if (s->unsubscribed)
        s->called_after = true;
    s->inside = true;
    s->calls++;
    pthread_mutex_unlock(&s->lock);
    g_usleep(100000);
    pthread_mutex_lock(&s->lock);
    s->inside = false;
    s->finished = true;
    pthread_mutex_unlock(&s->lock);
}

static void slow_destroy(gpointer data)
{
    slow_cb *s = data;
    pthread_mutex_lock(&s->lock);
    g_assert_false(s->inside);
    s->destroyed = true;
    pthread_mutex_unlock(&s->lock);
}

static bool slow_inside(slow_cb *s)
{
    pthread_mutex_lock(&s->lock);
    bool in = s->inside;
    pthread_mutex_unlock(&s->lock);
    return in;
}

static void test_unsubscribe_in_flight(fixture *f, gconstpointer spec)
{
    slow_cb s = {.reg = f->reg};
    pthread_mutex_init(&s.lock, NULL);
    CHECK_RC(0, procreg_subscribe(f->reg, f->ns, NULL, slow_callback, &s,
                                  slow_destroy, NULL, &s.id, &err_));
    CHECK_RC(0, procreg_register(f->reg, f->ns, "a", NULL, NULL, NULL, &err_));
    CHECK_RC(0, procreg_register(f->reg, f->ns, "b", NULL, NULL, NULL, &err_));
    g_assert_true(WAIT_UNTIL(slow_inside(&s), 1000));
    g_assert_cmpint(procreg_unsubscribe(f->reg, s.id), ==, 0);
    pthread_mutex_lock(&s.lock);
    /* Returned only after the callback finished, destroy already ran. */
    g_assert_false(s.inside);
    g_assert_true(s.finished);
    g_assert_true(s.destroyed);
    s.unsubscribed = true;
    pthread_mutex_unlock(&s.lock);
    g_usleep(150000); /* "b" was queued: it must not be delivered */
    pthread_mutex_lock(&s.lock);
    g_assert_false(s.called_after);
    g_assert_cmpint(s.calls, ==, 1);
    pthread_mutex_unlock(&s.lock);
    pthread_mutex_destroy(&s.lock);
}

/* A callback that unsubscribes itself and calls the registry. */
typedef struct {
    pthread_mutex_t lock;
    procreg *reg;
    const char *ns;
    uint64_t id;
    int calls;
    int lookup_rc;
    bool destroyed;
} self_cb;

static void self_callback(procreg *reg, const procreg_event *ev, gpointer data)
{
    self_cb *s = data;
    procreg_owner o;
    int rc = procreg_lookup(reg, s->ns, ev->name, &o, NULL);
    /* Subscribing and unsubscribing from a callback work too. */
    procreg_unsubscribe(reg, s->id);
    pthread_mutex_lock(&s->lock);
    s->calls++;
    s->lookup_rc = rc;
    pthread_mutex_unlock(&s->lock);
}

static void self_destroy(gpointer data)
{
    self_cb *s = data;
    pthread_mutex_lock(&s->lock);
    s->destroyed = true;
    pthread_mutex_unlock(&s->lock);
}

static void test_callback_reenters(fixture *f, gconstpointer spec)
{
    self_cb s = {.reg = f->reg, .ns = f->ns, .lookup_rc = 99};
    pthread_mutex_init(&s.lock, NULL);
    uint64_t id;
    CHECK_RC(0, procreg_subscribe(f->reg, f->ns, NULL, self_callback, &s,
                                  self_destroy, NULL, &id, &err_));
    pthread_mutex_lock(&s.lock);
    s.id = id;
    pthread_mutex_unlock(&s.lock);
    CHECK_RC(0, procreg_register(f->reg, f->ns, "r1", NULL, NULL, NULL, &err_));
    CHECK_RC(0, procreg_register(f->reg, f->ns, "r2", NULL, NULL, NULL, &err_));
    g_assert_true(WAIT_UNTIL(({
        pthread_mutex_lock(&s.lock);
        bool d = s.destroyed;
        pthread_mutex_unlock(&s.lock);
        d;
    }), 1000));
    g_usleep(20000);
    pthread_mutex_lock(&s.lock);
    g_assert_cmpint(s.calls, ==, 1);
    g_assert_cmpint(s.lookup_rc, ==, 0);
    pthread_mutex_unlock(&s.lock);
    g_assert_cmpint(procreg_unsubscribe(f->reg, id), ==, PROCREG_ENOTFOUND);
    pthread_mutex_destroy(&s.lock);
}

/* Changes the backend reports (another process) arrive as events, through
 * the decorator's child host, whose callback sees them first. */
static void test_external_events(fixture *f, gconstpointer spec)
{
    if (strcmp(spec, "gate") != 0) {
        g_test_skip("needs the gate backend to simulate another process");
        return;
    }
    recorder r;
    recorder_init(&r);
    uint64_t id;
    CHECK_RC(0, procreg_subscribe(f->reg, f->ns, NULL, record, &r, NULL, NULL,
                                  &id, &err_));
    int notes = gate_notifications();
    procreg_owner self;
    procreg_owner_self(&self);
    gate_external_register(f->ns, "ext", &self);
    gate_external_unregister(f->ns, "ext");
    g_assert_true(WAIT_UNTIL(recorded(&r) == 2, 1000));
    g_assert_cmpint(gate_notifications(), ==, notes + 2);
    g_assert_cmpint(at(&r, 0)->kind, ==, PROCREG_EVENT_REGISTERED);
    g_assert_true(at(&r, 0)->external);
    g_assert_cmpint(at(&r, 1)->kind, ==, PROCREG_EVENT_UNREGISTERED);
    g_assert_cmpint(at(&r, 1)->reason, ==, PROCREG_REASON_EXPIRED);
    g_assert_true(at(&r, 1)->external);
    g_assert_cmpuint(at(&r, 1)->seq, ==, at(&r, 0)->seq + 1);
    procreg_unsubscribe(f->reg, id);
    recorder_clear(&r);
}

static void test_names(fixture *f, gconstpointer spec)
{
    g_assert_cmpstr(procreg_event_kind_name(PROCREG_EVENT_UPDATED), ==, "updated");
    g_assert_cmpstr(procreg_event_reason_name(PROCREG_REASON_OWNER_EXITED), ==,
                    "owner_exited");
    g_assert_cmpstr(procreg_event_reason_name((procreg_event_reason)77), ==,
                    "unknown");
}

void add_event_cases(void)
{
    add_case("events/kinds_reasons_order", test_kinds_reasons_order);
    add_case("events/bad_subscriptions", test_bad_subscriptions);
    add_case("events/concurrent_order", test_concurrent_order);
    add_case("events/main_context", test_main_context);
    add_case("events/unsubscribe_in_flight", test_unsubscribe_in_flight);
    add_case("events/callback_reenters", test_callback_reenters);
    add_case("events/external", test_external_events);
    add_case("events/names", test_names);
}
