/* The counting fake backend (see fake-backend.h). */
#include "fake-backend.h"

#include <string.h>

static pthread_mutex_t last_lock = PTHREAD_MUTEX_INITIALIZER;
static FakeBackend *last_fake;
static FakeDeco *last_deco;

FakeBackend *fake_backend_last(void)
{
    pthread_mutex_lock(&last_lock);
    FakeBackend *fb = last_fake;
    pthread_mutex_unlock(&last_lock);
    return fb;
}

FakeDeco *fake_deco_last(void)
{
    pthread_mutex_lock(&last_lock);
    FakeDeco *d = last_deco;
    pthread_mutex_unlock(&last_lock);
    return d;
}

void fake_backend_set_on_call(FakeBackend *fb, FakeHook fn, void *data)
{
    atomic_store_explicit(&fb->on_call_data, data, memory_order_relaxed);
    /* Release: a call that sees @fn sees @data. */
    atomic_store_explicit(&fb->on_call, fn, memory_order_release);
}

void fake_backend_set_on_return(FakeBackend *fb, FakeHook fn, void *data)
{
    atomic_store_explicit(&fb->on_return_data, data, memory_order_relaxed);
    atomic_store_explicit(&fb->on_return, fn, memory_order_release);
}

int fake_backend_data_calls(FakeBackend *fb)
{
    int n = 0;
    for (int i = FAKE_OP_REGISTER; i < FAKE_N_OPS; i++)
        n += g_atomic_int_get(&fb->calls[i]);
    return n;
}

/* ---- entering and leaving a slot ---------------------------------------- */

static bool op_is_write(FakeOp op)
{
    return op == FAKE_OP_REGISTER || op == FAKE_OP_UNREGISTER ||
           op == FAKE_OP_UNREGISTER_OWNED ||
           op == FAKE_OP_UPDATE || op == FAKE_OP_DROP;
}

static void atomic_max(gint *slot, gint value)
{
    gint old = g_atomic_int_get(slot);
    while (value > old && !g_atomic_int_compare_and_exchange(slot, old, value))
        old = g_atomic_int_get(slot);
}

static void enter(FakeBackend *fb, FakeOp op)
{
    g_atomic_int_inc(&fb->calls[op]);
    gint now = g_atomic_int_add(&fb->inside, 1) + 1;
    atomic_max(&fb->max_inside, now);
    unsigned int caps = fb->ops->caps;
    bool threadsafe = caps & (PROCREG_CAP_THREADSAFE |
                              PROCREG_CAP_LOCKFREE_READS);
    if (op_is_write(op)) {
        gint w = g_atomic_int_add(&fb->inside_writes, 1) + 1;
        atomic_max(&fb->max_inside_writes, w);
        /* A write must be alone unless the backend is thread-safe. */
        if (!threadsafe && now > 1)
            g_atomic_int_inc(&fb->violations);
    } else {
        atomic_max(&fb->max_inside_reads, now - g_atomic_int_get(
                                                    &fb->inside_writes));
        if (!threadsafe && g_atomic_int_get(&fb->inside_writes) > 0)
            g_atomic_int_inc(&fb->violations);
        /* Reads overlap only with PARALLEL_READS. */
        if (!threadsafe && !(caps & PROCREG_CAP_PARALLEL_READS) && now > 1)
            g_atomic_int_inc(&fb->violations);
    }
    if (fb->sleep_us[op] != 0)
        g_usleep(fb->sleep_us[op]);
    FakeHook hook = atomic_load_explicit(&fb->on_call, memory_order_acquire);
    if (hook != NULL)
        hook(op, atomic_load_explicit(&fb->on_call_data,
                                      memory_order_relaxed));
}

static void leave(FakeBackend *fb, FakeOp op)
{
    FakeHook hook = atomic_load_explicit(&fb->on_return, memory_order_acquire);
    if (hook != NULL)
        hook(op, atomic_load_explicit(&fb->on_return_data,
                                      memory_order_relaxed));
    if (op_is_write(op))
        g_atomic_int_add(&fb->inside_writes, -1);
    g_atomic_int_add(&fb->inside, -1);
}

static int failing(FakeBackend *fb, FakeOp op, GError **error)
{
    int code = fb->fail[op];
    if (code == 0)
        return 0;
    return procreg_set_error(error, code, "fake failure %d in slot %d", code,
                             (int)op);
}

/* ---- the store ---------------------------------------------------------- */

static void item_free(gpointer p)
{
    FakeItem *it = p;
    g_free(it->ns);
    g_free(it->name);
    if (it->metadata)
        g_variant_unref(it->metadata);
    g_free(it);
}

static char *key_string(const procreg_key *key)
{
    /* "ns\x1fname": unit separator cannot occur in a valid key. */
    return g_strdup_printf("%s\x1f%s", procreg_key_bytes(key),
                           procreg_key_bytes(key) + key->ns_len + 1);
}

static void fill(const FakeItem *it, procreg_entry *out, bool names)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    if (names) {
        out->ns = g_strdup(it->ns);
        out->name = g_strdup(it->name);
    }
    out->owner = it->owner;
    out->metadata = it->metadata ? g_variant_ref(it->metadata) : NULL;
    out->registered_at = it->registered_at;
    out->revision = it->revision;
}

/* ---- slots -------------------------------------------------------------- */

static int fake_init_common(const procreg_backend_ops *ops,
                            const procreg_spec *spec, void **state,
                            GError **error)
{
    FakeBackend *fb = g_new0(FakeBackend, 1);
    fb->ops = ops;
    pthread_mutex_init(&fb->lock, NULL);
    fb->store = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                      item_free);
    fb->calls[FAKE_OP_INIT] = 1;
    int rc = 0;
    if (spec != NULL) {
        fb->opt_a = g_strdup(procreg_spec_get(spec, "a"));
        fb->opt_b = g_strdup(procreg_spec_get(spec, "b"));
        rc = procreg_spec_get_uint64(spec, "size", 0, &fb->opt_size, error);
        if (rc == 0)
            rc = procreg_spec_get_bool(spec, "flag", false, &fb->opt_flag,
                                       error);
        const char *fi = procreg_spec_get(spec, "fail_init");
        if (rc == 0 && fi != NULL)
            rc = procreg_set_error(error, (int)g_ascii_strtoll(fi, NULL, 10),
                                   "fake init told to fail with %s", fi);
    }
    if (rc != 0) {
        g_hash_table_unref(fb->store);
        pthread_mutex_destroy(&fb->lock);
        g_free(fb->opt_a);
        g_free(fb->opt_b);
        g_free(fb);
        return rc;
    }
    pthread_mutex_lock(&last_lock);
    last_fake = fb;
    pthread_mutex_unlock(&last_lock);
    *state = fb;
    return 0;
}

#define DEFINE_INIT(fn, table)                                             \
    static int fn(const procreg_spec *spec, procreg_backend_host *host,    \
                  void **state, GError **error)                            \
    {                                                                      \
        (void)host;                                                        \
        return fake_init_common(&table, spec, state, error);               \
    }

DEFINE_INIT(fake_init, fake_ops)
DEFINE_INIT(fake_pr_init, fake_pr_ops)
DEFINE_INIT(fake_ts_init, fake_ts_ops)
DEFINE_INIT(fake_mp_init, fake_mp_ops)
DEFINE_INIT(fake_own_init, fake_own_ops)
DEFINE_INIT(fake_min_init, fake_min_ops)

static void fake_destroy(void *state)
{
    FakeBackend *fb = state;
    pthread_mutex_lock(&last_lock);
    if (last_fake == fb)
        last_fake = NULL;
    pthread_mutex_unlock(&last_lock);
    g_hash_table_unref(fb->store);
    pthread_mutex_destroy(&fb->lock);
    if (fb->last_update)
        g_variant_unref(fb->last_update);
    if (fb->last_record.metadata)
        g_variant_unref(fb->last_record.metadata);
    g_free(fb->opt_a);
    g_free(fb->opt_b);
    g_free(fb);
}

static int fake_register(void *state, const procreg_key *key,
                         const procreg_record *record, procreg_entry *current,
                         GError **error)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_REGISTER);
    int rc = failing(fb, FAKE_OP_REGISTER, error);
    if (rc == 0) {
        char *ks = key_string(key);
        pthread_mutex_lock(&fb->lock);
        if (fb->last_record.metadata)
            g_variant_unref(fb->last_record.metadata);
        fb->last_record = *record;
        if (record->metadata)
            g_variant_ref(record->metadata);
        FakeItem *old = g_hash_table_lookup(fb->store, ks);
        if (old != NULL) {
            fill(old, current, true);
            rc = procreg_set_error(error, PROCREG_EEXISTS, "fake: taken");
            g_free(ks);
        } else {
            FakeItem *it = g_new0(FakeItem, 1);
            it->ns = g_strdup(procreg_key_bytes(key));
            it->name = g_strdup(procreg_key_bytes(key) + key->ns_len + 1);
            it->owner = record->owner;
            it->metadata = record->metadata ? g_variant_ref(record->metadata)
                                            : NULL;
            it->registered_at = record->registered_at;
            it->revision = ++fb->last_revision;
            g_hash_table_insert(fb->store, ks, it);
            fill(it, current, true);
        }
        pthread_mutex_unlock(&fb->lock);
    }
    leave(fb, FAKE_OP_REGISTER);
    return rc;
}

static int fake_lookup(void *state, const procreg_key *key, procreg_owner *out)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_LOOKUP);
    int rc = fb->fail[FAKE_OP_LOOKUP];
    if (rc == 0) {
        /* No allocation on this path: look up by a stack string. */
        char ks[2 * (PROCREG_NAME_MAX + 1)];
        size_t nl = key->ns_len;
        memcpy(ks, procreg_key_bytes(key), nl);
        ks[nl] = '\x1f';
        memcpy(ks + nl + 1, procreg_key_bytes(key) + nl + 1, key->name_len);
        ks[nl + 1 + key->name_len] = '\0';
        pthread_mutex_lock(&fb->lock);
        FakeItem *it = g_hash_table_lookup(fb->store, ks);
        if (it != NULL)
            *out = it->owner;
        else
            rc = PROCREG_ENOTFOUND;
        pthread_mutex_unlock(&fb->lock);
    }
    leave(fb, FAKE_OP_LOOKUP);
    return rc;
}

static int fake_lookup_entry(void *state, const procreg_key *key,
                             procreg_entry *out, GError **error)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_LOOKUP_ENTRY);
    int rc = failing(fb, FAKE_OP_LOOKUP_ENTRY, error);
    if (rc == 0) {
        char *ks = key_string(key);
        pthread_mutex_lock(&fb->lock);
        FakeItem *it = g_hash_table_lookup(fb->store, ks);
        if (it != NULL)
            fill(it, out, false);
        else
            rc = procreg_set_error(error, PROCREG_ENOTFOUND, "fake: absent");
        pthread_mutex_unlock(&fb->lock);
        g_free(ks);
    }
    leave(fb, FAKE_OP_LOOKUP_ENTRY);
    return rc;
}

static int fake_unregister(void *state, const procreg_key *key,
                           uint64_t if_revision, procreg_entry *removed,
                           GError **error)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_UNREGISTER);
    int rc = failing(fb, FAKE_OP_UNREGISTER, error);
    if (rc == 0) {
        char *ks = key_string(key);
        pthread_mutex_lock(&fb->lock);
        FakeItem *it = g_hash_table_lookup(fb->store, ks);
        if (it == NULL) {
            rc = procreg_set_error(error, PROCREG_ENOTFOUND, "fake: absent");
        } else if (if_revision != 0 && it->revision != if_revision) {
            rc = procreg_set_error(error, PROCREG_ECONFLICT,
                                   "fake: revision moved");
        } else {
            fill(it, removed, true);
            g_hash_table_remove(fb->store, ks);
        }
        pthread_mutex_unlock(&fb->lock);
        g_free(ks);
    }
    leave(fb, FAKE_OP_UNREGISTER);
    return rc;
}

/* The check and the removal under one hold of the store lock (the hook
 * runs before it, as in every slot). */
static int fake_unregister_owned(void *state, const procreg_key *key,
                                 const procreg_owner *owner,
                                 procreg_entry *removed)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_UNREGISTER_OWNED);
    int rc = fb->fail[FAKE_OP_UNREGISTER_OWNED];
    if (rc == 0) {
        char *ks = key_string(key);
        pthread_mutex_lock(&fb->lock);
        FakeItem *it = g_hash_table_lookup(fb->store, ks);
        if (it == NULL) {
            rc = PROCREG_ENOTFOUND;
        } else if (!procreg_backend_owner_same(&it->owner, owner)) {
            rc = PROCREG_EPERM;
        } else {
            fill(it, removed, true);
            g_hash_table_remove(fb->store, ks);
        }
        pthread_mutex_unlock(&fb->lock);
        g_free(ks);
    }
    leave(fb, FAKE_OP_UNREGISTER_OWNED);
    return rc;
}

static void append_matching(FakeBackend *fb, const char *ns,
                            const char *meta_key, GVariant *value,
                            GArray *out)
{
    GHashTableIter iter;
    gpointer v;
    g_hash_table_iter_init(&iter, fb->store);
    while (g_hash_table_iter_next(&iter, NULL, &v)) {
        FakeItem *it = v;
        if (ns != NULL && strcmp(it->ns, ns) != 0)
            continue;
        if (meta_key != NULL) {
            GVariant *have = it->metadata ? g_variant_lookup_value(
                                                it->metadata, meta_key, NULL)
                                          : NULL;
            bool eq = have && procreg_metadata_value_equal(have, value);
            if (have)
                g_variant_unref(have);
            if (!eq)
                continue;
        }
        procreg_entry e;
        fill(it, &e, true);
        g_array_append_val(out, e);
    }
}

static int fake_list_all(void *state, const char *ns, GArray *out,
                         GError **error)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_LIST_ALL);
    int rc = failing(fb, FAKE_OP_LIST_ALL, error);
    if (rc == 0) {
        pthread_mutex_lock(&fb->lock);
        append_matching(fb, ns, NULL, NULL, out);
        pthread_mutex_unlock(&fb->lock);
    }
    leave(fb, FAKE_OP_LIST_ALL);
    return rc;
}

static int fake_update(void *state, const procreg_key *key,
                       GVariant *metadata, uint64_t if_revision,
                       procreg_entry *updated, GError **error)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_UPDATE);
    int rc = failing(fb, FAKE_OP_UPDATE, error);
    if (rc == 0) {
        char *ks = key_string(key);
        pthread_mutex_lock(&fb->lock);
        if (fb->last_update)
            g_variant_unref(fb->last_update);
        fb->last_update = metadata ? g_variant_ref(metadata) : NULL;
        FakeItem *it = g_hash_table_lookup(fb->store, ks);
        if (it == NULL) {
            rc = procreg_set_error(error, PROCREG_ENOTFOUND, "fake: absent");
        } else if (if_revision != 0 && it->revision != if_revision) {
            rc = procreg_set_error(error, PROCREG_ECONFLICT,
                                   "fake: revision moved");
        } else {
            if (it->metadata)
                g_variant_unref(it->metadata);
            it->metadata = metadata ? g_variant_ref(metadata) : NULL;
            it->revision = ++fb->last_revision;
            fill(it, updated, true);
        }
        pthread_mutex_unlock(&fb->lock);
        g_free(ks);
    }
    leave(fb, FAKE_OP_UPDATE);
    return rc;
}

static int fake_health(void *state, GVariantDict *details, char **message)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_HEALTH);
    g_variant_dict_insert(details, "fake", "b", TRUE);
    *message = g_strdup_printf("fake health %d", fb->health);
    int rc = fb->health;
    leave(fb, FAKE_OP_HEALTH);
    return rc;
}

static int fake_count(void *state, const char *ns, size_t *out,
                      GError **error)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_COUNT);
    int rc = failing(fb, FAKE_OP_COUNT, error);
    if (rc == 0) {
        GArray *a = procreg_entry_array_new();
        pthread_mutex_lock(&fb->lock);
        append_matching(fb, ns, NULL, NULL, a);
        pthread_mutex_unlock(&fb->lock);
        *out = a->len;
        g_array_unref(a);
    }
    leave(fb, FAKE_OP_COUNT);
    return rc;
}

static int fake_list_names(void *state, const char *ns, size_t max,
                           GPtrArray *out)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_LIST_NAMES);
    int rc = fb->fail[FAKE_OP_LIST_NAMES];
    if (rc == 0) {
        GHashTableIter iter;
        gpointer v;
        pthread_mutex_lock(&fb->lock);
        g_hash_table_iter_init(&iter, fb->store);
        while (out->len < max && g_hash_table_iter_next(&iter, NULL, &v)) {
            FakeItem *it = v;
            if (strcmp(it->ns, ns) == 0)
                g_ptr_array_add(out, g_strdup(it->name));
        }
        pthread_mutex_unlock(&fb->lock);
    }
    leave(fb, FAKE_OP_LIST_NAMES);
    return rc;
}

static int fake_drop(void *state, const char *ns, GArray *removed,
                     GError **error)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_DROP);
    int rc = failing(fb, FAKE_OP_DROP, error);
    if (rc == 0) {
        GHashTableIter iter;
        gpointer v;
        pthread_mutex_lock(&fb->lock);
        g_hash_table_iter_init(&iter, fb->store);
        while (g_hash_table_iter_next(&iter, NULL, &v)) {
            FakeItem *it = v;
            if (strcmp(it->ns, ns) != 0)
                continue;
            if (removed != NULL) {
                procreg_entry e;
                fill(it, &e, true);
                g_array_append_val(removed, e);
            }
            g_hash_table_iter_remove(&iter);
        }
        pthread_mutex_unlock(&fb->lock);
    }
    leave(fb, FAKE_OP_DROP);
    return rc;
}

static int fake_find(void *state, const char *ns, const char *meta_key,
                     GVariant *value, GArray *out, GError **error)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_FIND);
    int rc = failing(fb, FAKE_OP_FIND, error);
    if (rc == 0) {
        pthread_mutex_lock(&fb->lock);
        append_matching(fb, ns, meta_key, value, out);
        pthread_mutex_unlock(&fb->lock);
    }
    leave(fb, FAKE_OP_FIND);
    return rc;
}

static int fake_memory(void *state, size_t *bytes)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_MEMORY);
    pthread_mutex_lock(&fb->lock);
    *bytes = 64 * (size_t)g_hash_table_size(fb->store);
    pthread_mutex_unlock(&fb->lock);
    leave(fb, FAKE_OP_MEMORY);
    return 0;
}

static void fake_stats(void *state, GVariantDict *out)
{
    FakeBackend *fb = state;
    enter(fb, FAKE_OP_STATS);
    g_variant_dict_insert(out, "fake_calls", "i",
                          g_atomic_int_get(&fb->calls[FAKE_OP_LOOKUP]));
    leave(fb, FAKE_OP_STATS);
}

static const procreg_backend_option fake_options[] = {
    {"a", "a string"},
    {"b", "another string"},
    {"size", "a size (K/M/G suffixes)"},
    {"flag", "a boolean"},
    {"fail_init", "make init fail with this code"},
    {NULL, NULL},
};

#define FAKE_TABLE(var, nm, initfn, capflags)                              \
    const procreg_backend_ops var = {                                      \
        .version = PROCREG_BACKEND_VERSION,                                \
        .name = nm,                                                        \
        .description = "counting fake for dispatcher tests",               \
        .caps = capflags,                                                  \
        .options = fake_options,                                           \
        .init = initfn,                                                    \
        .destroy = fake_destroy,                                           \
        .register_entry = fake_register,                                   \
        .lookup = fake_lookup,                                             \
        .lookup_entry = fake_lookup_entry,                                 \
        .unregister = fake_unregister,                                     \
        .list_all = fake_list_all,                                         \
        .update_metadata = fake_update,                                    \
        .health_check = fake_health,                                       \
        .count = fake_count,                                               \
        .list_names = fake_list_names,                                     \
        .drop_namespace = fake_drop,                                       \
        .find_by_metadata = fake_find,                                     \
        .memory_usage = fake_memory,                                       \
        .stats = fake_stats,                                               \
    }

FAKE_TABLE(fake_ops, "fake", fake_init, 0);
FAKE_TABLE(fake_pr_ops, "fake_pr", fake_pr_init, PROCREG_CAP_PARALLEL_READS);
FAKE_TABLE(fake_ts_ops, "fake_ts", fake_ts_init, PROCREG_CAP_THREADSAFE);
FAKE_TABLE(fake_mp_ops, "fake_mp", fake_mp_init,
           PROCREG_CAP_THREADSAFE | PROCREG_CAP_MULTIPROCESS);

#define FAKE_OWN_CAPS (PROCREG_CAP_THREADSAFE | PROCREG_CAP_MULTIPROCESS)
const procreg_backend_ops fake_own_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "fake_own",
    .description = "counting fake with unregister_owned",
    .caps = FAKE_OWN_CAPS,
    .options = fake_options,
    .init = fake_own_init,
    .destroy = fake_destroy,
    .register_entry = fake_register,
    .lookup = fake_lookup,
    .lookup_entry = fake_lookup_entry,
    .unregister = fake_unregister,
    .list_all = fake_list_all,
    .update_metadata = fake_update,
    .health_check = fake_health,
    .unregister_owned = fake_unregister_owned,
};

const procreg_backend_ops fake_min_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "fake_min",
    .description = "counting fake with the required slots only",
    .caps = 0,
    .options = fake_options,
    .init = fake_min_init,
    .destroy = fake_destroy,
    .register_entry = fake_register,
    .lookup = fake_lookup,
    .lookup_entry = fake_lookup_entry,
    .unregister = fake_unregister,
    .list_all = fake_list_all,
    .update_metadata = fake_update,
    .health_check = fake_health,
};

/* ---- the decorator ------------------------------------------------------ */

static int deco_init(const procreg_spec *spec, procreg_backend_host *host,
                     void **state, GError **error)
{
    FakeDeco *d = g_new0(FakeDeco, 1);
    int rc = procreg_spec_get_uint64(spec, "ttl_ms", 0, &d->ttl_ms, error);
    const char *inner = procreg_spec_get(spec, "inner");
    d->inner_spec = g_strdup(inner);
    if (rc == 0)
        rc = procreg_backend_open(inner != NULL ? inner : "fake", host,
                                  &d->inner, error);
    if (rc != 0) {
        g_free(d->inner_spec);
        g_free(d);
        return rc;
    }
    pthread_mutex_lock(&last_lock);
    last_deco = d;
    pthread_mutex_unlock(&last_lock);
    *state = d;
    return 0;
}

static void deco_destroy(void *state)
{
    FakeDeco *d = state;
    pthread_mutex_lock(&last_lock);
    if (last_deco == d)
        last_deco = NULL;
    pthread_mutex_unlock(&last_lock);
    procreg_backend_close(d->inner);
    g_free(d->inner_spec);
    g_free(d);
}

static int deco_register(void *state, const procreg_key *key,
                         const procreg_record *record, procreg_entry *current,
                         GError **error)
{
    return procreg_backend_register_entry(((FakeDeco *)state)->inner, key,
                                          record, current, error);
}

static int deco_lookup(void *state, const procreg_key *key,
                       procreg_owner *out)
{
    return procreg_backend_lookup(((FakeDeco *)state)->inner, key, out);
}

static int deco_lookup_entry(void *state, const procreg_key *key,
                             procreg_entry *out, GError **error)
{
    return procreg_backend_lookup_entry(((FakeDeco *)state)->inner, key, out,
                                        error);
}

static int deco_unregister(void *state, const procreg_key *key,
                           uint64_t if_revision, procreg_entry *removed,
                           GError **error)
{
    return procreg_backend_unregister(((FakeDeco *)state)->inner, key,
                                      if_revision, removed, error);
}

static int deco_list_all(void *state, const char *ns, GArray *out,
                         GError **error)
{
    return procreg_backend_list_all(((FakeDeco *)state)->inner, ns, out,
                                    error);
}

static int deco_update(void *state, const procreg_key *key,
                       GVariant *metadata, uint64_t if_revision,
                       procreg_entry *updated, GError **error)
{
    return procreg_backend_update_metadata(((FakeDeco *)state)->inner, key,
                                           metadata, if_revision, updated,
                                           error);
}

static int deco_health(void *state, GVariantDict *details, char **message)
{
    return procreg_backend_health_check(((FakeDeco *)state)->inner, details,
                                        message);
}

static const procreg_backend_option deco_options[] = {
    {"inner", "the spec of the wrapped backend"},
    {"ttl_ms", "a duration"},
    {NULL, NULL},
};

const procreg_backend_ops fake_deco_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "fake_deco",
    .description = "a decorator-like fake whose option is a spec",
    .caps = PROCREG_CAP_THREADSAFE,
    .options = deco_options,
    .init = deco_init,
    .destroy = deco_destroy,
    .register_entry = deco_register,
    .lookup = deco_lookup,
    .lookup_entry = deco_lookup_entry,
    .unregister = deco_unregister,
    .list_all = deco_list_all,
    .update_metadata = deco_update,
    .health_check = deco_health,
};

void fake_backend_register_all(void)
{
    const procreg_backend_ops *all[] = {&fake_ops, &fake_pr_ops, &fake_ts_ops,
                                        &fake_mp_ops, &fake_own_ops,
                                        &fake_min_ops,
                                        &fake_deco_ops};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++) {
        GError *err = NULL;
        int rc = procreg_backend_register(all[i], &err);
        if (rc != 0)
            g_error("registering fake backend %s: %s", all[i]->name,
                    err ? err->message : procreg_strerror(rc));
    }
}
