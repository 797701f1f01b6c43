/* Shared by the files of core/: not installed, not exported. */
#ifndef PROCREG_CORE_INTERNAL_H
#define PROCREG_CORE_INTERNAL_H

#include "procreg-config.h"
#include <procreg/backend.h>

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

/* ---- entries and metadata (entry.c) ---- */

/* Whether @metadata is NULL or a dictionary of type a{sv}. */
PROCREG_INTERNAL int procreg_metadata_check(GVariant *metadata, GError **error);
/* Sort by (ns, name) and hand the array's data to the caller. */
PROCREG_INTERNAL void procreg_entry_array_steal(GArray *array,
                                                procreg_entry **out,
                                                size_t *n_out);

#endif
