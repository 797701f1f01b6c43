/*
 * Running the procreg program as a user runs it, for the tests of
 * tests/tools: each call a separate process on a private LMDB file.
 */
#ifndef PROCREG_TESTS_CLI_HARNESS_H
#define PROCREG_TESTS_CLI_HARNESS_H

#include <glib.h>

/* The procreg program under test (argv[1] of the test programs). */
extern char *cli_path;

/* A private directory and an LMDB spec in it, per test. */
typedef struct {
    char *dir;
    char *spec; /* --backend value */
} Fixture;

void fx_setup(Fixture *f, gconstpointer data);
void fx_teardown(Fixture *f, gconstpointer data);
void rmtree(const char *dir);

/* The environment for the program: no PROCREG_BACKEND from outside; with
 * @runtime_dir as XDG_RUNTIME_DIR. */
char **child_env(const char *runtime_dir);
/* Run procreg with NULL-terminated arguments; its exit status (128 + N
 * for signal N), its output in *out and *err (g_free them; either may be
 * NULL). */
int run_env(char **env, char **out, char **err, const char *first,
            va_list ap);
int run(char **out, char **err, const char *first, ...) G_GNUC_NULL_TERMINATED;

#define ASSERT_HAS(hay, needle)                                               \
    do {                                                                      \
        const char *h_ = (hay), *n_ = (needle);                               \
        if (h_ == NULL || strstr(h_, n_) == NULL)                             \
            g_error("'%s' not in:\n%s", n_, h_ ? h_ : "(null)");              \
    } while (0)

#define ASSERT_LACKS(hay, needle)                                             \
    do {                                                                      \
        const char *h_ = (hay), *n_ = (needle);                               \
        if (h_ != NULL && strstr(h_, n_) != NULL)                             \
            g_error("'%s' unexpectedly in:\n%s", n_, h_);                     \
    } while (0)

char *self_pid(void);

/* A background procreg; its stdout and stderr as fds. */
typedef struct {
    GPid pid;
    int out, err;
} bg;

bg start(const char *first, ...) G_GNUC_NULL_TERMINATED;
/* One line from @fd within @ms (NULL on timeout or EOF). */
char *read_line(int fd, int ms);
/* Send @sig (0: none), wait for it; its exit status as run() gives. */
int finish(bg *b, int sig);

#endif
