/* Error codes, their strings and the GError domain. */
#include "internal.h"

#include <stdarg.h>

/* Initialised once with release/acquire ordering: G_DEFINE_QUARK's lazy
 * static is a plain racy store, which ThreadSanitizer rightly reports when
 * two threads set their first error at once. */
PROCREG_API GQuark procreg_error_quark(void)
{
    static gsize quark;
    if (g_once_init_enter(&quark))
        g_once_init_leave(&quark,
                          g_quark_from_static_string("procreg-error-quark"));
    return (GQuark)quark;
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
    }
    return "unknown error";
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
