/* SPDX-License-Identifier: MIT */
#pragma once

/* Asynchronous, DNSSEC-validating DNS resolution on an sd-event loop, over
 * libunbound.
 *
 * libunbound runs in its threaded async mode (ub_ctx_async(ctx, 1)): one
 * resolver thread owned by libunbound does the network work and keeps the
 * cache (which honours TTLs); answers come back through a pipe whose read
 * end (ub_fd) is an sd-event I/O source, and ub_process() runs there, on
 * the loop thread. Threads rather than fork: the services already run
 * worker threads (fork of a threaded process is unsafe), the child would
 * not share sanitizer state, and a thread needs no reaping.
 *
 * Nothing here blocks the loop: the only file reads (trust anchor, at the
 * first query) are of small local files.
 *
 * Lifetimes: dns_query() calls its callback exactly once, unless
 * dns_query_cancel() is called first. The DnsQuery handle is valid until the
 * callback returns or the cancel; cancelling from inside the query's own
 * callback is a no-op. dns_resolver_free() completes every outstanding
 * query with DNS_STATUS_CANCELED (callbacks run from within the free). It may
 * be called from a query callback; the libunbound context is then torn down
 * when the loop's dispatch returns.
 *
 * Results passed to callbacks are borrowed: valid only during the callback.
 *
 * Record parsing is the pure function dns_parse_rdata(): bounds-checked,
 * refusing compression pointers and extended label types (libunbound hands
 * out rdata with names decompressed, so a pointer there is malformed).
 * Malformed rdata in an answer is skipped and counted (n_malformed), never
 * fatal. Names come back in presentation form, lower-cased, without the
 * trailing dot (the root is "."); bytes other than [a-z0-9-_*] inside a
 * label are escaped as \DDD so a label can never forge a dot. */

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"

typedef struct DnsResolver DnsResolver;
typedef struct DnsQuery DnsQuery;

enum {
        DNS_TYPE_A = 1,
        DNS_TYPE_CNAME = 5,
        DNS_TYPE_PTR = 12,
        DNS_TYPE_MX = 15,
        DNS_TYPE_TXT = 16,
        DNS_TYPE_AAAA = 28,
        DNS_TYPE_TLSA = 52,
};

enum {
        DNS_RCODE_NOERROR = 0,
        DNS_RCODE_SERVFAIL = 2,
        DNS_RCODE_NXDOMAIN = 3,
};

/* Longest presentation-form name dns_name_to_text() can produce: 255 wire
 * octets, each escaped as \DDD, plus the NUL. */
#define DNS_NAME_TEXT_MAX (255 * 4 + 1)

typedef enum DnsStatus {
        DNS_STATUS_OK,        /* NOERROR with records of the asked type (may all be malformed: see n_records) */
        DNS_STATUS_NODATA,    /* NOERROR, the name exists, no records of that type */
        DNS_STATUS_NXDOMAIN,  /* the name does not exist */
        DNS_STATUS_SERVFAIL,  /* the resolver failed: SERVFAIL, REFUSED, other rcodes, bogus DNSSEC */
        DNS_STATUS_TIMEOUT,   /* our per-query timer fired */
        DNS_STATUS_ERROR,     /* local failure (libunbound error, out of memory): see error */
        DNS_STATUS_CANCELED,  /* the resolver was freed while the query was outstanding */
        _DNS_STATUS_MAX,
} DnsStatus;

typedef enum DnsSecurity {
        DNS_INSECURE, /* no DNSSEC chain (or outside every trust anchor) */
        DNS_SECURE,   /* validated from a trust anchor (data, or the denial of it) */
        DNS_BOGUS,    /* validation failed: see why_bogus; status is SERVFAIL, the data withheld */
} DnsSecurity;

typedef struct DnsRecord {
        uint16_t type;
        union {
                struct in_addr a;
                struct in6_addr aaaa;
                struct {
                        uint16_t preference;
                        char *exchange; /* "." for a null MX (RFC 7505) */
                } mx;
                struct {
                        /* the character-strings of one record, concatenated
                         * without separators (RFC 7208 §3.3, RFC 8460 §3);
                         * may contain NUL bytes: len is the truth; always
                         * NUL-terminated too */
                        char *text;
                        size_t len;
                        size_t n_strings;
                } txt;
                struct {
                        uint8_t usage, selector, matching_type;
                        uint8_t *data;
                        size_t len;
                } tlsa;
                struct {
                        char *target;
                } cname;
                struct {
                        char *name;
                } ptr;
        };
} DnsRecord;

typedef struct DnsResult {
        const char *qname;       /* as asked */
        uint16_t qtype;
        DnsStatus status;
        int rcode;               /* DNS rcode as received (SERVFAIL for local errors) */
        int error;               /* negative errno for TIMEOUT/ERROR/CANCELED, else 0 */
        DnsSecurity security;
        const char *why_bogus;   /* for DNS_BOGUS, the validator's reason (may be NULL) */
        uint32_t ttl;            /* of the answer (negative-caching TTL for NODATA/NXDOMAIN) */
        const char *canonical;   /* the name after following CNAMEs, NULL if there were none */
        DnsRecord *records;      /* the well-formed records of qtype, in answer order */
        size_t n_records;
        size_t n_malformed;      /* rdata that failed to parse and were skipped */
} DnsResult;

typedef void (*DnsCallback)(DnsQuery *q, const DnsResult *result, void *userdata);

typedef struct DnsConfig {
        /* Forward every query to these ("ADDR" or "ADDR@PORT"), NULL-terminated.
         * NULL or empty: full recursion from the root hints. Loopback
         * forwarders are allowed (do-not-query-localhost: no). */
        const char *const *forwarders;
        /* Trust anchor: a DS/DNSKEY file read as is (tests: the test zone's
         * DS). NULL: trust_anchor_autr if set, else DNS_SYSTEM_TRUST_ANCHOR
         * (Debian dns-root-data, read-only; follows package updates, no
         * RFC 5011 rollover of our own). */
        const char *trust_anchor_file;
        /* An RFC 5011 managed anchor file that libunbound rewrites: must be
         * in our state directory (a copy of root.key), never under /usr. */
        const char *trust_anchor_autr;
        /* Turn DNSSEC validation off entirely (everything is INSECURE). */
        bool no_dnssec;
        /* Zones made "transparent" so libunbound's built-in local zones
         * (test., invalid., home.arpa. ...) do not answer NXDOMAIN for them.
         * NULL-terminated, e.g. { "halyard.test", NULL }. */
        const char *const *transparent_zones;
        uint64_t timeout_usec;       /* per query; 0 = DNS_DEFAULT_TIMEOUT_USEC */
        unsigned max_outstanding;    /* 0 = DNS_DEFAULT_MAX_OUTSTANDING */
} DnsConfig;

#define DNS_SYSTEM_TRUST_ANCHOR "/usr/share/dns/root.key"
#define DNS_DEFAULT_TIMEOUT_USEC (30ULL * 1000000ULL)
#define DNS_DEFAULT_MAX_OUTSTANDING 1024U
#define DNS_MAX_OUTSTANDING_LIMIT 65536U

typedef struct DnsStats {
        uint64_t started, completed, timeouts, canceled, malformed;
        unsigned outstanding;
} DnsStats;

/* cfg may be NULL (defaults). Attaches to e (referenced). -EINVAL for a bad
 * forwarder or option, -ENOENT for a missing trust anchor file. */
int dns_resolver_new(sd_event *e, const DnsConfig *cfg, DnsResolver **ret);
DnsResolver *dns_resolver_free(DnsResolver *r);
void dns_resolver_get_stats(DnsResolver *r, DnsStats *ret);

/* Starts resolving name (presentation form, trailing dot optional) for
 * rrtype (class IN). Returns 0 and (if ret_query) the handle, or -EINVAL
 * (bad name), -EBUSY (max_outstanding reached), -ESHUTDOWN (resolver being
 * freed), -ENOMEM, -EIO (libunbound refused). The callback never runs
 * before dns_query() has returned. */
int dns_query(DnsResolver *r, const char *name, uint16_t rrtype, DnsCallback cb, void *userdata,
              DnsQuery **ret_query);
void dns_query_cancel(DnsQuery *q);

/* Pure parser for one record's rdata. On success (0) *ret owns heap memory:
 * release with dns_record_done(). -EBADMSG: malformed; -EOPNOTSUPP: a type
 * not listed above. *ret is untouched on failure. */
int dns_parse_rdata(uint16_t type, const uint8_t *rdata, size_t len, DnsRecord *ret);
void dns_record_done(DnsRecord *rec);

/* Decodes an uncompressed wire-format name occupying exactly len bytes into
 * buf (at least DNS_NAME_TEXT_MAX bytes). 0 or -EBADMSG. */
int dns_name_to_text(const uint8_t *wire, size_t len, char buf[static DNS_NAME_TEXT_MAX]);

const char *dns_status_to_string(DnsStatus s);
const char *dns_security_to_string(DnsSecurity s);
const char *dns_type_to_string(uint16_t type); /* "A", "MX", ...; "?" for others */
/* SERVFAIL, TIMEOUT, ERROR, CANCELED: try again later. */
bool dns_status_is_temporary(DnsStatus s);

/* The [DNS] section every service that resolves shares, for its ConfigKey
 * table: Forwarders=, TrustAnchor=, TransparentZones=, DNSSEC=, Timeout=. */
#define DNS_CONFIG_KEYS                                      \
        { "DNS", "Forwarders", CONFIG_LIST },                \
        { "DNS", "TrustAnchor", CONFIG_STRING },             \
        { "DNS", "TransparentZones", CONFIG_LIST },          \
        { "DNS", "DNSSEC", CONFIG_BOOL },                    \
        { "DNS", "Timeout", CONFIG_DURATION }

/* A resolver set up from c's [DNS] section. */
int dns_resolver_new_from_config(sd_event *e, const Config *c, DnsResolver **ret);
