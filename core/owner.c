/* Owner processes: who they are and whether they still live. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Start time of @pid in clock ticks after boot: field 22 of
 * /proc/PID/stat.  0 when the process does not exist. */
static uint64_t read_start_time(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and ')': skip to the
     * last ')'; the state (field 3) follows it. */
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return 0;
    /* A zombie has exited: it owns nothing any more. */
    if (p[2] == 'Z' || p[2] == 'X')
        return 0;
    p++;
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (p == NULL)
            return 0;
    }
    return g_ascii_strtoull(p + 1, NULL, 10);
}

PROCREG_API void procreg_owner_self(procreg_owner *out)
{
    static pid_t cached_pid;
    static uint64_t cached_start;
    pid_t pid = getpid();
    /* Read /proc once per process (and again after a fork). */
    if (g_atomic_int_get(&cached_pid) != pid) {
        cached_start = read_start_time(pid);
        g_atomic_int_set(&cached_pid, pid);
    }
    out->pid = pid;
    out->start_time = cached_start;
}

PROCREG_API int procreg_owner_from_pid(pid_t pid, procreg_owner *out,
                                       GError **error)
{
    if (pid <= 0)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "pid %d is not a process id", (int)pid);
    uint64_t start = read_start_time(pid);
    if (start == 0)
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
        return kill(owner->pid, 0) == 0 || errno == EPERM;
    }
    return read_start_time(owner->pid) == owner->start_time;
}
