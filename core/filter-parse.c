/*
 * The text form of filters: procreg_filter_parse() reads what
 * procreg_filter_to_string() writes (and what people type), and builds the
 * filter with the builders of filter.c.  A recursive-descent parser over a
 * small tokenizer; every error says at which byte and what it expected,
 * as text and as data (procreg_error_get_details(): position and
 * alternatives).  Nesting is bounded by the builders'
 * PROCREG_FILTER_DEPTH_MAX, so the recursion is bounded too.
 *
 *   filter  := or
 *   or      := and ("or" and)*
 *   and     := not ("and" not)*
 *   not     := "not" not | primary
 *   primary := "(" or ")" | "exists" key | "name" op STRING
 *            | "pid" cmp INTEGER | key op value
 *   key     := IDENT (not a keyword) | "meta" "[" STRING "]"
 *   op      := cmp | "startswith" | "glob"
 *   cmp     := "==" | "!=" | "<" | "<=" | ">" | ">="
 *   value   := STRING | INTEGER | DOUBLE | "true" | "false"
 */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <string.h>

typedef enum {
    TOK_END, TOK_LPAREN, TOK_RPAREN, TOK_LBRACKET, TOK_RBRACKET, TOK_CMP,
    TOK_STRING, TOK_INT, TOK_DOUBLE, TOK_IDENT
} tok_kind;

typedef struct {
    tok_kind kind;
    size_t pos, len;
    procreg_filter_op op; /* TOK_CMP */
    char *str;            /* TOK_STRING, decoded */
    bool big;             /* TOK_INT above INT64_MAX, in u */
    int64_t i;
    uint64_t u;
    double d;
} token;

typedef struct {
    const char *text;
    size_t at;  /* where the tokenizer reads next */
    token tok;  /* the current token */
    GError **error;
    bool failed;
} parser;

/* What may come where: the alternatives of an error's details. */
static const char *const expect_term[] = {"(", "not", "exists", "name", "pid",
                                          "a metadata key", NULL};
static const char *const expect_op[] = {"==", "!=", "<", "<=", ">", ">=",
                                        "startswith", "glob", NULL};
static const char *const expect_cmp[] = {"==", "!=", "<", "<=", ">", ">=",
                                         NULL};
static const char *const expect_value[] = {"a string", "a number", "true",
                                           "false", NULL};
static const char *const expect_string[] = {"a string", NULL};
static const char *const expect_integer[] = {"an integer", NULL};
static const char *const expect_key[] = {"a metadata key", "meta[\"...\"]",
                                         NULL};
static const char *const expect_lbracket[] = {"[", NULL};
static const char *const expect_rbracket[] = {"]", NULL};
static const char *const expect_next[] = {"and", "or", "the end", NULL};
static const char *const expect_next_in[] = {"and", "or", ")", NULL};

/* ---- errors ---- */

/* Fail at @pos, expecting @expected; @fmt says what was found or wrong. */
static void fail(parser *p, size_t pos, const char *const *expected,
                 const char *fmt, ...) G_GNUC_PRINTF(4, 5);
static void fail(parser *p, size_t pos, const char *const *expected,
                 const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = true;
    va_list ap;
    va_start(ap, fmt);
    char *what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    GString *exp = g_string_new(NULL);
    for (size_t i = 0; expected != NULL && expected[i] != NULL; i++)
        g_string_append_printf(exp, "%s%s", i == 0 ? "" : ", ", expected[i]);
    procreg_set_error(p->error, PROCREG_EINVAL,
                      "filter: at byte %zu: %s%s%s", pos, what,
                      exp->len ? "; expected " : "", exp->str);
    procreg_error_detail_position(p->error, (int)MIN(pos, (size_t)G_MAXINT));
    if (expected != NULL)
        procreg_error_detail_alternatives(p->error, (char **)expected);
    g_string_free(exp, TRUE);
    g_free(what);
}

/* A builder's refusal, reported at the term it was for. */
static void fail_built(parser *p, size_t pos, GError *built)
{
    if (!p->failed)
        fail(p, pos, NULL, "%s", built->message + (g_str_has_prefix(
                                                       built->message,
                                                       "filter: ")
                                                       ? 8
                                                       : 0));
    g_error_free(built);
}

/* The current token as quoted text, for messages. */
static char *found(const parser *p)
{
    if (p->tok.kind == TOK_END)
        return g_strdup("the end of the filter");
    size_t len = MIN(p->tok.len, 24);
    char *t = g_strndup(p->text + p->tok.pos, len);
    char *s = g_strdup_printf("'%s%s'", t, len < p->tok.len ? "..." : "");
    g_free(t);
    return s;
}

static void fail_found(parser *p, const char *const *expected)
{
    char *f = found(p);
    fail(p, p->tok.pos, expected, "found %s", f);
    g_free(f);
}

/* ---- tokens ---- */

static void utf8_append(GString *s, gunichar c)
{
    char buf[6];
    g_string_append_len(s, buf, g_unichar_to_utf8(c, buf));
}

/* A string literal at p->at (the opening quote). */
static void read_string(parser *p, token *t)
{
    GString *s = g_string_new(NULL);
    size_t i = p->at + 1;
    for (;;) {
        char c = p->text[i];
        if (c == '\0') {
            fail(p, p->at, NULL, "the string is not closed");
            break;
        }
        if (c == '"') {
            i++;
            break;
        }
        if (c != '\\') {
            g_string_append_c(s, c);
            i++;
            continue;
        }
        char e = p->text[i + 1];
        if (e != '\0' && strchr("\"\\/ntr", e) != NULL) {
            g_string_append_c(s, e == 'n' ? '\n' : e == 't' ? '\t'
                                 : e == 'r' ? '\r' : e);
            i += 2;
            continue;
        }
        if (e == 'u') {
            gunichar u = 0;
            int n = 0;
            for (; n < 4 && g_ascii_isxdigit(p->text[i + 2 + n]); n++)
                u = u * 16 + (gunichar)g_ascii_xdigit_value(p->text[i + 2 + n]);
            if (n == 4 && u != 0 && g_unichar_validate(u)) {
                utf8_append(s, u);
                i += 6;
                continue;
            }
        }
        fail(p, i, NULL, "bad escape in a string (\\\" \\\\ \\/ \\n \\t \\r "
             "\\uXXXX, not U+0000 or a surrogate)");
        break;
    }
    if (!p->failed && !g_utf8_validate(s->str, (gssize)s->len, NULL))
        fail(p, p->at, NULL, "the string is not valid UTF-8");
    t->kind = TOK_STRING;
    t->str = g_string_free(s, FALSE);
    t->len = i - p->at;
}

/* A number at p->at: an integer, or a double with '.' or an exponent. */
static void read_number(parser *p, token *t)
{
    const char *s = p->text + p->at;
    size_t n = 0;
    bool is_double = false;
    if (s[n] == '-')
        n++;
    while (g_ascii_isdigit(s[n]))
        n++;
    if (s[n] == '.' && g_ascii_isdigit(s[n + 1])) {
        is_double = true;
        for (n++; g_ascii_isdigit(s[n]); n++)
            ;
    }
    if ((s[n] == 'e' || s[n] == 'E') &&
        (g_ascii_isdigit(s[n + 1]) ||
         ((s[n + 1] == '+' || s[n + 1] == '-') && g_ascii_isdigit(s[n + 2])))) {
        is_double = true;
        for (n += 2; g_ascii_isdigit(s[n]); n++)
            ;
    }
    t->len = n;
    char *text = g_strndup(s, n);
    if (is_double) {
        t->kind = TOK_DOUBLE;
        errno = 0;
        t->d = g_ascii_strtod(text, NULL);
        if (errno != 0 || !isfinite(t->d))
            fail(p, p->at, NULL, "the number %s is out of range", text);
    } else {
        t->kind = TOK_INT;
        if (text[0] == '-') {
            if (!g_ascii_string_to_signed(text, 10, G_MININT64, 0, &t->i,
                                          NULL))
                fail(p, p->at, NULL, "the integer %s is out of range", text);
        } else if (!g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT64,
                                               &t->u, NULL)) {
            fail(p, p->at, NULL, "the integer %s is out of range", text);
        } else {
            t->big = t->u > (uint64_t)INT64_MAX;
            t->i = t->big ? 0 : (int64_t)t->u;
        }
    }
    g_free(text);
}

static void next(parser *p)
{
    g_free(p->tok.str);
    token t = {0};
    while (p->text[p->at] == ' ' || p->text[p->at] == '\t' ||
           p->text[p->at] == '\n' || p->text[p->at] == '\r')
        p->at++;
    t.pos = p->at;
    const char *s = p->text + p->at;
    t.len = 1;
    switch (s[0]) {
    case '\0': t.kind = TOK_END; t.len = 0; break;
    case '(': t.kind = TOK_LPAREN; break;
    case ')': t.kind = TOK_RPAREN; break;
    case '[': t.kind = TOK_LBRACKET; break;
    case ']': t.kind = TOK_RBRACKET; break;
    case '"': read_string(p, &t); break;
    case '=': case '!': case '<': case '>':
        t.kind = TOK_CMP;
        t.len = s[1] == '=' ? 2 : 1;
        if (s[0] == '=' && t.len == 2) t.op = PROCREG_FILTER_EQ;
        else if (s[0] == '!' && t.len == 2) t.op = PROCREG_FILTER_NE;
        else if (s[0] == '<') t.op = t.len == 2 ? PROCREG_FILTER_LE : PROCREG_FILTER_LT;
        else if (s[0] == '>') t.op = t.len == 2 ? PROCREG_FILTER_GE : PROCREG_FILTER_GT;
        else fail(p, p->at, expect_cmp, "'%c' is not an operator", s[0]);
        break;
    default:
        if (g_ascii_isdigit(s[0]) || (s[0] == '-' && g_ascii_isdigit(s[1]))) {
            read_number(p, &t);
        } else if (g_ascii_isalpha(s[0]) || s[0] == '_') {
            t.kind = TOK_IDENT;
            size_t n = 1;
            while (g_ascii_isalnum(s[n]) || s[n] == '_' || s[n] == '.' ||
                   s[n] == '-')
                n++;
            t.len = n;
        } else {
            gunichar c = g_utf8_get_char_validated(s, -1);
            if (c == (gunichar)-1 || c == (gunichar)-2)
                fail(p, p->at, NULL, "the filter is not valid UTF-8");
            else
                fail(p, p->at, expect_term, "unexpected character U+%04X",
                     (unsigned)c);
        }
    }
    if (p->failed)
        t.kind = TOK_END; /* nothing more is read */
    p->at += t.len;
    p->tok = t;
}

static bool is_word(const parser *p, const char *word)
{
    return p->tok.kind == TOK_IDENT && p->tok.len == strlen(word) &&
           strncmp(p->text + p->tok.pos, word, p->tok.len) == 0;
}

static bool is_keyword_token(const parser *p)
{
    return p->tok.kind == TOK_IDENT &&
           procreg_filter_is_keyword(p->text + p->tok.pos, p->tok.len);
}

/* ---- grammar ---- */

static procreg_filter *parse_or(parser *p, int parens);

/* key := IDENT (not a keyword) | "meta" "[" STRING "]"; g_free it. */
static char *parse_key(parser *p)
{
    if (is_word(p, "meta")) {
        next(p);
        if (p->tok.kind != TOK_LBRACKET) {
            fail_found(p, expect_lbracket);
            return NULL;
        }
        next(p);
        if (p->tok.kind != TOK_STRING) {
            fail_found(p, expect_string);
            return NULL;
        }
        char *key = g_strdup(p->tok.str);
        next(p);
        if (p->tok.kind != TOK_RBRACKET) {
            fail_found(p, expect_rbracket);
            g_free(key);
            return NULL;
        }
        next(p);
        return key;
    }
    if (p->tok.kind != TOK_IDENT || is_keyword_token(p)) {
        fail_found(p, expect_key);
        return NULL;
    }
    char *key = g_strndup(p->text + p->tok.pos, p->tok.len);
    next(p);
    return key;
}

/* op := cmp | "startswith" | "glob" (only cmp when !@text_ops). */
static bool parse_op(parser *p, bool text_ops, procreg_filter_op *op)
{
    if (p->tok.kind == TOK_CMP)
        *op = p->tok.op;
    else if (text_ops && is_word(p, "startswith"))
        *op = PROCREG_FILTER_PREFIX;
    else if (text_ops && is_word(p, "glob"))
        *op = PROCREG_FILTER_GLOB;
    else {
        fail_found(p, text_ops ? expect_op : expect_cmp);
        return false;
    }
    next(p);
    return true;
}

/* The literal of a metadata term, or NULL (failed). */
static GVariant *parse_value(parser *p)
{
    GVariant *v = NULL;
    switch (p->tok.kind) {
    case TOK_STRING: v = g_variant_new_string(p->tok.str); break;
    case TOK_DOUBLE: v = g_variant_new_double(p->tok.d); break;
    case TOK_INT:
        v = p->tok.big ? g_variant_new_uint64(p->tok.u)
                       : g_variant_new_int64(p->tok.i);
        break;
    default:
        if (is_word(p, "true") || is_word(p, "false"))
            v = g_variant_new_boolean(is_word(p, "true"));
    }
    if (v == NULL)
        fail_found(p, expect_value);
    else
        next(p);
    return v;
}

static procreg_filter *parse_term(parser *p)
{
    size_t at = p->tok.pos;
    procreg_filter *f = NULL;
    GError *built = NULL;
    int rc = 0;
    if (is_word(p, "exists")) {
        next(p);
        char *key = parse_key(p);
        if (key != NULL)
            rc = procreg_filter_new_exists(key, &f, &built);
        g_free(key);
    } else if (is_word(p, "name")) {
        procreg_filter_op op;
        next(p);
        if (parse_op(p, true, &op)) {
            if (p->tok.kind != TOK_STRING) {
                fail_found(p, expect_string);
            } else {
                rc = procreg_filter_new_name(op, p->tok.str, &f, &built);
                next(p);
            }
        }
    } else if (is_word(p, "pid")) {
        procreg_filter_op op;
        next(p);
        if (parse_op(p, false, &op)) {
            if (p->tok.kind != TOK_INT || p->tok.big) {
                fail_found(p, expect_integer);
            } else {
                rc = procreg_filter_new_pid(op, p->tok.i, &f, &built);
                next(p);
            }
        }
    } else if (p->tok.kind == TOK_IDENT &&
               (!is_keyword_token(p) || is_word(p, "meta"))) {
        char *key = parse_key(p);
        procreg_filter_op op;
        GVariant *v = NULL;
        if (key != NULL && parse_op(p, true, &op) &&
            (v = parse_value(p)) != NULL)
            rc = procreg_filter_new_meta(key, op, v, &f, &built);
        g_free(key);
    } else {
        fail_found(p, expect_term);
    }
    if (rc != 0)
        fail_built(p, at, built);
    return f;
}

static procreg_filter *parse_primary(parser *p, int parens)
{
    if (p->tok.kind != TOK_LPAREN)
        return parse_term(p);
    size_t at = p->tok.pos;
    if (parens >= PROCREG_FILTER_DEPTH_MAX) {
        fail(p, at, NULL, "parentheses nested deeper than %d",
             PROCREG_FILTER_DEPTH_MAX);
        return NULL;
    }
    next(p);
    procreg_filter *f = parse_or(p, parens + 1);
    if (f != NULL && p->tok.kind != TOK_RPAREN) {
        fail_found(p, expect_next_in);
        procreg_filter_unref(f);
        return NULL;
    }
    if (f != NULL)
        next(p);
    return f;
}

/* not := "not" not | primary, iterated (a run of nots is bounded by the
 * builders' depth, not by the stack). */
static procreg_filter *parse_not(parser *p, int parens)
{
    GArray *nots = g_array_new(FALSE, FALSE, sizeof(size_t));
    while (is_word(p, "not")) {
        g_array_append_val(nots, p->tok.pos);
        next(p);
    }
    procreg_filter *f = p->failed ? NULL : parse_primary(p, parens);
    for (guint i = nots->len; f != NULL && i-- > 0;) {
        procreg_filter *n = NULL;
        GError *built = NULL;
        if (procreg_filter_not(f, &n, &built) != 0)
            fail_built(p, g_array_index(nots, size_t, i), built);
        procreg_filter_unref(f);
        f = n;
    }
    g_array_unref(nots);
    return f;
}

/* One left-associative chain of @word over @operand. */
static procreg_filter *parse_chain(parser *p, int parens, const char *word,
                                   procreg_filter *(*operand)(parser *, int),
                                   int (*join)(procreg_filter *,
                                               procreg_filter *,
                                               procreg_filter **, GError **))
{
    procreg_filter *f = operand(p, parens);
    while (f != NULL && is_word(p, word)) {
        size_t at = p->tok.pos;
        next(p);
        procreg_filter *b = p->failed ? NULL : operand(p, parens);
        procreg_filter *j = NULL;
        GError *built = NULL;
        if (b != NULL && join(f, b, &j, &built) != 0)
            fail_built(p, at, built);
        procreg_filter_unref(f);
        procreg_filter_unref(b);
        f = j;
    }
    return f;
}

static procreg_filter *parse_and(parser *p, int parens)
{
    return parse_chain(p, parens, "and", parse_not, procreg_filter_and);
}

static procreg_filter *parse_or(parser *p, int parens)
{
    return parse_chain(p, parens, "or", parse_and, procreg_filter_or);
}

PROCREG_API int procreg_filter_parse(const char *text, procreg_filter **out,
                                     GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    *out = NULL;
    if (text == NULL)
        return procreg_set_error(error, PROCREG_EINVAL, "filter: no text");
    parser p = {.text = text, .error = error};
    next(&p);
    procreg_filter *f = p.failed ? NULL : parse_or(&p, 0);
    if (f != NULL && p.tok.kind != TOK_END) {
        fail_found(&p, expect_next);
        procreg_filter_unref(f);
        f = NULL;
    }
    g_free(p.tok.str);
    if (p.failed || f == NULL) {
        procreg_filter_unref(f);
        return PROCREG_EINVAL;
    }
    *out = f;
    return 0;
}
