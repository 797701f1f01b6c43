/*
 * Filters for procreg_select(): the tree of terms and combinators, its
 * builders, its evaluation against an entry, its text form (which
 * filter-parse.c reads back), and the terms an index can answer.
 *
 * A filter is immutable once built and reference counted, so threads share
 * it freely.  Nesting is bounded (PROCREG_FILTER_DEPTH_MAX) so evaluation,
 * printing and freeing recurse a bounded depth whatever the input.
 *
 * Comparison rules (procreg.h has them for users): a metadata value is a
 * string (s, o, g), a boolean, an integer (any width; compared by value)
 * or a double; anything else matches no comparison.  == and != need the
 * same class (an integer never equals a double), which is procreg_find()'s
 * equality, so an index answers == exactly.  <, <=, >, >= order numbers
 * (integers and doubles by value) and strings (bytewise).  startswith and
 * glob take strings.  A term on a key the entry lacks is false, != too.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

typedef enum { NODE_AND, NODE_OR, NODE_NOT, NODE_NAME, NODE_PID, NODE_META,
               NODE_EXISTS } node_kind;

typedef enum { CLASS_NONE, CLASS_STRING, CLASS_BOOL, CLASS_INT,
               CLASS_DOUBLE } value_class;

/* A value of a term or of a metadata entry.  Integers: @big says the value
 * is above INT64_MAX and lives in @u, else in @i. */
typedef struct {
    value_class cls;
    bool big;
    int64_t i;
    uint64_t u;
    double d;
    bool b;
    const char *s; /* borrowed from the GVariant / the node */
} fvalue;

struct procreg_filter {
    gint refcount;
    node_kind kind;
    int depth; /* 1 for a term */
    procreg_filter_op op;
    char *key;     /* NODE_META, NODE_EXISTS */
    char *text;    /* NODE_NAME, string literals */
    fvalue v;      /* the literal of a term */
    GPatternSpec *glob;
    procreg_filter *a, *b;
};

/* ---- values ---- */

static fvalue value_of(GVariant *v)
{
    fvalue r = {.cls = CLASS_NONE};
    switch (g_variant_classify(v)) {
    case G_VARIANT_CLASS_STRING:
    case G_VARIANT_CLASS_OBJECT_PATH:
    case G_VARIANT_CLASS_SIGNATURE:
        r.cls = CLASS_STRING;
        r.s = g_variant_get_string(v, NULL);
        break;
    case G_VARIANT_CLASS_BOOLEAN:
        r.cls = CLASS_BOOL;
        r.b = g_variant_get_boolean(v);
        break;
    case G_VARIANT_CLASS_DOUBLE:
        r.cls = CLASS_DOUBLE;
        r.d = g_variant_get_double(v);
        break;
    case G_VARIANT_CLASS_BYTE: r.cls = CLASS_INT; r.i = g_variant_get_byte(v); break;
    case G_VARIANT_CLASS_INT16: r.cls = CLASS_INT; r.i = g_variant_get_int16(v); break;
    case G_VARIANT_CLASS_UINT16: r.cls = CLASS_INT; r.i = g_variant_get_uint16(v); break;
    case G_VARIANT_CLASS_INT32: r.cls = CLASS_INT; r.i = g_variant_get_int32(v); break;
    case G_VARIANT_CLASS_UINT32: r.cls = CLASS_INT; r.i = g_variant_get_uint32(v); break;
    case G_VARIANT_CLASS_HANDLE: r.cls = CLASS_INT; r.i = g_variant_get_handle(v); break;
    case G_VARIANT_CLASS_INT64: r.cls = CLASS_INT; r.i = g_variant_get_int64(v); break;
    case G_VARIANT_CLASS_UINT64:
        r.cls = CLASS_INT;
        r.u = g_variant_get_uint64(v);
        r.big = r.u > (uint64_t)INT64_MAX;
        r.i = r.big ? 0 : (int64_t)r.u;
        break;
    default:
        break;
    }
    return r;
}

static int int_cmp(const fvalue *x, const fvalue *y)
{
    if (x->big || y->big) {
        if (x->big && y->big)
            return (x->u > y->u) - (x->u < y->u);
        return x->big ? 1 : -1;
    }
    return (x->i > y->i) - (x->i < y->i);
}

static long double as_long_double(const fvalue *x)
{
    if (x->cls == CLASS_DOUBLE)
        return x->d;
    return x->big ? (long double)x->u : (long double)x->i;
}

/* Whether @x @op @y holds (the rules at the top). */
static bool compare(const fvalue *x, procreg_filter_op op, const fvalue *y,
                    const GPatternSpec *glob)
{
    if (op == PROCREG_FILTER_PREFIX)
        return x->cls == CLASS_STRING && g_str_has_prefix(x->s, y->s);
    if (op == PROCREG_FILTER_GLOB)
        return x->cls == CLASS_STRING &&
               g_pattern_spec_match_string((GPatternSpec *)glob, x->s);
    int c;
    if (op == PROCREG_FILTER_EQ || op == PROCREG_FILTER_NE) {
        if (x->cls != y->cls || x->cls == CLASS_NONE)
            return false;
        switch (x->cls) {
        case CLASS_STRING: c = strcmp(x->s, y->s); break;
        case CLASS_BOOL: c = x->b != y->b; break;
        case CLASS_INT: c = int_cmp(x, y); break;
        default: c = x->d == y->d ? 0 : 1; break; /* NaN equals nothing */
        }
        return op == PROCREG_FILTER_EQ ? c == 0 : c != 0;
    }
    bool xn = x->cls == CLASS_INT || x->cls == CLASS_DOUBLE;
    bool yn = y->cls == CLASS_INT || y->cls == CLASS_DOUBLE;
    if (x->cls == CLASS_STRING && y->cls == CLASS_STRING) {
        c = strcmp(x->s, y->s);
    } else if (x->cls == CLASS_INT && y->cls == CLASS_INT) {
        c = int_cmp(x, y);
    } else if (xn && yn) {
        long double a = as_long_double(x), b = as_long_double(y);
        if (isnan(a) || isnan(b))
            return false;
        c = (a > b) - (a < b);
    } else {
        return false;
    }
    switch (op) {
    case PROCREG_FILTER_LT: return c < 0;
    case PROCREG_FILTER_LE: return c <= 0;
    case PROCREG_FILTER_GT: return c > 0;
    default: return c >= 0;
    }
}

/* ---- nodes ---- */

static procreg_filter *node_new(node_kind kind)
{
    procreg_filter *f = g_new0(procreg_filter, 1);
    f->refcount = 1;
    f->kind = kind;
    f->depth = 1;
    return f;
}

PROCREG_API procreg_filter *procreg_filter_ref(procreg_filter *filter)
{
    g_return_val_if_fail(filter != NULL, NULL);
    g_atomic_int_inc(&filter->refcount);
    return filter;
}

PROCREG_API void procreg_filter_unref(procreg_filter *filter)
{
    if (filter == NULL || !g_atomic_int_dec_and_test(&filter->refcount))
        return;
    procreg_filter_unref(filter->a);
    procreg_filter_unref(filter->b);
    if (filter->glob != NULL)
        g_pattern_spec_free(filter->glob);
    g_free(filter->key);
    g_free(filter->text);
    g_free(filter);
}

static const char *op_text(procreg_filter_op op)
{
    switch (op) {
    case PROCREG_FILTER_EQ: return "==";
    case PROCREG_FILTER_NE: return "!=";
    case PROCREG_FILTER_LT: return "<";
    case PROCREG_FILTER_LE: return "<=";
    case PROCREG_FILTER_GT: return ">";
    case PROCREG_FILTER_GE: return ">=";
    case PROCREG_FILTER_PREFIX: return "startswith";
    case PROCREG_FILTER_GLOB: return "glob";
    }
    return NULL;
}

static int check_op(procreg_filter_op op, GError **error)
{
    return op_text(op) != NULL
               ? 0
               : procreg_set_error(error, PROCREG_EINVAL,
                                   "unknown filter operator %d", (int)op);
}

static int check_key(const char *key, GError **error)
{
    if (key == NULL || *key == '\0')
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "filter: the metadata key is empty");
    if (!g_utf8_validate(key, -1, NULL))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "filter: the metadata key is not valid "
                                 "UTF-8");
    return 0;
}

/* A string term (a name, or a string literal of a metadata term). */
static int string_term(procreg_filter *f, procreg_filter_op op,
                       const char *text, GError **error)
{
    if (text == NULL || !g_utf8_validate(text, -1, NULL))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "filter: a string to compare with must be "
                                 "valid UTF-8");
    f->text = g_strdup(text);
    f->v.cls = CLASS_STRING;
    f->v.s = f->text;
    if (op == PROCREG_FILTER_GLOB)
        f->glob = g_pattern_spec_new(text);
    return 0;
}

static int built(procreg_filter *f, int rc, procreg_filter **out)
{
    if (rc != 0) {
        procreg_filter_unref(f);
        return rc;
    }
    *out = f;
    return 0;
}

PROCREG_API int procreg_filter_new_name(procreg_filter_op op, const char *text,
                                        procreg_filter **out, GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    *out = NULL;
    procreg_filter *f = node_new(NODE_NAME);
    f->op = op;
    int rc = check_op(op, error);
    if (rc == 0)
        rc = string_term(f, op, text, error);
    return built(f, rc, out);
}

PROCREG_API int procreg_filter_new_pid(procreg_filter_op op, int64_t pid,
                                       procreg_filter **out, GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    *out = NULL;
    procreg_filter *f = node_new(NODE_PID);
    f->op = op;
    f->v.cls = CLASS_INT;
    f->v.i = pid;
    int rc = check_op(op, error);
    if (rc == 0 && (op == PROCREG_FILTER_PREFIX || op == PROCREG_FILTER_GLOB))
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "filter: pid compares with ==, !=, <, <=, > "
                               "and >=, not %s", op_text(op));
    return built(f, rc, out);
}

PROCREG_API int procreg_filter_new_meta(const char *key, procreg_filter_op op,
                                        GVariant *value, procreg_filter **out,
                                        GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    *out = NULL;
    if (value != NULL)
        g_variant_ref_sink(value);
    procreg_filter *f = node_new(NODE_META);
    f->op = op;
    int rc = check_op(op, error);
    if (rc == 0)
        rc = check_key(key, error);
    if (rc == 0) {
        f->key = g_strdup(key);
        f->v = value != NULL ? value_of(value) : (fvalue){.cls = CLASS_NONE};
    }
    bool text_op = op == PROCREG_FILTER_PREFIX || op == PROCREG_FILTER_GLOB;
    if (rc == 0 && f->v.cls == CLASS_NONE)
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "filter: '%s' compares with a string, a "
                               "boolean, an integer or a double, not %s", key,
                               value ? g_variant_get_type_string(value)
                                     : "NULL");
    else if (rc == 0 && f->v.cls == CLASS_STRING)
        rc = string_term(f, op, f->v.s, error);
    else if (rc == 0 && text_op)
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "filter: %s takes a string", op_text(op));
    else if (rc == 0 && f->v.cls == CLASS_BOOL && op != PROCREG_FILTER_EQ &&
             op != PROCREG_FILTER_NE)
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "filter: booleans compare with == and != only");
    else if (rc == 0 && f->v.cls == CLASS_DOUBLE && !isfinite(f->v.d))
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "filter: a double to compare with must be "
                               "finite");
    if (value != NULL)
        g_variant_unref(value); /* string literals were copied */
    return built(f, rc, out);
}

PROCREG_API int procreg_filter_new_exists(const char *key,
                                          procreg_filter **out,
                                          GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    *out = NULL;
    procreg_filter *f = node_new(NODE_EXISTS);
    int rc = check_key(key, error);
    if (rc == 0)
        f->key = g_strdup(key);
    return built(f, rc, out);
}

static int combine(node_kind kind, procreg_filter *a, procreg_filter *b,
                   procreg_filter **out, GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    *out = NULL;
    if (a == NULL || (kind != NODE_NOT && b == NULL))
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "filter: a combinator needs its filters");
    int depth = 1 + MAX(a->depth, b != NULL ? b->depth : 0);
    if (depth > PROCREG_FILTER_DEPTH_MAX)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "filter: nested deeper than %d",
                                 PROCREG_FILTER_DEPTH_MAX);
    procreg_filter *f = node_new(kind);
    f->depth = depth;
    f->a = procreg_filter_ref(a);
    f->b = b != NULL ? procreg_filter_ref(b) : NULL;
    *out = f;
    return 0;
}

PROCREG_API int procreg_filter_and(procreg_filter *a, procreg_filter *b,
                                   procreg_filter **out, GError **error)
{
    return combine(NODE_AND, a, b, out, error);
}

PROCREG_API int procreg_filter_or(procreg_filter *a, procreg_filter *b,
                                  procreg_filter **out, GError **error)
{
    return combine(NODE_OR, a, b, out, error);
}

PROCREG_API int procreg_filter_not(procreg_filter *a, procreg_filter **out,
                                   GError **error)
{
    return combine(NODE_NOT, a, NULL, out, error);
}

/* ---- evaluation ---- */

PROCREG_API bool procreg_filter_matches(const procreg_filter *f,
                                        const procreg_entry *entry)
{
    g_return_val_if_fail(f != NULL && entry != NULL, false);
    switch (f->kind) {
    case NODE_AND:
        return procreg_filter_matches(f->a, entry) &&
               procreg_filter_matches(f->b, entry);
    case NODE_OR:
        return procreg_filter_matches(f->a, entry) ||
               procreg_filter_matches(f->b, entry);
    case NODE_NOT:
        return !procreg_filter_matches(f->a, entry);
    case NODE_NAME: {
        fvalue x = {.cls = CLASS_STRING, .s = entry->name};
        return entry->name != NULL && compare(&x, f->op, &f->v, f->glob);
    }
    case NODE_PID: {
        fvalue x = {.cls = CLASS_INT, .i = entry->owner.pid};
        return compare(&x, f->op, &f->v, NULL);
    }
    case NODE_EXISTS:
    case NODE_META: {
        if (entry->metadata == NULL)
            return false;
        GVariant *v = g_variant_lookup_value(entry->metadata, f->key, NULL);
        if (v == NULL)
            return false;
        bool r = true;
        if (f->kind == NODE_META) {
            fvalue x = value_of(v);
            r = compare(&x, f->op, &f->v, f->glob);
        }
        g_variant_unref(v);
        return r;
    }
    }
    return false;
}

/* ---- text ---- */

PROCREG_INTERNAL bool procreg_filter_is_keyword(const char *s, size_t len)
{
    static const char *const words[] = {"and", "or", "not", "exists",
                                        "name", "pid", "true", "false",
                                        "startswith", "glob", "meta"};
    for (size_t i = 0; i < G_N_ELEMENTS(words); i++)
        if (strlen(words[i]) == len && strncmp(s, words[i], len) == 0)
            return true;
    return false;
}

/* Whether @key can be written bare: an identifier that is no keyword. */
static bool bare_key(const char *key)
{
    size_t len = strlen(key);
    if (!(g_ascii_isalpha(key[0]) || key[0] == '_') ||
        procreg_filter_is_keyword(key, len))
        return false;
    for (size_t i = 1; i < len; i++)
        if (!(g_ascii_isalnum(key[i]) || key[i] == '_' || key[i] == '.' ||
              key[i] == '-'))
            return false;
    return true;
}

static void append_string(GString *o, const char *s)
{
    g_string_append_c(o, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            g_string_append_printf(o, "\\%c", *p);
        else if (*p == '\n')
            g_string_append(o, "\\n");
        else if (*p == '\t')
            g_string_append(o, "\\t");
        else if (*p < 0x20 || *p == 0x7f)
            g_string_append_printf(o, "\\u%04x", *p);
        else
            g_string_append_c(o, (char)*p);
    }
    g_string_append_c(o, '"');
}

static void append_key(GString *o, const char *key)
{
    if (bare_key(key)) {
        g_string_append(o, key);
    } else {
        g_string_append(o, "meta[");
        append_string(o, key);
        g_string_append_c(o, ']');
    }
}

static void append_value(GString *o, const fvalue *v)
{
    switch (v->cls) {
    case CLASS_STRING: append_string(o, v->s); break;
    case CLASS_BOOL: g_string_append(o, v->b ? "true" : "false"); break;
    case CLASS_INT:
        if (v->big)
            g_string_append_printf(o, "%" G_GUINT64_FORMAT, v->u);
        else
            g_string_append_printf(o, "%" G_GINT64_FORMAT, v->i);
        break;
    default: {
        /* Shortest text that reads back as the same double, and as a
         * double (a '.' or an exponent). */
        char buf[G_ASCII_DTOSTR_BUF_SIZE];
        g_ascii_dtostr(buf, sizeof buf, v->d);
        g_string_append(o, buf);
        if (strpbrk(buf, ".eE") == NULL)
            g_string_append(o, ".0");
    }
    }
}

static int precedence(const procreg_filter *f)
{
    switch (f->kind) {
    case NODE_OR: return 1;
    case NODE_AND: return 2;
    case NODE_NOT: return 3;
    default: return 4;
    }
}

static void append_filter(GString *o, const procreg_filter *f, int min_prec)
{
    int prec = precedence(f);
    bool parens = prec < min_prec;
    if (parens)
        g_string_append_c(o, '(');
    switch (f->kind) {
    case NODE_AND:
    case NODE_OR:
        /* Left-associative: a right operand of the same kind is wrapped. */
        append_filter(o, f->a, prec);
        g_string_append(o, f->kind == NODE_AND ? " and " : " or ");
        append_filter(o, f->b, prec + 1);
        break;
    case NODE_NOT:
        g_string_append(o, "not ");
        append_filter(o, f->a, prec);
        break;
    case NODE_EXISTS:
        g_string_append(o, "exists ");
        append_key(o, f->key);
        break;
    default:
        if (f->kind == NODE_NAME)
            g_string_append(o, "name");
        else if (f->kind == NODE_PID)
            g_string_append(o, "pid");
        else
            append_key(o, f->key);
        g_string_append_printf(o, " %s ", op_text(f->op));
        append_value(o, &f->v);
    }
    if (parens)
        g_string_append_c(o, ')');
}

PROCREG_API char *procreg_filter_to_string(const procreg_filter *filter)
{
    g_return_val_if_fail(filter != NULL, NULL);
    GString *o = g_string_new(NULL);
    append_filter(o, filter, 0);
    return g_string_free(o, FALSE);
}

/* ---- what an index can answer ---- */

/* The first term of @f's top-level "and" chain that @want accepts. */
static const procreg_filter *conjunct(const procreg_filter *f,
                                      bool (*want)(const procreg_filter *))
{
    if (f->kind == NODE_AND) {
        const procreg_filter *t = conjunct(f->a, want);
        return t != NULL ? t : conjunct(f->b, want);
    }
    return want(f) ? f : NULL;
}

static bool indexable_eq(const procreg_filter *f)
{
    return f->kind == NODE_META && f->op == PROCREG_FILTER_EQ &&
           (f->v.cls == CLASS_STRING || f->v.cls == CLASS_BOOL ||
            f->v.cls == CLASS_INT);
}

static bool name_eq(const procreg_filter *f)
{
    return f->kind == NODE_NAME && f->op == PROCREG_FILTER_EQ;
}

PROCREG_INTERNAL const char *
procreg_filter_index_term(const procreg_filter *f, GVariant **value)
{
    const procreg_filter *t = conjunct(f, indexable_eq);
    if (t == NULL)
        return NULL;
    switch (t->v.cls) {
    case CLASS_STRING: *value = g_variant_new_string(t->v.s); break;
    case CLASS_BOOL: *value = g_variant_new_boolean(t->v.b); break;
    default:
        *value = t->v.big ? g_variant_new_uint64(t->v.u)
                          : g_variant_new_int64(t->v.i);
    }
    g_variant_ref_sink(*value);
    return t->key;
}

PROCREG_INTERNAL const char *procreg_filter_name_term(const procreg_filter *f)
{
    const procreg_filter *t = conjunct(f, name_eq);
    return t != NULL ? t->text : NULL;
}
