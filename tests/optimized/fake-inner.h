/*
 * A counting fake backend to put under the optimized decorator: it counts
 * every call the decorator makes, and the test can change its data
 * directly (bypassing the decorator) and make it notify, as another
 * process writing to a shared backend would.
 *
 * Gates force interleavings: the next call of an op can be held after it
 * has done its work and before it returns (a reader that read an old value
 * and was descheduled; a write that reached the backend, its caller not
 * yet told), a register or update can be held before its work (a write in
 * flight that has not reached the backend), and a write can be made to
 * fail after it took effect.
 *
 * Three types: "fake" (caps THREADSAFE, not shared), "fake_shared" (caps
 * THREADSAFE | MULTIPROCESS) and "fake_groups" ("fake" with GROUPS: the
 * four group slots a backend must set, each with its gate; the core's
 * fallbacks answer the others).  Option id=N (0..FAKE_MAX_INSTANCES-1)
 * names the instance so the test can reach it with fake_instance(N).
 */
#ifndef PROCREG_TESTS_FAKE_INNER_H
#define PROCREG_TESTS_FAKE_INNER_H

#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND
#endif
#include <procreg/backend.h>

G_BEGIN_DECLS

#define FAKE_MAX_INSTANCES 16

typedef enum {
    FAKE_REGISTER,
    FAKE_LOOKUP,
    FAKE_LOOKUP_ENTRY,
    FAKE_UNREGISTER,
    FAKE_LIST_ALL,
    FAKE_UPDATE,
    FAKE_HEALTH,
    FAKE_GROUP_JOIN,
    FAKE_GROUP_LEAVE,
    FAKE_GROUP_MEMBERS,
    FAKE_GROUP_LIST_ALL,
    FAKE_N_OPS
} fake_op;

typedef struct fake_inner fake_inner;

/* Register both types (once per process). */
void fake_inner_register_types(void);

/* The instance opened with id=@id, or NULL. */
fake_inner *fake_instance(unsigned int id);

/* Calls of @op made on @f so far. */
guint64 fake_calls(fake_inner *f, fake_op op);
/* Every call so far (all ops). */
guint64 fake_calls_total(fake_inner *f);

/* Bypassing the decorator: set (insert or replace, new revision) or
 * remove an entry.  @metadata: a{sv} or NULL (floating is sunk). */
void fake_set(fake_inner *f, const char *ns, const char *name, pid_t pid,
              GVariant *metadata);
/* fake_set() with a whole owner (fake_set() gives start time 1). */
void fake_set_owner(fake_inner *f, const char *ns, const char *name,
                    const procreg_owner *owner, GVariant *metadata);
gboolean fake_remove(fake_inner *f, const char *ns, const char *name);

/* Report a change of (ns, name) to the host, as a shared backend does. */
void fake_notify(fake_inner *f, procreg_event_kind kind, const char *ns,
                 const char *name);

/* The next call of @op on @f does its work, then waits before it returns
 * until fake_release(@f, @op). */
void fake_hold_next(fake_inner *f, fake_op op);
/* The next call of @op (FAKE_REGISTER or FAKE_UPDATE) on @f waits before
 * it does its work until fake_release(@f, @op): a write in flight that
 * has not reached the backend yet. */
void fake_hold_next_before(fake_inner *f, fake_op op);
/* The next call of @op on @f (a write: register, update, unregister,
 * group join) does its work, then returns @rc with an error, as a backend
 * that timed out after its commit. */
void fake_fail_next(fake_inner *f, fake_op op, int rc);
/* Wait until a call of @op is held; the test fails after 10 s. */
void fake_wait_held(fake_inner *f, fake_op op);
/* Let the held call of @op return. */
void fake_release(fake_inner *f, fake_op op);

G_END_DECLS

#endif
