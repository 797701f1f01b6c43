/* Running the procreg program in tests (test-tools.c, test-coord.c). */
#include "cli-harness.h"

#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

char *cli_path;

void rmtree(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *n;
    while (d != NULL && (n = g_dir_read_name(d)) != NULL) {
        char *p = g_build_filename(dir, n, NULL);
        if (g_file_test(p, G_FILE_TEST_IS_DIR) &&
            !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
            rmtree(p);
        else
            g_unlink(p);
        g_free(p);
    }
    if (d != NULL)
        g_dir_close(d);
    g_rmdir(dir);
}

void fx_setup(Fixture *f, gconstpointer data)
{
    f->dir = g_dir_make_tmp("procreg-cli-XXXXXX", NULL);
    g_assert_nonnull(f->dir);
    f->spec = g_strdup_printf("lmdb:path=%s/reg.mdb,durability=nosync",
                              f->dir);
}

void fx_teardown(Fixture *f, gconstpointer data)
{
    rmtree(f->dir);
    g_free(f->dir);
    g_free(f->spec);
}

/* The environment for the program: no PROCREG_BACKEND from outside. */
char **child_env(const char *runtime_dir)
{
    char **env = g_get_environ();
    env = g_environ_unsetenv(env, "PROCREG_BACKEND");
    if (runtime_dir != NULL)
        env = g_environ_setenv(env, "XDG_RUNTIME_DIR", runtime_dir, TRUE);
    return env;
}

/* Run procreg with NULL-terminated @args; its exit status, output in
 * *out and *err (g_free them; either may be NULL). */
int run_env(char **env, char **out, char **err, const char *first,
            va_list ap)
{
    GPtrArray *argv = g_ptr_array_new();
    g_ptr_array_add(argv, cli_path);
    for (const char *a = first; a != NULL; a = va_arg(ap, const char *))
        g_ptr_array_add(argv, (gpointer)a);
    g_ptr_array_add(argv, NULL);
    char *o = NULL, *e = NULL;
    int status = 0;
    GError *error = NULL;
    if (!g_spawn_sync(NULL, (char **)argv->pdata, env, G_SPAWN_DEFAULT, NULL,
                      NULL, &o, &e, &status, &error))
        g_error("running procreg: %s", error->message);
    g_ptr_array_unref(argv);
    if (out != NULL)
        *out = o;
    else
        g_free(o);
    if (err != NULL)
        *err = e;
    else
        g_free(e);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int run(char **out, char **err, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    char **env = child_env(NULL);
    int rc = run_env(env, out, err, first, ap);
    g_strfreev(env);
    va_end(ap);
    return rc;
}

char *self_pid(void)
{
    return g_strdup_printf("%d", (int)getpid());
}


bg start(const char *first, ...)
{
    GPtrArray *argv = g_ptr_array_new();
    g_ptr_array_add(argv, cli_path);
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL; a = va_arg(ap, const char *))
        g_ptr_array_add(argv, (gpointer)a);
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    char **env = child_env(NULL);
    bg b = {0};
    GError *error = NULL;
    if (!g_spawn_async_with_pipes(NULL, (char **)argv->pdata, env,
                                  G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                  &b.pid, NULL, &b.out, &b.err, &error))
        g_error("starting procreg: %s", error->message);
    g_ptr_array_unref(argv);
    g_strfreev(env);
    return b;
}

/* One line from @fd within @ms (NULL on timeout or EOF). */
char *read_line(int fd, int ms)
{
    GString *s = g_string_new(NULL);
    gint64 end = g_get_monotonic_time() + (gint64)ms * 1000;
    for (;;) {
        gint64 left = end - g_get_monotonic_time();
        if (left <= 0)
            break;
        GPollFD p = {fd, G_IO_IN | G_IO_HUP, 0};
        if (g_poll(&p, 1, (int)(left / 1000) + 1) <= 0)
            continue;
        char c;
        if (read(fd, &c, 1) != 1)
            break;
        if (c == '\n')
            return g_string_free(s, FALSE);
        g_string_append_c(s, c);
    }
    g_string_free(s, TRUE);
    return NULL;
}

int finish(bg *b, int sig)
{
    if (sig != 0)
        kill(b->pid, sig);
    int status = 0;
    waitpid(b->pid, &status, 0);
    close(b->out);
    close(b->err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

