/*
 * Compliance cases for groups (duplicate keys, procreg.h "Groups"):
 * joins and leaves, duplicate joins by one process, leaving a group one is
 * not in, bad input, groups beside unique entries, the owner rule, owner
 * death, events, dispatch (alone, with a callback that writes the group,
 * and while other threads join and leave), counts after churn, picking,
 * finding by metadata, waiting for members, dropping a namespace, and
 * members shared between processes (re-executed children).
 */
#include "compliance-private.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    procreg_member *v;
    size_t n;
} MemberList;

static void member_list_clear(MemberList *l)
{
    procreg_members_free(l->v, l->n);
    l->v = NULL;
    l->n = 0;
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MemberList, member_list_clear)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(procreg_member, procreg_member_clear)

/* The ids of @l, for messages. */
static char *ids_text(const MemberList *l)
{
    GString *s = g_string_new("[");
    for (size_t i = 0; i < l->n; i++)
        g_string_append_printf(s, "%s%" G_GUINT64_FORMAT, i ? " " : "",
                               l->v[i].id);
    g_string_append_c(s, ']');
    return g_string_free(s, FALSE);
}

/* Join (ns, group) as this process; the member id in *@id. */
static int join_self(procreg *reg, const char *ns, const char *group,
                     const char *md_text, uint64_t *id)
{
    g_autoptr(GVariant) md = md_text ? cx_md(md_text) : NULL;
    g_auto(procreg_member) m = {0};
    int rc = procreg_join(reg, ns, group, NULL, md, &m, NULL);
    if (id != NULL)
        *id = m.id;
    return rc;
}

/* procreg_leave_key() of member @id of (ns, group). */
static int leave_id(procreg *reg, const char *ns, const char *group,
                    uint64_t id, unsigned flags, size_t *removed,
                    GError **error)
{
    g_autoptr(procreg_key) k = NULL;
    int rc = procreg_key_new(ns, group, &k, error);
    return rc != 0 ? rc
                   : procreg_leave_key(reg, k, id, flags, removed, error);
}

static size_t count_of(procreg *reg, const char *ns, const char *group)
{
    size_t n = (size_t)-1;
    if (procreg_group_count(reg, ns, group, &n, NULL) != 0)
        return (size_t)-1;
    return n;
}

/* ---- joins and leaves ---- */

void case_groups_basics(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    procreg_owner self;
    procreg_owner_self(&self);
    int64_t before = g_get_real_time();
    g_autoptr(GVariant) m1 = cx_md("{'port': <8080>}");
    g_auto(procreg_member) a = {0}, b = {0};
    CHECK_OK(procreg_join(f->reg, "gb", "workers", NULL, m1, &a, &err), err);
    /* The same process again: a second member, with its own metadata. */
    CHECK_OK(procreg_join(f->reg, "gb", "workers", NULL, NULL, &b, &err), err);
    CHECK_MSG(a.id > 0 && b.id > a.id,
              "member ids %" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT
              ": not increasing", a.id, b.id);
    CHECK(cx_owner_eq(&a.owner, &self) && cx_owner_eq(&b.owner, &self));
    CHECK(a.metadata != NULL && g_variant_equal(a.metadata, m1));
    CHECK(b.metadata == NULL);
    CHECK(a.ns == NULL && a.group == NULL);
    CHECK_MSG(a.joined_at >= before - 1000000 &&
                  a.joined_at <= g_get_real_time() + 1000000,
              "joined_at %" G_GINT64_FORMAT " is not now", a.joined_at);

    g_auto(MemberList) l = {0};
    CHECK_OK(procreg_members(f->reg, "gb", "workers", &l.v, &l.n, &err), err);
    CHECK_MSG(l.n == 2 && l.v[0].id == a.id && l.v[1].id == b.id,
              "members %s, expected [%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT
              "]", ids_text(&l), a.id, b.id);
    CHECK(l.v[0].metadata != NULL && g_variant_equal(l.v[0].metadata, m1));
    CHECK(l.v[0].joined_at == a.joined_at);
    CHECK(l.v[0].ns == NULL && l.v[0].group == NULL);
    CHECK(count_of(f->reg, "gb", "workers") == 2);

    /* Leaving one member by id; ids of other groups or unknown: nothing. */
    uint64_t other = 0;
    CHECK_RC(join_self(f->reg, "gb", "other", NULL, &other), 0);
    size_t removed = 99;
    CHECK_OK(leave_id(f->reg, "gb", "workers", other, 0, &removed, &err), err);
    CHECK_MSG(removed == 0, "leaving another group's member removed %zu",
              removed);
    CHECK_OK(leave_id(f->reg, "gb", "workers", b.id + 1000000, 0, &removed,
                      &err),
             err);
    CHECK(removed == 0);
    CHECK_OK(leave_id(f->reg, "gb", "workers", a.id, 0, &removed, &err), err);
    CHECK_MSG(removed == 1, "leave of member %" G_GUINT64_FORMAT
              " removed %zu", a.id, removed);
    CHECK(count_of(f->reg, "gb", "workers") == 1);
    CHECK(count_of(f->reg, "gb", "other") == 1);

    /* Leaving the group: all of ours.  Again, and a group we never joined:
     * not an error, nothing removed. */
    uint64_t c = 0;
    CHECK_RC(join_self(f->reg, "gb", "workers", NULL, &c), 0);
    CHECK_OK(procreg_leave(f->reg, "gb", "workers", &removed, &err), err);
    CHECK_MSG(removed == 2, "procreg_leave removed %zu of our 2", removed);
    CHECK_OK(procreg_leave(f->reg, "gb", "workers", &removed, &err), err);
    CHECK(removed == 0);
    CHECK_OK(procreg_leave(f->reg, "gb", "never", &removed, &err), err);
    CHECK(removed == 0);
    CHECK_OK(procreg_leave(f->reg, "gb", "never", NULL, &err), err);
    CHECK(count_of(f->reg, "gb", "workers") == 0);
    g_auto(MemberList) none = {0};
    CHECK_OK(procreg_members(f->reg, "gb", "workers", &none.v, &none.n, &err),
             err);
    CHECK(none.n == 0 && none.v == NULL);

    /* Groups of the namespace, with sizes; an empty group is gone. */
    CHECK_RC(join_self(f->reg, "gb", "other", NULL, NULL), 0);
    procreg_group_info *infos = NULL;
    size_t n = 0;
    CHECK_OK(procreg_groups(f->reg, "gb", &infos, &n, &err), err);
    bool ok = n == 1 && strcmp(infos[0].ns, "gb") == 0 &&
              strcmp(infos[0].group, "other") == 0 && infos[0].members == 2;
    procreg_group_info_free(infos, n);
    CHECK_MSG(ok, "procreg_groups(gb) gave %zu groups, expected other: 2", n);

    /* What this process is a member of. */
    CHECK_RC(join_self(f->reg, "gb2", "x", NULL, NULL), 0);
    g_auto(MemberList) mine = {0};
    CHECK_OK(procreg_memberships(f->reg, self.pid, &mine.v, &mine.n, &err),
             err);
    CHECK_MSG(mine.n == 3, "memberships: %zu, expected 3", mine.n);
    CHECK(strcmp(mine.v[0].ns, "gb") == 0 &&
          strcmp(mine.v[0].group, "other") == 0 &&
          strcmp(mine.v[1].group, "other") == 0 &&
          mine.v[0].id < mine.v[1].id && strcmp(mine.v[2].ns, "gb2") == 0 &&
          strcmp(mine.v[2].group, "x") == 0);
}

void case_groups_bad_input(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    CHECK_RC(join_self(f->reg, "bad", "g", NULL, NULL), 0);
    char long_name[PROCREG_NAME_MAX + 2];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    const char *bad_groups[] = {"", "a\nb", "\x01", long_name, "\xff"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad_groups); i++) {
        CHECK_ERR(procreg_join(f->reg, "bad", bad_groups[i], NULL, NULL, NULL,
                               &err),
                  err, PROCREG_EINVAL);
        CHECK_ERR(procreg_leave(f->reg, "bad", bad_groups[i], NULL, &err), err,
                  PROCREG_EINVAL);
        size_t n = 7;
        CHECK_ERR(procreg_group_count(f->reg, "bad", bad_groups[i], &n, &err),
                  err, PROCREG_EINVAL);
        CHECK(n == 0);
    }
    CHECK_ERR(procreg_join(f->reg, "", "g", NULL, NULL, NULL, &err), err,
              PROCREG_EINVAL);
    CHECK_ERR(procreg_join(f->reg, NULL, NULL, NULL, NULL, NULL, &err), err,
              PROCREG_EINVAL);
    /* Metadata that is not a{sv}: refused, its floating reference
     * consumed (the sanitizers see a leak otherwise). */
    g_auto(procreg_member) m = {0};
    CHECK_ERR(procreg_join(f->reg, "bad", "g", NULL,
                           g_variant_new_string("x"), &m, &err),
              err, PROCREG_EINVAL);
    CHECK(m.id == 0 && m.metadata == NULL);
    CHECK_ERR(procreg_join(f->reg, "bad", "", NULL, g_variant_new_parsed(
                                                      "{'a': <1>}"),
                           NULL, &err),
              err, PROCREG_EINVAL);
    /* A dead owner cannot join. */
    pid_t gone = cx_sleeping_child();
    procreg_owner dead;
    int rc = procreg_owner_from_pid(gone, &dead, NULL);
    cx_reap(gone);
    CHECK_RC(rc, 0);
    CHECK_ERR(procreg_join(f->reg, "bad", "g", &dead, NULL, NULL, &err), err,
              PROCREG_ENOTALIVE);
    CHECK_MSG(count_of(f->reg, "bad", "g") == 1,
              "a refused join changed the group");

    g_autoptr(procreg_key) k = NULL;
    CHECK_OK(procreg_key_new("bad", "g", &k, &err), err);
    CHECK_ERR(procreg_leave_key(f->reg, k, 0, 0x40, NULL, &err), err,
              PROCREG_EINVAL);
    CHECK_ERR(procreg_dispatch(f->reg, "bad", "g", NULL, NULL, NULL, &err),
              err, PROCREG_EINVAL);
    g_auto(MemberList) l = {0};
    CHECK_ERR(procreg_memberships(f->reg, 0, &l.v, &l.n, &err), err,
              PROCREG_EINVAL);
    g_autoptr(GVariant) v = g_variant_ref_sink(g_variant_new_string("a"));
    CHECK_ERR(procreg_find_members(f->reg, NULL, "g", "role", v, &l.v, &l.n,
                                   &err),
              err, PROCREG_EINVAL);
    CHECK_ERR(procreg_find_members(f->reg, "bad", NULL, "", v, &l.v, &l.n,
                                   &err),
              err, PROCREG_EINVAL);
    g_autoptr(GVariant) dbl = g_variant_ref_sink(g_variant_new_double(1.5));
    CHECK_ERR(procreg_find_members(f->reg, "bad", NULL, "role", dbl, &l.v,
                                   &l.n, &err),
              err, PROCREG_EINVAL);
    CHECK_MSG(count_of(f->reg, "bad", "g") == 1,
              "a refused call changed the group");
}

void case_groups_side_by_side(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    CHECK_RC(cx_quick_register(f->reg, "sbs", "x", "{'kind': <'entry'>}"), 0);
    uint64_t id = 0;
    CHECK_RC(join_self(f->reg, "sbs", "x", "{'kind': <'member'>}", &id), 0);
    CHECK_RC(join_self(f->reg, "sbs2", "x", NULL, NULL), 0);

    g_auto(procreg_entry) e = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "sbs", "x", &e, &err), err);
    g_autoptr(GVariant) entry_md = cx_md("{'kind': <'entry'>}");
    CHECK(g_variant_equal(e.metadata, entry_md));
    g_auto(EntryList) all = {0};
    CHECK_OK(procreg_list(f->reg, "sbs", &all.v, &all.n, &err), err);
    CHECK_MSG(all.n == 1, "procreg_list shows %zu entries: members leaked "
              "into the entries", all.n);
    size_t n = 0;
    CHECK_OK(procreg_count(f->reg, "sbs", &n, &err), err);
    CHECK(n == 1);

    /* Removing the entry leaves the group, and the other way round. */
    CHECK_OK(procreg_unregister(f->reg, "sbs", "x", &err), err);
    CHECK(count_of(f->reg, "sbs", "x") == 1);
    CHECK_RC(cx_quick_register(f->reg, "sbs", "x", NULL), 0);
    CHECK_OK(procreg_leave(f->reg, "sbs", "x", NULL, &err), err);
    procreg_owner o;
    CHECK_OK(procreg_lookup(f->reg, "sbs", "x", &o, &err), err);
    /* Namespaces are apart too. */
    CHECK(count_of(f->reg, "sbs", "x") == 0);
    CHECK(count_of(f->reg, "sbs2", "x") == 1);
}

/* ---- who may leave ---- */

void case_groups_owner_rule(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_auto(Watch) w = {0};
    CHECK_MSG(cx_watch_ns(f, "gown", &w), "cannot subscribe");
    g_auto(Child) child = {cx_sleeping_child()};
    procreg_owner theirs;
    CHECK_OK(procreg_owner_from_pid(child.pid, &theirs, &err), err);
    g_auto(procreg_member) t = {0};
    CHECK_OK(procreg_join(f->reg, "gown", "g", &theirs, NULL, &t, &err), err);
    CHECK(cx_owner_eq(&t.owner, &theirs));
    uint64_t mine = 0;
    CHECK_RC(join_self(f->reg, "gown", "g", NULL, &mine), 0);

    /* Our leave takes only ours. */
    size_t removed = 0;
    CHECK_OK(procreg_leave(f->reg, "gown", "g", &removed, &err), err);
    CHECK(removed == 1);
    CHECK(count_of(f->reg, "gown", "g") == 1);
    /* Their member by id: refused, the owner named, nothing changes. */
    g_autofree char *child_pid = g_strdup_printf("%d", (int)child.pid);
    int rc = leave_id(f->reg, "gown", "g", t.id, 0, &removed, &err);
    CHECK_MSG(rc == PROCREG_EPERM && err != NULL &&
                  strstr(err->message, child_pid) != NULL,
              "leave of another process's member gave %d (%s); expected "
              "PROCREG_EPERM naming process %s", rc,
              err ? err->message : "no GError", child_pid);
    const procreg_error_details *d = procreg_error_get_details(err);
    bool as_data = d != NULL && d->entry != NULL &&
                   d->entry->owner.pid == child.pid &&
                   d->entry->revision == t.id &&
                   g_strcmp0(d->entry->name, "g") == 0;
    g_clear_error(&err);
    CHECK_MSG(as_data, "the PROCREG_EPERM error does not carry the member "
              "and its owner as data");
    CHECK(removed == 0 && count_of(f->reg, "gown", "g") == 1);
    /* Forced, it goes; forcing our own is still "explicit". */
    CHECK_OK(leave_id(f->reg, "gown", "g", t.id, PROCREG_FORCE, &removed,
                      &err),
             err);
    CHECK(removed == 1 && count_of(f->reg, "gown", "g") == 0);
    CHECK_RC(join_self(f->reg, "gown", "g", NULL, &mine), 0);
    CHECK_OK(leave_id(f->reg, "gown", "g", mine, PROCREG_FORCE, &removed,
                      &err),
             err);
    CHECK(removed == 1);

    seen_event *e;
    int explicit_left = 0, forced = 0, joined = 0;
    while ((forced == 0 || explicit_left < 2) && (e = cx_next_event(&w))) {
        joined += e->kind == PROCREG_EVENT_JOINED;
        if (e->kind == PROCREG_EVENT_LEFT && e->member_id == t.id)
            forced += e->reason == PROCREG_REASON_FORCED;
        else if (e->kind == PROCREG_EVENT_LEFT)
            explicit_left += e->reason == PROCREG_REASON_EXPLICIT;
        cx_seen_event_free(e);
    }
    CHECK_MSG(forced == 1, "the forced leave's event: %d with reason forced",
              forced);
    CHECK_MSG(explicit_left == 2, "our own leaves: %d events with reason "
              "explicit, expected 2", explicit_left);
    CHECK(joined == 3);
}

void case_groups_owner_death(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_auto(Watch) w = {0};
    CHECK_MSG(cx_watch_group(f, "gdie", "g", &w), "cannot subscribe");
    pid_t child = cx_sleeping_child();
    procreg_owner theirs;
    int rc = procreg_owner_from_pid(child, &theirs, &err);
    g_auto(procreg_member) t1 = {0}, t2 = {0};
    if (rc == 0)
        rc = procreg_join(f->reg, "gdie", "g", &theirs, NULL, &t1, &err);
    if (rc == 0)
        rc = procreg_join(f->reg, "gdie", "g", &theirs, NULL, &t2, &err);
    uint64_t mine = 0;
    if (rc == 0)
        rc = join_self(f->reg, "gdie", "g", NULL, &mine);
    cx_reap(child);
    CHECK_OK(rc, err);

    /* Each of the dead owner's members leaves once, reason owner_exited;
     * ours stays. */
    int left[2] = {0, 0}, wrong = 0;
    seen_event *e;
    while (left[0] + left[1] < 2 && (e = cx_next_event(&w)) != NULL) {
        if (e->kind == PROCREG_EVENT_LEFT) {
            int i = e->member_id == t1.id ? 0 : e->member_id == t2.id ? 1 : -1;
            if (i >= 0)
                left[i]++;
            wrong += i < 0 || e->reason != PROCREG_REASON_OWNER_EXITED;
        }
        cx_seen_event_free(e);
    }
    CHECK_MSG(left[0] == 1 && left[1] == 1,
              "the dead owner's members left %d and %d times", left[0],
              left[1]);
    CHECK_MSG(wrong == 0, "%d LEFT events not of the dead owner's members "
              "or without reason owner_exited", wrong);
    g_auto(MemberList) l = {0};
    CHECK_OK(procreg_members(f->reg, "gdie", "g", &l.v, &l.n, &err), err);
    CHECK_MSG(l.n == 1 && l.v[0].id == mine, "members after the owner died: "
              "%s, expected ours only", ids_text(&l));
    /* A marker: nothing more arrives for them. */
    CHECK_RC(join_self(f->reg, "gdie", "g", NULL, NULL), 0);
    while ((e = cx_next_event(&w)) != NULL) {
        bool marker = e->kind == PROCREG_EVENT_JOINED;
        wrong += !marker;
        cx_seen_event_free(e);
        if (marker)
            break;
    }
    CHECK_MSG(wrong == 0, "a removal was reported twice");
}

/* ---- events ---- */

void case_groups_events(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_auto(Watch) ns_w = {0}, group_w = {0};
    CHECK_MSG(cx_watch_ns(f, "gev", &ns_w), "cannot subscribe");
    CHECK_MSG(cx_watch_group(f, "gev", "g", &group_w), "cannot subscribe");
    g_autoptr(GVariant) md = cx_md("{'v': <1>}");
    g_auto(procreg_member) m = {0};
    CHECK_OK(procreg_join(f->reg, "gev", "g", NULL, md, &m, &err), err);
    /* Not for the group subscription: an entry of the same name, another
     * group. */
    CHECK_RC(cx_quick_register(f->reg, "gev", "g", NULL), 0);
    CHECK_RC(join_self(f->reg, "gev", "h", NULL, NULL), 0);
    size_t removed = 0;
    CHECK_OK(procreg_leave(f->reg, "gev", "g", &removed, &err), err);

    procreg_owner self;
    procreg_owner_self(&self);
    const procreg_event_kind want[] = {
        PROCREG_EVENT_JOINED, PROCREG_EVENT_REGISTERED, PROCREG_EVENT_JOINED,
        PROCREG_EVENT_LEFT};
    const char *want_name[] = {"g", "g", "h", "g"};
    for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
        seen_event *e = cx_next_event(&ns_w);
        CHECK_MSG(e != NULL, "namespace subscription: event %zu missing", i);
        bool ok = e->kind == want[i] && strcmp(e->name, want_name[i]) == 0 &&
                  !e->external;
        bool member_ok = want[i] == PROCREG_EVENT_REGISTERED ||
                         (e->member_group_ok && e->owner == self.pid);
        bool id_ok = strcmp(want_name[i], "h") == 0 ||
                     want[i] == PROCREG_EVENT_REGISTERED ||
                     (e->member_id == m.id && e->revision == m.id);
        procreg_event_reason reason = e->reason;
        procreg_event_kind kind = e->kind;
        cx_seen_event_free(e);
        CHECK_MSG(ok, "namespace subscription: event %zu is %s, expected %s",
                  i, procreg_event_kind_name(kind),
                  procreg_event_kind_name(want[i]));
        CHECK_MSG(member_ok && id_ok, "event %zu (%s) does not describe the "
                  "member", i, procreg_event_kind_name(kind));
        if (want[i] == PROCREG_EVENT_LEFT)
            CHECK_MSG(reason == PROCREG_REASON_EXPLICIT,
                      "LEFT with reason %s",
                      procreg_event_reason_name(reason));
    }
    const procreg_event_kind group_want[] = {PROCREG_EVENT_JOINED,
                                             PROCREG_EVENT_LEFT};
    for (size_t i = 0; i < G_N_ELEMENTS(group_want); i++) {
        seen_event *e = cx_next_event(&group_w);
        CHECK_MSG(e != NULL, "group subscription: event %zu missing", i);
        bool ok = e->kind == group_want[i] && e->member_id == m.id;
        procreg_event_kind kind = e->kind;
        cx_seen_event_free(e);
        CHECK_MSG(ok, "group subscription: event %zu is %s of another member",
                  i, procreg_event_kind_name(kind));
    }
    /* Nothing else reached the group subscription. */
    CHECK_RC(join_self(f->reg, "gev", "g", NULL, NULL), 0);
    seen_event *e = cx_next_event(&group_w);
    bool next_ok = e != NULL && e->kind == PROCREG_EVENT_JOINED;
    if (e != NULL)
        cx_seen_event_free(e);
    CHECK_MSG(next_ok, "the group subscription saw another key's event");
    CHECK_ERR(procreg_subscribe_group(f->reg, "gev", NULL, NULL, NULL, NULL,
                                      NULL, NULL, &err),
              err, PROCREG_EINVAL);
}

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
        if (join_self(v->reg, "gd", "g", NULL, &id) != 0 ||
            leave_id(v->reg, "gd", "g", m->id, 0, &removed, NULL) != 0 ||
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
        CHECK_RC(join_self(f->reg, "gd", "g", NULL, &joined[i]), 0);
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
    CHECK(count_of(f->reg, "gd", "g") == G_N_ELEMENTS(joined));
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
        if (join_self(c->reg, "gdc", "g", "{'churn': <true>}", &id) != 0 ||
            leave_id(c->reg, "gdc", "g", id, 0, &removed, NULL) != 0 ||
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
        CHECK_RC(join_self(f->reg, "gdc", "g", NULL, &stable[i]), 0);
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
    CHECK_MSG(count_of(f->reg, "gdc", "g") == STABLE,
              "after the churn the group has %zu members, expected %d",
              count_of(f->reg, "gdc", "g"), STABLE);
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
            if (join_self(c->reg, "gcc", groups[c->seed % 2], NULL, &id) != 0)
                c->failures++;
            else
                g_array_append_val(c->live, id);
        } else {
            guint at = (guint)g_rand_int_range(r, 0, (gint32)c->live->len);
            size_t removed = 0;
            if (leave_id(c->reg, "gcc", groups[c->seed % 2],
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
    size_t counts[2] = {count_of(f->reg, "gcc", names[0]),
                        count_of(f->reg, "gcc", names[1])};
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
        CHECK_RC(join_self(f->reg, "gp", "g", NULL, &ids[i]), 0);
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
    CHECK_OK(leave_id(f->reg, "gp", "g", ids[2], 0, &removed, &err), err);
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
    CHECK_RC(join_self(f->reg, "gf", "g1", "{'role': <'a'>, 'n': <1>}", &a1),
             0);
    CHECK_RC(join_self(f->reg, "gf", "g1", "{'role': <'b'>}", &b1), 0);
    CHECK_RC(join_self(f->reg, "gf", "g2", "{'role': <'a'>, 'n': <uint64 1>}",
                       &a2),
             0);
    CHECK_RC(join_self(f->reg, "gf2", "g1", "{'role': <'a'>}", &c1), 0);
    CHECK_RC(join_self(f->reg, "gf", "g1", NULL, NULL), 0);
    CHECK_RC(cx_quick_register(f->reg, "gf", "entry", "{'role': <'a'>}"), 0);

    g_autoptr(GVariant) role_a = g_variant_ref_sink(g_variant_new_string("a"));
    g_auto(MemberList) l = {0};
    CHECK_OK(procreg_find_members(f->reg, "gf", "g1", "role", role_a, &l.v,
                                  &l.n, &err),
             err);
    CHECK_MSG(l.n == 1 && l.v[0].id == a1 && strcmp(l.v[0].ns, "gf") == 0 &&
                  strcmp(l.v[0].group, "g1") == 0,
              "find in gf/g1: %s", ids_text(&l));
    member_list_clear(&l);
    CHECK_OK(procreg_find_members(f->reg, "gf", NULL, "role", role_a, &l.v,
                                  &l.n, &err),
             err);
    CHECK_MSG(l.n == 2 && l.v[0].id == a1 && l.v[1].id == a2 &&
                  strcmp(l.v[1].group, "g2") == 0,
              "find in gf: %s (entries must not show)", ids_text(&l));
    member_list_clear(&l);
    CHECK_OK(procreg_find_members(f->reg, NULL, NULL, "role", role_a, &l.v,
                                  &l.n, &err),
             err);
    CHECK_MSG(l.n == 3 && l.v[2].id == c1 && strcmp(l.v[2].ns, "gf2") == 0,
              "find everywhere: %s", ids_text(&l));
    member_list_clear(&l);
    /* Integers of any width compare by value. */
    g_autoptr(GVariant) one = g_variant_ref_sink(g_variant_new_byte(1));
    CHECK_OK(procreg_find_members(f->reg, "gf", NULL, "n", one, &l.v, &l.n,
                                  &err),
             err);
    CHECK_MSG(l.n == 2, "find n=1 (any width): %s", ids_text(&l));
    member_list_clear(&l);
    /* Leaving drops a member from the answers. */
    size_t removed = 0;
    CHECK_OK(leave_id(f->reg, "gf", "g1", a1, 0, &removed, &err), err);
    CHECK_OK(procreg_find_members(f->reg, "gf", "g1", "role", role_a, &l.v,
                                  &l.n, &err),
             err);
    CHECK_MSG(l.n == 0, "a member that left is still found: %s",
              ids_text(&l));
    /* Another value, in the same group. */
    g_autoptr(GVariant) role_b = g_variant_ref_sink(g_variant_new_string("b"));
    member_list_clear(&l);
    CHECK_OK(procreg_find_members(f->reg, "gf", "g1", "role", role_b, &l.v,
                                  &l.n, &err),
             err);
    CHECK_MSG(l.n == 1 && l.v[0].id == b1, "find role=b: %s", ids_text(&l));
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
        j->joined += join_self(j->reg, "gw", "g", NULL, NULL) == 0;
    return NULL;
}

void case_groups_wait(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    size_t n = 99;
    CHECK_ERR(procreg_wait_members(f->reg, "gw", "g", 2, 0, NULL, &n, &err),
              err, PROCREG_ETIMEDOUT);
    CHECK(n == 0);
    CHECK_RC(join_self(f->reg, "gw", "g", NULL, NULL), 0);
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

/* ---- dropping a namespace ---- */

void case_groups_namespace_drop(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_auto(Watch) w = {0};
    CHECK_MSG(cx_watch_ns(f, "gnd", &w), "cannot subscribe");
    uint64_t ids[2];
    CHECK_RC(join_self(f->reg, "gnd", "g", NULL, &ids[0]), 0);
    CHECK_RC(join_self(f->reg, "gnd", "h", NULL, &ids[1]), 0);
    CHECK_RC(join_self(f->reg, "gnd-kept", "g", NULL, NULL), 0);
    CHECK_RC(cx_quick_register(f->reg, "gnd", "e", NULL), 0);
    size_t removed = 0;
    CHECK_OK(procreg_namespace_drop(f->reg, "gnd", &removed, NULL, &err), err);
    CHECK_MSG(removed == 1, "the drop removed %zu entries, expected 1",
              removed);
    CHECK(count_of(f->reg, "gnd", "g") == 0 && count_of(f->reg, "gnd", "h") == 0);
    CHECK(count_of(f->reg, "gnd-kept", "g") == 1);
    int left = 0, wrong = 0;
    seen_event *e;
    while (left < 2 && (e = cx_next_event(&w)) != NULL) {
        if (e->kind == PROCREG_EVENT_LEFT) {
            left++;
            wrong += e->reason != PROCREG_REASON_NAMESPACE_DROPPED;
        }
        cx_seen_event_free(e);
    }
    CHECK_MSG(left == 2 && wrong == 0, "the drop's LEFT events: %d, %d "
              "without reason namespace_dropped", left, wrong);
}

/* ---- across processes ---- */

/* The child (re-executed by the suite): it cannot remove the parent's
 * member of (gmp, g); it joins twice and leaves its first member, says
 * "ready ID" with the one it keeps, and holds it until its stdin closes
 * or it is killed. */
int cx_groups_child(procreg *reg)
{
    GError *err = NULL;
    int status = 0;
    procreg_member *l = NULL;
    size_t n = 0;
    int rc = procreg_members(reg, "gmp", "g", &l, &n, &err);
    uint64_t parents = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (l[i].owner.pid == getppid())
            parents = l[i].id;
    procreg_members_free(l, n);
    if (parents == 0) {
        fprintf(stderr, "child: the parent's member is not listed (%d)\n",
                rc);
        return 1;
    }
    procreg_key *k = NULL;
    size_t removed = 0;
    rc = procreg_key_new("gmp", "g", &k, NULL);
    if (rc == 0)
        rc = procreg_leave_key(reg, k, parents, 0, &removed, NULL);
    if (rc != PROCREG_EPERM) {
        fprintf(stderr, "child: leave of the parent's member gave %d\n", rc);
        status = 1;
    }
    procreg_member first = {0}, kept = {0};
    GVariant *md = g_variant_ref_sink(g_variant_new_parsed(
        "{'who': <'child'>}"));
    rc = procreg_join(reg, "gmp", "g", NULL, md, &first, &err);
    if (rc == 0)
        rc = procreg_join(reg, "gmp", "g", NULL, md, &kept, &err);
    if (rc == 0)
        rc = procreg_leave_key(reg, k, first.id, 0, &removed, &err);
    g_variant_unref(md);
    procreg_key_unref(k);
    if (rc != 0 || removed != 1) {
        fprintf(stderr, "child: join/leave gave %d (%s)\n", rc,
                err ? err->message : "");
        g_clear_error(&err);
        return 1;
    }
    printf("ready %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "\n", first.id,
           kept.id);
    fflush(stdout);
    procreg_member_clear(&first);
    procreg_member_clear(&kept);
    char buf[64];
    while (read(STDIN_FILENO, buf, sizeof buf) > 0)
        ;
    return status;
}

void case_groups_multiprocess(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    uint64_t mine = 0;
    CHECK_RC(join_self(f->reg, "gmp", "g", NULL, &mine), 0);
    g_auto(Watch) w = {0};
    CHECK_MSG(cx_watch_group(f, "gmp", "g", &w), "cannot subscribe");
    g_auto(Spawned) child = {0};
    CHECK_MSG(cx_spawn(f, "groups", &child, &err), "cannot run the child: %s",
              err->message);
    g_autofree char *ready = cx_read_line(child.out);
    guint64 first = 0, kept = 0;
    if (ready == NULL ||
        sscanf(ready, "ready %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT,
               &first, &kept) != 2) {
        cx_spawned_end(&child);
        FAIL("the child did not get ready (status %d; its stderr says why)",
             child.status);
    }
    /* Its changes arrive, in the order it made them, as external. */
    const procreg_event_kind kinds[] = {PROCREG_EVENT_JOINED,
                                        PROCREG_EVENT_JOINED,
                                        PROCREG_EVENT_LEFT};
    const uint64_t of[] = {first, kept, first};
    for (size_t i = 0; i < G_N_ELEMENTS(kinds); i++) {
        seen_event *e = cx_next_event(&w);
        CHECK_MSG(e != NULL, "the child's change %zu never arrived", i);
        bool ok = e->kind == kinds[i] && e->member_id == of[i] &&
                  e->owner == child.pid && e->external;
        cx_seen_event_free(e);
        CHECK_MSG(ok, "the child's change %zu arrived wrong or out of order",
                  i);
    }
    g_auto(MemberList) l = {0};
    CHECK_OK(procreg_members(f->reg, "gmp", "g", &l.v, &l.n, &err), err);
    CHECK_MSG(l.n == 2 && l.v[0].id == mine && l.v[1].id == kept &&
                  l.v[1].owner.pid == child.pid,
              "members with the child's: %s", ids_text(&l));
    g_autoptr(GVariant) who = cx_md("{'who': <'child'>}");
    CHECK(l.v[1].metadata != NULL && g_variant_equal(l.v[1].metadata, who));
    /* Its member is not ours to remove. */
    size_t removed = 0;
    CHECK_RC(leave_id(f->reg, "gmp", "g", kept, 0, &removed, NULL),
             PROCREG_EPERM);
    /* It dies: its member goes, reason owner_exited. */
    kill(child.pid, SIGKILL);
    cx_spawned_end(&child);
    procreg_event_reason reason = 0;
    CHECK_MSG(cx_expect_event(&w, PROCREG_EVENT_LEFT, "g", &reason),
              "the dead child's member never left");
    CHECK_MSG(reason == PROCREG_REASON_OWNER_EXITED,
              "the dead child's member left with reason %s",
              procreg_event_reason_name(reason));
    CHECK(count_of(f->reg, "gmp", "g") == 1);
}
