/*
 * Writers SIGKILLed at random moments: no writer that survives may wait
 * more than STALL_US (doc/lmdb.md, "Writers that are killed").
 *
 * WRITERS processes (this program, re-executed) write one registry file,
 * each registering, updating and unregistering its own keys at its own
 * pace; the test SIGKILLs one of them at a random moment,
 * PROCREG_WRITER_KILLS times (default 400), and starts another in its
 * place.  Each writer publishes on a shared board when its current write
 * began and the longest write it finished; the test reads the board
 * before every kill.  The figure is the longest wait of a writer that was
 * not killed during it, finished or still going.
 *   PROCREG_WRITER_KILLS=3000   the full run;
 *   PROCREG_WRITER_KILLS_RAW=1  the writers use liblmdb directly
 *                               (mdb_txn_begin, mdb_put, mdb_txn_commit).
 * test-writers.c forces the interleaving that stalls LMDB's writers.
 */
#include "lmdb-test-util.h"

#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define WRITERS 4
#define KEYS 8
#define NS "writers"
/* A wait longer than this is a stall. */
#define STALL_US G_USEC_PER_SEC
/* Between kills, and between one writer's writes: random up to these. */
#define KILL_GAP_US 20000
#define WRITE_GAP_US 2000

/* One writer's line of the board (a file every writer maps). */
typedef struct {
    gint64 busy_since; /* monotonic µs its current write began; 0: none */
    gint64 longest;    /* its longest finished write, µs */
    gint64 writes;
} board_slot;

static board_slot *board_map(const char *path, bool create)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    if (fd < 0 ||
        (create && ftruncate(fd, WRITERS * sizeof(board_slot)) != 0))
        return NULL;
    void *p = mmap(NULL, WRITERS * sizeof(board_slot),
                   PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

static gint64 load(const gint64 *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static void store(gint64 *p, gint64 v)
{
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

/* Around each write: publish when it began, then how long it took. */
static void write_begins(board_slot *s)
{
    store(&s->busy_since, g_get_monotonic_time());
}

static void write_ends(board_slot *s)
{
    gint64 took = g_get_monotonic_time() - load(&s->busy_since);
    store(&s->busy_since, 0);
    if (took > load(&s->longest))
        store(&s->longest, took);
    store(&s->writes, load(&s->writes) + 1);
}

/* A writer through procreg: register, update and unregister its own
 * keys (the keys of a killed predecessor in its slot are reaped on the
 * way), until killed. */
static G_NORETURN void writer_main(const char *spec, board_slot *s, int slot,
                                   guint32 seed)
{
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0) {
        g_printerr("writer %d: %s\n", slot, err->message);
        _exit(2);
    }
    GRand *rand = g_rand_new_with_seed(seed);
    bool held[KEYS] = {false};
    for (;;) {
        int k = g_rand_int_range(rand, 0, KEYS);
        char key[32];
        g_snprintf(key, sizeof key, "w%d-%d", slot, k);
        bool drop = held[k] && g_rand_boolean(rand);
        int rc;
        /* No metadata: an update still makes a new revision. */
        write_begins(s);
        if (drop)
            rc = procreg_unregister(reg, NS, key, &err);
        else if (held[k])
            rc = procreg_update_metadata(reg, NS, key, NULL,
                                         PROCREG_UPDATE_REPLACE, &err);
        else
            rc = procreg_register(reg, NS, key, NULL, NULL, NULL, &err);
        write_ends(s);
        if (rc != 0) {
            g_printerr("writer %d: %s: %s\n", slot, key, err->message);
            _exit(3);
        }
        held[k] = !drop;
        g_usleep(g_rand_int_range(rand, 0, WRITE_GAP_US));
    }
}

/* The same load on liblmdb alone: one put per write transaction. */
static G_NORETURN void raw_writer_main(const char *path, board_slot *s,
                                       int slot, guint32 seed)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    if (mdb_env_create(&env) != 0 ||
        mdb_env_open(env, path, MDB_NOSUBDIR | MDB_NOTLS, 0600) != 0 ||
        mdb_txn_begin(env, NULL, 0, &txn) != 0 ||
        mdb_dbi_open(txn, NULL, 0, &dbi) != 0 || mdb_txn_commit(txn) != 0)
        _exit(2);
    GRand *rand = g_rand_new_with_seed(seed);
    for (gint64 n = 0;; n++) {
        char key[32];
        g_snprintf(key, sizeof key, "w%d-%d", slot,
                   g_rand_int_range(rand, 0, KEYS));
        MDB_val k = {strlen(key), key}, v = {sizeof n, &n};
        write_begins(s);
        int rc = mdb_txn_begin(env, NULL, 0, &txn);
        if (rc == 0)
            rc = mdb_put(txn, dbi, &k, &v, 0);
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        write_ends(s);
        if (rc != 0) {
            g_printerr("raw writer %d: %s\n", slot, mdb_strerror(rc));
            _exit(3);
        }
        g_usleep(g_rand_int_range(rand, 0, WRITE_GAP_US));
    }
}

typedef struct {
    char *exe, *target, *board_path;
    bool raw;
    board_slot *board;
    GPid pid[WRITERS];
    gint64 counted[WRITERS]; /* busy_since of the stall counted last */
    gint64 longest;
    int stalls;
    guint32 seeds;
} run;

static void spawn(run *r, int slot)
{
    char s[16], seed[16];
    g_snprintf(s, sizeof s, "%d", slot);
    g_snprintf(seed, sizeof seed, "%u", ++r->seeds * 7919u);
    memset(&r->board[slot], 0, sizeof r->board[slot]);
    r->counted[slot] = 0;
    char *argv[] = {r->exe, r->raw ? (char *)"--raw-writer"
                                   : (char *)"--writer",
                    r->target, r->board_path, s, seed, NULL};
    GError *err = NULL;
    if (!g_spawn_async(NULL, argv, NULL,
                       G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL,
                       NULL, NULL, &r->pid[slot], &err))
        g_error("spawning writer %d: %s", slot, err->message);
}

/* Read the board: every write in progress counts with its wait so far. */
static void observe(run *r)
{
    gint64 now = g_get_monotonic_time();
    for (int i = 0; i < WRITERS; i++) {
        board_slot *s = &r->board[i];
        gint64 since = load(&s->busy_since);
        gint64 waited = since != 0 ? now - since : 0;
        r->longest = MAX(r->longest, MAX(waited, load(&s->longest)));
        if (waited > STALL_US && since != r->counted[i]) {
            r->counted[i] = since;
            r->stalls++;
            g_test_message("stall: writer %d (pid %d) waiting %.1f s",
                           i, r->pid[i], waited / 1e6);
        }
        int status;
        if (waitpid(r->pid[i], &status, WNOHANG) == r->pid[i])
            g_error("writer %d ended on its own (status %d)", i, status);
    }
}

static void stop(run *r, int slot)
{
    int status;
    kill(r->pid[slot], SIGKILL);
    g_assert_cmpint(waitpid(r->pid[slot], &status, 0), ==, r->pid[slot]);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        g_error("writer %d ended on its own (status %d)", slot, status);
    r->longest = MAX(r->longest, load(&r->board[slot].longest));
}

static void test_kill(void)
{
    const char *env_kills = g_getenv("PROCREG_WRITER_KILLS");
    int kills = env_kills != NULL ? atoi(env_kills) : 400;
    char *dir = lt_tmpdir();
    char *path = g_build_filename(dir, "writers.mdb", NULL);
    run r = {
        .exe = g_file_read_link("/proc/self/exe", NULL),
        .raw = g_getenv("PROCREG_WRITER_KILLS_RAW") != NULL,
        .board_path = g_build_filename(dir, "board", NULL),
    };
    r.target = r.raw ? g_strdup(path)
                     : g_strdup_printf("lmdb:path=%s", path);
    r.board = board_map(r.board_path, true);
    g_assert_nonnull(r.board);
    gint64 t0 = g_get_monotonic_time(), writes = 0;
    for (int i = 0; i < WRITERS; i++)
        spawn(&r, i);
    for (int n = 0; n < kills; n++) {
        g_usleep(g_random_int_range(0, KILL_GAP_US));
        observe(&r);
        int victim = g_random_int_range(0, WRITERS);
        stop(&r, victim);
        writes += load(&r.board[victim].writes);
        spawn(&r, victim);
    }
    observe(&r);
    for (int i = 0; i < WRITERS; i++) {
        stop(&r, i);
        writes += load(&r.board[i].writes);
    }
    char *summary = g_strdup_printf(
        "%s: %d kills, %" G_GINT64_FORMAT " writes, %d stalls > %.0f s, "
        "longest wait %.3f s (%.0f s)", r.raw ? "liblmdb" : "procreg", kills,
        writes, r.stalls, STALL_US / 1e6, r.longest / 1e6,
        (g_get_monotonic_time() - t0) / 1e6);
    g_test_message("%s", summary);
    g_free(summary);
    g_assert_cmpint(writes, >, kills);
    g_assert_cmpint(r.stalls, ==, 0);
    g_assert_cmpint(r.longest, <=, STALL_US);
    munmap(r.board, WRITERS * sizeof(board_slot));
    lt_rmtree(dir);
    g_free(dir);
    g_free(path);
    g_free(r.exe);
    g_free(r.target);
    g_free(r.board_path);
}

int main(int argc, char **argv)
{
    const char *test = g_getenv("PROCREG_TEST_WRITERS_PARENT");
    if (test != NULL && argc == 6 &&
        (strcmp(argv[1], "--writer") == 0 ||
         strcmp(argv[1], "--raw-writer") == 0)) {
        /* A writer: it dies with the test, even one that died first. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != (pid_t)atoi(test))
            return 0;
        int slot = atoi(argv[4]);
        board_slot *board = board_map(argv[3], false);
        if (board == NULL || slot < 0 || slot >= WRITERS)
            return 2;
        guint32 seed = (guint32)strtoul(argv[5], NULL, 10);
        if (strcmp(argv[1], "--raw-writer") == 0)
            raw_writer_main(argv[2], &board[slot], slot, seed);
        writer_main(argv[2], &board[slot], slot, seed);
    }
    char *self = g_strdup_printf("%d", getpid());
    g_setenv("PROCREG_TEST_WRITERS_PARENT", self, TRUE);
    g_free(self);
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/lmdb/writers/kill", test_kill);
    return g_test_run();
}
