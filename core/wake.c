/*
 * The wake-up board: waiters (procreg_wait_for, procreg_wait_members:
 * wait.c; lock waiters, lock.c) sleep on a condition variable per awaited
 * key or group; every change of a key (and a join of a group) bumps its
 * generation and broadcasts, directly from the writer (or host_notify)
 * thread (events.c calls procreg_wakes_notify()), so waking needs no
 * dispatcher.
 */
#include "internal.h"

#include <errno.h>
#include <time.h>

/* One awaited key. */
typedef struct {
    pthread_cond_t cond;
    uint64_t gen; /* bumped by each registration of the key */
    int waiters;
} awaited;

struct procreg_wakes {
    pthread_mutex_t wait_lock; /* waits */
    GHashTable *waits;         /* key string -> awaited* */
    atomic_int n_waiters;
};

static void awaited_free(gpointer p)
{
    awaited *a = p;
    pthread_cond_destroy(&a->cond);
    g_free(a);
}

PROCREG_INTERNAL procreg_wakes *procreg_wakes_new(void)
{
    procreg_wakes *h = g_new0(procreg_wakes, 1);
    pthread_mutex_init(&h->wait_lock, NULL);
    h->waits = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                     awaited_free);
    return h;
}

PROCREG_INTERNAL atomic_int *procreg_wakes_counter(procreg_wakes *h)
{
    return &h->n_waiters;
}

PROCREG_INTERNAL void procreg_wakes_free(procreg_wakes *h)
{
    if (h == NULL)
        return;
    g_hash_table_unref(h->waits);
    pthread_mutex_destroy(&h->wait_lock);
    g_free(h);
}

PROCREG_INTERNAL uint64_t procreg_wakes_waiters(procreg *reg)
{
    return (uint64_t)atomic_load(&reg->wakes->n_waiters);
}

/* What the waiters of key (ns, name), or with @group of that group, wait
 * on: names hold no control characters, so a leading one marks a group. */
static char *wait_key_string(const char *ns, const char *name, bool group)
{
    char *k = procreg_key_string(ns, name);
    if (!group)
        return k;
    char *g = g_strconcat("\x1e", k, NULL);
    g_free(k);
    return g;
}

PROCREG_INTERNAL void procreg_wakes_notify(procreg *reg, const char *ns,
                                          const char *name, bool group)
{
    procreg_wakes *h = reg->wakes;
    /* A read-modify-write, not a load: it either reads the waiter's
     * increment (and we wake it), or its value is what the waiter's
     * increment reads, which then synchronises with us and the waiter's
     * lookup sees the new entry.  (No standalone fence: ThreadSanitizer
     * cannot model those.) */
    if (atomic_fetch_add_explicit(&h->n_waiters, 0, memory_order_seq_cst) == 0)
        return;
    char *k = wait_key_string(ns, name, group);
    pthread_mutex_lock(&h->wait_lock);
    awaited *a = g_hash_table_lookup(h->waits, k);
    if (a != NULL) {
        a->gen++;
        pthread_cond_broadcast(&a->cond);
    }
    pthread_mutex_unlock(&h->wait_lock);
    g_free(k);
}

struct procreg_wake {
    /* Published with a release store at the end of procreg_wake_join():
     * procreg_wake_cancel() may run on another thread (a GCancellable's
     * handler), ordered only by GLib's uninstrumented locks. */
    _Atomic(procreg_wakes *) h;
    awaited *a;
    char *key;
    bool cancelled; /* under h->wait_lock */
};

PROCREG_INTERNAL procreg_wake *procreg_wake_join(procreg *reg, const char *ns,
                                                 const char *name, bool group)
{
    procreg_wakes *h = reg->wakes;
    procreg_wake *w = g_new0(procreg_wake, 1);
    w->key = wait_key_string(ns, name, group);
    pthread_mutex_lock(&h->wait_lock);
    awaited *a = g_hash_table_lookup(h->waits, w->key);
    if (a == NULL) {
        a = g_new0(awaited, 1);
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&a->cond, &attr);
        pthread_condattr_destroy(&attr);
        g_hash_table_insert(h->waits, g_strdup(w->key), a);
    }
    a->waiters++;
    /* Pairs with wake_waiters()' read-modify-write (see there). */
    atomic_fetch_add_explicit(&h->n_waiters, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&h->wait_lock);
    w->a = a;
    atomic_store_explicit(&w->h, h, memory_order_release);
    return w;
}

PROCREG_INTERNAL bool procreg_wake_read(procreg_wake *w, uint64_t *gen)
{
    procreg_wakes *h = atomic_load_explicit(&w->h, memory_order_relaxed);
    pthread_mutex_lock(&h->wait_lock);
    *gen = w->a->gen;
    bool live = !w->cancelled;
    pthread_mutex_unlock(&h->wait_lock);
    return live;
}

PROCREG_INTERNAL bool procreg_wake_sleep(procreg_wake *w, uint64_t gen,
                                         const struct timespec *deadline)
{
    procreg_wakes *h = atomic_load_explicit(&w->h, memory_order_relaxed);
    awaited *a = w->a;
    bool timed_out = false;
    pthread_mutex_lock(&h->wait_lock);
    while (a->gen == gen && !w->cancelled && !timed_out) {
        if (deadline == NULL)
            pthread_cond_wait(&a->cond, &h->wait_lock);
        else
            timed_out = pthread_cond_timedwait(&a->cond, &h->wait_lock,
                                               deadline) == ETIMEDOUT;
    }
    bool woken = a->gen != gen || w->cancelled;
    pthread_mutex_unlock(&h->wait_lock);
    return woken;
}

PROCREG_INTERNAL void procreg_wake_cancel(procreg_wake *w)
{
    procreg_wakes *h = atomic_load_explicit(&w->h, memory_order_acquire);
    pthread_mutex_lock(&h->wait_lock);
    w->cancelled = true;
    pthread_cond_broadcast(&w->a->cond);
    pthread_mutex_unlock(&h->wait_lock);
}

PROCREG_INTERNAL void procreg_wake_leave(procreg_wake *w)
{
    procreg_wakes *h = atomic_load_explicit(&w->h, memory_order_relaxed);
    pthread_mutex_lock(&h->wait_lock);
    atomic_fetch_sub_explicit(&h->n_waiters, 1, memory_order_relaxed);
    if (--w->a->waiters == 0)
        g_hash_table_remove(h->waits, w->key);
    pthread_mutex_unlock(&h->wait_lock);
    g_free(w->key);
    g_free(w);
}
