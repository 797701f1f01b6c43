/*
 * A dead owner is never registered again.  The lmdb backend reaps a dead
 * holder's entry inside the register that finds it; when the register is
 * for that very owner (it died during the call, after the core saw it
 * alive), the reaping was part of its death, and inserting its new entry
 * would bring the dead process back (the history checker caught it).
 * Forced at the backend level: the owner dies, the backend learns it
 * (its lookups hide the entry), then a register for it arrives.
 */
#include "lmdb-test-util.h"

#define PROCREG_ENABLE_BACKEND 1
#include <procreg/backend.h>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static void test_dead_owner_not_registered(void)
{
    char *dir = lt_tmpdir();
    char *spec = g_strdup_printf("lmdb:path=%s/reg.mdb,durability=nosync", dir);
    procreg_backend *b = NULL;
    g_assert_cmpint(procreg_backend_open(spec, NULL, &b, NULL), ==, 0);
    pid_t parent = getpid(), child = fork();
    g_assert_cmpint(child, >=, 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        for (;;)
            pause();
    }
    procreg_record rec = {.registered_at = g_get_real_time()};
    g_assert_cmpint(procreg_owner_from_pid(child, &rec.owner, NULL), ==, 0);
    procreg_key *key = NULL;
    g_assert_cmpint(procreg_key_new("ns", "k", &key, NULL), ==, 0);
    g_assert_cmpint(procreg_backend_register_entry(b, key, &rec, NULL, NULL),
                    ==, 0);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    /* Until the backend knows the owner dead (its monitor's pidfd): then
     * lookups hide the entry, though it may still be in the file. */
    procreg_owner o;
    gint64 until = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
    while (procreg_backend_lookup(b, key, &o) == 0 &&
           g_get_monotonic_time() < until)
        g_usleep(1000);
    g_assert_cmpint(procreg_backend_lookup(b, key, &o), ==, PROCREG_ENOTFOUND);
    /* A register for the dead owner: refused, and nothing comes back. */
    GError *err = NULL;
    procreg_entry cur = {0};
    int rc = procreg_backend_register_entry(b, key, &rec, &cur, &err);
    if (rc == 0)
        g_error("registered dead process %d again (revision %" G_GUINT64_FORMAT
                ")", (int)child, cur.revision);
    g_assert_cmpint(rc, ==, PROCREG_ENOTALIVE);
    g_assert_nonnull(err);
    g_clear_error(&err);
    procreg_entry_clear(&cur);
    g_assert_cmpint(procreg_backend_lookup(b, key, &o), ==, PROCREG_ENOTFOUND);
    procreg_key_unref(key);
    procreg_backend_close(b);
    lt_rmtree(dir);
    g_free(spec);
    g_free(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/lmdb/owners/dead-not-registered",
                    test_dead_owner_not_registered);
    return g_test_run();
}
