/*
 * ckht's ops over many entries: list, count, names, find, drop and the
 * namespace figures.  Each runs under the writer lock, so each is a
 * snapshot at one instant between two writes; lookups carry on
 * meanwhile.  An op on one namespace walks that namespace's list
 * (namespaces.c), so its cost follows the namespace; an op on all
 * entries iterates the table (ck_hs cannot be iterated while it
 * changes: another reason for the lock).
 */
#include "ckht-internal.h"

/* Called on each entry of a walk; false stops it. */
typedef bool ckht_visit_fn(ckht_entry *e, void *data);

/* Visit every entry of @ns (NULL: of the table).  Under the lock.  @fn
 * may retire the entry it is given (drop), not any other. */
static void ckht_walk(ckht *self, const char *ns, ckht_visit_fn *fn,
                      void *data)
{
    if (ns != NULL) {
        ckht_ns *n = procreg_ckht_ns_find(self, ns);
        ckht_entry *e = n != NULL ? procreg_ckht_ns_first(n) : NULL;

        while (e != NULL) {
            /* Read before @fn, which may take e (and, with the last
             * entry, the namespace) away. */
            ckht_entry *next = procreg_ckht_ns_next(n, e);

            if (!fn(e, data))
                return;
            e = next;
        }
        return;
    }
    {
        ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
        ckht_entry *e;

        while ((e = procreg_ckht_next(self, &it)) != NULL)
            if (!fn(e, data))
                return;
    }
}

static bool append_entry(ckht_entry *e, void *out)
{
    procreg_ckht_entry_append(out, e);
    return true;
}

int procreg_ckht_list_all(void *state, const char *ns, GArray *out,
                          GError **error)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);

    (void)error;
    ckht_walk(self, ns, append_entry, out);
    procreg_ckht_write_end(self, previous);
    return 0;
}

static bool count_entry(ckht_entry *e, void *n)
{
    (void)e;
    (*(size_t *)n)++;
    return true;
}

int procreg_ckht_count(void *state, const char *ns, size_t *out,
                       GError **error)
{
    ckht *self = state;
    ckht *previous;
    size_t n = 0;

    (void)error;
    if (ns == NULL) {
        *out = atomic_load_explicit(&self->n_entries, memory_order_relaxed);
        return 0;
    }
    previous = procreg_ckht_write_begin(self);
    ckht_walk(self, ns, count_entry, &n);
    procreg_ckht_write_end(self, previous);
    *out = n;
    return 0;
}

int procreg_ckht_count_namespaces(void *state, GArray *out, GError **error)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    GHashTableIter iter;
    gpointer name;

    (void)error;
    g_hash_table_iter_init(&iter, self->namespaces);
    while (g_hash_table_iter_next(&iter, &name, NULL)) {
        procreg_namespace_info info = {g_strdup(name), 0};

        ckht_walk(self, name, count_entry, &info.entries);
        g_array_append_val(out, info);
    }
    procreg_ckht_write_end(self, previous);
    return 0;
}

typedef struct {
    GPtrArray *out;
    size_t max;
} names_walk;

static bool add_name(ckht_entry *e, void *data)
{
    names_walk *w = data;

    if (w->out->len >= w->max)
        return false;
    g_ptr_array_add(w->out, g_strndup(ckht_entry_name(e),
                                      (gsize)ckht_entry_name_len(e)));
    return true;
}

int procreg_ckht_list_names(void *state, const char *ns, size_t max,
                            GPtrArray *out)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    names_walk w = {out, out->len + max};

    ckht_walk(self, ns, add_name, &w);
    procreg_ckht_write_end(self, previous);
    return 0;
}

typedef struct {
    ckht *self;
    const char *ns;
    GArray *removed;
    GError **error;
    int r;
} drop_walk;

static bool drop_entry(ckht_entry *e, void *data)
{
    drop_walk *w = data;
    ckht_stack_key key;

    if (procreg_ckht_unpublish(w->self, procreg_ckht_entry_key(e, &key)) !=
        e) {
        w->r = procreg_set_error(w->error, PROCREG_EBACKEND,
                                 "ckht: table lost \"%.*s\" while dropping "
                                 "namespace \"%s\"",
                                 ckht_entry_name_len(e), ckht_entry_name(e),
                                 w->ns);
        return false;
    }
    if (w->removed != NULL)
        procreg_ckht_entry_append(w->removed, e);
    procreg_ckht_retire(w->self, e);
    return true;
}

int procreg_ckht_drop_namespace(void *state, const char *ns,
                                GArray *removed, GError **error)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    drop_walk w = {self, ns, removed, error, 0};

    /* The namespace's list, never the table: ck_hs cannot be iterated
     * while it changes. */
    if (ns != NULL)
        ckht_walk(self, ns, drop_entry, &w);
    else
        w.r = procreg_set_error(error, PROCREG_EINVAL,
                                "ckht: drop of no namespace");
    procreg_ckht_write_end(self, previous);
    return w.r;
}

typedef struct {
    const char *meta_key;
    GVariant *value;
    GArray *out;
    const char *needle[2]; /* bytes every match's metadata holds */
    size_t needle_len[2];
} find_walk;

/* Whether @md may hold the key and value of @w: a serialised a{sv} holds
 * each key, and each string value, as its bytes and a NUL.  A miss here
 * is certain; a hit still needs g_variant_lookup_value(), which builds a
 * child GVariant per item it passes (most of a find's time). */
static bool may_match(GVariant *md, const find_walk *w)
{
    size_t size = g_variant_get_size(md);
    const char *data = size > 0 ? g_variant_get_data(md) : NULL;

    if (data == NULL) /* empty: holds no key */
        return false;
    for (int i = 0; i < 2; i++)
        if (w->needle[i] != NULL &&
            memmem(data, size, w->needle[i], w->needle_len[i]) == NULL)
            return false;
    return true;
}

static bool find_entry(ckht_entry *e, void *data)
{
    find_walk *w = data;
    GVariant *metadata = ckht_entry_metadata(e);
    GVariant *v;

    if (metadata == NULL || !may_match(metadata, w))
        return true;
    v = g_variant_lookup_value(metadata, w->meta_key, NULL);
    if (v == NULL)
        return true;
    if (procreg_metadata_value_equal(v, w->value))
        procreg_ckht_entry_append(w->out, e);
    g_variant_unref(v);
    return true;
}

int procreg_ckht_find_by_metadata(void *state, const char *ns,
                                  const char *meta_key, GVariant *value,
                                  GArray *out, GError **error)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    find_walk w = {meta_key, value, out, {meta_key, NULL},
                   {strlen(meta_key) + 1, 0}};

    (void)error;
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_STRING)) {
        w.needle[1] = g_variant_get_string(value, &w.needle_len[1]);
        w.needle_len[1]++;
    }
    ckht_walk(self, ns, find_entry, &w);
    procreg_ckht_write_end(self, previous);
    return 0;
}
