/*
 * The minimiser: from one key's failing sub-history, the smallest set of
 * operations that still shows the violation, printed for people.
 *
 * 1. The smallest failing cut.  Cut at time T: operations invoked after T
 *    go, reads answered after T go, writes answered after T lose their
 *    answer (pending: may or may not take effect).  Linearizability is
 *    closed under such cuts, so a binary search over answer times finds
 *    the first T that fails; the answer given at T is the culprit F.
 * 2. Delta debugging (ddmin, then pairs) deletes other operations while
 *    the set (a) fails, (b) passes without F's answer, (c) explains
 *    every other observation in it by a write in it (the write that made
 *    the revision it saw, a register before a presence it saw, a
 *    removal after the register before an absence it saw), and (d) keeps
 *    the last write and the last owner death invoked before F's answer.
 *    (c) stops a deletion from inventing a second failure: without it,
 *    deleting the write a read saw would leave that read unexplained and
 *    the "minimal" history would be a phantom; (d) keeps the state F
 *    should have seen, so the set tells the story.  It starts from the
 *    operations just before F (windows of growing size, closed under
 *    (c)), which is where a violation's witnesses nearly always are.
 */
#include "check.h"

#include <procreg/procreg.h>

#include <string.h>

/* The largest window tried: checking explanations costs its square. */
#define MAX_WINDOW 4096

typedef struct {
    const kop *all;          /* the key's sub-history, by invocation */
    guint n_all;
    const hist_check_opts *opts;
    int64_t cut;             /* answers after it are unknown */
    guint culprit;           /* F: index in all */
    bool culprit_explained;  /* the whole cut explains what F saw */
    int context[2];          /* the last write and the last owner death
                                invoked before F's answer, or -1 */
    gint64 deadline;         /* monotonic µs */
    GHashTable *producer;    /* revision -> 1 + index of its write */
    guint8 *in;              /* scratch: membership of the set tested */
} minimiser;

/* @k as the cut sees it: false when it is dropped. */
static bool cut_op(const kop *k, int64_t cut, kop *out)
{
    *out = *k;
    if (k->res == HIST_PENDING || k->res <= cut)
        return k->inv <= cut;
    if (k->inv > cut || kop_is_read(k))
        return false;
    out->res = HIST_PENDING;
    return true;
}

static bool fails(const minimiser *m, const guint *set, guint n,
                  bool without_culprit)
{
    g_autoptr(GArray) ops = g_array_new(FALSE, FALSE, sizeof(kop));
    for (guint i = 0; i < n; i++) {
        kop k;
        if (!cut_op(&m->all[set[i]], m->cut, &k))
            continue;
        if (without_culprit && set[i] == m->culprit) {
            if (kop_is_read(&k))
                continue;
            k.res = HIST_PENDING;
        }
        g_array_append_val(ops, k);
    }
    return hist_linearize((kop *)ops->data, ops->len, m->opts) != LIN_OK;
}

static bool cut_fails(minimiser *m, int64_t cut)
{
    g_autoptr(GArray) set = g_array_new(FALSE, FALSE, sizeof(guint));
    m->cut = cut;
    for (guint i = 0; i < m->n_all; i++)
        g_array_append_val(set, i);
    return fails(m, (guint *)set->data, set->len, false);
}

/* ---- explanations ---- */

static bool answered_in_cut(const minimiser *m, const kop *k)
{
    return k->res != HIST_PENDING && k->res <= m->cut;
}

typedef enum {
    NEEDS_NOTHING,
    NEEDS_REVISION, /* the write that made the revision it saw */
    NEEDS_REGISTER, /* a register before the presence it saw */
    NEEDS_REMOVAL,  /* a removal after the registers before its absence */
    NEEDS_CHANGE,   /* a find's miss: as NEEDS_REMOVAL (or an update)
                       after a matching register */
} need;

/* What observation @o needs explained (@want: the revision or owner). */
static need needs(const minimiser *m, const kop *o, hist_item *want)
{
    *want = o->got;
    if (!answered_in_cut(m, o))
        return NEEDS_NOTHING;
    bool absent = o->rc == PROCREG_ENOTFOUND;
    switch (o->kind) {
    case KOP_REGISTER:
        return o->rc == PROCREG_EEXISTS ? NEEDS_REVISION : NEEDS_REMOVAL;
    case KOP_ENTRY:
    case KOP_PRESENT:
        return absent ? NEEDS_REMOVAL : NEEDS_REVISION;
    case KOP_LOOKUP:
        return absent ? NEEDS_REMOVAL : NEEDS_REGISTER;
    case KOP_ABSENT:
        return NEEDS_REMOVAL;
    case KOP_NOMATCH:
        return NEEDS_CHANGE;
    case KOP_UNREGISTER:
    case KOP_UPDATE:
        if (absent)
            return NEEDS_REMOVAL;
        want->owner = -1;
        want->rev = o->if_rev;
        /* A conflict saw the key present at another revision. */
        return o->if_rev != 0 && o->rc != PROCREG_ECONFLICT ? NEEDS_REVISION
                                                           : NEEDS_REGISTER;
    default:
        return NEEDS_NOTHING;
    }
}

static bool may_register(const kop *w)
{
    return w->kind == KOP_REGISTER && (w->res == HIST_PENDING || w->rc == 0);
}

static bool may_remove(const kop *w, need what)
{
    bool effect = w->res == HIST_PENDING || w->rc == 0;
    switch (w->kind) {
    case KOP_UNREGISTER:
        return effect;
    case KOP_UPDATE:
        return effect && what == NEEDS_CHANGE;
    case KOP_DROP:
    case KOP_DEATH:
    case KOP_UNDO:
        return true;
    default:
        return false;
    }
}

/* The write in the cut that explains @o: for a revision the write that
 * made it; for a presence the latest register before it; for an absence
 * the latest removal before it.  -1: none. */
static int explainer(const minimiser *m, guint o_index, need what,
                     const hist_item *want)
{
    if (what == NEEDS_REVISION) {
        /* Its answer may come after the cut: then it is pending there. */
        guint p = GPOINTER_TO_UINT(
            g_hash_table_lookup(m->producer, GSIZE_TO_POINTER(want->rev)));
        return p != 0 && p - 1 != o_index && m->all[p - 1].inv <= m->cut
                   ? (int)p - 1
                   : -1;
    }
    int64_t before = m->all[o_index].res;
    for (guint j = m->n_all; j-- > 0;) {
        const kop *w = &m->all[j];
        if (j == o_index || w->inv >= before || w->inv > m->cut)
            continue;
        bool fits = what == NEEDS_REGISTER
                        ? may_register(w) &&
                              (want->owner < 0 || w->owner == want->owner)
                        : may_remove(w, what);
        if (fits)
            return (int)j;
    }
    return -1;
}

/* Whether the set (@set, marked in m->in) explains observation @o_index. */
static bool has_explanation(const minimiser *m, const guint *set, guint n,
                            guint o_index)
{
    const kop *o = &m->all[o_index];
    hist_item want;
    need what = needs(m, o, &want);
    if (what == NEEDS_NOTHING)
        return true;
    if (what == NEEDS_REMOVAL || what == NEEDS_CHANGE) {
        /* An absence needs nothing unless a register in the set must
         * come before it (answered before it was asked); then a removal
         * that may come after that register. */
        const kop *last = NULL;
        for (guint i = 0; i < n; i++) {
            const kop *w = &m->all[set[i]];
            if (set[i] != o_index && may_register(w) &&
                answered_in_cut(m, w) && w->res < o->inv &&
                (last == NULL || w->inv > last->inv))
                last = w;
        }
        /* A find's miss is explained by a register that does not match. */
        if (last == NULL ||
            (what == NEEDS_CHANGE &&
             !hist_meta_matches(&last->meta, o->field, o->value)))
            return true;
        for (guint i = 0; i < n; i++) {
            const kop *r = &m->all[set[i]];
            if (set[i] != o_index && may_remove(r, what) &&
                r->inv < o->res &&
                (r->res == HIST_PENDING || r->res > last->inv))
                return true;
        }
        return false;
    }
    int e = explainer(m, o_index, what, &want);
    if (e >= 0 && m->in[e])
        return true;
    for (guint i = 0; i < n; i++) {
        const kop *w = &m->all[set[i]];
        if (answered_in_cut(m, w) || w->inv >= o->res)
            continue;
        if (what == NEEDS_REGISTER ? w->kind == KOP_REGISTER &&
                                         (want.owner < 0 ||
                                          w->owner == want.owner)
                                   : (w->kind == KOP_REGISTER ||
                                      w->kind == KOP_UPDATE) &&
                                         o->kind != KOP_UNREGISTER &&
                                         o->kind != KOP_UPDATE &&
                                         hist_meta_shares_token(&w->meta,
                                                                &o->got.meta))
            return true;
    }
    return false;
}

static void mark(minimiser *m, const guint *set, guint n, guint8 v)
{
    for (guint i = 0; i < n; i++)
        m->in[set[i]] = v;
}

static bool explained(minimiser *m, const guint *set, guint n)
{
    mark(m, set, n, 1);
    bool ok = true;
    for (int c = 0; c < 2; c++)
        ok = ok && (m->context[c] < 0 || m->in[m->context[c]]);
    for (guint i = 0; i < n && ok; i++)
        if (set[i] != m->culprit || m->culprit_explained)
            ok = has_explanation(m, set, n, set[i]);
    mark(m, set, n, 0);
    return ok;
}

/* Add to @set the explainers its observations lack, until none lacks
 * (or until it holds MAX_WINDOW more). */
static void close_set(minimiser *m, GArray *set)
{
    mark(m, (guint *)set->data, set->len, 1);
    guint limit = set->len + MAX_WINDOW;
    for (bool added = true; added && set->len < limit;) {
        added = false;
        for (guint i = 0; i < set->len && set->len < limit; i++) {
            guint o = g_array_index(set, guint, i);
            if (has_explanation(m, (guint *)set->data, set->len, o))
                continue;
            hist_item want;
            int e = explainer(m, o, needs(m, &m->all[o], &want), &want);
            if (e >= 0 && !m->in[e]) {
                guint x = (guint)e;
                m->in[x] = 1;
                g_array_append_val(set, x);
                added = true;
            }
        }
    }
    mark(m, (guint *)set->data, set->len, 0);
}

/* The subset still shows the violation (see the header). */
static bool still_fails(minimiser *m, const guint *set, guint n)
{
    return g_get_monotonic_time() <= m->deadline && explained(m, set, n) &&
           fails(m, set, n, false) && !fails(m, set, n, true);
}

/* ---- reduction ---- */

static void replace(GArray *set, GArray *with)
{
    g_array_set_size(set, 0);
    g_array_append_vals(set, with->data, with->len);
}

/* ddmin over @set, whose element 0 (the culprit) always stays. */
static void ddmin(minimiser *m, GArray *set)
{
    guint granularity = 2;
    g_autoptr(GArray) trial = g_array_new(FALSE, FALSE, sizeof(guint));
    for (;;) {
        guint len = set->len - 1;
        if (len == 0 || g_get_monotonic_time() > m->deadline)
            return;
        granularity = MIN(granularity, len);
        bool reduced = false;
        for (guint c = 0; c < granularity && !reduced; c++) {
            guint lo = 1 + c * len / granularity;
            guint hi = 1 + (c + 1) * len / granularity;
            g_array_set_size(trial, 0);
            for (guint i = 0; i < set->len; i++)
                if (i < lo || i >= hi)
                    g_array_append_val(trial, g_array_index(set, guint, i));
            if (still_fails(m, (guint *)trial->data, trial->len)) {
                replace(set, trial);
                granularity = MAX(granularity - 1, 2);
                reduced = true;
            }
        }
        if (!reduced) {
            if (granularity >= len)
                return;
            granularity = MIN(granularity * 2, len);
        }
    }
}

/* ddmin leaves a set from which no single operation can go; a write and
 * the removal that undid it often can go together.  Tries every pair of
 * a small set, then ddmin again; returns whether it removed some. */
static bool drop_pairs(minimiser *m, GArray *set)
{
    if (set->len > 64)
        return false;
    g_autoptr(GArray) trial = g_array_new(FALSE, FALSE, sizeof(guint));
    for (guint i = 1; i < set->len; i++)
        for (guint j = i + 1; j < set->len; j++) {
            g_array_set_size(trial, 0);
            for (guint k = 0; k < set->len; k++)
                if (k != i && k != j)
                    g_array_append_val(trial, g_array_index(set, guint, k));
            if (still_fails(m, (guint *)trial->data, trial->len)) {
                replace(set, trial);
                ddmin(m, set);
                return true;
            }
        }
    return false;
}

/* The culprit and the operations of the cut invoked at most @window
 * operations before it, closed under explanation. */
static void window_set(minimiser *m, const GArray *cut_ops, guint pos,
                       guint window, GArray *out)
{
    g_array_set_size(out, 0);
    g_array_append_val(out, m->culprit);
    for (int c = 0; c < 2; c++)
        if (m->context[c] >= 0) {
            guint x = (guint)m->context[c];
            g_array_append_val(out, x);
        }
    for (guint i = pos > window ? pos - window : 0; i < cut_ops->len; i++) {
        guint idx = g_array_index(cut_ops, guint, i);
        if (idx != m->culprit && (int)idx != m->context[0] &&
            (int)idx != m->context[1])
            g_array_append_val(out, idx);
    }
    close_set(m, out);
}

/* ---- report ---- */

static int int64_cmp(gconstpointer a, gconstpointer b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int by_invocation(gconstpointer a, gconstpointer b, gpointer data)
{
    const minimiser *m = data;
    const kop *x = &m->all[*(const guint *)a], *y = &m->all[*(const guint *)b];
    return x->inv < y->inv ? -1 : x->inv > y->inv;
}

void hist_report_violation(const hist *h, int key, const kop *ops, guint n,
                           const hist_check_opts *opts, gint64 deadline,
                           GString *report)
{
    minimiser m = {.all = ops, .n_all = n, .opts = opts};
    m.producer = g_hash_table_new(NULL, NULL);
    m.in = g_new0(guint8, n);
    /* A broken backend may hand out a revision twice: the first write
     * that answered it made it. */
    for (guint i = 0; i < n; i++)
        if ((ops[i].kind == KOP_REGISTER || ops[i].kind == KOP_UPDATE) &&
            ops[i].res != HIST_PENDING && ops[i].rc == 0 &&
            !g_hash_table_contains(m.producer,
                                   GSIZE_TO_POINTER(ops[i].got.rev)))
            g_hash_table_insert(m.producer, GSIZE_TO_POINTER(ops[i].got.rev),
                                GUINT_TO_POINTER(i + 1));
    g_autoptr(GArray) times = g_array_new(FALSE, FALSE, sizeof(int64_t));
    for (guint i = 0; i < n; i++)
        if (ops[i].res != HIST_PENDING)
            g_array_append_val(times, ops[i].res);
    g_array_sort(times, int64_cmp);
    const int64_t *t = (const int64_t *)times->data;
    if (g_get_monotonic_time() > deadline) {
        g_string_append_printf(report,
            "history: key %s is not %s either (not minimised: the time "
            "for minimising is spent)\n", (char *)h->keys->pdata[key],
            opts->session ? "consistent with the optimized promise"
                          : "linearizable");
        g_hash_table_unref(m.producer);
        g_free(m.in);
        return;
    }
    /* Galloping, then halving: the cuts before a violation are small
     * and quick to check when it comes early in a long history. */
    guint lo = 0, hi = 1; /* the cut at t[hi] fails, none before t[lo] */
    while (hi < times->len - 1 && !cut_fails(&m, t[hi])) {
        lo = hi + 1;
        hi = MIN(2 * hi, times->len - 1);
    }
    hi = MIN(hi, times->len - 1);
    while (lo < hi) {
        guint mid = (lo + hi) / 2;
        if (cut_fails(&m, t[mid]))
            hi = mid;
        else
            lo = mid + 1;
    }
    m.cut = t[hi];
    m.deadline = deadline;
    g_autoptr(GArray) cut_ops = g_array_new(FALSE, FALSE, sizeof(guint));
    m.culprit = G_MAXUINT;
    guint pos = 0;
    for (guint i = 0; i < n; i++) {
        kop k;
        if (!cut_op(&ops[i], m.cut, &k))
            continue;
        if (m.culprit == G_MAXUINT && ops[i].res == m.cut) {
            m.culprit = i;
            pos = cut_ops->len;
        }
        g_array_append_val(cut_ops, i);
    }
    /* The last write and the last owner death before F's answer stay in
     * every set: the state F should have seen (a minimal set could
     * otherwise drop the write that made F's answer wrong, or the one
     * that would have explained it, and show a puzzle, not the story). */
    m.context[0] = m.context[1] = -1;
    for (guint i = 0; i < cut_ops->len; i++) {
        guint idx = g_array_index(cut_ops, guint, i);
        const kop *w = &ops[idx];
        bool write = (w->kind == KOP_REGISTER || w->kind == KOP_UNREGISTER ||
                      w->kind == KOP_UPDATE || w->kind == KOP_DROP) &&
                     (w->res == HIST_PENDING || w->rc == 0);
        int c = w->kind == KOP_DEATH ? 1 : write ? 0 : -1;
        if (c >= 0 && idx != m.culprit && w->inv < ops[m.culprit].res &&
            (m.context[c] < 0 || w->inv > ops[m.context[c]].inv))
            m.context[c] = (int)idx;
    }
    mark(&m, (guint *)cut_ops->data, cut_ops->len, 1);
    m.culprit_explained =
        has_explanation(&m, (guint *)cut_ops->data, cut_ops->len, m.culprit);
    mark(&m, (guint *)cut_ops->data, cut_ops->len, 0);

    g_autoptr(GArray) set = g_array_new(FALSE, FALSE, sizeof(guint));
    bool found = false;
    guint w = 16;
    for (; !found && w <= MAX_WINDOW; w *= 4) {
        window_set(&m, cut_ops, pos, w, set);
        found = still_fails(&m, (guint *)set->data, set->len);
        if (w >= cut_ops->len)
            break;
    }
    if (found) {
        ddmin(&m, set);
        while (g_get_monotonic_time() <= m.deadline && drop_pairs(&m, set))
            ;
    }
    bool complete = found && g_get_monotonic_time() <= m.deadline;

    const hist_op *f = &g_array_index(h->ops, hist_op, ops[m.culprit].op);
    g_string_append_printf(report,
        "history: key %s is not %s: no order of its operations explains "
        "the answer of\n  ",
        (char *)h->keys->pdata[key],
        opts->session ? "consistent with the optimized promise (reads "
                        "at most the TTL stale)"
                      : "linearizable");
    hist_op_describe(h, f, report);
    g_string_append_printf(report,
        "\n  smallest failing sub-history found (%u of the %u operations "
        "up to that answer%s; without that answer the rest is "
        "consistent):\n",
        set->len, cut_ops->len,
        complete ? ""
                 : found ? ", not minimal: minimising ran out of time"
                         : ", not minimal: no window before it shows the "
                           "violation alone");
    g_array_sort_with_data(set, by_invocation, &m);
    /* An unminimised set can be huge: the operations nearest F. */
    guint first = set->len > 60 ? set->len - 60 : 0;
    if (first > 0)
        g_string_append_printf(report, "     ... %u earlier operations\n",
                               first);
    for (guint i = first; i < set->len; i++) {
        guint idx = g_array_index(set, guint, i);
        const kop *k = &ops[idx];
        g_string_append(report, idx == m.culprit ? "  >> " : "     ");
        hist_op_describe(h, &g_array_index(h->ops, hist_op, k->op), report);
        if (k->res != HIST_PENDING && k->res > m.cut)
            g_string_append(report, "  [answered later: counted unknown]");
        if (k->kind == KOP_PRESENT || k->kind == KOP_ABSENT ||
            k->kind == KOP_NOMATCH)
            g_string_append_printf(report, "  [as seen for %s]",
                                   (char *)h->keys->pdata[key]);
        g_string_append_c(report, '\n');
    }
    g_hash_table_unref(m.producer);
    g_free(m.in);
}
