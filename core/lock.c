/*
 * Locks by name, and the ticket queue they and start claims
 * (start.c) are built on: mutual exclusion between threads, processes
 * (lmdb) and hosts (etcd), made of the registry's own primitives, so it
 * works on every backend alike.
 *
 * A queue (namespace Q = "procreg:lock:NS" or "procreg:start:NS", name N)
 * is the set of ticket entries (Q, "N#<16 hex digits>"), each registered
 * by one waiter, owned by its process, under a random id.  Revisions
 * order them: a registration gets a revision above every one before it,
 * on every backend (one counter per instance, per LMDB file, per etcd
 * cluster).
 *
 * Invariant: a waiter holds the queue once no live ticket of N has a
 * revision below its own.  A ticket registered later has a higher
 * revision, so no newcomer gets ahead of a holder; a ticket ahead only
 * goes away (unlocked, given up, or its owner dead: reaped by a monitor,
 * the lmdb reaper or the etcd lease, or evicted here by the waiter behind
 * it).  A dead process holds nothing, so at most one holder runs.  Order
 * is FIFO: by the order the tickets were registered.
 *
 * Each waiter sleeps until the ticket just ahead of its own changes (so a
 * release wakes one waiter, not all), on the wake-up board (events.c) of
 * that ticket's key.  It joins the board and reads the generation BEFORE
 * it checks that the ticket is still there: a removal after the check
 * moves the generation and the sleep returns at once, so no release is
 * lost between a waiter's listing and its sleep.  On a shared backend it
 * also looks again every RECHECK_MS: the safety net for changes nobody
 * reported (an etcd registry opened with watch=false; a dead owner on this
 * host that only the lease would remove).
 */
#include "internal.h"

#include <string.h>

#define TICKET_ID_HEX 16
/* "#" and the id after the queue's name. */
#define TICKET_SUFFIX (1 + TICKET_ID_HEX)
#define RECHECK_MS 1000
/* The pause before listing again after a listing lacked our ticket. */
#define STALE_PAUSE_US 10000
/* Registrations of a fresh ticket tried when the random id is taken. */
#define TICKET_ATTEMPTS 4

struct procreg_lock_handle {
    procreg *reg;
    procreg_key *ticket; /* (Q, "N#id") */
    uint64_t revision;   /* the ticket's, as registered (a fencing token) */
};

/* ---- tickets ---- */

/* The queue namespace for @prefix and @ns, or PROCREG_EINVAL when it or
 * a ticket name for @name would pass PROCREG_NAME_MAX. */
static int queue_names(const char *prefix, const procreg_key *key,
                       char **qns, GError **error)
{
    const char *ns = procreg_key_namespace(key), *name = procreg_key_name(key);
    size_t plen = strlen(prefix);
    if (plen + key->ns_len > PROCREG_NAME_MAX)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "namespace '%s' is %u bytes long; a lock's "
                                 "namespace may have at most %zu",
                                 ns, (unsigned)key->ns_len,
                                 PROCREG_NAME_MAX - plen);
    if (key->name_len + TICKET_SUFFIX > PROCREG_NAME_MAX)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "name '%s' is %u bytes long; a lock's name "
                                 "may have at most %d",
                                 name, (unsigned)key->name_len,
                                 PROCREG_NAME_MAX - TICKET_SUFFIX);
    *qns = g_strconcat(prefix, ns, NULL);
    return 0;
}

/* Register a ticket of ours at the end of the queue (@qns, @name). */
static int ticket_take(procreg_lock_handle *h, const char *qns,
                       const char *name, GError **error)
{
    int rc = 0;
    for (int attempt = 0; attempt < TICKET_ATTEMPTS; attempt++) {
        char tname[PROCREG_NAME_MAX + 1];
        g_snprintf(tname, sizeof tname, "%s#%08x%08x", name, g_random_int(),
                   g_random_int());
        procreg_key *k = NULL;
        rc = procreg_key_new(qns, tname, &k, error);
        if (rc != 0)
            return rc;
        procreg_entry cur = {0};
        GError *local = NULL;
        rc = procreg_register_reserved(h->reg, k, NULL, NULL, &cur, &local);
        if (rc == 0) {
            h->ticket = k;
            h->revision = cur.revision;
        } else {
            procreg_key_unref(k);
        }
        procreg_entry_clear(&cur);
        if (rc != PROCREG_EEXISTS || attempt + 1 == TICKET_ATTEMPTS) {
            if (local != NULL)
                g_propagate_error(error, local);
            return rc;
        }
        g_clear_error(&local); /* the id is taken: draw another */
    }
    return rc;
}

/* Whether @e is a ticket of the queue named @name (@len bytes). */
static bool is_ticket_of(const procreg_entry *e, const char *name, size_t len)
{
    const char *t = e->name;
    if (strlen(t) != len + TICKET_SUFFIX || strncmp(t, name, len) != 0 ||
        t[len] != '#')
        return false;
    for (const char *p = t + len + 1; *p; p++)
        if (!g_ascii_isxdigit(*p))
            return false;
    return true;
}

static bool revision_in(const GArray *revs, uint64_t r)
{
    for (guint i = 0; i < revs->len; i++)
        if (g_array_index(revs, uint64_t, i) == r)
            return true;
    return false;
}

/* What one look at the queue saw. */
typedef struct {
    bool mine_listed;    /* our ticket was in the listing */
    procreg_entry ahead; /* the ticket just ahead of ours (name NULL: none) */
    procreg_entry first; /* the first ticket: the holder (name NULL: none) */
} queue_view;

static void queue_view_clear(queue_view *v)
{
    procreg_entry_clear(&v->ahead);
    procreg_entry_clear(&v->first);
    v->mine_listed = false;
}

static void entry_copy(procreg_entry *dst, const procreg_entry *src)
{
    procreg_entry_clear(dst);
    *dst = *src;
    dst->ns = g_strdup(src->ns);
    dst->name = g_strdup(src->name);
    if (dst->metadata != NULL)
        g_variant_ref(dst->metadata);
}

/* List the queue of @h; tickets whose revision is in @gone do not count
 * (judged gone earlier: a dead owner's that the backend still lists). */
static int queue_look(procreg_lock_handle *h, const GArray *gone,
                      queue_view *v, GError **error)
{
    queue_view_clear(v);
    const char *qns = procreg_key_namespace(h->ticket);
    const char *tname = procreg_key_name(h->ticket);
    size_t len = strlen(tname) - TICKET_SUFFIX;
    procreg_entry *all = NULL;
    size_t n = 0;
    int rc = procreg_list(h->reg, qns, &all, &n, error);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const procreg_entry *e = &all[i];
        if (!is_ticket_of(e, tname, len) || revision_in(gone, e->revision))
            continue;
        if (strcmp(e->name, tname) == 0) {
            v->mine_listed = true;
            continue;
        }
        if (v->first.name == NULL || e->revision < v->first.revision)
            entry_copy(&v->first, e);
        if (e->revision < h->revision &&
            (v->ahead.name == NULL || e->revision > v->ahead.revision))
            entry_copy(&v->ahead, e);
    }
    procreg_entries_free(all, n);
    return 0;
}

/* ---- waiting ---- */

static bool deadline_passed(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

/* The earlier of @deadline (NULL: none) and RECHECK_MS from now, in
 * @buf; NULL when neither applies. */
static const struct timespec *sleep_until(const struct timespec *deadline,
                                          bool recheck, struct timespec *buf)
{
    if (!recheck)
        return deadline;
    procreg_deadline_in(buf, RECHECK_MS);
    if (deadline != NULL &&
        (deadline->tv_sec < buf->tv_sec ||
         (deadline->tv_sec == buf->tv_sec && deadline->tv_nsec < buf->tv_nsec)))
        *buf = *deadline;
    return buf;
}

typedef struct {
    const struct timespec *deadline; /* NULL: none */
    bool only_check;                 /* timeout 0: never sleep */
    bool recheck;                    /* shared backend: look every RECHECK_MS */
    GCancellable *cancellable;
    GArray *gone; /* revisions of tickets judged gone */
} wait_rules;

/* Wait until @ahead, the ticket ahead of ours, changes.  0: look at the
 * queue again (@ahead may be gone: then its revision is in r->gone);
 * PROCREG_ETIMEDOUT, PROCREG_ECANCELLED, or a backend failure. */
static int wait_ahead(procreg *reg, const procreg_entry *ahead,
                      const wait_rules *r, GError **error)
{
    procreg_stack_key k;
    int rc = procreg_key_init_stack(&k, ahead->ns, ahead->name, error);
    if (rc != 0)
        return rc;
    if (procreg_evict_if_dead(reg, &k.key, ahead)) {
        g_array_append_val(r->gone, ahead->revision);
        return 0;
    }
    procreg_wake *w = procreg_wake_join(reg, ahead->ns, ahead->name, false);
    gulong handler = procreg_cancellable_link(r->cancellable, w);
    uint64_t gen;
    procreg_entry now = {0};
    if (!procreg_wake_read(w, &gen)) {
        rc = PROCREG_ECANCELLED;
    } else {
        /* After the read: a removal from here on moves the generation. */
        rc = procreg_lookup_entry_key(reg, &k.key, &now, NULL);
        if (rc == PROCREG_ENOTFOUND ||
            (rc == 0 && now.revision != ahead->revision)) {
            /* Gone, or hidden as a dead owner's by the backend (etcd, on
             * the owner's host): its name is never registered again. */
            g_array_append_val(r->gone, ahead->revision);
            rc = 0;
        } else if (rc != 0) {
            procreg_set_error(error, rc, "reading lock ticket '%s' in '%s': "
                              "%s", ahead->name, ahead->ns,
                              procreg_strerror(rc));
        } else if (r->only_check) {
            rc = PROCREG_ETIMEDOUT;
        } else {
            struct timespec buf;
            procreg_wake_sleep(w, gen, sleep_until(r->deadline, r->recheck,
                                                   &buf));
            if (!procreg_wake_read(w, &gen))
                rc = PROCREG_ECANCELLED;
            else if (r->deadline != NULL && deadline_passed(r->deadline))
                rc = PROCREG_ETIMEDOUT;
        }
    }
    procreg_entry_clear(&now);
    procreg_cancellable_unlink(r->cancellable, handler);
    procreg_wake_leave(w);
    return rc;
}

/* Our ticket was not in a listing: a stale read (an etcd member behind),
 * or it is gone (forced away; an etcd lease lost).  0 when it is still
 * there (its revision refreshed: a lost lease re-registers it), else
 * PROCREG_ECONFLICT. */
static int ticket_check(procreg_lock_handle *h, GError **error)
{
    procreg_entry e = {0};
    int rc = procreg_lookup_entry_key(h->reg, h->ticket, &e, NULL);
    if (rc == 0)
        h->revision = e.revision;
    procreg_entry_clear(&e);
    if (rc == PROCREG_ENOTFOUND)
        return procreg_set_error(error, PROCREG_ECONFLICT,
                                 "lock ticket '%s' in '%s' was removed while "
                                 "it waited (forced away, or its etcd lease "
                                 "was lost)",
                                 procreg_key_name(h->ticket),
                                 procreg_key_namespace(h->ticket));
    if (rc != 0)
        procreg_set_error(error, rc, "reading lock ticket '%s': %s",
                          procreg_key_name(h->ticket), procreg_strerror(rc));
    return rc;
}

/* Wait until our ticket is first.  On failure @holder has the first
 * ticket last seen (name NULL: none). */
static int queue_wait(procreg_lock_handle *h, const wait_rules *r,
                      procreg_entry *holder, GError **error)
{
    queue_view v = {0};
    int rc;
    for (;;) {
        rc = queue_look(h, r->gone, &v, error);
        if (rc == 0 && !v.mine_listed) {
            /* A listing without our ticket says nothing of the tickets
             * ahead of it: look again after a pause, if it is there. */
            rc = ticket_check(h, error);
            if (rc == 0 && r->only_check)
                rc = PROCREG_ETIMEDOUT;
            if (rc == 0 && r->deadline != NULL && deadline_passed(r->deadline))
                rc = PROCREG_ETIMEDOUT;
            if (rc != 0)
                break;
            g_usleep(STALE_PAUSE_US);
            continue;
        }
        if (rc != 0 || v.ahead.name == NULL)
            break;
        rc = wait_ahead(h->reg, &v.ahead, r, error);
        if (rc != 0)
            break;
    }
    *holder = v.first;
    v.first = (procreg_entry){0};
    queue_view_clear(&v);
    return rc;
}

static void handle_free(procreg_lock_handle *h)
{
    procreg_key_unref(h->ticket);
    g_free(h);
}

PROCREG_INTERNAL int procreg_queue_acquire(procreg *reg, const char *prefix,
                                           const procreg_key *key,
                                           int timeout_ms,
                                           GCancellable *cancellable,
                                           procreg_lock_handle **out,
                                           GError **error)
{
    g_return_val_if_fail(reg != NULL && key != NULL && out != NULL,
                         PROCREG_EINVAL);
    *out = NULL;
    char *qns = NULL;
    int rc = procreg_cancellable_check(cancellable, error);
    if (rc == PROCREG_ECANCELLED)
        return procreg_set_error(error, rc, "lock '%s' in '%s': cancelled",
                                 procreg_key_name(key),
                                 procreg_key_namespace(key));
    if (rc == 0)
        rc = queue_names(prefix, key, &qns, error);
    if (rc != 0)
        return rc;
    procreg_lock_handle *h = g_new0(procreg_lock_handle, 1);
    h->reg = reg;
    rc = ticket_take(h, qns, procreg_key_name(key), error);
    g_free(qns);
    if (rc != 0) {
        handle_free(h);
        return rc;
    }

    struct timespec deadline;
    if (timeout_ms > 0)
        procreg_deadline_in(&deadline, timeout_ms);
    wait_rules r = {
        .deadline = timeout_ms > 0 ? &deadline : NULL,
        .only_check = timeout_ms == 0,
        .recheck = procreg_backend_get_caps(reg->backend) &
                   (PROCREG_CAP_MULTIPROCESS | PROCREG_CAP_DISTRIBUTED),
        .cancellable = cancellable,
        .gone = g_array_new(FALSE, FALSE, sizeof(uint64_t)),
    };
    procreg_entry holder = {0};
    GError *local = NULL;
    rc = queue_wait(h, &r, &holder, &local);
    g_array_unref(r.gone);
    if (rc == 0) {
        *out = h;
        procreg_entry_clear(&holder);
        return 0;
    }
    /* Given up: our ticket goes, which wakes the waiter behind it. */
    procreg_unregister_key(reg, h->ticket, 0, NULL);
    handle_free(h);
    const char *ns = procreg_key_namespace(key), *name = procreg_key_name(key);
    if (local != NULL)
        g_propagate_error(error, local);
    else if (rc == PROCREG_ETIMEDOUT && holder.name != NULL)
        procreg_set_error(error, rc,
                          "lock '%s' in '%s' is held by process %d; not "
                          "acquired within %d ms", name, ns,
                          (int)holder.owner.pid, MAX(timeout_ms, 0));
    else
        procreg_set_error(error, rc, "lock '%s' in '%s': %s", name, ns,
                          procreg_strerror(rc));
    if (rc == PROCREG_ETIMEDOUT && holder.name != NULL)
        procreg_error_detail_entry(error, NULL, NULL, &holder);
    procreg_entry_clear(&holder);
    return rc;
}

PROCREG_INTERNAL int procreg_queue_release(procreg *reg,
                                           procreg_lock_handle *h,
                                           GError **error)
{
    g_return_val_if_fail(reg != NULL && h != NULL && h->reg == reg,
                         PROCREG_EINVAL);
    GError *local = NULL;
    int rc = procreg_unregister_key(reg, h->ticket, 0,
                                    error != NULL ? &local : NULL);
    if (rc == PROCREG_ENOTFOUND) {
        g_clear_error(&local);
        procreg_set_error(error, rc,
                          "lock ticket '%s' in '%s' was already gone (forced "
                          "away, or its etcd lease was lost): the lock was "
                          "not held to the end",
                          procreg_key_name(h->ticket),
                          procreg_key_namespace(h->ticket));
    } else if (local != NULL) {
        g_propagate_error(error, local);
    }
    handle_free(h);
    return rc;
}

/* ---- the public lock ---- */

PROCREG_API int procreg_lock_key(procreg *reg, const procreg_key *key,
                                 int timeout_ms, GCancellable *cancellable,
                                 procreg_lock_handle **out, GError **error)
{
    return procreg_queue_acquire(reg, PROCREG_QUEUE_LOCK, key, timeout_ms,
                                 cancellable, out, error);
}

PROCREG_API int procreg_lock(procreg *reg, const char *ns, const char *name,
                             int timeout_ms, GCancellable *cancellable,
                             procreg_lock_handle **out, GError **error)
{
    g_return_val_if_fail(out != NULL, PROCREG_EINVAL);
    *out = NULL;
    procreg_stack_key key;
    int rc = procreg_key_init_stack(&key, ns, name, error);
    return rc != 0 ? rc
                   : procreg_lock_key(reg, &key.key, timeout_ms, cancellable,
                                      out, error);
}

PROCREG_API int procreg_unlock(procreg *reg, procreg_lock_handle *lock,
                               GError **error)
{
    return procreg_queue_release(reg, lock, error);
}

PROCREG_API uint64_t
procreg_lock_handle_get_revision(const procreg_lock_handle *lock)
{
    g_return_val_if_fail(lock != NULL, 0);
    return lock->revision;
}
