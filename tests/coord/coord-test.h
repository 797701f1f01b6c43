/*
 * What the tests of suite 'coord' share: opening a registry, counting the
 * entries of a ticket queue (lock tickets, start claims) while a test
 * waits for a thread to join it, the backends to run on, dead pids.
 */
#ifndef PROCREG_TESTS_COORD_TEST_H
#define PROCREG_TESTS_COORD_TEST_H

#include "../optimized/fake-inner.h"

#include <stdbool.h>
#include <sys/types.h>

G_BEGIN_DECLS

/* How long a test waits for a thread or process to get somewhere. */
#define WAIT_MS 10000

/* procreg_open(@spec); the test ends (g_error) when it fails. */
procreg *open_reg(const char *spec);
/* The entries of namespace @prefix@ns ("procreg:lock:" and the lock's
 * namespace: its tickets). */
size_t queue_len(procreg *reg, const char *prefix, const char *ns);
/* Whether queue_len() reaches @want within WAIT_MS. */
bool wait_queue_len(procreg *reg, const char *prefix, const char *ns,
                    size_t want);
/* The in-process specs the contract tests run on (those whose backend
 * is built: backend_built()). */
extern const char *const thread_specs[3];
/* Whether the backend @spec names (before any ':') is built in. */
bool backend_built(const char *spec);
/* The pid of a process that has exited and been reaped. */
pid_t dead_pid(void);

G_END_DECLS

#endif
