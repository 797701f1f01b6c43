/*
 * lmdb's group members beyond the compliance suite: the members of a
 * process that died with nobody watching are reaped by the next opener's
 * sweep; a new boot takes every member; a file of format 1 (before groups)
 * gets the group databases when it is opened for writing.
 */
#include "../lmdb/lmdb-test-util.h"

#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

typedef struct {
    char *dir;
    char *path;
    char *spec;
} Fixture;

static void fx_setup(Fixture *f, gconstpointer data)
{
    (void)data;
    f->dir = lt_tmpdir();
    f->path = g_build_filename(f->dir, "reg.mdb", NULL);
    f->spec = g_strdup_printf("lmdb:path=%s,durability=nosync", f->path);
}

static void fx_teardown(Fixture *f, gconstpointer data)
{
    (void)data;
    lt_rmtree(f->dir);
    g_free(f->dir);
    g_free(f->path);
    g_free(f->spec);
}

static size_t members_of(procreg *reg, const char *ns, const char *group)
{
    size_t n = 99;
    g_assert_cmpint(procreg_group_count(reg, ns, group, &n, NULL), ==, 0);
    return n;
}

/* Raw LMDB (only while no procreg handle has the file open). */
typedef struct {
    MDB_env *env;
    MDB_txn *txn;
} raw_db;

static void raw_open(raw_db *r, const char *path)
{
    g_assert_cmpint(mdb_env_create(&r->env), ==, 0);
    mdb_env_set_maxdbs(r->env, 16);
    g_assert_cmpint(mdb_env_open(r->env, path, MDB_NOSUBDIR, 0600), ==, 0);
    g_assert_cmpint(mdb_txn_begin(r->env, NULL, 0, &r->txn), ==, 0);
}

static MDB_dbi raw_dbi(raw_db *r, const char *name)
{
    MDB_dbi dbi;
    g_assert_cmpint(mdb_dbi_open(r->txn, name, 0, &dbi), ==, 0);
    return dbi;
}

static size_t raw_count(raw_db *r, const char *name)
{
    MDB_stat st;
    g_assert_cmpint(mdb_stat(r->txn, raw_dbi(r, name), &st), ==, 0);
    return st.ms_entries;
}

static void raw_close(raw_db *r)
{
    g_assert_cmpint(mdb_txn_commit(r->txn), ==, 0);
    mdb_env_close(r->env);
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
    raw_open(&r, f->path);
    g_assert_cmpuint(raw_count(&r, "members"), ==, 1);
    g_assert_cmpuint(raw_count(&r, "group_ids"), ==, 1);
    g_assert_cmpuint(raw_count(&r, "member_owners"), ==, 1);
    raw_close(&r);
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
    raw_open(&r, f->path);
    MDB_val k = {7, "boot_id"},
            v = {36, "00000000-0000-0000-0000-000000000000"};
    g_assert_cmpint(mdb_put(r.txn, raw_dbi(&r, "meta"), &k, &v, 0), ==, 0);
    raw_close(&r);

    reg = lt_open(f->spec);
    g_assert_cmpuint(members_of(reg, "boot", "g"), ==, 0);
    g_assert_cmpuint(members_of(reg, "boot", "h"), ==, 0);
    g_assert_cmpint(lt_stat(reg, "reaped"), ==, 2);
    procreg_close(reg);
    raw_open(&r, f->path);
    g_assert_cmpuint(raw_count(&r, "members"), ==, 0);
    g_assert_cmpuint(raw_count(&r, "group_ids"), ==, 0);
    g_assert_cmpuint(raw_count(&r, "member_owners"), ==, 0);
    raw_close(&r);
}

/* Format 1, the layout before groups: opened for writing, it gets the
 * group databases and the current format, and keeps its entries. */
static void test_format_1_upgraded(Fixture *f, gconstpointer data)
{
    (void)data;
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(procreg_register(reg, "old", "e", NULL, NULL, NULL, NULL),
                    ==, 0);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path);
    const char *groups_dbs[] = {"members", "group_ids", "member_owners"};
    for (size_t i = 0; i < G_N_ELEMENTS(groups_dbs); i++)
        g_assert_cmpint(mdb_drop(r.txn, raw_dbi(&r, groups_dbs[i]), 1), ==, 0);
    MDB_val k = {6, "format"}, v = {14, "procreg-lmdb 1"};
    g_assert_cmpint(mdb_put(r.txn, raw_dbi(&r, "meta"), &k, &v, 0), ==, 0);
    raw_close(&r);

    reg = lt_open(f->spec);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "old", "e", &o, NULL), ==, 0);
    g_assert_cmpint(procreg_join(reg, "old", "g", NULL, NULL, NULL, NULL), ==,
                    0);
    g_assert_cmpuint(members_of(reg, "old", "g"), ==, 1);
    procreg_close(reg);
    raw_open(&r, f->path);
    MDB_val fv;
    g_assert_cmpint(mdb_get(r.txn, raw_dbi(&r, "meta"), &k, &fv), ==, 0);
    g_assert_cmpmem(fv.mv_data, fv.mv_size, "procreg-lmdb 3", 14);
    raw_close(&r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) \
    g_test_add(path, Fixture, NULL, fx_setup, fn, fx_teardown)
    ADD("/groups/lmdb/dead-joiner-reaped", test_dead_joiner_reaped);
    ADD("/groups/lmdb/previous-boot", test_previous_boot);
    ADD("/groups/lmdb/format-1-upgraded", test_format_1_upgraded);
    return g_test_run();
}
