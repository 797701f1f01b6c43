/* The file's formats (backends/lmdb/format.c): files of formats 1 to 4
 * migrated to format 5 in one transaction, every record kept and the
 * owner rows built from the entries; an opener that found an older file
 * while another process migrated it before it took the writer lock
 * (forced through the format hook of a build with
 * PROCREG_LMDB_FORMAT_HOOKS); a read-only opener reading an older file in
 * place and following a migration made meanwhile, also with a read
 * transaction begun before the migration whose layout is decided after it
 * (held in the layout hook of the same build), and a read with no reader
 * slot (a read-only mount) keeping writers out; and the files refused at
 * open, unchanged.  Reaping through the owner rows: test-reap.c. */
#include "lmdb-raw.h"
#include "lmdb-test-util.h"

#include "lmdb-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>

typedef lt_fixture Fixture;

static const char *self_exe;
extern char **environ;

/* ---- the format hook (the hooked build calls it) ---- */

/* Set by a test: run once when an opener that found the file to write
 * (older, new, another boot) is about to take the writer lock. */
static void (*must_write_hook)(void *data);
static void *must_write_data;
/* The env of the last opener that ran the hook (for white-box checks). */
static lmdb_env *must_write_env;

void procreg_lmdb_hook_format_must_write(lmdb_env *env)
{
    must_write_env = env;
    void (*fn)(void *) = must_write_hook;
    must_write_hook = NULL;
    if (fn != NULL)
        fn(must_write_data);
}

/* The same build calls the reap hook (test-reap.c uses it). */
void procreg_lmdb_hook_reap_scanned(lmdb_env *env)
{
    (void)env;
}

/* ---- a registry's content, in every database ---- */

/* Entries in two namespaces (metadata on one), a removal (the log has
 * three changes, four with a group), and with @groups a member. */
static void fill(const char *spec, bool groups)
{
    procreg *reg = lt_open(spec);
    g_assert_cmpint(procreg_register(reg, "a", "x", NULL,
                                     g_variant_new_parsed("{'k': <42>}"),
                                     NULL, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_register(reg, "a", "y", NULL, NULL, NULL, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_register(reg, "b", "z", NULL, NULL, NULL, NULL),
                    ==, 0);
    g_assert_cmpint(procreg_unregister(reg, "a", "y", NULL), ==, 0);
    if (groups)
        g_assert_cmpint(procreg_join(reg, "a", "g", NULL, NULL, NULL, NULL),
                        ==, 0);
    procreg_close(reg);
}

static void check_content(procreg *reg, bool groups, bool v1, size_t more)
{
    procreg_entry e = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, "a", "x", &e, NULL), ==, 0);
    gint32 k = 0;
    g_assert_true(g_variant_lookup(e.metadata, "k", "i", &k));
    g_assert_cmpint(k, ==, 42);
    procreg_entry_clear(&e);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "a", "y", &o, NULL), ==,
                    PROCREG_ENOTFOUND);
    size_t n = 0;
    procreg_entry *all = NULL;
    g_assert_cmpint(procreg_list(reg, NULL, &all, &n, NULL), ==, 0);
    for (size_t i = 0; i < n; i++)
        g_test_message("entry %s/%s", all[i].ns, all[i].name);
    procreg_entries_free(all, n);
    g_assert_cmpint(procreg_count(reg, NULL, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, (v1 ? 3 : 2) + more);
    if (groups) {
        g_assert_cmpint(procreg_group_count(reg, "a", "g", &n, NULL), ==, 0);
        g_assert_cmpuint(n, ==, 1);
    }
    if (v1) {
        g_assert_cmpint(procreg_lookup_entry(reg, "old", "v1", &e, NULL), ==,
                        0);
        g_assert_cmpuint(e.revision, ==, 99);
        procreg_entry_clear(&e);
    }
}

static bool has_named(const char *path, const char *name)
{
    raw_db r;
    raw_open(&r, path, false);
    MDB_dbi d;
    bool has = mdb_dbi_open(r.txn, name, 0, &d) == 0;
    raw_close(&r, false);
    return has;
}

/* A file of format @data (1 to 4), with every kind of record, is
 * migrated to format 5 by the first opener that may write: in one
 * transaction, every record kept byte for byte (entries, meta records,
 * the change log, group members), the per-entry owner index replaced by
 * one owner row per (owner, namespace) of the entries (the same rows the
 * format 5 file had), the named databases of the entries, meta records,
 * changes and owners gone; the change log goes on from its last number. */
static void test_migrate(Fixture *f, gconstpointer data)
{
    int format = GPOINTER_TO_INT(data);
    bool groups = format >= 2;
    fill(f->spec, groups);
    char *before = lt_raw_dump(f->path);
    g_assert_nonnull(strstr(before, "owners "));
    g_assert_false(has_named(f->path, "owners"));
    lt_raw_downgrade(f->path, format);
    g_assert_true(has_named(f->path, "owners"));
    g_assert_cmpint(has_named(f->path, "entries"), ==, format <= 3);
    char *old = lt_raw_dump(f->path);
    g_assert_cmpstr(old, ==, before);
    bool v1 = format <= 2;
    if (v1) {
        /* Formats 1 and 2 wrote entries of version 1. */
        procreg_owner self;
        procreg_owner_self(&self);
        raw_db r;
        raw_open(&r, f->path, true);
        g_assert_false(r.v4 || r.v5);
        lt_raw_put_entry_v1(&r, "old", "v1", (guint32)self.pid,
                            self.start_time, 99);
        raw_close(&r, true);
        g_free(old);
        old = lt_raw_dump(f->path);
    }
    size_t txn_before = lt_raw_txnid(f->path);
    guint64 last_change;
    {
        raw_db r;
        raw_open(&r, f->path, false);
        last_change = raw_last_change(&r);
        raw_close(&r, false);
    }
    g_assert_cmpuint(last_change, ==, (groups ? 5 : 4));

    procreg *reg = lt_open(f->spec);
    check_content(reg, groups, v1, 0);
    procreg_close(reg);

    /* One write transaction: the migration. */
    g_assert_cmpuint(lt_raw_txnid(f->path), ==, txn_before + 1);
    char *after = lt_raw_dump(f->path);
    g_assert_cmpstr(after, ==, old);
    g_assert_nonnull(strstr(after, "owners "));
    g_assert_false(has_named(f->path, "entries"));
    g_assert_false(has_named(f->path, "meta"));
    g_assert_false(has_named(f->path, "events"));
    g_assert_false(has_named(f->path, "owners"));
    g_assert_cmpint(has_named(f->path, "members"), ==, TRUE);
    raw_db r;
    raw_open(&r, f->path, false);
    g_assert_true(r.v5);
    MDB_val fv = raw_get(&r, "meta", "format", 6);
    g_assert_cmpmem(fv.mv_data, fv.mv_size, "procreg-lmdb 5", 14);
    raw_close(&r, false);

    /* The log goes on from its last number; the revision counter too. */
    reg = lt_open(f->spec);
    procreg_entry cur = {0};
    g_assert_cmpint(procreg_register(reg, "a", "w", NULL, NULL, &cur, NULL),
                    ==, 0);
    procreg_entry w = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, "a", "w", &w, NULL), ==, 0);
    g_assert_cmpuint(w.revision, >, (groups ? 4 : 3));
    procreg_entry_clear(&w);
    check_content(reg, groups, v1, 1);
    procreg_close(reg);
    raw_open(&r, f->path, false);
    g_assert_cmpuint(raw_last_change(&r), ==, last_change + 1);
    raw_close(&r, false);
    g_free(before);
    g_free(old);
    g_free(after);
}

/* ---- an opener that finds the file migrated when it takes the lock ---- */

/* Another process opens (and so migrates) the file.  posix_spawn(): the
 * hook runs inside procreg_open(), under the lock of the table of open
 * files, which fork()'s handlers take (backends/lmdb/env.c). */
static void migrate_elsewhere(void *data)
{
    const char *spec = data;
    char *argv[] = {(char *)self_exe, "--open", (char *)spec, NULL};
    pid_t pid;
    g_assert_cmpint(posix_spawn(&pid, self_exe, NULL, NULL, argv, environ),
                    ==, 0);
    int status = -1;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
}

/* This opener reads an older file and decides to migrate it; before it
 * takes the writer lock another process migrates it.  Under the lock it
 * must look again: it finds format 5 and writes nothing (a second
 * migration would find no named "entries" or "owners"; one trusting its
 * first look would refuse the file or copy again).  From format @data. */
static void test_concurrent_open(Fixture *f, gconstpointer data)
{
    fill(f->spec, true);
    lt_raw_downgrade(f->path, GPOINTER_TO_INT(data));
    char *old = lt_raw_dump(f->path);
    size_t txn_before = lt_raw_txnid(f->path);
    must_write_hook = migrate_elsewhere;
    must_write_data = f->spec;
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(f->spec, &reg, &err) != 0)
        g_error("opening while another migrates: %s", err->message);
    g_assert_null(must_write_hook); /* the hook ran */
    check_content(reg, true, false, 0);
    procreg_close(reg);
    /* The other process's migration only. */
    g_assert_cmpuint(lt_raw_txnid(f->path), ==, txn_before + 1);
    char *after = lt_raw_dump(f->path);
    g_assert_cmpstr(after, ==, old);
    g_free(old);
    g_free(after);
}

/* Review of 5140fe8 (FAILS on main): the opener of a format 4 file that
 * finds it migrated by another process once it holds the writer lock
 * keeps, in env->old_owners, the handle its first look opened for
 * "owners" in the read transaction it aborted (LMDB closed that handle:
 * its slot is free and is given to the first database opened next, the
 * groups' "members").  The sweep then walks "members" as if it were the
 * old owner index.  A format 5 file has no old index: the handle must be
 * 0. */
static void test_concurrent_open_handle(Fixture *f, gconstpointer data)
{
    (void)data;
    fill(f->spec, true);
    lt_raw_downgrade(f->path, 4);
    must_write_hook = migrate_elsewhere;
    must_write_data = f->spec;
    must_write_env = NULL;
    procreg *reg = lt_open(f->spec);
    g_assert_null(must_write_hook);
    g_assert_nonnull(must_write_env);
    g_test_message("old_owners %u, members %u", must_write_env->old_owners,
                   must_write_env->db_members);
    g_assert_cmpuint(must_write_env->old_owners, ==, 0);
    procreg_close(reg);
}

/* ---- a read-only opener of an older file ---- */

/* The layout hook (the hooked build calls it from
 * procreg_lmdb_layout_slow(), the transaction begun): the thread a test
 * names in lh.hold stops there once until lh.release; the calls of the
 * one named in lh.count are counted.  pthread's, not GMutex:
 * ThreadSanitizer cannot see glib 2.74's. */
static struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    pthread_t hold, count;
    bool holding, held, release, counting;
    int counted;
} lh = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};

void procreg_lmdb_hook_format_layout(lmdb_env *env)
{
    (void)env;
    pthread_t self = pthread_self();
    pthread_mutex_lock(&lh.m);
    if (lh.counting && pthread_equal(lh.count, self))
        lh.counted++;
    if (lh.holding && pthread_equal(lh.hold, self)) {
        lh.holding = false;
        lh.held = true;
        pthread_cond_broadcast(&lh.c);
        while (!lh.release)
            pthread_cond_wait(&lh.c, &lh.m);
    }
    pthread_mutex_unlock(&lh.m);
}

/* A child's part: the file opened read-only (@spec) and used; 'r' said
 * when the parent is to migrate it, and 'm' heard once it has. */
typedef int (*ro_part)(const char *spec, int to_parent, int from_parent);

/* How a child reads the file: through a read-only bind mount of its
 * directory, where LMDB has no lock file and so no reader slot (procreg
 * holds the writer lock's byte shared while a read runs), or as another
 * user who may write the lock file and not the registry (a reader slot,
 * as for any reader). */
typedef enum { RO_MOUNT, RO_OTHER_USER } ro_how;

/* In a child: @part run on the file of @dir read as @how says.  Exit 0,
 * 77 (cannot mount or change user: skip), or a failure. */
static int ro_child(const char *dir, ro_how how, ro_part part, int to_parent,
                    int from_parent)
{
    char *ro = how == RO_MOUNT ? g_build_filename(dir, "ro", NULL)
                               : g_strdup(dir);
    bool ready =
        how == RO_MOUNT
            ? unshare(CLONE_NEWNS) == 0 &&
                  mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
                  mount(dir, ro, NULL, MS_BIND, NULL) == 0 &&
                  mount(NULL, ro, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY,
                        NULL) == 0
            : setgid(65534) == 0 && setuid(65534) == 0;
    if (!ready) {
        lt_say(to_parent, 's');
        return 77;
    }
    char *spec = g_strdup_printf("lmdb:path=%s/reg.mdb", ro);
    int rc = part(spec, to_parent, from_parent);
    g_free(spec);
    g_free(ro);
    return rc;
}

/* A child reading a file of format @format (3 or 4), as @how says, with
 * @part.  The child's 'r' is heard in *@up; false: skipped. */
static bool ro_start(Fixture *f, int format, ro_how how, ro_part part,
                     pid_t *pid, int *up, int *down)
{
    fill(f->spec, true);
    lt_raw_downgrade(f->path, format);
    if (how == RO_MOUNT) {
        char *ro = g_build_filename(f->dir, "ro", NULL);
        g_assert_cmpint(g_mkdir(ro, 0700), ==, 0);
        g_free(ro);
    } else {
        if (geteuid() != 0) {
            g_test_skip("needs root to read as another user");
            return false;
        }
        /* Uid 65534 may write the lock file only. */
        g_assert_cmpint(chmod(f->dir, 0755), ==, 0);
        const char *suffixes[] = {"", "-lock", "-notify"};
        const mode_t modes[] = {0644, 0666, 0644};
        for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
            char *p = g_strconcat(f->path, suffixes[i], NULL);
            g_assert_cmpint(chmod(p, modes[i]), ==, 0);
            g_free(p);
        }
    }
    int to_parent[2], to_child[2];
    g_assert_cmpint(pipe(to_parent), ==, 0);
    g_assert_cmpint(pipe(to_child), ==, 0);
    *pid = fork();
    g_assert_cmpint(*pid, >=, 0);
    if (*pid == 0) {
        /* Only the ends it uses: a parent that dies is heard as EOF. */
        close(to_parent[0]);
        close(to_child[1]);
        _exit(ro_child(f->dir, how, part, to_parent[1], to_child[0]));
    }
    close(to_parent[1]);
    close(to_child[0]);
    *up = to_parent[0];
    *down = to_child[1];
    char c = lt_hear(*up);
    if (c == 's') {
        int status;
        waitpid(*pid, &status, 0);
        g_test_skip(how == RO_MOUNT
                        ? "cannot bind-mount read-only (needs CAP_SYS_ADMIN)"
                        : "cannot change to uid 65534");
        return false;
    }
    g_assert_cmpint(c, ==, 'r');
    g_assert_true(has_named(f->path, "owners")); /* not migrated yet */
    return true;
}

/* The child's exit. */
static void ro_finish(pid_t pid)
{
    int status;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
}

/* Commits after the migration: LMDB reuses the pages the migration freed
 * from the third commit on, which only a reader slot, or procreg's guard
 * of a read with none, keeps from a read of the old snapshot. */
#define CHURN_COMMITS 200

/* This process opens the file (migrating it: one transaction), registers
 * a/new (a second), and registers and unregisters a/churn, every one a
 * commit; NULL when done. */
static gpointer migrate_and_write(gpointer data)
{
    const char *spec = data;
    procreg *reg = lt_open(spec);
    g_assert_cmpint(procreg_register(reg, "a", "new", NULL, NULL, NULL, NULL),
                    ==, 0);
    for (int i = 0; i < CHURN_COMMITS / 2; i++) {
        g_assert_cmpint(procreg_register(reg, "a", "churn", NULL, NULL, NULL,
                                         NULL),
                        ==, 0);
        g_assert_cmpint(procreg_unregister(reg, "a", "churn", NULL), ==, 0);
    }
    procreg_close(reg);
    return NULL;
}

/* A file of format @format read by @part in a child reading as @how
 * says; when the child says 'r', this process migrates it and writes
 * (migrate_and_write()), then says 'm'. */
static void ro_run(Fixture *f, int format, ro_how how, ro_part part)
{
    pid_t pid;
    int up, down;
    if (!ro_start(f, format, how, part, &pid, &up, &down))
        return;
    size_t txn_before = lt_raw_txnid(f->path);
    migrate_and_write(f->spec);
    g_assert_cmpuint(lt_raw_txnid(f->path), ==,
                     txn_before + 2 + CHURN_COMMITS);
    lt_say(down, 'm');
    ro_finish(pid);
    g_assert_false(has_named(f->path, "entries"));
    g_assert_false(has_named(f->path, "owners"));
    close(up);
    close(down);
}

/* Read before and after the parent migrates the file. */
static int read_around(const char *spec, int to_parent, int from_parent)
{
    procreg *reg = lt_open(spec);
    procreg_health h = {0};
    g_assert_cmpint(procreg_health_check(reg, &h, NULL), ==, 0);
    g_assert_nonnull(strstr(h.message, "read-only"));
    procreg_health_clear(&h);
    check_content(reg, true, false, 0);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "a", "new", &o, NULL), ==,
                    PROCREG_ENOTFOUND);
    lt_say(to_parent, 'r');
    g_assert_cmpint(lt_hear(from_parent), ==, 'm');
    /* Migrated meanwhile, and written to since. */
    procreg_entry e = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, "a", "x", &e, NULL), ==, 0);
    g_assert_nonnull(e.metadata);
    procreg_entry_clear(&e);
    g_assert_cmpint(procreg_lookup(reg, "a", "new", &o, NULL), ==, 0);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, NULL, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 3);
    g_assert_cmpint(procreg_group_count(reg, "a", "g", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    procreg_close(reg);
    return 0;
}

static void test_read_only_old(Fixture *f, gconstpointer data)
{
    ro_run(f, GPOINTER_TO_INT(data), RO_MOUNT, read_around);
}

/* The entries a listing found, "ns/name" each, in key order, and a/x's
 * metadata "k" (-1: none). */
typedef struct {
    procreg *reg;
    int rc;
    char *names;
    gint32 x_k;
} listing;

static void list_into(listing *l)
{
    procreg_entry *all = NULL;
    size_t n = 0;
    l->x_k = -1;
    l->rc = procreg_list(l->reg, NULL, &all, &n, NULL);
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < n; i++) {
        g_string_append_printf(s, "%s%s/%s", i ? " " : "", all[i].ns,
                               all[i].name);
        if (strcmp(all[i].ns, "a") == 0 && strcmp(all[i].name, "x") == 0 &&
            all[i].metadata != NULL)
            g_variant_lookup(all[i].metadata, "k", "i", &l->x_k);
    }
    procreg_entries_free(all, n);
    l->names = g_string_free(s, FALSE);
}

/* A listing whose transaction stops in the layout hook. */
static gpointer list_held(gpointer data)
{
    pthread_mutex_lock(&lh.m);
    lh.hold = pthread_self();
    lh.holding = true;
    pthread_mutex_unlock(&lh.m);
    list_into(data);
    return NULL;
}

/* A thread listing into @l, returned once its transaction has begun and
 * stopped in the layout hook. */
static GThread *hold_listing(listing *l)
{
    GThread *t = g_thread_new("held", list_held, l);
    pthread_mutex_lock(&lh.m);
    while (!lh.held)
        pthread_cond_wait(&lh.c, &lh.m);
    pthread_mutex_unlock(&lh.m);
    return t;
}

static void release_listing(GThread *t)
{
    pthread_mutex_lock(&lh.m);
    lh.release = true;
    pthread_cond_broadcast(&lh.c);
    pthread_mutex_unlock(&lh.m);
    g_thread_join(t);
}

/* A read transaction begun before the migration whose layout is decided
 * after it committed, and after a transaction begun later recorded that
 * the file is format 5 (env->main_from): it reads its own snapshot's
 * layout, the named databases of format 3, and finds what was there
 * then.  The later transaction reads format 5 and the entry registered
 * since.  One that trusted the later snapshot's layout would look for
 * the entries in the old snapshot's main database, which holds only the
 * named databases' records, and list none.  The child reads with a
 * reader slot (RO_OTHER_USER), so the parent's commits go on meanwhile. */
static int read_held(const char *spec, int to_parent, int from_parent)
{
    procreg *reg = lt_open(spec);
    check_content(reg, true, false, 0); /* format 3, in place */
    listing before = {.reg = reg};
    GThread *t = hold_listing(&before);
    lt_say(to_parent, 'r');
    g_assert_cmpint(lt_hear(from_parent), ==, 'm');

    /* Begun after the migration; its layout decided first. */
    pthread_mutex_lock(&lh.m);
    lh.count = pthread_self();
    lh.counting = true;
    pthread_mutex_unlock(&lh.m);
    listing after = {.reg = reg};
    list_into(&after);
    pthread_mutex_lock(&lh.m);
    lh.counting = false;
    g_assert_cmpint(lh.counted, >=, 1);
    g_assert_true(lh.held); /* the first still waits */
    pthread_mutex_unlock(&lh.m);
    release_listing(t);

    g_test_message("before: %s; after: %s", before.names, after.names);
    g_assert_cmpint(before.rc, ==, 0);
    g_assert_cmpstr(before.names, ==, "a/x b/z");
    g_assert_cmpint(before.x_k, ==, 42);
    g_assert_cmpint(after.rc, ==, 0);
    g_assert_cmpstr(after.names, ==, "a/new a/x b/z");
    g_assert_cmpint(after.x_k, ==, 42);
    /* And every transaction from now on: format 5. */
    check_content(reg, true, false, 1);
    g_free(before.names);
    g_free(after.names);
    procreg_close(reg);
    return 0;
}

static void test_read_only_held(Fixture *f, gconstpointer data)
{
    ro_run(f, 3, RO_OTHER_USER, read_held);
}

/* On the read-only mount: a listing held in its transaction until 'g',
 * while the parent tries to migrate the file and write; it must list
 * what the file held.  Then, after 'm', the migrated file. */
static int read_guarded(const char *spec, int to_parent, int from_parent)
{
    procreg *reg = lt_open(spec);
    listing held = {.reg = reg};
    GThread *t = hold_listing(&held);
    lt_say(to_parent, 'r');
    g_assert_cmpint(lt_hear(from_parent), ==, 'g');
    release_listing(t);
    g_assert_cmpint(held.rc, ==, 0);
    g_assert_cmpstr(held.names, ==, "a/x b/z");
    g_assert_cmpint(held.x_k, ==, 42);
    g_free(held.names);
    g_assert_cmpint(lt_hear(from_parent), ==, 'm');
    check_content(reg, true, false, 1);
    procreg_close(reg);
    return 0;
}

/* LMDB reads a read-only mount with no lock file, so with no reader slot
 * (it goes on without one by itself).  procreg must know: while such a
 * read runs, its process holds the writer lock's byte of FILE-notify
 * shared (writer.c), so a writer seeing the same file through another
 * mount cannot commit and reuse the pages the read is looking at.
 * Checked where it is decided: the byte is held, and a writer cannot
 * take it, while the read waits; then a writer started meanwhile
 * commits its migration and 201 more, which the read outlived intact. */
static void test_read_only_mount_guarded(Fixture *f, gconstpointer data)
{
    pid_t pid;
    int up, down;
    if (!ro_start(f, 3, RO_MOUNT, read_guarded, &pid, &up, &down))
        return;
    char *notify = g_strconcat(f->path, "-notify", NULL);
    int fd = open(notify, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1};
    g_assert_cmpint(fcntl(fd, F_OFD_GETLK, &fl), ==, 0);
    g_assert_cmpint(fl.l_type, ==, F_RDLCK);
    fl = (struct flock){.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1};
    g_assert_cmpint(fcntl(fd, F_OFD_SETLK, &fl), ==, -1);
    g_assert_cmpint(errno, ==, EAGAIN);
    GThread *w = g_thread_new("writer", migrate_and_write, f->spec);
    lt_say(down, 'g');
    g_thread_join(w);
    lt_say(down, 'm');
    ro_finish(pid);
    g_assert_false(has_named(f->path, "entries"));
    close(fd);
    g_free(notify);
    close(up);
    close(down);
}

/* ---- files refused at open, left as they were ---- */

static char *file_sum(const char *path)
{
    char *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(path, &bytes, &len, NULL));
    char *sum = g_compute_checksum_for_data(G_CHECKSUM_SHA256,
                                            (const guchar *)bytes, len);
    g_free(bytes);
    return sum;
}

static void expect_refused(const char *path, const char *spec,
                           const char *needle)
{
    char *before = file_sum(path);
    procreg *reg = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_open(spec, &reg, &err), ==, PROCREG_EBACKEND);
    g_assert_nonnull(err);
    g_test_message("%s", err->message);
    if (strstr(err->message, needle) == NULL)
        g_error("message '%s' lacks '%s'", err->message, needle);
    g_clear_error(&err);
    char *after = file_sum(path);
    g_assert_cmpstr(before, ==, after);
    g_free(before);
    g_free(after);
}

static void reset(Fixture *f)
{
    g_unlink(f->path);
    char *lock = g_strconcat(f->path, "-lock", NULL);
    g_unlink(lock);
    g_free(lock);
}

/* An unknown marker in either layout, an older file without its marker
 * or without its entries, a format 4 file without "owners": refused with
 * a message that says which, the file unchanged. */
static void test_refused(Fixture *f, gconstpointer data)
{
    raw_db r;
    /* The main layout's marker, an unknown value. */
    fill(f->spec, false);
    raw_open(&r, f->path, true);
    raw_put(&r, "meta", "format", 6, "procreg-lmdb 6", 14);
    raw_close(&r, true);
    expect_refused(f->path, f->spec, "has format 'procreg-lmdb 6'");

    /* The older layout's marker, an unknown value. */
    reset(f);
    lt_raw_old_file(f->path, 3);
    raw_open(&r, f->path, true);
    raw_put(&r, "meta", "format", 6, "procreg-lmdb 0", 14);
    raw_close(&r, true);
    expect_refused(f->path, f->spec, "has format 'procreg-lmdb 0'");

    /* No marker at all. */
    reset(f);
    lt_raw_old_file(f->path, 3);
    raw_open(&r, f->path, true);
    MDB_val k = {6, "format"};
    g_assert_cmpint(mdb_del(r.txn, raw_dbi(&r, "meta", 0), &k, NULL), ==, 0);
    raw_close(&r, true);
    expect_refused(f->path, f->spec, "no format marker");

    /* An older file without its entries database. */
    reset(f);
    lt_raw_old_file(f->path, 3);
    raw_open(&r, f->path, true);
    g_assert_cmpint(mdb_drop(r.txn, raw_dbi(&r, "entries", 0), 1), ==, 0);
    raw_close(&r, true);
    expect_refused(f->path, f->spec, "not a procreg registry");

    /* Format 4 without "owners". */
    reset(f);
    fill(f->spec, false);
    lt_raw_downgrade(f->path, 4);
    raw_open(&r, f->path, true);
    g_assert_cmpint(mdb_drop(r.txn, raw_dbi(&r, "owners", 0), 1), ==, 0);
    raw_close(&r, true);
    expect_refused(f->path, f->spec, "not a procreg registry");
}

int main(int argc, char **argv)
{
    self_exe = argv[0];
    if (argc == 3 && strcmp(argv[1], "--open") == 0) {
        procreg_close(lt_open(argv[2]));
        return 0;
    }
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn, d)                                                      \
    g_test_add(path, Fixture, d, lt_fx_setup, fn, lt_fx_teardown)
    ADD("/lmdb/format/migrate-4", test_migrate, GINT_TO_POINTER(4));
    ADD("/lmdb/format/migrate-3", test_migrate, GINT_TO_POINTER(3));
    ADD("/lmdb/format/migrate-2", test_migrate, GINT_TO_POINTER(2));
    ADD("/lmdb/format/migrate-1", test_migrate, GINT_TO_POINTER(1));
    ADD("/lmdb/format/concurrent-open", test_concurrent_open,
        GINT_TO_POINTER(3));
    ADD("/lmdb/format/concurrent-open-4", test_concurrent_open,
        GINT_TO_POINTER(4));
    ADD("/lmdb/format/concurrent-open-4-handle", test_concurrent_open_handle,
        NULL);
    ADD("/lmdb/format/read-only-old", test_read_only_old, GINT_TO_POINTER(3));
    ADD("/lmdb/format/read-only-old-4", test_read_only_old,
        GINT_TO_POINTER(4));
    ADD("/lmdb/format/read-only-held", test_read_only_held, NULL);
    ADD("/lmdb/format/read-only-mount-guarded", test_read_only_mount_guarded,
        NULL);
    ADD("/lmdb/format/refused", test_refused, NULL);
    return g_test_run();
}
