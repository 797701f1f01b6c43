/*
 * What the lmdb backend reads back from its file (backends/lmdb): the
 * fuzz input is written with liblmdb into a copy of a valid registry file
 * (one intact entry fz/intact, owned by this process), then the file is
 * opened with procreg and read and written through the public API.  This
 * reaches the decoders in place (entry values with their serialised a{sv}
 * metadata, keys, owner index records, counters, the change log) without
 * needing them exported.  The first input byte picks where the rest goes:
 *
 *   0  the value of entries["fz\0victim"]
 *   1  a whole entries record: 1 length byte, the key, then the value
 *   2  an owner row: 12 key bytes (pid, start time), the rest the
 *      namespace (format 5: "\xfd" + owner + namespace -> "")
 *   3  a meta record: 1 selector byte ("format", "revision", other), value
 *   4  an events (change log) record: 8 key bytes, the value
 *
 * Expectations: procreg_open() succeeds or fails with a GError; every
 * operation returns one of its documented codes (a damaged record gives
 * PROCREG_EBACKEND, never a crash); health_check() answers; and the
 * intact entry stays readable, with its metadata, whatever damage sits
 * next to it among the entries and owner rows.
 */
#include "fuzz-common.h"

#include <glib/gstdio.h>
#include <lmdb.h>
#include <string.h>
#include <unistd.h>

static char *dir;
static char *path;
static char *spec;
static char *template_bytes;
static gsize template_len;

static void remove_files(void)
{
    const char *suffixes[] = {"", "-lock", "-notify"};
    for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
        char *p = g_strconcat(path, suffixes[i], NULL);
        g_unlink(p);
        g_free(p);
    }
}

static void cleanup(void)
{
    if (dir == NULL)
        return;
    remove_files();
    g_rmdir(dir);
    g_clear_pointer(&dir, g_free);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init_common();
    /* tmpfs when there is one: every commit flushes. */
    dir = g_strdup("/dev/shm/procreg-fuzz-lmdb-XXXXXX");
    if (g_mkdtemp(dir) == NULL) {
        g_free(dir);
        dir = g_dir_make_tmp("procreg-fuzz-lmdb-XXXXXX", NULL);
    }
    FUZZ_CHECK(dir != NULL);
    path = g_build_filename(dir, "reg.mdb", NULL);
    spec = g_strdup_printf("lmdb:path=%s,durability=nosync,map_size=1MiB",
                           path);
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0) {
        fprintf(stderr, "fuzz-lmdb: %s\n", err->message);
        abort();
    }
    FUZZ_CHECK(procreg_register(reg, "fz", "intact", NULL,
                                g_variant_new_parsed("{'tag': <'x'>}"), NULL,
                                NULL) == 0);
    procreg_close(reg);
    FUZZ_CHECK(g_file_get_contents(path, &template_bytes, &template_len,
                                   NULL));
    atexit(cleanup);
    return 0;
}

/* Write one record with liblmdb directly (procreg has the file closed). */
static void raw_put(const char *db, const void *k, size_t klen,
                    const void *v, size_t vlen)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    FUZZ_CHECK(mdb_env_create(&env) == 0);
    mdb_env_set_maxdbs(env, 8);
    mdb_env_set_mapsize(env, (size_t)1 << 20);
    FUZZ_CHECK(mdb_env_open(env, path, MDB_NOSUBDIR | MDB_NOSYNC, 0600) == 0);
    FUZZ_CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    /* Format 5 (backends/lmdb/format.c): entries, owner rows, meta
     * records and changes are in the main database, the last three
     * behind a byte. */
    bool meta = strcmp(db, "meta") == 0, events = strcmp(db, "events") == 0;
    bool owners = strcmp(db, "owners") == 0;
    bool in_main = meta || events || owners || strcmp(db, "entries") == 0;
    FUZZ_CHECK(mdb_dbi_open(txn, in_main ? NULL : db, 0, &dbi) == 0);
    uint8_t buf[1 + 1024];
    size_t off = meta || events || owners ? 1 : 0;
    buf[0] = events ? 0xff : owners ? 0xfd : 0xfe;
    memcpy(buf + off, k, MIN(klen, sizeof buf - off));
    MDB_val key = {MIN(klen, sizeof buf - off) + off, buf};
    MDB_val val = {vlen, (void *)v};
    /* LMDB's own limits (empty or too long keys, full map) refuse some
     * records: then there is nothing to read back. */
    int rc = mdb_put(txn, dbi, &key, &val, 0);
    if (rc == 0)
        FUZZ_CHECK(mdb_txn_commit(txn) == 0);
    else
        mdb_txn_abort(txn);
    mdb_env_close(env);
}

static bool documented(int rc, const int *ok, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (rc == ok[i])
            return true;
    return false;
}

#define EXPECT_ONE_OF(rc, ...)                                                \
    do {                                                                      \
        static const int ok_[] = {__VA_ARGS__};                               \
        if (!documented(rc, ok_, G_N_ELEMENTS(ok_))) {                        \
            fprintf(stderr, "%s:%d: unexpected %s (%d)\n", __FILE__,          \
                    __LINE__, procreg_strerror(rc), rc);                      \
            abort();                                                          \
        }                                                                     \
    } while (0)

static void check_intact(procreg *reg)
{
    procreg_entry e;
    GError *err = NULL;
    int rc = procreg_lookup_entry(reg, "fz", "intact", &e, &err);
    if (rc != 0) {
        fprintf(stderr, "the intact entry is gone: %s\n",
                err ? err->message : procreg_strerror(rc));
        abort();
    }
    FUZZ_CHECK(e.owner.pid == getpid());
    GVariant *want = g_variant_new_parsed("{'tag': <'x'>}");
    FUZZ_CHECK(e.metadata != NULL && g_variant_equal(e.metadata, want));
    g_variant_unref(g_variant_ref_sink(want));
    procreg_entry_clear(&e);
}

static void exercise(procreg *reg, bool intact_expected)
{
    GError *err = NULL;
    procreg_owner o;
    procreg_entry e;
    procreg_entry *a = NULL;
    size_t n = 0;
    int rc;

    rc = procreg_lookup(reg, "fz", "victim", &o, NULL);
    EXPECT_ONE_OF(rc, 0, PROCREG_ENOTFOUND, PROCREG_EBACKEND);
    rc = procreg_lookup_entry(reg, "fz", "victim", &e, &err);
    EXPECT_ONE_OF(rc, 0, PROCREG_ENOTFOUND, PROCREG_EBACKEND);
    if (rc != 0)
        FUZZ_CHECK_ERROR(rc, err);
    else
        FUZZ_CHECK(e.metadata == NULL ||
                   g_variant_is_of_type(e.metadata, G_VARIANT_TYPE_VARDICT));
    g_clear_error(&err);
    procreg_entry_clear(&e);

    const char *namespaces[] = {"fz", NULL};
    for (size_t i = 0; i < G_N_ELEMENTS(namespaces); i++) {
        rc = procreg_list(reg, namespaces[i], &a, &n, &err);
        EXPECT_ONE_OF(rc, 0, PROCREG_EBACKEND);
        if (rc != 0)
            FUZZ_CHECK_ERROR(rc, err);
        for (size_t j = 0; j < n; j++)
            FUZZ_CHECK(a[j].ns != NULL && a[j].name != NULL &&
                       g_utf8_validate(a[j].name, -1, NULL));
        procreg_entries_free(a, n);
        g_clear_error(&err);
        rc = procreg_count(reg, namespaces[i], &n, NULL);
        EXPECT_ONE_OF(rc, 0, PROCREG_EBACKEND);
        rc = procreg_find(reg, namespaces[i], "tag", g_variant_new_string("x"),
                          &a, &n, NULL);
        EXPECT_ONE_OF(rc, 0, PROCREG_EBACKEND);
        procreg_entries_free(a, n);
    }
    procreg_namespace_info *infos = NULL;
    rc = procreg_namespace_list(reg, &infos, &n, NULL);
    EXPECT_ONE_OF(rc, 0, PROCREG_EBACKEND);
    procreg_namespace_info_free(infos, n);

    /* Writes next to the damage.  A damaged record may name another
     * owner: changing it is then refused (the owner rule). */
    rc = procreg_register(reg, "fz", "new", NULL,
                          g_variant_new_parsed("{'tag': <'y'>}"), NULL, &err);
    EXPECT_ONE_OF(rc, 0, PROCREG_EBACKEND, PROCREG_EFULL);
    if (rc != 0)
        FUZZ_CHECK_ERROR(rc, err);
    g_clear_error(&err);
    rc = procreg_update_metadata(reg, "fz", "victim",
                                 g_variant_new_parsed("{'v': <1>}"),
                                 PROCREG_UPDATE_MERGE, &err);
    EXPECT_ONE_OF(rc, 0, PROCREG_ENOTFOUND, PROCREG_EBACKEND, PROCREG_EFULL,
                  PROCREG_ECONFLICT, PROCREG_EPERM);
    g_clear_error(&err);
    rc = procreg_unregister(reg, "fz", "victim", &err);
    EXPECT_ONE_OF(rc, 0, PROCREG_ENOTFOUND, PROCREG_EBACKEND, PROCREG_EFULL,
                  PROCREG_EPERM);
    g_clear_error(&err);

    procreg_health h = {0};
    FUZZ_CHECK(procreg_health_check(reg, &h, NULL) == 0);
    FUZZ_CHECK(h.message != NULL);
    procreg_health_clear(&h);
    GVariant *stats = NULL;
    rc = procreg_stats(reg, &stats, NULL);
    EXPECT_ONE_OF(rc, 0, PROCREG_EBACKEND);
    if (stats != NULL)
        g_variant_unref(stats);

    if (intact_expected)
        check_intact(reg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0] % 5;
    const uint8_t *rest = data + 1;
    size_t len = size - 1;

    remove_files();
    FUZZ_CHECK(g_file_set_contents(path, template_bytes,
                                   (gssize)template_len, NULL));
    bool intact_expected = true;
    static const char victim[] = "fz\0victim";
    switch (mode) {
    case 0:
        raw_put("entries", victim, sizeof victim - 1, rest, len);
        break;
    case 1: {
        size_t klen = len > 0 ? MIN((size_t)rest[0], len - 1) : 0;
        const uint8_t *key = rest + 1;
        /* Writing over the intact entry is not damage next to it. */
        if (klen == sizeof "fz\0intact" - 1 &&
            memcmp(key, "fz\0intact", klen) == 0)
            intact_expected = false;
        raw_put("entries", key, klen, key + klen, len - (len > 0 ? 1 : 0) - klen);
        break;
    }
    case 2: {
        /* The owner and the namespace in the key, the value empty. */
        raw_put("owners", rest, len, "", 0);
        break;
    }
    case 3: {
        static const char *const names[] = {"format", "revision", "x"};
        const char *name = names[len > 0 ? rest[0] % 3 : 0];
        size_t off = len > 0 ? 1 : 0;
        raw_put("meta", name, strlen(name), rest + off, len - off);
        /* A damaged format marker or counter may stop every write, not
         * reads: the intact entry is still checked. */
        break;
    }
    default: {
        uint8_t key[8] = {0};
        memcpy(key, rest, MIN(len, sizeof key));
        size_t off = MIN(len, sizeof key);
        raw_put("events", key, sizeof key, rest + off, len - off);
        break;
    }
    }

    procreg *reg = NULL;
    GError *err = NULL;
    int rc = procreg_open(spec, &reg, &err);
    if (rc != 0) {
        /* Only a damaged format marker may stop the open. */
        if (mode != 3) {
            fprintf(stderr, "open failed: %s\n", err->message);
            abort();
        }
        FUZZ_CHECK_ERROR(rc, err);
        g_error_free(err);
        return 0;
    }
    exercise(reg, intact_expected);
    procreg_close(reg);
    return 0;
}
