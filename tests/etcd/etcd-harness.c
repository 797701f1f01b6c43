/* Real etcd servers for the tests: see etcd-harness.h. */
#include "etcd-harness.h"

#define HARNESS_ERROR (g_quark_from_static_string("etcd-harness"))

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib/gstdio.h>

const char *etcd_harness_require(void)
{
    static char *bin;
    if (bin != NULL)
        return bin;
    const char *env = g_getenv("ETCD_BIN");
    if (env != NULL && *env != '\0' && g_file_test(env, G_FILE_TEST_IS_EXECUTABLE))
        bin = g_strdup(env);
    else
        bin = g_find_program_in_path("etcd");
    if (bin == NULL) {
        fprintf(stderr,
                "SKIP: no etcd binary (set ETCD_BIN or install etcd-server); "
                "the etcd backend tests did NOT run\n");
        exit(77);
    }
    return bin;
}

void etcd_harness_env(char **argv)
{
    if (getenv("G_SLICE") != NULL)
        return;
    setenv("G_SLICE", "always-malloc", 1);
    execv("/proc/self/exe", argv);
    /* Could not: go on with the slice allocator. */
    fprintf(stderr, "cannot execute /proc/self/exe again: %s\n",
            g_strerror(errno));
}

void etcd_harness_args(int *argc, char **argv)
{
    int n = 1;
    for (int i = 1; i < *argc; i++) {
        if (g_str_has_prefix(argv[i], "--etcd-bin="))
            g_setenv("ETCD_BIN", argv[i] + strlen("--etcd-bin="), TRUE);
        else
            argv[n++] = argv[i];
    }
    argv[n] = NULL;
    *argc = n;
}

int etcd_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

char *etcd_random_tag(void)
{
    return g_strdup_printf("%06x%06x", g_random_int() & 0xffffff,
                           g_random_int() & 0xffffff);
}

static const char *scheme(const etcd_cluster *c)
{
    return c->server_cert != NULL ? "https" : "http";
}

char *etcd_member_url(const etcd_cluster *c, int i)
{
    return g_strdup_printf("%s://127.0.0.1:%d", scheme(c),
                           c->m[i].client_port);
}

char *etcd_cluster_endpoints(const etcd_cluster *c)
{
    GString *s = g_string_new(NULL);
    for (int i = 0; i < c->n; i++)
        g_string_append_printf(s, "%s%s://127.0.0.1:%d", i ? "," : "",
                               scheme(c), c->m[i].client_port);
    return g_string_free(s, FALSE);
}

static size_t collect(char *data, size_t size, size_t nmemb, void *user)
{
    g_string_append_len(user, data, (gssize)(size * nmemb));
    return size * nmemb;
}

/* A request to @url; @c (may be NULL) gives the TLS files, @token (may
 * be NULL) an etcd authentication token. */
static char *http_with(const char *url, const char *body, long timeout_ms,
                       const etcd_cluster *c, const char *token)
{
    CURL *h = curl_easy_init();
    if (h == NULL)
        return NULL;
    GString *out = g_string_new(NULL);
    struct curl_slist *hdr = NULL;
    if (token != NULL) {
        char *a = g_strconcat("Authorization: ", token, NULL);
        hdr = curl_slist_append(hdr, a);
        g_free(a);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    }
    if (c != NULL && c->ca_file != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    if (c != NULL && c->client_cert != NULL) {
        curl_easy_setopt(h, CURLOPT_SSLCERT, c->client_cert);
        curl_easy_setopt(h, CURLOPT_SSLKEY, c->client_key);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    if (body != NULL)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdr);
    if (rc != CURLE_OK) {
        g_string_free(out, TRUE);
        return NULL;
    }
    return g_string_free(out, FALSE);
}

static char *http(const char *url, const char *body, long timeout_ms)
{
    return http_with(url, body, timeout_ms, NULL, NULL);
}

char *etcd_post(const char *url, const char *path, const char *body)
{
    char *full = g_strconcat(url, path, NULL);
    char *r = http(full, body, 5000);
    g_free(full);
    return r;
}

char *etcd_member_post(const etcd_cluster *c, int i, const char *path,
                       const char *body, const char *token)
{
    char *url = etcd_member_url(c, i);
    char *full = g_strconcat(url, path, NULL);
    char *r = http_with(full, body, 5000, c, token);
    g_free(full);
    g_free(url);
    return r;
}

bool etcd_member_healthy(const etcd_cluster *c, int i)
{
    char *url = g_strdup_printf("%s://127.0.0.1:%d/health", scheme(c),
                                c->m[i].client_port);
    char *r = http_with(url, NULL, 1000, c, NULL);
    bool ok = r != NULL && strstr(r, "\"health\":\"true\"") != NULL;
    g_free(r);
    g_free(url);
    return ok;
}

static void child_setup(gpointer data)
{
    /* Die with the test program, even when it aborts, and even when it
     * froze the member (SIGSTOP) before. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static char *initial_cluster(const etcd_cluster *c)
{
    GString *s = g_string_new(NULL);
    for (int i = 0; i < c->n; i++)
        g_string_append_printf(s, "%s%s=http://127.0.0.1:%d", i ? "," : "",
                               c->m[i].name, c->m[i].peer_port);
    return g_string_free(s, FALSE);
}

static bool spawn_member(etcd_cluster *c, int i, GError **error)
{
    etcd_member *m = &c->m[i];
    char *client = etcd_member_url(c, i);
    char *peer = g_strdup_printf("http://127.0.0.1:%d", m->peer_port);
    char *cluster = initial_cluster(c);
    const char *base[] = {
        c->bin,
        "--name", m->name,
        "--data-dir", m->data_dir,
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", cluster,
        "--initial-cluster-state", "new",
        "--initial-cluster-token", c->token,
        /* Fast elections: the cluster tests stop members on purpose. */
        "--heartbeat-interval", "50",
        "--election-timeout", "500",
        "--logger", "zap",
        "--log-level", "warn",
    };
    GPtrArray *argv = g_ptr_array_new();
    for (size_t k = 0; k < G_N_ELEMENTS(base); k++)
        g_ptr_array_add(argv, (char *)base[k]);
    if (c->server_cert != NULL) {
        const char *tls[] = {"--cert-file", c->server_cert,
                             "--key-file", c->server_key,
                             "--trusted-ca-file", c->ca_file,
                             "--client-cert-auth"};
        for (size_t k = 0; k < G_N_ELEMENTS(tls); k++)
            g_ptr_array_add(argv, (char *)tls[k]);
    }
    for (char **a = c->args; a != NULL && *a != NULL; a++)
        g_ptr_array_add(argv, *a);
    g_ptr_array_add(argv, NULL);
    int fd = open(m->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    bool ok = fd >= 0;
    if (!ok)
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "cannot open %s: %s", m->log_path, g_strerror(errno));
    if (ok)
        ok = g_spawn_async_with_fds(NULL, (char **)argv->pdata, NULL,
                                    G_SPAWN_DO_NOT_REAP_CHILD, child_setup,
                                    NULL, &m->pid, -1, fd, fd, error);
    if (fd >= 0)
        close(fd);
    g_ptr_array_unref(argv);
    g_free(client);
    g_free(peer);
    g_free(cluster);
    if (!ok)
        m->pid = 0;
    return ok;
}

static char *read_logs(const etcd_cluster *c)
{
    GString *s = g_string_new(NULL);
    for (int i = 0; i < c->n; i++) {
        char *text = NULL;
        gsize len = 0;
        if (g_file_get_contents(c->m[i].log_path, &text, &len, NULL))
            g_string_append_printf(s, "\n--- %s log (last 2000 bytes) ---\n%s",
                                   c->m[i].name,
                                   len > 2000 ? text + len - 2000 : text);
        g_free(text);
    }
    return g_string_free(s, FALSE);
}

/* Whether the member process is still there (reaped if it exited). */
static bool member_running(etcd_member *m)
{
    if (m->pid == 0)
        return false;
    int status;
    pid_t r = waitpid(m->pid, &status, WNOHANG);
    if (r == m->pid) {
        g_spawn_close_pid(m->pid);
        m->pid = 0;
        return false;
    }
    return true;
}

static void rm_rf(const char *path);

/* A child that waits for the end of the pipe (this program closing it, or
 * dying), gives the members a moment to exit, and removes @root. */
static void start_janitor(etcd_cluster *c)
{
    int fds[2];
    c->janitor_fd = -1;
    if (pipe2(fds, O_CLOEXEC) != 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[1]);
        char b;
        while (read(fds[0], &b, 1) != 0 && errno == EINTR) {
        }
        for (int i = 0; i < 2 && g_file_test(c->root, G_FILE_TEST_EXISTS); i++) {
            sleep(1);
            rm_rf(c->root);
        }
        _exit(0);
    }
    close(fds[0]);
    if (pid < 0) {
        close(fds[1]);
        return;
    }
    c->janitor = pid;
    c->janitor_fd = fds[1];
}

bool etcd_cluster_start(etcd_cluster *c, int n, GError **error)
{
    return etcd_cluster_start_with(c, n, NULL, error);
}

void etcd_cluster_start_or_exit(etcd_cluster *c, int n)
{
    GError *err = NULL;
    if (etcd_cluster_start(c, n, &err))
        return;
    fprintf(stderr, "cannot start an etcd cluster of %d member%s: %s\n", n,
            n == 1 ? "" : "s", err->message);
    g_error_free(err);
    etcd_cluster_destroy(c);
    exit(1);
}

bool etcd_cluster_start_with(etcd_cluster *c, int n,
                             const etcd_cluster_options *opts,
                             GError **error)
{
    memset(c, 0, sizeof *c);
    c->janitor_fd = -1;
    if (opts != NULL) {
        c->args = g_strdupv((char **)opts->args);
        c->ca_file = g_strdup(opts->ca_file);
        c->server_cert = g_strdup(opts->server_cert);
        c->server_key = g_strdup(opts->server_key);
        c->client_cert = g_strdup(opts->client_cert);
        c->client_key = g_strdup(opts->client_key);
    }
    c->bin = g_strdup(etcd_harness_require());
    c->n = n;
    c->root = g_dir_make_tmp("procreg-etcd-XXXXXX", error);
    if (c->root == NULL)
        return false;
    start_janitor(c);
    c->token = etcd_random_tag();
    for (int i = 0; i < n; i++) {
        etcd_member *m = &c->m[i];
        g_snprintf(m->name, sizeof m->name, "m%d", i + 1);
        m->client_port = etcd_free_port();
        m->peer_port = etcd_free_port();
        while (m->peer_port == m->client_port)
            m->peer_port = etcd_free_port();
        m->data_dir = g_build_filename(c->root, m->name, NULL);
        m->log_path = g_strdup_printf("%s/%s.log", c->root, m->name);
        if (m->client_port <= 0 || m->peer_port <= 0) {
            g_set_error(error, HARNESS_ERROR, 1,
                        "no free port on 127.0.0.1");
            return false;
        }
    }
    for (int i = 0; i < n; i++)
        if (!spawn_member(c, i, error))
            return false;
    gint64 until = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    while (g_get_monotonic_time() < until) {
        bool all = true;
        for (int i = 0; i < n; i++) {
            if (!member_running(&c->m[i])) {
                char *logs = read_logs(c);
                g_set_error(error, HARNESS_ERROR, 1,
                            "etcd member %s exited at start:%s", c->m[i].name,
                            logs);
                g_free(logs);
                return false;
            }
            all = all && etcd_member_healthy(c, i);
        }
        if (all)
            return true;
        g_usleep(20000);
    }
    char *logs = read_logs(c);
    g_set_error(error, HARNESS_ERROR, 2,
                "etcd did not become healthy within 20 s:%s", logs);
    g_free(logs);
    return false;
}

void etcd_member_stop(etcd_cluster *c, int i)
{
    etcd_member *m = &c->m[i];
    if (m->pid == 0)
        return;
    kill(m->pid, SIGTERM);
    kill(m->pid, SIGCONT); /* a frozen member acts on SIGTERM only then */
    gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    int status;
    for (;;) {
        pid_t r = waitpid(m->pid, &status, WNOHANG);
        if (r == m->pid || (r < 0 && errno != EINTR))
            break;
        if (g_get_monotonic_time() > until) {
            kill(m->pid, SIGKILL);
            waitpid(m->pid, &status, 0);
            break;
        }
        g_usleep(5000);
    }
    g_spawn_close_pid(m->pid);
    m->pid = 0;
}

bool etcd_member_restart(etcd_cluster *c, int i, GError **error)
{
    etcd_member_stop(c, i);
    if (!spawn_member(c, i, error))
        return false;
    /* Wait until its client port accepts connections. */
    gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    char *url = g_strdup_printf("%s://127.0.0.1:%d/version", scheme(c),
                                c->m[i].client_port);
    bool up = false;
    while (!up && g_get_monotonic_time() < until) {
        char *r = http_with(url, NULL, 500, c, NULL);
        up = r != NULL;
        g_free(r);
        if (!up) {
            if (!member_running(&c->m[i]))
                break;
            g_usleep(20000);
        }
    }
    g_free(url);
    if (!up) {
        char *logs = read_logs(c);
        g_set_error(error, HARNESS_ERROR, 1,
                    "etcd member %s did not come back:%s", c->m[i].name, logs);
        g_free(logs);
    }
    return up;
}

void etcd_member_kill(etcd_cluster *c, int i)
{
    etcd_member *m = &c->m[i];
    if (m->pid == 0)
        return;
    kill(m->pid, SIGKILL);
    int status;
    while (waitpid(m->pid, &status, 0) < 0 && errno == EINTR) {
    }
    g_spawn_close_pid(m->pid);
    m->pid = 0;
}

void etcd_member_pause(etcd_cluster *c, int i)
{
    if (c->m[i].pid != 0)
        kill(c->m[i].pid, SIGSTOP);
}

void etcd_member_resume(etcd_cluster *c, int i)
{
    if (c->m[i].pid != 0)
        kill(c->m[i].pid, SIGCONT);
}

/* The decimal value of "@name":"..." in @json, or 0. */
static guint64 json_id(const char *json, const char *name)
{
    char *needle = g_strdup_printf("\"%s\":\"", name);
    const char *p = json ? strstr(json, needle) : NULL;
    guint64 v = p ? g_ascii_strtoull(p + strlen(needle), NULL, 10) : 0;
    g_free(needle);
    return v;
}

int etcd_cluster_leader(const etcd_cluster *c)
{
    guint64 leader = 0, ids[ETCD_HARNESS_MAX] = {0};
    for (int i = 0; i < c->n; i++) {
        char *url = etcd_member_url(c, i);
        char *r = etcd_post(url, "/v3/maintenance/status", "{}");
        ids[i] = json_id(r, "member_id");
        if (leader == 0)
            leader = json_id(r, "leader");
        g_free(r);
        g_free(url);
    }
    for (int i = 0; i < c->n; i++)
        if (leader != 0 && ids[i] == leader)
            return i;
    return -1;
}

static void rm_rf(const char *path)
{
    if (g_file_test(path, G_FILE_TEST_IS_DIR) &&
        !g_file_test(path, G_FILE_TEST_IS_SYMLINK)) {
        GDir *d = g_dir_open(path, 0, NULL);
        if (d != NULL) {
            const char *name;
            while ((name = g_dir_read_name(d)) != NULL) {
                char *p = g_build_filename(path, name, NULL);
                rm_rf(p);
                g_free(p);
            }
            g_dir_close(d);
        }
        g_rmdir(path);
    } else {
        g_unlink(path);
    }
}

void etcd_cluster_destroy(etcd_cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        etcd_member_stop(c, i);
        g_free(c->m[i].data_dir);
        g_free(c->m[i].log_path);
    }
    if (c->root != NULL)
        rm_rf(c->root);
    if (c->janitor_fd >= 0)
        close(c->janitor_fd);
    if (c->janitor > 0) {
        int status;
        while (waitpid(c->janitor, &status, 0) < 0 && errno == EINTR) {
        }
    }
    g_free(c->root);
    g_free(c->token);
    g_free(c->bin);
    g_strfreev(c->args);
    g_free(c->ca_file);
    g_free(c->server_cert);
    g_free(c->server_key);
    g_free(c->client_cert);
    g_free(c->client_key);
    memset(c, 0, sizeof *c);
}
