/*
 * The big-reader lock of brlock.h.
 *
 * Invariant: a reader is inside only while its slot counts it and it saw
 * `writer` == 0 after counting itself; a writer is inside only after it
 * set `writer` = 1 and then saw every slot at 0.  Both sides use
 * sequentially consistent operations for "publish mine, then read
 * theirs" (a reader: increment its slot, load `writer`; a writer: store
 * `writer`, load the slots), so in their single total order one of the
 * two comes first: either the writer's scan sees the reader's count and
 * waits for the reader's decrement (a release that the scan's load
 * acquires: the reader's reads happen before the writer's writes), or
 * the reader sees `writer` == 1, uncounts itself and waits for the
 * writer's mutex.  A reader that gets in after a writer synchronises
 * with the writer's release of `writer`.  Readers never wait for
 * readers; a writer waits only for the readers already inside, and keeps
 * new ones out, so writers do not starve.
 *
 * The dangerous interleavings (a reader counted but not yet checking, a
 * writer announced but not yet scanning) are forced by
 * tests/core/test-brlock.c through the hooks below, compiled in only
 * with PROCREG_BRLOCK_TEST_HOOKS.
 */
#include "brlock.h"

#include <sched.h>
#include <stdbool.h>

#ifdef PROCREG_BRLOCK_TEST_HOOKS
void procreg_brlock_hook_reader_counted(void);
void procreg_brlock_hook_writer_announced(void);
#define HOOK(name) procreg_brlock_hook_##name()
#else
#define HOOK(name) ((void)0)
#endif

/* Spins on a slot before the writer starts yielding its core. */
#define WRITER_SPINS 256

/* Each thread's slot, handed out round robin at its first lock. */
static _Thread_local int my_slot
    __attribute__((tls_model("initial-exec"))) = -1;
static atomic_uint next_slot;

static inline int slot_of_thread(void)
{
    if (__builtin_expect(my_slot < 0, 0))
        my_slot = (int)(atomic_fetch_add_explicit(&next_slot, 1,
                                                  memory_order_relaxed) %
                        PROCREG_BRLOCK_SLOTS);
    return my_slot;
}

void procreg_brlock_init(procreg_brlock *l)
{
    for (int i = 0; i < PROCREG_BRLOCK_SLOTS; i++)
        atomic_init(&l->slot[i].readers, 0);
    atomic_init(&l->writer, 0);
    procreg_mutex_init(&l->writers);
}

int procreg_brlock_read_lock(procreg_brlock *l)
{
    int s = slot_of_thread();

    for (;;) {
        atomic_fetch_add_explicit(&l->slot[s].readers, 1,
                                  memory_order_seq_cst);
        HOOK(reader_counted);
        if (atomic_load_explicit(&l->writer, memory_order_seq_cst) == 0)
            return s;
        atomic_fetch_sub_explicit(&l->slot[s].readers, 1,
                                  memory_order_release);
        /* The writer holds the mutex while `writer` is 1: wait for it. */
        procreg_mutex_lock(&l->writers);
        procreg_mutex_unlock(&l->writers);
    }
}

void procreg_brlock_read_unlock(procreg_brlock *l, int slot)
{
    atomic_fetch_sub_explicit(&l->slot[slot].readers, 1,
                              memory_order_release);
}

/* Whether every slot was empty when read: each load is on its own, and
 * each one that reads 0 is a reader the Dekker argument above keeps out.
 * One branch for all slots: this is most of a write's lock. */
static inline bool slots_empty(procreg_brlock *l)
{
    long any = 0;

    for (int i = 0; i < PROCREG_BRLOCK_SLOTS; i++)
        any |= atomic_load_explicit(&l->slot[i].readers,
                                    memory_order_seq_cst);
    return any == 0;
}

void procreg_brlock_write_lock(procreg_brlock *l)
{
    procreg_mutex_lock(&l->writers);
    atomic_store_explicit(&l->writer, 1, memory_order_seq_cst);
    HOOK(writer_announced);
    for (unsigned n = 0; !slots_empty(l); n++)
        if (n >= WRITER_SPINS)
            sched_yield();
}

void procreg_brlock_write_unlock(procreg_brlock *l)
{
    atomic_store_explicit(&l->writer, 0, memory_order_release);
    procreg_mutex_unlock(&l->writers);
}
