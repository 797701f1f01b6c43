/*
 * lmdb's group members beyond the compliance suite: the members of a
 * process that died with nobody watching are reaped by the next opener's
 * sweep; a new boot takes every member; a file of format 1 (before groups)
 * gets the group databases when it is opened for writing.
 */
#include "../lmdb/lmdb-raw.h"
#include "../lmdb/lmdb-test-util.h"

#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

typedef lt_fixture Fixture;

/* Every test here commits with durability=nosync. */
static void fx_setup(Fixture *f, gconstpointer data)
{
    (void)data;
    lt_fixture_init(f, ",durability=nosync");
}

static size_t members_of(procreg *reg, const char *ns, const char *group)
{
    size_t n = 99;
    g_assert_cmpint(procreg_group_count(reg, ns, group, &n, NULL), ==, 0);
    return n;
}

/* A process joins twice and is SIGKILLed; this process had the file
 * closed all along.  The next opener's monitor sweeps the owners in the
 * file, finds it dead, and reaps its members (and only them). */
static void test_dead_joiner_reaped(Fixture *f, gconstpointer data)
{
    (void)data;
    int ready[2];
    g_assert_cmpint(pipe(ready), ==, 0);
    pid_t child = fork();
    if (child == 0) {
        procreg *reg = NULL;
        if (procreg_open(f->spec, &reg, NULL) != 0 ||
            procreg_join(reg, "dj", "g", NULL, NULL, NULL, NULL) != 0 ||
            procreg_join(reg, "dj", "g", NULL, NULL, NULL, NULL) != 0)
            _exit(1);
        if (write(ready[1], "x", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    char c;
    g_assert_cmpint(read(ready[0], &c, 1), ==, 1);
    kill(child, SIGKILL);
    int status;
    waitpid(child, &status, 0);
    close(ready[0]);
    close(ready[1]);

    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(procreg_join(reg, "dj", "g", NULL, NULL, NULL, NULL), ==,
                    0);
    gint64 t0 = g_get_monotonic_time();
    while (lt_stat(reg, "reaped") < 2 &&
           g_get_monotonic_time() - t0 < 5 * G_USEC_PER_SEC)
        g_usleep(1000);
    g_assert_cmpint(lt_stat(reg, "reaped"), ==, 2);
    g_assert_cmpuint(members_of(reg, "dj", "g"), ==, 1);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, false);
    g_assert_cmpuint(raw_count(&r, "members"), ==, 1);
    g_assert_cmpuint(raw_count(&r, "group_ids"), ==, 1);
    g_assert_cmpuint(raw_count(&r, "member_owners"), ==, 1);
    raw_close(&r, false);
}

/* A file of an earlier boot: every member goes, as every entry does. */
static void test_previous_boot(Fixture *f, gconstpointer data)
{
    (void)data;
    if (!g_file_test("/proc/sys/kernel/random/boot_id", G_FILE_TEST_EXISTS)) {
        g_test_skip("no /proc/sys/kernel/random/boot_id");
        return;
    }
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(procreg_join(reg, "boot", "g", NULL, NULL, NULL, NULL), ==,
                    0);
    g_assert_cmpint(procreg_join(reg, "boot", "h", NULL,
                                 g_variant_new_parsed("{'k': <1>}"), NULL,
                                 NULL),
                    ==, 0);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, true);
    raw_put(&r, "meta", "boot_id", 7, "00000000-0000-0000-0000-000000000000",
            36);
    raw_close(&r, true);

    reg = lt_open(f->spec);
    g_assert_cmpuint(members_of(reg, "boot", "g"), ==, 0);
    g_assert_cmpuint(members_of(reg, "boot", "h"), ==, 0);
    g_assert_cmpint(lt_stat(reg, "reaped"), ==, 2);
    procreg_close(reg);
    raw_open(&r, f->path, false);
    g_assert_cmpuint(raw_count(&r, "members"), ==, 0);
    g_assert_cmpuint(raw_count(&r, "group_ids"), ==, 0);
    g_assert_cmpuint(raw_count(&r, "member_owners"), ==, 0);
    raw_close(&r, false);
}

/* Format 1, the layout before groups: opened for writing, it gets the
 * group databases and the current format, and keeps its entries. */
static void test_format_1_upgraded(Fixture *f, gconstpointer data)
{
    (void)data;
    lt_raw_old_file(f->path, 1);
    procreg_owner self;
    procreg_owner_self(&self);
    raw_db r;
    raw_open(&r, f->path, true);
    lt_raw_put_entry_v1(&r, "old", "e", (guint32)self.pid, self.start_time,
                        1);
    raw_close(&r, true);

    procreg *reg = lt_open(f->spec);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "old", "e", &o, NULL), ==, 0);
    g_assert_cmpint(procreg_join(reg, "old", "g", NULL, NULL, NULL, NULL), ==,
                    0);
    g_assert_cmpuint(members_of(reg, "old", "g"), ==, 1);
    procreg_close(reg);
    raw_open(&r, f->path, false);
    MDB_val fv = raw_get(&r, "meta", "format", 6);
    g_assert_cmpmem(fv.mv_data, fv.mv_size, "procreg-lmdb 5", 14);
    g_assert_cmpuint(raw_count(&r, "members"), ==, 1);
    raw_close(&r, false);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) \
    g_test_add(path, Fixture, NULL, fx_setup, fn, lt_fx_teardown)
    ADD("/groups/lmdb/dead-joiner-reaped", test_dead_joiner_reaped);
    ADD("/groups/lmdb/previous-boot", test_previous_boot);
    ADD("/groups/lmdb/format-1-upgraded", test_format_1_upgraded);
    return g_test_run();
}
