/*
 * procreg metrics --listen ADDRESS:PORT: the figures of a whole registry
 * (a host's shared one, say) served over HTTP for Prometheus to scrape,
 * GET /metrics in the text exposition format 0.0.4.  libsoup's SoupServer
 * speaks HTTP; this file only writes the figures:
 *
 *  - what the library writes (procreg_stats_write_prometheus()): entries in
 *    all and per namespace, everyone's, then this process's own counters;
 *  - procreg_registry_owners and procreg_registry_namespace_owners
 *    {namespace}: the processes that own entries, everyone's;
 *  - procreg_registry_groups {namespace} and
 *    procreg_registry_group_members {namespace, group}: everyone's groups
 *    and their sizes (none on a backend without groups);
 *  - procreg_registry_owner_exits_total: entries removed because their
 *    owner died, as this server's subscription saw them since it started;
 *  - procreg_registry_wakeup_latency_seconds: a histogram of the time from
 *    a registration made in another process (its registered_at) to this
 *    process's wake-up for it (the event's time); both are wall-clock
 *    readings, so across hosts it includes their clock offset.
 *
 * Events and scrapes both run in the default main context, one thread:
 * the counters need no lock.
 */
#include "metrics.h"

#include <libsoup/soup.h>
#include <stdio.h>
#include <string.h>

/* Upper bounds of the latency buckets, in seconds. */
static const double latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001,
                                        0.0025, 0.005,   0.01,   0.025,
                                        0.05,   0.1,     0.25,   1.0};
#define N_BOUNDS G_N_ELEMENTS(latency_bounds)

typedef struct {
    procreg *reg;
    uint64_t owner_exits;
    uint64_t latency_buckets[N_BOUNDS]; /* per bucket, not cumulative */
    uint64_t latency_count;
    double latency_sum;
} metrics;

static void on_event(procreg *reg, const procreg_event *ev, gpointer data)
{
    metrics *m = data;
    if (ev->kind == PROCREG_EVENT_UNREGISTERED &&
        ev->reason == PROCREG_REASON_OWNER_EXITED)
        m->owner_exits++;
    if (ev->kind != PROCREG_EVENT_REGISTERED || !ev->external)
        return;
    double s = MAX(0, ev->time - ev->entry->registered_at) / 1e6;
    m->latency_count++;
    m->latency_sum += s;
    for (size_t i = 0; i < N_BOUNDS; i++) {
        if (s <= latency_bounds[i]) {
            m->latency_buckets[i]++;
            break;
        }
    }
}

/* A label value with \ " and newline escaped, as the format wants. */
static void append_label(GString *o, const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            g_string_append_c(o, '\\');
        if (*p == '\n')
            g_string_append(o, "\\n");
        else
            g_string_append_c(o, *p);
    }
}

static void append_help(GString *o, const char *name, const char *type,
                        const char *help)
{
    g_string_append_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help,
                           name, type);
}

/* The owners of the registry's entries: in all, and per namespace. */
static int append_owners(GString *o, procreg *reg, GError **error)
{
    procreg_entry *all = NULL;
    size_t n = 0;
    int rc = procreg_list(reg, NULL, &all, &n, error);
    if (rc != 0)
        return rc;
    GHashTable *owners = g_hash_table_new(g_str_hash, g_str_equal);
    GHashTable *ns_owners = g_hash_table_new(g_str_hash, g_str_equal);
    char **ids = g_new0(char *, n + 1); /* an owner: its pid and start time */
    GString *body = g_string_new(NULL);
    for (size_t i = 0; i < n; i++) {
        ids[i] = g_strdup_printf("%d/%" G_GUINT64_FORMAT,
                                 (int)all[i].owner.pid,
                                 all[i].owner.start_time);
        g_hash_table_add(owners, ids[i]);
        /* Entries come sorted by namespace: one run per namespace. */
        if (i > 0 && strcmp(all[i].ns, all[i - 1].ns) != 0)
            g_hash_table_remove_all(ns_owners);
        g_hash_table_add(ns_owners, ids[i]);
        if (i + 1 == n || strcmp(all[i].ns, all[i + 1].ns) != 0) {
            g_string_append(body,
                            "procreg_registry_namespace_owners{namespace=\"");
            append_label(body, all[i].ns);
            g_string_append_printf(body, "\"} %u\n",
                                   g_hash_table_size(ns_owners));
        }
    }
    append_help(o, "procreg_registry_owners", "gauge",
                "Processes that own entries of the registry, everyone's.");
    g_string_append_printf(o, "procreg_registry_owners %u\n",
                           g_hash_table_size(owners));
    append_help(o, "procreg_registry_namespace_owners", "gauge",
                "Processes that own entries, per namespace.");
    g_string_append(o, body->str);
    g_string_free(body, TRUE);
    g_strfreev(ids);
    g_hash_table_unref(ns_owners);
    g_hash_table_unref(owners);
    procreg_entries_free(all, n);
    return 0;
}

/* The groups with members, per namespace, and each group's size; nothing
 * on a backend without groups. */
static int append_groups(GString *o, procreg *reg, GError **error)
{
    procreg_group_info *groups = NULL;
    size_t n = 0;
    GError *local = NULL;
    int rc = procreg_groups(reg, NULL, &groups, &n, &local);
    if (rc == PROCREG_ENOTSUP) {
        g_error_free(local);
        return 0;
    }
    if (rc != 0) {
        g_propagate_error(error, local);
        return rc;
    }
    append_help(o, "procreg_registry_groups", "gauge",
                "Groups with members, per namespace.");
    /* Sorted by namespace: one run per namespace. */
    for (size_t i = 0, run = 1; i < n; i++, run++) {
        if (i + 1 < n && strcmp(groups[i].ns, groups[i + 1].ns) == 0)
            continue;
        g_string_append(o, "procreg_registry_groups{namespace=\"");
        append_label(o, groups[i].ns);
        g_string_append_printf(o, "\"} %zu\n", run);
        run = 0;
    }
    append_help(o, "procreg_registry_group_members", "gauge",
                "Members of each group, everyone's.");
    for (size_t i = 0; i < n; i++) {
        g_string_append(o, "procreg_registry_group_members{namespace=\"");
        append_label(o, groups[i].ns);
        g_string_append(o, "\",group=\"");
        append_label(o, groups[i].group);
        g_string_append_printf(o, "\"} %zu\n", groups[i].members);
    }
    procreg_group_info_free(groups, n);
    return 0;
}

static void append_events(GString *o, const metrics *m)
{
    append_help(o, "procreg_registry_owner_exits_total", "counter",
                "Entries removed because their owner died, seen since this "
                "server started.");
    g_string_append_printf(o, "procreg_registry_owner_exits_total %" G_GUINT64_FORMAT
                           "\n", m->owner_exits);
    append_help(o, "procreg_registry_wakeup_latency_seconds", "histogram",
                "From a registration in another process to this process's "
                "wake-up for it.");
    uint64_t cumulative = 0;
    for (size_t i = 0; i < N_BOUNDS; i++) {
        cumulative += m->latency_buckets[i];
        g_string_append_printf(o, "procreg_registry_wakeup_latency_seconds_bucket"
                               "{le=\"%g\"} %" G_GUINT64_FORMAT "\n",
                               latency_bounds[i], cumulative);
    }
    g_string_append_printf(o, "procreg_registry_wakeup_latency_seconds_bucket"
                           "{le=\"+Inf\"} %" G_GUINT64_FORMAT "\n"
                           "procreg_registry_wakeup_latency_seconds_sum %.9f\n"
                           "procreg_registry_wakeup_latency_seconds_count %"
                           G_GUINT64_FORMAT "\n",
                           m->latency_count, m->latency_sum, m->latency_count);
}

static void on_request(SoupServer *server, SoupServerMessage *msg,
                       const char *path, GHashTable *query, gpointer data)
{
    metrics *m = data;
    const char *method = soup_server_message_get_method(msg);
    if (strcmp(path, "/metrics") != 0) {
        soup_server_message_set_status(msg, SOUP_STATUS_NOT_FOUND, NULL);
        return;
    }
    if (method != SOUP_METHOD_GET && method != SOUP_METHOD_HEAD) {
        soup_server_message_set_status(msg, SOUP_STATUS_METHOD_NOT_ALLOWED,
                                       NULL);
        return;
    }
    GString *o = g_string_new(NULL);
    GError *err = NULL;
    int rc = procreg_stats_write_prometheus(m->reg, o, &err);
    if (rc == 0)
        rc = append_owners(o, m->reg, &err);
    if (rc == 0)
        rc = append_groups(o, m->reg, &err);
    if (rc != 0) {
        soup_server_message_set_status(msg, SOUP_STATUS_INTERNAL_SERVER_ERROR,
                                       NULL);
        soup_server_message_set_response(msg, "text/plain; charset=utf-8",
                                         SOUP_MEMORY_COPY, err->message,
                                         strlen(err->message));
        g_error_free(err);
        g_string_free(o, TRUE);
        return;
    }
    append_events(o, m);
    gsize len = o->len;
    soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
    soup_server_message_set_response(msg,
                                     "text/plain; version=0.0.4; charset=utf-8",
                                     SOUP_MEMORY_TAKE, g_string_free(o, FALSE),
                                     len);
}

/* "ADDRESS:PORT" as a socket address, or NULL with @error set. */
static GSocketAddress *listen_address(const char *listen, GError **error)
{
    GSocketConnectable *na = g_network_address_parse(listen, 0, NULL);
    GInetAddress *ia = NULL;
    if (na != NULL && strrchr(listen, ':') != NULL)
        ia = g_inet_address_new_from_string(
            g_network_address_get_hostname(G_NETWORK_ADDRESS(na)));
    GSocketAddress *sa = NULL;
    if (ia != NULL)
        sa = g_inet_socket_address_new(
            ia, g_network_address_get_port(G_NETWORK_ADDRESS(na)));
    else
        g_set_error(error, PROCREG_ERROR, PROCREG_EINVAL,
                    "--listen '%s': give an IP address and a port, such as "
                    "127.0.0.1:9464 or [::1]:9464", listen);
    g_clear_object(&ia);
    g_clear_object(&na);
    return sa;
}

int metrics_serve(procreg *reg, const char *listen, void (*run)(void),
                  GError **error)
{
    GSocketAddress *address = listen_address(listen, error);
    if (address == NULL)
        return PROCREG_EINVAL;
    metrics m = {.reg = reg};
    uint64_t sub = 0;
    int rc = procreg_subscribe(reg, NULL, NULL, on_event, &m, NULL,
                               g_main_context_default(), &sub, error);
    if (rc != 0) {
        g_object_unref(address);
        return rc;
    }
    SoupServer *server = soup_server_new("server-header", "procreg-metrics ",
                                         NULL);
    soup_server_add_handler(server, NULL, on_request, &m, NULL);
    GError *local = NULL;
    if (!soup_server_listen(server, address, 0, &local)) {
        rc = PROCREG_ERROR_FAILED;
        g_set_error(error, PROCREG_ERROR, rc, "cannot listen on %s: %s",
                    listen, local->message);
        g_error_free(local);
    } else {
        GSList *uris = soup_server_get_uris(server);
        char *uri = g_uri_to_string(uris->data);
        /* Scripts and tests read the address from here (port 0). */
        printf("serving %smetrics\n", uri);
        fflush(stdout);
        g_free(uri);
        g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
        run();
    }
    g_object_unref(server);
    g_object_unref(address);
    procreg_unsubscribe(reg, sub);
    return rc;
}
