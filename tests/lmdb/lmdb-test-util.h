/* Helpers shared by the lmdb backend tests. */
#ifndef PROCREG_TESTS_LMDB_UTIL_H
#define PROCREG_TESTS_LMDB_UTIL_H

#include <procreg/procreg.h>

#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A fresh directory for one test; tmpfs (/dev/shm) when there is one, so
 * thousands of commits stay fast, else $TMPDIR. */
static inline char *lt_tmpdir(void)
{
    GError *err = NULL;
    char *dir = NULL;
    if (g_file_test("/dev/shm", G_FILE_TEST_IS_DIR) &&
        access("/dev/shm", W_OK) == 0) {
        char *tmpl = g_strdup("/dev/shm/procreg-lmdb-test-XXXXXX");
        dir = g_mkdtemp(tmpl);
        if (dir == NULL)
            g_free(tmpl);
    }
    if (dir == NULL)
        dir = g_dir_make_tmp("procreg-lmdb-test-XXXXXX", &err);
    g_assert_no_error(err);
    g_assert_nonnull(dir);
    return dir;
}

/* rm -r @dir (files only one level deep plus one level of directories). */
static inline void lt_rmtree(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    if (d == NULL)
        return;
    const char *n;
    while ((n = g_dir_read_name(d)) != NULL) {
        char *p = g_build_filename(dir, n, NULL);
        if (g_file_test(p, G_FILE_TEST_IS_DIR) &&
            !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
            lt_rmtree(p);
        else
            g_unlink(p);
        g_free(p);
    }
    g_dir_close(d);
    g_rmdir(dir);
}

/* ---- one test's registry file ---- */

/* A private directory (lt_tmpdir()), the file reg.mdb in it, and its
 * spec: "lmdb:path=FILE" and the options a test adds. */
typedef struct {
    char *dir;
    char *path;
    char *spec;
} lt_fixture;

/* @options: appended to the spec as they are (",durability=nosync"), or
 * NULL for none. */
static inline void lt_fixture_init(lt_fixture *f, const char *options)
{
    f->dir = lt_tmpdir();
    f->path = g_build_filename(f->dir, "reg.mdb", NULL);
    f->spec = g_strdup_printf("lmdb:path=%s%s", f->path,
                              options != NULL ? options : "");
}

/* The directory goes with everything in it. */
static inline void lt_fixture_clear(lt_fixture *f)
{
    lt_rmtree(f->dir);
    g_free(f->dir);
    g_free(f->path);
    g_free(f->spec);
}

/* g_test_add()'s setup and teardown for a test with no options; the
 * test's data is the test's own. */
static inline void lt_fx_setup(lt_fixture *f, gconstpointer data)
{
    (void)data;
    lt_fixture_init(f, NULL);
}

static inline void lt_fx_teardown(lt_fixture *f, gconstpointer data)
{
    (void)data;
    lt_fixture_clear(f);
}

static inline procreg *lt_open(const char *spec)
{
    procreg *reg = NULL;
    GError *err = NULL;
    int rc = procreg_open(spec, &reg, &err);
    if (rc != 0)
        g_error("opening %s: %s", spec, err ? err->message : "?");
    return reg;
}

/* A figure of the backend's stats (backend_stats/@name) as a uint64; -1
 * when absent. */
static inline gint64 lt_stat(procreg *reg, const char *name)
{
    GVariant *st = NULL;
    gint64 out = -1;
    if (procreg_stats(reg, &st, NULL) != 0)
        return -1;
    GVariant *b = g_variant_lookup_value(st, "backend_stats",
                                         G_VARIANT_TYPE_VARDICT);
    GVariant *v = b ? g_variant_lookup_value(b, name, NULL) : NULL;
    if (v != NULL) {
        if (g_variant_is_of_type(v, G_VARIANT_TYPE_UINT64))
            out = (gint64)g_variant_get_uint64(v);
        else if (g_variant_is_of_type(v, G_VARIANT_TYPE_UINT32))
            out = g_variant_get_uint32(v);
        else if (g_variant_is_of_type(v, G_VARIANT_TYPE_BOOLEAN))
            out = g_variant_get_boolean(v);
        g_variant_unref(v);
    }
    if (b != NULL)
        g_variant_unref(b);
    g_variant_unref(st);
    return out;
}

/* One byte over a pipe between a test and its child. */
static inline void lt_say(int fd, char c)
{
    g_assert_cmpint(write(fd, &c, 1), ==, 1);
}

/* The next byte from @fd (fails at EOF: the other side died). */
static inline char lt_hear(int fd)
{
    char c = 0;
    g_assert_cmpint(read(fd, &c, 1), ==, 1);
    return c;
}

#endif
