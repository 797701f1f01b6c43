/*
 * ckht's namespace index: per namespace, a circular list of its live
 * entries, so that listing, counting, finding in or dropping one
 * namespace costs what the namespace holds, not what the table holds.
 *
 * Invariant: under the writer lock, every published entry is on exactly
 * the list of its namespace, and a namespace is in `namespaces` exactly
 * while its list is not empty.  The links live in the entries but only
 * writers (holding the lock) read or change them; lookups never do, so
 * an entry stays immutable for readers while its neighbours come and go.
 * An entry leaves its list when it is unpublished (procreg_ckht_retire)
 * or replaced (procreg_ckht_publish), before the epoch may free it.
 */
#include "ckht-internal.h"

struct ckht_ns {
    ckht_link head; /* sentinel: the list is head.next .. head.prev */
    char name[];    /* the key of `namespaces` */
};

static void ckht_ns_free(gpointer p)
{
    free(p);
}

void procreg_ckht_ns_init(ckht *self)
{
    /* The names are the structs' own bytes: freed with the value. */
    self->namespaces =
        g_hash_table_new_full(g_str_hash, g_str_equal, NULL, ckht_ns_free);
}

void procreg_ckht_ns_destroy(ckht *self)
{
    g_hash_table_unref(self->namespaces);
}

ckht_ns *procreg_ckht_ns_find(ckht *self, const char *ns)
{
    ckht_ns *last = self->last_ns;

    /* Writes come in runs on one namespace: skip the hash then. */
    if (last != NULL && strcmp(last->name, ns) == 0)
        return last;
    return g_hash_table_lookup(self->namespaces, ns);
}

ckht_entry *procreg_ckht_ns_first(ckht_ns *ns)
{
    return ns->head.next == &ns->head ? NULL
                                      : ckht_entry_of_link(ns->head.next);
}

ckht_entry *procreg_ckht_ns_next(ckht_ns *ns, ckht_entry *e)
{
    return e->ns_link.next == &ns->head ? NULL
                                        : ckht_entry_of_link(e->ns_link.next);
}

bool procreg_ckht_ns_link(ckht *self, ckht_entry *e)
{
    ckht_ns *ns = procreg_ckht_ns_find(self, e->key);

    if (ns == NULL) {
        size_t name_size = strlen(e->key) + 1;

        ns = malloc(sizeof(*ns) + name_size);
        if (ns == NULL)
            return false;
        memcpy(ns->name, e->key, name_size);
        ns->head.next = ns->head.prev = &ns->head;
        g_hash_table_insert(self->namespaces, ns->name, ns);
        self->ns_bytes += sizeof(*ns) + name_size;
    }
    self->last_ns = ns;
    e->ns_link.prev = &ns->head;
    e->ns_link.next = ns->head.next;
    ns->head.next->prev = &e->ns_link;
    ns->head.next = &e->ns_link;
    return true;
}

void procreg_ckht_ns_unlink(ckht *self, ckht_entry *e)
{
    ckht_link *prev = e->ns_link.prev, *next = e->ns_link.next;

    prev->next = next;
    next->prev = prev;
    if (prev == next) {
        /* Only the sentinel is left: the namespace is empty. */
        ckht_ns *ns = (ckht_ns *)(void *)((char *)prev -
                                          offsetof(ckht_ns, head));

        if (self->last_ns == ns)
            self->last_ns = NULL;
        self->ns_bytes -= sizeof(*ns) + strlen(ns->name) + 1;
        g_hash_table_remove(self->namespaces, ns->name);
    }
}

void procreg_ckht_ns_replace(ckht_entry *old, ckht_entry *e)
{
    e->ns_link = old->ns_link;
    e->ns_link.prev->next = &e->ns_link;
    e->ns_link.next->prev = &e->ns_link;
}
