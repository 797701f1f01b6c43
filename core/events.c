/*
 * Events and subscriptions.
 *
 * A change made through the registry is numbered and queued while the
 * writer still holds the key's stripe (see internal.h), so the numbers of
 * one key follow the order the backend applied the changes; the queue is a
 * FIFO in number order.  One dispatcher thread per registry (started by the
 * first subscription) pops events and calls the matching subscribers with
 * no registry lock held, through a per-subscription FIFO that it drains
 * itself, or an idle source on the subscription's GMainContext.  Nothing
 * is queued before the first subscription.
 *
 * History (procreg_subscribe_from()): each event carries a position.  A
 * backend that keeps a history (procreg_backend_has_history()) gives its
 * own, and a new subscription replays the backend's history (catch_up());
 * otherwise the registry keeps its latest events in a ring, positions
 * being their seq (replay_ring_locked()).
 *
 * Each change also wakes the waiters of its key (wake.c), directly from
 * the thread that reports it.
 *
 * A backend with PROCREG_CAP_ORDERED_EVENTS reports its own changes too,
 * in commit order (host.c); the write paths then emit nothing themselves
 * (procreg_events_emit_own()).
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* Events the registry keeps for procreg_subscribe_from() when the backend
 * keeps no history (procreg.h says the figure). */
#define HISTORY_KEEP 4096

struct sub;

/* A queued event; shared by the subscribers it goes to (and the history
 * ring).  An item with @only set is no event: it asks the dispatcher to
 * run what is pending for that subscription (its history, see
 * procreg_subscribe_from()). */
typedef struct {
    gint refcount;
    procreg_event ev;
    procreg_entry entry;   /* owned; ns and name set */
    procreg_member member; /* JOINED / LEFT: a view of entry */
    struct sub *only;      /* a reference */
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
    /* procreg_subscribe_from() is still reading the history: items only
     * collect in @pending, to go behind it. */
    bool catching_up;
    /* The backend's history was replayed up to this position: a live
     * event at or below it (a notification that came late) was in it. */
    uint64_t replayed;
    int running;
    pthread_t runner;
    GQueue pending;  /* item*, in order: what the callback has yet to see */
    GSource *source; /* our reference while one is attached */
} sub;

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
    /* The registry's own history (a backend without one): from the first
     * procreg_event_position() on, every event is numbered even when
     * nobody listens, and the dispatcher keeps the latest HISTORY_KEEP it
     * popped in @ring.
     * Invariant: every event numbered above @evicted is in @ring (up to
     * @popped) or still in @queue (above @popped), so a subscription
     * added under @lock that replays @ring above its position and takes
     * @queue live misses nothing and sees nothing twice. */
    bool history_on;
    GQueue ring; /* item*, seq order */
    uint64_t evicted, popped;
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

static void sub_unref(gpointer p);

static void item_unref(item *it)
{
    if (it != NULL && g_atomic_int_dec_and_test(&it->refcount)) {
        procreg_entry_clear(&it->entry);
        if (it->only != NULL)
            sub_unref(it->only);
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

static bool scope_matches(const sub *s, const item *it)
{
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

static bool sub_matches(const sub *s, const item *it)
{
    return it->only == NULL && it->ev.seq > s->from_seq &&
           scope_matches(s, it);
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

/* Run the callbacks of what is pending, in order; s->lock held on entry
 * and on return.  Returns whether to call the destroy notify owed by a
 * self-unsubscribe (after unlocking). */
static bool drain_locked(sub *s)
{
    item *it;
    while (!s->removed && (it = g_queue_pop_head(&s->pending)) != NULL) {
        sub_run_locked(s, it);
        pthread_mutex_unlock(&s->lock);
        item_unref(it);
        pthread_mutex_lock(&s->lock);
    }
    return take_destroy(s);
}

static gboolean context_dispatch(gpointer data)
{
    sub *s = data;
    pthread_mutex_lock(&s->lock);
    bool destroy = drain_locked(s);
    GSource *mine = s->source;
    s->source = NULL;
    pthread_mutex_unlock(&s->lock);
    if (destroy)
        s->destroy(s->user_data);
    if (mine != NULL)
        g_source_unref(mine);
    return G_SOURCE_REMOVE;
}

/* s->lock held. */
static void attach_source_locked(sub *s)
{
    if (s->source != NULL || g_queue_is_empty(&s->pending))
        return;
    GSource *src = g_idle_source_new();
    g_source_set_priority(src, G_PRIORITY_DEFAULT);
    g_source_set_callback(src, context_dispatch, sub_ref(s), sub_unref);
    g_source_set_static_name(src, "procreg events");
    s->source = src; /* our reference */
    g_source_attach(src, s->context);
}

/* s->lock held. */
static bool replayed_already(const sub *s, const item *it)
{
    return it->ev.position != 0 && it->ev.position <= s->replayed;
}

/* Hand @it (NULL: nothing new) to @s behind what is pending, and run the
 * callbacks here (the dispatcher) or from a source on its context.  A
 * subscription catching up only collects. */
static void deliver(sub *s, item *it)
{
    pthread_mutex_lock(&s->lock);
    if (s->removed) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    if (it != NULL && !replayed_already(s, it)) {
        g_atomic_int_inc(&it->refcount);
        g_queue_push_tail(&s->pending, it);
    }
    bool destroy = false;
    if (!s->catching_up && s->context != NULL)
        attach_source_locked(s);
    else if (!s->catching_up)
        destroy = drain_locked(s);
    pthread_mutex_unlock(&s->lock);
    if (destroy)
        s->destroy(s->user_data);
}

/* The registry's own history: keep @it (just popped), forget the oldest
 * beyond HISTORY_KEEP.  h->lock held. */
static void ring_push_locked(procreg_events *h, item *it)
{
    h->popped = it->ev.seq;
    if (!h->history_on)
        return;
    g_atomic_int_inc(&it->refcount);
    g_queue_push_tail(&h->ring, it);
    if (h->ring.length > HISTORY_KEEP) {
        item *old = g_queue_pop_head(&h->ring);
        h->evicted = old->ev.seq;
        item_unref(old);
    }
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
        if (it->only != NULL) {
            pthread_mutex_unlock(&h->lock);
            deliver(it->only, NULL);
            item_unref(it);
            pthread_mutex_lock(&h->lock);
            continue;
        }
        for (guint i = 0; i < h->subs->len; i++) {
            sub *s = h->subs->pdata[i];
            if (sub_matches(s, it))
                g_ptr_array_add(targets, sub_ref(s));
        }
        ring_push_locked(h, it);
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

PROCREG_INTERNAL procreg_events *procreg_events_new(void)
{
    procreg_events *h = g_new0(procreg_events, 1);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    g_queue_init(&h->queue);
    g_queue_init(&h->ring);
    h->subs = g_ptr_array_new();
    h->next_id = 1;
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
    g_queue_clear_full(&h->ring, (GDestroyNotify)item_unref);
    g_ptr_array_unref(h->subs);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    g_free(h);
}

/* ---- emitting ---- */

/* An event of a change.  Reasons: only removals have one (EXPLICIT when
 * none is given), and forced updates.  A dead owner's removal is never
 * external: no process made it, and every registry reports it alike,
 * whoever reaped it. */
static item *item_new(procreg_event_kind kind, procreg_event_reason reason,
                      const char *ns, const char *name,
                      const procreg_entry *entry, bool external,
                      uint64_t position)
{
    bool removal =
        kind == PROCREG_EVENT_UNREGISTERED || kind == PROCREG_EVENT_LEFT;
    if (removal && reason == PROCREG_REASON_NONE)
        reason = PROCREG_REASON_EXPLICIT;
    if (!removal && !(kind == PROCREG_EVENT_UPDATED &&
                      reason == PROCREG_REASON_FORCED))
        reason = PROCREG_REASON_NONE;
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
    it->ev.reason = reason;
    it->ev.ns = it->entry.ns;
    it->ev.name = it->entry.name;
    it->ev.entry = &it->entry;
    if (procreg_event_kind_is_group(kind)) {
        it->member = procreg_entry_as_member(&it->entry);
        it->ev.member = &it->member;
    }
    it->ev.time = g_get_real_time();
    it->ev.external =
        external && !(removal && reason == PROCREG_REASON_OWNER_EXITED);
    it->ev.position = position;
    return it;
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
        procreg_wakes_notify(reg, ns, name, false);
    else if (kind == PROCREG_EVENT_JOINED)
        procreg_wakes_notify(reg, ns, name, true);
    if (atomic_load_explicit(&h->n_subs, memory_order_relaxed) == 0)
        return;

    item *it = item_new(kind, reason, ns, name, entry, external, position);
    pthread_mutex_lock(&h->lock);
    if (h->stop || (h->subs->len == 0 && !h->history_on)) {
        pthread_mutex_unlock(&h->lock);
        item_unref(it);
        return;
    }
    it->ev.seq = ++h->seq;
    if (!reg->backend_history)
        it->ev.position = it->ev.seq;
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

PROCREG_INTERNAL atomic_int *procreg_events_subs_counter(procreg_events *h)
{
    return &h->n_subs;
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

static sub *sub_new(procreg *reg, scope sc, const char *ns, const char *name,
                    procreg_event_fn fn, gpointer user_data,
                    GDestroyNotify destroy, GMainContext *context)
{
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
    return s;
}

/* h->lock held. */
static int dispatcher_start_locked(procreg *reg, GError **error)
{
    procreg_events *h = reg->events;
    if (h->thread != NULL || h->stop)
        return 0;
    GError *local = NULL;
    h->thread =
        g_thread_try_new("procreg-events", dispatcher_main, reg, &local);
    if (h->thread != NULL)
        return 0;
    int rc = procreg_set_error(error, PROCREG_ENOMEM,
                               "cannot start the event dispatcher thread: %s",
                               local->message);
    g_error_free(local);
    return rc;
}

/* Whether emit() has work: a subscriber, or the history.  h->lock held. */
static void wanted_update_locked(procreg_events *h)
{
    atomic_store_explicit(&h->n_subs, (int)h->subs->len + h->history_on,
                          memory_order_relaxed);
}

/* The registry keeps its own history from now on (procreg_event_position()),
 * unless the backend keeps one.  h->lock held. */
static void history_start_locked(procreg *reg)
{
    procreg_events *h = reg->events;
    if (reg->backend_history || h->history_on)
        return;
    h->history_on = true;
    h->evicted = h->seq; /* the events numbered before are not kept */
    wanted_update_locked(h);
}

/* Have the callbacks of what is pending for @s run: from a source on its
 * context, or by the dispatcher, after the events queued before.
 * h->lock held. */
static void kick_locked(procreg_events *h, sub *s)
{
    if (s->context != NULL) {
        pthread_mutex_lock(&s->lock);
        attach_source_locked(s);
        pthread_mutex_unlock(&s->lock);
        return;
    }
    item *marker = g_new0(item, 1);
    marker->refcount = 1;
    marker->only = sub_ref(s);
    g_queue_push_tail(&h->queue, marker);
    pthread_cond_signal(&h->cond);
}

/* procreg_subscribe_from() on the registry's own history: @s starts with
 * the ring's events after @after and takes live those still queued (see
 * the invariant at procreg_events).  h->lock held, @s not yet visible. */
static int replay_ring_locked(procreg_events *h, sub *s, uint64_t after,
                              GError **error)
{
    /* Before, changes went unnumbered while nobody listened. */
    if (!h->history_on)
        return procreg_set_error(
            error, PROCREG_ECOMPACTED,
            "this registry keeps no history yet (its backend keeps none): "
            "it keeps one from the first procreg_event_position() on; read "
            "that position, list, then subscribe from it");
    if (after > h->seq)
        return procreg_set_error(
            error, PROCREG_ECOMPACTED,
            "position %" G_GUINT64_FORMAT " is ahead of this registry's "
            "latest, %" G_GUINT64_FORMAT " (a position from another "
            "registry?): list again and subscribe from the current one",
            after, h->seq);
    if (after < h->evicted)
        return procreg_set_error(
            error, PROCREG_ECOMPACTED,
            "the events after position %" G_GUINT64_FORMAT " are no longer "
            "kept (this registry keeps its latest %d, from position %"
            G_GUINT64_FORMAT " on): list again and subscribe from the "
            "current position", after, HISTORY_KEEP, h->evicted + 1);
    for (GList *l = h->ring.head; l != NULL; l = l->next) {
        item *it = l->data;
        if (it->ev.seq > after && scope_matches(s, it)) {
            g_atomic_int_inc(&it->refcount);
            g_queue_push_tail(&s->pending, it);
        }
    }
    s->from_seq = MAX(after, h->popped);
    return 0;
}

/* procreg_subscribe_from() on the backend's history.  @s is subscribed
 * and catching up: live events collect in its pending queue.  Invariant:
 * @s joined the subscribers before the history was read, so a change
 * above the position read up to reaches it live, and one at or below it
 * is in the history (or outside its namespace): the live ones at or below
 * it, collected meanwhile or notified late, after the catch-up, are
 * dropped (s->replayed), and each change is seen once, in position
 * order. */
static int catch_up(procreg *reg, sub *s, uint64_t after, GError **error)
{
    GArray *changes = procreg_change_array_new();
    uint64_t head = 0;
    int rc = procreg_backend_history_read(
        reg->backend, s->scope == SCOPE_ALL ? NULL : s->ns, after, changes,
        &head, error);
    if (rc != 0) {
        g_array_unref(changes);
        return rc;
    }
    GQueue history = G_QUEUE_INIT;
    for (guint i = 0; i < changes->len; i++) {
        procreg_change *c = &g_array_index(changes, procreg_change, i);
        item *it = item_new(c->kind, c->reason, c->entry.ns, c->entry.name,
                            &c->entry, !c->own, c->position);
        if (c->position > after && scope_matches(s, it))
            g_queue_push_tail(&history, it);
        else
            item_unref(it);
    }
    g_array_unref(changes);
    pthread_mutex_lock(&s->lock);
    s->replayed = head;
    item *it;
    while ((it = g_queue_pop_head(&s->pending)) != NULL) {
        if (replayed_already(s, it))
            item_unref(it);
        else
            g_queue_push_tail(&history, it);
    }
    s->pending = history;
    s->catching_up = false;
    pthread_mutex_unlock(&s->lock);
    procreg_events *h = reg->events;
    pthread_mutex_lock(&h->lock);
    if (!h->stop)
        kick_locked(h, s);
    pthread_mutex_unlock(&h->lock);
    return 0;
}

/* Take @s out of the subscribers and end it (unless procreg_close() did
 * both already). */
static void sub_remove(procreg *reg, sub *s)
{
    procreg_events *h = reg->events;
    pthread_mutex_lock(&h->lock);
    bool found = g_ptr_array_remove(h->subs, s); /* keeps the order */
    wanted_update_locked(h);
    pthread_mutex_unlock(&h->lock);
    if (found)
        sub_end(s);
}

/* Subscribe; with @after, replay the history after that position first
 * (procreg_subscribe_from()). */
static int subscribe(procreg *reg, scope sc, const char *ns, const char *name,
                     const uint64_t *after, procreg_event_fn fn,
                     gpointer user_data, GDestroyNotify destroy,
                     GMainContext *context, uint64_t *id, GError **error)
{
    procreg_events *h = reg->events;
    sub *s = sub_new(reg, sc, ns, name, fn, user_data, destroy, context);
    pthread_mutex_lock(&h->lock);
    int rc = dispatcher_start_locked(reg, error);
    s->from_seq = h->seq;
    if (rc == 0 && after != NULL && !reg->backend_history)
        rc = replay_ring_locked(h, s, *after, error);
    if (rc != 0) {
        pthread_mutex_unlock(&h->lock);
        s->destroy = NULL; /* the caller keeps user_data */
        sub_unref(s);
        return rc;
    }
    s->catching_up = after != NULL && reg->backend_history;
    s->id = h->next_id++;
    g_ptr_array_add(h->subs, sub_ref(s));
    wanted_update_locked(h);
    if (!g_queue_is_empty(&s->pending))
        kick_locked(h, s);
    pthread_mutex_unlock(&h->lock);
    if (s->catching_up) {
        rc = catch_up(reg, s, *after, error);
        if (rc != 0) {
            s->destroy = NULL; /* nothing was subscribed */
            sub_remove(reg, s);
            sub_unref(s);
            return rc;
        }
    }
    if (id != NULL)
        *id = s->id;
    sub_unref(s);
    return 0;
}

/* procreg_subscribe() and procreg_subscribe_from(). */
static int subscribe_named(procreg *reg, const char *ns, const char *name,
                           const uint64_t *after, procreg_event_fn fn,
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
    return subscribe(reg, sc, ns, name, after, fn, user_data, destroy,
                     context, id, error);
}

PROCREG_API int procreg_subscribe(procreg *reg, const char *ns,
                                  const char *name, procreg_event_fn fn,
                                  gpointer user_data, GDestroyNotify destroy,
                                  GMainContext *context, uint64_t *id,
                                  GError **error)
{
    return subscribe_named(reg, ns, name, NULL, fn, user_data, destroy,
                           context, id, error);
}

PROCREG_API int procreg_subscribe_from(procreg *reg, const char *ns,
                                       const char *name, uint64_t after,
                                       procreg_event_fn fn, gpointer user_data,
                                       GDestroyNotify destroy,
                                       GMainContext *context, uint64_t *id,
                                       GError **error)
{
    return subscribe_named(reg, ns, name, &after, fn, user_data, destroy,
                           context, id, error);
}

PROCREG_API int procreg_event_position(procreg *reg, uint64_t *out,
                                       GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL, PROCREG_EINVAL);
    if (reg->backend_history)
        return procreg_backend_history_head(reg->backend, out, error);
    procreg_events *h = reg->events;
    pthread_mutex_lock(&h->lock);
    history_start_locked(reg);
    /* The ring fills as the dispatcher pops. */
    int rc = dispatcher_start_locked(reg, error);
    *out = h->seq;
    pthread_mutex_unlock(&h->lock);
    return rc;
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
                     procreg_key_name(key), NULL, fn, user_data, destroy, context,
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
    return subscribe(reg, SCOPE_GROUP, ns, group, NULL, fn, user_data, destroy,
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
    wanted_update_locked(h);
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
    g_variant_dict_insert(&e, "waiters", "t", procreg_wakes_waiters(reg));
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
    g_variant_builder_add(&b, "{st}", "waiters", procreg_wakes_waiters(reg));
    g_variant_dict_insert_value(d, "events", g_variant_builder_end(&b));
}
