/*
 * The process-wide table of open registry files, and fork().
 *
 * Owns: one lmdb_env per file per process, found by (device, inode) so
 * every path to a file (symlinks included) shares it, reference counted
 * by the handles; the durability the handles of one file agree on; and
 * what a forked child does with its parent's envs (abandons them, and
 * opens the file afresh on first use of an inherited handle).
 * Relies on: open.c to open and free an env, changelog.c to attach a
 * handle to the change-log watcher, writer.c for its part of fork.
 */
#include "lmdb-internal.h"

#include <sys/stat.h>

/* pthread mutexes, not GMutex: glib 2.74's GMutex is a bare futex that
 * ThreadSanitizer cannot see. */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static GHashTable *table;     /* lmdb_env* by (dev, ino) */
/* The parents' envs in a forked child: kept (reachable), never used. */
static GPtrArray *abandoned;
/* Bumped in a forked child (procreg_lmdb_env_is_ours() reads it inline). */
LMDB_HIDDEN gint procreg_lmdb_fork_generation;

/* The writer lock's list and the readers' lock nest inside table_lock,
 * here as everywhere. */
static void atfork_prepare(void)
{
    pthread_mutex_lock(&table_lock);
    procreg_lmdb_writer_fork_prepare();
    procreg_lmdb_readers_fork_prepare();
}

static void atfork_parent(void)
{
    procreg_lmdb_readers_fork_parent();
    procreg_lmdb_writer_fork_parent();
    pthread_mutex_unlock(&table_lock);
}

static void atfork_child(void)
{
    /* The parent's environments, threads and transactions are not ours:
     * lmdb.h forbids using or even closing them here (closing would
     * release the parent's reader slots).  Keep them unreachable for
     * new opens and reachable for leak checkers.  Their writer-lock
     * descriptors go: a copy would keep the parent's lock held after the
     * parent's death. */
    procreg_lmdb_readers_fork_child();
    procreg_lmdb_writer_fork_child();
    g_atomic_int_inc(&procreg_lmdb_fork_generation);
    if (table != NULL) {
        GHashTableIter it;
        gpointer env;
        g_hash_table_iter_init(&it, table);
        while (g_hash_table_iter_next(&it, NULL, &env)) {
            if (abandoned == NULL)
                abandoned = g_ptr_array_new();
            g_ptr_array_add(abandoned, env);
            g_hash_table_iter_steal(&it);
        }
    }
    pthread_mutex_unlock(&table_lock);
}

static guint file_hash(gconstpointer p)
{
    const lmdb_env *e = p;
    return (guint)(e->ino ^ (e->ino >> 32) ^ (e->dev * 31u));
}

static gboolean file_equal(gconstpointer a, gconstpointer b)
{
    const lmdb_env *x = a, *y = b;
    return x->dev == y->dev && x->ino == y->ino;
}

/* Apply the durability all instances agree on: nosync only when every
 * instance of this process asked for it.  The env always commits with
 * MDB_NOMETASYNC (open.c); a durable commit is flushed after it
 * (procreg_lmdb_sync()).  table_lock held. */
static void env_durability(lmdb_env *env)
{
    atomic_store(&env->nosync, env->sync_votes == 0 && env->nosync_votes > 0);
}

int procreg_lmdb_env_acquire(lmdb_state *st, lmdb_env **out, GError **error)
{
    static gsize once;
    if (g_once_init_enter(&once)) {
        pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
        g_once_init_leave(&once, 1);
    }
    pthread_mutex_lock(&table_lock);
    if (table == NULL)
        table = g_hash_table_new(file_hash, file_equal);
    lmdb_env *env = NULL;
    struct stat sb;
    if (stat(st->path, &sb) == 0) {
        lmdb_env probe = {.dev = sb.st_dev, .ino = sb.st_ino};
        env = g_hash_table_lookup(table, &probe);
    }
    int rc = 0;
    if (env == NULL) {
        rc = procreg_lmdb_env_open(st->path, st, &env, error);
        if (rc == 0) {
            env->generation =
                (guint)g_atomic_int_get(&procreg_lmdb_fork_generation);
            g_hash_table_add(table, env);
        }
    }
    if (rc == 0) {
        env->refs++;
        if (st->nosync)
            env->nosync_votes++;
        else
            env->sync_votes++;
        env_durability(env);
        *out = env;
    }
    pthread_mutex_unlock(&table_lock);
    return rc;
}

void procreg_lmdb_env_release(lmdb_env *env, bool nosync)
{
    pthread_mutex_lock(&table_lock);
    bool last = --env->refs == 0;
    if (nosync)
        env->nosync_votes--;
    else
        env->sync_votes--;
    if (last)
        g_hash_table_remove(table, env);
    else
        env_durability(env);
    pthread_mutex_unlock(&table_lock);
    if (last)
        procreg_lmdb_env_free(env);
}

/* After fork() the child opens the file again, once, and leaves the
 * parent's env alone. */
lmdb_env *procreg_lmdb_state_env_slow(lmdb_state *st, int *rc,
                                      GError **error)
{
    pthread_mutex_lock(&st->lock);
    lmdb_env *env = st->env;
    if (!procreg_lmdb_env_is_ours(env)) {
        lmdb_env *fresh = NULL;
        *rc = procreg_lmdb_env_acquire(st, &fresh, error);
        if (*rc != 0) {
            pthread_mutex_unlock(&st->lock);
            return NULL;
        }
        procreg_lmdb_attach_instance(fresh, st);
        g_atomic_pointer_set(&st->env, fresh);
        env = fresh;
    }
    pthread_mutex_unlock(&st->lock);
    return env;
}
