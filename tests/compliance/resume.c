/*
 * Cases of procreg_subscribe_from(): a watcher that stops and resumes from
 * the position of the last event it handled sees every change since, once
 * and in order, then the live ones; a position the history no longer
 * covers is PROCREG_ECOMPACTED; and on a backend with a history of its own
 * (PROCREG_CAP_HISTORY) a new registry resumes from another's position.
 */
#include "compliance-private.h"

#include <string.h>

/* The next event of @w must be @kind of @name, at a position above
 * *@position (then set to it).  Fails the case and returns false if not. */
static bool next_is(Watch *w, procreg_event_kind kind, const char *name,
                    uint64_t *position, int line)
{
    seen_event *e = cx_next_event(w);
    if (e == NULL) {
        cx_fail_at(__FILE__, line, "no event came; expected %s of '%s'",
                   procreg_event_kind_name(kind), name);
        return false;
    }
    bool ok = e->kind == kind && strcmp(e->name, name) == 0 &&
              e->position > *position;
    if (!ok)
        cx_fail_at(__FILE__, line,
                   "expected %s of '%s' after position %" G_GUINT64_FORMAT
                   ", got %s of '%s' at position %" G_GUINT64_FORMAT,
                   procreg_event_kind_name(kind), name, *position,
                   procreg_event_kind_name(e->kind), e->name, e->position);
    *position = e->position;
    cx_seen_event_free(e);
    return ok;
}

#define NEXT_IS(w, kind, name, pos)                                        \
    do {                                                                   \
        if (!next_is((w), (kind), (name), (pos), __LINE__))                \
            return;                                                        \
    } while (0)

void case_resume_position(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    /* A watcher that will want to resume starts from a position (the
     * registry keeps a history from then on if its backend keeps none). */
    uint64_t pos = 0;
    CHECK_OK(procreg_event_position(f->reg, &pos, &err), err);
    {
        g_auto(Watch) w = {0};
        CHECK(cx_watch_ns(f, "resume", &w));
        CHECK_RC(cx_quick_register(f->reg, "resume", "a", NULL), 0);
        CHECK_RC(cx_quick_register(f->reg, "resume", "b", NULL), 0);
        NEXT_IS(&w, PROCREG_EVENT_REGISTERED, "a", &pos);
        NEXT_IS(&w, PROCREG_EVENT_REGISTERED, "b", &pos);
    } /* the watcher stops after b */
    uint64_t after_b = pos;

    /* Changes while nobody watches, one in another namespace. */
    CHECK_RC(cx_quick_register(f->reg, "resume", "c", NULL), 0);
    g_autoptr(GVariant) md = cx_md("{'v': <2>}");
    CHECK_OK(procreg_update_metadata(f->reg, "resume", "a", md,
                                     PROCREG_UPDATE_REPLACE, &err),
             err);
    CHECK_OK(procreg_unregister(f->reg, "resume", "b", &err), err);
    CHECK_RC(cx_quick_register(f->reg, "resume-other", "x", NULL), 0);
    bool groups = f->caps & PROCREG_CAP_GROUPS;
    uint64_t member = 0;
    if (groups) {
        CHECK_RC(cx_join(f->reg, "resume", "g", NULL, &member), 0);
        CHECK_OK(cx_leave_id(f->reg, "resume", "g", member, 0, NULL, &err),
                 err);
    }

    /* It resumes after b: the history, then live changes. */
    g_auto(Watch) w = {0};
    CHECK_OK(cx_watch_from(f, "resume", after_b, &w, &err), err);
    CHECK_RC(cx_quick_register(f->reg, "resume", "d", NULL), 0);
    NEXT_IS(&w, PROCREG_EVENT_REGISTERED, "c", &pos);
    NEXT_IS(&w, PROCREG_EVENT_UPDATED, "a", &pos);
    NEXT_IS(&w, PROCREG_EVENT_UNREGISTERED, "b", &pos);
    if (groups) {
        NEXT_IS(&w, PROCREG_EVENT_JOINED, "g", &pos);
        NEXT_IS(&w, PROCREG_EVENT_LEFT, "g", &pos);
    }
    NEXT_IS(&w, PROCREG_EVENT_REGISTERED, "d", &pos);

    /* From a later position, only what came after it. */
    g_auto(Watch) w2 = {0};
    uint64_t from_d = pos;
    CHECK_OK(cx_watch_from(f, "resume", from_d - 1, &w2, &err), err);
    CHECK_RC(cx_quick_register(f->reg, "resume", "e", NULL), 0);
    pos = from_d - 1;
    NEXT_IS(&w2, PROCREG_EVENT_REGISTERED, "d", &pos);
    NEXT_IS(&w2, PROCREG_EVENT_REGISTERED, "e", &pos);
}

void case_resume_from_now(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    uint64_t now = 0;
    CHECK_OK(procreg_event_position(f->reg, &now, &err), err);
    /* What a new watcher lists after reading the position, it then
     * follows without a gap. */
    CHECK_RC(cx_quick_register(f->reg, "now", "n1", NULL), 0);
    CHECK_OK(procreg_unregister(f->reg, "now", "n1", &err), err);
    g_auto(Watch) w = {0};
    CHECK_OK(cx_watch_from(f, "now", now, &w, &err), err);
    CHECK_RC(cx_quick_register(f->reg, "now", "n2", NULL), 0);
    uint64_t pos = now;
    NEXT_IS(&w, PROCREG_EVENT_REGISTERED, "n1", &pos);
    NEXT_IS(&w, PROCREG_EVENT_UNREGISTERED, "n1", &pos);
    NEXT_IS(&w, PROCREG_EVENT_REGISTERED, "n2", &pos);
    uint64_t later = 0;
    CHECK_OK(procreg_event_position(f->reg, &later, &err), err);
    CHECK_MSG(later >= pos,
              "position %" G_GUINT64_FORMAT " is below that of the last "
              "event, %" G_GUINT64_FORMAT, later, pos);
}

void case_resume_compacted(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    uint64_t now = 0;
    CHECK_OK(procreg_event_position(f->reg, &now, &err), err);
    g_auto(Watch) ahead = {0};
    CHECK_ERR(cx_watch_from(f, "gone", now + 1000000, &ahead, &err), err,
              PROCREG_ECOMPACTED);
    CHECK(ahead.q == NULL);

    /* Past what the history keeps (4096 changes on a local backend; etcd
     * compacts on its own schedule: tests/etcd). */
    if (f->caps & PROCREG_CAP_DISTRIBUTED)
        return;
    /* A registry keeping its own history counts what its dispatcher has
     * passed on (the events still queued are not lost): a watcher that
     * has seen the last change says it did. */
    g_auto(Watch) sync = {0};
    CHECK(cx_watch_ns(f, "gone-sync", &sync));
    for (int i = 0; i < 2100; i++) {
        CHECK_RC(cx_quick_register(f->reg, "gone", "t", NULL), 0);
        CHECK_OK(procreg_unregister(f->reg, "gone", "t", &err), err);
    }
    CHECK_RC(cx_quick_register(f->reg, "gone-sync", "done", NULL), 0);
    procreg_event_reason reason;
    CHECK(cx_expect_event(&sync, PROCREG_EVENT_REGISTERED, "done", &reason));
    g_auto(Watch) trimmed = {0};
    CHECK_ERR(cx_watch_from(f, "gone", now, &trimmed, &err), err,
              PROCREG_ECOMPACTED);
    /* The latest changes are still there. */
    uint64_t latest = 0;
    CHECK_OK(procreg_event_position(f->reg, &latest, &err), err);
    g_auto(Watch) recent = {0};
    CHECK_OK(cx_watch_from(f, "gone", latest - 2, &recent, &err), err);
    uint64_t pos = latest - 2; /* then the last unregister, the sync */
    NEXT_IS(&recent, PROCREG_EVENT_UNREGISTERED, "t", &pos);
}

void case_resume_other_registry(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    uint64_t now = 0;
    CHECK_OK(procreg_event_position(f->reg, &now, &err), err);
    /* Another registry of the store changes it... */
    procreg *other = NULL;
    CHECK_OK(procreg_open(f->spec, &other, &err), err);
    int rc = cx_quick_register(other, "shared", "x", NULL);
    if (rc == 0)
        rc = procreg_unregister(other, "shared", "x", &err);
    procreg_close(other);
    CHECK_OK(rc, err);
    /* ...and a watcher restarted in a new registry resumes from a position
     * the old one gave. */
    procreg_close(f->reg);
    f->reg = NULL;
    CHECK_OK(procreg_open(f->spec, &f->reg, &err), err);
    g_auto(Watch) w = {0};
    CHECK_OK(cx_watch_from(f, "shared", now, &w, &err), err);
    uint64_t pos = now;
    NEXT_IS(&w, PROCREG_EVENT_REGISTERED, "x", &pos);
    NEXT_IS(&w, PROCREG_EVENT_UNREGISTERED, "x", &pos);
}
