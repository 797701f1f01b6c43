/*
 * A backend instance's entry slab: its entries packed in 2 MiB chunks of
 * their own instead of spread through the program's heap (ckht and
 * ghash keep their entries here).
 *
 * Why: a lookup costs the cache and TLB misses on its table slot and its
 * entry.  Entries from malloc lie between whatever else the program
 * allocates meanwhile (in procreg-bench, each entry's metadata, so that
 * 100 000 ckht entries spanned 19 000 pages that 2 000 would hold), and
 * lookups by name were 1.2x to 1.75x slower than on packed entries
 * (doc/benchmarks.md).  A chunk costs the pages its entries touch, and
 * the first is kept off transparent huge pages, so that a small registry
 * does not cost 2 MiB.  (Advising the chunks onto huge pages made no
 * difference above the noise at 100 000 or 1M entries: not done.)
 *
 * Sizes are rounded up to 8 bytes, the alignment entries need (their
 * widest fields are 64-bit words and pointers): with 16, a 72-byte entry
 * (ckht's and ghash's 47-byte header and procreg-bench's 25-byte keys)
 * took an 80-byte slot, 8 bytes of 97 per entry at 1M.  A lookup reads
 * the same number of cache lines either way (bytes 32 to 71 of an entry
 * span two lines for half the entries, at a stride of 80 or of 72).
 * An allocation larger than PROCREG_SLAB_MAX comes from malloc, and its
 * size tells procreg_slab_release() so.  A released slot goes on its size
 * class's free list, for the next entry of that size; chunks go back to
 * the system when the slab is destroyed.  A slab therefore keeps the memory
 * of its peak number of entries of each size (procreg_slab_figures()).
 *
 * Concurrency: a backend may make entries outside its writer lock and
 * release them under it (ckht: epoch reclamation) or after it, so the
 * slab has a lock of its own, and every field of procreg_slab is read and
 * written under it (tests/ckht/slab.c forces a release inside an
 * allocation).  Readers never touch the slab, only entries, which the
 * backend releases only once no reader can hold them, as with malloc.
 *
 * Checkers: under AddressSanitizer free slots and the chunk's unused end
 * are poisoned, so a read of a released entry is reported; under valgrind
 * each slot is a MALLOCLIKE block, so memcheck reports reads of released
 * entries and entries never released.
 */
#include "slab.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) /* clang */
#define SLAB_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(SLAB_ASAN)
#include <sanitizer/asan_interface.h>
#define SLAB_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define SLAB_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define SLAB_POISON(p, n) ((void)(p), (void)(n))
#define SLAB_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define SLAB_VALGRIND 1
#endif
#endif
#ifndef SLAB_VALGRIND
#define VALGRIND_MALLOCLIKE_BLOCK(p, n, rz, zeroed) ((void)0)
#define VALGRIND_FREELIKE_BLOCK(p, rz) ((void)0)
#define VALGRIND_MAKE_MEM_NOACCESS(p, n) ((void)0)
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)0)
#endif

#define CHUNK_BYTES ((size_t)2 << 20)

/* The start of every chunk: which slab it belongs to, and the next chunk
 * (for destroy).  Slots follow it. */
struct procreg_slab_chunk {
    procreg_slab *slab;
    struct procreg_slab_chunk *next;
};
typedef struct procreg_slab_chunk slab_chunk;
#define CHUNK_HEADER procreg_slab_class_bytes(sizeof(slab_chunk))

void (*procreg_slab_test_hook)(void);

size_t procreg_slab_bytes_large(void *p, size_t size)
{
#ifdef __GLIBC__
    return malloc_usable_size(p) + sizeof(size_t); /* and malloc's header */
#else
    (void)p;
    return size;
#endif
}

void procreg_slab_init(procreg_slab *slab)
{
    memset(slab, 0, sizeof(*slab));
    procreg_mutex_init(&slab->lock);
}

/* A chunk aligned to its size, so that a slot finds its chunk by masking
 * its address; NULL when the system has no memory for one. */
static slab_chunk *chunk_map(procreg_slab *slab)
{
    char *p = mmap(NULL, 2 * CHUNK_BYTES, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    char *aligned = (char *)(((uintptr_t)p + CHUNK_BYTES - 1) &
                             ~(uintptr_t)(CHUNK_BYTES - 1));
    if (aligned > p)
        munmap(p, (size_t)(aligned - p));
    munmap(aligned + CHUNK_BYTES, (size_t)(p + CHUNK_BYTES - aligned));
    /* Where transparent huge pages are "always", the first touch would
     * back the whole first chunk: a registry of a few entries stays at
     * the 4 KiB pages it touches. */
    if (slab->chunks == NULL)
        (void)madvise(aligned, CHUNK_BYTES, MADV_NOHUGEPAGE); /* advice */
    slab_chunk *c = (slab_chunk *)(void *)aligned;
    c->slab = slab;
    c->next = slab->chunks;
    slab->chunks = c;
    SLAB_POISON(aligned + CHUNK_HEADER, CHUNK_BYTES - CHUNK_HEADER);
    VALGRIND_MAKE_MEM_NOACCESS(aligned + CHUNK_HEADER,
                               CHUNK_BYTES - CHUNK_HEADER);
    return c;
}

void *procreg_slab_alloc(procreg_slab *slab, size_t size)
{
    size_t bytes = procreg_slab_class_bytes(size);
    char *p;

    if (bytes > PROCREG_SLAB_MAX)
        return malloc(size);
    procreg_mutex_lock(&slab->lock);
    size_t class = bytes / PROCREG_SLAB_ALIGN - 1;
    p = slab->free[class];
    if (p != NULL) {
        SLAB_UNPOISON(p, bytes);
        VALGRIND_MAKE_MEM_DEFINED(p, sizeof(void *));
        void *next = *(void **)(void *)p;
        if (__builtin_expect(procreg_slab_test_hook != NULL, 0))
            procreg_slab_test_hook();
        slab->free[class] = next;
        slab->free_bytes -= bytes;
    } else {
        if (slab->chunks == NULL ||
            (size_t)(slab->bump_end - slab->bump) < bytes) {
            slab_chunk *c = chunk_map(slab);
            if (c == NULL) {
                procreg_mutex_unlock(&slab->lock);
                errno = ENOMEM;
                return NULL;
            }
            /* The old chunk's end (less than a slot) stays unused. */
            slab->bump = (char *)c + CHUNK_HEADER;
            slab->bump_end = (char *)c + CHUNK_BYTES;
            slab->chunk_bytes += CHUNK_BYTES;
        }
        p = slab->bump;
        slab->bump += bytes;
        SLAB_UNPOISON(p, bytes);
    }
    procreg_mutex_unlock(&slab->lock);
    VALGRIND_MALLOCLIKE_BLOCK(p, size, 0, 0);
    return p;
}

void procreg_slab_release(void *p, size_t size)
{
    size_t bytes = procreg_slab_class_bytes(size);

    if (bytes > PROCREG_SLAB_MAX) {
        free(p);
        return;
    }
    slab_chunk *c = (slab_chunk *)(void *)((uintptr_t)p &
                                           ~(uintptr_t)(CHUNK_BYTES - 1));
    procreg_slab *slab = c->slab;
    size_t class = bytes / PROCREG_SLAB_ALIGN - 1;

    procreg_mutex_lock(&slab->lock);
    /* The link is written while the block is still the caller's, and the
     * block (link included) is then given back to valgrind, which makes
     * it inaccessible: one client request, not three (each is a dozen
     * instructions, valgrind or not). */
    *(void **)p = slab->free[class];
    VALGRIND_FREELIKE_BLOCK(p, 0);
    SLAB_POISON(p, bytes);
    slab->free[class] = p;
    slab->free_bytes += bytes;
    procreg_mutex_unlock(&slab->lock);
}

void procreg_slab_figures(procreg_slab *slab, size_t *chunk_bytes,
                          size_t *free_bytes)
{
    procreg_mutex_lock(&slab->lock);
    *chunk_bytes = slab->chunk_bytes;
    *free_bytes = slab->free_bytes;
    procreg_mutex_unlock(&slab->lock);
}

void procreg_slab_destroy(procreg_slab *slab)
{
    slab_chunk *c = slab->chunks;

    while (c != NULL) {
        slab_chunk *next = c->next;
        SLAB_UNPOISON(c, CHUNK_BYTES);
        munmap(c, CHUNK_BYTES);
        c = next;
    }
    memset(slab->free, 0, sizeof(slab->free));
    slab->chunks = NULL;
}
