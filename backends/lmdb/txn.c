/*
 * Transactions: LMDB errors as procreg errors, the write-transaction
 * driver, and growing the map.
 *
 * Owns: growing the map (MDB_MAP_FULL) and adopting a size another
 * process chose (MDB_MAP_RESIZED), both under the map lock's write side
 * (readers.c: mdb_env_set_mapsize() needs no transaction of this process
 * active); clearing stale reader slots; and procreg_lmdb_write_txn(),
 * which runs a write step under the writer lock, commits, grows and
 * retries, and turns the outcome into one error.
 * Relies on: writer.c for the writer lock, readers.c for the map lock,
 * changelog.c to wake the watchers after a commit.
 */
#include "lmdb-internal.h"

#include <errno.h>
#include <sys/statvfs.h>

/* Retries of a transaction after growing or adopting the map. */
#define TXN_ATTEMPTS 16

int procreg_lmdb_code(int rc)
{
    switch (rc) {
    case MDB_NOTFOUND: return PROCREG_ENOTFOUND;
    case MDB_KEYEXIST: return PROCREG_EEXISTS;
    case MDB_MAP_FULL:
    case MDB_READERS_FULL:
    case MDB_TXN_FULL:
    case MDB_DBS_FULL:
    case ENOSPC:
    case EDQUOT: return PROCREG_EFULL;
    case ENOMEM: return PROCREG_ENOMEM;
    default: return PROCREG_EBACKEND;
    }
}

int procreg_lmdb_fail(const lmdb_env *env, int rc, const char *what,
                      GError **error)
{
    const char *hint = "";
    if (rc == MDB_READERS_FULL)
        hint = " (raise max_readers)";
    else if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ||
             rc == MDB_INVALID)
        hint = " (the file is damaged)";
    else if (rc == MDB_PANIC)
        hint = " (close every registry handle on this file and open it "
               "again)";
    return procreg_set_error(error, procreg_lmdb_code(rc),
                             "lmdb registry '%s': %s: %s%s", env->path, what,
                             mdb_strerror(rc), hint);
}

int procreg_lmdb_map_adopt(lmdb_env *env)
{
    procreg_lmdb_map_lock(env);
    int rc = mdb_env_set_mapsize(env->mdb, 0);
    if (rc == 0)
        g_atomic_pointer_add(&env->map_adopted, 1);
    procreg_lmdb_map_unlock(env);
    return rc;
}

/* Grow the map after MDB_MAP_FULL at size @seen: adopt a larger size a
 * neighbour already set, else double.  Returns 0 or an LMDB code
 * (MDB_MAP_FULL at the ceiling). */
int procreg_lmdb_map_grow(lmdb_env *env, size_t seen)
{
    procreg_lmdb_map_lock(env);
    MDB_envinfo info;
    mdb_env_info(env->mdb, &info);
    int rc = 0;
    if (info.me_mapsize == seen) {
        rc = mdb_env_set_mapsize(env->mdb, 0);
        mdb_env_info(env->mdb, &info);
        if (rc == 0 && info.me_mapsize <= seen) {
            if (seen >= MAX_MAP_SIZE)
                rc = MDB_MAP_FULL;
            else
                rc = mdb_env_set_mapsize(env->mdb,
                                         MIN((uint64_t)seen * 2, MAX_MAP_SIZE));
        }
        if (rc == 0)
            g_atomic_pointer_add(&env->map_grows, 1);
    }
    procreg_lmdb_map_unlock(env);
    return rc;
}

void procreg_lmdb_reader_check(lmdb_env *env)
{
    int dead = 0;
    if (mdb_reader_check(env->mdb, &dead) == 0 && dead > 0)
        g_atomic_pointer_add(&env->stale_readers, dead);
}

/* Whether the file system of the registry has (almost) no room left:
 * less than 1 MiB, or less than 1% of it. */
bool procreg_lmdb_disk_full(const lmdb_env *env)
{
    struct statvfs sv;
    int fd = -1;
    if (mdb_env_get_fd(env->mdb, &fd) != 0 || fstatvfs(fd, &sv) != 0)
        return false;
    uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    uint64_t size = (uint64_t)sv.f_blocks * sv.f_frsize;
    return avail < ((uint64_t)1 << 20) || avail < size / 100;
}

int procreg_lmdb_sync(lmdb_env *env)
{
    procreg_lmdb_map_enter(env);
    int rc = mdb_env_sync(env->mdb, 1);
    procreg_lmdb_map_leave(env);
    return rc;
}

bool procreg_lmdb_durable(lmdb_env *env)
{
    return !atomic_load(&env->nosync);
}

int procreg_lmdb_write_txn(lmdb_env *env, const char *what,
                           write_step step, void *ctx, GError **error)
{
    if (env->read_only)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "lmdb registry '%s' is read-only (%s): "
                                 "cannot %s", env->path, env->read_only_why,
                                 what);
    int rc = 0;
    for (int attempt = 0; attempt < TXN_ATTEMPTS; attempt++) {
        wstate w = {0};
        MDB_txn *txn = NULL;
        rc = procreg_lmdb_writer_lock(env, error);
        if (rc != 0)
            return rc;
        procreg_lmdb_map_enter(env);
        rc = mdb_txn_begin(env->mdb, NULL, 0, &txn);
        if (rc != 0) {
            procreg_lmdb_map_leave(env);
            procreg_lmdb_writer_unlock(env);
            if (rc == MDB_MAP_RESIZED && procreg_lmdb_map_adopt(env) == 0)
                continue;
            return procreg_lmdb_fail(env, rc, what, error);
        }
        MDB_envinfo info;
        mdb_env_info(env->mdb, &info);
        int result = step(env, txn, ctx, &w);
        if (w.mdb_rc == 0 && w.corrupt == NULL && w.dirty) {
            w.mdb_rc = mdb_txn_commit(txn);
            w.what = "commit";
        } else {
            mdb_txn_abort(txn);
        }
        procreg_lmdb_map_leave(env);
        procreg_lmdb_writer_unlock(env);
        if (w.corrupt != NULL) {
            g_atomic_pointer_add(&env->corrupt_reads, 1);
            rc = procreg_set_error(error, PROCREG_EBACKEND,
                                   "lmdb registry '%s': %s", env->path,
                                   w.corrupt);
            g_free(w.corrupt);
            return rc;
        }
        if (w.mdb_rc == MDB_MAP_FULL) {
            int grc = procreg_lmdb_map_grow(env, info.me_mapsize);
            if (grc == 0)
                continue;
            return procreg_set_error(error, PROCREG_EFULL,
                                     "lmdb registry '%s' is full: the map "
                                     "cannot grow beyond %" G_GUINT64_FORMAT
                                     " bytes (%s)", env->path,
                                     (guint64)info.me_mapsize,
                                     mdb_strerror(grc));
        }
        if (w.mdb_rc == MDB_READERS_FULL) {
            procreg_lmdb_reader_check(env);
            continue;
        }
        if ((w.mdb_rc == EIO || w.mdb_rc == ENOSPC) &&
            procreg_lmdb_disk_full(env)) {
            /* LMDB reports a short write (a full disk) as EIO. */
            return procreg_set_error(error, PROCREG_EFULL,
                                     "lmdb registry '%s': %s: no space left "
                                     "on its file system", env->path, what);
        }
        if (w.mdb_rc != 0) {
            char *msg = g_strdup_printf("%s: %s", what, w.what ? w.what : "");
            rc = procreg_lmdb_fail(env, w.mdb_rc, msg, error);
            g_free(msg);
            return rc;
        }
        /* Committed with MDB_NOMETASYNC: flushed here, after the lock
         * was let go, so the next writer's transaction overlaps the
         * flush; acknowledged only after it.  An answer drawn from what
         * is there without writing (EEXISTS, ENOTFOUND) is flushed too:
         * it may be another writer's commit, not flushed yet. */
        int sync_rc = (w.dirty || result != 0) && procreg_lmdb_durable(env)
                          ? procreg_lmdb_sync(env)
                          : 0;
        if (sync_rc != 0) {
            if (w.events > 0)
                procreg_lmdb_notify_commit(env);
            char *msg = g_strdup_printf("%s: committed, but flushing it to "
                                        "disk failed, so a crash may undo it",
                                        what);
            rc = procreg_lmdb_fail(env, sync_rc, msg, error);
            g_free(msg);
            return rc;
        }
        if (w.events > 0) {
            procreg_lmdb_notify_commit(env);
            if (LMDB_ORDERED_EVENTS)
                procreg_lmdb_deliver(env); /* see changelog.c */
        }
        return result;
    }
    return procreg_lmdb_fail(env, rc ? rc : MDB_MAP_FULL, what, error);
}

bool procreg_lmdb_step_check(wstate *w, int rc, const char *what)
{
    if (rc == 0)
        return true;
    if (w->mdb_rc == 0) {
        w->mdb_rc = rc;
        w->what = what;
    }
    return false;
}
