/* Owner processes: who they are and whether they still live. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* What /proc/PID/stat says of a process. */
typedef enum {
    PROC_GONE,   /* no such process, or a zombie (it owns nothing now) */
    PROC_SEEN,   /* running; its start time read */
    PROC_HIDDEN, /* it exists, but its stat cannot be read: /proc mounted
                  * hidepid=1 or 2 hides another user's processes */
} proc_view;

/* What kill() says of @pid, whose stat was not read: it exists (EPERM
 * for another user's process, however /proc is mounted), or not. */
static proc_view by_kill(pid_t pid)
{
    return kill(pid, 0) == 0 || errno == EPERM ? PROC_HIDDEN : PROC_GONE;
}

/* Look @pid up; its start time (clock ticks after boot: field 22 of
 * /proc/PID/stat) in @start when PROC_SEEN.  A stat that cannot be
 * opened or read (ENOENT under hidepid=2, EACCES under hidepid=1) is
 * "gone" only when kill() says so too. */
static proc_view read_start_time(pid_t pid, uint64_t *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return by_kill(pid);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return by_kill(pid);
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and ')': skip to the
     * last ')'; the state (field 3) follows it. */
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return PROC_GONE;
    /* A zombie has exited: it owns nothing any more. */
    if (p[2] == 'Z' || p[2] == 'X')
        return PROC_GONE;
    p++;
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (p == NULL)
            return PROC_GONE;
    }
    *start = g_ascii_strtoull(p + 1, NULL, 10);
    return PROC_SEEN;
}

/* The calling process, read once: getpid() is a system call on glibc
 * >= 2.25 and registering on one's own behalf is the common case.  The
 * pair is published by one release store of `procreg_self_pid` (start time
 * first); a fork() child clears it so the child reads its own. */
PROCREG_INTERNAL uint64_t procreg_self_start;
PROCREG_INTERNAL int procreg_self_pid;

static void self_forget(void)
{
    g_atomic_int_set(&procreg_self_pid, 0);
}

/* The core reads the pair with procreg_owner_self_fast() (internal.h). */
PROCREG_API void procreg_owner_self(procreg_owner *out)
{
    pid_t pid = (pid_t)g_atomic_int_get(&procreg_self_pid);
    if (G_UNLIKELY(pid == 0)) {
        static gsize atfork_once;
        if (g_once_init_enter(&atfork_once)) {
            pthread_atfork(NULL, NULL, self_forget);
            g_once_init_leave(&atfork_once, 1);
        }
        pid = getpid();
        uint64_t start = 0; /* a process always sees its own stat */
        read_start_time(pid, &start);
        __atomic_store_n(&procreg_self_start, start, __ATOMIC_RELAXED);
        g_atomic_int_set(&procreg_self_pid, pid);
    }
    out->pid = pid;
    out->start_time = __atomic_load_n(&procreg_self_start, __ATOMIC_RELAXED);
}

PROCREG_API int procreg_owner_from_pid(pid_t pid, procreg_owner *out,
                                       GError **error)
{
    if (pid <= 0)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "pid %d is not a process id", (int)pid);
    /* A hidden process: existence-only, start time 0 (see procreg.h). */
    uint64_t start = 0;
    if (read_start_time(pid, &start) == PROC_GONE)
        return procreg_set_error(error, PROCREG_ENOTALIVE,
                                 "process %d is not alive", (int)pid);
    out->pid = pid;
    out->start_time = start;
    return 0;
}


PROCREG_API bool procreg_owner_is_alive(const procreg_owner *owner)
{
    if (owner == NULL || owner->pid <= 0)
        return false;
    if (owner->start_time == 0) {
        /* Unknown start time: existence is all we can check. */
        return by_kill(owner->pid) != PROC_GONE;
    }
    /* A hidden process's start time cannot be compared: it lives, as far
     * as anyone here can tell (a reused pid is not detected then). */
    uint64_t start = 0;
    switch (read_start_time(owner->pid, &start)) {
    case PROC_SEEN:
        return start == owner->start_time;
    case PROC_HIDDEN:
        return true;
    default:
        return false;
    }
}
