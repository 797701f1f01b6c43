/*
 * The dispatcher against the counting fake: validation happens before a
 * backend is called, backend errors pass through with their code, the
 * core's fallbacks and the locking policy the capability flags ask for.
 */
#include "fake-backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(procreg_entry, procreg_entry_clear)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(procreg_health, procreg_health_clear)

typedef struct {
    procreg *reg;
    FakeBackend *fb;
} Fixture;

static void open_fake(Fixture *f, const procreg_backend_ops *ops)
{
    GError *err = NULL;
    int rc = procreg_open_with_backend(ops, NULL, &f->reg, &err);
    g_assert_no_error(err);
    g_assert_cmpint(rc, ==, 0);
    f->fb = fake_backend_last();
    g_assert_nonnull(f->fb);
    g_assert_true(f->fb->ops == ops);
    /* Count from here: what the core does at open is not under test. */
    for (int op = FAKE_OP_REGISTER; op < FAKE_N_OPS; op++)
        g_atomic_int_set(&f->fb->calls[op], 0);
}

static void setup_serial(Fixture *f, gconstpointer data)
{
    (void)data;
    open_fake(f, &fake_ops);
}

static void setup_min(Fixture *f, gconstpointer data)
{
    (void)data;
    open_fake(f, &fake_min_ops);
}

static void teardown(Fixture *f, gconstpointer data)
{
    (void)data;
    procreg_close(f->reg);
}

static pid_t dead_pid(void)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    g_assert_cmpint(pid, >, 0);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return pid;
}

/* ------------------------------------------------------------------------ */

#define EXPECT_EINVAL(call)                                                \
    do {                                                                   \
        int rc_ = (call);                                                  \
        if (rc_ != PROCREG_EINVAL)                                         \
            g_error("%s gave %d (%s), expected EINVAL", #call, rc_,        \
                    procreg_strerror(rc_));                                \
    } while (0)

static void test_validation_before_backend(Fixture *f, gconstpointer data)
{
    (void)data;
    char n256[257];
    memset(n256, 'x', 256);
    n256[256] = '\0';
    /* A control byte at the end of each word shape the checks take: 1-3,
     * 4-7 and 8 bytes and up (the last word overlapping). */
    const char *bad_names[] = {"",          n256,
                               "\xff",      "a\nb",
                               "a\x7f",     "abcd\x1f",
                               "abcdefgh\x01", "abcdefghijklmnop\t",
                               NULL};
    procreg_owner o;
    procreg_entry e = {0};
    procreg_entry *v = NULL;
    size_t n = 0;
    GVariant *md = g_variant_ref_sink(g_variant_new_parsed("{'a': <1>}"));
    GVariant *str = g_variant_ref_sink(g_variant_new_string("x"));

    for (size_t i = 0; i < G_N_ELEMENTS(bad_names); i++) {
        const char *bad = bad_names[i];
        GError *err = NULL;
        /* Bad name. */
        g_assert_cmpint(procreg_register(f->reg, "ns", bad, NULL, md, NULL,
                                         &err), ==, PROCREG_EINVAL);
        g_assert_error(err, PROCREG_ERROR, PROCREG_EINVAL);
        g_clear_error(&err);
        g_assert_cmpint(procreg_lookup(f->reg, "ns", bad, &o, &err), ==,
                        PROCREG_EINVAL);
        g_assert_error(err, PROCREG_ERROR, PROCREG_EINVAL);
        g_assert_nonnull(strstr(err->message, "name"));
        g_clear_error(&err);
        EXPECT_EINVAL(procreg_lookup_entry(f->reg, "ns", bad, &e, NULL));
        EXPECT_EINVAL(procreg_unregister(f->reg, "ns", bad, NULL));
        EXPECT_EINVAL(procreg_update_metadata(f->reg, "ns", bad, md,
                                              PROCREG_UPDATE_MERGE, NULL));
        if (bad == NULL)
            continue;
        /* Bad namespace. */
        EXPECT_EINVAL(procreg_register(f->reg, bad, "x", NULL, md, NULL,
                                       NULL));
        EXPECT_EINVAL(procreg_lookup(f->reg, bad, "x", &o, NULL));
        EXPECT_EINVAL(procreg_lookup_entry(f->reg, bad, "x", &e, NULL));
        EXPECT_EINVAL(procreg_unregister(f->reg, bad, "x", NULL));
        EXPECT_EINVAL(procreg_update_metadata(f->reg, bad, "x", md,
                                              PROCREG_UPDATE_REPLACE, NULL));
        EXPECT_EINVAL(procreg_list(f->reg, bad, &v, &n, NULL));
        EXPECT_EINVAL(procreg_count(f->reg, bad, &n, NULL));
        EXPECT_EINVAL(procreg_find(f->reg, bad, "a", str, &v, &n, NULL));
        EXPECT_EINVAL(procreg_find_count(f->reg, bad, "a", str, &n, NULL));
    }
    /* Names that are valid but not ASCII pass the miss's check too. */
    g_assert_cmpint(procreg_lookup(f->reg, "ns", "caf\xc3\xa9", &o, NULL), ==,
                    PROCREG_ENOTFOUND);
    g_assert_cmpint(procreg_lookup(f->reg, "\xce\xbb", "x", &o, NULL), ==,
                    PROCREG_ENOTFOUND);
    /* Bad metadata. */
    GVariant *wrong = g_variant_ref_sink(g_variant_new_parsed("{'a': 'b'}"));
    EXPECT_EINVAL(procreg_register(f->reg, "ns", "x", NULL, wrong, NULL,
                                   NULL));
    EXPECT_EINVAL(procreg_register(f->reg, "ns", "x", NULL,
                                   g_variant_new_int32(3), NULL, NULL));
    EXPECT_EINVAL(procreg_update_metadata(f->reg, "ns", "x", wrong,
                                          PROCREG_UPDATE_REPLACE, NULL));
    EXPECT_EINVAL(procreg_update_metadata(f->reg, "ns", "x", wrong,
                                          PROCREG_UPDATE_MERGE, NULL));
    /* Bad find arguments. */
    GVariant *dbl = g_variant_ref_sink(g_variant_new_double(1.0));
    EXPECT_EINVAL(procreg_find(f->reg, "ns", "a", dbl, &v, &n, NULL));
    EXPECT_EINVAL(procreg_find(f->reg, "ns", "", str, &v, &n, NULL));
    EXPECT_EINVAL(procreg_find(f->reg, "ns", NULL, str, &v, &n, NULL));
    EXPECT_EINVAL(procreg_find(f->reg, "ns", "a", NULL, &v, &n, NULL));
    EXPECT_EINVAL(procreg_find_count(f->reg, "ns", "a", dbl, &n, NULL));
    /* A dead owner. */
    procreg_owner dead = {.pid = dead_pid(), .start_time = 0};
    GError *err = NULL;
    g_assert_cmpint(procreg_register(f->reg, "ns", "x", &dead, NULL, NULL,
                                     &err), ==, PROCREG_ENOTALIVE);
    g_assert_error(err, PROCREG_ERROR, PROCREG_ENOTALIVE);
    g_clear_error(&err);
    /* Key form with a bad update mode. */
    procreg_key *k = NULL;
    g_assert_cmpint(procreg_key_new("ns", "x", &k, NULL), ==, 0);
    EXPECT_EINVAL(procreg_update_metadata_key(f->reg, k, md,
                                              (procreg_update_mode)7, 0, NULL,
                                              NULL));
    procreg_key_unref(k);

    /* A lookup by strings checks its names' characters only when the
     * backend found nothing (a hit proves them valid: only valid names
     * are ever stored), so the lookup slot saw the six names with bad
     * characters, as a name and as a namespace, and each still gave
     * EINVAL, and the two valid ones that are not ASCII; everything else
     * was refused before the backend. */
    for (int op = FAKE_OP_REGISTER; op < FAKE_N_OPS; op++)
        if (op != FAKE_OP_LOOKUP && g_atomic_int_get(&f->fb->calls[op]) != 0)
            g_error("the backend slot %d was called %d times for input the "
                    "core must refuse first", op, f->fb->calls[op]);
    g_assert_cmpint(f->fb->calls[FAKE_OP_LOOKUP], ==, 14);
    g_variant_unref(md);
    g_variant_unref(str);
    g_variant_unref(wrong);
    g_variant_unref(dbl);
}

/* Each call reaches exactly the slot it should, once. */
static void test_call_counts(Fixture *f, gconstpointer data)
{
    (void)data;
    FakeBackend *fb = f->fb;
    GError *err = NULL;
    procreg_owner o;

    g_assert_cmpint(procreg_register(f->reg, "ns", "a", NULL,
                                     g_variant_new_parsed("{'k': <1>}"), NULL,
                                     &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpint(fb->calls[FAKE_OP_REGISTER], ==, 1);
    /* The record: owner defaults to self, registered_at is now. */
    procreg_owner self;
    procreg_owner_self(&self);
    g_assert_cmpint(fb->last_record.owner.pid, ==, self.pid);
    g_assert_cmpuint(fb->last_record.owner.start_time, ==, self.start_time);
    g_assert_cmpint(llabs(fb->last_record.registered_at - g_get_real_time()),
                    <, 10 * G_USEC_PER_SEC);
    g_assert_nonnull(fb->last_record.metadata);

    g_assert_cmpint(procreg_lookup(f->reg, "ns", "a", &o, NULL), ==, 0);
    g_assert_cmpint(fb->calls[FAKE_OP_LOOKUP], ==, 1);
    g_assert_cmpint(fake_backend_data_calls(fb), ==, 2);

    procreg_key *k = NULL;
    g_assert_cmpint(procreg_key_new("ns", "a", &k, NULL), ==, 0);
    g_assert_cmpint(procreg_lookup_key(f->reg, k, &o, NULL), ==, 0);
    g_assert_cmpint(fb->calls[FAKE_OP_LOOKUP], ==, 2);
    g_auto(procreg_entry) e = {0};
    g_assert_cmpint(procreg_lookup_entry_key(f->reg, k, &e, NULL), ==, 0);
    g_assert_cmpint(fb->calls[FAKE_OP_LOOKUP_ENTRY], ==, 1);

    size_t n = 0;
    g_assert_cmpint(procreg_count(f->reg, "ns", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    g_assert_cmpint(fb->calls[FAKE_OP_COUNT], ==, 1);
    g_assert_cmpint(fb->calls[FAKE_OP_LIST_ALL], ==, 0);

    GVariant *one = g_variant_ref_sink(g_variant_new_int64(1));
    procreg_entry *v = NULL;
    g_assert_cmpint(procreg_find(f->reg, "ns", "k", one, &v, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 1);
    procreg_entries_free(v, n);
    g_assert_cmpint(fb->calls[FAKE_OP_FIND], ==, 1);
    g_variant_unref(one);

    /* MERGE is done by the core: the backend receives the merged dict. */
    g_assert_cmpint(procreg_update_metadata(f->reg, "ns", "a",
                                            g_variant_new_parsed(
                                                "{'j': <2>}"),
                                            PROCREG_UPDATE_MERGE, &err),
                    ==, 0);
    g_assert_no_error(err);
    g_assert_nonnull(fb->last_update);
    g_assert_cmpuint(g_variant_n_children(fb->last_update), ==, 2);

    g_assert_cmpint(procreg_unregister_key(f->reg, k, 0, NULL), ==, 0);
    g_assert_cmpint(fb->calls[FAKE_OP_UNREGISTER], ==, 1);
    procreg_key_unref(k);
}

/* Without the optional slots the core falls back on list_all. */
static void test_fallbacks(Fixture *f, gconstpointer data)
{
    (void)data;
    FakeBackend *fb = f->fb;
    for (int i = 0; i < 3; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "n%d", i);
        g_assert_cmpint(procreg_register(f->reg, "fb", name, NULL,
                                         g_variant_new_parsed(
                                             "{'i': <%i>}", i),
                                         NULL, NULL), ==, 0);
    }
    g_assert_cmpint(procreg_register(f->reg, "other", "z", NULL, NULL, NULL,
                                     NULL), ==, 0);
    size_t n = 0;
    g_assert_cmpint(procreg_count(f->reg, "fb", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 3);
    g_assert_cmpint(procreg_count(f->reg, NULL, &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 4);
    GVariant *two = g_variant_ref_sink(g_variant_new_uint16(2));
    g_assert_cmpint(procreg_find_count(f->reg, "fb", "i", two, &n, NULL), ==,
                    0);
    g_assert_cmpuint(n, ==, 1);
    g_variant_unref(two);
    g_assert_cmpint(fb->calls[FAKE_OP_LIST_ALL], >=, 3);
    for (int op = FAKE_OP_COUNT; op < FAKE_N_OPS; op++)
        g_assert_cmpint(fb->calls[op], ==, 0); /* slots it does not have */

    /* Namespace counts come from list_all too. */
    procreg_namespace_info *infos = NULL;
    size_t n_infos = 0;
    g_assert_cmpint(procreg_namespace_list(f->reg, &infos, &n_infos, NULL),
                    ==, 0);
    g_assert_cmpuint(n_infos, ==, 2);
    g_assert_cmpstr(infos[0].ns, ==, "fb");
    g_assert_cmpuint(infos[0].entries, ==, 3);
    g_assert_cmpstr(infos[1].ns, ==, "other");
    g_assert_cmpuint(infos[1].entries, ==, 1);
    procreg_namespace_info_free(infos, n_infos);

    /* The not-found message lists names found through list_all. */
    GError *err = NULL;
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(f->reg, "fb", "missing", &o, &err), ==,
                    PROCREG_ENOTFOUND);
    g_assert_error(err, PROCREG_ERROR, PROCREG_ENOTFOUND);
    g_assert_nonnull(strstr(err->message, "fb"));
    g_assert_true(strstr(err->message, "n0") || strstr(err->message, "n1") ||
                  strstr(err->message, "n2"));
    g_assert_null(strstr(err->message, "\"z\""));
    g_clear_error(&err);

    /* drop_namespace through the dispatch wrapper falls back too. */
    procreg_backend *b = NULL;
    g_assert_cmpint(procreg_backend_open("fake_min", NULL, &b, &err), ==, 0);
    g_assert_no_error(err);
    FakeBackend *fb2 = fake_backend_last();
    procreg_key *k = NULL;
    g_assert_cmpint(procreg_key_new("d", "x", &k, NULL), ==, 0);
    procreg_record rec = {.registered_at = g_get_real_time()};
    procreg_owner_self(&rec.owner);
    g_assert_cmpint(procreg_backend_register_entry(b, k, &rec, NULL, NULL),
                    ==, 0);
    procreg_key_unref(k);
    GArray *removed = procreg_entry_array_new();
    g_assert_cmpint(procreg_backend_drop_namespace(b, "d", removed, &err), ==,
                    0);
    g_assert_no_error(err);
    g_assert_cmpuint(removed->len, ==, 1);
    g_array_unref(removed);
    g_assert_cmpint(fb2->calls[FAKE_OP_UNREGISTER], ==, 1);
    g_assert_cmpint(procreg_backend_count(b, "d", &n, NULL), ==, 0);
    g_assert_cmpuint(n, ==, 0);
    procreg_backend_close(b);
}

/* A slot added in version 2 is called only from tables of version 2: a
 * module built for version 1 has no such field (here: one that would
 * fail if called). */
static int count_namespaces_refused(void *state, GArray *out, GError **error)
{
    (void)state;
    (void)out;
    return procreg_set_error(error, PROCREG_EBACKEND, "slot called");
}

static void test_version_gate(void)
{
    for (unsigned version = 1; version <= 2; version++) {
        procreg_backend_ops ops = fake_min_ops;
        ops.version = version;
        ops.count_namespaces = count_namespaces_refused;
        procreg *reg = NULL;
        g_assert_cmpint(procreg_open_with_backend(&ops, NULL, &reg, NULL), ==,
                        0);
        g_assert_cmpint(procreg_register(reg, "v", "x", NULL, NULL, NULL,
                                         NULL), ==, 0);
        procreg_namespace_info *infos = NULL;
        size_t n = 0;
        GError *err = NULL;
        int rc = procreg_namespace_list(reg, &infos, &n, &err);
        if (version == 1) {
            g_assert_no_error(err);
            g_assert_cmpint(rc, ==, 0);
            g_assert_cmpuint(n, ==, 1);
            g_assert_cmpuint(infos[0].entries, ==, 1);
        } else {
            g_assert_error(err, PROCREG_ERROR, PROCREG_EBACKEND);
            g_assert_cmpint(rc, ==, PROCREG_EBACKEND);
            g_assert_null(infos);
            g_clear_error(&err);
        }
        procreg_namespace_info_free(infos, n);
        procreg_close(reg);
    }
}

/* Groups need a version-3 table with PROCREG_CAP_GROUPS: on older or
 * group-less backends every group call answers PROCREG_ENOTSUP and
 * changes nothing; a table that claims groups it cannot have is refused. */
static int group_join_refused(void *state, const procreg_key *key,
                              const procreg_record *record,
                              procreg_member *joined, GError **error)
{
    (void)state;
    (void)key;
    (void)record;
    (void)joined;
    return procreg_set_error(error, PROCREG_EBACKEND, "slot called");
}

static void test_version_gate_groups(void)
{
    for (unsigned version = 1; version <= 3; version++) {
        procreg_backend_ops ops = fake_min_ops;
        ops.version = version;
        /* Present but not claimed (no PROCREG_CAP_GROUPS): never called. */
        ops.group_join = group_join_refused;
        procreg *reg = NULL;
        g_assert_cmpint(procreg_open_with_backend(&ops, NULL, &reg, NULL), ==,
                        0);
        GError *err = NULL;
        g_assert_cmpint(procreg_join(reg, "v", "g", NULL, NULL, NULL, &err),
                        ==, PROCREG_ENOTSUP);
        g_assert_error(err, PROCREG_ERROR, PROCREG_ENOTSUP);
        g_clear_error(&err);
        size_t n = 9;
        g_assert_cmpint(procreg_group_count(reg, "v", "g", &n, NULL), ==,
                        PROCREG_ENOTSUP);
        g_assert_cmpuint(n, ==, 0);
        procreg_member *members = NULL;
        g_assert_cmpint(procreg_members(reg, "v", "g", &members, &n, NULL), ==,
                        PROCREG_ENOTSUP);
        g_assert_null(members);
        g_assert_cmpint(procreg_leave(reg, "v", "g", &n, NULL), ==,
                        PROCREG_ENOTSUP);
        g_assert_cmpint(procreg_wait_members(reg, "v", "g", 1, 0, NULL, NULL,
                                             NULL),
                        ==, PROCREG_ENOTSUP);
        /* Entries work as before. */
        g_assert_cmpint(procreg_register(reg, "v", "x", NULL, NULL, NULL,
                                         NULL), ==, 0);
        procreg_close(reg);
    }
    procreg_backend_ops ops = fake_min_ops;
    ops.caps |= PROCREG_CAP_GROUPS;
    GError *err = NULL;
    procreg *reg = NULL;
    /* Claimed without the slots, or on a version-2 table. */
    g_assert_cmpint(procreg_open_with_backend(&ops, NULL, &reg, &err), ==,
                    PROCREG_EINVAL);
    g_assert_nonnull(strstr(err->message, "group_join"));
    g_clear_error(&err);
    ops.version = 2;
    g_assert_cmpint(procreg_open_with_backend(&ops, NULL, &reg, &err), ==,
                    PROCREG_EINVAL);
    g_assert_nonnull(strstr(err->message, "version"));
    g_clear_error(&err);
    g_assert_null(reg);
}

/* A backend's error comes back with its code and message. */
static void test_errors_pass_through(Fixture *f, gconstpointer data)
{
    (void)data;
    FakeBackend *fb = f->fb;
    const int codes[] = {PROCREG_ERROR_FAILED, PROCREG_ENOMEM,
                         PROCREG_ENOTSUP,      PROCREG_ETIMEDOUT,
                         PROCREG_ECANCELLED,   PROCREG_ECONFLICT,
                         PROCREG_EFULL,        PROCREG_EBACKEND};
    g_assert_cmpint(procreg_register(f->reg, "ns", "present", NULL, NULL,
                                     NULL, NULL), ==, 0);
    procreg_key *k = NULL;
    g_assert_cmpint(procreg_key_new("ns", "present", &k, NULL), ==, 0);

    for (size_t i = 0; i < G_N_ELEMENTS(codes); i++) {
        int code = codes[i];
        GError *err = NULL;
        procreg_entry e = {0};
        procreg_entry *v = NULL;
        size_t n = 0;
        char want[64];
        g_snprintf(want, sizeof want, "fake failure %d", code);

#define PASSES(op, call)                                                   \
    do {                                                                   \
        fb->fail[op] = code;                                               \
        int rc_ = (call);                                                  \
        fb->fail[op] = 0;                                                  \
        if (rc_ != code)                                                   \
            g_error("%s: backend said %d, core returned %d", #call, code,  \
                    rc_);                                                  \
        g_assert_error(err, PROCREG_ERROR, code);                          \
        if (strstr(err->message, want) == NULL)                            \
            g_error("%s: the backend's message is lost: \"%s\"", #call,    \
                    err->message);                                         \
        g_clear_error(&err);                                               \
    } while (0)

        PASSES(FAKE_OP_REGISTER, procreg_register(f->reg, "ns", "new", NULL,
                                                  NULL, NULL, &err));
        PASSES(FAKE_OP_LOOKUP_ENTRY,
               procreg_lookup_entry(f->reg, "ns", "present", &e, &err));
        PASSES(FAKE_OP_UNREGISTER,
               procreg_unregister_key(f->reg, k, 0, &err));
        PASSES(FAKE_OP_UPDATE,
               procreg_update_metadata(f->reg, "ns", "present", NULL,
                                       PROCREG_UPDATE_REPLACE, &err));
        PASSES(FAKE_OP_LIST_ALL, procreg_list(f->reg, "ns", &v, &n, &err));
        PASSES(FAKE_OP_COUNT, procreg_count(f->reg, "ns", &n, &err));
#undef PASSES
        procreg_entry_clear(&e);

        /* lookup has no GError: the core makes one with the code. */
        procreg_owner o;
        fb->fail[FAKE_OP_LOOKUP] = code;
        int rc = procreg_lookup(f->reg, "ns", "present", &o, &err);
        int rc2 = procreg_lookup_key(f->reg, k, &o, NULL);
        fb->fail[FAKE_OP_LOOKUP] = 0;
        g_assert_cmpint(rc, ==, code);
        g_assert_cmpint(rc2, ==, code);
        g_assert_error(err, PROCREG_ERROR, code);
        g_clear_error(&err);
    }
    /* The entry is still there and intact. */
    procreg_owner o;
    g_assert_cmpint(procreg_lookup_key(f->reg, k, &o, NULL), ==, 0);
    procreg_key_unref(k);
}

static void test_health_pass_through(Fixture *f, gconstpointer data)
{
    (void)data;
    const procreg_health_status st[] = {PROCREG_HEALTH_OK,
                                        PROCREG_HEALTH_DEGRADED,
                                        PROCREG_HEALTH_FAILED};
    for (size_t i = 0; i < G_N_ELEMENTS(st); i++) {
        f->fb->health = (int)st[i];
        g_auto(procreg_health) h = {0};
        GError *err = NULL;
        g_assert_cmpint(procreg_health_check(f->reg, &h, &err), ==, 0);
        g_assert_no_error(err);
        g_assert_cmpint(h.status, ==, st[i]);
        g_assert_cmpstr(h.backend, ==, "fake");
        g_assert_nonnull(h.details);
        g_assert_true(g_variant_is_of_type(h.details,
                                           G_VARIANT_TYPE_VARDICT));
    }
    g_assert_cmpint(f->fb->calls[FAKE_OP_HEALTH], ==, 3);
}

static void test_close_destroys(void)
{
    procreg *reg = NULL;
    g_assert_cmpint(procreg_open("fake", &reg, NULL), ==, 0);
    FakeBackend *fb = fake_backend_last();
    g_assert_nonnull(fb);
    g_assert_cmpstr(procreg_get_spec(reg), ==, "fake");
    procreg_close(reg);
    /* fake_destroy() forgets the instance it frees. */
    g_assert_null(fake_backend_last());
    procreg_close(NULL);
}

static void test_init_error(void)
{
    procreg *reg = NULL;
    GError *err = NULL;
    int rc = procreg_open("fake:fail_init=-12", &reg, &err);
    g_assert_cmpint(rc, ==, PROCREG_EBACKEND);
    g_assert_error(err, PROCREG_ERROR, PROCREG_EBACKEND);
    g_assert_nonnull(strstr(err->message, "fake init told to fail"));
    g_assert_null(reg);
    g_clear_error(&err);
}

/* ------------------------------------------------------------------------ */
/* Locking policy                                                           */

enum { LOCK_THREADS = 4 };
#define LOCK_SLEEP_US 20000

typedef struct {
    procreg *reg;
    int tid;
    int mode; /* 0: lookups, 1: registers, 2: mixed */
    pthread_cond_t *cond;
    pthread_mutex_t *mutex;
    gint *ready;
} LockArg;

static gpointer lock_thread(gpointer data)
{
    LockArg *a = data;
    /* Start together. */
    pthread_mutex_lock(a->mutex);
    (*a->ready)++;
    pthread_cond_broadcast(a->cond);
    while (*a->ready < LOCK_THREADS)
        pthread_cond_wait(a->cond, a->mutex);
    pthread_mutex_unlock(a->mutex);
    for (int i = 0; i < 3; i++) {
        char name[32];
        g_snprintf(name, sizeof name, "t%d-%d", a->tid, i);
        procreg_owner o;
        bool write = a->mode == 1 || (a->mode == 2 && (a->tid + i) % 2 == 0);
        if (write) {
            int rc = procreg_register(a->reg, "lock", name, NULL, NULL, NULL,
                                      NULL);
            g_assert_cmpint(rc, ==, 0);
        } else {
            int rc = procreg_lookup(a->reg, "lock", "shared", &o, NULL);
            g_assert_cmpint(rc, ==, 0);
        }
    }
    return NULL;
}

static FakeBackend *run_lock_threads(const procreg_backend_ops *ops, int mode,
                                     procreg **reg_out)
{
    procreg *reg = NULL;
    g_assert_cmpint(procreg_open_with_backend(ops, NULL, &reg, NULL), ==, 0);
    FakeBackend *fb = fake_backend_last();
    g_assert_cmpint(procreg_register(reg, "lock", "shared", NULL, NULL, NULL,
                                     NULL), ==, 0);
    fb->sleep_us[FAKE_OP_LOOKUP] = LOCK_SLEEP_US;
    fb->sleep_us[FAKE_OP_REGISTER] = LOCK_SLEEP_US;
    fb->max_inside = fb->max_inside_reads = fb->max_inside_writes = 0;
    pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
    gint ready = 0;
    LockArg args[LOCK_THREADS];
    GThread *th[LOCK_THREADS];
    for (int t = 0; t < LOCK_THREADS; t++) {
        args[t] = (LockArg){.reg = reg, .tid = t, .mode = mode,
                            .cond = &cond, .mutex = &mutex, .ready = &ready};
        th[t] = g_thread_new("lock", lock_thread, &args[t]);
    }
    for (int t = 0; t < LOCK_THREADS; t++)
        g_thread_join(th[t]);
    pthread_mutex_destroy(&mutex);
    pthread_cond_destroy(&cond);
    *reg_out = reg;
    return fb;
}

static void test_lock_serial(void)
{
    for (int mode = 0; mode < 3; mode++) {
        procreg *reg;
        FakeBackend *fb = run_lock_threads(&fake_ops, mode, &reg);
        g_assert_cmpint(fb->violations, ==, 0);
        g_assert_cmpint(fb->max_inside, ==, 1);
        procreg_close(reg);
    }
}

static void test_lock_parallel_reads(void)
{
    procreg *reg;
    /* Lookups may overlap, and do. */
    FakeBackend *fb = run_lock_threads(&fake_pr_ops, 0, &reg);
    g_assert_cmpint(fb->violations, ==, 0);
    if (fb->max_inside_reads < 2)
        g_error("PARALLEL_READS backend: %d lookup(s) inside at once, "
                "expected concurrent readers", fb->max_inside_reads);
    procreg_close(reg);
    /* Writes stay exclusive, also against reads. */
    for (int mode = 1; mode < 3; mode++) {
        fb = run_lock_threads(&fake_pr_ops, mode, &reg);
        g_assert_cmpint(fb->violations, ==, 0);
        g_assert_cmpint(fb->max_inside_writes, ==, 1);
        procreg_close(reg);
    }
}

static void test_lock_threadsafe(void)
{
    procreg *reg;
    FakeBackend *fb = run_lock_threads(&fake_ts_ops, 1, &reg);
    if (fb->max_inside_writes < 2)
        g_error("THREADSAFE backend: the core serialised its writes (%d "
                "inside at most)", fb->max_inside_writes);
    procreg_close(reg);
    fb = run_lock_threads(&fake_ts_ops, 0, &reg);
    g_assert_cmpint(fb->max_inside_reads, >=, 2);
    procreg_close(reg);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    fake_backend_register_all();
    g_test_add("/core/dispatch/validation-before-backend", Fixture, NULL,
               setup_serial, test_validation_before_backend, teardown);
    g_test_add("/core/dispatch/call-counts", Fixture, NULL, setup_serial,
               test_call_counts, teardown);
    g_test_add("/core/dispatch/fallbacks", Fixture, NULL, setup_min,
               test_fallbacks, teardown);
    g_test_add("/core/dispatch/errors-pass-through", Fixture, NULL,
               setup_serial, test_errors_pass_through, teardown);
    g_test_add("/core/dispatch/health-pass-through", Fixture, NULL,
               setup_serial, test_health_pass_through, teardown);
    g_test_add_func("/core/dispatch/close-destroys", test_close_destroys);
    g_test_add_func("/core/dispatch/version-gate", test_version_gate);
    g_test_add_func("/core/dispatch/version-gate-groups",
                    test_version_gate_groups);
    g_test_add_func("/core/dispatch/init-error", test_init_error);
    g_test_add_func("/core/dispatch/lock-serial", test_lock_serial);
    g_test_add_func("/core/dispatch/lock-parallel-reads",
                    test_lock_parallel_reads);
    g_test_add_func("/core/dispatch/lock-threadsafe", test_lock_threadsafe);
    return g_test_run();
}
