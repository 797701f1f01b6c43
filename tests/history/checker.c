/*
 * The linearizability search and the minimiser of a failing sub-history.
 *
 * Search (Wing & Gong, with Lowe's memo, as Porcupine does it): the
 * operations of one key become call and return entries in time order;
 * depth-first, take the first call still in the list that the model
 * accepts, remove its call and return ("lift"), and go on; meeting a
 * return means the operation it closes could not be placed before it, so
 * backtrack.  A memo of (set of placed operations, model state) stops the
 * search from exploring one configuration twice; the set is hashed
 * incrementally (a random 64-bit value per operation, xor-ed).  Pending
 * operations return "at infinity" and need not be placed: the search
 * succeeds once every answered operation is.  Keys are independent
 * (P-compositionality: a history is linearizable iff each key's is), so
 * each key is searched alone.
 *
 * Minimiser: the smallest prefix cut that fails names the operation F
 * whose answer cannot be explained; delta debugging (ddmin) then deletes
 * other operations while the rest still explains everything but F.
 */
#include "check.h"

#include <procreg/procreg.h>

#include <inttypes.h>
#include <string.h>

typedef struct entry {
    struct entry *prev, *next;
    struct entry *ret; /* a call's return entry; NULL in returns */
    guint id;
    int64_t time;
} entry;

typedef struct {
    guint64 hash;
    kstate state;
    guint64 bits[];
} memo_node;

static guint memo_hash(gconstpointer p)
{
    const memo_node *n = p;
    return (guint)(n->hash ^ (n->hash >> 32));
}

static guint memo_words; /* the search runs on one thread at a time */

static gboolean memo_equal(gconstpointer a, gconstpointer b)
{
    const memo_node *x = a, *y = b;
    return x->hash == y->hash && kstate_equal(&x->state, &y->state) &&
           memcmp(x->bits, y->bits, memo_words * sizeof(guint64)) == 0;
}

typedef enum { LIN_OK, LIN_FAIL, LIN_BUDGET } lin_result;

typedef struct {
    const kop *ops;
    guint n;
    bool perm;
    size_t max_states;
    size_t states;       /* memo size at the end */
    GArray *order;       /* out, on LIN_OK: guint op ids in linearized order */
    GArray *after;       /* out, on LIN_OK: kstate after each */
} search;

static int entry_cmp(const void *a, const void *b)
{
    const entry *x = *(entry *const *)a, *y = *(entry *const *)b;
    if (x->time != y->time)
        return x->time < y->time ? -1 : 1;
    /* At equal times calls come first: the two operations overlap. */
    if ((x->ret != NULL) != (y->ret != NULL))
        return x->ret != NULL ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void lift(entry *call)
{
    call->prev->next = call->next;
    if (call->next)
        call->next->prev = call->prev;
    entry *r = call->ret;
    r->prev->next = r->next;
    if (r->next)
        r->next->prev = r->prev;
}

static void unlift(entry *call)
{
    entry *r = call->ret;
    r->prev->next = r;
    if (r->next)
        r->next->prev = r;
    call->prev->next = call;
    if (call->next)
        call->next->prev = call;
}

typedef struct {
    entry *call;
    kstate before;
} frame;

static lin_result run_search(search *s)
{
    guint n = s->n;
    memo_words = (n + 63) / 64;
    g_autofree entry *entries = g_new0(entry, 2 * (gsize)n + 1);
    g_autofree entry **sorted = g_new(entry *, 2 * (gsize)n);
    g_autofree guint64 *zobrist = g_new(guint64, n + 1);
    g_autofree guint64 *bits = g_new0(guint64, memo_words + 1);
    guint64 seed = 0x2545F4914F6CDD1Dull;
    guint completed = 0;
    for (guint i = 0; i < n; i++) {
        entry *c = &entries[2 * i], *r = &entries[2 * i + 1];
        c->id = r->id = i;
        c->ret = r;
        c->time = s->ops[i].inv;
        r->time = s->ops[i].res; /* HIST_PENDING sorts last */
        sorted[2 * i] = c;
        sorted[2 * i + 1] = r;
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        zobrist[i] = seed;
        completed += s->ops[i].res != HIST_PENDING;
    }
    qsort(sorted, 2 * (gsize)n, sizeof *sorted, entry_cmp);
    entry *head = &entries[2 * n];
    head->prev = NULL;
    entry *prev = head;
    for (guint i = 0; i < 2 * n; i++) {
        prev->next = sorted[i];
        sorted[i]->prev = prev;
        prev = sorted[i];
    }
    prev->next = NULL;

    GHashTable *memo = g_hash_table_new_full(memo_hash, memo_equal, g_free,
                                             NULL);
    g_autoptr(GArray) stack = g_array_new(FALSE, FALSE, sizeof(frame));
    kstate state;
    kstate_init(&state);
    guint64 hash = 0;
    guint placed = 0;
    lin_result result = LIN_FAIL;
    entry *e = head->next;
    for (;;) {
        if (placed == completed) {
            result = LIN_OK;
            break;
        }
        if (e == NULL || e->ret == NULL) {
            /* A return (or the end): the operation it closes cannot go
             * first, so undo the last choice. */
            if (stack->len == 0)
                break;
            frame f = g_array_index(stack, frame, stack->len - 1);
            g_array_set_size(stack, stack->len - 1);
            state = f.before;
            guint id = f.call->id;
            bits[id / 64] &= ~(1ull << (id % 64));
            hash ^= zobrist[id];
            placed -= s->ops[id].res != HIST_PENDING;
            unlift(f.call);
            e = f.call->next;
            continue;
        }
        kstate next;
        guint id = e->id;
        if (!kop_step(&s->ops[id], &state, s->perm, &next)) {
            e = e->next;
            continue;
        }
        bits[id / 64] |= 1ull << (id % 64);
        hash ^= zobrist[id];
        memo_node *node = g_malloc(sizeof *node +
                                   memo_words * sizeof(guint64));
        node->hash = hash ^ kstate_hash(&next);
        node->state = next;
        memcpy(node->bits, bits, memo_words * sizeof(guint64));
        if (!g_hash_table_add(memo, node)) {
            /* Seen: this configuration led nowhere before. */
            bits[id / 64] &= ~(1ull << (id % 64));
            hash ^= zobrist[id];
            e = e->next;
            continue;
        }
        if (g_hash_table_size(memo) > s->max_states) {
            result = LIN_BUDGET;
            break;
        }
        frame f = {e, state};
        g_array_append_val(stack, f);
        state = next;
        placed += s->ops[id].res != HIST_PENDING;
        lift(e);
        e = head->next;
    }
    s->states = g_hash_table_size(memo);
    g_hash_table_unref(memo);
    if (result == LIN_OK && s->order != NULL) {
        for (guint i = 0; i < stack->len; i++) {
            frame *f = &g_array_index(stack, frame, i);
            g_array_append_val(s->order, f->call->id);
            const kstate *after = i + 1 < stack->len
                ? &g_array_index(stack, frame, i + 1).before
                : &state;
            g_array_append_vals(s->after, after, 1);
        }
    }
    return result;
}

static lin_result check_ops(const kop *ops, guint n, const hist_check_opts *o,
                            size_t *states)
{
    search s = {.ops = ops, .n = n, .perm = o->perm,
                .max_states = o->max_states};
    lin_result r = run_search(&s);
    if (states)
        *states += s.states;
    return r;
}

/* ---- minimiser ---- */

typedef struct {
    const kop *all;        /* the key's sub-history */
    guint n_all;
    const hist_check_opts *opts;
    int64_t cut;           /* answers after it are unknown */
    guint culprit;         /* F: index in all */
    bool culprit_explained; /* the whole cut explains what F saw */
    gint64 deadline;       /* monotonic µs */
    size_t tests;
} minimiser;

/* @k as the cut sees it: false when it is dropped (a read answered
 * after the cut); writes answered after it become pending. */
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

static GArray *cut_history(const kop *ops, guint n, int64_t cut)
{
    GArray *out = g_array_new(FALSE, FALSE, sizeof(kop));
    for (guint i = 0; i < n; i++) {
        kop k;
        if (cut_op(&ops[i], cut, &k))
            g_array_append_val(out, k);
    }
    return out;
}

static bool cut_fails(minimiser *m, int64_t cut)
{
    g_autoptr(GArray) c = cut_history(m->all, m->n_all, cut);
    m->tests++;
    return check_ops((kop *)c->data, c->len, m->opts, NULL) != LIN_OK;
}

/* Whether @w produced the entry @it observed (revision or token). */
static bool produces(const kop *w, const hist_item *it)
{
    if (w->kind != KOP_REGISTER && w->kind != KOP_UPDATE)
        return false;
    if (w->res != HIST_PENDING && w->rc == 0 && w->got.rev == it->rev)
        return true;
    return w->res == HIST_PENDING && hist_meta_shares_token(&w->meta,
                                                            &it->meta);
}

/* Whether the observation all[@i] has a write in @set that explains
 * what it saw (vacuously true for what observes nothing). */
static bool op_explained(const minimiser *m, const guint *set, guint n,
                         guint i)
{
    const kop *o = &m->all[i];
    if (o->res == HIST_PENDING)
        return true;
    hist_item want = o->got;
    bool by_rev = false, by_owner = false;
    switch (o->kind) {
    case KOP_REGISTER:
        by_rev = o->rc == PROCREG_EEXISTS;
        break;
    case KOP_ENTRY:
    case KOP_PRESENT:
        by_rev = o->rc == 0;
        break;
    case KOP_LOOKUP:
        by_owner = o->rc == 0;
        break;
    case KOP_UNREGISTER:
    case KOP_UPDATE:
        by_rev = o->if_rev != 0 && o->rc != PROCREG_ENOTFOUND &&
                 o->rc != PROCREG_ECONFLICT;
        want.rev = o->if_rev;
        by_owner = !by_rev && o->rc != PROCREG_ENOTFOUND;
        want.owner = -1;
        break;
    default:
        break;
    }
    if (!by_rev && !by_owner)
        return true;
    for (guint j = 0; j < n; j++) {
        const kop *w = &m->all[set[j]];
        if (by_rev ? produces(w, &want)
                   : w->kind == KOP_REGISTER && w->inv < o->res &&
                         (want.owner < 0 || w->owner == want.owner))
            return true;
    }
    return false;
}

/* Every observation in @set has a write in @set that explains what it
 * saw: deleting that write would turn the observation into a second,
 * invented failure.  The culprit too, when the whole cut explained it
 * (a stale read keeps the write it saw; a phantom needs none). */
static bool explained(const minimiser *m, const guint *set, guint n)
{
    for (guint i = 0; i < n; i++)
        if ((set[i] != m->culprit || m->culprit_explained) &&
            !op_explained(m, set, n, set[i]))
            return false;
    return true;
}

/* The subset @set (indices into all, culprit included) still shows the
 * violation: it fails, it passes without the culprit's answer, and
 * everything else in it is explained. */
static bool still_fails(minimiser *m, const guint *set, guint n)
{
    if (g_get_monotonic_time() > m->deadline || !explained(m, set, n))
        return false;
    g_autoptr(GArray) with = g_array_new(FALSE, FALSE, sizeof(kop));
    g_autoptr(GArray) without = g_array_new(FALSE, FALSE, sizeof(kop));
    for (guint i = 0; i < n; i++) {
        kop k;
        if (!cut_op(&m->all[set[i]], m->cut, &k))
            continue;
        g_array_append_val(with, k);
        if (set[i] != m->culprit) {
            g_array_append_val(without, k);
        } else if (!kop_is_read(&k)) {
            k.res = HIST_PENDING;
            g_array_append_val(without, k);
        }
    }
    m->tests++;
    return check_ops((kop *)with->data, with->len, m->opts, NULL) ==
               LIN_FAIL &&
           check_ops((kop *)without->data, without->len, m->opts, NULL) ==
               LIN_OK;
}

/* ddmin over @set minus the culprit; returns the new size. */
static guint ddmin(minimiser *m, GArray *set)
{
    guint granularity = 2;
    g_autoptr(GArray) trial = g_array_new(FALSE, FALSE, sizeof(guint));
    for (;;) {
        /* The candidates exclude the culprit, kept at index 0. */
        guint len = set->len - 1;
        if (len == 0 || g_get_monotonic_time() > m->deadline)
            break;
        if (granularity > len)
            granularity = len;
        bool reduced = false;
        for (guint c = 0; c < granularity && !reduced; c++) {
            guint lo = 1 + c * len / granularity;
            guint hi = 1 + (c + 1) * len / granularity;
            /* The complement of chunk c. */
            g_array_set_size(trial, 0);
            for (guint i = 0; i < set->len; i++)
                if (i < lo || i >= hi)
                    g_array_append_val(trial, g_array_index(set, guint, i));
            if (still_fails(m, (guint *)trial->data, trial->len)) {
                g_array_set_size(set, 0);
                g_array_append_vals(set, trial->data, trial->len);
                granularity = granularity > 2 ? granularity - 1 : 2;
                reduced = true;
            }
        }
        if (!reduced) {
            if (granularity >= len)
                break;
            granularity = MIN(granularity * 2, len);
        }
    }
    return set->len;
}

static int int64_cmp(gconstpointer a, gconstpointer b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int op_inv_cmp(gconstpointer a, gconstpointer b, gpointer data)
{
    const minimiser *m = data;
    const kop *x = &m->all[*(const guint *)a], *y = &m->all[*(const guint *)b];
    return x->inv < y->inv ? -1 : x->inv > y->inv;
}

static void report_violation(const hist *h, int key, const kop *ops, guint n,
                             const hist_check_opts *opts, GString *report)
{
    minimiser m = {.all = ops, .n_all = n, .opts = opts,
                   .deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC};
    /* The answer times, sorted: the smallest failing cut is one. */
    g_autoptr(GArray) times = g_array_new(FALSE, FALSE, sizeof(int64_t));
    for (guint i = 0; i < n; i++)
        if (ops[i].res != HIST_PENDING)
            g_array_append_val(times, ops[i].res);
    g_array_sort(times, int64_cmp);
    const int64_t *t = (const int64_t *)times->data;
    guint lo = 0, hi = times->len - 1; /* cut at t[hi] fails */
    while (lo < hi) {
        guint mid = (lo + hi) / 2;
        if (cut_fails(&m, t[mid]))
            hi = mid;
        else
            lo = mid + 1;
    }
    m.cut = t[hi];
    m.culprit = G_MAXUINT;
    for (guint i = 0; i < n && m.culprit == G_MAXUINT; i++)
        if (ops[i].res == m.cut)
            m.culprit = i;
    g_autoptr(GArray) set = g_array_new(FALSE, FALSE, sizeof(guint));
    g_array_append_val(set, m.culprit);
    guint in_cut = 0;
    for (guint i = 0; i < n; i++) {
        kop k;
        if (i != m.culprit && cut_op(&ops[i], m.cut, &k))
            g_array_append_val(set, i);
        in_cut += cut_op(&ops[i], m.cut, &k);
    }
    m.culprit_explained =
        op_explained(&m, (guint *)set->data, set->len, m.culprit);
    bool minimal = still_fails(&m, (guint *)set->data, set->len);
    if (minimal) {
        ddmin(&m, set);
        minimal = g_get_monotonic_time() <= m.deadline;
    }
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
        set->len, in_cut, minimal ? "" : ", minimising stopped early");
    g_array_sort_with_data(set, op_inv_cmp, &m);
    for (guint i = 0; i < set->len; i++) {
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
}

/* ---- the whole check ---- */

/* Each revision the linearization reached, with the entry it names
 * (the events are checked against these). */
static void record_linearization(int key, const kop *ops, const search *s,
                                 hist_revmap *revs)
{
    for (guint i = 0; i < s->after->len; i++) {
        const kstate *after = &g_array_index(s->after, kstate, i);
        if (after->owner < 0 || after->rev == 0 ||
            hist_revmap_get(revs, key, after->rev) != NULL)
            continue;
        const kop *o = &ops[g_array_index(s->order, guint, i)];
        hist_rev r = {{key, after->owner, after->meta, after->rev}, 0};
        if (o->kind == KOP_REGISTER && o->rc == 0)
            r.made_by = PROCREG_EVENT_REGISTERED;
        else if (o->kind == KOP_UPDATE && o->rc == 0)
            r.made_by = PROCREG_EVENT_UPDATED;
        hist_revmap_put(revs, &r);
    }
}

bool hist_check(hist *h, const hist_check_opts *opts_in, GString *report,
                hist_check_stats *stats)
{
    hist_check_opts opts = *opts_in;
    if (opts.max_states == 0)
        opts.max_states = 4000000;
    hist_check_stats st = {0};
    gint64 start = g_get_monotonic_time();
    bool ok = hist_check_static(h, &opts, report);
    hist_revmap *revs = hist_revmap_new();
    g_autofree bool *linearized = g_new0(bool, h->keys->len + 1);
    guint failures = 0;
    for (guint key = 0; key < h->keys->len; key++) {
        g_autoptr(GArray) ops = kops_build(h, (int)key, &opts, report);
        if (ops == NULL) {
            ok = false;
            continue;
        }
        st.keys++;
        st.ops += ops->len;
        search s = {.ops = (kop *)ops->data, .n = ops->len, .perm = opts.perm,
                    .max_states = opts.max_states,
                    .order = g_array_new(FALSE, FALSE, sizeof(guint)),
                    .after = g_array_new(FALSE, FALSE, sizeof(kstate))};
        lin_result r = run_search(&s);
        st.states += s.states;
        if (r == LIN_OK) {
            linearized[key] = true;
            record_linearization((int)key, (kop *)ops->data, &s, revs);
        } else if (r == LIN_BUDGET) {
            ok = false;
            g_string_append_printf(report,
                "history: key %s: undecided after %zu states (%u "
                "operations); the history is too concurrent to check\n",
                (char *)h->keys->pdata[key], s.states, ops->len);
        } else {
            ok = false;
            if (failures++ < HIST_REPORT_MAX)
                report_violation(h, (int)key, (kop *)ops->data, ops->len,
                                 &opts, report);
        }
        g_array_unref(s.order);
        g_array_unref(s.after);
    }
    if (failures > HIST_REPORT_MAX)
        g_string_append_printf(report, "history: %u more keys fail\n",
                               failures - HIST_REPORT_MAX);
    ok = hist_check_sessions(h, report) && ok;
    ok = hist_check_events(h, revs, linearized, report) && ok;
    g_hash_table_unref(revs);
    st.events = h->events->len;
    st.seconds = (double)(g_get_monotonic_time() - start) / 1e6;
    if (stats)
        *stats = st;
    return ok;
}
