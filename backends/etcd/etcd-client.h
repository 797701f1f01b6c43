/*
 * A small client for etcd's v3 JSON gateway (etcd 3.4: POST /v3/...),
 * on libcurl and json-glib.  Private to the etcd backend: every symbol is
 * hidden in the library.  Unary calls in etcd-client.c, streams in
 * etcd-stream.c, JSON in etcd-json.h.
 *
 *  - Unary calls take a handle from a pool of keep-alive easy handles,
 *    POST a JSON body and parse the JSON reply.  Every call has a
 *    deadline, and every attempt on one endpoint a shorter one of its
 *    own; a refused connection, a dropped connection, a member without a
 *    leader or one that does not answer within the attempt's deadline
 *    moves on to the next endpoint within the call's.
 *  - A stream runs one long POST (the watch) through a multi handle so
 *    that another thread can stop it at once.  A stream that stays
 *    silent has its member probed; a member that does not answer ends
 *    it, and the next stream starts on the next endpoint.
 */
#ifndef PROCREG_ETCD_CLIENT_H
#define PROCREG_ETCD_CLIENT_H

#include "etcd-json.h"

/* Returned by procreg_etcd_call() (never to applications): etcd answered
 * "requested lease not found".  The backend re-grants its lease. */
#define ETCD_ELEASE_GONE (-1000)
/* Returned, with ETCD_CALL_REPORT_TOO_BIG, when every member's reply was
 * larger than max_reply_bytes; by procreg_etcd_stream_run() when a line
 * was.  (Else PROCREG_EBACKEND.) */
#define ETCD_EREPLY_TOO_BIG (-1001)

typedef struct etcd_client etcd_client;

typedef enum {
    /* A read that may be answered by any member, leader or not
     * (serializable): no "require leader" header. */
    ETCD_CALL_NO_LEADER_NEEDED = 1u << 0,
    /* A reply over max_reply_bytes is ETCD_EREPLY_TOO_BIG (a range that
     * may ask for fewer keys) */
    ETCD_CALL_REPORT_TOO_BIG = 1u << 1,
} etcd_call_flags;

typedef struct {
    /* NULL-terminated base URLs ("http://127.0.0.1:2379") */
    const char *const *endpoints;
    /* the budget of a call (procreg_etcd_deadline()), and the most one
     * attempt on one endpoint may take (at most timeout_ms) */
    unsigned timeout_ms, attempt_ms;
    /* the longest reply, and line of a stream, read (longer: the member
     * is passed over) */
    size_t max_reply_bytes;
    /* TLS, each NULL when not given: the CA certificates that sign the
     * members' (else the system's), this client's certificate and key */
    const char *ca_file, *cert_file, *key_file;
    /* etcd authentication: NULL user when none */
    const char *user, *password;
} etcd_client_config;

/* Everything in @config is copied. */
ETCD_HIDDEN etcd_client *procreg_etcd_client_new(const etcd_client_config *config);
ETCD_HIDDEN void procreg_etcd_client_free(etcd_client *c);

/* The deadline (g_get_monotonic_time() µs) of an operation that starts
 * now: now + the client's timeout.  An operation of several calls passes
 * the same deadline to each. */
ETCD_HIDDEN gint64 procreg_etcd_deadline(etcd_client *c);

/* POST @body to @path ("/v3/kv/range") and parse the reply, trying the
 * endpoints in turn until @deadline.  The request may reach etcd more
 * than once (an attempt that got no answer in time may have been
 * applied): send only requests whose repetition the caller recognises.
 * @return 0 with *@reply (a JSON object; json_node_unref() it), or
 *   PROCREG_ETIMEDOUT (deadline passed), PROCREG_EBACKEND (no endpoint
 *   reachable, no leader, bad reply), PROCREG_EFULL (request too large,
 *   too many operations, space exceeded), PROCREG_EINVAL (etcd rejected
 *   the request), ETCD_ELEASE_GONE; @error says which endpoints were
 *   tried and what etcd said. */
ETCD_HIDDEN int procreg_etcd_call(etcd_client *c, const char *path,
                                  const char *body, unsigned flags,
                                  gint64 deadline, JsonNode **reply,
                                  GError **error);

/* procreg_etcd_call() for a write whose repetition the caller recognises
 * only while nobody else changed the key since: *@unsure tells whether an
 * attempt before the one answered was sent and got no answer (it may have
 * been applied, and the answer then describes a repetition). */
ETCD_HIDDEN int procreg_etcd_call_write(etcd_client *c, const char *path,
                                        const char *body, gint64 deadline,
                                        JsonNode **reply, bool *unsure,
                                        GError **error);

/* One attempt on endpoint @i only (no failover): for health probes.
 * Updates that endpoint's last error. */
ETCD_HIDDEN int procreg_etcd_call_endpoint(etcd_client *c, unsigned i,
                                           const char *path, const char *body,
                                           unsigned flags, unsigned timeout_ms,
                                           JsonNode **reply, GError **error);

/* The authentication token a stream's etcd refused ("invalid auth
 * token": simple tokens expire): the next call or stream authenticates
 * again.  Safe from any thread. */
ETCD_HIDDEN void procreg_etcd_client_token_refused(etcd_client *c);

/* Figures for health and stats. */
typedef struct {
    uint64_t calls;
    uint64_t failovers;   /* calls that moved on to another endpoint */
    uint64_t timeouts;
    uint64_t failures;    /* calls that returned an error */
    uint64_t slow_attempts; /* attempts abandoned at their deadline */
    uint64_t authentications; /* tokens obtained (the first, renewals) */
    unsigned current;     /* index of the endpoint in use */
    unsigned n_endpoints;
} etcd_client_stats;

ETCD_HIDDEN void procreg_etcd_client_get_stats(etcd_client *c,
                                               etcd_client_stats *out);
ETCD_HIDDEN const char *procreg_etcd_client_endpoint(etcd_client *c,
                                                     unsigned i);
/* The last transport error seen on endpoint @i (NULL: none yet or it
 * answered since); g_free it. */
ETCD_HIDDEN char *procreg_etcd_client_endpoint_error(etcd_client *c,
                                                     unsigned i);

/* ---- streams ---- */

typedef struct etcd_stream etcd_stream;

/* Called with each complete line of the reply (without the newline);
 * return false to end the stream. */
typedef bool (*etcd_line_fn)(const char *line, size_t len, void *user);

/* @silence_ms: after this long without a byte, the stream's member is
 * probed, and the stream ended if it does not answer (0: never). */
ETCD_HIDDEN etcd_stream *procreg_etcd_stream_new(unsigned silence_ms);
ETCD_HIDDEN void procreg_etcd_stream_free(etcd_stream *s);
/* Make procreg_etcd_stream_run() return now, and every later run at once.
 * Safe from any thread. */
ETCD_HIDDEN void procreg_etcd_stream_stop(etcd_stream *s);
ETCD_HIDDEN bool procreg_etcd_stream_stopped(etcd_stream *s);
/* Make the current (or next) run return now, as if the server had ended
 * it, until procreg_etcd_stream_rearm().  Safe from any thread.  Rearm
 * before deciding what the next run asks for: an interrupt after that
 * is never lost. */
ETCD_HIDDEN void procreg_etcd_stream_interrupt(etcd_stream *s);
ETCD_HIDDEN void procreg_etcd_stream_rearm(etcd_stream *s);

/* POST @body to @path, starting at the endpoint in use, and feed the
 * reply to @fn line by line until the server ends it, @fn returns false,
 * the stream is stopped or @deadline (g_get_monotonic_time() µs; 0: none)
 * passes, which is PROCREG_ETIMEDOUT.  An endpoint that cannot be reached or sends
 * nothing within an attempt's deadline is passed over for the next (@fn
 * has seen nothing then).  A stream that goes silent for the stream's
 * silence_ms while its member does not answer a probe ends with an error,
 * and that member is no longer the one in use.
 * @return 0 when the stream ended normally or was stopped, else a
 *   negative code with @error. */
ETCD_HIDDEN int procreg_etcd_stream_run(etcd_client *c, etcd_stream *s,
                                        const char *path, const char *body,
                                        gint64 deadline, etcd_line_fn fn,
                                        void *user, GError **error);

#endif
