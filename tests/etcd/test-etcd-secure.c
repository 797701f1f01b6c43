/*
 * The etcd backend with TLS and with authentication, against real etcd
 * members this program starts on 127.0.0.1:
 *   - a member that serves https:// and asks clients for a certificate,
 *     with a CA and certificates made here with openssl: the right CA
 *     and client certificate work; a wrong CA, the system's CAs, no
 *     client certificate, or one another CA signed, each fail at once
 *     with a message that says TLS;
 *   - a member with authentication on (a root user, and a user "app"
 *     whose role may read and write one prefix; simple tokens that expire
 *     after 2 s): the right password works, from the spec or a file, and
 *     goes on working after the token expired, and after every token was
 *     dropped and the member restarted (watches too); a wrong password,
 *     no user,
 *     or a prefix outside the role each fail at once naming the cause;
 *     the password appears in no message, in procreg_get_spec() (nested
 *     specs too), in the stats or in the CLI's output.
 * Skipped (exit 77) without etcd or openssl.
 */
#include "etcd-harness.h"
#include "etcd-test-util.h"

#include <procreg/procreg.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PASSWORD "s3cret-Pa55word"
#define ROOT_PASSWORD "r00t-Pa55word"

static char *dir;    /* certificates and files of this run */
static char *cli;    /* the procreg program (--cli=PATH) */
static char *tag;

/* ---- certificates ---- */

static void run(const char *const *argv)
{
    char *err = NULL;
    int status = 0;
    GError *e = NULL;
    if (!g_spawn_sync(dir, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL,
                      NULL, NULL, &err, &status, &e) ||
        !g_spawn_check_wait_status(status, NULL))
        g_error("%s failed: %s", argv[0], e ? e->message : err);
    g_free(err);
}

static char *path(const char *name)
{
    return g_build_filename(dir, name, NULL);
}

static void write_file(const char *name, const char *text)
{
    char *p = path(name);
    GError *e = NULL;
    if (!g_file_set_contents(p, text, -1, &e))
        g_error("%s", e->message);
    g_free(p);
}

/* A CA @name (.key, .pem). */
static void make_ca(const char *name)
{
    char *key = g_strdup_printf("%s.key", name);
    char *pem = g_strdup_printf("%s.pem", name);
    char *subj = g_strdup_printf("/CN=procreg-test-%s", name);
    const char *argv[] = {"openssl", "req", "-x509", "-newkey", "ec",
                          "-pkeyopt", "ec_paramgen_curve:prime256v1",
                          "-nodes", "-keyout", key, "-out", pem, "-days", "2",
                          "-subj", subj, NULL};
    run(argv);
    g_free(key);
    g_free(pem);
    g_free(subj);
}

/* A certificate @name (.key, .pem) signed by CA @ca, for @usage
 * ("serverAuth,clientAuth", for 127.0.0.1, or "clientAuth").  A member's
 * certificate needs clientAuth too: etcd's JSON gateway dials the
 * member's own gRPC port with it ("connection closed" without). */
static void make_cert(const char *name, const char *ca, const char *usage)
{
    char *key = g_strdup_printf("%s.key", name);
    char *csr = g_strdup_printf("%s.csr", name);
    char *pem = g_strdup_printf("%s.pem", name);
    char *ext = g_strdup_printf("%s.ext", name);
    char *ca_pem = g_strdup_printf("%s.pem", ca);
    char *ca_key = g_strdup_printf("%s.key", ca);
    char *subj = g_strdup_printf("/CN=%s", name);
    char *ext_text = g_strdup_printf("extendedKeyUsage=%s\n%s", usage,
                                     strstr(usage, "serverAuth") != NULL
                                         ? "subjectAltName=IP:127.0.0.1\n"
                                         : "");
    write_file(ext, ext_text);
    const char *req[] = {"openssl", "req", "-newkey", "ec", "-pkeyopt",
                         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                         key, "-out", csr, "-subj", subj, NULL};
    run(req);
    const char *sign[] = {"openssl", "x509", "-req", "-in", csr, "-CA",
                          ca_pem, "-CAkey", ca_key, "-CAcreateserial", "-out",
                          pem, "-days", "2", "-extfile", ext, NULL};
    run(sign);
    g_free(key);
    g_free(csr);
    g_free(pem);
    g_free(ext);
    g_free(ca_pem);
    g_free(ca_key);
    g_free(subj);
    g_free(ext_text);
}

/* ---- helpers ---- */

/* Open @spec expecting failure @code, fast; returns the message. */
static char *open_fails_fast(const char *spec, int code)
{
    procreg *reg = NULL;
    GError *err = NULL;
    gint64 t0 = g_get_monotonic_time();
    int rc = procreg_open(spec, &reg, &err);
    gint64 took = (g_get_monotonic_time() - t0) / 1000;
    if (rc != code)
        g_error("procreg_open(%s): %d (%s), expected %d", spec, rc,
                err ? err->message : "no message", code);
    g_assert_nonnull(err);
    g_test_message("%" G_GINT64_FORMAT " ms: %s", took, err->message);
    /* timeout_ms is 5000: a cause that is not a timeout fails at once. */
    g_assert_cmpint(took, <, 1000);
    char *msg = g_strdup(err->message);
    g_error_free(err);
    return msg;
}

static void assert_mentions(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL)
        g_error("\"%s\" does not mention \"%s\"", text, needle);
}

static void assert_secret_absent(const char *text)
{
    if (text != NULL && (strstr(text, PASSWORD) != NULL ||
                         strstr(text, ROOT_PASSWORD) != NULL))
        g_error("a password shows in \"%s\"", text);
}

/* Register on @a and see it through @b's watch. */
static void check_works(procreg *a, procreg *b, const char *name)
{
    recorder rb;
    recorder_start(&rb, b);
    GError *err = NULL;
    g_assert_cmpint(procreg_register(a, "svc", name, NULL, NULL, NULL, &err),
                    ==, 0);
    g_assert_no_error(err);
    procreg_owner o;
    g_assert_cmpint(procreg_lookup(b, "svc", name, &o, &err), ==, 0);
    if (recorder_wait(&rb, PROCREG_EVENT_REGISTERED, -1, "svc", name,
                      5000) == NULL) {
        char *d = recorder_dump(&rb);
        g_error("no event for %s; saw %s", name, d);
    }
    recorder_stop(&rb);
}

static procreg *open_ok(const char *spec)
{
    procreg *reg = NULL;
    GError *err = NULL;
    if (procreg_open(spec, &reg, &err) != 0)
        g_error("procreg_open(%s): %s", spec, err->message);
    return reg;
}

/* ---- TLS ---- */

static void test_tls(void)
{
    char *ca = path("ca.pem"), *other_ca = path("other-ca.pem");
    char *server = path("server.pem"), *server_key = path("server.key");
    char *client = path("client.pem"), *client_key = path("client.key");
    char *stranger = path("stranger.pem"), *stranger_key = path("stranger.key");
    etcd_cluster cl;
    GError *err = NULL;
    etcd_cluster_options opts = {.ca_file = ca, .server_cert = server,
                                 .server_key = server_key,
                                 .client_cert = client,
                                 .client_key = client_key};
    if (!etcd_cluster_start_with(&cl, 1, &opts, &err))
        g_error("cannot start a TLS member: %s", err->message);
    char *url = etcd_member_url(&cl, 0);
    g_assert_true(g_str_has_prefix(url, "https://"));
    char *prefix = g_strdup_printf("/procreg-test/%s/tls", tag);
    char *base = g_strdup_printf("etcd:endpoints=[%s],prefix=%s,"
                                 "timeout_ms=5000",
                                 url, prefix);

    /* The right CA and client certificate. */
    char *good = g_strdup_printf("%s,ca_file=%s,cert_file=%s,key_file=%s",
                                 base, ca, client, client_key);
    procreg *a = open_ok(good), *b = open_ok(good);
    check_works(a, b, "tls");
    procreg_close(a);
    procreg_close(b);

    struct {
        const char *what, *options, *needle;
    } bad[] = {
        {"another CA", "ca_file=OTHER_CA,cert_file=CLIENT,key_file=CLIENT_KEY",
         "certificate"},
        {"the system's CAs", "cert_file=CLIENT,key_file=CLIENT_KEY",
         "certificate"},
        {"no client certificate", "ca_file=CA", "TLS"},
        {"a client certificate of another CA",
         "ca_file=CA,cert_file=STRANGER,key_file=STRANGER_KEY", "TLS"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        char *o = g_strdup(bad[i].options);
        const char *from[] = {"OTHER_CA", "CLIENT_KEY", "CLIENT",
                              "STRANGER_KEY", "STRANGER", "CA"};
        const char *to[] = {other_ca, client_key, client, stranger_key,
                            stranger, ca};
        for (size_t k = 0; k < G_N_ELEMENTS(from); k++) {
            char **parts = g_strsplit(o, from[k], -1);
            g_free(o);
            o = g_strjoinv(to[k], parts);
            g_strfreev(parts);
        }
        char *spec = g_strdup_printf("%s,%s", base, o);
        g_test_message("TLS with %s", bad[i].what);
        char *msg = open_fails_fast(spec, PROCREG_EBACKEND);
        assert_mentions(msg, "TLS failed with every etcd endpoint");
        assert_mentions(msg, bad[i].needle);
        g_free(msg);
        g_free(spec);
        g_free(o);
    }
    etcd_cluster_destroy(&cl);
    g_free(good);
    g_free(base);
    g_free(prefix);
    g_free(url);
    g_free(ca);
    g_free(other_ca);
    g_free(server);
    g_free(server_key);
    g_free(client);
    g_free(client_key);
    g_free(stranger);
    g_free(stranger_key);
}

/* ---- authentication ---- */

/* POST @body to @path on the member; fails the test on an error reply. */
static char *admin(etcd_cluster *cl, const char *path, const char *body,
                   const char *token)
{
    char *r = etcd_member_post(cl, 0, path, body, token);
    if (r == NULL || strstr(r, "\"error\"") != NULL)
        g_error("%s %s: %s", path, body, r ? r : "no reply");
    return r;
}

static char *b64(const char *s)
{
    return g_base64_encode((const guchar *)s, strlen(s));
}

/* Users root and app, app's role may read and write under @prefix/,
 * then authentication on. */
static void enable_auth(etcd_cluster *cl, const char *prefix)
{
    g_free(admin(cl, "/v3/auth/user/add",
                 "{\"name\":\"root\",\"password\":\"" ROOT_PASSWORD "\"}",
                 NULL));
    g_free(admin(cl, "/v3/auth/user/grant",
                 "{\"user\":\"root\",\"role\":\"root\"}", NULL));
    g_free(admin(cl, "/v3/auth/role/add", "{\"name\":\"app\"}", NULL));
    char *from = g_strdup_printf("%s/", prefix);
    char *to = g_strdup_printf("%s0", prefix);
    char *k1 = b64(from), *k2 = b64(to);
    char *grant = g_strdup_printf("{\"name\":\"app\",\"perm\":{\"permType\":"
                                  "\"READWRITE\",\"key\":\"%s\","
                                  "\"range_end\":\"%s\"}}",
                                  k1, k2);
    g_free(admin(cl, "/v3/auth/role/grant", grant, NULL));
    g_free(admin(cl, "/v3/auth/user/add",
                 "{\"name\":\"app\",\"password\":\"" PASSWORD "\"}", NULL));
    g_free(admin(cl, "/v3/auth/user/grant",
                 "{\"user\":\"app\",\"role\":\"app\"}", NULL));
    g_free(admin(cl, "/v3/auth/enable", "{}", NULL));
    g_free(grant);
    g_free(k1);
    g_free(k2);
    g_free(from);
    g_free(to);
}

/* The CLI's output (stdout and stderr) for @args on @spec. */
static char *cli_output(const char *spec, const char *command)
{
    const char *argv[] = {cli, "--backend", spec, command, NULL};
    char *out = NULL, *err = NULL;
    int status = 0;
    GError *e = NULL;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, &out, &err,
                      &status, &e))
        g_error("cannot run %s: %s", cli, e->message);
    char *all = g_strconcat(out, err, NULL);
    g_free(out);
    g_free(err);
    return all;
}

static void test_auth(void)
{
    etcd_cluster cl;
    GError *err = NULL;
    const char *args[] = {"--auth-token-ttl", "2", "--bcrypt-cost", "4",
                          NULL};
    etcd_cluster_options opts = {.args = args};
    if (!etcd_cluster_start_with(&cl, 1, &opts, &err))
        g_error("cannot start etcd: %s", err->message);
    char *url = etcd_member_url(&cl, 0);
    char *prefix = g_strdup_printf("/procreg-test/%s/auth", tag);
    enable_auth(&cl, prefix);
    char *pwfile = path("password");
    write_file("password", PASSWORD "\n");
    char *base = g_strdup_printf("etcd:endpoints=[%s],timeout_ms=5000,"
                                 "lease_ttl=10",
                                 url);
    char *good = g_strdup_printf("%s,prefix=%s,user=app,password=%s", base,
                                 prefix, PASSWORD);
    char *from_file = g_strdup_printf("%s,prefix=%s,user=app,"
                                      "password_file=%s",
                                      base, prefix, pwfile);
    procreg *a = open_ok(good), *b = open_ok(from_file);
    check_works(a, b, "first");

    /* The password shows nowhere. */
    const char *norm = procreg_get_spec(a);
    g_test_message("spec: %s", norm);
    assert_secret_absent(norm);
    assert_mentions(norm, "password=***");
    GVariant *st = NULL;
    g_assert_cmpint(procreg_stats(a, &st, NULL), ==, 0);
    char *printed = g_variant_print(st, FALSE);
    assert_secret_absent(printed);
    g_free(printed);
    g_variant_unref(st);
    char **names = procreg_backend_names();
    if (g_strv_contains((const char *const *)names, "optimized")) {
        char *nested = g_strdup_printf("optimized:inner=[%s]", good);
        procreg *o = open_ok(nested);
        g_test_message("nested spec: %s", procreg_get_spec(o));
        assert_secret_absent(procreg_get_spec(o));
        assert_mentions(procreg_get_spec(o), "password=***");
        procreg_close(o);
        g_free(nested);
    }
    g_strfreev(names);
    if (cli != NULL) {
        char *out = cli_output(good, "stats");
        g_test_message("CLI stats: %.200s...", out);
        assert_mentions(out, "password=***");
        assert_secret_absent(out);
        g_free(out);
        char *wrong = g_strdup_printf("%s,prefix=%s,user=app,password=%s-x",
                                      base, prefix, PASSWORD);
        out = cli_output(wrong, "list");
        g_test_message("CLI with a wrong password: %s", out);
        assert_mentions(out, "refused the credentials");
        assert_secret_absent(out);
        g_free(out);
        g_free(wrong);
    }

    /* Simple tokens expire 2 s after their last use: the keeper's (every
     * 3.3 s) and the next registration find theirs refused and take a
     * new one. */
    g_usleep(3500 * 1000);
    check_works(a, b, "after-expiry");
    g_test_message("authentications: %" G_GINT64_FORMAT,
                   backend_stat_int(a, "authentications"));
    g_assert_cmpint(backend_stat_int(a, "authentications"), >=, 2);

    /* Authentication off and on again drops every token; a member that
     * restarts then refuses the tokens of the calls and of the watches
     * that reconnect, and they authenticate again. */
    gint64 before = backend_stat_int(b, "authentications");
    char *r = admin(&cl, "/v3/auth/authenticate",
                    "{\"name\":\"root\",\"password\":\"" ROOT_PASSWORD "\"}",
                    NULL);
    const char *tp = strstr(r, "\"token\":\"");
    g_assert_nonnull(tp);
    char *root_token = g_strndup(tp + 9, strcspn(tp + 9, "\""));
    g_free(admin(&cl, "/v3/auth/disable", "{}", root_token));
    g_free(admin(&cl, "/v3/auth/enable", "{}", NULL));
    g_free(root_token);
    g_free(r);
    g_assert_true(etcd_member_restart(&cl, 0, &err));
    gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (!etcd_member_healthy(&cl, 0) && g_get_monotonic_time() < until)
        g_usleep(50 * 1000);
    check_works(a, b, "after-restart");
    g_assert_cmpint(backend_stat_int(b, "authentications"), >, before);
    procreg_close(a);
    procreg_close(b);

    /* Each failure at once, naming its cause, never the password. */
    char *wrong = g_strdup_printf("%s,prefix=%s,user=app,password=%s-x", base,
                                  prefix, PASSWORD);
    char *msg = open_fails_fast(wrong, PROCREG_EBACKEND);
    assert_mentions(msg, "refused the credentials of user 'app'");
    assert_secret_absent(msg);
    g_free(msg);
    char *nobody = g_strdup_printf("%s,prefix=%s", base, prefix);
    msg = open_fails_fast(nobody, PROCREG_EBACKEND);
    assert_mentions(msg, "requires authentication");
    g_free(msg);
    char *elsewhere = g_strdup_printf("%s,prefix=/procreg-test/%s/other,"
                                      "user=app,password=%s",
                                      base, tag, PASSWORD);
    msg = open_fails_fast(elsewhere, PROCREG_EBACKEND);
    assert_mentions(msg, "denied user 'app'");
    assert_secret_absent(msg);
    g_free(msg);

    etcd_cluster_destroy(&cl);
    g_free(wrong);
    g_free(nobody);
    g_free(elsewhere);
    g_free(good);
    g_free(from_file);
    g_free(base);
    g_free(prefix);
    g_free(pwfile);
    g_free(url);
}

/* Bad TLS and authentication options: EINVAL, the password never in the
 * message. */
static void test_spec_errors(void)
{
    char *ca = path("ca.pem"), *client = path("client.pem");
    char *pwfile = path("password-spec"), *empty = path("empty");
    write_file("password-spec", PASSWORD "\n");
    write_file("empty", "\n");
    struct {
        const char *options, *needle;
    } bad[] = {
        {"endpoints=[https://127.0.0.1:1],ca_file=/nonexistent/ca.pem",
         "cannot read"},
        {"endpoints=[http://127.0.0.1:1],ca_file=CA", "https://"},
        {"endpoints=[https://127.0.0.1:1],key_file=CLIENT", "needs cert_file"},
        {"user=app", "needs password"},
        {"password=" PASSWORD, "needs option 'user'"},
        {"user=app,password=" PASSWORD ",password_file=PWFILE", "not both"},
        {"user=app,password_file=/nonexistent", "password_file"},
        {"user=app,password_file=EMPTY", "no password"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        char *o = g_strdup(bad[i].options);
        const char *from[] = {"CA", "CLIENT", "PWFILE", "EMPTY"};
        const char *to[] = {ca, client, pwfile, empty};
        for (size_t k = 0; k < G_N_ELEMENTS(from); k++) {
            char **parts = g_strsplit(o, from[k], -1);
            g_free(o);
            o = g_strjoinv(to[k], parts);
            g_strfreev(parts);
        }
        char *spec = g_strdup_printf("etcd:%s", o);
        char *msg = open_fails_fast(spec, PROCREG_EINVAL);
        assert_mentions(msg, bad[i].needle);
        assert_secret_absent(msg);
        g_free(msg);
        g_free(spec);
        g_free(o);
    }
    g_free(ca);
    g_free(client);
    g_free(pwfile);
    g_free(empty);
}

int main(int argc, char **argv)
{
    etcd_harness_env(argv);
    etcd_harness_args(&argc, argv);
    for (int i = 1; i < argc; i++)
        if (g_str_has_prefix(argv[i], "--cli="))
            cli = g_strdup(argv[i] + strlen("--cli="));
    g_test_init(&argc, &argv, NULL);
    etcd_harness_require();
    char *openssl = g_find_program_in_path("openssl");
    if (openssl == NULL) {
        fprintf(stderr, "SKIP: no openssl program (Debian: openssl) to make "
                        "the test certificates; the TLS tests did NOT run\n");
        return 77;
    }
    g_free(openssl);
    GError *err = NULL;
    dir = g_dir_make_tmp("procreg-etcd-secure-XXXXXX", &err);
    if (dir == NULL)
        g_error("%s", err->message);
    make_ca("ca");
    make_ca("other-ca");
    make_cert("server", "ca", "serverAuth,clientAuth");
    make_cert("client", "ca", "clientAuth");
    make_cert("stranger", "other-ca", "clientAuth");
    tag = etcd_random_tag();
    g_test_add_func("/etcd-secure/spec-errors", test_spec_errors);
    g_test_add_func("/etcd-secure/tls", test_tls);
    g_test_add_func("/etcd-secure/auth", test_auth);
    int rc = g_test_run();
    char *rm[] = {"rm", "-rf", dir, NULL};
    g_spawn_sync(NULL, rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                 NULL, NULL);
    g_free(dir);
    g_free(tag);
    g_free(cli);
    return rc;
}
