/* Format 5's owner rows (backends/lmdb/format.c, liveness.c) from the
 * side of a user sharing a registry across processes (review of the
 * merge 5140fe8): a reused pid with another start time, a namespace that
 * is a prefix of another, namespaces whose UTF-8 sorts just below the
 * rows' 0xfd, a new boot dropping rows over many pages, a dead owner's
 * format 4 file migrated and reaped, and the rows a live owner leaves
 * behind in namespaces it dropped.  Owners that must die are real child
 * processes (this program with --sleep), killed with SIGKILL; fake owners
 * (this pid with another start time) are written raw. */
#include "owner-rows-util.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

typedef lt_fixture Fixture;

static const char *self_exe;

static void put_row(raw_db *r, const procreg_owner *o, const char *ns)
{
    char buf[LT_MAIN_KEY_MAX];
    MDB_val row = row_of(o, ns, buf), none = {0, ""};
    g_assert_cmpint(mdb_put(r->txn, raw_dbi(r, "owners", 0), &row, &none, 0),
                    ==, 0);
}

static unsigned int usize(guint64 x)
{
    unsigned int n = 0;
    for (; x != 0; x >>= 8)
        n++;
    return n;
}

/* An entry of version 2 (backends/lmdb/lmdb-codec.c), no metadata, as
 * procreg writes it, and its owner row. */
static void put_entry_v2(raw_db *r, const char *ns, const char *name,
                         const procreg_owner *o, guint64 revision)
{
    guint8 v[40], *p = v;
    guint64 pid = (guint64)o->pid;
    *p++ = 2;
    *p++ = 0;
    *p++ = (guint8)(usize(pid) | usize(o->start_time) << 4);
    *p++ = (guint8)(0 | usize(revision) << 4); /* registered_at 0 */
    for (guint64 x = pid; x != 0; x >>= 8)
        *p++ = (guint8)x;
    for (guint64 x = o->start_time; x != 0; x >>= 8)
        *p++ = (guint8)x;
    for (guint64 x = revision; x != 0; x >>= 8)
        *p++ = (guint8)x;
    char key[LT_MAIN_KEY_MAX];
    size_t n = (size_t)g_snprintf(key, sizeof key, "%s%c%s", ns, 0, name);
    raw_put(r, "entries", key, n, v, (size_t)(p - v));
    put_row(r, o, ns);
}

/* ---- a reused pid ---- */

/* Entries of this pid with other start times (a process that had this
 * pid before: dead), version 2 and version 1, beside this process's own
 * in the same namespace: the reap removes exactly the dead ones and
 * their rows; this process's entry and row stay. */
static void test_pid_reuse(Fixture *f, gconstpointer data)
{
    (void)data;
    procreg_owner self;
    procreg_owner_self(&self);
    procreg *reg = lt_open(f->spec);
    reg_for(reg, "s", "keep", &self);
    procreg_close(reg);
    procreg_owner before = {self.pid, self.start_time - 1},
                  after = {self.pid, self.start_time + 1};
    raw_db r;
    raw_open(&r, f->path, true);
    g_assert_true(r.v5);
    put_entry_v2(&r, "s", "old", &before, 50);
    put_entry_v2(&r, "u", "old", &before, 51);
    put_entry_v2(&r, "s", "later", &after, 52);
    lt_raw_put_entry_v1(&r, "s", "v1", (guint32)after.pid, after.start_time,
                        53);
    raw_close(&r, true);

    reg = open_and_reap(f->spec, 4);
    procreg_owner got;
    g_assert_cmpint(procreg_lookup(reg, "s", "keep", &got, NULL), ==, 0);
    g_assert_cmpint(got.start_time, ==, self.start_time);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, NULL, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    procreg_close(reg);
    raw_open(&r, f->path, false);
    g_assert_true(raw_has(&r, "entries", "s", "keep"));
    g_assert_false(raw_has(&r, "entries", "s", "old"));
    g_assert_false(raw_has(&r, "entries", "u", "old"));
    g_assert_false(raw_has(&r, "entries", "s", "later"));
    g_assert_false(raw_has(&r, "entries", "s", "v1"));
    g_assert_true(has_row(&r, &self, "s"));
    g_assert_false(has_row(&r, &before, "s"));
    g_assert_false(has_row(&r, &before, "u"));
    g_assert_false(has_row(&r, &after, "s"));
    g_assert_cmpuint(raw_count(&r, "owners"), ==, 1);
    raw_close(&r, false);
}

/* ---- a namespace that is a prefix of another ---- */

/* A dead owner's row for "a" is walked as the key range "a\0": its
 * entries in "ab" and "a b" (whose rows are missing) are not in that
 * range and stay (answered absent), its entry in "a" goes; a live owner's
 * "ab" entry and row are untouched. */
static void test_prefix_namespace(Fixture *f, gconstpointer data)
{
    (void)data;
    procreg_owner o, self;
    procreg_owner_self(&self);
    pid_t pid = spawn_owner(self_exe, &o);
    procreg *reg = lt_open(f->spec);
    reg_for(reg, "a", "x", &o);
    reg_for(reg, "ab", "y", &o);
    reg_for(reg, "a b", "y", &o);
    reg_for(reg, "ab", "live", &self);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, true);
    delete_row(&r, &o, "ab");
    delete_row(&r, &o, "a b");
    raw_close(&r, true);
    kill_owner(pid);
    reg = open_and_reap(f->spec, 1);
    procreg_close(reg);
    raw_open(&r, f->path, false);
    g_assert_false(raw_has(&r, "entries", "a", "x"));
    g_assert_true(raw_has(&r, "entries", "ab", "y"));
    g_assert_true(raw_has(&r, "entries", "a b", "y"));
    g_assert_true(raw_has(&r, "entries", "ab", "live"));
    g_assert_false(has_row(&r, &o, "a"));
    g_assert_true(has_row(&r, &self, "ab"));
    raw_close(&r, false);
}

/* ---- namespaces just below the rows' prefix ---- */

/* U+10FFFD (F4 8F BF BD) is the highest byte sequence a name may begin
 * with; rows (0xfd) sort right after.  Lists, counts and the namespace
 * list see every entry and no row, before and after a dead owner's
 * entries there are reaped. */
static void test_high_namespace(Fixture *f, gconstpointer data)
{
    (void)data;
    static const char *const nss[] = {"a", "\xef\xbf\xbd",
                                      "\xf4\x8f\xbf\xbd",
                                      "\xf4\x8f\xbf\xbd\xf4\x8f\xbf\xbd"};
    procreg_owner o, self;
    procreg_owner_self(&self);
    pid_t pid = spawn_owner(self_exe, &o);
    procreg *reg = lt_open(f->spec);
    for (size_t i = 0; i < G_N_ELEMENTS(nss); i++) {
        reg_for(reg, nss[i], "\xf4\x8f\xbf\xbd", &self);
        reg_for(reg, nss[i], "dead", &o);
    }
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, NULL, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 8);
    g_assert_cmpint(procreg_count(reg, nss[2], &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 2);
    procreg_namespace_info *infos = NULL;
    g_assert_cmpint(procreg_namespace_list(reg, &infos, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, G_N_ELEMENTS(nss));
    for (size_t i = 0; i < n; i++) {
        g_assert_cmpstr(infos[i].ns, ==, nss[i]);
        g_assert_cmpuint(infos[i].entries, ==, 2);
    }
    procreg_namespace_info_free(infos, n);
    procreg_entry *all = NULL;
    g_assert_cmpint(procreg_list(reg, NULL, &all, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 8);
    procreg_entries_free(all, n);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, false);
    g_assert_cmpuint(raw_count(&r, "owners"), ==, 2 * G_N_ELEMENTS(nss));
    raw_close(&r, false);

    kill_owner(pid);
    reg = open_and_reap(f->spec, G_N_ELEMENTS(nss));
    g_assert_cmpint(procreg_count(reg, NULL, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 4);
    g_assert_cmpint(procreg_namespace_list(reg, &infos, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, G_N_ELEMENTS(nss));
    for (size_t i = 0; i < n; i++)
        g_assert_cmpuint(infos[i].entries, ==, 1);
    procreg_namespace_info_free(infos, n);
    procreg_close(reg);
    raw_open(&r, f->path, false);
    for (size_t i = 0; i < G_N_ELEMENTS(nss); i++) {
        g_assert_false(has_row(&r, &o, nss[i]));
        g_assert_true(has_row(&r, &self, nss[i]));
        g_assert_false(raw_has(&r, "entries", nss[i], "dead"));
    }
    raw_close(&r, false);
}

/* ---- a new boot drops every row ---- */

/* Rows of 3000 owners (several pages) and entries of a few: a writer of
 * another boot removes every entry and every row (a cursor deleting its
 * way across pages), and keeps the meta records. */
static void test_boot_drops_rows(Fixture *f, gconstpointer data)
{
    (void)data;
    procreg_owner self;
    procreg_owner_self(&self);
    procreg *reg = lt_open(f->spec);
    reg_for(reg, "k", "self", &self);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, true);
    for (guint i = 0; i < 3000; i++) {
        procreg_owner o = {(pid_t)(100000 + i), 12345 + i};
        if (i % 100 == 0)
            {
                char name[16];
                g_snprintf(name, sizeof name, "e%u", i);
                put_entry_v2(&r, "k", name, &o, i + 1);
            }
        else
            put_row(&r, &o, i % 2 ? "k" : "other");
    }
    raw_put(&r, "meta", "boot_id", 7,
            "00000000-0000-0000-0000-000000000000", 36);
    raw_close(&r, true);
    raw_open(&r, f->path, false);
    g_assert_cmpuint(raw_count(&r, "owners"), ==, 3001);
    raw_close(&r, false);

    reg = lt_open(f->spec);
    size_t n = 1;
    g_assert_cmpint(procreg_count(reg, NULL, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 0);
    procreg_close(reg);
    raw_open(&r, f->path, false);
    g_assert_cmpuint(raw_count(&r, "owners"), ==, 0);
    g_assert_cmpuint(raw_count(&r, "entries"), ==, 0);
    MDB_val fv = raw_get(&r, "meta", "format", 6);
    g_assert_cmpmem(fv.mv_data, fv.mv_size, "procreg-lmdb 5", 14);
    raw_close(&r, false);
}

/* ---- a format 4 file of a dead owner ---- */

/* A dead owner's entries in a format 4 file (its per-entry "owners"
 * index): the writer that migrates it builds the rows, and the sweep
 * reaps the owner through them. */
static void test_migrate_dead(Fixture *f, gconstpointer data)
{
    int format = GPOINTER_TO_INT(data);
    procreg_owner o, self;
    procreg_owner_self(&self);
    pid_t pid = spawn_owner(self_exe, &o);
    procreg *reg = lt_open(f->spec);
    reg_for(reg, "a", "x", &o);
    reg_for(reg, "b", "y", &o);
    reg_for(reg, "a", "live", &self);
    procreg_close(reg);
    lt_raw_downgrade(f->path, format);
    if (format <= 2) {
        raw_db r;
        raw_open(&r, f->path, true);
        lt_raw_put_entry_v1(&r, "c", "v1", (guint32)o.pid, o.start_time, 77);
        raw_close(&r, true);
    }
    kill_owner(pid);
    reg = open_and_reap(f->spec, format <= 2 ? 3 : 2);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, NULL, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, false);
    g_assert_true(r.v5);
    g_assert_cmpuint(raw_count(&r, "entries"), ==, 1);
    g_assert_cmpuint(raw_count(&r, "owners"), ==, 1);
    g_assert_true(has_row(&r, &self, "a"));
    raw_close(&r, false);
}

/* ---- rows a live owner leaves behind ---- */

/* A long-lived process (a test runner, a supervisor that makes a
 * namespace per job, process 1's namespace settings) registers in
 * namespaces that it then drops: the namespaces are gone, and so should
 * their rows be.  On main (5140fe8) every row stays while the owner
 * lives: a drop removes entries only (scan.c drop_step), so the rows grow
 * with every namespace ever used, and every open's sweep reads them. */
static void test_drop_leaves_rows(Fixture *f, gconstpointer data)
{
    (void)data;
    procreg *reg = lt_open(f->spec);
    procreg_owner self;
    procreg_owner_self(&self);
    for (int i = 0; i < 50; i++) {
        char *ns = NULL;
        g_assert_cmpint(procreg_namespace_new_test(reg, &ns, NULL), ==, 0);
        reg_for(reg, ns, "job", &self);
        reg_for(reg, ns, "job2", &self);
        size_t removed = 0;
        g_assert_cmpint(procreg_namespace_drop(reg, ns, &removed, NULL, NULL),
                        ==, 0);
        g_assert_cmpuint(removed, ==, 2);
        g_free(ns);
    }
    reg_for(reg, "kept", "x", &self);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, false);
    g_assert_cmpuint(raw_count(&r, "entries"), ==, 1);
    /* One row: "kept".  Main: 51. */
    g_assert_cmpuint(raw_count(&r, "owners"), ==, 1);
    raw_close(&r, false);
}

int main(int argc, char **argv)
{
    self_exe = argv[0];
    if (argc == 2 && strcmp(argv[1], "--sleep") == 0) {
        for (;;)
            pause();
    }
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn, d)                                                      \
    g_test_add(path, Fixture, d, lt_fx_setup, fn, lt_fx_teardown)
    ADD("/lmdb/owner-rows/pid-reuse", test_pid_reuse, NULL);
    ADD("/lmdb/owner-rows/prefix-namespace", test_prefix_namespace, NULL);
    ADD("/lmdb/owner-rows/high-namespace", test_high_namespace, NULL);
    ADD("/lmdb/owner-rows/boot-drops-rows", test_boot_drops_rows, NULL);
    ADD("/lmdb/owner-rows/migrate-dead-4", test_migrate_dead,
        GINT_TO_POINTER(4));
    ADD("/lmdb/owner-rows/migrate-dead-3", test_migrate_dead,
        GINT_TO_POINTER(3));
    ADD("/lmdb/owner-rows/migrate-dead-1", test_migrate_dead,
        GINT_TO_POINTER(1));
    ADD("/lmdb/owner-rows/drop-leaves-rows", test_drop_leaves_rows, NULL);
    return g_test_run();
}
