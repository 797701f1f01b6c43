/*
 * Each thread's cached read transaction and the map lock
 * (backends/lmdb/readers.c), with the interleavings forced through the
 * test hooks of a build of the backend compiled with
 * PROCREG_LMDB_TEST_HOOKS:
 *   - a lookup holds its transaction open while another thread grows the
 *     map: the growth waits for the lookup, which reads its entry intact;
 *   - the same while another process has grown the file past this
 *     process's map (MDB_MAP_RESIZED): the adoption waits likewise;
 *   - a thread that exits with a cached transaction gives its reader
 *     slot back; a thread that outlives its registry's close frees only
 *     its own memory (valgrind, ASan: no leak, no use after free);
 *   - reader slots run out while other threads hold idle cached
 *     transactions: those are released and the read succeeds.
 */
#include "lmdb-test-util.h"

#include "lmdb-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* How long a step that must NOT happen is given to happen anyway. */
#define MUST_NOT_HAPPEN_MS 200

/* pthread's, not GMutex: ThreadSanitizer cannot see glib 2.74's. */
static struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    GThread *hold; /* the thread whose next read is held */
    bool held, release;
    int wanted, taken, released; /* map lock: asked for, obtained, let go */
    int waits; /* reads that waited for a reader slot */
    lmdb_env *env;
} hk;

void procreg_lmdb_hook_read_begun(lmdb_env *env)
{
    pthread_mutex_lock(&hk.m);
    hk.env = env;
    if (hk.hold == g_thread_self()) {
        hk.hold = NULL;
        hk.held = true;
        pthread_cond_broadcast(&hk.c);
        while (!hk.release)
            pthread_cond_wait(&hk.c, &hk.m);
    }
    pthread_mutex_unlock(&hk.m);
}

static void hook_count(int *counter)
{
    pthread_mutex_lock(&hk.m);
    (*counter)++;
    pthread_cond_broadcast(&hk.c);
    pthread_mutex_unlock(&hk.m);
}

void procreg_lmdb_hook_map_lock_wanted(lmdb_env *env)
{
    hook_count(&hk.wanted);
}

void procreg_lmdb_hook_map_lock_taken(lmdb_env *env)
{
    hook_count(&hk.taken);
}

void procreg_lmdb_hook_map_lock_released(lmdb_env *env)
{
    hook_count(&hk.released);
}

void procreg_lmdb_hook_readers_wait(lmdb_env *env)
{
    hook_count(&hk.waits);
}

/* The env the last read began on (any thread's). */
static lmdb_env *hooked_env(void)
{
    pthread_mutex_lock(&hk.m);
    lmdb_env *env = hk.env;
    pthread_mutex_unlock(&hk.m);
    return env;
}

static void hooks_reset(void)
{
    pthread_mutex_lock(&hk.m);
    hk.hold = NULL;
    hk.held = hk.release = false;
    hk.wanted = hk.taken = hk.released = hk.waits = 0;
    hk.env = NULL;
    pthread_mutex_unlock(&hk.m);
}

/* Wait until *@field >= @n; false after @ms milliseconds (-1: forever). */
static bool wait_for(int *field, int n, int ms)
{
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += ms / 1000;
    end.tv_nsec += (long)(ms % 1000) * 1000000;
    if (end.tv_nsec >= 1000000000) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&hk.m);
    int rc = 0;
    while (*field < n && rc == 0)
        rc = ms < 0 ? pthread_cond_wait(&hk.c, &hk.m)
                    : pthread_cond_timedwait(&hk.c, &hk.m, &end);
    bool ok = *field >= n;
    pthread_mutex_unlock(&hk.m);
    return ok;
}

/* Wait for the held read; count the map lock from then on (opening
 * takes it too, to set the durability). */
static void wait_held(void)
{
    pthread_mutex_lock(&hk.m);
    while (!hk.held)
        pthread_cond_wait(&hk.c, &hk.m);
    hk.wanted = hk.taken = hk.released = 0;
    pthread_mutex_unlock(&hk.m);
}

static void release_held(void)
{
    pthread_mutex_lock(&hk.m);
    hk.release = true;
    pthread_cond_broadcast(&hk.c);
    pthread_mutex_unlock(&hk.m);
}

/* Reader slots of the file with a process in them (reset transactions
 * included): mdb_reader_list() prints a header, then "pid thread txnid"
 * per slot, the thread that took the slot in hex. */
typedef struct {
    int slots;
    char tid[32]; /* count only this thread's, when set */
} slot_count;

static int count_line(const char *msg, void *ctx)
{
    slot_count *c = ctx;
    unsigned long pid;
    char tid[32];
    if (sscanf(msg, "%lu %31s", &pid, tid) == 2 &&
        (c->tid[0] == 0 || strcmp(tid, c->tid) == 0))
        c->slots++;
    return 0;
}

static int slots_in_use(lmdb_env *env, pthread_t thread)
{
    slot_count c = {0, ""};
    if (thread != 0)
        g_snprintf(c.tid, sizeof c.tid, "%zx", (size_t)thread);
    mdb_reader_list(env->mdb, count_line, &c);
    return c.slots;
}

typedef lt_fixture Fixture;

/* @data: options after map_size (",max_readers=1"), or NULL. */
static void fx_setup(Fixture *f, gconstpointer data)
{
    char *options = g_strconcat(",map_size=256KiB", data, NULL);
    lt_fixture_init(f, options);
    g_free(options);
    hooks_reset();
}

static GVariant *blob_meta(int i, size_t bytes)
{
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "i", "i", i);
    char *blob = g_malloc0(bytes);
    memset(blob, 'x', bytes - 1);
    g_variant_dict_insert(&d, "blob", "s", blob);
    g_free(blob);
    return g_variant_dict_end(&d);
}

/* A lookup of p/x whose transaction the hooks hold open. */
typedef struct {
    procreg *reg;
    int rc;
    procreg_owner owner;
} held_lookup;

static gpointer held_lookup_main(gpointer p)
{
    held_lookup *h = p;
    pthread_mutex_lock(&hk.m);
    hk.hold = g_thread_self();
    pthread_mutex_unlock(&hk.m);
    h->rc = procreg_lookup(h->reg, "p", "x", &h->owner, NULL);
    return NULL;
}

/* The same lookup, not held. */
static gpointer second_lookup_main(gpointer p)
{
    held_lookup *h = p;
    h->rc = procreg_lookup(h->reg, "p", "x", &h->owner, NULL);
    return NULL;
}

typedef struct {
    procreg *reg;
    const procreg_owner *owner; /* NULL: this process */
    int failures;
} grower;

/* 64 x 8 KiB: the 256 KiB map must grow. */
static gpointer grower_main(gpointer p)
{
    grower *g = p;
    for (int i = 0; i < 64; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "b%02d", i);
        if (procreg_register(g->reg, "big", name, g->owner,
                             blob_meta(i, 8192), NULL, NULL) != 0)
            g->failures++;
    }
    return NULL;
}

/* The lookup has its transaction open, the remapper has asked for the
 * map lock: it must not get it until the lookup ends. */
static void check_remap_waits_for(held_lookup *h, GThread *reader)
{
    g_assert_true(wait_for(&hk.wanted, 1, -1));
    g_assert_false(wait_for(&hk.taken, 1, MUST_NOT_HAPPEN_MS));
    release_held();
    g_thread_join(reader);
    g_assert_cmpint(h->rc, ==, 0);
    procreg_owner self;
    procreg_owner_self(&self);
    g_assert_cmpint(h->owner.pid, ==, self.pid);
    g_assert_true(wait_for(&hk.taken, 1, -1));
}

static void test_grow_during_lookup(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(procreg_register(reg, "p", "x", NULL, NULL, NULL, NULL),
                    ==, 0);
    held_lookup h = {reg, -1, {0}};
    GThread *reader = g_thread_new("held", held_lookup_main, &h);
    wait_held();
    grower g = {reg, NULL, 0};
    GThread *writer = g_thread_new("grow", grower_main, &g);
    check_remap_waits_for(&h, reader);
    g_thread_join(writer);
    g_assert_cmpint(g.failures, ==, 0);
    g_assert_cmpint(lt_stat(reg, "map_grows"), >=, 1);
    procreg_close(reg);
}

/* Entries of the parent, so they outlive this process. */
static int grow_child_main(const char *spec, const char *parent_pid)
{
    procreg *c = NULL;
    procreg_owner parent;
    if (procreg_open(spec, &c, NULL) != 0 ||
        procreg_owner_from_pid(atoi(parent_pid), &parent, NULL) != 0)
        return 1;
    grower g = {c, &parent, 0};
    grower_main(&g);
    procreg_close(c);
    return g.failures == 0 ? 0 : 1;
}

static gpointer plain_lookup_main(gpointer p)
{
    procreg_owner o;
    return GINT_TO_POINTER(procreg_lookup(p, "p", "x", &o, NULL));
}

static void test_adopt_during_lookup(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(procreg_register(reg, "p", "x", NULL, NULL, NULL, NULL),
                    ==, 0);
    held_lookup h = {reg, -1, {0}};
    GThread *reader = g_thread_new("held", held_lookup_main, &h);
    wait_held();

    char *self = g_file_read_link("/proc/self/exe", NULL);
    char *pid = g_strdup_printf("%d", (int)getpid());
    char *argv[] = {self, (char *)"--grow-child", f->spec, pid, NULL};
    int status = 0;
    GError *err = NULL;
    g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                               NULL, NULL, &status, &err));
    g_assert_no_error(err);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    g_free(self);
    g_free(pid);

    /* A new read finds the file past this process's map. */
    GThread *other = g_thread_new("other", plain_lookup_main, reg);
    check_remap_waits_for(&h, reader);
    g_assert_cmpint(GPOINTER_TO_INT(g_thread_join(other)), ==, 0);
    /* The adopter may be the watcher thread, not @other: wait until it
     * is done (it counts the adoption before it lets go). */
    g_assert_true(wait_for(&hk.released, 1, -1));
    g_assert_cmpint(lt_stat(reg, "map_adopted"), >=, 1);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, "big", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 64);
    procreg_close(reg);
}

/* A thread that reads once, then waits for @go before it exits. */
typedef struct {
    procreg *reg;
    int rc;
    pthread_t self;
    pthread_mutex_t m;
    pthread_cond_t c;
    bool read_done, go;
} lingering;

static gpointer lingering_main(gpointer p)
{
    lingering *l = p;
    procreg_owner o;
    int rc = procreg_lookup(l->reg, "p", "x", &o, NULL);
    pthread_mutex_lock(&l->m);
    l->rc = rc;
    l->self = pthread_self();
    l->read_done = true;
    pthread_cond_broadcast(&l->c);
    while (!l->go)
        pthread_cond_wait(&l->c, &l->m);
    pthread_mutex_unlock(&l->m);
    return NULL;
}

static GThread *lingering_start(lingering *l, procreg *reg)
{
    memset(l, 0, sizeof *l);
    l->reg = reg;
    pthread_mutex_init(&l->m, NULL);
    pthread_cond_init(&l->c, NULL);
    GThread *t = g_thread_new("linger", lingering_main, l);
    pthread_mutex_lock(&l->m);
    while (!l->read_done)
        pthread_cond_wait(&l->c, &l->m);
    pthread_mutex_unlock(&l->m);
    g_assert_cmpint(l->rc, ==, 0);
    return t;
}

static void lingering_end(lingering *l, GThread *t)
{
    pthread_mutex_lock(&l->m);
    l->go = true;
    pthread_cond_broadcast(&l->c);
    pthread_mutex_unlock(&l->m);
    g_thread_join(t);
    pthread_mutex_destroy(&l->m);
    pthread_cond_destroy(&l->c);
}

static void test_thread_exit(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    procreg_owner o;
    g_assert_cmpint(procreg_register(reg, "p", "x", NULL, NULL, NULL, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_lookup(reg, "p", "x", &o, NULL), ==, 0);
    lmdb_env *env = hooked_env();
    g_assert_nonnull(env);
    g_assert_cmpint(slots_in_use(env, pthread_self()), ==, 1);

    lingering l;
    GThread *t = lingering_start(&l, reg);
    /* Its transaction is reset, not ended: it keeps its slot. */
    pthread_t gone = l.self;
    g_assert_cmpint(slots_in_use(env, gone), ==, 1);
    lingering_end(&l, t);
    /* (A new thread could get the same id; none starts meanwhile but
     * the backend's own, which began before.) */
    g_assert_cmpint(slots_in_use(env, gone), ==, 0);

    /* This thread keeps its one cached transaction. */
    g_assert_cmpint(procreg_lookup(reg, "p", "x", &o, NULL), ==, 0);
    g_assert_cmpint(slots_in_use(env, pthread_self()), ==, 1);
    procreg_close(reg);
}

static void test_thread_outlives_close(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(procreg_register(reg, "p", "x", NULL, NULL, NULL, NULL),
                    ==, 0);
    lingering l;
    GThread *t = lingering_start(&l, reg);
    /* The env goes with its last handle while the thread still caches a
     * transaction of it. */
    procreg_close(reg);

    /* A new env, perhaps at the old one's address: the thread's old slot
     * must not be taken for it. */
    reg = lt_open(f->spec);
    l.reg = reg;
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "p", "x", &o, NULL), ==, 0);
    lmdb_env *env = hooked_env();
    /* The close aborted its transaction: no slot in the new env. */
    g_assert_cmpint(slots_in_use(env, l.self), ==, 0);
    lingering_end(&l, t);

    t = lingering_start(&l, reg);
    g_assert_cmpint(slots_in_use(env, l.self), ==, 1);
    lingering_end(&l, t);
    g_assert_cmpint(slots_in_use(env, l.self), ==, 0);
    procreg_close(reg);
}

/* The one reader slot is held by a read in flight (another thread's,
 * held open by the hooks): a second read must wait for it, not fail.
 * The read is released only once the second one is seen waiting. */
static void test_readers_busy(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(procreg_register(reg, "p", "x", NULL, NULL, NULL, NULL),
                    ==, 0);
    MDB_envinfo info;
    held_lookup h = {reg, -1, {0}};
    GThread *reader = g_thread_new("held", held_lookup_main, &h);
    wait_held();
    mdb_env_info(hooked_env()->mdb, &info);
    g_assert_cmpuint(info.me_maxreaders, ==, 1);
    held_lookup second = {reg, -1, {0}};
    GThread *waiter = g_thread_new("second", second_lookup_main, &second);
    g_assert_true(wait_for(&hk.waits, 1, 60 * 1000));
    release_held();
    g_thread_join(reader);
    g_thread_join(waiter);
    g_assert_cmpint(h.rc, ==, 0);
    g_assert_cmpint(second.rc, ==, 0);
    procreg_close(reg);
}

static void test_readers_full(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(procreg_register(reg, "p", "x", NULL, NULL, NULL, NULL),
                    ==, 0);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "p", "x", &o, NULL), ==, 0);
    /* LMDB rounds max_readers up to fill the lock file's page. */
    MDB_envinfo info;
    lmdb_env *env = hooked_env();
    mdb_env_info(env->mdb, &info);
    int n = (int)info.me_maxreaders + 2;
    g_test_message("%u reader slots, %d lingering threads", info.me_maxreaders,
                   n);
    lingering *l = g_new0(lingering, n);
    GThread **t = g_new0(GThread *, n);
    /* Each thread reads once and keeps its idle transaction; the ones
     * past the last free slot succeed only by releasing others'. */
    for (int i = 0; i < n; i++)
        t[i] = lingering_start(&l[i], reg);
    g_assert_cmpint(slots_in_use(env, 0), <=, (int)info.me_maxreaders);
    g_assert_cmpint(procreg_lookup(reg, "p", "x", &o, NULL), ==, 0);
    for (int i = 0; i < n; i++)
        lingering_end(&l[i], t[i]);
    g_free(l);
    g_free(t);
    procreg_close(reg);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--grow-child") == 0)
        return grow_child_main(argv[2], argv[3]);
    g_test_init(&argc, &argv, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&hk.c, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&hk.m, NULL);
#define ADD(path, fn, opts) \
    g_test_add(path, Fixture, opts, fx_setup, fn, lt_fx_teardown)
    ADD("/lmdb/readers/grow-during-lookup", test_grow_during_lookup, NULL);
    ADD("/lmdb/readers/adopt-during-lookup", test_adopt_during_lookup, NULL);
    ADD("/lmdb/readers/thread-exit", test_thread_exit, NULL);
    ADD("/lmdb/readers/thread-outlives-close", test_thread_outlives_close,
        NULL);
    ADD("/lmdb/readers/full", test_readers_full, ",max_readers=1");
    ADD("/lmdb/readers/busy", test_readers_busy, ",max_readers=1");
    return g_test_run();
}
