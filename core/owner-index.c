/*
 * The owner index: each owner process (pid and start time) mapped to the
 * keys it registered through this registry, with the revision each had
 * then.  It is kept under the key stripes by the write paths, so cleanup
 * and procreg_list_owned() cost what that owner holds.  An entry in the
 * index is only a hint: cleanup re-reads each key and removes it only
 * while the backend still shows the dead owner, with the revision it saw.
 *
 * It owns the owner records (owner-index.h) and their life: a record is
 * made with the owner's first key, its owner watched then (a pidfd in the
 * monitor's epoll set, or the /proc poll); it is marked dead once (by the
 * monitor, by that first check, or by a read or write that found the
 * death first) and dropped with its last key, or when its cleanup ends.
 * The monitor (liveness.c) waits on the watch set and cleans up; this
 * file calls nothing of it.  The calling process itself is not indexed.
 * Also procreg_list_owned().
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "owner-index.h"

static owned_key *owned_key_new(const char *k, uint64_t revision)
{
    size_t n = strlen(k);
    owned_key *ok = g_malloc(sizeof(owned_key) + n + 1);
    ok->revision = revision;
    memcpy(ok->key, k, n + 1);
    return ok;
}

static char *member_key_string(const char *ns, const char *group,
                               uint64_t id)
{
    return g_strdup_printf("%c%s\x1f%s\x1f%" G_GUINT64_FORMAT, MEMBER_MARK,
                           ns, group, id);
}

static bool owned_key_is_member(const owned_key *ok)
{
    return ok->key[0] == MEMBER_MARK;
}

/* Split a key string into @ns and @name (copies); of a member's, into
 * @ns and the group. */
static void owned_key_names(const owned_key *ok, char **ns, char **name)
{
    const char *start = ok->key + owned_key_is_member(ok);
    const char *sep = strchr(start, '\x1f');
    const char *end = owned_key_is_member(ok) ? strrchr(start, '\x1f')
                                              : sep + 1 + strlen(sep + 1);
    *ns = g_strndup(start, (gsize)(sep - start));
    *name = g_strndup(sep + 1, (gsize)(end - sep - 1));
}

static void rec_free(owner_rec *rec)
{
    if (rec->pidfd >= 0)
        close(rec->pidfd);
    g_hash_table_unref(rec->keys);
    g_free(rec);
}

PROCREG_INTERNAL void procreg_owner_recs_free(gpointer p)
{
    GPtrArray *a = p;
    for (guint i = 0; i < a->len; i++)
        rec_free(a->pdata[i]);
    g_ptr_array_unref(a);
}

PROCREG_INTERNAL void procreg_monitor_wake(procreg_monitor *m)
{
    uint64_t one = 1;
    if (m->evfd >= 0 && write(m->evfd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is saturated, so a wakeup is pending. */
    }
}

/* ---- the index (m->lock held) ---- */

static owner_rec *find_locked(procreg_monitor *m, const procreg_owner *o)
{
    GPtrArray *a = g_hash_table_lookup(m->by_pid, GINT_TO_POINTER(o->pid));
    for (guint i = 0; a != NULL && i < a->len; i++) {
        owner_rec *rec = a->pdata[i];
        if (rec->owner.start_time == o->start_time)
            return rec;
    }
    return NULL;
}

static void set_dead_flag(procreg *reg, procreg_monitor *m)
{
    if (m->n_dead > 0)
        atomic_fetch_or_explicit(&reg->slow, PROCREG_SLOW_DEAD_OWNERS,
                                 memory_order_relaxed);
    else
        atomic_fetch_and_explicit(&reg->slow,
                                  ~(unsigned)PROCREG_SLOW_DEAD_OWNERS,
                                  memory_order_relaxed);
}

static void unwatch(procreg_monitor *m, owner_rec *rec)
{
    if (rec->pidfd >= 0) {
        epoll_ctl(m->epfd, EPOLL_CTL_DEL, rec->pidfd, NULL);
        close(rec->pidfd);
        rec->pidfd = -1;
    } else {
        m->n_polled--;
    }
}

static void queue_cleanup(procreg_monitor *m, owner_rec *rec)
{
    if (!rec->queued && !rec->cleaning) {
        rec->queued = true;
        g_queue_push_tail(&m->cleanup, rec);
        procreg_monitor_wake(m);
    }
}

PROCREG_INTERNAL void procreg_monitor_mark_dead(procreg_monitor *m,
                                                owner_rec *rec)
{
    if (rec->dead)
        return;
    rec->dead = true;
    rec->dead_at_ns = (int64_t)procreg_now_ns();
    unwatch(m, rec);
    m->n_dead++;
    m->owners_exited++;
    set_dead_flag(m->reg, m);
    queue_cleanup(m, rec);
}

PROCREG_INTERNAL void procreg_monitor_drop_rec(procreg_monitor *m,
                                               owner_rec *rec)
{
    if (!rec->dead)
        unwatch(m, rec);
    else
        m->n_dead--;
    g_hash_table_remove(m->by_serial, &rec->serial);
    GPtrArray *a = g_hash_table_lookup(m->by_pid,
                                       GINT_TO_POINTER(rec->owner.pid));
    g_ptr_array_remove_fast(a, rec);
    m->n_owners--;
    if (a->len == 0)
        g_hash_table_remove(m->by_pid, GINT_TO_POINTER(rec->owner.pid));
    set_dead_flag(m->reg, m);
    rec_free(rec);
}

static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}


/* Index @k (a key or member string) for @owner at @revision. */
static void index_add(procreg *reg, const char *k, const procreg_owner *owner,
                      uint64_t revision)
{
    procreg_monitor *m = reg->monitor;
    pthread_mutex_lock(&m->lock);
    owner_rec *rec = find_locked(m, owner);
    if (rec == NULL) {
        /* Watch the owner: open its pidfd without the lock, then check it
         * is still the process we mean (its pid may have been reused). */
        bool poll_all = m->poll_all;
        pthread_mutex_unlock(&m->lock);
        int fd = -1, err = 0;
        if (!poll_all) {
            fd = pidfd_open_(owner->pid);
            err = fd < 0 ? errno : 0;
        }
        bool alive = err != ESRCH && procreg_owner_is_alive(owner);
        pthread_mutex_lock(&m->lock);
        if (err == ENOSYS || err == EPERM)
            m->poll_all = true;
        rec = find_locked(m, owner);
        if (rec != NULL) {
            if (fd >= 0)
                close(fd);
        } else {
            rec = g_new0(owner_rec, 1);
            rec->owner = *owner;
            rec->serial = m->next_serial++;
            rec->pidfd = fd;
            rec->keys = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                              g_free);
            if (fd >= 0) {
                struct epoll_event ev = {.events = EPOLLIN,
                                         .data.u64 = rec->serial};
                if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
                    close(fd);
                    rec->pidfd = -1;
                }
            }
            if (rec->pidfd < 0) {
                m->n_polled++;
                procreg_monitor_wake(m); /* the monitor starts its poll timer */
            }
            GPtrArray *a = g_hash_table_lookup(m->by_pid,
                                               GINT_TO_POINTER(owner->pid));
            if (a == NULL) {
                a = g_ptr_array_new();
                g_hash_table_insert(m->by_pid, GINT_TO_POINTER(owner->pid), a);
            }
            g_ptr_array_add(a, rec);
            g_hash_table_insert(m->by_serial, &rec->serial, rec);
            m->n_owners++;
            if (!alive)
                procreg_monitor_mark_dead(m, rec);
        }
    }
    owned_key *ok = g_hash_table_lookup(rec->keys, k);
    if (ok != NULL) {
        if (revision > ok->revision)
            ok->revision = revision;
    } else {
        ok = owned_key_new(k, revision);
        g_hash_table_insert(rec->keys, ok->key, ok);
        m->n_keys++;
    }
    /* Registered just as its owner died: the cleanup picks it up. */
    if (rec->dead)
        queue_cleanup(m, rec);
    pthread_mutex_unlock(&m->lock);
}

PROCREG_INTERNAL void procreg_owner_index_add_other(procreg *reg,
                                                    const char *ns,
                                                    const char *name,
                                                    const procreg_owner *owner,
                                                    uint64_t revision)
{
    char *k = procreg_key_string(ns, name);
    index_add(reg, k, owner, revision);
    g_free(k);
}

PROCREG_INTERNAL void procreg_owner_index_add_member(procreg *reg,
                                                     const char *ns,
                                                     const char *group,
                                                     const procreg_owner *owner,
                                                     uint64_t member_id)
{
    if (procreg_owner_is_self(owner))
        return;
    char *k = member_key_string(ns, group, member_id);
    index_add(reg, k, owner, member_id);
    g_free(k);
}

/* Forget @k (freed here) for @owner if indexed at <= @revision. */
static void index_remove(procreg *reg, char *k, const procreg_owner *owner,
                         uint64_t revision)
{
    procreg_monitor *m = reg->monitor;
    pthread_mutex_lock(&m->lock);
    owner_rec *rec = find_locked(m, owner);
    if (rec != NULL) {
        owned_key *ok = g_hash_table_lookup(rec->keys, k);
        if (ok != NULL && ok->revision <= revision) {
            g_hash_table_remove(rec->keys, k);
            m->n_keys--;
        }
        /* A dead owner's record goes when its cleanup ends. */
        if (g_hash_table_size(rec->keys) == 0 && !rec->dead)
            procreg_monitor_drop_rec(m, rec);
    }
    pthread_mutex_unlock(&m->lock);
    g_free(k);
}

PROCREG_INTERNAL void procreg_owner_index_remove_other(
    procreg *reg, const char *ns, const char *name,
    const procreg_owner *owner, uint64_t revision)
{
    index_remove(reg, procreg_key_string(ns, name), owner, revision);
}

PROCREG_INTERNAL void procreg_owner_index_remove_member(
    procreg *reg, const char *ns, const char *group,
    const procreg_owner *owner, uint64_t member_id)
{
    if (!procreg_owner_is_self(owner))
        index_remove(reg, member_key_string(ns, group, member_id), owner,
                     member_id);
}

PROCREG_INTERNAL bool procreg_owner_known_dead(procreg *reg,
                                               const procreg_owner *owner)
{
    procreg_monitor *m = reg->monitor;
    pthread_mutex_lock(&m->lock);
    owner_rec *rec = find_locked(m, owner);
    bool dead = rec != NULL && rec->dead;
    pthread_mutex_unlock(&m->lock);
    return dead;
}

/*
 * A death that a read or a write found before the monitor did (a process
 * gone that the monitor has not marked): the monitor takes it as noticed
 * now, and queues its cleanup.
 *
 * Invariant: reads and writes agree on deaths; once an operation treated
 * an owner's entry as gone, no later read shows it.  Lookups trust the
 * monitor alone, so a death found first elsewhere is marked before that
 * operation returns (before, a list left out an entry that a lookup 4 us
 * later showed, and an unregister refused with EPERM naming a holder
 * that a list had just left out).  An owner this registry does not watch
 * (registered by another process of a shared backend) has no record to
 * mark (returns false): such a backend filters dead owners itself
 * (lmdb), and a write leaves that owner's entry to it (writes.c).
 * Forced by tests/core/test-liveness.c.
 */
PROCREG_INTERNAL bool procreg_owner_seen_dead(procreg *reg,
                                              const procreg_owner *owner)
{
    procreg_monitor *m = reg->monitor;
    pthread_mutex_lock(&m->lock);
    owner_rec *rec = find_locked(m, owner);
    if (rec != NULL)
        procreg_monitor_mark_dead(m, rec);
    pthread_mutex_unlock(&m->lock);
    return rec != NULL;
}

/* Whether a read leaves out an entry of @owner: known dead, or, with
 * @pending (a cleanup was pending when the backend was read: the monitor
 * may have finished it and forgotten the owner since), its process gone. */
PROCREG_INTERNAL bool procreg_owner_gone(procreg *reg,
                                         const procreg_owner *owner,
                                         bool pending,
                                         const procreg_owner *self)
{
    if (procreg_owner_known_dead(reg, owner))
        return true;
    if (!pending || owner->pid == self->pid || procreg_owner_is_alive(owner))
        return false;
    procreg_owner_seen_dead(reg, owner);
    return true;
}

/*
 * Whether a read leaves out the entry of @owner it read from the backend:
 * its owner known dead, or, with @pending (procreg_dead_pending() read
 * before the backend was), its process gone.
 *
 * Invariant (with procreg_owner_seen_dead()): once an operation treated an
 * owner's entry as gone, no later read shows it.  A cleanup may end, and
 * the monitor forget the dead owner, between the backend's answer and the
 * check here: the entry read is then already removed, and "known dead" no
 * longer says so (a list showed such an entry again while its cleanup ran;
 * later a lookup did, after an update had answered "not found" for its
 * dead holder; then procreg_wait_for() did).  Forced by
 * /core/liveness/lookup-across-cleanup for lookups and waits.
 */
PROCREG_INTERNAL bool procreg_read_owner_gone(procreg *reg, bool pending,
                                              const procreg_owner *owner)
{
    if (!pending && !procreg_dead_pending(reg))
        return false;
    procreg_owner self;
    procreg_owner_self(&self);
    return procreg_owner_gone(reg, owner, pending, &self);
}

PROCREG_INTERNAL key_copy *procreg_key_copy_new(const owned_key *ok)
{
    key_copy *c = g_new(key_copy, 1);
    c->key = g_strdup(ok->key);
    owned_key_names(ok, &c->ns, &c->name);
    c->revision = ok->revision;
    c->member = owned_key_is_member(ok);
    return c;
}

PROCREG_INTERNAL void procreg_key_copy_free(gpointer p)
{
    key_copy *c = p;
    g_free(c->key);
    g_free(c->ns);
    g_free(c->name);
    g_free(c);
}

/* ---- what an owner holds ---- */

/* This process's own entries are not indexed: find them by a scan. */
static int list_own(procreg *reg, pid_t pid, GArray *found, GError **error)
{
    GArray *all = procreg_entry_array_new();
    int rc = procreg_backend_list_all(reg->backend, NULL, all, error);
    for (guint i = 0; rc == 0 && i < all->len; i++) {
        procreg_entry *e = &g_array_index(all, procreg_entry, i);
        if (e->owner.pid == pid) {
            g_array_append_val(found, *e);
            memset(e, 0, sizeof *e); /* moved */
        }
    }
    g_array_unref(all);
    return rc;
}

PROCREG_API int procreg_list_owned(procreg *reg, pid_t pid,
                                   procreg_entry **out, size_t *n_out,
                                   GError **error)
{
    g_return_val_if_fail(reg != NULL && out != NULL && n_out != NULL,
                         PROCREG_EINVAL);
    *out = NULL;
    *n_out = 0;
    if (pid <= 0)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "pid %d is not a process id", (int)pid);
    procreg_tblock *b = procreg_tblock_get(reg);
    uint64_t t0 = procreg_now_ns();
    GArray *found = procreg_entry_array_new();
    int rc = 0;
    if (pid == getpid()) {
        rc = list_own(reg, pid, found, error);
    } else {
        procreg_monitor *m = reg->monitor;
        GPtrArray *keys = g_ptr_array_new_with_free_func(procreg_key_copy_free);
        pthread_mutex_lock(&m->lock);
        GPtrArray *recs = g_hash_table_lookup(m->by_pid, GINT_TO_POINTER(pid));
        for (guint i = 0; recs != NULL && i < recs->len; i++) {
            owner_rec *rec = recs->pdata[i];
            if (rec->dead)
                continue;
            GHashTableIter it;
            gpointer v;
            g_hash_table_iter_init(&it, rec->keys);
            while (g_hash_table_iter_next(&it, NULL, &v))
                if (!owned_key_is_member(v))
                    g_ptr_array_add(keys, procreg_key_copy_new(v));
        }
        pthread_mutex_unlock(&m->lock);
        for (guint i = 0; rc == 0 && i < keys->len; i++) {
            key_copy *c = keys->pdata[i];
            procreg_stack_key key;
            if (procreg_key_init_stack(&key, c->ns, c->name, NULL) != 0)
                continue;
            procreg_entry e = {0};
            GError *local = NULL;
            int r = procreg_backend_lookup_entry(reg->backend, &key.key, &e,
                                                 &local);
            if (r != 0 && r != PROCREG_ENOTFOUND && local != NULL)
                g_propagate_error(error, local);
            else
                g_clear_error(&local);
            if (r == 0 && e.owner.pid == pid) {
                g_free(e.ns);
                g_free(e.name);
                e.ns = c->ns;
                e.name = c->name;
                c->ns = c->name = NULL; /* moved */
                g_array_append_val(found, e);
            } else {
                procreg_entry_clear(&e);
                if (r != 0 && r != PROCREG_ENOTFOUND)
                    rc = r;
            }
        }
        g_ptr_array_unref(keys);
    }
    if (rc == 0)
        procreg_entry_array_steal(found, out, n_out);
    else
        g_array_unref(found);
    procreg_op_done(reg, b, PROCREG_OP_LIST, rc, t0, NULL, NULL, *n_out);
    return rc;
}
