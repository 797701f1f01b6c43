/*
 * The lmdb backend's private header: the per-file environment and the
 * per-handle state every room of backends/lmdb shares, the write-step
 * protocol, and the functions one room offers the others.  Every
 * function here is hidden in the library (procreg_lmdb_ prefix, like the
 * codec's).  lmdb.c says which room owns what.
 */
#ifndef PROCREG_LMDB_INTERNAL_H
#define PROCREG_LMDB_INTERNAL_H

#include <procreg/backend.h>

#include "lmdb-codec.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

/* The map stops growing here (PROCREG_EFULL beyond). */
#define MAX_MAP_SIZE ((uint64_t)1 << 40)
#define OWNER_KEY_SIZE PROCREG_LMDB_OWNER_KEY_SIZE
/* FILE-notify: the change counter's page (changelog.c), and the writer
 * lock (writer.c). */
#define NOTIFY_SUFFIX "-notify"

/* Whether the backend reports its own changes in commit order
 * (PROCREG_CAP_ORDERED_EVENTS; changelog.c).  Test builds that re-create
 * the old bug (tests/lmdb) compile with PROCREG_INJECT_LATE_EXTERNAL_EVENT:
 * the core then reports a handle's own changes at once, while other
 * processes' changes wait for the watcher, so an earlier change of a key
 * made elsewhere can reach a subscriber after a later one made here. */
#ifdef PROCREG_INJECT_LATE_EXTERNAL_EVENT
#define LMDB_ORDERED_EVENTS 0
#else
#define LMDB_ORDERED_EVENTS 1
#endif

typedef struct {
    pid_t pid;
    uint64_t start_time;
} owner_id;

typedef struct {
    owner_id id;
    bool alive;
    bool queued; /* waiting in reap_queue */
    bool polled; /* alive, no pidfd: the monitor polls it (liveness.c) */
    int pidfd;   /* -1 when not monitored */
} owner_rec;

/* FILE-notify's page (changelog.c), and its request area (batch.c). */
typedef struct lmdb_notify_page lmdb_notify_page;
typedef struct lmdb_batch_area lmdb_batch_area;

typedef struct lmdb_state lmdb_state;

/* A thread's read transaction of one env (readers.c). */
typedef struct lmdb_reader lmdb_reader;

/* Where a transaction finds the entries, the meta records and the change
 * log (format.c).  Formats 4 and 5 keep all three in LMDB's main database:
 * entries under "ns\0name" (a namespace is non-empty UTF-8, so the first
 * byte is 0x01..0xf4), meta records under "\xfe" + name, changes under
 * "\xff" + the number (BE64): 0xfe and 0xff begin no UTF-8, so the meta
 * records and the changes are the last keys, the changes appended, and
 * the counter a write updates sits beside them.  The named databases' own
 * records (their names: ASCII, no NUL) sit among the entries.  Formats 1
 * to 3, which a read-only opener reads in place, keep each in a named
 * database of its own, keys unprefixed. */
#define META_PREFIX 0xfe
/* Format 5's owner rows: "\xfd" + owner key (pid BE32, start time BE64)
 * + namespace -> "", one per (owner, namespace) that owner has (or had)
 * entries in (format.c's invariant).  0xfd begins no UTF-8 either: the
 * rows sort after every entry, just before the meta records. */
#define OWNERS_PREFIX 0xfd
#define OWNER_ROW_MAX (1 + OWNER_KEY_SIZE + 255)
typedef struct {
    MDB_dbi entries, meta, events;
    bool main; /* formats 4 and 5: the keys above */
} lmdb_layout;

/* One open registry file in this process (env.c keeps the table). */
typedef struct {
    int refs;           /* under table_lock */
    guint generation;   /* fork generation it was opened in */
    dev_t dev;
    ino_t ino;
    char *path;
    bool read_only;
    bool lockless;   /* read-only, and reads take no reader slot */
    bool stale_boot; /* read-only file of an earlier boot: owners all dead */
    char *read_only_why;
    MDB_env *mdb;
    /* The per-entry "owners" index of formats 1 to 4 (a read-only
     * opener's only, for its sweep; 0: none). */
    MDB_dbi old_owners;
    /* The named databases of formats 1 to 3 (a read-only opener's only),
     * and the id of a transaction that saw the file in format 4 or 5: every
     * later one does too (a writer may migrate the file meanwhile).  1
     * when the file was format 4 or 5 when opened, 0 while none did.  Atomic:
     * read by every transaction (procreg_lmdb_layout()). */
    lmdb_layout old;
    uint64_t main_from;
    /* Groups (groups.c); absent in a read-only file of format 1. */
    MDB_dbi db_members, db_group_ids, db_member_owners;
    bool has_groups;
    unsigned int max_readers;
    int sync_votes, nosync_votes; /* instances asking; under table_lock */
    /* Nonzero when this process's instances all asked for nosync
     * (env.c); every commit is MDB_NOMETASYNC, and a durable one is
     * flushed after it (procreg_lmdb_sync()). */
    atomic_int nosync;
    procreg_owner self;

    /* readers.c: the map lock (every transaction is counted in its
     * thread's slot; remapping waits for none to be) and every thread's
     * slot. */
    pthread_mutex_t remap_mutex; /* held by the remapper */
    atomic_int remapping;
    uint64_t serial;      /* unique in the process, never reused */
    lmdb_reader *readers; /* every thread's slot; under readers.c's lock */
    /* The writer lock (writer.c): the threads' turn, then the file's. */
    pthread_mutex_t writer_mutex;
    int writer_fd;     /* -1: none (read-only with a lock file) */
    int shared_reads;  /* lockless reads running; under writer_mutex */
    lmdb_batch_area *batch; /* NULL: every registration goes solo */

    /* Owner liveness (liveness.c). */
    pthread_mutex_t owners_lock;
    GHashTable *owner_cache; /* owner_id* -> owner_rec* */
    GQueue reap_queue;  /* owner_rec*, under owners_lock */
    int monitored;      /* recs with a pidfd */
    int monitor_max;
    int polled;         /* recs polled instead, under owners_lock */
    bool poll_only;     /* PROCREG_MONITOR=poll: no pidfds */
    int epfd, evfd;
    GThread *monitor;

    /* Change notification (changelog.c). */
    int notify_fd;
    lmdb_notify_page *notify; /* NULL: no cross-process notification */
    bool notify_writable;
    GThread *watcher;
    uint64_t last_seq; /* watcher thread only */
    pthread_mutex_t inst_lock;
    GPtrArray *instances; /* lmdb_state* with a host */
    gint stop;

    /* Figures for stats(), updated with g_atomic_pointer_add(). */
    gsize map_grows, map_adopted, stale_readers, reaped, events_delivered,
        events_lost, corrupt_reads, log_restarts, batch_commits,
        batch_requests, batch_solo, batch_dropped, batch_recoveries,
        reap_walks;
} lmdb_env;

/* One registry handle. */
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

/* ---- records: the codec (lmdb-codec.h) on LMDB's MDB_val ---- */

typedef procreg_lmdb_raw_entry raw_entry;

static inline const char *entry_decode(const MDB_val *v, raw_entry *out)
{
    return procreg_lmdb_entry_decode(v->mv_data, v->mv_size, out);
}

static inline bool key_split(const MDB_val *k, size_t *ns_len)
{
    return procreg_lmdb_key_split(k->mv_data, k->mv_size, ns_len);
}

static inline bool key_strings(const MDB_val *k, char **ns, char **name)
{
    return procreg_lmdb_key_strings(k->mv_data, k->mv_size, ns, name);
}

/* ---- the layout of the file (format.c) ---- */

LMDB_HIDDEN extern const lmdb_layout procreg_lmdb_main_layout;
LMDB_HIDDEN const lmdb_layout *procreg_lmdb_layout_slow(lmdb_env *env,
                                                       MDB_txn *txn);

/* The layout @txn's snapshot has: format 4 once the file was, else the
 * named databases while this snapshot still has them. */
static inline const lmdb_layout *procreg_lmdb_layout(lmdb_env *env,
                                                     MDB_txn *txn)
{
    if (G_LIKELY(__atomic_load_n(&env->main_from, __ATOMIC_RELAXED) == 1))
        return &procreg_lmdb_main_layout;
    return procreg_lmdb_layout_slow(env, txn);
}

static inline MDB_dbi entries_dbi(lmdb_env *env, MDB_txn *txn)
{
    return procreg_lmdb_layout(env, txn)->entries;
}

#define META_KEY_MAX 16
/* The key of the meta record @name (at most META_KEY_MAX - 1 bytes). */
LMDB_HIDDEN MDB_val procreg_lmdb_meta_key(const lmdb_layout *lay,
                                          const char *name,
                                          char buf[META_KEY_MAX]);
#define EVENT_KEY_SIZE 9
/* The key of change @seq, and back (false: not a change's key). */
LMDB_HIDDEN MDB_val procreg_lmdb_event_key(const lmdb_layout *lay,
                                           uint64_t seq,
                                           uint8_t buf[EVENT_KEY_SIZE]);
LMDB_HIDDEN bool procreg_lmdb_event_seq(const lmdb_layout *lay,
                                        const MDB_val *k, uint64_t *seq);
/* Cursor over the entries: the first at or after @k (NULL: the first
 * entry), then the next; skips the named databases' records, stops
 * (MDB_NOTFOUND) at the meta records' and the changes' keys. */
LMDB_HIDDEN int procreg_lmdb_entries_seek(MDB_cursor *c, MDB_val *k,
                                          MDB_val *v, bool first);
LMDB_HIDDEN int procreg_lmdb_entries_next(MDB_cursor *c, MDB_val *k,
                                          MDB_val *v);
/* The owner row of (@o, the namespace of entry key @key) in @buf (false:
 * @key is no entry key). */
LMDB_HIDDEN bool procreg_lmdb_owner_row(const procreg_owner *o,
                                        const MDB_val *key, MDB_val *row,
                                        uint8_t buf[OWNER_ROW_MAX]);
/* Put the owner row of entry @key held by @o unless it is there (which
 * writes nothing: MDB_NOOVERWRITE finds it before touching a page); an
 * LMDB code. */
LMDB_HIDDEN int procreg_lmdb_owner_row_put(MDB_txn *txn,
                                           const procreg_owner *o,
                                           const MDB_val *key);
/* Delete every owner row (a new boot); an LMDB code. */
LMDB_HIDDEN int procreg_lmdb_owner_rows_drop(MDB_txn *txn);
/* Check the format of a file and open its databases, in check_dbs()'s
 * transaction (open.c): a new file is created, an older one migrated
 * (@write), or read in place (read-only).  Without @write, what needs
 * writing sets *@must_write; *@map_full: the migration needs a larger
 * map. */
LMDB_HIDDEN int procreg_lmdb_format_open(lmdb_env *env, MDB_txn *txn,
                                         bool write, bool *must_write,
                                         bool *map_full, GError **error);

static inline char *key_printable(const MDB_val *k)
{
    return procreg_lmdb_key_printable(k->mv_data, k->mv_size);
}

static inline bool owner_from_key(const MDB_val *k, procreg_owner *o)
{
    return procreg_lmdb_owner_from_key(k->mv_data, k->mv_size, o);
}

static inline bool owner_same(const procreg_owner *a, const procreg_owner *b)
{
    return a->pid == b->pid && a->start_time == b->start_time;
}

/* ---- env.c: the process-wide table of open files, and fork ---- */

/* The shared env of @st->path, opened if needed.  Adds @st's votes. */
LMDB_HIDDEN int procreg_lmdb_env_acquire(lmdb_state *st, lmdb_env **out,
                                         GError **error);
LMDB_HIDDEN void procreg_lmdb_env_release(lmdb_env *env, bool nosync);
LMDB_HIDDEN extern gint procreg_lmdb_fork_generation; /* env.c */
/* Whether @env was opened by this process (not inherited over fork()). */
static inline bool procreg_lmdb_env_is_ours(const lmdb_env *env)
{
    return env->generation ==
           (guint)g_atomic_int_get(&procreg_lmdb_fork_generation);
}
LMDB_HIDDEN lmdb_env *procreg_lmdb_state_env_slow(lmdb_state *st, int *rc,
                                                  GError **error);
/* The env of @st for this process; NULL with *rc and @error set.  Inline:
 * every operation passes here (the slow path opens the file again in a
 * forked child). */
static inline lmdb_env *procreg_lmdb_state_env(lmdb_state *st, int *rc,
                                               GError **error)
{
    lmdb_env *env = g_atomic_pointer_get(&st->env);
    if (G_LIKELY(procreg_lmdb_env_is_ours(env)))
        return env;
    return procreg_lmdb_state_env_slow(st, rc, error);
}

/* Declares `env` for handle @st in a vtable slot, or returns its error. */
#define STATE_ENV(st, error)                                                  \
    int env_rc_ = 0;                                                          \
    lmdb_env *env = procreg_lmdb_state_env((st), &env_rc_, (error));          \
    if (env == NULL)                                                          \
        return env_rc_;

/* ---- open.c: opening and closing one file ---- */

/* $XDG_RUNTIME_DIR/procreg/registry.mdb, else /tmp/procreg-UID/...; its
 * directory created private, or refused when unsafe. */
LMDB_HIDDEN char *procreg_lmdb_default_path(GError **error);
LMDB_HIDDEN int procreg_lmdb_env_open(const char *path, const lmdb_state *st,
                                      lmdb_env **out, GError **error);
LMDB_HIDDEN void procreg_lmdb_env_free(lmdb_env *env);

/* ---- txn.c: errors and transactions ---- */

/* LMDB's @rc as a procreg code. */
LMDB_HIDDEN int procreg_lmdb_code(int rc);
/* Grow the map after MDB_MAP_FULL at size @seen (txn.c): 0 or an LMDB
 * code. */
LMDB_HIDDEN int procreg_lmdb_map_grow(lmdb_env *env, size_t seen);
/* Set @error from LMDB's @rc; returns the procreg code. */
LMDB_HIDDEN int procreg_lmdb_fail(const lmdb_env *env, int rc,
                                  const char *what, GError **error);
LMDB_HIDDEN void procreg_lmdb_reader_check(lmdb_env *env);
/* Adopt the map size another process chose (MDB_MAP_RESIZED); an LMDB
 * code.  The calling thread must not be inside the map. */
LMDB_HIDDEN int procreg_lmdb_map_adopt(lmdb_env *env);
/* Whether the registry's file system has (almost) no room left. */
LMDB_HIDDEN bool procreg_lmdb_disk_full(const lmdb_env *env);

/* What a write step reports back to procreg_lmdb_write_txn(). */
typedef struct {
    int mdb_rc;          /* an LMDB failure: abort (and grow, retry) */
    const char *what;    /* the step that failed, for the message */
    char *corrupt;       /* a corrupt record: g_malloc'ed description */
    bool dirty;          /* something to commit */
    unsigned int events; /* change-log records appended */
    uint64_t seq;        /* last change number used */
    bool seq_loaded;
    uint64_t first_seq;  /* first change number of this transaction */
    pid_t origin_pid;    /* 0: this process; else whose batched change */
} wstate;

/* One attempt of a write: returns a procreg code (0 or the operation's
 * answer, e.g. PROCREG_EEXISTS); LMDB failures go to @w.  It is called
 * again from scratch after the map grows. */
typedef int (*write_step)(lmdb_env *env, MDB_txn *txn, void *ctx,
                          wstate *w);

/* Run @step in a write transaction: commit what it changed, grow the map
 * and retry when full, notify the watchers.  Returns @step's answer or a
 * failure (in @error, which may be NULL). */
/* Flush the file (mdb_env_sync(), forced): every commit before the call
 * is then on disk.  Writers commit with MDB_NOMETASYNC (their pages are
 * flushed before their meta page is written, so a crash can lose the
 * last commits, never the file) and a durable write is acknowledged
 * only after this flush, which they make after letting the writer lock
 * go: the next writer's transaction overlaps it.  0 or LMDB's error. */
LMDB_HIDDEN int procreg_lmdb_sync(lmdb_env *env);
/* Whether this process's commits must be flushed (durability=sync). */
LMDB_HIDDEN bool procreg_lmdb_durable(lmdb_env *env);
LMDB_HIDDEN int procreg_lmdb_write_txn(lmdb_env *env, const char *what,
                                       write_step step, void *ctx,
                                       GError **error);
/* Adopt a map size another process chose (MDB_MAP_RESIZED); an LMDB
 * code. */
LMDB_HIDDEN int procreg_lmdb_map_adopt(lmdb_env *env);
/* Record LMDB's @rc of step @what in @w; true when it is 0. */
LMDB_HIDDEN bool procreg_lmdb_step_check(wstate *w, int rc, const char *what);

/* ---- readers.c: each thread's read transaction, and the map lock ---- */

LMDB_HIDDEN void procreg_lmdb_readers_init(lmdb_env *env);
/* Abort every thread's cached transaction of @env, which no read uses
 * any more (closing it). */
LMDB_HIDDEN void procreg_lmdb_readers_clear(lmdb_env *env);
/* Abort the idle cached transactions of every thread (reader slots ran
 * out). */
LMDB_HIDDEN void procreg_lmdb_readers_drain(lmdb_env *env);
/* Begin a read transaction (this thread's cached one, renewed); the
 * thread is inside the map until procreg_lmdb_read_end().  Returns 0 or
 * an LMDB code. */
LMDB_HIDDEN int procreg_lmdb_read_begin(lmdb_env *env, MDB_txn **out);
LMDB_HIDDEN void procreg_lmdb_read_end(lmdb_env *env, MDB_txn *txn);
/* Around any other use of the map (a write transaction, mdb_env_info):
 * no remap meanwhile.  Nests within a thread. */
LMDB_HIDDEN void procreg_lmdb_map_enter(lmdb_env *env);
LMDB_HIDDEN void procreg_lmdb_map_leave(lmdb_env *env);
/* Exclusive: no transaction of this process is active until unlock. */
LMDB_HIDDEN void procreg_lmdb_map_lock(lmdb_env *env);
LMDB_HIDDEN void procreg_lmdb_map_unlock(lmdb_env *env);
/* pthread_atfork handlers, called by env.c's. */
LMDB_HIDDEN void procreg_lmdb_readers_fork_prepare(void);
LMDB_HIDDEN void procreg_lmdb_readers_fork_parent(void);
LMDB_HIDDEN void procreg_lmdb_readers_fork_child(void);
#ifdef PROCREG_LMDB_FORMAT_HOOKS
/* Defined by tests/lmdb/test-format.c: an opener that found an older
 * file (or a new one) to write is about to take the writer lock. */
void procreg_lmdb_hook_format_must_write(lmdb_env *env);
/* ...and procreg_lmdb_layout_slow() is about to decide the layout of a
 * transaction already begun (its snapshot fixed). */
void procreg_lmdb_hook_format_layout(lmdb_env *env);
#endif
#ifdef PROCREG_LMDB_REAP_HOOKS
/* Defined by the test that links a build with it (tests/lmdb): called
 * between a reap's scan (a read transaction) and its write transaction
 * (liveness.c), where other writers' commits may land. */
void procreg_lmdb_hook_reap_scanned(lmdb_env *env);
#endif
#ifdef PROCREG_LMDB_TEST_HOOKS
/* Defined by the test that links the hooked build (tests/lmdb). */
void procreg_lmdb_hook_read_begun(lmdb_env *env);
void procreg_lmdb_hook_map_lock_wanted(lmdb_env *env);
void procreg_lmdb_hook_map_lock_taken(lmdb_env *env);
void procreg_lmdb_hook_map_lock_released(lmdb_env *env);
/* A read found every reader slot held by reads in flight and waits. */
void procreg_lmdb_hook_readers_wait(lmdb_env *env);
#endif

/* ---- writer.c: the writer lock ---- */

/* Set up the lock's mutex; no descriptor yet. */
LMDB_HIDDEN void procreg_lmdb_writer_init(lmdb_env *env);
/* Open the lock's descriptor (FILE-notify; for reading only when the
 * env is lockless); 0 or an errno. */
LMDB_HIDDEN int procreg_lmdb_writer_open(lmdb_env *env);
LMDB_HIDDEN void procreg_lmdb_writer_clear(lmdb_env *env);
/* Wait for the writer lock; every LMDB write transaction begins under
 * it.  0, or PROCREG_EBACKEND in @error (which may be NULL). */
LMDB_HIDDEN int procreg_lmdb_writer_lock(lmdb_env *env, GError **error);
/* Take the writer lock unless a writer holds it (lockless readers only:
 * wait for them): 0, PROCREG_LMDB_BUSY, or PROCREG_EBACKEND in @error
 * (this thread holds it already, or fcntl failed). */
LMDB_HIDDEN int procreg_lmdb_writer_trylock(lmdb_env *env, GError **error);
/* Release the lock, then wake the batch registrants waiting to lead
 * (procreg_lmdb_batch_nudge()). */
LMDB_HIDDEN void procreg_lmdb_writer_unlock(lmdb_env *env);
/* Around a read of a lockless env: keep every writer out (a read lock on
 * the writer lock's byte, while any read of this process runs); nothing
 * for other envs. */
LMDB_HIDDEN void procreg_lmdb_writer_lock_shared(lmdb_env *env);
LMDB_HIDDEN void procreg_lmdb_writer_unlock_shared(lmdb_env *env);
/* pthread_atfork handlers, called by env.c's. */
LMDB_HIDDEN void procreg_lmdb_writer_fork_prepare(void);
LMDB_HIDDEN void procreg_lmdb_writer_fork_parent(void);
LMDB_HIDDEN void procreg_lmdb_writer_fork_child(void);

/* ---- batch.c: group commit of registrations ---- */

/* One registration as ops.c's register step applies it. */
typedef struct {
    MDB_val key;
    procreg_owner owner;
    int64_t registered_at;
    bool has_meta;
    const void *meta;
    size_t meta_len;
    uint32_t instance_id;
    raw_entry held; /* out: the new entry (0), or the holder (EEXISTS) */
} register_req;

/* procreg_lmdb_batch_register()'s answer when the registration must take
 * the solo path (procreg_lmdb_write_txn()). */
#define PROCREG_LMDB_SOLO (-1000)
/* ...and when a batch may have applied it already, its answer lost
 * (batch.c): the registrant's own entry then answers it. */
#define PROCREG_LMDB_SOLO_AGAIN (-1002)
/* procreg_lmdb_writer_trylock()'s answer when another writer holds it. */
#define PROCREG_LMDB_BUSY (-1001)

/* Map the request area (in FILE-notify, past its first page); without
 * one (no room, or the area is not ours) env->batch stays NULL. */
LMDB_HIDDEN void procreg_lmdb_batch_open(lmdb_env *env);
LMDB_HIDDEN void procreg_lmdb_batch_close(lmdb_env *env);
/* Under the writer lock, before any write transaction begins: resolve
 * the requests a dead leader applied (batch.c's invariant). */
LMDB_HIDDEN void procreg_lmdb_batch_recover(lmdb_env *env);
/* After every release of the writer lock: wake each registrant whose
 * request is still pending, to lead it (batch.c's invariant). */
LMDB_HIDDEN void procreg_lmdb_batch_nudge(lmdb_env *env);
/* Slots not free (a figure for stats()). */
LMDB_HIDDEN unsigned int procreg_lmdb_batch_slots_used(lmdb_env *env);
/* Register @req (whose metadata is @metadata) through the request area:
 * the answer (with @current filled as procreg_lmdb_register() does), a
 * failure in @error, PROCREG_LMDB_SOLO or PROCREG_LMDB_SOLO_AGAIN. */
LMDB_HIDDEN int procreg_lmdb_batch_register(lmdb_env *env,
                                            const register_req *req,
                                            GVariant *metadata,
                                            procreg_entry *current,
                                            GError **error);
#ifdef PROCREG_TEST_BATCH_HOOK
/* Test builds only (tests/lmdb): called at the named points of a batch
 * ("solo", "claimed", "published", "wait", "locked", "lead", "collected",
 * "applied", "committed"). */
LMDB_HIDDEN extern void (*procreg_lmdb_batch_hook)(const char *point);
/* How long a registrant sleeps on its slot before it retries the lock
 * (BATCH_WAIT_MS unless a test changes it). */
LMDB_HIDDEN extern int procreg_lmdb_batch_wait_ms;
/* Nonzero: every take of the writer lock fails with this errno. */
LMDB_HIDDEN extern int procreg_lmdb_batch_lock_errno;
#endif

/* ---- liveness.c: whether owners live; reaping the dead ---- */

/* Set up the owner cache (before anything may probe an owner). */
LMDB_HIDDEN void procreg_lmdb_owners_init(lmdb_env *env);
/* Start the monitor thread (pidfds, reaping, the first sweep). */
LMDB_HIDDEN void procreg_lmdb_monitor_start(lmdb_env *env);
/* Stop and join the monitor thread, if it runs. */
LMDB_HIDDEN void procreg_lmdb_monitor_stop(lmdb_env *env);
/* Free the cache and its descriptors; no thread may use them any more. */
LMDB_HIDDEN void procreg_lmdb_owners_clear(lmdb_env *env);
/* Whether @o is alive: the cache for owners seen before, else a probe
 * (which starts watching it, or queues its entries for reaping). */
LMDB_HIDDEN bool procreg_lmdb_owner_alive(lmdb_env *env,
                                          const procreg_owner *o);

/* ---- changelog.c: the change log, FILE-notify and the watcher ---- */

/* Map FILE-notify; without it there is no cross-process notification. */
LMDB_HIDDEN void procreg_lmdb_notify_open(lmdb_env *env);
LMDB_HIDDEN void procreg_lmdb_notify_close(lmdb_env *env);
/* After a commit that logged changes: wake the watchers. */
LMDB_HIDDEN void procreg_lmdb_notify_commit(lmdb_env *env);
/* The last change number in the log (0: empty), or an LMDB code. */
LMDB_HIDDEN int procreg_lmdb_log_last(lmdb_env *env, MDB_txn *txn,
                                      uint64_t *out);
/* Append one change to the log.  @origin_instance 0: a change no
 * registry call asked for (reaping), reported to every instance. */
LMDB_HIDDEN bool procreg_lmdb_log_change(lmdb_env *env, MDB_txn *txn,
                                         wstate *w, procreg_event_kind kind,
                                         procreg_event_reason reason,
                                         uint32_t origin_instance,
                                         const MDB_val *key,
                                         const raw_entry *e);
/* Trim the log; the last step of every write that logged. */
/* Append to @keys (GBytes) the keys of the entries owned by @owner that
 * the changes numbered above @after wrote (registered or updated); true
 * when the log still holds every one of them (none trimmed, no restart,
 * none damaged), false when it cannot tell (the caller must look
 * elsewhere).  An LMDB failure in *@rc. */
LMDB_HIDDEN bool procreg_lmdb_log_keys_of(lmdb_env *env, MDB_txn *txn,
                                          uint64_t after,
                                          const procreg_owner *owner,
                                          GPtrArray *keys, int *rc);
LMDB_HIDDEN bool procreg_lmdb_log_finish(lmdb_env *env, MDB_txn *txn,
                                         wstate *w);
/* Report every change logged since the last delivery to every attached
 * handle, in log order (the watcher, and each writer after its commit). */
LMDB_HIDDEN void procreg_lmdb_deliver(lmdb_env *env);
/* Deliver the log's changes to @st (starts the watcher). */
LMDB_HIDDEN void procreg_lmdb_attach_instance(lmdb_env *env, lmdb_state *st);
LMDB_HIDDEN void procreg_lmdb_detach_instance(lmdb_env *env, lmdb_state *st);
/* Stop and join the watcher thread, if it runs. */
LMDB_HIDDEN void procreg_lmdb_watcher_stop(lmdb_env *env);

/* ---- ops.c: entries, and the single-key operations ---- */

/* Delete the entry at @key; its owner row stays (rows may
 * be stale: the reaping of that owner drops it). */
LMDB_HIDDEN bool procreg_lmdb_entry_delete(lmdb_env *env, MDB_txn *txn,
                                           wstate *w, const MDB_val *key);
/* Increment the counter @name of "meta"; its new value in @out. */
LMDB_HIDDEN bool procreg_lmdb_counter_next(lmdb_env *env, MDB_txn *txn,
                                           const char *name, uint64_t *out,
                                           wstate *w);
/* @out (may be NULL) from a decoded record; false with *why when its
 * metadata is corrupt. */
LMDB_HIDDEN bool procreg_lmdb_fill_entry(const raw_entry *r,
                                         procreg_entry *out,
                                         const char **why);
/* The serialised normal form of @metadata (NULL: none), refused over the
 * metadata limit with PROCREG_EFULL.  *norm holds the bytes; unref it
 * after the write. */
LMDB_HIDDEN int procreg_lmdb_meta_bytes(lmdb_env *env, GVariant *metadata,
                                        GVariant **norm, const void **data,
                                        size_t *len, GError **error);
/* Apply @req in @txn: 0, PROCREG_EEXISTS, PROCREG_ENOTALIVE, or
 * PROCREG_EBACKEND with the failure in @w.  @req->held's metadata points
 * into @txn's pages. */
LMDB_HIDDEN int procreg_lmdb_register_step(lmdb_env *env, MDB_txn *txn,
                                           register_req *req, wstate *w);
/* Count and report the corrupt record at @k. */
LMDB_HIDDEN int procreg_lmdb_corrupt_error(lmdb_env *env, const MDB_val *k,
                                           const char *why, GError **error);

LMDB_HIDDEN int procreg_lmdb_register(void *state, const procreg_key *key,
                                      const procreg_record *record,
                                      procreg_entry *current, GError **error);
LMDB_HIDDEN int procreg_lmdb_lookup(void *state, const procreg_key *key,
                                    procreg_owner *out);
LMDB_HIDDEN int procreg_lmdb_lookup_entry(void *state, const procreg_key *key,
                                          procreg_entry *out, GError **error);
LMDB_HIDDEN int procreg_lmdb_unregister(void *state, const procreg_key *key,
                                        uint64_t if_revision,
                                        procreg_entry *removed,
                                        GError **error);
LMDB_HIDDEN int procreg_lmdb_update_metadata(void *state,
                                             const procreg_key *key,
                                             GVariant *metadata,
                                             uint64_t if_revision,
                                             procreg_entry *updated,
                                             GError **error);

/* ---- scan.c: namespaces and the whole registry ---- */

LMDB_HIDDEN int procreg_lmdb_list_all(void *state, const char *ns,
                                      GArray *out, GError **error);
LMDB_HIDDEN int procreg_lmdb_count(void *state, const char *ns, size_t *out,
                                   GError **error);
/* changelog.c: the history slots */
LMDB_HIDDEN int procreg_lmdb_history_head(void *state, uint64_t *out,
                                          GError **error);
LMDB_HIDDEN int procreg_lmdb_history_read(void *state, const char *ns,
                                          uint64_t after, GArray *out,
                                          uint64_t *head, GError **error);
LMDB_HIDDEN int procreg_lmdb_count_namespaces(void *state, GArray *out,
                                              GError **error);
LMDB_HIDDEN int procreg_lmdb_list_names(void *state, const char *ns,
                                        size_t max, GPtrArray *out);
LMDB_HIDDEN int procreg_lmdb_drop_namespace(void *state, const char *ns,
                                            GArray *removed, GError **error);

/* ---- groups.c: group members ---- */

/* Open (creating them when @create) the group databases in @txn; sets
 * env->has_groups.  An LMDB code. */
LMDB_HIDDEN int procreg_lmdb_groups_open(lmdb_env *env, MDB_txn *txn,
                                         bool create);
/* Reap every member of the dead @owner (LEFT, reason OWNER_EXITED, logged
 * with no origin).  The number removed, or -1 on a failure (in @w). */
LMDB_HIDDEN int procreg_lmdb_reap_members(lmdb_env *env, MDB_txn *txn,
                                          wstate *w,
                                          const procreg_owner *owner);
/* Whether @owner holds members. */
LMDB_HIDDEN bool procreg_lmdb_owner_has_members(lmdb_env *env, MDB_txn *txn,
                                                const procreg_owner *owner);
/* Append every owner that holds members (each once) to @owners. */
LMDB_HIDDEN void procreg_lmdb_member_owners(lmdb_env *env, MDB_txn *txn,
                                            GArray *owners);
/* Remove every member (a new boot: their owners are all dead), logged as
 * reaped.  false on a failure (in @w). */
LMDB_HIDDEN bool procreg_lmdb_members_drop_all(lmdb_env *env, MDB_txn *txn,
                                               wstate *w);

LMDB_HIDDEN int procreg_lmdb_group_join(void *state, const procreg_key *key,
                                        const procreg_record *record,
                                        procreg_member *joined,
                                        GError **error);
LMDB_HIDDEN int procreg_lmdb_group_leave(void *state, const procreg_key *key,
                                         uint64_t member_id,
                                         const procreg_owner *owner,
                                         procreg_event_reason reason,
                                         GArray *removed, GError **error);
LMDB_HIDDEN int procreg_lmdb_group_members(void *state,
                                           const procreg_key *key,
                                           GArray *out, GError **error);
LMDB_HIDDEN int procreg_lmdb_group_list_all(void *state, const char *ns,
                                            GArray *out, GError **error);
LMDB_HIDDEN int procreg_lmdb_group_list(void *state, const char *ns,
                                        GArray *out, GError **error);
LMDB_HIDDEN int procreg_lmdb_group_member(void *state, const procreg_key *key,
                                          uint64_t member_id,
                                          procreg_member *out,
                                          GError **error);

/* ---- health.c: health and figures ---- */

LMDB_HIDDEN int procreg_lmdb_memory_usage(void *state, size_t *bytes);
LMDB_HIDDEN void procreg_lmdb_stats(void *state, GVariantDict *out);
LMDB_HIDDEN int procreg_lmdb_health_check(void *state, GVariantDict *details,
                                          char **message);

#endif
