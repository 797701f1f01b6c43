/* Telemetry: what handlers see, masks, detach against handlers in flight,
 * calls from inside a handler. */
#include "common.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

typedef struct {
    procreg_op op;
    int result;
    uint64_t duration_ns;
    char *ns, *name;
    char backend[32];
    procreg_event_reason reason;
    uint64_t count;
} tel_seen;

typedef struct {
    pthread_mutex_t lock;
    GArray *seen;
    bool destroyed;
} tel_log;

static void tel_init(tel_log *t)
{
    pthread_mutex_init(&t->lock, NULL);
    t->seen = g_array_new(FALSE, TRUE, sizeof(tel_seen));
}

static void tel_clear(tel_log *t)
{
    for (guint i = 0; i < t->seen->len; i++) {
        g_free(g_array_index(t->seen, tel_seen, i).ns);
        g_free(g_array_index(t->seen, tel_seen, i).name);
    }
    g_array_unref(t->seen);
    pthread_mutex_destroy(&t->lock);
}

static void tel_handler(procreg *reg, const procreg_telemetry_event *ev,
                        gpointer data)
{
    tel_log *t = data;
    tel_seen s = {ev->op, ev->result, ev->duration_ns, g_strdup(ev->ns),
                  g_strdup(ev->name), "", ev->reason, ev->count};
    g_strlcpy(s.backend, ev->backend, sizeof s.backend);
    pthread_mutex_lock(&t->lock);
    g_array_append_val(t->seen, s);
    pthread_mutex_unlock(&t->lock);
}

static void tel_destroy(gpointer data)
{
    tel_log *t = data;
    pthread_mutex_lock(&t->lock);
    t->destroyed = true;
    pthread_mutex_unlock(&t->lock);
}

static guint tel_count(tel_log *t)
{
    pthread_mutex_lock(&t->lock);
    guint n = t->seen->len;
    pthread_mutex_unlock(&t->lock);
    return n;
}

static tel_seen *tel_at(tel_log *t, guint i)
{
    return &g_array_index(t->seen, tel_seen, i);
}

static void test_handler_sees_ops(fixture *f, gconstpointer spec)
{
    tel_log t;
    tel_init(&t);
    uint64_t id;
    CHECK_RC(PROCREG_EINVAL, procreg_telemetry_attach(f->reg, 0, tel_handler,
                                                      &t, NULL, &id, &err_));
    CHECK_RC(PROCREG_EINVAL, procreg_telemetry_attach(f->reg, PROCREG_OP_ALL,
                                                      NULL, &t, NULL, &id,
                                                      &err_));
    CHECK_RC(0, procreg_telemetry_attach(f->reg,
                                         PROCREG_OP_BIT(PROCREG_OP_LOOKUP) |
                                             PROCREG_OP_BIT(PROCREG_OP_REGISTER) |
                                             PROCREG_OP_BIT(PROCREG_OP_UNREGISTER) |
                                             PROCREG_OP_BIT(PROCREG_OP_UPDATE) |
                                             PROCREG_OP_BIT(PROCREG_OP_CLEANUP) |
                                             PROCREG_OP_BIT(PROCREG_OP_WAIT),
                                         tel_handler, &t, tel_destroy, &id,
                                         &err_));
    procreg_owner o;
    CHECK_RC(0, procreg_register(f->reg, f->ns, "t", NULL, NULL, NULL, &err_));
    CHECK_RC(0, procreg_lookup(f->reg, f->ns, "t", &o, &err_));
    CHECK_RC(PROCREG_ENOTFOUND, procreg_lookup(f->reg, f->ns, "nope", &o, &err_));
    CHECK_RC(0, procreg_update_metadata(f->reg, f->ns, "t", NULL,
                                        PROCREG_UPDATE_REPLACE, &err_));
    CHECK_RC(0, procreg_wait_for(f->reg, f->ns, "t", 10, NULL, NULL, &err_));
    CHECK_RC(0, procreg_unregister(f->reg, f->ns, "t", &err_));
    size_t n;
    CHECK_RC(0, procreg_count(f->reg, f->ns, &n, &err_)); /* not in mask */
    /* The dead child's entry: one CLEANUP whoever removed it (the core's
     * monitor, or a backend that reaps dead owners itself, lmdb). */
    pid_t pid = spawn_child();
    procreg_owner child = {.pid = pid};
    CHECK_RC(0, procreg_register(f->reg, f->ns, "c", &child, NULL, NULL, &err_));
    kill_child(pid);
    guint want = 8;
    if (!WAIT_UNTIL(tel_count(&t) == want, 5000)) {
        for (guint i = 0; i < tel_count(&t); i++)
            g_printerr("# seen: %s %d %s\n", procreg_op_name(tel_at(&t, i)->op),
                       tel_at(&t, i)->result, tel_at(&t, i)->name);
        g_error("%u telemetry events, expected %u", tel_count(&t), want);
    }

    struct {
        procreg_op op;
        int result;
        const char *name;
    } expect[] = {
        {PROCREG_OP_REGISTER, 0, "t"},
        {PROCREG_OP_LOOKUP, 0, "t"},
        {PROCREG_OP_LOOKUP, PROCREG_ENOTFOUND, "nope"},
        {PROCREG_OP_UPDATE, 0, "t"},
        {PROCREG_OP_WAIT, 0, "t"},
        {PROCREG_OP_UNREGISTER, 0, "t"},
        {PROCREG_OP_REGISTER, 0, "c"},
        {PROCREG_OP_CLEANUP, 0, "c"},
    };
    for (guint i = 0; i < want; i++) {
        tel_seen *s = tel_at(&t, i);
        g_assert_cmpint(s->op, ==, expect[i].op);
        g_assert_cmpint(s->result, ==, expect[i].result);
        g_assert_cmpstr(s->ns, ==, f->ns);
        g_assert_cmpstr(s->name, ==, expect[i].name);
        g_assert_true(g_str_has_prefix(spec, s->backend));
        /* A removal the backend reported (not timed here) has none. */
        if (s->op != PROCREG_OP_CLEANUP)
            g_assert_cmpuint(s->duration_ns, >, 0);
        g_assert_cmpuint(s->duration_ns, <, G_GUINT64_CONSTANT(1000000000));
    }
    g_assert_cmpint(tel_at(&t, 7)->reason, ==, PROCREG_REASON_OWNER_EXITED);
    g_assert_cmpuint(tel_at(&t, 7)->count, ==, 1);
    g_assert_cmpint(procreg_telemetry_detach(f->reg, id), ==, 0);
    g_assert_true(t.destroyed);
    g_assert_cmpint(procreg_telemetry_detach(f->reg, id), ==, PROCREG_ENOTFOUND);
    CHECK_RC(PROCREG_ENOTFOUND, procreg_lookup(f->reg, f->ns, "t", &o, &err_));
    g_assert_cmpuint(tel_count(&t), ==, want);
    g_assert_cmpstr(procreg_op_name(PROCREG_OP_CLEANUP), ==, "cleanup");
    tel_clear(&t);
}

/* Detach from another thread while handlers run on lookup threads: when it
 * returns, no handler runs.  The interleaving is forced, not hoped for:
 * the handlers hold still inside until the test is about to detach. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int inside;
    bool detaching; /* handlers may return (after a moment) */
    bool detached;
    bool ran_after;
    gint64 calls;
} busy;

static void busy_handler(procreg *reg, const procreg_telemetry_event *ev,
                         gpointer data)
{
    busy *b = data;
    pthread_mutex_lock(&b->lock);
    if (b->detached)
        b->ran_after = true;
    b->inside++;
    b->calls++;
    pthread_cond_broadcast(&b->cond);
    while (!b->detaching && !b->detached)
        pthread_cond_wait(&b->cond, &b->lock);
    pthread_mutex_unlock(&b->lock);
    g_usleep(1000); /* still inside while detach starts waiting */
    pthread_mutex_lock(&b->lock);
    b->inside--;
    pthread_mutex_unlock(&b->lock);
}

typedef struct {
    fixture *f;
    gint stop;
} looker;

static gpointer lookup_loop(gpointer data)
{
    looker *l = data;
    procreg_owner o;
    while (!g_atomic_int_get(&l->stop))
        procreg_lookup(l->f->reg, l->f->ns, "x", &o, NULL);
    return NULL;
}

static void test_detach_in_flight(fixture *f, gconstpointer spec)
{
    CHECK_RC(0, procreg_register(f->reg, f->ns, "x", NULL, NULL, NULL, &err_));
    looker l = {.f = f};
    GThread *t[3];
    for (int i = 0; i < 3; i++)
        t[i] = g_thread_new("looker", lookup_loop, &l);
    for (int round = 0; round < 20; round++) {
        busy b = {0};
        pthread_mutex_init(&b.lock, NULL);
        pthread_cond_init(&b.cond, NULL);
        uint64_t id;
        CHECK_RC(0, procreg_telemetry_attach(f->reg, PROCREG_OP_ALL,
                                             busy_handler, &b, NULL, &id,
                                             &err_));
        /* Wait until a handler is inside and holding still (the lookup
         * threads call it at once; 60 s only guards against a hang). */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 60;
        pthread_mutex_lock(&b.lock);
        while (b.inside == 0)
            g_assert_cmpint(pthread_cond_timedwait(&b.cond, &b.lock, &until),
                            ==, 0);
        b.detaching = true;
        pthread_cond_broadcast(&b.cond);
        pthread_mutex_unlock(&b.lock);
        g_assert_cmpint(procreg_telemetry_detach(f->reg, id), ==, 0);
        pthread_mutex_lock(&b.lock);
        g_assert_cmpint(b.inside, ==, 0);
        b.detached = true;
        pthread_mutex_unlock(&b.lock);
        g_usleep(2000);
        pthread_mutex_lock(&b.lock);
        g_assert_false(b.ran_after);
        g_assert_cmpint(b.calls, >, 0);
        pthread_mutex_unlock(&b.lock);
        pthread_cond_destroy(&b.cond);
        pthread_mutex_destroy(&b.lock);
    }
    g_atomic_int_set(&l.stop, 1);
    for (int i = 0; i < 3; i++)
        g_thread_join(t[i]);
}

/* A handler that calls the registry (not reported again) and detaches
 * itself (its destroy runs later). */
typedef struct {
    pthread_mutex_t lock;
    uint64_t id;
    int calls;
    int inner_rc;
    bool destroyed;
} reenter;

static void reenter_handler(procreg *reg, const procreg_telemetry_event *ev,
                            gpointer data)
{
    reenter *r = data;
    procreg_owner o;
    int rc = procreg_lookup(reg, ev->ns, ev->name, &o, NULL);
    pthread_mutex_lock(&r->lock);
    r->calls++;
    r->inner_rc = rc;
    uint64_t id = r->id;
    pthread_mutex_unlock(&r->lock);
    procreg_telemetry_detach(reg, id);
}

static void reenter_destroy(gpointer data)
{
    reenter *r = data;
    pthread_mutex_lock(&r->lock);
    r->destroyed = true;
    pthread_mutex_unlock(&r->lock);
}

static void test_handler_reenters(fixture *f, gconstpointer spec)
{
    CHECK_RC(0, procreg_register(f->reg, f->ns, "y", NULL, NULL, NULL, &err_));
    reenter r = {.inner_rc = 99};
    pthread_mutex_init(&r.lock, NULL);
    uint64_t id;
    CHECK_RC(0, procreg_telemetry_attach(f->reg, PROCREG_OP_ALL,
                                         reenter_handler, &r, reenter_destroy,
                                         &id, &err_));
    pthread_mutex_lock(&r.lock);
    r.id = id;
    pthread_mutex_unlock(&r.lock);
    procreg_owner o;
    CHECK_RC(0, procreg_lookup(f->reg, f->ns, "y", &o, &err_));
    CHECK_RC(0, procreg_lookup(f->reg, f->ns, "y", &o, &err_));
    pthread_mutex_lock(&r.lock);
    g_assert_cmpint(r.calls, ==, 1); /* the nested lookup is not reported */
    g_assert_cmpint(r.inner_rc, ==, 0);
    pthread_mutex_unlock(&r.lock);
    /* The self-detached handler's destroy runs at the next attach/detach
     * (or close). */
    uint64_t id2;
    CHECK_RC(0, procreg_telemetry_attach(f->reg, PROCREG_OP_ALL,
                                         reenter_handler, &r, NULL, &id2,
                                         &err_));
    procreg_telemetry_detach(f->reg, id2);
    pthread_mutex_lock(&r.lock);
    g_assert_true(r.destroyed);
    pthread_mutex_unlock(&r.lock);
    pthread_mutex_destroy(&r.lock);
}

void add_telemetry_cases(void)
{
    add_case("telemetry/handler_sees_ops", test_handler_sees_ops);
    add_case("telemetry/detach_in_flight", test_detach_in_flight);
    add_case("telemetry/handler_reenters", test_handler_reenters);
}
