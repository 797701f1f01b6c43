/* Helpers shared by the etcd test programs. */
#include "etcd-test-util.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

/* pthread locks rather than GMutex/GCond: glib's are bare futexes that
 * ThreadSanitizer cannot see.  Conditions wait on CLOCK_MONOTONIC, the
 * clock of g_get_monotonic_time(). */
static void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

/* Wait until signalled or @until (g_get_monotonic_time() µs); false on
 * timeout. */
static bool cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m,
                            gint64 until)
{
    struct timespec ts = {.tv_sec = (time_t)(until / G_USEC_PER_SEC),
                          .tv_nsec = (long)(until % G_USEC_PER_SEC) * 1000};
    return pthread_cond_timedwait(c, m, &ts) == 0;
}

static void rec_event_free(gpointer p)
{
    rec_event *e = p;
    g_free(e->ns);
    g_free(e->name);
    g_free(e);
}

static void on_event(procreg *reg, const procreg_event *ev, gpointer user)
{
    recorder *r = user;
    rec_event *e = g_new0(rec_event, 1);
    e->kind = ev->kind;
    e->reason = ev->reason;
    e->ns = g_strdup(ev->ns);
    e->name = g_strdup(ev->name);
    e->external = ev->external;
    e->position = ev->position;
    e->at = g_get_monotonic_time();
    if (ev->entry != NULL) {
        e->pid = ev->entry->owner.pid;
        e->revision = ev->entry->revision;
    }
    pthread_mutex_lock(&r->m);
    g_ptr_array_add(r->events, e);
    pthread_cond_broadcast(&r->c);
    pthread_mutex_unlock(&r->m);
}

/* Subscribe @r to @ns (NULL: everything) of @reg, from position *@after
 * when @after is not NULL. */
static void recorder_open(recorder *r, procreg *reg, const char *ns,
                          const uint64_t *after)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->m, NULL);
    cond_init_monotonic(&r->c);
    r->events = g_ptr_array_new_with_free_func(rec_event_free);
    r->reg = reg;
    GError *err = NULL;
    int rc = after != NULL
                 ? procreg_subscribe_from(reg, ns, NULL, *after, on_event, r,
                                          NULL, NULL, &r->sub, &err)
                 : procreg_subscribe(reg, ns, NULL, on_event, r, NULL, NULL,
                                     &r->sub, &err);
    g_assert_no_error(err);
    g_assert_cmpint(rc, ==, 0);
}

void recorder_start(recorder *r, procreg *reg)
{
    recorder_open(r, reg, NULL, NULL);
}

void recorder_start_from(recorder *r, procreg *reg, const char *ns,
                         uint64_t after)
{
    recorder_open(r, reg, ns, &after);
}

void recorder_stop(recorder *r)
{
    if (r->reg != NULL)
        procreg_unsubscribe(r->reg, r->sub);
    g_ptr_array_unref(r->events);
    pthread_mutex_destroy(&r->m);
    pthread_cond_destroy(&r->c);
    memset(r, 0, sizeof *r);
}

static bool matches(const rec_event *e, procreg_event_kind kind, int reason,
                    const char *ns, const char *name)
{
    return e->kind == kind && (reason < 0 || (int)e->reason == reason) &&
           g_strcmp0(e->ns, ns) == 0 && g_strcmp0(e->name, name) == 0;
}

const rec_event *recorder_wait(recorder *r, procreg_event_kind kind,
                               int reason, const char *ns, const char *name,
                               int timeout_ms)
{
    gint64 until = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    const rec_event *found = NULL;
    pthread_mutex_lock(&r->m);
    for (;;) {
        for (guint i = 0; i < r->events->len && found == NULL; i++)
            if (matches(r->events->pdata[i], kind, reason, ns, name))
                found = r->events->pdata[i];
        if (found != NULL || !cond_wait_until(&r->c, &r->m, until))
            break;
    }
    if (found == NULL) {
        /* One last look after the deadline. */
        for (guint i = 0; i < r->events->len && found == NULL; i++)
            if (matches(r->events->pdata[i], kind, reason, ns, name))
                found = r->events->pdata[i];
    }
    pthread_mutex_unlock(&r->m);
    return found;
}

guint recorder_count(recorder *r, procreg_event_kind kind, const char *ns,
                     const char *name)
{
    guint n = 0;
    pthread_mutex_lock(&r->m);
    for (guint i = 0; i < r->events->len; i++)
        n += matches(r->events->pdata[i], kind, -1, ns, name);
    pthread_mutex_unlock(&r->m);
    return n;
}

char *recorder_dump(recorder *r)
{
    GString *s = g_string_new(NULL);
    pthread_mutex_lock(&r->m);
    for (guint i = 0; i < r->events->len; i++) {
        const rec_event *e = r->events->pdata[i];
        g_string_append_printf(s, "[%s %s %s/%s%s] ",
                               procreg_event_kind_name(e->kind),
                               procreg_event_reason_name(e->reason), e->ns,
                               e->name, e->external ? " external" : "");
    }
    pthread_mutex_unlock(&r->m);
    return g_string_free(s, FALSE);
}

char *etcd_entry_key_b64(const char *prefix, const char *ns, const char *name)
{
    GString *k = g_string_new(prefix);
    g_string_append(k, "/e/");
    g_string_append(k, ns);
    g_string_append_c(k, '\0');
    g_string_append(k, name);
    char *b = g_base64_encode((const guchar *)k->str, k->len);
    g_string_free(k, TRUE);
    return b;
}

procreg *open_spec(const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    char *spec = g_strdup_vprintf(format, ap);
    va_end(ap);
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0)
        g_error("procreg_open(%s): %s", spec, err ? err->message : "?");
    g_free(spec);
    return reg;
}

int open_rc(const char *spec, GError **err)
{
    procreg *reg = NULL;
    int rc = procreg_open(spec, &reg, err);
    procreg_close(reg);
    return rc;
}

gint64 backend_stat_int(procreg *reg, const char *name)
{
    GVariant *st = NULL;
    if (procreg_stats(reg, &st, NULL) != 0)
        return -1;
    GVariant *bs = g_variant_lookup_value(st, "backend_stats",
                                          G_VARIANT_TYPE_VARDICT);
    gint64 out = -1;
    if (bs != NULL) {
        GVariant *v = g_variant_lookup_value(bs, name, NULL);
        if (v != NULL) {
            if (g_variant_is_of_type(v, G_VARIANT_TYPE_INT64))
                out = g_variant_get_int64(v);
            else if (g_variant_is_of_type(v, G_VARIANT_TYPE_UINT64))
                out = (gint64)g_variant_get_uint64(v);
            else if (g_variant_is_of_type(v, G_VARIANT_TYPE_UINT32))
                out = g_variant_get_uint32(v);
            g_variant_unref(v);
        }
        g_variant_unref(bs);
    }
    g_variant_unref(st);
    return out;
}

/* The backend of @spec; fails the test when it does not open. */
static procreg_backend *backend_open(const char *spec)
{
    procreg_backend *b = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_backend_open(spec, NULL, &b, &err), ==, 0);
    g_assert_no_error(err);
    return b;
}

void holding_proxy_start(holding_proxy *p, const etcd_cluster *c,
                         const char *prefix)
{
    p->gate = etcd_gate_new();
    p->answered = etcd_gate_new();
    p->proxy = etcd_fake_start(&(etcd_fake_config){
        .mode = FAKE_PROXY, .target_port = c->m[0].client_port,
        .hold = p->gate, .on_reply = p->answered});
    char *via = etcd_fake_url(p->proxy), *url = etcd_member_url(c, 0);
    p->spec = g_strdup_printf("etcd:endpoints=[%s,%s],prefix=%s,"
                              "attempt_timeout_ms=300,watch=false,"
                              "lease_ttl=60",
                              via, url, prefix);
    char *direct = g_strdup_printf("etcd:endpoints=[%s],prefix=%s,"
                                   "watch=false,lease_ttl=60",
                                   url, prefix);
    p->other = backend_open(direct);
    g_free(direct);
    g_free(via);
    g_free(url);
}

procreg_backend *holding_proxy_open(holding_proxy *p)
{
    etcd_gate_open(p->gate);
    etcd_fake_set_swallow(p->proxy, NULL);
    return backend_open(p->spec);
}

void holding_proxy_hold(holding_proxy *p)
{
    etcd_gate_close(p->gate);
    etcd_gate_close(p->answered);
}

void holding_proxy_release(holding_proxy *p)
{
    etcd_fake_set_swallow(p->proxy, "");
    etcd_gate_open(p->gate);
    g_assert_true(etcd_gate_wait(p->answered, 10000));
}

void holding_proxy_stop(holding_proxy *p)
{
    procreg_backend_close(p->other);
    etcd_fake_stop(p->proxy);
    etcd_gate_free(p->gate);
    etcd_gate_free(p->answered);
    g_free(p->spec);
}
