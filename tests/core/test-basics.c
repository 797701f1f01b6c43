/*
 * Core pieces without a backend: error strings, key validation and its
 * messages, prepared keys, owners and liveness, the key hash.
 */
#ifndef PROCREG_ENABLE_BACKEND
#define PROCREG_ENABLE_BACKEND 1
#endif
#include <procreg/backend.h>

#include "../hidden-proc.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_strerror(void)
{
    static const int codes[] = {
        PROCREG_OK,        PROCREG_ERROR_FAILED, PROCREG_EINVAL,
        PROCREG_ENOTFOUND, PROCREG_EEXISTS,      PROCREG_ENOTALIVE,
        PROCREG_ENOMEM,    PROCREG_ENOTSUP,      PROCREG_ETIMEDOUT,
        PROCREG_ECANCELLED, PROCREG_ECONFLICT,   PROCREG_EFULL,
        PROCREG_EBACKEND,  PROCREG_EUNKNOWN_BACKEND, PROCREG_EPERM,
    };
    const char *unknown = procreg_strerror(-12345);
    g_assert_cmpstr(unknown, ==, "unknown error");
    g_assert_cmpstr(procreg_strerror(1), ==, "unknown error");
    g_assert_cmpstr(procreg_strerror(G_MININT), ==, "unknown error");
    g_assert_cmpstr(procreg_strerror(PROCREG_ECOMPACTED - 1), ==,
                    "unknown error");
    for (size_t i = 0; i < G_N_ELEMENTS(codes); i++) {
        const char *s = procreg_strerror(codes[i]);
        g_assert_nonnull(s);
        g_assert_cmpstr(s, !=, "");
        if (strcmp(s, unknown) == 0)
            g_error("procreg_strerror(%d) is \"unknown error\"", codes[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(s, procreg_strerror(codes[j])) == 0)
                g_error("codes %d and %d share the text \"%s\"", codes[i],
                        codes[j], s);
    }
    g_assert_cmpstr(procreg_strerror(PROCREG_ENOTFOUND), ==, "not found");
    g_assert_true(PROCREG_ERROR != 0);
    g_assert_cmpstr(g_quark_to_string(PROCREG_ERROR), !=, "");
}

static void expect_rule(const char *s, const char *what, const char *rule)
{
    GError *err = NULL;
    int rc = procreg_validate_name(s, what, &err);
    if (rc != PROCREG_EINVAL)
        g_error("\"%s\" as %s: expected EINVAL (%s), got %d", s ? s : "NULL",
                what, rule, rc);
    g_assert_error(err, PROCREG_ERROR, PROCREG_EINVAL);
    g_autofree char *lower = g_ascii_strdown(err->message, -1);
    if (strstr(lower, rule) == NULL)
        g_error("message \"%s\" does not name the rule (%s)", err->message,
                rule);
    if (strstr(err->message, what) == NULL)
        g_error("message \"%s\" does not say it is the %s", err->message,
                what);
    g_error_free(err);
    g_assert_cmpint(procreg_validate_name(s, what, NULL), ==, PROCREG_EINVAL);
}

/* The word-at-a-time check behind procreg_key_new() agrees with
 * procreg_validate_name() on every byte value at every position of names
 * of 1 to 24 bytes (each length takes its own path through the words). */
static void test_validation_fast_path(void)
{
    for (size_t len = 1; len <= 24; len++)
        for (size_t pos = 0; pos < len; pos++)
            for (unsigned c = 1; c < 256; c++) {
                char name[32];
                memset(name, 'a', len);
                name[len] = '\0';
                name[pos] = (char)c;
                int expected = procreg_validate_name(name, "name", NULL);
                procreg_key *k = NULL;
                int rc = procreg_key_new("ns", name, &k, NULL);
                if (rc != expected)
                    g_error("byte 0x%02x at %zu of %zu: key_new %d, "
                            "validate_name %d", c, pos, len, rc, expected);
                g_assert_true((rc == 0) == (k != NULL));
                if (k != NULL)
                    g_assert_cmpstr(procreg_key_name(k), ==, name);
                procreg_key_unref(k);
            }
}

/* The one-pass key builder (copy, check and hash per word) against the
 * byte-wise definition: every length of either part up to 40 (each
 * branch of the word walk), and the longest names. */
static void test_key_one_pass(void)
{
    static const size_t lens[] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                  11, 12, 13, 14, 15, 16, 17, 18, 23, 24,
                                  25, 31, 32, 33, 39, 40, 254, 255};
    char ns[256], name[256], expect[512];
    for (size_t i = 0; i < G_N_ELEMENTS(lens); i++)
        for (size_t j = 0; j < G_N_ELEMENTS(lens); j++) {
            size_t nl = lens[i], ml = lens[j];
            for (size_t b = 0; b < nl; b++)
                ns[b] = (char)(' ' + (b * 7 + nl) % 95);
            for (size_t b = 0; b < ml; b++)
                name[b] = (char)(' ' + (b * 13 + ml) % 95);
            ns[nl] = name[ml] = '\0';
            memcpy(expect, ns, nl + 1);
            memcpy(expect + nl + 1, name, ml + 1);
            procreg_key *k = NULL;
            g_assert_cmpint(procreg_key_new(ns, name, &k, NULL), ==, 0);
            g_assert_cmpuint(procreg_key_size(k), ==, nl + 1 + ml);
            g_assert_cmpmem(procreg_key_bytes(k), nl + ml + 2, expect,
                            nl + ml + 2);
            g_assert_cmpuint(k->hash, ==,
                             procreg_key_hash(expect, nl + 1 + ml));
            procreg_key_unref(k);
        }
}

static void test_validation_messages(void)
{
    char n256[257];
    memset(n256, 'a', 256);
    n256[256] = '\0';
    expect_rule("", "name", "empty");
    expect_rule("", "namespace", "empty");
    expect_rule(n256, "name", "255");
    expect_rule("\xff\xfe", "name", "utf-8");
    expect_rule("ok\xc3", "namespace", "utf-8");
    expect_rule("a\nb", "name", "control");
    expect_rule("tab\there", "name", "control");
    expect_rule("del\x7f", "name", "control");
    expect_rule("c1\xc2\x9b", "name", "control");
    expect_rule(NULL, "name", "name");

    g_assert_cmpint(procreg_validate_name(n256 + 1, "name", NULL), ==, 0);
    g_assert_cmpint(procreg_validate_name("\xe2\x82\xac uro", "name", NULL),
                    ==, 0);
    g_assert_cmpint(procreg_validate_name("a b/c:d=e,f", "name", NULL), ==, 0);

    /* procreg_key_new names the part that failed. */
    procreg_key *k = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_key_new("bad\n", "fine", &k, &err), ==,
                    PROCREG_EINVAL);
    g_assert_null(k);
    g_assert_nonnull(strstr(err->message, "namespace"));
    g_clear_error(&err);
    g_assert_cmpint(procreg_key_new("fine", "", &k, &err), ==,
                    PROCREG_EINVAL);
    g_assert_nonnull(strstr(err->message, "name"));
    g_clear_error(&err);
}

static void test_keys(void)
{
    procreg_key *k = NULL;
    GError *err = NULL;
    g_assert_cmpint(procreg_key_new(NULL, "svc", &k, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpstr(procreg_key_namespace(k), ==, PROCREG_NS_PRODUCTION);
    g_assert_cmpstr(procreg_key_name(k), ==, "svc");
    g_assert_cmpuint(k->ns_len, ==, strlen(PROCREG_NS_PRODUCTION));
    g_assert_cmpuint(k->name_len, ==, 3);
    g_assert_cmpuint(procreg_key_size(k), ==, sizeof "production\0svc" - 1);
    g_assert_cmpmem(procreg_key_bytes(k), procreg_key_size(k),
                    "production\0svc", sizeof "production\0svc" - 1);
    g_assert_cmpuint(k->hash, ==,
                     procreg_key_hash(procreg_key_bytes(k),
                                      procreg_key_size(k)));

    procreg_key *same = NULL, *other = NULL, *shifted = NULL;
    g_assert_cmpint(procreg_key_new("production", "svc", &same, NULL), ==, 0);
    g_assert_cmpuint(same->hash, ==, k->hash);
    g_assert_cmpint(procreg_key_new("production", "svd", &other, NULL), ==,
                    0);
    g_assert_cmpuint(other->hash, !=, k->hash);
    g_assert_cmpint(procreg_key_new("productions", "vc", &shifted, NULL), ==,
                    0);
    g_assert_cmpuint(shifted->hash, !=, k->hash);

    g_assert_true(procreg_key_ref(k) == k);
    procreg_key_unref(k);
    g_assert_cmpstr(procreg_key_name(k), ==, "svc");
    procreg_key_unref(k);
    procreg_key_unref(same);
    procreg_key_unref(other);
    procreg_key_unref(shifted);
    procreg_key_unref(NULL);

    /* 255-byte parts fit, in every combination. */
    char n255[256];
    memset(n255, 'z', 255);
    n255[255] = '\0';
    g_assert_cmpint(procreg_key_new(n255, n255, &k, NULL), ==, 0);
    g_assert_cmpuint(strlen(procreg_key_namespace(k)), ==, 255);
    g_assert_cmpuint(strlen(procreg_key_name(k)), ==, 255);
    procreg_key_unref(k);

    /* Hash: equal input, equal hash; spread over a few inputs. */
    GHashTable *seen = g_hash_table_new(g_int64_hash, g_int64_equal);
    static gint64 hashes[1000];
    for (int i = 0; i < 1000; i++) {
        char buf[32];
        int len = g_snprintf(buf, sizeof buf, "key-%d", i);
        hashes[i] = (gint64)procreg_hash(buf, (size_t)len);
        g_assert_cmpuint(procreg_hash(buf, (size_t)len), ==,
                         (guint64)hashes[i]);
        g_hash_table_add(seen, &hashes[i]);
    }
    g_assert_cmpuint(g_hash_table_size(seen), ==, 1000);
    g_hash_table_unref(seen);
}

/* Bucket spread of real-looking names: 2^16 keys into 2^16 buckets leave
 * 1/e of them empty for a random function.  Low bits (ck_ht's and
 * GHashTable's index) and high bits are both checked, of procreg_hash()
 * (@ns NULL) and of key hashes (names in @ns), over inputs of many
 * lengths (short inputs take other code paths). */
static void check_spread(const char *ns, const char *prefix,
                         const char *suffix, int shift)
{
    enum { N = 1 << 16 };
    guint8 *used = g_malloc0(N);
    for (int i = 0; i < N; i++) {
        char name[64];
        g_snprintf(name, sizeof name, "%s%d%s", prefix, i, suffix);
        uint64_t h;
        if (ns == NULL) {
            h = procreg_hash(name, strlen(name));
        } else {
            procreg_key *k = NULL;
            g_assert_cmpint(procreg_key_new(ns, name, &k, NULL), ==, 0);
            h = k->hash;
            procreg_key_unref(k);
        }
        used[(h >> shift) & (N - 1)] = 1;
    }
    int empty = 0;
    for (int i = 0; i < N; i++)
        empty += !used[i];
    double frac = (double)empty / N;
    if (frac < 0.355 || frac > 0.380)
        g_error("names %s/%sN%s, bits %d..%d: %.4f of buckets empty, "
                "expected about 0.368", ns ? ns : "(bytes)", prefix, suffix,
                shift, shift + 15, frac);
    g_free(used);
}

static void test_hash_spread(void)
{
    static const char *const shapes[][3] = {
        {NULL, "", ""}, {NULL, "svc-", ""}, {"a", "", ""},
        {"production", "service_", ""},
        {"test-7f3a9c1e4b2d8a06", "worker.", ".queue.inbound"},
    };
    for (size_t f = 0; f < G_N_ELEMENTS(shapes); f++)
        for (int shift = 0; shift <= 48; shift += 16)
            check_spread(shapes[f][0], shapes[f][1], shapes[f][2], shift);

    /* Where the namespace ends matters, and which part is which. */
    uint64_t ab_c = procreg_key_hash("ab\0c", 4);
    g_assert_cmpuint(ab_c, !=, procreg_key_hash("a\0bc", 4));
    g_assert_cmpuint(procreg_key_hash("x\0y", 3), !=,
                     procreg_key_hash("y\0x", 3));
    g_assert_cmpuint(procreg_key_hash("x\0x", 3), !=, procreg_hash("x\0x", 3));

    /* Every length 0..40 of one byte string, and inputs differing in one
     * bit anywhere: all hashes distinct. */
    GHashTable *seen = g_hash_table_new(g_int64_hash, g_int64_equal);
    static gint64 hashes[41 + 40 * 8];
    unsigned char buf[40] = {0};
    int n = 0;
    for (size_t len = 0; len <= 40; len++)
        hashes[n++] = (gint64)procreg_hash(buf, len);
    for (size_t byte = 0; byte < 40; byte++)
        for (int bit = 0; bit < 8; bit++) {
            buf[byte] ^= (unsigned char)(1u << bit);
            hashes[n++] = (gint64)procreg_hash(buf, sizeof buf);
            buf[byte] ^= (unsigned char)(1u << bit);
        }
    for (int i = 0; i < n; i++)
        g_hash_table_add(seen, &hashes[i]);
    g_assert_cmpuint(g_hash_table_size(seen), ==, (guint)n);
    g_hash_table_unref(seen);
}

static pid_t fork_and_reap(void)
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

static void test_owners(void)
{
    procreg_owner self, me;
    procreg_owner_self(&self);
    g_assert_cmpint(self.pid, ==, getpid());
    g_assert_cmpuint(self.start_time, >, 0);
    g_assert_true(procreg_owner_is_alive(&self));

    GError *err = NULL;
    g_assert_cmpint(procreg_owner_from_pid(getpid(), &me, &err), ==, 0);
    g_assert_no_error(err);
    g_assert_cmpint(me.pid, ==, self.pid);
    g_assert_cmpuint(me.start_time, ==, self.start_time);
    g_assert_true(procreg_owner_is_alive(&me));

    /* Another live process: our parent. */
    procreg_owner parent;
    g_assert_cmpint(procreg_owner_from_pid(getppid(), &parent, NULL), ==, 0);
    g_assert_true(procreg_owner_is_alive(&parent));
    g_assert_cmpuint(parent.start_time, <=, self.start_time);

    /* A reaped child is not alive. */
    pid_t dead = fork_and_reap();
    g_assert_cmpint(procreg_owner_from_pid(dead, &me, &err), ==,
                    PROCREG_ENOTALIVE);
    g_assert_error(err, PROCREG_ERROR, PROCREG_ENOTALIVE);
    g_clear_error(&err);
    procreg_owner gone = {.pid = dead, .start_time = 0};
    g_assert_false(procreg_owner_is_alive(&gone));

    /* Our pid with another start time: a reused pid, not alive. */
    procreg_owner reused = self;
    reused.start_time = self.start_time + 1;
    g_assert_false(procreg_owner_is_alive(&reused));
    reused.start_time = self.start_time - 1;
    g_assert_false(procreg_owner_is_alive(&reused));
    /* Start time unknown: the pid decides. */
    procreg_owner unknown = {.pid = getpid(), .start_time = 0};
    g_assert_true(procreg_owner_is_alive(&unknown));

    /* Invalid pids. */
    g_assert_cmpint(procreg_owner_from_pid(0, &me, &err), ==, PROCREG_EINVAL);
    g_assert_error(err, PROCREG_ERROR, PROCREG_EINVAL);
    g_clear_error(&err);
    g_assert_cmpint(procreg_owner_from_pid(-5, &me, NULL), ==,
                    PROCREG_EINVAL);
    procreg_owner zero = {0};
    g_assert_false(procreg_owner_is_alive(&zero));
    procreg_owner negative = {.pid = -1};
    g_assert_false(procreg_owner_is_alive(&negative));

    /* A live child, then killed and reaped. */
    pid_t child = fork();
    if (child == 0) {
        for (;;)
            pause();
    }
    g_assert_cmpint(child, >, 0);
    procreg_owner c;
    g_assert_cmpint(procreg_owner_from_pid(child, &c, NULL), ==, 0);
    g_assert_true(procreg_owner_is_alive(&c));
    g_assert_cmpuint(c.start_time, >=, self.start_time);
    kill(child, SIGKILL);
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    g_assert_false(procreg_owner_is_alive(&c));
}

/* What a process that cannot read its parent's /proc/PID/stat (hidepid)
 * finds of @parent (live, root) and @dead (reaped): NULL, or the first
 * answer that is wrong. */
static const char *hidden_owner_checks(const procreg_owner *parent,
                                       pid_t dead)
{
    procreg_owner o, by_pid = {parent->pid, 0};
    if (!procreg_owner_is_alive(parent))
        return "the live parent is dead";
    if (!procreg_owner_is_alive(&by_pid))
        return "the live parent, by its pid alone, is dead";
    if (procreg_owner_from_pid(parent->pid, &o, NULL) != 0)
        return "procreg_owner_from_pid() of the live parent failed";
    if (o.pid != parent->pid || o.start_time != 0)
        return "procreg_owner_from_pid() of the parent: not pid-only";
    procreg_owner gone = {dead, parent->start_time};
    if (procreg_owner_is_alive(&gone))
        return "a reaped child is alive";
    gone.start_time = 0;
    if (procreg_owner_is_alive(&gone))
        return "a reaped child, by its pid alone, is alive";
    if (procreg_owner_from_pid(dead, &o, NULL) != PROCREG_ENOTALIVE)
        return "procreg_owner_from_pid() of a reaped child: not ENOTALIVE";
    /* Registered on the parent's behalf: the start time given is kept. */
    procreg *reg = NULL;
    procreg_entry e = {0};
    bool kept = procreg_open("ghash", &reg, NULL) == 0 &&
                procreg_register(reg, "hidden", "p", parent, NULL, &e,
                                 NULL) == 0 &&
                e.owner.pid == parent->pid &&
                e.owner.start_time == parent->start_time;
    procreg_entry_clear(&e);
    if (reg != NULL)
        procreg_close(reg);
    if (!kept)
        return "a registration for the live parent failed or lost its "
               "start time";
    return NULL;
}

/* With /proc mounted hidepid=2, a process of another user is invisible
 * there: it must still count as alive (kill() finds it), and a dead one
 * as dead.  The checks run in a child in such a view (tests/hidden-proc.h),
 * which says "ok", "skip: why" or what went wrong. */
static void test_owners_hidden(void)
{
    procreg_owner parent;
    procreg_owner_self(&parent);
    pid_t dead = fork_and_reap();
    int fds[2];
    g_assert_cmpint(pipe(fds), ==, 0);
    pid_t child = fork();
    g_assert_cmpint(child, >=, 0);
    if (child == 0) {
        close(fds[0]);
        char *why = hidden_proc_enter();
        const char *wrong = why == NULL ? hidden_owner_checks(&parent, dead)
                                        : NULL;
        char *say = why != NULL     ? g_strdup_printf("skip: %s", why)
                    : wrong != NULL ? g_strdup(wrong)
                                    : g_strdup("ok");
        ssize_t n = write(fds[1], say, strlen(say));
        _exit(n == (ssize_t)strlen(say) ? 0 : 1);
    }
    close(fds[1]);
    char said[256];
    ssize_t n = read(fds[0], said, sizeof said - 1);
    close(fds[0]);
    int status;
    g_assert_cmpint(waitpid(child, &status, 0), ==, child);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    g_assert_cmpint(n, >, 0);
    said[n] = '\0';
    if (g_str_has_prefix(said, "skip: "))
        g_test_skip(said + 6);
    else
        g_assert_cmpstr(said, ==, "ok");
}

static void test_health_names(void)
{
    g_assert_cmpstr(procreg_health_status_name(PROCREG_HEALTH_OK), ==, "ok");
    g_assert_cmpstr(procreg_health_status_name(PROCREG_HEALTH_DEGRADED), ==,
                    "degraded");
    g_assert_cmpstr(procreg_health_status_name(PROCREG_HEALTH_FAILED), ==,
                    "failed");
    procreg_health_clear(NULL);
    procreg_entry_clear(NULL);
    procreg_entries_free(NULL, 0);
}

static void test_metadata_values(void)
{
    GVariant *i32 = g_variant_ref_sink(g_variant_new_int32(80));
    GVariant *u64 = g_variant_ref_sink(g_variant_new_uint64(80));
    GVariant *byte = g_variant_ref_sink(g_variant_new_byte(80));
    GVariant *neg = g_variant_ref_sink(g_variant_new_int64(-1));
    GVariant *max = g_variant_ref_sink(g_variant_new_uint64(G_MAXUINT64));
    GVariant *s80 = g_variant_ref_sink(g_variant_new_string("80"));
    GVariant *t = g_variant_ref_sink(g_variant_new_boolean(TRUE));
    GVariant *one = g_variant_ref_sink(g_variant_new_int32(1));
    GVariant *d = g_variant_ref_sink(g_variant_new_double(80.0));
    GVariant *as = g_variant_ref_sink(g_variant_new_strv(NULL, 0));

    g_assert_true(procreg_metadata_value_indexable(i32));
    g_assert_true(procreg_metadata_value_indexable(max));
    g_assert_true(procreg_metadata_value_indexable(s80));
    g_assert_true(procreg_metadata_value_indexable(t));
    g_assert_false(procreg_metadata_value_indexable(d));
    g_assert_false(procreg_metadata_value_indexable(as));

    g_assert_true(procreg_metadata_value_equal(i32, u64));
    g_assert_true(procreg_metadata_value_equal(u64, byte));
    g_assert_false(procreg_metadata_value_equal(neg, max));
    g_assert_false(procreg_metadata_value_equal(max, neg));
    g_assert_false(procreg_metadata_value_equal(i32, s80));
    g_assert_false(procreg_metadata_value_equal(t, one));
    g_assert_false(procreg_metadata_value_equal(i32, d));
    g_assert_true(procreg_metadata_value_equal(s80, s80));

    GVariant *all[] = {i32, u64, byte, neg, max, s80, t, one, d, as};
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
        g_variant_unref(all[i]);
}

static void test_set_error(void)
{
    GError *err = NULL;
    g_assert_cmpint(procreg_set_error(&err, PROCREG_EFULL, "x=%d", 5), ==,
                    PROCREG_EFULL);
    g_assert_error(err, PROCREG_ERROR, PROCREG_EFULL);
    g_assert_cmpstr(err->message, ==, "x=5");
    g_clear_error(&err);
    g_assert_cmpint(procreg_set_error(NULL, PROCREG_EINVAL, "ignored"), ==,
                    PROCREG_EINVAL);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/core/basics/strerror", test_strerror);
    g_test_add_func("/core/basics/validation-messages",
                    test_validation_messages);
    g_test_add_func("/core/basics/keys", test_keys);
    g_test_add_func("/core/basics/hash-spread", test_hash_spread);
    g_test_add_func("/core/basics/validation-fast-path",
                    test_validation_fast_path);
    g_test_add_func("/core/basics/key-one-pass", test_key_one_pass);
    g_test_add_func("/core/basics/owners", test_owners);
    g_test_add_func("/core/basics/owners-hidden", test_owners_hidden);
    g_test_add_func("/core/basics/health-names", test_health_names);
    g_test_add_func("/core/basics/metadata-values", test_metadata_values);
    g_test_add_func("/core/basics/set-error", test_set_error);
    return g_test_run();
}
