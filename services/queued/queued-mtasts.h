/* SPDX-License-Identifier: MIT */
#pragma once

/* MTA-STS (RFC 8461) for halyard-queued.
 *
 * Discovery: the `_mta-sts.<domain>` TXT record ("v=STSv1; id=...;"),
 * looked up through shared/dns.h (libunbound). Exactly one record starting
 * with "v=STSv1" must be there, else the domain has no (new) policy.
 *
 * Fetch: https://mta-sts.<domain>/.well-known/mta-sts.txt through
 * shared/http.h (libcurl on the sd-event loop): nothing blocks. The policy
 * host's addresses come from our own resolver too (handed over as the
 * request's resolve entry), so all DNS goes through libunbound. Limits
 * (RFC 8461 §3.3): HTTPS with TLS 1.2 or later, WebPKI-valid certificate
 * for the policy host, redirects refused, HTTP 200 only, Content-Type
 * text/plain, at most MTASTS_POLICY_MAX bytes, a timeout
 * (MTASTS_FETCH_TIMEOUT_USEC). No HTTP caching is used.
 *
 * Cache: one small JSON file per policy domain in a directory of queued's
 * state ({"id", "fetched", "policy"}), read at each use, so policies survive
 * restarts. A cached policy is used while fetched + max_age is in the
 * future; it is refetched when the TXT id differs or once half its max_age
 * has passed. A missing TXT record or a failed fetch never removes a cached
 * policy (RFC 8461 §3.3, §5.1).
 *
 * Failures are reported with the RFC 8460 result types
 * sts-policy-fetch-error, sts-policy-invalid and sts-webpki-invalid; the
 * delivery then goes on as if there were no policy (unless a cached one
 * still applies). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "dns.h"
#include "macro.h"
#include "queued-tls.h"

#define MTASTS_POLICY_MAX (64U * 1024U)          /* bytes of policy text */
#define MTASTS_MAX_AGE_MAX 31557600U             /* one year (RFC 8461 §3.2) */
#define MTASTS_MX_MAX 64U                        /* mx lines kept */
#define MTASTS_ID_MAX 32U                        /* 1*32(ALPHA / DIGIT) */
#define MTASTS_FETCH_TIMEOUT_USEC (60ULL * 1000000ULL)

typedef enum MtaStsMode {
        MTASTS_MODE_NONE,
        MTASTS_MODE_TESTING,
        MTASTS_MODE_ENFORCE,
        _MTASTS_MODE_MAX,
        _MTASTS_MODE_INVALID = -EINVAL,
} MtaStsMode;

const char *mtasts_mode_to_string(MtaStsMode m);

typedef struct MtaStsPolicy {
        MtaStsMode mode;
        uint32_t max_age;
        char **mx;        /* patterns, NULL-terminated */
        char **lines;     /* the policy's lines (for TLS reports), NULL-terminated */
} MtaStsPolicy;

/* Parses one TXT record (the character-strings joined). 1 and the id when
 * it is an STSv1 record, 0 when it does not start with "v=STSv1" (someone
 * else's record), -EBADMSG when it starts so but is malformed. */
int mtasts_txt_parse(const char *txt, size_t len, char ret_id[static MTASTS_ID_MAX + 1]);

/* Parses policy text (RFC 8461 §3.2): CRLF or LF lines "key: value";
 * version STSv1, a valid mode and max_age, and for enforce/testing at least
 * one mx are required; unknown keys are ignored; a key given twice (other
 * than mx) keeps the first. -EBADMSG for an invalid policy, -ENOMEM.
 * *ret is set only on success; release with mtasts_policy_done(). */
int mtasts_policy_parse(const char *text, size_t len, MtaStsPolicy *ret);
void mtasts_policy_done(MtaStsPolicy *p);
/* Deep copy; -ENOMEM. */
int mtasts_policy_copy(const MtaStsPolicy *p, MtaStsPolicy *ret);

/* Whether an MX host name matches a policy pattern: case-insensitive,
 * final dots ignored, "*.example.com" matches exactly one more label. */
bool mtasts_mx_match(const char *pattern, const char *host);
/* Whether host matches any of the policy's patterns. */
bool mtasts_policy_allows(const MtaStsPolicy *p, const char *host);

/* ---- fetching and caching -------------------------------------------------- */

typedef struct MtaStsContext MtaStsContext;
typedef struct MtaStsLookup MtaStsLookup;

typedef struct MtaStsConfig {
        const char *cache_dir;   /* created if missing; NULL: no cache */
        const char *ca_file;     /* trusted CAs for the policy host; NULL: the system store */
        uint16_t port;           /* TEST ONLY: HTTPS port of mta-sts.<domain>; 0 = 443 */
        uint64_t timeout_usec;   /* 0 = MTASTS_FETCH_TIMEOUT_USEC */
} MtaStsConfig;

/* resolver is borrowed and must outlive the context. */
int mtasts_context_new(sd_event *e, DnsResolver *resolver, const MtaStsConfig *cfg, MtaStsContext **ret);
MtaStsContext *mtasts_context_free(MtaStsContext *ctx);
DEFINE_TRIVIAL_CLEANUP_FUNC(MtaStsContext *, mtasts_context_free);

typedef struct MtaStsOutcome {
        const char *domain;
        /* The policy to apply (fetched now or cached), or NULL: none. */
        const MtaStsPolicy *policy;
        bool from_cache;
        /* Failure while discovering/fetching (NONE if none), with a reason;
         * may come with a (cached) policy. */
        TlsResultType failure;
        const char *failure_reason;
} MtaStsOutcome;

typedef void (*MtaStsCallback)(MtaStsLookup *l, const MtaStsOutcome *o, void *userdata);

/* Finds the policy of domain: TXT, cache, fetch. The callback runs exactly
 * once (never from within this call) unless mtasts_lookup_cancel() comes
 * first; the outcome is borrowed for the callback's duration. */
int mtasts_lookup_start(MtaStsContext *ctx, const char *domain, MtaStsCallback cb, void *userdata, MtaStsLookup **ret);
void mtasts_lookup_cancel(MtaStsLookup *l);

/* The cache file's content for a policy: exposed for tests. */
int mtasts_cache_read(const char *dir, const char *domain, char **ret_id, uint64_t *ret_fetched, char **ret_text);
int mtasts_cache_write(const char *dir, const char *domain, const char *id, uint64_t fetched, const char *text);
