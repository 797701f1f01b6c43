/*
 * ckht's map figures (capacity, grows, removals since the map was made)
 * when ck_hs allocated a map and discarded it (its growth retry: the copy
 * passed its probe limit in the new map) and the next allocation failed:
 * they must still describe the map in use.  Before the fix the allocator
 * hook recorded every allocation as the current map, so the capacity
 * figure was off by 2x until the next map (and the tombstone count, which
 * decides the rebuilds, was reset).  procreg_ckht_test_map_budget makes
 * the second allocation fail.  The slot count of a map's allocation is
 * checked against the loop it used to be.
 */
#include <procreg/backend.h>

#include "internal.h"
#include "ckht/ckht-internal.h"

extern const procreg_backend_ops procreg_ckht_backend_ops;

static void *open_ckht(const char *text)
{
    procreg_spec *spec = NULL;
    void *state;

    g_assert_cmpint(procreg_spec_parse(text, &spec, NULL), ==, 0);
    g_assert_cmpint(procreg_ckht_backend_ops.init(spec, NULL, &state, NULL),
                    ==, 0);
    procreg_spec_free(spec);
    return state;
}

static void test_map_figures_after_failed_growth(void)
{
    enum { MAX_KEYS = 4096 };
    void *state = open_ckht("ckht:initial_size=8");
    /* The keys get one of two hashes, in turn (the compare tells keys
     * apart by their bytes), differing in bit 8 only: they pile up on one
     * home slot and on probe paths that a larger map spreads differently,
     * so that a growth's copy passes ck_hs's probe limit in the new map
     * and ck_hs discards it for one twice as large.  Found by trying (ck
     * 0.7.1); the loop checks that it happened rather than assuming it. */
    const uint64_t hash = 0x5u;
    ckht *self = state;
    procreg_record rec = {0};
    bool discarded = false;
    int i;

    procreg_owner_self(&rec.owner);
    for (i = 0; i < MAX_KEYS && !discarded; i++) {
        char name[32];
        procreg_key *key = NULL;
        const void *map = self->hs->map;
        uint64_t grows = self->grows;
        size_t map_size = self->map_size;
        int rc;

        g_snprintf(name, sizeof name, "same-hash-%d", i);
        g_assert_cmpint(procreg_key_new("figures", name, &key, NULL), ==, 0);
        key->hash = hash | (uint64_t)(i & 1) << 8;
        /* One map per write: a growth that needs a second fails. */
        procreg_ckht_test_map_budget = 1;
        rc = procreg_ckht_backend_ops.register_entry(state, key, &rec, NULL,
                                                     NULL);
        /* A map was allocated and is not the one in use: discarded. */
        discarded = rc == PROCREG_ENOMEM &&
                    procreg_ckht_test_map_budget == 0 &&
                    self->hs->map == map;
        procreg_ckht_test_map_budget = SIZE_MAX;
        procreg_key_unref(key);
        /* The current map is the one map not retired. */
        g_assert_cmpuint(self->map_size, ==, self->table_bytes);
        if (discarded) {
            /* The figures still describe the map in use. */
            g_assert_cmpuint(self->map_size, ==, map_size);
            g_assert_cmpuint(self->grows, ==, grows);
        }
    }
    g_assert_true(discarded);
    g_test_message("a map discarded at key %d", i);
    procreg_ckht_backend_ops.destroy(state);
}

/* procreg_ck_map_slots(), which every removal asks (through the
 * capacity), against the loop it replaced: the largest power of two
 * that fits, for every count up to 2^16 and around every power of two. */
static size_t slots_by_loop(size_t bytes, size_t slot_size)
{
    size_t n = bytes / slot_size, c = 1;

    if (n == 0)
        return 0;
    while (c <= n / 2)
        c <<= 1;
    return c;
}

static void test_map_slots_formula(void)
{
    for (size_t b = 0; b < ((size_t)1 << 16); b++)
        g_assert_cmpuint(procreg_ck_map_slots(b, 8), ==, slots_by_loop(b, 8));
    for (unsigned k = 1; k < 60; k++)
        for (size_t d = 0; d < 3; d++) {
            size_t b = ((size_t)1 << k) - 1 + d;

            g_assert_cmpuint(procreg_ck_map_slots(b, 1), ==,
                             slots_by_loop(b, 1));
            g_assert_cmpuint(procreg_ck_map_slots(b, 32), ==,
                             slots_by_loop(b, 32));
        }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ckht/map-figures/slots-formula",
                    test_map_slots_formula);
    g_test_add_func("/ckht/map-figures/after-failed-growth",
                    test_map_figures_after_failed_growth);
    return g_test_run();
}
