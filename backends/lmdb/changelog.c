/*
 * Changes across processes: the change log, FILE-notify and the watcher.
 *
 * Owns: the change log (every write transaction appends its
 * changes there, numbered, in the same transaction, and trims it to
 * LOG_KEEP records); FILE-notify, one shared page whose counter a writer
 * bumps and FUTEX_WAKEs after each commit that logged; and the watcher
 * thread (one per file per process) that sleeps on that counter; the
 * delivery of the log to this process's handles; and the history read
 * back from it (procreg_subscribe_from(): a change's position is its
 * number in the log, the same in every process).
 *
 * Delivery, the invariant: every change in the log reaches every attached
 * handle exactly once, in log order (which is commit order: LMDB has one
 * writer, and a change is numbered inside its transaction), a handle's own
 * changes through procreg_backend_host_notify_own(), the others' through
 * procreg_backend_host_notify().  One cursor per file (last_seq) moves
 * under inst_lock, held from reading the log to the last notification, by
 * whichever thread delivers: the watcher, or a writer, which delivers
 * right after its commit so that its own changes are reported before its
 * call returns (PROCREG_CAP_ORDERED_EVENTS).  So the events of one key
 * follow its revisions even when other processes write it: a change
 * committed before ours is delivered before ours, one committed after it
 * after.  Notifications run no user code (the core queues events and
 * telemetry), so delivering under inst_lock cannot call back into here.
 * Relies on: txn.c for the read transactions; liveness.c to start
 * watching the owner of a new entry.
 */
#include "lmdb-internal.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NOTIFY_MAGIC 0x4e475250u /* "PRGN" */
#define NOTIFY_SIZE 4096
/* Change-log records kept for watchers that fall behind: at least
 * LOG_KEEP, trimmed by the write whose numbers reach a multiple of
 * LOG_TRIM_EVERY (so at most LOG_TRIM_EVERY - 1 more, beside a large
 * transaction's own): the first record's page is rewritten once per
 * LOG_TRIM_EVERY changes, not by every write. */
#define LOG_KEEP 4096
#define LOG_TRIM_EVERY 64

/* FILE-notify: one page, shared by every process that has FILE open. */
struct lmdb_notify_page {
    uint32_t magic;
    uint32_t version;
    uint32_t counter; /* futex word: bumped after each commit with changes */
    uint32_t waiters; /* watchers that may be asleep on counter */
};

/* ---- FILE-notify ---- */

void procreg_lmdb_notify_open(lmdb_env *env)
{
    char *path = g_strconcat(env->path, NOTIFY_SUFFIX, NULL);
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
    lmdb_notify_page *page = p;
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

void procreg_lmdb_notify_close(lmdb_env *env)
{
    if (env->notify != NULL)
        munmap(env->notify, NOTIFY_SIZE);
    if (env->notify_fd >= 0)
        close(env->notify_fd);
}

void procreg_lmdb_notify_commit(lmdb_env *env)
{
    lmdb_notify_page *p = env->notify;
    if (p == NULL || !env->notify_writable)
        return;
    __atomic_add_fetch(&p->counter, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&p->waiters, __ATOMIC_SEQ_CST) != 0)
        syscall(SYS_futex, &p->counter, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* ---- the log ---- */

/* The log is never trimmed to nothing, so its last number is also the
 * change counter.  Its records are the last keys of their database
 * (format.c): no record there, or another key last, means no change. */
int procreg_lmdb_log_last(lmdb_env *env, MDB_txn *txn, uint64_t *out)
{
    const lmdb_layout *lay = procreg_lmdb_layout(env, txn);
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, lay->events, &c);
    if (rc != 0)
        return rc;
    MDB_val k, v;
    *out = 0;
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    if (rc == 0 && !procreg_lmdb_event_seq(lay, &k, out) &&
        (!lay->main || (k.mv_size > 0 &&
                        ((const uint8_t *)k.mv_data)[0] == 0xff)))
        rc = MDB_CORRUPTED;
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Empty the log (a damaged one restarts at 1). */
static int log_clear(const lmdb_layout *lay, MDB_txn *txn)
{
    if (!lay->main)
        return mdb_drop(txn, lay->events, 0);
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, lay->events, &c);
    if (rc != 0)
        return rc;
    static const uint8_t ff = 0xff;
    MDB_val k = {1, (void *)&ff}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    /* After a delete the cursor stands on the next record (C_DEL). */
    while (rc == 0) {
        rc = mdb_cursor_del(c, 0);
        if (rc == 0)
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

bool procreg_lmdb_log_change(lmdb_env *env, MDB_txn *txn, wstate *w,
                             procreg_event_kind kind,
                             procreg_event_reason reason,
                             uint32_t origin_instance, const MDB_val *key,
                             const raw_entry *e)
{
    if (!w->seq_loaded) {
        int rc = procreg_lmdb_log_last(env, txn, &w->seq);
        if (rc == MDB_CORRUPTED || (rc == 0 && w->seq == UINT64_MAX)) {
            /* The log is only a notification channel: a damaged one (a
             * malformed or exhausted last number) starts again at 1, and
             * the watchers notice the restart and follow. */
            rc = log_clear(procreg_lmdb_layout(env, txn), txn);
            w->seq = 0;
            if (rc == 0)
                g_atomic_pointer_add(&env->log_restarts, 1);
        }
        if (!procreg_lmdb_step_check(w, rc, "reading the change log"))
            return false;
        w->seq_loaded = true;
        w->first_seq = w->seq + 1;
    }
    const lmdb_layout *lay = procreg_lmdb_layout(env, txn);
    uint8_t kbuf[EVENT_KEY_SIZE];
    MDB_val k = procreg_lmdb_event_key(lay, ++w->seq, kbuf);
    MDB_val v = {procreg_lmdb_event_size(key->mv_size, e), NULL};
    int rc = mdb_put(txn, lay->events, &k, &v, MDB_RESERVE | MDB_APPEND);
    if (rc == MDB_KEYEXIST) {
        /* Only a damaged log (a key above ours) can refuse an append. */
        g_free(w->corrupt);
        w->corrupt = g_strdup("the change log is damaged (a record is "
                              "numbered above the last change)");
        return false;
    }
    if (!procreg_lmdb_step_check(w, rc, "appending to the change log"))
        return false;
    procreg_lmdb_event_encode(kind, reason,
                              (uint32_t)(w->origin_pid ? w->origin_pid
                                                       : env->self.pid),
                              origin_instance, key->mv_data, key->mv_size, e,
                              v.mv_data);
    w->events++;
    w->dirty = true;
    return true;
}

/* Trim the log to LOG_KEEP records, never dropping a record of this
 * transaction; the last step of every write that logged (those whose
 * numbers reach a multiple of LOG_TRIM_EVERY trim). */
bool procreg_lmdb_log_finish(lmdb_env *env, MDB_txn *txn, wstate *w)
{
    if (w->events == 0 || w->seq <= LOG_KEEP ||
        w->seq / LOG_TRIM_EVERY == (w->first_seq - 1) / LOG_TRIM_EVERY)
        return true;
    uint64_t cutoff = MIN(w->seq - LOG_KEEP, w->first_seq - 1);
    const lmdb_layout *lay = procreg_lmdb_layout(env, txn);
    MDB_cursor *c;
    if (!procreg_lmdb_step_check(w, mdb_cursor_open(txn, lay->events, &c),
                                 "trimming the log"))
        return false;
    uint8_t kbuf[EVENT_KEY_SIZE];
    MDB_val ck = procreg_lmdb_event_key(lay, 0, kbuf), cv;
    int rc = mdb_cursor_get(c, &ck, &cv, MDB_SET_RANGE);
    while (rc == 0) {
        uint64_t s = 0;
        if (!procreg_lmdb_event_seq(lay, &ck, &s) && lay->main)
            break; /* not a change: none is left */
        if (s > cutoff)
            break;
        /* After a delete the cursor already stands on the next record;
         * MDB_NEXT returns it (LMDB's C_DEL rule). */
        rc = mdb_cursor_del(c, 0);
        if (rc == 0)
            rc = mdb_cursor_get(c, &ck, &cv, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return procreg_lmdb_step_check(w, rc == MDB_NOTFOUND ? 0 : rc,
                                   "trimming the log");
}

/* ---- reading the log ---- */

/* A change read from the log, with its number. */
typedef struct {
    uint64_t seq;
    procreg_lmdb_change ch;
} logged;

static void logged_clear(gpointer p)
{
    procreg_lmdb_change_clear(&((logged *)p)->ch);
}

static GArray *logged_array_new(void)
{
    GArray *a = g_array_new(FALSE, TRUE, sizeof(logged));
    g_array_set_clear_func(a, logged_clear);
    return a;
}

/* Append the records numbered above @after to @out, in order (those it
 * cannot decode are counted in corrupt_reads); *@last: the number of the
 * last record read (@after when none).  Returns how many numbers were
 * missing on the way (trimmed before they were read). */
static uint64_t log_read_after(lmdb_env *env, MDB_txn *txn, uint64_t after,
                               GArray *out, uint64_t *last)
{
    MDB_cursor *c;
    uint64_t missing = 0;
    *last = after;
    const lmdb_layout *lay = procreg_lmdb_layout(env, txn);
    if (mdb_cursor_open(txn, lay->events, &c) != 0)
        return 0;
    uint8_t kbuf[EVENT_KEY_SIZE];
    MDB_val k = procreg_lmdb_event_key(lay, after + 1, kbuf), v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        logged l = {0};
        if (!procreg_lmdb_event_seq(lay, &k, &l.seq))
            continue;
        missing += l.seq - *last - 1;
        *last = l.seq;
        if (procreg_lmdb_change_decode(v.mv_data, v.mv_size, &l.ch))
            g_array_append_val(out, l);
        else
            g_atomic_pointer_add(&env->corrupt_reads, 1);
    }
    mdb_cursor_close(c);
    return missing;
}

bool procreg_lmdb_log_keys_of(lmdb_env *env, MDB_txn *txn, uint64_t after,
                              const procreg_owner *owner, GPtrArray *keys,
                              int *rc)
{
    uint64_t last = 0;
    *rc = procreg_lmdb_log_last(env, txn, &last);
    if (*rc != 0 || last < after)
        return false; /* damaged, or restarted since @after */
    if (last == after)
        return true;
    const lmdb_layout *lay = procreg_lmdb_layout(env, txn);
    MDB_cursor *c;
    *rc = mdb_cursor_open(txn, lay->events, &c);
    if (*rc != 0)
        return false;
    uint8_t kbuf[EVENT_KEY_SIZE];
    MDB_val k = procreg_lmdb_event_key(lay, after + 1, kbuf), v;
    uint64_t expect = after + 1;
    bool whole = true;
    int r = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    for (; r == 0 && expect <= last; r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        uint64_t seq;
        procreg_lmdb_event_header h;
        /* Numbered without gaps: a record missing was trimmed. */
        if (!procreg_lmdb_event_seq(lay, &k, &seq) || seq != expect ||
            v.mv_size < sizeof h) {
            whole = false;
            break;
        }
        expect++;
        memcpy(&h, v.mv_data, sizeof h);
        if (h.version != PROCREG_LMDB_EVENT_VERSION ||
            (uint64_t)sizeof h + h.key_len + h.meta_len != v.mv_size) {
            whole = false; /* damaged: the caller looks elsewhere */
            break;
        }
        if ((h.kind == PROCREG_EVENT_REGISTERED ||
             h.kind == PROCREG_EVENT_UPDATED) &&
            h.pid == (uint64_t)owner->pid &&
            h.start_time == owner->start_time)
            g_ptr_array_add(keys, g_bytes_new((const uint8_t *)v.mv_data +
                                                  sizeof h,
                                              h.key_len));
    }
    mdb_cursor_close(c);
    if (r != 0 && r != MDB_NOTFOUND)
        *rc = r;
    return *rc == 0 && whole && expect == last + 1;
}

/* The entry a change describes (borrowed from it). */
static procreg_entry logged_entry(const procreg_lmdb_change *ch)
{
    return (procreg_entry){
        .ns = ch->ns,
        .name = ch->name,
        .owner = {(pid_t)ch->h.pid, ch->h.start_time},
        .metadata = ch->meta,
        .registered_at = ch->h.registered_at,
        .revision = ch->h.revision,
    };
}

/* Whether handle @st made the change. */
static bool logged_own(const lmdb_env *env, const lmdb_state *st,
                       const procreg_lmdb_change *ch)
{
    return ch->h.origin_pid == (uint32_t)env->self.pid &&
           ch->h.origin_instance == st->instance_id;
}

/* ---- the watcher ---- */

/* Read the log past last_seq and report each change to every instance,
 * as its own to the one that made it.  inst_lock held. */
static void deliver_locked(lmdb_env *env)
{
    if (env->instances->len == 0)
        return; /* attach moves the cursor to the end of the log */
    MDB_txn *txn;
    if (procreg_lmdb_read_begin(env, &txn) != 0)
        return;
    GArray *changes = logged_array_new();
    uint64_t last = 0;
    /* A log that restarted (it was damaged) holds numbers below ours. */
    if (procreg_lmdb_log_last(env, txn, &last) == 0 && last < env->last_seq)
        env->last_seq = 0;
    uint64_t lost =
        log_read_after(env, txn, env->last_seq, changes, &env->last_seq);
    procreg_lmdb_read_end(env, txn);
    g_atomic_pointer_add(&env->events_lost, lost);

    for (guint i = 0; i < changes->len; i++) {
        logged *l = &g_array_index(changes, logged, i);
        procreg_lmdb_change *ch = &l->ch;
        procreg_entry e = logged_entry(ch);
        if (ch->h.kind == PROCREG_EVENT_REGISTERED ||
            ch->h.kind == PROCREG_EVENT_JOINED)
            procreg_lmdb_owner_alive(env, &e.owner); /* watch the new owner */
        for (guint j = 0; j < env->instances->len; j++) {
            lmdb_state *st = env->instances->pdata[j];
            bool own = logged_own(env, st, ch);
            if (own && !LMDB_ORDERED_EVENTS)
                continue; /* the core reports its own changes */
            procreg_backend_host_notify_at(st->host, ch->h.kind,
                                           ch->h.reason, &e, own, l->seq);
            g_atomic_pointer_add(&env->events_delivered, 1);
        }
    }
    g_array_unref(changes);
}

void procreg_lmdb_deliver(lmdb_env *env)
{
    pthread_mutex_lock(&env->inst_lock);
    deliver_locked(env);
    pthread_mutex_unlock(&env->inst_lock);
}

#if defined(PROCREG_TEST_SLOW_WATCHER) && !defined(PROCREG_TEST_SLOW_WATCHER_US)
#define PROCREG_TEST_SLOW_WATCHER_US 2000
#endif

static gpointer watcher_main(gpointer data)
{
    lmdb_env *env = data;
    lmdb_notify_page *p = env->notify;
    __atomic_add_fetch(&p->waiters, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        uint32_t seen = __atomic_load_n(&p->counter, __ATOMIC_SEQ_CST);
#ifdef PROCREG_TEST_SLOW_WATCHER
        /* Test builds only (tests/lmdb/meson.build, tests/history): a
         * watcher that always comes late, as on a loaded machine, so the
         * tests force the interleaving where a write here follows one
         * made elsewhere before the watcher read it. */
        g_usleep(PROCREG_TEST_SLOW_WATCHER_US);
#endif
        procreg_lmdb_deliver(env);
        if (g_atomic_int_get(&env->stop))
            break;
        /* Sleeps only while the counter still reads @seen: a commit
         * after the load above makes this return at once. */
        syscall(SYS_futex, &p->counter, FUTEX_WAIT, seen, NULL, NULL, 0);
    }
    __atomic_sub_fetch(&p->waiters, 1, __ATOMIC_SEQ_CST);
    return NULL;
}


void procreg_lmdb_attach_instance(lmdb_env *env, lmdb_state *st)
{
    if (st->host == NULL)
        return;
    pthread_mutex_lock(&env->inst_lock);
    if (env->instances->len == 0) {
        /* Changes committed before this point are history, not events. */
        MDB_txn *txn;
        env->last_seq = 0;
        if (procreg_lmdb_read_begin(env, &txn) == 0) {
            procreg_lmdb_log_last(env, txn, &env->last_seq);
            procreg_lmdb_read_end(env, txn);
        }
    } else {
        /* The others get what is pending; @st starts at the end. */
        deliver_locked(env);
    }
    g_ptr_array_add(env->instances, st);
    if (env->watcher == NULL && env->notify != NULL && env->notify_writable)
        env->watcher = g_thread_new("procreg-lmdb-watch", watcher_main, env);
    pthread_mutex_unlock(&env->inst_lock);
}

void procreg_lmdb_detach_instance(lmdb_env *env, lmdb_state *st)
{
    pthread_mutex_lock(&env->inst_lock);
    g_ptr_array_remove(env->instances, st);
    pthread_mutex_unlock(&env->inst_lock);
}

void procreg_lmdb_watcher_stop(lmdb_env *env)
{
    if (env->watcher == NULL)
        return;
    g_atomic_int_set(&env->stop, 1);
    __atomic_add_fetch(&env->notify->counter, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &env->notify->counter, FUTEX_WAKE, INT_MAX, NULL,
            NULL, 0);
    g_thread_join(env->watcher);
    env->watcher = NULL;
}

/* ---- the history (procreg_subscribe_from()) ---- */

int procreg_lmdb_history_head(void *state, uint64_t *out, GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    MDB_txn *txn;
    int rc = procreg_lmdb_read_begin(env, &txn);
    if (rc == 0) {
        rc = procreg_lmdb_log_last(env, txn, out);
        procreg_lmdb_read_end(env, txn);
    }
    return rc == 0 ? 0 : procreg_lmdb_fail(env, rc, "reading the log", error);
}

int procreg_lmdb_history_read(void *state, const char *ns, uint64_t after,
                              GArray *out, uint64_t *head, GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    MDB_txn *txn;
    int rc = procreg_lmdb_read_begin(env, &txn);
    if (rc != 0)
        return procreg_lmdb_fail(env, rc, "reading the log", error);
    uint64_t last = 0, missing = 0;
    GArray *changes = logged_array_new();
    rc = procreg_lmdb_log_last(env, txn, &last);
    /* Records are numbered without gaps and trimmed oldest first: the
     * history after @after is whole when none is missing from after + 1
     * on. */
    if (rc == 0 && after < last)
        missing = log_read_after(env, txn, after, changes, &last);
    procreg_lmdb_read_end(env, txn);
    if (rc != 0)
        rc = procreg_lmdb_fail(env, rc, "reading the log", error);
    else if (after > last)
        rc = procreg_set_error(
            error, PROCREG_ECOMPACTED,
            "position %" G_GUINT64_FORMAT " is past the end of the change "
            "log of %s, %" G_GUINT64_FORMAT " (the log restarted, or the "
            "position is another file's)", after, env->path, last);
    else if (missing > 0)
        rc = procreg_set_error(
            error, PROCREG_ECOMPACTED,
            "the change log of %s no longer holds the changes after "
            "position %" G_GUINT64_FORMAT " (it keeps the latest %d or "
            "more)",
            env->path, after, LOG_KEEP);
    for (guint i = 0; rc == 0 && i < changes->len; i++) {
        logged *l = &g_array_index(changes, logged, i);
        if (ns != NULL && strcmp(l->ch.ns, ns) != 0)
            continue;
        procreg_change c = {
            .kind = l->ch.h.kind,
            .reason = l->ch.h.reason,
            .position = l->seq,
            .own = logged_own(env, st, &l->ch),
            .entry = logged_entry(&l->ch),
        };
        /* The array owns its strings and metadata: take the change's. */
        l->ch.ns = l->ch.name = NULL;
        l->ch.meta = NULL;
        g_array_append_val(out, c);
    }
    g_array_unref(changes);
    if (rc == 0)
        *head = last;
    return rc;
}
