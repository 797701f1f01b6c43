/*
 * Compliance cases for who may change an entry and for dead holders:
 *  - the owner rule: only the owner process unregisters or updates an
 *    entry, anyone else gets PROCREG_EPERM and nothing changes, unless it
 *    passes PROCREG_FORCE, which the events record (reason forced); in one
 *    process, and across real processes on a shared backend;
 *  - a dead holder never blocks its key: a register right after the
 *    holder was SIGKILLed and reaped takes the key, and the removal is
 *    reported once, with reason owner_exited.
 */
#include "compliance-private.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- one process ---- */

void case_owner_rule(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_auto(Watch) w = {0};
    CHECK_MSG(cx_watch_ns(f, "own", &w), "cannot subscribe");
    g_auto(Child) child = {cx_sleeping_child()};
    procreg_owner theirs;
    CHECK_OK(procreg_owner_from_pid(child.pid, &theirs, &err), err);
    g_autoptr(GVariant) m1 = cx_md("{'v': <1>}");
    g_auto(procreg_entry) reg0 = {0};
    CHECK_OK(procreg_register(f->reg, "own", "theirs", &theirs, m1, &reg0,
                              &err),
             err);
    g_autoptr(procreg_key) key = NULL;
    CHECK_OK(procreg_key_new("own", "theirs", &key, &err), err);

    /* Not the owner: refused, the owner named, and nothing changes. */
    g_autoptr(GVariant) empty = cx_md("@a{sv} {}");
    g_autofree char *child_pid = g_strdup_printf("%d", (int)child.pid);
    int rc = procreg_unregister(f->reg, "own", "theirs", &err);
    CHECK_MSG(rc == PROCREG_EPERM && err != NULL &&
                  strstr(err->message, child_pid) != NULL,
              "unregister by another process gave %d (%s); expected "
              "PROCREG_EPERM naming process %s", rc,
              err ? err->message : "no GError", child_pid);
    g_clear_error(&err);
    CHECK_ERR(procreg_update_metadata(f->reg, "own", "theirs", empty,
                                      PROCREG_UPDATE_REPLACE, &err),
              err, PROCREG_EPERM);
    CHECK_RC(procreg_unregister_key(f->reg, key, reg0.revision, NULL),
             PROCREG_EPERM);
    CHECK_RC(procreg_update_metadata_key(f->reg, key, NULL,
                                         PROCREG_UPDATE_MERGE, 0, NULL, NULL),
             PROCREG_EPERM);
    CHECK_ERR(procreg_unregister_full(f->reg, key, 0, 0x80, &err), err,
              PROCREG_EINVAL);
    g_auto(procreg_entry) after = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "own", "theirs", &after, &err), err);
    CHECK_MSG(after.revision == reg0.revision &&
                  g_variant_equal(after.metadata, m1),
              "a refused write changed the entry (revision %" G_GUINT64_FORMAT
              ", was %" G_GUINT64_FORMAT ")", after.revision, reg0.revision);

    /* Forced: allowed; revision checks still apply. */
    g_autoptr(GVariant) m2 = cx_md("{'v': <2>}");
    uint64_t rev = 0;
    CHECK_OK(procreg_update_metadata_full(f->reg, key, m2,
                                          PROCREG_UPDATE_REPLACE, 0,
                                          PROCREG_FORCE, &rev, &err),
             err);
    CHECK(rev > reg0.revision);
    CHECK_RC(procreg_unregister_full(f->reg, key, reg0.revision, PROCREG_FORCE,
                                     NULL),
             PROCREG_ECONFLICT);
    CHECK_OK(procreg_unregister_full(f->reg, key, rev, PROCREG_FORCE, &err),
             err);

    /* Our own entry needs no force; with it, it is still "explicit". */
    g_autoptr(procreg_key) mine = NULL;
    CHECK_OK(procreg_key_new("own", "mine", &mine, &err), err);
    CHECK_RC(cx_quick_register(f->reg, "own", "mine", NULL), 0);
    CHECK_OK(procreg_unregister_full(f->reg, mine, 0, PROCREG_FORCE, &err),
             err);

    procreg_event_reason reason = 0;
    CHECK_MSG(cx_expect_event(&w, PROCREG_EVENT_UPDATED, "theirs", &reason),
              "no event for the forced update");
    CHECK_MSG(reason == PROCREG_REASON_FORCED, "forced update: reason %s",
              procreg_event_reason_name(reason));
    CHECK_MSG(cx_expect_event(&w, PROCREG_EVENT_UNREGISTERED, "theirs", &reason),
              "no event for the forced unregister");
    CHECK_MSG(reason == PROCREG_REASON_FORCED, "forced unregister: reason %s",
              procreg_event_reason_name(reason));
    CHECK_MSG(cx_expect_event(&w, PROCREG_EVENT_UNREGISTERED, "mine", &reason),
              "no event for our own unregister");
    CHECK_MSG(reason == PROCREG_REASON_EXPLICIT, "own unregister: reason %s",
              procreg_event_reason_name(reason));
}

/* ---- across processes ---- */

/* The child (re-executed by the suite, its own process): it may not
 * change the parent's entry, removes one with PROCREG_FORCE, registers
 * its own, says "ready", and holds it until its stdin closes. */
int cx_owner_child(procreg *reg)
{
    GError *err = NULL;
    int status = 0;
    char ppid[32];
    g_snprintf(ppid, sizeof ppid, "%d", (int)getppid());
    int rc = procreg_unregister(reg, "mp", "parents", &err);
    if (rc != PROCREG_EPERM || strstr(err->message, ppid) == NULL) {
        fprintf(stderr, "child: unregister of the parent's entry gave %d "
                "(%s)\n", rc, err ? err->message : "");
        status = 1;
    }
    g_clear_error(&err);
    rc = procreg_update_metadata(reg, "mp", "parents", NULL,
                                 PROCREG_UPDATE_REPLACE, NULL);
    if (rc != PROCREG_EPERM) {
        fprintf(stderr, "child: update of the parent's entry gave %d\n", rc);
        status = 1;
    }
    procreg_key *key = NULL;
    rc = procreg_key_new("mp", "forced", &key, NULL);
    if (rc == 0)
        rc = procreg_unregister_full(reg, key, 0, PROCREG_FORCE, &err);
    procreg_key_unref(key);
    if (rc != 0) {
        fprintf(stderr, "child: forced unregister gave %d (%s)\n", rc,
                err ? err->message : "");
        status = 1;
    }
    g_clear_error(&err);
    rc = procreg_register(reg, "mp", "childs", NULL, NULL, NULL, &err);
    if (rc != 0) {
        fprintf(stderr, "child: register gave %d (%s)\n", rc,
                err ? err->message : "");
        g_clear_error(&err);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char buf[64];
    while (read(STDIN_FILENO, buf, sizeof buf) > 0)
        ;
    return status;
}

void case_owner_rule_multiprocess(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_auto(procreg_entry) parents = {0};
    CHECK_OK(procreg_register(f->reg, "mp", "parents", NULL, NULL, &parents,
                              &err),
             err);
    CHECK_OK(procreg_register(f->reg, "mp", "forced", NULL, NULL, NULL, &err),
             err);
    g_auto(Watch) w = {0};
    CHECK_MSG(cx_watch_ns(f, "mp", &w), "cannot subscribe");

    g_auto(Spawned) child = {0};
    CHECK_MSG(cx_spawn(f, "owner", &child, &err),
              "cannot run the child: %s", err->message);
    g_autofree char *ready = cx_read_line(child.out);
    if (ready == NULL || strcmp(ready, "ready") != 0) {
        cx_spawned_end(&child);
        FAIL("the child did not get ready (status %d; its stderr says why)",
             child.status);
    }

    /* The child could not change our entry, and forced one away. */
    g_auto(procreg_entry) still = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "mp", "parents", &still, &err), err);
    CHECK_MSG(still.revision == parents.revision &&
                  cx_owner_eq(&still.owner, &parents.owner),
              "another process changed our entry without PROCREG_FORCE");
    procreg_event_reason reason = 0;
    CHECK_MSG(cx_expect_event(&w, PROCREG_EVENT_UNREGISTERED, "forced", &reason),
              "no event for the entry the child removed");
    CHECK_MSG(reason == PROCREG_REASON_FORCED,
              "the child's forced removal arrived with reason %s",
              procreg_event_reason_name(reason));
    /* Once its event is here, a cache in front (optimized) knows too. */
    procreg_owner o;
    CHECK_RC(procreg_lookup(f->reg, "mp", "forced", &o, NULL),
             PROCREG_ENOTFOUND);

    /* Nor can we change the child's, except by force. */
    g_autofree char *child_pid = g_strdup_printf("%d", (int)child.pid);
    int rc = procreg_unregister(f->reg, "mp", "childs", &err);
    CHECK_MSG(rc == PROCREG_EPERM && err != NULL &&
                  strstr(err->message, child_pid) != NULL,
              "unregister of the child's entry gave %d (%s); expected "
              "PROCREG_EPERM naming process %s", rc,
              err ? err->message : "no GError", child_pid);
    g_clear_error(&err);
    g_autoptr(procreg_key) childs = NULL;
    CHECK_OK(procreg_key_new("mp", "childs", &childs, &err), err);
    g_autoptr(GVariant) empty = cx_md("@a{sv} {}");
    CHECK_OK(procreg_update_metadata_full(f->reg, childs, empty,
                                          PROCREG_UPDATE_REPLACE, 0,
                                          PROCREG_FORCE, NULL, &err),
             err);
    cx_spawned_end(&child);
    CHECK_MSG(g_spawn_check_wait_status(child.status, NULL),
              "the child's checks failed (its stderr says which)");
}

/* ---- dead holders ---- */

#define DEAD_HOLDER_ROUNDS 20

void case_dead_holder(Fixture *f)
{
    g_auto(Watch) w = {0};
    CHECK_MSG(cx_watch_ns(f, "dh", &w), "cannot subscribe");
    uint64_t held[DEAD_HOLDER_ROUNDS] = {0};
    int failed_round = -1, rc = 0;
    pid_t blocked_by = 0;
    for (int i = 0; i < DEAD_HOLDER_ROUNDS && failed_round < 0; i++) {
        pid_t child = cx_sleeping_child();
        procreg_owner o;
        g_auto(procreg_entry) e = {0};
        rc = procreg_owner_from_pid(child, &o, NULL);
        if (rc == 0)
            rc = procreg_register(f->reg, "dh", "k", &o, NULL, &e, NULL);
        held[i] = e.revision;
        cx_reap(child); /* SIGKILL, then waitpid: it is gone */
        g_auto(procreg_entry) cur = {0};
        if (rc == 0)
            rc = procreg_register(f->reg, "dh", "k", NULL, NULL, &cur, NULL);
        if (rc == 0)
            rc = procreg_unregister(f->reg, "dh", "k", NULL);
        if (rc != 0) {
            failed_round = i;
            blocked_by = cur.owner.pid;
        }
    }
    /* A marker: once its event is here, every change before it is. */
    int rc_marker = cx_quick_register(f->reg, "dh", "marker", NULL);
    int exited[DEAD_HOLDER_ROUNDS] = {0};
    int wrong_reason = 0;
    bool marker = false;
    seen_event *e;
    while (rc_marker == 0 && !marker && (e = cx_next_event(&w)) != NULL) {
        marker = strcmp(e->name, "marker") == 0;
        for (int i = 0; i < DEAD_HOLDER_ROUNDS; i++) {
            if (e->kind == PROCREG_EVENT_UNREGISTERED && held[i] != 0 &&
                e->revision == held[i]) {
                exited[i]++;
                wrong_reason += e->reason != PROCREG_REASON_OWNER_EXITED;
            }
        }
        cx_seen_event_free(e);
    }
    CHECK_MSG(failed_round < 0,
              "round %d: register right after the holder was killed gave %d "
              "(%s), holder %d", failed_round, rc, procreg_strerror(rc),
              (int)blocked_by);
    CHECK_RC(rc_marker, 0);
    CHECK_MSG(marker, "the marker's event never came");
    for (int i = 0; i < DEAD_HOLDER_ROUNDS; i++)
        CHECK_MSG(exited[i] == 1,
                  "round %d: the dead holder's removal was reported %d "
                  "times", i, exited[i]);
    CHECK_MSG(wrong_reason == 0,
              "%d removals of dead holders without reason owner_exited",
              wrong_reason);
}
