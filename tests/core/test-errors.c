/*
 * Errors as data: each fact a failed call knows is reachable from its
 * GError (procreg_error_get_details()), not only in its message: the names
 * a namespace holds on a miss, the holder on PROCREG_EEXISTS, the owner on
 * PROCREG_EPERM, what exists instead of an unknown backend or option, and
 * where a spec goes wrong.
 */
#include "child-util.h"

#include <procreg/procreg.h>

#include <string.h>

static procreg *open_ghash(void)
{
    procreg *reg = NULL;
    g_assert_cmpint(procreg_open("ghash", &reg, NULL), ==, 0);
    return reg;
}

static const procreg_error_details *details_of(GError *err, int code)
{
    g_assert_nonnull(err);
    g_assert_cmpint(err->code, ==, code);
    const procreg_error_details *d = procreg_error_get_details(err);
    g_assert_nonnull(d);
    return d;
}

static void test_miss_names(void)
{
    procreg *reg = open_ghash();
    const char *names[] = {"a", "b", "c"};
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++)
        g_assert_cmpint(procreg_register(reg, "ns", names[i], NULL, NULL, NULL,
                                         NULL), ==, 0);
    procreg_owner o;
    GError *err = NULL;
    g_assert_cmpint(procreg_lookup(reg, "ns", "zz", &o, &err), ==,
                    PROCREG_ENOTFOUND);
    const procreg_error_details *d = details_of(err, PROCREG_ENOTFOUND);
    g_assert_nonnull(d->alternatives);
    g_assert_cmpuint(g_strv_length(d->alternatives), ==, 3);
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++)
        g_assert_true(g_strv_contains((const char *const *)d->alternatives,
                                      names[i]));
    g_assert_null(d->entry);
    g_assert_cmpint(d->position, ==, -1);
    g_clear_error(&err);
    /* An empty namespace: an empty list, not "unknown". */
    procreg_entry e = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, "empty", "x", &e, &err), ==,
                    PROCREG_ENOTFOUND);
    d = details_of(err, PROCREG_ENOTFOUND);
    g_assert_nonnull(d->alternatives);
    g_assert_null(d->alternatives[0]);
    g_clear_error(&err);
    procreg_close(reg);
}

static void test_exists_holder(void)
{
    procreg *reg = open_ghash();
    procreg_entry first = {0};
    g_assert_cmpint(procreg_register(reg, "ns", "k", NULL,
                                     g_variant_new_parsed("{'port': <80>}"),
                                     &first, NULL), ==, 0);
    GError *err = NULL;
    g_assert_cmpint(procreg_register(reg, "ns", "k", NULL, NULL, NULL, &err),
                    ==, PROCREG_EEXISTS);
    const procreg_error_details *d = details_of(err, PROCREG_EEXISTS);
    g_assert_nonnull(d->entry);
    g_assert_cmpstr(d->entry->ns, ==, "ns");
    g_assert_cmpstr(d->entry->name, ==, "k");
    g_assert_cmpint(d->entry->owner.pid, ==, getpid());
    g_assert_cmpuint(d->entry->revision, ==, first.revision);
    g_assert_true(g_variant_equal(d->entry->metadata, first.metadata));
    /* Copied with the error, freed with it. */
    GError *copy = g_error_copy(err);
    g_clear_error(&err);
    d = details_of(copy, PROCREG_EEXISTS);
    g_assert_cmpuint(d->entry->revision, ==, first.revision);
    g_assert_cmpstr(d->entry->name, ==, "k");
    g_clear_error(&copy);
    procreg_entry_clear(&first);
    procreg_close(reg);
}

static void test_perm_owner(void)
{
    pid_t child = sleeping_child();
    procreg *reg = open_ghash();
    procreg_owner theirs;
    g_assert_cmpint(procreg_owner_from_pid(child, &theirs, NULL), ==, 0);
    g_assert_cmpint(procreg_register(reg, "ns", "k", &theirs, NULL, NULL,
                                     NULL), ==, 0);
    GError *err = NULL;
    g_assert_cmpint(procreg_unregister(reg, "ns", "k", &err), ==,
                    PROCREG_EPERM);
    const procreg_error_details *d = details_of(err, PROCREG_EPERM);
    g_assert_nonnull(d->entry);
    g_assert_cmpint(d->entry->owner.pid, ==, child);
    g_assert_cmpuint(d->entry->owner.start_time, ==, theirs.start_time);
    g_assert_cmpstr(d->entry->name, ==, "k");
    g_clear_error(&err);
    g_assert_cmpint(procreg_update_metadata(reg, "ns", "k", NULL,
                                            PROCREG_UPDATE_REPLACE, &err),
                    ==, PROCREG_EPERM);
    g_assert_cmpint(details_of(err, PROCREG_EPERM)->entry->owner.pid, ==,
                    child);
    g_clear_error(&err);
    procreg_close(reg);
    kill_and_reap(child);
}

static void test_spec_positions(void)
{
    static const struct {
        const char *spec;
        int position;
    } cases[] = {
        {"no good", 0},
        {"ghash:a", 6},
        {"ghash:a=1,a=2", 10},
        {"ghash:a=1,", 9},
        {"ghash:a=1,b c=2", 10},
        {"optimized:inner=[ghash", 16},
        {"ghash:a=[x]y", 11},
        {"lmdb:path=a]b", 11},
        {"ghash:a=b\\", 9},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        procreg *reg = NULL;
        GError *err = NULL;
        g_assert_cmpint(procreg_open(cases[i].spec, &reg, &err), ==,
                        PROCREG_EINVAL);
        const procreg_error_details *d = details_of(err, PROCREG_EINVAL);
        if (d->position != cases[i].position)
            g_error("spec \"%s\": position %d, expected %d (%s)",
                    cases[i].spec, d->position, cases[i].position,
                    err->message);
        g_clear_error(&err);
    }
}

static void test_alternatives(void)
{
    procreg *reg = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_open("nosuch", &reg, &err), ==,
                    PROCREG_EUNKNOWN_BACKEND);
    const procreg_error_details *d = details_of(err,
                                                PROCREG_EUNKNOWN_BACKEND);
    g_assert_true(g_strv_contains((const char *const *)d->alternatives,
                                  "ghash"));
    g_clear_error(&err);
    /* ghash takes no options: an empty list. */
    g_assert_cmpint(procreg_open("ghash:size=1", &reg, &err), ==,
                    PROCREG_EINVAL);
    d = details_of(err, PROCREG_EINVAL);
    g_assert_nonnull(d->alternatives);
    g_assert_null(d->alternatives[0]);
    g_clear_error(&err);
    g_assert_cmpint(procreg_open("optimized:inner=ghash,nosuch=1", &reg,
                                 &err),
                    ==, PROCREG_EINVAL);
    d = details_of(err, PROCREG_EINVAL);
    g_assert_true(g_strv_contains((const char *const *)d->alternatives,
                                  "ttl_ms"));
    g_clear_error(&err);
}

static void test_names(void)
{
    g_assert_cmpstr(procreg_error_name(PROCREG_EPERM), ==, "PROCREG_EPERM");
    g_assert_cmpstr(procreg_error_name(PROCREG_ENOTFOUND), ==,
                    "PROCREG_ENOTFOUND");
    g_assert_cmpstr(procreg_error_name(0), ==, "PROCREG_OK");
    g_assert_null(procreg_error_name(PROCREG_ECOMPACTED - 1));
    g_assert_null(procreg_error_name(1));
    for (int code = PROCREG_EPERM; code <= 0; code++)
        g_assert_true(g_str_has_prefix(procreg_error_name(code), "PROCREG_"));
}

static void test_other_domain(void)
{
    g_assert_null(procreg_error_get_details(NULL));
    GError *err = g_error_new_literal(G_FILE_ERROR, G_FILE_ERROR_NOENT, "x");
    g_assert_null(procreg_error_get_details(err));
    g_error_free(err);
    /* Errors a program makes in the domain itself get empty details. */
    err = g_error_new_literal(PROCREG_ERROR, PROCREG_ENOTFOUND, "mine");
    const procreg_error_details *d = procreg_error_get_details(err);
    g_assert_nonnull(d);
    g_assert_null(d->alternatives);
    g_assert_null(d->entry);
    g_assert_cmpint(d->position, ==, -1);
    g_error_free(err);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/core/errors/miss-names", test_miss_names);
    g_test_add_func("/core/errors/exists-holder", test_exists_holder);
    g_test_add_func("/core/errors/perm-owner", test_perm_owner);
    g_test_add_func("/core/errors/spec-positions", test_spec_positions);
    g_test_add_func("/core/errors/alternatives", test_alternatives);
    g_test_add_func("/core/errors/other-domain", test_other_domain);
    g_test_add_func("/core/errors/names", test_names);
    return g_test_run();
}
