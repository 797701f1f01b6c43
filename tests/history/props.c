/*
 * Properties checked without a search.
 *
 * Static ones: after an owner's death was confirmed (kill, then waitpid
 * returned), no register may answer EEXISTS naming it (issue 13 point 2)
 * nor register it; ENOTALIVE only for an owner that was killed; a find
 * returns only matching entries; a list or find names each key once.
 *
 * Per client (its operations run one after another): monotonic reads and
 * read-your-writes, per key.  Once a client has seen (or written)
 * revision r of a key, it never sees a lower one, a write of its own
 * gets a higher one, and after it removed the entry it never sees that
 * entry again; it sees the key absent only when some removal could have
 * come after what it saw; whichever read (lookup, list, find) showed
 * what.  Linearizability implies all of this; the optimized decorator
 * promises it (doc/optimized.md) for changes made through it, without
 * being linearizable.
 */
#include "check.h"

#include <procreg/procreg.h>

bool hist_check_static(const hist *h, const hist_check_opts *opts,
                       GString *report)
{
    (void)opts;
    hist_sink s = {report, 0};
    const hist_op *ops = (const hist_op *)h->ops->data;
    g_autoptr(GPtrArray) deaths = g_ptr_array_new();
    for (guint i = 0; i < h->ops->len; i++)
        if (ops[i].kind == HIST_DEATH)
            g_ptr_array_add(deaths, (gpointer)&ops[i]);
    for (guint i = 0; i < h->ops->len; i++) {
        const hist_op *op = &ops[i];
        if (op->res == HIST_PENDING)
            continue;
        if (op->kind == HIST_REGISTER) {
            bool killed = false;
            for (guint j = 0; j < deaths->len; j++) {
                const hist_op *d = deaths->pdata[j];
                killed |= d->owner == op->owner && d->inv < op->res;
                if (op->inv <= d->confirmed)
                    continue;
                if (op->rc == PROCREG_EEXISTS && op->got.owner == d->owner)
                    hist_sink_op(&s, h, op, d,
                              "a register invoked after the holder's death "
                              "was confirmed answered EEXISTS naming the "
                              "dead holder");
                if (op->rc == 0 && op->owner == d->owner)
                    hist_sink_op(&s, h, op, d,
                              "a register invoked after the owner's death "
                              "was confirmed registered the dead owner");
            }
            if (op->rc == PROCREG_ENOTALIVE && !killed)
                hist_sink_op(&s, h, op, NULL,
                          "a register refused an owner that was never "
                          "killed as not alive");
        }
        if ((op->kind == HIST_LIST || op->kind == HIST_FIND) && op->rc == 0) {
            g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
            for (size_t k = 0; k < op->n_items; k++) {
                const hist_item *it = &op->items[k];
                if (!g_hash_table_add(seen, GINT_TO_POINTER(it->key + 1)))
                    hist_sink_op(&s, h, op, NULL, "a result names a key twice");
                if (op->kind == HIST_FIND &&
                    !hist_meta_matches(&it->meta, op->field, op->value))
                    hist_sink_op(&s, h, op, NULL,
                              "find returned an entry that does not match");
            }
        }
    }
    return hist_sink_end(&s, "static violations");
}

/* ---- per client ---- */

typedef struct {
    uint64_t seen;          /* highest revision seen or written */
    int seen_owner;         /* its owner; -1: not known */
    const hist_op *seen_by; /* the operation that saw it */
    uint64_t removed;       /* own removal: revisions <= it are gone */
    const hist_op *removed_by;
} key_session;

/* The operations that may remove a key: per key, its unregisters that
 * succeeded or may have, sorted by invocation, with the longest one's
 * duration; and those that may remove any key (drops, deaths, removals
 * without an answer), few. */
typedef struct {
    GPtrArray **by_key;
    int64_t *longest;
    GPtrArray *any;
} removals;

static int by_inv(gconstpointer a, gconstpointer b);

static void removals_init(removals *r, const hist *h)
{
    r->by_key = g_new0(GPtrArray *, h->keys->len);
    r->longest = g_new0(int64_t, h->keys->len);
    r->any = g_ptr_array_new();
    for (guint k = 0; k < h->keys->len; k++)
        r->by_key[k] = g_ptr_array_new();
    for (guint i = 0; i < h->ops->len; i++) {
        const hist_op *op = &g_array_index(h->ops, hist_op, i);
        bool unknown = op->res == HIST_PENDING || hist_rc_unknown(op->rc);
        if (op->kind == HIST_DEATH ||
            ((op->kind == HIST_DROP || op->kind == HIST_UNREGISTER) &&
             unknown)) {
            g_ptr_array_add(r->any, (gpointer)op);
        } else if ((op->kind == HIST_UNREGISTER || op->kind == HIST_DROP) &&
                   (unknown || op->rc == 0)) {
            for (guint k = 0; k < h->keys->len; k++) {
                if (op->kind == HIST_UNREGISTER && op->key != (int)k)
                    continue;
                g_ptr_array_add(r->by_key[k], (gpointer)op);
                r->longest[k] = MAX(r->longest[k], op->res - op->inv);
            }
        }
    }
    for (guint k = 0; k < h->keys->len; k++)
        g_ptr_array_sort(r->by_key[k], by_inv);
}

static void removals_clear(removals *r, const hist *h)
{
    for (guint k = 0; k < h->keys->len; k++)
        g_ptr_array_unref(r->by_key[k]);
    g_free(r->by_key);
    g_free(r->longest);
    g_ptr_array_unref(r->any);
}

/* Whether @r may remove @key held by @owner (-1: unknown) in an instant
 * after @after and before @before. */
static bool may_remove(const hist_op *r, int key, int owner, int64_t after,
                       int64_t before)
{
    bool open = r->res == HIST_PENDING || hist_rc_unknown(r->rc);
    if (r->inv >= before || (!open && r->res <= after))
        return false;
    switch (r->kind) {
    case HIST_DEATH:
        return owner < 0 || r->owner == owner;
    case HIST_UNREGISTER:
        return r->key == key;
    default:
        return true;
    }
}

/* Whether some removal of @key could fall after what @ks saw and before
 * the answer of @op. */
static bool removal_possible(const removals *rm, int key, const key_session *ks,
                             const hist_op *op)
{
    int64_t after = ks->seen_by->inv;
    for (guint i = 0; i < rm->any->len; i++)
        if (may_remove(rm->any->pdata[i], key, ks->seen_owner, after,
                       op->res))
            return true;
    /* Answered removals start before op's answer and end after @after:
     * so they started after @after minus the longest one. */
    GPtrArray *list = rm->by_key[key];
    guint lo = 0, hi = list->len;
    while (lo < hi) {
        guint mid = (lo + hi) / 2;
        if (((const hist_op *)list->pdata[mid])->inv < op->res)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (guint i = lo; i-- > 0;) {
        const hist_op *r = list->pdata[i];
        if (r->inv < after - rm->longest[key])
            break;
        if (may_remove(r, key, ks->seen_owner, after, op->res))
            return true;
    }
    return false;
}

static void saw_present(hist_sink *s, const hist *h, key_session *ks,
                        const hist_op *op, const hist_item *it, bool own_write)
{
    if (own_write ? it->rev <= ks->seen : it->rev < ks->seen)
        hist_sink_op(s, h, op, ks->seen_by,
                  own_write ? "a client's write got a revision not above one "
                              "it had already seen"
                            : "a client read an older revision after a newer "
                              "one (monotonic reads / read-your-writes)");
    else if (ks->removed_by != NULL && it->rev <= ks->removed)
        hist_sink_op(s, h, op, ks->removed_by,
                  "a client saw again an entry it had removed");
    if (it->rev > ks->seen) {
        ks->seen = it->rev;
        ks->seen_owner = it->owner; /* -1: an update's answer names none */
        ks->seen_by = op;
    }
}

static void saw_absent(hist_sink *s, const hist *h, const removals *rm, int key,
                       key_session *ks, const hist_op *op)
{
    if (ks->seen_by != NULL && !removal_possible(rm, key, ks, op))
        hist_sink_op(s, h, op, ks->seen_by,
                  "a client found a key absent after it saw the key "
                  "present, and no removal could have come in between");
}

static int by_inv(gconstpointer a, gconstpointer b)
{
    const hist_op *x = *(const hist_op *const *)a;
    const hist_op *y = *(const hist_op *const *)b;
    return x->inv < y->inv ? -1 : x->inv > y->inv;
}

static void one_op(hist_sink *s, const hist *h, const removals *rm,
                   key_session *keys, const hist_op *op)
{
    if (op->res == HIST_PENDING || hist_rc_unknown(op->rc))
        return;
    key_session *ks = op->key >= 0 ? &keys[op->key] : NULL;
    switch (op->kind) {
    case HIST_REGISTER:
        if (op->rc == 0 || op->rc == PROCREG_EEXISTS) {
            hist_item it = op->got;
            if (op->rc == 0)
                it.owner = op->owner;
            saw_present(s, h, ks, op, &it, op->rc == 0);
        }
        break;
    case HIST_UPDATE:
        if (op->rc == 0)
            saw_present(s, h, ks, op, &op->got, true);
        else if (op->rc == PROCREG_ENOTFOUND)
            saw_absent(s, h, rm, op->key, ks, op);
        break;
    case HIST_LOOKUP_ENTRY:
        if (op->rc == 0)
            saw_present(s, h, ks, op, &op->got, false);
        else if (op->rc == PROCREG_ENOTFOUND)
            saw_absent(s, h, rm, op->key, ks, op);
        break;
    case HIST_LOOKUP:
        if (op->rc == PROCREG_ENOTFOUND)
            saw_absent(s, h, rm, op->key, ks, op);
        break;
    case HIST_UNREGISTER:
        if (op->rc == PROCREG_ENOTFOUND) {
            saw_absent(s, h, rm, op->key, ks, op);
        } else if (op->rc == 0) {
            ks->removed = MAX(ks->seen, op->if_rev);
            ks->removed_by = op;
        }
        break;
    case HIST_LIST:
    case HIST_FIND:
        if (op->rc != 0)
            break;
        for (size_t i = 0; i < op->n_items; i++)
            saw_present(s, h, &keys[op->items[i].key], op, &op->items[i],
                        false);
        for (guint k = 0; op->kind == HIST_LIST && k < h->keys->len; k++) {
            bool listed = false;
            for (size_t i = 0; i < op->n_items && !listed; i++)
                listed = op->items[i].key == (int)k;
            if (!listed)
                saw_absent(s, h, rm, (int)k, &keys[k], op);
        }
        break;
    default:
        break;
    }
}

bool hist_check_sessions(const hist *h, GString *report)
{
    hist_sink s = {report, 0};
    removals rm;
    removals_init(&rm, h);
    g_autoptr(GHashTable) by_client = g_hash_table_new_full(
        NULL, NULL, NULL, (GDestroyNotify)g_ptr_array_unref);
    for (guint i = 0; i < h->ops->len; i++) {
        const hist_op *op = &g_array_index(h->ops, hist_op, i);
        if (op->kind == HIST_DEATH)
            continue;
        GPtrArray *list = g_hash_table_lookup(by_client,
                                              GINT_TO_POINTER(op->client));
        if (list == NULL) {
            list = g_ptr_array_new();
            g_hash_table_insert(by_client, GINT_TO_POINTER(op->client), list);
        }
        g_ptr_array_add(list, (gpointer)op);
    }
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, by_client);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        GPtrArray *list = value;
        g_ptr_array_sort(list, by_inv);
        g_autofree key_session *keys = g_new0(key_session, h->keys->len);
        for (guint k = 0; k < h->keys->len; k++)
            keys[k].seen_owner = -1;
        for (guint i = 0; i < list->len; i++)
            one_op(&s, h, &rm, keys, list->pdata[i]);
    }
    removals_clear(&rm, h);
    return hist_sink_end(&s, "session violations");
}
