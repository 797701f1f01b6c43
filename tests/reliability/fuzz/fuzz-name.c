/*
 * Names and namespaces (core/key.c).  The input is "NS\0NAME" (without a
 * NUL: NAME alone, in the default namespace).
 *
 * Expectations:
 *  - procreg_key_new() (ASCII fast path, then the full check) accepts a
 *    pair exactly when procreg_validate_name() accepts both parts, and
 *    both agree with the documented rule: non-empty UTF-8 of at most 255
 *    bytes without control characters (checked here independently);
 *  - a rejection is PROCREG_EINVAL with a GError;
 *  - a valid key round-trips: its namespace and name are the input, its
 *    bytes are "ns\0name" and its hash is procreg_key_hash() of them;
 *  - through a ghash registry a valid pair registers, is found by lookup
 *    and by list with the same strings, and unregisters; an invalid pair
 *    is refused by every operation with PROCREG_EINVAL.
 */
#include "fuzz-common.h"

#include <string.h>
#include <unistd.h>

static procreg *reg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init_common();
    FUZZ_CHECK(procreg_open("ghash", &reg, NULL) == 0);
    return 0;
}

/* The rule of procreg.h, written out independently of core/key.c. */
static bool rule_ok(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > PROCREG_NAME_MAX)
        return false;
    if (!g_utf8_validate(s, (gssize)len, NULL))
        return false;
    for (const char *p = s; *p; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);
        if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) /* Unicode Cc */
            return false;
    }
    return true;
}

static bool validate(const char *s, const char *what)
{
    GError *err = NULL;
    int rc = procreg_validate_name(s, what, &err);
    if (rc == 0) {
        FUZZ_CHECK(err == NULL);
    } else {
        FUZZ_CHECK(rc == PROCREG_EINVAL);
        FUZZ_CHECK_ERROR(rc, err);
        /* The message names what was checked. */
        FUZZ_CHECK(strstr(err->message, what) != NULL);
        g_error_free(err);
    }
    FUZZ_CHECK((rc == 0) == rule_ok(s));
    return rc == 0;
}

static void check_registry_valid(const char *ns, const char *name)
{
    const char *eff_ns = ns ? ns : PROCREG_NS_PRODUCTION;
    procreg_entry cur = {0};
    FUZZ_CHECK(procreg_register(reg, ns, name, NULL, NULL, &cur, NULL) == 0);
    FUZZ_CHECK(cur.owner.pid == getpid());
    procreg_entry_clear(&cur);
    procreg_owner owner;
    FUZZ_CHECK(procreg_lookup(reg, ns, name, &owner, NULL) == 0);
    FUZZ_CHECK(owner.pid == getpid());
    procreg_entry *list = NULL;
    size_t n = 0;
    FUZZ_CHECK(procreg_list(reg, eff_ns, &list, &n, NULL) == 0);
    FUZZ_CHECK(n == 1);
    FUZZ_CHECK(strcmp(list[0].ns, eff_ns) == 0);
    FUZZ_CHECK(strcmp(list[0].name, name) == 0);
    procreg_entries_free(list, n);
    FUZZ_CHECK(procreg_unregister(reg, ns, name, NULL) == 0);
    size_t count = 1;
    FUZZ_CHECK(procreg_count(reg, eff_ns, &count, NULL) == 0 && count == 0);
}

static void check_registry_invalid(const char *ns, const char *name)
{
    GError *err = NULL;
    procreg_owner owner;
    procreg_entry e;
    int rc = procreg_register(reg, ns, name, NULL, NULL, NULL, &err);
    FUZZ_CHECK(rc == PROCREG_EINVAL);
    FUZZ_CHECK_ERROR(rc, err);
    g_clear_error(&err);
    FUZZ_CHECK(procreg_lookup(reg, ns, name, &owner, NULL) == PROCREG_EINVAL);
    FUZZ_CHECK(procreg_lookup_entry(reg, ns, name, &e, NULL) ==
               PROCREG_EINVAL);
    FUZZ_CHECK(e.metadata == NULL);
    FUZZ_CHECK(procreg_unregister(reg, ns, name, NULL) == PROCREG_EINVAL);
    FUZZ_CHECK(procreg_update_metadata(reg, ns, name, NULL,
                                       PROCREG_UPDATE_REPLACE,
                                       NULL) == PROCREG_EINVAL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_strndup(data, size);
    const char *ns = NULL, *name = buf;
    const char *nul = memchr(buf, '\0', size);
    if (nul != NULL) {
        ns = buf;
        name = nul + 1; /* ends at the next NUL or at the end */
    }
    bool ns_ok = ns == NULL || validate(ns, "namespace");
    bool name_ok = validate(name, "name");

    procreg_key *key = NULL;
    GError *err = NULL;
    int rc = procreg_key_new(ns, name, &key, &err);
    FUZZ_CHECK((rc == 0) == (ns_ok && name_ok));
    if (rc != 0) {
        FUZZ_CHECK(rc == PROCREG_EINVAL && key == NULL);
        FUZZ_CHECK_ERROR(rc, err);
        g_error_free(err);
        check_registry_invalid(ns, name);
        g_free(buf);
        return 0;
    }
    FUZZ_CHECK(err == NULL);
    const char *eff_ns = ns ? ns : PROCREG_NS_PRODUCTION;
    FUZZ_CHECK(strcmp(procreg_key_namespace(key), eff_ns) == 0);
    FUZZ_CHECK(strcmp(procreg_key_name(key), name) == 0);
    size_t ks = procreg_key_size(key);
    FUZZ_CHECK(ks == strlen(eff_ns) + 1 + strlen(name));
    FUZZ_CHECK(memcmp(procreg_key_bytes(key), eff_ns, strlen(eff_ns) + 1) == 0);
    FUZZ_CHECK(key->hash == procreg_key_hash(procreg_key_bytes(key), ks));
    procreg_key *second = procreg_key_ref(key);
    FUZZ_CHECK(second == key);
    procreg_key_unref(second);

    /* The reserved namespaces (the core's own records) refuse writes. */
    if (g_str_has_prefix(eff_ns, PROCREG_NS_RESERVED_PREFIX)) {
        FUZZ_CHECK(procreg_register_key(reg, key, NULL, NULL, NULL, NULL) ==
                   PROCREG_EINVAL);
        procreg_key_unref(key);
        g_free(buf);
        return 0;
    }
    /* The key form and the string form see the same entry. */
    FUZZ_CHECK(procreg_register_key(reg, key, NULL, NULL, NULL, NULL) == 0);
    procreg_owner owner;
    FUZZ_CHECK(procreg_lookup(reg, ns, name, &owner, NULL) == 0);
    FUZZ_CHECK(procreg_unregister_key(reg, key, 0, NULL) == 0);
    FUZZ_CHECK(procreg_lookup_key(reg, key, &owner, NULL) ==
               PROCREG_ENOTFOUND);
    procreg_key_unref(key);

    check_registry_valid(ns, name);
    g_free(buf);
    return 0;
}
