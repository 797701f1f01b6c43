/*
 * Compliance cases for what a backend reports and what its capabilities
 * promise: health and stats; an entry kept across a reopen
 * (PROCREG_CAP_PERSISTENT); entries shared with another process
 * (PROCREG_CAP_MULTIPROCESS, child side cx_basic_child(), mode "basic");
 * and the procreg_backend_* calls of the backend level.
 */
#include "compliance-private.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Cases: health and stats                                                  */

void case_health(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    CHECK_RC(cx_quick_register(f->reg, "svc", "a", NULL), 0);
    g_auto(procreg_health) h = {0};
    CHECK_OK(procreg_health_check(f->reg, &h, &err), err);
    CHECK_MSG(h.status == PROCREG_HEALTH_OK, "health is %s: %s",
              procreg_health_status_name(h.status),
              h.message ? h.message : "(no message)");
    CHECK(strcmp(procreg_health_status_name(h.status), "ok") == 0);
    CHECK_MSG(h.backend != NULL && h.backend[0] != '\0',
              "health report names no backend");
    size_t name_len = strcspn(f->spec, ":");
    CHECK_MSG(strlen(h.backend) == name_len &&
                  strncmp(h.backend, f->spec, name_len) == 0,
              "health backend \"%s\" is not the spec's \"%.*s\"", h.backend,
              (int)name_len, f->spec);
    CHECK_MSG(h.details != NULL &&
                  g_variant_is_of_type(h.details, G_VARIANT_TYPE_VARDICT),
              "health details must be a{sv}");
    procreg_health_clear(&h);
    CHECK(h.backend == NULL && h.message == NULL && h.details == NULL);
}

void case_stats(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    for (int i = 0; i < 3; i++) {
        g_autofree char *name = g_strdup_printf("s%d", i);
        CHECK_RC(cx_quick_register(f->reg, i == 2 ? "other" : "svc", name,
                                NULL),
                 0);
    }
    procreg_owner o;
    CHECK_OK(procreg_lookup(f->reg, "svc", "s0", &o, &err), err);
    CHECK_RC(procreg_lookup(f->reg, "svc", "zz", &o, NULL), PROCREG_ENOTFOUND);

    g_autoptr(GVariant) st = NULL;
    CHECK_OK(procreg_stats(f->reg, &st, &err), err);
    CHECK(st != NULL && !g_variant_is_floating(st));
    CHECK_MSG(g_variant_is_of_type(st, G_VARIANT_TYPE_VARDICT),
              "stats must be a{sv}, got %s", g_variant_get_type_string(st));
    g_autofree char *dump = g_variant_print(st, TRUE);

    const char *backend = NULL;
    CHECK_MSG(g_variant_lookup(st, "backend", "&s", &backend),
              "stats lack \"backend\" (s): %s", dump);
    CHECK(strncmp(backend, f->spec, strcspn(f->spec, ":")) == 0);
    guint64 entries = 0;
    CHECK_MSG(g_variant_lookup(st, "entries", "t", &entries),
              "stats lack \"entries\" (t): %s", dump);
    CHECK_MSG(entries == 3, "stats entries = %" G_GUINT64_FORMAT
              ", expected 3", entries);
    g_autoptr(GVariant) ops = g_variant_lookup_value(st, "operations",
                                                     G_VARIANT_TYPE("a{st}"));
    CHECK_MSG(ops != NULL, "stats lack \"operations\" (a{st}): %s", dump);
    CHECK_MSG(g_variant_n_children(ops) > 0,
              "no operations counted after 5 calls: %s", dump);
    g_autoptr(GVariant) errs = g_variant_lookup_value(st, "errors",
                                                      G_VARIANT_TYPE("a{st}"));
    CHECK_MSG(errs != NULL, "stats lack \"errors\" (a{st}): %s", dump);
    g_autoptr(GVariant) bs = g_variant_lookup_value(st, "backend_stats", NULL);
    CHECK_MSG(bs == NULL || g_variant_is_of_type(bs, G_VARIANT_TYPE_VARDICT),
              "backend_stats must be a{sv}: %s", dump);
}

/* ------------------------------------------------------------------------ */
/* Cases: capabilities                                                      */

void case_persistence(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GVariant) m = cx_md("{'kept': <'across reopen'>, "
                               "'n': <[int64 1, 2]>}");
    g_auto(procreg_entry) a = {0};
    CHECK_OK(procreg_register(f->reg, "persist", "a", NULL, m, &a, &err),
             err);
    CHECK_RC(cx_quick_register(f->reg, "persist", "b", NULL), 0);
    CHECK_OK(procreg_unregister(f->reg, "persist", "b", &err), err);
    procreg_close(f->reg);
    f->reg = NULL;
    CHECK_OK(procreg_open(f->spec, &f->reg, &err), err);

    g_auto(procreg_entry) e = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "persist", "a", &e, &err), err);
    CHECK(cx_owner_eq(&e.owner, &a.owner));
    CHECK(e.revision == a.revision);
    CHECK(e.registered_at == a.registered_at);
    CHECK(cx_variant_eq0(e.metadata, m));
    procreg_owner o;
    CHECK_RC(procreg_lookup(f->reg, "persist", "b", &o, NULL),
             PROCREG_ENOTFOUND);
    /* Revisions keep increasing across the restart. */
    g_auto(procreg_entry) c = {0};
    CHECK_OK(procreg_register(f->reg, "persist", "c", NULL, NULL, &c, &err),
             err);
    CHECK_MSG(c.revision > a.revision,
              "revision %" G_GUINT64_FORMAT " after reopening is not above "
              "%" G_GUINT64_FORMAT " from before", c.revision, a.revision);
}

void case_multiprocess(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    CHECK_RC(cx_quick_register(f->reg, "mp", "taken", NULL), 0);

    g_auto(GStrv) argv = cx_child_argv("basic", f->spec);
    g_autofree char *out = NULL;
    g_autofree char *errout = NULL;
    int status = 0;
    gboolean spawned = g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL,
                                    NULL, &out, &errout, &status, &err);
    CHECK_MSG(spawned, "cannot run the child: %s", err ? err->message : "");
    CHECK_MSG(g_spawn_check_wait_status(status, NULL),
              "the child process failed: %s", errout);

    procreg_owner o, self;
    procreg_owner_self(&self);
    CHECK_OK(procreg_lookup(f->reg, "mp", "from-child", &o, &err), err);
    CHECK_MSG(cx_owner_eq(&o, &self),
              "entry registered by the child for us has owner %d", (int)o.pid);
    g_auto(procreg_entry) e = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "mp", "from-child", &e, &err), err);
    g_autoptr(GVariant) want = cx_md("{'by': <'child'>}");
    CHECK(cx_variant_eq0(e.metadata, want));
}

/* The child side of case_multiprocess: register (mp, from-child) owned by
 * our parent, and check (mp, taken) is held by the parent. */
int cx_basic_child(procreg *reg)
{
    GError *err = NULL;
    int status = 0;
    procreg_owner parent;
    procreg_entry cur = {0};
    if (procreg_owner_from_pid(getppid(), &parent, &err) != 0 ||
        procreg_register(reg, "mp", "from-child", &parent,
                         g_variant_new_parsed("{'by': <'child'>}"), NULL,
                         &err) != 0) {
        fprintf(stderr, "child: register: %s\n", err->message);
        status = 1;
    } else {
        int rc = procreg_register(reg, "mp", "taken", NULL, NULL, &cur, NULL);
        if (rc != PROCREG_EEXISTS || cur.owner.pid != parent.pid) {
            fprintf(stderr, "child: (mp, taken) gave %d, owner %d; expected "
                    "EEXISTS held by %d\n", rc, (int)cur.owner.pid,
                    (int)parent.pid);
            status = 1;
        }
    }
    g_clear_error(&err);
    procreg_entry_clear(&cur);
    return status;
}


/* ------------------------------------------------------------------------ */
/* Cases: the backend level (procreg_backend_* wrappers)                    */

static int backend_put(procreg_backend *b, const char *ns, const char *name)
{
    procreg_key *k = NULL;
    int rc = procreg_key_new(ns, name, &k, NULL);
    if (rc != 0)
        return rc;
    procreg_record rec = {.metadata = NULL,
                          .registered_at = g_get_real_time()};
    procreg_owner_self(&rec.owner);
    rc = procreg_backend_register_entry(b, k, &rec, NULL, NULL);
    procreg_key_unref(k);
    return rc;
}

void case_backend_level(Fixture *f)
{
    procreg_backend *b = f->backend;
    g_autoptr(GError) err = NULL;
    for (int i = 0; i < 5; i++) {
        g_autofree char *name = g_strdup_printf("d1-%d", i);
        CHECK_RC(backend_put(b, "d1", name), 0);
    }
    CHECK_RC(backend_put(b, "d2", "x"), 0);
    CHECK_RC(backend_put(b, "d2", "y"), 0);

    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    CHECK_RC(procreg_backend_list_names(b, "d1", 3, names), 0);
    CHECK_MSG(names->len >= 1 && names->len <= 3,
              "list_names(max 3) gave %u names", names->len);
    for (guint i = 0; i < names->len; i++)
        CHECK_MSG(g_str_has_prefix(names->pdata[i], "d1-"),
                  "list_names(d1) gave \"%s\"", (char *)names->pdata[i]);
    g_ptr_array_set_size(names, 0);
    CHECK_RC(procreg_backend_list_names(b, "d1", 100, names), 0);
    CHECK_MSG(names->len == 5, "list_names(d1, 100) gave %u of 5 names",
              names->len);

    size_t n = 0;
    CHECK_OK(procreg_backend_count(b, "d1", &n, &err), err);
    CHECK(n == 5);

    GArray *removed = procreg_entry_array_new();
    int rc = procreg_backend_drop_namespace(b, "d1", removed, &err);
    guint n_removed = removed->len;
    bool removed_ok = true;
    for (guint i = 0; i < removed->len; i++) {
        procreg_entry *e = &g_array_index(removed, procreg_entry, i);
        removed_ok &= e->ns != NULL && strcmp(e->ns, "d1") == 0;
    }
    g_array_unref(removed);
    CHECK_OK(rc, err);
    CHECK_MSG(n_removed == 5, "drop_namespace reported %u removed", n_removed);
    CHECK_MSG(removed_ok, "drop_namespace reported entries of another "
              "namespace");
    CHECK_OK(procreg_backend_count(b, "d1", &n, &err), err);
    CHECK(n == 0);
    CHECK_OK(procreg_backend_count(b, "d2", &n, &err), err);
    CHECK(n == 2);
    CHECK_OK(procreg_backend_count(b, NULL, &n, &err), err);
    CHECK(n == 2);

    removed = procreg_entry_array_new();
    rc = procreg_backend_drop_namespace(b, "none", removed, &err);
    n_removed = removed->len;
    g_array_unref(removed);
    CHECK_OK(rc, err);
    CHECK(n_removed == 0);

    GArray *all = procreg_entry_array_new();
    rc = procreg_backend_list_all(b, NULL, all, &err);
    guint n_all = all->len;
    g_array_unref(all);
    CHECK_OK(rc, err);
    CHECK(n_all == 2);

    size_t bytes = 0;
    rc = procreg_backend_memory_usage(b, &bytes);
    CHECK_MSG(rc == 0 || rc == PROCREG_ENOTSUP,
              "memory_usage gave %d (%s)", rc, procreg_strerror(rc));

    GVariantDict details;
    g_variant_dict_init(&details, NULL);
    char *message = NULL;
    rc = procreg_backend_health_check(b, &details, &message);
    g_variant_dict_clear(&details);
    g_free(message);
    CHECK_MSG(rc == PROCREG_HEALTH_OK, "backend health_check gave %d", rc);
    GVariantDict st;
    g_variant_dict_init(&st, NULL);
    procreg_backend_stats(b, &st);
    g_variant_dict_clear(&st);
}
