/* SPDX-License-Identifier: MIT */
/* Next-hop resolution for halyard-queued: MX, then A/AAAA of each host.
 * Policy decisions are documented in queued-mx.h. */

#include "queued-mx.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "macro.h"

enum { FAM_V4, FAM_V6, _FAM_MAX };

typedef struct HostState {
        MxHost host;
        DnsQuery *query[_FAM_MAX];
        bool ran[_FAM_MAX];
        DnsStatus status[_FAM_MAX];
        DnsSecurity security[_FAM_MAX];
        MxAddress *addrs[_FAM_MAX];
        size_t n_addrs[_FAM_MAX];
        struct MxLookup *lookup;
} HostState;

struct MxLookup {
        DnsResolver *resolver;
        char *domain;
        MxConfig cfg;
        MxCallback cb;
        void *userdata;

        DnsQuery *mx_query;
        bool implicit, mx_secure, mx_nxdomain, mx_bogus;
        uint32_t ttl;
        size_t n_skipped;

        HostState *hosts;
        size_t n_hosts;
        unsigned pending;
        bool in_callback;
};

const char *mx_status_to_string(MxStatus s) {
        switch (s) {
        case MX_OK:
                return "ok";
        case MX_TEMPORARY:
                return "temporary";
        case MX_PERMANENT:
                return "permanent";
        }
        return "?";
}

static void lookup_free(MxLookup *l) {
        if (!l)
                return;
        dns_query_cancel(l->mx_query);
        for (size_t i = 0; i < l->n_hosts; i++) {
                HostState *h = &l->hosts[i];
                for (int f = 0; f < _FAM_MAX; f++) {
                        dns_query_cancel(h->query[f]);
                        free(h->addrs[f]);
                }
                free(h->host.name);
                free(h->host.canonical);
                free(h->host.addresses);
                free(h->host.error);
        }
        free(l->hosts);
        free(l->domain);
        free(l);
}

static void ttl_min(MxLookup *l, uint32_t ttl) {
        if (l->ttl == 0 || ttl < l->ttl)
                l->ttl = ttl;
}

/* Runs the callback once and frees the lookup. */
static void lookup_finish(MxLookup *l, MxResult *res) {
        MxHost *hosts = NULL;

        res->domain = l->domain;
        res->implicit = l->implicit;
        res->mx_secure = l->mx_secure;
        res->mx_bogus = l->mx_bogus;
        res->ttl = l->ttl;
        res->n_skipped = l->n_skipped;
        if (res->status == MX_OK && l->n_hosts > 0) {
                hosts = calloc(l->n_hosts, sizeof *hosts);
                if (hosts) {
                        for (size_t i = 0; i < l->n_hosts; i++)
                                hosts[i] = l->hosts[i].host;
                        res->hosts = hosts;
                        res->n_hosts = l->n_hosts;
                } else {
                        res->status = MX_TEMPORARY;
                        res->enhanced_status = "4.3.0";
                        res->reason = "out of memory";
                        res->n_usable = 0;
                }
        }
        l->in_callback = true;
        l->cb(l, res, l->userdata);
        free(hosts);
        lookup_free(l);
}

static void lookup_fail(MxLookup *l, MxStatus status, const char *code, const char *fmt, ...) _printf_(4, 5);
static void lookup_fail(MxLookup *l, MxStatus status, const char *code, const char *fmt, ...) {
        char reason[600];
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(reason, sizeof reason, fmt, ap);
        va_end(ap);
        MxResult res = { .status = status, .enhanced_status = code, .reason = reason };
        lookup_finish(l, &res);
}

static const char *why(const DnsResult *res) {
        if (res->security == DNS_BOGUS)
                return "DNSSEC validation failed";
        return dns_status_to_string(res->status);
}

/* Builds each host's address list and error, then decides. */
static void lookup_complete(MxLookup *l) {
        size_t usable = 0;
        bool any_temp = false;
        int order[_FAM_MAX] = { FAM_V4, FAM_V6 };

        if (l->cfg.prefer_ipv6) {
                order[0] = FAM_V6;
                order[1] = FAM_V4;
        }

        for (size_t i = 0; i < l->n_hosts; i++) {
                HostState *h = &l->hosts[i];
                size_t n = h->n_addrs[FAM_V4] + h->n_addrs[FAM_V6];
                bool secure = true, temp = false;

                for (int f = 0; f < _FAM_MAX; f++) {
                        if (!h->ran[f])
                                continue;
                        if (dns_status_is_temporary(h->status[f]))
                                temp = true;
                        if (h->security[f] != DNS_SECURE)
                                secure = false;
                }
                h->host.secure = secure && !temp;
                if (n > 0) {
                        h->host.addresses = calloc(n, sizeof(MxAddress));
                        if (!h->host.addresses) {
                                lookup_fail(l, MX_TEMPORARY, "4.3.0", "out of memory");
                                return;
                        }
                        for (int k = 0; k < _FAM_MAX; k++) {
                                int f = order[k];
                                if (h->n_addrs[f] == 0)
                                        continue;
                                memcpy(h->host.addresses + h->host.n_addresses, h->addrs[f],
                                       h->n_addrs[f] * sizeof(MxAddress));
                                h->host.n_addresses += h->n_addrs[f];
                        }
                        usable++;
                        continue;
                }
                char buf[300];
                if (temp) {
                        any_temp = true;
                        h->host.temporary = true;
                        (void) snprintf(buf, sizeof buf, "temporary DNS failure looking up %s%s%s",
                                        h->ran[FAM_V4] ? "A" : "", h->ran[FAM_V4] && h->ran[FAM_V6] ? "/" : "",
                                        h->ran[FAM_V6] ? "AAAA" : "");
                } else
                        (void) snprintf(buf, sizeof buf, "no %s%s%s record",
                                        h->ran[FAM_V4] ? "A" : "", h->ran[FAM_V4] && h->ran[FAM_V6] ? "/" : "",
                                        h->ran[FAM_V6] ? "AAAA" : "");
                h->host.error = strdup(buf);
        }

        if (usable > 0) {
                MxResult res = { .status = MX_OK, .n_usable = usable };
                lookup_finish(l, &res);
                return;
        }
        if (l->implicit) {
                if (any_temp)
                        lookup_fail(l, MX_TEMPORARY, "4.4.3",
                                    "DNS failure looking up the address of %.255s (no MX records)", l->domain);
                else if (l->mx_nxdomain)
                        lookup_fail(l, MX_PERMANENT, "5.1.2", "domain %.255s does not exist", l->domain);
                else
                        lookup_fail(l, MX_PERMANENT, "5.1.2", "domain %.255s has no MX and no address records",
                                    l->domain);
                return;
        }
        if (any_temp)
                lookup_fail(l, MX_TEMPORARY, "4.4.3", "DNS failure looking up the MX hosts of %.255s", l->domain);
        else
                lookup_fail(l, MX_TEMPORARY, "4.4.4", "no MX host of %.255s has an address", l->domain);
}

static void on_addr(DnsQuery *q, const DnsResult *res, void *userdata) {
        HostState *h = userdata;
        MxLookup *l = h->lookup;
        int f = res->qtype == DNS_TYPE_AAAA ? FAM_V6 : FAM_V4;

        h->query[f] = NULL;
        h->status[f] = res->status;
        h->security[f] = res->security;
        if (res->status == DNS_STATUS_OK || res->status == DNS_STATUS_NODATA || res->status == DNS_STATUS_NXDOMAIN)
                ttl_min(l, res->ttl);
        if (res->canonical && !h->host.canonical)
                h->host.canonical = strdup(res->canonical);
        if (res->status == DNS_STATUS_OK && res->n_records > 0) {
                h->addrs[f] = calloc(res->n_records, sizeof(MxAddress));
                if (h->addrs[f]) {
                        for (size_t i = 0; i < res->n_records; i++) {
                                MxAddress *a = &h->addrs[f][h->n_addrs[f]];
                                if (res->records[i].type != res->qtype)
                                        continue;
                                a->secure = res->security == DNS_SECURE;
                                if (f == FAM_V4) {
                                        a->family = AF_INET;
                                        a->in = res->records[i].a;
                                } else {
                                        a->family = AF_INET6;
                                        a->in6 = res->records[i].aaaa;
                                }
                                h->n_addrs[f]++;
                        }
                } else
                        h->status[f] = DNS_STATUS_ERROR;
        }

        if (--l->pending == 0)
                lookup_complete(l);
}

static void start_address_lookups(MxLookup *l) {
        /* count first: a synchronous start failure must not finish early */
        l->pending = 0;
        for (size_t i = 0; i < l->n_hosts; i++) {
                HostState *h = &l->hosts[i];
                h->lookup = l;
                h->ran[FAM_V4] = !l->cfg.disable_ipv4;
                h->ran[FAM_V6] = !l->cfg.disable_ipv6;
                l->pending += h->ran[FAM_V4] + h->ran[FAM_V6];
        }
        l->pending++; /* held until every query is issued */
        for (size_t i = 0; i < l->n_hosts; i++) {
                HostState *h = &l->hosts[i];
                for (int f = 0; f < _FAM_MAX; f++) {
                        if (!h->ran[f])
                                continue;
                        int k = dns_query(l->resolver, h->host.name, f == FAM_V4 ? DNS_TYPE_A : DNS_TYPE_AAAA,
                                          on_addr, h, &h->query[f]);
                        if (k < 0) {
                                h->query[f] = NULL;
                                h->status[f] = DNS_STATUS_ERROR;
                                h->security[f] = DNS_INSECURE;
                                l->pending--;
                        }
                }
        }
        if (--l->pending == 0)
                lookup_complete(l);
}

static uint32_t uniform(MxLookup *l, uint32_t bound) {
        if (bound <= 1)
                return 0;
        if (l->cfg.random_uniform) {
                uint32_t v = l->cfg.random_uniform(bound, l->cfg.random_userdata);
                return v < bound ? v : v % bound;
        }
        return arc4random_uniform(bound);
}

static int cmp_pref(const void *a, const void *b) {
        const HostState *x = a, *y = b;
        if (x->host.preference != y->host.preference)
                return x->host.preference < y->host.preference ? -1 : 1;
        return strcmp(x->host.name, y->host.name); /* deterministic before the shuffle */
}

static bool is_ip_literal(const char *name) {
        struct in_addr a;
        struct in6_addr a6;
        return inet_pton(AF_INET, name, &a) == 1 || inet_pton(AF_INET6, name, &a6) == 1;
}

static void on_mx(DnsQuery *q, const DnsResult *res, void *userdata) {
        MxLookup *l = userdata;
        size_t n = 0;

        l->mx_query = NULL;
        l->mx_secure = res->security == DNS_SECURE;
        l->mx_bogus = res->security == DNS_BOGUS;

        switch (res->status) {
        case DNS_STATUS_OK:
                break;
        case DNS_STATUS_NODATA:
        case DNS_STATUS_NXDOMAIN:
                /* RFC 5321 §5.1: no MX, the domain is its own (implicit) MX. */
                ttl_min(l, res->ttl);
                l->implicit = true;
                l->mx_nxdomain = res->status == DNS_STATUS_NXDOMAIN;
                l->hosts = calloc(1, sizeof(HostState));
                if (!l->hosts || !(l->hosts[0].host.name = strdup(l->domain))) {
                        lookup_fail(l, MX_TEMPORARY, "4.3.0", "out of memory");
                        return;
                }
                l->n_hosts = 1;
                start_address_lookups(l);
                return;
        default:
                lookup_fail(l, MX_TEMPORARY, "4.4.3", "DNS failure looking up MX for %.255s: %s%s%.200s", l->domain,
                            why(res), res->why_bogus ? ": " : "", res->why_bogus ?: "");
                return;
        }

        ttl_min(l, res->ttl);
        if (res->n_records == 0) {
                lookup_fail(l, MX_TEMPORARY, "4.4.3", "malformed MX records for %.255s", l->domain);
                return;
        }

        /* RFC 7505 §3: a null MX is the only MX record, "0 .". */
        if (res->n_records == 1 && streq_ptr(res->records[0].mx.exchange, ".")) {
                if (res->records[0].mx.preference == 0) {
                        lookup_fail(l, MX_PERMANENT, "5.1.10",
                                    "domain %.255s does not accept mail (null MX, RFC 7505)", l->domain);
                        return;
                }
        }

        l->hosts = calloc(res->n_records, sizeof(HostState));
        if (!l->hosts) {
                lookup_fail(l, MX_TEMPORARY, "4.3.0", "out of memory");
                return;
        }
        for (size_t i = 0; i < res->n_records; i++) {
                const DnsRecord *rr = &res->records[i];
                if (rr->type != DNS_TYPE_MX || streq_ptr(rr->mx.exchange, ".") || is_ip_literal(rr->mx.exchange)) {
                        l->n_skipped++;
                        continue;
                }
                /* the same host twice: keep the lowest preference */
                bool dup = false;
                for (size_t j = 0; j < n; j++)
                        if (streq_ptr(l->hosts[j].host.name, rr->mx.exchange)) {
                                l->hosts[j].host.preference = MIN(l->hosts[j].host.preference,
                                                                  rr->mx.preference);
                                dup = true;
                        }
                if (dup) {
                        l->n_skipped++;
                        continue;
                }
                l->hosts[n].host.name = strdup(rr->mx.exchange);
                if (!l->hosts[n].host.name) {
                        l->n_hosts = n;
                        lookup_fail(l, MX_TEMPORARY, "4.3.0", "out of memory");
                        return;
                }
                l->hosts[n].host.preference = rr->mx.preference;
                n++;
        }
        l->n_hosts = n;
        if (n == 0) {
                lookup_fail(l, MX_TEMPORARY, "4.4.4", "no usable MX host for %.255s (IP literal or \".\" only)",
                            l->domain);
                return;
        }

        qsort(l->hosts, n, sizeof(HostState), cmp_pref);
        /* Fisher-Yates within each run of equal preference (RFC 5321 §5.1). */
        for (size_t s = 0; s < n;) {
                size_t e = s + 1;
                while (e < n && l->hosts[e].host.preference == l->hosts[s].host.preference)
                        e++;
                for (size_t i = e - 1; i > s; i--) {
                        size_t j = s + uniform(l, (uint32_t) (i - s + 1));
                        HostState t = l->hosts[i];
                        l->hosts[i] = l->hosts[j];
                        l->hosts[j] = t;
                }
                s = e;
        }
        if (n > l->cfg.max_hosts) {
                for (size_t i = l->cfg.max_hosts; i < n; i++)
                        free(l->hosts[i].host.name);
                l->n_skipped += n - l->cfg.max_hosts;
                l->n_hosts = l->cfg.max_hosts;
        }
        start_address_lookups(l);
}

/* "example.com", "Example.COM." -> "example.com"; refuses literals. */
static int normalize_domain(const char *domain, char **ret) {
        size_t len;

        if (!domain)
                return -EINVAL;
        len = strlen(domain);
        if (len > 0 && domain[len - 1] == '.')
                len--;
        if (len == 0 || len > 253 || domain[0] == '[' || domain[0] == '.')
                return -EINVAL;
        char *d = strndup(domain, len);
        if (!d)
                return -ENOMEM;
        for (char *p = d; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char) (*p - 'A' + 'a');
        *ret = d;
        return 0;
}

int mx_lookup_start(DnsResolver *r, const char *domain, const MxConfig *cfg, MxCallback cb, void *userdata,
                    MxLookup **ret) {
        MxLookup *l;
        int k;

        if (!r || !cb)
                return -EINVAL;
        if (cfg && cfg->disable_ipv4 && cfg->disable_ipv6)
                return -EINVAL;

        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        if (cfg)
                l->cfg = *cfg;
        if (l->cfg.max_hosts == 0)
                l->cfg.max_hosts = MX_DEFAULT_MAX_HOSTS;
        l->resolver = r;
        l->cb = cb;
        l->userdata = userdata;
        k = normalize_domain(domain, &l->domain);
        if (k < 0) {
                free(l);
                return k;
        }
        k = dns_query(r, l->domain, DNS_TYPE_MX, on_mx, l, &l->mx_query);
        if (k < 0) {
                l->mx_query = NULL;
                lookup_free(l);
                return k;
        }
        if (ret)
                *ret = l;
        return 0;
}

void mx_lookup_cancel(MxLookup *l) {
        if (!l || l->in_callback)
                return;
        lookup_free(l);
}
