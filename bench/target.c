/* Opening and closing what is measured: a procreg backend or a baseline. */
#include "bench.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <unistd.h>

static char *scratch = NULL;
static char *scratch_parent = NULL;

void bench_scratch_set_parent(const char *dir)
{
    g_free(scratch_parent);
    scratch_parent = g_strdup(dir);
}

/* Under --scratch DIR; else tmpfs (/dev/shm) when there is one, so a
 * persistent backend's flushes measure its own work, not the disk; else
 * the temporary directory. */
const char *bench_scratch_dir(void)
{
    if (scratch)
        return scratch;
    const char *parent = scratch_parent;
    if (!parent && g_file_test("/dev/shm", G_FILE_TEST_IS_DIR) &&
        access("/dev/shm", W_OK) == 0)
        parent = "/dev/shm";
    if (!parent)
        parent = g_get_tmp_dir();
    char *tmpl = g_build_filename(parent, "procreg-bench-XXXXXX", NULL);
    if (!g_mkdtemp(tmpl)) {
        int e = errno;
        fprintf(stderr, "procreg-bench: cannot make a scratch directory "
                        "in %s: %s\n", parent, g_strerror(e));
        exit(1);
    }
    scratch = tmpl;
    return scratch;
}

/* Remove what is under @dir, two levels deep (LMDB: a file or a folder
 * with data.mdb and lock.mdb). */
static void empty_dir(const char *dir, int depth)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    if (!d)
        return;
    const char *n;
    while ((n = g_dir_read_name(d))) {
        char *p = g_build_filename(dir, n, NULL);
        if (depth > 0 && g_file_test(p, G_FILE_TEST_IS_DIR) &&
            !g_file_test(p, G_FILE_TEST_IS_SYMLINK)) {
            empty_dir(p, depth - 1);
            g_rmdir(p);
        } else {
            g_unlink(p);
        }
        g_free(p);
    }
    g_dir_close(d);
}

void bench_scratch_empty(void)
{
    if (scratch)
        empty_dir(scratch, 1);
}

void bench_scratch_remove(void)
{
    if (!scratch)
        return;
    empty_dir(scratch, 1);
    g_rmdir(scratch);
    g_clear_pointer(&scratch, g_free);
}

int bench_target_open(bench_target *t, const char *label, size_t capacity,
                      GError **error)
{
    memset(t, 0, sizeof *t);
    t->label = g_strdup(label);
    if (strcmp(label, "raw-ghash") == 0) {
        t->kind = BENCH_TARGET_RAW_GHASH;
        t->rg = raw_ghash_new();
        return 0;
    }
    if (strcmp(label, "raw-ckht") == 0) {
        t->kind = BENCH_TARGET_RAW_CKHT;
#if defined(BENCH_HAVE_CK)
        t->rc = raw_ckht_new(capacity);
        if (t->rc)
            return 0;
        g_set_error(error, PROCREG_ERROR, PROCREG_ENOMEM,
                    "raw-ckht: ck_ht_init failed");
#else
        (void)capacity;
        g_set_error(error, PROCREG_ERROR, PROCREG_ENOTSUP,
                    "raw-ckht: this build has no Concurrency Kit");
#endif
        g_clear_pointer(&t->label, g_free);
        return -1;
    }
    if (strcmp(label, "raw-lmdb") == 0) {
        t->kind = BENCH_TARGET_RAW_LMDB;
#if defined(BENCH_HAVE_LMDB)
        t->rl = raw_lmdb_new(bench_scratch_dir(), error);
        if (t->rl)
            return 0;
#else
        g_set_error(error, PROCREG_ERROR, PROCREG_ENOTSUP,
                    "raw-lmdb: this build has no LMDB");
#endif
        g_clear_pointer(&t->label, g_free);
        return -1;
    }
    t->kind = BENCH_TARGET_PROCREG;
    if (scratch && strstr(label, scratch))
        empty_dir(scratch, 1);
    int rc = procreg_open(label, &t->reg, error);
    if (rc < 0)
        g_clear_pointer(&t->label, g_free);
    return rc;
}

/* What the bench registered in a registry that keeps it after close (an
 * lmdb file outside the scratch directory, an etcd prefix: there the
 * process's lease keeps the entries until it expires) goes, so the next
 * target or workload on that spec starts empty. */
static void drop_what_stays(bench_target *t)
{
    if (strstr(t->label, "etcd") == NULL && strstr(t->label, "lmdb") == NULL)
        return;
    procreg_namespace_info *ns = NULL;
    size_t n = 0;
    if (procreg_namespace_list(t->reg, &ns, &n, NULL) != 0)
        return;
    for (size_t i = 0; i < n; i++)
        procreg_namespace_drop(t->reg, ns[i].ns, NULL, NULL, NULL);
    procreg_namespace_info_free(ns, n);
}

void bench_target_close(bench_target *t)
{
    switch (t->kind) {
    case BENCH_TARGET_PROCREG:
        drop_what_stays(t);
        procreg_close(t->reg);
        break;
    case BENCH_TARGET_RAW_GHASH:
        raw_ghash_free(t->rg);
        break;
    case BENCH_TARGET_RAW_CKHT:
#if defined(BENCH_HAVE_CK)
        raw_ckht_free(t->rc);
#endif
        break;
    case BENCH_TARGET_RAW_LMDB:
#if defined(BENCH_HAVE_LMDB)
        raw_lmdb_free(t->rl);
#endif
        break;
    }
    g_free(t->label);
    memset(t, 0, sizeof *t);
}

void bench_target_thread_begin(bench_target *t, bench_target_thread *tt)
{
    tt->epoch_record = NULL;
    tt->lmdb_txn = NULL;
    tt->retired = 0;
#if defined(BENCH_HAVE_CK)
    if (t->kind == BENCH_TARGET_RAW_CKHT)
        raw_ckht_thread_begin(t->rc, tt);
#else
    (void)t;
#endif
}

void bench_target_thread_end(bench_target *t, bench_target_thread *tt)
{
#if defined(BENCH_HAVE_CK)
    if (t->kind == BENCH_TARGET_RAW_CKHT)
        raw_ckht_thread_end(t->rc, tt);
#endif
#if defined(BENCH_HAVE_LMDB)
    if (t->kind == BENCH_TARGET_RAW_LMDB)
        raw_lmdb_thread_end(t->rl, tt);
#endif
    (void)t;
    (void)tt;
}

/* An unsigned figure from a dictionary, whatever its integer type. */
static bool dict_uint(GVariant *dict, const char *key, size_t *out)
{
    GVariant *v = g_variant_lookup_value(dict, key, NULL);
    if (!v)
        return false;
    bool ok = true;
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_UINT64))
        *out = (size_t)g_variant_get_uint64(v);
    else if (g_variant_is_of_type(v, G_VARIANT_TYPE_INT64))
        *out = (size_t)MAX(g_variant_get_int64(v), 0);
    else if (g_variant_is_of_type(v, G_VARIANT_TYPE_UINT32))
        *out = g_variant_get_uint32(v);
    else if (g_variant_is_of_type(v, G_VARIANT_TYPE_INT32))
        *out = (size_t)MAX(g_variant_get_int32(v), 0);
    else
        ok = false;
    g_variant_unref(v);
    return ok;
}

bool bench_target_memory(bench_target *t, size_t *bytes)
{
#if defined(BENCH_HAVE_LMDB)
    if (t->kind == BENCH_TARGET_RAW_LMDB)
        return raw_lmdb_file_bytes(t->rl, bytes);
#endif
    if (t->kind != BENCH_TARGET_PROCREG)
        return false;
    GVariant *stats = NULL;
    if (procreg_stats(t->reg, &stats, NULL) < 0 || !stats)
        return false;
    static const char *const names[] = {"memory_bytes", "memory", NULL};
    bool found = false;
    for (int i = 0; names[i] && !found; i++)
        found = dict_uint(stats, names[i], bytes);
    if (!found) {
        GVariant *bs = g_variant_lookup_value(stats, "backend_stats",
                                              G_VARIANT_TYPE_VARDICT);
        if (bs) {
            for (int i = 0; names[i] && !found; i++)
                found = dict_uint(bs, names[i], bytes);
            g_variant_unref(bs);
        }
    }
    g_variant_unref(stats);
    return found;
}
