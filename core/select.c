/*
 * Select: the entries that match a filter (filter.c), and the removal of
 * the caller's own matches.  The candidates come from the cheapest source
 * the filter allows — one lookup for a top-level name == "..." in a
 * namespace, the backend's metadata index (procreg_find()) for a top-level
 * metadata equality, else the whole listing — and every candidate is
 * checked against the whole filter, so each source gives the same result.
 * Dead owners' entries are left out as procreg_list() leaves them out.
 */
#include "internal.h"

#include <string.h>

/* The entries that may match @filter, sorted (ns, name). */
static int candidates(procreg *reg, const char *ns,
                      const procreg_filter *filter, procreg_entry **out,
                      size_t *n_out, GError **error)
{
    *out = NULL;
    *n_out = 0;
    if (ns != NULL) {
        int rc = procreg_validate_name(ns, "namespace", error);
        if (rc != 0)
            return rc;
    }
    const char *name = filter ? procreg_filter_name_term(filter) : NULL;
    if (name != NULL && ns != NULL) {
        procreg_entry e = {0};
        int rc = procreg_lookup_entry(reg, ns, name, &e, NULL);
        if (rc == PROCREG_ENOTFOUND || rc == PROCREG_EINVAL)
            return 0; /* no entry has it (or could: not a valid name) */
        if (rc != 0)
            return procreg_set_error(error, rc, "select: looking up '%s' in "
                                     "'%s': %s", name, ns,
                                     procreg_strerror(rc));
        e.ns = g_strdup(ns);
        e.name = g_strdup(name);
        *out = g_new(procreg_entry, 1);
        (*out)[0] = e;
        *n_out = 1;
        return 0;
    }
    GVariant *value = NULL;
    const char *key = filter ? procreg_filter_index_term(filter, &value) : NULL;
    if (key == NULL)
        return procreg_list(reg, ns, out, n_out, error);
    int rc = procreg_find(reg, ns, key, value, out, n_out, error);
    g_variant_unref(value);
    return rc;
}

/* Keep the entries of @v that match @filter at its front; their count. */
static size_t keep_matches(procreg_entry *v, size_t n,
                           const procreg_filter *filter)
{
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (filter == NULL || procreg_filter_matches(filter, &v[i]))
            v[kept++] = v[i];
        else
            procreg_entry_clear(&v[i]);
    }
    return kept;
}

PROCREG_API int procreg_select(procreg *reg, const char *ns,
                               const procreg_filter *filter,
                               procreg_entry **out, size_t *n_out,
                               GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL && n_out != NULL,
                         PROCREG_EINVAL);
    procreg_entry *v = NULL;
    size_t n = 0;
    int rc = candidates(reg, ns, filter, &v, &n, error);
    if (rc == 0)
        n = keep_matches(v, n, filter);
    if (rc != 0 || n == 0) {
        procreg_entries_free(v, n);
        v = NULL;
        n = 0;
    }
    *out = v;
    *n_out = n;
    return rc;
}

PROCREG_API int procreg_select_count(procreg *reg, const char *ns,
                                     const procreg_filter *filter,
                                     size_t *out, GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    procreg_entry *v = NULL;
    size_t n = 0;
    int rc = procreg_select(reg, ns, filter, &v, &n, error);
    procreg_entries_free(v, n);
    *out = n;
    return rc;
}

PROCREG_API int procreg_unregister_match(procreg *reg, const char *ns,
                                         const procreg_filter *filter,
                                         size_t *removed, GError **error)
{
    if (removed != NULL)
        *removed = 0;
    procreg_entry *v = NULL;
    size_t n = 0;
    int rc = procreg_select(reg, ns, filter, &v, &n, error);
    procreg_owner self;
    procreg_owner_self(&self);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!procreg_owner_same(&v[i].owner, &self))
            continue;
        procreg_stack_key key;
        rc = procreg_key_init_stack(&key, v[i].ns, v[i].name, error);
        GError *local = NULL;
        if (rc == 0)
            rc = procreg_unregister_key(reg, &key.key, v[i].revision,
                                        error != NULL ? &local : NULL);
        if (rc == 0 && removed != NULL)
            (*removed)++;
        /* Changed or gone since it matched: not ours to remove now. */
        if (rc == PROCREG_ECONFLICT || rc == PROCREG_ENOTFOUND ||
            rc == PROCREG_EPERM) {
            g_clear_error(&local);
            rc = 0;
        } else if (local != NULL) {
            g_propagate_error(error, local);
        }
    }
    procreg_entries_free(v, n);
    return rc;
}
