/*
 * lmdb: the registry as one LMDB file that every process of a host can
 * open.  Entries persist, dead owners' entries vanish for everybody, and
 * changes made by one process reach the events and waiters of the others.
 *
 * File layout (MDB_NOSUBDIR: FILE and FILE-lock, plus FILE-notify):
 *   "entries"  key "ns\0name" -> entry_header + serialised a{sv}, so one
 *              namespace is the cursor range that starts at "ns\0";
 *   "owners"   (DUPSORT) key pid(BE32) start_time(BE64) -> "ns\0name" of
 *              each entry the owner holds, so a dead owner is reaped
 *              without a scan;
 *   "meta"     "format", the revision counter and the change counter;
 *   "events"   key change number (BE64) -> event_header + key + metadata:
 *              the change log that other processes read.
 * Every value read back is checked (lengths, version, a{sv} in normal
 * form): a corrupt or hostile file gives PROCREG_EBACKEND, never a crash.
 *
 * One MDB_env per file per process, shared and reference counted (lmdb.h:
 * never open a file twice in a process), and never used after fork(): a
 * child abandons its parent's handles and opens the file again.  Every
 * transaction holds the env's txn_lock for reading; growing the map
 * (MDB_MAP_FULL) or adopting a size another process chose
 * (MDB_MAP_RESIZED) takes it for writing, since mdb_env_set_mapsize()
 * needs no transaction of this process to be active.
 *
 * Owner liveness: an owner seen before is answered from a cache; the
 * first sight reads /proc and opens a pidfd that a monitor thread polls
 * (epoll), so a death marks the owner dead at once and the thread deletes
 * its entries (reason OWNER_EXITED) in one write transaction.
 *
 * Cross-process changes: every write transaction appends its changes to
 * "events" and, after the commit, bumps a counter in FILE-notify (a shared
 * mapping) and FUTEX_WAKEs it.  A watcher thread per process sleeps on
 * that futex, reads the log from where it stopped and hands each change
 * made by another instance to procreg_backend_host_notify().
 */
#include <procreg/backend.h>

#include "lmdb-codec.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <lmdb.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Constants and on-disk records                                            */

#define FORMAT_VALUE PROCREG_LMDB_FORMAT
#define NOTIFY_MAGIC 0x4e475250u /* "PRGN" */
#define NOTIFY_SIZE 4096

#define DEFAULT_MAP_SIZE ((uint64_t)64 << 20)
#define MIN_MAP_SIZE ((uint64_t)256 << 10)
#define MAX_MAP_SIZE ((uint64_t)1 << 40)
/* A reader slot is 64 bytes of FILE-lock; a process holds one per running
 * read plus up to POOL_MAX idle ones, so 4094 slots serve about a
 * thousand processes with the registry open (LMDB's default, 126, would
 * run out at a few dozen). */
#define DEFAULT_MAX_READERS 4094
#define MAX_MAX_READERS 65536
/* Metadata above this is refused (PROCREG_EFULL): a registry entry is a
 * pointer to a service, not a blob store. */
#define META_MAX ((size_t)1 << 20)
/* Change-log records kept for watchers that fall behind. */
#define LOG_KEEP 4096
/* Idle read transactions kept per file (each holds a reader slot). */
#define POOL_MAX 2
/* Retries of a transaction after growing or adopting the map. */
#define TXN_ATTEMPTS 16
/* Owners whose death the monitor watches with a pidfd, at most. */
#define MONITOR_MAX 256

#define ENTRY_HAS_META PROCREG_LMDB_HAS_META

/* FILE-notify: one page, shared by every process that has FILE open. */
typedef struct {
    uint32_t magic;
    uint32_t version;
    uint32_t counter; /* futex word: bumped after each commit with changes */
    uint32_t waiters; /* watchers that may be asleep on counter */
} notify_page;

#define OWNER_KEY_SIZE PROCREG_LMDB_OWNER_KEY_SIZE

/* ------------------------------------------------------------------------ */
/* Types                                                                    */

typedef struct {
    pid_t pid;
    uint64_t start_time;
} owner_id;

typedef struct {
    owner_id id;
    bool alive;
    bool queued; /* waiting in reap_queue */
    int pidfd;   /* -1 when not monitored */
} owner_rec;

typedef struct lmdb_state lmdb_state;

typedef struct {
    int refs;           /* under table_lock */
    guint generation;   /* fork generation it was opened in */
    dev_t dev;
    ino_t ino;
    char *path;
    bool read_only;
    bool stale_boot; /* read-only file of an earlier boot: owners all dead */
    char *read_only_why;
    MDB_env *mdb;
    MDB_dbi db_entries, db_owners, db_meta, db_events;
    unsigned int max_readers;
    int sync_votes, nosync_votes; /* instances asking; under table_lock */
    procreg_owner self;

    GRWLock txn_lock; /* readers: any transaction; writer: remapping */
    pthread_mutex_t pool_lock;
    MDB_txn *pool[POOL_MAX];
    int pool_n;

    /* Owner liveness. */
    pthread_mutex_t owners_lock;
    GHashTable *owner_cache; /* owner_id* -> owner_rec* */
    GQueue reap_queue;  /* owner_rec*, under owners_lock */
    int monitored;      /* recs with a pidfd */
    int monitor_max;
    int epfd, evfd;
    GThread *monitor;

    /* Change notification. */
    int notify_fd;
    notify_page *notify; /* NULL: no cross-process notification */
    bool notify_writable;
    GThread *watcher;
    uint64_t last_seq; /* watcher thread only */
    pthread_mutex_t inst_lock;
    GPtrArray *instances; /* lmdb_state* with a host */
    gint stop;

    /* Figures for stats(), updated with g_atomic_pointer_add(). */
    gsize map_grows, map_adopted, stale_readers, reaped, events_delivered,
        events_lost, corrupt_reads, log_restarts;
} lmdb_env;

struct lmdb_state {
    lmdb_env *env; /* atomic: replaced in a forked child */
    pthread_mutex_t lock;   /* serialises that replacement */
    procreg_backend_host *host;
    char *path;
    uint64_t map_size;
    unsigned int max_readers;
    bool nosync;
    uint32_t instance_id;
};

/* ------------------------------------------------------------------------ */
/* Process-wide table of open files                                         */

/* pthread mutexes, not pthread_mutex_t: glib 2.74's pthread_mutex_t is a bare futex that
 * ThreadSanitizer cannot see. */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static GHashTable *table;     /* lmdb_env* by (dev, ino) */
static GPtrArray *abandoned;  /* parents' envs in a forked child: kept, never used */
static gint fork_generation;
static gint instance_counter;

static void atfork_prepare(void)
{
    pthread_mutex_lock(&table_lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&table_lock);
}

static void atfork_child(void)
{
    /* The parent's environments, threads and transactions are not ours:
     * lmdb.h forbids using or even closing them here (closing would
     * release the parent's reader slots).  Keep them unreachable for
     * new opens and reachable for leak checkers. */
    g_atomic_int_inc(&fork_generation);
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

static guint owner_hash(gconstpointer p)
{
    const owner_id *o = p;
    return (guint)o->pid * 2654435761u ^ (guint)(o->start_time ^ (o->start_time >> 32));
}

static gboolean owner_equal(gconstpointer a, gconstpointer b)
{
    const owner_id *x = a, *y = b;
    return x->pid == y->pid && x->start_time == y->start_time;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

static int mdb_code(int rc)
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

/* Set @error from LMDB's @rc; returns the procreg code. */
static int mdb_fail(const lmdb_env *env, int rc, const char *what,
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
    return procreg_set_error(error, mdb_code(rc), "lmdb registry '%s': %s: %s%s",
                             env->path, what, mdb_strerror(rc), hint);
}

/* ------------------------------------------------------------------------ */
/* Records                                                                  */

/* The record formats and their checks live in lmdb-codec.c (shared with
 * the fuzz targets); these take LMDB's MDB_val. */
typedef procreg_lmdb_raw_entry raw_entry;

static const char *entry_decode(const MDB_val *v, raw_entry *out)
{
    return procreg_lmdb_entry_decode(v->mv_data, v->mv_size, out);
}

#define meta_decode procreg_lmdb_meta_decode
#define owner_key procreg_lmdb_owner_key

static bool key_split(const MDB_val *k, size_t *ns_len)
{
    return procreg_lmdb_key_split(k->mv_data, k->mv_size, ns_len);
}

static bool key_strings(const MDB_val *k, char **ns, char **name)
{
    return procreg_lmdb_key_strings(k->mv_data, k->mv_size, ns, name);
}

static char *key_printable(const MDB_val *k)
{
    return procreg_lmdb_key_printable(k->mv_data, k->mv_size);
}

static bool owner_from_key(const MDB_val *k, procreg_owner *o)
{
    return procreg_lmdb_owner_from_key(k->mv_data, k->mv_size, o);
}

static bool owner_same(const procreg_owner *a, const procreg_owner *b)
{
    return a->pid == b->pid && a->start_time == b->start_time;
}

/* ------------------------------------------------------------------------ */
/* Owner liveness                                                           */

static int pidfd_open_compat(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

static void monitor_wake(lmdb_env *env)
{
    uint64_t one = 1;
    if (env->evfd >= 0 && write(env->evfd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is already non-zero, a wake is pending. */
    }
}

/* Queue @rec (dead) for reaping; owners_lock held. */
static void queue_reap(lmdb_env *env, owner_rec *rec)
{
    if (rec->queued || env->read_only || env->epfd < 0)
        return;
    rec->queued = true;
    g_queue_push_tail(&env->reap_queue, rec);
    monitor_wake(env);
}

/* First sight of an owner: ask /proc, and watch it with a pidfd when it
 * lives so its death is noticed without asking again. */
static bool owner_probe(lmdb_env *env, const procreg_owner *o)
{
    bool alive = procreg_owner_is_alive(o);
    int pidfd = -1;
    if (alive && env->epfd >= 0 &&
        g_atomic_int_get(&env->monitored) < env->monitor_max) {
        pidfd = pidfd_open_compat(o->pid);
        /* The pid may have died and been reused before the pidfd was
         * opened: check it is still the same process. */
        if (pidfd >= 0 && !procreg_owner_is_alive(o)) {
            close(pidfd);
            pidfd = -1;
            alive = false;
        }
    }
    owner_id id = {o->pid, o->start_time};
    pthread_mutex_lock(&env->owners_lock);
    owner_rec *rec = g_hash_table_lookup(env->owner_cache, &id);
    if (rec != NULL) {
        alive = rec->alive;
    } else if (pidfd >= 0 || !alive) {
        /* Cache what we can keep true: a monitored live owner, or a dead
         * one (it stays dead). */
        rec = g_new0(owner_rec, 1);
        rec->id = id;
        rec->alive = alive;
        rec->pidfd = -1;
        g_hash_table_insert(env->owner_cache, &rec->id, rec);
        if (pidfd >= 0) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = rec};
            if (epoll_ctl(env->epfd, EPOLL_CTL_ADD, pidfd, &ev) == 0) {
                rec->pidfd = pidfd;
                pidfd = -1;
                g_atomic_int_inc(&env->monitored);
            } else {
                g_hash_table_remove(env->owner_cache, &id);
                rec = NULL;
            }
        }
        if (rec != NULL && !alive)
            queue_reap(env, rec);
    }
    pthread_mutex_unlock(&env->owners_lock);
    if (pidfd >= 0)
        close(pidfd);
    return alive;
}

/* Whether @o is alive: the cache for owners seen before, else a probe. */
static bool owner_alive(lmdb_env *env, const procreg_owner *o)
{
    if (env->stale_boot)
        return false;
    if (owner_same(o, &env->self))
        return true;
    owner_id id = {o->pid, o->start_time};
    pthread_mutex_lock(&env->owners_lock);
    owner_rec *rec = g_hash_table_lookup(env->owner_cache, &id);
    int known = rec == NULL ? -1 : rec->alive;
    pthread_mutex_unlock(&env->owners_lock);
    return known >= 0 ? known != 0 : owner_probe(env, o);
}

/* ------------------------------------------------------------------------ */
/* Transactions                                                             */

/* Adopt a map size another process chose (MDB_MAP_RESIZED). */
static int map_adopt(lmdb_env *env)
{
    g_rw_lock_writer_lock(&env->txn_lock);
    int rc = mdb_env_set_mapsize(env->mdb, 0);
    g_rw_lock_writer_unlock(&env->txn_lock);
    if (rc == 0)
        g_atomic_pointer_add(&env->map_adopted, 1);
    return rc;
}

/* Grow the map after MDB_MAP_FULL at size @seen: adopt a larger size a
 * neighbour already set, else double.  Returns 0 or an LMDB code
 * (MDB_MAP_FULL at the ceiling). */
static int map_grow(lmdb_env *env, size_t seen)
{
    g_rw_lock_writer_lock(&env->txn_lock);
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
    g_rw_lock_writer_unlock(&env->txn_lock);
    return rc;
}

static void reader_check(lmdb_env *env)
{
    int dead = 0;
    if (mdb_reader_check(env->mdb, &dead) == 0 && dead > 0)
        g_atomic_pointer_add(&env->stale_readers, dead);
}

/* Drop the pooled read transactions (they hold reader slots). */
static void pool_drain(lmdb_env *env)
{
    pthread_mutex_lock(&env->pool_lock);
    while (env->pool_n > 0)
        mdb_txn_abort(env->pool[--env->pool_n]);
    pthread_mutex_unlock(&env->pool_lock);
}

/* Begin a read transaction; on success txn_lock is held for reading until
 * read_end().  Returns 0 or an LMDB code. */
static int read_begin(lmdb_env *env, MDB_txn **out)
{
    int rc = 0;
    for (int attempt = 0; attempt < TXN_ATTEMPTS; attempt++) {
        g_rw_lock_reader_lock(&env->txn_lock);
        MDB_txn *txn = NULL;
        pthread_mutex_lock(&env->pool_lock);
        if (env->pool_n > 0)
            txn = env->pool[--env->pool_n];
        pthread_mutex_unlock(&env->pool_lock);
        if (txn != NULL) {
            rc = mdb_txn_renew(txn);
            if (rc != 0)
                mdb_txn_abort(txn);
        } else {
            rc = mdb_txn_begin(env->mdb, NULL, MDB_RDONLY, &txn);
        }
        if (rc == 0) {
            *out = txn;
            return 0;
        }
        g_rw_lock_reader_unlock(&env->txn_lock);
        if (rc == MDB_MAP_RESIZED) {
            if (map_adopt(env) != 0)
                break;
        } else if (rc == MDB_READERS_FULL) {
            reader_check(env);
            pool_drain(env);
            if (attempt > 2)
                break;
        } else {
            break;
        }
    }
    return rc;
}

static void read_end(lmdb_env *env, MDB_txn *txn)
{
    mdb_txn_reset(txn);
    pthread_mutex_lock(&env->pool_lock);
    if (env->pool_n < POOL_MAX) {
        env->pool[env->pool_n++] = txn;
        txn = NULL;
    }
    pthread_mutex_unlock(&env->pool_lock);
    if (txn != NULL)
        mdb_txn_abort(txn);
    g_rw_lock_reader_unlock(&env->txn_lock);
}

/* What a write step reports back to write_txn(). */
typedef struct {
    int mdb_rc;          /* an LMDB failure: abort (and grow, retry) */
    const char *what;    /* the step that failed, for the message */
    char *corrupt;       /* a corrupt record: g_malloc'ed description */
    bool dirty;          /* something to commit */
    unsigned int events; /* change-log records appended */
    uint64_t seq;        /* last change number used */
    bool seq_loaded;
    uint64_t first_seq;  /* first change number of this transaction */
} wstate;

/* One attempt of a write: returns a procreg code (0 or the operation's
 * answer, e.g. PROCREG_EEXISTS); LMDB failures go to @w.  It is called
 * again from scratch after the map grows. */
typedef int (*write_step)(lmdb_env *env, MDB_txn *txn, void *ctx,
                          wstate *w);

static void notify_commit(lmdb_env *env)
{
    notify_page *p = env->notify;
    if (p == NULL || !env->notify_writable)
        return;
    __atomic_add_fetch(&p->counter, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&p->waiters, __ATOMIC_SEQ_CST) != 0)
        syscall(SYS_futex, &p->counter, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Whether the file system of the registry has (almost) no room left:
 * less than 1 MiB, or less than 1% of it. */
static bool disk_full(const lmdb_env *env)
{
    struct statvfs sv;
    int fd = -1;
    if (mdb_env_get_fd(env->mdb, &fd) != 0 || fstatvfs(fd, &sv) != 0)
        return false;
    uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    uint64_t size = (uint64_t)sv.f_blocks * sv.f_frsize;
    return avail < ((uint64_t)1 << 20) || avail < size / 100;
}

static int write_txn(lmdb_env *env, const char *what, write_step step,
                     void *ctx, GError **error)
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
        g_rw_lock_reader_lock(&env->txn_lock);
        rc = mdb_txn_begin(env->mdb, NULL, 0, &txn);
        if (rc != 0) {
            g_rw_lock_reader_unlock(&env->txn_lock);
            if (rc == MDB_MAP_RESIZED && map_adopt(env) == 0)
                continue;
            return mdb_fail(env, rc, what, error);
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
        g_rw_lock_reader_unlock(&env->txn_lock);
        if (w.corrupt != NULL) {
            g_atomic_pointer_add(&env->corrupt_reads, 1);
            rc = procreg_set_error(error, PROCREG_EBACKEND,
                                   "lmdb registry '%s': %s", env->path,
                                   w.corrupt);
            g_free(w.corrupt);
            return rc;
        }
        if (w.mdb_rc == MDB_MAP_FULL) {
            int grc = map_grow(env, info.me_mapsize);
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
            reader_check(env);
            continue;
        }
        if ((w.mdb_rc == EIO || w.mdb_rc == ENOSPC) && disk_full(env)) {
            /* LMDB reports a short write (a full disk) as EIO. */
            return procreg_set_error(error, PROCREG_EFULL,
                                     "lmdb registry '%s': %s: no space left "
                                     "on its file system", env->path, what);
        }
        if (w.mdb_rc != 0) {
            char *msg = g_strdup_printf("%s: %s", what, w.what ? w.what : "");
            rc = mdb_fail(env, w.mdb_rc, msg, error);
            g_free(msg);
            return rc;
        }
        if (w.events > 0)
            notify_commit(env);
        return result;
    }
    return mdb_fail(env, rc ? rc : MDB_MAP_FULL, what, error);
}

/* ---- steps shared by the writes ---- */

static bool w_check(wstate *w, int rc, const char *what)
{
    if (rc == 0)
        return true;
    if (w->mdb_rc == 0) {
        w->mdb_rc = rc;
        w->what = what;
    }
    return false;
}

static bool counter_next(lmdb_env *env, MDB_txn *txn, const char *name,
                         uint64_t *out, wstate *w)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    uint64_t n = 0;
    int rc = mdb_get(txn, env->db_meta, &k, &v);
    if (rc == 0) {
        if (v.mv_size != sizeof n) {
            w->corrupt = g_strdup_printf("the '%s' counter is corrupt", name);
            return false;
        }
        memcpy(&n, v.mv_data, sizeof n);
    } else if (rc != MDB_NOTFOUND) {
        return w_check(w, rc, "reading a counter");
    }
    n++;
    v.mv_size = sizeof n;
    v.mv_data = &n;
    if (!w_check(w, mdb_put(txn, env->db_meta, &k, &v, 0), "writing a counter"))
        return false;
    *out = n;
    return true;
}

/* The last change number in the log, 0 when it is empty.  The log is
 * never trimmed to nothing, so this is also the change counter. */
static int log_last(lmdb_env *env, MDB_txn *txn, uint64_t *out)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, env->db_events, &c);
    if (rc != 0)
        return rc;
    MDB_val k, v;
    *out = 0;
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size != sizeof *out)
        rc = MDB_CORRUPTED;
    else if (rc == 0)
        memcpy(out, k.mv_data, sizeof *out);
    *out = GUINT64_FROM_BE(*out);
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Append one change to the log.  @origin_instance 0: a change no
 * registry call asked for (reaping), reported to every instance. */
static bool log_change(lmdb_env *env, MDB_txn *txn, wstate *w,
                       procreg_event_kind kind, procreg_event_reason reason,
                       uint32_t origin_instance, const MDB_val *key,
                       const raw_entry *e)
{
    if (!w->seq_loaded) {
        int rc = log_last(env, txn, &w->seq);
        if (rc == MDB_CORRUPTED || (rc == 0 && w->seq == UINT64_MAX)) {
            /* The log is only a notification channel: a damaged one (a
             * malformed or exhausted last number) starts again at 1, and
             * the watchers notice the restart and follow. */
            rc = mdb_drop(txn, env->db_events, 0);
            w->seq = 0;
            if (rc == 0)
                g_atomic_pointer_add(&env->log_restarts, 1);
        }
        if (!w_check(w, rc, "reading the change log"))
            return false;
        w->seq_loaded = true;
        w->first_seq = w->seq + 1;
    }
    uint64_t seq = ++w->seq;
    uint64_t be = GUINT64_TO_BE(seq);
    MDB_val k = {sizeof be, &be};
    MDB_val v = {procreg_lmdb_event_size(key->mv_size, e), NULL};
    int rc = mdb_put(txn, env->db_events, &k, &v, MDB_RESERVE | MDB_APPEND);
    if (rc == MDB_KEYEXIST) {
        /* Only a damaged log (a key above ours) can refuse an append. */
        g_free(w->corrupt);
        w->corrupt = g_strdup("the change log is damaged (a record is "
                              "numbered above the last change)");
        return false;
    }
    if (!w_check(w, rc, "appending to the change log"))
        return false;
    procreg_lmdb_event_encode(kind, reason, (uint32_t)env->self.pid,
                              origin_instance, key->mv_data, key->mv_size, e,
                              v.mv_data);
    w->events++;
    w->dirty = true;
    return true;
}

/* Trim the log to LOG_KEEP records, never dropping a record of this
 * transaction; the last step of every write that logged. */
static bool log_finish(lmdb_env *env, MDB_txn *txn, wstate *w)
{
    if (w->events == 0 || w->seq <= LOG_KEEP)
        return true;
    uint64_t cutoff = MIN(w->seq - LOG_KEEP, w->first_seq - 1);
    MDB_cursor *c;
    if (!w_check(w, mdb_cursor_open(txn, env->db_events, &c), "trimming the log"))
        return false;
    MDB_val ck, cv;
    int rc = mdb_cursor_get(c, &ck, &cv, MDB_FIRST);
    while (rc == 0) {
        uint64_t s = 0;
        if (ck.mv_size == sizeof s)
            memcpy(&s, ck.mv_data, sizeof s);
        if (GUINT64_FROM_BE(s) > cutoff)
            break;
        /* After a delete the cursor already stands on the next record;
         * MDB_NEXT returns it (LMDB's C_DEL rule). */
        rc = mdb_cursor_del(c, 0);
        if (rc == 0)
            rc = mdb_cursor_get(c, &ck, &cv, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return w_check(w, rc == MDB_NOTFOUND ? 0 : rc, "trimming the log");
}

/* Delete the entry at @key (decoded as @e) and its owner index record. */
static bool entry_delete(lmdb_env *env, MDB_txn *txn, wstate *w,
                         const MDB_val *key, const raw_entry *e)
{
    uint8_t ok[OWNER_KEY_SIZE];
    owner_key(&e->owner, ok);
    MDB_val k = {sizeof ok, ok}, d = *key;
    int rc = mdb_del(txn, env->db_owners, &k, &d);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return w_check(w, rc, "removing an owner record");
    MDB_val kk = *key;
    if (!w_check(w, mdb_del(txn, env->db_entries, &kk, NULL), "removing an entry"))
        return false;
    w->dirty = true;
    return true;
}

static bool entry_put(lmdb_env *env, MDB_txn *txn, wstate *w,
                      const MDB_val *key, const raw_entry *e, bool is_new)
{
    MDB_val k = *key, v = {procreg_lmdb_entry_size(e), NULL};
    if (!w_check(w, mdb_put(txn, env->db_entries, &k, &v, MDB_RESERVE),
                 "writing an entry"))
        return false;
    procreg_lmdb_entry_encode(e, v.mv_data);
    if (is_new) {
        uint8_t ok[OWNER_KEY_SIZE];
        owner_key(&e->owner, ok);
        MDB_val okv = {sizeof ok, ok}, d = *key;
        int rc = mdb_put(txn, env->db_owners, &okv, &d, MDB_NODUPDATA);
        if (rc != 0 && rc != MDB_KEYEXIST)
            return w_check(w, rc, "writing an owner record");
    }
    w->dirty = true;
    return true;
}

static void set_corrupt(wstate *w, const MDB_val *key, const char *why)
{
    char *k = key_printable(key);
    g_free(w->corrupt);
    w->corrupt = g_strdup_printf("corrupt entry '%s': %s", k, why);
    g_free(k);
}

/* Read the entry at @key for a write.  Returns 1 when it is there and
 * its owner lives, 0 when absent (a dead owner's entry is reaped on the
 * way, reason OWNER_EXITED), -1 on failure (in @w). */
static int entry_get_live(lmdb_env *env, MDB_txn *txn, wstate *w,
                          const MDB_val *key, raw_entry *out)
{
    MDB_val k = *key, v;
    int rc = mdb_get(txn, env->db_entries, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (!w_check(w, rc, "reading an entry"))
        return -1;
    const char *why = entry_decode(&v, out);
    if (why != NULL) {
        set_corrupt(w, key, why);
        return -1;
    }
    if (owner_alive(env, &out->owner))
        return 1;
    if (!log_change(env, txn, w, PROCREG_EVENT_UNREGISTERED,
                    PROCREG_REASON_OWNER_EXITED, 0, key, out) ||
        !entry_delete(env, txn, w, key, out))
        return -1;
    g_atomic_pointer_add(&env->reaped, 1);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Filling procreg_entry                                                    */

/* @out from a decoded record; false when its metadata is corrupt. */
static bool fill_entry(const raw_entry *r, procreg_entry *out,
                       const char **why)
{
    GVariant *m = meta_decode(r->has_meta, r->meta, r->meta_len, why);
    if (*why != NULL)
        return false;
    if (out == NULL) {
        if (m != NULL)
            g_variant_unref(m);
        return true;
    }
    out->owner = r->owner;
    out->metadata = m;
    out->registered_at = r->registered_at;
    out->revision = r->revision;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Opening a file                                                           */

static bool opt_uint(const procreg_spec *spec, const char *name, uint64_t def,
                     uint64_t min, uint64_t max, uint64_t *out,
                     GError **error)
{
    if (procreg_spec_get_uint64(spec, name, def, out, error) != 0)
        return false;
    if (*out < min || *out > max) {
        procreg_set_error(error, PROCREG_EINVAL,
                          "lmdb: %s=%" G_GUINT64_FORMAT " is out of range "
                          "(%" G_GUINT64_FORMAT " to %" G_GUINT64_FORMAT ")",
                          name, (guint64)*out, (guint64)min, (guint64)max);
        return false;
    }
    return true;
}

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

/* $XDG_RUNTIME_DIR/procreg/registry.mdb, else /tmp/procreg-UID/registry.mdb. */
static char *default_path(GError **error)
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
 * an earlier boot just answers "absent" for all of them. */
static int boot_check(lmdb_env *env, MDB_txn *txn, GError **error)
{
    char boot[BOOT_ID_LEN];
    if (!read_boot_id(boot))
        return 0;
    MDB_val bk = {7, "boot_id"}, bv;
    int rc = mdb_get(txn, env->db_meta, &bk, &bv);
    bool same = rc == 0 && bv.mv_size == BOOT_ID_LEN &&
                memcmp(bv.mv_data, boot, BOOT_ID_LEN) == 0;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return mdb_fail(env, rc, "reading the boot id", error);
    if (same)
        return 0;
    if (env->read_only) {
        env->stale_boot = rc == 0;
        return 0;
    }
    wstate w = {0};
    if (rc == 0) {
        /* Collect, then delete: deleting moves what values point at. */
        GPtrArray *keys = g_ptr_array_new_with_free_func(
            (GDestroyNotify)g_bytes_unref);
        MDB_cursor *c;
        rc = mdb_cursor_open(txn, env->db_entries, &c);
        MDB_val k, v;
        for (int crc = rc == 0 ? mdb_cursor_get(c, &k, &v, MDB_FIRST) : rc;
             crc == 0; crc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
            g_ptr_array_add(keys, g_bytes_new(k.mv_data, k.mv_size));
        if (rc == 0)
            mdb_cursor_close(c);
        for (guint i = 0; rc == 0 && i < keys->len; i++) {
            gsize len;
            MDB_val key = {0, NULL};
            key.mv_data = (void *)g_bytes_get_data(keys->pdata[i], &len);
            key.mv_size = len;
            raw_entry e;
            if (mdb_get(txn, env->db_entries, &key, &v) != 0 ||
                entry_decode(&v, &e) != NULL)
                continue; /* damaged: left for the operator to see */
            /* Copy the metadata out before the value moves. */
            GBytes *meta = g_bytes_new(e.meta, e.meta_len);
            e.meta = g_bytes_get_data(meta, NULL);
            if (!log_change(env, txn, &w, PROCREG_EVENT_UNREGISTERED,
                            PROCREG_REASON_OWNER_EXITED, 0, &key, &e) ||
                !w_check(&w, mdb_del(txn, env->db_entries, &key, NULL),
                         "removing an entry of an earlier boot"))
                rc = w.mdb_rc ? w.mdb_rc : MDB_CORRUPTED;
            g_bytes_unref(meta);
        }
        g_ptr_array_unref(keys);
        if (rc == 0)
            rc = mdb_drop(txn, env->db_owners, 0);
        if (rc == 0 && w.corrupt == NULL && log_finish(env, txn, &w))
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
            return mdb_fail(env, rc, "removing the entries of an earlier boot",
                            error);
    }
    bv.mv_size = BOOT_ID_LEN;
    bv.mv_data = boot;
    rc = mdb_put(txn, env->db_meta, &bk, &bv, 0);
    return rc == 0 ? 0 : mdb_fail(env, rc, "writing the boot id", error);
}

/* Check the main database names only our databases; create them (and the
 * format marker) on a new file, check the marker on an old one. */
static int open_dbs(lmdb_env *env, GError **error)
{
    static const char *const ours[] = {"entries", "owners", "meta", "events"};
    MDB_txn *txn;
    int rc = mdb_txn_begin(env->mdb, NULL, env->read_only ? MDB_RDONLY : 0,
                           &txn);
    if (rc != 0)
        return mdb_fail(env, rc, "opening", error);
    MDB_dbi main_dbi;
    MDB_cursor *c = NULL;
    rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (rc == 0)
        rc = mdb_cursor_open(txn, main_dbi, &c);
    MDB_val k, v;
    int n_main = 0;
    bool foreign = false;
    for (int crc = rc == 0 ? mdb_cursor_get(c, &k, &v, MDB_FIRST) : rc;
         crc == 0; crc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        bool known = false;
        for (size_t i = 0; i < G_N_ELEMENTS(ours); i++)
            known |= k.mv_size == strlen(ours[i]) &&
                     memcmp(k.mv_data, ours[i], k.mv_size) == 0;
        foreign |= !known;
        n_main++;
    }
    if (c != NULL)
        mdb_cursor_close(c);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return mdb_fail(env, rc, "reading the main database", error);
    }
    if (foreign) {
        mdb_txn_abort(txn);
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "lmdb registry '%s': this LMDB file is not "
                                 "a procreg registry (it holds other "
                                 "databases)", env->path);
    }
    bool fresh = n_main == 0;
    if (fresh && env->read_only) {
        mdb_txn_abort(txn);
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "lmdb registry '%s' is empty and read-only "
                                 "(%s)", env->path, env->read_only_why);
    }
    unsigned int create = fresh ? MDB_CREATE : 0;
    rc = mdb_dbi_open(txn, "entries", create, &env->db_entries);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "owners", create | MDB_DUPSORT, &env->db_owners);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", create, &env->db_meta);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "events", create, &env->db_events);
    if (rc != 0) {
        mdb_txn_abort(txn);
        if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE)
            return procreg_set_error(error, PROCREG_EBACKEND,
                                     "lmdb registry '%s': not a procreg "
                                     "registry, or one written by an "
                                     "incompatible version (%s)", env->path,
                                     mdb_strerror(rc));
        return mdb_fail(env, rc, "opening the databases", error);
    }
    MDB_val fk = {6, "format"}, fv;
    if (fresh) {
        fv.mv_size = strlen(FORMAT_VALUE);
        fv.mv_data = FORMAT_VALUE;
        rc = mdb_put(txn, env->db_meta, &fk, &fv, 0);
    } else {
        rc = mdb_get(txn, env->db_meta, &fk, &fv);
        if (rc == 0 && (fv.mv_size != strlen(FORMAT_VALUE) ||
                        memcmp(fv.mv_data, FORMAT_VALUE, fv.mv_size) != 0)) {
            char *got = g_strndup(fv.mv_data, MIN(fv.mv_size, 64));
            mdb_txn_abort(txn);
            rc = procreg_set_error(error, PROCREG_EBACKEND,
                                   "lmdb registry '%s' has format '%s'; this "
                                   "procreg reads '%s'", env->path, got,
                                   FORMAT_VALUE);
            g_free(got);
            return rc;
        }
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return mdb_fail(env, rc, "reading the format marker", error);
    }
    rc = boot_check(env, txn, error);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn);
    return rc == 0 ? 0 : mdb_fail(env, rc, "opening the databases", error);
}

/* FILE-notify: the shared page whose counter wakes the watchers. */
static void open_notify(lmdb_env *env)
{
    char *path = g_strconcat(env->path, "-notify", NULL);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    bool writable = fd >= 0;
    if (fd < 0)
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    g_free(path);
    if (fd < 0)
        return;
    struct stat st;
    /* Allocate the page now: touching a hole of a file on a full disk
     * through a mapping would raise SIGBUS. */
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        (writable && st.st_size < NOTIFY_SIZE &&
         posix_fallocate(fd, 0, NOTIFY_SIZE) != 0) ||
        (!writable && st.st_size < NOTIFY_SIZE)) {
        close(fd);
        return;
    }
    void *p = mmap(NULL, NOTIFY_SIZE, writable ? PROT_READ | PROT_WRITE
                                               : PROT_READ,
                   MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return;
    }
    notify_page *page = p;
    uint32_t zero = 0;
    if (writable)
        __atomic_compare_exchange_n(&page->magic, &zero, NOTIFY_MAGIC, false,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&page->magic, __ATOMIC_SEQ_CST) != NOTIFY_MAGIC) {
        munmap(p, NOTIFY_SIZE);
        close(fd);
        return;
    }
    env->notify_fd = fd;
    env->notify = page;
    env->notify_writable = writable;
}

static gpointer monitor_main(gpointer data);
static gpointer watcher_main(gpointer data);

static void env_free(lmdb_env *env)
{
    if (env->monitor != NULL) {
        g_atomic_int_set(&env->stop, 1);
        monitor_wake(env);
        g_thread_join(env->monitor);
    }
    if (env->watcher != NULL) {
        g_atomic_int_set(&env->stop, 1);
        __atomic_add_fetch(&env->notify->counter, 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, &env->notify->counter, FUTEX_WAKE, INT_MAX, NULL,
                NULL, 0);
        g_thread_join(env->watcher);
    }
    if (env->owner_cache != NULL) {
        GHashTableIter it;
        gpointer rec;
        g_hash_table_iter_init(&it, env->owner_cache);
        while (g_hash_table_iter_next(&it, NULL, &rec))
            if (((owner_rec *)rec)->pidfd >= 0)
                close(((owner_rec *)rec)->pidfd);
        g_hash_table_unref(env->owner_cache);
    }
    g_queue_clear(&env->reap_queue);
    if (env->epfd >= 0)
        close(env->epfd);
    if (env->evfd >= 0)
        close(env->evfd);
    if (env->notify != NULL)
        munmap(env->notify, NOTIFY_SIZE);
    if (env->notify_fd >= 0)
        close(env->notify_fd);
    if (env->mdb != NULL) {
        pool_drain(env);
        mdb_env_close(env->mdb);
    }
    if (env->instances != NULL)
        g_ptr_array_unref(env->instances);
    g_rw_lock_clear(&env->txn_lock);
    pthread_mutex_destroy(&env->pool_lock);
    pthread_mutex_destroy(&env->owners_lock);
    pthread_mutex_destroy(&env->inst_lock);
    g_free(env->read_only_why);
    g_free(env->path);
    g_free(env);
}

static int env_open(const char *path, const lmdb_state *st, lmdb_env **out,
                    GError **error)
{
    lmdb_env *env = g_new0(lmdb_env, 1);
    env->path = g_strdup(path);
    env->generation = (guint)g_atomic_int_get(&fork_generation);
    env->epfd = env->evfd = env->notify_fd = -1;
    g_rw_lock_init(&env->txn_lock);
    pthread_mutex_init(&env->pool_lock, NULL);
    pthread_mutex_init(&env->owners_lock, NULL);
    pthread_mutex_init(&env->inst_lock, NULL);
    g_queue_init(&env->reap_queue);
    env->owner_cache = g_hash_table_new_full(owner_hash, owner_equal, NULL, g_free);
    env->instances = g_ptr_array_new();
    procreg_owner_self(&env->self);

    int rc = mdb_env_create(&env->mdb);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(env->mdb, 4);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(env->mdb, st->max_readers);
    if (rc == 0)
        rc = mdb_env_set_mapsize(env->mdb, st->map_size);
    if (rc != 0) {
        if (env->mdb != NULL)
            mdb_env_close(env->mdb);
        env->mdb = NULL;
        rc = mdb_fail(env, rc, "creating the environment", error);
        env_free(env);
        return rc;
    }
    unsigned int flags = MDB_NOSUBDIR | MDB_NOTLS |
                         (st->nosync ? MDB_NOMETASYNC : 0);
    rc = mdb_env_open(env->mdb, path, flags, 0600);
    if (rc == EACCES || rc == EROFS) {
        /* A file we may read but not write: serve lookups, refuse
         * changes with a message that says why. */
        env->read_only_why = g_strdup(g_strerror(rc));
        mdb_env_close(env->mdb);
        env->mdb = NULL;
        int rc2 = mdb_env_create(&env->mdb);
        if (rc2 == 0)
            rc2 = mdb_env_set_maxdbs(env->mdb, 4);
        if (rc2 == 0)
            rc2 = mdb_env_open(env->mdb, path, flags | MDB_RDONLY, 0600);
        if (rc2 == 0)
            env->read_only = true;
        else if (rc2 != EACCES && rc2 != EROFS)
            rc = rc2;
        if (rc2 == 0)
            rc = 0;
    }
    if (rc != 0) {
        const char *why = rc == MDB_INVALID ? "not an LMDB file"
                          : rc == MDB_VERSION_MISMATCH
                              ? "written by an incompatible LMDB version"
                          : rc == ENOENT ? "its directory does not exist"
                                         : mdb_strerror(rc);
        int code = rc == ENOENT ? PROCREG_EINVAL : mdb_code(rc);
        rc = procreg_set_error(error, code, "lmdb: cannot open the registry "
                               "file '%s': %s", path, why);
        mdb_env_close(env->mdb);
        env->mdb = NULL;
        env_free(env);
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
        env_free(env);
        return rc;
    }
    if ((uint64_t)fst.st_size < ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize) {
        rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "lmdb registry '%s' is damaged: the file has "
                               "%jd bytes but its last page ends at %"
                               G_GUINT64_FORMAT, path, (intmax_t)fst.st_size,
                               (guint64)(info.me_last_pgno + 1) * ms.ms_psize);
        env_free(env);
        return rc;
    }
    env->dev = fst.st_dev;
    env->ino = fst.st_ino;
    env->max_readers = info.me_maxreaders;
    rc = open_dbs(env, error);
    if (rc != 0) {
        env_free(env);
        return rc;
    }
    reader_check(env);
    open_notify(env);

    env->epfd = epoll_create1(EPOLL_CLOEXEC);
    env->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct rlimit rl;
    env->monitor_max = MONITOR_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        env->monitor_max = (int)MIN((rlim_t)MONITOR_MAX, rl.rlim_cur / 8);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (env->epfd >= 0 && env->evfd >= 0 &&
        epoll_ctl(env->epfd, EPOLL_CTL_ADD, env->evfd, &ev) == 0) {
        env->monitor = g_thread_new("procreg-lmdb-owners", monitor_main, env);
    } else {
        if (env->epfd >= 0)
            close(env->epfd);
        if (env->evfd >= 0)
            close(env->evfd);
        env->epfd = env->evfd = -1;
    }
    *out = env;
    return 0;
}

/* Apply the durability all instances agree on: nosync only when every
 * instance of this process asked for it.  table_lock held. */
static void env_durability(lmdb_env *env)
{
    if (env->read_only)
        return;
    g_rw_lock_writer_lock(&env->txn_lock);
    mdb_env_set_flags(env->mdb, MDB_NOMETASYNC,
                      env->sync_votes == 0 && env->nosync_votes > 0);
    g_rw_lock_writer_unlock(&env->txn_lock);
}

/* The shared env of @st->path, opened if needed.  Adds @st's votes. */
static int env_acquire(lmdb_state *st, lmdb_env **out, GError **error)
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
        rc = env_open(st->path, st, &env, error);
        if (rc == 0)
            g_hash_table_add(table, env);
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

static void env_release(lmdb_env *env, bool nosync)
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
        env_free(env);
}

static void attach_instance(lmdb_env *env, lmdb_state *st)
{
    if (st->host == NULL)
        return;
    pthread_mutex_lock(&env->inst_lock);
    g_ptr_array_add(env->instances, st);
    bool start = env->watcher == NULL && env->notify != NULL &&
                 env->notify_writable;
    if (start) {
        /* Changes committed before this point are history, not events. */
        MDB_txn *txn;
        env->last_seq = 0;
        if (read_begin(env, &txn) == 0) {
            log_last(env, txn, &env->last_seq);
            read_end(env, txn);
        }
        env->watcher = g_thread_new("procreg-lmdb-watch", watcher_main, env);
    }
    pthread_mutex_unlock(&env->inst_lock);
}

static void detach_instance(lmdb_env *env, lmdb_state *st)
{
    pthread_mutex_lock(&env->inst_lock);
    g_ptr_array_remove(env->instances, st);
    pthread_mutex_unlock(&env->inst_lock);
}

/* The env of @st for this process: after fork() the child opens the file
 * again, once, and leaves the parent's env alone. */
static lmdb_env *state_env(lmdb_state *st, int *rc, GError **error)
{
    lmdb_env *env = g_atomic_pointer_get(&st->env);
    if (G_LIKELY(env->generation == (guint)g_atomic_int_get(&fork_generation)))
        return env;
    pthread_mutex_lock(&st->lock);
    env = st->env;
    if (env->generation != (guint)g_atomic_int_get(&fork_generation)) {
        lmdb_env *fresh = NULL;
        *rc = env_acquire(st, &fresh, error);
        if (*rc != 0) {
            pthread_mutex_unlock(&st->lock);
            return NULL;
        }
        attach_instance(fresh, st);
        g_atomic_pointer_set(&st->env, fresh);
        env = fresh;
    }
    pthread_mutex_unlock(&st->lock);
    return env;
}

#define STATE_ENV(st, error)                                                  \
    int env_rc_ = 0;                                                          \
    lmdb_env *env = state_env((st), &env_rc_, (error));                       \
    if (env == NULL)                                                          \
        return env_rc_;

/* ------------------------------------------------------------------------ */
/* Reaping and the owner monitor                                            */

typedef struct {
    procreg_owner owner;
} reap_ctx;

static int reap_step(lmdb_env *env, MDB_txn *txn, void *data, wstate *w)
{
    reap_ctx *ctx = data;
    uint8_t okb[OWNER_KEY_SIZE];
    owner_key(&ctx->owner, okb);
    MDB_cursor *c;
    if (!w_check(w, mdb_cursor_open(txn, env->db_owners, &c), "reaping"))
        return 0;
    MDB_val ok = {sizeof okb, okb}, ek;
    GPtrArray *keys = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_bytes_unref);
    int rc = mdb_cursor_get(c, &ok, &ek, MDB_SET_KEY);
    while (rc == 0) {
        g_ptr_array_add(keys, g_bytes_new(ek.mv_data, ek.mv_size));
        rc = mdb_cursor_get(c, &ok, &ek, MDB_NEXT_DUP);
    }
    mdb_cursor_close(c);
    if (!w_check(w, rc == MDB_NOTFOUND ? 0 : rc, "reaping")) {
        g_ptr_array_unref(keys);
        return 0;
    }
    int n = 0;
    for (guint i = 0; i < keys->len; i++) {
        gsize len;
        const void *kb = g_bytes_get_data(keys->pdata[i], &len);
        MDB_val k = {len, (void *)kb}, v;
        raw_entry e;
        rc = mdb_get(txn, env->db_entries, &k, &v);
        if (rc == MDB_NOTFOUND || (rc == 0 && (entry_decode(&v, &e) != NULL ||
                                               !owner_same(&e.owner, &ctx->owner)))) {
            /* A stale index record: drop it alone. */
            MDB_val kk = {sizeof okb, okb}, d = k;
            rc = mdb_del(txn, env->db_owners, &kk, &d);
            w->dirty = true;
            if (!w_check(w, rc == MDB_NOTFOUND ? 0 : rc, "reaping"))
                break;
            continue;
        }
        if (!w_check(w, rc, "reaping") ||
            !log_change(env, txn, w, PROCREG_EVENT_UNREGISTERED,
                        PROCREG_REASON_OWNER_EXITED, 0, &k, &e) ||
            !entry_delete(env, txn, w, &k, &e))
            break;
        n++;
    }
    g_ptr_array_unref(keys);
    if (w->mdb_rc == 0)
        log_finish(env, txn, w);
    return n;
}

/* Whether @o still holds entries (a read, so N processes noticing one
 * death do not all queue up for the write lock). */
static bool owner_has_entries(lmdb_env *env, const procreg_owner *o)
{
    MDB_txn *txn;
    if (read_begin(env, &txn) != 0)
        return true;
    uint8_t okb[OWNER_KEY_SIZE];
    owner_key(o, okb);
    MDB_val k = {sizeof okb, okb}, v;
    bool has = mdb_get(txn, env->db_owners, &k, &v) == 0;
    read_end(env, txn);
    return has;
}

static void reap_owner(lmdb_env *env, const procreg_owner *o)
{
    if (!owner_has_entries(env, o))
        return;
    reap_ctx ctx = {*o};
    int n = write_txn(env, "reap a dead owner's entries", reap_step, &ctx,
                      NULL);
    if (n > 0)
        g_atomic_pointer_add(&env->reaped, n);
}

/* Every owner in the file, so deaths are noticed (and the dead reaped)
 * even for entries nobody here has looked at. */
static void sweep_owners(lmdb_env *env)
{
    MDB_txn *txn;
    if (read_begin(env, &txn) != 0)
        return;
    GArray *owners = g_array_new(FALSE, FALSE, sizeof(procreg_owner));
    MDB_cursor *c;
    if (mdb_cursor_open(txn, env->db_owners, &c) == 0) {
        MDB_val k, v;
        int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        while (rc == 0 && owners->len < 65536) {
            procreg_owner o;
            if (owner_from_key(&k, &o))
                g_array_append_val(owners, o);
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT_NODUP);
        }
        mdb_cursor_close(c);
    }
    read_end(env, txn);
    for (guint i = 0; i < owners->len && !g_atomic_int_get(&env->stop); i++)
        owner_alive(env, &g_array_index(owners, procreg_owner, i));
    g_array_unref(owners);
}

static gpointer monitor_main(gpointer data)
{
    lmdb_env *env = data;
    sweep_owners(env);
    while (!g_atomic_int_get(&env->stop)) {
        struct epoll_event evs[32];
        int n = epoll_wait(env->epfd, evs, G_N_ELEMENTS(evs), -1);
        if (n < 0 && errno != EINTR)
            break;
        pthread_mutex_lock(&env->owners_lock);
        for (int i = 0; i < n; i++) {
            owner_rec *rec = evs[i].data.ptr;
            if (rec == NULL) {
                uint64_t cnt;
                if (read(env->evfd, &cnt, sizeof cnt) < 0) {
                    /* EAGAIN: already drained */
                }
                continue;
            }
            /* The pidfd is readable: the process has exited. */
            rec->alive = false;
            if (rec->pidfd >= 0) {
                epoll_ctl(env->epfd, EPOLL_CTL_DEL, rec->pidfd, NULL);
                close(rec->pidfd);
                rec->pidfd = -1;
                g_atomic_int_dec_and_test(&env->monitored);
            }
            queue_reap(env, rec);
        }
        while (!g_atomic_int_get(&env->stop) &&
               !g_queue_is_empty(&env->reap_queue)) {
            owner_rec *rec = g_queue_pop_head(&env->reap_queue);
            procreg_owner o = {rec->id.pid, rec->id.start_time};
            pthread_mutex_unlock(&env->owners_lock);
            reap_owner(env, &o);
            pthread_mutex_lock(&env->owners_lock);
            /* Forget it: a later sight probes again (and finds it dead). */
            g_hash_table_remove(env->owner_cache, &rec->id);
        }
        pthread_mutex_unlock(&env->owners_lock);
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The change-log watcher                                                   */

typedef procreg_lmdb_change change;

static void change_clear(gpointer p)
{
    procreg_lmdb_change_clear(p);
}

static bool change_decode(const MDB_val *v, change *out)
{
    return procreg_lmdb_change_decode(v->mv_data, v->mv_size, out);
}

/* Read the log past last_seq and report each change to the instances
 * that did not make it. */
static void watcher_drain(lmdb_env *env)
{
    MDB_txn *txn;
    if (read_begin(env, &txn) != 0)
        return;
    GArray *changes = g_array_new(FALSE, TRUE, sizeof(change));
    g_array_set_clear_func(changes, change_clear);
    MDB_cursor *c;
    uint64_t last = 0;
    /* A log that restarted (it was damaged) holds numbers below ours. */
    if (log_last(env, txn, &last) == 0 && last < env->last_seq)
        env->last_seq = 0;
    if (mdb_cursor_open(txn, env->db_events, &c) == 0) {
        uint64_t be = GUINT64_TO_BE(env->last_seq + 1);
        MDB_val k = {sizeof be, &be}, v;
        int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            uint64_t seq = 0;
            if (k.mv_size != sizeof seq)
                continue;
            memcpy(&seq, k.mv_data, sizeof seq);
            seq = GUINT64_FROM_BE(seq);
            if (seq > env->last_seq + 1)
                g_atomic_pointer_add(&env->events_lost,
                                     seq - env->last_seq - 1);
            env->last_seq = seq;
            change ch;
            if (change_decode(&v, &ch))
                g_array_append_val(changes, ch);
            else
                g_atomic_pointer_add(&env->corrupt_reads, 1);
        }
        mdb_cursor_close(c);
    }
    read_end(env, txn);

    pthread_mutex_lock(&env->inst_lock);
    for (guint i = 0; i < changes->len; i++) {
        change *ch = &g_array_index(changes, change, i);
        procreg_entry e = {
            .ns = ch->ns,
            .name = ch->name,
            .owner = {(pid_t)ch->h.pid, ch->h.start_time},
            .metadata = ch->meta,
            .registered_at = ch->h.registered_at,
            .revision = ch->h.revision,
        };
        if (ch->h.kind == PROCREG_EVENT_REGISTERED)
            owner_alive(env, &e.owner); /* watch the new owner */
        bool ours = ch->h.origin_pid == (uint32_t)env->self.pid;
        for (guint j = 0; j < env->instances->len; j++) {
            lmdb_state *st = env->instances->pdata[j];
            if (ours && ch->h.origin_instance == st->instance_id)
                continue; /* its own call: the core reported it already */
            procreg_backend_host_notify(st->host, ch->h.kind, ch->h.reason,
                                        &e);
            g_atomic_pointer_add(&env->events_delivered, 1);
        }
    }
    pthread_mutex_unlock(&env->inst_lock);
    g_array_unref(changes);
}

static gpointer watcher_main(gpointer data)
{
    lmdb_env *env = data;
    notify_page *p = env->notify;
    __atomic_add_fetch(&p->waiters, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        uint32_t seen = __atomic_load_n(&p->counter, __ATOMIC_SEQ_CST);
        watcher_drain(env);
        if (g_atomic_int_get(&env->stop))
            break;
        /* Sleeps only while the counter still reads @seen: a commit
         * after the load above makes this return at once. */
        syscall(SYS_futex, &p->counter, FUTEX_WAIT, seen, NULL, NULL, 0);
    }
    __atomic_sub_fetch(&p->waiters, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* init / destroy                                                           */

static const procreg_backend_option lmdb_options[] = {
    {"path", "registry file (default $XDG_RUNTIME_DIR/procreg/registry.mdb, "
             "else /tmp/procreg-UID/registry.mdb)"},
    {"map_size", "initial map size, e.g. 64MiB; the map grows when full"},
    {"max_readers", "reader slots, set by the file's first opener (default "
                    "4094)"},
    {"durability", "sync (default) or nosync: one flush per commit instead "
                   "of two; a machine crash may undo the last commits, "
                   "never corrupts"},
    {NULL, NULL},
};

static int lmdb_init(const procreg_spec *spec, procreg_backend_host *host,
                     void **state, GError **error)
{
    uint64_t map_size, max_readers;
    if (!opt_uint(spec, "map_size", DEFAULT_MAP_SIZE, MIN_MAP_SIZE,
                  MAX_MAP_SIZE, &map_size, error) ||
        !opt_uint(spec, "max_readers", DEFAULT_MAX_READERS, 1, MAX_MAX_READERS,
                  &max_readers, error))
        return PROCREG_EINVAL;
    const char *dur = procreg_spec_get(spec, "durability");
    bool nosync = false;
    if (dur != NULL && strcmp(dur, "nosync") == 0)
        nosync = true;
    else if (dur != NULL && strcmp(dur, "sync") != 0)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "lmdb: durability must be 'sync' or "
                                 "'nosync', not '%s'", dur);
    const char *path = procreg_spec_get(spec, "path");
    char *resolved;
    if (path != NULL && *path == '\0')
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "lmdb: path is empty");
    if (path != NULL) {
        resolved = g_strdup(path);
    } else {
        resolved = default_path(error);
        if (resolved == NULL)
            return PROCREG_EBACKEND;
    }
    if (g_file_test(resolved, G_FILE_TEST_IS_DIR)) {
        int rc = procreg_set_error(error, PROCREG_EINVAL,
                                   "lmdb: path '%s' is a directory; give a "
                                   "file name, e.g. %s/registry.mdb",
                                   resolved, resolved);
        g_free(resolved);
        return rc;
    }

    lmdb_state *st = g_new0(lmdb_state, 1);
    pthread_mutex_init(&st->lock, NULL);
    st->host = host;
    st->path = resolved;
    st->map_size = map_size;
    st->max_readers = (unsigned int)max_readers;
    st->nosync = nosync;
    st->instance_id = (uint32_t)g_atomic_int_add(&instance_counter, 1) + 1;
    int rc = env_acquire(st, &st->env, error);
    if (rc != 0) {
        pthread_mutex_destroy(&st->lock);
        g_free(st->path);
        g_free(st);
        return rc;
    }
    attach_instance(st->env, st);
    *state = st;
    return 0;
}

static void lmdb_destroy(void *state)
{
    lmdb_state *st = state;
    lmdb_env *env = st->env;
    /* In a forked child that never used this instance, the env is the
     * parent's: leave it alone. */
    if (env->generation == (guint)g_atomic_int_get(&fork_generation)) {
        detach_instance(env, st);
        env_release(env, st->nosync);
    }
    pthread_mutex_destroy(&st->lock);
    g_free(st->path);
    g_free(st);
}

/* ------------------------------------------------------------------------ */
/* Operations                                                               */

static MDB_val key_val(const procreg_key *key)
{
    MDB_val k = {procreg_key_size(key), (void *)procreg_key_bytes(key)};
    return k;
}

typedef struct {
    const procreg_key *key;
    const procreg_record *record;
    uint32_t instance_id;
    const void *meta;
    size_t meta_len;
    procreg_entry *current;
} register_ctx;

static int register_step(lmdb_env *env, MDB_txn *txn, void *data, wstate *w)
{
    register_ctx *ctx = data;
    procreg_entry_clear(ctx->current);
    MDB_val k = key_val(ctx->key);
    raw_entry held;
    int live = entry_get_live(env, txn, w, &k, &held);
    if (live < 0)
        return PROCREG_EBACKEND;
    if (live > 0) {
        const char *why;
        if (!fill_entry(&held, ctx->current, &why)) {
            set_corrupt(w, &k, why);
            return PROCREG_EBACKEND;
        }
        return PROCREG_EEXISTS;
    }
    raw_entry e = {
        .owner = ctx->record->owner,
        .registered_at = ctx->record->registered_at,
        .has_meta = ctx->record->metadata != NULL,
        .meta = ctx->meta,
        .meta_len = ctx->meta_len,
    };
    if (!counter_next(env, txn, "revision", &e.revision, w) ||
        !entry_put(env, txn, w, &k, &e, true) ||
        !log_change(env, txn, w, PROCREG_EVENT_REGISTERED, PROCREG_REASON_NONE,
                    ctx->instance_id, &k, &e) ||
        !log_finish(env, txn, w))
        return PROCREG_EBACKEND;
    if (ctx->current != NULL) {
        ctx->current->owner = e.owner;
        ctx->current->metadata = ctx->record->metadata
                                     ? g_variant_ref(ctx->record->metadata)
                                     : NULL;
        ctx->current->registered_at = e.registered_at;
        ctx->current->revision = e.revision;
    }
    return 0;
}

/* The serialised normal form of @metadata (NULL: none), checked against
 * META_MAX.  *norm holds the bytes; unref it after the write. */
static int meta_bytes(lmdb_env *env, GVariant *metadata, GVariant **norm,
                      const void **data, size_t *len, GError **error)
{
    *norm = NULL;
    *data = NULL;
    *len = 0;
    if (metadata == NULL)
        return 0;
    *norm = g_variant_get_normal_form(metadata);
    *len = g_variant_get_size(*norm);
    if (*len > META_MAX) {
        g_variant_unref(*norm);
        *norm = NULL;
        return procreg_set_error(error, PROCREG_EFULL,
                                 "lmdb registry '%s': metadata of %zu bytes "
                                 "is over the %zu-byte limit", env->path,
                                 *len, META_MAX);
    }
    *data = g_variant_get_data(*norm);
    return 0;
}

static int lmdb_register(void *state, const procreg_key *key,
                         const procreg_record *record, procreg_entry *current,
                         GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    GVariant *norm;
    register_ctx ctx = {.key = key, .record = record,
                        .instance_id = st->instance_id, .current = current};
    int rc = meta_bytes(env, record->metadata, &norm, &ctx.meta, &ctx.meta_len,
                        error);
    if (rc != 0)
        return rc;
    rc = write_txn(env, "register", register_step, &ctx, error);
    if (norm != NULL)
        g_variant_unref(norm);
    if (rc == 0)
        owner_alive(env, &record->owner); /* start watching it */
    return rc;
}

/* Read the entry at @key: 0 with @out filled, PROCREG_ENOTFOUND (absent,
 * or its owner is dead), or a failure.  @why gets a corruption. */
static int read_entry(lmdb_env *env, MDB_txn *txn, const procreg_key *key,
                      raw_entry *out, const char **why)
{
    MDB_val k = key_val(key), v;
    *why = NULL;
    int rc = mdb_get(txn, env->db_entries, &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? PROCREG_ENOTFOUND : mdb_code(rc);
    *why = entry_decode(&v, out);
    if (*why != NULL)
        return PROCREG_EBACKEND;
    return 0;
}

static int lmdb_lookup(void *state, const procreg_key *key, procreg_owner *out)
{
    lmdb_state *st = state;
    STATE_ENV(st, NULL);
    MDB_txn *txn;
    if (read_begin(env, &txn) != 0)
        return PROCREG_EBACKEND;
    raw_entry e;
    const char *why;
    int rc = read_entry(env, txn, key, &e, &why);
    read_end(env, txn);
    if (why != NULL)
        g_atomic_pointer_add(&env->corrupt_reads, 1);
    if (rc != 0)
        return rc == PROCREG_ENOTFOUND ? rc : PROCREG_EBACKEND;
    if (!owner_alive(env, &e.owner))
        return PROCREG_ENOTFOUND;
    *out = e.owner;
    return 0;
}

static int corrupt_error(lmdb_env *env, const MDB_val *k, const char *why,
                         GError **error)
{
    g_atomic_pointer_add(&env->corrupt_reads, 1);
    char *p = key_printable(k);
    int rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "lmdb registry '%s': corrupt entry '%s': %s",
                               env->path, p, why);
    g_free(p);
    return rc;
}

static int lmdb_lookup_entry(void *state, const procreg_key *key,
                             procreg_entry *out, GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    MDB_txn *txn;
    int rc = read_begin(env, &txn);
    if (rc != 0)
        return mdb_fail(env, rc, "lookup", error);
    raw_entry e;
    const char *why = NULL;
    rc = read_entry(env, txn, key, &e, &why);
    bool filled = rc == 0 && fill_entry(&e, out, &why);
    read_end(env, txn);
    MDB_val k = key_val(key);
    if (why != NULL)
        return corrupt_error(env, &k, why, error);
    if (rc == PROCREG_ENOTFOUND)
        return rc;
    if (rc != 0)
        return procreg_set_error(error, rc, "lmdb registry '%s': lookup "
                                 "failed: %s", env->path,
                                 procreg_strerror(rc));
    if (filled && !owner_alive(env, &out->owner)) {
        procreg_entry_clear(out);
        return PROCREG_ENOTFOUND;
    }
    return 0;
}

typedef struct {
    const procreg_key *key;
    uint64_t if_revision;
    uint32_t instance_id;
    procreg_entry *removed;
} unregister_ctx;

static int unregister_step(lmdb_env *env, MDB_txn *txn, void *data, wstate *w)
{
    unregister_ctx *ctx = data;
    procreg_entry_clear(ctx->removed);
    MDB_val k = key_val(ctx->key), v;
    raw_entry e;
    if (ctx->if_revision == 0 && mdb_get(txn, env->db_entries, &k, &v) == 0 &&
        entry_decode(&v, &e) != NULL) {
        /* A damaged entry: removing it by name is how it is repaired (its
         * owner record, if any, is dropped by the next reap of that
         * owner). */
        w_check(w, mdb_del(txn, env->db_entries, &k, NULL), "removing");
        w->dirty = true;
        return 0;
    }
    int live = entry_get_live(env, txn, w, &k, &e);
    int result = 0;
    if (live < 0)
        return PROCREG_EBACKEND;
    if (live == 0) {
        result = PROCREG_ENOTFOUND;
    } else if (ctx->if_revision != 0 && e.revision != ctx->if_revision) {
        result = PROCREG_ECONFLICT;
    } else {
        const char *why = NULL;
        uint64_t rev;
        if (ctx->removed != NULL && !fill_entry(&e, ctx->removed, &why)) {
            /* Removing a damaged entry is how an operator repairs it. */
            procreg_entry_clear(ctx->removed);
            e.has_meta = false;
            e.meta_len = 0;
        }
        /* The reason other processes read: the core removes the entries
         * of owners that died (owner_exited), and a live owner's entry is
         * removed by another process only with PROCREG_FORCE (forced). */
        procreg_event_reason reason =
            !procreg_owner_is_alive(&e.owner) ? PROCREG_REASON_OWNER_EXITED
            : !owner_same(&e.owner, &env->self) ? PROCREG_REASON_FORCED
                                                : PROCREG_REASON_EXPLICIT;
        if (!log_change(env, txn, w, PROCREG_EVENT_UNREGISTERED, reason,
                        ctx->instance_id, &k, &e) ||
            !entry_delete(env, txn, w, &k, &e) ||
            !counter_next(env, txn, "revision", &rev, w))
            return PROCREG_EBACKEND;
    }
    log_finish(env, txn, w);
    return result;
}

static int lmdb_unregister(void *state, const procreg_key *key,
                           uint64_t if_revision, procreg_entry *removed,
                           GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    unregister_ctx ctx = {key, if_revision, st->instance_id, removed};
    return write_txn(env, "unregister", unregister_step, &ctx, error);
}

typedef struct {
    const procreg_key *key;
    GVariant *metadata;
    const void *meta;
    size_t meta_len;
    uint64_t if_revision;
    uint32_t instance_id;
    procreg_entry *updated;
} update_ctx;

static int update_step(lmdb_env *env, MDB_txn *txn, void *data, wstate *w)
{
    update_ctx *ctx = data;
    procreg_entry_clear(ctx->updated);
    MDB_val k = key_val(ctx->key);
    raw_entry e;
    int live = entry_get_live(env, txn, w, &k, &e);
    int result = 0;
    if (live < 0)
        return PROCREG_EBACKEND;
    if (live == 0) {
        result = PROCREG_ENOTFOUND;
    } else if (ctx->if_revision != 0 && e.revision != ctx->if_revision) {
        result = PROCREG_ECONFLICT;
    } else {
        e.has_meta = ctx->metadata != NULL;
        e.meta = ctx->meta;
        e.meta_len = ctx->meta_len;
        if (!counter_next(env, txn, "revision", &e.revision, w) ||
            !entry_put(env, txn, w, &k, &e, false) ||
            !log_change(env, txn, w, PROCREG_EVENT_UPDATED,
                        owner_same(&e.owner, &env->self)
                            ? PROCREG_REASON_NONE
                            : PROCREG_REASON_FORCED,
                        ctx->instance_id, &k, &e))
            return PROCREG_EBACKEND;
        if (ctx->updated != NULL) {
            ctx->updated->owner = e.owner;
            ctx->updated->metadata =
                ctx->metadata ? g_variant_ref(ctx->metadata) : NULL;
            ctx->updated->registered_at = e.registered_at;
            ctx->updated->revision = e.revision;
        }
    }
    log_finish(env, txn, w);
    return result;
}

static int lmdb_update_metadata(void *state, const procreg_key *key,
                                GVariant *metadata, uint64_t if_revision,
                                procreg_entry *updated, GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    GVariant *norm;
    update_ctx ctx = {.key = key, .metadata = metadata,
                      .if_revision = if_revision,
                      .instance_id = st->instance_id, .updated = updated};
    int rc = meta_bytes(env, metadata, &norm, &ctx.meta, &ctx.meta_len, error);
    if (rc != 0)
        return rc;
    rc = write_txn(env, "update metadata", update_step, &ctx, error);
    if (norm != NULL)
        g_variant_unref(norm);
    return rc;
}

/* ---- scans ---- */

typedef enum {
    SCAN_ENTRIES,   /* procreg_entry into @out */
    SCAN_COUNT,     /* into *@count */
    SCAN_NAMES,     /* up to @max g_strdup'ed names into @names */
    SCAN_NAMESPACES /* procreg_namespace_info into @out */
} scan_mode;

/* Visit the live entries of @ns (NULL: all) in key order. */
static int scan(lmdb_env *env, const char *ns, scan_mode mode, size_t max,
                GArray *out, size_t *count, GPtrArray *names,
                GError **error)
{
    MDB_txn *txn;
    int rc = read_begin(env, &txn);
    if (rc != 0)
        return mdb_fail(env, rc, "listing", error);
    MDB_cursor *c;
    rc = mdb_cursor_open(txn, env->db_entries, &c);
    if (rc != 0) {
        read_end(env, txn);
        return mdb_fail(env, rc, "listing", error);
    }
    size_t prefix_len = ns ? strlen(ns) + 1 : 0;
    MDB_val k = {prefix_len, (void *)ns}, v;
    rc = mdb_cursor_get(c, &k, &v, ns ? MDB_SET_RANGE : MDB_FIRST);
    size_t n = 0;
    int result = 0;
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (ns != NULL && (k.mv_size < prefix_len ||
                           memcmp(k.mv_data, ns, prefix_len) != 0))
            break;
        raw_entry e;
        const char *why = entry_decode(&v, &e);
        size_t ns_len;
        if (why == NULL && !key_split(&k, &ns_len))
            why = "malformed key";
        if (why != NULL) {
            result = corrupt_error(env, &k, why, error);
            break;
        }
        if (!owner_alive(env, &e.owner))
            continue;
        if (mode == SCAN_COUNT) {
            n++;
            continue;
        }
        if (mode == SCAN_NAMESPACES) {
            /* Keys are sorted: a namespace is one run of them. */
            procreg_namespace_info *last =
                out->len > 0 ? &g_array_index(out, procreg_namespace_info,
                                              out->len - 1)
                             : NULL;
            if (last != NULL && strncmp(last->ns, k.mv_data, ns_len) == 0 &&
                last->ns[ns_len] == '\0') {
                last->entries++;
            } else {
                procreg_namespace_info info = {g_strndup(k.mv_data, ns_len),
                                               1};
                if (procreg_validate_name(info.ns, "namespace", NULL) != 0) {
                    g_free(info.ns);
                    result = corrupt_error(env, &k,
                                           "key breaks the name rules", error);
                    break;
                }
                g_array_append_val(out, info);
            }
            n++;
            continue;
        }
        procreg_entry pe = {0};
        if (!key_strings(&k, &pe.ns, &pe.name)) {
            result = corrupt_error(env, &k, "key breaks the name rules",
                                   error);
            break;
        }
        if (mode == SCAN_NAMES) {
            g_ptr_array_add(names, pe.name);
            g_free(pe.ns);
            if (++n >= max)
                break;
            continue;
        }
        if (!fill_entry(&e, &pe, &why)) {
            procreg_entry_clear(&pe);
            result = corrupt_error(env, &k, why, error);
            break;
        }
        g_array_append_val(out, pe);
        n++;
    }
    mdb_cursor_close(c);
    read_end(env, txn);
    if (result == 0 && rc != 0 && rc != MDB_NOTFOUND)
        result = mdb_fail(env, rc, "listing", error);
    if (count != NULL)
        *count = n;
    return result;
}

static int lmdb_list_all(void *state, const char *ns, GArray *out,
                         GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    guint before = out->len;
    int rc = scan(env, ns, SCAN_ENTRIES, 0, out, NULL, NULL, error);
    if (rc != 0)
        g_array_set_size(out, before);
    return rc;
}

static int lmdb_count(void *state, const char *ns, size_t *out,
                      GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    return scan(env, ns, SCAN_COUNT, 0, NULL, out, NULL, error);
}

static int lmdb_count_namespaces(void *state, GArray *out, GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    return scan(env, NULL, SCAN_NAMESPACES, 0, out, NULL, NULL, error);
}

static int lmdb_list_names(void *state, const char *ns, size_t max,
                           GPtrArray *out)
{
    lmdb_state *st = state;
    STATE_ENV(st, NULL);
    if (max == 0)
        return 0;
    return scan(env, ns, SCAN_NAMES, max, NULL, NULL, out, NULL);
}

typedef struct {
    const char *ns;
    uint32_t instance_id;
    GArray *removed;
    guint removed_start;
} drop_ctx;

/* One entry of the namespace being dropped, copied out of the map. */
typedef struct {
    GBytes *key;
    raw_entry e;
    GBytes *meta;
    bool decoded;
} drop_item;

static void drop_item_clear(gpointer p)
{
    drop_item *it = p;
    g_bytes_unref(it->key);
    if (it->meta != NULL)
        g_bytes_unref(it->meta);
}

static int drop_step(lmdb_env *env, MDB_txn *txn, void *data, wstate *w)
{
    drop_ctx *ctx = data;
    g_array_set_size(ctx->removed, ctx->removed_start);
    size_t prefix_len = strlen(ctx->ns) + 1;
    MDB_cursor *c;
    if (!w_check(w, mdb_cursor_open(txn, env->db_entries, &c), "dropping"))
        return PROCREG_EBACKEND;
    /* Collect first, then delete: deleting moves what the cursor and
     * earlier values point at. */
    GArray *items = g_array_new(FALSE, TRUE, sizeof(drop_item));
    g_array_set_clear_func(items, drop_item_clear);
    MDB_val k = {prefix_len, (void *)ctx->ns}, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < prefix_len ||
            memcmp(k.mv_data, ctx->ns, prefix_len) != 0)
            break;
        drop_item it = {.key = g_bytes_new(k.mv_data, k.mv_size)};
        it.decoded = entry_decode(&v, &it.e) == NULL;
        if (it.decoded && it.e.meta_len > 0) {
            it.meta = g_bytes_new(it.e.meta, it.e.meta_len);
            it.e.meta = g_bytes_get_data(it.meta, NULL);
        }
        g_array_append_val(items, it);
    }
    mdb_cursor_close(c);
    if (!w_check(w, rc == MDB_NOTFOUND ? 0 : rc, "dropping")) {
        g_array_unref(items);
        return PROCREG_EBACKEND;
    }
    for (guint i = 0; i < items->len; i++) {
        drop_item *it = &g_array_index(items, drop_item, i);
        gsize len;
        MDB_val key = {0, NULL};
        key.mv_data = (void *)g_bytes_get_data(it->key, &len);
        key.mv_size = len;
        if (!it->decoded) {
            /* A damaged entry goes too: dropping is how it is cleaned up. */
            if (!w_check(w, mdb_del(txn, env->db_entries, &key, NULL),
                         "dropping"))
                break;
            w->dirty = true;
            continue;
        }
        bool alive = owner_alive(env, &it->e.owner);
        procreg_entry pe = {0};
        const char *why;
        if (alive && key_strings(&key, &pe.ns, &pe.name) &&
            fill_entry(&it->e, &pe, &why))
            g_array_append_val(ctx->removed, pe);
        else
            procreg_entry_clear(&pe);
        if (!log_change(env, txn, w, PROCREG_EVENT_UNREGISTERED,
                        alive ? PROCREG_REASON_NAMESPACE_DROPPED
                              : PROCREG_REASON_OWNER_EXITED,
                        alive ? ctx->instance_id : 0, &key, &it->e) ||
            !entry_delete(env, txn, w, &key, &it->e))
            break;
    }
    bool any = items->len > 0;
    g_array_unref(items);
    if (w->mdb_rc != 0)
        return PROCREG_EBACKEND;
    uint64_t rev;
    if (any && (!counter_next(env, txn, "revision", &rev, w) ||
                !log_finish(env, txn, w)))
        return PROCREG_EBACKEND;
    return 0;
}

static int lmdb_drop_namespace(void *state, const char *ns, GArray *removed,
                               GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    drop_ctx ctx = {ns, st->instance_id, removed, removed->len};
    int rc = write_txn(env, "drop a namespace", drop_step, &ctx, error);
    if (rc != 0)
        g_array_set_size(removed, ctx.removed_start);
    return rc;
}

/* ---- health and figures ---- */

static int lmdb_memory_usage(void *state, size_t *bytes)
{
    lmdb_state *st = state;
    STATE_ENV(st, NULL);
    MDB_envinfo info;
    MDB_stat ms;
    g_rw_lock_reader_lock(&env->txn_lock);
    mdb_env_info(env->mdb, &info);
    mdb_env_stat(env->mdb, &ms);
    g_rw_lock_reader_unlock(&env->txn_lock);
    *bytes = (info.me_last_pgno + 1) * (size_t)ms.ms_psize;
    return 0;
}

static int count_line(const char *msg, void *ctx)
{
    (*(int *)ctx)++;
    return 0;
}

/* Reader slots in use now: mdb_reader_list() writes a header and one line
 * per slot, or a single "(no active readers)". */
static int used_readers(lmdb_env *env)
{
    int lines = 0;
    mdb_reader_list(env->mdb, count_line, &lines);
    return lines > 0 ? lines - 1 : 0;
}

static void env_figures(lmdb_env *env, GVariantDict *d)
{
    MDB_envinfo info;
    MDB_stat ms;
    g_rw_lock_reader_lock(&env->txn_lock);
    mdb_env_info(env->mdb, &info);
    mdb_env_stat(env->mdb, &ms);
    g_rw_lock_reader_unlock(&env->txn_lock);
    unsigned int flags = 0;
    mdb_env_get_flags(env->mdb, &flags);
    g_variant_dict_insert(d, "path", "s", env->path);
    g_variant_dict_insert(d, "map_size", "t", (guint64)info.me_mapsize);
    g_variant_dict_insert(d, "file_used_bytes", "t",
                          (guint64)(info.me_last_pgno + 1) * ms.ms_psize);
    g_variant_dict_insert(d, "max_readers", "u", info.me_maxreaders);
    g_variant_dict_insert(d, "reader_slots_used", "u", info.me_numreaders);
    g_variant_dict_insert(d, "durability", "s",
                          env->read_only ? "read-only"
                          : (flags & MDB_NOMETASYNC) ? "nosync"
                                                     : "sync");
    g_variant_dict_insert(d, "read_only", "b", env->read_only);
    g_variant_dict_insert(d, "cross_process_events", "b",
                          env->notify != NULL && env->notify_writable);
    pthread_mutex_lock(&env->owners_lock);
    g_variant_dict_insert(d, "owners_known", "u",
                          g_hash_table_size(env->owner_cache));
    g_variant_dict_insert(d, "owners_monitored", "u",
                          (guint32)g_atomic_int_get(&env->monitored));
    pthread_mutex_unlock(&env->owners_lock);
#define FIG(name) \
    g_variant_dict_insert(d, #name, "t", \
                          (guint64)(gsize)g_atomic_pointer_get(&env->name))
    FIG(map_grows);
    FIG(map_adopted);
    FIG(stale_readers);
    FIG(reaped);
    FIG(events_delivered);
    FIG(events_lost);
    FIG(corrupt_reads);
    FIG(log_restarts);
#undef FIG
}

static void lmdb_stats(void *state, GVariantDict *out)
{
    lmdb_state *st = state;
    int rc = 0;
    lmdb_env *env = state_env(st, &rc, NULL);
    if (env != NULL)
        env_figures(env, out);
}

static int lmdb_health_check(void *state, GVariantDict *details,
                             char **message)
{
    lmdb_state *st = state;
    int rc = 0;
    lmdb_env *env = state_env(st, &rc, NULL);
    if (env == NULL) {
        *message = g_strdup("cannot reopen the registry file after fork()");
        return PROCREG_HEALTH_FAILED;
    }
    env_figures(env, details);
    MDB_txn *txn;
    rc = read_begin(env, &txn);
    if (rc != 0) {
        *message = g_strdup_printf("lmdb registry '%s': cannot read: %s",
                                   env->path, mdb_strerror(rc));
        return PROCREG_HEALTH_FAILED;
    }
    MDB_stat es;
    rc = mdb_stat(txn, env->db_entries, &es);
    read_end(env, txn);
    if (rc != 0) {
        *message = g_strdup_printf("lmdb registry '%s': %s", env->path,
                                   mdb_strerror(rc));
        return PROCREG_HEALTH_FAILED;
    }
    int used = used_readers(env);
    if (env->read_only) {
        *message = g_strdup_printf("lmdb registry '%s' is read-only (%s)",
                                   env->path, env->read_only_why);
        return PROCREG_HEALTH_DEGRADED;
    }
    if (env->max_readers > 0 && used * 10 > (int)env->max_readers * 9) {
        *message = g_strdup_printf("lmdb registry '%s': %d of %u reader "
                                   "slots in use", env->path, used,
                                   env->max_readers);
        return PROCREG_HEALTH_DEGRADED;
    }
    if (disk_full(env)) {
        *message = g_strdup_printf("lmdb registry '%s': its file system is "
                                   "(almost) full; writes may fail",
                                   env->path);
        return PROCREG_HEALTH_DEGRADED;
    }
    if (g_atomic_pointer_get(&env->corrupt_reads) != 0) {
        *message = g_strdup_printf("lmdb registry '%s': corrupt records were "
                                   "read (see corrupt_reads)", env->path);
        return PROCREG_HEALTH_DEGRADED;
    }
    if (env->notify == NULL || !env->notify_writable) {
        *message = g_strdup_printf("lmdb registry '%s': no change "
                                   "notification file; other processes' "
                                   "changes raise no events", env->path);
        return PROCREG_HEALTH_DEGRADED;
    }
    return PROCREG_HEALTH_OK;
}

const procreg_backend_ops procreg_lmdb_backend_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "lmdb",
    .description = "one LMDB file shared by the processes of a host; "
                   "persistent, dead owners reaped, changes seen across "
                   "processes",
    .caps = PROCREG_CAP_THREADSAFE | PROCREG_CAP_PERSISTENT |
            PROCREG_CAP_MULTIPROCESS | PROCREG_CAP_ATOMIC_DROP,
    .options = lmdb_options,
    .init = lmdb_init,
    .destroy = lmdb_destroy,
    .register_entry = lmdb_register,
    .lookup = lmdb_lookup,
    .lookup_entry = lmdb_lookup_entry,
    .unregister = lmdb_unregister,
    .list_all = lmdb_list_all,
    .update_metadata = lmdb_update_metadata,
    .health_check = lmdb_health_check,
    .count = lmdb_count,
    .list_names = lmdb_list_names,
    .drop_namespace = lmdb_drop_namespace,
    .memory_usage = lmdb_memory_usage,
    .stats = lmdb_stats,
    .count_namespaces = lmdb_count_namespaces,
};
