/* The counting fake inner backend; see fake-inner.h. */
#include "fake-inner.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

/* One op's gate (fake-inner.h), under gate_lock. */
typedef struct {
    bool hold;     /* the next call waits for a release */
    bool hold_before; /* the same, before its work (register, update) */
    bool held;     /* a call is waiting */
    bool released; /* the waiting call may go */
    int fail_rc;   /* the next call returns this (0: its own result) */
} fake_gate;

/* How long a gate waits for the test before it gives up. */
#define FAKE_GATE_TIMEOUT_US (10 * G_USEC_PER_SEC)

struct fake_inner {
    pthread_mutex_t lock; /* pthread: ThreadSanitizer sees it */
    GHashTable *entries;  /* "ns\x1fname" -> procreg_entry* (ns, name set) */
    /* "ns\x1fgroup" -> GArray of procreg_member in id order (ns, group
     * NULL); a group with no member is removed. */
    GHashTable *groups;
    uint64_t revision;    /* entries' revisions and member ids */
    procreg_backend_host *host;
    unsigned int id;
    _Atomic guint64 calls[FAKE_N_OPS];
    pthread_mutex_t gate_lock;
    pthread_cond_t gate_cond; /* on CLOCK_MONOTONIC */
    fake_gate gates[FAKE_N_OPS];
};

static pthread_mutex_t instances_lock = PTHREAD_MUTEX_INITIALIZER;
static fake_inner *instances[FAKE_MAX_INSTANCES];

static char *fake_key(const char *ns, const char *name)
{
    return g_strdup_printf("%s\x1f%s", ns, name);
}

static void fake_entry_free(gpointer p)
{
    procreg_entry_clear(p);
    g_free(p);
}

static void count(fake_inner *f, fake_op op)
{
    atomic_fetch_add(&f->calls[op], 1);
}

/* Wait on the gate's condition until @deadline (monotonic µs); false on
 * timeout. */
static bool gate_wait(fake_inner *f, gint64 deadline)
{
    struct timespec ts = {.tv_sec = deadline / G_USEC_PER_SEC,
                          .tv_nsec = (deadline % G_USEC_PER_SEC) * 1000};

    return pthread_cond_timedwait(&f->gate_cond, &f->gate_lock, &ts) !=
           ETIMEDOUT;
}

/* Report the call held and wait for its release.  Under gate_lock. */
static void gate_hold_locked(fake_inner *f, fake_gate *g)
{
    gint64 deadline = g_get_monotonic_time() + FAKE_GATE_TIMEOUT_US;

    g->held = true;
    pthread_cond_broadcast(&f->gate_cond);
    while (!g->released)
        if (!gate_wait(f, deadline))
            g_error("fake: a held call was not released in time");
    g->held = false;
    g->released = false;
}

/* At the start of register and update, before their work. */
static void gate_enter(fake_inner *f, fake_op op)
{
    fake_gate *g = &f->gates[op];

    pthread_mutex_lock(&f->gate_lock);
    if (g->hold_before) {
        g->hold_before = false;
        gate_hold_locked(f, g);
    }
    pthread_mutex_unlock(&f->gate_lock);
}

/* At the end of every op, after its work: its gate.  Returns the failure
 * to report instead of the op's result, or 0. */
static int gate_pass(fake_inner *f, fake_op op)
{
    fake_gate *g = &f->gates[op];
    int rc;

    pthread_mutex_lock(&f->gate_lock);
    rc = g->fail_rc;
    g->fail_rc = 0;
    if (g->hold) {
        g->hold = false;
        gate_hold_locked(f, g);
    }
    pthread_mutex_unlock(&f->gate_lock);
    return rc;
}

/* @rc, or the failure the gate of @op asks for (with @error set). */
static int gate_result(fake_inner *f, fake_op op, int rc, GError **error)
{
    int fail = gate_pass(f, op);

    if (fail == 0)
        return rc;
    return procreg_set_error(error, fail, "fake: failure injected after the "
                                          "write took effect");
}

static void copy_out(const procreg_entry *e, procreg_entry *out, bool names)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof(*out));
    if (names) {
        out->ns = g_strdup(e->ns);
        out->name = g_strdup(e->name);
    }
    out->owner = e->owner;
    out->metadata = e->metadata ? g_variant_ref(e->metadata) : NULL;
    out->registered_at = e->registered_at;
    out->revision = e->revision;
}

static char *key_string(const procreg_key *key)
{
    return fake_key(procreg_key_namespace(key), procreg_key_name(key));
}

static int fake_init(const procreg_spec *spec, procreg_backend_host *host,
                     void **state, GError **error)
{
    uint64_t id = 0;
    int rc = procreg_spec_get_uint64(spec, "id", 0, &id, error);

    if (rc != 0)
        return rc;
    if (id >= FAKE_MAX_INSTANCES)
        return procreg_set_error(error, PROCREG_EINVAL, "fake: id too large");
    fake_inner *f = g_new0(fake_inner, 1);
    pthread_condattr_t attr;

    pthread_mutex_init(&f->lock, NULL);
    pthread_mutex_init(&f->gate_lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&f->gate_cond, &attr);
    pthread_condattr_destroy(&attr);
    f->entries = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                       fake_entry_free);
    f->groups = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                      (GDestroyNotify)g_array_unref);
    f->host = host;
    f->id = (unsigned int)id;
    pthread_mutex_lock(&instances_lock);
    instances[id] = f;
    pthread_mutex_unlock(&instances_lock);
    *state = f;
    return 0;
}

static void fake_destroy(void *state)
{
    fake_inner *f = state;

    pthread_mutex_lock(&instances_lock);
    if (instances[f->id] == f)
        instances[f->id] = NULL;
    pthread_mutex_unlock(&instances_lock);
    g_hash_table_unref(f->entries);
    g_hash_table_unref(f->groups);
    pthread_mutex_destroy(&f->lock);
    pthread_mutex_destroy(&f->gate_lock);
    pthread_cond_destroy(&f->gate_cond);
    g_free(f);
}

static int fake_register(void *state, const procreg_key *key,
                         const procreg_record *record, procreg_entry *current,
                         GError **error)
{
    fake_inner *f = state;
    char *k = key_string(key);
    procreg_entry *e;
    int rc = 0;

    count(f, FAKE_REGISTER);
    gate_enter(f, FAKE_REGISTER);
    pthread_mutex_lock(&f->lock);
    e = g_hash_table_lookup(f->entries, k);
    if (e != NULL) {
        copy_out(e, current, false);
        rc = PROCREG_EEXISTS;
        g_free(k);
    } else {
        e = g_new0(procreg_entry, 1);
        e->ns = g_strdup(procreg_key_namespace(key));
        e->name = g_strdup(procreg_key_name(key));
        e->owner = record->owner;
        e->metadata = record->metadata ? g_variant_ref(record->metadata) : NULL;
        e->registered_at = record->registered_at;
        e->revision = ++f->revision;
        g_hash_table_insert(f->entries, k, e);
        copy_out(e, current, false);
    }
    pthread_mutex_unlock(&f->lock);
    return gate_result(f, FAKE_REGISTER, rc, error);
}

static int fake_lookup(void *state, const procreg_key *key,
                       procreg_owner *out)
{
    fake_inner *f = state;
    char buf[2 * (PROCREG_NAME_MAX + 1)];
    procreg_entry *e;
    int rc = PROCREG_ENOTFOUND;

    count(f, FAKE_LOOKUP);
    /* No allocation on the lookup path. */
    g_snprintf(buf, sizeof buf, "%s\x1f%s", procreg_key_namespace(key),
               procreg_key_name(key));
    pthread_mutex_lock(&f->lock);
    e = g_hash_table_lookup(f->entries, buf);
    if (e != NULL) {
        *out = e->owner;
        rc = 0;
    }
    pthread_mutex_unlock(&f->lock);
    return gate_result(f, FAKE_LOOKUP, rc, NULL);
}

static int fake_lookup_entry(void *state, const procreg_key *key,
                             procreg_entry *out, GError **error)
{
    fake_inner *f = state;
    char *k = key_string(key);
    procreg_entry *e;
    int rc = PROCREG_ENOTFOUND;

    count(f, FAKE_LOOKUP_ENTRY);
    pthread_mutex_lock(&f->lock);
    e = g_hash_table_lookup(f->entries, k);
    if (e != NULL) {
        copy_out(e, out, false);
        rc = 0;
    }
    pthread_mutex_unlock(&f->lock);
    g_free(k);
    return gate_result(f, FAKE_LOOKUP_ENTRY, rc, error);
}

static int fake_unregister(void *state, const procreg_key *key,
                           uint64_t if_revision, procreg_entry *removed,
                           GError **error)
{
    fake_inner *f = state;
    char *k = key_string(key);
    procreg_entry *e;
    int rc = 0;

    count(f, FAKE_UNREGISTER);
    pthread_mutex_lock(&f->lock);
    e = g_hash_table_lookup(f->entries, k);
    if (e == NULL) {
        rc = PROCREG_ENOTFOUND;
    } else if (if_revision != 0 && e->revision != if_revision) {
        rc = PROCREG_ECONFLICT;
    } else {
        copy_out(e, removed, false);
        f->revision++;
        g_hash_table_remove(f->entries, k);
    }
    pthread_mutex_unlock(&f->lock);
    g_free(k);
    return gate_result(f, FAKE_UNREGISTER, rc, error);
}

static int fake_list_all(void *state, const char *ns, GArray *out,
                         GError **error)
{
    fake_inner *f = state;
    GHashTableIter it;
    gpointer p;

    count(f, FAKE_LIST_ALL);
    pthread_mutex_lock(&f->lock);
    g_hash_table_iter_init(&it, f->entries);
    while (g_hash_table_iter_next(&it, NULL, &p)) {
        procreg_entry *e = p, copy;

        if (ns != NULL && strcmp(ns, e->ns) != 0)
            continue;
        copy_out(e, &copy, true);
        g_array_append_val(out, copy);
    }
    pthread_mutex_unlock(&f->lock);
    return gate_result(f, FAKE_LIST_ALL, 0, error);
}

static int fake_update(void *state, const procreg_key *key,
                       GVariant *metadata, uint64_t if_revision,
                       procreg_entry *updated, GError **error)
{
    fake_inner *f = state;
    char *k = key_string(key);
    procreg_entry *e;
    int rc = 0;

    count(f, FAKE_UPDATE);
    gate_enter(f, FAKE_UPDATE);
    pthread_mutex_lock(&f->lock);
    e = g_hash_table_lookup(f->entries, k);
    if (e == NULL) {
        rc = PROCREG_ENOTFOUND;
    } else if (if_revision != 0 && e->revision != if_revision) {
        rc = PROCREG_ECONFLICT;
    } else {
        if (e->metadata != NULL)
            g_variant_unref(e->metadata);
        e->metadata = metadata ? g_variant_ref(metadata) : NULL;
        e->revision = ++f->revision;
        copy_out(e, updated, false);
    }
    pthread_mutex_unlock(&f->lock);
    g_free(k);
    return gate_result(f, FAKE_UPDATE, rc, error);
}

static int fake_health(void *state, GVariantDict *details, char **message)
{
    fake_inner *f = state;

    count(f, FAKE_HEALTH);
    pthread_mutex_lock(&f->lock);
    g_variant_dict_insert(details, "entries", "u",
                          g_hash_table_size(f->entries));
    pthread_mutex_unlock(&f->lock);
    return PROCREG_HEALTH_OK;
}

/* ---- groups (type "fake_groups") ---- */

static void member_copy(const procreg_member *m, procreg_member *out,
                        const char *ns, const char *group)
{
    *out = *m;
    out->ns = g_strdup(ns);
    out->group = g_strdup(group);
    out->metadata = m->metadata ? g_variant_ref(m->metadata) : NULL;
}

static int fake_group_join(void *state, const procreg_key *key,
                           const procreg_record *record,
                           procreg_member *joined, GError **error)
{
    fake_inner *f = state;
    char *k = key_string(key);
    GArray *members;
    procreg_member m = {0};

    count(f, FAKE_GROUP_JOIN);
    pthread_mutex_lock(&f->lock);
    members = g_hash_table_lookup(f->groups, k);
    if (members == NULL) {
        members = procreg_member_array_new();
        g_hash_table_insert(f->groups, k, members);
    } else {
        g_free(k);
    }
    m.id = ++f->revision;
    m.owner = record->owner;
    m.metadata = record->metadata ? g_variant_ref(record->metadata) : NULL;
    m.joined_at = record->registered_at;
    g_array_append_val(members, m);
    if (joined != NULL)
        member_copy(&m, joined, NULL, NULL);
    pthread_mutex_unlock(&f->lock);
    return gate_result(f, FAKE_GROUP_JOIN, 0, error);
}

static bool same_owner(const procreg_owner *a, const procreg_owner *b)
{
    return a->pid == b->pid && a->start_time == b->start_time;
}

static int fake_group_leave(void *state, const procreg_key *key,
                            uint64_t member_id, const procreg_owner *owner,
                            procreg_event_reason reason, GArray *removed,
                            GError **error)
{
    fake_inner *f = state;
    char *k = key_string(key);
    GArray *members;
    int rc = 0;

    (void)reason;
    count(f, FAKE_GROUP_LEAVE);
    pthread_mutex_lock(&f->lock);
    members = g_hash_table_lookup(f->groups, k);
    for (guint i = 0; members != NULL && i < members->len && rc >= 0;) {
        procreg_member *m = &g_array_index(members, procreg_member, i);

        if (member_id != 0 ? m->id != member_id
                           : !same_owner(&m->owner, owner)) {
            i++;
            continue;
        }
        if (member_id != 0 && owner != NULL &&
            !same_owner(&m->owner, owner)) {
            rc = procreg_set_member_owner_error(error, key, m->id, &m->owner);
            break;
        }
        if (removed != NULL) {
            procreg_member copy;

            member_copy(m, &copy, NULL, NULL);
            g_array_append_val(removed, copy);
        }
        g_array_remove_index(members, i); /* keeps id order */
        f->revision++;
        rc++;
    }
    if (members != NULL && members->len == 0)
        g_hash_table_remove(f->groups, k);
    pthread_mutex_unlock(&f->lock);
    g_free(k);
    return gate_result(f, FAKE_GROUP_LEAVE, rc, error);
}

static int fake_group_members(void *state, const procreg_key *key,
                              GArray *out, GError **error)
{
    fake_inner *f = state;
    char *k = key_string(key);
    GArray *members;

    count(f, FAKE_GROUP_MEMBERS);
    pthread_mutex_lock(&f->lock);
    members = g_hash_table_lookup(f->groups, k);
    for (guint i = 0; members != NULL && i < members->len; i++) {
        procreg_member copy;

        member_copy(&g_array_index(members, procreg_member, i), &copy, NULL,
                    NULL);
        g_array_append_val(out, copy);
    }
    pthread_mutex_unlock(&f->lock);
    g_free(k);
    return gate_result(f, FAKE_GROUP_MEMBERS, 0, error);
}

static int fake_group_list_all(void *state, const char *ns, GArray *out,
                               GError **error)
{
    fake_inner *f = state;
    GHashTableIter it;
    gpointer k, p;

    count(f, FAKE_GROUP_LIST_ALL);
    pthread_mutex_lock(&f->lock);
    g_hash_table_iter_init(&it, f->groups);
    while (g_hash_table_iter_next(&it, &k, &p)) {
        const char *sep = strchr(k, '\x1f');
        char *group_ns = g_strndup(k, (gsize)(sep - (const char *)k));
        GArray *members = p;

        for (guint i = 0; (ns == NULL || strcmp(ns, group_ns) == 0) &&
                          i < members->len; i++) {
            procreg_member copy;

            member_copy(&g_array_index(members, procreg_member, i), &copy,
                        group_ns, sep + 1);
            g_array_append_val(out, copy);
        }
        g_free(group_ns);
    }
    pthread_mutex_unlock(&f->lock);
    return gate_result(f, FAKE_GROUP_LIST_ALL, 0, error);
}

static const procreg_backend_option fake_options[] = {
    {"id", "instance number for the test"},
    {NULL, NULL},
};

#define FAKE_OPS(NAME, CAPS)                                                  \
    {                                                                         \
        .version = PROCREG_BACKEND_VERSION, .name = NAME,                     \
        .description = "counting fake for the optimized tests",               \
        .caps = (CAPS), .options = fake_options, .init = fake_init,           \
        .destroy = fake_destroy, .register_entry = fake_register,             \
        .lookup = fake_lookup, .lookup_entry = fake_lookup_entry,             \
        .unregister = fake_unregister, .list_all = fake_list_all,             \
        .update_metadata = fake_update, .health_check = fake_health,          \
    }

static const procreg_backend_ops fake_ops =
    FAKE_OPS("fake", PROCREG_CAP_THREADSAFE);
static const procreg_backend_ops fake_shared_ops =
    FAKE_OPS("fake_shared", PROCREG_CAP_THREADSAFE | PROCREG_CAP_MULTIPROCESS);
static const procreg_backend_ops fake_groups_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "fake_groups",
    .description = "counting fake with groups for the optimized tests",
    .caps = PROCREG_CAP_THREADSAFE | PROCREG_CAP_GROUPS,
    .options = fake_options,
    .init = fake_init,
    .destroy = fake_destroy,
    .register_entry = fake_register,
    .lookup = fake_lookup,
    .lookup_entry = fake_lookup_entry,
    .unregister = fake_unregister,
    .list_all = fake_list_all,
    .update_metadata = fake_update,
    .health_check = fake_health,
    .group_join = fake_group_join,
    .group_leave = fake_group_leave,
    .group_members = fake_group_members,
    .group_list_all = fake_group_list_all,
};

void fake_inner_register_types(void)
{
    GError *error = NULL;

    if (procreg_backend_register(&fake_ops, &error) != 0 ||
        procreg_backend_register(&fake_shared_ops, &error) != 0 ||
        procreg_backend_register(&fake_groups_ops, &error) != 0)
        g_error("registering the fake backends: %s", error->message);
}

fake_inner *fake_instance(unsigned int id)
{
    fake_inner *f;

    g_assert_cmpuint(id, <, FAKE_MAX_INSTANCES);
    pthread_mutex_lock(&instances_lock);
    f = instances[id];
    pthread_mutex_unlock(&instances_lock);
    return f;
}

guint64 fake_calls(fake_inner *f, fake_op op)
{
    return atomic_load(&f->calls[op]);
}

guint64 fake_calls_total(fake_inner *f)
{
    guint64 n = 0;

    for (int i = 0; i < FAKE_N_OPS; i++)
        n += atomic_load(&f->calls[i]);
    return n;
}

void fake_set(fake_inner *f, const char *ns, const char *name, pid_t pid,
              GVariant *metadata)
{
    procreg_owner owner = {.pid = pid, .start_time = 1};

    fake_set_owner(f, ns, name, &owner, metadata);
}

void fake_set_owner(fake_inner *f, const char *ns, const char *name,
                    const procreg_owner *owner, GVariant *metadata)
{
    procreg_entry *e = g_new0(procreg_entry, 1);

    if (metadata != NULL)
        g_variant_ref_sink(metadata);
    e->ns = g_strdup(ns);
    e->name = g_strdup(name);
    e->owner = *owner;
    e->metadata = metadata;
    e->registered_at = g_get_real_time();
    pthread_mutex_lock(&f->lock);
    e->revision = ++f->revision;
    g_hash_table_replace(f->entries, fake_key(ns, name), e);
    pthread_mutex_unlock(&f->lock);
}

gboolean fake_remove(fake_inner *f, const char *ns, const char *name)
{
    char *k = fake_key(ns, name);
    gboolean removed;

    pthread_mutex_lock(&f->lock);
    removed = g_hash_table_remove(f->entries, k);
    if (removed)
        f->revision++;
    pthread_mutex_unlock(&f->lock);
    g_free(k);
    return removed;
}

void fake_notify(fake_inner *f, procreg_event_kind kind, const char *ns,
                 const char *name)
{
    procreg_entry e = {.ns = (char *)ns, .name = (char *)name};

    procreg_backend_host_notify(f->host, kind,
                                kind == PROCREG_EVENT_UNREGISTERED
                                    ? PROCREG_REASON_EXPLICIT
                                    : PROCREG_REASON_NONE,
                                &e);
}

void fake_hold_next(fake_inner *f, fake_op op)
{
    pthread_mutex_lock(&f->gate_lock);
    g_assert_false(f->gates[op].hold || f->gates[op].hold_before ||
                   f->gates[op].held);
    f->gates[op].hold = true;
    pthread_mutex_unlock(&f->gate_lock);
}

void fake_hold_next_before(fake_inner *f, fake_op op)
{
    g_assert_true(op == FAKE_REGISTER || op == FAKE_UPDATE);
    pthread_mutex_lock(&f->gate_lock);
    g_assert_false(f->gates[op].hold || f->gates[op].hold_before ||
                   f->gates[op].held);
    f->gates[op].hold_before = true;
    pthread_mutex_unlock(&f->gate_lock);
}

void fake_fail_next(fake_inner *f, fake_op op, int rc)
{
    pthread_mutex_lock(&f->gate_lock);
    f->gates[op].fail_rc = rc;
    pthread_mutex_unlock(&f->gate_lock);
}

void fake_wait_held(fake_inner *f, fake_op op)
{
    gint64 deadline = g_get_monotonic_time() + FAKE_GATE_TIMEOUT_US;

    pthread_mutex_lock(&f->gate_lock);
    while (!f->gates[op].held)
        if (!gate_wait(f, deadline))
            g_error("fake: no call of op %d was held in time", (int)op);
    pthread_mutex_unlock(&f->gate_lock);
}

void fake_release(fake_inner *f, fake_op op)
{
    pthread_mutex_lock(&f->gate_lock);
    g_assert_true(f->gates[op].held);
    f->gates[op].released = true;
    pthread_cond_broadcast(&f->gate_cond);
    pthread_mutex_unlock(&f->gate_lock);
}
