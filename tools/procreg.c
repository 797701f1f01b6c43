/*
 * procreg: the command-line face of the registry, for operators and shell
 * scripts.  By default it opens the host's shared LMDB registry, so two
 * terminals see the same names.
 *
 * This file owns main(): the usage text, the parsing of the command line
 * and of --meta values, errors and exit codes, the main loop that waits
 * for a signal, and the table of commands.  The commands live in
 * entries-cmd.c, admin-cmd.c, groups-cmd.c, watch-cmd.c and coord.c, the
 * output helpers in output.c.
 */
#include "cli.h"

#include <errno.h>
#include <glib-unix.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char usage_text[] =
    "Usage: procreg [--backend SPEC] [--json] COMMAND [ARGUMENTS]\n"
    "\n"
    "Register, find and watch named services and the processes that own\n"
    "them.\n"
    "\n"
    "Commands:\n"
    "  register NS NAME (--pid PID [--hold] | --hold) [--meta KEY=VALUE ...]\n"
    "        Register NAME in namespace NS.  With --pid the entry belongs to\n"
    "        process PID; with --hold alone this command stays running as the\n"
    "        owner until interrupted (SIGINT/SIGTERM/SIGHUP unregister it; if\n"
    "        it is killed, the entry vanishes with it).  On a backend whose\n"
    "        entries live on the lease of the registry that made them (etcd),\n"
    "        --pid needs --hold: this command then stays running while PID\n"
    "        lives, and ends when PID does (or unregisters when interrupted).\n"
    "  lookup NS NAME                  the owner and metadata of NAME\n"
    "  unregister NS NAME [--force]    remove NAME\n"
    "  update NS NAME [--meta KEY=VALUE ...] [--replace] [--force]\n"
    "        Merge the given metadata into NAME's (or replace all of it).\n"
    "        Only the owner process changes an entry: this command is not it\n"
    "        (with --hold or --pid the owner is another process), so it\n"
    "        needs --force, which the event records (reason forced).\n"
    "  list [NS]                       entries of NS, or of every namespace\n"
    "  find KEY=VALUE [--ns NS]        entries whose metadata KEY is VALUE\n"
    "  select FILTER [--ns NS] [--count]\n"
    "        Entries that match FILTER, e.g. 'role == \"api\" and port >= 8000'\n"
    "        or 'name glob \"web-*\" and not exists draining' (terms on name,\n"
    "        pid and metadata keys; and, or, not, parentheses: procreg.h\n"
    "        has the rules); --count prints how many.\n"
    "  watch [NS [NAME]] [--from POSITION]\n"
    "        Print changes until interrupted, each with its position (@N);\n"
    "        with --from, first those after POSITION (a restarted watch\n"
    "        resumes where it stopped; exit 1 when that history is gone).\n"
    "  wait NS NAME [--timeout SECONDS]\n"
    "        Block until NAME is registered (no limit without --timeout).\n"
    "  lock NS NAME [--timeout SECONDS] -- COMMAND [ARG...]\n"
    "        Run COMMAND holding the lock NAME of namespace NS, like flock(1)\n"
    "        but across the processes of the registry (the hosts, on etcd);\n"
    "        waits while another holds it (no limit without --timeout).\n"
    "        COMMAND is killed if this command is; SIGINT, SIGTERM and\n"
    "        SIGHUP are passed on to it.  The lock is released when COMMAND\n"
    "        ends, and its exit status is this command's.\n"
    "  meta NS [KEY [--delete]] [--meta KEY=VALUE ...]\n"
    "        The settings of namespace NS: all of them, KEY's value, or (with\n"
    "        --meta) set them; --delete removes KEY.  Settings belong to no\n"
    "        process: they stay after this command exits (on etcd until its\n"
    "        lease runs out: doc/coordination.md).\n"
    "  namespaces                      namespaces and their entry counts\n"
    "  drop-namespace NS               remove every entry of NS (and every\n"
    "                                  member of its groups)\n"
    "  join NS GROUP (--pid PID | --hold) [--meta KEY=VALUE ...]\n"
    "        Add a member to GROUP (many processes, or one several times,\n"
    "        may join a group); --pid and --hold as for register.\n"
    "  leave NS GROUP (--member ID | --pid PID) [--force]\n"
    "        Remove member ID, or every member of process PID, from GROUP.\n"
    "        Only a member's owner removes it: this command needs --force.\n"
    "  members NS GROUP                the members of GROUP, in join order\n"
    "  groups [NS]                     groups (of NS) and their sizes\n"
    "  stats [--prometheus | --json]   the registry's figures (entries,\n"
    "        owners, namespaces: everyone's), then this process's own\n"
    "        counters (--prometheus: the library's metrics)\n"
    "  health                          check the backend\n"
    "  metrics --listen ADDRESS:PORT   serve the registry's figures over HTTP\n"
    "        (GET /metrics, Prometheus text format) until interrupted; port 0\n"
    "        picks a free port.  The URL is printed first.\n"
    "  backends                        the backends this build has\n"
    "\n"
    "Options:\n"
    "  -b, --backend SPEC  the registry to open (default: $PROCREG_BACKEND,\n"
    "                      else 'lmdb', the host's shared registry file at\n"
    "                      $XDG_RUNTIME_DIR/procreg/registry.mdb)\n"
    "  --json              machine-readable output (one JSON value; watch:\n"
    "                      one object per line)\n"
    "  -h, --help          this text\n"
    "  --version           the procreg version\n"
    "\n"
    "Metadata values (register, update, join, meta):\n"
    "  --meta KEY=VALUE         true/false is a boolean, an integer an int64,\n"
    "                           a number with a fraction or exponent a double,\n"
    "                           anything else a string\n"
    "  --meta-string KEY=VALUE  VALUE as a string, whatever it looks like\n"
    "                           (id=0042 stays \"0042\")\n"
    "  --meta KEY:=TEXT         TEXT as a GVariant (port:='uint16 8080')\n"
    "\n"
    "Exit status:\n"
    "  0  success (health: ok)\n"
    "  1  another failure\n"
    "  2  invalid input: arguments, names, metadata, pid, backend spec\n"
    "  3  not found\n"
    "  4  already registered (the holder is printed)\n"
    "  5  timed out (wait, lock)\n"
    "  6  backend error: I/O, damaged or full registry (health: failed)\n"
    "  7  health: degraded\n"
    "  8  the entry belongs to another process (unregister, update: --force;\n"
    "     leave: the member)\n"
    "  lock: COMMAND's exit status (128 + N when killed by signal N; 127\n"
    "  when it cannot be run), or one of the above before it runs\n";


/* ------------------------------------------------------------------------ */
/* Errors and exit codes                                                    */

static int exit_code(int rc)
{
    switch (rc) {
    case 0: return EXIT_OK;
    case PROCREG_EINVAL:
    case PROCREG_ENOTALIVE:
    case PROCREG_EUNKNOWN_BACKEND: return EXIT_USAGE;
    case PROCREG_ENOTFOUND: return EXIT_NOTFOUND;
    case PROCREG_EEXISTS: return EXIT_EXISTS;
    case PROCREG_ETIMEDOUT: return EXIT_TIMEOUT;
    case PROCREG_EBACKEND:
    case PROCREG_EFULL: return EXIT_BACKEND;
    case PROCREG_EPERM: return EXIT_PERM;
    default: return EXIT_OTHER;
    }
}

/* --json: results, and errors too (one object on stderr). */
static bool json_output;

/* An error as JSON: {"error":{"code","name","message","details"}}, with
 * the facts the library gives as data (procreg_error_get_details()). */
static void json_error(int rc, const char *message, GError *error)
{
    GString *o = g_string_new("{\"error\":{\"code\":");
    const char *name = procreg_error_name(rc);
    g_string_append_printf(o, "%d,\"name\":", rc);
    json_string(o, name ? name : "PROCREG_ERROR_FAILED");
    g_string_append(o, ",\"message\":");
    json_string(o, message);
    g_string_append(o, ",\"details\":{");
    const procreg_error_details *d = procreg_error_get_details(error);
    const char *sep = "";
    if (d != NULL && d->alternatives != NULL) {
        g_string_append(o, "\"alternatives\":[");
        for (char **a = d->alternatives; *a; a++) {
            if (a != d->alternatives)
                g_string_append_c(o, ',');
            json_string(o, *a);
        }
        g_string_append_c(o, ']');
        sep = ",";
    }
    if (d != NULL && d->entry != NULL) {
        g_string_append_printf(o, "%s\"entry\":", sep);
        json_entry(o, d->entry->ns, d->entry->name, d->entry);
        sep = ",";
    }
    if (d != NULL && d->position >= 0)
        g_string_append_printf(o, "%s\"position\":%d", sep, d->position);
    g_string_append(o, "}}}");
    fprintf(stderr, "%s\n", o->str);
    g_string_free(o, TRUE);
}

/* Print @error (or the code's description) and return the exit code. */
int fail(int rc, GError *error)
{
    const char *message = error != NULL ? error->message : procreg_strerror(rc);
    if (json_output)
        json_error(rc, message, error);
    else
        fprintf(stderr, "procreg: %s\n", message);
    if (error != NULL)
        g_error_free(error);
    return exit_code(rc);
}

int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (json_output)
        json_error(PROCREG_EINVAL, msg, NULL);
    else
        fprintf(stderr, "procreg: %s\n(see procreg --help)\n", msg);
    g_free(msg);
    return EXIT_USAGE;
}

/* ------------------------------------------------------------------------ */
/* Parsing                                                                  */

/* How the text of one --meta value becomes a GVariant. */
typedef enum {
    META_GUESS,  /* KEY=VALUE: boolean, int64, double, else string */
    META_STRING, /* --meta-string KEY=VALUE */
    META_TYPED,  /* KEY:=TEXT: GVariant text */
} meta_kind;


/* A decimal number with a fraction or an exponent ("1.5", "2e3"), finite;
 * the C locale's '.', whatever the user's locale. */
static bool parse_double(const char *text, double *out)
{
    if (strpbrk(text, ".eE") == NULL || strpbrk(text, "xXnN") != NULL)
        return false; /* hex floats, inf and nan are not what users mean */
    char *end = NULL;
    errno = 0;
    *out = g_ascii_strtod(text, &end);
    return end != text && *end == '\0' && errno == 0 && isfinite(*out);
}

static GVariant *parse_value(const char *text, meta_kind kind,
                             GError **error)
{
    if (kind == META_TYPED)
        return g_variant_parse(NULL, text, NULL, NULL, error);
    if (kind == META_STRING)
        return g_variant_new_string(text);
    if (strcmp(text, "true") == 0 || strcmp(text, "false") == 0)
        return g_variant_new_boolean(text[0] == 't');
    gint64 n;
    double d;
    if (*text != '\0' &&
        g_ascii_string_to_signed(text, 10, G_MININT64, G_MAXINT64, &n, NULL))
        return g_variant_new_int64(n);
    if (parse_double(text, &d))
        return g_variant_new_double(d);
    return g_variant_new_string(text);
}

/* Split KEY=VALUE / KEY:=TEXT; false (message printed) when malformed. */
bool parse_pair(const meta_opt *opt, char **key, GVariant **value)
{
    const char *arg = opt->text;
    /* Keys and strings of a GVariant are UTF-8; a shell in another locale
     * may hand us other bytes. */
    if (!g_utf8_validate(arg, -1, NULL)) {
        char *shown = g_utf8_make_valid(arg, -1);
        usage_error("metadata '%s' is not valid UTF-8", shown);
        g_free(shown);
        return false;
    }
    const char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg) {
        usage_error("'%s' is not KEY=VALUE", arg);
        return false;
    }
    bool typed = !opt->string && eq > arg && eq[-1] == ':';
    size_t klen = (size_t)(eq - arg) - (typed ? 1 : 0);
    if (klen == 0) {
        usage_error("'%s' has an empty key", arg);
        return false;
    }
    GError *err = NULL;
    GVariant *v = parse_value(eq + 1,
                              typed        ? META_TYPED
                              : opt->string ? META_STRING
                                            : META_GUESS,
                              &err);
    if (v == NULL) {
        usage_error("metadata '%s': %s", arg, err->message);
        g_error_free(err);
        return false;
    }
    *key = g_strndup(arg, klen);
    /* g_variant_parse() returns a full reference, the constructors a
     * floating one: take_ref owns either exactly once. */
    *value = g_variant_take_ref(v);
    return true;
}

/* The --meta options as an a{sv} (NULL when none); false when malformed. */
bool build_meta(const cli *c, GVariant **out)
{
    *out = NULL;
    if (c->meta->len == 0)
        return true;
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    for (guint i = 0; i < c->meta->len; i++) {
        char *k;
        GVariant *v;
        if (!parse_pair(&g_array_index(c->meta, meta_opt, i), &k, &v)) {
            g_variant_dict_clear(&d);
            return false;
        }
        g_variant_dict_insert_value(&d, k, v);
        g_free(k);
        g_variant_unref(v);
    }
    *out = g_variant_ref_sink(g_variant_dict_end(&d));
    return true;
}

bool want_args(const cli *c, guint min, guint max, const char *form)
{
    if (c->args->len < min || c->args->len > max) {
        usage_error("usage: procreg %s", form);
        return false;
    }
    return true;
}

const char *arg(const cli *c, guint i)
{
    return i < c->args->len ? c->args->pdata[i] : NULL;
}

bool timeout_ms_of(const cli *c, int *timeout_ms)
{
    *timeout_ms = -1;
    if (c->timeout == NULL)
        return true;
    char *end = NULL;
    double s = g_ascii_strtod(c->timeout, &end);
    if (end == c->timeout || *end != '\0' || !(s >= 0) || s > 2e6) {
        usage_error("--timeout '%s' is not a number of seconds", c->timeout);
        return false;
    }
    *timeout_ms = (int)(s * 1000 + 0.5);
    return true;
}

/* ------------------------------------------------------------------------ */
/* The main loop and signals                                                */

static GMainLoop *loop;
int loop_signal;

static gboolean on_signal(gpointer data)
{
    loop_signal = GPOINTER_TO_INT(data);
    g_main_loop_quit(loop);
    return G_SOURCE_CONTINUE;
}

static guint signal_ids[3];

/* Catch SIGINT, SIGTERM and SIGHUP from now on: one that comes before
 * run_until_signal() ends it at once.  A command that announces it is
 * ready to be interrupted calls this first. */
void catch_signals(void)
{
    if (loop != NULL)
        return;
    loop = g_main_loop_new(NULL, FALSE);
    int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++)
        signal_ids[i] = g_unix_signal_add(sigs[i], on_signal,
                                          GINT_TO_POINTER(sigs[i]));
}

/* Run the main loop until SIGINT, SIGTERM or SIGHUP. */
void run_until_signal(void)
{
    catch_signals();
    g_main_loop_run(loop);
    for (int i = 0; i < 3; i++)
        g_source_remove(signal_ids[i]);
    g_main_loop_unref(loop);
    loop = NULL;
}

static gboolean on_owner_exit(gint fd, GIOCondition cond, gpointer data)
{
    g_main_loop_quit(loop);
    return G_SOURCE_REMOVE;
}

static gboolean poll_owner(gpointer data)
{
    if (procreg_owner_is_alive(data)) /* no pidfd: look every 100 ms */
        return G_SOURCE_CONTINUE;
    g_main_loop_quit(loop);
    return G_SOURCE_REMOVE;
}

/* Run the main loop until a signal, or until @owner exits. */
void run_until_signal_or_exit(const procreg_owner *owner)
{
    int fd = (int)syscall(SYS_pidfd_open, owner->pid, 0);
    guint id = fd >= 0 ? g_unix_fd_add(fd, G_IO_IN, on_owner_exit, NULL)
                       : g_timeout_add(100, poll_owner, (gpointer)owner);
    run_until_signal();
    if (loop_signal != 0)
        g_source_remove(id);
    if (fd >= 0)
        close(fd);
}

/* ------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    int (*run)(procreg *reg, const cli *c);
} command;

static const command commands[] = {
    {"register", cmd_register},   {"lookup", cmd_lookup},
    {"unregister", cmd_unregister}, {"update", cmd_update},
    {"list", cmd_list},           {"find", cmd_find},
    {"watch", cmd_watch},         {"wait", cmd_wait},
    {"namespaces", cmd_namespaces}, {"drop-namespace", cmd_drop},
    {"stats", cmd_stats},         {"health", cmd_health},
#ifdef PROCREG_CLI_METRICS
    {"metrics", cmd_metrics},
#endif
    {"join", cli_join},           {"leave", cli_leave},
    {"members", cli_members},     {"groups", cli_groups},
    {"lock", cmd_lock},           {"select", cmd_select},
    {"meta", cmd_meta},
};

/* Options that take a value, and which commands accept each option. */
static bool option_allowed(const char *cmd, const char *opt)
{
    static const struct {
        const char *opt, *cmds;
    } table[] = {
        {"--meta", " register update join meta "},
        {"--meta-string", " register update join meta "},
        {"--delete", " meta "},
        {"--pid", " register join leave "},
        {"--hold", " register join "},
        {"--replace", " update "},
        {"--force", " unregister update leave "},
        {"--member", " leave "},
        {"--ns", " find select "},
        {"--count", " select "},
        {"--timeout", " wait lock "},
        {"--from", " watch "},
        {"--prometheus", " stats "},
        {"--listen", " metrics "},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(table); i++) {
        if (strcmp(table[i].opt, opt) != 0)
            continue;
        char *pat = g_strdup_printf(" %s ", cmd ? cmd : "");
        bool ok = strstr(table[i].cmds, pat) != NULL;
        g_free(pat);
        return ok;
    }
    return false;
}

static int parse(int argc, char **argv, cli *c)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *value = NULL;
        char *name = NULL;
        if (a[0] == '-' && a[1] != '\0' && strcmp(a, "--") != 0) {
            /* --opt=value or --opt value */
            const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
            name = eq ? g_strndup(a, (gsize)(eq - a)) : g_strdup(a);
            if (eq)
                value = eq + 1;
        } else {
            if (strcmp(a, "--") == 0) {
                for (i++; i < argc; i++)
                    g_ptr_array_add(c->args, argv[i]);
                break;
            }
            if (c->command == NULL)
                c->command = a;
            else
                g_ptr_array_add(c->args, (gpointer)a);
            continue;
        }
        bool takes = strcmp(name, "--backend") == 0 || strcmp(name, "-b") == 0 ||
                     strcmp(name, "--meta") == 0 ||
                     strcmp(name, "--meta-string") == 0 ||
                     strcmp(name, "--pid") == 0 ||
                     strcmp(name, "--member") == 0 ||
                     strcmp(name, "--ns") == 0 || strcmp(name, "--timeout") == 0 ||
                     strcmp(name, "--listen") == 0 || strcmp(name, "--from") == 0;
        if (takes && value == NULL) {
            if (i + 1 >= argc) {
                int rc = usage_error("%s needs a value", name);
                g_free(name);
                return rc;
            }
            value = argv[++i];
        } else if (!takes && value != NULL) {
            int rc = usage_error("%s takes no value", name);
            g_free(name);
            return rc;
        }
        int rc = -1;
        if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
            fputs(usage_text, stdout);
            rc = EXIT_OK;
        } else if (strcmp(name, "--version") == 0) {
            printf("procreg %d.%d.%d\n", PROCREG_VERSION_MAJOR,
                   PROCREG_VERSION_MINOR, PROCREG_VERSION_MICRO);
            rc = EXIT_OK;
        } else if (strcmp(name, "--backend") == 0 || strcmp(name, "-b") == 0) {
            c->backend = value;
        } else if (strcmp(name, "--json") == 0) {
            c->json = json_output = true;
        } else if (!option_allowed(c->command, name)) {
            rc = usage_error("unknown option %s%s%s", name,
                             c->command ? " for " : "",
                             c->command ? c->command : "");
        } else if (strcmp(name, "--meta") == 0 ||
                   strcmp(name, "--meta-string") == 0) {
            meta_opt m = {value, strcmp(name, "--meta-string") == 0};
            g_array_append_val(c->meta, m);
        } else if (strcmp(name, "--pid") == 0) {
            c->pid = value;
        } else if (strcmp(name, "--member") == 0) {
            c->member = value;
        } else if (strcmp(name, "--hold") == 0) {
            c->hold = true;
        } else if (strcmp(name, "--replace") == 0) {
            c->replace = true;
        } else if (strcmp(name, "--force") == 0) {
            c->force = true;
        } else if (strcmp(name, "--ns") == 0) {
            c->ns_opt = value;
        } else if (strcmp(name, "--timeout") == 0) {
            c->timeout = value;
        } else if (strcmp(name, "--from") == 0) {
            c->from = value;
        } else if (strcmp(name, "--prometheus") == 0) {
            c->prometheus = true;
        } else if (strcmp(name, "--listen") == 0) {
            c->listen = value;
        } else if (strcmp(name, "--count") == 0) {
            c->count = true;
        } else if (strcmp(name, "--delete") == 0) {
            c->delete_key = true;
        }
        g_free(name);
        if (rc >= 0)
            return rc;
    }
    return -1;
}

/* On etcd a registry reads and watches the whole prefix (watch=true);
 * a command needs less: none for one that acts and exits, the namespace
 * for watch NS, the namespaces it uses for wait and lock.  Applied when
 * the spec names etcd itself (not inside a decorator) and says nothing of
 * the watch. */
static char *etcd_watch_for(const char *spec, const cli *c)
{
    bool etcd = strcmp(spec, "etcd") == 0 || g_str_has_prefix(spec, "etcd:");
    if (!etcd || strstr(spec, "watch") != NULL ||
        strcmp(c->command, "stats") == 0 || strcmp(c->command, "health") == 0)
        return g_strdup(spec);
    const char *sep = strchr(spec, ':') != NULL ? "," : ":";
    const char *ns = arg(c, 0);
    if (strcmp(c->command, "watch") == 0) {
        /* A namespace the spec syntax can carry, or the whole prefix; a
         * watch from a position replays etcd's history, which needs the
         * whole prefix watched (watch=true, the default). */
        if (ns == NULL || c->from != NULL ||
            strpbrk(ns, ",[]=: \t\n") != NULL)
            return g_strdup(spec);
        return g_strdup_printf("%s%swatch=used,watch_namespaces=[%s]", spec,
                               sep, ns);
    }
    /* A lock waiter is woken by the removal of the ticket ahead. */
    if (strcmp(c->command, "wait") == 0 || strcmp(c->command, "lock") == 0)
        return g_strdup_printf("%s%swatch=used", spec, sep);
    return g_strdup_printf("%s%swatch=false", spec, sep);
}

int main(int argc, char **argv)
{
    setlocale(LC_ALL, "");
    /* A reader of our output may go away (procreg list | head). */
    signal(SIGPIPE, SIG_IGN);
    cli c = {.meta = g_array_new(FALSE, FALSE, sizeof(meta_opt)),
             .args = g_ptr_array_new()};
    int status = parse(argc, argv, &c);
    if (status >= 0)
        goto out;
    if (c.command == NULL) {
        fputs(usage_text, stderr);
        status = EXIT_USAGE;
        goto out;
    }
    if (c.json && c.prometheus) {
        status = usage_error("--json and --prometheus exclude each other");
        goto out;
    }
    if (strcmp(c.command, "backends") == 0) {
        status = cmd_backends(&c);
        goto out;
    }
    const command *cmd = NULL;
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        if (strcmp(commands[i].name, c.command) == 0)
            cmd = &commands[i];
    if (cmd == NULL) {
        status = usage_error("unknown command '%s'", c.command);
        goto out;
    }
    const char *spec = c.backend;
    if (spec == NULL)
        spec = g_getenv("PROCREG_BACKEND");
    if (spec == NULL || *spec == '\0')
        spec = "lmdb";
    char *tuned = etcd_watch_for(spec, &c);
    procreg *reg = NULL;
    GError *err = NULL;
    int rc = procreg_open(tuned, &reg, &err);
    g_free(tuned);
    if (rc != 0) {
        status = fail(rc, err);
        goto out;
    }
    status = cmd->run(reg, &c);
    procreg_close(reg);
out:
    fflush(stdout);
    g_array_unref(c.meta);
    g_ptr_array_unref(c.args);
    return status;
}
