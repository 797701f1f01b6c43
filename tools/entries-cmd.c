/*
 * The procreg program's commands on entries: register (for another
 * process, or held by this command while it or another process lives),
 * lookup, unregister, update, list and find.
 * Relies on: procreg.c for parsing and the main loop, output.c to print.
 */
#include "cli.h"

#include <stdio.h>

/* The TTL (s) of the lease an etcd registry keeps its entries on (a
 * decorator's inner one too), or 0: the entries outlive this command. */
static gint64 lease_ttl_of(procreg *reg)
{
    GVariant *st = NULL;
    if (procreg_stats(reg, &st, NULL) != 0)
        return 0;
    gint64 ttl = 0;
    GVariant *bs = g_variant_lookup_value(st, "backend_stats",
                                          G_VARIANT_TYPE_VARDICT);
    while (bs != NULL && !g_variant_lookup(bs, "lease_ttl", "x", &ttl)) {
        GVariant *inner = g_variant_lookup_value(bs, "inner",
                                                 G_VARIANT_TYPE_VARDICT);
        g_variant_unref(bs);
        bs = inner;
    }
    if (bs != NULL)
        g_variant_unref(bs);
    g_variant_unref(st);
    return ttl;
}

/* register --pid PID --hold: hold the registry (on etcd: its lease) while
 * PID lives.  Its death removes the entry (the registry's monitor, reason
 * owner_exited); a signal removes it here (reason forced: this command is
 * not the owner). */
static int hold_for(procreg *reg, const cli *c, procreg_key *key,
                    const procreg_owner *owner, uint64_t revision)
{
    const char *ns = arg(c, 0), *name = arg(c, 1);
    run_until_signal_or_exit(owner);
    GError *err = NULL;
    int rc = 0;
    if (loop_signal != 0) {
        rc = procreg_unregister_full(reg, key, revision, PROCREG_FORCE, &err);
        if (rc != 0 && rc != PROCREG_ENOTFOUND && rc != PROCREG_ECONFLICT)
            return fail(rc, err);
        g_clear_error(&err);
        if (!c->json)
            printf("unregistered %s/%s (signal %d)\n", ns, name, loop_signal);
        return EXIT_OK;
    }
    /* Owner gone: wait (briefly) for the monitor's removal. */
    gint64 until = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    procreg_entry now = {0};
    while ((rc = procreg_lookup_entry_key(reg, key, &now, NULL)) == 0 &&
           now.revision == revision && g_get_monotonic_time() < until) {
        procreg_entry_clear(&now);
        g_usleep(20 * 1000);
    }
    procreg_entry_clear(&now);
    if (!c->json)
        printf("pid %d exited; %s/%s %s\n", (int)owner->pid, ns, name,
               rc == PROCREG_ENOTFOUND ? "unregistered" : "left to its lease");
    return EXIT_OK;
}

int cmd_register(procreg *reg, const cli *c)
{
    if (!want_args(c, 2, 2, "register NS NAME (--pid PID [--hold] | --hold) "
                            "[--meta KEY=VALUE ...]"))
        return EXIT_USAGE;
    const char *ns = arg(c, 0), *name = arg(c, 1);
    gint64 ttl = c->pid != NULL && !c->hold ? lease_ttl_of(reg) : 0;
    if (ttl > 0)
        return usage_error(
            "refusing to register %s/%s for pid %s without --hold: on this "
            "backend an entry lives on the lease of the registry that made "
            "it, and this command would exit at once, so the entry would "
            "vanish %" G_GINT64_FORMAT " s later (lease_ttl) while pid %s "
            "runs.\n"
            "  --hold  keeps this command running while pid %s lives; it "
            "ends when the pid does, and the entry with it (run it in the "
            "background: procreg register %s %s --pid %s --hold &)",
            ns, name, c->pid, ttl, c->pid, c->pid, ns, name, c->pid);
    if (c->pid == NULL && !c->hold)
        return usage_error(
            "refusing to register %s/%s for this command itself: it exits "
            "at once, and its entry would vanish with it.\n"
            "  --pid PID  registers it on behalf of the running process PID "
            "(e.g. --pid $$ for the calling shell);\n"
            "  --hold     keeps this command running as the owner until it "
            "is interrupted (run it in the background: procreg register "
            "%s %s --hold &)", ns, name, ns, name);
    GVariant *meta;
    if (!build_meta(c, &meta))
        return EXIT_USAGE;
    procreg_owner owner, *ownerp = NULL;
    GError *err = NULL;
    int rc = 0;
    if (c->pid != NULL) {
        gint64 pid;
        if (!g_ascii_string_to_signed(c->pid, 10, 1, G_MAXINT32, &pid, NULL)) {
            if (meta)
                g_variant_unref(meta);
            return usage_error("--pid '%s' is not a process id", c->pid);
        }
        rc = procreg_owner_from_pid((pid_t)pid, &owner, &err);
        ownerp = &owner;
    }
    procreg_key *key = NULL;
    if (rc == 0)
        rc = procreg_key_new(ns, name, &key, &err);
    procreg_entry cur = {0};
    if (rc == 0)
        rc = procreg_register_key(reg, key, ownerp, meta, &cur, &err);
    if (meta)
        g_variant_unref(meta);
    if (rc == PROCREG_EEXISTS) {
        /* The holder on stdout too: "already started, by this one". */
        print_entry(c, ns, name, &cur);
        procreg_entry_clear(&cur);
        procreg_key_unref(key);
        return fail(rc, err);
    }
    if (rc != 0) {
        procreg_key_unref(key);
        return fail(rc, err);
    }
    if (c->hold)
        catch_signals(); /* before it says it may be interrupted */
    if (c->json) {
        print_entry(c, ns, name, &cur);
    } else if (c->hold) {
        printf("holding %s/%s %s pid %d (revision %" G_GUINT64_FORMAT "); "
               "interrupt to unregister\n", ns, name,
               c->pid != NULL ? "for" : "as", (int)cur.owner.pid,
               cur.revision);
    } else {
        printf("registered %s/%s for pid %d (revision %" G_GUINT64_FORMAT
               ")\n", ns, name, (int)cur.owner.pid, cur.revision);
    }
    fflush(stdout);
    uint64_t revision = cur.revision;
    procreg_entry_clear(&cur);
    if (!c->hold) {
        procreg_key_unref(key);
        return EXIT_OK;
    }
    if (ownerp != NULL) {
        rc = hold_for(reg, c, key, ownerp, revision);
        procreg_key_unref(key);
        return rc;
    }
    run_until_signal();
    /* Unregister the entry while it is still ours (someone may have
     * unregistered it and registered the name again meanwhile); the
     * revision pins what we looked at. */
    procreg_owner self;
    procreg_owner_self(&self);
    for (int attempt = 0; attempt < 8; attempt++) {
        procreg_entry now = {0};
        rc = procreg_lookup_entry_key(reg, key, &now, NULL);
        bool ours = rc == 0 && now.owner.pid == self.pid &&
                    now.owner.start_time == self.start_time;
        revision = now.revision;
        procreg_entry_clear(&now);
        if (!ours) {
            rc = 0;
            break;
        }
        rc = procreg_unregister_key(reg, key, revision, &err);
        if (rc != PROCREG_ECONFLICT)
            break;
        g_clear_error(&err);
    }
    procreg_key_unref(key);
    if (rc != 0 && rc != PROCREG_ENOTFOUND && rc != PROCREG_ECONFLICT)
        return fail(rc, err);
    g_clear_error(&err);
    if (!c->json)
        printf("unregistered %s/%s (signal %d)\n", ns, name, loop_signal);
    return EXIT_OK;
}

int cmd_lookup(procreg *reg, const cli *c)
{
    if (!want_args(c, 2, 2, "lookup NS NAME"))
        return EXIT_USAGE;
    procreg_entry e = {0};
    GError *err = NULL;
    int rc = procreg_lookup_entry(reg, arg(c, 0), arg(c, 1), &e, &err);
    if (rc != 0)
        return fail(rc, err);
    print_entry(c, arg(c, 0), arg(c, 1), &e);
    procreg_entry_clear(&e);
    return EXIT_OK;
}

/* --force: the operator's explicit override of the owner rule. */
static unsigned write_flags(const cli *c)
{
    return c->force ? PROCREG_FORCE : 0;
}

int cmd_unregister(procreg *reg, const cli *c)
{
    if (!want_args(c, 2, 2, "unregister NS NAME [--force]"))
        return EXIT_USAGE;
    GError *err = NULL;
    procreg_key *key = NULL;
    int rc = procreg_key_new(arg(c, 0), arg(c, 1), &key, &err);
    if (rc == 0)
        rc = procreg_unregister_full(reg, key, 0, write_flags(c), &err);
    procreg_key_unref(key);
    if (rc != 0)
        return fail(rc, err);
    if (!c->json)
        printf("unregistered %s/%s\n", arg(c, 0), arg(c, 1));
    else
        printf("{\"unregistered\":true}\n");
    return EXIT_OK;
}

int cmd_update(procreg *reg, const cli *c)
{
    if (!want_args(c, 2, 2, "update NS NAME [--meta KEY=VALUE ...] "
                            "[--replace] [--force]"))
        return EXIT_USAGE;
    if (c->meta->len == 0 && !c->replace)
        return usage_error("update needs --meta KEY=VALUE (merged), or "
                           "--replace (with no --meta: remove all metadata)");
    GVariant *meta;
    if (!build_meta(c, &meta))
        return EXIT_USAGE;
    procreg_key *key = NULL;
    GError *err = NULL;
    uint64_t revision = 0;
    int rc = procreg_key_new(arg(c, 0), arg(c, 1), &key, &err);
    if (rc == 0)
        rc = procreg_update_metadata_full(
            reg, key, meta,
            c->replace ? PROCREG_UPDATE_REPLACE : PROCREG_UPDATE_MERGE, 0,
            write_flags(c), &revision, &err);
    if (meta)
        g_variant_unref(meta);
    procreg_key_unref(key);
    if (rc != 0)
        return fail(rc, err);
    if (c->json)
        printf("{\"revision\":%" G_GUINT64_FORMAT "}\n", revision);
    else
        printf("updated %s/%s (revision %" G_GUINT64_FORMAT ")\n", arg(c, 0),
               arg(c, 1), revision);
    return EXIT_OK;
}

int cmd_list(procreg *reg, const cli *c)
{
    if (!want_args(c, 0, 1, "list [NS]"))
        return EXIT_USAGE;
    procreg_entry *all = NULL;
    size_t n = 0;
    GError *err = NULL;
    int rc = procreg_list(reg, arg(c, 0), &all, &n, &err);
    if (rc != 0)
        return fail(rc, err);
    print_entries(c, all, n);
    procreg_entries_free(all, n);
    return EXIT_OK;
}

int cmd_find(procreg *reg, const cli *c)
{
    if (!want_args(c, 1, 1, "find KEY=VALUE [--ns NS]"))
        return EXIT_USAGE;
    char *key;
    GVariant *value;
    meta_opt opt = {arg(c, 0), false}; /* typed as --meta types it */
    if (!parse_pair(&opt, &key, &value))
        return EXIT_USAGE;
    procreg_entry *all = NULL;
    size_t n = 0;
    GError *err = NULL;
    int rc = procreg_find(reg, c->ns_opt, key, value, &all, &n, &err);
    g_free(key);
    g_variant_unref(value);
    if (rc != 0)
        return fail(rc, err);
    print_entries(c, all, n);
    procreg_entries_free(all, n);
    return EXIT_OK;
}
