/*
 * etcd backend: what the registries of one process that talk to one
 * cluster in the same way share (a session): the client, with its
 * connections; one lease, which all their entries are attached to; and
 * the keeper thread that keeps it alive.  N registries so cost one lease,
 * one keeper and one keepalive every TTL/3, not N.
 *
 * Sessions are found by their configuration (host id, endpoints,
 * timeouts, lease TTL, TLS files, user and a checksum of the password) in
 * a process-wide table, and freed with their last registry: registries
 * that act as different hosts keep apart, as do those whose leases would
 * differ.
 *
 * The keeper refreshes the lease every TTL/3, each refresh within that
 * interval (failing over between members as any call does); a refresh
 * that failed is tried again after a tenth of the TTL, so a member that
 * stops answering costs a fraction of the TTL, never the lease.  A lost
 * lease (answered without a TTL, or a put refused with "lease not found")
 * is granted again, once however many threads notice, and every attached
 * registry registers again what it owned.  After each round the keeper
 * tends each attached registry's entries (procreg_etcd_owned_tend()).
 *
 * Lock order: the sessions table, then a session's lock, then a
 * registry's (s->lock).
 */
#include "etcd-private.h"

#include <string.h>

struct etcd_session {
    char *id;      /* the configuration it is shared by */
    guint refs;    /* under sessions_lock */
    etcd_client *client;
    int64_t ttl_s; /* asked for */
    unsigned timeout_ms;

    pthread_mutex_t lock; /* everything below */
    pthread_cond_t cond;
    bool stopping;
    int64_t lease;         /* 0 while none */
    int64_t lease_ttl;     /* as granted */
    gint64 last_keepalive; /* monotonic µs of the last good keepalive */
    char *keeper_error;    /* last keepalive failure, NULL when fine */
    guint leases_lost;
    gint64 last_loss;      /* monotonic µs, 0: never */
    bool kick;             /* wake the keeper now */
    GPtrArray *states;     /* etcd_state* attached */
    GPtrArray *retired;    /* etcd_state* closed, their entries still kept;
                            * the keeper's to tend and free */
    bool drop_retired;     /* the lease was lost, and their entries */
    etcd_state *busy;      /* the one the keeper tends now, or NULL */
    pthread_mutex_t renew_lock; /* one lease grant at a time */
    GThread *keeper;
};

static pthread_mutex_t sessions_lock = PTHREAD_MUTEX_INITIALIZER;
static GHashTable *sessions; /* id -> etcd_session*, under sessions_lock */

/* ---- the lease ---- */

static int lease_grant(etcd_session *se, gint64 deadline, int64_t *id,
                       int64_t *ttl, GError **error)
{
    char body[64];
    g_snprintf(body, sizeof body, "{\"TTL\":\"%" G_GINT64_FORMAT "\"}",
               (gint64)se->ttl_s);
    JsonNode *reply = NULL;
    int rc = procreg_etcd_call(se->client, "/v3/lease/grant", body, 0,
                               deadline, &reply, error);
    if (rc == ETCD_ELEASE_GONE)
        rc = PROCREG_EBACKEND;
    if (rc != 0)
        return rc;
    JsonObject *o = json_node_get_object(reply);
    if (!procreg_etcd_json_int(o, "ID", id) || *id == 0 ||
        !procreg_etcd_json_int(o, "TTL", ttl) || *ttl <= 0) {
        const char *msg = NULL;
        JsonNode *e = json_object_get_member(o, "error");
        if (e != NULL && JSON_NODE_HOLDS_VALUE(e) &&
            json_node_get_value_type(e) == G_TYPE_STRING)
            msg = json_node_get_string(e);
        rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "etcd did not grant a lease%s%s",
                               msg ? ": " : "", msg ? msg : "");
    }
    json_node_unref(reply);
    return rc;
}

static int64_t session_lease(etcd_session *se)
{
    pthread_mutex_lock(&se->lock);
    int64_t l = se->lease;
    pthread_mutex_unlock(&se->lock);
    return l;
}

ETCD_HIDDEN int64_t procreg_etcd_current_lease(etcd_state *s)
{
    return session_lease(s->session);
}

/* Replace a lost lease @old with a new one (once, however many threads
 * notice); every attached registry registers again what it owned. */
static int session_renew(etcd_session *se, int64_t old, gint64 deadline,
                         GError **error)
{
    pthread_mutex_lock(&se->renew_lock);
    int rc = 0;
    pthread_mutex_lock(&se->lock);
    bool done = se->lease != old;
    if (!done && old != 0) {
        se->lease = 0;
        se->leases_lost++;
        se->last_loss = g_get_monotonic_time();
        for (guint i = 0; i < se->states->len; i++) {
            etcd_state *s = se->states->pdata[i];
            pthread_mutex_lock(&s->lock);
            s->restore_pending = true;
            pthread_mutex_unlock(&s->lock);
        }
    }
    /* The entries of closed registries went with the lease: nobody
     * registers them again (the keeper forgets them). */
    if (!done && old != 0)
        se->drop_retired = true;
    pthread_mutex_unlock(&se->lock);
    if (!done) {
        int64_t id = 0, ttl = 0;
        rc = lease_grant(se, deadline, &id, &ttl, error);
        pthread_mutex_lock(&se->lock);
        if (rc == 0) {
            se->lease = id;
            se->lease_ttl = ttl;
            se->last_keepalive = g_get_monotonic_time();
            se->kick = true;
            g_free(se->keeper_error);
            se->keeper_error = NULL;
        } else {
            g_free(se->keeper_error);
            se->keeper_error = g_strdup_printf(
                "lease lost and not granted again: %s",
                error && *error ? (*error)->message : procreg_strerror(rc));
        }
        pthread_cond_broadcast(&se->cond);
        pthread_mutex_unlock(&se->lock);
    }
    pthread_mutex_unlock(&se->renew_lock);
    return rc;
}

ETCD_HIDDEN int procreg_etcd_lease_renew(etcd_state *s, int64_t old,
                                         gint64 deadline, GError **error)
{
    return session_renew(s->session, old, deadline, error);
}

ETCD_HIDDEN int procreg_etcd_lease_for_write(etcd_state *s, gint64 deadline,
                                             int64_t *lease, GError **error)
{
    *lease = procreg_etcd_current_lease(s);
    if (*lease != 0)
        return 0;
    int rc = procreg_etcd_lease_renew(s, 0, deadline, error);
    if (rc != 0)
        return rc;
    *lease = procreg_etcd_current_lease(s);
    return *lease != 0 ? 0
                       : procreg_set_error(error, PROCREG_EBACKEND,
                                           "etcd: no lease to attach the "
                                           "entry to");
}

ETCD_HIDDEN void procreg_etcd_session_kick(etcd_session *se)
{
    pthread_mutex_lock(&se->lock);
    se->kick = true;
    pthread_cond_broadcast(&se->cond);
    pthread_mutex_unlock(&se->lock);
}

ETCD_HIDDEN void procreg_etcd_session_info(etcd_session *se,
                                           etcd_lease_info *out)
{
    gint64 now = g_get_monotonic_time();
    pthread_mutex_lock(&se->lock);
    out->lease = se->lease;
    out->ttl = se->lease_ttl;
    out->keepalive_age_us = now - se->last_keepalive;
    out->leases_lost = se->leases_lost;
    out->loss_age_us = se->last_loss != 0 ? now - se->last_loss : -1;
    out->error = g_strdup(se->keeper_error);
    out->registries = se->states->len;
    out->retired = se->retired->len;
    pthread_mutex_unlock(&se->lock);
}

/* ---- the keeper ---- */

typedef enum {
    KEEPALIVE_OK,
    KEEPALIVE_FAILED, /* no answer: try again soon */
    KEEPALIVE_LEASE_GONE,
} keepalive_result;

/* One keepalive, by @deadline. */
static keepalive_result keepalive_once(etcd_session *se, int64_t lease,
                                       gint64 deadline)
{
    char body[64];
    g_snprintf(body, sizeof body, "{\"ID\":\"%" G_GINT64_FORMAT "\"}",
               (gint64)lease);
    JsonNode *reply = NULL;
    GError *err = NULL;
    int rc = procreg_etcd_call(se->client, "/v3/lease/keepalive", body, 0,
                               deadline, &reply, &err);
    keepalive_result result = KEEPALIVE_FAILED;
    pthread_mutex_lock(&se->lock);
    if (rc == 0) {
        JsonObject *res = procreg_etcd_json_obj(json_node_get_object(reply),
                                                "result");
        int64_t ttl = 0;
        procreg_etcd_json_int(res, "TTL", &ttl);
        if (res != NULL && ttl > 0) {
            se->last_keepalive = g_get_monotonic_time();
            g_free(se->keeper_error);
            se->keeper_error = NULL;
            result = KEEPALIVE_OK;
        } else if (res != NULL) {
            /* Answered without a TTL: the lease expired or was revoked. */
            result = KEEPALIVE_LEASE_GONE;
        } else {
            g_free(se->keeper_error);
            se->keeper_error = g_strdup("keepalive: etcd sent no result");
        }
        json_node_unref(reply);
    } else if (rc == ETCD_ELEASE_GONE) {
        result = KEEPALIVE_LEASE_GONE;
    } else {
        g_free(se->keeper_error);
        se->keeper_error = g_strdup_printf("keepalive failed: %s",
                                           err ? err->message
                                               : procreg_strerror(rc));
    }
    pthread_mutex_unlock(&se->lock);
    g_clear_error(&err);
    return result;
}

/* Tend each attached registry's entries, then those closed registries
 * left.  Invariant: the keeper works on a registry only while it is
 * attached and marked busy; detach waits until it is not busy, so a
 * registry being closed is never tended.  Retired registries are the
 * keeper's alone (and the renewal's, which frees them under se->lock
 * while none is busy). */
static void tend_all(etcd_session *se, int64_t lease)
{
    for (guint i = 0;; i++) {
        pthread_mutex_lock(&se->lock);
        if (se->stopping || i >= se->states->len) {
            pthread_mutex_unlock(&se->lock);
            break;
        }
        etcd_state *s = se->states->pdata[i];
        se->busy = s;
        pthread_mutex_unlock(&se->lock);
        procreg_etcd_owned_tend(s, lease);
        pthread_mutex_lock(&se->lock);
        se->busy = NULL;
        pthread_cond_broadcast(&se->cond);
        pthread_mutex_unlock(&se->lock);
    }
    pthread_mutex_lock(&se->lock);
    GPtrArray *gone = NULL;
    if (se->drop_retired) {
        se->drop_retired = false;
        gone = se->retired;
        se->retired = g_ptr_array_new();
    }
    pthread_mutex_unlock(&se->lock);
    for (guint i = 0; gone != NULL && i < gone->len; i++)
        procreg_etcd_state_free(gone->pdata[i]);
    if (gone != NULL)
        g_ptr_array_unref(gone);
    for (guint i = 0;;) {
        pthread_mutex_lock(&se->lock);
        if (se->stopping || i >= se->retired->len) {
            pthread_mutex_unlock(&se->lock);
            break;
        }
        etcd_state *s = se->retired->pdata[i];
        pthread_mutex_unlock(&se->lock);
        procreg_etcd_owned_tend(s, 0);
        pthread_mutex_lock(&s->lock);
        bool empty = g_hash_table_size(s->owned) == 0;
        pthread_mutex_unlock(&s->lock);
        pthread_mutex_lock(&se->lock);
        if (empty)
            g_ptr_array_remove_index(se->retired, i);
        else
            i++;
        pthread_mutex_unlock(&se->lock);
        if (empty)
            procreg_etcd_state_free(s);
    }
}

static gpointer keeper_main(gpointer data)
{
    etcd_session *se = data;
    bool retry = false;
    pthread_mutex_lock(&se->lock);
    for (;;) {
        gint64 ttl_us = MAX(se->lease_ttl, 1) * G_USEC_PER_SEC;
        gint64 interval_us = retry ? ttl_us / 10 : ttl_us / 3;
        gint64 until = g_get_monotonic_time() + interval_us;
        while (!se->stopping && !se->kick && g_get_monotonic_time() < until)
            cond_wait_until(&se->cond, &se->lock, until);
        if (se->stopping)
            break;
        se->kick = false;
        int64_t lease = se->lease;
        pthread_mutex_unlock(&se->lock);

        gint64 deadline = g_get_monotonic_time() +
                          MIN((gint64)se->timeout_ms * 1000, ttl_us / 3);
        keepalive_result r = lease == 0 ? KEEPALIVE_LEASE_GONE
                                        : keepalive_once(se, lease, deadline);
        retry = r == KEEPALIVE_FAILED;
        if (r == KEEPALIVE_LEASE_GONE)
            retry = session_renew(se, lease, deadline, NULL) != 0;
        tend_all(se, session_lease(se));
        pthread_mutex_lock(&se->lock);
    }
    pthread_mutex_unlock(&se->lock);
    return NULL;
}

/* ---- sharing ---- */

/* What a session is shared by; the password only as a checksum. */
static char *session_id(const etcd_client_config *cfg, const char *host_id,
                        int64_t ttl_s)
{
    GString *id = g_string_new(host_id);
    g_string_append_c(id, '|');
    for (const char *const *u = cfg->endpoints; *u != NULL; u++)
        g_string_append_printf(id, "%s,", *u);
    char *pw = cfg->password
                   ? g_compute_checksum_for_string(G_CHECKSUM_SHA256,
                                                   cfg->password, -1)
                   : NULL;
    g_string_append_printf(id, "|%u|%u|%zu|%" G_GINT64_FORMAT "|%s|%s|%s|%s|%s",
                           cfg->timeout_ms, cfg->attempt_ms,
                           cfg->max_reply_bytes, (gint64)ttl_s,
                           cfg->ca_file ? cfg->ca_file : "",
                           cfg->cert_file ? cfg->cert_file : "",
                           cfg->key_file ? cfg->key_file : "",
                           cfg->user ? cfg->user : "", pw ? pw : "");
    g_free(pw);
    return g_string_free(id, FALSE);
}

static void session_free(etcd_session *se)
{
    if (se->keeper != NULL) {
        pthread_mutex_lock(&se->lock);
        se->stopping = true;
        pthread_cond_broadcast(&se->cond);
        pthread_mutex_unlock(&se->lock);
        g_thread_join(se->keeper);
    }
    /* The lease is not revoked: like a crash, the entries on it stay
     * until it expires (lease_ttl), so a registry reopened meanwhile (or
     * another process, for entries registered on its behalf) still finds
     * them. */
    for (guint i = 0; i < se->retired->len; i++)
        procreg_etcd_state_free(se->retired->pdata[i]);
    g_ptr_array_unref(se->retired);
    procreg_etcd_client_free(se->client);
    g_ptr_array_unref(se->states);
    g_free(se->keeper_error);
    g_free(se->id);
    pthread_cond_destroy(&se->cond);
    pthread_mutex_destroy(&se->lock);
    pthread_mutex_destroy(&se->renew_lock);
    g_free(se);
}

/* A fork() child has the parent's sessions but not their threads, and
 * their connections are the parent's: it starts with none (the parent's
 * copies are left alone, as procreg_close() leaves the parent's
 * registries). */
static void forget_sessions_in_child(void)
{
    pthread_mutex_init(&sessions_lock, NULL);
    sessions = NULL;
}

static void at_fork_once(void)
{
    pthread_atfork(NULL, NULL, forget_sessions_in_child);
}

ETCD_HIDDEN int procreg_etcd_session_open(const etcd_client_config *cfg,
                                          const char *host_id, int64_t ttl_s,
                                          etcd_session **out, GError **error)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, at_fork_once);
    char *id = session_id(cfg, host_id, ttl_s);
    pthread_mutex_lock(&sessions_lock);
    if (sessions == NULL)
        sessions = g_hash_table_new(g_str_hash, g_str_equal);
    etcd_session *se = g_hash_table_lookup(sessions, id);
    if (se != NULL)
        se->refs++;
    pthread_mutex_unlock(&sessions_lock);
    if (se != NULL) {
        g_free(id);
        *out = se;
        return 0;
    }
    /* A new one, its lease granted outside the table's lock (a slow
     * cluster holds up no other). */
    se = g_new0(etcd_session, 1);
    se->id = id;
    se->refs = 1;
    se->ttl_s = ttl_s;
    se->timeout_ms = cfg->timeout_ms;
    pthread_mutex_init(&se->lock, NULL);
    pthread_mutex_init(&se->renew_lock, NULL);
    cond_init_monotonic(&se->cond);
    se->states = g_ptr_array_new();
    se->retired = g_ptr_array_new();
    se->client = procreg_etcd_client_new(cfg);
    int rc = lease_grant(se, procreg_etcd_deadline(se->client), &se->lease,
                         &se->lease_ttl, error);
    if (rc != 0) {
        session_free(se);
        return rc;
    }
    pthread_mutex_lock(&sessions_lock);
    etcd_session *other = g_hash_table_lookup(sessions, id);
    if (other != NULL) {
        /* Opened meanwhile by another thread: share that one (the lease
         * granted here expires unused). */
        other->refs++;
        pthread_mutex_unlock(&sessions_lock);
        session_free(se);
        *out = other;
        return 0;
    }
    se->last_keepalive = g_get_monotonic_time();
    se->keeper = g_thread_new("procreg-etcd-keep", keeper_main, se);
    g_hash_table_insert(sessions, se->id, se);
    pthread_mutex_unlock(&sessions_lock);
    *out = se;
    return 0;
}

ETCD_HIDDEN etcd_client *procreg_etcd_session_client(etcd_session *se)
{
    return se->client;
}

ETCD_HIDDEN void procreg_etcd_session_attach(etcd_session *se,
                                             etcd_state *s)
{
    pthread_mutex_lock(&se->lock);
    g_ptr_array_add(se->states, s);
    pthread_mutex_unlock(&se->lock);
}

ETCD_HIDDEN bool procreg_etcd_session_leave(etcd_session *se, etcd_state *s)
{
    pthread_mutex_lock(&se->lock);
    while (se->busy == s)
        pthread_cond_wait(&se->cond, &se->lock);
    g_ptr_array_remove(se->states, s);
    pthread_mutex_unlock(&se->lock);

    /* Under the table's lock, so that the last registry's leave (which
     * frees the retired) comes after. */
    pthread_mutex_lock(&sessions_lock);
    bool last = --se->refs == 0;
    bool keep = false;
    if (last) {
        g_hash_table_remove(sessions, se->id);
    } else {
        pthread_mutex_lock(&s->lock);
        keep = g_hash_table_size(s->owned) > 0;
        if (keep) {
            /* Retired: no core to report to, no watch; the keeper
             * removes its entries as their owners die, then frees it. */
            s->host = NULL;
            s->stopping = false;
            g_hash_table_remove_all(s->mirror);
            g_hash_table_remove_all(s->watched);
        }
        pthread_mutex_unlock(&s->lock);
        if (keep) {
            pthread_mutex_lock(&se->lock);
            g_ptr_array_add(se->retired, s);
            pthread_mutex_unlock(&se->lock);
        }
    }
    pthread_mutex_unlock(&sessions_lock);
    if (last)
        session_free(se);
    return keep;
}
