/*
 * The optimized decorator's member index: the same joins and leaves on
 * "ghash" and on "optimized:inner=ghash", and every find_members through
 * the index equals the scan of the plain backend, for every value type;
 * finds are answered by the index (its counter moves, the forwarded one
 * does not).
 */
#include <procreg/procreg.h>

#include <string.h>

static procreg *open_reg(const char *spec)
{
    procreg *reg = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_open(spec, &reg, &err), ==, 0);
    g_assert_no_error(err);
    return reg;
}

/* A figure of the decorator's index, from procreg_stats(). */
static guint64 index_figure(procreg *reg, const char *name)
{
    GVariant *stats = NULL;
    g_assert_cmpint(procreg_stats(reg, &stats, NULL), ==, 0);
    GVariant *backend = g_variant_lookup_value(stats, "backend_stats",
                                               G_VARIANT_TYPE_VARDICT);
    GVariant *index = g_variant_lookup_value(backend, "index",
                                             G_VARIANT_TYPE_VARDICT);
    guint64 n = 0;
    g_assert_true(g_variant_lookup(index, name, "t", &n));
    g_variant_unref(index);
    g_variant_unref(backend);
    g_variant_unref(stats);
    return n;
}

static GVariant *metadata_for(int i)
{
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "role", "s", i % 3 == 0 ? "db" : "web");
    if (i % 2 == 0)
        g_variant_dict_insert(&d, "port", "q", (guint16)(8000 + i % 4));
    else
        g_variant_dict_insert(&d, "port", "x", (gint64)(8000 + i % 4));
    g_variant_dict_insert(&d, "up", "b", i % 5 != 0);
    return g_variant_ref_sink(g_variant_dict_end(&d));
}

/* "ns/group#position" of each match, sorted as returned. */
static char *finds_text(procreg *reg, const char *ns, const char *group,
                        const char *key, GVariant *value, GArray *order)
{
    procreg_member *found = NULL;
    size_t n = 0;
    GError *err = NULL;
    g_assert_cmpint(procreg_find_members(reg, ns, group, key, value, &found,
                                         &n, &err),
                    ==, 0);
    g_assert_no_error(err);
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < n; i++) {
        /* Ids differ between the two registries: name members by their
         * join position, kept in @order. */
        guint pos = 0;
        for (; pos < order->len; pos++)
            if (g_array_index(order, uint64_t, pos) == found[i].id)
                break;
        g_string_append_printf(s, "%s/%s#%u ", found[i].ns, found[i].group,
                               pos);
    }
    procreg_members_free(found, n);
    return g_string_free(s, FALSE);
}

static void test_index_equals_scan(void)
{
    procreg *plain = open_reg("ghash");
    procreg *opt = open_reg("optimized:inner=ghash");
    GArray *ids[2] = {g_array_new(FALSE, FALSE, sizeof(uint64_t)),
                      g_array_new(FALSE, FALSE, sizeof(uint64_t))};
    procreg *regs[2] = {plain, opt};
    const char *groups[] = {"g1", "g2", "g3"};
    const char *nss[] = {"a", "b"};
    for (int i = 0; i < 300; i++) {
        for (int r = 0; r < 2; r++) {
            GVariant *md = metadata_for(i);
            procreg_member m = {0};
            g_assert_cmpint(procreg_join(regs[r], nss[i % 2], groups[i % 3],
                                         NULL, i % 7 == 0 ? NULL : md, &m,
                                         NULL),
                            ==, 0);
            g_array_append_val(ids[r], m.id);
            procreg_member_clear(&m);
            g_variant_unref(md);
        }
    }
    /* Some leave, by id. */
    for (int i = 0; i < 300; i += 4) {
        for (int r = 0; r < 2; r++) {
            procreg_key *k = NULL;
            size_t removed = 0;
            g_assert_cmpint(procreg_key_new(nss[i % 2], groups[i % 3], &k,
                                            NULL), ==, 0);
            g_assert_cmpint(procreg_leave_key(regs[r], k,
                                              g_array_index(ids[r], uint64_t,
                                                            i),
                                              0, &removed, NULL),
                            ==, 0);
            g_assert_cmpuint(removed, ==, 1);
            procreg_key_unref(k);
        }
    }
    GVariant *values[] = {
        g_variant_new_string("db"), g_variant_new_string("web"),
        g_variant_new_uint16(8001), g_variant_new_int32(8002),
        g_variant_new_byte(1), g_variant_new_boolean(FALSE),
        g_variant_new_string("none"),
    };
    const char *keys[] = {"role", "role", "port", "port", "port", "up", "role"};
    guint64 indexed = index_figure(opt, "finds_indexed");
    int finds = 0;
    for (size_t v = 0; v < G_N_ELEMENTS(values); v++) {
        GVariant *value = g_variant_ref_sink(values[v]);
        const char *scopes[][2] = {{NULL, NULL}, {"a", NULL}, {"b", "g2"},
                                   {"a", "g3"}};
        for (size_t s = 0; s < G_N_ELEMENTS(scopes); s++) {
            char *want = finds_text(plain, scopes[s][0], scopes[s][1],
                                    keys[v], value, ids[0]);
            char *got = finds_text(opt, scopes[s][0], scopes[s][1], keys[v],
                                   value, ids[1]);
            g_assert_cmpstr(got, ==, want);
            g_free(want);
            g_free(got);
            finds++;
        }
        g_variant_unref(value);
    }
    g_assert_cmpuint(index_figure(opt, "finds_indexed"), ==,
                     indexed + (guint64)finds);
    g_assert_cmpuint(index_figure(opt, "finds_forwarded"), ==, 0);
    g_array_unref(ids[0]);
    g_array_unref(ids[1]);
    procreg_close(plain);
    procreg_close(opt);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/groups/optimized/index-equals-scan",
                    test_index_equals_scan);
    return g_test_run();
}
