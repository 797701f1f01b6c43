/*
 * Crash safety of the lmdb backend.  A child registers, updates and
 * unregisters entries in a loop, on behalf of its long-lived parent (so
 * no owner cleanup can hide a loss), and reports each commit on a pipe;
 * the parent SIGKILLs it at a random moment, PROCREG_CRASH_KILLS times
 * (default 200).  The child is a separate program (this one,
 * re-executed).  After every kill the file must open cleanly, every
 * reported commit must be there, nothing may be half-written (metadata
 * checksums, the owner index), and a write must work (the dead child may
 * have held the writer lock).  At most the one commit the child made but
 * had not reported yet may differ from the reports.
 */
#include "lmdb-raw.h"
#include "lmdb-test-util.h"

#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#define N_KEYS 24
#define NS "crash"

/* What the parent knows: per key, present with metadata n, or absent. */
typedef struct {
    bool present;
    gint64 n;
} expect;

static GVariant *payload(gint64 n, GRand *rand)
{
    /* Sizes from a few bytes to several pages (overflow pages). */
    guint len = g_rand_int_range(rand, 0, 4) == 0
                    ? (guint)g_rand_int_range(rand, 2048, 9000)
                    : (guint)g_rand_int_range(rand, 0, 300);
    char *blob = g_malloc(len + 1);
    for (guint i = 0; i < len; i++)
        blob[i] = (char)('a' + g_rand_int_range(rand, 0, 26));
    blob[len] = '\0';
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "n", "x", n);
    g_variant_dict_insert(&d, "check", "u", g_str_hash(blob));
    g_variant_dict_insert(&d, "blob", "s", blob);
    g_free(blob);
    return g_variant_dict_end(&d);
}

/* Whether @m is a complete payload; its n in @n. */
static bool payload_ok(GVariant *m, gint64 *n)
{
    const char *blob = NULL;
    guint32 check = 0;
    return m != NULL && g_variant_lookup(m, "n", "x", n) &&
           g_variant_lookup(m, "check", "u", &check) &&
           g_variant_lookup(m, "blob", "&s", &blob) &&
           g_str_hash(blob) == check;
}

static void say(int fd, const char *line)
{
    size_t len = strlen(line);
    if (write(fd, line, len) != (ssize_t)len)
        _exit(3);
}

/* The child (this program, re-executed): open @spec and churn until
 * killed, reporting on stdout.  Exec, not a bare fork of the threaded
 * parent: a forked child may find an allocator lock taken by a thread
 * that did not follow it (sanitizer allocators are not fork-safe), and
 * ThreadSanitizer cannot follow it at all. */
static G_NORETURN void churn(const char *spec, guint32 seed)
{
    int fd = STDOUT_FILENO;
    GRand *rand = g_rand_new_with_seed(seed);
    procreg *reg = NULL;
    procreg_owner parent;
    if (procreg_open(spec, &reg, NULL) != 0 ||
        procreg_owner_from_pid(getppid(), &parent, NULL) != 0)
        _exit(2);
    say(fd, "ready\n");
    for (;;) {
        char key[16], line[64];
        g_snprintf(key, sizeof key, "k%d", g_rand_int_range(rand, 0, N_KEYS));
        /* The entries belong to the parent: this child changes them as a
         * supervisor would, with PROCREG_FORCE. */
        procreg_key *pkey = NULL;
        if (procreg_key_new(NS, key, &pkey, NULL) != 0)
            _exit(2);
        gint64 n = g_get_real_time();
        int rc;
        if (g_rand_boolean(rand)) {
            rc = procreg_register(reg, NS, key, &parent, payload(n, rand),
                                  NULL, NULL);
            if (rc == PROCREG_EEXISTS) {
                rc = procreg_update_metadata_full(
                    reg, pkey, payload(n, rand), PROCREG_UPDATE_REPLACE, 0,
                    PROCREG_FORCE, NULL, NULL);
                g_snprintf(line, sizeof line, "U %s %" G_GINT64_FORMAT "\n",
                           key, n);
            } else {
                g_snprintf(line, sizeof line, "R %s %" G_GINT64_FORMAT "\n",
                           key, n);
            }
        } else {
            rc = procreg_unregister_full(reg, pkey, 0, PROCREG_FORCE, NULL);
            g_snprintf(line, sizeof line, "D %s\n", key);
            if (rc == PROCREG_ENOTFOUND) {
                rc = procreg_register(reg, NS, key, &parent,
                                      payload(n, rand), NULL, NULL);
                g_snprintf(line, sizeof line, "R %s %" G_GINT64_FORMAT "\n",
                           key, n);
            }
        }
        procreg_key_unref(pkey);
        if (rc != 0) {
            g_snprintf(line, sizeof line, "E %d\n", rc);
            say(fd, line);
            _exit(4);
        }
        say(fd, line);
    }
}

/* Apply the child's report lines in @buf to @state; false on an error
 * line.  @ready is set when "ready" came. */
static bool apply_reports(GString *buf, expect *state, bool *ready,
                          int *commits)
{
    char *nl;
    while ((nl = memchr(buf->str, '\n', buf->len)) != NULL) {
        *nl = '\0';
        char op = buf->str[0];
        int k = -1;
        gint64 n = 0;
        if (strcmp(buf->str, "ready") == 0) {
            *ready = true;
        } else if (op == 'E') {
            g_test_message("child failed: %s", buf->str);
            return false;
        } else if ((op == 'R' || op == 'U') &&
                   sscanf(buf->str + 2, "k%d %" G_GINT64_FORMAT, &k, &n) == 2 &&
                   k >= 0 && k < N_KEYS) {
            state[k] = (expect){true, n};
            (*commits)++;
        } else if (op == 'D' && sscanf(buf->str + 2, "k%d", &k) == 1 &&
                   k >= 0 && k < N_KEYS) {
            state[k] = (expect){false, 0};
            (*commits)++;
        } else {
            g_error("bad report line '%s'", buf->str);
        }
        g_string_erase(buf, 0, nl - buf->str + 1);
    }
    return true;
}

/* Read what the child says for up to @us microseconds (or until EOF);
 * returns early when "ready" arrives. */
static bool read_reports(int fd, gint64 us, GString *buf, expect *state,
                         bool *ready, int *commits, bool until_eof)
{
    gint64 end = g_get_monotonic_time() + us;
    for (;;) {
        gint64 left = end - g_get_monotonic_time();
        if (!until_eof && left <= 0)
            return true;
        GPollFD p = {fd, G_IO_IN | G_IO_HUP, 0};
        int r = g_poll(&p, 1, until_eof ? -1 : (int)MAX(left / 1000, 0));
        if (r <= 0) {
            if (!until_eof)
                return true;
            continue;
        }
        char chunk[4096];
        ssize_t got = read(fd, chunk, sizeof chunk);
        if (got <= 0)
            return true; /* EOF: the child is gone */
        g_string_append_len(buf, chunk, got);
        bool was_ready = *ready;
        if (!apply_reports(buf, state, ready, commits))
            return false;
        if (!until_eof && !was_ready && *ready)
            return true; /* the caller waits for the start */
    }
}

/* The owner index covers the entries: every entry's (owner, namespace)
 * has its owner row (format 5: rows may be stale, never missing),
 * checked on the raw file (no procreg handle may be open in this process
 * meanwhile). */
static void check_index(const char *path)
{
    raw_db r;
    raw_open(&r, path, false);
    g_assert_true(r.v5);
    MDB_txn *txn = r.txn;
    MDB_dbi main_dbi = raw_dbi(&r, "entries", 0);
    MDB_cursor *c;
    g_assert_cmpint(mdb_cursor_open(txn, main_dbi, &c), ==, 0);
    MDB_val k, v;
    size_t n_entries = 0;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const char *cls = lt_raw_main_class(&k);
        if (cls == NULL || strcmp(cls, "entries") != 0)
            continue;
        n_entries++;
        char ok[12], buf[LT_MAIN_KEY_MAX];
        g_assert_true(lt_raw_entry_owner(&v, ok));
        MDB_val row = lt_raw_owner_row(ok, &k, buf), rv;
        if (mdb_get(txn, main_dbi, &row, &rv) != 0)
            g_error("an entry without its owner row");
    }
    mdb_cursor_close(c);
    /* All owned by the parent, in NS, and the probe's stale row: no
     * more than two rows. */
    if (raw_count(&r, "owners") > 2)
        g_error("%zu entries but %zu owner rows", n_entries,
                raw_count(&r, "owners"));
    raw_close(&r, false);
}

/* Compare the file with the reports; at most one key may be ahead. */
static void verify(procreg *reg, const expect *state, int round)
{
    procreg_entry *all = NULL;
    size_t n = 0;
    GError *err = NULL;
    if (procreg_list(reg, NS, &all, &n, &err) != 0)
        g_error("round %d: list after the kill: %s", round, err->message);
    bool seen[N_KEYS] = {0};
    gint64 got_n[N_KEYS] = {0};
    procreg_owner self;
    procreg_owner_self(&self);
    for (size_t i = 0; i < n; i++) {
        int k = -1;
        if (sscanf(all[i].name, "k%d", &k) != 1 || k < 0 || k >= N_KEYS)
            g_error("round %d: unexpected entry '%s'", round, all[i].name);
        if (!payload_ok(all[i].metadata, &got_n[k]))
            g_error("round %d: '%s' is half-written", round, all[i].name);
        if (all[i].owner.pid != self.pid)
            g_error("round %d: '%s' has owner %d", round, all[i].name,
                    (int)all[i].owner.pid);
        seen[k] = true;
    }
    procreg_entries_free(all, n);
    int differ = 0;
    for (int k = 0; k < N_KEYS; k++) {
        bool same = seen[k] == state[k].present &&
                    (!seen[k] || got_n[k] == state[k].n);
        if (same)
            continue;
        differ++;
        /* The one unreported commit can only be newer than the report. */
        if (seen[k] && state[k].present && got_n[k] < state[k].n)
            g_error("round %d: k%d holds n=%" G_GINT64_FORMAT ", older than "
                    "the reported %" G_GINT64_FORMAT " (a lost commit)",
                    round, k, got_n[k], state[k].n);
    }
    if (differ > 1)
        g_error("round %d: %d keys differ from the reported commits", round,
                differ);
}

/* After a kill the file may still hold the one unreported commit: adopt
 * what is there as the new truth. */
static void resync(procreg *reg, expect *state)
{
    for (int k = 0; k < N_KEYS; k++)
        state[k] = (expect){false, 0};
    procreg_entry *all = NULL;
    size_t n = 0;
    g_assert_cmpint(procreg_list(reg, NS, &all, &n, NULL), ==, 0);
    for (size_t i = 0; i < n; i++) {
        int k;
        gint64 v = 0;
        if (sscanf(all[i].name, "k%d", &k) == 1 && k >= 0 && k < N_KEYS &&
            payload_ok(all[i].metadata, &v))
            state[k] = (expect){true, v};
    }
    procreg_entries_free(all, n);
}

static void test_sigkill(void)
{
    int kills = 200;
    const char *env_kills = g_getenv("PROCREG_CRASH_KILLS");
    if (env_kills != NULL)
        kills = atoi(env_kills);
    char *dir = lt_tmpdir();
    char *path = g_build_filename(dir, "crash.mdb", NULL);
    expect state[N_KEYS] = {{0}};
    int commits = 0, max_round = 0;
    char *exe = g_file_read_link("/proc/self/exe", NULL);
    gint64 t0 = g_get_monotonic_time();

    for (int round = 0; round < kills; round++) {
        /* Alternate durability; some rounds start from a tiny map so
         * the kills also land in map growth. */
        char *spec = g_strdup_printf("lmdb:path=%s,durability=%s%s", path,
                                     round % 2 ? "nosync" : "sync",
                                     round < 20 ? ",map_size=256KiB" : "");
        procreg *reg = lt_open(spec);
        char *seed = g_strdup_printf("%u", (guint32)round * 7919u + 17u);
        char *argv[] = {exe, (char *)"--churn", spec, seed, NULL};
        GPid child = 0;
        int p[2] = {-1, -1};
        GError *serr = NULL;
        if (!g_spawn_async_with_pipes(NULL, argv, NULL,
                                      G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                      &child, NULL, &p[0], NULL, &serr))
            g_error("round %d: spawning the writer: %s", round,
                    serr->message);
        g_free(seed);
        GString *buf = g_string_new(NULL);
        bool ready = false;
        int before = commits;
        /* Wait for the child to start and make 0-15 commits (however
         * slow the machine), then give it 0-3 ms more: the kill lands at
         * a random point, often inside a transaction. */
        int target = g_random_int_range(0, 16);
        gint64 deadline = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
        while ((!ready || commits - before < target) &&
               g_get_monotonic_time() < deadline) {
            if (!read_reports(p[0], 1000, buf, state, &ready, &commits,
                              false))
                g_error("round %d: child failed", round);
        }
        if (!ready || commits - before < target)
            g_error("round %d: the child made %d of %d commits in 30 s", round,
                    commits - before, target);
        gint64 run = g_random_int_range(0, 3000);
        if (!read_reports(p[0], run, buf, state, &ready, &commits, false))
            g_error("round %d: child failed", round);
        kill(child, SIGKILL);
        int status = 0;
        g_assert_cmpint(waitpid(child, &status, 0), ==, child);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
            g_error("round %d: the child ended on its own (status %d)", round,
                    status);
        /* Everything it wrote before dying. */
        read_reports(p[0], 0, buf, state, &ready, &commits, true);
        close(p[0]);
        g_string_free(buf, TRUE);
        max_round = MAX(max_round, commits - before);

        /* The parent's handle sees the file as the child left it. */
        verify(reg, state, round);
        /* Writes work: the dead child may have held the writer lock. */
        GError *err = NULL;
        if (procreg_register(reg, "probe", "p", NULL, NULL, NULL, &err) != 0 ||
            procreg_unregister(reg, "probe", "p", &err) != 0)
            g_error("round %d: write after the kill: %s", round, err->message);
        procreg_close(reg);

        /* Opens cleanly from scratch, and the index is whole. */
        check_index(path);
        reg = lt_open(spec);
        verify(reg, state, round);
        resync(reg, state);
        procreg_close(reg);
        g_free(spec);
    }
    gint64 took = g_get_monotonic_time() - t0;
    g_test_message("%d SIGKILLs, %d reported commits (up to %d per run), "
                   "%.1f s", kills, commits, max_round, took / 1e6);
    g_assert_cmpint(commits, >, kills);
    lt_rmtree(dir);
    g_free(dir);
    g_free(path);
    g_free(exe);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--churn") == 0)
        churn(argv[2], (guint32)strtoul(argv[3], NULL, 10));
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/lmdb/crash/sigkill", test_sigkill);
    return g_test_run();
}
