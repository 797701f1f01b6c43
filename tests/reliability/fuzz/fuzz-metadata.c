/*
 * Metadata: arbitrary bytes read as a serialised a{sv} (untrusted, as
 * g_variant_new_from_bytes() reads a value back from a file or the wire),
 * then registered, read back, merged, replaced and searched through every
 * backend of the build that lives in this process or in a private file:
 * ghash, ckht, optimized over each, and lmdb (durability=nosync, in a
 * temporary directory).  The first input byte picks variations.
 *
 * Expectations:
 *  - g_variant_get_normal_form() gives a normal-form a{sv};
 *  - register accepts any a{sv}; lookup_entry returns metadata equal to
 *    it (normal forms compared: lmdb stores the normal form);
 *  - a MERGE gives what the documented rule gives (old keys the update
 *    lacks, then every key of the update), a REPLACE gives the update;
 *  - for every key of the metadata whose value find can match (string,
 *    boolean, integer), procreg_find() returns exactly the entries a scan
 *    of procreg_list() says hold that value (the first value of a key that
 *    appears twice, as g_variant_lookup_value() sees it), also when the
 *    value is given as an integer of another width;
 *  - every backend gives the same answers; each ends empty.
 */
#include "fuzz-common.h"

#include <glib/gstdio.h>
#include <string.h>

#define NS "fz"
#define MAX_REGS 6

static procreg *regs[MAX_REGS];
static char *labels[MAX_REGS];
static int n_regs;
static char *tmpdir;

static void open_one(const char *spec)
{
    GError *err = NULL;
    procreg *r = NULL;
    if (procreg_open(spec, &r, &err) != 0) {
        fprintf(stderr, "fuzz-metadata: cannot open '%s': %s\n", spec,
                err->message);
        abort();
    }
    regs[n_regs] = r;
    labels[n_regs] = g_strdup(spec);
    n_regs++;
}

static bool have_backend(const char *name)
{
    char **names = procreg_backend_names();
    bool found = g_strv_contains((const char *const *)names, name);
    g_strfreev(names);
    return found;
}

static void cleanup(void)
{
    for (int i = 0; i < n_regs; i++) {
        procreg_close(regs[i]);
        g_free(labels[i]);
    }
    n_regs = 0;
    if (tmpdir != NULL) {
        const char *files[] = {"reg.mdb", "reg.mdb-lock", "reg.mdb-notify"};
        for (size_t i = 0; i < G_N_ELEMENTS(files); i++) {
            char *p = g_build_filename(tmpdir, files[i], NULL);
            g_unlink(p);
            g_free(p);
        }
        g_rmdir(tmpdir);
        g_clear_pointer(&tmpdir, g_free);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init_common();
    open_one("ghash");
    if (have_backend("ckht"))
        open_one("ckht");
    if (have_backend("optimized")) {
        open_one("optimized:inner=ghash");
        if (have_backend("ckht"))
            open_one("optimized:inner=ckht,negative_cache=on");
    }
    if (have_backend("lmdb")) {
        /* On tmpfs when there is one: a flush per commit costs
         * milliseconds on a disk. */
        if (g_file_test("/dev/shm", G_FILE_TEST_IS_DIR)) {
            tmpdir = g_strdup("/dev/shm/procreg-fuzz-XXXXXX");
            if (g_mkdtemp(tmpdir) == NULL)
                g_clear_pointer(&tmpdir, g_free);
        }
        if (tmpdir == NULL)
            tmpdir = g_dir_make_tmp("procreg-fuzz-XXXXXX", NULL);
        FUZZ_CHECK(tmpdir != NULL);
        char *spec = g_strdup_printf("lmdb:path=%s/reg.mdb,durability=nosync",
                                     tmpdir);
        open_one(spec);
        g_free(spec);
    }
    atexit(cleanup);
    return 0;
}

static bool same_metadata(GVariant *a, GVariant *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    GVariant *na = g_variant_get_normal_form(a);
    GVariant *nb = g_variant_get_normal_form(b);
    bool eq = g_variant_equal(na, nb);
    g_variant_unref(na);
    g_variant_unref(nb);
    return eq;
}

/* What a MERGE of @update into @old stores (procreg.h: new keys are
 * added, equal keys win), by GVariantDict as the rule reads. */
static GVariant *expected_merge(GVariant *old, GVariant *update)
{
    GVariantDict d;
    g_variant_dict_init(&d, old);
    GVariantIter it;
    const char *k;
    GVariant *v;
    g_variant_iter_init(&it, update);
    while (g_variant_iter_next(&it, "{&sv}", &k, &v)) {
        g_variant_dict_insert_value(&d, k, v);
        g_variant_unref(v);
    }
    return g_variant_ref_sink(g_variant_dict_end(&d));
}

static void check_entry(procreg *r, const char *name, GVariant *want)
{
    procreg_entry e;
    GError *err = NULL;
    int rc = procreg_lookup_entry(r, NS, name, &e, &err);
    if (rc != 0)
        fprintf(stderr, "lookup_entry %s: %s\n", name, err->message);
    FUZZ_CHECK(rc == 0);
    if (!same_metadata(e.metadata, want)) {
        char *a = e.metadata ? g_variant_print(e.metadata, TRUE) : NULL;
        char *b = want ? g_variant_print(want, TRUE) : NULL;
        fprintf(stderr, "%s: metadata %s, expected %s\n",
                procreg_get_spec(r), a, b);
        abort();
    }
    procreg_entry_clear(&e);
}

/* Names of the entries of NS whose metadata maps @k to @val, by a scan. */
static GString *scan(procreg *r, const char *k, GVariant *val)
{
    GString *s = g_string_new(NULL);
    procreg_entry *all = NULL;
    size_t n = 0;
    FUZZ_CHECK(procreg_list(r, NS, &all, &n, NULL) == 0);
    for (size_t i = 0; i < n; i++) {
        if (all[i].metadata == NULL)
            continue;
        GVariant *v = g_variant_lookup_value(all[i].metadata, k, NULL);
        if (v != NULL && procreg_metadata_value_equal(v, val))
            g_string_append_printf(s, "%s;", all[i].name);
        if (v != NULL)
            g_variant_unref(v);
    }
    procreg_entries_free(all, n);
    return s;
}

static GString *find(procreg *r, const char *k, GVariant *val)
{
    GString *s = g_string_new(NULL);
    procreg_entry *found = NULL;
    size_t n = 0;
    GError *err = NULL;
    int rc = procreg_find(r, NS, k, val, &found, &n, &err);
    if (rc != 0)
        fprintf(stderr, "find '%s': %s\n", k, err->message);
    FUZZ_CHECK(rc == 0);
    for (size_t i = 0; i < n; i++)
        g_string_append_printf(s, "%s;", found[i].name);
    procreg_entries_free(found, n);
    size_t count = 0;
    FUZZ_CHECK(procreg_find_count(r, NS, k, val, &count, NULL) == 0);
    FUZZ_CHECK(count == n);
    return s;
}

/* The same integer in another width, or NULL. */
static GVariant *other_width(GVariant *v)
{
    switch (g_variant_classify(v)) {
    case G_VARIANT_CLASS_BYTE: return g_variant_new_int64(g_variant_get_byte(v));
    case G_VARIANT_CLASS_UINT16: return g_variant_new_uint64(g_variant_get_uint16(v));
    case G_VARIANT_CLASS_INT16: return g_variant_new_int32(g_variant_get_int16(v));
    case G_VARIANT_CLASS_UINT32: return g_variant_new_int64(g_variant_get_uint32(v));
    case G_VARIANT_CLASS_INT32: return g_variant_new_int64(g_variant_get_int32(v));
    case G_VARIANT_CLASS_INT64: {
        gint64 x = g_variant_get_int64(v);
        if (x >= 0)
            return g_variant_new_uint64((guint64)x);
        return x >= G_MININT32 ? g_variant_new_int32((gint32)x) : NULL;
    }
    case G_VARIANT_CLASS_UINT64: {
        guint64 x = g_variant_get_uint64(v);
        return x <= G_MAXINT64 ? g_variant_new_int64((gint64)x) : NULL;
    }
    default: return NULL;
    }
}

/* find agrees with the scan for every matchable key of @meta; returns the
 * concatenated answers, for comparing backends. */
static void check_finds(procreg *r, GVariant *meta, GString *answers)
{
    GVariantIter it;
    const char *k;
    GVariant *ignored;
    g_variant_iter_init(&it, meta);
    int budget = 16; /* bound the work per input */
    while (budget-- > 0 && g_variant_iter_next(&it, "{&sv}", &k, &ignored)) {
        g_variant_unref(ignored);
        if (*k == '\0' || !g_utf8_validate(k, -1, NULL))
            continue;
        GVariant *val = g_variant_lookup_value(meta, k, NULL);
        if (val == NULL || !procreg_metadata_value_indexable(val)) {
            if (val != NULL)
                g_variant_unref(val);
            continue;
        }
        GString *want = scan(r, k, val), *got = find(r, k, val);
        if (strcmp(want->str, got->str) != 0) {
            char *p = g_variant_print(val, TRUE);
            fprintf(stderr, "%s: find('%s', %s) = {%s}, scan = {%s}\n",
                    procreg_get_spec(r), k, p, got->str, want->str);
            abort();
        }
        g_string_append_printf(answers, "%s=%s|", k, got->str);
        GVariant *w = other_width(val);
        if (w != NULL) {
            g_variant_ref_sink(w);
            GString *got2 = find(r, k, w);
            if (strcmp(got2->str, got->str) != 0) {
                char *p = g_variant_print(w, TRUE);
                char *q = g_variant_print(val, TRUE);
                fprintf(stderr, "%s: find('%s', %s) = {%s} but find('%s', "
                        "%s) = {%s}\n", procreg_get_spec(r), k, p, got2->str,
                        k, q, got->str);
                abort();
            }
            g_string_free(got2, TRUE);
            g_variant_unref(w);
        }
        g_string_free(want, TRUE);
        g_string_free(got, TRUE);
        g_variant_unref(val);
    }
}

static void run_one(procreg *r, GVariant *meta, unsigned flags,
                    GString *answers)
{
    GError *err = NULL;
    int rc = procreg_register(r, NS, "a", NULL, meta, NULL, &err);
    if (rc != 0) {
        /* lmdb refuses metadata over its size limit, nothing else may
         * fail on an a{sv}. */
        FUZZ_CHECK(rc == PROCREG_EFULL);
        FUZZ_CHECK_ERROR(rc, err);
        g_error_free(err);
        g_string_append(answers, "full|");
        return;
    }
    check_entry(r, "a", meta);

    GVariant *base = g_variant_ref_sink(
        g_variant_new_parsed("{'base': <1>, 'x': <'y'>, 'b': <true>}"));
    FUZZ_CHECK(procreg_register(r, NS, "b", NULL, base, NULL, NULL) == 0);
    GVariant *want_b;
    if (flags & 1) {
        FUZZ_CHECK(procreg_update_metadata(r, NS, "b", meta,
                                           PROCREG_UPDATE_REPLACE,
                                           NULL) == 0);
        want_b = g_variant_ref(meta);
    } else {
        FUZZ_CHECK(procreg_update_metadata(r, NS, "b", meta,
                                           PROCREG_UPDATE_MERGE, NULL) == 0);
        want_b = expected_merge(base, meta);
    }
    check_entry(r, "b", want_b);
    if (flags & 2) {
        /* Merging the same dictionary again changes nothing more. */
        FUZZ_CHECK(procreg_update_metadata(r, NS, "b", meta,
                                           PROCREG_UPDATE_MERGE, NULL) == 0);
        GVariant *again = expected_merge(want_b, meta);
        check_entry(r, "b", again);
        g_variant_unref(want_b);
        want_b = again;
    }

    check_finds(r, meta, answers);
    check_finds(r, want_b, answers);

    procreg_entry *all = NULL;
    size_t n = 0;
    FUZZ_CHECK(procreg_list(r, NS, &all, &n, NULL) == 0);
    FUZZ_CHECK(n == 2);
    FUZZ_CHECK(strcmp(all[0].name, "a") == 0 && strcmp(all[1].name, "b") == 0);
    FUZZ_CHECK(same_metadata(all[0].metadata, meta));
    FUZZ_CHECK(same_metadata(all[1].metadata, want_b));
    procreg_entries_free(all, n);

    FUZZ_CHECK(procreg_unregister(r, NS, "a", NULL) == 0);
    FUZZ_CHECK(procreg_unregister(r, NS, "b", NULL) == 0);
    size_t count = 1;
    FUZZ_CHECK(procreg_count(r, NS, &count, NULL) == 0 && count == 0);
    g_variant_unref(want_b);
    g_variant_unref(base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    GBytes *bytes = g_bytes_new(data + 1, size - 1);
    GVariant *meta = g_variant_ref_sink(
        g_variant_new_from_bytes(G_VARIANT_TYPE_VARDICT, bytes, FALSE));
    g_bytes_unref(bytes);

    GVariant *norm = g_variant_get_normal_form(meta);
    FUZZ_CHECK(g_variant_is_normal_form(norm));
    FUZZ_CHECK(g_variant_is_of_type(norm, G_VARIANT_TYPE_VARDICT));
    g_variant_unref(norm);

    GString *first = NULL;
    for (int i = 0; i < n_regs; i++) {
        GString *answers = g_string_new(NULL);
        run_one(regs[i], meta, flags, answers);
        if (first == NULL) {
            first = answers;
            continue;
        }
        /* lmdb may refuse what fits in memory; otherwise all agree. */
        if (strcmp(answers->str, "full|") != 0 &&
            strcmp(first->str, answers->str) != 0) {
            fprintf(stderr, "%s and %s disagree:\n  %s\n  %s\n", labels[0],
                    labels[i], first->str, answers->str);
            abort();
        }
        g_string_free(answers, TRUE);
    }
    g_string_free(first, TRUE);
    g_variant_unref(meta);
    return 0;
}
