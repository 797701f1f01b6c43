/*
 * A counting fake backend to put under the optimized decorator: it counts
 * every call the decorator makes, and the test can change its data
 * directly (bypassing the decorator) and make it notify, as another
 * process writing to a shared backend would.
 *
 * Two types: "fake" (caps THREADSAFE, not shared) and "fake_shared" (caps
 * THREADSAFE | MULTIPROCESS).  Option id=N (0..FAKE_MAX_INSTANCES-1) names
 * the instance so the test can reach it with fake_instance(N).
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
gboolean fake_remove(fake_inner *f, const char *ns, const char *name);

/* Report a change of (ns, name) to the host, as a shared backend does. */
void fake_notify(fake_inner *f, procreg_event_kind kind, const char *ns,
                 const char *name);

G_END_DECLS

#endif
