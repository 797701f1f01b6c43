/* Health: the registry report, and service checks with probes that
 * answer, fail, or hang past their timeout. */
#include "common.h"

#include <pthread.h>
#include <string.h>

static void test_registry_health(fixture *f, gconstpointer spec)
{
    procreg_health h;
    CHECK_RC(0, procreg_health_check(f->reg, &h, &err_));
    g_assert_cmpint(h.status, ==, PROCREG_HEALTH_OK);
    g_assert_nonnull(h.message);
    GVariant *mon = g_variant_lookup_value(h.details, "monitor",
                                           G_VARIANT_TYPE_VARDICT);
    g_assert_nonnull(mon);
    gboolean running = FALSE;
    g_assert_true(g_variant_lookup(mon, "running", "b", &running));
    g_assert_true(running);
    g_variant_unref(mon);
    GVariant *ev = g_variant_lookup_value(h.details, "events",
                                          G_VARIANT_TYPE_VARDICT);
    g_assert_nonnull(ev);
    g_variant_unref(ev);
    const char **degraded = NULL;
    g_assert_true(g_variant_lookup(h.details, "degraded", "^a&s", &degraded));
    g_assert_cmpuint(g_strv_length((char **)degraded), ==, 0);
    g_free(degraded);
    procreg_health_clear(&h);
}

static void test_default_probe(fixture *f, gconstpointer spec)
{
    pid_t pid = spawn_child();
    procreg_owner o = {.pid = pid};
    CHECK_RC(0, procreg_register(f->reg, f->ns, "child", &o, NULL, NULL, &err_));
    procreg_service_health sh;
    CHECK_RC(0, procreg_service_check(f->reg, f->ns, "child", NULL, NULL, NULL,
                                      100, &sh, &err_));
    g_assert_true(sh.healthy);
    g_assert_false(sh.timed_out);
    g_assert_cmpint(sh.owner.pid, ==, pid);
    procreg_service_health_clear(&sh);
    CHECK_RC(PROCREG_ENOTFOUND,
             procreg_service_check(f->reg, f->ns, "absent", NULL, NULL, NULL,
                                   100, &sh, &err_));
    kill_child(pid);
    /* Dead owner: unhealthy until the cleanup removes the entry, then not
     * found; either answer is right, "healthy" is not. */
    GError *error = NULL;
    int rc = procreg_service_check(f->reg, f->ns, "child", NULL, NULL, NULL,
                                   100, &sh, &error);
    g_assert_true(rc == PROCREG_ENOTFOUND || (rc == 0 && !sh.healthy));
    g_clear_error(&error);
    procreg_service_health_clear(&sh);
}

static bool probe_ok(const procreg_entry *entry, gpointer data, char **message)
{
    g_assert_nonnull(entry->ns);
    g_assert_nonnull(entry->name);
    *message = g_strdup_printf("%s answers", entry->name);
    return true;
}

static bool probe_bad(const procreg_entry *entry, gpointer data, char **message)
{
    *message = g_strdup("port closed");
    return false;
}

static void count_free(gpointer data)
{
    g_atomic_int_inc((gint *)data);
}

static void test_probes(fixture *f, gconstpointer spec)
{
    CHECK_RC(0, procreg_register(f->reg, f->ns, "svc", NULL, NULL, NULL, &err_));
    gint freed = 0;
    procreg_service_health sh;
    CHECK_RC(0, procreg_service_check(f->reg, f->ns, "svc", probe_ok, &freed,
                                      count_free, 5000, &sh, &err_));
    g_assert_cmpstr(sh.message, ==, "healthy: svc answers");
    g_assert_true(sh.healthy);
    procreg_service_health_clear(&sh);
    CHECK_RC(0, procreg_service_check(f->reg, f->ns, "svc", probe_bad, &freed,
                                      count_free, 5000, &sh, &err_));
    g_assert_false(sh.healthy);
    g_assert_false(sh.timed_out);
    g_assert_cmpstr(sh.message, ==, "unhealthy: port closed");
    procreg_service_health_clear(&sh);
    g_assert_cmpint(g_atomic_int_get(&freed), ==, 2);
    /* Not found: the user data is released before returning. */
    CHECK_RC(PROCREG_ENOTFOUND,
             procreg_service_check(f->reg, f->ns, "absent", probe_ok, &freed,
                                   count_free, 5000, &sh, &err_));
    g_assert_cmpint(g_atomic_int_get(&freed), ==, 3);
}

/* A probe that hangs until released. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool release, started, returned, freed;
} hang;

static bool probe_hang(const procreg_entry *entry, gpointer data,
                       char **message)
{
    hang *h = data;
    pthread_mutex_lock(&h->lock);
    h->started = true;
    while (!h->release)
        pthread_cond_wait(&h->cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
    *message = g_strdup("too late");
    return true;
}

static void hang_free(gpointer data)
{
    hang *h = data;
    pthread_mutex_lock(&h->lock);
    h->freed = true;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

static void test_hanging_probe(fixture *f, gconstpointer spec)
{
    CHECK_RC(0, procreg_register(f->reg, f->ns, "stuck", NULL, NULL, NULL,
                                 &err_));
    hang h = {0};
    pthread_mutex_init(&h.lock, NULL);
    pthread_cond_init(&h.cond, NULL);
    procreg_service_health sh;
    gint64 t0 = g_get_monotonic_time();
    CHECK_RC(0, procreg_service_check(f->reg, f->ns, "stuck", probe_hang, &h,
                                      hang_free, 50, &sh, &err_));
    gint64 took = g_get_monotonic_time() - t0;
    g_assert_false(sh.healthy);
    g_assert_true(sh.timed_out);
    g_assert_cmpstr(sh.message, ==, "unhealthy: timed out after 50 ms");
    g_assert_cmpint(took, >=, 50000);
    g_assert_cmpint(took, <, 1000000);
    procreg_service_health_clear(&sh);
    /* The probe is still running; its late answer is discarded. */
    /* (On a loaded machine the worker may only now get to start it.) */
    g_assert_true(WAIT_UNTIL(({
        pthread_mutex_lock(&h.lock);
        bool started = h.started;
        pthread_mutex_unlock(&h.lock);
        started;
    }), 5000));
    pthread_mutex_lock(&h.lock);
    g_assert_false(h.freed);
    h.release = true;
    pthread_cond_broadcast(&h.cond);
    gint64 until = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    while (!h.freed && g_get_monotonic_time() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&h.cond, &h.lock, &ts);
    }
    g_assert_true(h.freed);
    pthread_mutex_unlock(&h.lock);
    /* Let the worker finish with the job before h goes away. */
    g_usleep(10000);
    pthread_mutex_destroy(&h.lock);
    pthread_cond_destroy(&h.cond);
}

void add_health_cases(void)
{
    add_case("health/registry", test_registry_health);
    add_case("health/default_probe", test_default_probe);
    add_case("health/probes", test_probes);
    add_case("health/hanging_probe", test_hanging_probe);
}
