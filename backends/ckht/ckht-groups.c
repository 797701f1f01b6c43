/*
 * ckht's groups: a ck_ht of groups by key ("ns\0group"), each holding its
 * members in a procreg_grp_set (backends/groups-common) in EPOCH mode.
 *
 * Concurrency, as for ckht's entries:
 *  - Writers (join, leave), scans of every group (group_list,
 *    group_list_all) and lookups by member id (group_member: the id index
 *    is the writer's) hold the instance's writer lock, shared with the
 *    entries; joins take member ids from its one revision counter.
 *  - Readers of one group (members, count, pick, dispatch) take no lock:
 *    inside a ck_epoch read section they find the group with one
 *    ck_ht_get_spmc and iterate its published member array (member-set.h,
 *    R1).  The writer changes that array in place (it appends a member
 *    or empties a slot with one atomic store) and retires through the
 *    epoch what it replaces: the metadata of members that left, arrays it
 *    outgrew or compacted, groups that emptied (R2).  A dispatch thus
 *    never blocks a writer and a writer never blocks a dispatch; what the
 *    dispatch sees is stated in member-set.h.
 *  - A dispatch keeps its read section across the callback, which may
 *    call the registry, this group's writes included: writers retire what
 *    they replace instead of waiting for readers, so a callback's join
 *    does not wait for its own section.  (The one exception is
 *    procreg_epoch_retire() out of memory for its bookkeeping, which
 *    waits for a grace period: a callback's write would then wait for
 *    itself.)  A callback that stays long delays reclamation (memory),
 *    never a writer.
 *  - The group table sheds its tombstones as ckht's entry table does
 *    (procreg_ck_ht_rebuild()), counting group removals.
 */
#include "ckht-internal.h"

#include "../groups-common/member-set.h"

#include <ck_pr.h>
#include <stdlib.h>
#include <string.h>

#define CKG_INITIAL_SLOTS 64

typedef struct {
    procreg_grp_set set;
    uint16_t ns_len, name_len;
    char key[]; /* "ns\0group\0" */
} ckg_group;

struct ckht_groups {
    ck_ht_t *ht; /* readers load it inside their section */
    ckht *self;
    procreg_grp_index *ix;
    size_t table_bytes; /* ck_ht tables not retired */
    size_t map_size;    /* the newest table's allocation */
    size_t group_bytes;
    size_t removals; /* groups removed since the last rebuild */
    uint64_t rebuilds;
};

/* The group table's ck_malloc has no context: the groups being written by
 * this thread are found here (set around each write). */
static _Thread_local ckht_groups *ckg_writer
    __attribute__((tls_model("initial-exec")));

static void *ckg_ht_malloc(size_t size)
{
    ckht_groups *g = ckg_writer;
    if (g == NULL) {
        g_critical("ckht groups: ck_ht allocated outside a write");
        return NULL;
    }
    void *p = malloc(size);
    if (p != NULL) {
        g->table_bytes += size;
        g->map_size = size;
    }
    return p;
}

static void ckg_ht_free(void *p, size_t size, bool defer)
{
    ckht_groups *g = ckg_writer;
    (void)defer; /* always deferred: see procreg_ck_ht_free_table() */
    if (p == NULL)
        return;
    if (g == NULL) {
        g_critical("ckht groups: ck_ht freed memory outside a write");
        return;
    }
    g->table_bytes -= size;
    procreg_ck_ht_free_table(g->self->epoch, p, size);
}

static struct ck_malloc ckg_allocator = {
    .malloc = ckg_ht_malloc,
    .realloc = NULL,
    .free = ckg_ht_free,
};

/* member-set's EPOCH reclamation: through the instance's epoch. */
static void ckg_retire(void *p, void (*free_fn)(void *), size_t bytes,
                       void *ctx)
{
    ckht *self = ctx;
    procreg_epoch_retire(self->epoch, p, free_fn, bytes);
}

/* ---- the writer's section ---- */

static ckht_groups *write_begin(ckht *self)
{
    procreg_mutex_lock(&self->lock);
    ckg_writer = self->groups;
    return self->groups;
}

static void write_end(ckht *self)
{
    procreg_epoch_tick(self->epoch);
    ckg_writer = NULL;
    procreg_mutex_unlock(&self->lock);
}

ckht_groups *procreg_ckht_groups_new(ckht *self)
{
    ckht_groups *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->self = self;
    g->ht = malloc(sizeof *g->ht);
    ckg_writer = g;
    bool ok = g->ht != NULL &&
              ck_ht_init(g->ht, CK_HT_MODE_BYTESTRING, procreg_ck_ht_hash,
                         &ckg_allocator, CKG_INITIAL_SLOTS, 0);
    ckg_writer = NULL;
    if (!ok) {
        free(g->ht);
        free(g);
        return NULL;
    }
    g->ix = procreg_grp_index_new(PROCREG_GRP_EPOCH, ckg_retire, self);
    return g;
}

void procreg_ckht_groups_free(ckht_groups *g)
{
    if (g == NULL)
        return;
    /* No call on the instance runs any more: everything goes now. */
    ckht_groups *previous = ckg_writer;
    ckg_writer = g;
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ck_ht_entry_t *slot;
    while (ck_ht_next(g->ht, &it, &slot)) {
        ckg_group *grp = ck_ht_entry_value(slot);
        procreg_grp_set_destroy(&grp->set);
        free(grp);
    }
    ck_ht_destroy(g->ht);
    free(g->ht);
    ckg_writer = previous;
    procreg_grp_index_free(g->ix);
    free(g);
}

size_t procreg_ckht_groups_bytes(const ckht_groups *g)
{
    return sizeof *g + sizeof *g->ht + g->table_bytes + g->group_bytes +
           procreg_grp_index_bytes(g->ix);
}

void procreg_ckht_groups_stats(const ckht_groups *g, GVariantDict *out)
{
    g_variant_dict_insert(out, "groups", "t", (guint64)ck_ht_count(g->ht));
    g_variant_dict_insert(out, "group_members", "t",
                          (guint64)procreg_grp_index_members(g->ix));
    g_variant_dict_insert(out, "group_table_rebuilds", "t",
                          (guint64)g->rebuilds);
}

/* ---- finding a group ---- */

/* The group of @key, or NULL: readers inside a read section, or the
 * writer. */
static ckg_group *group_get(ckht_groups *g, const procreg_key *key)
{
    ck_ht_entry_t slot;
    ck_ht_hash_t h = {.value = key->hash};
    ck_ht_entry_key_set(&slot, procreg_key_bytes(key),
                        (uint16_t)procreg_key_size(key));
    ck_ht_t *ht = ck_pr_load_ptr(&g->ht);
    /* Pairs with the release in procreg_ck_ht_rebuild(). */
    PROCREG_TSAN_ACQUIRE(ht);
    PROCREG_TSAN_IGNORE_READS_BEGIN();
    bool found = ck_ht_get_spmc(ht, h, &slot);
    PROCREG_TSAN_IGNORE_READS_END();
    if (!found)
        return NULL;
    ckg_group *grp = ck_ht_entry_value(&slot);
    ck_pr_fence_load_depends();
    /* Pairs with the release in publish(). */
    PROCREG_TSAN_ACQUIRE(grp);
    return grp;
}

static size_t group_size(const procreg_key *key)
{
    return sizeof(ckg_group) + procreg_key_size(key) + 1;
}

static ckg_group *group_new(const procreg_key *key)
{
    ckg_group *grp = calloc(1, group_size(key));
    if (grp == NULL)
        return NULL;
    grp->ns_len = key->ns_len;
    grp->name_len = key->name_len;
    memcpy(grp->key, procreg_key_bytes(key), procreg_key_size(key));
    return grp;
}

static bool publish(ckht_groups *g, const procreg_key *key, ckg_group *grp)
{
    ck_ht_entry_t slot;
    ck_ht_hash_t h = {.value = key->hash};
    ck_ht_entry_set(&slot, h, grp->key, (uint16_t)procreg_key_size(key), grp);
    /* The group (and the member array in it) before the slot. */
    PROCREG_TSAN_RELEASE(grp);
    ck_pr_fence_store();
    if (!ck_ht_put_spmc(g->ht, h, &slot))
        return false;
    g->group_bytes += group_size(key);
    return true;
}

/* @grp has no member left: unpublish it and retire it and its array. */
static void group_remove(ckht_groups *g, ckg_group *grp,
                         const procreg_key *key)
{
    ck_ht_entry_t slot;
    ck_ht_hash_t h = {.value = key->hash};
    ck_ht_entry_key_set(&slot, grp->key, (uint16_t)procreg_key_size(key));
    ck_ht_remove_spmc(g->ht, h, &slot);
    procreg_grp_set_retire(g->ix, &grp->set);
    g->group_bytes -= group_size(key);
    procreg_epoch_retire(g->self->epoch, grp, free, group_size(key));
    /* Tombstones: as procreg_ckht_retire() does for entries. */
    size_t capacity = procreg_ck_ht_slots(g->map_size);
    if (++g->removals > capacity / 2 &&
        procreg_ck_ht_rebuild(&g->ht, capacity, &ckg_allocator,
                              g->self->epoch)) {
        g->removals = 0;
        g->rebuilds++;
    }
}

/* ---- writes ---- */

int procreg_ckht_group_join(void *state, const procreg_key *key,
                            const procreg_record *record,
                            procreg_member *joined, GError **error)
{
    ckht *self = state;
    ckht_groups *g = write_begin(self);
    int rc = 0;
    ckg_group *grp = group_get(g, key);
    bool fresh = grp == NULL;
    if (fresh)
        grp = group_new(key);
    procreg_grp_member *m =
        grp ? procreg_grp_add(g->ix, &grp->set, record, self->revision + 1)
            : NULL;
    if (m == NULL) {
        if (fresh)
            free(grp);
        rc = procreg_set_error(error, PROCREG_ENOMEM, "ckht: out of memory");
    } else if (fresh && !publish(g, key, grp)) {
        /* Never seen by a reader: take the member back out. */
        procreg_grp_remove(g->ix, &grp->set, m);
        procreg_grp_set_retire(g->ix, &grp->set);
        free(grp);
        rc = procreg_set_error(error, PROCREG_ENOMEM,
                               "ckht: out of memory growing the group table");
    } else {
        self->revision++;
        if (joined != NULL)
            procreg_grp_member_copy(m, joined);
    }
    write_end(self);
    return rc;
}

int procreg_ckht_group_leave(void *state, const procreg_key *key,
                             uint64_t member_id, const procreg_owner *owner,
                             procreg_event_reason reason, GArray *removed,
                             GError **error)
{
    ckht *self = state;
    ckht_groups *g = write_begin(self);
    (void)reason; /* the core reports it: ckht orders no events */
    ckg_group *grp = group_get(g, key);
    /* EPOCH: removals never fail. */
    int rc = procreg_grp_leave(g->ix, grp ? &grp->set : NULL, key, member_id,
                               owner, removed, error);
    if (rc > 0)
        self->revision++; /* a removal is a change too */
    if (grp != NULL && procreg_grp_live(&grp->set) == 0)
        group_remove(g, grp, key);
    write_end(self);
    return rc;
}

/* ---- reads of one group: lock-free ---- */

/* Enter a read section and find the group of @key (*@grp NULL when it is
 * absent); false, with @error set, when this thread can have no epoch
 * record (no section was entered). */
static bool read_begin(ckht *self, const procreg_key *key,
                       ck_epoch_record_t **record, ckg_group **grp,
                       GError **error)
{
    *record = procreg_epoch_read_begin();
    if (G_UNLIKELY(*record == NULL)) {
        procreg_set_error(error, PROCREG_ENOMEM,
                          "ckht: out of memory for an epoch record");
        return false;
    }
    *grp = group_get(self->groups, key);
    return true;
}

int procreg_ckht_group_members(void *state, const procreg_key *key,
                               GArray *out, GError **error)
{
    ck_epoch_record_t *record;
    ckg_group *grp;
    if (!read_begin(state, key, &record, &grp, error))
        return PROCREG_ENOMEM;
    if (grp != NULL)
        procreg_grp_set_append(&grp->set, out);
    procreg_epoch_read_end(record);
    return 0;
}

int procreg_ckht_group_count(void *state, const procreg_key *key,
                             size_t *out, GError **error)
{
    ck_epoch_record_t *record;
    ckg_group *grp;
    if (!read_begin(state, key, &record, &grp, error))
        return PROCREG_ENOMEM;
    *out = grp != NULL ? procreg_grp_live(&grp->set) : 0;
    procreg_epoch_read_end(record);
    return 0;
}

int procreg_ckht_group_pick(void *state, const procreg_key *key,
                            bool round_robin, uint64_t arg,
                            procreg_member *out, GError **error)
{
    ck_epoch_record_t *record;
    ckg_group *grp;
    if (!read_begin(state, key, &record, &grp, error))
        return PROCREG_ENOMEM;
    const procreg_grp_array *a = grp ? procreg_grp_load(&grp->set) : NULL;
    bool found = a != NULL && procreg_grp_array_pick(a, round_robin, arg, out);
    procreg_epoch_read_end(record);
    return found ? 0 : PROCREG_ENOTFOUND;
}

int procreg_ckht_group_dispatch(void *state, const procreg_key *key,
                                procreg_member_fn fn, gpointer user_data,
                                size_t *visited, GError **error)
{
    ck_epoch_record_t *record;
    ckg_group *grp;
    if (!read_begin(state, key, &record, &grp, error))
        return PROCREG_ENOMEM;
    const procreg_grp_array *a = grp ? procreg_grp_load(&grp->set) : NULL;
    *visited = a ? procreg_grp_array_foreach(a, fn, user_data) : 0;
    procreg_epoch_read_end(record);
    return 0;
}

/* ---- under the writer lock: the id index, and scans ---- */

int procreg_ckht_group_member(void *state, const procreg_key *key,
                              uint64_t member_id, procreg_member *out,
                              GError **error)
{
    ckht *self = state;
    ckht_groups *g = write_begin(self);
    ckg_group *grp = group_get(g, key);
    procreg_grp_member *m = grp ? procreg_grp_find(g->ix, member_id) : NULL;
    bool found = m != NULL && procreg_grp_in_set(m, &grp->set);
    if (found)
        procreg_grp_member_copy(m, out);
    write_end(self);
    return found ? 0 : PROCREG_ENOTFOUND;
}


static bool in_ns(const ckg_group *grp, const char *ns)
{
    return ns == NULL || (strncmp(grp->key, ns, grp->ns_len) == 0 &&
                          ns[grp->ns_len] == '\0');
}

int procreg_ckht_group_list_all(void *state, const char *ns, GArray *out,
                                GError **error)
{
    ckht *self = state;
    ckht_groups *g = write_begin(self);
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ck_ht_entry_t *slot;
    while (ck_ht_next(g->ht, &it, &slot)) {
        ckg_group *grp = ck_ht_entry_value(slot);
        if (!in_ns(grp, ns))
            continue;
        guint from = out->len;
        procreg_grp_set_append(&grp->set, out);
        for (guint i = from; i < out->len; i++) {
            procreg_member *m = &g_array_index(out, procreg_member, i);
            m->ns = g_strdup(grp->key);
            m->group = g_strdup(grp->key + grp->ns_len + 1);
        }
    }
    write_end(self);
    return 0;
}

int procreg_ckht_group_list(void *state, const char *ns, GArray *out,
                            GError **error)
{
    ckht *self = state;
    ckht_groups *g = write_begin(self);
    ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
    ck_ht_entry_t *slot;
    while (ck_ht_next(g->ht, &it, &slot)) {
        ckg_group *grp = ck_ht_entry_value(slot);
        if (!in_ns(grp, ns))
            continue;
        procreg_group_info info = {g_strdup(grp->key),
                                   g_strdup(grp->key + grp->ns_len + 1),
                                   procreg_grp_live(&grp->set)};
        g_array_append_val(out, info);
    }
    write_end(self);
    return 0;
}
