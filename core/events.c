/*
 * Events, subscriptions, waiting for a key, and backend hosts.
 *
 * A change made through the registry is numbered and queued while the
 * writer still holds the key's stripe (see internal.h), so the numbers of
 * one key follow the order the backend applied the changes; the queue is a
 * FIFO in number order.  One dispatcher thread per registry (started by the
 * first subscription) pops events and calls the matching subscribers with
 * no registry lock held; a subscription on a GMainContext gets its events
 * through a per-subscription FIFO drained by an idle source on that
 * context.  Nothing is queued while nobody subscribes.
 *
 * Waiters (procreg_wait_for, procreg_wait_members: wait.c; lock waiters,
 * lock.c) sleep on this file's wake-up board: a condition variable per
 * awaited key or group; every change of a key (and a join of a group)
 * bumps its generation and broadcasts, directly from the writer (or
 * host_notify) thread, so waking needs no dispatcher.
 *
 * A backend with PROCREG_CAP_ORDERED_EVENTS reports its own changes too,
 * in commit order (host.c); the write paths then emit nothing themselves
 * (procreg_events_emit_own()).
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* A queued event; shared by the subscribers it goes to. */
typedef struct {
    gint refcount;
    procreg_event ev;
    procreg_entry entry;   /* owned; ns and name set */
    procreg_member member; /* JOINED / LEFT: a view of entry */
} item;

/* A key subscription sees its entry's events, a group subscription its
 * group's; the wider ones see both. */
typedef enum { SCOPE_ALL, SCOPE_NS, SCOPE_KEY, SCOPE_GROUP } scope;

typedef struct sub {
    gint refcount;
    uint64_t id;
    scope scope;
    char *ns, *name;
    procreg_event_fn fn;
    gpointer user_data;
    GDestroyNotify destroy;
    GMainContext *context;
    uint64_t from_seq; /* deliver only later events */
    procreg *reg;

    pthread_mutex_t lock; /* the fields below */
    pthread_cond_t idle;
    bool removed;
    bool destroy_pending; /* removed from inside its own callback */
    int running;
    pthread_t runner;
    GQueue pending;  /* context delivery: item* */
    GSource *source; /* our reference while one is attached */
} sub;

/* One awaited key. */
typedef struct {
    pthread_cond_t cond;
    uint64_t gen; /* bumped by each registration of the key */
    int waiters;
} awaited;

struct procreg_events {
    pthread_mutex_t lock; /* queue, subs, seq, thread */
    pthread_cond_t cond;  /* the dispatcher's */
    GQueue queue;         /* item*, seq order */
    uint64_t seq;
    GPtrArray *subs; /* sub*, subscription order */
    uint64_t next_id;
    GThread *thread;
    bool stop;
    atomic_int n_subs;
    uint64_t queued_max, delivered, emitted;

    pthread_mutex_t wait_lock; /* waits */
    GHashTable *waits;         /* key string -> awaited* */
    atomic_int n_waiters;
};

/* ---- names ---- */

PROCREG_API const char *procreg_event_kind_name(procreg_event_kind kind)
{
    switch (kind) {
    case PROCREG_EVENT_REGISTERED: return "registered";
    case PROCREG_EVENT_UNREGISTERED: return "unregistered";
    case PROCREG_EVENT_UPDATED: return "updated";
    case PROCREG_EVENT_JOINED: return "joined";
    case PROCREG_EVENT_LEFT: return "left";
    }
    return "unknown";
}

PROCREG_API const char *procreg_event_reason_name(procreg_event_reason reason)
{
    switch (reason) {
    case PROCREG_REASON_NONE: return "none";
    case PROCREG_REASON_EXPLICIT: return "explicit";
    case PROCREG_REASON_OWNER_EXITED: return "owner_exited";
    case PROCREG_REASON_NAMESPACE_DROPPED: return "namespace_dropped";
    case PROCREG_REASON_REPLACED: return "replaced";
    case PROCREG_REASON_EXPIRED: return "expired";
    case PROCREG_REASON_FORCED: return "forced";
    }
    return "unknown";
}

/* ---- items and subscriptions ---- */

static void item_unref(item *it)
{
    if (it != NULL && g_atomic_int_dec_and_test(&it->refcount)) {
        procreg_entry_clear(&it->entry);
        g_free(it);
    }
}

static sub *sub_ref(sub *s)
{
    g_atomic_int_inc(&s->refcount);
    return s;
}

static void sub_unref(gpointer p)
{
    sub *s = p;
    if (!g_atomic_int_dec_and_test(&s->refcount))
        return;
    g_queue_clear_full(&s->pending, (GDestroyNotify)item_unref);
    if (s->context != NULL)
        g_main_context_unref(s->context);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    g_free(s->ns);
    g_free(s->name);
    g_free(s);
}

static bool sub_matches(const sub *s, const item *it)
{
    if (it->ev.seq <= s->from_seq)
        return false;
    switch (s->scope) {
    case SCOPE_ALL: return true;
    case SCOPE_NS: return strcmp(s->ns, it->ev.ns) == 0;
    case SCOPE_KEY:
    case SCOPE_GROUP:
        return (s->scope == SCOPE_GROUP) ==
                   procreg_event_kind_is_group(it->ev.kind) &&
               strcmp(s->ns, it->ev.ns) == 0 &&
               strcmp(s->name, it->ev.name) == 0;
    }
    return false;
}

/* Run the callback for @it; s->lock held on entry and on return. */
static void sub_run_locked(sub *s, item *it)
{
    s->running++;
    s->runner = pthread_self();
    pthread_mutex_unlock(&s->lock);
    s->fn(s->reg, &it->ev, s->user_data);
    pthread_mutex_lock(&s->lock);
    s->running--;
    pthread_cond_broadcast(&s->idle);
}

/* After a callback: the destroy notify owed by a self-unsubscribe.
 * s->lock held; returns whether to call it (after unlocking). */
static bool take_destroy(sub *s)
{
    if (s->destroy_pending && s->running == 0) {
        s->destroy_pending = false;
        return s->destroy != NULL;
    }
    return false;
}

static gboolean context_dispatch(gpointer data)
{
    sub *s = data;
    pthread_mutex_lock(&s->lock);
    item *it;
    while (!s->removed && (it = g_queue_pop_head(&s->pending)) != NULL) {
        sub_run_locked(s, it);
        pthread_mutex_unlock(&s->lock);
        item_unref(it);
        pthread_mutex_lock(&s->lock);
    }
    bool destroy = take_destroy(s);
    GSource *mine = s->source;
    s->source = NULL;
    pthread_mutex_unlock(&s->lock);
    if (destroy)
        s->destroy(s->user_data);
    if (mine != NULL)
        g_source_unref(mine);
    return G_SOURCE_REMOVE;
}

static void deliver(sub *s, item *it)
{
    pthread_mutex_lock(&s->lock);
    if (s->removed) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    if (s->context != NULL) {
        g_atomic_int_inc(&it->refcount);
        g_queue_push_tail(&s->pending, it);
        if (s->source == NULL) {
            GSource *src = g_idle_source_new();
            g_source_set_priority(src, G_PRIORITY_DEFAULT);
            g_source_set_callback(src, context_dispatch, sub_ref(s),
                                  sub_unref);
            g_source_set_static_name(src, "procreg events");
            s->source = src; /* our reference */
            g_source_attach(src, s->context);
        }
        pthread_mutex_unlock(&s->lock);
        return;
    }
    sub_run_locked(s, it);
    bool destroy = take_destroy(s);
    pthread_mutex_unlock(&s->lock);
    if (destroy)
        s->destroy(s->user_data);
}

static gpointer dispatcher_main(gpointer data)
{
    procreg *reg = data;
    procreg_events *h = reg->events;
    GPtrArray *targets = g_ptr_array_new();
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (!h->stop && g_queue_is_empty(&h->queue))
            pthread_cond_wait(&h->cond, &h->lock);
        if (h->stop)
            break;
        item *it = g_queue_pop_head(&h->queue);
        for (guint i = 0; i < h->subs->len; i++) {
            sub *s = h->subs->pdata[i];
            if (sub_matches(s, it))
                g_ptr_array_add(targets, sub_ref(s));
        }
        pthread_mutex_unlock(&h->lock);
        for (guint i = 0; i < targets->len; i++) {
            deliver(targets->pdata[i], it);
            sub_unref(targets->pdata[i]);
        }
        g_ptr_array_set_size(targets, 0);
        item_unref(it);
        pthread_mutex_lock(&h->lock);
        h->delivered++;
    }
    pthread_mutex_unlock(&h->lock);
    g_ptr_array_unref(targets);
    return NULL;
}

/* ---- the hub ---- */

static void awaited_free(gpointer p)
{
    awaited *a = p;
    pthread_cond_destroy(&a->cond);
    g_free(a);
}

PROCREG_INTERNAL procreg_events *procreg_events_new(void)
{
    procreg_events *h = g_new0(procreg_events, 1);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    g_queue_init(&h->queue);
    h->subs = g_ptr_array_new();
    h->next_id = 1;
    pthread_mutex_init(&h->wait_lock, NULL);
    h->waits = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                     awaited_free);
    return h;
}

/* Mark @s removed and wait until its callback is not running (unless it
 * runs on this thread).  @s is already out of h->subs. */
static void sub_end(sub *s)
{
    pthread_mutex_lock(&s->lock);
    s->removed = true;
    g_queue_clear_full(&s->pending, (GDestroyNotify)item_unref);
    GSource *src = s->source;
    s->source = NULL;
    bool destroy;
    if (s->running > 0 && pthread_equal(s->runner, pthread_self())) {
        s->destroy_pending = true;
        destroy = false;
    } else {
        while (s->running > 0)
            pthread_cond_wait(&s->idle, &s->lock);
        destroy = s->destroy != NULL;
    }
    pthread_mutex_unlock(&s->lock);
    if (src != NULL) {
        g_source_destroy(src);
        g_source_unref(src);
    }
    if (destroy)
        s->destroy(s->user_data);
    sub_unref(s);
}

PROCREG_INTERNAL void procreg_events_shutdown(procreg *reg)
{
    procreg_events *h = reg->events;
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->lock);
    GPtrArray *subs = h->subs;
    h->subs = g_ptr_array_new();
    atomic_store_explicit(&h->n_subs, 0, memory_order_relaxed);
    h->stop = true;
    pthread_cond_broadcast(&h->cond);
    GThread *thread = h->thread;
    h->thread = NULL;
    pthread_mutex_unlock(&h->lock);
    for (guint i = 0; i < subs->len; i++)
        sub_end(subs->pdata[i]);
    g_ptr_array_unref(subs);
    if (thread != NULL)
        g_thread_join(thread);
}

PROCREG_INTERNAL void procreg_events_free(procreg_events *h)
{
    if (h == NULL)
        return;
    g_queue_clear_full(&h->queue, (GDestroyNotify)item_unref);
    g_ptr_array_unref(h->subs);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    g_hash_table_unref(h->waits);
    pthread_mutex_destroy(&h->wait_lock);
    g_free(h);
}

/* ---- emitting ---- */

/* What the waiters of key (ns, name), or with @group of that group, wait
 * on: names hold no control characters, so a leading one marks a group. */
static char *wait_key_string(const char *ns, const char *name, bool group)
{
    char *k = procreg_key_string(ns, name);
    if (!group)
        return k;
    char *g = g_strconcat("\x1e", k, NULL);
    g_free(k);
    return g;
}

static void wake_waiters(procreg_events *h, const char *ns, const char *name,
                         bool group)
{
    /* A read-modify-write, not a load: it either reads the waiter's
     * increment (and we wake it), or its value is what the waiter's
     * increment reads, which then synchronises with us and the waiter's
     * lookup sees the new entry.  (No standalone fence: ThreadSanitizer
     * cannot model those.) */
    if (atomic_fetch_add_explicit(&h->n_waiters, 0, memory_order_seq_cst) == 0)
        return;
    char *k = wait_key_string(ns, name, group);
    pthread_mutex_lock(&h->wait_lock);
    awaited *a = g_hash_table_lookup(h->waits, k);
    if (a != NULL) {
        a->gen++;
        pthread_cond_broadcast(&a->cond);
    }
    pthread_mutex_unlock(&h->wait_lock);
    g_free(k);
}

PROCREG_INTERNAL void procreg_events_emit(procreg *reg,
                                          procreg_event_kind kind,
                                          procreg_event_reason reason,
                                          const char *ns, const char *name,
                                          const procreg_entry *entry,
                                          bool external, uint64_t position)
{
    procreg_events *h = reg->events;
    if (entry != NULL) {
        if (entry->ns != NULL)
            ns = entry->ns;
        if (entry->name != NULL)
            name = entry->name;
    }
    /* Key waiters see every change (a lock waiter waits for a removal);
     * group waiters wait for members, so only a join wakes them. */
    if (!procreg_event_kind_is_group(kind))
        wake_waiters(h, ns, name, false);
    else if (kind == PROCREG_EVENT_JOINED)
        wake_waiters(h, ns, name, true);
    if (atomic_load_explicit(&h->n_subs, memory_order_relaxed) == 0)
        return;

    item *it = g_new0(item, 1);
    it->refcount = 1;
    if (entry != NULL) {
        it->entry = *entry;
        if (entry->metadata != NULL)
            g_variant_ref(entry->metadata);
    }
    it->entry.ns = g_strdup(ns);
    it->entry.name = g_strdup(name);
    it->ev.kind = kind;
    it->ev.reason = (kind == PROCREG_EVENT_UNREGISTERED ||
                     kind == PROCREG_EVENT_LEFT) && reason == 0
                        ? PROCREG_REASON_EXPLICIT
                        : reason;
    it->ev.ns = it->entry.ns;
    it->ev.name = it->entry.name;
    it->ev.entry = &it->entry;
    if (procreg_event_kind_is_group(kind)) {
        it->member = procreg_entry_as_member(&it->entry);
        it->ev.member = &it->member;
    }
    it->ev.time = g_get_real_time();
    it->ev.external = external;
    it->ev.position = position;

    pthread_mutex_lock(&h->lock);
    if (h->stop || h->subs->len == 0) {
        pthread_mutex_unlock(&h->lock);
        item_unref(it);
        return;
    }
    it->ev.seq = ++h->seq;
    g_queue_push_tail(&h->queue, it);
    h->emitted++;
    if (h->queue.length > h->queued_max)
        h->queued_max = h->queue.length;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

PROCREG_INTERNAL void procreg_events_emit_member(procreg *reg,
                                                 procreg_event_kind kind,
                                                 procreg_event_reason reason,
                                                 const procreg_member *m,
                                                 bool external)
{
    procreg_entry e = procreg_member_as_entry(m);
    procreg_events_emit(reg, kind, reason, m->ns, m->group, &e, external, 0);
}

PROCREG_INTERNAL bool procreg_events_wanted(procreg *reg)
{
    return atomic_load_explicit(&reg->events->n_subs, memory_order_relaxed) >
           0;
}

PROCREG_INTERNAL void procreg_events_emit_own(procreg *reg,
                                              procreg_event_kind kind,
                                              procreg_event_reason reason,
                                              const char *ns, const char *name,
                                              const procreg_entry *entry)
{
    if (!reg->backend_orders_events)
        procreg_events_emit(reg, kind, reason, ns, name, entry, false, 0);
}

PROCREG_API uint64_t procreg_event_last_seq(procreg *reg)
{
    g_return_val_if_fail(reg != NULL, 0);
    procreg_events *h = reg->events;
    pthread_mutex_lock(&h->lock);
    uint64_t seq = h->seq;
    pthread_mutex_unlock(&h->lock);
    return seq;
}

/* ---- subscribing ---- */

static int subscribe(procreg *reg, scope sc, const char *ns, const char *name,
                     procreg_event_fn fn, gpointer user_data,
                     GDestroyNotify destroy, GMainContext *context,
                     uint64_t *id, GError **error)
{
    procreg_events *h = reg->events;
    sub *s = g_new0(sub, 1);
    s->refcount = 1;
    s->scope = sc;
    s->ns = g_strdup(ns);
    s->name = g_strdup(name);
    s->fn = fn;
    s->user_data = user_data;
    s->destroy = destroy;
    s->context = context ? g_main_context_ref(context) : NULL;
    s->reg = reg;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    g_queue_init(&s->pending);

    pthread_mutex_lock(&h->lock);
    if (h->thread == NULL && !h->stop) {
        GError *local = NULL;
        h->thread = g_thread_try_new("procreg-events", dispatcher_main, reg,
                                     &local);
        if (h->thread == NULL) {
            pthread_mutex_unlock(&h->lock);
            int rc = procreg_set_error(error, PROCREG_ENOMEM,
                                       "cannot start the event dispatcher "
                                       "thread: %s", local->message);
            g_error_free(local);
            s->destroy = NULL; /* the caller keeps user_data */
            sub_unref(s);
            return rc;
        }
    }
    s->id = h->next_id++;
    s->from_seq = h->seq;
    g_ptr_array_add(h->subs, s);
    atomic_store_explicit(&h->n_subs, (int)h->subs->len,
                          memory_order_relaxed);
    pthread_mutex_unlock(&h->lock);
    if (id != NULL)
        *id = s->id;
    return 0;
}

PROCREG_API int procreg_subscribe(procreg *reg, const char *ns,
                                  const char *name, procreg_event_fn fn,
                                  gpointer user_data, GDestroyNotify destroy,
                                  GMainContext *context, uint64_t *id,
                                  GError **error)
{
    g_return_val_if_fail(reg != NULL, PROCREG_EINVAL);
    if (fn == NULL)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "event callback is NULL");
    if (ns == NULL && name != NULL)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "subscribing to name '%s' needs a namespace",
                                 name);
    int rc = ns ? procreg_validate_name(ns, "namespace", error) : 0;
    if (rc == 0 && name != NULL)
        rc = procreg_validate_name(name, "name", error);
    if (rc != 0)
        return rc;
    scope sc = ns == NULL ? SCOPE_ALL : name == NULL ? SCOPE_NS : SCOPE_KEY;
    return subscribe(reg, sc, ns, name, fn, user_data, destroy, context, id,
                     error);
}

PROCREG_API int procreg_subscribe_key(procreg *reg, const procreg_key *key,
                                      procreg_event_fn fn, gpointer user_data,
                                      GDestroyNotify destroy,
                                      GMainContext *context, uint64_t *id,
                                      GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL, PROCREG_EINVAL);
    if (fn == NULL)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "event callback is NULL");
    return subscribe(reg, SCOPE_KEY, procreg_key_namespace(key),
                     procreg_key_name(key), fn, user_data, destroy, context,
                     id, error);
}

PROCREG_API int procreg_subscribe_group(procreg *reg, const char *ns,
                                        const char *group, procreg_event_fn fn,
                                        gpointer user_data,
                                        GDestroyNotify destroy,
                                        GMainContext *context, uint64_t *id,
                                        GError **error)
{
    g_return_val_if_fail(reg != NULL, PROCREG_EINVAL);
    if (fn == NULL)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "event callback is NULL");
    int rc = procreg_validate_name(ns, "namespace", error);
    if (rc == 0)
        rc = procreg_validate_name(group, "group", error);
    if (rc != 0)
        return rc;
    return subscribe(reg, SCOPE_GROUP, ns, group, fn, user_data, destroy,
                     context, id, error);
}

PROCREG_API int procreg_unsubscribe(procreg *reg, uint64_t id)
{
    g_return_val_if_fail(reg != NULL, PROCREG_EINVAL);
    procreg_events *h = reg->events;
    sub *found = NULL;
    pthread_mutex_lock(&h->lock);
    for (guint i = 0; i < h->subs->len; i++) {
        sub *s = h->subs->pdata[i];
        if (s->id == id) {
            found = s;
            g_ptr_array_remove_index(h->subs, i); /* keeps the order */
            break;
        }
    }
    atomic_store_explicit(&h->n_subs, (int)h->subs->len,
                          memory_order_relaxed);
    pthread_mutex_unlock(&h->lock);
    if (found == NULL)
        return PROCREG_ENOTFOUND;
    sub_end(found);
    return 0;
}

PROCREG_INTERNAL void procreg_events_health(procreg *reg, GVariantDict *d,
                                            bool *degraded)
{
    procreg_events *h = reg->events;
    pthread_mutex_lock(&h->lock);
    guint64 subs = h->subs->len, queued = h->queue.length;
    bool thread = h->thread != NULL;
    pthread_mutex_unlock(&h->lock);
    GVariantDict e;
    g_variant_dict_init(&e, NULL);
    g_variant_dict_insert(&e, "subscribers", "t", subs);
    g_variant_dict_insert(&e, "queued", "t", queued);
    g_variant_dict_insert(&e, "dispatcher", "b", (gboolean)thread);
    g_variant_dict_insert(&e, "waiters", "t",
                          (guint64)atomic_load(&h->n_waiters));
    g_variant_dict_insert_value(d, "events", g_variant_dict_end(&e));
    *degraded = queued > 100000;
}

PROCREG_INTERNAL void procreg_events_stats(procreg *reg, GVariantDict *d)
{
    procreg_events *h = reg->events;
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE("a{st}"));
    pthread_mutex_lock(&h->lock);
    g_variant_builder_add(&b, "{st}", "last_seq", (guint64)h->seq);
    g_variant_builder_add(&b, "{st}", "emitted", (guint64)h->emitted);
    g_variant_builder_add(&b, "{st}", "delivered", (guint64)h->delivered);
    g_variant_builder_add(&b, "{st}", "queued", (guint64)h->queue.length);
    g_variant_builder_add(&b, "{st}", "queued_max", (guint64)h->queued_max);
    g_variant_builder_add(&b, "{st}", "subscribers", (guint64)h->subs->len);
    pthread_mutex_unlock(&h->lock);
    g_variant_builder_add(&b, "{st}", "waiters",
                          (guint64)atomic_load(&h->n_waiters));
    g_variant_dict_insert_value(d, "events", g_variant_builder_end(&b));
}

/* ---- the wake-up board (wait.c sleeps on it) ---- */

struct procreg_wake {
    /* Published with a release store at the end of procreg_wake_join():
     * procreg_wake_cancel() may run on another thread (a GCancellable's
     * handler), ordered only by GLib's uninstrumented locks. */
    _Atomic(procreg_events *) h;
    awaited *a;
    char *key;
    bool cancelled; /* under h->wait_lock */
};

PROCREG_INTERNAL procreg_wake *procreg_wake_join(procreg *reg, const char *ns,
                                                 const char *name, bool group)
{
    procreg_events *h = reg->events;
    procreg_wake *w = g_new0(procreg_wake, 1);
    w->key = wait_key_string(ns, name, group);
    pthread_mutex_lock(&h->wait_lock);
    awaited *a = g_hash_table_lookup(h->waits, w->key);
    if (a == NULL) {
        a = g_new0(awaited, 1);
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&a->cond, &attr);
        pthread_condattr_destroy(&attr);
        g_hash_table_insert(h->waits, g_strdup(w->key), a);
    }
    a->waiters++;
    /* Pairs with wake_waiters()' read-modify-write (see there). */
    atomic_fetch_add_explicit(&h->n_waiters, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&h->wait_lock);
    w->a = a;
    atomic_store_explicit(&w->h, h, memory_order_release);
    return w;
}

PROCREG_INTERNAL bool procreg_wake_read(procreg_wake *w, uint64_t *gen)
{
    procreg_events *h = atomic_load_explicit(&w->h, memory_order_relaxed);
    pthread_mutex_lock(&h->wait_lock);
    *gen = w->a->gen;
    bool live = !w->cancelled;
    pthread_mutex_unlock(&h->wait_lock);
    return live;
}

PROCREG_INTERNAL bool procreg_wake_sleep(procreg_wake *w, uint64_t gen,
                                         const struct timespec *deadline)
{
    procreg_events *h = atomic_load_explicit(&w->h, memory_order_relaxed);
    awaited *a = w->a;
    bool timed_out = false;
    pthread_mutex_lock(&h->wait_lock);
    while (a->gen == gen && !w->cancelled && !timed_out) {
        if (deadline == NULL)
            pthread_cond_wait(&a->cond, &h->wait_lock);
        else
            timed_out = pthread_cond_timedwait(&a->cond, &h->wait_lock,
                                               deadline) == ETIMEDOUT;
    }
    bool woken = a->gen != gen || w->cancelled;
    pthread_mutex_unlock(&h->wait_lock);
    return woken;
}

PROCREG_INTERNAL void procreg_wake_cancel(procreg_wake *w)
{
    procreg_events *h = atomic_load_explicit(&w->h, memory_order_acquire);
    pthread_mutex_lock(&h->wait_lock);
    w->cancelled = true;
    pthread_cond_broadcast(&w->a->cond);
    pthread_mutex_unlock(&h->wait_lock);
}

PROCREG_INTERNAL void procreg_wake_leave(procreg_wake *w)
{
    procreg_events *h = atomic_load_explicit(&w->h, memory_order_relaxed);
    pthread_mutex_lock(&h->wait_lock);
    atomic_fetch_sub_explicit(&h->n_waiters, 1, memory_order_relaxed);
    if (--w->a->waiters == 0)
        g_hash_table_remove(h->waits, w->key);
    pthread_mutex_unlock(&h->wait_lock);
    g_free(w->key);
    g_free(w);
}
