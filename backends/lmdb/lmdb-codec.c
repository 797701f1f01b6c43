/* Checked decoders and encoders of the lmdb backend's records. */
#include "lmdb-codec.h"

#include <limits.h>
#include <string.h>

G_STATIC_ASSERT(sizeof(procreg_lmdb_entry_header) == 40);
G_STATIC_ASSERT(sizeof(procreg_lmdb_event_header) == 56);

/* Version 1: the fixed header (formats 1 and 2). */
static const char *entry_decode_v1(const void *v, size_t n,
                                   procreg_lmdb_raw_entry *out)
{
    procreg_lmdb_entry_header h;
    if (n < sizeof h)
        return "value shorter than its header";
    memcpy(&h, v, sizeof h);
    if (h.flags & ~PROCREG_LMDB_HAS_META)
        return "unknown entry flags";
    if (h.meta_len != n - sizeof h)
        return "metadata length does not match the value";
    if (!(h.flags & PROCREG_LMDB_HAS_META) && h.meta_len != 0)
        return "metadata without its flag";
    if (h.pid == 0 || h.pid > INT_MAX)
        return "owner pid out of range";
    out->owner.pid = (pid_t)h.pid;
    out->owner.start_time = h.start_time;
    out->registered_at = h.registered_at;
    out->revision = h.revision;
    out->has_meta = (h.flags & PROCREG_LMDB_HAS_META) != 0;
    out->meta = (const char *)v + sizeof h;
    out->meta_len = h.meta_len;
    return NULL;
}

/* The bytes an integer of version 2 takes: the fewest that hold it. */
static unsigned int uint_size(uint64_t x)
{
    return x == 0 ? 0 : (unsigned int)(71 - __builtin_clzll(x)) / 8;
}

static uint8_t *uint_put(uint8_t *p, uint64_t x)
{
    for (unsigned int n = uint_size(x); n > 0; n--, x >>= 8)
        *p++ = (uint8_t)x;
    return p;
}

static uint64_t zigzag(int64_t x)
{
    return ((uint64_t)x << 1) ^ (uint64_t)(x >> 63);
}

LMDB_HIDDEN const char *procreg_lmdb_entry_decode(const void *v, size_t n,
                                                  procreg_lmdb_raw_entry *out)
{
    uint16_t v1;
    if (n >= sizeof v1 && (memcpy(&v1, v, sizeof v1),
                           v1 == PROCREG_LMDB_ENTRY_VERSION_1))
        return entry_decode_v1(v, n, out);
    if (n < 4) /* before any arithmetic on @v, which may be NULL then */
        return "value shorter than its header";
    return procreg_lmdb_entry_decode_v2(v, n, out, true);
}

LMDB_HIDDEN size_t procreg_lmdb_entry_size(const procreg_lmdb_raw_entry *e)
{
    return 4 + uint_size((uint64_t)e->owner.pid) +
           uint_size(e->owner.start_time) +
           uint_size(zigzag(e->registered_at)) + uint_size(e->revision) +
           e->meta_len;
}

LMDB_HIDDEN void procreg_lmdb_entry_encode(const procreg_lmdb_raw_entry *e,
                                           void *out)
{
    uint64_t registered_at = zigzag(e->registered_at);
    uint8_t *p = out;
    *p++ = PROCREG_LMDB_ENTRY_VERSION;
    *p++ = e->has_meta ? PROCREG_LMDB_HAS_META : 0;
    *p++ = (uint8_t)(uint_size((uint64_t)e->owner.pid) |
                     uint_size(e->owner.start_time) << 4);
    *p++ = (uint8_t)(uint_size(registered_at) | uint_size(e->revision) << 4);
    p = uint_put(p, (uint64_t)e->owner.pid);
    p = uint_put(p, e->owner.start_time);
    p = uint_put(p, registered_at);
    p = uint_put(p, e->revision);
    if (e->meta_len)
        memcpy(p, e->meta, e->meta_len);
}

LMDB_HIDDEN size_t procreg_lmdb_entry_owner_bytes(
    const procreg_owner *o, uint8_t out[PROCREG_LMDB_OWNER_BYTES_MAX])
{
    uint8_t *p = out;
    *p++ = (uint8_t)(uint_size((uint64_t)o->pid) |
                     uint_size(o->start_time) << 4);
    p = uint_put(p, (uint64_t)o->pid);
    p = uint_put(p, o->start_time);
    return (size_t)(p - out);
}

LMDB_HIDDEN int procreg_lmdb_entry_owned_by(const void *v, size_t n,
                                            const uint8_t *owner,
                                            size_t owner_len)
{
    const uint8_t *p = v;
    if (n < 4 || p[0] != PROCREG_LMDB_ENTRY_VERSION)
        return -1;
    return n >= 4 + owner_len - 1 && p[2] == owner[0] &&
           memcmp(p + 4, owner + 1, owner_len - 1) == 0;
}

LMDB_HIDDEN GVariant *procreg_lmdb_meta_decode(bool has_meta, const void *d,
                                               size_t n, const char **why)
{
    *why = NULL;
    if (!has_meta)
        return NULL;
    GBytes *bytes = g_bytes_new(d, n);
    GVariant *v = g_variant_ref_sink(
        g_variant_new_from_bytes(G_VARIANT_TYPE_VARDICT, bytes, FALSE));
    g_bytes_unref(bytes);
    if (!g_variant_is_normal_form(v)) {
        g_variant_unref(v);
        *why = "metadata is not a valid a{sv}";
        return NULL;
    }
    return v;
}

LMDB_HIDDEN bool procreg_lmdb_key_split(const void *k, size_t n,
                                        size_t *ns_len)
{
    const char *p = k;
    const char *z = n ? memchr(p, '\0', n) : NULL;
    if (z == NULL)
        return false;
    size_t a = (size_t)(z - p), b = n - a - 1;
    if (a == 0 || b == 0 || a > PROCREG_NAME_MAX || b > PROCREG_NAME_MAX ||
        memchr(z + 1, '\0', b) != NULL)
        return false;
    *ns_len = a;
    return true;
}

LMDB_HIDDEN bool procreg_lmdb_key_strings(const void *k, size_t n, char **ns,
                                          char **name)
{
    size_t a;
    if (!procreg_lmdb_key_split(k, n, &a))
        return false;
    char *x = g_strndup(k, a);
    char *y = g_strndup((const char *)k + a + 1, n - a - 1);
    if (procreg_validate_name(x, "namespace", NULL) != 0 ||
        procreg_validate_name(y, "name", NULL) != 0) {
        g_free(x);
        g_free(y);
        return false;
    }
    *ns = x;
    *name = y;
    return true;
}

LMDB_HIDDEN char *procreg_lmdb_key_printable(const void *k, size_t n)
{
    GString *s = g_string_new(NULL);
    const unsigned char *p = k;
    for (size_t i = 0; i < n && i < 600; i++) {
        if (p[i] == 0)
            g_string_append(s, "/");
        else if (p[i] < 0x20 || p[i] >= 0x7f || p[i] == '\\')
            g_string_append_printf(s, "\\x%02x", p[i]);
        else
            g_string_append_c(s, (char)p[i]);
    }
    return g_string_free(s, FALSE);
}

LMDB_HIDDEN void procreg_lmdb_owner_key(const procreg_owner *o,
                                        uint8_t out[PROCREG_LMDB_OWNER_KEY_SIZE])
{
    uint32_t p = GUINT32_TO_BE((uint32_t)o->pid);
    uint64_t s = GUINT64_TO_BE(o->start_time);
    memcpy(out, &p, 4);
    memcpy(out + 4, &s, 8);
}

LMDB_HIDDEN bool procreg_lmdb_owner_from_key(const void *k, size_t n,
                                             procreg_owner *o)
{
    if (n != PROCREG_LMDB_OWNER_KEY_SIZE)
        return false;
    uint32_t p;
    uint64_t s;
    memcpy(&p, k, 4);
    memcpy(&s, (const char *)k + 4, 8);
    p = GUINT32_FROM_BE(p);
    if (p == 0 || p > INT_MAX)
        return false;
    o->pid = (pid_t)p;
    o->start_time = GUINT64_FROM_BE(s);
    return true;
}

LMDB_HIDDEN void procreg_lmdb_change_clear(procreg_lmdb_change *c)
{
    g_free(c->ns);
    g_free(c->name);
    if (c->meta != NULL)
        g_variant_unref(c->meta);
    memset(c, 0, sizeof *c);
}

LMDB_HIDDEN bool procreg_lmdb_change_decode(const void *v, size_t n,
                                            procreg_lmdb_change *out)
{
    memset(out, 0, sizeof *out);
    if (n < sizeof out->h)
        return false;
    memcpy(&out->h, v, sizeof out->h);
    const procreg_lmdb_event_header *h = &out->h;
    if (h->version != PROCREG_LMDB_EVENT_VERSION ||
        (uint64_t)sizeof *h + h->key_len + h->meta_len != n ||
        (h->flags & ~PROCREG_LMDB_HAS_META) ||
        (!(h->flags & PROCREG_LMDB_HAS_META) && h->meta_len != 0) ||
        h->kind < PROCREG_EVENT_REGISTERED || h->kind > PROCREG_EVENT_LEFT ||
        h->reason > PROCREG_REASON_FORCED || h->pid == 0 || h->pid > INT_MAX)
        return false;
    const char *key = (const char *)v + sizeof *h;
    if (!procreg_lmdb_key_strings(key, h->key_len, &out->ns, &out->name))
        return false;
    const char *why;
    out->meta = procreg_lmdb_meta_decode((h->flags & PROCREG_LMDB_HAS_META) != 0,
                                         key + h->key_len, h->meta_len, &why);
    if (why != NULL) {
        procreg_lmdb_change_clear(out);
        return false;
    }
    return true;
}

LMDB_HIDDEN size_t procreg_lmdb_event_size(size_t key_len,
                                           const procreg_lmdb_raw_entry *e)
{
    return sizeof(procreg_lmdb_event_header) + key_len + e->meta_len;
}

LMDB_HIDDEN void procreg_lmdb_event_encode(procreg_event_kind kind,
                                           procreg_event_reason reason,
                                           uint32_t origin_pid,
                                           uint32_t origin_instance,
                                           const void *key, size_t key_len,
                                           const procreg_lmdb_raw_entry *e,
                                           void *out)
{
    procreg_lmdb_event_header h = {
        .version = PROCREG_LMDB_EVENT_VERSION,
        .kind = (uint8_t)kind,
        .reason = (uint8_t)reason,
        .key_len = (uint16_t)key_len,
        .flags = e->has_meta ? PROCREG_LMDB_HAS_META : 0,
        .origin_pid = origin_pid,
        .origin_instance = origin_instance,
        .meta_len = (uint32_t)e->meta_len,
        .pid = (uint64_t)e->owner.pid,
        .start_time = e->owner.start_time,
        .registered_at = e->registered_at,
        .revision = e->revision,
    };
    memcpy(out, &h, sizeof h);
    memcpy((char *)out + sizeof h, key, key_len);
    if (e->meta_len)
        memcpy((char *)out + sizeof h + key_len, e->meta, e->meta_len);
}
