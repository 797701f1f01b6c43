/*
 * Namespace settings in one process (suite 'coord'): put, get, list,
 * delete, the change callbacks, and a put of a new key racing another
 * process's (the put finds the key absent and sees it created before its
 * own create: forced with the gated fake backend).  Across processes: the compliance case
 * namespace_meta_processes.
 */
#include "coord-test.h"

#include <pthread.h>
#include <string.h>

static char *get_text(procreg *reg, const char *ns, const char *key)
{
    GVariant *v = NULL;
    if (procreg_namespace_meta_get(reg, ns, key, &v, NULL) != 0)
        return NULL;
    char *s = g_variant_print(v, TRUE);
    g_variant_unref(v);
    return s;
}

/* ---- change callbacks, collected ---- */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    GString *log; /* "key=value;" or "key deleted;" */
    int n;
} changes;

static void on_change(procreg *reg, const char *ns, const char *key,
                      GVariant *value, gpointer data)
{
    changes *c = data;
    char *v = value ? g_variant_print(value, FALSE) : NULL;
    pthread_mutex_lock(&c->lock);
    g_string_append_printf(c->log, "%s:%s=%s;", ns, key, v ? v : "deleted");
    c->n++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    g_free(v);
}

static bool wait_changes(changes *c, int n)
{
    gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    pthread_mutex_lock(&c->lock);
    while (c->n < n && g_get_monotonic_time() < until) {
        pthread_mutex_unlock(&c->lock);
        g_usleep(1000);
        pthread_mutex_lock(&c->lock);
    }
    bool ok = c->n >= n;
    pthread_mutex_unlock(&c->lock);
    return ok;
}

static void test_basic(gconstpointer spec)
{
    procreg *reg = open_reg(spec);
    changes c = {.log = g_string_new(NULL)};
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.cond, NULL);
    uint64_t id = 0;
    GError *err = NULL;
    g_assert_cmpint(procreg_namespace_meta_subscribe(reg, "prod", on_change,
                                                     &c, NULL, NULL, &id,
                                                     &err),
                    ==, 0);
    g_assert_cmpint(procreg_namespace_meta_put(reg, "prod", "config_version",
                                               g_variant_new_int32(41), &err),
                    ==, 0);
    g_assert_no_error(err);
    g_assert_cmpint(procreg_namespace_meta_put(reg, "prod", "config_version",
                                               g_variant_new_int32(42), NULL),
                    ==, 0);
    g_assert_cmpint(procreg_namespace_meta_put(reg, "prod", "drain",
                                               g_variant_new_boolean(TRUE),
                                               NULL),
                    ==, 0);
    g_assert_cmpint(procreg_namespace_meta_put(reg, "prod", "hosts",
                                               g_variant_new_parsed("['a', 'b']"),
                                               NULL),
                    ==, 0);
    g_autofree char *cv = get_text(reg, "prod", "config_version");
    g_assert_cmpstr(cv, ==, "42");
    GVariant *all = NULL;
    g_assert_cmpint(procreg_namespace_meta_list(reg, "prod", &all, NULL), ==,
                    0);
    g_autofree char *all_text = g_variant_print(all, FALSE);
    g_assert_cmpstr(all_text, ==,
                    "{'config_version': <42>, 'drain': <true>, "
                    "'hosts': <['a', 'b']>}");
    g_variant_unref(all);
    g_assert_cmpint(procreg_namespace_meta_delete(reg, "prod", "drain", &err),
                    ==, 0);
    g_assert_cmpint(procreg_namespace_meta_delete(reg, "prod", "drain", &err),
                    ==, PROCREG_ENOTFOUND);
    g_assert_nonnull(strstr(err->message, "no setting 'drain'"));
    g_clear_error(&err);
    GVariant *v = NULL;
    g_assert_cmpint(procreg_namespace_meta_get(reg, "prod", "drain", &v,
                                               &err),
                    ==, PROCREG_ENOTFOUND);
    g_assert_null(v);
    g_clear_error(&err);
    /* Other namespaces have their own; an empty one lists empty. */
    g_assert_cmpint(procreg_namespace_meta_list(reg, "stage", &all, NULL),
                    ==, 0);
    g_assert_cmpuint(g_variant_n_children(all), ==, 0);
    g_variant_unref(all);
    /* Settings are not entries of the namespace. */
    size_t n = 9;
    g_assert_cmpint(procreg_count(reg, "prod", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 0);

    g_assert_true(wait_changes(&c, 5));
    g_assert_cmpstr(c.log->str, ==,
                    "prod:config_version=41;prod:config_version=42;"
                    "prod:drain=true;prod:hosts=['a', 'b'];"
                    "prod:drain=deleted;");
    g_assert_cmpint(procreg_unsubscribe(reg, id), ==, 0);

    /* Bad input. */
    g_assert_cmpint(procreg_namespace_meta_put(reg, "prod", "",
                                               g_variant_new_int32(1), &err),
                    ==, PROCREG_EINVAL);
    g_clear_error(&err);
    g_assert_cmpint(procreg_namespace_meta_put(reg, "prod", "k", NULL, &err),
                    ==, PROCREG_EINVAL);
    g_clear_error(&err);
    char ns[PROCREG_NAME_MAX + 1];
    memset(ns, 'n', sizeof ns - 1);
    ns[243] = '\0';
    g_assert_cmpint(procreg_namespace_meta_list(reg, ns, &all, &err), ==,
                    PROCREG_EINVAL);
    g_assert_nonnull(strstr(err->message, "at most 242"));
    g_clear_error(&err);
    g_assert_cmpint(procreg_namespace_meta_subscribe(reg, "prod", NULL, NULL,
                                                     NULL, NULL, &id, &err),
                    ==, PROCREG_EINVAL);
    g_clear_error(&err);
    procreg_close(reg);
    g_string_free(c.log, TRUE);
    pthread_mutex_destroy(&c.lock);
    pthread_cond_destroy(&c.cond);
}

/* ---- two puts of a new key ---- */

typedef struct {
    procreg *reg;
    int value;
    int rc;
} putter;

static gpointer put_run(gpointer p)
{
    putter *w = p;
    w->rc = procreg_namespace_meta_put(w->reg, "race", "k",
                                       g_variant_new_int32(w->value), NULL);
    return NULL;
}

/* A put finds the key absent (its update says not found), then another
 * process creates it before the put's own create: the create meets the
 * key taken, and the put goes round and changes it instead. */
static void test_put_race(void)
{
    procreg *reg = open_reg("fake:id=6");
    fake_inner *f = fake_instance(6);
    fake_hold_next(f, FAKE_LOOKUP_ENTRY);
    putter first = {reg, 1, -1};
    GThread *t = g_thread_new("put", put_run, &first);
    fake_wait_held(f, FAKE_LOOKUP_ENTRY); /* it found nothing */
    procreg_owner init;
    g_assert_cmpint(procreg_owner_from_pid(1, &init, NULL), ==, 0);
    fake_set_owner(f, "procreg:meta:race", "k", &init,
                   g_variant_new_parsed("{'value': <2>}"));
    fake_release(f, FAKE_LOOKUP_ENTRY);
    g_thread_join(t);
    g_assert_cmpint(first.rc, ==, 0);
    g_autofree char *v = get_text(reg, "race", "k");
    g_assert_cmpstr(v, ==, "1"); /* ours, the later write */
    procreg_close(reg);
}

/* Many threads put one key at once: each put succeeds, one value stays. */
static void test_put_concurrent(void)
{
    enum { N = 8 };
    procreg *reg = open_reg("ghash");
    putter w[N];
    GThread *t[N];
    for (int i = 0; i < N; i++) {
        w[i] = (putter){reg, i, -1};
        t[i] = g_thread_new("put", put_run, &w[i]);
    }
    for (int i = 0; i < N; i++) {
        g_thread_join(t[i]);
        g_assert_cmpint(w[i].rc, ==, 0);
    }
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, "procreg:meta:race", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    procreg_close(reg);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    fake_inner_register_types();
    for (size_t i = 0; i < G_N_ELEMENTS(thread_specs); i++) {
        if (!backend_built(thread_specs[i]))
            continue;
        g_autofree char *path = g_strdup_printf("/coord/nsmeta/%s/basic",
                                                thread_specs[i]);
        g_test_add_data_func(path, thread_specs[i], test_basic);
    }
    g_test_add_func("/coord/nsmeta/put-race", test_put_race);
    g_test_add_func("/coord/nsmeta/put-concurrent", test_put_concurrent);
    return g_test_run();
}
