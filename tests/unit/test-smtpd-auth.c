/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <crypt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "smtpd-auth.h"
#include "tap.h"

/* ---- helpers ---- */

typedef struct Diags {
        char text[4096];
        unsigned n_warn, n_err;
} Diags;

static void collect(AuthLogLevel level, const char *msg, void *userdata) {
        Diags *d = userdata;
        if (level == AUTH_LOG_ERROR)
                d->n_err++;
        else
                d->n_warn++;
        size_t l = strlen(d->text);
        snprintf(d->text + l, sizeof d->text - l, "%s\n", msg);
}

static char *make_hash(const char *prefix, const char *password) {
        char salt[CRYPT_GENSALT_OUTPUT_SIZE];
        struct crypt_data *cd = calloc(1, sizeof *cd);
        char *out = NULL;
        if (!cd)
                return NULL;
        if (crypt_gensalt_rn(prefix, 0, NULL, 0, salt, sizeof salt)) {
                const char *h = crypt_rn(password, salt, cd, (int) sizeof *cd);
                if (h && h[0] != '*')
                        out = strdup(h);
        }
        free(cd);
        return out;
}

static int parse(const char *text, Diags *d, AuthPasswd **ret) {
        memset(d, 0, sizeof *d);
        return auth_passwd_parse("creds", text, strlen(text), collect, d, ret);
}

/* ---- 1. password file ---- */

#define YH "$y$j9T$abcdefghijklmnopqrstu.$0123456789012345678901234567890123456789012"
#define SH "$6$saltsalt$abcdefghijklmnopqrstuvwxyz"

TEST(passwd_good) {
        Diags d;
        _cleanup_(auth_passwd_freep) AuthPasswd *p = NULL;
        ASSERT_OK(parse("# comment\n"
                        "\n"
                        "   \n"
                        "alice:" YH "\n"
                        "Alice:" SH "\r\n"
                        "bob:$5$rounds=5000$salt$hash\n"
                        "carol:$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234\n"
                        "old:$1$salt$hash\n"
                        "des:abJnggxhB/yWI\n"
                        "locked:!" YH "\n"
                        "user@example.com:" SH, /* no final LF */
                        &d, &p));
        ASSERT_EQ(auth_passwd_size(p), 5);
        ASSERT_STREQ(auth_passwd_lookup(p, "alice"), YH);
        ASSERT_STREQ(auth_passwd_lookup(p, "Alice"), SH);
        ASSERT_STREQ(auth_passwd_lookup(p, "user@example.com"), SH);
        ASSERT_NULL(auth_passwd_lookup(p, "ALICE"));
        ASSERT_NULL(auth_passwd_lookup(p, "old"));
        ASSERT_NULL(auth_passwd_lookup(p, "des"));
        ASSERT_NULL(auth_passwd_lookup(p, "locked"));
        ASSERT_NULL(auth_passwd_lookup(p, "nobody"));
        ASSERT_EQ(d.n_err, 0);
        ASSERT_EQ(d.n_warn, 3);
        ASSERT_NOT_NULL(strstr(d.text, "creds:8: MD5"));
        ASSERT_NOT_NULL(strstr(d.text, "creds:9: DES"));
        ASSERT_NOT_NULL(strstr(d.text, "creds:10: locked"));
}

TEST(passwd_empty) {
        Diags d;
        _cleanup_(auth_passwd_freep) AuthPasswd *p = NULL;
        ASSERT_OK(parse("", &d, &p));
        ASSERT_EQ(auth_passwd_size(p), 0);
        ASSERT_NULL(auth_passwd_lookup(p, "x"));
}

TEST(passwd_bad) {
        static const struct {
                const char *text;
                const char *msg;
        } cases[] = {
                { "a:" YH "\nnocolon\n", "creds:2: expected user:hash" },
                { "\n\n:" YH "\n", "creds:3: user name empty" },
                { "a:" YH "\nb:\n", "creds:2: empty password hash" },
                { "a:$9$foo\n", "creds:1: unknown" },
                { "a:plain text\n", "creds:1: invalid character" },
                { "a:" YH " \n", "creds:1: invalid character" },
                { "a:" YH "\nb:" SH "\na:" SH "\n", "creds:3: duplicate user 'a' (first on line 1)" },
                { "a\tb:" YH "\n", "creds:1: control character" },
                { "a:$y$\n", "creds:1: unknown" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                Diags d;
                AuthPasswd *p = NULL;
                ASSERT_ERR(parse(cases[i].text, &d, &p), -EINVAL);
                ASSERT_NULL(p);
                if (!strstr(d.text, cases[i].msg))
                        TAP_FAIL("case %zu: \"%s\" not in \"%.1000s\"", i, cases[i].msg, d.text);
        }
}

TEST(passwd_limits) {
        Diags d;
        AuthPasswd *p = NULL;
        /* long line */
        char *big = malloc(AUTH_PASSWD_LINE_MAX + 100);
        ASSERT_NOT_NULL(big);
        memset(big, 'a', AUTH_PASSWD_LINE_MAX + 50);
        memcpy(big, "# ok\nx:", 7);
        big[AUTH_PASSWD_LINE_MAX + 50] = 0;
        ASSERT_ERR(parse(big, &d, &p), -EINVAL);
        ASSERT_NOT_NULL(strstr(d.text, "creds:2: line longer"));
        free(big);

        /* NUL */
        memset(&d, 0, sizeof d);
        ASSERT_ERR(auth_passwd_parse("creds", "a:" YH "\nb\0:x\n", sizeof("a:" YH "\nb\0:x\n") - 1, collect, &d, &p),
                   -EINVAL);
        ASSERT_NOT_NULL(strstr(d.text, "creds:2: NUL"));

        /* size */
        memset(&d, 0, sizeof d);
        ASSERT_ERR(auth_passwd_parse("creds", "", AUTH_PASSWD_SIZE_MAX + 1, collect, &d, &p), -EFBIG);

        /* long user name */
        char user[AUTH_USER_MAX + 20];
        memset(user, 'u', sizeof user);
        snprintf(user + AUTH_USER_MAX + 1, sizeof user - AUTH_USER_MAX - 1, ":%s", "$6$a$b");
        ASSERT_ERR(parse(user, &d, &p), -EINVAL);
        ASSERT_NOT_NULL(strstr(d.text, "creds:1: user name"));

        /* many errors: capped reporting */
        char many[2000] = "";
        for (int i = 0; i < 40; i++)
                strcat(many, "bad\n");
        ASSERT_ERR(parse(many, &d, &p), -EINVAL);
        ASSERT_EQ(d.n_err, 21);
        ASSERT_NOT_NULL(strstr(d.text, "too many errors"));
}

TEST(passwd_user_count) {
        size_t n = AUTH_PASSWD_USERS_MAX + 1, len = 0;
        char *buf = malloc(n * 24);
        ASSERT_NOT_NULL(buf);
        for (size_t i = 0; i < n; i++)
                len += (size_t) sprintf(buf + len, "u%zu:$6$s$h\n", i);
        Diags d = {};
        AuthPasswd *p = NULL;
        int r = auth_passwd_parse("creds", buf, len, collect, &d, &p);
        free(buf);
        ASSERT_ERR(r, -EINVAL);
        ASSERT_NOT_NULL(strstr(d.text, "more than"));
        ASSERT_EQ(d.n_err, 1);
}

/* ---- 2. SASL ---- */

typedef struct SaslCase {
        const char *args;
        const char *lines[3];
        unsigned flags;
        int code;                 /* 0: DONE expected */
        const char *enhanced;
        const char *user, *password, *authzid;
} SaslCase;

#define TLS AUTH_SASL_TLS

static const SaslCase sasl_cases[] = {
        /* PLAIN initial response: \0test\0pass */
        { "PLAIN AHRlc3QAcGFzcw==", {}, TLS, 0, NULL, "test", "pass", "" },
        { "plain AHRlc3QAcGFzcw==", {}, TLS, 0, NULL, "test", "pass", "" },
        /* authzid == authcid: test\0test\0pass */
        { "PLAIN dGVzdAB0ZXN0AHBhc3M=", {}, TLS, 0, NULL, "test", "pass", "test" },
        /* authzid != authcid: admin\0test\0pass */
        { "PLAIN YWRtaW4AdGVzdABwYXNz", {}, TLS, 535, "5.7.8", NULL, NULL, NULL },
        /* no initial response, then the answer */
        { "PLAIN", { "AHRlc3QAcGFzcw==" }, TLS, 0, NULL, "test", "pass", "" },
        { "PLAIN", { "AHRlc3QAcGFzcw==\r\n" }, TLS, 0, NULL, "test", "pass", "" },
        /* cancel */
        { "PLAIN", { "*" }, TLS, 501, "5.7.0", NULL, NULL, NULL },
        { "LOGIN", { "dGVzdA==", "*" }, TLS, 501, "5.7.0", NULL, NULL, NULL },
        /* bad base64 */
        { "PLAIN AHRlc3QAcGFzcw=", {}, TLS, 501, "5.5.2", NULL, NULL, NULL },
        { "PLAIN AHRlc3QAc!Fzcw==", {}, TLS, 501, "5.5.2", NULL, NULL, NULL },
        { "PLAIN", { "AHRl c3QAcGFzcw==" }, TLS, 501, "5.5.2", NULL, NULL, NULL },
        { "PLAIN", { "AH=lc3QA" }, TLS, 501, "5.5.2", NULL, NULL, NULL },
        { "PLAIN", { "QR==" }, TLS, 501, "5.5.2", NULL, NULL, NULL }, /* non-canonical */
        /* "=" is empty: malformed PLAIN */
        { "PLAIN =", {}, TLS, 501, "5.5.2", NULL, NULL, NULL },
        /* malformed PLAIN: one NUL (test\0pass), three NULs, empty password */
        { "PLAIN dGVzdABwYXNz", {}, TLS, 501, "5.5.2", NULL, NULL, NULL },
        { "PLAIN AHRlc3QAcGFzcwB4", {}, TLS, 501, "5.5.2", NULL, NULL, NULL },
        { "PLAIN AHRlc3QA", {}, TLS, 501, "5.5.2", NULL, NULL, NULL },
        { "PLAIN AABwYXNz", {}, TLS, 501, "5.5.2", NULL, NULL, NULL },
        /* LOGIN */
        { "LOGIN", { "dGVzdA==", "cGFzcw==" }, TLS, 0, NULL, "test", "pass", "" },
        { "LOGIN dGVzdA==", { "cGFzcw==" }, TLS, 0, NULL, "test", "pass", "" },
        { "LOGIN", { "=", }, TLS, 501, "5.5.2", NULL, NULL, NULL },
        { "LOGIN", { "dGVzdA==", "" }, TLS, 501, "5.5.2", NULL, NULL, NULL },
        { "LOGIN", { "dGVzdA==", "####" }, TLS, 501, "5.5.2", NULL, NULL, NULL },
        { "LOGIN", { "AHRlc3Q=" }, TLS, 501, "5.5.2", NULL, NULL, NULL }, /* NUL in user */
        /* TLS policy */
        { "PLAIN AHRlc3QAcGFzcw==", {}, 0, 538, "5.7.11", NULL, NULL, NULL },
        { "LOGIN", {}, 0, 538, "5.7.11", NULL, NULL, NULL },
        { "PLAIN AHRlc3QAcGFzcw==", {}, AUTH_SASL_ALLOW_PLAINTEXT, 0, NULL, "test", "pass", "" },
        /* EXTERNAL */
        { "EXTERNAL =", {}, TLS, 535, "5.7.8", NULL, NULL, NULL },
        { "EXTERNAL =", {}, TLS | AUTH_SASL_CLIENT_CERT, 0, NULL, "", "", "" },
        { "EXTERNAL", { "" }, AUTH_SASL_CLIENT_CERT, 0, NULL, "", "", "" },
        { "EXTERNAL dGVzdA==", {}, AUTH_SASL_CLIENT_CERT, 0, NULL, "", "", "test" },
        { "EXTERNAL", { "*" }, AUTH_SASL_CLIENT_CERT, 501, "5.7.0", NULL, NULL, NULL },
        /* syntax */
        { "", {}, TLS, 501, "5.5.4", NULL, NULL, NULL },
        { "CRAM-MD5", {}, TLS, 504, "5.5.4", NULL, NULL, NULL },
        { "AVERYLONGMECHANISMNAMEOVERTHIRTYTWO", {}, TLS, 504, "5.5.4", NULL, NULL, NULL },
        { "PLAIN AHRlc3QAcGFzcw== extra", {}, TLS, 501, "5.5.4", NULL, NULL, NULL },
};

TEST(sasl_table) {
        for (size_t i = 0; i < ELEMENTSOF(sasl_cases); i++) {
                const SaslCase *c = &sasl_cases[i];
                AuthSasl s;
                AuthStep st;
                size_t li = 0;

                ASSERT_OK(auth_sasl_start(&s, c->args, c->flags, &st));
                while (st.kind == AUTH_STEP_CHALLENGE) {
                        if (li >= ELEMENTSOF(c->lines) || !c->lines[li])
                                TAP_FAIL("case %zu (%s): unexpected challenge \"%s\"", i, c->args, st.challenge);
                        ASSERT_OK(auth_sasl_feed(&s, c->lines[li], strlen(c->lines[li]), &st));
                        li++;
                }
                if (c->code == 0) {
                        if (st.kind != AUTH_STEP_DONE)
                                TAP_FAIL("case %zu (%s): expected DONE, got %d %s %s", i, c->args, st.code,
                                         st.enhanced, st.text);
                        ASSERT_STREQ(s.user, c->user);
                        ASSERT_STREQ(s.password, c->password);
                        ASSERT_STREQ(s.authzid, c->authzid);
                } else {
                        if (st.kind != AUTH_STEP_ERROR || st.code != c->code || strcmp(st.enhanced, c->enhanced) != 0)
                                TAP_FAIL("case %zu (%s): expected %d %s, got kind %d %d %s", i, c->args, c->code,
                                         c->enhanced, st.kind, st.code, st.enhanced ? st.enhanced : "-");
                        ASSERT_NOT_NULL(st.text);
                        ASSERT_EQ(s.password[0], 0);
                }
                /* finished: no more input accepted */
                ASSERT_ERR(auth_sasl_feed(&s, "x", 1, &st), -EINVAL);
                auth_sasl_clear(&s);
        }
}

TEST(sasl_challenges) {
        AuthSasl s;
        AuthStep st;
        ASSERT_OK(auth_sasl_start(&s, "LOGIN", TLS, &st));
        ASSERT_EQ(st.kind, AUTH_STEP_CHALLENGE);
        ASSERT_STREQ(st.challenge, "VXNlcm5hbWU6");
        ASSERT_OK(auth_sasl_feed(&s, "dGVzdA==", 8, &st));
        ASSERT_EQ(st.kind, AUTH_STEP_CHALLENGE);
        ASSERT_STREQ(st.challenge, "UGFzc3dvcmQ6");
        auth_sasl_clear(&s);
        ASSERT_OK(auth_sasl_start(&s, "PLAIN", TLS, &st));
        ASSERT_EQ(st.kind, AUTH_STEP_CHALLENGE);
        ASSERT_STREQ(st.challenge, "");

        /* over-long line */
        size_t n = AUTH_SASL_LINE_MAX + 4;
        char *l = malloc(n);
        ASSERT_NOT_NULL(l);
        memset(l, 'A', n);
        ASSERT_OK(auth_sasl_feed(&s, l, n, &st));
        free(l);
        ASSERT_EQ(st.kind, AUTH_STEP_ERROR);
        ASSERT_EQ(st.code, 500);
        /* big but valid base64 that decodes past the limits */
        ASSERT_OK(auth_sasl_start(&s, "PLAIN", TLS, &st));
        n = 4000;
        l = malloc(n);
        ASSERT_NOT_NULL(l);
        memset(l, 'A', n);
        ASSERT_OK(auth_sasl_feed(&s, l, n, &st));
        free(l);
        ASSERT_EQ(st.kind, AUTH_STEP_ERROR);
        ASSERT_EQ(st.code, 501);

        ASSERT_NULL(auth_ehlo_mechanisms(0));
        ASSERT_STREQ(auth_ehlo_mechanisms(TLS), "PLAIN LOGIN");
        ASSERT_STREQ(auth_ehlo_mechanisms(AUTH_SASL_CLIENT_CERT), "EXTERNAL");
        ASSERT_STREQ(auth_ehlo_mechanisms(TLS | AUTH_SASL_CLIENT_CERT), "PLAIN LOGIN EXTERNAL");
        ASSERT_EQ(auth_mech_from_string("login"), AUTH_MECH_LOGIN);
        ASSERT_EQ(auth_mech_from_string("GSSAPI"), AUTH_MECH_INVALID);
}

TEST(base64) {
        char out[16];
        ASSERT_EQ(auth_base64_decode("", 0, out, sizeof out), 0);
        ASSERT_EQ(auth_base64_decode("Zg==", 4, out, sizeof out), 1);
        ASSERT_EQ(auth_base64_decode("Zm8=", 4, out, sizeof out), 2);
        ASSERT_EQ(auth_base64_decode("Zm9v", 4, out, sizeof out), 3);
        ASSERT_TRUE(memcmp(out, "foo", 3) == 0);
        ASSERT_ERR(auth_base64_decode("Zm9", 3, out, sizeof out), -EINVAL);
        ASSERT_ERR(auth_base64_decode("Z===", 4, out, sizeof out), -EINVAL);
        ASSERT_ERR(auth_base64_decode("Zg==Zg==", 8, out, sizeof out), -EINVAL);
        ASSERT_ERR(auth_base64_decode("Zm9vYmFy", 8, out, 5), -ENOBUFS);
}

/* ---- 3. verification ---- */

typedef struct VerifyState {
        int results[64];
        unsigned n_done;
        unsigned expect;
        unsigned done_at_timer;
        bool timer_fired;
        sd_event *e;
} VerifyState;

static void on_done(int result, const char *user _unused_, void *userdata) {
        int *slot = userdata;
        *slot = result;
}

typedef struct Slot {
        VerifyState *vs;
        int result;
} Slot;

static void on_done_count(int result, const char *user _unused_, void *userdata) {
        Slot *s = userdata;
        s->result = result;
        s->vs->n_done++;
        if (s->vs->n_done == s->vs->expect)
                sd_event_exit(s->vs->e, 0);
}

static AuthPasswd *make_passwd(void) {
        _cleanup_free_ char *y = make_hash("$y$", "correct horse");
        _cleanup_free_ char *six = make_hash("$6$", "battery staple");
        char buf[1024];
        AuthPasswd *p = NULL;
        if (!y || !six)
                return NULL;
        snprintf(buf, sizeof buf, "alice:%s\nbob:%s\n", y, six);
        if (auth_passwd_parse("creds", buf, strlen(buf), NULL, NULL, &p) < 0)
                return NULL;
        return p;
}

static int run_until(sd_event *e, int *slots, size_t n) {
        for (int guard = 0; guard < 10000; guard++) {
                bool all = true;
                for (size_t i = 0; i < n; i++)
                        all = all && slots[i] != 42;
                if (all)
                        return 0;
                int r = sd_event_run(e, 5 * 1000000);
                if (r < 0)
                        return r;
        }
        return -ETIMEDOUT;
}

TEST(verify_real) {
        _cleanup_(auth_passwd_freep) AuthPasswd *p = make_passwd();
        sd_event *e = NULL;
        AuthVerifier *v = NULL;
        ASSERT_NOT_NULL(p);
        ASSERT_TRUE(strncmp(auth_passwd_lookup(p, "alice"), "$y$", 3) == 0);
        ASSERT_TRUE(strncmp(auth_passwd_lookup(p, "bob"), "$6$", 3) == 0);
        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(auth_verifier_new(e, 2, 0, &v));

        int slots[6] = { 42, 42, 42, 42, 42, 42 };
        ASSERT_OK(auth_verify(v, p, "alice", "correct horse", on_done, &slots[0], NULL));
        ASSERT_OK(auth_verify(v, p, "alice", "correct horsE", on_done, &slots[1], NULL));
        ASSERT_OK(auth_verify(v, p, "bob", "battery staple", on_done, &slots[2], NULL));
        ASSERT_OK(auth_verify(v, p, "bob", "", on_done, &slots[3], NULL));
        /* unknown user, even with alice's password: fails */
        ASSERT_OK(auth_verify(v, p, "mallory", "correct horse", on_done, &slots[4], NULL));
        ASSERT_OK(auth_verify(v, p, "Alice", "correct horse", on_done, &slots[5], NULL));
        ASSERT_OK(run_until(e, slots, 6));
        ASSERT_EQ(slots[0], 1);
        ASSERT_EQ(slots[1], 0);
        ASSERT_EQ(slots[2], 1);
        ASSERT_EQ(slots[3], 0);
        ASSERT_EQ(slots[4], 0);
        ASSERT_EQ(slots[5], 0);
        ASSERT_EQ(auth_verifier_pending(v), 0);

        /* no passwd at all: dummy of the verifier */
        int s = 42;
        ASSERT_OK(auth_verify(v, NULL, "alice", "x", on_done, &s, NULL));
        ASSERT_OK(run_until(e, &s, 1));
        ASSERT_EQ(s, 0);

        auth_verifier_free(v);
        sd_event_unref(e);
}

static int on_timer(sd_event_source *src _unused_, uint64_t usec _unused_, void *userdata) {
        VerifyState *vs = userdata;
        vs->timer_fired = true;
        vs->done_at_timer = vs->n_done;
        return 0;
}

TEST(verify_async_many) {
        _cleanup_(auth_passwd_freep) AuthPasswd *p = make_passwd();
        sd_event *e = NULL;
        AuthVerifier *v = NULL;
        VerifyState vs = { .expect = 20 };
        Slot slots[20];
        uint64_t now;

        ASSERT_NOT_NULL(p);
        ASSERT_OK(sd_event_new(&e));
        vs.e = e;
        ASSERT_OK(auth_verifier_new(e, 2, 32, &v));
        for (unsigned i = 0; i < 20; i++) {
                slots[i] = (Slot) { .vs = &vs, .result = 42 };
                ASSERT_OK(auth_verify(v, p, "alice", i % 2 ? "wrong" : "correct horse", on_done_count, &slots[i],
                                      NULL));
        }
        ASSERT_EQ(auth_verifier_pending(v), 20);
        ASSERT_OK(sd_event_now(e, CLOCK_MONOTONIC, &now));
        ASSERT_OK(sd_event_add_time(e, NULL, CLOCK_MONOTONIC, now + 1000, 0, on_timer, &vs));
        ASSERT_OK(sd_event_loop(e));
        ASSERT_EQ(vs.n_done, 20);
        ASSERT_TRUE(vs.timer_fired);
        /* the loop was free while hashes ran */
        ASSERT_TRUE(vs.done_at_timer < 20);
        for (unsigned i = 0; i < 20; i++)
                ASSERT_EQ(slots[i].result, i % 2 ? 0 : 1);
        auth_verifier_free(v);
        sd_event_unref(e);
}

TEST(verify_bounds_cancel_free) {
        _cleanup_(auth_passwd_freep) AuthPasswd *p = make_passwd();
        sd_event *e = NULL;
        AuthVerifier *v = NULL;
        int slots[4] = { 42, 42, 42, 42 };
        AuthVerifyRequest *r = NULL;

        ASSERT_NOT_NULL(p);
        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(auth_verifier_new(e, 1, 3, &v));
        ASSERT_ERR(auth_verifier_new(e, 9, 3, &(AuthVerifier *){ NULL }), -EINVAL);
        ASSERT_OK(auth_verify(v, p, "alice", "correct horse", on_done, &slots[0], NULL));
        ASSERT_OK(auth_verify(v, p, "alice", "correct horse", on_done, &slots[1], &r));
        ASSERT_OK(auth_verify(v, p, "alice", "correct horse", on_done, &slots[2], NULL));
        ASSERT_ERR(auth_verify(v, p, "alice", "x", on_done, &slots[3], NULL), -EBUSY);
        auth_verify_cancel(v, r); /* queued or running: never called */
        ASSERT_OK(run_until(e, slots, 1));
        /* free with jobs outstanding: callbacks get results or -ECANCELED */
        auth_verifier_free(v);
        ASSERT_EQ(slots[0], 1);
        ASSERT_EQ(slots[1], 42);
        ASSERT_TRUE(slots[2] == 1 || slots[2] == -ECANCELED);
        ASSERT_EQ(slots[3], 42);
        sd_event_unref(e);
}

/* ---- 4. throttling ---- */

static uint64_t fake_now;
static uint64_t fake_clock(void *userdata _unused_) {
        return fake_now;
}

static socklen_t addr(const char *s, struct sockaddr_storage *ss) {
        memset(ss, 0, sizeof *ss);
        if (strchr(s, ':')) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ss;
                in6->sin6_family = AF_INET6;
                if (inet_pton(AF_INET6, s, &in6->sin6_addr) != 1)
                        abort();
                return sizeof *in6;
        }
        struct sockaddr_in *in = (struct sockaddr_in *) ss;
        in->sin_family = AF_INET;
        if (inet_pton(AF_INET, s, &in->sin_addr) != 1)
                abort();
        return sizeof *in;
}

#define FAIL(t, s) ({ struct sockaddr_storage _ss; socklen_t _l = addr(s, &_ss); \
                      auth_throttle_failure(t, (struct sockaddr *) &_ss, _l); })
#define REFUSED(t, s) ({ struct sockaddr_storage _ss; socklen_t _l = addr(s, &_ss); \
                         auth_throttle_refused(t, (struct sockaddr *) &_ss, _l); })
#define COUNT(t, s) ({ struct sockaddr_storage _ss; socklen_t _l = addr(s, &_ss); \
                       auth_throttle_failures(t, (struct sockaddr *) &_ss, _l); })

#define SEC UINT64_C(1000000)

TEST(throttle_delays) {
        _cleanup_(auth_throttle_freep) AuthThrottle *t = NULL;
        fake_now = 1000 * SEC;
        ASSERT_OK(auth_throttle_new(NULL, fake_clock, NULL, &t));
        static const int64_t expect[] = { 1, 2, 4, 8, 16, 30, 30, 30, 30, 30 };
        for (size_t i = 0; i < ELEMENTSOF(expect); i++) {
                ASSERT_FALSE(REFUSED(t, "192.0.2.1"));
                ASSERT_EQ(FAIL(t, "192.0.2.1"), expect[i] * (int64_t) SEC);
                fake_now += SEC;
        }
        ASSERT_TRUE(REFUSED(t, "192.0.2.1"));
        ASSERT_EQ(COUNT(t, "192.0.2.1"), 10);
        /* another address is untouched; IPv4-mapped is the same address */
        ASSERT_FALSE(REFUSED(t, "192.0.2.2"));
        ASSERT_TRUE(REFUSED(t, "::ffff:192.0.2.1"));
        /* window expiry (10 min from the first failure) */
        fake_now = 1000 * SEC + 600 * SEC - 1;
        ASSERT_TRUE(REFUSED(t, "192.0.2.1"));
        fake_now += 1;
        ASSERT_FALSE(REFUSED(t, "192.0.2.1"));
        ASSERT_EQ(COUNT(t, "192.0.2.1"), 0);
        ASSERT_EQ(FAIL(t, "192.0.2.1"), (int64_t) SEC);
}

TEST(throttle_config_ipv6) {
        _cleanup_(auth_throttle_freep) AuthThrottle *t = NULL;
        AuthThrottleConfig c = { .max_failures = 3, .base_delay_usec = 100, .max_delay_usec = 300,
                                 .window_usec = 60 * SEC };
        fake_now = 5 * SEC;
        ASSERT_OK(auth_throttle_new(&c, fake_clock, NULL, &t));
        ASSERT_EQ(FAIL(t, "2001:db8:1:2::1"), 100);
        ASSERT_EQ(FAIL(t, "2001:db8:1:2:ffff:ffff:ffff:ffff"), 200);
        ASSERT_FALSE(REFUSED(t, "2001:db8:1:2::99"));
        ASSERT_EQ(FAIL(t, "2001:db8:1:2:abcd::"), 300);
        ASSERT_TRUE(REFUSED(t, "2001:db8:1:2::7"));
        ASSERT_EQ(FAIL(t, "2001:db8:1:2::7"), 300); /* capped */
        ASSERT_FALSE(REFUSED(t, "2001:db8:1:3::1")); /* next /64 */
        ASSERT_EQ(COUNT(t, "2001:db8:1:3::1"), 0);
        ASSERT_EQ(auth_throttle_size(t), 1);

        struct sockaddr sa = { .sa_family = AF_UNIX };
        ASSERT_ERR(auth_throttle_failure(t, &sa, sizeof sa), -EAFNOSUPPORT);
        ASSERT_FALSE(auth_throttle_refused(t, &sa, sizeof sa));
        struct sockaddr_in short_in = { .sin_family = AF_INET };
        ASSERT_ERR(auth_throttle_failure(t, (struct sockaddr *) &short_in, 4), -EINVAL);
}

TEST(throttle_bound) {
        _cleanup_(auth_throttle_freep) AuthThrottle *t = NULL;
        AuthThrottleConfig c = { .max_entries = 100 };
        char a[64];
        fake_now = 1 * SEC;
        ASSERT_OK(auth_throttle_new(&c, fake_clock, NULL, &t));
        /* 10.0.0.0 fails often, and again at the end so it stays recent */
        for (int i = 0; i < 10; i++)
                FAIL(t, "10.0.0.0");
        for (int i = 1; i <= 1000; i++) {
                snprintf(a, sizeof a, "10.0.%d.%d", i / 256, i % 256);
                FAIL(t, a);
                if (i % 50 == 0)
                        FAIL(t, "10.0.0.0");
                ASSERT_TRUE(auth_throttle_size(t) <= 100);
        }
        ASSERT_EQ(auth_throttle_size(t), 100);
        ASSERT_TRUE(REFUSED(t, "10.0.0.0"));  /* recent: kept */
        ASSERT_EQ(COUNT(t, "10.0.0.1"), 0);   /* oldest: dropped */
        ASSERT_EQ(COUNT(t, "10.0.3.232"), 1); /* newest: kept */
        /* 10k default with many addresses: bounded */
        _cleanup_(auth_throttle_freep) AuthThrottle *t2 = NULL;
        ASSERT_OK(auth_throttle_new(NULL, fake_clock, NULL, &t2));
        for (int i = 0; i < 12000; i++) {
                snprintf(a, sizeof a, "2001:db8:%x:%x::1", i / 65536, i % 65536);
                FAIL(t2, a);
        }
        ASSERT_EQ(auth_throttle_size(t2), 10000);
        /* expired entries go first */
        fake_now += 601 * SEC;
        FAIL(t2, "192.0.2.9");
        ASSERT_EQ(auth_throttle_size(t2), 1);
}

int main(void) {
        return tap_run();
}
