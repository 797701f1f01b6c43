/*
 * The lmdb backend's record decoders (backends/lmdb/lmdb-codec.h) on raw
 * bytes, without a file: fast where fuzz-lmdb goes through whole files.
 * The first input byte picks the record:
 *
 *   0  an "entries" value: procreg_lmdb_entry_decode() (and the lookup's
 *      procreg_lmdb_entry_decode_owner(), which must agree) and, on its
 *      metadata, procreg_lmdb_meta_decode(); and the reaper's filter,
 *      procreg_lmdb_entry_owned_by(), which must never miss an entry of
 *      the owner the value decodes to
 *   1  an "entries" key: key_split, key_strings, key_printable
 *   2  an "owners" key: procreg_lmdb_owner_from_key()
 *   3  an "events" (change-log) value: procreg_lmdb_change_decode()
 *
 * Expectations: a decoder accepts or says why not, never crashes; what it
 * accepts is what the encoder writes (an entry value of the current
 * version and an owner key re-encode byte for byte, one of version 1
 * re-encodes to the same entry, a change record re-encodes to a record that
 * decodes to the same change); accepted keys follow the name rules;
 * accepted metadata is a normal-form a{sv}.
 */
#include "fuzz-common.h"
#include "lmdb-codec.h"

#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init_common();
    return 0;
}

static void fuzz_entry(const uint8_t *d, size_t n)
{
    procreg_lmdb_raw_entry e;
    const char *why = procreg_lmdb_entry_decode(d, n, &e);
    /* The lookup's decoder: the same verdict, the same owner. */
    procreg_lmdb_raw_entry eo;
    const char *why_o = procreg_lmdb_entry_decode_owner(d, n, &eo);
    FUZZ_CHECK((why == NULL) == (why_o == NULL));
    FUZZ_CHECK(why == NULL || strcmp(why, why_o) == 0);
    if (why != NULL)
        return;
    FUZZ_CHECK(eo.owner.pid == e.owner.pid &&
               eo.owner.start_time == e.owner.start_time &&
               eo.has_meta == e.has_meta);
    FUZZ_CHECK(e.owner.pid > 0);
    FUZZ_CHECK(e.meta_len <= n);
    uint8_t ob[PROCREG_LMDB_OWNER_BYTES_MAX];
    size_t ob_len = procreg_lmdb_entry_owner_bytes(&e.owner, ob);
    int owned = procreg_lmdb_entry_owned_by(d, n, ob, ob_len);
    FUZZ_CHECK(owned == (d[0] == PROCREG_LMDB_ENTRY_VERSION ? 1 : -1));
    procreg_owner other = {e.owner.pid, e.owner.start_time + 1};
    ob_len = procreg_lmdb_entry_owner_bytes(&other, ob);
    owned = procreg_lmdb_entry_owned_by(d, n, ob, ob_len);
    FUZZ_CHECK(owned == (d[0] == PROCREG_LMDB_ENTRY_VERSION ? 0 : -1));
    size_t size = procreg_lmdb_entry_size(&e);
    uint8_t *again = g_malloc(size);
    procreg_lmdb_entry_encode(&e, again);
    if (d[0] == PROCREG_LMDB_ENTRY_VERSION) {
        FUZZ_CHECK(size == n && memcmp(again, d, n) == 0);
    } else {
        /* Version 1, read and written again as version 2: the same. */
        procreg_lmdb_raw_entry e2;
        FUZZ_CHECK(procreg_lmdb_entry_decode(again, size, &e2) == NULL);
        FUZZ_CHECK(e2.owner.pid == e.owner.pid &&
                   e2.owner.start_time == e.owner.start_time &&
                   e2.registered_at == e.registered_at &&
                   e2.revision == e.revision && e2.has_meta == e.has_meta &&
                   e2.meta_len == e.meta_len &&
                   memcmp(e2.meta, e.meta, e.meta_len) == 0);
    }
    g_free(again);
    const char *mwhy = NULL;
    GVariant *m = procreg_lmdb_meta_decode(e.has_meta, e.meta, e.meta_len,
                                           &mwhy);
    if (m != NULL) {
        FUZZ_CHECK(e.has_meta && mwhy == NULL);
        FUZZ_CHECK(g_variant_is_of_type(m, G_VARIANT_TYPE_VARDICT));
        FUZZ_CHECK(g_variant_is_normal_form(m));
        g_variant_unref(m);
    } else if (e.has_meta) {
        FUZZ_CHECK(mwhy != NULL);
    }
}

static void fuzz_key(const uint8_t *d, size_t n)
{
    size_t ns_len = 12345;
    bool split = procreg_lmdb_key_split(d, n, &ns_len);
    char *ns = NULL, *name = NULL;
    bool strings = procreg_lmdb_key_strings(d, n, &ns, &name);
    if (strings) {
        FUZZ_CHECK(split);
        FUZZ_CHECK(strlen(ns) == ns_len && ns_len + 1 + strlen(name) == n);
        FUZZ_CHECK(procreg_validate_name(ns, "namespace", NULL) == 0);
        FUZZ_CHECK(procreg_validate_name(name, "name", NULL) == 0);
        /* The key a registry would build for them is these bytes. */
        procreg_key *k = NULL;
        FUZZ_CHECK(procreg_key_new(ns, name, &k, NULL) == 0);
        FUZZ_CHECK(procreg_key_size(k) == n &&
                   memcmp(procreg_key_bytes(k), d, n) == 0);
        procreg_key_unref(k);
    } else {
        FUZZ_CHECK(ns == NULL && name == NULL);
    }
    char *printable = procreg_lmdb_key_printable(d, n);
    FUZZ_CHECK(printable != NULL && g_utf8_validate(printable, -1, NULL));
    g_free(printable);
    g_free(ns);
    g_free(name);
}

static void fuzz_owner(const uint8_t *d, size_t n)
{
    procreg_owner o;
    if (!procreg_lmdb_owner_from_key(d, n, &o))
        return;
    FUZZ_CHECK(n == PROCREG_LMDB_OWNER_KEY_SIZE);
    uint8_t again[PROCREG_LMDB_OWNER_KEY_SIZE];
    procreg_lmdb_owner_key(&o, again);
    FUZZ_CHECK(memcmp(again, d, n) == 0);
}

static void fuzz_change(const uint8_t *d, size_t n)
{
    procreg_lmdb_change c;
    if (!procreg_lmdb_change_decode(d, n, &c))
        return;
    FUZZ_CHECK(c.ns != NULL && c.name != NULL);
    FUZZ_CHECK(procreg_validate_name(c.ns, "namespace", NULL) == 0);
    FUZZ_CHECK(procreg_validate_name(c.name, "name", NULL) == 0);
    FUZZ_CHECK(c.h.kind >= PROCREG_EVENT_REGISTERED &&
               c.h.kind <= PROCREG_EVENT_LEFT); /* groups: JOINED, LEFT */
    GVariant *norm = NULL;
    if (c.meta != NULL) {
        FUZZ_CHECK(g_variant_is_normal_form(c.meta));
        norm = g_variant_ref(c.meta);
    }
    /* Encode what was decoded; it must decode to the same change. */
    size_t ns_len = strlen(c.ns), name_len = strlen(c.name);
    size_t key_len = ns_len + 1 + name_len;
    char *key = g_malloc(key_len + 1);
    memcpy(key, c.ns, ns_len + 1);
    memcpy(key + ns_len + 1, c.name, name_len + 1);
    procreg_lmdb_raw_entry e = {
        .owner = {.pid = (pid_t)c.h.pid, .start_time = c.h.start_time},
        .registered_at = c.h.registered_at,
        .revision = c.h.revision,
        .has_meta = norm != NULL,
        .meta = norm ? g_variant_get_data(norm) : NULL,
        .meta_len = norm ? g_variant_get_size(norm) : 0,
    };
    size_t size = procreg_lmdb_event_size(key_len, &e);
    uint8_t *buf = g_malloc(size);
    procreg_lmdb_event_encode((procreg_event_kind)c.h.kind,
                              (procreg_event_reason)c.h.reason, c.h.origin_pid,
                              c.h.origin_instance, key, key_len, &e, buf);
    procreg_lmdb_change c2;
    FUZZ_CHECK(procreg_lmdb_change_decode(buf, size, &c2));
    FUZZ_CHECK(strcmp(c2.ns, c.ns) == 0 && strcmp(c2.name, c.name) == 0);
    FUZZ_CHECK(c2.h.kind == c.h.kind && c2.h.reason == c.h.reason);
    FUZZ_CHECK(c2.h.pid == c.h.pid && c2.h.start_time == c.h.start_time);
    FUZZ_CHECK(c2.h.revision == c.h.revision &&
               c2.h.registered_at == c.h.registered_at);
    FUZZ_CHECK(c2.h.origin_pid == c.h.origin_pid &&
               c2.h.origin_instance == c.h.origin_instance);
    FUZZ_CHECK((c2.meta == NULL) == (c.meta == NULL));
    if (c.meta != NULL)
        FUZZ_CHECK(g_variant_equal(c2.meta, c.meta));
    procreg_lmdb_change_clear(&c2);
    g_free(buf);
    g_free(key);
    if (norm != NULL)
        g_variant_unref(norm);
    procreg_lmdb_change_clear(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* A copy: the decoders may read at any alignment, the copy is exact. */
    uint8_t *d = g_memdup2(data + 1, size - 1);
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0: fuzz_entry(d, n); break;
    case 1: fuzz_key(d, n); break;
    case 2: fuzz_owner(d, n); break;
    default: fuzz_change(d, n); break;
    }
    g_free(d);
    return 0;
}
