/* A process's view of /proc that hides the test's own processes: for the
 * tests of owners whose /proc/PID/stat cannot be read (hidepid). */
#ifndef PROCREG_TESTS_HIDDEN_PROC_H
#define PROCREG_TESTS_HIDDEN_PROC_H

#include <errno.h>
#include <glib.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <unistd.h>

/* The uid and gid the hidden view runs as ("nobody"). */
#define HIDDEN_ID 65534

/* Enter, in this (forked, single-threaded) child for good, a view of
 * /proc where the test's root processes are hidden: a private mount
 * namespace with /proc mounted hidepid=2, then uid and gid HIDDEN_ID.
 * NULL, or why it cannot be had (the caller skips): not root, a kernel
 * whose proc mounts share one set of options (before 5.8 this mount
 * would hide processes on the host's /proc too), or a container that
 * refuses the mount.  The child dies with its parent. */
static inline char *hidden_proc_enter(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (geteuid() != 0)
        return g_strdup("needs root (to mount /proc hidepid=2)");
    struct utsname u;
    unsigned major = 0, minor = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%u.%u", &major, &minor) != 2 ||
        major < 5 || (major == 5 && minor < 8))
        return g_strdup_printf("kernel %s: /proc options are per mount only "
                               "from 5.8", u.release);
    if (unshare(CLONE_NEWNS) != 0)
        return g_strdup_printf("unshare(CLONE_NEWNS): %s", g_strerror(errno));
    /* Source and type are ignored here; named, for valgrind's check. */
    if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0)
        return g_strdup_printf("making / private: %s", g_strerror(errno));
    if (mount("proc", "/proc", "proc", 0, "hidepid=2") != 0)
        return g_strdup_printf("mounting /proc hidepid=2: %s",
                               g_strerror(errno));
    if (setgroups(0, NULL) != 0 || setgid(HIDDEN_ID) != 0 ||
        setuid(HIDDEN_ID) != 0)
        g_error("dropping to uid %d: %s", HIDDEN_ID, g_strerror(errno));
    /* Our parent (root) must be out of sight now, or the test proves
     * nothing. */
    char path[64];
    g_snprintf(path, sizeof path, "/proc/%d/stat", (int)getppid());
    if (access(path, R_OK) == 0)
        g_error("hidepid=2 did not hide %s", path);
    return NULL;
}

#endif
