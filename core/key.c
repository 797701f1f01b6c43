/* Keys: validation, hashing, prepared keys. */
#include "internal.h"

#include <string.h>

/* A 64-bit hash over short strings, seeded at random per process so that
 * hostile names cannot aim at collisions.  Each step multiplies two 64-bit
 * words into 128 bits and folds the halves together (the construction of
 * wyhash): 16 bytes per multiply, and a key of up to 16 bytes costs two
 * multiplies in all. */
static uint64_t hash_seed; /* read and written with __atomic builtins */

#define HASH_K0 0x9e3779b97f4a7c15ull
#define HASH_K1 0xa0761d6478bd642full
#define HASH_K2 0xe7037ed1a0b428dbull
#define HASH_K3 0x8ebc6af09c88c6e3ull

#ifdef __SIZEOF_INT128__
__extension__ typedef unsigned __int128 hash_u128;

static inline uint64_t fold_mul(uint64_t a, uint64_t b)
{
    hash_u128 r = (hash_u128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}
#else
static inline uint64_t fold_mul(uint64_t a, uint64_t b)
{
    uint64_t lo_lo = (a & 0xffffffffu) * (b & 0xffffffffu);
    uint64_t hi_lo = (a >> 32) * (b & 0xffffffffu);
    uint64_t lo_hi = (a & 0xffffffffu) * (b >> 32);
    uint64_t hi_hi = (a >> 32) * (b >> 32);
    uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xffffffffu) + lo_hi;
    uint64_t upper = hi_hi + (hi_lo >> 32) + (cross >> 32);
    return ((cross << 32) | (lo_lo & 0xffffffffu)) ^ upper;
}
#endif

static inline uint64_t read64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t read32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Zero until seeded, never zero after: the hot path is one load. */
static __attribute__((noinline)) uint64_t seed_make(void)
{
    static gsize once = 0;
    /* g_once orders these, but inside uninstrumented glib: the relaxed
     * atomics let ThreadSanitizer see that the seed is not torn. */
    if (g_once_init_enter(&once)) {
        uint64_t seed;
        do
            seed = ((uint64_t)g_random_int() << 32) | g_random_int();
        while (seed == 0);
        __atomic_store_n(&hash_seed, seed, __ATOMIC_RELAXED);
        g_once_init_leave(&once, 1);
    }
    return __atomic_load_n(&hash_seed, __ATOMIC_RELAXED);
}

static inline uint64_t seed_get(void)
{
    uint64_t seed = __atomic_load_n(&hash_seed, __ATOMIC_RELAXED);
    return G_LIKELY(seed != 0) ? seed : seed_make();
}

/* Absorb @len bytes at @p into the chain @h: the length, then 16 bytes
 * per multiply.  The seed is in both factors: no input word can zero a
 * product without knowing it. */
static inline uint64_t chain_bytes(uint64_t h, const unsigned char *p,
                                   size_t len, uint64_t seed)
{
    size_t left = len;
    h ^= len * HASH_K0;
    for (; left > 16; p += 16, left -= 16)
        h = fold_mul(read64(p) ^ seed ^ HASH_K1, read64(p + 8) ^ h);
    /* The last 1..16 bytes as two words, overlapping when shorter than
     * 16; with the length in h, the words tell the bytes apart. */
    uint64_t a = 0, b = 0;
    if (left >= 8) {
        a = read64(p);
        b = read64(p + left - 8);
    } else if (left >= 4) {
        a = read32(p);
        b = read32(p + left - 4);
    } else if (left > 0) {
        a = (uint64_t)p[0] << 16 | (uint64_t)p[left >> 1] << 8 | p[left - 1];
    }
    return fold_mul(a ^ seed ^ HASH_K2, b ^ h);
}

static inline uint64_t chain_finish(uint64_t h, uint64_t seed)
{
    return fold_mul(h ^ HASH_K3, seed ^ HASH_K1);
}

static uint64_t hash_bytes(const unsigned char *p, size_t len, uint64_t seed)
{
    return chain_finish(chain_bytes(seed, p, len, seed), seed);
}

PROCREG_API uint64_t procreg_hash(const void *data, size_t len)
{
    return hash_bytes(data, len, seed_get());
}

/* A key's hash: one chain over the namespace, then the name, each with
 * its length; a key is hashed straight from the caller's strings, never
 * read back from the copy just written (which would stall on store
 * forwarding). */
static uint64_t key_hash_parts(const char *ns, size_t ns_len,
                               const char *name, size_t name_len)
{
    uint64_t seed = seed_get();
    uint64_t h = chain_bytes(seed, (const unsigned char *)ns, ns_len, seed);
    h = chain_bytes(h, (const unsigned char *)name, name_len, seed);
    return chain_finish(h, seed);
}

PROCREG_API uint64_t procreg_key_hash(const void *bytes, size_t size)
{
    const char *ns = bytes;
    size_t ns_len = strnlen(ns, size);
    size_t rest = ns_len < size ? size - ns_len - 1 : 0;
    return key_hash_parts(ns, ns_len, ns + size - rest, rest);
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

/* Where the high bit of a byte is set, the byte (or a byte below it in
 * the word) is outside printable ASCII, 0x20..0x7e: w itself for 0x80 and
 * up, w + 1 for 0x7f, the "has a byte less than n" trick for control
 * bytes.  Mask with 0x80 in every byte: zero exactly when every byte is
 * printable ASCII (a carry or borrow only spreads from a byte that is
 * outside already). */
static inline uint64_t word_unusual(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull;
    return w | (w + ones) | ((w - ones * 0x20) & ~w);
}

#define WORD_HIGH_BITS 0x8080808080808080ull

static inline void write64(unsigned char *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static inline void write32(unsigned char *p, uint64_t v)
{
    uint32_t w = (uint32_t)v;
    memcpy(p, &w, 4);
}

/*
 * One string of a key (1 <= @len) in a single pass over its words: each
 * word is loaded once, then stored into @dst, hashed and, when @check,
 * checked (into *@unusual, see word_unusual).  Returns chain_bytes(@h,
 * @p, @len, @seed): the same words in the same steps.  The last words
 * overlap the ones before them instead of copying a short tail, and
 * nothing is read back from @dst (a load spanning two fresh stores would
 * stall on store forwarding).  Inlined: the call would cost more than a
 * short name, and a constant @check drops the check's code.
 */
static inline __attribute__((always_inline)) uint64_t
string_take(unsigned char *dst, const unsigned char *p, size_t len,
            uint64_t h, uint64_t seed, bool check, uint64_t *unusual)
{
    size_t left = len;
    uint64_t a, b, odd = 0;
    h ^= len * HASH_K0;
    for (; left > 16; p += 16, dst += 16, left -= 16) {
        a = read64(p);
        b = read64(p + 8);
        write64(dst, a);
        write64(dst + 8, b);
        odd |= word_unusual(a) | word_unusual(b);
        h = fold_mul(a ^ seed ^ HASH_K1, b ^ h);
    }
    if (left >= 8) {
        a = read64(p);
        b = read64(p + left - 8);
        write64(dst, a);
        write64(dst + left - 8, b);
        odd |= word_unusual(a) | word_unusual(b);
    } else if (left >= 4) {
        a = read32(p);
        b = read32(p + left - 4);
        write32(dst, a);
        write32(dst + left - 4, b);
        odd |= word_unusual(a | b << 32);
    } else {
        /* Bytes 0, left / 2 and left - 1 are every byte of 1 to 3. */
        dst[0] = p[0];
        dst[left >> 1] = p[left >> 1];
        dst[left - 1] = p[left - 1];
        a = (uint64_t)p[0] << 16 | (uint64_t)p[left >> 1] << 8 | p[left - 1];
        b = 0;
        odd |= word_unusual(a | 0x4141414141000000ull); /* 'A' pads */
    }
    if (check)
        *unusual |= odd & WORD_HIGH_BITS;
    return fold_mul(a ^ seed ^ HASH_K2, b ^ h);
}

static void key_fill(procreg_key *key, const char *ns, size_t ns_len,
                     const char *name, size_t name_len)
{
    key->refcount = 0;
    key->ns_len = (uint16_t)ns_len;
    key->name_len = (uint16_t)name_len;
    memcpy(key->bytes, ns, ns_len + 1);
    memcpy(key->bytes + ns_len + 1, name, name_len + 1);
    key->hash = key_hash_parts(ns, ns_len, name, name_len);
}

/* Anything but two printable ASCII strings of 1 to PROCREG_NAME_MAX
 * bytes: the full check, which also writes the message. */
static __attribute__((noinline)) int
key_init_checked(procreg_stack_key *buf, const char *ns, const char *name,
                 GError **error)
{
    int rc = procreg_validate_name(ns, "namespace", error);
    if (rc == 0)
        rc = procreg_validate_name(name, "name", error);
    if (rc == 0)
        key_fill(&buf->key, ns, strlen(ns), name, strlen(name));
    return rc;
}

/* The hot path of every call by strings: lengths, then one pass over
 * each string that copies, hashes and, when @check, checks it
 * (string_take).  Without @check only the lengths are checked. */
static inline __attribute__((always_inline)) int
key_init(procreg_stack_key *buf, const char *ns, const char *name,
         bool check, GError **error)
{
    if (ns == NULL)
        ns = PROCREG_NS_PRODUCTION;
    if (G_UNLIKELY(name == NULL))
        return key_init_checked(buf, ns, name, error);
    size_t ns_len = strnlen(ns, PROCREG_NAME_MAX + 1);
    size_t name_len = strnlen(name, PROCREG_NAME_MAX + 1);
    /* Unsigned: an empty string wraps around and fails too. */
    if (G_UNLIKELY(ns_len - 1 >= PROCREG_NAME_MAX ||
                   name_len - 1 >= PROCREG_NAME_MAX))
        return key_init_checked(buf, ns, name, error);
    uint64_t seed = seed_get(), unusual = 0;
    procreg_key *key = &buf->key;
    unsigned char *bytes = (unsigned char *)key->bytes;
    uint64_t h = string_take(bytes, (const unsigned char *)ns, ns_len, seed,
                             seed, check, &unusual);
    bytes[ns_len] = '\0';
    h = string_take(bytes + ns_len + 1, (const unsigned char *)name,
                    name_len, h, seed, check, &unusual);
    bytes[ns_len + 1 + name_len] = '\0';
    if (G_UNLIKELY(unusual != 0))
        return key_init_checked(buf, ns, name, error);
    key->refcount = 0;
    key->ns_len = (uint16_t)ns_len;
    key->name_len = (uint16_t)name_len;
    key->hash = chain_finish(h, seed);
    return 0;
}

PROCREG_INTERNAL int procreg_key_init_stack(procreg_stack_key *buf,
                                            const char *ns, const char *name,
                                            GError **error)
{
    return key_init(buf, ns, name, true, error);
}

PROCREG_INTERNAL int procreg_key_init_unchecked(procreg_stack_key *buf,
                                                const char *ns,
                                                const char *name,
                                                GError **error)
{
    return key_init(buf, ns, name, false, error);
}

/* Whether the @len (>= 1) bytes at @p are printable ASCII: what
 * string_take() checks, by words, the last one overlapping the one
 * before it. */
static bool printable_ascii(const unsigned char *p, size_t len)
{
    uint64_t odd;
    if (len >= 8) {
        odd = word_unusual(read64(p + len - 8));
        for (size_t i = 0; i + 8 <= len; i += 8)
            odd |= word_unusual(read64(p + i));
    } else if (len >= 4) {
        odd = word_unusual(read32(p) | read32(p + len - 4) << 32);
    } else {
        odd = word_unusual((uint64_t)p[0] << 16 | (uint64_t)p[len >> 1] << 8 |
                           p[len - 1] | 0x4141414141000000ull);
    }
    return (odd & WORD_HIGH_BITS) == 0;
}

/* A miss of a lookup by strings checks the names here (a hit proved them
 * valid): printable ASCII, as key_init() checks them, without the full
 * check's UTF-8 walk, which alone cost a miss 1140 instructions. */
PROCREG_INTERNAL int procreg_key_check_names(const procreg_key *key,
                                             GError **error)
{
    if (key->ns_len >= 1 && key->name_len >= 1 &&
        printable_ascii((const unsigned char *)procreg_key_namespace(key),
                        key->ns_len) &&
        printable_ascii((const unsigned char *)procreg_key_name(key),
                        key->name_len))
        return 0;
    int rc = procreg_validate_name(procreg_key_namespace(key), "namespace",
                                   error);
    return rc != 0 ? rc
                   : procreg_validate_name(procreg_key_name(key), "name",
                                           error);
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
    return procreg_key_ns_of(key);
}

PROCREG_API const char *procreg_key_name(const procreg_key *key)
{
    return procreg_key_name_of(key);
}

PROCREG_INTERNAL char *procreg_key_string(const char *ns, const char *name)
{
    return g_strconcat(ns, "\x1f", name, NULL);
}

PROCREG_INTERNAL bool procreg_ns_reserved(const char *ns)
{
    /* The first byte settles nearly every call without a strncmp. */
    return ns != NULL && ns[0] == PROCREG_NS_RESERVED_PREFIX[0] &&
           strncmp(ns, PROCREG_NS_RESERVED_PREFIX,
                   strlen(PROCREG_NS_RESERVED_PREFIX)) == 0;
}

PROCREG_INTERNAL int procreg_ns_check_writable(const char *ns, GError **error)
{
    return procreg_ns_reserved(ns)
               ? procreg_set_error(error, PROCREG_EINVAL,
                                   "namespace '%s' is reserved: namespaces "
                                   "that begin with '%s' hold procreg's own "
                                   "records (locks, start claims, namespace "
                                   "settings)", ns,
                                   PROCREG_NS_RESERVED_PREFIX)
               : 0;
}
