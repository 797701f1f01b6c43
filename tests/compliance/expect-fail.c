/*
 * Shows that the compliance suite fails loudly: runs
 *   PROGRAM ARGS... --tap
 * and succeeds only when PROGRAM exits (not crashes) with a non-zero
 * status and reports each case named by --case as "not ok".
 *
 *   expect-fail --case register_exists [--case ...] -- PROGRAM ARGS...
 */
#include <glib.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    g_autoptr(GPtrArray) cases = g_ptr_array_new();
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--case") == 0 && i + 1 < argc) {
            g_ptr_array_add(cases, argv[++i]);
        } else {
            fprintf(stderr, "usage: %s --case NAME... -- PROGRAM ARGS...\n",
                    argv[0]);
            return 2;
        }
    }
    if (i + 1 >= argc || cases->len == 0) {
        fprintf(stderr, "usage: %s --case NAME... -- PROGRAM ARGS...\n",
                argv[0]);
        return 2;
    }
    g_autoptr(GPtrArray) child = g_ptr_array_new();
    for (int j = i + 1; j < argc; j++)
        g_ptr_array_add(child, argv[j]);
    g_ptr_array_add(child, (char *)"--tap");
    g_ptr_array_add(child, NULL);

    g_autofree char *out = NULL;
    g_autofree char *err_out = NULL;
    int status = 0;
    GError *error = NULL;
    if (!g_spawn_sync(NULL, (char **)child->pdata, NULL, G_SPAWN_DEFAULT,
                      NULL, NULL, &out, &err_out, &status, &error)) {
        fprintf(stderr, "cannot run %s: %s\n", argv[i + 1], error->message);
        g_error_free(error);
        return 1;
    }
    printf("%s", out);
    fprintf(stderr, "%s", err_out);

    int failures = 0;
    if (!WIFEXITED(status)) {
        fprintf(stderr, "FAIL: the suite did not exit normally (signal %d): "
                "a contract violation must fail cases, not crash\n",
                WIFSIGNALED(status) ? WTERMSIG(status) : -1);
        return 1;
    }
    if (WEXITSTATUS(status) == 0) {
        fprintf(stderr, "FAIL: the suite passed against a broken backend\n");
        failures++;
    }
    g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
    guint ok_lines = 0;
    for (char **l = lines; *l; l++)
        ok_lines += g_str_has_prefix(*l, "ok ");
    if (ok_lines == 0) {
        fprintf(stderr, "FAIL: no case passed: the suite did not really "
                "run\n");
        failures++;
    }
    for (guint c = 0; c < cases->len; c++) {
        g_autofree char *needle = g_strdup_printf("/%s",
                                                  (char *)cases->pdata[c]);
        bool seen = false;
        for (char **l = lines; *l && !seen; l++) {
            if (!g_str_has_prefix(*l, "not ok "))
                continue;
            const char *hit = strstr(*l, needle);
            seen = hit != NULL &&
                   (hit[strlen(needle)] == '\0' || hit[strlen(needle)] == ' ');
        }
        if (!seen) {
            fprintf(stderr, "FAIL: case %s was not reported as failed\n",
                    (char *)cases->pdata[c]);
            failures++;
        }
    }
    if (failures == 0)
        printf("# the suite failed as expected (exit status %d)\n",
               WEXITSTATUS(status));
    return failures == 0 ? 0 : 1;
}
