/*
 * What the files of the procreg program share: the parsed command line,
 * exit codes, the parsing, error and main-loop helpers of procreg.c, the
 * output helpers of output.c, and the commands that procreg.c's table
 * runs: entries (entries-cmd.c), the registry as a whole (admin-cmd.c),
 * groups (groups-cmd.c), coordination (coord.c: lock, select, namespace
 * settings), watch and wait (watch-cmd.c).
 */
#ifndef PROCREG_TOOLS_CLI_H
#define PROCREG_TOOLS_CLI_H

#include <procreg/procreg.h>

#include <stdint.h>

/* Exit codes (also in --help). */
enum {
    EXIT_OK = 0,
    EXIT_OTHER = 1,     /* any other failure */
    EXIT_USAGE = 2,     /* invalid input: arguments, names, metadata, spec */
    EXIT_NOTFOUND = 3,  /* no such entry */
    EXIT_EXISTS = 4,    /* register: the name is taken */
    EXIT_TIMEOUT = 5,   /* wait: the timeout passed */
    EXIT_BACKEND = 6,   /* the backend failed (I/O, damaged file, full);
                           health: failed */
    EXIT_DEGRADED = 7,  /* health: degraded */
    EXIT_PERM = 8,      /* another process owns the entry (see --force) */
};

/* One metadata option as given: --meta or --meta-string, its text. */
typedef struct {
    const char *text;
    bool string;
} meta_opt;

typedef struct {
    const char *backend;
    bool json;
    /* command options */
    GArray *meta; /* meta_opt: --meta and --meta-string, in order */
    const char *pid;
    const char *member; /* leave --member */
    bool hold;
    bool replace;
    bool force;
    const char *ns_opt;
    const char *timeout;
    const char *from; /* watch --from */
    bool prometheus;
    const char *listen; /* metrics --listen */
    bool count;         /* select --count */
    bool delete_key;    /* meta --delete */
    GPtrArray *args; /* positionals after the command */
    const char *command;
} cli;

/* ---- procreg.c ---- */

/* Print @error (or the code's description; --json: as JSON on stderr),
 * free it, and return the exit code for @rc. */
int fail(int rc, GError *error);
/* Print a usage message; returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* Whether the command has @min to @max arguments (else usage, false). */
bool want_args(const cli *c, guint min, guint max, const char *form);
/* Argument @i, or NULL. */
const char *arg(const cli *c, guint i);
/* Split KEY=VALUE / KEY:=TEXT into *@key (g_free) and *@value (a new
 * reference), typed as @opt says; false (message printed) when
 * malformed. */
bool parse_pair(const meta_opt *opt, char **key, GVariant **value);
/* The --meta options as an a{sv} (NULL when none); false when malformed. */
bool build_meta(const cli *c, GVariant **out);
/* --timeout SECONDS as milliseconds (-1 when absent); false (a usage
 * error printed) when malformed. */
bool timeout_ms_of(const cli *c, int *timeout_ms);
/* Catch SIGINT, SIGTERM and SIGHUP from now on (a command that says it
 * may be interrupted calls this first). */
void catch_signals(void);
/* Run the main loop until SIGINT, SIGTERM or SIGHUP (in loop_signal). */
void run_until_signal(void);
/* The same, or until @owner exits (loop_signal then 0). */
void run_until_signal_or_exit(const procreg_owner *owner);
extern int loop_signal;

/* ---- output.c ---- */

void print_entry(const cli *c, const char *ns, const char *name,
                 const procreg_entry *e);
void print_entries(const cli *c, procreg_entry *all, size_t n);
/* µs since the epoch as ISO 8601 (g_free it). */
char *time_text(int64_t us);
/* JSON text of a string, and of a GVariant, appended to @o. */
void json_string(GString *o, const char *s);
void json_variant(GString *o, GVariant *v);
/* JSON object of entry @e of (@ns, @name), appended to @o. */
void json_entry(GString *o, const char *ns, const char *name,
                const procreg_entry *e);

/* ---- entries-cmd.c ---- */

int cmd_register(procreg *reg, const cli *c);
int cmd_lookup(procreg *reg, const cli *c);
int cmd_unregister(procreg *reg, const cli *c);
int cmd_update(procreg *reg, const cli *c);
int cmd_list(procreg *reg, const cli *c);
int cmd_find(procreg *reg, const cli *c);

/* ---- admin-cmd.c ---- */

int cmd_namespaces(procreg *reg, const cli *c);
int cmd_drop(procreg *reg, const cli *c);
int cmd_stats(procreg *reg, const cli *c);
int cmd_health(procreg *reg, const cli *c);
#ifdef PROCREG_CLI_METRICS
int cmd_metrics(procreg *reg, const cli *c);
#endif
/* Needs no registry: main() runs it before opening one. */
int cmd_backends(const cli *c);

/* ---- groups-cmd.c ---- */

int cli_join(procreg *reg, const cli *c);
int cli_leave(procreg *reg, const cli *c);
int cli_members(procreg *reg, const cli *c);
int cli_groups(procreg *reg, const cli *c);

/* ---- watch-cmd.c ---- */

int cmd_watch(procreg *reg, const cli *c);
int cmd_wait(procreg *reg, const cli *c);

/* ---- coord.c ---- */

int cmd_lock(procreg *reg, const cli *c);
int cmd_select(procreg *reg, const cli *c);
int cmd_meta(procreg *reg, const cli *c);

#endif
