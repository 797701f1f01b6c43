/*
 * ckht's and ghash's packed owner (backends/slab/packed-owner.h): owners
 * at the edges of what packs in one word (pid 1 and 2^22 - 1, start time
 * 0 and 2^42 - 1) and past them (pid 2^22, INT32_MAX, 0, -1;
 * start time 2^42, UINT64_MAX), which both keep whole in front of the
 * entry, with and without metadata in front as well.  Each must come back
 * exactly from register's current entry, lookup, lookup_entry, list_all,
 * update_metadata and unregister.  unregister_owned removes an entry only
 * for its own owner by the owner rule (the same pid; the same start time
 * unless either is 0), and gives it back whole.  Metadata that comes and
 * goes (ghash then moves the entry: the pointer sits in front of it only
 * when there is metadata) keeps every entry, its owner and its place in
 * its namespace's list.  Each test runs on both backends.
 */
#include <procreg/backend.h>

#include <stdint.h>
#include <stdlib.h>

static const pid_t pids[] = {1, (1 << 22) - 1, 1 << 22, INT32_MAX, 0, -1};
static const uint64_t start_times[] = {0, (UINT64_C(1) << 42) - 1,
                                       UINT64_C(1) << 42, UINT64_MAX};

#define N_PIDS G_N_ELEMENTS(pids)
#define N_TIMES G_N_ELEMENTS(start_times)
#define N_OWNERS (N_PIDS * N_TIMES)

/* Owner @i: a pid and a start time; its key's name is "o<i>". */
static procreg_owner owner_of(size_t i)
{
    procreg_owner o = {.pid = pids[i / N_TIMES],
                       .start_time = start_times[i % N_TIMES]};

    return o;
}

static procreg_key *key_of(size_t i)
{
    procreg_key *key = NULL;
    char name[16];

    g_snprintf(name, sizeof name, "o%zu", i);
    g_assert_cmpint(procreg_key_new("owners", name, &key, NULL), ==, 0);
    return key;
}

static GVariant *metadata_of(size_t i)
{
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "i", "t", (guint64)i);
    return g_variant_ref_sink(g_variant_dict_end(&d));
}

static void assert_owner(const procreg_owner *got, size_t i)
{
    procreg_owner want = owner_of(i);

    g_assert_cmpint(got->pid, ==, want.pid);
    g_assert_cmpuint(got->start_time, ==, want.start_time);
}

/* @e is entry @i, with metadata or without. */
static void assert_entry(const procreg_entry *e, size_t i, bool with_metadata)
{
    assert_owner(&e->owner, i);
    if (with_metadata) {
        GVariant *want = metadata_of(i);

        g_assert_nonnull(e->metadata);
        g_assert_true(g_variant_equal(e->metadata, want));
        g_variant_unref(want);
    } else {
        g_assert_null(e->metadata);
    }
    g_assert_cmpint(e->registered_at, ==, (int64_t)i * 1000);
}

/* A test's backend and variant. */
typedef struct {
    const char *backend;
    bool with_metadata;
} owners_case;

static void test_owners(gconstpointer data)
{
    const owners_case *c = data;
    bool with_metadata = c->with_metadata;
    procreg_backend *b = NULL;
    GArray *all = procreg_entry_array_new();
    procreg_entry entry;
    procreg_owner owner;
    size_t i;

    g_assert_cmpint(procreg_backend_open(c->backend, NULL, &b, NULL), ==, 0);
    for (i = 0; i < N_OWNERS; i++) {
        procreg_key *key = key_of(i);
        procreg_record record = {.owner = owner_of(i),
                                 .registered_at = (int64_t)i * 1000};

        record.metadata = with_metadata ? metadata_of(i) : NULL;
        g_assert_cmpint(procreg_backend_register_entry(b, key, &record,
                                                       &entry, NULL), ==, 0);
        assert_entry(&entry, i, with_metadata);
        procreg_entry_clear(&entry);
        if (record.metadata != NULL)
            g_variant_unref(record.metadata);
        procreg_key_unref(key);
    }

    for (i = 0; i < N_OWNERS; i++) {
        procreg_key *key = key_of(i);

        g_assert_cmpint(procreg_backend_lookup(b, key, &owner), ==, 0);
        assert_owner(&owner, i);
        g_assert_cmpint(procreg_backend_lookup_entry(b, key, &entry, NULL),
                        ==, 0);
        assert_entry(&entry, i, with_metadata);
        procreg_entry_clear(&entry);
        procreg_key_unref(key);
    }

    g_assert_cmpint(procreg_backend_list_all(b, "owners", all, NULL), ==, 0);
    g_assert_cmpuint(all->len, ==, N_OWNERS);
    for (guint j = 0; j < all->len; j++) {
        const procreg_entry *e = &g_array_index(all, procreg_entry, j);

        g_assert_true(e->name[0] == 'o');
        assert_entry(e, strtoul(e->name + 1, NULL, 10), with_metadata);
    }

    for (i = 0; i < N_OWNERS; i++) {
        procreg_key *key = key_of(i);
        GVariant *metadata = with_metadata ? metadata_of(i) : NULL;

        /* A new entry of the same owner, metadata as before. */
        g_assert_cmpint(procreg_backend_update_metadata(b, key, metadata, 0,
                                                        &entry, NULL), ==, 0);
        assert_entry(&entry, i, with_metadata);
        procreg_entry_clear(&entry);
        g_assert_cmpint(procreg_backend_unregister(b, key, 0, &entry, NULL),
                        ==, 0);
        assert_entry(&entry, i, with_metadata);
        procreg_entry_clear(&entry);
        g_assert_cmpint(procreg_backend_lookup(b, key, &owner), ==,
                        PROCREG_ENOTFOUND);
        if (metadata != NULL)
            g_variant_unref(metadata);
        procreg_key_unref(key);
    }
    g_array_unref(all);
    procreg_backend_close(b);
}

/* The same owners through unregister_owned: another pid and (both
 * known) another start time are refused and change nothing; the owner,
 * or its pid with start time 0, removes the entry. */
static void test_unregister_owned(gconstpointer data)
{
    const owners_case *c = data;
    procreg_backend *b = NULL;
    procreg_entry entry;
    procreg_owner owner;
    size_t i;

    g_assert_cmpint(procreg_backend_open(c->backend, NULL, &b, NULL), ==, 0);
    for (i = 0; i < N_OWNERS; i++) {
        procreg_key *key = key_of(i);
        procreg_record record = {.owner = owner_of(i),
                                 .registered_at = (int64_t)i * 1000};

        record.metadata = metadata_of(i);
        g_assert_cmpint(procreg_backend_register_entry(b, key, &record, NULL,
                                                       NULL), ==, 0);
        g_variant_unref(record.metadata);
        procreg_key_unref(key);
    }
    for (i = 0; i < N_OWNERS; i++) {
        procreg_key *key = key_of(i);
        procreg_owner mine = owner_of(i);
        procreg_owner other_pid = owner_of((i + N_TIMES) % N_OWNERS);
        procreg_owner other_start = {mine.pid, mine.start_time ^ 1};

        g_assert_cmpint(procreg_backend_unregister_owned(b, key, &other_pid,
                                                         &entry), ==,
                        PROCREG_EPERM);
        if (mine.start_time != 0)
            g_assert_cmpint(procreg_backend_unregister_owned(
                                b, key, &other_start, &entry),
                            ==, PROCREG_EPERM);
        g_assert_cmpint(procreg_backend_lookup(b, key, &owner), ==, 0);
        assert_owner(&owner, i);
        if (i % 2 == 1)
            mine.start_time = 0; /* unknown: the pid decides */
        g_assert_cmpint(procreg_backend_unregister_owned(b, key, &mine,
                                                         &entry), ==, 0);
        assert_entry(&entry, i, true);
        procreg_entry_clear(&entry);
        g_assert_cmpint(procreg_backend_lookup(b, key, &owner), ==,
                        PROCREG_ENOTFOUND);
        g_assert_cmpint(procreg_backend_unregister_owned(b, key, &mine, NULL),
                        ==, PROCREG_ENOTFOUND);
        procreg_key_unref(key);
    }
    size_t n = 1;
    g_assert_cmpint(procreg_backend_count(b, NULL, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 0);
    procreg_backend_close(b);
}

/* Every owner's entry, metadata from @has[i]: lookup_entry, and list_all
 * and count of the namespace. */
static void assert_all(procreg_backend *b, const bool *has)
{
    GArray *all = procreg_entry_array_new();
    procreg_entry entry;
    size_t n = 0;

    for (size_t i = 0; i < N_OWNERS; i++) {
        procreg_key *key = key_of(i);

        g_assert_cmpint(procreg_backend_lookup_entry(b, key, &entry, NULL),
                        ==, 0);
        assert_entry(&entry, i, has[i]);
        procreg_entry_clear(&entry);
        procreg_key_unref(key);
    }
    g_assert_cmpint(procreg_backend_list_all(b, "owners", all, NULL), ==, 0);
    g_assert_cmpuint(all->len, ==, N_OWNERS);
    for (guint j = 0; j < all->len; j++) {
        const procreg_entry *e = &g_array_index(all, procreg_entry, j);
        size_t i = strtoul(e->name + 1, NULL, 10);

        assert_entry(e, i, has[i]);
    }
    g_array_unref(all);
    g_assert_cmpint(procreg_backend_count(b, "owners", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, N_OWNERS);
}

/* Metadata added to and dropped from each entry in turn (the first, the
 * last and the middle ones of the namespace's list alike), then the
 * namespace dropped: every entry stays whole and listed once. */
static void test_metadata_comes_and_goes(gconstpointer data)
{
    const owners_case *c = data;
    procreg_backend *b = NULL;
    procreg_entry entry;
    bool has[N_OWNERS] = {false};
    size_t i;

    g_assert_cmpint(procreg_backend_open(c->backend, NULL, &b, NULL), ==, 0);
    for (i = 0; i < N_OWNERS; i++) {
        procreg_key *key = key_of(i);
        procreg_record record = {.owner = owner_of(i),
                                 .registered_at = (int64_t)i * 1000};

        g_assert_cmpint(procreg_backend_register_entry(b, key, &record, NULL,
                                                       NULL), ==, 0);
        procreg_key_unref(key);
    }
    for (int round = 0; round < 2; round++) {
        for (size_t k = 0; k < N_OWNERS; k++) {
            /* From both ends toward the middle. */
            i = k % 2 == 0 ? k / 2 : N_OWNERS - 1 - k / 2;
            procreg_key *key = key_of(i);
            GVariant *metadata = round == 0 ? metadata_of(i) : NULL;

            g_assert_cmpint(procreg_backend_update_metadata(
                                b, key, metadata, 0, &entry, NULL), ==, 0);
            has[i] = round == 0;
            assert_entry(&entry, i, has[i]);
            procreg_entry_clear(&entry);
            if (metadata != NULL)
                g_variant_unref(metadata);
            procreg_key_unref(key);
            assert_all(b, has);
        }
    }
    GArray *removed = procreg_entry_array_new();
    g_assert_cmpint(procreg_backend_drop_namespace(b, "owners", removed, NULL),
                    ==, 0);
    g_assert_cmpuint(removed->len, ==, N_OWNERS);
    g_array_unref(removed);
    size_t n = 1;
    g_assert_cmpint(procreg_backend_count(b, NULL, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 0);
    procreg_backend_close(b);
}

int main(int argc, char **argv)
{
    static const char *const backends[] = {"ckht", "ghash"};
    static owners_case cases[G_N_ELEMENTS(backends)][2];

    g_test_init(&argc, &argv, NULL);
    for (size_t k = 0; k < G_N_ELEMENTS(backends); k++) {
        const char *name = backends[k];
        char *path;

        for (int m = 0; m < 2; m++)
            cases[k][m] = (owners_case){name, m == 1};
        path = g_strdup_printf("/%s/owners/without-metadata", name);
        g_test_add_data_func(path, &cases[k][0], test_owners);
        g_free(path);
        path = g_strdup_printf("/%s/owners/with-metadata", name);
        g_test_add_data_func(path, &cases[k][1], test_owners);
        g_free(path);
        path = g_strdup_printf("/%s/owners/unregister-owned", name);
        g_test_add_data_func(path, &cases[k][0], test_unregister_owned);
        g_free(path);
        path = g_strdup_printf("/%s/owners/metadata-comes-and-goes", name);
        g_test_add_data_func(path, &cases[k][0],
                             test_metadata_comes_and_goes);
        g_free(path);
    }
    return g_test_run();
}
