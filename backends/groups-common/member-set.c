/*
 * The members of a group in memory: slot arrays, members inline, that
 * readers iterate without a lock, and the writer's records and indexes by
 * id and by owner.
 * member-set.h states the layout and the invariants (R1, R2).
 */
#include "member-set.h"

#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* Smallest array, and the used slots from which holes are compacted. */
#define GRP_MIN_CAP 8u
#define GRP_COMPACT_MIN 16u
/* Largest array: a group's slots are counted in 32 bits. */
#define GRP_MAX_CAP (UINT32_C(1) << 30)

/* The members of one owner in one set: leaving all of them costs them. */
struct procreg_grp_chain {
    const procreg_grp_set *set;
    procreg_owner owner;
    procreg_grp_member *head;
};

struct procreg_grp_index {
    procreg_grp_mode mode;
    procreg_grp_retire_fn *retire;
    void *ctx;
    GHashTable *by_id;  /* set of procreg_grp_member*, by id */
    GHashTable *chains; /* set of procreg_grp_chain*, by (set, owner) */
    size_t members;
    size_t member_bytes;
    size_t array_bytes; /* current arrays */
};

/* ---- hashing ---- */

static guint member_id_hash(gconstpointer p)
{
    uint64_t id = ((const procreg_grp_member *)p)->id;
    return (guint)(id ^ (id >> 32));
}

static gboolean member_id_equal(gconstpointer a, gconstpointer b)
{
    return ((const procreg_grp_member *)a)->id ==
           ((const procreg_grp_member *)b)->id;
}

static guint chain_hash(gconstpointer p)
{
    const procreg_grp_chain *c = p;
    uint64_t h = (uint64_t)(uintptr_t)c->set * 0x9e3779b97f4a7c15ull;
    h ^= (uint64_t)(uint32_t)c->owner.pid * 0xc2b2ae3d27d4eb4full;
    h ^= c->owner.start_time * 0x165667b19e3779f9ull;
    return (guint)(h ^ (h >> 32));
}

static gboolean chain_equal(gconstpointer a, gconstpointer b)
{
    const procreg_grp_chain *x = a, *y = b;
    return x->set == y->set && x->owner.pid == y->owner.pid &&
           x->owner.start_time == y->owner.start_time;
}

/* ---- index ---- */

procreg_grp_index *procreg_grp_index_new(procreg_grp_mode mode,
                                         procreg_grp_retire_fn *retire,
                                         void *ctx)
{
    procreg_grp_index *ix = g_new0(procreg_grp_index, 1);
    ix->mode = mode;
    ix->retire = retire;
    ix->ctx = ctx;
    ix->by_id = g_hash_table_new(member_id_hash, member_id_equal);
    ix->chains = g_hash_table_new_full(chain_hash, chain_equal, g_free, NULL);
    return ix;
}

void procreg_grp_index_free(procreg_grp_index *ix)
{
    if (ix == NULL)
        return;
    g_hash_table_unref(ix->by_id);
    g_hash_table_unref(ix->chains);
    g_free(ix);
}

size_t procreg_grp_index_bytes(const procreg_grp_index *ix)
{
    /* GHashTable keeps a hash and a key per bucket (set mode), sized to
     * between 1 and 2 buckets per item: count 1.5. */
    size_t tables = (g_hash_table_size(ix->by_id) +
                     g_hash_table_size(ix->chains)) *
                    (sizeof(guint) + sizeof(gpointer)) * 3 / 2;
    return ix->member_bytes + ix->array_bytes + tables +
           g_hash_table_size(ix->chains) * sizeof(procreg_grp_chain);
}

size_t procreg_grp_index_members(const procreg_grp_index *ix)
{
    return ix->members;
}

/* ---- members ---- */

/* What a member costs beyond its slot: the writer's record (its usable
 * size and malloc's chunk header, where the C library tells) and its
 * metadata's data. */
static size_t member_bytes(const procreg_grp_member *m, const GVariant *md)
{
#ifdef __GLIBC__
    size_t own = malloc_usable_size((void *)m) + sizeof(size_t);
#else
    size_t own = sizeof *m;
#endif
    return own + (md ? g_variant_get_size((GVariant *)md) : 0);
}

static void variant_unref(void *p)
{
    g_variant_unref(p);
}

/* Fill @out from slot @s of id @id (no reference taken). */
static inline void slot_read(const procreg_grp_slot *s, uint64_t id,
                             procreg_member *out)
{
    *out = (procreg_member){.id = id,
                            .owner = s->owner,
                            .metadata = s->metadata,
                            .joined_at = s->joined_at};
}

/* The id of slot @s: 0 for a hole.  Relaxed: the slot's other fields were
 * published before the length or the array that covers it (R1), and a
 * leave's 0 publishes nothing. */
static inline uint64_t slot_id(const procreg_grp_slot *s)
{
    return atomic_load_explicit(&((procreg_grp_slot *)s)->id,
                                memory_order_relaxed);
}

static void slot_copy(const procreg_grp_slot *s, uint64_t id,
                      procreg_member *out)
{
    slot_read(s, id, out);
    if (out->metadata != NULL)
        g_variant_ref(out->metadata);
}

/* ---- arrays ---- */

static size_t array_bytes(uint32_t cap)
{
    return sizeof(procreg_grp_array) +
           (size_t)cap * (sizeof(procreg_grp_slot) + sizeof(void *));
}

/* The writer's record of each slot of @a, after its slots. */
static procreg_grp_member **array_members(const procreg_grp_array *a)
{
    return (procreg_grp_member **)(void *)&((procreg_grp_array *)a)
        ->slot[a->cap];
}

/* REFCOUNT: drop a reference; the last one frees the array and drops its
 * references on the members' metadata. */
static void array_unref(procreg_grp_array *a)
{
    if (atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) != 1)
        return;
    uint32_t len = atomic_load_explicit(&a->len, memory_order_relaxed);
    for (uint32_t i = 0; i < len; i++)
        if (slot_id(&a->slot[i]) != 0 && a->slot[i].metadata != NULL)
            g_variant_unref(a->slot[i].metadata);
    g_free(a);
}

/* Whether the writer may change @a in place (R2). */
static bool exclusive(const procreg_grp_index *ix, procreg_grp_array *a)
{
    return ix->mode == PROCREG_GRP_EPOCH ||
           atomic_load_explicit(&a->refs, memory_order_acquire) == 1;
}

/* Replace @set's array by a new one holding its live members in order,
 * with room for @extra more; publish it and let the old one go.  false
 * when out of memory (nothing changed). */
static bool rebuild(procreg_grp_index *ix, procreg_grp_set *set,
                    uint32_t extra)
{
    procreg_grp_array *old =
        atomic_load_explicit(&set->array, memory_order_relaxed);
    size_t live = procreg_grp_live(set);
    size_t cap = 2 * (live + extra);
    if (cap < GRP_MIN_CAP)
        cap = GRP_MIN_CAP;
    if (cap > GRP_MAX_CAP)
        return false;
    procreg_grp_array *a = g_try_malloc(array_bytes((uint32_t)cap));
    if (a == NULL)
        return false;
    atomic_init(&a->refs, 1);
    a->cap = (uint32_t)cap;
    bool moved = old == NULL || exclusive(ix, old);
    uint32_t n = 0;
    uint32_t len = old ? atomic_load_explicit(&old->len, memory_order_relaxed)
                       : 0;
    procreg_grp_member **from = old ? array_members(old) : NULL;
    procreg_grp_member **to = array_members(a);
    for (uint32_t i = 0; i < len; i++) {
        const procreg_grp_slot *s = &old->slot[i];
        uint64_t id = slot_id(s);
        if (id == 0)
            continue;
        procreg_grp_slot *d = &a->slot[n];
        d->joined_at = s->joined_at;
        d->owner = s->owner;
        d->metadata = s->metadata;
        atomic_init(&d->id, id);
        /* Copy on write: the old array keeps its reference. */
        if (!moved && d->metadata != NULL)
            g_variant_ref(d->metadata);
        to[n] = from[i];
        to[n]->slot = n;
        n++;
    }
    atomic_init(&a->len, n);
    set->holes = 0;
    /* R1: the array is complete before the pointer to it. */
    atomic_store_explicit(&set->array, a, memory_order_release);
    ix->array_bytes += array_bytes(a->cap);
    if (old == NULL)
        return true;
    ix->array_bytes -= array_bytes(old->cap);
    if (ix->mode == PROCREG_GRP_EPOCH)
        ix->retire(old, g_free, array_bytes(old->cap), ix->ctx);
    else if (moved)
        g_free(old); /* its references moved to the new array */
    else
        array_unref(old); /* a snapshot frees it */
    return true;
}

/* ---- writer ---- */

static procreg_grp_chain *chain_get(procreg_grp_index *ix,
                                    const procreg_grp_set *set,
                                    const procreg_owner *owner)
{
    procreg_grp_chain probe = {set, *owner, NULL};
    return g_hash_table_lookup(ix->chains, &probe);
}

procreg_grp_member *procreg_grp_add(procreg_grp_index *ix,
                                    procreg_grp_set *set,
                                    const procreg_record *record,
                                    uint64_t id)
{
    /* First, so that out of memory leaves no new array behind. */
    procreg_grp_member *m = g_try_new0(procreg_grp_member, 1);
    if (m == NULL)
        return NULL;
    procreg_grp_array *a =
        atomic_load_explicit(&set->array, memory_order_relaxed);
    if (a == NULL || !exclusive(ix, a) ||
        atomic_load_explicit(&a->len, memory_order_relaxed) == a->cap) {
        if (!rebuild(ix, set, 1)) {
            g_free(m);
            return NULL;
        }
        a = atomic_load_explicit(&set->array, memory_order_relaxed);
    }
    m->id = id;
    procreg_grp_chain *c = chain_get(ix, set, &record->owner);
    if (c == NULL) {
        c = g_new0(procreg_grp_chain, 1);
        c->set = set;
        c->owner = record->owner;
        g_hash_table_add(ix->chains, c);
    }
    m->chain = c;
    m->next = c->head;
    if (c->head != NULL)
        c->head->prev = m;
    c->head = m;
    g_hash_table_add(ix->by_id, m);

    uint32_t len = atomic_load_explicit(&a->len, memory_order_relaxed);
    m->slot = len;
    array_members(a)[len] = m;
    procreg_grp_slot *s = &a->slot[len];
    s->joined_at = record->registered_at;
    s->owner = record->owner;
    s->metadata = NULL;
    if (record->metadata != NULL) {
        /* Serialised by the writer, never by a reader (see ckht.c). */
        (void)g_variant_get_data(record->metadata);
        s->metadata = g_variant_ref(record->metadata); /* the array's */
    }
    atomic_store_explicit(&s->id, id, memory_order_relaxed);
    /* R1: the slot in full, then the length that covers it. */
    atomic_store_explicit(&a->len, len + 1, memory_order_release);
    atomic_store_explicit(&set->live, procreg_grp_live(set) + 1,
                          memory_order_relaxed);
    ix->members++;
    ix->member_bytes += member_bytes(m, s->metadata);
    return m;
}

bool procreg_grp_remove(procreg_grp_index *ix, procreg_grp_set *set,
                        procreg_grp_member *m)
{
    procreg_grp_array *a =
        atomic_load_explicit(&set->array, memory_order_relaxed);
    /* Copy on write: a snapshot holds this array (REFCOUNT). */
    if (!exclusive(ix, a)) {
        if (!rebuild(ix, set, 0))
            return false;
        a = atomic_load_explicit(&set->array, memory_order_relaxed);
    }
    procreg_grp_slot *s = &a->slot[m->slot];
    /* R1: the one change a published slot sees; its fields stay. */
    atomic_store_explicit(&s->id, 0, memory_order_relaxed);
    set->holes++;
    atomic_store_explicit(&set->live, procreg_grp_live(set) - 1,
                          memory_order_relaxed);
    ix->members--;
    ix->member_bytes -= member_bytes(m, s->metadata);
    /* R2: a reader may still be copying the slot out. */
    if (s->metadata != NULL && ix->mode == PROCREG_GRP_EPOCH)
        ix->retire(s->metadata, variant_unref,
                   g_variant_get_size(s->metadata), ix->ctx);
    else if (s->metadata != NULL)
        g_variant_unref(s->metadata); /* no snapshot holds @a */

    g_hash_table_remove(ix->by_id, m);
    procreg_grp_chain *c = m->chain;
    if (m->prev != NULL)
        m->prev->next = m->next;
    else
        c->head = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    if (c->head == NULL)
        g_hash_table_remove(ix->chains, c); /* frees it */
    g_free(m); /* the writer's alone */

    /* Mostly holes: compact (out of memory, a later removal tries). */
    uint32_t len = atomic_load_explicit(&a->len, memory_order_relaxed);
    if (len >= GRP_COMPACT_MIN && set->holes > procreg_grp_live(set))
        rebuild(ix, set, 0);
    return true;
}

void procreg_grp_set_retire(procreg_grp_index *ix, procreg_grp_set *set)
{
    procreg_grp_array *a =
        atomic_load_explicit(&set->array, memory_order_relaxed);
    if (a == NULL)
        return;
    atomic_store_explicit(&set->array, NULL, memory_order_relaxed);
    ix->array_bytes -= array_bytes(a->cap);
    if (ix->mode == PROCREG_GRP_EPOCH)
        ix->retire(a, g_free, array_bytes(a->cap), ix->ctx);
    else
        array_unref(a);
}

void procreg_grp_set_destroy(procreg_grp_set *set)
{
    procreg_grp_array *a =
        atomic_load_explicit(&set->array, memory_order_relaxed);
    if (a == NULL)
        return;
    uint32_t len = atomic_load_explicit(&a->len, memory_order_relaxed);
    for (uint32_t i = 0; i < len; i++) {
        if (slot_id(&a->slot[i]) == 0)
            continue;
        if (a->slot[i].metadata != NULL)
            g_variant_unref(a->slot[i].metadata);
        g_free(array_members(a)[i]);
    }
    g_free(a);
    atomic_store_explicit(&set->array, NULL, memory_order_relaxed);
    atomic_store_explicit(&set->live, 0, memory_order_relaxed);
}

/* Remove @m, copied to @removed first; false when out of memory (nothing
 * changed). */
static bool leave_one(procreg_grp_index *ix, procreg_grp_set *set,
                      procreg_grp_member *m, GArray *removed)
{
    procreg_member copy;
    procreg_grp_member_copy(m, &copy);
    if (!procreg_grp_remove(ix, set, m)) {
        procreg_member_clear(&copy);
        return false;
    }
    if (removed != NULL)
        g_array_append_val(removed, copy);
    else
        procreg_member_clear(&copy);
    return true;
}

int procreg_grp_leave(procreg_grp_index *ix, procreg_grp_set *set,
                      const procreg_key *key, uint64_t member_id,
                      const procreg_owner *owner, GArray *removed,
                      GError **error)
{
    int n = 0;
    if (set == NULL)
        return 0;
    if (member_id != 0) {
        procreg_grp_member *m = procreg_grp_find(ix, member_id);
        if (m == NULL || !procreg_grp_in_set(m, set))
            return 0; /* not a member: nothing to do */
        const procreg_owner *its = &m->chain->owner;
        if (owner != NULL && (its->pid != owner->pid ||
                              its->start_time != owner->start_time))
            return procreg_set_member_owner_error(error, key, member_id, its);
        if (!leave_one(ix, set, m, removed))
            return procreg_set_error(error, PROCREG_ENOMEM,
                                     "out of memory leaving a group");
        return 1;
    }
    if (owner == NULL)
        return 0;
    for (procreg_grp_member *m = procreg_grp_owner_first(ix, set, owner),
                            *next;
         m != NULL; m = next) {
        next = m->next;
        if (!leave_one(ix, set, m, removed))
            return procreg_set_error(error, PROCREG_ENOMEM,
                                     "out of memory leaving a group (%d "
                                     "members left it)", n);
        n++;
    }
    return n;
}

procreg_grp_member *procreg_grp_find(procreg_grp_index *ix, uint64_t id)
{
    procreg_grp_member probe = {.id = id};
    return g_hash_table_lookup(ix->by_id, &probe);
}

bool procreg_grp_in_set(const procreg_grp_member *m,
                        const procreg_grp_set *set)
{
    return m->chain->set == set;
}

procreg_grp_member *procreg_grp_owner_first(procreg_grp_index *ix,
                                            const procreg_grp_set *set,
                                            const procreg_owner *owner)
{
    procreg_grp_chain *c = chain_get(ix, set, owner);
    return c != NULL ? c->head : NULL;
}

void procreg_grp_member_copy(const procreg_grp_member *m, procreg_member *out)
{
    const procreg_grp_array *a = procreg_grp_load(m->chain->set);
    slot_copy(&a->slot[m->slot], m->id, out);
}

/* ---- readers ---- */

void procreg_grp_set_append(const procreg_grp_set *set, GArray *out)
{
    const procreg_grp_array *a = procreg_grp_load(set);
    if (a == NULL)
        return;
    uint32_t len = atomic_load_explicit(&((procreg_grp_array *)a)->len,
                                        memory_order_acquire);
    for (uint32_t i = 0; i < len; i++) {
        uint64_t id = slot_id(&a->slot[i]);
        if (id == 0)
            continue;
        procreg_member copy;
        slot_copy(&a->slot[i], id, &copy);
        g_array_append_val(out, copy);
    }
}

/* How far ahead a dispatch over a large group prefetches: a page.  The
 * hardware's stream prefetchers stop at 4 KiB page boundaries, so a group
 * larger than the caches costs a miss or more per page without this (a
 * prefetch past the array's end is harmless: it never faults); a group in
 * the caches is faster without it. */
#define GRP_PREFETCH_SLOTS (4096 / sizeof(procreg_grp_slot))
#define GRP_PREFETCH_FROM (UINT32_C(1) << 15) /* slots: 1.25 MiB */

static inline __attribute__((always_inline)) size_t
foreach_slots(const procreg_grp_array *a, uint32_t len, bool prefetch,
              procreg_member_fn fn, gpointer user_data)
{
    size_t calls = 0;
    for (uint32_t i = 0; i < len; i++) {
        if (prefetch)
            __builtin_prefetch(&a->slot[i + GRP_PREFETCH_SLOTS]);
        uint64_t id = slot_id(&a->slot[i]);
        if (id == 0)
            continue;
        /* A copy: @fn may read it while the writer empties the slot. */
        procreg_member m;
        slot_read(&a->slot[i], id, &m);
        calls++;
        if (!fn(&m, user_data))
            break;
    }
    return calls;
}

size_t procreg_grp_array_foreach(const procreg_grp_array *a,
                                 procreg_member_fn fn, gpointer user_data)
{
    uint32_t len = atomic_load_explicit(&((procreg_grp_array *)a)->len,
                                        memory_order_acquire);
    return len >= GRP_PREFETCH_FROM
               ? foreach_slots(a, len, true, fn, user_data)
               : foreach_slots(a, len, false, fn, user_data);
}

/* The first member at index >= @i and < @end, or @end. */
static uint32_t next_used(const procreg_grp_array *a, uint32_t i, uint32_t end)
{
    while (i < end && slot_id(&a->slot[i]) == 0)
        i++;
    return i;
}

/* Copy member @i of @a to @out; false when it is a hole (now). */
static bool pick_copy(const procreg_grp_array *a, uint32_t i,
                      procreg_member *out)
{
    uint64_t id = slot_id(&a->slot[i]);
    if (id == 0)
        return false;
    slot_copy(&a->slot[i], id, out);
    return true;
}

bool procreg_grp_array_pick(const procreg_grp_array *a, bool round_robin,
                            uint64_t arg, procreg_member *out)
{
    uint32_t len = atomic_load_explicit(&((procreg_grp_array *)a)->len,
                                        memory_order_acquire);
    if (len == 0)
        return false;
    if (!round_robin) {
        /* Rejection sampling is uniform; holes are at most half of the
         * used slots after a compaction, so few draws miss. */
        uint64_t x = arg;
        for (int tries = 0; tries < 16; tries++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            if (pick_copy(a, (uint32_t)((x >> 32) % len), out))
                return true;
        }
        uint32_t from = (uint32_t)((x >> 32) % len);
        uint32_t j = next_used(a, from, len);
        if (j == len)
            j = next_used(a, 0, from);
        return j < len && pick_copy(a, j, out);
    }
    /* The smallest id above @arg: slots are in id order, holes aside. */
    uint32_t lo = 0, hi = len, found = len;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint32_t j = next_used(a, mid, hi);
        if (j == hi) {
            hi = mid;
            continue;
        }
        uint64_t id = slot_id(&a->slot[j]);
        if (id != 0 && id > arg) {
            found = j;
            hi = mid;
        } else {
            lo = j + 1;
        }
    }
    if (found == len)
        found = next_used(a, 0, len);
    return found < len && pick_copy(a, found, out);
}

procreg_grp_array *procreg_grp_snapshot(const procreg_grp_set *set)
{
    procreg_grp_array *a = procreg_grp_load(set);
    if (a != NULL)
        atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
    return a;
}

void procreg_grp_snapshot_release(procreg_grp_array *a)
{
    if (a != NULL)
        array_unref(a);
}
