/*
 * The helpers of coord-test.h.
 */
#include "coord-test.h"

#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

const char *const thread_specs[3] = {"ghash", "ckht",
                                     "optimized:inner=ghash"};

procreg *open_reg(const char *spec)
{
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0)
        g_error("open %s: %s", spec, err->message);
    return reg;
}

size_t queue_len(procreg *reg, const char *prefix, const char *ns)
{
    g_autofree char *qns = g_strconcat(prefix, ns, NULL);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, qns, &n, NULL), ==, 0);
    return n;
}

bool wait_queue_len(procreg *reg, const char *prefix, const char *ns,
                    size_t want)
{
    gint64 until = g_get_monotonic_time() + (gint64)WAIT_MS * 1000;
    while (queue_len(reg, prefix, ns) != want &&
           g_get_monotonic_time() < until)
        g_usleep(1000);
    return queue_len(reg, prefix, ns) == want;
}

bool backend_built(const char *spec)
{
    g_auto(GStrv) built = procreg_backend_names();
    g_autofree char *backend = g_strndup(spec, strcspn(spec, ":"));
    return g_strv_contains((const char *const *)built, backend);
}

pid_t dead_pid(void)
{
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0)
        _exit(0);
    waitpid(pid, NULL, 0);
    return pid;
}
