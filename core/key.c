/* Keys: validation, hashing, prepared keys. */
#include "internal.h"

#include <string.h>

/* A 64-bit hash over short strings: 8 bytes per step with a
 * multiply-xorshift mix (in the manner of wyhash/murmur finalisers).  The
 * seed is random per process so hostile names cannot aim at collisions. */
static uint64_t hash_seed; /* read and written with __atomic builtins */

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    return x;
}

static uint64_t seed_get(void)
{
    static gsize once = 0;
    /* g_once orders these, but inside uninstrumented glib: the relaxed
     * atomics let ThreadSanitizer see that the seed is not torn. */
    if (g_once_init_enter(&once)) {
        __atomic_store_n(&hash_seed,
                         ((uint64_t)g_random_int() << 32) | g_random_int(),
                         __ATOMIC_RELAXED);
        g_once_init_leave(&once, 1);
    }
    return __atomic_load_n(&hash_seed, __ATOMIC_RELAXED);
}

PROCREG_API uint64_t procreg_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = seed_get() ^ (len * 0x9e3779b97f4a7c15ull);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = mix64(h ^ w);
        p += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, p, len);
    return mix64(h ^ tail ^ 0x5bd1e9955bd1e995ull);
}

PROCREG_API int procreg_validate_name(const char *s, const char *what,
                                      GError **error)
{
    if (s == NULL)
        return procreg_set_error(error, PROCREG_EINVAL, "%s is NULL", what);
    size_t len = strlen(s);
    if (len == 0)
        return procreg_set_error(error, PROCREG_EINVAL, "%s is empty", what);
    if (len > PROCREG_NAME_MAX)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "%s is %zu bytes long; the limit is %d",
                                 what, len, PROCREG_NAME_MAX);
    const char *end;
    if (!g_utf8_validate(s, (gssize)len, &end))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "%s is not valid UTF-8 (at byte %zu)", what,
                                 (size_t)(end - s));
    for (const char *q = s; *q; q = g_utf8_next_char(q)) {
        gunichar c = g_utf8_get_char(q);
        if (g_unichar_iscntrl(c))
            return procreg_set_error(error, PROCREG_EINVAL,
                                     "%s contains control character U+%04X "
                                     "at byte %zu",
                                     what, (unsigned)c, (size_t)(q - s));
    }
    return 0;
}

/* ASCII fast path: most names are plain ASCII; fall back to the full
 * check (which also writes the message) on anything else. */
static int name_check(const char *s, size_t *len_out, const char *what,
                      GError **error)
{
    if (s != NULL) {
        size_t i = 0;
        for (; i <= PROCREG_NAME_MAX; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == 0)
                break;
            if (c < 0x20 || c >= 0x7f)
                goto slow;
        }
        if (i > 0 && i <= PROCREG_NAME_MAX) {
            *len_out = i;
            return 0;
        }
    }
slow:;
    int rc = procreg_validate_name(s, what, error);
    if (rc == 0)
        *len_out = strlen(s);
    return rc;
}

static void key_fill(procreg_key *key, const char *ns, size_t ns_len,
                     const char *name, size_t name_len)
{
    key->refcount = 0;
    key->ns_len = (uint16_t)ns_len;
    key->name_len = (uint16_t)name_len;
    memcpy(key->bytes, ns, ns_len + 1);
    memcpy(key->bytes + ns_len + 1, name, name_len + 1);
    key->hash = procreg_hash(key->bytes, ns_len + 1 + name_len);
}

PROCREG_INTERNAL int procreg_key_init_stack(procreg_stack_key *buf,
                                            const char *ns, const char *name,
                                            GError **error)
{
    size_t ns_len, name_len;
    if (ns == NULL)
        ns = PROCREG_NS_PRODUCTION;
    int rc = name_check(ns, &ns_len, "namespace", error);
    if (rc == 0)
        rc = name_check(name, &name_len, "name", error);
    if (rc == 0)
        key_fill(&buf->key, ns, ns_len, name, name_len);
    return rc;
}

PROCREG_API int procreg_key_new(const char *ns, const char *name,
                                procreg_key **out, GError **error)
{
    procreg_stack_key tmp;
    int rc = procreg_key_init_stack(&tmp, ns, name, error);
    if (rc != 0)
        return rc;
    size_t size = sizeof(procreg_key) + procreg_key_size(&tmp.key) + 1;
    procreg_key *key = g_try_malloc(size);
    if (key == NULL)
        return procreg_set_error(error, PROCREG_ENOMEM, "out of memory");
    memcpy(key, &tmp, size);
    key->refcount = 1;
    *out = key;
    return 0;
}

PROCREG_API procreg_key *procreg_key_ref(procreg_key *key)
{
    g_return_val_if_fail(key != NULL && key->refcount > 0, key);
    g_atomic_int_inc(&key->refcount);
    return key;
}

PROCREG_API void procreg_key_unref(procreg_key *key)
{
    if (key == NULL)
        return;
    g_return_if_fail(key->refcount > 0);
    if (g_atomic_int_dec_and_test(&key->refcount))
        g_free(key);
}

PROCREG_API const char *procreg_key_namespace(const procreg_key *key)
{
    return key->bytes;
}

PROCREG_API const char *procreg_key_name(const procreg_key *key)
{
    return key->bytes + key->ns_len + 1;
}
