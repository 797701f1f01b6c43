/*
 * The in-memory member sets of backends/groups-common, driven directly so
 * that the dangerous interleavings happen on purpose, not by chance:
 *  - EPOCH (ckht): a reader iterates an array while the writer, from the
 *    reader's own callback, empties slots, grows and compacts the set; the
 *    retire hook keeps everything retired until the "grace period" this
 *    test declares over, so a reader still holding an old array or member
 *    would show under ASan if anything were freed early;
 *  - EPOCH, two threads: a dispatch paused inside its callback at member
 *    k while the writer empties slots around k (k itself included),
 *    appends, compacts the array under the reader and grows it again;
 *    resumed, the reader must see each member it meets whole (the fields
 *    it joined with, its metadata still readable), in order, once, and
 *    exactly the members its array still held;
 *  - REFCOUNT (ghash): a snapshot taken before joins and leaves still
 *    shows exactly what it showed, the writer copying instead of changing
 *    it, and everything is freed once the snapshot goes;
 *  - picks (round-robin by id, random) over arrays with holes.
 */
#include "../../backends/groups-common/member-set.h"

#include <pthread.h>
#include <string.h>

typedef struct {
    void *p;
    void (*free_fn)(void *);
} retired;

static GArray *graveyard; /* retired, freed at the end of a grace period */

static void retire(void *p, void (*free_fn)(void *), size_t bytes, void *ctx)
{
    (void)bytes;
    (void)ctx;
    retired r = {p, free_fn};
    g_array_append_val(graveyard, r);
}

static void grace_period_ends(void)
{
    for (guint i = 0; i < graveyard->len; i++) {
        retired *r = &g_array_index(graveyard, retired, i);
        r->free_fn(r->p);
    }
    g_array_set_size(graveyard, 0);
}

static procreg_grp_member *join(procreg_grp_index *ix, procreg_grp_set *set,
                                uint64_t id, pid_t pid)
{
    procreg_record r = {.owner = {pid, 7}, .registered_at = 1};
    procreg_grp_member *m = procreg_grp_add(ix, set, &r, id);
    g_assert_nonnull(m);
    return m;
}

/* ---- EPOCH: writes from inside the iteration ---- */

typedef struct {
    procreg_grp_index *ix;
    procreg_grp_set *set;
    GArray *seen;        /* uint64_t ids */
    uint64_t next_id;
    int replacements;    /* set arrays replaced while iterating */
} epoch_walk;

static bool replace_as_we_go(const procreg_member *m, gpointer data)
{
    epoch_walk *w = data;
    g_array_append_val(w->seen, m->id);
    const procreg_grp_array *before = procreg_grp_load(w->set);
    /* Leave the member in hand and join two more: the set fills up, grows
     * and (as holes pile up) compacts while we hold the old array. */
    procreg_grp_member *self = procreg_grp_find(w->ix, m->id);
    g_assert_nonnull(self);
    g_assert_true(procreg_grp_remove(w->ix, w->set, self));
    join(w->ix, w->set, w->next_id++, 1);
    join(w->ix, w->set, w->next_id++, 1);
    w->replacements += procreg_grp_load(w->set) != before;
    return true;
}

static void test_epoch_writes_during_iteration(void)
{
    graveyard = g_array_new(FALSE, FALSE, sizeof(retired));
    procreg_grp_index *ix =
        procreg_grp_index_new(PROCREG_GRP_EPOCH, retire, NULL);
    procreg_grp_set set = {0};
    for (uint64_t id = 1; id <= 20; id++)
        join(ix, &set, id, 1);
    epoch_walk w = {ix, &set, g_array_new(FALSE, FALSE, sizeof(uint64_t)),
                    100, 0};
    size_t calls = procreg_grp_array_foreach(procreg_grp_load(&set),
                                             replace_as_we_go, &w);
    /* Each member there at the start, once, in order; none added. */
    g_assert_cmpuint(calls, ==, 20);
    for (guint i = 0; i < w.seen->len; i++)
        g_assert_cmpuint(g_array_index(w.seen, uint64_t, i), ==, i + 1);
    g_assert_cmpint(w.replacements, >, 0);
    g_assert_cmpuint(procreg_grp_live(&set), ==, 40);
    /* The current array holds exactly the 40 joined during the walk. */
    GArray *now = procreg_member_array_new();
    procreg_grp_set_append(&set, now);
    g_assert_cmpuint(now->len, ==, 40);
    for (guint i = 0; i < now->len; i++)
        g_assert_cmpuint(g_array_index(now, procreg_member, i).id, ==,
                         100 + i);
    g_array_unref(now);
    g_array_unref(w.seen);
    grace_period_ends();
    procreg_grp_set_destroy(&set);
    procreg_grp_index_free(ix);
    g_array_unref(graveyard);
}

/* ---- EPOCH: a reader paused at member k while the writer works ---- */

#define PAUSE_MEMBERS 64u
#define PAUSE_AT 20u

/* What member @id joined with: owner, join time, metadata {"id": id}. */
static procreg_grp_member *join_marked(procreg_grp_index *ix,
                                       procreg_grp_set *set, uint64_t id)
{
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "id", "t", (guint64)id);
    procreg_record r = {.owner = {(pid_t)(1000 + id), id * 3},
                        .registered_at = (int64_t)id * 10,
                        .metadata = g_variant_ref_sink(g_variant_dict_end(&d))};
    procreg_grp_member *m = procreg_grp_add(ix, set, &r, id);
    g_variant_unref(r.metadata); /* the set holds the only reference */
    g_assert_nonnull(m);
    return m;
}

/* Whether @m is member @m->id whole: no field of another member or of a
 * freed one (the metadata is read: ASan, and MALLOC_PERTURB_ otherwise,
 * show one freed too early). */
static bool member_whole(const procreg_member *m)
{
    guint64 marked = 0;
    return m->ns == NULL && m->group == NULL &&
           m->owner.pid == (pid_t)(1000 + m->id) &&
           m->owner.start_time == m->id * 3 &&
           m->joined_at == (int64_t)m->id * 10 && m->metadata != NULL &&
           g_variant_lookup(m->metadata, "id", "t", &marked) &&
           marked == m->id;
}

typedef struct {
    pthread_mutex_t lock; /* pthread: ThreadSanitizer sees it */
    pthread_cond_t cond;
    bool paused, resume, done;
    const procreg_grp_array *array; /* what the reader iterates */
    GArray *seen;                   /* uint64_t ids */
    bool all_whole;
} paused_walk;

static bool pause_at_k(const procreg_member *m, gpointer data)
{
    paused_walk *w = data;
    w->all_whole = w->all_whole && member_whole(m);
    g_array_append_val(w->seen, m->id);
    if (m->id == PAUSE_AT) {
        pthread_mutex_lock(&w->lock);
        w->paused = true;
        pthread_cond_signal(&w->cond);
        while (!w->resume)
            pthread_cond_wait(&w->cond, &w->lock);
        pthread_mutex_unlock(&w->lock);
        /* The member in hand left meanwhile: still whole. */
        w->all_whole = w->all_whole && member_whole(m);
    }
    return true;
}

static gpointer paused_reader(gpointer data)
{
    paused_walk *w = data;
    size_t calls = procreg_grp_array_foreach(w->array, pause_at_k, w);
    pthread_mutex_lock(&w->lock);
    w->done = true; /* also when it never paused: the test fails, not hangs */
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return GSIZE_TO_POINTER(calls);
}

static void test_epoch_reader_paused_at_k(void)
{
    graveyard = g_array_new(FALSE, FALSE, sizeof(retired));
    procreg_grp_index *ix =
        procreg_grp_index_new(PROCREG_GRP_EPOCH, retire, NULL);
    procreg_grp_set set = {0};
    procreg_grp_member *ms[PAUSE_MEMBERS + 1] = {0};
    for (uint64_t id = 1; id <= PAUSE_MEMBERS; id++)
        ms[id] = join_marked(ix, &set, id);
    paused_walk w = {.array = procreg_grp_load(&set),
                     .seen = g_array_new(FALSE, FALSE, sizeof(uint64_t)),
                     .all_whole = true};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    GThread *reader = g_thread_new("paused-reader", paused_reader, &w);
    pthread_mutex_lock(&w.lock);
    while (!w.paused && !w.done)
        pthread_cond_wait(&w.cond, &w.lock);
    bool paused = w.paused;
    pthread_mutex_unlock(&w.lock);
    g_assert_true(paused);
    /* The reader's array as it stands: R1 says how it may change. */
    uint32_t len = atomic_load(&w.array->len);
    procreg_grp_slot *before = g_memdup2(w.array->slot, len * sizeof *before);

    /* In place, in the reader's array: k, the one before it, the two
     * after it leave; three join past the length the reader read. */
    bool gone_in_its_array[PAUSE_MEMBERS + 1] = {false};
    const uint64_t around_k[] = {PAUSE_AT - 1, PAUSE_AT, PAUSE_AT + 1,
                                 PAUSE_AT + 2};
    for (size_t i = 0; i < G_N_ELEMENTS(around_k); i++) {
        g_assert_true(procreg_grp_remove(ix, &set, ms[around_k[i]]));
        gone_in_its_array[around_k[i]] = true;
    }
    for (uint64_t id = 101; id <= 103; id++)
        join_marked(ix, &set, id);
    g_assert_true(procreg_grp_load(&set) == w.array);
    /* Members after k leave until the array is compacted: each leave up
     * to the one that compacts empties a slot of the reader's array. */
    uint64_t next = PAUSE_AT + 3;
    while (procreg_grp_load(&set) == w.array) {
        g_assert_cmpuint(next, <=, PAUSE_MEMBERS);
        g_assert_true(procreg_grp_remove(ix, &set, ms[next]));
        gone_in_its_array[next++] = true;
    }
    /* In the new array only: more leave (the reader's array still holds
     * them, whole), and joins grow it past another rebuild. */
    g_assert_cmpuint(next + 5, <=, PAUSE_MEMBERS);
    for (uint64_t id = next; id < next + 5; id++)
        g_assert_true(procreg_grp_remove(ix, &set, ms[id]));
    const procreg_grp_array *compacted = procreg_grp_load(&set);
    for (uint64_t id = 200; id < 300; id++)
        join_marked(ix, &set, id);
    g_assert_true(procreg_grp_load(&set) != compacted);
    /* R1: no slot the reader can reach was written but for a leave's 0
     * in its id (the array is retired, not freed: the reader holds it). */
    g_assert_cmpuint(atomic_load(&w.array->len), >=, len);
    for (uint32_t i = 0; i < len; i++) {
        const procreg_grp_slot *now = &w.array->slot[i];
        uint64_t id = atomic_load(&now->id), was = atomic_load(&before[i].id);
        g_assert_true(id == was || id == 0);
        g_assert_cmpint(now->joined_at, ==, before[i].joined_at);
        g_assert_cmpint(now->owner.pid, ==, before[i].owner.pid);
        g_assert_cmpuint(now->owner.start_time, ==, before[i].owner.start_time);
        g_assert_true(now->metadata == before[i].metadata);
        g_assert_true((id == 0) == gone_in_its_array[was]);
    }
    g_free(before);

    pthread_mutex_lock(&w.lock);
    w.resume = true;
    pthread_cond_signal(&w.cond);
    pthread_mutex_unlock(&w.lock);
    size_t calls = GPOINTER_TO_SIZE(g_thread_join(reader));

    /* 1..k, then whatever the reader's array still held, in order, once:
     * the members that left after the compaction included. */
    g_assert_true(w.all_whole);
    guint at = 0;
    for (uint64_t id = 1; id <= PAUSE_MEMBERS; id++) {
        if (id > PAUSE_AT && gone_in_its_array[id])
            continue;
        g_assert_cmpuint(at, <, w.seen->len);
        g_assert_cmpuint(g_array_index(w.seen, uint64_t, at), ==, id);
        at++;
    }
    g_assert_cmpuint(at, ==, w.seen->len);
    g_assert_cmpuint(calls, ==, w.seen->len);
    g_assert_true(g_array_index(w.seen, uint64_t, at - 1) == PAUSE_MEMBERS);

    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
    g_array_unref(w.seen);
    grace_period_ends();
    procreg_grp_set_destroy(&set);
    procreg_grp_index_free(ix);
    g_array_unref(graveyard);
}

/* ---- REFCOUNT: a snapshot is never changed under its holder ---- */

static bool collect_id(const procreg_member *m, gpointer data)
{
    g_array_append_val((GArray *)data, m->id);
    return true;
}

static void test_refcount_snapshot(void)
{
    procreg_grp_index *ix =
        procreg_grp_index_new(PROCREG_GRP_REFCOUNT, NULL, NULL);
    procreg_grp_set set = {0};
    procreg_grp_member *ms[10];
    for (int i = 0; i < 10; i++)
        ms[i] = join(ix, &set, (uint64_t)i + 1, 1);
    procreg_grp_array *snap = procreg_grp_snapshot(&set);
    /* The writer changes the group in every way while the snapshot is
     * held: the first write copies, so the snapshot's array is another. */
    g_assert_true(procreg_grp_remove(ix, &set, ms[0]));
    g_assert_true(procreg_grp_load(&set) != snap);
    for (int i = 1; i < 9; i++)
        g_assert_true(procreg_grp_remove(ix, &set, ms[i]));
    for (uint64_t id = 50; id < 80; id++)
        join(ix, &set, id, 2);
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    g_assert_cmpuint(procreg_grp_array_foreach(snap, collect_id, ids), ==, 10);
    for (guint i = 0; i < ids->len; i++)
        g_assert_cmpuint(g_array_index(ids, uint64_t, i), ==, i + 1);
    /* Released, the snapshot frees the members only it still held (ASan
     * checks that nothing is freed twice, or read after). */
    procreg_grp_snapshot_release(snap);
    g_array_set_size(ids, 0);
    g_assert_cmpuint(procreg_grp_array_foreach(procreg_grp_load(&set),
                                               collect_id, ids),
                     ==, 31);
    g_array_unref(ids);
    /* The owners' chains followed every change. */
    size_t n = 0;
    for (procreg_grp_member *m =
             procreg_grp_owner_first(ix, &set, &(procreg_owner){2, 7});
         m != NULL; m = m->next)
        n++;
    g_assert_cmpuint(n, ==, 30);
    g_assert_nonnull(procreg_grp_owner_first(ix, &set,
                                             &(procreg_owner){1, 7}));
    g_assert_null(procreg_grp_owner_first(ix, &set, &(procreg_owner){1, 8}));
    procreg_grp_set_destroy(&set);
    procreg_grp_index_free(ix);
}

/* ---- picks over holes ---- */

static void test_pick_with_holes(void)
{
    procreg_grp_index *ix =
        procreg_grp_index_new(PROCREG_GRP_REFCOUNT, NULL, NULL);
    procreg_grp_set set = {0};
    procreg_grp_member *ms[12];
    for (int i = 0; i < 12; i++)
        ms[i] = join(ix, &set, (uint64_t)(i + 1) * 10, 1);
    /* Holes at the start, in the middle, at the end (not enough of them
     * for a compaction: the picks must step over them). */
    int gone[] = {0, 1, 5, 11};
    for (size_t i = 0; i < G_N_ELEMENTS(gone); i++)
        g_assert_true(procreg_grp_remove(ix, &set, ms[gone[i]]));
    const procreg_grp_array *a = procreg_grp_load(&set);
    const uint64_t live[] = {30, 40, 50, 70, 80, 90, 100, 110};
    uint64_t cursor = 0;
    procreg_member m;
    for (int round = 0; round < 20; round++) {
        g_assert_true(procreg_grp_array_pick(a, true, cursor, &m));
        g_assert_cmpuint(m.id, ==, live[round % 8]);
        cursor = m.id;
    }
    /* Between ids, and past the last. */
    g_assert_true(procreg_grp_array_pick(a, true, 55, &m));
    g_assert_cmpuint(m.id, ==, 70);
    g_assert_true(procreg_grp_array_pick(a, true, 110, &m));
    g_assert_cmpuint(m.id, ==, 30);
    int hits[8] = {0};
    for (uint64_t r = 1; r <= 800; r++) {
        g_assert_true(
            procreg_grp_array_pick(a, false, r * 0x9e3779b97f4a7c15ull, &m));
        int at = -1;
        for (int j = 0; j < 8; j++)
            at = m.id == live[j] ? j : at;
        g_assert_cmpint(at, >=, 0);
        hits[at]++;
    }
    for (int j = 0; j < 8; j++)
        g_assert_cmpint(hits[j], >, 40); /* 100 each, give or take */
    procreg_grp_set_destroy(&set);
    procreg_grp_index_free(ix);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/groups/member-set/epoch-writes-during-iteration",
                    test_epoch_writes_during_iteration);
    g_test_add_func("/groups/member-set/epoch-reader-paused-at-k",
                    test_epoch_reader_paused_at_k);
    g_test_add_func("/groups/member-set/refcount-snapshot",
                    test_refcount_snapshot);
    g_test_add_func("/groups/member-set/pick-with-holes", test_pick_with_holes);
    return g_test_run();
}
