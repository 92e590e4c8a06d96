/* SPDX-License-Identifier: MIT */
/* DKIM pieces: tag lists, canonicalization, key records, the RFC 8463
 * Appendix A vectors (Ed25519 and RSA over the same message), signing and
 * verifying round trips, l=, x= with an injected clock, limits, lookups
 * that fail, and Authentication-Results collection. */

#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authres.h"
#include "dkim.h"
#include "macro.h"
#include "tap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(DkimVerifier *, dkim_verifier_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(DkimSigner *, dkim_signer_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(DkimSignature *, dkim_signature_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(DkimKey *, dkim_key_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(AuthRes *, authres_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(gnutls_privkey_t, gnutls_privkey_deinit);

/* ---- tag lists ---- */

typedef struct TagCase {
        const char *in;
        int want;
        size_t n;
} TagCase;

static const TagCase tag_cases[] = {
        { "a=1", 0, 1 },
        { "a=1;", 0, 1 },
        { "a=1; ", 0, 1 },
        { " a = 1 ; b=2", 0, 2 },
        { "a=1;\r\n b=2", 0, 2 },
        { "a=\r\n\t1 2\r\n ;b=", 0, 2 },
        { "a_1=x;B9=y", 0, 2 },
        { "", 0, 0 },
        { "a=1;;", -EINVAL, 0 },
        { "a=1;;b=2", -EINVAL, 0 },
        { ";a=1", -EINVAL, 0 },
        { "a=1; a=2", -EINVAL, 0 },
        { "1a=1", -EINVAL, 0 },
        { "_a=1", -EINVAL, 0 },
        { "a-b=1", -EINVAL, 0 },
        { "a", -EINVAL, 0 },
        { "a 1=2", -EINVAL, 0 },
        { "=1", -EINVAL, 0 },
        { "a=1\r\nb=2", -EINVAL, 0 },
        { "a=1\x01", -EINVAL, 0 },
        { "a=1;\r\n", -EINVAL, 0 },     /* CRLF not followed by WSP is not FWS */
};

TEST(tags_table) {
        for (size_t i = 0; i < ELEMENTSOF(tag_cases); i++) {
                DkimTagList l = {};
                int r = dkim_tags_parse(tag_cases[i].in, strlen(tag_cases[i].in), &l);
                if (r != tag_cases[i].want)
                        TAP_FAIL("tag case %zu (%s): got %d want %d", i, tag_cases[i].in, r, tag_cases[i].want);
                if (r == 0 && l.n != tag_cases[i].n)
                        TAP_FAIL("tag case %zu: %zu tags", i, l.n);
                dkim_tag_list_done(&l);
        }
}

TEST(tags_values) {
        DkimTagList l = {};
        const char *s = " v = 1 ;b=ab\r\n cd ; h=from : to;x=";
        ASSERT_OK(dkim_tags_parse(s, strlen(s), &l));
        ASSERT_EQ(l.n, 4);
        const DkimTag *t = dkim_tags_get(&l, "b");
        ASSERT_NOT_NULL(t);
        ASSERT_EQ(t->value_len, strlen("ab\r\n cd"));
        ASSERT_TRUE(dkim_tag_value_has_space(t));
        _cleanup_free_ char *stripped = dkim_tag_value_strip(t);
        ASSERT_STREQ(stripped, "abcd");
        t = dkim_tags_get(&l, "x");
        ASSERT_EQ(t->value_len, 0);
        ASSERT_NULL(dkim_tags_get(&l, "V"));    /* names are case-sensitive */
        t = dkim_tags_get(&l, "v");
        ASSERT_EQ(t->value_len, 1);
        ASSERT_EQ(t->value[0], '1');
        dkim_tag_list_done(&l);
        ASSERT_EQ(l.n, 0);

        /* more than the limit */
        char big[64 * 5 + 16] = "";
        for (unsigned i = 0; i <= DKIM_TAGS_MAX; i++)
                sprintf(big + strlen(big), "a%u=;", i);
        ASSERT_ERR(dkim_tags_parse(big, strlen(big), &l), -E2BIG);
}

/* ---- canonicalization ---- */

typedef struct CanonCase {
        DkimCanon c;
        const char *in, *want;
} CanonCase;

/* RFC 6376 §3.4.6 examples and the edge cases. */
static const CanonCase header_cases[] = {
        { DKIM_CANON_RELAXED, "A: X\r\n", "a:X\r\n" },
        { DKIM_CANON_RELAXED, "B : Y\t\r\n\tZ  \r\n", "b:Y Z\r\n" },
        { DKIM_CANON_RELAXED, "SUBJECT:\t  a  b\t c \r\n", "subject:a b c\r\n" },
        { DKIM_CANON_RELAXED, "X:\r\n", "x:\r\n" },
        { DKIM_CANON_RELAXED, "X:  \r\n \r\n", "x:\r\n" },
        { DKIM_CANON_SIMPLE, "B : Y\t\r\n\tZ  \r\n", "B : Y\t\r\n\tZ  \r\n" },
        { DKIM_CANON_SIMPLE, "A: X", "A: X\r\n" },
};

static const CanonCase body_cases[] = {
        /* RFC 6376 §3.4.6 */
        { DKIM_CANON_RELAXED, " C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n" },
        { DKIM_CANON_SIMPLE, " C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n" },
        { DKIM_CANON_SIMPLE, "", "\r\n" },
        { DKIM_CANON_RELAXED, "", "" },
        { DKIM_CANON_SIMPLE, "\r\n\r\n", "\r\n" },
        { DKIM_CANON_RELAXED, "\r\n \r\n\t\r\n", "" },
        { DKIM_CANON_SIMPLE, "a", "a\r\n" },
        { DKIM_CANON_RELAXED, "a  ", "a\r\n" },
        { DKIM_CANON_SIMPLE, "a\n\nb\n\n", "a\r\n\r\nb\r\n" },
        { DKIM_CANON_RELAXED, "a\r\n\r\n  \r\nb", "a\r\n\r\n\r\nb\r\n" },
        { DKIM_CANON_SIMPLE, "a\rb\r", "a\rb\r\r\n" },
        { DKIM_CANON_SIMPLE, " \r\n", " \r\n" },
        { DKIM_CANON_RELAXED, "  x", " x\r\n" },
};

TEST(canon_headers) {
        for (size_t i = 0; i < ELEMENTSOF(header_cases); i++) {
                const CanonCase *c = &header_cases[i];
                char out[256];
                size_t n = dkim_canon_header(c->c, c->in, strlen(c->in), false, out);
                out[n] = 0;
                if (strcmp(out, c->want) != 0)
                        TAP_FAIL("header case %zu: \"%s\"", i, out);
        }
        char out[64];
        size_t n = dkim_canon_header(DKIM_CANON_RELAXED, "A: b \r\n", 7, true, out);
        ASSERT_EQ(n, 3);
        ASSERT_TRUE(memcmp(out, "a:b", 3) == 0);
}

TEST(canon_body) {
        for (size_t i = 0; i < ELEMENTSOF(body_cases); i++) {
                const CanonCase *c = &body_cases[i];
                _cleanup_free_ char *out = NULL;
                size_t n;
                ASSERT_OK(dkim_canon_body(c->c, c->in, strlen(c->in), &out, &n));
                if (n != strlen(c->want) || memcmp(out, c->want, n) != 0)
                        TAP_FAIL("body case %zu: \"%s\"", i, out);
        }
}

static void hash_hex(const uint8_t *d, char *out) {
        for (size_t i = 0; i < DKIM_SHA256_LEN; i++)
                sprintf(out + 2 * i, "%02x", d[i]);
}

/* Streaming gives the same digest for every chunking, and l= cuts the
 * canonical body at that length. */
TEST(body_hash_streaming) {
        static const char body[] = "line one  \r\n\tline two\r\n\r\nlast\r\n\r\n\r\n";
        size_t n = strlen(body);

        for (DkimCanon c = 0; c < _DKIM_CANON_MAX; c++) {
                _cleanup_free_ char *canon = NULL;
                size_t canon_len;
                uint8_t want[DKIM_SHA256_LEN], got[DKIM_SHA256_LEN];
                ASSERT_OK(dkim_canon_body(c, body, n, &canon, &canon_len));
                ASSERT_OK(gnutls_hash_fast(GNUTLS_DIG_SHA256, canon, canon_len, want));

                for (size_t chunk = 1; chunk <= n; chunk++) {
                        DkimBodyHash *b = NULL;
                        uint64_t len = 0;
                        ASSERT_OK(dkim_body_hash_new(c, DKIM_BODY_NO_LIMIT, &b));
                        for (size_t off = 0; off < n; off += chunk)
                                ASSERT_OK(dkim_body_hash_feed(b, body + off, MIN(chunk, n - off)));
                        ASSERT_OK(dkim_body_hash_finish(b, got, &len));
                        ASSERT_EQ(len, canon_len);
                        char hw[65], hg[65];
                        hash_hex(want, hw);
                        hash_hex(got, hg);
                        ASSERT_STREQ(hg, hw);
                        ASSERT_ERR(dkim_body_hash_feed(b, "x", 1), -EALREADY);
                        dkim_body_hash_free(b);
                }

                for (uint64_t limit = 0; limit <= canon_len; limit += 5) {
                        DkimBodyHash *b = NULL;
                        uint64_t len = 0;
                        ASSERT_OK(dkim_body_hash_new(c, limit, &b));
                        ASSERT_OK(dkim_body_hash_feed(b, body, n));
                        ASSERT_OK(dkim_body_hash_finish(b, got, &len));
                        ASSERT_EQ(len, canon_len);      /* the full length, for the l= check */
                        ASSERT_OK(gnutls_hash_fast(GNUTLS_DIG_SHA256, canon, (size_t) limit, want));
                        ASSERT_TRUE(memcmp(got, want, DKIM_SHA256_LEN) == 0);
                        dkim_body_hash_free(b);
                }
        }
}

/* RFC 6376 §3.4.3/3.4.4 empty bodies: known SHA-256 values. */
TEST(body_hash_empty) {
        uint8_t d[DKIM_SHA256_LEN];
        DkimBodyHash *b = NULL;
        ASSERT_OK(dkim_body_hash_new(DKIM_CANON_SIMPLE, DKIM_BODY_NO_LIMIT, &b));
        ASSERT_OK(dkim_body_hash_finish(b, d, NULL));
        _cleanup_free_ char *s = dkim_base64_encode(d, sizeof d);
        ASSERT_STREQ(s, "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=");
        dkim_body_hash_free(b);
        ASSERT_OK(dkim_body_hash_new(DKIM_CANON_RELAXED, DKIM_BODY_NO_LIMIT, &b));
        ASSERT_OK(dkim_body_hash_finish(b, d, NULL));
        _cleanup_free_ char *r = dkim_base64_encode(d, sizeof d);
        ASSERT_STREQ(r, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
        dkim_body_hash_free(b);
}

TEST(base64) {
        uint8_t *p = NULL;
        size_t n;
        ASSERT_OK(dkim_base64_decode("aGVs bG8=", 9, &p, &n));
        ASSERT_EQ(n, 5);
        ASSERT_TRUE(memcmp(p, "hello", 5) == 0);
        free(p);
        ASSERT_OK(dkim_base64_decode("", 0, &p, &n));
        ASSERT_EQ(n, 0);
        free(p);
        ASSERT_ERR(dkim_base64_decode("aGVsbG8", 7, &p, &n), 0);        /* unpadded is accepted */
        free(p);
        ASSERT_ERR(dkim_base64_decode("aGVsbG8==", 9, &p, &n), -EINVAL);
        ASSERT_ERR(dkim_base64_decode("aGV=sbG8", 8, &p, &n), -EINVAL);
        ASSERT_ERR(dkim_base64_decode("a", 1, &p, &n), -EINVAL);
        ASSERT_ERR(dkim_base64_decode("aGV!", 4, &p, &n), -EINVAL);
        _cleanup_free_ char *e = dkim_base64_encode((const uint8_t *) "hello", 5);
        ASSERT_STREQ(e, "aGVsbG8=");
}

TEST(domains) {
        ASSERT_TRUE(dkim_domain_valid("example.org", 11));
        ASSERT_TRUE(dkim_domain_valid("a-b.c", 5));
        ASSERT_TRUE(dkim_domain_valid("b\xc3\xbc" "cher.example", 14));
        ASSERT_FALSE(dkim_domain_valid("example...", 10));
        ASSERT_FALSE(dkim_domain_valid(".example", 8));
        ASSERT_FALSE(dkim_domain_valid("example.", 8));
        ASSERT_FALSE(dkim_domain_valid("-a.b", 4));
        ASSERT_FALSE(dkim_domain_valid("a-.b", 4));
        ASSERT_FALSE(dkim_domain_valid("a b", 3));
        ASSERT_FALSE(dkim_domain_valid("", 0));
}

/* ---- key records ---- */

#define RSA1024_P "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"
#define ED25519_P "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="

typedef struct KeyCase {
        const char *txt;
        int want;
        DkimAlgorithm alg;
        unsigned bits;
} KeyCase;

static const KeyCase key_cases[] = {
        { "v=DKIM1; k=rsa; p=" RSA1024_P, 0, DKIM_ALGORITHM_RSA_SHA256, 1024 },
        { "p=" RSA1024_P, 0, DKIM_ALGORITHM_RSA_SHA256, 1024 },
        { "v=DKIM1; h=sha1:sha256; s=email; t=y:s; p=" RSA1024_P, 0, DKIM_ALGORITHM_RSA_SHA256, 1024 },
        { "v=DKIM1; k=ed25519; p=" ED25519_P, 0, DKIM_ALGORITHM_ED25519_SHA256, 256 },
        { "v=DKIM1; p=", 0, DKIM_ALGORITHM_RSA_SHA256, 0 },          /* revoked */
        { "k=rsa; v=DKIM1; p=" RSA1024_P, -EINVAL, 0, 0 },          /* v= not first */
        { "v=DKIM2; p=" RSA1024_P, -EINVAL, 0, 0 },
        { "v=DKIM1; k=dsa; p=" RSA1024_P, -EINVAL, 0, 0 },
        { "v=DKIM1; h=sha1; p=" RSA1024_P, -EINVAL, 0, 0 },
        { "v=DKIM1; s=other; p=" RSA1024_P, -EINVAL, 0, 0 },
        { "v=DKIM1; k=rsa", -EINVAL, 0, 0 },
        { "v=DKIM1; k=rsa; omgwhatsgoingon", -EINVAL, 0, 0 },
        { "v=DKIM1; k=rsa; p=!!!!", -EINVAL, 0, 0 },
        { "v=DKIM1; k=rsa; p=aGVsbG8=", -EINVAL, 0, 0 },
        { "v=DKIM1; k=ed25519; p=" RSA1024_P, -EINVAL, 0, 0 },
};

TEST(key_records) {
        for (size_t i = 0; i < ELEMENTSOF(key_cases); i++) {
                const KeyCase *c = &key_cases[i];
                _cleanup_(dkim_key_freep) DkimKey *k = NULL;
                const char *why = NULL;
                int r = dkim_key_parse(c->txt, strlen(c->txt), &k, &why);
                if (r != c->want)
                        TAP_FAIL("key case %zu: got %d want %d", i, r, c->want);
                if (r < 0) {
                        ASSERT_NOT_NULL(why);
                        continue;
                }
                ASSERT_EQ(k->algorithm, c->alg);
                ASSERT_EQ(k->bits, c->bits);
        }
}

/* A bare PKCS#1 RSAPublicKey in p= (some publishers do this). */
TEST(key_pkcs1) {
        _cleanup_(dkim_key_freep) DkimKey *spki = NULL, *raw = NULL;
        uint8_t *der = NULL;
        size_t n;
        ASSERT_OK(dkim_key_parse("p=" RSA1024_P, strlen("p=" RSA1024_P), &spki, NULL));
        ASSERT_OK(dkim_base64_decode(RSA1024_P, strlen(RSA1024_P), &der, &n));
        /* SPKI header: 30 81 9f 30 0d ... 05 00 03 81 8d 00 = 22 bytes */
        _cleanup_free_ char *b64 = dkim_base64_encode(der + 22, n - 22);
        free(der);
        _cleanup_free_ char *txt = NULL;
        ASSERT_TRUE(asprintf(&txt, "v=DKIM1; p=%s", b64) > 0);
        ASSERT_OK(dkim_key_parse(txt, strlen(txt), &raw, NULL));
        ASSERT_EQ(raw->bits, 1024);
}

/* ---- signatures ---- */

typedef struct SigCase {
        DkimSigKind kind;
        const char *value;
        bool ok;
} SigCase;

#define BH "bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=AAAA"
static const SigCase sig_cases[] = {
        { DKIM_SIG_DKIM, "v=1; a=rsa-sha256; d=example.org; s=s; h=from; " BH, true },
        { DKIM_SIG_DKIM, "v=1; a=rsa-sha256; d=example.org; s=s; h=From:to; l=10; t=1; x=2; q=dns/txt; i=a@sub.example.org; " BH, true },
        { DKIM_SIG_DKIM, "a=rsa-sha256; d=example.org; s=s; h=from; " BH, false },     /* no v= */
        { DKIM_SIG_DKIM, "v=2; a=rsa-sha256; d=example.org; s=s; h=from; " BH, false },
        { DKIM_SIG_DKIM, "v=1; a=rsa-sha1; d=example.org; s=s; h=from; " BH, false },
        { DKIM_SIG_DKIM, "v=1; a=rsa-sha256; d=example.org; s=s; h=to; " BH, false },  /* From not signed */
        { DKIM_SIG_DKIM, "v=1; a=rsa-sha256; d=example.org; s=s; h=from; i=a@example.com; " BH, false },
        { DKIM_SIG_DKIM, "v=1; a=rsa-sha256; d=example.org; s=s; h=from; i=a@badexample.org; " BH, false },
        { DKIM_SIG_DKIM, "v=1; a=rsa-sha256; d=example.org; s=s; h=from; t=5; x=4; " BH, false },
        { DKIM_SIG_DKIM, "v=1; a=rsa-sha256; d=example.org; s=s; h=from; q=http; " BH, false },
        { DKIM_SIG_DKIM, "v=1; a=rsa-sha256; d=example.org; s=s; h=from; c=fancy; " BH, false },
        { DKIM_SIG_DKIM, "v=1; a=rsa-sha256; d=example.org; s=s; h=from; l=x; " BH, false },
        { DKIM_SIG_DKIM, "v=1; a=rsa-sha256; d=example.org; s=s; h=from; bh=AAAA; b=AAAA", false },
        { DKIM_SIG_AMS, "i=1; a=rsa-sha256; d=example.org; s=s; h=from; " BH, true },
        { DKIM_SIG_AMS, "i=51; a=rsa-sha256; d=example.org; s=s; h=from; " BH, false },
        { DKIM_SIG_AMS, "i=0; a=rsa-sha256; d=example.org; s=s; h=from; " BH, false },
        { DKIM_SIG_AMS, "i=1; a=rsa-sha256; d=example.org; s=s; h=from:arc-seal; " BH, false },
        { DKIM_SIG_AS, "i=1; a=rsa-sha256; cv=none; d=example.org; s=s; b=AAAA", true },
        { DKIM_SIG_AS, "i=1; a=rsa-sha256; cv=maybe; d=example.org; s=s; b=AAAA", false },
        { DKIM_SIG_AS, "i=1; a=rsa-sha256; d=example.org; s=s; b=AAAA", false },
        { DKIM_SIG_AS, "i=1; a=rsa-sha256; cv=none; d=example.org; s=s; h=from; b=AAAA", false },
        { DKIM_SIG_AS, "i=1; a=rsa-sha256; cv=none; d=example.org; s=s; b=", false },
        { DKIM_SIG_AS, "i=1; a=rsa-sha256; cv=none; d=example.org; s=s; t=; b=AAAA", false },
};

TEST(signatures) {
        for (size_t i = 0; i < ELEMENTSOF(sig_cases); i++) {
                const SigCase *c = &sig_cases[i];
                _cleanup_(dkim_signature_freep) DkimSignature *s = NULL;
                const char *why = NULL;
                int r = dkim_signature_parse(c->kind, c->value, strlen(c->value), &s, &why);
                if ((r == 0) != c->ok)
                        TAP_FAIL("sig case %zu: got %d (%s)", i, r, why ? why : "-");
                if (r < 0)
                        ASSERT_NOT_NULL(why);
        }
        _cleanup_(dkim_signature_freep) DkimSignature *s = NULL;
        const char *v = sig_cases[1].value;
        ASSERT_OK(dkim_signature_parse(DKIM_SIG_DKIM, v, strlen(v), &s, NULL));
        ASSERT_STREQ(s->domain, "example.org");
        ASSERT_EQ(s->n_headers, 2);
        ASSERT_STREQ(s->headers[0], "from");
        ASSERT_TRUE(s->has_length);
        ASSERT_EQ(s->length, 10);
        ASSERT_EQ(s->header_canon, DKIM_CANON_SIMPLE);
        ASSERT_STREQ(s->identity, "a@sub.example.org");
}

TEST(strip_b) {
        const char *f = "DKIM-Signature: a=1; b=abc\r\n def; bh=xyz; c=d\r\n";
        _cleanup_free_ char *out = NULL;
        size_t n;
        ASSERT_OK(dkim_field_strip_b(f, strlen(f), &out, &n));
        ASSERT_STREQ(out, "DKIM-Signature: a=1; b=; bh=xyz; c=d\r\n");
        ASSERT_EQ(n, strlen(out));
        ASSERT_ERR(dkim_field_strip_b("X: bh=1", 7, &out, &n), -EINVAL);
}

/* ---- RFC 8463 Appendix A ---- */

#define RFC8463_MESSAGE \
        "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n" \
        " d=football.example.com; i=@football.example.com;\r\n" \
        " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n" \
        " subject : date : message-id : from : subject : date;\r\n" \
        " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n" \
        " b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n" \
        " Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n" \
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n" \
        " d=football.example.com; i=@football.example.com;\r\n" \
        " q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n" \
        " date : message-id : from : subject : date;\r\n" \
        " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n" \
        " b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n" \
        " DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n" \
        " dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n" \
        "From: Joe SixPack <joe@football.example.com>\r\n" \
        "To: Suzie Q <suzie@shopping.example.net>\r\n" \
        "Subject: Is dinner ready?\r\n" \
        "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n" \
        "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n" \
        "\r\n" \
        "Hi.\r\n" \
        "\r\n" \
        "We lost the game.  Are you hungry yet?\r\n" \
        "\r\n" \
        "Joe.\r\n"

/* RFC 8032 §7.1 test 1 secret key, as RFC 8463 A.1 uses. */
#define RFC8463_ED25519_PEM \
        "-----BEGIN PRIVATE KEY-----\n" \
        "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n" \
        "-----END PRIVATE KEY-----\n"

typedef struct Dns {
        const char *name, *txt;
        DkimLookup lookup;
} Dns;

static const Dns rfc8463_dns[] = {
        { "brisbane._domainkey.football.example.com", "v=DKIM1; k=ed25519; p=" ED25519_P, DKIM_LOOKUP_FOUND },
        { "test._domainkey.football.example.com", "v=DKIM1; k=rsa; p=" RSA1024_P, DKIM_LOOKUP_FOUND },
        {},
};

/* Feeds msg in chunks, answers from dns (unknown names: NOT_FOUND). */
static int run_verifier(const char *msg, size_t chunk, const Dns *dns, const DkimVerifyParams *params, DkimVerifier **ret) {
        DkimVerifier *v = NULL;
        const char *name;
        size_t n = strlen(msg);
        int r;

        r = dkim_verifier_new(params, &v);
        if (r < 0)
                return r;
        for (size_t off = 0; off < n; off += chunk) {
                r = dkim_verifier_feed(v, msg + off, MIN(chunk, n - off));
                if (r < 0)
                        goto fail;
        }
        r = dkim_verifier_feed_end(v);
        if (r < 0)
                goto fail;
        while (dkim_verifier_next_query(v, &name) > 0) {
                const Dns *d = dns;
                while (d->name && strcmp(d->name, name) != 0)
                        d++;
                size_t l = d->txt ? strlen(d->txt) : 0;
                r = dkim_verifier_answer(v, name, d->name ? d->lookup : DKIM_LOOKUP_NOT_FOUND, &d->txt, &l, d->txt ? 1 : 0);
                if (r < 0)
                        goto fail;
        }
        if (!dkim_verifier_is_done(v)) {
                r = -EIO;
                goto fail;
        }
        *ret = v;
        return 0;
fail:
        dkim_verifier_free(v);
        return r;
}

TEST(rfc8463_verify) {
        for (size_t chunk = 1; chunk < 200; chunk += 37) {
                _cleanup_(dkim_verifier_freep) DkimVerifier *v = NULL;
                const DkimResult *res;
                size_t n;
                ASSERT_OK(run_verifier(RFC8463_MESSAGE, chunk, rfc8463_dns, &(DkimVerifyParams) { .now = 1528637909 }, &v));
                ASSERT_OK(dkim_verifier_results(v, &res, &n));
                ASSERT_EQ(n, 2);
                if (res[0].status != DKIM_STATUS_PASS || res[1].status != DKIM_STATUS_PASS)
                        TAP_FAIL("%s (%s), %s (%s)", dkim_status_to_string(res[0].status), res[0].reason,
                                 dkim_status_to_string(res[1].status), res[1].reason);
                ASSERT_EQ(res[0].signature->algorithm, DKIM_ALGORITHM_ED25519_SHA256);
                ASSERT_EQ(res[0].key_bits, 256);
                ASSERT_EQ(res[1].key_bits, 1024);
        }
}

/* Our Ed25519 signing input matches the RFC's: signing the same digest
 * with the RFC's key reproduces its b= (Ed25519 is deterministic). */
TEST(rfc8463_sign_input) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        const char *m = RFC8463_MESSAGE;
        MailHeaders *hh = NULL;
        ASSERT_OK(mail_headers_parse(m, strlen(m), NULL, &hh, NULL));
        const MailHeaderField *sigf = mail_headers_get(hh, 0);
        _cleanup_(dkim_signature_freep) DkimSignature *s = NULL;
        ASSERT_OK(dkim_signature_parse(DKIM_SIG_DKIM, sigf->value, sigf->value_len, &s, NULL));
        _cleanup_free_ char *stripped = NULL;
        size_t sl;
        ASSERT_OK(dkim_field_strip_b(sigf->raw, sigf->raw_len, &stripped, &sl));
        uint8_t digest[DKIM_SHA256_LEN];
        ASSERT_OK(dkim_hash_headers(s->header_canon, mail_headers_fields(hh), mail_headers_count(hh),
                                    s->headers, s->n_headers, stripped, sl, digest));
        ASSERT_OK(dkim_privkey_load_pem(RFC8463_ED25519_PEM, strlen(RFC8463_ED25519_PEM), &key));
        _cleanup_free_ uint8_t *sig = NULL;
        size_t n;
        ASSERT_OK(dkim_privkey_sign(key, DKIM_ALGORITHM_ED25519_SHA256, 0, digest, &sig, &n));
        _cleanup_free_ char *b64 = dkim_base64_encode(sig, n);
        ASSERT_STREQ(b64, s->signature_b64);
        /* the wrong algorithm for the key is refused */
        ASSERT_ERR(dkim_privkey_sign(key, DKIM_ALGORITHM_RSA_SHA256, 0, digest, &sig, &n), -EINVAL);
        mail_headers_free(hh);
}

TEST(rfc8463_tampered) {
        _cleanup_free_ char *m = strdup(RFC8463_MESSAGE);
        char *p = strstr(m, "dinner");
        p[0] = 'D';
        _cleanup_(dkim_verifier_freep) DkimVerifier *v = NULL;
        const DkimResult *res;
        size_t n;
        ASSERT_OK(run_verifier(m, 4096, rfc8463_dns, NULL, &v));
        ASSERT_OK(dkim_verifier_results(v, &res, &n));
        ASSERT_EQ(res[0].status, DKIM_STATUS_FAIL);
        ASSERT_EQ(res[1].status, DKIM_STATUS_FAIL);

        _cleanup_free_ char *m2 = strdup(RFC8463_MESSAGE);
        p = strstr(m2, "hungry");
        p[0] = 'H';
        _cleanup_(dkim_verifier_freep) DkimVerifier *v2 = NULL;
        ASSERT_OK(run_verifier(m2, 4096, rfc8463_dns, NULL, &v2));
        ASSERT_OK(dkim_verifier_results(v2, &res, &n));
        ASSERT_EQ(res[0].status, DKIM_STATUS_FAIL);
        ASSERT_STREQ(res[0].reason, "body hash does not match");
}

TEST(lookups_fail) {
        static const Dns dns[] = {
                { "brisbane._domainkey.football.example.com", NULL, DKIM_LOOKUP_TEMPFAIL },
                { "test._domainkey.football.example.com", "v=DKIM1; k=rsa; p=", DKIM_LOOKUP_FOUND },
                {},
        };
        _cleanup_(dkim_verifier_freep) DkimVerifier *v = NULL;
        const DkimResult *res;
        size_t n;
        ASSERT_OK(run_verifier(RFC8463_MESSAGE, 100, dns, NULL, &v));
        ASSERT_OK(dkim_verifier_results(v, &res, &n));
        ASSERT_EQ(res[0].status, DKIM_STATUS_TEMPERROR);
        ASSERT_EQ(res[1].status, DKIM_STATUS_PERMERROR);        /* revoked */

        _cleanup_(dkim_verifier_freep) DkimVerifier *w = NULL;
        static const Dns none[] = { {} };
        ASSERT_OK(run_verifier(RFC8463_MESSAGE, 100, none, NULL, &w));
        ASSERT_OK(dkim_verifier_results(w, &res, &n));
        ASSERT_EQ(res[0].status, DKIM_STATUS_PERMERROR);
        ASSERT_STREQ(res[0].reason, "no key record");
}

TEST(answers_out_of_order) {
        _cleanup_(dkim_verifier_freep) DkimVerifier *v = NULL;
        const char *a, *b;
        const DkimResult *res;
        size_t n;
        const char *m = RFC8463_MESSAGE;
        const char *body = strstr(m, "\r\n\r\n") + 4;

        ASSERT_OK(dkim_verifier_new(NULL, &v));
        /* headers only: the queries are known before the body arrives */
        ASSERT_OK(dkim_verifier_feed(v, m, (size_t) (body - m)));
        ASSERT_EQ(dkim_verifier_next_query(v, &a), 1);
        ASSERT_EQ(dkim_verifier_next_query(v, &b), 1);
        ASSERT_EQ(dkim_verifier_next_query(v, &b), 0);
        ASSERT_OK(dkim_verifier_next_query(v, &b));
        ASSERT_ERR(dkim_verifier_results(v, &res, &n), -EBUSY);
        /* answer the second first, then stream the body, then the first */
        b = "test._domainkey.football.example.com";
        const char *t = rfc8463_dns[1].txt;
        size_t tl = strlen(t);
        ASSERT_OK(dkim_verifier_answer(v, b, DKIM_LOOKUP_FOUND, &t, &tl, 1));
        ASSERT_ERR(dkim_verifier_answer(v, b, DKIM_LOOKUP_FOUND, &t, &tl, 1), -EALREADY);
        ASSERT_ERR(dkim_verifier_answer(v, "other._domainkey.x", DKIM_LOOKUP_FOUND, &t, &tl, 1), -ENOENT);
        ASSERT_OK(dkim_verifier_feed(v, body, strlen(body)));
        ASSERT_OK(dkim_verifier_feed_end(v));
        ASSERT_FALSE(dkim_verifier_is_done(v));
        /* several records: the first that is a DKIM key wins */
        const char *two[] = { "v=spf1 -all", rfc8463_dns[0].txt };
        size_t two_len[] = { strlen(two[0]), strlen(two[1]) };
        ASSERT_OK(dkim_verifier_answer(v, "BRISBANE._domainkey.football.example.com", DKIM_LOOKUP_FOUND, two, two_len, 2));
        ASSERT_TRUE(dkim_verifier_is_done(v));
        ASSERT_OK(dkim_verifier_results(v, &res, &n));
        ASSERT_EQ(res[0].status, DKIM_STATUS_PASS);
        ASSERT_EQ(res[1].status, DKIM_STATUS_PASS);
}

/* ---- signing ---- */

static char *key_record(gnutls_privkey_t key) {
        gnutls_pubkey_t pub;
        gnutls_datum_t d = {};
        char *txt = NULL;
        unsigned bits;

        if (gnutls_pubkey_init(&pub) < 0 || gnutls_pubkey_import_privkey(pub, key, 0, 0) < 0)
                return NULL;
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

static const char test_message[] =
        "From: Alice <alice@example.org>\r\n"
        "To: Bob <bob@example.net>\r\n"
        "Subject: signing  test\r\n"
        "Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
        "Message-ID: <1@example.org>\r\n"
        "Received: from somewhere\r\n"
        "\r\n"
        "Hello  Bob,\r\n"
        "\r\n"
        "this is the body.   \r\n"
        "\r\n\r\n";

static char *sign_message(gnutls_privkey_t key, DkimAlgorithm alg, DkimCanon hc, DkimCanon bc, size_t chunk) {
        _cleanup_(dkim_signer_freep) DkimSigner *s = NULL;
        DkimSignParams p = {
                .domain = "example.org", .selector = "sel", .key = key, .algorithm = alg,
                .header_canon = hc, .body_canon = bc, .timestamp = 1764151200, .expire_after = 3600,
        };
        char *field = NULL, *out = NULL;
        size_t n = strlen(test_message);

        if (dkim_signer_new(&p, &s) < 0)
                return NULL;
        for (size_t off = 0; off < n; off += chunk)
                if (dkim_signer_feed(s, test_message + off, MIN(chunk, n - off)) < 0)
                        return NULL;
        if (dkim_signer_feed_end(s) < 0 || dkim_signer_sign(s, &field) < 0)
                return NULL;
        if (asprintf(&out, "%s%s", field, test_message) < 0)
                out = NULL;
        free(field);
        return out;
}

static void roundtrip(gnutls_privkey_t key, DkimAlgorithm alg) {
        _cleanup_free_ char *txt = key_record(key);
        ASSERT_NOT_NULL(txt);
        Dns dns[] = { { "sel._domainkey.example.org", txt, DKIM_LOOKUP_FOUND }, {} };

        for (DkimCanon hc = 0; hc < _DKIM_CANON_MAX; hc++)
                for (DkimCanon bc = 0; bc < _DKIM_CANON_MAX; bc++) {
                        _cleanup_free_ char *signed_msg = sign_message(key, alg, hc, bc, 7 + hc + 2 * bc);
                        ASSERT_NOT_NULL(signed_msg);
                        /* folded to 78 columns */
                        for (const char *l = signed_msg; *l && l < strstr(signed_msg, "\r\nFrom:");) {
                                const char *e = strstr(l, "\r\n");
                                ASSERT_TRUE(e - l <= 78);
                                l = e + 2;
                        }
                        _cleanup_(dkim_verifier_freep) DkimVerifier *v = NULL;
                        const DkimResult *res;
                        size_t n;
                        ASSERT_OK(run_verifier(signed_msg, 13, dns, &(DkimVerifyParams) { .now = 1764151200 }, &v));
                        ASSERT_OK(dkim_verifier_results(v, &res, &n));
                        ASSERT_EQ(n, 1);
                        if (res[0].status != DKIM_STATUS_PASS)
                                TAP_FAIL("%s/%s: %s (%s)\n%s", dkim_canon_to_string(hc), dkim_canon_to_string(bc),
                                         dkim_status_to_string(res[0].status), res[0].reason, signed_msg);

                        /* x= is honoured with the injected clock */
                        _cleanup_(dkim_verifier_freep) DkimVerifier *late = NULL;
                        ASSERT_OK(run_verifier(signed_msg, 4096, dns, &(DkimVerifyParams) { .now = 1764151200 + 3601 }, &late));
                        ASSERT_OK(dkim_verifier_results(late, &res, &n));
                        ASSERT_EQ(res[0].status, DKIM_STATUS_PERMERROR);
                        ASSERT_STREQ(res[0].reason, "signature expired");

                        /* over-signing: an added Subject breaks it */
                        _cleanup_free_ char *added = NULL;
                        ASSERT_TRUE(asprintf(&added, "Subject: injected\r\n%s", signed_msg) > 0);
                        _cleanup_(dkim_verifier_freep) DkimVerifier *v3 = NULL;
                        ASSERT_OK(run_verifier(added, 4096, dns, &(DkimVerifyParams) { .now = 1764151200 }, &v3));
                        ASSERT_OK(dkim_verifier_results(v3, &res, &n));
                        ASSERT_EQ(res[0].status, DKIM_STATUS_FAIL);

                        /* an added Received (not signed) does not */
                        _cleanup_free_ char *recv = NULL;
                        ASSERT_TRUE(asprintf(&recv, "Received: from relay\r\n%s", signed_msg) > 0);
                        _cleanup_(dkim_verifier_freep) DkimVerifier *v4 = NULL;
                        ASSERT_OK(run_verifier(recv, 4096, dns, &(DkimVerifyParams) { .now = 1764151200 }, &v4));
                        ASSERT_OK(dkim_verifier_results(v4, &res, &n));
                        ASSERT_EQ(res[0].status, DKIM_STATUS_PASS);
                }
}

TEST(sign_rsa2048) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        ASSERT_TRUE(gnutls_privkey_init(&key) >= 0);
        ASSERT_TRUE(gnutls_privkey_generate(key, GNUTLS_PK_RSA, 2048, 0) >= 0);
        roundtrip(key, DKIM_ALGORITHM_RSA_SHA256);
}

TEST(sign_ed25519) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        ASSERT_OK(dkim_privkey_load_pem(RFC8463_ED25519_PEM, strlen(RFC8463_ED25519_PEM), &key));
        roundtrip(key, DKIM_ALGORITHM_ED25519_SHA256);
}

TEST(sign_refuses_small_rsa) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        _cleanup_(dkim_signer_freep) DkimSigner *s = NULL;
        char *out = NULL;
        ASSERT_TRUE(gnutls_privkey_init(&key) >= 0);
        ASSERT_TRUE(gnutls_privkey_generate(key, GNUTLS_PK_RSA, 1024, 0) >= 0);
        DkimSignParams p = {
                .domain = "example.org", .selector = "sel", .key = key,
                .header_canon = DKIM_CANON_RELAXED, .body_canon = DKIM_CANON_RELAXED,
        };
        ASSERT_OK(dkim_signer_new(&p, &s));
        ASSERT_OK(dkim_signer_feed(s, test_message, strlen(test_message)));
        ASSERT_ERR(dkim_signer_sign(s, &out), -EBUSY);
        ASSERT_OK(dkim_signer_feed_end(s));
        ASSERT_ERR(dkim_signer_sign(s, &out), -EKEYREJECTED);
        p.domain = "bad domain";
        DkimSigner *bad = NULL;
        ASSERT_ERR(dkim_signer_new(&p, &bad), -EINVAL);
}

TEST(sign_needs_one_from) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        ASSERT_OK(dkim_privkey_load_pem(RFC8463_ED25519_PEM, strlen(RFC8463_ED25519_PEM), &key));
        static const char *const msgs[] = {
                "From: a@example.org\r\nFrom: b@example.org\r\n\r\nbody\r\n",
                "To: a@example.org\r\n\r\nbody\r\n",
                " broken\r\n\r\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(msgs); i++) {
                _cleanup_(dkim_signer_freep) DkimSigner *s = NULL;
                char *out = NULL;
                DkimSignParams p = {
                        .domain = "example.org", .selector = "sel", .key = key,
                        .algorithm = DKIM_ALGORITHM_ED25519_SHA256,
                };
                ASSERT_OK(dkim_signer_new(&p, &s));
                ASSERT_OK(dkim_signer_feed(s, msgs[i], strlen(msgs[i])));
                ASSERT_OK(dkim_signer_feed_end(s));
                ASSERT_ERR(dkim_signer_sign(s, &out), -EBADMSG);
        }
}

/* The default h= over-signs exactly the listed singletons. */
TEST(sign_default_headers) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        ASSERT_OK(dkim_privkey_load_pem(RFC8463_ED25519_PEM, strlen(RFC8463_ED25519_PEM), &key));
        _cleanup_free_ char *m = sign_message(key, DKIM_ALGORITHM_ED25519_SHA256, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED, 4096);
        ASSERT_NOT_NULL(m);
        MailHeaders *h = NULL;
        ASSERT_OK(mail_headers_parse(m, strlen(m), NULL, &h, NULL));
        const MailHeaderField *f = mail_headers_get(h, 0);
        _cleanup_(dkim_signature_freep) DkimSignature *s = NULL;
        ASSERT_OK(dkim_signature_parse(DKIM_SIG_DKIM, f->value, f->value_len, &s, NULL));
        mail_headers_free(h);
        _cleanup_free_ char *joined = calloc(1, 1024);
        for (size_t i = 0; i < s->n_headers; i++) {
                strcat(joined, s->headers[i]);
                strcat(joined, ":");
        }
        ASSERT_STREQ(joined, "from:from:to:to:cc:subject:subject:date:date:message-id:message-id:reply-to:");
        ASSERT_EQ(s->header_canon, DKIM_CANON_RELAXED);
        ASSERT_TRUE(s->has_expire);
        ASSERT_FALSE(s->has_length);
}

/* l= : a signature over a prefix still verifies after content is appended
 * (which is why l= is risky), and fails when l= exceeds the body. */
TEST(length_limit) {
        _cleanup_(gnutls_privkey_deinitp) gnutls_privkey_t key = NULL;
        ASSERT_OK(dkim_privkey_load_pem(RFC8463_ED25519_PEM, strlen(RFC8463_ED25519_PEM), &key));
        _cleanup_free_ char *txt = key_record(key);
        Dns dns[] = { { "sel._domainkey.example.org", txt, DKIM_LOOKUP_FOUND }, {} };

        /* Build "DKIM-Signature: ... l=N" by hand: hash, sign, insert. */
        const char *body = "Hello\r\nWorld\r\n";
        const char *hdr = "From: a@example.org\r\n";
        uint8_t bh[DKIM_SHA256_LEN], digest[DKIM_SHA256_LEN];
        DkimBodyHash *b = NULL;
        ASSERT_OK(dkim_body_hash_new(DKIM_CANON_RELAXED, 7, &b));
        ASSERT_OK(dkim_body_hash_feed(b, body, strlen(body)));
        ASSERT_OK(dkim_body_hash_finish(b, bh, NULL));
        dkim_body_hash_free(b);
        _cleanup_free_ char *bh64 = dkim_base64_encode(bh, sizeof bh);
        _cleanup_free_ char *unsigned_field = NULL;
        ASSERT_TRUE(asprintf(&unsigned_field, "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.org; s=sel; h=from; l=7; bh=%s; b=", bh64) > 0);
        MailHeaders *h = NULL;
        ASSERT_OK(mail_headers_parse(hdr, strlen(hdr), NULL, &h, NULL));
        char *names[] = { (char *) "from" };
        ASSERT_OK(dkim_hash_headers(DKIM_CANON_RELAXED, mail_headers_fields(h), mail_headers_count(h), names, 1,
                                    unsigned_field, strlen(unsigned_field), digest));
        mail_headers_free(h);
        _cleanup_free_ uint8_t *sig = NULL;
        size_t sl;
        ASSERT_OK(dkim_privkey_sign(key, DKIM_ALGORITHM_ED25519_SHA256, 0, digest, &sig, &sl));
        _cleanup_free_ char *b64 = dkim_base64_encode(sig, sl);

        const char *bodies[] = { body, "Hello\r\nWorld\r\nAppended by someone else\r\n", "Hello\r\n", "Hell" };
        const DkimStatus want[] = { DKIM_STATUS_PASS, DKIM_STATUS_PASS, DKIM_STATUS_PASS, DKIM_STATUS_FAIL };
        for (size_t i = 0; i < ELEMENTSOF(bodies); i++) {
                _cleanup_free_ char *m = NULL;
                ASSERT_TRUE(asprintf(&m, "%s%s\r\n%s\r\n%s", unsigned_field, b64, hdr, bodies[i]) > 0);
                _cleanup_(dkim_verifier_freep) DkimVerifier *v = NULL;
                const DkimResult *res;
                size_t n;
                ASSERT_OK(run_verifier(m, 5, dns, NULL, &v));
                ASSERT_OK(dkim_verifier_results(v, &res, &n));
                if (res[0].status != want[i])
                        TAP_FAIL("body %zu: %s (%s)", i, dkim_status_to_string(res[0].status), res[0].reason);
        }
}

TEST(signature_limit) {
        /* 12 copies of the Ed25519 signature: 10 checked, 2 neutral */
        const char *m = RFC8463_MESSAGE;
        const char *second = strstr(m + 1, "DKIM-Signature:");
        size_t sig_len = (size_t) (second - m);
        _cleanup_free_ char *big = malloc(12 * sig_len + strlen(m) + 1);
        size_t k = 0;
        for (int i = 0; i < 12; i++) {
                memcpy(big + k, m, sig_len);
                k += sig_len;
        }
        strcpy(big + k, second);
        _cleanup_(dkim_verifier_freep) DkimVerifier *v = NULL;
        const DkimResult *res;
        size_t n;
        ASSERT_OK(run_verifier(big, 512, rfc8463_dns, NULL, &v));
        ASSERT_OK(dkim_verifier_results(v, &res, &n));
        ASSERT_EQ(n, 13);
        for (size_t i = 0; i < 10; i++)
                ASSERT_EQ(res[i].status, DKIM_STATUS_PASS);
        ASSERT_EQ(res[10].status, DKIM_STATUS_NEUTRAL);
        ASSERT_EQ(res[11].status, DKIM_STATUS_NEUTRAL);
        ASSERT_EQ(res[12].status, DKIM_STATUS_NEUTRAL);
}

TEST(small_rsa_key_is_policy) {
        _cleanup_(dkim_verifier_freep) DkimVerifier *v = NULL;
        const DkimResult *res;
        size_t n;
        ASSERT_OK(run_verifier(RFC8463_MESSAGE, 4096, rfc8463_dns, &(DkimVerifyParams) { .min_rsa_bits = 2048 }, &v));
        ASSERT_OK(dkim_verifier_results(v, &res, &n));
        ASSERT_EQ(res[0].status, DKIM_STATUS_PASS);
        ASSERT_EQ(res[1].status, DKIM_STATUS_POLICY);
}

TEST(malformed_headers) {
        _cleanup_(dkim_verifier_freep) DkimVerifier *v = NULL;
        const DkimResult *res;
        size_t n;
        ASSERT_OK(run_verifier(" bad\r\n\r\nbody\r\n", 3, rfc8463_dns, NULL, &v));
        ASSERT_OK(dkim_verifier_results(v, &res, &n));
        ASSERT_EQ(n, 0);
}

/* ---- Authentication-Results ---- */

TEST(authres_parse) {
        typedef struct { const char *in; int want; const char *id; size_t n; bool none; } C;
        static const C cases[] = {
                { "mx.example.org; spf=pass smtp.mailfrom=a@b", 0, "mx.example.org", 1, false },
                { " mx.example.org 1 ; dkim=pass (good) header.d=x; arc=none", 0, "mx.example.org", 2, false },
                { "mx.example.org; none", 0, "mx.example.org", 0, true },
                { "mx.example.org none", 0, "mx.example.org", 0, true },
                { "\"quoted id\"; spf=fail", 0, "quoted id", 1, false },
                { "(comment) mx; dkim/1=pass;", 0, "mx", 1, false },
                { "mx; dkim=pass reason=\"a;b\" header.d=x", 0, "mx", 1, false },
                { "; spf=pass", -EINVAL, NULL, 0, false },
                { "mx; spf", -EINVAL, NULL, 0, false },
                { "mx; spf=pass (unclosed", -EINVAL, NULL, 0, false },
                { "mx; =pass", -EINVAL, NULL, 0, false },
                { "mx extra; spf=pass", -EINVAL, NULL, 0, false },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(authres_freep) AuthRes *a = NULL;
                int r = authres_parse(cases[i].in, strlen(cases[i].in), &a);
                if (r != cases[i].want)
                        TAP_FAIL("authres case %zu: %d", i, r);
                if (r < 0)
                        continue;
                ASSERT_STREQ(a->authserv_id, cases[i].id);
                ASSERT_EQ(a->n_results, cases[i].n);
                ASSERT_EQ(a->none, cases[i].none);
        }
        _cleanup_(authres_freep) AuthRes *a = NULL;
        const char *v = "mx; DKIM=Pass (1024-bit key) header.i=@d1.example ;\r\n\tspf=fail";
        ASSERT_OK(authres_parse(v, strlen(v), &a));
        ASSERT_STREQ(a->results[0].method, "dkim");
        ASSERT_STREQ(a->results[0].result, "pass");
        ASSERT_STREQ(a->results[0].text, "DKIM=Pass (1024-bit key) header.i=@d1.example");
}

TEST(authres_collect) {
        const char *m =
                "Authentication-Results: mx.example.org; arc=pass\r\n"
                "Authentication-Results: other.example; spf=fail\r\n"
                "Authentication-Results: MX.example.org; spf=pass smtp.mailfrom=a@b;\r\n dkim=pass\r\n"
                "Authentication-Results: broken\r\n"
                "\r\n";
        MailHeaders *h = NULL;
        _cleanup_free_ char *res = NULL;
        const char *arc = NULL;
        ASSERT_OK(mail_headers_parse(m, strlen(m), NULL, &h, NULL));
        ASSERT_EQ(authres_collect(mail_headers_fields(h), mail_headers_count(h), "mx.example.org", &res, &arc), 2);
        ASSERT_STREQ(res, "arc=pass; spf=pass smtp.mailfrom=a@b; dkim=pass");
        ASSERT_STREQ(arc, "pass");
        free(res);
        res = NULL;
        ASSERT_EQ(authres_collect(mail_headers_fields(h), mail_headers_count(h), "nobody", &res, &arc), 0);
        ASSERT_STREQ(res, "");
        ASSERT_NULL(arc);
        mail_headers_free(h);
}

int main(void) {
        return tap_run();
}
