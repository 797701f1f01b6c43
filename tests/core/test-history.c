/*
 * procreg_subscribe_from() in its dangerous interleavings, forced.
 *
 * A "logbook" backend keeps a change log and a history (PROCREG_CAP_HISTORY)
 * and lets the test commit changes "made elsewhere" (another process or
 * host) whose notification it may hold back, and run a hook just before
 * and just after the core reads its history.  So each case places a change
 * exactly where a catch-up can lose or repeat it:
 *  - committed and notified while the history is being read (it is in the
 *    history and reaches the subscription live): seen once;
 *  - committed before the read, notified late, during or after the catch-up
 *    (a lagging watcher): seen once;
 *  - committed after the read, before the catch-up ends: seen, after the
 *    history.
 * And the registry's own history (ghash): a watcher that resubscribes from
 * its last position while a writer runs sees every position once, in order.
 */
#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND 1
#endif
#include <procreg/backend.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

/* ---- the logbook backend ---- */

typedef struct logbook logbook;
typedef void (*logbook_hook)(logbook *lb);

struct logbook {
    pthread_mutex_t lock;
    procreg_backend_host *host;
    GHashTable *entries; /* name -> revision (one namespace: "ns") */
    GArray *log;         /* procreg_change; position = index + 1 */
    GArray *held;        /* positions committed, not yet notified */
    logbook_hook before_read, after_read;
    int compacted_below; /* history_read refuses positions below it */
};

static logbook *the_logbook; /* the one the test opened */

static int lb_init(const procreg_spec *spec, procreg_backend_host *host,
                   void **state, GError **error)
{
    (void)spec;
    (void)error;
    logbook *lb = g_new0(logbook, 1);
    pthread_mutex_init(&lb->lock, NULL);
    lb->host = host;
    lb->entries = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    lb->log = procreg_change_array_new();
    lb->held = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    the_logbook = lb;
    *state = lb;
    return 0;
}

static void lb_destroy(void *state)
{
    logbook *lb = state;
    g_hash_table_unref(lb->entries);
    g_array_unref(lb->log);
    g_array_unref(lb->held);
    pthread_mutex_destroy(&lb->lock);
    g_free(lb);
}

static void notify_locked(logbook *lb, uint64_t position)
{
    procreg_change *c = &g_array_index(lb->log, procreg_change, position - 1);
    procreg_backend_host_notify_at(lb->host, c->kind, c->reason, &c->entry,
                                   c->own, position);
}

/* Commit a change of "ns"/@name; notify it now unless @hold. */
static uint64_t commit_locked(logbook *lb, procreg_event_kind kind,
                              const char *name, bool own, bool hold)
{
    procreg_owner self;
    procreg_owner_self(&self);
    procreg_change c = {
        .kind = kind,
        .reason = kind == PROCREG_EVENT_UNREGISTERED ? PROCREG_REASON_EXPLICIT
                                                     : PROCREG_REASON_NONE,
        .position = lb->log->len + 1,
        .own = own,
        .entry = {.ns = g_strdup("ns"), .name = g_strdup(name),
                  .owner = self,
                  .revision = lb->log->len + 1},
    };
    g_array_append_val(lb->log, c);
    if (kind == PROCREG_EVENT_UNREGISTERED)
        g_hash_table_remove(lb->entries, name);
    else
        g_hash_table_insert(lb->entries, g_strdup(name),
                            GSIZE_TO_POINTER(c.position));
    if (hold)
        g_array_append_val(lb->held, c.position);
    else
        notify_locked(lb, c.position);
    return c.position;
}

/* A change made elsewhere. */
static uint64_t commit_elsewhere(logbook *lb, procreg_event_kind kind,
                                 const char *name, bool hold)
{
    pthread_mutex_lock(&lb->lock);
    uint64_t pos = commit_locked(lb, kind, name, false, hold);
    pthread_mutex_unlock(&lb->lock);
    return pos;
}

/* The notifications held back, now, in commit order. */
static void notify_held(logbook *lb)
{
    pthread_mutex_lock(&lb->lock);
    for (guint i = 0; i < lb->held->len; i++)
        notify_locked(lb, g_array_index(lb->held, uint64_t, i));
    g_array_set_size(lb->held, 0);
    pthread_mutex_unlock(&lb->lock);
}

static int lb_register(void *state, const procreg_key *key,
                       const procreg_record *record, procreg_entry *current,
                       GError **error)
{
    (void)record;
    (void)current;
    (void)error;
    logbook *lb = state;
    pthread_mutex_lock(&lb->lock);
    const char *name = procreg_key_name(key);
    int rc = PROCREG_EEXISTS;
    if (!g_hash_table_contains(lb->entries, name)) {
        commit_locked(lb, PROCREG_EVENT_REGISTERED, name, true, false);
        rc = 0;
    }
    pthread_mutex_unlock(&lb->lock);
    return rc == 0 ? 0 : procreg_set_error(error, rc, "taken");
}

static int lb_lookup_entry(void *state, const procreg_key *key,
                           procreg_entry *out, GError **error)
{
    logbook *lb = state;
    pthread_mutex_lock(&lb->lock);
    gpointer rev = g_hash_table_lookup(lb->entries, procreg_key_name(key));
    pthread_mutex_unlock(&lb->lock);
    if (rev == NULL)
        return procreg_set_error(error, PROCREG_ENOTFOUND, "absent");
    if (out != NULL) {
        *out = (procreg_entry){.revision = GPOINTER_TO_SIZE(rev)};
        procreg_owner_self(&out->owner);
    }
    return 0;
}

static int lb_lookup(void *state, const procreg_key *key, procreg_owner *out)
{
    procreg_entry e;
    int rc = lb_lookup_entry(state, key, &e, NULL);
    if (rc == 0)
        *out = e.owner;
    return rc;
}

static int lb_unregister(void *state, const procreg_key *key,
                         uint64_t if_revision, procreg_entry *removed,
                         GError **error)
{
    (void)if_revision;
    (void)removed;
    logbook *lb = state;
    pthread_mutex_lock(&lb->lock);
    const char *name = procreg_key_name(key);
    bool found = g_hash_table_contains(lb->entries, name);
    if (found)
        commit_locked(lb, PROCREG_EVENT_UNREGISTERED, name, true, false);
    pthread_mutex_unlock(&lb->lock);
    return found ? 0 : procreg_set_error(error, PROCREG_ENOTFOUND, "absent");
}

static int lb_list_all(void *state, const char *ns, GArray *out,
                       GError **error)
{
    (void)state;
    (void)ns;
    (void)out;
    (void)error;
    return 0;
}

static int lb_update(void *state, const procreg_key *key, GVariant *metadata,
                     uint64_t if_revision, procreg_entry *updated,
                     GError **error)
{
    (void)state;
    (void)key;
    (void)metadata;
    (void)if_revision;
    (void)updated;
    return procreg_set_error(error, PROCREG_ENOTSUP, "not in this test");
}

static int lb_health(void *state, GVariantDict *details, char **message)
{
    (void)state;
    (void)details;
    (void)message;
    return 0;
}

static int lb_history_head(void *state, uint64_t *out, GError **error)
{
    (void)error;
    logbook *lb = state;
    pthread_mutex_lock(&lb->lock);
    *out = lb->log->len;
    pthread_mutex_unlock(&lb->lock);
    return 0;
}

static int lb_history_read(void *state, const char *ns, uint64_t after,
                           GArray *out, uint64_t *head, GError **error)
{
    logbook *lb = state;
    if (lb->before_read != NULL)
        lb->before_read(lb);
    pthread_mutex_lock(&lb->lock);
    int rc = 0;
    if (after + 1 < (uint64_t)lb->compacted_below) {
        rc = procreg_set_error(error, PROCREG_ECOMPACTED, "compacted");
    } else {
        for (guint i = (guint)after; i < lb->log->len; i++) {
            procreg_change c = g_array_index(lb->log, procreg_change, i);
            if (ns != NULL && strcmp(c.entry.ns, ns) != 0)
                continue;
            c.entry.ns = g_strdup(c.entry.ns);
            c.entry.name = g_strdup(c.entry.name);
            g_array_append_val(out, c);
        }
        *head = lb->log->len;
    }
    pthread_mutex_unlock(&lb->lock);
    if (rc == 0 && lb->after_read != NULL)
        lb->after_read(lb);
    return rc;
}

static const procreg_backend_ops logbook_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "logbook",
    .description = "test: a change log with a history and hooks",
    .caps = PROCREG_CAP_THREADSAFE | PROCREG_CAP_ORDERED_EVENTS |
            PROCREG_CAP_HISTORY,
    .init = lb_init,
    .destroy = lb_destroy,
    .register_entry = lb_register,
    .lookup = lb_lookup,
    .lookup_entry = lb_lookup_entry,
    .unregister = lb_unregister,
    .list_all = lb_list_all,
    .update_metadata = lb_update,
    .health_check = lb_health,
    .history_head = lb_history_head,
    .history_read = lb_history_read,
};

/* ---- what a subscription saw ---- */

typedef struct {
    pthread_mutex_t lock;
    GString *seen; /* "kind:name@position " per event */
    guint n;
} seen;

static void seen_init(seen *s)
{
    pthread_mutex_init(&s->lock, NULL);
    s->seen = g_string_new(NULL);
    s->n = 0;
}

static void seen_clear(seen *s)
{
    g_string_free(s->seen, TRUE);
    pthread_mutex_destroy(&s->lock);
}

static void on_event(procreg *reg, const procreg_event *ev, gpointer data)
{
    (void)reg;
    seen *s = data;
    pthread_mutex_lock(&s->lock);
    g_string_append_printf(s->seen, "%c:%s@%" G_GUINT64_FORMAT " ",
                           procreg_event_kind_name(ev->kind)[0], ev->name,
                           ev->position);
    s->n++;
    pthread_mutex_unlock(&s->lock);
}

/* Wait until @s saw @n events (10 s at most), then a moment more for any
 * event too many; returns what it saw. */
static char *seen_wait(seen *s, guint n)
{
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    pthread_mutex_lock(&s->lock);
    while (s->n < n && g_get_monotonic_time() < deadline) {
        pthread_mutex_unlock(&s->lock);
        g_usleep(1000);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    g_usleep(50000);
    pthread_mutex_lock(&s->lock);
    char *text = g_strdup(s->seen->str);
    pthread_mutex_unlock(&s->lock);
    return text;
}

static procreg *open_logbook(void)
{
    procreg *reg = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_open_with_backend(&logbook_ops, NULL, &reg, &err),
                    ==, 0);
    g_assert_no_error(err);
    return reg;
}

/* Subscribe to "ns" from @after; the events seen go to @s. */
static uint64_t subscribe_from(procreg *reg, uint64_t after, seen *s)
{
    uint64_t id = 0;
    GError *err = NULL;
    g_assert_cmpint(procreg_subscribe_from(reg, "ns", NULL, after, on_event,
                                           s, NULL, NULL, &id, &err),
                    ==, 0);
    g_assert_no_error(err);
    return id;
}

/* ---- the cases ---- */

static void commit_c(logbook *lb)
{
    commit_elsewhere(lb, PROCREG_EVENT_REGISTERED, "c", false);
}

/* c is committed and notified while the history is read: it is in the
 * history and reaches the catching-up subscription live. */
static void test_change_during_read(void)
{
    procreg *reg = open_logbook();
    logbook *lb = the_logbook;
    commit_elsewhere(lb, PROCREG_EVENT_REGISTERED, "a", false);
    commit_elsewhere(lb, PROCREG_EVENT_REGISTERED, "b", false);
    lb->before_read = commit_c;
    seen s;
    seen_init(&s);
    subscribe_from(reg, 0, &s);
    lb->before_read = NULL;
    commit_elsewhere(lb, PROCREG_EVENT_REGISTERED, "d", false);
    g_autofree char *got = seen_wait(&s, 4);
    g_assert_cmpstr(got, ==, "r:a@1 r:b@2 r:c@3 r:d@4 ");
    procreg_close(reg);
    seen_clear(&s);
}

/* b was committed before the subscription, but its notification comes
 * late (a watcher that lags): during the catch-up, or after it. */
static void test_late_notification(gconstpointer during)
{
    procreg *reg = open_logbook();
    logbook *lb = the_logbook;
    commit_elsewhere(lb, PROCREG_EVENT_REGISTERED, "a", false);
    commit_elsewhere(lb, PROCREG_EVENT_REGISTERED, "b", true);
    if (GPOINTER_TO_INT(during))
        lb->after_read = notify_held;
    seen s;
    seen_init(&s);
    subscribe_from(reg, 0, &s);
    lb->after_read = NULL;
    notify_held(lb); /* (after the catch-up: nothing held any more) */
    commit_elsewhere(lb, PROCREG_EVENT_UNREGISTERED, "a", false);
    g_autofree char *got = seen_wait(&s, 3);
    g_assert_cmpstr(got, ==, "r:a@1 r:b@2 u:a@3 ");
    procreg_close(reg);
    seen_clear(&s);
}

/* c is committed after the history was read, before the catch-up ends:
 * it comes live, after the history. */
static void test_change_after_read(void)
{
    procreg *reg = open_logbook();
    logbook *lb = the_logbook;
    commit_elsewhere(lb, PROCREG_EVENT_REGISTERED, "a", false);
    commit_elsewhere(lb, PROCREG_EVENT_REGISTERED, "b", false);
    lb->after_read = commit_c;
    seen s;
    seen_init(&s);
    subscribe_from(reg, 1, &s);
    lb->after_read = NULL;
    g_autofree char *got = seen_wait(&s, 2);
    g_assert_cmpstr(got, ==, "r:b@2 r:c@3 ");
    procreg_close(reg);
    seen_clear(&s);
}

static int destroyed; /* count_destroy() calls */

static void count_destroy(gpointer data)
{
    (void)data;
    g_atomic_int_inc(&destroyed);
}

/* A history no longer kept: the error, and nothing subscribed (no event
 * reaches the callback; its user data stays the caller's). */
static void test_compacted(void)
{
    procreg *reg = open_logbook();
    logbook *lb = the_logbook;
    for (int i = 0; i < 3; i++)
        commit_elsewhere(lb, i % 2 ? PROCREG_EVENT_UNREGISTERED
                                   : PROCREG_EVENT_REGISTERED,
                         "a", false);
    lb->compacted_below = 3;
    seen s;
    seen_init(&s);
    destroyed = 0;
    uint64_t id = 0;
    GError *err = NULL;
    g_assert_cmpint(procreg_subscribe_from(reg, "ns", NULL, 0, on_event, &s,
                                           count_destroy, NULL, &id, &err),
                    ==, PROCREG_ECOMPACTED);
    g_assert_error(err, PROCREG_ERROR, PROCREG_ECOMPACTED);
    g_clear_error(&err);
    commit_elsewhere(lb, PROCREG_EVENT_UNREGISTERED, "a", false);
    g_autofree char *got = seen_wait(&s, 0);
    g_assert_cmpstr(got, ==, "");
    g_assert_cmpint(destroyed, ==, 0);
    /* From a position still kept it works. */
    subscribe_from(reg, 2, &s);
    g_free(got);
    got = seen_wait(&s, 2);
    g_assert_cmpstr(got, ==, "r:a@3 u:a@4 ");
    procreg_close(reg);
    g_assert_cmpint(destroyed, ==, 0);
    seen_clear(&s);
}

/* ---- the registry's own history, under a writer ---- */

/* Positions of the registry's own history are its seq: a watcher of
 * everything sees 1, 2, 3... whatever resubscriptions it makes. */
typedef struct {
    pthread_mutex_t lock;
    uint64_t last;
    guint bad;
} contiguity;

static void on_contiguous(procreg *reg, const procreg_event *ev,
                          gpointer data)
{
    (void)reg;
    contiguity *c = data;
    pthread_mutex_lock(&c->lock);
    if (ev->position != c->last + 1)
        c->bad++;
    c->last = ev->position;
    pthread_mutex_unlock(&c->lock);
}

/* Writes as many changes as the test allows (@budget, one change each),
 * so that however the threads are scheduled the history (4096 events)
 * outlasts a round; @done counts them. */
typedef struct {
    procreg *reg;
    atomic_int budget, done;
    atomic_bool stop;
} writer_ctx;

static gpointer writer_main(gpointer data)
{
    writer_ctx *w = data;
    for (int i = 0; !atomic_load(&w->stop);) {
        if (i >= atomic_load(&w->budget)) {
            g_thread_yield();
            continue;
        }
        char name[32];
        g_snprintf(name, sizeof name, "k%d", i++ % 64);
        if (procreg_register(w->reg, "ns", name, NULL, NULL, NULL, NULL) != 0)
            procreg_unregister(w->reg, "ns", name, NULL);
        atomic_store(&w->done, i);
    }
    return NULL;
}

/* The last position @c was given, under its lock. */
static uint64_t contiguity_last(contiguity *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t last = c->last;
    pthread_mutex_unlock(&c->lock);
    return last;
}

static void test_own_history_resubscribe(void)
{
    procreg *reg = NULL;
    g_assert_cmpint(procreg_open("ghash", &reg, NULL), ==, 0);
    contiguity c = {.last = 0};
    pthread_mutex_init(&c.lock, NULL);
    uint64_t id = 0;
    /* No history is kept before procreg_event_position(): the changes
     * made while nobody listened were not even numbered. */
    GError *err = NULL;
    g_assert_cmpint(procreg_subscribe_from(reg, NULL, NULL, 0, on_contiguous,
                                           &c, NULL, NULL, &id, &err),
                    ==, PROCREG_ECOMPACTED);
    g_assert_error(err, PROCREG_ERROR, PROCREG_ECOMPACTED);
    g_clear_error(&err);
    uint64_t start = 1;
    g_assert_cmpint(procreg_event_position(reg, &start, NULL), ==, 0);
    g_assert_cmpuint(start, ==, 0);
    g_assert_cmpint(procreg_subscribe_from(reg, NULL, NULL, 0, on_contiguous,
                                           &c, NULL, NULL, &id, NULL),
                    ==, 0);
    writer_ctx w = {.reg = reg};
    GThread *t = g_thread_new("writer", writer_main, &w);
    for (int round = 0; round < 200; round++) {
        atomic_fetch_add(&w.budget, 20);
        g_usleep(100);
        g_assert_cmpint(procreg_unsubscribe(reg, id), ==, 0);
        int rc = procreg_subscribe_from(reg, NULL, NULL, contiguity_last(&c),
                                        on_contiguous, &c, NULL, NULL, &id,
                                        &err);
        g_assert_no_error(err);
        g_assert_cmpint(rc, ==, 0);
    }
    /* However little the writer ran during the rounds, it makes all its
     * changes, and the last subscription delivers every one of them
     * (within 30 s: a bound for a loaded machine, not a timing). */
    gint64 end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
    while (atomic_load(&w.done) < atomic_load(&w.budget) &&
           g_get_monotonic_time() < end)
        g_usleep(1000);
    atomic_store(&w.stop, true);
    g_thread_join(t);
    g_assert_cmpint(atomic_load(&w.done), ==, 200 * 20);
    uint64_t latest = 0;
    g_assert_cmpint(procreg_event_position(reg, &latest, NULL), ==, 0);
    while (contiguity_last(&c) < latest && g_get_monotonic_time() < end)
        g_usleep(1000);
    g_assert_cmpint(procreg_unsubscribe(reg, id), ==, 0);
    g_assert_cmpuint(c.bad, ==, 0);
    g_assert_cmpuint(latest, ==, 200 * 20);
    g_assert_cmpuint(contiguity_last(&c), ==, latest);
    procreg_close(reg);
    pthread_mutex_destroy(&c.lock);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/history/catch-up/change-during-read",
                    test_change_during_read);
    g_test_add_data_func("/history/catch-up/late-notification-during",
                         GINT_TO_POINTER(1), test_late_notification);
    g_test_add_data_func("/history/catch-up/late-notification-after",
                         GINT_TO_POINTER(0), test_late_notification);
    g_test_add_func("/history/catch-up/change-after-read",
                    test_change_after_read);
    g_test_add_func("/history/catch-up/compacted", test_compacted);
    g_test_add_func("/history/own/resubscribe",
                    test_own_history_resubscribe);
    return g_test_run();
}
