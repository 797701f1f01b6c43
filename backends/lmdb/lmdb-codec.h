/*
 * The records of the lmdb backend's file, and their checked decoders and
 * encoders.  Used by the backend's rooms and by the fuzz targets (hidden
 * symbols of the library, reachable from its static archive).  Values are
 * host-local: native byte order (but for the little-endian integers of an
 * entry of version 2), read with memcpy so alignment does not matter.
 */
#ifndef PROCREG_LMDB_CODEC_H
#define PROCREG_LMDB_CODEC_H

#include <procreg/procreg.h>

#include <limits.h>
#include <string.h>

#define LMDB_HIDDEN __attribute__((visibility("hidden")))

#define PROCREG_LMDB_FORMAT "procreg-lmdb 5"
/* Format 5 is format 4 without the per-entry "owners" index: one row per
 * (owner, namespace) in the main database instead (format.c); an opener
 * that may write migrates formats 1 to 4 to it, a read-only one reads
 * them in place.
 * Format 4 is format 3 with the entries, the meta records and the change
 * log in LMDB's main database (format.c); an opener that may write
 * migrates an older file to it, a read-only one reads it in place.
 * Format 3 writes entries (and members) in the compact form, version 2;
 * formats 1 and 2 hold version 1, which format 3 still reads, so an
 * opener that may write marks an older file format 3 (open.c).  Format 1
 * is format 2 before groups: the same without their databases, which an
 * opener that may write adds (groups.c). */
#define PROCREG_LMDB_FORMAT_4 "procreg-lmdb 4"
#define PROCREG_LMDB_FORMAT_3 "procreg-lmdb 3"
#define PROCREG_LMDB_FORMAT_2 "procreg-lmdb 2"
#define PROCREG_LMDB_FORMAT_1 "procreg-lmdb 1"
#define PROCREG_LMDB_ENTRY_VERSION 2
#define PROCREG_LMDB_ENTRY_VERSION_1 1
#define PROCREG_LMDB_EVENT_VERSION 1
#define PROCREG_LMDB_HAS_META 1u
#define PROCREG_LMDB_OWNER_KEY_SIZE 12

/* "entries": key "ns\0name", value version 2 (written now):
 *   u8 version (2), u8 flags (PROCREG_LMDB_HAS_META),
 *   u8 sizes of pid | start_time << 4,
 *   u8 sizes of zigzag(registered_at) | revision << 4,
 *   the four integers, each little-endian in its size: the fewest bytes
 *   that hold it (0 for 0, at most 8),
 *   then the serialised a{sv} (the rest of the value; nothing without
 *   the flag).
 * Version 1 (formats 1 and 2; read, never written) is this header +
 * serialised a{sv}. */
typedef struct {
    uint16_t version;
    uint16_t flags; /* PROCREG_LMDB_HAS_META */
    uint32_t meta_len;
    uint64_t pid;
    uint64_t start_time;
    int64_t registered_at;
    uint64_t revision;
} procreg_lmdb_entry_header;

/* "events": key the change number (BE64), value this header + key +
 * metadata.  A group change (JOINED, LEFT) has the group's key and the
 * member in the entry fields (revision: the member id). */
typedef struct {
    uint16_t version;
    uint8_t kind;
    uint8_t reason;
    uint16_t key_len;
    uint16_t flags;
    uint32_t origin_pid;      /* the process that made the change */
    uint32_t origin_instance; /* its handle; 0: no handle (reaping) */
    uint32_t meta_len;
    uint32_t reserved;
    uint64_t pid;
    uint64_t start_time;
    int64_t registered_at;
    uint64_t revision;
} procreg_lmdb_event_header;

/* An entry as stored; meta points into the value it was decoded from.
 * Encoded, it is always version 2. */
typedef struct {
    procreg_owner owner;
    int64_t registered_at;
    uint64_t revision;
    bool has_meta;
    const void *meta;
    size_t meta_len;
} procreg_lmdb_raw_entry;

/* A decoded change-log record; owns its strings and metadata. */
typedef struct {
    procreg_lmdb_event_header h;
    char *ns, *name;
    GVariant *meta;
} procreg_lmdb_change;

/* Check an entries value and point @out into it.  NULL, or why it is bad. */
LMDB_HIDDEN const char *procreg_lmdb_entry_decode(const void *v, size_t n,
                                                  procreg_lmdb_raw_entry *out);
/* Inline, for the lookup path (ops.c): a call and its saved registers
 * were a sixth of the decode's cost.
 *
 * The integer of @s (1 to 8) bytes, little-endian, at offset @o of the
 * @n bytes at @b (o + s <= n): one load of the 8 bytes from @o when the
 * value holds them, else of the 8 that end at o + s when it holds those,
 * else byte by byte (a value shorter than 8); never a byte outside it. */
static inline uint64_t procreg_lmdb_uint_at(const uint8_t *b, size_t n,
                                            size_t o, unsigned int s)
{
    uint64_t x = 0;
    if (s == 0)
        return 0;
    if (n - o >= 8) {
        memcpy(&x, b + o, 8);
        return GUINT64_FROM_LE(x) & (~(uint64_t)0 >> (64 - 8 * s));
    }
    if (o + s >= 8) {
        memcpy(&x, b + o + s - 8, 8);
        return GUINT64_FROM_LE(x) >> (64 - 8 * s);
    }
    for (unsigned int i = 0; i < s; i++)
        x |= (uint64_t)b[o + i] << (8 * i);
    return x;
}

static inline int64_t procreg_lmdb_unzigzag(uint64_t x)
{
    return (int64_t)(x >> 1) ^ -(int64_t)(x & 1);
}

/* Every check of a value of version 2 (@n >= 4), before anything is
 * read from its integers; then the owner, and with @all the rest, into
 * @out.  Each check costs a few instructions on the lookup path, none a
 * loop: the sizes all at once, the bounds once, each integer's top byte
 * once. */
static inline __attribute__((always_inline)) const char *
procreg_lmdb_entry_decode_v2(const uint8_t *p, size_t n,
                             procreg_lmdb_raw_entry *out, bool all)
{
    if (p[0] != PROCREG_LMDB_ENTRY_VERSION)
        return "unknown entry version";
    if (p[1] & ~PROCREG_LMDB_HAS_META)
        return "unknown entry flags";
    bool has_meta = (p[1] & PROCREG_LMDB_HAS_META) != 0;
    unsigned int sizes = p[2] | (unsigned int)p[3] << 8;
    /* Each size at most 8: no nibble with bit 3 and another bit set
     * (low 3 bits + 7 sets bit 3 exactly when they are not 0, and never
     * carries out of the nibble). */
    if (sizes & 0x8888u & ((sizes & 0x7777u) + 0x7777u))
        return "malformed entry header";
    unsigned int s0 = sizes & 15, s1 = (sizes >> 4) & 15,
                 s2 = (sizes >> 8) & 15, s3 = sizes >> 12;
    size_t o1 = 4 + s0, o2 = o1 + s1, o3 = o2 + s2, o4 = o3 + s3;
    /* Cut short, or an integer not in its fewest bytes (its top byte 0),
     * so that a record re-encodes to itself. */
    if (o4 > n || (s0 != 0 && p[o1 - 1] == 0) ||
        (s1 != 0 && p[o2 - 1] == 0) || (s2 != 0 && p[o3 - 1] == 0) ||
        (s3 != 0 && p[o4 - 1] == 0))
        return "malformed entry header";
    uint64_t pid = procreg_lmdb_uint_at(p, n, 4, s0);
    if (pid == 0 || pid > INT_MAX)
        return "owner pid out of range";
    if (!has_meta && o4 != n)
        return "metadata without its flag";
    out->owner.pid = (pid_t)pid;
    out->owner.start_time = procreg_lmdb_uint_at(p, n, o1, s1);
    out->has_meta = has_meta;
    if (all) {
        out->registered_at =
            procreg_lmdb_unzigzag(procreg_lmdb_uint_at(p, n, o2, s2));
        out->revision = procreg_lmdb_uint_at(p, n, o3, s3);
        out->meta = p + o4;
        out->meta_len = n - o4;
    }
    return NULL;
}

/* The same checks, every one (a value it accepts is one
 * procreg_lmdb_entry_decode() accepts, and the same reason when not), but
 * only the owner (and has_meta) filled in: what a lookup returns.  The
 * other fields of @out are left as they were for a value of version 2. */
static inline __attribute__((always_inline)) const char *
procreg_lmdb_entry_decode_owner(const void *v, size_t n,
                                procreg_lmdb_raw_entry *out)
{
    uint16_t v1;
    if (n < 4 || (memcpy(&v1, v, sizeof v1),
                  v1 == PROCREG_LMDB_ENTRY_VERSION_1))
        return procreg_lmdb_entry_decode(v, n, out); /* its messages */
    return procreg_lmdb_entry_decode_v2(v, n, out, false);
}

/* The bytes procreg_lmdb_entry_encode() writes for @e. */
LMDB_HIDDEN size_t procreg_lmdb_entry_size(const procreg_lmdb_raw_entry *e);
LMDB_HIDDEN void procreg_lmdb_entry_encode(const procreg_lmdb_raw_entry *e,
                                           void *out);

/* How an entry of version 2 names its owner: the byte of the owner
 * integers' sizes, then the pid and the start time as encoded.  An entry
 * owned by @o holds out[0] at offset 2 and the rest from offset 4. */
#define PROCREG_LMDB_OWNER_BYTES_MAX 17
LMDB_HIDDEN size_t procreg_lmdb_entry_owner_bytes(
    const procreg_owner *o, uint8_t out[PROCREG_LMDB_OWNER_BYTES_MAX]);
/* Whether the entry value @v names the owner of @owner (from
 * procreg_lmdb_entry_owner_bytes()): 1 or 0 for a value of version 2,
 * without checking the rest of it (a cheap filter: decode what it
 * keeps); -1 for another version (decode it to know). */
LMDB_HIDDEN int procreg_lmdb_entry_owned_by(const void *v, size_t n,
                                            const uint8_t *owner,
                                            size_t owner_len);

/* Metadata bytes as a new reference (NULL for none), or NULL with *why
 * when they are not a normal-form a{sv}. */
LMDB_HIDDEN GVariant *procreg_lmdb_meta_decode(bool has_meta, const void *d,
                                               size_t n, const char **why);

/* "ns\0name" with both parts 1..255 bytes and no other NUL; *ns_len. */
LMDB_HIDDEN bool procreg_lmdb_key_split(const void *k, size_t n,
                                        size_t *ns_len);
/* Copies of both parts, which must also follow the name rules. */
LMDB_HIDDEN bool procreg_lmdb_key_strings(const void *k, size_t n, char **ns,
                                          char **name);
/* A printable form of any key, for messages (g_free it). */
LMDB_HIDDEN char *procreg_lmdb_key_printable(const void *k, size_t n);

/* Owner keys (the owner rows of format 5, "owners" of formats 1 to 4,
 * "member_owners"): pid (BE32) + start time (BE64). */
LMDB_HIDDEN void procreg_lmdb_owner_key(const procreg_owner *o,
                                        uint8_t out[PROCREG_LMDB_OWNER_KEY_SIZE]);
LMDB_HIDDEN bool procreg_lmdb_owner_from_key(const void *k, size_t n,
                                             procreg_owner *o);

/* A change-log record; false when it is damaged. */
LMDB_HIDDEN bool procreg_lmdb_change_decode(const void *v, size_t n,
                                            procreg_lmdb_change *out);
LMDB_HIDDEN void procreg_lmdb_change_clear(procreg_lmdb_change *c);
/* The bytes of a record for (@kind, @reason) on @key of @e. */
LMDB_HIDDEN size_t procreg_lmdb_event_size(size_t key_len,
                                           const procreg_lmdb_raw_entry *e);
LMDB_HIDDEN void procreg_lmdb_event_encode(procreg_event_kind kind,
                                           procreg_event_reason reason,
                                           uint32_t origin_pid,
                                           uint32_t origin_instance,
                                           const void *key, size_t key_len,
                                           const procreg_lmdb_raw_entry *e,
                                           void *out);

#endif
