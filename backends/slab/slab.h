/*
 * The entry slab backends share (slab.c): allocations of up to
 * PROCREG_SLAB_MAX bytes packed in chunks of the slab's own.  Hidden.
 */
#ifndef PROCREG_BACKENDS_SLAB_H
#define PROCREG_BACKENDS_SLAB_H

#include <stddef.h>

#include "../../core/mutex.h"

/* Allocations up to this many bytes live in the slab; larger ones in
 * malloc. */
#define PROCREG_SLAB_MAX 512
/* Slots' alignment and the size classes' step. */
#define PROCREG_SLAB_ALIGN 8

typedef struct procreg_slab_chunk procreg_slab_chunk;
/* Every field under `lock` (slab.c says why it has its own). */
typedef struct {
    procreg_mutex lock;
    void *free[PROCREG_SLAB_MAX / PROCREG_SLAB_ALIGN]; /* per size class */
    char *bump, *bump_end;             /* the newest chunk's unused part */
    procreg_slab_chunk *chunks;
    size_t chunk_bytes; /* mapped */
    size_t free_bytes;  /* on the free lists */
} procreg_slab;

void procreg_slab_init(procreg_slab *slab);
/* Unmap every chunk: after every allocation was released or is
 * abandoned. */
void procreg_slab_destroy(procreg_slab *slab);
/* @size bytes, 8-aligned (NULL, errno ENOMEM: no memory); any thread. */
void *procreg_slab_alloc(procreg_slab *slab, size_t size);
/* Give back @p, allocated with @size (from whichever slab it came);
 * any thread. */
void procreg_slab_release(void *p, size_t size);
/* What an allocation of @size takes in a slab (up to PROCREG_SLAB_MAX):
 * its size class, PROCREG_SLAB_ALIGN-byte steps. */
static inline size_t procreg_slab_class_bytes(size_t size)
{
    return (size + PROCREG_SLAB_ALIGN - 1) & ~(size_t)(PROCREG_SLAB_ALIGN - 1);
}
/* procreg_slab_bytes() of an allocation in malloc. */
size_t procreg_slab_bytes_large(void *p, size_t size);
/* What @p, allocated with @size, costs: its slot, or for an allocation
 * in malloc its usable size and chunk header where the C library tells.
 * In line: backends account for every entry they make and retire. */
static inline size_t procreg_slab_bytes(void *p, size_t size)
{
    size_t bytes = procreg_slab_class_bytes(size);

    if (__builtin_expect(bytes <= PROCREG_SLAB_MAX, 1))
        return bytes;
    return procreg_slab_bytes_large(p, size);
}
/* Bytes mapped, and bytes of free slots. */
void procreg_slab_figures(procreg_slab *slab, size_t *chunk_bytes,
                          size_t *free_bytes);
/* Tests only (tests/ckht/slab.c): called by an allocation that reuses a
 * free slot, with the slab's lock held, between reading the free list's
 * head and replacing it. */
extern void (*procreg_slab_test_hook)(void);

#endif
