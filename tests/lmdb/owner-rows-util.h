/* Owner processes and owner rows for the lmdb tests of reaping
 * (test-reap.c, test-owner-rows.c): owners that must die are real child
 * processes (the test program run with --sleep), killed with SIGKILL. */
#ifndef PROCREG_TEST_OWNER_ROWS_UTIL_H
#define PROCREG_TEST_OWNER_ROWS_UTIL_H

#include "lmdb-raw.h"
#include "lmdb-test-util.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

/* @exe --sleep, running: an owner that lives until the test kills it;
 * its pid. */
static inline pid_t spawn_owner(const char *exe, procreg_owner *o)
{
    char *argv[] = {(char *)exe, (char *)"--sleep", NULL};
    pid_t pid;
    g_assert_cmpint(posix_spawn(&pid, exe, NULL, NULL, argv, environ), ==,
                    0);
    /* Its start time is known once it runs. */
    while (procreg_owner_from_pid(pid, o, NULL) != 0)
        g_usleep(1000);
    return pid;
}

static inline void kill_owner(pid_t pid)
{
    int status;
    g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
}

static inline void reg_for(procreg *reg, const char *ns, const char *name,
                           const procreg_owner *o)
{
    g_assert_cmpint(procreg_register(reg, ns, name, o, NULL, NULL, NULL), ==,
                    0);
}

/* Open; the monitor's sweep reaps the dead owners found through their
 * rows; wait for @n entries reaped. */
static inline procreg *open_and_reap(const char *spec, gint64 n)
{
    procreg *reg = lt_open(spec);
    gint64 t0 = g_get_monotonic_time();
    while (lt_stat(reg, "reaped") < n &&
           g_get_monotonic_time() - t0 < 10 * G_USEC_PER_SEC)
        g_usleep(1000);
    /* Anything more would be counted by now: the reap is one commit. */
    g_usleep(100 * 1000);
    g_assert_cmpint(lt_stat(reg, "reaped"), ==, n);
    return reg;
}

/* The owner key of @o as the file holds it: pid BE32, start time BE64. */
static inline void owner_key(const procreg_owner *o, char ok[12])
{
    guint32 p = GUINT32_TO_BE((guint32)o->pid);
    guint64 s = GUINT64_TO_BE(o->start_time);
    memcpy(ok, &p, 4);
    memcpy(ok + 4, &s, 8);
}

/* The owner row of (@o, @ns), in @buf. */
static inline MDB_val row_of(const procreg_owner *o, const char *ns,
                             char buf[LT_MAIN_KEY_MAX])
{
    char ok[12];
    owner_key(o, ok);
    /* An entry key of @ns: "ns\0" is enough to find its namespace. */
    MDB_val k = {strlen(ns) + 1, (void *)ns};
    return lt_raw_owner_row(ok, &k, buf);
}

/* Whether the file of @r holds the owner row of (@o, @ns). */
static inline bool has_row(raw_db *r, const procreg_owner *o, const char *ns)
{
    char buf[LT_MAIN_KEY_MAX];
    MDB_val row = row_of(o, ns, buf), v;
    return mdb_get(r->txn, raw_dbi(r, "owners", 0), &row, &v) == 0;
}

/* Delete the owner row of (@o, @ns) from the file of @r (a damaged file:
 * an entry without its row). */
static inline void delete_row(raw_db *r, const procreg_owner *o,
                              const char *ns)
{
    char buf[LT_MAIN_KEY_MAX];
    MDB_val row = row_of(o, ns, buf);
    g_assert_cmpint(mdb_del(r->txn, raw_dbi(r, "owners", 0), &row, NULL), ==,
                    0);
}

#endif
