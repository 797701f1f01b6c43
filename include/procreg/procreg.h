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

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

/**
 * Result codes.  0 is success; failures are negative.  The same value is
 * the `code` of a GError in the PROCREG_ERROR domain.
 */
typedef enum {
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
} procreg_error_code;

/** GError domain for every procreg error; codes are procreg_error_code. */
#define PROCREG_ERROR (procreg_error_quark())
PROCREG_API GQuark procreg_error_quark(void);

/**
 * A static English description of @code ("not found", ...).
 * Never NULL; unknown codes give "unknown error".  Thread-safe.
 */
PROCREG_API const char *procreg_strerror(int code);

/* ------------------------------------------------------------------------ */
/* Owners                                                                   */

/**
 * The process that owns an entry.  `start_time` tells a reused pid apart:
 * it is the process start time in clock ticks after boot (field 22 of
 * /proc/PID/stat), or 0 where it is unknown.
 */
typedef struct {
    pid_t pid;
    uint64_t start_time;
} procreg_owner;

/** Fill @out with the calling process.  Cannot fail. Thread-safe. */
PROCREG_API void procreg_owner_self(procreg_owner *out);

/**
 * Fill @out with the live process @pid and its start time.
 * @return 0, PROCREG_EINVAL (pid <= 0) or PROCREG_ENOTALIVE.
 */
PROCREG_API int procreg_owner_from_pid(pid_t pid, procreg_owner *out,
                                       GError **error);

/**
 * Whether @owner is alive: the pid exists and, when start_time is known,
 * it is still the same process (not a reused pid).  Thread-safe.
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
typedef struct {
    char *ns;              /**< Namespace; NULL from lookups (you know it). */
    char *name;            /**< Name; NULL from lookups (you know it). */
    procreg_owner owner;   /**< The owner process. */
    GVariant *metadata;    /**< A reference to a{sv} metadata, or NULL. */
    int64_t registered_at; /**< Wall-clock registration time, µs since epoch. */
    uint64_t revision;     /**< Increases on every change of this key. */
} procreg_entry;

/** Release what @entry holds and zero it.  NULL is ignored. */
PROCREG_API void procreg_entry_clear(procreg_entry *entry);
/** Clear @n entries and free the array. NULL is ignored. */
PROCREG_API void procreg_entries_free(procreg_entry *entries, size_t n);

/* ------------------------------------------------------------------------ */
/* Events (delivered by the service layer; see procreg_subscribe())         */

/** What happened to a key. */
typedef enum {
    PROCREG_EVENT_REGISTERED = 1,
    PROCREG_EVENT_UNREGISTERED = 2,
    PROCREG_EVENT_UPDATED = 3, /**< Metadata changed. */
} procreg_event_kind;

/** Why an entry went away (PROCREG_REASON_NONE for other events). */
typedef enum {
    PROCREG_REASON_NONE = 0,
    PROCREG_REASON_EXPLICIT = 1,          /**< Someone unregistered it. */
    PROCREG_REASON_OWNER_EXITED = 2,      /**< Its owner process died. */
    PROCREG_REASON_NAMESPACE_DROPPED = 3, /**< Its namespace was dropped. */
    PROCREG_REASON_REPLACED = 4,          /**< Another registration took the key. */
    PROCREG_REASON_EXPIRED = 5,           /**< A lease or TTL ran out. */
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
 * @param spec  NULL means the PROCREG_BACKEND environment variable, else
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
 */
PROCREG_API void procreg_close(procreg *reg);

/** The spec @reg was opened with, normalised.  Valid until close. */
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
 * winner and the loser learns who won ("already started").
 *
 * @param[out] current  optional: on success the new entry, on
 *             PROCREG_EEXISTS the entry that holds the key.
 * @return 0, PROCREG_EINVAL (bad key or metadata that is not a{sv}),
 *         PROCREG_ENOTALIVE (the owner is not a live process),
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

/**
 * Remove (ns, name).  The key form removes it only while its revision is
 * still @if_revision (0: whatever it is), so a caller cannot remove an
 * entry that was replaced since it looked.
 * @return 0, PROCREG_ENOTFOUND, PROCREG_ECONFLICT, PROCREG_EINVAL,
 *         PROCREG_EBACKEND.
 */
PROCREG_API int procreg_unregister(procreg *reg, const char *ns,
                                   const char *name, GError **error);
PROCREG_API int procreg_unregister_key(procreg *reg, const procreg_key *key,
                                       uint64_t if_revision, GError **error);

/** How update_metadata combines the new metadata with the old. */
typedef enum {
    PROCREG_UPDATE_REPLACE = 0, /**< The new dictionary replaces the old. */
    PROCREG_UPDATE_MERGE = 1,   /**< New keys are added, equal keys win. */
} procreg_update_mode;

/**
 * Change the metadata of (ns, name); the revision increases.
 * @metadata: a{sv} or NULL (REPLACE with NULL removes the metadata);
 * floating references are sunk.  With @if_revision != 0 the update happens
 * only while the entry is still at that revision.
 * @param[out] revision  optional: the new revision.
 * @return 0, PROCREG_ENOTFOUND, PROCREG_ECONFLICT, PROCREG_EINVAL,
 *         PROCREG_ENOMEM, PROCREG_EBACKEND.
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
/* Health and stats                                                         */

typedef enum {
    PROCREG_HEALTH_OK = 0,       /**< Everything works. */
    PROCREG_HEALTH_DEGRADED = 1, /**< Works, with a problem worth a look. */
    PROCREG_HEALTH_FAILED = 2,   /**< Does not work. */
} procreg_health_status;

/** A structured health report.  Owned by the caller. */
typedef struct {
    procreg_health_status status; /**< Worst of the parts below. */
    char *backend;                /**< Backend name. */
    char *message;                /**< One line for people. */
    GVariant *details;            /**< a{sv}: per-part figures and states. */
} procreg_health;

/**
 * Check the backend and the core.  Fills @out; release with
 * procreg_health_clear().  A failing backend is reported in @out (status
 * FAILED), not as an error; the return is 0 or PROCREG_ENOMEM.
 */
PROCREG_API int procreg_health_check(procreg *reg, procreg_health *out,
                                     GError **error);
/** Release what @health holds. NULL is ignored. */
PROCREG_API void procreg_health_clear(procreg_health *health);
/** "ok", "degraded" or "failed". */
PROCREG_API const char *procreg_health_status_name(procreg_health_status s);

/**
 * Statistics as an a{sv} dictionary: "backend" (s), "entries" (t),
 * "operations" (a{st}: per operation), "errors" (a{st}), and backend
 * specific figures under "backend_stats" (a{sv}).
 * @param[out] out  a new non-floating reference; g_variant_unref() it.
 * @return 0, PROCREG_ENOMEM, PROCREG_EBACKEND.
 */
PROCREG_API int procreg_stats(procreg *reg, GVariant **out, GError **error);

G_END_DECLS

#endif /* PROCREG_PROCREG_H */
