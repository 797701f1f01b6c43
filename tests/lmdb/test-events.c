/*
 * Changes made in one process reach the events and waiters of another
 * through the lmdb backend's change log and futex wake-up, without
 * polling; and changes made through a handle are reported once.  The
 * latency from a register() call in one process to the subscriber's
 * callback in another is measured and printed.
 */
#include "lmdb-test-util.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>

typedef lt_fixture Fixture;

/* Events as a subscriber saw them. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    GArray *kinds, *reasons, *external, *latency_us;
    GPtrArray *names;
} seen;

static void seen_init(seen *s)
{
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->kinds = g_array_new(FALSE, FALSE, sizeof(int));
    s->reasons = g_array_new(FALSE, FALSE, sizeof(int));
    s->external = g_array_new(FALSE, FALSE, sizeof(int));
    s->latency_us = g_array_new(FALSE, FALSE, sizeof(gint64));
    s->names = g_ptr_array_new_with_free_func(g_free);
}

static void seen_clear(seen *s)
{
    g_array_unref(s->kinds);
    g_array_unref(s->reasons);
    g_array_unref(s->external);
    g_array_unref(s->latency_us);
    g_ptr_array_unref(s->names);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
}

static void on_event(procreg *reg, const procreg_event *ev, gpointer data)
{
    seen *s = data;
    gint64 now = g_get_monotonic_time();
    gint64 t0 = -1, lat = -1;
    /* The sender put its CLOCK_MONOTONIC time (system-wide) in "t0". */
    if (ev->entry != NULL && ev->entry->metadata != NULL &&
        g_variant_lookup(ev->entry->metadata, "t0", "x", &t0))
        lat = now - t0;
    int k = ev->kind, r = ev->reason, x = ev->external;
    pthread_mutex_lock(&s->lock);
    g_array_append_val(s->kinds, k);
    g_array_append_val(s->reasons, r);
    g_array_append_val(s->external, x);
    g_array_append_val(s->latency_us, lat);
    g_ptr_array_add(s->names, g_strdup(ev->name));
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* Wait until @s holds @n events (false after @timeout_ms). */
static bool seen_wait(seen *s, guint n, int timeout_ms)
{
    gint64 end = g_get_monotonic_time() + timeout_ms * 1000;
    pthread_mutex_lock(&s->lock);
    while (s->kinds->len < n && g_get_monotonic_time() < end) {
        pthread_mutex_unlock(&s->lock);
        g_usleep(1000);
        pthread_mutex_lock(&s->lock);
    }
    bool ok = s->kinds->len >= n;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static int kind_at(seen *s, guint i)
{
    pthread_mutex_lock(&s->lock);
    int k = g_array_index(s->kinds, int, i);
    pthread_mutex_unlock(&s->lock);
    return k;
}

static int at(seen *s, GArray *a, guint i)
{
    pthread_mutex_lock(&s->lock);
    int v = g_array_index(a, int, i);
    pthread_mutex_unlock(&s->lock);
    return v;
}

static guint count(seen *s)
{
    pthread_mutex_lock(&s->lock);
    guint n = s->kinds->len;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static GVariant *stamp(void)
{
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "t0", "x", g_get_monotonic_time());
    return g_variant_dict_end(&d);
}

/* ---- helper processes (this program, re-executed) ---- */

static pid_t spawn(char **argv, int *out_fd)
{
    GPid pid = 0;
    GError *err = NULL;
    if (!g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                  NULL, NULL, &pid, NULL, out_fd, NULL, &err))
        g_error("spawn: %s", err->message);
    return pid;
}

static int wait_exit(pid_t pid)
{
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* --changes SPEC N GAP_US: register lat/kN (owned by us, stamped), paced.
 * Then update k0, unregister k0, register "bye" and exit (bye's owner
 * dies with us). */
static int changes_main(const char *spec, int n, int gap_us)
{
    procreg *reg = NULL;
    if (procreg_open(spec, &reg, NULL) != 0)
        return 2;
    for (int i = 0; i < n; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "k%d", i);
        if (procreg_register(reg, "lat", name, NULL, stamp(), NULL, NULL) != 0)
            return 3;
        g_usleep(gap_us);
    }
    if (procreg_update_metadata(reg, "lat", "k0", stamp(),
                                PROCREG_UPDATE_REPLACE, NULL) != 0 ||
        procreg_unregister(reg, "lat", "k0", NULL) != 0 ||
        procreg_register(reg, "lat", "bye", NULL, NULL, NULL, NULL) != 0)
        return 4;
    /* No close: the process just ends, as a crashing one would. */
    _exit(0);
}

/* --register-after SPEC MS: sleep, then register w/svc for ourselves and
 * stay alive until killed. */
static int register_after_main(const char *spec, int ms)
{
    procreg *reg = NULL;
    if (procreg_open(spec, &reg, NULL) != 0)
        return 2;
    g_usleep(ms * 1000);
    if (procreg_register(reg, "w", "svc", NULL, stamp(), NULL, NULL) != 0)
        return 3;
    printf("done\n");
    fflush(stdout);
    for (;;)
        pause();
}

static char *self_exe(void)
{
    return g_file_read_link("/proc/self/exe", NULL);
}

static int cmp_i64(gconstpointer a, gconstpointer b)
{
    gint64 x = *(const gint64 *)a, y = *(const gint64 *)b;
    return x < y ? -1 : x > y;
}

/* ---- cases ---- */

static void events_across(Fixture *f, const char *durability, int n)
{
    char *spec = g_strdup_printf("lmdb:path=%s,durability=%s", f->path,
                                 durability);
    procreg *reg = lt_open(spec);
    seen s;
    seen_init(&s);
    uint64_t id = 0;
    g_assert_cmpint(procreg_subscribe(reg, "lat", NULL, on_event, &s, NULL,
                                      NULL, &id, NULL), ==, 0);
    char *exe = self_exe();
    char *ns = g_strdup_printf("%d", n);
    char *argv[] = {exe, (char *)"--changes", spec, ns, (char *)"2000", NULL};
    pid_t child = spawn(argv, NULL);
    g_assert_cmpint(wait_exit(child), ==, 0);
    /* n registrations, update k0, unregister k0, register bye; then the
     * child is gone and its n entries (k1.., bye) are reaped. */
    guint want = 2 * (guint)n + 3;
    if (!seen_wait(&s, want, 10000))
        g_error("saw %u of %u events", count(&s), want);
    /* ...and nothing twice. */
    g_usleep(300 * 1000);
    g_assert_cmpuint(count(&s), ==, want);
    for (int i = 0; i < n; i++) {
        g_assert_cmpint(kind_at(&s, (guint)i), ==, PROCREG_EVENT_REGISTERED);
        g_assert_true(at(&s, s.external, (guint)i));
    }
    g_assert_cmpint(kind_at(&s, (guint)n), ==, PROCREG_EVENT_UPDATED);
    g_assert_cmpint(kind_at(&s, (guint)n + 1), ==, PROCREG_EVENT_UNREGISTERED);
    g_assert_cmpint(at(&s, s.reasons, (guint)n + 1), ==,
                    PROCREG_REASON_EXPLICIT);
    g_assert_cmpint(kind_at(&s, (guint)n + 2), ==, PROCREG_EVENT_REGISTERED);
    GHashTable *reaped = g_hash_table_new(g_str_hash, g_str_equal);
    GArray *lat = g_array_sized_new(FALSE, FALSE, sizeof(gint64), (guint)n);
    pthread_mutex_lock(&s.lock);
    for (guint i = (guint)n + 3; i < want; i++) {
        g_assert_cmpint(g_array_index(s.kinds, int, i), ==,
                        PROCREG_EVENT_UNREGISTERED);
        g_assert_cmpint(g_array_index(s.reasons, int, i), ==,
                        PROCREG_REASON_OWNER_EXITED);
        g_hash_table_add(reaped, s.names->pdata[i]);
    }
    g_assert_true(g_hash_table_contains(reaped, "bye"));
    g_assert_true(g_hash_table_contains(reaped, "k1"));
    g_assert_false(g_hash_table_contains(reaped, "k0"));
    g_assert_cmpuint(g_hash_table_size(reaped), ==, (guint)n);
    g_array_append_vals(lat, s.latency_us->data, (guint)n);
    pthread_mutex_unlock(&s.lock);
    g_hash_table_unref(reaped);
    g_array_sort(lat, cmp_i64);
    gint64 p50 = g_array_index(lat, gint64, n / 2);
    gint64 p99 = g_array_index(lat, gint64, (n * 99) / 100);
    gint64 max = g_array_index(lat, gint64, n - 1);
    g_test_message("register() in process A -> callback in process B, "
                   "durability=%s on %s, %d changes: p50 %" G_GINT64_FORMAT
                   " us, p99 %" G_GINT64_FORMAT " us, max %" G_GINT64_FORMAT
                   " us", durability, f->dir, n, p50, p99, max);
    g_assert_cmpint(g_array_index(lat, gint64, 0), >=, 0);
    g_array_unref(lat);
    procreg_unsubscribe(reg, id);
    procreg_close(reg);
    seen_clear(&s);
    g_free(exe);
    g_free(ns);
    g_free(spec);
}

static void test_across_nosync(Fixture *f, gconstpointer data)
{
    events_across(f, "nosync", 200);
}

static void test_across_sync(Fixture *f, gconstpointer data)
{
    events_across(f, "sync", 100);
}

/* The same on a disk file system ($TMPDIR), where a synced commit costs
 * real flushes. */
static void test_across_disk(Fixture *f, gconstpointer data)
{
    char *dir = g_dir_make_tmp("procreg-lmdb-events-XXXXXX", NULL);
    g_assert_nonnull(dir);
    Fixture disk = {.dir = dir,
                    .path = g_build_filename(dir, "reg.mdb", NULL)};
    events_across(&disk, "sync", 50);
    lt_rmtree(dir);
    g_free(dir);
    g_free(disk.path);
}

/* procreg_wait_for() here wakes when another process registers. */
static void test_wait_across(Fixture *f, gconstpointer data)
{
    char *spec = g_strdup_printf("lmdb:path=%s,durability=nosync", f->path);
    procreg *reg = lt_open(spec);
    char *exe = self_exe();
    char *argv[] = {exe, (char *)"--register-after", spec, (char *)"150", NULL};
    int out = -1;
    pid_t child = spawn(argv, &out);
    procreg_entry e = {0};
    GError *err = NULL;
    gint64 t0 = g_get_monotonic_time();
    int rc = procreg_wait_for(reg, "w", "svc", 10000, NULL, &e, &err);
    gint64 woke = g_get_monotonic_time();
    if (rc != 0)
        g_error("wait_for: %s", err->message);
    g_assert_cmpint(e.owner.pid, ==, child);
    gint64 reg_t0 = 0;
    g_assert_true(g_variant_lookup(e.metadata, "t0", "x", &reg_t0));
    g_test_message("waited %" G_GINT64_FORMAT " ms; woke %" G_GINT64_FORMAT
                   " us after the other process called register()",
                   (woke - t0) / 1000, woke - reg_t0);
    procreg_entry_clear(&e);
    kill(child, SIGKILL);
    wait_exit(child);
    close(out);
    procreg_close(reg);
    g_free(exe);
    g_free(spec);
}

/* A process waiting for changes uses no CPU: nothing polls. */
static void test_idle_cpu(Fixture *f, gconstpointer data)
{
    char *spec = g_strdup_printf("lmdb:path=%s", f->path);
    procreg *reg = lt_open(spec);
    seen s;
    seen_init(&s);
    uint64_t id = 0;
    g_assert_cmpint(procreg_subscribe(reg, NULL, NULL, on_event, &s, NULL,
                                      NULL, &id, NULL), ==, 0);
    /* An owner to monitor, too. */
    g_assert_cmpint(procreg_register(reg, "idle", "me", NULL, NULL, NULL,
                                     NULL), ==, 0);
    g_usleep(100 * 1000);
    struct rusage a, b;
    getrusage(RUSAGE_SELF, &a);
    g_usleep(1000 * 1000);
    getrusage(RUSAGE_SELF, &b);
    gint64 cpu = (b.ru_utime.tv_sec - a.ru_utime.tv_sec) * 1000000 +
                 (b.ru_utime.tv_usec - a.ru_utime.tv_usec) +
                 (b.ru_stime.tv_sec - a.ru_stime.tv_sec) * 1000000 +
                 (b.ru_stime.tv_usec - a.ru_stime.tv_usec);
    g_test_message("CPU used in 1 s of waiting: %" G_GINT64_FORMAT " us", cpu);
    g_assert_cmpint(cpu, <, 20000);
    procreg_unsubscribe(reg, id);
    procreg_close(reg);
    seen_clear(&s);
    g_free(spec);
}

/* Two handles in one process share the file: a change through one is
 * reported once to each, as its own (external false) and as the other's
 * (external true). */
static void test_two_handles(Fixture *f, gconstpointer data)
{
    char *spec = g_strdup_printf("lmdb:path=%s", f->path);
    procreg *a = lt_open(spec), *b = lt_open(spec);
    seen sa, sb;
    seen_init(&sa);
    seen_init(&sb);
    uint64_t ida, idb;
    g_assert_cmpint(procreg_subscribe(a, "two", NULL, on_event, &sa, NULL,
                                      NULL, &ida, NULL), ==, 0);
    g_assert_cmpint(procreg_subscribe(b, "two", NULL, on_event, &sb, NULL,
                                      NULL, &idb, NULL), ==, 0);
    g_assert_cmpint(procreg_register(a, "two", "x", NULL, NULL, NULL, NULL),
                    ==, 0);
    g_assert_true(seen_wait(&sa, 1, 5000));
    g_assert_true(seen_wait(&sb, 1, 5000));
    g_usleep(200 * 1000); /* room for a duplicate to show up */
    g_assert_cmpuint(count(&sa), ==, 1);
    g_assert_cmpuint(count(&sb), ==, 1);
    g_assert_false(at(&sa, sa.external, 0));
    g_assert_true(at(&sb, sb.external, 0));
    procreg_unsubscribe(a, ida);
    procreg_unsubscribe(b, idb);
    procreg_close(a);
    procreg_close(b);
    seen_clear(&sa);
    seen_clear(&sb);
    g_free(spec);
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--changes") == 0)
        return changes_main(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 4 && strcmp(argv[1], "--register-after") == 0)
        return register_after_main(argv[2], atoi(argv[3]));
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) \
    g_test_add(path, Fixture, NULL, lt_fx_setup, fn, lt_fx_teardown)
    ADD("/lmdb/events/across-nosync", test_across_nosync);
    ADD("/lmdb/events/across-sync", test_across_sync);
    ADD("/lmdb/events/across-disk", test_across_disk);
    ADD("/lmdb/events/wait", test_wait_across);
    ADD("/lmdb/events/idle-cpu", test_idle_cpu);
    ADD("/lmdb/events/two-handles", test_two_handles);
    return g_test_run();
}
