/* The cost of reaping a dead owner in a big namespace (issue 18, session
 * 11, branch lmdb-owners).  Not part of the build:
 *
 *   cc -O2 -I include -I build/include -I build/core reap-cost.c \
 *      -o /tmp/reap-cost $(pkg-config --cflags --libs glib-2.0) \
 *      -L build/core -lprocreg
 *   LD_LIBRARY_PATH=LIB /tmp/reap-cost fill DIR N K   # no valgrind
 *   LD_LIBRARY_PATH=LIB valgrind --tool=callgrind --toggle-collect=reap_step \
 *      /tmp/reap-cost reap DIR K
 *
 * fill: N entries "big/sNNNNNNN" owned by pid 1 (alive throughout), then
 * K entries "big/dNN" owned by a child that sleeps, which is then killed:
 * the file holds a dead owner's K entries among N live ones in one
 * namespace.  reap: open the file (the monitor's first sweep finds the
 * dead owner and reaps it in one write transaction, reap_step), wait for
 * K entries reaped, check the N are still there. */
#include <procreg/procreg.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static gint64 stat_of(procreg *reg, const char *name)
{
    GVariant *st = NULL;
    gint64 out = -1;
    if (procreg_stats(reg, &st, NULL) != 0)
        return -1;
    GVariant *b = g_variant_lookup_value(st, "backend_stats",
                                         G_VARIANT_TYPE_VARDICT);
    GVariant *v = b ? g_variant_lookup_value(b, name, NULL) : NULL;
    if (v != NULL && g_variant_is_of_type(v, G_VARIANT_TYPE_UINT64))
        out = (gint64)g_variant_get_uint64(v);
    if (v != NULL)
        g_variant_unref(v);
    if (b != NULL)
        g_variant_unref(b);
    g_variant_unref(st);
    return out;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    char *spec = g_strdup_printf("lmdb:path=%s/reg.mdb,durability=nosync",
                                 argv[2]);
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0) {
        fprintf(stderr, "open: %s\n", err->message);
        return 1;
    }
    if (g_str_equal(argv[1], "fill") && argc == 5) {
        long n = atol(argv[3]), k = atol(argv[4]);
        procreg_owner init, child;
        if (procreg_owner_from_pid(1, &init, NULL) != 0)
            return 1;
        for (long i = 0; i < n; i++) {
            char name[32];
            g_snprintf(name, sizeof name, "s%07ld", i);
            if (procreg_register(reg, "big", name, &init, NULL, NULL,
                                 NULL) != 0)
                return 1;
        }
        pid_t pid = fork();
        if (pid == 0) {
            for (;;)
                pause();
        }
        while (procreg_owner_from_pid(pid, &child, NULL) != 0)
            g_usleep(1000);
        for (long i = 0; i < k; i++) {
            char name[32];
            g_snprintf(name, sizeof name, "d%02ld", i);
            if (procreg_register(reg, "big", name, &child, NULL, NULL,
                                 NULL) != 0)
                return 1;
        }
        procreg_close(reg);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return 0;
    }
    if (g_str_equal(argv[1], "reap")) {
        long k = atol(argv[3]);
        gint64 t0 = g_get_monotonic_time();
        while (stat_of(reg, "reaped") < k &&
               g_get_monotonic_time() - t0 < 600 * G_USEC_PER_SEC)
            g_usleep(10000);
        size_t left = 0;
        procreg_count(reg, "big", &left, NULL);
        gint64 reaped = stat_of(reg, "reaped");
        printf("reaped %" G_GINT64_FORMAT ", %zu left in big\n", reaped,
               left);
        procreg_close(reg);
        return reaped == k ? 0 : 1;
    }
    return 2;
}
