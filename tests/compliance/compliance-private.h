/*
 * What the files of the compliance suite share: the non-aborting checks,
 * the fixture, and the helpers cases use (prefixed cx_).  Not installed.
 */
#ifndef PROCREG_TESTS_COMPLIANCE_PRIVATE_H
#define PROCREG_TESTS_COMPLIANCE_PRIVATE_H

#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND 1
#endif
#include "compliance.h"

#include <procreg/backend.h>

#include <stdbool.h>
#include <sys/types.h>

/* ------------------------------------------------------------------------ */
/* Auto-cleanup for procreg types                                           */

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(procreg_entry, procreg_entry_clear)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(procreg_health, procreg_health_clear)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(procreg_key, procreg_key_unref)

typedef struct {
    procreg_entry *v;
    size_t n;
} EntryList;

static inline void entry_list_clear(EntryList *l)
{
    procreg_entries_free(l->v, l->n);
    l->v = NULL;
    l->n = 0;
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(EntryList, entry_list_clear)

/* ------------------------------------------------------------------------ */
/* Non-aborting checks                                                      */

/* Fail the running case with "file:line: message" (not fatal). */
void cx_fail_at(const char *file, int line, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

#define FAIL(...)                                                          \
    do {                                                                   \
        cx_fail_at(__FILE__, __LINE__, __VA_ARGS__);                       \
        return;                                                            \
    } while (0)

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (G_UNLIKELY(!(cond)))                                           \
            FAIL("check failed: %s", #cond);                               \
    } while (0)

#define CHECK_MSG(cond, ...)                                               \
    do {                                                                   \
        if (G_UNLIKELY(!(cond)))                                           \
            FAIL(__VA_ARGS__);                                             \
    } while (0)

/* @rc must be 0 and @err unset. */
#define CHECK_OK(rc, err)                                                  \
    do {                                                                   \
        int rc_ = (rc);                                                    \
        if (rc_ != 0)                                                      \
            FAIL("%s: expected success, got %d (%s): %s", #rc, rc_,        \
                 procreg_strerror(rc_),                                    \
                 (err) != NULL ? (err)->message : "(no GError)");          \
        if ((err) != NULL)                                                 \
            FAIL("%s: succeeded but set a GError: %s", #rc,                \
                 (err)->message);                                          \
    } while (0)

/* @rc must be @want with a matching GError in @err (then cleared). */
#define CHECK_ERR(rc, err, want)                                           \
    do {                                                                   \
        int rc_ = (rc);                                                    \
        int want_ = (want);                                                \
        if (rc_ != want_)                                                  \
            FAIL("%s: expected %d (%s), got %d (%s)%s%s", #rc, want_,      \
                 procreg_strerror(want_), rc_, procreg_strerror(rc_),      \
                 (err) != NULL ? ": " : "",                                \
                 (err) != NULL ? (err)->message : "");                     \
        if ((err) == NULL)                                                 \
            FAIL("%s: returned %s without setting the GError", #rc,        \
                 procreg_strerror(rc_));                                   \
        if ((err)->domain != PROCREG_ERROR || (err)->code != rc_)          \
            FAIL("%s: GError %s/%d does not match the return %d", #rc,     \
                 g_quark_to_string((err)->domain), (err)->code, rc_);      \
        if ((err)->message == NULL || (err)->message[0] == '\0')           \
            FAIL("%s: GError without a message", #rc);                     \
        g_clear_error(&(err));                                             \
    } while (0)

/* @rc must be @want; used where no GError is passed. */
#define CHECK_RC(rc, want)                                                 \
    do {                                                                   \
        int rc_ = (rc);                                                    \
        int want_ = (want);                                                \
        if (rc_ != want_)                                                  \
            FAIL("%s: expected %d (%s), got %d (%s)", #rc, want_,          \
                 procreg_strerror(want_), rc_, procreg_strerror(rc_));     \
    } while (0)

/* Return early when a helper has already failed the case. */
#define CHECK_HELPER()                                                     \
    do {                                                                   \
        if (g_test_failed())                                               \
            return;                                                        \
    } while (0)

typedef struct Suite {
    char *label;
    char *spec_template;
    bool caps_known;
    unsigned int caps;
} Suite;

typedef struct Fixture Fixture;
typedef void (*CaseFunc)(Fixture *f);

enum { LEVEL_REGISTRY, LEVEL_BACKEND };

typedef struct {
    const char *name;
    CaseFunc func;
    unsigned int need_caps; /* skip unless every one is present */
    int level;              /* what the fixture opens */
} Case;

typedef struct {
    Suite *suite;
    const Case *c;
} CaseInstance;

struct Fixture {
    Suite *suite;
    char *tmpdir;
    char *spec;
    unsigned int caps;
    procreg *reg;
    procreg_backend *backend;
    bool setup_failed;
    const char *skip;
};

/* A GVariant from its text, not floating (bad text is a bug in the suite:
 * g_error). */
GVariant *cx_parsed(const char *text);
/* An a{sv} dictionary from GVariant text, not floating. */
GVariant *cx_md(const char *text);
/* Same pid and start time. */
bool cx_owner_eq(const procreg_owner *a, const procreg_owner *b);
/* Equal values, or both NULL. */
bool cx_variant_eq0(GVariant *a, GVariant *b);
/* @v as text, or "(null)", for messages (g_free it). */
char *cx_describe(GVariant *v);
/* "ns/name ns/name ..." for messages and comparisons (g_free it). */
char *cx_entries_describe(const procreg_entry *v, size_t n);
/* Check a listed array: ns and name set, sorted, strictly (no dups). */
void cx_check_list_shape(const EntryList *l);

/* @list (an EntryList) must be well formed and hold exactly the entries
 * @expected names ("ns/name ns/name ..."). */
#define CHECK_NAMES(list, expected)                                        \
    do {                                                                   \
        cx_check_list_shape(&(list));                                      \
        CHECK_HELPER();                                                    \
        g_autofree char *got_ = cx_entries_describe((list).v, (list).n);   \
        CHECK_MSG(strcmp(got_, (expected)) == 0,                           \
                  "expected entries [%s], got [%s]", (expected), got_);    \
    } while (0)
/* A live child that waits to be killed. */
pid_t cx_sleeping_child(void);
/* SIGKILL @pid and wait for it. */
void cx_reap(pid_t pid);
/* Register with the calling process as owner; no current, no GError. */
int cx_quick_register(procreg *reg, const char *ns, const char *name,
                      const char *md_text);
/* The argv (NULL-terminated, g_strfreev) that re-executes this program as
 * a child of the suite: --compliance-child MODE, the loaded modules, and
 * @spec.  compliance_child_main() runs it. */
char **cx_child_argv(const char *mode, const char *spec);

/* ---- watch.c: events, children ---- */

/* How long a case waits for an event or a child before it fails. */
#define CX_WAIT_MS 10000

/* One event as a subscription saw it (member_id: of JOINED / LEFT). */
typedef struct {
    procreg_event_kind kind;
    procreg_event_reason reason;
    char *name;
    uint64_t revision;
    pid_t owner;
    bool external;
    uint64_t member_id;
    bool member_group_ok; /* event->member names the event's group */
    uint64_t seq, position;
} seen_event;

void cx_seen_event_free(gpointer p);

/* A subscription collecting seen_events, ended when it goes out of scope
 * (g_auto), so a failed check cannot leave the callback running. */
typedef struct cx_event_queue cx_event_queue;

typedef struct {
    procreg *reg;
    uint64_t id;
    cx_event_queue *q;
} Watch;

void cx_watch_clear(Watch *w);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Watch, cx_watch_clear)

/* Subscribe to namespace @ns, or to one group. */
bool cx_watch_ns(Fixture *f, const char *ns, Watch *w);
bool cx_watch_group(Fixture *f, const char *ns, const char *group, Watch *w);
/* procreg_subscribe_from(): namespace @ns after position @after. */
int cx_watch_from(Fixture *f, const char *ns, uint64_t after, Watch *w,
                  GError **error);
/* The next event, or NULL after CX_WAIT_MS. */
seen_event *cx_next_event(Watch *w);
/* Pop events until one of @kind for @name; its reason in *@reason.  false
 * when none came in time. */
bool cx_expect_event(Watch *w, procreg_event_kind kind, const char *name,
                     procreg_event_reason *reason);

/* A sleeping child (cx_sleeping_child()) killed and reaped when it goes
 * out of scope. */
typedef struct {
    pid_t pid;
} Child;

void cx_child_clear(Child *c);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Child, cx_child_clear)

/* A re-executed child of the suite (cx_child_argv()) with pipes to its
 * stdin and stdout; cx_spawned_end() (also at end of scope) closes its
 * stdin, which ends it, and waits for it. */
typedef struct {
    GPid pid;
    int in, out;
    int status;
} Spawned;

bool cx_spawn(Fixture *f, const char *mode, Spawned *c, GError **error);
void cx_spawned_end(Spawned *c);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Spawned, cx_spawned_end)
/* SIGKILL it, then cx_spawned_end(). */
void cx_spawned_kill(Spawned *c);
/* A Spawned SIGKILLed at end of scope: for a child that may be blocked (a
 * lock waiter) when a check fails, where closing its stdin would not end
 * it. */
typedef Spawned SpawnedKilled;
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(SpawnedKilled, cx_spawned_kill)
/* One line from @fd within CX_WAIT_MS (without its newline); NULL on
 * timeout or end of file. */
char *cx_read_line(int fd);
/* The same within @timeout_ms. */
char *cx_read_line_within(int fd, int timeout_ms);
/* Write @line and a newline to @fd. */
bool cx_write_line(int fd, const char *line);

/* The cases, by file; compliance.c's table lists them in the order they
 * run. */

/* basics.c */
void case_register_basic(Fixture *f);
void case_register_exists(Fixture *f);
void case_register_other_owner(Fixture *f);
void case_register_notalive(Fixture *f);
void case_reregister(Fixture *f);
void case_lookup_notfound(Fixture *f);
void case_lookup_entry_lifetime(Fixture *f);
void case_unregister(Fixture *f);
void case_update_replace(Fixture *f);
void case_update_merge(Fixture *f);
void case_list(Fixture *f);
void case_count(Fixture *f);
void case_find(Fixture *f);
void case_revision_order(Fixture *f);
/* names.c */
void case_prepared_keys(Fixture *f);
void case_names(Fixture *f);
void case_default_namespace(Fixture *f);
void case_metadata_types(Fixture *f);
void case_metadata_wrong_type(Fixture *f);
void case_namespace_isolation(Fixture *f);
/* concurrency.c */
void case_many_entries(Fixture *f);
void case_concurrent_register_race(Fixture *f);
void case_concurrent_readers_writers(Fixture *f);
/* capabilities.c */
void case_health(Fixture *f);
void case_stats(Fixture *f);
void case_persistence(Fixture *f);
void case_multiprocess(Fixture *f);
void case_backend_level(Fixture *f);
/* The child side of case_multiprocess (MODE "basic"). */
int cx_basic_child(procreg *reg);
/* owner.c, lock.c, select.c, nsmeta.c, start.c, resume.c */
void case_owner_rule(Fixture *f);
void case_owner_rule_multiprocess(Fixture *f);
void case_dead_holder(Fixture *f);
/* The child side of case_owner_rule_multiprocess (MODE "owner"). */
int cx_owner_child(procreg *reg);
void case_lock_basic(Fixture *f);
void case_lock_fifo(Fixture *f);
void case_lock_processes(Fixture *f);
void case_lock_holder_killed(Fixture *f);
void case_lock_waiter_killed(Fixture *f);
void case_select(Fixture *f);
void case_namespace_meta(Fixture *f);
void case_namespace_meta_processes(Fixture *f);
void case_start_once_threads(Fixture *f);
void case_start_once_processes(Fixture *f);
void case_resume_position(Fixture *f);
void case_resume_from_now(Fixture *f);
void case_resume_compacted(Fixture *f);
void case_resume_other_registry(Fixture *f);
/* The child side of the lock and start-once cases (MODE "lock"). */
int cx_lock_child(procreg *reg);

/* ---- groups.c: helpers of the group cases ---- */

typedef struct {
    procreg_member *v;
    size_t n;
} MemberList;

static inline void member_list_clear(MemberList *l)
{
    procreg_members_free(l->v, l->n);
    l->v = NULL;
    l->n = 0;
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(MemberList, member_list_clear)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(procreg_member, procreg_member_clear)

/* The ids of @l, "[1 2 3]", for messages (g_free it). */
char *cx_ids_text(const MemberList *l);
/* Join (ns, group) as this process, @md_text its metadata (GVariant
 * text, or NULL); the member id in *@id. */
int cx_join(procreg *reg, const char *ns, const char *group,
            const char *md_text, uint64_t *id);
/* procreg_leave_key() of member @id of (ns, group). */
int cx_leave_id(procreg *reg, const char *ns, const char *group, uint64_t id,
                unsigned flags, size_t *removed, GError **error);
/* The group's size, or (size_t)-1 when the count fails. */
size_t cx_group_count(procreg *reg, const char *ns, const char *group);

void case_groups_basics(Fixture *f);
void case_groups_bad_input(Fixture *f);
void case_groups_side_by_side(Fixture *f);
void case_groups_owner_rule(Fixture *f);
void case_groups_owner_death(Fixture *f);
void case_groups_events(Fixture *f);
void case_groups_dispatch(Fixture *f);
void case_groups_dispatch_churn(Fixture *f);
void case_groups_churn_count(Fixture *f);
void case_groups_pick(Fixture *f);
void case_groups_find(Fixture *f);
void case_groups_wait(Fixture *f);
void case_groups_namespace_drop(Fixture *f);
void case_groups_multiprocess(Fixture *f);
/* The child side of case_groups_multiprocess (MODE "groups"). */
int cx_groups_child(procreg *reg);

#endif
