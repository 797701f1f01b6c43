/*
 * The owner records: what the owner index (owner-index.c) keeps of each
 * owner process and the monitor (liveness.c) watches and cleans up.  For
 * those two files only; the rest of core uses internal.h.
 */
#ifndef PROCREG_CORE_OWNER_INDEX_H
#define PROCREG_CORE_OWNER_INDEX_H

#include "internal.h"

/* One key of an owner: "ns\x1fname" with the revision it was registered
 * at, in one allocation; the index maps key -> this (the key string lives
 * inside the value).  A group member of the owner is indexed as
 * MEMBER_MARK "ns\x1fgroup\x1fID" with its id as the revision: names hold
 * no control characters, so the two kinds never meet. */
typedef struct {
    uint64_t revision;
    char key[];
} owned_key;

#define MEMBER_MARK '\x1e'

typedef struct {
    procreg_owner owner;
    uint64_t serial; /* epoll data; never 0 */
    int pidfd;       /* -1 when not watched by a pidfd */
    bool dead;       /* seen dead: cleanup queued or running */
    bool cleaning;   /* the monitor is cleaning it now */
    bool queued;
    int64_t dead_at_ns;
    GHashTable *keys; /* key string -> owned_key* */
} owner_rec;

struct procreg_monitor {
    pthread_mutex_t lock;
    GHashTable *by_pid;    /* GINT_TO_POINTER(pid) -> GPtrArray of owner_rec* */
    GHashTable *by_serial; /* &rec->serial -> rec */
    uint64_t next_serial;
    size_t n_owners, n_polled, n_dead, n_keys;
    GQueue cleanup; /* owner_rec*, dead and queued */
    GQueue removals; /* removal_report*, for the monitor thread to report */
    int epfd, evfd;
    bool poll_all; /* pidfd_open unavailable */
    bool stop;
    bool running;
    GThread *thread;
    procreg *reg;
    /* figures */
    uint64_t owners_exited, entries_removed, failures;
    uint64_t last_latency_ns, max_latency_ns;
};

/* An index record copied out of the lock: its string, its names (the
 * group for a member) and its revision (a member's id). */
typedef struct {
    char *key;
    char *ns, *name;
    uint64_t revision;
    bool member;
} key_copy;

/* ---- owner-index.c, for liveness.c ---- */

/* Free a value of by_pid: an owner's records. */
PROCREG_INTERNAL void procreg_owner_recs_free(gpointer p);
/* Wake the monitor thread; any lock held. */
PROCREG_INTERNAL void procreg_monitor_wake(procreg_monitor *m);
/* With m->lock held: mark @rec dead (once) and queue its cleanup. */
PROCREG_INTERNAL void procreg_monitor_mark_dead(procreg_monitor *m,
                                                owner_rec *rec);
/* With m->lock held: forget @rec and free it. */
PROCREG_INTERNAL void procreg_monitor_drop_rec(procreg_monitor *m,
                                               owner_rec *rec);
/* Copy @ok (read under m->lock) to use out of the lock. */
PROCREG_INTERNAL key_copy *procreg_key_copy_new(const owned_key *ok);
PROCREG_INTERNAL void procreg_key_copy_free(gpointer p);

#endif
