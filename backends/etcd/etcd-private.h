/*
 * What the files of the etcd backend share: the instance (etcd_state),
 * the records it keeps, and the functions one file offers the others.
 * Private to the backend: every function here is hidden in the library
 * and named procreg_etcd_* (so the static library clashes with nothing).
 *
 *   etcd.c         options, init and destroy, the vtable
 *   etcd-keys.c    keys, value checks, transaction bodies
 *   etcd-session.c the client, lease and keeper thread the registries of
 *                  one process share
 *   etcd-owned.c   the entries this instance registered: re-registration
 *                  after a lost lease, reaping of dead owners
 *   etcd-ops.c     single-key reads and writes: lookup, register,
 *                  unregister, update, evict
 *   etcd-scan.c    ranges: list, count, names, namespace drop
 *   etcd-groups.c  groups: members' keys on the lease, join, leave, reads
 *   etcd-watch.c   the watch thread and its mirror of the prefix
 *   etcd-events.c  what a watch event tells (the watch's and history's)
 *   etcd-history.c the history slots: changes after a revision
 *   etcd-health.c  health, stats, memory
 *   etcd-client.c  HTTP calls to the cluster, etcd-stream.c its streams,
 *   etcd-json.c    JSON from the cluster, etcd-codec.c the value format
 */
#ifndef PROCREG_ETCD_PRIVATE_H
#define PROCREG_ETCD_PRIVATE_H

#include "etcd-client.h"
#include "etcd-codec.h"

#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND 1
#endif
#include <procreg/backend.h>

#include <pthread.h>
#include <time.h>

/* An entry this instance registered, for re-registration and reaping. */
typedef struct {
    char *value;    /* JSON value as written */
    size_t value_len;
    int64_t mod_rev;
    procreg_owner owner;
} owned_entry;

/* A member of this host, its owner watched by the keeper. */
typedef struct {
    int64_t mod_rev;
    procreg_owner owner;
} local_member;

/* What the watch remembers of each key it covers, to resync after a
 * compaction: not the value, which a change's event brings. */
typedef struct {
    int64_t mod_rev;
    int64_t create_rev;
    int64_t lease;
} mirror_entry;

typedef enum {
    WATCH_NONE, /* watch=false */
    WATCH_ALL,  /* watch=true: the whole prefix, read at open */
    WATCH_USED, /* watch=used: the namespaces this registry uses */
} etcd_watch_mode;

typedef struct etcd_session etcd_session;

typedef struct {
    etcd_session *session; /* shared with the process's like registries */
    etcd_client *client;   /* the session's */
    procreg_backend_host *host; /* NULL once retired (session_leave) */
    GString *prefix;    /* no trailing '/' */
    GString *eprefix;   /* prefix + "/e/" */
    char host_id[ETCD_HOST_ID_MAX + 1];
    char writer[ETCD_WRITER_LEN + 1];
    unsigned timeout_ms;
    unsigned attempt_ms;  /* one attempt on one endpoint */
    unsigned silence_ms;  /* the watch's member is probed after this */
    size_t max_reply;     /* the longest reply or watch line read */
    bool serializable;
    etcd_watch_mode watch_mode;

    pthread_mutex_t lock; /* everything below up to the watch part */
    pthread_cond_t cond;
    bool stopping;
    bool restore_pending;   /* the lease was lost: register again */
    GPtrArray *unrestored;  /* char*, from the last re-registration */
    guint64 reaped;
    GHashTable *owned;      /* GBytes etcd key -> owned_entry* */
    GHashTable *pending;    /* GBytes etcd key -> writes in flight (uint) */
    GHashTable *tombs;      /* GBytes etcd key of a pending write -> gint64*
                             * the last removal seen meanwhile */
    GHashTable *locals;     /* GBytes member key -> local_member*: members
                             * of this host (joined here, or seen by the
                             * watch), reaped when their owner dies.
                             * Invariant: a member's key is never written
                             * again after its join, so the keeper's
                             * removal pinned to the revision recorded here
                             * removes that member or nothing. */

    /* watch: the mirror belongs to the watch thread */
    GThread *watcher;
    etcd_stream *stream;
    GHashTable *mirror; /* GBytes etcd key -> mirror_entry* */
    /* WATCH_USED, under lock: namespace (char*) -> gint64*, the revision
     * the watch read it at (0: not yet).  Each addition bumps
     * watched_epoch (from 1); live_epoch is the epoch the connected stream
     * covers. */
    GHashTable *watched;
    guint watched_epoch, live_epoch;
    gint64 watch_rev;   /* atomic: last revision the watch has seen */
    gint watch_connected;
    char *watch_error;  /* under lock */
    bool watch_started; /* under lock: connected once */
    guint64 mirror_bytes, watch_reconnects, compactions, corrupt_seen,
        notified, oversized_lines, watch_bytes; /* atomic */
    uint64_t writes; /* atomic: nonces handed out (procreg_etcd_nonce()) */
    int64_t seen_rev; /* atomic: the latest revision a write's reply named */
} etcd_state;

/* ---- small helpers ---- */

/* A condition that waits on CLOCK_MONOTONIC, the clock of
 * g_get_monotonic_time(). */
static inline void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

/* Wait until signalled or @until (g_get_monotonic_time() µs); false on
 * timeout.  The condition must wait on CLOCK_MONOTONIC
 * (cond_init_monotonic()): pthread locks rather than GMutex/GCond,
 * because glib's are bare futexes that ThreadSanitizer cannot see. */
static inline bool cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m,
                                   gint64 until)
{
    struct timespec ts = {.tv_sec = (time_t)(until / G_USEC_PER_SEC),
                          .tv_nsec = (long)(until % G_USEC_PER_SEC) * 1000};
    return pthread_cond_timedwait(c, m, &ts) == 0;
}

static inline void atomic_add(guint64 *p, guint64 n)
{
    __atomic_fetch_add(p, n, __ATOMIC_RELAXED);
}

static inline guint64 atomic_get(guint64 *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void atomic_sub(guint64 *p, guint64 n)
{
    __atomic_fetch_sub(p, n, __ATOMIC_RELAXED);
}

/* ---- positions ---- */

/* A change's position (procreg_event.position) on etcd: its revision
 * shifted left by 20 bits, with its index among the changes of that
 * revision in the low bits, 0, 1, 2, ... in the order the watch reports
 * them.  The changes of one transaction share its revision (a namespace
 * drop's removals), so the revision alone does not tell them apart: a
 * watcher that handled the first of them and resumes from its position
 * must get the rest.  So positions are unique, increase in commit order,
 * and the revision is position >> 20.  20 bits: a transaction holds at
 * most --max-txn-ops operations (128 by default); only a ranged delete
 * changes more keys than it has operations, and indices stop at
 * ETCD_INDEX_LAST (procreg_etcd_change_position()).  A revision below
 * 2^43 keeps a position within 63 bits.  Index ETCD_INDEX_ALL, which no
 * change has, stands for every change of its revision. */
#define ETCD_INDEX_BITS 20
#define ETCD_INDEX_ALL ((UINT32_C(1) << ETCD_INDEX_BITS) - 1)
#define ETCD_INDEX_LAST (ETCD_INDEX_ALL - 1)

static inline uint64_t procreg_etcd_position(int64_t rev, uint32_t index)
{
    return ((uint64_t)rev << ETCD_INDEX_BITS) | index;
}

static inline int64_t procreg_etcd_position_revision(uint64_t position)
{
    return (int64_t)(position >> ETCD_INDEX_BITS);
}

/* ---- etcd.c ---- */

/* Free @s, stopped, out of its session. */
ETCD_HIDDEN void procreg_etcd_state_free(etcd_state *s);

/* ---- etcd-keys.c: keys, values, transaction bodies ---- */

/* The etcd key of @key: prefix/e/ns\0name. */
ETCD_HIDDEN GString *procreg_etcd_entry_key(etcd_state *s,
                                            const procreg_key *key);
/* Range end for every key starting with @k (@n bytes). */
ETCD_HIDDEN GString *procreg_etcd_prefix_end(const char *k, size_t n);
/* The range of namespace @ns (NULL: all entries) as [*start, *end). */
ETCD_HIDDEN void procreg_etcd_ns_range(etcd_state *s, const char *ns,
                                       GString **start, GString **end);
/* Append "member":"base64 of @k" to @b. */
ETCD_HIDDEN void procreg_etcd_json_key(GString *b, const char *member,
                                       const void *k, size_t n);
/* Split an etcd key prefix/e/ns\0name into ns and name (validated). */
ETCD_HIDDEN bool procreg_etcd_split_key(etcd_state *s, const guchar *k,
                                        size_t n, char **ns, char **name);
/* A printable form of an etcd key for messages; g_free it. */
ETCD_HIDDEN char *procreg_etcd_key_for_humans(const guchar *k, size_t n);
/* Decode @kv's value or report it corrupt (PROCREG_EBACKEND). */
ETCD_HIDDEN int procreg_etcd_kv_value(const etcd_kv *kv, etcd_value *v,
                                      GError **error);
/* An entry on this host whose owner process is gone. */
ETCD_HIDDEN bool procreg_etcd_owner_dead_here(etcd_state *s,
                                              const etcd_value *v);
/* Fill @out (may be NULL) from @v; takes @ns and @name. */
ETCD_HIDDEN void procreg_etcd_fill_entry(const etcd_value *v,
                                         int64_t revision, char *ns,
                                         char *name, procreg_entry *out);
/* The @i-th op's reply object of @kind ("response_range", ...) in a txn
 * reply, or NULL. */
ETCD_HIDDEN JsonObject *procreg_etcd_txn_response(JsonObject *reply, guint i,
                                                  const char *kind);
/* Fill the entry of change @c (its kind, reason, own and position set)
 * from etcd key @key: the entry from @value (NULL: only a removal's key
 * and @revision); a member's key makes REGISTERED JOINED and UNREGISTERED
 * LEFT (procreg_etcd_member_decode()).  false, @c's entry left empty, when
 * there is nothing to report: a key that is not valid or a registration
 * whose value cannot be read (both counted in corrupt_seen), a member's
 * update.  Shared by the watch and the history (etcd-history.c), so both
 * report a change alike. */
ETCD_HIDDEN bool procreg_etcd_change_decode(etcd_state *s, const void *key,
                                            size_t klen, const void *value,
                                            size_t vlen, int64_t revision,
                                            procreg_change *c);
/* Report a change to the core (procreg_etcd_change_decode()), at
 * @position (procreg_etcd_position()).  @own: this instance made it
 * (reported in commit order by the watch, procreg_etcd_ordered()); else
 * another writer did, or nobody (an expiry). */
ETCD_HIDDEN void procreg_etcd_notify(etcd_state *s, bool own,
                                     procreg_event_kind kind,
                                     procreg_event_reason reason,
                                     const void *key, size_t klen,
                                     const void *value, size_t vlen,
                                     int64_t revision, uint64_t position);
/* The reason other hosts read when this process removes or changes the
 * entry @v: the core lets its owner do that (explicit), anyone remove a
 * dead owner's entry (owner_exited), and others only by force (forced). */
ETCD_HIDDEN procreg_event_reason procreg_etcd_removal_reason(etcd_state *s,
                                                           const etcd_value *v);
/* Read a transaction reply: *@succeeded, and *@rev, its revision.
 * PROCREG_EBACKEND when it cannot be a reply to our transaction: no
 * revision, or (when it did not succeed) fewer than the @failure_ranges
 * range responses the failure branch asks for. */
ETCD_HIDDEN int procreg_etcd_txn_outcome(JsonObject *reply,
                                         guint failure_ranges,
                                         bool *succeeded, int64_t *rev,
                                         GError **error);
/* The first kv of array @member of @o, parsed. */
ETCD_HIDDEN bool procreg_etcd_first_kv(JsonObject *o, const char *member,
                                       etcd_kv *kv);
/* Transaction operations, appended to @b. */
ETCD_HIDDEN void procreg_etcd_op_put(GString *b, const GString *key,
                                     const char *value, size_t value_len,
                                     int64_t lease, bool ignore_lease);
ETCD_HIDDEN void procreg_etcd_op_delete(GString *b, const GString *key,
                                        const GString *end);
ETCD_HIDDEN void procreg_etcd_op_range(GString *b, const GString *key);
/* An entry's key (P/e/ns\0name), and a namespace's marker key (P/e/ns\0:
 * the empty name, which no entry has). */
ETCD_HIDDEN bool procreg_etcd_is_entry_key(etcd_state *s, const void *k,
                                           size_t n);
ETCD_HIDDEN bool procreg_etcd_is_marker_key(etcd_state *s, const void *k,
                                            size_t n);
/* A group member's key (P/e/ns\x01group\0suffix, etcd-codec.h). */
ETCD_HIDDEN bool procreg_etcd_is_member_key(etcd_state *s, const void *k,
                                            size_t n);
/* Group @key's marker key P/e/ns\x01group\0: its members' prefix. */
ETCD_HIDDEN GString *procreg_etcd_group_marker_key(etcd_state *s,
                                                   const procreg_key *key);
/* Split a member key into ns and group (validated). */
ETCD_HIDDEN bool procreg_etcd_split_member_key(etcd_state *s, const guchar *k,
                                               size_t n, char **ns,
                                               char **group);
/* What the watch covers of namespace @ns (NULL: everything): its entries,
 * marker and groups, [P/e/ns\0, P/e/ns\x02). */
ETCD_HIDDEN void procreg_etcd_ns_watch_range(etcd_state *s, const char *ns,
                                             GString **start, GString **end);
/* The marker key of the namespace of entry (or marker) key @k; of a
 * member key, its group's marker key. */
ETCD_HIDDEN GString *procreg_etcd_marker_key(etcd_state *s, const void *k,
                                             size_t n);
/* The reason marker written with a removal of @key (an entry key, or a
 * namespace's start); @nonce: the removal's (procreg_etcd_nonce(), 0 for
 * none). */
ETCD_HIDDEN void procreg_etcd_op_marker(etcd_state *s, GString *b,
                                        const GString *key,
                                        const char *writer, uint64_t nonce,
                                        procreg_event_reason reason);
/* A compare of @key's @field (@target) against @v. */
ETCD_HIDDEN void procreg_etcd_op_compare(GString *b, const GString *key,
                                         const char *target,
                                         const char *result,
                                         const char *field, int64_t v);

/* ---- etcd-session.c: the client, lease and keeper a process shares ---- */

/* The session of @cfg's cluster and way, as host @host_id (a new one,
 * with its lease, when none is open), or an error from granting the
 * lease. */
ETCD_HIDDEN int procreg_etcd_session_open(const etcd_client_config *cfg,
                                          const char *host_id, int64_t ttl_s,
                                          etcd_session **out, GError **error);
ETCD_HIDDEN etcd_client *procreg_etcd_session_client(etcd_session *se);
/* The keeper tends @s's entries from attach until leave. */
ETCD_HIDDEN void procreg_etcd_session_attach(etcd_session *se,
                                             etcd_state *s);
/* @s (stopped: no watch thread) leaves @se, which is freed with its last
 * registry.  True when the session keeps @s: while other registries keep
 * the lease alive, it removes @s's entries as their owners die, and frees
 * @s when none is left (or the lease is lost). */
ETCD_HIDDEN bool procreg_etcd_session_leave(etcd_session *se, etcd_state *s);
/* Wake the keeper now (an entry on the lease went without a marker). */
ETCD_HIDDEN void procreg_etcd_session_kick(etcd_session *se);

typedef struct {
    int64_t lease, ttl; /* lease 0: none */
    gint64 keepalive_age_us;
    guint leases_lost;
    gint64 loss_age_us; /* since the last loss; -1: none */
    char *error;        /* the keeper's last failure, or NULL; g_free it */
    guint registries;   /* attached */
    guint retired;      /* closed, with entries kept (session_leave) */
} etcd_lease_info;

ETCD_HIDDEN void procreg_etcd_session_info(etcd_session *se,
                                           etcd_lease_info *out);
ETCD_HIDDEN int64_t procreg_etcd_current_lease(etcd_state *s);
/* Replace a lost lease @old with a new one (once, however many threads
 * notice). */
ETCD_HIDDEN int procreg_etcd_lease_renew(etcd_state *s, int64_t old,
                                         gint64 deadline, GError **error);
/* The lease to attach a new entry to, granting one if there is none. */
ETCD_HIDDEN int procreg_etcd_lease_for_write(etcd_state *s, gint64 deadline,
                                             int64_t *lease, GError **error);

/* ---- etcd-owned.c: the entries this instance registered ---- */

ETCD_HIDDEN void procreg_etcd_owned_free(gpointer p);
/* Remember (under s->lock for the _locked forms) that this instance
 * wrote @value at @key at @rev. */
ETCD_HIDDEN void procreg_etcd_owned_put_locked(etcd_state *s,
                                               const GString *key,
                                               const char *value, size_t len,
                                               int64_t rev,
                                               const procreg_owner *owner);
ETCD_HIDDEN void procreg_etcd_owned_put(etcd_state *s, const GString *key,
                                        const char *value, size_t len,
                                        int64_t rev,
                                        const procreg_owner *owner);
/* Forget @key after a removal at @rev; while a write of the key is in
 * flight, remember the removal so the write's late owned_put() does not
 * bring it back. */
ETCD_HIDDEN void procreg_etcd_owned_remove_locked(etcd_state *s,
                                                  const void *key, size_t n,
                                                  int64_t rev);
ETCD_HIDDEN void procreg_etcd_owned_remove(etcd_state *s, const void *key,
                                           size_t n, int64_t rev);
/* Around a write whose result goes to owned_put(): from before its
 * request to after owned_put(). */
ETCD_HIDDEN void procreg_etcd_owned_begin(etcd_state *s, const GString *key);
ETCD_HIDDEN void procreg_etcd_owned_end(etcd_state *s, const GString *key);
/* A record's owner and *@rev, the revision of its key, in s->owned
 * (owned_entry) or s->locals (local_member). */
typedef const procreg_owner *(*etcd_record_fn)(gconstpointer record,
                                               int64_t *rev);
/* Remove from etcd the keys of @table (s->owned or s->locals, read with
 * @record_of) whose owner died, reason owner_exited, each only while at
 * the revision recorded; and from @table unless changed meanwhile.  Stops
 * when the registry closes. */
ETCD_HIDDEN void procreg_etcd_reap(etcd_state *s, GHashTable *table,
                                   etcd_record_fn record_of);
/* After a keepalive round on @lease: register again what was owned when
 * the lease was lost, and remove the entries whose owner died. */
ETCD_HIDDEN void procreg_etcd_owned_tend(etcd_state *s, int64_t lease);

/* ---- etcd-ops.c: single keys ---- */

typedef int (*etcd_kv_fn)(etcd_state *s, etcd_kv *kv, void *user,
                          GError **error);

/* A number no other write of this instance carries: a write whose
 * answer was lost (and that was sent again, perhaps to another member)
 * recognises its own effect by it. */
ETCD_HIDDEN uint64_t procreg_etcd_nonce(etcd_state *s);
/* How many times a write tries after losing a race or the lease. */
#define ETCD_WRITE_ATTEMPTS 8
/* Whether the range reply @r holds the reason marker of our removal
 * @nonce; *@rev: the marker's revision (the removal's). */
ETCD_HIDDEN bool procreg_etcd_own_marker(etcd_state *s, JsonObject *r,
                                         uint64_t nonce, int64_t *rev);
/* A revision no older than the latest this instance knows of (from the
 * watch or a reply), and the update of it from a reply's header.  Writes
 * that cannot compare an entry's revision (a registration, a drop) compare
 * their namespace's marker with it: any removal in the namespace since
 * moves the marker past it, so a repetition of the write that reaches etcd
 * late, after its entry was removed, changes nothing. */
ETCD_HIDDEN int64_t procreg_etcd_revision_known(etcd_state *s);
ETCD_HIDDEN void procreg_etcd_revision_seen(etcd_state *s, int64_t rev);
/* @v: what this instance writes for @record, with a fresh nonce (the
 * metadata borrowed); returns it encoded, *@vlen bytes; g_free it. */
ETCD_HIDDEN char *procreg_etcd_record_value(etcd_state *s,
                                           const procreg_record *record,
                                           etcd_value *v, size_t *vlen);
/* A write sent again after an attempt that got no answer, finding @thing
 * ("entry", "group") changed by another writer: that attempt may or may
 * not have been applied first.  Sets @error; PROCREG_EBACKEND. */
ETCD_HIDDEN int procreg_etcd_outcome_unknown(GError **error, const char *what,
                                             const char *thing);
/* A held_fn's answer: try the create again. */
#define ETCD_CREATE_AGAIN 1
/* What a guarded create does on finding its key @held (@lease: its
 * attempt's; @unsure: an attempt of it went unanswered): 0 when @held is
 * its own put, applied by an attempt whose answer was lost (*@created:
 * that put's revision); ETCD_CREATE_AGAIN; or the create's error. */
typedef int (*etcd_held_fn)(etcd_state *s, const etcd_kv *held, int64_t lease,
                            bool unsure, void *user, int64_t *created,
                            GError **error);
/* Create key @k with @value on the lease, in one transaction per attempt
 * that compares @k absent and @k's marker (procreg_etcd_marker_key(): its
 * namespace's, or its group's) no newer than the latest revision known,
 * so that a late repetition after a removal there changes nothing.  A
 * removal there since that revision: tries again knowing the latest; a
 * lost lease: renewed once; the key held: @held_fn says.  0 with
 * *@created, the revision of the put; PROCREG_EBACKEND "whether the @what
 * was applied is unknown" when an attempt went unanswered and the key is
 * absent after a removal; PROCREG_EBACKEND without setting @error when
 * the attempts ran out. */
ETCD_HIDDEN int procreg_etcd_create_guarded(etcd_state *s, const GString *k,
                                            const char *value, size_t vlen,
                                            const char *what,
                                            const char *thing,
                                            gint64 deadline,
                                            etcd_held_fn held_fn, void *user,
                                            int64_t *created, GError **error);
/* Get one key.  *@found false when absent. */
ETCD_HIDDEN int procreg_etcd_get_kv(etcd_state *s, const GString *key,
                                    bool linearizable, gint64 deadline,
                                    etcd_kv *kv, bool *found, GError **error);
/* Visit every kv in [start, end), page by page, all pages at the
 * revision of the first, or at *@revision when not 0; *@revision: the
 * revision read at. */
ETCD_HIDDEN int procreg_etcd_range_all(etcd_state *s, const GString *start,
                                       const GString *end, bool keys_only,
                                       bool serializable, size_t max,
                                       etcd_kv_fn fn, void *user,
                                       int64_t *revision, GError **error);
/* Remove @k while it is at @rev, with reason @reason written by the
 * backend itself. */
ETCD_HIDDEN int procreg_etcd_evict(etcd_state *s, const GString *k,
                                   int64_t rev, procreg_event_reason reason,
                                   gint64 deadline, bool *removed,
                                   GError **error);
ETCD_HIDDEN int procreg_etcd_lookup(void *state, const procreg_key *key,
                                    procreg_owner *out);
ETCD_HIDDEN int procreg_etcd_lookup_entry(void *state, const procreg_key *key,
                                          procreg_entry *out, GError **error);
ETCD_HIDDEN int procreg_etcd_register(void *state, const procreg_key *key,
                                      const procreg_record *record,
                                      procreg_entry *current, GError **error);
ETCD_HIDDEN int procreg_etcd_unregister(void *state, const procreg_key *key,
                                        uint64_t if_revision,
                                        procreg_entry *removed,
                                        GError **error);
ETCD_HIDDEN int procreg_etcd_update_metadata(void *state,
                                             const procreg_key *key,
                                             GVariant *metadata,
                                             uint64_t if_revision,
                                             procreg_entry *updated,
                                             GError **error);

/* ---- etcd-scan.c: ranges ---- */

ETCD_HIDDEN int procreg_etcd_list_all(void *state, const char *ns,
                                      GArray *out, GError **error);
ETCD_HIDDEN int procreg_etcd_count(void *state, const char *ns, size_t *out,
                                   GError **error);
ETCD_HIDDEN int procreg_etcd_list_names(void *state, const char *ns,
                                        size_t max, GPtrArray *out);
ETCD_HIDDEN int procreg_etcd_drop_namespace(void *state, const char *ns,
                                            GArray *removed, GError **error);

/* ---- etcd-groups.c: groups (duplicate keys) ---- */

ETCD_HIDDEN int procreg_etcd_group_join(void *state, const procreg_key *key,
                                        const procreg_record *record,
                                        procreg_member *joined,
                                        GError **error);
ETCD_HIDDEN int procreg_etcd_group_leave(void *state, const procreg_key *key,
                                         uint64_t member_id,
                                         const procreg_owner *owner,
                                         procreg_event_reason reason,
                                         GArray *removed, GError **error);
ETCD_HIDDEN int procreg_etcd_group_members(void *state, const procreg_key *key,
                                           GArray *out, GError **error);
ETCD_HIDDEN int procreg_etcd_group_list_all(void *state, const char *ns,
                                            GArray *out, GError **error);
ETCD_HIDDEN int procreg_etcd_group_count(void *state, const procreg_key *key,
                                         size_t *out, GError **error);
ETCD_HIDDEN int procreg_etcd_group_list(void *state, const char *ns,
                                        GArray *out, GError **error);
/* procreg_etcd_change_decode() of a member key: REGISTERED becomes
 * JOINED, UNREGISTERED LEFT (members are never updated). */
ETCD_HIDDEN bool procreg_etcd_member_decode(etcd_state *s, const void *key,
                                            size_t klen, const void *value,
                                            size_t vlen, int64_t revision,
                                            procreg_change *c);
/* The members of this host the watch saw (or this instance joined), for
 * the keeper: member key @k at @rev with @value, put or removed. */
ETCD_HIDDEN void procreg_etcd_locals_put(etcd_state *s, const void *k,
                                         size_t n, const void *value,
                                         size_t vlen, int64_t rev);
ETCD_HIDDEN void procreg_etcd_locals_remove(etcd_state *s, const void *k,
                                            size_t n);
/* After a keepalive round: remove the members of this host whose owner
 * died (reason owner_exited). */
ETCD_HIDDEN void procreg_etcd_locals_reap(etcd_state *s);

/* ---- etcd-events.c: what a watch event tells ---- */

/* An entry's key or a group member's: what the watch and the history
 * report. */
ETCD_HIDDEN bool procreg_etcd_watched_key(etcd_state *s, const void *k,
                                          size_t n);

/* The writer of value @value (NULL allowed) into @out
 * (ETCD_WRITER_LEN + 1 bytes), "" when unreadable. */
ETCD_HIDDEN void procreg_etcd_value_writer(const void *value, size_t len,
                                           char *out);

/* A reason marker in a watch response: it shares the revision of the
 * removal (or forced update) it explains, and a revision is never split
 * across responses. */
typedef struct {
    int64_t rev;
    char writer[ETCD_WRITER_LEN + 1];
    int reason;
} etcd_marker;

/* The reason markers of response @b (etcd_marker); g_array_unref it. */
ETCD_HIDDEN GArray *procreg_etcd_markers(etcd_state *s,
                                         const etcd_watch_batch *b);

/* What one event of an entry's or member's key tells. */
typedef struct {
    procreg_event_kind kind;     /* REGISTERED, UPDATED or UNREGISTERED */
    procreg_event_reason reason; /* the marker's; else NONE for a put,
                                  * EXPIRED for a removal */
    bool own;    /* by this instance: the value's writer, a removal's
                  * marker's */
    bool marked; /* a reason marker shares its revision */
    /* The entry: a put's, a removal's previous one (prev_kv; value NULL,
     * lease 0 and revision the removal's when etcd sent none). */
    const void *value;
    size_t value_len;
    int64_t revision, lease;
    uint64_t position; /* the event's revision and index (@ix) */
} etcd_event_meaning;

/* Numbers the changes of each revision, from 0, in the order a watch (or
 * a resync) reports them: one per stream, zeroed at its start. */
typedef struct {
    int64_t rev;
    uint32_t next;
} etcd_change_index;

/* The position of the next change of revision @rev
 * (procreg_etcd_position()).  The changes of one revision past index
 * ETCD_INDEX_LAST (a ranged delete of over a million keys) share it. */
ETCD_HIDDEN uint64_t procreg_etcd_change_position(etcd_change_index *ix,
                                                  int64_t rev);

/* Read event @ev of a response whose markers are @markers
 * (procreg_etcd_markers()), the next of @ix.  false for an event the
 * watch does not report: not a put or removal of an entry's or member's
 * key (such events take no index).  @out points into @ev. */
ETCD_HIDDEN bool procreg_etcd_event_read(etcd_state *s,
                                         const etcd_watch_event *ev,
                                         const GArray *markers,
                                         etcd_change_index *ix,
                                         etcd_event_meaning *out);

/* ---- etcd-watch.c: the watch ---- */

ETCD_HIDDEN GHashTable *procreg_etcd_mirror_new(void);
/* At open: the revision now (one cheap read), which writes know from then
 * on (procreg_etcd_revision_known()) and, with WATCH_ALL, the watch
 * starts after (its thread reads the prefix at it). */
ETCD_HIDDEN int procreg_etcd_watch_begin(etcd_state *s, GError **error);
/* WATCH_USED: the registry uses namespace @ns; once the watch covers it
 * (at once when it did; else within min(timeout_ms, 2 s), or the watch
 * says why not in health_check).  Other modes: nothing. */
ETCD_HIDDEN void procreg_etcd_watch_use(etcd_state *s, const char *ns);
ETCD_HIDDEN gpointer procreg_etcd_watcher_main(gpointer data);
/* Whether the watch reports this instance's own changes too, in commit
 * order (PROCREG_CAP_ORDERED_EVENTS): when it covers the whole prefix. */
ETCD_HIDDEN bool procreg_etcd_ordered(const etcd_state *s);
/* An op of this instance committed at @rev: wait (until @deadline) for
 * the watch to report it, so that its event comes before the op returns.
 * Past the deadline the op returns without it; the watch reports it
 * later, still in order. */
ETCD_HIDDEN void procreg_etcd_watch_await(etcd_state *s, int64_t rev,
                                          gint64 deadline);

/* ---- etcd-history.c: the history slots ---- */

/* The store's revision now (a linearizable read of one key). */
ETCD_HIDDEN int procreg_etcd_revision_now(etcd_state *s, gint64 deadline,
                                          int64_t *rev, GError **error);
ETCD_HIDDEN int procreg_etcd_history_head(void *state, uint64_t *out,
                                          GError **error);
ETCD_HIDDEN int procreg_etcd_history_read(void *state, const char *ns,
                                          uint64_t after, GArray *out,
                                          uint64_t *head, GError **error);

/* ---- etcd-health.c ---- */

ETCD_HIDDEN int procreg_etcd_health_check(void *state, GVariantDict *details,
                                          char **message);
ETCD_HIDDEN void procreg_etcd_stats(void *state, GVariantDict *out);
ETCD_HIDDEN int procreg_etcd_memory_usage(void *state, size_t *bytes);

#endif
