/*
 * The coordination commands of the procreg program: lock (run a command
 * holding a lock) and select (entries by a filter).
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
