/*
 * The etcd client's credentials: TLS files set on every handle, and etcd
 * authentication.  With a user, the client asks etcd for a token
 * (/v3/auth/authenticate) before its first call and sends it with every
 * request (Authorization); a token etcd refuses ("invalid auth token":
 * simple tokens expire, 5 minutes by default) is replaced once per call.
 *
 * The password never leaves this file but in the authenticate request's
 * body, which is wiped after the call: no message, log or spec shows it
 * (the core prints an option named "password" as ***).
 */
#include "etcd-client-private.h"

/* gRPC status codes of etcd's authentication errors. */
enum {
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_UNAUTHENTICATED = 16,
};

ETCD_HIDDEN struct curl_slist *procreg_etcd_client_headers(etcd_client *c,
                                                          unsigned flags,
                                                          char **token)
{
    bool leader = !(flags & ETCD_CALL_NO_LEADER_NEEDED);
    struct curl_slist *l = NULL;
    l = curl_slist_append(l, "Content-Type: application/json");
    /* No "Expect: 100-continue" round trip for bodies over 1 KiB. */
    l = curl_slist_append(l, "Expect:");
    /* gRPC metadata "hasleader": a member without a leader fails the call
     * at once ("etcdserver: no leader") instead of blocking for ~7 s. */
    if (leader)
        l = curl_slist_append(l, "Grpc-Metadata-hasleader: true");
    *token = NULL;
    pthread_mutex_lock(&c->lock);
    if (!(flags & ETCD_CALL_NO_TOKEN) && c->token != NULL &&
        c->token[0] != '\0')
        *token = g_strdup(c->token);
    pthread_mutex_unlock(&c->lock);
    if (*token != NULL) {
        /* The gateway passes it on as gRPC metadata "authorization". */
        char *h = g_strconcat("Authorization: ", *token, NULL);
        l = curl_slist_append(l, h);
        g_free(h);
    }
    return l;
}

ETCD_HIDDEN void procreg_etcd_client_tls(etcd_client *c, CURL *h)
{
    if (c->ca_file != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    if (c->cert_file != NULL)
        curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert_file);
    if (c->key_file != NULL)
        curl_easy_setopt(h, CURLOPT_SSLKEY, c->key_file);
}

/* @s as a JSON string (with quotes) onto @b. */
static void append_json_string(GString *b, const char *s)
{
    g_string_append_c(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            g_string_append_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            g_string_append_printf(b, "\\u%04x", *p);
        else
            g_string_append_c(b, (char)*p);
    }
    g_string_append_c(b, '"');
}

/* The password's bytes do not outlive the request. */
static void wipe(GString *s)
{
    volatile char *p = s->str;
    for (gsize i = 0; i < s->len; i++)
        p[i] = 0;
    g_string_free(s, TRUE);
}

ETCD_HIDDEN int procreg_etcd_client_authenticate(etcd_client *c,
                                                const char *refused,
                                                gint64 deadline,
                                                GError **error)
{
    if (c->user == NULL)
        return 0;
    pthread_mutex_lock(&c->auth_lock);
    pthread_mutex_lock(&c->lock);
    /* Another thread may have authenticated while this one waited. */
    bool needed = c->token == NULL || g_strcmp0(c->token, refused) == 0;
    pthread_mutex_unlock(&c->lock);
    int rc = 0;
    if (needed) {
        GString *b = g_string_new("{\"name\":");
        append_json_string(b, c->user);
        g_string_append(b, ",\"password\":");
        append_json_string(b, c->password);
        g_string_append_c(b, '}');
        JsonNode *reply = NULL;
        GError *local = NULL;
        rc = procreg_etcd_client_call(c, "/v3/auth/authenticate", b->str,
                                      ETCD_CALL_NO_TOKEN, deadline, -1,
                                      &reply, NULL, &local);
        wipe(b);
        char *token = NULL;
        if (rc == 0) {
            JsonNode *t = json_object_get_member(json_node_get_object(reply),
                                                 "token");
            if (t != NULL && JSON_NODE_HOLDS_VALUE(t) &&
                json_node_get_value_type(t) == G_TYPE_STRING &&
                json_node_get_string(t)[0] != '\0' &&
                strpbrk(json_node_get_string(t), "\r\n") == NULL)
                token = g_strdup(json_node_get_string(t));
            else
                rc = procreg_set_error(&local, PROCREG_EBACKEND,
                                       "etcd answered the authentication of "
                                       "user '%s' without a token",
                                       c->user);
            json_node_unref(reply);
        } else if (local != NULL &&
                   strstr(local->message, "authentication is not enabled") !=
                       NULL) {
            /* A cluster without authentication: nothing to send. */
            g_clear_error(&local);
            token = g_strdup("");
            rc = 0;
        }
        if (rc == 0) {
            __atomic_fetch_add(&c->authentications, 1, __ATOMIC_RELAXED);
            pthread_mutex_lock(&c->lock);
            g_free(c->token);
            c->token = token;
            pthread_mutex_unlock(&c->lock);
        } else {
            g_propagate_prefixed_error(error, local,
                                       "etcd: cannot authenticate as user "
                                       "'%s': ",
                                       c->user);
        }
    }
    pthread_mutex_unlock(&c->auth_lock);
    return rc;
}

ETCD_HIDDEN void procreg_etcd_client_token_refused(etcd_client *c)
{
    pthread_mutex_lock(&c->lock);
    g_clear_pointer(&c->token, g_free);
    pthread_mutex_unlock(&c->lock);
}

ETCD_HIDDEN char *procreg_etcd_client_auth_refusal(etcd_client *c, int grpc,
                                                  const char *msg,
                                                  const char *url)
{
    if (strstr(msg, "user name is empty") != NULL)
        return g_strdup_printf("etcd %s requires authentication, and this "
                               "spec gives no user (options user and "
                               "password or password_file)",
                               url);
    if (strstr(msg, "invalid user ID or password") != NULL)
        return g_strdup_printf("etcd %s refused the credentials of user '%s': "
                               "%s",
                               url, c->user ? c->user : "", msg);
    if (grpc == GRPC_PERMISSION_DENIED)
        return g_strdup_printf("etcd %s denied user '%s' this request (%s): "
                               "its roles need read and write on the prefix",
                               url, c->user ? c->user : "(none)", msg);
    if (grpc == GRPC_UNAUTHENTICATED ||
        (grpc == GRPC_FAILED_PRECONDITION && strstr(msg, "auth") != NULL) ||
        (grpc == GRPC_INVALID_ARGUMENT && strstr(msg, "auth") != NULL))
        return g_strdup_printf("etcd %s refused the authentication of user "
                               "'%s': %s",
                               url, c->user ? c->user : "(none)", msg);
    return NULL;
}
