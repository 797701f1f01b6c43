/*
 * procreg: the command-line face of the registry, for operators and shell
 * scripts.  By default it opens the host's shared LMDB registry, so two
 * terminals see the same names.
 */
#include "cli.h"
#ifdef PROCREG_CLI_METRICS
#include "metrics.h"
#endif

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

/* ------------------------------------------------------------------------ */
/* Output                                                                   */

/* --json: results, and errors too (one object on stderr). */
static bool json_output;

void json_string(GString *o, const char *s)
{
    g_string_append_c(o, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': g_string_append(o, "\\\""); break;
        case '\\': g_string_append(o, "\\\\"); break;
        case '\n': g_string_append(o, "\\n"); break;
        case '\r': g_string_append(o, "\\r"); break;
        case '\t': g_string_append(o, "\\t"); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                g_string_append_printf(o, "\\u%04x", *p);
            else
                g_string_append_c(o, (char)*p);
        }
    }
    g_string_append_c(o, '"');
}

/* A GVariant as JSON: dictionaries with string keys become objects,
 * arrays and tuples arrays, variants their content. */
void json_variant(GString *o, GVariant *v)
{
    switch (g_variant_classify(v)) {
    case G_VARIANT_CLASS_BOOLEAN:
        g_string_append(o, g_variant_get_boolean(v) ? "true" : "false");
        return;
    case G_VARIANT_CLASS_BYTE:
        g_string_append_printf(o, "%u", g_variant_get_byte(v));
        return;
    case G_VARIANT_CLASS_INT16:
        g_string_append_printf(o, "%d", g_variant_get_int16(v));
        return;
    case G_VARIANT_CLASS_UINT16:
        g_string_append_printf(o, "%u", g_variant_get_uint16(v));
        return;
    case G_VARIANT_CLASS_INT32:
        g_string_append_printf(o, "%" G_GINT32_FORMAT, g_variant_get_int32(v));
        return;
    case G_VARIANT_CLASS_UINT32:
        g_string_append_printf(o, "%" G_GUINT32_FORMAT,
                               g_variant_get_uint32(v));
        return;
    case G_VARIANT_CLASS_INT64:
        g_string_append_printf(o, "%" G_GINT64_FORMAT, g_variant_get_int64(v));
        return;
    case G_VARIANT_CLASS_UINT64:
        g_string_append_printf(o, "%" G_GUINT64_FORMAT,
                               g_variant_get_uint64(v));
        return;
    case G_VARIANT_CLASS_HANDLE:
        g_string_append_printf(o, "%" G_GINT32_FORMAT,
                               g_variant_get_handle(v));
        return;
    case G_VARIANT_CLASS_DOUBLE: {
        double d = g_variant_get_double(v);
        if (isfinite(d)) {
            char buf[G_ASCII_DTOSTR_BUF_SIZE];
            g_string_append(o, g_ascii_dtostr(buf, sizeof buf, d));
        } else {
            g_string_append(o, "null");
        }
        return;
    }
    case G_VARIANT_CLASS_STRING:
    case G_VARIANT_CLASS_OBJECT_PATH:
    case G_VARIANT_CLASS_SIGNATURE:
        json_string(o, g_variant_get_string(v, NULL));
        return;
    case G_VARIANT_CLASS_VARIANT: {
        GVariant *in = g_variant_get_variant(v);
        json_variant(o, in);
        g_variant_unref(in);
        return;
    }
    case G_VARIANT_CLASS_MAYBE: {
        GVariant *in = g_variant_get_maybe(v);
        if (in == NULL) {
            g_string_append(o, "null");
        } else {
            json_variant(o, in);
            g_variant_unref(in);
        }
        return;
    }
    case G_VARIANT_CLASS_ARRAY: {
        const GVariantType *et = g_variant_type_element(g_variant_get_type(v));
        bool object = g_variant_type_is_dict_entry(et) &&
                      g_variant_type_equal(g_variant_type_key(et),
                                           G_VARIANT_TYPE_STRING);
        g_string_append_c(o, object ? '{' : '[');
        gsize n = g_variant_n_children(v);
        for (gsize i = 0; i < n; i++) {
            GVariant *c = g_variant_get_child_value(v, i);
            if (i > 0)
                g_string_append_c(o, ',');
            if (object) {
                GVariant *k = g_variant_get_child_value(c, 0);
                GVariant *val = g_variant_get_child_value(c, 1);
                json_string(o, g_variant_get_string(k, NULL));
                g_string_append_c(o, ':');
                json_variant(o, val);
                g_variant_unref(k);
                g_variant_unref(val);
            } else {
                json_variant(o, c);
            }
            g_variant_unref(c);
        }
        g_string_append_c(o, object ? '}' : ']');
        return;
    }
    case G_VARIANT_CLASS_TUPLE:
    case G_VARIANT_CLASS_DICT_ENTRY: {
        g_string_append_c(o, '[');
        gsize n = g_variant_n_children(v);
        for (gsize i = 0; i < n; i++) {
            GVariant *c = g_variant_get_child_value(v, i);
            if (i > 0)
                g_string_append_c(o, ',');
            json_variant(o, c);
            g_variant_unref(c);
        }
        g_string_append_c(o, ']');
        return;
    }
    }
    char *text = g_variant_print(v, FALSE);
    json_string(o, text);
    g_free(text);
}

char *time_text(int64_t us)
{
    GDateTime *t = g_date_time_new_from_unix_utc(us / G_USEC_PER_SEC);
    if (t == NULL)
        return g_strdup_printf("%" G_GINT64_FORMAT " us", us);
    GDateTime *t2 = g_date_time_add(t, us % G_USEC_PER_SEC);
    char *s = g_date_time_format(t2, "%Y-%m-%dT%H:%M:%S.%fZ");
    g_date_time_unref(t);
    g_date_time_unref(t2);
    return s;
}

void json_entry(GString *o, const char *ns, const char *name,
                const procreg_entry *e)
{
    g_string_append(o, "{\"namespace\":");
    json_string(o, ns);
    g_string_append(o, ",\"name\":");
    json_string(o, name);
    char *t = time_text(e->registered_at);
    g_string_append_printf(o, ",\"pid\":%d,\"start_time\":%" G_GUINT64_FORMAT
                           ",\"registered_at\":\"%s\",\"registered_at_us\":%"
                           G_GINT64_FORMAT ",\"revision\":%" G_GUINT64_FORMAT
                           ",\"metadata\":",
                           (int)e->owner.pid, e->owner.start_time, t,
                           e->registered_at, e->revision);
    g_free(t);
    if (e->metadata != NULL)
        json_variant(o, e->metadata);
    else
        g_string_append(o, "null");
    g_string_append_c(o, '}');
}

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

void print_entry(const cli *c, const char *ns, const char *name,
                        const procreg_entry *e)
{
    if (c->json) {
        GString *o = g_string_new(NULL);
        json_entry(o, ns, name, e);
        printf("%s\n", o->str);
        g_string_free(o, TRUE);
        return;
    }
    char *t = time_text(e->registered_at);
    char *m = e->metadata ? g_variant_print(e->metadata, FALSE) : NULL;
    printf("%s/%s\n  pid         %d\n  registered  %s\n  revision    %"
           G_GUINT64_FORMAT "\n  metadata    %s\n",
           ns, name, (int)e->owner.pid, t, e->revision, m ? m : "(none)");
    g_free(t);
    g_free(m);
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
static bool parse_pair(const meta_opt *opt, char **key, GVariant **value)
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

/* ------------------------------------------------------------------------ */
/* Commands                                                                 */

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
static void catch_signals(void)
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

/* The TTL (s) of the lease an etcd registry keeps its entries on (a
 * decorator's inner one too), or 0: the entries outlive this command. */
static gint64 lease_ttl_of(procreg *reg)
{
    GVariant *st = NULL;
    if (procreg_stats(reg, &st, NULL) != 0)
        return 0;
    gint64 ttl = 0;
    GVariant *bs = g_variant_lookup_value(st, "backend_stats",
                                          G_VARIANT_TYPE_VARDICT);
    while (bs != NULL && !g_variant_lookup(bs, "lease_ttl", "x", &ttl)) {
        GVariant *inner = g_variant_lookup_value(bs, "inner",
                                                 G_VARIANT_TYPE_VARDICT);
        g_variant_unref(bs);
        bs = inner;
    }
    if (bs != NULL)
        g_variant_unref(bs);
    g_variant_unref(st);
    return ttl;
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
static void run_until_signal_or_exit(const procreg_owner *owner)
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

/* register --pid PID --hold: hold the registry (on etcd: its lease) while
 * PID lives.  Its death removes the entry (the registry's monitor, reason
 * owner_exited); a signal removes it here (reason forced: this command is
 * not the owner). */
static int hold_for(procreg *reg, const cli *c, procreg_key *key,
                    const procreg_owner *owner, uint64_t revision)
{
    const char *ns = arg(c, 0), *name = arg(c, 1);
    run_until_signal_or_exit(owner);
    GError *err = NULL;
    int rc = 0;
    if (loop_signal != 0) {
        rc = procreg_unregister_full(reg, key, revision, PROCREG_FORCE, &err);
        if (rc != 0 && rc != PROCREG_ENOTFOUND && rc != PROCREG_ECONFLICT)
            return fail(rc, err);
        g_clear_error(&err);
        if (!c->json)
            printf("unregistered %s/%s (signal %d)\n", ns, name, loop_signal);
        return EXIT_OK;
    }
    /* Owner gone: wait (briefly) for the monitor's removal. */
    gint64 until = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    procreg_entry now = {0};
    while ((rc = procreg_lookup_entry_key(reg, key, &now, NULL)) == 0 &&
           now.revision == revision && g_get_monotonic_time() < until) {
        procreg_entry_clear(&now);
        g_usleep(20 * 1000);
    }
    procreg_entry_clear(&now);
    if (!c->json)
        printf("pid %d exited; %s/%s %s\n", (int)owner->pid, ns, name,
               rc == PROCREG_ENOTFOUND ? "unregistered" : "left to its lease");
    return EXIT_OK;
}

static int cmd_register(procreg *reg, const cli *c)
{
    if (!want_args(c, 2, 2, "register NS NAME (--pid PID [--hold] | --hold) "
                            "[--meta KEY=VALUE ...]"))
        return EXIT_USAGE;
    const char *ns = arg(c, 0), *name = arg(c, 1);
    gint64 ttl = c->pid != NULL && !c->hold ? lease_ttl_of(reg) : 0;
    if (ttl > 0)
        return usage_error(
            "refusing to register %s/%s for pid %s without --hold: on this "
            "backend an entry lives on the lease of the registry that made "
            "it, and this command would exit at once, so the entry would "
            "vanish %" G_GINT64_FORMAT " s later (lease_ttl) while pid %s "
            "runs.\n"
            "  --hold  keeps this command running while pid %s lives; it "
            "ends when the pid does, and the entry with it (run it in the "
            "background: procreg register %s %s --pid %s --hold &)",
            ns, name, c->pid, ttl, c->pid, c->pid, ns, name, c->pid);
    if (c->pid == NULL && !c->hold)
        return usage_error(
            "refusing to register %s/%s for this command itself: it exits "
            "at once, and its entry would vanish with it.\n"
            "  --pid PID  registers it on behalf of the running process PID "
            "(e.g. --pid $$ for the calling shell);\n"
            "  --hold     keeps this command running as the owner until it "
            "is interrupted (run it in the background: procreg register "
            "%s %s --hold &)", ns, name, ns, name);
    GVariant *meta;
    if (!build_meta(c, &meta))
        return EXIT_USAGE;
    procreg_owner owner, *ownerp = NULL;
    GError *err = NULL;
    int rc = 0;
    if (c->pid != NULL) {
        gint64 pid;
        if (!g_ascii_string_to_signed(c->pid, 10, 1, G_MAXINT32, &pid, NULL)) {
            if (meta)
                g_variant_unref(meta);
            return usage_error("--pid '%s' is not a process id", c->pid);
        }
        rc = procreg_owner_from_pid((pid_t)pid, &owner, &err);
        ownerp = &owner;
    }
    procreg_key *key = NULL;
    if (rc == 0)
        rc = procreg_key_new(ns, name, &key, &err);
    procreg_entry cur = {0};
    if (rc == 0)
        rc = procreg_register_key(reg, key, ownerp, meta, &cur, &err);
    if (meta)
        g_variant_unref(meta);
    if (rc == PROCREG_EEXISTS) {
        /* The holder on stdout too: "already started, by this one". */
        print_entry(c, ns, name, &cur);
        procreg_entry_clear(&cur);
        procreg_key_unref(key);
        return fail(rc, err);
    }
    if (rc != 0) {
        procreg_key_unref(key);
        return fail(rc, err);
    }
    if (c->hold)
        catch_signals(); /* before it says it may be interrupted */
    if (c->json) {
        print_entry(c, ns, name, &cur);
    } else if (c->hold) {
        printf("holding %s/%s %s pid %d (revision %" G_GUINT64_FORMAT "); "
               "interrupt to unregister\n", ns, name,
               c->pid != NULL ? "for" : "as", (int)cur.owner.pid,
               cur.revision);
    } else {
        printf("registered %s/%s for pid %d (revision %" G_GUINT64_FORMAT
               ")\n", ns, name, (int)cur.owner.pid, cur.revision);
    }
    fflush(stdout);
    uint64_t revision = cur.revision;
    procreg_entry_clear(&cur);
    if (!c->hold) {
        procreg_key_unref(key);
        return EXIT_OK;
    }
    if (ownerp != NULL) {
        rc = hold_for(reg, c, key, ownerp, revision);
        procreg_key_unref(key);
        return rc;
    }
    run_until_signal();
    /* Unregister the entry while it is still ours (someone may have
     * unregistered it and registered the name again meanwhile); the
     * revision pins what we looked at. */
    procreg_owner self;
    procreg_owner_self(&self);
    for (int attempt = 0; attempt < 8; attempt++) {
        procreg_entry now = {0};
        rc = procreg_lookup_entry_key(reg, key, &now, NULL);
        bool ours = rc == 0 && now.owner.pid == self.pid &&
                    now.owner.start_time == self.start_time;
        revision = now.revision;
        procreg_entry_clear(&now);
        if (!ours) {
            rc = 0;
            break;
        }
        rc = procreg_unregister_key(reg, key, revision, &err);
        if (rc != PROCREG_ECONFLICT)
            break;
        g_clear_error(&err);
    }
    procreg_key_unref(key);
    if (rc != 0 && rc != PROCREG_ENOTFOUND && rc != PROCREG_ECONFLICT)
        return fail(rc, err);
    g_clear_error(&err);
    if (!c->json)
        printf("unregistered %s/%s (signal %d)\n", ns, name, loop_signal);
    return EXIT_OK;
}

static int cmd_lookup(procreg *reg, const cli *c)
{
    if (!want_args(c, 2, 2, "lookup NS NAME"))
        return EXIT_USAGE;
    procreg_entry e = {0};
    GError *err = NULL;
    int rc = procreg_lookup_entry(reg, arg(c, 0), arg(c, 1), &e, &err);
    if (rc != 0)
        return fail(rc, err);
    print_entry(c, arg(c, 0), arg(c, 1), &e);
    procreg_entry_clear(&e);
    return EXIT_OK;
}

/* --force: the operator's explicit override of the owner rule. */
static unsigned write_flags(const cli *c)
{
    return c->force ? PROCREG_FORCE : 0;
}

static int cmd_unregister(procreg *reg, const cli *c)
{
    if (!want_args(c, 2, 2, "unregister NS NAME [--force]"))
        return EXIT_USAGE;
    GError *err = NULL;
    procreg_key *key = NULL;
    int rc = procreg_key_new(arg(c, 0), arg(c, 1), &key, &err);
    if (rc == 0)
        rc = procreg_unregister_full(reg, key, 0, write_flags(c), &err);
    procreg_key_unref(key);
    if (rc != 0)
        return fail(rc, err);
    if (!c->json)
        printf("unregistered %s/%s\n", arg(c, 0), arg(c, 1));
    else
        printf("{\"unregistered\":true}\n");
    return EXIT_OK;
}

static int cmd_update(procreg *reg, const cli *c)
{
    if (!want_args(c, 2, 2, "update NS NAME [--meta KEY=VALUE ...] "
                            "[--replace] [--force]"))
        return EXIT_USAGE;
    if (c->meta->len == 0 && !c->replace)
        return usage_error("update needs --meta KEY=VALUE (merged), or "
                           "--replace (with no --meta: remove all metadata)");
    GVariant *meta;
    if (!build_meta(c, &meta))
        return EXIT_USAGE;
    procreg_key *key = NULL;
    GError *err = NULL;
    uint64_t revision = 0;
    int rc = procreg_key_new(arg(c, 0), arg(c, 1), &key, &err);
    if (rc == 0)
        rc = procreg_update_metadata_full(
            reg, key, meta,
            c->replace ? PROCREG_UPDATE_REPLACE : PROCREG_UPDATE_MERGE, 0,
            write_flags(c), &revision, &err);
    if (meta)
        g_variant_unref(meta);
    procreg_key_unref(key);
    if (rc != 0)
        return fail(rc, err);
    if (c->json)
        printf("{\"revision\":%" G_GUINT64_FORMAT "}\n", revision);
    else
        printf("updated %s/%s (revision %" G_GUINT64_FORMAT ")\n", arg(c, 0),
               arg(c, 1), revision);
    return EXIT_OK;
}

void print_entries(const cli *c, procreg_entry *all, size_t n)
{
    if (c->json) {
        GString *o = g_string_new("[");
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                g_string_append_c(o, ',');
            json_entry(o, all[i].ns, all[i].name, &all[i]);
        }
        g_string_append(o, "]");
        printf("%s\n", o->str);
        g_string_free(o, TRUE);
        return;
    }
    if (n > 0)
        printf("%-16s %-24s %8s %8s  %s\n", "NAMESPACE", "NAME", "PID",
               "REVISION", "METADATA");
    for (size_t i = 0; i < n; i++) {
        char *m = all[i].metadata ? g_variant_print(all[i].metadata, FALSE)
                                  : g_strdup("");
        printf("%-16s %-24s %8d %8" G_GUINT64_FORMAT "  %s\n", all[i].ns,
               all[i].name, (int)all[i].owner.pid, all[i].revision, m);
        g_free(m);
    }
}

static int cmd_list(procreg *reg, const cli *c)
{
    if (!want_args(c, 0, 1, "list [NS]"))
        return EXIT_USAGE;
    procreg_entry *all = NULL;
    size_t n = 0;
    GError *err = NULL;
    int rc = procreg_list(reg, arg(c, 0), &all, &n, &err);
    if (rc != 0)
        return fail(rc, err);
    print_entries(c, all, n);
    procreg_entries_free(all, n);
    return EXIT_OK;
}

static int cmd_find(procreg *reg, const cli *c)
{
    if (!want_args(c, 1, 1, "find KEY=VALUE [--ns NS]"))
        return EXIT_USAGE;
    char *key;
    GVariant *value;
    meta_opt opt = {arg(c, 0), false}; /* typed as --meta types it */
    if (!parse_pair(&opt, &key, &value))
        return EXIT_USAGE;
    procreg_entry *all = NULL;
    size_t n = 0;
    GError *err = NULL;
    int rc = procreg_find(reg, c->ns_opt, key, value, &all, &n, &err);
    g_free(key);
    g_variant_unref(value);
    if (rc != 0)
        return fail(rc, err);
    print_entries(c, all, n);
    procreg_entries_free(all, n);
    return EXIT_OK;
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

static int cmd_namespaces(procreg *reg, const cli *c)
{
    if (!want_args(c, 0, 0, "namespaces"))
        return EXIT_USAGE;
    procreg_namespace_info *infos = NULL;
    size_t n = 0;
    GError *err = NULL;
    int rc = procreg_namespace_list(reg, &infos, &n, &err);
    if (rc != 0)
        return fail(rc, err);
    if (c->json) {
        GString *o = g_string_new("[");
        for (size_t i = 0; i < n; i++) {
            g_string_append(o, i ? ",{\"namespace\":" : "{\"namespace\":");
            json_string(o, infos[i].ns);
            g_string_append_printf(o, ",\"entries\":%zu}", infos[i].entries);
        }
        printf("%s]\n", o->str);
        g_string_free(o, TRUE);
    } else {
        for (size_t i = 0; i < n; i++)
            printf("%-24s %zu\n", infos[i].ns, infos[i].entries);
    }
    procreg_namespace_info_free(infos, n);
    return EXIT_OK;
}

static int cmd_drop(procreg *reg, const cli *c)
{
    if (!want_args(c, 1, 1, "drop-namespace NS"))
        return EXIT_USAGE;
    size_t removed = 0;
    bool atomic = false;
    GError *err = NULL;
    int rc = procreg_namespace_drop(reg, arg(c, 0), &removed, &atomic, &err);
    if (rc != 0)
        return fail(rc, err);
    if (c->json) {
        GString *o = g_string_new("{\"namespace\":");
        json_string(o, arg(c, 0));
        printf("%s,\"removed\":%zu,\"atomic\":%s}\n", o->str, removed,
               atomic ? "true" : "false");
        g_string_free(o, TRUE);
    } else
        printf("dropped %zu entr%s from %s%s\n", removed,
               removed == 1 ? "y" : "ies", arg(c, 0),
               atomic ? "" : " (not atomically: this backend removes entries "
                             "one by one)");
    return EXIT_OK;
}

static void print_dict(GVariant *dict, int indent)
{
    GVariantIter it;
    const char *k;
    GVariant *v;
    g_variant_iter_init(&it, dict);
    while (g_variant_iter_next(&it, "{&sv}", &k, &v)) {
        if (g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT)) {
            printf("%*s%s:\n", indent, "", k);
            print_dict(v, indent + 2);
        } else if (g_variant_is_of_type(v, G_VARIANT_TYPE("a{st}"))) {
            printf("%*s%s:\n", indent, "", k);
            GVariantIter i2;
            const char *k2;
            guint64 n;
            g_variant_iter_init(&i2, v);
            while (g_variant_iter_next(&i2, "{&st}", &k2, &n))
                printf("%*s%s: %" G_GUINT64_FORMAT "\n", indent + 2, "", k2,
                       n);
        } else {
            char *s = g_variant_is_of_type(v, G_VARIANT_TYPE_STRING)
                          ? g_variant_dup_string(v, NULL)
                          : g_variant_print(v, FALSE);
            printf("%*s%s: %s\n", indent, "", k, s);
            g_free(s);
        }
        g_variant_unref(v);
    }
}

/* What an operator asks of the host's registry: entries, processes that
 * own them, entries per namespace, whoever registered them. */
typedef struct {
    size_t entries, owners;
    procreg_namespace_info *ns;
    size_t n_ns;
} registry_figures;

static int registry_figures_get(procreg *reg, registry_figures *r,
                                GError **error)
{
    memset(r, 0, sizeof *r);
    procreg_entry *all = NULL;
    size_t n = 0;
    int rc = procreg_list(reg, NULL, &all, &n, error);
    if (rc == 0)
        rc = procreg_namespace_list(reg, &r->ns, &r->n_ns, error);
    if (rc != 0) {
        procreg_entries_free(all, n);
        return rc;
    }
    GHashTable *owners = g_hash_table_new_full(g_str_hash, g_str_equal,
                                               g_free, NULL);
    for (size_t i = 0; i < n; i++) {
        char *id = g_strdup_printf("%d/%" G_GUINT64_FORMAT,
                                   (int)all[i].owner.pid,
                                   all[i].owner.start_time);
        g_hash_table_add(owners, id);
    }
    r->entries = n;
    r->owners = g_hash_table_size(owners);
    g_hash_table_unref(owners);
    procreg_entries_free(all, n);
    return 0;
}

static int cmd_stats(procreg *reg, const cli *c)
{
    if (!want_args(c, 0, 0, "stats [--prometheus | --json]"))
        return EXIT_USAGE;
    GError *err = NULL;
    int rc;
    if (c->prometheus) {
        GString *o = g_string_new(NULL);
        rc = procreg_stats_write_prometheus(reg, o, &err);
        if (rc == 0)
            fputs(o->str, stdout);
        g_string_free(o, TRUE);
        return rc == 0 ? EXIT_OK : fail(rc, err);
    }
    registry_figures r;
    rc = registry_figures_get(reg, &r, &err);
    if (rc != 0)
        return fail(rc, err);
    if (c->json) {
        char *s = NULL;
        rc = procreg_stats_to_json(reg, &s, &err);
        if (rc == 0) {
            printf("{\"registry\":{\"entries\":%zu,\"owners\":%zu,"
                   "\"namespaces\":{", r.entries, r.owners);
            for (size_t i = 0; i < r.n_ns; i++) {
                GString *k = g_string_new(NULL);
                json_string(k, r.ns[i].ns);
                printf("%s%s:%zu", i ? "," : "", k->str, r.ns[i].entries);
                g_string_free(k, TRUE);
            }
            printf("}},\"process\":%s}\n", s);
        }
        g_free(s);
    } else {
        GVariant *st = NULL;
        rc = procreg_stats(reg, &st, &err);
        if (rc == 0) {
            printf("registry (everyone's entries):\n  entries: %zu\n"
                   "  owners: %zu processes\n  namespaces: %zu\n",
                   r.entries, r.owners, r.n_ns);
            for (size_t i = 0; i < r.n_ns; i++)
                printf("    %s: %zu\n", r.ns[i].ns, r.ns[i].entries);
            printf("this procreg process (its own calls and figures; every "
                   "process keeps its own):\n");
            print_dict(st, 2);
            g_variant_unref(st);
        }
    }
    procreg_namespace_info_free(r.ns, r.n_ns);
    return rc == 0 ? EXIT_OK : fail(rc, err);
}

static int cmd_health(procreg *reg, const cli *c)
{
    if (!want_args(c, 0, 0, "health"))
        return EXIT_USAGE;
    procreg_health h = {0};
    GError *err = NULL;
    int rc = procreg_health_check(reg, &h, &err);
    if (rc != 0)
        return fail(rc, err);
    if (c->json) {
        GString *o = g_string_new("{\"status\":");
        json_string(o, procreg_health_status_name(h.status));
        g_string_append(o, ",\"backend\":");
        json_string(o, h.backend);
        g_string_append(o, ",\"message\":");
        json_string(o, h.message);
        g_string_append(o, ",\"details\":");
        json_variant(o, h.details);
        printf("%s}\n", o->str);
        g_string_free(o, TRUE);
    } else {
        printf("%s: %s\n", procreg_health_status_name(h.status), h.message);
        print_dict(h.details, 2);
    }
    int code = h.status == PROCREG_HEALTH_OK         ? EXIT_OK
               : h.status == PROCREG_HEALTH_DEGRADED ? EXIT_DEGRADED
                                                     : EXIT_BACKEND;
    procreg_health_clear(&h);
    return code;
}

static int cmd_backends(const cli *c)
{
    if (!want_args(c, 0, 0, "backends"))
        return EXIT_USAGE;
    char **names = procreg_backend_names();
    GString *o = g_string_new(c->json ? "[" : "");
    for (char **n = names; *n; n++) {
        if (c->json) {
            if (n != names)
                g_string_append_c(o, ',');
            json_string(o, *n);
        } else {
            g_string_append_printf(o, "%s\n", *n);
        }
    }
    if (c->json)
        g_string_append(o, "]\n");
    fputs(o->str, stdout);
    g_string_free(o, TRUE);
    g_strfreev(names);
    return EXIT_OK;
}

#ifdef PROCREG_CLI_METRICS
static int cmd_metrics(procreg *reg, const cli *c)
{
    if (!want_args(c, 0, 0, "metrics --listen ADDRESS:PORT"))
        return EXIT_USAGE;
    if (c->listen == NULL)
        return usage_error("metrics needs --listen ADDRESS:PORT, such as "
                           "127.0.0.1:9464");
    GError *err = NULL;
    int rc = metrics_serve(reg, c->listen, run_until_signal, &err);
    return rc == 0 ? EXIT_OK : fail(rc, err);
}
#endif

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
