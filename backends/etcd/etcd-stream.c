/*
 * The etcd client's stream: one long POST (the watch) through a multi
 * handle, so that another thread can stop it at once, fed to a callback
 * line by line; a member that stays silent is probed and left.  See
 * etcd-client.h.
 */
#include "etcd-client-private.h"

/* A line buffer grown past this is given back after its line. */
#define LINE_KEEP_BYTES (1u << 20)
/* A stream looks at its member's health at least this often. */
#define STREAM_TICK_MS 250

struct etcd_stream {
    CURLM *multi;
    CURL *h;
    gint stop;      /* atomic: every run ends at once */
    gint interrupt; /* atomic: the current run ends */
    unsigned silence_ms;
    GString *line;
    etcd_line_fn fn;
    void *user;
    bool ended_by_fn;
    size_t max_line; /* the client's max_reply */
    bool too_big;
    gint64 last_data; /* monotonic µs of the last byte received */
    gint64 deadline;  /* of the current run (0: none) */
    char errbuf[CURL_ERROR_SIZE];
};

ETCD_HIDDEN etcd_stream *procreg_etcd_stream_new(unsigned silence_ms)
{
    procreg_etcd_client_global_init();
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

ETCD_HIDDEN void procreg_etcd_stream_interrupt(etcd_stream *s)
{
    g_atomic_int_set(&s->interrupt, 1);
    if (s->multi != NULL)
        curl_multi_wakeup(s->multi);
}

ETCD_HIDDEN void procreg_etcd_stream_rearm(etcd_stream *s)
{
    g_atomic_int_set(&s->interrupt, 0);
}

/* Whether the current run is to end now. */
static bool ending(etcd_stream *s)
{
    return procreg_etcd_stream_stopped(s) ||
           g_atomic_int_get(&s->interrupt) != 0;
}

/* Empty the line buffer, and give back a large one. */
static void line_reset(etcd_stream *s)
{
    if (s->line->allocated_len > LINE_KEEP_BYTES) {
        g_string_free(s->line, TRUE);
        s->line = g_string_new(NULL);
    }
    g_string_truncate(s->line, 0);
}

static size_t stream_write(char *data, size_t size, size_t nmemb, void *user)
{
    etcd_stream *s = user;
    size_t n = size * nmemb;
    s->last_data = g_get_monotonic_time();
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(data + i, '\n', n - i);
        size_t part = nl ? (size_t)(nl - (data + i)) : n - i;
        /* Bounded: never more than max_line bytes of one line held. */
        if (s->line->len + part > s->max_line) {
            s->too_big = true;
            return 0;
        }
        g_string_append_len(s->line, data + i, (gssize)part);
        i += part;
        if (nl == NULL)
            break;
        i++;
        bool go_on = s->line->len == 0 ||
                     s->fn(s->line->str, s->line->len, s->user);
        line_reset(s);
        if (!go_on) {
            s->ended_by_fn = true;
            return 0;
        }
    }
    return ending(s) ? 0 : n;
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
    if (procreg_etcd_call_endpoint(c, i, "/v3/maintenance/status", "{}",
                                   ETCD_CALL_NO_LEADER_NEEDED, c->attempt_ms,
                                   &reply, error) != 0)
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
    line_reset(s);
    s->max_line = c->max_reply;
    s->ended_by_fn = false;
    s->too_big = false;
    s->last_data = 0;
    s->errbuf[0] = '\0';
    curl_easy_setopt(s->h, CURLOPT_URL, url);
    curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    char *token = NULL;
    struct curl_slist *headers = procreg_etcd_client_headers(c, 0, &token);
    g_free(token);
    curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, headers);
    procreg_etcd_client_tls(c, s->h);
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
    bool slow = false, late = false;
    while (!done && !ending(s)) {
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
        if (s->deadline != 0 && now >= s->deadline) {
            late = true;
            break;
        }
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
        if (s->deadline != 0)
            check = MIN(check, s->deadline);
        /* Woken within STREAM_TICK_MS to see other calls' slow attempts. */
        gint64 wait_ms = (check - now + 999) / 1000;
        curl_multi_poll(s->multi, NULL, 0,
                        (int)CLAMP(wait_ms, 1, STREAM_TICK_MS), NULL);
    }
    long status = 0;
    curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &status);
    /* An unfinished transfer's connection is closed, not kept. */
    curl_multi_remove_handle(s->multi, s->h);
    curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    g_free(url);
    if (ending(s) || s->ended_by_fn) {
        g_clear_error(&silent);
        return 0;
    }
    if (late) {
        g_clear_error(&silent);
        return procreg_set_error(error, PROCREG_ETIMEDOUT,
                                 "etcd %s: %s did not end within the "
                                 "operation's timeout",
                                 base, path);
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
    if (s->too_big) {
        line_reset(s);
        procreg_set_error(error, PROCREG_EBACKEND,
                          "etcd %s: a line of %s over max_reply_bytes (%zu)",
                          base, path, s->max_line);
        return ETCD_EREPLY_TOO_BIG;
    }
    /* A last line without its newline. */
    if (s->line->len > 0) {
        s->fn(s->line->str, s->line->len, s->user);
        line_reset(s);
    }
    if (res == CURLE_OK && (status == 200 || status == 0))
        return 0;
    if (s->last_data == 0)
        *end = STREAM_NOT_OPENED;
    if (res == CURLE_OK)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "etcd %s answered %s with HTTP %ld", base,
                                 path, status);
    return procreg_set_error(error, PROCREG_EBACKEND, "etcd %s, %s: %s", base,
                             path, s->errbuf[0] ? s->errbuf
                                                : curl_easy_strerror(res));
}

ETCD_HIDDEN int procreg_etcd_stream_run(etcd_client *c, etcd_stream *s,
                                        const char *path, const char *body,
                                        gint64 deadline, etcd_line_fn fn,
                                        void *user, GError **error)
{
    if (s->multi == NULL || s->h == NULL)
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "etcd: cannot make a curl handle");
    s->fn = fn;
    s->user = user;
    s->deadline = deadline;
    int rc = procreg_etcd_client_authenticate(
        c, NULL, deadline != 0 ? deadline : procreg_etcd_deadline(c), error);
    if (rc != 0)
        return rc;
    unsigned start = (unsigned)g_atomic_int_get(&c->current) % c->n;
    GString *tried = g_string_new(NULL);
    for (unsigned k = 0; k < c->n && !ending(s); k++) {
        unsigned i = (start + k) % c->n;
        stream_end end;
        GError *local = NULL;
        rc = stream_once(c, s, i, path, body, &end, &local);
        if (end != STREAM_ENDED) {
            procreg_etcd_client_set_error(c, i, local->message);
            procreg_etcd_client_move_past(c, i);
        }
        if (end != STREAM_NOT_OPENED) {
            if (local != NULL)
                g_propagate_error(error, local);
            else if (k > 0)
                g_atomic_int_set(&c->current, (gint)i);
            g_string_free(tried, TRUE);
            return rc;
        }
        procreg_etcd_client_note_tried(tried, c->urls[i], local->message);
        g_clear_error(&local);
    }
    if (!ending(s))
        rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "no etcd endpoint usable for %s: tried %s",
                               path, tried->str);
    else
        rc = 0;
    g_string_free(tried, TRUE);
    return rc;
}

