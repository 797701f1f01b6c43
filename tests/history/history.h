/*
 * Recorded histories of registry operations and the checks run on them.
 *
 * A history is what clients saw: each operation with its invocation and
 * completion time (CLOCK_MONOTONIC nanoseconds, one clock for every
 * process of the host), its arguments and its result; the events each
 * client's subscription delivered; and the faults the test made (owner
 * processes killed).  Clients write it as text lines, one file each
 * (history.c parses and merges them); the checker decides whether some
 * order of the operations, each taking effect at one instant between its
 * invocation and its completion, explains every result under the
 * registry's sequential model (model.c), key by key (checker.c).
 *
 * Line format (fields are name=value, in any order):
 *   inv c=CLIENT id=N t=NS op=OP [k=KEY] [owner=PID:START] [meta=M]
 *       [mode=replace|merge] [if=REV] [force=1] [field=F value=V]
 *   res c=CLIENT id=N t=NS rc=RC [owner=..] [meta=M] [rev=R] [items=I]
 *   death owner=PID:START inv=NS res=NS       (kill sent, waitpid returned)
 *   sub c=CLIENT inv=NS res=NS                (subscription made)
 *   ev c=CLIENT t=NS seq=N kind=K reason=R ext=0|1 k=KEY owner=.. meta=M rev=R
 *   drained c=CLIENT t=NS complete=0|1        (the client stopped listening)
 * OP: register lookup entry unregister update list find drop; an
 * operation with an "inv" line and no "res" line is pending (the client
 * died or its outcome is unknown).  M is "-" (none) or "a:1,b:2,g:0";
 * I is ";"-separated KEY@OWNER@REV@M; owner and caller are PID[:START].
 * For unregister and update, owner= is the caller process.
 */
#ifndef PROCREG_TESTS_HISTORY_H
#define PROCREG_TESTS_HISTORY_H

#include <glib.h>
#include <procreg/procreg.h>
#include <stdbool.h>
#include <stdint.h>


/* Metadata as the tests write it: up to three int64 fields.  "a" and "b"
 * hold tokens unique to one write (so an observation names the write it
 * saw); "g" a small group number that find() queries. */
enum { HIST_FIELD_A, HIST_FIELD_B, HIST_FIELD_G, HIST_FIELDS };
#define HIST_META_FOREIGN 0x80 /* held something else: equals nothing */
typedef struct {
    uint8_t mask; /* bit i: field i present */
    int64_t v[HIST_FIELDS];
} hist_meta;

typedef enum {
    HIST_REGISTER,
    HIST_LOOKUP,
    HIST_LOOKUP_ENTRY,
    HIST_UNREGISTER,
    HIST_UPDATE,
    HIST_LIST,
    HIST_FIND,
    HIST_DROP,
    HIST_DEATH,
} hist_kind;

/* Never a completion time: the operation is pending. */
#define HIST_PENDING INT64_MAX

/* One entry as a result names it; owner -1 when not reported. */
typedef struct {
    int key;
    int owner;
    hist_meta meta;
    uint64_t rev;
} hist_item;

typedef struct {
    hist_kind kind;
    int client;
    int64_t inv, res; /* res HIST_PENDING: no answer */
    int key;          /* -1: list, find, drop, death */
    int owner;        /* register: owner; unregister/update: caller; death */
    hist_meta meta;   /* register, update */
    bool merge;       /* update: MERGE (else REPLACE) */
    uint64_t if_rev;  /* unregister, update */
    bool force;       /* unregister, update: PROCREG_FORCE */
    int field;        /* find: HIST_FIELD_*, value below */
    int64_t value;
    int rc;           /* result: 0 or PROCREG_E* */
    hist_item got;    /* lookup(_entry), EEXISTS holder, new revision */
    hist_item *items; /* list, find */
    size_t n_items;
    int64_t confirmed; /* death: when waitpid returned */
} hist_op;

typedef struct {
    int client;
    int64_t time;
    uint64_t seq;
    int kind;   /* procreg_event_kind */
    int reason; /* procreg_event_reason */
    bool external;
    hist_item entry;
} hist_event;

typedef struct {
    int client;
    int64_t inv, res;   /* procreg_subscribe() call */
    int64_t drained;    /* 0: never said */
    bool complete;      /* saw every client's last write (drain protocol) */
} hist_sub;

typedef struct {
    GPtrArray *keys;     /* index -> name */
    GPtrArray *owners;   /* index -> "PID:START" */
    GHashTable *key_ids, *owner_ids;
    GArray *ops;         /* hist_op */
    GArray *events;      /* hist_event, per client in arrival order */
    GArray *subs;        /* hist_sub */
    int64_t t0;          /* earliest time seen, for printing */
} hist;

hist *hist_new(void);
void hist_free(hist *h);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(hist, hist_free)

int hist_key(hist *h, const char *name);
int hist_owner(hist *h, const char *pid_start);

/* Parse lines in @text (from @origin, for messages) into @h; "#" lines
 * and blank lines are skipped.  false with @error naming the line. */
bool hist_load_text(hist *h, const char *text, const char *origin,
                    GError **error);
bool hist_load_file(hist *h, const char *path, GError **error);

/* Metadata text ("-", "a:1,g:2") and back. */
bool hist_meta_parse(const char *s, hist_meta *out);
void hist_meta_append(GString *out, const hist_meta *m);
bool hist_meta_equal(const hist_meta *x, const hist_meta *y);
bool hist_meta_matches(const hist_meta *m, int field, int64_t value);
/* Whether some token field (a, b) holds the same value in both. */
bool hist_meta_shares_token(const hist_meta *x, const hist_meta *y);
hist_meta hist_meta_merge(const hist_meta *old, const hist_meta *add);

/* Codes whose outcome is unknown (the write may have happened). */
bool hist_rc_unknown(int rc);

/* One line for people: client, times relative to h->t0, call, result. */
void hist_op_describe(const hist *h, const hist_op *op, GString *out);
void hist_event_describe(const hist *h, const hist_event *ev, GString *out);

/* ---- checks (checker.c, props.c, events.c) ---- */

typedef struct {
    /* The promise checked: false = linearizable; true = the optimized
     * decorator's (reads may be up to stale_ns old, plus read-your-writes
     * and monotonic reads per client). */
    bool session;
    int64_t stale_ns;
    /* Search budget per key (memoised states); 0: a default. */
    size_t max_states;
} hist_check_opts;

typedef struct {
    size_t keys, ops, events, states;
    size_t memo_bytes; /* the largest memo of one key's search */
    double seconds;
} hist_check_stats;

/* Check everything above on @h; false when a violation (or an
 * undecidable history: the budget ran out) was found.  The explanation,
 * with the smallest failing sub-history found, is appended to @report. */
bool hist_check(hist *h, const hist_check_opts *opts, GString *report,
                hist_check_stats *stats);

#endif
