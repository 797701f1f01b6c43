/*
 * ckht's reclamation, forced deterministically: a reader paused inside
 * ck_hs_get(), in the middle of its probe (in the compare callback, on
 * the entry it is about to return), while the writer removes that entry
 * and grows the table past the map the reader is probing.  Neither the
 * entry nor the map may be freed before the reader leaves its read
 * section (the invariant at the top of backends/ckht/table.c).
 *
 * The pause is a test-only compare callback swapped into the instance's
 * ck_hs: it calls the real one and, on the reader thread's first match,
 * waits for the writer.  Were the entry or the old map freed early, the
 * reader would read freed memory: ASan reports it; otherwise
 * MALLOC_PERTURB_ (set for this suite) overwrites it, so the lookup
 * returns the wrong owner or, with the map's generation counter
 * scrambled, retries on the new map and misses.
 *
 * The same pause, then the rebuild that clears tombstones: of a table at
 * most a quarter full it replaces the whole ck_hs (self->hs) the reader
 * loaded, and destroys the old one and its map, which must wait for the
 * reader too; of a fuller one it replaces, in place (ck_hs_rebuild()),
 * the map the reader is probing, which must wait likewise.
 */
#include <procreg/backend.h>

#include "internal.h"
#include "ckht/ckht-internal.h"

extern const procreg_backend_ops procreg_ckht_backend_ops;

/* The pause: the reader thread's compare stops on its first match. */
typedef struct {
    GMutex lock;
    GCond cond;
    bool paused;
    bool resume;
} pause_point;

static pause_point gate;
static _Thread_local bool pause_on_match;
static ck_hs_compare_cb_t *real_compare;

static bool pausing_compare(const void *stored, const void *key)
{
    bool match = real_compare(stored, key);

    if (match && pause_on_match) {
        pause_on_match = false;
        g_mutex_lock(&gate.lock);
        gate.paused = true;
        g_cond_broadcast(&gate.cond);
        while (!gate.resume)
            g_cond_wait(&gate.cond, &gate.lock);
        g_mutex_unlock(&gate.lock);
    }
    return match;
}

typedef struct {
    void *state;
    const procreg_key *key;
    procreg_owner owner;
    int rc;
} lookup_call;

static gpointer reader(gpointer data)
{
    lookup_call *call = data;

    pause_on_match = true;
    call->rc = procreg_ckht_backend_ops.lookup(call->state, call->key,
                                               &call->owner);
    return NULL;
}

static guint64 stat_of(void *state, const char *name)
{
    GVariantDict d;
    GVariant *stats;
    guint64 value = 0;

    g_variant_dict_init(&d, NULL);
    procreg_ckht_backend_ops.stats(state, &d);
    stats = g_variant_ref_sink(g_variant_dict_end(&d));
    g_assert_true(g_variant_lookup(stats, name, "t", &value));
    g_variant_unref(stats);
    return value;
}

static procreg_key *key_of(const char *name)
{
    procreg_key *key = NULL;

    g_assert_cmpint(procreg_key_new("reclaim", name, &key, NULL), ==, 0);
    return key;
}

/* Pause a reader on the entry of @target in @state; the reader's call. */
static GThread *pause_reader(void *state, const procreg_key *target,
                             lookup_call *call)
{
    ckht *self = state;
    GThread *thread;

    gate.paused = gate.resume = false;
    /* Swapped before the reader starts (thread creation orders it). */
    real_compare = self->hs->compare;
    self->hs->compare = pausing_compare;
    call->state = state;
    call->key = target;
    thread = g_thread_new("paused-reader", reader, call);
    g_mutex_lock(&gate.lock);
    while (!gate.paused)
        g_cond_wait(&gate.cond, &gate.lock);
    g_mutex_unlock(&gate.lock);
    return thread;
}

static void resume_reader(GThread *thread)
{
    g_mutex_lock(&gate.lock);
    gate.resume = true;
    g_cond_broadcast(&gate.cond);
    g_mutex_unlock(&gate.lock);
    g_thread_join(thread);
}

/* A ckht instance from @spec_text holding @target, registered by this
 * process (@record); @other is an owner for the writer's other keys. */
static void *open_with_target(const char *spec_text,
                              const procreg_key *target,
                              procreg_record *record, procreg_record *other)
{
    procreg_spec *spec = NULL;
    void *state;

    g_assert_cmpint(procreg_spec_parse(spec_text, &spec, NULL), ==, 0);
    g_assert_cmpint(procreg_ckht_backend_ops.init(spec, NULL, &state, NULL),
                    ==, 0);
    procreg_spec_free(spec);
    procreg_owner_self(&record->owner);
    other->owner = record->owner;
    other->owner.pid = record->owner.pid + 1;
    g_assert_cmpint(procreg_ckht_backend_ops.register_entry(
                        state, target, record, NULL, NULL), ==, 0);
    return state;
}

/* Once no reader is inside, everything retired goes. */
static void drain_epoch(void *state)
{
    for (int i = 0; i < 1000 && stat_of(state, "epoch_pending") > 0; i++)
        g_usleep(1000);
    g_assert_cmpuint(stat_of(state, "epoch_pending"), ==, 0);
}

static void test_paused_reader(void)
{
    enum { GROW_KEYS = 1000 };
    procreg_record record = {0};
    procreg_record other = {0};
    lookup_call call = {0};
    procreg_key *target = key_of("target");
    procreg_key *key;
    guint64 capacity_before;
    GThread *thread;
    void *state;
    char name[32];
    int i;

    state = open_with_target("ckht:initial_size=8", target, &record, &other);
    capacity_before = stat_of(state, "table_capacity");
    thread = pause_reader(state, target, &call);

    /* The reader holds the entry and the map.  Remove the one, outgrow
     * the other, and let the epoch reclaim all it can. */
    g_assert_cmpint(procreg_ckht_backend_ops.unregister(state, target, 0, NULL,
                                                        NULL), ==, 0);
    for (i = 0; i < GROW_KEYS; i++) {
        g_snprintf(name, sizeof name, "grow-%d", i);
        key = key_of(name);
        g_assert_cmpint(procreg_ckht_backend_ops.register_entry(
                            state, key, &other, NULL, NULL), ==, 0);
        procreg_key_unref(key);
    }
    g_assert_cmpuint(stat_of(state, "table_capacity"), >=,
                     8 * capacity_before);
    for (i = 0; i < 100; i++)
        (void)stat_of(state, "epoch_pending"); /* each one flushes, polls */
    /* At least the entry and the map the reader probes still wait. */
    g_assert_cmpuint(stat_of(state, "epoch_pending"), >=, 2);

    resume_reader(thread);

    /* The lookup began before the removal and ends on what it found. */
    g_assert_cmpint(call.rc, ==, 0);
    g_assert_cmpint(call.owner.pid, ==, record.owner.pid);
    g_assert_cmpuint(call.owner.start_time, ==, record.owner.start_time);

    /* Once the reader left, everything goes. */
    drain_epoch(state);

    procreg_ckht_backend_ops.destroy(state);
    procreg_key_unref(target);
}

static void test_paused_reader_rebuild(void)
{
    enum { MAX_CHURN = 100000 };
    procreg_record record = {0};
    procreg_record other = {0};
    lookup_call call = {0};
    procreg_key *target = key_of("target");
    procreg_key *key;
    guint64 rebuilds;
    GThread *thread;
    void *state;
    char name[32];
    int i;

    /* A map of 256 slots: past malloc's per-thread cache, whose frees
     * MALLOC_PERTURB_ does not scramble, so a map freed early is garbage
     * to the reader (SIGSEGV) even without ASan. */
    state = open_with_target("ckht:initial_size=128", target, &record,
                             &other);
    rebuilds = stat_of(state, "table_rebuilds");
    thread = pause_reader(state, target, &call);

    /* Fresh names come and go until the removals rebuild the table: a new
     * ck_hs replaces the one the reader is inside. */
    for (i = 0; i < MAX_CHURN && stat_of(state, "table_rebuilds") == rebuilds;
         i++) {
        g_snprintf(name, sizeof name, "churn-%d", i);
        key = key_of(name);
        g_assert_cmpint(procreg_ckht_backend_ops.register_entry(
                            state, key, &other, NULL, NULL), ==, 0);
        g_assert_cmpint(procreg_ckht_backend_ops.unregister(state, key, 0,
                                                            NULL, NULL),
                        ==, 0);
        procreg_key_unref(key);
    }
    g_assert_cmpuint(stat_of(state, "table_rebuilds"), >, rebuilds);
    for (i = 0; i < 100; i++)
        (void)stat_of(state, "epoch_pending"); /* each one flushes, polls */
    /* The old ck_hs and its map still wait, with the churned entries. */
    g_assert_cmpuint(stat_of(state, "epoch_pending"), >=, 2);

    resume_reader(thread);
    g_assert_cmpint(call.rc, ==, 0);
    g_assert_cmpint(call.owner.pid, ==, record.owner.pid);
    g_assert_cmpuint(call.owner.start_time, ==, record.owner.start_time);

    /* The rebuilt table still holds the target. */
    g_assert_cmpint(procreg_ckht_backend_ops.lookup(state, target,
                                                    &call.owner), ==, 0);
    drain_epoch(state);

    procreg_ckht_backend_ops.destroy(state);
    procreg_key_unref(target);
}

/* The rebuild of a table more than a quarter full keeps its ck_hs and
 * its size, and replaces its map in place (ck_hs_rebuild()), while a
 * reader probes that map. */
static void test_paused_reader_rebuild_in_place(void)
{
    enum { MAX_CHURN = 100000, FILL = 70 };
    procreg_record record = {0};
    procreg_record other = {0};
    lookup_call call = {0};
    procreg_key *target = key_of("target");
    procreg_key *key;
    guint64 rebuilds, capacity;
    ck_hs_t *hs;
    GThread *thread;
    void *state;
    char name[32];
    int i;

    /* 256 slots (a map past malloc's per-thread cache, as above) holding
     * 70 entries when it rebuilds: 4 times them is more than the slots,
     * so the rebuild keeps the size. */
    state = open_with_target("ckht:initial_size=128", target, &record,
                             &other);
    for (i = 0; i < FILL; i++) {
        g_snprintf(name, sizeof name, "fill-%d", i);
        key = key_of(name);
        g_assert_cmpint(procreg_ckht_backend_ops.register_entry(
                            state, key, &other, NULL, NULL), ==, 0);
        procreg_key_unref(key);
    }
    capacity = stat_of(state, "table_capacity");
    g_assert_cmpuint(capacity, ==, 256);
    hs = ((ckht *)state)->hs;
    rebuilds = stat_of(state, "table_rebuilds");
    thread = pause_reader(state, target, &call);

    /* The target goes too: a reader that retried on the new map (when the
     * generation it read from the old one changed: freed early) would
     * miss it. */
    g_assert_cmpint(procreg_ckht_backend_ops.unregister(state, target, 0, NULL,
                                                        NULL), ==, 0);
    for (i = 0; i < MAX_CHURN && stat_of(state, "table_rebuilds") == rebuilds;
         i++) {
        g_snprintf(name, sizeof name, "churn-%d", i);
        key = key_of(name);
        g_assert_cmpint(procreg_ckht_backend_ops.register_entry(
                            state, key, &other, NULL, NULL), ==, 0);
        g_assert_cmpint(procreg_ckht_backend_ops.unregister(state, key, 0,
                                                            NULL, NULL),
                        ==, 0);
        procreg_key_unref(key);
    }
    g_assert_cmpuint(stat_of(state, "table_rebuilds"), >, rebuilds);
    /* In place: the same ck_hs, as many slots. */
    g_assert_true(((ckht *)state)->hs == hs);
    g_assert_cmpuint(stat_of(state, "table_capacity"), ==, capacity);
    for (i = 0; i < 100; i++)
        (void)stat_of(state, "epoch_pending"); /* each one flushes, polls */
    /* The old map still waits, with the churned entries. */
    g_assert_cmpuint(stat_of(state, "epoch_pending"), >=, 2);

    resume_reader(thread);
    g_assert_cmpint(call.rc, ==, 0);
    g_assert_cmpint(call.owner.pid, ==, record.owner.pid);
    g_assert_cmpuint(call.owner.start_time, ==, record.owner.start_time);

    /* The lookup began before the removal and ends on what it found; the
     * rebuilt map holds every entry left. */
    g_assert_cmpint(procreg_ckht_backend_ops.lookup(state, target,
                                                    &call.owner), ==,
                    PROCREG_ENOTFOUND);
    for (i = 0; i < FILL; i++) {
        g_snprintf(name, sizeof name, "fill-%d", i);
        key = key_of(name);
        g_assert_cmpint(procreg_ckht_backend_ops.lookup(state, key,
                                                        &call.owner), ==, 0);
        procreg_key_unref(key);
    }
    drain_epoch(state);

    procreg_ckht_backend_ops.destroy(state);
    procreg_key_unref(target);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ckht/reclaim/paused-reader", test_paused_reader);
    g_test_add_func("/ckht/reclaim/paused-reader-rebuild",
                    test_paused_reader_rebuild);
    g_test_add_func("/ckht/reclaim/paused-reader-rebuild-in-place",
                    test_paused_reader_rebuild_in_place);
    return g_test_run();
}
