/*
 * GTypes for the types of procreg.h that cross a language boundary
 * (include/procreg/gtypes.h): the enumerations, and boxed owners, keys,
 * entries, error details, events, namespace infos and health reports;
 * their accessors; the details of the last error a binding call raised on
 * each thread.  The registry handle is gregistry.c's.
 *
 * Boxed copies own everything they point to; the structs procreg.h's
 * calls fill are the same types, so a binding reads them in place.
 */
#include "internal.h"

#include <procreg/gtypes.h>

#include <string.h>

/* ---- enumerations ---- */

#define VALUE(symbol, nick) {symbol, #symbol, nick}
#define VALUES_END {0, NULL, NULL}

static const GEnumValue error_values[] = {
    VALUE(PROCREG_ERROR_FAILED, "failed"),
    VALUE(PROCREG_EINVAL, "einval"),
    VALUE(PROCREG_ENOTFOUND, "enotfound"),
    VALUE(PROCREG_EEXISTS, "eexists"),
    VALUE(PROCREG_ENOTALIVE, "enotalive"),
    VALUE(PROCREG_ENOMEM, "enomem"),
    VALUE(PROCREG_ENOTSUP, "enotsup"),
    VALUE(PROCREG_ETIMEDOUT, "etimedout"),
    VALUE(PROCREG_ECANCELLED, "ecancelled"),
    VALUE(PROCREG_ECONFLICT, "econflict"),
    VALUE(PROCREG_EFULL, "efull"),
    VALUE(PROCREG_EBACKEND, "ebackend"),
    VALUE(PROCREG_EUNKNOWN_BACKEND, "eunknown-backend"),
    VALUE(PROCREG_EPERM, "eperm"),
    VALUE(PROCREG_ECOMPACTED, "ecompacted"),
    VALUES_END,
};

static const GEnumValue event_kind_values[] = {
    VALUE(PROCREG_EVENT_REGISTERED, "registered"),
    VALUE(PROCREG_EVENT_UNREGISTERED, "unregistered"),
    VALUE(PROCREG_EVENT_UPDATED, "updated"),
    VALUES_END,
};

static const GEnumValue event_reason_values[] = {
    VALUE(PROCREG_REASON_NONE, "none"),
    VALUE(PROCREG_REASON_EXPLICIT, "explicit"),
    VALUE(PROCREG_REASON_OWNER_EXITED, "owner-exited"),
    VALUE(PROCREG_REASON_NAMESPACE_DROPPED, "namespace-dropped"),
    VALUE(PROCREG_REASON_REPLACED, "replaced"),
    VALUE(PROCREG_REASON_EXPIRED, "expired"),
    VALUE(PROCREG_REASON_FORCED, "forced"),
    VALUES_END,
};

static const GEnumValue update_mode_values[] = {
    VALUE(PROCREG_UPDATE_REPLACE, "replace"),
    VALUE(PROCREG_UPDATE_MERGE, "merge"),
    VALUES_END,
};

static const GFlagsValue write_flags_values[] = {
    VALUE(PROCREG_WRITE_DEFAULT, "default"),
    VALUE(PROCREG_FORCE, "force"),
    VALUES_END,
};

static const GEnumValue health_status_values[] = {
    VALUE(PROCREG_HEALTH_OK, "ok"),
    VALUE(PROCREG_HEALTH_DEGRADED, "degraded"),
    VALUE(PROCREG_HEALTH_FAILED, "failed"),
    VALUES_END,
};

#define DEFINE_ENUM_TYPE(fn, TypeName, values, register_fn)                  \
    PROCREG_API GType fn(void)                                               \
    {                                                                        \
        static gsize type;                                                   \
        if (g_once_init_enter(&type))                                        \
            g_once_init_leave(&type, register_fn(g_intern_static_string(     \
                                                     TypeName), values));    \
        return (GType)type;                                                  \
    }

DEFINE_ENUM_TYPE(procreg_error_get_type, "ProcregError", error_values,
                 g_enum_register_static)
DEFINE_ENUM_TYPE(procreg_event_kind_get_type, "ProcregEventKind",
                 event_kind_values, g_enum_register_static)
DEFINE_ENUM_TYPE(procreg_event_reason_get_type, "ProcregEventReason",
                 event_reason_values, g_enum_register_static)
DEFINE_ENUM_TYPE(procreg_update_mode_get_type, "ProcregUpdateMode",
                 update_mode_values, g_enum_register_static)
DEFINE_ENUM_TYPE(procreg_write_flags_get_type, "ProcregWriteFlags",
                 write_flags_values, g_flags_register_static)
DEFINE_ENUM_TYPE(procreg_health_status_get_type, "ProcregHealthStatus",
                 health_status_values, g_enum_register_static)

/* ---- owners ---- */

static ProcregOwner *owner_copy(ProcregOwner *owner)
{
    return g_memdup2(owner, sizeof *owner);
}

G_DEFINE_BOXED_TYPE(ProcregOwner, procreg_owner, owner_copy, g_free)

PROCREG_API ProcregOwner *procreg_owner_new_self(void)
{
    ProcregOwner *o = g_new(ProcregOwner, 1);
    procreg_owner_self(o);
    return o;
}

PROCREG_API ProcregOwner *procreg_owner_new_for_pid(gint pid, GError **error)
{
    ProcregOwner o;
    if (procreg_owner_from_pid(pid, &o, error) != 0) {
        procreg_gi_note_error(error);
        return NULL;
    }
    return owner_copy(&o);
}

PROCREG_API gint procreg_owner_get_pid(const ProcregOwner *owner)
{
    return owner->pid;
}

PROCREG_API guint64 procreg_owner_get_start_time(const ProcregOwner *owner)
{
    return owner->start_time;
}

PROCREG_API gboolean procreg_owner_get_alive(const ProcregOwner *owner)
{
    return procreg_owner_is_alive(owner);
}

/* ---- keys ---- */

G_DEFINE_BOXED_TYPE(ProcregKey, procreg_key, procreg_key_ref,
                    procreg_key_unref)

PROCREG_API ProcregKey *procreg_key_make(const char *ns, const char *name,
                                         GError **error)
{
    ProcregKey *key = NULL;
    if (procreg_key_new(ns, name, &key, error) != 0)
        procreg_gi_note_error(error);
    return key;
}

/* ---- entries ---- */

/* Fill @dest with a copy of @src that owns its strings and a reference
 * to the metadata. */
static void entry_copy_into(procreg_entry *dest, const procreg_entry *src)
{
    *dest = *src;
    dest->ns = g_strdup(src->ns);
    dest->name = g_strdup(src->name);
    if (dest->metadata != NULL)
        g_variant_ref(dest->metadata);
}

static ProcregEntry *entry_copy(ProcregEntry *entry)
{
    ProcregEntry *e = g_new(ProcregEntry, 1);
    entry_copy_into(e, entry);
    return e;
}

PROCREG_INTERNAL ProcregEntry *procreg_gi_entry_take(procreg_entry *entry)
{
    ProcregEntry *e = g_memdup2(entry, sizeof *entry);
    memset(entry, 0, sizeof *entry);
    return e;
}

PROCREG_INTERNAL void procreg_gi_entry_free(ProcregEntry *entry)
{
    procreg_entry_clear(entry);
    g_free(entry);
}

G_DEFINE_BOXED_TYPE(ProcregEntry, procreg_entry, entry_copy,
                    procreg_gi_entry_free)

PROCREG_API const char *procreg_entry_get_namespace(const ProcregEntry *entry)
{
    return entry->ns;
}

PROCREG_API const char *procreg_entry_get_name(const ProcregEntry *entry)
{
    return entry->name;
}

PROCREG_API const ProcregOwner *
procreg_entry_get_owner(const ProcregEntry *entry)
{
    return &entry->owner;
}

PROCREG_API GVariant *procreg_entry_get_metadata(const ProcregEntry *entry)
{
    return entry->metadata;
}

PROCREG_API gint64 procreg_entry_get_registered_at(const ProcregEntry *entry)
{
    return entry->registered_at;
}

PROCREG_API guint64 procreg_entry_get_revision(const ProcregEntry *entry)
{
    return entry->revision;
}

/* ---- error details ---- */

static ProcregErrorDetails *
error_details_copy(ProcregErrorDetails *details)
{
    ProcregErrorDetails *d = g_new0(ProcregErrorDetails, 1);
    d->alternatives = g_strdupv(details->alternatives);
    d->position = details->position;
    if (details->entry != NULL)
        d->entry = entry_copy(details->entry);
    return d;
}

static void error_details_free(ProcregErrorDetails *details)
{
    g_strfreev(details->alternatives);
    if (details->entry != NULL)
        procreg_gi_entry_free(details->entry);
    g_free(details);
}

G_DEFINE_BOXED_TYPE(ProcregErrorDetails, procreg_error_details,
                    error_details_copy, error_details_free)

/* The last PROCREG_ERROR GError a call of gtypes.h raised on this thread,
 * with its details: PyGObject gives a binding back only the domain, code
 * and message of an error (it makes a new GError of them), so
 * procreg_error_details_from_error() finds the details here. */
static GPrivate last_error = G_PRIVATE_INIT((GDestroyNotify)g_error_free);

PROCREG_INTERNAL void procreg_gi_note_error(GError **error)
{
    if (error != NULL && *error != NULL && (*error)->domain == PROCREG_ERROR)
        g_private_replace(&last_error, g_error_copy(*error));
}

PROCREG_API ProcregErrorDetails *
procreg_error_details_from_error(const GError *error)
{
    const GError *last = g_private_get(&last_error);
    if (error != NULL && last != NULL && error->domain == last->domain &&
        error->code == last->code &&
        g_strcmp0(error->message, last->message) == 0)
        error = last;
    const procreg_error_details *d = procreg_error_get_details(error);
    return d != NULL ? g_boxed_copy(PROCREG_TYPE_ERROR_DETAILS, d) : NULL;
}

PROCREG_API const char *const *
procreg_error_details_get_alternatives(const ProcregErrorDetails *details)
{
    return (const char *const *)details->alternatives;
}

PROCREG_API const ProcregEntry *
procreg_error_details_get_entry(const ProcregErrorDetails *details)
{
    return details->entry;
}

PROCREG_API gint
procreg_error_details_get_position(const ProcregErrorDetails *details)
{
    return details->position;
}

/* ---- events ---- */

/* A copied event: its strings and entry live in the same block. */
typedef struct {
    procreg_event event; /* first: a ProcregEvent * points here */
    procreg_entry entry;
} event_copy_block;

static ProcregEvent *event_copy(ProcregEvent *event)
{
    event_copy_block *b = g_new(event_copy_block, 1);
    b->event = *event;
    entry_copy_into(&b->entry, event->entry);
    if (b->entry.ns == NULL)
        b->entry.ns = g_strdup(event->ns);
    if (b->entry.name == NULL)
        b->entry.name = g_strdup(event->name);
    b->event.ns = b->entry.ns;
    b->event.name = b->entry.name;
    b->event.entry = &b->entry;
    return &b->event;
}

static void event_free(ProcregEvent *event)
{
    event_copy_block *b = (event_copy_block *)event;
    procreg_entry_clear(&b->entry);
    g_free(b);
}

G_DEFINE_BOXED_TYPE(ProcregEvent, procreg_event, event_copy, event_free)

PROCREG_API guint64 procreg_event_get_seq(const ProcregEvent *event)
{
    return event->seq;
}

PROCREG_API guint64 procreg_event_get_position(const ProcregEvent *event)
{
    return event->position;
}

PROCREG_API ProcregEventKind procreg_event_get_kind(const ProcregEvent *event)
{
    return event->kind;
}

PROCREG_API ProcregEventReason
procreg_event_get_reason(const ProcregEvent *event)
{
    return event->reason;
}

PROCREG_API const ProcregEntry *
procreg_event_get_entry(const ProcregEvent *event)
{
    return event->entry;
}

PROCREG_API gint64 procreg_event_get_time(const ProcregEvent *event)
{
    return event->time;
}

PROCREG_API gboolean procreg_event_get_external(const ProcregEvent *event)
{
    return event->external;
}

/* ---- namespace infos ---- */

static ProcregNamespaceInfo *
namespace_info_copy(ProcregNamespaceInfo *info)
{
    ProcregNamespaceInfo *i = g_new(ProcregNamespaceInfo, 1);
    i->ns = g_strdup(info->ns);
    i->entries = info->entries;
    return i;
}

PROCREG_INTERNAL void procreg_gi_namespace_info_free(ProcregNamespaceInfo *info)
{
    g_free(info->ns);
    g_free(info);
}

G_DEFINE_BOXED_TYPE(ProcregNamespaceInfo, procreg_namespace_info,
                    namespace_info_copy, procreg_gi_namespace_info_free)

PROCREG_API const char *
procreg_namespace_info_get_namespace(const ProcregNamespaceInfo *info)
{
    return info->ns;
}

PROCREG_API guint64
procreg_namespace_info_get_entries(const ProcregNamespaceInfo *info)
{
    return info->entries;
}

/* ---- health reports ---- */

static ProcregHealth *health_copy(ProcregHealth *health)
{
    ProcregHealth *h = g_new(ProcregHealth, 1);
    h->status = health->status;
    h->backend = g_strdup(health->backend);
    h->message = g_strdup(health->message);
    h->details = health->details ? g_variant_ref(health->details) : NULL;
    return h;
}

static void health_free(ProcregHealth *health)
{
    procreg_health_clear(health);
    g_free(health);
}

G_DEFINE_BOXED_TYPE(ProcregHealth, procreg_health, health_copy, health_free)

PROCREG_API ProcregHealthStatus
procreg_health_get_status(const ProcregHealth *health)
{
    return health->status;
}

PROCREG_API const char *procreg_health_get_backend(const ProcregHealth *health)
{
    return health->backend;
}

PROCREG_API const char *procreg_health_get_message(const ProcregHealth *health)
{
    return health->message;
}

PROCREG_API GVariant *procreg_health_get_details(const ProcregHealth *health)
{
    return health->details;
}
