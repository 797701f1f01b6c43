/*
 * History: positions and procreg_subscribe_from().
 *
 * A registry's history comes from one of two places, chosen at open:
 *  - the backend's, when it keeps one (the version-4 history slots, with
 *    PROCREG_CAP_ORDERED_EVENTS): lmdb's change log, etcd's revisions.
 *    Positions are the backend's and mean the same in every process;
 *  - the registry's own otherwise: events.c keeps the latest events it
 *    numbered in a ring, positions being their seq.
 * This file holds the first and the public calls; the catch-up of a new
 * subscription (history, then live events, without gap or repeat) is
 * events.c's, where the subscriptions live.
 */
#include "internal.h"

static void change_clear_func(gpointer p)
{
    procreg_change *c = p;
    procreg_entry_clear(&c->entry);
}

PROCREG_API GArray *procreg_change_array_new(void)
{
    GArray *a = g_array_new(FALSE, TRUE, sizeof(procreg_change));
    g_array_set_clear_func(a, change_clear_func);
    return a;
}
