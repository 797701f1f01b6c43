/* Namespaces: fresh test namespaces, dropping, listing with counts. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define TEST_HEX 16

PROCREG_API bool procreg_namespace_is_test(const char *ns)
{
    size_t plen = strlen(PROCREG_NS_TEST_PREFIX);
    if (ns == NULL || strncmp(ns, PROCREG_NS_TEST_PREFIX, plen) != 0 ||
        strlen(ns) != plen + TEST_HEX)
        return false;
    for (const char *p = ns + plen; *p; p++)
        if (!g_ascii_isxdigit(*p) || g_ascii_isupper(*p))
            return false;
    return true;
}

PROCREG_API int procreg_namespace_new_test(procreg *reg, char **out,
                                           GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    *out = NULL;
    /* 64 random bits: a collision is not expected in practice; with @reg
     * a name that already holds entries is skipped anyway. */
    for (int attempt = 0;; attempt++) {
        guint64 r = ((guint64)g_random_int() << 32) | g_random_int();
        char *ns = g_strdup_printf(PROCREG_NS_TEST_PREFIX "%016" G_GINT64_MODIFIER
                                   "x", r);
        size_t n = 0;
        int rc = reg ? procreg_backend_count(reg->backend, ns, &n, error) : 0;
        if (rc != 0) {
            g_free(ns);
            return rc;
        }
        if (n == 0 || attempt >= 16) {
            *out = ns;
            return 0;
        }
        g_free(ns);
    }
}

/* Remove every member of the groups of @ns, every stripe held: each
 * member by id, whoever owns it, reason NAMESPACE_DROPPED. */
static int drop_members(procreg *reg, const char *ns, GError **error)
{
    GArray *all = procreg_member_array_new();
    GArray *gone = procreg_member_array_new();
    int rc = procreg_backend_group_list_all(reg->backend, ns, all, error);
    for (guint i = 0; rc == 0 && i < all->len; i++) {
        procreg_member *m = &g_array_index(all, procreg_member, i);
        procreg_stack_key key;
        rc = procreg_key_init_stack(&key, ns, m->group, error);
        if (rc == 0)
            rc = procreg_backend_group_leave(reg->backend, &key.key, m->id,
                                             NULL,
                                             PROCREG_REASON_NAMESPACE_DROPPED,
                                             gone, error);
        if (rc >= 0) {
            procreg_members_gone(reg, &key.key, gone,
                                 PROCREG_REASON_NAMESPACE_DROPPED, 0);
            g_array_set_size(gone, 0);
            rc = 0;
        }
    }
    g_array_unref(gone);
    g_array_unref(all);
    return rc;
}

PROCREG_API int procreg_namespace_drop(procreg *reg, const char *ns,
                                       size_t *removed, bool *atomic,
                                       GError **error)
{
    g_return_val_if_fail(reg != NULL, PROCREG_EINVAL);
    if (removed != NULL)
        *removed = 0;
    if (atomic != NULL)
        *atomic = (procreg_backend_get_caps(reg->backend) &
                   PROCREG_CAP_ATOMIC_DROP) &&
                  reg->ops->drop_namespace != NULL;
    int rc = procreg_validate_name(ns, "namespace", error);
    if (rc == 0)
        rc = procreg_ns_check_writable(ns, error);
    if (rc != 0)
        return rc;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    GArray *gone = procreg_entry_array_new();
    /* Every stripe, in order: no write through this registry interleaves,
     * so each key's events stay in order around the drop. */
    for (int i = 0; i < PROCREG_STRIPES; i++)
        procreg_mutex_lock(&reg->stripes[i].m);
    rc = procreg_backend_drop_namespace(reg->backend, ns, gone, error);
    /* Whatever went, even on a partial failure, is reported. */
    for (guint i = 0; i < gone->len; i++) {
        procreg_entry *e = &g_array_index(gone, procreg_entry, i);
        const char *name = e->name;
        if (name == NULL)
            continue;
        procreg_owner_index_remove(reg, ns, name, &e->owner, e->revision);
        procreg_events_emit_own(reg, PROCREG_EVENT_UNREGISTERED,
                                PROCREG_REASON_NAMESPACE_DROPPED, ns, name, e);
    }
    /* The namespace's group members go too (not atomically). */
    if (rc == 0 && reg->groups)
        rc = drop_members(reg, ns, error);
    for (int i = PROCREG_STRIPES - 1; i >= 0; i--)
        procreg_mutex_unlock(&reg->stripes[i].m);
    if (removed != NULL)
        *removed = gone->len;
    procreg_op_done(reg, b, PROCREG_OP_DROP_NAMESPACE, rc, t0, ns, NULL,
                    gone->len);
    g_array_unref(gone);
    return rc;
}

static gint info_cmp(gconstpointer a, gconstpointer b)
{
    return strcmp(((const procreg_namespace_info *)a)->ns,
                  ((const procreg_namespace_info *)b)->ns);
}

PROCREG_INTERNAL int procreg_namespace_counts(procreg *reg, GArray **out,
                                              GError **error)
{
    GArray *infos = procreg_namespace_array_new();
    int rc = procreg_backend_count_namespaces(reg->backend, infos, error);
    if (rc != 0) {
        g_array_unref(infos);
        *out = NULL;
        return rc;
    }
    g_array_sort(infos, info_cmp);
    *out = infos;
    return 0;
}

PROCREG_API int procreg_namespace_list(procreg *reg,
                                       procreg_namespace_info **out,
                                       size_t *n_out, GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL && n_out != NULL,
                         PROCREG_EINVAL);
    *out = NULL;
    *n_out = 0;
    GArray *infos = NULL;
    int rc = procreg_namespace_counts(reg, &infos, error);
    if (rc != 0)
        return rc;
    *n_out = infos->len;
    if (infos->len > 0) {
        /* The array's items become the caller's: no clear func on them. */
        g_array_set_clear_func(infos, NULL);
        *out = (procreg_namespace_info *)(void *)g_array_free(infos, FALSE);
    } else {
        g_array_unref(infos);
    }
    return 0;
}

PROCREG_API void procreg_namespace_info_free(procreg_namespace_info *infos,
                                             size_t n)
{
    if (infos == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        g_free(infos[i].ns);
    g_free(infos);
}
