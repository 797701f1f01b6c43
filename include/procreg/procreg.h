/*
 * procreg — register, find and watch named services and the processes
 * that own them, over pluggable storage.
 *
 * Conventions (they hold for every function below unless it says otherwise):
 *
 *  - Every function is safe to call from any thread on the same registry.
 *  - Fallible calls return 0 or a negative PROCREG_E* code, and take an
 *    optional `GError **error` that receives the same code (domain
 *    PROCREG_ERROR) with a message.  Pass NULL when the code is enough: a
 *    lookup miss with error == NULL allocates nothing.
 *  - Out-parameters are owned by the caller and released with the matching
 *    *_clear / *_free function.  Input pointers are borrowed for the call.
 *  - A key is (namespace, name): both non-empty UTF-8 of at most 255 bytes
 *    without control characters.  PROCREG_NS_PRODUCTION is the default
 *    namespace.
 *  - Each operation has a string form (namespace, name) and a key form that
 *    takes a prepared procreg_key, which is validated and hashed once.
 *    The key form is the complete one (it carries every parameter); the
 *    string form is a convenience over it.
 *
 * Index (the sections below, in order; doc/ explains each at length):
 *
 *   Errors, Errors as data   codes, messages, the facts of a failure as data
 *                            (procreg_error_get_details())
 *   Owners                   a process: pid + start time (procreg_owner_*)
 *   Prepared keys            procreg_key: validated and hashed once
 *   Entries                  what a lookup returns (procreg_entry)
 *   Events                   kinds and reasons of changes
 *   Opening a registry       procreg_open() and backend specs
 *                            (doc/getting-started.md, doc/backends.md)
 *   Operations               register, lookup, unregister, update, list,
 *                            count, find
 *   Select                   entries by predicates: filters in C and as
 *                            text (doc/coordination.md)
 *   Health and stats         procreg_health_check(), procreg_stats()
 *   Service layer            the same over every backend (doc/service.md):
 *     operations             the operation kinds telemetry counts
 *     owner liveness         a dead owner's entries go (procreg_list_owned())
 *     events                 procreg_subscribe() and friends
 *     waiting                procreg_wait_for()
 *     locks by name          procreg_lock(), procreg_unlock()
 *                            (doc/coordination.md)
 *     start once             procreg_start_once() (doc/coordination.md)
 *     namespaces             test namespaces, drop, list
 *     namespace settings     procreg_namespace_meta_*() (doc/coordination.md)
 *     service health         procreg_service_check()
 *     telemetry              per-operation callbacks and histograms
 *     statistics export      Prometheus text, JSON (procreg_stats_to_json())
 *   Groups                   duplicate keys: join, leave, members, dispatch
 *                            (doc/groups.md)
 *
 * Backends are written against <procreg/backend.h> (doc/backends.md); the
 * GObject types for bindings are in <procreg/gtypes.h> (doc/python.md).
 */
#ifndef PROCREG_PROCREG_H
#define PROCREG_PROCREG_H

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

G_BEGIN_DECLS

#if defined(PROCREG_COMPILATION)
#define PROCREG_API __attribute__((visibility("default")))
#else
#define PROCREG_API
#endif

#define PROCREG_VERSION_MAJOR 0
#define PROCREG_VERSION_MINOR 1
#define PROCREG_VERSION_MICRO 0

/** The namespace used when none is given. */
#define PROCREG_NS_PRODUCTION "production"

/** Longest namespace or name, in bytes. */
#define PROCREG_NAME_MAX 255

/**
 * Namespaces that begin with this prefix hold procreg's own records: lock
 * tickets and start claims ("procreg:lock:NS", "procreg:start:NS") and
 * namespace settings ("procreg:meta:NS").  They can be read, listed and
 * watched like any other, but procreg_register() and
 * procreg_namespace_drop() refuse them (PROCREG_EINVAL), so no entry of an
 * application ever clashes with a lock.
 */
#define PROCREG_NS_RESERVED_PREFIX "procreg:"

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

/**
 * Result codes.  0 is success; failures are negative.  The same value is
 * the `code` of a GError in the PROCREG_ERROR domain.
 */
typedef enum procreg_error_code {
    PROCREG_OK = 0,
    PROCREG_ERROR_FAILED = -1, /**< Unclassified failure. */
    PROCREG_EINVAL = -2,       /**< Invalid argument: name, metadata, spec. */
    PROCREG_ENOTFOUND = -3,    /**< No such entry. */
    PROCREG_EEXISTS = -4,      /**< The key is already registered. */
    PROCREG_ENOTALIVE = -5,    /**< The owner process is not alive. */
    PROCREG_ENOMEM = -6,       /**< Out of memory. */
    PROCREG_ENOTSUP = -7,      /**< The backend cannot do this. */
    PROCREG_ETIMEDOUT = -8,    /**< A wait or a request timed out. */
    PROCREG_ECANCELLED = -9,   /**< Cancelled by a GCancellable. */
    PROCREG_ECONFLICT = -10,   /**< The entry changed since the revision given. */
    PROCREG_EFULL = -11,       /**< Storage or a capacity limit is exhausted. */
    PROCREG_EBACKEND = -12,    /**< The backend failed (I/O, unreachable, corrupt). */
    PROCREG_EUNKNOWN_BACKEND = -13, /**< No backend of that name. */
    PROCREG_EPERM = -14,       /**< The entry belongs to another process. */
    PROCREG_ECOMPACTED = -15,  /**< The history asked for is no longer kept. */
} procreg_error_code;

/** GError domain for every procreg error; codes are procreg_error_code. */
#define PROCREG_ERROR (procreg_error_quark())
PROCREG_API GQuark procreg_error_quark(void);

/**
 * A static English description of @code ("not found", ...).
 * Never NULL; unknown codes give "unknown error".  Thread-safe.
 */
PROCREG_API const char *procreg_strerror(int code);

/**
 * The name of @code as it is spelt in this header ("PROCREG_ENOTFOUND",
 * ...), for logs and machine-readable output; NULL for codes that are not
 * procreg's.  Thread-safe.
 */
PROCREG_API const char *procreg_error_name(int code);

/* ------------------------------------------------------------------------ */
/* Owners                                                                   */

/**
 * The process that owns an entry.  `start_time` tells a reused pid apart:
 * it is the process start time in clock ticks after boot (field 22 of
 * /proc/PID/stat), or 0 where it is unknown.
 */
typedef struct procreg_owner {
    pid_t pid;
    uint64_t start_time;
} procreg_owner;

/** Fill @out with the calling process.  Cannot fail. Thread-safe. */
PROCREG_API void procreg_owner_self(procreg_owner *out);

/**
 * Fill @out with the live process @pid and its start time.  A process
 * that exists but whose /proc/PID/stat the caller cannot read (another
 * user's, with /proc mounted hidepid=1 or 2) gets start_time 0: an owner
 * known by its pid alone, which procreg_owner_is_alive() checks for
 * existence only (a later reuse of the pid is not told apart).  Thread-safe.
 * @return 0, PROCREG_EINVAL (pid <= 0) or PROCREG_ENOTALIVE.
 */
PROCREG_API int procreg_owner_from_pid(pid_t pid, procreg_owner *out,
                                       GError **error);

/**
 * Whether @owner is alive: the pid exists and, when start_time is known,
 * it is still the same process (not a reused pid).  A process whose
 * /proc/PID/stat the caller cannot read (hidepid) counts as alive while
 * kill(pid, 0) finds it: its start time cannot be compared then, so a
 * reused pid, or a zombie not yet reaped, passes for the owner.
 * Thread-safe.
 */
PROCREG_API bool procreg_owner_is_alive(const procreg_owner *owner);

/* ------------------------------------------------------------------------ */
/* Prepared keys                                                            */

/**
 * A (namespace, name) pair validated and hashed once.  Immutable and
 * reference counted: share it between threads freely.  The hot path of a
 * service that looks up the same peers again and again uses these.
 */
typedef struct procreg_key procreg_key;

/**
 * Make a key.  @ns may be NULL for PROCREG_NS_PRODUCTION.
 * @param[out] out  a new key; release with procreg_key_unref().
 * @return 0, PROCREG_EINVAL (the message names the rule that failed) or
 *         PROCREG_ENOMEM.
 */
PROCREG_API int procreg_key_new(const char *ns, const char *name,
                                procreg_key **out, GError **error);
/** Take a reference. Returns @key. */
PROCREG_API procreg_key *procreg_key_ref(procreg_key *key);
/** Drop a reference; NULL is ignored. */
PROCREG_API void procreg_key_unref(procreg_key *key);
/** The namespace; valid while the key is. */
PROCREG_API const char *procreg_key_namespace(const procreg_key *key);
/** The name; valid while the key is. */
PROCREG_API const char *procreg_key_name(const procreg_key *key);

/**
 * Check one namespace or name against the rules above without making a
 * key.  @what is used in the message ("namespace", "name").
 * @return 0 or PROCREG_EINVAL.
 */
PROCREG_API int procreg_validate_name(const char *s, const char *what,
                                      GError **error);

/* ------------------------------------------------------------------------ */
/* Entries                                                                  */

/**
 * One registration as returned to callers.  Everything in it is owned by
 * the caller: release with procreg_entry_clear() (a single entry) or
 * procreg_entries_free() (an array).
 */
typedef struct procreg_entry {
    char *ns;              /**< Namespace; NULL from single-key calls. */
    char *name;            /**< Name; NULL from single-key calls. */
    procreg_owner owner;   /**< The owner process. */
    GVariant *metadata;    /**< A reference to a{sv} metadata, or NULL. */
    int64_t registered_at; /**< Wall-clock registration time, µs since epoch. */
    uint64_t revision;     /**< Increases on every change of this key. */
} procreg_entry;

/** Release what @entry holds and zero it.  NULL is ignored. */
PROCREG_API void procreg_entry_clear(procreg_entry *entry);
/** Clear @n entries and free the array. NULL is ignored. */
PROCREG_API void procreg_entries_free(procreg_entry *entries, size_t n);

/**
 * One member of a group (see "Groups" below), as returned to callers.
 * Everything in it is owned by the caller, except where a call says it
 * lends one (procreg_dispatch()): release with procreg_member_clear() or
 * procreg_members_free().
 */
typedef struct {
    char *ns;         /**< Namespace; NULL from calls on one group. */
    char *group;      /**< Group name; NULL from calls on one group. */
    uint64_t id;      /**< The member id: the revision of its join, unique
                           among the members of the backend (all processes
                           of a shared one), never reused. */
    procreg_owner owner;   /**< The owner process. */
    GVariant *metadata;    /**< A reference to a{sv} metadata, or NULL. */
    int64_t joined_at;     /**< Wall-clock join time, µs since the epoch. */
} procreg_member;

/** Release what @member holds and zero it.  NULL is ignored. */
PROCREG_API void procreg_member_clear(procreg_member *member);
/** Clear @n members and free the array.  NULL is ignored. */
PROCREG_API void procreg_members_free(procreg_member *members, size_t n);

/* ------------------------------------------------------------------------ */
/* Errors as data                                                           */

/**
 * The facts a failed call knows, as data, so that a program need not parse
 * the message: what the GError of a failed call carries besides its text.
 * Every field may be empty; a call that passes no GError builds none of it.
 */
typedef struct procreg_error_details {
    /** What exists instead, NULL-terminated, or NULL: on PROCREG_ENOTFOUND
     *  up to five names the namespace holds (none: it is empty, an empty
     *  array); on PROCREG_EUNKNOWN_BACKEND the backends there are; on an
     *  unknown spec option the options the backend accepts. */
    char **alternatives;
    /** On PROCREG_EEXISTS the entry that holds the key; on PROCREG_EPERM
     *  the entry the caller may not change (its owner is the one who
     *  may), or for a group's member that entry's view of it (name: the
     *  group, revision: the member id); ns and name set.  NULL
     *  otherwise. */
    procreg_entry *entry;
    /** On PROCREG_EINVAL from a spec: the byte offset in the spec text
     *  where it goes wrong; -1 otherwise. */
    int position;
} procreg_error_details;

/**
 * The details of @error, a GError of the PROCREG_ERROR domain; NULL for
 * NULL or another domain.  Borrowed: valid as long as @error (they are
 * copied with it by g_error_copy() and freed with it).  Thread-safe.
 */
PROCREG_API const procreg_error_details *
procreg_error_get_details(const GError *error);

/* ------------------------------------------------------------------------ */
/* Events (delivered by the service layer; see procreg_subscribe())         */

/** What happened to a key. */
typedef enum procreg_event_kind {
    PROCREG_EVENT_REGISTERED = 1,
    PROCREG_EVENT_UNREGISTERED = 2,
    PROCREG_EVENT_UPDATED = 3, /**< Metadata changed. */
    PROCREG_EVENT_JOINED = 4,  /**< A member joined a group (see Groups). */
    PROCREG_EVENT_LEFT = 5,    /**< A member left a group; the reason says
                                    why, as for UNREGISTERED. */
} procreg_event_kind;

/** Why an entry went away (PROCREG_REASON_NONE for other events). */
typedef enum procreg_event_reason {
    PROCREG_REASON_NONE = 0,
    PROCREG_REASON_EXPLICIT = 1,          /**< Someone unregistered it. */
    PROCREG_REASON_OWNER_EXITED = 2,      /**< Its owner process died. */
    PROCREG_REASON_NAMESPACE_DROPPED = 3, /**< Its namespace was dropped. */
    PROCREG_REASON_REPLACED = 4,          /**< Another registration took the key. */
    PROCREG_REASON_EXPIRED = 5,           /**< A lease or TTL ran out. */
    PROCREG_REASON_FORCED = 6, /**< Another process removed or changed it
                                    with PROCREG_FORCE. */
} procreg_event_reason;

/* ------------------------------------------------------------------------ */
/* Opening a registry                                                       */

typedef struct procreg procreg;

/**
 * Open a registry from a backend spec: `NAME[:OPT=VALUE[,OPT=VALUE...]]`.
 * A value may be wrapped in [brackets] to hold commas and nested specs,
 * e.g. `optimized:inner=[lmdb:path=/run/x.mdb,map_size=64MiB],ttl_ms=250`;
 * a backslash escapes the next character.
 *
 * @param spec  NULL (or "") means the PROCREG_BACKEND environment variable, else
 *              the default backend (the first one procreg_backend_names()
 *              lists).
 * @param[out] out  the registry; close with procreg_close().
 * @return 0, PROCREG_EINVAL (malformed spec, unknown or bad option: the
 *         message lists the accepted options), PROCREG_EUNKNOWN_BACKEND
 *         (the message lists the available backends), or what the backend
 *         reports when it fails to start (PROCREG_EBACKEND, ...).
 */
PROCREG_API int procreg_open(const char *spec, procreg **out, GError **error);

/**
 * Close @reg and free everything it holds.  No other call on @reg may be
 * running or follow.  NULL is ignored.
 * A registry belongs to the process that opened it: after fork() the
 * child must not use it (open its own); procreg_close() called in the
 * child returns without touching it.
 */
PROCREG_API void procreg_close(procreg *reg);

/** The spec @reg was opened with, normalised, the value of any option
 *  named "password" (nested specs too) shown as "***".  Valid until close. */
PROCREG_API const char *procreg_get_spec(const procreg *reg);

/**
 * NULL-terminated list of the backends available now, built-in first and
 * then those registered by the application.  Free with g_strfreev().
 */
PROCREG_API char **procreg_backend_names(void);

/* ------------------------------------------------------------------------ */
/* Operations                                                               */

/**
 * Register (ns, name) for @owner (NULL: the calling process) with
 * @metadata (NULL or a{sv}; a floating reference is sunk, otherwise the
 * registry takes its own reference).
 *
 * Keys are unique: when the key is taken, nothing changes and the current
 * entry is returned, so two callers starting the same service get one
 * winner and the loser learns who won ("already started").  A holder that
 * has died never blocks its key: when the key is held by a process of
 * this host that is no longer alive (pid and start time), even one that
 * died a moment ago and that the monitor has not yet seen, its entry is
 * removed (an UNREGISTERED event, reason PROCREG_REASON_OWNER_EXITED,
 * once) and the key is registered.  On a distributed backend the backend
 * does this check for owners of its own host, and the lease for others.
 *
 * @param[out] current  optional: on success the new entry, on
 *             PROCREG_EEXISTS the entry that holds the key.
 * @return 0, PROCREG_EINVAL (bad key, a reserved namespace
 *         (PROCREG_NS_RESERVED_PREFIX), or metadata that is not a{sv}),
 *         PROCREG_ENOTALIVE (the owner is not a live process; when it
 *         dies during the call, its entry may have been stored and is
 *         taken back before the call returns: readers may see it
 *         meanwhile, as they may see any dead owner's entry until it is
 *         reaped, and no event is sent for it),
 *         PROCREG_EEXISTS, PROCREG_EFULL, PROCREG_ENOMEM, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_register(procreg *reg, const char *ns,
                                 const char *name, const procreg_owner *owner,
                                 GVariant *metadata, procreg_entry *current,
                                 GError **error);
PROCREG_API int procreg_register_key(procreg *reg, const procreg_key *key,
                                     const procreg_owner *owner,
                                     GVariant *metadata,
                                     procreg_entry *current, GError **error);

/**
 * The hot path: the owner of (ns, name).
 * @return 0, PROCREG_ENOTFOUND (with @error, the message names the
 *         namespace and a few names that do exist there), PROCREG_EINVAL,
 *         PROCREG_EBACKEND.
 */
PROCREG_API int procreg_lookup(procreg *reg, const char *ns, const char *name,
                               procreg_owner *out, GError **error);
PROCREG_API int procreg_lookup_key(procreg *reg, const procreg_key *key,
                                   procreg_owner *out, GError **error);

/**
 * The whole entry of (ns, name), with a reference to its metadata that
 * stays valid however long the caller holds it, even if the entry is
 * unregistered meanwhile.  @out->ns and @out->name are left NULL.
 * @return as procreg_lookup().
 */
PROCREG_API int procreg_lookup_entry(procreg *reg, const char *ns,
                                     const char *name, procreg_entry *out,
                                     GError **error);
PROCREG_API int procreg_lookup_entry_key(procreg *reg, const procreg_key *key,
                                         procreg_entry *out, GError **error);

/*
 * Only the owner changes an entry.  Unregister and update succeed only when
 * the calling process is the entry's owner: the owner stored at register
 * (the registering process by default, or the live process it named).  A
 * process that registered an entry on another's behalf (a supervisor,
 * `procreg register --pid`) does not own it.  Anyone else gets
 * PROCREG_EPERM, with a message naming the owner, and nothing changes.
 * An operator or supervisor that must remove or change another process's
 * entry says so with PROCREG_FORCE (procreg_unregister_full(),
 * procreg_update_metadata_full(); the CLI's --force), and the event then
 * carries PROCREG_REASON_FORCED.  The entries of a dead owner are removed
 * by the registry itself (PROCREG_REASON_OWNER_EXITED); until then, for
 * an entry registered through this registry on a backend whose owners
 * live on this host (all but etcd), a write of one by another process
 * answers PROCREG_ENOTFOUND, as reads do from then on, not PROCREG_EPERM
 * naming the dead owner (an entry another process of a shared backend
 * wrote is answered as that backend's reads show it);
 * procreg_namespace_drop() removes every entry of a namespace whoever owns
 * it.
 */

/** Flags of the _full write calls. */
typedef enum procreg_write_flags {
    PROCREG_WRITE_DEFAULT = 0,
    /** Change the entry even when another process owns it.  The event's
     *  reason is PROCREG_REASON_FORCED when it did. */
    PROCREG_FORCE = 1u << 0,
} procreg_write_flags;

/**
 * Remove (ns, name), which the calling process must own.
 * The key form removes it only while its revision is still @if_revision
 * (0: whatever it is), so a caller cannot remove an entry that was
 * replaced since it looked.
 * @return 0, PROCREG_ENOTFOUND, PROCREG_EPERM (another process owns it),
 *         PROCREG_ECONFLICT, PROCREG_EINVAL, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_unregister(procreg *reg, const char *ns,
                                   const char *name, GError **error);
PROCREG_API int procreg_unregister_key(procreg *reg, const procreg_key *key,
                                       uint64_t if_revision, GError **error);
/**
 * procreg_unregister_key() with @flags (procreg_write_flags): with
 * PROCREG_FORCE the entry is removed whoever owns it.
 * @return as procreg_unregister_key(); PROCREG_EINVAL for unknown flags.
 */
PROCREG_API int procreg_unregister_full(procreg *reg, const procreg_key *key,
                                        uint64_t if_revision, unsigned flags,
                                        GError **error);

/** How update_metadata combines the new metadata with the old. */
typedef enum procreg_update_mode {
    PROCREG_UPDATE_REPLACE = 0, /**< The new dictionary replaces the old. */
    PROCREG_UPDATE_MERGE = 1,   /**< New keys are added, equal keys win;
                                     merging NULL keeps the metadata. */
} procreg_update_mode;

/**
 * Change the metadata of (ns, name), which the calling process must own;
 * the revision increases.
 * @metadata: a{sv} or NULL (REPLACE with NULL removes the metadata);
 * floating references are sunk.  With @if_revision != 0 the update happens
 * only while the entry is still at that revision.
 * @param[out] revision  optional: the new revision.
 * @return 0, PROCREG_ENOTFOUND, PROCREG_EPERM (another process owns it),
 *         PROCREG_ECONFLICT, PROCREG_EINVAL, PROCREG_ENOMEM,
 *         PROCREG_EBACKEND.
 */
PROCREG_API int procreg_update_metadata(procreg *reg, const char *ns,
                                        const char *name, GVariant *metadata,
                                        procreg_update_mode mode,
                                        GError **error);
PROCREG_API int procreg_update_metadata_key(procreg *reg,
                                            const procreg_key *key,
                                            GVariant *metadata,
                                            procreg_update_mode mode,
                                            uint64_t if_revision,
                                            uint64_t *revision,
                                            GError **error);
/**
 * procreg_update_metadata_key() with @flags (procreg_write_flags): with
 * PROCREG_FORCE the entry is changed whoever owns it.
 * @return as procreg_update_metadata_key(); PROCREG_EINVAL for unknown
 *         flags.
 */
PROCREG_API int procreg_update_metadata_full(procreg *reg,
                                             const procreg_key *key,
                                             GVariant *metadata,
                                             procreg_update_mode mode,
                                             uint64_t if_revision,
                                             unsigned flags,
                                             uint64_t *revision,
                                             GError **error);

/**
 * Every entry of namespace @ns (NULL: of all namespaces), sorted by
 * namespace then name.
 * @param[out] out    a new array of @n_out entries (NULL when empty);
 *                    free with procreg_entries_free().
 * @return 0, PROCREG_EINVAL, PROCREG_ENOMEM, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_list(procreg *reg, const char *ns, procreg_entry **out,
                             size_t *n_out, GError **error);

/**
 * Number of entries in @ns (NULL: all).
 * @return 0, PROCREG_EINVAL, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_count(procreg *reg, const char *ns, size_t *out,
                              GError **error);

/**
 * Entries of @ns (NULL: all namespaces) whose metadata maps @meta_key to a
 * value equal to @value: a string, a boolean or an integer (integers of
 * any width compare by value).  Answered by the backend's index when it
 * has one, by a scan otherwise, with the same result; sorted as
 * procreg_list() sorts.
 * @param[out] out  a new array of @n_out entries; procreg_entries_free().
 * @return 0, PROCREG_EINVAL (bad namespace, empty key, or a value of
 *         another type), PROCREG_ENOMEM, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_find(procreg *reg, const char *ns,
                             const char *meta_key, GVariant *value,
                             procreg_entry **out, size_t *n_out,
                             GError **error);
/** How many entries procreg_find() would return. */
PROCREG_API int procreg_find_count(procreg *reg, const char *ns,
                                   const char *meta_key, GVariant *value,
                                   size_t *out, GError **error);

/* ------------------------------------------------------------------------ */
/* Select: entries by predicates                                            */

/*
 * A filter is a predicate over entries, built in C or written as text:
 *
 *     role == "api" and port >= 8000
 *     name startswith "web-" and not exists draining
 *     (zone == "a" or zone == "b") and pid != 4242 and meta["load avg"] < 0.5
 *
 * Terms:
 *  - name OP "text": the entry's name; OP is ==, !=, <, <=, >, >= (bytewise),
 *    startswith (a prefix) or glob ('*' any run, '?' any one character);
 *  - pid OP INTEGER: the owner's pid (==, !=, <, <=, >, >=);
 *  - KEY OP VALUE: metadata key KEY (an identifier of letters, digits, '_',
 *    '.', '-' that is no keyword, or meta["any text"]); VALUE is a string
 *    ("..." with \" \\ \/ \n \t \r \uXXXX), an integer, a double
 *    (with '.' or an exponent), true or false;
 *  - exists KEY: the metadata has KEY, whatever its type.
 * combined with and, or, not and parentheses (not binds tightest, then
 * and, then or).
 *
 * Comparisons: a metadata value is a string (GVariant s, o, g), a boolean,
 * an integer (any width, compared by value) or a double; other types match
 * no comparison.  == and != need the same class, as procreg_find() does:
 * the integer 3 never equals the double 3.0.  <, <=, >, >= order numbers
 * (integers and doubles together, by value) and strings (bytewise);
 * booleans only take == and !=; startswith and glob take strings.  A term
 * on a key the entry lacks, or of another class, is false — != included:
 * `not role == "api"` also matches entries without a role.
 */

/** Comparison operators of filter terms. */
typedef enum {
    PROCREG_FILTER_EQ = 0,     /**< == */
    PROCREG_FILTER_NE = 1,     /**< != */
    PROCREG_FILTER_LT = 2,     /**< < */
    PROCREG_FILTER_LE = 3,     /**< <= */
    PROCREG_FILTER_GT = 4,     /**< > */
    PROCREG_FILTER_GE = 5,     /**< >= */
    PROCREG_FILTER_PREFIX = 6, /**< startswith: a string prefix */
    PROCREG_FILTER_GLOB = 7,   /**< glob: '*' and '?' (names, strings) */
} procreg_filter_op;

/** How deep filters nest at most (and/or/not levels, parentheses). */
#define PROCREG_FILTER_DEPTH_MAX 256

/** A filter: immutable, reference counted, shared freely between
 *  threads.  Every function below that makes one returns a new reference
 *  (release it with procreg_filter_unref()). */
typedef struct procreg_filter procreg_filter;

/**
 * Parse @text (UTF-8).  Thread-safe.
 * @return 0 or PROCREG_EINVAL; with @error, the message says where and
 *         what was expected ("filter: at byte 12: found 'and'; expected a
 *         string, a number, true, false"), and procreg_error_get_details()
 *         has the byte offset (position) and what the parser expected there
 *         (alternatives).
 */
PROCREG_API int procreg_filter_parse(const char *text, procreg_filter **out,
                                     GError **error);
/** A term on the name: @text is the string, the prefix or the glob.
 *  @return 0 or PROCREG_EINVAL (unknown @op, @text NULL or not UTF-8). */
PROCREG_API int procreg_filter_new_name(procreg_filter_op op, const char *text,
                                        procreg_filter **out, GError **error);
/** A term on the owner's pid.  @return 0 or PROCREG_EINVAL (startswith,
 *  glob or an unknown @op). */
PROCREG_API int procreg_filter_new_pid(procreg_filter_op op, int64_t pid,
                                       procreg_filter **out, GError **error);
/**
 * A term on metadata @key.  @value: a string, a boolean, an integer of any
 * width or a finite double (a floating reference is sunk; the value is
 * copied).
 * @return 0 or PROCREG_EINVAL (empty or non-UTF-8 key, another type, a
 *         boolean with an ordering, startswith/glob without a string).
 */
PROCREG_API int procreg_filter_new_meta(const char *key, procreg_filter_op op,
                                        GVariant *value, procreg_filter **out,
                                        GError **error);
/** A term: metadata @key exists.  @return 0 or PROCREG_EINVAL. */
PROCREG_API int procreg_filter_new_exists(const char *key,
                                          procreg_filter **out,
                                          GError **error);
/** @a and @b (each referenced, not taken).  @return 0 or PROCREG_EINVAL
 *  (NULL operands, or nested deeper than PROCREG_FILTER_DEPTH_MAX). */
PROCREG_API int procreg_filter_and(procreg_filter *a, procreg_filter *b,
                                   procreg_filter **out, GError **error);
/** @a or @b; as procreg_filter_and(). */
PROCREG_API int procreg_filter_or(procreg_filter *a, procreg_filter *b,
                                  procreg_filter **out, GError **error);
/** Not @a; as procreg_filter_and(). */
PROCREG_API int procreg_filter_not(procreg_filter *a, procreg_filter **out,
                                   GError **error);
/** Take a reference.  Returns @filter. */
PROCREG_API procreg_filter *procreg_filter_ref(procreg_filter *filter);
/** Drop a reference; NULL is ignored. */
PROCREG_API void procreg_filter_unref(procreg_filter *filter);
/** @filter as text that procreg_filter_parse() reads back to the same
 *  filter.  g_free() it. */
PROCREG_API char *procreg_filter_to_string(const procreg_filter *filter);
/** Whether @entry matches @filter (name terms need @entry->name). */
PROCREG_API bool procreg_filter_matches(const procreg_filter *filter,
                                        const procreg_entry *entry);

/**
 * The entries of @ns (NULL: every namespace) that match @filter (NULL:
 * all), sorted as procreg_list() sorts.  A backend's metadata index (the
 * optimized backend's) answers an equality term of the filter's top-level
 * "and" (metadata == a string, boolean or integer) and only its hits are
 * checked against the rest; a top-level name == "..." with a namespace is
 * one lookup; anything else is a scan.  The result is the same.  Counted
 * as PROCREG_OP_FIND (or LIST, LOOKUP_ENTRY: what it asked the backend).
 * @param[out] out  a new array of @n_out entries; procreg_entries_free().
 * @return 0, PROCREG_EINVAL (bad namespace), PROCREG_EBACKEND.
 */
PROCREG_API int procreg_select(procreg *reg, const char *ns,
                               const procreg_filter *filter,
                               procreg_entry **out, size_t *n_out,
                               GError **error);
/** How many entries procreg_select() would return. */
PROCREG_API int procreg_select_count(procreg *reg, const char *ns,
                                     const procreg_filter *filter,
                                     size_t *out, GError **error);
/**
 * Unregister the entries of @ns (NULL: every namespace) that match
 * @filter (NULL: all) and that the calling process owns, each only while
 * it is still at the revision it matched at: an entry changed since (or
 * removed meanwhile) is left alone.  Entries of other processes are not
 * touched.
 * @param[out] removed  optional: how many were removed (also on failure:
 *                      the removals before it).
 * @return 0, PROCREG_EINVAL, PROCREG_EBACKEND (the first failure; the
 *         removals before it stand).
 */
PROCREG_API int procreg_unregister_match(procreg *reg, const char *ns,
                                         const procreg_filter *filter,
                                         size_t *removed, GError **error);

/* ------------------------------------------------------------------------ */
/* Health and stats                                                         */

typedef enum procreg_health_status {
    PROCREG_HEALTH_OK = 0,       /**< Everything works. */
    PROCREG_HEALTH_DEGRADED = 1, /**< Works, with a problem worth a look. */
    PROCREG_HEALTH_FAILED = 2,   /**< Does not work. */
} procreg_health_status;

/** A structured health report.  Owned by the caller. */
typedef struct procreg_health {
    procreg_health_status status; /**< Worst of the parts below. */
    char *backend;                /**< Backend name. */
    char *message;                /**< One line for people. */
    GVariant *details;            /**< a{sv}: per-part figures and states. */
} procreg_health;

/**
 * Check the backend and the core.  @out->details holds "backend_status"
 * (s), "backend" (a{sv}), "entries" (t), "monitor" (a{sv}: "running" b,
 * "mode" s "pidfd"/"poll", "owners" t, "owners_polled" t, "dead_pending"
 * t), "events" (a{sv}: "subscribers" t, "queued" t, "dispatcher" b,
 * "waiters" t) and "degraded" (as: the parts that are not OK).  The status
 * is the worst of the backend's and the core's: a monitor thread that is
 * not running, or an event queue backlog over 100000, is DEGRADED.
 * Fills @out; release with procreg_health_clear().  A failing backend is reported in @out (status
 * FAILED), not as an error; the return is 0 or PROCREG_ENOMEM.
 */
PROCREG_API int procreg_health_check(procreg *reg, procreg_health *out,
                                     GError **error);
/** Release what @health holds. NULL is ignored. */
PROCREG_API void procreg_health_clear(procreg_health *health);
/** "ok", "degraded" or "failed". */
PROCREG_API const char *procreg_health_status_name(procreg_health_status s);

/**
 * Statistics as an a{sv} dictionary: "backend" (s), "spec" (s), "entries"
 * (t), "namespaces" (a{st}: entries per namespace), "test_namespaces" (t),
 * "owners" (t: other processes owning entries registered here, which the
 * monitor watches), "operations" (a{st}:
 * calls per operation), "misses" (a{st}: not found, exists, conflict,
 * timed out or cancelled), "errors" (a{st}: every other failure),
 * "latency" (a{sa{st}}: per operation "count", "sum_ns", "max_ns",
 * "p50_ns", "p99_ns" over the timed calls), "memory_bytes" (t, when the
 * backend reports it), "core_memory_bytes" (t), "counter_blocks" (t: the
 * per-thread counter blocks in use), "events" (a{st}),
 * "cleanup" (a{st}), and backend specific figures under "backend_stats"
 * (a{sv}).  See doc/service.md for how the counters are kept.
 * @param[out] out  a new non-floating reference; g_variant_unref() it.
 * @return 0, PROCREG_ENOMEM, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_stats(procreg *reg, GVariant **out, GError **error);

/* ======================================================================== */
/* Service layer.  Everything below works the same over every backend: it   */
/* lives in the core (core/events.c, liveness.c, namespaces.c, health.c,    */
/* telemetry.c, stats.c).  doc/service.md has examples.                     */
/* ======================================================================== */

/* ------------------------------------------------------------------------ */
/* Service layer: operations (shared by telemetry and stats)                */

/** The operations the core counts, times and reports to telemetry. */
typedef enum {
    PROCREG_OP_LOOKUP = 0,         /**< procreg_lookup*() */
    PROCREG_OP_LOOKUP_ENTRY = 1,   /**< procreg_lookup_entry*() */
    PROCREG_OP_REGISTER = 2,       /**< procreg_register*() */
    PROCREG_OP_UNREGISTER = 3,     /**< procreg_unregister*() */
    PROCREG_OP_UPDATE = 4,         /**< procreg_update_metadata*() */
    PROCREG_OP_LIST = 5,           /**< procreg_list(), _count(), _list_owned() */
    PROCREG_OP_FIND = 6,           /**< procreg_find*(), a select's index query */
    PROCREG_OP_DROP_NAMESPACE = 7, /**< procreg_namespace_drop() */
    PROCREG_OP_CLEANUP = 8,        /**< an entry removed because its owner exited */
    PROCREG_OP_WAIT = 9,           /**< procreg_wait_for*(), procreg_wait_members*() */
    PROCREG_OP_JOIN = 10,          /**< procreg_join*() */
    PROCREG_OP_LEAVE = 11,         /**< procreg_leave*() */
    PROCREG_OP_MEMBERS = 12,       /**< procreg_members*(), _group_count*(),
                                        _groups(), _memberships(),
                                        _find_members(), _pick_member*() */
    PROCREG_OP_DISPATCH = 13,      /**< procreg_dispatch*() */
    PROCREG_OP_COUNT = 14          /**< number of operations, not one */
} procreg_op;

/** Bit of @op in a telemetry mask. */
#define PROCREG_OP_BIT(op) (1u << (op))
/** Every operation. */
#define PROCREG_OP_ALL ((1u << PROCREG_OP_COUNT) - 1u)

/** "lookup", "register", ... (static); "unknown" for other values. */
PROCREG_API const char *procreg_op_name(procreg_op op);

/* ------------------------------------------------------------------------ */
/* Service layer: owner liveness                                            */

/*
 * Every entry registered through a registry is bound to its owner process
 * (the caller, or the live pid given; a dead pid is refused with
 * PROCREG_ENOTALIVE, and a pid whose start time differs from the one given
 * is a reused pid, also refused).  A monitor thread per registry watches
 * each owner once, whatever the number of its entries (a pidfd in an epoll
 * set; /proc polling every 50 ms where pidfd_open() is unavailable, or for
 * owners beyond the descriptor limit, or when the environment variable
 * PROCREG_MONITOR=poll is set), and when an owner exits it removes each of
 * its entries through the backend, with an UNREGISTERED event of reason
 * PROCREG_REASON_OWNER_EXITED, normally within a few milliseconds.  From
 * the moment the monitor sees the exit until the entries are gone, lookups
 * of them answer PROCREG_ENOTFOUND.  Reads agree on an exit: once a read
 * has left a dead owner's entry out (a list may find the exit before the
 * monitor does), no later read shows it.
 *
 * Entries that other processes registered in a shared backend are the
 * backend's to reap; the monitor covers entries registered through this
 * registry.
 */

/**
 * The entries owned by process @pid that were registered through @reg and
 * are still registered, sorted by namespace then name, with ns and name
 * set.  The cost is proportional to that owner's entries.
 * @param[out] out  a new array of @n_out entries (NULL when none); free
 *                  with procreg_entries_free().
 * @return 0, PROCREG_EINVAL (pid <= 0), PROCREG_EBACKEND.
 */
PROCREG_API int procreg_list_owned(procreg *reg, pid_t pid,
                                   procreg_entry **out, size_t *n_out,
                                   GError **error);

/* ------------------------------------------------------------------------ */
/* Service layer: events                                                    */

/** One change, as a subscriber sees it.  Everything is borrowed for the
 *  duration of the callback. */
typedef struct procreg_event {
    /** Per registry, from 1, without gaps: a subscriber to everything sees
     *  consecutive numbers (numbering starts with the first subscription).
     *  0 for a change replayed from the backend's history
     *  (procreg_subscribe_from()). */
    uint64_t seq;
    procreg_event_kind kind;
    /** Set on every UNREGISTERED event; on UPDATED, PROCREG_REASON_FORCED
     *  when another process forced the change; PROCREG_REASON_NONE
     *  otherwise. */
    procreg_event_reason reason;
    const char *ns;
    const char *name;
    /** REGISTERED / UPDATED: the new entry; UNREGISTERED: the removed one.
     *  ns and name are set. */
    const procreg_entry *entry;
    int64_t time;  /**< When the core saw the change, µs since the epoch. */
    bool external; /**< Reported by the backend (made in another process or
                        host), not made through this registry.  A dead
                        owner's removal (PROCREG_REASON_OWNER_EXITED) is
                        never external: no process made it, and every
                        registry reports it alike, whoever reaped it. */
    /** JOINED / LEFT: the member (ns and group set); NULL for the other
     *  kinds.  For those events @name is the group and @entry describes
     *  the member too (revision: the member id; registered_at: the join
     *  time), for subscribers that only read entries. */
    const procreg_member *member;
    /** The change's place in the registry's history, increasing in commit
     *  order: remember the last one handled to resume with
     *  procreg_subscribe_from().  Where the backend keeps a history (lmdb:
     *  its change log; etcd: revision << 20 | index) it is the backend's and
     *  means the same to every process; otherwise it is this registry's
     *  @seq. */
    uint64_t position;
} procreg_event;

/** An event callback.  It may call @reg (including procreg_unsubscribe()
 *  of its own subscription), but not procreg_close(). */
typedef void (*procreg_event_fn)(procreg *reg, const procreg_event *event,
                                 gpointer user_data);

/**
 * Subscribe to changes of one key (@ns and @name), one namespace (@name
 * NULL) or everything (@ns and @name NULL; a @name without @ns is
 * PROCREG_EINVAL).  A key subscription sees the events of that unique
 * entry only; namespace and everything subscriptions also see the groups'
 * JOINED and LEFT events (procreg_subscribe_group() follows one group).
 *
 * Events come in sequence order, only those the registry learns of after
 * this call returned: every change made through it afterwards, and every
 * change another process or host reports afterwards, which may include
 * one committed a moment before this call that had not reached the
 * registry yet.  To follow a namespace without a gap, subscribe, then
 * list: an event whose entry's revision the listing already shows is not
 * news.  Callbacks run outside every registry lock, never on the
 * thread that made the change: on the registry's dispatcher thread when
 * @context is NULL, otherwise from a source attached to @context (they run
 * where that context is iterated).  A slow callback delays the events
 * after it (they queue; see the "events" part of procreg_health_check()).
 *
 * @destroy: optional, called on @user_data once the subscription is gone
 *           and its callback will not run again.
 * @param[out] id  the subscription, for procreg_unsubscribe() (never 0).
 * @return 0, PROCREG_EINVAL (bad names or NULL @fn), PROCREG_ENOMEM (the
 *         dispatcher thread could not start).
 */
PROCREG_API int procreg_subscribe(procreg *reg, const char *ns,
                                  const char *name, procreg_event_fn fn,
                                  gpointer user_data, GDestroyNotify destroy,
                                  GMainContext *context, uint64_t *id,
                                  GError **error);
/** procreg_subscribe() for one prepared key. */
PROCREG_API int procreg_subscribe_key(procreg *reg, const procreg_key *key,
                                      procreg_event_fn fn, gpointer user_data,
                                      GDestroyNotify destroy,
                                      GMainContext *context, uint64_t *id,
                                      GError **error);

/**
 * End subscription @id.  When it returns the callback is not running and
 * will not run again, except that called from inside that very callback it
 * returns at once (the callback then finishes; it is not called again).
 * @destroy runs before the return, or after the callback finishes in that
 * case.
 * @return 0 or PROCREG_ENOTFOUND (no such subscription).
 */
PROCREG_API int procreg_unsubscribe(procreg *reg, uint64_t id);

/**
 * procreg_subscribe() that first replays every change after position
 * @after (procreg_event.position) that the subscription matches, then goes
 * on with live events: each change once, in position order, with no gap
 * between the history and the live events.  So a watcher that remembers
 * the position of the last event it handled resumes where it stopped, even
 * in another process when the backend keeps a history (lmdb, etcd), and a
 * new one follows a namespace without a gap: read
 * procreg_event_position(), list, then subscribe from that position.
 *
 * Replayed events carry seq 0 and the time they were read.  A backend
 * without a history of its own gets one from the registry: its events
 * from the first procreg_event_position() call on (every write makes an
 * event from then on, listened to or not), the latest 4096 of them.
 * @return as procreg_subscribe(), and PROCREG_ECOMPACTED when the changes
 *         after @after are no longer kept (compacted, trimmed, from before
 *         the registry kept a history, which includes every position while
 *         it keeps none yet, or @after is above the latest position: the
 *         history restarted): list again, then subscribe from the current
 *         position.  PROCREG_EBACKEND when the history cannot
 *         be read.  Nothing is subscribed on error.
 */
PROCREG_API int procreg_subscribe_from(procreg *reg, const char *ns,
                                       const char *name, uint64_t after,
                                       procreg_event_fn fn, gpointer user_data,
                                       GDestroyNotify destroy,
                                       GMainContext *context, uint64_t *id,
                                       GError **error);

/**
 * The position of the latest change (see procreg_event.position; 0: none
 * yet), for procreg_subscribe_from().  On a backend without a history of
 * its own the registry starts keeping one here.
 * @return 0 or PROCREG_EBACKEND.  Thread-safe.
 */
PROCREG_API int procreg_event_position(procreg *reg, uint64_t *out,
                                       GError **error);

/** The sequence number of the latest event (0: none yet).  Thread-safe. */
PROCREG_API uint64_t procreg_event_last_seq(procreg *reg);

/** "registered", "unregistered", "updated" (static). */
PROCREG_API const char *procreg_event_kind_name(procreg_event_kind kind);
/** "none", "explicit", "owner_exited", ... (static). */
PROCREG_API const char *procreg_event_reason_name(procreg_event_reason reason);

/* ------------------------------------------------------------------------ */
/* Service layer: waiting for a service                                     */

/* GCancellable is GIO's; procreg links GLib and GObject, not GIO, so it is
 * declared here (an identical typedef, allowed in C11) and its functions
 * are found at run time in the process, which links GIO whenever it has
 * one to pass. */
#ifndef __GIO_TYPES_H__
typedef struct _GCancellable GCancellable;
#endif

/**
 * Wait until (ns, name) is registered and return its entry.  Returns at
 * once when it already is; otherwise sleeps until a registration of that
 * key (through this registry, or reported by the backend) wakes it: no
 * polling.  Any number of threads may wait for one key; each registration
 * wakes them all.  An entry whose owner is known dead does not count.
 *
 * @timeout_ms: < 0 waits without limit, 0 only checks.
 * @cancellable: optional; cancelling it ends the wait.
 * @param[out] out  optional: the entry (ns and name left NULL), as
 *                  procreg_lookup_entry() returns it.
 * @return 0, PROCREG_ETIMEDOUT, PROCREG_ECANCELLED, PROCREG_EINVAL,
 *         PROCREG_EBACKEND.
 */
PROCREG_API int procreg_wait_for(procreg *reg, const char *ns,
                                 const char *name, int timeout_ms,
                                 GCancellable *cancellable, procreg_entry *out,
                                 GError **error);
PROCREG_API int procreg_wait_for_key(procreg *reg, const procreg_key *key,
                                     int timeout_ms, GCancellable *cancellable,
                                     procreg_entry *out, GError **error);

/* ------------------------------------------------------------------------ */
/* Coordination: locks by name                                              */

/*
 * A lock is mutual exclusion by name, across the threads of a process, the
 * processes of a host (lmdb) and the hosts of a cluster (etcd): what
 * flock(1), Elixir's Registry.lock/3, etcd's concurrency mutex and Consul's
 * locks give.  It is built of registry entries, so it works on every
 * backend: each procreg_lock() registers a ticket (namespace
 * "procreg:lock:NS", name "NAME#" and 16 random hex digits) owned by the
 * calling process, and holds the lock once no live ticket of NAME is older
 * than its own.
 *
 *  - Order: first come, first served (FIFO): tickets are ordered by their
 *    registration's revision, which every backend hands out in order
 *    (across processes on lmdb, across hosts on etcd).
 *  - A dead holder or waiter never blocks the lock: its ticket goes with
 *    its owner, within the registry's liveness latency (milliseconds on one
 *    host; on etcd, lease_ttl for a process or host that dies whole), and
 *    the next waiter proceeds.
 *  - Lock names never clash with entry names: tickets live in the reserved
 *    namespaces (PROCREG_NS_RESERVED_PREFIX), where applications cannot
 *    register.  A lock's namespace may be at most 242 bytes and its name
 *    at most 238 (the ticket's prefix and suffix take the rest).
 *  - Not recursive: a second procreg_lock() of a name the caller holds
 *    waits for the first to be unlocked.
 *  - The lock belongs to the process: any thread of it may unlock it.  A
 *    handle never unlocked holds the lock until its process exits (or, on
 *    etcd, until the registry's lease runs out after it was closed).
 *  - On etcd, a holder cut off from the cluster for longer than lease_ttl
 *    loses its ticket and another host may take the lock: protect what the
 *    lock guards with its revision (procreg_lock_handle_get_revision()),
 *    which grows with every acquisition, as a fencing token.
 *
 * doc/coordination.md has the details, leader election built on it, and
 * the costs measured.
 */

/** A held lock, from procreg_lock() until procreg_unlock(). */
typedef struct procreg_lock_handle procreg_lock_handle;

/**
 * Take the lock (ns, name), waiting while another thread, process or host
 * holds it.  Safe from any thread.
 * @timeout_ms: < 0 waits without limit, 0 only tries (no wait).
 * @cancellable: optional; cancelling it ends the wait (GIO must be loaded
 *               in the process, which it is whenever a caller has one).
 * @param[out] out  the held lock, for procreg_unlock() (NULL on failure).
 * @return 0, PROCREG_ETIMEDOUT (with @error, its details' entry is the
 *         holder's ticket: who holds the lock), PROCREG_ECANCELLED,
 *         PROCREG_EINVAL (bad names, too long for a lock, or a
 *         GCancellable without GIO), PROCREG_ECONFLICT (the ticket was
 *         removed while it waited: forced away, or an etcd lease lost),
 *         PROCREG_EBACKEND.  On failure nothing of the attempt remains.
 */
PROCREG_API int procreg_lock(procreg *reg, const char *ns, const char *name,
                             int timeout_ms, GCancellable *cancellable,
                             procreg_lock_handle **out, GError **error);
PROCREG_API int procreg_lock_key(procreg *reg, const procreg_key *key,
                                 int timeout_ms, GCancellable *cancellable,
                                 procreg_lock_handle **out, GError **error);

/**
 * Release @lock (taken through @reg) and free it, whatever the result: the
 * next waiter proceeds.  Safe from any thread of the process that took it.
 * @return 0, PROCREG_ENOTFOUND (the lock had been lost before: its ticket
 *         was forced away or its etcd lease ran out), PROCREG_EBACKEND.
 */
PROCREG_API int procreg_unlock(procreg *reg, procreg_lock_handle *lock,
                               GError **error);

/**
 * The revision of @lock's ticket: it grows with every acquisition of any
 * lock of the registry, so a resource can refuse a holder whose revision
 * is lower than one it has seen (a fencing token).  Thread-safe.
 */
PROCREG_API uint64_t
procreg_lock_handle_get_revision(const procreg_lock_handle *lock);

/* ------------------------------------------------------------------------ */
/* Coordination: start once                                                 */

/**
 * A start function for procreg_start_once(): start the service (ns, name)
 * and say who runs it.  It runs on the calling thread while the caller
 * holds the name's start claim, so no other procreg_start_once() of the
 * name runs its start function meanwhile.
 * @owner: the process that will own the entry: on entry the calling
 *         process's pid with start_time 0 (unknown: the registration reads
 *         it); set pid to the started worker's when another process
 *         serves.
 * @metadata: set it to the entry's metadata (a{sv}; a floating reference
 *            is sunk, a full one is taken), or leave it NULL.
 * @return 0, or a negative PROCREG_E* code (with @error set) when the
 *         service could not start: nothing is registered.
 */
typedef int (*procreg_start_fn)(procreg *reg, const char *ns,
                                const char *name, procreg_owner *owner,
                                GVariant **metadata, gpointer user_data,
                                GError **error);

/**
 * Return the live holder of (ns, name), or start it with @start: the
 * "already started" answer of Elixir's via tuples, without two starters.
 * Every concurrent caller for the name — threads, processes (lmdb), hosts
 * (etcd) — waits while one of them runs its start function, and then gets
 * the entry it registered.  A start function that fails, or a starter that
 * dies before it registered, leaves the name free: the next waiter then
 * runs its own start function.  Nothing stays locked.  Safe from any
 * thread; @start must not call procreg_start_once() for the same name.
 *
 * A name someone registers directly (procreg_register()) while @start
 * runs wins: the call then returns PROCREG_EEXISTS with that holder in
 * @out, and what @start started is the caller's to stop.
 *
 * @destroy: optional, called on @user_data once, before the call returns.
 * @timeout_ms: how long to wait for another caller's start (< 0: no
 *              limit, 0: not at all); @start's own time is not limited.
 * @cancellable: optional; ends that wait.
 * @param[out] out  optional: the entry (ns and name left NULL): the one
 *                  this call registered, the one found running, or on
 *                  PROCREG_EEXISTS the holder.
 * @param[out] started  optional: whether this call ran @start and
 *                      registered the result.
 * @return 0 (running: see @started), @start's failure, PROCREG_EEXISTS,
 *         PROCREG_ETIMEDOUT, PROCREG_ECANCELLED, PROCREG_EINVAL (bad
 *         names, too long for a claim (as for a lock), no @start),
 *         PROCREG_ENOTALIVE (@start named a dead owner), PROCREG_EBACKEND.
 */
PROCREG_API int procreg_start_once(procreg *reg, const char *ns,
                                   const char *name, procreg_start_fn start,
                                   gpointer user_data, GDestroyNotify destroy,
                                   int timeout_ms, GCancellable *cancellable,
                                   procreg_entry *out, bool *started,
                                   GError **error);
PROCREG_API int procreg_start_once_key(procreg *reg, const procreg_key *key,
                                       procreg_start_fn start,
                                       gpointer user_data,
                                       GDestroyNotify destroy, int timeout_ms,
                                       GCancellable *cancellable,
                                       procreg_entry *out, bool *started,
                                       GError **error);

/* ------------------------------------------------------------------------ */
/* Service layer: namespaces                                                */

/** Prefix of the namespaces procreg_namespace_new_test() makes. */
#define PROCREG_NS_TEST_PREFIX "test-"

/**
 * A fresh namespace for one test: "test-" and 16 random hex digits.  With
 * @reg (optional) it is also checked to be empty there.
 * @param[out] out  the name; g_free() it.
 * @return 0 or PROCREG_EBACKEND (the emptiness check failed).
 */
PROCREG_API int procreg_namespace_new_test(procreg *reg, char **out,
                                           GError **error);

/** Whether @ns is a name procreg_namespace_new_test() makes. */
PROCREG_API bool procreg_namespace_is_test(const char *ns);

/**
 * Remove every entry of @ns in one backend operation, with an UNREGISTERED
 * event of reason PROCREG_REASON_NAMESPACE_DROPPED for each.  Writes
 * through this registry wait while it runs.
 * @param[out] removed  optional: how many entries went.
 * @param[out] atomic   optional: whether the backend removed them in one
 *                      atomic step (PROCREG_CAP_ATOMIC_DROP); when false,
 *                      an entry registered in @ns by another process
 *                      during the drop may survive it.
 * @return 0, PROCREG_EINVAL (bad or reserved namespace), PROCREG_EBACKEND.
 */
PROCREG_API int procreg_namespace_drop(procreg *reg, const char *ns,
                                       size_t *removed, bool *atomic,
                                       GError **error);

/** One namespace and how many entries it holds. */
typedef struct procreg_namespace_info {
    char *ns;
    size_t entries;
} procreg_namespace_info;

/**
 * The namespaces that hold entries, sorted by name, with their counts.
 * @param[out] out  a new array of @n_out items (NULL when none); free with
 *                  procreg_namespace_info_free().
 * @return 0, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_namespace_list(procreg *reg,
                                       procreg_namespace_info **out,
                                       size_t *n_out, GError **error);
/** Free what procreg_namespace_list() returned.  NULL is ignored. */
PROCREG_API void procreg_namespace_info_free(procreg_namespace_info *infos,
                                             size_t n);

/* ------------------------------------------------------------------------ */
/* Service layer: namespace settings                                        */

/*
 * Small key -> value settings per namespace (a config version, a drain
 * flag), like Elixir's Registry.meta/put_meta/delete_meta: shared like
 * entries on every backend (kept as entries of the reserved namespace
 * "procreg:meta:NS"), with an event when they change.  A setting belongs
 * to no application process: anyone may change or delete it, and it
 * outlives the process that wrote it — on in-memory backends as long as
 * the registry, on lmdb as long as the file (and the host: it is kept for
 * the host's process 1).  On etcd it is attached to the lease of the
 * registry that created it, like every etcd entry: it goes when that
 * registry has been closed for lease_ttl.  Keys follow the name rules;
 * the namespace may have at most 242 bytes.  All calls are thread-safe.
 */

/**
 * Set @key of namespace @ns (NULL: PROCREG_NS_PRODUCTION) to @value (any
 * GVariant; a floating reference is sunk, the registry keeps its own).
 * @return 0, PROCREG_EINVAL (bad names, NULL @value), PROCREG_ECONFLICT
 *         (other writers changed the key on each of many attempts),
 *         PROCREG_EFULL, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_namespace_meta_put(procreg *reg, const char *ns,
                                           const char *key, GVariant *value,
                                           GError **error);
/**
 * The value of @key of @ns.
 * @param[out] value  a new reference; g_variant_unref() it.
 * @return 0, PROCREG_ENOTFOUND, PROCREG_EINVAL, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_namespace_meta_get(procreg *reg, const char *ns,
                                           const char *key, GVariant **value,
                                           GError **error);
/** Remove @key of @ns.  @return 0, PROCREG_ENOTFOUND, PROCREG_EINVAL,
 *  PROCREG_EBACKEND. */
PROCREG_API int procreg_namespace_meta_delete(procreg *reg, const char *ns,
                                              const char *key, GError **error);
/**
 * Every setting of @ns.
 * @param[out] settings  a new a{sv}, sorted by key (empty when there is
 *                       none); g_variant_unref() it.
 * @return 0, PROCREG_EINVAL, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_namespace_meta_list(procreg *reg, const char *ns,
                                            GVariant **settings,
                                            GError **error);

/** A settings callback: @key of @ns is now @value (borrowed), or was
 *  deleted (@value NULL). */
typedef void (*procreg_namespace_meta_fn)(procreg *reg, const char *ns,
                                          const char *key, GVariant *value,
                                          gpointer user_data);
/**
 * Call @fn for each change of a setting of @ns made after this call
 * (through any registry of the backend), delivered as procreg_subscribe()
 * delivers events (@context, ordering, @destroy, the dispatcher thread).
 * End it with procreg_unsubscribe(@id).
 * @return 0 or PROCREG_EINVAL (bad namespace, NULL @fn) or PROCREG_ENOMEM;
 *         on failure @destroy is not called (the caller keeps @user_data).
 */
PROCREG_API int procreg_namespace_meta_subscribe(
    procreg *reg, const char *ns, procreg_namespace_meta_fn fn,
    gpointer user_data, GDestroyNotify destroy, GMainContext *context,
    uint64_t *id, GError **error);

/* ------------------------------------------------------------------------ */
/* Service layer: service health                                            */

/**
 * A health probe: decide whether the service of @entry (ns and name set)
 * is healthy.  It runs on a worker thread.  It may set *@message to a
 * g_malloc'ed explanation.  It must not call procreg_close().
 */
typedef bool (*procreg_probe_fn)(const procreg_entry *entry,
                                 gpointer user_data, char **message);

/** The outcome of procreg_service_check().  Owned by the caller. */
typedef struct {
    bool healthy;
    bool timed_out;       /**< The probe did not answer in time. */
    char *message;        /**< "healthy", "unhealthy: timed out after 50 ms",
                               "unhealthy: <the probe's message>", ... */
    procreg_owner owner;  /**< The owner of the entry checked. */
    uint64_t duration_ns; /**< How long the check took. */
} procreg_service_health;

/**
 * Check the service (ns, name) with @probe (NULL: "the owner process is
 * alive").  The probe runs on a shared pool of worker threads (at most 64;
 * probes beyond that queue).  A probe that does not return within
 * @timeout_ms (< 0: no limit) makes the result unhealthy, "timed out"; it
 * is not waited for, and what it returns later is discarded.
 * @user_data_free: optional, called once on @user_data when the probe has
 *                  returned (possibly after this call did, on the worker
 *                  thread), or before returning when the probe never runs.
 * @return 0 (the verdict is in @out), PROCREG_ENOTFOUND (no such service),
 *         PROCREG_EINVAL, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_service_check(procreg *reg, const char *ns,
                                      const char *name, procreg_probe_fn probe,
                                      gpointer user_data,
                                      GDestroyNotify user_data_free,
                                      int timeout_ms,
                                      procreg_service_health *out,
                                      GError **error);
/** Release what @health holds.  NULL is ignored. */
PROCREG_API void procreg_service_health_clear(procreg_service_health *health);

/* ------------------------------------------------------------------------ */
/* Service layer: telemetry                                                 */

/** One finished operation.  Borrowed for the duration of the handler. */
typedef struct {
    procreg_op op;
    int result;           /**< 0 or the PROCREG_E* code the call returned. */
    uint64_t duration_ns; /**< Monotonic time the call took; for a CLEANUP
                               the removal's, or 0 when the backend
                               reported a removal made elsewhere. */
    const char *ns;       /**< Namespace, NULL when the call had none. */
    const char *name;     /**< Name, NULL unless the call was on one key. */
    const char *backend;  /**< Backend name. */
    procreg_event_reason reason; /**< CLEANUP: OWNER_EXITED; else NONE. */
    uint64_t count;       /**< Entries returned or removed (list, find,
                               drop, list_owned); 1 for a cleanup. */
} procreg_telemetry_event;

/**
 * A telemetry handler.  It runs synchronously on the thread that made the
 * call, after the call and outside every registry lock; keep it short.
 * CLEANUP, which no caller made, runs on the registry's monitor thread,
 * once for each dead owner's entry the registry saw removed, whoever
 * removed it.  It may call @reg; the calls it makes are not reported
 * again.
 */
typedef void (*procreg_telemetry_fn)(procreg *reg,
                                     const procreg_telemetry_event *event,
                                     gpointer user_data);

/**
 * Attach @fn for the operations in @ops (PROCREG_OP_BIT() values or'ed,
 * or PROCREG_OP_ALL).  With no handler attached, the lookup path pays one
 * relaxed atomic load for telemetry.
 * @param[out] id  for procreg_telemetry_detach() (never 0).
 * @return 0 or PROCREG_EINVAL (NULL @fn, empty or unknown @ops).
 */
PROCREG_API int procreg_telemetry_attach(procreg *reg, unsigned ops,
                                         procreg_telemetry_fn fn,
                                         gpointer user_data,
                                         GDestroyNotify destroy, uint64_t *id,
                                         GError **error);

/**
 * Detach handler @id.  When it returns, the handler is not running on any
 * other thread and will not be called again, and @destroy has run, except
 * when called from inside a handler of @reg on this thread: then @destroy
 * runs later (at the next attach/detach, or at close).
 * @return 0 or PROCREG_ENOTFOUND.
 */
PROCREG_API int procreg_telemetry_detach(procreg *reg, uint64_t id);

/* ------------------------------------------------------------------------ */
/* Service layer: statistics export                                         */

/**
 * Append the statistics of procreg_stats() to @out in the Prometheus text
 * exposition format (version 0.0.4): procreg_entries, procreg_namespace_
 * entries{namespace}, procreg_operations_total{op,result}, procreg_
 * operation_duration_seconds{op} (a histogram), procreg_owners,
 * procreg_events_total, procreg_cleanup_*, procreg_memory_bytes ...
 * Label values are escaped.
 * @return as procreg_stats(); nothing is appended on failure.
 */
PROCREG_API int procreg_stats_write_prometheus(procreg *reg, GString *out,
                                               GError **error);

/**
 * The statistics of procreg_stats() as a JSON object (UTF-8, one line).
 * @param[out] out  g_free() it.
 * @return as procreg_stats().
 */
PROCREG_API int procreg_stats_to_json(procreg *reg, char **out,
                                      GError **error);

/* ======================================================================== */
/* Groups: duplicate keys (Elixir's duplicate Registry, Erlang's pg)        */
/* ======================================================================== */

/*
 * A group is named like a key, (namespace, group), by the same rules; a
 * group and a unique entry of the same name in one namespace are distinct
 * and never clash.  Any number of processes join a group, each with its
 * own metadata, and the same process may join one group several times:
 * each join makes one member, with its own id (procreg_member).  A
 * publisher then calls every member (procreg_dispatch()) or picks one
 * (procreg_pick_member()).  doc/groups.md has a publish/subscribe example.
 *
 * Ownership: a member belongs to its owner process (the caller, or the live
 * process it names), and only the owner removes it (procreg_leave*()):
 * another process gets PROCREG_EPERM unless it passes PROCREG_FORCE (the
 * LEFT event then has reason PROCREG_REASON_FORCED).  When the owner dies,
 * its members are removed by the registry like its entries (the monitor
 * of "Service layer: owner liveness" for owners that joined through this
 * registry; a shared backend reaps members of dead processes itself),
 * with LEFT events of reason PROCREG_REASON_OWNER_EXITED; from the moment
 * the monitor sees the exit, reads leave them out.  procreg_namespace_drop()
 * removes a namespace's members too (reason NAMESPACE_DROPPED).
 *
 * Events: every join is a JOINED event and every removal a LEFT event
 * (procreg_event.member says which member), delivered like the entries'
 * events (procreg_subscribe(), procreg_subscribe_group()).
 *
 * Support: backends with PROCREG_CAP_GROUPS (every built-in backend).  On
 * others each call here returns PROCREG_ENOTSUP.
 *
 * Thread safety: every call may run from any thread, concurrently with
 * any other.  Each has a string form and a key form (a procreg_key naming
 * the group) as the entry calls do.
 */

/**
 * Join group (ns, group) as a new member owned by @owner (NULL: the
 * calling process; otherwise a live process, as procreg_register()
 * checks it) with @metadata (NULL or a{sv}; a floating reference is sunk).
 * @param[out] joined  optional: the new member (ns and group left NULL).
 * @return 0, PROCREG_EINVAL (bad group name, or metadata that is not
 *         a{sv}: nothing changes), PROCREG_ENOTALIVE, PROCREG_ENOTSUP,
 *         PROCREG_EFULL, PROCREG_ENOMEM, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_join(procreg *reg, const char *ns, const char *group,
                             const procreg_owner *owner, GVariant *metadata,
                             procreg_member *joined, GError **error);
PROCREG_API int procreg_join_key(procreg *reg, const procreg_key *group,
                                 const procreg_owner *owner,
                                 GVariant *metadata, procreg_member *joined,
                                 GError **error);

/**
 * Leave group (ns, group): remove every member the calling process owns
 * there.  Leaving a group one is not a member of removes nothing and is
 * not an error.
 * @param[out] removed  optional: how many members went.
 * @return 0, PROCREG_EINVAL, PROCREG_ENOTSUP, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_leave(procreg *reg, const char *ns, const char *group,
                              size_t *removed, GError **error);
/**
 * The complete form.  @member_id 0: every member of the group the calling
 * process owns (as procreg_leave()); otherwise that one member, which the
 * calling process must own unless @flags has PROCREG_FORCE.  A member id
 * that is not in the group removes nothing (0, *@removed = 0).
 * @return 0, PROCREG_EPERM (member @member_id belongs to another process:
 *         the message names it; nothing changes), PROCREG_EINVAL (unknown
 *         flags), PROCREG_ENOTSUP, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_leave_key(procreg *reg, const procreg_key *group,
                                  uint64_t member_id, unsigned flags,
                                  size_t *removed, GError **error);

/**
 * The members of group (ns, group), in join order (by id).  An absent
 * group is an empty one.
 * @param[out] out  a new array of @n_out members (NULL when none), ns and
 *                  group left NULL; free with procreg_members_free().
 * @return 0, PROCREG_EINVAL, PROCREG_ENOTSUP, PROCREG_ENOMEM,
 *         PROCREG_EBACKEND.
 */
PROCREG_API int procreg_members(procreg *reg, const char *ns,
                                const char *group, procreg_member **out,
                                size_t *n_out, GError **error);
PROCREG_API int procreg_members_key(procreg *reg, const procreg_key *group,
                                    procreg_member **out, size_t *n_out,
                                    GError **error);

/**
 * How many members group (ns, group) has (0 when it is absent).
 * @return as procreg_members().
 */
PROCREG_API int procreg_group_count(procreg *reg, const char *ns,
                                    const char *group, size_t *out,
                                    GError **error);
PROCREG_API int procreg_group_count_key(procreg *reg, const procreg_key *group,
                                        size_t *out, GError **error);

/** One group and how many members it has. */
typedef struct {
    char *ns;
    char *group;
    size_t members;
} procreg_group_info;

/**
 * The groups of namespace @ns (NULL: of every namespace) that have
 * members, sorted by namespace then group, with their sizes.
 * @param[out] out  a new array of @n_out items (NULL when none); free
 *                  with procreg_group_info_free().
 * @return 0, PROCREG_EINVAL, PROCREG_ENOTSUP, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_groups(procreg *reg, const char *ns,
                               procreg_group_info **out, size_t *n_out,
                               GError **error);
/** Free what procreg_groups() returned.  NULL is ignored. */
PROCREG_API void procreg_group_info_free(procreg_group_info *infos, size_t n);

/**
 * The memberships of process @pid: every member it owns, in every group,
 * with ns and group set, sorted by namespace, group, then id.  The cost is
 * a scan of every member of the backend.
 * @param[out] out  a new array of @n_out members; procreg_members_free().
 * @return 0, PROCREG_EINVAL (pid <= 0), PROCREG_ENOTSUP, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_memberships(procreg *reg, pid_t pid,
                                    procreg_member **out, size_t *n_out,
                                    GError **error);

/**
 * Called by procreg_dispatch() for one member.  @member is lent for the
 * call (copy what you keep; g_variant_ref() the metadata); its ns and group
 * are NULL.  Return true to go on, false to stop the dispatch.
 */
typedef bool (*procreg_member_fn)(const procreg_member *member,
                                  gpointer user_data);

/**
 * Call @fn for each member of group (ns, group), in join order, on the
 * calling thread.  No registry lock is held while @fn runs, so it may call
 * @reg (except procreg_close()), including joining or leaving this group.
 * In-process backends iterate their members in place, without copying
 * them (ckht and optimized over it: lock-free; ghash: a snapshot that
 * writers copy before changing, so they never wait for a dispatch);
 * backends shared with other processes or hosts read the members first.
 *
 * What @fn sees: every member that is in the group for the whole dispatch,
 * exactly once; a member that joins during the dispatch (on any thread,
 * @fn included) is not visited; a member that leaves during it may be
 * visited or not, even after its leave returned.  An empty or absent
 * group: no call, 0.
 * @param[out] n_called  optional: how many calls were made.
 * @return 0, PROCREG_EINVAL (bad name, NULL @fn), PROCREG_ENOTSUP,
 *         PROCREG_ENOMEM, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_dispatch(procreg *reg, const char *ns,
                                 const char *group, procreg_member_fn fn,
                                 gpointer user_data, size_t *n_called,
                                 GError **error);
PROCREG_API int procreg_dispatch_key(procreg *reg, const procreg_key *group,
                                     procreg_member_fn fn, gpointer user_data,
                                     size_t *n_called, GError **error);

/**
 * Pick one member of group (ns, group), to send work to one worker of a
 * role.  @cursor NULL: uniformly at random.  Otherwise round-robin: the
 * member with the smallest id above *@cursor is picked (after the largest,
 * the smallest again) and its id stored in *@cursor; start with 0.  The
 * cursor is the caller's: keep one per thread, or share one under your own
 * lock.
 * @param[out] out  the member (ns and group left NULL); procreg_member_clear().
 * @return 0, PROCREG_ENOTFOUND (the group has no member), PROCREG_EINVAL,
 *         PROCREG_ENOTSUP, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_pick_member(procreg *reg, const char *ns,
                                    const char *group, uint64_t *cursor,
                                    procreg_member *out, GError **error);
PROCREG_API int procreg_pick_member_key(procreg *reg, const procreg_key *group,
                                        uint64_t *cursor, procreg_member *out,
                                        GError **error);

/**
 * Members of group (ns, group) (@group NULL: of every group of @ns; @ns
 * NULL: of every namespace, @group then must be NULL) whose metadata maps
 * @meta_key to a value equal to @value, as procreg_find() compares them;
 * answered by the backend's metadata index where it has one (optimized).
 * Sorted by namespace, group, id; ns and group set.
 * @param[out] out  a new array of @n_out members; procreg_members_free().
 * @return 0, PROCREG_EINVAL (as procreg_find(); a @group without @ns),
 *         PROCREG_ENOTSUP, PROCREG_ENOMEM, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_find_members(procreg *reg, const char *ns,
                                     const char *group, const char *meta_key,
                                     GVariant *value, procreg_member **out,
                                     size_t *n_out, GError **error);

/**
 * Wait until group (ns, group) has at least @min_members members (0 and 1
 * both mean one), the group form of procreg_wait_for(): returns at once
 * when it has, otherwise sleeps until a join (through this registry, or
 * reported by the backend) wakes it, without polling.  Members of owners
 * known dead do not count.
 * @timeout_ms: < 0 waits without limit, 0 only checks.
 * @cancellable: optional; cancelling it ends the wait.
 * @param[out] n_out  optional: the members counted last.
 * @return 0, PROCREG_ETIMEDOUT, PROCREG_ECANCELLED, PROCREG_EINVAL,
 *         PROCREG_ENOTSUP, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_wait_members(procreg *reg, const char *ns,
                                     const char *group, size_t min_members,
                                     int timeout_ms, GCancellable *cancellable,
                                     size_t *n_out, GError **error);
PROCREG_API int procreg_wait_members_key(procreg *reg, const procreg_key *group,
                                         size_t min_members, int timeout_ms,
                                         GCancellable *cancellable,
                                         size_t *n_out, GError **error);

/**
 * Subscribe to the JOINED and LEFT events of group (ns, group) only; as
 * procreg_subscribe() otherwise.
 * @return as procreg_subscribe().
 */
PROCREG_API int procreg_subscribe_group(procreg *reg, const char *ns,
                                        const char *group, procreg_event_fn fn,
                                        gpointer user_data,
                                        GDestroyNotify destroy,
                                        GMainContext *context, uint64_t *id,
                                        GError **error);

G_END_DECLS

#endif /* PROCREG_PROCREG_H */
