/*
 * Histories as data: interning keys and owners, parsing the line format
 * of history.h (and merging several files into one history), metadata
 * helpers, and the one-line descriptions the reports print.
 */
#include "history.h"

#include <procreg/procreg.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char *const field_names[HIST_FIELDS] = {"a", "b", "g"};

hist *hist_new(void)
{
    hist *h = g_new0(hist, 1);
    h->keys = g_ptr_array_new_with_free_func(g_free);
    h->owners = g_ptr_array_new_with_free_func(g_free);
    h->key_ids = g_hash_table_new(g_str_hash, g_str_equal);
    h->owner_ids = g_hash_table_new(g_str_hash, g_str_equal);
    h->ops = g_array_new(FALSE, TRUE, sizeof(hist_op));
    h->events = g_array_new(FALSE, TRUE, sizeof(hist_event));
    h->subs = g_array_new(FALSE, TRUE, sizeof(hist_sub));
    h->t0 = INT64_MAX;
    return h;
}

void hist_free(hist *h)
{
    if (h == NULL)
        return;
    for (guint i = 0; i < h->ops->len; i++)
        g_free(g_array_index(h->ops, hist_op, i).items);
    g_array_unref(h->ops);
    g_array_unref(h->events);
    g_array_unref(h->subs);
    g_hash_table_unref(h->key_ids);
    g_hash_table_unref(h->owner_ids);
    g_ptr_array_unref(h->keys);
    g_ptr_array_unref(h->owners);
    g_free(h);
}

static int intern(GPtrArray *names, GHashTable *ids, const char *name)
{
    gpointer id;
    if (g_hash_table_lookup_extended(ids, name, NULL, &id))
        return GPOINTER_TO_INT(id);
    char *copy = g_strdup(name);
    g_ptr_array_add(names, copy);
    g_hash_table_insert(ids, copy, GINT_TO_POINTER(names->len - 1));
    return (int)names->len - 1;
}

int hist_key(hist *h, const char *name)
{
    return intern(h->keys, h->key_ids, name);
}

int hist_owner(hist *h, const char *pid_start)
{
    return intern(h->owners, h->owner_ids, pid_start);
}

/* ---- metadata ---- */

bool hist_meta_parse(const char *s, hist_meta *out)
{
    memset(out, 0, sizeof *out);
    if (strcmp(s, "-") == 0)
        return true;
    if (strcmp(s, "?") == 0) {
        out->mask = HIST_META_FOREIGN;
        return true;
    }
    g_auto(GStrv) parts = g_strsplit(s, ",", -1);
    for (char **p = parts; *p; p++) {
        const char *colon = strchr(*p, ':');
        int f = -1;
        for (int i = 0; i < HIST_FIELDS && colon; i++)
            if ((size_t)(colon - *p) == strlen(field_names[i]) &&
                strncmp(*p, field_names[i], colon - *p) == 0)
                f = i;
        if (f < 0)
            return false;
        char *end = NULL;
        errno = 0;
        out->v[f] = g_ascii_strtoll(colon + 1, &end, 10);
        if (errno != 0 || end == colon + 1 || *end != '\0')
            return false;
        out->mask |= (uint8_t)(1u << f);
    }
    return true;
}

void hist_meta_append(GString *out, const hist_meta *m)
{
    if (m->mask & HIST_META_FOREIGN) {
        g_string_append_c(out, '?');
        return;
    }
    if (m->mask == 0) {
        g_string_append_c(out, '-');
        return;
    }
    bool first = true;
    for (int i = 0; i < HIST_FIELDS; i++) {
        if (!(m->mask & (1u << i)))
            continue;
        g_string_append_printf(out, "%s%s:%" PRId64, first ? "" : ",",
                               field_names[i], m->v[i]);
        first = false;
    }
}

bool hist_meta_equal(const hist_meta *x, const hist_meta *y)
{
    if ((x->mask | y->mask) & HIST_META_FOREIGN)
        return false;
    if (x->mask != y->mask)
        return false;
    for (int i = 0; i < HIST_FIELDS; i++)
        if ((x->mask & (1u << i)) && x->v[i] != y->v[i])
            return false;
    return true;
}

bool hist_meta_matches(const hist_meta *m, int field, int64_t value)
{
    return !(m->mask & HIST_META_FOREIGN) && (m->mask & (1u << field)) &&
           m->v[field] == value;
}

bool hist_meta_shares_token(const hist_meta *x, const hist_meta *y)
{
    if ((x->mask | y->mask) & HIST_META_FOREIGN)
        return false;
    for (int f = HIST_FIELD_A; f <= HIST_FIELD_B; f++)
        if ((x->mask & y->mask & (1u << f)) && x->v[f] == y->v[f])
            return true;
    return false;
}

hist_meta hist_meta_merge(const hist_meta *old, const hist_meta *add)
{
    hist_meta m = *old;
    for (int i = 0; i < HIST_FIELDS; i++)
        if (add->mask & (1u << i)) {
            m.mask |= (uint8_t)(1u << i);
            m.v[i] = add->v[i];
        }
    m.mask |= add->mask & HIST_META_FOREIGN;
    return m;
}

bool hist_rc_unknown(int rc)
{
    return rc == PROCREG_ERROR_FAILED || rc == PROCREG_ETIMEDOUT ||
           rc == PROCREG_EBACKEND || rc == PROCREG_ENOMEM ||
           rc == PROCREG_ECANCELLED;
}

/* ---- parsing ---- */

static const char *const kind_names[] = {
    [HIST_REGISTER] = "register", [HIST_LOOKUP] = "lookup",
    [HIST_LOOKUP_ENTRY] = "entry", [HIST_UNREGISTER] = "unregister",
    [HIST_UPDATE] = "update",     [HIST_LIST] = "list",
    [HIST_FIND] = "find",         [HIST_DROP] = "drop",
    [HIST_DEATH] = "death",
};

static const char *const event_names[] = {"?", "registered", "unregistered",
                                          "updated"};
static const char *const reason_names[] = {
    "none",     "explicit", "owner_exited", "namespace_dropped",
    "replaced", "expired",  "forced"};
#define N_REASONS ((int)G_N_ELEMENTS(reason_names))

/* One parsed line: name=value pairs (values borrowed from the line). */
typedef struct {
    GHashTable *fields;
    hist *h;
    GError **error;
    bool bad;
} line_fields;

static const char *get(line_fields *l, const char *name, bool required)
{
    const char *v = g_hash_table_lookup(l->fields, name);
    if (v == NULL && required && !l->bad) {
        l->bad = true;
        g_set_error(l->error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "missing field %s", name);
    }
    return v;
}

static int64_t get_int(line_fields *l, const char *name, bool required,
                       int64_t def)
{
    const char *v = get(l, name, required);
    if (v == NULL)
        return def;
    char *end = NULL;
    errno = 0;
    int64_t x = g_ascii_strtoll(v, &end, 10);
    if ((errno != 0 || end == v || *end != '\0') && !l->bad) {
        l->bad = true;
        g_set_error(l->error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "field %s: not a number: %s", name, v);
    }
    return x;
}

static int get_enum(line_fields *l, const char *name, const char *const *names,
                    int n)
{
    const char *v = get(l, name, true);
    for (int i = 0; v && i < n; i++)
        if (names[i] && strcmp(v, names[i]) == 0)
            return i;
    if (!l->bad) {
        l->bad = true;
        g_set_error(l->error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "field %s: unknown value %s", name, v ? v : "");
    }
    return 0;
}

static hist_meta get_meta(line_fields *l, const char *name)
{
    hist_meta m = {0};
    const char *v = get(l, name, false);
    if (v != NULL && !hist_meta_parse(v, &m) && !l->bad) {
        l->bad = true;
        g_set_error(l->error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "field %s: bad metadata %s", name, v);
    }
    return m;
}

static int get_owner(line_fields *l, const char *name)
{
    const char *v = get(l, name, false);
    return v ? hist_owner(l->h, v) : -1;
}

/* "KEY@OWNER@REV@META;..." */
static bool parse_items(line_fields *l, const char *text, hist_op *op)
{
    if (*text == '\0')
        return true;
    g_auto(GStrv) items = g_strsplit(text, ";", -1);
    op->n_items = g_strv_length(items);
    op->items = g_new0(hist_item, op->n_items);
    for (size_t i = 0; i < op->n_items; i++) {
        g_auto(GStrv) p = g_strsplit(items[i], "@", 4);
        char *end = NULL;
        if (g_strv_length(p) != 4 ||
            (op->items[i].rev = g_ascii_strtoull(p[2], &end, 10),
             *end != '\0') ||
            !hist_meta_parse(p[3], &op->items[i].meta)) {
            g_set_error(l->error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "bad item %s", items[i]);
            return false;
        }
        op->items[i].key = hist_key(l->h, p[0]);
        op->items[i].owner = hist_owner(l->h, p[1]);
    }
    return true;
}

static void see_time(hist *h, int64_t t)
{
    if (t < h->t0)
        h->t0 = t;
}

/* An "inv" line's operation, indexed by (client, id) until its "res". */
static bool parse_inv(line_fields *l, GHashTable *open)
{
    hist_op op = {0};
    op.client = (int)get_int(l, "c", true, 0);
    op.inv = get_int(l, "t", true, 0);
    op.res = HIST_PENDING;
    op.kind = (hist_kind)get_enum(l, "op", kind_names, HIST_DEATH);
    const char *k = get(l, "k", false);
    op.key = k ? hist_key(l->h, k) : -1;
    op.owner = get_owner(l, "owner");
    op.meta = get_meta(l, "meta");
    const char *mode = get(l, "mode", false);
    op.merge = mode && strcmp(mode, "merge") == 0;
    op.if_rev = (uint64_t)get_int(l, "if", false, 0);
    op.force = get_int(l, "force", false, 0) != 0;
    const char *field = get(l, "field", false);
    op.field = field && strcmp(field, "a") == 0   ? HIST_FIELD_A
               : field && strcmp(field, "b") == 0 ? HIST_FIELD_B
                                                  : HIST_FIELD_G;
    op.value = get_int(l, "value", false, 0);
    op.got.key = op.key;
    op.got.owner = -1;
    bool single = op.kind != HIST_LIST && op.kind != HIST_FIND &&
                  op.kind != HIST_DROP;
    if (!l->bad && single && op.key < 0) {
        l->bad = true;
        g_set_error(l->error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "%s without k=", kind_names[op.kind]);
    }
    if (l->bad)
        return false;
    see_time(l->h, op.inv);
    g_array_append_val(l->h->ops, op);
    int64_t id = get_int(l, "id", true, 0);
    char *tag = g_strdup_printf("%d/%" PRId64, op.client, id);
    if (g_hash_table_contains(open, tag)) {
        g_set_error(l->error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "operation %s invoked twice", tag);
        g_free(tag);
        return false;
    }
    g_hash_table_insert(open, tag, GUINT_TO_POINTER(l->h->ops->len));
    return !l->bad;
}

static bool parse_res(line_fields *l, GHashTable *open)
{
    int client = (int)get_int(l, "c", true, 0);
    int64_t id = get_int(l, "id", true, 0);
    g_autofree char *tag = g_strdup_printf("%d/%" PRId64, client, id);
    guint index = GPOINTER_TO_UINT(g_hash_table_lookup(open, tag));
    if (l->bad)
        return false;
    if (index == 0) {
        g_set_error(l->error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "result of operation %s, which was never invoked", tag);
        return false;
    }
    g_hash_table_remove(open, tag);
    hist_op *op = &g_array_index(l->h->ops, hist_op, index - 1);
    op->res = get_int(l, "t", true, 0);
    op->rc = (int)get_int(l, "rc", true, 0);
    op->got.owner = get_owner(l, "owner");
    op->got.meta = get_meta(l, "meta");
    op->got.rev = (uint64_t)get_int(l, "rev", false, 0);
    const char *items = get(l, "items", false);
    if (!l->bad && items && !parse_items(l, items, op))
        return false;
    return !l->bad;
}

static bool parse_line(hist *h, char *line, GHashTable *open, GError **error)
{
    g_auto(GStrv) words = g_strsplit_set(line, " \t", -1);
    if (words[0] == NULL || words[0][0] == '\0' || words[0][0] == '#')
        return true;
    line_fields l = {g_hash_table_new(g_str_hash, g_str_equal), h, error,
                     false};
    for (char **w = words + 1; *w; w++) {
        char *eq = strchr(*w, '=');
        if (**w == '\0')
            continue;
        if (eq == NULL) {
            g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "word without '=': %s", *w);
            g_hash_table_unref(l.fields);
            return false;
        }
        *eq = '\0';
        g_hash_table_insert(l.fields, *w, eq + 1);
    }
    bool ok = true;
    const char *what = words[0];
    if (strcmp(what, "inv") == 0) {
        ok = parse_inv(&l, open);
    } else if (strcmp(what, "res") == 0) {
        ok = parse_res(&l, open);
    } else if (strcmp(what, "death") == 0) {
        hist_op op = {.kind = HIST_DEATH, .key = -1, .client = -1};
        op.owner = get_owner(&l, "owner");
        op.inv = get_int(&l, "inv", true, 0);
        op.confirmed = get_int(&l, "res", true, 0);
        op.res = HIST_PENDING; /* its removals may come any time later */
        ok = !l.bad && op.owner >= 0;
        if (ok) {
            see_time(h, op.inv);
            g_array_append_val(h->ops, op);
        }
    } else if (strcmp(what, "sub") == 0) {
        hist_sub s = {0};
        s.client = (int)get_int(&l, "c", true, 0);
        s.inv = get_int(&l, "inv", true, 0);
        s.res = get_int(&l, "res", true, 0);
        ok = !l.bad;
        if (ok)
            g_array_append_val(h->subs, s);
    } else if (strcmp(what, "drained") == 0) {
        int client = (int)get_int(&l, "c", true, 0);
        int64_t t = get_int(&l, "t", true, 0);
        bool complete = get_int(&l, "complete", true, 0) != 0;
        ok = !l.bad;
        for (guint i = 0; ok && i < h->subs->len; i++) {
            hist_sub *s = &g_array_index(h->subs, hist_sub, i);
            if (s->client == client) {
                s->drained = t;
                s->complete = complete;
            }
        }
    } else if (strcmp(what, "ev") == 0) {
        hist_event ev = {0};
        ev.client = (int)get_int(&l, "c", true, 0);
        ev.time = get_int(&l, "t", true, 0);
        ev.seq = (uint64_t)get_int(&l, "seq", true, 0);
        ev.kind = get_enum(&l, "kind", event_names, 4);
        ev.reason = get_enum(&l, "reason", reason_names, N_REASONS);
        ev.external = get_int(&l, "ext", false, 0) != 0;
        const char *k = get(&l, "k", true);
        ev.entry.key = k ? hist_key(h, k) : -1;
        ev.entry.owner = get_owner(&l, "owner");
        ev.entry.meta = get_meta(&l, "meta");
        ev.entry.rev = (uint64_t)get_int(&l, "rev", true, 0);
        ok = !l.bad;
        if (ok)
            g_array_append_val(h->events, ev);
    } else {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "unknown record %s", what);
        ok = false;
    }
    if (!ok && !l.bad && error && *error == NULL)
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "bad %s", what);
    g_hash_table_unref(l.fields);
    return ok;
}

bool hist_load_text(hist *h, const char *text, const char *origin,
                    GError **error)
{
    g_autoptr(GHashTable) open =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GString) line = g_string_new(NULL);
    /* Line by line with memchr(), not g_strsplit(): its strstr() is
     * quadratic under ThreadSanitizer, whose interceptor measures the
     * rest of the text on every call (50 000 operations: 141 s). */
    const char *p = text, *end = text + strlen(text);
    for (guint n = 1; p < end; n++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        /* A writer killed mid-line leaves a torn last line: skip it. */
        if (nl == NULL)
            break;
        g_string_truncate(line, 0);
        g_string_append_len(line, p, nl - p);
        p = nl + 1;
        GError *e = NULL;
        if (!parse_line(h, line->str, open, &e)) {
            g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "%s:%u: %s", origin, n,
                        e ? e->message : "bad line");
            g_clear_error(&e);
            return false;
        }
    }
    return true;
}

bool hist_load_file(hist *h, const char *path, GError **error)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, error))
        return false;
    return hist_load_text(h, text, path, error);
}

/* ---- descriptions ---- */

static void append_time(GString *out, const hist *h, int64_t t)
{
    if (t == HIST_PENDING)
        g_string_append(out, "     pending");
    else
        g_string_append_printf(out, "%10.6f s", (double)(t - h->t0) / 1e9);
}

static const char *owner_name(const hist *h, int owner)
{
    return owner >= 0 ? (const char *)h->owners->pdata[owner] : "?";
}

static void append_item(GString *out, const hist *h, const hist_item *it,
                        bool with_key)
{
    if (with_key)
        g_string_append_printf(out, "%s=", (char *)h->keys->pdata[it->key]);
    g_string_append_printf(out, "{owner %s rev %" PRIu64 " meta ",
                           owner_name(h, it->owner), it->rev);
    hist_meta_append(out, &it->meta);
    g_string_append_c(out, '}');
}

void hist_op_describe(const hist *h, const hist_op *op, GString *out)
{
    if (op->kind == HIST_DEATH) {
        g_string_append(out, "fault [");
        append_time(out, h, op->inv);
        g_string_append(out, ", ");
        append_time(out, h, op->confirmed);
        g_string_append_printf(out, "] owner %s killed (SIGKILL .. waitpid)",
                               owner_name(h, op->owner));
        return;
    }
    g_string_append_printf(out, "c%-4d [", op->client);
    append_time(out, h, op->inv);
    g_string_append(out, ", ");
    append_time(out, h, op->res);
    g_string_append_printf(out, "] %s", kind_names[op->kind]);
    if (op->key >= 0)
        g_string_append_printf(out, " %s", (char *)h->keys->pdata[op->key]);
    switch (op->kind) {
    case HIST_REGISTER:
        g_string_append_printf(out, " owner %s meta ",
                               owner_name(h, op->owner));
        hist_meta_append(out, &op->meta);
        break;
    case HIST_UPDATE:
        g_string_append_printf(out, " %s ", op->merge ? "merge" : "replace");
        hist_meta_append(out, &op->meta);
        /* fall through */
    case HIST_UNREGISTER:
        if (op->if_rev)
            g_string_append_printf(out, " if rev %" PRIu64, op->if_rev);
        g_string_append_printf(out, " by %s%s", owner_name(h, op->owner),
                               op->force ? " FORCE" : "");
        break;
    case HIST_FIND:
        g_string_append_printf(out, " %s == %" PRId64, field_names[op->field],
                               op->value);
        break;
    default:
        break;
    }
    g_string_append(out, " -> ");
    if (op->res == HIST_PENDING) {
        g_string_append(out, "(no answer)");
        return;
    }
    if (op->rc != 0) {
        g_string_append(out, procreg_strerror(op->rc));
        if (op->kind == HIST_REGISTER && op->rc == PROCREG_EEXISTS) {
            g_string_append(out, " held by ");
            append_item(out, h, &op->got, false);
        }
        return;
    }
    switch (op->kind) {
    case HIST_REGISTER:
    case HIST_UPDATE:
        g_string_append_printf(out, "ok rev %" PRIu64, op->got.rev);
        break;
    case HIST_LOOKUP:
        g_string_append_printf(out, "owner %s", owner_name(h, op->got.owner));
        break;
    case HIST_LOOKUP_ENTRY:
        append_item(out, h, &op->got, false);
        break;
    case HIST_LIST:
    case HIST_FIND:
        g_string_append_printf(out, "%zu entries", op->n_items);
        for (size_t i = 0; i < op->n_items; i++) {
            g_string_append_c(out, ' ');
            append_item(out, h, &op->items[i], true);
        }
        break;
    default:
        g_string_append(out, "ok");
        break;
    }
}

void hist_event_describe(const hist *h, const hist_event *ev, GString *out)
{
    g_string_append_printf(out, "c%-4d [", ev->client);
    append_time(out, h, ev->time);
    g_string_append_printf(out, "] event #%" PRIu64 " %s%s %s ", ev->seq,
                           event_names[ev->kind < 4 ? ev->kind : 0],
                           ev->external ? " (external)" : "",
                           (char *)h->keys->pdata[ev->entry.key]);
    append_item(out, h, &ev->entry, false);
    if (ev->reason != 0)
        g_string_append_printf(out, " reason %s",
                               reason_names[ev->reason < N_REASONS ? ev->reason
                                                                   : 0]);
}
