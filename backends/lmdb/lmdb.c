/*
 * lmdb: the registry as one LMDB file that every process of a host can
 * open.  Entries persist, dead owners' entries vanish for everybody, and
 * changes made by one process reach the events and waiters of the others.
 *
 * File layout, format 5 (MDB_NOSUBDIR: FILE and FILE-lock, plus
 * FILE-notify, the change counter's page, the writer lock and the request
 * area; format.c has formats 1 to 4 and the migration):
 *   main database (unnamed), so a lookup reads no named database:
 *     key "ns\0name" -> the entry (lmdb-codec.h: sized integers, then
 *              serialised a{sv}), so one namespace is the cursor range
 *              that starts at "ns\0";
 *     key "\xfd" pid(BE32) start_time(BE64) ns -> "": the owner rows,
 *              one per owner and namespace it has (or had) entries in,
 *              which reaping a dead owner walks (format.c);
 *     key "\xfe" name -> "format", the revision counter, the boot id;
 *     key "\xff" change number (BE64) -> event_header + key + metadata:
 *              the change log that other processes read (the last keys);
 *     the named databases' records (their names);
 *   "members", "group_ids", "member_owners": group members (groups.c).
 * Every value read back is checked (lmdb-codec.c: lengths, version, a{sv}
 * in normal form): a corrupt or hostile file gives PROCREG_EBACKEND,
 * never a crash.
 *
 * The rooms (lmdb-internal.h declares what they share):
 *   lmdb.c       this file: options, init/destroy, the vtable;
 *   env.c        one MDB_env per file per process, shared and reference
 *                counted (lmdb.h: never open a file twice in a process),
 *                and never used after fork(): a child opens it again;
 *   open.c       opening a file (paths, checks, boot id);
 *   format.c     the layout of the records and the owner rows,
 *                recognising a file's format, migrating formats 1-4,
 *                reading them read-only;
 *   txn.c        LMDB errors, the write driver, map growth;
 *   readers.c    each thread's read transaction, and the map lock that
 *                keeps transactions out while the map is replaced;
 *   writer.c     the writer lock: writers take turns through a lock the
 *                kernel frees at death, so that LMDB's writer mutex is
 *                never contended across processes;
 *   batch.c      group commit: registrations waiting for the writer lock
 *                committed together, by whichever of them holds it;
 *   liveness.c   whether an owner lives (cache, /proc, pidfd monitor
 *                thread) and reaping the entries of the dead;
 *   changelog.c  the change log, FILE-notify (a shared futex counter),
 *                the watcher thread, and the delivery of every change to
 *                this process's handles in commit order;
 *   ops.c        entries, and register/lookup/unregister/update;
 *   scan.c       list, count, names, namespaces, drop;
 *   groups.c     group members: joins, leaves, reads, reaping;
 *   health.c     stats and health;
 *   lmdb-codec.c the record formats (shared with the fuzz targets).
 */
#include "lmdb-internal.h"

#include <string.h>
#include <sys/stat.h>

#define DEFAULT_MAP_SIZE ((uint64_t)64 << 20)
#define MIN_MAP_SIZE ((uint64_t)256 << 10)
/* A reader slot is 64 bytes of FILE-lock; a process holds one per thread
 * that has read (readers.c: each keeps its reset transaction), so 4094
 * slots serve about a thousand processes of a few reading threads each
 * (LMDB's default, 126, would run out at a few dozen); when they run out,
 * the idle ones of this process are released. */
#define DEFAULT_MAX_READERS 4094
#define MAX_MAX_READERS 65536

static gint instance_counter;

static bool opt_uint(const procreg_spec *spec, const char *name, uint64_t def,
                     uint64_t min, uint64_t max, uint64_t *out,
                     GError **error)
{
    if (procreg_spec_get_uint64(spec, name, def, out, error) != 0)
        return false;
    if (*out < min || *out > max) {
        procreg_set_error(error, PROCREG_EINVAL,
                          "lmdb: %s=%" G_GUINT64_FORMAT " is out of range "
                          "(%" G_GUINT64_FORMAT " to %" G_GUINT64_FORMAT ")",
                          name, (guint64)*out, (guint64)min, (guint64)max);
        return false;
    }
    return true;
}

static const procreg_backend_option lmdb_options[] = {
    {"path", "registry file (default $XDG_RUNTIME_DIR/procreg/registry.mdb, "
             "else /tmp/procreg-UID/registry.mdb)"},
    {"map_size", "initial map size, e.g. 64MiB; the map grows when full"},
    {"max_readers", "reader slots, set by the file's first opener (default "
                    "4094)"},
    {"durability", "sync (default) or nosync: one flush per commit instead "
                   "of two; a machine crash may undo the last commits, "
                   "never corrupts"},
    {NULL, NULL},
};

static int lmdb_init(const procreg_spec *spec, procreg_backend_host *host,
                     void **state, GError **error)
{
    uint64_t map_size, max_readers;
    if (!opt_uint(spec, "map_size", DEFAULT_MAP_SIZE, MIN_MAP_SIZE,
                  MAX_MAP_SIZE, &map_size, error) ||
        !opt_uint(spec, "max_readers", DEFAULT_MAX_READERS, 1, MAX_MAX_READERS,
                  &max_readers, error))
        return PROCREG_EINVAL;
    const char *dur = procreg_spec_get(spec, "durability");
    bool nosync = false;
    if (dur != NULL && strcmp(dur, "nosync") == 0)
        nosync = true;
    else if (dur != NULL && strcmp(dur, "sync") != 0)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "lmdb: durability must be 'sync' or "
                                 "'nosync', not '%s'", dur);
    const char *path = procreg_spec_get(spec, "path");
    char *resolved;
    if (path != NULL && *path == '\0')
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "lmdb: path is empty");
    if (path != NULL) {
        resolved = g_strdup(path);
    } else {
        resolved = procreg_lmdb_default_path(error);
        if (resolved == NULL)
            return PROCREG_EBACKEND;
    }
    if (g_file_test(resolved, G_FILE_TEST_IS_DIR)) {
        int rc = procreg_set_error(error, PROCREG_EINVAL,
                                   "lmdb: path '%s' is a directory; give a "
                                   "file name, e.g. %s/registry.mdb",
                                   resolved, resolved);
        g_free(resolved);
        return rc;
    }
    struct stat sb;
    if (stat(resolved, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        /* Not opened at all: opening a device can have effects. */
        int rc = procreg_set_error(error, PROCREG_EINVAL,
                                   "lmdb: path '%s' is not a regular file "
                                   "(it is a %s)", resolved,
                                   S_ISCHR(sb.st_mode)    ? "character device"
                                   : S_ISBLK(sb.st_mode)  ? "block device"
                                   : S_ISFIFO(sb.st_mode) ? "FIFO"
                                   : S_ISSOCK(sb.st_mode) ? "socket"
                                                          : "special file");
        g_free(resolved);
        return rc;
    }

    lmdb_state *st = g_new0(lmdb_state, 1);
    pthread_mutex_init(&st->lock, NULL);
    st->host = host;
    st->path = resolved;
    st->map_size = map_size;
    st->max_readers = (unsigned int)max_readers;
    st->nosync = nosync;
    st->instance_id = (uint32_t)g_atomic_int_add(&instance_counter, 1) + 1;
    int rc = procreg_lmdb_env_acquire(st, &st->env, error);
    if (rc != 0) {
        pthread_mutex_destroy(&st->lock);
        g_free(st->path);
        g_free(st);
        return rc;
    }
    procreg_lmdb_attach_instance(st->env, st);
    *state = st;
    return 0;
}

static void lmdb_destroy(void *state)
{
    lmdb_state *st = state;
    lmdb_env *env = st->env;
    /* In a forked child that never used this instance, the env is the
     * parent's: leave it alone. */
    if (procreg_lmdb_env_is_ours(env)) {
        procreg_lmdb_detach_instance(env, st);
        procreg_lmdb_env_release(env, st->nosync);
    }
    pthread_mutex_destroy(&st->lock);
    g_free(st->path);
    g_free(st);
}

const procreg_backend_ops procreg_lmdb_backend_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "lmdb",
    .description = "one LMDB file shared by the processes of a host; "
                   "persistent, dead owners reaped, changes seen across "
                   "processes",
    .caps = PROCREG_CAP_THREADSAFE | PROCREG_CAP_PERSISTENT |
            PROCREG_CAP_MULTIPROCESS | PROCREG_CAP_ATOMIC_DROP |
            PROCREG_CAP_GROUPS |
            (LMDB_ORDERED_EVENTS
                 ? PROCREG_CAP_ORDERED_EVENTS | PROCREG_CAP_HISTORY
                 : 0),
    .options = lmdb_options,
    .init = lmdb_init,
    .destroy = lmdb_destroy,
    .register_entry = procreg_lmdb_register,
    .lookup = procreg_lmdb_lookup,
    .lookup_entry = procreg_lmdb_lookup_entry,
    .unregister = procreg_lmdb_unregister,
    .list_all = procreg_lmdb_list_all,
    .update_metadata = procreg_lmdb_update_metadata,
    .health_check = procreg_lmdb_health_check,
    .count = procreg_lmdb_count,
    .list_names = procreg_lmdb_list_names,
    .drop_namespace = procreg_lmdb_drop_namespace,
    .memory_usage = procreg_lmdb_memory_usage,
    .stats = procreg_lmdb_stats,
    .count_namespaces = procreg_lmdb_count_namespaces,
    .group_join = procreg_lmdb_group_join,
    .group_leave = procreg_lmdb_group_leave,
    .group_members = procreg_lmdb_group_members,
    .group_list_all = procreg_lmdb_group_list_all,
    .group_list = procreg_lmdb_group_list,
    .group_member = procreg_lmdb_group_member,
    .history_head = procreg_lmdb_history_head,
    .history_read = procreg_lmdb_history_read,
};
