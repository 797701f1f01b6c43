/*
 * The command line of the procreg program (tools/procreg.c): the input is
 * its arguments, separated by NUL bytes, and the whole program runs in
 * this process on each (its main() is compiled in here under another
 * name, so its option parser, metadata parser (KEY=VALUE, KEY:=GVariant
 * text), pid and timeout parsing and every command run as shipped).
 *
 * Expectations: the program returns one of its documented exit statuses
 * (0 to 7) and never crashes or aborts.  To stay in memory and bounded,
 * the registry is ghash (PROCREG_BACKEND=ghash), and inputs naming lmdb
 * or etcd (files, network), the commands that run until a signal (watch,
 * wait, register --hold, metrics) and lock (it runs a program) are
 * skipped.
 *
 * Until tools/ exposes its parser as a function (requested in
 * /work/notes/requests/reliability-tools.md), including the program's
 * source is how the parser is reached without running a process per
 * input.
 */
int procreg_cli_main(int argc, char **argv);
#define main procreg_cli_main
#include "../../../tools/procreg.c"
#undef main

#include "fuzz-common.h"

#include <fcntl.h>

#define MAX_ARGS 16

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_init_common();
    g_setenv("PROCREG_BACKEND", "ghash", TRUE);
    return 0;
}

static bool skipped(const char *a)
{
    return strstr(a, "lmdb") != NULL || strstr(a, "etcd") != NULL ||
           strcmp(a, "watch") == 0 || strcmp(a, "wait") == 0 ||
           strcmp(a, "lock") == 0 || strcmp(a, "metrics") == 0 ||
           strncmp(a, "--hold", 6) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_strndup(data, size);
    char *args[MAX_ARGS + 2];
    int n = 0;
    args[n++] = (char *)"procreg";
    for (size_t off = 0; off <= size && n <= MAX_ARGS;) {
        char *a = buf + off;
        if (skipped(a)) {
            g_free(buf);
            return 0;
        }
        args[n++] = a;
        off += strlen(a) + 1;
    }
    args[n] = NULL;

    /* The program prints; keep it out of the fuzzer's and the test's
     * output. */
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    FUZZ_CHECK(saved_out >= 0 && saved_err >= 0 && devnull >= 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    int status = procreg_cli_main(n, args);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    close(devnull);
    if (status < 0 || status > 7) {
        fprintf(stderr, "procreg exited with %d\n", status);
        abort();
    }
    g_free(buf);
    return 0;
}
