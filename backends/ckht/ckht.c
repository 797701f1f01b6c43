/*
 * ckht: an in-process backend on Concurrency Kit's ck_hs, with lookups
 * that take no lock.
 *
 * Concurrency (ck_hs is single-producer, multi-consumer):
 *  - Writers (register, unregister, update, drop, and every scan) hold the
 *    instance's writer lock, one at a time.
 *  - Lookups take no lock: they run inside a ck_epoch read section on the
 *    calling thread's own record and do no atomic read-modify-write on
 *    shared memory.  The key's prepared hash goes to ck_hs as is (each
 *    entry keeps it, and ck_hs asks the entry for it when it grows), so a
 *    lookup by prepared key hashes nothing.
 *  - Entries are immutable, for readers, once published (their namespace
 *    links change under the writer lock, and readers never read them).
 *    An update publishes a new entry in the same slot (ck_hs_apply) and
 *    retires the old one; unregister retires.  Retired entries, and the
 *    maps ck_hs replaces when it grows (its free(p, n, defer = true)), are
 *    freed through ck_epoch only after every read section that could see
 *    them ended (the invariant: table.c).
 *  - A reader sees either no entry or one complete entry.  Metadata handed
 *    out is a reference taken inside the read section, so it outlives the
 *    entry's retirement.
 *  - Scans (list_all, count of a namespace, list_names, find_by_metadata,
 *    drop_namespace) run under the writer lock: one namespace's walk its
 *    list (namespaces.c), all namespaces' the table, which ck_hs cannot
 *    iterate while it changes.  Each one is therefore a snapshot at one
 *    instant between two writes; lookups carry on meanwhile, writers wait
 *    for the scan.
 *
 * Groups (duplicate keys) live in ckht-groups.c, under the same writer
 * lock and revision counter.
 *
 * Memory: an entry is one allocation holding its hash, namespace links,
 * owner (pid and start time packed in one word), times, revision and key
 * bytes ("ns\0name", which the compare callback checks), plus, in front
 * of it, the whole owner only when it does not pack and a metadata
 * pointer only when there is metadata.  ck_hs slots are 8 bytes (the entry's pointer) and
 * the table keeps its load at or below 1/2, so the table costs 16 to 32
 * bytes per entry; see the memory figures in health_check and stats.
 */
#include "ckht-internal.h"

/* Default and bounds for the initial_size option (entries).  The table
 * doubles as it fills, so a large start is only an optimisation; the
 * bound keeps a spec string (which may come from $PROCREG_BACKEND) from
 * asking for GiBs at open: 16 Mi entries is 256 MiB of slots. */
#define CKHT_DEFAULT_INITIAL 64
#define CKHT_MAX_INITIAL (UINT64_C(1) << 24)

static int ckht_not_found(GError **error, const procreg_key *key)
{
    /* A miss without a GError must not allocate. */
    if (error == NULL)
        return PROCREG_ENOTFOUND;
    return procreg_set_error(error, PROCREG_ENOTFOUND,
                             "no entry \"%s\" in namespace \"%s\"",
                             procreg_key_bytes(key) + key->ns_len + 1,
                             procreg_key_bytes(key));
}

/* ------------------------------------------------------------------------ */
/* Ops                                                                      */

static const procreg_backend_option ckht_options[] = {
    {"initial_size",
     "entries to size the table for at start (default 64); the table "
     "doubles as it fills"},
    {NULL, NULL},
};

static int ckht_init(const procreg_spec *spec, procreg_backend_host *host,
                     void **state, GError **error)
{
    uint64_t initial;
    uint64_t slots;
    ckht *self;
    int r;

    (void)host;
    r = procreg_spec_get_uint64(spec, "initial_size", CKHT_DEFAULT_INITIAL,
                                &initial, error);
    if (r < 0)
        return r;
    if (initial > CKHT_MAX_INITIAL)
        return procreg_set_error(error, PROCREG_EINVAL,
                                 "ckht: initial_size=%" G_GUINT64_FORMAT
                                 " is too large (at most %" G_GUINT64_FORMAT
                                 ")",
                                 initial, CKHT_MAX_INITIAL);
    /* ck_hs keeps its load at or below 1/2. */
    slots = initial * 2;
    if (slots < CKHT_MIN_SLOTS)
        slots = CKHT_MIN_SLOTS;

    self = aligned_alloc(_Alignof(ckht), sizeof(*self));
    if (self == NULL)
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ckht: out of memory");
    memset(self, 0, sizeof(*self));
    self->epoch = procreg_epoch_domain_new();
    if (self->epoch == NULL) {
        free(self);
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ckht: out of memory for an epoch record");
    }
    procreg_mutex_init(&self->lock);
    procreg_slab_init(&self->slab);
    atomic_init(&self->n_entries, 0);
    self->groups = procreg_ckht_groups_new(self);
    if (self->groups == NULL) {
        procreg_epoch_domain_free(self->epoch);
        free(self);
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ckht: out of memory for the groups");
    }

    if (!procreg_ckht_table_init(self, slots)) {
        procreg_ckht_groups_free(self->groups);
        procreg_epoch_domain_free(self->epoch);
        free(self);
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ckht: out of memory for a table of %"
                                 G_GUINT64_FORMAT " slots", slots);
    }
    *state = self;
    return 0;
}

void (*procreg_ckht_test_destroy_hook)(void);

static void ckht_destroy(void *state)
{
    ckht *self = state;

    if (self == NULL)
        return;
    procreg_ckht_groups_free(self->groups);
    procreg_ckht_table_destroy(self);
    if (G_UNLIKELY(procreg_ckht_test_destroy_hook != NULL))
        procreg_ckht_test_destroy_hook();
    /* Retired entries may still wait for readers (of any instance: the
     * epoch is shared): the domain's barrier releases them into the slab,
     * so the slab goes after it. */
    procreg_epoch_domain_free(self->epoch);
    procreg_slab_destroy(&self->slab); /* every entry released above */
    free(self);
}

static int ckht_register(void *state, const procreg_key *key,
                         const procreg_record *record,
                         procreg_entry *current, GError **error)
{
    ckht *self = state;
    ckht *previous;
    ckht_entry *e, *fresh;
    size_t fresh_bytes;
    int r = 0;

    /* Built before the lock is taken, so that the critical section is the
     * probe and the publish; its revision is set under the lock, before
     * the publish makes it visible. */
    fresh = procreg_ckht_entry_new(&self->slab, key, &record->owner, record->metadata,
                                   record->registered_at, 0);
    if (fresh == NULL)
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ckht: out of memory");
    fresh_bytes = procreg_ckht_entry_bytes(fresh);
    previous = procreg_ckht_write_begin(self);
    fresh->revision = self->revision + 1;
    /* One probe: it finds the present entry or inserts. */
    if (!procreg_ckht_publish(self, key, fresh, false, &e)) {
        r = procreg_set_error(error, PROCREG_ENOMEM,
                              "ckht: out of memory growing the table");
        goto out;
    }
    if (e != NULL) {
        procreg_owner current_owner;

        if (current != NULL)
            procreg_ckht_entry_fill(current, e, false);
        ckht_entry_owner(e, &current_owner);
        r = procreg_set_error(error, PROCREG_EEXISTS,
                              "\"%.*s\" is already registered in namespace "
                              "\"%s\" (owner pid %d)",
                              ckht_entry_name_len(e), ckht_entry_name(e),
                              e->key, (int)current_owner.pid);
        goto out;
    }
    self->revision++;
    self->entry_bytes += fresh_bytes;
    atomic_store_explicit(&self->n_entries,
                          atomic_load_explicit(&self->n_entries,
                                               memory_order_relaxed) + 1,
                          memory_order_relaxed);
    if (current != NULL)
        procreg_ckht_entry_fill(current, fresh, false);
    fresh = NULL;
out:
    procreg_ckht_write_end(self, previous);
    if (fresh != NULL) /* never published: no reader has seen it */
        procreg_ckht_entry_free(fresh);
    return r;
}

static int ckht_lookup(void *state, const procreg_key *key,
                       procreg_owner *out)
{
    ckht *self = state;
    ck_epoch_record_t *record = procreg_epoch_read_begin();
    const ckht_entry *e;

    if (G_UNLIKELY(record == NULL))
        return PROCREG_EBACKEND;
    e = procreg_ckht_get(self, key);
    if (e == NULL) {
        procreg_epoch_read_end(record);
        return PROCREG_ENOTFOUND;
    }
    ckht_entry_owner(e, out);
    procreg_epoch_read_end(record);
    return 0;
}

static int ckht_lookup_entry(void *state, const procreg_key *key,
                             procreg_entry *out, GError **error)
{
    ckht *self = state;
    ck_epoch_record_t *record = procreg_epoch_read_begin();
    const ckht_entry *e;

    if (G_UNLIKELY(record == NULL))
        return procreg_set_error(error, PROCREG_ENOMEM,
                                 "ckht: out of memory for an epoch record");
    e = procreg_ckht_get(self, key);
    if (e == NULL) {
        procreg_epoch_read_end(record);
        return ckht_not_found(error, key);
    }
    /* The metadata reference is taken while the entry cannot be freed. */
    procreg_ckht_entry_fill(out, e, false);
    procreg_epoch_read_end(record);
    return 0;
}

static int ckht_unregister(void *state, const procreg_key *key,
                           uint64_t if_revision, procreg_entry *removed,
                           GError **error)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    ckht_entry *e;
    int r = 0;

    /* Check the revision before removing; without one, remove directly
     * (one probe instead of two). */
    if (if_revision != 0) {
        e = procreg_ckht_get(self, key);
        if (e == NULL) {
            r = ckht_not_found(error, key);
            goto out;
        }
        if (e->revision != if_revision) {
            r = procreg_set_error(error, PROCREG_ECONFLICT,
                                  "\"%.*s\" in namespace \"%s\" is at "
                                  "revision %" G_GUINT64_FORMAT ", not %"
                                  G_GUINT64_FORMAT,
                                  ckht_entry_name_len(e), ckht_entry_name(e),
                                  e->key, e->revision, if_revision);
            goto out;
        }
    }
    e = procreg_ckht_unpublish(self, key);
    if (e == NULL) {
        r = ckht_not_found(error, key);
        goto out;
    }
    if (removed != NULL)
        procreg_ckht_entry_fill(removed, e, false);
    procreg_ckht_retire(self, e);
out:
    procreg_ckht_write_end(self, previous);
    return r;
}

/* The owner rule's check and the removal in one probe (the
 * unregister_owned slot): under the writer lock, like every write, so no
 * other write of the key comes between them. */
static int ckht_unregister_owned(void *state, const procreg_key *key,
                                 const procreg_owner *owner,
                                 procreg_entry *removed)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    ckht_entry *kept;
    ckht_entry *e = procreg_ckht_unpublish_owned(self, key, owner, &kept);
    int r = 0;

    if (e != NULL) {
        if (removed != NULL)
            procreg_ckht_entry_fill(removed, e, false);
        procreg_ckht_retire(self, e);
    } else {
        r = kept != NULL ? PROCREG_EPERM : PROCREG_ENOTFOUND;
    }
    procreg_ckht_write_end(self, previous);
    return r;
}

static int ckht_update_metadata(void *state, const procreg_key *key,
                                GVariant *metadata, uint64_t if_revision,
                                procreg_entry *updated, GError **error)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    ckht_entry *e, *next, *old = NULL;
    procreg_owner owner;
    int r = 0;

    e = procreg_ckht_get(self, key);
    if (e == NULL) {
        r = ckht_not_found(error, key);
        goto out;
    }
    if (if_revision != 0 && e->revision != if_revision) {
        r = procreg_set_error(error, PROCREG_ECONFLICT,
                              "\"%.*s\" in namespace \"%s\" is at "
                              "revision %" G_GUINT64_FORMAT ", not %"
                              G_GUINT64_FORMAT,
                              ckht_entry_name_len(e), ckht_entry_name(e),
                              e->key, e->revision, if_revision);
        goto out;
    }
    ckht_entry_owner(e, &owner);
    next = procreg_ckht_entry_new(&self->slab, key, &owner, metadata, e->registered_at,
                                  self->revision + 1);
    if (next == NULL) {
        r = procreg_set_error(error, PROCREG_ENOMEM, "ckht: out of memory");
        goto out;
    }
    if (!procreg_ckht_publish(self, key, next, true, &old)) {
        procreg_ckht_entry_free(next);
        r = procreg_set_error(error, PROCREG_ENOMEM,
                              "ckht: out of memory growing the table");
        goto out;
    }
    self->revision++;
    self->entry_bytes += procreg_ckht_entry_bytes(next);
    if (old != NULL) {
        size_t bytes = procreg_ckht_entry_bytes(old);

        self->entry_bytes -= bytes;
        procreg_epoch_retire(self->epoch, old, procreg_ckht_entry_free, bytes);
    }
    if (updated != NULL)
        procreg_ckht_entry_fill(updated, next, false);
out:
    procreg_ckht_write_end(self, previous);
    return r;
}

const procreg_backend_ops procreg_ckht_backend_ops = {
    .version = PROCREG_BACKEND_VERSION,
    .name = "ckht",
    .description = "In-process hash table (Concurrency Kit ck_hs): lookups "
                   "take no lock, one writer at a time",
    .caps = PROCREG_CAP_THREADSAFE | PROCREG_CAP_LOCKFREE_READS |
            PROCREG_CAP_GROUPS,
    .options = ckht_options,
    .init = ckht_init,
    .destroy = ckht_destroy,
    .register_entry = ckht_register,
    .lookup = ckht_lookup,
    .lookup_entry = ckht_lookup_entry,
    .unregister = ckht_unregister,
    .list_all = procreg_ckht_list_all,
    .update_metadata = ckht_update_metadata,
    .health_check = procreg_ckht_health_check,
    .count = procreg_ckht_count,
    .list_names = procreg_ckht_list_names,
    .drop_namespace = procreg_ckht_drop_namespace,
    .find_by_metadata = procreg_ckht_find_by_metadata,
    .memory_usage = procreg_ckht_memory_usage,
    .stats = procreg_ckht_stats,
    .count_namespaces = procreg_ckht_count_namespaces,
    .group_join = procreg_ckht_group_join,
    .group_leave = procreg_ckht_group_leave,
    .group_members = procreg_ckht_group_members,
    .group_list_all = procreg_ckht_group_list_all,
    .group_count = procreg_ckht_group_count,
    .group_list = procreg_ckht_group_list,
    .group_dispatch = procreg_ckht_group_dispatch,
    .group_pick = procreg_ckht_group_pick,
    .group_member = procreg_ckht_group_member,
    .unregister_owned = ckht_unregister_owned,
};
