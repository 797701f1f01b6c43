/*
 * Compliance cases for start once (procreg_start_once()), which the core
 * builds of entries, so every backend must carry it:
 *  - threads of one process: one start among concurrent callers, the same
 *    entry for all;
 *  - real processes on a shared backend: a waiter gets the entry another
 *    process started; a starter SIGKILLed between its claim and its
 *    registration, or whose start function fails, leaves the name to the
 *    waiter, which starts it itself.
 * The child side is the "start NAME" command of cx_lock_child() (lock.c).
 */
#include "compliance-private.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define START_WAIT_MS 30000 /* an etcd lease (5 s in the suite) and more */
#define NS "lk"

typedef struct {
    gint calls;
} Counter;

static int count_start(procreg *reg, const char *ns, const char *name,
                       procreg_owner *owner, GVariant **metadata,
                       gpointer user_data, GError **error)
{
    Counter *c = user_data;
    g_atomic_int_inc(&c->calls);
    g_usleep(20000); /* a start takes time: callers pile up behind it */
    return 0;
}

typedef struct {
    procreg *reg;
    const char *name;
    Counter *counter;
    int rc;
    bool started;
    procreg_entry entry;
    pthread_t thread;
} Starter;

static void *starter_run(void *p)
{
    Starter *s = p;
    s->rc = procreg_start_once(s->reg, NS, s->name, count_start, s->counter,
                               NULL, START_WAIT_MS, NULL, &s->entry,
                               &s->started, NULL);
    return NULL;
}

static void starter_start(Starter *s, procreg *reg, const char *name,
                          Counter *c)
{
    *s = (Starter){.reg = reg, .name = name, .counter = c};
    pthread_create(&s->thread, NULL, starter_run, s);
}

static size_t claims(procreg *reg)
{
    size_t n = 0;
    return procreg_count(reg, "procreg:start:" NS, &n, NULL) == 0 ? n : 0;
}

static bool wait_claims(procreg *reg, size_t want)
{
    gint64 until = g_get_monotonic_time() + (gint64)START_WAIT_MS * 1000;
    while (claims(reg) != want && g_get_monotonic_time() < until)
        g_usleep(2000);
    return claims(reg) == want;
}

void case_start_once_threads(Fixture *f)
{
    enum { N = 4 };
    Counter c = {0};
    Starter s[N];
    for (int i = 0; i < N; i++)
        starter_start(&s[i], f->reg, "svc", &c);
    int started = 0, failed = -1;
    bool same = true;
    for (int i = 0; i < N; i++) {
        pthread_join(s[i].thread, NULL);
        started += s[i].started;
        if (s[i].rc != 0 && failed < 0)
            failed = i;
        same &= s[i].entry.revision == s[0].entry.revision;
    }
    int rc = failed >= 0 ? s[failed].rc : 0;
    for (int i = 0; i < N; i++)
        procreg_entry_clear(&s[i].entry);
    CHECK_MSG(failed < 0, "caller %d got %d (%s)", failed, rc,
              procreg_strerror(rc));
    CHECK_MSG(c.calls == 1 && started == 1,
              "%d start functions ran, %d callers say they started", c.calls,
              started);
    CHECK_MSG(same, "the callers got different entries");
    CHECK_MSG(claims(f->reg) == 0, "start claims stayed");
}

/* Another process starts (lk, NAME) and is told @verdict ("ok", "fail")
 * while a thread of ours waits, or is killed when @verdict is NULL; its
 * last line in *@answer (replaced; g_free it).  false when that order
 * could not be forced: the child did not start, or our caller did not
 * queue behind its claim before the verdict. */
static bool across(Fixture *f, const char *name, const char *verdict,
                   Starter *ours, Counter *c, Spawned *child, char **answer)
{
    GError *err = NULL;
    g_clear_pointer(answer, g_free);
    if (!cx_spawn(f, "lock", child, &err)) {
        g_test_message("cannot run the child: %s", err->message);
        g_error_free(err);
        return false;
    }
    g_autofree char *cmd = g_strconcat("start ", name, NULL);
    g_autofree char *line = NULL;
    if (cx_write_line(child->in, cmd))
        line = cx_read_line_within(child->out, START_WAIT_MS);
    if (line == NULL || strcmp(line, "starting") != 0) {
        g_test_message("the child answered '%s' to '%s'",
                       line ? line : "(nothing)", cmd);
        return false;
    }
    starter_start(ours, f->reg, name, c);
    bool queued = wait_claims(f->reg, 2);
    if (verdict == NULL)
        cx_spawned_kill(child);
    else
        cx_write_line(child->in, verdict);
    pthread_join(ours->thread, NULL);
    if (verdict != NULL)
        *answer = cx_read_line_within(child->out, START_WAIT_MS);
    if (!queued)
        g_test_message("our caller did not queue behind the child's");
    return queued;
}

void case_start_once_processes(Fixture *f)
{
    Counter c = {0};
    Starter ours = {0};
    g_autofree char *answer = NULL;
    g_auto(SpawnedKilled) a = {0}, b = {0}, d = {0};

    /* The child's start succeeds: we get its entry and start nothing. */
    CHECK_MSG(across(f, "ok", "ok", &ours, &c, &a, &answer),
              "a succeeding start: the order was not forced");
    int rc = ours.rc;
    bool started = ours.started;
    pid_t owner = ours.entry.owner.pid;
    procreg_entry_clear(&ours.entry);
    CHECK_MSG(answer != NULL && strcmp(answer, "started 1 0") == 0,
              "the child answered '%s'", answer ? answer : "(nothing)");
    CHECK_MSG(rc == 0 && !started && c.calls == 0 && owner == a.pid,
              "the waiter got %d, started %d (%d start calls), owner %d, "
              "not the child's entry (%d)", rc, started, c.calls, (int)owner,
              (int)a.pid);

    /* The child's start fails: it gets the error, we start. */
    CHECK_MSG(across(f, "fails", "fail", &ours, &c, &b, &answer),
              "a failing start: the order was not forced");
    rc = ours.rc;
    started = ours.started;
    procreg_entry_clear(&ours.entry);
    g_autofree char *want = g_strdup_printf("started 0 %d", PROCREG_EBACKEND);
    CHECK_MSG(answer != NULL && strcmp(answer, want) == 0,
              "the failing child answered '%s'", answer ? answer : "");
    CHECK_MSG(rc == 0 && started && c.calls == 1,
              "after a failed start the waiter got %d, started %d", rc,
              started);

    /* The child dies between its claim and its registration: we start. */
    CHECK_MSG(across(f, "dies", NULL, &ours, &c, &d, &answer),
              "a killed starter: the order was not forced");
    rc = ours.rc;
    started = ours.started;
    procreg_entry_clear(&ours.entry);
    CHECK_MSG(rc == 0 && started && c.calls == 2,
              "after the starter was killed the waiter got %d (%s), started "
              "%d", rc, procreg_strerror(rc), started);
    CHECK_MSG(wait_claims(f->reg, 0), "start claims stayed");
}
