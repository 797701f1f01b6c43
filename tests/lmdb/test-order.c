/*
 * Events of one key arrive in revision order, whoever writes the key:
 * another handle of this process, or another process.  The dangerous
 * interleaving is a change made elsewhere (a register, commit N) followed
 * at once by one made here (its unregister, commit N+1): a handle that
 * reported its own change when it returned, and other processes' changes
 * when its watcher read them, told its subscribers UNREGISTERED before
 * REGISTERED and so that the key was held while lookup said it was not.
 * The backend now delivers every change in commit order before the write
 * returns; each round below is that interleaving.  Built against the old
 * delivery (PROCREG_INJECT_LATE_EXTERNAL_EVENT, with EXPECT_OUT_OF_ORDER:
 * tests/lmdb/meson.build), the same rounds must find events out of
 * order, which proves they would catch the bug.
 */
#include "lmdb-test-util.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROUNDS 200
#define WAIT_US (10 * G_USEC_PER_SEC)

/* What a subscriber saw, in order. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    GArray *kinds;     /* procreg_event_kind */
    GArray *revisions; /* uint64_t */
} seen;

static void seen_init(seen *s)
{
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->kinds = g_array_new(FALSE, FALSE, sizeof(int));
    s->revisions = g_array_new(FALSE, FALSE, sizeof(uint64_t));
}

static void seen_clear(seen *s)
{
    g_array_unref(s->kinds);
    g_array_unref(s->revisions);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
}

static void on_event(procreg *reg, const procreg_event *ev, gpointer data)
{
    seen *s = data;
    int kind = ev->kind;
    pthread_mutex_lock(&s->lock);
    g_array_append_val(s->kinds, kind);
    g_array_append_val(s->revisions, ev->entry->revision);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static bool wait_for_count(seen *s, guint n)
{
    gint64 until = g_get_monotonic_time() + WAIT_US;
    pthread_mutex_lock(&s->lock);
    while (s->kinds->len < n && g_get_monotonic_time() < until) {
        pthread_mutex_unlock(&s->lock);
        g_usleep(1000);
        pthread_mutex_lock(&s->lock);
    }
    bool ok = s->kinds->len >= n;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* The events of one key, checked against the key's life: REGISTERED only
 * when it is absent, UNREGISTERED of the revision it holds, revisions
 * rising.  Returns whether they are in order; says where they are not. */
static bool in_order(seen *s, const char *who)
{
    g_assert_cmpuint(s->kinds->len, ==, 2 * ROUNDS);
    uint64_t held = 0, last = 0;
    for (guint i = 0; i < s->kinds->len; i++) {
        int kind = g_array_index(s->kinds, int, i);
        uint64_t rev = g_array_index(s->revisions, uint64_t, i);
        bool ok = kind == PROCREG_EVENT_REGISTERED ? held == 0 && rev > last
                                                   : held == rev;
        if (!ok) {
            g_test_message("%s: event %u: %s of rev %" G_GUINT64_FORMAT
                           " while the key is %s (rev %" G_GUINT64_FORMAT
                           "): out of order", who, i,
                           procreg_event_kind_name(kind), rev,
                           held ? "held" : "absent", held ? held : last);
            return false;
        }
        if (kind == PROCREG_EVENT_REGISTERED)
            held = last = rev;
        else
            held = 0;
    }
    return true;
}

/* In order for every subscriber; or, against the old delivery, out of
 * order for at least one of them: that one alone fails the test as built
 * normally, which is what proves the rounds catch the bug.  Which one
 * sees it depends on speed: the handle that removed, whenever its
 * unregister returns within the watcher's delay; the handle that
 * registered, whenever its next register does, which under
 * ThreadSanitizer may happen in none of the rounds. */
static void check_order(seen **s, const char *const *who, int n)
{
    bool all_in_order = true;
    for (int i = 0; i < n; i++)
        all_in_order &= in_order(s[i], who[i]);
#ifdef EXPECT_OUT_OF_ORDER
    g_assert_false(all_in_order);
#else
    g_assert_true(all_in_order);
#endif
}

static procreg *open_at(const char *path)
{
    char *spec = g_strdup_printf("lmdb:path=%s,durability=nosync", path);
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0)
        g_error("open %s: %s", spec, err->message);
    g_free(spec);
    return reg;
}

static uint64_t subscribe(procreg *reg, seen *s)
{
    uint64_t id = 0;
    GError *err = NULL;
    if (procreg_subscribe(reg, "order", NULL, on_event, s, NULL, NULL, &id,
                          &err) != 0)
        g_error("subscribe: %s", err->message);
    return id;
}

/* Two handles of one process: the key registered through one, removed
 * at once through the other.  Both subscribers see every round in order. */
static void test_two_handles(void)
{
    char *dir = lt_tmpdir();
    char *path = g_build_filename(dir, "reg.mdb", NULL);
    procreg *a = open_at(path), *b = open_at(path);
    seen sa, sb;
    seen_init(&sa);
    seen_init(&sb);
    uint64_t ida = subscribe(a, &sa), idb = subscribe(b, &sb);
    for (int i = 0; i < ROUNDS; i++) {
        g_assert_cmpint(procreg_register(b, "order", "k", NULL, NULL, NULL,
                                         NULL), ==, 0);
        g_assert_cmpint(procreg_unregister(a, "order", "k", NULL), ==, 0);
    }
    g_assert_true(wait_for_count(&sa, 2 * ROUNDS));
    g_assert_true(wait_for_count(&sb, 2 * ROUNDS));
    procreg_unsubscribe(a, ida);
    procreg_unsubscribe(b, idb);
    check_order((seen *[]){&sa, &sb},
                (const char *const[]){"the handle that removed",
                                      "the handle that registered"},
                2);
    seen_clear(&sa);
    seen_clear(&sb);
    procreg_close(a);
    procreg_close(b);
    lt_rmtree(dir);
    g_free(path);
    g_free(dir);
}

/* The other process: for each line on stdin, register the key (its own)
 * and answer "ok" once the register returned. */
static int registrar_main(const char *path)
{
    procreg *reg = open_at(path);
    char line[16];
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (procreg_register(reg, "order", "k", NULL, NULL, NULL, NULL) != 0)
            return 1;
        printf("ok\n");
        fflush(stdout);
    }
    procreg_close(reg);
    return 0;
}

static bool read_ok(int fd)
{
    char buf[3];
    size_t got = 0;
    while (got < sizeof buf) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0)
            return false;
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n <= 0)
            return false;
        got += (size_t)n;
    }
    return memcmp(buf, "ok\n", 3) == 0;
}

/* Another process registers the key; this one removes it (by force: it
 * is the other's) as soon as the register returned. */
static void test_two_processes(void)
{
    char *dir = lt_tmpdir();
    char *path = g_build_filename(dir, "reg.mdb", NULL);
    procreg *reg = open_at(path);
    seen s;
    seen_init(&s);
    uint64_t id = subscribe(reg, &s);
    char *self = g_file_read_link("/proc/self/exe", NULL);
    char *argv[] = {self, "--registrar", path, NULL};
    GPid pid;
    int in, out;
    GError *err = NULL;
    if (!g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                  NULL, NULL, &pid, &in, &out, NULL, &err))
        g_error("spawn: %s", err->message);
    procreg_key *key = NULL;
    g_assert_cmpint(procreg_key_new("order", "k", &key, NULL), ==, 0);
    for (int i = 0; i < ROUNDS; i++) {
        g_assert_cmpint(write(in, "r\n", 2), ==, 2);
        g_assert_true(read_ok(out));
        g_assert_cmpint(procreg_unregister_full(reg, key, 0, PROCREG_FORCE,
                                                NULL), ==, 0);
    }
    close(in);
    int status = 0;
    waitpid(pid, &status, 0);
    close(out);
    g_spawn_close_pid(pid);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    g_assert_true(wait_for_count(&s, 2 * ROUNDS));
    procreg_unsubscribe(reg, id);
    check_order((seen *[]){&s},
                (const char *const[]){"the process that removed"}, 1);
    procreg_key_unref(key);
    seen_clear(&s);
    procreg_close(reg);
    lt_rmtree(dir);
    g_free(self);
    g_free(path);
    g_free(dir);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--registrar") == 0)
        return registrar_main(argv[2]);
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/lmdb/order/two-handles", test_two_handles);
    g_test_add_func("/lmdb/order/two-processes", test_two_processes);
    return g_test_run();
}
