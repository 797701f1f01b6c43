/* Shared by the service-layer tests (suite 'service'). */
#ifndef SERVICE_TEST_COMMON_H
#define SERVICE_TEST_COMMON_H

#include <procreg/backend.h>

#include <glib.h>
#include <stdbool.h>
#include <sys/types.h>

/* One registry per test case, on the spec the case was added for, with a
 * fresh test namespace for the case. */
typedef struct {
    const char *spec;
    procreg *reg;
    char *ns;
} fixture;

void fixture_setup(fixture *f, gconstpointer spec);
void fixture_teardown(fixture *f, gconstpointer spec);

/* Add @fn as /service/<spec>/<name> for every spec under test. */
typedef void (*case_fn)(fixture *f, gconstpointer spec);
void add_case(const char *name, case_fn fn);
/* Whether @spec is the first spec under test (for costly cases). */
bool first_spec(gconstpointer spec);

/* Fork a child that sleeps until killed (or until the test process dies).
 * Returns its pid. */
pid_t spawn_child(void);
/* SIGKILL @pid and reap it. */
void kill_child(pid_t pid);
void reap_child(pid_t pid);

/* Assert a procreg call's result code, printing the GError on mismatch. */
#define CHECK_RC(expected, call)                                             \
    do {                                                                     \
        GError *err_ = NULL;                                                 \
        int rc_ = (call);                                                    \
        if (rc_ != (expected))                                               \
            g_error("%s:%d: %s: expected %d (%s), got %d (%s): %s", __FILE__, \
                    __LINE__, #call, (expected), procreg_strerror(expected), \
                    rc_, procreg_strerror(rc_),                              \
                    err_ ? err_->message : "(no message)");                  \
        g_clear_error(&err_);                                                \
    } while (0)

/* Wait up to @ms for @cond, checking every millisecond. */
#define WAIT_UNTIL(cond, ms)                                                 \
    ({                                                                       \
        gint64 until_ = g_get_monotonic_time() + (gint64)(ms) * 1000;        \
        while (!(cond) && g_get_monotonic_time() < until_)                   \
            g_usleep(1000);                                                  \
        (bool)(cond);                                                        \
    })

/* The "gate" test backend: a decorator over ghash made with the
 * decorator API (procreg_backend_open + a child host).  It can hold
 * unregisters (to freeze a cleanup half way) and simulate changes made by
 * another process (write to the inner backend + host notify). */
extern const procreg_backend_ops gate_backend_ops;
void gate_hold_unregister(bool hold);
/* How many unregisters are waiting at the gate now. */
int gate_waiting(void);
/* Register (ns, name) for @owner "from another process" in the gate
 * registry opened last, and notify. */
void gate_external_register(const char *ns, const char *name,
                            const procreg_owner *owner);
void gate_external_unregister(const char *ns, const char *name);
/* Notifications the gate's child host callback has seen. */
int gate_notifications(void);

/* Case registration functions, one per file. */
void add_liveness_cases(void);
void add_event_cases(void);
void add_wait_cases(void);
void add_namespace_cases(void);
void add_health_cases(void);
void add_telemetry_cases(void);
void add_stats_cases(void);

#endif
