/*
 * etcd backend: groups (duplicate keys).  One key per member under its
 * group's prefix (etcd-codec.h):
 *
 *   P/e/<ns>\x01<group>\0                  the group's reason marker
 *   P/e/<ns>\x01<group>\0<writer>.<nonce>  one member, on the lease
 *
 * Its value is an entry's (owner, host, join time, writer, nonce,
 * metadata); its id is its create revision (members are never updated, so
 * that is its mod revision too): unique in the cluster, increasing in join
 * order, never reused.  No valid namespace or name holds a control
 * character, so member keys and group markers never clash with entries or
 * namespace markers, and the groups of a namespace lie just after its
 * entries: [P/e/<ns>\x01, P/e/<ns>\x02), inside what the watch covers.
 *
 * Writes are safe against a late repetition (an attempt that got no
 * answer, sent again or reaching etcd after a later change), as entries'
 * are (etcd-ops.c):
 *  - join creates its key (unique to this join) only while absent and
 *    while the group's marker is no newer than the latest revision known:
 *    a repetition after any removal in the group changes nothing; finding
 *    its key present is its own earlier attempt, and finding it absent
 *    after a removal when an attempt went unanswered is "outcome unknown";
 *  - leave compares each member's revision (a repetition after the member
 *    went removes nothing, and a key is never created again) and writes
 *    the group's marker with its nonce, by which a removal whose answer
 *    was lost recognises itself.
 * Members go with the lease (a host that dies whole), and the members of
 * a process that dies on a live host are removed by that host's keeper
 * (procreg_etcd_locals_reap(), reason owner_exited), or by a read here
 * that finds them first.  A lost lease loses its members: unlike entries
 * they are not registered again (a new key would be a new member).
 */
#include "etcd-private.h"

#include <string.h>

/* Members removed per transaction: etcd takes 128 operations in one by
 * default (--max-txn-ops), a member costs a compare and a delete. */
#define LEAVE_CHUNK 48

/* ------------------------------------------------------------------------ */
/* Members from kvs                                                         */

/* @out from member kv @kv (names filled when @names); false when its key
 * or value is not a member's. */
static bool member_of(etcd_state *s, const etcd_kv *kv, bool names,
                      procreg_member *out, etcd_value *v)
{
    char *ns = NULL, *group = NULL;
    const char *why;
    if ((names && !procreg_etcd_split_member_key(s, kv->key, kv->key_len, &ns,
                                                 &group)) ||
        !procreg_etcd_value_decode(kv->value, kv->value_len, v, &why)) {
        g_free(ns);
        g_free(group);
        return false;
    }
    memset(out, 0, sizeof *out);
    out->ns = ns;
    out->group = group;
    out->id = (uint64_t)kv->create_rev;
    out->owner = v->owner;
    out->metadata = v->metadata ? g_variant_ref(v->metadata) : NULL;
    out->joined_at = v->registered_at;
    return true;
}

static int corrupt(const etcd_kv *kv, GError **error)
{
    char *k = procreg_etcd_key_for_humans(kv->key, kv->key_len);
    int rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "etcd: corrupt group member at key '%s'", k);
    g_free(k);
    return rc;
}

/* The range of group @mk's members: after its marker, up to the next
 * group. */
static void members_range(const GString *mk, GString **start, GString **end)
{
    *start = g_string_new_len(mk->str, (gssize)mk->len);
    g_string_append_c(*start, '\x01');
    *end = procreg_etcd_prefix_end(mk->str, mk->len);
}

/* The range of every group of @ns (NULL: the whole prefix, which holds
 * entries too). */
static void groups_range(etcd_state *s, const char *ns, GString **start,
                         GString **end)
{
    procreg_etcd_ns_range(s, ns, start, end);
    if (ns != NULL) {
        (*start)->str[(*start)->len - 1] = '\x01';
        (*end)->str[(*end)->len - 1] = '\x02';
    }
}

static void gstring_free(gpointer p)
{
    g_string_free(p, TRUE);
}

static gint by_id(gconstpointer a, gconstpointer b)
{
    uint64_t x = ((const procreg_member *)a)->id;
    uint64_t y = ((const procreg_member *)b)->id;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------------ */
/* Members of this host, for the keeper                                     */

ETCD_HIDDEN void procreg_etcd_locals_put(etcd_state *s, const void *k,
                                         size_t n, const void *value,
                                         size_t vlen, int64_t rev)
{
    etcd_value v;
    const char *why;
    if (!procreg_etcd_value_decode(value, vlen, &v, &why))
        return;
    if (strcmp(v.host, s->host_id) == 0) {
        local_member *l = g_new(local_member, 1);
        l->mod_rev = rev;
        l->owner = v.owner;
        pthread_mutex_lock(&s->lock);
        g_hash_table_replace(s->locals, g_bytes_new(k, n), l);
        pthread_mutex_unlock(&s->lock);
    }
    procreg_etcd_value_clear(&v);
}

ETCD_HIDDEN void procreg_etcd_locals_remove(etcd_state *s, const void *k,
                                            size_t n)
{
    GBytes *kb = g_bytes_new(k, n);
    pthread_mutex_lock(&s->lock);
    g_hash_table_remove(s->locals, kb);
    pthread_mutex_unlock(&s->lock);
    g_bytes_unref(kb);
}

/* A local member's owner and revision, for procreg_etcd_reap(). */
static const procreg_owner *local_record(gconstpointer p, int64_t *rev)
{
    const local_member *l = p;
    *rev = l->mod_rev;
    return &l->owner;
}

/* A member's revision never changes (s->locals' invariant), so a removal
 * from the table pinned to it removes what the keeper found dead. */
ETCD_HIDDEN void procreg_etcd_locals_reap(etcd_state *s)
{
    procreg_etcd_reap(s, s->locals, local_record);
}

/* ------------------------------------------------------------------------ */
/* Events                                                                   */

ETCD_HIDDEN bool procreg_etcd_member_decode(etcd_state *s, const void *key,
                                            size_t klen, const void *value,
                                            size_t vlen, int64_t revision,
                                            procreg_change *c)
{
    if (c->kind == PROCREG_EVENT_UPDATED) /* never written: not a member's */
        return false;
    char *ns = NULL, *group = NULL;
    if (!procreg_etcd_split_member_key(s, key, klen, &ns, &group)) {
        atomic_add(&s->corrupt_seen, 1);
        return false;
    }
    procreg_entry e = {.ns = ns, .name = group,
                       .revision = (uint64_t)revision};
    etcd_value v;
    const char *why;
    if (value != NULL && procreg_etcd_value_decode(value, vlen, &v, &why)) {
        procreg_etcd_fill_entry(&v, revision, ns, group, &e);
        procreg_etcd_value_clear(&v);
    } else if (c->kind == PROCREG_EVENT_REGISTERED) {
        /* A join we cannot read is not one to announce. */
        atomic_add(&s->corrupt_seen, 1);
        procreg_entry_clear(&e);
        return false;
    }
    c->kind = c->kind == PROCREG_EVENT_REGISTERED ? PROCREG_EVENT_JOINED
                                                  : PROCREG_EVENT_LEFT;
    c->entry = e;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Join                                                                     */

/* The key is this join's alone: our own put, applied by an attempt whose
 * answer was lost. */
static int join_held(etcd_state *s, const etcd_kv *held, int64_t lease,
                     bool unsure, void *user, int64_t *created,
                     GError **error)
{
    *created = held->create_rev;
    return 0;
}

ETCD_HIDDEN int procreg_etcd_group_join(void *state, const procreg_key *key,
                                        const procreg_record *record,
                                        procreg_member *joined,
                                        GError **error)
{
    etcd_state *s = state;
    procreg_etcd_watch_use(s, procreg_key_bytes(key));
    gint64 deadline = procreg_etcd_deadline(s->client);
    etcd_value v;
    size_t vlen = 0;
    char *value = procreg_etcd_record_value(s, record, &v, &vlen);
    GString *mk = procreg_etcd_group_marker_key(s, key);
    GString *k = g_string_new_len(mk->str, (gssize)mk->len);
    g_string_append_printf(k, "%s.%" G_GUINT64_FORMAT, s->writer, v.nonce);
    int64_t id = 0;
    int rc = procreg_etcd_create_guarded(s, k, value, vlen, "join", "group",
                                         deadline, join_held, NULL, &id,
                                         error);
    if (rc == 0) {
        procreg_etcd_locals_put(s, k->str, k->len, value, vlen, id);
        if (joined != NULL) {
            memset(joined, 0, sizeof *joined);
            joined->id = (uint64_t)id;
            joined->owner = record->owner;
            joined->metadata =
                record->metadata ? g_variant_ref(record->metadata) : NULL;
            joined->joined_at = record->registered_at;
        }
        procreg_etcd_watch_await(s, id, deadline);
    } else if (rc == PROCREG_EBACKEND && error != NULL && *error == NULL) {
        procreg_set_error(error, rc,
                          "etcd: the join kept losing races (%d attempts)",
                          ETCD_WRITE_ATTEMPTS);
    }
    g_string_free(k, TRUE);
    g_string_free(mk, TRUE);
    g_free(value);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Leave                                                                    */

/* A member a leave removes. */
typedef struct {
    etcd_kv kv;
    procreg_member m;
} target;

static void target_clear(gpointer p)
{
    target *t = p;
    procreg_etcd_kv_clear(&t->kv);
    procreg_member_clear(&t->m);
}

typedef struct {
    const procreg_owner *owner; /* NULL: every member */
    uint64_t member_id;         /* 0: every member of owner */
    GArray *targets;
    bool denied; /* member_id is another owner's */
    procreg_owner holder;
} leave_ctx;

static bool owned_by(etcd_state *s, const etcd_value *v,
                     const procreg_owner *owner)
{
    return strcmp(v->host, s->host_id) == 0 && v->owner.pid == owner->pid &&
           v->owner.start_time == owner->start_time;
}

static int target_one(etcd_state *s, etcd_kv *kv, void *user, GError **error)
{
    leave_ctx *c = user;
    if (c->member_id != 0 && (uint64_t)kv->create_rev != c->member_id)
        return 0;
    target t = {0};
    etcd_value v;
    if (!member_of(s, kv, false, &t.m, &v))
        return corrupt(kv, error);
    bool take = c->owner == NULL || owned_by(s, &v, c->owner);
    if (!take && c->member_id != 0) {
        c->denied = true;
        c->holder = v.owner;
    }
    procreg_etcd_value_clear(&v);
    if (!take) {
        procreg_member_clear(&t.m);
        return 0;
    }
    /* The kv is the caller's (range_all pages with it): a copy. */
    t.kv = *kv;
    t.kv.key = g_memdup2(kv->key, kv->key_len + 1);
    t.kv.value = g_memdup2(kv->value, kv->value_len + 1);
    g_array_append_val(c->targets, t);
    return 0;
}

/* Remove @n targets from @t in one transaction, with @reason in the
 * group's marker.  *@gone: whether they went (by this attempt or an
 * earlier one of it); false when one of them changed meanwhile. */
static int remove_chunk(etcd_state *s, const target *t, guint n,
                        procreg_event_reason reason, gint64 deadline,
                        bool *gone, int64_t *at, GError **error)
{
    uint64_t nonce = procreg_etcd_nonce(s);
    GString *key = g_string_new(NULL);
    GString *b = g_string_new("{\"compare\":[");
    for (guint i = 0; i < n; i++) {
        g_string_truncate(key, 0);
        g_string_append_len(key, (const char *)t[i].kv.key,
                            (gssize)t[i].kv.key_len);
        procreg_etcd_op_compare(b, key, "MOD", "EQUAL", "mod_revision",
                                t[i].kv.mod_rev);
        g_string_append_c(b, i + 1 < n ? ',' : ']');
    }
    g_string_append(b, ",\"success\":[");
    for (guint i = 0; i < n; i++) {
        g_string_truncate(key, 0);
        g_string_append_len(key, (const char *)t[i].kv.key,
                            (gssize)t[i].kv.key_len);
        procreg_etcd_op_delete(b, key, NULL);
        g_string_append_c(b, ',');
    }
    procreg_etcd_op_marker(s, b, key, s->writer, nonce, reason);
    g_string_append(b, "],\"failure\":[");
    GString *mk = procreg_etcd_marker_key(s, key->str, key->len);
    procreg_etcd_op_range(b, mk);
    g_string_append(b, "]}");
    g_string_free(mk, TRUE);
    g_string_free(key, TRUE);
    JsonNode *reply = NULL;
    bool unsure = false;
    int rc = procreg_etcd_call_write(s->client, "/v3/kv/txn", b->str,
                                     deadline, &reply, &unsure, error);
    g_string_free(b, TRUE);
    if (rc != 0)
        return rc == ETCD_ELEASE_GONE ? PROCREG_EBACKEND : rc;
    JsonObject *o = json_node_get_object(reply);
    bool succeeded = false;
    rc = procreg_etcd_txn_outcome(o, 1, &succeeded, at, error);
    if (rc == 0)
        procreg_etcd_revision_seen(s, *at);
    *gone = succeeded;
    /* Our own removal, applied by an attempt whose answer was lost. */
    if (rc == 0 && !succeeded)
        *gone = procreg_etcd_own_marker(
            s, procreg_etcd_txn_response(o, 0, "response_range"), nonce, at);
    if (rc == 0 && !*gone && unsure)
        rc = procreg_etcd_outcome_unknown(error, "leave", "group");
    json_node_unref(reply);
    return rc;
}

ETCD_HIDDEN int procreg_etcd_group_leave(void *state, const procreg_key *key,
                                         uint64_t member_id,
                                         const procreg_owner *owner,
                                         procreg_event_reason reason,
                                         GArray *removed, GError **error)
{
    etcd_state *s = state;
    procreg_etcd_watch_use(s, procreg_key_bytes(key));
    gint64 deadline = procreg_etcd_deadline(s->client);
    GString *mk = procreg_etcd_group_marker_key(s, key);
    GString *start, *end;
    members_range(mk, &start, &end);
    int count = 0, rc = 0;
    int64_t committed = 0;
    bool settled = false;
    for (int attempt = 0; rc == 0 && !settled; attempt++) {
        if (attempt == ETCD_WRITE_ATTEMPTS) {
            rc = procreg_set_error(error, PROCREG_ECONFLICT,
                                   "etcd: the group kept changing during the "
                                   "leave (%d attempts)",
                                   ETCD_WRITE_ATTEMPTS);
            break;
        }
        leave_ctx c = {.owner = owner, .member_id = member_id,
                       .targets = g_array_new(FALSE, TRUE, sizeof(target))};
        g_array_set_clear_func(c.targets, target_clear);
        rc = procreg_etcd_range_all(s, start, end, false, false, 0, target_one,
                                    &c, NULL, error);
        if (rc == 0 && c.denied)
            rc = procreg_set_member_owner_error(error, key, member_id,
                                                &c.holder);
        settled = true;
        for (guint i = 0; rc == 0 && settled && i < c.targets->len;
             i += LEAVE_CHUNK) {
            guint n = MIN(LEAVE_CHUNK, c.targets->len - i);
            target *t = &g_array_index(c.targets, target, i);
            int64_t at = 0;
            rc = remove_chunk(s, t, n, reason, deadline, &settled, &at, error);
            if (rc != 0 || !settled) /* one changed: read them again */
                break;
            committed = at;
            count += (int)n;
            for (guint j = 0; j < n; j++) {
                procreg_etcd_locals_remove(s, t[j].kv.key, t[j].kv.key_len);
                if (removed != NULL) {
                    procreg_member m = t[j].m;
                    memset(&t[j].m, 0, sizeof t[j].m);
                    g_array_append_val(removed, m);
                }
            }
        }
        g_array_unref(c.targets);
    }
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    g_string_free(mk, TRUE);
    if (committed != 0)
        procreg_etcd_watch_await(s, committed, deadline);
    return rc == 0 ? count : rc;
}

/* ------------------------------------------------------------------------ */
/* Reads                                                                    */

typedef struct {
    GArray *out;
    bool names;
    GPtrArray *dead; /* GString* keys of dead owners' members, or NULL */
    GArray *dead_revs;
} read_ctx;

static int read_one(etcd_state *s, etcd_kv *kv, void *user, GError **error)
{
    read_ctx *c = user;
    if (!procreg_etcd_is_member_key(s, kv->key, kv->key_len))
        return 0; /* an entry, when reading the whole prefix */
    procreg_member m;
    etcd_value v;
    if (!member_of(s, kv, c->names, &m, &v))
        return corrupt(kv, error);
    bool dead = procreg_etcd_owner_dead_here(s, &v);
    procreg_etcd_value_clear(&v);
    if (dead) {
        procreg_member_clear(&m);
        if (c->dead != NULL) {
            g_ptr_array_add(c->dead,
                            g_string_new_len((const char *)kv->key,
                                             (gssize)kv->key_len));
            g_array_append_val(c->dead_revs, kv->mod_rev);
        }
        return 0;
    }
    g_array_append_val(c->out, m);
    return 0;
}

/* Members of a process that died on this host are left out of reads at
 * once; group_members removes them too (reason owner_exited, reported by
 * the watch), not waiting for the keeper's round. */
ETCD_HIDDEN int procreg_etcd_group_members(void *state, const procreg_key *key,
                                           GArray *out, GError **error)
{
    etcd_state *s = state;
    procreg_etcd_watch_use(s, procreg_key_bytes(key));
    GString *mk = procreg_etcd_group_marker_key(s, key);
    GString *start, *end;
    members_range(mk, &start, &end);
    read_ctx c = {.out = out,
                  .dead = g_ptr_array_new_with_free_func(
                      gstring_free),
                  .dead_revs = g_array_new(FALSE, FALSE, sizeof(int64_t))};
    guint first = out->len;
    int rc = procreg_etcd_range_all(s, start, end, false, s->serializable, 0,
                                    read_one, &c, NULL, error);
    if (rc == 0)
        g_array_sort(out, by_id); /* ours alone: the caller passes it empty */
    else
        g_array_set_size(out, first);
    gint64 deadline = procreg_etcd_deadline(s->client);
    for (guint i = 0; rc == 0 && i < c.dead->len; i++) {
        bool gone = false;
        GString *k = c.dead->pdata[i];
        /* Failing, it is left to the keeper and the lease. */
        if (procreg_etcd_evict(s, k, g_array_index(c.dead_revs, int64_t, i),
                               PROCREG_REASON_OWNER_EXITED, deadline, &gone,
                               NULL) == 0)
            procreg_etcd_locals_remove(s, k->str, k->len);
    }
    g_ptr_array_unref(c.dead);
    g_array_unref(c.dead_revs);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    g_string_free(mk, TRUE);
    return rc;
}

ETCD_HIDDEN int procreg_etcd_group_list_all(void *state, const char *ns,
                                            GArray *out, GError **error)
{
    etcd_state *s = state;
    if (ns != NULL)
        procreg_etcd_watch_use(s, ns);
    GString *start, *end;
    groups_range(s, ns, &start, &end);
    read_ctx c = {.out = out, .names = true};
    int rc = procreg_etcd_range_all(s, start, end, false, s->serializable, 0,
                                    read_one, &c, NULL, error);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    return rc;
}

/* One count-only range: members of a process that died on this host are
 * counted until they are removed (the keeper's next round at the latest). */
ETCD_HIDDEN int procreg_etcd_group_count(void *state, const procreg_key *key,
                                         size_t *out, GError **error)
{
    etcd_state *s = state;
    procreg_etcd_watch_use(s, procreg_key_bytes(key));
    GString *mk = procreg_etcd_group_marker_key(s, key);
    GString *start, *end;
    members_range(mk, &start, &end);
    GString *b = g_string_new("{");
    procreg_etcd_json_key(b, "key", start->str, start->len);
    g_string_append_c(b, ',');
    procreg_etcd_json_key(b, "range_end", end->str, end->len);
    g_string_append(b, ",\"count_only\":true");
    if (s->serializable)
        g_string_append(b, ",\"serializable\":true");
    g_string_append_c(b, '}');
    JsonNode *reply = NULL;
    int rc = procreg_etcd_call(s->client, "/v3/kv/range", b->str,
                               s->serializable ? ETCD_CALL_NO_LEADER_NEEDED
                                               : 0,
                               procreg_etcd_deadline(s->client), &reply,
                               error);
    g_string_free(b, TRUE);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    g_string_free(mk, TRUE);
    if (rc != 0)
        return rc == ETCD_ELEASE_GONE ? PROCREG_EBACKEND : rc;
    int64_t n = 0;
    JsonObject *o = json_node_get_object(reply);
    if (!procreg_etcd_json_int(o, "count", &n) || n < 0)
        rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "etcd sent a malformed count reply");
    json_node_unref(reply);
    *out = rc == 0 ? (size_t)n : 0;
    return rc;
}

static int group_of_one(etcd_state *s, etcd_kv *kv, void *user,
                        GError **error)
{
    (void)error;
    char *ns = NULL, *group = NULL;
    if (!procreg_etcd_split_member_key(s, kv->key, kv->key_len, &ns, &group))
        return 0; /* an entry, when reading the whole prefix */
    /* No name holds a control character: \x01 splits them. */
    char *id = g_strconcat(ns, "\x01", group, NULL);
    GHashTable *sizes = user;
    procreg_group_info *g = g_hash_table_lookup(sizes, id);
    if (g == NULL) {
        g = g_new0(procreg_group_info, 1);
        g->ns = ns;
        g->group = group;
        g_hash_table_insert(sizes, id, g);
    } else {
        g_free(id);
        g_free(ns);
        g_free(group);
    }
    g->members++;
    return 0;
}

/* Keys only, one pass: sizes count members of dead owners as
 * group_count does. */
ETCD_HIDDEN int procreg_etcd_group_list(void *state, const char *ns,
                                        GArray *out, GError **error)
{
    etcd_state *s = state;
    if (ns != NULL)
        procreg_etcd_watch_use(s, ns);
    GString *start, *end;
    groups_range(s, ns, &start, &end);
    GHashTable *sizes =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    int rc = procreg_etcd_range_all(s, start, end, true, s->serializable, 0,
                                    group_of_one, sizes, NULL, error);
    GHashTableIter it;
    gpointer g;
    g_hash_table_iter_init(&it, sizes);
    while (g_hash_table_iter_next(&it, NULL, &g)) {
        procreg_group_info *info = g;
        if (rc == 0) {
            g_array_append_val(out, *info);
        } else {
            g_free(info->ns);
            g_free(info->group);
        }
    }
    g_hash_table_unref(sizes);
    g_string_free(start, TRUE);
    g_string_free(end, TRUE);
    return rc;
}
