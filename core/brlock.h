/*
 * A reader/writer lock whose readers write only a cache line of their
 * own (a "big-reader" lock), for backends that ask the core for shared
 * reads (PROCREG_CAP_PARALLEL_READS).  A GRWLock makes every reader do a
 * read-modify-write on the one lock word, so two reading threads pass
 * its line back and forth on every lookup; and it prefers writers, so
 * readers sleep whenever a writer waits.  With two threads and 5% of
 * writes, lookups on ghash fell from about 10 M/s to under 0.5 M/s.
 * Here a reader counts itself in its thread's slot; a writer announces
 * itself, then waits for the slots to empty.  See brlock.c.
 */
#ifndef PROCREG_CORE_BRLOCK_H
#define PROCREG_CORE_BRLOCK_H

#include <stdatomic.h>

#include "mutex.h"

#define PROCREG_BRLOCK_SLOTS 16

typedef struct {
    struct {
        _Atomic long readers;
    } __attribute__((aligned(64))) slot[PROCREG_BRLOCK_SLOTS];
    /* 1 from the moment a writer holds `writers` and wants the readers
     * out until it is done; read by every reader. */
    _Alignas(64) atomic_int writer;
    procreg_mutex writers; /* one writer at a time; readers wait on it */
} procreg_brlock;

void procreg_brlock_init(procreg_brlock *l);
/* Returns the slot to hand procreg_brlock_read_unlock(). */
int procreg_brlock_read_lock(procreg_brlock *l);
void procreg_brlock_read_unlock(procreg_brlock *l, int slot);
void procreg_brlock_write_lock(procreg_brlock *l);
void procreg_brlock_write_unlock(procreg_brlock *l);

#endif
