/* SPDX-License-Identifier: MIT */
/* Real handshakes over socketpair() between smtpd-tls's server session and a
 * GnuTLS client, both non-blocking in one loop. Keys and certificates are
 * made at test time by openssl(1) in a temp dir. */

#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "smtpd-tls.h"
#include "tap.h"

static char dir[64];

static const char *path(const char *name) {
        static char buf[8][256];
        static unsigned n;
        char *p = buf[n++ % ELEMENTSOF(buf)];
        snprintf(p, 256, "%s/%s", dir, name);
        return p;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
        char cmd[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof cmd, fmt, ap);
        va_end(ap);
        char full[2300];
        snprintf(full, sizeof full, "cd '%s' && (%s) >>log 2>&1", dir, cmd);
        return system(full);
}

static const char openssl_cnf[] =
        "[req]\n"
        "distinguished_name = dn\n"
        "prompt = no\n"
        "[dn]\n"
        "CN = unused\n"
        "[ca]\n"
        "basicConstraints = critical,CA:TRUE\n"
        "keyUsage = critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier = hash\n"
        "[mx]\n"
        "basicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = DNS:mx.example.test\n"
        "[other]\n"
        "basicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = DNS:other.example.test\n"
        "[wild]\n"
        "basicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = DNS:*.example.test\n"
        "[client]\n"
        "basicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature\n"
        "extendedKeyUsage = clientAuth\n";

static void genkey(const char *name, const char *alg) {
        if (strcmp(alg, "rsa") == 0)
                ASSERT_EQ(sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s.key", name), 0);
        else if (strcmp(alg, "ec") == 0)
                ASSERT_EQ(sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s.key", name), 0);
        else
                ASSERT_EQ(sh("openssl genpkey -algorithm ED25519 -out %s.key", name), 0);
}

/* name.key + name.pem signed by the CA with extension section ext */
static void gencert(const char *name, const char *alg, const char *cn, const char *ext) {
        genkey(name, alg);
        ASSERT_EQ(sh("openssl req -new -config openssl.cnf -key %s.key -subj '/O=Halyard Test/CN=%s' -out %s.csr",
                     name, cn, name), 0);
        ASSERT_EQ(sh("openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -set_serial 0x%x -days 30 "
                     "-extfile openssl.cnf -extensions %s -out %s.pem",
                     name, (unsigned) (random() & 0xffffff) + 2, ext, name), 0);
}

static void make_material(void) {
        strcpy(dir, "/tmp/test-smtpd-tls.XXXXXX");
        ASSERT_NOT_NULL(mkdtemp(dir));
        FILE *f = fopen(path("openssl.cnf"), "we");
        ASSERT_NOT_NULL(f);
        fputs(openssl_cnf, f);
        fclose(f);

        genkey("ca", "ec");
        ASSERT_EQ(sh("openssl req -x509 -new -config openssl.cnf -key ca.key -subj '/O=Halyard Test/CN=Test CA' "
                     "-days 30 -extensions ca -set_serial 1 -out ca.pem"), 0);
        gencert("mx-rsa", "rsa", "mx.example.test", "mx");
        gencert("mx-ec", "ec", "mx.example.test", "mx");
        gencert("other-rsa", "rsa", "other.example.test", "other");
        gencert("other-ed", "ed25519", "other.example.test", "other");
        gencert("wild", "ec", "*.example.test", "wild");
        gencert("client", "ec", "client.example.test", "client");
        genkey("selfsigned", "ec");
        ASSERT_EQ(sh("openssl req -x509 -new -config openssl.cnf -key selfsigned.key "
                     "-subj '/CN=self.example.test' -days 30 -out selfsigned.pem"), 0);
        /* an expired one: backdated by faking the CA's clock is not possible
         * with openssl x509; use GnuTLS to re-sign mx-ec's key instead */
        gnutls_x509_crt_t crt, ca;
        gnutls_x509_privkey_t cakey, key;
        gnutls_datum_t d;
        ASSERT_OK(gnutls_x509_crt_init(&crt));
        ASSERT_OK(gnutls_x509_crt_init(&ca));
        ASSERT_OK(gnutls_x509_privkey_init(&cakey));
        ASSERT_OK(gnutls_x509_privkey_init(&key));
        ASSERT_OK(gnutls_load_file(path("ca.pem"), &d));
        ASSERT_OK(gnutls_x509_crt_import(ca, &d, GNUTLS_X509_FMT_PEM));
        gnutls_free(d.data);
        ASSERT_OK(gnutls_load_file(path("ca.key"), &d));
        ASSERT_OK(gnutls_x509_privkey_import(cakey, &d, GNUTLS_X509_FMT_PEM));
        gnutls_free(d.data);
        ASSERT_OK(gnutls_load_file(path("mx-ec.key"), &d));
        ASSERT_OK(gnutls_x509_privkey_import(key, &d, GNUTLS_X509_FMT_PEM));
        gnutls_free(d.data);
        ASSERT_OK(gnutls_x509_crt_set_key(crt, key));
        ASSERT_OK(gnutls_x509_crt_set_version(crt, 3));
        ASSERT_OK(gnutls_x509_crt_set_serial(crt, "\x42", 1));
        ASSERT_OK(gnutls_x509_crt_set_dn(crt, "CN=mx.example.test", NULL));
        ASSERT_OK(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "mx.example.test", 15,
                                                       GNUTLS_FSAN_SET));
        time_t now = time(NULL);
        ASSERT_OK(gnutls_x509_crt_set_activation_time(crt, now - 10 * 86400));
        ASSERT_OK(gnutls_x509_crt_set_expiration_time(crt, now - 86400));
        ASSERT_OK(gnutls_x509_crt_sign2(crt, ca, cakey, GNUTLS_DIG_SHA256, 0));
        ASSERT_OK(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &d));
        f = fopen(path("expired.pem"), "we");
        ASSERT_NOT_NULL(f);
        fwrite(d.data, 1, d.size, f);
        fclose(f);
        gnutls_free(d.data);
        gnutls_x509_crt_deinit(crt);
        gnutls_x509_crt_deinit(ca);
        gnutls_x509_privkey_deinit(cakey);
        gnutls_x509_privkey_deinit(key);
}

/* Every test starts with this: made once, on first use. */
static void material(void) {
        static int state; /* 0 not yet, 1 made, 2 failed */
        if (state == 1)
                return;
        if (state == 2)
                TAP_FAIL("making the test material failed earlier, see %s/log", dir);
        state = 2;
        make_material();
        state = 1;
}

static void add_pair(SmtpdTlsKeyPair *p, const char *name) {
        static char buf[16][256];
        static unsigned n;
        char *c = buf[n++ % 16], *k = buf[n++ % 16];
        snprintf(c, 256, "%s/%s.pem", dir, name);
        snprintf(k, 256, "%s/%s.key", dir, name);
        *p = (SmtpdTlsKeyPair){ c, k };
}

static unsigned n_warnings;
static char last_warning[512];
static void on_warn(const char *m, void *userdata) {
        (void) userdata;
        n_warnings++;
        snprintf(last_warning, sizeof last_warning, "%s", m);
}

/* mx (RSA configured first, so the ordering is exercised), other */
static SmtpdTlsContext *make_ctx(bool client_certs) {
        SmtpdTlsKeyPair pairs[3];
        add_pair(&pairs[0], "mx-rsa");
        add_pair(&pairs[1], "other-rsa");
        add_pair(&pairs[2], "mx-ec");
        SmtpdTlsConfig cfg = {
                .pairs = pairs,
                .n_pairs = 3,
                .request_client_cert = client_certs,
                .client_ca_file = client_certs ? path("ca.pem") : NULL,
                .warn = on_warn,
        };
        char err[512];
        SmtpdTlsContext *ctx = NULL;
        int r = smtpd_tls_context_new(&cfg, &ctx, err, sizeof err);
        if (r < 0)
                TAP_FAIL("context: %s", err);
        return ctx;
}

typedef struct Client {
        const char *priority;
        const char *sni;
        const char *cert, *key;                 /* client certificate */
        gnutls_datum_t *resume;                 /* in: session data; out: new data */
} Client;

typedef struct Result {
        int server, client;
        char server_error[256];
        SmtpdTlsFacts facts;
        int peer_pk;                            /* the server cert the client saw */
        bool peer_is_mx, peer_is_other;
        bool client_resumed;
} Result;

static void nonblock(int fd) {
        ASSERT_OK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK));
}

/* One connection: handshake both ways, a byte each way, facts. */
static Result run(SmtpdTlsContext *ctx, const Client *cl) {
        Result res = { .server = -EAGAIN, .client = GNUTLS_E_AGAIN };
        int sv[2];
        ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
        nonblock(sv[0]);
        nonblock(sv[1]);

        SmtpdTlsSession *s = NULL;
        ASSERT_OK(smtpd_tls_session_new(ctx, sv[0], &s));

        gnutls_certificate_credentials_t cc;
        gnutls_session_t c;
        ASSERT_OK(gnutls_certificate_allocate_credentials(&cc));
        if (cl->cert)
                ASSERT_OK(gnutls_certificate_set_x509_key_file(cc, path(cl->cert), path(cl->key),
                                                               GNUTLS_X509_FMT_PEM));
        ASSERT_OK(gnutls_init(&c, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL));
        const char *pos = NULL;
        int r = gnutls_priority_set_direct(c, cl->priority ?: "NORMAL", &pos);
        if (r < 0)
                TAP_FAIL("client priority at %s: %s", pos ?: "", gnutls_strerror(r));
        ASSERT_OK(gnutls_credentials_set(c, GNUTLS_CRD_CERTIFICATE, cc));
        if (cl->sni)
                ASSERT_OK(gnutls_server_name_set(c, GNUTLS_NAME_DNS, cl->sni, strlen(cl->sni)));
        if (cl->resume && cl->resume->data)
                ASSERT_OK(gnutls_session_set_data(c, cl->resume->data, cl->resume->size));
        gnutls_transport_set_int(c, sv[1]);

        for (unsigned i = 0; i < 1000 && (res.server == -EAGAIN || res.client == GNUTLS_E_AGAIN); i++) {
                if (res.server == -EAGAIN)
                        res.server = smtpd_tls_handshake(s);
                if (res.client == GNUTLS_E_AGAIN || (res.client < 0 && !gnutls_error_is_fatal(res.client)))
                        res.client = gnutls_handshake(c);
                /* one side failed: the other sees EOF once the fd goes */
                if (res.server < 0 && res.server != -EAGAIN && sv[0] >= 0)
                        sv[0] = safe_close(sv[0]);
                if (res.client < 0 && gnutls_error_is_fatal(res.client) && sv[1] >= 0)
                        sv[1] = safe_close(sv[1]);
        }
        snprintf(res.server_error, sizeof res.server_error, "%s", smtpd_tls_error(s));

        if (res.server == 0 && res.client == 0) {
                /* server → client: also carries TLS 1.3's NewSessionTicket */
                ASSERT_EQ(smtpd_tls_write(s, "220", 3), 3);
                char buf[16];
                ssize_t k;
                do
                        k = gnutls_record_recv(c, buf, sizeof buf);
                while (k == GNUTLS_E_AGAIN || k == GNUTLS_E_INTERRUPTED);
                ASSERT_EQ(k, 3);
                ASSERT_EQ(gnutls_record_send(c, "EHLO", 4), 4);
                ASSERT_EQ(smtpd_tls_pending(s), 0);
                ASSERT_EQ(smtpd_tls_read(s, buf, sizeof buf), 4);
                ASSERT_EQ(smtpd_tls_read(s, buf, sizeof buf), -EAGAIN);
                ASSERT_EQ(smtpd_tls_wants(s), EPOLLIN);
                ASSERT_OK(smtpd_tls_facts(s, &res.facts));

                unsigned n = 0;
                const gnutls_datum_t *certs = gnutls_certificate_get_peers(c, &n);
                ASSERT_TRUE(certs && n > 0);
                gnutls_x509_crt_t crt;
                ASSERT_OK(gnutls_x509_crt_init(&crt));
                ASSERT_OK(gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER));
                res.peer_pk = gnutls_x509_crt_get_pk_algorithm(crt, NULL);
                res.peer_is_mx = gnutls_x509_crt_check_hostname(crt, "mx.example.test");
                res.peer_is_other = gnutls_x509_crt_check_hostname(crt, "other.example.test");
                gnutls_x509_crt_deinit(crt);
                res.client_resumed = gnutls_session_is_resumed(c);
                if (cl->resume) {
                        gnutls_free(cl->resume->data);
                        *cl->resume = (gnutls_datum_t){};
                        ASSERT_OK(gnutls_session_get_data2(c, cl->resume));
                }
                ASSERT_OK(smtpd_tls_bye(s));
                do
                        k = gnutls_record_recv(c, buf, sizeof buf);
                while (k == GNUTLS_E_AGAIN);
                ASSERT_EQ(k, 0);
        }

        smtpd_tls_session_free(s);
        gnutls_deinit(c);
        gnutls_certificate_free_credentials(cc);
        safe_close(sv[0]);
        safe_close(sv[1]);
        return res;
}

#define TLS13 "NORMAL:-VERS-ALL:+VERS-TLS1.3"
#define TLS12 "NORMAL:-VERS-ALL:+VERS-TLS1.2"
#define ONLY_ECDSA ":-SIGN-ALL:+SIGN-ECDSA-SHA256:+SIGN-ECDSA-SECP256R1-SHA256"
#define ONLY_RSA ":-SIGN-ALL:+SIGN-RSA-SHA256:+SIGN-RSA-PSS-RSAE-SHA256"

static void expect_ok(const Result *r) {
        if (r->server != 0 || r->client != 0)
                TAP_FAIL("handshake: server %d (%s), client %d (%s)", r->server, r->server_error, r->client,
                         gnutls_strerror(r->client));
}

TEST(sni_selects_certificate) {
        material();
        SmtpdTlsContext *ctx = make_ctx(false);
        ASSERT_EQ(smtpd_tls_context_n_pairs(ctx), 3);
        const char *prios[] = { TLS13, TLS12 };
        for (size_t i = 0; i < ELEMENTSOF(prios); i++) {
                Result r = run(ctx, &(Client){ .priority = prios[i], .sni = "other.example.test" });
                expect_ok(&r);
                ASSERT_TRUE(r.peer_is_other);
                ASSERT_EQ(r.peer_pk, GNUTLS_PK_RSA);
                ASSERT_STREQ(r.facts.sni, "other.example.test");
                smtpd_tls_facts_done(&r.facts);

                r = run(ctx, &(Client){ .priority = prios[i], .sni = "mx.example.test" });
                expect_ok(&r);
                ASSERT_TRUE(r.peer_is_mx);
                ASSERT_EQ(r.peer_pk, GNUTLS_PK_ECDSA);          /* preferred over RSA */
                ASSERT_STREQ(r.facts.sni, "mx.example.test");
                smtpd_tls_facts_done(&r.facts);
        }
        smtpd_tls_context_unref(ctx);
}

TEST(no_sni_or_unknown_name_gets_default) {
        material();
        SmtpdTlsContext *ctx = make_ctx(false);
        Result r = run(ctx, &(Client){ .priority = TLS13 });
        expect_ok(&r);
        ASSERT_TRUE(r.peer_is_mx);
        ASSERT_NULL(r.facts.sni);
        smtpd_tls_facts_done(&r.facts);

        r = run(ctx, &(Client){ .priority = TLS12, .sni = "nowhere.example.test" });
        expect_ok(&r);
        ASSERT_TRUE(r.peer_is_mx);
        ASSERT_STREQ(r.facts.sni, "nowhere.example.test");
        smtpd_tls_facts_done(&r.facts);
        smtpd_tls_context_unref(ctx);
}

TEST(key_type_by_client_signature_algorithms) {
        material();
        SmtpdTlsContext *ctx = make_ctx(false);
        const char *vers[] = { TLS13, TLS12 };
        for (size_t i = 0; i < ELEMENTSOF(vers); i++) {
                char p[256];
                snprintf(p, sizeof p, "%s%s", vers[i], ONLY_ECDSA);
                Result r = run(ctx, &(Client){ .priority = p, .sni = "mx.example.test" });
                expect_ok(&r);
                ASSERT_TRUE(r.peer_is_mx);
                ASSERT_EQ(r.peer_pk, GNUTLS_PK_ECDSA);
                smtpd_tls_facts_done(&r.facts);

                snprintf(p, sizeof p, "%s%s", vers[i], ONLY_RSA);
                r = run(ctx, &(Client){ .priority = p, .sni = "mx.example.test" });
                expect_ok(&r);
                ASSERT_TRUE(r.peer_is_mx);
                ASSERT_EQ(r.peer_pk, GNUTLS_PK_RSA);
                smtpd_tls_facts_done(&r.facts);

                /* and without SNI */
                r = run(ctx, &(Client){ .priority = p });
                expect_ok(&r);
                ASSERT_TRUE(r.peer_is_mx);
                ASSERT_EQ(r.peer_pk, GNUTLS_PK_RSA);
                smtpd_tls_facts_done(&r.facts);
        }
        smtpd_tls_context_unref(ctx);
}

TEST(wildcard_after_exact_names) {
        material();
        SmtpdTlsKeyPair pairs[3];
        add_pair(&pairs[0], "mx-ec");
        add_pair(&pairs[1], "wild");
        add_pair(&pairs[2], "other-rsa");
        SmtpdTlsConfig cfg = { .pairs = pairs, .n_pairs = 3 };
        char err[512];
        SmtpdTlsContext *ctx = NULL;
        if (smtpd_tls_context_new(&cfg, &ctx, err, sizeof err) < 0)
                TAP_FAIL("%s", err);
        const char *prios[] = { TLS13, TLS12 };
        for (size_t i = 0; i < ELEMENTSOF(prios); i++) {
                /* exact name beats the wildcard listed before it */
                Result r = run(ctx, &(Client){ .priority = prios[i], .sni = "other.example.test" });
                expect_ok(&r);
                ASSERT_TRUE(r.peer_is_other);
                ASSERT_EQ(r.peer_pk, GNUTLS_PK_RSA);
                smtpd_tls_facts_done(&r.facts);

                r = run(ctx, &(Client){ .priority = prios[i], .sni = "foo.example.test" });
                expect_ok(&r);
                ASSERT_TRUE(r.peer_is_mx && r.peer_is_other);   /* the wildcard */
                smtpd_tls_facts_done(&r.facts);

                r = run(ctx, &(Client){ .priority = prios[i], .sni = "mx.example.test" });
                expect_ok(&r);
                ASSERT_TRUE(r.peer_is_mx && !r.peer_is_other);
                smtpd_tls_facts_done(&r.facts);
        }
        smtpd_tls_context_unref(ctx);
}

TEST(ed25519_pair) {
        material();
        SmtpdTlsKeyPair pairs[2];
        add_pair(&pairs[0], "other-rsa");
        add_pair(&pairs[1], "other-ed");
        SmtpdTlsConfig cfg = { .pairs = pairs, .n_pairs = 2 };
        char err[512];
        SmtpdTlsContext *ctx = NULL;
        if (smtpd_tls_context_new(&cfg, &ctx, err, sizeof err) < 0)
                TAP_FAIL("%s", err);
        Result r = run(ctx, &(Client){ .priority = TLS13 });
        expect_ok(&r);
        ASSERT_EQ(r.peer_pk, GNUTLS_PK_EDDSA_ED25519);
        smtpd_tls_facts_done(&r.facts);
        r = run(ctx, &(Client){ .priority = TLS13 ":-SIGN-EDDSA-ED25519" });
        expect_ok(&r);
        ASSERT_EQ(r.peer_pk, GNUTLS_PK_RSA);
        smtpd_tls_facts_done(&r.facts);
        smtpd_tls_context_unref(ctx);
}

TEST(versions) {
        material();
        SmtpdTlsContext *ctx = make_ctx(false);
        Result r = run(ctx, &(Client){ .priority = "NORMAL" });
        expect_ok(&r);
        ASSERT_STREQ(r.facts.version, "TLS1.3");
        ASSERT_NOT_NULL(r.facts.cipher);
        ASSERT_NOT_NULL(r.facts.description);
        ASSERT_FALSE(r.facts.resumed);
        ASSERT_EQ(r.facts.peer, SMTPD_TLS_PEER_NONE);
        smtpd_tls_facts_done(&r.facts);

        r = run(ctx, &(Client){ .priority = TLS12 });
        expect_ok(&r);
        ASSERT_STREQ(r.facts.version, "TLS1.2");
        smtpd_tls_facts_done(&r.facts);

        const char *old[] = { "NORMAL:-VERS-ALL:+VERS-TLS1.1", "NORMAL:-VERS-ALL:+VERS-TLS1.0",
                              "NORMAL:-VERS-ALL:+VERS-TLS1.1:+VERS-TLS1.0" };
        for (size_t i = 0; i < ELEMENTSOF(old); i++) {
                r = run(ctx, &(Client){ .priority = old[i] });
                ASSERT_TRUE(r.server < 0 && r.server != -EAGAIN);
                ASSERT_TRUE(r.client < 0);
                printf("# %s: server: %s\n", old[i], r.server_error);
        }
        smtpd_tls_context_unref(ctx);
}

TEST(priority_configurable) {
        material();
        SmtpdTlsKeyPair pairs[1];
        add_pair(&pairs[0], "mx-ec");
        SmtpdTlsConfig cfg = { .pairs = pairs, .n_pairs = 1, .priority = "NORMAL:-VERS-ALL:+VERS-TLS1.2" };
        char err[512];
        SmtpdTlsContext *ctx = NULL;
        ASSERT_OK(smtpd_tls_context_new(&cfg, &ctx, err, sizeof err));
        Result r = run(ctx, &(Client){ .priority = "NORMAL" });
        expect_ok(&r);
        ASSERT_STREQ(r.facts.version, "TLS1.2");
        smtpd_tls_facts_done(&r.facts);
        smtpd_tls_context_unref(ctx);

        cfg.priority = "NORMAL:+NONSENSE";
        ASSERT_ERR(smtpd_tls_context_new(&cfg, &ctx, err, sizeof err), -EINVAL);
        printf("# %s\n", err);
        ASSERT_NOT_NULL(strstr(err, "NONSENSE"));
}

static void resumption(const char *prio) {
        SmtpdTlsContext *ctx = make_ctx(false);
        gnutls_datum_t data = {};
        Result r = run(ctx, &(Client){ .priority = prio, .sni = "mx.example.test", .resume = &data });
        expect_ok(&r);
        ASSERT_FALSE(r.facts.resumed);
        smtpd_tls_facts_done(&r.facts);

        r = run(ctx, &(Client){ .priority = prio, .sni = "mx.example.test", .resume = &data });
        expect_ok(&r);
        ASSERT_TRUE(r.facts.resumed);
        ASSERT_TRUE(r.client_resumed);
        ASSERT_STREQ(r.facts.sni, "mx.example.test");
        smtpd_tls_facts_done(&r.facts);

        /* GnuTLS takes one key per session: one rotation already ends the
         * tickets made before it; a full handshake follows */
        gnutls_datum_t saved = {};
        saved.data = gnutls_malloc(data.size);
        memcpy(saved.data, data.data, data.size);
        saved.size = data.size;
        ASSERT_OK(smtpd_tls_context_rotate_ticket_key(ctx));
        r = run(ctx, &(Client){ .priority = prio, .sni = "mx.example.test", .resume = &data });
        expect_ok(&r);
        ASSERT_FALSE(r.facts.resumed);
        smtpd_tls_facts_done(&r.facts);

        /* a fresh ticket works again; two rotations end it */
        r = run(ctx, &(Client){ .priority = prio, .sni = "mx.example.test", .resume = &data });
        expect_ok(&r);
        ASSERT_TRUE(r.facts.resumed);
        smtpd_tls_facts_done(&r.facts);
        ASSERT_OK(smtpd_tls_context_rotate_ticket_key(ctx));
        ASSERT_OK(smtpd_tls_context_rotate_ticket_key(ctx));
        r = run(ctx, &(Client){ .priority = prio, .sni = "mx.example.test", .resume = &data });
        expect_ok(&r);
        ASSERT_FALSE(r.facts.resumed);
        smtpd_tls_facts_done(&r.facts);
        r = run(ctx, &(Client){ .priority = prio, .sni = "mx.example.test", .resume = &saved });
        expect_ok(&r);
        ASSERT_FALSE(r.facts.resumed);
        smtpd_tls_facts_done(&r.facts);

        gnutls_free(saved.data);
        gnutls_free(data.data);
        smtpd_tls_context_unref(ctx);
}

TEST(ticket_resumption_tls13) {
        material();
        resumption(TLS13);
}

TEST(ticket_resumption_tls12) {
        material();
        resumption(TLS12);
}

TEST(client_certificate_verified) {
        material();
        SmtpdTlsContext *ctx = make_ctx(true);
        const char *prios[] = { TLS13, TLS12 };
        for (size_t i = 0; i < ELEMENTSOF(prios); i++) {
                Result r = run(ctx, &(Client){ .priority = prios[i], .cert = "client.pem", .key = "client.key" });
                expect_ok(&r);
                ASSERT_EQ(r.facts.peer, SMTPD_TLS_PEER_VERIFIED);
                ASSERT_STREQ(r.facts.peer_subject, "CN=client.example.test,O=Halyard Test");
                ASSERT_STREQ(r.facts.peer_issuer, "CN=Test CA,O=Halyard Test");
                ASSERT_EQ(strlen(r.facts.peer_sha256), 64);
                ASSERT_NULL(r.facts.peer_verify_reason);
                /* the fingerprint is that of the certificate file */
                char cmd[512], fp[128] = "";
                snprintf(cmd, sizeof cmd,
                         "openssl x509 -in %s -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1",
                         path("client.pem"));
                FILE *p = popen(cmd, "re");
                ASSERT_NOT_NULL(p);
                ASSERT_NOT_NULL(fgets(fp, sizeof fp, p));
                pclose(p);
                fp[strcspn(fp, "\n")] = 0;
                ASSERT_STREQ(r.facts.peer_sha256, fp);
                smtpd_tls_facts_done(&r.facts);
        }
        smtpd_tls_context_unref(ctx);
}

TEST(client_certificate_after_resumption) {
        material();
        SmtpdTlsContext *ctx = make_ctx(true);
        const char *prios[] = { TLS13, TLS12 };
        for (size_t i = 0; i < ELEMENTSOF(prios); i++) {
                gnutls_datum_t data = {};
                Client cl = { .priority = prios[i], .cert = "client.pem", .key = "client.key", .resume = &data };
                Result r = run(ctx, &cl);
                expect_ok(&r);
                ASSERT_EQ(r.facts.peer, SMTPD_TLS_PEER_VERIFIED);
                char fp[65];
                memcpy(fp, r.facts.peer_sha256, sizeof fp);
                smtpd_tls_facts_done(&r.facts);
                r = run(ctx, &cl);
                expect_ok(&r);
                ASSERT_TRUE(r.facts.resumed);
                printf("# %s resumed: peer %d %s\n", prios[i], r.facts.peer, r.facts.peer_sha256);
                ASSERT_EQ(r.facts.peer, SMTPD_TLS_PEER_VERIFIED);
                ASSERT_STREQ(r.facts.peer_sha256, fp);
                ASSERT_STREQ(r.facts.peer_subject, "CN=client.example.test,O=Halyard Test");
                smtpd_tls_facts_done(&r.facts);
                gnutls_free(data.data);
        }
        smtpd_tls_context_unref(ctx);
}

TEST(client_certificate_self_signed) {
        material();
        SmtpdTlsContext *ctx = make_ctx(true);
        Result r = run(ctx, &(Client){ .priority = TLS13, .cert = "selfsigned.pem", .key = "selfsigned.key" });
        expect_ok(&r);  /* requested, not required */
        ASSERT_EQ(r.facts.peer, SMTPD_TLS_PEER_NOT_VERIFIED);
        ASSERT_STREQ(r.facts.peer_subject, "CN=self.example.test");
        ASSERT_STREQ(r.facts.peer_issuer, "CN=self.example.test");
        ASSERT_EQ(strlen(r.facts.peer_sha256), 64);
        ASSERT_STREQ(r.facts.peer_verify_reason, "The certificate is NOT trusted. The certificate issuer is unknown.");
        smtpd_tls_facts_done(&r.facts);
        smtpd_tls_context_unref(ctx);
}

TEST(client_certificate_none) {
        material();
        SmtpdTlsContext *ctx = make_ctx(true);
        Result r = run(ctx, &(Client){ .priority = TLS12 });
        expect_ok(&r);
        ASSERT_EQ(r.facts.peer, SMTPD_TLS_PEER_NONE);
        ASSERT_NULL(r.facts.peer_subject);
        ASSERT_STREQ(r.facts.peer_sha256, "");
        smtpd_tls_facts_done(&r.facts);
        smtpd_tls_context_unref(ctx);

        /* a certificate sent to a context without a CA: recorded, not verified */
        ctx = make_ctx(false);
        r = run(ctx, &(Client){ .priority = TLS13, .cert = "client.pem", .key = "client.key" });
        expect_ok(&r);
        ASSERT_EQ(r.facts.peer, SMTPD_TLS_PEER_NONE);  /* not requested: the client sends none */
        smtpd_tls_facts_done(&r.facts);
        smtpd_tls_context_unref(ctx);
}

static int try_ctx(const char *cert, const char *key, const char *ca, char *err, size_t errlen) {
        SmtpdTlsKeyPair pair = { cert, key };
        SmtpdTlsConfig cfg = { .pairs = &pair, .n_pairs = 1, .client_ca_file = ca, .request_client_cert = !!ca,
                               .warn = on_warn };
        SmtpdTlsContext *ctx = NULL;
        int r = smtpd_tls_context_new(&cfg, &ctx, err, errlen);
        printf("# %s\n", r < 0 ? err : "ok");
        smtpd_tls_context_unref(ctx);
        return r;
}

TEST(errors) {
        material();
        char err[512], a[256], b[256];

        snprintf(a, sizeof a, "%s", path("mx-rsa.pem"));
        snprintf(b, sizeof b, "%s", path("mx-ec.key"));
        ASSERT_ERR(try_ctx(a, b, NULL, err, sizeof err), -EINVAL);
        ASSERT_NOT_NULL(strstr(err, "does not match"));
        ASSERT_NOT_NULL(strstr(err, a));
        ASSERT_NOT_NULL(strstr(err, b));

        snprintf(b, sizeof b, "%s", path("other-rsa.key"));        /* same type, other key */
        ASSERT_ERR(try_ctx(a, b, NULL, err, sizeof err), -EINVAL);
        ASSERT_NOT_NULL(strstr(err, "does not match"));

        snprintf(b, sizeof b, "%s", path("missing.key"));
        ASSERT_ERR(try_ctx(a, b, NULL, err, sizeof err), -ENOENT);
        ASSERT_NOT_NULL(strstr(err, b));
        snprintf(a, sizeof a, "%s", path("missing.pem"));
        ASSERT_ERR(try_ctx(a, b, NULL, err, sizeof err), -ENOENT);
        ASSERT_NOT_NULL(strstr(err, a));

        /* garbage: a key as the certificate, a certificate as the key */
        snprintf(a, sizeof a, "%s", path("mx-ec.key"));
        snprintf(b, sizeof b, "%s", path("mx-ec.key"));
        ASSERT_ERR(try_ctx(a, b, NULL, err, sizeof err), -EINVAL);
        ASSERT_NOT_NULL(strstr(err, a));
        snprintf(a, sizeof a, "%s", path("mx-ec.pem"));
        snprintf(b, sizeof b, "%s", path("mx-ec.pem"));
        ASSERT_ERR(try_ctx(a, b, NULL, err, sizeof err), -EINVAL);
        ASSERT_NOT_NULL(strstr(err, b));

        snprintf(b, sizeof b, "%s", path("mx-ec.key"));
        ASSERT_ERR(try_ctx(a, b, path("missing-ca.pem"), err, sizeof err), -ENOENT);
        ASSERT_NOT_NULL(strstr(err, "missing-ca.pem"));
        ASSERT_ERR(try_ctx(a, b, path("mx-ec.key"), err, sizeof err), -EINVAL);
        ASSERT_NOT_NULL(strstr(err, "client CA"));

        SmtpdTlsConfig cfg = {};
        SmtpdTlsContext *ctx = NULL;
        ASSERT_ERR(smtpd_tls_context_new(&cfg, &ctx, err, sizeof err), -EINVAL);
        ASSERT_NULL(ctx);
}

TEST(expired_certificate_warns) {
        material();
        char err[512], a[256], b[256];
        snprintf(a, sizeof a, "%s", path("expired.pem"));
        snprintf(b, sizeof b, "%s", path("mx-ec.key"));
        n_warnings = 0;
        ASSERT_OK(try_ctx(a, b, NULL, err, sizeof err));
        ASSERT_EQ(n_warnings, 1);
        printf("# warning: %s\n", last_warning);
        ASSERT_NOT_NULL(strstr(last_warning, "expired"));
        ASSERT_NOT_NULL(strstr(last_warning, a));

        n_warnings = 0;
        snprintf(a, sizeof a, "%s", path("mx-ec.pem"));
        ASSERT_OK(try_ctx(a, b, NULL, err, sizeof err));
        ASSERT_EQ(n_warnings, 0);
}

/* A write the socket cannot take: -EAGAIN, then the retry counts it. */
TEST(write_would_block) {
        material();
        SmtpdTlsContext *ctx = make_ctx(false);
        int sv[2];
        ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv));
        SmtpdTlsSession *s = NULL;
        gnutls_certificate_credentials_t cc;
        gnutls_session_t c;
        ASSERT_OK(smtpd_tls_session_new(ctx, sv[0], &s));
        ASSERT_OK(gnutls_certificate_allocate_credentials(&cc));
        ASSERT_OK(gnutls_init(&c, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL));
        ASSERT_OK(gnutls_set_default_priority(c));
        ASSERT_OK(gnutls_credentials_set(c, GNUTLS_CRD_CERTIFICATE, cc));
        gnutls_transport_set_int(c, sv[1]);
        int rs = -EAGAIN, rc = GNUTLS_E_AGAIN;
        for (unsigned i = 0; i < 100 && (rs == -EAGAIN || rc == GNUTLS_E_AGAIN); i++) {
                if (rs == -EAGAIN)
                        rs = smtpd_tls_handshake(s);
                if (rc == GNUTLS_E_AGAIN)
                        rc = gnutls_handshake(c);
        }
        ASSERT_EQ(rs, 0);
        ASSERT_EQ(rc, 0);

        static char big[16384], got[16384];
        memset(big, 'x', sizeof big);
        size_t sent = 0, received = 0;
        ssize_t k;
        while ((k = smtpd_tls_write(s, big, sizeof big)) > 0)
                sent += (size_t) k;
        ASSERT_EQ(k, -EAGAIN);
        ASSERT_EQ(smtpd_tls_wants(s), EPOLLOUT);
        bool done = false;
        for (unsigned i = 0; i < 100000 && !done; i++) {
                ssize_t n = gnutls_record_recv(c, got, sizeof got);
                if (n > 0)
                        received += (size_t) n;
                else
                        ASSERT_TRUE(n == GNUTLS_E_AGAIN);
                k = smtpd_tls_write(s, big, sizeof big);
                if (k > 0) {
                        ASSERT_EQ(k, sizeof big);
                        sent += (size_t) k;
                        done = true;
                } else
                        ASSERT_EQ(k, -EAGAIN);
        }
        ASSERT_TRUE(done);
        for (unsigned i = 0; i < 100000 && received < sent; i++) {
                ssize_t n = gnutls_record_recv(c, got, sizeof got);
                if (n > 0)
                        received += (size_t) n;
                else
                        ASSERT_TRUE(n == GNUTLS_E_AGAIN);
        }
        ASSERT_EQ(received, sent);

        smtpd_tls_session_free(s);
        gnutls_deinit(c);
        gnutls_certificate_free_credentials(cc);
        safe_close(sv[0]);
        safe_close(sv[1]);
        smtpd_tls_context_unref(ctx);
}

TEST(plaintext_instead_of_client_hello) {
        material();
        SmtpdTlsContext *ctx = make_ctx(false);
        int sv[2];
        ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv));
        SmtpdTlsSession *s = NULL;
        ASSERT_OK(smtpd_tls_session_new(ctx, sv[0], &s));
        ASSERT_EQ(smtpd_tls_handshake(s), -EAGAIN);
        ASSERT_EQ(smtpd_tls_wants(s), EPOLLIN);
        ASSERT_EQ(write(sv[1], "MAIL FROM:<a@b>\r\n", 17), 17);
        int r = smtpd_tls_handshake(s);
        ASSERT_TRUE(r < 0 && r != -EAGAIN);
        printf("# %s\n", smtpd_tls_error(s));
        smtpd_tls_session_free(s);
        safe_close(sv[0]);
        safe_close(sv[1]);

        /* EOF before the ClientHello */
        ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv));
        ASSERT_OK(smtpd_tls_session_new(ctx, sv[0], &s));
        sv[1] = safe_close(sv[1]);
        ASSERT_EQ(smtpd_tls_handshake(s), -ECONNRESET);
        smtpd_tls_session_free(s);
        safe_close(sv[0]);
        smtpd_tls_context_unref(ctx);
}

int main(void) {
        int r = tap_run();
        if (dir[0] && getenv("KEEP_TEST_DIR") == NULL)
                (void) sh("rm -rf '%s'", dir);
        return r;
}
