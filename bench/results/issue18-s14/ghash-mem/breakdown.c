/*
 * Where a backend's bytes per entry go at N entries without metadata,
 * with keys shaped like procreg-bench's (half "production\0service_<i>",
 * half in namespaces "test-<8 hex>" of 100 keys "service_0..99"):
 * malloc's in-use growth (mallinfo2: uordblks + hblkhd, its mmap'd
 * blocks included), anonymous RSS growth, the slab's
 * figures (entry_bytes, entry_slab_bytes) and memory_usage.
 *
 *   cc -O2 -o /tmp/breakdown breakdown.c -I include -I build/include \
 *      $(pkg-config --cflags --libs glib-2.0) -L build/core -lprocreg
 *   LD_LIBRARY_PATH=build/core /tmp/breakdown ghash 1000000
 */
#define PROCREG_ENABLE_BACKEND 1
#include <procreg/backend.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static size_t anon_rss(void)
{
    long pages = 0, resident = 0, shared = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL || fscanf(f, "%ld %ld %ld", &pages, &resident, &shared) != 3)
        abort();
    fclose(f);
    return (size_t)(resident - shared) * (size_t)sysconf(_SC_PAGESIZE);
}

static guint64 stat_of(procreg_backend *b, const char *name)
{
    GVariantDict d;
    guint64 value = 0;
    g_variant_dict_init(&d, NULL);
    procreg_backend_stats(b, &d);
    GVariant *stats = g_variant_ref_sink(g_variant_dict_end(&d));
    (void)g_variant_lookup(stats, name, "t", &value);
    g_variant_unref(stats);
    return value;
}

int main(int argc, char **argv)
{
    const char *spec = argc > 1 ? argv[1] : "ghash";
    size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000000;
    size_t n_test_ns = n / 2 / 100, n_prod = n - n_test_ns * 100;
    procreg_key **keys = g_new(procreg_key *, n);
    char ns[32], name[32];
    size_t i = 0;

    for (; i < n_prod; i++) {
        g_snprintf(name, sizeof name, "service_%zu", i);
        if (procreg_key_new("production", name, &keys[i], NULL) != 0)
            abort();
    }
    for (size_t t = 0; t < n_test_ns; t++) {
        g_snprintf(ns, sizeof ns, "test-%08x",
                   (unsigned)(t * 2654435761u));
        for (int j = 0; j < 100; j++, i++) {
            g_snprintf(name, sizeof name, "service_%d", j);
            if (procreg_key_new(ns, name, &keys[i], NULL) != 0)
                abort();
        }
    }
    procreg_backend *b = NULL;
    procreg_record r = {0};
    procreg_owner_self(&r.owner);
    malloc_trim(0);
    struct mallinfo2 m0 = mallinfo2();
    size_t heap0 = m0.uordblks + m0.hblkhd, rss0 = anon_rss();
    if (procreg_backend_open(spec, NULL, &b, NULL) != 0)
        abort();
    for (i = 0; i < n; i++)
        if (procreg_backend_register_entry(b, keys[i], &r, NULL, NULL) != 0)
            abort();
    malloc_trim(0);
    struct mallinfo2 m = mallinfo2();
    size_t heap = m.uordblks + m.hblkhd - heap0, rss = anon_rss() - rss0;
    size_t memory = 0;
    procreg_backend_memory_usage(b, &memory);
    double dn = (double)n;
    printf("%s %zu entries: RSS %.1f B/entry, malloc %.1f, memory_usage %.1f;"
           " slab: entry_bytes %.1f, entry_slab_bytes %.1f, entry_free_bytes"
           " %.1f\n",
           spec, n, rss / dn, heap / dn, memory / dn,
           stat_of(b, "entry_bytes") / dn, stat_of(b, "entry_slab_bytes") / dn,
           stat_of(b, "entry_free_bytes") / dn);
    procreg_backend_close(b);
    for (i = 0; i < n; i++)
        procreg_key_unref(keys[i]);
    g_free(keys);
    return 0;
}
