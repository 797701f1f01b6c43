/*
 * The linearizability search, and the check of a whole history.
 *
 * Search (Wing & Gong, with Lowe's memo, as Porcupine does it): the
 * operations of one key become call and return entries in time order;
 * depth-first, take the first call still in the list that the model
 * accepts, remove its call and return ("lift"), and go on; meeting a
 * return means the operation it closes could not be placed before it, so
 * backtrack.  A memo of (set of placed operations, model state) stops the
 * search from exploring one configuration twice; the set is hashed
 * incrementally (a random 64-bit value per operation, xor-ed) and kept
 * in the memo as a window (memo_node), not a bit per operation:
 * a bit per operation made the memo n * n / 8 bytes for a search of n
 * operations that never backtracks (a run of 2 s on 6 keys, 120 000
 * operations a key, took 1.8 GB, and a faster run 24 GB).  Pending
 * operations return "at infinity" and need not be placed: the search
 * succeeds once every answered operation is.  A read that holds in the
 * current state is placed at once, without alternatives (eager_read()).
 * Keys are independent
 * (P-compositionality: a history is linearizable iff each key's is), so
 * each key is searched alone.
 *
 * A key that fails goes to the minimiser (minimise.c).
 */
#include "check.h"

#include <procreg/procreg.h>

#include <inttypes.h>
#include <string.h>

typedef struct entry {
    struct entry *prev, *next;
    struct entry *ret; /* a call's return entry; NULL in returns */
    guint id;
    guint bit;    /* a call's: its rank, or its number if pending */
    bool pending; /* a call's: its operation has no answer */
    int64_t time;
} entry;

/*
 * The set of placed operations, as the memo keeps it.  Completed
 * operations are ranked by their call's time, pending ones (no answer)
 * numbered apart.  Every completed operation ranked below `low` is
 * placed and none ranked at or above `high`; the words of the completed
 * bits from word low / 64 to word (high - 1) / 64 hold the rest (a bit
 * below `low` in the first word is set, one at or above `high` in the
 * last is clear, so equal sets have equal words).  The window is short:
 * a completed operation left unplaced below a placed one was still
 * running when that one was called (else the search would have met its
 * return and backtracked), so the window spans the operations called
 * while one operation ran, not the history.  Pending operations, which
 * may stay unplaced for ever, have a bit each in `pending` words of
 * their own (there are few: a client killed, or the run's end).
 */
typedef struct {
    guint64 hash;
    kstate state;
    guint low, high;
    guint pending_words; /* the same in every node of one search */
    guint window;        /* words of completed bits, after the pending ones */
    guint64 words[];
} memo_node;

static guint memo_hash(gconstpointer p)
{
    const memo_node *n = p;
    return (guint)(n->hash ^ (n->hash >> 32));
}

static gboolean memo_equal(gconstpointer a, gconstpointer b)
{
    const memo_node *x = a, *y = b;
    return x->hash == y->hash && x->low == y->low && x->high == y->high &&
           x->window == y->window && kstate_equal(&x->state, &y->state) &&
           memcmp(x->words, y->words,
                  (x->pending_words + x->window) * sizeof(guint64)) == 0;
}

typedef struct {
    const kop *ops;
    guint n;
    size_t max_states;
    size_t states;       /* memo size at the end */
    size_t memo_bytes;   /* the memo's nodes at the end, in bytes */
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
    guint low, high; /* the walk's, before this placement */
    bool forced;     /* an eager read: no alternative to try */
} frame;

typedef struct {
    search *s;
    GHashTable *memo;
    GArray *stack;
    const guint64 *zobrist;
    guint64 *done;    /* placed completed operations, by rank */
    guint64 *pending; /* placed pending operations */
    guint done_ops, pending_words;
    guint low, high; /* as in memo_node */
    guint64 hash;
    kstate state;
    guint placed;
} walk;

static void mark(walk *w, const entry *call, bool placed)
{
    guint64 *bits = call->pending ? w->pending : w->done;
    guint64 bit = 1ull << (call->bit % 64);
    if (placed)
        bits[call->bit / 64] |= bit;
    else
        bits[call->bit / 64] &= ~bit;
    w->hash ^= w->zobrist[call->id];
}

/* The first completed operation at rank @from or above that is not
 * placed (done_ops when there is none). */
static guint first_unplaced(const walk *w, guint from)
{
    if (from >= w->done_ops)
        return w->done_ops;
    guint i = from / 64, last = (w->done_ops - 1) / 64;
    guint64 open = ~w->done[i] & (~0ull << (from % 64));
    while (open == 0) {
        if (i == last)
            return w->done_ops;
        open = ~w->done[++i];
    }
    return MIN(i * 64 + (guint)__builtin_ctzll(open), w->done_ops);
}

/* Place @e's operation (whose step from w->state gives @next): false
 * when that configuration was seen before (and so led nowhere). */
static bool place(walk *w, entry *e, const kstate *next, bool forced)
{
    guint low = w->low, high = w->high;
    mark(w, e, true);
    if (!e->pending) {
        if (e->bit == low)
            low = first_unplaced(w, low + 1);
        high = MAX(high, e->bit + 1);
    }
    guint first = low / 64;
    guint window = high > low ? (high - 1) / 64 - first + 1 : 0;
    size_t size = sizeof(memo_node) +
                  (w->pending_words + window) * sizeof(guint64);
    memo_node *node = g_malloc(size);
    node->hash = w->hash ^ kstate_hash(next);
    node->state = *next;
    node->low = low;
    node->high = high;
    node->pending_words = w->pending_words;
    node->window = window;
    memcpy(node->words, w->pending, w->pending_words * sizeof(guint64));
    memcpy(node->words + w->pending_words, w->done + first,
           window * sizeof(guint64));
    if (!g_hash_table_add(w->memo, node)) {
        mark(w, e, false);
        return false;
    }
    w->s->memo_bytes += size;
    frame f = {e, w->state, w->low, w->high, forced};
    g_array_append_val(w->stack, f);
    w->state = *next;
    w->low = low;
    w->high = high;
    w->placed += !e->pending;
    lift(e);
    return true;
}

/* Undo the last placement; returns its frame. */
static frame unplace(walk *w)
{
    frame f = g_array_index(w->stack, frame, w->stack->len - 1);
    g_array_set_size(w->stack, w->stack->len - 1);
    mark(w, f.call, false);
    w->state = f.before;
    w->low = f.low;
    w->high = f.high;
    w->placed -= !f.call->pending;
    unlift(f.call);
    return f;
}

/* A callable read that holds in the current state and changes nothing:
 * if any linearization extends this configuration, one places that read
 * next (it may move earlier: everything that had to precede it is
 * placed, and it changes no state), so it is placed without trying
 * alternatives.  This keeps read-heavy and stretched-read histories
 * from multiplying the configurations. */
static entry *eager_read(walk *w, entry *head, kstate *next)
{
    for (entry *r = head->next; r != NULL && r->ret != NULL; r = r->next) {
        const kop *o = &w->s->ops[r->id];
        if (kop_is_read(o) && kop_step(o, &w->state, next) &&
            kstate_equal(next, &w->state))
            return r;
    }
    return NULL;
}

static hist_lin run_search(search *s)
{
    guint n = s->n;
    if (n == 0)
        return LIN_OK;
    g_autofree entry *entries = g_new0(entry, 2 * (gsize)n + 1);
    g_autofree entry **sorted = g_new(entry *, 2 * (gsize)n);
    g_autofree guint64 *zobrist = g_new(guint64, n + 1);
    guint64 seed = 0x2545F4914F6CDD1Dull;
    for (guint i = 0; i < n; i++) {
        entry *c = &entries[2 * i], *r = &entries[2 * i + 1];
        c->id = r->id = i;
        c->ret = r;
        c->time = s->ops[i].inv;
        r->time = s->ops[i].res; /* HIST_PENDING sorts last */
        c->pending = s->ops[i].res == HIST_PENDING;
        sorted[2 * i] = c;
        sorted[2 * i + 1] = r;
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        zobrist[i] = seed;
    }
    qsort(sorted, 2 * (gsize)n, sizeof *sorted, entry_cmp);
    entry *head = &entries[2 * n];
    head->prev = NULL;
    entry *prev = head;
    guint completed = 0, pending = 0;
    for (guint i = 0; i < 2 * n; i++) {
        prev->next = sorted[i];
        sorted[i]->prev = prev;
        prev = sorted[i];
        if (sorted[i]->ret != NULL) /* calls, in time order: the ranks */
            sorted[i]->bit = sorted[i]->pending ? pending++ : completed++;
    }
    prev->next = NULL;

    /* One word more than needed: never a NULL source for memcpy(). */
    g_autofree guint64 *done = g_new0(guint64, completed / 64 + 1);
    g_autofree guint64 *placed_pending = g_new0(guint64, pending / 64 + 1);
    walk w = {.s = s, .zobrist = zobrist, .done = done,
              .pending = placed_pending, .done_ops = completed,
              .pending_words = (pending + 63) / 64};
    w.memo = g_hash_table_new_full(memo_hash, memo_equal, g_free, NULL);
    w.stack = g_array_new(FALSE, FALSE, sizeof(frame));
    kstate_init(&w.state);
    hist_lin result = LIN_FAIL;
    entry *e = head->next;
    bool fresh = true; /* a new configuration: look for an eager read */
    for (;;) {
        if (w.placed == completed) {
            result = LIN_OK;
            break;
        }
        if (g_hash_table_size(w.memo) > s->max_states) {
            result = LIN_BUDGET;
            break;
        }
        kstate next;
        entry *r = fresh ? eager_read(&w, head, &next) : NULL;
        fresh = false;
        if (r != NULL) {
            /* Seen before means it failed, and so does this one. */
            if (place(&w, r, &next, true)) {
                fresh = true;
                e = head->next;
            } else {
                e = NULL;
            }
            continue;
        }
        if (e == NULL || e->ret == NULL) {
            /* A return (or the end): the operation it closes cannot go
             * first, so undo the last choice (past eager reads, which
             * had no alternative). */
            if (w.stack->len == 0)
                break;
            frame f = unplace(&w);
            e = f.forced ? NULL : f.call->next;
            continue;
        }
        if (kop_step(&s->ops[e->id], &w.state, &next) &&
            place(&w, e, &next, false)) {
            fresh = true;
            e = head->next;
        } else {
            e = e->next;
        }
    }
    kstate state = w.state;
    g_autoptr(GArray) stack = w.stack;
    GHashTable *memo = w.memo;
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

hist_lin hist_linearize(const kop *ops, guint n, const hist_check_opts *o)
{
    search s = {.ops = ops, .n = n, .max_states = o->max_states};
    return run_search(&s);
}

/* ---- the whole check ---- */

/* ---- reports ---- */

static bool sink_first(hist_sink *s, const char *what)
{
    if (s->found++ >= HIST_REPORT_MAX)
        return false;
    g_string_append_printf(s->report, "history: %s\n  ", what);
    return true;
}

void hist_sink_op(hist_sink *s, const hist *h, const hist_op *op,
                  const hist_op *earlier, const char *what)
{
    if (!sink_first(s, what))
        return;
    hist_op_describe(h, op, s->report);
    if (earlier != NULL) {
        g_string_append(s->report, "\n  after\n  ");
        hist_op_describe(h, earlier, s->report);
    }
    g_string_append_c(s->report, '\n');
}

void hist_sink_event(hist_sink *s, const hist *h, const hist_event *ev,
                     const hist_event *earlier, const char *what)
{
    if (!sink_first(s, what))
        return;
    hist_event_describe(h, ev, s->report);
    if (earlier != NULL) {
        g_string_append(s->report, "\n  after\n  ");
        hist_event_describe(h, earlier, s->report);
    }
    g_string_append_c(s->report, '\n');
}

bool hist_sink_end(hist_sink *s, const char *what)
{
    if (s->found > HIST_REPORT_MAX)
        g_string_append_printf(s->report, "history: %u more %s\n",
                               s->found - HIST_REPORT_MAX, what);
    return s->found == 0;
}

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
    /* Minimising gets 20 s in all, however many keys fail. */
    gint64 minimise_until = 0;
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
        search s = {.ops = (kop *)ops->data, .n = ops->len,
                    .max_states = opts.max_states,
                    .order = g_array_new(FALSE, FALSE, sizeof(guint)),
                    .after = g_array_new(FALSE, FALSE, sizeof(kstate))};
        hist_lin r = run_search(&s);
        st.states += s.states;
        st.memo_bytes = MAX(st.memo_bytes, s.memo_bytes);
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
            if (minimise_until == 0)
                minimise_until = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
            if (failures++ < HIST_REPORT_MAX)
                hist_report_violation(h, (int)key, (kop *)ops->data,
                                      ops->len, &opts, minimise_until,
                                      report);
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
