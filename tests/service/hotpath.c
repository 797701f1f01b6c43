/*
 * service-hotpath: what the service layer adds to a lookup, single thread,
 * best of 7 repetitions (a loaded machine only adds noise upwards).
 *
 *   backend   procreg_backend_lookup() on the registry's backend directly
 *   lookup    procreg_lookup_key(): + the slow-path flag (one relaxed load)
 *             and this thread's call counter
 *   telemetry procreg_lookup_key() with a no-op handler attached
 *
 * Usage: service-hotpath [SPEC...]   (default: ghash)
 */
#include "internal.h"

#include <stdio.h>
#include <time.h>

#define KEYS 64
#define N 4000000
#define REPS 7

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void noop(procreg *reg, const procreg_telemetry_event *ev, gpointer data)
{
    (*(uint64_t *)data)++;
}

static int run(const char *spec)
{
    procreg *reg = NULL;
    GError *error = NULL;
    if (procreg_open(spec, &reg, &error) != 0) {
        fprintf(stderr, "%s: %s\n", spec, error->message);
        g_error_free(error);
        return 1;
    }
    procreg_key *keys[KEYS];
    for (int i = 0; i < KEYS; i++) {
        char name[32];
        snprintf(name, sizeof name, "svc%d", i);
        procreg_register(reg, "hotpath", name, NULL, NULL, NULL, NULL);
        procreg_key_new("hotpath", name, &keys[i], NULL);
    }
    procreg_owner o;
    double best[3] = {1e18, 1e18, 1e18};
    uint64_t seen = 0;
    for (int rep = 0; rep < REPS; rep++) {
        double t = now_ns();
        for (int i = 0; i < N; i++)
            procreg_backend_lookup(reg->backend, keys[i & (KEYS - 1)], &o);
        t = (now_ns() - t) / N;
        best[0] = t < best[0] ? t : best[0];

        t = now_ns();
        for (int i = 0; i < N; i++)
            procreg_lookup_key(reg, keys[i & (KEYS - 1)], &o, NULL);
        t = (now_ns() - t) / N;
        best[1] = t < best[1] ? t : best[1];

        uint64_t id = 0;
        procreg_telemetry_attach(reg, PROCREG_OP_BIT(PROCREG_OP_LOOKUP), noop,
                                 &seen, NULL, &id, NULL);
        t = now_ns();
        for (int i = 0; i < N / 4; i++)
            procreg_lookup_key(reg, keys[i & (KEYS - 1)], &o, NULL);
        t = (now_ns() - t) / (N / 4);
        best[2] = t < best[2] ? t : best[2];
        procreg_telemetry_detach(reg, id);
    }
    printf("%-8s backend %6.1f ns   lookup %6.1f ns (+%.1f)   "
           "with telemetry handler %6.1f ns (+%.1f)\n",
           spec, best[0], best[1], best[1] - best[0], best[2],
           best[2] - best[1]);
    for (int i = 0; i < KEYS; i++)
        procreg_key_unref(keys[i]);
    procreg_close(reg);
    return 0;
}

int main(int argc, char **argv)
{
    int rc = 0;
    if (argc < 2)
        return run("ghash");
    for (int i = 1; i < argc; i++)
        rc |= run(argv[i]);
    return rc;
}
