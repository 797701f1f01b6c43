/*
 * etcd backend: health (every endpoint probed, the lease, the watch),
 * backend stats and memory figures.
 */
#include "etcd-private.h"

/* A lease loss keeps health at DEGRADED this long. */
#define LOSS_REPORT_US (60 * G_USEC_PER_SEC)

/* ------------------------------------------------------------------------ */
/* Health, stats, memory                                                    */

ETCD_HIDDEN int procreg_etcd_health_check(void *state, GVariantDict *details,
                             char **message)
{
    etcd_state *s = state;
    int status = PROCREG_HEALTH_OK;
    GString *msg = g_string_new(NULL);

    /* Is the cluster there, with a leader?  Ask every endpoint, so one
     * that came back is seen as back. */
    etcd_client_stats cs;
    procreg_etcd_client_get_stats(s->client, &cs);
    GString *b = g_string_new("{");
    procreg_etcd_json_key(b, "key", s->eprefix->str, s->eprefix->len);
    g_string_append(b, ",\"count_only\":true}");
    unsigned answering = 0;
    char *first_error = NULL;
    for (unsigned i = 0; i < cs.n_endpoints; i++) {
        JsonNode *reply = NULL;
        GError *err = NULL;
        gint64 t0 = g_get_monotonic_time();
        int rc = procreg_etcd_call_endpoint(s->client, i, "/v3/kv/range",
                                            b->str, 0, s->attempt_ms,
                                            &reply, &err);
        gint64 rtt = g_get_monotonic_time() - t0;
        if (rc == 0) {
            if (answering++ == 0) {
                g_variant_dict_insert(details, "revision", "x",
                                      (gint64)procreg_etcd_header_revision(
                                          json_node_get_object(reply)));
                g_variant_dict_insert(details, "probe_us", "x", (gint64)rtt);
            }
            json_node_unref(reply);
        } else if (first_error == NULL) {
            first_error = g_strdup(err ? err->message : procreg_strerror(rc));
        }
        g_clear_error(&err);
    }
    g_string_free(b, TRUE);
    if (answering == 0) {
        status = PROCREG_HEALTH_FAILED;
        g_string_append_printf(msg,
                               "no etcd endpoint answers with a leader: %s",
                               first_error ? first_error : "?");
    }
    g_free(first_error);

    GVariantBuilder eps;
    g_variant_builder_init(&eps, G_VARIANT_TYPE("a{ss}"));
    unsigned down = 0;
    for (unsigned i = 0; i < cs.n_endpoints; i++) {
        char *e = procreg_etcd_client_endpoint_error(s->client, i);
        g_variant_builder_add(&eps, "{ss}",
                              procreg_etcd_client_endpoint(s->client, i),
                              e ? e : "ok");
        down += e != NULL;
        g_free(e);
    }
    g_variant_dict_insert_value(details, "endpoints",
                                g_variant_builder_end(&eps));
    g_variant_dict_insert(details, "endpoint", "s",
                          procreg_etcd_client_endpoint(s->client, cs.current));
    if (status == PROCREG_HEALTH_OK && down > 0) {
        status = PROCREG_HEALTH_DEGRADED;
        g_string_append_printf(msg, "%u of %u etcd endpoints failing", down,
                               cs.n_endpoints);
    }

    etcd_lease_info li;
    procreg_etcd_session_info(s->session, &li);
    g_variant_dict_insert(details, "lease", "x", (gint64)li.lease);
    g_variant_dict_insert(details, "lease_ttl", "x", (gint64)li.ttl);
    g_variant_dict_insert(details, "keepalive_age_ms", "x",
                          (gint64)(li.keepalive_age_us / 1000));
    g_variant_dict_insert(details, "leases_lost", "u", li.leases_lost);
    if (li.lease == 0) {
        status = PROCREG_HEALTH_FAILED;
        g_string_append_printf(msg, "%sno etcd lease%s%s", msg->len ? "; " : "",
                               li.error ? ": " : "", li.error ? li.error : "");
    } else if (li.keepalive_age_us > li.ttl * G_USEC_PER_SEC * 2 / 3) {
        status = MAX(status, PROCREG_HEALTH_DEGRADED);
        g_string_append_printf(
            msg,
            "%slease not refreshed for %" G_GINT64_FORMAT
            " ms (TTL %" G_GINT64_FORMAT " s)%s%s",
            msg->len ? "; " : "", (gint64)(li.keepalive_age_us / 1000),
            (gint64)li.ttl, li.error ? ": " : "", li.error ? li.error : "");
    }
    if (li.loss_age_us >= 0 && li.loss_age_us < LOSS_REPORT_US) {
        status = MAX(status, PROCREG_HEALTH_DEGRADED);
        g_string_append_printf(msg, "%setcd lease lost %" G_GINT64_FORMAT
                               " s ago and granted again",
                               msg->len ? "; " : "",
                               (gint64)(li.loss_age_us / G_USEC_PER_SEC));
    }
    g_free(li.error);
    pthread_mutex_lock(&s->lock);
    g_variant_dict_insert(details, "owned", "u", g_hash_table_size(s->owned));
    if (s->unrestored != NULL && s->unrestored->len > 0) {
        status = MAX(status, PROCREG_HEALTH_DEGRADED);
        g_string_append_printf(msg, "%s%u entries not registered again after "
                               "the lease was lost:",
                               msg->len ? "; " : "", s->unrestored->len);
        GVariantBuilder lost;
        g_variant_builder_init(&lost, G_VARIANT_TYPE_STRING_ARRAY);
        for (guint i = 0; i < s->unrestored->len; i++) {
            g_string_append_printf(msg, " %s", (char *)s->unrestored->pdata[i]);
            g_variant_builder_add(&lost, "s", s->unrestored->pdata[i]);
        }
        g_variant_dict_insert_value(details, "unrestored",
                                    g_variant_builder_end(&lost));
    }
    if (s->watch_mode == WATCH_ALL ||
        (s->watch_mode == WATCH_USED && g_hash_table_size(s->watched) > 0)) {
        bool up = g_atomic_int_get(&s->watch_connected) != 0;
        g_variant_dict_insert(details, "watch_connected", "b", up);
        g_variant_dict_insert(details, "watch_revision", "x",
                              (gint64)__atomic_load_n(&s->watch_rev,
                                                      __ATOMIC_ACQUIRE));
        /* Starting (reading what it covers, then connecting) is not
         * a fault; failing to, or losing the stream, is. */
        bool starting = !up && !s->watch_started && s->watch_error == NULL;
        g_variant_dict_insert(details, "watch_starting", "b", starting);
        if (!up && !starting) {
            status = MAX(status, PROCREG_HEALTH_DEGRADED);
            g_string_append_printf(msg, "%swatch not connected%s%s",
                                   msg->len ? "; " : "",
                                   s->watch_error ? ": " : "",
                                   s->watch_error ? s->watch_error : "");
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (msg->len > 0)
        *message = g_string_free(msg, FALSE);
    else
        g_string_free(msg, TRUE);
    return status;
}

ETCD_HIDDEN void procreg_etcd_stats(void *state, GVariantDict *out)
{
    etcd_state *s = state;
    etcd_client_stats cs;
    procreg_etcd_client_get_stats(s->client, &cs);
    g_variant_dict_insert(out, "requests", "t", (guint64)cs.calls);
    g_variant_dict_insert(out, "failovers", "t", (guint64)cs.failovers);
    g_variant_dict_insert(out, "timeouts", "t", (guint64)cs.timeouts);
    g_variant_dict_insert(out, "slow_attempts", "t", (guint64)cs.slow_attempts);
    g_variant_dict_insert(out, "authentications", "t",
                          (guint64)cs.authentications);
    g_variant_dict_insert(out, "request_failures", "t", (guint64)cs.failures);
    g_variant_dict_insert(out, "endpoint", "s",
                          procreg_etcd_client_endpoint(s->client, cs.current));
    g_variant_dict_insert(out, "prefix", "s", s->prefix->str);
    g_variant_dict_insert(out, "host_id", "s", s->host_id);
    etcd_lease_info li;
    procreg_etcd_session_info(s->session, &li);
    g_free(li.error);
    g_variant_dict_insert(out, "lease", "x", (gint64)li.lease);
    g_variant_dict_insert(out, "lease_ttl", "x", (gint64)li.ttl);
    g_variant_dict_insert(out, "leases_lost", "u", li.leases_lost);
    /* The open registries of this process sharing the lease (and the
     * client, whose requests the counters above count). */
    g_variant_dict_insert(out, "lease_registries", "u", li.registries);
    g_variant_dict_insert(out, "lease_retired", "u", li.retired);
    pthread_mutex_lock(&s->lock);
    g_variant_dict_insert(out, "owned", "u", g_hash_table_size(s->owned));
    g_variant_dict_insert(out, "tombstones", "u", g_hash_table_size(s->tombs));
    pthread_mutex_unlock(&s->lock);
    g_variant_dict_insert(out, "reaped", "t", (guint64)atomic_get(&s->reaped));
    g_variant_dict_insert(
        out, "watch_revision", "x",
        (gint64)__atomic_load_n(&s->watch_rev, __ATOMIC_ACQUIRE));
    g_variant_dict_insert(out, "watch_reconnects", "t",
                          (guint64)atomic_get(&s->watch_reconnects));
    static const char *const modes[] = {"false", "true", "used"};
    g_variant_dict_insert(out, "watch", "s", modes[s->watch_mode]);
    g_variant_dict_insert(out, "watch_connected", "b",
                          g_atomic_int_get(&s->watch_connected) != 0);
    pthread_mutex_lock(&s->lock);
    g_variant_dict_insert(out, "watched_namespaces", "u",
                          g_hash_table_size(s->watched));
    pthread_mutex_unlock(&s->lock);
    g_variant_dict_insert(out, "watch_bytes", "t",
                          (guint64)atomic_get(&s->watch_bytes));
    g_variant_dict_insert(out, "oversized_watch_lines", "t",
                          (guint64)atomic_get(&s->oversized_lines));
    g_variant_dict_insert(out, "compactions", "t",
                          (guint64)atomic_get(&s->compactions));
    g_variant_dict_insert(out, "corrupt_values_seen", "t",
                          (guint64)atomic_get(&s->corrupt_seen));
    g_variant_dict_insert(out, "events_notified", "t",
                          (guint64)atomic_get(&s->notified));
}

ETCD_HIDDEN int procreg_etcd_memory_usage(void *state, size_t *bytes)
{
    etcd_state *s = state;
    size_t n = (size_t)atomic_get(&s->mirror_bytes);
    pthread_mutex_lock(&s->lock);
    GHashTableIter it;
    gpointer k, val;
    g_hash_table_iter_init(&it, s->owned);
    while (g_hash_table_iter_next(&it, &k, &val))
        n += g_bytes_get_size(k) + ((owned_entry *)val)->value_len +
             sizeof(owned_entry);
    pthread_mutex_unlock(&s->lock);
    *bytes = n;
    return 0;
}
