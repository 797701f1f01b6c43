/*
 * The service-layer tests: real processes, real threads, on every backend
 * this build has that opens without options (and the "gate" test
 * decorator over ghash).  Extra specs: PROCREG_SERVICE_SPECS="a;b".
 */
#include "common.h"

#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static GPtrArray *specs;

void fixture_setup(fixture *f, gconstpointer spec)
{
    f->spec = spec;
    GError *error = NULL;
    if (procreg_open(spec, &f->reg, &error) != 0)
        g_error("open %s: %s", (const char *)spec, error->message);
    CHECK_RC(0, procreg_namespace_new_test(f->reg, &f->ns, &err_));
}

void fixture_teardown(fixture *f, gconstpointer spec)
{
    procreg_namespace_drop(f->reg, f->ns, NULL, NULL, NULL);
    procreg_close(f->reg);
    g_free(f->ns);
}

void add_case(const char *name, case_fn fn)
{
    for (guint i = 0; i < specs->len; i++) {
        const char *spec = specs->pdata[i];
        char *path = g_strdup_printf("/service/%s/%s", spec, name);
        g_test_add(path, fixture, spec, fixture_setup, fn, fixture_teardown);
        g_free(path);
    }
}

bool first_spec(gconstpointer spec)
{
    return specs->len > 0 && strcmp(specs->pdata[0], spec) == 0;
}

pid_t spawn_child(void)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        /* Only async-signal-safe calls here: the parent has threads. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        for (;;)
            pause();
    }
    return pid;
}

void reap_child(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

void kill_child(pid_t pid)
{
    kill(pid, SIGKILL);
    reap_child(pid);
}

/* ---- the gate backend ---- */

typedef struct {
    procreg_backend *inner;
    procreg_backend_host *child;
} gate_state;

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_hold;
static int gate_waiters;
static int gate_notes;
static gate_state *gate_last;

void gate_hold_unregister(bool hold)
{
    pthread_mutex_lock(&gate_lock);
    gate_hold = hold;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

int gate_waiting(void)
{
    pthread_mutex_lock(&gate_lock);
    int n = gate_waiters;
    pthread_mutex_unlock(&gate_lock);
    return n;
}

int gate_notifications(void)
{
    pthread_mutex_lock(&gate_lock);
    int n = gate_notes;
    pthread_mutex_unlock(&gate_lock);
    return n;
}

static void gate_on_inner(gpointer user_data, procreg_event_kind kind,
                          procreg_event_reason reason,
                          const procreg_entry *entry)
{
    /* A cache would be invalidated here. */
    pthread_mutex_lock(&gate_lock);
    gate_notes++;
    pthread_mutex_unlock(&gate_lock);
}

static int gate_init(const procreg_spec *spec, procreg_backend_host *host,
                     void **state, GError **error)
{
    gate_state *s = g_new0(gate_state, 1);
    s->child = procreg_backend_host_new_child(host, gate_on_inner, s);
    int rc = procreg_backend_open("ghash", s->child, &s->inner, error);
    if (rc != 0) {
        procreg_backend_host_free(s->child);
        g_free(s);
        return rc;
    }
    pthread_mutex_lock(&gate_lock);
    gate_last = s;
    pthread_mutex_unlock(&gate_lock);
    *state = s;
    return 0;
}

static void gate_destroy(void *state)
{
    gate_state *s = state;
    pthread_mutex_lock(&gate_lock);
    if (gate_last == s)
        gate_last = NULL;
    pthread_mutex_unlock(&gate_lock);
    procreg_backend_close(s->inner);
    procreg_backend_host_free(s->child);
    g_free(s);
}

static int gate_register(void *state, const procreg_key *key,
                         const procreg_record *record, procreg_entry *current,
                         GError **error)
{
    gate_state *s = state;
    return procreg_backend_register_entry(s->inner, key, record, current,
                                          error);
}

static int gate_lookup(void *state, const procreg_key *key, procreg_owner *out)
{
    gate_state *s = state;
    return procreg_backend_lookup(s->inner, key, out);
}

static int gate_lookup_entry(void *state, const procreg_key *key,
                             procreg_entry *out, GError **error)
{
    gate_state *s = state;
    return procreg_backend_lookup_entry(s->inner, key, out, error);
}

static int gate_unregister(void *state, const procreg_key *key,
                           uint64_t if_revision, procreg_entry *removed,
                           GError **error)
{
    gate_state *s = state;
    pthread_mutex_lock(&gate_lock);
    gate_waiters++;
    while (gate_hold)
        pthread_cond_wait(&gate_cond, &gate_lock);
    gate_waiters--;
    pthread_mutex_unlock(&gate_lock);
    return procreg_backend_unregister(s->inner, key, if_revision, removed,
                                      error);
}

static int gate_list_all(void *state, const char *ns, GArray *out,
                         GError **error)
{
    gate_state *s = state;
    return procreg_backend_list_all(s->inner, ns, out, error);
}

static int gate_update(void *state, const procreg_key *key, GVariant *metadata,
                       uint64_t if_revision, procreg_entry *updated,
                       GError **error)
{
    gate_state *s = state;
    return procreg_backend_update_metadata(s->inner, key, metadata,
                                           if_revision, updated, error);
}

static int gate_health(void *state, GVariantDict *details, char **message)
{
    gate_state *s = state;
    return procreg_backend_health_check(s->inner, details, message);
}

const procreg_backend_ops gate_backend_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "gate",
    .description = "test decorator over ghash that can hold unregisters",
    .caps = PROCREG_CAP_THREADSAFE,
    .init = gate_init,
    .destroy = gate_destroy,
    .register_entry = gate_register,
    .lookup = gate_lookup,
    .lookup_entry = gate_lookup_entry,
    .unregister = gate_unregister,
    .list_all = gate_list_all,
    .update_metadata = gate_update,
    .health_check = gate_health,
};

void gate_external_register(const char *ns, const char *name,
                            const procreg_owner *owner)
{
    pthread_mutex_lock(&gate_lock);
    gate_state *s = gate_last;
    pthread_mutex_unlock(&gate_lock);
    g_assert_nonnull(s);
    procreg_key *key = NULL;
    CHECK_RC(0, procreg_key_new(ns, name, &key, &err_));
    procreg_record rec = {.owner = *owner,
                          .registered_at = g_get_real_time()};
    procreg_entry e = {0};
    CHECK_RC(0, procreg_backend_register_entry(s->inner, key, &rec, &e, &err_));
    e.ns = g_strdup(ns);
    e.name = g_strdup(name);
    procreg_backend_host_notify(s->child, PROCREG_EVENT_REGISTERED,
                                PROCREG_REASON_NONE, &e);
    procreg_entry_clear(&e);
    procreg_key_unref(key);
}

void gate_external_unregister(const char *ns, const char *name)
{
    pthread_mutex_lock(&gate_lock);
    gate_state *s = gate_last;
    pthread_mutex_unlock(&gate_lock);
    g_assert_nonnull(s);
    procreg_key *key = NULL;
    CHECK_RC(0, procreg_key_new(ns, name, &key, &err_));
    procreg_entry e = {0};
    CHECK_RC(0, procreg_backend_unregister(s->inner, key, 0, &e, &err_));
    e.ns = g_strdup(ns);
    e.name = g_strdup(name);
    procreg_backend_host_notify(s->child, PROCREG_EVENT_UNREGISTERED,
                                PROCREG_REASON_EXPIRED, &e);
    procreg_entry_clear(&e);
    procreg_key_unref(key);
}

/* ---- main ---- */

static bool opens(const char *spec)
{
    procreg *reg = NULL;
    GError *error = NULL;
    if (procreg_open(spec, &reg, &error) != 0) {
        g_test_message("skipping spec '%s': %s", spec, error->message);
        g_printerr("# service tests: skipping '%s': %s\n", spec,
                   error->message);
        g_error_free(error);
        return false;
    }
    procreg_close(reg);
    return true;
}

/* Backends opened without options (lmdb) use a host-wide default file
 * under $XDG_RUNTIME_DIR: point that at a directory of this run's own, so
 * another writer on the host cannot disturb the tests, nor they it. */
static char *private_runtime_dir(void)
{
    GError *error = NULL;
    char *dir = g_dir_make_tmp("procreg-service-XXXXXX", &error);
    if (dir == NULL)
        g_error("cannot make a private directory: %s", error->message);
    g_setenv("XDG_RUNTIME_DIR", dir, TRUE);
    return dir;
}

static void remove_tree(const char *path)
{
    GDir *d = g_dir_open(path, 0, NULL);
    const char *name;
    while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
        char *child = g_build_filename(path, name, NULL);
        if (g_file_test(child, G_FILE_TEST_IS_DIR) &&
            !g_file_test(child, G_FILE_TEST_IS_SYMLINK))
            remove_tree(child);
        else
            g_unlink(child);
        g_free(child);
    }
    if (d != NULL)
        g_dir_close(d);
    g_rmdir(path);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    char *runtime_dir = private_runtime_dir();
    GError *error = NULL;
    if (procreg_backend_register(&gate_backend_ops, &error) != 0)
        g_error("register gate: %s", error->message);
    specs = g_ptr_array_new_with_free_func(g_free);
    char **names = procreg_backend_names();
    for (char **n = names; *n; n++)
        if (opens(*n))
            g_ptr_array_add(specs, g_strdup(*n));
    g_strfreev(names);
    const char *extra = g_getenv("PROCREG_SERVICE_SPECS");
    if (extra != NULL) {
        char **more = g_strsplit(extra, ";", -1);
        for (char **m = more; *m; m++)
            if (**m && opens(*m))
                g_ptr_array_add(specs, g_strdup(*m));
        g_strfreev(more);
    }
    add_liveness_cases();
    add_event_cases();
    add_wait_cases();
    add_namespace_cases();
    add_health_cases();
    add_telemetry_cases();
    add_stats_cases();
    int rc = g_test_run();
    g_ptr_array_unref(specs);
    remove_tree(runtime_dir);
    g_free(runtime_dir);
    return rc;
}
