/*
 * The sequential model of one key of the registry, as procreg.h documents
 * it, and the projection of a whole history onto one key.
 *
 * register(owner, meta)  -> ok rev (rev above every revision the key had)
 *                         | EEXISTS naming the holder
 * lookup                 -> owner | ENOTFOUND
 * lookup_entry           -> (owner, meta, rev) | ENOTFOUND
 * unregister(if_rev)     -> ok | ENOTFOUND | ECONFLICT | EPERM
 * update(meta, mode, if) -> ok rev | ENOTFOUND | ECONFLICT | EPERM
 * A caller that is not the owner gets EPERM unless it passes FORCE,
 * checked after the revision: a caller that is not the owner and names
 * another revision gets ECONFLICT.  A pending write (no answer, or an
 * answer that does not say whether it happened) may take effect once,
 * with the revision a later observation reveals, or never.
 *
 * A register answered PROCREG_ENOTALIVE whose owner was killed while it
 * ran (the kill sent before the answer, the register invoked before
 * waitpid returned) may have stored its entry: the core found the owner
 * alive, the backend stored the entry, and only then did the core see the
 * owner dead and take the entry back before answering (core/writes.c,
 * procreg_owner_died_meanwhile()).  Lock-free readers can see the entry
 * in between.  So it may take effect, as a pending register, but only
 * until KOP_UNDO, placed within its interval, takes the entry back.
 */
#include "check.h"

#include <procreg/procreg.h>

#include <string.h>

void kstate_init(kstate *s)
{
    memset(s, 0, sizeof *s);
    s->owner = -1;
}

bool kstate_equal(const kstate *x, const kstate *y)
{
    return x->owner == y->owner && x->rev == y->rev && x->floor == y->floor &&
           x->dead == y->dead && x->undone == y->undone &&
           (x->owner < 0 || hist_meta_equal(&x->meta, &y->meta));
}

guint64 kstate_hash(const kstate *s)
{
    guint64 h = (guint64)(s->owner + 1) * 0x9E3779B97F4A7C15ull;
    h ^= s->rev * 0xC2B2AE3D27D4EB4Full + s->floor * 0x165667B19E3779F9ull;
    h ^= s->dead * 0x27D4EB2F165667C5ull;
    h ^= s->undone * 0x9E6C63D0676A9A99ull;
    if (s->owner >= 0)
        for (int i = 0; i < HIST_FIELDS; i++)
            if (s->meta.mask & (1u << i))
                h ^= ((guint64)s->meta.v[i] + (guint64)i) *
                     0xFF51AFD7ED558CCDull;
    return h ^ (h >> 29);
}

bool kop_is_read(const kop *o)
{
    switch (o->kind) {
    case KOP_LOOKUP:
    case KOP_ENTRY:
    case KOP_PRESENT:
    case KOP_ABSENT:
    case KOP_NOMATCH:
        return true;
    case KOP_REGISTER:
        return o->res != HIST_PENDING && o->rc != 0;
    case KOP_UNREGISTER:
    case KOP_UPDATE:
        return o->res != HIST_PENDING && o->rc != 0;
    default:
        return false;
    }
}

/* The key holds exactly @it: owner always, metadata and revision when
 * the answer reported them.  An unknown revision is learnt here. */
static bool observe(const kstate *s, const hist_item *it, bool with_meta,
                    bool with_rev, kstate *next)
{
    if (s->owner < 0 || it->owner != s->owner)
        return false;
    if (with_meta && !hist_meta_equal(&it->meta, &s->meta))
        return false;
    *next = *s;
    if (!with_rev)
        return true;
    if (s->rev != 0)
        return it->rev == s->rev;
    if (it->rev <= s->floor)
        return false;
    next->rev = next->floor = it->rev;
    return true;
}

/* A write's new revision, known (@rev) or not (0, pending). */
static bool new_revision(const kstate *s, uint64_t rev, kstate *next)
{
    if (rev != 0 && rev <= s->floor)
        return false;
    next->rev = rev;
    if (rev != 0)
        next->floor = rev;
    return true;
}

/* Whether the present entry may be at @if_rev (may differ: conflict). */
static bool rev_may_be(const kstate *s, uint64_t if_rev)
{
    return s->rev == if_rev || (s->rev == 0 && if_rev > s->floor);
}

static bool rev_may_differ(const kstate *s, uint64_t if_rev)
{
    return s->rev != if_rev || s->rev == 0;
}

/* Whether unregister/update may answer @rc (a refusal) in @s. */
static bool guarded_refusal(const kop *o, const kstate *s, int rc)
{
    bool present = s->owner >= 0;
    switch (rc) {
    case PROCREG_ENOTFOUND:
        return !present;
    case PROCREG_ECONFLICT:
        return present && o->if_rev != 0 && rev_may_differ(s, o->if_rev);
    case PROCREG_EPERM:
        /* The owner rule applies once the revision matched (the core
         * answers a conflict first). */
        return present && !o->force && s->owner != o->owner &&
               (o->if_rev == 0 || rev_may_be(s, o->if_rev));
    default:
        return false;
    }
}

/* Whether unregister/update may succeed in @s; binds an unknown revision
 * to if_rev. */
static bool guard_passes(const kop *o, const kstate *s, kstate *next)
{
    if (s->owner < 0)
        return false;
    if (!o->force && s->owner != o->owner)
        return false;
    *next = *s;
    if (o->if_rev == 0)
        return true;
    if (!rev_may_be(s, o->if_rev))
        return false;
    if (s->rev == 0)
        next->rev = next->floor = o->if_rev;
    return true;
}

bool kop_step(const kop *o, const kstate *s, kstate *next)
{
    bool pending = o->res == HIST_PENDING;
    *next = *s;
    switch (o->kind) {
    case KOP_REGISTER:
        if (!pending && o->rc == PROCREG_EEXISTS)
            return observe(s, &o->got, true, true, next);
        if (s->owner >= 0 ||
            (o->dead_bit >= 0 && (s->dead & (1ull << o->dead_bit))) ||
            (o->undo_bit >= 0 && (s->undone & (1ull << o->undo_bit))))
            return false;
        next->owner = o->owner;
        next->meta = o->meta;
        return new_revision(s, pending ? 0 : o->got.rev, next);
    case KOP_LOOKUP:
        if (o->rc == PROCREG_ENOTFOUND)
            return s->owner < 0;
        return observe(s, &o->got, false, false, next);
    case KOP_ENTRY:
    case KOP_PRESENT:
        if (o->rc == PROCREG_ENOTFOUND)
            return s->owner < 0;
        return observe(s, &o->got, true, true, next);
    case KOP_ABSENT:
        return s->owner < 0;
    case KOP_NOMATCH:
        return s->owner < 0 || !hist_meta_matches(&s->meta, o->field, o->value);
    case KOP_UNREGISTER:
        if (!pending && o->rc != 0)
            return guarded_refusal(o, s, o->rc);
        if (!guard_passes(o, s, next))
            return false;
        next->owner = -1;
        next->rev = 0;
        memset(&next->meta, 0, sizeof next->meta);
        return true;
    case KOP_UPDATE:
        if (!pending && o->rc != 0)
            return guarded_refusal(o, s, o->rc);
        if (!guard_passes(o, s, next))
            return false;
        next->meta = o->merge ? hist_meta_merge(&s->meta, &o->meta) : o->meta;
        return new_revision(next, pending ? 0 : o->got.rev, next);
    case KOP_DROP:
        next->owner = -1;
        next->rev = 0;
        memset(&next->meta, 0, sizeof next->meta);
        return true;
    case KOP_DEATH:
        next->dead |= 1ull << o->dead_bit;
        if (s->owner == o->owner) {
            next->owner = -1;
            next->rev = 0;
            memset(&next->meta, 0, sizeof next->meta);
        }
        return true;
    case KOP_UNDO:
        /* The register's own entry (its metadata holds a token no other
         * write has), if it took effect; after this it cannot. */
        next->undone |= 1ull << o->undo_bit;
        if (s->owner == o->owner && hist_meta_equal(&s->meta, &o->meta)) {
            next->owner = -1;
            next->rev = 0;
            memset(&next->meta, 0, sizeof next->meta);
        }
        return true;
    }
    return false;
}

/* ---- projection ---- */

static const hist_item *item_for(const hist_op *op, int key)
{
    for (size_t i = 0; i < op->n_items; i++)
        if (op->items[i].key == key)
            return &op->items[i];
    return NULL;
}

/* Whether @rc is an answer of @kind the model explains; others (invalid
 * argument, a dead owner refused) change nothing and say nothing. */
static bool answer_modelled(hist_kind kind, int rc)
{
    switch (kind) {
    case HIST_REGISTER:
        return rc == 0 || rc == PROCREG_EEXISTS;
    case HIST_LOOKUP:
    case HIST_LOOKUP_ENTRY:
        return rc == 0 || rc == PROCREG_ENOTFOUND;
    case HIST_UNREGISTER:
    case HIST_UPDATE:
        return rc == 0 || rc == PROCREG_ENOTFOUND || rc == PROCREG_ECONFLICT ||
               rc == PROCREG_EPERM;
    default:
        return rc == 0;
    }
}

/* The tokens of the entries the observations of @key saw (int64 boxes
 * in @tokens). */
static void seen_init(const hist *h, int key, GHashTable *tokens)
{
    for (guint i = 0; i < h->ops->len; i++) {
        const hist_op *op = &g_array_index(h->ops, hist_op, i);
        const hist_item *it = NULL;
        if (op->res == HIST_PENDING || (op->key >= 0 && op->key != key))
            continue;
        switch (op->kind) {
        case HIST_LOOKUP_ENTRY:
            it = op->rc == 0 ? &op->got : NULL;
            break;
        case HIST_REGISTER:
            it = op->rc == PROCREG_EEXISTS ? &op->got : NULL;
            break;
        case HIST_LIST:
        case HIST_FIND:
            it = op->rc == 0 ? item_for(op, key) : NULL;
            break;
        default:
            break;
        }
        for (int f = HIST_FIELD_A; it != NULL && f <= HIST_FIELD_B; f++)
            if (it->meta.mask & (1u << f))
                g_hash_table_add(tokens, g_memdup2(&it->meta.v[f],
                                                   sizeof(int64_t)));
    }
}

/* Whether register @op was refused PROCREG_ENOTALIVE while its owner was
 * being killed: the kill sent before it answered, and the register
 * invoked before that death was confirmed (after it, the core refuses
 * before the backend is asked).  @deaths: the history's (hist_op*). */
static bool killed_during(const hist_op *op, const GPtrArray *deaths)
{
    if (op->kind != HIST_REGISTER || op->res == HIST_PENDING ||
        op->rc != PROCREG_ENOTALIVE)
        return false;
    for (guint i = 0; i < deaths->len; i++) {
        const hist_op *d = deaths->pdata[i];
        if (d->owner == op->owner && d->inv < op->res &&
            op->inv < d->confirmed)
            return true;
    }
    return false;
}

/* Whether such a register may have stored its entry and taken it back
 * (see the top of this file) where an observation may have seen it: its
 * token named by an observation (@tokens, seen_init()), or its owner by
 * an owner-only lookup of the key while it ran (@stale_ns: how much older
 * a lookup's answer may be).  Taking effect unseen and being taken back
 * explains nothing that not taking effect does not, so the others are
 * refusals that changed nothing. */
static bool taken_back(const hist *h, const hist_op *op, GHashTable *tokens,
                       int64_t stale_ns)
{
    for (int f = HIST_FIELD_A; f <= HIST_FIELD_B; f++)
        if ((op->meta.mask & (1u << f)) &&
            g_hash_table_contains(tokens, &op->meta.v[f]))
            return true;
    for (guint i = 0; i < h->ops->len; i++) {
        const hist_op *l = &g_array_index(h->ops, hist_op, i);
        if (l->kind == HIST_LOOKUP && l->key == op->key &&
            l->res != HIST_PENDING && l->rc == 0 &&
            l->got.owner == op->owner && l->res > op->inv &&
            l->inv - stale_ns < op->res)
            return true;
    }
    return false;
}

static int kop_cmp(gconstpointer a, gconstpointer b)
{
    const kop *x = a, *y = b;
    /* A register taken back comes before its undo (same operation). */
    return x->inv < y->inv ? -1 : x->inv > y->inv ? 1
           : x->op < y->op ? -1 : x->op > y->op ? 1
           : (x->kind > y->kind) - (x->kind < y->kind);
}

GArray *kops_build(const hist *h, int key, const hist_check_opts *opts,
                   GString *report)
{
    GArray *out = g_array_new(FALSE, TRUE, sizeof(kop));
    /* Owners that ever registered this key: only their deaths matter. */
    g_autoptr(GHashTable) registrants = g_hash_table_new(NULL, NULL);
    g_autoptr(GPtrArray) deaths = g_ptr_array_new();
    for (guint i = 0; i < h->ops->len; i++) {
        const hist_op *op = &g_array_index(h->ops, hist_op, i);
        if (op->kind == HIST_REGISTER && op->key == key)
            g_hash_table_add(registrants, GINT_TO_POINTER(op->owner + 1));
        else if (op->kind == HIST_DEATH)
            g_ptr_array_add(deaths, (gpointer)op);
    }
    /* Registers refused while their owner was being killed: whether one
     * was taken back depends on what the key's observations saw. */
    bool refusals = false;
    for (guint i = 0; i < h->ops->len && !refusals; i++) {
        const hist_op *op = &g_array_index(h->ops, hist_op, i);
        refusals = op->key == key && killed_during(op, deaths);
    }
    g_autoptr(GHashTable) tokens =
        g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    if (refusals)
        seen_init(h, key, tokens);
    g_autoptr(GHashTable) death_bits = g_hash_table_new(NULL, NULL);
    int undo_bits = 0;
    for (guint i = 0; i < h->ops->len; i++) {
        const hist_op *op = &g_array_index(h->ops, hist_op, i);
        kop k = {.op = i, .inv = op->inv, .res = op->res, .owner = op->owner,
                 .rc = op->rc, .meta = op->meta, .merge = op->merge,
                 .force = op->force, .if_rev = op->if_rev, .got = op->got,
                 .field = op->field, .value = op->value, .dead_bit = -1,
                 .undo_bit = -1};
        bool answered = op->res != HIST_PENDING && !hist_rc_unknown(op->rc);
        bool modelled = answered && answer_modelled(op->kind, op->rc);
        if (!answered)
            k.res = HIST_PENDING;
        switch (op->kind) {
        case HIST_REGISTER:
            if (op->key == key && killed_during(op, deaths) &&
                taken_back(h, op, tokens,
                           opts->session ? opts->stale_ns : 0)) {
                if (undo_bits == 64) {
                    g_string_append_printf(report,
                        "history: key %s: over 64 registers taken back; "
                        "the model tracks at most 64 per key\n",
                        (char *)h->keys->pdata[key]);
                    g_array_unref(out);
                    return NULL;
                }
                /* The register without an answer, and its undo. */
                k.kind = KOP_REGISTER;
                k.res = HIST_PENDING;
                k.undo_bit = undo_bits++;
                g_array_append_val(out, k);
                k.kind = KOP_UNDO;
                k.res = op->res;
                break;
            }
            /* fall through */
        case HIST_UNREGISTER:
        case HIST_UPDATE:
            if (op->key != key || (answered && !modelled))
                continue;
            k.kind = op->kind == HIST_REGISTER     ? KOP_REGISTER
                     : op->kind == HIST_UNREGISTER ? KOP_UNREGISTER
                                                   : KOP_UPDATE;
            break;
        case HIST_LOOKUP:
        case HIST_LOOKUP_ENTRY:
            if (op->key != key || !modelled)
                continue;
            k.kind = op->kind == HIST_LOOKUP ? KOP_LOOKUP : KOP_ENTRY;
            /* The decorator may answer from a cache up to stale_ns old. */
            if (opts->session)
                k.inv -= opts->stale_ns;
            break;
        case HIST_LIST:
        case HIST_FIND: {
            if (!modelled)
                continue;
            /* The decorator's finds go through its index, which follows
             * the writes (a write in flight may be missing). */
            if (opts->session && op->kind == HIST_FIND)
                k.inv -= opts->stale_ns;
            const hist_item *it = item_for(op, key);
            if (it != NULL) {
                k.kind = KOP_PRESENT;
                k.got = *it;
            } else {
                k.kind = op->kind == HIST_LIST ? KOP_ABSENT : KOP_NOMATCH;
            }
            break;
        }
        case HIST_DROP:
            if (answered && !modelled)
                continue;
            k.kind = KOP_DROP;
            break;
        case HIST_DEATH: {
            if (!g_hash_table_contains(registrants,
                                       GINT_TO_POINTER(op->owner + 1)))
                continue;
            k.kind = KOP_DEATH;
            k.res = HIST_PENDING;
            guint bits = g_hash_table_size(death_bits);
            if (bits == 64) {
                g_string_append_printf(report,
                    "history: key %s: over 64 owner deaths; the model "
                    "tracks at most 64 per key\n",
                    (char *)h->keys->pdata[key]);
                g_array_unref(out);
                return NULL;
            }
            k.dead_bit = (int)bits;
            g_hash_table_insert(death_bits, GINT_TO_POINTER(op->owner + 1),
                                GINT_TO_POINTER(bits + 1));
            break;
        }
        }
        g_array_append_val(out, k);
    }
    /* A register learns its owner's death bit (not one taken back: it may
     * store its entry after its owner's death took effect, and takes it
     * back itself). */
    for (guint i = 0; i < out->len; i++) {
        kop *k = &g_array_index(out, kop, i);
        if (k->kind == KOP_REGISTER && k->undo_bit < 0)
            k->dead_bit = GPOINTER_TO_INT(g_hash_table_lookup(
                              death_bits, GINT_TO_POINTER(k->owner + 1))) -
                          1;
    }
    g_array_sort(out, kop_cmp);
    return out;
}

/* ---- revision map ---- */

static guint64 rev_tag(int key, uint64_t rev)
{
    return ((guint64)key << 48) ^ rev;
}

hist_revmap *hist_revmap_new(void)
{
    return g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
}

void hist_revmap_put(hist_revmap *m, const hist_rev *r)
{
    guint64 *tag = g_new(guint64, 1);
    *tag = rev_tag(r->item.key, r->item.rev);
    g_hash_table_replace(m, tag, g_memdup2(r, sizeof *r));
}

const hist_rev *hist_revmap_get(hist_revmap *m, int key, uint64_t rev)
{
    guint64 tag = rev_tag(key, rev);
    return g_hash_table_lookup(m, &tag);
}
