/*
 * The checker on hand-written histories that are and are not
 * linearizable (or consistent with the optimized promise), and on a
 * generated one of 10 000 operations for speed and minimising.
 */
#include "history.h"

#include <inttypes.h>
#include <string.h>

#define PENDING (-1)

typedef struct {
    GString *text;
    int id;
} builder;

static void builder_init(builder *b)
{
    b->text = g_string_new(NULL);
    b->id = 0;
}

/* One operation: client, invocation and answer times (PENDING: none),
 * the call's fields and the answer's. */
static void op(builder *b, int c, int64_t inv, int64_t res, const char *call,
               const char *answer)
{
    int id = ++b->id;
    g_string_append_printf(b->text, "inv c=%d id=%d t=%" PRId64 " %s\n", c,
                           id, inv, call);
    if (res != PENDING)
        g_string_append_printf(b->text, "res c=%d id=%d t=%" PRId64 " %s\n",
                               c, id, res, answer);
}

static void line(builder *b, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void line(builder *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_string_append_vprintf(b->text, fmt, ap);
    va_end(ap);
    g_string_append_c(b->text, '\n');
}

#define RC(code) "rc=" G_STRINGIFY(code)

/* Check @b's history; returns whether it passed and frees @b. */
static bool check_full(builder *b, const hist_check_opts *opts,
                       GString **report_out)
{
    g_autoptr(hist) h = hist_new();
    g_autoptr(GError) err = NULL;
    g_assert_true(hist_load_text(h, b->text->str, "test", &err));
    g_assert_no_error(err);
    GString *report = g_string_new(NULL);
    bool ok = hist_check(h, opts, report, NULL);
    if (g_test_verbose() || report->len > 0)
        g_test_message("%s", report->str);
    g_string_free(b->text, TRUE);
    if (report_out)
        *report_out = report;
    else
        g_string_free(report, TRUE);
    return ok;
}

static bool check(builder *b)
{
    hist_check_opts o = {0};
    return check_full(b, &o, NULL);
}

static void test_sequential(void)
{
    builder b;
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 1, 20, 30, "op=lookup k=x", "rc=0 owner=1");
    op(&b, 1, 40, 50, "op=entry k=x", "rc=0 owner=1 meta=a:1 rev=1");
    op(&b, 1, 60, 70, "op=update k=x owner=1 meta=b:2 mode=merge",
       "rc=0 rev=2");
    op(&b, 1, 80, 90, "op=entry k=x", "rc=0 owner=1 meta=a:1,b:2 rev=2");
    op(&b, 1, 100, 110, "op=update k=x owner=1 meta=a:3 mode=replace if=2",
       "rc=0 rev=3");
    op(&b, 1, 120, 130, "op=list", "rc=0 items=x@1@3@a:3");
    op(&b, 1, 140, 150, "op=unregister k=x owner=1 if=2", RC(-10));
    op(&b, 1, 160, 170, "op=unregister k=x owner=1 if=3", "rc=0");
    op(&b, 1, 180, 190, "op=lookup k=x", RC(-3));
    op(&b, 1, 200, 210, "op=list", "rc=0 items=");
    op(&b, 1, 220, 230, "op=register k=x owner=1 meta=a:4", "rc=0 rev=4");
    g_assert_true(check(&b));
}

static void test_concurrent_registers(void)
{
    builder b;
    builder_init(&b);
    /* Overlapping: one wins, the other learns who. */
    op(&b, 1, 0, 30, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 2, 5, 20, "op=register k=x owner=2 meta=a:2",
       RC(-4) " owner=1 meta=a:1 rev=1");
    g_assert_true(check(&b));

    /* Both succeeding is the bug. */
    builder_init(&b);
    op(&b, 1, 0, 30, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 2, 5, 20, "op=register k=x owner=2 meta=a:2", "rc=0 rev=2");
    GString *report = NULL;
    hist_check_opts o = {0};
    g_assert_false(check_full(&b, &o, &report));
    g_assert_nonnull(strstr(report->str, "key x is not linearizable"));
    g_assert_nonnull(strstr(report->str, "(2 of the 2 operations"));
    g_string_free(report, TRUE);
}

static void test_stale_read(void)
{
    builder b;
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 1, 20, 30, "op=update k=x owner=1 meta=a:2", "rc=0 rev=2");
    op(&b, 2, 40, 50, "op=entry k=x", "rc=0 owner=1 meta=a:2 rev=2");
    op(&b, 3, 45, 55, "op=lookup k=x", "rc=0 owner=1");
    op(&b, 2, 60, 70, "op=entry k=x", "rc=0 owner=1 meta=a:1 rev=1");
    GString *report = NULL;
    hist_check_opts o = {0};
    g_assert_false(check_full(&b, &o, &report));
    /* The culprit is the stale read; the witness needs the two writes. */
    g_assert_nonnull(strstr(report->str, "(3 of the 5 operations"));
    g_assert_nonnull(strstr(report->str, ">> c2"));
    g_string_free(report, TRUE);

    /* The same read overlapping the update may see either revision. */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 1, 20, 30, "op=update k=x owner=1 meta=a:2", "rc=0 rev=2");
    op(&b, 2, 25, 70, "op=entry k=x", "rc=0 owner=1 meta=a:1 rev=1");
    g_assert_true(check(&b));
}

static void test_read_after_removal(void)
{
    builder b;
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 1, 20, 30, "op=unregister k=x owner=1", "rc=0");
    op(&b, 2, 40, 50, "op=lookup k=x", "rc=0 owner=1");
    g_assert_false(check(&b));

    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 1, 20, 30, "op=unregister k=x owner=1", "rc=0");
    op(&b, 2, 25, 50, "op=lookup k=x", "rc=0 owner=1");
    g_assert_true(check(&b));

    /* A list is an observation of every key over its interval. */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 1, 20, 30, "op=unregister k=x owner=1", "rc=0");
    op(&b, 2, 40, 50, "op=list", "rc=0 items=x@1@1@a:1");
    g_assert_false(check(&b));
}

static void test_pending(void)
{
    builder b;
    /* A client killed mid-register: the entry may appear... */
    builder_init(&b);
    op(&b, 1, 0, PENDING, "op=register k=x owner=1 meta=a:1", "");
    op(&b, 2, 20, 30, "op=entry k=x", "rc=0 owner=1 meta=a:1 rev=7");
    op(&b, 2, 40, 50, "op=lookup k=x", "rc=0 owner=1");
    g_assert_true(check(&b));
    /* ...or never. */
    builder_init(&b);
    op(&b, 1, 0, PENDING, "op=register k=x owner=1 meta=a:1", "");
    op(&b, 2, 20, 30, "op=lookup k=x", RC(-3));
    op(&b, 2, 40, 50, "op=register k=x owner=2 meta=a:2", "rc=0 rev=3");
    g_assert_true(check(&b));
    /* It may take effect late: after the key was freed. */
    builder_init(&b);
    op(&b, 1, 0, PENDING, "op=register k=x owner=1 meta=a:1", "");
    op(&b, 2, 10, 20, "op=register k=x owner=2 meta=a:2", "rc=0 rev=5");
    op(&b, 2, 21, 25, "op=unregister k=x owner=2", "rc=0");
    op(&b, 3, 30, 40, "op=entry k=x", "rc=0 owner=1 meta=a:1 rev=7");
    g_assert_true(check(&b));
    /* But not while the key is held, nor with an old revision. */
    builder_init(&b);
    op(&b, 1, 0, PENDING, "op=register k=x owner=1 meta=a:1", "");
    op(&b, 2, 10, 20, "op=register k=x owner=2 meta=a:2", "rc=0 rev=5");
    op(&b, 3, 30, 40, "op=entry k=x", "rc=0 owner=1 meta=a:1 rev=7");
    g_assert_false(check(&b));
    builder_init(&b);
    op(&b, 1, 0, PENDING, "op=register k=x owner=1 meta=a:1", "");
    op(&b, 2, 10, 20, "op=register k=x owner=2 meta=a:2", "rc=0 rev=5");
    op(&b, 2, 21, 25, "op=unregister k=x owner=2", "rc=0");
    op(&b, 3, 30, 40, "op=entry k=x", "rc=0 owner=1 meta=a:1 rev=4");
    g_assert_false(check(&b));
    /* An answer that does not say whether it happened is pending too. */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", RC(-8));
    op(&b, 2, 20, 30, "op=entry k=x", "rc=0 owner=1 meta=a:1 rev=2");
    g_assert_true(check(&b));
    /* A pending update's revision is learnt from what reads saw. */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 1, 20, PENDING, "op=update k=x owner=1 meta=b:2 mode=merge", "");
    op(&b, 2, 30, 40, "op=entry k=x", "rc=0 owner=1 meta=a:1,b:2 rev=3");
    op(&b, 2, 50, 60, "op=unregister k=x owner=1 if=3", "rc=0");
    g_assert_true(check(&b));
}

static void test_conflict_and_perm(void)
{
    builder b;
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 2, 20, 30, "op=unregister k=x owner=1 if=1", RC(-10));
    g_assert_false(check(&b));

    char perm[32];
    g_snprintf(perm, sizeof perm, "rc=%d", PROCREG_EPERM);
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 2, 20, 30, "op=unregister k=x owner=2", perm);
    op(&b, 2, 40, 50, "op=update k=x owner=2 meta=a:2", perm);
    op(&b, 2, 60, 70, "op=update k=x owner=2 meta=a:3 force=1", "rc=0 rev=2");
    op(&b, 2, 80, 90, "op=unregister k=x owner=2 force=1", "rc=0");
    g_assert_true(check(&b));
    /* A forced call is never refused for the owner rule... */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 2, 20, 30, "op=unregister k=x owner=2 force=1", perm);
    g_assert_false(check(&b));
    /* The revision is checked first: a caller that is not the owner and
     * names another revision gets a conflict, not EPERM. */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 2, 20, 30, "op=unregister k=x owner=2 if=5", RC(-10));
    g_assert_true(check(&b));
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 2, 20, 30, "op=unregister k=x owner=2 if=5", perm);
    g_assert_false(check(&b));
    /* ...and a caller that is not the owner cannot remove unforced. */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 2, 20, 30, "op=unregister k=x owner=2", "rc=0");
    g_assert_false(check(&b));
}

static void test_find(void)
{
    builder b;
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1,g:2", "rc=0 rev=1");
    op(&b, 1, 0, 10, "op=register k=y owner=1 meta=a:2,g:1", "rc=0 rev=2");
    op(&b, 2, 20, 30, "op=find field=g value=2", "rc=0 items=x@1@1@a:1,g:2");
    g_assert_true(check(&b));
    /* Missing a match present all along. */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1,g:2", "rc=0 rev=1");
    op(&b, 2, 20, 30, "op=find field=g value=2", "rc=0 items=");
    g_assert_false(check(&b));
    /* Returning an entry that does not match. */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1,g:1", "rc=0 rev=1");
    op(&b, 2, 20, 30, "op=find field=g value=2", "rc=0 items=x@1@1@a:1,g:1");
    g_assert_false(check(&b));
}

static void test_death(void)
{
    builder b;
    /* Reads may name the dead owner until the registry reaps it... */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=7 meta=a:1", "rc=0 rev=1");
    line(&b, "death owner=7 inv=100 res=110");
    op(&b, 2, 120, 130, "op=lookup k=x", "rc=0 owner=7");
    op(&b, 2, 200, 210, "op=register k=x owner=8 meta=a:2", "rc=0 rev=5");
    g_assert_true(check(&b));
    /* ...but not once it is gone. */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=7 meta=a:1", "rc=0 rev=1");
    line(&b, "death owner=7 inv=100 res=110");
    op(&b, 2, 120, 130, "op=lookup k=x", RC(-3));
    op(&b, 2, 140, 150, "op=lookup k=x", "rc=0 owner=7");
    g_assert_false(check(&b));
    /* A register after the death was confirmed must not name it. */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=7 meta=a:1", "rc=0 rev=1");
    line(&b, "death owner=7 inv=100 res=110");
    op(&b, 2, 200, 210, "op=register k=x owner=8 meta=a:2",
       RC(-4) " owner=7 meta=a:1 rev=1");
    GString *report = NULL;
    hist_check_opts o = {0};
    g_assert_false(check_full(&b, &o, &report));
    g_assert_nonnull(strstr(report->str, "naming the dead holder"));
    g_string_free(report, TRUE);
    /* Nor register the dead owner again. */
    builder_init(&b);
    line(&b, "death owner=7 inv=100 res=110");
    op(&b, 2, 200, 210, "op=register k=x owner=7 meta=a:2", "rc=0 rev=5");
    g_assert_false(check(&b));
    builder_init(&b);
    line(&b, "death owner=7 inv=100 res=110");
    op(&b, 2, 105, 210, "op=register k=x owner=7 meta=a:2", RC(-5));
    g_assert_true(check(&b));
    builder_init(&b);
    op(&b, 2, 105, 210, "op=register k=x owner=7 meta=a:2", RC(-5));
    g_assert_false(check(&b));
}

/* A register refused PROCREG_ENOTALIVE whose owner was killed during the
 * call may have stored its entry, which lock-free readers see, and taken
 * it back before it answered (core/writes.c: the owner died after the
 * core found it alive).  history-optimized-ckht, seed 197417786: client 1
 * read k2 from client 2's register for an owner killed 127 us after that
 * register began, 1.1 ms before it answered ENOTALIVE. */
static void test_taken_back(void)
{
    const hist_check_opts lin = {0};
    const hist_check_opts session = {.session = true, .stale_ns = 100};
    const hist_check_opts *modes[] = {&lin, &session};
    builder b;
    for (guint m = 0; m < G_N_ELEMENTS(modes); m++) {
        /* Seen by a read and a list while the register ran; its
         * revision is used up. */
        builder_init(&b);
        op(&b, 2, 40, 400, "op=register k=x owner=7 meta=a:2", RC(-5));
        line(&b, "death owner=7 inv=100 res=300");
        op(&b, 3, 150, 160, "op=entry k=x", "rc=0 owner=7 meta=a:2 rev=5");
        op(&b, 3, 170, 180, "op=list", "rc=0 items=x@7@5@a:2");
        op(&b, 3, 410, 420, "op=lookup k=x", RC(-3));
        op(&b, 1, 500, 510, "op=register k=x owner=8 meta=a:3", "rc=0 rev=6");
        g_assert_true(check_full(&b, modes[m], NULL));
        /* Stored after its owner's death took effect: the old entry of
         * the dead owner was taken over and removed before. */
        builder_init(&b);
        op(&b, 1, 0, 10, "op=register k=x owner=7 meta=a:1", "rc=0 rev=1");
        op(&b, 2, 50, 500, "op=register k=x owner=7 meta=a:2", RC(-5));
        line(&b, "death owner=7 inv=100 res=300");
        op(&b, 1, 310, 320, "op=register k=x owner=9 meta=a:3", "rc=0 rev=2");
        op(&b, 1, 330, 340, "op=unregister k=x owner=9 if=2", "rc=0");
        op(&b, 3, 350, 360, "op=entry k=x", "rc=0 owner=7 meta=a:2 rev=5");
        op(&b, 3, 510, 520, "op=entry k=x", RC(-3));
        g_assert_true(check_full(&b, modes[m], NULL));
        /* Not seen once it answered. */
        builder_init(&b);
        op(&b, 2, 40, 400, "op=register k=x owner=7 meta=a:2", RC(-5));
        line(&b, "death owner=7 inv=100 res=300");
        op(&b, 3, 600, 610, "op=entry k=x", "rc=0 owner=7 meta=a:2 rev=5");
        g_assert_false(check_full(&b, modes[m], NULL));
        /* Nor its revision reused. */
        builder_init(&b);
        op(&b, 2, 40, 400, "op=register k=x owner=7 meta=a:2", RC(-5));
        line(&b, "death owner=7 inv=100 res=300");
        op(&b, 3, 150, 160, "op=entry k=x", "rc=0 owner=7 meta=a:2 rev=5");
        op(&b, 1, 500, 510, "op=register k=x owner=8 meta=a:3", "rc=0 rev=4");
        g_assert_false(check_full(&b, modes[m], NULL));
        /* A register invoked after the death was confirmed stored
         * nothing: the core refused it before asking the backend. */
        builder_init(&b);
        line(&b, "death owner=7 inv=100 res=110");
        op(&b, 2, 150, 400, "op=register k=x owner=7 meta=a:2", RC(-5));
        op(&b, 3, 200, 210, "op=entry k=x", "rc=0 owner=7 meta=a:2 rev=5");
        g_assert_false(check_full(&b, modes[m], NULL));
    }
}

static void test_drop(void)
{
    builder b;
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 2, 20, 30, "op=drop", "rc=0");
    op(&b, 1, 40, 50, "op=lookup k=x", RC(-3));
    g_assert_true(check(&b));
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 2, 20, 30, "op=drop", "rc=0");
    op(&b, 1, 40, 50, "op=lookup k=x", "rc=0 owner=1");
    g_assert_false(check(&b));
}

static void test_revision_order(void)
{
    builder b;
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=5");
    op(&b, 1, 20, 30, "op=unregister k=x owner=1", "rc=0");
    op(&b, 1, 40, 50, "op=register k=x owner=1 meta=a:2", "rc=0 rev=3");
    g_assert_false(check(&b));
}

static void test_events(void)
{
    builder b;
    const char *writes[] = {
        "op=register k=x owner=1 meta=a:1", "rc=0 rev=1",
        "op=update k=x owner=1 meta=a:2", "rc=0 rev=2",
        "op=unregister k=x owner=1", "rc=0",
    };
    /* In order and complete. */
    builder_init(&b);
    line(&b, "sub c=9 inv=0 res=5");
    for (int i = 0; i < 3; i++)
        op(&b, 1, 10 + 20 * i, 20 + 20 * i, writes[2 * i], writes[2 * i + 1]);
    line(&b, "ev c=9 t=25 seq=1 kind=registered reason=none k=x owner=1 "
             "meta=a:1 rev=1");
    line(&b, "ev c=9 t=45 seq=2 kind=updated reason=none k=x owner=1 "
             "meta=a:2 rev=2");
    line(&b, "ev c=9 t=65 seq=3 kind=unregistered reason=explicit k=x "
             "owner=1 meta=a:2 rev=2");
    line(&b, "drained c=9 t=100 complete=1");
    g_assert_true(check(&b));
    /* Out of revision order. */
    builder_init(&b);
    line(&b, "sub c=9 inv=0 res=5");
    for (int i = 0; i < 2; i++)
        op(&b, 1, 10 + 20 * i, 20 + 20 * i, writes[2 * i], writes[2 * i + 1]);
    line(&b, "ev c=9 t=45 seq=1 kind=updated reason=none k=x owner=1 "
             "meta=a:2 rev=2");
    line(&b, "ev c=9 t=46 seq=2 kind=registered reason=none k=x owner=1 "
             "meta=a:1 rev=1");
    GString *report = NULL;
    hist_check_opts o = {0};
    g_assert_false(check_full(&b, &o, &report));
    g_assert_nonnull(strstr(report->str, "events of a key out of order: "
                                        "REGISTERED while it was present"));
    g_string_free(report, TRUE);
    /* An entry the linearization never had. */
    builder_init(&b);
    line(&b, "sub c=9 inv=0 res=5");
    op(&b, 1, 10, 20, writes[0], writes[1]);
    line(&b, "ev c=9 t=25 seq=1 kind=registered reason=none k=x owner=1 "
             "meta=a:7 rev=1");
    g_assert_false(check(&b));
    /* Lost: a drained subscription missed a write made after it. */
    builder_init(&b);
    line(&b, "sub c=9 inv=0 res=5");
    for (int i = 0; i < 2; i++)
        op(&b, 1, 10 + 20 * i, 20 + 20 * i, writes[2 * i], writes[2 * i + 1]);
    line(&b, "ev c=9 t=25 seq=1 kind=registered reason=none k=x owner=1 "
             "meta=a:1 rev=1");
    line(&b, "drained c=9 t=100 complete=1");
    g_assert_false(check(&b));
    /* A removal without a cause. */
    builder_init(&b);
    line(&b, "sub c=9 inv=0 res=5");
    op(&b, 1, 10, 20, writes[0], writes[1]);
    line(&b, "ev c=9 t=25 seq=1 kind=registered reason=none k=x owner=1 "
             "meta=a:1 rev=1");
    line(&b, "ev c=9 t=35 seq=2 kind=unregistered reason=owner_exited k=x "
             "owner=1 meta=a:1 rev=1");
    g_assert_false(check(&b));
}

static void test_session(void)
{
    hist_check_opts session = {.session = true, .stale_ns = 100};
    builder b;
    /* A read up to stale_ns old is within the optimized promise... */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 1, 20, 30, "op=update k=x owner=1 meta=a:2", "rc=0 rev=2");
    op(&b, 2, 60, 70, "op=entry k=x", "rc=0 owner=1 meta=a:1 rev=1");
    g_assert_true(check_full(&b, &session, NULL));
    /* ...unless the same client saw the newer one (monotonic reads)... */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 1, 20, 30, "op=update k=x owner=1 meta=a:2", "rc=0 rev=2");
    op(&b, 2, 40, 50, "op=entry k=x", "rc=0 owner=1 meta=a:2 rev=2");
    op(&b, 2, 60, 70, "op=entry k=x", "rc=0 owner=1 meta=a:1 rev=1");
    g_assert_false(check_full(&b, &session, NULL));
    /* ...or wrote it (read-your-writes)... */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 1, 20, 30, "op=update k=x owner=1 meta=a:2", "rc=0 rev=2");
    op(&b, 1, 60, 70, "op=entry k=x", "rc=0 owner=1 meta=a:1 rev=1");
    g_assert_false(check_full(&b, &session, NULL));
    /* ...or it is older than stale_ns. */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 1, 20, 30, "op=update k=x owner=1 meta=a:2", "rc=0 rev=2");
    op(&b, 2, 200, 210, "op=entry k=x", "rc=0 owner=1 meta=a:1 rev=1");
    g_assert_false(check_full(&b, &session, NULL));
    /* Absent after present needs a removal in between. */
    builder_init(&b);
    op(&b, 1, 0, 10, "op=register k=x owner=1 meta=a:1", "rc=0 rev=1");
    op(&b, 1, 20, 30, "op=lookup k=x", RC(-3));
    g_assert_false(check_full(&b, &session, NULL));
}

static void test_parse_errors(void)
{
    g_autoptr(hist) h = hist_new();
    g_autoptr(GError) err = NULL;
    g_assert_false(hist_load_text(h, "res c=1 id=1 t=5 rc=0\n", "t", &err));
    g_assert_nonnull(strstr(err->message, "never invoked"));
    g_clear_error(&err);
    g_assert_false(hist_load_text(h, "inv c=1 id=1 t=0 op=fly k=x\n", "t",
                                  &err));
    g_assert_nonnull(strstr(err->message, "t:1: field op"));
    g_clear_error(&err);
    g_assert_false(hist_load_text(h, "inv c=1 id=2 t=0 op=lookup\n", "t",
                                  &err));
    g_clear_error(&err);
    /* A torn last line (a writer killed mid-write) is skipped. */
    g_autoptr(hist) h2 = hist_new();
    g_assert_true(hist_load_text(
        h2, "inv c=1 id=1 t=0 op=lookup k=x\nres c=1 id=1 t=", "t", &err));
    g_assert_no_error(err);
    g_assert_cmpuint(h2->ops->len, ==, 1);
    g_assert_cmpint(g_array_index(h2->ops, hist_op, 0).res, ==, HIST_PENDING);
}

/* ---- a generated history ---- */

typedef struct {
    int owner; /* 0: absent */
    int64_t token;
    uint64_t rev;
} sim_key;

/* @n operations of @clients clients on @keys keys, each client's taking
 * 50 ns and overlapping the others'; effects happen in the middle of
 * each, so the history is linearizable.  With @stale, one read near the
 * end answers the revision before the last. */
static GString *generate(int n, int clients, int keys, bool stale)
{
    GString *t = g_string_new(NULL);
    GRand *rand = g_rand_new_with_seed(42);
    sim_key *k = g_new0(sim_key, keys);
    uint64_t *prev_rev = g_new0(uint64_t, keys);
    int *last_write = g_new0(int, keys);
    int64_t *prev_token = g_new0(int64_t, keys);
    uint64_t rev = 0;
    int stale_at = n - n / 10;
    for (int i = 0; i < n; i++) {
        int c = i % clients, key = g_rand_int_range(rand, 0, keys);
        int64_t inv = (int64_t)i * 50 / clients * 2, res = inv + 50;
        sim_key *s = &k[key];
        int pick = g_rand_int_range(rand, 0, 4);
        g_string_append_printf(t, "inv c=%d id=%d t=%" PRId64 " ", c, i, inv);
        if (pick == 0) {
            g_string_append_printf(t, "op=register k=k%d owner=%d meta=a:%d\n",
                                   key, c + 1, i);
            if (s->owner == 0) {
                prev_rev[key] = s->rev;
                prev_token[key] = s->token;
                last_write[key] = i;
                *s = (sim_key){c + 1, i, ++rev};
                g_string_append_printf(t, "res c=%d id=%d t=%" PRId64
                                       " rc=0 rev=%" PRIu64 "\n", c, i, res,
                                       rev);
            } else {
                g_string_append_printf(t, "res c=%d id=%d t=%" PRId64
                                       " rc=-4 owner=%d meta=a:%" PRId64
                                       " rev=%" PRIu64 "\n", c, i, res,
                                       s->owner, s->token, s->rev);
            }
        } else if (pick == 1) {
            g_string_append_printf(t, "op=update k=k%d owner=%d meta=a:%d "
                                   "force=1\n", key, c + 1, i);
            if (s->owner != 0) {
                prev_rev[key] = s->rev;
                prev_token[key] = s->token;
                last_write[key] = i;
                s->token = i;
                s->rev = ++rev;
                g_string_append_printf(t, "res c=%d id=%d t=%" PRId64
                                       " rc=0 rev=%" PRIu64 "\n", c, i, res,
                                       rev);
            } else {
                g_string_append_printf(t, "res c=%d id=%d t=%" PRId64
                                       " rc=-3\n", c, i, res);
            }
        } else if (pick == 2 && g_rand_int_range(rand, 0, 3) == 0) {
            g_string_append_printf(t, "op=unregister k=k%d owner=%d "
                                   "force=1\n", key, c + 1);
            g_string_append_printf(t, "res c=%d id=%d t=%" PRId64 " rc=%d\n",
                                   c, i, res, s->owner ? 0 : -3);
            s->owner = 0;
        } else {
            g_string_append_printf(t, "op=entry k=k%d\n", key);
            /* Stale only when the newer write surely came first. */
            bool lie = stale && i >= stale_at && s->owner != 0 &&
                       prev_rev[key] != 0 && i - last_write[key] > 2 * clients;
            if (lie)
                stale = false;
            if (s->owner == 0)
                g_string_append_printf(t, "res c=%d id=%d t=%" PRId64
                                       " rc=-3\n", c, i, res);
            else
                g_string_append_printf(t, "res c=%d id=%d t=%" PRId64
                                       " rc=0 owner=%d meta=a:%" PRId64
                                       " rev=%" PRIu64 "\n", c, i, res,
                                       s->owner,
                                       lie ? prev_token[key] : s->token,
                                       lie ? prev_rev[key] : s->rev);
        }
    }
    g_free(k);
    g_free(prev_rev);
    g_free(prev_token);
    g_free(last_write);
    g_rand_free(rand);
    return t;
}

static void test_generated(void)
{
    g_autoptr(GString) good = generate(10000, 8, 8, false);
    g_autoptr(hist) h = hist_new();
    g_autoptr(GError) err = NULL;
    g_assert_true(hist_load_text(h, good->str, "generated", &err));
    hist_check_opts o = {0};
    g_autoptr(GString) report = g_string_new(NULL);
    hist_check_stats st;
    g_assert_true(hist_check(h, &o, report, &st));
    g_test_message("10000 generated operations: %zu per-key operations, "
                   "%zu states, %.3f s (%.0f ops/s)",
                   st.ops, st.states, st.seconds, 10000 / st.seconds);

    g_autoptr(GString) bad = generate(10000, 8, 8, true);
    g_autoptr(hist) h2 = hist_new();
    g_assert_true(hist_load_text(h2, bad->str, "generated", &err));
    g_assert_false(hist_check(h2, &o, report, &st));
    g_test_message("%s", report->str);
    /* The stale read, the write it should have seen and the one it saw
     * (and what that needs to be explained). */
    const char *n = strstr(report->str, "smallest failing sub-history found (");
    g_assert_nonnull(n);
    g_assert_cmpint(atoi(n + strlen("smallest failing sub-history found (")),
                    <=, 4);
}

/* The search's memo keeps each configuration's placed operations as a
 * window of the operations that ran at the same time, not a bit per
 * operation of the key: 50 000 operations on one key took 6 KB a state
 * (310 MB) that way, and the 120 000 a key of a 2 s run 1.8 GB. */
static void test_memo_size(void)
{
    g_autoptr(GString) text = generate(50000, 8, 1, false);
    g_autoptr(hist) h = hist_new();
    g_autoptr(GError) err = NULL;
    g_assert_true(hist_load_text(h, text->str, "generated", &err));
    hist_check_opts o = {0};
    g_autoptr(GString) report = g_string_new(NULL);
    hist_check_stats st;
    g_assert_true(hist_check(h, &o, report, &st));
    g_test_message("50000 operations on one key: %zu states, memo %zu B",
                   st.states, st.memo_bytes);
    g_assert_cmpuint(st.states, >=, 50000);
    g_assert_cmpuint(st.memo_bytes / st.states, <=, 256);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/history/checker/sequential", test_sequential);
    g_test_add_func("/history/checker/concurrent-registers",
                    test_concurrent_registers);
    g_test_add_func("/history/checker/stale-read", test_stale_read);
    g_test_add_func("/history/checker/read-after-removal",
                    test_read_after_removal);
    g_test_add_func("/history/checker/pending", test_pending);
    g_test_add_func("/history/checker/conflict-and-perm",
                    test_conflict_and_perm);
    g_test_add_func("/history/checker/find", test_find);
    g_test_add_func("/history/checker/death", test_death);
    g_test_add_func("/history/checker/taken-back", test_taken_back);
    g_test_add_func("/history/checker/drop", test_drop);
    g_test_add_func("/history/checker/revision-order", test_revision_order);
    g_test_add_func("/history/checker/events", test_events);
    g_test_add_func("/history/checker/session", test_session);
    g_test_add_func("/history/checker/parse-errors", test_parse_errors);
    g_test_add_func("/history/checker/generated", test_generated);
    g_test_add_func("/history/checker/memo-size", test_memo_size);
    return g_test_run();
}
