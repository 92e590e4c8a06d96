/* SPDX-License-Identifier: MIT */
#pragma once

/* SPF (RFC 7208): check_host() as a state machine that does no I/O.
 *
 * Like the DKIM verifier (dkim.h), it never blocks: it lists the DNS
 * queries it needs, one at a time (SPF evaluation is sequential: the next
 * mechanism depends on the last answer), and the caller answers them with
 * the DnsResult its resolver produced (dns.h) — libunbound in arcd, a table
 * in the unit tests.
 *
 *   spf_check_new(&params, &c);
 *   while (!spf_check_is_done(c)) {
 *           spf_check_next_query(c, &name, &type);   -> 1: ask the resolver
 *           ... later, in the resolver callback:
 *           spf_check_answer(c, result);
 *   }
 *   spf_check_result(c, &res);
 *
 * Limits (§4.6.4): at most max_lookups (10) DNS-querying terms (include, a,
 * mx, ptr, exists, redirect), at most 10 names per mx and ptr, at most
 * max_void_lookups (2) answers that are NXDOMAIN or empty: beyond them the
 * result is permerror. A temporary DNS failure is temperror. Macros (§7)
 * are expanded, including the exp= explanation (fetched only on fail).
 *
 * Identities: with a MAIL FROM the identity is "mailfrom" and <domain> its
 * domain (no local-part: "postmaster"); with the null sender (mail_from
 * NULL or "") it is "helo": <sender> is postmaster@helo (§2.4). A separate
 * HELO check (§2.3) is a check with mail_from NULL.
 *
 * Names handed out are lower-case, without a trailing dot and never
 * escaped: always acceptable to dns_query(). A macro that expands to a name
 * DNS cannot carry (an empty or 64-octet label, a space, a backslash...)
 * names no host: that mechanism does not match, without a query. Names in
 * answers (MX, PTR) may come \DDD-escaped as dns.c gives them.
 *
 * Void lookups are NXDOMAIN or empty answers to the address, MX and PTR
 * queries of a, mx, ptr and exists (also an mx's or ptr's per-name address
 * lookups), never the TXT of a record or of exp=. A ptr mechanism looks up
 * only the PTR names within its target; %{p} costs no lookups.
 *
 * Ownership: _new() objects are freed with _free(), which accepts NULL.
 * The result borrows from the check. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns.h"

typedef enum SpfResultCode {
        SPF_RESULT_NONE,
        SPF_RESULT_NEUTRAL,
        SPF_RESULT_PASS,
        SPF_RESULT_FAIL,
        SPF_RESULT_SOFTFAIL,
        SPF_RESULT_TEMPERROR,
        SPF_RESULT_PERMERROR,
        _SPF_RESULT_MAX,
} SpfResultCode;

/* RFC 8601 names: "none", "neutral", "pass", ... */
const char *spf_result_to_string(SpfResultCode r);

typedef struct SpfParams {
        const char *client_ip;          /* IPv4 or IPv6 text */
        const char *helo;               /* may be NULL */
        const char *mail_from;          /* reverse-path without <>; NULL or "" for the null sender (HELO identity) */
        const char *receiver;           /* %{r}; NULL: "unknown" */
        uint64_t now;                   /* %{t}; 0: the real clock */
        unsigned max_lookups;           /* 0: 10 */
        unsigned max_void_lookups;      /* 0: 2 */
} SpfParams;

typedef struct SpfResult {
        SpfResultCode result;
        const char *identity;           /* "mailfrom" or "helo" */
        const char *domain;             /* the domain checked */
        const char *sender;             /* "localpart@domain" used (postmaster@helo for the null sender) */
        const char *reason;             /* static text, or the mechanism that matched */
        const char *explanation;        /* expanded exp=, only on fail; may be NULL */
        unsigned lookups, void_lookups;
} SpfResult;

typedef struct SpfCheck SpfCheck;

/* -EINVAL for an unparsable client_ip. A missing or malformed identity is
 * not an error: the check ends at once (none, or permerror as §4.3 says). */
int spf_check_new(const SpfParams *params, SpfCheck **ret);
SpfCheck *spf_check_free(SpfCheck *c);

/* 1 with the next name (borrowed, valid until the answer) and rrtype
 * (DNS_TYPE_TXT, _A, _AAAA, _MX, _PTR) to resolve; 0 when nothing is to be
 * asked now (waiting for an answer, or done). */
int spf_check_next_query(SpfCheck *c, const char **ret_name, uint16_t *ret_type);
/* The resolver's answer to the query handed out last (result->qname and
 * qtype must match: -ENOENT otherwise). */
int spf_check_answer(SpfCheck *c, const DnsResult *result);
bool spf_check_is_done(const SpfCheck *c);
/* -EBUSY before done. */
int spf_check_result(SpfCheck *c, const SpfResult **ret);
