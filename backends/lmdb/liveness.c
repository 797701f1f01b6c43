/*
 * Owner liveness: whether the owner of an entry still runs, and reaping
 * the entries of the dead.
 *
 * Owns: the owner cache (an owner seen before is answered from memory),
 * the first-sight probe (/proc, then a pidfd), the monitor thread that
 * polls the pidfds (epoll) and deletes a dead owner's entries and group
 * members (reason OWNER_EXITED) in one write transaction, and the sweep of
 * every owner in the file when the monitor starts.
 *
 * Invariant: every live owner this process has seen (while the monitor
 * runs) is watched, by a pidfd or, where there is none (pidfd_open()
 * refused: an old kernel, seccomp, valgrind; past monitor_max;
 * PROCREG_MONITOR=poll), by the monitor asking /proc every POLL_MS; so
 * its death is noticed and its entries and members reaped without anyone
 * looking them up.  A polled owner is never answered from the cache: it
 * may have died since the last poll.
 * Reaping a dead owner follows its owner rows (format.c): each names a
 * namespace the owner has (or had) entries in.  The reap walks those
 * namespaces for the owner's entries in a read transaction, outside the
 * writer lock (it costs the size of the namespaces: format 4 kept an
 * index record per entry instead, 63 bytes of file per entry); then one
 * write transaction deletes what the walk found and what the change log
 * says the owner was given since, and drops the rows (reap_ctx: why that
 * is exact).  The write costs the owner's entries and the changes since
 * the walk, not the namespaces.  An entry without its row (a
 * damaged file) is not reaped this way; every read still answers it
 * absent (its owner is dead), and the next write of its key, or a drop of
 * its namespace, removes it.
 * Relies on: txn.c for transactions, changelog.c to log the removals and
 * for the changes since the walk,
 * ops.c to delete an entry, format.c for the owner rows.
 */
#include "lmdb-internal.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Owners whose death the monitor watches with a pidfd, at most. */
#define MONITOR_MAX 256
/* How often the monitor asks /proc about the owners without a pidfd. */
#define POLL_MS 50

static guint owner_hash(gconstpointer p)
{
    const owner_id *o = p;
    return (guint)o->pid * 2654435761u ^
           (guint)(o->start_time ^ (o->start_time >> 32));
}

static gboolean owner_equal(gconstpointer a, gconstpointer b)
{
    const owner_id *x = a, *y = b;
    return x->pid == y->pid && x->start_time == y->start_time;
}

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
    if (alive && env->epfd >= 0 && !env->poll_only &&
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
    if (rec != NULL && !rec->polled) {
        alive = rec->alive;
    } else if (rec != NULL) {
        /* Polled, and just asked: dead now, perhaps. */
        if (!alive) {
            rec->polled = false;
            rec->alive = false;
            env->polled--;
            queue_reap(env, rec);
        }
    } else if (env->epfd >= 0 || !alive) {
        /* Cache a monitored live owner (with its pidfd, else polled), or
         * a dead one (it stays dead). */
        rec = g_new0(owner_rec, 1);
        rec->id = id;
        rec->alive = alive;
        rec->pidfd = -1;
        g_hash_table_insert(env->owner_cache, &rec->id, rec);
        if (alive && pidfd < 0) {
            rec->polled = true;
            env->polled++;
            monitor_wake(env); /* to poll from now on */
        }
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

bool procreg_lmdb_owner_alive(lmdb_env *env, const procreg_owner *o)
{
    if (env->stale_boot)
        return false;
    if (owner_same(o, &env->self))
        return true;
    owner_id id = {o->pid, o->start_time};
    pthread_mutex_lock(&env->owners_lock);
    owner_rec *rec = g_hash_table_lookup(env->owner_cache, &id);
    int known = rec == NULL || rec->polled ? -1 : rec->alive;
    pthread_mutex_unlock(&env->owners_lock);
    return known >= 0 ? known != 0 : owner_probe(env, o);
}

/* A reap of one dead owner: what its scan found outside the writer lock,
 * for the write transaction to delete.
 *
 * The invariant that makes dropping an owner row (O, ns) safe: when the
 * write transaction drops it, no entry of O is left in ns.  An entry of O
 * in ns at the write is either (a) in the scan's snapshot, where its row
 * was too (a registration puts the row in the transaction that puts the
 * entry, and a row is dropped only with every entry of O in its
 * namespace: this invariant, inductively), so the scan, which walked
 * every namespace O had a row for, found it; or (b) written after the
 * snapshot, by a transaction that logged the entry with its owner in the
 * same transaction (a registration or an update: the only writes of an
 * entry), numbered above the snapshot's last change (scan_seq).  So the
 * write deletes the keys of (a) and of the log's records above scan_seq
 * owned by O, each re-read and deleted only if O still holds it (a key
 * removed or re-registered since is skipped).  Where the log no longer
 * holds every record above scan_seq (trimmed: more than LOG_KEEP changes
 * since the scan; restarted; damaged), (b) is unknown and the write walks
 * the namespaces itself, under the lock, as before (counted:
 * reap_walks).  A registration for O can commit after the scan: its
 * registrant checked O alive before O died (procreg.h lets a process
 * register for another). */
typedef struct {
    procreg_owner owner;
    GPtrArray *keys;   /* O's entries in its rows' namespaces at the scan */
    uint64_t scan_seq; /* the last change the scan's snapshot holds */
    bool scanned;      /* false: the scan failed, walk under the lock */
    bool walked;       /* the write walked the namespaces (fallback) */
} reap_ctx;

/* The keys at or after @prefix that begin with it, copied (LMDB codes in
 * *@rc). */
static GPtrArray *keys_with_prefix(MDB_txn *txn, MDB_dbi dbi,
                                   const void *prefix, size_t len, int *rc)
{
    GPtrArray *keys = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_bytes_unref);
    MDB_cursor *c;
    *rc = mdb_cursor_open(txn, dbi, &c);
    if (*rc != 0)
        return keys;
    MDB_val k = {len, (void *)prefix}, v;
    for (*rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
         *rc == 0 && k.mv_size >= len && memcmp(k.mv_data, prefix, len) == 0;
         *rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
        g_ptr_array_add(keys, g_bytes_new(k.mv_data, k.mv_size));
    mdb_cursor_close(c);
    if (*rc == MDB_NOTFOUND || *rc == 0)
        *rc = 0;
    return keys;
}

/* Add to @keys the keys of @owner's entries in the namespace @ns (@ns_len
 * bytes); an LMDB code. */
static int owned_in(MDB_txn *txn, MDB_dbi dbi, const void *ns, size_t ns_len,
                    const procreg_owner *owner, GPtrArray *keys)
{
    int rc;
    char *prefix = g_malloc(ns_len + 1);
    memcpy(prefix, ns, ns_len);
    prefix[ns_len] = '\0';
    uint8_t ob[PROCREG_LMDB_OWNER_BYTES_MAX];
    size_t ob_len = procreg_lmdb_entry_owner_bytes(owner, ob);
    MDB_cursor *c;
    rc = mdb_cursor_open(txn, dbi, &c);
    if (rc == 0) {
        MDB_val k = {ns_len + 1, prefix}, v;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
             rc == 0 && k.mv_size > ns_len &&
             memcmp(k.mv_data, prefix, ns_len + 1) == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            /* The owner's bytes, not a whole decode: reap_entry()
             * decodes what this keeps.  A damaged entry stays: reads
             * report it. */
            int owned = procreg_lmdb_entry_owned_by(v.mv_data, v.mv_size,
                                                    ob, ob_len);
            raw_entry e;
            if (owned < 0)
                owned = entry_decode(&v, &e) == NULL &&
                        owner_same(&e.owner, owner);
            if (owned)
                g_ptr_array_add(keys, g_bytes_new(k.mv_data, k.mv_size));
        }
        mdb_cursor_close(c);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    g_free(prefix);
    return rc;
}

/* Delete the entry at @k if @owner still holds it, logged as reaped; 1
 * when deleted, 0 when not, -1 on a failure (in @w). */
static int reap_entry(lmdb_env *env, MDB_txn *txn, wstate *w, MDB_val *k,
                      const procreg_owner *owner)
{
    MDB_val v;
    raw_entry e;
    int rc = mdb_get(txn, entries_dbi(env, txn), k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (!procreg_lmdb_step_check(w, rc, "reaping"))
        return -1;
    if (entry_decode(&v, &e) != NULL || !owner_same(&e.owner, owner))
        return 0;
    if (!procreg_lmdb_log_change(env, txn, w, PROCREG_EVENT_UNREGISTERED,
                                 PROCREG_REASON_OWNER_EXITED, 0, k, &e) ||
        !procreg_lmdb_entry_delete(env, txn, w, k))
        return -1;
    return 1;
}

/* Reap each key of @keys @owner still holds; -1 on a failure (in @w). */
static int reap_keys(lmdb_env *env, MDB_txn *txn, wstate *w, GPtrArray *keys,
                     const procreg_owner *owner)
{
    int n = 0;
    for (guint j = 0; j < keys->len; j++) {
        gsize klen;
        MDB_val k = {0, NULL};
        k.mv_data = (void *)g_bytes_get_data(keys->pdata[j], &klen);
        k.mv_size = klen;
        int r = reap_entry(env, txn, w, &k, owner);
        if (r < 0)
            return -1;
        n += r;
    }
    return n;
}

/* Reap @owner's entries in the namespace of owner row @row (@len bytes,
 * @plen of prefix) by walking it: the fallback, under the writer lock. */
static int reap_walk(lmdb_env *env, MDB_txn *txn, wstate *w,
                     const uint8_t *row, size_t len, size_t plen,
                     const procreg_owner *owner)
{
    GPtrArray *keys = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_bytes_unref);
    int rc = owned_in(txn, entries_dbi(env, txn), row + plen, len - plen,
                      owner, keys);
    /* A failure is in @w (LMDB's codes are of either sign). */
    int n = procreg_lmdb_step_check(w, rc, "reaping")
                ? reap_keys(env, txn, w, keys, owner)
                : -1;
    g_ptr_array_unref(keys);
    return n;
}

static int reap_step(lmdb_env *env, MDB_txn *txn, void *data, wstate *w)
{
    reap_ctx *ctx = data;
    uint8_t prefix[1 + OWNER_KEY_SIZE];
    prefix[0] = OWNERS_PREFIX;
    procreg_lmdb_owner_key(&ctx->owner, prefix + 1);
    MDB_dbi dbi = entries_dbi(env, txn);
    int rc;
    GPtrArray *rows = keys_with_prefix(txn, dbi, prefix, sizeof prefix, &rc);
    if (!procreg_lmdb_step_check(w, rc, "reaping")) {
        g_ptr_array_unref(rows);
        return 0;
    }
    /* The keys of (a) and (b) (reap_ctx), or a walk. */
    int n = 0;
    ctx->walked = !ctx->scanned;
    if (!ctx->walked) {
        GPtrArray *late = g_ptr_array_new_with_free_func(
            (GDestroyNotify)g_bytes_unref);
        bool whole = procreg_lmdb_log_keys_of(env, txn, ctx->scan_seq,
                                              &ctx->owner, late, &rc);
        int a = 0, b = 0;
        bool read = procreg_lmdb_step_check(w, rc, "reading the change log");
        ctx->walked = read && !whole;
        if (read && whole) {
            a = reap_keys(env, txn, w, ctx->keys, &ctx->owner);
            b = a < 0 ? 0 : reap_keys(env, txn, w, late, &ctx->owner);
        }
        g_ptr_array_unref(late);
        if (w->mdb_rc != 0 || w->corrupt != NULL || a < 0 || b < 0) {
            g_ptr_array_unref(rows);
            return 0;
        }
        n += a + b;
    }
    for (guint i = 0; i < rows->len && w->mdb_rc == 0; i++) {
        gsize len;
        const uint8_t *row = g_bytes_get_data(rows->pdata[i], &len);
        /* The namespace's entries first: the row goes once they are. */
        if (ctx->walked && len > sizeof prefix) {
            int r = reap_walk(env, txn, w, row, len, sizeof prefix,
                              &ctx->owner);
            if (r < 0)
                break;
            n += r;
        }
        MDB_val rk = {len, (void *)row};
        if (!procreg_lmdb_step_check(w, mdb_del(txn, dbi, &rk, NULL),
                                     "dropping an owner row"))
            break;
        w->dirty = true;
    }
    g_ptr_array_unref(rows);
    int members = w->mdb_rc == 0 && w->corrupt == NULL
                      ? procreg_lmdb_reap_members(env, txn, w, &ctx->owner)
                      : 0;
    if (members > 0)
        n += members;
    if (w->mdb_rc == 0)
        procreg_lmdb_log_finish(env, txn, w);
    return n;
}

/* The scan, in a read transaction (no writer lock, so N processes
 * noticing one death do not all queue up for it either): @ctx's keys of
 * (a) and scan_seq.  Whether there is anything to write: an owner row,
 * or a member (or the scan failed: the write walks). */
static bool reap_scan(lmdb_env *env, reap_ctx *ctx)
{
    MDB_txn *txn;
    if (procreg_lmdb_read_begin(env, &txn) != 0)
        return true;
    uint8_t prefix[1 + OWNER_KEY_SIZE];
    prefix[0] = OWNERS_PREFIX;
    procreg_lmdb_owner_key(&ctx->owner, prefix + 1);
    MDB_dbi dbi = entries_dbi(env, txn);
    int rc = procreg_lmdb_log_last(env, txn, &ctx->scan_seq), rrc;
    GPtrArray *rows = keys_with_prefix(txn, dbi, prefix, sizeof prefix, &rrc);
    if (rc == 0)
        rc = rrc;
    for (guint i = 0; rc == 0 && i < rows->len; i++) {
        gsize len;
        const uint8_t *row = g_bytes_get_data(rows->pdata[i], &len);
        if (len <= sizeof prefix)
            continue;
        rc = owned_in(txn, dbi, row + sizeof prefix, len - sizeof prefix,
                      &ctx->owner, ctx->keys);
    }
    ctx->scanned = rc == 0;
    bool has = !ctx->scanned || rows->len > 0 ||
               procreg_lmdb_owner_has_members(env, txn, &ctx->owner);
    g_ptr_array_unref(rows);
    procreg_lmdb_read_end(env, txn);
    return has;
}

static void reap_owner(lmdb_env *env, const procreg_owner *o)
{
    reap_ctx ctx = {.owner = *o};
    ctx.keys = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    if (reap_scan(env, &ctx)) {
#ifdef PROCREG_LMDB_REAP_HOOKS
        procreg_lmdb_hook_reap_scanned(env); /* a commit may land here */
#endif
        int n = procreg_lmdb_write_txn(env, "reap a dead owner's entries",
                                       reap_step, &ctx, NULL);
        if (ctx.walked)
            g_atomic_pointer_add(&env->reap_walks, 1);
        if (n > 0)
            g_atomic_pointer_add(&env->reaped, n);
    }
    g_ptr_array_unref(ctx.keys);
}

/* Every owner in the file, so deaths are noticed (and the dead reaped)
 * even for entries nobody here has looked at. */
static void sweep_owners(lmdb_env *env)
{
    MDB_txn *txn;
    if (procreg_lmdb_read_begin(env, &txn) != 0)
        return;
    GArray *owners = g_array_new(FALSE, FALSE, sizeof(procreg_owner));
    MDB_cursor *c;
    static const uint8_t prefix = OWNERS_PREFIX;
    if (mdb_cursor_open(txn, entries_dbi(env, txn), &c) == 0) {
        /* The rows of one owner are adjacent. */
        MDB_val k = {1, (void *)&prefix}, v;
        int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        procreg_owner last = {0, 0};
        while (rc == 0 && owners->len < 65536 && k.mv_size > 0 &&
               ((const uint8_t *)k.mv_data)[0] == OWNERS_PREFIX) {
            procreg_owner o;
            if (k.mv_size > 1 + OWNER_KEY_SIZE &&
                procreg_lmdb_owner_from_key((const uint8_t *)k.mv_data + 1,
                                            OWNER_KEY_SIZE, &o) &&
                !owner_same(&o, &last)) {
                g_array_append_val(owners, o);
                last = o;
            }
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(c);
    }
    /* A read-only opener of a format 1 to 4 file: its per-entry index,
     * while this snapshot has it. */
    if (env->old_owners != 0 &&
        mdb_cursor_open(txn, env->old_owners, &c) == 0) {
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
    procreg_lmdb_member_owners(env, txn, owners);
    procreg_lmdb_read_end(env, txn);
    for (guint i = 0; i < owners->len && !g_atomic_int_get(&env->stop); i++)
        procreg_lmdb_owner_alive(env, &g_array_index(owners, procreg_owner, i));
    g_array_unref(owners);
}

/* Ask /proc about the polled owners; queue the dead for reaping.  Only
 * the monitor thread removes recs from the cache, so the ids taken here
 * still name recs when it looks them up again. */
static void poll_owners(lmdb_env *env)
{
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(owner_id));
    pthread_mutex_lock(&env->owners_lock);
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, env->owner_cache);
    while (g_hash_table_iter_next(&it, NULL, &v))
        if (((owner_rec *)v)->polled)
            g_array_append_val(ids, ((owner_rec *)v)->id);
    pthread_mutex_unlock(&env->owners_lock);
    for (guint i = 0; i < ids->len; i++) {
        owner_id *id = &g_array_index(ids, owner_id, i);
        procreg_owner o = {id->pid, id->start_time};
        if (procreg_owner_is_alive(&o))
            continue;
        pthread_mutex_lock(&env->owners_lock);
        owner_rec *rec = g_hash_table_lookup(env->owner_cache, id);
        if (rec != NULL && rec->polled) {
            rec->polled = false;
            rec->alive = false;
            env->polled--;
            queue_reap(env, rec);
        }
        pthread_mutex_unlock(&env->owners_lock);
    }
    g_array_unref(ids);
}

static gpointer monitor_main(gpointer data)
{
    lmdb_env *env = data;
    sweep_owners(env);
    while (!g_atomic_int_get(&env->stop)) {
        struct epoll_event evs[32];
        pthread_mutex_lock(&env->owners_lock);
        bool polling = env->polled > 0;
        pthread_mutex_unlock(&env->owners_lock);
        int n = epoll_wait(env->epfd, evs, G_N_ELEMENTS(evs),
                           polling ? POLL_MS : -1);
        if (n < 0 && errno != EINTR)
            break;
        if (polling)
            poll_owners(env);
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

void procreg_lmdb_owners_init(lmdb_env *env)
{
    pthread_mutex_init(&env->owners_lock, NULL);
    g_queue_init(&env->reap_queue);
    env->owner_cache = g_hash_table_new_full(owner_hash, owner_equal, NULL,
                                             g_free);
    env->epfd = env->evfd = -1;
}

void procreg_lmdb_monitor_start(lmdb_env *env)
{
    env->epfd = epoll_create1(EPOLL_CLOEXEC);
    env->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct rlimit rl;
    env->monitor_max = MONITOR_MAX;
    const char *mode = g_getenv("PROCREG_MONITOR");
    env->poll_only = mode != NULL && strcmp(mode, "poll") == 0;
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
}

void procreg_lmdb_monitor_stop(lmdb_env *env)
{
    if (env->monitor == NULL)
        return;
    g_atomic_int_set(&env->stop, 1);
    monitor_wake(env);
    g_thread_join(env->monitor);
    env->monitor = NULL;
}

void procreg_lmdb_owners_clear(lmdb_env *env)
{
    GHashTableIter it;
    gpointer rec;
    g_hash_table_iter_init(&it, env->owner_cache);
    while (g_hash_table_iter_next(&it, NULL, &rec))
        if (((owner_rec *)rec)->pidfd >= 0)
            close(((owner_rec *)rec)->pidfd);
    g_hash_table_unref(env->owner_cache);
    g_queue_clear(&env->reap_queue);
    if (env->epfd >= 0)
        close(env->epfd);
    if (env->evfd >= 0)
        close(env->evfd);
    pthread_mutex_destroy(&env->owners_lock);
}
