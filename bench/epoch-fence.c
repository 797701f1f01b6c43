/*
 * epoch-fence: what extras around a raw ck_ht get cost, and whether that
 * depends on the table's size.  Gets of N keys ("production\0service_<i>")
 * in a random order, hashing each as raw-ckht does, in rounds that cycle
 * through three variants:
 *   plain     the get alone;
 *   exchange  an exchange on a thread-private word before each get and a
 *             plain store after (what ck_epoch_begin/end do);
 *   work      three more hashes of the key before each get: in-cache work
 *             of the size of a validation and a hash, that the get does
 *             not depend on.
 * doc/benchmarks.md quotes it.
 *
 *   build/bench/epoch-fence [KEYS]        (default 100000)
 */
#include <ck_ht.h>
#include <ck_pr.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void *table_malloc(size_t n)
{
    return malloc(n);
}

static void table_free(void *p, size_t n, bool defer)
{
    (void)n;
    (void)defer;
    free(p);
}

static struct ck_malloc allocator = {.malloc = table_malloc,
                                     .free = table_free};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

enum { KEY_BYTES = 48, GETS = 4000000, ROUNDS = 6 };
enum { PLAIN, EXCHANGE, WORK };
static const char *const variant_names[] = {"plain", "exchange", "work"};

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 100000;
    static unsigned int active; /* the reader's epoch word */
    static volatile uint64_t sink; /* keeps the extra hashes */
    ck_ht_t ht;
    char *keys;
    uint16_t *len;
    uint32_t *order;
    uint64_t x = 88172645463325252ull;

    if (n == 0 || n > 100000000 ||
        !ck_ht_init(&ht, CK_HT_MODE_BYTESTRING, NULL, &allocator, 2 * n, 42))
        return 2;
    keys = malloc(n * KEY_BYTES);
    len = malloc(n * sizeof(*len));
    order = malloc(GETS * sizeof(*order));
    if (keys == NULL || len == NULL || order == NULL)
        return 2;
    for (size_t i = 0; i < n; i++) {
        char *k = keys + i * KEY_BYTES;
        ck_ht_entry_t e;
        ck_ht_hash_t h;

        len[i] = (uint16_t)snprintf(k, KEY_BYTES, "production%cservice_%zu",
                                    0, i);
        ck_ht_hash(&h, &ht, k, len[i]);
        ck_ht_entry_set(&e, h, k, len[i], k);
        if (!ck_ht_put_spmc(&ht, h, &e))
            return 2;
    }
    for (size_t i = 0; i < GETS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order[i] = (uint32_t)(x % n);
    }
    printf("# epoch-fence: %zu keys, %d gets per round\n", n, GETS);
    for (int round = 0; round < ROUNDS; round++) {
        int variant = round % 3;
        size_t found = 0;
        double t0 = now();

        for (size_t i = 0; i < GETS; i++) {
            const char *k = keys + (size_t)order[i] * KEY_BYTES;
            ck_ht_entry_t e;
            ck_ht_hash_t h;

            if (variant == EXCHANGE) {
                ck_pr_fas_uint(&active, 1);
            } else if (variant == WORK) {
                for (int w = 0; w < 3; w++) {
                    ck_ht_hash(&h, &ht, k, len[order[i]]);
                    sink ^= h.value;
                }
            }
            ck_ht_hash(&h, &ht, k, len[order[i]]);
            ck_ht_entry_key_set(&e, k, len[order[i]]);
            found += ck_ht_get_spmc(&ht, h, &e);
            if (variant == EXCHANGE)
                ck_pr_store_uint(&active, 0);
        }
        printf("%-9s %6.1f ns per get\n", variant_names[variant],
               (now() - t0) / GETS * 1e9);
        if (found != GETS)
            return 1;
    }
    ck_ht_destroy(&ht);
    free(keys);
    free(len);
    free(order);
    return 0;
}
