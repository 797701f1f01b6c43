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
