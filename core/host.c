/*
 * Backend hosts: how a backend reports changes to the registry that opened
 * it (procreg_backend_host_notify() for changes made elsewhere,
 * procreg_backend_host_notify_own() for its own in commit order), and the
 * child hosts decorators put between their inner backend and the registry.
 * A notification updates the owner index (owner-index.c), counts a dead
 * owner's removal once, and becomes an event (events.c).  Group changes
 * (JOINED, LEFT) travel the same way, the member described by the entry
 * (backend.h).
 */
#include "internal.h"

#include <string.h>

struct procreg_backend_host {
    procreg *reg; /* the root host of a registry; NULL for a child */
    procreg_backend_host *parent;
    procreg_backend_host_notify_fn fn;
    gpointer user_data;
};

PROCREG_INTERNAL procreg_backend_host *procreg_host_new_root(procreg *reg)
{
    procreg_backend_host *host = g_new0(procreg_backend_host, 1);
    host->reg = reg;
    return host;
}

PROCREG_INTERNAL void procreg_host_free_root(procreg_backend_host *host)
{
    g_free(host);
}

PROCREG_API procreg_backend_host *
procreg_backend_host_new_child(procreg_backend_host *parent,
                               procreg_backend_host_notify_fn fn,
                               gpointer user_data)
{
    procreg_backend_host *host = g_new0(procreg_backend_host, 1);
    host->parent = parent;
    host->fn = fn;
    host->user_data = user_data;
    return host;
}

PROCREG_API void procreg_backend_host_free(procreg_backend_host *host)
{
    if (host == NULL)
        return;
    g_return_if_fail(host->reg == NULL);
    g_free(host);
}

static bool notification_valid(const char *what, procreg_event_kind kind,
                               const procreg_entry *entry)
{
    if (entry == NULL || entry->ns == NULL || entry->name == NULL ||
        procreg_validate_name(entry->ns, "namespace", NULL) != 0 ||
        procreg_validate_name(entry->name, "name", NULL) != 0) {
        g_warning("%s: the entry needs a valid namespace and name; "
                  "notification ignored", what);
        return false;
    }
    if (kind != PROCREG_EVENT_REGISTERED && kind != PROCREG_EVENT_UNREGISTERED &&
        kind != PROCREG_EVENT_UPDATED && !procreg_event_kind_is_group(kind)) {
        g_warning("%s: unknown event kind %d; notification ignored", what,
                  (int)kind);
        return false;
    }
    return true;
}

/* A valid notification reaching the registry.  A dead owner's removal is
 * reported alike whoever reaped it (this registry's monitor, the backend's
 * own reaper, another process): counted once here (events.c makes it
 * never external). */
static void deliver(procreg *reg, procreg_event_kind kind,
                    procreg_event_reason reason, const procreg_entry *entry,
                    bool external, uint64_t position)
{
    if (kind == PROCREG_EVENT_UNREGISTERED || kind == PROCREG_EVENT_LEFT) {
        if (kind == PROCREG_EVENT_LEFT)
            procreg_owner_index_remove_member(reg, entry->ns, entry->name,
                                              &entry->owner, entry->revision);
        else
            procreg_owner_index_remove(reg, entry->ns, entry->name,
                                       &entry->owner, entry->revision);
        if (reason == PROCREG_REASON_OWNER_EXITED)
            procreg_removal_seen(reg, entry->ns, entry->name, 0);
    }
    procreg_events_emit(reg, kind, reason, entry->ns, entry->name, entry,
                        external, position);
}

PROCREG_API void procreg_backend_host_notify_at(procreg_backend_host *host,
                                                procreg_event_kind kind,
                                                procreg_event_reason reason,
                                                const procreg_entry *entry,
                                                bool own, uint64_t position)
{
    /* Decorators' write paths know their own writes: those go straight to
     * the registry; the others pass each child host on the way. */
    for (; host != NULL && host->reg == NULL; host = host->parent)
        if (!own && host->fn != NULL)
            host->fn(host->user_data, kind, reason, entry);
    if (host != NULL &&
        notification_valid(own ? "procreg_backend_host_notify_own"
                               : "procreg_backend_host_notify",
                           kind, entry))
        deliver(host->reg, kind, reason, entry, !own, position);
}

PROCREG_API void procreg_backend_host_notify(procreg_backend_host *host,
                                             procreg_event_kind kind,
                                             procreg_event_reason reason,
                                             const procreg_entry *entry)
{
    procreg_backend_host_notify_at(host, kind, reason, entry, false, 0);
}

PROCREG_API void procreg_backend_host_notify_own(procreg_backend_host *host,
                                                 procreg_event_kind kind,
                                                 procreg_event_reason reason,
                                                 const procreg_entry *entry)
{
    procreg_backend_host_notify_at(host, kind, reason, entry, true, 0);
}
