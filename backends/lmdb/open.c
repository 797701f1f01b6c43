/*
 * Opening one registry file, and closing it.
 *
 * Owns: the default path and its private directory; mdb_env_open() and
 * the fallback to read-only for a file we may read but not write; the
 * checks that refuse a file before it is served (not LMDB, shorter than
 * its last page, foreign databases, another format); creating the
 * databases of a new file; the boot id, so that after a reboot every
 * owner in the file counts as dead; and freeing an env (threads first).
 * Relies on: liveness.c and changelog.c for their parts of an env (the
 * owner cache and monitor, FILE-notify and the watcher), txn.c for
 * errors.
 */
#include "lmdb-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* A directory only we can use: created 0700 if missing, else checked. */
static int private_dir(const char *dir, GError **error)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "lmdb: cannot create the registry directory "
                                 "'%s': %s", dir, g_strerror(errno));
    struct stat st;
    if (lstat(dir, &st) != 0)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "lmdb: cannot inspect '%s': %s", dir,
                                 g_strerror(errno));
    if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() ||
        (st.st_mode & 0022) != 0)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "lmdb: refusing the registry directory "
                                 "'%s': it must be a directory owned by uid "
                                 "%u that no one else can write (mode %03o, "
                                 "owner %u)", dir, (unsigned)getuid(),
                                 (unsigned)(st.st_mode & 0777),
                                 (unsigned)st.st_uid);
    return 0;
}

char *procreg_lmdb_default_path(GError **error)
{
    const char *rt = g_getenv("XDG_RUNTIME_DIR");
    char *dir;
    if (rt != NULL && g_path_is_absolute(rt) &&
        g_file_test(rt, G_FILE_TEST_IS_DIR))
        dir = g_build_filename(rt, "procreg", NULL);
    else
        dir = g_strdup_printf("/tmp/procreg-%u", (unsigned)getuid());
    char *path = NULL;
    if (private_dir(dir, error) == 0)
        path = g_build_filename(dir, "registry.mdb", NULL);
    g_free(dir);
    return path;
}

/* entries, meta, events (formats 1 to 3) and owners (formats 1 to 4),
 * which a read-only opener reads in place and a writer migrates, and the
 * groups' three (groups.c). */
#define MAX_DBS 7

#define BOOT_ID_LEN 36

/* This boot's id (/proc/sys/kernel/random/boot_id); false if unknown. */
static bool read_boot_id(char out[BOOT_ID_LEN])
{
    char *text = NULL;
    gsize len = 0;
    bool ok = g_file_get_contents("/proc/sys/kernel/random/boot_id", &text,
                                  &len, NULL) &&
              len >= BOOT_ID_LEN;
    if (ok)
        memcpy(out, text, BOOT_ID_LEN);
    g_free(text);
    return ok;
}

/* Owners are (pid, start time since boot): after a reboot a new process
 * can match an old owner exactly.  The file remembers the boot that last
 * wrote it; on a new boot every owner in it is dead, so their entries go
 * (reason OWNER_EXITED) before anything is served.  A read-only file of
 * an earlier boot just answers "absent" for all of them.  Without @write
 * a writable file of another boot sets *@must_write instead. */
static int boot_check(lmdb_env *env, MDB_txn *txn, bool write,
                      bool *must_write, GError **error)
{
    char boot[BOOT_ID_LEN];
    if (!read_boot_id(boot))
        return 0;
    const lmdb_layout *lay = procreg_lmdb_layout(env, txn);
    char kbuf[META_KEY_MAX];
    MDB_val bk = procreg_lmdb_meta_key(lay, "boot_id", kbuf), bv;
    int rc = mdb_get(txn, lay->meta, &bk, &bv);
    bool same = rc == 0 && bv.mv_size == BOOT_ID_LEN &&
                memcmp(bv.mv_data, boot, BOOT_ID_LEN) == 0;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return procreg_lmdb_fail(env, rc, "reading the boot id", error);
    if (same)
        return 0;
    if (env->read_only) {
        env->stale_boot = rc == 0;
        return 0;
    }
    if (!write) {
        *must_write = true;
        return 0;
    }
    wstate w = {0};
    if (rc == 0) {
        /* Collect, then delete: deleting moves what values point at. */
        GPtrArray *keys = g_ptr_array_new_with_free_func(
            (GDestroyNotify)g_bytes_unref);
        MDB_cursor *c;
        rc = mdb_cursor_open(txn, lay->entries, &c);
        MDB_val k, v;
        for (int crc = rc == 0 ? procreg_lmdb_entries_seek(c, &k, &v, true)
                               : rc;
             crc == 0; crc = procreg_lmdb_entries_next(c, &k, &v))
            g_ptr_array_add(keys, g_bytes_new(k.mv_data, k.mv_size));
        if (rc == 0)
            mdb_cursor_close(c);
        for (guint i = 0; rc == 0 && i < keys->len; i++) {
            gsize len;
            MDB_val key = {0, NULL};
            key.mv_data = (void *)g_bytes_get_data(keys->pdata[i], &len);
            key.mv_size = len;
            raw_entry e;
            if (mdb_get(txn, lay->entries, &key, &v) != 0 ||
                entry_decode(&v, &e) != NULL)
                continue; /* damaged: left for the operator to see */
            /* Copy the metadata out before the value moves. */
            GBytes *meta = g_bytes_new(e.meta, e.meta_len);
            e.meta = g_bytes_get_data(meta, NULL);
            if (!procreg_lmdb_log_change(env, txn, &w,
                                         PROCREG_EVENT_UNREGISTERED,
                                         PROCREG_REASON_OWNER_EXITED, 0, &key,
                                         &e) ||
                !procreg_lmdb_step_check(
                    &w, mdb_del(txn, lay->entries, &key, NULL),
                    "removing an entry of an earlier boot"))
                rc = w.mdb_rc ? w.mdb_rc : MDB_CORRUPTED;
            g_bytes_unref(meta);
        }
        g_ptr_array_unref(keys);
        if (rc == 0)
            rc = procreg_lmdb_owner_rows_drop(txn);
        if (rc == 0 && !procreg_lmdb_members_drop_all(env, txn, &w))
            rc = w.mdb_rc ? w.mdb_rc : MDB_CORRUPTED;
        if (rc == 0 && w.corrupt == NULL &&
            procreg_lmdb_log_finish(env, txn, &w))
            g_atomic_pointer_add(&env->reaped, w.events);
        if (w.corrupt != NULL) {
            rc = procreg_set_error(error, PROCREG_EBACKEND,
                                   "lmdb registry '%s': %s", env->path,
                                   w.corrupt);
            g_free(w.corrupt);
            return rc;
        }
        if (rc == 0 && w.mdb_rc != 0)
            rc = w.mdb_rc;
        if (rc != 0)
            return procreg_lmdb_fail(env, rc, "removing the entries of an "
                                     "earlier boot", error);
    }
    bv.mv_size = BOOT_ID_LEN;
    bv.mv_data = boot;
    rc = mdb_put(txn, lay->meta, &bk, &bv, 0);
    return rc == 0 ? 0
                   : procreg_lmdb_fail(env, rc, "writing the boot id", error);
}

/* Check the file's format and open its databases (format.c: a new file
 * is created, an older one migrated), then the boot id.  Without @write,
 * in a read transaction: what needs writing (a new or older file,
 * another boot) sets *@must_write. */
static int check_dbs(lmdb_env *env, bool write, bool *must_write,
                     bool *map_full, GError **error)
{
    MDB_txn *txn;
    *must_write = false;
    int rc = mdb_txn_begin(env->mdb, NULL, write ? 0 : MDB_RDONLY, &txn);
    if (rc != 0)
        return procreg_lmdb_fail(env, rc, "opening", error);
    rc = procreg_lmdb_format_open(env, txn, write, must_write, map_full,
                                  error);
    if (rc == 0 && !*must_write)
        rc = boot_check(env, txn, write, must_write, error);
    if (rc != 0 || *must_write) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn);
    if (rc == 0 && write)
        rc = mdb_env_sync(env->mdb, 1); /* durable before anyone uses it */
    return rc == 0 ? 0
                   : procreg_lmdb_fail(env, rc, "opening the databases",
                                       error);
}

/* Check the file in a read transaction, and only when that finds
 * something to write, again under the writer lock: opening a registry
 * waits for no writer. */
static int open_dbs(lmdb_env *env, GError **error)
{
    bool must_write = false, map_full = false;
    procreg_lmdb_writer_lock_shared(env);
    int rc = check_dbs(env, false, &must_write, &map_full, error);
    procreg_lmdb_writer_unlock_shared(env);
    if (rc != 0 || !must_write)
        return rc;
#ifdef PROCREG_LMDB_FORMAT_HOOKS
    procreg_lmdb_hook_format_must_write(env);
#endif
    rc = procreg_lmdb_writer_lock(env, error);
    if (rc != 0)
        return rc;
    /* A migration that needs more room than the map has: grow, again. */
    for (int attempt = 0;; attempt++) {
        map_full = false;
        rc = check_dbs(env, true, &must_write, &map_full, error);
        if (rc == 0 || !map_full || attempt >= 16)
            break;
        MDB_envinfo info;
        mdb_env_info(env->mdb, &info);
        if (procreg_lmdb_map_grow(env, info.me_mapsize) != 0)
            break;
        g_clear_error(error);
    }
    procreg_lmdb_writer_unlock(env);
    return rc;
}

/* ---- why a file cannot be opened, or written ---- */

/* 0 when this process (its effective ids) may @how (R_OK, W_OK...)
 * @path, else why not (EACCES, EROFS...). */
static int access_error(const char *path, int how)
{
    return faccessat(AT_FDCWD, path, how, AT_EACCESS) == 0 ? 0 : errno;
}

static bool may(const char *path, int how)
{
    return access_error(path, how) == 0;
}

/* "permission denied: uid U may not @verb @what '@path' (mode M, owner
 * uid O)". */
static char *refused(const char *verb, const char *what, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return g_strdup_printf("%s '%s' cannot be inspected: %s", what, path,
                               g_strerror(errno));
    return g_strdup_printf("permission denied: uid %u may not %s %s '%s' "
                           "(mode %04o, owner uid %u)", (unsigned)geteuid(),
                           verb, what, path, (unsigned)(st.st_mode & 07777),
                           (unsigned)st.st_uid);
}

/* Why @path opens read-only, after LMDB's @rc for a writable open: which
 * of its files refused what (LMDB's code alone does not say). */
static char *read_only_reason(const char *path, int rc)
{
    char *lock = g_strconcat(path, "-lock", NULL);
    char *dir = g_path_get_dirname(path), *why;
    if (rc == EROFS || rc == EPERM) {
        why = g_strdup(g_strerror(rc));
    } else if (access_error(path, W_OK) == EACCES) {
        why = refused("write", "the registry file", path);
    } else if (access(lock, F_OK) == 0) {
        why = access_error(lock, W_OK) == EACCES
                  ? refused("write", "its lock file", lock)
                  : g_strdup(g_strerror(rc));
    } else if (access_error(dir, W_OK | X_OK) == EACCES) {
        char *d = refused("create files in", "its directory", dir);
        why = g_strdup_printf("%s, so its lock file '%s' cannot be made", d,
                              lock);
        g_free(d);
    } else {
        why = g_strdup_printf("its lock file '%s' cannot be made: %s", lock,
                              g_strerror(rc));
    }
    g_free(dir);
    g_free(lock);
    return why;
}

/* Whether @path is on a file system mounted read-only. */
static bool read_only_fs(const char *path)
{
    struct statvfs sv;
    return statvfs(path, &sv) == 0 && (sv.f_flag & ST_RDONLY) != 0;
}

/* Close @env's LMDB environment and open it again with @flags. */
static int reopen(lmdb_env *env, const char *path, unsigned int flags)
{
    mdb_env_close(env->mdb);
    env->mdb = NULL;
    int rc = mdb_env_create(&env->mdb);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(env->mdb, MAX_DBS);
    if (rc == 0)
        rc = mdb_env_open(env->mdb, path, flags, 0600);
    return rc;
}

/* The error for @path that LMDB would not open: @rc_write for a
 * writable open, @rc for the last one.  Each cause its own message: a
 * path that cannot be a registry file (PROCREG_EINVAL), a permission,
 * a damaged or foreign file (PROCREG_EBACKEND). */
static int open_error(const lmdb_env *env, const char *path, int rc_write,
                      int rc, GError **error)
{
    char *dir = g_path_get_dirname(path), *why = NULL;
    int code = PROCREG_EBACKEND;
    struct stat st;
    int dir_err = stat(dir, &st) != 0 ? errno
                  : !S_ISDIR(st.st_mode) ? ENOTDIR
                                         : 0;
    if (dir_err != 0) {
        code = PROCREG_EINVAL;
        why = dir_err == ENOENT ? g_strdup_printf("its directory '%s' does "
                                                  "not exist", dir)
              : dir_err == ENOTDIR
                  ? g_strdup_printf("'%s' is not a directory", dir)
                  : g_strdup_printf("its directory '%s' cannot be reached: "
                                    "%s", dir, g_strerror(dir_err));
    } else if (stat(path, &st) != 0) {
        /* LMDB could not make it. */
        int err = access_error(dir, W_OK | X_OK);
        if (err == EACCES)
            why = refused("create files in", "its directory", dir);
        else
            why = g_strdup_printf("cannot create it in '%s': %s", dir,
                                  g_strerror(err != 0 ? err : rc_write));
    } else if (!may(path, R_OK)) {
        why = refused("read", "the registry file", path);
    } else if (st.st_size == 0 && env->read_only_why != NULL) {
        why = g_strdup_printf("it is empty (0 bytes), and read-only (%s)",
                              env->read_only_why);
    } else {
        code = procreg_lmdb_code(rc);
        why = g_strdup(rc == MDB_INVALID ? "not an LMDB file"
                       : rc == MDB_VERSION_MISMATCH
                           ? "written by an incompatible LMDB version"
                           : mdb_strerror(rc));
    }
    int ret = procreg_set_error(error, code, "lmdb: cannot open the registry "
                                "file '%s': %s", path, why);
    g_free(why);
    g_free(dir);
    return ret;
}

void procreg_lmdb_env_free(lmdb_env *env)
{
    /* Both threads stop before what they use goes: the watcher may still
     * queue a reap (owner cache, eventfd) until it is joined. */
    procreg_lmdb_monitor_stop(env);
    procreg_lmdb_watcher_stop(env);
    procreg_lmdb_batch_close(env);
    procreg_lmdb_writer_clear(env);
    procreg_lmdb_owners_clear(env);
    procreg_lmdb_notify_close(env);
    procreg_lmdb_readers_clear(env);
    if (env->mdb != NULL)
        mdb_env_close(env->mdb);
    g_ptr_array_unref(env->instances);
    pthread_mutex_destroy(&env->inst_lock);
    g_free(env->read_only_why);
    g_free(env->path);
    g_free(env);
}

int procreg_lmdb_env_open(const char *path, const lmdb_state *st,
                          lmdb_env **out, GError **error)
{
    lmdb_env *env = g_new0(lmdb_env, 1);
    env->path = g_strdup(path);
    env->notify_fd = -1;
    procreg_lmdb_readers_init(env);
    pthread_mutex_init(&env->inst_lock, NULL);
    procreg_lmdb_writer_init(env);
    procreg_lmdb_owners_init(env);
    env->instances = g_ptr_array_new();
    procreg_owner_self(&env->self);

    int rc = mdb_env_create(&env->mdb);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(env->mdb, MAX_DBS);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(env->mdb, st->max_readers);
    if (rc == 0)
        rc = mdb_env_set_mapsize(env->mdb, st->map_size);
    if (rc != 0) {
        if (env->mdb != NULL)
            mdb_env_close(env->mdb);
        env->mdb = NULL;
        rc = procreg_lmdb_fail(env, rc, "creating the environment", error);
        procreg_lmdb_env_free(env);
        return rc;
    }
    /* Durability is the writers' flush after a commit (txn.c). */
    unsigned int flags = MDB_NOSUBDIR | MDB_NOTLS | MDB_NOMETASYNC;
    int rc_write = mdb_env_open(env->mdb, path, flags, 0600);
    rc = rc_write;
    if (rc == EACCES || rc == EPERM || rc == EROFS ||
        (rc == ENOENT && access(path, F_OK) == 0)) {
        /* A file we may read but not write (or whose lock file cannot be
         * made): serve lookups, refuse changes with a message that says
         * why. */
        env->read_only_why = read_only_reason(path, rc);
        /* On a read-only file system LMDB cannot open its lock file for
         * writing and, opening read-only, silently goes on without it:
         * no reader slot.  Say so ourselves, so that the reads are
         * guarded as below (a writer may see the same file through
         * another mount). */
        bool no_lock = rc == EROFS || read_only_fs(path);
        rc = reopen(env, path,
                    flags | MDB_RDONLY | (no_lock ? MDB_NOLOCK : 0));
        if (rc != 0 && !no_lock && rc != MDB_INVALID &&
            rc != MDB_VERSION_MISMATCH && may(path, R_OK)) {
            /* Its lock file cannot be written or made either: read with
             * no reader slot. */
            no_lock = true;
            rc = reopen(env, path, flags | MDB_RDONLY | MDB_NOLOCK);
        }
        /* With no reader slot, procreg's writers are kept out while a
         * read runs (procreg_lmdb_writer_lock_shared()). */
        env->lockless = rc == 0 && no_lock;
        env->read_only = rc == 0;
    }
    if (rc != 0) {
        rc = open_error(env, path, rc_write, rc, error);
        procreg_lmdb_env_free(env);
        return rc;
    }
    /* A file shorter than the pages its meta page claims would fault
     * (SIGBUS) when those pages are read: refuse it. */
    MDB_envinfo info;
    MDB_stat ms;
    struct stat fst;
    int fd = -1;
    mdb_env_info(env->mdb, &info);
    mdb_env_stat(env->mdb, &ms);
    if (mdb_env_get_fd(env->mdb, &fd) != 0 || fstat(fd, &fst) != 0) {
        rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "lmdb: cannot inspect '%s': %s", path,
                               g_strerror(errno));
        procreg_lmdb_env_free(env);
        return rc;
    }
    if ((uint64_t)fst.st_size <
        ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize) {
        rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "lmdb registry '%s' is damaged: the file has "
                               "%jd bytes but its last page ends at %"
                               G_GUINT64_FORMAT, path, (intmax_t)fst.st_size,
                               (guint64)(info.me_last_pgno + 1) * ms.ms_psize);
        procreg_lmdb_env_free(env);
        return rc;
    }
    env->dev = fst.st_dev;
    env->ino = fst.st_ino;
    env->max_readers = info.me_maxreaders;
    rc = env->read_only && !env->lockless ? 0
                                          : procreg_lmdb_writer_open(env);
    /* The request area before any write: a dead batch leader's requests
     * are resolved before the next transaction (batch.c). */
    if (rc == 0 && !env->read_only)
        procreg_lmdb_batch_open(env);
    if (rc != 0 && !env->read_only) {
        /* No writer lock, no writes (writer.c says why). */
        env->read_only = true;
        env->read_only_why = g_strdup_printf(
            "cannot open its writer lock '%s%s': %s", path, NOTIFY_SUFFIX,
            g_strerror(rc));
    }
    rc = open_dbs(env, error);
    if (rc != 0) {
        procreg_lmdb_env_free(env);
        return rc;
    }
    procreg_lmdb_reader_check(env);
    procreg_lmdb_notify_open(env);

    procreg_lmdb_monitor_start(env);
    *out = env;
    return 0;
}
