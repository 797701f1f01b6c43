/*
 * What the two halves of the etcd client share: etcd-client.c (unary
 * calls) and etcd-stream.c (the watch's stream).  Private to them.
 */
#ifndef PROCREG_ETCD_CLIENT_PRIVATE_H
#define PROCREG_ETCD_CLIENT_PRIVATE_H

#include "etcd-client.h"

#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND 1
#endif
#include <procreg/backend.h>

#include <curl/curl.h>
#include <pthread.h>
#include <string.h>

/* A connection attempt never waits longer than this, so a dead endpoint
 * leaves time for the next one. */
#define CONNECT_TIMEOUT_MS 1000

struct etcd_client {
    char **urls;
    unsigned n;
    unsigned timeout_ms;
    unsigned attempt_ms;
    size_t max_reply;
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
    pthread_mutex_t lock;  /* pool, last_error, token */
    GPtrArray *idle;
    char **last_error; /* per endpoint, NULL when fine */
    /* TLS: NULL when not given */
    char *ca_file, *cert_file, *key_file;
    /* authentication (etcd-auth.c): user NULL when none */
    char *user, *password;
    pthread_mutex_t auth_lock; /* one authentication at a time */
    char *token; /* under lock: NULL none yet, "" auth not enabled */
    /* stats, atomic */
    guint64 calls, failovers, timeouts, failures, slow_attempts,
        authentications;
};

/* Calls the client makes for itself (etcd-auth.c): no token sent. */
#define ETCD_CALL_NO_TOKEN (1u << 16)

ETCD_HIDDEN void procreg_etcd_client_global_init(void);
/* Record @why (NULL: fine) as endpoint @i's last error, for health. */
ETCD_HIDDEN void procreg_etcd_client_set_error(etcd_client *c, unsigned i,
                                              const char *why);
/* Endpoint @i failed an attempt: calls that start after this one start
 * at the next endpoint, unless another call moved on already. */
ETCD_HIDDEN void procreg_etcd_client_move_past(etcd_client *c, unsigned i);
/* POST as procreg_etcd_call_write(), on endpoint @only alone when >= 0;
 * @unsure may be NULL. */
ETCD_HIDDEN int procreg_etcd_client_call(etcd_client *c, const char *path,
                                        const char *body, unsigned flags,
                                        gint64 deadline, int only,
                                        JsonNode **reply, bool *unsure,
                                        GError **error);

/* ---- etcd-auth.c ---- */

/* The headers of a request with @flags (etcd_call_flags,
 * ETCD_CALL_NO_TOKEN), the token in use among them (a copy in *@token,
 * NULL when none; g_free it): free the list with curl_slist_free_all(). */
ETCD_HIDDEN struct curl_slist *procreg_etcd_client_headers(etcd_client *c,
                                                          unsigned flags,
                                                          char **token);
/* Set the TLS files on @h. */
ETCD_HIDDEN void procreg_etcd_client_tls(etcd_client *c, CURL *h);
/* With a user: make sure there is a token, authenticating by @deadline
 * when there is none or it is still @refused (the token etcd refused;
 * NULL: none was).  0 or an error naming the user, never the password. */
ETCD_HIDDEN int procreg_etcd_client_authenticate(etcd_client *c,
                                                const char *refused,
                                                gint64 deadline,
                                                GError **error);
/* The message of a refusal that concerns authentication: etcd's @msg
 * and @grpc code said to whom and what to do (g_free it), or NULL. */
ETCD_HIDDEN char *procreg_etcd_client_auth_refusal(etcd_client *c, int grpc,
                                                  const char *msg,
                                                  const char *url);

/* Append "URL (why)" to @tried, once per URL. */
ETCD_HIDDEN void procreg_etcd_client_note_tried(GString *tried,
                                               const char *url,
                                               const char *why);

#endif
