/*
 * Soak: many threads doing mixed operations on every backend of the build
 * that a test can open privately (ghash, ckht, optimized over each, lmdb
 * on a temporary file), while owner processes are forked and SIGKILLed.
 * At the end the registry holds exactly what a model kept by the test
 * says, entry by entry (owner, revision, metadata): zero losses, nothing
 * extra.
 *
 * The model is exact because each thread owns one namespace ("soak-T")
 * and is the only writer there; other threads only read it.  Per thread:
 *  - register (owner: this process, or one of the thread's live child
 *    processes), lookup, lookup_entry, update REPLACE and MERGE, a stale
 *    if_revision update and unregister (ECONFLICT), unregister (plain and
 *    with the right revision), list, count and find of its namespace, all
 *    checked against the model as they return;
 *  - reads of other threads' namespaces and of everything (list/count of
 *    all namespaces): any answer the API allows;
 *  - fork a child (a process that only waits) and register keys for it;
 *    SIGKILL a child and then either wait until each of its keys is gone
 *    (the core's owner-exit cleanup; lmdb's reaper too) or take each key
 *    over at once (register must evict a holder known dead, or answer
 *    EEXISTS naming the dead child until the monitor sees the death).
 *
 * PROCREG_SOAK_SECONDS (default 5) is the whole run, shared by the
 * backends; PROCREG_SOAK_THREADS (default 6) the writer threads per
 * backend.  The figures are printed as "soak: ..." lines.
 */
#include <procreg/procreg.h>

#include <errno.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEYS 48           /* keys per thread */
#define MAX_CHILDREN 3    /* live children per thread */
#define VANISH_MS 10000   /* how long a dead owner's entries may linger */

typedef struct {
    bool present;
    pid_t pid;
    uint64_t revision;
    GVariant *meta; /* NULL: none */
} model_key;

typedef struct {
    pid_t pid;
    int keys; /* model keys it owns */
} child;

typedef struct soak soak;

typedef struct {
    soak *s;
    int id;
    char ns[32];
    GRand *rand;
    model_key model[KEYS];
    child children[MAX_CHILDREN];
    int n_children;
    /* figures */
    uint64_t ops, kills, reaped, taken_over, forks, conflicts;
    uint64_t hidden_ms; /* time dead owners' entries were hidden, not gone */
} worker;

struct soak {
    procreg *reg;
    const char *spec;
    int n_workers;
    worker *workers;
    gint64 deadline; /* monotonic µs */
    gint stop;
    bool strict; /* PROCREG_SOAK_STRICT: forget hidden keys at once */
};

static int env_int(const char *name, int def, int min, int max)
{
    const char *v = g_getenv(name);
    if (v == NULL || *v == '\0')
        return def;
    gint64 n = g_ascii_strtoll(v, NULL, 10);
    return (int)CLAMP(n, min, max);
}

#define FAIL(w, ...)                                                          \
    do {                                                                      \
        char *m_ = g_strdup_printf(__VA_ARGS__);                              \
        g_printerr("soak: %s, thread %d: %s\n", (w)->s->spec, (w)->id, m_);   \
        g_free(m_);                                                           \
        g_assert_not_reached();                                               \
    } while (0)

#define CHECK_RC(w, rc, want, what, k)                                        \
    do {                                                                      \
        if ((rc) != (want))                                                   \
            FAIL(w, "%s of k%d: %s (%d), expected %s", what, k,               \
                 procreg_strerror(rc), rc, procreg_strerror(want));           \
    } while (0)

/* Same dictionary, whatever the order of its entries. */
static bool dict_equal(GVariant *a, GVariant *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (g_variant_n_children(a) != g_variant_n_children(b))
        return false;
    GVariantIter it;
    const char *k;
    GVariant *v;
    g_variant_iter_init(&it, a);
    while (g_variant_iter_next(&it, "{&sv}", &k, &v)) {
        GVariant *o = g_variant_lookup_value(b, k, NULL);
        bool same = o != NULL && g_variant_equal(o, v);
        if (o != NULL)
            g_variant_unref(o);
        g_variant_unref(v);
        if (!same)
            return false;
    }
    return true;
}

static void check_entry(worker *w, int k, const procreg_entry *e,
                        const char *what)
{
    const model_key *m = &w->model[k];
    if (e->owner.pid != m->pid || e->revision != m->revision ||
        !dict_equal(e->metadata, m->meta)) {
        char *got = e->metadata ? g_variant_print(e->metadata, TRUE) : NULL;
        char *want = m->meta ? g_variant_print(m->meta, TRUE) : NULL;
        FAIL(w, "%s of k%d: pid %d rev %" G_GUINT64_FORMAT " %s, model pid "
             "%d rev %" G_GUINT64_FORMAT " %s", what, k, (int)e->owner.pid,
             e->revision, got ? got : "-", (int)m->pid, m->revision,
             want ? want : "-");
    }
}

static void model_set(model_key *m, pid_t pid, uint64_t rev, GVariant *meta)
{
    if (m->meta != NULL)
        g_variant_unref(m->meta);
    m->present = true;
    m->pid = pid;
    m->revision = rev;
    m->meta = meta ? g_variant_ref(meta) : NULL;
}

static void model_clear(model_key *m)
{
    if (m->meta != NULL)
        g_variant_unref(m->meta);
    memset(m, 0, sizeof *m);
}

static char *key_name(int k)
{
    return g_strdup_printf("k%d", k);
}

static GVariant *random_meta(worker *w)
{
    if (g_rand_int_range(w->rand, 0, 8) == 0)
        return NULL;
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    char tag[8];
    g_snprintf(tag, sizeof tag, "t%d", g_rand_int_range(w->rand, 0, 4));
    g_variant_builder_add(&b, "{sv}", "tag", g_variant_new_string(tag));
    g_variant_builder_add(&b, "{sv}", "n",
                          g_variant_new_int32(g_rand_int_range(w->rand, 0, 1000)));
    if (g_rand_boolean(w->rand))
        g_variant_builder_add(&b, "{sv}", "thread",
                              g_variant_new_uint16((guint16)w->id));
    return g_variant_ref_sink(g_variant_builder_end(&b));
}

static GVariant *merge(GVariant *old, GVariant *update)
{
    GVariantDict d;
    g_variant_dict_init(&d, old);
    GVariantIter it;
    const char *k;
    GVariant *v;
    g_variant_iter_init(&it, update);
    while (g_variant_iter_next(&it, "{&sv}", &k, &v)) {
        g_variant_dict_insert_value(&d, k, v);
        g_variant_unref(v);
    }
    return g_variant_ref_sink(g_variant_dict_end(&d));
}

/* ---- children ---- */

static pid_t spawn_child(void)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls here: the parent has threads.  Not
         * PR_SET_PDEATHSIG: it fires when the forking thread ends, and the
         * children must outlive their worker thread.  Instead a child
         * leaves within a second of its parent process, and after ten
         * minutes in any case. */
        alarm(600);
        while (getppid() == parent)
            sleep(1);
        _exit(0);
    }
    return pid;
}

static void reap_child(worker *w, pid_t pid)
{
    kill(pid, SIGKILL);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    w->kills++;
}

/* ---- operations, each checked against the model ---- */

static void op_register(worker *w, int k, bool for_child)
{
    soak *s = w->s;
    model_key *m = &w->model[k];
    char *name = key_name(k);
    procreg_owner owner = {0};
    child *c = NULL;
    if (for_child && w->n_children > 0) {
        c = &w->children[g_rand_int_range(w->rand, 0, w->n_children)];
        owner.pid = c->pid;
    }
    GVariant *meta = random_meta(w);
    procreg_entry cur = {0};
    int rc = procreg_register(s->reg, w->ns, name, c ? &owner : NULL, meta,
                              &cur, NULL);
    if (m->present) {
        CHECK_RC(w, rc, PROCREG_EEXISTS, "register (taken)", k);
        check_entry(w, k, &cur, "register's current holder");
    } else {
        CHECK_RC(w, rc, 0, "register", k);
        pid_t want = c ? c->pid : getpid();
        if (cur.owner.pid != want || !dict_equal(cur.metadata, meta))
            FAIL(w, "register of k%d returned another entry", k);
        if (cur.revision <= m->revision)
            FAIL(w, "register of k%d: revision %" G_GUINT64_FORMAT
                 " after %" G_GUINT64_FORMAT, k, cur.revision, m->revision);
        model_set(m, want, cur.revision, meta);
        if (c != NULL)
            c->keys++;
    }
    procreg_entry_clear(&cur);
    if (meta != NULL)
        g_variant_unref(meta);
    g_free(name);
}

static void op_lookup(worker *w, int k)
{
    char *name = key_name(k);
    procreg_owner o;
    int rc = procreg_lookup(w->s->reg, w->ns, name, &o, NULL);
    const model_key *m = &w->model[k];
    CHECK_RC(w, rc, m->present ? 0 : PROCREG_ENOTFOUND, "lookup", k);
    if (rc == 0 && o.pid != m->pid)
        FAIL(w, "lookup of k%d: pid %d, model %d", k, (int)o.pid, (int)m->pid);
    g_free(name);
}

static void op_lookup_entry(worker *w, int k)
{
    char *name = key_name(k);
    procreg_entry e;
    int rc = procreg_lookup_entry(w->s->reg, w->ns, name, &e, NULL);
    CHECK_RC(w, rc, w->model[k].present ? 0 : PROCREG_ENOTFOUND,
             "lookup_entry", k);
    if (rc == 0)
        check_entry(w, k, &e, "lookup_entry");
    procreg_entry_clear(&e);
    g_free(name);
}

/* The owner rule: only the owner changes an entry, anyone with
 * PROCREG_FORCE.  Picks the flags of a write to @m (force now and then)
 * and returns the code the write must answer when the entry is there. */
static int write_flags(worker *w, const model_key *m, unsigned *flags)
{
    *flags = g_rand_int_range(w->rand, 0, 4) == 0 ? PROCREG_FORCE : 0;
    return m->pid == getpid() || (*flags & PROCREG_FORCE) ? 0 : PROCREG_EPERM;
}

static void op_update(worker *w, int k, procreg_update_mode mode)
{
    model_key *m = &w->model[k];
    char *name = key_name(k);
    procreg_key *key = NULL;
    g_assert_cmpint(procreg_key_new(w->ns, name, &key, NULL), ==, 0);
    GVariant *meta = random_meta(w);
    /* MERGE with NULL is left out: procreg.h does not say what it does
     * (the core removes the metadata; see doc/reliability.md). */
    if (meta == NULL && mode == PROCREG_UPDATE_MERGE)
        meta = g_variant_ref_sink(g_variant_new_parsed("@a{sv} {}"));
    uint64_t rev = 0;
    unsigned flags;
    int allowed = write_flags(w, m, &flags);
    int rc = procreg_update_metadata_full(w->s->reg, key, meta, mode, 0,
                                          flags, &rev, NULL);
    if (!m->present) {
        CHECK_RC(w, rc, PROCREG_ENOTFOUND, "update", k);
    } else if (allowed != 0) {
        CHECK_RC(w, rc, allowed, "update", k);
    } else {
        CHECK_RC(w, rc, 0, "update", k);
        if (rev <= m->revision)
            FAIL(w, "update of k%d: revision %" G_GUINT64_FORMAT " after %"
                 G_GUINT64_FORMAT, k, rev, m->revision);
        GVariant *want;
        if (mode == PROCREG_UPDATE_REPLACE)
            want = meta ? g_variant_ref(meta) : NULL;
        else
            want = m->meta ? merge(m->meta, meta) : g_variant_ref(meta);
        model_set(m, m->pid, rev, want);
        if (want != NULL)
            g_variant_unref(want);
    }
    if (meta != NULL)
        g_variant_unref(meta);
    procreg_key_unref(key);
    g_free(name);
}

/* A writer holding an old revision must be refused, and change nothing. */
static void op_stale(worker *w, int k)
{
    model_key *m = &w->model[k];
    if (!m->present)
        return;
    char *name = key_name(k);
    procreg_key *key = NULL;
    g_assert_cmpint(procreg_key_new(w->ns, name, &key, NULL), ==, 0);
    uint64_t stale = m->revision + 1 + (uint64_t)g_rand_int_range(w->rand, 0, 1000);
    int rc;
    if (g_rand_boolean(w->rand))
        rc = procreg_unregister_key(w->s->reg, key, stale, NULL);
    else
        rc = procreg_update_metadata_key(w->s->reg, key, NULL,
                                         PROCREG_UPDATE_REPLACE, stale, NULL,
                                         NULL);
    CHECK_RC(w, rc, PROCREG_ECONFLICT, "stale write", k);
    w->conflicts++;
    procreg_key_unref(key);
    g_free(name);
}

static void forget_child_key(worker *w, pid_t pid)
{
    for (int i = 0; i < w->n_children; i++)
        if (w->children[i].pid == pid)
            w->children[i].keys--;
}

static void op_unregister(worker *w, int k)
{
    model_key *m = &w->model[k];
    char *name = key_name(k);
    procreg_key *key = NULL;
    g_assert_cmpint(procreg_key_new(w->ns, name, &key, NULL), ==, 0);
    unsigned flags;
    int allowed = write_flags(w, m, &flags);
    uint64_t if_revision = m->present && g_rand_boolean(w->rand) ? m->revision
                                                                : 0;
    int rc = procreg_unregister_full(w->s->reg, key, if_revision, flags, NULL);
    procreg_key_unref(key);
    CHECK_RC(w, rc, m->present ? allowed : PROCREG_ENOTFOUND, "unregister", k);
    if (m->present && allowed == 0) {
        if (m->pid != getpid())
            forget_child_key(w, m->pid);
        uint64_t rev = m->revision;
        model_clear(m);
        m->revision = rev; /* revisions keep growing */
    }
    g_free(name);
}

static int name_index(const char *name)
{
    return name[0] == 'k' ? atoi(name + 1) : -1;
}

/* What the thread knows, and what the registry shows of its own
 * entries without filtering (procreg_list_owned() of this process scans
 * the backend), for the failure message. */
static void dump(worker *w)
{
    GString *m = g_string_new("model:");
    for (int k = 0; k < KEYS; k++)
        if (w->model[k].present)
            g_string_append_printf(m, " k%d(%d r%" G_GUINT64_FORMAT ")", k,
                                   (int)w->model[k].pid, w->model[k].revision);
    g_string_append(m, "\nchildren:");
    for (int i = 0; i < w->n_children; i++)
        g_string_append_printf(m, " %d(%d keys)", (int)w->children[i].pid,
                               w->children[i].keys);
    procreg_entry *a = NULL;
    size_t n = 0;
    if (procreg_list_owned(w->s->reg, getpid(), &a, &n, NULL) == 0) {
        g_string_append(m, "\nowned by this process, unfiltered:");
        for (size_t i = 0; i < n; i++)
            if (strcmp(a[i].ns, w->ns) == 0)
                g_string_append_printf(m, " %s(r%" G_GUINT64_FORMAT ")",
                                       a[i].name, a[i].revision);
        procreg_entries_free(a, n);
    }
    g_string_append(m, "\nkeys the model lacks, as lookup_entry sees them:");
    for (int k = 0; k < KEYS; k++) {
        if (w->model[k].present)
            continue;
        char name[16];
        g_snprintf(name, sizeof name, "k%d", k);
        procreg_entry e;
        if (procreg_lookup_entry(w->s->reg, w->ns, name, &e, NULL) == 0)
            g_string_append_printf(m, " %s(%d r%" G_GUINT64_FORMAT ")", name,
                                   (int)e.owner.pid, e.revision);
        procreg_entry_clear(&e);
    }
    size_t c2 = 0;
    procreg_count(w->s->reg, w->ns, &c2, NULL);
    g_string_append_printf(m, "\ncount now %zu", c2);
    g_printerr("soak: %s, thread %d:\n%s\n", w->s->spec, w->id, m->str);
    g_string_free(m, TRUE);
}

static void check_array(worker *w, procreg_entry *a, size_t n, const char *what,
                        const char *tag)
{
    size_t want = 0;
    for (int k = 0; k < KEYS; k++) {
        const model_key *m = &w->model[k];
        if (!m->present)
            continue;
        if (tag != NULL) {
            GVariant *v = m->meta ? g_variant_lookup_value(m->meta, "tag", NULL)
                                  : NULL;
            bool match = v != NULL && strcmp(g_variant_get_string(v, NULL), tag) == 0;
            if (v != NULL)
                g_variant_unref(v);
            if (!match)
                continue;
        }
        want++;
    }
    if (n != want) {
        dump(w);
        GString *got = g_string_new(NULL);
        for (size_t i = 0; i < n; i++)
            g_string_append_printf(got, " %s(%d r%" G_GUINT64_FORMAT ")",
                                   a[i].name, (int)a[i].owner.pid,
                                   a[i].revision);
        FAIL(w, "%s: %zu entries, model %zu:%s", what, n, want, got->str);
    }
    for (size_t i = 0; i < n; i++) {
        int k = name_index(a[i].name);
        if (strcmp(a[i].ns, w->ns) != 0 || k < 0 || k >= KEYS ||
            !w->model[k].present)
            FAIL(w, "%s: unexpected entry %s/%s", what, a[i].ns, a[i].name);
        check_entry(w, k, &a[i], what);
        if (i > 0 && strcmp(a[i - 1].name, a[i].name) >= 0)
            FAIL(w, "%s: not sorted (%s, %s)", what, a[i - 1].name, a[i].name);
    }
}

static void op_list(worker *w)
{
    procreg_entry *a = NULL;
    size_t n = 0;
    int rc = procreg_list(w->s->reg, w->ns, &a, &n, NULL);
    CHECK_RC(w, rc, 0, "list", -1);
    check_array(w, a, n, "list", NULL);
    procreg_entries_free(a, n);
    size_t count = 0;
    rc = procreg_count(w->s->reg, w->ns, &count, NULL);
    CHECK_RC(w, rc, 0, "count", -1);
    if (count != n) {
        dump(w);
        FAIL(w, "count %zu, list and model %zu", count, n);
    }
}

static void op_find(worker *w)
{
    char tag[8];
    g_snprintf(tag, sizeof tag, "t%d", g_rand_int_range(w->rand, 0, 4));
    procreg_entry *a = NULL;
    size_t n = 0;
    int rc = procreg_find(w->s->reg, w->ns, "tag", g_variant_new_string(tag),
                          &a, &n, NULL);
    CHECK_RC(w, rc, 0, "find", -1);
    check_array(w, a, n, "find", tag);
    procreg_entries_free(a, n);
}

/* Reads of what other threads own: any answer the API allows. */
static void op_foreign(worker *w)
{
    soak *s = w->s;
    int other = g_rand_int_range(w->rand, 0, s->n_workers);
    char name[16];
    g_snprintf(name, sizeof name, "k%d", g_rand_int_range(w->rand, 0, KEYS));
    int rc;
    switch (g_rand_int_range(w->rand, 0, 4)) {
    case 0: {
        procreg_owner o;
        rc = procreg_lookup(s->reg, s->workers[other].ns, name, &o, NULL);
        break;
    }
    case 1: {
        procreg_entry e;
        rc = procreg_lookup_entry(s->reg, s->workers[other].ns, name, &e, NULL);
        procreg_entry_clear(&e);
        break;
    }
    case 2: {
        size_t n;
        rc = procreg_count(s->reg, NULL, &n, NULL);
        break;
    }
    default: {
        procreg_entry *a = NULL;
        size_t n = 0;
        rc = procreg_list(s->reg, NULL, &a, &n, NULL);
        for (size_t i = 1; rc == 0 && i < n; i++) {
            int c = strcmp(a[i - 1].ns, a[i].ns);
            if (c > 0 || (c == 0 && strcmp(a[i - 1].name, a[i].name) >= 0))
                FAIL(w, "list of everything not sorted or with a duplicate "
                     "(%s/%s, %s/%s)", a[i - 1].ns, a[i - 1].name, a[i].ns,
                     a[i].name);
        }
        procreg_entries_free(a, n);
        break;
    }
    }
    if (rc != 0 && rc != PROCREG_ENOTFOUND)
        FAIL(w, "read of thread %d's namespace: %s", other, procreg_strerror(rc));
}

static void op_fork(worker *w)
{
    if (w->n_children >= MAX_CHILDREN)
        return;
    pid_t pid = spawn_child();
    if (pid < 0)
        FAIL(w, "fork: %s", g_strerror(errno));
    w->children[w->n_children++] = (child){pid, 0};
    w->forks++;
    /* Give it a few keys at once. */
    for (int i = 0; i < 3; i++) {
        int k = g_rand_int_range(w->rand, 0, KEYS);
        if (!w->model[k].present) {
            int before = w->children[w->n_children - 1].keys;
            procreg_owner o = {.pid = pid};
            GVariant *meta = random_meta(w);
            procreg_entry cur = {0};
            char *name = key_name(k);
            int rc = procreg_register(w->s->reg, w->ns, name, &o, meta, &cur,
                                      NULL);
            CHECK_RC(w, rc, 0, "register for a child", k);
            model_set(&w->model[k], pid, cur.revision, meta);
            w->children[w->n_children - 1].keys = before + 1;
            procreg_entry_clear(&cur);
            if (meta != NULL)
                g_variant_unref(meta);
            g_free(name);
        }
    }
}

/* Wait until the monitor has no dead owner's cleanup pending. */
static void wait_cleanup(worker *w, gint64 limit)
{
    for (;;) {
        GVariant *st = NULL;
        int rc = procreg_stats(w->s->reg, &st, NULL);
        CHECK_RC(w, rc, 0, "stats", -1);
        guint64 pending = 0;
        GVariant *cleanup = g_variant_lookup_value(st, "cleanup",
                                                   G_VARIANT_TYPE("a{st}"));
        if (cleanup == NULL ||
            !g_variant_lookup(cleanup, "dead_pending", "t", &pending))
            FAIL(w, "stats has no cleanup.dead_pending");
        g_variant_unref(cleanup);
        g_variant_unref(st);
        if (pending == 0)
            return;
        if (g_get_monotonic_time() > limit)
            FAIL(w, "%" G_GUINT64_FORMAT " dead owners still pending "
                 "cleanup after %d ms", pending, VANISH_MS);
        g_usleep(1000);
    }
}

/* Kill child @i; its keys must go (or be taken over). */
static void kill_child(worker *w, int i, bool take_over)
{
    soak *s = w->s;
    pid_t pid = w->children[i].pid;
    reap_child(w, pid);
    w->children[i] = w->children[--w->n_children];
    gint64 limit = g_get_monotonic_time() + VANISH_MS * 1000;
    size_t gone = 0;
    for (int k = 0; k < KEYS; k++) {
        model_key *m = &w->model[k];
        if (!m->present || m->pid != pid)
            continue;
        char *name = key_name(k);
        for (;;) {
            int rc;
            if (take_over) {
                GVariant *meta = random_meta(w);
                procreg_entry cur = {0};
                rc = procreg_register(s->reg, w->ns, name, NULL, meta, &cur,
                                      NULL);
                if (rc == 0) {
                    if (cur.revision <= m->revision)
                        FAIL(w, "take-over of k%d: revision went back", k);
                    model_set(m, getpid(), cur.revision, meta);
                    w->taken_over++;
                } else if (rc != PROCREG_EEXISTS || cur.owner.pid != pid) {
                    FAIL(w, "take-over of k%d from dead %d: %s, holder %d", k,
                         (int)pid, procreg_strerror(rc), (int)cur.owner.pid);
                }
                procreg_entry_clear(&cur);
                if (meta != NULL)
                    g_variant_unref(meta);
            } else {
                procreg_entry e;
                rc = procreg_lookup_entry(s->reg, w->ns, name, &e, NULL);
                if (rc == PROCREG_ENOTFOUND) {
                    gone++;
                } else if (rc != 0 || e.owner.pid != pid) {
                    FAIL(w, "k%d of dead %d: %s, owner %d", k, (int)pid,
                         procreg_strerror(rc), rc == 0 ? (int)e.owner.pid : 0);
                }
                procreg_entry_clear(&e);
                rc = rc == PROCREG_ENOTFOUND ? 0 : PROCREG_EEXISTS;
            }
            if (rc == 0)
                break;
            if (g_get_monotonic_time() > limit)
                FAIL(w, "k%d of dead owner %d still there after %d ms", k,
                     (int)pid, VANISH_MS);
            g_usleep(1000);
        }
        g_free(name);
    }
    if (gone == 0)
        return;
    /* Lookups hide the entries of an owner known dead at once, and so do
     * count() and writes; the monitor's cleanup then removes them.  By
     * default the thread waits until no cleanup is pending before it
     * forgets the keys: with PROCREG_SOAK_STRICT=1 it forgets them as soon
     * as they are hidden, which procreg.h allows (they must stay hidden
     * until they are gone) but which core 0.1 does not hold yet: such an
     * entry can show in list() and count() again for a moment while its
     * cleanup runs (reported; see doc/reliability.md). */
    gint64 hidden = g_get_monotonic_time();
    if (!s->strict)
        wait_cleanup(w, limit);
    w->hidden_ms += (uint64_t)(g_get_monotonic_time() - hidden) / 1000;
    for (int k = 0; k < KEYS; k++) {
        model_key *m = &w->model[k];
        if (m->present && m->pid == pid) {
            uint64_t rev = m->revision;
            model_clear(m);
            m->revision = rev;
            w->reaped++;
        }
    }
}

static gpointer worker_main(gpointer data)
{
    worker *w = data;
    soak *s = w->s;
    while (!g_atomic_int_get(&s->stop)) {
        int k = g_rand_int_range(w->rand, 0, KEYS);
        int p = g_rand_int_range(w->rand, 0, 1000);
        if (p < 180)
            op_register(w, k, p < 50);
        else if (p < 380)
            op_lookup(w, k);
        else if (p < 480)
            op_lookup_entry(w, k);
        else if (p < 560)
            op_update(w, k, PROCREG_UPDATE_REPLACE);
        else if (p < 640)
            op_update(w, k, PROCREG_UPDATE_MERGE);
        else if (p < 670)
            op_stale(w, k);
        else if (p < 790)
            op_unregister(w, k);
        else if (p < 830)
            op_list(w);
        else if (p < 860)
            op_find(w);
        else if (p < 995)
            op_foreign(w);
        else if (p < 997)
            op_fork(w); /* owner churn: rare, each fork and kill is slow */
        else if (w->n_children > 0)
            kill_child(w, g_rand_int_range(w->rand, 0, w->n_children),
                       g_rand_boolean(w->rand));
        w->ops++;
        if ((w->ops & 63) == 0 && g_get_monotonic_time() >= s->deadline)
            g_atomic_int_set(&s->stop, 1);
    }
    return NULL;
}

/* Everything the registry holds equals the union of the models. */
static void check_whole(soak *s, const char *when)
{
    procreg_entry *a = NULL;
    size_t n = 0;
    g_assert_cmpint(procreg_list(s->reg, NULL, &a, &n, NULL), ==, 0);
    size_t want = 0;
    for (int t = 0; t < s->n_workers; t++)
        for (int k = 0; k < KEYS; k++)
            want += s->workers[t].model[k].present;
    if (n != want)
        g_error("soak: %s, %s: the registry holds %zu entries, the model %zu",
                s->spec, when, n, want);
    for (size_t i = 0; i < n; i++) {
        int t = -1, k = name_index(a[i].name);
        if (sscanf(a[i].ns, "soak-%d", &t) != 1 || t < 0 ||
            t >= s->n_workers || k < 0 || k >= KEYS ||
            !s->workers[t].model[k].present)
            g_error("soak: %s, %s: entry %s/%s is not in the model", s->spec,
                    when, a[i].ns, a[i].name);
        check_entry(&s->workers[t], k, &a[i], when);
    }
    procreg_entries_free(a, n);
}

static void run_backend(const char *spec, double seconds, int threads)
{
    /* glib's GVariant type-info cache makes and frees its entries under
     * glib's own futex locks, which ThreadSanitizer cannot see (glib is
     * not instrumented): one value of every type the workers build stays
     * alive meanwhile, so its type infos are never freed and made again
     * by another thread. */
    GVariant *types = g_variant_ref_sink(g_variant_new_parsed(
        "({'tag': <'t'>, 'n': <1>, 'thread': <uint16 1>}, @a{sv} {})"));
    soak s = {.spec = spec, .n_workers = threads,
              .strict = env_int("PROCREG_SOAK_STRICT", 0, 0, 1) == 1};
    GError *err = NULL;
    if (procreg_open(spec, &s.reg, &err) != 0)
        g_error("soak: cannot open %s: %s", spec, err->message);
    s.workers = g_new0(worker, threads);
    GThread **th = g_new0(GThread *, threads);
    s.deadline = g_get_monotonic_time() + (gint64)(seconds * G_USEC_PER_SEC);
    guint32 seed = g_test_rand_int();
    for (int t = 0; t < threads; t++) {
        worker *w = &s.workers[t];
        w->s = &s;
        w->id = t;
        g_snprintf(w->ns, sizeof w->ns, "soak-%d", t);
        w->rand = g_rand_new_with_seed(seed + (guint32)t);
    }
    gint64 t0 = g_get_monotonic_time();
    for (int t = 0; t < threads; t++)
        th[t] = g_thread_new("soak", worker_main, &s.workers[t]);
    for (int t = 0; t < threads; t++)
        g_thread_join(th[t]);
    double took = (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC;

    /* Children still alive own their entries: those stay. */
    check_whole(&s, "at the end");
    /* Then every child dies, and its entries go. */
    for (int t = 0; t < threads; t++)
        while (s.workers[t].n_children > 0)
            kill_child(&s.workers[t], 0, false);
    check_whole(&s, "after the last owners died");

    uint64_t ops = 0, kills = 0, reaped = 0, taken = 0, forks = 0, conflicts = 0,
             hidden = 0;
    for (int t = 0; t < threads; t++) {
        worker *w = &s.workers[t];
        ops += w->ops;
        kills += w->kills;
        reaped += w->reaped;
        taken += w->taken_over;
        forks += w->forks;
        conflicts += w->conflicts;
        hidden += w->hidden_ms;
        for (int k = 0; k < KEYS; k++)
            model_clear(&w->model[k]);
        g_rand_free(w->rand);
    }
    char *line = g_strdup_printf(
        "soak: %s: %" G_GUINT64_FORMAT " operations by %d threads in %.1f s "
        "(seed %u), %" G_GUINT64_FORMAT " owner processes forked and %"
        G_GUINT64_FORMAT " killed, %" G_GUINT64_FORMAT " entries removed "
        "by owner-exit cleanup, %" G_GUINT64_FORMAT " taken over from dead "
        "owners, %" G_GUINT64_FORMAT " stale writes refused, %" G_GUINT64_FORMAT
        " ms with dead owners' entries hidden but not yet removed; registry "
        "equals the model: 0 lost, 0 extra",
        spec, ops, threads, took, seed, forks, kills, reaped, taken,
        conflicts, hidden);
    printf("%s\n", line);
    fflush(stdout);
    g_free(line);
    g_free(th);
    g_free(s.workers);
    procreg_close(s.reg);
    g_variant_unref(types);
}

typedef struct {
    char *spec;
    double seconds;
    int threads;
} soak_case;

static void test_soak(gconstpointer data)
{
    const soak_case *c = data;
    run_backend(c->spec, c->seconds, c->threads);
}

static void remove_dir(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    if (d != NULL) {
        const char *n;
        while ((n = g_dir_read_name(d)) != NULL) {
            char *p = g_build_filename(dir, n, NULL);
            g_unlink(p);
            g_free(p);
        }
        g_dir_close(d);
    }
    g_rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    int seconds = env_int("PROCREG_SOAK_SECONDS", 5, 1, 3600);
    int threads = env_int("PROCREG_SOAK_THREADS", 6, 1, 64);

    char **names = procreg_backend_names();
    const char *const *have = (const char *const *)names;
    GPtrArray *specs = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(specs, g_strdup("ghash"));
    if (g_strv_contains(have, "ckht"))
        g_ptr_array_add(specs, g_strdup("ckht"));
    if (g_strv_contains(have, "optimized")) {
        g_ptr_array_add(specs, g_strdup("optimized:inner=ghash"));
        if (g_strv_contains(have, "ckht"))
            g_ptr_array_add(specs, g_strdup("optimized:inner=ckht"));
    }
    char *tmpdir = NULL;
    if (g_strv_contains(have, "lmdb")) {
        /* tmpfs when there is one: commits flush. */
        tmpdir = g_strdup("/dev/shm/procreg-soak-XXXXXX");
        if (g_mkdtemp(tmpdir) == NULL) {
            g_free(tmpdir);
            tmpdir = g_dir_make_tmp("procreg-soak-XXXXXX", NULL);
        }
        g_assert_nonnull(tmpdir);
        g_ptr_array_add(specs, g_strdup_printf("lmdb:path=%s/soak.mdb,"
                                               "durability=nosync", tmpdir));
    }
    g_strfreev(names);

    soak_case *cases = g_new0(soak_case, specs->len);
    for (guint i = 0; i < specs->len; i++) {
        cases[i].spec = specs->pdata[i];
        cases[i].seconds = (double)seconds / specs->len;
        cases[i].threads = threads;
        char *label = g_strdup(cases[i].spec);
        char *colon = strchr(label, ',');
        if (g_str_has_prefix(label, "lmdb"))
            label[4] = '\0';
        else if (colon != NULL)
            *colon = '\0';
        g_strdelimit(label, ":=", '-');
        char *path = g_strdup_printf("/reliability/soak/%s", label);
        g_test_add_data_func(path, &cases[i], test_soak);
        g_free(path);
        g_free(label);
    }
    int rc = g_test_run();
    g_free(cases);
    g_ptr_array_unref(specs);
    if (tmpdir != NULL) {
        remove_dir(tmpdir);
        g_free(tmpdir);
    }
    return rc;
}
