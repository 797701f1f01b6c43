/* Backend specs: "name[:opt=value,...]" with [bracketed] nested values. */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

struct procreg_spec {
    char *backend;
    GPtrArray *keys;   /* char*, in order */
    GPtrArray *values; /* char*, parallel to keys */
};

PROCREG_INTERNAL void procreg_spec_free(procreg_spec *spec)
{
    if (spec == NULL)
        return;
    g_free(spec->backend);
    g_ptr_array_unref(spec->keys);
    g_ptr_array_unref(spec->values);
    g_free(spec);
}

static procreg_spec *spec_new(const char *backend)
{
    procreg_spec *spec = g_new0(procreg_spec, 1);
    spec->backend = g_strdup(backend);
    spec->keys = g_ptr_array_new_with_free_func(g_free);
    spec->values = g_ptr_array_new_with_free_func(g_free);
    return spec;
}

/* Fail a parse at @at, a byte of the text that starts at @text: the
 * message, and the offset as data (procreg_error_details.position). */
static void parse_error(GError **error, const char *text, const char *at,
                        const char *fmt, ...) G_GNUC_PRINTF(4, 5);

static void parse_error(GError **error, const char *text, const char *at,
                        const char *fmt, ...)
{
    if (error == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    procreg_set_error(error, PROCREG_EINVAL, "%s", msg);
    procreg_error_detail_position(error, (int)(at - text));
    g_free(msg);
}

/* Read one value starting at *pp (in @text, the option list); stop at a
 * ',' outside brackets.  A value that is one [bracketed] group loses its
 * brackets and keeps its text verbatim (it is parsed again by whoever uses
 * it); elsewhere a backslash escapes the next character. */
static char *read_value(const char *text, const char **pp, const char *option,
                        GError **error)
{
    const char *p = *pp;
    GString *out = g_string_new(NULL);
    if (*p == '[') {
        int depth = 0;
        const char *start = p;
        for (; *p; p++) {
            if (*p == '\\' && p[1]) {
                p++;
                continue;
            }
            if (*p == '[')
                depth++;
            else if (*p == ']' && --depth == 0)
                break;
        }
        if (*p != ']') {
            g_string_free(out, TRUE);
            parse_error(error, text, start,
                        "spec: unbalanced '[' in the value of option '%s'",
                        option);
            return NULL;
        }
        g_string_append_len(out, start + 1, p - start - 1);
        p++;
        if (*p != '\0' && *p != ',') {
            g_string_free(out, TRUE);
            parse_error(error, text, p,
                        "spec: unexpected text after ']' in option '%s'",
                        option);
            return NULL;
        }
    } else {
        for (; *p && *p != ','; p++) {
            if (*p == '\\' && p[1] == '\0') {
                g_string_free(out, TRUE);
                parse_error(error, text, p,
                            "spec: option '%s' ends in a lone '\\'", option);
                return NULL;
            }
            if (*p == '\\')
                p++;
            else if (*p == '[' || *p == ']') {
                g_string_free(out, TRUE);
                parse_error(error, text, p,
                            "spec: '%c' inside the value of option '%s' "
                            "(bracket the whole value: %s=[...])",
                            *p, option, option);
                return NULL;
            }
            g_string_append_c(out, *p);
        }
    }
    *pp = p;
    return g_string_free(out, FALSE);
}

static bool valid_ident(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!g_ascii_isalnum(s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
            return false;
    return true;
}

PROCREG_INTERNAL int procreg_spec_parse_options(const char *backend,
                                                const char *options,
                                                procreg_spec **out,
                                                GError **error)
{
    procreg_spec *spec = spec_new(backend);
    const char *text = options ? options : "", *p = text;
    while (*p) {
        const char *eq = strchr(p, '=');
        const char *comma = strchr(p, ',');
        if (eq == NULL || (comma != NULL && comma < eq)) {
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            parse_error(error, text, p,
                        "spec '%s': option '%.*s' has no '=VALUE'", backend,
                        (int)n, p);
            goto fail;
        }
        if (!valid_ident(p, (size_t)(eq - p))) {
            parse_error(error, text, p, "spec '%s': bad option name '%.*s'",
                        backend, (int)(eq - p), p);
            goto fail;
        }
        char *key = g_strndup(p, (gsize)(eq - p));
        for (guint i = 0; i < spec->keys->len; i++) {
            if (strcmp(spec->keys->pdata[i], key) == 0) {
                parse_error(error, text, p,
                            "spec '%s': option '%s' given twice", backend,
                            key);
                g_free(key);
                goto fail;
            }
        }
        p = eq + 1;
        char *value = read_value(text, &p, key, error);
        if (value == NULL) {
            g_free(key);
            goto fail;
        }
        g_ptr_array_add(spec->keys, key);
        g_ptr_array_add(spec->values, value);
        if (*p == ',') {
            p++;
            if (*p == '\0') {
                parse_error(error, text, p - 1, "spec '%s': trailing ','",
                            backend);
                goto fail;
            }
        }
    }
    *out = spec;
    return 0;
fail:
    procreg_spec_free(spec);
    return PROCREG_EINVAL;
}

PROCREG_INTERNAL int procreg_spec_parse(const char *text, procreg_spec **out,
                                        GError **error)
{
    if (text == NULL || *text == '\0') {
        parse_error(error, "", "", "spec is empty");
        return PROCREG_EINVAL;
    }
    const char *colon = strchr(text, ':');
    size_t n = colon ? (size_t)(colon - text) : strlen(text);
    if (!valid_ident(text, n)) {
        /* Not the whole text: it may hold a password. */
        parse_error(error, text, text, "spec: bad backend name '%.*s'",
                    (int)n, text);
        return PROCREG_EINVAL;
    }
    char *name = g_strndup(text, n);
    int rc = procreg_spec_parse_options(name, colon ? colon + 1 : NULL, out,
                                        error);
    g_free(name);
    /* Positions in the option list are positions after "name:". */
    const procreg_error_details *d =
        rc != 0 && error != NULL ? procreg_error_get_details(*error) : NULL;
    if (d != NULL && d->position >= 0)
        procreg_error_detail_position(error, d->position + (int)n + 1);
    return rc;
}

PROCREG_INTERNAL int procreg_spec_check_options(const procreg_spec *spec,
                                                const procreg_backend_ops *ops,
                                                GError **error)
{
    for (guint i = 0; i < spec->keys->len; i++) {
        const char *key = spec->keys->pdata[i];
        bool known = false;
        for (const procreg_backend_option *o = ops->options; o && o->name; o++)
            known = known || strcmp(o->name, key) == 0;
        if (known)
            continue;
        GString *msg = g_string_new(NULL);
        g_string_printf(msg, "backend '%s' has no option '%s'; ", ops->name,
                        key);
        if (ops->options == NULL || ops->options[0].name == NULL) {
            g_string_append(msg, "it takes no options");
        } else {
            g_string_append(msg, "it accepts:");
            for (const procreg_backend_option *o = ops->options; o->name; o++)
                g_string_append_printf(msg, " %s (%s)%s", o->name,
                                       o->help ? o->help : "",
                                       o[1].name ? "," : "");
        }
        procreg_set_error(error, PROCREG_EINVAL, "%s", msg->str);
        g_string_free(msg, TRUE);
        GPtrArray *names = g_ptr_array_new();
        for (const procreg_backend_option *o = ops->options; o && o->name; o++)
            g_ptr_array_add(names, (char *)o->name);
        g_ptr_array_add(names, NULL);
        procreg_error_detail_alternatives(error, (char **)names->pdata);
        g_ptr_array_unref(names);
        return PROCREG_EINVAL;
    }
    return 0;
}

static void append_escaped(GString *s, const char *v)
{
    if (strpbrk(v, ",[]\\") == NULL) {
        g_string_append(s, v);
        return;
    }
    /* Brackets keep nested specs readable; the value was balanced when
     * parsed.  Values that were escaped rather than bracketed get their
     * escapes back. */
    int depth = 0;
    bool balanced = true;
    for (const char *p = v; *p; p++) {
        if (*p == '\\') {
            /* A trailing lone backslash would escape the closing ']'. */
            if (p[1] == '\0') { balanced = false; break; }
            p++;
            continue;
        }
        if (*p == '[') depth++;
        if (*p == ']' && --depth < 0) balanced = false;
    }
    if (balanced && depth == 0) {
        g_string_append_printf(s, "[%s]", v);
        return;
    }
    for (const char *p = v; *p; p++) {
        if (strchr(",[]\\", *p))
            g_string_append_c(s, '\\');
        g_string_append_c(s, *p);
    }
}

/* The value of an option of this name is a secret: the normalised spec
 * (procreg_get_spec(), stats, the CLI) shows it as "***". */
#define SECRET_OPTION "password"

/* @text (an option's value) with the value of every option named
 * SECRET_OPTION in it replaced by "***", at any depth: a value may hold a
 * whole spec (a decorator's inner backend). */
static char *mask_secrets(const char *text)
{
    static const char key[] = SECRET_OPTION "=";
    GString *out = g_string_new(NULL);
    const char *p = text;
    /* Whether the character before @p is an unescaped ':', ',' or '[':
     * only there does an option name begin. */
    bool option_starts = false;
    while (*p) {
        if (*p == '\\' && p[1]) {
            g_string_append_len(out, p, 2);
            p += 2;
            option_starts = false;
            continue;
        }
        if (!option_starts || strncmp(p, key, sizeof key - 1) != 0) {
            option_starts = strchr(":,[", *p) != NULL;
            g_string_append_c(out, *p++);
            continue;
        }
        g_string_append(out, key);
        g_string_append(out, "***");
        p += sizeof key - 1;
        /* Skip the value: a bracketed group, or up to the ',' or ']'
         * that ends it; escapes as append_escaped() writes them. */
        int depth = 0;
        for (; *p; p++) {
            if (*p == '\\' && p[1]) {
                p++;
                continue;
            }
            if (*p == '[')
                depth++;
            else if (*p == ']' && depth-- == 0)
                break;
            else if (*p == ',' && depth == 0)
                break;
        }
    }
    return g_string_free(out, FALSE);
}

PROCREG_INTERNAL char *procreg_spec_to_string(const procreg_spec *spec)
{
    GString *s = g_string_new(spec->backend);
    for (guint i = 0; i < spec->keys->len; i++) {
        const char *key = spec->keys->pdata[i];
        g_string_append_c(s, i == 0 ? ':' : ',');
        g_string_append_printf(s, "%s=", key);
        if (strcmp(key, SECRET_OPTION) == 0) {
            g_string_append(s, "***");
            continue;
        }
        /* Masked before it is escaped, so that the form chosen (bare or
         * bracketed) is that of the masked value: parsed again, it gives
         * the same text. */
        char *masked = mask_secrets(spec->values->pdata[i]);
        append_escaped(s, masked);
        g_free(masked);
    }
    return g_string_free(s, FALSE);
}

PROCREG_API const char *procreg_spec_backend(const procreg_spec *spec)
{
    return spec->backend;
}

PROCREG_API const char *procreg_spec_get(const procreg_spec *spec,
                                         const char *option)
{
    for (guint i = 0; i < spec->keys->len; i++)
        if (strcmp(spec->keys->pdata[i], option) == 0)
            return spec->values->pdata[i];
    return NULL;
}

PROCREG_API int procreg_spec_get_uint64(const procreg_spec *spec,
                                        const char *option, uint64_t def,
                                        uint64_t *out, GError **error)
{
    const char *v = procreg_spec_get(spec, option);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    static const struct { const char *suffix; unsigned shift; } units[] = {
        {"", 0}, {"K", 10}, {"KiB", 10}, {"M", 20}, {"MiB", 20},
        {"G", 30}, {"GiB", 30},
    };
    char *end = NULL;
    guint64 n = 0;
    if (g_ascii_isdigit(*v)) {
        errno = 0;
        n = g_ascii_strtoull(v, &end, 10);
        if (errno != 0)
            end = NULL;
    }
    for (size_t i = 0; end != NULL && i < G_N_ELEMENTS(units); i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (units[i].shift && n > (G_MAXUINT64 >> units[i].shift))
                break;
            *out = n << units[i].shift;
            return 0;
        }
    }
    return procreg_set_error(error, PROCREG_EINVAL,
                             "option '%s' of backend '%s': '%s' is not an "
                             "unsigned number (suffixes K, KiB, M, MiB, G, "
                             "GiB)", option, spec->backend, v);
}

PROCREG_API int procreg_spec_get_bool(const procreg_spec *spec,
                                      const char *option, bool def,
                                      bool *out, GError **error)
{
    const char *v = procreg_spec_get(spec, option);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < G_N_ELEMENTS(yes); i++) {
        if (g_ascii_strcasecmp(v, yes[i]) == 0) { *out = true; return 0; }
        if (g_ascii_strcasecmp(v, no[i]) == 0) { *out = false; return 0; }
    }
    return procreg_set_error(error, PROCREG_EINVAL,
                             "option '%s' of backend '%s': '%s' is not a "
                             "boolean (true/false, yes/no, on/off, 1/0)",
                             option, spec->backend, v);
}
