/* Owner liveness: dead pids refused, cleanup on exit, the owner index,
 * dead owners hidden from lookups, and register-or-get races. */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void test_dead_pid_refused(fixture *f, gconstpointer spec)
{
    pid_t pid = spawn_child();
    kill_child(pid);
    procreg_owner dead = {.pid = pid};
    CHECK_RC(PROCREG_ENOTALIVE,
             procreg_register(f->reg, f->ns, "svc", &dead, NULL, NULL, &err_));
    /* Our own pid with another start time: a reused pid, refused. */
    procreg_owner self;
    procreg_owner_self(&self);
    procreg_owner reused = {.pid = self.pid, .start_time = self.start_time + 1};
    CHECK_RC(PROCREG_ENOTALIVE, procreg_register(f->reg, f->ns, "svc", &reused,
                                                 NULL, NULL, &err_));
    size_t n = 99;
    CHECK_RC(0, procreg_count(f->reg, f->ns, &n, &err_));
    g_assert_cmpuint(n, ==, 0);
}

/* ---- cleanup when owners exit ---- */

typedef struct {
    gint64 time;  /* event time, µs (real) */
    int child;    /* from the name "child<N>-svc<K>" */
} exit_seen;

typedef struct {
    pthread_mutex_t lock;
    GArray *seen; /* exit_seen, one per OWNER_EXITED removal */
    int other;    /* removals with another reason */
} exit_log;

static void on_exit_event(procreg *reg, const procreg_event *ev, gpointer data)
{
    exit_log *log = data;
    if (ev->kind != PROCREG_EVENT_UNREGISTERED)
        return;
    pthread_mutex_lock(&log->lock);
    if (ev->reason == PROCREG_REASON_OWNER_EXITED) {
        exit_seen s = {ev->time, -1};
        sscanf(ev->name, "child%d-", &s.child);
        g_array_append_val(log->seen, s);
    } else {
        log->other++;
    }
    pthread_mutex_unlock(&log->lock);
}

static guint exit_count(exit_log *log)
{
    pthread_mutex_lock(&log->lock);
    guint n = log->seen->len;
    pthread_mutex_unlock(&log->lock);
    return n;
}

/* Register @n_children children with @per_child keys each, SIGKILL them
 * all, and check every entry vanishes with reason OWNER_EXITED within
 * @bound_ms.  Returns the worst latency from a child's SIGKILL to the
 * removal of one of its entries (the event's time), in µs. */
static gint64 exit_round(procreg *reg, const char *ns, int n_children,
                         int per_child, gint64 bound_ms)
{
    exit_log log = {.seen = g_array_new(FALSE, FALSE, sizeof(exit_seen))};
    pthread_mutex_init(&log.lock, NULL);
    uint64_t sub = 0;
    CHECK_RC(0, procreg_subscribe(reg, ns, NULL, on_exit_event, &log, NULL,
                                  NULL, &sub, &err_));
    pid_t *pids = g_new(pid_t, n_children);
    gint64 *killed_at = g_new(gint64, n_children);
    for (int c = 0; c < n_children; c++)
        pids[c] = spawn_child();
    for (int c = 0; c < n_children; c++) {
        procreg_owner o = {.pid = pids[c]};
        for (int k = 0; k < per_child; k++) {
            char name[64];
            snprintf(name, sizeof name, "child%d-svc%d", c, k);
            CHECK_RC(0, procreg_register(reg, ns, name, &o, NULL, NULL, &err_));
        }
    }
    size_t n = 0;
    CHECK_RC(0, procreg_count(reg, ns, &n, &err_));
    g_assert_cmpuint(n, ==, (size_t)n_children * per_child);

    for (int c = 0; c < n_children; c++) {
        killed_at[c] = g_get_real_time();
        kill(pids[c], SIGKILL);
    }
    guint want = (guint)(n_children * per_child);
    bool gone = WAIT_UNTIL(exit_count(&log) == want, bound_ms);
    for (int c = 0; c < n_children; c++)
        reap_child(pids[c]);
    CHECK_RC(0, procreg_count(reg, ns, &n, &err_));
    if (!gone || n != 0)
        g_error("%u of %u OWNER_EXITED events within %" G_GINT64_FORMAT
                " ms; %zu entries left", exit_count(&log), want, bound_ms, n);
    gint64 worst = 0;
    for (guint i = 0; i < log.seen->len; i++) {
        exit_seen *s = &g_array_index(log.seen, exit_seen, i);
        g_assert_cmpint(s->child, >=, 0);
        g_assert_cmpint(s->child, <, n_children);
        gint64 d = s->time - killed_at[s->child];
        if (d > worst)
            worst = d;
    }
    g_assert_cmpint(log.other, ==, 0);
    g_assert_cmpint(procreg_unsubscribe(reg, sub), ==, 0);
    g_array_unref(log.seen);
    pthread_mutex_destroy(&log.lock);
    g_free(pids);
    g_free(killed_at);
    return worst;
}

static void test_owner_exit(fixture *f, gconstpointer spec)
{
    gint64 worst = exit_round(f->reg, f->ns, 8, 3, 1000);
    g_test_message("cleanup latency (pidfd, 8 owners x 3 entries): worst "
                   "%.2f ms from SIGKILL to removal", worst / 1000.0);
    g_printerr("# %s: cleanup latency pidfd 8x3: worst %.2f ms\n",
               (const char *)spec, worst / 1000.0);
    g_assert_cmpint(worst, <, 1000 * 1000);
    procreg_health h;
    CHECK_RC(0, procreg_health_check(f->reg, &h, &err_));
    GVariant *mon = g_variant_lookup_value(h.details, "monitor",
                                           G_VARIANT_TYPE_VARDICT);
    const char *mode = NULL;
    g_assert_true(g_variant_lookup(mon, "mode", "&s", &mode));
    g_assert_cmpstr(mode, ==, "pidfd");
    g_variant_unref(mon);
    procreg_health_clear(&h);
}

static void test_owner_exit_poll(fixture *f, gconstpointer spec)
{
    g_setenv("PROCREG_MONITOR", "poll", TRUE);
    procreg *reg = NULL;
    CHECK_RC(0, procreg_open(spec, &reg, &err_));
    g_unsetenv("PROCREG_MONITOR");
    gint64 worst = exit_round(reg, f->ns, 8, 3, 1000);
    g_test_message("cleanup latency (poll, 8 owners x 3 entries): worst "
                   "%.2f ms", worst / 1000.0);
    g_printerr("# %s: cleanup latency poll 8x3: worst %.2f ms\n",
               (const char *)spec, worst / 1000.0);
    procreg_health h;
    CHECK_RC(0, procreg_health_check(reg, &h, &err_));
    GVariant *mon = g_variant_lookup_value(h.details, "monitor",
                                           G_VARIANT_TYPE_VARDICT);
    const char *mode = NULL;
    g_assert_true(g_variant_lookup(mon, "mode", "&s", &mode));
    g_assert_cmpstr(mode, ==, "poll");
    g_variant_unref(mon);
    procreg_health_clear(&h);
    procreg_close(reg);
}

/* Thousands of owners: one pidfd each, one epoll set.  Run on the first
 * backend only: forking is what costs here, not the registry. */
static void test_many_owners(fixture *f, gconstpointer spec)
{
    if (!first_spec(spec)) {
        g_test_skip("run on the first backend only");
        return;
    }
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    const int n = 200; /* forking under a sanitizer costs 10x */
#else
    const int n = 1000;
#endif
    gint64 t0 = g_get_monotonic_time();
    gint64 worst = exit_round(f->reg, f->ns, n, 1, 10000);
    g_printerr("# %s: cleanup latency pidfd %d owners: worst %.2f ms "
               "(round %.0f ms)\n", (const char *)spec, n, worst / 1000.0,
               (g_get_monotonic_time() - t0) / 1000.0);
    g_test_message("%d owners: worst cleanup latency %.2f ms", n,
                   worst / 1000.0);
    GVariant *st = NULL;
    CHECK_RC(0, procreg_stats(f->reg, &st, &err_));
    GVariant *cl = g_variant_lookup_value(st, "cleanup", G_VARIANT_TYPE("a{st}"));
    guint64 max_ns = 0;
    g_assert_true(g_variant_lookup(cl, "max_latency_ns", "t", &max_ns));
    g_printerr("# %s: monitor: worst detection-to-removed %.2f ms\n",
               (const char *)spec, max_ns / 1e6);
    g_variant_unref(cl);
    g_variant_unref(st);
    /* Forking and killing a thousand processes at once loads the machine
     * (the kill loop alone takes hundreds of ms on a busy 2-core VM), so
     * the bound here is looser than the 1 s of the small rounds. */
    g_assert_cmpint(worst, <, 5000 * 1000);
}

/* While an exited owner's cleanup is held up, lookups hide its entries. */
static void test_dead_owner_hidden(fixture *f, gconstpointer spec)
{
    if (strcmp(spec, "gate") != 0) {
        g_test_skip("needs the gate backend to hold the cleanup");
        return;
    }
    pid_t pid = spawn_child();
    procreg_owner o = {.pid = pid};
    CHECK_RC(0, procreg_register(f->reg, f->ns, "held", &o, NULL, NULL, &err_));
    CHECK_RC(0, procreg_register(f->reg, f->ns, "mine", NULL, NULL, NULL, &err_));
    gate_hold_unregister(true);
    kill_child(pid);
    g_assert_true(WAIT_UNTIL(gate_waiting() == 1, 1000));
    /* The backend still has it; the registry does not show it. */
    procreg_owner got;
    CHECK_RC(PROCREG_ENOTFOUND, procreg_lookup(f->reg, f->ns, "held", &got, &err_));
    procreg_entry e;
    CHECK_RC(PROCREG_ENOTFOUND,
             procreg_lookup_entry(f->reg, f->ns, "held", &e, &err_));
    CHECK_RC(PROCREG_ETIMEDOUT,
             procreg_wait_for(f->reg, f->ns, "held", 0, NULL, NULL, &err_));
    procreg_entry *all = NULL;
    size_t n = 0;
    CHECK_RC(0, procreg_list(f->reg, f->ns, &all, &n, &err_));
    g_assert_cmpuint(n, ==, 1);
    g_assert_cmpstr(all[0].name, ==, "mine");
    procreg_entries_free(all, n);
    CHECK_RC(0, procreg_lookup(f->reg, f->ns, "mine", &got, &err_));
    gate_hold_unregister(false);
    g_assert_true(WAIT_UNTIL(procreg_count(f->reg, f->ns, &n, NULL) == 0 &&
                                 n == 1, 1000));
}

static void test_list_owned(fixture *f, gconstpointer spec)
{
    pid_t pid = spawn_child();
    procreg_owner o = {.pid = pid};
    char *other = NULL;
    CHECK_RC(0, procreg_namespace_new_test(f->reg, &other, &err_));
    const char *names[] = {"c", "a", "b"};
    for (int i = 0; i < 3; i++)
        CHECK_RC(0, procreg_register(f->reg, f->ns, names[i], &o, NULL, NULL,
                                     &err_));
    CHECK_RC(0, procreg_register(f->reg, other, "z", &o, NULL, NULL, &err_));
    CHECK_RC(0, procreg_register(f->reg, f->ns, "own", NULL, NULL, NULL, &err_));
    /* Unregistered entries leave the index (the child owns it: removing
     * it from here is a supervisor's forced removal). */
    CHECK_RC(0, procreg_register(f->reg, f->ns, "gone", &o, NULL, NULL, &err_));
    procreg_key *gone = NULL;
    CHECK_RC(0, procreg_key_new(f->ns, "gone", &gone, &err_));
    CHECK_RC(0, procreg_unregister_full(f->reg, gone, 0, PROCREG_FORCE, &err_));
    procreg_key_unref(gone);

    procreg_entry *owned = NULL;
    size_t n = 0;
    CHECK_RC(0, procreg_list_owned(f->reg, pid, &owned, &n, &err_));
    g_assert_cmpuint(n, ==, 4);
    bool other_first = strcmp(other, f->ns) < 0;
    for (size_t i = 0; i < n; i++)
        g_assert_cmpint(owned[i].owner.pid, ==, pid);
    const char *expect[4];
    int j = 0;
    if (other_first)
        expect[j++] = "z";
    expect[j++] = "a";
    expect[j++] = "b";
    expect[j++] = "c";
    if (!other_first)
        expect[j++] = "z";
    for (size_t i = 0; i < n; i++)
        g_assert_cmpstr(owned[i].name, ==, expect[i]);
    procreg_entries_free(owned, n);

    CHECK_RC(0, procreg_list_owned(f->reg, getpid(), &owned, &n, &err_));
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found |= strcmp(owned[i].ns, f->ns) == 0 &&
                 strcmp(owned[i].name, "own") == 0;
    g_assert_true(found);
    procreg_entries_free(owned, n);

    CHECK_RC(PROCREG_EINVAL, procreg_list_owned(f->reg, 0, &owned, &n, &err_));

    kill_child(pid);
    g_assert_true(WAIT_UNTIL(procreg_count(f->reg, other, &n, NULL) == 0 &&
                                 n == 0, 1000));
    CHECK_RC(0, procreg_list_owned(f->reg, pid, &owned, &n, &err_));
    g_assert_cmpuint(n, ==, 0);
    procreg_namespace_drop(f->reg, other, NULL, NULL, NULL);
    g_free(other);
}

/* A key whose owner died can be taken again at once. */
static void test_reregister_after_exit(fixture *f, gconstpointer spec)
{
    pid_t pid = spawn_child();
    procreg_owner o = {.pid = pid};
    CHECK_RC(0, procreg_register(f->reg, f->ns, "svc", &o, NULL, NULL, &err_));
    kill_child(pid);
    /* Either the cleanup already ran, or register evicts the dead holder:
     * both end with our registration, and no wait is needed. */
    procreg_entry cur = {0};
    gint64 until = g_get_monotonic_time() + G_USEC_PER_SEC;
    int rc;
    while ((rc = procreg_register(f->reg, f->ns, "svc", NULL, NULL, &cur,
                                  NULL)) == PROCREG_EEXISTS &&
           g_get_monotonic_time() < until) {
        procreg_entry_clear(&cur);
        g_usleep(1000);
    }
    g_assert_cmpint(rc, ==, 0);
    g_assert_cmpint(cur.owner.pid, ==, getpid());
    procreg_entry_clear(&cur);
}

/* ---- register-or-get ---- */

#define RACERS 8
#define RACE_ROUNDS 200

typedef struct {
    fixture *f;
    int id;
    pthread_barrier_t *barrier;
    int wins;
    int losses_ok;
} racer;

static gpointer race_thread(gpointer data)
{
    racer *r = data;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        char name[32];
        snprintf(name, sizeof name, "race%d", round);
        GVariant *meta = g_variant_new_parsed("{'who': <%i>}", r->id);
        pthread_barrier_wait(r->barrier);
        procreg_entry cur = {0};
        int rc = procreg_register(r->f->reg, r->f->ns, name, NULL, meta, &cur,
                                  NULL);
        gint32 who = -1;
        g_assert_true(g_variant_lookup(cur.metadata, "who", "i", &who));
        if (rc == 0) {
            r->wins++;
            g_assert_cmpint(who, ==, r->id);
        } else {
            g_assert_cmpint(rc, ==, PROCREG_EEXISTS);
            /* The loser learns who won: the winner's entry. */
            g_assert_cmpint(who, !=, r->id);
            r->losses_ok++;
        }
        procreg_entry_clear(&cur);
    }
    return NULL;
}

static void test_register_race(fixture *f, gconstpointer spec)
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, RACERS);
    racer r[RACERS];
    GThread *t[RACERS];
    for (int i = 0; i < RACERS; i++) {
        r[i] = (racer){.f = f, .id = i, .barrier = &barrier};
        t[i] = g_thread_new("racer", race_thread, &r[i]);
    }
    int wins = 0, losses = 0;
    for (int i = 0; i < RACERS; i++) {
        g_thread_join(t[i]);
        wins += r[i].wins;
        losses += r[i].losses_ok;
    }
    pthread_barrier_destroy(&barrier);
    g_assert_cmpint(wins, ==, RACE_ROUNDS);
    g_assert_cmpint(losses, ==, RACE_ROUNDS * (RACERS - 1));
    /* And the stored entry is the winner's in every round. */
    for (int round = 0; round < RACE_ROUNDS; round++) {
        char name[32];
        snprintf(name, sizeof name, "race%d", round);
        procreg_entry e;
        CHECK_RC(0, procreg_lookup_entry(f->reg, f->ns, name, &e, &err_));
        procreg_entry_clear(&e);
    }
}

/* ---- every removal of a dead owner's entry counted once ---- */

/* What one registry saw of the removals of a dead owner's entries. */
typedef struct {
    procreg *reg;
    const char *ns;
    gint events;   /* UNREGISTERED(owner_exited) in ns */
    gint external; /* of those, reported as external */
    gint cleanups; /* PROCREG_OP_CLEANUP told to telemetry, in ns */
    gint markers;  /* REGISTERED events of names starting "marker" */
} observer;

static void observe_event(procreg *reg, const procreg_event *ev, gpointer data)
{
    observer *o = data;
    if (strcmp(ev->ns, o->ns) != 0)
        return;
    if (ev->kind == PROCREG_EVENT_UNREGISTERED &&
        ev->reason == PROCREG_REASON_OWNER_EXITED) {
        g_atomic_int_inc(&o->events);
        if (ev->external)
            g_atomic_int_inc(&o->external);
    }
    if (ev->kind == PROCREG_EVENT_REGISTERED &&
        g_str_has_prefix(ev->name, "marker"))
        g_atomic_int_inc(&o->markers);
}

static void observe_cleanup(procreg *reg, const procreg_telemetry_event *ev,
                            gpointer data)
{
    observer *o = data;
    if (ev->result == 0 && ev->ns != NULL && strcmp(ev->ns, o->ns) == 0)
        g_atomic_int_add(&o->cleanups, (gint)ev->count);
}

static uint64_t entries_removed(procreg *reg)
{
    GVariant *st = NULL;
    CHECK_RC(0, procreg_stats(reg, &st, &err_));
    GVariant *c = g_variant_lookup_value(st, "cleanup", G_VARIANT_TYPE("a{st}"));
    guint64 n = 0;
    g_assert_true(g_variant_lookup(c, "entries_removed", "t", &n));
    g_variant_unref(c);
    g_variant_unref(st);
    return n;
}

/* On a shared backend two registries see one owner die.  Whichever
 * process or thread reaps its entries (this registry's monitor, the
 * backend's own reaper), each registry reports each removal exactly once,
 * reason owner_exited, never external (no process made it), in its
 * events, its telemetry and its stats. */
static void test_removal_counted_once(fixture *f, gconstpointer spec)
{
    procreg *other = NULL;
    CHECK_RC(0, procreg_open(spec, &other, &err_));
    CHECK_RC(0, procreg_register(f->reg, f->ns, "probe", NULL, NULL, NULL,
                                 &err_));
    procreg_owner probe;
    bool shared = procreg_lookup(other, f->ns, "probe", &probe, NULL) == 0;
    observer obs[2] = {{.reg = f->reg, .ns = f->ns}, {.reg = other, .ns = f->ns}};
    int n_obs = shared ? 2 : 1;
    uint64_t before[2], sub[2], tel[2];
    for (int i = 0; i < n_obs; i++) {
        before[i] = entries_removed(obs[i].reg);
        CHECK_RC(0, procreg_subscribe(obs[i].reg, f->ns, NULL, observe_event,
                                      &obs[i], NULL, NULL, &sub[i], &err_));
        CHECK_RC(0, procreg_telemetry_attach(obs[i].reg,
                                             PROCREG_OP_BIT(PROCREG_OP_CLEANUP),
                                             observe_cleanup, &obs[i], NULL,
                                             &tel[i], &err_));
    }
    pid_t pid = spawn_child();
    procreg_owner o;
    CHECK_RC(0, procreg_owner_from_pid(pid, &o, &err_));
    CHECK_RC(0, procreg_register(f->reg, f->ns, "a", &o, NULL, NULL, &err_));
    CHECK_RC(0, procreg_register(f->reg, f->ns, "b", &o, NULL, NULL, &err_));
    kill_child(pid);
    for (int i = 0; i < n_obs; i++) {
        g_assert_true(WAIT_UNTIL(g_atomic_int_get(&obs[i].events) >= 2 &&
                                     g_atomic_int_get(&obs[i].cleanups) >= 2,
                                 5000));
        /* A marker written through the other registry: once it is here,
         * every change committed before it is too (a duplicate would have
         * come first). */
        char *marker = g_strdup_printf("marker%d", i);
        CHECK_RC(0, procreg_register(obs[n_obs - 1 - i].reg, f->ns, marker,
                                     NULL, NULL, NULL, &err_));
        g_free(marker);
        g_assert_true(WAIT_UNTIL(g_atomic_int_get(&obs[i].markers) >= 1, 5000));
    }
    for (int i = 0; i < n_obs; i++) {
        procreg_unsubscribe(obs[i].reg, sub[i]);
        procreg_telemetry_detach(obs[i].reg, tel[i]);
        g_assert_cmpint(obs[i].events, ==, 2);
        g_assert_cmpint(obs[i].cleanups, ==, 2);
        g_assert_cmpuint(entries_removed(obs[i].reg) - before[i], ==, 2);
        g_assert_cmpint(obs[i].external, ==, 0);
    }
    procreg_close(other);
}

void add_liveness_cases(void)
{
    add_case("liveness/dead_pid_refused", test_dead_pid_refused);
    add_case("liveness/owner_exit", test_owner_exit);
    add_case("liveness/owner_exit_poll", test_owner_exit_poll);
    add_case("liveness/many_owners", test_many_owners);
    add_case("liveness/dead_owner_hidden", test_dead_owner_hidden);
    add_case("liveness/list_owned", test_list_owned);
    add_case("liveness/reregister_after_exit", test_reregister_after_exit);
    add_case("liveness/register_race", test_register_race);
    add_case("liveness/removal_counted_once", test_removal_counted_once);
}
