/*
 * Group members as data: clearing and freeing them, the GArrays backends
 * fill, sorting what callers get back, and the two views the service
 * layer takes of a member (a procreg_entry for events and hosts, and back).
 */
#include "internal.h"

#include <string.h>

PROCREG_API void procreg_member_clear(procreg_member *member)
{
    if (member == NULL)
        return;
    g_free(member->ns);
    g_free(member->group);
    if (member->metadata != NULL)
        g_variant_unref(member->metadata);
    memset(member, 0, sizeof *member);
}

PROCREG_API void procreg_members_free(procreg_member *members, size_t n)
{
    if (members == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        procreg_member_clear(&members[i]);
    g_free(members);
}

static void member_clear_func(gpointer p)
{
    procreg_member_clear(p);
}

PROCREG_API GArray *procreg_member_array_new(void)
{
    GArray *a = g_array_new(FALSE, TRUE, sizeof(procreg_member));
    g_array_set_clear_func(a, member_clear_func);
    return a;
}

static void group_info_clear_func(gpointer p)
{
    procreg_group_info *info = p;
    g_free(info->ns);
    g_free(info->group);
}

PROCREG_API GArray *procreg_group_info_array_new(void)
{
    GArray *a = g_array_new(FALSE, TRUE, sizeof(procreg_group_info));
    g_array_set_clear_func(a, group_info_clear_func);
    return a;
}

PROCREG_API void procreg_group_info_free(procreg_group_info *infos, size_t n)
{
    if (infos == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        group_info_clear_func(&infos[i]);
    g_free(infos);
}

PROCREG_API int procreg_set_member_owner_error(GError **error,
                                               const procreg_key *key,
                                               uint64_t member_id,
                                               const procreg_owner *holder)
{
    procreg_owner self;
    procreg_owner_self(&self);
    int rc = procreg_set_error(
        error, PROCREG_EPERM,
        "member %" G_GUINT64_FORMAT " of group '%s' in '%s' is owned by "
        "process %d, not by this process (%d): only its owner may remove it "
        "(PROCREG_FORCE overrides)",
        member_id, procreg_key_name(key), procreg_key_namespace(key),
        (int)holder->pid, (int)self.pid);
    /* As data: the member as its events' entry shows it. */
    procreg_entry e = {.owner = *holder, .revision = member_id};
    procreg_error_detail_entry(error, procreg_key_namespace(key),
                               procreg_key_name(key), &e);
    return rc;
}

static gint member_cmp(gconstpointer a, gconstpointer b)
{
    const procreg_member *x = a, *y = b;
    int c = g_strcmp0(x->ns, y->ns);
    if (c == 0)
        c = g_strcmp0(x->group, y->group);
    return c != 0 ? c : (x->id > y->id) - (x->id < y->id);
}

PROCREG_INTERNAL void procreg_member_array_take(GArray *array,
                                                procreg_member **out,
                                                size_t *n_out)
{
    g_array_set_clear_func(array, NULL);
    *n_out = array->len;
    if (array->len == 0) {
        *out = NULL;
        g_array_free(array, TRUE);
    } else {
        *out = (procreg_member *)(void *)g_array_free(array, FALSE);
    }
}

PROCREG_INTERNAL void procreg_member_array_steal(GArray *array,
                                                 procreg_member **out,
                                                 size_t *n_out)
{
    g_array_sort(array, member_cmp);
    procreg_member_array_take(array, out, n_out);
}

PROCREG_INTERNAL procreg_entry procreg_member_as_entry(const procreg_member *m)
{
    procreg_entry e = {
        .ns = m->ns,
        .name = m->group,
        .owner = m->owner,
        .metadata = m->metadata,
        .registered_at = m->joined_at,
        .revision = m->id,
    };
    return e;
}

PROCREG_INTERNAL procreg_member procreg_entry_as_member(const procreg_entry *e)
{
    procreg_member m = {
        .ns = e->ns,
        .group = e->name,
        .id = e->revision,
        .owner = e->owner,
        .metadata = e->metadata,
        .joined_at = e->registered_at,
    };
    return m;
}
