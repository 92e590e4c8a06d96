/* SPDX-License-Identifier: MIT */
#pragma once

/* Secure delivery for halyard-queued: per-destination TLS policy levels,
 * DANE (RFC 7672) certificate checks, WebPKI checks (MTA-STS, RFC 8461, and
 * the "verify" level), and the TLS result of a delivery session in the
 * shape of RFC 8460 (TLS reporting).
 *
 * Nothing here does I/O or logs: the DNS lookups and the sessions are driven
 * by queued-deliver.c; these are the decisions, kept pure so they can be
 * tested on their own.
 *
 * DANE rules (RFC 7672 §3): only DANE-TA(2) and DANE-EE(3) records with
 * selector 0/1 and matching type 0/1/2 are usable; PKIX-TA(0)/PKIX-EE(1) and
 * unknown parameters are not. With digest agility (RFC 7671 §9) a weaker
 * matching type is ignored when a stronger one is present for the same
 * usage and selector. DANE-EE: the leaf matching a record is the whole check
 * (no name, no expiry). DANE-TA: a certificate the server sent (index >= 1)
 * must match a record, the chain must validate up to it, and the leaf must
 * carry one of the reference identifiers (RFC 7672 §3.2.3); expiry counts.
 * libgnutls-dane checks the EE case; it does not check the path to the TA
 * nor the name, so that part is done here with a trust list holding only the
 * matched certificate. */

#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns.h"
#include "macro.h"

/* What a destination's configuration asks for (like Postfix's
 * smtp_tls_security_level / smtp_tls_policy_maps). */
typedef enum TlsLevel {
        TLS_LEVEL_NONE,      /* plaintext; no DANE, no MTA-STS */
        TLS_LEVEL_MAY,       /* STARTTLS when offered, unauthenticated */
        TLS_LEVEL_ENCRYPT,   /* STARTTLS mandatory, unauthenticated */
        TLS_LEVEL_VERIFY,    /* STARTTLS mandatory, WebPKI certificate for the MX host name */
        TLS_LEVEL_DANE,      /* DANE when usable TLSA exist, else MTA-STS when published, else may */
        TLS_LEVEL_DANE_ONLY, /* DANE mandatory: no usable secure TLSA means no delivery */
        _TLS_LEVEL_MAX,
        _TLS_LEVEL_INVALID = -EINVAL,
} TlsLevel;

const char *tls_level_to_string(TlsLevel l);
TlsLevel tls_level_from_string(const char *s);

/* "[Queue] TLSPolicy=example.org=dane-only other.example=verify": the level
 * for domain (case-insensitive exact match; an entry ".example.org" matches
 * every subdomain), or def. entries is NULL-terminated; malformed entries are
 * skipped (tls_policy_check() finds them). */
TlsLevel tls_policy_lookup(char *const *entries, const char *domain, TlsLevel def);
/* 0, or -EINVAL with the first bad entry in *ret_bad. */
int tls_policy_check(char *const *entries, const char **ret_bad);

/* RFC 8460 §4.3 result types. */
typedef enum TlsResultType {
        TLS_RESULT_NONE, /* success */
        TLS_RESULT_STARTTLS_NOT_SUPPORTED,
        TLS_RESULT_CERTIFICATE_HOST_MISMATCH,
        TLS_RESULT_CERTIFICATE_EXPIRED,
        TLS_RESULT_CERTIFICATE_NOT_TRUSTED,
        TLS_RESULT_VALIDATION_FAILURE,
        TLS_RESULT_TLSA_INVALID,
        TLS_RESULT_DNSSEC_INVALID,
        TLS_RESULT_DANE_REQUIRED,
        TLS_RESULT_STS_POLICY_FETCH_ERROR,
        TLS_RESULT_STS_POLICY_INVALID,
        TLS_RESULT_STS_WEBPKI_INVALID,
        _TLS_RESULT_MAX,
        _TLS_RESULT_INVALID = -EINVAL,
} TlsResultType;

const char *tls_result_type_to_string(TlsResultType t); /* NULL for NONE */

typedef enum TlsPolicyType {
        TLS_POLICY_NO_POLICY_FOUND,
        TLS_POLICY_TLSA,
        TLS_POLICY_STS,
        _TLS_POLICY_TYPE_MAX,
} TlsPolicyType;

const char *tls_policy_type_to_string(TlsPolicyType t); /* "no-policy-found", "tlsa", "sts" */

/* One session's outcome, as sent to io.halyard.TlsRpt.Record. Strings are
 * borrowed; NULL/0 fields are left out. */
typedef struct TlsResult {
        TlsPolicyType policy_type;
        const char *policy_domain;
        const char *const *policy_strings; /* NULL-terminated or NULL */
        const char *const *mx_patterns;    /* MTA-STS mx lines, NULL-terminated or NULL */
        const char *mx_host;
        const char *mx_helo;
        const char *receiving_ip;
        const char *sending_ip;
        TlsResultType result;               /* NONE = success */
        const char *failure_reason;         /* failureReasonCode */
        const char *additional_info;
        int64_t time;                       /* unix seconds, 0 = now (left out) */
} TlsResult;

/* The Record call's parameters (a new object), or NULL on OOM. */
struct json_object *tls_result_to_json(const TlsResult *r);

/* ---- DANE ---------------------------------------------------------------- */

#define DANE_TLSA_MAX 32U        /* records per RRset we look at; more are ignored */
#define DANE_CHAIN_MAX 16U       /* peer certificates we look at */

typedef struct DaneRecord {
        uint8_t usage, selector, mtype;
        uint8_t *data;
        size_t len;
} DaneRecord;

/* The TLSA RRset of one host (RFC 7672 §2.2). */
typedef struct DaneTlsa {
        DaneRecord *records;   /* usable records only, after digest agility */
        size_t n_records;
        char **strings;        /* every record in presentation form ("3 1 1 ab..."), NULL-terminated */
        size_t n_total;        /* records in the RRset, usable or not */
} DaneTlsa;

/* Builds the set from a secure TLSA answer's records. -ENOMEM only. */
int dane_tlsa_from_records(const DnsRecord *records, size_t n, DaneTlsa *ret);
void dane_tlsa_done(DaneTlsa *t);
/* Whether a record is usable for SMTP (RFC 7672 §3.1.3). */
bool dane_record_usable(uint8_t usage, uint8_t selector, uint8_t mtype, size_t len);

/* Checks the peer's chain (DER certificates, leaf first) against the usable
 * records. ref_names: the reference identifiers for DANE-TA (TLSA base
 * domain, MX host name), NULL-terminated. now: the time for DANE-TA expiry
 * (0 = the current time).
 * Returns 1 when authenticated, 0 when not, with *ret_type set
 * (TLSA_INVALID: nothing matched; CERTIFICATE_HOST_MISMATCH, _EXPIRED,
 * VALIDATION_FAILURE: a TA matched but the chain or name did not validate)
 * and a reason in reason[]; negative errno for local failures. */
int dane_verify_chain(const DaneTlsa *t, const gnutls_datum_t *chain, unsigned n_chain, const char *const *ref_names,
                      TlsResultType *ret_type, char *reason, size_t reason_size);

/* ---- WebPKI -------------------------------------------------------------- */

/* Maps a gnutls verification status (gnutls_certificate_verify_peers3) to
 * an RFC 8460 result type; NONE for status 0. */
TlsResultType tls_webpki_status_to_result(unsigned status);
