/*
 * etcd backend: what an event of a watch response tells, read the same
 * way by the live watch (etcd-watch.c) and by the history
 * (etcd-history.c), so that both report one change alike: its kind, its
 * reason (from its namespace's or group's reason marker, written in the
 * same revision; a removal without one is a lease expiry), whether this
 * instance made it, and its position (the event's revision and its index
 * among the changes of that revision: procreg_etcd_position()).
 */
#include "etcd-private.h"

#include <string.h>

ETCD_HIDDEN bool procreg_etcd_watched_key(etcd_state *s, const void *k,
                                          size_t n)
{
    return procreg_etcd_is_entry_key(s, k, n) ||
           procreg_etcd_is_member_key(s, k, n);
}

ETCD_HIDDEN GArray *procreg_etcd_markers(etcd_state *s,
                                         const etcd_watch_batch *b)
{
    GArray *markers = g_array_new(FALSE, TRUE, sizeof(etcd_marker));
    for (guint i = 0; i < b->events->len; i++) {
        const etcd_watch_event *ev =
            &g_array_index(b->events, etcd_watch_event, i);
        if (ev->type != ETCD_EVENT_PUT && ev->type != ETCD_EVENT_DELETE)
            continue;
        etcd_marker m = {.rev = ev->kv.mod_rev};
        uint64_t nonce;
        if (procreg_etcd_is_marker_key(s, ev->kv.key, ev->kv.key_len) &&
            procreg_etcd_marker_parse(ev->kv.value, ev->kv.value_len,
                                      m.writer, &m.reason, &nonce))
            g_array_append_val(markers, m);
    }
    return markers;
}

ETCD_HIDDEN void procreg_etcd_value_writer(const void *value, size_t len,
                                           char *out)
{
    etcd_value v;
    const char *why;
    out[0] = '\0';
    if (value != NULL && procreg_etcd_value_decode(value, len, &v, &why)) {
        g_strlcpy(out, v.writer, ETCD_WRITER_LEN + 1);
        procreg_etcd_value_clear(&v);
    }
}

ETCD_HIDDEN uint64_t procreg_etcd_change_position(etcd_change_index *ix,
                                                  int64_t rev)
{
    if (ix->rev != rev) {
        ix->rev = rev;
        ix->next = 0;
    }
    uint32_t index = ix->next;
    if (ix->next < ETCD_INDEX_LAST)
        ix->next++;
    return procreg_etcd_position(rev, index);
}

ETCD_HIDDEN bool procreg_etcd_event_read(etcd_state *s,
                                         const etcd_watch_event *ev,
                                         const GArray *markers,
                                         etcd_change_index *ix,
                                         etcd_event_meaning *out)
{
    if (ev->type != ETCD_EVENT_PUT && ev->type != ETCD_EVENT_DELETE)
        return false;
    const etcd_kv *kv = &ev->kv;
    if (!procreg_etcd_watched_key(s, kv->key, kv->key_len))
        return false;
    const etcd_marker *m = NULL;
    for (guint i = 0; i < markers->len; i++)
        if (g_array_index(markers, etcd_marker, i).rev == kv->mod_rev)
            m = &g_array_index(markers, etcd_marker, i);
    *out = (etcd_event_meaning){
        .marked = m != NULL,
        .position = procreg_etcd_change_position(ix, kv->mod_rev)};
    if (ev->type == ETCD_EVENT_PUT) {
        char writer[ETCD_WRITER_LEN + 1];
        procreg_etcd_value_writer(kv->value, kv->value_len, writer);
        out->kind = kv->create_rev == kv->mod_rev ? PROCREG_EVENT_REGISTERED
                                                  : PROCREG_EVENT_UPDATED;
        /* A forced update carries its marker. */
        out->reason = m != NULL ? (procreg_event_reason)m->reason
                                : PROCREG_REASON_NONE;
        out->own = strcmp(writer, s->writer) == 0;
        out->value = kv->value;
        out->value_len = kv->value_len;
        out->revision = kv->mod_rev;
        out->lease = kv->lease;
        return true;
    }
    /* What was removed: its value, lease and revision (the entry's, as
     * the core reports its own removals), from the event (prev_kv). */
    out->kind = PROCREG_EVENT_UNREGISTERED;
    out->reason = m != NULL ? (procreg_event_reason)m->reason
                            : PROCREG_REASON_EXPIRED;
    out->own = m != NULL && strcmp(m->writer, s->writer) == 0;
    out->value = ev->have_prev ? ev->prev.value : NULL;
    out->value_len = ev->have_prev ? ev->prev.value_len : 0;
    out->revision = ev->have_prev ? ev->prev.mod_rev : kv->mod_rev;
    out->lease = ev->have_prev ? ev->prev.lease : 0;
    return true;
}
