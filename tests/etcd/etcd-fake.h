/*
 * Fake servers for the etcd backend tests: a TCP listener on 127.0.0.1
 * (port 0: a free one) with a thread per connection, that misbehaves in
 * one chosen way.  Stopped by etcd_fake_stop(), which closes every
 * connection and joins every thread.
 *
 *   FAKE_STALL    reads whatever comes and never answers (a member that
 *                 hangs, as far as its clients can tell);
 *   FAKE_REPLY    reads one request and answers it with fixed bytes, then
 *                 closes (a server that is not etcd, a bad reply); or
 *                 answers at once, before any request (for a TLS client);
 *   FAKE_FLOOD    reads one request and answers 200 with a body that
 *                 never ends, and has no newline;
 *   FAKE_PROXY    forwards each connection to a real member, with three
 *                 faults on demand: swallow the member's replies to some
 *                 requests (a lost answer), hold requests until a gate
 *                 opens, and answer the first requests that contain a
 *                 given text as FAKE_FLOOD does.
 */
#ifndef PROCREG_TESTS_ETCD_FAKE_H
#define PROCREG_TESTS_ETCD_FAKE_H

#include <glib.h>
#include <stdbool.h>

/* A flag threads wait on; set once. */
typedef struct etcd_gate etcd_gate;
etcd_gate *etcd_gate_new(void);
void etcd_gate_free(etcd_gate *g);
void etcd_gate_open(etcd_gate *g);
void etcd_gate_close(etcd_gate *g);
/* Wait until it is open, up to @timeout_ms; whether it is. */
bool etcd_gate_wait(etcd_gate *g, int timeout_ms);

typedef enum {
    FAKE_STALL,
    FAKE_REPLY,
    FAKE_FLOOD,
    FAKE_PROXY,
} etcd_fake_mode;

typedef struct {
    etcd_fake_mode mode;
    /* FAKE_REPLY: the bytes to answer with (copied), and how many. */
    const char *reply;
    size_t reply_len;
    bool at_once; /* answer on accepting, without reading */
    /* FAKE_PROXY */
    int target_port;
    etcd_gate *hold;       /* forward nothing until it opens (or NULL) */
    etcd_gate *on_reply;   /* opened when the member answers a request
                            * whose reply is swallowed (or NULL) */
    const char *flood;     /* the first flood_count requests with this
                            * text are flooded, not forwarded */
    int flood_count;
} etcd_fake_config;

typedef struct etcd_fake etcd_fake;

/* Start one; aborts the test when it cannot listen. */
etcd_fake *etcd_fake_start(const etcd_fake_config *config);
int etcd_fake_port(const etcd_fake *f);
/* "http://127.0.0.1:PORT"; g_free it. */
char *etcd_fake_url(const etcd_fake *f);
/* FAKE_PROXY: from now on, swallow the member's replies to requests
 * that contain @needle ("" every request, NULL none). */
void etcd_fake_set_swallow(etcd_fake *f, const char *needle);
/* Connections accepted so far. */
int etcd_fake_connections(etcd_fake *f);
void etcd_fake_stop(etcd_fake *f);

#endif
