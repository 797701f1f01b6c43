/* Entries, entry (and change) arrays and metadata checks. */
#include "internal.h"

#include <string.h>

PROCREG_API void procreg_entry_clear(procreg_entry *entry)
{
    if (entry == NULL)
        return;
    g_free(entry->ns);
    g_free(entry->name);
    if (entry->metadata != NULL)
        g_variant_unref(entry->metadata);
    memset(entry, 0, sizeof *entry);
}

PROCREG_API void procreg_entries_free(procreg_entry *entries, size_t n)
{
    if (entries == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        procreg_entry_clear(&entries[i]);
    g_free(entries);
}

static void entry_clear_func(gpointer p)
{
    procreg_entry_clear(p);
}

PROCREG_API GArray *procreg_entry_array_new(void)
{
    GArray *a = g_array_new(FALSE, TRUE, sizeof(procreg_entry));
    g_array_set_clear_func(a, entry_clear_func);
    return a;
}

static void change_clear_func(gpointer p)
{
    procreg_change *c = p;
    procreg_entry_clear(&c->entry);
}

PROCREG_API GArray *procreg_change_array_new(void)
{
    GArray *a = g_array_new(FALSE, TRUE, sizeof(procreg_change));
    g_array_set_clear_func(a, change_clear_func);
    return a;
}

static void namespace_info_clear_func(gpointer p)
{
    g_free(((procreg_namespace_info *)p)->ns);
}

PROCREG_API GArray *procreg_namespace_array_new(void)
{
    GArray *a = g_array_new(FALSE, TRUE, sizeof(procreg_namespace_info));
    g_array_set_clear_func(a, namespace_info_clear_func);
    return a;
}

static gint entry_cmp(gconstpointer a, gconstpointer b)
{
    const procreg_entry *x = a, *y = b;
    int c = strcmp(x->ns ? x->ns : "", y->ns ? y->ns : "");
    return c != 0 ? c : strcmp(x->name ? x->name : "", y->name ? y->name : "");
}

PROCREG_INTERNAL void procreg_entry_array_steal(GArray *array,
                                                procreg_entry **out,
                                                size_t *n_out)
{
    g_array_sort(array, entry_cmp);
    g_array_set_clear_func(array, NULL);
    *n_out = array->len;
    if (array->len == 0) {
        *out = NULL;
        g_array_free(array, TRUE);
    } else {
        *out = (procreg_entry *)(void *)g_array_free(array, FALSE);
    }
}

PROCREG_INTERNAL int procreg_metadata_check(GVariant *metadata, GError **error)
{
    if (metadata == NULL)
        return 0;
    if (!g_variant_is_of_type(metadata, G_VARIANT_TYPE_VARDICT))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "metadata must be of type a{sv}, not %s",
                                 g_variant_get_type_string(metadata));
    return 0;
}

/* find_by_metadata compares strings, booleans and integers; integers of
 * every width compare by value. */
typedef enum { VALUE_OTHER, VALUE_STRING, VALUE_BOOL, VALUE_SIGNED, VALUE_UNSIGNED } value_class;

static value_class classify(GVariant *v, gint64 *s, guint64 *u)
{
    switch (g_variant_classify(v)) {
    case G_VARIANT_CLASS_STRING: return VALUE_STRING;
    case G_VARIANT_CLASS_BOOLEAN: return VALUE_BOOL;
    case G_VARIANT_CLASS_BYTE: *u = g_variant_get_byte(v); return VALUE_UNSIGNED;
    case G_VARIANT_CLASS_UINT16: *u = g_variant_get_uint16(v); return VALUE_UNSIGNED;
    case G_VARIANT_CLASS_UINT32: *u = g_variant_get_uint32(v); return VALUE_UNSIGNED;
    case G_VARIANT_CLASS_UINT64: *u = g_variant_get_uint64(v); return VALUE_UNSIGNED;
    case G_VARIANT_CLASS_INT16: *s = g_variant_get_int16(v); return VALUE_SIGNED;
    case G_VARIANT_CLASS_INT32: *s = g_variant_get_int32(v); return VALUE_SIGNED;
    case G_VARIANT_CLASS_INT64: *s = g_variant_get_int64(v); return VALUE_SIGNED;
    default: return VALUE_OTHER;
    }
}

PROCREG_API bool procreg_metadata_value_indexable(GVariant *value)
{
    gint64 s;
    guint64 u;
    return value != NULL && classify(value, &s, &u) != VALUE_OTHER;
}

PROCREG_API bool procreg_metadata_value_equal(GVariant *a, GVariant *b)
{
    gint64 sa = 0, sb = 0;
    guint64 ua = 0, ub = 0;
    value_class ca = classify(a, &sa, &ua), cb = classify(b, &sb, &ub);
    if (ca == VALUE_OTHER || cb == VALUE_OTHER)
        return false;
    if (ca == VALUE_STRING || cb == VALUE_STRING)
        return ca == cb && strcmp(g_variant_get_string(a, NULL),
                                  g_variant_get_string(b, NULL)) == 0;
    if (ca == VALUE_BOOL || cb == VALUE_BOOL)
        return ca == cb && g_variant_get_boolean(a) == g_variant_get_boolean(b);
    /* Both integers: compare by value across signedness. */
    if (ca == VALUE_SIGNED && sa < 0)
        return cb == VALUE_SIGNED && sb == sa;
    if (cb == VALUE_SIGNED && sb < 0)
        return false;
    guint64 va = ca == VALUE_SIGNED ? (guint64)sa : ua;
    guint64 vb = cb == VALUE_SIGNED ? (guint64)sb : ub;
    return va == vb;
}
