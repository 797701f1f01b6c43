/*
 * Children of the compliance suite: the program re-executed as a child
 * (cx_child_argv()) with pipes to its stdin and stdout, for the cases that
 * need real processes on a shared backend (owner.c, lock.c, coord.c).
 */
#include "compliance-private.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

bool cx_child_spawn(const char *mode, const char *spec, CxChild *c,
                    GError **error)
{
    g_auto(GStrv) argv = cx_child_argv(mode, spec);
    memset(c, 0, sizeof *c);
    return g_spawn_async_with_pipes(NULL, argv, NULL,
                                    G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                    &c->pid, &c->in, &c->out, NULL, error);
}

static int wait_status(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return status;
}

static void child_close(CxChild *c, bool kill_first)
{
    if (c->pid <= 0)
        return;
    if (kill_first)
        kill(c->pid, SIGKILL);
    close(c->in); /* a child ends when its stdin does */
    c->status = wait_status(c->pid);
    close(c->out);
    g_spawn_close_pid(c->pid);
    c->pid = 0;
}

void cx_child_end(CxChild *c)
{
    child_close(c, false);
}

void cx_child_kill(CxChild *c)
{
    child_close(c, true);
}

char *cx_read_line(int fd, int timeout_ms)
{
    GString *s = g_string_new(NULL);
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        int left = (int)((deadline - g_get_monotonic_time()) / 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char ch;
        if (left <= 0 || poll(&p, 1, left) <= 0 || read(fd, &ch, 1) != 1) {
            g_string_free(s, TRUE);
            return NULL;
        }
        if (ch == '\n')
            return g_string_free(s, FALSE);
        g_string_append_c(s, ch);
    }
}

bool cx_write_line(int fd, const char *line)
{
    g_autofree char *text = g_strconcat(line, "\n", NULL);
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        done += (size_t)n;
    }
    return true;
}
