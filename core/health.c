/*
 * Health: the registry's (backend, monitor, events) and a service's (a
 * probe on a worker thread with a timeout).
 *
 * A probe job is reference counted between the caller and the worker: a
 * caller that gives up at the timeout marks the job abandoned and drops
 * its reference; the worker discards the late verdict and frees the job.
 */
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>

/* ---- registry health ---- */

PROCREG_API const char *procreg_health_status_name(procreg_health_status s)
{
    switch (s) {
    case PROCREG_HEALTH_OK: return "ok";
    case PROCREG_HEALTH_DEGRADED: return "degraded";
    case PROCREG_HEALTH_FAILED: return "failed";
    }
    return "unknown";
}

PROCREG_API int procreg_health_check(procreg *reg, procreg_health *out,
                                     GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL, PROCREG_EINVAL);
    memset(out, 0, sizeof *out);
    const procreg_backend_ops *ops = reg->ops;
    GVariantDict backend_details;
    g_variant_dict_init(&backend_details, NULL);
    char *message = NULL;
    int status = procreg_backend_health_check(reg->backend, &backend_details,
                                              &message);
    if (status < 0) {
        /* The check itself failed: that is the report, not an error. */
        char *why = g_strdup_printf("health check failed: %s%s%s",
                                    procreg_strerror(status),
                                    message ? ": " : "",
                                    message ? message : "");
        g_free(message);
        message = why;
        status = PROCREG_HEALTH_FAILED;
    } else if (status > PROCREG_HEALTH_FAILED) {
        status = PROCREG_HEALTH_FAILED;
    }
    int backend_status = status;

    GVariantDict details;
    g_variant_dict_init(&details, NULL);
    g_variant_dict_insert(&details, "backend_status", "s",
                          procreg_health_status_name(backend_status));
    g_variant_dict_insert_value(&details, "backend",
                                g_variant_dict_end(&backend_details));
    size_t entries = 0;
    if (procreg_backend_count(reg->backend, NULL, &entries, NULL) == 0)
        g_variant_dict_insert(&details, "entries", "t", (guint64)entries);

    GPtrArray *degraded = g_ptr_array_new();
    if (backend_status != PROCREG_HEALTH_OK)
        g_ptr_array_add(degraded, (gpointer) "backend");
    bool bad = false;
    procreg_monitor_health(reg, &details, &bad);
    if (bad) {
        g_ptr_array_add(degraded, (gpointer) "monitor");
        if (status < PROCREG_HEALTH_DEGRADED)
            status = PROCREG_HEALTH_DEGRADED;
    }
    bad = false;
    procreg_events_health(reg, &details, &bad);
    if (bad) {
        g_ptr_array_add(degraded, (gpointer) "events");
        if (status < PROCREG_HEALTH_DEGRADED)
            status = PROCREG_HEALTH_DEGRADED;
    }
    g_variant_dict_insert_value(&details, "degraded",
                                g_variant_new_strv((const char *const *)
                                                       degraded->pdata,
                                                   degraded->len));

    out->status = (procreg_health_status)status;
    out->backend = g_strdup(ops->name);
    if (message == NULL) {
        GString *m = g_string_new(NULL);
        g_string_printf(m, "%s backend is %s", ops->name,
                        procreg_health_status_name(backend_status));
        for (guint i = 0; i < degraded->len; i++)
            if (strcmp(degraded->pdata[i], "backend") != 0)
                g_string_append_printf(m, "; %s is degraded",
                                       (const char *)degraded->pdata[i]);
        message = g_string_free(m, FALSE);
    }
    out->message = message;
    out->details = g_variant_ref_sink(g_variant_dict_end(&details));
    g_ptr_array_unref(degraded);
    (void)error;
    return 0;
}

PROCREG_API void procreg_health_clear(procreg_health *health)
{
    if (health == NULL)
        return;
    g_free(health->backend);
    g_free(health->message);
    if (health->details != NULL)
        g_variant_unref(health->details);
    memset(health, 0, sizeof *health);
}

/* ---- service health ---- */

#define PROBE_THREADS 64

typedef struct {
    gint refcount;
    /* Set (release) once the job is built; the worker reads it (acquire)
     * first, so the handoff through the pool's queue is ordered for
     * every tool, not only by GLib's own locks. */
    atomic_int ready;
    pthread_mutex_t lock; /* everything below */
    pthread_cond_t cond;
    bool done, abandoned;
    bool healthy;
    char *message;
    procreg_probe_fn probe;
    gpointer user_data;
    GDestroyNotify user_data_free;
    procreg_entry entry;
} probe_job;

static void job_unref(probe_job *job)
{
    if (!g_atomic_int_dec_and_test(&job->refcount))
        return;
    g_free(job->message);
    procreg_entry_clear(&job->entry);
    pthread_mutex_destroy(&job->lock);
    pthread_cond_destroy(&job->cond);
    g_free(job);
}

static void probe_worker(gpointer data, gpointer unused)
{
    probe_job *job = data;
    while (atomic_load_explicit(&job->ready, memory_order_acquire) == 0)
        sched_yield(); /* never taken: it is set before the push */
    pthread_mutex_lock(&job->lock);
    procreg_probe_fn probe = job->probe;
    gpointer user_data = job->user_data;
    GDestroyNotify user_data_free = job->user_data_free;
    pthread_mutex_unlock(&job->lock);

    char *message = NULL;
    bool healthy = probe(&job->entry, user_data, &message);
    if (user_data_free != NULL)
        user_data_free(user_data);

    pthread_mutex_lock(&job->lock);
    if (!job->abandoned) {
        job->healthy = healthy;
        job->message = message;
        message = NULL;
    }
    job->done = true;
    pthread_cond_signal(&job->cond);
    pthread_mutex_unlock(&job->lock);
    g_free(message); /* a late verdict nobody waits for */
    job_unref(job);
}

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static GThreadPool *pool;
static char *pool_error;

static void pool_init(void)
{
    GError *local = NULL;
    pool = g_thread_pool_new(probe_worker, NULL, PROBE_THREADS, FALSE, &local);
    if (pool == NULL) {
        pool_error = g_strdup(local ? local->message : "unknown error");
        g_clear_error(&local);
    }
}

static GThreadPool *probe_pool(GError **error)
{
    pthread_once(&pool_once, pool_init);
    if (pool == NULL)
        procreg_set_error(error, PROCREG_ENOMEM,
                          "cannot start the probe threads: %s", pool_error);
    return pool;
}

PROCREG_API void procreg_service_health_clear(procreg_service_health *health)
{
    if (health == NULL)
        return;
    g_free(health->message);
    memset(health, 0, sizeof *health);
}

PROCREG_API int procreg_service_check(procreg *reg, const char *ns,
                                      const char *name, procreg_probe_fn probe,
                                      gpointer user_data,
                                      GDestroyNotify user_data_free,
                                      int timeout_ms,
                                      procreg_service_health *out,
                                      GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL, PROCREG_EINVAL);
    memset(out, 0, sizeof *out);
    uint64_t t0 = procreg_now_ns();
    procreg_entry entry = {0};
    int rc = procreg_lookup_entry(reg, ns, name, &entry, error);
    if (rc != 0) {
        if (user_data_free != NULL)
            user_data_free(user_data);
        return rc;
    }
    entry.ns = g_strdup(ns ? ns : PROCREG_NS_PRODUCTION);
    entry.name = g_strdup(name);
    out->owner = entry.owner;

    if (probe == NULL) {
        /* The default probe is cheap: run it here. */
        out->healthy = procreg_owner_is_alive(&entry.owner);
        out->message = out->healthy
                           ? g_strdup("healthy")
                           : g_strdup_printf("unhealthy: owner process %d "
                                             "is not alive",
                                             (int)entry.owner.pid);
        if (user_data_free != NULL)
            user_data_free(user_data);
        procreg_entry_clear(&entry);
        out->duration_ns = procreg_since_ns(t0);
        return 0;
    }

    GThreadPool *workers = probe_pool(error);
    if (workers == NULL) {
        rc = PROCREG_ENOMEM;
        if (user_data_free != NULL)
            user_data_free(user_data);
        procreg_entry_clear(&entry);
        return rc;
    }

    probe_job *job = g_new0(probe_job, 1);
    job->refcount = 2; /* the caller's and the worker's */
    pthread_mutex_init(&job->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&job->cond, &attr);
    pthread_condattr_destroy(&attr);
    job->probe = probe;
    job->user_data = user_data;
    job->user_data_free = user_data_free;
    job->entry = entry; /* moved */
    atomic_store_explicit(&job->ready, 1, memory_order_release);
    /* On a thread creation failure the job stays queued for a later
     * thread; the timeout below still holds. */
    g_thread_pool_push(workers, job, NULL);

    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ms > 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&job->lock);
    bool timed_out = false;
    while (!job->done && !timed_out) {
        if (timeout_ms < 0)
            pthread_cond_wait(&job->cond, &job->lock);
        else
            timed_out = pthread_cond_timedwait(&job->cond, &job->lock,
                                               &deadline) == ETIMEDOUT;
    }
    if (job->done) {
        out->healthy = job->healthy;
        if (job->message != NULL)
            out->message = g_strdup_printf("%s: %s",
                                           job->healthy ? "healthy"
                                                        : "unhealthy",
                                           job->message);
        else
            out->message = g_strdup(job->healthy ? "healthy"
                                                 : "unhealthy: the probe "
                                                   "said so");
    } else {
        job->abandoned = true;
        out->healthy = false;
        out->timed_out = true;
        out->message = g_strdup_printf("unhealthy: timed out after %d ms",
                                       timeout_ms);
    }
    pthread_mutex_unlock(&job->lock);
    job_unref(job);
    out->duration_ns = procreg_since_ns(t0);
    return 0;
}
