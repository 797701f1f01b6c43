/*
 * The data set of one key count, generated before anything is timed.
 *
 * Shape (names like real ones):
 *   - half of the keys (all of them below 200) are in "production":
 *     service_0 .. service_<P-1>, with metadata group = index / 10, so a
 *     find on one group value matches 10 entries;
 *   - the other half in test namespaces "test-<8 hex>" of 100 keys each,
 *     named service_0 .. service_99 (the same names as production, as
 *     isolated test runs register them);
 *   - miss keys: production names that are never registered;
 *   - a private pool per thread for the write workloads.
 */
#include "bench.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static const char *const roles[] = {"api", "db", "cache", "worker"};

static GVariant *build_metadata(const bench_dataset *ds, size_t index)
{
    const bench_key *k = &ds->keys[index];
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "role",
                          g_variant_new_string(roles[index % 4]));
    g_variant_builder_add(&b, "{sv}", "version",
                          g_variant_new_string("1.4.2"));
    g_variant_builder_add(&b, "{sv}", "port",
                          g_variant_new_uint16((uint16_t)(8000 + index % 1000)));
    if (k->group >= 0)
        g_variant_builder_add(&b, "{sv}", "group",
                              g_variant_new_int32(k->group));
    /* Serialised (one block), as metadata read from a file or the wire. */
    GVariant *tree = g_variant_ref_sink(g_variant_builder_end(&b));
    GVariant *flat = g_variant_take_ref(g_variant_get_normal_form(tree));
    g_variant_unref(tree);
    return flat;
}

GVariant *bench_key_metadata(const bench_dataset *ds, size_t index)
{
    return ds->metadata ? g_variant_ref(ds->metadata[index])
                        : build_metadata(ds, index);
}

static int key_fill(bench_key *k, const char *ns, const char *name,
                    int32_t group, GError **error)
{
    size_t ns_len = strlen(ns), name_len = strlen(name);
    if (ns_len + name_len + 2 > BENCH_KEY_TEXT) {
        g_set_error(error, PROCREG_ERROR, PROCREG_EINVAL,
                    "key %s/%s too long for the benchmark's key slots", ns,
                    name);
        return -1;
    }
    memcpy(k->text, ns, ns_len + 1);
    memcpy(k->text + ns_len + 1, name, name_len + 1);
    k->ns = k->text;
    k->name = k->text + ns_len + 1;
    k->len = (uint16_t)(ns_len + 1 + name_len);
    k->group = group;
    return procreg_key_new(ns, name, &k->pkey, error);
}

/* Cache-line aligned, zeroed. */
static bench_key *keys_new(size_t n)
{
    bench_key *k = g_aligned_alloc0(MAX(n, (size_t)1), sizeof *k, 64);
    return k;
}

/* Zipf(s) over n ranks by inverse CDF, then ranks scattered over the key
 * indices by a random permutation so hot keys are not neighbours. */
static uint32_t *zipf_samples(size_t n, double s, uint64_t *rng)
{
    double *cdf = g_new(double, n);
    double sum = 0;
    for (size_t r = 0; r < n; r++) {
        sum += 1.0 / pow((double)(r + 1), s);
        cdf[r] = sum;
    }
    uint32_t *perm = g_new(uint32_t, n);
    for (size_t i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = splitmix64(rng) % (i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    uint32_t *out = g_new(uint32_t, BENCH_ZIPF_SAMPLES);
    for (size_t i = 0; i < BENCH_ZIPF_SAMPLES; i++) {
        double u = (double)(splitmix64(rng) >> 11) * 0x1.0p-53 * sum;
        size_t lo = 0, hi = n - 1;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (cdf[mid] < u)
                lo = mid + 1;
            else
                hi = mid;
        }
        out[i] = perm[lo];
    }
    g_free(perm);
    g_free(cdf);
    return out;
}

int bench_dataset_init(bench_dataset *ds, size_t n_keys, size_t threads,
                       bool zipf, bool metadata, uint64_t seed,
                       GError **error)
{
    memset(ds, 0, sizeof *ds);
    if (n_keys == 0 || n_keys > 100000000) {
        g_set_error(error, PROCREG_ERROR, PROCREG_EINVAL,
                    "key count %zu out of range (1 .. 100000000)", n_keys);
        return -1;
    }
    uint64_t rng = seed;

    ds->n_keys = n_keys;
    ds->test_ns_size = 100;
    ds->n_test_ns = n_keys >= 2 * ds->test_ns_size
                        ? (n_keys / 2) / ds->test_ns_size
                        : 0;
    ds->n_production = n_keys - ds->n_test_ns * ds->test_ns_size;
    ds->n_groups = (ds->n_production + 9) / 10;
    /* roles[index % 4]: any 100 consecutive keys hold 25 of each. */
    ds->role_api = g_variant_ref_sink(g_variant_new_string(roles[0]));
    ds->keys = keys_new(n_keys);

    char name[64];
    size_t i = 0;
    for (; i < ds->n_production; i++) {
        g_snprintf(name, sizeof name, "service_%zu", i);
        if (key_fill(&ds->keys[i], PROCREG_NS_PRODUCTION, name,
                     (int32_t)(i / 10), error) < 0)
            goto fail;
    }
    ds->test_ns = g_new0(char *, ds->n_test_ns + 1);
    GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
    for (size_t t = 0; t < ds->n_test_ns; t++) {
        char *ns;
        do {
            ns = g_strdup_printf("test-%08x",
                                 (unsigned int)(splitmix64(&rng) >> 32));
            if (g_hash_table_contains(seen, ns)) {
                g_free(ns);
                ns = NULL;
            }
        } while (!ns);
        g_hash_table_add(seen, ns);
        ds->test_ns[t] = ns;
        for (size_t j = 0; j < ds->test_ns_size; j++, i++) {
            g_snprintf(name, sizeof name, "service_%zu", j);
            if (key_fill(&ds->keys[i], ns, name, -1, error) < 0) {
                g_hash_table_destroy(seen);
                goto fail;
            }
        }
    }
    g_hash_table_destroy(seen);

    size_t next = ds->n_production;
    ds->pool_per_thread = 1024;
    ds->pool_threads = threads;
    ds->pool = keys_new(threads * ds->pool_per_thread);
    for (size_t p = 0; p < threads * ds->pool_per_thread; p++) {
        g_snprintf(name, sizeof name, "service_%zu", next++);
        if (key_fill(&ds->pool[p], PROCREG_NS_PRODUCTION, name, -1,
                     error) < 0)
            goto fail;
    }

    ds->n_miss = MIN(n_keys, (size_t)65536);
    ds->miss = keys_new(ds->n_miss);
    for (size_t m = 0; m < ds->n_miss; m++) {
        g_snprintf(name, sizeof name, "service_%zu", next++);
        if (key_fill(&ds->miss[m], PROCREG_NS_PRODUCTION, name, -1,
                     error) < 0)
            goto fail;
    }

    ds->group_values = g_new(GVariant *, ds->n_groups);
    for (size_t g = 0; g < ds->n_groups; g++)
        ds->group_values[g] = g_variant_ref_sink(g_variant_new_int32((int32_t)g));

    for (int u = 0; u < 4; u++) {
        GVariantBuilder b;
        g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&b, "{sv}", "role",
                              g_variant_new_string(roles[u]));
        char version[16];
        g_snprintf(version, sizeof version, "2.0.%d", u);
        g_variant_builder_add(&b, "{sv}", "version",
                              g_variant_new_string(version));
        GVariant *tree = g_variant_ref_sink(g_variant_builder_end(&b));
        ds->update_md[u] = g_variant_take_ref(g_variant_get_normal_form(tree));
        g_variant_unref(tree);
    }

    if (zipf)
        ds->zipf = zipf_samples(n_keys, BENCH_ZIPF_S, &rng);
    if (metadata) {
        /* Built once: every target registers the same dictionaries. */
        ds->metadata = g_new(GVariant *, n_keys);
        for (size_t m = 0; m < n_keys; m++)
            ds->metadata[m] = build_metadata(ds, m);
    }
    return 0;

fail:
    bench_dataset_clear(ds);
    return -1;
}

static void keys_clear(bench_key *keys, size_t n)
{
    if (!keys)
        return;
    for (size_t i = 0; i < n; i++)
        procreg_key_unref(keys[i].pkey);
    g_aligned_free(keys);
}

void bench_dataset_clear(bench_dataset *ds)
{
    keys_clear(ds->keys, ds->n_keys);
    keys_clear(ds->miss, ds->n_miss);
    keys_clear(ds->pool, ds->pool_threads * ds->pool_per_thread);
    if (ds->test_ns)
        g_strfreev(ds->test_ns);
    if (ds->role_api)
        g_variant_unref(ds->role_api);
    if (ds->group_values) {
        for (size_t g = 0; g < ds->n_groups; g++)
            g_variant_unref(ds->group_values[g]);
        g_free(ds->group_values);
    }
    for (int u = 0; u < 4; u++)
        if (ds->update_md[u])
            g_variant_unref(ds->update_md[u]);
    g_free(ds->zipf);
    if (ds->metadata) {
        for (size_t m = 0; m < ds->n_keys; m++)
            g_variant_unref(ds->metadata[m]);
        g_free(ds->metadata);
    }
    memset(ds, 0, sizeof *ds);
}
