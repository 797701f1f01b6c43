/*
 * procreg backend contract: what a storage backend implements, and the
 * core services it may call.  Applications only need procreg.h; backend
 * authors define PROCREG_ENABLE_BACKEND before including this header, as a
 * reminder that this is the lower, versioned interface.
 *
 * Shape (after libgit2's odb backends and SQLite's VFS):
 *   - procreg_backend_ops is a static table, version first, one per backend
 *     type.  Slots are only ever appended; later slots are read only when
 *     `version` says they exist.
 *   - init() makes one instance (an opaque `void *state`) from a parsed
 *     spec.  Every other op receives that state.
 *   - The core (core/dispatch.c) is the only caller of these slots.  It
 *     validates every key and metadata before a backend sees them, and
 *     applies the locking the capability flags ask for.
 *   - A decorator (a backend over another backend) opens its inner backend
 *     with procreg_backend_open() and calls it through the procreg_backend_*
 *     wrappers below, never through the inner vtable.
 */
#ifndef PROCREG_BACKEND_H
#define PROCREG_BACKEND_H

#ifndef PROCREG_ENABLE_BACKEND
#error "Define PROCREG_ENABLE_BACKEND before including <procreg/backend.h>."
#endif

#include <procreg/procreg.h>

G_BEGIN_DECLS

/* ------------------------------------------------------------------------ */
/* Keys as backends see them                                                */

/**
 * A validated key.  `bytes` holds namespace, NUL, name, NUL; the first
 * ns_len + 1 + name_len bytes identify the key (procreg_key_bytes() and
 * procreg_key_size()).  `hash` is procreg_key_hash() of those bytes.
 * Backends never keep a key pointer after an op returns: copy the bytes.
 */
struct procreg_key {
    uint64_t hash;
    gint refcount; /* 0 for keys the core builds on its stack */
    uint16_t ns_len;
    uint16_t name_len;
    char bytes[];
};

static inline const char *procreg_key_bytes(const procreg_key *key)
{
    return key->bytes;
}

/** Bytes that identify the key: "ns\0name" (no trailing NUL). */
static inline size_t procreg_key_size(const procreg_key *key)
{
    return (size_t)key->ns_len + 1 + key->name_len;
}

/**
 * A 64-bit hash of @len bytes: seeded once per process, so it is not
 * stable across processes (do not store it).  Thread-safe.
 */
PROCREG_API uint64_t procreg_hash(const void *data, size_t len);

/**
 * The hash of key bytes "ns\0name" (@size = procreg_key_size()), equal to
 * the `hash` of a procreg_key with those bytes: for a backend that
 * rebuilds keys or hashes stored ones.  Seeded like procreg_hash() (which
 * gives another value for the same bytes).  Thread-safe.
 */
PROCREG_API uint64_t procreg_key_hash(const void *bytes, size_t size);

/* ------------------------------------------------------------------------ */
/* Capabilities                                                             */

typedef enum {
    /** Every op may run concurrently with any other: the core adds no lock. */
    PROCREG_CAP_THREADSAFE = 1u << 0,
    /** Without THREADSAFE: read ops (lookup, lookup_entry, list_all, count,
     *  list_names, find_by_metadata, memory_usage, stats, health_check) may
     *  run in parallel with each other, so the core uses a reader/writer
     *  lock instead of a mutex. */
    PROCREG_CAP_PARALLEL_READS = 1u << 1,
    /** Lookups take no lock and do no atomic read-modify-write on shared
     *  memory (implies THREADSAFE). */
    PROCREG_CAP_LOCKFREE_READS = 1u << 2,
    /** Entries survive the process (and a restart). */
    PROCREG_CAP_PERSISTENT = 1u << 3,
    /** Several processes on one host share the registry. */
    PROCREG_CAP_MULTIPROCESS = 1u << 4,
    /** Several hosts share the registry. */
    PROCREG_CAP_DISTRIBUTED = 1u << 5,
    /** drop_namespace removes all entries in one atomic step. */
    PROCREG_CAP_ATOMIC_DROP = 1u << 6,
    /** The backend reports every change through its host in the order it
     *  committed them: the changes other processes or hosts made
     *  (procreg_backend_host_notify()) and those its own ops made
     *  (procreg_backend_host_notify_own()), an op's before the op returns.
     *  The core then emits no event of its own for a write: the backend's
     *  commit order is the events' order, so the events of one key keep
     *  revision order even when other processes write it too. */
    PROCREG_CAP_ORDERED_EVENTS = 1u << 7,
    /** Groups (duplicate keys): the version-3 group slots are set; see
     *  "Groups" in the vtable. */
    PROCREG_CAP_GROUPS = 1u << 8,
    /** A history of the whole store (with ORDERED_EVENTS): the version-4
     *  history slots are set and serve this instance; see "History" in
     *  the vtable. */
    PROCREG_CAP_HISTORY = 1u << 9,
} procreg_backend_caps;

/* ------------------------------------------------------------------------ */
/* Specs                                                                    */

/** Parsed options of one backend in a spec string.  Read-only. */
typedef struct procreg_spec procreg_spec;

/** One option a backend accepts, for validation and help.  An option
 *  named "password" holds a secret: the normalised spec shows "***". */
typedef struct {
    const char *name;
    const char *help;
} procreg_backend_option;

/** The backend name of @spec. */
PROCREG_API const char *procreg_spec_backend(const procreg_spec *spec);
/** The raw value of @option, or NULL when absent. Valid as long as @spec. */
PROCREG_API const char *procreg_spec_get(const procreg_spec *spec,
                                         const char *option);
/**
 * @option as an unsigned integer, @def when absent.  Accepts the size
 * suffixes K/KiB, M/MiB, G/GiB (powers of 1024).
 * @return 0 or PROCREG_EINVAL naming the option and the value.
 */
PROCREG_API int procreg_spec_get_uint64(const procreg_spec *spec,
                                        const char *option, uint64_t def,
                                        uint64_t *out, GError **error);
/** @option as a boolean (true/false, yes/no, on/off, 1/0). */
PROCREG_API int procreg_spec_get_bool(const procreg_spec *spec,
                                      const char *option, bool def,
                                      bool *out, GError **error);

/* ------------------------------------------------------------------------ */
/* What the core hands a backend                                            */

/** The registration the core has validated, borrowed for the call. */
typedef struct {
    procreg_owner owner;
    GVariant *metadata;    /**< a{sv} or NULL; g_variant_ref() to keep it. */
    int64_t registered_at; /**< µs since the epoch. */
} procreg_record;

/** The core side of one open backend (for notifications); opaque. */
typedef struct procreg_backend_host procreg_backend_host;

/**
 * For backends whose entries also change outside this instance (other
 * processes on a shared file, other hosts): report a change so the core
 * emits the event and wakes waiters.  @entry has ns and name filled
 * (borrowed).  Safe from any thread, including backend threads; NULL
 * @host is ignored (a backend opened without a registry).
 */
PROCREG_API void procreg_backend_host_notify(procreg_backend_host *host,
                                             procreg_event_kind kind,
                                             procreg_event_reason reason,
                                             const procreg_entry *entry);

/**
 * For backends with PROCREG_CAP_ORDERED_EVENTS: report a change made by
 * one of this instance's own ops, in its place in the commit order.  It
 * goes to the registry as an event with external = false; decorators'
 * child hosts do not see it (their own write paths know their writes).
 * Same rules as procreg_backend_host_notify().
 */
PROCREG_API void procreg_backend_host_notify_own(procreg_backend_host *host,
                                                 procreg_event_kind kind,
                                                 procreg_event_reason reason,
                                                 const procreg_entry *entry);

/**
 * procreg_backend_host_notify() (@own false) or
 * procreg_backend_host_notify_own() (@own true) for a backend that keeps a
 * history (the version-4 history slots): @position is the change's place
 * in it, the number history_read() gives the same change.  Positions
 * increase in commit order.  The others pass 0 (no position).
 */
PROCREG_API void procreg_backend_host_notify_at(procreg_backend_host *host,
                                                procreg_event_kind kind,
                                                procreg_event_reason reason,
                                                const procreg_entry *entry,
                                                bool own, uint64_t position);

/*
 * Groups use the same two calls with kinds JOINED and LEFT: @entry then
 * describes the member, its name being the group, its revision the member
 * id and registered_at the join time.
 *
 * Hosts are implemented by the service layer (core/events.c).  The host a
 * registry passes to init() delivers a notification as an event (with
 * external = true) to the registry's subscribers, wakes procreg_wait_for()
 * callers on REGISTERED, and on UNREGISTERED forgets the key in the owner
 * index.  Unless the backend has PROCREG_CAP_ORDERED_EVENTS, never notify
 * for a change made through your own ops: the core reports those itself.
 * Reasons: UNREGISTERED carries why (OWNER_EXITED for an owner that died,
 * FORCED for a removal by a process that does not own the entry, EXPIRED,
 * NAMESPACE_DROPPED, else EXPLICIT); UPDATED carries FORCED or NONE.
 */

/** Called by a child host before it forwards a notification. */
typedef void (*procreg_backend_host_notify_fn)(gpointer user_data,
                                               procreg_event_kind kind,
                                               procreg_event_reason reason,
                                               const procreg_entry *entry);

/**
 * For decorators: a host to pass to procreg_backend_open() for the inner
 * backend.  Each notification of the inner backend first calls
 * @fn(@user_data, ...) (e.g. to invalidate a cache; any thread, possibly
 * concurrently with ops; keep it short and do not call the registry), then
 * is forwarded to @parent (NULL: nowhere).  Free it with
 * procreg_backend_host_free() after closing the inner backend, which may
 * notify until it is closed.  Never returns NULL.
 */
PROCREG_API procreg_backend_host *
procreg_backend_host_new_child(procreg_backend_host *parent,
                               procreg_backend_host_notify_fn fn,
                               gpointer user_data);

/** Free a host made by procreg_backend_host_new_child().  NULL is ignored;
 *  a registry's own host is refused with a critical warning. */
PROCREG_API void procreg_backend_host_free(procreg_backend_host *host);

/* ------------------------------------------------------------------------ */
/* The vtable                                                               */

/* Version 2 added the optional count_namespaces slot at the end of the
 * table, version 3 the group slots, version 4 the history slots, version 5
 * unregister_owned; the core reads a slot only from tables whose version
 * has it, so modules built for version 1 or 2 keep working (and answer
 * PROCREG_ENOTSUP for groups). */
#define PROCREG_BACKEND_VERSION 5

/**
 * The owner rule's notion of one process: the same pid and, where both
 * know it (non-zero), the same start time.  What unregister_owned compares
 * with; the core applies the same rule everywhere else.
 */
static inline bool procreg_backend_owner_same(const procreg_owner *a,
                                              const procreg_owner *b)
{
    return a->pid == b->pid &&
           (a->start_time == 0 || b->start_time == 0 ||
            a->start_time == b->start_time);
}

/** One change read back from a backend's history (history_read). */
typedef struct {
    procreg_event_kind kind;
    procreg_event_reason reason; /**< as the notification gave it */
    uint64_t position;           /**< its place in the history */
    bool own;                    /**< made through this instance */
    procreg_entry entry;         /**< owned; ns and name set (for JOINED
                                      and LEFT: the member, as notified) */
} procreg_change;

/** An array for history_read(): clears each change when freed. */
PROCREG_API GArray *procreg_change_array_new(void);

/*
 * Rules for every op:
 *  - Return 0 or a negative procreg_error_code; set @error (when not NULL)
 *    for every failure except where a slot says it has no GError.
 *  - Out entries (procreg_entry) are filled with memory the caller owns:
 *    g_strdup'ed strings and metadata references.  `current`, `removed`
 *    and `updated` parameters may be NULL.  Those single entries may leave
 *    ns and name NULL (the key names them; copying costs two allocations
 *    on every write).
 *  - Revisions come from one counter per instance: every change gets a
 *    revision greater than every revision handed out before it.
 *  - Entries in GArrays are procreg_entry with ns and name filled.
 */
typedef struct procreg_backend_ops {
    unsigned int version;  /**< PROCREG_BACKEND_VERSION the table was built for. */
    const char *name;      /**< Spec name: letters, digits, '_', '-', '.'. */
    const char *description;
    unsigned int caps;     /**< procreg_backend_caps. */
    const procreg_backend_option *options; /**< {NULL}-terminated, or NULL. */

    /* ---- version 1: required ---- */

    /** Must. Make an instance from @spec.  @host stays valid until destroy. */
    int (*init)(const procreg_spec *spec, procreg_backend_host *host,
                void **state, GError **error);
    /** Must. Free the instance and everything it holds. */
    void (*destroy)(void *state);
    /** Must. Insert if absent.  On PROCREG_EEXISTS change nothing and fill
     *  @current with the holder; on success fill it with the new entry. */
    int (*register_entry)(void *state, const procreg_key *key,
                          const procreg_record *record,
                          procreg_entry *current, GError **error);
    /** Must. The hot path: owner only; no GError, no allocation.
     *  Returns 0, PROCREG_ENOTFOUND or PROCREG_EBACKEND. */
    int (*lookup)(void *state, const procreg_key *key, procreg_owner *out);
    /** Must. The whole entry (ns and name may stay NULL). */
    int (*lookup_entry)(void *state, const procreg_key *key,
                        procreg_entry *out, GError **error);
    /** Must. Remove; if @if_revision != 0 only while at that revision
     *  (else PROCREG_ECONFLICT).  @removed receives the removed entry. */
    int (*unregister)(void *state, const procreg_key *key,
                      uint64_t if_revision, procreg_entry *removed,
                      GError **error);
    /** Must. Append the entries of @ns (NULL: all) to @out, any order. */
    int (*list_all)(void *state, const char *ns, GArray *out, GError **error);
    /** Must. Replace the metadata (NULL: none), new revision; honour
     *  @if_revision as unregister does.  @updated gets the new entry. */
    int (*update_metadata)(void *state, const procreg_key *key,
                           GVariant *metadata, uint64_t if_revision,
                           procreg_entry *updated, GError **error);
    /** Must. Inspect the backend: return a procreg_health_status (>= 0),
     *  add figures to @details and may set @message (g_malloc'ed). */
    int (*health_check)(void *state, GVariantDict *details, char **message);

    /* ---- version 1: optional (NULL: the core does without) ---- */

    /** May. Count entries of @ns (NULL: all). Core fallback: list_all. */
    int (*count)(void *state, const char *ns, size_t *out, GError **error);
    /** May. Up to @max names of @ns into @out (g_strdup'ed), for
     *  not-found messages. Core fallback: list_all. */
    int (*list_names)(void *state, const char *ns, size_t max,
                      GPtrArray *out);
    /** May. Remove every entry of @ns, appending them to @removed.
     *  Core fallback: list then unregister each. */
    int (*drop_namespace)(void *state, const char *ns, GArray *removed,
                          GError **error);
    /** May. Entries of @ns (NULL: all) whose metadata holds @meta_key with
     *  a value equal to @value (s, b or integer types), appended to @out.
     *  Core fallback: a scan with list_all. */
    int (*find_by_metadata)(void *state, const char *ns, const char *meta_key,
                            GVariant *value, GArray *out, GError **error);
    /** May. Bytes the backend holds for its entries. */
    int (*memory_usage)(void *state, size_t *bytes);
    /** May. Backend-specific figures for procreg_stats(). */
    void (*stats)(void *state, GVariantDict *out);
    /** May. The caps of this instance when they depend on its options or
     *  inner backend (decorators); NULL: `caps` above.  The locking policy
     *  always follows the static `caps`. */
    unsigned int (*instance_caps)(void *state);

    /* ---- version 2: optional ---- */

    /** May. Append one procreg_namespace_info per namespace that holds
     *  entries (ns g_strdup'ed, any order), as list_all would count them,
     *  without copying the entries.  Core fallback: list_all. */
    int (*count_namespaces)(void *state, GArray *out, GError **error);

    /* ---- version 3: groups ----
     * A backend with PROCREG_CAP_GROUPS sets the four "Must" slots below;
     * one without it leaves them all NULL and the core answers
     * PROCREG_ENOTSUP.  Groups are named by procreg_keys of their own:
     * members and entries never see each other.  A member's id is a
     * revision of the instance's one counter, taken by its join.  Members
     * in GArrays are procreg_member (procreg_member_array_new()); a group
     * with no member does not exist.  Backends with
     * PROCREG_CAP_ORDERED_EVENTS report joins and removals with
     * procreg_backend_host_notify_own() (kinds JOINED and LEFT; see
     * procreg_backend_host_notify()). */

    /** Must. Add a member to group @key for @record (owner, metadata, join
     *  time in registered_at); fill @joined (ns and group may stay NULL). */
    int (*group_join)(void *state, const procreg_key *key,
                      const procreg_record *record, procreg_member *joined,
                      GError **error);
    /** Must. Remove members of group @key: the one of id @member_id, or
     *  with @member_id 0 every member of @owner.  With @owner set, a member
     *  @member_id of another owner stays and the slot returns PROCREG_EPERM
     *  (procreg_set_member_owner_error()), changing nothing.  @reason is
     *  what the core reports (EXPLICIT, FORCED, OWNER_EXITED,
     *  NAMESPACE_DROPPED): backends that report their own changes report
     *  it.  Append the removed members to @removed (may be NULL).  Returns
     *  how many went (>= 0; none is not an error) or a failure. */
    int (*group_leave)(void *state, const procreg_key *key, uint64_t member_id,
                       const procreg_owner *owner, procreg_event_reason reason,
                       GArray *removed, GError **error);
    /** Must. Append the members of group @key to @out in id order (ns and
     *  group may stay NULL). */
    int (*group_members)(void *state, const procreg_key *key, GArray *out,
                         GError **error);
    /** Must. Append every member of every group of @ns (NULL: all), with
     *  ns and group set, in any order. */
    int (*group_list_all)(void *state, const char *ns, GArray *out,
                          GError **error);
    /** May. The number of members of group @key.  Core fallback:
     *  group_members. */
    int (*group_count)(void *state, const procreg_key *key, size_t *out,
                       GError **error);
    /** May. Append one procreg_group_info per group of @ns (NULL: all)
     *  (procreg_group_info_array_new()), any order.  Core fallback:
     *  group_list_all. */
    int (*group_list)(void *state, const char *ns, GArray *out,
                      GError **error);
    /** May. Call @fn for each member of group @key in id order until it
     *  returns false; *@visited = the calls made.  The core calls this
     *  slot WITHOUT any lock, whatever the caps: the backend makes it safe
     *  against its own writes (lock-free, or a snapshot writers do not
     *  wait for), holds no lock of its own across @fn (which may call the
     *  registry, this group's writes included), and visits every member
     *  that stays in the group throughout exactly once, none that joined
     *  after the slot began.  Core fallback: group_members, then the
     *  calls. */
    int (*group_dispatch)(void *state, const procreg_key *key,
                          procreg_member_fn fn, gpointer user_data,
                          size_t *visited, GError **error);
    /** May. Fill @out with one member of group @key: with @round_robin,
     *  the one of smallest id above @arg, else the smallest; otherwise one
     *  chosen uniformly with the random bits @arg.  PROCREG_ENOTFOUND when
     *  the group is empty.  Core fallback: group_members. */
    int (*group_pick)(void *state, const procreg_key *key, bool round_robin,
                      uint64_t arg, procreg_member *out, GError **error);
    /** May. Append the members of group @group of @ns (@group NULL: of
     *  every group of @ns; @ns NULL: of all) whose metadata has @meta_key
     *  equal to @value (as find_by_metadata), with ns and group set.  Core
     *  fallback: a scan with group_list_all. */
    int (*group_find)(void *state, const char *ns, const char *group,
                      const char *meta_key, GVariant *value, GArray *out,
                      GError **error);
    /** May. Fill @out with member @member_id of group @key (ns and group
     *  may stay NULL); PROCREG_ENOTFOUND when the group has no such
     *  member.  Core fallback: group_members. */
    int (*group_member)(void *state, const procreg_key *key,
                        uint64_t member_id, procreg_member *out,
                        GError **error);

    /* ---- version 4: history ----
     * A backend that keeps the recent changes of its whole store (other
     * processes' and hosts' too) sets both slots, has
     * PROCREG_CAP_HISTORY and PROCREG_CAP_ORDERED_EVENTS (for the
     * instance: instance_caps), and reports every change with
     * procreg_backend_host_notify_at() and its position; the core then
     * serves procreg_subscribe_from() from it.  Without them the core keeps
     * a history of its own, of this registry's events. */

    /** May. The position of the latest change committed (0: none yet). */
    int (*history_head)(void *state, uint64_t *out, GError **error);
    /** May (with history_head). Append to @out (procreg_change_array_new())
     *  every change of namespace @ns (NULL: every namespace; group changes
     *  included) with a position above @after, in position order, up to at
     *  least the latest change committed before the call; set *@head to the
     *  position read up to (every change at or below it is in @out or
     *  outside @ns).  PROCREG_ECOMPACTED when changes after @after are no
     *  longer kept, or @after is above every position (the history
     *  restarted): the message says what is kept. */
    int (*history_read)(void *state, const char *ns, uint64_t after,
                        GArray *out, uint64_t *head, GError **error);

    /* ---- version 5: optional ---- */

    /** May. Remove the entry of @key only if its owner is @owner
     *  (procreg_backend_owner_same()), in one step that no other write of
     *  the key can come between (one probe of the table, one
     *  transaction): the owner rule's check and the removal together, for
     *  an unregister at no revision.  Returns 0 (removed; @removed, which
     *  may be NULL, receives it), PROCREG_ENOTFOUND (no entry),
     *  PROCREG_EPERM (another owner's entry: nothing changed), or another
     *  failure (nothing changed).  No GError: on anything but 0 and
     *  PROCREG_ENOTFOUND the core takes its general path (it reads the
     *  entry, then applies the rule and PROCREG_FORCE with the holder's
     *  details), which reports.  Called with the locking of unregister.
     *  Core fallback: a lookup of the owner, then unregister. */
    int (*unregister_owned)(void *state, const procreg_key *key,
                            const procreg_owner *owner,
                            procreg_entry *removed);
} procreg_backend_ops;

/**
 * Make @ops available to procreg_open() by its name.  The table must live
 * until the process ends (a static).  Checks the version (0 < version <=
 * PROCREG_BACKEND_VERSION), the name and that every required slot is set.
 * @return 0, PROCREG_EINVAL (incomplete or malformed: the message says
 *         which slot), PROCREG_EEXISTS (the name is taken).  Thread-safe.
 */
PROCREG_API int procreg_backend_register(const procreg_backend_ops *ops,
                                         GError **error);

/**
 * Load a backend from a shared module and register it.  The module
 * exports `const procreg_backend_ops *procreg_backend_module(void);`.  The
 * module stays loaded until the process ends.
 * @param[out] name  optional: the backend's name (g_free it).
 * @return as procreg_backend_register(), or PROCREG_EINVAL when the file
 *         cannot be loaded or lacks the symbol.
 */
PROCREG_API int procreg_backend_load_module(const char *path, char **name,
                                            GError **error);

/**
 * Open a registry on @ops, which need not be registered.  @options is the
 * option part of a spec ("a=1,b=2") or NULL.
 * @return as procreg_open().
 */
PROCREG_API int procreg_open_with_backend(const procreg_backend_ops *ops,
                                          const char *options, procreg **out,
                                          GError **error);

/* ------------------------------------------------------------------------ */
/* Dispatch: an opened backend, called only through these wrappers         */

/** An opened backend instance with the core's locking around it. */
typedef struct procreg_backend procreg_backend;

/**
 * Open the backend described by @spec (for decorators: their inner spec).
 * @host: the caller's host, passed down.  Close with procreg_backend_close().
 */
PROCREG_API int procreg_backend_open(const char *spec,
                                     procreg_backend_host *host,
                                     procreg_backend **out, GError **error);
PROCREG_API void procreg_backend_close(procreg_backend *backend);
PROCREG_API const procreg_backend_ops *
procreg_backend_get_ops(const procreg_backend *backend);
/** The caps of this open instance (instance_caps, else the table's). */
PROCREG_API unsigned int procreg_backend_get_caps(const procreg_backend *backend);

/* Each wrapper calls the slot of the same name under the locking policy;
 * the optional ones fall back as the slot documentation says.  Keys and
 * metadata are not validated again here: the caller already did. */
PROCREG_API int procreg_backend_register_entry(procreg_backend *b,
                                               const procreg_key *key,
                                               const procreg_record *record,
                                               procreg_entry *current,
                                               GError **error);
PROCREG_API int procreg_backend_lookup(procreg_backend *b,
                                       const procreg_key *key,
                                       procreg_owner *out);
PROCREG_API int procreg_backend_lookup_entry(procreg_backend *b,
                                             const procreg_key *key,
                                             procreg_entry *out,
                                             GError **error);
PROCREG_API int procreg_backend_unregister(procreg_backend *b,
                                           const procreg_key *key,
                                           uint64_t if_revision,
                                           procreg_entry *removed,
                                           GError **error);
/* The unregister_owned slot; PROCREG_ENOTSUP when the backend has none
 * (a table before version 5, or the slot NULL): the caller then checks and
 * removes in two calls itself. */
PROCREG_API int procreg_backend_unregister_owned(procreg_backend *b,
                                                 const procreg_key *key,
                                                 const procreg_owner *owner,
                                                 procreg_entry *removed);
PROCREG_API int procreg_backend_list_all(procreg_backend *b, const char *ns,
                                         GArray *out, GError **error);
PROCREG_API int procreg_backend_update_metadata(procreg_backend *b,
                                                const procreg_key *key,
                                                GVariant *metadata,
                                                uint64_t if_revision,
                                                procreg_entry *updated,
                                                GError **error);
PROCREG_API int procreg_backend_health_check(procreg_backend *b,
                                             GVariantDict *details,
                                             char **message);
PROCREG_API int procreg_backend_count(procreg_backend *b, const char *ns,
                                      size_t *out, GError **error);
/* @out: a GArray of procreg_namespace_info (procreg_namespace_array_new()). */
PROCREG_API int procreg_backend_count_namespaces(procreg_backend *b,
                                                GArray *out, GError **error);
PROCREG_API int procreg_backend_list_names(procreg_backend *b, const char *ns,
                                           size_t max, GPtrArray *out);
PROCREG_API int procreg_backend_drop_namespace(procreg_backend *b,
                                               const char *ns,
                                               GArray *removed,
                                               GError **error);
PROCREG_API int procreg_backend_find_by_metadata(procreg_backend *b,
                                                 const char *ns,
                                                 const char *meta_key,
                                                 GVariant *value, GArray *out,
                                                 GError **error);
PROCREG_API int procreg_backend_memory_usage(procreg_backend *b,
                                             size_t *bytes);
PROCREG_API void procreg_backend_stats(procreg_backend *b, GVariantDict *out);

/* History: whether the backend serves procreg_subscribe_from() from a
 * history of its own (both version-4 slots set, HISTORY and ORDERED_EVENTS
 * on this instance); the two calls answer PROCREG_ENOTSUP when not. */
PROCREG_API bool procreg_backend_has_history(const procreg_backend *b);
PROCREG_API int procreg_backend_history_head(procreg_backend *b,
                                             uint64_t *out, GError **error);
PROCREG_API int procreg_backend_history_read(procreg_backend *b,
                                             const char *ns, uint64_t after,
                                             GArray *out, uint64_t *head,
                                             GError **error);

/* Groups: PROCREG_ENOTSUP when the backend has no groups (a version 1 or
 * 2 table, or no PROCREG_CAP_GROUPS).  group_dispatch takes no lock around
 * the slot (see the slot); its fallback reads the members under the lock
 * and calls @fn after releasing it. */
PROCREG_API bool procreg_backend_has_groups(const procreg_backend *b);
PROCREG_API int procreg_backend_group_join(procreg_backend *b,
                                           const procreg_key *key,
                                           const procreg_record *record,
                                           procreg_member *joined,
                                           GError **error);
PROCREG_API int procreg_backend_group_leave(procreg_backend *b,
                                            const procreg_key *key,
                                            uint64_t member_id,
                                            const procreg_owner *owner,
                                            procreg_event_reason reason,
                                            GArray *removed, GError **error);
PROCREG_API int procreg_backend_group_members(procreg_backend *b,
                                              const procreg_key *key,
                                              GArray *out, GError **error);
PROCREG_API int procreg_backend_group_list_all(procreg_backend *b,
                                               const char *ns, GArray *out,
                                               GError **error);
PROCREG_API int procreg_backend_group_count(procreg_backend *b,
                                            const procreg_key *key,
                                            size_t *out, GError **error);
PROCREG_API int procreg_backend_group_list(procreg_backend *b, const char *ns,
                                           GArray *out, GError **error);
PROCREG_API int procreg_backend_group_dispatch(procreg_backend *b,
                                               const procreg_key *key,
                                               procreg_member_fn fn,
                                               gpointer user_data,
                                               size_t *visited,
                                               GError **error);
PROCREG_API int procreg_backend_group_pick(procreg_backend *b,
                                           const procreg_key *key,
                                           bool round_robin, uint64_t arg,
                                           procreg_member *out,
                                           GError **error);
PROCREG_API int procreg_backend_group_find(procreg_backend *b, const char *ns,
                                           const char *group,
                                           const char *meta_key,
                                           GVariant *value, GArray *out,
                                           GError **error);
PROCREG_API int procreg_backend_group_member(procreg_backend *b,
                                             const procreg_key *key,
                                             uint64_t member_id,
                                             procreg_member *out,
                                             GError **error);

/* ------------------------------------------------------------------------ */
/* Helpers for backend authors                                              */

/** A new GArray of procreg_entry that clears its elements when freed. */
PROCREG_API GArray *procreg_entry_array_new(void);

/** A new GArray of procreg_namespace_info that frees their ns when freed. */
PROCREG_API GArray *procreg_namespace_array_new(void);

/** A new GArray of procreg_member that clears its elements when freed. */
PROCREG_API GArray *procreg_member_array_new(void);

/** A new GArray of procreg_group_info that frees their names when freed. */
PROCREG_API GArray *procreg_group_info_array_new(void);

/** For group_leave: set @error (if not NULL) to PROCREG_EPERM saying that
 *  member @member_id of group @key belongs to @holder; returns
 *  PROCREG_EPERM. */
PROCREG_API int procreg_set_member_owner_error(GError **error,
                                               const procreg_key *key,
                                               uint64_t member_id,
                                               const procreg_owner *holder);

/** Set @error (if not NULL) to @code with a printf message; returns @code. */
PROCREG_API int procreg_set_error(GError **error, int code, const char *fmt,
                                  ...) G_GNUC_PRINTF(3, 4);

/** Whether @value is a metadata value find_by_metadata can match on
 *  (string, boolean or an integer type). */
PROCREG_API bool procreg_metadata_value_indexable(GVariant *value);

/** Whether @a and @b are equal find_by_metadata values: same class
 *  (string, boolean, integer) and equal; integers of different widths
 *  compare by value. */
PROCREG_API bool procreg_metadata_value_equal(GVariant *a, GVariant *b);

G_END_DECLS

#endif /* PROCREG_BACKEND_H */
