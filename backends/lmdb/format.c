/*
 * The file's format: where the records are, and older files.
 *
 * Owns: format 5's layout (lmdb-internal.h, lmdb_layout: the entries, the
 * meta records, the change log and the owner rows in LMDB's main
 * database, so that a transaction touches no named database but, for
 * groups, the groups' three); the owner rows; recognising a file when it
 * is opened (new, format 5, formats 1 to 4, not ours, an unknown
 * marker); opening its named databases; migrating a file of formats 1 to
 * 4 to format 5 in the opener's write transaction (open.c holds the
 * writer lock and syncs the commit before anyone uses the file); and a
 * read-only opener reading an older file in place.
 *
 * Why the main database: LMDB marks every named database stale when a
 * read transaction is renewed (DB_STALE in mdb_txn_renew0), and the first
 * use of one in each transaction searches the main database for its
 * record; every write transaction also rewrites the record of each named
 * database it changed.  The main database's root comes with the meta page.
 *
 * The owner rows (format 5): key "\xfd" + owner key + namespace, value
 * empty.  Invariant: every entry's (owner, namespace) has a row, written
 * in the transaction that writes the entry (register; the migration
 * builds them from the entries).  A row may be stale: an unregister or
 * a reap of one entry leaves it (a drop removes the rows of the owners
 * whose entries it removed: scan.c), so a churning owner writes no
 * row but its first in a namespace (MDB_NOOVERWRITE returns MDB_KEYEXIST
 * from its search, before it touches a page: mdb_cursor_put in LMDB's
 * mdb.c).  Reaping a dead owner (liveness.c) walks the namespaces of its
 * rows for its entries, then drops its rows: it costs the size of those
 * namespaces, not of the owner's entries, and stale rows are bounded by
 * owners x namespaces.  Format 4 kept one record per entry in a named
 * DUPSORT "owners" instead (63 bytes per entry at 1M entries).
 *
 * The invariant of a read-only opener of an older file, which a writer
 * may migrate while it reads: each transaction uses the layout its own
 * snapshot has.  A snapshot that still has the named "meta" database is
 * of formats 1 to 3 (the migration drops it in the transaction that
 * fills the main database); one without it is format 4 or 5, and so is
 * every later snapshot (a transaction id only grows, and no writer goes
 * back).  Formats 4 and 5 differ only in the owner index, which a reader
 * does not use but to sweep the owners (liveness.c reads the rows and,
 * while the snapshot has it, the old "owners").  env->main_from keeps the
 * id of the first snapshot seen in the main layout, so that later ones
 * need not look; an older one looks for itself.
 * Relies on: groups.c to open the groups' databases, txn.c for errors.
 */
#include "lmdb-internal.h"

#include <string.h>

/* The main database's handle: what mdb_dbi_open(txn, NULL, ...) gives. */
#define MAIN_DBI 1

const lmdb_layout procreg_lmdb_main_layout = {MAIN_DBI, MAIN_DBI, MAIN_DBI,
                                              true};

/* The named databases of formats 1 to 5 (format 4 has the last four,
 * format 5 the last three). */
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
 * at the owner rows', the meta records' and the changes' keys (0xfd,
 * 0xfe, 0xff). */
static int entries_here(MDB_cursor *c, MDB_val *k, MDB_val *v, int rc)
{
    for (; rc == 0; rc = mdb_cursor_get(c, k, v, MDB_NEXT)) {
        if (k->mv_size > 0 &&
            ((const uint8_t *)k->mv_data)[0] >= OWNERS_PREFIX)
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

/* ---- owner rows ---- */

bool procreg_lmdb_owner_row(const procreg_owner *o, const MDB_val *key,
                            MDB_val *row, uint8_t buf[OWNER_ROW_MAX])
{
    size_t ns_len;
    if (!key_split(key, &ns_len))
        return false;
    buf[0] = OWNERS_PREFIX;
    procreg_lmdb_owner_key(o, buf + 1);
    memcpy(buf + 1 + OWNER_KEY_SIZE, key->mv_data, ns_len);
    row->mv_size = 1 + OWNER_KEY_SIZE + ns_len;
    row->mv_data = buf;
    return true;
}

int procreg_lmdb_owner_row_put(MDB_txn *txn, const procreg_owner *o,
                               const MDB_val *key)
{
    uint8_t buf[OWNER_ROW_MAX];
    MDB_val row, none = {0, (void *)""};
    if (!procreg_lmdb_owner_row(o, key, &row, buf))
        return MDB_BAD_VALSIZE; /* the caller wrote the key: never */
    int rc = mdb_put(txn, MAIN_DBI, &row, &none, MDB_NOOVERWRITE);
    return rc == MDB_KEYEXIST ? 0 : rc;
}

int procreg_lmdb_owner_rows_drop(MDB_txn *txn)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, MAIN_DBI, &c);
    if (rc != 0)
        return rc;
    static const uint8_t prefix = OWNERS_PREFIX;
    MDB_val k = {1, (void *)&prefix}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size > 0 &&
           ((const uint8_t *)k.mv_data)[0] == OWNERS_PREFIX) {
        rc = mdb_cursor_del(c, 0);
        /* After a delete the cursor stands on the next record. */
        if (rc == 0)
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND || rc == 0 ? 0 : rc;
}

/* Format 5's owner rows from the entries (a migration): one per (owner,
 * namespace); a damaged entry gets none (it is reported when read). */
static int rows_from_entries(MDB_txn *txn)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, MAIN_DBI, &c);
    if (rc != 0)
        return rc;
    /* Collect first: the puts would move the cursor's pages. */
    GHashTable *rows = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                             (GDestroyNotify)g_bytes_unref,
                                             NULL);
    MDB_val k, v;
    for (rc = procreg_lmdb_entries_seek(c, &k, &v, true); rc == 0;
         rc = procreg_lmdb_entries_next(c, &k, &v)) {
        raw_entry e;
        uint8_t buf[OWNER_ROW_MAX];
        MDB_val row;
        if (entry_decode(&v, &e) == NULL &&
            procreg_lmdb_owner_row(&e.owner, &k, &row, buf))
            g_hash_table_add(rows, g_bytes_new(row.mv_data, row.mv_size));
    }
    mdb_cursor_close(c);
    rc = rc == MDB_NOTFOUND ? 0 : rc;
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, rows);
    while (rc == 0 && g_hash_table_iter_next(&it, &key, NULL)) {
        gsize len;
        MDB_val row = {0, NULL}, none = {0, (void *)""};
        row.mv_data = (void *)g_bytes_get_data(key, &len);
        row.mv_size = len;
        rc = mdb_put(txn, MAIN_DBI, &row, &none, 0);
    }
    g_hash_table_unref(rows);
    return rc;
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
                               "procreg reads '%s' and the four before",
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

/* Formats 1 to 3 to format 4's layout, in the opener's write
 * transaction: the entries as they are (a version 1 record stays
 * readable), meta records and changes under their prefixes, numbers
 * kept; then the three named databases go.  The groups' databases stay. */
static int migrate_older(lmdb_env *env, MDB_txn *txn)
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

/* Format 4's layout to format 5: the owner rows from the entries, and
 * the per-entry "owners" goes. */
static int migrate_owners(lmdb_env *env, MDB_txn *txn)
{
    int rc = rows_from_entries(txn);
    if (rc == 0)
        rc = mdb_drop(txn, env->old_owners, 1);
    if (rc == 0)
        env->old_owners = 0; /* closed by the drop */
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

/* The named "owners" of formats 1 to 4. */
static int open_old_owners(lmdb_env *env, MDB_txn *txn)
{
    return mdb_dbi_open(txn, "owners", MDB_DUPSORT, &env->old_owners);
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
        rc = open_old_owners(env, txn);
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

/* A file with the main layout's marker: format 5 is used as it is;
 * format 4 is read in place (read-only) or migrated (@write). */
static int open_main(lmdb_env *env, MDB_txn *txn, const MDB_val *fv,
                     bool write, bool *must_write, bool *map_full,
                     GError **error)
{
    bool v4 = format_is(fv, PROCREG_LMDB_FORMAT_4);
    if (!v4 && !format_is(fv, PROCREG_LMDB_FORMAT))
        return unknown_format(env, fv, error);
    int rc = v4 ? open_old_owners(env, txn) : 0;
    if (rc == 0)
        rc = procreg_lmdb_groups_open(env, txn, false);
    if (rc != 0)
        return not_ours(env, rc, error);
    /* Format 4 reads as format 5 does: only the owner index differs. */
    __atomic_store_n(&env->main_from, 1, __ATOMIC_RELAXED);
    if (!v4 || env->read_only)
        return 0;
    if (!write) {
        *must_write = true; /* migrated under the writer lock */
        return 0;
    }
    rc = migrate_owners(env, txn);
    if (rc == 0)
        rc = put_marker(txn);
    if (rc == MDB_MAP_FULL)
        *map_full = true;
    return rc == 0 ? 0
                   : procreg_lmdb_fail(env, rc,
                                       "migrating the file to format 5",
                                       error);
}

int procreg_lmdb_format_open(lmdb_env *env, MDB_txn *txn, bool write,
                             bool *must_write, bool *map_full,
                             GError **error)
{
    /* A handle of an earlier look (a read transaction aborted when the
     * file had to be written) was closed with it, and its slot may be
     * another database's by now: this look opens what it needs. */
    env->old_owners = 0;
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
    if (rc == 0)
        return open_main(env, txn, &fv, write, must_write, map_full, error);
    if (rc != MDB_NOTFOUND)
        return procreg_lmdb_fail(env, rc, "reading the format marker",
                                 error);
    /* No marker there: a new file, one of formats 1 to 3, or not ours.  The
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
        rc = procreg_lmdb_groups_open(env, txn, true);
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
    rc = migrate_older(env, txn);
    if (rc == 0)
        rc = migrate_owners(env, txn);
    if (rc == 0)
        rc = put_marker(txn);
    if (rc == MDB_MAP_FULL)
        *map_full = true;
    if (rc != 0)
        return procreg_lmdb_fail(env, rc, "migrating the file to format 5",
                                 error);
    __atomic_store_n(&env->main_from, 1, __ATOMIC_RELAXED);
    return 0;
}
