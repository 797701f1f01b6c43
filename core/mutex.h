/*
 * A mutex for the writers' short critical sections (the key stripes, the
 * ckht and optimized writer locks): one compare-and-swap to take it when
 * free and one exchange to release it, where glibc's adaptive mutex
 * spends about 65 instructions on the pair (its type dispatch, owner and
 * count fields).  A writer pair (register + unregister) takes five to ten
 * of them.  A thread that finds it held spins a while before it sleeps:
 * the holder is usually gone within the spin, and sleeping would cost two
 * futex calls and a wake-up for a wait shorter than either.
 *
 * Drepper's mutex ("Futexes Are Tricky", mutex 3) with a spin phase.  The
 * word is 0 (free), 1 (held) or 2 (held, and a thread may sleep on it).
 * Invariant: a thread sleeps only while the word is 2 (FUTEX_WAIT
 * compares), and an unlock that finds 2 wakes one sleeper; a thread that
 * has slept takes the lock by exchanging in 2, since it cannot know
 * whether others still sleep, so a sleeper is never left behind: the
 * worst case is one wake-up too many.  The acquire of a taking exchange
 * pairs with the release of the unlock's, which is all ThreadSanitizer
 * needs to see (it understands C11 atomics); tests/core/test-mutex.c
 * forces the sleeping paths.
 */
#ifndef PROCREG_CORE_MUTEX_H
#define PROCREG_CORE_MUTEX_H

#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct {
    _Atomic uint32_t word;
} procreg_mutex;

/* Spins before a waiter sleeps, a pause each: a few microseconds, about
 * what a writer's critical section lasts. */
#define PROCREG_MUTEX_SPINS 128

#ifdef PROCREG_MUTEX_TEST_HOOKS
/* Test builds only (tests/core/test-mutex.c): just before a sleep. */
void procreg_mutex_hook_sleep(void);
#define PROCREG_MUTEX_HOOK_SLEEP() procreg_mutex_hook_sleep()
#else
#define PROCREG_MUTEX_HOOK_SLEEP() ((void)0)
#endif

static inline void procreg_mutex_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The contended path: spin while the holder is likely to finish, then
 * sleep on the word.  Out of line (a copy per file that locks: the
 * library's layers share no internal function with the backends). */
static __attribute__((noinline, unused)) void
procreg_mutex_lock_slow(procreg_mutex *m)
{
    uint32_t c;
    for (int i = 0; i < PROCREG_MUTEX_SPINS; i++) {
        procreg_mutex_relax();
        c = atomic_load_explicit(&m->word, memory_order_relaxed);
        if (c == 0 &&
            atomic_compare_exchange_weak_explicit(&m->word, &c, 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return;
    }
    /* From here on the word says 2 while this thread waits, so the
     * holder's unlock wakes a sleeper. */
    c = atomic_exchange_explicit(&m->word, 2, memory_order_acquire);
    while (c != 0) {
        PROCREG_MUTEX_HOOK_SLEEP();
        syscall(SYS_futex, &m->word, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
        c = atomic_exchange_explicit(&m->word, 2, memory_order_acquire);
    }
}

static inline void procreg_mutex_init(procreg_mutex *m)
{
    atomic_init(&m->word, 0);
}

static inline void procreg_mutex_lock(procreg_mutex *m)
{
    uint32_t c = 0;
    if (__builtin_expect(!atomic_compare_exchange_strong_explicit(
                             &m->word, &c, 1, memory_order_acquire,
                             memory_order_relaxed),
                         0))
        procreg_mutex_lock_slow(m);
}

static inline void procreg_mutex_unlock(procreg_mutex *m)
{
    if (__builtin_expect(atomic_exchange_explicit(&m->word, 0,
                                                  memory_order_release) == 2,
                         0))
        syscall(SYS_futex, &m->word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

#endif /* PROCREG_CORE_MUTEX_H */
