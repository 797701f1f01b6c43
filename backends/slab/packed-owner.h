/*
 * An owner in one word, as the entries of ckht and ghash keep it in their
 * slab slots.  Hidden.
 *
 * The pid sits in the low PROCREG_PACKED_PID_BITS bits and start_time
 * above them, because a separate pid took 4 more bytes of header:
 * procreg-bench's keys ("production\0service_NNNNNN", 25 bytes) then
 * passed the 72-byte slot a 47-byte header leaves them.  Linux pids are
 * below 2^22 (PID_MAX_LIMIT) and start times are clock ticks since boot
 * (2^42 ticks: 1394 years at USER_HZ 100), so real owners fit.  One that
 * does not (any pid <= 0 or >= 2^22, any start_time >= 2^42: a caller
 * may build any owner) is kept whole in front of the entry, and its
 * packed word is 0: pid bits 0, which no packed owner has, the test
 * lookups make.
 */
#ifndef PROCREG_BACKENDS_PACKED_OWNER_H
#define PROCREG_BACKENDS_PACKED_OWNER_H

#include <procreg/procreg.h>
#include <stdbool.h>
#include <stdint.h>

#define PROCREG_PACKED_PID_BITS 22
#define PROCREG_PACKED_PID_MASK ((UINT64_C(1) << PROCREG_PACKED_PID_BITS) - 1)

/* Whether @owner packs in one word. */
static inline bool procreg_owner_packs(const procreg_owner *owner)
{
    /* pid in 1 .. 2^22 - 1 (0 and negatives wrap to large) */
    return (uint32_t)owner->pid - 1 < PROCREG_PACKED_PID_MASK &&
           owner->start_time >> (64 - PROCREG_PACKED_PID_BITS) == 0;
}

/* @owner's word: 0 when it does not pack (then kept whole elsewhere). */
static inline uint64_t procreg_owner_pack(const procreg_owner *owner)
{
    return procreg_owner_packs(owner)
               ? (uint64_t)owner->pid |
                     owner->start_time << PROCREG_PACKED_PID_BITS
               : 0;
}

/* The owner in @word into @out; false when the word is that of an owner
 * kept whole, which the caller then copies over @out.  Lookups call it:
 * a mask (which also tests for that case), a shift and the two stores. */
static inline bool procreg_owner_unpack(uint64_t word, procreg_owner *out)
{
    out->pid = (pid_t)(word & PROCREG_PACKED_PID_MASK);
    out->start_time = word >> PROCREG_PACKED_PID_BITS;
    return out->pid != 0;
}

#endif
