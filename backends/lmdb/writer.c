/*
 * The writer lock: procreg's writers take turns through a lock of their
 * own, so that LMDB's writer mutex is never contended across processes.
 *
 * Why.  LMDB 0.9 on Linux serialises writers with a process-shared,
 * robust pthread mutex in FILE-lock.  glibc's unlock of such a mutex
 * clears FUTEX_WAITERS and wakes one waiter, which must set the flag
 * again when it retries.  If that waiter is killed after its wake-up and
 * before its retry, while another writer has taken the free mutex
 * (without the flag), the remaining waiters are never woken: the
 * kernel's exit cleanup passes a dead waiter's wake-up on only when the
 * mutex word has no owner (handle_futex_death(), kernel/futex/core.c).
 * They sleep on a free mutex until a later writer happens to contend;
 * SIGKILLs at random left survivors asleep for 10-20 s and more.
 * tests/lmdb/test-writers.c forces exactly this interleaving.
 *
 * The lock.  An open file description lock (fcntl F_OFD_SETLKW, a write
 * lock on byte 0 of FILE-notify) through a descriptor of the env's own,
 * behind a process-local mutex, since every thread of a process shares
 * that descriptor.  The kernel releases the lock when the last descriptor
 * of its open file description closes (a killed holder's included) and
 * then wakes every waiter, which retry inside the kernel: no wake-up can
 * be lost.  A batched registration only tries the lock (F_OFD_SETLK,
 * procreg_lmdb_writer_trylock()) and, while a writer holds it, sleeps on
 * its request slot instead, where a leader can answer it (batch.c): so
 * every release of the lock nudges those sleepers
 * (procreg_lmdb_batch_nudge()).  Lockless readers nudge no one: while
 * only they hold it, the try waits for the lock (F_OFD_SETLKW).
 *
 * Invariant: a thread begins an LMDB write transaction only while it
 * holds the writer lock (procreg_lmdb_writer_lock(): operations, reaping,
 * the checks at open, a batch's leader, batch.c), and only after the
 * lock's taker resolved what a dead batch leader left, so across all
 * processes at most one procreg writer of a file waits for or holds
 * LMDB's writer mutex; a holder that
 * died leaves it "owner died", which the next writer recovers without
 * waiting.  Readers never take the lock (those of a lockless env take it
 * shared, below).  A forked child closes its copies of the writer-lock
 * descriptors (they would keep a dead parent's lock held), and a
 * descriptor is close-on-exec.
 *
 * Owns: the lock's descriptor of each writable (or lockless) env, the
 * list of those descriptors for fork, and taking and releasing the lock.
 * Relies on: env.c to call the fork handlers below in its own.
 */
#include "lmdb-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* Every writer-lock descriptor of this process (ints), for a child. */
static pthread_mutex_t fds_lock = PTHREAD_MUTEX_INITIALIZER;
static GArray *fds;

static struct flock lock_range(short type)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    return fl;
}

void procreg_lmdb_writer_init(lmdb_env *env)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    /* A write begun inside another on the same thread fails, not hangs. */
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&env->writer_mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    env->writer_fd = -1;
}

int procreg_lmdb_writer_open(lmdb_env *env)
{
    char *path = g_strconcat(env->path, NOTIFY_SUFFIX, NULL);
    int fd = open(path, (env->lockless ? O_RDONLY : O_RDWR | O_CREAT) |
                            O_CLOEXEC | O_NOFOLLOW, 0600);
    int err = errno;
    g_free(path);
    if (fd < 0)
        return err;
    env->writer_fd = fd;
    pthread_mutex_lock(&fds_lock);
    if (fds == NULL)
        fds = g_array_new(FALSE, FALSE, sizeof(int));
    g_array_append_val(fds, fd);
    pthread_mutex_unlock(&fds_lock);
    return 0;
}

void procreg_lmdb_writer_clear(lmdb_env *env)
{
    if (env->writer_fd >= 0) {
        pthread_mutex_lock(&fds_lock);
        for (guint i = 0; i < fds->len; i++)
            if (g_array_index(fds, int, i) == env->writer_fd) {
                g_array_remove_index_fast(fds, i);
                break;
            }
        pthread_mutex_unlock(&fds_lock);
        close(env->writer_fd);
    }
    pthread_mutex_destroy(&env->writer_mutex);
}

/* The env whose writer lock this thread holds, if any: a try of it from
 * the same thread fails as a nested lock does (errorcheck mutex), where
 * pthread_mutex_trylock() would answer busy for ever. */
static _Thread_local const lmdb_env *held_here;

static int lock_error(lmdb_env *env, int err, GError **error)
{
    return procreg_set_error(error, PROCREG_EBACKEND,
                             "lmdb registry '%s': cannot take the "
                             "writer lock (%s%s): %s", env->path,
                             env->path, NOTIFY_SUFFIX, g_strerror(err));
}

/* The lock is this thread's: resolve what a dead leader left. */
static int locked(lmdb_env *env)
{
    held_here = env;
    procreg_lmdb_batch_recover(env); /* batch.c's invariant */
    return 0;
}

/* In a test build, the failure the lock was told to give (set by a
 * test's hook in one thread, read by every thread that writes). */
static int injected_failure(void)
{
#ifdef PROCREG_TEST_BATCH_HOOK
    return __atomic_load_n(&procreg_lmdb_batch_lock_errno, __ATOMIC_RELAXED);
#else
    return 0;
#endif
}

int procreg_lmdb_writer_lock(lmdb_env *env, GError **error)
{
    int injected = injected_failure();
    if (injected != 0)
        return lock_error(env, injected, error);
    int err = pthread_mutex_lock(&env->writer_mutex);
    if (err == 0) {
        struct flock fl = lock_range(F_WRLCK);
        while (fcntl(env->writer_fd, F_OFD_SETLKW, &fl) != 0) {
            if (errno != EINTR) {
                err = errno;
                pthread_mutex_unlock(&env->writer_mutex);
                break;
            }
        }
    }
    return err != 0 ? lock_error(env, err, error) : locked(env);
}

/* The lock's byte is taken: F_WRLCK by a writer, F_RDLCK by lockless
 * readers only, F_UNLCK when it was let go meanwhile. */
static short taken_as(lmdb_env *env)
{
    struct flock fl = lock_range(F_WRLCK);
    return fcntl(env->writer_fd, F_OFD_GETLK, &fl) == 0 ? fl.l_type
                                                         : F_WRLCK;
}

int procreg_lmdb_writer_trylock(lmdb_env *env, GError **error)
{
    int injected = injected_failure();
    if (injected != 0)
        return lock_error(env, injected, error);
    int err = held_here == env ? EDEADLK
                               : pthread_mutex_trylock(&env->writer_mutex);
    if (err == EBUSY)
        return PROCREG_LMDB_BUSY;
    if (err != 0)
        return lock_error(env, err, error);
    struct flock fl = lock_range(F_WRLCK);
    int cmd = F_OFD_SETLK;
    while (fcntl(env->writer_fd, cmd, &fl) != 0) {
        err = errno;
        if (err == EINTR)
            continue;
        if (cmd == F_OFD_SETLKW || (err != EAGAIN && err != EACCES)) {
            pthread_mutex_unlock(&env->writer_mutex);
            return lock_error(env, err, error);
        }
        /* A writer nudges the registrants when it lets go; lockless
         * readers do not (they cannot write the request area), and a
         * registrant that looked every BATCH_WAIT_MS would rarely catch
         * the lock free between the reads of one that reads on and on:
         * wait for readers in the kernel, which wakes a writer at each of
         * their releases. */
        short by = taken_as(env);
        if (by == F_WRLCK) {
            pthread_mutex_unlock(&env->writer_mutex);
            return PROCREG_LMDB_BUSY;
        }
        cmd = by == F_RDLCK ? F_OFD_SETLKW : F_OFD_SETLK;
    }
    return locked(env);
}

void procreg_lmdb_writer_unlock(lmdb_env *env)
{
    held_here = NULL;
    struct flock fl = lock_range(F_UNLCK);
    fcntl(env->writer_fd, F_OFD_SETLK, &fl); /* an unlock cannot fail */
    pthread_mutex_unlock(&env->writer_mutex);
    procreg_lmdb_batch_nudge(env); /* batch.c's invariant */
}

/* A lockless reader (a read-only registry whose lock file it cannot
 * write) has no reader slot, so a writer could reuse the pages it reads.
 * Invariant: while a read of a lockless env runs, its process holds a
 * read lock on the writer lock's byte, which no writer can take then.
 * The first read of the process takes it, the last one releases it.  A
 * registry whose FILE-notify cannot be read goes without (doc/lmdb.md). */
void procreg_lmdb_writer_lock_shared(lmdb_env *env)
{
    if (!env->lockless || env->writer_fd < 0)
        return;
    pthread_mutex_lock(&env->writer_mutex);
    if (env->shared_reads++ == 0) {
        struct flock fl = lock_range(F_RDLCK);
        while (fcntl(env->writer_fd, F_OFD_SETLKW, &fl) != 0 &&
               errno == EINTR)
            ;
    }
    pthread_mutex_unlock(&env->writer_mutex);
}

void procreg_lmdb_writer_unlock_shared(lmdb_env *env)
{
    if (!env->lockless || env->writer_fd < 0)
        return;
    pthread_mutex_lock(&env->writer_mutex);
    if (--env->shared_reads == 0) {
        struct flock fl = lock_range(F_UNLCK);
        fcntl(env->writer_fd, F_OFD_SETLK, &fl);
    }
    pthread_mutex_unlock(&env->writer_mutex);
}

void procreg_lmdb_writer_fork_prepare(void)
{
    pthread_mutex_lock(&fds_lock);
}

void procreg_lmdb_writer_fork_parent(void)
{
    pthread_mutex_unlock(&fds_lock);
}

void procreg_lmdb_writer_fork_child(void)
{
    /* Closing a copy releases nothing: the parent's descriptor keeps its
     * lock (if held) until the parent releases it or dies. */
    if (fds != NULL) {
        for (guint i = 0; i < fds->len; i++)
            close(g_array_index(fds, int, i));
        g_array_set_size(fds, 0);
    }
    pthread_mutex_unlock(&fds_lock);
}
