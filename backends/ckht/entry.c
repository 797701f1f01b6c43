/*
 * ckht entries: one allocation each, immutable once published, holding
 * the key's hash and bytes, the owner (packed), times and revision, with
 * the whole owner in front only when it does not pack and a metadata
 * pointer in front only when there is metadata; and the copies of them
 * that callers own.  Their memory comes from the instance's slab
 * (backends/slab).
 */
#include "ckht-internal.h"


ckht_entry *procreg_ckht_entry_new(procreg_slab *slab, const procreg_key *key,
                                   const procreg_owner *owner,
                                   GVariant *metadata, int64_t registered_at,
                                   uint64_t revision)
{
    size_t key_size = procreg_key_size(key);
    unsigned int flags = (procreg_owner_packs(owner) ? 0 : CKHT_OWNER_IN_FRONT) |
                         (metadata ? CKHT_HAS_METADATA : 0);
    size_t pre = flags * sizeof(void *);
    char *base = procreg_slab_alloc(slab, pre + offsetof(ckht_entry, key) +
                                              key_size);
    ckht_entry *e;

    if (base == NULL)
        return NULL;
    e = (ckht_entry *)(void *)(base + pre);
    e->hash = ckht_hs_hash(key);
    e->revision = revision;
    e->registered_at = registered_at;
    e->owner = procreg_owner_pack(owner);
    if (flags & CKHT_OWNER_IN_FRONT)
        *(procreg_owner *)(void *)base = *owner;
    e->key_size = (uint16_t)key_size;
    e->flags = (uint8_t)flags;
    if (metadata != NULL) {
        /* Serialise it now, in the writer: a GVariant built as a tree is
         * otherwise serialised by the first reader that looks inside it,
         * under a lock inside the GVariant that readers would contend on
         * (and that ThreadSanitizer cannot see). */
        (void)g_variant_get_data(metadata);
        ((GVariant **)(void *)e)[-1] = g_variant_ref(metadata);
    }
    memcpy(e->key, procreg_key_bytes(key), key_size);
    return e;
}

const procreg_key *procreg_ckht_entry_key(const ckht_entry *e,
                                          ckht_stack_key *buf)
{
    size_t size = ckht_entry_key_size(e);
    size_t ns_len = strlen(e->key);

    buf->key.refcount = 0;
    buf->key.ns_len = (uint16_t)ns_len;
    buf->key.name_len = (uint16_t)(size - ns_len - 1);
    memcpy(buf->key.bytes, e->key, size);
    buf->key.bytes[size] = '\0';
    buf->key.hash = procreg_key_hash(buf->key.bytes, size);
    return &buf->key;
}

/* procreg_epoch_free_fn for retired entries (and destroy). */
void procreg_ckht_entry_free(void *p)
{
    ckht_entry *e = p;
    GVariant *metadata = ckht_entry_metadata(e);

    if (metadata != NULL)
        g_variant_unref(metadata);
    procreg_slab_release(ckht_entry_base(e), ckht_entry_alloc_size(e));
}

/* procreg_ckht_entry_fill() with names. */
void procreg_ckht_entry_fill_names(procreg_entry *out, const ckht_entry *e)
{
    procreg_ckht_entry_fill(out, e, false);
    out->ns = g_strdup(e->key);
    out->name = g_strndup(ckht_entry_name(e), (gsize)ckht_entry_name_len(e));
}

void procreg_ckht_entry_append(GArray *out, const ckht_entry *e)
{
    procreg_entry copy;

    procreg_ckht_entry_fill_names(&copy, e);
    g_array_append_val(out, copy);
}
