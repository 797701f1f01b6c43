/*
 * JSON as the etcd backend reads it from the cluster: a strict check that
 * a text is exactly one JSON object before json-glib parses it, error
 * replies, and the members etcd's replies are made of.  Private to the
 * backend (hidden symbols); the codec tests and the fuzz target call
 * these directly.
 */
#ifndef PROCREG_ETCD_JSON_H
#define PROCREG_ETCD_JSON_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>

#define ETCD_HIDDEN __attribute__((visibility("hidden")))

/* Deepest nesting of objects and arrays accepted in text from the cluster
 * (etcd's replies nest about 5 deep; json-glib recurses once per level and
 * overflows the stack on a few hundred thousand). */
#define ETCD_JSON_MAX_DEPTH 64

/* Whether @len bytes hold exactly one JSON object, with only JSON
 * whitespace around it: strict RFC 8259 syntax (no comments, single
 * quotes, hex or octal numbers, control characters in strings; those
 * json-glib 1.6 accepts), nested at most ETCD_JSON_MAX_DEPTH deep.  On
 * false *@why says what is wrong (a static string).  UTF-8 validity is
 * left to json-glib.
 * Every text from the cluster passes this before json-glib sees it:
 * json-glib 1.6.6 accepts '{"a":1}{"b":2}', keeps one value and leaks the
 * other, and overflows its stack on deep nesting. */
ETCD_HIDDEN bool procreg_etcd_json_one_object(const void *text, size_t len,
                                              const char **why);
/* Check @len bytes with procreg_etcd_json_one_object() and parse them.
 * @return the root, an object (json_node_unref() it), or NULL with *@why
 *   (static) and, where json-glib refused the text, its reason in @error
 *   (may be NULL). */
ETCD_HIDDEN JsonNode *procreg_etcd_json_parse_object(const void *text,
                                                     size_t len,
                                                     const char **why,
                                                     GError **error);
/* What an error reply says: {"error","message","code"} (unary calls) or
 * {"error":{"grpc_code","message",...}} (streams).  *@grpc_code: -1 when
 * absent; *@message (g_free it): etcd's message, else the start of the
 * text. */
ETCD_HIDDEN void procreg_etcd_error_reply_parse(const char *text, size_t len,
                                                int *grpc_code,
                                                char **message);

/* An int64 member: etcd writes them as strings and omits zeros.
 * false when present but not an integer. */
ETCD_HIDDEN bool procreg_etcd_json_int(JsonObject *o, const char *member,
                                       int64_t *out);
/* A base64 member, decoded (absent: empty).  g_free *out. */
ETCD_HIDDEN bool procreg_etcd_json_b64(JsonObject *o, const char *member,
                                       guchar **out, gsize *len);
/* A boolean member (absent: false). */
ETCD_HIDDEN bool procreg_etcd_json_bool(JsonObject *o, const char *member);
/* An object member or NULL. */
ETCD_HIDDEN JsonObject *procreg_etcd_json_obj(JsonObject *o,
                                              const char *member);
/* An array member or NULL. */
ETCD_HIDDEN JsonArray *procreg_etcd_json_array(JsonObject *o,
                                               const char *member);
/* Append the base64 of @len bytes to @s as a JSON string (with quotes). */
ETCD_HIDDEN void procreg_etcd_append_b64(GString *s, const void *data,
                                         size_t len);

#endif
