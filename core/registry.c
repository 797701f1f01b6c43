/*
 * The public registry API, its reads and its life: open and close,
 * lookups (the hot path), list, count and find, each filtered for owners
 * known dead, counted in the calling thread's counter block and reported
 * to telemetry.  The writes (register, unregister, update) are writes.c's.
 */
#include "internal.h"

#include <string.h>

#include "brlock.h"

/* How many existing names a not-found message shows. */
#define NOT_FOUND_SAMPLE 5

/* ---- opening ---- */

static uint64_t next_registry_id(void)
{
    static _Atomic uint64_t ids;
    return atomic_fetch_add_explicit(&ids, 1, memory_order_relaxed) + 1;
}

/* A registry without its backend: the backend is opened with its host. */
static procreg *registry_alloc(void)
{
    procreg *reg = g_new0(procreg, 1);
    atomic_init(&reg->slow, 0);
    reg->id = next_registry_id();
    procreg_owner self;
    procreg_owner_self(&self);
    reg->creator = self.pid;
    for (int i = 0; i < PROCREG_STRIPES; i++)
        procreg_mutex_init(&reg->stripes[i].m);
    reg->tstats = procreg_tstats_new();
    reg->telemetry = procreg_telemetry_new();
    reg->events = procreg_events_new();
    reg->wakes = procreg_wakes_new();
    reg->n_subs = procreg_events_subs_counter(reg->events);
    reg->n_waiters = procreg_wakes_counter(reg->wakes);
    reg->monitor = procreg_monitor_new(reg);
    reg->host = procreg_host_new_root(reg);
    return reg;
}

static void registry_free(procreg *reg)
{
    procreg_events_shutdown(reg);
    procreg_monitor_stop(reg);
    procreg_backend_close(reg->backend); /* may still notify: hub is alive */
    procreg_host_free_root(reg->host);
    procreg_events_free(reg->events);
    procreg_wakes_free(reg->wakes);
    procreg_monitor_free(reg->monitor);
    procreg_telemetry_free(reg);
    procreg_tstats_free(reg->tstats);
    g_free(reg);
}

static int registry_start(procreg *reg, procreg **out)
{
    reg->ops = procreg_backend_get_ops(reg->backend);
    unsigned caps = procreg_backend_get_caps(reg->backend);
    reg->owners_local = !(caps & PROCREG_CAP_DISTRIBUTED);
    reg->groups = procreg_backend_has_groups(reg->backend);
    reg->backend_orders_events = caps & PROCREG_CAP_ORDERED_EVENTS;
    reg->backend_history = procreg_backend_has_history(reg->backend);
    reg->writes_local =
        !(caps & (PROCREG_CAP_MULTIPROCESS | PROCREG_CAP_DISTRIBUTED));
    /* Without the monitor the registry still works; health says so. */
    procreg_monitor_start(reg);
    *out = reg;
    return 0;
}

PROCREG_API int procreg_open(const char *spec, procreg **out, GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    *out = NULL;
    if (spec == NULL)
        spec = g_getenv("PROCREG_BACKEND");
    if (spec == NULL || *spec == '\0')
        spec = procreg_builtin_backends[0]->name;
    procreg *reg = registry_alloc();
    int rc = procreg_backend_open(spec, reg->host, &reg->backend, error);
    if (rc != 0) {
        registry_free(reg);
        return rc;
    }
    return registry_start(reg, out);
}

PROCREG_API int procreg_open_with_backend(const procreg_backend_ops *ops,
                                          const char *options, procreg **out,
                                          GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    *out = NULL;
    int rc = procreg_backend_ops_check(ops, error);
    if (rc != 0)
        return rc;
    procreg_spec *spec = NULL;
    rc = procreg_spec_parse_options(ops->name, options, &spec, error);
    if (rc != 0)
        return rc;
    procreg *reg = registry_alloc();
    rc = procreg_backend_open_ops(ops, spec, reg->host, &reg->backend, error);
    procreg_spec_free(spec);
    if (rc != 0) {
        registry_free(reg);
        return rc;
    }
    return registry_start(reg, out);
}

PROCREG_API void procreg_close(procreg *reg)
{
    if (reg == NULL)
        return;
    /* In a fork() child the registry's threads do not exist and its locks
     * may be held by threads that were not copied: touching them would
     * hang.  The child leaves the parent's registry alone. */
    procreg_owner self;
    procreg_owner_self(&self);
    if (self.pid != reg->creator)
        return;
    registry_free(reg);
}

PROCREG_API const char *procreg_get_spec(const procreg *reg)
{
    return procreg_backend_spec_string(reg->backend);
}

/* Drop from @a the entries whose owner is gone (procreg_read_owner_gone()). */
static void filter_dead(procreg *reg, GArray *a, bool pending)
{
    if (!pending && !procreg_dead_pending(reg))
        return;
    for (guint i = a->len; i-- > 0;)
        if (procreg_read_owner_gone(reg, pending,
                            &g_array_index(a, procreg_entry, i).owner))
            g_array_remove_index(a, i);
}

/* ---- lookup ---- */

/* A not-found error that helps: the namespace and a few names it holds. */
PROCREG_INTERNAL int procreg_not_found(procreg *reg, const procreg_key *key,
                                       GError **error)
{
    if (error == NULL)
        return PROCREG_ENOTFOUND;
    const char *ns = procreg_key_namespace(key);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    procreg_backend_list_names(reg->backend, ns, NOT_FOUND_SAMPLE, names);
    GString *msg = g_string_new(NULL);
    g_string_printf(msg, "'%s' is not registered in namespace '%s'",
                    procreg_key_name(key), ns);
    if (names->len == 0) {
        g_string_append(msg, " (the namespace is empty)");
    } else {
        g_string_append(msg, " (it holds ");
        for (guint i = 0; i < names->len; i++)
            g_string_append_printf(msg, "%s'%s'", i ? ", " : "",
                                   (char *)names->pdata[i]);
        g_string_append(msg, names->len == NOT_FOUND_SAMPLE ? ", ...)" : ")");
    }
    procreg_set_error(error, PROCREG_ENOTFOUND, "%s", msg->str);
    g_string_free(msg, TRUE);
    g_ptr_array_add(names, NULL);
    procreg_error_detail_alternatives(error, (char **)names->pdata);
    g_ptr_array_unref(names);
    return PROCREG_ENOTFOUND;
}

static int backend_failure(int rc, const procreg_key *key, GError **error)
{
    return procreg_set_error(error, rc, "lookup of '%s' in '%s': %s",
                             procreg_key_name(key), procreg_key_namespace(key),
                             procreg_strerror(rc));
}

static int lookup_failed(procreg *reg, int rc, const procreg_key *key,
                         GError **error)
{
    return rc == PROCREG_ENOTFOUND ? procreg_not_found(reg, key, error)
                                   : backend_failure(rc, key, error);
}

/* A lookup by a key whose characters were not checked (@checked false,
 * procreg_key_init_unchecked()) that found nothing: the check it skipped,
 * so that an invalid name is PROCREG_EINVAL, not a miss. */
static int names_invalid(bool checked, const procreg_key *key, GError **error)
{
    return checked ? 0 : procreg_key_check_names(key, error);
}

/* Timed, filtered for dead owners, reported to telemetry. */
static __attribute__((noinline)) int
lookup_slow(procreg *reg, procreg_tblock *b, unsigned slow,
            const procreg_key *key, bool checked, procreg_owner *out,
            GError **error)
{
    uint64_t t0 = procreg_now_ns();
    int rc = procreg_backend_lookup(reg->backend, key, out);
    if (rc == 0 &&
        procreg_read_owner_gone(reg, slow & PROCREG_SLOW_DEAD_OWNERS, out))
        rc = PROCREG_ENOTFOUND;
    int invalid = rc != 0 ? names_invalid(checked, key, error) : 0;
    if (invalid != 0)
        return invalid;
    procreg_op_done(reg, b, PROCREG_OP_LOOKUP, rc, t0,
                    procreg_key_namespace(key), procreg_key_name(key), rc == 0);
    return rc == 0 ? 0 : lookup_failed(reg, rc, key, error);
}

/* A fast-path lookup that did not find: counted and reported. */
static __attribute__((noinline)) int
lookup_missed(procreg *reg, procreg_tblock *b, int rc, const procreg_key *key,
              bool checked, GError **error)
{
    int invalid = names_invalid(checked, key, error);
    if (invalid != 0)
        return invalid;
    procreg_counter_add(rc == PROCREG_ENOTFOUND
                            ? &b->misses[PROCREG_OP_LOOKUP]
                            : &b->errors[PROCREG_OP_LOOKUP],
                        1);
    return lookup_failed(reg, rc, key, error);
}

/*
 * The hot path.  With no telemetry handler and no dead owner pending
 * (procreg.slow == 0, one relaxed load) it is the backend lookup plus this
 * thread's call counter (a thread-local compare, a load and a store); one
 * call in 256 per thread takes the slow path to be timed.  Inlined into
 * both entry points: a call by strings pays no second call.
 */
static inline __attribute__((always_inline)) int
lookup_key(procreg *reg, const procreg_key *key, bool checked,
           procreg_owner *out, GError **error)
{
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t n = atomic_load_explicit(&b->calls[PROCREG_OP_LOOKUP],
                                      memory_order_relaxed);
    unsigned slow = atomic_load_explicit(&reg->slow, memory_order_relaxed);
    if (G_UNLIKELY(slow != 0 || (n & PROCREG_LOOKUP_SAMPLE_MASK) == 0 ||
                   b->shared))
        return lookup_slow(reg, b, slow, key, checked, out, error);
    int rc = procreg_backend_lookup(reg->backend, key, out);
    atomic_store_explicit(&b->calls[PROCREG_OP_LOOKUP], n + 1,
                          memory_order_relaxed);
    if (G_LIKELY(rc == 0))
        return 0;
    return lookup_missed(reg, b, rc, key, checked, error);
}

PROCREG_API int procreg_lookup_key(procreg *reg, const procreg_key *key,
                                   procreg_owner *out, GError **error)
{
    return lookup_key(reg, key, true, out, error);
}

/* By strings: the key is built without the character check, which only
 * a miss pays (names_invalid()): a hit proves both names valid, since
 * only valid names are stored. */
PROCREG_API int procreg_lookup(procreg *reg, const char *ns, const char *name,
                               procreg_owner *out, GError **error)
{
    procreg_stack_key key;
    int rc = procreg_key_init_unchecked(&key, ns, name, error);
    return rc != 0 ? rc : lookup_key(reg, &key.key, false, out, error);
}

PROCREG_API int procreg_lookup_entry_key(procreg *reg, const procreg_key *key,
                                         procreg_entry *out, GError **error)
{
    memset(out, 0, sizeof *out);
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t n = atomic_load_explicit(&b->calls[PROCREG_OP_LOOKUP_ENTRY],
                                      memory_order_relaxed);
    unsigned slow = atomic_load_explicit(&reg->slow, memory_order_relaxed);
    bool timed = slow != 0 || (n & PROCREG_LOOKUP_SAMPLE_MASK) == 0;
    uint64_t t0 = timed ? procreg_now_ns() : 0;
    GError *local = NULL;
    int rc = procreg_backend_lookup_entry(reg->backend, key, out,
                                          error != NULL ? &local : NULL);
    if (rc == 0 && procreg_read_owner_gone(reg, slow & PROCREG_SLOW_DEAD_OWNERS,
                                    &out->owner)) {
        procreg_entry_clear(out);
        rc = PROCREG_ENOTFOUND;
    }
    if (timed || b->shared)
        procreg_op_done(reg, b, PROCREG_OP_LOOKUP_ENTRY, rc, t0,
                        procreg_key_namespace(key), procreg_key_name(key),
                        rc == 0);
    else
        procreg_tblock_record(b, PROCREG_OP_LOOKUP_ENTRY, rc, false, 0);
    if (rc == PROCREG_ENOTFOUND) {
        g_clear_error(&local);
        return procreg_not_found(reg, key, error);
    }
    if (local != NULL)
        g_propagate_error(error, local);
    else if (rc != 0)
        backend_failure(rc, key, error);
    return rc;
}

PROCREG_API int procreg_lookup_entry(procreg *reg, const char *ns,
                                     const char *name, procreg_entry *out,
                                     GError **error)
{
    procreg_stack_key key;
    int rc = procreg_key_init_stack(&key, ns, name, error);
    if (rc != 0) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    return procreg_lookup_entry_key(reg, &key.key, out, error);
}

/* ---- listing, counting, finding ---- */

static int check_ns(const char *ns, GError **error)
{
    return ns == NULL ? 0 : procreg_validate_name(ns, "namespace", error);
}

PROCREG_API int procreg_list(procreg *reg, const char *ns, procreg_entry **out,
                             size_t *n_out, GError **error)
{
    *out = NULL;
    *n_out = 0;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    int rc = check_ns(ns, error);
    GArray *all = procreg_entry_array_new();
    bool pending = procreg_dead_pending(reg);
    if (rc == 0)
        rc = procreg_backend_list_all(reg->backend, ns, all, error);
    if (rc == 0) {
        filter_dead(reg, all, pending);
        procreg_entry_array_steal(all, out, n_out);
    } else {
        g_array_unref(all);
    }
    procreg_op_done(reg, b, PROCREG_OP_LIST, rc, t0, ns, NULL, *n_out);
    return rc;
}

PROCREG_API int procreg_count(procreg *reg, const char *ns, size_t *out,
                              GError **error)
{
    *out = 0;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    int rc = check_ns(ns, error);
    if (rc == 0 && procreg_dead_pending(reg)) {
        /* Count what list shows: not the entries of owners known dead. */
        GArray *all = procreg_entry_array_new();
        rc = procreg_backend_list_all(reg->backend, ns, all, error);
        filter_dead(reg, all, true);
        *out = rc == 0 ? all->len : 0;
        g_array_unref(all);
    } else if (rc == 0) {
        rc = procreg_backend_count(reg->backend, ns, out, error);
    }
    procreg_op_done(reg, b, PROCREG_OP_LIST, rc, t0, ns, NULL, *out);
    return rc;
}

PROCREG_INTERNAL int procreg_find_check(const char *ns, const char *meta_key,
                                        GVariant *value, GError **error)
{
    int rc = check_ns(ns, error);
    if (rc != 0)
        return rc;
    if (meta_key == NULL || *meta_key == '\0')
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "metadata key is empty");
    if (!g_utf8_validate(meta_key, -1, NULL))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "metadata key is not valid UTF-8");
    if (!procreg_metadata_value_indexable(value))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "find matches strings, booleans and "
                                 "integers, not %s",
                                 value ? g_variant_get_type_string(value)
                                       : "NULL");
    return 0;
}

static int find_into(procreg *reg, const char *ns, const char *meta_key,
                     GVariant *value, GArray *out, GError **error)
{
    if (value != NULL)
        g_variant_ref_sink(value);
    int rc = procreg_find_check(ns, meta_key, value, error);
    if (rc == 0)
        rc = procreg_backend_find_by_metadata(reg->backend, ns, meta_key,
                                              value, out, error);
    if (value != NULL)
        g_variant_unref(value);
    return rc;
}

PROCREG_API int procreg_find(procreg *reg, const char *ns,
                             const char *meta_key, GVariant *value,
                             procreg_entry **out, size_t *n_out,
                             GError **error)
{
    *out = NULL;
    *n_out = 0;
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    GArray *found = procreg_entry_array_new();
    bool pending = procreg_dead_pending(reg);
    int rc = find_into(reg, ns, meta_key, value, found, error);
    if (rc == 0) {
        filter_dead(reg, found, pending);
        procreg_entry_array_steal(found, out, n_out);
    } else {
        g_array_unref(found);
    }
    procreg_op_done(reg, b, PROCREG_OP_FIND, rc, t0, ns, NULL, *n_out);
    return rc;
}

PROCREG_API int procreg_find_count(procreg *reg, const char *ns,
                                   const char *meta_key, GVariant *value,
                                   size_t *out, GError **error)
{
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    GArray *found = procreg_entry_array_new();
    bool pending = procreg_dead_pending(reg);
    int rc = find_into(reg, ns, meta_key, value, found, error);
    if (rc == 0)
        filter_dead(reg, found, pending);
    *out = rc == 0 ? found->len : 0;
    g_array_unref(found);
    procreg_op_done(reg, b, PROCREG_OP_FIND, rc, t0, ns, NULL, *out);
    return rc;
}
