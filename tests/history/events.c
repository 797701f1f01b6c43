/*
 * The events each client's subscription delivered, checked against the
 * history and the linearization the search found:
 *   - sequence numbers increase;
 *   - per key, the events follow the model's state machine in arrival
 *     order: REGISTERED only from absent, UPDATED and UNREGISTERED of the
 *     revision present, revisions increasing (so per key they come in
 *     revision order, the order the linearization applied the writes);
 *   - each names an entry the linearization had (same owner, metadata and
 *     revision; REGISTERED for a register, UPDATED for an update), or one
 *     a pending write may have made; a removal has a cause of its reason
 *     (an unregister, a drop, the owner's death) invoked before it came;
 *   - a subscription that drained completely (it saw every client's last
 *     write) delivered every successful write invoked after it was made.
 */
#include "check.h"

#include <procreg/procreg.h>

#include <inttypes.h>

static bool same_entry(const hist_item *x, const hist_item *y)
{
    return x->owner == y->owner && hist_meta_equal(&x->meta, &y->meta);
}

/* What the events are matched against, indexed once: per key the
 * writes without a known outcome, and the earliest invocation of each
 * kind of removal (per key for unregisters, per owner for deaths). */
typedef struct {
    GPtrArray **unanswered; /* per key: register/update ops */
    int64_t *first_unregister; /* per key */
    int64_t first_drop;
    GHashTable *first_death;   /* owner + 1 -> int64 inv (boxed) */
} event_index;

static void index_init(event_index *x, const hist *h)
{
    x->unanswered = g_new0(GPtrArray *, h->keys->len);
    x->first_unregister = g_new(int64_t, h->keys->len);
    for (guint k = 0; k < h->keys->len; k++) {
        x->unanswered[k] = g_ptr_array_new();
        x->first_unregister[k] = INT64_MAX;
    }
    x->first_drop = INT64_MAX;
    x->first_death = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    for (guint i = 0; i < h->ops->len; i++) {
        const hist_op *op = &g_array_index(h->ops, hist_op, i);
        bool unknown = op->res == HIST_PENDING || hist_rc_unknown(op->rc);
        bool may = unknown || op->rc == 0;
        if ((op->kind == HIST_REGISTER || op->kind == HIST_UPDATE) && unknown)
            g_ptr_array_add(x->unanswered[op->key], (gpointer)op);
        else if (op->kind == HIST_UNREGISTER && may)
            x->first_unregister[op->key] =
                MIN(x->first_unregister[op->key], op->inv);
        else if (op->kind == HIST_DROP && may)
            x->first_drop = MIN(x->first_drop, op->inv);
        if (op->kind == HIST_DEATH) {
            gpointer tag = GINT_TO_POINTER(op->owner + 1);
            int64_t *t = g_hash_table_lookup(x->first_death, tag);
            if (t == NULL) {
                t = g_new(int64_t, 1);
                *t = op->inv;
                g_hash_table_insert(x->first_death, tag, t);
            }
            *t = MIN(*t, op->inv);
        }
    }
}

static void index_clear(event_index *x, const hist *h)
{
    for (guint k = 0; k < h->keys->len; k++)
        g_ptr_array_unref(x->unanswered[k]);
    g_free(x->unanswered);
    g_free(x->first_unregister);
    g_hash_table_unref(x->first_death);
}

/* A write without a known outcome that may have made @it. */
static bool pending_producer(const event_index *x, const hist_item *it)
{
    GPtrArray *list = x->unanswered[it->key];
    for (guint i = 0; i < list->len; i++)
        if (hist_meta_shares_token(&((const hist_op *)list->pdata[i])->meta,
                                   &it->meta))
            return true;
    return false;
}

/* Whether the history holds a cause for a removal of @ev's reason,
 * invoked before the event came. */
static bool removal_cause(const event_index *x, const hist_event *ev)
{
    const int64_t *death;
    switch (ev->reason) {
    case PROCREG_REASON_EXPLICIT:
    case PROCREG_REASON_FORCED:
        return x->first_unregister[ev->entry.key] < ev->time;
    case PROCREG_REASON_NAMESPACE_DROPPED:
        return x->first_drop < ev->time;
    case PROCREG_REASON_OWNER_EXITED:
    case PROCREG_REASON_EXPIRED:
    case PROCREG_REASON_REPLACED:
        death = g_hash_table_lookup(x->first_death,
                                    GINT_TO_POINTER(ev->entry.owner + 1));
        return death != NULL && *death < ev->time;
    default:
        return false;
    }
}

static void check_one(hist_sink *s, const hist *h, const event_index *x,
                      hist_revmap *revs, const bool *linearized,
                      const hist_event *ev)
{
    if (!linearized[ev->entry.key])
        return; /* that key failed already: its revisions are unknown */
    const hist_rev *r = hist_revmap_get(revs, ev->entry.key, ev->entry.rev);
    if (r != NULL) {
        if (!same_entry(&r->item, &ev->entry))
            hist_sink_event(s, h, ev, NULL,
                      "an event names an entry other than the one the "
                      "linearization had at that revision");
        else if (ev->kind != PROCREG_EVENT_UNREGISTERED && r->made_by != 0 &&
                 r->made_by != ev->kind)
            hist_sink_event(s, h, ev, NULL,
                      "an event's kind differs from the write that made "
                      "that revision");
    } else if (!pending_producer(x, &ev->entry)) {
        hist_sink_event(s, h, ev, NULL,
                  "an event names a revision that no write produced");
    }
    if (ev->kind == PROCREG_EVENT_UNREGISTERED && !removal_cause(x, ev))
        hist_sink_event(s, h, ev, NULL,
                  "a removal event has no cause of its reason in the "
                  "history");
}

static void out_of_order(hist_sink *s, const hist *h, const hist_event *ev,
                         const hist_event *prev, const char *what)
{
    g_autofree char *msg = g_strconcat("events of a key out of order: ",
                                       what, NULL);
    hist_sink_event(s, h, ev, prev, msg);
}

/* The state machine of one key in one subscription. */
static void follow(hist_sink *s, const hist *h, const hist_event *ev,
                   const hist_event **last)
{
    const hist_event *prev = last[ev->entry.key];
    last[ev->entry.key] = ev;
    if (prev == NULL)
        return;
    bool present = prev->kind != PROCREG_EVENT_UNREGISTERED;
    switch (ev->kind) {
    case PROCREG_EVENT_REGISTERED:
        if (present)
            out_of_order(s, h, ev, prev, "REGISTERED while it was present");
        else if (ev->entry.rev <= prev->entry.rev)
            out_of_order(s, h, ev, prev, "revisions go back");
        break;
    case PROCREG_EVENT_UPDATED:
        if (!present)
            out_of_order(s, h, ev, prev, "UPDATED while it was absent");
        else if (ev->entry.rev <= prev->entry.rev)
            out_of_order(s, h, ev, prev, "revisions go back");
        else if (ev->entry.owner != prev->entry.owner)
            out_of_order(s, h, ev, prev, "UPDATED changed the owner");
        break;
    case PROCREG_EVENT_UNREGISTERED:
        if (!present)
            out_of_order(s, h, ev, prev, "UNREGISTERED while it was absent");
        else if (ev->entry.rev != prev->entry.rev)
            out_of_order(s, h, ev, prev,
                         "UNREGISTERED of a revision other than the one "
                         "present");
        break;
    default:
        hist_sink_event(s, h, ev, prev, "an event of unknown kind");
    }
}

/* Every successful write invoked after @sub was made reached it. */
static void check_complete(hist_sink *s, const hist *h, const hist_sub *sub,
                           GHashTable *delivered)
{
    for (guint i = 0; i < h->ops->len; i++) {
        const hist_op *op = &g_array_index(h->ops, hist_op, i);
        if (op->res == HIST_PENDING || op->rc != 0 || op->inv <= sub->res ||
            op->res > sub->drained)
            continue;
        uint64_t rev;
        if (op->kind == HIST_REGISTER || op->kind == HIST_UPDATE)
            rev = op->got.rev;
        else if (op->kind == HIST_UNREGISTER && op->if_rev != 0)
            rev = op->if_rev;
        else
            continue;
        int kind = op->kind == HIST_REGISTER   ? PROCREG_EVENT_REGISTERED
                   : op->kind == HIST_UPDATE ? PROCREG_EVENT_UPDATED
                                             : PROCREG_EVENT_UNREGISTERED;
        guint64 tag = ((guint64)op->key << 50) ^ ((guint64)kind << 48) ^ rev;
        if (g_hash_table_contains(delivered, &tag))
            continue;
        g_autofree char *what = g_strdup_printf(
            "the subscription of client %d (made before it, drained after) "
            "never delivered the event of", sub->client);
        hist_sink_op(s, h, op, NULL, what);
    }
}

bool hist_check_events(const hist *h, hist_revmap *revs,
                       const bool *linearized, GString *report)
{
    hist_sink s = {report, 0};
    event_index x;
    index_init(&x, h);
    for (guint si = 0; si < h->subs->len; si++) {
        const hist_sub *sub = &g_array_index(h->subs, hist_sub, si);
        g_autofree const hist_event **last =
            g_new0(const hist_event *, h->keys->len);
        g_autoptr(GHashTable) delivered =
            g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
        const hist_event *prev = NULL;
        for (guint i = 0; i < h->events->len; i++) {
            const hist_event *ev = &g_array_index(h->events, hist_event, i);
            if (ev->client != sub->client)
                continue;
            if (prev != NULL && ev->seq <= prev->seq)
                hist_sink_event(&s, h, ev, prev,
                          "event sequence numbers do not increase");
            prev = ev;
            check_one(&s, h, &x, revs, linearized, ev);
            follow(&s, h, ev, last);
            guint64 *tag = g_new(guint64, 1);
            *tag = ((guint64)ev->entry.key << 50) ^ ((guint64)ev->kind << 48) ^
                   ev->entry.rev;
            g_hash_table_add(delivered, tag);
        }
        if (sub->complete)
            check_complete(&s, h, sub, delivered);
    }
    index_clear(&x, h);
    return hist_sink_end(&s, "event violations");
}
