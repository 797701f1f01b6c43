/*
 * The optimized decorator's cache against writes in flight, one forced
 * interleaving per test: the gates of the fake inner backend hold a
 * reader after it read the inner backend and before it fills the cache,
 * and a write after it reached the inner backend and before the decorator
 * updated the cache.  Each test checks what a thread may see: never an
 * older revision than one it already saw (from a lookup, list or find),
 * never a removed key coming back, never an entry older than a
 * notification already delivered (cache.c's invariants); and a find
 * after a read of a write's new state lists the key (the index
 * invariant at the top of optimized.c); likewise a group find after a
 * read of a join's new member lists it, and one after a read of a leave
 * does not (the member index, groups.c), over the fake's "fake_groups"
 * type.
 *
 * Built three times (meson.build): as is, where every test must pass;
 * over a cache built with -DPROCREG_INJECT_STALE_FILL, where the tests of
 * stale fills must fail at their check (run as trapped subprocesses); and
 * over groups.c built with -DPROCREG_OPT_JOIN_HOOK, for the join-hook
 * tests, which hold a join past its inner call.
 */
#include "fake-inner.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

#define NS "race"
#define NAME "svc"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

typedef struct {
    procreg_backend *b;
    fake_inner *f;
    procreg_key *k; /* the entry's key, and the group's name */
} fixture;

/* The decorator over the fake of type @inner (fake, fake_groups). */
static void setup_over(fixture *fx, const char *inner, const char *options)
{
    char *spec = g_strdup_printf("optimized:inner=[%s:id=3],ttl_ms=60000%s",
                                 inner, options);
    GError *error = NULL;

    g_assert_cmpint(procreg_backend_open(spec, NULL, &fx->b, &error), ==, 0);
    g_assert_no_error(error);
    g_free(spec);
    fx->f = fake_instance(3);
    g_assert_cmpint(procreg_key_new(NS, NAME, &fx->k, &error), ==, 0);
}

static void setup(fixture *fx, const char *options)
{
    setup_over(fx, "fake", options);
}

static void teardown(fixture *fx)
{
    procreg_key_unref(fx->k);
    procreg_backend_close(fx->b);
}

static GVariant *md(const char *group, int role)
{
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "group", "s", group);
    g_variant_dict_insert(&d, "role", "i", role);
    return g_variant_ref_sink(g_variant_dict_end(&d));
}

/* The key's revision through lookup_entry, 0 when it is not registered. */
static uint64_t revision_of(fixture *fx)
{
    procreg_entry e = {0};
    int rc = procreg_backend_lookup_entry(fx->b, fx->k, &e, NULL);
    uint64_t rev = e.revision;

    g_assert_true(rc == 0 || rc == PROCREG_ENOTFOUND);
    procreg_entry_clear(&e);
    return rc == 0 ? rev : 0;
}

/* Whether the key is registered, through lookup. */
static gboolean registered(fixture *fx)
{
    procreg_owner o;
    int rc = procreg_backend_lookup(fx->b, fx->k, &o);

    g_assert_true(rc == 0 || rc == PROCREG_ENOTFOUND);
    return rc == 0;
}

/* The key's entry put straight into the inner backend, behind the
 * decorator (nothing cached): its revision. */
static uint64_t set_behind(fixture *fx, int role)
{
    /* list goes to the inner backend and fills nothing. */
    GArray *all = procreg_entry_array_new();
    GVariant *m = md("g", role);
    uint64_t rev;

    fake_set(fx->f, NS, NAME, 100, m);
    g_variant_unref(m);
    g_assert_cmpint(procreg_backend_list_all(fx->b, NS, all, NULL), ==, 0);
    g_assert_cmpuint(all->len, ==, 1);
    rev = g_array_index(all, procreg_entry, 0).revision;
    g_array_unref(all);
    return rev;
}

/* A call made in its own thread, so that the fake's gate can hold it. */
typedef enum {
    CALL_REGISTER,
    CALL_LOOKUP,
    CALL_LOOKUP_ENTRY,
    CALL_UPDATE,
    CALL_UNREGISTER,
    CALL_DROP,
    CALL_GROUP_JOIN,  /* joins group NAME */
    CALL_GROUP_LEAVE, /* member `revision` leaves it */
} call_kind;

typedef struct {
    fixture *fx;
    call_kind kind;
    GThread *thread;
    int rc;
    uint64_t revision; /* the revision it read or wrote; a member id */
    GVariant *metadata; /* what register and update write (NULL: md("g", 2)) */
} call;

static gpointer call_main(gpointer data)
{
    call *c = data;
    procreg_entry e = {0};
    procreg_owner o;
    procreg_record r = {.owner = {100, 1}};
    GVariant *m = c->metadata != NULL ? g_variant_ref(c->metadata)
                                      : md("g", 2);

    switch (c->kind) {
    case CALL_REGISTER:
        r.metadata = m;
        c->rc = procreg_backend_register_entry(c->fx->b, c->fx->k, &r, &e,
                                               NULL);
        break;
    case CALL_LOOKUP:
        c->rc = procreg_backend_lookup(c->fx->b, c->fx->k, &o);
        break;
    case CALL_LOOKUP_ENTRY:
        c->rc = procreg_backend_lookup_entry(c->fx->b, c->fx->k, &e, NULL);
        break;
    case CALL_UPDATE:
        c->rc = procreg_backend_update_metadata(c->fx->b, c->fx->k, m, 0, &e,
                                                NULL);
        break;
    case CALL_UNREGISTER:
        c->rc = procreg_backend_unregister(c->fx->b, c->fx->k, 0, NULL, NULL);
        break;
    case CALL_DROP:
        c->rc = procreg_backend_drop_namespace(c->fx->b, NS, NULL, NULL);
        break;
    case CALL_GROUP_JOIN: {
        procreg_member joined = {0};

        r.metadata = m;
        c->rc = procreg_backend_group_join(c->fx->b, c->fx->k, &r, &joined,
                                           NULL);
        e.revision = joined.id;
        procreg_member_clear(&joined);
        break;
    }
    case CALL_GROUP_LEAVE:
        c->rc = procreg_backend_group_leave(c->fx->b, c->fx->k, c->revision,
                                            NULL, PROCREG_REASON_EXPLICIT,
                                            NULL, NULL);
        e.revision = c->revision;
        break;
    }
    g_variant_unref(m);
    c->revision = e.revision;
    procreg_entry_clear(&e);
    return NULL;
}

/* Start @kind in a thread and wait until the fake holds it at @op's gate:
 * it has done its work in the inner backend, not yet returned. */
static void start_held(call *c, fixture *fx, call_kind kind, fake_op op)
{
    *c = (call){.fx = fx, .kind = kind};
    fake_hold_next(fx->f, op);
    c->thread = g_thread_new("held", call_main, c);
    fake_wait_held(fx->f, op);
}

/* Start a register or update (@kind) of @metadata in a thread and wait
 * until the fake holds it at @op's gate: after its work when @after,
 * else before it (the write in flight, the inner backend unchanged). */
static void start_write_held(call *c, fixture *fx, call_kind kind,
                             fake_op op, GVariant *metadata, bool after)
{
    *c = (call){.fx = fx, .kind = kind, .metadata = metadata};
    if (after)
        fake_hold_next(fx->f, op);
    else
        fake_hold_next_before(fx->f, op);
    c->thread = g_thread_new("held", call_main, c);
    fake_wait_held(fx->f, op);
}

/* Let the held call of @op go on and wait until it returned. */
static void finish(call *c, fake_op op)
{
    fake_release(c->fx->f, op);
    g_thread_join(c->thread);
}

/* ------------------------------------------------------------------------ */
/* Stale fills: a miss that read the inner backend before a write          */

/* The lead's issue 13: reader B reads revision r0 from the inner backend
 * and stalls; writer W's update reaches the inner backend (r1) and stalls
 * before the cache; reader A reads r1 from the inner backend; B fills.
 * A must not read r0 next. */
static void test_fill_during_write(void)
{
    fixture fx;
    call reader, writer;
    uint64_t r0, seen, again;

    setup(&fx, "");
    r0 = set_behind(&fx, 1);
    start_held(&reader, &fx, CALL_LOOKUP_ENTRY, FAKE_LOOKUP_ENTRY);
    start_held(&writer, &fx, CALL_UPDATE, FAKE_UPDATE);
    seen = revision_of(&fx);
    g_assert_cmpuint(seen, >, r0);
    finish(&reader, FAKE_LOOKUP_ENTRY);
    g_assert_cmpint(reader.rc, ==, 0);
    g_assert_cmpuint(reader.revision, ==, r0);
    again = revision_of(&fx);
    g_assert_cmpuint(again, >=, seen);
    finish(&writer, FAKE_UPDATE);
    g_assert_cmpint(writer.rc, ==, 0);
    g_assert_cmpuint(writer.revision, ==, seen);
    /* Read-your-writes, answered by the cache. */
    guint64 asked = fake_calls(fx.f, FAKE_LOOKUP_ENTRY);
    g_assert_cmpuint(revision_of(&fx), ==, seen);
    g_assert_cmpuint(fake_calls(fx.f, FAKE_LOOKUP_ENTRY), ==, asked);
    teardown(&fx);
}

/* The same window seen through list: the list shows the new revision,
 * then B's stale fill must not be served. */
static void test_fill_during_write_after_list(void)
{
    fixture fx;
    call reader, writer;
    uint64_t r0, listed;
    GArray *all = procreg_entry_array_new();

    setup(&fx, "");
    r0 = set_behind(&fx, 1);
    start_held(&reader, &fx, CALL_LOOKUP_ENTRY, FAKE_LOOKUP_ENTRY);
    start_held(&writer, &fx, CALL_UPDATE, FAKE_UPDATE);
    g_assert_cmpint(procreg_backend_list_all(fx.b, NS, all, NULL), ==, 0);
    g_assert_cmpuint(all->len, ==, 1);
    listed = g_array_index(all, procreg_entry, 0).revision;
    g_array_unref(all);
    g_assert_cmpuint(listed, >, r0);
    finish(&reader, FAKE_LOOKUP_ENTRY);
    g_assert_cmpuint(reader.revision, ==, r0);
    uint64_t after_list = revision_of(&fx);
    g_assert_cmpuint(after_list, >=, listed);
    finish(&writer, FAKE_UPDATE);
    g_assert_cmpuint(revision_of(&fx), ==, listed);
    teardown(&fx);
}

/* A removal in flight: reader A sees the key gone in the inner backend;
 * B's fill from before must not bring it back. */
typedef struct {
    const char *options;
    call_kind removal;
} removal_case;

/* With negative caching on, A's own miss stores the absence, which B's
 * fill must not replace either.  A namespace drop counts in every stripe;
 * the core drops through unregister on this inner backend, so the fake
 * holds that. */
static const removal_case unregister_plain = {"", CALL_UNREGISTER};
static const removal_case unregister_negative = {",negative_cache=on",
                                                 CALL_UNREGISTER};
static const removal_case namespace_drop = {"", CALL_DROP};

static void test_fill_resurrects(gconstpointer data)
{
    const removal_case *rc = data;
    fixture fx;
    call reader, remover;

    setup(&fx, rc->options);
    set_behind(&fx, 1);
    start_held(&reader, &fx, CALL_LOOKUP, FAKE_LOOKUP);
    start_held(&remover, &fx, rc->removal, FAKE_UNREGISTER);
    g_assert_false(registered(&fx));
    finish(&reader, FAKE_LOOKUP);
    g_assert_cmpint(reader.rc, ==, 0);
    gboolean back = registered(&fx);
    g_assert_false(back);
    finish(&remover, FAKE_UNREGISTER);
    g_assert_cmpint(remover.rc, ==, 0);
    g_assert_false(registered(&fx));
    teardown(&fx);
}

/* A write that took effect in the inner backend and then failed (a
 * timeout after the commit): its window is the same as a successful
 * write's, and it must not leave its stripe held back when it ends. */
static void test_fill_during_failed_write(void)
{
    fixture fx;
    call reader, writer;
    uint64_t r0, seen;

    setup(&fx, "");
    r0 = set_behind(&fx, 1);
    start_held(&reader, &fx, CALL_LOOKUP_ENTRY, FAKE_LOOKUP_ENTRY);
    fake_fail_next(fx.f, FAKE_UPDATE, PROCREG_ETIMEDOUT);
    start_held(&writer, &fx, CALL_UPDATE, FAKE_UPDATE);
    seen = revision_of(&fx);
    g_assert_cmpuint(seen, >, r0);
    finish(&reader, FAKE_LOOKUP_ENTRY);
    uint64_t again = revision_of(&fx);
    g_assert_cmpuint(again, >=, seen);
    finish(&writer, FAKE_UPDATE);
    g_assert_cmpint(writer.rc, ==, PROCREG_ETIMEDOUT);
    /* The next miss fills and the lookup after it is a hit. */
    guint64 asked = fake_calls(fx.f, FAKE_LOOKUP_ENTRY);
    g_assert_cmpuint(revision_of(&fx), ==, seen);
    g_assert_cmpuint(revision_of(&fx), ==, seen);
    g_assert_cmpuint(fake_calls(fx.f, FAKE_LOOKUP_ENTRY), ==, asked + 1);
    teardown(&fx);
}

/* ------------------------------------------------------------------------ */
/* A write in flight against what list and find already show               */

/* Register the key through the decorator with group @group (role 1);
 * its revision. */
static uint64_t register_group(fixture *fx, const char *group)
{
    procreg_record r = {.owner = {100, 1}, .metadata = md(group, 1)};
    procreg_entry cur = {0};
    uint64_t revision;

    g_assert_cmpint(procreg_backend_register_entry(fx->b, fx->k, &r, &cur,
                                                   NULL), ==, 0);
    g_variant_unref(r.metadata);
    revision = cur.revision;
    procreg_entry_clear(&cur);
    return revision;
}

/* The key cached at r0; W's update reaches the inner backend (r1); A's
 * find shows r1.  A's lookup must not be served the cached r0. */
static void test_cached_entry_during_write(void)
{
    fixture fx;
    call writer;
    GVariant *group = g_variant_ref_sink(g_variant_new_string("g"));
    GArray *found = procreg_entry_array_new();
    uint64_t r0, shown;

    setup(&fx, "");
    r0 = register_group(&fx, "g");
    g_assert_cmpuint(revision_of(&fx), ==, r0); /* cached */
    start_held(&writer, &fx, CALL_UPDATE, FAKE_UPDATE);
    g_assert_cmpint(procreg_backend_find_by_metadata(fx.b, NS, "group", group,
                                                     found, NULL), ==, 0);
    g_assert_cmpuint(found->len, ==, 1);
    shown = g_array_index(found, procreg_entry, 0).revision;
    g_assert_cmpuint(shown, >, r0);
    uint64_t after_find = revision_of(&fx);
    g_assert_cmpuint(after_find, >=, shown);
    finish(&writer, FAKE_UPDATE);
    g_assert_cmpuint(revision_of(&fx), ==, shown);
    g_array_unref(found);
    g_variant_unref(group);
    teardown(&fx);
}

/* ------------------------------------------------------------------------ */
/* Finds against a write in flight                                          */

/* The keys found with group == @group, through the decorator's index: the
 * number of them (the key is the only one registered). */
static guint found_with(fixture *fx, const char *group)
{
    GVariant *v = g_variant_ref_sink(g_variant_new_string(group));
    GArray *found = procreg_entry_array_new();
    guint n;

    g_assert_cmpint(procreg_backend_find_by_metadata(fx->b, NS, "group", v,
                                                     found, NULL), ==, 0);
    n = found->len;
    g_array_unref(found);
    g_variant_unref(v);
    return n;
}

/* The index's figure @name (stats): postings (a known outcome leaves the
 * key in exactly its metadata's postings, a write in flight in both),
 * finds_indexed, finds_forwarded, rebuilds. */
static guint64 index_figure(fixture *fx, const char *name)
{
    GVariantDict d, ix;
    GVariant *index;
    guint64 n = 0;

    g_variant_dict_init(&d, NULL);
    procreg_backend_stats(fx->b, &d);
    index = g_variant_dict_lookup_value(&d, "index", G_VARIANT_TYPE_VARDICT);
    g_assert_nonnull(index);
    g_variant_dict_init(&ix, index);
    g_assert_true(g_variant_dict_lookup(&ix, name, "t", &n));
    g_variant_dict_clear(&ix);
    g_variant_unref(index);
    g_variant_dict_clear(&d);
    return n;
}

/* The history that showed it (issue 18): W's register of the key with
 * group "new" reached the inner backend and is not answered yet; A's
 * lookup misses (the write dropped the key) and reads the new owner from
 * the inner backend; A's find for group "new" must then list the key,
 * not show the older state (absent) again. */
static void test_find_during_register(void)
{
    fixture fx;
    call writer;
    GVariant *m = md("new", 1);

    setup(&fx, "");
    start_write_held(&writer, &fx, CALL_REGISTER, FAKE_REGISTER, m, true);
    g_assert_true(registered(&fx));
    g_assert_cmpuint(found_with(&fx, "new"), ==, 1);
    finish(&writer, FAKE_REGISTER);
    g_assert_cmpint(writer.rc, ==, 0);
    g_assert_cmpuint(found_with(&fx, "new"), ==, 1);
    g_variant_unref(m);
    teardown(&fx);
}

/* W's update from group "old" to "new" reached the inner backend (r1),
 * not answered yet.  A reads r1 in a miss; its find for "new" must list
 * the key, and its find for "old" must not (it reads the key again: r1
 * has group "new").  Once W returned, the same. */
static void test_find_during_update(void)
{
    fixture fx;
    call writer;
    GVariant *m = md("new", 1);
    uint64_t r0, seen;

    setup(&fx, "");
    r0 = register_group(&fx, "old");
    g_assert_cmpuint(revision_of(&fx), ==, r0); /* cached */
    start_write_held(&writer, &fx, CALL_UPDATE, FAKE_UPDATE, m, true);
    seen = revision_of(&fx);
    g_assert_cmpuint(seen, >, r0);
    g_assert_cmpuint(found_with(&fx, "new"), ==, 1);
    g_assert_cmpuint(found_with(&fx, "old"), ==, 0);
    finish(&writer, FAKE_UPDATE);
    g_assert_cmpint(writer.rc, ==, 0);
    g_assert_cmpuint(writer.revision, ==, seen);
    g_assert_cmpuint(found_with(&fx, "new"), ==, 1);
    g_assert_cmpuint(found_with(&fx, "old"), ==, 0);
    /* group "new", role 1 */
    g_assert_cmpuint(index_figure(&fx, "postings"), ==, 2);
    g_variant_unref(m);
    teardown(&fx);
}

/* W's update from "old" to "new" is in flight but has not reached the
 * inner backend.  A reads r0 (a miss); its find for "old" must still list
 * the key (an index that dropped the old postings before the inner call
 * would not), and its find for "new" must not.  W goes on: then "new"
 * lists it and "old" does not. */
static void test_find_before_update_lands(void)
{
    fixture fx;
    call writer;
    GVariant *m = md("new", 1);
    uint64_t r0;

    setup(&fx, "");
    r0 = register_group(&fx, "old");
    start_write_held(&writer, &fx, CALL_UPDATE, FAKE_UPDATE, m, false);
    /* "old", "new", role 1 */
    g_assert_cmpuint(index_figure(&fx, "postings"), ==, 3);
    g_assert_cmpuint(revision_of(&fx), ==, r0);
    g_assert_cmpuint(found_with(&fx, "old"), ==, 1);
    g_assert_cmpuint(found_with(&fx, "new"), ==, 0);
    finish(&writer, FAKE_UPDATE);
    g_assert_cmpint(writer.rc, ==, 0);
    g_assert_cmpuint(found_with(&fx, "new"), ==, 1);
    g_assert_cmpuint(found_with(&fx, "old"), ==, 0);
    g_assert_cmpuint(index_figure(&fx, "postings"), ==, 2);
    g_variant_unref(m);
    teardown(&fx);
}

/* A register (and, separately, an update) that took effect and then
 * failed: the outcome is unknown to the decorator, the inner backend
 * holds the new metadata.  After the write returned, a lookup reads the
 * new state and a find for "new" must list the key. */
static void test_find_after_failed_write(gconstpointer data)
{
    const call_kind kind = GPOINTER_TO_INT(data);
    const fake_op op = kind == CALL_REGISTER ? FAKE_REGISTER : FAKE_UPDATE;
    fixture fx;
    call writer;
    GVariant *m = md("new", 1);

    setup(&fx, "");
    if (kind == CALL_UPDATE)
        register_group(&fx, "old");
    fake_fail_next(fx.f, op, PROCREG_ETIMEDOUT);
    start_write_held(&writer, &fx, kind, op, m, true);
    finish(&writer, op);
    g_assert_cmpint(writer.rc, ==, PROCREG_ETIMEDOUT);
    g_assert_true(registered(&fx));
    g_assert_cmpuint(found_with(&fx, "new"), ==, 1);
    g_assert_cmpuint(found_with(&fx, "old"), ==, 0);
    g_variant_unref(m);
    teardown(&fx);
}

/* ------------------------------------------------------------------------ */
/* Group finds against a join or a leave in flight                          */

/* Member of group NAME with metadata md("g", @role), joined through the
 * decorator: its id. */
static uint64_t join(fixture *fx, int role)
{
    procreg_record r = {.owner = {100, 1}, .metadata = md("g", role)};
    procreg_member m = {0};
    uint64_t id;

    g_assert_cmpint(procreg_backend_group_join(fx->b, fx->k, &r, &m, NULL),
                    ==, 0);
    g_variant_unref(r.metadata);
    id = m.id;
    procreg_member_clear(&m);
    return id;
}

/* Whether member @id is in group NAME, through group_members (which the
 * decorator forwards to the inner backend). */
static gboolean is_member(fixture *fx, uint64_t id)
{
    GArray *members = procreg_member_array_new();
    gboolean found = FALSE;

    g_assert_cmpint(procreg_backend_group_members(fx->b, fx->k, members,
                                                  NULL), ==, 0);
    for (guint i = 0; i < members->len; i++)
        found |= g_array_index(members, procreg_member, i).id == id;
    g_array_unref(members);
    return found;
}

/* Whether group_find for role @role in group NAME lists member @id. */
static gboolean found_member(fixture *fx, int role, uint64_t id)
{
    GVariant *v = g_variant_ref_sink(g_variant_new_int32(role));
    GArray *found = procreg_member_array_new();
    gboolean listed = FALSE;

    g_assert_cmpint(procreg_backend_group_find(fx->b, NS, NAME, "role", v,
                                               found, NULL), ==, 0);
    for (guint i = 0; i < found->len; i++)
        listed |= g_array_index(found, procreg_member, i).id == id;
    g_array_unref(found);
    g_variant_unref(v);
    return listed;
}

/* The join's window: W's join of a member with role 2 reached the inner
 * backend and is not answered yet (the decorator learns the member's id
 * only from the answer, so it cannot index it before).  A sees the member
 * through group_members; A's next group_find for role 2 must list it.
 * Once W returned, the member index answers the find again (a find costs
 * the index, not a scan, when no join is in flight). */
static void test_group_find_during_join(void)
{
    fixture fx;
    call joiner;
    guint64 indexed;

    setup_over(&fx, "fake_groups", "");
    uint64_t other = join(&fx, 1);
    start_held(&joiner, &fx, CALL_GROUP_JOIN, FAKE_GROUP_JOIN);
    g_assert_true(is_member(&fx, other + 1)); /* the next id: W's member */
    gboolean listed = found_member(&fx, 2, other + 1);
    g_assert_true(listed);
    finish(&joiner, FAKE_GROUP_JOIN);
    g_assert_cmpint(joiner.rc, ==, 0);
    g_assert_cmpuint(joiner.revision, ==, other + 1);
    indexed = index_figure(&fx, "finds_indexed");
    g_assert_true(found_member(&fx, 2, joiner.revision));
    g_assert_true(found_member(&fx, 1, other));
    g_assert_false(found_member(&fx, 1, joiner.revision));
    g_assert_cmpuint(index_figure(&fx, "finds_indexed"), ==, indexed + 3);
    teardown(&fx);
}

/* A join that took effect in the inner backend and then failed (a timeout
 * after the commit): the decorator never learns the member's id.  After
 * it returned, A sees the member through group_members; A's group_find
 * must list it.  The finds after it are answered by the index again,
 * without rebuilding it. */
static void test_group_find_after_failed_join(void)
{
    fixture fx;
    call joiner;
    guint64 indexed, rebuilds;

    setup_over(&fx, "fake_groups", "");
    uint64_t other = join(&fx, 1);
    fake_fail_next(fx.f, FAKE_GROUP_JOIN, PROCREG_ETIMEDOUT);
    start_held(&joiner, &fx, CALL_GROUP_JOIN, FAKE_GROUP_JOIN);
    finish(&joiner, FAKE_GROUP_JOIN);
    g_assert_cmpint(joiner.rc, ==, PROCREG_ETIMEDOUT);
    g_assert_true(is_member(&fx, other + 1));
    gboolean listed = found_member(&fx, 2, other + 1);
    g_assert_true(listed);
    /* That find rebuilt the member index; the next ones use it as is. */
    indexed = index_figure(&fx, "finds_indexed");
    rebuilds = index_figure(&fx, "rebuilds");
    g_assert_true(found_member(&fx, 2, other + 1));
    g_assert_true(found_member(&fx, 1, other));
    g_assert_cmpuint(index_figure(&fx, "finds_indexed"), ==, indexed + 2);
    g_assert_cmpuint(index_figure(&fx, "rebuilds"), ==, rebuilds);
    teardown(&fx);
}

/* The leave's window: W's leave of a member with role 2 reached the inner
 * backend and is not answered yet (its postings are still in the member
 * index).  A sees the member gone through group_members; A's next
 * group_find for role 2 must not list it (a find reads each match again
 * from the inner backend, so a leave needs no more than that). */
static void test_group_find_during_leave(void)
{
    fixture fx;
    call leaver;
    uint64_t id;

    setup_over(&fx, "fake_groups", "");
    join(&fx, 1);
    id = join(&fx, 2);
    g_assert_true(found_member(&fx, 2, id));
    leaver = (call){.fx = &fx, .kind = CALL_GROUP_LEAVE, .revision = id};
    fake_hold_next(fx.f, FAKE_GROUP_LEAVE);
    leaver.thread = g_thread_new("held", call_main, &leaver);
    fake_wait_held(fx.f, FAKE_GROUP_LEAVE);
    g_assert_false(is_member(&fx, id));
    gboolean listed = found_member(&fx, 2, id);
    g_assert_false(listed);
    finish(&leaver, FAKE_GROUP_LEAVE);
    g_assert_cmpint(leaver.rc, ==, 1);
    g_assert_false(found_member(&fx, 2, id));
    teardown(&fx);
}

#ifdef RACES_JOIN_HOOK
/* The part of a join's window after its inner call returned, which the
 * fake cannot hold: this build links groups.c built with
 * PROCREG_OPT_JOIN_HOOK, whose hook runs there (tests/optimized/meson.build).
 * pthread, which ThreadSanitizer sees. */
extern void (*procreg_opt_join_hook)(int rc);

static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hook_cond = PTHREAD_COND_INITIALIZER;
static bool hook_held, hook_released;

/* Wait on hook_cond, under hook_lock, until @done; the test fails after
 * 10 s, as the fake's gates do. */
static void hook_wait_for(const bool *done, const char *what)
{
    struct timespec deadline;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    while (!*done)
        if (pthread_cond_timedwait(&hook_cond, &hook_lock, &deadline) ==
            ETIMEDOUT)
            g_error("join hook: %s in time", what);
}

static void hold_in_hook(int rc)
{
    (void)rc;
    pthread_mutex_lock(&hook_lock);
    hook_held = true;
    pthread_cond_broadcast(&hook_cond);
    hook_wait_for(&hook_released, "the held join was not released");
    hook_held = hook_released = false;
    pthread_mutex_unlock(&hook_lock);
}

static void hook_wait_held(void)
{
    pthread_mutex_lock(&hook_lock);
    hook_wait_for(&hook_held, "no join reached the hook");
    pthread_mutex_unlock(&hook_lock);
}

static void hook_release(void)
{
    pthread_mutex_lock(&hook_lock);
    hook_released = true;
    pthread_cond_broadcast(&hook_cond);
    pthread_mutex_unlock(&hook_lock);
}

/* W's inner join returned (the member is in the inner backend; with
 * @data, a failure injected after it took effect) and W is held before
 * the decorator indexed the member or marked the index stale.  A sees the
 * member through group_members; A's group_find must list it. */
static void test_group_find_before_index(gconstpointer data)
{
    const int fail = GPOINTER_TO_INT(data);
    fixture fx;
    call joiner;

    setup_over(&fx, "fake_groups", "");
    uint64_t other = join(&fx, 1);
    if (fail != 0)
        fake_fail_next(fx.f, FAKE_GROUP_JOIN, fail);
    procreg_opt_join_hook = hold_in_hook;
    joiner = (call){.fx = &fx, .kind = CALL_GROUP_JOIN};
    joiner.thread = g_thread_new("held", call_main, &joiner);
    hook_wait_held();
    g_assert_true(is_member(&fx, other + 1));
    gboolean listed = found_member(&fx, 2, other + 1);
    g_assert_true(listed);
    hook_release();
    g_thread_join(joiner.thread);
    procreg_opt_join_hook = NULL;
    g_assert_cmpint(joiner.rc, ==, fail);
    g_assert_true(found_member(&fx, 2, other + 1));
    teardown(&fx);
}
#endif

/* ------------------------------------------------------------------------ */
/* Notifications                                                            */

/* B read r0 and stalls; the key changes elsewhere (r1) and the inner
 * backend notifies; A reads r1.  B's fill must not put r0 back. */
static void test_fill_after_notification(void)
{
    fixture fx;
    call reader;
    uint64_t r0, r1;

    setup(&fx, "");
    r0 = set_behind(&fx, 1);
    start_held(&reader, &fx, CALL_LOOKUP_ENTRY, FAKE_LOOKUP_ENTRY);
    r1 = set_behind(&fx, 3);
    fake_notify(fx.f, PROCREG_EVENT_UPDATED, NS, NAME);
    g_assert_cmpuint(revision_of(&fx), ==, r1);
    finish(&reader, FAKE_LOOKUP_ENTRY);
    g_assert_cmpuint(reader.revision, ==, r0);
    uint64_t after = revision_of(&fx);
    g_assert_cmpuint(after, >=, r1);
    teardown(&fx);
}

/* W's update reaches the inner backend (r1) and stalls; the key changes
 * elsewhere (r2) and the inner backend notifies; A reads r2.  W's end
 * must not store r1 over it. */
static void test_write_after_notification(void)
{
    fixture fx;
    call writer;
    uint64_t r2;

    setup(&fx, "");
    set_behind(&fx, 1);
    start_held(&writer, &fx, CALL_UPDATE, FAKE_UPDATE);
    r2 = set_behind(&fx, 3);
    fake_notify(fx.f, PROCREG_EVENT_UPDATED, NS, NAME);
    g_assert_cmpuint(revision_of(&fx), ==, r2);
    finish(&writer, FAKE_UPDATE);
    g_assert_cmpint(writer.rc, ==, 0);
    g_assert_cmpuint(writer.revision, <, r2);
    uint64_t after = revision_of(&fx);
    g_assert_cmpuint(after, >=, r2);
    teardown(&fx);
}

/* ------------------------------------------------------------------------ */
/* The build with the stale fill put back                                   */

#ifdef RACES_AGAINST_STALE_FILL
/* Each test of a stale fill, in a subprocess: it must fail at its check
 * of what the reader saw, not anywhere else. */
static void expect_caught(const char *path, const char *message)
{
    g_test_trap_subprocess(path, 30 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr(message);
}

static void test_stale_fill_caught(void)
{
    const char *older = "*assertion failed (again >= seen)*";
    const char *back = "*'back' should be FALSE*";

    expect_caught("/optimized/races/fill-during-write", older);
    expect_caught("/optimized/races/fill-during-write-after-list",
                  "*assertion failed (after_list >= listed)*");
    expect_caught("/optimized/races/fill-resurrects", back);
    expect_caught("/optimized/races/fill-resurrects-negative", back);
    expect_caught("/optimized/races/fill-resurrects-after-drop", back);
    expect_caught("/optimized/races/fill-during-failed-write", older);
}
#endif

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    fake_inner_register_types();
    g_test_add_func("/optimized/races/fill-during-write",
                    test_fill_during_write);
    g_test_add_func("/optimized/races/fill-during-write-after-list",
                    test_fill_during_write_after_list);
    g_test_add_data_func("/optimized/races/fill-resurrects",
                         &unregister_plain, test_fill_resurrects);
    g_test_add_data_func("/optimized/races/fill-resurrects-negative",
                         &unregister_negative, test_fill_resurrects);
    g_test_add_data_func("/optimized/races/fill-resurrects-after-drop",
                         &namespace_drop, test_fill_resurrects);
    g_test_add_func("/optimized/races/fill-during-failed-write",
                    test_fill_during_failed_write);
    g_test_add_func("/optimized/races/cached-entry-during-write",
                    test_cached_entry_during_write);
    g_test_add_func("/optimized/races/find-during-register",
                    test_find_during_register);
    g_test_add_func("/optimized/races/find-during-update",
                    test_find_during_update);
    g_test_add_func("/optimized/races/find-before-update-lands",
                    test_find_before_update_lands);
    g_test_add_data_func("/optimized/races/find-after-failed-register",
                         GINT_TO_POINTER(CALL_REGISTER),
                         test_find_after_failed_write);
    g_test_add_data_func("/optimized/races/find-after-failed-update",
                         GINT_TO_POINTER(CALL_UPDATE),
                         test_find_after_failed_write);
    g_test_add_func("/optimized/races/group-find-during-join",
                    test_group_find_during_join);
    g_test_add_func("/optimized/races/group-find-after-failed-join",
                    test_group_find_after_failed_join);
    g_test_add_func("/optimized/races/group-find-during-leave",
                    test_group_find_during_leave);
    g_test_add_func("/optimized/races/fill-after-notification",
                    test_fill_after_notification);
    g_test_add_func("/optimized/races/write-after-notification",
                    test_write_after_notification);
#ifdef RACES_JOIN_HOOK
    g_test_add_data_func("/optimized/races/join-hook/group-find-before-index",
                         GINT_TO_POINTER(0), test_group_find_before_index);
    g_test_add_data_func(
        "/optimized/races/join-hook/group-find-before-stale-mark",
        GINT_TO_POINTER(PROCREG_ETIMEDOUT), test_group_find_before_index);
#endif
#ifdef RACES_AGAINST_STALE_FILL
    g_test_add_func("/optimized/races/stale-fill-caught",
                    test_stale_fill_caught);
#endif
    return g_test_run();
}
