/* procreg_wait_for: at once when present, wakes on registration, many
 * waiters, timeout, cancellation, registrations reported by the backend. */
#include "common.h"

#include <gio/gio.h>
#include <pthread.h>
#include <string.h>

static void test_present(fixture *f, gconstpointer spec)
{
    CHECK_RC(0, procreg_register(f->reg, f->ns, "here", NULL, NULL, NULL, &err_));
    procreg_entry e;
    gint64 t0 = g_get_monotonic_time();
    CHECK_RC(0, procreg_wait_for(f->reg, f->ns, "here", 5000, NULL, &e, &err_));
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 100000);
    g_assert_cmpint(e.owner.pid, ==, getpid());
    procreg_entry_clear(&e);
    CHECK_RC(0, procreg_wait_for(f->reg, f->ns, "here", 0, NULL, NULL, &err_));
    CHECK_RC(PROCREG_EINVAL, procreg_wait_for(f->reg, f->ns, "", 10, NULL,
                                              NULL, &err_));
}

static void test_timeout(fixture *f, gconstpointer spec)
{
    gint64 t0 = g_get_monotonic_time();
    CHECK_RC(PROCREG_ETIMEDOUT,
             procreg_wait_for(f->reg, f->ns, "never", 100, NULL, NULL, &err_));
    gint64 took = g_get_monotonic_time() - t0;
    g_assert_cmpint(took, >=, 100000);
    g_assert_cmpint(took, <, 1000000);
    CHECK_RC(PROCREG_ETIMEDOUT,
             procreg_wait_for(f->reg, f->ns, "never", 0, NULL, NULL, &err_));
}

#define WAITERS 8

typedef struct {
    fixture *f;
    const char *name;
    int timeout_ms;
    GCancellable *cancel;
    int rc;
    pid_t pid;
    gint64 woke_at;
    gint done;
} waiter_arg;

static gpointer waiter_thread(gpointer data)
{
    waiter_arg *w = data;
    procreg_entry e = {0};
    w->rc = procreg_wait_for(w->f->reg, w->f->ns, w->name, w->timeout_ms,
                             w->cancel, &e, NULL);
    w->woke_at = g_get_monotonic_time();
    w->pid = e.owner.pid;
    procreg_entry_clear(&e);
    g_atomic_int_set(&w->done, 1);
    return NULL;
}

static void test_many_waiters_wake(fixture *f, gconstpointer spec)
{
    waiter_arg w[WAITERS];
    GThread *t[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        w[i] = (waiter_arg){.f = f, .name = "late", .timeout_ms = 5000};
        t[i] = g_thread_new("waiter", waiter_thread, &w[i]);
    }
    /* Let them block first, then register from another thread. */
    g_usleep(50000);
    gint64 registered_at = g_get_monotonic_time();
    CHECK_RC(0, procreg_register(f->reg, f->ns, "late", NULL, NULL, NULL, &err_));
    gint64 worst = 0;
    for (int i = 0; i < WAITERS; i++) {
        g_thread_join(t[i]);
        g_assert_cmpint(w[i].rc, ==, 0);
        g_assert_cmpint(w[i].pid, ==, getpid());
        if (w[i].woke_at - registered_at > worst)
            worst = w[i].woke_at - registered_at;
    }
    g_test_message("%d waiters woke within %.2f ms of the registration",
                   WAITERS, worst / 1000.0);
    /* Woken by the registration, not by a poll or the 5 s timeout. */
    g_assert_cmpint(worst, <, 500000);
}

/* Registration of another key, or an unregistered entry, does not end the
 * wait; the awaited key does. */
static void test_only_its_key(fixture *f, gconstpointer spec)
{
    waiter_arg w = {.f = f, .name = "wanted", .timeout_ms = 5000};
    GThread *t = g_thread_new("waiter", waiter_thread, &w);
    g_usleep(30000);
    CHECK_RC(0, procreg_register(f->reg, f->ns, "other", NULL, NULL, NULL, &err_));
    g_usleep(30000);
    g_assert_cmpint(g_atomic_int_get(&w.done), ==, 0);
    CHECK_RC(0, procreg_register(f->reg, f->ns, "wanted", NULL, NULL, NULL,
                                 &err_));
    g_thread_join(t);
    g_assert_cmpint(w.rc, ==, 0);
}

static void test_cancel(fixture *f, gconstpointer spec)
{
    GCancellable *c = g_cancellable_new();
    waiter_arg w = {.f = f, .name = "never", .timeout_ms = -1, .cancel = c};
    GThread *t = g_thread_new("waiter", waiter_thread, &w);
    g_usleep(50000);
    gint64 t0 = g_get_monotonic_time();
    g_cancellable_cancel(c);
    g_thread_join(t);
    g_assert_cmpint(w.rc, ==, PROCREG_ECANCELLED);
    g_assert_cmpint(w.woke_at - t0, <, 500000);
    /* Already cancelled: at once. */
    CHECK_RC(PROCREG_ECANCELLED,
             procreg_wait_for(f->reg, f->ns, "never", 1000, c, NULL, &err_));
    g_object_unref(c);
}

static void test_external_registration(fixture *f, gconstpointer spec)
{
    if (strcmp(spec, "gate") != 0) {
        g_test_skip("needs the gate backend to simulate another process");
        return;
    }
    waiter_arg w = {.f = f, .name = "remote", .timeout_ms = 5000};
    GThread *t = g_thread_new("waiter", waiter_thread, &w);
    g_usleep(50000);
    procreg_owner self;
    procreg_owner_self(&self);
    gint64 t0 = g_get_monotonic_time();
    gate_external_register(f->ns, "remote", &self);
    g_thread_join(t);
    g_assert_cmpint(w.rc, ==, 0);
    g_assert_cmpint(w.woke_at - t0, <, 500000);
}

void add_wait_cases(void)
{
    add_case("wait/present", test_present);
    add_case("wait/timeout", test_timeout);
    add_case("wait/many_waiters_wake", test_many_waiters_wake);
    add_case("wait/only_its_key", test_only_its_key);
    add_case("wait/cancel", test_cancel);
    add_case("wait/external_registration", test_external_registration);
}
