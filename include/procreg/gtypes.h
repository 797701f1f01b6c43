/*
 * procreg for GObject and its bindings: GTypes for the types of procreg.h
 * that cross a language boundary, and the binding-friendly calls that
 * GObject Introspection describes in Procreg-0.gir, so that Python
 * (PyGObject), JavaScript (GJS) and Vala use procreg without hand-written
 * bindings.  doc/python.md shows it from Python.
 *
 * procreg.h stays the C API.  Introspection cannot read it directly: it
 * names a type by its C name less the namespace prefix, and the registry
 * handle of procreg.h is called `procreg`, which leaves no name.  So this
 * header gives each type a second, CamelCase name for the same C type
 * (ProcregEntry is struct procreg_entry: a pointer passes either way), and
 * the registry a reference-counted handle, ProcregRegistry, whose calls
 * return their results instead of filling out-parameters.
 *
 * The conventions of procreg.h hold: every call is thread-safe, and a
 * failing call sets @error in the PROCREG_ERROR domain (its code is a
 * ProcregError) and returns NULL, FALSE or 0.  Bindings raise it as an
 * exception; procreg_error_details_from_error() gives its details.
 */
#ifndef PROCREG_GTYPES_H
#define PROCREG_GTYPES_H

#include <glib-object.h>
#include <procreg/procreg.h>

G_BEGIN_DECLS

/* ------------------------------------------------------------------------ */
/* Enumerations: procreg.h's, registered as GTypes                          */

typedef enum procreg_error_code ProcregError;
typedef enum procreg_event_kind ProcregEventKind;
typedef enum procreg_event_reason ProcregEventReason;
typedef enum procreg_update_mode ProcregUpdateMode;
typedef enum procreg_write_flags ProcregWriteFlags;
typedef enum procreg_health_status ProcregHealthStatus;

#define PROCREG_TYPE_ERROR (procreg_error_get_type())
PROCREG_API GType procreg_error_get_type(void) G_GNUC_CONST;
#define PROCREG_TYPE_EVENT_KIND (procreg_event_kind_get_type())
PROCREG_API GType procreg_event_kind_get_type(void) G_GNUC_CONST;
#define PROCREG_TYPE_EVENT_REASON (procreg_event_reason_get_type())
PROCREG_API GType procreg_event_reason_get_type(void) G_GNUC_CONST;
#define PROCREG_TYPE_UPDATE_MODE (procreg_update_mode_get_type())
PROCREG_API GType procreg_update_mode_get_type(void) G_GNUC_CONST;
#define PROCREG_TYPE_WRITE_FLAGS (procreg_write_flags_get_type())
PROCREG_API GType procreg_write_flags_get_type(void) G_GNUC_CONST;
#define PROCREG_TYPE_HEALTH_STATUS (procreg_health_status_get_type())
PROCREG_API GType procreg_health_status_get_type(void) G_GNUC_CONST;

/**
 * procreg_error_quark:
 *
 * The GError domain of every procreg error (PROCREG_ERROR); its codes are
 * #ProcregError values.
 *
 * Returns: the quark of "procreg-error-quark"
 */
PROCREG_API GQuark procreg_error_quark(void);

/**
 * procreg_strerror:
 * @code: a #ProcregError code, or 0
 *
 * A static English description of @code ("not found", ...).
 *
 * Returns: (transfer none): the description; "unknown error" for a code
 *   that is not procreg's
 */
PROCREG_API const char *procreg_strerror(int code);

/**
 * procreg_backend_names:
 *
 * The backends available now, built-in first.
 *
 * Returns: (transfer full) (array zero-terminated=1): their names
 */
PROCREG_API char **procreg_backend_names(void);

/* ------------------------------------------------------------------------ */
/* Owners                                                                   */

/**
 * ProcregOwner:
 *
 * The process that owns an entry: its pid and its start time (which tells
 * a reused pid apart).  A boxed copy of procreg.h's procreg_owner.
 */
typedef struct procreg_owner ProcregOwner;
#define PROCREG_TYPE_OWNER (procreg_owner_get_type())
PROCREG_API GType procreg_owner_get_type(void) G_GNUC_CONST;

/**
 * procreg_owner_new_self: (constructor)
 *
 * The calling process.  Cannot fail.
 *
 * Returns: (transfer full): a new owner; g_boxed_free() it
 */
PROCREG_API ProcregOwner *procreg_owner_new_self(void);

/**
 * procreg_owner_new_for_pid: (constructor)
 * @pid: a process id
 * @error: return location for a #GError, or %NULL
 *
 * The live process @pid, with its start time (0 when /proc hides it from
 * the caller: see procreg_owner_from_pid()).
 *
 * Returns: (transfer full): a new owner, or %NULL with @error set
 *   (%PROCREG_EINVAL for pid <= 0, %PROCREG_ENOTALIVE)
 */
PROCREG_API ProcregOwner *procreg_owner_new_for_pid(gint pid, GError **error);

/**
 * procreg_owner_get_pid:
 * @owner: an owner
 *
 * Returns: the process id
 */
PROCREG_API gint procreg_owner_get_pid(const ProcregOwner *owner);

/**
 * procreg_owner_get_start_time:
 * @owner: an owner
 *
 * Returns: the start time in clock ticks after boot, 0 where unknown
 */
PROCREG_API guint64 procreg_owner_get_start_time(const ProcregOwner *owner);

/**
 * procreg_owner_get_alive:
 * @owner: an owner
 *
 * Whether the process is alive and is still the same process (not a
 * reused pid), as procreg_owner_is_alive() tells.
 *
 * Returns: %TRUE while it lives
 */
PROCREG_API gboolean procreg_owner_get_alive(const ProcregOwner *owner);

/* ------------------------------------------------------------------------ */
/* Prepared keys                                                            */

/**
 * ProcregKey:
 *
 * A (namespace, name) pair validated and hashed once, immutable and
 * reference counted (procreg.h's procreg_key).
 */
typedef struct procreg_key ProcregKey;
#define PROCREG_TYPE_KEY (procreg_key_get_type())
PROCREG_API GType procreg_key_get_type(void) G_GNUC_CONST;

/**
 * procreg_key_make: (constructor)
 * @ns: (nullable): the namespace, %NULL for "production"
 * @name: the name
 * @error: return location for a #GError, or %NULL
 *
 * A key for (@ns, @name): procreg_key_new() of procreg.h, which fills an
 * out-parameter and returns a code, in the form bindings call.  (It is not
 * renamed "new" for them: g-ir-scanner 1.74 records such a rename under
 * the name the function had before it became the record's.)
 *
 * Returns: (transfer full): the key, or %NULL with @error set
 *   (%PROCREG_EINVAL names the rule that failed)
 */
PROCREG_API ProcregKey *procreg_key_make(const char *ns, const char *name,
                                         GError **error);

/**
 * procreg_key_ref:
 * @key: a key
 *
 * Returns: (transfer full): @key
 */
PROCREG_API ProcregKey *procreg_key_ref(ProcregKey *key);

/**
 * procreg_key_unref:
 * @key: (nullable) (transfer full): a key
 */
PROCREG_API void procreg_key_unref(ProcregKey *key);

/**
 * procreg_key_namespace:
 * @key: a key
 *
 * Returns: (transfer none): the namespace, valid while the key is
 */
PROCREG_API const char *procreg_key_namespace(const ProcregKey *key);

/**
 * procreg_key_name:
 * @key: a key
 *
 * Returns: (transfer none): the name, valid while the key is
 */
PROCREG_API const char *procreg_key_name(const ProcregKey *key);

/* ------------------------------------------------------------------------ */
/* Entries                                                                  */

/**
 * ProcregEntry:
 *
 * One registration: its key, owner, metadata, registration time and
 * revision (procreg.h's procreg_entry).  A boxed entry owns what it holds.
 */
typedef struct procreg_entry ProcregEntry;
#define PROCREG_TYPE_ENTRY (procreg_entry_get_type())
PROCREG_API GType procreg_entry_get_type(void) G_GNUC_CONST;

/**
 * procreg_entry_get_namespace:
 * @entry: an entry
 *
 * Returns: (transfer none) (nullable): the namespace; %NULL from the
 *   single-key calls of procreg.h (the calls of this header set it)
 */
PROCREG_API const char *procreg_entry_get_namespace(const ProcregEntry *entry);

/**
 * procreg_entry_get_name:
 * @entry: an entry
 *
 * Returns: (transfer none) (nullable): the name, as the namespace
 */
PROCREG_API const char *procreg_entry_get_name(const ProcregEntry *entry);

/**
 * procreg_entry_get_owner:
 * @entry: an entry
 *
 * Returns: (transfer none): the owner process
 */
PROCREG_API const ProcregOwner *procreg_entry_get_owner(const ProcregEntry *entry);

/**
 * procreg_entry_get_metadata:
 * @entry: an entry
 *
 * Returns: (transfer none) (nullable): the a{sv} metadata, or %NULL
 */
PROCREG_API GVariant *procreg_entry_get_metadata(const ProcregEntry *entry);

/**
 * procreg_entry_get_registered_at:
 * @entry: an entry
 *
 * Returns: the wall-clock registration time, µs since the epoch
 */
PROCREG_API gint64 procreg_entry_get_registered_at(const ProcregEntry *entry);

/**
 * procreg_entry_get_revision:
 * @entry: an entry
 *
 * Returns: the revision, which increases on every change of the key
 */
PROCREG_API guint64 procreg_entry_get_revision(const ProcregEntry *entry);

/* ------------------------------------------------------------------------ */
/* Errors as data                                                           */

/**
 * ProcregErrorDetails:
 *
 * What a failed call knows besides its message (procreg.h's
 * procreg_error_details): the names that exist instead, the entry that
 * holds a key, the offset of a spec's mistake.
 */
typedef struct procreg_error_details ProcregErrorDetails;
#define PROCREG_TYPE_ERROR_DETAILS (procreg_error_details_get_type())
PROCREG_API GType procreg_error_details_get_type(void) G_GNUC_CONST;

/**
 * procreg_error_details_from_error:
 * @error: a #GError a procreg call raised
 *
 * The details of @error.  A binding may hand back a new GError made of
 * the domain, code and message alone (PyGObject does); so each call of
 * this header also keeps the details of the last error it raised on the
 * calling thread, and they are returned when @error has that domain, code
 * and message.
 *
 * Returns: (transfer full) (nullable): a copy of the details; %NULL when
 *   @error is not of the PROCREG_ERROR domain
 */
PROCREG_API ProcregErrorDetails *
procreg_error_details_from_error(const GError *error);

/**
 * procreg_error_details_get_alternatives:
 * @details: details
 *
 * What exists instead: on %PROCREG_ENOTFOUND up to five names of the
 * namespace (empty: it is empty), on %PROCREG_EUNKNOWN_BACKEND the
 * backends, on an unknown spec option the options accepted.
 *
 * Returns: (transfer none) (array zero-terminated=1) (nullable): the
 *   names, or %NULL where the error has none
 */
PROCREG_API const char *const *
procreg_error_details_get_alternatives(const ProcregErrorDetails *details);

/**
 * procreg_error_details_get_entry:
 * @details: details
 *
 * Returns: (transfer none) (nullable): on %PROCREG_EEXISTS the entry that
 *   holds the key, on %PROCREG_EPERM the entry the caller may not change;
 *   %NULL otherwise
 */
PROCREG_API const ProcregEntry *
procreg_error_details_get_entry(const ProcregErrorDetails *details);

/**
 * procreg_error_details_get_position:
 * @details: details
 *
 * Returns: on %PROCREG_EINVAL from a spec, the byte offset in the spec
 *   where it goes wrong; -1 otherwise
 */
PROCREG_API gint
procreg_error_details_get_position(const ProcregErrorDetails *details);

/* ------------------------------------------------------------------------ */
/* Events                                                                   */

/**
 * ProcregEvent:
 *
 * One change, as a subscriber sees it (procreg.h's procreg_event).
 */
typedef struct procreg_event ProcregEvent;
#define PROCREG_TYPE_EVENT (procreg_event_get_type())
PROCREG_API GType procreg_event_get_type(void) G_GNUC_CONST;

/**
 * procreg_event_get_seq:
 * @event: an event
 *
 * Returns: its number: per registry, from 1, without gaps
 */
PROCREG_API guint64 procreg_event_get_seq(const ProcregEvent *event);

/**
 * procreg_event_get_position:
 * @event: an event
 *
 * Returns: its place in the registry's history, for
 *   procreg_registry_subscribe_from()
 */
PROCREG_API guint64 procreg_event_get_position(const ProcregEvent *event);

/**
 * procreg_event_get_kind:
 * @event: an event
 *
 * Returns: what happened
 */
PROCREG_API ProcregEventKind procreg_event_get_kind(const ProcregEvent *event);

/**
 * procreg_event_get_reason:
 * @event: an event
 *
 * Returns: why the entry went away (or was forced); NONE otherwise
 */
PROCREG_API ProcregEventReason
procreg_event_get_reason(const ProcregEvent *event);

/**
 * procreg_event_get_entry:
 * @event: an event
 *
 * Returns: (transfer none): the new entry (REGISTERED, UPDATED) or the
 *   removed one, namespace and name set
 */
PROCREG_API const ProcregEntry *
procreg_event_get_entry(const ProcregEvent *event);

/**
 * procreg_event_get_time:
 * @event: an event
 *
 * Returns: when the registry saw the change, µs since the epoch
 */
PROCREG_API gint64 procreg_event_get_time(const ProcregEvent *event);

/**
 * procreg_event_get_external:
 * @event: an event
 *
 * Returns: whether the backend reported it (made in another process or
 *   host), not a call through this registry
 */
PROCREG_API gboolean procreg_event_get_external(const ProcregEvent *event);

/* ------------------------------------------------------------------------ */
/* Namespaces and health                                                    */

/**
 * ProcregNamespaceInfo:
 *
 * One namespace and how many entries it holds.
 */
typedef struct procreg_namespace_info ProcregNamespaceInfo;
#define PROCREG_TYPE_NAMESPACE_INFO (procreg_namespace_info_get_type())
PROCREG_API GType procreg_namespace_info_get_type(void) G_GNUC_CONST;

/**
 * procreg_namespace_info_get_namespace:
 * @info: a namespace's info
 *
 * Returns: (transfer none): the namespace
 */
PROCREG_API const char *
procreg_namespace_info_get_namespace(const ProcregNamespaceInfo *info);

/**
 * procreg_namespace_info_get_entries:
 * @info: a namespace's info
 *
 * Returns: how many entries it holds
 */
PROCREG_API guint64
procreg_namespace_info_get_entries(const ProcregNamespaceInfo *info);

/**
 * ProcregHealth:
 *
 * A structured health report (procreg.h's procreg_health).
 */
typedef struct procreg_health ProcregHealth;
#define PROCREG_TYPE_HEALTH (procreg_health_get_type())
PROCREG_API GType procreg_health_get_type(void) G_GNUC_CONST;

/**
 * procreg_health_get_status:
 * @health: a report
 *
 * Returns: the worst status of the parts
 */
PROCREG_API ProcregHealthStatus
procreg_health_get_status(const ProcregHealth *health);

/**
 * procreg_health_get_backend:
 * @health: a report
 *
 * Returns: (transfer none): the backend's name
 */
PROCREG_API const char *procreg_health_get_backend(const ProcregHealth *health);

/**
 * procreg_health_get_message:
 * @health: a report
 *
 * Returns: (transfer none): one line for people
 */
PROCREG_API const char *procreg_health_get_message(const ProcregHealth *health);

/**
 * procreg_health_get_details:
 * @health: a report
 *
 * Returns: (transfer none): the a{sv} per-part figures and states that
 *   procreg_health_check() describes
 */
PROCREG_API GVariant *procreg_health_get_details(const ProcregHealth *health);

/* ------------------------------------------------------------------------ */
/* The registry                                                             */

/**
 * ProcregRegistry:
 *
 * An open registry (a procreg of procreg.h), reference counted: the last
 * procreg_registry_unref() closes it, or procreg_registry_close() does
 * at once.
 */
typedef struct _ProcregRegistry ProcregRegistry;
#define PROCREG_TYPE_REGISTRY (procreg_registry_get_type())
PROCREG_API GType procreg_registry_get_type(void) G_GNUC_CONST;

/**
 * ProcregEventFunc:
 * @registry: the registry subscribed to
 * @event: the change, borrowed for the call
 * @user_data: the data given to procreg_registry_subscribe()
 *
 * Called for each change a subscription sees.
 */
typedef void (*ProcregEventFunc)(ProcregRegistry *registry,
                                 const ProcregEvent *event,
                                 gpointer user_data);

/**
 * procreg_registry_open: (constructor)
 * @spec: (nullable): a backend spec, `NAME[:OPT=VALUE,...]` as procreg_open()
 *   reads it; %NULL for $PROCREG_BACKEND or the default backend
 * @error: return location for a #GError, or %NULL
 *
 * Open a registry.
 *
 * Returns: (transfer full): the registry, or %NULL with @error set
 *   (%PROCREG_EINVAL: a malformed spec, with its position in the details;
 *   %PROCREG_EUNKNOWN_BACKEND, with the backends as alternatives; what the
 *   backend reports when it fails to start)
 */
PROCREG_API ProcregRegistry *procreg_registry_open(const char *spec,
                                                   GError **error);

/**
 * procreg_registry_ref:
 * @registry: a registry
 *
 * Returns: (transfer full): @registry
 */
PROCREG_API ProcregRegistry *procreg_registry_ref(ProcregRegistry *registry);

/**
 * procreg_registry_unref:
 * @registry: (nullable) (transfer full): a registry
 *
 * Drop a reference; the last one closes the registry (unless
 * procreg_registry_close() did).
 */
PROCREG_API void procreg_registry_unref(ProcregRegistry *registry);

/**
 * procreg_registry_close:
 * @registry: a registry
 *
 * Close the registry now, as procreg_close() does: its subscriptions end
 * and every later call fails with %PROCREG_EINVAL ("closed").  No other
 * call on @registry may be running.  A binding whose event callbacks hold
 * the registry (a cycle its garbage collector cannot see through C) calls
 * this when done.  Closing twice is harmless.
 */
PROCREG_API void procreg_registry_close(ProcregRegistry *registry);

/**
 * procreg_registry_get_handle: (skip)
 * @registry: a registry
 *
 * The procreg of procreg.h under @registry, for C code that mixes both
 * APIs; owned by @registry.
 *
 * Returns: (nullable): the handle, %NULL once closed
 */
PROCREG_API procreg *procreg_registry_get_handle(ProcregRegistry *registry);

/**
 * procreg_registry_get_spec:
 * @registry: a registry
 *
 * Returns: (transfer none) (nullable): the normalised spec it was opened
 *   with; %NULL once closed
 */
PROCREG_API const char *procreg_registry_get_spec(ProcregRegistry *registry);

/**
 * procreg_registry_register:
 * @registry: a registry
 * @ns: (nullable): the namespace, %NULL for "production"
 * @name: the name
 * @owner: (nullable): the owner process, %NULL for the calling process
 * @metadata: (nullable): a{sv} metadata; a floating reference is sunk
 * @error: return location for a #GError, or %NULL
 *
 * Register (@ns, @name) as procreg_register() does: keys are unique, and
 * when the key is taken nothing changes and the details of the
 * %PROCREG_EEXISTS error hold the entry that has it.
 *
 * Returns: (transfer full): the new entry, or %NULL with @error set
 *   (%PROCREG_EEXISTS, %PROCREG_EINVAL, %PROCREG_ENOTALIVE, ...)
 */
PROCREG_API ProcregEntry *procreg_registry_register(ProcregRegistry *registry,
                                                    const char *ns,
                                                    const char *name,
                                                    const ProcregOwner *owner,
                                                    GVariant *metadata,
                                                    GError **error);

/**
 * procreg_registry_lookup:
 * @registry: a registry
 * @ns: (nullable): the namespace, %NULL for "production"
 * @name: the name
 * @error: return location for a #GError, or %NULL
 *
 * The owner of (@ns, @name).
 *
 * Returns: (transfer full): the owner, or %NULL with @error set
 *   (%PROCREG_ENOTFOUND: its details list names that do exist there)
 */
PROCREG_API ProcregOwner *procreg_registry_lookup(ProcregRegistry *registry,
                                                  const char *ns,
                                                  const char *name,
                                                  GError **error);

/**
 * procreg_registry_lookup_key:
 * @registry: a registry
 * @key: a prepared key
 * @error: return location for a #GError, or %NULL
 *
 * procreg_registry_lookup() for a prepared key.
 *
 * Returns: (transfer full): the owner, or %NULL with @error set
 */
PROCREG_API ProcregOwner *procreg_registry_lookup_key(ProcregRegistry *registry,
                                                      const ProcregKey *key,
                                                      GError **error);

/**
 * procreg_registry_lookup_entry:
 * @registry: a registry
 * @ns: (nullable): the namespace, %NULL for "production"
 * @name: the name
 * @error: return location for a #GError, or %NULL
 *
 * Returns: (transfer full): the whole entry (namespace and name set), or
 *   %NULL with @error set, as procreg_registry_lookup()
 */
PROCREG_API ProcregEntry *procreg_registry_lookup_entry(ProcregRegistry *registry,
                                                        const char *ns,
                                                        const char *name,
                                                        GError **error);

/**
 * procreg_registry_unregister:
 * @registry: a registry
 * @ns: (nullable): the namespace, %NULL for "production"
 * @name: the name
 * @if_revision: remove it only while at this revision; 0 for any
 * @flags: %PROCREG_FORCE to remove it whoever owns it
 * @error: return location for a #GError, or %NULL
 *
 * Remove (@ns, @name), which the calling process must own unless @flags
 * has %PROCREG_FORCE (procreg_unregister_full()).
 *
 * Returns: %TRUE, or %FALSE with @error set (%PROCREG_ENOTFOUND,
 *   %PROCREG_EPERM, %PROCREG_ECONFLICT, ...)
 */
PROCREG_API gboolean procreg_registry_unregister(ProcregRegistry *registry,
                                                 const char *ns,
                                                 const char *name,
                                                 guint64 if_revision,
                                                 ProcregWriteFlags flags,
                                                 GError **error);

/**
 * procreg_registry_update_metadata:
 * @registry: a registry
 * @ns: (nullable): the namespace, %NULL for "production"
 * @name: the name
 * @metadata: (nullable): a{sv} metadata; a floating reference is sunk
 * @mode: replace the metadata or merge into it
 * @if_revision: change it only while at this revision; 0 for any
 * @flags: %PROCREG_FORCE to change it whoever owns it
 * @error: return location for a #GError, or %NULL
 *
 * Change the metadata of (@ns, @name) (procreg_update_metadata_full()).
 *
 * Returns: the new revision, or 0 with @error set
 */
PROCREG_API guint64 procreg_registry_update_metadata(ProcregRegistry *registry,
                                                     const char *ns,
                                                     const char *name,
                                                     GVariant *metadata,
                                                     ProcregUpdateMode mode,
                                                     guint64 if_revision,
                                                     ProcregWriteFlags flags,
                                                     GError **error);

/**
 * procreg_registry_list:
 * @registry: a registry
 * @ns: (nullable): a namespace, %NULL for all
 * @error: return location for a #GError, or %NULL
 *
 * Returns: (transfer container) (element-type ProcregEntry): the entries,
 *   sorted by namespace then name, or %NULL with @error set
 */
PROCREG_API GPtrArray *procreg_registry_list(ProcregRegistry *registry,
                                             const char *ns, GError **error);

/**
 * procreg_registry_count:
 * @registry: a registry
 * @ns: (nullable): a namespace, %NULL for all
 * @error: return location for a #GError, or %NULL
 *
 * Returns: the number of entries, or 0 with @error set
 */
PROCREG_API guint64 procreg_registry_count(ProcregRegistry *registry,
                                           const char *ns, GError **error);

/**
 * procreg_registry_find:
 * @registry: a registry
 * @ns: (nullable): a namespace, %NULL for all
 * @meta_key: a metadata key
 * @value: a string, boolean or integer (integers compare by value)
 * @error: return location for a #GError, or %NULL
 *
 * The entries whose metadata maps @meta_key to @value (procreg_find()).
 *
 * Returns: (transfer container) (element-type ProcregEntry): the entries,
 *   sorted as procreg_registry_list() sorts, or %NULL with @error set
 */
PROCREG_API GPtrArray *procreg_registry_find(ProcregRegistry *registry,
                                             const char *ns,
                                             const char *meta_key,
                                             GVariant *value, GError **error);

/**
 * procreg_registry_list_owned:
 * @registry: a registry
 * @pid: a process id
 * @error: return location for a #GError, or %NULL
 *
 * The entries of process @pid registered through @registry.
 *
 * Returns: (transfer container) (element-type ProcregEntry): the entries,
 *   or %NULL with @error set
 */
PROCREG_API GPtrArray *procreg_registry_list_owned(ProcregRegistry *registry,
                                                   gint pid, GError **error);

/**
 * procreg_registry_subscribe:
 * @registry: a registry
 * @ns: (nullable): a namespace, %NULL for every namespace
 * @name: (nullable): a name in @ns, %NULL for the whole namespace
 * @func: (scope notified) (closure user_data) (destroy destroy): called
 *   for each change
 * @user_data: data for @func
 * @destroy: (nullable): called on @user_data when the subscription ends
 * @error: return location for a #GError, or %NULL
 *
 * Subscribe to the changes of one key, one namespace or all of them, as
 * procreg_subscribe() does.  @func runs in the thread-default main context
 * of the calling thread (a main loop must run it), in sequence order.
 *
 * Returns: the subscription's id (never 0), or 0 with @error set
 */
PROCREG_API guint64 procreg_registry_subscribe(ProcregRegistry *registry,
                                               const char *ns,
                                               const char *name,
                                               ProcregEventFunc func,
                                               gpointer user_data,
                                               GDestroyNotify destroy,
                                               GError **error);

/**
 * procreg_registry_subscribe_from:
 * @registry: a registry
 * @ns: (nullable): a namespace, %NULL for every namespace
 * @name: (nullable): a name in @ns, %NULL for the whole namespace
 * @after: the position of the last event already handled
 * @func: (scope notified) (closure user_data) (destroy destroy): called
 *   for each change
 * @user_data: data for @func
 * @destroy: (nullable): called on @user_data when the subscription ends
 * @error: return location for a #GError, or %NULL
 *
 * procreg_registry_subscribe() that first replays the changes after
 * position @after, as procreg_subscribe_from() does (%PROCREG_ECOMPACTED:
 * that history is gone; list again).
 *
 * Returns: the subscription's id (never 0), or 0 with @error set
 */
PROCREG_API guint64 procreg_registry_subscribe_from(
    ProcregRegistry *registry, const char *ns, const char *name,
    guint64 after, ProcregEventFunc func, gpointer user_data,
    GDestroyNotify destroy, GError **error);

/**
 * procreg_registry_get_position:
 * @registry: a registry
 * @error: return location for a #GError, or %NULL
 *
 * The position of the latest change, as procreg_event_position().
 *
 * Returns: the position (0: none yet, or an error set in @error)
 */
PROCREG_API guint64 procreg_registry_get_position(ProcregRegistry *registry,
                                                  GError **error);

/**
 * procreg_registry_unsubscribe:
 * @registry: a registry
 * @id: a subscription of @registry
 * @error: return location for a #GError, or %NULL
 *
 * End subscription @id; its destroy function runs before this returns
 * (or after the callback, when called from it).
 *
 * Returns: %TRUE, or %FALSE with @error set (%PROCREG_ENOTFOUND)
 */
PROCREG_API gboolean procreg_registry_unsubscribe(ProcregRegistry *registry,
                                                  guint64 id, GError **error);

/**
 * procreg_registry_wait_for:
 * @registry: a registry
 * @ns: (nullable): the namespace, %NULL for "production"
 * @name: the name
 * @timeout_ms: the longest wait; < 0 without limit, 0 only checks
 * @cancellable: (nullable): cancels the wait
 * @error: return location for a #GError, or %NULL
 *
 * Wait until (@ns, @name) is registered (procreg_wait_for()), without
 * polling.  It blocks the calling thread.
 *
 * Returns: (transfer full): the entry, or %NULL with @error set
 *   (%PROCREG_ETIMEDOUT, %PROCREG_ECANCELLED, ...)
 */
PROCREG_API ProcregEntry *procreg_registry_wait_for(ProcregRegistry *registry,
                                                    const char *ns,
                                                    const char *name,
                                                    gint timeout_ms,
                                                    GCancellable *cancellable,
                                                    GError **error);

/**
 * procreg_registry_new_test_namespace:
 * @registry: a registry
 * @error: return location for a #GError, or %NULL
 *
 * A fresh namespace for one test ("test-" and 16 random hex digits),
 * checked to be empty (procreg_namespace_new_test()).
 *
 * Returns: (transfer full): the namespace, or %NULL with @error set
 */
PROCREG_API char *procreg_registry_new_test_namespace(ProcregRegistry *registry,
                                                      GError **error);

/**
 * procreg_registry_drop_namespace:
 * @registry: a registry
 * @ns: a namespace
 * @atomic: (out) (optional): whether the backend removed the entries in
 *   one atomic step
 * @error: return location for a #GError, or %NULL
 *
 * Remove every entry of @ns (procreg_namespace_drop()).
 *
 * Returns: how many entries went; 0 with @error set on failure
 */
PROCREG_API guint64 procreg_registry_drop_namespace(ProcregRegistry *registry,
                                                    const char *ns,
                                                    gboolean *atomic,
                                                    GError **error);

/**
 * procreg_registry_list_namespaces:
 * @registry: a registry
 * @error: return location for a #GError, or %NULL
 *
 * Returns: (transfer container) (element-type ProcregNamespaceInfo): the
 *   namespaces that hold entries, sorted, or %NULL with @error set
 */
PROCREG_API GPtrArray *procreg_registry_list_namespaces(ProcregRegistry *registry,
                                                        GError **error);

/**
 * procreg_registry_check_health:
 * @registry: a registry
 * @error: return location for a #GError, or %NULL
 *
 * Check the backend and the core (procreg_health_check()): a failing
 * backend is a report of status FAILED, not an error.
 *
 * Returns: (transfer full): the report, or %NULL with @error set
 */
PROCREG_API ProcregHealth *procreg_registry_check_health(ProcregRegistry *registry,
                                                         GError **error);

/**
 * procreg_registry_get_stats:
 * @registry: a registry
 * @error: return location for a #GError, or %NULL
 *
 * Returns: (transfer full): the a{sv} statistics of procreg_stats(), or
 *   %NULL with @error set
 */
PROCREG_API GVariant *procreg_registry_get_stats(ProcregRegistry *registry,
                                                 GError **error);

/**
 * procreg_registry_get_stats_prometheus:
 * @registry: a registry
 * @error: return location for a #GError, or %NULL
 *
 * Returns: (transfer full): the statistics in the Prometheus text format
 *   (procreg_stats_write_prometheus()), or %NULL with @error set
 */
PROCREG_API char *procreg_registry_get_stats_prometheus(ProcregRegistry *registry,
                                                        GError **error);

G_END_DECLS

#endif /* PROCREG_GTYPES_H */
