/*
 * Compliance cases for reading groups: dispatch (alone, with a callback
 * that writes the group, and while other threads join and leave), counts
 * after churn, picking one member, finding members by metadata, and
 * waiting for members.  groups.c has who is a member.
 */
#include "compliance-private.h"

#include <stdatomic.h>
#include <string.h>

/* ---- dispatch ---- */

typedef struct {
    GArray *ids;
    size_t stop_after; /* 0: never */
    procreg *reg;
    bool write_back; /* join and leave the group from the callback */
    int write_failures;
} visit;

static bool on_member(const procreg_member *m, gpointer data)
{
    visit *v = data;
    g_array_append_val(v->ids, m->id);
    if (v->write_back) {
        uint64_t id = 0;
        size_t removed = 0;
        if (cx_join(v->reg, "gd", "g", NULL, &id) != 0 ||
            cx_leave_id(v->reg, "gd", "g", m->id, 0, &removed, NULL) != 0 ||
            removed != 1)
            v->write_failures++;
    }
    return v->stop_after == 0 || v->ids->len < v->stop_after;
}

void case_groups_dispatch(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GArray) ids = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    visit v = {.ids = ids, .reg = f->reg};
    size_t calls = 99;
    /* Absent or empty: no call, no error. */
    CHECK_OK(procreg_dispatch(f->reg, "gd", "g", on_member, &v, &calls, &err),
             err);
    CHECK(calls == 0 && ids->len == 0);
    uint64_t joined[12];
    for (size_t i = 0; i < G_N_ELEMENTS(joined); i++)
        CHECK_RC(cx_join(f->reg, "gd", "g", NULL, &joined[i]), 0);
    CHECK_OK(procreg_dispatch(f->reg, "gd", "g", on_member, &v, &calls, &err),
             err);
    CHECK_MSG(calls == G_N_ELEMENTS(joined) && ids->len == calls,
              "dispatch made %zu calls for %zu members", calls,
              G_N_ELEMENTS(joined));
    for (size_t i = 0; i < G_N_ELEMENTS(joined); i++)
        CHECK_MSG(g_array_index(ids, uint64_t, i) == joined[i],
                  "call %zu was for member %" G_GUINT64_FORMAT ", expected "
                  "%" G_GUINT64_FORMAT " (join order)", i,
                  g_array_index(ids, uint64_t, i), joined[i]);
    /* The callback stops it. */
    g_array_set_size(ids, 0);
    v.stop_after = 3;
    CHECK_OK(procreg_dispatch(f->reg, "gd", "g", on_member, &v, &calls, &err),
             err);
    CHECK(calls == 3 && ids->len == 3);

    /* A callback that joins and leaves the group itself: no deadlock; it
     * sees each member there at the start once, none it added. */
    g_array_set_size(ids, 0);
    v.stop_after = 0;
    v.write_back = true;
    g_autoptr(procreg_key) k = NULL;
    CHECK_OK(procreg_key_new("gd", "g", &k, &err), err);
    CHECK_OK(procreg_dispatch_key(f->reg, k, on_member, &v, &calls, &err),
             err);
    CHECK_MSG(v.write_failures == 0, "%d joins or leaves from the callback "
              "failed", v.write_failures);
    CHECK_MSG(calls == G_N_ELEMENTS(joined),
              "a dispatch whose callback replaces each member made %zu "
              "calls, expected %zu", calls, G_N_ELEMENTS(joined));
    for (size_t i = 0; i < ids->len; i++)
        CHECK_MSG(g_array_index(ids, uint64_t, i) == joined[i],
                  "call %zu visited member %" G_GUINT64_FORMAT
                  ", joined during the dispatch", i,
                  g_array_index(ids, uint64_t, i));
    CHECK(cx_group_count(f->reg, "gd", "g") == G_N_ELEMENTS(joined));
}

/* Members that stay throughout, and a thread that churns the group. */
#define STABLE 40
#define CHURN_SECONDS 0.4

typedef struct {
    procreg *reg;
    atomic_bool *stop;
    int failures; /* this thread's */
    uint64_t pairs;
} churner;

static gpointer churn_main(gpointer data)
{
    churner *c = data;
    while (!atomic_load(c->stop)) {
        uint64_t id = 0;
        size_t removed = 0;
        if (cx_join(c->reg, "gdc", "g", "{'churn': <true>}", &id) != 0 ||
            cx_leave_id(c->reg, "gdc", "g", id, 0, &removed, NULL) != 0 ||
            removed != 1)
            c->failures++;
        c->pairs++;
    }
    return NULL;
}

void case_groups_dispatch_churn(Fixture *f)
{
    uint64_t stable[STABLE];
    for (int i = 0; i < STABLE; i++)
        CHECK_RC(cx_join(f->reg, "gdc", "g", NULL, &stable[i]), 0);
    atomic_bool stop;
    atomic_init(&stop, false);
    churner c[2] = {{.reg = f->reg, .stop = &stop},
                    {.reg = f->reg, .stop = &stop}};
    GThread *t[2] = {g_thread_new("churn-1", churn_main, &c[0]),
                     g_thread_new("churn-2", churn_main, &c[1])};
    g_autoptr(GArray) ids = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    visit v = {.ids = ids, .reg = f->reg};
    int rounds = 0, bad_order = 0, missed = 0, failed = 0;
    gint64 end = g_get_monotonic_time() + (gint64)(CHURN_SECONDS * 1e6);
    while (g_get_monotonic_time() < end) {
        g_array_set_size(ids, 0);
        if (procreg_dispatch(f->reg, "gdc", "g", on_member, &v, NULL, NULL) !=
            0) {
            failed++;
            continue;
        }
        rounds++;
        int seen = 0;
        for (guint i = 0; i < ids->len; i++) {
            uint64_t id = g_array_index(ids, uint64_t, i);
            if (i > 0 && id <= g_array_index(ids, uint64_t, i - 1))
                bad_order++; /* out of order, or twice */
            for (int s = 0; s < STABLE; s++)
                seen += id == stable[s];
        }
        missed += STABLE - seen;
    }
    atomic_store(&stop, true);
    g_thread_join(t[0]);
    g_thread_join(t[1]);
    CHECK_MSG(failed == 0, "%d dispatches failed", failed);
    CHECK_MSG(c[0].failures + c[1].failures == 0,
              "%d join/leave pairs failed", c[0].failures + c[1].failures);
    CHECK_MSG(rounds > 0 && c[0].pairs > 0 && c[1].pairs > 0,
              "no dispatch or no churn ran");
    CHECK_MSG(bad_order == 0, "%d calls out of join order or repeated in %d "
              "dispatches", bad_order, rounds);
    CHECK_MSG(missed == 0, "%d calls for members there throughout were "
              "missed in %d dispatches", missed, rounds);
    CHECK_MSG(cx_group_count(f->reg, "gdc", "g") == STABLE,
              "after the churn the group has %zu members, expected %d",
              cx_group_count(f->reg, "gdc", "g"), STABLE);
}

/* ---- counts after churn ---- */

#define CHURN_THREADS 4
#define CHURN_OPS 300

typedef struct {
    procreg *reg;
    int seed;
    GArray *live; /* uint64_t: this thread's members at the end */
    int failures;
} counter;

static gpointer count_main(gpointer data)
{
    counter *c = data;
    GRand *r = g_rand_new_with_seed((guint32)c->seed);
    const char *groups[] = {"a", "b"};
    for (int i = 0; i < CHURN_OPS; i++) {
        if (c->live->len == 0 || g_rand_int_range(r, 0, 3) != 0) {
            uint64_t id = 0;
            if (cx_join(c->reg, "gcc", groups[c->seed % 2], NULL, &id) != 0)
                c->failures++;
            else
                g_array_append_val(c->live, id);
        } else {
            guint at = (guint)g_rand_int_range(r, 0, (gint32)c->live->len);
            size_t removed = 0;
            if (cx_leave_id(c->reg, "gcc", groups[c->seed % 2],
                         g_array_index(c->live, uint64_t, at), 0, &removed,
                         NULL) != 0 ||
                removed != 1)
                c->failures++;
            g_array_remove_index_fast(c->live, at);
        }
    }
    g_rand_free(r);
    return NULL;
}

void case_groups_churn_count(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    counter c[CHURN_THREADS];
    GThread *t[CHURN_THREADS];
    for (int i = 0; i < CHURN_THREADS; i++) {
        c[i] = (counter){f->reg, i + 1,
                         g_array_new(FALSE, FALSE, sizeof(uint64_t)), 0};
        t[i] = g_thread_new("count", count_main, &c[i]);
    }
    size_t want[2] = {0, 0};
    int failures = 0;
    for (int i = 0; i < CHURN_THREADS; i++) {
        g_thread_join(t[i]);
        want[c[i].seed % 2] += c[i].live->len;
        failures += c[i].failures;
    }
    /* Thread i churns group "a" when its seed is even, "b" when odd. */
    const char *names[2] = {"a", "b"};
    size_t counts[2] = {cx_group_count(f->reg, "gcc", names[0]),
                        cx_group_count(f->reg, "gcc", names[1])};
    g_auto(MemberList) la = {0};
    CHECK_OK(procreg_members(f->reg, "gcc", "a", &la.v, &la.n, &err), err);
    bool every = true;
    for (int i = 0; i < CHURN_THREADS; i++) {
        if (c[i].seed % 2 != 0)
            continue;
        for (guint j = 0; j < c[i].live->len; j++) {
            bool found = false;
            for (size_t k = 0; k < la.n && !found; k++)
                found = la.v[k].id == g_array_index(c[i].live, uint64_t, j);
            every = every && found;
        }
    }
    for (int i = 0; i < CHURN_THREADS; i++)
        g_array_unref(c[i].live);
    CHECK_MSG(failures == 0, "%d joins or leaves failed", failures);
    CHECK_MSG(counts[0] == want[0] && counts[1] == want[1],
              "after churn the counts are a: %zu, b: %zu; expected %zu, %zu",
              counts[0], counts[1], want[0], want[1]);
    CHECK_MSG(la.n == want[0] && every,
              "procreg_members(a) lists %zu members, expected %zu%s", la.n,
              want[0], every ? "" : " (and lost some)");
}

/* ---- picking one ---- */

void case_groups_pick(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_auto(procreg_member) none = {0};
    uint64_t cursor = 0;
    CHECK_ERR(procreg_pick_member(f->reg, "gp", "g", &cursor, &none, &err),
              err, PROCREG_ENOTFOUND);
    CHECK_ERR(procreg_pick_member(f->reg, "gp", "g", NULL, &none, &err), err,
              PROCREG_ENOTFOUND);
    uint64_t ids[5];
    for (int i = 0; i < 5; i++)
        CHECK_RC(cx_join(f->reg, "gp", "g", NULL, &ids[i]), 0);
    /* Round-robin: in id order, then around again. */
    for (int round = 0; round < 11; round++) {
        g_auto(procreg_member) m = {0};
        CHECK_OK(procreg_pick_member(f->reg, "gp", "g", &cursor, &m, &err),
                 err);
        CHECK_MSG(m.id == ids[round % 5] && cursor == m.id,
                  "pick %d: member %" G_GUINT64_FORMAT ", expected %"
                  G_GUINT64_FORMAT, round, m.id, ids[round % 5]);
    }
    /* A member leaves: the round goes on without it. */
    size_t removed = 0;
    CHECK_OK(cx_leave_id(f->reg, "gp", "g", ids[2], 0, &removed, &err), err);
    cursor = ids[1];
    g_auto(procreg_member) after = {0};
    CHECK_OK(procreg_pick_member(f->reg, "gp", "g", &cursor, &after, &err),
             err);
    CHECK(after.id == ids[3]);
    /* Random: only members, and each of them now and then. */
    int hits[5] = {0};
    for (int i = 0; i < 400; i++) {
        g_auto(procreg_member) m = {0};
        CHECK_OK(procreg_pick_member(f->reg, "gp", "g", NULL, &m, &err), err);
        int at = -1;
        for (int j = 0; j < 5; j++)
            at = m.id == ids[j] ? j : at;
        CHECK_MSG(at >= 0 && at != 2, "random pick gave member %"
                  G_GUINT64_FORMAT ", not one of the group", m.id);
        hits[at]++;
    }
    for (int j = 0; j < 5; j++)
        CHECK_MSG(j == 2 || hits[j] > 0, "400 random picks never chose "
                  "member %d", j);
}

/* ---- finding by metadata ---- */

void case_groups_find(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    uint64_t a1, a2, b1, c1;
    CHECK_RC(cx_join(f->reg, "gf", "g1", "{'role': <'a'>, 'n': <1>}", &a1),
             0);
    CHECK_RC(cx_join(f->reg, "gf", "g1", "{'role': <'b'>}", &b1), 0);
    CHECK_RC(cx_join(f->reg, "gf", "g2", "{'role': <'a'>, 'n': <uint64 1>}",
                       &a2),
             0);
    CHECK_RC(cx_join(f->reg, "gf2", "g1", "{'role': <'a'>}", &c1), 0);
    CHECK_RC(cx_join(f->reg, "gf", "g1", NULL, NULL), 0);
    CHECK_RC(cx_quick_register(f->reg, "gf", "entry", "{'role': <'a'>}"), 0);

    g_autoptr(GVariant) role_a = g_variant_ref_sink(g_variant_new_string("a"));
    g_auto(MemberList) l = {0};
    CHECK_OK(procreg_find_members(f->reg, "gf", "g1", "role", role_a, &l.v,
                                  &l.n, &err),
             err);
    CHECK_MSG(l.n == 1 && l.v[0].id == a1 && strcmp(l.v[0].ns, "gf") == 0 &&
                  strcmp(l.v[0].group, "g1") == 0,
              "find in gf/g1: %s", cx_ids_text(&l));
    member_list_clear(&l);
    CHECK_OK(procreg_find_members(f->reg, "gf", NULL, "role", role_a, &l.v,
                                  &l.n, &err),
             err);
    CHECK_MSG(l.n == 2 && l.v[0].id == a1 && l.v[1].id == a2 &&
                  strcmp(l.v[1].group, "g2") == 0,
              "find in gf: %s (entries must not show)", cx_ids_text(&l));
    member_list_clear(&l);
    CHECK_OK(procreg_find_members(f->reg, NULL, NULL, "role", role_a, &l.v,
                                  &l.n, &err),
             err);
    CHECK_MSG(l.n == 3 && l.v[2].id == c1 && strcmp(l.v[2].ns, "gf2") == 0,
              "find everywhere: %s", cx_ids_text(&l));
    member_list_clear(&l);
    /* Integers of any width compare by value. */
    g_autoptr(GVariant) one = g_variant_ref_sink(g_variant_new_byte(1));
    CHECK_OK(procreg_find_members(f->reg, "gf", NULL, "n", one, &l.v, &l.n,
                                  &err),
             err);
    CHECK_MSG(l.n == 2, "find n=1 (any width): %s", cx_ids_text(&l));
    member_list_clear(&l);
    /* Leaving drops a member from the answers. */
    size_t removed = 0;
    CHECK_OK(cx_leave_id(f->reg, "gf", "g1", a1, 0, &removed, &err), err);
    CHECK_OK(procreg_find_members(f->reg, "gf", "g1", "role", role_a, &l.v,
                                  &l.n, &err),
             err);
    CHECK_MSG(l.n == 0, "a member that left is still found: %s",
              cx_ids_text(&l));
    /* Another value, in the same group. */
    g_autoptr(GVariant) role_b = g_variant_ref_sink(g_variant_new_string("b"));
    member_list_clear(&l);
    CHECK_OK(procreg_find_members(f->reg, "gf", "g1", "role", role_b, &l.v,
                                  &l.n, &err),
             err);
    CHECK_MSG(l.n == 1 && l.v[0].id == b1, "find role=b: %s", cx_ids_text(&l));
}

/* ---- waiting for members ---- */

typedef struct {
    procreg *reg;
    int joined;
} joiner;

static gpointer late_joins(gpointer data)
{
    joiner *j = data;
    g_usleep(50 * 1000);
    for (int i = 0; i < 2; i++)
        j->joined += cx_join(j->reg, "gw", "g", NULL, NULL) == 0;
    return NULL;
}

void case_groups_wait(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    size_t n = 99;
    CHECK_ERR(procreg_wait_members(f->reg, "gw", "g", 2, 0, NULL, &n, &err),
              err, PROCREG_ETIMEDOUT);
    CHECK(n == 0);
    CHECK_RC(cx_join(f->reg, "gw", "g", NULL, NULL), 0);
    CHECK_ERR(procreg_wait_members(f->reg, "gw", "g", 2, 30, NULL, &n, &err),
              err, PROCREG_ETIMEDOUT);
    CHECK(n == 1);
    CHECK_OK(procreg_wait_members(f->reg, "gw", "g", 0, 0, NULL, &n, &err),
             err);
    joiner j = {f->reg, 0};
    GThread *t = g_thread_new("joiner", late_joins, &j);
    int rc = procreg_wait_members(f->reg, "gw", "g", 3, CX_WAIT_MS, NULL, &n,
                                  &err);
    g_thread_join(t);
    CHECK_OK(rc, err);
    CHECK_MSG(n >= 3 && j.joined == 2, "woken with %zu members", n);
    /* Waiting is per group: an entry of that name does not count. */
    CHECK_RC(cx_quick_register(f->reg, "gw", "h", NULL), 0);
    CHECK_ERR(procreg_wait_members(f->reg, "gw", "h", 1, 20, NULL, &n, &err),
              err, PROCREG_ETIMEDOUT);
}

