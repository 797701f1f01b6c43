/* Reaping a dead owner through its owner rows (backends/lmdb/liveness.c,
 * format 5): across namespaces, a stale row, an entry without its row, a
 * registration committed between the reap's scan and its write (forced
 * through the reap hook of a build with PROCREG_LMDB_REAP_HOOKS, and the
 * batch hook in the registrant), with the change log trimmed past the
 * scan meanwhile. */
#include "owner-rows-util.h"

#include "lmdb-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>

typedef lt_fixture Fixture;

static const char *self_exe;

/* The same build calls the format hooks (test-format.c uses them). */
void procreg_lmdb_hook_format_must_write(lmdb_env *env)
{
    (void)env;
}

void procreg_lmdb_hook_format_layout(lmdb_env *env)
{
    (void)env;
}

/* ---- reaping a dead owner through its owner rows ---- */

static guint64 last_change(const char *path)
{
    raw_db r;
    raw_open(&r, path, false);
    guint64 n = raw_last_change(&r);
    raw_close(&r, false);
    return n;
}

/* A dead owner with entries in two namespaces, beside live entries in
 * both and in a third: every one of its entries is reaped (logged), its
 * rows dropped, and nothing of the live owner's touched. */
static void test_reap_namespaces(Fixture *f, gconstpointer data)
{
    procreg_owner o, self;
    procreg_owner_self(&self);
    pid_t pid = spawn_owner(self_exe, &o);
    procreg *reg = lt_open(f->spec);
    reg_for(reg, "a", "live", &self);
    reg_for(reg, "a", "d1", &o);
    reg_for(reg, "b", "d1", &o);
    reg_for(reg, "a", "d2", &o);
    reg_for(reg, "b", "live", &self);
    reg_for(reg, "c", "live", &self);
    procreg_close(reg);
    guint64 last = last_change(f->path);
    raw_db r;
    raw_open(&r, f->path, false);
    g_assert_true(r.v5);
    g_assert_cmpuint(raw_count(&r, "owners"), ==, 5);
    g_assert_true(has_row(&r, &o, "a") && has_row(&r, &o, "b"));
    raw_close(&r, false);

    size_t txn_before = lt_raw_txnid(f->path);
    kill_owner(pid);
    reg = open_and_reap(f->spec, 3);
    procreg_close(reg);
    /* One write transaction: the reap.  (This process may probe the dead
     * owner again after it, and must then find nothing to write.) */
    g_assert_cmpuint(lt_raw_txnid(f->path), ==, txn_before + 1);

    raw_open(&r, f->path, false);
    g_assert_false(raw_has(&r, "entries", "a", "d1"));
    g_assert_false(raw_has(&r, "entries", "a", "d2"));
    g_assert_false(raw_has(&r, "entries", "b", "d1"));
    g_assert_true(raw_has(&r, "entries", "a", "live"));
    g_assert_true(raw_has(&r, "entries", "b", "live"));
    g_assert_true(raw_has(&r, "entries", "c", "live"));
    g_assert_false(has_row(&r, &o, "a"));
    g_assert_false(has_row(&r, &o, "b"));
    g_assert_cmpuint(raw_count(&r, "owners"), ==, 3);
    g_assert_cmpuint(raw_last_change(&r), ==, last + 3);
    raw_close(&r, false);
}

/* The lines of @dump that contain none of @drop (NULL-terminated). */
static char *dump_without(const char *dump, const char *const *drop)
{
    char **lines = g_strsplit(dump, "\n", -1);
    GString *out = g_string_new(NULL);
    for (char **l = lines; *l != NULL; l++) {
        bool keep = **l != '\0';
        for (const char *const *d = drop; keep && *d != NULL; d++)
            keep = strstr(*l, *d) == NULL;
        if (keep)
            g_string_append_printf(out, "%s\n", *l);
    }
    g_strfreev(lines);
    return g_string_free(out, FALSE);
}

static char *hex(const void *p, size_t n)
{
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < n; i++)
        g_string_append_printf(s, "%02x", ((const unsigned char *)p)[i]);
    return g_string_free(s, FALSE);
}

/* An owner registers s/x and unregisters it (its row for s stays, stale)
 * and holds t/y, beside a live owner's s/keep; it dies.  The reap drops
 * both its rows and removes t/y (one change logged), and touches nothing
 * else: every other record of the file is as it was. */
static void test_reap_stale_row(Fixture *f, gconstpointer data)
{
    procreg_owner o, self;
    procreg_owner_self(&self);
    pid_t pid = spawn_owner(self_exe, &o);
    procreg *reg = lt_open(f->spec);
    reg_for(reg, "s", "keep", &self);
    reg_for(reg, "s", "x", &o);
    reg_for(reg, "t", "y", &o);
    procreg_key *k = NULL;
    g_assert_cmpint(procreg_key_new("s", "x", &k, NULL), ==, 0);
    g_assert_cmpint(procreg_unregister_full(reg, k, 0, PROCREG_FORCE, NULL),
                    ==, 0);
    procreg_key_unref(k);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, false);
    g_assert_true(has_row(&r, &o, "s")); /* stale */
    g_assert_false(raw_has(&r, "entries", "s", "x"));
    raw_close(&r, false);
    char *before = lt_raw_dump(f->path);
    guint64 last = last_change(f->path);

    size_t txn_before = lt_raw_txnid(f->path);
    kill_owner(pid);
    reg = open_and_reap(f->spec, 1);
    procreg_close(reg);
    g_assert_cmpuint(lt_raw_txnid(f->path), ==, txn_before + 1);

    /* The dead owner's rows, t/y and the new change: all that differs. */
    char ok[12];
    owner_key(&o, ok);
    guint64 seq = GUINT64_TO_BE(last + 1);
    char *row = hex(ok, sizeof ok), *ty = hex("t\0y", 3),
         *change = hex(&seq, sizeof seq);
    char *row_line = g_strdup_printf("owners %s", row),
         *ty_line = g_strdup_printf("entries %s ", ty),
         *change_line = g_strdup_printf("events %s ", change);
    const char *const from_before[] = {row_line, ty_line, NULL};
    const char *const from_after[] = {change_line, NULL};
    char *after = lt_raw_dump(f->path);
    g_assert_nonnull(strstr(before, row_line));
    g_assert_nonnull(strstr(before, ty_line));
    g_assert_nonnull(strstr(after, change_line));
    char *b = dump_without(before, from_before),
         *a = dump_without(after, from_after);
    g_assert_cmpstr(a, ==, b);
    raw_open(&r, f->path, false);
    g_assert_false(has_row(&r, &o, "s"));
    g_assert_false(has_row(&r, &o, "t"));
    g_assert_true(has_row(&r, &self, "s"));
    g_assert_true(raw_has(&r, "entries", "s", "keep"));
    g_assert_cmpuint(raw_last_change(&r), ==, last + 1);
    raw_close(&r, false);
    g_free(before);
    g_free(after);
    g_free(a);
    g_free(b);
    g_free(row);
    g_free(ty);
    g_free(change);
    g_free(row_line);
    g_free(ty_line);
    g_free(change_line);
}

/* A dead owner's entry whose owner row is missing (a damaged file): the
 * reap of that owner, which follows its rows, removes its other entries
 * and leaves that one; every read answers it absent, and registering
 * its key removes it (reason owner_exited) and writes the new owner's
 * row. */
static void test_reap_missing_row(Fixture *f, gconstpointer data)
{
    procreg_owner o, self;
    procreg_owner_self(&self);
    pid_t pid = spawn_owner(self_exe, &o);
    procreg *reg = lt_open(f->spec);
    reg_for(reg, "m", "1", &o);
    reg_for(reg, "n", "1", &o);
    procreg_close(reg);
    raw_db r;
    raw_open(&r, f->path, true);
    delete_row(&r, &o, "m");
    raw_close(&r, true);
    guint64 last = last_change(f->path);
    size_t txn_before = lt_raw_txnid(f->path);

    kill_owner(pid);
    reg = open_and_reap(f->spec, 1);
    procreg_owner got;
    g_assert_cmpint(procreg_lookup(reg, "m", "1", &got, NULL), ==,
                    PROCREG_ENOTFOUND);
    g_assert_cmpint(procreg_lookup(reg, "n", "1", &got, NULL), ==,
                    PROCREG_ENOTFOUND);
    size_t n = 1;
    g_assert_cmpint(procreg_count(reg, "m", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 0);
    procreg_entry *all = NULL;
    g_assert_cmpint(procreg_list(reg, NULL, &all, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 0);
    procreg_entries_free(all, n);
    reg_for(reg, "m", "1", &self);
    g_assert_cmpint(lt_stat(reg, "reaped"), ==, 2);
    g_assert_cmpint(procreg_lookup(reg, "m", "1", &got, NULL), ==, 0);
    g_assert_cmpint(got.pid, ==, self.pid);
    procreg_close(reg);
    /* The reap and the registration. */
    g_assert_cmpuint(lt_raw_txnid(f->path), ==, txn_before + 2);

    raw_open(&r, f->path, false);
    g_assert_false(raw_has(&r, "entries", "n", "1"));
    g_assert_false(has_row(&r, &o, "n"));
    g_assert_false(has_row(&r, &o, "m"));
    g_assert_true(has_row(&r, &self, "m"));
    /* n/1 reaped; m/1 removed (owner_exited) and registered. */
    g_assert_cmpuint(raw_last_change(&r), ==, last + 3);
    raw_close(&r, false);
}

/* ---- a commit between a reap's scan and its write ---- */

/* The reap hook (a build with PROCREG_LMDB_REAP_HOOKS calls it between a
 * reap's scan and its write transaction): the first call in this process
 * runs reap_hook_fn once; in a late registrant (--late) every call waits
 * for SIGKILL: its own monitor must not reap the owner. */
static void (*reap_hook_fn)(void *data);
static void *reap_hook_data;
static bool reap_hook_block;

void procreg_lmdb_hook_reap_scanned(lmdb_env *env)
{
    (void)env;
    while (reap_hook_block)
        pause();
    void (*fn)(void *) =
        __atomic_exchange_n(&reap_hook_fn, NULL, __ATOMIC_SEQ_CST);
    if (fn != NULL)
        fn(reap_hook_data);
}

/* --late SPEC PID START: register big/late for the owner PID START (alive
 * when checked), held inside the writer lock after the check until the
 * parent says 'g' (fd 4); 'a' when held there; 'u' once committed and the
 * lock let go (durability=sync: the flush comes after), held there until
 * 'q' (so its registry neither returns nor watches the owner yet); 'r'
 * when the call returned 0; then waits to be killed. */
static void late_batch_hook(const char *point)
{
    if (strcmp(point, "solo") == 0) {
        lt_say(3, 's');
    } else if (strcmp(point, "applied") == 0) {
        lt_say(3, 'a');
        g_assert_cmpint(lt_hear(4), ==, 'g');
    } else if (strcmp(point, "unlocked") == 0) {
        lt_say(3, 'u');
        g_assert_cmpint(lt_hear(4), ==, 'q');
    }
}

static int late_main(const char *spec, const char *pid, const char *start)
{
    reap_hook_block = true;
    /* A test that fails leaves nobody holding the pipes. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() == 1)
        return 1;
    char *sync = g_strconcat(spec, ",durability=sync", NULL);
    procreg *reg = lt_open(sync);
    g_free(sync);
    procreg_owner o = {(pid_t)atoi(pid), g_ascii_strtoull(start, NULL, 10)};
    procreg_lmdb_batch_hook = late_batch_hook;
    int rc = procreg_register(reg, "big", "late", &o, NULL, NULL, NULL);
    lt_say(3, rc == 0 ? 'r' : 'f');
    for (;;)
        pause();
    return 0;
}

typedef struct {
    int up, down; /* the late registrant's pipes */
    procreg *reg;
    int fill;     /* registrations made in the hook after its commit */
    int filled;
} late_ctx;

/* In this process's reap, between scan and write: let the late
 * registration commit, then register more from this thread (the
 * monitor's): the writer lock is free here. */
static void release_late(void *data)
{
    late_ctx *l = data;
    lt_say(l->down, 'g');
    g_assert_cmpint(lt_hear(l->up), ==, 'u');
    procreg_owner self;
    procreg_owner_self(&self);
    for (int i = 0; i < l->fill; i++) {
        char name[32];
        g_snprintf(name, sizeof name, "f%05d", i);
        if (procreg_register(l->reg, "fill", name, &self, NULL, NULL,
                             NULL) == 0)
            l->filled++;
    }
}

/* A registration for owner O, checked alive before O died, commits after
 * the reap of O scanned and before its write transaction: the write finds
 * it in the change log and reaps it (no row of O left behind an entry of
 * O).  With @data, more than LOG_KEEP changes follow it before the write,
 * so the log no longer holds it: the write walks the namespaces under the
 * lock instead (reap_walks), and reaps it just the same. */
static void test_reap_late(Fixture *f, gconstpointer data)
{
    int fill = GPOINTER_TO_INT(data);
    procreg_owner o, self;
    procreg_owner_self(&self);
    pid_t opid = spawn_owner(self_exe, &o);
    /* Through another handle, closed: this registry's own monitor (the
     * core's) does not know O, only the backend's reap removes its
     * entries here. */
    procreg *reg = lt_open(f->spec);
    reg_for(reg, "big", "live", &self);
    reg_for(reg, "big", "d1", &o);
    procreg_close(reg);
    /* Its sweep finds O (a row) alive, and watches it. */
    reg = lt_open(f->spec);

    int up[2], down[2];
    g_assert_cmpint(pipe(up), ==, 0);
    g_assert_cmpint(pipe(down), ==, 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, up[1], 3);
    posix_spawn_file_actions_adddup2(&fa, down[0], 4);
    char pid_s[16], start_s[32];
    g_snprintf(pid_s, sizeof pid_s, "%d", (int)o.pid);
    g_snprintf(start_s, sizeof start_s, "%" G_GUINT64_FORMAT,
               (guint64)o.start_time);
    char *argv[] = {(char *)self_exe, "--late", f->spec, pid_s, start_s, NULL};
    pid_t rpid;
    g_assert_cmpint(posix_spawn(&rpid, self_exe, &fa, NULL, argv, environ),
                    ==, 0);
    posix_spawn_file_actions_destroy(&fa);
    close(up[1]);
    close(down[0]);
    /* The registrant checked O alive and holds the writer lock. */
    g_assert_cmpint(lt_hear(up[0]), ==, 'a');

    late_ctx l = {up[0], down[1], reg, fill, 0};
    reap_hook_data = &l;
    __atomic_store_n(&reap_hook_fn, release_late, __ATOMIC_SEQ_CST);
    gint64 walks = lt_stat(reg, "reap_walks");
    kill_owner(opid);
    /* The reap's commit is counted after it (reap_walks first). */
    gint64 t0 = g_get_monotonic_time(), got;
    while ((got = lt_stat(reg, "reaped")) == 0 &&
           g_get_monotonic_time() - t0 < 30 * G_USEC_PER_SEC)
        g_usleep(1000);
    g_assert_null(__atomic_load_n(&reap_hook_fn, __ATOMIC_SEQ_CST));
    g_assert_cmpint(l.filled, ==, fill);
    g_assert_cmpint(got, ==, 2);
    g_assert_cmpint(lt_stat(reg, "reap_walks"), ==, walks + (fill > 4096));

    /* The file, the registrant still inside its call. */
    raw_db r;
    raw_open(&r, f->path, false);
    g_assert_false(raw_has(&r, "entries", "big", "d1"));
    g_assert_false(raw_has(&r, "entries", "big", "late"));
    g_assert_true(raw_has(&r, "entries", "big", "live"));
    g_assert_false(has_row(&r, &o, "big"));
    g_assert_true(has_row(&r, &self, "big"));
    raw_close(&r, false);
    lt_say(down[1], 'q');
    g_assert_cmpint(lt_hear(up[0]), ==, 'r');
    procreg_close(reg);

    int status;
    g_assert_cmpint(kill(rpid, SIGKILL), ==, 0);
    g_assert_cmpint(waitpid(rpid, &status, 0), ==, rpid);
    close(up[0]);
    close(down[1]);
}

int main(int argc, char **argv)
{
    self_exe = argv[0];
    if (argc == 5 && strcmp(argv[1], "--late") == 0)
        return late_main(argv[2], argv[3], argv[4]);
    if (argc == 2 && strcmp(argv[1], "--sleep") == 0) {
        for (;;)
            pause();
    }
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn, d)                                                      \
    g_test_add(path, Fixture, d, lt_fx_setup, fn, lt_fx_teardown)
    ADD("/lmdb/owners/reap-namespaces", test_reap_namespaces, NULL);
    ADD("/lmdb/owners/reap-stale-row", test_reap_stale_row, NULL);
    ADD("/lmdb/owners/reap-missing-row", test_reap_missing_row, NULL);
    ADD("/lmdb/owners/reap-late", test_reap_late, GINT_TO_POINTER(1));
    ADD("/lmdb/owners/reap-late-trimmed", test_reap_late,
        GINT_TO_POINTER(4200));
    return g_test_run();
}
