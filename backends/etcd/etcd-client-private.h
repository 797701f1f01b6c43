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

ETCD_HIDDEN void procreg_etcd_client_global_init(void);
/* Record @why (NULL: fine) as endpoint @i's last error, for health. */
ETCD_HIDDEN void procreg_etcd_client_set_error(etcd_client *c, unsigned i,
                                              const char *why);
/* Endpoint @i failed an attempt: calls that start after this one start
 * at the next endpoint, unless another call moved on already. */
ETCD_HIDDEN void procreg_etcd_client_move_past(etcd_client *c, unsigned i);
/* Append "URL (why)" to @tried, once per URL. */
ETCD_HIDDEN void procreg_etcd_client_note_tried(GString *tried,
                                               const char *url,
                                               const char *why);

#endif
