/*
 * etcd backend: the entries this instance registered, on its session's
 * lease (etcd-session.c).
 *
 *  - s->owned records what this instance wrote.  While a write is in
 *    flight (s->pending), a removal of its key seen meanwhile leaves a
 *    tombstone (s->tombs), so the write's late owned_put() does not bring
 *    back what was removed after it; tombstones go with the last write in
 *    flight, so they are never more than the writes.
 *  - After a lost lease is granted again, the entries still owned, with
 *    owners still alive, are registered again on the new one; those taken
 *    meanwhile are listed in s->unrestored for health_check.
 *  - Entries whose owner process died are removed (reason owner_exited),
 *    and so are the group members of this host (etcd-groups.c).
 * The session's keeper does the last two after each keepalive round
 * (procreg_etcd_owned_tend()).
 */
#include "etcd-private.h"

#include <string.h>

/* ------------------------------------------------------------------------ */
/* Owned entries and tombstones (under s->lock)                             */

ETCD_HIDDEN void procreg_etcd_owned_free(gpointer p)
{
    owned_entry *o = p;
    g_free(o->value);
    g_free(o);
}

ETCD_HIDDEN void procreg_etcd_owned_put_locked(etcd_state *s,
                                               const GString *key,
                                               const char *value, size_t len,
                                               int64_t rev,
                                               const procreg_owner *owner)
{
    GBytes *k = g_bytes_new(key->str, key->len);
    gint64 *tomb = g_hash_table_lookup(s->tombs, k);
    if (tomb != NULL && *tomb > rev) {
        /* Removed by someone else after this write. */
        g_bytes_unref(k);
        return;
    }
    owned_entry *o = g_hash_table_lookup(s->owned, k);
    if (o != NULL && o->mod_rev > rev) {
        g_bytes_unref(k);
        return;
    }
    o = g_new0(owned_entry, 1);
    o->value = g_strndup(value, len);
    o->value_len = len;
    o->mod_rev = rev;
    o->owner = *owner;
    g_hash_table_replace(s->owned, k, o);
}

ETCD_HIDDEN void procreg_etcd_owned_put(etcd_state *s, const GString *key,
                                        const char *value, size_t len,
                                        int64_t rev, const procreg_owner *owner)
{
    pthread_mutex_lock(&s->lock);
    procreg_etcd_owned_put_locked(s, key, value, len, rev, owner);
    pthread_mutex_unlock(&s->lock);
}

ETCD_HIDDEN void procreg_etcd_owned_remove_locked(etcd_state *s,
                                                  const void *key, size_t n,
                                                  int64_t rev)
{
    GBytes *k = g_bytes_new(key, n);
    owned_entry *o = g_hash_table_lookup(s->owned, k);
    if (o != NULL && o->mod_rev < rev)
        g_hash_table_remove(s->owned, k);
    gint64 *tomb = g_hash_table_lookup(s->tombs, k);
    if (tomb != NULL) {
        *tomb = MAX(*tomb, rev);
    } else if (g_hash_table_contains(s->pending, k)) {
        tomb = g_new(gint64, 1);
        *tomb = rev;
        g_hash_table_insert(s->tombs, g_bytes_ref(k), tomb);
    }
    g_bytes_unref(k);
}

ETCD_HIDDEN void procreg_etcd_owned_remove(etcd_state *s, const void *key,
                                           size_t n, int64_t rev)
{
    pthread_mutex_lock(&s->lock);
    procreg_etcd_owned_remove_locked(s, key, n, rev);
    pthread_mutex_unlock(&s->lock);
}

ETCD_HIDDEN void procreg_etcd_owned_begin(etcd_state *s, const GString *key)
{
    GBytes *k = g_bytes_new(key->str, key->len);
    pthread_mutex_lock(&s->lock);
    guint n = GPOINTER_TO_UINT(g_hash_table_lookup(s->pending, k));
    g_hash_table_replace(s->pending, g_bytes_ref(k), GUINT_TO_POINTER(n + 1));
    pthread_mutex_unlock(&s->lock);
    g_bytes_unref(k);
}

ETCD_HIDDEN void procreg_etcd_owned_end(etcd_state *s, const GString *key)
{
    GBytes *k = g_bytes_new(key->str, key->len);
    pthread_mutex_lock(&s->lock);
    guint n = GPOINTER_TO_UINT(g_hash_table_lookup(s->pending, k));
    if (n > 1) {
        g_hash_table_replace(s->pending, g_bytes_ref(k),
                             GUINT_TO_POINTER(n - 1));
    } else {
        g_hash_table_remove(s->pending, k);
        g_hash_table_remove(s->tombs, k);
    }
    pthread_mutex_unlock(&s->lock);
    g_bytes_unref(k);
}

/* ------------------------------------------------------------------------ */
/* After each keepalive round: re-registration, reaping                     */

/* Register again, on the new lease, what this instance owned when its
 * lease was lost.  Entries whose owner died are dropped; entries someone
 * else took meanwhile are listed in s->unrestored. */
static void restore_owned(etcd_state *s, int64_t lease)
{
    pthread_mutex_lock(&s->lock);
    s->restore_pending = false;
    GPtrArray *keys =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, s->owned);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_ptr_array_add(keys, g_bytes_ref(k));
    if (s->unrestored != NULL)
        g_ptr_array_unref(s->unrestored);
    s->unrestored = g_ptr_array_new_with_free_func(g_free);
    pthread_mutex_unlock(&s->lock);
    if (lease == 0) {
        g_ptr_array_unref(keys);
        return;
    }
    for (guint i = 0; i < keys->len; i++) {
        pthread_mutex_lock(&s->lock);
        bool stopping = s->stopping;
        if (stopping)
            s->restore_pending = true;
        pthread_mutex_unlock(&s->lock);
        if (stopping)
            break;
        gsize klen;
        const char *kraw = g_bytes_get_data(keys->pdata[i], &klen);
        GString *key = g_string_new_len(kraw, (gssize)klen);
        pthread_mutex_lock(&s->lock);
        owned_entry *o = g_hash_table_lookup(s->owned, keys->pdata[i]);
        char *value = o ? g_strndup(o->value, o->value_len) : NULL;
        size_t vlen = o ? o->value_len : 0;
        pthread_mutex_unlock(&s->lock);
        etcd_value v;
        const char *why;
        if (value == NULL ||
            !procreg_etcd_value_decode(value, vlen, &v, &why)) {
            g_free(value);
            g_string_free(key, TRUE);
            continue;
        }
        g_free(value);
        if (!procreg_owner_is_alive(&v.owner)) {
            pthread_mutex_lock(&s->lock);
            g_hash_table_remove(s->owned, keys->pdata[i]);
            pthread_mutex_unlock(&s->lock);
            procreg_etcd_value_clear(&v);
            g_string_free(key, TRUE);
            continue;
        }
        /* Writer "0": every watcher, this one included, reports it. */
        g_strlcpy(v.writer, "0", sizeof v.writer);
        value = procreg_etcd_value_encode(&v, &vlen);
        GString *b = g_string_new("{\"compare\":[");
        procreg_etcd_op_compare(b, key, "CREATE", "EQUAL", "create_revision",
                                0);
        g_string_append(b, "],\"success\":[");
        procreg_etcd_op_put(b, key, value, vlen, lease, false);
        g_string_append(b, "],\"failure\":[");
        procreg_etcd_op_range(b, key);
        g_string_append(b, "]}");
        JsonNode *reply = NULL;
        GError *err = NULL;
        procreg_etcd_owned_begin(s, key);
        int rc = procreg_etcd_call(s->client, "/v3/kv/txn", b->str, 0,
                                   procreg_etcd_deadline(s->client), &reply,
                                   &err);
        g_string_free(b, TRUE);
        char *ns = NULL, *name = NULL;
        procreg_etcd_split_key(s, (const guchar *)key->str, key->len, &ns,
                               &name);
        JsonObject *ro = rc == 0 ? json_node_get_object(reply) : NULL;
        bool succeeded;
        int64_t rev;
        if (rc == 0) {
            rc = procreg_etcd_txn_outcome(ro, 1, &succeeded, &rev, &err);
            if (rc != 0)
                json_node_unref(reply);
        }
        if (rc == 0) {
            etcd_kv held = {0};
            if (succeeded) {
                procreg_etcd_owned_put(s, key, value, vlen, rev, &v.owner);
            } else if (procreg_etcd_first_kv(
                           procreg_etcd_txn_response(ro, 0, "response_range"),
                           "kvs", &held) &&
                       held.lease == lease) {
                /* Registered again already (by a write that renewed). */
            } else {
                etcd_value hv;
                const char *hwhy;
                char *who = NULL;
                if (held.key != NULL &&
                    procreg_etcd_value_decode(held.value, held.value_len, &hv,
                                              &hwhy)) {
                    who = g_strdup_printf("pid %d on host %s",
                                          (int)hv.owner.pid, hv.host);
                    procreg_etcd_value_clear(&hv);
                }
                pthread_mutex_lock(&s->lock);
                g_hash_table_remove(s->owned, keys->pdata[i]);
                g_ptr_array_add(s->unrestored,
                                g_strdup_printf("%s/%s (taken by %s)",
                                                ns ? ns : "?",
                                                name ? name : "?",
                                                who ? who : "another owner"));
                pthread_mutex_unlock(&s->lock);
                g_free(who);
            }
            procreg_etcd_kv_clear(&held);
            json_node_unref(reply);
        } else {
            pthread_mutex_lock(&s->lock);
            /* Try again on the next tick. */
            s->restore_pending = true;
            g_ptr_array_add(s->unrestored,
                            g_strdup_printf("%s/%s (%s)", ns ? ns : "?",
                                            name ? name : "?",
                                            err ? err->message
                                                : procreg_strerror(rc)));
            pthread_mutex_unlock(&s->lock);
        }
        procreg_etcd_owned_end(s, key);
        g_clear_error(&err);
        g_free(ns);
        g_free(name);
        g_free(value);
        procreg_etcd_value_clear(&v);
        g_string_free(key, TRUE);
    }
    g_ptr_array_unref(keys);
}

ETCD_HIDDEN void procreg_etcd_reap(etcd_state *s, GHashTable *table,
                                   etcd_record_fn record_of)
{
    GPtrArray *dead =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    GArray *revs = g_array_new(FALSE, FALSE, sizeof(int64_t));
    pthread_mutex_lock(&s->lock);
    GHashTableIter it;
    gpointer k, val;
    g_hash_table_iter_init(&it, table);
    while (g_hash_table_iter_next(&it, &k, &val)) {
        int64_t rev;
        if (!procreg_owner_is_alive(record_of(val, &rev))) {
            g_ptr_array_add(dead, g_bytes_ref(k));
            g_array_append_val(revs, rev);
        }
    }
    pthread_mutex_unlock(&s->lock);
    for (guint i = 0; i < dead->len; i++) {
        pthread_mutex_lock(&s->lock);
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->lock);
        if (stopping)
            break;
        gsize n;
        const char *raw = g_bytes_get_data(dead->pdata[i], &n);
        GString *key = g_string_new_len(raw, (gssize)n);
        int64_t rev = g_array_index(revs, int64_t, i);
        bool removed = false;
        if (procreg_etcd_evict(s, key, rev, PROCREG_REASON_OWNER_EXITED,
                               procreg_etcd_deadline(s->client), &removed,
                               NULL) == 0) {
            if (removed)
                atomic_add(&s->reaped, 1);
            pthread_mutex_lock(&s->lock);
            /* Gone or changed: either way no longer the one we knew. */
            gpointer now = g_hash_table_lookup(table, dead->pdata[i]);
            int64_t now_rev = 0;
            if (now != NULL)
                record_of(now, &now_rev);
            if (now_rev == rev)
                g_hash_table_remove(table, dead->pdata[i]);
            pthread_mutex_unlock(&s->lock);
        }
        g_string_free(key, TRUE);
    }
    g_array_unref(revs);
    g_ptr_array_unref(dead);
}

/* An owned entry's owner and revision, for procreg_etcd_reap(). */
static const procreg_owner *owned_record(gconstpointer p, int64_t *rev)
{
    const owned_entry *o = p;
    *rev = o->mod_rev;
    return &o->owner;
}

ETCD_HIDDEN void procreg_etcd_owned_tend(etcd_state *s, int64_t lease)
{
    pthread_mutex_lock(&s->lock);
    bool restore = s->restore_pending && lease != 0 && !s->stopping;
    pthread_mutex_unlock(&s->lock);
    if (restore)
        restore_owned(s, lease);
    procreg_etcd_reap(s, s->owned, owned_record);
    procreg_etcd_locals_reap(s);
}
