/*
 * etcd: the registry in an etcd cluster, through its v3 JSON gateway.
 * This file owns the options, init and destroy, and the vtable; what each
 * other file owns is listed in etcd-private.h.
 *
 * One instance (one open registry) holds:
 *   - a session (etcd-session.c) shared with the process's other
 *     registries on the same cluster: the client, one lease and the
 *     keeper thread that keeps it alive;
 *   - a watch thread (etcd-watch.c) reporting other writers' changes.
 *
 * Layout of keys and values: etcd-codec.h.  Revisions are etcd's
 * mod_revision: one cluster-wide counter, so they only ever increase.
 */
#include "etcd-private.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_ENDPOINTS "http://127.0.0.1:2379"
#define DEFAULT_PREFIX "/procreg"
#define DEFAULT_TTL_S 10
#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_ATTEMPT_MS 1000
#define DEFAULT_SILENCE_MS 2000
/* A reply or watch line holds a value of up to etcd's request limit (1.5
 * MiB by default, 2 MiB as base64), twice in an update's event. */
#define DEFAULT_MAX_REPLY_BYTES (8u << 20)
#define PREFIX_MAX 512

static const procreg_backend_option etcd_options[] = {
    {"endpoints", "client URLs, [bracketed] when several: "
                  "endpoints=[http://a:2379,http://b:2379] (default "
                  DEFAULT_ENDPOINTS ")"},
    {"prefix", "key prefix of this registry (default " DEFAULT_PREFIX ")"},
    {"lease_ttl", "lease TTL in seconds, at least 2 (default 10)"},
    {"timeout_ms", "time budget of each operation, failovers included "
                   "(default 5000)"},
    {"attempt_timeout_ms", "the most one attempt on one member may take "
                           "before the next member is tried (default 1000, "
                           "at most timeout_ms)"},
    {"watch_silence_ms", "after this long without a message the watch's "
                         "member is probed, and left if it does not answer "
                         "(default 2000; 0: never)"},
    {"consistency", "reads: linearizable (default) or serializable"},
    {"host_id", "this host's id (default: /etc/machine-id)"},
    {"watch", "report other writers' changes: true (the whole prefix, "
              "read at open; default), used (the namespaces this registry "
              "uses, each read when first used), false"},
    {"watch_namespaces", "with watch=used, namespaces watched from the "
                         "start, [bracketed] when several: "
                         "watch_namespaces=[a,b]"},
    {"max_reply_bytes", "the longest reply or watch response read; longer "
                        "ones are refused (default 8MiB; K, M suffixes)"},
    {"ca_file", "PEM file of the CA certificates that sign the members' "
                "(https:// endpoints; default: the system's)"},
    {"cert_file", "PEM file of this client's certificate, for members that "
                  "ask for one"},
    {"key_file", "PEM file of the key of cert_file (default: in cert_file)"},
    {"user", "etcd user to authenticate as (with password or "
             "password_file)"},
    {"password", "the user's password (shown as *** in the spec; prefer "
                 "password_file)"},
    {"password_file", "file whose first line is the user's password"},
    {NULL, NULL},
};

/* ------------------------------------------------------------------------ */
/* Init and destroy                                                         */

static void read_machine_id(char *out, size_t size)
{
    static const char *const files[] = {"/etc/machine-id",
                                        "/var/lib/dbus/machine-id"};
    out[0] = '\0';
    for (size_t i = 0; i < G_N_ELEMENTS(files); i++) {
        char *text = NULL;
        if (g_file_get_contents(files[i], &text, NULL, NULL)) {
            g_strstrip(text);
            if (procreg_etcd_host_id_valid(text)) {
                g_strlcpy(out, text, size);
                g_free(text);
                return;
            }
            g_free(text);
        }
    }
    /* No machine id: the host name, with other characters replaced. */
    const char *h = g_get_host_name();
    size_t j = 0;
    for (size_t i = 0; h[i] && j + 1 < size && j < ETCD_HOST_ID_MAX; i++)
        out[j++] = g_ascii_isalnum(h[i]) || h[i] == '.' || h[i] == '-'
                       ? h[i]
                       : '_';
    out[j] = '\0';
    if (j == 0)
        g_strlcpy(out, "localhost", size);
}

static int parse_endpoints(const char *text, char ***out, GError **error)
{
    char **parts = g_strsplit(text, ",", -1);
    GPtrArray *urls = g_ptr_array_new_with_free_func(g_free);
    int rc = 0;
    for (char **p = parts; *p; p++) {
        char *u = g_strstrip(g_strdup(*p));
        size_t n = strlen(u);
        while (n > 0 && u[n - 1] == '/')
            u[--n] = '\0';
        bool scheme = g_str_has_prefix(u, "http://") ||
                      g_str_has_prefix(u, "https://");
        const char *hostpart = strstr(u, "://");
        bool ok = scheme && hostpart && hostpart[3] != '\0' &&
                  strpbrk(u, " \t\r\n\"\\") == NULL;
        if (!ok) {
            rc = procreg_set_error(error, PROCREG_EINVAL,
                                   "option 'endpoints' of backend 'etcd': "
                                   "'%s' is not an http:// or https:// URL "
                                   "(several: endpoints=[http://a:2379,"
                                   "http://b:2379])", u);
            g_free(u);
            break;
        }
        g_ptr_array_add(urls, u);
    }
    g_strfreev(parts);
    if (rc == 0 && urls->len == 0)
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "option 'endpoints' of backend 'etcd' is "
                               "empty");
    if (rc != 0) {
        g_ptr_array_unref(urls);
        return rc;
    }
    g_ptr_array_add(urls, NULL);
    *out = (char **)g_ptr_array_free(urls, FALSE);
    return 0;
}

static int parse_prefix(const char *text, GString **out, GError **error)
{
    GString *p = g_string_new(text);
    while (p->len > 1 && p->str[p->len - 1] == '/')
        g_string_truncate(p, p->len - 1);
    bool ok = p->len > 0 && p->len <= PREFIX_MAX &&
              g_utf8_validate(p->str, (gssize)p->len, NULL) &&
              strcmp(p->str, "/") != 0;
    for (size_t i = 0; ok && i < p->len; i++)
        ok = (guchar)p->str[i] >= 0x20 && p->str[i] != 0x7f;
    if (!ok) {
        g_string_free(p, TRUE);
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "option 'prefix' of backend 'etcd': '%s' is "
                                 "not a usable key prefix (printable, 1 to %d "
                                 "bytes, not just '/')",
                                 text, PREFIX_MAX);
    }
    *out = p;
    return 0;
}

/* What the spec says about TLS and authentication; strings owned. */
typedef struct {
    char *ca_file, *cert_file, *key_file, *user, *password;
} credentials;

static void credentials_clear(credentials *cr)
{
    g_free(cr->ca_file);
    g_free(cr->cert_file);
    g_free(cr->key_file);
    g_free(cr->user);
    if (cr->password != NULL) {
        volatile char *p = cr->password;
        for (size_t i = 0; p[i] != '\0'; i++)
            p[i] = 0;
        g_free(cr->password);
    }
    memset(cr, 0, sizeof *cr);
}

/* The path of file option @option, checked readable (NULL: not given). */
static int file_option(const procreg_spec *spec, const char *option,
                       char **out, GError **error)
{
    const char *path = procreg_spec_get(spec, option);
    if (path == NULL)
        return 0;
    if (access(path, R_OK) != 0)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "option '%s' of backend 'etcd': cannot read "
                                 "'%s': %s",
                                 option, path, g_strerror(errno));
    *out = g_strdup(path);
    return 0;
}

/* The first line of password_file; its text never goes into a message. */
static int read_password(const char *path, char **out, GError **error)
{
    char *text = NULL;
    gsize len = 0;
    GError *local = NULL;
    if (!g_file_get_contents(path, &text, &len, &local)) {
        int rc = procreg_set_error(error, PROCREG_EINVAL,
                                   "option 'password_file' of backend "
                                   "'etcd': %s",
                                   local->message);
        g_error_free(local);
        return rc;
    }
    size_t line = strcspn(text, "\r\n");
    int rc = 0;
    if (line == 0 || strlen(text) < len)
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "option 'password_file' of backend 'etcd': "
                               "'%s' %s",
                               path, line == 0 ? "starts with no password"
                                               : "holds a NUL byte");
    else
        *out = g_strndup(text, line);
    volatile char *p = text;
    for (gsize i = 0; i < len; i++)
        p[i] = 0;
    g_free(text);
    return rc;
}

static int parse_credentials(const procreg_spec *spec, char **urls,
                             credentials *cr, GError **error)
{
    int rc = file_option(spec, "ca_file", &cr->ca_file, error);
    if (rc == 0)
        rc = file_option(spec, "cert_file", &cr->cert_file, error);
    if (rc == 0)
        rc = file_option(spec, "key_file", &cr->key_file, error);
    if (rc != 0)
        return rc;
    if (cr->key_file != NULL && cr->cert_file == NULL)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "option 'key_file' of backend 'etcd' needs "
                                 "cert_file");
    bool tls = cr->ca_file != NULL || cr->cert_file != NULL;
    for (char **u = urls; tls && *u != NULL; u++)
        if (!g_str_has_prefix(*u, "https://"))
            return procreg_set_error(error, PROCREG_EINVAL,
                                     "options ca_file, cert_file and "
                                     "key_file of backend 'etcd' are for "
                                     "https:// endpoints, and '%s' is not "
                                     "one",
                                     *u);
    const char *user = procreg_spec_get(spec, "user");
    const char *password = procreg_spec_get(spec, "password");
    const char *password_file = procreg_spec_get(spec, "password_file");
    if (password != NULL && password_file != NULL)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "backend 'etcd' takes option password or "
                                 "password_file, not both");
    bool secret = password != NULL || password_file != NULL;
    if ((user != NULL) != secret)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 user != NULL
                                     ? "option 'user' of backend 'etcd' "
                                       "needs password or password_file"
                                     : "a password for backend 'etcd' needs "
                                       "option 'user'");
    if (user == NULL)
        return 0;
    if (*user == '\0')
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "option 'user' of backend 'etcd' is empty");
    if (password != NULL && *password == '\0')
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "option 'password' of backend 'etcd' is "
                                 "empty");
    cr->user = g_strdup(user);
    if (password != NULL) {
        cr->password = g_strdup(password);
        return 0;
    }
    return read_password(password_file, &cr->password, error);
}

/* Options watch and watch_namespaces; s->watched gets the latter. */
static int parse_watch(etcd_state *s, const procreg_spec *spec,
                       GError **error)
{
    const char *w = procreg_spec_get(spec, "watch");
    bool on = true;
    int rc = 0;
    if (w != NULL && strcmp(w, "used") == 0)
        s->watch_mode = WATCH_USED;
    else if ((rc = procreg_spec_get_bool(spec, "watch", true, &on, NULL)) == 0)
        s->watch_mode = on ? WATCH_ALL : WATCH_NONE;
    else
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "option 'watch' of backend 'etcd': '%s' is "
                                 "none of true, used, false",
                                 w);
    const char *names = procreg_spec_get(spec, "watch_namespaces");
    if (names == NULL)
        return 0;
    if (s->watch_mode != WATCH_USED)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "option 'watch_namespaces' of backend "
                                 "'etcd' needs watch=used");
    char **parts = g_strsplit(names, ",", -1);
    for (char **p = parts; rc == 0 && *p != NULL; p++) {
        char *ns = g_strstrip(*p);
        rc = procreg_validate_name(ns, "namespace", error);
        if (rc == 0)
            g_hash_table_replace(s->watched, g_strdup(ns), g_new0(gint64, 1));
    }
    g_strfreev(parts);
    return rc;
}

static void etcd_destroy(void *state);

static int parse_spec(etcd_state *s, const procreg_spec *spec, char ***urls,
                      credentials *cr, int64_t *ttl_s, GError **error)
{
    const char *ep = procreg_spec_get(spec, "endpoints");
    int rc = parse_endpoints(ep ? ep : DEFAULT_ENDPOINTS, urls, error);
    if (rc == 0)
        rc = parse_credentials(spec, *urls, cr, error);
    if (rc != 0)
        return rc;
    const char *prefix = procreg_spec_get(spec, "prefix");
    rc = parse_prefix(prefix ? prefix : DEFAULT_PREFIX, &s->prefix, error);
    if (rc != 0)
        return rc;
    uint64_t ttl = 0, timeout = 0;
    rc = procreg_spec_get_uint64(spec, "lease_ttl", DEFAULT_TTL_S, &ttl, error);
    if (rc == 0 && (ttl < 2 || ttl > 86400))
        rc = procreg_set_error(
            error, PROCREG_EINVAL,
            "option 'lease_ttl' of backend 'etcd': %" G_GUINT64_FORMAT
            " s is out of range (2 to 86400; etcd's "
            "shortest lease is 2 s)",
            (guint64)ttl);
    if (rc == 0)
        rc = procreg_spec_get_uint64(spec, "timeout_ms", DEFAULT_TIMEOUT_MS,
                                     &timeout, error);
    if (rc == 0 && (timeout < 10 || timeout > 600000))
        rc = procreg_set_error(
            error, PROCREG_EINVAL,
            "option 'timeout_ms' of backend 'etcd': %" G_GUINT64_FORMAT
            " is out of range (10 to 600000)",
            (guint64)timeout);
    uint64_t attempt = 0, silence = 0;
    if (rc == 0)
        rc = procreg_spec_get_uint64(spec, "attempt_timeout_ms",
                                     MIN(DEFAULT_ATTEMPT_MS, timeout),
                                     &attempt, error);
    if (rc == 0 && (attempt < 10 || attempt > timeout))
        rc = procreg_set_error(
            error, PROCREG_EINVAL,
            "option 'attempt_timeout_ms' of backend 'etcd': %" G_GUINT64_FORMAT
            " is out of range (10 to timeout_ms, %" G_GUINT64_FORMAT ")",
            (guint64)attempt, (guint64)timeout);
    if (rc == 0)
        rc = procreg_spec_get_uint64(spec, "watch_silence_ms",
                                     DEFAULT_SILENCE_MS, &silence, error);
    if (rc == 0 && silence != 0 && (silence < 100 || silence > 3600000))
        rc = procreg_set_error(
            error, PROCREG_EINVAL,
            "option 'watch_silence_ms' of backend 'etcd': %" G_GUINT64_FORMAT
            " is out of range (0, or 100 to 3600000)",
            (guint64)silence);
    uint64_t max_reply = 0;
    if (rc == 0)
        rc = procreg_spec_get_uint64(spec, "max_reply_bytes",
                                     DEFAULT_MAX_REPLY_BYTES, &max_reply,
                                     error);
    if (rc == 0 && (max_reply < (64u << 10) || max_reply > (1u << 30)))
        rc = procreg_set_error(
            error, PROCREG_EINVAL,
            "option 'max_reply_bytes' of backend 'etcd': %" G_GUINT64_FORMAT
            " is out of range (64KiB to 1GiB)",
            (guint64)max_reply);
    if (rc != 0)
        return rc;
    s->max_reply = (size_t)max_reply;
    *ttl_s = (int64_t)ttl;
    s->timeout_ms = (unsigned)timeout;
    s->attempt_ms = (unsigned)attempt;
    s->silence_ms = (unsigned)silence;
    const char *cons = procreg_spec_get(spec, "consistency");
    if (cons == NULL || strcmp(cons, "linearizable") == 0)
        s->serializable = false;
    else if (strcmp(cons, "serializable") == 0)
        s->serializable = true;
    else
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "option 'consistency' of backend 'etcd': "
                                 "'%s' is neither linearizable nor "
                                 "serializable", cons);
    const char *host = procreg_spec_get(spec, "host_id");
    if (host != NULL && !procreg_etcd_host_id_valid(host))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "option 'host_id' of backend 'etcd': '%s' "
                                 "is not 1 to %d of [A-Za-z0-9._-]",
                                 host, ETCD_HOST_ID_MAX);
    if (host != NULL)
        g_strlcpy(s->host_id, host, sizeof s->host_id);
    else
        read_machine_id(s->host_id, sizeof s->host_id);
    return parse_watch(s, spec, error);
}

static int etcd_init(const procreg_spec *spec, procreg_backend_host *host,
                     void **state, GError **error)
{
    etcd_state *s = g_new0(etcd_state, 1);
    pthread_mutex_init(&s->lock, NULL);
    cond_init_monotonic(&s->cond);
    s->host = host;
    s->owned = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                     (GDestroyNotify)g_bytes_unref,
                                     procreg_etcd_owned_free);
    s->pending = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                       (GDestroyNotify)g_bytes_unref, NULL);
    s->tombs = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                     (GDestroyNotify)g_bytes_unref, g_free);
    s->locals = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                      (GDestroyNotify)g_bytes_unref, g_free);
    s->mirror = procreg_etcd_mirror_new();
    s->watched = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                       g_free);
    s->unrestored = g_ptr_array_new_with_free_func(g_free);
    s->watched_epoch = 1; /* 0: the watch is stopping */
    char **urls = NULL;
    credentials cr = {0};
    int64_t ttl_s = 0;
    int rc = parse_spec(s, spec, &urls, &cr, &ttl_s, error);
    if (rc == 0) {
        s->eprefix = g_string_new(s->prefix->str);
        g_string_append(s->eprefix, "/e/");
        g_snprintf(s->writer, sizeof s->writer, "%08x%08x",
                   g_random_int() | 1u, g_random_int());
        rc = procreg_etcd_session_open(
            &(etcd_client_config){.endpoints = (const char *const *)urls,
                                  .timeout_ms = s->timeout_ms,
                                  .attempt_ms = s->attempt_ms,
                                  .max_reply_bytes = s->max_reply,
                                  .ca_file = cr.ca_file,
                                  .cert_file = cr.cert_file,
                                  .key_file = cr.key_file,
                                  .user = cr.user,
                                  .password = cr.password},
            s->host_id, ttl_s, &s->session, error);
    }
    g_strfreev(urls);
    credentials_clear(&cr);
    if (rc == 0) {
        s->client = procreg_etcd_session_client(s->session);
        rc = procreg_etcd_watch_begin(s, error);
    }
    if (rc != 0) {
        etcd_destroy(s);
        return rc;
    }
    procreg_etcd_session_attach(s->session, s);
    if (s->watch_mode != WATCH_NONE) {
        s->stream = procreg_etcd_stream_new(s->silence_ms);
        s->watcher =
            g_thread_new("procreg-etcd-watch", procreg_etcd_watcher_main, s);
    }
    /* Changes by others are reported from the moment open returns: the
     * whole prefix's watch starts from the revision watch_begin() saw;
     * the namespaces of watch_namespaces are read by the watch thread,
     * which open waits for (briefly). */
    gint64 until = g_get_monotonic_time() +
                   (gint64)MIN(s->timeout_ms, 2000) * 1000;
    pthread_mutex_lock(&s->lock);
    bool waits = s->watch_mode == WATCH_USED &&
                 g_hash_table_size(s->watched) > 0;
    while (waits && !g_atomic_int_get(&s->watch_connected) &&
           g_get_monotonic_time() < until)
        cond_wait_until(&s->cond, &s->lock, until);
    pthread_mutex_unlock(&s->lock);
    *state = s;
    return 0;
}

ETCD_HIDDEN void procreg_etcd_state_free(etcd_state *s)
{
    procreg_etcd_stream_free(s->stream);
    g_hash_table_unref(s->mirror);
    g_hash_table_unref(s->watched);
    g_hash_table_unref(s->owned);
    g_hash_table_unref(s->pending);
    g_hash_table_unref(s->tombs);
    g_hash_table_unref(s->locals);
    g_ptr_array_unref(s->unrestored);
    if (s->prefix != NULL)
        g_string_free(s->prefix, TRUE);
    if (s->eprefix != NULL)
        g_string_free(s->eprefix, TRUE);
    g_free(s->watch_error);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    g_free(s);
}

static void etcd_destroy(void *state)
{
    etcd_state *s = state;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (s->stream != NULL)
        procreg_etcd_stream_stop(s->stream);
    if (s->watcher != NULL)
        g_thread_join(s->watcher);
    s->watcher = NULL;
    /* The lease is not revoked: like a crash, the entries on it stay until
     * it expires (lease_ttl) after the process's last registry on the
     * cluster closes; while another stays open, the session keeps them
     * and removes those whose owner dies (procreg_etcd_session_leave()). */
    if (s->session != NULL && procreg_etcd_session_leave(s->session, s))
        return;
    procreg_etcd_state_free(s);
}

#define ETCD_CAPS                                                          \
    (PROCREG_CAP_THREADSAFE | PROCREG_CAP_DISTRIBUTED |                    \
     PROCREG_CAP_MULTIPROCESS | PROCREG_CAP_PERSISTENT |                   \
     PROCREG_CAP_ATOMIC_DROP | PROCREG_CAP_GROUPS)

/* Events in commit order when the watch covers the whole prefix
 * (etcd-watch.c); then each event carries the position the history slots
 * replay from (etcd-history.c), and the core serves
 * procreg_subscribe_from() from etcd's history.  Otherwise the registry
 * keeps a history of its own. */
static unsigned int etcd_instance_caps(void *state)
{
    return ETCD_CAPS | (procreg_etcd_ordered(state)
                            ? PROCREG_CAP_ORDERED_EVENTS | PROCREG_CAP_HISTORY
                            : 0);
}

const procreg_backend_ops procreg_etcd_backend_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "etcd",
    .description = "etcd cluster through its v3 JSON gateway: shared by "
                   "hosts, entries on leases, changes from a watch",
    .caps = ETCD_CAPS,
    .instance_caps = etcd_instance_caps,
    .options = etcd_options,
    .init = etcd_init,
    .destroy = etcd_destroy,
    .register_entry = procreg_etcd_register,
    .lookup = procreg_etcd_lookup,
    .lookup_entry = procreg_etcd_lookup_entry,
    .unregister = procreg_etcd_unregister,
    .list_all = procreg_etcd_list_all,
    .update_metadata = procreg_etcd_update_metadata,
    .health_check = procreg_etcd_health_check,
    .count = procreg_etcd_count,
    .list_names = procreg_etcd_list_names,
    .drop_namespace = procreg_etcd_drop_namespace,
    .memory_usage = procreg_etcd_memory_usage,
    .stats = procreg_etcd_stats,
    .group_join = procreg_etcd_group_join,
    .group_leave = procreg_etcd_group_leave,
    .group_members = procreg_etcd_group_members,
    .group_list_all = procreg_etcd_group_list_all,
    .group_count = procreg_etcd_group_count,
    .group_list = procreg_etcd_group_list,
    .history_head = procreg_etcd_history_head,
    .history_read = procreg_etcd_history_read,
};
