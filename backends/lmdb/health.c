/*
 * Health and figures: memory_usage, stats, health_check.
 *
 * Owns: what procreg_stats() shows for a file (map, reader slots,
 * durability, owners, the counters every room keeps in lmdb_env) and
 * when the registry is degraded (read-only, reader slots above 90%, a
 * full file system, corrupt records read, no FILE-notify) or failed.
 * Relies on: txn.c for a read transaction and the disk check, env.c for
 * a handle's env.
 */
#include "lmdb-internal.h"

int procreg_lmdb_memory_usage(void *state, size_t *bytes)
{
    lmdb_state *st = state;
    STATE_ENV(st, NULL);
    MDB_envinfo info;
    MDB_stat ms;
    procreg_lmdb_map_enter(env);
    mdb_env_info(env->mdb, &info);
    mdb_env_stat(env->mdb, &ms);
    procreg_lmdb_map_leave(env);
    *bytes = (info.me_last_pgno + 1) * (size_t)ms.ms_psize;
    return 0;
}

static int count_line(const char *msg, void *ctx)
{
    (*(int *)ctx)++;
    return 0;
}

/* Reader slots in use now: mdb_reader_list() writes a header and one line
 * per slot, or a single "(no active readers)". */
static int used_readers(lmdb_env *env)
{
    int lines = 0;
    mdb_reader_list(env->mdb, count_line, &lines);
    return lines > 0 ? lines - 1 : 0;
}

static void env_figures(lmdb_env *env, GVariantDict *d)
{
    MDB_envinfo info;
    MDB_stat ms;
    procreg_lmdb_map_enter(env);
    mdb_env_info(env->mdb, &info);
    mdb_env_stat(env->mdb, &ms);
    procreg_lmdb_map_leave(env);
    g_variant_dict_insert(d, "path", "s", env->path);
    g_variant_dict_insert(d, "map_size", "t", (guint64)info.me_mapsize);
    g_variant_dict_insert(d, "file_used_bytes", "t",
                          (guint64)(info.me_last_pgno + 1) * ms.ms_psize);
    g_variant_dict_insert(d, "max_readers", "u", info.me_maxreaders);
    g_variant_dict_insert(d, "reader_slots_used", "u", info.me_numreaders);
    g_variant_dict_insert(d, "durability", "s",
                          env->read_only ? "read-only"
                          : !procreg_lmdb_durable(env) ? "nosync"
                                                     : "sync");
    g_variant_dict_insert(d, "read_only", "b", env->read_only);
    g_variant_dict_insert(d, "cross_process_events", "b",
                          env->notify != NULL && env->notify_writable);
    pthread_mutex_lock(&env->owners_lock);
    g_variant_dict_insert(d, "owners_known", "u",
                          g_hash_table_size(env->owner_cache));
    g_variant_dict_insert(d, "owners_monitored", "u",
                          (guint32)g_atomic_int_get(&env->monitored));
    pthread_mutex_unlock(&env->owners_lock);
#define FIG(name) \
    g_variant_dict_insert(d, #name, "t", \
                          (guint64)(gsize)g_atomic_pointer_get(&env->name))
    FIG(map_grows);
    FIG(map_adopted);
    FIG(stale_readers);
    FIG(reaped);
    FIG(reap_walks);
    FIG(events_delivered);
    FIG(events_lost);
    FIG(corrupt_reads);
    FIG(log_restarts);
    FIG(batch_commits);
    FIG(batch_requests);
    FIG(batch_solo);
    FIG(batch_dropped);
    FIG(batch_recoveries);
#undef FIG
    g_variant_dict_insert(d, "batch_slots_used", "u",
                          procreg_lmdb_batch_slots_used(env));
}

void procreg_lmdb_stats(void *state, GVariantDict *out)
{
    lmdb_state *st = state;
    int rc = 0;
    lmdb_env *env = procreg_lmdb_state_env(st, &rc, NULL);
    if (env != NULL)
        env_figures(env, out);
}

int procreg_lmdb_health_check(void *state, GVariantDict *details,
                              char **message)
{
    lmdb_state *st = state;
    int rc = 0;
    lmdb_env *env = procreg_lmdb_state_env(st, &rc, NULL);
    if (env == NULL) {
        *message = g_strdup("cannot reopen the registry file after fork()");
        return PROCREG_HEALTH_FAILED;
    }
    env_figures(env, details);
    MDB_txn *txn;
    rc = procreg_lmdb_read_begin(env, &txn);
    if (rc != 0) {
        *message = g_strdup_printf("lmdb registry '%s': cannot read: %s",
                                   env->path, mdb_strerror(rc));
        return PROCREG_HEALTH_FAILED;
    }
    MDB_stat es;
    rc = mdb_stat(txn, entries_dbi(env, txn), &es);
    procreg_lmdb_read_end(env, txn);
    if (rc != 0) {
        *message = g_strdup_printf("lmdb registry '%s': %s", env->path,
                                   mdb_strerror(rc));
        return PROCREG_HEALTH_FAILED;
    }
    int used = used_readers(env);
    if (env->read_only) {
        *message = g_strdup_printf("lmdb registry '%s' is read-only (%s)",
                                   env->path, env->read_only_why);
        return PROCREG_HEALTH_DEGRADED;
    }
    if (env->max_readers > 0 && used * 10 > (int)env->max_readers * 9) {
        *message = g_strdup_printf("lmdb registry '%s': %d of %u reader "
                                   "slots in use", env->path, used,
                                   env->max_readers);
        return PROCREG_HEALTH_DEGRADED;
    }
    if (procreg_lmdb_disk_full(env)) {
        *message = g_strdup_printf("lmdb registry '%s': its file system is "
                                   "(almost) full; writes may fail",
                                   env->path);
        return PROCREG_HEALTH_DEGRADED;
    }
    if (g_atomic_pointer_get(&env->corrupt_reads) != 0) {
        *message = g_strdup_printf("lmdb registry '%s': corrupt records were "
                                   "read (see corrupt_reads)", env->path);
        return PROCREG_HEALTH_DEGRADED;
    }
    if (env->notify == NULL || !env->notify_writable) {
        *message = g_strdup_printf("lmdb registry '%s': no change "
                                   "notification file; other processes' "
                                   "changes raise no events", env->path);
        return PROCREG_HEALTH_DEGRADED;
    }
    return PROCREG_HEALTH_OK;
}
