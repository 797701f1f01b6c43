/*
 * Compliance cases for the basic operations, one process: register (taken,
 * for another owner, for a dead one, again after unregistering), lookup,
 * unregister, update_metadata (replace, merge), list, count, find, and
 * that every write gets a revision above all before it.
 */
#include "compliance-private.h"

#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Whether two a{sv} dictionaries hold the same keys and values, in any
 * order (merge results need not keep an order). */
static bool dict_eq(GVariant *a, GVariant *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (g_variant_n_children(a) != g_variant_n_children(b))
        return false;
    GVariantIter it;
    const char *k;
    GVariant *val;
    g_variant_iter_init(&it, a);
    while (g_variant_iter_loop(&it, "{&sv}", &k, &val)) {
        g_autoptr(GVariant) other = g_variant_lookup_value(b, k, NULL);
        if (other == NULL || !g_variant_equal(val, other)) {
            g_variant_unref(val);
            return false;
        }
    }
    return true;
}

/* A pid that was ours and is now reaped: not alive. */
static pid_t dead_pid(void)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    if (pid < 0)
        return -1;
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return pid;
}

/* ------------------------------------------------------------------------ */
/* Cases: register                                                          */

void case_register_basic(Fixture *f)
{
    procreg_owner self;
    procreg_owner_self(&self);
    g_autoptr(GVariant) m = cx_md("{'port': <int32 8080>, 'role': <'primary'>}");
    g_auto(procreg_entry) cur = {0};
    g_autoptr(GError) err = NULL;

    int64_t before = g_get_real_time();
    CHECK_OK(procreg_register(f->reg, "svc", "alpha", NULL, m, &cur, &err),
             err);
    int64_t after = g_get_real_time();
    CHECK_MSG(cx_owner_eq(&cur.owner, &self),
              "current.owner is %d/%" G_GUINT64_FORMAT ", expected self "
              "%d/%" G_GUINT64_FORMAT, (int)cur.owner.pid,
              cur.owner.start_time, (int)self.pid, self.start_time);
    CHECK(cur.revision > 0);
    CHECK_MSG(cur.registered_at >= before && cur.registered_at <= after,
              "registered_at %" G_GINT64_FORMAT " outside [%" G_GINT64_FORMAT
              ", %" G_GINT64_FORMAT "]", cur.registered_at, before, after);
    CHECK(cx_variant_eq0(cur.metadata, m));
    CHECK(cur.ns == NULL || strcmp(cur.ns, "svc") == 0);
    CHECK(cur.name == NULL || strcmp(cur.name, "alpha") == 0);

    procreg_owner o = {0};
    CHECK_OK(procreg_lookup(f->reg, "svc", "alpha", &o, &err), err);
    CHECK(cx_owner_eq(&o, &self));

    g_auto(procreg_entry) e = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "svc", "alpha", &e, &err), err);
    CHECK_MSG(e.ns == NULL && e.name == NULL,
              "lookup_entry must leave ns and name NULL");
    CHECK(cx_owner_eq(&e.owner, &self));
    CHECK(e.revision == cur.revision);
    CHECK(e.registered_at == cur.registered_at);
    CHECK(cx_variant_eq0(e.metadata, m));

    /* No metadata, no current. */
    CHECK_OK(procreg_register(f->reg, "svc", "beta", NULL, NULL, NULL, &err),
             err);
    g_auto(procreg_entry) e2 = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "svc", "beta", &e2, &err), err);
    g_autofree char *d2 = cx_describe(e2.metadata);
    CHECK_MSG(e2.metadata == NULL, "registered without metadata, got %s", d2);
    CHECK(e2.revision > e.revision);

    /* A floating metadata reference is sunk by the registry. */
    CHECK_OK(procreg_register(f->reg, "svc", "gamma", NULL,
                              g_variant_new_parsed("{'f': <true>}"), NULL,
                              &err),
             err);
    g_auto(procreg_entry) e3 = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "svc", "gamma", &e3, &err), err);
    g_autoptr(GVariant) want3 = cx_md("{'f': <true>}");
    CHECK(cx_variant_eq0(e3.metadata, want3));

    size_t n = 0;
    CHECK_OK(procreg_count(f->reg, "svc", &n, &err), err);
    CHECK_MSG(n == 3, "count is %zu, expected 3", n);
}

void case_register_exists(Fixture *f)
{
    procreg_owner other = {0};
    g_autoptr(GError) err = NULL;
    CHECK_OK(procreg_owner_from_pid(getppid(), &other, &err), err);
    g_autoptr(GVariant) m1 = cx_md("{'who': <'first'>}");
    g_autoptr(GVariant) m2 = cx_md("{'who': <'second'>}");

    g_auto(procreg_entry) first = {0};
    CHECK_OK(procreg_register(f->reg, "svc", "k", &other, m1, &first, &err),
             err);
    CHECK(cx_owner_eq(&first.owner, &other));

    g_auto(procreg_entry) cur = {0};
    CHECK_ERR(procreg_register(f->reg, "svc", "k", NULL, m2, &cur, &err), err,
              PROCREG_EEXISTS);
    CHECK_MSG(cx_owner_eq(&cur.owner, &other),
              "EEXISTS must report the holder: got pid %d, holder is %d",
              (int)cur.owner.pid, (int)other.pid);
    CHECK_MSG(cur.revision == first.revision,
              "EEXISTS current.revision %" G_GUINT64_FORMAT
              " != holder's %" G_GUINT64_FORMAT, cur.revision,
              first.revision);
    CHECK(cur.registered_at == first.registered_at);
    CHECK_MSG(cx_variant_eq0(cur.metadata, m1),
              "EEXISTS current.metadata is not the holder's");

    /* Nothing changed. */
    g_auto(procreg_entry) e = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "svc", "k", &e, &err), err);
    CHECK(cx_owner_eq(&e.owner, &other));
    CHECK(e.revision == first.revision);
    CHECK(cx_variant_eq0(e.metadata, m1));

    /* Key form, and without current or GError. */
    g_autoptr(procreg_key) key = NULL;
    CHECK_OK(procreg_key_new("svc", "k", &key, &err), err);
    g_auto(procreg_entry) cur2 = {0};
    CHECK_ERR(procreg_register_key(f->reg, key, NULL, NULL, &cur2, &err), err,
              PROCREG_EEXISTS);
    CHECK(cx_owner_eq(&cur2.owner, &other));
    CHECK(cur2.revision == first.revision);
    CHECK_RC(procreg_register(f->reg, "svc", "k", NULL, NULL, NULL, NULL),
             PROCREG_EEXISTS);

    size_t n = 0;
    CHECK_OK(procreg_count(f->reg, NULL, &n, &err), err);
    CHECK(n == 1);
}

void case_register_other_owner(Fixture *f)
{
    pid_t child = cx_sleeping_child();
    CHECK_MSG(child > 0, "fork failed: %s", g_strerror(errno));
    procreg_owner o = {0};
    g_autoptr(GError) err = NULL;
    int rc = procreg_owner_from_pid(child, &o, &err);
    if (rc != 0) {
        cx_reap(child);
        CHECK_OK(rc, err);
    }
    rc = procreg_register(f->reg, "workers", "w1", &o, NULL, NULL, &err);
    procreg_owner got = {0};
    int rc2 = rc == 0 ? procreg_lookup(f->reg, "workers", "w1", &got, NULL)
                      : rc;
    cx_reap(child);
    CHECK_OK(rc, err);
    CHECK_RC(rc2, 0);
    CHECK_MSG(got.pid == child && got.start_time == o.start_time,
              "lookup gives pid %d, registered for child %d", (int)got.pid,
              (int)child);
    CHECK_MSG(!procreg_owner_is_alive(&got),
              "the killed and reaped child still counts as alive");
}

void case_register_notalive(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    pid_t pid = dead_pid();
    CHECK_MSG(pid > 0, "fork failed: %s", g_strerror(errno));

    procreg_owner dead = {.pid = pid, .start_time = 0};
    g_auto(procreg_entry) cur = {0};
    CHECK_ERR(procreg_register(f->reg, "svc", "ghost", &dead, NULL, &cur,
                               &err),
              err, PROCREG_ENOTALIVE);
    CHECK_ERR(procreg_owner_from_pid(pid, &dead, &err), err,
              PROCREG_ENOTALIVE);

    /* Our pid with another start time: a reused pid, not alive. */
    procreg_owner self;
    procreg_owner_self(&self);
    if (self.start_time != 0) {
        procreg_owner reused = self;
        reused.start_time += 1000;
        CHECK_ERR(procreg_register(f->reg, "svc", "ghost", &reused, NULL,
                                   NULL, &err),
                  err, PROCREG_ENOTALIVE);
    }

    /* A pid that cannot exist: EINVAL or ENOTALIVE, nothing stored. */
    procreg_owner bad = {.pid = 0, .start_time = 0};
    int rc = procreg_register(f->reg, "svc", "ghost", &bad, NULL, NULL, &err);
    CHECK_MSG(rc == PROCREG_EINVAL || rc == PROCREG_ENOTALIVE,
              "owner pid 0: expected EINVAL or ENOTALIVE, got %d (%s)", rc,
              procreg_strerror(rc));
    g_clear_error(&err);

    CHECK_RC(procreg_lookup(f->reg, "svc", "ghost", &self, NULL),
             PROCREG_ENOTFOUND);
    size_t n = 1;
    CHECK_OK(procreg_count(f->reg, NULL, &n, &err), err);
    CHECK_MSG(n == 0, "a refused registration left %zu entries", n);
}

void case_reregister(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    procreg_owner self, other = {0}, got = {0};
    procreg_owner_self(&self);
    CHECK_OK(procreg_owner_from_pid(getppid(), &other, &err), err);

    g_auto(procreg_entry) a = {0};
    CHECK_OK(procreg_register(f->reg, "svc", "k", NULL, NULL, &a, &err), err);
    CHECK_OK(procreg_lookup(f->reg, "svc", "k", &got, &err), err);
    CHECK(cx_owner_eq(&got, &self));
    CHECK_OK(procreg_unregister(f->reg, "svc", "k", &err), err);
    CHECK_RC(procreg_lookup(f->reg, "svc", "k", &got, NULL),
             PROCREG_ENOTFOUND);

    g_auto(procreg_entry) b = {0};
    CHECK_OK(procreg_register(f->reg, "svc", "k", &other, NULL, &b, &err),
             err);
    CHECK_MSG(b.revision > a.revision,
              "re-registration revision %" G_GUINT64_FORMAT
              " not above the first %" G_GUINT64_FORMAT, b.revision,
              a.revision);
    CHECK(b.registered_at >= a.registered_at);
    CHECK_OK(procreg_lookup(f->reg, "svc", "k", &got, &err), err);
    CHECK_MSG(cx_owner_eq(&got, &other),
              "after re-registration lookup gives pid %d, expected the new "
              "owner %d (stale entry?)", (int)got.pid, (int)other.pid);
    g_auto(procreg_entry) e = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "svc", "k", &e, &err), err);
    CHECK(cx_owner_eq(&e.owner, &other));
    CHECK(e.revision == b.revision);
}

/* ------------------------------------------------------------------------ */
/* Cases: lookup                                                            */

void case_lookup_notfound(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    procreg_owner o;
    g_auto(procreg_entry) e = {0};

    CHECK_RC(procreg_lookup(f->reg, NULL, "nothing", &o, NULL),
             PROCREG_ENOTFOUND);
    CHECK_RC(procreg_lookup_entry(f->reg, NULL, "nothing", &e, NULL),
             PROCREG_ENOTFOUND);
    CHECK(procreg_lookup(f->reg, NULL, "nothing", &o, &err) ==
          PROCREG_ENOTFOUND);
    CHECK_MSG(err != NULL && strstr(err->message, PROCREG_NS_PRODUCTION),
              "not-found message must name the namespace: %s",
              err ? err->message : "(no GError)");
    g_clear_error(&err);

    CHECK_RC(cx_quick_register(f->reg, "msgns", "alpha", NULL), 0);
    CHECK_RC(cx_quick_register(f->reg, "msgns", "beta", NULL), 0);
    CHECK_RC(cx_quick_register(f->reg, "msgns", "gamma", NULL), 0);
    CHECK_RC(cx_quick_register(f->reg, "elsewhere", "zeta", NULL), 0);

    CHECK(procreg_lookup(f->reg, "msgns", "delta", &o, &err) ==
          PROCREG_ENOTFOUND);
    CHECK(err != NULL && err->domain == PROCREG_ERROR &&
          err->code == PROCREG_ENOTFOUND);
    CHECK_MSG(strstr(err->message, "msgns") != NULL,
              "message does not name the namespace: %s", err->message);
    CHECK_MSG(strstr(err->message, "delta") != NULL,
              "message does not name the missing name: %s", err->message);
    CHECK_MSG(strstr(err->message, "alpha") || strstr(err->message, "beta") ||
                  strstr(err->message, "gamma"),
              "message names none of the existing names: %s", err->message);
    CHECK_MSG(strstr(err->message, "zeta") == NULL,
              "message names an entry of another namespace: %s",
              err->message);
    g_clear_error(&err);

    CHECK_ERR(procreg_lookup_entry(f->reg, "msgns", "delta", &e, &err), err,
              PROCREG_ENOTFOUND);
    g_autoptr(procreg_key) key = NULL;
    CHECK_OK(procreg_key_new("msgns", "delta", &key, &err), err);
    CHECK_ERR(procreg_lookup_key(f->reg, key, &o, &err), err,
              PROCREG_ENOTFOUND);
    CHECK_ERR(procreg_lookup_entry_key(f->reg, key, &e, &err), err,
              PROCREG_ENOTFOUND);
    CHECK_RC(procreg_lookup_key(f->reg, key, &o, NULL), PROCREG_ENOTFOUND);
}

/* The metadata reference from lookup_entry outlives the entry. */
void case_lookup_entry_lifetime(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GVariant) m = cx_md("{'payload': <'keep me alive'>, 'n': "
                               "<[int32 1, 2, 3]>}");
    CHECK_OK(procreg_register(f->reg, "svc", "k", NULL, m, NULL, &err), err);

    g_auto(procreg_entry) e = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "svc", "k", &e, &err), err);
    g_auto(EntryList) l = {0};
    CHECK_OK(procreg_list(f->reg, "svc", &l.v, &l.n, &err), err);
    CHECK(l.n == 1);

    CHECK_OK(procreg_update_metadata(f->reg, "svc", "k",
                                     g_variant_new_parsed("{'x': <1>}"),
                                     PROCREG_UPDATE_REPLACE, &err),
             err);
    CHECK_OK(procreg_unregister(f->reg, "svc", "k", &err), err);
    CHECK_OK(procreg_register(f->reg, "svc", "k", NULL,
                              g_variant_new_parsed("{'y': <2>}"), NULL, &err),
             err);
    for (int i = 0; i < 50; i++) {
        g_autofree char *name = g_strdup_printf("churn%d", i);
        CHECK_RC(cx_quick_register(f->reg, "svc", name,
                                "{'pad': <'xxxxxxxxxxxxxxxxxxxxxxxxxxxx'>}"),
                 0);
    }
    CHECK_MSG(cx_variant_eq0(e.metadata, m),
              "metadata held from lookup_entry changed after the entry did");
    CHECK_MSG(cx_variant_eq0(l.v[0].metadata, m),
              "metadata held from list changed after the entry did");
}

/* ------------------------------------------------------------------------ */
/* Cases: unregister                                                        */

void case_unregister(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    procreg_owner o;
    CHECK_RC(cx_quick_register(f->reg, "svc", "a", NULL), 0);
    CHECK_RC(cx_quick_register(f->reg, "svc", "b", NULL), 0);

    CHECK_OK(procreg_unregister(f->reg, "svc", "a", &err), err);
    CHECK_RC(procreg_lookup(f->reg, "svc", "a", &o, NULL), PROCREG_ENOTFOUND);
    CHECK_OK(procreg_lookup(f->reg, "svc", "b", &o, &err), err);
    CHECK_ERR(procreg_unregister(f->reg, "svc", "a", &err), err,
              PROCREG_ENOTFOUND);
    CHECK_RC(procreg_unregister(f->reg, "svc", "a", NULL), PROCREG_ENOTFOUND);

    /* if_revision: only the revision one looked at may be removed. */
    g_autoptr(procreg_key) kc = NULL;
    CHECK_OK(procreg_key_new("svc", "c", &kc, &err), err);
    g_auto(procreg_entry) c1 = {0};
    CHECK_OK(procreg_register_key(f->reg, kc, NULL, NULL, &c1, &err), err);
    uint64_t r2 = 0;
    CHECK_OK(procreg_update_metadata_key(f->reg, kc,
                                         g_variant_new_parsed("{'v': <2>}"),
                                         PROCREG_UPDATE_REPLACE, 0, &r2,
                                         &err),
             err);
    CHECK(r2 > c1.revision);
    CHECK_ERR(procreg_unregister_key(f->reg, kc, c1.revision, &err), err,
              PROCREG_ECONFLICT);
    CHECK_ERR(procreg_unregister_key(f->reg, kc, r2 + 1000, &err), err,
              PROCREG_ECONFLICT);
    g_auto(procreg_entry) still = {0};
    CHECK_OK(procreg_lookup_entry_key(f->reg, kc, &still, &err), err);
    CHECK(still.revision == r2);
    CHECK_OK(procreg_unregister_key(f->reg, kc, r2, &err), err);
    CHECK_RC(procreg_lookup_key(f->reg, kc, &o, NULL), PROCREG_ENOTFOUND);
    CHECK_ERR(procreg_unregister_key(f->reg, kc, r2, &err), err,
              PROCREG_ENOTFOUND);

    /* if_revision 0: whatever it is. */
    CHECK_OK(procreg_register_key(f->reg, kc, NULL, NULL, NULL, &err), err);
    CHECK_OK(procreg_unregister_key(f->reg, kc, 0, &err), err);
    CHECK_ERR(procreg_unregister_key(f->reg, kc, 0, &err), err,
              PROCREG_ENOTFOUND);

    size_t n = 0;
    CHECK_OK(procreg_count(f->reg, NULL, &n, &err), err);
    CHECK_MSG(n == 1, "count %zu, expected only svc/b left", n);
}

/* ------------------------------------------------------------------------ */
/* Cases: update_metadata                                                   */

void case_update_replace(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    g_auto(procreg_entry) a = {0};
    CHECK_OK(procreg_register(f->reg, "svc", "a", NULL,
                              g_variant_new_parsed("{'x': <1>, 'y': <'s'>}"),
                              &a, &err),
             err);

    g_autoptr(GVariant) m2 = cx_md("{'z': <true>}");
    CHECK_OK(procreg_update_metadata(f->reg, "svc", "a", m2,
                                     PROCREG_UPDATE_REPLACE, &err),
             err);
    g_auto(procreg_entry) e2 = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "svc", "a", &e2, &err), err);
    g_autofree char *d2 = cx_describe(e2.metadata);
    CHECK_MSG(cx_variant_eq0(e2.metadata, m2), "after REPLACE got %s", d2);
    CHECK(e2.revision > a.revision);
    CHECK(cx_owner_eq(&e2.owner, &a.owner));
    CHECK_MSG(e2.registered_at == a.registered_at,
              "update_metadata changed registered_at");

    /* Key form with if_revision and the new revision back. */
    g_autoptr(procreg_key) k = NULL;
    CHECK_OK(procreg_key_new("svc", "a", &k, &err), err);
    g_autoptr(GVariant) m3 = cx_md("{'n': <uint64 3>}");
    uint64_t r3 = 0;
    CHECK_OK(procreg_update_metadata_key(f->reg, k, m3,
                                         PROCREG_UPDATE_REPLACE, e2.revision,
                                         &r3, &err),
             err);
    CHECK(r3 > e2.revision);
    g_auto(procreg_entry) e3 = {0};
    CHECK_OK(procreg_lookup_entry_key(f->reg, k, &e3, &err), err);
    CHECK_MSG(e3.revision == r3,
              "the revision update_metadata returned (%" G_GUINT64_FORMAT
              ") is not the entry's (%" G_GUINT64_FORMAT ")", r3,
              e3.revision);
    CHECK(cx_variant_eq0(e3.metadata, m3));

    /* A stale if_revision changes nothing. */
    uint64_t r_unused = 0;
    CHECK_ERR(procreg_update_metadata_key(f->reg, k, m2,
                                          PROCREG_UPDATE_REPLACE, e2.revision,
                                          &r_unused, &err),
              err, PROCREG_ECONFLICT);
    g_auto(procreg_entry) e4 = {0};
    CHECK_OK(procreg_lookup_entry_key(f->reg, k, &e4, &err), err);
    CHECK(e4.revision == r3);
    CHECK(cx_variant_eq0(e4.metadata, m3));

    /* REPLACE with NULL removes the metadata. */
    CHECK_OK(procreg_update_metadata(f->reg, "svc", "a", NULL,
                                     PROCREG_UPDATE_REPLACE, &err),
             err);
    g_auto(procreg_entry) e5 = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "svc", "a", &e5, &err), err);
    g_autofree char *d5 = cx_describe(e5.metadata);
    CHECK_MSG(e5.metadata == NULL, "REPLACE with NULL left %s", d5);
    CHECK(e5.revision > r3);

    /* Missing keys. */
    CHECK_ERR(procreg_update_metadata(f->reg, "svc", "missing", m2,
                                      PROCREG_UPDATE_REPLACE, &err),
              err, PROCREG_ENOTFOUND);
    g_autoptr(procreg_key) km = NULL;
    CHECK_OK(procreg_key_new("svc", "missing", &km, &err), err);
    CHECK_ERR(procreg_update_metadata_key(f->reg, km, m2,
                                          PROCREG_UPDATE_MERGE, 7, NULL,
                                          &err),
              err, PROCREG_ENOTFOUND);
    CHECK_RC(procreg_lookup(f->reg, "svc", "missing", &a.owner, NULL),
             PROCREG_ENOTFOUND);
}

void case_update_merge(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    CHECK_RC(cx_quick_register(f->reg, "svc", "a",
                            "{'a': <int32 1>, 'b': <'x'>}"),
             0);
    g_autoptr(GVariant) add = cx_md("{'b': <'y'>, 'c': <true>}");
    CHECK_OK(procreg_update_metadata(f->reg, "svc", "a", add,
                                     PROCREG_UPDATE_MERGE, &err),
             err);
    g_auto(procreg_entry) e = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "svc", "a", &e, &err), err);
    g_autoptr(GVariant) want = cx_md("{'a': <int32 1>, 'b': <'y'>, "
                                  "'c': <true>}");
    g_autofree char *d = cx_describe(e.metadata);
    CHECK_MSG(dict_eq(e.metadata, want), "MERGE gave %s", d);
    CHECK(e.metadata != NULL &&
          g_variant_is_of_type(e.metadata, G_VARIANT_TYPE_VARDICT));

    /* Merge into an entry without metadata. */
    CHECK_RC(cx_quick_register(f->reg, "svc", "bare", NULL), 0);
    CHECK_OK(procreg_update_metadata(f->reg, "svc", "bare", add,
                                     PROCREG_UPDATE_MERGE, &err),
             err);
    g_auto(procreg_entry) e2 = {0};
    CHECK_OK(procreg_lookup_entry(f->reg, "svc", "bare", &e2, &err), err);
    g_autofree char *d2 = cx_describe(e2.metadata);
    CHECK_MSG(dict_eq(e2.metadata, add), "MERGE into none gave %s", d2);

    /* Merge honours if_revision. */
    g_autoptr(procreg_key) k = NULL;
    CHECK_OK(procreg_key_new("svc", "a", &k, &err), err);
    CHECK_ERR(procreg_update_metadata_key(
                  f->reg, k, g_variant_new_parsed("{'d': <1>}"),
                  PROCREG_UPDATE_MERGE, e.revision + 1000, NULL, &err),
              err, PROCREG_ECONFLICT);
    uint64_t r = 0;
    CHECK_OK(procreg_update_metadata_key(f->reg, k,
                                         g_variant_new_parsed("{'d': <1>}"),
                                         PROCREG_UPDATE_MERGE, e.revision, &r,
                                         &err),
             err);
    CHECK(r > e.revision);
    g_auto(procreg_entry) e3 = {0};
    CHECK_OK(procreg_lookup_entry_key(f->reg, k, &e3, &err), err);
    CHECK(e3.revision == r);
    CHECK(e3.metadata != NULL && g_variant_n_children(e3.metadata) == 4);
}

/* ------------------------------------------------------------------------ */
/* Cases: list, count                                                       */

void case_list(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    const char *names[] = {"zeta", "alpha", "Mid", "\xc3\xa4"};
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++)
        CHECK_RC(cx_quick_register(f->reg, "b-ns", names[i], "{'i': <1>}"), 0);
    CHECK_RC(cx_quick_register(f->reg, "a-ns", "x", NULL), 0);
    CHECK_RC(cx_quick_register(f->reg, NULL, "p", NULL), 0);

    g_auto(EntryList) l = {0};
    CHECK_OK(procreg_list(f->reg, "b-ns", &l.v, &l.n, &err), err);
    CHECK_NAMES(l, "b-ns/Mid b-ns/alpha b-ns/zeta b-ns/\xc3\xa4");
    g_autoptr(GVariant) want = cx_md("{'i': <1>}");
    procreg_owner self;
    procreg_owner_self(&self);
    for (size_t i = 0; i < l.n; i++) {
        g_auto(procreg_entry) e = {0};
        CHECK_OK(procreg_lookup_entry(f->reg, "b-ns", l.v[i].name, &e, &err),
                 err);
        CHECK(l.v[i].revision == e.revision);
        CHECK(l.v[i].registered_at == e.registered_at);
        CHECK(cx_owner_eq(&l.v[i].owner, &self));
        CHECK(cx_variant_eq0(l.v[i].metadata, want));
    }

    g_auto(EntryList) all = {0};
    CHECK_OK(procreg_list(f->reg, NULL, &all.v, &all.n, &err), err);
    CHECK_NAMES(all, "a-ns/x b-ns/Mid b-ns/alpha b-ns/zeta b-ns/\xc3\xa4 "
                     "production/p");

    g_auto(EntryList) none = {0};
    CHECK_OK(procreg_list(f->reg, "empty", &none.v, &none.n, &err), err);
    CHECK_NAMES(none, "");

    g_auto(EntryList) bad = {0};
    CHECK_ERR(procreg_list(f->reg, "", &bad.v, &bad.n, &err), err,
              PROCREG_EINVAL);
}

void case_count(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    size_t n = 99;
    CHECK_OK(procreg_count(f->reg, NULL, &n, &err), err);
    CHECK(n == 0);
    for (int i = 0; i < 5; i++) {
        g_autofree char *name = g_strdup_printf("n%d", i);
        CHECK_RC(cx_quick_register(f->reg, "c1", name, NULL), 0);
    }
    CHECK_RC(cx_quick_register(f->reg, "c2", "only", NULL), 0);
    CHECK_OK(procreg_count(f->reg, "c1", &n, &err), err);
    CHECK_MSG(n == 5, "count(c1) = %zu", n);
    CHECK_OK(procreg_count(f->reg, "c2", &n, &err), err);
    CHECK(n == 1);
    CHECK_OK(procreg_count(f->reg, "c3", &n, &err), err);
    CHECK(n == 0);
    CHECK_OK(procreg_count(f->reg, NULL, &n, &err), err);
    CHECK_MSG(n == 6, "count(all) = %zu", n);
    CHECK_OK(procreg_unregister(f->reg, "c1", "n2", &err), err);
    CHECK_OK(procreg_count(f->reg, "c1", &n, &err), err);
    CHECK(n == 4);
    CHECK_OK(procreg_count(f->reg, NULL, &n, &err), err);
    CHECK(n == 5);
    CHECK_ERR(procreg_count(f->reg, "bad\n", &n, &err), err, PROCREG_EINVAL);

    /* Namespaces with their counts (the backend's count_namespaces when it
     * has one), sorted; one that was emptied is gone. */
    CHECK_RC(cx_quick_register(f->reg, "c0", "brief", NULL), 0);
    CHECK_OK(procreg_unregister(f->reg, "c0", "brief", &err), err);
    procreg_namespace_info *infos = NULL;
    size_t n_infos = 0;
    CHECK_OK(procreg_namespace_list(f->reg, &infos, &n_infos, &err), err);
    CHECK_MSG(n_infos == 2 && strcmp(infos[0].ns, "c1") == 0 &&
                  infos[0].entries == 4 && strcmp(infos[1].ns, "c2") == 0 &&
                  infos[1].entries == 1,
              "namespaces: %zu, first %s=%zu", n_infos,
              n_infos ? infos[0].ns : "-", n_infos ? infos[0].entries : 0);
    procreg_namespace_info_free(infos, n_infos);
}

/* ------------------------------------------------------------------------ */
/* Cases: find                                                              */

static void check_find(Fixture *f, const char *ns, const char *key,
                       const char *value_text, const char *expected)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GVariant) v = cx_parsed(value_text);
    g_auto(EntryList) l = {0};
    int rc = procreg_find(f->reg, ns, key, v, &l.v, &l.n, &err);
    CHECK_MSG(rc == 0, "find(%s, %s, %s): %d (%s): %s", ns ? ns : "NULL",
              key, value_text, rc, procreg_strerror(rc),
              err ? err->message : "(no GError)");
    CHECK(err == NULL);
    cx_check_list_shape(&l);
    CHECK_HELPER();
    g_autofree char *got = cx_entries_describe(l.v, l.n);
    CHECK_MSG(strcmp(got, expected) == 0,
              "find(%s, %s, %s): expected [%s], got [%s]", ns ? ns : "NULL",
              key, value_text, expected, got);
    for (size_t i = 0; i < l.n; i++) {
        g_autoptr(GVariant) have =
            l.v[i].metadata ? g_variant_lookup_value(l.v[i].metadata, key,
                                                     NULL)
                            : NULL;
        CHECK_MSG(have != NULL, "find result %s/%s lacks its metadata",
                  l.v[i].ns, l.v[i].name);
    }
    size_t n = 12345;
    CHECK_OK(procreg_find_count(f->reg, ns, key, v, &n, &err), err);
    CHECK_MSG(n == l.n, "find_count(%s, %s) = %zu but find gave %zu", key,
              value_text, n, l.n);
}

static void check_find_einval(Fixture *f, const char *ns, const char *key,
                              GVariant *v, const char *what)
{
    g_autoptr(GError) err = NULL;
    g_auto(EntryList) l = {0};
    int rc = procreg_find(f->reg, ns, key, v, &l.v, &l.n, &err);
    CHECK_MSG(rc == PROCREG_EINVAL, "find with %s: expected EINVAL, got %d "
              "(%s)", what, rc, procreg_strerror(rc));
    CHECK_MSG(err != NULL && err->code == PROCREG_EINVAL,
              "find with %s: no matching GError", what);
    g_clear_error(&err);
    size_t n = 0;
    rc = procreg_find_count(f->reg, ns, key, v, &n, &err);
    CHECK_MSG(rc == PROCREG_EINVAL, "find_count with %s: expected EINVAL, "
              "got %d (%s)", what, rc, procreg_strerror(rc));
}

void case_find(Fixture *f)
{
    CHECK_RC(cx_quick_register(f->reg, "f1", "a",
                            "{'port': <int32 80>, 'tls': <true>, "
                            "'role': <'web'>}"),
             0);
    CHECK_RC(cx_quick_register(f->reg, "f1", "b",
                            "{'port': <uint64 80>, 'tls': <false>, "
                            "'role': <'db'>}"),
             0);
    CHECK_RC(cx_quick_register(f->reg, "f1", "c",
                            "{'port': <int16 443>, 'role': <'web'>}"),
             0);
    CHECK_RC(cx_quick_register(f->reg, "f1", "d", NULL), 0);
    CHECK_RC(cx_quick_register(f->reg, "f1", "e", "{'port': <'80'>}"), 0);
    CHECK_RC(cx_quick_register(f->reg, "f1", "g", "{'neg': <int64 -1>}"), 0);
    CHECK_RC(cx_quick_register(f->reg, "f1", "h",
                            "{'big': <uint64 18446744073709551615>}"),
             0);
    CHECK_RC(cx_quick_register(f->reg, "f1", "i", "{'one': <int32 1>}"), 0);
    CHECK_RC(cx_quick_register(f->reg, "f2", "x",
                            "{'port': <byte 80>, 'role': <'web'>}"),
             0);

    /* Integers of every width compare by value. */
    const char *eighty[] = {"int32 80", "uint64 80", "byte 80", "int16 80",
                            "uint16 80", "uint32 80", "int64 80"};
    for (size_t i = 0; i < G_N_ELEMENTS(eighty); i++) {
        check_find(f, "f1", "port", eighty[i], "f1/a f1/b");
        CHECK_HELPER();
    }
    check_find(f, NULL, "port", "int32 80", "f1/a f1/b f2/x");
    CHECK_HELPER();
    check_find(f, "f2", "port", "uint64 80", "f2/x");
    CHECK_HELPER();
    check_find(f, "f1", "port", "int64 443", "f1/c");
    CHECK_HELPER();
    /* Strings, not numbers. */
    check_find(f, "f1", "port", "'80'", "f1/e");
    CHECK_HELPER();
    check_find(f, "f1", "role", "'web'", "f1/a f1/c");
    CHECK_HELPER();
    check_find(f, NULL, "role", "'web'", "f1/a f1/c f2/x");
    CHECK_HELPER();
    check_find(f, "f1", "role", "'WEB'", "");
    CHECK_HELPER();
    /* Booleans. */
    check_find(f, "f1", "tls", "true", "f1/a");
    CHECK_HELPER();
    check_find(f, "f1", "tls", "false", "f1/b");
    CHECK_HELPER();
    /* Value, not bit pattern: -1 is not 2^64-1. */
    check_find(f, "f1", "neg", "int32 -1", "f1/g");
    CHECK_HELPER();
    check_find(f, "f1", "neg", "uint64 18446744073709551615", "");
    CHECK_HELPER();
    check_find(f, "f1", "big", "int64 -1", "");
    CHECK_HELPER();
    check_find(f, "f1", "big", "uint64 18446744073709551615", "f1/h");
    CHECK_HELPER();
    /* Classes do not mix: true is not 1, 80 is not '80'. */
    check_find(f, "f1", "one", "true", "");
    CHECK_HELPER();
    check_find(f, "f1", "tls", "int32 1", "");
    CHECK_HELPER();
    check_find(f, "f1", "port", "'443'", "");
    CHECK_HELPER();
    /* Absent keys and namespaces. */
    check_find(f, "f1", "missing", "'x'", "");
    CHECK_HELPER();
    check_find(f, "nowhere", "port", "int32 80", "");
    CHECK_HELPER();

    /* Values of other types, empty keys, bad namespaces: EINVAL. */
    const char *bad_values[] = {"3.5", "@as ['web']", "{'k': <1>}",
                                "(int32 80,)", "<int32 80>", "@mi 80"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad_values); i++) {
        g_autoptr(GVariant) v = cx_parsed(bad_values[i]);
        check_find_einval(f, "f1", "port", v, bad_values[i]);
        CHECK_HELPER();
    }
    g_autoptr(GVariant) s = cx_parsed("'web'");
    check_find_einval(f, "f1", "", s, "an empty key");
    CHECK_HELPER();
    check_find_einval(f, "f1", NULL, s, "a NULL key");
    CHECK_HELPER();
    check_find_einval(f, "f1", "role", NULL, "a NULL value");
    CHECK_HELPER();
    check_find_einval(f, "", "role", s, "an empty namespace");
    CHECK_HELPER();
    check_find_einval(f, "bad\xff", "role", s, "an invalid namespace");
    CHECK_HELPER();
}

/* ------------------------------------------------------------------------ */
/* Cases: revisions                                                         */

void case_revision_order(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    uint64_t revs[16];
    size_t n = 0;
    g_auto(procreg_entry) e = {0};

#define TAKE(expr_rev)                                                     \
    do {                                                                   \
        uint64_t r_ = (expr_rev);                                          \
        CHECK_MSG(n == 0 || r_ > revs[n - 1],                              \
                  "revision %" G_GUINT64_FORMAT " after %" G_GUINT64_FORMAT \
                  " (change %zu): not strictly increasing", r_,            \
                  revs[n - 1], n);                                         \
        revs[n++] = r_;                                                    \
    } while (0)

    CHECK_OK(procreg_register(f->reg, "r1", "a", NULL, NULL, &e, &err), err);
    TAKE(e.revision);
    procreg_entry_clear(&e);
    CHECK_OK(procreg_register(f->reg, "r1", "b", NULL, NULL, &e, &err), err);
    TAKE(e.revision);
    procreg_entry_clear(&e);
    CHECK_OK(procreg_register(f->reg, "r2", "a", NULL, NULL, &e, &err), err);
    TAKE(e.revision);
    procreg_entry_clear(&e);

    g_autoptr(procreg_key) ka = NULL;
    CHECK_OK(procreg_key_new("r1", "a", &ka, &err), err);
    uint64_t r = 0;
    CHECK_OK(procreg_update_metadata_key(f->reg, ka,
                                         g_variant_new_parsed("{'x': <1>}"),
                                         PROCREG_UPDATE_REPLACE, 0, &r, &err),
             err);
    TAKE(r);
    /* Failed operations hand out nothing that later goes backwards. */
    CHECK_RC(procreg_register(f->reg, "r1", "a", NULL, NULL, NULL, NULL),
             PROCREG_EEXISTS);
    CHECK_RC(procreg_update_metadata_key(f->reg, ka, NULL,
                                         PROCREG_UPDATE_REPLACE, 1, NULL,
                                         NULL),
             PROCREG_ECONFLICT);
    CHECK_OK(procreg_update_metadata_key(f->reg, ka,
                                         g_variant_new_parsed("{'x': <2>}"),
                                         PROCREG_UPDATE_MERGE, r, &r, &err),
             err);
    TAKE(r);
    CHECK_OK(procreg_update_metadata(f->reg, "r2", "a",
                                     g_variant_new_parsed("{'y': <1>}"),
                                     PROCREG_UPDATE_REPLACE, &err),
             err);
    CHECK_OK(procreg_lookup_entry(f->reg, "r2", "a", &e, &err), err);
    TAKE(e.revision);
    procreg_entry_clear(&e);
    CHECK_OK(procreg_unregister(f->reg, "r1", "b", &err), err);
    CHECK_OK(procreg_register(f->reg, "r1", "b", NULL, NULL, &e, &err), err);
    TAKE(e.revision);
    procreg_entry_clear(&e);
    CHECK_OK(procreg_unregister_key(f->reg, ka, r, &err), err);
    CHECK_OK(procreg_register(f->reg, "r1", "a", NULL, NULL, &e, &err), err);
    TAKE(e.revision);
    procreg_entry_clear(&e);

    /* The list shows the latest revision of each entry. */
    g_auto(EntryList) l = {0};
    CHECK_OK(procreg_list(f->reg, NULL, &l.v, &l.n, &err), err);
    CHECK_NAMES(l, "r1/a r1/b r2/a");
    CHECK(l.v[0].revision == revs[n - 1]);
    CHECK(l.v[1].revision == revs[n - 2]);
    CHECK(l.v[2].revision == revs[n - 3]);
#undef TAKE
}
