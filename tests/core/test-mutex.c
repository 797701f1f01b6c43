/*
 * core/mutex.h's mutex in the interleavings that matter: a waiter asleep
 * in the kernel when the holder unlocks, and two waiters asleep, where
 * the first one woken must wake the second when it unlocks (the word
 * stays 2 after a sleeper takes the lock).  A waiter is known to be
 * asleep when its thread's /proc syscall file shows it blocked in futex
 * after the hook the mutex calls just before it sleeps.
 */
#define PROCREG_MUTEX_TEST_HOOKS
#include "../../core/mutex.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>

static atomic_int sleeps; /* times a waiter was about to sleep */

void procreg_mutex_hook_sleep(void)
{
    atomic_fetch_add(&sleeps, 1);
}

typedef struct {
    procreg_mutex *m;
    atomic_int tid;
    atomic_int got; /* 1 once it holds the mutex */
    atomic_int release; /* set by the test: unlock and return */
} waiter;

static gpointer waiter_main(gpointer data)
{
    waiter *w = data;
    atomic_store(&w->tid, (int)syscall(SYS_gettid));
    procreg_mutex_lock(w->m);
    atomic_store(&w->got, 1);
    while (!atomic_load(&w->release))
        g_usleep(100);
    procreg_mutex_unlock(w->m);
    return NULL;
}

/* Whether thread @tid is blocked in the futex system call. */
static gboolean in_futex(int tid)
{
    char path[64], buf[64] = "";
    g_snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return FALSE;
    gboolean yes = fgets(buf, sizeof buf, f) != NULL &&
                   atoi(buf) == SYS_futex;
    fclose(f);
    return yes;
}

/* Wait (5 s at most) until @n sleeps were announced and @w's thread is
 * blocked in futex. */
static void wait_asleep(waiter *w, int n)
{
    gint64 end = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    while (atomic_load(&sleeps) < n || atomic_load(&w->tid) == 0 ||
           !in_futex(atomic_load(&w->tid))) {
        if (g_get_monotonic_time() > end)
            g_error("the waiter never went to sleep on the mutex");
        g_usleep(1000);
    }
}

/* Wait (5 s at most) until @w holds the mutex. */
static void wait_got(waiter *w)
{
    gint64 end = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    while (!atomic_load(&w->got)) {
        if (g_get_monotonic_time() > end)
            g_error("a waiter asleep on the mutex was never woken");
        g_usleep(1000);
    }
}

static void test_uncontended(void)
{
    procreg_mutex m;
    procreg_mutex_init(&m);
    procreg_mutex_lock(&m);
    g_assert_cmpuint(atomic_load(&m.word), ==, 1);
    procreg_mutex_unlock(&m);
    g_assert_cmpuint(atomic_load(&m.word), ==, 0);
}

/* The holder unlocks while a waiter sleeps in the kernel: the unlock
 * must wake it (the word says 2). */
static void test_sleeper_woken(void)
{
    procreg_mutex m;
    procreg_mutex_init(&m);
    atomic_store(&sleeps, 0);
    procreg_mutex_lock(&m);
    waiter w = {.m = &m};
    GThread *t = g_thread_new("waiter", waiter_main, &w);
    wait_asleep(&w, 1);
    g_assert_cmpuint(atomic_load(&m.word), ==, 2);
    g_assert_false(atomic_load(&w.got));
    procreg_mutex_unlock(&m);
    wait_got(&w);
    atomic_store(&w.release, 1);
    g_thread_join(t);
    g_assert_cmpuint(atomic_load(&m.word), ==, 0);
}

/* Two sleepers: the one woken first takes the mutex with the word at 2,
 * so its unlock wakes the other.  A taker that set 1 instead would leave
 * the second asleep for ever. */
static void test_two_sleepers(void)
{
    procreg_mutex m;
    procreg_mutex_init(&m);
    atomic_store(&sleeps, 0);
    procreg_mutex_lock(&m);
    waiter a = {.m = &m}, b = {.m = &m};
    GThread *ta = g_thread_new("a", waiter_main, &a);
    wait_asleep(&a, 1);
    GThread *tb = g_thread_new("b", waiter_main, &b);
    wait_asleep(&b, 2);
    procreg_mutex_unlock(&m);
    /* One of them holds it now, the other still sleeps. */
    gint64 end = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    while (!atomic_load(&a.got) && !atomic_load(&b.got)) {
        if (g_get_monotonic_time() > end)
            g_error("neither sleeper was woken");
        g_usleep(1000);
    }
    waiter *first = atomic_load(&a.got) ? &a : &b;
    waiter *second = first == &a ? &b : &a;
    g_assert_cmpuint(atomic_load(&m.word), ==, 2);
    g_assert_false(atomic_load(&second->got));
    atomic_store(&first->release, 1);
    wait_got(second);
    atomic_store(&second->release, 1);
    g_thread_join(ta);
    g_thread_join(tb);
    g_assert_cmpuint(atomic_load(&m.word), ==, 0);
}

/* Mutual exclusion under contention: a plain counter increments through
 * the mutex from several threads (ThreadSanitizer checks the ordering in
 * CI). */
#define THREADS 4
#define ROUNDS 200000

typedef struct {
    procreg_mutex m;
    long counter;
} shared_count;

static gpointer counter_main(gpointer data)
{
    shared_count *s = data;
    for (int i = 0; i < ROUNDS; i++) {
        procreg_mutex_lock(&s->m);
        s->counter++;
        procreg_mutex_unlock(&s->m);
    }
    return NULL;
}

static void test_exclusion(void)
{
    shared_count s = {.counter = 0};
    procreg_mutex_init(&s.m);
    GThread *t[THREADS];
    for (int i = 0; i < THREADS; i++)
        t[i] = g_thread_new("count", counter_main, &s);
    for (int i = 0; i < THREADS; i++)
        g_thread_join(t[i]);
    g_assert_cmpint(s.counter, ==, (long)THREADS * ROUNDS);
    g_assert_cmpuint(atomic_load(&s.m.word), ==, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/core/mutex/uncontended", test_uncontended);
    g_test_add_func("/core/mutex/sleeper-woken", test_sleeper_woken);
    g_test_add_func("/core/mutex/two-sleepers", test_two_sleepers);
    g_test_add_func("/core/mutex/exclusion", test_exclusion);
    return g_test_run();
}
