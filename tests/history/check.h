/*
 * Shared by the parts of the checker (not by the recorder): one key's
 * sub-history and its sequential model (model.c), the search
 * (checker.c), and the properties beyond linearizability (props.c,
 * events.c).
 */
#ifndef PROCREG_TESTS_HISTORY_CHECK_H
#define PROCREG_TESTS_HISTORY_CHECK_H

#include "history.h"

/* One operation as one key's sub-history sees it.  Multi-key operations
 * project to observations of this key over the same interval: a list
 * saw it present (KOP_PRESENT) or absent (KOP_ABSENT); a find saw it
 * present, or absent-or-not-matching (KOP_NOMATCH); a drop and an
 * owner's death remove it.  A register refused PROCREG_ENOTALIVE whose
 * owner was killed during the call may have stored its entry and taken
 * it back before it answered (core/writes.c: the owner died after the
 * core found it alive); it becomes two: the register, which may take
 * effect or not (as if without an answer), and KOP_UNDO over the same
 * interval, which removes that entry if present and ends the register's
 * chance (undo_bit). */
typedef enum {
    KOP_REGISTER,
    KOP_LOOKUP,
    KOP_ENTRY,
    KOP_UNREGISTER,
    KOP_UPDATE,
    KOP_PRESENT,
    KOP_ABSENT,
    KOP_NOMATCH,
    KOP_DROP,
    KOP_DEATH,
    KOP_UNDO,
} kop_kind;

typedef struct {
    kop_kind kind;
    int64_t inv, res; /* res HIST_PENDING: may take effect, or never */
    guint op;         /* index in hist.ops */
    int owner;        /* register/death: owner; unregister/update: caller */
    int rc;           /* when res is known */
    hist_meta meta;
    bool merge, force;
    uint64_t if_rev;
    hist_item got;    /* observed entry (owner -1: not reported) */
    int field;
    int64_t value;
    int dead_bit;     /* death: its bit in kstate.dead */
    int undo_bit;     /* a register taken back, and its undo: the bit in
                       * kstate.undone (-1: none) */
} kop;

/* The model of one key: absent (owner -1) or present with (owner,
 * metadata, revision).  rev 0 while a pending write that took effect has
 * not been observed yet; floor is the largest revision the key has had,
 * which every new one must exceed.  dead: owners whose death took
 * effect (they register nothing after it). */
typedef struct {
    int owner;
    uint64_t rev, floor, dead;
    uint64_t undone; /* registers taken back: they take effect no more */
    hist_meta meta;
} kstate;

/* The sub-history of @key (ops sorted by invocation), or NULL with a
 * message in @report when it cannot be built (over 64 owner deaths). */
GArray *kops_build(const hist *h, int key, const hist_check_opts *opts,
                   GString *report);
void kstate_init(kstate *s);
/* Whether @o can take effect in @s; the state after it in @next. */
bool kop_step(const kop *o, const kstate *s, kstate *next);
bool kstate_equal(const kstate *x, const kstate *y);
guint64 kstate_hash(const kstate *s);
/* Whether @o is a pure observation (deleting it never makes a history
 * non-linearizable). */
bool kop_is_read(const kop *o);

/* checker.c: whether @ops (one key's, sorted by invocation) are
 * linearizable; LIN_BUDGET when opts->max_states ran out first. */
typedef enum { LIN_OK, LIN_FAIL, LIN_BUDGET } hist_lin;
hist_lin hist_linearize(const kop *ops, guint n, const hist_check_opts *o);

/* minimise.c: explain why @key's sub-history @ops fails, with the
 * smallest failing sub-history found by @deadline (monotonic µs). */
void hist_report_violation(const hist *h, int key, const kop *ops, guint n,
                           const hist_check_opts *opts, gint64 deadline,
                           GString *report);

/* The entry each (key, revision) named in a linearization found, and
 * whether a register (PROCREG_EVENT_REGISTERED), an update
 * (PROCREG_EVENT_UPDATED) or either (0: a pending write that a read
 * revealed) made it. */
typedef struct {
    hist_item item;
    int made_by;
} hist_rev;
typedef GHashTable hist_revmap; /* guint64 (key << 48 ^ rev) -> hist_rev */
hist_revmap *hist_revmap_new(void);
void hist_revmap_put(hist_revmap *m, const hist_rev *r);
const hist_rev *hist_revmap_get(hist_revmap *m, int key, uint64_t rev);

/* props.c: the properties that need no search: dead holders and dead
 * owners after their death was confirmed, find results that do not
 * match; and per client, read-your-writes and monotonic reads. */
bool hist_check_static(const hist *h, const hist_check_opts *opts,
                       GString *report);
bool hist_check_sessions(const hist *h, GString *report);

/* events.c: every subscription's events against the history and the
 * linearization (@revs, complete for the keys whose @linearized is set). */
bool hist_check_events(const hist *h, hist_revmap *revs,
                       const bool *linearized, GString *report);

/* How many violations a report lists in full; the rest are counted. */
#define HIST_REPORT_MAX 5

/* Where a check writes the violations it finds (checker.c): each as a
 * line saying @what, then the operation (or event) and, when given, the
 * earlier one it contradicts; past HIST_REPORT_MAX only counted. */
typedef struct {
    GString *report;
    guint found;
} hist_sink;
void hist_sink_op(hist_sink *s, const hist *h, const hist_op *op,
                  const hist_op *earlier, const char *what);
void hist_sink_event(hist_sink *s, const hist *h, const hist_event *ev,
                     const hist_event *earlier, const char *what);
/* Count what was not listed (@what: "session violations"); whether
 * nothing was found. */
bool hist_sink_end(hist_sink *s, const char *what);

#endif
