/*
 * Operations on ranges of keys: list_all, count, count_namespaces,
 * list_names, and drop_namespace.
 *
 * Owns: the cursor walk over a namespace (the key range that starts at
 * "ns\0"; NULL: every entry), skipping entries of dead owners and
 * stopping at the first corrupt record; and dropping a namespace in one
 * write transaction (damaged entries go too, and the owner rows of the
 * owners whose entries went, format.c).
 * Relies on: txn.c for transactions, ops.c to fill and delete entries,
 * changelog.c to log the removals, liveness.c for whether an owner lives.
 */
#include "lmdb-internal.h"

#include <string.h>

typedef enum {
    SCAN_ENTRIES,   /* procreg_entry into @out */
    SCAN_COUNT,     /* into *@count */
    SCAN_NAMES,     /* up to @max g_strdup'ed names into @names */
    SCAN_NAMESPACES /* procreg_namespace_info into @out */
} scan_mode;

/* Visit the live entries of @ns (NULL: all) in key order. */
static int scan(lmdb_env *env, const char *ns, scan_mode mode, size_t max,
                GArray *out, size_t *count, GPtrArray *names,
                GError **error)
{
    MDB_txn *txn;
    int rc = procreg_lmdb_read_begin(env, &txn);
    if (rc != 0)
        return procreg_lmdb_fail(env, rc, "listing", error);
    MDB_cursor *c;
    rc = mdb_cursor_open(txn, entries_dbi(env, txn), &c);
    if (rc != 0) {
        procreg_lmdb_read_end(env, txn);
        return procreg_lmdb_fail(env, rc, "listing", error);
    }
    size_t prefix_len = ns ? strlen(ns) + 1 : 0;
    MDB_val k = {prefix_len, (void *)ns}, v;
    rc = procreg_lmdb_entries_seek(c, &k, &v, ns == NULL);
    size_t n = 0;
    int result = 0;
    for (; rc == 0; rc = procreg_lmdb_entries_next(c, &k, &v)) {
        if (ns != NULL && (k.mv_size < prefix_len ||
                           memcmp(k.mv_data, ns, prefix_len) != 0))
            break;
        raw_entry e;
        const char *why = entry_decode(&v, &e);
        size_t ns_len;
        if (why == NULL && !key_split(&k, &ns_len))
            why = "malformed key";
        if (why != NULL) {
            result = procreg_lmdb_corrupt_error(env, &k, why, error);
            break;
        }
        if (!procreg_lmdb_owner_alive(env, &e.owner))
            continue;
        if (mode == SCAN_COUNT) {
            n++;
            continue;
        }
        if (mode == SCAN_NAMESPACES) {
            /* Keys are sorted: a namespace is one run of them. */
            procreg_namespace_info *last =
                out->len > 0 ? &g_array_index(out, procreg_namespace_info,
                                              out->len - 1)
                             : NULL;
            if (last != NULL && strncmp(last->ns, k.mv_data, ns_len) == 0 &&
                last->ns[ns_len] == '\0') {
                last->entries++;
            } else {
                procreg_namespace_info info = {g_strndup(k.mv_data, ns_len),
                                               1};
                if (procreg_validate_name(info.ns, "namespace", NULL) != 0) {
                    g_free(info.ns);
                    result = procreg_lmdb_corrupt_error(
                        env, &k, "key breaks the name rules", error);
                    break;
                }
                g_array_append_val(out, info);
            }
            n++;
            continue;
        }
        procreg_entry pe = {0};
        if (!key_strings(&k, &pe.ns, &pe.name)) {
            result = procreg_lmdb_corrupt_error(
                env, &k, "key breaks the name rules", error);
            break;
        }
        if (mode == SCAN_NAMES) {
            g_ptr_array_add(names, pe.name);
            g_free(pe.ns);
            if (++n >= max)
                break;
            continue;
        }
        if (!procreg_lmdb_fill_entry(&e, &pe, &why)) {
            procreg_entry_clear(&pe);
            result = procreg_lmdb_corrupt_error(env, &k, why, error);
            break;
        }
        g_array_append_val(out, pe);
        n++;
    }
    mdb_cursor_close(c);
    procreg_lmdb_read_end(env, txn);
    if (result == 0 && rc != 0 && rc != MDB_NOTFOUND)
        result = procreg_lmdb_fail(env, rc, "listing", error);
    if (count != NULL)
        *count = n;
    return result;
}

int procreg_lmdb_list_all(void *state, const char *ns, GArray *out,
                          GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    guint before = out->len;
    int rc = scan(env, ns, SCAN_ENTRIES, 0, out, NULL, NULL, error);
    if (rc != 0)
        g_array_set_size(out, before);
    return rc;
}

int procreg_lmdb_count(void *state, const char *ns, size_t *out,
                       GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    return scan(env, ns, SCAN_COUNT, 0, NULL, out, NULL, error);
}

int procreg_lmdb_count_namespaces(void *state, GArray *out, GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    return scan(env, NULL, SCAN_NAMESPACES, 0, out, NULL, NULL, error);
}

int procreg_lmdb_list_names(void *state, const char *ns, size_t max,
                            GPtrArray *out)
{
    lmdb_state *st = state;
    STATE_ENV(st, NULL);
    if (max == 0)
        return 0;
    return scan(env, ns, SCAN_NAMES, max, NULL, NULL, out, NULL);
}

typedef struct {
    const char *ns;
    uint32_t instance_id;
    GArray *removed;
    guint removed_start;
} drop_ctx;

/* One entry of the namespace being dropped, copied out of the map. */
typedef struct {
    GBytes *key;
    raw_entry e;
    GBytes *meta;
    bool decoded;
} drop_item;

static void drop_item_clear(gpointer p)
{
    drop_item *it = p;
    g_bytes_unref(it->key);
    if (it->meta != NULL)
        g_bytes_unref(it->meta);
}

static int drop_step(lmdb_env *env, MDB_txn *txn, void *data, wstate *w)
{
    drop_ctx *ctx = data;
    g_array_set_size(ctx->removed, ctx->removed_start);
    size_t prefix_len = strlen(ctx->ns) + 1;
    MDB_cursor *c;
    MDB_dbi dbi = entries_dbi(env, txn);
    if (!procreg_lmdb_step_check(w, mdb_cursor_open(txn, dbi, &c),
                                 "dropping"))
        return PROCREG_EBACKEND;
    /* Collect first, then delete: deleting moves what the cursor and
     * earlier values point at. */
    GArray *items = g_array_new(FALSE, TRUE, sizeof(drop_item));
    g_array_set_clear_func(items, drop_item_clear);
    MDB_val k = {prefix_len, (void *)ctx->ns}, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < prefix_len ||
            memcmp(k.mv_data, ctx->ns, prefix_len) != 0)
            break;
        drop_item it = {.key = g_bytes_new(k.mv_data, k.mv_size)};
        it.decoded = entry_decode(&v, &it.e) == NULL;
        if (it.decoded && it.e.meta_len > 0) {
            it.meta = g_bytes_new(it.e.meta, it.e.meta_len);
            it.e.meta = g_bytes_get_data(it.meta, NULL);
        }
        g_array_append_val(items, it);
    }
    mdb_cursor_close(c);
    if (!procreg_lmdb_step_check(w, rc == MDB_NOTFOUND ? 0 : rc, "dropping")) {
        g_array_unref(items);
        return PROCREG_EBACKEND;
    }
    for (guint i = 0; i < items->len; i++) {
        drop_item *it = &g_array_index(items, drop_item, i);
        gsize len;
        MDB_val key = {0, NULL};
        key.mv_data = (void *)g_bytes_get_data(it->key, &len);
        key.mv_size = len;
        if (!it->decoded) {
            /* A damaged entry goes too: dropping is how it is cleaned up. */
            if (!procreg_lmdb_step_check(
                    w, mdb_del(txn, dbi, &key, NULL), "dropping"))
                break;
            w->dirty = true;
            continue;
        }
        bool alive = procreg_lmdb_owner_alive(env, &it->e.owner);
        procreg_entry pe = {0};
        const char *why;
        if (alive && key_strings(&key, &pe.ns, &pe.name) &&
            procreg_lmdb_fill_entry(&it->e, &pe, &why))
            g_array_append_val(ctx->removed, pe);
        else
            procreg_entry_clear(&pe);
        if (!procreg_lmdb_log_change(env, txn, w, PROCREG_EVENT_UNREGISTERED,
                                     alive ? PROCREG_REASON_NAMESPACE_DROPPED
                                           : PROCREG_REASON_OWNER_EXITED,
                                     alive ? ctx->instance_id : 0, &key,
                                     &it->e) ||
            !procreg_lmdb_entry_delete(env, txn, w, &key))
            break;
    }
    /* The namespace holds no entry now: the rows of the owners whose
     * entries went are all stale (format.c's invariant holds with none),
     * and a live owner would keep them until it dies.  (A row already
     * stale before the drop is not found from the entries: it stays.) */
    for (guint i = 0; w->mdb_rc == 0 && w->corrupt == NULL && i < items->len;
         i++) {
        drop_item *it = &g_array_index(items, drop_item, i);
        gsize len;
        MDB_val key = {0, NULL}, row;
        key.mv_data = (void *)g_bytes_get_data(it->key, &len);
        key.mv_size = len;
        uint8_t buf[OWNER_ROW_MAX];
        if (!it->decoded || !procreg_lmdb_owner_row(&it->e.owner, &key, &row,
                                                    buf))
            continue;
        int del = mdb_del(txn, dbi, &row, NULL);
        procreg_lmdb_step_check(w, del == MDB_NOTFOUND ? 0 : del,
                                "dropping an owner row");
    }
    bool any = items->len > 0;
    g_array_unref(items);
    if (w->mdb_rc != 0)
        return PROCREG_EBACKEND;
    uint64_t rev;
    if (any && (!procreg_lmdb_counter_next(env, txn, "revision", &rev, w) ||
                !procreg_lmdb_log_finish(env, txn, w)))
        return PROCREG_EBACKEND;
    return 0;
}

int procreg_lmdb_drop_namespace(void *state, const char *ns,
                                GArray *removed, GError **error)
{
    lmdb_state *st = state;
    STATE_ENV(st, error);
    drop_ctx ctx = {ns, st->instance_id, removed, removed->len};
    int rc = procreg_lmdb_write_txn(env, "drop a namespace", drop_step, &ctx,
                                    error);
    if (rc != 0)
        g_array_set_size(removed, ctx.removed_start);
    return rc;
}
