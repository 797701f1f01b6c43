/*
 * Owner processes for the core's tests: a child that only sleeps until it
 * is killed (or its parent dies), and its kill.
 */
#ifndef PROCREG_TESTS_CHILD_UTIL_H
#define PROCREG_TESTS_CHILD_UTIL_H

#include <glib.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static inline pid_t sleeping_child(void)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        for (;;)
            pause();
    }
    return pid;
}

/* SIGKILL @pid and reap it: once this returns the process is gone. */
static inline void kill_and_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

#endif
