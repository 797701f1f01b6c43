/*
 * Compliance cases for namespace settings (procreg_namespace_meta_*()),
 * which the core keeps as entries, so every backend must carry them:
 *  - put, get, list, delete, and a callback for each change;
 *  - across real processes: a child's put reaches our callback, and on a
 *    backend that is not distributed the setting outlives the child (its
 *    own entry is gone by then: every reaping for its exit has happened).
 *    On etcd a setting goes with the lease of the registry that created
 *    it (procreg.h), so only the first half is checked there.
 */
#include "compliance-private.h"

#include <pthread.h>
#include <string.h>

#define META_WAIT_MS 30000
#define NS "lk"

typedef struct {
    pthread_mutex_t lock;
    GString *log;
    int n;
} Changes;

static void on_change(procreg *reg, const char *ns, const char *key,
                      GVariant *value, gpointer data)
{
    Changes *c = data;
    char *v = value ? g_variant_print(value, FALSE) : NULL;
    pthread_mutex_lock(&c->lock);
    g_string_append_printf(c->log, "%s=%s;", key, v ? v : "deleted");
    c->n++;
    pthread_mutex_unlock(&c->lock);
    g_free(v);
}

/* The log once it holds @n changes (or what it holds after the wait). */
static char *changes_after(Changes *c, int n)
{
    gint64 until = g_get_monotonic_time() + (gint64)META_WAIT_MS * 1000;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        bool done = c->n >= n || g_get_monotonic_time() > until;
        char *s = done ? g_strdup(c->log->str) : NULL;
        pthread_mutex_unlock(&c->lock);
        if (done)
            return s;
        g_usleep(2000);
    }
}

/* Subscribed for the whole case: unsubscribed when it goes out of scope. */
typedef struct {
    procreg *reg;
    uint64_t id;
    Changes c;
} Sub;

static void sub_clear(Sub *s)
{
    if (s->id != 0)
        procreg_unsubscribe(s->reg, s->id);
    if (s->c.log != NULL) {
        g_string_free(s->c.log, TRUE);
        pthread_mutex_destroy(&s->c.lock);
    }
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Sub, sub_clear)

static int sub_start(Sub *s, procreg *reg)
{
    s->reg = reg;
    s->c.log = g_string_new(NULL);
    pthread_mutex_init(&s->c.lock, NULL);
    return procreg_namespace_meta_subscribe(reg, NS, on_change, &s->c, NULL,
                                            NULL, &s->id, NULL);
}

void case_namespace_meta(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_auto(Sub) sub = {0};
    CHECK_RC(sub_start(&sub, f->reg), 0);
    CHECK_OK(procreg_namespace_meta_put(f->reg, NS, "version",
                                        g_variant_new_uint32(7), &err),
             err);
    CHECK_OK(procreg_namespace_meta_put(f->reg, NS, "version",
                                        g_variant_new_uint32(8), &err),
             err);
    CHECK_OK(procreg_namespace_meta_put(f->reg, NS, "drain",
                                        g_variant_new_boolean(TRUE), &err),
             err);
    g_autoptr(GVariant) v = NULL;
    CHECK_OK(procreg_namespace_meta_get(f->reg, NS, "version", &v, &err), err);
    CHECK(g_variant_is_of_type(v, G_VARIANT_TYPE_UINT32) &&
          g_variant_get_uint32(v) == 8);
    g_autoptr(GVariant) all = NULL;
    CHECK_OK(procreg_namespace_meta_list(f->reg, NS, &all, &err), err);
    g_autofree char *all_text = g_variant_print(all, TRUE);
    CHECK_MSG(strcmp(all_text, "{'drain': <true>, 'version': <uint32 8>}") ==
                  0, "the settings are %s", all_text);
    CHECK_OK(procreg_namespace_meta_delete(f->reg, NS, "drain", &err), err);
    CHECK_ERR(procreg_namespace_meta_delete(f->reg, NS, "drain", &err), err,
              PROCREG_ENOTFOUND);
    size_t n = 1;
    CHECK_OK(procreg_count(f->reg, NS, &n, &err), err);
    CHECK_MSG(n == 0, "settings show as %zu entries of the namespace", n);
    g_autofree char *log = changes_after(&sub.c, 4);
    CHECK_MSG(strcmp(log, "version=7;version=8;drain=true;drain=deleted;") ==
                  0, "the callbacks said %s", log);
}

void case_namespace_meta_processes(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_auto(Sub) sub = {0};
    CHECK_RC(sub_start(&sub, f->reg), 0);
    g_auto(SpawnedKilled) child = {0};
    CHECK_MSG(cx_spawn(f, "lock", &child, &err),
              "cannot run the child: %s", err->message);
    CHECK(cx_write_line(child.in, "put mode"));
    g_autofree char *line = cx_read_line_within(child.out, META_WAIT_MS);
    CHECK_MSG(line != NULL && strcmp(line, "put") == 0, "the child said %s",
              line ? line : "nothing");
    g_autofree char *log = changes_after(&sub.c, 1);
    CHECK_MSG(strcmp(log, "mode='child';") == 0,
              "the child's put reached us as %s", log);
    cx_spawned_end(&child);
    CHECK_MSG(g_spawn_check_wait_status(child.status, NULL),
              "the child failed (its stderr says why)");
    if (f->caps & PROCREG_CAP_DISTRIBUTED)
        return; /* goes with the child's registry's lease: see above */
    gint64 until = g_get_monotonic_time() + (gint64)META_WAIT_MS * 1000;
    procreg_owner o;
    while (procreg_lookup(f->reg, NS, "child-entry", &o, NULL) == 0 &&
           g_get_monotonic_time() < until)
        g_usleep(5000);
    CHECK_MSG(procreg_lookup(f->reg, NS, "child-entry", &o, NULL) ==
                  PROCREG_ENOTFOUND,
              "the child's entry outlived it");
    g_autoptr(GVariant) v = NULL;
    CHECK_OK(procreg_namespace_meta_get(f->reg, NS, "mode", &v, &err), err);
    CHECK(g_variant_is_of_type(v, G_VARIANT_TYPE_STRING) &&
          strcmp(g_variant_get_string(v, NULL), "child") == 0);
}
