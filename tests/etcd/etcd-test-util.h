/* Helpers shared by the etcd test programs. */
#ifndef PROCREG_TESTS_ETCD_UTIL_H
#define PROCREG_TESTS_ETCD_UTIL_H

#include "etcd-fake.h"
#include "etcd-harness.h"

#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND 1 /* holding_proxy's instances */
#endif
#include <procreg/backend.h>

#include <pthread.h>
#include <stdbool.h>

/* Events a subscriber saw. */
typedef struct {
    procreg_event_kind kind;
    procreg_event_reason reason;
    char *ns;
    char *name;
    bool external;
    pid_t pid;
    uint64_t revision;
    uint64_t position; /* procreg_event.position */
    gint64 at; /* g_get_monotonic_time() when it arrived */
} rec_event;

typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    GPtrArray *events; /* rec_event* */
    uint64_t sub;
    procreg *reg;
} recorder;

/* Subscribe @r to everything in @reg. */
void recorder_start(recorder *r, procreg *reg);
/* Subscribe @r to namespace @ns of @reg after position @after
 * (procreg_subscribe_from()). */
void recorder_start_from(recorder *r, procreg *reg, const char *ns,
                         uint64_t after);
void recorder_stop(recorder *r);
/* Wait up to @timeout_ms for an event of @kind on (@ns, @name);
 * @reason < 0 matches any reason.  Returns it (borrowed) or NULL. */
const rec_event *recorder_wait(recorder *r, procreg_event_kind kind,
                               int reason, const char *ns, const char *name,
                               int timeout_ms);
/* How many events of @kind on (@ns, @name) were seen. */
guint recorder_count(recorder *r, procreg_event_kind kind, const char *ns,
                     const char *name);
/* A printable list of what was seen; g_free it. */
char *recorder_dump(recorder *r);

/* The raw etcd key of (ns, name) under @prefix, base64; g_free it. */
char *etcd_entry_key_b64(const char *prefix, const char *ns, const char *name);

/* The registry of the spec @format makes; the test fails, naming the
 * spec and why, when it does not open. */
procreg *open_spec(const char *format, ...) G_GNUC_PRINTF(1, 2);
/* What procreg_open(@spec) returns (the registry closed at once). */
int open_rc(const char *spec, GError **err);

/* An int64 from backend_stats of procreg_stats(); -1 when absent. */
gint64 backend_stat_int(procreg *reg, const char *name);

/* A late repetition (etcd-faults, etcd-groups): a proxy in front of
 * member 0 holds requests while told to (a member that hangs), then lets
 * what it held reach etcd late, the answers swallowed.  An instance from
 * holding_proxy_open() sends each request to the proxy first, and again to
 * the member when the proxy does not answer in time; other talks to the
 * member alone. */
typedef struct {
    etcd_gate *gate;     /* open: the proxy forwards */
    etcd_gate *answered; /* opened when the member answers a held request */
    etcd_fake *proxy;
    char *spec;             /* proxy, then member; attempt_timeout_ms=300 */
    procreg_backend *other; /* the member alone */
} holding_proxy;

/* Instances under @prefix, with watch=false and lease_ttl=60. */
void holding_proxy_start(holding_proxy *p, const etcd_cluster *c,
                         const char *prefix);
/* A new instance through the proxy, which forwards everything until
 * holding_proxy_hold(); close it. */
procreg_backend *holding_proxy_open(holding_proxy *p);
/* Hold every request from now on. */
void holding_proxy_hold(holding_proxy *p);
/* Let what was held reach the member, its answer swallowed; return once
 * the member answered it (the test fails after 10 s). */
void holding_proxy_release(holding_proxy *p);
void holding_proxy_stop(holding_proxy *p);

#endif
