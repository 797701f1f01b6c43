/*
 * How the etcd backend lays out keys and values.  Private to the backend
 * (hidden symbols); the tests use it to write corrupt values on purpose.
 *
 * Keys, under the registry's prefix P (no trailing '/'):
 *   P/e/<ns>\0<name>   one entry; a namespace is the range
 *                      [P/e/<ns>\0, P/e/<ns>\1), every entry [P/e/, P/e0)
 *   P/e/<ns>\0         the namespace's reason marker (the empty name, which
 *                      no entry has): written in the same transaction as a
 *                      removal (or a forced update) in the namespace, so
 *                      watchers, of the namespace alone too, learn why an
 *                      entry went away and who removed it.  A removal
 *                      without a marker at its revision is a lease
 *                      expiry.
 *   P/e/<ns>\x01<group>\0
 *                      group <group>'s reason marker, as the namespace's
 *                      for its members' removals
 *   P/e/<ns>\x01<group>\0<writer>.<nonce>
 *                      one member of the group (etcd-groups.c), its value
 *                      an entry's; no valid name holds a control
 *                      character, so none of these clash with entries
 * Values: a JSON object
 *   {"v":1,"pid":N,"start":N,"host":"ID","at":µs,"w":"WRITER","meta":"B64"}
 * with "meta" (optional) the normal-form serialisation of the a{sv}
 * metadata, base64.  WRITER is the 16-hex-digit id of the registry
 * instance that wrote the value ("0": written by the backend itself, for
 * a lease re-registration), so an instance skips its own changes in its
 * watch.  Marker values: {"w":"WRITER","r":REASON,"n":NONCE} ("n"
 * optional), NONCE the removal's, so a removal whose answer was lost
 * recognises its own marker.
 *
 * Every text read from the cluster (values, markers, replies, watch
 * lines) must hold exactly one JSON object in strict syntax before
 * json-glib parses it: procreg_etcd_json_parse_object() (etcd-json.h).
 * The reply parsers below depend on nothing but their input, so the fuzz
 * target (tests/reliability/fuzz/fuzz-etcd.c) calls them directly.
 */
#ifndef PROCREG_ETCD_CODEC_H
#define PROCREG_ETCD_CODEC_H

#include "etcd-client.h"

#include <procreg/procreg.h>

#define ETCD_HOST_ID_MAX 64
#define ETCD_WRITER_LEN 16
#define ETCD_VALUE_VERSION 1

typedef struct {
    procreg_owner owner;
    char host[ETCD_HOST_ID_MAX + 1];
    int64_t registered_at;
    char writer[ETCD_WRITER_LEN + 1];
    /* Unique per registration of one writer ("n"; 0: none): a writer
     * whose answer was lost recognises its own put by it, even when two
     * of its threads register one key in the same microsecond. */
    uint64_t nonce;
    GVariant *metadata; /* a{sv} or NULL; owned */
} etcd_value;

/* The JSON text of @v. */
ETCD_HIDDEN char *procreg_etcd_value_encode(const etcd_value *v, size_t *len);
/* Parse and check @len bytes.  On failure returns false and sets *@why to
 * a static description; @out is left cleared. */
ETCD_HIDDEN bool procreg_etcd_value_decode(const void *data, size_t len,
                                           etcd_value *out, const char **why);
ETCD_HIDDEN void procreg_etcd_value_clear(etcd_value *v);

/* A host id: 1 to 64 of [A-Za-z0-9._-]. */
ETCD_HIDDEN bool procreg_etcd_host_id_valid(const char *id);

/* ---- reason markers ---- */

/* Longest marker value procreg_etcd_marker_encode() writes, with its NUL. */
#define ETCD_MARKER_MAX 64

/* The marker value {"w":"WRITER","r":REASON,"n":NONCE} into @out; its
 * length.  @writer: a writer id (hex digits, "0" for the backend
 * itself), cut to ETCD_WRITER_LEN; written as it is, not escaped.
 * @nonce 0: no "n". */
ETCD_HIDDEN size_t procreg_etcd_marker_encode(const char *writer, int reason,
                                              uint64_t nonce,
                                              char out[ETCD_MARKER_MAX]);
/* Parse a marker value: "w" a string (copied to @writer, cut to
 * ETCD_WRITER_LEN), "r" a number from 0 to 64, "n" (optional) an
 * unsigned number (*@nonce, 0 when absent).  false (and the outputs
 * untouched) when it is anything else. */
ETCD_HIDDEN bool procreg_etcd_marker_parse(const void *value, size_t len,
                                           char writer[ETCD_WRITER_LEN + 1],
                                           int *reason, uint64_t *nonce);

/* ---- etcd's replies ---- */

/* One key-value as etcd sends it, its base64 fields decoded (key and
 * value g_malloc'd, NUL-terminated past their length). */
typedef struct {
    guchar *key;
    gsize key_len;
    guchar *value;
    gsize value_len;
    int64_t mod_rev, create_rev, lease;
} etcd_kv;

/* Parse a kv object (NULL: false).  On false @kv is left cleared. */
ETCD_HIDDEN bool procreg_etcd_kv_parse(JsonObject *o, etcd_kv *kv);
ETCD_HIDDEN void procreg_etcd_kv_clear(etcd_kv *kv);
/* A reply's header.revision (0 when absent or unreadable). */
ETCD_HIDDEN int64_t procreg_etcd_header_revision(JsonObject *reply);

typedef enum {
    ETCD_EVENT_PUT,
    ETCD_EVENT_DELETE,
    ETCD_EVENT_BAD,        /* an object without a readable "kv" */
    ETCD_EVENT_NOT_OBJECT, /* an element that is not an object */
} etcd_event_type;

/* One element of a watch response's "events". */
typedef struct {
    etcd_event_type type;
    etcd_kv kv;      /* PUT, DELETE */
    bool have_prev;  /* prev_kv present and readable */
    etcd_kv prev;    /* when have_prev */
} etcd_watch_event;

/* One line of a watch stream. */
typedef struct {
    bool error;            /* no "result": etcd ended the stream */
    bool created;          /* result.created */
    bool canceled;         /* result.canceled */
    int64_t compact_revision; /* when canceled: > 0 for a compaction */
    char *message;         /* error.message or result.cancel_reason; NULL
                            * when etcd gave none */
    int64_t header_revision; /* result.header.revision */
    GArray *events;        /* etcd_watch_event, every element in order */
} etcd_watch_batch;

/* Parse one line of a watch stream.  false with *@why (static) when it is
 * not one JSON object; @out is then cleared.  An error or a cancellation
 * is a successful parse (out->error, out->canceled).  Clear @out with
 * procreg_etcd_watch_batch_clear() either way. */
ETCD_HIDDEN bool procreg_etcd_watch_line_parse(const char *line, size_t len,
                                               etcd_watch_batch *out,
                                               const char **why);
ETCD_HIDDEN void procreg_etcd_watch_batch_clear(etcd_watch_batch *b);

#endif
