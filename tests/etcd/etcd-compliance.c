/*
 * Runs the backend compliance suite (procreg-compliance) against a real
 * etcd that this program starts on 127.0.0.1 and stops afterwards.
 *
 *   etcd-compliance PROCREG-COMPLIANCE SPEC-TEMPLATE [--etcd-bin=PATH]
 *
 * In SPEC-TEMPLATE, @ENDPOINTS@ becomes the server's URL and @TAG@ a
 * random string for this run; @UNIQUE@ is left for the suite, which makes
 * it unique per case (so every case has a prefix of its own).  Exit 77
 * (skip) without an etcd binary; otherwise the suite's exit status.
 */
#include "etcd-harness.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

static char *replace(const char *s, const char *what, const char *with)
{
    char **parts = g_strsplit(s, what, -1);
    char *r = g_strjoinv(with, parts);
    g_strfreev(parts);
    return r;
}

int main(int argc, char **argv)
{
    etcd_harness_env(argv);
    etcd_harness_args(&argc, argv);
    if (argc != 3) {
        fprintf(stderr, "usage: %s PROCREG-COMPLIANCE SPEC-TEMPLATE "
                        "[--etcd-bin=PATH]\n", argv[0]);
        return 2;
    }
    etcd_cluster c;
    etcd_cluster_start_or_exit(&c, 1);
    char *endpoints = etcd_cluster_endpoints(&c);
    char *tag = etcd_random_tag();
    char *a = replace(argv[2], "@ENDPOINTS@", endpoints);
    char *spec = replace(a, "@TAG@", tag);
    printf("# compliance against etcd at %s: %s\n", endpoints, spec);
    fflush(stdout);
    const char *child[] = {argv[1], "--backend", spec, NULL};
    int status = 0;
    GError *err = NULL;
    gboolean ok = g_spawn_sync(NULL, (char **)child, NULL,
                               G_SPAWN_CHILD_INHERITS_STDIN, NULL, NULL, NULL,
                               NULL, &status, &err);
    int rc;
    if (!ok) {
        fprintf(stderr, "cannot run %s: %s\n", argv[1], err->message);
        g_clear_error(&err);
        rc = 1;
    } else if (WIFEXITED(status)) {
        rc = WEXITSTATUS(status);
    } else {
        fprintf(stderr, "%s died of signal %d\n", argv[1],
                WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        rc = 1;
    }
    etcd_cluster_destroy(&c);
    g_free(a);
    g_free(spec);
    g_free(tag);
    g_free(endpoints);
    return rc;
}
