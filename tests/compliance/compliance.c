/*
 * The backend compliance suite (see compliance.h).  Written against the
 * public API only (procreg.h, plus backend.h for capabilities and the
 * backend-level cases), so it runs unchanged against an out-of-tree
 * backend loaded from a module.
 *
 * Checks do not abort: a failed check marks the case failed with
 * g_test_fail_printf() and returns from it, so one run reports every
 * broken case of a backend and exits non-zero (the program sets
 * g_test_set_nonfatal_assertions()).
 */
#include "compliance-private.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

void cx_fail_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_test_fail_printf("%s:%d: %s", file, line, msg);
}

/* ------------------------------------------------------------------------ */
/* Fixture                                                                  */

static GPtrArray *suites;     /* Suite*, kept for the life of the process */
static GPtrArray *instances;  /* CaseInstance* */
static GPtrArray *modules;    /* char*, modules loaded by the program */
static gint unique_counter;

static void rm_rf(const char *path)
{
    if (g_file_test(path, G_FILE_TEST_IS_DIR) &&
        !g_file_test(path, G_FILE_TEST_IS_SYMLINK)) {
        GDir *dir = g_dir_open(path, 0, NULL);
        if (dir != NULL) {
            const char *name;
            while ((name = g_dir_read_name(dir)) != NULL) {
                g_autofree char *child = g_build_filename(path, name, NULL);
                rm_rf(child);
            }
            g_dir_close(dir);
        }
        g_rmdir(path);
    } else {
        g_unlink(path);
    }
}

static char *replace_all(const char *s, const char *what, const char *with)
{
    g_auto(GStrv) parts = g_strsplit(s, what, -1);
    return g_strjoinv(with, parts);
}

/* Expand the placeholders of the suite's spec into f->spec. */
static bool fixture_expand_spec(Fixture *f)
{
    char *spec = g_strdup(f->suite->spec_template);
    if (strstr(spec, "@TMPDIR@") != NULL) {
        GError *err = NULL;
        f->tmpdir = g_dir_make_tmp("procreg-compliance-XXXXXX", &err);
        if (f->tmpdir == NULL) {
            g_test_fail_printf("cannot make a temporary directory: %s",
                               err->message);
            g_error_free(err);
            g_free(spec);
            return false;
        }
        char *s = replace_all(spec, "@TMPDIR@", f->tmpdir);
        g_free(spec);
        spec = s;
    }
    if (strstr(spec, "@UNIQUE@") != NULL) {
        g_autofree char *u = g_strdup_printf(
            "%ld-%d", (long)getpid(), g_atomic_int_add(&unique_counter, 1));
        char *s = replace_all(spec, "@UNIQUE@", u);
        g_free(spec);
        spec = s;
    }
    f->spec = spec;
    return true;
}

/* The backend's capability flags, learnt once per suite from an opened
 * backend instance. */
static bool fixture_caps(Fixture *f)
{
    if (!f->suite->caps_known) {
        procreg_backend *b = NULL;
        GError *err = NULL;
        int rc = procreg_backend_open(f->spec, NULL, &b, &err);
        if (rc != 0) {
            g_test_fail_printf("procreg_backend_open(\"%s\") failed: %d "
                               "(%s): %s", f->spec, rc, procreg_strerror(rc),
                               err != NULL ? err->message : "(no GError)");
            g_clear_error(&err);
            return false;
        }
        const procreg_backend_ops *ops = procreg_backend_get_ops(b);
        if (ops == NULL) {
            g_test_fail_printf("procreg_backend_get_ops() returned NULL");
            procreg_backend_close(b);
            return false;
        }
        f->suite->caps = procreg_backend_get_caps(b);
        f->suite->caps_known = true;
        procreg_backend_close(b);
    }
    f->caps = f->suite->caps;
    return true;
}

static const char *caps_missing(unsigned int missing)
{
    if (missing & PROCREG_CAP_PERSISTENT)
        return "backend lacks PROCREG_CAP_PERSISTENT";
    if (missing & PROCREG_CAP_MULTIPROCESS)
        return "backend lacks PROCREG_CAP_MULTIPROCESS";
    if (missing & PROCREG_CAP_DISTRIBUTED)
        return "backend lacks PROCREG_CAP_DISTRIBUTED";
    if (missing & PROCREG_CAP_GROUPS)
        return "backend lacks PROCREG_CAP_GROUPS";
    if (missing & PROCREG_CAP_HISTORY)
        return "backend lacks PROCREG_CAP_HISTORY (the registry keeps "
               "its own history)";
    return "backend lacks a capability this case needs";
}

static void fixture_setup(gpointer fixture, gconstpointer data)
{
    Fixture *f = fixture;
    const CaseInstance *ci = data;
    memset(f, 0, sizeof *f);
    f->suite = ci->suite;
    f->setup_failed = true;
    if (!fixture_expand_spec(f) || !fixture_caps(f))
        return;
    unsigned int missing = ci->c->need_caps & ~f->caps;
    if (missing != 0) {
        f->skip = caps_missing(missing);
        f->setup_failed = false;
        return;
    }
    GError *err = NULL;
    int rc;
    if (ci->c->level == LEVEL_BACKEND)
        rc = procreg_backend_open(f->spec, NULL, &f->backend, &err);
    else
        rc = procreg_open(f->spec, &f->reg, &err);
    if (rc != 0) {
        g_test_fail_printf("opening \"%s\" failed: %d (%s): %s", f->spec, rc,
                           procreg_strerror(rc),
                           err != NULL ? err->message : "(no GError)");
        g_clear_error(&err);
        return;
    }
    f->setup_failed = false;
}

static void fixture_teardown(gpointer fixture, gconstpointer data)
{
    Fixture *f = fixture;
    (void)data;
    procreg_close(f->reg);
    f->reg = NULL;
    if (f->backend != NULL)
        procreg_backend_close(f->backend);
    f->backend = NULL;
    if (f->tmpdir != NULL)
        rm_rf(f->tmpdir);
    g_free(f->tmpdir);
    g_free(f->spec);
}

static void fixture_run(gpointer fixture, gconstpointer data)
{
    Fixture *f = fixture;
    const CaseInstance *ci = data;
    if (f->setup_failed)
        return; /* setup has failed the case with the reason */
    if (f->skip != NULL) {
        g_test_skip(f->skip);
        return;
    }
    ci->c->func(f);
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

GVariant *cx_parsed(const char *text)
{
    GError *err = NULL;
    GVariant *v = g_variant_parse(NULL, text, NULL, NULL, &err);
    if (v == NULL) {
        /* A bug in the suite itself, not in the backend. */
        g_error("bad GVariant text in the suite: %s: %s", text, err->message);
    }
    return v; /* not floating */
}

/* An a{sv} dictionary from GVariant text, non-floating. */
GVariant *cx_md(const char *text)
{
    GVariant *v = cx_parsed(text);
    if (!g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT))
        g_error("suite metadata is not a{sv}: %s", text);
    return v;
}

bool cx_owner_eq(const procreg_owner *a, const procreg_owner *b)
{
    return a->pid == b->pid && a->start_time == b->start_time;
}

bool cx_variant_eq0(GVariant *a, GVariant *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return g_variant_equal(a, b);
}

char *cx_describe(GVariant *v)
{
    return v != NULL ? g_variant_print(v, TRUE) : g_strdup("(null)");
}

/* "ns/name ns/name ..." for messages and comparisons. */
char *cx_entries_describe(const procreg_entry *v, size_t n)
{
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < n; i++)
        g_string_append_printf(s, "%s%s/%s", i ? " " : "",
                               v[i].ns ? v[i].ns : "(null)",
                               v[i].name ? v[i].name : "(null)");
    return g_string_free(s, FALSE);
}

static int cmp_nsname(const procreg_entry *a, const procreg_entry *b)
{
    int c = strcmp(a->ns, b->ns);
    return c != 0 ? c : strcmp(a->name, b->name);
}

/* Check a listed array: ns and name set, sorted, strictly (no dups). */
void cx_check_list_shape(const EntryList *l)
{
    if (l->n == 0 && l->v != NULL)
        FAIL("an empty result must have a NULL array");
    if (l->n > 0 && l->v == NULL)
        FAIL("%zu entries but a NULL array", l->n);
    for (size_t i = 0; i < l->n; i++) {
        CHECK_MSG(l->v[i].ns != NULL && l->v[i].name != NULL,
                  "entry %zu of a list lacks its namespace or name", i);
        CHECK_MSG(l->v[i].revision > 0, "entry %zu has revision 0", i);
        if (i > 0 && cmp_nsname(&l->v[i - 1], &l->v[i]) >= 0) {
            g_autofree char *d = cx_entries_describe(l->v, l->n);
            FAIL("list not sorted by (namespace, name) or has duplicates: "
                 "%s", d);
        }
    }
}


/* A live child that waits to be killed. */
pid_t cx_sleeping_child(void)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* Dies with the suite, even when a case aborts: an orphan would
         * hold the test runner's output pipe open. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        for (;;)
            pause();
    }
    return pid;
}

void cx_reap(pid_t pid)
{
    int status;
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

/* Register with the calling process as owner; no current, no GError. */
int cx_quick_register(procreg *reg, const char *ns, const char *name,
                          const char *md_text)
{
    g_autoptr(GVariant) m = md_text != NULL ? cx_md(md_text) : NULL;
    return procreg_register(reg, ns, name, NULL, m, NULL, NULL);
}

/* ------------------------------------------------------------------------ */
/* Children: the other process of the multiprocess cases                    */

char **cx_child_argv(const char *mode, const char *spec)
{
    GPtrArray *argv = g_ptr_array_new();
    g_ptr_array_add(argv, g_file_read_link("/proc/self/exe", NULL));
    g_ptr_array_add(argv, g_strdup("--compliance-child"));
    g_ptr_array_add(argv, g_strdup(mode));
    for (guint i = 0; modules != NULL && i < modules->len; i++) {
        g_ptr_array_add(argv, g_strdup("--backend-module"));
        g_ptr_array_add(argv, g_strdup(modules->pdata[i]));
    }
    g_ptr_array_add(argv, g_strdup(spec));
    g_ptr_array_add(argv, NULL);
    return (char **)g_ptr_array_free(argv, FALSE);
}

/* argv: PROGRAM --compliance-child MODE [--backend-module PATH]... SPEC */
int compliance_child_main(int argc, char **argv)
{
    if (argc < 3 || strcmp(argv[1], "--compliance-child") != 0)
        return -1;
    const char *mode = argv[2];
    GError *err = NULL;
    int i = 3;
    for (; i + 1 < argc && strcmp(argv[i], "--backend-module") == 0; i += 2) {
        if (procreg_backend_load_module(argv[i + 1], NULL, &err) != 0) {
            fprintf(stderr, "child: loading %s: %s\n", argv[i + 1],
                    err->message);
            return 2;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "child: no spec\n");
        return 2;
    }
    procreg *reg = NULL;
    if (procreg_open(argv[i], &reg, &err) != 0) {
        fprintf(stderr, "child: open %s: %s\n", argv[i], err->message);
        return 1;
    }
    int status;
    if (strcmp(mode, "basic") == 0)
        status = cx_basic_child(reg);
    else if (strcmp(mode, "owner") == 0)
        status = cx_owner_child(reg);
    else if (strcmp(mode, "lock") == 0)
        status = cx_lock_child(reg);
    else if (strcmp(mode, "groups") == 0)
        status = cx_groups_child(reg);
    else {
        fprintf(stderr, "child: unknown mode %s\n", mode);
        status = 2;
    }
    procreg_close(reg);
    return status;
}

/* ------------------------------------------------------------------------ */
/* Registration                                                             */

static const Case cases[] = {
    {"register", case_register_basic, 0, LEVEL_REGISTRY},
    {"register_exists", case_register_exists, 0, LEVEL_REGISTRY},
    {"register_other_owner", case_register_other_owner, 0, LEVEL_REGISTRY},
    {"register_not_alive", case_register_notalive, 0, LEVEL_REGISTRY},
    {"reregister", case_reregister, 0, LEVEL_REGISTRY},
    {"lookup_not_found", case_lookup_notfound, 0, LEVEL_REGISTRY},
    {"lookup_entry_lifetime", case_lookup_entry_lifetime, 0, LEVEL_REGISTRY},
    {"unregister", case_unregister, 0, LEVEL_REGISTRY},
    {"update_replace", case_update_replace, 0, LEVEL_REGISTRY},
    {"update_merge", case_update_merge, 0, LEVEL_REGISTRY},
    {"list", case_list, 0, LEVEL_REGISTRY},
    {"count", case_count, 0, LEVEL_REGISTRY},
    {"find", case_find, 0, LEVEL_REGISTRY},
    {"health", case_health, 0, LEVEL_REGISTRY},
    {"stats", case_stats, 0, LEVEL_REGISTRY},
    {"prepared_keys", case_prepared_keys, 0, LEVEL_REGISTRY},
    {"names", case_names, 0, LEVEL_REGISTRY},
    {"default_namespace", case_default_namespace, 0, LEVEL_REGISTRY},
    {"metadata_types", case_metadata_types, 0, LEVEL_REGISTRY},
    {"metadata_wrong_type", case_metadata_wrong_type, 0, LEVEL_REGISTRY},
    {"revision_order", case_revision_order, 0, LEVEL_REGISTRY},
    {"namespace_isolation", case_namespace_isolation, 0, LEVEL_REGISTRY},
    {"many_entries", case_many_entries, 0, LEVEL_REGISTRY},
    {"concurrent_register_race", case_concurrent_register_race, 0,
     LEVEL_REGISTRY},
    {"concurrent_readers_writers", case_concurrent_readers_writers, 0,
     LEVEL_REGISTRY},
    {"persistence", case_persistence, PROCREG_CAP_PERSISTENT, LEVEL_REGISTRY},
    {"multiprocess", case_multiprocess, PROCREG_CAP_MULTIPROCESS,
     LEVEL_REGISTRY},
    {"owner_rule", case_owner_rule, 0, LEVEL_REGISTRY},
    {"owner_rule_multiprocess", case_owner_rule_multiprocess,
     PROCREG_CAP_MULTIPROCESS, LEVEL_REGISTRY},
    {"dead_holder", case_dead_holder, 0, LEVEL_REGISTRY},
    {"lock_basic", case_lock_basic, 0, LEVEL_REGISTRY},
    {"lock_fifo", case_lock_fifo, 0, LEVEL_REGISTRY},
    {"lock_processes", case_lock_processes, PROCREG_CAP_MULTIPROCESS,
     LEVEL_REGISTRY},
    {"lock_holder_killed", case_lock_holder_killed, PROCREG_CAP_MULTIPROCESS,
     LEVEL_REGISTRY},
    {"lock_waiter_killed", case_lock_waiter_killed, PROCREG_CAP_MULTIPROCESS,
     LEVEL_REGISTRY},
    {"start_once_threads", case_start_once_threads, 0, LEVEL_REGISTRY},
    {"select", case_select, 0, LEVEL_REGISTRY},
    {"namespace_meta", case_namespace_meta, 0, LEVEL_REGISTRY},
    {"namespace_meta_processes", case_namespace_meta_processes,
     PROCREG_CAP_MULTIPROCESS, LEVEL_REGISTRY},
    {"start_once_processes", case_start_once_processes,
     PROCREG_CAP_MULTIPROCESS, LEVEL_REGISTRY},
    {"groups_basics", case_groups_basics, PROCREG_CAP_GROUPS, LEVEL_REGISTRY},
    {"groups_bad_input", case_groups_bad_input, PROCREG_CAP_GROUPS,
     LEVEL_REGISTRY},
    {"groups_side_by_side", case_groups_side_by_side, PROCREG_CAP_GROUPS,
     LEVEL_REGISTRY},
    {"groups_owner_rule", case_groups_owner_rule, PROCREG_CAP_GROUPS,
     LEVEL_REGISTRY},
    {"groups_owner_death", case_groups_owner_death, PROCREG_CAP_GROUPS,
     LEVEL_REGISTRY},
    {"groups_events", case_groups_events, PROCREG_CAP_GROUPS, LEVEL_REGISTRY},
    {"groups_dispatch", case_groups_dispatch, PROCREG_CAP_GROUPS,
     LEVEL_REGISTRY},
    {"groups_dispatch_churn", case_groups_dispatch_churn, PROCREG_CAP_GROUPS,
     LEVEL_REGISTRY},
    {"groups_churn_count", case_groups_churn_count, PROCREG_CAP_GROUPS,
     LEVEL_REGISTRY},
    {"groups_pick", case_groups_pick, PROCREG_CAP_GROUPS, LEVEL_REGISTRY},
    {"groups_find", case_groups_find, PROCREG_CAP_GROUPS, LEVEL_REGISTRY},
    {"groups_wait", case_groups_wait, PROCREG_CAP_GROUPS, LEVEL_REGISTRY},
    {"groups_namespace_drop", case_groups_namespace_drop, PROCREG_CAP_GROUPS,
     LEVEL_REGISTRY},
    {"groups_multiprocess", case_groups_multiprocess,
     PROCREG_CAP_GROUPS | PROCREG_CAP_MULTIPROCESS, LEVEL_REGISTRY},
    {"resume_position", case_resume_position, 0, LEVEL_REGISTRY},
    {"resume_from_now", case_resume_from_now, 0, LEVEL_REGISTRY},
    {"resume_compacted", case_resume_compacted, 0, LEVEL_REGISTRY},
    {"resume_other_registry", case_resume_other_registry,
     PROCREG_CAP_HISTORY, LEVEL_REGISTRY},
    {"backend_level", case_backend_level, 0, LEVEL_BACKEND},
};

void compliance_add_tests(const char *label, const char *spec)
{
    if (suites == NULL) {
        suites = g_ptr_array_new();
        instances = g_ptr_array_new();
    }
    Suite *s = g_new0(Suite, 1);
    s->label = g_strdup(label);
    s->spec_template = g_strdup(spec);
    g_ptr_array_add(suites, s);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        CaseInstance *ci = g_new0(CaseInstance, 1);
        ci->suite = s;
        ci->c = &cases[i];
        g_ptr_array_add(instances, ci);
        g_autofree char *path = g_strdup_printf("/compliance/%s/%s", label,
                                                cases[i].name);
        g_test_add_vtable(path, sizeof(Fixture), ci, fixture_setup,
                          fixture_run, fixture_teardown);
    }
}

char *compliance_label_for_spec(const char *spec)
{
    g_autofree char *a = replace_all(spec, "@TMPDIR@", "");
    g_autofree char *b = replace_all(a, "@UNIQUE@", "");
    GString *s = g_string_new(NULL);
    for (const char *p = b; *p; p++) {
        char c = g_ascii_isalnum(*p) || *p == '-' ? *p : '_';
        if (c == '_' && (s->len == 0 || s->str[s->len - 1] == '_'))
            continue;
        g_string_append_c(s, c);
    }
    while (s->len > 0 && s->str[s->len - 1] == '_')
        g_string_truncate(s, s->len - 1);
    if (s->len == 0)
        g_string_append(s, "backend");
    return g_string_free(s, FALSE);
}

void compliance_add_module(const char *path)
{
    if (modules == NULL)
        modules = g_ptr_array_new();
    g_ptr_array_add(modules, g_strdup(path));
}
