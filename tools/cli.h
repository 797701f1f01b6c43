/*
 * What the files of the procreg command share: the parsed command line,
 * exit codes, errors and entry output (procreg.c), for the commands that
 * live in their own file (coord.c: lock, select, namespace settings).
 */
#ifndef PROCREG_TOOLS_CLI_H
#define PROCREG_TOOLS_CLI_H

#include <procreg/procreg.h>

#include <stdbool.h>

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
    bool hold;
    bool replace;
    bool force;
    const char *ns_opt;
    const char *timeout;
    bool prometheus;
    bool count;      /* select --count */
    bool delete_key; /* meta --delete */
    GPtrArray *args; /* positionals after the command */
    const char *command;
} cli;

/* Print @error (or the code's description; --json: as JSON on stderr),
 * free it, and return the exit code for @rc. */
int fail(int rc, GError *error);
/* Print a usage problem; returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* Whether the positionals number @min..@max; else a usage error showing
 * @form. */
bool want_args(const cli *c, guint min, guint max, const char *form);
/* Positional @i, or NULL. */
const char *arg(const cli *c, guint i);
void print_entry(const cli *c, const char *ns, const char *name,
                 const procreg_entry *e);
void print_entries(const cli *c, procreg_entry *all, size_t n);
/* A GVariant as JSON (dictionaries with string keys become objects). */
void json_variant(GString *o, GVariant *v);
/* The --meta options as an a{sv} (NULL when none); false (a usage error
 * printed) when one is malformed. */
bool build_meta(const cli *c, GVariant **out);
/* --timeout SECONDS as milliseconds (-1 when absent); false (a usage
 * error printed) when malformed. */
bool timeout_ms_of(const cli *c, int *timeout_ms);

/* coord.c */
int cmd_lock(procreg *reg, const cli *c);
int cmd_select(procreg *reg, const cli *c);
int cmd_meta(procreg *reg, const cli *c);

#endif
