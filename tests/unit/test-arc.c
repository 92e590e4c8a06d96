/* SPDX-License-Identifier: MIT */
/* ARC sealing and validation beyond the public suite: chains grown hop by
 * hop in the folded production layout, oldest-pass, sealing a broken chain
 * with cv=fail, refusing to extend an ended chain or to go past 50 sets,
 * temporary key failures, and parameter checks. */

#include <errno.h>
#include <gnutls/abstract.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arc.h"
#include "macro.h"
#include "tap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(ArcValidator *, arc_validator_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(gnutls_privkey_t, gnutls_privkey_deinit);

static char *key_record(gnutls_privkey_t key) {
        gnutls_pubkey_t pub;
        gnutls_datum_t d = {};
        char *txt = NULL;
        unsigned bits;

        if (gnutls_pubkey_init(&pub) < 0)
                return NULL;
        if (gnutls_pubkey_import_privkey(pub, key, 0, 0) < 0) {
                gnutls_pubkey_deinit(pub);
                return NULL;
        }
        if (gnutls_privkey_get_pk_algorithm(key, &bits) == GNUTLS_PK_EDDSA_ED25519) {
                gnutls_ecc_curve_t curve;
                if (gnutls_pubkey_export_ecc_raw(pub, &curve, &d, NULL) >= 0) {
                        _cleanup_free_ char *b64 = dkim_base64_encode(d.data, d.size);
                        if (asprintf(&txt, "v=DKIM1; k=ed25519; p=%s", b64) < 0)
                                txt = NULL;
                }
        } else if (gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &d) >= 0) {
                _cleanup_free_ char *b64 = dkim_base64_encode(d.data, d.size);
                if (asprintf(&txt, "v=DKIM1; k=rsa; p=%s", b64) < 0)
                        txt = NULL;
        }
        gnutls_free(d.data);
        gnutls_pubkey_deinit(pub);
        return txt;
}

typedef struct Env {
        const char *txt;        /* for every selector */
        DkimLookup lookup;
} Env;

static int validate(const char *msg, size_t chunk, const Env *env, ArcValidator **ret) {
        _cleanup_(arc_validator_freep) ArcValidator *v = NULL;
        size_t n = strlen(msg);
        const char *name;
        int r;

        r = arc_validator_new(NULL, &v);
        if (r < 0)
                return r;
        for (size_t off = 0; off < n; off += chunk) {
                r = arc_validator_feed(v, msg + off, MIN(chunk, n - off));
                if (r < 0)
                        return r;
        }
        r = arc_validator_feed_end(v);
        if (r < 0)
                return r;
        while (arc_validator_next_query(v, &name) > 0) {
                size_t l = env->txt ? strlen(env->txt) : 0;
                r = arc_validator_answer(v, name, env->lookup, &env->txt, &l, env->txt ? 1 : 0);
                if (r < 0)
                        return r;
        }
        if (!arc_validator_is_done(v))
                return -EIO;
        *ret = TAKE_PTR(v);
        return 0;
}

static const char base_message[] =
        "Authentication-Results: relay.example.net; spf=pass smtp.mailfrom=alice@example.org\r\n"
        "From: Alice <alice@example.org>\r\n"
        "To: list@example.net\r\n"
        "Subject: hello\r\n"
        "Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
        "Message-ID: <1@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "\r\n"
        "Hello list.\r\n";

/* Seals msg as the next hop; returns the sealed message (or NULL, with
 * *ret_r set). */
static char *seal(const char *msg, gnutls_privkey_t key, DkimAlgorithm alg, const Env *env, ArcSealCv cv,
                  ArcSeal *ret_seal, int *ret_r) {
        _cleanup_(arc_validator_freep) ArcValidator *v = NULL;
        ArcSeal s = {};
        char *out = NULL;
        int r;

        r = validate(msg, 61, env, &v);
        if (r >= 0) {
                ArcSealParams p = {
                        .domain = "relay.example.net",
                        .selector = "arc",
                        .key = key,
                        .algorithm = alg,
                        .authserv_id = "relay.example.net",
                        .results = "arc=pass; spf=pass smtp.mailfrom=alice@example.org",
                        .timestamp = 1764151200,
                        .cv = cv,
                        .min_rsa_bits = 1024,
                };
                r = arc_validator_seal(v, &p, &s);
        }
        if (ret_r)
                *ret_r = r;
        if (r < 0)
                return NULL;
        if (asprintf(&out, "%s%s%s%s", s.as, s.ams, s.aar, msg) < 0)
                out = NULL;
        if (ret_seal)
                *ret_seal = s;
        else
                arc_seal_done(&s);
        return out;
}

/* Our fields stay within 78 columns (the base message's own fields are
 * not ours to fold, so stop at its first one). */
static void check_folding(const char *msg) {
        const char *end = strstr(msg, "\r\nAuthentication-Results:");
        for (const char *l = msg; l < end;) {
                const char *e = strstr(l, "\r\n");
                if (e - l > 78)
                        TAP_FAIL("line longer than 78: %.*s", (int) (e - l), l);
                l = e + 2;
        }
}

TEST(chain_grows) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        ASSERT_TRUE(gnutls_privkey_init(&key) >= 0);
        ASSERT_TRUE(gnutls_privkey_generate(key, GNUTLS_PK_RSA, 2048, 0) >= 0);
        _cleanup_free_ char *txt = key_record(key);
        Env env = { txt, DKIM_LOOKUP_FOUND };
        char *msg = strdup(base_message);

        for (unsigned i = 1; i <= 5; i++) {
                ArcSeal s = {};
                int r;
                char *next = seal(msg, key, DKIM_ALGORITHM_RSA_SHA256, &env, ARC_SEAL_CV_AUTO, &s, &r);
                if (!next)
                        TAP_FAIL("seal %u: %d", i, r);
                ASSERT_EQ(s.instance, i);
                ASSERT_EQ(s.cv, i == 1 ? ARC_CV_NONE : ARC_CV_PASS);
                ASSERT_TRUE(strncmp(s.aar, "ARC-Authentication-Results: i=", 30) == 0);
                arc_seal_done(&s);
                free(msg);
                msg = next;
                check_folding(msg);

                _cleanup_(arc_validator_freep) ArcValidator *v = NULL;
                const ArcResult *res;
                ASSERT_OK(validate(msg, 1 + i * 17, &env, &v));
                ASSERT_OK(arc_validator_result(v, &res));
                if (res->status != ARC_STATUS_PASS)
                        TAP_FAIL("hop %u: %s (%s, set %u)\n%s", i, arc_status_to_string(res->status), res->reason,
                                 res->failed_instance, msg);
                ASSERT_EQ(res->n_sets, i);
                ASSERT_EQ(res->oldest_pass, 1);
                for (unsigned j = 0; j < i; j++) {
                        ASSERT_EQ(res->sets[j].instance, j + 1);
                        ASSERT_EQ(res->sets[j].as_status, DKIM_STATUS_PASS);
                        ASSERT_EQ(res->sets[j].ams_status, DKIM_STATUS_PASS);
                        ASSERT_STREQ(res->sets[j].as->domain, "relay.example.net");
                }
        }
        free(msg);
}

/* A list changes the Subject after validating: it seals with the cv it
 * found before the change; the older AMS no longer verifies, so
 * oldest-pass moves up, and the chain still passes. */
TEST(oldest_pass) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        ASSERT_TRUE(gnutls_privkey_init(&key) >= 0);
        ASSERT_TRUE(gnutls_privkey_generate(key, GNUTLS_PK_EDDSA_ED25519, 256, 0) >= 0);
        _cleanup_free_ char *txt = key_record(key);
        Env env = { txt, DKIM_LOOKUP_FOUND };

        _cleanup_free_ char *one = seal(base_message, key, DKIM_ALGORITHM_ED25519_SHA256, &env, ARC_SEAL_CV_AUTO, NULL, NULL);
        ASSERT_NOT_NULL(one);
        _cleanup_free_ char *two = seal(one, key, DKIM_ALGORITHM_ED25519_SHA256, &env, ARC_SEAL_CV_AUTO, NULL, NULL);
        ASSERT_NOT_NULL(two);
        char *subj = strstr(two, "Subject: hello");
        ASSERT_NOT_NULL(subj);
        memcpy(subj, "Subject: HELLO", 14);
        _cleanup_free_ char *three = seal(two, key, DKIM_ALGORITHM_ED25519_SHA256, &env, ARC_SEAL_CV_PASS, NULL, NULL);
        ASSERT_NOT_NULL(three);

        _cleanup_(arc_validator_freep) ArcValidator *v = NULL;
        const ArcResult *res;
        ASSERT_OK(validate(three, 100, &env, &v));
        ASSERT_OK(arc_validator_result(v, &res));
        ASSERT_EQ(res->status, ARC_STATUS_PASS);
        ASSERT_EQ(res->n_sets, 3);
        ASSERT_EQ(res->oldest_pass, 3);
        ASSERT_EQ(res->sets[1].ams_status, DKIM_STATUS_FAIL);
        ASSERT_EQ(res->sets[0].ams_status, DKIM_STATUS_NEUTRAL);        /* not looked at */
}

/* A hop that finds the chain broken seals cv=fail over its own set only
 * (RFC 8617 §5.1.2); nobody may extend the chain after that. */
TEST(seal_broken_chain) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        ASSERT_TRUE(gnutls_privkey_init(&key) >= 0);
        ASSERT_TRUE(gnutls_privkey_generate(key, GNUTLS_PK_EDDSA_ED25519, 256, 0) >= 0);
        _cleanup_free_ char *txt = key_record(key);
        Env env = { txt, DKIM_LOOKUP_FOUND };

        _cleanup_free_ char *one = seal(base_message, key, DKIM_ALGORITHM_ED25519_SHA256, &env, ARC_SEAL_CV_AUTO, NULL, NULL);
        ASSERT_NOT_NULL(one);
        char *body = strstr(one, "Hello list.");
        body[0] = 'J';

        _cleanup_(arc_validator_freep) ArcValidator *v = NULL;
        const ArcResult *res;
        ASSERT_OK(validate(one, 9, &env, &v));
        ASSERT_OK(arc_validator_result(v, &res));
        ASSERT_EQ(res->status, ARC_STATUS_FAIL);
        ASSERT_EQ(res->failed_instance, 1);
        ASSERT_STREQ(res->reason, "body hash does not match");
        ASSERT_FALSE(res->temporary);

        ArcSeal s = {};
        int r;
        _cleanup_free_ char *two = seal(one, key, DKIM_ALGORITHM_ED25519_SHA256, &env, ARC_SEAL_CV_AUTO, &s, &r);
        ASSERT_NOT_NULL(two);
        ASSERT_EQ(s.cv, ARC_CV_FAIL);
        ASSERT_EQ(s.instance, 2);
        arc_seal_done(&s);

        /* The new seal verifies over its own set alone. */
        _cleanup_(arc_validator_freep) ArcValidator *w = NULL;
        ASSERT_OK(validate(two, 33, &env, &w));
        ASSERT_OK(arc_validator_result(w, &res));
        ASSERT_EQ(res->status, ARC_STATUS_FAIL);
        ASSERT_STREQ(res->reason, "the newest ARC-Seal says cv=fail");

        char *three = seal(two, key, DKIM_ALGORITHM_ED25519_SHA256, &env, ARC_SEAL_CV_AUTO, NULL, &r);
        ASSERT_NULL(three);
        ASSERT_ERR(r, -EPERM);
        three = seal(two, key, DKIM_ALGORITHM_ED25519_SHA256, &env, ARC_SEAL_CV_FAIL, NULL, &r);
        ASSERT_NULL(three);
        ASSERT_ERR(r, -EPERM);

        /* A pass override cannot cover a structurally broken chain. */
        _cleanup_free_ char *dup = NULL;
        ASSERT_TRUE(asprintf(&dup, "ARC-Seal: i=1; a=ed25519-sha256; cv=none; d=x.example; s=a; b=AAAA\r\n%s", one) > 0);
        three = seal(dup, key, DKIM_ALGORITHM_ED25519_SHA256, &env, ARC_SEAL_CV_PASS, NULL, &r);
        ASSERT_NULL(three);
        ASSERT_ERR(r, -EINVAL);
}

TEST(limit_50) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        ASSERT_TRUE(gnutls_privkey_init(&key) >= 0);
        ASSERT_TRUE(gnutls_privkey_generate(key, GNUTLS_PK_EDDSA_ED25519, 256, 0) >= 0);
        _cleanup_free_ char *txt = key_record(key);
        Env env = { txt, DKIM_LOOKUP_FOUND };
        char *msg = strdup(base_message);
        int r;

        for (unsigned i = 1; i <= ARC_MAX_INSTANCES; i++) {
                char *next = seal(msg, key, DKIM_ALGORITHM_ED25519_SHA256, &env, ARC_SEAL_CV_AUTO, NULL, &r);
                if (!next)
                        TAP_FAIL("seal %u: %d", i, r);
                free(msg);
                msg = next;
        }
        _cleanup_(arc_validator_freep) ArcValidator *v = NULL;
        const ArcResult *res;
        ASSERT_OK(validate(msg, 4096, &env, &v));
        ASSERT_OK(arc_validator_result(v, &res));
        ASSERT_EQ(res->status, ARC_STATUS_PASS);
        ASSERT_EQ(res->n_sets, 50);
        ASSERT_NULL(seal(msg, key, DKIM_ALGORITHM_ED25519_SHA256, &env, ARC_SEAL_CV_AUTO, NULL, &r));
        ASSERT_ERR(r, -E2BIG);

        /* A 51st set in the message fails validation. */
        _cleanup_free_ char *more = NULL;
        ASSERT_TRUE(asprintf(&more, "ARC-Seal: i=51; a=ed25519-sha256; cv=pass; d=x.example; s=a; b=AAAA\r\n%s", msg) > 0);
        _cleanup_(arc_validator_freep) ArcValidator *w = NULL;
        ASSERT_OK(validate(more, 4096, &env, &w));
        ASSERT_OK(arc_validator_result(w, &res));
        ASSERT_EQ(res->status, ARC_STATUS_FAIL);
        ASSERT_STREQ(res->reason, "more than 50 ARC sets");
        free(msg);
}

TEST(temporary_failure) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        ASSERT_TRUE(gnutls_privkey_init(&key) >= 0);
        ASSERT_TRUE(gnutls_privkey_generate(key, GNUTLS_PK_EDDSA_ED25519, 256, 0) >= 0);
        _cleanup_free_ char *txt = key_record(key);
        Env env = { txt, DKIM_LOOKUP_FOUND };
        _cleanup_free_ char *one = seal(base_message, key, DKIM_ALGORITHM_ED25519_SHA256, &env, ARC_SEAL_CV_AUTO, NULL, NULL);
        ASSERT_NOT_NULL(one);

        Env down = { NULL, DKIM_LOOKUP_TEMPFAIL };
        _cleanup_(arc_validator_freep) ArcValidator *v = NULL;
        const ArcResult *res;
        ASSERT_OK(validate(one, 4096, &down, &v));
        ASSERT_OK(arc_validator_result(v, &res));
        ASSERT_EQ(res->status, ARC_STATUS_FAIL);
        ASSERT_TRUE(res->temporary);
        int r;
        ASSERT_NULL(seal(one, key, DKIM_ALGORITHM_ED25519_SHA256, &down, ARC_SEAL_CV_AUTO, NULL, &r));
        ASSERT_ERR(r, -EAGAIN);

        Env gone = { NULL, DKIM_LOOKUP_NOT_FOUND };
        _cleanup_(arc_validator_freep) ArcValidator *w = NULL;
        ASSERT_OK(validate(one, 4096, &gone, &w));
        ASSERT_OK(arc_validator_result(w, &res));
        ASSERT_EQ(res->status, ARC_STATUS_FAIL);
        ASSERT_FALSE(res->temporary);
}

TEST(no_chain_and_bad_input) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        ASSERT_TRUE(gnutls_privkey_init(&key) >= 0);
        ASSERT_TRUE(gnutls_privkey_generate(key, GNUTLS_PK_EDDSA_ED25519, 256, 0) >= 0);
        Env env = { "v=DKIM1; p=", DKIM_LOOKUP_FOUND };

        _cleanup_(arc_validator_freep) ArcValidator *v = NULL;
        const ArcResult *res;
        const char *name;
        ASSERT_OK(arc_validator_new(NULL, &v));
        ASSERT_ERR(arc_validator_result(v, &res), -EBUSY);
        ASSERT_OK(arc_validator_feed(v, base_message, strlen(base_message)));
        ASSERT_EQ(arc_validator_next_query(v, &name), 0);       /* nothing to look up */
        ASSERT_OK(arc_validator_feed_end(v));
        ASSERT_TRUE(arc_validator_is_done(v));
        ASSERT_OK(arc_validator_result(v, &res));
        ASSERT_EQ(res->status, ARC_STATUS_NONE);
        ASSERT_ERR(arc_validator_feed(v, "x", 1), -EALREADY);

        /* malformed header section: fail, and no seal */
        _cleanup_(arc_validator_freep) ArcValidator *w = NULL;
        ASSERT_OK(validate("not a header\r\n\r\n", 4, &env, &w));
        ASSERT_OK(arc_validator_result(w, &res));
        ASSERT_EQ(res->status, ARC_STATUS_FAIL);
        ArcSeal s = {};
        ArcSealParams p = {
                .domain = "relay.example.net", .selector = "arc", .key = key,
                .algorithm = DKIM_ALGORITHM_ED25519_SHA256, .authserv_id = "relay.example.net",
        };
        ASSERT_ERR(arc_validator_seal(w, &p, &s), -EBADMSG);

        /* parameter checks */
        const char *const with_seal[] = { "from", "arc-seal", NULL };
        p.headers = with_seal;
        ASSERT_ERR(arc_validator_seal(v, &p, &s), -EINVAL);
        p.headers = NULL;
        p.authserv_id = "bad id";
        ASSERT_ERR(arc_validator_seal(v, &p, &s), -EINVAL);
        p.authserv_id = "relay.example.net";
        p.results = "spf=pass\r\nInjected: header";
        ASSERT_ERR(arc_validator_seal(v, &p, &s), -EINVAL);
        p.results = NULL;
        p.cv = ARC_SEAL_CV_FAIL;        /* i=1 must say cv=none */
        ASSERT_ERR(arc_validator_seal(v, &p, &s), -EINVAL);
        p.cv = ARC_SEAL_CV_AUTO;
        ASSERT_OK(arc_validator_seal(v, &p, &s));
        ASSERT_STREQ(s.aar, "ARC-Authentication-Results: i=1; relay.example.net; none\r\n");
        arc_seal_done(&s);
        /* RSA below the signing minimum */
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t small = NULL;
        ASSERT_TRUE(gnutls_privkey_init(&small) >= 0);
        ASSERT_TRUE(gnutls_privkey_generate(small, GNUTLS_PK_RSA, 1024, 0) >= 0);
        p.key = small;
        p.algorithm = DKIM_ALGORITHM_RSA_SHA256;
        ASSERT_ERR(arc_validator_seal(v, &p, &s), -EKEYREJECTED);
}

int main(void) {
        return tap_run();
}
