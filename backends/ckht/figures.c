/*
 * ckht's figures: memory in use, health, and the backend's statistics.
 */
#include "ckht-internal.h"

typedef struct {
    size_t entries;
    size_t capacity;
    size_t table_bytes;
    size_t entry_bytes;
    size_t entry_free_bytes; /* the slab's free slots */
    size_t entry_slab_bytes; /* the slab's chunks, mapped */
    size_t group_bytes;
    size_t total_bytes;
    procreg_epoch_stats epoch;
} ckht_figures;

static void ckht_get_figures(ckht *self, ckht_figures *f)
{
    /* Reclaim what readers let go of, so the figures are current. */
    procreg_epoch_flush(self->epoch);
    procreg_epoch_get_stats(self->epoch, &f->epoch);
    f->entries = atomic_load_explicit(&self->n_entries, memory_order_relaxed);
    f->capacity = procreg_ckht_capacity(self);
    f->table_bytes = sizeof(*self->hs) + self->table_bytes;
    f->entry_bytes = self->entry_bytes;
    procreg_slab_figures(&self->slab, &f->entry_slab_bytes,
                         &f->entry_free_bytes);
    f->group_bytes = procreg_ckht_groups_bytes(self->groups);
    f->total_bytes = sizeof(*self) + f->table_bytes + f->entry_bytes +
                     f->entry_free_bytes + self->ns_bytes + f->group_bytes +
                     f->epoch.pending_bytes + f->epoch.overhead_bytes;
}

int procreg_ckht_memory_usage(void *state, size_t *bytes)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    ckht_figures f;

    ckht_get_figures(self, &f);
    procreg_ckht_write_end(self, previous);
    *bytes = f.total_bytes;
    return 0;
}

static void ckht_add_figures(GVariantDict *d, const ckht_figures *f)
{
    g_variant_dict_insert(d, "entries", "t", (guint64)f->entries);
    g_variant_dict_insert(d, "table_capacity", "t", (guint64)f->capacity);
    g_variant_dict_insert(d, "load_factor", "d",
                          f->capacity ? (double)f->entries / (double)f->capacity
                                      : 0.0);
    g_variant_dict_insert(d, "table_bytes", "t", (guint64)f->table_bytes);
    g_variant_dict_insert(d, "entry_bytes", "t", (guint64)f->entry_bytes);
    g_variant_dict_insert(d, "entry_free_bytes", "t",
                          (guint64)f->entry_free_bytes);
    g_variant_dict_insert(d, "entry_slab_bytes", "t",
                          (guint64)f->entry_slab_bytes);
    g_variant_dict_insert(d, "group_bytes", "t", (guint64)f->group_bytes);
    g_variant_dict_insert(d, "memory_bytes", "t", (guint64)f->total_bytes);
    g_variant_dict_insert(d, "epoch_pending", "t", (guint64)f->epoch.pending);
    g_variant_dict_insert(d, "epoch_pending_bytes", "t",
                          (guint64)f->epoch.pending_bytes);
    g_variant_dict_insert(d, "epoch_reclaimed", "t",
                          (guint64)f->epoch.reclaimed);
    g_variant_dict_insert(d, "epoch_records", "t",
                          (guint64)procreg_epoch_records_allocated());
    g_variant_dict_insert(d, "epoch_records_in_use", "t",
                          (guint64)procreg_epoch_records_in_use());
}

int procreg_ckht_health_check(void *state, GVariantDict *details,
                              char **message)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    uint64_t table_count = ck_hs_count(self->hs);
    ckht_figures f;
    int status = PROCREG_HEALTH_OK;

    ckht_get_figures(self, &f);
    procreg_ckht_write_end(self, previous);
    ckht_add_figures(details, &f);

    if (table_count != f.entries) {
        status = PROCREG_HEALTH_FAILED;
        *message = g_strdup_printf("ckht: the table holds %" G_GUINT64_FORMAT
                                   " entries but %zu were registered",
                                   table_count, f.entries);
    } else if (f.epoch.pending > f.entries + CKHT_PENDING_DEGRADED) {
        status = PROCREG_HEALTH_DEGRADED;
        *message = g_strdup_printf("ckht: %zu retired objects wait for "
                                   "reclamation: a reader may be stalled "
                                   "inside a lookup", f.epoch.pending);
    } else {
        *message = g_strdup_printf("ckht: %zu entries, %zu slots, %zu "
                                   "retired objects pending",
                                   f.entries, f.capacity, f.epoch.pending);
    }
    return status;
}

void procreg_ckht_stats(void *state, GVariantDict *out)
{
    ckht *self = state;
    ckht *previous = procreg_ckht_write_begin(self);
    struct ck_hs_stat st;
    ckht_figures f;
    uint64_t revision, grows, rebuilds;

    ckht_get_figures(self, &f);
    ck_hs_stat(self->hs, &st);
    procreg_ckht_groups_stats(self->groups, out);
    revision = self->revision;
    grows = self->grows;
    rebuilds = self->rebuilds;
    procreg_ckht_write_end(self, previous);
    ckht_add_figures(out, &f);
    g_variant_dict_insert(out, "probe_maximum", "t",
                          (guint64)st.probe_maximum);
    g_variant_dict_insert(out, "table_grows", "t", (guint64)grows);
    g_variant_dict_insert(out, "table_rebuilds", "t", (guint64)rebuilds);
    g_variant_dict_insert(out, "revision", "t", (guint64)revision);
}

