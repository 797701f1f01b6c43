/*
 * The coordination commands of the procreg program: lock (run a command
 * holding a lock), select (entries by a filter) and meta (namespace
 * settings).
 */
#include "cli.h"

#include <glib-unix.h>
#include <signal.h>
#include <string.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- lock ---- */

/* In the child, before exec: die with this command.  Otherwise a killed
 * `procreg lock` would release the lock (its ticket goes with it) while
 * COMMAND still runs, and a second COMMAND could start beside it. */
static void die_with_parent(gpointer parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)GPOINTER_TO_INT(parent))
        _exit(127); /* it died before the line above */
}

typedef struct {
    GMainLoop *loop;
    GPid pid;
    int status;
} running;

typedef struct {
    running *run;
    int sig;
} forward;

static void on_command_exit(GPid pid, gint status, gpointer data)
{
    running *r = data;
    r->status = status;
    g_spawn_close_pid(pid);
    g_main_loop_quit(r->loop);
}

static gboolean forward_signal(gpointer data)
{
    forward *f = data;
    kill(f->run->pid, f->sig);
    return G_SOURCE_CONTINUE;
}

/* Run argv until it exits, passing on SIGINT, SIGTERM and SIGHUP; its
 * wait status in *@status.  false when it cannot be run (@error set). */
static bool run_command(char **argv, int *status, GError **error)
{
    running r = {.loop = g_main_loop_new(NULL, FALSE)};
    bool ok = g_spawn_async(NULL, argv, NULL,
                            G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD |
                                G_SPAWN_CHILD_INHERITS_STDIN,
                            die_with_parent, GINT_TO_POINTER(getpid()),
                            &r.pid, error);
    if (ok) {
        forward fw[3] = {{&r, SIGINT}, {&r, SIGTERM}, {&r, SIGHUP}};
        guint ids[3];
        for (int i = 0; i < 3; i++)
            ids[i] = g_unix_signal_add(fw[i].sig, forward_signal, &fw[i]);
        g_child_watch_add(r.pid, on_command_exit, &r);
        g_main_loop_run(r.loop);
        for (int i = 0; i < 3; i++)
            g_source_remove(ids[i]);
        *status = r.status;
    }
    g_main_loop_unref(r.loop);
    return ok;
}

int cmd_lock(procreg *reg, const cli *c)
{
    int timeout_ms;
    if (!want_args(c, 3, G_MAXUINT,
                   "lock NS NAME [--timeout SECONDS] -- COMMAND [ARG...]") ||
        !timeout_ms_of(c, &timeout_ms))
        return EXIT_USAGE;
    procreg_lock_handle *lock = NULL;
    GError *err = NULL;
    int rc = procreg_lock(reg, arg(c, 0), arg(c, 1), timeout_ms, NULL, &lock,
                          &err);
    if (rc != 0)
        return fail(rc, err);
    char **argv = g_new0(char *, c->args->len - 1);
    for (guint i = 2; i < c->args->len; i++)
        argv[i - 2] = c->args->pdata[i];
    int status = 0, exit_status;
    if (run_command(argv, &status, &err)) {
        exit_status = WIFEXITED(status)     ? WEXITSTATUS(status)
                      : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                            : EXIT_OTHER;
    } else {
        fprintf(stderr, "procreg: cannot run '%s': %s\n", argv[0],
                err->message);
        exit_status = g_error_matches(err, G_SPAWN_ERROR, G_SPAWN_ERROR_NOENT)
                          ? 127
                          : 126;
        g_clear_error(&err);
    }
    g_free(argv);
    rc = procreg_unlock(reg, lock, &err);
    if (rc != 0) {
        /* The exclusion did not hold to the end: say so, and fail. */
        fail(rc, err);
        return exit_status != 0 ? exit_status : EXIT_OTHER;
    }
    return exit_status;
}

/* ---- select ---- */

/* For people: the filter with a caret under the byte the error is at. */
static void show_position(const char *text, const GError *err)
{
    const procreg_error_details *d = procreg_error_get_details(err);
    if (d == NULL || d->position < 0 || strchr(text, '\n') != NULL)
        return;
    fprintf(stderr, "  %s\n  %*s^\n", text, d->position, "");
}

int cmd_select(procreg *reg, const cli *c)
{
    if (!want_args(c, 1, 1, "select FILTER [--ns NS] [--count]"))
        return EXIT_USAGE;
    procreg_filter *f = NULL;
    GError *err = NULL;
    int rc = procreg_filter_parse(arg(c, 0), &f, &err);
    if (rc != 0 && c->json)
        return fail(rc, err);
    if (rc != 0) { /* always PROCREG_EINVAL */
        fprintf(stderr, "procreg: %s\n", err->message);
        show_position(arg(c, 0), err);
        g_error_free(err);
        return EXIT_USAGE;
    }
    procreg_entry *v = NULL;
    size_t n = 0;
    rc = procreg_select(reg, c->ns_opt, f, &v, &n, &err);
    procreg_filter_unref(f);
    if (rc != 0)
        return fail(rc, err);
    if (c->count)
        printf(c->json ? "{\"count\":%zu}\n" : "%zu\n", n);
    else
        print_entries(c, v, n);
    procreg_entries_free(v, n);
    return EXIT_OK;
}

/* ---- meta ---- */

static void print_setting(const cli *c, const char *key, GVariant *value)
{
    if (c->json) {
        GString *o = g_string_new(NULL);
        json_variant(o, value);
        printf("%s\n", o->str);
        g_string_free(o, TRUE);
        return;
    }
    char *v = g_variant_print(value, FALSE);
    if (key != NULL)
        printf("%s: %s\n", key, v);
    else
        printf("%s\n", v);
    g_free(v);
}

/* Put each --meta KEY=VALUE into @ns. */
static int put_settings(procreg *reg, const cli *c, const char *ns)
{
    GVariant *settings = NULL;
    if (!build_meta(c, &settings))
        return EXIT_USAGE;
    GVariantIter it;
    const char *key;
    GVariant *value;
    GError *err = NULL;
    int rc = 0;
    g_variant_iter_init(&it, settings);
    while (rc == 0 && g_variant_iter_next(&it, "{&sv}", &key, &value)) {
        rc = procreg_namespace_meta_put(reg, ns, key, value, &err);
        g_variant_unref(value);
    }
    g_variant_unref(settings);
    return rc == 0 ? EXIT_OK : fail(rc, err);
}

int cmd_meta(procreg *reg, const cli *c)
{
    if (!want_args(c, 1, 2, "meta NS [KEY [--delete]] [--meta KEY=VALUE ...]"))
        return EXIT_USAGE;
    const char *ns = arg(c, 0), *key = arg(c, 1);
    if (c->meta->len > 0 && (key != NULL || c->delete_key))
        return usage_error("meta: --meta sets settings; give no KEY and no "
                           "--delete with it");
    if (c->delete_key && key == NULL)
        return usage_error("meta: --delete needs the KEY to delete");
    if (c->meta->len > 0)
        return put_settings(reg, c, ns);
    GError *err = NULL;
    GVariant *value = NULL;
    int rc;
    if (c->delete_key)
        rc = procreg_namespace_meta_delete(reg, ns, key, &err);
    else if (key != NULL)
        rc = procreg_namespace_meta_get(reg, ns, key, &value, &err);
    else
        rc = procreg_namespace_meta_list(reg, ns, &value, &err);
    if (rc != 0)
        return fail(rc, err);
    if (value == NULL)
        return EXIT_OK;
    if (key != NULL || c->json) {
        print_setting(c, NULL, value);
    } else {
        GVariantIter it;
        const char *k;
        GVariant *v;
        g_variant_iter_init(&it, value);
        while (g_variant_iter_next(&it, "{&sv}", &k, &v)) {
            print_setting(c, k, v);
            g_variant_unref(v);
        }
    }
    g_variant_unref(value);
    return EXIT_OK;
}
