/*
 * How the etcd backend lays out keys and values.  Private to the backend
 * (hidden symbols); the tests use it to write corrupt values on purpose.
 *
 * Keys, under the registry's prefix P (no trailing '/'):
 *   P/e/<ns>\0<name>   one entry; a namespace is the range
 *                      [P/e/<ns>\0, P/e/<ns>\1), every entry [P/e/, P/e0)
 *   P/why              the reason marker: written in the same transaction
 *                      as a removal, so watchers learn why an entry went
 *                      away and who removed it.  A removal without a
 *                      marker at its revision is a lease expiry.
 * Values: a JSON object
 *   {"v":1,"pid":N,"start":N,"host":"ID","at":µs,"w":"WRITER","meta":"B64"}
 * with "meta" (optional) the normal-form serialisation of the a{sv}
 * metadata, base64.  WRITER is the 16-hex-digit id of the registry
 * instance that wrote the value ("0": written by the backend itself, for
 * a lease re-registration), so an instance skips its own changes in its
 * watch.  Marker values: {"w":"WRITER","r":REASON}.
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

#endif
