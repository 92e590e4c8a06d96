/* SPDX-License-Identifier: MIT */
#pragma once

/* The next-hop list for a destination domain (RFC 5321 §5.1, RFC 7505),
 * resolved asynchronously through shared/dns.h.
 *
 *  - MX lookup; hosts sorted by preference, shuffled among equal
 *    preferences (random source injectable for tests); a host listed twice
 *    keeps its lowest preference; at most max_hosts are used (the most
 *    preferred), the rest are counted in n_skipped.
 *  - For every host, A and AAAA lookups in parallel (each family can be
 *    switched off). IPv4 addresses come first unless prefer_ipv6.
 *  - No MX (NODATA or NXDOMAIN): the implicit MX, the domain itself at
 *    preference 0 (RFC 5321 §5.1).
 *  - Null MX (RFC 7505: the only MX is "0 ."): permanent failure 5.1.10,
 *    no address lookups. A "." exchange among other MX records is not a
 *    null MX; it is skipped like any unusable exchange.
 *  - MX exchange that is an IP address ("10 192.0.2.1."): invalid (RFC 5321
 *    §5.1 wants a domain name; RFC 1035 §3.3.9); skipped and counted, as
 *    Postfix does ("numeric domain name in resource data"). If nothing is
 *    left: temporary failure.
 *  - MX exchange that is a CNAME (forbidden by RFC 2181 §10.3, common in
 *    practice): followed, as Postfix and every resolver do. The host keeps
 *    the MX name in name; the CNAME target is reported in canonical (DANE's
 *    TLSA base domain candidate, RFC 7672 §2.2.2).
 *  - DNS temporary failure on the MX lookup (SERVFAIL, bogus, timeout):
 *    temporary failure 4.4.3.
 *  - No host has an address: temporary failure (4.4.3 if any lookup failed
 *    temporarily, else 4.4.4) for explicit MX hosts, so a broken MX gets the
 *    queue lifetime to be fixed (Postfix bounces 5.4.4 here); for the
 *    implicit MX, definite NXDOMAIN/NODATA on every enabled family is
 *    permanent 5.1.2 (the domain has no mail service at all).
 *  - Hosts that did not resolve stay in the list (n_addresses 0, error set)
 *    so callers can log and report them; delivery just skips them.
 *  - DNSSEC: mx_secure says whether the MX answer (or, for the implicit MX,
 *    its denial) validated; each host and each address says the same for
 *    its A/AAAA lookups. DANE (RFC 7672 §2.2) needs both.
 *
 * Not handled here: "the local host is one of the MX hosts" pruning
 * (RFC 5321 §5.1 last paragraph) needs the local names; domain literals
 * ([192.0.2.1]) need no lookup and are refused with -EINVAL.
 *
 * The callback runs exactly once unless mx_lookup_cancel() comes first;
 * never from within mx_lookup_start(). The result is borrowed (valid during
 * the callback). The MxLookup is freed after its callback returns;
 * cancelling it from inside its callback is a no-op. Free lookups before
 * the resolver (or let the resolver's free complete them: temporary). */

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns.h"

typedef struct MxLookup MxLookup;

typedef struct MxAddress {
        int family; /* AF_INET or AF_INET6 */
        union {
                struct in_addr in;
                struct in6_addr in6;
        };
        bool secure; /* the A/AAAA answer it came from validated */
} MxAddress;

typedef struct MxHost {
        char *name;       /* the MX exchange (lower-case, no final dot), or the domain if implicit */
        char *canonical;  /* where the address lookups' CNAMEs led, NULL if no CNAME */
        uint16_t preference;
        bool secure;      /* every address lookup that ran (answer or denial) was secure */
        MxAddress *addresses;
        size_t n_addresses;
        char *error;      /* why there is no address (NULL if there are some) */
        bool temporary;   /* error is a temporary DNS failure */
} MxHost;

typedef enum MxStatus {
        MX_OK,
        MX_TEMPORARY, /* try again later */
        MX_PERMANENT, /* bounce now */
} MxStatus;

typedef struct MxResult {
        const char *domain;
        MxStatus status;
        const char *enhanced_status; /* RFC 3463 code for failures ("5.1.10", "4.4.3", ...), NULL if ok */
        const char *reason;          /* human-readable, for failures (NULL if ok) */
        bool implicit;               /* no MX RRset: the domain itself is the one host */
        bool mx_secure;              /* the MX answer, or its denial, validated */
        bool mx_bogus;               /* the MX answer failed DNSSEC validation (status TEMPORARY) */
        uint32_t ttl;                /* smallest TTL of the answers used */
        MxHost *hosts;               /* by preference; equal preferences in random order */
        size_t n_hosts;
        size_t n_usable;             /* hosts with at least one address */
        size_t n_skipped;            /* MX records not used (IP literal, stray ".", duplicates, over max_hosts) */
} MxResult;

typedef void (*MxCallback)(MxLookup *l, const MxResult *result, void *userdata);

typedef struct MxConfig {
        bool disable_ipv4, disable_ipv6; /* both set: -EINVAL */
        bool prefer_ipv6;                /* order IPv6 addresses first */
        unsigned max_hosts;              /* 0 = MX_DEFAULT_MAX_HOSTS */
        /* Random source for shuffling equal preferences: returns a uniform
         * value in [0, bound). NULL = arc4random_uniform(). */
        uint32_t (*random_uniform)(uint32_t bound, void *userdata);
        void *random_userdata;
} MxConfig;

#define MX_DEFAULT_MAX_HOSTS 16U

/* Starts the lookup for domain (an A-label domain, final dot optional; no
 * domain literals). cfg may be NULL (defaults) and is copied. */
int mx_lookup_start(DnsResolver *r, const char *domain, const MxConfig *cfg, MxCallback cb, void *userdata,
                    MxLookup **ret);
void mx_lookup_cancel(MxLookup *l);

const char *mx_status_to_string(MxStatus s);
