/*
 * The recorder: a client that runs random operations on a registry and
 * writes what it called and what it got, in the line format of
 * history.h, together with the events its subscription delivered.
 */
#ifndef PROCREG_TESTS_HISTORY_RECORD_H
#define PROCREG_TESTS_HISTORY_RECORD_H

#include "history.h"

#include <pthread.h>

/* Where one client's lines go.  With @each_line every line is one
 * write(2) as it is made (a client that may be SIGKILLed loses nothing
 * it finished); otherwise lines are buffered until hist_log_close().
 * Thread-safe (the event callback writes from the dispatcher thread). */
typedef struct hist_log hist_log;
hist_log *hist_log_open(const char *path, bool each_line, GError **error);
void hist_log_printf(hist_log *log, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Flush and close; false with @error when a write failed. */
bool hist_log_close(hist_log *log, GError **error);

/* Conditions on CLOCK_MONOTONIC (g_get_monotonic_time()'s clock), with
 * pthread primitives: glib's futex-based GMutex and GCond are invisible
 * to ThreadSanitizer.  The wait returns false at @end_us. */
void hist_cond_init(pthread_cond_t *c);
bool hist_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m,
                          gint64 end_us);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t hist_now(void);
/* "PID:START". */
char *hist_owner_text(const procreg_owner *o);

/* Owners a register may name besides the caller: live helper processes
 * that the test kills and replaces.  Thread-safe. */
typedef struct hist_owner_pool hist_owner_pool;

/* What to run. */
typedef struct {
    int n_keys;          /* keys k0..k(n-1) of the namespace */
    const char *ns;
    bool drop;           /* sometimes drop the namespace */
    bool list;           /* list and find (per-key projections) */
} hist_workload;

typedef struct hist_client hist_client;

/* A client numbered @id on @reg, drawing from @seed, writing to @log
 * (borrowed).  @pool may be NULL (the caller owns what it registers). */
hist_client *hist_client_new(procreg *reg, int id, guint32 seed,
                             const hist_workload *w, hist_log *log,
                             hist_owner_pool *pool);
void hist_client_free(hist_client *c);

/* Subscribe to every change (@reg wide) and record the events of the
 * workload's namespace; those of @drain_ns count for
 * hist_client_wait_drained(). */
int hist_client_subscribe(hist_client *c, const char *drain_ns,
                          GError **error);
/* One random operation, recorded. */
void hist_client_step(hist_client *c);
/* Register every key for @owner (NULL: the calling process), recorded:
 * before an owner is killed, so it holds what it can; right after, when
 * none may answer EEXISTS naming the dead one. */
void hist_client_register_each(hist_client *c, const procreg_owner *owner);
/* Unregister key @k whoever holds it (PROCREG_FORCE), recorded: the
 * killer frees a key for its victim (run.c, PROCREG_TEST_FORCE_DEAD_HOLDER). */
void hist_client_unregister_forced(hist_client *c, int k);
/* Record, for the drain protocol, that the subscription has delivered
 * every event up to @seq (in-process) or the end markers of the
 * clients @ids (across processes), waiting up to @timeout_ms. */
bool hist_client_wait_seq(hist_client *c, uint64_t seq, int timeout_ms);
bool hist_client_wait_markers(hist_client *c, const int *ids, int n,
                              int timeout_ms);
/* Stop recording events ("drained" line); @complete as the waits said. */
void hist_client_end_events(hist_client *c, bool complete);

/* The final serial recount, recorded as operations: list, count and an
 * entry lookup of every key.  false with a message in @report when the
 * count, the list and the lookups disagree. */
bool hist_client_recount(hist_client *c, GString *report);

hist_owner_pool *hist_owner_pool_new(void);
void hist_owner_pool_free(hist_owner_pool *p);
/* Add or replace slot @slot (grows the pool). */
void hist_owner_pool_set(hist_owner_pool *p, guint slot,
                         const procreg_owner *o);

#endif
