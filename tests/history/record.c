/*
 * The recorder's client: random operations on a small key space, each
 * written as an "inv" line before the call and a "res" line after it
 * (history.h), and the events of its subscription as "ev" lines.
 * Metadata carries a token unique to the write ("a" or "b") so that an
 * observation names the write it saw, and a group "g" that finds query.
 */
#include "record.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- logs ---- */

struct hist_log {
    pthread_mutex_t lock;
    int fd;
    bool each_line;
    GString *buf;
    int error; /* first errno of a failed write */
};

hist_log *hist_log_open(const char *path, bool each_line, GError **error)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC,
                  0600);
    if (fd < 0) {
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "cannot create %s: %s", path, g_strerror(errno));
        return NULL;
    }
    hist_log *log = g_new0(hist_log, 1);
    pthread_mutex_init(&log->lock, NULL);
    log->fd = fd;
    log->each_line = each_line;
    log->buf = g_string_new(NULL);
    return log;
}

static void write_all(hist_log *log, const char *p, size_t len)
{
    while (len > 0 && log->error == 0) {
        ssize_t n = write(log->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            log->error = n < 0 ? errno : EIO;
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

void hist_log_printf(hist_log *log, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&log->lock);
    g_string_append_vprintf(log->buf, fmt, ap);
    g_string_append_c(log->buf, '\n');
    if (log->each_line || log->buf->len > (1u << 20)) {
        write_all(log, log->buf->str, log->buf->len);
        g_string_truncate(log->buf, 0);
    }
    pthread_mutex_unlock(&log->lock);
    va_end(ap);
}

bool hist_log_close(hist_log *log, GError **error)
{
    write_all(log, log->buf->str, log->buf->len);
    int err = log->error;
    if (close(log->fd) != 0 && err == 0)
        err = errno;
    g_string_free(log->buf, TRUE);
    pthread_mutex_destroy(&log->lock);
    g_free(log);
    if (err != 0) {
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(err),
                    "writing the history: %s", g_strerror(err));
        return false;
    }
    return true;
}

void hist_cond_init(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

bool hist_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m,
                          gint64 end_us)
{
    struct timespec ts = {end_us / G_USEC_PER_SEC,
                          (end_us % G_USEC_PER_SEC) * 1000};
    return pthread_cond_timedwait(c, m, &ts) == 0;
}

int64_t hist_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

char *hist_owner_text(const procreg_owner *o)
{
    return g_strdup_printf("%d:%" PRIu64, (int)o->pid, o->start_time);
}

/* ---- owner pool ---- */

struct hist_owner_pool {
    pthread_mutex_t lock;
    GArray *owners; /* procreg_owner */
};

hist_owner_pool *hist_owner_pool_new(void)
{
    hist_owner_pool *p = g_new0(hist_owner_pool, 1);
    pthread_mutex_init(&p->lock, NULL);
    p->owners = g_array_new(FALSE, TRUE, sizeof(procreg_owner));
    return p;
}

void hist_owner_pool_free(hist_owner_pool *p)
{
    if (p == NULL)
        return;
    g_array_unref(p->owners);
    pthread_mutex_destroy(&p->lock);
    g_free(p);
}

void hist_owner_pool_set(hist_owner_pool *p, guint slot,
                         const procreg_owner *o)
{
    pthread_mutex_lock(&p->lock);
    if (slot >= p->owners->len)
        g_array_set_size(p->owners, slot + 1);
    g_array_index(p->owners, procreg_owner, slot) = *o;
    pthread_mutex_unlock(&p->lock);
}

static bool pool_pick(hist_owner_pool *p, GRand *rand, procreg_owner *out)
{
    pthread_mutex_lock(&p->lock);
    bool some = p->owners->len > 0;
    if (some)
        *out = g_array_index(p->owners, procreg_owner,
                             g_rand_int_range(rand, 0, (int)p->owners->len));
    pthread_mutex_unlock(&p->lock);
    return some;
}

/* ---- metadata ---- */

static const char *const field_names[HIST_FIELDS] = {"a", "b", "g"};

static GVariant *meta_variant(const hist_meta *m)
{
    GVariantDict d;
    g_variant_dict_init(&d, NULL);
    for (int i = 0; i < HIST_FIELDS; i++)
        if (m->mask & (1u << i))
            g_variant_dict_insert(&d, field_names[i], "x", m->v[i]);
    return g_variant_dict_end(&d);
}

/* Metadata as the history writes it; anything the tests did not write
 * makes it "foreign" ("?"), which equals nothing. */
static hist_meta meta_of(GVariant *v)
{
    hist_meta m = {0};
    if (v == NULL)
        return m;
    GVariantIter it;
    const char *name;
    GVariant *value;
    g_variant_iter_init(&it, v);
    while (g_variant_iter_next(&it, "{&sv}", &name, &value)) {
        int f = -1;
        for (int i = 0; i < HIST_FIELDS; i++)
            if (strcmp(name, field_names[i]) == 0)
                f = i;
        if (f >= 0 && g_variant_is_of_type(value, G_VARIANT_TYPE_INT64) &&
            !(m.mask & (1u << f))) {
            m.mask |= (uint8_t)(1u << f);
            m.v[f] = g_variant_get_int64(value);
        } else {
            m.mask |= HIST_META_FOREIGN;
        }
        g_variant_unref(value);
    }
    return m;
}

static char *meta_text(const hist_meta *m)
{
    GString *s = g_string_new(NULL);
    hist_meta_append(s, m);
    return g_string_free(s, FALSE);
}

/* ---- the client ---- */

struct hist_client {
    procreg *reg;
    int id;
    GRand *rand;
    hist_workload w;
    hist_log *log;
    hist_owner_pool *pool;
    procreg_key **keys;
    uint64_t *last_rev; /* per key: a revision seen, for if_revision */
    int64_t next_op;
    int64_t next_token;
    procreg_owner self;
    char *self_text;
    /* subscription */
    uint64_t sub_id;
    char *drain_ns;
    pthread_mutex_t ev_lock;
    pthread_cond_t ev_cond;
    uint64_t ev_last_seq;
    GHashTable *markers; /* client ids whose end marker arrived */
    bool ev_stopped;
};

hist_client *hist_client_new(procreg *reg, int id, guint32 seed,
                             const hist_workload *w, hist_log *log,
                             hist_owner_pool *pool)
{
    hist_client *c = g_new0(hist_client, 1);
    c->reg = reg;
    c->id = id;
    c->rand = g_rand_new_with_seed(seed);
    c->w = *w;
    c->w.ns = g_strdup(w->ns);
    c->log = log;
    c->pool = pool;
    c->keys = g_new0(procreg_key *, w->n_keys);
    for (int i = 0; i < w->n_keys; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "k%d", i);
        g_assert(procreg_key_new(w->ns, name, &c->keys[i], NULL) == 0);
    }
    c->last_rev = g_new0(uint64_t, w->n_keys);
    procreg_owner_self(&c->self);
    c->self_text = hist_owner_text(&c->self);
    pthread_mutex_init(&c->ev_lock, NULL);
    hist_cond_init(&c->ev_cond);
    c->markers = g_hash_table_new(NULL, NULL);
    return c;
}

void hist_client_free(hist_client *c)
{
    if (c == NULL)
        return;
    if (c->sub_id != 0)
        procreg_unsubscribe(c->reg, c->sub_id);
    for (int i = 0; i < c->w.n_keys; i++)
        procreg_key_unref(c->keys[i]);
    g_free(c->keys);
    g_free(c->last_rev);
    g_free((char *)c->w.ns);
    g_free(c->self_text);
    g_free(c->drain_ns);
    g_hash_table_unref(c->markers);
    pthread_mutex_destroy(&c->ev_lock);
    pthread_cond_destroy(&c->ev_cond);
    g_rand_free(c->rand);
    g_free(c);
}

static void on_event(procreg *reg, const procreg_event *ev, gpointer data)
{
    hist_client *c = data;
    pthread_mutex_lock(&c->ev_lock);
    if (!c->ev_stopped && strcmp(ev->ns, c->w.ns) == 0) {
        g_autofree char *owner = hist_owner_text(&ev->entry->owner);
        hist_meta m = meta_of(ev->entry->metadata);
        g_autofree char *meta = meta_text(&m);
        hist_log_printf(c->log,
                        "ev c=%d t=%" PRId64 " seq=%" PRIu64 " kind=%s "
                        "reason=%s ext=%d k=%s owner=%s meta=%s rev=%" PRIu64,
                        c->id, hist_now(), ev->seq,
                        procreg_event_kind_name(ev->kind),
                        procreg_event_reason_name(ev->reason),
                        ev->external ? 1 : 0, ev->name, owner, meta,
                        ev->entry->revision);
    } else if (c->drain_ns != NULL && strcmp(ev->ns, c->drain_ns) == 0 &&
               ev->kind == PROCREG_EVENT_REGISTERED &&
               g_str_has_prefix(ev->name, "end-")) {
        g_hash_table_add(c->markers,
                         GINT_TO_POINTER(atoi(ev->name + 4) + 1));
    }
    c->ev_last_seq = ev->seq;
    pthread_cond_broadcast(&c->ev_cond);
    pthread_mutex_unlock(&c->ev_lock);
    (void)reg;
}

int hist_client_subscribe(hist_client *c, const char *drain_ns,
                          GError **error)
{
    c->drain_ns = g_strdup(drain_ns);
    int64_t inv = hist_now();
    int rc = procreg_subscribe(c->reg, NULL, NULL, on_event, c, NULL, NULL,
                               &c->sub_id, error);
    if (rc == 0)
        hist_log_printf(c->log, "sub c=%d inv=%" PRId64 " res=%" PRId64,
                        c->id, inv, hist_now());
    return rc;
}

static bool wait_until(hist_client *c, int timeout_ms,
                       bool (*done)(hist_client *, const void *),
                       const void *arg)
{
    gint64 end = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    pthread_mutex_lock(&c->ev_lock);
    bool ok;
    while (!(ok = done(c, arg)) &&
           hist_cond_wait_until(&c->ev_cond, &c->ev_lock, end))
        ;
    pthread_mutex_unlock(&c->ev_lock);
    return ok;
}

static bool seq_reached(hist_client *c, const void *arg)
{
    return c->ev_last_seq >= *(const uint64_t *)arg;
}

bool hist_client_wait_seq(hist_client *c, uint64_t seq, int timeout_ms)
{
    return wait_until(c, timeout_ms, seq_reached, &seq);
}

typedef struct {
    const int *ids;
    int n;
} id_set;

static bool markers_seen(hist_client *c, const void *arg)
{
    const id_set *s = arg;
    for (int i = 0; i < s->n; i++)
        if (!g_hash_table_contains(c->markers,
                                   GINT_TO_POINTER(s->ids[i] + 1)))
            return false;
    return true;
}

bool hist_client_wait_markers(hist_client *c, const int *ids, int n,
                              int timeout_ms)
{
    id_set s = {ids, n};
    return wait_until(c, timeout_ms, markers_seen, &s);
}

void hist_client_end_events(hist_client *c, bool complete)
{
    pthread_mutex_lock(&c->ev_lock);
    c->ev_stopped = true;
    hist_log_printf(c->log, "drained c=%d t=%" PRId64 " complete=%d", c->id,
                    hist_now(), complete ? 1 : 0);
    pthread_mutex_unlock(&c->ev_lock);
}

/* ---- operations ---- */

static int64_t begin(hist_client *c, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int64_t begin(hist_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *call = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    int64_t id = ++c->next_op;
    hist_log_printf(c->log, "inv c=%d id=%" PRId64 " t=%" PRId64 " %s", c->id,
                    id, hist_now(), call);
    return id;
}

static void end(hist_client *c, int64_t id, int rc, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);
static void end(hist_client *c, int64_t id, int rc, const char *fmt, ...)
{
    int64_t t = hist_now();
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *rest = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    hist_log_printf(c->log, "res c=%d id=%" PRId64 " t=%" PRId64 " rc=%d%s%s",
                    c->id, id, t, rc, *rest ? " " : "", rest);
}

static char *entry_text(const procreg_entry *e)
{
    g_autofree char *owner = hist_owner_text(&e->owner);
    hist_meta m = meta_of(e->metadata);
    g_autofree char *meta = meta_text(&m);
    return g_strdup_printf("owner=%s meta=%s rev=%" PRIu64, owner, meta,
                           e->revision);
}

static hist_meta new_meta(hist_client *c, bool tokens_in_b)
{
    hist_meta m = {0};
    int f = tokens_in_b ? HIST_FIELD_B : HIST_FIELD_A;
    m.mask = (uint8_t)(1u << f);
    m.v[f] = ((int64_t)c->id << 32) | ++c->next_token;
    if (!tokens_in_b || g_rand_boolean(c->rand)) {
        m.mask |= 1u << HIST_FIELD_G;
        m.v[HIST_FIELD_G] = g_rand_int_range(c->rand, 0, 3);
    }
    return m;
}

/* Register key @k for @for_owner, else for the caller or a helper. */
static void do_register(hist_client *c, int k, const procreg_owner *for_owner)
{
    procreg_owner owner = for_owner ? *for_owner : c->self;
    if (for_owner == NULL && c->pool != NULL && g_rand_boolean(c->rand))
        pool_pick(c->pool, c->rand, &owner);
    g_autofree char *owner_s = hist_owner_text(&owner);
    hist_meta m = new_meta(c, false);
    g_autofree char *meta = meta_text(&m);
    int64_t id = begin(c, "op=register k=k%d owner=%s meta=%s", k, owner_s,
                       meta);
    procreg_entry cur = {0};
    int rc = procreg_register_key(c->reg, c->keys[k], &owner,
                                  meta_variant(&m), &cur, NULL);
    if (rc == 0) {
        end(c, id, rc, "rev=%" PRIu64, cur.revision);
    } else if (rc == PROCREG_EEXISTS) {
        g_autofree char *e = entry_text(&cur);
        end(c, id, rc, "%s", e);
    } else {
        end(c, id, rc, "%s", "");
    }
    if (rc == 0 || rc == PROCREG_EEXISTS)
        c->last_rev[k] = cur.revision;
    procreg_entry_clear(&cur);
}

/* An if_revision half the time: the last revision this client saw. */
static uint64_t guard(hist_client *c, int k)
{
    return g_rand_boolean(c->rand) ? c->last_rev[k] : 0;
}

static void unregister_key(hist_client *c, int k, uint64_t if_rev,
                           bool force)
{
    int64_t id = begin(c, "op=unregister k=k%d owner=%s if=%" PRIu64
                       " force=%d", k, c->self_text, if_rev, force);
    int rc = procreg_unregister_full(c->reg, c->keys[k], if_rev,
                                     force ? PROCREG_FORCE : 0, NULL);
    end(c, id, rc, "%s", "");
}

static void do_unregister(hist_client *c, int k)
{
    uint64_t if_rev = guard(c, k);
    unregister_key(c, k, if_rev, g_rand_int_range(c->rand, 0, 3) == 0);
}

void hist_client_unregister_forced(hist_client *c, int k)
{
    unregister_key(c, k, 0, true);
}

static void do_update(hist_client *c, int k)
{
    uint64_t if_rev = guard(c, k);
    bool merge = g_rand_boolean(c->rand);
    hist_meta m = new_meta(c, merge);
    bool force = g_rand_int_range(c->rand, 0, 3) == 0;
    g_autofree char *meta = meta_text(&m);
    int64_t id = begin(c, "op=update k=k%d owner=%s meta=%s mode=%s if=%" PRIu64
                       " force=%d", k, c->self_text, meta,
                       merge ? "merge" : "replace", if_rev, force);
    uint64_t rev = 0;
    procreg_update_mode mode = merge ? PROCREG_UPDATE_MERGE
                                     : PROCREG_UPDATE_REPLACE;
    int rc = procreg_update_metadata_full(c->reg, c->keys[k], meta_variant(&m),
                                          mode, if_rev,
                                          force ? PROCREG_FORCE : 0, &rev,
                                          NULL);
    if (rc == 0) {
        end(c, id, rc, "rev=%" PRIu64, rev);
        c->last_rev[k] = rev;
    } else {
        end(c, id, rc, "%s", "");
    }
}

static void do_lookup(hist_client *c, int k)
{
    int64_t id = begin(c, "op=lookup k=k%d", k);
    procreg_owner o;
    int rc = procreg_lookup_key(c->reg, c->keys[k], &o, NULL);
    if (rc == 0) {
        g_autofree char *owner = hist_owner_text(&o);
        end(c, id, rc, "owner=%s", owner);
    } else {
        end(c, id, rc, "%s", "");
    }
}

static int do_entry(hist_client *c, int k)
{
    int64_t id = begin(c, "op=entry k=k%d", k);
    procreg_entry e = {0};
    int rc = procreg_lookup_entry_key(c->reg, c->keys[k], &e, NULL);
    if (rc == 0) {
        g_autofree char *text = entry_text(&e);
        end(c, id, rc, "%s", text);
        c->last_rev[k] = e.revision;
    } else {
        end(c, id, rc, "%s", "");
    }
    procreg_entry_clear(&e);
    return rc;
}

static char *items_text(const procreg_entry *es, size_t n)
{
    GString *s = g_string_new("items=");
    for (size_t i = 0; i < n; i++) {
        g_autofree char *owner = hist_owner_text(&es[i].owner);
        hist_meta m = meta_of(es[i].metadata);
        g_string_append_printf(s, "%s%s@%s@%" PRIu64 "@", i ? ";" : "",
                               es[i].name, owner, es[i].revision);
        hist_meta_append(s, &m);
    }
    return g_string_free(s, FALSE);
}

/* Returns the number of entries listed, or -1. */
static ssize_t do_list(hist_client *c)
{
    int64_t id = begin(c, "op=list");
    procreg_entry *es = NULL;
    size_t n = 0;
    int rc = procreg_list(c->reg, c->w.ns, &es, &n, NULL);
    g_autofree char *items = rc == 0 ? items_text(es, n) : g_strdup("");
    end(c, id, rc, "%s", items);
    procreg_entries_free(es, n);
    return rc == 0 ? (ssize_t)n : -1;
}

static void do_find(hist_client *c)
{
    int g = g_rand_int_range(c->rand, 0, 3);
    int64_t id = begin(c, "op=find field=g value=%d", g);
    procreg_entry *es = NULL;
    size_t n = 0;
    int rc = procreg_find(c->reg, c->w.ns, "g", g_variant_new_int64(g), &es,
                          &n, NULL);
    g_autofree char *items = rc == 0 ? items_text(es, n) : g_strdup("");
    end(c, id, rc, "%s", items);
    procreg_entries_free(es, n);
}

static void do_drop(hist_client *c)
{
    int64_t id = begin(c, "op=drop");
    int rc = procreg_namespace_drop(c->reg, c->w.ns, NULL, NULL, NULL);
    end(c, id, rc, "%s", "");
}

void hist_client_step(hist_client *c)
{
    int k = g_rand_int_range(c->rand, 0, c->w.n_keys);
    int pick = g_rand_int_range(c->rand, 0, 200);
    if (pick < 50)
        do_register(c, k, NULL);
    else if (pick < 74)
        do_unregister(c, k);
    else if (pick < 100)
        do_update(c, k);
    else if (pick < 136)
        do_lookup(c, k);
    else if (pick < 172)
        do_entry(c, k);
    else if (pick < 186 && c->w.list)
        do_list(c);
    else if (pick < 199 && c->w.list)
        do_find(c);
    else if (pick == 199 && c->w.drop)
        do_drop(c);
    else
        do_lookup(c, k);
}

void hist_client_register_each(hist_client *c, const procreg_owner *owner)
{
    for (int k = 0; k < c->w.n_keys; k++)
        do_register(c, k, owner ? owner : &c->self);
}

bool hist_client_recount(hist_client *c, GString *report)
{
    ssize_t listed = do_list(c);
    size_t counted = 0;
    int rc = procreg_count(c->reg, c->w.ns, &counted, NULL);
    int found = 0;
    for (int k = 0; k < c->w.n_keys; k++)
        found += do_entry(c, k) == 0;
    if (listed < 0 || rc != 0 || (size_t)listed != counted ||
        found != listed) {
        g_string_append_printf(report,
            "recount: list gave %zd entries, count %zu (rc %d), lookups "
            "found %d\n", listed, counted, rc, found);
        return false;
    }
    return true;
}
