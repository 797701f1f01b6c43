/* Error codes, their strings and the GError domain. */
#include "internal.h"

#include <stdarg.h>
#include <string.h>

/* ---- the domain, extended with the details (GLib >= 2.68) ---- */

/* A GError of the domain carries this in front of it (GLib's extended
 * errors): the public details, and the entry they may point to. */
typedef struct {
    procreg_error_details details;
    procreg_entry entry;
} error_private;

static void private_init(GError *error);
static void private_copy(const GError *src, GError *dest);
static void private_clear(GError *error);

/* Initialised once with release/acquire ordering: G_DEFINE_QUARK's lazy
 * static is a plain racy store, which ThreadSanitizer rightly reports when
 * two threads set their first error at once. */
PROCREG_API GQuark procreg_error_quark(void)
{
    static gsize quark;
    if (g_once_init_enter(&quark))
        g_once_init_leave(&quark, g_error_domain_register_static(
                                      "procreg-error-quark",
                                      sizeof(error_private), private_init,
                                      private_copy, private_clear));
    return (GQuark)quark;
}

/* Where GLib keeps an extended error's private part: just before it, at
 * the private size rounded up to two words (gerror.c's layout, which
 * G_DEFINE_EXTENDED_ERROR's *_get_private() computes the same way). */
static error_private *private_of(const GError *error)
{
    const gsize align = 2 * sizeof(gsize);
    const gsize size = (sizeof(error_private) + align - 1) & ~(align - 1);
    return (error_private *)((guint8 *)error - size);
}

static void private_init(GError *error)
{
    error_private *p = private_of(error);
    memset(p, 0, sizeof *p);
    p->details.position = -1;
}

static void private_copy(const GError *src, GError *dest)
{
    const error_private *s = private_of(src);
    error_private *d = private_of(dest);
    d->details.alternatives = g_strdupv(s->details.alternatives);
    d->details.position = s->details.position;
    if (s->details.entry != NULL) {
        d->entry = s->entry;
        d->entry.ns = g_strdup(s->entry.ns);
        d->entry.name = g_strdup(s->entry.name);
        if (d->entry.metadata != NULL)
            g_variant_ref(d->entry.metadata);
        d->details.entry = &d->entry;
    }
}

/* What an entry in the details holds (error.c is the bottom layer: it
 * does not call entry.c's procreg_entry_clear()). */
static void entry_release(procreg_entry *e)
{
    g_free(e->ns);
    g_free(e->name);
    if (e->metadata != NULL)
        g_variant_unref(e->metadata);
    memset(e, 0, sizeof *e);
}

static void private_clear(GError *error)
{
    error_private *p = private_of(error);
    g_strfreev(p->details.alternatives);
    entry_release(&p->entry);
    memset(p, 0, sizeof *p);
}

PROCREG_API const procreg_error_details *
procreg_error_get_details(const GError *error)
{
    if (error == NULL || error->domain != PROCREG_ERROR)
        return NULL;
    return &private_of(error)->details;
}

/* The details of the error in @error to fill, or NULL: none asked for, or
 * one of another domain. */
static procreg_error_details *details_to_fill(GError **error)
{
    if (error == NULL || *error == NULL || (*error)->domain != PROCREG_ERROR)
        return NULL;
    return &private_of(*error)->details;
}

PROCREG_INTERNAL void procreg_error_detail_entry(GError **error,
                                                 const char *ns,
                                                 const char *name,
                                                 const procreg_entry *entry)
{
    procreg_error_details *d = details_to_fill(error);
    if (d == NULL || entry == NULL)
        return;
    error_private *p = private_of(*error);
    entry_release(&p->entry);
    p->entry = *entry;
    p->entry.ns = g_strdup(entry->ns ? entry->ns : ns);
    p->entry.name = g_strdup(entry->name ? entry->name : name);
    if (p->entry.metadata != NULL)
        g_variant_ref(p->entry.metadata);
    d->entry = &p->entry;
}

PROCREG_INTERNAL void procreg_error_detail_alternatives(GError **error,
                                                        char **names)
{
    procreg_error_details *d = details_to_fill(error);
    if (d == NULL)
        return;
    g_strfreev(d->alternatives);
    d->alternatives = g_strdupv(names);
}

PROCREG_INTERNAL void procreg_error_detail_position(GError **error,
                                                   int position)
{
    procreg_error_details *d = details_to_fill(error);
    if (d != NULL)
        d->position = position;
}

PROCREG_API const char *procreg_strerror(int code)
{
    switch ((procreg_error_code)code) {
    case PROCREG_OK: return "success";
    case PROCREG_ERROR_FAILED: return "failed";
    case PROCREG_EINVAL: return "invalid argument";
    case PROCREG_ENOTFOUND: return "not found";
    case PROCREG_EEXISTS: return "already registered";
    case PROCREG_ENOTALIVE: return "owner process is not alive";
    case PROCREG_ENOMEM: return "out of memory";
    case PROCREG_ENOTSUP: return "not supported by this backend";
    case PROCREG_ETIMEDOUT: return "timed out";
    case PROCREG_ECANCELLED: return "cancelled";
    case PROCREG_ECONFLICT: return "revision conflict";
    case PROCREG_EFULL: return "storage full";
    case PROCREG_EBACKEND: return "backend failure";
    case PROCREG_EUNKNOWN_BACKEND: return "unknown backend";
    case PROCREG_EPERM: return "owned by another process";
    case PROCREG_ECOMPACTED: return "history no longer kept";
    }
    return "unknown error";
}

PROCREG_API const char *procreg_error_name(int code)
{
    switch ((procreg_error_code)code) {
    case PROCREG_OK: return "PROCREG_OK";
    case PROCREG_ERROR_FAILED: return "PROCREG_ERROR_FAILED";
    case PROCREG_EINVAL: return "PROCREG_EINVAL";
    case PROCREG_ENOTFOUND: return "PROCREG_ENOTFOUND";
    case PROCREG_EEXISTS: return "PROCREG_EEXISTS";
    case PROCREG_ENOTALIVE: return "PROCREG_ENOTALIVE";
    case PROCREG_ENOMEM: return "PROCREG_ENOMEM";
    case PROCREG_ENOTSUP: return "PROCREG_ENOTSUP";
    case PROCREG_ETIMEDOUT: return "PROCREG_ETIMEDOUT";
    case PROCREG_ECANCELLED: return "PROCREG_ECANCELLED";
    case PROCREG_ECONFLICT: return "PROCREG_ECONFLICT";
    case PROCREG_EFULL: return "PROCREG_EFULL";
    case PROCREG_EBACKEND: return "PROCREG_EBACKEND";
    case PROCREG_EUNKNOWN_BACKEND: return "PROCREG_EUNKNOWN_BACKEND";
    case PROCREG_EPERM: return "PROCREG_EPERM";
    case PROCREG_ECOMPACTED: return "PROCREG_ECOMPACTED";
    }
    return NULL;
}

PROCREG_API int procreg_set_error(GError **error, int code, const char *fmt,
                                  ...)
{
    if (error != NULL && *error == NULL) {
        va_list ap;
        va_start(ap, fmt);
        char *msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        g_set_error_literal(error, PROCREG_ERROR, code, msg);
        g_free(msg);
    }
    return code;
}
