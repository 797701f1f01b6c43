/*
 * etcd: the registry in an etcd cluster, through its v3 JSON gateway.
 *
 * One instance (one open registry) holds:
 *   - a client (etcd-client.c): keep-alive handles, endpoint failover,
 *     a time budget on every request;
 *   - a lease, granted at open and kept alive by the keeper thread every
 *     TTL/3.  Entries this instance registers are attached to it, so they
 *     expire everywhere when the process or its host dies.  A lost lease
 *     (keepalive answered without a TTL, or a put refused with "lease not
 *     found") is re-granted and the entries this instance still owns, with
 *     owners still alive, are registered again; those taken meanwhile are
 *     reported by health_check;
 *   - the keeper also reaps entries it registered whose owner process
 *     died (reason OWNER_EXITED);
 *   - a watch thread: one streaming watch on the prefix, resumed from the
 *     last revision after a reconnect, with a resync on compaction.  It
 *     reports changes made by other instances through
 *     procreg_backend_host_notify(); changes this instance made are the
 *     core's to report, so they are skipped (the value names its writer).
 *
 * Layout of keys and values: etcd-codec.h.  Revisions are etcd's
 * mod_revision: one cluster-wide counter, so they only ever increase.
 */
#include "etcd-client.h"
#include "etcd-codec.h"

#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND 1
#endif
#include <procreg/backend.h>

#include <pthread.h>
#include <string.h>
#include <time.h>

#define DEFAULT_ENDPOINTS "http://127.0.0.1:2379"
#define DEFAULT_PREFIX "/procreg"
#define DEFAULT_TTL_S 10
#define DEFAULT_TIMEOUT_MS 5000
#define PREFIX_MAX 512
/* How many times a write retries after losing a race or the lease. */
#define WRITE_ATTEMPTS 8
/* Entries per page when reading a range. */
#define RANGE_PAGE 1000
/* Tombstones (keys removed by others) are kept this long. */
#define TOMB_KEEP_US (60 * G_USEC_PER_SEC)
/* A lease loss keeps health at DEGRADED this long. */
#define LOSS_REPORT_US (60 * G_USEC_PER_SEC)
/* Watch reconnect backoff. */
#define WATCH_BACKOFF_MIN_MS 50
#define WATCH_BACKOFF_MAX_MS 2000

static const procreg_backend_option etcd_options[] = {
    {"endpoints", "client URLs, [bracketed] when several: "
                  "endpoints=[http://a:2379,http://b:2379] (default "
                  DEFAULT_ENDPOINTS ")"},
    {"prefix", "key prefix of this registry (default " DEFAULT_PREFIX ")"},
    {"lease_ttl", "lease TTL in seconds, at least 2 (default 10)"},
    {"timeout_ms", "time budget of each request (default 5000)"},
    {"consistency", "reads: linearizable (default) or serializable"},
    {"host_id", "this host's id (default: /etc/machine-id)"},
    {"watch", "watch the cluster for other writers' changes (default true)"},
    {NULL, NULL},
};

/* An entry this instance registered, for re-registration and reaping. */
typedef struct {
    char *value;    /* JSON value as written */
    size_t value_len;
    int64_t mod_rev;
    procreg_owner owner;
} owned_entry;

/* What the watch remembers of each key, to resync after a compaction. */
typedef struct {
    int64_t mod_rev;
    int64_t create_rev;
    int64_t lease;
    GBytes *value;
} mirror_entry;

typedef struct {
    int64_t rev;
    char writer[ETCD_WRITER_LEN + 1];
    int reason;
} marker;

typedef struct {
    etcd_client *client;
    procreg_backend_host *host;
    GString *prefix;    /* no trailing '/' */
    GString *eprefix;   /* prefix + "/e/" */
    GString *why_key;   /* prefix + "/why" */
    char host_id[ETCD_HOST_ID_MAX + 1];
    char writer[ETCD_WRITER_LEN + 1];
    unsigned timeout_ms;
    int64_t ttl_s;
    bool serializable;
    bool watch_enabled;

    pthread_mutex_t lock; /* everything below up to the watch part */
    pthread_cond_t cond;
    bool stopping;
    int64_t lease;          /* 0 while none */
    int64_t lease_ttl;      /* as granted */
    gint64 last_keepalive;  /* monotonic µs of the last good keepalive */
    char *keeper_error;     /* last keepalive failure, NULL when fine */
    guint leases_lost;
    gint64 last_loss;       /* monotonic µs, 0: never */
    bool restore_pending;
    bool kick;              /* wake the keeper now */
    GPtrArray *unrestored;  /* char*, from the last re-registration */
    guint64 reaped;
    GHashTable *owned;      /* GBytes etcd key -> owned_entry* */
    GHashTable *tombs;      /* GBytes etcd key -> gint64* [rev, when] */
    pthread_mutex_t renew_lock;      /* one lease grant at a time */
    GThread *keeper;

    /* watch: the mirror belongs to the watch thread */
    GThread *watcher;
    etcd_stream *stream;
    GHashTable *mirror; /* GBytes etcd key -> mirror_entry* */
    gint64 watch_rev;   /* atomic: last revision the watch has seen */
    gint watch_connected;
    char *watch_error;  /* under lock */
    guint64 mirror_bytes, watch_reconnects, compactions, corrupt_seen,
        notified; /* atomic */
    uint64_t puts; /* atomic: registrations made; the next one's nonce */
} etcd_state;

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

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */

static void atomic_add(guint64 *p, guint64 n)
{
    __atomic_fetch_add(p, n, __ATOMIC_RELAXED);
}

static guint64 atomic_get(guint64 *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void atomic_sub(guint64 *p, guint64 n)
{
    __atomic_fetch_sub(p, n, __ATOMIC_RELAXED);
}

static int64_t current_lease(etcd_state *s)
{
    pthread_mutex_lock(&s->lock);
    int64_t l = s->lease;
    pthread_mutex_unlock(&s->lock);
    return l;
}

/* The etcd key of @key: prefix/e/ns\0name. */
static GString *entry_key(etcd_state *s, const procreg_key *key)
{
    GString *k = g_string_sized_new(s->eprefix->len + procreg_key_size(key) + 1);
    g_string_append_len(k, s->eprefix->str, (gssize)s->eprefix->len);
    g_string_append_len(k, procreg_key_bytes(key),
                         (gssize)procreg_key_size(key));
    return k;
}

/* Range end for every key starting with @k (@n bytes): the key with its
 * last byte increased; a run of 0xff bytes is dropped first. */
static GString *prefix_end(const char *k, size_t n)
{
    GString *e = g_string_new_len(k, (gssize)n);
    while (e->len > 0 && (guchar)e->str[e->len - 1] == 0xff)
        g_string_truncate(e, e->len - 1);
    if (e->len > 0)
        e->str[e->len - 1] = (char)((guchar)e->str[e->len - 1] + 1);
    return e;
}

/* The range of namespace @ns (NULL: all entries) as [*start, *end). */
static void ns_range(etcd_state *s, const char *ns, GString **start,
                     GString **end)
{
    *start = g_string_new_len(s->eprefix->str, (gssize)s->eprefix->len);
    if (ns != NULL) {
        g_string_append(*start, ns);
        g_string_append_c(*start, '\0');
    }
    *end = prefix_end((*start)->str, (*start)->len);
}

static void json_key(GString *b, const char *member, const void *k, size_t n)
{
    g_string_append_printf(b, "\"%s\":", member);
    procreg_etcd_append_b64(b, k, n);
}

/* Split an etcd key prefix/e/ns\0name into ns and name (validated). */
static bool split_key(etcd_state *s, const guchar *k, size_t n, char **ns,
                      char **name)
{
    *ns = *name = NULL;
    if (n <= s->eprefix->len || memcmp(k, s->eprefix->str, s->eprefix->len) != 0)
        return false;
    const char *p = (const char *)k + s->eprefix->len;
    size_t rest = n - s->eprefix->len;
    const char *nul = memchr(p, '\0', rest);
    if (nul == NULL)
        return false;
    char *a = g_strndup(p, (gsize)(nul - p));
    char *b = g_strndup(nul + 1, (gsize)(rest - (size_t)(nul - p) - 1));
    /* g_strndup stops at a NUL: a name holding one is not ours. */
    if (strlen(b) != rest - (size_t)(nul - p) - 1 ||
        procreg_validate_name(a, "namespace", NULL) != 0 ||
        procreg_validate_name(b, "name", NULL) != 0) {
        g_free(a);
        g_free(b);
        return false;
    }
    *ns = a;
    *name = b;
    return true;
}

/* A printable form of an etcd key for messages; g_free it. */
static char *key_for_humans(const guchar *k, size_t n)
{
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < n && i < 600; i++) {
        if (k[i] == 0)
            g_string_append(s, "\\0");
        else if (k[i] < 0x20 || k[i] == 0x7f)
            g_string_append_printf(s, "\\x%02x", k[i]);
        else
            g_string_append_c(s, (char)k[i]);
    }
    return g_string_free(s, FALSE);
}

/* Decode @kv's value or report it corrupt. */
static int kv_value(const etcd_kv *kv, etcd_value *v, GError **error)
{
    const char *why = NULL;
    if (procreg_etcd_value_decode(kv->value, kv->value_len, v, &why))
        return 0;
    char *k = key_for_humans(kv->key, kv->key_len);
    int rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "etcd: corrupt value at key '%s': %s", k, why);
    g_free(k);
    return rc;
}

/* An entry on this host whose owner process is gone: treated as absent
 * here at once (the lease removes it everywhere later, or its registry's
 * keeper reaps it). */
static bool owner_dead_here(etcd_state *s, const etcd_value *v)
{
    return strcmp(v->host, s->host_id) == 0 && !procreg_owner_is_alive(&v->owner);
}

static void fill_entry(const etcd_value *v, int64_t revision, char *ns,
                       char *name, procreg_entry *out)
{
    if (out == NULL) {
        g_free(ns);
        g_free(name);
        return;
    }
    memset(out, 0, sizeof *out);
    out->ns = ns;
    out->name = name;
    out->owner = v->owner;
    out->metadata = v->metadata ? g_variant_ref(v->metadata) : NULL;
    out->registered_at = v->registered_at;
    out->revision = (uint64_t)revision;
}

/* Responses of a txn: the @i-th op's reply object of @kind
 * ("response_range", ...), or NULL. */
static JsonObject *txn_response(JsonObject *reply, guint i, const char *kind)
{
    JsonArray *a = procreg_etcd_json_array(reply, "responses");
    if (a == NULL || i >= json_array_get_length(a))
        return NULL;
    JsonNode *n = json_array_get_element(a, i);
    if (!JSON_NODE_HOLDS_OBJECT(n))
        return NULL;
    return procreg_etcd_json_obj(json_node_get_object(n), kind);
}

/* The first kv of a range reply (or a prev_kvs array holder), parsed. */
static bool first_kv(JsonObject *o, const char *member, etcd_kv *kv)
{
    JsonArray *a = procreg_etcd_json_array(o, member);
    if (a == NULL || json_array_get_length(a) == 0)
        return false;
    JsonNode *n = json_array_get_element(a, 0);
    return JSON_NODE_HOLDS_OBJECT(n) && procreg_etcd_kv_parse(json_node_get_object(n), kv);
}

/* ---- txn bodies ---- */

static void op_put(GString *b, const GString *key, const char *value,
                   size_t value_len, int64_t lease, bool ignore_lease)
{
    g_string_append(b, "{\"request_put\":{");
    json_key(b, "key", key->str, key->len);
    g_string_append_c(b, ',');
    json_key(b, "value", value, value_len);
    if (ignore_lease)
        g_string_append(b, ",\"ignore_lease\":true");
    else if (lease != 0)
        g_string_append_printf(b, ",\"lease\":\"%" G_GINT64_FORMAT "\"",
                               (gint64)lease);
    g_string_append(b, "}}");
}

static void op_delete(GString *b, const GString *key, const GString *end)
{
    g_string_append(b, "{\"request_delete_range\":{");
    json_key(b, "key", key->str, key->len);
    if (end != NULL) {
        g_string_append_c(b, ',');
        json_key(b, "range_end", end->str, end->len);
    }
    g_string_append(b, ",\"prev_kv\":true}}");
}

static void op_range(GString *b, const GString *key)
{
    g_string_append(b, "{\"request_range\":{");
    json_key(b, "key", key->str, key->len);
    g_string_append(b, "}}");
}

/* The reason marker written with a removal. */
static void op_marker(etcd_state *s, GString *b, const char *writer,
                      procreg_event_reason reason)
{
    char value[ETCD_MARKER_MAX];
    size_t n = procreg_etcd_marker_encode(writer, (int)reason, value);
    op_put(b, s->why_key, value, n, 0, false);
}

static void cmp(GString *b, const GString *key, const char *target,
                const char *result, const char *field, int64_t v)
{
    g_string_append_c(b, '{');
    json_key(b, "key", key->str, key->len);
    g_string_append_printf(b,
                           ",\"target\":\"%s\",\"result\":\"%s\",\"%s\":\"%"
                           G_GINT64_FORMAT "\"}",
                           target, result, field, (gint64)v);
}

/* ------------------------------------------------------------------------ */
/* Owned entries and tombstones (under s->lock)                             */

static void owned_free(gpointer p)
{
    owned_entry *o = p;
    g_free(o->value);
    g_free(o);
}

static void owned_put_locked(etcd_state *s, const GString *key,
                             const char *value, size_t len, int64_t rev,
                             const procreg_owner *owner)
{
    GBytes *k = g_bytes_new(key->str, key->len);
    gint64 *tomb = g_hash_table_lookup(s->tombs, k);
    if (tomb != NULL && tomb[0] > rev) {
        /* Removed by someone else after this write. */
        g_bytes_unref(k);
        return;
    }
    owned_entry *o = g_hash_table_lookup(s->owned, k);
    if (o != NULL && o->mod_rev > rev) {
        g_bytes_unref(k);
        return;
    }
    o = g_new0(owned_entry, 1);
    o->value = g_strndup(value, len);
    o->value_len = len;
    o->mod_rev = rev;
    o->owner = *owner;
    g_hash_table_replace(s->owned, k, o);
}

static void owned_put(etcd_state *s, const GString *key, const char *value,
                      size_t len, int64_t rev, const procreg_owner *owner)
{
    pthread_mutex_lock(&s->lock);
    owned_put_locked(s, key, value, len, rev, owner);
    pthread_mutex_unlock(&s->lock);
}

/* Forget @key (@n bytes) after a removal at @rev; @tomb records it so a
 * late owned_put() of an older write does not bring it back. */
static void owned_remove_locked(etcd_state *s, const void *key, size_t n,
                                int64_t rev, bool tomb)
{
    GBytes *k = g_bytes_new(key, n);
    owned_entry *o = g_hash_table_lookup(s->owned, k);
    if (o != NULL && o->mod_rev < rev)
        g_hash_table_remove(s->owned, k);
    if (tomb) {
        gint64 *t = g_new(gint64, 2);
        t[0] = rev;
        t[1] = g_get_monotonic_time();
        g_hash_table_replace(s->tombs, g_bytes_ref(k), t);
    }
    g_bytes_unref(k);
}

static void owned_remove(etcd_state *s, const void *key, size_t n, int64_t rev)
{
    pthread_mutex_lock(&s->lock);
    owned_remove_locked(s, key, n, rev, true);
    pthread_mutex_unlock(&s->lock);
}

/* ------------------------------------------------------------------------ */
/* Leases                                                                   */

static int lease_grant(etcd_state *s, int64_t *id, int64_t *ttl,
                       GError **error)
{
    char body[64];
    g_snprintf(body, sizeof body, "{\"TTL\":\"%" G_GINT64_FORMAT "\"}",
               (gint64)s->ttl_s);
    JsonNode *reply = NULL;
    int rc = procreg_etcd_call(s->client, "/v3/lease/grant", body, 0, &reply,
                               error);
    if (rc == ETCD_ELEASE_GONE)
        rc = PROCREG_EBACKEND;
    if (rc != 0)
        return rc;
    JsonObject *o = json_node_get_object(reply);
    if (!procreg_etcd_json_int(o, "ID", id) || *id == 0 ||
        !procreg_etcd_json_int(o, "TTL", ttl) || *ttl <= 0) {
        const char *msg = NULL;
        JsonNode *e = json_object_get_member(o, "error");
        if (e != NULL && JSON_NODE_HOLDS_VALUE(e) &&
            json_node_get_value_type(e) == G_TYPE_STRING)
            msg = json_node_get_string(e);
        rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "etcd did not grant a lease%s%s",
                               msg ? ": " : "", msg ? msg : "");
    }
    json_node_unref(reply);
    return rc;
}

/* Replace a lost lease @old with a new one (once, however many threads
 * notice).  The keeper re-registers what this instance owned. */
static int lease_renew(etcd_state *s, int64_t old, GError **error)
{
    pthread_mutex_lock(&s->renew_lock);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    bool done = s->lease != old;
    if (!done && old != 0) {
        s->lease = 0;
        s->leases_lost++;
        s->last_loss = g_get_monotonic_time();
        s->restore_pending = true;
    }
    pthread_mutex_unlock(&s->lock);
    if (!done) {
        int64_t id = 0, ttl = 0;
        rc = lease_grant(s, &id, &ttl, error);
        pthread_mutex_lock(&s->lock);
        if (rc == 0) {
            s->lease = id;
            s->lease_ttl = ttl;
            s->last_keepalive = g_get_monotonic_time();
            s->kick = true;
            g_free(s->keeper_error);
            s->keeper_error = NULL;
        } else {
            g_free(s->keeper_error);
            s->keeper_error = g_strdup_printf(
                "lease lost and not granted again: %s",
                error && *error ? (*error)->message : procreg_strerror(rc));
        }
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_unlock(&s->renew_lock);
    return rc;
}

/* The lease to attach a new entry to, granting one if there is none. */
static int lease_for_write(etcd_state *s, int64_t *lease, GError **error)
{
    *lease = current_lease(s);
    if (*lease != 0)
        return 0;
    int rc = lease_renew(s, 0, error);
    if (rc != 0)
        return rc;
    *lease = current_lease(s);
    return *lease != 0 ? 0
                       : procreg_set_error(error, PROCREG_EBACKEND,
                                           "etcd: no lease to attach the "
                                           "entry to");
}

/* ------------------------------------------------------------------------ */
/* Reads                                                                    */

/* Get one key.  *@found false when absent. */
static int get_kv(etcd_state *s, const GString *key, bool linearizable,
                  etcd_kv *kv, bool *found, GError **error)
{
    GString *b = g_string_sized_new(64 + key->len * 2);
    g_string_append_c(b, '{');
    json_key(b, "key", key->str, key->len);
    bool ser = s->serializable && !linearizable;
    if (ser)
        g_string_append(b, ",\"serializable\":true");
    g_string_append_c(b, '}');
    JsonNode *reply = NULL;
    int rc = procreg_etcd_call(s->client, "/v3/kv/range", b->str,
                               ser ? ETCD_CALL_NO_LEADER_NEEDED : 0, &reply,
                               error);
    g_string_free(b, TRUE);
    if (rc != 0)
        return rc == ETCD_ELEASE_GONE ? PROCREG_EBACKEND : rc;
    JsonObject *o = json_node_get_object(reply);
    *found = false;
    JsonArray *kvs = procreg_etcd_json_array(o, "kvs");
    if (kvs != NULL && json_array_get_length(kvs) > 0) {
        if (!first_kv(o, "kvs", kv))
            rc = procreg_set_error(error, PROCREG_EBACKEND,
                                   "etcd sent a malformed range reply");
        else
            *found = true;
    }
    json_node_unref(reply);
    return rc;
}

typedef int (*kv_fn)(etcd_state *s, etcd_kv *kv, void *user, GError **error);

/* Visit every kv in [start, end), page by page, all pages at the
 * revision of the first.  @keys_only skips values.  @max: stop after that
 * many (0: all).  *@revision (optional) receives the snapshot revision. */
static int range_all(etcd_state *s, const GString *start, const GString *end,
                     bool keys_only, bool serializable, size_t max, kv_fn fn,
                     void *user, int64_t *revision, GError **error)
{
    GString *from = g_string_new_len(start->str, (gssize)start->len);
    int64_t rev = 0;
    size_t seen = 0;
    int rc = 0;
    for (;;) {
        size_t page = RANGE_PAGE;
        if (max != 0 && max - seen < page)
            page = max - seen;
        GString *b = g_string_new("{");
        json_key(b, "key", from->str, from->len);
        g_string_append_c(b, ',');
        json_key(b, "range_end", end->str, end->len);
        g_string_append_printf(b, ",\"limit\":\"%zu\"", page);
        if (rev != 0)
            g_string_append_printf(b, ",\"revision\":\"%" G_GINT64_FORMAT "\"",
                                   (gint64)rev);
        if (keys_only)
            g_string_append(b, ",\"keys_only\":true");
        if (serializable)
            g_string_append(b, ",\"serializable\":true");
        g_string_append_c(b, '}');
        JsonNode *reply = NULL;
        rc = procreg_etcd_call(s->client, "/v3/kv/range", b->str,
                               serializable ? ETCD_CALL_NO_LEADER_NEEDED : 0,
                               &reply, error);
        g_string_free(b, TRUE);
        if (rc != 0) {
            if (rc == ETCD_ELEASE_GONE)
                rc = PROCREG_EBACKEND;
            break;
        }
        JsonObject *o = json_node_get_object(reply);
        if (rev == 0)
            rev = procreg_etcd_header_revision(o);
        JsonArray *kvs = procreg_etcd_json_array(o, "kvs");
        guint n = kvs ? json_array_get_length(kvs) : 0;
        etcd_kv last = {0};
        for (guint i = 0; rc == 0 && i < n; i++) {
            JsonNode *node = json_array_get_element(kvs, i);
            etcd_kv kv;
            if (!JSON_NODE_HOLDS_OBJECT(node) ||
                !procreg_etcd_kv_parse(json_node_get_object(node), &kv)) {
                rc = procreg_set_error(error, PROCREG_EBACKEND,
                                       "etcd sent a malformed range reply");
                break;
            }
            rc = fn(s, &kv, user, error);
            seen++;
            procreg_etcd_kv_clear(&last);
            last = kv;
        }
        bool more = procreg_etcd_json_bool(o, "more");
        json_node_unref(reply);
        if (rc != 0 || !more || n == 0 || (max != 0 && seen >= max)) {
            procreg_etcd_kv_clear(&last);
            break;
        }
        /* Next page: just after the last key. */
        g_string_truncate(from, 0);
        g_string_append_len(from, (const char *)last.key, (gssize)last.key_len);
        g_string_append_c(from, '\0');
        procreg_etcd_kv_clear(&last);
    }
    g_string_free(from, TRUE);
    if (rc == 0 && revision != NULL)
        *revision = rev;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Ops                                                                      */

static int etcd_lookup_full(etcd_state *s, const procreg_key *key,
                            etcd_value *v, int64_t *rev, GError **error)
{
    GString *k = entry_key(s, key);
    etcd_kv kv;
    bool found = false;
    int rc = get_kv(s, k, false, &kv, &found, error);
    g_string_free(k, TRUE);
    if (rc != 0)
        return rc;
    if (!found)
        return PROCREG_ENOTFOUND;
    rc = kv_value(&kv, v, error);
    *rev = kv.mod_rev;
    procreg_etcd_kv_clear(&kv);
    if (rc == 0 && owner_dead_here(s, v)) {
        procreg_etcd_value_clear(v);
        rc = PROCREG_ENOTFOUND;
    }
    return rc;
}

static int etcd_lookup(void *state, const procreg_key *key, procreg_owner *out)
{
    etcd_value v;
    int64_t rev;
    int rc = etcd_lookup_full(state, key, &v, &rev, NULL);
    if (rc == 0) {
        *out = v.owner;
        procreg_etcd_value_clear(&v);
        return 0;
    }
    return rc == PROCREG_ENOTFOUND ? rc : PROCREG_EBACKEND;
}

static int etcd_lookup_entry(void *state, const procreg_key *key,
                             procreg_entry *out, GError **error)
{
    etcd_value v;
    int64_t rev;
    int rc = etcd_lookup_full(state, key, &v, &rev, error);
    if (rc == 0) {
        fill_entry(&v, rev, NULL, NULL, out);
        procreg_etcd_value_clear(&v);
    }
    return rc;
}

/* Remove @k while it is at @rev, with reason @reason written by the
 * backend itself (writer "0"), so every watcher reports it.
 * @return 0 (removed or changed meanwhile) or a transport error. */
static int evict(etcd_state *s, const GString *k, int64_t rev,
                 procreg_event_reason reason, bool *removed, GError **error)
{
    GString *b = g_string_new("{\"compare\":[");
    cmp(b, k, "MOD", "EQUAL", "mod_revision", rev);
    g_string_append(b, "],\"success\":[");
    op_delete(b, k, NULL);
    g_string_append_c(b, ',');
    op_marker(s, b, "0", reason);
    g_string_append(b, "]}");
    JsonNode *reply = NULL;
    int rc = procreg_etcd_call(s->client, "/v3/kv/txn", b->str, 0, &reply,
                               error);
    g_string_free(b, TRUE);
    if (rc != 0)
        return rc == ETCD_ELEASE_GONE ? PROCREG_EBACKEND : rc;
    JsonObject *o = json_node_get_object(reply);
    *removed = procreg_etcd_json_bool(o, "succeeded");
    if (*removed)
        owned_remove(s, k->str, k->len, procreg_etcd_header_revision(o));
    json_node_unref(reply);
    return 0;
}

static int etcd_register(void *state, const procreg_key *key,
                         const procreg_record *record, procreg_entry *current,
                         GError **error)
{
    etcd_state *s = state;
    etcd_value v = {.owner = record->owner,
                    .registered_at = record->registered_at,
                    .metadata = record->metadata};
    g_strlcpy(v.host, s->host_id, sizeof v.host);
    g_strlcpy(v.writer, s->writer, sizeof v.writer);
    v.nonce = __atomic_add_fetch(&s->puts, 1, __ATOMIC_RELAXED);
    size_t vlen = 0;
    char *value = procreg_etcd_value_encode(&v, &vlen);
    GString *k = entry_key(s, key);
    int rc = PROCREG_EBACKEND;
    bool lease_retry_done = false;
    for (int attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
        int64_t lease = 0;
        rc = lease_for_write(s, &lease, error);
        if (rc != 0)
            break;
        GString *b = g_string_new("{\"compare\":[");
        cmp(b, k, "CREATE", "EQUAL", "create_revision", 0);
        g_string_append(b, "],\"success\":[");
        op_put(b, k, value, vlen, lease, false);
        g_string_append(b, "],\"failure\":[");
        op_range(b, k);
        g_string_append(b, "]}");
        JsonNode *reply = NULL;
        GError *local = NULL;
        rc = procreg_etcd_call(s->client, "/v3/kv/txn", b->str, 0, &reply,
                               &local);
        g_string_free(b, TRUE);
        if (rc == ETCD_ELEASE_GONE && !lease_retry_done) {
            /* Our lease expired (a partition longer than its TTL): take a
             * new one and try again. */
            g_clear_error(&local);
            lease_retry_done = true;
            rc = lease_renew(s, lease, error);
            if (rc != 0)
                break;
            rc = PROCREG_EBACKEND;
            continue;
        }
        if (rc != 0) {
            if (rc == ETCD_ELEASE_GONE)
                rc = PROCREG_EBACKEND;
            g_propagate_error(error, local);
            break;
        }
        JsonObject *o = json_node_get_object(reply);
        if (procreg_etcd_json_bool(o, "succeeded")) {
            int64_t rev = procreg_etcd_header_revision(o);
            owned_put(s, k, value, vlen, rev, &record->owner);
            fill_entry(&v, rev, NULL, NULL, current);
            json_node_unref(reply);
            rc = 0;
            break;
        }
        etcd_kv held;
        bool have = first_kv(txn_response(o, 0, "response_range"), "kvs",
                             &held);
        json_node_unref(reply);
        if (!have) {
            rc = PROCREG_EBACKEND; /* gone between compare and read */
            continue;
        }
        etcd_value hv;
        rc = kv_value(&held, &hv, error);
        if (rc != 0) {
            procreg_etcd_kv_clear(&held);
            break;
        }
        if (strcmp(hv.writer, s->writer) == 0 && hv.nonce == v.nonce &&
            held.lease == lease) {
            /* Our own put, applied by a member whose answer was lost
             * before a retry on another endpoint. */
            owned_put(s, k, value, vlen, held.mod_rev, &record->owner);
            fill_entry(&hv, held.mod_rev, NULL, NULL, current);
            procreg_etcd_value_clear(&hv);
            procreg_etcd_kv_clear(&held);
            rc = 0;
            break;
        }
        if (owner_dead_here(s, &hv)) {
            /* The holder's process died on this host: evict it, like a
             * lease expiry would later, and try again. */
            bool removed = false;
            rc = evict(s, k, held.mod_rev, PROCREG_REASON_OWNER_EXITED,
                       &removed, error);
            procreg_etcd_value_clear(&hv);
            procreg_etcd_kv_clear(&held);
            if (rc != 0)
                break;
            rc = PROCREG_EBACKEND;
            continue;
        }
        fill_entry(&hv, held.mod_rev, NULL, NULL, current);
        procreg_etcd_value_clear(&hv);
        procreg_etcd_kv_clear(&held);
        rc = PROCREG_EEXISTS;
        break;
    }
    if (rc == PROCREG_EBACKEND && error != NULL && *error == NULL)
        procreg_set_error(error, rc,
                          "etcd: registration kept losing races (%d attempts)",
                          WRITE_ATTEMPTS);
    g_string_free(k, TRUE);
    g_free(value);
    return rc;
}

static int etcd_unregister(void *state, const procreg_key *key,
                           uint64_t if_revision, procreg_entry *removed,
                           GError **error)
{
    etcd_state *s = state;
    GString *k = entry_key(s, key);
    /* The core removes the entries of owners that exited through this op;
     * tell the other hosts so. */
    procreg_event_reason reason = PROCREG_REASON_EXPLICIT;
    pthread_mutex_lock(&s->lock);
    GBytes *kb = g_bytes_new(k->str, k->len);
    owned_entry *mine = g_hash_table_lookup(s->owned, kb);
    if (mine != NULL && !procreg_owner_is_alive(&mine->owner))
        reason = PROCREG_REASON_OWNER_EXITED;
    g_bytes_unref(kb);
    pthread_mutex_unlock(&s->lock);
    GString *b = g_string_new("{\"compare\":[");
    if (if_revision != 0)
        cmp(b, k, "MOD", "EQUAL", "mod_revision", (int64_t)if_revision);
    else
        cmp(b, k, "VERSION", "GREATER", "version", 0);
    g_string_append(b, "],\"success\":[");
    op_delete(b, k, NULL);
    g_string_append_c(b, ',');
    op_marker(s, b, s->writer, reason);
    g_string_append(b, "],\"failure\":[");
    op_range(b, k);
    g_string_append(b, "]}");
    JsonNode *reply = NULL;
    int rc = procreg_etcd_call(s->client, "/v3/kv/txn", b->str, 0, &reply,
                               error);
    g_string_free(b, TRUE);
    if (rc != 0) {
        g_string_free(k, TRUE);
        return rc == ETCD_ELEASE_GONE ? PROCREG_EBACKEND : rc;
    }
    JsonObject *o = json_node_get_object(reply);
    if (procreg_etcd_json_bool(o, "succeeded")) {
        owned_remove(s, k->str, k->len, procreg_etcd_header_revision(o));
        etcd_kv prev;
        if (removed != NULL) {
            memset(removed, 0, sizeof *removed);
            if (first_kv(txn_response(o, 0, "response_delete_range"),
                         "prev_kvs", &prev)) {
                etcd_value v;
                const char *why;
                if (procreg_etcd_value_decode(prev.value, prev.value_len, &v,
                                              &why)) {
                    fill_entry(&v, prev.mod_rev, NULL, NULL, removed);
                    procreg_etcd_value_clear(&v);
                } else {
                    removed->revision = (uint64_t)prev.mod_rev;
                }
                procreg_etcd_kv_clear(&prev);
            }
        }
        rc = 0;
    } else {
        JsonArray *kvs = procreg_etcd_json_array(
            txn_response(o, 0, "response_range"), "kvs");
        rc = kvs != NULL && json_array_get_length(kvs) > 0 && if_revision != 0
                 ? PROCREG_ECONFLICT
                 : PROCREG_ENOTFOUND;
    }
    json_node_unref(reply);
    g_string_free(k, TRUE);
    return rc;
}

static int etcd_update_metadata(void *state, const procreg_key *key,
                                GVariant *metadata, uint64_t if_revision,
                                procreg_entry *updated, GError **error)
{
    etcd_state *s = state;
    GString *k = entry_key(s, key);
    int rc = PROCREG_ECONFLICT;
    for (int attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
        etcd_kv kv;
        bool found = false;
        rc = get_kv(s, k, true, &kv, &found, error);
        if (rc != 0)
            break;
        if (!found) {
            rc = PROCREG_ENOTFOUND;
            break;
        }
        if (if_revision != 0 && (uint64_t)kv.mod_rev != if_revision) {
            procreg_etcd_kv_clear(&kv);
            rc = PROCREG_ECONFLICT;
            break;
        }
        etcd_value v;
        rc = kv_value(&kv, &v, error);
        if (rc == 0 && owner_dead_here(s, &v))
            rc = PROCREG_ENOTFOUND;
        if (rc != 0) {
            procreg_etcd_value_clear(&v);
            procreg_etcd_kv_clear(&kv);
            break;
        }
        if (v.metadata != NULL)
            g_variant_unref(v.metadata);
        v.metadata = metadata ? g_variant_ref(metadata) : NULL;
        g_strlcpy(v.writer, s->writer, sizeof v.writer);
        size_t vlen = 0;
        char *value = procreg_etcd_value_encode(&v, &vlen);
        GString *b = g_string_new("{\"compare\":[");
        cmp(b, k, "MOD", "EQUAL", "mod_revision", kv.mod_rev);
        g_string_append(b, "],\"success\":[");
        /* ignore_lease: the entry keeps the lease it has, whoever's. */
        op_put(b, k, value, vlen, 0, true);
        g_string_append(b, "]}");
        JsonNode *reply = NULL;
        rc = procreg_etcd_call(s->client, "/v3/kv/txn", b->str, 0, &reply,
                               error);
        g_string_free(b, TRUE);
        if (rc == 0) {
            JsonObject *o = json_node_get_object(reply);
            if (procreg_etcd_json_bool(o, "succeeded")) {
                int64_t rev = procreg_etcd_header_revision(o);
                pthread_mutex_lock(&s->lock);
                GBytes *kb = g_bytes_new(k->str, k->len);
                if (g_hash_table_contains(s->owned, kb))
                    owned_put_locked(s, k, value, vlen, rev, &v.owner);
                g_bytes_unref(kb);
                pthread_mutex_unlock(&s->lock);
                fill_entry(&v, rev, NULL, NULL, updated);
            } else {
                rc = PROCREG_ECONFLICT;
            }
            json_node_unref(reply);
        } else if (rc == ETCD_ELEASE_GONE) {
            rc = PROCREG_EBACKEND;
        }
        g_free(value);
        procreg_etcd_value_clear(&v);
        procreg_etcd_kv_clear(&kv);
        /* Changed between the read and the write: a pinned revision is a
         * conflict, otherwise read again. */
        if (rc != PROCREG_ECONFLICT || if_revision != 0)
            break;
    }
    g_string_free(k, TRUE);
    if (rc == PROCREG_ECONFLICT && error != NULL && *error == NULL &&
        if_revision == 0)
        procreg_set_error(error, rc,
                          "etcd: the entry kept changing during the update "
                          "(%d attempts)", WRITE_ATTEMPTS);
    return rc;
}

typedef struct {
    GArray *out;
    bool count_only;
    size_t count;
} list_ctx;

static int list_one(etcd_state *s, etcd_kv *kv, void *user, GError **error)
{
    list_ctx *c = user;
    char *ns = NULL, *name = NULL;
    if (!split_key(s, kv->key, kv->key_len, &ns, &name)) {
        char *k = key_for_humans(kv->key, kv->key_len);
        int rc = procreg_set_error(error, PROCREG_EBACKEND,
                                   "etcd: corrupt key '%s' (not "
                                   "<prefix>/e/<namespace>\\0<name>)", k);
        g_free(k);
        return rc;
    }
    etcd_value v;
    int rc = kv_value(kv, &v, error);
    if (rc == 0 && !owner_dead_here(s, &v)) {
        if (c->count_only) {
            c->count++;
        } else {
            procreg_entry e;
            fill_entry(&v, kv->mod_rev, ns, name, &e);
            ns = name = NULL;
            g_array_append_val(c->out, e);
        }
    }
    if (rc == 0)
        procreg_etcd_value_clear(&v);
    g_free(ns);
    g_free(name);
    /* The caller keeps the kv for paging. */
    return rc;
}

static int etcd_list_all(void *state, const char *ns, GArray *out,
                         GError **error)
{
    etcd_state *s = state;
    GString *start, *end;
    ns_range(s, ns, &start, &end);
    list_ctx c = {.out = out};
    int rc = range_all(s, start, end, false, s->serializable, 0, list_one, &c,
                       NULL, error);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    return rc;
}

static int etcd_count(void *state, const char *ns, size_t *out,
                      GError **error)
{
    etcd_state *s = state;
    GString *start, *end;
    ns_range(s, ns, &start, &end);
    list_ctx c = {.count_only = true};
    int rc = range_all(s, start, end, false, s->serializable, 0, list_one, &c,
                       NULL, error);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    *out = rc == 0 ? c.count : 0;
    return rc;
}

typedef struct {
    GPtrArray *out;
} names_ctx;

static int name_one(etcd_state *s, etcd_kv *kv, void *user, GError **error)
{
    names_ctx *c = user;
    char *ns = NULL, *name = NULL;
    if (split_key(s, kv->key, kv->key_len, &ns, &name))
        g_ptr_array_add(c->out, name);
    g_free(ns);
    return 0;
}

static int etcd_list_names(void *state, const char *ns, size_t max,
                           GPtrArray *out)
{
    etcd_state *s = state;
    if (max == 0)
        return 0;
    GString *start, *end;
    ns_range(s, ns, &start, &end);
    names_ctx c = {.out = out};
    int rc = range_all(s, start, end, true, s->serializable, max, name_one,
                       &c, NULL, NULL);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    return rc;
}

static int etcd_drop_namespace(void *state, const char *ns, GArray *removed,
                               GError **error)
{
    etcd_state *s = state;
    GString *start, *end;
    ns_range(s, ns, &start, &end);
    /* One transaction: the range goes in one revision, with its marker. */
    GString *b = g_string_new("{\"success\":[");
    op_delete(b, start, end);
    g_string_append_c(b, ',');
    op_marker(s, b, s->writer, PROCREG_REASON_NAMESPACE_DROPPED);
    g_string_append(b, "]}");
    JsonNode *reply = NULL;
    int rc = procreg_etcd_call(s->client, "/v3/kv/txn", b->str, 0, &reply,
                               error);
    g_string_free(b, TRUE);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    if (rc != 0)
        return rc == ETCD_ELEASE_GONE ? PROCREG_EBACKEND : rc;
    JsonObject *o = json_node_get_object(reply);
    int64_t rev = procreg_etcd_header_revision(o);
    JsonArray *prev = procreg_etcd_json_array(
        txn_response(o, 0, "response_delete_range"), "prev_kvs");
    guint n = prev ? json_array_get_length(prev) : 0;
    pthread_mutex_lock(&s->lock);
    for (guint i = 0; i < n; i++) {
        JsonNode *node = json_array_get_element(prev, i);
        etcd_kv kv;
        if (!JSON_NODE_HOLDS_OBJECT(node) ||
            !procreg_etcd_kv_parse(json_node_get_object(node), &kv))
            continue;
        owned_remove_locked(s, kv.key, kv.key_len, rev, true);
        char *kns = NULL, *kname = NULL;
        if (removed != NULL && split_key(s, kv.key, kv.key_len, &kns, &kname)) {
            etcd_value v;
            const char *why;
            procreg_entry e = {0};
            if (procreg_etcd_value_decode(kv.value, kv.value_len, &v, &why)) {
                fill_entry(&v, kv.mod_rev, kns, kname, &e);
                procreg_etcd_value_clear(&v);
            } else {
                e.ns = kns;
                e.name = kname;
                e.revision = (uint64_t)kv.mod_rev;
            }
            g_array_append_val(removed, e);
        }
        procreg_etcd_kv_clear(&kv);
    }
    pthread_mutex_unlock(&s->lock);
    json_node_unref(reply);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Keeper: lease keepalive, re-registration, reaping                        */

/* Register again, on the new lease, what this instance owned when its
 * lease was lost.  Entries whose owner died are dropped; entries someone
 * else took meanwhile are listed in s->unrestored. */
static void restore_owned(etcd_state *s)
{
    pthread_mutex_lock(&s->lock);
    s->restore_pending = false;
    int64_t lease = s->lease;
    GPtrArray *keys = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, s->owned);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_ptr_array_add(keys, g_bytes_ref(k));
    if (s->unrestored != NULL)
        g_ptr_array_unref(s->unrestored);
    s->unrestored = g_ptr_array_new_with_free_func(g_free);
    pthread_mutex_unlock(&s->lock);
    if (lease == 0) {
        g_ptr_array_unref(keys);
        return;
    }
    for (guint i = 0; i < keys->len; i++) {
        pthread_mutex_lock(&s->lock);
        bool stopping = s->stopping;
        if (stopping)
            s->restore_pending = true;
        pthread_mutex_unlock(&s->lock);
        if (stopping)
            break;
        gsize klen;
        const char *kraw = g_bytes_get_data(keys->pdata[i], &klen);
        GString *key = g_string_new_len(kraw, (gssize)klen);
        pthread_mutex_lock(&s->lock);
        owned_entry *o = g_hash_table_lookup(s->owned, keys->pdata[i]);
        char *value = o ? g_strndup(o->value, o->value_len) : NULL;
        size_t vlen = o ? o->value_len : 0;
        pthread_mutex_unlock(&s->lock);
        etcd_value v;
        const char *why;
        if (value == NULL ||
            !procreg_etcd_value_decode(value, vlen, &v, &why)) {
            g_free(value);
            g_string_free(key, TRUE);
            continue;
        }
        g_free(value);
        if (!procreg_owner_is_alive(&v.owner)) {
            pthread_mutex_lock(&s->lock);
            g_hash_table_remove(s->owned, keys->pdata[i]);
            pthread_mutex_unlock(&s->lock);
            procreg_etcd_value_clear(&v);
            g_string_free(key, TRUE);
            continue;
        }
        /* Writer "0": every watcher, this one included, reports it. */
        g_strlcpy(v.writer, "0", sizeof v.writer);
        value = procreg_etcd_value_encode(&v, &vlen);
        GString *b = g_string_new("{\"compare\":[");
        cmp(b, key, "CREATE", "EQUAL", "create_revision", 0);
        g_string_append(b, "],\"success\":[");
        op_put(b, key, value, vlen, lease, false);
        g_string_append(b, "],\"failure\":[");
        op_range(b, key);
        g_string_append(b, "]}");
        JsonNode *reply = NULL;
        GError *err = NULL;
        int rc = procreg_etcd_call(s->client, "/v3/kv/txn", b->str, 0, &reply,
                                   &err);
        g_string_free(b, TRUE);
        char *ns = NULL, *name = NULL;
        split_key(s, (const guchar *)key->str, key->len, &ns, &name);
        if (rc == 0) {
            JsonObject *ro = json_node_get_object(reply);
            etcd_kv held = {0};
            if (procreg_etcd_json_bool(ro, "succeeded")) {
                owned_put(s, key, value, vlen, procreg_etcd_header_revision(ro), &v.owner);
            } else if (first_kv(txn_response(ro, 0, "response_range"), "kvs",
                                &held) && held.lease == lease) {
                /* Registered again already (by a write that renewed). */
            } else {
                etcd_value hv;
                const char *hwhy;
                char *who = NULL;
                if (held.key != NULL &&
                    procreg_etcd_value_decode(held.value, held.value_len, &hv,
                                              &hwhy)) {
                    who = g_strdup_printf("pid %d on host %s",
                                          (int)hv.owner.pid, hv.host);
                    procreg_etcd_value_clear(&hv);
                }
                pthread_mutex_lock(&s->lock);
                g_hash_table_remove(s->owned, keys->pdata[i]);
                g_ptr_array_add(s->unrestored,
                                g_strdup_printf("%s/%s (taken by %s)",
                                                ns ? ns : "?",
                                                name ? name : "?",
                                                who ? who : "another owner"));
                pthread_mutex_unlock(&s->lock);
                g_free(who);
            }
            procreg_etcd_kv_clear(&held);
            json_node_unref(reply);
        } else {
            pthread_mutex_lock(&s->lock);
            /* Try again on the next tick. */
            s->restore_pending = true;
            g_ptr_array_add(s->unrestored,
                            g_strdup_printf("%s/%s (%s)", ns ? ns : "?",
                                            name ? name : "?",
                                            err ? err->message
                                                : procreg_strerror(rc)));
            pthread_mutex_unlock(&s->lock);
        }
        g_clear_error(&err);
        g_free(ns);
        g_free(name);
        g_free(value);
        procreg_etcd_value_clear(&v);
        g_string_free(key, TRUE);
    }
    g_ptr_array_unref(keys);
}

/* Remove the entries this instance registered whose owner died. */
static void reap_dead_owners(etcd_state *s)
{
    GPtrArray *dead = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    GArray *revs = g_array_new(FALSE, FALSE, sizeof(int64_t));
    pthread_mutex_lock(&s->lock);
    GHashTableIter it;
    gpointer k, val;
    g_hash_table_iter_init(&it, s->owned);
    while (g_hash_table_iter_next(&it, &k, &val)) {
        owned_entry *o = val;
        if (!procreg_owner_is_alive(&o->owner)) {
            g_ptr_array_add(dead, g_bytes_ref(k));
            g_array_append_val(revs, o->mod_rev);
        }
    }
    pthread_mutex_unlock(&s->lock);
    for (guint i = 0; i < dead->len; i++) {
        pthread_mutex_lock(&s->lock);
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->lock);
        if (stopping)
            break;
        gsize n;
        const char *raw = g_bytes_get_data(dead->pdata[i], &n);
        GString *key = g_string_new_len(raw, (gssize)n);
        bool removed = false;
        if (evict(s, key, g_array_index(revs, int64_t, i),
                  PROCREG_REASON_OWNER_EXITED, &removed, NULL) == 0) {
            if (removed)
                atomic_add(&s->reaped, 1);
            pthread_mutex_lock(&s->lock);
            /* Gone or changed: either way no longer the entry we knew. */
            owned_entry *o = g_hash_table_lookup(s->owned, dead->pdata[i]);
            if (o != NULL && o->mod_rev == g_array_index(revs, int64_t, i))
                g_hash_table_remove(s->owned, dead->pdata[i]);
            pthread_mutex_unlock(&s->lock);
        }
        g_string_free(key, TRUE);
    }
    g_array_unref(revs);
    g_ptr_array_unref(dead);
}

static void prune_tombs_locked(etcd_state *s)
{
    gint64 now = g_get_monotonic_time();
    GHashTableIter it;
    gpointer val;
    g_hash_table_iter_init(&it, s->tombs);
    while (g_hash_table_iter_next(&it, NULL, &val))
        if (now - ((gint64 *)val)[1] > TOMB_KEEP_US)
            g_hash_table_iter_remove(&it);
}

/* One keepalive.  Returns false when the lease is gone. */
static bool keepalive_once(etcd_state *s, int64_t lease, unsigned budget_ms)
{
    char body[64];
    g_snprintf(body, sizeof body, "{\"ID\":\"%" G_GINT64_FORMAT "\"}",
               (gint64)lease);
    JsonNode *reply = NULL;
    GError *err = NULL;
    int rc = procreg_etcd_call_timeout(s->client, "/v3/lease/keepalive", body,
                                       0, budget_ms, &reply, &err);
    bool alive = true;
    pthread_mutex_lock(&s->lock);
    if (rc == 0) {
        JsonObject *res = procreg_etcd_json_obj(json_node_get_object(reply),
                                                "result");
        int64_t ttl = 0;
        procreg_etcd_json_int(res, "TTL", &ttl);
        if (res != NULL && ttl > 0) {
            s->last_keepalive = g_get_monotonic_time();
            g_free(s->keeper_error);
            s->keeper_error = NULL;
        } else if (res != NULL) {
            /* Answered without a TTL: the lease expired or was revoked. */
            alive = false;
        } else {
            g_free(s->keeper_error);
            s->keeper_error = g_strdup("keepalive: etcd sent no result");
        }
        json_node_unref(reply);
    } else if (rc == ETCD_ELEASE_GONE) {
        alive = false;
    } else {
        g_free(s->keeper_error);
        s->keeper_error = g_strdup_printf("keepalive failed: %s",
                                          err ? err->message
                                              : procreg_strerror(rc));
    }
    pthread_mutex_unlock(&s->lock);
    g_clear_error(&err);
    return alive;
}

static gpointer keeper_main(gpointer data)
{
    etcd_state *s = data;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        gint64 interval_us = MAX(s->lease_ttl, 1) * G_USEC_PER_SEC / 3;
        gint64 until = g_get_monotonic_time() + interval_us;
        while (!s->stopping && !s->kick && g_get_monotonic_time() < until)
            cond_wait_until(&s->cond, &s->lock, until);
        if (s->stopping)
            break;
        s->kick = false;
        int64_t lease = s->lease;
        pthread_mutex_unlock(&s->lock);

        unsigned budget = (unsigned)MIN((gint64)s->timeout_ms,
                                        MAX(interval_us / 1000, 200));
        if (lease == 0)
            lease_renew(s, 0, NULL);
        else if (!keepalive_once(s, lease, budget))
            lease_renew(s, lease, NULL);
        pthread_mutex_lock(&s->lock);
        bool restore = s->restore_pending && s->lease != 0 && !s->stopping;
        pthread_mutex_unlock(&s->lock);
        if (restore)
            restore_owned(s);
        reap_dead_owners(s);
        pthread_mutex_lock(&s->lock);
        prune_tombs_locked(s);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Watch                                                                    */

static void mirror_free(gpointer p)
{
    mirror_entry *m = p;
    if (m->value != NULL)
        g_bytes_unref(m->value);
    g_free(m);
}

static void mirror_set(etcd_state *s, GHashTable *mirror, const etcd_kv *kv)
{
    mirror_entry *m = g_new0(mirror_entry, 1);
    m->mod_rev = kv->mod_rev;
    m->create_rev = kv->create_rev;
    m->lease = kv->lease;
    m->value = g_bytes_new(kv->value, kv->value_len);
    GBytes *k = g_bytes_new(kv->key, kv->key_len);
    mirror_entry *old = g_hash_table_lookup(mirror, k);
    if (old != NULL)
        atomic_sub(&s->mirror_bytes, g_bytes_get_size(old->value) + kv->key_len +
                                         sizeof *old);
    atomic_add(&s->mirror_bytes, kv->value_len + kv->key_len + sizeof *m);
    g_hash_table_replace(mirror, k, m);
}

static void mirror_remove(etcd_state *s, GHashTable *mirror, const void *key,
                          size_t n)
{
    GBytes *k = g_bytes_new(key, n);
    mirror_entry *old = g_hash_table_lookup(mirror, k);
    if (old != NULL) {
        atomic_sub(&s->mirror_bytes,
                   g_bytes_get_size(old->value) + n + sizeof *old);
        g_hash_table_remove(mirror, k);
    }
    g_bytes_unref(k);
}

static GHashTable *mirror_new(void)
{
    return g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                 (GDestroyNotify)g_bytes_unref, mirror_free);
}

/* Report one change to the core. */
static void notify(etcd_state *s, procreg_event_kind kind,
                   procreg_event_reason reason, const void *key, size_t klen,
                   const void *value, size_t vlen, int64_t revision)
{
    char *ns = NULL, *name = NULL;
    if (!split_key(s, key, klen, &ns, &name)) {
        atomic_add(&s->corrupt_seen, 1);
        return;
    }
    procreg_entry e = {0};
    etcd_value v;
    const char *why;
    if (value != NULL && procreg_etcd_value_decode(value, vlen, &v, &why)) {
        fill_entry(&v, revision, ns, name, &e);
        procreg_etcd_value_clear(&v);
    } else if (kind != PROCREG_EVENT_UNREGISTERED) {
        /* A registration we cannot read is not one to announce. */
        atomic_add(&s->corrupt_seen, 1);
        g_free(ns);
        g_free(name);
        return;
    } else {
        e.ns = ns;
        e.name = name;
        e.revision = (uint64_t)revision;
    }
    atomic_add(&s->notified, 1);
    procreg_backend_host_notify(s->host, kind, reason, &e);
    procreg_entry_clear(&e);
}

static bool is_entry_key(etcd_state *s, const guchar *k, size_t n)
{
    return n > s->eprefix->len && memcmp(k, s->eprefix->str, s->eprefix->len) == 0;
}

static bool is_why_key(etcd_state *s, const guchar *k, size_t n)
{
    return n == s->why_key->len && memcmp(k, s->why_key->str, n) == 0;
}

/* The writer of a value, or "" when unreadable. */
static void value_writer(const void *value, size_t len, char *out)
{
    etcd_value v;
    const char *why;
    out[0] = '\0';
    if (value != NULL && procreg_etcd_value_decode(value, len, &v, &why)) {
        g_strlcpy(out, v.writer, ETCD_WRITER_LEN + 1);
        procreg_etcd_value_clear(&v);
    }
}

/* Apply one watch event from another writer (or an expiry). */
static void apply_event(etcd_state *s, const etcd_watch_event *ev,
                        GArray *markers)
{
    if (ev->type == ETCD_EVENT_NOT_OBJECT)
        return;
    if (ev->type == ETCD_EVENT_BAD) {
        atomic_add(&s->corrupt_seen, 1);
        return;
    }
    const etcd_kv *kv = &ev->kv;
    if (!is_entry_key(s, kv->key, kv->key_len))
        return;
    int64_t my_lease = current_lease(s);
    if (ev->type == ETCD_EVENT_PUT) {
        char writer[ETCD_WRITER_LEN + 1];
        value_writer(kv->value, kv->value_len, writer);
        bool created = kv->create_rev == kv->mod_rev;
        mirror_set(s, s->mirror, kv);
        if (strcmp(writer, s->writer) != 0) {
            /* Another writer touched a key we own: follow it. */
            pthread_mutex_lock(&s->lock);
            GBytes *kb = g_bytes_new(kv->key, kv->key_len);
            owned_entry *o = g_hash_table_lookup(s->owned, kb);
            /* On another lease, the key was taken after ours expired:
             * left for restore_owned() to report. */
            if (o != NULL && o->mod_rev < kv->mod_rev &&
                kv->lease == my_lease && my_lease != 0) {
                g_free(o->value);
                o->value = g_strndup((const char *)kv->value, kv->value_len);
                o->value_len = kv->value_len;
                o->mod_rev = kv->mod_rev;
            }
            g_bytes_unref(kb);
            pthread_mutex_unlock(&s->lock);
            notify(s, created ? PROCREG_EVENT_REGISTERED : PROCREG_EVENT_UPDATED,
                   PROCREG_REASON_NONE, kv->key, kv->key_len, kv->value,
                   kv->value_len, kv->mod_rev);
        }
    } else {
        const marker *m = NULL;
        for (guint i = 0; i < markers->len; i++)
            if (g_array_index(markers, marker, i).rev == kv->mod_rev)
                m = &g_array_index(markers, marker, i);
        const void *old = ev->have_prev ? ev->prev.value : NULL;
        size_t old_len = ev->have_prev ? ev->prev.value_len : 0;
        GBytes *mirrored = NULL;
        if (old == NULL) {
            GBytes *kb = g_bytes_new(kv->key, kv->key_len);
            mirror_entry *me = g_hash_table_lookup(s->mirror, kb);
            if (me != NULL) {
                mirrored = g_bytes_ref(me->value);
                old = g_bytes_get_data(mirrored, &old_len);
            }
            g_bytes_unref(kb);
        }
        mirror_remove(s, s->mirror, kv->key, kv->key_len);
        if (m != NULL) {
            /* An explicit removal: no longer ours to re-register. */
            pthread_mutex_lock(&s->lock);
            owned_remove_locked(s, kv->key, kv->key_len, kv->mod_rev, true);
            pthread_mutex_unlock(&s->lock);
        }
        if (m == NULL || strcmp(m->writer, s->writer) != 0)
            notify(s, PROCREG_EVENT_UNREGISTERED,
                   m ? (procreg_event_reason)m->reason : PROCREG_REASON_EXPIRED,
                   kv->key, kv->key_len, old, old_len, kv->mod_rev);
        if (mirrored != NULL)
            g_bytes_unref(mirrored);
    }
}

typedef struct {
    etcd_state *s;
    bool said; /* watch_line() recorded why the stream ended */
    bool created;
    bool resync;
    bool progressed;
} watch_ctx;

static void set_watch_error(etcd_state *s, const char *msg)
{
    pthread_mutex_lock(&s->lock);
    g_free(s->watch_error);
    s->watch_error = g_strdup(msg);
    pthread_mutex_unlock(&s->lock);
}

/* Record why the stream ends: "@prefix: @what". */
static void watch_said(watch_ctx *c, const char *prefix, const char *what)
{
    char *msg = g_strdup_printf("%s: %s", prefix, what);
    set_watch_error(c->s, msg);
    g_free(msg);
    c->said = true;
}

static bool watch_line(const char *line, size_t len, void *user)
{
    watch_ctx *c = user;
    etcd_state *s = c->s;
    etcd_watch_batch b;
    const char *why;
    if (!procreg_etcd_watch_line_parse(line, len, &b, &why)) {
        watch_said(c, "watch: etcd sent a line that is not one JSON object",
                   why);
        return false;
    }
    if (b.error) {
        watch_said(c, "watch",
                   b.message ? b.message
                             : "etcd ended the stream with an error");
        procreg_etcd_watch_batch_clear(&b);
        return false;
    }
    if (b.created) {
        c->created = true;
        pthread_mutex_lock(&s->lock);
        g_atomic_int_set(&s->watch_connected, 1);
        g_free(s->watch_error);
        s->watch_error = NULL;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
    }
    if (b.canceled) {
        if (b.compact_revision > 0)
            c->resync = true;
        else
            watch_said(c, "watch canceled",
                       b.message ? b.message : "no reason given");
        procreg_etcd_watch_batch_clear(&b);
        return false;
    }
    guint n = b.events->len;
    int64_t last = 0;
    /* Reason markers first: they share their removal's revision, and a
     * revision is never split across responses. */
    GArray *markers = g_array_new(FALSE, TRUE, sizeof(marker));
    for (guint i = 0; i < n; i++) {
        const etcd_watch_event *ev = &g_array_index(b.events, etcd_watch_event, i);
        if (ev->type != ETCD_EVENT_PUT && ev->type != ETCD_EVENT_DELETE)
            continue;
        marker m = {.rev = ev->kv.mod_rev};
        if (is_why_key(s, ev->kv.key, ev->kv.key_len) &&
            procreg_etcd_marker_parse(ev->kv.value, ev->kv.value_len,
                                      m.writer, &m.reason))
            g_array_append_val(markers, m);
        last = MAX(last, ev->kv.mod_rev);
    }
    for (guint i = 0; i < n; i++)
        apply_event(s, &g_array_index(b.events, etcd_watch_event, i), markers);
    g_array_unref(markers);
    if (n == 0 && !c->created) {
        /* Progress notification: nothing below the header's revision is
         * left to come. */
        last = b.header_revision;
    }
    gint64 cur = __atomic_load_n(&s->watch_rev, __ATOMIC_ACQUIRE);
    if (last > cur)
        __atomic_store_n(&s->watch_rev, last, __ATOMIC_RELEASE);
    if (n > 0)
        c->progressed = true;
    procreg_etcd_watch_batch_clear(&b);
    return true;
}

typedef struct {
    GHashTable *fresh;
} snap_ctx;

static int snap_one(etcd_state *s, etcd_kv *kv, void *user, GError **error)
{
    snap_ctx *c = user;
    if (is_entry_key(s, kv->key, kv->key_len))
        mirror_set(s, c->fresh, kv);
    return 0;
}

/* Read every entry into a fresh mirror; *@rev: the snapshot revision. */
static int snapshot(etcd_state *s, GHashTable **out, int64_t *rev,
                    GError **error)
{
    GString *start = g_string_new_len(s->eprefix->str, (gssize)s->eprefix->len);
    GString *end = prefix_end(start->str, start->len);
    snap_ctx c = {.fresh = mirror_new()};
    guint64 before = atomic_get(&s->mirror_bytes);
    int rc = range_all(s, start, end, false, false, 0, snap_one, &c, rev,
                       error);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    if (rc != 0) {
        g_hash_table_unref(c.fresh);
        __atomic_store_n(&s->mirror_bytes, before, __ATOMIC_RELAXED);
        return rc;
    }
    *out = c.fresh;
    return 0;
}

/* After a compaction: read everything again and report the difference
 * from what the watch knew. */
static int resync(etcd_state *s, GError **error)
{
    GHashTable *fresh = NULL;
    int64_t rev = 0;
    guint64 old_bytes = atomic_get(&s->mirror_bytes);
    int rc = snapshot(s, &fresh, &rev, error);
    if (rc != 0)
        return rc;
    atomic_add(&s->compactions, 1);
    GHashTableIter it;
    gpointer k, val;
    /* Gone. */
    g_hash_table_iter_init(&it, s->mirror);
    while (g_hash_table_iter_next(&it, &k, &val)) {
        if (g_hash_table_contains(fresh, k))
            continue;
        mirror_entry *m = val;
        gsize klen, vlen;
        const void *kd = g_bytes_get_data(k, &klen);
        const void *vd = g_bytes_get_data(m->value, &vlen);
        notify(s, PROCREG_EVENT_UNREGISTERED,
               m->lease != 0 ? PROCREG_REASON_EXPIRED : PROCREG_REASON_EXPLICIT,
               kd, klen, vd, vlen, rev);
    }
    /* New or changed, unless this instance wrote them. */
    g_hash_table_iter_init(&it, fresh);
    while (g_hash_table_iter_next(&it, &k, &val)) {
        mirror_entry *m = val;
        mirror_entry *was = g_hash_table_lookup(s->mirror, k);
        if (was != NULL && was->mod_rev == m->mod_rev)
            continue;
        gsize klen, vlen;
        const void *kd = g_bytes_get_data(k, &klen);
        const void *vd = g_bytes_get_data(m->value, &vlen);
        char writer[ETCD_WRITER_LEN + 1];
        value_writer(vd, vlen, writer);
        if (strcmp(writer, s->writer) == 0)
            continue;
        bool created = was == NULL || m->create_rev > was->mod_rev;
        notify(s, created ? PROCREG_EVENT_REGISTERED : PROCREG_EVENT_UPDATED,
               PROCREG_REASON_NONE, kd, klen, vd, vlen, m->mod_rev);
    }
    g_hash_table_unref(s->mirror);
    s->mirror = fresh;
    /* snapshot() added the fresh mirror's bytes on top of the old ones. */
    atomic_sub(&s->mirror_bytes, old_bytes);
    __atomic_store_n(&s->watch_rev, rev, __ATOMIC_RELEASE);
    return 0;
}

static bool wait_stopping(etcd_state *s, unsigned ms)
{
    pthread_mutex_lock(&s->lock);
    gint64 until = g_get_monotonic_time() + (gint64)ms * 1000;
    while (!s->stopping && g_get_monotonic_time() < until)
        cond_wait_until(&s->cond, &s->lock, until);
    bool stop = s->stopping;
    pthread_mutex_unlock(&s->lock);
    return stop;
}

static gpointer watcher_main(gpointer data)
{
    etcd_state *s = data;
    GString *start = g_string_new_len(s->prefix->str, (gssize)s->prefix->len);
    g_string_append_c(start, '/');
    GString *end = prefix_end(start->str, start->len);
    unsigned backoff = WATCH_BACKOFF_MIN_MS;
    while (!procreg_etcd_stream_stopped(s->stream)) {
        gint64 from = __atomic_load_n(&s->watch_rev, __ATOMIC_ACQUIRE) + 1;
        GString *b = g_string_new("{\"create_request\":{");
        json_key(b, "key", start->str, start->len);
        g_string_append_c(b, ',');
        json_key(b, "range_end", end->str, end->len);
        g_string_append_printf(b,
                               ",\"start_revision\":\"%" G_GINT64_FORMAT
                               "\",\"prev_kv\":true,\"progress_notify\":true}}",
                               from);
        watch_ctx c = {.s = s};
        GError *err = NULL;
        procreg_etcd_stream_run(s->client, s->stream, "/v3/watch", b->str,
                                watch_line, &c, &err);
        g_string_free(b, TRUE);
        g_atomic_int_set(&s->watch_connected, 0);
        if (procreg_etcd_stream_stopped(s->stream)) {
            g_clear_error(&err);
            break;
        }
        if (err != NULL && !c.said)
            set_watch_error(s, err->message);
        else if (err == NULL && !c.said && !c.resync && c.created)
            set_watch_error(s, "watch: etcd closed the stream");
        g_clear_error(&err);
        atomic_add(&s->watch_reconnects, 1);
        if (c.resync) {
            if (resync(s, &err) == 0) {
                backoff = WATCH_BACKOFF_MIN_MS;
                continue;
            }
            set_watch_error(s, err->message);
            g_clear_error(&err);
        }
        if (c.created || c.progressed)
            backoff = WATCH_BACKOFF_MIN_MS;
        if (wait_stopping(s, backoff))
            break;
        backoff = MIN(backoff * 2, WATCH_BACKOFF_MAX_MS);
    }
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Health, stats, memory                                                    */

static int etcd_health_check(void *state, GVariantDict *details,
                             char **message)
{
    etcd_state *s = state;
    int status = PROCREG_HEALTH_OK;
    GString *msg = g_string_new(NULL);

    /* Is the cluster there, with a leader?  Ask every endpoint, so one
     * that came back is seen as back. */
    etcd_client_stats cs;
    procreg_etcd_client_get_stats(s->client, &cs);
    GString *b = g_string_new("{");
    json_key(b, "key", s->why_key->str, s->why_key->len);
    g_string_append(b, ",\"count_only\":true}");
    unsigned answering = 0;
    char *first_error = NULL;
    for (unsigned i = 0; i < cs.n_endpoints; i++) {
        JsonNode *reply = NULL;
        GError *err = NULL;
        gint64 t0 = g_get_monotonic_time();
        int rc = procreg_etcd_call_endpoint(s->client, i, "/v3/kv/range",
                                            b->str, 0, MIN(s->timeout_ms, 1000),
                                            &reply, &err);
        gint64 rtt = g_get_monotonic_time() - t0;
        if (rc == 0) {
            if (answering++ == 0) {
                g_variant_dict_insert(
                    details, "revision", "x",
                    (gint64)procreg_etcd_header_revision(json_node_get_object(reply)));
                g_variant_dict_insert(details, "probe_us", "x", (gint64)rtt);
            }
            json_node_unref(reply);
        } else if (first_error == NULL) {
            first_error = g_strdup(err ? err->message : procreg_strerror(rc));
        }
        g_clear_error(&err);
    }
    g_string_free(b, TRUE);
    if (answering == 0) {
        status = PROCREG_HEALTH_FAILED;
        g_string_append_printf(msg, "no etcd endpoint answers with a leader: %s",
                               first_error ? first_error : "?");
    }
    g_free(first_error);

    GVariantBuilder eps;
    g_variant_builder_init(&eps, G_VARIANT_TYPE("a{ss}"));
    unsigned down = 0;
    for (unsigned i = 0; i < cs.n_endpoints; i++) {
        char *e = procreg_etcd_client_endpoint_error(s->client, i);
        g_variant_builder_add(&eps, "{ss}",
                              procreg_etcd_client_endpoint(s->client, i),
                              e ? e : "ok");
        down += e != NULL;
        g_free(e);
    }
    g_variant_dict_insert_value(details, "endpoints", g_variant_builder_end(&eps));
    g_variant_dict_insert(details, "endpoint", "s",
                          procreg_etcd_client_endpoint(s->client, cs.current));
    if (status == PROCREG_HEALTH_OK && down > 0) {
        status = PROCREG_HEALTH_DEGRADED;
        g_string_append_printf(msg, "%u of %u etcd endpoints failing", down,
                               cs.n_endpoints);
    }

    pthread_mutex_lock(&s->lock);
    gint64 now = g_get_monotonic_time();
    g_variant_dict_insert(details, "lease", "x", (gint64)s->lease);
    g_variant_dict_insert(details, "lease_ttl", "x", (gint64)s->lease_ttl);
    g_variant_dict_insert(details, "keepalive_age_ms", "x",
                          (gint64)((now - s->last_keepalive) / 1000));
    g_variant_dict_insert(details, "leases_lost", "u", s->leases_lost);
    g_variant_dict_insert(details, "owned", "u", g_hash_table_size(s->owned));
    if (s->lease == 0) {
        status = PROCREG_HEALTH_FAILED;
        g_string_append_printf(msg, "%sno etcd lease%s%s", msg->len ? "; " : "",
                               s->keeper_error ? ": " : "",
                               s->keeper_error ? s->keeper_error : "");
    } else if ((now - s->last_keepalive) > s->lease_ttl * G_USEC_PER_SEC * 2 / 3) {
        status = MAX(status, PROCREG_HEALTH_DEGRADED);
        g_string_append_printf(msg, "%slease not refreshed for %" G_GINT64_FORMAT
                               " ms (TTL %" G_GINT64_FORMAT " s)%s%s",
                               msg->len ? "; " : "",
                               (gint64)((now - s->last_keepalive) / 1000),
                               (gint64)s->lease_ttl,
                               s->keeper_error ? ": " : "",
                               s->keeper_error ? s->keeper_error : "");
    }
    if (s->last_loss != 0 && now - s->last_loss < LOSS_REPORT_US) {
        status = MAX(status, PROCREG_HEALTH_DEGRADED);
        g_string_append_printf(msg, "%setcd lease lost %" G_GINT64_FORMAT
                               " s ago and granted again",
                               msg->len ? "; " : "",
                               (gint64)((now - s->last_loss) / G_USEC_PER_SEC));
    }
    if (s->unrestored != NULL && s->unrestored->len > 0) {
        status = MAX(status, PROCREG_HEALTH_DEGRADED);
        g_string_append_printf(msg, "%s%u entries not registered again after "
                               "the lease was lost:",
                               msg->len ? "; " : "", s->unrestored->len);
        GVariantBuilder lost;
        g_variant_builder_init(&lost, G_VARIANT_TYPE_STRING_ARRAY);
        for (guint i = 0; i < s->unrestored->len; i++) {
            g_string_append_printf(msg, " %s", (char *)s->unrestored->pdata[i]);
            g_variant_builder_add(&lost, "s", s->unrestored->pdata[i]);
        }
        g_variant_dict_insert_value(details, "unrestored",
                                    g_variant_builder_end(&lost));
    }
    if (s->watch_enabled) {
        bool up = g_atomic_int_get(&s->watch_connected) != 0;
        g_variant_dict_insert(details, "watch_connected", "b", up);
        g_variant_dict_insert(details, "watch_revision", "x",
                              (gint64)__atomic_load_n(&s->watch_rev,
                                                      __ATOMIC_ACQUIRE));
        if (!up) {
            status = MAX(status, PROCREG_HEALTH_DEGRADED);
            g_string_append_printf(msg, "%swatch not connected%s%s",
                                   msg->len ? "; " : "",
                                   s->watch_error ? ": " : "",
                                   s->watch_error ? s->watch_error : "");
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (msg->len > 0)
        *message = g_string_free(msg, FALSE);
    else
        g_string_free(msg, TRUE);
    return status;
}

static void etcd_stats(void *state, GVariantDict *out)
{
    etcd_state *s = state;
    etcd_client_stats cs;
    procreg_etcd_client_get_stats(s->client, &cs);
    g_variant_dict_insert(out, "requests", "t", (guint64)cs.calls);
    g_variant_dict_insert(out, "failovers", "t", (guint64)cs.failovers);
    g_variant_dict_insert(out, "timeouts", "t", (guint64)cs.timeouts);
    g_variant_dict_insert(out, "request_failures", "t", (guint64)cs.failures);
    g_variant_dict_insert(out, "endpoint", "s",
                          procreg_etcd_client_endpoint(s->client, cs.current));
    g_variant_dict_insert(out, "prefix", "s", s->prefix->str);
    g_variant_dict_insert(out, "host_id", "s", s->host_id);
    pthread_mutex_lock(&s->lock);
    g_variant_dict_insert(out, "lease", "x", (gint64)s->lease);
    g_variant_dict_insert(out, "lease_ttl", "x", (gint64)s->lease_ttl);
    g_variant_dict_insert(out, "leases_lost", "u", s->leases_lost);
    g_variant_dict_insert(out, "owned", "u", g_hash_table_size(s->owned));
    pthread_mutex_unlock(&s->lock);
    g_variant_dict_insert(out, "reaped", "t", (guint64)atomic_get(&s->reaped));
    g_variant_dict_insert(out, "watch_revision", "x",
                          (gint64)__atomic_load_n(&s->watch_rev, __ATOMIC_ACQUIRE));
    g_variant_dict_insert(out, "watch_reconnects", "t",
                          (guint64)atomic_get(&s->watch_reconnects));
    g_variant_dict_insert(out, "compactions", "t",
                          (guint64)atomic_get(&s->compactions));
    g_variant_dict_insert(out, "corrupt_values_seen", "t",
                          (guint64)atomic_get(&s->corrupt_seen));
    g_variant_dict_insert(out, "events_notified", "t",
                          (guint64)atomic_get(&s->notified));
}

static int etcd_memory_usage(void *state, size_t *bytes)
{
    etcd_state *s = state;
    size_t n = (size_t)atomic_get(&s->mirror_bytes);
    pthread_mutex_lock(&s->lock);
    GHashTableIter it;
    gpointer k, val;
    g_hash_table_iter_init(&it, s->owned);
    while (g_hash_table_iter_next(&it, &k, &val))
        n += g_bytes_get_size(k) + ((owned_entry *)val)->value_len +
             sizeof(owned_entry);
    pthread_mutex_unlock(&s->lock);
    *bytes = n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Init and destroy                                                         */

static void read_machine_id(char *out, size_t size)
{
    static const char *const files[] = {"/etc/machine-id",
                                        "/var/lib/dbus/machine-id"};
    out[0] = '\0';
    for (size_t i = 0; i < G_N_ELEMENTS(files); i++) {
        char *text = NULL;
        if (g_file_get_contents(files[i], &text, NULL, NULL)) {
            g_strstrip(text);
            if (procreg_etcd_host_id_valid(text)) {
                g_strlcpy(out, text, size);
                g_free(text);
                return;
            }
            g_free(text);
        }
    }
    /* No machine id: the host name, with other characters replaced. */
    const char *h = g_get_host_name();
    size_t j = 0;
    for (size_t i = 0; h[i] && j + 1 < size && j < ETCD_HOST_ID_MAX; i++)
        out[j++] = g_ascii_isalnum(h[i]) || h[i] == '.' || h[i] == '-'
                       ? h[i]
                       : '_';
    out[j] = '\0';
    if (j == 0)
        g_strlcpy(out, "localhost", size);
}

static int parse_endpoints(const char *text, char ***out, GError **error)
{
    char **parts = g_strsplit(text, ",", -1);
    GPtrArray *urls = g_ptr_array_new_with_free_func(g_free);
    int rc = 0;
    for (char **p = parts; *p; p++) {
        char *u = g_strstrip(g_strdup(*p));
        size_t n = strlen(u);
        while (n > 0 && u[n - 1] == '/')
            u[--n] = '\0';
        bool scheme = g_str_has_prefix(u, "http://") ||
                      g_str_has_prefix(u, "https://");
        const char *hostpart = strstr(u, "://");
        bool ok = scheme && hostpart && hostpart[3] != '\0' &&
                  strpbrk(u, " \t\r\n\"\\") == NULL;
        if (!ok) {
            rc = procreg_set_error(error, PROCREG_EINVAL,
                                   "option 'endpoints' of backend 'etcd': "
                                   "'%s' is not an http:// or https:// URL "
                                   "(several: endpoints=[http://a:2379,"
                                   "http://b:2379])", u);
            g_free(u);
            break;
        }
        g_ptr_array_add(urls, u);
    }
    g_strfreev(parts);
    if (rc == 0 && urls->len == 0)
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "option 'endpoints' of backend 'etcd' is "
                               "empty");
    if (rc != 0) {
        g_ptr_array_unref(urls);
        return rc;
    }
    g_ptr_array_add(urls, NULL);
    *out = (char **)g_ptr_array_free(urls, FALSE);
    return 0;
}

static int parse_prefix(const char *text, GString **out, GError **error)
{
    GString *p = g_string_new(text);
    while (p->len > 1 && p->str[p->len - 1] == '/')
        g_string_truncate(p, p->len - 1);
    bool ok = p->len > 0 && p->len <= PREFIX_MAX &&
              g_utf8_validate(p->str, (gssize)p->len, NULL) &&
              strcmp(p->str, "/") != 0;
    for (size_t i = 0; ok && i < p->len; i++)
        ok = (guchar)p->str[i] >= 0x20 && p->str[i] != 0x7f;
    if (!ok) {
        g_string_free(p, TRUE);
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "option 'prefix' of backend 'etcd': '%s' is "
                                 "not a usable key prefix (printable, 1 to %d "
                                 "bytes, not just '/')",
                                 text, PREFIX_MAX);
    }
    *out = p;
    return 0;
}

static void etcd_destroy(void *state);

static int parse_spec(etcd_state *s, const procreg_spec *spec, char ***urls,
                      GError **error)
{
    const char *ep = procreg_spec_get(spec, "endpoints");
    int rc = parse_endpoints(ep ? ep : DEFAULT_ENDPOINTS, urls, error);
    if (rc != 0)
        return rc;
    const char *prefix = procreg_spec_get(spec, "prefix");
    rc = parse_prefix(prefix ? prefix : DEFAULT_PREFIX, &s->prefix, error);
    if (rc != 0)
        return rc;
    uint64_t ttl = 0, timeout = 0;
    rc = procreg_spec_get_uint64(spec, "lease_ttl", DEFAULT_TTL_S, &ttl, error);
    if (rc == 0 && (ttl < 2 || ttl > 86400))
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "option 'lease_ttl' of backend 'etcd': %" G_GUINT64_FORMAT
                               " s is out of range (2 to 86400; etcd's "
                               "shortest lease is 2 s)", (guint64)ttl);
    if (rc == 0)
        rc = procreg_spec_get_uint64(spec, "timeout_ms", DEFAULT_TIMEOUT_MS,
                                     &timeout, error);
    if (rc == 0 && (timeout < 10 || timeout > 600000))
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "option 'timeout_ms' of backend 'etcd': %" G_GUINT64_FORMAT
                               " is out of range (10 to 600000)",
                               (guint64)timeout);
    if (rc != 0)
        return rc;
    s->ttl_s = (int64_t)ttl;
    s->timeout_ms = (unsigned)timeout;
    const char *cons = procreg_spec_get(spec, "consistency");
    if (cons == NULL || strcmp(cons, "linearizable") == 0)
        s->serializable = false;
    else if (strcmp(cons, "serializable") == 0)
        s->serializable = true;
    else
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "option 'consistency' of backend 'etcd': "
                                 "'%s' is neither linearizable nor "
                                 "serializable", cons);
    const char *host = procreg_spec_get(spec, "host_id");
    if (host != NULL && !procreg_etcd_host_id_valid(host))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "option 'host_id' of backend 'etcd': '%s' "
                                 "is not 1 to %d of [A-Za-z0-9._-]",
                                 host, ETCD_HOST_ID_MAX);
    if (host != NULL)
        g_strlcpy(s->host_id, host, sizeof s->host_id);
    else
        read_machine_id(s->host_id, sizeof s->host_id);
    return procreg_spec_get_bool(spec, "watch", true, &s->watch_enabled, error);
}

static int etcd_init(const procreg_spec *spec, procreg_backend_host *host,
                     void **state, GError **error)
{
    etcd_state *s = g_new0(etcd_state, 1);
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->renew_lock, NULL);
    cond_init_monotonic(&s->cond);
    s->host = host;
    s->owned = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                     (GDestroyNotify)g_bytes_unref, owned_free);
    s->tombs = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                     (GDestroyNotify)g_bytes_unref, g_free);
    s->mirror = mirror_new();
    s->unrestored = g_ptr_array_new_with_free_func(g_free);
    char **urls = NULL;
    int rc = parse_spec(s, spec, &urls, error);
    if (rc != 0) {
        g_strfreev(urls);
        etcd_destroy(s);
        return rc;
    }
    s->eprefix = g_string_new(s->prefix->str);
    g_string_append(s->eprefix, "/e/");
    s->why_key = g_string_new(s->prefix->str);
    g_string_append(s->why_key, "/why");
    g_snprintf(s->writer, sizeof s->writer, "%08x%08x",
               g_random_int() | 1u, g_random_int());
    s->client = procreg_etcd_client_new((const char *const *)urls, s->timeout_ms);
    g_strfreev(urls);

    int64_t lease = 0, ttl = 0;
    rc = lease_grant(s, &lease, &ttl, error);
    if (rc == 0 && s->watch_enabled) {
        int64_t rev = 0;
        GHashTable *snap = NULL;
        rc = snapshot(s, &snap, &rev, error);
        if (rc == 0) {
            g_hash_table_unref(s->mirror);
            s->mirror = snap;
            s->watch_rev = rev;
        }
    }
    if (rc != 0) {
        if (lease != 0) {
            char body[64];
            g_snprintf(body, sizeof body, "{\"ID\":\"%" G_GINT64_FORMAT "\"}",
                       (gint64)lease);
            JsonNode *reply = NULL;
            if (procreg_etcd_call(s->client, "/v3/lease/revoke", body, 0,
                                  &reply, NULL) == 0)
                json_node_unref(reply);
        }
        etcd_destroy(s);
        return rc;
    }
    s->lease = lease;
    s->lease_ttl = ttl;
    s->last_keepalive = g_get_monotonic_time();
    s->keeper = g_thread_new("procreg-etcd-keep", keeper_main, s);
    if (s->watch_enabled) {
        s->stream = procreg_etcd_stream_new();
        s->watcher = g_thread_new("procreg-etcd-watch", watcher_main, s);
        /* Changes by others are reported from the moment open returns:
         * wait (briefly) for the watch to be in place. */
        gint64 until = g_get_monotonic_time() +
                       (gint64)MIN(s->timeout_ms, 2000) * 1000;
        pthread_mutex_lock(&s->lock);
        while (!g_atomic_int_get(&s->watch_connected) &&
               g_get_monotonic_time() < until)
            cond_wait_until(&s->cond, &s->lock, until);
        pthread_mutex_unlock(&s->lock);
    }
    *state = s;
    return 0;
}

static void etcd_destroy(void *state)
{
    etcd_state *s = state;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (s->stream != NULL)
        procreg_etcd_stream_stop(s->stream);
    if (s->watcher != NULL)
        g_thread_join(s->watcher);
    if (s->keeper != NULL)
        g_thread_join(s->keeper);
    /* The lease is not revoked: like a crash, the entries on it stay until
     * it expires (lease_ttl), so a registry reopened meanwhile (or another
     * process, for entries registered on its behalf) still finds them. */
    procreg_etcd_stream_free(s->stream);
    procreg_etcd_client_free(s->client);
    g_hash_table_unref(s->mirror);
    g_hash_table_unref(s->owned);
    g_hash_table_unref(s->tombs);
    g_ptr_array_unref(s->unrestored);
    if (s->prefix != NULL)
        g_string_free(s->prefix, TRUE);
    if (s->eprefix != NULL)
        g_string_free(s->eprefix, TRUE);
    if (s->why_key != NULL)
        g_string_free(s->why_key, TRUE);
    g_free(s->keeper_error);
    g_free(s->watch_error);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->renew_lock);
    g_free(s);
}

const procreg_backend_ops procreg_etcd_backend_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "etcd",
    .description = "etcd cluster through its v3 JSON gateway: shared by "
                   "hosts, entries on leases, changes from a watch",
    .caps = PROCREG_CAP_THREADSAFE | PROCREG_CAP_DISTRIBUTED |
            PROCREG_CAP_MULTIPROCESS | PROCREG_CAP_PERSISTENT |
            PROCREG_CAP_ATOMIC_DROP,
    .options = etcd_options,
    .init = etcd_init,
    .destroy = etcd_destroy,
    .register_entry = etcd_register,
    .lookup = etcd_lookup,
    .lookup_entry = etcd_lookup_entry,
    .unregister = etcd_unregister,
    .list_all = etcd_list_all,
    .update_metadata = etcd_update_metadata,
    .health_check = etcd_health_check,
    .count = etcd_count,
    .list_names = etcd_list_names,
    .drop_namespace = etcd_drop_namespace,
    .memory_usage = etcd_memory_usage,
    .stats = etcd_stats,
};
