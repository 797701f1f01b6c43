/* Raw LMDB access to a registry file for the tests, in any layout
 * (backends/lmdb/format.c): formats 4 and 5 keep the records of
 * "entries", "meta" and "events" in the main database (meta keys behind
 * "\xfe", change keys behind "\xff"), and format 5 its owner rows there
 * too ("\xfd" + owner key + namespace, which these helpers call
 * "owners"); formats 1 to 3 keep each in a named database, and formats 1
 * to 4 a per-entry "owners" (DUPSORT: owner key -> entry key).  The
 * helpers take the old names and find the records in whichever layout
 * the file has; lt_raw_old_file() writes a file of formats 1 to 3 as
 * those versions of procreg did, lt_raw_downgrade() turns a format 5 file
 * into any older one.  Only while no procreg handle has the file open:
 * lmdb.h forbids two environments on one file in one process. */
#ifndef PROCREG_TESTS_LMDB_RAW_H
#define PROCREG_TESTS_LMDB_RAW_H

#include <glib.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    MDB_env *env;
    MDB_txn *txn;
    bool v4; /* the file has format 4's or 5's layout */
    bool v5; /* format 5: owner rows in the main database */
} raw_db;

#define LT_MAIN_KEY_MAX 600

static inline bool lt_raw_in_main(const raw_db *r, const char *db)
{
    return (r->v4 && (strcmp(db, "entries") == 0 ||
                      strcmp(db, "meta") == 0 || strcmp(db, "events") == 0)) ||
           (r->v5 && strcmp(db, "owners") == 0);
}

static inline void raw_open(raw_db *r, const char *path, bool write)
{
    g_assert_cmpint(mdb_env_create(&r->env), ==, 0);
    mdb_env_set_maxdbs(r->env, 8);
    mdb_env_set_mapsize(r->env, (size_t)64 << 20);
    int rc = mdb_env_open(r->env, path,
                          MDB_NOSUBDIR | (write ? 0 : MDB_RDONLY), 0600);
    g_assert_cmpstr(mdb_strerror(rc), ==, mdb_strerror(0));
    g_assert_cmpint(
        mdb_txn_begin(r->env, NULL, write ? 0 : MDB_RDONLY, &r->txn), ==, 0);
    MDB_dbi main_dbi;
    g_assert_cmpint(mdb_dbi_open(r->txn, NULL, 0, &main_dbi), ==, 0);
    MDB_val k = {7, "\xfe" "format"}, v;
    r->v4 = mdb_get(r->txn, main_dbi, &k, &v) == 0;
    r->v5 = r->v4 && v.mv_size == 14 &&
            memcmp(v.mv_data, "procreg-lmdb 5", 14) == 0;
}

static inline MDB_dbi raw_dbi(raw_db *r, const char *name, unsigned flags)
{
    MDB_dbi dbi;
    bool in_main = lt_raw_in_main(r, name);
    g_assert_cmpint(mdb_dbi_open(r->txn, in_main ? NULL : name,
                                 in_main ? 0 : flags, &dbi),
                    ==, 0);
    return dbi;
}

/* @key of database @db as the file's layout stores it, in @buf. */
static inline MDB_val lt_raw_key(const raw_db *r, const char *db,
                                 const void *key, size_t klen,
                                 char buf[LT_MAIN_KEY_MAX])
{
    size_t off = 0;
    if (lt_raw_in_main(r, db) && strcmp(db, "entries") != 0) {
        buf[0] = strcmp(db, "meta") == 0     ? '\xfe'
                 : strcmp(db, "owners") == 0 ? '\xfd'
                                             : '\xff';
        off = 1;
    }
    g_assert_cmpuint(klen + off, <=, LT_MAIN_KEY_MAX);
    memcpy(buf + off, key, klen);
    MDB_val k = {klen + off, buf};
    return k;
}

static inline void raw_put(raw_db *r, const char *db, const void *key,
                           size_t klen, const void *val, size_t vlen)
{
    MDB_dbi dbi = raw_dbi(r, db, 0);
    char buf[LT_MAIN_KEY_MAX];
    MDB_val k = lt_raw_key(r, db, key, klen, buf);
    MDB_val v = {vlen, (void *)val};
    g_assert_cmpint(mdb_put(r->txn, dbi, &k, &v, 0), ==, 0);
}

static inline MDB_val raw_get(raw_db *r, const char *db, const void *key,
                              size_t klen)
{
    char buf[LT_MAIN_KEY_MAX];
    MDB_val k = lt_raw_key(r, db, key, klen, buf), v = {0, NULL};
    g_assert_cmpint(mdb_get(r->txn, raw_dbi(r, db, 0), &k, &v), ==, 0);
    return v;
}

static inline void raw_close(raw_db *r, bool commit)
{
    if (commit)
        g_assert_cmpint(mdb_txn_commit(r->txn), ==, 0);
    else
        mdb_txn_abort(r->txn);
    mdb_env_close(r->env);
}

/* Which of the old databases a key of format 4's main database belongs
 * to (NULL: a named database's record). */
static inline const char *lt_raw_main_class(const MDB_val *k)
{
    const unsigned char *p = k->mv_data;
    if (k->mv_size > 0 && p[0] == 0xfe)
        return "meta";
    if (k->mv_size > 0 && p[0] == 0xff)
        return "events";
    if (k->mv_size > 0 && p[0] == 0xfd)
        return "owners";
    return memchr(p, 0, k->mv_size) != NULL ? "entries" : NULL;
}

static inline size_t raw_count(raw_db *r, const char *db)
{
    MDB_dbi dbi = raw_dbi(r, db, 0);
    if (!lt_raw_in_main(r, db)) {
        MDB_stat st;
        g_assert_cmpint(mdb_stat(r->txn, dbi, &st), ==, 0);
        return st.ms_entries;
    }
    MDB_cursor *c;
    g_assert_cmpint(mdb_cursor_open(r->txn, dbi, &c), ==, 0);
    MDB_val k, v;
    size_t n = 0;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const char *cls = lt_raw_main_class(&k);
        n += cls != NULL && strcmp(cls, db) == 0;
    }
    mdb_cursor_close(c);
    return n;
}

static inline bool raw_has(raw_db *r, const char *db, const char *ns,
                           const char *name)
{
    char key[LT_MAIN_KEY_MAX];
    size_t n = (size_t)g_snprintf(key, sizeof key, "%s%c%s", ns, 0, name);
    MDB_val k = {n, key}, v;
    return mdb_get(r->txn, raw_dbi(r, db, 0), &k, &v) == 0;
}

/* The number of the last change in the log (0: none). */
static inline guint64 raw_last_change(raw_db *r)
{
    MDB_cursor *c;
    g_assert_cmpint(mdb_cursor_open(r->txn, raw_dbi(r, "events", 0), &c), ==,
                    0);
    MDB_val k, v;
    guint64 seq = 0;
    size_t off = r->v4 ? 1 : 0;
    if (mdb_cursor_get(c, &k, &v, MDB_LAST) == 0 &&
        k.mv_size == off + sizeof seq &&
        (!r->v4 || ((const unsigned char *)k.mv_data)[0] == 0xff)) {
        memcpy(&seq, (const char *)k.mv_data + off, sizeof seq);
        seq = GUINT64_FROM_BE(seq);
    }
    mdb_cursor_close(c);
    return seq;
}

/* The value layout of an entry in formats 1 and 2 (entry version 1,
 * backends/lmdb/lmdb-codec.h), which later formats still read. */
typedef struct {
    uint16_t version;
    uint16_t flags;
    uint32_t meta_len;
    uint64_t pid;
    uint64_t start_time;
    int64_t registered_at;
    uint64_t revision;
} raw_header;

/* The owner key (pid BE32, start time BE64) of an entry's value, either
 * version (backends/lmdb/lmdb-codec.h); false when it is damaged. */
static inline bool lt_raw_entry_owner(const MDB_val *v, char out[12])
{
    const unsigned char *p = v->mv_data;
    guint64 pid = 0, start = 0;
    if (v->mv_size >= sizeof(raw_header) && p[0] == 1 && p[1] == 0) {
        raw_header h;
        memcpy(&h, p, sizeof h);
        pid = h.pid;
        start = h.start_time;
    } else if (v->mv_size >= 4 && p[0] == 2) {
        unsigned int ps = p[2] & 15, ss = p[2] >> 4;
        if (ps > 8 || ss > 8 || 4 + ps + ss > v->mv_size)
            return false;
        for (unsigned int i = 0; i < ps; i++)
            pid |= (guint64)p[4 + i] << (8 * i);
        for (unsigned int i = 0; i < ss; i++)
            start |= (guint64)p[4 + ps + i] << (8 * i);
    } else {
        return false;
    }
    guint32 bp = GUINT32_TO_BE((guint32)pid);
    guint64 bs = GUINT64_TO_BE(start);
    memcpy(out, &bp, 4);
    memcpy(out + 4, &bs, 8);
    return true;
}

/* The owner row of format 5 for the entry key @k ("ns\0name") owned by
 * @owner (12 bytes), in @buf. */
static inline MDB_val lt_raw_owner_row(const char owner[12], const MDB_val *k,
                                       char buf[LT_MAIN_KEY_MAX])
{
    const char *nul = memchr(k->mv_data, 0, k->mv_size);
    g_assert_nonnull(nul);
    size_t ns_len = (size_t)(nul - (const char *)k->mv_data);
    g_assert_cmpuint(13 + ns_len, <=, LT_MAIN_KEY_MAX);
    buf[0] = '\xfd';
    memcpy(buf + 1, owner, 12);
    memcpy(buf + 13, k->mv_data, ns_len);
    MDB_val row = {13 + ns_len, buf};
    return row;
}

/* An entry of version 1 (no metadata) owned by (@pid, @start), and its
 * owner record (format 5: its owner row), as formats 1 and 2 wrote
 * them. */
static inline void lt_raw_put_entry_v1(raw_db *r, const char *ns,
                                       const char *name, guint32 pid,
                                       guint64 start, guint64 revision)
{
    raw_header h = {.version = 1, .pid = pid, .start_time = start,
                    .registered_at = 1000 + (gint64)revision,
                    .revision = revision};
    char key[LT_MAIN_KEY_MAX];
    size_t n = (size_t)g_snprintf(key, sizeof key, "%s%c%s", ns, 0, name);
    raw_put(r, "entries", key, n, &h, sizeof h);
    guint32 p = GUINT32_TO_BE(pid);
    guint64 s = GUINT64_TO_BE(start);
    char ok[12];
    memcpy(ok, &p, 4);
    memcpy(ok + 4, &s, 8);
    MDB_val k = {sizeof ok, ok}, v = {n, key};
    if (r->v5) {
        char buf[LT_MAIN_KEY_MAX];
        MDB_val row = lt_raw_owner_row(ok, &v, buf), none = {0, ""};
        g_assert_cmpint(mdb_put(r->txn, raw_dbi(r, "owners", 0), &row, &none,
                                0),
                        ==, 0);
        return;
    }
    g_assert_cmpint(mdb_put(r->txn, raw_dbi(r, "owners", MDB_DUPSORT), &k,
                            &v, MDB_NODUPDATA),
                    ==, 0);
}

/* A new file of format @format (1, 2 or 3) as that version of procreg
 * made it: the named databases (format 1 without the groups' three), the
 * marker, the boot id of this boot, and nothing else.  Entries, owner
 * records and changes are added with raw_put(). */
static inline void lt_raw_old_file(const char *path, int format)
{
    raw_db r;
    g_assert_cmpint(mdb_env_create(&r.env), ==, 0);
    mdb_env_set_maxdbs(r.env, 8);
    mdb_env_set_mapsize(r.env, (size_t)64 << 20);
    g_assert_cmpint(mdb_env_open(r.env, path, MDB_NOSUBDIR, 0600), ==, 0);
    g_assert_cmpint(mdb_txn_begin(r.env, NULL, 0, &r.txn), ==, 0);
    MDB_dbi d;
    g_assert_cmpint(mdb_dbi_open(r.txn, "entries", MDB_CREATE, &d), ==, 0);
    g_assert_cmpint(
        mdb_dbi_open(r.txn, "owners", MDB_CREATE | MDB_DUPSORT, &d), ==, 0);
    g_assert_cmpint(mdb_dbi_open(r.txn, "events", MDB_CREATE, &d), ==, 0);
    MDB_dbi meta;
    g_assert_cmpint(mdb_dbi_open(r.txn, "meta", MDB_CREATE, &meta), ==, 0);
    if (format >= 2) {
        g_assert_cmpint(mdb_dbi_open(r.txn, "members", MDB_CREATE, &d), ==,
                        0);
        g_assert_cmpint(mdb_dbi_open(r.txn, "group_ids",
                                     MDB_CREATE | MDB_DUPSORT | MDB_DUPFIXED,
                                     &d),
                        ==, 0);
        g_assert_cmpint(
            mdb_dbi_open(r.txn, "member_owners", MDB_CREATE, &d), ==, 0);
    }
    char marker[] = "procreg-lmdb 0";
    marker[13] = (char)('0' + format);
    MDB_val k = {6, "format"}, v = {14, marker};
    g_assert_cmpint(mdb_put(r.txn, meta, &k, &v, 0), ==, 0);
    char *boot = NULL;
    gsize len = 0;
    if (g_file_get_contents("/proc/sys/kernel/random/boot_id", &boot, &len,
                            NULL) &&
        len >= 36) {
        MDB_val bk = {7, "boot_id"}, bv = {36, boot};
        g_assert_cmpint(mdb_put(r.txn, meta, &bk, &bv, 0), ==, 0);
    }
    g_free(boot);
    r.v4 = false;
    raw_close(&r, true);
}

/* A format 5 file as format 4 laid it out: a per-entry "owners" (each
 * entry's owner key -> its key) instead of the owner rows, marker
 * "procreg-lmdb 4".  Rows without an entry (stale) just go. */
static inline void lt_raw_to_format_4(const char *path)
{
    raw_db r;
    raw_open(&r, path, true);
    g_assert_true(r.v5);
    MDB_dbi main_dbi, owners;
    g_assert_cmpint(mdb_dbi_open(r.txn, NULL, 0, &main_dbi), ==, 0);
    g_assert_cmpint(
        mdb_dbi_open(r.txn, "owners", MDB_CREATE | MDB_DUPSORT, &owners), ==,
        0);
    MDB_cursor *c;
    g_assert_cmpint(mdb_cursor_open(r.txn, main_dbi, &c), ==, 0);
    MDB_val k, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        const char *cls = lt_raw_main_class(&k);
        if (cls != NULL && strcmp(cls, "owners") == 0) {
            g_assert_cmpint(mdb_cursor_del(c, 0), ==, 0);
        } else if (cls != NULL && strcmp(cls, "entries") == 0) {
            char ok[12];
            g_assert_true(lt_raw_entry_owner(&v, ok));
            MDB_val okv = {sizeof ok, ok}, ek = k;
            g_assert_cmpint(mdb_put(r.txn, owners, &okv, &ek, MDB_NODUPDATA),
                            ==, 0);
            /* The put touched another database: the cursor stays. */
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    g_assert_cmpint(rc, ==, MDB_NOTFOUND);
    mdb_cursor_close(c);
    MDB_val fk = {7, "\xfe" "format"}, fv = {14, "procreg-lmdb 4"};
    g_assert_cmpint(mdb_put(r.txn, main_dbi, &fk, &fv, 0), ==, 0);
    r.v5 = false;
    raw_close(&r, true);
}

/* Turn a format 5 file back into format @format (1 to 4), as those
 * versions laid it out: a per-entry "owners" index (format 4), then the
 * entries, meta records and changes move to their named databases,
 * unprefixed, the marker says @format, and format 1 loses the groups'
 * databases (which must be empty).  The records keep their bytes, so a
 * file of any content procreg can make can be had in an older format. */
static inline void lt_raw_downgrade(const char *path, int format)
{
    lt_raw_to_format_4(path);
    if (format == 4)
        return;
    raw_db r;
    raw_open(&r, path, true);
    g_assert_true(r.v4);
    MDB_dbi main_dbi, named[3];
    static const char *const names[] = {"entries", "meta", "events"};
    g_assert_cmpint(mdb_dbi_open(r.txn, NULL, 0, &main_dbi), ==, 0);
    /* Created before the walk: creating one puts its record in main. */
    for (int i = 0; i < 3; i++)
        g_assert_cmpint(
            mdb_dbi_open(r.txn, names[i], MDB_CREATE, &named[i]), ==, 0);
    MDB_cursor *c;
    g_assert_cmpint(mdb_cursor_open(r.txn, main_dbi, &c), ==, 0);
    MDB_val k, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        const char *cls = lt_raw_main_class(&k);
        if (cls == NULL) {
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
            continue;
        }
        int i = cls[0] == 'e' && cls[1] == 'n' ? 0 : cls[0] == 'm' ? 1 : 2;
        size_t off = i == 0 ? 0 : 1;
        MDB_val nk = {k.mv_size - off, (char *)k.mv_data + off};
        if (!(i == 1 && nk.mv_size == 6 && memcmp(nk.mv_data, "format", 6) == 0))
            g_assert_cmpint(mdb_put(r.txn, named[i], &nk, &v, 0), ==, 0);
        /* After a delete the cursor stands on the next record. */
        g_assert_cmpint(mdb_cursor_del(c, 0), ==, 0);
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    g_assert_cmpint(rc, ==, MDB_NOTFOUND);
    mdb_cursor_close(c);
    char marker[] = "procreg-lmdb 0";
    marker[13] = (char)('0' + format);
    MDB_val fk = {6, "format"}, fv = {14, marker};
    g_assert_cmpint(mdb_put(r.txn, named[1], &fk, &fv, 0), ==, 0);
    if (format == 1) {
        static const char *const groups[] = {"members", "group_ids",
                                             "member_owners"};
        for (int i = 0; i < 3; i++) {
            MDB_dbi d;
            g_assert_cmpint(mdb_dbi_open(r.txn, groups[i], 0, &d), ==, 0);
            MDB_stat st;
            g_assert_cmpint(mdb_stat(r.txn, d, &st), ==, 0);
            g_assert_cmpuint(st.ms_entries, ==, 0);
            g_assert_cmpint(mdb_drop(r.txn, d, 1), ==, 0);
        }
    }
    r.v4 = false;
    raw_close(&r, true);
}

/* Every record of the file, in any layout, as text: one line per
 * record, "database key = value" in hex, the databases in a fixed order,
 * the meta record "format" left out.  The owner index is shown as format
 * 5's rows, "owners OWNER+NS = " (formats 1 to 4: one line per owner and
 * namespace of the per-entry records), so that a file and its migration
 * read the same. */
static inline char *lt_raw_dump(const char *path)
{
    raw_db r;
    raw_open(&r, path, false);
    static const char *const dbs[] = {"entries", "meta",      "events",
                                      "owners",  "members",   "group_ids",
                                      "member_owners"};
    GString *out = g_string_new(NULL);
    for (size_t d = 0; d < G_N_ELEMENTS(dbs); d++) {
        MDB_dbi dbi;
        bool in_main = lt_raw_in_main(&r, dbs[d]);
        bool per_entry = d == 3 && !in_main;
        if (mdb_dbi_open(r.txn, in_main ? NULL : dbs[d], 0, &dbi) != 0)
            continue;
        MDB_cursor *c;
        g_assert_cmpint(mdb_cursor_open(r.txn, dbi, &c), ==, 0);
        MDB_val k, v;
        GString *last = g_string_new(NULL);
        for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            size_t off = 0;
            if (in_main) {
                const char *cls = lt_raw_main_class(&k);
                if (cls == NULL || strcmp(cls, dbs[d]) != 0)
                    continue;
                off = strcmp(cls, "entries") == 0 ? 0 : 1;
            }
            if (d == 1 && k.mv_size - off == 6 &&
                memcmp((char *)k.mv_data + off, "format", 6) == 0)
                continue;
            GString *line = g_string_new(NULL);
            g_string_append_printf(line, "%s ", dbs[d]);
            for (size_t i = off; i < k.mv_size; i++)
                g_string_append_printf(line, "%02x",
                                       ((unsigned char *)k.mv_data)[i]);
            if (per_entry) {
                /* The namespace of the entry key in the value. */
                const char *p = v.mv_data;
                for (size_t i = 0; i < v.mv_size && p[i] != 0; i++)
                    g_string_append_printf(line, "%02x", (unsigned char)p[i]);
                g_string_append(line, " = ");
            } else {
                g_string_append(line, " = ");
                for (size_t i = 0; i < v.mv_size; i++)
                    g_string_append_printf(line, "%02x",
                                           ((unsigned char *)v.mv_data)[i]);
            }
            g_string_append_c(line, '\n');
            if (!per_entry || strcmp(line->str, last->str) != 0)
                g_string_append(out, line->str);
            g_string_assign(last, line->str);
            g_string_free(line, TRUE);
        }
        g_string_free(last, TRUE);
        mdb_cursor_close(c);
    }
    raw_close(&r, false);
    return g_string_free(out, FALSE);
}

/* The id of the file's last committed transaction. */
static inline size_t lt_raw_txnid(const char *path)
{
    raw_db r;
    raw_open(&r, path, false);
    MDB_envinfo info;
    mdb_env_info(r.env, &info);
    raw_close(&r, false);
    return info.me_last_txnid;
}

#endif
