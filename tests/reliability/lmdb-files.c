/*
 * Filesystem and permission faults of the lmdb backend that
 * tests/lmdb does not already cover, and the one promise every fault
 * shares: a failed or refused open never changes the file.
 *
 *  - modes: the files procreg creates (FILE, FILE-lock, FILE-notify and
 *    the default directory) are not readable or writable by others;
 *  - an unsafe default directory (group/world-writable, someone else's,
 *    a symlink) is refused;
 *  - a path that is a symlink: to a file that is not a registry (refused,
 *    the file untouched), to a valid registry (followed: the user named
 *    it), dangling (documented: the registry is created at the target);
 *  - a registry owned by another user with mode 0600, opened by an
 *    unprivileged process: a clear "permission denied" error; the file
 *    stays intact and its owner still reads it;
 *  - one's own registry made read-only (files 0444, or a directory
 *    without write permission): reads work, and a write says which file
 *    or directory refuses it; a new registry in such a directory says
 *    why it cannot be made;
 *  - paths that cannot be a registry (a missing directory, a file where a
 *    directory should be, a device, /proc): each its own message and
 *    code, never "its directory does not exist" unless it is so;
 *  - damaged files (garbage, truncated, a foreign LMDB file, another
 *    format version): refused, and not a byte changes.
 */
#include <procreg/procreg.h>

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include "../lmdb/lmdb-raw.h"
#include <lmdb.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY 65534

typedef struct {
    char *dir;
    char *path;
    char *spec;
} Fixture;

static void remove_tree(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    if (d != NULL) {
        const char *n;
        while ((n = g_dir_read_name(d)) != NULL) {
            char *p = g_build_filename(dir, n, NULL);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(p);
            else
                g_unlink(p);
            g_free(p);
        }
        g_dir_close(d);
    }
    g_rmdir(dir);
}

static void fx_setup(Fixture *f, gconstpointer data)
{
    (void)data;
    f->dir = g_dir_make_tmp("procreg-files-XXXXXX", NULL);
    g_assert_nonnull(f->dir);
    f->path = g_build_filename(f->dir, "reg.mdb", NULL);
    f->spec = g_strdup_printf("lmdb:path=%s", f->path);
}

static void fx_teardown(Fixture *f, gconstpointer data)
{
    (void)data;
    remove_tree(f->dir);
    g_free(f->dir);
    g_free(f->path);
    g_free(f->spec);
}

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

static void make_registry(const char *spec)
{
    procreg *reg = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_open(spec, &reg, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpint(procreg_register(reg, "files", "kept", NULL,
                                     g_variant_new_parsed("{'v': <1>}"), NULL,
                                     NULL), ==, 0);
    procreg_close(reg);
}

static void check_registry(const char *spec)
{
    procreg *reg = NULL;
    g_assert_cmpint(procreg_open(spec, &reg, NULL), ==, 0);
    procreg_entry e;
    g_assert_cmpint(procreg_lookup_entry(reg, "files", "kept", &e, NULL), ==,
                    0);
    g_assert_nonnull(e.metadata);
    procreg_entry_clear(&e);
    procreg_close(reg);
}

/* The open must fail with @code and a message holding @what. */
static void expect_refused(const char *spec, int code, const char *what)
{
    procreg *reg = NULL;
    GError *err = NULL;
    int rc = procreg_open(spec, &reg, &err);
    g_assert_cmpint(rc, ==, code);
    g_assert_null(reg);
    g_assert_error(err, PROCREG_ERROR, code);
    g_test_message("%s", err->message);
    if (strstr(err->message, what) == NULL)
        g_error("expected '%s' in: %s", what, err->message);
    g_error_free(err);
}

static void check_private(const char *path, mode_t type)
{
    struct stat st;
    g_assert_cmpint(lstat(path, &st), ==, 0);
    g_assert_cmpuint(st.st_mode & S_IFMT, ==, type);
    g_test_message("%s: mode %03o", path, (unsigned)(st.st_mode & 0777));
    if ((st.st_mode & 0077) != 0)
        g_error("%s has mode %03o: others may use it", path,
                (unsigned)(st.st_mode & 0777));
}

static void test_modes(Fixture *f, gconstpointer data)
{
    (void)data;
    make_registry(f->spec);
    const char *suffixes[] = {"", "-lock", "-notify"};
    for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
        char *p = g_strconcat(f->path, suffixes[i], NULL);
        check_private(p, S_IFREG);
        g_free(p);
    }
    /* The default location: $XDG_RUNTIME_DIR/procreg/registry.mdb. */
    g_setenv("XDG_RUNTIME_DIR", f->dir, TRUE);
    make_registry("lmdb");
    char *d = g_build_filename(f->dir, "procreg", NULL);
    check_private(d, S_IFDIR);
    char *p = g_build_filename(d, "registry.mdb", NULL);
    check_private(p, S_IFREG);
    g_free(p);
    g_free(d);
    g_unsetenv("XDG_RUNTIME_DIR");
}

static void test_unsafe_default_dir(Fixture *f, gconstpointer data)
{
    (void)data;
    char *d = g_build_filename(f->dir, "procreg", NULL);
    g_setenv("XDG_RUNTIME_DIR", f->dir, TRUE);
    /* World-writable: anyone could plant the file. */
    g_assert_cmpint(g_mkdir(d, 0700), ==, 0);
    g_assert_cmpint(chmod(d, 0777), ==, 0);
    expect_refused("lmdb", PROCREG_EBACKEND, "no one else can write");
    /* Someone else's. */
    g_assert_cmpint(chmod(d, 0700), ==, 0);
    if (geteuid() == 0) {
        g_assert_cmpint(chown(d, NOBODY, NOBODY), ==, 0);
        expect_refused("lmdb", PROCREG_EBACKEND, "owned by uid");
        g_assert_cmpint(chown(d, 0, 0), ==, 0);
    }
    /* A symlink to a directory elsewhere. */
    g_assert_cmpint(g_rmdir(d), ==, 0);
    char *elsewhere = g_build_filename(f->dir, "elsewhere", NULL);
    g_assert_cmpint(g_mkdir(elsewhere, 0700), ==, 0);
    g_assert_cmpint(symlink(elsewhere, d), ==, 0);
    expect_refused("lmdb", PROCREG_EBACKEND, "refusing");
    char *planted = g_build_filename(elsewhere, "registry.mdb", NULL);
    g_assert_false(g_file_test(planted, G_FILE_TEST_EXISTS));
    g_unsetenv("XDG_RUNTIME_DIR");
    g_free(planted);
    g_free(elsewhere);
    g_free(d);
}

static void test_symlink_to_other_file(Fixture *f, gconstpointer data)
{
    (void)data;
    char *victim = g_build_filename(f->dir, "notes.txt", NULL);
    char *text = g_strnfill(20000, 'x'); /* more than a page */
    g_assert_true(g_file_set_contents(victim, text, -1, NULL));
    char *before = file_sum(victim);
    g_assert_cmpint(symlink(victim, f->path), ==, 0);
    expect_refused(f->spec, PROCREG_EBACKEND, "not an LMDB file");
    char *after = file_sum(victim);
    g_assert_cmpstr(before, ==, after);
    g_free(after);
    g_free(before);
    g_free(text);
    g_free(victim);
}

static void test_symlink_to_registry(Fixture *f, gconstpointer data)
{
    (void)data;
    char *real = g_build_filename(f->dir, "real.mdb", NULL);
    char *real_spec = g_strdup_printf("lmdb:path=%s", real);
    make_registry(real_spec);
    g_assert_cmpint(symlink(real, f->path), ==, 0);
    /* The caller named this path: the registry it leads to opens. */
    check_registry(f->spec);
    g_free(real_spec);
    g_free(real);
}

static void test_symlink_dangling(Fixture *f, gconstpointer data)
{
    (void)data;
    char *target = g_build_filename(f->dir, "target.mdb", NULL);
    g_assert_cmpint(symlink(target, f->path), ==, 0);
    procreg *reg = NULL;
    GError *err = NULL;
    int rc = procreg_open(f->spec, &reg, &err);
    /* Documented behaviour (doc/reliability.md): an explicit path is the
     * caller's choice and is followed; the registry is created at the
     * symlink's target, private to this user. */
    g_assert_no_error(err);
    g_assert_cmpint(rc, ==, 0);
    procreg_close(reg);
    check_private(target, S_IFREG);
    g_free(target);
}

/* Run @fn in a child process (as @uid unless -1); its exit status. */
static int in_child(const char *spec, int (*fn)(const char *spec), int uid)
{
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        if (uid >= 0 && (setgroups(0, NULL) != 0 || setgid((gid_t)uid) != 0 ||
                         setuid((uid_t)uid) != 0))
            _exit(90);
        _exit(fn(spec));
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    g_assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* Run @fn in a child process as an unprivileged user; its exit status. */
static int as_nobody(const char *spec, int (*fn)(const char *spec))
{
    return in_child(spec, fn, NOBODY);
}

static int as_self(const char *spec, int (*fn)(const char *spec))
{
    return in_child(spec, fn, -1);
}

/* Run @fn in a child process without privileges: as nobody when we are
 * root (root ignores permission bits), else as ourselves; its exit
 * status.  @dir becomes the child's. */
static int as_unprivileged(const char *dir, const char *spec,
                           int (*fn)(const char *spec))
{
    if (geteuid() != 0)
        return as_self(spec, fn);
    g_assert_cmpint(chown(dir, NOBODY, NOBODY), ==, 0);
    return as_nobody(spec, fn);
}

static int open_as_other(const char *spec)
{
    procreg *reg = NULL;
    GError *err = NULL;
    int rc = procreg_open(spec, &reg, &err);
    if (rc == 0) {
        procreg_close(reg);
        return 1; /* opened someone else's private registry */
    }
    if (rc != PROCREG_EBACKEND || err == NULL ||
        strstr(err->message, "permission denied: uid") == NULL) {
        g_printerr("unexpected: %d %s\n", rc, err ? err->message : "");
        return 2;
    }
    g_printerr("as uid %d: %s\n", NOBODY, err->message);
    g_error_free(err);
    return 0;
}

static void test_other_users_file(Fixture *f, gconstpointer data)
{
    (void)data;
    if (geteuid() != 0) {
        g_test_skip("needs root to act as another user");
        return;
    }
    /* The directory may be crossed by anyone; the files are 0600. */
    g_assert_cmpint(chmod(f->dir, 0755), ==, 0);
    make_registry(f->spec);
    /* Kept where the forked child can still reach it: its leak check at
     * _exit (valgrind) must not count the parent's live data. */
    static char *before;
    before = file_sum(f->path);
    g_assert_cmpint(as_nobody(f->spec, open_as_other), ==, 0);
    char *after = file_sum(f->path);
    g_assert_cmpstr(before, ==, after);
    check_registry(f->spec);
    g_free(after);
    g_clear_pointer(&before, g_free);
}

/* ---- read-only registries, and paths that cannot be one ---- */

/* In a child: a failed check prints why and exits with @line. */
#define CHILD_CHECK(cond)                                                     \
    do {                                                                      \
        if (!(cond)) {                                                        \
            g_printerr("%s:%d: failed: %s\n", __FILE__, __LINE__, #cond);     \
            return __LINE__ % 250 + 1;                                        \
        }                                                                     \
    } while (0)

static const char *spec_path(const char *spec)
{
    return strchr(spec, '=') + 1;
}

/* In a child: the registry of @spec, read-only for the reason @want
 * names, still answers reads, and a write says why it cannot. */
static int reads_work_writes_say(const char *spec, const char *want)
{
    procreg *reg = NULL;
    GError *err = NULL;
    CHILD_CHECK(procreg_open(spec, &reg, &err) == 0);
    procreg_entry e;
    CHILD_CHECK(procreg_lookup_entry(reg, "files", "kept", &e, NULL) == 0);
    CHILD_CHECK(e.metadata != NULL);
    procreg_entry_clear(&e);
    size_t n = 0;
    CHILD_CHECK(procreg_count(reg, NULL, &n, NULL) == 0 && n == 1);
    int rc = procreg_register(reg, "files", "new", NULL, NULL, NULL, &err);
    g_printerr("as uid %u: %s\n", (unsigned)geteuid(),
               err ? err->message : "(no error)");
    CHILD_CHECK(rc == PROCREG_EBACKEND);
    CHILD_CHECK(strstr(err->message, "read-only") != NULL);
    CHILD_CHECK(strstr(err->message, want) != NULL);
    g_clear_error(&err);
    procreg_health h = {0};
    CHILD_CHECK(procreg_health_check(reg, &h, NULL) == 0);
    CHILD_CHECK(h.status == PROCREG_HEALTH_DEGRADED);
    procreg_health_clear(&h);
    procreg_close(reg);
    return 0;
}

static int chmod_registry(const char *path, mode_t mode)
{
    const char *suffixes[] = {"", "-lock", "-notify"};
    for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
        char *p = g_strconcat(path, suffixes[i], NULL);
        int rc = chmod(p, mode);
        g_free(p);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* In a child, owner of the registry: its file 0444, then all three. */
static int read_only_files(const char *spec)
{
    const char *path = spec_path(spec);
    make_registry(spec);
    CHILD_CHECK(chmod(path, 0444) == 0);
    int rc = reads_work_writes_say(spec, "may not write the registry file");
    if (rc != 0)
        return rc;
    /* Its lock file too: reads take no reader slot then. */
    CHILD_CHECK(chmod_registry(path, 0444) == 0);
    return reads_work_writes_say(spec, "(mode 0444");
}

/* In a child, owner of the directory: a registry whose lock file must be
 * made again in a directory without write permission, and a new one. */
static int read_only_dir(const char *spec)
{
    const char *path = spec_path(spec);
    char *dir = g_path_get_dirname(path);
    char *lock = g_strconcat(path, "-lock", NULL);
    make_registry(spec);
    CHILD_CHECK(unlink(lock) == 0);
    CHILD_CHECK(chmod(dir, 0555) == 0);
    int rc = reads_work_writes_say(spec, "may not create files in its "
                                         "directory");
    char *other = g_strdup_printf("lmdb:path=%s/new.mdb", dir);
    procreg *reg = NULL;
    GError *err = NULL;
    if (rc == 0 && procreg_open(other, &reg, &err) != PROCREG_EBACKEND)
        rc = 200;
    if (rc == 0) {
        g_printerr("as uid %u: %s\n", (unsigned)geteuid(), err->message);
        if (strstr(err->message, "may not create files in its directory") ==
            NULL)
            rc = 201;
    }
    g_clear_error(&err);
    chmod(dir, 0755);
    g_free(other);
    g_free(lock);
    g_free(dir);
    return rc;
}

/* Run @fn unprivileged, in a directory of its own inside the fixture's,
 * on the registry there. */
static void in_own_dir(Fixture *f, int (*fn)(const char *spec))
{
    char *sub = g_build_filename(f->dir, "own", NULL);
    g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
    g_assert_cmpint(chmod(f->dir, 0755), ==, 0);
    char *spec = g_strdup_printf("lmdb:path=%s/reg.mdb", sub);
    g_assert_cmpint(as_unprivileged(sub, spec, fn), ==, 0);
    g_free(spec);
    g_free(sub);
}

static void test_read_only_files(Fixture *f, gconstpointer data)
{
    (void)data;
    in_own_dir(f, read_only_files);
}

static void test_read_only_dir(Fixture *f, gconstpointer data)
{
    (void)data;
    in_own_dir(f, read_only_dir);
}

/* The open of @spec fails with @code and says @what, never @never. */
static void expect_cause(const char *spec, int code, const char *what,
                         const char *never)
{
    procreg *reg = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_open(spec, &reg, &err), ==, code);
    g_assert_null(reg);
    g_test_message("%s: %s", spec, err->message);
    if (strstr(err->message, what) == NULL ||
        (never != NULL && strstr(err->message, never) != NULL))
        g_error("expected '%s'%s%s%s in: %s", what, never ? ", not '" : "",
                never ? never : "", never ? "'" : "", err->message);
    g_error_free(err);
}

static void test_impossible_paths(Fixture *f, gconstpointer data)
{
    (void)data;
    char *spec = g_strdup_printf("lmdb:path=%s/missing/reg.mdb", f->dir);
    expect_cause(spec, PROCREG_EINVAL, "/missing' does not exist", NULL);
    g_free(spec);
    char *plain = g_build_filename(f->dir, "plain", NULL);
    g_assert_true(g_file_set_contents(plain, "x", 1, NULL));
    spec = g_strdup_printf("lmdb:path=%s/reg.mdb", plain);
    expect_cause(spec, PROCREG_EINVAL, "/plain' is not a directory", NULL);
    g_free(spec);
    g_free(plain);
    expect_cause("lmdb:path=/dev/null", PROCREG_EINVAL,
                 "is not a regular file (it is a character device)", NULL);
    /* A file of /proc: not a registry, and nothing can be made there. */
    expect_cause("lmdb:path=/proc/version", PROCREG_EBACKEND, "read-only",
                 "does not exist");
    expect_cause("lmdb:path=/proc/procreg-test.mdb", PROCREG_EBACKEND,
                 "cannot create it in '/proc'", "does not exist");
}

/* ---- damaged files: refused, and left as they were ---- */

static void write_file(const char *path, const void *data, size_t len)
{
    g_assert_true(g_file_set_contents(path, data, (gssize)len, NULL));
}

static void put_raw(const char *path, const char *db, const char *k,
                    const char *v)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    g_assert_cmpint(mdb_env_create(&env), ==, 0);
    mdb_env_set_maxdbs(env, 8);
    g_assert_cmpint(mdb_env_open(env, path, MDB_NOSUBDIR, 0600), ==, 0);
    g_assert_cmpint(mdb_txn_begin(env, NULL, 0, &txn), ==, 0);
    g_assert_cmpint(mdb_dbi_open(txn, db, MDB_CREATE, &dbi), ==, 0);
    MDB_val key = {strlen(k), (void *)k}, val = {strlen(v), (void *)v};
    g_assert_cmpint(mdb_put(txn, dbi, &key, &val, 0), ==, 0);
    g_assert_cmpint(mdb_txn_commit(txn), ==, 0);
    mdb_env_close(env);
}

static void expect_refused_intact(const char *path, const char *spec,
                                  const char *what)
{
    char *before = file_sum(path);
    expect_refused(spec, PROCREG_EBACKEND, what);
    char *after = file_sum(path);
    g_assert_cmpstr(before, ==, after);
    g_free(after);
    g_free(before);
}

static void test_damaged_untouched(Fixture *f, gconstpointer data)
{
    (void)data;
    /* Not an LMDB file. */
    char garbage[65536];
    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (char)(i * 131 + 7);
    write_file(f->path, garbage, sizeof garbage);
    expect_refused_intact(f->path, f->spec, "not an LMDB file");
    g_unlink(f->path);

    /* A registry cut short. */
    make_registry(f->spec);
    char *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(f->path, &bytes, &len, NULL));
    char *lock = g_strconcat(f->path, "-lock", NULL);
    g_unlink(lock);
    write_file(f->path, bytes, len / 2);
    expect_refused_intact(f->path, f->spec, "damaged");
    g_free(bytes);

    /* Someone else's LMDB file. */
    g_unlink(f->path);
    g_unlink(lock);
    put_raw(f->path, "accounts", "bob", "42");
    expect_refused_intact(f->path, f->spec, "not a procreg registry");

    /* Another format version. */
    g_unlink(f->path);
    g_unlink(lock);
    make_registry(f->spec);
    g_unlink(lock);
    raw_db r;
    raw_open(&r, f->path, true);
    raw_put(&r, "meta", "format", 6, "procreg-lmdb 99", 15);
    raw_close(&r, true);
    g_unlink(lock);
    expect_refused_intact(f->path, f->spec, "procreg-lmdb 99");
    g_free(lock);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn)                                                         \
    g_test_add(path, Fixture, NULL, fx_setup, fn, fx_teardown)
    ADD("/reliability/lmdb-files/modes", test_modes);
    ADD("/reliability/lmdb-files/unsafe-default-dir", test_unsafe_default_dir);
    ADD("/reliability/lmdb-files/symlink-to-other-file",
        test_symlink_to_other_file);
    ADD("/reliability/lmdb-files/symlink-to-registry",
        test_symlink_to_registry);
    ADD("/reliability/lmdb-files/symlink-dangling", test_symlink_dangling);
    ADD("/reliability/lmdb-files/other-users-file", test_other_users_file);
    ADD("/reliability/lmdb-files/read-only-files", test_read_only_files);
    ADD("/reliability/lmdb-files/read-only-dir", test_read_only_dir);
    ADD("/reliability/lmdb-files/impossible-paths", test_impossible_paths);
    ADD("/reliability/lmdb-files/damaged-untouched", test_damaged_untouched);
    return g_test_run();
}
