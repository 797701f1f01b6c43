/*
 * What the procreg program prints: entries as text or JSON (print_entry,
 * print_entries), JSON text of strings, GVariants and entries, and times
 * as ISO 8601.  Errors and their JSON are procreg.c's (fail()).
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>

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
