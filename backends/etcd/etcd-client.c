/* The etcd v3 JSON gateway client: see etcd-client.h. */
#include "etcd-client.h"

#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND 1
#endif
#include <procreg/backend.h>

#include <curl/curl.h>
#include <pthread.h>
#include <string.h>

/* Longest reply we accept from a unary call. */
#define MAX_REPLY_BYTES (256u << 20)
/* Longest line of a stream (one watch response). */
#define MAX_LINE_BYTES (256u << 20)
/* A connection attempt never waits longer than this, so a dead endpoint
 * leaves time for the next one. */
#define CONNECT_TIMEOUT_MS 1000
/* Pause between two rounds over all endpoints when they answered but had
 * no leader (an election takes about a second). */
#define NO_LEADER_PAUSE_MS 100
/* A stream looks at its member's health at least this often. */
#define STREAM_TICK_MS 250
/* Idle handles the pool keeps. */
#define POOL_MAX 16

/* etcd sends gRPC status codes in its error replies. */
enum {
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_NOT_FOUND = 5,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_UNAVAILABLE = 14,
};

typedef struct {
    CURL *h;
    GString *buf;
    bool too_big;
    char errbuf[CURL_ERROR_SIZE];
} conn;

struct etcd_client {
    char **urls;
    unsigned n;
    unsigned timeout_ms;
    unsigned attempt_ms;
    /* atomic: where calls start: the endpoint that answered last, or the
     * one after an endpoint that failed.  Invariant: it moves off a failed
     * endpoint only by compare-and-swap from that endpoint (move_past), so
     * several calls failing on one endpoint at once move it one step, and
     * never off an endpoint another call found working meanwhile. */
    gint current;
    /* atomic, per endpoint, monotonic µs (0: never): its last answer, and
     * its last attempt given up for want of one.  Hints for streams
     * (is the member still there?); a stale read costs a probe or a
     * reconnect, never a wrong result. */
    gint64 *last_ok;
    gint64 *last_slow;
    pthread_mutex_t lock;  /* pool, last_error */
    GPtrArray *idle;
    char **last_error; /* per endpoint, NULL when fine */
    struct curl_slist *hdr_leader; /* json + "require a leader" */
    struct curl_slist *hdr_plain;  /* json only */
    /* stats, atomic */
    guint64 calls, failovers, timeouts, failures, slow_attempts;
};

static void global_init(void)
{
    static gsize once;
    if (g_once_init_enter(&once)) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        g_once_init_leave(&once, 1);
    }
}

static void stat_add(guint64 *counter)
{
    __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

static guint64 stat_get(guint64 *counter)
{
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

static struct curl_slist *make_headers(bool leader)
{
    struct curl_slist *l = NULL;
    l = curl_slist_append(l, "Content-Type: application/json");
    /* No "Expect: 100-continue" round trip for bodies over 1 KiB. */
    l = curl_slist_append(l, "Expect:");
    /* gRPC metadata "hasleader": a member without a leader fails the call
     * at once ("etcdserver: no leader") instead of blocking for ~7 s. */
    if (leader)
        l = curl_slist_append(l, "Grpc-Metadata-hasleader: true");
    return l;
}

ETCD_HIDDEN etcd_client *procreg_etcd_client_new(const char *const *endpoints,
                                                 unsigned timeout_ms,
                                                 unsigned attempt_ms)
{
    global_init();
    etcd_client *c = g_new0(etcd_client, 1);
    c->urls = g_strdupv((char **)endpoints);
    c->n = g_strv_length(c->urls);
    c->timeout_ms = timeout_ms;
    c->attempt_ms = MIN(attempt_ms, timeout_ms);
    c->last_ok = g_new0(gint64, c->n);
    c->last_slow = g_new0(gint64, c->n);
    pthread_mutex_init(&c->lock, NULL);
    c->idle = g_ptr_array_new();
    c->last_error = g_new0(char *, c->n);
    c->hdr_leader = make_headers(true);
    c->hdr_plain = make_headers(false);
    return c;
}

static void conn_free(conn *k)
{
    curl_easy_cleanup(k->h);
    g_string_free(k->buf, TRUE);
    g_free(k);
}

ETCD_HIDDEN void procreg_etcd_client_free(etcd_client *c)
{
    if (c == NULL)
        return;
    for (guint i = 0; i < c->idle->len; i++)
        conn_free(c->idle->pdata[i]);
    g_ptr_array_unref(c->idle);
    /* NULL where an endpoint is fine: not a NULL-terminated vector. */
    for (unsigned i = 0; i < c->n; i++)
        g_free(c->last_error[i]);
    g_free(c->last_error);
    g_free(c->last_ok);
    g_free(c->last_slow);
    g_strfreev(c->urls);
    curl_slist_free_all(c->hdr_leader);
    curl_slist_free_all(c->hdr_plain);
    pthread_mutex_destroy(&c->lock);
    g_free(c);
}

static size_t collect(char *data, size_t size, size_t nmemb, void *user)
{
    conn *k = user;
    size_t n = size * nmemb;
    if (k->buf->len + n > MAX_REPLY_BYTES) {
        k->too_big = true;
        return 0;
    }
    g_string_append_len(k->buf, data, (gssize)n);
    return n;
}

static conn *take_conn(etcd_client *c)
{
    pthread_mutex_lock(&c->lock);
    conn *k = c->idle->len ? g_ptr_array_steal_index_fast(c->idle, c->idle->len - 1)
                           : NULL;
    pthread_mutex_unlock(&c->lock);
    if (k != NULL)
        return k;
    k = g_new0(conn, 1);
    k->h = curl_easy_init();
    k->buf = g_string_sized_new(1024);
    if (k->h == NULL)
        return k; /* reported by the caller */
    curl_easy_setopt(k->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(k->h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(k->h, CURLOPT_POST, 1L);
    curl_easy_setopt(k->h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(k->h, CURLOPT_WRITEDATA, k);
    curl_easy_setopt(k->h, CURLOPT_ERRORBUFFER, k->errbuf);
    curl_easy_setopt(k->h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(k->h, CURLOPT_PROTOCOLS_STR, "http,https");
    return k;
}

static void give_conn(etcd_client *c, conn *k)
{
    if (k->h == NULL) {
        conn_free(k);
        return;
    }
    if (k->buf->allocated_len > (1u << 20)) {
        g_string_free(k->buf, TRUE);
        k->buf = g_string_sized_new(1024);
    }
    pthread_mutex_lock(&c->lock);
    bool keep = c->idle->len < POOL_MAX;
    if (keep)
        g_ptr_array_add(c->idle, k);
    pthread_mutex_unlock(&c->lock);
    if (!keep)
        conn_free(k);
}

static void set_endpoint_error(etcd_client *c, unsigned i, const char *why)
{
    pthread_mutex_lock(&c->lock);
    if (why == NULL ? c->last_error[i] != NULL
                    : g_strcmp0(c->last_error[i], why) != 0) {
        g_free(c->last_error[i]);
        c->last_error[i] = g_strdup(why);
    }
    pthread_mutex_unlock(&c->lock);
}

/* Map what etcd said about a request it refused. */
static int map_refusal(int grpc, const char *msg, const char *path,
                       const char *url, GError **error)
{
    if (strstr(msg, "requested lease not found") != NULL) {
        g_set_error(error, PROCREG_ERROR, PROCREG_EBACKEND,
                    "etcd lease gone (%s on %s): %s", path, url, msg);
        return ETCD_ELEASE_GONE;
    }
    if (strstr(msg, "too large") != NULL ||
        strstr(msg, "larger than max") != NULL)
        return procreg_set_error(error, PROCREG_EFULL,
                                 "etcd refused %s as too large: %s "
                                 "(endpoint %s)", path, msg, url);
    if (strstr(msg, "too many operations") != NULL ||
        strstr(msg, "database space exceeded") != NULL ||
        grpc == GRPC_RESOURCE_EXHAUSTED)
        return procreg_set_error(error, PROCREG_EFULL,
                                 "etcd refused %s: %s (endpoint %s)", path,
                                 msg, url);
    if (grpc == GRPC_DEADLINE_EXCEEDED)
        return procreg_set_error(error, PROCREG_ETIMEDOUT,
                                 "etcd timed out on %s: %s (endpoint %s)",
                                 path, msg, url);
    if (grpc == GRPC_INVALID_ARGUMENT || grpc == GRPC_FAILED_PRECONDITION)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "etcd rejected %s: %s (endpoint %s)", path,
                                 msg, url);
    return procreg_set_error(error, PROCREG_EBACKEND,
                             "etcd failed %s: %s (gRPC code %d, endpoint %s)",
                             path, msg, grpc, url);
}

static void note_tried(GString *tried, const char *url, const char *why)
{
    char *needle = g_strdup_printf("%s (", url);
    bool seen = strstr(tried->str, needle) != NULL;
    g_free(needle);
    if (!seen)
        g_string_append_printf(tried, "%s%s (%s)", tried->len ? ", " : "",
                               url, why);
}

/* Whether the transfer of @h sent its request (on a new or a reused
 * connection): a timeout after that is a member that does not answer,
 * before it one that cannot be reached. */
static bool request_sent(CURL *h)
{
    long bytes = 0;
    return curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &bytes) == CURLE_OK &&
           bytes > 0;
}

/* Endpoint @i failed an attempt: calls that start after this one start
 * at the next endpoint, unless another call moved on already. */
static void move_past(etcd_client *c, unsigned i)
{
    g_atomic_int_compare_and_exchange(&c->current, (gint)i,
                                      (gint)((i + 1) % c->n));
}

static void note_slow(etcd_client *c, unsigned i)
{
    __atomic_store_n(&c->last_slow[i], g_get_monotonic_time(),
                     __ATOMIC_RELAXED);
}

static void note_ok(etcd_client *c, unsigned i)
{
    __atomic_store_n(&c->last_ok[i], g_get_monotonic_time(), __ATOMIC_RELAXED);
}

/* The deadline of one attempt that starts now, @left_ms before the
 * call's deadline.  The first attempt of a call that may fail over
 * leaves at least half the budget for the next endpoint. */
static gint64 attempt_ms(etcd_client *c, gint64 left_ms, bool first,
                         bool may_fail_over)
{
    gint64 ms = MIN((gint64)c->attempt_ms, left_ms);
    if (first && may_fail_over && c->n > 1)
        ms = MIN(ms, MAX(left_ms / 2, 1));
    return ms;
}

/* How one attempt on one endpoint ended. */
typedef enum {
    ATTEMPT_ANSWERED,    /* a reply, or a refusal to report: the call ends */
    ATTEMPT_UNREACHABLE, /* no connection, or it broke before an answer */
    ATTEMPT_TLS,         /* the TLS handshake or session failed */
    ATTEMPT_NOT_ETCD,    /* an answer, but not etcd's v3 JSON gateway's */
    ATTEMPT_SLOW,        /* connected and sent: no answer in time */
    ATTEMPT_BUSY,        /* etcd answered: no leader, or unavailable */
} attempt_end;

/* Whether the member may answer another attempt within the call (an
 * election ends, a load passes); the others fail the same way again. */
static bool passing(attempt_end end)
{
    return end == ATTEMPT_SLOW || end == ATTEMPT_BUSY;
}

static bool tls_failure(CURLcode res, const char *why)
{
    switch (res) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
        return true;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        /* With TLS 1.3 a server refuses a client's certificate (or its
         * absence) after the handshake, in an alert on the first read. */
        return strstr(why, "SSL") != NULL || strstr(why, "alert") != NULL;
    default:
        return false;
    }
}

/* A transfer that ended in a curl error: which kind, and why (*@why,
 * g_free it). */
static attempt_end failed_transfer(etcd_client *c, conn *k, unsigned i,
                                   CURLcode res, gint64 attempt_ms,
                                   char **why)
{
    const char *what = k->errbuf[0] ? k->errbuf : curl_easy_strerror(res);
    if (res == CURLE_OPERATION_TIMEDOUT && request_sent(k->h)) {
        stat_add(&c->slow_attempts);
        note_slow(c, i);
        *why = g_strdup_printf("no answer within %" G_GINT64_FORMAT " ms",
                               attempt_ms);
        return ATTEMPT_SLOW;
    }
    if (tls_failure(res, what)) {
        *why = g_strdup_printf("TLS: %s", what);
        return ATTEMPT_TLS;
    }
    if (res == CURLE_UNSUPPORTED_PROTOCOL || res == CURLE_WEIRD_SERVER_REPLY) {
        *why = g_strdup_printf("not HTTP: %s", what);
        return ATTEMPT_NOT_ETCD;
    }
    *why = g_strdup(what);
    return ATTEMPT_UNREACHABLE;
}

/* One attempt on endpoint @i with @attempt_ms.  ATTEMPT_ANSWERED: the
 * call ends with *@rc (and *@reply, or @error); otherwise *@why says
 * what happened (g_free it), and *@no_leader is set when etcd said so. */
static attempt_end attempt(etcd_client *c, conn *k, unsigned i,
                           const char *path, gint64 attempt_ms, int *rc,
                           JsonNode **reply, char **why, bool *no_leader,
                           GError **error)
{
    const char *base = c->urls[i];
    char *url = g_strconcat(base, path, NULL);
    g_string_truncate(k->buf, 0);
    k->too_big = false;
    k->errbuf[0] = '\0';
    curl_easy_setopt(k->h, CURLOPT_URL, url);
    curl_easy_setopt(k->h, CURLOPT_TIMEOUT_MS, (long)attempt_ms);
    curl_easy_setopt(k->h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)MIN(attempt_ms, CONNECT_TIMEOUT_MS));
    CURLcode res = curl_easy_perform(k->h);
    g_free(url);
    if (k->too_big) {
        *rc = procreg_set_error(error, PROCREG_EBACKEND,
                                "etcd %s: reply to %s exceeds %u bytes", base,
                                path, MAX_REPLY_BYTES);
        return ATTEMPT_ANSWERED;
    }
    if (res != CURLE_OK)
        return failed_transfer(c, k, i, res, attempt_ms, why);
    long status = 0;
    curl_easy_getinfo(k->h, CURLINFO_RESPONSE_CODE, &status);
    if (status == 200) {
        GError *perr = NULL;
        const char *bad = NULL;
        *reply = procreg_etcd_json_parse_object(k->buf->str, k->buf->len,
                                                &bad, &perr);
        if (*reply == NULL) {
            *why = g_strdup_printf("a reply etcd would not send: %s",
                                   perr ? perr->message : bad);
            g_clear_error(&perr);
            return ATTEMPT_NOT_ETCD;
        }
        note_ok(c, i);
        *rc = 0;
        return ATTEMPT_ANSWERED;
    }
    int grpc;
    char *msg;
    procreg_etcd_error_reply_parse(k->buf->str, k->buf->len, &grpc, &msg);
    attempt_end end = ATTEMPT_ANSWERED;
    if (grpc == GRPC_UNAVAILABLE || status == 503) {
        /* No leader, leader changed, server-side timeout: another member
         * (or the same one after the election) may do. */
        note_ok(c, i);
        *no_leader = *no_leader || strstr(msg, "leader") != NULL;
        *why = g_strdup(msg);
        end = ATTEMPT_BUSY;
    } else if (grpc < 0) {
        *why = g_strdup_printf("HTTP %ld that is not an etcd reply: %s",
                               status, msg);
        end = ATTEMPT_NOT_ETCD;
    } else {
        note_ok(c, i);
        *rc = map_refusal(grpc, msg, path, base, error);
    }
    g_free(msg);
    return end;
}

/* Every endpoint failed the same round, none in a passing way: the error,
 * headed by the one cause when all share it.  @kinds: a bit per
 * attempt_end seen. */
static int all_failed(unsigned kinds, const GString *tried, GError **error)
{
    const char *head = "no etcd endpoint usable";
    if (kinds == 1u << ATTEMPT_UNREACHABLE)
        head = "no etcd endpoint reachable";
    else if (kinds == 1u << ATTEMPT_TLS)
        head = "TLS failed with every etcd endpoint";
    else if (kinds == 1u << ATTEMPT_NOT_ETCD)
        head = "no etcd endpoint answers as etcd's v3 JSON gateway (a "
               "wrong URL or port?)";
    return procreg_set_error(error, PROCREG_EBACKEND, "%s: tried %s", head,
                             tried->str);
}

/* @only >= 0: that endpoint once, no failover.
 *
 * Every attempt has its own deadline (attempt_ms), shorter than the
 * call's: a member that accepted the connection but does not answer
 * (stopped, overloaded, cut off from its peers) costs one attempt, and
 * the request goes to the next member.  The request may then have been
 * applied twice; every write the backend sends recognises its own
 * earlier effect or is harmless repeated (etcd-ops.c).
 *
 * Rounds over all endpoints go on until the deadline only while some
 * endpoint fails in a passing way (slow, no leader); a round in which
 * every endpoint was unreachable, failed TLS or is not etcd ends the call
 * at once with that cause. */
static int call_impl(etcd_client *c, const char *path, const char *body,
                     unsigned flags, gint64 deadline, int only,
                     JsonNode **reply, GError **error)
{
    *reply = NULL;
    stat_add(&c->calls);
    conn *k = take_conn(c);
    if (k->h == NULL) {
        give_conn(c, k);
        stat_add(&c->failures);
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "etcd: cannot make a curl handle");
    }
    gint64 t0 = g_get_monotonic_time();
    unsigned start = only >= 0 ? (unsigned)only % c->n
                               : (unsigned)g_atomic_int_get(&c->current) % c->n;
    unsigned i = start;
    unsigned attempts = 0, passing_in_round = 0, kinds_in_round = 0;
    bool no_leader = false;
    GString *tried = g_string_new(NULL);
    int rc = 0;
    curl_easy_setopt(k->h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(k->h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(k->h, CURLOPT_HTTPHEADER,
                     (flags & ETCD_CALL_NO_LEADER_NEEDED) ? c->hdr_plain
                                                          : c->hdr_leader);
    for (;;) {
        gint64 left_ms = (deadline - g_get_monotonic_time()) / 1000;
        if (left_ms <= 0) {
            stat_add(&c->timeouts);
            rc = procreg_set_error(
                error, PROCREG_ETIMEDOUT,
                no_leader ? "etcd: no leader within %" G_GINT64_FORMAT
                            " ms for %s (quorum lost?); tried %s"
                          : "etcd: no answer within %" G_GINT64_FORMAT
                            " ms for %s; tried %s",
                (g_get_monotonic_time() - t0) / 1000, path,
                tried->len ? tried->str : "nothing");
            break;
        }
        char *why = NULL;
        attempt_end end =
            attempt(c, k, i, path, attempt_ms(c, left_ms, attempts == 0, only < 0),
                    &rc, reply, &why, &no_leader, error);
        if (end == ATTEMPT_ANSWERED) {
            set_endpoint_error(c, i, NULL);
            if (rc == 0 && i != start && only < 0)
                g_atomic_int_set(&c->current, (gint)i);
            break;
        }
        set_endpoint_error(c, i, why);
        note_tried(tried, c->urls[i], why);
        g_free(why);
        if (only >= 0) {
            /* tried holds "URL (why)". */
            rc = procreg_set_error(error, PROCREG_EBACKEND, "etcd %s", tried->str);
            break;
        }
        move_past(c, i);
        attempts++;
        stat_add(&c->failovers);
        if (passing(end))
            passing_in_round++;
        else
            kinds_in_round |= 1u << end;
        i = (i + 1) % c->n;
        if (attempts % c->n == 0) {
            if (passing_in_round == 0) {
                rc = all_failed(kinds_in_round, tried, error);
                break;
            }
            passing_in_round = kinds_in_round = 0;
            gint64 left_us = deadline - g_get_monotonic_time();
            if (left_us > 0)
                g_usleep((gulong)MIN(left_us, NO_LEADER_PAUSE_MS * 1000));
        }
    }
    g_string_free(tried, TRUE);
    give_conn(c, k);
    if (rc != 0)
        stat_add(&c->failures);
    return rc;
}

ETCD_HIDDEN gint64 procreg_etcd_deadline(etcd_client *c)
{
    return g_get_monotonic_time() + (gint64)c->timeout_ms * 1000;
}

ETCD_HIDDEN int procreg_etcd_call(etcd_client *c, const char *path,
                                  const char *body, unsigned flags,
                                  gint64 deadline, JsonNode **reply,
                                  GError **error)
{
    return call_impl(c, path, body, flags, deadline, -1, reply, error);
}

ETCD_HIDDEN int procreg_etcd_call_endpoint(etcd_client *c, unsigned i,
                                           const char *path, const char *body,
                                           unsigned flags, unsigned timeout_ms,
                                           JsonNode **reply, GError **error)
{
    return call_impl(c, path, body, flags,
                     g_get_monotonic_time() + (gint64)timeout_ms * 1000,
                     (int)(i % c->n), reply, error);
}

ETCD_HIDDEN void procreg_etcd_client_get_stats(etcd_client *c,
                                               etcd_client_stats *out)
{
    out->calls = stat_get(&c->calls);
    out->failovers = stat_get(&c->failovers);
    out->timeouts = stat_get(&c->timeouts);
    out->failures = stat_get(&c->failures);
    out->slow_attempts = stat_get(&c->slow_attempts);
    out->current = (unsigned)g_atomic_int_get(&c->current) % c->n;
    out->n_endpoints = c->n;
}

ETCD_HIDDEN const char *procreg_etcd_client_endpoint(etcd_client *c,
                                                     unsigned i)
{
    return i < c->n ? c->urls[i] : NULL;
}

ETCD_HIDDEN char *procreg_etcd_client_endpoint_error(etcd_client *c,
                                                     unsigned i)
{
    if (i >= c->n)
        return NULL;
    pthread_mutex_lock(&c->lock);
    char *e = g_strdup(c->last_error[i]);
    pthread_mutex_unlock(&c->lock);
    return e;
}

/* ---- streams ---- */

struct etcd_stream {
    CURLM *multi;
    CURL *h;
    gint stop; /* atomic */
    unsigned silence_ms;
    GString *line;
    etcd_line_fn fn;
    void *user;
    bool ended_by_fn;
    bool too_big;
    gint64 last_data; /* monotonic µs of the last byte received */
    char errbuf[CURL_ERROR_SIZE];
};

ETCD_HIDDEN etcd_stream *procreg_etcd_stream_new(unsigned silence_ms)
{
    global_init();
    etcd_stream *s = g_new0(etcd_stream, 1);
    s->multi = curl_multi_init();
    s->h = curl_easy_init();
    s->line = g_string_new(NULL);
    s->silence_ms = silence_ms;
    return s;
}

ETCD_HIDDEN void procreg_etcd_stream_free(etcd_stream *s)
{
    if (s == NULL)
        return;
    if (s->h != NULL)
        curl_easy_cleanup(s->h);
    if (s->multi != NULL)
        curl_multi_cleanup(s->multi);
    g_string_free(s->line, TRUE);
    g_free(s);
}

ETCD_HIDDEN void procreg_etcd_stream_stop(etcd_stream *s)
{
    g_atomic_int_set(&s->stop, 1);
    if (s->multi != NULL)
        curl_multi_wakeup(s->multi);
}

ETCD_HIDDEN bool procreg_etcd_stream_stopped(etcd_stream *s)
{
    return g_atomic_int_get(&s->stop) != 0;
}

static size_t stream_write(char *data, size_t size, size_t nmemb, void *user)
{
    etcd_stream *s = user;
    size_t n = size * nmemb;
    s->last_data = g_get_monotonic_time();
    for (size_t i = 0; i < n; i++) {
        if (data[i] != '\n') {
            g_string_append_c(s->line, data[i]);
            if (s->line->len > MAX_LINE_BYTES) {
                s->too_big = true;
                return 0;
            }
            continue;
        }
        if (s->line->len > 0 && !s->fn(s->line->str, s->line->len, s->user)) {
            g_string_truncate(s->line, 0);
            s->ended_by_fn = true;
            return 0;
        }
        g_string_truncate(s->line, 0);
    }
    return procreg_etcd_stream_stopped(s) ? 0 : n;
}

/* How one stream attempt ended. */
typedef enum {
    STREAM_ENDED,      /* the server or @fn ended it, or it was stopped */
    STREAM_NOT_OPENED, /* it failed before anything came (no connection,
                        * no answer in time, TLS, not etcd): the next
                        * endpoint may do */
    STREAM_SILENT,     /* it went silent and its member did not answer a
                        * probe */
} stream_end;

/* Whether member @i of a stream still answers (a serializable status
 * probe, one attempt).  Any answer of that member to another call in the
 * last silence_ms counts as one. */
static bool member_answers(etcd_client *c, etcd_stream *s, unsigned i,
                           GError **error)
{
    gint64 ok = __atomic_load_n(&c->last_ok[i], __ATOMIC_RELAXED);
    gint64 now = g_get_monotonic_time();
    if (now - ok < (gint64)s->silence_ms * 1000)
        return true;
    JsonNode *reply = NULL;
    if (call_impl(c, "/v3/maintenance/status", "{}",
                  ETCD_CALL_NO_LEADER_NEEDED,
                  now + (gint64)c->attempt_ms * 1000, (int)i, &reply,
                  error) != 0)
        return false;
    json_node_unref(reply);
    return true;
}

/* One attempt on endpoint @i. */
static int stream_once(etcd_client *c, etcd_stream *s, unsigned i,
                       const char *path, const char *body, stream_end *end,
                       GError **error)
{
    *end = STREAM_ENDED;
    const char *base = c->urls[i];
    char *url = g_strconcat(base, path, NULL);
    curl_easy_reset(s->h);
    g_string_truncate(s->line, 0);
    s->ended_by_fn = false;
    s->too_big = false;
    s->last_data = 0;
    s->errbuf[0] = '\0';
    curl_easy_setopt(s->h, CURLOPT_URL, url);
    curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, c->hdr_leader);
    curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, stream_write);
    curl_easy_setopt(s->h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->h, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(s->h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)MIN(c->attempt_ms, CONNECT_TIMEOUT_MS));
    curl_easy_setopt(s->h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(s->h, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(s->h, CURLOPT_TCP_KEEPINTVL, 2L);
    curl_easy_setopt(s->h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_multi_add_handle(s->multi, s->h);
    CURLcode res = CURLE_OK;
    bool done = false;
    GError *silent = NULL;
    gint64 started = g_get_monotonic_time();
    bool slow = false;
    while (!done && !procreg_etcd_stream_stopped(s)) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(s->multi, &running);
        if (mc != CURLM_OK) {
            res = CURLE_FAILED_INIT;
            g_strlcpy(s->errbuf, curl_multi_strerror(mc), sizeof s->errbuf);
            break;
        }
        int queued;
        CURLMsg *m;
        while ((m = curl_multi_info_read(s->multi, &queued)) != NULL) {
            if (m->msg == CURLMSG_DONE) {
                res = m->data.result;
                done = true;
            }
        }
        if (done)
            break;
        /* The first byte must come within an attempt's deadline.  After
         * that, a stream silent while another call to its member got no
         * answer ends at once; one silent for silence_ms makes us ask
         * whether the member is still there (a stopped process keeps its
         * connections open and silent). */
        gint64 now = g_get_monotonic_time();
        gint64 check;
        if (s->last_data == 0) {
            check = started + (gint64)c->attempt_ms * 1000;
            if (now >= check) {
                slow = true;
                break;
            }
        } else if (s->silence_ms > 0) {
            check = s->last_data + (gint64)s->silence_ms * 1000;
            if (__atomic_load_n(&c->last_slow[i], __ATOMIC_RELAXED) >
                s->last_data) {
                g_set_error(&silent, PROCREG_ERROR, PROCREG_EBACKEND,
                            "another request to it got no answer within "
                            "%u ms", c->attempt_ms);
                break;
            }
            if (now >= check) {
                if (!member_answers(c, s, i, &silent))
                    break;
                s->last_data = g_get_monotonic_time();
                continue;
            }
        } else {
            check = now + 1000 * 1000;
        }
        /* Woken within STREAM_TICK_MS to see other calls' slow attempts. */
        gint64 wait_ms = (check - now + 999) / 1000;
        curl_multi_poll(s->multi, NULL, 0,
                        (int)CLAMP(wait_ms, 1, STREAM_TICK_MS), NULL);
    }
    long status = 0;
    curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &status);
    /* An unfinished transfer's connection is closed, not kept. */
    curl_multi_remove_handle(s->multi, s->h);
    g_free(url);
    if (procreg_etcd_stream_stopped(s) || s->ended_by_fn) {
        g_clear_error(&silent);
        return 0;
    }
    if (silent != NULL) {
        *end = STREAM_SILENT;
        int rc = procreg_set_error(error, PROCREG_EBACKEND,
                                   "etcd %s went silent on %s and does not "
                                   "answer: %s",
                                   base, path, silent->message);
        g_error_free(silent);
        return rc;
    }
    if (slow) {
        *end = STREAM_NOT_OPENED;
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "etcd %s: no answer to %s within %u ms",
                                 base, path, c->attempt_ms);
    }
    /* A last line without its newline. */
    if (s->line->len > 0) {
        s->fn(s->line->str, s->line->len, s->user);
        g_string_truncate(s->line, 0);
    }
    if (res == CURLE_OK && (status == 200 || status == 0))
        return 0;
    if (s->last_data == 0)
        *end = STREAM_NOT_OPENED;
    if (res == CURLE_OK)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "etcd %s answered %s with HTTP %ld", base,
                                 path, status);
    if (s->too_big)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "etcd %s: a line of %s exceeds %u bytes",
                                 base, path, MAX_LINE_BYTES);
    return procreg_set_error(error, PROCREG_EBACKEND, "etcd %s, %s: %s", base,
                             path, s->errbuf[0] ? s->errbuf
                                                : curl_easy_strerror(res));
}

ETCD_HIDDEN int procreg_etcd_stream_run(etcd_client *c, etcd_stream *s,
                                        const char *path, const char *body,
                                        etcd_line_fn fn, void *user,
                                        GError **error)
{
    if (s->multi == NULL || s->h == NULL)
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "etcd: cannot make a curl handle");
    s->fn = fn;
    s->user = user;
    unsigned start = (unsigned)g_atomic_int_get(&c->current) % c->n;
    GString *tried = g_string_new(NULL);
    int rc = 0;
    for (unsigned k = 0; k < c->n && !procreg_etcd_stream_stopped(s); k++) {
        unsigned i = (start + k) % c->n;
        stream_end end;
        GError *local = NULL;
        rc = stream_once(c, s, i, path, body, &end, &local);
        if (end != STREAM_ENDED) {
            set_endpoint_error(c, i, local->message);
            move_past(c, i);
        }
        if (end != STREAM_NOT_OPENED) {
            if (local != NULL)
                g_propagate_error(error, local);
            else if (k > 0)
                g_atomic_int_set(&c->current, (gint)i);
            g_string_free(tried, TRUE);
            return rc;
        }
        note_tried(tried, c->urls[i], local->message);
        g_clear_error(&local);
    }
    if (!procreg_etcd_stream_stopped(s))
        rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "no etcd endpoint usable for %s: tried %s",
                               path, tried->str);
    else
        rc = 0;
    g_string_free(tried, TRUE);
    return rc;
}

/* ---- JSON helpers ---- */

static size_t skip_ws(const char *t, size_t i, size_t n)
{
    while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' ||
                     t[i] == '\r'))
        i++;
    return i;
}

/* A string starting at t[*i] == '"'; *@i moves past its closing quote. */
static bool scan_string(const char *t, size_t n, size_t *i, const char **why)
{
    for (size_t k = *i + 1; k < n; k++) {
        unsigned char c = (unsigned char)t[k];
        if (c == '"') {
            *i = k + 1;
            return true;
        }
        if (c < 0x20) {
            *why = "control character in a JSON string";
            return false;
        }
        if (c != '\\')
            continue;
        if (++k == n)
            break;
        switch (t[k]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n':
        case 'r': case 't':
            break;
        case 'u':
            if (n - k <= 4) {
                *why = "unterminated JSON string";
                return false;
            }
            for (int d = 1; d <= 4; d++)
                if (!g_ascii_isxdigit(t[k + d])) {
                    *why = "bad \\u escape in a JSON string";
                    return false;
                }
            k += 4;
            break;
        default:
            *why = "bad escape in a JSON string";
            return false;
        }
    }
    *why = "unterminated JSON string";
    return false;
}

static size_t skip_digits(const char *t, size_t i, size_t n)
{
    while (i < n && g_ascii_isdigit(t[i]))
        i++;
    return i;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at t[*i]. */
static bool scan_number(const char *t, size_t n, size_t *i, const char **why)
{
    size_t k = *i;
    *why = "bad JSON number";
    if (k < n && t[k] == '-')
        k++;
    if (k == n || !g_ascii_isdigit(t[k]))
        return false;
    if (t[k] == '0')
        k++;
    else
        k = skip_digits(t, k, n);
    if (k < n && t[k] == '.') {
        size_t f = skip_digits(t, k + 1, n);
        if (f == k + 1)
            return false;
        k = f;
    }
    if (k < n && (t[k] == 'e' || t[k] == 'E')) {
        k++;
        if (k < n && (t[k] == '+' || t[k] == '-'))
            k++;
        size_t e = skip_digits(t, k, n);
        if (e == k)
            return false;
        k = e;
    }
    /* "01", "1x": the next byte must end the number. */
    if (k < n && (g_ascii_isalnum(t[k]) || t[k] == '.' || t[k] == '_'))
        return false;
    *i = k;
    return true;
}

static bool scan_word(const char *t, size_t n, size_t *i, const char **why)
{
    static const char *const words[] = {"true", "false", "null"};
    for (size_t w = 0; w < G_N_ELEMENTS(words); w++) {
        size_t l = strlen(words[w]);
        if (n - *i >= l && memcmp(t + *i, words[w], l) == 0 &&
            (n - *i == l || !g_ascii_isalnum(t[*i + l]))) {
            *i += l;
            return true;
        }
    }
    *why = "unexpected character in JSON";
    return false;
}

ETCD_HIDDEN bool procreg_etcd_json_one_object(const void *text, size_t len,
                                              const char **why)
{
    const char *t = text;
    size_t n = len, i = skip_ws(t, 0, n);
    if (i == n) {
        *why = "empty text, not a JSON object";
        return false;
    }
    if (t[i] != '{') {
        *why = "not a JSON object";
        return false;
    }
    /* Bit d of in_object: level d is an object (else an array). */
    G_STATIC_ASSERT(ETCD_JSON_MAX_DEPTH <= 64);
    uint64_t in_object = 0;
    int depth = 0;
    enum { VALUE, VALUE_OR_CLOSE, NAME, NAME_OR_CLOSE, COLON, AFTER } st =
        VALUE;
    while (st != AFTER || depth > 0) {
        i = skip_ws(t, i, n);
        if (i == n) {
            *why = "truncated JSON";
            return false;
        }
        char c = t[i];
        bool top_is_object = depth > 0 && (in_object >> (depth - 1) & 1);
        bool closes = depth > 0 && c == (top_is_object ? '}' : ']');
        if (closes && (st == AFTER || st == VALUE_OR_CLOSE ||
                       st == NAME_OR_CLOSE)) {
            depth--;
            i++;
            st = AFTER;
        } else if (st == AFTER) {
            if (c != ',') {
                *why = "unexpected character in JSON";
                return false;
            }
            i++;
            st = top_is_object ? NAME : VALUE;
        } else if (st == COLON) {
            if (c != ':') {
                *why = "expected ':' in JSON";
                return false;
            }
            i++;
            st = VALUE;
        } else if (st == NAME || st == NAME_OR_CLOSE) {
            if (c != '"') {
                *why = "expected a member name in JSON";
                return false;
            }
            if (!scan_string(t, n, &i, why))
                return false;
            st = COLON;
        } else if (c == '{' || c == '[') {
            if (depth == ETCD_JSON_MAX_DEPTH) {
                *why = "JSON nested too deeply";
                return false;
            }
            if (c == '{')
                in_object |= UINT64_C(1) << depth;
            else
                in_object &= ~(UINT64_C(1) << depth);
            depth++;
            i++;
            st = c == '{' ? NAME_OR_CLOSE : VALUE_OR_CLOSE;
        } else {
            bool ok = c == '"' ? scan_string(t, n, &i, why)
                      : c == '-' || g_ascii_isdigit(c)
                          ? scan_number(t, n, &i, why)
                          : scan_word(t, n, &i, why);
            if (!ok)
                return false;
            st = AFTER;
        }
    }
    i = skip_ws(t, i, n);
    if (i == n)
        return true;
    *why = strchr("{[\"-0123456789tfn", t[i]) != NULL && t[i] != '\0'
               ? "more than one JSON value"
               : "characters after the JSON object";
    return false;
}

ETCD_HIDDEN JsonNode *procreg_etcd_json_parse_object(const void *text,
                                                     size_t len,
                                                     const char **why,
                                                     GError **error)
{
    if (len > G_MAXSSIZE) {
        *why = "text too long";
        return NULL;
    }
    if (!procreg_etcd_json_one_object(text, len, why))
        return NULL;
    JsonParser *p = json_parser_new();
    JsonNode *root = NULL;
    if (json_parser_load_from_data(p, text, (gssize)len, error) &&
        json_parser_get_root(p) != NULL &&
        JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
        root = json_parser_steal_root(p);
    else
        *why = "not valid JSON";
    g_object_unref(p);
    return root;
}

ETCD_HIDDEN void procreg_etcd_error_reply_parse(const char *text, size_t len,
                                                int *grpc_code,
                                                char **message)
{
    *grpc_code = -1;
    *message = NULL;
    const char *why;
    JsonNode *root = procreg_etcd_json_parse_object(text, len, &why, NULL);
    if (root != NULL) {
        JsonObject *o = json_node_get_object(root);
        JsonObject *inner = procreg_etcd_json_obj(o, "error");
        JsonObject *src = inner ? inner : o;
        int64_t code = -1;
        if (procreg_etcd_json_int(src, inner ? "grpc_code" : "code", &code) &&
            json_object_has_member(src, inner ? "grpc_code" : "code"))
            *grpc_code = (int)code;
        JsonNode *m = json_object_get_member(src, "message");
        if (m == NULL && !inner)
            m = json_object_get_member(src, "error");
        if (m != NULL && JSON_NODE_HOLDS_VALUE(m) &&
            json_node_get_value_type(m) == G_TYPE_STRING)
            *message = g_strdup(json_node_get_string(m));
        json_node_unref(root);
    }
    if (*message == NULL)
        *message = g_strndup(text, MIN(len, 200));
}

ETCD_HIDDEN bool procreg_etcd_json_int(JsonObject *o, const char *member,
                                       int64_t *out)
{
    *out = 0;
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;
    if (n == NULL || JSON_NODE_HOLDS_NULL(n))
        return true;
    if (!JSON_NODE_HOLDS_VALUE(n))
        return false;
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_INT64) {
        *out = json_node_get_int(n);
        return true;
    }
    if (t == G_TYPE_STRING) {
        const char *s = json_node_get_string(n);
        return g_ascii_string_to_signed(s, 10, G_MININT64, G_MAXINT64,
                                        (gint64 *)out, NULL);
    }
    return false;
}

ETCD_HIDDEN bool procreg_etcd_json_b64(JsonObject *o, const char *member,
                                       guchar **out, gsize *len)
{
    *out = NULL;
    *len = 0;
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;
    if (n == NULL || JSON_NODE_HOLDS_NULL(n)) {
        *out = g_malloc0(1);
        return true;
    }
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
        return false;
    const char *s = json_node_get_string(n);
    size_t sl = strlen(s);
    if (sl % 4 != 0)
        return false;
    for (size_t i = 0; i < sl; i++) {
        char ch = s[i];
        if (!(g_ascii_isalnum(ch) || ch == '+' || ch == '/' ||
              (ch == '=' && i + 2 >= sl)))
            return false;
    }
    /* g_base64_decode() leaves room for a terminating NUL we add. */
    guchar *raw = g_base64_decode(s, len);
    *out = g_realloc(raw, *len + 1);
    (*out)[*len] = '\0';
    return true;
}

ETCD_HIDDEN bool procreg_etcd_json_bool(JsonObject *o, const char *member)
{
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;
    return n != NULL && JSON_NODE_HOLDS_VALUE(n) &&
           json_node_get_value_type(n) == G_TYPE_BOOLEAN &&
           json_node_get_boolean(n);
}

ETCD_HIDDEN JsonObject *procreg_etcd_json_obj(JsonObject *o,
                                              const char *member)
{
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;
    return n != NULL && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n)
                                                  : NULL;
}

ETCD_HIDDEN JsonArray *procreg_etcd_json_array(JsonObject *o,
                                               const char *member)
{
    JsonNode *n = o ? json_object_get_member(o, member) : NULL;
    return n != NULL && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n)
                                                 : NULL;
}

ETCD_HIDDEN void procreg_etcd_append_b64(GString *s, const void *data,
                                         size_t len)
{
    g_string_append_c(s, '"');
    if (len > 0) {
        char *enc = g_base64_encode(data, len);
        g_string_append(s, enc);
        g_free(enc);
    }
    g_string_append_c(s, '"');
}
