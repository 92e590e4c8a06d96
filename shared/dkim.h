/* SPDX-License-Identifier: MIT */
#pragma once

/* DKIM (RFC 6376, RFC 8301, RFC 8463): signature and key record parsing,
 * verification and signing, plus the pieces ARC (arc.h) builds on.
 *
 * Nothing here blocks or does I/O. Public keys come from the caller: a
 * verifier is a state machine that, once it has seen the header section,
 * lists the TXT names it needs ("sel._domainkey.example.org"); the caller
 * looks them up however it likes (libunbound in arcd, a table in tests)
 * and hands the answers back, in any order, at any later time, while the
 * body keeps streaming in. Thousands of verifiers can be in flight on one
 * event loop: each holds its header section, a few hash states and its keys.
 *
 * Algorithms: rsa-sha256 (verify with 1024 bits or more, sign with 2048 or
 * more by default) and ed25519-sha256 (RFC 8463: PureEdDSA over the SHA-256
 * digest of the header input). rsa-sha1 is refused (RFC 8301). Crypto is
 * GnuTLS. RSA verification is cheap; signing is the one expensive call
 * (dkim_signer_sign(), arc_validator_seal()); objects share no state, so a
 * caller may run those on a worker thread.
 *
 * Time: every object takes "now" from its parameters, so tests can fix it.
 *
 * l= (body length limit): verified as RFC 6376 §3.5 says (only that many
 * canonical body bytes are hashed; a limit longer than the body fails), and
 * reported in the result, because content appended after the signed part is
 * unauthenticated (§8.2). The signer never emits l=.
 *
 * Ownership: _new() objects are freed with the matching _free(), which
 * accepts NULL. Results and strings returned by accessors borrow from their
 * object. */

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dkim-canon.h"
#include "dkim-tags.h"
#include "mail-header.h"

typedef enum DkimAlgorithm {
        DKIM_ALGORITHM_RSA_SHA256,
        DKIM_ALGORITHM_ED25519_SHA256,
        _DKIM_ALGORITHM_MAX,
        _DKIM_ALGORITHM_INVALID = -EINVAL,
} DkimAlgorithm;

const char *dkim_algorithm_to_string(DkimAlgorithm a);
DkimAlgorithm dkim_algorithm_from_string(const char *s, size_t n);

/* Which header field a signature came from: the tags and rules differ. */
typedef enum DkimSigKind {
        DKIM_SIG_DKIM,          /* DKIM-Signature */
        DKIM_SIG_AMS,           /* ARC-Message-Signature: i= is the instance, no v= */
        DKIM_SIG_AS,            /* ARC-Seal: cv=, no h=/bh=/c= */
} DkimSigKind;

/* ARC-Seal cv= (RFC 8617 §4.1.3). */
typedef enum ArcCv {
        ARC_CV_NONE,
        ARC_CV_PASS,
        ARC_CV_FAIL,
        _ARC_CV_MAX,
        _ARC_CV_INVALID = -EINVAL,
} ArcCv;

const char *arc_cv_to_string(ArcCv cv);

#define ARC_MAX_INSTANCES 50U

typedef struct DkimSignature {
        DkimSigKind kind;
        DkimAlgorithm algorithm;
        DkimCanon header_canon, body_canon;
        char *domain;           /* d=, lower-cased */
        char *selector;         /* s= */
        char **headers;         /* h= names (lower-cased), n_headers of them */
        size_t n_headers;
        uint8_t *signature;     /* b= decoded */
        size_t signature_len;
        char *signature_b64;    /* b= without white space (A-R header.b uses a prefix) */
        uint8_t body_hash[DKIM_SHA256_LEN];
        char *identity;         /* DKIM i= (default "@" d=) */
        unsigned instance;      /* ARC i= */
        ArcCv cv;               /* ARC-Seal cv= */
        bool has_length;
        uint64_t length;        /* l= */
        bool has_timestamp;
        uint64_t timestamp;     /* t= */
        bool has_expire;
        uint64_t expire;        /* x= */
} DkimSignature;

/* Parses a signature field's value (after the colon). On failure returns
 * -EINVAL and, if reterr_reason is given, a static reason string; -ENOMEM.
 * Checks everything that can be checked without the key and the message:
 * required tags, tag syntax, algorithm, canonicalization, d=/s= syntax,
 * h= containing From (DKIM) and not ARC-Seal (AMS), t=/x= order. */
int dkim_signature_parse(DkimSigKind kind, const char *value, size_t n,
                         DkimSignature **ret, const char **reterr_reason);
DkimSignature *dkim_signature_free(DkimSignature *s);

/* "selector._domainkey.domain", newly allocated; NULL on OOM. */
char *dkim_key_name(const char *selector, const char *domain);

/* A DKIM key record (RFC 6376 §3.6.1, RFC 8463). */
typedef struct DkimKey {
        DkimAlgorithm algorithm;        /* from k= (rsa -> RSA_SHA256) */
        gnutls_pubkey_t pubkey;         /* NULL when revoked */
        unsigned bits;
        bool revoked;                   /* p= empty */
        bool testing;                   /* t=y */
        bool strict_identity;           /* t=s */
} DkimKey;

/* Parses a TXT record. -EINVAL with a reason for a record that is not a
 * usable DKIM key (bad syntax, v= not DKIM1, unknown k=, h= without sha256,
 * s= without email, undecodable p=), -ENOMEM. A revoked key (p= empty)
 * parses; verification then fails. */
int dkim_key_parse(const char *txt, size_t n, DkimKey **ret, const char **reterr_reason);
DkimKey *dkim_key_free(DkimKey *k);

/* Verifies sig over a SHA-256 digest. Returns 0 when valid, -EKEYREJECTED
 * for a key that does not fit (type mismatch, RSA below min_rsa_bits,
 * revoked), -EBADMSG for a wrong signature. */
int dkim_key_verify(const DkimKey *k, DkimAlgorithm a, unsigned min_rsa_bits,
                    const uint8_t digest[DKIM_SHA256_LEN], const uint8_t *sig, size_t sig_len,
                    const char **reterr_reason);

/* Loads a PEM private key (PKCS#1 "RSA PRIVATE KEY", PKCS#8, or an Ed25519
 * PKCS#8 key). Returns 0, -EINVAL, -ENOMEM. */
int dkim_privkey_load_pem(const char *pem, size_t n, gnutls_privkey_t *ret);

/* Signs a SHA-256 digest: PKCS#1 v1.5 for RSA, PureEdDSA over the 32
 * digest bytes for Ed25519. Refuses RSA keys below min_rsa_bits
 * (-EKEYREJECTED) and key types not matching a (-EINVAL). Returns the
 * signature newly allocated. */
int dkim_privkey_sign(gnutls_privkey_t key, DkimAlgorithm a, unsigned min_rsa_bits,
                      const uint8_t digest[DKIM_SHA256_LEN], uint8_t **ret, size_t *ret_len);

/* Base64 without white space; newly allocated, NULL on OOM. */
char *dkim_base64_encode(const uint8_t *p, size_t n);
/* Strict base64 (white space skipped, padding checked). -EINVAL, -ENOMEM. */
int dkim_base64_decode(const char *s, size_t n, uint8_t **ret, size_t *ret_len);

/* True for a syntactically valid domain name (LDH labels, or UTF-8
 * U-labels per RFC 8616), not starting or ending with a dot. */
bool dkim_domain_valid(const char *s, size_t n);

/* The raw signature field with its b= value removed (RFC 6376 §3.7), newly
 * allocated. -EINVAL when the field has no parsable b= tag. */
int dkim_field_strip_b(const char *raw, size_t n, char **ret, size_t *ret_len);

/* The header hash input of RFC 6376 §3.7: the fields selected bottom-up by
 * names from fields[0..n_fields), canonicalized, then the signature field
 * (b= already stripped) canonicalized without its CRLF. */
int dkim_hash_headers(DkimCanon c, const MailHeaderField *fields, size_t n_fields,
                      char *const *names, size_t n_names,
                      const char *sig_field, size_t sig_len, uint8_t ret[DKIM_SHA256_LEN]);

/* How a caller's TXT lookup ended. */
typedef enum DkimLookup {
        DKIM_LOOKUP_FOUND,      /* TXT records follow */
        DKIM_LOOKUP_NOT_FOUND,  /* NXDOMAIN or no TXT: a permanent failure */
        DKIM_LOOKUP_TEMPFAIL,   /* SERVFAIL, timeout: try again later */
} DkimLookup;

/* The keys one message needs, with the state of their lookups. Shared by
 * the DKIM verifier and the ARC validator. */
typedef struct DkimKeyEntry {
        char *name;
        bool asked;             /* handed out by next_query */
        bool answered;
        DkimLookup lookup;
        DkimKey *key;           /* when found and parsed */
        const char *reason;     /* why there is no key */
} DkimKeyEntry;

typedef struct DkimKeyTable {
        DkimKeyEntry *entries;
        size_t n, cap;
} DkimKeyTable;

/* Adds (or finds) the key for selector/domain. */
int dkim_key_table_add(DkimKeyTable *t, const char *selector, const char *domain, size_t *ret_index);
/* Hands out the next name not yet asked for: 1 with *ret_name (borrowed),
 * 0 when there is none. */
int dkim_key_table_next_query(DkimKeyTable *t, const char **ret_name);
/* Records an answer. txt[i] has length txt_len[i]; the first record that
 * parses as a DKIM key is used (RFC 6376 §3.6.2.2 lets a verifier pick).
 * -ENOENT for a name that was not asked for, -EALREADY for a repeated
 * answer, -ENOMEM. */
int dkim_key_table_answer(DkimKeyTable *t, const char *name, DkimLookup lookup,
                          const char *const *txt, const size_t *txt_len, size_t n_txt);
bool dkim_key_table_complete(const DkimKeyTable *t);
void dkim_key_table_done(DkimKeyTable *t);

/* A set of body hashers, one per distinct (canonicalization, l=). */
typedef struct DkimBodySet {
        DkimBodyHash **items;
        size_t n;
} DkimBodySet;

int dkim_body_set_add(DkimBodySet *s, DkimCanon c, uint64_t limit, size_t *ret_index);
int dkim_body_set_feed(DkimBodySet *s, const void *p, size_t n);
void dkim_body_set_done(DkimBodySet *s);

/* Verification of every DKIM-Signature in a message. */

typedef enum DkimStatus {
        DKIM_STATUS_PASS,
        DKIM_STATUS_FAIL,       /* the signature does not verify */
        DKIM_STATUS_NEUTRAL,    /* not checked: over the signature limit */
        DKIM_STATUS_POLICY,     /* valid, but refused by local policy (key too small) */
        DKIM_STATUS_TEMPERROR,  /* key lookup failed temporarily */
        DKIM_STATUS_PERMERROR,  /* malformed signature, no or bad key */
        _DKIM_STATUS_MAX,
} DkimStatus;

/* RFC 8601 result names: "pass", "fail", ... */
const char *dkim_status_to_string(DkimStatus s);

typedef struct DkimResult {
        DkimStatus status;
        const char *reason;             /* static text, NULL on pass */
        const DkimSignature *signature; /* NULL when the field did not parse */
        unsigned key_bits;
        bool testing;                   /* the key says t=y */
} DkimResult;

typedef struct DkimVerifyParams {
        uint64_t now;                   /* seconds since the epoch, for x=; 0: the real clock, read once */
        unsigned max_signatures;        /* 0: DKIM_MAX_SIGNATURES_DEFAULT */
        unsigned min_rsa_bits;          /* 0: 1024 */
        MailHeaderLimits header_limits;
} DkimVerifyParams;

#define DKIM_MAX_SIGNATURES_DEFAULT 10U

typedef struct DkimVerifier DkimVerifier;

/* Driving a verifier:
 *
 *   dkim_verifier_new(&params, &v);
 *   dkim_verifier_feed(v, chunk, n);   ... any number of times
 *   while (dkim_verifier_next_query(v, &name) > 0)  start a TXT lookup
 *   ... answers arrive: dkim_verifier_answer(v, name, status, txts, lens, n);
 *   dkim_verifier_feed_end(v);
 *   when dkim_verifier_is_done(v): read the results.
 *
 * Queries become available as soon as the header section is complete, so
 * lookups overlap with receiving the body; call next_query after every
 * feed (or just after feed_end). Answers may come before or after the end
 * of the body. */
int dkim_verifier_new(const DkimVerifyParams *params, DkimVerifier **ret);
DkimVerifier *dkim_verifier_free(DkimVerifier *v);

/* Returns 0, or -ENOMEM / -EIO. A malformed or oversized header section is
 * not an error here: it becomes a permerror result. */
int dkim_verifier_feed(DkimVerifier *v, const void *p, size_t n);
int dkim_verifier_feed_end(DkimVerifier *v);
int dkim_verifier_next_query(DkimVerifier *v, const char **ret_name);
int dkim_verifier_answer(DkimVerifier *v, const char *name, DkimLookup lookup,
                         const char *const *txt, const size_t *txt_len, size_t n_txt);
bool dkim_verifier_is_done(const DkimVerifier *v);

/* Available when done (else -EBUSY): the results in message order, one per
 * DKIM-Signature field (those beyond the limit as neutral). */
int dkim_verifier_results(DkimVerifier *v, const DkimResult **ret, size_t *ret_n);
/* The parsed header section (NULL before it is complete), for callers that
 * want to reuse it. */
const MailHeaders *dkim_verifier_headers(const DkimVerifier *v);

/* Signing. */

typedef struct DkimSignParams {
        const char *domain;             /* d= */
        const char *selector;           /* s= */
        gnutls_privkey_t key;           /* borrowed */
        DkimAlgorithm algorithm;
        const char *const *headers;     /* h= names, NULL-terminated; NULL: the default list */
        DkimCanon header_canon, body_canon;     /* zero: relaxed/relaxed */
        uint64_t timestamp;             /* t= */
        uint64_t expire_after;          /* 0: no x= */
        const char *identity;           /* i=, optional */
        unsigned min_rsa_bits;          /* 0: 2048 */
        MailHeaderLimits header_limits;
} DkimSignParams;

/* The default h= list: each of From, Subject, Date, To, Cc, Reply-To,
 * Message-ID is listed once more than it occurs, so adding one later
 * breaks the signature (over-signing); the others as present. */
extern const char *const dkim_default_sign_headers[];

typedef struct DkimSigner DkimSigner;

int dkim_signer_new(const DkimSignParams *params, DkimSigner **ret);
DkimSigner *dkim_signer_free(DkimSigner *s);
int dkim_signer_feed(DkimSigner *s, const void *p, size_t n);
int dkim_signer_feed_end(DkimSigner *s);
/* Computes the signature (the expensive step). *ret is the whole field,
 * "DKIM-Signature: ...\r\n", folded, newly allocated, to be prepended to
 * the message. -EBADMSG for a malformed header section or one without
 * exactly one From field; -EBUSY before feed_end. */
int dkim_signer_sign(DkimSigner *s, char **ret);
