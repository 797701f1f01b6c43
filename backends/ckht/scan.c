/*
 * ckht's ops over many entries: list, count, names, find, drop and the
 * namespace figures.  Each iterates the table under the writer lock
 * (ck_ht cannot be iterated while it changes), so each is a snapshot at
 * one instant between two writes; lookups carry on meanwhile.
 */
#include "ckht-internal.h"

static inline bool ckht_in_ns(const ckht_entry *e, const char *ns)
{
    return ns == NULL || (strncmp(e->key, ns, e->ns_len) == 0 &&
                          ns[e->ns_len] == '\0');
}

int procreg_ckht_list_all(void *state, const char *ns, GArray *out,
                          GError **error)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ckht_entry *e;

    (void)error;
    while ((e = procreg_ckht_next(self, &it)) != NULL) {
        if (ckht_in_ns(e, ns))
            procreg_ckht_entry_append(out, e);
    }
    procreg_ckht_write_end(self, previous);
    return 0;
}

int procreg_ckht_count(void *state, const char *ns, size_t *out,
                       GError **error)
{
    ckht *self = state;
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ckht *previous;
    ckht_entry *e;
    size_t n = 0;

    (void)error;
    if (ns == NULL) {
        *out = atomic_load_explicit(&self->n_entries, memory_order_relaxed);
        return 0;
    }
    previous = procreg_ckht_write_begin(self);
    while ((e = procreg_ckht_next(self, &it)) != NULL)
        n += ckht_in_ns(e, ns);
    procreg_ckht_write_end(self, previous);
    *out = n;
    return 0;
}

int procreg_ckht_count_namespaces(void *state, GArray *out, GError **error)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    /* Namespace -> its index in @out; the keys are the entries' own bytes,
     * which no write can free while the writer lock is held. */
    GHashTable *index = g_hash_table_new(g_str_hash, g_str_equal);
    ckht_entry *e;
    gpointer at;

    (void)error;
    while ((e = procreg_ckht_next(self, &it)) != NULL) {
        if (g_hash_table_lookup_extended(index, e->key, NULL, &at)) {
            g_array_index(out, procreg_namespace_info,
                          GPOINTER_TO_UINT(at)).entries++;
        } else {
            procreg_namespace_info info = {g_strdup(e->key), 1};

            g_hash_table_insert(index, e->key, GUINT_TO_POINTER(out->len));
            g_array_append_val(out, info);
        }
    }
    procreg_ckht_write_end(self, previous);
    g_hash_table_unref(index);
    return 0;
}

int procreg_ckht_list_names(void *state, const char *ns, size_t max,
                            GPtrArray *out)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ckht_entry *e;
    size_t n = 0;

    while (n < max && (e = procreg_ckht_next(self, &it)) != NULL) {
        if (ckht_in_ns(e, ns)) {
            g_ptr_array_add(out, g_strdup(ckht_entry_name(e)));
            n++;
        }
    }
    procreg_ckht_write_end(self, previous);
    return 0;
}

int procreg_ckht_drop_namespace(void *state, const char *ns,
                                GArray *removed, GError **error)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    GPtrArray *doomed = g_ptr_array_new();
    ckht_entry *e;
    unsigned int i;
    int r = 0;

    /* ck_ht cannot be changed while iterated: collect, then remove. */
    while ((e = procreg_ckht_next(self, &it)) != NULL) {
        if (ckht_in_ns(e, ns))
            g_ptr_array_add(doomed, e);
    }
    for (i = 0; i < doomed->len; i++) {
        size_t size;

        e = g_ptr_array_index(doomed, i);
        size = ckht_entry_key_size(e);
        /* The prepared key's hash is procreg_key_hash() of these bytes. */
        if (procreg_ckht_unpublish(self, e->key, size,
                           procreg_key_hash(e->key, size)) != e) {
            r = procreg_set_error(error, PROCREG_EBACKEND,
                                  "ckht: table lost \"%s\" while dropping "
                                  "namespace \"%s\"",
                                  ckht_entry_name(e), ns);
            break;
        }
        if (removed != NULL)
            procreg_ckht_entry_append(removed, e);
        procreg_ckht_retire(self, e);
    }
    g_ptr_array_free(doomed, TRUE);
    procreg_ckht_write_end(self, previous);
    return r;
}

int procreg_ckht_find_by_metadata(void *state, const char *ns,
                                  const char *meta_key, GVariant *value,
                                  GArray *out, GError **error)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ckht_entry *e;

    (void)error;
    while ((e = procreg_ckht_next(self, &it)) != NULL) {
        GVariant *metadata = ckht_entry_metadata(e);
        GVariant *v;

        if (metadata == NULL || !ckht_in_ns(e, ns))
            continue;
        v = g_variant_lookup_value(metadata, meta_key, NULL);
        if (v == NULL)
            continue;
        if (procreg_metadata_value_equal(v, value))
            procreg_ckht_entry_append(out, e);
        g_variant_unref(v);
    }
    procreg_ckht_write_end(self, previous);
    return 0;
}

