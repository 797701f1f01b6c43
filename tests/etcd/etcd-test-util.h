/* Helpers shared by the etcd test programs. */
#ifndef PROCREG_TESTS_ETCD_UTIL_H
#define PROCREG_TESTS_ETCD_UTIL_H

#include <procreg/procreg.h>

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

/* An int64 from backend_stats of procreg_stats(); -1 when absent. */
gint64 backend_stat_int(procreg *reg, const char *name);

#endif
