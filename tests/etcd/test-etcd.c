/*
 * The etcd backend against a real single-member etcd that this program
 * starts on 127.0.0.1 (tests/etcd/etcd-harness.c); skipped (exit 77) when
 * there is no etcd binary.
 *
 * Every case works under its own key prefix, so cases share the server
 * without seeing each other.
 */
#include "etcd-harness.h"
#include "etcd-test-util.h"

#include <procreg/backend.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static etcd_cluster cluster;
static char *url;  /* the member's client URL */
static char *tag;  /* this run's random prefix component */
static int case_no;

/* A fresh prefix for one case. */
static char *new_prefix(void)
{
    return g_strdup_printf("/procreg-test/%s/c%d", tag, ++case_no);
}

/* Open etcd on our server under @prefix with @extra options. */
static procreg *open_reg(const char *prefix, const char *extra)
{
    return open_spec("etcd:endpoints=[%s],prefix=%s%s%s", url, prefix,
                     extra ? "," : "", extra ? extra : "");
}

/* ------------------------------------------------------------------------ */

/* Threads of one process registering one key with the very same record
 * (owner, registration time): exactly one may win.  Through the core the
 * registration time is each call's own clock, so this is the rare case of
 * two calls in one microsecond, made certain at the backend's level. */
#define SAME_RECORD_THREADS 6
#define SAME_RECORD_ROUNDS 20

typedef struct {
    procreg_backend *backend;
    const procreg_record *record;
    procreg_key *key;
    pthread_mutex_t *lock; /* pthread: ThreadSanitizer sees it */
    pthread_cond_t *cond;
    int *ready;
    int rc;
} same_record_arg;

static gpointer same_record_thread(gpointer data)
{
    same_record_arg *a = data;
    pthread_mutex_lock(a->lock);
    (*a->ready)++;
    pthread_cond_broadcast(a->cond);
    while (*a->ready < SAME_RECORD_THREADS)
        pthread_cond_wait(a->cond, a->lock);
    pthread_mutex_unlock(a->lock);
    a->rc = procreg_backend_register_entry(a->backend, a->key, a->record,
                                           NULL, NULL);
    return NULL;
}

static void test_same_record_race(void)
{
    char *prefix = new_prefix();
    char *spec = g_strdup_printf("etcd:endpoints=[%s],prefix=%s", url, prefix);
    procreg_backend *b = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_backend_open(spec, NULL, &b, &err), ==, 0);
    g_assert_no_error(err);
    procreg_record record = {.registered_at = g_get_real_time()};
    procreg_owner_self(&record.owner);
    for (int r = 0; r < SAME_RECORD_ROUNDS; r++) {
        char name[16];
        g_snprintf(name, sizeof name, "k%d", r);
        procreg_key *key = NULL;
        g_assert_cmpint(procreg_key_new("race", name, &key, NULL), ==, 0);
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_mutex_init(&lock, NULL);
        pthread_cond_init(&cond, NULL);
        int ready = 0;
        same_record_arg args[SAME_RECORD_THREADS];
        GThread *t[SAME_RECORD_THREADS];
        for (int i = 0; i < SAME_RECORD_THREADS; i++) {
            args[i] = (same_record_arg){b, &record, key, &lock, &cond,
                                        &ready, 1};
            t[i] = g_thread_new("same-record", same_record_thread, &args[i]);
        }
        int winners = 0;
        for (int i = 0; i < SAME_RECORD_THREADS; i++) {
            g_thread_join(t[i]);
            if (args[i].rc == 0)
                winners++;
            else
                g_assert_cmpint(args[i].rc, ==, PROCREG_EEXISTS);
        }
        if (winners != 1)
            g_error("round %d: %d threads won one key with the same record",
                    r, winners);
        pthread_mutex_destroy(&lock);
        pthread_cond_destroy(&cond);
        procreg_key_unref(key);
    }
    procreg_backend_close(b);
    g_free(spec);
    g_free(prefix);
}

static void test_spec_errors(void)
{
    GError *err = NULL;
    struct {
        const char *opts;
        const char *needle;
    } bad[] = {
        {"consistency=eventual", "linearizable"},
        {"lease_ttl=1", "lease_ttl"},
        {"timeout_ms=0", "timeout_ms"},
        {"endpoints=ftp://x", "http"},
        {"prefix=/", "prefix"},
        {"host_id=bad host", "host_id"},
        {"watch=maybe", "watch"},
        {"colour=blue", "accepts"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        char *spec = g_str_has_prefix(bad[i].opts, "endpoints=")
                         ? g_strdup_printf("etcd:%s", bad[i].opts)
                         : g_strdup_printf("etcd:endpoints=[%s],%s", url,
                                           bad[i].opts);
        int rc = open_rc(spec, &err);
        g_assert_cmpint(rc, ==, PROCREG_EINVAL);
        g_assert_nonnull(err);
        if (strstr(err->message, bad[i].needle) == NULL)
            g_error("%s: message \"%s\" does not mention %s", spec,
                    err->message, bad[i].needle);
        g_clear_error(&err);
        g_free(spec);
    }
}

static void test_unreachable(void)
{
    int a = etcd_free_port(), b = etcd_free_port();
    char *spec = g_strdup_printf("etcd:endpoints=[http://127.0.0.1:%d,"
                                 "http://127.0.0.1:%d],timeout_ms=2000",
                                 a, b);
    GError *err = NULL;
    gint64 t0 = g_get_monotonic_time();
    int rc = open_rc(spec, &err);
    gint64 took = (g_get_monotonic_time() - t0) / 1000;
    g_assert_cmpint(rc, ==, PROCREG_EBACKEND);
    g_assert_nonnull(err);
    g_test_message("unreachable: %s (%" G_GINT64_FORMAT " ms)", err->message,
                   took);
    g_assert_nonnull(strstr(err->message, "no etcd endpoint reachable"));
    char *pa = g_strdup_printf("127.0.0.1:%d", a);
    char *pb = g_strdup_printf("127.0.0.1:%d", b);
    g_assert_nonnull(strstr(err->message, pa));
    g_assert_nonnull(strstr(err->message, pb));
    /* Refused connections fail at once, not after the budget. */
    g_assert_cmpint(took, <, 2000);
    g_free(pa);
    g_free(pb);
    g_clear_error(&err);
    g_free(spec);
}

static void test_basic(void)
{
    char *prefix = new_prefix();
    procreg *reg = open_reg(prefix, NULL);
    GError *err = NULL;
    procreg_entry e = {0}, cur = {0};

    GVariant *md = g_variant_new_parsed("{'port': <8080>, 'tags': <['a', 'b']>}");
    g_assert_cmpint(procreg_register(reg, "web", "api", NULL, md, &e, &err),
                    ==, 0);
    g_assert_no_error(err);
    g_assert_cmpuint(e.revision, >, 0);

    /* The revision is etcd's mod_revision of the key. */
    char *k = etcd_entry_key_b64(prefix, "web", "api");
    char *body = g_strdup_printf("{\"key\":\"%s\"}", k);
    char *raw = etcd_post(url, "/v3/kv/range", body);
    char *want = g_strdup_printf("\"mod_revision\":\"%" G_GUINT64_FORMAT "\"",
                                 e.revision);
    g_assert_nonnull(raw);
    if (strstr(raw, want) == NULL)
        g_error("range %s lacks %s", raw, want);
    g_free(raw);
    g_free(want);
    g_free(body);

    /* Unique: the second caller learns who holds it. */
    procreg_owner parent;
    g_assert_cmpint(procreg_owner_from_pid(getppid(), &parent, NULL), ==, 0);
    g_assert_cmpint(procreg_register(reg, "web", "api", &parent, NULL, &cur,
                                     &err),
                    ==, PROCREG_EEXISTS);
    g_assert_cmpint(cur.owner.pid, ==, getpid());
    g_assert_cmpuint(cur.revision, ==, e.revision);
    g_clear_error(&err);
    procreg_entry_clear(&cur);

    procreg_entry got = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, "web", "api", &got, &err), ==, 0);
    g_assert_true(g_variant_equal(got.metadata, e.metadata));
    g_assert_cmpint(got.registered_at, ==, e.registered_at);
    procreg_entry_clear(&got);

    /* Owner-safe update and unregister. */
    procreg_key *key = NULL;
    g_assert_cmpint(procreg_key_new("web", "api", &key, NULL), ==, 0);
    uint64_t rev2 = 0;
    g_assert_cmpint(procreg_update_metadata_key(
                        reg, key, g_variant_new_parsed("{'port': <9090>}"),
                        PROCREG_UPDATE_REPLACE, e.revision, &rev2, &err),
                    ==, 0);
    g_assert_cmpuint(rev2, >, e.revision);
    g_assert_cmpint(procreg_update_metadata_key(
                        reg, key, g_variant_new_parsed("{'port': <1>}"),
                        PROCREG_UPDATE_REPLACE, e.revision, NULL, &err),
                    ==, PROCREG_ECONFLICT);
    g_clear_error(&err);
    g_assert_cmpint(procreg_unregister_key(reg, key, e.revision, &err), ==,
                    PROCREG_ECONFLICT);
    g_clear_error(&err);
    g_assert_cmpint(procreg_unregister_key(reg, key, rev2, &err), ==, 0);
    g_assert_cmpint(procreg_unregister_key(reg, key, 0, &err), ==,
                    PROCREG_ENOTFOUND);
    g_clear_error(&err);
    procreg_key_unref(key);

    /* The lease keeps entries alive longer than its TTL. */
    procreg_close(reg);
    reg = open_reg(prefix, "lease_ttl=2");
    g_assert_cmpint(procreg_register(reg, "web", "kept", NULL, NULL, NULL,
                                     &err),
                    ==, 0);
    g_usleep(3500 * 1000);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "web", "kept", &o, &err), ==, 0);

    procreg_health h = {0};
    g_assert_cmpint(procreg_health_check(reg, &h, NULL), ==, 0);
    if (h.status != PROCREG_HEALTH_OK)
        g_error("health: %s", h.message);
    procreg_health_clear(&h);

    procreg_entry_clear(&e);
    g_free(k);
    procreg_close(reg);
    g_free(prefix);
}

static void test_prefix_isolation(void)
{
    char *p1 = new_prefix(), *p2 = new_prefix();
    procreg *a = open_reg(p1, NULL), *b = open_reg(p2, NULL);
    GError *err = NULL;
    g_assert_cmpint(procreg_register(a, "ns", "x", NULL, NULL, NULL, &err), ==,
                    0);
    g_assert_cmpint(procreg_register(b, "ns", "x", NULL, NULL, NULL, &err), ==,
                    0);
    size_t n = 0;
    g_assert_cmpint(procreg_count(a, NULL, &n, &err), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    g_assert_cmpint(procreg_unregister(b, "ns", "x", &err), ==, 0);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(a, "ns", "x", &o, &err), ==, 0);
    procreg_close(a);
    procreg_close(b);
    g_free(p1);
    g_free(p2);
}

static void test_failover(void)
{
    char *prefix = new_prefix();
    char *spec = g_strdup_printf("etcd:endpoints=[http://127.0.0.1:%d,%s],"
                                 "prefix=%s",
                                 etcd_free_port(), url, prefix);
    procreg *reg = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_open(spec, &reg, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpint(procreg_register(reg, "ns", "a", NULL, NULL, NULL, &err),
                    ==, 0);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "ns", "a", &o, &err), ==, 0);
    g_assert_cmpint(backend_stat_int(reg, "failovers"), >=, 1);
    procreg_health h = {0};
    g_assert_cmpint(procreg_health_check(reg, &h, NULL), ==, 0);
    g_test_message("health with one endpoint down: %s: %s",
                   procreg_health_status_name(h.status), h.message);
    g_assert_cmpint(h.status, ==, PROCREG_HEALTH_DEGRADED);
    g_assert_nonnull(strstr(h.message, "endpoints failing"));
    procreg_health_clear(&h);
    procreg_close(reg);
    g_free(spec);
    g_free(prefix);
}

/* Store @value (raw bytes) at (ns, name) under @prefix behind the
 * backend's back. */
static void put_raw(const char *prefix, const char *ns, const char *name,
                    const char *value, size_t len)
{
    char *k = etcd_entry_key_b64(prefix, ns, name);
    char *v = g_base64_encode((const guchar *)value, len);
    char *body = g_strdup_printf("{\"key\":\"%s\",\"value\":\"%s\"}", k, v);
    char *r = etcd_post(url, "/v3/kv/put", body);
    g_assert_nonnull(r);
    g_assert_null(strstr(r, "error"));
    g_free(r);
    g_free(body);
    g_free(v);
    g_free(k);
}

static void test_corrupt_values(void)
{
    char *prefix = new_prefix();
    procreg *reg = open_reg(prefix, NULL);
    recorder rec;
    recorder_start(&rec, reg);
    GError *err = NULL;
    /* A GVariant a{sv} that is not in normal form: an offset past the end. */
    GVariant *md = g_variant_new_parsed("{'k': <'v'>}");
    gsize mlen = g_variant_get_size(md);
    guchar *mbytes = g_memdup2(g_variant_get_data(md), mlen);
    mbytes[mlen - 1] = 0xff;
    char *bad_meta = g_base64_encode(mbytes, mlen);
    char *bad_variant = g_strdup_printf(
        "{\"v\":1,\"pid\":%d,\"start\":1,\"host\":\"h\",\"at\":1,\"w\":\"1\","
        "\"meta\":\"%s\"}", (int)getpid(), bad_meta);
    g_free(mbytes);
    g_free(bad_meta);
    g_variant_unref(g_variant_ref_sink(md));
    /* Two good values back to back: json-glib 1.6 would take one of them
     * (and leak the other). */
    char *good = g_strdup_printf(
        "{\"v\":1,\"pid\":%d,\"start\":1,\"host\":\"h\",\"at\":1,\"w\":\"1\"}",
        (int)getpid());
    char *twice = g_strconcat(good, good, NULL);
    /* Nested past json-glib's stack: refused before it parses. */
    GString *deep = g_string_new("{\"a\":");
    for (int i = 0; i < 200000; i++)
        g_string_append_c(deep, '[');
    for (int i = 0; i < 200000; i++)
        g_string_append_c(deep, ']');
    g_string_append_c(deep, '}');
    const char *values[] = {
        "not json at all",
        "[1,2,3]",
        "{\"v\":2,\"pid\":1,\"start\":0,\"host\":\"h\",\"at\":1,\"w\":\"1\"}",
        "{\"v\":1,\"pid\":0,\"start\":0,\"host\":\"h\",\"at\":1,\"w\":\"1\"}",
        "{\"v\":1,\"pid\":\"12\",\"start\":0,\"host\":\"h\",\"at\":1,\"w\":\"1\"}",
        "{\"v\":1,\"pid\":1,\"start\":0,\"host\":\"h h\",\"at\":1,\"w\":\"1\"}",
        "{\"v\":1,\"pid\":1,\"start\":0,\"host\":\"h\",\"at\":1,\"w\":\"1\","
        "\"meta\":\"%%%\"}",
        bad_variant,
        "",
        twice,
        deep->str,
    };
    for (size_t i = 0; i < G_N_ELEMENTS(values); i++) {
        char *name = g_strdup_printf("bad%zu", i);
        put_raw(prefix, "junk", name, values[i], strlen(values[i]));
        procreg_owner o;
        g_assert_cmpint(procreg_lookup(reg, "junk", name, &o, NULL), ==,
                        PROCREG_EBACKEND);
        procreg_entry e = {0};
        g_assert_cmpint(procreg_lookup_entry(reg, "junk", name, &e, &err), ==,
                        PROCREG_EBACKEND);
        g_assert_nonnull(err);
        if (strstr(err->message, "corrupt value") == NULL)
            g_error("value %zu: message \"%s\"", i, err->message);
        g_clear_error(&err);
        g_assert_cmpint(procreg_update_metadata(reg, "junk", name, NULL,
                                                PROCREG_UPDATE_REPLACE, &err),
                        ==, PROCREG_EBACKEND);
        g_clear_error(&err);
        g_free(name);
    }
    procreg_entry *list = NULL;
    size_t n = 0;
    g_assert_cmpint(procreg_list(reg, "junk", &list, &n, &err), ==,
                    PROCREG_EBACKEND);
    g_assert_nonnull(strstr(err->message, "corrupt"));
    g_clear_error(&err);
    /* Corrupt entries can be removed (they have no owner to check: that
     * takes PROCREG_FORCE), and the namespace is usable again. */
    for (size_t i = 0; i < G_N_ELEMENTS(values); i++) {
        char *name = g_strdup_printf("bad%zu", i);
        procreg_key *key = NULL;
        g_assert_cmpint(procreg_key_new("junk", name, &key, NULL), ==, 0);
        g_assert_cmpint(procreg_unregister_full(reg, key, 0, PROCREG_FORCE,
                                                &err),
                        ==, 0);
        procreg_key_unref(key);
        g_free(name);
    }
    g_assert_cmpint(procreg_register(reg, "junk", "good", NULL, NULL, NULL,
                                     &err),
                    ==, 0);
    g_assert_cmpint(procreg_list(reg, "junk", &list, &n, &err), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    procreg_entries_free(list, n);
    /* The watch saw the garbage, counted it and went on. */
    g_assert_cmpint(backend_stat_int(reg, "corrupt_values_seen"), >=, 1);
    procreg_health h = {0};
    g_assert_cmpint(procreg_health_check(reg, &h, NULL), ==, 0);
    g_assert_cmpint(h.status, ==, PROCREG_HEALTH_OK);
    procreg_health_clear(&h);
    g_free(bad_variant);
    g_free(good);
    g_free(twice);
    g_string_free(deep, TRUE);
    recorder_stop(&rec);
    procreg_close(reg);
    g_free(prefix);
}

static void test_too_large(void)
{
    char *prefix = new_prefix();
    procreg *reg = open_reg(prefix, NULL);
    GError *err = NULL;
    /* Over etcd's --max-request-bytes (1.5 MiB), and over the gateway's
     * gRPC message limit (2 MiB once encoded). */
    const size_t sizes[] = {1200 * 1000, 2 << 20};
    for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
        char *big = g_malloc(sizes[i]);
        memset(big, 'x', sizes[i] - 1);
        big[sizes[i] - 1] = '\0';
        GVariantDict d;
        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "blob", "s", big);
        int rc = procreg_register(reg, "ns", "huge", NULL,
                                  g_variant_dict_end(&d), NULL, &err);
        g_assert_cmpint(rc, ==, PROCREG_EFULL);
        g_test_message("%zu bytes: %s", sizes[i], err->message);
        g_assert_nonnull(strstr(err->message, "too large"));
        g_clear_error(&err);
        procreg_owner o;
        g_assert_cmpint(procreg_lookup(reg, "ns", "huge", &o, NULL), ==,
                        PROCREG_ENOTFOUND);
        g_free(big);
    }
    procreg_close(reg);
    g_free(prefix);
}

static void test_serializable(void)
{
    char *prefix = new_prefix();
    procreg *reg = open_reg(prefix, "consistency=serializable");
    GError *err = NULL;
    g_assert_cmpint(procreg_register(reg, "ns", "s", NULL, NULL, NULL, &err),
                    ==, 0);
    procreg_owner o;
    /* One member: its serializable reads are current. */
    g_assert_cmpint(procreg_lookup(reg, "ns", "s", &o, &err), ==, 0);
    g_assert_cmpint(o.pid, ==, getpid());
    procreg_close(reg);
    g_free(prefix);
}

/* Two registries as two hosts (different host ids, different leases). */
static void test_two_hosts(void)
{
    char *prefix = new_prefix();
    procreg *a = open_reg(prefix, "host_id=host-a");
    procreg *b = open_reg(prefix, "host_id=host-b");
    recorder ra, rb;
    recorder_start(&ra, a);
    recorder_start(&rb, b);
    GError *err = NULL;
    g_assert_cmpint(backend_stat_int(a, "lease"), !=,
                    backend_stat_int(b, "lease"));

    g_assert_cmpint(procreg_register(a, "svc", "x",  NULL,
                                     g_variant_new_parsed("{'v': <1>}"), NULL,
                                     &err),
                    ==, 0);
    const rec_event *ev = recorder_wait(&rb, PROCREG_EVENT_REGISTERED, -1,
                                        "svc", "x", 3000);
    g_assert_nonnull(ev);
    g_assert_true(ev->external);
    g_assert_cmpint(ev->pid, ==, getpid());
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(b, "svc", "x", &o, &err), ==, 0);
    /* B's own registration is visible to A, and wait_for wakes on it. */
    g_assert_cmpint(procreg_register(b, "svc", "y", NULL, NULL, NULL, &err),
                    ==, 0);
    procreg_entry w = {0};
    g_assert_cmpint(procreg_wait_for(a, "svc", "y", 3000, NULL, &w, &err), ==,
                    0);
    procreg_entry_clear(&w);

    g_assert_cmpint(procreg_update_metadata(a, "svc", "x",
                                            g_variant_new_parsed("{'v': <2>}"),
                                            PROCREG_UPDATE_REPLACE, &err),
                    ==, 0);
    g_assert_nonnull(recorder_wait(&rb, PROCREG_EVENT_UPDATED, -1, "svc", "x",
                                   3000));
    g_assert_cmpint(procreg_unregister(a, "svc", "x", &err), ==, 0);
    ev = recorder_wait(&rb, PROCREG_EVENT_UNREGISTERED, -1, "svc", "x", 3000);
    g_assert_nonnull(ev);
    g_assert_cmpint(ev->reason, ==, PROCREG_REASON_EXPLICIT);

    g_assert_cmpint(procreg_register(a, "tmp", "t1", NULL, NULL, NULL, &err),
                    ==, 0);
    g_assert_nonnull(recorder_wait(&rb, PROCREG_EVENT_REGISTERED, -1, "tmp",
                                   "t1", 3000));
    size_t removed = 0;
    g_assert_cmpint(procreg_namespace_drop(a, "tmp", &removed, NULL, &err), ==,
                    0);
    g_assert_cmpuint(removed, ==, 1);
    ev = recorder_wait(&rb, PROCREG_EVENT_UNREGISTERED, -1, "tmp", "t1", 3000);
    g_assert_nonnull(ev);
    g_assert_cmpint(ev->reason, ==, PROCREG_REASON_NAMESPACE_DROPPED);

    /* No change is reported twice: A made x's changes itself. */
    g_usleep(200 * 1000);
    char *dump = recorder_dump(&ra);
    g_test_message("A saw: %s", dump);
    g_assert_cmpuint(recorder_count(&ra, PROCREG_EVENT_REGISTERED, "svc", "x"),
                     ==, 1);
    g_assert_cmpuint(recorder_count(&ra, PROCREG_EVENT_UPDATED, "svc", "x"),
                     ==, 1);
    g_assert_cmpuint(recorder_count(&ra, PROCREG_EVENT_UNREGISTERED, "svc",
                                    "x"),
                     ==, 1);
    g_assert_cmpuint(recorder_count(&ra, PROCREG_EVENT_REGISTERED, "svc", "y"),
                     ==, 1);
    g_free(dump);
    recorder_stop(&ra);
    recorder_stop(&rb);
    procreg_close(a);
    procreg_close(b);
    g_free(prefix);
}

/* A child that opens @spec, registers (ns, name) for itself and waits to
 * be killed.  Returns its pid once it has registered. */
static GPid spawn_owner(const char *spec, const char *ns, const char *name)
{
    char *self = g_file_read_link("/proc/self/exe", NULL);
    const char *argv[] = {self, "--child", spec, ns, name, NULL};
    GPid pid = 0;
    int out = -1;
    GError *err = NULL;
    gboolean ok = g_spawn_async_with_pipes(NULL, (char **)argv, NULL,
                                           G_SPAWN_DO_NOT_REAP_CHILD, NULL,
                                           NULL, &pid, NULL, &out, NULL, &err);
    g_assert_no_error(err);
    g_assert_true(ok);
    char buf[64] = {0};
    ssize_t n = read(out, buf, sizeof buf - 1);
    close(out);
    if (n <= 0 || strncmp(buf, "ready", 5) != 0)
        g_error("child did not register: '%s'", buf);
    g_free(self);
    return pid;
}

static void kill_owner(GPid pid)
{
    kill(pid, SIGKILL);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    g_spawn_close_pid(pid);
}

static int child_main(const char *spec, const char *ns, const char *name)
{
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0 ||
        procreg_register(reg, ns, name, NULL, NULL, NULL, &err) != 0) {
        fprintf(stderr, "child: %s\n", err ? err->message : "?");
        printf("failed\n");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;)
        pause();
}

/* Killing the owner process of one "host" makes its entries vanish for
 * the other within the lease TTL and a margin. */
static void test_owner_killed(void)
{
    char *prefix = new_prefix();
    char *spec = g_strdup_printf("etcd:endpoints=[%s],prefix=%s,host_id=host-"
                                 "c,lease_ttl=2",
                                 url, prefix);
    procreg *b = open_reg(prefix, "host_id=host-b");
    recorder rb;
    recorder_start(&rb, b);
    GPid child = spawn_owner(spec, "svc", "victim");
    procreg_owner o;
    GError *err = NULL;
    g_assert_cmpint(procreg_lookup(b, "svc", "victim", &o, &err), ==, 0);
    g_assert_cmpint(o.pid, ==, child);
    gint64 t0 = g_get_monotonic_time();
    kill_owner(child);
    int rc = 0;
    while ((rc = procreg_lookup(b, "svc", "victim", &o, NULL)) == 0 &&
           g_get_monotonic_time() - t0 < 6 * G_USEC_PER_SEC)
        g_usleep(50 * 1000);
    gint64 took = (g_get_monotonic_time() - t0) / 1000;
    g_test_message("entry of the killed owner vanished after %" G_GINT64_FORMAT
                   " ms (lease TTL 2 s)", took);
    g_assert_cmpint(rc, ==, PROCREG_ENOTFOUND);
    g_assert_cmpint(took, <=, 2000 + 3000);
    const rec_event *ev = recorder_wait(&rb, PROCREG_EVENT_UNREGISTERED, -1,
                                        "svc", "victim", 2000);
    g_assert_nonnull(ev);
    g_assert_cmpint(ev->reason, ==, PROCREG_REASON_EXPIRED);
    g_assert_true(ev->external);
    recorder_stop(&rb);
    procreg_close(b);
    g_free(spec);
    g_free(prefix);
}

#define DEAD_HOLDER_ROUNDS 20

/* A registration right after the holder was SIGKILLed (and reaped) on
 * this host takes the key, 20 times out of 20, each holder a process
 * with its own registry; another host learns of each removal once, with
 * reason owner_exited. */
static void test_same_host_dead_owner(void)
{
    char *prefix = new_prefix();
    char *spec = g_strdup_printf("etcd:endpoints=[%s],prefix=%s,host_id=same,"
                                 "lease_ttl=30",
                                 url, prefix);
    procreg *b = open_reg(prefix, "host_id=same");
    procreg *other = open_reg(prefix, "host_id=other");
    recorder ro;
    recorder_start(&ro, other);
    uint64_t held[DEAD_HOLDER_ROUNDS];
    GError *err = NULL;
    for (int i = 0; i < DEAD_HOLDER_ROUNDS; i++) {
        GPid child = spawn_owner(spec, "svc", "gone");
        procreg_entry e = {0};
        g_assert_cmpint(procreg_lookup_entry(b, "svc", "gone", &e, &err), ==,
                        0);
        g_assert_cmpint(e.owner.pid, ==, child);
        held[i] = e.revision;
        procreg_entry_clear(&e);
        kill_owner(child);
        procreg_entry cur = {0};
        int rc = procreg_register(b, "svc", "gone", NULL, NULL, &cur, &err);
        if (rc != 0)
            g_error("round %d: register after SIGKILL gave %d (%s), holder %d",
                    i, rc, err ? err->message : "", (int)cur.owner.pid);
        g_assert_cmpint(cur.owner.pid, ==, getpid());
        procreg_entry_clear(&cur);
        g_assert_cmpint(procreg_unregister(b, "svc", "gone", &err), ==, 0);
    }
    /* A marker: once its event is here, every change before it is. */
    g_assert_cmpint(procreg_register(b, "svc", "marker", NULL, NULL, NULL,
                                     &err),
                    ==, 0);
    g_assert_nonnull(recorder_wait(&ro, PROCREG_EVENT_REGISTERED, -1, "svc",
                                   "marker", 5000));
    pthread_mutex_lock(&ro.m);
    for (int i = 0; i < DEAD_HOLDER_ROUNDS; i++) {
        int seen = 0;
        for (guint k = 0; k < ro.events->len; k++) {
            const rec_event *ev = ro.events->pdata[k];
            if (ev->kind != PROCREG_EVENT_UNREGISTERED ||
                ev->revision != held[i])
                continue;
            seen++;
            g_assert_cmpint(ev->reason, ==, PROCREG_REASON_OWNER_EXITED);
        }
        if (seen != 1)
            g_error("round %d: the dead holder's removal reached the other "
                    "host %d times", i, seen);
    }
    pthread_mutex_unlock(&ro.m);
    recorder_stop(&ro);
    procreg_close(other);
    procreg_close(b);
    g_free(spec);
    g_free(prefix);
}

/* A lease lost behind the registry's back is noticed, reported and
 * replaced; what can be registered again is, what was taken is listed. */
static void test_lease_lost(void)
{
    char *prefix = new_prefix();
    procreg *a = open_reg(prefix, "host_id=host-a,lease_ttl=3");
    procreg *b = open_reg(prefix, "host_id=host-b");
    recorder ra;
    recorder_start(&ra, a);
    GError *err = NULL;
    procreg_entry k1 = {0};
    g_assert_cmpint(procreg_register(a, "svc", "k1", NULL, NULL, &k1, &err),
                    ==, 0);
    g_assert_cmpint(procreg_register(a, "svc", "k2", NULL, NULL, NULL, &err),
                    ==, 0);
    gint64 lease = backend_stat_int(a, "lease");
    g_assert_cmpint(lease, >, 0);
    char *body = g_strdup_printf("{\"ID\":\"%" G_GINT64_FORMAT "\"}", lease);
    char *r = etcd_post(url, "/v3/lease/revoke", body);
    g_assert_nonnull(r);
    g_free(r);
    g_free(body);
    /* B takes k2 while A's lease is gone. */
    g_assert_cmpint(procreg_register(b, "svc", "k2", NULL, NULL, NULL, &err),
                    ==, 0);

    /* Within a keepalive period (1 s) A has a new lease and k1 back. */
    gint64 t0 = g_get_monotonic_time();
    procreg_entry e = {0};
    bool back = false;
    while (!back && g_get_monotonic_time() - t0 < 5 * G_USEC_PER_SEC) {
        if (procreg_lookup_entry(a, "svc", "k1", &e, NULL) == 0) {
            back = e.revision > k1.revision;
            procreg_entry_clear(&e);
        }
        if (!back)
            g_usleep(50 * 1000);
    }
    g_assert_true(back);
    g_assert_cmpint(backend_stat_int(a, "leases_lost"), ==, 1);
    g_assert_cmpint(backend_stat_int(a, "lease"), !=, lease);
    /* k1 may come back before the keeper reaches k2. */
    procreg_health h = {0};
    for (int i = 0; i < 100; i++) {
        procreg_health_clear(&h);
        g_assert_cmpint(procreg_health_check(a, &h, NULL), ==, 0);
        if (h.message != NULL && strstr(h.message, "svc/k2") != NULL)
            break;
        g_usleep(20 * 1000);
    }
    g_test_message("after the loss: %s: %s",
                   procreg_health_status_name(h.status), h.message);
    g_assert_cmpint(h.status, ==, PROCREG_HEALTH_DEGRADED);
    g_assert_nonnull(strstr(h.message, "lease lost"));
    g_assert_nonnull(strstr(h.message, "svc/k2"));
    procreg_health_clear(&h);
    /* Events: both went (expired), k1 came back. */
    const rec_event *ev = recorder_wait(&ra, PROCREG_EVENT_UNREGISTERED,
                                        PROCREG_REASON_EXPIRED, "svc", "k1",
                                        2000);
    g_assert_nonnull(ev);
    g_assert_nonnull(recorder_wait(&ra, PROCREG_EVENT_UNREGISTERED,
                                   PROCREG_REASON_EXPIRED, "svc", "k2", 2000));
    g_assert_nonnull(recorder_wait(&ra, PROCREG_EVENT_REGISTERED, -1, "svc",
                                   "k1", 2000));
    /* The restored entry lives on the new lease: it outlasts the old TTL. */
    g_usleep(3500 * 1000);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(a, "svc", "k1", &o, &err), ==, 0);
    g_assert_cmpint(procreg_lookup(a, "svc", "k2", &o, &err), ==, 0);
    procreg_entry_clear(&k1);
    recorder_stop(&ra);
    procreg_close(a);
    procreg_close(b);
    g_free(prefix);
}

#define WORKERS 5

/* Owners that exit while the registry they registered through lives on:
 * its monitor sees each death and removes the entry at once, so another
 * host hears of it (owner_exited, once) in milliseconds, long before the
 * keeper's next round (lease_ttl 10: every 3.3 s) or the lease. */
static void test_owner_exited_reason(void)
{
    char *prefix = new_prefix();
    procreg *a = open_reg(prefix, "host_id=host-a,lease_ttl=10");
    procreg *b = open_reg(prefix, "host_id=host-b");
    recorder ra, rb;
    recorder_start(&ra, a);
    recorder_start(&rb, b);
    GError *err = NULL;
    GPid pids[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        const char *argv[] = {"sleep", "30", NULL};
        g_assert_true(g_spawn_async(NULL, (char **)argv, NULL,
                                    G_SPAWN_SEARCH_PATH |
                                        G_SPAWN_DO_NOT_REAP_CHILD,
                                    NULL, NULL, &pids[i], &err));
        procreg_owner o;
        g_assert_cmpint(procreg_owner_from_pid(pids[i], &o, &err), ==, 0);
        char name[16];
        g_snprintf(name, sizeof name, "w%d", i);
        g_assert_cmpint(procreg_register(a, "svc", name, &o, NULL, NULL,
                                         &err),
                        ==, 0);
        g_assert_nonnull(recorder_wait(&rb, PROCREG_EVENT_REGISTERED, -1,
                                       "svc", name, 3000));
    }
    gint64 worst = 0;
    for (int i = 0; i < WORKERS; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "w%d", i);
        kill_owner(pids[i]);
        gint64 t0 = g_get_monotonic_time();
        const rec_event *ev = recorder_wait(&rb, PROCREG_EVENT_UNREGISTERED,
                                            -1, "svc", name, 5000);
        if (ev == NULL) {
            char *d = recorder_dump(&rb);
            g_error("no removal of %s seen; B saw %s", name, d);
        }
        worst = MAX(worst, ev->at - t0);
        g_assert_cmpint(ev->reason, ==, PROCREG_REASON_OWNER_EXITED);
    }
    g_test_message("an owner's death reached the other host within %"
                   G_GINT64_FORMAT " ms (worst of %d)", worst / 1000, WORKERS);
    g_assert_cmpint(worst / 1000, <, 1000);
    /* Reported once on each host. */
    g_usleep(200 * 1000);
    for (int i = 0; i < WORKERS; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "w%d", i);
        g_assert_cmpuint(recorder_count(&ra, PROCREG_EVENT_UNREGISTERED, "svc",
                                        name),
                         ==, 1);
        g_assert_cmpuint(recorder_count(&rb, PROCREG_EVENT_UNREGISTERED, "svc",
                                        name),
                         ==, 1);
    }
    recorder_stop(&ra);
    recorder_stop(&rb);
    procreg_close(a);
    procreg_close(b);
    g_free(prefix);
}

/* Poll @reg's lookup of (ns, name) until it answers @want_rc (and, for
 * 0, owner @want_pid); returns the milliseconds it took or -1. */
static gint64 lookup_until(procreg *reg, const char *ns, const char *name,
                           int want_rc, pid_t want_pid, int ms)
{
    gint64 t0 = g_get_monotonic_time();
    do {
        procreg_owner o = {0};
        int rc = procreg_lookup(reg, ns, name, &o, NULL);
        if (rc == want_rc && (rc != 0 || o.pid == want_pid))
            return (g_get_monotonic_time() - t0) / 1000;
        g_usleep(2000);
    } while (g_get_monotonic_time() - t0 < (gint64)ms * 1000);
    return -1;
}

/* optimized:inner=etcd caches lookups; the watch keeps the cache fresh
 * when another host changes an entry. */
static void test_optimized_fresh(void)
{
    char **names = procreg_backend_names();
    bool have = g_strv_contains((const char *const *)names, "optimized");
    g_strfreev(names);
    if (!have) {
        g_test_skip("the optimized backend is not built");
        return;
    }
    char *prefix = new_prefix();
    char *spec = g_strdup_printf("optimized:inner=[etcd:endpoints=[%s],"
                                 "prefix=%s,host_id=host-a]",
                                 url, prefix);
    procreg *a = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_open(spec, &a, &err), ==, 0);
    procreg *b = open_reg(prefix, "host_id=host-b");
    procreg_owner o, parent;
    g_assert_cmpint(procreg_owner_from_pid(getppid(), &parent, NULL), ==, 0);

    g_assert_cmpint(procreg_lookup(a, "svc", "x", &o, NULL), ==,
                    PROCREG_ENOTFOUND);
    g_assert_cmpint(procreg_register(b, "svc", "x", NULL, NULL, NULL, &err),
                    ==, 0);
    gint64 t = lookup_until(a, "svc", "x", 0, getpid(), 3000);
    g_test_message("cached lookup saw another host's registration after %"
                   G_GINT64_FORMAT " ms", t);
    g_assert_cmpint(t, >=, 0);
    /* Now cached: drop it elsewhere, then take it for another owner. */
    g_assert_cmpint(procreg_lookup(a, "svc", "x", &o, NULL), ==, 0);
    g_assert_cmpint(procreg_unregister(b, "svc", "x", &err), ==, 0);
    t = lookup_until(a, "svc", "x", PROCREG_ENOTFOUND, 0, 3000);
    g_test_message("... and its removal after %" G_GINT64_FORMAT " ms", t);
    g_assert_cmpint(t, >=, 0);
    g_assert_cmpint(procreg_register(b, "svc", "x", &parent, NULL, NULL, &err),
                    ==, 0);
    t = lookup_until(a, "svc", "x", 0, parent.pid, 3000);
    g_assert_cmpint(t, >=, 0);
    procreg_close(a);
    procreg_close(b);
    g_free(spec);
    g_free(prefix);
}

int main(int argc, char **argv)
{
    etcd_harness_env(argv);
    if (argc == 5 && strcmp(argv[1], "--child") == 0)
        return child_main(argv[2], argv[3], argv[4]);
    etcd_harness_args(&argc, argv);
    g_test_init(&argc, &argv, NULL);
    etcd_cluster_start_or_exit(&cluster, 1);
    url = etcd_member_url(&cluster, 0);
    tag = etcd_random_tag();

    g_test_add_func("/etcd/spec-errors", test_spec_errors);
    g_test_add_func("/etcd/unreachable", test_unreachable);
    g_test_add_func("/etcd/basic", test_basic);
    g_test_add_func("/etcd/same-record-race", test_same_record_race);
    g_test_add_func("/etcd/prefix-isolation", test_prefix_isolation);
    g_test_add_func("/etcd/failover", test_failover);
    g_test_add_func("/etcd/corrupt-values", test_corrupt_values);
    g_test_add_func("/etcd/too-large", test_too_large);
    g_test_add_func("/etcd/serializable", test_serializable);
    g_test_add_func("/etcd/two-hosts", test_two_hosts);
    g_test_add_func("/etcd/owner-killed", test_owner_killed);
    g_test_add_func("/etcd/same-host-dead-owner", test_same_host_dead_owner);
    g_test_add_func("/etcd/owner-exited-reason", test_owner_exited_reason);
    g_test_add_func("/etcd/lease-lost", test_lease_lost);
    g_test_add_func("/etcd/optimized-fresh", test_optimized_fresh);
    int rc = g_test_run();

    etcd_cluster_destroy(&cluster);
    g_free(url);
    g_free(tag);
    return rc;
}
