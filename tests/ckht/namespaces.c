/*
 * ckht's namespace index (backends/ckht/namespaces.c) against a model:
 * a fixed sequence of random registrations, updates, removals and drops
 * over a few namespaces, so that namespaces empty out and come back (and
 * the cached last namespace goes with them).  After every step, each
 * namespace's list, count, names and find must equal the model's, and
 * the namespace figures must name exactly the non-empty namespaces.
 */
#include <procreg/backend.h>

#include <string.h>

#define N_NS 4
#define N_NAMES 12
#define STEPS 4000

static const char *const ns_names[N_NS] = {"alpha", "beta", "gamma",
                                           "production"};

/* model[ns][name]: registered, with metadata "v" = value[ns][name] */
static bool model[N_NS][N_NAMES];
static int32_t value[N_NS][N_NAMES];

static procreg_key *key_of(int ns, int name)
{
    procreg_key *key = NULL;
    char n[16];

    g_snprintf(n, sizeof n, "s%d", name);
    g_assert_cmpint(procreg_key_new(ns_names[ns], n, &key, NULL), ==, 0);
    return key;
}

static GVariant *md_of(int32_t v)
{
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "v", "i", v);
    return g_variant_ref_sink(g_variant_dict_end(&d));
}

static void check_ns(procreg_backend *b, int ns)
{
    GArray *all = procreg_entry_array_new();
    GArray *found = procreg_entry_array_new();
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    GVariant *one = g_variant_ref_sink(g_variant_new_int32(1));
    size_t count = 0, expect = 0, expect_one = 0;
    bool seen[N_NAMES] = {false};

    for (int i = 0; i < N_NAMES; i++) {
        expect += model[ns][i];
        expect_one += model[ns][i] && value[ns][i] == 1;
    }
    g_assert_cmpint(procreg_backend_count(b, ns_names[ns], &count, NULL), ==,
                    0);
    g_assert_cmpuint(count, ==, expect);
    g_assert_cmpint(procreg_backend_list_all(b, ns_names[ns], all, NULL), ==,
                    0);
    g_assert_cmpuint(all->len, ==, expect);
    for (guint i = 0; i < all->len; i++) {
        procreg_entry *e = &g_array_index(all, procreg_entry, i);
        int name = atoi(e->name + 1);

        g_assert_cmpstr(e->ns, ==, ns_names[ns]);
        g_assert_true(model[ns][name] && !seen[name]);
        seen[name] = true;
    }
    g_assert_cmpint(procreg_backend_find_by_metadata(b, ns_names[ns], "v",
                                                     one, found, NULL),
                    ==, 0);
    g_assert_cmpuint(found->len, ==, expect_one);
    g_assert_cmpint(procreg_backend_list_names(b, ns_names[ns], 3, names),
                    ==, 0);
    g_assert_cmpuint(names->len, ==, MIN(expect, 3));
    g_variant_unref(one);
    g_ptr_array_unref(names);
    g_array_unref(found);
    g_array_unref(all);
}

static void check_namespaces(procreg_backend *b)
{
    GArray *infos = procreg_namespace_array_new();
    size_t listed = 0;

    g_assert_cmpint(procreg_backend_count_namespaces(b, infos, NULL), ==, 0);
    for (int ns = 0; ns < N_NS; ns++) {
        size_t expect = 0;
        bool found = false;

        for (int i = 0; i < N_NAMES; i++)
            expect += model[ns][i];
        for (guint i = 0; i < infos->len; i++) {
            procreg_namespace_info *info =
                &g_array_index(infos, procreg_namespace_info, i);

            if (strcmp(info->ns, ns_names[ns]) == 0) {
                g_assert_false(found);
                found = true;
                g_assert_cmpuint(info->entries, ==, expect);
            }
        }
        g_assert_true(found == (expect > 0));
        listed += found;
    }
    g_assert_cmpuint(infos->len, ==, listed);
    g_array_unref(infos);
}

static void test_index_follows_model(void)
{
    procreg_backend *b = NULL;
    procreg_record record = {0};
    GRand *rng = g_rand_new_with_seed(20261206);

    g_assert_cmpint(procreg_backend_open("ckht", NULL, &b, NULL), ==, 0);
    procreg_owner_self(&record.owner);
    for (int step = 0; step < STEPS; step++) {
        int ns = g_rand_int_range(rng, 0, N_NS);
        int name = g_rand_int_range(rng, 0, N_NAMES);
        int what = g_rand_int_range(rng, 0, 100);
        procreg_key *key = key_of(ns, name);

        if (what < 2) {
            GArray *gone = procreg_entry_array_new();

            g_assert_cmpint(procreg_backend_drop_namespace(b, ns_names[ns],
                                                           gone, NULL),
                            ==, 0);
            memset(model[ns], 0, sizeof model[ns]);
            g_array_unref(gone);
        } else if (!model[ns][name]) {
            int32_t v = g_rand_int_range(rng, 0, 3);
            GVariant *md = md_of(v);

            record.metadata = md;
            g_assert_cmpint(procreg_backend_register_entry(b, key, &record,
                                                           NULL, NULL),
                            ==, 0);
            record.metadata = NULL;
            g_variant_unref(md);
            model[ns][name] = true;
            value[ns][name] = v;
        } else if (what < 50) {
            int32_t v = g_rand_int_range(rng, 0, 3);
            GVariant *md = md_of(v);

            g_assert_cmpint(procreg_backend_update_metadata(b, key, md, 0,
                                                            NULL, NULL),
                            ==, 0);
            g_variant_unref(md);
            value[ns][name] = v;
        } else {
            g_assert_cmpint(procreg_backend_unregister(b, key, 0, NULL, NULL),
                            ==, 0);
            model[ns][name] = false;
        }
        procreg_key_unref(key);
        check_ns(b, ns);
        if (step % 16 == 0)
            check_namespaces(b);
    }
    for (int ns = 0; ns < N_NS; ns++)
        check_ns(b, ns);
    check_namespaces(b);
    procreg_backend_close(b);
    g_rand_free(rng);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ckht/namespaces/index-follows-model",
                    test_index_follows_model);
    return g_test_run();
}
