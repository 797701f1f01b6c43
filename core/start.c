/*
 * Start once ("via" semantics): procreg_start_once() returns the live
 * holder of a name, or runs the caller's start function and registers what
 * it started, while every concurrent caller for that name waits for the
 * result.  Built on the ticket queue of lock.c, in its own namespaces
 * ("procreg:start:NS"), so a start claim never meets a lock of the same
 * name.
 *
 * Invariant: a start function runs only while its caller holds the
 * name's start claim and has seen the name unregistered under it; so two
 * callers that both use procreg_start_once() never both start the
 * service.  The claim is a ticket owned by the caller's process: a
 * starter that dies (before, during or after its start function, before
 * the registration) loses it with its process, and the next waiter looks
 * again, finds the name free and starts it itself.  A start function that
 * fails releases the claim the same way, with its error to its caller
 * only: each waiter then tries its own start.
 */
#include "internal.h"

#include <string.h>

/* The live entry of @key in @out: 0, or PROCREG_ENOTFOUND (absent, or
 * held by a dead owner whose entry was evicted now), or a failure. */
static int live_entry(procreg *reg, const procreg_key *key,
                      procreg_entry *out, GError **error)
{
    int rc = procreg_lookup_entry_key(reg, key, out, NULL);
    if (rc == 0 && procreg_evict_if_dead(reg, key, out)) {
        procreg_entry_clear(out);
        rc = PROCREG_ENOTFOUND;
    }
    if (rc != 0 && rc != PROCREG_ENOTFOUND)
        procreg_set_error(error, rc, "looking up '%s' in '%s': %s",
                          procreg_key_name(key), procreg_key_namespace(key),
                          procreg_strerror(rc));
    return rc;
}

/* Run @start and register what it started.  The claim is held. */
static int start_and_register(procreg *reg, const procreg_key *key,
                              procreg_start_fn start, gpointer user_data,
                              procreg_entry *out, GError **error)
{
    /* The caller's pid; a start time of 0 lets @start name another pid
     * by the pid alone (the registration reads its start time). */
    procreg_owner owner;
    procreg_owner_self(&owner);
    owner.start_time = 0;
    GVariant *metadata = NULL;
    GError *local = NULL;
    int rc = start(reg, procreg_key_namespace(key), procreg_key_name(key),
                   &owner, &metadata, user_data, &local);
    if (rc != 0) {
        if (metadata != NULL)
            g_variant_unref(g_variant_ref_sink(metadata));
        if (rc > 0)
            rc = PROCREG_ERROR_FAILED;
        if (local != NULL)
            g_propagate_error(error, local);
        else
            procreg_set_error(error, rc, "the start function of '%s' in "
                              "'%s' failed: %s", procreg_key_name(key),
                              procreg_key_namespace(key),
                              procreg_strerror(rc));
        return rc;
    }
    g_clear_error(&local); /* a success that set an error: not an error */
    return procreg_register_key(reg, key, &owner, metadata, out, error);
}

PROCREG_API int procreg_start_once_key(procreg *reg, const procreg_key *key,
                                       procreg_start_fn start,
                                       gpointer user_data,
                                       GDestroyNotify destroy, int timeout_ms,
                                       GCancellable *cancellable,
                                       procreg_entry *out, bool *started,
                                       GError **error)
{
    procreg_entry cur = {0};
    procreg_lock_handle *claim = NULL;
    bool ran = false;
    int rc;
    if (reg == NULL || key == NULL || start == NULL) {
        rc = procreg_set_error(error, PROCREG_EINVAL,
                               "procreg_start_once: registry, key and start "
                               "function are required");
        goto done;
    }
    rc = live_entry(reg, key, &cur, error);
    if (rc != PROCREG_ENOTFOUND)
        goto done; /* running already, or a failure */
    rc = procreg_queue_acquire(reg, PROCREG_QUEUE_START, key, timeout_ms,
                               cancellable, &claim, error);
    if (rc != 0)
        goto done;
    /* Whoever held the claim before us may have started it. */
    rc = live_entry(reg, key, &cur, error);
    if (rc == PROCREG_ENOTFOUND) {
        ran = true;
        rc = start_and_register(reg, key, start, user_data, &cur, error);
    }
    /* The claim's release cannot undo the result: a failure to release
     * is a lost ticket, and its lease or its owner's exit removes it. */
    procreg_queue_release(reg, claim, NULL);
done:
    if (destroy != NULL)
        destroy(user_data);
    if (started != NULL)
        *started = rc == 0 && ran;
    if (out != NULL && (rc == 0 || rc == PROCREG_EEXISTS))
        *out = cur;
    else
        procreg_entry_clear(&cur);
    if (out != NULL && rc != 0 && rc != PROCREG_EEXISTS)
        memset(out, 0, sizeof *out);
    return rc;
}

PROCREG_API int procreg_start_once(procreg *reg, const char *ns,
                                   const char *name, procreg_start_fn start,
                                   gpointer user_data, GDestroyNotify destroy,
                                   int timeout_ms, GCancellable *cancellable,
                                   procreg_entry *out, bool *started,
                                   GError **error)
{
    procreg_stack_key key;
    int rc = procreg_key_init_stack(&key, ns, name, error);
    if (rc != 0) {
        if (destroy != NULL)
            destroy(user_data);
        if (started != NULL)
            *started = false;
        if (out != NULL)
            memset(out, 0, sizeof *out);
        return rc;
    }
    return procreg_start_once_key(reg, &key.key, start, user_data, destroy,
                                  timeout_ms, cancellable, out, started,
                                  error);
}
