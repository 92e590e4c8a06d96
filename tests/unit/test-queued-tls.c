/* SPDX-License-Identifier: MIT */
/* queued-tls: TLSPolicy= levels, RFC 8460 result JSON, and DANE (RFC 7672)
 * decisions on certificates made here with GnuTLS: DANE-EE matches without
 * name or expiry checks, DANE-TA checks the chain up to the matched TA, the
 * name and expiry; unusable records and digest agility. */
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "queued-tls.h"
#include "tap.h"

TEST(levels) {
        for (int l = 0; l < _TLS_LEVEL_MAX; l++)
                ASSERT_EQ(tls_level_from_string(tls_level_to_string((TlsLevel) l)), l);
        ASSERT_ERR(tls_level_from_string("DANE"), -EINVAL);
        ASSERT_ERR(tls_level_from_string("secure"), -EINVAL);
        ASSERT_ERR(tls_level_from_string(NULL), -EINVAL);

        char *entries[] = { "example.org=dane-only", "Other.Example=verify", ".sub.example=encrypt",
                            ".deep.sub.example=none", "broken", "bad=level", "x y=may", NULL };
        ASSERT_EQ(tls_policy_lookup(entries, "example.org", TLS_LEVEL_DANE), TLS_LEVEL_DANE_ONLY);
        ASSERT_EQ(tls_policy_lookup(entries, "EXAMPLE.ORG.", TLS_LEVEL_DANE), TLS_LEVEL_DANE_ONLY);
        ASSERT_EQ(tls_policy_lookup(entries, "other.example", TLS_LEVEL_DANE), TLS_LEVEL_VERIFY);
        ASSERT_EQ(tls_policy_lookup(entries, "a.example.org", TLS_LEVEL_DANE), TLS_LEVEL_DANE);
        ASSERT_EQ(tls_policy_lookup(entries, "a.sub.example", TLS_LEVEL_DANE), TLS_LEVEL_ENCRYPT);
        ASSERT_EQ(tls_policy_lookup(entries, "sub.example", TLS_LEVEL_MAY), TLS_LEVEL_MAY);
        ASSERT_EQ(tls_policy_lookup(entries, "x.deep.sub.example", TLS_LEVEL_DANE), TLS_LEVEL_NONE);
        ASSERT_EQ(tls_policy_lookup(entries, "bad", TLS_LEVEL_MAY), TLS_LEVEL_MAY);
        ASSERT_EQ(tls_policy_lookup(NULL, "x", TLS_LEVEL_NONE), TLS_LEVEL_NONE);

        const char *bad = NULL;
        ASSERT_ERR(tls_policy_check(entries, &bad), -EINVAL);
        ASSERT_STREQ(bad, "broken");
        char *good[] = { "a.example=may", ".b.example=dane", NULL };
        ASSERT_OK(tls_policy_check(good, NULL));
        char *empty_domain[] = { "=may", NULL };
        ASSERT_ERR(tls_policy_check(empty_domain, NULL), -EINVAL);
}

TEST(result_json) {
        const char *strings[] = { "3 1 1 abcd", NULL };
        TlsResult r = {
                .policy_type = TLS_POLICY_TLSA,
                .policy_domain = "mx.example.org",
                .policy_strings = strings,
                .mx_host = "mx.example.org",
                .receiving_ip = "192.0.2.1",
                .sending_ip = "",
                .result = TLS_RESULT_TLSA_INVALID,
                .failure_reason = "no match",
        };
        json_object *o = tls_result_to_json(&r);
        ASSERT_NOT_NULL(o);
        ASSERT_STREQ(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                     "{\"policyDomain\":\"mx.example.org\",\"policyType\":\"tlsa\",\"policyStrings\":[\"3 1 1 abcd\"],"
                     "\"receivingMxHostname\":\"mx.example.org\",\"receivingIp\":\"192.0.2.1\",\"success\":false,"
                     "\"resultType\":\"tlsa-invalid\",\"failureReasonCode\":\"no match\"}");
        json_object_put(o);
        r = (TlsResult){ .policy_type = TLS_POLICY_NO_POLICY_FOUND, .policy_domain = "example.org", .time = 5 };
        o = tls_result_to_json(&r);
        ASSERT_STREQ(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                     "{\"policyDomain\":\"example.org\",\"policyType\":\"no-policy-found\",\"success\":true,\"time\":5}");
        json_object_put(o);
        for (int t = 1; t < _TLS_RESULT_MAX; t++)
                ASSERT_NOT_NULL(tls_result_type_to_string((TlsResultType) t));
        ASSERT_NULL(tls_result_type_to_string(TLS_RESULT_NONE));
}

TEST(webpki_status) {
        ASSERT_EQ(tls_webpki_status_to_result(0), TLS_RESULT_NONE);
        ASSERT_EQ(tls_webpki_status_to_result(GNUTLS_CERT_INVALID | GNUTLS_CERT_SIGNER_NOT_FOUND), TLS_RESULT_CERTIFICATE_NOT_TRUSTED);
        ASSERT_EQ(tls_webpki_status_to_result(GNUTLS_CERT_INVALID | GNUTLS_CERT_EXPIRED), TLS_RESULT_CERTIFICATE_EXPIRED);
        ASSERT_EQ(tls_webpki_status_to_result(GNUTLS_CERT_INVALID | GNUTLS_CERT_UNEXPECTED_OWNER), TLS_RESULT_CERTIFICATE_HOST_MISMATCH);
        ASSERT_EQ(tls_webpki_status_to_result(GNUTLS_CERT_INVALID | GNUTLS_CERT_EXPIRED | GNUTLS_CERT_UNEXPECTED_OWNER),
                  TLS_RESULT_CERTIFICATE_EXPIRED);
        ASSERT_EQ(tls_webpki_status_to_result(GNUTLS_CERT_INVALID | GNUTLS_CERT_SIGNATURE_FAILURE), TLS_RESULT_VALIDATION_FAILURE);
}

/* ---- certificates ---- */

typedef struct Cert {
        gnutls_x509_privkey_t key;
        gnutls_x509_crt_t crt;
        gnutls_datum_t der;
        uint8_t spki256[32], spki512[64];
} Cert;

static void cert_make(Cert *c, const char *cn, const char *san, bool ca, const Cert *issuer, long from, long to) {
        static unsigned serial = 1;
        time_t now = time(NULL);
        unsigned char ser[4] = { 0, 0, 0, (unsigned char) serial++ };

        ASSERT_OK(gnutls_x509_privkey_init(&c->key));
        ASSERT_OK(gnutls_x509_privkey_generate(c->key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0));
        ASSERT_OK(gnutls_x509_crt_init(&c->crt));
        ASSERT_OK(gnutls_x509_crt_set_version(c->crt, 3));
        ASSERT_OK(gnutls_x509_crt_set_serial(c->crt, ser, sizeof ser));
        ASSERT_OK(gnutls_x509_crt_set_activation_time(c->crt, now + from));
        ASSERT_OK(gnutls_x509_crt_set_expiration_time(c->crt, now + to));
        ASSERT_OK(gnutls_x509_crt_set_dn_by_oid(c->crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn, (unsigned) strlen(cn)));
        ASSERT_OK(gnutls_x509_crt_set_key(c->crt, c->key));
        if (san)
                ASSERT_OK(gnutls_x509_crt_set_subject_alt_name(c->crt, GNUTLS_SAN_DNSNAME, san, (unsigned) strlen(san), GNUTLS_FSAN_SET));
        ASSERT_OK(gnutls_x509_crt_set_basic_constraints(c->crt, ca, -1));
        if (ca)
                ASSERT_OK(gnutls_x509_crt_set_key_usage(c->crt, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN));
        ASSERT_OK(gnutls_x509_crt_sign2(c->crt, issuer ? issuer->crt : c->crt, issuer ? issuer->key : c->key, GNUTLS_DIG_SHA256, 0));
        ASSERT_OK(gnutls_x509_crt_export2(c->crt, GNUTLS_X509_FMT_DER, &c->der));
        gnutls_pubkey_t pk;
        gnutls_datum_t spki;
        ASSERT_OK(gnutls_pubkey_init(&pk));
        ASSERT_OK(gnutls_pubkey_import_x509(pk, c->crt, 0));
        ASSERT_OK(gnutls_pubkey_export2(pk, GNUTLS_X509_FMT_DER, &spki));
        ASSERT_OK(gnutls_hash_fast(GNUTLS_DIG_SHA256, spki.data, spki.size, c->spki256));
        ASSERT_OK(gnutls_hash_fast(GNUTLS_DIG_SHA512, spki.data, spki.size, c->spki512));
        gnutls_free(spki.data);
        gnutls_pubkey_deinit(pk);
}

static void cert_done(Cert *c) {
        gnutls_free(c->der.data);
        gnutls_x509_crt_deinit(c->crt);
        gnutls_x509_privkey_deinit(c->key);
}

static DnsRecord tlsa(uint8_t u, uint8_t s, uint8_t m, const uint8_t *data, size_t len) {
        DnsRecord r = { .type = DNS_TYPE_TLSA };
        r.tlsa.usage = u;
        r.tlsa.selector = s;
        r.tlsa.matching_type = m;
        r.tlsa.data = (uint8_t *) data;
        r.tlsa.len = len;
        return r;
}

/* 1/0 from dane_verify_chain, and the type on 0. */
static int check(const DnsRecord *recs, size_t n, const Cert *const *chain, unsigned n_chain, const char *name,
                 TlsResultType *ret_type) {
        DaneTlsa t;
        gnutls_datum_t ders[4];
        const char *names[] = { name, NULL };
        char reason[300];
        for (unsigned i = 0; i < n_chain; i++)
                ders[i] = chain[i]->der;
        ASSERT_OK(dane_tlsa_from_records(recs, n, &t));
        *ret_type = TLS_RESULT_NONE;
        int r = dane_verify_chain(&t, ders, n_chain, names, ret_type, reason, sizeof reason);
        dane_tlsa_done(&t);
        return r;
}

TEST(dane) {
        Cert ca, other_ca, leaf, wrong, expired, self;
        cert_make(&ca, "Test CA", NULL, true, NULL, -3600, 86400 * 30);
        cert_make(&other_ca, "Other CA", NULL, true, NULL, -3600, 86400 * 30);
        cert_make(&leaf, "mx.example.org", "mx.example.org", false, &ca, -3600, 86400);
        cert_make(&wrong, "not-the-mx.example.org", "not-the-mx.example.org", false, &ca, -3600, 86400);
        cert_make(&expired, "mx.example.org", "mx.example.org", false, &ca, -86400 * 10, -86400);
        cert_make(&self, "whatever", NULL, false, NULL, -86400 * 10, -86400); /* self-signed, expired, no name */
        const Cert *good_chain[] = { &leaf, &ca }, *wrong_chain[] = { &wrong, &ca }, *exp_chain[] = { &expired, &ca },
                   *self_chain[] = { &self }, *leaf_only[] = { &leaf };
        TlsResultType type;
        DnsRecord r[3];

        /* DANE-EE: key match only, names and expiry ignored */
        r[0] = tlsa(3, 1, 1, leaf.spki256, 32);
        ASSERT_EQ(check(r, 1, good_chain, 2, "mx.example.org", &type), 1);
        ASSERT_EQ(check(r, 1, leaf_only, 1, "other.name", &type), 1);
        r[0] = tlsa(3, 1, 1, self.spki256, 32);
        ASSERT_EQ(check(r, 1, self_chain, 1, "mx.example.org", &type), 1);
        r[0] = tlsa(3, 0, 0, leaf.der.data, leaf.der.size); /* full certificate */
        ASSERT_EQ(check(r, 1, good_chain, 2, "mx.example.org", &type), 1);
        r[0] = tlsa(3, 1, 2, leaf.spki512, 64);
        ASSERT_EQ(check(r, 1, good_chain, 2, "mx.example.org", &type), 1);
        r[0] = tlsa(3, 1, 1, other_ca.spki256, 32);
        ASSERT_EQ(check(r, 1, good_chain, 2, "mx.example.org", &type), 0);
        ASSERT_EQ(type, TLS_RESULT_TLSA_INVALID);

        /* DANE-TA: chain to the TA, name, expiry */
        r[0] = tlsa(2, 1, 1, ca.spki256, 32);
        ASSERT_EQ(check(r, 1, good_chain, 2, "mx.example.org", &type), 1);
        ASSERT_EQ(check(r, 1, good_chain, 2, "MX.EXAMPLE.ORG", &type), 1);
        ASSERT_EQ(check(r, 1, wrong_chain, 2, "mx.example.org", &type), 0);
        ASSERT_EQ(type, TLS_RESULT_CERTIFICATE_HOST_MISMATCH);
        ASSERT_EQ(check(r, 1, exp_chain, 2, "mx.example.org", &type), 0);
        ASSERT_EQ(type, TLS_RESULT_CERTIFICATE_EXPIRED);
        ASSERT_EQ(check(r, 1, leaf_only, 1, "mx.example.org", &type), 0); /* the TA must be sent */
        ASSERT_EQ(type, TLS_RESULT_TLSA_INVALID);
        r[0] = tlsa(2, 1, 1, other_ca.spki256, 32);
        ASSERT_EQ(check(r, 1, good_chain, 2, "mx.example.org", &type), 0);
        ASSERT_EQ(type, TLS_RESULT_TLSA_INVALID);
        /* a TA record matching the leaf itself is not a TA */
        r[0] = tlsa(2, 1, 1, leaf.spki256, 32);
        ASSERT_EQ(check(r, 1, leaf_only, 1, "mx.example.org", &type), 0);

        /* PKIX usages are unusable for SMTP: nothing to authenticate with */
        r[0] = tlsa(1, 1, 1, leaf.spki256, 32);
        r[1] = tlsa(0, 1, 1, ca.spki256, 32);
        DaneTlsa t;
        ASSERT_OK(dane_tlsa_from_records(r, 2, &t));
        ASSERT_EQ(t.n_records, 0);
        ASSERT_EQ(t.n_total, 2);
        ASSERT_NOT_NULL(t.strings[1]);
        ASSERT_EQ(strncmp(t.strings[0], "1 1 1 ", 6), 0);
        ASSERT_EQ(strlen(t.strings[0]), 6 + 64);
        dane_tlsa_done(&t);
        ASSERT_FALSE(dane_record_usable(3, 2, 1, 32));
        ASSERT_FALSE(dane_record_usable(3, 1, 3, 32));
        ASSERT_FALSE(dane_record_usable(3, 1, 1, 31));
        ASSERT_FALSE(dane_record_usable(3, 1, 2, 32));
        ASSERT_TRUE(dane_record_usable(2, 0, 0, 100));

        /* digest agility: SHA2-256 beside SHA2-512 for the same usage/selector is ignored */
        r[0] = tlsa(3, 1, 1, leaf.spki256, 32);
        r[1] = tlsa(3, 1, 2, other_ca.spki512, 64);
        ASSERT_EQ(check(r, 2, good_chain, 2, "mx.example.org", &type), 0);
        ASSERT_EQ(type, TLS_RESULT_TLSA_INVALID);
        r[1] = tlsa(3, 1, 2, leaf.spki512, 64);
        ASSERT_EQ(check(r, 2, good_chain, 2, "mx.example.org", &type), 1);
        /* ... but not across usages */
        r[0] = tlsa(3, 1, 1, leaf.spki256, 32);
        r[1] = tlsa(2, 1, 2, other_ca.spki512, 64);
        ASSERT_EQ(check(r, 2, good_chain, 2, "mx.example.org", &type), 1);

        /* no certificate at all */
        ASSERT_OK(dane_tlsa_from_records(r, 1, &t));
        char reason[100];
        ASSERT_EQ(dane_verify_chain(&t, NULL, 0, NULL, &type, reason, sizeof reason), 0);
        ASSERT_EQ(type, TLS_RESULT_VALIDATION_FAILURE);
        dane_tlsa_done(&t);

        cert_done(&ca);
        cert_done(&other_ca);
        cert_done(&leaf);
        cert_done(&wrong);
        cert_done(&expired);
        cert_done(&self);
}

int main(void) {
        return tap_run();
}
