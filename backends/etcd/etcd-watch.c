/*
 * etcd backend: the watch thread.  One streaming watch on the prefix,
 * resumed from the last revision after a reconnect, with a resync on
 * compaction.  It reports changes made by other instances through
 * procreg_backend_host_notify(); changes this instance made are the
 * core's to report, so they are skipped (the value names its writer).  A
 * removal's reason comes from the marker written in the same revision;
 * a removal without one is a lease expiry.
 *
 * The mirror (what the watch knows of every key, for the resync) belongs
 * to the watch thread; init fills it before the thread starts.
 */
#include "etcd-private.h"

#include <string.h>

/* Watch reconnect backoff. */
#define WATCH_BACKOFF_MIN_MS 50
#define WATCH_BACKOFF_MAX_MS 2000

typedef struct {
    int64_t rev;
    char writer[ETCD_WRITER_LEN + 1];
    int reason;
} marker;


/* ------------------------------------------------------------------------ */
/* Watch                                                                    */

static void mirror_free(gpointer p)
{
    mirror_entry *m = p;
    if (m->value != NULL)
        g_bytes_unref(m->value);
    g_free(m);
}

static void mirror_set(etcd_state *s, GHashTable *mirror, const etcd_kv *kv)
{
    mirror_entry *m = g_new0(mirror_entry, 1);
    m->mod_rev = kv->mod_rev;
    m->create_rev = kv->create_rev;
    m->lease = kv->lease;
    m->value = g_bytes_new(kv->value, kv->value_len);
    GBytes *k = g_bytes_new(kv->key, kv->key_len);
    mirror_entry *old = g_hash_table_lookup(mirror, k);
    if (old != NULL)
        atomic_sub(&s->mirror_bytes,
                   g_bytes_get_size(old->value) + kv->key_len + sizeof *old);
    atomic_add(&s->mirror_bytes, kv->value_len + kv->key_len + sizeof *m);
    g_hash_table_replace(mirror, k, m);
}

static void mirror_remove(etcd_state *s, GHashTable *mirror, const void *key,
                          size_t n)
{
    GBytes *k = g_bytes_new(key, n);
    mirror_entry *old = g_hash_table_lookup(mirror, k);
    if (old != NULL) {
        atomic_sub(&s->mirror_bytes,
                   g_bytes_get_size(old->value) + n + sizeof *old);
        g_hash_table_remove(mirror, k);
    }
    g_bytes_unref(k);
}

ETCD_HIDDEN GHashTable *procreg_etcd_mirror_new(void)
{
    return g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                 (GDestroyNotify)g_bytes_unref, mirror_free);
}



/* The writer of a value, or "" when unreadable. */
static void value_writer(const void *value, size_t len, char *out)
{
    etcd_value v;
    const char *why;
    out[0] = '\0';
    if (value != NULL && procreg_etcd_value_decode(value, len, &v, &why)) {
        g_strlcpy(out, v.writer, ETCD_WRITER_LEN + 1);
        procreg_etcd_value_clear(&v);
    }
}

/* Apply one watch event from another writer (or an expiry). */
static void apply_event(etcd_state *s, const etcd_watch_event *ev,
                        GArray *markers)
{
    if (ev->type == ETCD_EVENT_NOT_OBJECT)
        return;
    if (ev->type == ETCD_EVENT_BAD) {
        atomic_add(&s->corrupt_seen, 1);
        return;
    }
    const etcd_kv *kv = &ev->kv;
    if (!procreg_etcd_is_entry_key(s, kv->key, kv->key_len))
        return;
    int64_t my_lease = procreg_etcd_current_lease(s);
    /* The reason marker written in the same revision, if any. */
    const marker *m = NULL;
    for (guint i = 0; i < markers->len; i++)
        if (g_array_index(markers, marker, i).rev == kv->mod_rev)
            m = &g_array_index(markers, marker, i);
    if (ev->type == ETCD_EVENT_PUT) {
        char writer[ETCD_WRITER_LEN + 1];
        value_writer(kv->value, kv->value_len, writer);
        bool created = kv->create_rev == kv->mod_rev;
        mirror_set(s, s->mirror, kv);
        if (strcmp(writer, s->writer) != 0) {
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
            /* A forced update carries its marker. */
            procreg_etcd_notify(
                s, created ? PROCREG_EVENT_REGISTERED : PROCREG_EVENT_UPDATED,
                m != NULL ? (procreg_event_reason)m->reason
                          : PROCREG_REASON_NONE,
                kv->key, kv->key_len, kv->value, kv->value_len, kv->mod_rev);
        }
    } else {
        /* What was removed: its value, lease and revision (the entry's,
         * as the core reports its own removals), from the event, else
         * from the mirror. */
        const void *old = ev->have_prev ? ev->prev.value : NULL;
        size_t old_len = ev->have_prev ? ev->prev.value_len : 0;
        int64_t old_lease = ev->have_prev ? ev->prev.lease : 0;
        int64_t old_rev = ev->have_prev ? ev->prev.mod_rev : kv->mod_rev;
        GBytes *mirrored = NULL;
        if (old == NULL) {
            GBytes *kb = g_bytes_new(kv->key, kv->key_len);
            mirror_entry *me = g_hash_table_lookup(s->mirror, kb);
            if (me != NULL) {
                mirrored = g_bytes_ref(me->value);
                old = g_bytes_get_data(mirrored, &old_len);
                old_lease = me->lease;
                old_rev = me->mod_rev;
            }
            g_bytes_unref(kb);
        }
        if (m == NULL && old_lease == my_lease && my_lease != 0) {
            /* An entry on our lease went without a marker: the lease
             * expired or was revoked (etcd 3.4.23 may revoke every lease
             * when a leader that hung resumes: etcd issue 15247).  The
             * keeper learns it now rather than at its next round. */
            pthread_mutex_lock(&s->lock);
            s->kick = true;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->lock);
        }
        mirror_remove(s, s->mirror, kv->key, kv->key_len);
        if (m != NULL) {
            /* An explicit removal: no longer ours to re-register. */
            pthread_mutex_lock(&s->lock);
            procreg_etcd_owned_remove_locked(s, kv->key, kv->key_len,
                                             kv->mod_rev);
            pthread_mutex_unlock(&s->lock);
        }
        if (m == NULL || strcmp(m->writer, s->writer) != 0)
            procreg_etcd_notify(s, PROCREG_EVENT_UNREGISTERED,
                                m ? (procreg_event_reason)m->reason
                                  : PROCREG_REASON_EXPIRED,
                                kv->key, kv->key_len, old, old_len,
                                old_rev);
        if (mirrored != NULL)
            g_bytes_unref(mirrored);
    }
}

typedef struct {
    etcd_state *s;
    bool said; /* watch_line() recorded why the stream ended */
    bool created;
    bool resync;
    bool progressed;
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
    /* Reason markers first: they share their removal's revision, and a
     * revision is never split across responses. */
    GArray *markers = g_array_new(FALSE, TRUE, sizeof(marker));
    for (guint i = 0; i < n; i++) {
        const etcd_watch_event *ev =
            &g_array_index(b.events, etcd_watch_event, i);
        if (ev->type != ETCD_EVENT_PUT && ev->type != ETCD_EVENT_DELETE)
            continue;
        marker m = {.rev = ev->kv.mod_rev};
        uint64_t nonce;
        if (procreg_etcd_is_marker_key(s, ev->kv.key, ev->kv.key_len) &&
            procreg_etcd_marker_parse(ev->kv.value, ev->kv.value_len,
                                      m.writer, &m.reason, &nonce))
            g_array_append_val(markers, m);
        last = MAX(last, ev->kv.mod_rev);
    }
    for (guint i = 0; i < n; i++)
        apply_event(s, &g_array_index(b.events, etcd_watch_event, i), markers);
    g_array_unref(markers);
    if (n == 0 && !c->created) {
        /* Progress notification: nothing below the header's revision is
         * left to come. */
        last = b.header_revision;
    }
    gint64 cur = __atomic_load_n(&s->watch_rev, __ATOMIC_ACQUIRE);
    if (last > cur)
        __atomic_store_n(&s->watch_rev, last, __ATOMIC_RELEASE);
    if (n > 0)
        c->progressed = true;
    procreg_etcd_watch_batch_clear(&b);
    return true;
}

typedef struct {
    GHashTable *fresh;
} snap_ctx;

static int snap_one(etcd_state *s, etcd_kv *kv, void *user, GError **error)
{
    snap_ctx *c = user;
    if (procreg_etcd_is_entry_key(s, kv->key, kv->key_len))
        mirror_set(s, c->fresh, kv);
    return 0;
}

/* Read every entry into a fresh mirror; *@rev: the snapshot revision. */
ETCD_HIDDEN int procreg_etcd_snapshot(etcd_state *s, GHashTable **out,
                                      int64_t *rev, GError **error)
{
    GString *start = g_string_new_len(s->eprefix->str, (gssize)s->eprefix->len);
    GString *end = procreg_etcd_prefix_end(start->str, start->len);
    snap_ctx c = {.fresh = procreg_etcd_mirror_new()};
    guint64 before = atomic_get(&s->mirror_bytes);
    int rc = procreg_etcd_range_all(s, start, end, false, false, 0, snap_one,
                                    &c, rev, error);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    if (rc != 0) {
        g_hash_table_unref(c.fresh);
        __atomic_store_n(&s->mirror_bytes, before, __ATOMIC_RELAXED);
        return rc;
    }
    *out = c.fresh;
    return 0;
}

/* After a compaction: read everything again and report the difference
 * from what the watch knew. */
static int resync(etcd_state *s, GError **error)
{
    GHashTable *fresh = NULL;
    int64_t rev = 0;
    guint64 old_bytes = atomic_get(&s->mirror_bytes);
    int rc = procreg_etcd_snapshot(s, &fresh, &rev, error);
    if (rc != 0)
        return rc;
    atomic_add(&s->compactions, 1);
    GHashTableIter it;
    gpointer k, val;
    /* Gone. */
    g_hash_table_iter_init(&it, s->mirror);
    while (g_hash_table_iter_next(&it, &k, &val)) {
        if (g_hash_table_contains(fresh, k))
            continue;
        mirror_entry *m = val;
        gsize klen, vlen;
        const void *kd = g_bytes_get_data(k, &klen);
        const void *vd = g_bytes_get_data(m->value, &vlen);
        procreg_etcd_notify(s, PROCREG_EVENT_UNREGISTERED,
                            m->lease != 0 ? PROCREG_REASON_EXPIRED
                                          : PROCREG_REASON_EXPLICIT,
                            kd, klen, vd, vlen, m->mod_rev);
    }
    /* New or changed, unless this instance wrote them. */
    g_hash_table_iter_init(&it, fresh);
    while (g_hash_table_iter_next(&it, &k, &val)) {
        mirror_entry *m = val;
        mirror_entry *was = g_hash_table_lookup(s->mirror, k);
        if (was != NULL && was->mod_rev == m->mod_rev)
            continue;
        gsize klen, vlen;
        const void *kd = g_bytes_get_data(k, &klen);
        const void *vd = g_bytes_get_data(m->value, &vlen);
        char writer[ETCD_WRITER_LEN + 1];
        value_writer(vd, vlen, writer);
        if (strcmp(writer, s->writer) == 0)
            continue;
        bool created = was == NULL || m->create_rev > was->mod_rev;
        procreg_etcd_notify(s,
                            created ? PROCREG_EVENT_REGISTERED
                                    : PROCREG_EVENT_UPDATED,
                            PROCREG_REASON_NONE, kd, klen, vd, vlen,
                            m->mod_rev);
    }
    g_hash_table_unref(s->mirror);
    s->mirror = fresh;
    /* snapshot() added the fresh mirror's bytes on top of the old ones. */
    atomic_sub(&s->mirror_bytes, old_bytes);
    __atomic_store_n(&s->watch_rev, rev, __ATOMIC_RELEASE);
    return 0;
}

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

ETCD_HIDDEN gpointer procreg_etcd_watcher_main(gpointer data)
{
    etcd_state *s = data;
    GString *start = g_string_new_len(s->prefix->str, (gssize)s->prefix->len);
    g_string_append_c(start, '/');
    GString *end = procreg_etcd_prefix_end(start->str, start->len);
    unsigned backoff = WATCH_BACKOFF_MIN_MS;
    while (!procreg_etcd_stream_stopped(s->stream)) {
        gint64 from = __atomic_load_n(&s->watch_rev, __ATOMIC_ACQUIRE) + 1;
        GString *b = g_string_new("{\"create_request\":{");
        procreg_etcd_json_key(b, "key", start->str, start->len);
        g_string_append_c(b, ',');
        procreg_etcd_json_key(b, "range_end", end->str, end->len);
        g_string_append_printf(b,
                               ",\"start_revision\":\"%" G_GINT64_FORMAT
                               "\",\"prev_kv\":true,\"progress_notify\":true}}",
                               from);
        watch_ctx c = {.s = s};
        GError *err = NULL;
        int rc = procreg_etcd_stream_run(s->client, s->stream, "/v3/watch",
                                         b->str, watch_line, &c, &err);
        /* A response over max_reply_bytes cannot be read, and would come
         * again: read the prefix page by page instead, as after a
         * compaction, and watch on from there. */
        if (rc == ETCD_EREPLY_TOO_BIG) {
            atomic_add(&s->oversized_lines, 1);
            c.resync = true;
        }
        g_string_free(b, TRUE);
        g_atomic_int_set(&s->watch_connected, 0);
        if (procreg_etcd_stream_stopped(s->stream)) {
            g_clear_error(&err);
            break;
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
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    return NULL;
}
