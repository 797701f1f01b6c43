/*
 * Runs real etcd servers for the tests: members listen on 127.0.0.1 only,
 * on free ports, with data in a fresh temporary directory; each is
 * stopped by pid (SIGTERM, then waitpid) and the directory is removed at
 * the end.  So that a test that aborts leaves nothing behind either, each
 * member gets PR_SET_PDEATHSIG (SIGKILL: a frozen member ignores
 * anything else) and a small janitor process removes the directory once
 * this program is gone.
 *
 * When no etcd binary is found, etcd_harness_require() prints why and
 * exits with 77, which meson counts as a skipped test.
 */
#ifndef PROCREG_TESTS_ETCD_HARNESS_H
#define PROCREG_TESTS_ETCD_HARNESS_H

#include <glib.h>
#include <stdbool.h>

#define ETCD_HARNESS_MAX 3

typedef struct {
    char name[16];
    int client_port;
    int peer_port;
    GPid pid;       /* 0 while stopped */
    char *data_dir;
    char *log_path;
} etcd_member;

/* How the members run, beyond the defaults (all may be NULL). */
typedef struct {
    /* extra etcd flags for every member, NULL-terminated */
    const char *const *args;
    /* client TLS: the members serve https:// with this certificate and
     * key, and ask clients for a certificate signed by ca_file; the
     * harness talks to them with client_cert and client_key */
    const char *ca_file, *server_cert, *server_key;
    const char *client_cert, *client_key;
} etcd_cluster_options;

typedef struct {
    char *bin;
    char *root; /* temporary directory */
    char **args;   /* etcd_cluster_options.args, copied */
    char *ca_file, *server_cert, *server_key, *client_cert, *client_key;
    char *token;
    GPid janitor;   /* removes root if this program dies first */
    int janitor_fd; /* its pipe; closing it tells it we are done */
    int n;
    etcd_member m[ETCD_HARNESS_MAX];
} etcd_cluster;

/* The etcd binary ($ETCD_BIN, else etcd in PATH); exits 77 with a
 * message when there is none. */
const char *etcd_harness_require(void);

/* First thing in main(): run with G_SLICE=always-malloc (the program
 * executes itself again with it when it is not set).  glib 2.74's slice
 * allocator hands memory between threads under futex locks that
 * ThreadSanitizer cannot see, which it reports as races wherever backend
 * threads allocate GVariants or GBytes; plain malloc it understands.  glib
 * reads G_SLICE once, possibly before main(), hence the re-execution.
 * Child processes (the compliance suite) inherit it. */
void etcd_harness_env(char **argv);

/* Take --etcd-bin=PATH out of @argv (it sets $ETCD_BIN). */
void etcd_harness_args(int *argc, char **argv);

/* Start @n (1 to 3) members and wait until the cluster answers /health
 * (up to 20 s).  false with @error on failure (the logs are in it). */
bool etcd_cluster_start(etcd_cluster *c, int n, GError **error);
/* The same with @opts (copied). */
bool etcd_cluster_start_with(etcd_cluster *c, int n,
                             const etcd_cluster_options *opts,
                             GError **error);
/* For main(): start @n members as etcd_cluster_start() does (exit 77
 * without an etcd binary); when they do not start, say why and exit 1. */
void etcd_cluster_start_or_exit(etcd_cluster *c, int n);
/* Stop member @i: SIGTERM, then waitpid (SIGKILL after 10 s). */
void etcd_member_stop(etcd_cluster *c, int i);
/* Kill member @i (SIGKILL, then waitpid): a crash. */
void etcd_member_kill(etcd_cluster *c, int i);
/* Start member @i again on its ports and data; returns once the process
 * listens (it may not have a leader yet). */
bool etcd_member_restart(etcd_cluster *c, int i, GError **error);
/* Freeze member @i (SIGSTOP) and let it go on (SIGCONT): a member that
 * hangs keeps its connections open and answers nothing. */
void etcd_member_pause(etcd_cluster *c, int i);
void etcd_member_resume(etcd_cluster *c, int i);
/* The index of the member that leads now (asked of every member in
 * turn), or -1. */
int etcd_cluster_leader(const etcd_cluster *c);
/* Stop every member and remove the directory. */
void etcd_cluster_destroy(etcd_cluster *c);

/* "http://127.0.0.1:P" of member @i (https:// with TLS); g_free it. */
char *etcd_member_url(const etcd_cluster *c, int i);
/* Every member's URL, comma separated; g_free it. */
char *etcd_cluster_endpoints(const etcd_cluster *c);
/* Whether member @i's /health says "true" now. */
bool etcd_member_healthy(const etcd_cluster *c, int i);

/* POST a raw JSON @body to @path on @url; the reply body, or NULL.
 * g_free it. */
char *etcd_post(const char *url, const char *path, const char *body);
/* The same on member @i of @c, with its TLS files and @token (an etcd
 * authentication token, or NULL). */
char *etcd_member_post(const etcd_cluster *c, int i, const char *path,
                       const char *body, const char *token);

/* A free TCP port on 127.0.0.1 (bind port 0, read it, close): nobody
 * listens there, until someone takes it. */
int etcd_free_port(void);

/* A random string of 12 hex digits, for unique prefixes. */
char *etcd_random_tag(void);

#endif
