/*
 * Compliance cases for groups (duplicate keys, procreg.h "Groups"), who is
 * a member: joins and leaves, duplicate joins by one process, leaving a
 * group one is not in, bad input, groups beside unique entries, the owner
 * rule, owner death, events, dropping a namespace, and members shared
 * between processes (re-executed children).  groups-read.c has the
 * reads.
 */
#include "compliance-private.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

char *cx_ids_text(const MemberList *l)
{
    GString *s = g_string_new("[");
    for (size_t i = 0; i < l->n; i++)
        g_string_append_printf(s, "%s%" G_GUINT64_FORMAT, i ? " " : "",
                               l->v[i].id);
    g_string_append_c(s, ']');
    return g_string_free(s, FALSE);
}

int cx_join(procreg *reg, const char *ns, const char *group,
            const char *md_text, uint64_t *id)
{
    g_autoptr(GVariant) md = md_text ? cx_md(md_text) : NULL;
    g_auto(procreg_member) m = {0};
    int rc = procreg_join(reg, ns, group, NULL, md, &m, NULL);
    if (id != NULL)
        *id = m.id;
    return rc;
}

int cx_leave_id(procreg *reg, const char *ns, const char *group, uint64_t id,
                unsigned flags, size_t *removed, GError **error)
{
    g_autoptr(procreg_key) k = NULL;
    int rc = procreg_key_new(ns, group, &k, error);
    return rc != 0 ? rc
                   : procreg_leave_key(reg, k, id, flags, removed, error);
}

size_t cx_group_count(procreg *reg, const char *ns, const char *group)
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
              "]", cx_ids_text(&l), a.id, b.id);
    CHECK(l.v[0].metadata != NULL && g_variant_equal(l.v[0].metadata, m1));
    CHECK(l.v[0].joined_at == a.joined_at);
    CHECK(l.v[0].ns == NULL && l.v[0].group == NULL);
    CHECK(cx_group_count(f->reg, "gb", "workers") == 2);

    /* Leaving one member by id; ids of other groups or unknown: nothing. */
    uint64_t other = 0;
    CHECK_RC(cx_join(f->reg, "gb", "other", NULL, &other), 0);
    size_t removed = 99;
    CHECK_OK(cx_leave_id(f->reg, "gb", "workers", other, 0, &removed, &err), err);
    CHECK_MSG(removed == 0, "leaving another group's member removed %zu",
              removed);
    CHECK_OK(cx_leave_id(f->reg, "gb", "workers", b.id + 1000000, 0, &removed,
                      &err),
             err);
    CHECK(removed == 0);
    CHECK_OK(cx_leave_id(f->reg, "gb", "workers", a.id, 0, &removed, &err), err);
    CHECK_MSG(removed == 1, "leave of member %" G_GUINT64_FORMAT
              " removed %zu", a.id, removed);
    CHECK(cx_group_count(f->reg, "gb", "workers") == 1);
    CHECK(cx_group_count(f->reg, "gb", "other") == 1);

    /* Leaving the group: all of ours.  Again, and a group we never joined:
     * not an error, nothing removed. */
    uint64_t c = 0;
    CHECK_RC(cx_join(f->reg, "gb", "workers", NULL, &c), 0);
    CHECK_OK(procreg_leave(f->reg, "gb", "workers", &removed, &err), err);
    CHECK_MSG(removed == 2, "procreg_leave removed %zu of our 2", removed);
    CHECK_OK(procreg_leave(f->reg, "gb", "workers", &removed, &err), err);
    CHECK(removed == 0);
    CHECK_OK(procreg_leave(f->reg, "gb", "never", &removed, &err), err);
    CHECK(removed == 0);
    CHECK_OK(procreg_leave(f->reg, "gb", "never", NULL, &err), err);
    CHECK(cx_group_count(f->reg, "gb", "workers") == 0);
    g_auto(MemberList) none = {0};
    CHECK_OK(procreg_members(f->reg, "gb", "workers", &none.v, &none.n, &err),
             err);
    CHECK(none.n == 0 && none.v == NULL);

    /* Groups of the namespace, with sizes; an empty group is gone. */
    CHECK_RC(cx_join(f->reg, "gb", "other", NULL, NULL), 0);
    procreg_group_info *infos = NULL;
    size_t n = 0;
    CHECK_OK(procreg_groups(f->reg, "gb", &infos, &n, &err), err);
    bool ok = n == 1 && strcmp(infos[0].ns, "gb") == 0 &&
              strcmp(infos[0].group, "other") == 0 && infos[0].members == 2;
    procreg_group_info_free(infos, n);
    CHECK_MSG(ok, "procreg_groups(gb) gave %zu groups, expected other: 2", n);

    /* What this process is a member of. */
    CHECK_RC(cx_join(f->reg, "gb2", "x", NULL, NULL), 0);
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
    CHECK_RC(cx_join(f->reg, "bad", "g", NULL, NULL), 0);
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
    CHECK_MSG(cx_group_count(f->reg, "bad", "g") == 1,
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
    CHECK_MSG(cx_group_count(f->reg, "bad", "g") == 1,
              "a refused call changed the group");
}

void case_groups_side_by_side(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    CHECK_RC(cx_quick_register(f->reg, "sbs", "x", "{'kind': <'entry'>}"), 0);
    uint64_t id = 0;
    CHECK_RC(cx_join(f->reg, "sbs", "x", "{'kind': <'member'>}", &id), 0);
    CHECK_RC(cx_join(f->reg, "sbs2", "x", NULL, NULL), 0);

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
    CHECK(cx_group_count(f->reg, "sbs", "x") == 1);
    CHECK_RC(cx_quick_register(f->reg, "sbs", "x", NULL), 0);
    CHECK_OK(procreg_leave(f->reg, "sbs", "x", NULL, &err), err);
    procreg_owner o;
    CHECK_OK(procreg_lookup(f->reg, "sbs", "x", &o, &err), err);
    /* Namespaces are apart too. */
    CHECK(cx_group_count(f->reg, "sbs", "x") == 0);
    CHECK(cx_group_count(f->reg, "sbs2", "x") == 1);
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
    CHECK_RC(cx_join(f->reg, "gown", "g", NULL, &mine), 0);

    /* Our leave takes only ours. */
    size_t removed = 0;
    CHECK_OK(procreg_leave(f->reg, "gown", "g", &removed, &err), err);
    CHECK(removed == 1);
    CHECK(cx_group_count(f->reg, "gown", "g") == 1);
    /* Their member by id: refused, the owner named, nothing changes. */
    g_autofree char *child_pid = g_strdup_printf("%d", (int)child.pid);
    int rc = cx_leave_id(f->reg, "gown", "g", t.id, 0, &removed, &err);
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
    CHECK(removed == 0 && cx_group_count(f->reg, "gown", "g") == 1);
    /* Forced, it goes; forcing our own is still "explicit". */
    CHECK_OK(cx_leave_id(f->reg, "gown", "g", t.id, PROCREG_FORCE, &removed,
                      &err),
             err);
    CHECK(removed == 1 && cx_group_count(f->reg, "gown", "g") == 0);
    CHECK_RC(cx_join(f->reg, "gown", "g", NULL, &mine), 0);
    CHECK_OK(cx_leave_id(f->reg, "gown", "g", mine, PROCREG_FORCE, &removed,
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
        rc = cx_join(f->reg, "gdie", "g", NULL, &mine);
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
              "%s, expected ours only", cx_ids_text(&l));
    /* A marker: nothing more arrives for them. */
    CHECK_RC(cx_join(f->reg, "gdie", "g", NULL, NULL), 0);
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
    CHECK_RC(cx_join(f->reg, "gev", "h", NULL, NULL), 0);
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
    CHECK_RC(cx_join(f->reg, "gev", "g", NULL, NULL), 0);
    seen_event *e = cx_next_event(&group_w);
    bool next_ok = e != NULL && e->kind == PROCREG_EVENT_JOINED;
    if (e != NULL)
        cx_seen_event_free(e);
    CHECK_MSG(next_ok, "the group subscription saw another key's event");
    CHECK_ERR(procreg_subscribe_group(f->reg, "gev", NULL, NULL, NULL, NULL,
                                      NULL, NULL, &err),
              err, PROCREG_EINVAL);
}

/* ---- dropping a namespace ---- */

void case_groups_namespace_drop(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_auto(Watch) w = {0};
    CHECK_MSG(cx_watch_ns(f, "gnd", &w), "cannot subscribe");
    uint64_t ids[2];
    CHECK_RC(cx_join(f->reg, "gnd", "g", NULL, &ids[0]), 0);
    CHECK_RC(cx_join(f->reg, "gnd", "h", NULL, &ids[1]), 0);
    CHECK_RC(cx_join(f->reg, "gnd-kept", "g", NULL, NULL), 0);
    CHECK_RC(cx_quick_register(f->reg, "gnd", "e", NULL), 0);
    size_t removed = 0;
    CHECK_OK(procreg_namespace_drop(f->reg, "gnd", &removed, NULL, &err), err);
    CHECK_MSG(removed == 1, "the drop removed %zu entries, expected 1",
              removed);
    CHECK(cx_group_count(f->reg, "gnd", "g") == 0 && cx_group_count(f->reg, "gnd", "h") == 0);
    CHECK(cx_group_count(f->reg, "gnd-kept", "g") == 1);
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
    CHECK_RC(cx_join(f->reg, "gmp", "g", NULL, &mine), 0);
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
              "members with the child's: %s", cx_ids_text(&l));
    g_autoptr(GVariant) who = cx_md("{'who': <'child'>}");
    CHECK(l.v[1].metadata != NULL && g_variant_equal(l.v[1].metadata, who));
    /* Its member is not ours to remove. */
    size_t removed = 0;
    CHECK_RC(cx_leave_id(f->reg, "gmp", "g", kept, 0, &removed, NULL),
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
    CHECK(cx_group_count(f->reg, "gmp", "g") == 1);
}
