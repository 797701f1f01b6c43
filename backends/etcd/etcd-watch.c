/*
 * etcd backend: the watch thread.  One streaming watch, resumed from the
 * last revision after a reconnect, with a resync on compaction.  It
 * reports changes made by other instances, to entries and to group
 * members (JOINED, LEFT: etcd-groups.c), through
 * procreg_backend_host_notify_at(), each at its position: the event's
 * revision and its index among the changes of that revision
 * (procreg_etcd_position()), as the history (etcd-history.c) gives it.
 * A removal's reason comes from its namespace's marker, written in the
 * same revision; a removal without one is a lease expiry (etcd-events.c
 * reads both).
 *
 * Changes this instance made (the value, or the marker, names its writer):
 * with WATCH_ALL the watch reports them too, as its own (the @own of
 * procreg_backend_host_notify_at()), and each op waits for the watch to
 * pass its revision before it returns (procreg_etcd_watch_await()).  So
 * every event of the prefix reaches the core from one thread in revision
 * order, this instance's and others' alike (PROCREG_CAP_ORDERED_EVENTS):
 * reporting our own at the op's return instead put them out of order with
 * another host's change of the same key that the watch was still
 * delivering.  Invariant: an event of revision R is reported only after
 * every event below R that the watch covers.  Otherwise (WATCH_USED,
 * whose coverage of a namespace begins at its first use) our own changes
 * are skipped here, and the core reports them.
 *
 * What it covers (s->watch_mode):
 *  - WATCH_ALL: the whole prefix, every key read when the thread starts;
 *  - WATCH_USED: the namespaces this registry uses (procreg_etcd_watch_use()
 *    from the operations, and the spec's watch_namespaces), each read
 *    when first used.  One stream covers the range from the first to the
 *    last of them (events of namespaces between are dropped); a namespace
 *    added restarts it from the last revision seen, and the events of the
 *    new namespace up to the revision it was read at are dropped, so
 *    nothing is reported twice.
 *
 * The mirror (what the watch knows of every key it covers, for the
 * resync; keys and revisions, not values) belongs to the watch thread,
 * which fills it first (WATCH_ALL: at the revision open saw, so open
 * does not wait for the read).
 */
#include "etcd-private.h"

#include <string.h>

/* Watch reconnect backoff. */
#define WATCH_BACKOFF_MIN_MS 50
#define WATCH_BACKOFF_MAX_MS 2000
/* The longest an operation waits for the watch to cover its namespace. */
#define USE_WAIT_MAX_MS 2000

ETCD_HIDDEN bool procreg_etcd_ordered(const etcd_state *s)
{
    return s->watch_mode == WATCH_ALL;
}

/* The watch has reported everything up to @rev: wake the ops waiting for
 * it. */
static void advance(etcd_state *s, int64_t rev)
{
    pthread_mutex_lock(&s->lock);
    if (rev > __atomic_load_n(&s->watch_rev, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&s->watch_rev, rev, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
}

ETCD_HIDDEN void procreg_etcd_watch_await(etcd_state *s, int64_t rev,
                                          gint64 deadline)
{
    if (!procreg_etcd_ordered(s))
        return;
    pthread_mutex_lock(&s->lock);
    while (__atomic_load_n(&s->watch_rev, __ATOMIC_ACQUIRE) < rev &&
           !s->stopping && g_get_monotonic_time() < deadline)
        cond_wait_until(&s->cond, &s->lock, deadline);
    pthread_mutex_unlock(&s->lock);
}

/* ---- the mirror ---- */

ETCD_HIDDEN GHashTable *procreg_etcd_mirror_new(void)
{
    return g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                 (GDestroyNotify)g_bytes_unref, g_free);
}

static void mirror_set(etcd_state *s, GHashTable *mirror, const etcd_kv *kv)
{
    mirror_entry *m = g_new(mirror_entry, 1);
    m->mod_rev = kv->mod_rev;
    m->create_rev = kv->create_rev;
    m->lease = kv->lease;
    GBytes *k = g_bytes_new(kv->key, kv->key_len);
    if (!g_hash_table_contains(mirror, k))
        atomic_add(&s->mirror_bytes, kv->key_len + sizeof *m);
    g_hash_table_replace(mirror, k, m);
}

static void mirror_remove(etcd_state *s, GHashTable *mirror, const void *key,
                          size_t n)
{
    GBytes *k = g_bytes_new(key, n);
    if (g_hash_table_remove(mirror, k))
        atomic_sub(&s->mirror_bytes, n + sizeof(mirror_entry));
    g_bytes_unref(k);
}

static int load_one(etcd_state *s, etcd_kv *kv, void *user, GError **error)
{
    /* A registry closed while its watch reads: close need not wait. */
    if (procreg_etcd_stream_stopped(s->stream))
        return procreg_set_error(error, PROCREG_ECANCELLED,
                                 "the registry is closing");
    if (procreg_etcd_watched_key(s, kv->key, kv->key_len))
        mirror_set(s, user, kv);
    return 0;
}

/* Read the keys of namespace @ns (NULL: all) into @mirror; *@rev: the
 * revision read at. */
static int mirror_read(etcd_state *s, const char *ns, GHashTable *mirror,
                       int64_t *rev, GError **error)
{
    GString *start, *end;
    procreg_etcd_ns_watch_range(s, ns, &start, &end);
    int rc = procreg_etcd_range_all(s, start, end, true, false, 0, load_one,
                                    mirror, rev, error);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    return rc;
}

ETCD_HIDDEN int procreg_etcd_watch_begin(etcd_state *s, GError **error)
{
    int64_t rev = 0;
    int rc = procreg_etcd_revision_now(s, procreg_etcd_deadline(s->client),
                                       &rev, error);
    if (rc != 0)
        return rc;
    procreg_etcd_revision_seen(s, rev);
    if (s->watch_mode == WATCH_ALL)
        s->watch_rev = rev;
    return 0;
}

/* WATCH_ALL, in the watch thread before its first stream: the keys of
 * the prefix at the revision open saw (procreg_etcd_watch_begin()), so
 * the stream that follows from there reports every change after open.
 * Compacted meanwhile: at the current revision (changes made between
 * open and now are then not reported). */
static int mirror_load(etcd_state *s, GError **error)
{
    int64_t rev = __atomic_load_n(&s->watch_rev, __ATOMIC_ACQUIRE);
    GError *local = NULL;
    int rc = mirror_read(s, NULL, s->mirror, &rev, &local);
    if (rc != 0 && local != NULL && strstr(local->message, "compacted")) {
        g_clear_error(&local);
        g_hash_table_remove_all(s->mirror);
        __atomic_store_n(&s->mirror_bytes, 0, __ATOMIC_RELAXED);
        rev = 0;
        rc = mirror_read(s, NULL, s->mirror, &rev, &local);
    }
    if (local != NULL)
        g_propagate_error(error, local);
    if (rc == 0)
        __atomic_store_n(&s->watch_rev, rev, __ATOMIC_RELEASE);
    return rc;
}

/* ---- what the watch covers ---- */

/* The namespace of entry or member key @k (@n bytes), or NULL; g_free
 * it. */
static char *key_namespace(etcd_state *s, const void *k, size_t n)
{
    const char *p = (const char *)k + s->eprefix->len;
    size_t len = 0;
    while (len < n - s->eprefix->len && (guchar)p[len] > 1)
        len++;
    return len < n - s->eprefix->len ? g_strndup(p, len) : NULL;
}

/* Whether the watch reports a change of entry or member key @k at @rev:
 * WATCH_USED covers the namespaces in use, from the revision each was
 * read at. */
static bool covered(etcd_state *s, const void *k, size_t n, int64_t rev)
{
    if (s->watch_mode != WATCH_USED)
        return true;
    char *ns = key_namespace(s, k, n);
    pthread_mutex_lock(&s->lock);
    const gint64 *read_at = ns ? g_hash_table_lookup(s->watched, ns) : NULL;
    bool yes = read_at != NULL && *read_at != 0 && rev > *read_at;
    pthread_mutex_unlock(&s->lock);
    g_free(ns);
    return yes;
}

ETCD_HIDDEN void procreg_etcd_watch_use(etcd_state *s, const char *ns)
{
    if (s->watch_mode != WATCH_USED)
        return;
    pthread_mutex_lock(&s->lock);
    if (!g_hash_table_contains(s->watched, ns)) {
        g_hash_table_insert(s->watched, g_strdup(ns), g_new0(gint64, 1));
        s->watched_epoch++;
        pthread_cond_broadcast(&s->cond);
        if (s->stream != NULL)
            procreg_etcd_stream_interrupt(s->stream);
    }
    /* Until the stream that covers it is in place: the caller's read
     * comes after, and any change after that read is reported. */
    guint epoch = s->watched_epoch;
    gint64 until = g_get_monotonic_time() +
                   (gint64)MIN(s->timeout_ms, USE_WAIT_MAX_MS) * 1000;
    while (s->live_epoch < epoch && !s->stopping &&
           g_get_monotonic_time() < until)
        cond_wait_until(&s->cond, &s->lock, until);
    pthread_mutex_unlock(&s->lock);
}

/* WATCH_USED: read the namespaces added since, into the mirror.  Called
 * by the watch thread, which owns the mirror. */
static int read_added(etcd_state *s, GError **error)
{
    pthread_mutex_lock(&s->lock);
    GPtrArray *added = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, s->watched);
    while (g_hash_table_iter_next(&it, &k, &v))
        if (*(gint64 *)v == 0)
            g_ptr_array_add(added, g_strdup(k));
    pthread_mutex_unlock(&s->lock);
    int rc = 0;
    for (guint i = 0; rc == 0 && i < added->len; i++) {
        int64_t rev = 0;
        rc = mirror_read(s, added->pdata[i], s->mirror, &rev, error);
        if (rc != 0)
            break;
        pthread_mutex_lock(&s->lock);
        *(gint64 *)g_hash_table_lookup(s->watched, added->pdata[i]) = rev;
        pthread_mutex_unlock(&s->lock);
        /* The first namespace: the stream starts after its read; later
         * ones were read after the stream's revision. */
        if (__atomic_load_n(&s->watch_rev, __ATOMIC_ACQUIRE) == 0)
            __atomic_store_n(&s->watch_rev, rev, __ATOMIC_RELEASE);
    }
    g_ptr_array_unref(added);
    return rc;
}

/* The range the stream watches: the whole prefix, or from the first
 * namespace in use to the last. */
static void watch_range(etcd_state *s, GString **start, GString **end)
{
    if (s->watch_mode == WATCH_ALL) {
        *start = g_string_new_len(s->prefix->str, (gssize)s->prefix->len);
        g_string_append_c(*start, '/');
        *end = procreg_etcd_prefix_end((*start)->str, (*start)->len);
        return;
    }
    const char *first = NULL, *last = NULL;
    pthread_mutex_lock(&s->lock);
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, s->watched);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        if (first == NULL || strcmp(k, first) < 0)
            first = k;
        if (last == NULL || strcmp(k, last) > 0)
            last = k;
    }
    GString *unused;
    procreg_etcd_ns_range(s, first, start, &unused);
    g_string_free(unused, TRUE);
    procreg_etcd_ns_watch_range(s, last, &unused, end);
    g_string_free(unused, TRUE);
    pthread_mutex_unlock(&s->lock);
}

/* ---- events ---- */

/* Apply one watch event, numbered by @ix. */
static void apply_event(etcd_state *s, const etcd_watch_event *ev,
                        GArray *markers, etcd_change_index *ix)
{
    if (ev->type == ETCD_EVENT_BAD) {
        atomic_add(&s->corrupt_seen, 1);
        return;
    }
    etcd_event_meaning e;
    const etcd_kv *kv = &ev->kv;
    if (!procreg_etcd_event_read(s, ev, markers, ix, &e) ||
        !covered(s, kv->key, kv->key_len, kv->mod_rev))
        return;
    bool member = procreg_etcd_is_member_key(s, kv->key, kv->key_len);
    int64_t my_lease = procreg_etcd_current_lease(s);
    if (ev->type == ETCD_EVENT_PUT) {
        mirror_set(s, s->mirror, kv);
        if (member)
            procreg_etcd_locals_put(s, kv->key, kv->key_len, kv->value,
                                    kv->value_len, kv->mod_rev);
        if (!e.own) {
            /* Another writer touched a key we own: follow it. */
            pthread_mutex_lock(&s->lock);
            GBytes *kb = g_bytes_new(kv->key, kv->key_len);
            owned_entry *o = g_hash_table_lookup(s->owned, kb);
            /* On another lease, the key was taken after ours expired:
             * left for restore_owned() to report. */
            if (o != NULL && o->mod_rev < kv->mod_rev &&
                kv->lease == my_lease && my_lease != 0) {
                g_free(o->value);
                o->value = g_strndup((const char *)kv->value, kv->value_len);
                o->value_len = kv->value_len;
                o->mod_rev = kv->mod_rev;
            }
            g_bytes_unref(kb);
            pthread_mutex_unlock(&s->lock);
        }
    } else {
        /* Without prev_kv: what the mirror knew of the entry. */
        if (!ev->have_prev) {
            GBytes *kb = g_bytes_new(kv->key, kv->key_len);
            const mirror_entry *me = g_hash_table_lookup(s->mirror, kb);
            if (me != NULL) {
                e.lease = me->lease;
                e.revision = me->mod_rev;
            }
            g_bytes_unref(kb);
        }
        if (!e.marked && e.lease == my_lease && my_lease != 0) {
            /* An entry on our lease went without a marker: the lease
             * expired or was revoked (etcd 3.4.23 may revoke every lease
             * when a leader that hung resumes: etcd issue 15247).  The
             * keeper learns it now rather than at its next round. */
            procreg_etcd_session_kick(s->session);
        }
        mirror_remove(s, s->mirror, kv->key, kv->key_len);
        if (member)
            procreg_etcd_locals_remove(s, kv->key, kv->key_len);
        if (e.marked) {
            /* An explicit removal: no longer ours to re-register. */
            pthread_mutex_lock(&s->lock);
            procreg_etcd_owned_remove_locked(s, kv->key, kv->key_len,
                                             kv->mod_rev);
            pthread_mutex_unlock(&s->lock);
        }
    }
    if (!e.own || procreg_etcd_ordered(s))
        procreg_etcd_notify(s, e.own, e.kind, e.reason, kv->key, kv->key_len,
                            e.value, e.value_len, e.revision, e.position);
}

typedef struct {
    etcd_state *s;
    guint epoch; /* of what the stream covers */
    bool said;   /* watch_line() recorded why the stream ended */
    bool created;
    bool resync;
    bool progressed;
    etcd_change_index ix; /* the stream's changes */
} watch_ctx;

static void set_watch_error(etcd_state *s, const char *msg)
{
    pthread_mutex_lock(&s->lock);
    g_free(s->watch_error);
    s->watch_error = g_strdup(msg);
    pthread_mutex_unlock(&s->lock);
}

/* Record why the stream ends: "@prefix: @what". */
static void watch_said(watch_ctx *c, const char *prefix, const char *what)
{
    char *msg = g_strdup_printf("%s: %s", prefix, what);
    set_watch_error(c->s, msg);
    g_free(msg);
    c->said = true;
}

static bool watch_line(const char *line, size_t len, void *user)
{
    watch_ctx *c = user;
    etcd_state *s = c->s;
    etcd_watch_batch b;
    const char *why;
    atomic_add(&s->watch_bytes, len + 1);
    if (!procreg_etcd_watch_line_parse(line, len, &b, &why)) {
        watch_said(c, "watch: etcd sent a line that is not one JSON object",
                   why);
        return false;
    }
    /* An expired token ends the stream as an error or as a canceled
     * watch: the next one authenticates again. */
    if (b.message != NULL && strstr(b.message, "invalid auth token") != NULL)
        procreg_etcd_client_token_refused(s->client);
    if (b.error) {
        watch_said(c, "watch",
                   b.message ? b.message
                             : "etcd ended the stream with an error");
        procreg_etcd_watch_batch_clear(&b);
        return false;
    }
    if (b.created) {
        c->created = true;
        pthread_mutex_lock(&s->lock);
        g_atomic_int_set(&s->watch_connected, 1);
        s->watch_started = true;
        s->live_epoch = MAX(s->live_epoch, c->epoch);
        g_free(s->watch_error);
        s->watch_error = NULL;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
    }
    if (b.canceled) {
        if (b.compact_revision > 0)
            c->resync = true;
        else
            watch_said(c, "watch canceled",
                       b.message ? b.message : "no reason given");
        procreg_etcd_watch_batch_clear(&b);
        return false;
    }
    guint n = b.events->len;
    int64_t last = 0;
#ifdef PROCREG_TEST_SLOW_WATCH
    /* Test builds only (tests/etcd/meson.build): a watch that always
     * comes late, as on a loaded machine, so the tests force the
     * interleaving where a write here follows one made elsewhere before
     * the watch reported it. */
    if (n > 0)
        g_usleep(30 * 1000);
#endif
    /* Reason markers first: they share their removal's revision, and a
     * revision is never split across responses. */
    GArray *markers = procreg_etcd_markers(s, &b);
    for (guint i = 0; i < n; i++) {
        const etcd_watch_event *ev =
            &g_array_index(b.events, etcd_watch_event, i);
        if (ev->type == ETCD_EVENT_PUT || ev->type == ETCD_EVENT_DELETE)
            last = MAX(last, ev->kv.mod_rev);
    }
    for (guint i = 0; i < n; i++)
        apply_event(s, &g_array_index(b.events, etcd_watch_event, i), markers,
                    &c->ix);
    g_array_unref(markers);
    if (n == 0 && !c->created) {
        /* Progress notification: nothing below the header's revision is
         * left to come. */
        last = b.header_revision;
    }
    advance(s, last);
    if (n > 0)
        c->progressed = true;
    procreg_etcd_watch_batch_clear(&b);
    return true;
}

/* ---- resync ---- */

/* An entry read by a resync, its value kept for the report. */
typedef struct {
    int64_t mod_rev, create_rev;
    GBytes *value;
} fresh_entry;

static void fresh_free(gpointer p)
{
    fresh_entry *f = p;
    g_bytes_unref(f->value);
    g_free(f);
}

static int fresh_one(etcd_state *s, etcd_kv *kv, void *user, GError **error)
{
    if (!procreg_etcd_watched_key(s, kv->key, kv->key_len))
        return 0;
    fresh_entry *f = g_new(fresh_entry, 1);
    f->mod_rev = kv->mod_rev;
    f->create_rev = kv->create_rev;
    f->value = g_bytes_new(kv->value, kv->value_len);
    g_hash_table_replace(user, g_bytes_new(kv->key, kv->key_len), f);
    return 0;
}

/* Read what the watch covers, with values, into @fresh; *@rev: the
 * revision of the last read (WATCH_USED reads one namespace at a time). */
static int read_covered(etcd_state *s, GHashTable *fresh, int64_t *rev,
                        GError **error)
{
    GPtrArray *ns = g_ptr_array_new_with_free_func(g_free);
    if (s->watch_mode == WATCH_ALL) {
        g_ptr_array_add(ns, NULL);
    } else {
        pthread_mutex_lock(&s->lock);
        GHashTableIter it;
        gpointer k;
        g_hash_table_iter_init(&it, s->watched);
        while (g_hash_table_iter_next(&it, &k, NULL))
            g_ptr_array_add(ns, g_strdup(k));
        pthread_mutex_unlock(&s->lock);
    }
    int rc = 0;
    for (guint i = 0; rc == 0 && i < ns->len; i++) {
        GString *start, *end;
        procreg_etcd_ns_watch_range(s, ns->pdata[i], &start, &end);
        rc = procreg_etcd_range_all(s, start, end, false, false, 0,
                                    fresh_one, fresh, rev, error);
        g_string_free(start, TRUE);
        g_string_free(end, TRUE);
    }
    g_ptr_array_unref(ns);
    return rc;
}

/* After a compaction (or a response too long to read): read what the
 * watch covers again and report the difference from what it knew.  A
 * removal found so is reported without the entry's value, which the
 * mirror does not keep.  The changes found so take the revision read at,
 * indexed 0, 1, ... in the order reported, as their positions: the
 * history before it is gone, and a watcher that resumes from there goes
 * on from the state read. */
static int resync(etcd_state *s, GError **error)
{
    GHashTable *fresh = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                              (GDestroyNotify)g_bytes_unref,
                                              fresh_free);
    int64_t rev = 0;
    int rc = read_covered(s, fresh, &rev, error);
    if (rc != 0) {
        g_hash_table_unref(fresh);
        return rc;
    }
    atomic_add(&s->compactions, 1);
    etcd_change_index ix = {0};
    GHashTableIter it;
    gpointer k, val;
    /* Gone. */
    g_hash_table_iter_init(&it, s->mirror);
    while (g_hash_table_iter_next(&it, &k, &val)) {
        if (g_hash_table_contains(fresh, k))
            continue;
        mirror_entry *m = val;
        gsize klen;
        const void *kd = g_bytes_get_data(k, &klen);
        procreg_etcd_locals_remove(s, kd, klen);
        procreg_etcd_notify(s, false, PROCREG_EVENT_UNREGISTERED,
                            m->lease != 0 ? PROCREG_REASON_EXPIRED
                                          : PROCREG_REASON_EXPLICIT,
                            kd, klen, NULL, 0, m->mod_rev,
                            procreg_etcd_change_position(&ix, rev));
    }
    /* New or changed (this instance's changes only when ordered). */
    GHashTable *mirror = procreg_etcd_mirror_new();
    guint64 old_bytes = atomic_get(&s->mirror_bytes);
    g_hash_table_iter_init(&it, fresh);
    while (g_hash_table_iter_next(&it, &k, &val)) {
        fresh_entry *f = val;
        gsize klen, vlen;
        const void *kd = g_bytes_get_data(k, &klen);
        const void *vd = g_bytes_get_data(f->value, &vlen);
        etcd_kv kv = {.key = (guchar *)kd, .key_len = klen,
                      .mod_rev = f->mod_rev, .create_rev = f->create_rev};
        mirror_set(s, mirror, &kv);
        if (procreg_etcd_is_member_key(s, kd, klen))
            procreg_etcd_locals_put(s, kd, klen, vd, vlen, f->mod_rev);
        mirror_entry *was = g_hash_table_lookup(s->mirror, k);
        if (was != NULL && was->mod_rev == f->mod_rev)
            continue;
        char writer[ETCD_WRITER_LEN + 1];
        procreg_etcd_value_writer(vd, vlen, writer);
        bool own = strcmp(writer, s->writer) == 0;
        if (own && !procreg_etcd_ordered(s))
            continue;
        bool created = was == NULL || f->create_rev > was->mod_rev;
        procreg_etcd_notify(s, own,
                            created ? PROCREG_EVENT_REGISTERED
                                    : PROCREG_EVENT_UPDATED,
                            PROCREG_REASON_NONE, kd, klen, vd, vlen,
                            f->mod_rev,
                            procreg_etcd_change_position(&ix, rev));
    }
    g_hash_table_unref(fresh);
    g_hash_table_unref(s->mirror);
    s->mirror = mirror;
    /* mirror_set() added the new mirror's bytes on top of the old ones. */
    atomic_sub(&s->mirror_bytes, old_bytes);
    advance(s, rev);
    return 0;
}

/* ---- the thread ---- */

static bool wait_stopping(etcd_state *s, unsigned ms)
{
    pthread_mutex_lock(&s->lock);
    gint64 until = g_get_monotonic_time() + (gint64)ms * 1000;
    while (!s->stopping && g_get_monotonic_time() < until)
        cond_wait_until(&s->cond, &s->lock, until);
    bool stop = s->stopping;
    pthread_mutex_unlock(&s->lock);
    return stop;
}

/* WATCH_USED with nothing in use yet: wait for a namespace.  The epoch
 * of what is to be covered, or 0 when stopping. */
static guint wait_for_use(etcd_state *s)
{
    pthread_mutex_lock(&s->lock);
    while (!s->stopping && s->watch_mode == WATCH_USED &&
           g_hash_table_size(s->watched) == 0)
        pthread_cond_wait(&s->cond, &s->lock);
    guint epoch = s->stopping ? 0 : s->watched_epoch;
    pthread_mutex_unlock(&s->lock);
    return epoch;
}

ETCD_HIDDEN gpointer procreg_etcd_watcher_main(gpointer data)
{
    etcd_state *s = data;
    unsigned backoff = WATCH_BACKOFF_MIN_MS;
    bool loaded = s->watch_mode != WATCH_ALL;
    while (!procreg_etcd_stream_stopped(s->stream)) {
        /* Rearm first: a namespace added after this point interrupts the
         * stream about to start. */
        procreg_etcd_stream_rearm(s->stream);
        guint epoch = wait_for_use(s);
        if (epoch == 0)
            break;
        GError *err = NULL;
        if (!loaded)
            loaded = mirror_load(s, &err) == 0;
        if (err != NULL ||
            (s->watch_mode == WATCH_USED && read_added(s, &err) != 0)) {
            set_watch_error(s, err->message);
            g_clear_error(&err);
            if (wait_stopping(s, backoff))
                break;
            backoff = MIN(backoff * 2, WATCH_BACKOFF_MAX_MS);
            continue;
        }
        GString *start, *end;
        watch_range(s, &start, &end);
        gint64 from = __atomic_load_n(&s->watch_rev, __ATOMIC_ACQUIRE) + 1;
        GString *b = g_string_new("{\"create_request\":{");
        procreg_etcd_json_key(b, "key", start->str, start->len);
        g_string_append_c(b, ',');
        procreg_etcd_json_key(b, "range_end", end->str, end->len);
        g_string_append_printf(b,
                               ",\"start_revision\":\"%" G_GINT64_FORMAT
                               "\",\"prev_kv\":true,\"progress_notify\":true}}",
                               from);
        g_string_free(start, TRUE);
        g_string_free(end, TRUE);
        watch_ctx c = {.s = s, .epoch = epoch};
        int rc = procreg_etcd_stream_run(s->client, s->stream, "/v3/watch",
                                         b->str, 0, watch_line, &c, &err);
        g_string_free(b, TRUE);
        /* A response over max_reply_bytes cannot be read, and would come
         * again: read what the watch covers page by page instead, as
         * after a compaction, and watch on from there. */
        if (rc == ETCD_EREPLY_TOO_BIG) {
            atomic_add(&s->oversized_lines, 1);
            c.resync = true;
        }
        g_atomic_int_set(&s->watch_connected, 0);
        if (procreg_etcd_stream_stopped(s->stream)) {
            g_clear_error(&err);
            break;
        }
        pthread_mutex_lock(&s->lock);
        bool widened = s->watched_epoch != epoch && s->watch_mode == WATCH_USED;
        pthread_mutex_unlock(&s->lock);
        if (widened && err == NULL && !c.resync) {
            /* Interrupted for a namespace now in use: cover it at once. */
            backoff = WATCH_BACKOFF_MIN_MS;
            continue;
        }
        if (err != NULL && !c.said)
            set_watch_error(s, err->message);
        else if (err == NULL && !c.said && !c.resync && c.created)
            set_watch_error(s, "watch: etcd closed the stream");
        g_clear_error(&err);
        atomic_add(&s->watch_reconnects, 1);
        if (c.resync) {
            if (resync(s, &err) == 0) {
                backoff = WATCH_BACKOFF_MIN_MS;
                continue;
            }
            set_watch_error(s, err->message);
            g_clear_error(&err);
        }
        if (c.created || c.progressed)
            backoff = WATCH_BACKOFF_MIN_MS;
        if (wait_stopping(s, backoff))
            break;
        backoff = MIN(backoff * 2, WATCH_BACKOFF_MAX_MS);
    }
    return NULL;
}
