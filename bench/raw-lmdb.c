/*
 * Baseline "raw-lmdb": the same work as the lmdb backend, done directly
 * on one LMDB database in a file of the scratch directory (the main
 * database: no named sub-database, no owner index, no change log).  Keys
 * are "ns\0name" built from the strings on every string-form call; the
 * value is the owner, registration time and revision, then the
 * serialised metadata.  A lookup is mdb_get() in the thread's own reset
 * read transaction (mdb_txn_renew, mdb_txn_reset: LMDB's fastest read,
 * with MDB_NOTLS as the backend opens it); each write is its own
 * transaction, synced as the backend's default durability is.
 */
#include "bench.h"

#if defined(BENCH_HAVE_LMDB)
#include <glib/gstdio.h>
#include <lmdb.h>

struct raw_lmdb {
    MDB_env *env;
    MDB_dbi dbi;
    char *path;
    procreg_owner self;
    uint64_t revision; /* under LMDB's writer lock */
};

typedef struct {
    uint32_t pid;
    uint64_t start_time;
    int64_t registered_at;
    uint64_t revision;
} __attribute__((packed)) raw_lvalue;

#define RAW_LMDB_MAP ((size_t)16 << 30)

raw_lmdb *raw_lmdb_new(const char *dir, GError **error)
{
    raw_lmdb *rl = g_new0(raw_lmdb, 1);
    rl->path = g_build_filename(dir, "raw-lmdb.mdb", NULL);
    procreg_owner_self(&rl->self);
    MDB_txn *txn = NULL;
    int rc = mdb_env_create(&rl->env);
    if (rc == 0)
        rc = mdb_env_set_mapsize(rl->env, RAW_LMDB_MAP);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(rl->env, 4094);
    if (rc == 0)
        rc = mdb_env_open(rl->env, rl->path, MDB_NOSUBDIR | MDB_NOTLS, 0600);
    if (rc == 0)
        rc = mdb_txn_begin(rl->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, NULL, 0, &rl->dbi);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) {
        g_set_error(error, PROCREG_ERROR, PROCREG_EBACKEND, "raw-lmdb: %s: %s",
                    rl->path, mdb_strerror(rc));
        raw_lmdb_free(rl);
        return NULL;
    }
    return rl;
}

void raw_lmdb_free(raw_lmdb *rl)
{
    if (!rl)
        return;
    if (rl->env)
        mdb_env_close(rl->env);
    char *lock = g_strconcat(rl->path, "-lock", NULL);
    g_unlink(rl->path);
    g_unlink(lock);
    g_free(lock);
    g_free(rl->path);
    g_free(rl);
}

void raw_lmdb_thread_end(raw_lmdb *rl, bench_target_thread *tt)
{
    (void)rl;
    if (tt->lmdb_txn)
        mdb_txn_abort(tt->lmdb_txn);
    tt->lmdb_txn = NULL;
}

/* The thread's read transaction, renewed (begun at its first read). */
static MDB_txn *read_begin(raw_lmdb *rl, bench_target_thread *tt)
{
    MDB_txn *txn = tt->lmdb_txn;
    if (txn && mdb_txn_renew(txn) == 0)
        return txn;
    if (txn)
        mdb_txn_abort(txn);
    tt->lmdb_txn = NULL;
    if (mdb_txn_begin(rl->env, NULL, MDB_RDONLY, &txn) != 0)
        return NULL;
    tt->lmdb_txn = txn;
    return txn;
}

static int get_owner(raw_lmdb *rl, bench_target_thread *tt, const void *key,
                     size_t len, procreg_owner *out)
{
    MDB_txn *txn = read_begin(rl, tt);
    if (!txn)
        return PROCREG_EBACKEND;
    MDB_val k = {len, (void *)key}, v;
    int rc = mdb_get(txn, rl->dbi, &k, &v);
    if (rc == 0) {
        raw_lvalue h;
        memcpy(&h, v.mv_data, sizeof h);
        out->pid = (pid_t)h.pid;
        out->start_time = h.start_time;
    }
    mdb_txn_reset(txn);
    return rc == 0 ? 0 : rc == MDB_NOTFOUND ? PROCREG_ENOTFOUND
                                            : PROCREG_EBACKEND;
}

int raw_lmdb_lookup(raw_lmdb *rl, bench_target_thread *tt, const char *ns,
                    const char *name, procreg_owner *out)
{
    char buf[2 * (PROCREG_NAME_MAX + 1)];
    size_t len = raw_key_build(buf, ns, name);
    return get_owner(rl, tt, buf, len, out);
}

int raw_lmdb_lookup_prepared(raw_lmdb *rl, bench_target_thread *tt,
                             const bench_key *k, procreg_owner *out)
{
    return get_owner(rl, tt, k->text, k->len, out);
}

static void entry_of(const MDB_val *k, const MDB_val *v, bool names,
                     procreg_entry *out)
{
    raw_lvalue h;
    memcpy(&h, v->mv_data, sizeof h);
    memset(out, 0, sizeof *out);
    if (names) {
        size_t ns_len = strlen(k->mv_data);
        out->ns = g_strndup(k->mv_data, ns_len);
        out->name = g_strndup((const char *)k->mv_data + ns_len + 1,
                              k->mv_size - ns_len - 1);
    }
    out->owner.pid = (pid_t)h.pid;
    out->owner.start_time = h.start_time;
    out->registered_at = h.registered_at;
    out->revision = h.revision;
    size_t mlen = v->mv_size - sizeof h;
    if (mlen > 0)
        out->metadata = g_variant_ref_sink(g_variant_new_from_data(
            G_VARIANT_TYPE_VARDICT,
            g_memdup2((const char *)v->mv_data + sizeof h, mlen), mlen, TRUE,
            g_free, NULL));
}

int raw_lmdb_lookup_entry(raw_lmdb *rl, bench_target_thread *tt,
                          const char *ns, const char *name, procreg_entry *out)
{
    char buf[2 * (PROCREG_NAME_MAX + 1)];
    size_t len = raw_key_build(buf, ns, name);
    MDB_txn *txn = read_begin(rl, tt);
    if (!txn)
        return PROCREG_EBACKEND;
    MDB_val k = {len, buf}, v;
    int rc = mdb_get(txn, rl->dbi, &k, &v);
    if (rc == 0)
        entry_of(&k, &v, false, out);
    mdb_txn_reset(txn);
    return rc == 0 ? 0 : rc == MDB_NOTFOUND ? PROCREG_ENOTFOUND
                                            : PROCREG_EBACKEND;
}

/* One write transaction: put (@put) or delete the key, the value built
 * from @md and the next revision. */
static int write_one(raw_lmdb *rl, const bench_key *bk, bool put,
                     bool must_be_new, GVariant *md)
{
    MDB_txn *txn;
    if (mdb_txn_begin(rl->env, NULL, 0, &txn) != 0)
        return PROCREG_EBACKEND;
    MDB_val k = {bk->len, (void *)bk->text}, v;
    int rc;
    if (!put) {
        rc = mdb_del(txn, rl->dbi, &k, NULL);
    } else {
        if (md)
            g_variant_ref_sink(md);
        size_t mlen = md ? g_variant_get_size(md) : 0;
        raw_lvalue h = {(uint32_t)rl->self.pid, rl->self.start_time,
                        g_get_real_time(), 0};
        if (!must_be_new) {
            MDB_val old;
            if (mdb_get(txn, rl->dbi, &k, &old) == 0)
                memcpy(&h, old.mv_data, sizeof h);
        }
        h.revision = ++rl->revision;
        v.mv_size = sizeof h + mlen;
        v.mv_data = NULL;
        rc = mdb_put(txn, rl->dbi, &k, &v,
                     MDB_RESERVE | (must_be_new ? MDB_NOOVERWRITE : 0));
        if (rc == 0) {
            memcpy(v.mv_data, &h, sizeof h);
            if (mlen)
                memcpy((char *)v.mv_data + sizeof h, g_variant_get_data(md),
                       mlen);
        }
        if (md)
            g_variant_unref(md);
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    return rc == 0                ? 0
           : rc == MDB_NOTFOUND ? PROCREG_ENOTFOUND
           : rc == MDB_KEYEXIST ? PROCREG_EEXISTS
                                : PROCREG_EBACKEND;
}

int raw_lmdb_register(raw_lmdb *rl, const bench_key *k, GVariant *md)
{
    return write_one(rl, k, true, true, md);
}

int raw_lmdb_unregister(raw_lmdb *rl, const bench_key *k)
{
    return write_one(rl, k, false, false, NULL);
}

int raw_lmdb_update(raw_lmdb *rl, const bench_key *k, GVariant *md)
{
    return write_one(rl, k, true, false, md);
}

/* The cursor range of @ns (sorted as procreg_list sorts), filtered by
 * one metadata value when @meta_key is set. */
static int scan(raw_lmdb *rl, bench_target_thread *tt, const char *ns,
                const char *meta_key, GVariant *value, procreg_entry **out,
                size_t *n)
{
    MDB_txn *txn = read_begin(rl, tt);
    MDB_cursor *c;
    if (!txn)
        return PROCREG_EBACKEND;
    if (mdb_cursor_open(txn, rl->dbi, &c) != 0) {
        mdb_txn_reset(txn);
        return PROCREG_EBACKEND;
    }
    GArray *a = g_array_new(FALSE, FALSE, sizeof(procreg_entry));
    size_t ns_len = strlen(ns);
    MDB_val k = {ns_len + 1, (void *)ns}, v;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
         rc == 0 && k.mv_size > ns_len &&
         memcmp(k.mv_data, ns, ns_len + 1) == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        procreg_entry e;
        entry_of(&k, &v, true, &e);
        GVariant *m = meta_key && e.metadata
                          ? g_variant_lookup_value(e.metadata, meta_key, NULL)
                          : NULL;
        if (meta_key && !(m && procreg_metadata_value_equal(m, value))) {
            procreg_entry_clear(&e);
        } else {
            g_array_append_val(a, e);
        }
        if (m)
            g_variant_unref(m);
    }
    mdb_cursor_close(c);
    mdb_txn_reset(txn);
    *n = a->len;
    *out = (procreg_entry *)(void *)g_array_free(a, FALSE);
    return 0;
}

int raw_lmdb_list(raw_lmdb *rl, bench_target_thread *tt, const char *ns,
                  procreg_entry **out, size_t *n)
{
    return scan(rl, tt, ns, NULL, NULL, out, n);
}

int raw_lmdb_find(raw_lmdb *rl, bench_target_thread *tt, const char *ns,
                  const char *meta_key, GVariant *value, procreg_entry **out,
                  size_t *n)
{
    return scan(rl, tt, ns, meta_key, value, out, n);
}

bool raw_lmdb_file_bytes(raw_lmdb *rl, size_t *bytes)
{
    MDB_envinfo info;
    MDB_stat st;
    if (mdb_env_info(rl->env, &info) != 0 || mdb_env_stat(rl->env, &st) != 0)
        return false;
    *bytes = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
    return true;
}
#endif
