/* Shared by the files of core/: not installed, not exported. */
#ifndef PROCREG_CORE_INTERNAL_H
#define PROCREG_CORE_INTERNAL_H

#include "procreg-config.h"
#include <procreg/backend.h>

#include <string.h>

#define PROCREG_INTERNAL __attribute__((visibility("hidden")))

/* Built-in backend tables, default first, NULL-terminated (builtin.c). */
PROCREG_INTERNAL extern const procreg_backend_ops *const procreg_builtin_backends[];

/* ---- keys (key.c) ---- */

/* Room for the largest key, so the string forms of the API can build
 * their key on the stack: a lookup miss allocates nothing. */
typedef union {
    procreg_key key;
    char bytes[sizeof(procreg_key) + 2 * (PROCREG_NAME_MAX + 1)];
} procreg_stack_key;

/* Validate (ns, name) and fill @buf.  @ns NULL means production. */
PROCREG_INTERNAL int procreg_key_init_stack(procreg_stack_key *buf,
                                            const char *ns, const char *name,
                                            GError **error);
/* Fill @buf from (ns, name) checking only that each is 1 to
 * PROCREG_NAME_MAX bytes: for a lookup, where a hit proves the names
 * valid (only valid ones are ever stored), so the character check can
 * wait for a miss (procreg_key_check_names()). */
PROCREG_INTERNAL int procreg_key_init_unchecked(procreg_stack_key *buf,
                                                const char *ns,
                                                const char *name,
                                                GError **error);
/* The character check procreg_key_init_unchecked() left out: 0, or
 * PROCREG_EINVAL with the message procreg_key_init_stack() gives. */
PROCREG_INTERNAL int procreg_key_check_names(const procreg_key *key,
                                             GError **error);

/* procreg_key_namespace() and procreg_key_name() (key.c) in line, for
 * the write paths, which name the key in their counters and events. */
static inline const char *procreg_key_ns_of(const procreg_key *key)
{
    return key->bytes;
}

static inline const char *procreg_key_name_of(const procreg_key *key)
{
    return key->bytes + key->ns_len + 1;
}

/* Whether @ns begins with PROCREG_NS_RESERVED_PREFIX: procreg's own
 * records (locks, start claims, namespace settings) live there. */
PROCREG_INTERNAL bool procreg_ns_reserved(const char *ns);
/* PROCREG_EINVAL, with a message, when @ns is reserved: the public calls
 * that create entries or drop namespaces refuse those. */
PROCREG_INTERNAL int procreg_ns_check_writable(const char *ns, GError **error);
/* procreg_ns_check_writable() of @key's namespace: its length is known,
 * so the prefix is one compare of its 8 bytes, in line. */
G_STATIC_ASSERT(sizeof(PROCREG_NS_RESERVED_PREFIX) - 1 == 8);
static inline int procreg_key_check_writable(const procreg_key *key,
                                             GError **error)
{
    if (G_LIKELY(key->ns_len < 8 ||
                 memcmp(key->bytes, PROCREG_NS_RESERVED_PREFIX, 8) != 0))
        return 0;
    return procreg_ns_check_writable(key->bytes, error);
}

/* ---- error details (error.c): each a no-op unless @error holds a
 * PROCREG_ERROR GError, so a call that passes none pays nothing ---- */

/* The entry behind an EEXISTS or EPERM; @ns/@name fill its NULL ones. */
PROCREG_INTERNAL void procreg_error_detail_entry(GError **error,
                                                 const char *ns,
                                                 const char *name,
                                                 const procreg_entry *entry);
/* What exists instead (NULL-terminated; copied). */
PROCREG_INTERNAL void procreg_error_detail_alternatives(GError **error,
                                                        char **names);
/* Where in a spec's text the problem is (a byte offset). */
PROCREG_INTERNAL void procreg_error_detail_position(GError **error,
                                                   int position);

/* ---- specs (spec.c) ---- */

/* Parse "name[:opts]".  The result is freed with procreg_spec_free(). */
PROCREG_INTERNAL int procreg_spec_parse(const char *text, procreg_spec **out,
                                        GError **error);
/* Parse only an option list ("a=1,b=[x]") for a known backend name. */
PROCREG_INTERNAL int procreg_spec_parse_options(const char *backend,
                                                const char *options,
                                                procreg_spec **out,
                                                GError **error);
PROCREG_INTERNAL void procreg_spec_free(procreg_spec *spec);
/* Check every option of @spec is one @ops accepts. */
PROCREG_INTERNAL int procreg_spec_check_options(const procreg_spec *spec,
                                                const procreg_backend_ops *ops,
                                                GError **error);
/* The spec written back in canonical form; g_free it. */
PROCREG_INTERNAL char *procreg_spec_to_string(const procreg_spec *spec);

/* ---- backend types (backends.c) ---- */

PROCREG_INTERNAL const procreg_backend_ops *procreg_backend_find(const char *name);
/* The registered names, comma separated, for error messages; g_free it. */
PROCREG_INTERNAL char *procreg_backend_names_joined(void);
/* Version and completeness check shared by register and open_with_backend. */
PROCREG_INTERNAL int procreg_backend_ops_check(const procreg_backend_ops *ops,
                                               GError **error);

/* ---- dispatch (dispatch.c) ---- */

PROCREG_INTERNAL int procreg_backend_open_ops(const procreg_backend_ops *ops,
                                              const procreg_spec *spec,
                                              procreg_backend_host *host,
                                              procreg_backend **out,
                                              GError **error);
PROCREG_INTERNAL const char *procreg_backend_spec_string(const procreg_backend *b);

/* ---- owners (owner.c) ---- */

/* Whether @a and @b are one process: the same pid and, where both know
 * it, the same start time. */
static inline bool procreg_owner_same(const procreg_owner *a,
                                      const procreg_owner *b)
{
    return procreg_backend_owner_same(a, b);
}

/* The calling process as procreg_owner_self() gives it (owner.c), read
 * here without a call once it is known: every write asks.  self_pid is 0
 * until the first procreg_owner_self() and again in a fork() child until
 * its first one; it is published with a release store after self_start
 * (owner.c), hence the acquire. */
PROCREG_INTERNAL extern int procreg_self_pid;
PROCREG_INTERNAL extern uint64_t procreg_self_start;

static inline void procreg_owner_self_fast(procreg_owner *out)
{
    int pid = __atomic_load_n(&procreg_self_pid, __ATOMIC_ACQUIRE);
    if (G_UNLIKELY(pid == 0)) {
        procreg_owner_self(out);
        return;
    }
    out->pid = pid;
    out->start_time = __atomic_load_n(&procreg_self_start, __ATOMIC_RELAXED);
}

/* ---- entries and metadata (entry.c) ---- */

/* procreg_entry_clear() for the write paths, where the entries the
 * backend fills leave ns and name NULL and most carry no metadata: only
 * such an entry's fields are zeroed here, without a call. */
static inline void procreg_entry_clear_fast(procreg_entry *entry)
{
    if (entry->ns != NULL || entry->name != NULL || entry->metadata != NULL)
        procreg_entry_clear(entry);
    else
        *entry = (procreg_entry){0};
}

/* Whether @metadata is NULL or a dictionary of type a{sv}. */
PROCREG_INTERNAL int procreg_metadata_check(GVariant *metadata, GError **error);
/* Sort by (ns, name) and hand the array's data to the caller. */
PROCREG_INTERNAL void procreg_entry_array_steal(GArray *array,
                                                procreg_entry **out,
                                                size_t *n_out);

/* ---- group members as data (member.c) ---- */

/* Hand the array's data to the caller as it is (take), or sorted by
 * (ns, group, id) first (steal). */
PROCREG_INTERNAL void procreg_member_array_take(GArray *array,
                                                procreg_member **out,
                                                size_t *n_out);
PROCREG_INTERNAL void procreg_member_array_steal(GArray *array,
                                                 procreg_member **out,
                                                 size_t *n_out);
/* Views of one as the other, borrowing every pointer: a member as the
 * entry of its JOINED / LEFT event (name: the group, revision: the id,
 * registered_at: the join time), and back. */
PROCREG_INTERNAL procreg_entry procreg_member_as_entry(const procreg_member *m);
PROCREG_INTERNAL procreg_member procreg_entry_as_member(const procreg_entry *e);

static inline bool procreg_event_kind_is_group(procreg_event_kind kind)
{
    return kind == PROCREG_EVENT_JOINED || kind == PROCREG_EVENT_LEFT;
}

/* ======================================================================== */
/* Service layer: counters, telemetry, events, liveness, host, wait,        */
/* namespaces, registry, health, stats (doc/architecture.md has the layers: */
/* a file calls only files below it).  Locks here are pthread ones (not     */
/* GMutex) so that ThreadSanitizer sees every synchronisation.              */
/* ======================================================================== */

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "mutex.h"

typedef struct procreg_events procreg_events;
typedef struct procreg_wakes procreg_wakes;
typedef struct procreg_monitor procreg_monitor;
typedef struct procreg_telemetry procreg_telemetry;
typedef struct procreg_tstats procreg_tstats;

/* Bits of procreg.slow: anything set sends a lookup to the slow path. */
enum {
    PROCREG_SLOW_TELEMETRY = 1u,   /* a telemetry handler is attached */
    PROCREG_SLOW_DEAD_OWNERS = 2u, /* owners known dead, cleanup pending */
};

/* Writes through one registry hold the stripe of their key across the
 * backend call, the owner index update and the event enqueue, so events of
 * one key are numbered in the order the backend applied them.  A namespace
 * drop holds every stripe. */
#define PROCREG_STRIPES 32
typedef struct {
    procreg_mutex m;
} __attribute__((aligned(64))) procreg_stripe;

struct procreg {
    atomic_uint slow; /* first: the lookup path reads it (relaxed) */
    uint64_t id;      /* unique in the process, never reused */
    pid_t creator;    /* the process that opened it (see procreg_close) */
    procreg_backend *backend;
    const procreg_backend_ops *ops;
    bool owners_local; /* every owner lives on this host (not DISTRIBUTED) */
    bool groups;       /* the backend has groups (procreg_backend_has_groups) */
    bool backend_orders_events; /* PROCREG_CAP_ORDERED_EVENTS: see host.c */
    bool backend_history; /* procreg_backend_has_history(): events.c */
    /* Neither MULTIPROCESS nor DISTRIBUTED: only writes through this
     * registry, each under its key's stripe, replace an entry (see
     * check_write in writes.c). */
    bool writes_local;
    procreg_backend_host *host;
    /* Who listens, for the write paths' test in line
     * (procreg_events_emit_own()): the wake-up board's waiters (wake.c)
     * and the subscriptions (events.c), each in its own allocation. */
    atomic_int *n_waiters;
    atomic_int *n_subs;
    procreg_tstats *tstats;
    procreg_events *events;
    procreg_wakes *wakes;
    procreg_monitor *monitor;
    procreg_telemetry *telemetry;
    procreg_stripe stripes[PROCREG_STRIPES];
};

static inline procreg_mutex *procreg_stripe_of(procreg *reg,
                                               const procreg_key *key)
{
    return &reg->stripes[(key->hash >> 7) % PROCREG_STRIPES].m;
}

/* "ns\x1fname": an unambiguous string for a key (names hold no control
 * characters).  g_free it.  (key.c) */
PROCREG_INTERNAL char *procreg_key_string(const char *ns, const char *name);

/* A monotonic clock for durations, in ns: the invariant TSC where there is
 * one (calibrated against CLOCK_MONOTONIC), else clock_gettime
 * (counters.c). */
PROCREG_INTERNAL uint64_t procreg_now_ns(void);
PROCREG_INTERNAL uint64_t procreg_since_ns(uint64_t t0);

/* ---- per-thread counters (counters.c) ---- */

/* Latency histogram: bucket i counts durations in [2^(i-1), 2^i) ns,
 * bucket 0 counts 0 ns, the last one everything above. */
#define PROCREG_LAT_BUCKETS 40

/* One thread's counters for one registry.  Single writer (its thread):
 * updated with relaxed load + relaxed store, never an atomic
 * read-modify-write; readers sum every block with relaxed loads. */
typedef struct procreg_tblock {
    _Atomic uint64_t calls[PROCREG_OP_COUNT];
    _Atomic uint64_t misses[PROCREG_OP_COUNT];
    _Atomic uint64_t errors[PROCREG_OP_COUNT];
    _Atomic uint64_t timed[PROCREG_OP_COUNT];
    _Atomic uint64_t time_sum_ns[PROCREG_OP_COUNT];
    _Atomic uint64_t time_max_ns[PROCREG_OP_COUNT];
    _Atomic uint64_t hist[PROCREG_OP_COUNT][PROCREG_LAT_BUCKETS];
    /* Telemetry: the epoch this thread entered handlers at; 0 outside. */
    _Atomic uint64_t tel_active;
    bool shared; /* the overflow block: no single writer */
} procreg_tblock;

typedef struct {
    uint64_t reg_id;
    procreg_tblock *block;
} procreg_tls_cache;

PROCREG_INTERNAL extern __thread procreg_tls_cache procreg_tls
    __attribute__((tls_model("initial-exec")));

PROCREG_INTERNAL procreg_tblock *procreg_tblock_get_slow(procreg *reg);

/* This thread's block for @reg: one TLS compare on the fast path. */
static inline procreg_tblock *procreg_tblock_get(procreg *reg)
{
    if (G_LIKELY(procreg_tls.reg_id == reg->id))
        return procreg_tls.block;
    return procreg_tblock_get_slow(reg);
}

static inline void procreg_counter_add(_Atomic uint64_t *c, uint64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

/* Lookups are timed once in 256 calls per thread, register, unregister and
 * update once in 16 (a clock read is a tenth of a write); other ops always,
 * and every call while a telemetry handler is attached. */
#define PROCREG_LOOKUP_SAMPLE_MASK 255u
#define PROCREG_WRITE_SAMPLE_MASK 15u

/* The start time of a write on @b's thread, or 0 when it is not timed. */
static inline uint64_t procreg_write_clock(procreg *reg, procreg_tblock *b,
                                           procreg_op op)
{
    uint64_t n = atomic_load_explicit(&b->calls[op], memory_order_relaxed);
    unsigned slow = atomic_load_explicit(&reg->slow, memory_order_relaxed);
    return (slow & PROCREG_SLOW_TELEMETRY) ||
                   (n & PROCREG_WRITE_SAMPLE_MASK) == 0
               ? procreg_now_ns()
               : 0;
}

/* Whether @rc is an expected outcome rather than a failure. */
static inline bool procreg_rc_is_miss(int rc)
{
    return rc == PROCREG_ENOTFOUND || rc == PROCREG_EEXISTS ||
           rc == PROCREG_ECONFLICT || rc == PROCREG_ETIMEDOUT ||
           rc == PROCREG_ECANCELLED;
}

/* Count one call of @op that returned @rc; @duration_ns is counted in the
 * latency summary when @timed.  Single writer: @b is this thread's. */
PROCREG_INTERNAL void procreg_tblock_record(procreg_tblock *b, procreg_op op,
                                            int rc, bool timed,
                                            uint64_t duration_ns);

PROCREG_INTERNAL procreg_tstats *procreg_tstats_new(void);
PROCREG_INTERNAL void procreg_tstats_free(procreg_tstats *t);
/* Call @fn on every block of @reg (allocation order). */
PROCREG_INTERNAL void procreg_tstats_foreach(procreg *reg,
                                             void (*fn)(procreg_tblock *b,
                                                        void *data),
                                             void *data);

/* Entries per namespace: a new procreg_namespace_array_new() sorted by
 * name (namespaces.c). */
PROCREG_INTERNAL int procreg_namespace_counts(procreg *reg, GArray **out,
                                              GError **error);

/* ---- telemetry (telemetry.c) ---- */

PROCREG_INTERNAL procreg_telemetry *procreg_telemetry_new(void);
PROCREG_INTERNAL void procreg_telemetry_free(procreg *reg);
/* Report @ev to the handlers.  Call only when PROCREG_SLOW_TELEMETRY is
 * set, outside every lock. */
PROCREG_INTERNAL void procreg_telemetry_emit(procreg *reg, procreg_tblock *b,
                                             const procreg_telemetry_event *ev);

/* procreg_op_done() for every call but the plain one below. */
PROCREG_INTERNAL void procreg_op_done_slow(procreg *reg, procreg_tblock *b,
                                           procreg_op op, int rc, uint64_t t0,
                                           const char *ns, const char *name,
                                           uint64_t count);

/* The end of a call: count it in @b and report it to telemetry.  @t0 is
 * procreg_now_ns() at the start, or 0 when the call was not timed.  The
 * common call (not timed, succeeded, this thread's own block, no handler
 * attached) is one counter in line: what procreg_tblock_record() and
 * the telemetry test would do for it. */
static inline void procreg_op_done(procreg *reg, procreg_tblock *b,
                                   procreg_op op, int rc, uint64_t t0,
                                   const char *ns, const char *name,
                                   uint64_t count)
{
    if (G_LIKELY(t0 == 0 && rc == 0 && !b->shared &&
                 !(atomic_load_explicit(&reg->slow, memory_order_relaxed) &
                   PROCREG_SLOW_TELEMETRY))) {
        procreg_counter_add(&b->calls[op], 1);
        return;
    }
    procreg_op_done_slow(reg, b, op, rc, t0, ns, name, count);
}

/* ---- events and waiting (events.c) ---- */

PROCREG_INTERNAL procreg_events *procreg_events_new(void);
/* Stop the dispatcher, end every subscription (destroy notifies run). */
PROCREG_INTERNAL void procreg_events_shutdown(procreg *reg);
PROCREG_INTERNAL void procreg_events_free(procreg_events *ev);

/* A change made through @reg (or reported by its backend when @external):
 * wakes the key's waiters and queues the event when anyone listens.
 * @entry: ns/name may be NULL (then @ns/@name are used).  @position: its
 * place in the backend's history (procreg_backend_host_notify_at()), 0
 * when the backend keeps none. */
PROCREG_INTERNAL void procreg_events_emit(procreg *reg,
                                          procreg_event_kind kind,
                                          procreg_event_reason reason,
                                          const char *ns, const char *name,
                                          const procreg_entry *entry,
                                          bool external, uint64_t position);
/* The group form of procreg_events_emit(): JOINED or LEFT of @m (ns and
 * group set). */
PROCREG_INTERNAL void procreg_events_emit_member(procreg *reg,
                                                 procreg_event_kind kind,
                                                 procreg_event_reason reason,
                                                 const procreg_member *m,
                                                 bool external);
/* Whether an event is wanted now: a subscriber listens. */
PROCREG_INTERNAL bool procreg_events_wanted(procreg *reg);
/* The subscription count procreg_events_emit() tests (reg->n_subs). */
PROCREG_INTERNAL atomic_int *procreg_events_subs_counter(procreg_events *h);
/* A change a write through @reg made: emitted now, unless the backend
 * reports its own changes in commit order (PROCREG_CAP_ORDERED_EVENTS),
 * which it then did before the write returned.  With nobody listening,
 * the cost is the tests below: no call.  The waiters' test is the
 * read-modify-write procreg_wakes_notify() makes (its comment says why a
 * load would not do), and comes first, as there. */
static inline void procreg_events_emit_own(procreg *reg,
                                           procreg_event_kind kind,
                                           procreg_event_reason reason,
                                           const char *ns, const char *name,
                                           const procreg_entry *entry)
{
    if (reg->backend_orders_events)
        return;
    if (atomic_fetch_add_explicit(reg->n_waiters, 0, memory_order_seq_cst) ==
            0 &&
        atomic_load_explicit(reg->n_subs, memory_order_relaxed) == 0)
        return;
    procreg_events_emit(reg, kind, reason, ns, name, entry, false, 0);
}
/* ---- the wake-up board (wake.c) ---- */

PROCREG_INTERNAL procreg_wakes *procreg_wakes_new(void);
PROCREG_INTERNAL void procreg_wakes_free(procreg_wakes *wakes);
/* The waiter count procreg_wakes_notify() tests (reg->n_waiters). */
PROCREG_INTERNAL atomic_int *procreg_wakes_counter(procreg_wakes *wakes);
/* Wake the waiters of key (@ns, @name), or with @group of that group. */
PROCREG_INTERNAL void procreg_wakes_notify(procreg *reg, const char *ns,
                                          const char *name, bool group);
/* How many wait now (health, stats). */
PROCREG_INTERNAL uint64_t procreg_wakes_waiters(procreg *reg);
/* A waiter (procreg_wait_for(), a lock waiter) joins the board
 * for a key (procreg_wait_members(): with @group, for its group), reads the
 * key's generation (false: cancelled), looks the key up, and sleeps until a
 * change of that key (any event: registered, updated, unregistered; for a
 * group, a join) moves the generation past what it read (or it is
 * cancelled: true), or the deadline (CLOCK_MONOTONIC; NULL: none) passes
 * (false).  procreg_wake_cancel() may come from any thread. */
typedef struct procreg_wake procreg_wake;
PROCREG_INTERNAL procreg_wake *procreg_wake_join(procreg *reg, const char *ns,
                                                 const char *name, bool group);
PROCREG_INTERNAL bool procreg_wake_read(procreg_wake *w, uint64_t *gen);
PROCREG_INTERNAL bool procreg_wake_sleep(procreg_wake *w, uint64_t gen,
                                         const struct timespec *deadline);
PROCREG_INTERNAL void procreg_wake_cancel(procreg_wake *w);
PROCREG_INTERNAL void procreg_wake_leave(procreg_wake *w);
PROCREG_INTERNAL void procreg_events_health(procreg *reg, GVariantDict *d,
                                            bool *degraded);
PROCREG_INTERNAL void procreg_events_stats(procreg *reg, GVariantDict *d);

/* ---- waiting (wait.c) ---- */

/* @timeout_ms from now on CLOCK_MONOTONIC (callers with < 0 pass no
 * deadline). */
PROCREG_INTERNAL void procreg_deadline_in(struct timespec *deadline,
                                          int timeout_ms);
/* Whether a waiter with @cancellable may start: 0, PROCREG_ECANCELLED
 * (already cancelled; no GError, the caller words it), or PROCREG_EINVAL
 * (a GCancellable without GIO in the process).  NULL is 0. */
PROCREG_INTERNAL int procreg_cancellable_check(GCancellable *cancellable,
                                               GError **error);
/* Cancel @w when @cancellable fires (at once if it already has); returns
 * the handler for procreg_cancellable_unlink() (0: nothing linked). */
PROCREG_INTERNAL gulong procreg_cancellable_link(GCancellable *cancellable,
                                                 procreg_wake *w);
PROCREG_INTERNAL void procreg_cancellable_unlink(GCancellable *cancellable,
                                                 gulong handler);

/* Sleep until @probe says done: it returns 0 (done), PROCREG_ENOTFOUND
 * (not yet: wait) or a failure.  Woken by each change of key (ns, name),
 * or with @group each join of that group.  Returns 0,
 * PROCREG_ETIMEDOUT, PROCREG_ECANCELLED, PROCREG_EINVAL (a cancellable
 * without GIO) or @probe's failure; @error is set for those two only. */
typedef int (*procreg_wait_probe)(procreg *reg, void *ctx, GError **error);
PROCREG_INTERNAL int procreg_wait_until(procreg *reg, const char *ns,
                                        const char *name, bool group,
                                        procreg_wait_probe probe, void *ctx,
                                        int timeout_ms,
                                        GCancellable *cancellable,
                                        GError **error);

/* ---- backend hosts (host.c) ---- */

/* The host a registry passes to its backend. */
PROCREG_INTERNAL procreg_backend_host *procreg_host_new_root(procreg *reg);
PROCREG_INTERNAL void procreg_host_free_root(procreg_backend_host *host);

/* ---- owner liveness: the owner index and the deaths it knows
 * (owner-index.c), the monitor and cleanup (liveness.c) ---- */

PROCREG_INTERNAL procreg_monitor *procreg_monitor_new(procreg *reg);
/* Start the thread; false (and the monitor stays off) when it cannot. */
PROCREG_INTERNAL bool procreg_monitor_start(procreg *reg);
PROCREG_INTERNAL void procreg_monitor_stop(procreg *reg);
PROCREG_INTERNAL void procreg_monitor_free(procreg_monitor *m);
/* This process cannot exit while it runs the registry: its entries need
 * no cleanup, and the owner index leaves them out (owner-index.c). */
static inline bool procreg_owner_is_self(const procreg_owner *owner)
{
    procreg_owner self;
    procreg_owner_self_fast(&self);
    return owner->pid == self.pid;
}
/* The owner index, for owners other than this process (the functions
 * below skip this process's own entries in line).  Call with the key's
 * stripe held (except external). */
PROCREG_INTERNAL void procreg_owner_index_add_other(procreg *reg,
                                                    const char *ns,
                                                    const char *name,
                                                    const procreg_owner *owner,
                                                    uint64_t revision);
PROCREG_INTERNAL void procreg_owner_index_remove_other(
    procreg *reg, const char *ns, const char *name,
    const procreg_owner *owner, uint64_t revision);
static inline void procreg_owner_index_add(procreg *reg, const char *ns,
                                           const char *name,
                                           const procreg_owner *owner,
                                           uint64_t revision)
{
    if (!procreg_owner_is_self(owner))
        procreg_owner_index_add_other(reg, ns, name, owner, revision);
}
/* Forget (ns, name) for @owner if the index holds a revision <= @revision
 * (a later registration of the key by the same owner stays). */
static inline void procreg_owner_index_remove(procreg *reg, const char *ns,
                                              const char *name,
                                              const procreg_owner *owner,
                                              uint64_t revision)
{
    if (!procreg_owner_is_self(owner))
        procreg_owner_index_remove_other(reg, ns, name, owner, revision);
}
/* A dead owner's entry is gone: count it once, and report it to telemetry
 * (PROCREG_OP_CLEANUP, from the monitor thread, outside every lock).
 * @t0: when the removal started (procreg_now_ns()), 0 when unknown.  Any
 * thread, any lock held. */
PROCREG_INTERNAL void procreg_removal_seen(procreg *reg, const char *ns,
                                           const char *name, uint64_t t0);
/* This registry removed a dead owner's entry (its monitor, or a register
 * that found the holder dead): its event and count, unless the backend
 * reports the removal itself (PROCREG_CAP_ORDERED_EVENTS). */
PROCREG_INTERNAL void procreg_owner_exit_removed(procreg *reg, const char *ns,
                                                 const char *name,
                                                 const procreg_entry *gone,
                                                 uint64_t t0);
/* Slow path of lookups while PROCREG_SLOW_DEAD_OWNERS is set. */
PROCREG_INTERNAL bool procreg_owner_known_dead(procreg *reg,
                                               const procreg_owner *owner);
/* A death found before the monitor saw it, taken as the monitor's
 * (owner-index.c: so that every later read agrees on it); false when this
 * registry does not watch @owner (nothing marked). */
PROCREG_INTERNAL bool procreg_owner_seen_dead(procreg *reg,
                                              const procreg_owner *owner);
/* Whether a read leaves out an entry of @owner (owner-index.c). */
PROCREG_INTERNAL bool procreg_owner_gone(procreg *reg,
                                         const procreg_owner *owner,
                                         bool pending,
                                         const procreg_owner *self);
/* Whether a read leaves out the entry of @owner it read from the backend;
 * @pending is procreg_dead_pending() read before the backend was
 * (owner-index.c, with the invariant). */
PROCREG_INTERNAL bool procreg_read_owner_gone(procreg *reg, bool pending,
                                              const procreg_owner *owner);
/* Whether a dead owner's cleanup is pending: one relaxed load. */
static inline bool procreg_dead_pending(procreg *reg)
{
    return atomic_load_explicit(&reg->slow, memory_order_relaxed) &
           PROCREG_SLOW_DEAD_OWNERS;
}
/* Whether @owner is known dead: one relaxed load while no owner is (the
 * common case), procreg_owner_known_dead() otherwise. */
static inline bool procreg_owner_known_dead_fast(procreg *reg,
                                                 const procreg_owner *owner)
{
    return (atomic_load_explicit(&reg->slow, memory_order_relaxed) &
            PROCREG_SLOW_DEAD_OWNERS) &&
           procreg_owner_known_dead(reg, owner);
}
PROCREG_INTERNAL void procreg_monitor_health(procreg *reg, GVariantDict *d,
                                             bool *degraded);
PROCREG_INTERNAL void procreg_monitor_stats(procreg *reg, GVariantDict *d,
                                            uint64_t *owners,
                                            size_t *index_bytes);
/* The owner index for group members: member @member_id of (ns, group). */
PROCREG_INTERNAL void procreg_owner_index_add_member(procreg *reg,
                                                     const char *ns,
                                                     const char *group,
                                                     const procreg_owner *owner,
                                                     uint64_t member_id);
PROCREG_INTERNAL void procreg_owner_index_remove_member(
    procreg *reg, const char *ns, const char *group,
    const procreg_owner *owner, uint64_t member_id);
/* Members of group @key (@gone: procreg_member, as the group_leave slot
 * fills it) went through a write of this registry, with the group's stripe
 * held: the owner index forgets them and, unless the backend reports its
 * own changes, each gets its LEFT event with @reason; removals of reason
 * OWNER_EXITED are counted as cleanups too (@t0: when they began). */
PROCREG_INTERNAL void procreg_members_gone(procreg *reg,
                                           const procreg_key *key,
                                           GArray *gone,
                                           procreg_event_reason reason,
                                           uint64_t t0);

/* ---- registry.c, for writes.c and groups.c ---- */

/* PROCREG_ENOTFOUND for @key, with an error that names its namespace and
 * a few names the namespace holds (in its details' alternatives). */
PROCREG_INTERNAL int procreg_not_found(procreg *reg, const procreg_key *key,
                                       GError **error);
/* The arguments of a find: @ns (NULL or valid), a non-empty UTF-8
 * @meta_key, an indexable @value.  0 or PROCREG_EINVAL. */
PROCREG_INTERNAL int procreg_find_check(const char *ns, const char *meta_key,
                                        GVariant *value, GError **error);

/* ---- the binding layer (gtypes.c; include/procreg/gtypes.h) ---- */

/* Keep a copy of *@error, a PROCREG_ERROR one, as the calling thread's
 * last: procreg_error_details_from_error() reads its details. */
PROCREG_INTERNAL void procreg_gi_note_error(GError **error);
/* A boxed entry holding what @entry held; @entry is zeroed. */
PROCREG_INTERNAL procreg_entry *procreg_gi_entry_take(procreg_entry *entry);
/* Free a boxed entry or namespace info. */
PROCREG_INTERNAL void procreg_gi_entry_free(procreg_entry *entry);
PROCREG_INTERNAL void procreg_gi_namespace_info_free(procreg_namespace_info *info);

/* ---- the registry's writes, for the layers above it (writes.c) ---- */

/* The owner to store: the caller when @given is NULL, else the live
 * process it names (PROCREG_EINVAL, PROCREG_ENOTALIVE). */
PROCREG_INTERNAL int procreg_resolve_owner_pid(const procreg_owner *given,
                                               procreg_owner *out,
                                               GError **error);
static inline int procreg_resolve_owner(const procreg_owner *given,
                                        procreg_owner *out, GError **error)
{
    if (given == NULL) {
        procreg_owner_self_fast(out);
        return 0;
    }
    return procreg_resolve_owner_pid(given, out, error);
}

/* procreg_register_key() that may also write the reserved namespaces:
 * the core's own records go through the one write path, with its owner
 * rule, stripes, events and counters. */
PROCREG_INTERNAL int procreg_register_reserved(procreg *reg,
                                               const procreg_key *key,
                                               const procreg_owner *owner,
                                               GVariant *metadata,
                                               procreg_entry *current,
                                               GError **error);
/* Remove @holder's entry of @key at its revision when its owner is dead
 * (known to the monitor, or, with every owner on this host, no longer a
 * live process), with the OWNER_EXITED event a cleanup would have.
 * Returns whether that entry is gone. */
PROCREG_INTERNAL bool procreg_evict_if_dead(procreg *reg,
                                            const procreg_key *key,
                                            const procreg_entry *holder);

/* ---- ticket queues: locks and start claims (lock.c) ---- */

#define PROCREG_QUEUE_LOCK PROCREG_NS_RESERVED_PREFIX "lock:"
#define PROCREG_QUEUE_START PROCREG_NS_RESERVED_PREFIX "start:"

/* Join the queue of @key under @prefix (PROCREG_QUEUE_*) and wait until
 * it is our turn: procreg_lock_key() with the queue's namespace prefix. */
PROCREG_INTERNAL int procreg_queue_acquire(procreg *reg, const char *prefix,
                                           const procreg_key *key,
                                           int timeout_ms,
                                           GCancellable *cancellable,
                                           procreg_lock_handle **out,
                                           GError **error);
/* Leave the queue: procreg_unlock(). */
PROCREG_INTERNAL int procreg_queue_release(procreg *reg,
                                           procreg_lock_handle *h,
                                           GError **error);

/* ---- filters (filter.c; parsed by filter-parse.c) ---- */

/* Whether @s (@len bytes) is a keyword of the filter language. */
PROCREG_INTERNAL bool procreg_filter_is_keyword(const char *s, size_t len);
/* The key of the first term of @f's top-level "and" chain that an index
 * answers (metadata == a string, boolean or integer), its literal in
 * *@value (a new reference); NULL when there is none. */
PROCREG_INTERNAL const char *
procreg_filter_index_term(const procreg_filter *f, GVariant **value);
/* The name of a top-level "name == ..." term, or NULL. */
PROCREG_INTERNAL const char *procreg_filter_name_term(const procreg_filter *f);

/* Whether @owner, found alive before a write (procreg_resolve_owner()),
 * is dead now: known dead to the monitor, or, on a backend whose owners
 * live on this host, no longer a live process.  The calling process never
 * is.  A write that made an entry or member of it undoes that (writes.c,
 * groups.c) where writes are local: its death may have been cleaned up
 * already. */
PROCREG_INTERNAL bool procreg_holder_dead(procreg *reg,
                                          const procreg_owner *holder);
#ifdef PROCREG_TEST_FORCE_DEAD_HOLDER
/* Test builds only (tests/history/meson.build, history-detects-dead-holder):
 * the pid of the last holder procreg_holder_dead() found no longer a live
 * process before the monitor knew it dead (writes.c); the monitor holds a
 * death back until then (liveness.c). */
PROCREG_INTERNAL extern _Atomic int procreg_test_dead_holder_met;
#endif
static inline bool procreg_owner_died_meanwhile(procreg *reg,
                                                const procreg_owner *owner)
{
    procreg_owner self;
    procreg_owner_self_fast(&self);
    return !procreg_owner_same(owner, &self) &&
           procreg_holder_dead(reg, owner);
}

#endif
