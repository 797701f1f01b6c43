/*
 * The lmdb backend beyond the compliance suite: options and file modes,
 * one environment per file per process, fork(), map growth (in this
 * process and in another), dead owners across processes, damaged and
 * foreign files, read-only files, a full disk, and the change log.
 */
#include "lmdb-raw.h"
#include "lmdb-test-util.h"

#include <procreg/backend.h>

#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/wait.h>


typedef lt_fixture Fixture;

static int reg_self(procreg *reg, const char *ns, const char *name,
                    GVariant *meta)
{
    return procreg_register(reg, ns, name, NULL, meta, NULL, NULL);
}

/* ------------------------------------------------------------------------ */

static void test_option_errors(Fixture *f, gconstpointer data)
{
    struct {
        const char *file;    /* appended to the directory */
        const char *options; /* appended to the spec */
        int code;
        const char *needle;
    } cases[] = {
        {"/reg.mdb", ",durability=fast", PROCREG_EINVAL, "durability"},
        {"/reg.mdb", ",map_size=1", PROCREG_EINVAL, "out of range"},
        {"/reg.mdb", ",max_readers=0", PROCREG_EINVAL, "max_readers"},
        {"", "", PROCREG_EINVAL, "is a directory"},
        {"/no/such/dir/reg.mdb", "", PROCREG_EINVAL,
         "/no/such/dir' does not exist"},
        {"/reg.mdb", ",colour=red", PROCREG_EINVAL, "durability"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *spec = g_strconcat("lmdb:path=", f->dir, cases[i].file,
                                 cases[i].options, NULL);
        procreg *reg = NULL;
        GError *err = NULL;
        int rc = procreg_open(spec, &reg, &err);
        g_assert_cmpint(rc, ==, cases[i].code);
        g_assert_error(err, PROCREG_ERROR, cases[i].code);
        if (strstr(err->message, cases[i].needle) == NULL)
            g_error("%s: message '%s' lacks '%s'", spec, err->message,
                    cases[i].needle);
        g_test_message("%s -> %s", spec, err->message);
        g_clear_error(&err);
        g_free(spec);
    }
}

static void check_mode(const char *path, mode_t want)
{
    struct stat st;
    if (stat(path, &st) != 0)
        g_error("%s: %s", path, g_strerror(errno));
    if ((st.st_mode & 0777) != want)
        g_error("%s has mode %03o, want %03o", path,
                (unsigned)(st.st_mode & 0777), (unsigned)want);
}

static void default_path_body(Fixture *f)
{
    char *old = g_strdup(g_getenv("XDG_RUNTIME_DIR"));
    mode_t old_umask = umask(0);
    g_setenv("XDG_RUNTIME_DIR", f->dir, TRUE);
    procreg *reg = lt_open("lmdb");
    g_assert_cmpint(reg_self(reg, "p", "a", NULL), ==, 0);
    procreg_close(reg);
    umask(old_umask);

    char *dir = g_build_filename(f->dir, "procreg", NULL);
    char *file = g_build_filename(dir, "registry.mdb", NULL);
    char *lock = g_strconcat(file, "-lock", NULL);
    char *notify = g_strconcat(file, "-notify", NULL);
    check_mode(dir, 0700);
    check_mode(file, 0600);
    check_mode(lock, 0600);
    check_mode(notify, 0600);

    /* A registry directory others may write is refused. */
    char *rt2 = g_build_filename(f->dir, "rt2", NULL);
    char *bad = g_build_filename(rt2, "procreg", NULL);
    g_assert_cmpint(g_mkdir(rt2, 0700), ==, 0);
    g_assert_cmpint(g_mkdir(bad, 0700), ==, 0);
    g_assert_cmpint(chmod(bad, 0777), ==, 0);
    g_setenv("XDG_RUNTIME_DIR", rt2, TRUE);
    GError *err = NULL;
    g_assert_cmpint(procreg_open("lmdb", &reg, &err), ==, PROCREG_EBACKEND);
    g_assert_nonnull(strstr(err->message, "refusing"));
    g_test_message("%s", err->message);
    g_clear_error(&err);

    if (old != NULL)
        g_setenv("XDG_RUNTIME_DIR", old, TRUE);
    else
        g_unsetenv("XDG_RUNTIME_DIR");
    g_free(old);
    g_free(rt2);
    g_free(bad);
    g_free(dir);
    g_free(file);
    g_free(lock);
    g_free(notify);
}

/* setenv() is not safe once threads run (ours or glib's): the body runs
 * in a fresh process. */
static void test_default_path(Fixture *f, gconstpointer data)
{
    if (g_test_subprocess()) {
        default_path_body(f);
        return;
    }
    g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC,
                           G_TEST_SUBPROCESS_INHERIT_STDERR);
    g_test_trap_assert_passed();
}

/* Two handles on one file in one process (one by a symlink) share one
 * environment: both see every write, and closing one leaves the other
 * working. */
static void test_shared_env(Fixture *f, gconstpointer data)
{
    procreg *a = lt_open(f->spec);
    char *link = g_build_filename(f->dir, "alias.mdb", NULL);
    g_assert_cmpint(symlink(f->path, link), ==, 0);
    char *spec_b = g_strdup_printf("lmdb:path=%s,durability=nosync", link);
    procreg *b = lt_open(spec_b);

    g_assert_cmpint(reg_self(a, "s", "from-a", NULL), ==, 0);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(b, "s", "from-a", &o, NULL), ==, 0);
    /* Durability is the stronger of the two handles' wishes. */
    GVariant *st = NULL;
    g_assert_cmpint(procreg_stats(b, &st, NULL), ==, 0);
    GVariant *bs = g_variant_lookup_value(st, "backend_stats", NULL);
    const char *dur = NULL, *path = NULL;
    g_assert_true(g_variant_lookup(bs, "durability", "&s", &dur));
    g_assert_cmpstr(dur, ==, "sync");
    g_assert_true(g_variant_lookup(bs, "path", "&s", &path));
    g_assert_cmpstr(path, ==, f->path); /* the first opener's path */
    g_variant_unref(bs);
    g_variant_unref(st);

    procreg_close(a);
    g_assert_cmpint(reg_self(b, "s", "from-b", NULL), ==, 0);
    procreg_close(b);

    procreg *c = lt_open(f->spec);
    size_t n = 0;
    g_assert_cmpint(procreg_count(c, "s", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 2);
    procreg_close(c);
    g_free(link);
    g_free(spec_b);
}

static GVariant *blob_meta(int i, size_t size)
{
    char *blob = g_malloc(size + 1);
    memset(blob, 'a' + i % 26, size);
    blob[size] = '\0';
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "i", "i", i);
    g_variant_dict_insert(&d, "blob", "s", blob);
    g_free(blob);
    return g_variant_dict_end(&d);
}

/* A map far too small for the data grows instead of failing. */
static void test_map_grow(Fixture *f, gconstpointer data)
{
    char *spec = g_strdup_printf("%s,map_size=256KiB", f->spec);
    procreg *reg = lt_open(spec);
    GError *err = NULL;
    for (int i = 0; i < 400; i++) {
        char name[32];
        g_snprintf(name, sizeof name, "n%03d", i);
        int rc = procreg_register(reg, "big", name, NULL,
                                  blob_meta(i, 8192), NULL, &err);
        if (rc != 0)
            g_error("register %d: %s", i, err->message);
    }
    gint64 grows = lt_stat(reg, "map_grows");
    gint64 map = lt_stat(reg, "map_size");
    g_test_message("400 x 8 KiB: %" G_GINT64_FORMAT " growths, map now %"
                   G_GINT64_FORMAT " bytes", grows, map);
    g_assert_cmpint(grows, >=, 1);
    g_assert_cmpint(map, >, 3 << 20);
    procreg_close(reg);

    reg = lt_open(spec);
    procreg_entry e = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, "big", "n399", &e, NULL), ==, 0);
    int i = -1;
    g_assert_true(g_variant_lookup(e.metadata, "i", "i", &i));
    g_assert_cmpint(i, ==, 399);
    procreg_entry_clear(&e);
    procreg_close(reg);
    g_free(spec);
}

/* Another process grows the map past this one's: this one adopts the new
 * size (MDB_MAP_RESIZED) and goes on. */
static void test_map_adopt(Fixture *f, gconstpointer data)
{
    char *spec = g_strdup_printf("%s,map_size=256KiB", f->spec);
    procreg *reg = lt_open(spec);
    g_assert_cmpint(reg_self(reg, "big", "first", NULL), ==, 0);
    gint64 before = lt_stat(reg, "map_size");

    char *self = g_file_read_link("/proc/self/exe", NULL);
    char *pid = g_strdup_printf("%d", (int)getpid());
    char *argv[] = {self, (char *)"--grow-child", spec, pid, NULL};
    int status = 0;
    GError *err = NULL;
    g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                               NULL, NULL, &status, &err));
    g_assert_no_error(err);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    g_free(self);
    g_free(pid);

    procreg_entry e = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, "big", "c299", &e, NULL), ==, 0);
    procreg_entry_clear(&e);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, "big", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 301);
    g_assert_cmpint(reg_self(reg, "big", "after", blob_meta(1, 8192)), ==, 0);
    gint64 after = lt_stat(reg, "map_size");
    g_test_message("map %" G_GINT64_FORMAT " -> %" G_GINT64_FORMAT
                   ", adopted %" G_GINT64_FORMAT " time(s)", before, after,
                   lt_stat(reg, "map_adopted"));
    g_assert_cmpint(after, >, before);
    g_assert_cmpint(lt_stat(reg, "map_adopted"), >=, 1);
    procreg_close(reg);
    g_free(spec);
}

/* Threads registering and looking up while the map grows under them. */
typedef struct {
    procreg *reg;
    int id;
    gint failures;
} grow_thread;

static gpointer grow_worker(gpointer p)
{
    grow_thread *t = p;
    for (int i = 0; i < 60; i++) {
        char name[32];
        g_snprintf(name, sizeof name, "t%d-%d", t->id, i);
        if (procreg_register(t->reg, "grow", name, NULL, blob_meta(i, 4096),
                             NULL, NULL) != 0)
            t->failures++;
        procreg_owner o;
        if (procreg_lookup(t->reg, "grow", name, &o, NULL) != 0)
            t->failures++;
    }
    return NULL;
}

static void test_threads_grow(Fixture *f, gconstpointer data)
{
    char *spec = g_strdup_printf("%s,map_size=256KiB,durability=nosync",
                                 f->spec);
    procreg *reg = lt_open(spec);
    grow_thread t[4];
    GThread *th[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (grow_thread){reg, i, 0};
        th[i] = g_thread_new("grow", grow_worker, &t[i]);
    }
    for (int i = 0; i < 4; i++) {
        g_thread_join(th[i]);
        g_assert_cmpint(t[i].failures, ==, 0);
    }
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, "grow", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 240);
    g_assert_cmpint(lt_stat(reg, "map_grows"), >=, 1);
    procreg_close(reg);
    g_free(spec);
}

/* A forked child keeps using its parent's handle: it reopens the file
 * for itself and leaves the parent's environment alone. */
static void test_fork(Fixture *f, gconstpointer data)
{
#if defined(__SANITIZE_THREAD__)
    g_test_skip("ThreadSanitizer cannot follow a forked child of a threaded "
                "process that starts threads (die_after_fork)");
    return;
#elif defined(__SANITIZE_ADDRESS__)
    g_test_skip("AddressSanitizer's allocator is not fork-safe in a threaded "
                "process (a child can block for ever in malloc); the fork "
                "path runs in the plain build");
    return;
#endif
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(reg_self(reg, "f", "parent", NULL), ==, 0);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "f", "parent", &o, NULL), ==, 0);

    for (int round = 0; round < 3; round++) {
        pid_t child = fork();
        g_assert_cmpint(child, >=, 0);
        if (child == 0) {
            procreg_owner parent, got;
            char name[16];
            g_snprintf(name, sizeof name, "child%d", round);
            int ok = procreg_lookup(reg, "f", "parent", &got, NULL) == 0 &&
                     got.pid == getppid() &&
                     procreg_owner_from_pid(getppid(), &parent, NULL) == 0 &&
                     procreg_register(reg, "f", name, &parent, NULL, NULL,
                                      NULL) == 0;
            /* Closing in the child releases only the child's own env. */
            procreg_close(reg);
            _exit(ok ? 0 : 1);
        }
        int status = 0;
        g_assert_cmpint(waitpid(child, &status, 0), ==, child);
        g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    /* The parent's environment is intact: reads and writes go on. */
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, "f", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 4);
    g_assert_cmpint(reg_self(reg, "f", "after", NULL), ==, 0);
    g_assert_cmpint(procreg_lookup(reg, "f", "child2", &o, NULL), ==, 0);
    g_assert_cmpint(o.pid, ==, getpid());
    procreg_close(reg);
}

/* ---- dead owners across processes ---- */

/* Another program (this one, re-executed) that registers ns/a and ns/b
 * for itself, writes 'y' on stdout and sleeps until killed.  Exec, not a
 * bare fork: it is a real separate process, and ThreadSanitizer can
 * follow it. */
static pid_t owner_child(const char *spec, const char *ns, int *ready_fd)
{
    char *self = g_file_read_link("/proc/self/exe", NULL);
    char *argv[] = {self, (char *)"--owner-child", (char *)spec, (char *)ns,
                    NULL};
    GPid pid = 0;
    GError *err = NULL;
    if (!g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                  NULL, NULL, &pid, NULL, ready_fd, NULL,
                                  &err))
        g_error("spawning the owner: %s", err->message);
    g_free(self);
    return pid;
}

static int owner_child_main(const char *spec, const char *ns)
{
    procreg *c = NULL;
    char ok = procreg_open(spec, &c, NULL) == 0 &&
                      reg_self(c, ns, "a", NULL) == 0 &&
                      reg_self(c, ns, "b", NULL) == 0
                  ? 'y'
                  : 'n';
    if (write(STDOUT_FILENO, &ok, 1) != 1)
        return 2;
    for (;;)
        pause();
}

/* Registers 300 entries of 8 KiB for @owner_pid, growing the map. */
static int grow_child_main(const char *spec, const char *owner_pid)
{
    procreg *c = NULL;
    procreg_owner parent;
    int ok = procreg_open(spec, &c, NULL) == 0 &&
             procreg_owner_from_pid(atoi(owner_pid), &parent, NULL) == 0;
    for (int i = 0; ok && i < 300; i++) {
        char name[32];
        g_snprintf(name, sizeof name, "c%03d", i);
        ok = procreg_register(c, "big", name, &parent, blob_meta(i, 8192),
                              NULL, NULL) == 0;
    }
    procreg_close(c);
    return ok ? 0 : 1;
}

static bool wait_byte(int fd, char want)
{
    char c = 0;
    bool ok = read(fd, &c, 1) == 1 && c == want;
    close(fd);
    return ok;
}

static void test_dead_owner(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    int fd;
    pid_t child = owner_child(f->spec, "dead", &fd);
    g_assert_true(wait_byte(fd, 'y'));

    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "dead", "a", &o, NULL), ==, 0);
    g_assert_cmpint(o.pid, ==, child);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, "dead", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 2);

    gint64 t0 = g_get_monotonic_time();
    kill(child, SIGKILL);
    int rc = 0;
    gint64 seen = -1;
    while (g_get_monotonic_time() - t0 < 5 * G_USEC_PER_SEC) {
        rc = procreg_lookup(reg, "dead", "a", &o, NULL);
        if (rc == PROCREG_ENOTFOUND) {
            seen = g_get_monotonic_time() - t0;
            break;
        }
        g_usleep(200);
    }
    g_assert_cmpint(rc, ==, PROCREG_ENOTFOUND);
    g_test_message("SIGKILLed owner absent for lookups after %" G_GINT64_FORMAT
                   " us", seen);
    g_assert_cmpint(procreg_count(reg, "dead", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 0);
    procreg_entry *all = NULL;
    g_assert_cmpint(procreg_list(reg, "dead", &all, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 0);
    /* ...and the entries are deleted from the file, not just hidden. */
    while (lt_stat(reg, "reaped") < 2 &&
           g_get_monotonic_time() - t0 < 5 * G_USEC_PER_SEC)
        g_usleep(1000);
    g_assert_cmpint(lt_stat(reg, "reaped"), ==, 2);
    int status;
    waitpid(child, &status, 0);
    procreg_close(reg);

    raw_db r;
    raw_open(&r, f->path, false);
    g_assert_false(raw_has(&r, "entries", "dead", "a"));
    g_assert_false(raw_has(&r, "entries", "dead", "b"));
    g_assert_cmpuint(raw_count(&r, "owners"), ==, 0);
    raw_close(&r, false);
}

/* An owner that died while nobody had the file open: the next process to
 * open it treats the entries as absent and reaps them. */
static void test_dead_owner_offline(Fixture *f, gconstpointer data)
{
    int fd;
    pid_t child = owner_child(f->spec, "off", &fd);
    g_assert_true(wait_byte(fd, 'y'));
    kill(child, SIGKILL);
    int status;
    waitpid(child, &status, 0);

    procreg *reg = lt_open(f->spec);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "off", "a", &o, NULL), ==,
                    PROCREG_ENOTFOUND);
    /* The key is free for a new owner. */
    g_assert_cmpint(reg_self(reg, "off", "b", NULL), ==, 0);
    g_assert_cmpint(procreg_lookup(reg, "off", "b", &o, NULL), ==, 0);
    g_assert_cmpint(o.pid, ==, getpid());
    gint64 t0 = g_get_monotonic_time();
    while (lt_stat(reg, "reaped") < 2 &&
           g_get_monotonic_time() - t0 < 5 * G_USEC_PER_SEC)
        g_usleep(1000);
    g_assert_cmpint(lt_stat(reg, "reaped"), ==, 2);
    procreg_close(reg);
}

/* A file from an earlier boot: its owners are all dead, even one whose
 * (pid, start time) a process of this boot happens to have. */
static void test_previous_boot(Fixture *f, gconstpointer data)
{
    if (!g_file_test("/proc/sys/kernel/random/boot_id", G_FILE_TEST_EXISTS)) {
        g_test_skip("no /proc/sys/kernel/random/boot_id");
        return;
    }
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(reg_self(reg, "boot", "a", NULL), ==, 0);
    g_assert_cmpint(reg_self(reg, "boot", "b", blob_meta(1, 100)), ==, 0);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, true);
    raw_put(&r, "meta", "boot_id", 7, "00000000-0000-0000-0000-000000000000",
            36);
    raw_close(&r, true);

    /* Our own entries, yet from "another boot": gone. */
    reg = lt_open(f->spec);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "boot", "a", &o, NULL), ==,
                    PROCREG_ENOTFOUND);
    g_assert_cmpint(lt_stat(reg, "reaped"), ==, 2);
    g_assert_cmpint(reg_self(reg, "boot", "c", NULL), ==, 0);
    procreg_close(reg);
    /* This boot's entries stay. */
    reg = lt_open(f->spec);
    g_assert_cmpint(procreg_lookup(reg, "boot", "c", &o, NULL), ==, 0);
    g_assert_cmpint(lt_stat(reg, "reaped"), ==, 0);
    procreg_close(reg);
    raw_open(&r, f->path, false);
    g_assert_cmpuint(raw_count(&r, "entries"), ==, 1);
    g_assert_cmpuint(raw_count(&r, "owners"), ==, 1);
    raw_close(&r, false);
}

/* A damaged change log (a record numbered 2^64-1) starts again instead of
 * refusing every write; watchers in other handles follow the restart. */
static void test_log_damaged(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(reg_self(reg, "log", "a", NULL), ==, 0);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, true);
    char junk[60];
    memset(junk, 1, sizeof junk);
    raw_put(&r, "events", "\xff\xff\xff\xff\xff\xff\xff\xff", 8, junk,
            sizeof junk);
    raw_close(&r, true);
    reg = lt_open(f->spec);
    GError *err = NULL;
    if (procreg_register(reg, "log", "b", NULL, NULL, NULL, &err) != 0)
        g_error("register on a damaged log: %s", err->message);
    g_assert_cmpint(procreg_unregister(reg, "log", "a", NULL), ==, 0);
    g_assert_cmpint(lt_stat(reg, "log_restarts"), ==, 1);
    procreg_close(reg);
}

/* ---- damaged, foreign and hostile files ---- */

static void expect_open_error(const char *spec, int code, const char *needle)
{
    procreg *reg = NULL;
    GError *err = NULL;
    int rc = procreg_open(spec, &reg, &err);
    g_assert_cmpint(rc, ==, code);
    g_assert_nonnull(err);
    if (strstr(err->message, needle) == NULL)
        g_error("message '%s' lacks '%s'", err->message, needle);
    g_test_message("%s", err->message);
    g_clear_error(&err);
}

static void test_garbage_file(Fixture *f, gconstpointer data)
{
    char buf[65536];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)g_random_int();
    g_assert_true(g_file_set_contents(f->path, buf, sizeof buf, NULL));
    expect_open_error(f->spec, PROCREG_EBACKEND, "not an LMDB file");
}

static void test_truncated_file(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    for (int i = 0; i < 200; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "k%d", i);
        g_assert_cmpint(reg_self(reg, "t", name, blob_meta(i, 512)), ==, 0);
    }
    procreg_close(reg);
    /* Keep the two meta pages, lose the tree. */
    g_assert_cmpint(truncate(f->path, 4 * 4096), ==, 0);
    expect_open_error(f->spec, PROCREG_EBACKEND, "damaged");
}

static void test_foreign_file(Fixture *f, gconstpointer data)
{
    raw_db r;
    raw_open(&r, f->path, true);
    MDB_dbi dbi = raw_dbi(&r, "accounts", MDB_CREATE);
    MDB_val k = {3, "bob"}, v = {2, "42"};
    g_assert_cmpint(mdb_put(r.txn, dbi, &k, &v, 0), ==, 0);
    raw_close(&r, true);
    expect_open_error(f->spec, PROCREG_EBACKEND, "not a procreg registry");
}

static void test_wrong_format(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, true);
    raw_put(&r, "meta", "format", 6, "procreg-lmdb 99", 15);
    raw_close(&r, true);
    expect_open_error(f->spec, PROCREG_EBACKEND, "procreg-lmdb 99");
}

static void put_entry(raw_db *r, const char *ns, const char *name,
                      const void *val, size_t len)
{
    char key[600];
    size_t n = (size_t)g_snprintf(key, sizeof key, "%s%c%s", ns, 0, name);
    raw_put(r, "entries", key, n, val, len);
}

/* A file of format 2 (entries of version 1) opens: its entries read as
 * they were (moved into the main database as they are, format 5), new
 * ones are written in the compact version 2, and the file is marked
 * format 5. */
static void test_format_2(Fixture *f, gconstpointer data)
{
    lt_raw_old_file(f->path, 2);
    procreg_owner self;
    procreg_owner_self(&self);
    raw_header h = {.version = 1, .pid = (uint64_t)self.pid,
                    .start_time = self.start_time, .registered_at = -1234,
                    .revision = 7};
    raw_db r;
    raw_open(&r, f->path, true);
    g_assert_false(r.v4);
    put_entry(&r, "old", "e", &h, sizeof h);
    raw_close(&r, true);

    procreg *reg = lt_open(f->spec);
    procreg_entry e = {0};
    g_assert_cmpint(procreg_lookup_entry(reg, "old", "e", &e, NULL), ==, 0);
    g_assert_cmpint(e.owner.pid, ==, self.pid);
    g_assert_cmpint(e.registered_at, ==, -1234);
    g_assert_cmpuint(e.revision, ==, 7);
    procreg_entry_clear(&e);
    g_assert_cmpint(reg_self(reg, "new", "e", NULL), ==, 0);
    g_assert_cmpint(procreg_lookup_entry(reg, "new", "e", &e, NULL), ==, 0);
    procreg_entry_clear(&e);
    procreg_close(reg);

    raw_open(&r, f->path, false);
    g_assert_true(r.v4);
    MDB_val fv = raw_get(&r, "meta", "format", 6);
    g_assert_cmpmem(fv.mv_data, fv.mv_size, "procreg-lmdb 5", 14);
    MDB_val nv = raw_get(&r, "entries", "new\0e", 5);
    g_assert_cmpint(((const uint8_t *)nv.mv_data)[0], ==, 2);
    g_assert_cmpuint(nv.mv_size, <, sizeof h);
    MDB_val ov = raw_get(&r, "entries", "old\0e", 5);
    g_assert_cmpmem(ov.mv_data, ov.mv_size, &h, sizeof h);
    raw_close(&r, false);
}

static void test_corrupt_entries(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(reg_self(reg, "ok", "a", blob_meta(1, 10)), ==, 0);
    g_assert_cmpint(reg_self(reg, "bad", "fine", NULL), ==, 0);
    procreg_close(reg);

    raw_header h = {.version = 1, .pid = (uint64_t)getpid(), .revision = 7};
    procreg_owner self;
    procreg_owner_self(&self);
    h.start_time = self.start_time;
    raw_db r;
    raw_open(&r, f->path, true);
    put_entry(&r, "bad", "short", "abc", 3);
    raw_header v9 = h;
    v9.version = 9;
    put_entry(&r, "bad", "version", &v9, sizeof v9);
    char buf[sizeof h + 5];
    raw_header hm = h;
    hm.flags = 1;
    hm.meta_len = 5;
    memcpy(buf, &hm, sizeof hm);
    memset(buf + sizeof hm, 0xff, 5); /* not a serialised a{sv} */
    put_entry(&r, "bad", "meta", buf, sizeof buf);
    raw_header hl = h;
    hl.meta_len = 1000; /* more than the value holds */
    put_entry(&r, "bad", "len", &hl, sizeof hl);
    raw_header hp = h;
    hp.pid = 0;
    put_entry(&r, "bad", "pid", &hp, sizeof hp);
    raw_close(&r, true);

    reg = lt_open(f->spec);
    const char *bad[] = {"short", "version", "meta", "len", "pid"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        procreg_owner o;
        /* A lookup reads the header only: damaged metadata shows on the
         * calls that return it. */
        g_assert_cmpint(procreg_lookup(reg, "bad", bad[i], &o, NULL), ==,
                        strcmp(bad[i], "meta") == 0 ? 0 : PROCREG_EBACKEND);
        procreg_entry e = {0};
        GError *err = NULL;
        g_assert_cmpint(procreg_lookup_entry(reg, "bad", bad[i], &e, &err), ==,
                        PROCREG_EBACKEND);
        g_assert_nonnull(strstr(err->message, "corrupt entry"));
        g_test_message("%s", err->message);
        g_clear_error(&err);
    }
    /* The damage stays in its namespace. */
    procreg_entry *all = NULL;
    size_t n = 0;
    g_assert_cmpint(procreg_list(reg, "ok", &all, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    procreg_entries_free(all, n);
    GError *err = NULL;
    g_assert_cmpint(procreg_list(reg, "bad", &all, &n, &err), ==,
                    PROCREG_EBACKEND);
    g_test_message("list: %s", err->message);
    g_clear_error(&err);
    g_assert_cmpint(procreg_count(reg, NULL, &n, NULL), ==, PROCREG_EBACKEND);
    procreg_health h2 = {0};
    g_assert_cmpint(procreg_health_check(reg, &h2, NULL), ==, 0);
    g_assert_cmpint(h2.status, !=, PROCREG_HEALTH_OK);
    g_test_message("health: %s", h2.message);
    procreg_health_clear(&h2);

    /* Repair: unregister one by name (a record that cannot be read has no
     * owner to check: that takes PROCREG_FORCE), drop the rest with the
     * namespace. */
    procreg_key *bad_short = NULL;
    g_assert_cmpint(procreg_key_new("bad", "short", &bad_short, NULL), ==, 0);
    g_assert_cmpint(procreg_unregister(reg, "bad", "short", NULL), ==,
                    PROCREG_EBACKEND);
    g_assert_cmpint(procreg_unregister_full(reg, bad_short, 0, PROCREG_FORCE,
                                            NULL),
                    ==, 0);
    procreg_key_unref(bad_short);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "bad", "short", &o, NULL), ==,
                    PROCREG_ENOTFOUND);
    procreg_entry *gone = NULL;
    size_t n_gone = 0;
    g_assert_cmpint(procreg_list(reg, "bad", &gone, &n_gone, NULL), ==,
                    PROCREG_EBACKEND);
    procreg_close(reg);

    procreg_backend *b = NULL;
    g_assert_cmpint(procreg_backend_open(f->spec, NULL, &b, NULL), ==, 0);
    GArray *removed = procreg_entry_array_new();
    g_assert_cmpint(procreg_backend_drop_namespace(b, "bad", removed, NULL),
                    ==, 0);
    g_assert_cmpuint(removed->len, ==, 1); /* only "fine" was an entry */
    g_array_unref(removed);
    size_t cnt = 99;
    g_assert_cmpint(procreg_backend_count(b, NULL, &cnt, NULL), ==, 0);
    g_assert_cmpuint(cnt, ==, 1);
    procreg_backend_close(b);
}

/* An entry of version 2 with the integers @v in @size bytes each (as
 * given: a test may write one wider than its fewest bytes; bytes past the
 * 8th are 1), @extra bytes after them; its length. */
static size_t v2_entry(uint8_t *out, uint8_t flags, const unsigned size[4],
                       const uint64_t v[4], size_t extra)
{
    uint8_t *p = out;
    *p++ = 2;
    *p++ = flags;
    *p++ = (uint8_t)(size[0] | size[1] << 4);
    *p++ = (uint8_t)(size[2] | size[3] << 4);
    for (int i = 0; i < 4; i++)
        for (unsigned b = 0; b < size[i]; b++)
            *p++ = b < 8 ? (uint8_t)(v[i] >> (8 * b)) : 1;
    memset(p, 'x', extra);
    return (size_t)(p - out) + extra;
}

static unsigned fewest(uint64_t x)
{
    unsigned n = 0;
    for (; x != 0; x >>= 8)
        n++;
    return n;
}

/* Entries of version 2 (what format 3 and later write), damaged in each
 * way the decoder checks, at each place the integers are read from (the
 * head of a value, its last 8 bytes, a value shorter than 8): a lookup
 * (owner only) and lookup_entry both report them corrupt, never return
 * their owner; sound ones beside them read back exactly. */
static void test_corrupt_entries_v2(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(reg_self(reg, "v2", "fine", NULL), ==, 0);
    procreg_close(reg);

    procreg_owner self;
    procreg_owner_self(&self);
    /* pid, start time, zigzag(registered_at), revision */
    const uint64_t val[4] = {(uint64_t)self.pid, self.start_time,
                             2 * 1234 - 1 /* -1234 */, 7};
    const unsigned fit[4] = {fewest(val[0]), fewest(val[1]), fewest(val[2]),
                             fewest(val[3])};
    g_assert_cmpuint(fit[1], >=, 1);
    uint8_t buf[64];
    size_t n;
    raw_db r;
    raw_open(&r, f->path, true);
    /* Sound: the tail integers come from the value's last 8 bytes. */
    n = v2_entry(buf, 0, fit, val, 0);
    put_entry(&r, "v2", "good", buf, n);
    /* Sound: the widest integers, the last at the very end. */
    const uint64_t wide[4] = {(uint64_t)self.pid, self.start_time,
                              UINT64_MAX /* INT64_MIN */,
                              0x0102030405060708ull};
    const unsigned wide_fit[4] = {fit[0], fit[1], 8, 8};
    n = v2_entry(buf, 0, wide_fit, wide, 0);
    put_entry(&r, "v2", "good-wide", buf, n);

    const char *bad[] = {"size9",    "cut",      "cut-meta", "cut-header",
                         "wide-pid", "wide-rev", "wide-reg", "short-wide",
                         "zero-pid", "big-pid",  "extra",    "flags",
                         "version"};
    unsigned s[4];
    memcpy(s, fit, sizeof s);
    s[3] = 9; /* the revision, which a lookup does not return */
    n = v2_entry(buf, 0, s, val, 0);
    put_entry(&r, "v2", "size9", buf, n);
    n = v2_entry(buf, 0, fit, val, 0);
    put_entry(&r, "v2", "cut", buf, n - 1);
    /* Cut short with the metadata flag: no "bytes without the flag" to
     * give it away. */
    n = v2_entry(buf, 1, fit, val, 0);
    put_entry(&r, "v2", "cut-meta", buf, n - 1);
    put_entry(&r, "v2", "cut-header", buf, 3);
    memcpy(s, fit, sizeof s);
    s[0]++; /* the pid with a 0 top byte: at the head */
    n = v2_entry(buf, 0, s, val, 0);
    put_entry(&r, "v2", "wide-pid", buf, n);
    memcpy(s, fit, sizeof s);
    s[3]++; /* the revision with a 0 top byte: at the tail */
    n = v2_entry(buf, 0, s, val, 0);
    put_entry(&r, "v2", "wide-rev", buf, n);
    memcpy(s, fit, sizeof s);
    s[2]++;
    n = v2_entry(buf, 0, s, val, 0);
    put_entry(&r, "v2", "wide-reg", buf, n);
    /* Shorter than 8: pid 1, the rest 0 but a revision in 2 bytes. */
    const uint64_t tiny[4] = {1, 0, 0, 7};
    const unsigned tiny_s[4] = {1, 0, 0, 2};
    n = v2_entry(buf, 0, tiny_s, tiny, 0);
    g_assert_cmpuint(n, <, 8);
    put_entry(&r, "v2", "short-wide", buf, n);
    memcpy(s, fit, sizeof s);
    s[0] = 0;
    n = v2_entry(buf, 0, s, val, 0);
    put_entry(&r, "v2", "zero-pid", buf, n);
    const uint64_t big[4] = {(uint64_t)INT_MAX + 1, val[1], val[2], val[3]};
    const unsigned big_s[4] = {4, fit[1], fit[2], fit[3]};
    n = v2_entry(buf, 0, big_s, big, 0);
    put_entry(&r, "v2", "big-pid", buf, n);
    n = v2_entry(buf, 0, fit, val, 3); /* bytes without the metadata flag */
    put_entry(&r, "v2", "extra", buf, n);
    n = v2_entry(buf, 2, fit, val, 0);
    put_entry(&r, "v2", "flags", buf, n);
    n = v2_entry(buf, 0, fit, val, 0);
    buf[0] = 3;
    put_entry(&r, "v2", "version", buf, n);
    raw_close(&r, true);

    reg = lt_open(f->spec);
    procreg_owner o;
    procreg_entry e = {0};
    g_assert_cmpint(procreg_lookup(reg, "v2", "good", &o, NULL), ==, 0);
    g_assert_true(o.pid == self.pid && o.start_time == self.start_time);
    g_assert_cmpint(procreg_lookup_entry(reg, "v2", "good", &e, NULL), ==, 0);
    g_assert_cmpint(e.registered_at, ==, -1234);
    g_assert_cmpuint(e.revision, ==, 7);
    procreg_entry_clear(&e);
    g_assert_cmpint(procreg_lookup_entry(reg, "v2", "good-wide", &e, NULL),
                    ==, 0);
    g_assert_true(e.owner.pid == self.pid &&
                  e.owner.start_time == self.start_time);
    g_assert_cmpint(e.registered_at, ==, INT64_MIN);
    g_assert_cmpuint(e.revision, ==, 0x0102030405060708ull);
    procreg_entry_clear(&e);
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_test_message("%s", bad[i]);
        g_assert_cmpint(procreg_lookup(reg, "v2", bad[i], &o, NULL), ==,
                        PROCREG_EBACKEND);
        GError *err = NULL;
        g_assert_cmpint(procreg_lookup_entry(reg, "v2", bad[i], &e, &err), ==,
                        PROCREG_EBACKEND);
        g_assert_nonnull(strstr(err->message, "corrupt entry"));
        g_test_message("%s", err->message);
        g_clear_error(&err);
    }
    g_assert_cmpint(procreg_lookup(reg, "v2", "fine", &o, NULL), ==, 0);
    procreg_close(reg);
}

/* A key that is not "ns\0name" makes a full listing fail cleanly. */
static void test_corrupt_key(Fixture *f, gconstpointer data)
{
    procreg *reg = lt_open(f->spec);
    g_assert_cmpint(reg_self(reg, "ok", "a", NULL), ==, 0);
    procreg_close(reg);
    raw_header h = {.version = 1, .pid = (uint64_t)getpid()};
    raw_db r;
    raw_open(&r, f->path, true);
    raw_put(&r, "entries", "no-separator", 12, &h, sizeof h);
    raw_put(&r, "entries", "ctl\0na\x01me", 9, &h, sizeof h);
    raw_close(&r, true);
    reg = lt_open(f->spec);
    procreg_entry *all = NULL;
    size_t n = 0;
    GError *err = NULL;
    g_assert_cmpint(procreg_list(reg, NULL, &all, &n, &err), ==,
                    PROCREG_EBACKEND);
    g_test_message("%s", err->message);
    g_clear_error(&err);
    g_assert_cmpint(procreg_list(reg, "ok", &all, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    procreg_entries_free(all, n);
    g_assert_cmpint(procreg_list(reg, "ctl", &all, &n, &err), ==,
                    PROCREG_EBACKEND);
    g_test_message("%s", err->message);
    g_clear_error(&err);
    procreg_close(reg);
}

/* ---- read-only and full file systems ---- */

static bool mount_tmpfs(const char *where, const char *opts, char **why)
{
    if (geteuid() != 0) {
        *why = g_strdup("needs root to mount a tmpfs");
        return false;
    }
    if (mount("procreg-test", where, "tmpfs", 0, opts) != 0) {
        *why = g_strdup_printf("mount -t tmpfs -o %s failed: %s", opts,
                               g_strerror(errno));
        return false;
    }
    return true;
}

static void test_read_only(Fixture *f, gconstpointer data)
{
    char *mnt = g_build_filename(f->dir, "mnt", NULL);
    g_assert_cmpint(g_mkdir(mnt, 0700), ==, 0);
    char *why = NULL;
    bool mounted = mount_tmpfs(mnt, "size=4m,mode=0700", &why);
    if (!mounted && geteuid() == 0) {
        g_test_skip(why);
        g_free(why);
        g_rmdir(mnt);
        g_free(mnt);
        return;
    }
    char *path = g_build_filename(mnt, "reg.mdb", NULL);
    char *spec = g_strdup_printf("lmdb:path=%s", path);
    procreg *reg = lt_open(spec);
    g_assert_cmpint(reg_self(reg, "ro", "kept", NULL), ==, 0);
    procreg_close(reg);

    if (mounted) {
        g_assert_cmpint(mount(NULL, mnt, NULL, MS_REMOUNT | MS_RDONLY, NULL),
                        ==, 0);
    } else {
        /* Not root: the permission bits suffice. */
        g_assert_cmpint(chmod(path, 0400), ==, 0);
    }
    reg = lt_open(spec);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "ro", "kept", &o, NULL), ==, 0);
    GError *err = NULL;
    g_assert_cmpint(procreg_register(reg, "ro", "new", NULL, NULL, NULL, &err),
                    ==, PROCREG_EBACKEND);
    g_assert_nonnull(strstr(err->message, "read-only"));
    g_test_message("%s", err->message);
    g_clear_error(&err);
    procreg_health h = {0};
    g_assert_cmpint(procreg_health_check(reg, &h, NULL), ==, 0);
    g_assert_cmpint(h.status, ==, PROCREG_HEALTH_DEGRADED);
    g_test_message("health: %s", h.message);
    procreg_health_clear(&h);
    procreg_close(reg);
    if (mounted) {
        /* A new registry there: the file system, not a permission. */
        char *other = g_strdup_printf("lmdb:path=%s/new.mdb", mnt);
        g_assert_cmpint(procreg_open(other, &reg, &err), ==, PROCREG_EBACKEND);
        g_test_message("%s", err->message);
        g_assert_nonnull(strstr(err->message, "Read-only file system"));
        g_clear_error(&err);
        g_free(other);
        g_assert_cmpint(umount(mnt), ==, 0);
    } else {
        lt_rmtree(mnt);
    }
    g_rmdir(mnt);
    g_free(path);
    g_free(spec);
    g_free(mnt);
}

static void test_full_disk(Fixture *f, gconstpointer data)
{
    char *mnt = g_build_filename(f->dir, "mnt", NULL);
    g_assert_cmpint(g_mkdir(mnt, 0700), ==, 0);
    char *why = NULL;
    if (!mount_tmpfs(mnt, "size=1m,mode=0700", &why)) {
        g_test_skip(why);
        g_free(why);
        g_rmdir(mnt);
        g_free(mnt);
        return;
    }
    /* Something else on the file system takes room; it goes later. */
    char *filler = g_build_filename(mnt, "filler", NULL);
    char *zeros = g_malloc0(256 << 10);
    g_assert_true(g_file_set_contents(filler, zeros, 256 << 10, NULL));
    g_free(zeros);
    char *spec = g_strdup_printf("lmdb:path=%s/reg.mdb,map_size=256KiB", mnt);
    procreg *reg = lt_open(spec);
    GError *err = NULL;
    int rc = 0, i;
    for (i = 0; i < 1000 && rc == 0; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "k%d", i);
        rc = procreg_register(reg, "full", name, NULL, blob_meta(i, 16384),
                              NULL, &err);
    }
    g_test_message("after %d entries: %s", i - 1, err ? err->message : "");
    g_assert_cmpint(rc, ==, PROCREG_EFULL);
    g_clear_error(&err);
    /* What is there stays readable. */
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(reg, "full", "k0", &o, NULL), ==, 0);
    size_t n = 0;
    g_assert_cmpint(procreg_count(reg, "full", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, (size_t)(i - 1));
    procreg_health h = {0};
    g_assert_cmpint(procreg_health_check(reg, &h, NULL), ==, 0);
    g_test_message("health on a full disk: %s (%s)",
                   procreg_health_status_name(h.status), h.message);
    procreg_health_clear(&h);
    /* Room made elsewhere: writes work again, on the same handle. */
    g_assert_cmpint(g_unlink(filler), ==, 0);
    rc = procreg_register(reg, "full", "after", NULL, NULL, NULL, &err);
    if (rc != 0)
        g_error("register after room was made: %s", err->message);
    rc = procreg_unregister(reg, "full", "k0", &err);
    if (rc != 0)
        g_error("unregister after room was made: %s", err->message);
    g_assert_cmpint(procreg_count(reg, "full", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, (size_t)(i - 1));
    g_free(filler);
    procreg_close(reg);
    g_assert_cmpint(umount(mnt), ==, 0);
    g_rmdir(mnt);
    g_free(spec);
    g_free(mnt);
}

/* ---- the change log ---- */

static void test_log_trim(Fixture *f, gconstpointer data)
{
    char *spec = g_strdup_printf("%s,durability=nosync", f->spec);
    procreg *reg = lt_open(spec);
    for (int i = 0; i < 2100; i++) {
        g_assert_cmpint(reg_self(reg, "log", "k", NULL), ==, 0);
        g_assert_cmpint(procreg_unregister(reg, "log", "k", NULL), ==, 0);
    }
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, false);
    /* At least 4096, trimmed by the write that reached change 4160
     * (backends/lmdb/changelog.c, LOG_TRIM_EVERY): 4136 left. */
    g_assert_cmpuint(raw_count(&r, "events"), ==, 4136);
    /* The last record is change 4200. */
    g_assert_cmpuint(raw_last_change(&r), ==, 4200);
    raw_close(&r, false);
    g_free(spec);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--owner-child") == 0)
        return owner_child_main(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "--grow-child") == 0)
        return grow_child_main(argv[2], argv[3]);
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) \
    g_test_add(path, Fixture, NULL, lt_fx_setup, fn, lt_fx_teardown)
    ADD("/lmdb/options/errors", test_option_errors);
    ADD("/lmdb/options/default-path", test_default_path);
    ADD("/lmdb/env/shared", test_shared_env);
    ADD("/lmdb/env/fork", test_fork);
    ADD("/lmdb/map/grow", test_map_grow);
    ADD("/lmdb/map/adopt", test_map_adopt);
    ADD("/lmdb/map/threads", test_threads_grow);
    ADD("/lmdb/owners/dead", test_dead_owner);
    ADD("/lmdb/owners/dead-offline", test_dead_owner_offline);
    ADD("/lmdb/owners/previous-boot", test_previous_boot);
    ADD("/lmdb/log/damaged", test_log_damaged);
    ADD("/lmdb/files/garbage", test_garbage_file);
    ADD("/lmdb/files/truncated", test_truncated_file);
    ADD("/lmdb/files/foreign", test_foreign_file);
    ADD("/lmdb/files/format", test_wrong_format);
    ADD("/lmdb/files/format-2", test_format_2);
    ADD("/lmdb/files/corrupt-entries", test_corrupt_entries);
    ADD("/lmdb/files/corrupt-entries-v2", test_corrupt_entries_v2);
    ADD("/lmdb/files/corrupt-key", test_corrupt_key);
    ADD("/lmdb/files/read-only", test_read_only);
    ADD("/lmdb/files/full-disk", test_full_disk);
    ADD("/lmdb/log/trim", test_log_trim);
    return g_test_run();
}
