/*
 * The history test program's setups (history-run): threads of one
 * process over an in-process backend (run.c), processes on one lmdb file
 * or on a three-member etcd cluster with faults injected (procs.c).  Each
 * records one history file per client in a private directory and checks
 * them together at the end.
 */
#ifndef PROCREG_TESTS_HISTORY_RUN_H
#define PROCREG_TESTS_HISTORY_RUN_H

#include "record.h"

/* Exit codes: 0 consistent, 1 a violation (the report says which), 77
 * skipped (no etcd), 99 the test itself could not run. */
enum { RUN_OK = 0, RUN_VIOLATION = 1, RUN_SKIP = 77, RUN_ERROR = 99 };

typedef struct {
    char *dir;       /* private directory for the histories and files */
    double seconds;  /* how long clients run, at most */
    guint64 ops;     /* operations per client, at most (0: no limit) */
    int kills;       /* threads: helper owners killed per run, about */
    int clients;
    int keys;
    guint32 seed;
    bool keep;       /* keep the directory (and say where) */
    char *self;      /* this program, re-executed for children */
    const char *etcd_bin;
    GString *report; /* the violations found, printed at the end */
} run_opts;

/* Load every "*.log" in @dir, check it, print the figures, add any
 * violation to o->report; RUN_OK or RUN_VIOLATION. */
int run_check_dir(const run_opts *o, const hist_check_opts *check,
                  const char *what);

/* Start this program again with @args (NULL-terminated) after it; its
 * stdin and stdout are pipes (@in, @out; NULL: inherited). */
GPid run_spawn_self(const run_opts *o, const char *const *args, int *in,
                    int *out, GError **error);
/* SIGKILL @pid and reap it. */
void run_kill(GPid pid);

/* Wait up to @timeout_ms until a list of @ns through @reg names none of
 * the owners in @dead ("PID:START" strings); false with a message. */
bool run_wait_reaped(procreg *reg, const char *ns, GHashTable *dead,
                     int timeout_ms, GString *report);

int run_threads(const run_opts *o, const char *spec, int helpers);
int run_lmdb(const run_opts *o);
int run_etcd(const run_opts *o);
/* The child side of run_lmdb/run_etcd: "--client ID SPEC". */
int run_client_main(const run_opts *o, int id, const char *spec);
/* Holds an lmdb write transaction on @path until killed. */
int run_txn_holder_main(const char *path);

#define RUN_NS "history"
#define RUN_DRAIN_NS "history-end"

#endif
