/*
 * The file's format: where the records are, and older files.
 *
 * Owns: format 4's layout (lmdb-internal.h, lmdb_layout: the entries, the
 * meta records and the change log in LMDB's main database, so that a
 * transaction touches no named database but "owners" and, for groups,
 * the groups' three); recognising a file when it is opened (new, format
 * 4, formats 1 to 3, not ours, an unknown marker); opening its named
 * databases; migrating a file of formats 1 to 3 to format 4 in the
 * opener's write transaction (open.c holds the writer lock and syncs the
 * commit before anyone uses the file); and a read-only opener reading an
 * older file in place.
 *
 * Why the main database: LMDB marks every named database stale when a
 * read transaction is renewed (DB_STALE in mdb_txn_renew0), and the first
 * use of one in each transaction searches the main database for its
 * record; every write transaction also rewrites the record of each named
 * database it changed.  The main database's root comes with the meta page.
 *
 * The invariant of a read-only opener of an older file, which a writer
 * may migrate while it reads: each transaction uses the layout its own
 * snapshot has.  A snapshot that still has the named "meta" database is
 * of the older format (the migration drops it in the transaction that
 * fills the main database); one without it is format 4, and so is every
 * later snapshot (a transaction id only grows, and no writer goes back).
 * env->main_from keeps the id of the first snapshot seen in format 4, so
 * that later ones need not look; an older one looks for itself.
 * Relies on: groups.c to open the groups' databases, txn.c for errors.
 */
#include "lmdb-internal.h"

#include <string.h>

/* The main database's handle: what mdb_dbi_open(txn, NULL, ...) gives. */
#define MAIN_DBI 1

const lmdb_layout procreg_lmdb_main_layout = {MAIN_DBI, MAIN_DBI, MAIN_DBI,
                                              true};

/* The named databases of formats 1 to 4 (format 4 has the last four). */
static const char *const db_names[] = {"entries", "meta",      "events",
                                       "owners",  "members",   "group_ids",
                                       "member_owners"};

static bool is_db_name(const MDB_val *k)
{
    for (size_t i = 0; i < G_N_ELEMENTS(db_names); i++)
        if (k->mv_size == strlen(db_names[i]) &&
            memcmp(k->mv_data, db_names[i], k->mv_size) == 0)
            return true;
    return false;
}

const lmdb_layout *procreg_lmdb_layout_slow(lmdb_env *env, MDB_txn *txn)
{
#ifdef PROCREG_LMDB_FORMAT_HOOKS
    procreg_lmdb_hook_format_layout(env); /* a migration may commit here */
#endif
    uint64_t from = __atomic_load_n(&env->main_from, __ATOMIC_RELAXED);
    uint64_t id = mdb_txn_id(txn);
    if (from != 0 && id >= from)
        return &procreg_lmdb_main_layout;
    char buf[META_KEY_MAX];
    MDB_val k = procreg_lmdb_meta_key(&env->old, "format", buf), v;
    if (mdb_get(txn, env->old.meta, &k, &v) != MDB_NOTFOUND)
        return &env->old; /* still there (an error: reported on the way) */
    /* Migrated by the time of this snapshot: so is every later one. */
    while ((from == 0 || id < from) &&
           !__atomic_compare_exchange_n(&env->main_from, &from, id, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    return &procreg_lmdb_main_layout;
}

MDB_val procreg_lmdb_meta_key(const lmdb_layout *lay, const char *name,
                              char buf[META_KEY_MAX])
{
    size_t n = strlen(name), off = lay->main ? 1 : 0;
    g_assert(n + off < META_KEY_MAX);
    buf[0] = (char)META_PREFIX;
    memcpy(buf + off, name, n);
    MDB_val k = {n + off, buf};
    return k;
}

MDB_val procreg_lmdb_event_key(const lmdb_layout *lay, uint64_t seq,
                               uint8_t buf[EVENT_KEY_SIZE])
{
    size_t off = lay->main ? 1 : 0;
    uint64_t be = GUINT64_TO_BE(seq);
    buf[0] = 0xff;
    memcpy(buf + off, &be, sizeof be);
    MDB_val k = {off + sizeof be, buf};
    return k;
}

bool procreg_lmdb_event_seq(const lmdb_layout *lay, const MDB_val *k,
                            uint64_t *seq)
{
    size_t off = lay->main ? 1 : 0;
    const uint8_t *p = k->mv_data;
    if (k->mv_size != off + sizeof *seq || (off && p[0] != 0xff))
        return false;
    uint64_t be;
    memcpy(&be, p + off, sizeof be);
    *seq = GUINT64_FROM_BE(be);
    return true;
}

/* From the cursor's record on: skip the named databases' records, stop
 * at the meta records' and the changes' keys (0xfe, 0xff). */
static int entries_here(MDB_cursor *c, MDB_val *k, MDB_val *v, int rc)
{
    for (; rc == 0; rc = mdb_cursor_get(c, k, v, MDB_NEXT)) {
        if (k->mv_size > 0 && ((const uint8_t *)k->mv_data)[0] >= META_PREFIX)
            return MDB_NOTFOUND;
        if (!is_db_name(k))
            return 0;
    }
    return rc;
}

int procreg_lmdb_entries_seek(MDB_cursor *c, MDB_val *k, MDB_val *v,
                              bool first)
{
    static const char one[] = "\x01";
    if (first) {
        k->mv_size = 1;
        k->mv_data = (void *)one;
    }
    return entries_here(c, k, v, mdb_cursor_get(c, k, v, MDB_SET_RANGE));
}

int procreg_lmdb_entries_next(MDB_cursor *c, MDB_val *k, MDB_val *v)
{
    return entries_here(c, k, v, mdb_cursor_get(c, k, v, MDB_NEXT));
}

/* ---- opening ---- */

static bool format_is(const MDB_val *v, const char *format)
{
    return v->mv_size == strlen(format) &&
           memcmp(v->mv_data, format, v->mv_size) == 0;
}

static int unknown_format(lmdb_env *env, const MDB_val *v, GError **error)
{
    char *got = g_strndup(v->mv_data, MIN(v->mv_size, 64));
    int rc = procreg_set_error(error, PROCREG_EBACKEND,
                               "lmdb registry '%s' has format '%s'; this "
                               "procreg reads '%s' and the three before",
                               env->path, got, PROCREG_LMDB_FORMAT);
    g_free(got);
    return rc;
}

static int not_ours(lmdb_env *env, int rc, GError **error)
{
    if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "lmdb registry '%s': not a procreg "
                                 "registry, or one written by an "
                                 "incompatible version (%s)", env->path,
                                 mdb_strerror(rc));
    return procreg_lmdb_fail(env, rc, "opening the databases", error);
}

/* Put every record of @from into the main database, its key behind
 * @prefix (-1: none); the meta record @skip is left out. */
static int copy_db(MDB_txn *txn, MDB_dbi from, int prefix, const char *skip,
                   unsigned int flags)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, from, &c);
    if (rc != 0)
        return rc;
    uint8_t buf[1 + 512];
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size >= sizeof buf) {
            rc = MDB_BAD_VALSIZE;
            break;
        }
        if (skip != NULL && k.mv_size == strlen(skip) &&
            memcmp(k.mv_data, skip, k.mv_size) == 0)
            continue;
        size_t off = prefix >= 0 ? 1 : 0;
        buf[0] = (uint8_t)prefix;
        memcpy(buf + off, k.mv_data, k.mv_size);
        MDB_val nk = {k.mv_size + off, buf};
        /* The source's pages are not written: v stays valid. */
        rc = mdb_put(txn, MAIN_DBI, &nk, &v, flags);
        if (rc != 0)
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Formats 1 to 3 to format 4, in the opener's write transaction: the
 * entries as they are (a version 1 record stays readable), meta records
 * and changes under their prefixes, numbers kept; then the three named
 * databases go.  "owners" and the groups' databases stay. */
static int migrate(lmdb_env *env, MDB_txn *txn)
{
    int rc = copy_db(txn, env->old.entries, -1, NULL, 0);
    if (rc == 0)
        rc = copy_db(txn, env->old.meta, META_PREFIX, "format", 0);
    if (rc == 0)
        rc = copy_db(txn, env->old.events, 0xff, NULL, MDB_APPEND);
    if (rc == 0)
        rc = mdb_drop(txn, env->old.entries, 1);
    if (rc == 0)
        rc = mdb_drop(txn, env->old.meta, 1);
    if (rc == 0)
        rc = mdb_drop(txn, env->old.events, 1);
    return rc;
}

static int put_marker(MDB_txn *txn)
{
    char buf[META_KEY_MAX];
    MDB_val k = procreg_lmdb_meta_key(&procreg_lmdb_main_layout, "format",
                                      buf);
    MDB_val v = {strlen(PROCREG_LMDB_FORMAT), PROCREG_LMDB_FORMAT};
    return mdb_put(txn, MAIN_DBI, &k, &v, 0);
}

/* Format 4 (or a new file): "owners" and the groups' databases. */
static int open_named(lmdb_env *env, MDB_txn *txn, bool create)
{
    int rc = mdb_dbi_open(txn, "owners", (create ? MDB_CREATE : 0) |
                                             MDB_DUPSORT, &env->db_owners);
    if (rc == 0)
        rc = procreg_lmdb_groups_open(env, txn, create);
    return rc;
}

/* An older file: its databases, and a marker of formats 1 to 3. */
static int open_older(lmdb_env *env, MDB_txn *txn, bool write,
                      GError **error)
{
    env->old.main = false;
    int rc = mdb_dbi_open(txn, "entries", 0, &env->old.entries);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", 0, &env->old.meta);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "events", 0, &env->old.events);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "owners", MDB_DUPSORT, &env->db_owners);
    /* Format 1 has no group databases: a writer adds them. */
    if (rc == 0)
        rc = procreg_lmdb_groups_open(env, txn, write);
    if (rc != 0)
        return not_ours(env, rc, error);
    MDB_val fk = {6, "format"}, fv;
    rc = mdb_get(txn, env->old.meta, &fk, &fv);
    if (rc == MDB_NOTFOUND)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "lmdb registry '%s' has no format marker",
                                 env->path);
    if (rc != 0)
        return procreg_lmdb_fail(env, rc, "reading the format marker",
                                 error);
    if (!format_is(&fv, PROCREG_LMDB_FORMAT_3) &&
        !format_is(&fv, PROCREG_LMDB_FORMAT_2) &&
        !format_is(&fv, PROCREG_LMDB_FORMAT_1))
        return unknown_format(env, &fv, error);
    return 0;
}

int procreg_lmdb_format_open(lmdb_env *env, MDB_txn *txn, bool write,
                             bool *must_write, bool *map_full,
                             GError **error)
{
    MDB_dbi main_dbi;
    int rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (rc == 0 && main_dbi != MAIN_DBI)
        rc = MDB_INCOMPATIBLE;
    if (rc != 0)
        return procreg_lmdb_fail(env, rc, "reading the main database",
                                 error);
    char buf[META_KEY_MAX];
    MDB_val fk = procreg_lmdb_meta_key(&procreg_lmdb_main_layout, "format",
                                       buf), fv;
    rc = mdb_get(txn, MAIN_DBI, &fk, &fv);
    if (rc == 0) {
        if (!format_is(&fv, PROCREG_LMDB_FORMAT))
            return unknown_format(env, &fv, error);
        rc = open_named(env, txn, false);
        if (rc != 0)
            return not_ours(env, rc, error);
        __atomic_store_n(&env->main_from, 1, __ATOMIC_RELAXED);
        return 0;
    }
    if (rc != MDB_NOTFOUND)
        return procreg_lmdb_fail(env, rc, "reading the format marker",
                                 error);
    /* No format 4 marker: a new file, an older one, or not ours.  The
     * main database of an older file holds its databases' names only. */
    MDB_cursor *c;
    rc = mdb_cursor_open(txn, MAIN_DBI, &c);
    if (rc != 0)
        return procreg_lmdb_fail(env, rc, "reading the main database",
                                 error);
    MDB_val k, v;
    int n_main = 0;
    bool foreign = false;
    for (int crc = mdb_cursor_get(c, &k, &v, MDB_FIRST); crc == 0;
         crc = mdb_cursor_get(c, &k, &v, MDB_NEXT), n_main++)
        foreign |= !is_db_name(&k);
    mdb_cursor_close(c);
    if (foreign)
        return procreg_set_error(error, PROCREG_EBACKEND,
                                 "lmdb registry '%s': this LMDB file is not "
                                 "a procreg registry (it holds other "
                                 "databases)", env->path);
    if (n_main == 0) {
        if (env->read_only)
            return procreg_set_error(error, PROCREG_EBACKEND,
                                     "lmdb registry '%s' is empty and "
                                     "read-only (%s)", env->path,
                                     env->read_only_why);
        if (!write) {
            *must_write = true;
            return 0;
        }
        rc = open_named(env, txn, true);
        if (rc == 0)
            rc = put_marker(txn);
        if (rc != 0)
            return procreg_lmdb_fail(env, rc, "creating the databases",
                                     error);
        __atomic_store_n(&env->main_from, 1, __ATOMIC_RELAXED);
        return 0;
    }
    rc = open_older(env, txn, write, error);
    if (rc != 0)
        return rc;
    if (env->read_only) {
        /* Read in place; each transaction looks which layout it has. */
        __atomic_store_n(&env->main_from, 0, __ATOMIC_RELAXED);
        return 0;
    }
    if (!write) {
        *must_write = true; /* migrated under the writer lock */
        return 0;
    }
    rc = migrate(env, txn);
    if (rc == 0)
        rc = put_marker(txn);
    if (rc == MDB_MAP_FULL)
        *map_full = true;
    if (rc != 0)
        return procreg_lmdb_fail(env, rc, "migrating the file to format 4",
                                 error);
    __atomic_store_n(&env->main_from, 1, __ATOMIC_RELAXED);
    return 0;
}
