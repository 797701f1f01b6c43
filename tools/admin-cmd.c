/*
 * The procreg program's commands on the registry as a whole: namespaces,
 * drop-namespace, stats, health, metrics (an HTTP endpoint, metrics.c)
 * and backends.
 */
#include "cli.h"
#ifdef PROCREG_CLI_METRICS
#include "metrics.h"
#endif

#include <stdio.h>
#include <string.h>

int cmd_namespaces(procreg *reg, const cli *c)
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

int cmd_drop(procreg *reg, const cli *c)
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

int cmd_stats(procreg *reg, const cli *c)
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

int cmd_health(procreg *reg, const cli *c)
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

int cmd_backends(const cli *c)
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
int cmd_metrics(procreg *reg, const cli *c)
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
