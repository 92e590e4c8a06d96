/* SPDX-License-Identifier: MIT */
/* Asynchronous DNS over libunbound on sd-event. See dns.h for the contract.
 *
 * libunbound gotchas this file works around (each cost a failed run):
 *  - every ub_ctx_set_*() / add_ta*() must come before anything that
 *    finalises the context (the first resolve, ub_ctx_zone_add());
 *    afterwards they fail (or, for zone_add, silently do nothing);
 *  - "test." is a built-in static local zone: names under it answer
 *    NXDOMAIN unless a more specific zone is made transparent
 *    ("local-zone: <zone>. transparent"; "test. nodefault" via set_option
 *    is accepted but has no effect in 1.17);
 *  - loopback upstreams need "do-not-query-localhost: no";
 *  - libunbound has no per-query timeout: we arm an sd-event timer and
 *    ub_cancel() when it fires. In threaded mode a cancelled query stays
 *    inside libunbound until its answer (or unbound's own give-up) arrives,
 *    then is dropped without calling back. */

#include "dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unbound.h>

#include "log.h"
#include "macro.h"

struct DnsQuery {
        DnsResolver *resolver;
        DnsQuery *prev, *next;
        char *name;
        uint16_t type;
        int async_id;
        bool ub_pending;  /* libunbound still holds the query (ub_cancel needed) */
        bool in_callback; /* our callback is running: cancel is a no-op */
        sd_event_source *timer;
        DnsCallback cb;
        void *userdata;
};

struct DnsResolver {
        sd_event *event;
        struct ub_ctx *ctx;
        sd_event_source *io;
        DnsQuery *queries; /* outstanding */
        unsigned n_outstanding, max_outstanding;
        uint64_t timeout_usec;
        unsigned processing; /* >0 while inside ub_process() */
        bool freeing;        /* dns_resolver_free() has begun */
        bool destroy_after_processing;
        DnsStats stats;
};

/* ------------------------------------------------------------------ rdata */

static inline bool name_char_plain(uint8_t c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '*';
}

/* Decodes one uncompressed name starting at p[0], at most len bytes.
 * Sets *ret_consumed to its wire length. Refuses compression pointers and
 * extended label types (top bits 01/10/11), names over 255 octets, and
 * labels running past len. */
static int name_decode(const uint8_t *p, size_t len, size_t *ret_consumed, char *buf) {
        size_t pos = 0, out = 0;
        bool first = true;

        for (;;) {
                if (pos >= len)
                        return -EBADMSG;
                uint8_t l = p[pos++];
                if (l & 0xC0) /* 11: compression pointer; 01, 10: extended label types */
                        return -EBADMSG;
                if (l == 0) {
                        if (pos > 255) /* RFC 1035 §2.3.4: 255 octets, the root label included */
                                return -EBADMSG;
                        break;
                }
                if (pos + l >= 255) /* this label plus the root label must still fit */
                        return -EBADMSG;
                if (l > len - pos)
                        return -EBADMSG;
                if (!first)
                        buf[out++] = '.';
                first = false;
                for (size_t i = 0; i < l; i++) {
                        uint8_t c = p[pos + i];
                        if (c >= 'A' && c <= 'Z')
                                c = (uint8_t) (c - 'A' + 'a');
                        if (name_char_plain(c))
                                buf[out++] = (char) c;
                        else {
                                /* out + 4 < DNS_NAME_TEXT_MAX holds: at most 254 octets
                                 * of labels, 4 chars each, dots fit in the length bytes */
                                (void) snprintf(buf + out, 5, "\\%03u", (unsigned) c);
                                out += 4;
                        }
                }
                pos += l;
        }
        if (first)
                buf[out++] = '.';
        buf[out] = 0;
        *ret_consumed = pos;
        return 0;
}

int dns_name_to_text(const uint8_t *wire, size_t len, char buf[static DNS_NAME_TEXT_MAX]) {
        size_t used;
        int r;

        if (!wire)
                return -EBADMSG;
        r = name_decode(wire, len, &used, buf);
        if (r < 0)
                return r;
        if (used != len)
                return -EBADMSG;
        return 0;
}

static int name_dup(const uint8_t *wire, size_t len, char **ret) {
        char buf[DNS_NAME_TEXT_MAX];
        int r;

        r = dns_name_to_text(wire, len, buf);
        if (r < 0)
                return r;
        char *s = strdup(buf);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int dns_parse_rdata(uint16_t type, const uint8_t *rdata, size_t len, DnsRecord *ret) {
        DnsRecord rec = { .type = type };
        int r;

        if (!rdata && len > 0)
                return -EBADMSG;

        switch (type) {
        case DNS_TYPE_A:
                if (len != 4)
                        return -EBADMSG;
                memcpy(&rec.a, rdata, 4);
                break;
        case DNS_TYPE_AAAA:
                if (len != 16)
                        return -EBADMSG;
                memcpy(&rec.aaaa, rdata, 16);
                break;
        case DNS_TYPE_MX:
                if (len < 3)
                        return -EBADMSG;
                rec.mx.preference = (uint16_t) (rdata[0] << 8 | rdata[1]);
                r = name_dup(rdata + 2, len - 2, &rec.mx.exchange);
                if (r < 0)
                        return r;
                break;
        case DNS_TYPE_CNAME:
                r = name_dup(rdata, len, &rec.cname.target);
                if (r < 0)
                        return r;
                break;
        case DNS_TYPE_PTR:
                r = name_dup(rdata, len, &rec.ptr.name);
                if (r < 0)
                        return r;
                break;
        case DNS_TYPE_TXT: {
                /* One or more <length><octets> strings filling rdata exactly. */
                size_t pos = 0, total = 0, n = 0;
                if (len == 0)
                        return -EBADMSG;
                while (pos < len) {
                        size_t l = rdata[pos];
                        if (l > len - pos - 1)
                                return -EBADMSG;
                        total += l;
                        pos += 1 + l;
                        n++;
                }
                char *t = malloc(total + 1);
                if (!t)
                        return -ENOMEM;
                size_t o = 0;
                for (pos = 0; pos < len; pos += 1 + rdata[pos]) {
                        memcpy(t + o, rdata + pos + 1, rdata[pos]);
                        o += rdata[pos];
                }
                t[o] = 0;
                rec.txt.text = t;
                rec.txt.len = total;
                rec.txt.n_strings = n;
                break;
        }
        case DNS_TYPE_TLSA:
                /* usage, selector, matching type, association data (any
                 * length: whether it is usable is the DANE code's call) */
                if (len < 3)
                        return -EBADMSG;
                rec.tlsa.usage = rdata[0];
                rec.tlsa.selector = rdata[1];
                rec.tlsa.matching_type = rdata[2];
                rec.tlsa.len = len - 3;
                rec.tlsa.data = malloc(MAX(rec.tlsa.len, (size_t) 1));
                if (!rec.tlsa.data)
                        return -ENOMEM;
                if (rec.tlsa.len > 0)
                        memcpy(rec.tlsa.data, rdata + 3, rec.tlsa.len);
                break;
        default:
                return -EOPNOTSUPP;
        }

        *ret = rec;
        return 0;
}

void dns_record_done(DnsRecord *rec) {
        if (!rec)
                return;
        switch (rec->type) {
        case DNS_TYPE_MX:
                free(rec->mx.exchange);
                break;
        case DNS_TYPE_CNAME:
                free(rec->cname.target);
                break;
        case DNS_TYPE_PTR:
                free(rec->ptr.name);
                break;
        case DNS_TYPE_TXT:
                free(rec->txt.text);
                break;
        case DNS_TYPE_TLSA:
                free(rec->tlsa.data);
                break;
        default:
                break;
        }
        memset(rec, 0, sizeof *rec);
}

/* ------------------------------------------------------------------ names */

static const char *const status_names[_DNS_STATUS_MAX] = {
        [DNS_STATUS_OK] = "ok",
        [DNS_STATUS_NODATA] = "nodata",
        [DNS_STATUS_NXDOMAIN] = "nxdomain",
        [DNS_STATUS_SERVFAIL] = "servfail",
        [DNS_STATUS_TIMEOUT] = "timeout",
        [DNS_STATUS_ERROR] = "error",
        [DNS_STATUS_CANCELED] = "canceled",
};

const char *dns_status_to_string(DnsStatus s) {
        if ((unsigned) s >= _DNS_STATUS_MAX)
                return "?";
        return status_names[s];
}

const char *dns_security_to_string(DnsSecurity s) {
        switch (s) {
        case DNS_SECURE:
                return "secure";
        case DNS_BOGUS:
                return "bogus";
        case DNS_INSECURE:
                return "insecure";
        }
        return "?";
}

const char *dns_type_to_string(uint16_t type) {
        switch (type) {
        case DNS_TYPE_A:
                return "A";
        case DNS_TYPE_AAAA:
                return "AAAA";
        case DNS_TYPE_MX:
                return "MX";
        case DNS_TYPE_TXT:
                return "TXT";
        case DNS_TYPE_TLSA:
                return "TLSA";
        case DNS_TYPE_CNAME:
                return "CNAME";
        case DNS_TYPE_PTR:
                return "PTR";
        }
        return "?";
}

bool dns_status_is_temporary(DnsStatus s) {
        return s == DNS_STATUS_SERVFAIL || s == DNS_STATUS_TIMEOUT || s == DNS_STATUS_ERROR ||
               s == DNS_STATUS_CANCELED;
}

/* ------------------------------------------------------------------ queries */

static void query_unlink(DnsQuery *q) {
        DnsResolver *r = q->resolver;

        if (q->prev)
                q->prev->next = q->next;
        else
                r->queries = q->next;
        if (q->next)
                q->next->prev = q->prev;
        q->prev = q->next = NULL;
        r->n_outstanding--;
}

static void query_free(DnsQuery *q) {
        sd_event_source_disable_unref(q->timer);
        free(q->name);
        free(q);
}

/* Stops libunbound's side (no callback will come) and our timer. */
static void query_detach(DnsQuery *q) {
        if (q->ub_pending) {
                (void) ub_cancel(q->resolver->ctx, q->async_id);
                q->ub_pending = false;
        }
        q->timer = sd_event_source_disable_unref(q->timer);
}

/* Unlinks q, runs its callback once, frees it. Does not touch the resolver
 * after the callback (which may free it). */
static void query_complete(DnsQuery *q, const DnsResult *res) {
        DnsResolver *r = q->resolver;

        query_detach(q);
        query_unlink(q);
        r->stats.completed++;
        q->in_callback = true;
        q->cb(q, res, q->userdata);
        query_free(q);
}

static void query_complete_status(DnsQuery *q, DnsStatus status, int error) {
        DnsResult res = {
                .qname = q->name,
                .qtype = q->type,
                .status = status,
                .rcode = DNS_RCODE_SERVFAIL,
                .error = error,
        };
        query_complete(q, &res);
}

static bool name_eq(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);

        if (la > 1 && a[la - 1] == '.')
                la--;
        if (lb > 1 && b[lb - 1] == '.')
                lb--;
        return la == lb && strncasecmp(a, b, la) == 0;
}

static void on_ub_result(void *userdata, int err, struct ub_result *ub) {
        DnsQuery *q = userdata;
        DnsResolver *r = q->resolver;
        DnsRecord *recs = NULL;
        size_t n = 0, n_data = 0, malformed = 0;

        q->ub_pending = false;

        if (err != 0 || !ub) {
                ub_resolve_free(ub);
                query_complete_status(q, DNS_STATUS_ERROR, err == UB_NOMEM ? -ENOMEM : -EIO);
                return;
        }

        DnsResult res = {
                .qname = q->name,
                .qtype = q->type,
                .rcode = ub->rcode,
                .ttl = ub->ttl > 0 ? (uint32_t) ub->ttl : 0,
                .security = ub->secure ? DNS_SECURE : ub->bogus ? DNS_BOGUS : DNS_INSECURE,
                .why_bogus = ub->bogus ? ub->why_bogus : NULL,
        };
        _cleanup_free_ char *canonical = NULL;
        if (ub->canonname && !name_eq(ub->canonname, q->name)) {
                /* same form as names from rdata: lower-case, no final dot */
                canonical = strdup(ub->canonname);
                if (canonical) {
                        size_t l = strlen(canonical);
                        if (l > 1 && canonical[l - 1] == '.')
                                canonical[l - 1] = 0;
                        for (char *p = canonical; *p; p++)
                                if (*p >= 'A' && *p <= 'Z')
                                        *p = (char) (*p - 'A' + 'a');
                }
                res.canonical = canonical;
        }

        if (ub->bogus) {
                /* libunbound hands out bogus data with rcode NOERROR; withhold
                 * it, as a validating resolver answering SERVFAIL would. */
                res.status = DNS_STATUS_SERVFAIL;
                res.rcode = DNS_RCODE_SERVFAIL;
        } else if (ub->rcode == DNS_RCODE_NOERROR)
                res.status = ub->havedata ? DNS_STATUS_OK : DNS_STATUS_NODATA;
        else if (ub->rcode == DNS_RCODE_NXDOMAIN)
                res.status = DNS_STATUS_NXDOMAIN;
        else
                res.status = DNS_STATUS_SERVFAIL;

        if (res.status == DNS_STATUS_OK && ub->data) {
                while (ub->data[n_data])
                        n_data++;
                if (n_data > 0)
                        recs = calloc(n_data, sizeof *recs);
                if (n_data > 0 && !recs) {
                        ub_resolve_free(ub);
                        query_complete_status(q, DNS_STATUS_ERROR, -ENOMEM);
                        return;
                }
                for (size_t i = 0; i < n_data; i++) {
                        int len = ub->len ? ub->len[i] : -1;
                        if (len < 0 || dns_parse_rdata(q->type, (const uint8_t *) ub->data[i], (size_t) len,
                                                       &recs[n]) < 0) {
                                malformed++;
                                continue;
                        }
                        n++;
                }
        }
        res.records = recs;
        res.n_records = n;
        res.n_malformed = malformed;
        r->stats.malformed += malformed;
        if (malformed > 0)
                log_debug("dns: %zu malformed %s rdata for %.255s skipped", malformed,
                          dns_type_to_string(q->type), q->name);

        query_complete(q, &res);

        for (size_t i = 0; i < n; i++)
                dns_record_done(&recs[i]);
        free(recs);
        ub_resolve_free(ub);
}

static int on_query_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        DnsQuery *q = userdata;

        q->resolver->stats.timeouts++;
        query_complete_status(q, DNS_STATUS_TIMEOUT, -ETIMEDOUT);
        return 0;
}

/* Accepts plain presentation names: LDH-ish printable labels of 1..63
 * octets, total ≤ 253 (+ optional final dot); no escapes. This keeps
 * libunbound's own parser from failing (it reports that as UB_NOMEM). */
static bool query_name_valid(const char *name) {
        size_t len, label = 0;

        if (!name)
                return false;
        len = strlen(name);
        if (len == 0 || len > 254)
                return false;
        if (streq_ptr(name, "."))
                return true;
        if (len == 254 && name[253] != '.')
                return false;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) name[i];
                if (c == '.') {
                        if (label == 0)
                                return false;
                        label = 0;
                        continue;
                }
                if (c <= 0x20 || c >= 0x7f || c == '\\' || c == '"' || c == '(' || c == ')' || c == ';')
                        return false;
                if (++label > 63)
                        return false;
        }
        return true;
}

int dns_query(DnsResolver *r, const char *name, uint16_t rrtype, DnsCallback cb, void *userdata,
              DnsQuery **ret_query) {
        DnsQuery *q;
        int ub_r;

        if (!r || !cb)
                return -EINVAL;
        if (r->freeing)
                return -ESHUTDOWN;
        if (!query_name_valid(name))
                return -EINVAL;
        if (r->n_outstanding >= r->max_outstanding)
                return -EBUSY;

        q = calloc(1, sizeof *q);
        if (!q)
                return -ENOMEM;
        q->resolver = r;
        q->type = rrtype;
        q->cb = cb;
        q->userdata = userdata;
        q->name = strdup(name);
        if (!q->name) {
                free(q);
                return -ENOMEM;
        }

        int k = sd_event_add_time_relative(r->event, &q->timer, CLOCK_MONOTONIC, r->timeout_usec, 0,
                                           on_query_timeout, q);
        if (k < 0) {
                query_free(q);
                return k;
        }

        ub_r = ub_resolve_async(r->ctx, name, rrtype, 1 /* IN */, q, on_ub_result, &q->async_id);
        if (ub_r != 0) {
                log_debug("dns: ub_resolve_async(%.255s): %s", name, ub_strerror(ub_r));
                query_free(q);
                return ub_r == UB_NOMEM ? -ENOMEM : ub_r == UB_SYNTAX ? -EINVAL : -EIO;
        }
        q->ub_pending = true;

        q->next = r->queries;
        if (r->queries)
                r->queries->prev = q;
        r->queries = q;
        r->n_outstanding++;
        r->stats.started++;

        if (ret_query)
                *ret_query = q;
        return 0;
}

void dns_query_cancel(DnsQuery *q) {
        if (!q || q->in_callback)
                return;
        query_detach(q);
        query_unlink(q);
        q->resolver->stats.canceled++;
        query_free(q);
}

/* ------------------------------------------------------------------ resolver */

static int on_ub_fd(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        DnsResolver *r = userdata;
        int k;

        r->processing++;
        k = ub_process(r->ctx);
        r->processing--;
        if (k != 0)
                log_debug("dns: ub_process: %s", ub_strerror(k));

        if (r->destroy_after_processing && r->processing == 0) {
                sd_event_source_disable_unref(r->io);
                ub_ctx_delete(r->ctx);
                sd_event_unref(r->event);
                free(r);
        }
        return 0;
}

static int set_opt(struct ub_ctx *ctx, const char *opt, const char *val) {
        int k = ub_ctx_set_option(ctx, opt, val);
        if (k != 0) {
                log_debug("dns: ub_ctx_set_option(%s %s): %s", opt, val, ub_strerror(k));
                return k == UB_NOMEM ? -ENOMEM : -EINVAL;
        }
        return 0;
}

static int resolver_configure(DnsResolver *r, const DnsConfig *cfg) {
        struct ub_ctx *ctx = r->ctx;
        char buf[512];
        int k;

        /* Every setting before anything that finalises the context. */
        k = ub_ctx_async(ctx, 1);
        if (k != 0)
                return -EIO;

        /* Room for what we allow outstanding plus queries we cancelled on
         * timeout that libunbound still works on. */
        (void) snprintf(buf, sizeof buf, "%u", MIN(r->max_outstanding * 2, DNS_MAX_OUTSTANDING_LIMIT));
        k = set_opt(ctx, "num-queries-per-thread:", buf);
        if (k < 0)
                return k;

        for (const char *const *z = cfg->transparent_zones; z && *z; z++) {
                size_t l = strlen(*z);
                if (l == 0 || l > 253)
                        return -EINVAL;
                (void) snprintf(buf, sizeof buf, "%s%s transparent", *z, (*z)[l - 1] == '.' ? "" : ".");
                k = set_opt(ctx, "local-zone:", buf);
                if (k < 0)
                        return k;
        }

        if (cfg->forwarders && cfg->forwarders[0]) {
                k = set_opt(ctx, "do-not-query-localhost:", "no");
                if (k < 0)
                        return k;
                for (const char *const *f = cfg->forwarders; *f; f++) {
                        k = ub_ctx_set_fwd(ctx, *f);
                        if (k != 0) {
                                log_debug("dns: forwarder %.100s: %s", *f, ub_strerror(k));
                                return k == UB_NOMEM ? -ENOMEM : -EINVAL;
                        }
                }
        }

        if (cfg->no_dnssec)
                return set_opt(ctx, "module-config:", "iterator");

        /* The validator's reason for a bogus answer ends up in why_bogus. */
        k = set_opt(ctx, "val-log-level:", "2");
        if (k < 0)
                return k;

        if (cfg->trust_anchor_file || !cfg->trust_anchor_autr) {
                const char *f = cfg->trust_anchor_file ?: DNS_SYSTEM_TRUST_ANCHOR;
                if (access(f, R_OK) < 0)
                        return negative_errno();
                k = ub_ctx_add_ta_file(ctx, f);
        } else {
                if (access(cfg->trust_anchor_autr, R_OK | W_OK) < 0)
                        return negative_errno();
                k = ub_ctx_add_ta_autr(ctx, cfg->trust_anchor_autr);
        }
        if (k != 0)
                return k == UB_NOMEM ? -ENOMEM : -EINVAL;
        return 0;
}

int dns_resolver_new(sd_event *e, const DnsConfig *cfg, DnsResolver **ret) {
        static const DnsConfig defaults = {};
        DnsResolver *r;
        int k;

        if (!e || !ret)
                return -EINVAL;
        if (!cfg)
                cfg = &defaults;

        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->event = sd_event_ref(e);
        r->timeout_usec = cfg->timeout_usec ?: DNS_DEFAULT_TIMEOUT_USEC;
        r->max_outstanding = cfg->max_outstanding ?: DNS_DEFAULT_MAX_OUTSTANDING;
        if (r->max_outstanding > DNS_MAX_OUTSTANDING_LIMIT)
                r->max_outstanding = DNS_MAX_OUTSTANDING_LIMIT;

        r->ctx = ub_ctx_create();
        if (!r->ctx) {
                k = -ENOMEM;
                goto fail;
        }
        k = resolver_configure(r, cfg);
        if (k < 0)
                goto fail;

        k = sd_event_add_io(e, &r->io, ub_fd(r->ctx), EPOLLIN, on_ub_fd, r);
        if (k < 0)
                goto fail;
        (void) sd_event_source_set_description(r->io, "dns-unbound");

        *ret = r;
        return 0;
fail:
        if (r->ctx)
                ub_ctx_delete(r->ctx);
        sd_event_unref(r->event);
        free(r);
        return k;
}

DnsResolver *dns_resolver_free(DnsResolver *r) {
        if (!r || r->freeing)
                return NULL;
        r->freeing = true;

        /* Complete each outstanding query once; a callback may cancel others
         * (they leave the list), so always take the head. */
        while (r->queries) {
                r->stats.canceled++;
                query_complete_status(r->queries, DNS_STATUS_CANCELED, -ECANCELED);
        }

        if (r->processing > 0) {
                /* Inside ub_process(): libunbound's context must outlive it. */
                r->destroy_after_processing = true;
                return NULL;
        }
        sd_event_source_disable_unref(r->io);
        ub_ctx_delete(r->ctx);
        sd_event_unref(r->event);
        free(r);
        return NULL;
}

void dns_resolver_get_stats(DnsResolver *r, DnsStats *ret) {
        *ret = r->stats;
        ret->outstanding = r->n_outstanding;
}

int dns_resolver_new_from_config(sd_event *e, const Config *c, DnsResolver **ret) {
        _cleanup_(config_strv_freep) char **forwarders = NULL, **zones = NULL;
        DnsConfig dc = {};
        uint64_t usec;
        bool b;

        (void) config_get_list(c, "DNS", "Forwarders", &forwarders);
        (void) config_get_list(c, "DNS", "TransparentZones", &zones);
        (void) config_get_string(c, "DNS", "TrustAnchor", &dc.trust_anchor_file);
        if (config_get_bool(c, "DNS", "DNSSEC", &b) >= 0)
                dc.no_dnssec = !b;
        if (config_get_duration(c, "DNS", "Timeout", &usec) >= 0)
                dc.timeout_usec = usec;
        dc.forwarders = (const char *const *) forwarders;
        dc.transparent_zones = (const char *const *) zones;
        return dns_resolver_new(e, &dc, ret);
}
