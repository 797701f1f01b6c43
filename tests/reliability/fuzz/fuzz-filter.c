/*
 * Filter text (core/filter-parse.c, core/filter.c).  The input is the
 * text of a filter (up to its first NUL).
 *
 * Expectations:
 *  - procreg_filter_parse() returns 0 with a filter, or PROCREG_EINVAL with
 *    a GError whose details hold a position within the text (and, when
 *    present, a non-empty list of what was expected);
 *  - a parsed filter prints as text that parses again and prints the same
 *    (procreg_filter_to_string() and the parser agree), and both filters
 *    give the same verdict on a few entries;
 *  - through a ghash registry with those entries, procreg_select() of the
 *    filter succeeds and returns exactly the entries it matches.
 */
#include "fuzz-common.h"

#include <string.h>

#define N_ENTRIES 4

static procreg *reg;
static procreg_entry entries[N_ENTRIES];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init_common();
    FUZZ_CHECK(procreg_open("ghash", &reg, NULL) == 0);
    static const char *const md[N_ENTRIES] = {
        "{'role': <'api'>, 'port': <8080>, 'load': <0.5>, 'up': <true>}",
        "{'role': <'db'>, 'port': <uint64 18446744073709551615>}",
        "{'name': <'x'>, 'load avg': <int16 -3>, 'tags': <['a']>}",
        "@a{sv} {}",
    };
    static const char *const names[N_ENTRIES] = {"web-1", "db", "w*", "e"};
    for (int i = 0; i < N_ENTRIES; i++) {
        GVariant *m = g_variant_ref_sink(g_variant_new_parsed(md[i]));
        FUZZ_CHECK(procreg_register(reg, "f", names[i], NULL, m, &entries[i],
                                    NULL) == 0);
        entries[i].ns = g_strdup("f");
        entries[i].name = g_strdup(names[i]);
        g_variant_unref(m);
    }
    return 0;
}

static void check_select(const procreg_filter *f)
{
    procreg_entry *v = NULL;
    size_t n = 0;
    FUZZ_CHECK(procreg_select(reg, "f", f, &v, &n, NULL) == 0);
    size_t want = 0;
    for (int i = 0; i < N_ENTRIES; i++)
        want += procreg_filter_matches(f, &entries[i]);
    FUZZ_CHECK(n == want);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(procreg_filter_matches(f, &v[i]));
    procreg_entries_free(v, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size);
    procreg_filter *f = NULL;
    GError *err = NULL;
    int rc = procreg_filter_parse(text, &f, &err);
    if (rc != 0) {
        FUZZ_CHECK(rc == PROCREG_EINVAL && f == NULL);
        FUZZ_CHECK_ERROR(rc, err);
        const procreg_error_details *d = procreg_error_get_details(err);
        FUZZ_CHECK(d != NULL && d->position >= 0 &&
                   (size_t)d->position <= strlen(text));
        FUZZ_CHECK(d->alternatives == NULL || d->alternatives[0] != NULL);
        g_error_free(err);
        g_free(text);
        return 0;
    }
    FUZZ_CHECK(f != NULL && err == NULL);
    char *printed = procreg_filter_to_string(f);
    procreg_filter *back = NULL;
    FUZZ_CHECK(procreg_filter_parse(printed, &back, NULL) == 0);
    char *again = procreg_filter_to_string(back);
    FUZZ_CHECK(strcmp(printed, again) == 0);
    for (int i = 0; i < N_ENTRIES; i++)
        FUZZ_CHECK(procreg_filter_matches(f, &entries[i]) ==
                   procreg_filter_matches(back, &entries[i]));
    check_select(f);
    g_free(again);
    g_free(printed);
    procreg_filter_unref(back);
    procreg_filter_unref(f);
    g_free(text);
    return 0;
}
