/* SPDX-License-Identifier: MIT */
#pragma once

/* DMARC (RFC 7489): record parsing, the organizational domain (the Public
 * Suffix List through libpsl, reading Debian's publicsuffix data), identifier
 * alignment and the policy to apply. No I/O but the PSL file at
 * dmarc_psl_new(); DNS like spf.h: the evaluation lists its TXT queries
 * (_dmarc.<From domain>, then _dmarc.<organizational domain>) and takes the
 * resolver's answers.
 *
 *   dmarc_psl_new(NULL, &psl);         once per process
 *   dmarc_eval_new(psl, &params, &e);  params: From domain, SPF and DKIM results
 *   while (dmarc_eval_next_query(e, &name) > 0) ... dmarc_eval_answer(e, result);
 *   dmarc_eval_result(e, &res);
 *
 * pct= sampling uses params.random (0..99), so tests are repeatable.
 *
 * The Public Suffix List is applied as published, ICANN and PRIVATE
 * sections alike (libpsl's PSL_TYPE_ANY, what psl_registrable_domain()
 * uses): foo.github.io is its own organizational domain and github.io has
 * none. Unlisted TLDs follow the implicit "*" rule (a.b.test -> b.test).
 *
 * Ownership: _new() objects are freed with _free(), which accepts NULL.
 * dmarc_eval_new() borrows psl and params only for the call (alignment is
 * decided there); the result and its strings borrow from the evaluation. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns.h"
#include "mail-header.h"

typedef struct DmarcPsl DmarcPsl;

/* path NULL: /usr/share/publicsuffix/public_suffix_list.dafsa (Debian's
 * publicsuffix package), falling back to libpsl's built-in list. */
int dmarc_psl_new(const char *path, DmarcPsl **ret);
DmarcPsl *dmarc_psl_free(DmarcPsl *p);
/* The organizational domain of name (lower-cased, newly allocated), or
 * -EINVAL when name is itself a public suffix or malformed. */
int dmarc_org_domain(const DmarcPsl *p, const char *name, char **ret);

typedef enum DmarcPolicy {
        DMARC_POLICY_NONE,
        DMARC_POLICY_QUARANTINE,
        DMARC_POLICY_REJECT,
        _DMARC_POLICY_MAX,
        _DMARC_POLICY_INVALID = -EINVAL,
} DmarcPolicy;

const char *dmarc_policy_to_string(DmarcPolicy p);

/* fo= options (RFC 7489 §6.3); the default is fo=0. */
#define DMARC_FO_0 (1U << 0)
#define DMARC_FO_1 (1U << 1)
#define DMARC_FO_D (1U << 2)
#define DMARC_FO_S (1U << 3)

/* Bounds on what a record may make us hold: longer records are refused
 * (real ones are a few hundred bytes), URIs beyond the cap are dropped. */
#define DMARC_RECORD_MAX 4096U
#define DMARC_MAX_URIS 8U

typedef struct DmarcRecord {
        DmarcPolicy p, sp;              /* sp defaults to p */
        bool strict_dkim, strict_spf;   /* adkim=s, aspf=s */
        unsigned pct;                   /* 0..100, default 100 */
        char **rua, **ruf;              /* NULL-terminated, may be NULL */
        unsigned fo_mask;
        /* Added: the URIs above without their "!size" suffix; the size
         * limits in bytes (0: none), n_rua/n_ruf entries each. */
        uint64_t *rua_max_size, *ruf_max_size;
        size_t n_rua, n_ruf;
        uint32_t ri;                    /* ri=, default 86400 */
} DmarcRecord;

/* True if txt[0..n) starts with the version tag "v=DMARC1" (RFC 7489 §6.4;
 * "DMARC1" is case-sensitive): the TXT records that count as DMARC records
 * (§6.6.3 step 2 discards every other one). */
bool dmarc_record_is_dmarc1(const char *txt, size_t n);

/* -EINVAL with a static reason for a record that is not DMARC1 or lacks p=
 * (RFC 7489 §6.6.3: such a record is ignored), -ENOMEM.
 * Leniency, as §6.3 asks: unknown tags, tag-specs without "=" and repeated
 * tags (the first counts) are ignored; an invalid value of adkim, aspf,
 * pct, fo, ri or rf leaves that tag at its default; invalid URIs in
 * rua/ruf are skipped. A missing or invalid p=, or an invalid sp=, makes
 * the record p=none (and sp=none) when rua= has a valid URI (§6.6.3 step
 * 6), and -EINVAL otherwise. Longer than DMARC_RECORD_MAX: -EINVAL. */
int dmarc_record_parse(const char *txt, size_t n, DmarcRecord **ret, const char **reterr_reason);
DmarcRecord *dmarc_record_free(DmarcRecord *r);

typedef enum DmarcResultCode {
        DMARC_RESULT_NONE,
        DMARC_RESULT_PASS,
        DMARC_RESULT_FAIL,
        DMARC_RESULT_TEMPERROR,
        DMARC_RESULT_PERMERROR,
        _DMARC_RESULT_MAX,
} DmarcResultCode;

const char *dmarc_result_to_string(DmarcResultCode r);

typedef struct DmarcAuthDomain {
        const char *domain;
        bool pass;
} DmarcAuthDomain;

typedef struct DmarcParams {
        const char *from_domain;        /* RFC5322.From domain; NULL: permerror (no single From) */
        const char *spf_domain;         /* the SPF-checked domain (MAIL FROM or HELO) */
        bool spf_pass;
        const DmarcAuthDomain *dkim;    /* d= of each DKIM signature and whether it passed */
        size_t n_dkim;
        unsigned random;                /* 0..99, compared with pct= (taken modulo 100) */
} DmarcParams;

typedef struct DmarcResult {
        DmarcResultCode result;
        const char *from_domain, *org_domain, *record_domain;  /* NULL when unknown */
        DmarcPolicy policy;             /* p= or sp= in force */
        DmarcPolicy disposition;        /* after pct=; NONE on pass */
        unsigned pct;
        bool spf_aligned, dkim_aligned; /* passed and aligned (relaxed when there is no record) */
        const char *reason;             /* static text */
        const DmarcRecord *record;      /* NULL when none was found */
} DmarcResult;

typedef struct DmarcEval DmarcEval;

/* A From domain that is NULL or not a host name ends the evaluation at
 * once with permerror; -EINVAL only for NULL psl/params, -ENOMEM. */
int dmarc_eval_new(const DmarcPsl *psl, const DmarcParams *params, DmarcEval **ret);
DmarcEval *dmarc_eval_free(DmarcEval *e);
/* 1 with a TXT name to resolve (borrowed), 0 when waiting or done. */
int dmarc_eval_next_query(DmarcEval *e, const char **ret_name);
/* The answer to the name handed out last (qname compared without case or
 * trailing dot, qtype TXT): -ENOENT otherwise or when nothing is asked;
 * -ENOMEM. NXDOMAIN, NODATA and answers without a v=DMARC1 record move on
 * to the organizational domain (once); other statuses are temperror. A
 * v=DMARC1 record that is invalid, or several of them, ends in none
 * without that fallback (§6.6.3 steps 5 and 6). */
int dmarc_eval_answer(DmarcEval *e, const DnsResult *result);
bool dmarc_eval_is_done(const DmarcEval *e);
int dmarc_eval_result(DmarcEval *e, const DmarcResult **ret);

/* Identifier alignment (RFC 7489 §3.1) of an authenticated domain with the
 * From domain: equal names (strict), or equal organizational domains
 * (relaxed; a name that is itself a public suffix is its own). Case and a
 * trailing dot do not matter. False for NULL or malformed names. */
bool dmarc_aligned(const DmarcPsl *psl, const char *from_domain, const char *domain, bool strict);

/* The RFC5322.From domain of a header section: the one From field with
 * exactly one mailbox (RFC 7489 §6.6.1). -EBADMSG otherwise.
 * value[0..n) is the From field's value (after the colon, folding
 * included), an RFC 5322 mailbox-list (obsolete forms, RFC 6854 group
 * syntax and RFC 6532 UTF-8 accepted). The domain is returned lower-cased
 * (ASCII), newly allocated. -EBADMSG also for a domain literal ([1.2.3.4])
 * or a domain that is not a host name; -ENOMEM. */
int dmarc_from_domain(const char *value, size_t n, char **ret);

/* The same over a whole header section: exactly one From field is
 * required (none or several: -EBADMSG). */
int dmarc_from_domain_fields(const MailHeaderField *fields, size_t n_fields, char **ret);
