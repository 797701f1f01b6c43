/*
 * The etcd v3 JSON gateway client's unary calls: the pool of keep-alive
 * handles, attempts and failover, what a failure is called.  See
 * etcd-client.h; streams are in etcd-stream.c.
 */
#include "etcd-client-private.h"

/* Pause between two rounds over all endpoints when they answered but had
 * no leader (an election takes about a second). */
#define NO_LEADER_PAUSE_MS 100
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
    GRPC_UNAUTHENTICATED = 16,
};

typedef struct {
    CURL *h;
    GString *buf;
    size_t max;   /* the client's max_reply */
    bool too_big; /* the reply went past max: the transfer was cut */
    char errbuf[CURL_ERROR_SIZE];
} conn;


ETCD_HIDDEN void procreg_etcd_client_global_init(void)
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

ETCD_HIDDEN etcd_client *procreg_etcd_client_new(const etcd_client_config *config)
{
    procreg_etcd_client_global_init();
    etcd_client *c = g_new0(etcd_client, 1);
    c->urls = g_strdupv((char **)config->endpoints);
    c->n = g_strv_length(c->urls);
    c->timeout_ms = config->timeout_ms;
    c->attempt_ms = MIN(config->attempt_ms, config->timeout_ms);
    c->max_reply = config->max_reply_bytes;
    c->last_ok = g_new0(gint64, c->n);
    c->last_slow = g_new0(gint64, c->n);
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->auth_lock, NULL);
    c->idle = g_ptr_array_new();
    c->last_error = g_new0(char *, c->n);
    c->ca_file = g_strdup(config->ca_file);
    c->cert_file = g_strdup(config->cert_file);
    c->key_file = g_strdup(config->key_file);
    c->user = g_strdup(config->user);
    c->password = g_strdup(config->password);
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
    g_free(c->ca_file);
    g_free(c->cert_file);
    g_free(c->key_file);
    g_free(c->user);
    if (c->password != NULL) {
        volatile char *p = c->password;
        for (size_t i = 0; p[i] != '\0'; i++)
            p[i] = 0;
        g_free(c->password);
    }
    g_free(c->token);
    pthread_mutex_destroy(&c->auth_lock);
    pthread_mutex_destroy(&c->lock);
    g_free(c);
}

static size_t collect(char *data, size_t size, size_t nmemb, void *user)
{
    conn *k = user;
    size_t n = size * nmemb;
    if (k->buf->len + n > k->max) {
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
    k->max = c->max_reply;
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
    procreg_etcd_client_tls(c, k->h);
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

ETCD_HIDDEN void procreg_etcd_client_set_error(etcd_client *c, unsigned i, const char *why)
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
static int map_refusal(etcd_client *c, int grpc, const char *msg,
                       const char *path, const char *url, GError **error)
{
    char *auth = procreg_etcd_client_auth_refusal(c, grpc, msg, url);
    if (auth != NULL) {
        g_set_error_literal(error, PROCREG_ERROR, PROCREG_EBACKEND, auth);
        g_free(auth);
        return PROCREG_EBACKEND;
    }
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

ETCD_HIDDEN void procreg_etcd_client_note_tried(GString *tried, const char *url, const char *why)
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
ETCD_HIDDEN void procreg_etcd_client_move_past(etcd_client *c, unsigned i)
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
    ATTEMPT_TOKEN,       /* etcd refused the token: authenticate again */
    ATTEMPT_TOO_BIG,     /* a reply over max_reply_bytes, cut off */
} attempt_end;

/* Whether the member may answer another attempt within the call (an
 * election ends, a load passes); the others fail the same way again. */
static bool passing(attempt_end end)
{
    return end == ATTEMPT_SLOW || end == ATTEMPT_BUSY;
}

static bool tls_failure(CURLcode res)
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
    default:
        return false;
    }
}

/* Whether a new TLS connection broke right after its handshake, before
 * any answer: with TLS 1.3 a member refuses a client's certificate (or
 * its absence) after the handshake, by an alert or by closing. */
static bool tls_refused(conn *k, CURLcode res)
{
    curl_off_t handshake_us = 0;
    curl_easy_getinfo(k->h, CURLINFO_APPCONNECT_TIME_T, &handshake_us);
    return handshake_us > 0 && k->buf->len == 0 &&
           (res == CURLE_RECV_ERROR || res == CURLE_SEND_ERROR ||
            res == CURLE_GOT_NOTHING);
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
    if (tls_failure(res)) {
        *why = g_strdup_printf("TLS: %s", what);
        return ATTEMPT_TLS;
    }
    if (tls_refused(k, res)) {
        *why = g_strdup_printf("TLS: the member ended the connection after "
                               "the handshake (refusing the client "
                               "certificate, or its absence?): %s",
                               what);
        return ATTEMPT_TLS;
    }
    if (res == CURLE_UNSUPPORTED_PROTOCOL || res == CURLE_WEIRD_SERVER_REPLY) {
        *why = g_strdup_printf("not HTTP: %s", what);
        return ATTEMPT_NOT_ETCD;
    }
    *why = g_strdup(what);
    return ATTEMPT_UNREACHABLE;
}

/* One attempt on endpoint @i with @attempt_ms (@token_sent: the request
 * carries a token).  ATTEMPT_ANSWERED: the call ends with *@rc (and
 * *@reply, or @error); otherwise *@why says what happened (g_free it),
 * and *@no_leader is set when etcd said so. */
static attempt_end attempt(etcd_client *c, conn *k, unsigned i,
                           const char *path, bool token_sent,
                           gint64 attempt_ms, int *rc,
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
        *why = g_strdup_printf("a reply over max_reply_bytes (%zu)", k->max);
        return ATTEMPT_TOO_BIG;
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
    } else if (grpc == GRPC_UNAUTHENTICATED &&
               strstr(msg, "invalid auth token") != NULL && token_sent) {
        note_ok(c, i);
        *why = g_strdup(msg);
        end = ATTEMPT_TOKEN;
    } else {
        note_ok(c, i);
        *rc = map_refusal(c, grpc, msg, path, base, error);
    }
    g_free(msg);
    return end;
}

/* Every endpoint failed the same round, none in a passing way: the error,
 * headed by the one cause when all share it.  @kinds: a bit per
 * attempt_end seen. */
static int all_failed(unsigned kinds, unsigned flags, const GString *tried,
                      GError **error)
{
    const char *head = "no etcd endpoint usable";
    if (kinds == 1u << ATTEMPT_TOO_BIG) {
        procreg_set_error(error, PROCREG_EBACKEND,
                          "every etcd endpoint sent a reply over "
                          "max_reply_bytes: tried %s",
                          tried->str);
        return (flags & ETCD_CALL_REPORT_TOO_BIG) ? ETCD_EREPLY_TOO_BIG
                                                  : PROCREG_EBACKEND;
    }
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
ETCD_HIDDEN int procreg_etcd_client_call(etcd_client *c, const char *path,
                                        const char *body, unsigned flags,
                                        gint64 deadline, int only,
                                        JsonNode **reply, bool *unsure,
                                        GError **error)
{
    *reply = NULL;
    if (unsure != NULL)
        *unsure = false;
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
    bool with_token = c->user != NULL && !(flags & ETCD_CALL_NO_TOKEN);
    bool renewed = false;
    int rc = with_token ? procreg_etcd_client_authenticate(c, NULL, deadline,
                                                           error)
                        : 0;
    char *token = NULL;
    struct curl_slist *headers = procreg_etcd_client_headers(c, flags, &token);
    curl_easy_setopt(k->h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(k->h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(k->h, CURLOPT_HTTPHEADER, headers);
    while (rc == 0) {
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
            attempt(c, k, i, path, token != NULL,
                    attempt_ms(c, left_ms, attempts == 0, only < 0),
                    &rc, reply, &why, &no_leader, error);
        if (end == ATTEMPT_ANSWERED) {
            procreg_etcd_client_set_error(c, i, NULL);
            if (rc == 0 && i != start && only < 0)
                g_atomic_int_set(&c->current, (gint)i);
            break;
        }
        if (end == ATTEMPT_TOKEN) {
            /* Expired, most likely: a new one, once, on the same member. */
            if (renewed) {
                rc = procreg_set_error(error, PROCREG_EBACKEND,
                                       "etcd %s refused a new token of user "
                                       "'%s': %s",
                                       c->urls[i], c->user, why);
                g_free(why);
                break;
            }
            g_free(why);
            renewed = true;
            rc = procreg_etcd_client_authenticate(c, token, deadline, error);
            curl_slist_free_all(headers);
            g_free(token);
            headers = procreg_etcd_client_headers(c, flags, &token);
            curl_easy_setopt(k->h, CURLOPT_HTTPHEADER, headers);
            continue;
        }
        procreg_etcd_client_set_error(c, i, why);
        procreg_etcd_client_note_tried(tried, c->urls[i], why);
        g_free(why);
        /* Sent, and no answer: etcd may have applied it. */
        if (unsure != NULL && (end == ATTEMPT_SLOW ||
                               (end == ATTEMPT_UNREACHABLE &&
                                request_sent(k->h))))
            *unsure = true;
        if (only >= 0) {
            /* tried holds "URL (why)". */
            rc = procreg_set_error(error, PROCREG_EBACKEND, "etcd %s", tried->str);
            break;
        }
        procreg_etcd_client_move_past(c, i);
        attempts++;
        stat_add(&c->failovers);
        if (passing(end))
            passing_in_round++;
        else
            kinds_in_round |= 1u << end;
        i = (i + 1) % c->n;
        if (attempts % c->n == 0) {
            if (passing_in_round == 0) {
                rc = all_failed(kinds_in_round, flags, tried, error);
                break;
            }
            passing_in_round = kinds_in_round = 0;
            gint64 left_us = deadline - g_get_monotonic_time();
            if (left_us > 0)
                g_usleep((gulong)MIN(left_us, NO_LEADER_PAUSE_MS * 1000));
        }
    }
    g_string_free(tried, TRUE);
    curl_easy_setopt(k->h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    g_free(token);
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
    return procreg_etcd_client_call(c, path, body, flags, deadline, -1, reply,
                                    NULL, error);
}

ETCD_HIDDEN int procreg_etcd_call_write(etcd_client *c, const char *path,
                                        const char *body, gint64 deadline,
                                        JsonNode **reply, bool *unsure,
                                        GError **error)
{
    return procreg_etcd_client_call(c, path, body, 0, deadline, -1, reply,
                                    unsure, error);
}

ETCD_HIDDEN int procreg_etcd_call_endpoint(etcd_client *c, unsigned i,
                                           const char *path, const char *body,
                                           unsigned flags, unsigned timeout_ms,
                                           JsonNode **reply, GError **error)
{
    return procreg_etcd_client_call(c, path, body, flags,
                     g_get_monotonic_time() + (gint64)timeout_ms * 1000,
                     (int)(i % c->n), reply, NULL, error);
}

ETCD_HIDDEN void procreg_etcd_client_get_stats(etcd_client *c,
                                               etcd_client_stats *out)
{
    out->calls = stat_get(&c->calls);
    out->failovers = stat_get(&c->failovers);
    out->timeouts = stat_get(&c->timeouts);
    out->failures = stat_get(&c->failures);
    out->slow_attempts = stat_get(&c->slow_attempts);
    out->authentications = stat_get(&c->authentications);
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

