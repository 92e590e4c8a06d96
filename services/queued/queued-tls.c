/* SPDX-License-Identifier: MIT */
/* TLS policy levels, DANE and WebPKI checks, TLS results (see queued-tls.h). */
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/dane.h>
#include <gnutls/x509.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "queued-tls.h"

static const char *const level_names[_TLS_LEVEL_MAX] = {
        [TLS_LEVEL_NONE] = "none",
        [TLS_LEVEL_MAY] = "may",
        [TLS_LEVEL_ENCRYPT] = "encrypt",
        [TLS_LEVEL_VERIFY] = "verify",
        [TLS_LEVEL_DANE] = "dane",
        [TLS_LEVEL_DANE_ONLY] = "dane-only",
};

const char *tls_level_to_string(TlsLevel l) {
        return (unsigned) l < _TLS_LEVEL_MAX ? level_names[l] : NULL;
}

TlsLevel tls_level_from_string(const char *s) {
        for (size_t i = 0; s && i < _TLS_LEVEL_MAX; i++)
                if (strcmp(s, level_names[i]) == 0)
                        return (TlsLevel) i;
        return _TLS_LEVEL_INVALID;
}

/* "domain=level": the level, and the domain part's length in *ret_len. */
static TlsLevel entry_parse(const char *e, size_t *ret_len) {
        const char *eq = strrchr(e, '=');
        if (!eq || eq == e || (eq == e + 1 && e[0] == '.'))
                return _TLS_LEVEL_INVALID;
        for (const char *p = e; p < eq; p++)
                if (!(*p == '.' || *p == '-' || *p == '_' || (*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')))
                        return _TLS_LEVEL_INVALID;
        *ret_len = (size_t) (eq - e);
        return tls_level_from_string(eq + 1);
}

TlsLevel tls_policy_lookup(char *const *entries, const char *domain, TlsLevel def) {
        size_t dl = strlen(domain);
        TlsLevel parent = _TLS_LEVEL_INVALID;
        size_t parent_len = 0;

        while (dl > 0 && domain[dl - 1] == '.')
                dl--;
        for (char *const *e = entries; e && *e; e++) {
                size_t len;
                TlsLevel l = entry_parse(*e, &len);
                if (l < 0)
                        continue;
                if ((*e)[0] != '.') {
                        if (len == dl && strncasecmp(*e, domain, dl) == 0)
                                return l; /* an exact entry wins */
                        continue;
                }
                /* ".example.org" matches below example.org; the longest such entry wins */
                if (dl > len && strncasecmp(*e, domain + dl - len, len) == 0 && len > parent_len) {
                        parent = l;
                        parent_len = len;
                }
        }
        return parent >= 0 ? parent : def;
}

int tls_policy_check(char *const *entries, const char **ret_bad) {
        for (char *const *e = entries; e && *e; e++) {
                size_t len;
                if (entry_parse(*e, &len) < 0) {
                        if (ret_bad)
                                *ret_bad = *e;
                        return -EINVAL;
                }
        }
        return 0;
}

static const char *const result_names[_TLS_RESULT_MAX] = {
        [TLS_RESULT_NONE] = NULL,
        [TLS_RESULT_STARTTLS_NOT_SUPPORTED] = "starttls-not-supported",
        [TLS_RESULT_CERTIFICATE_HOST_MISMATCH] = "certificate-host-mismatch",
        [TLS_RESULT_CERTIFICATE_EXPIRED] = "certificate-expired",
        [TLS_RESULT_CERTIFICATE_NOT_TRUSTED] = "certificate-not-trusted",
        [TLS_RESULT_VALIDATION_FAILURE] = "validation-failure",
        [TLS_RESULT_TLSA_INVALID] = "tlsa-invalid",
        [TLS_RESULT_DNSSEC_INVALID] = "dnssec-invalid",
        [TLS_RESULT_DANE_REQUIRED] = "dane-required",
        [TLS_RESULT_STS_POLICY_FETCH_ERROR] = "sts-policy-fetch-error",
        [TLS_RESULT_STS_POLICY_INVALID] = "sts-policy-invalid",
        [TLS_RESULT_STS_WEBPKI_INVALID] = "sts-webpki-invalid",
};

const char *tls_result_type_to_string(TlsResultType t) {
        return (unsigned) t < _TLS_RESULT_MAX ? result_names[t] : NULL;
}

static const char *const policy_type_names[_TLS_POLICY_TYPE_MAX] = {
        [TLS_POLICY_NO_POLICY_FOUND] = "no-policy-found",
        [TLS_POLICY_TLSA] = "tlsa",
        [TLS_POLICY_STS] = "sts",
};

const char *tls_policy_type_to_string(TlsPolicyType t) {
        return (unsigned) t < _TLS_POLICY_TYPE_MAX ? policy_type_names[t] : NULL;
}

static void add_string(json_object *o, const char *key, const char *v) {
        if (v && *v)
                json_object_object_add(o, key, json_object_new_string(v));
}

static void add_strv(json_object *o, const char *key, const char *const *v) {
        if (!v)
                return;
        json_object *a = json_object_new_array();
        for (; *v; v++)
                json_object_array_add(a, json_object_new_string(*v));
        json_object_object_add(o, key, a);
}

json_object *tls_result_to_json(const TlsResult *r) {
        json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "policyDomain", json_object_new_string(r->policy_domain ? r->policy_domain : ""));
        json_object_object_add(o, "policyType", json_object_new_string(tls_policy_type_to_string(r->policy_type)));
        add_strv(o, "policyStrings", r->policy_strings);
        add_strv(o, "mxHosts", r->mx_patterns);
        add_string(o, "receivingMxHostname", r->mx_host);
        add_string(o, "receivingMxHelo", r->mx_helo);
        add_string(o, "receivingIp", r->receiving_ip);
        add_string(o, "sendingMtaIp", r->sending_ip);
        json_object_object_add(o, "success", json_object_new_boolean(r->result == TLS_RESULT_NONE));
        add_string(o, "resultType", tls_result_type_to_string(r->result));
        add_string(o, "additionalInformation", r->additional_info);
        add_string(o, "failureReasonCode", r->failure_reason);
        if (r->time > 0)
                json_object_object_add(o, "time", json_object_new_int64(r->time));
        return o;
}

/* ---- DANE ---------------------------------------------------------------- */

bool dane_record_usable(uint8_t usage, uint8_t selector, uint8_t mtype, size_t len) {
        if (usage != 2 && usage != 3)
                return false; /* PKIX-TA(0), PKIX-EE(1): not for SMTP (RFC 7672 3.1.3) */
        if (selector > 1)
                return false;
        switch (mtype) {
        case 0:
                return len > 0;
        case 1:
                return len == 32;
        case 2:
                return len == 64;
        default:
                return false;
        }
}

void dane_tlsa_done(DaneTlsa *t) {
        if (!t)
                return;
        for (size_t i = 0; i < t->n_records; i++)
                free(t->records[i].data);
        free(t->records);
        for (char **s = t->strings; s && *s; s++)
                free(*s);
        free(t->strings);
        memset(t, 0, sizeof *t);
}

static char *tlsa_to_string(const DnsRecord *r) {
        size_t n = 16 + 2 * r->tlsa.len;
        char *s = malloc(n);
        if (!s)
                return NULL;
        int k = snprintf(s, n, "%u %u %u ", r->tlsa.usage, r->tlsa.selector, r->tlsa.matching_type);
        for (size_t i = 0; i < r->tlsa.len; i++)
                k += snprintf(s + k, n - (size_t) k, "%02x", r->tlsa.data[i]);
        return s;
}

int dane_tlsa_from_records(const DnsRecord *records, size_t n, DaneTlsa *ret) {
        DaneTlsa t = {};
        uint8_t best[4][2] = {}; /* strongest digest per (usage, selector) */

        n = MIN(n, (size_t) DANE_TLSA_MAX);
        t.strings = calloc(n + 1, sizeof *t.strings);
        t.records = calloc(n ? n : 1, sizeof *t.records);
        if (!t.strings || !t.records)
                goto oom;
        for (size_t i = 0; i < n; i++) {
                const DnsRecord *r = &records[i];
                if (r->type != DNS_TYPE_TLSA)
                        continue;
                if (!(t.strings[t.n_total++] = tlsa_to_string(r)))
                        goto oom;
                if (dane_record_usable(r->tlsa.usage, r->tlsa.selector, r->tlsa.matching_type, r->tlsa.len) &&
                    r->tlsa.matching_type > best[r->tlsa.usage][r->tlsa.selector])
                        best[r->tlsa.usage][r->tlsa.selector] = r->tlsa.matching_type;
        }
        for (size_t i = 0; i < n; i++) {
                const DnsRecord *r = &records[i];
                if (r->type != DNS_TYPE_TLSA ||
                    !dane_record_usable(r->tlsa.usage, r->tlsa.selector, r->tlsa.matching_type, r->tlsa.len))
                        continue;
                /* digest agility (RFC 7671 9): a weaker digest beside a stronger one is ignored */
                if (r->tlsa.matching_type != 0 && r->tlsa.matching_type < best[r->tlsa.usage][r->tlsa.selector])
                        continue;
                DaneRecord *d = &t.records[t.n_records];
                d->usage = r->tlsa.usage;
                d->selector = r->tlsa.selector;
                d->mtype = r->tlsa.matching_type;
                d->len = r->tlsa.len;
                if (!(d->data = malloc(d->len)))
                        goto oom;
                memcpy(d->data, r->tlsa.data, d->len);
                t.n_records++;
        }
        *ret = t;
        return 0;
oom:
        dane_tlsa_done(&t);
        return -ENOMEM;
}

/* Whether crt matches a record's selector/matching type and data. */
static bool record_matches(gnutls_x509_crt_t crt, const DaneRecord *d) {
        gnutls_datum_t der = {};
        unsigned char dig[64];
        bool ok = false;

        if (d->selector == 0) {
                if (gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der) < 0)
                        return false;
        } else {
                gnutls_pubkey_t pk;
                if (gnutls_pubkey_init(&pk) < 0)
                        return false;
                if (gnutls_pubkey_import_x509(pk, crt, 0) < 0 || gnutls_pubkey_export2(pk, GNUTLS_X509_FMT_DER, &der) < 0) {
                        gnutls_pubkey_deinit(pk);
                        return false;
                }
                gnutls_pubkey_deinit(pk);
        }
        if (d->mtype == 0)
                ok = der.size == d->len && memcmp(der.data, d->data, d->len) == 0;
        else if (d->mtype == 1)
                ok = gnutls_hash_fast(GNUTLS_DIG_SHA256, der.data, der.size, dig) == 0 && memcmp(dig, d->data, 32) == 0;
        else if (d->mtype == 2)
                ok = gnutls_hash_fast(GNUTLS_DIG_SHA512, der.data, der.size, dig) == 0 && memcmp(dig, d->data, 64) == 0;
        gnutls_free(der.data);
        return ok;
}

/* DANE-EE through libgnutls-dane: the records of usage 3 in wire form,
 * marked secure because our own resolver validated them. 1 match, 0 none. */
static int verify_ee(const DaneTlsa *t, const gnutls_datum_t *chain, unsigned n_chain) {
        char *data[DANE_TLSA_MAX + 1] = {};
        int lens[DANE_TLSA_MAX + 1] = {};
        size_t k = 0;
        dane_state_t s = NULL;
        dane_query_t q = NULL;
        unsigned verify = 0;
        int r, ret = 0;

        for (size_t i = 0; i < t->n_records; i++) {
                const DaneRecord *d = &t->records[i];
                if (d->usage != 3)
                        continue;
                if (!(data[k] = malloc(d->len + 3))) {
                        ret = -ENOMEM;
                        goto out;
                }
                data[k][0] = (char) d->usage;
                data[k][1] = (char) d->selector;
                data[k][2] = (char) d->mtype;
                memcpy(data[k] + 3, d->data, d->len);
                lens[k++] = (int) (d->len + 3);
        }
        if (k == 0)
                goto out;
        r = dane_state_init(&s, DANE_F_IGNORE_LOCAL_RESOLVER | DANE_F_IGNORE_DNSSEC);
        if (r < 0) {
                s = NULL;
                ret = -EIO;
                goto out;
        }
        r = dane_raw_tlsa(s, &q, data, lens, 1, 0);
        if (r < 0) {
                q = NULL;
                ret = -EIO;
                goto out;
        }
        r = dane_verify_crt_raw(s, chain, n_chain, GNUTLS_CRT_X509, q, 0, DANE_VFLAG_ONLY_CHECK_EE_USAGE, &verify);
        ret = r == 0 && verify == 0;
out:
        if (q)
                dane_query_deinit(q);
        if (s)
                dane_state_deinit(s);
        for (size_t i = 0; i < k; i++)
                free(data[i]);
        return ret;
}

int dane_verify_chain(const DaneTlsa *t, const gnutls_datum_t *chain, unsigned n_chain, const char *const *ref_names,
                      TlsResultType *ret_type, char *reason, size_t reason_size) {
        gnutls_x509_crt_t crts[DANE_CHAIN_MAX] = {};
        unsigned n = 0;
        bool ta_matched = false;
        unsigned worst = 0; /* verification status of the best TA attempt */
        int r, ret = 0;

        if (reason_size > 0)
                reason[0] = 0;
        if (n_chain == 0 || !chain) {
                *ret_type = TLS_RESULT_VALIDATION_FAILURE;
                snprintf(reason, reason_size, "no certificate from the server");
                return 0;
        }
        n_chain = MIN(n_chain, DANE_CHAIN_MAX);

        r = verify_ee(t, chain, n_chain);
        if (r != 0)
                return r; /* matched (1), or a local failure */

        for (n = 0; n < n_chain; n++) {
                if (gnutls_x509_crt_init(&crts[n]) < 0) {
                        ret = -ENOMEM;
                        goto out;
                }
                if (gnutls_x509_crt_import(crts[n], &chain[n], GNUTLS_X509_FMT_DER) < 0) {
                        gnutls_x509_crt_deinit(crts[n]);
                        break; /* what follows an undecodable certificate is not a chain */
                }
        }
        /* DANE-TA: a certificate the server sent, anchored on, validates the
         * chain below it and the name. */
        for (unsigned i = 1; i < n; i++)
                for (size_t k = 0; k < t->n_records; k++) {
                        const DaneRecord *d = &t->records[k];
                        if (d->usage != 2 || !record_matches(crts[i], d))
                                continue;
                        ta_matched = true;
                        for (const char *const *name = ref_names; name && *name; name++) {
                                gnutls_x509_trust_list_t tl;
                                gnutls_x509_crt_t anchor;
                                unsigned status = 0;
                                if (gnutls_x509_trust_list_init(&tl, 0) < 0) {
                                        ret = -ENOMEM;
                                        goto out;
                                }
                                if (gnutls_x509_crt_init(&anchor) < 0) {
                                        gnutls_x509_trust_list_deinit(tl, 1);
                                        ret = -ENOMEM;
                                        goto out;
                                }
                                if (gnutls_x509_crt_import(anchor, &chain[i], GNUTLS_X509_FMT_DER) < 0 ||
                                    gnutls_x509_trust_list_add_cas(tl, &anchor, 1, 0) != 1) {
                                        gnutls_x509_crt_deinit(anchor);
                                        gnutls_x509_trust_list_deinit(tl, 1);
                                        continue;
                                }
                                gnutls_typed_vdata_st vd = { GNUTLS_DT_DNS_HOSTNAME, (unsigned char *) *name, 0 };
                                r = gnutls_x509_trust_list_verify_crt2(tl, crts, i, &vd, 1, 0, &status, NULL);
                                gnutls_x509_trust_list_deinit(tl, 1); /* frees anchor too */
                                if (r == 0 && status == 0) {
                                        ret = 1;
                                        goto out;
                                }
                                if (worst == 0 || (worst & GNUTLS_CERT_UNEXPECTED_OWNER))
                                        worst = r < 0 ? GNUTLS_CERT_INVALID : status;
                        }
                }
        if (!ta_matched) {
                *ret_type = TLS_RESULT_TLSA_INVALID;
                snprintf(reason, reason_size, "no TLSA record matches the certificate chain");
        } else {
                *ret_type = tls_webpki_status_to_result(worst);
                if (*ret_type == TLS_RESULT_CERTIFICATE_NOT_TRUSTED)
                        *ret_type = TLS_RESULT_VALIDATION_FAILURE;
                gnutls_datum_t msg = {};
                (void) gnutls_certificate_verification_status_print(worst, GNUTLS_CRT_X509, &msg, 0);
                snprintf(reason, reason_size, "DANE-TA: %s", msg.data ? (const char *) msg.data : "chain does not validate");
                gnutls_free(msg.data);
        }
out:
        for (unsigned i = 0; i < n; i++)
                gnutls_x509_crt_deinit(crts[i]);
        return ret;
}

TlsResultType tls_webpki_status_to_result(unsigned status) {
        if (status == 0)
                return TLS_RESULT_NONE;
        if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA | GNUTLS_CERT_INSECURE_ALGORITHM |
                      GNUTLS_CERT_REVOKED))
                return TLS_RESULT_CERTIFICATE_NOT_TRUSTED;
        if (status & GNUTLS_CERT_EXPIRED)
                return TLS_RESULT_CERTIFICATE_EXPIRED;
        if (status & GNUTLS_CERT_UNEXPECTED_OWNER)
                return TLS_RESULT_CERTIFICATE_HOST_MISMATCH;
        return TLS_RESULT_VALIDATION_FAILURE;
}
