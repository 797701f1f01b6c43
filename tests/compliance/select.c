/*
 * Compliance case for select (procreg_select(), procreg_select_count(),
 * procreg_unregister_match()), which the core answers from the backend's
 * lookup, find and list: every backend must give the documented results,
 * its metadata index (when it has one) included.
 */
#include "compliance-private.h"

#include <string.h>
#include <unistd.h>

/* The names selected by @text in @ns, space separated (or NULL, with the
 * case failed, when the filter does not parse or select fails). */
static char *select_names(Fixture *f, const char *ns, const char *text)
{
    procreg_filter *flt = NULL;
    GError *err = NULL;
    if (procreg_filter_parse(text, &flt, &err) != 0) {
        cx_fail_at(__FILE__, __LINE__, "'%s': %s", text, err->message);
        g_error_free(err);
        return NULL;
    }
    procreg_entry *v = NULL;
    size_t n = 0, count = 0;
    int rc = procreg_select(f->reg, ns, flt, &v, &n, &err);
    int rc2 = procreg_select_count(f->reg, ns, flt, &count, NULL);
    procreg_filter_unref(flt);
    if (rc != 0 || rc2 != 0 || count != n) {
        cx_fail_at(__FILE__, __LINE__, "select '%s': %d/%d (%s), count %zu "
                   "for %zu", text, rc, rc2, err ? err->message : "", count,
                   n);
        g_clear_error(&err);
        procreg_entries_free(v, n);
        return NULL;
    }
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < n; i++)
        g_string_append_printf(s, "%s%s", i ? " " : "", v[i].name);
    procreg_entries_free(v, n);
    return g_string_free(s, FALSE);
}

#define CHECK_SELECT(ns, text, want)                                       \
    do {                                                                   \
        g_autofree char *got_ = select_names(f, ns, text);                 \
        CHECK_HELPER();                                                    \
        CHECK_MSG(strcmp(got_, want) == 0, "select '%s' in %s: '%s', not " \
                  "'%s'", text, ns ? ns : "(all)", got_, want);            \
    } while (0)

void case_select(Fixture *f)
{
    CHECK_RC(cx_quick_register(f->reg, "sel", "web-1",
                               "{'role': <'api'>, 'port': <uint16 8080>, "
                               "'load': <0.25>}"), 0);
    CHECK_RC(cx_quick_register(f->reg, "sel", "web-2",
                               "{'role': <'api'>, 'port': <int64 7000>, "
                               "'up': <true>}"), 0);
    CHECK_RC(cx_quick_register(f->reg, "sel", "db",
                               "{'role': <'db'>, 'port': <5432>, "
                               "'load': <2.0>}"), 0);
    CHECK_RC(cx_quick_register(f->reg, "sel", "cache", NULL), 0);
    CHECK_RC(cx_quick_register(f->reg, "other", "web-3",
                               "{'role': <'api'>, 'port': <9000>}"), 0);

    CHECK_SELECT("sel", "role == \"api\"", "web-1 web-2");
    CHECK_SELECT("sel", "role == \"api\" and port >= 8000", "web-1");
    CHECK_SELECT(NULL, "role == \"api\" and port >= 8000", "web-3 web-1");
    CHECK_SELECT("sel", "port == 8080", "web-1");    /* uint16 vs int64 */
    CHECK_SELECT("sel", "port > 7000.5", "web-1");   /* int vs double */
    CHECK_SELECT("sel", "load == 2", "");            /* never int == double */
    CHECK_SELECT("sel", "load < 1", "web-1");
    CHECK_SELECT("sel", "role != \"api\"", "db");    /* not cache: no role */
    CHECK_SELECT("sel", "not role == \"api\"", "cache db");
    CHECK_SELECT("sel", "up == true or not exists port", "cache web-2");
    CHECK_SELECT("sel", "name glob \"web-?\" and not name == \"web-2\"",
                 "web-1");
    CHECK_SELECT("sel", "name == \"db\" and role == \"db\"", "db");
    CHECK_SELECT("sel", "name startswith \"c\" or role startswith \"d\"",
                 "cache db");
    g_autofree char *mine = g_strdup_printf("pid == %d", (int)getpid());
    CHECK_SELECT("sel", mine, "cache db web-1 web-2");
    CHECK_SELECT("sel", "pid < 0", "");

    g_autoptr(GError) err = NULL;
    procreg_filter *api = NULL;
    CHECK_OK(procreg_filter_parse("role == \"api\"", &api, &err), err);
    size_t removed = 0;
    int rc = procreg_unregister_match(f->reg, "sel", api, &removed, NULL);
    procreg_filter_unref(api);
    CHECK_RC(rc, 0);
    CHECK_MSG(removed == 2, "unregister_match removed %zu, not 2", removed);
    CHECK_SELECT("sel", "exists role or not exists role", "cache db");
    CHECK_SELECT("other", "role == \"api\"", "web-3");
}
