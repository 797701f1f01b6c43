/*
 * Readers: each thread's read transaction of each file, and the map lock
 * that lets a thread remap the file while other threads read.
 *
 * Owns: the per-thread cache of reset read transactions (one "slot" per
 * thread per env: the thread's own MDB_txn, which keeps its LMDB reader
 * slot between reads; MDB_NOTLS lets a txn live apart from LMDB's
 * thread-local one), releasing a cached txn when its thread exits, its
 * env closes, or reader slots run out; and the map lock: every
 * transaction counts itself in its slot (in_map), and remapping
 * (mdb_env_set_mapsize, mdb_env_set_flags) waits until no slot does.
 * Relies on: txn.c to adopt a map size another process chose, writer.c
 * for lockless reads, env.c for fork and whether an env is this
 * process's.
 *
 * Why: a lookup took txn_lock (a GRWLock: a read-modify-write of one
 * shared word) and the pool's mutex twice; now the common case touches
 * only its own slot's line: one compare to find it, a CAS of its state,
 * a store and a load for the map lock, mdb_txn_renew and mdb_txn_reset.
 *
 * Invariants.
 *  1. The map: a thread uses the map (an active transaction, read or
 *     write, or mdb_env_info) only while its slot's in_map is 1 and it
 *     saw env->remapping at 0 after setting it; the remapper sets
 *     remapping to 1 (holding remap_mutex) and then waits until it sees
 *     every slot's in_map at 0.  Both sides publish with a sequentially
 *     consistent store and then load the other's word, so in their total
 *     order one comes first: either the remapper sees the reader's 1 and
 *     waits for its release store of 0 (which its load acquires: the
 *     reader's reads of the old map happen before the remap), or the
 *     reader sees remapping, clears in_map and waits for remap_mutex (and
 *     reads the new map).  So no transaction of this process is active
 *     while the map changes, which is what mdb_env_set_mapsize() asks.
 *     A reset transaction is not active (it holds a reader slot, not a
 *     snapshot), and a renewed one sees the new map.  in_map nests per
 *     thread and env (slot->depth): a read begun inside a write step does
 *     not wait for a remapper that waits for the outer transaction.  The
 *     remapper holds cache_lock only while it scans, never while it
 *     waits, so a thread inside the map may still make a slot.
 *  2. A slot's transaction belongs to whoever moved slot->state away
 *     from SLOT_IDLE: its own thread (IDLE->BUSY, for one read) or, under
 *     cache_lock, a thread draining reader slots (IDLE->DRAINING->EMPTY).
 *     Only the owning thread moves EMPTY->BUSY.  So a transaction is never
 *     used by two threads at once (lmdb.h's rule for MDB_NOTLS).
 *  3. Lifetime: cache_lock guards every env's list of slots.  A slot is
 *     freed only by its thread (when it exits, or when it finds the slot
 *     SLOT_CLOSED); an env that closes aborts its slots' transactions and
 *     marks them SLOT_CLOSED, last, after which it never touches them.
 *     A slot names its env by a serial no env shares, so a slot of a
 *     closed env can never be taken for a new env at the same address.
 *  4. Fork: a child never touches its parent's transactions (lmdb.h);
 *     slots of envs of another fork generation stay on those (abandoned,
 *     reachable) envs' lists when the child's threads exit.
 *
 * tests/lmdb/test-readers.c forces the interleavings: a lookup in flight
 * while another thread grows the map or adopts another process's size, a
 * thread that exits or outlives its env with a cached transaction, and
 * reader slots running out with idle cached transactions in other
 * threads.
 */
#include "lmdb-internal.h"

#include <sched.h>

/* Retries of a read after adopting the map or freeing reader slots. */
#define READ_ATTEMPTS 16
/* A read that finds every reader slot held by reads in flight waits for
 * one to end, sleeping twice as long each time from 64 µs up to 8 ms
 * and READERS_WAIT_US in all, then gives up with MDB_READERS_FULL. */
#define READERS_WAIT_US (1000 * 1000)

enum {
    SLOT_EMPTY,    /* no transaction */
    SLOT_IDLE,     /* a reset transaction, free to take */
    SLOT_BUSY,     /* its thread reads with it */
    SLOT_DRAINING, /* another thread aborts it (reader slots ran out) */
    SLOT_CLOSED,   /* its env closed: its thread frees it */
};

struct lmdb_reader {
    uint64_t serial; /* the env's; immutable */
    lmdb_env *env;   /* valid while state != SLOT_CLOSED */
    MDB_txn *txn;    /* see invariant 2 */
    atomic_int state;
    atomic_int in_map; /* 1: a transaction of its thread is active */
    int depth;         /* map_enter nesting; its thread only */
    lmdb_reader *next_of_thread;          /* its thread only */
    lmdb_reader *prev_of_env, *next_of_env; /* under cache_lock */
};

/* pthread's, not GMutex: ThreadSanitizer cannot see glib 2.74's. */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t thread_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static atomic_uint_fast64_t next_serial = 1;

/* Initial-exec, as the core's hot thread-locals: no __tls_get_addr per
 * read. */
static _Thread_local lmdb_reader *my_readers /* this thread's slots */
    __attribute__((tls_model("initial-exec")));
static _Thread_local lmdb_reader *my_last /* the last one used */
    __attribute__((tls_model("initial-exec")));

#ifdef PROCREG_LMDB_TEST_HOOKS
#define HOOK(name, env) procreg_lmdb_hook_##name(env)
#else
#define HOOK(name, env) ((void)0)
#endif

static void env_unlink(lmdb_reader *r)
{
    if (r->prev_of_env != NULL)
        r->prev_of_env->next_of_env = r->next_of_env;
    else
        r->env->readers = r->next_of_env;
    if (r->next_of_env != NULL)
        r->next_of_env->prev_of_env = r->prev_of_env;
}

/* The thread exits: release its reader slots (invariants 3 and 4). */
static void thread_exit(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&cache_lock);
    for (lmdb_reader *r = my_readers, *next; r != NULL; r = next) {
        next = r->next_of_thread;
        int state = atomic_load_explicit(&r->state, memory_order_acquire);
        if (state == SLOT_CLOSED) {
            g_free(r);
        } else if (procreg_lmdb_env_is_ours(r->env)) {
            env_unlink(r);
            if (state == SLOT_IDLE)
                mdb_txn_abort(r->txn);
            g_free(r);
        }
        /* else a parent's env: the slot stays on its list. */
    }
    pthread_mutex_unlock(&cache_lock);
    my_readers = my_last = NULL;
}

static void key_create(void)
{
    pthread_key_create(&thread_key, thread_exit);
}

static __attribute__((noinline)) lmdb_reader *thread_reader_slow(lmdb_env *env)
{
    lmdb_reader **link = &my_readers;
    while (*link != NULL) {
        lmdb_reader *r = *link;
        if (r->serial == env->serial) {
            my_last = r;
            return r;
        }
        if (atomic_load_explicit(&r->state, memory_order_acquire) ==
            SLOT_CLOSED) {
            *link = r->next_of_thread;
            if (my_last == r)
                my_last = NULL;
            g_free(r);
        } else {
            link = &r->next_of_thread;
        }
    }
    pthread_once(&key_once, key_create);
    lmdb_reader *r = g_new0(lmdb_reader, 1);
    r->serial = env->serial;
    r->env = env;
    atomic_init(&r->state, SLOT_EMPTY);
    atomic_init(&r->in_map, 0);
    pthread_mutex_lock(&cache_lock);
    r->next_of_env = env->readers;
    if (env->readers != NULL)
        env->readers->prev_of_env = r;
    env->readers = r;
    pthread_mutex_unlock(&cache_lock);
    r->next_of_thread = my_readers;
    my_readers = r;
    /* Any non-NULL value makes pthread call thread_exit(). */
    pthread_setspecific(thread_key, r);
    my_last = r;
    return r;
}

/* This thread's slot for @env, made at its first use. */
static inline lmdb_reader *thread_reader(lmdb_env *env)
{
    lmdb_reader *r = my_last;
    if (G_LIKELY(r != NULL && r->serial == env->serial))
        return r;
    return thread_reader_slow(env);
}

static inline void reader_enter(lmdb_env *env, lmdb_reader *r)
{
    if (r->depth++ > 0)
        return;
    for (;;) {
        atomic_store_explicit(&r->in_map, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&env->remapping, memory_order_seq_cst) == 0)
            return;
        atomic_store_explicit(&r->in_map, 0, memory_order_release);
        /* The remapper holds remap_mutex while remapping is 1. */
        pthread_mutex_lock(&env->remap_mutex);
        pthread_mutex_unlock(&env->remap_mutex);
    }
}

static inline void reader_leave(lmdb_env *env, lmdb_reader *r)
{
    (void)env;
    if (--r->depth == 0)
        atomic_store_explicit(&r->in_map, 0, memory_order_release);
}

/* Whether a slot of @env counts a transaction (invariant 1). */
static bool any_in_map(lmdb_env *env)
{
    bool any = false;
    pthread_mutex_lock(&cache_lock);
    for (lmdb_reader *r = env->readers; r != NULL && !any;
         r = r->next_of_env)
        any = atomic_load_explicit(&r->in_map, memory_order_seq_cst) != 0;
    pthread_mutex_unlock(&cache_lock);
    return any;
}

void procreg_lmdb_readers_init(lmdb_env *env)
{
    env->serial = atomic_fetch_add(&next_serial, 1);
    pthread_mutex_init(&env->remap_mutex, NULL);
    atomic_init(&env->remapping, 0);
}

void procreg_lmdb_readers_clear(lmdb_env *env)
{
    pthread_mutex_lock(&cache_lock);
    while (env->readers != NULL) {
        lmdb_reader *r = env->readers;
        env_unlink(r);
        /* No read runs on a closing env: each slot is IDLE or EMPTY. */
        if (atomic_load_explicit(&r->state, memory_order_relaxed) ==
            SLOT_IDLE)
            mdb_txn_abort(r->txn);
        atomic_store_explicit(&r->state, SLOT_CLOSED, memory_order_release);
    }
    pthread_mutex_unlock(&cache_lock);
    pthread_mutex_destroy(&env->remap_mutex);
}

void procreg_lmdb_readers_drain(lmdb_env *env)
{
    pthread_mutex_lock(&cache_lock);
    for (lmdb_reader *r = env->readers; r != NULL; r = r->next_of_env) {
        int idle = SLOT_IDLE;
        if (!atomic_compare_exchange_strong(&r->state, &idle, SLOT_DRAINING))
            continue;
        mdb_txn_abort(r->txn);
        r->txn = NULL;
        atomic_store_explicit(&r->state, SLOT_EMPTY, memory_order_release);
    }
    pthread_mutex_unlock(&cache_lock);
}

void procreg_lmdb_map_enter(lmdb_env *env)
{
    reader_enter(env, thread_reader(env));
}

void procreg_lmdb_map_leave(lmdb_env *env)
{
    reader_leave(env, thread_reader(env));
}

void procreg_lmdb_map_lock(lmdb_env *env)
{
    HOOK(map_lock_wanted, env);
    pthread_mutex_lock(&env->remap_mutex);
    atomic_store_explicit(&env->remapping, 1, memory_order_seq_cst);
    while (any_in_map(env))
        sched_yield();
    HOOK(map_lock_taken, env);
}

void procreg_lmdb_map_unlock(lmdb_env *env)
{
    HOOK(map_lock_released, env);
    atomic_store_explicit(&env->remapping, 0, memory_order_release);
    pthread_mutex_unlock(&env->remap_mutex);
}

/* A read transaction for @r's thread: its cached one renewed, else a
 * new one cached, else (a read inside a read, or a drain under way) one
 * of its own.  An LMDB code. */
static int reader_txn(lmdb_env *env, lmdb_reader *r, MDB_txn **out)
{
    int expect = SLOT_IDLE;
    if (atomic_compare_exchange_strong_explicit(&r->state, &expect,
                                                SLOT_BUSY,
                                                memory_order_acquire,
                                                memory_order_acquire)) {
        int rc = mdb_txn_renew(r->txn);
        if (rc == 0) {
            *out = r->txn;
            return 0;
        }
        mdb_txn_abort(r->txn);
        r->txn = NULL;
        atomic_store_explicit(&r->state, SLOT_EMPTY, memory_order_release);
        return rc;
    }
    if (expect == SLOT_EMPTY) {
        /* Only this thread leaves EMPTY (invariant 2). */
        atomic_store_explicit(&r->state, SLOT_BUSY, memory_order_relaxed);
        int rc = mdb_txn_begin(env->mdb, NULL, MDB_RDONLY, &r->txn);
        if (rc == 0) {
            *out = r->txn;
            return 0;
        }
        r->txn = NULL;
        atomic_store_explicit(&r->state, SLOT_EMPTY, memory_order_release);
        return rc;
    }
    return mdb_txn_begin(env->mdb, NULL, MDB_RDONLY, out);
}

int procreg_lmdb_read_begin(lmdb_env *env, MDB_txn **out)
{
    lmdb_reader *r = thread_reader(env);
    int rc = 0;
    gulong nap_us = 64, napped_us = 0;
    for (int attempt = 0; attempt < READ_ATTEMPTS || rc == MDB_READERS_FULL;
         attempt++) {
        reader_enter(env, r);
        procreg_lmdb_writer_lock_shared(env);
        rc = reader_txn(env, r, out);
        if (rc == 0) {
            HOOK(read_begun, env);
            return 0;
        }
        procreg_lmdb_writer_unlock_shared(env);
        reader_leave(env, r);
        if (rc == MDB_MAP_RESIZED) {
            if (procreg_lmdb_map_adopt(env) != 0)
                break;
        } else if (rc == MDB_READERS_FULL) {
            /* Dead processes' slots and idle cached transactions first;
             * then the slots are held by reads in flight, which end. */
            procreg_lmdb_reader_check(env);
            procreg_lmdb_readers_drain(env);
            if (attempt >= 2) {
                if (napped_us >= READERS_WAIT_US)
                    break;
                HOOK(readers_wait, env);
                g_usleep(nap_us);
                napped_us += nap_us;
                nap_us = MIN(nap_us * 2, 8000);
            }
        } else {
            break;
        }
    }
    return rc;
}

void procreg_lmdb_read_end(lmdb_env *env, MDB_txn *txn)
{
    lmdb_reader *r = thread_reader(env);
    /* While BUSY, r->txn is this thread's to read (invariant 2). */
    if (atomic_load_explicit(&r->state, memory_order_relaxed) == SLOT_BUSY &&
        r->txn == txn) {
        mdb_txn_reset(txn);
        atomic_store_explicit(&r->state, SLOT_IDLE, memory_order_release);
    } else {
        mdb_txn_abort(txn);
    }
    procreg_lmdb_writer_unlock_shared(env);
    reader_leave(env, r);
}

void procreg_lmdb_readers_fork_prepare(void)
{
    pthread_mutex_lock(&cache_lock);
}

void procreg_lmdb_readers_fork_parent(void)
{
    pthread_mutex_unlock(&cache_lock);
}

void procreg_lmdb_readers_fork_child(void)
{
    pthread_mutex_unlock(&cache_lock);
}
