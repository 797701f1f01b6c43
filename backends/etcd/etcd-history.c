/*
 * etcd backend: the history slots (backend.h, version 4), from which the
 * core resumes a watcher (procreg_subscribe_from()).
 *
 * A change's position is its etcd revision (a put's mod_revision, a
 * removal's own revision, not the removed entry's) and its index among
 * the changes of that revision (procreg_etcd_position()): etcd sends the
 * events of one revision in one response, in the order it applied them
 * (its sub-revisions), live and replayed alike.  The watch reports each change
 * with it (procreg_etcd_notify()), and history_read() gives the same
 * change the same position, kind, reason and own flag: both read events
 * with procreg_etcd_event_read() and procreg_etcd_change_decode().  etcd
 * numbers the whole store, so positions increase in commit order with
 * gaps.
 *
 * history_read(after) replays the prefix with a watch of its own
 * (prev_kv, for the removed entries) from the last revision whose
 * changes all lie at or below @after: @after's own revision when @after
 * stands for all of it (history_head()), else the one before, whose
 * replay numbers the changes of @after's revision from its first.  etcd
 * cancels the watch, naming its compaction revision, when revisions at or
 * below that start were compacted, so a watcher learns exactly when
 * changes after @after may be lost (a removal at the compaction revision
 * itself is not kept, and a revision that lost one would number the rest
 * anew).
 * The replay ends at revision S of a put of the sentinel key P/history,
 * made before the watch: etcd says nothing when a replayed range holds no
 * event (and etcd 3.4's progress requests are answered out of order with
 * a replay, etcd issue 15220), whereas the sentinel's put is an event of
 * the watched range at S, after every change committed before the call.
 * It lies outside P/e/, so no reader of entries sees it, and the live
 * watch ignores it like any key that is not an entry's or member's.  When
 * nothing at all was committed after @after (the store's revision is
 * @after) the read ends without a write.
 */
#include "etcd-private.h"

#include <string.h>

/* Send @body (freed) to @path; *@rev: the revision of the reply's
 * header (@what names the request in the error of a reply without one). */
static int call_for_revision(etcd_state *s, const char *path, GString *body,
                             gint64 deadline, const char *what, int64_t *rev,
                             GError **error)
{
    JsonNode *reply = NULL;
    int rc = procreg_etcd_call(s->client, path, body->str, 0, deadline,
                               &reply, error);
    g_string_free(body, TRUE);
    if (rc == ETCD_ELEASE_GONE)
        rc = PROCREG_EBACKEND;
    if (rc != 0)
        return rc;
    *rev = procreg_etcd_header_revision(json_node_get_object(reply));
    json_node_unref(reply);
    if (*rev <= 0)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "etcd sent a %s reply without a revision",
                                 what);
    return 0;
}

ETCD_HIDDEN int procreg_etcd_revision_now(etcd_state *s, gint64 deadline,
                                          int64_t *rev, GError **error)
{
    /* One key's range (prefix/e/, which no entry is, inside what a role
     * on the prefix grants): cheap, and its header names the revision. */
    GString *b = g_string_new("{");
    procreg_etcd_json_key(b, "key", s->eprefix->str, s->eprefix->len);
    g_string_append(b, ",\"keys_only\":true}");
    return call_for_revision(s, "/v3/kv/range", b, deadline, "range", rev,
                             error);
}

ETCD_HIDDEN int procreg_etcd_history_head(void *state, uint64_t *out,
                                          GError **error)
{
    etcd_state *s = state;
    int64_t rev = 0;
    int rc = procreg_etcd_revision_now(s, procreg_etcd_deadline(s->client),
                                       &rev, error);
    if (rc == 0)
        *out = procreg_etcd_position(rev, ETCD_INDEX_ALL);
    return rc;
}

/* Put the sentinel key; *@rev: the put's revision.  A repetition of the
 * put (an attempt that got no answer) only moves it later. */
static int put_sentinel(etcd_state *s, gint64 deadline, int64_t *rev,
                        GError **error)
{
    GString *k = g_string_new_len(s->prefix->str, (gssize)s->prefix->len);
    g_string_append(k, "/history");
    GString *b = g_string_new("{");
    procreg_etcd_json_key(b, "key", k->str, k->len);
    g_string_append_c(b, ',');
    procreg_etcd_json_key(b, "value", s->writer, strlen(s->writer));
    g_string_append_c(b, '}');
    g_string_free(k, TRUE);
    return call_for_revision(s, "/v3/kv/put", b, deadline, "put", rev,
                             error);
}

/* One replay: what it collects and why it ended. */
typedef struct {
    etcd_state *s;
    const char *ns;
    uint64_t after;
    int64_t start; /* the revision the replay starts at */
    int64_t until; /* the sentinel's revision: the replay's end */
    etcd_change_index ix;
    GArray *out;
    size_t bytes; /* of the lines read: at most max_reply in all */
    bool done;
    int rc;
    GError *error;
} replay;

/* The changes of one response after @r->after, up to revision
 * @r->until. */
static void replay_events(replay *r, const etcd_watch_batch *b)
{
    GArray *markers = procreg_etcd_markers(r->s, b);
    for (guint i = 0; i < b->events->len; i++) {
        const etcd_watch_event *ev =
            &g_array_index(b->events, etcd_watch_event, i);
        if (ev->type == ETCD_EVENT_BAD)
            atomic_add(&r->s->corrupt_seen, 1);
        etcd_event_meaning e;
        if (!procreg_etcd_event_read(r->s, ev, markers, &r->ix, &e))
            continue;
        if (e.position <= r->after ||
            procreg_etcd_position_revision(e.position) > r->until)
            continue;
        procreg_change c = {.kind = e.kind, .reason = e.reason,
                            .own = e.own, .position = e.position};
        if (!procreg_etcd_change_decode(r->s, ev->kv.key, ev->kv.key_len,
                                        e.value, e.value_len, e.revision,
                                        &c))
            continue;
        if (r->ns != NULL && strcmp(c.entry.ns, r->ns) != 0)
            procreg_entry_clear(&c.entry);
        else
            g_array_append_val(r->out, c);
    }
    /* A revision is never split across responses: one that reached the
     * sentinel holds every change up to it. */
    for (guint i = 0; i < b->events->len; i++) {
        const etcd_watch_event *ev =
            &g_array_index(b->events, etcd_watch_event, i);
        if ((ev->type == ETCD_EVENT_PUT || ev->type == ETCD_EVENT_DELETE) &&
            ev->kv.mod_rev >= r->until)
            r->done = true;
    }
    g_array_unref(markers);
}

static bool replay_line(const char *line, size_t len, void *user)
{
    replay *r = user;
    etcd_state *s = r->s;
    r->bytes += len + 1;
    if (r->bytes > s->max_reply) {
        r->rc = procreg_set_error(
            &r->error, PROCREG_EFULL,
            "etcd: the changes after position %" G_GUINT64_FORMAT
            " take more than max_reply_bytes (%zu): list again and "
            "subscribe from the current position, or raise max_reply_bytes",
            (guint64)r->after, s->max_reply);
        return false;
    }
    etcd_watch_batch b;
    const char *why;
    if (!procreg_etcd_watch_line_parse(line, len, &b, &why)) {
        r->rc = procreg_set_error(&r->error, PROCREG_EBACKEND,
                                  "etcd sent a history line that is not one "
                                  "JSON object: %s",
                                  why);
        return false;
    }
    if (b.message != NULL && strstr(b.message, "invalid auth token") != NULL)
        procreg_etcd_client_token_refused(s->client);
    if (b.canceled && b.compact_revision > 0)
        r->rc = procreg_set_error(
            &r->error, PROCREG_ECOMPACTED,
            "etcd compacted its history at revision %" G_GINT64_FORMAT
            ": the changes after position %" G_GUINT64_FORMAT
            " (revision %" G_GINT64_FORMAT ") are no longer all kept "
            "(those after revision %" G_GINT64_FORMAT " are): list again "
            "and subscribe from the current position",
            (gint64)b.compact_revision, (guint64)r->after,
            (gint64)procreg_etcd_position_revision(r->after),
            (gint64)b.compact_revision);
    else if (b.error || b.canceled)
        r->rc = procreg_set_error(&r->error, PROCREG_EBACKEND,
                                  "etcd ended the history's watch: %s",
                                  b.message ? b.message : "no reason given");
    else
        replay_events(r, &b);
    procreg_etcd_watch_batch_clear(&b);
    return r->rc == 0 && !r->done;
}

/* Replay the prefix's changes from revision @r->start to @r->until. */
static int replay_run(replay *r, gint64 deadline, GError **error)
{
    etcd_state *s = r->s;
    GString *start = g_string_new_len(s->prefix->str, (gssize)s->prefix->len);
    g_string_append_c(start, '/');
    GString *end = procreg_etcd_prefix_end(start->str, start->len);
    GString *b = g_string_new("{\"create_request\":{");
    procreg_etcd_json_key(b, "key", start->str, start->len);
    g_string_append_c(b, ',');
    procreg_etcd_json_key(b, "range_end", end->str, end->len);
    /* Revision 1 at least: 0 would mean "now". */
    g_string_append_printf(b,
                           ",\"start_revision\":\"%" G_GINT64_FORMAT
                           "\",\"prev_kv\":true}}",
                           (gint64)MAX(r->start, 1));
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    etcd_stream *st = procreg_etcd_stream_new(s->silence_ms);
    int rc = procreg_etcd_stream_run(s->client, st, "/v3/watch", b->str,
                                     deadline, replay_line, r, error);
    procreg_etcd_stream_free(st);
    g_string_free(b, TRUE);
    if (rc != 0)
        return rc;
    if (r->rc != 0) {
        g_propagate_error(error, r->error);
        r->error = NULL;
        return r->rc;
    }
    if (!r->done)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "etcd ended the history's watch before "
                                 "revision %" G_GINT64_FORMAT,
                                 (gint64)r->until);
    return 0;
}

ETCD_HIDDEN int procreg_etcd_history_read(void *state, const char *ns,
                                          uint64_t after, GArray *out,
                                          uint64_t *head, GError **error)
{
    etcd_state *s = state;
    gint64 deadline = procreg_etcd_deadline(s->client);
    int64_t now = 0;
    int rc = procreg_etcd_revision_now(s, deadline, &now, error);
    if (rc != 0)
        return rc;
    int64_t after_rev = procreg_etcd_position_revision(after);
    if (after_rev > now)
        return procreg_set_error(
            error, PROCREG_ECOMPACTED,
            "position %" G_GUINT64_FORMAT " (revision %" G_GINT64_FORMAT
            ") is ahead of the store (etcd is at revision %" G_GINT64_FORMAT
            "): another cluster, or one restored from a backup; list again "
            "and subscribe from the current position",
            (guint64)after, (gint64)after_rev, (gint64)now);
    if (after == procreg_etcd_position(now, ETCD_INDEX_ALL)) {
        *head = after;
        return 0;
    }
    /* From the last revision whose changes all lie at or below @after. */
    bool whole = after == procreg_etcd_position(after_rev, ETCD_INDEX_ALL);
    replay r = {.s = s, .ns = ns, .after = after,
                .start = whole ? after_rev : after_rev - 1, .out = out};
    rc = put_sentinel(s, deadline, &r.until, error);
    if (rc != 0)
        return rc;
    guint had = out->len;
    rc = replay_run(&r, deadline, error);
    g_clear_error(&r.error);
    if (rc != 0) {
        g_array_set_size(out, had);
        return rc;
    }
    *head = procreg_etcd_position(r.until, ETCD_INDEX_ALL);
    return 0;
}
