/* SPDX-License-Identifier: MIT */
#pragma once

/* A DNS table for SPF tests: answers spf_check's queries the way the RFC
 * 7208 test suite's drivers do (pyspf's testspf.py), without a network.
 *
 *   - a name not in the table: NXDOMAIN, except names under "error.":
 *     SERVFAIL;
 *   - an entry of type FAKE_TIMEOUT (value ignored) for a name: every
 *     query for that name that has no records of its type before the entry
 *     times out;
 *   - an entry whose value is "TIMEOUT": queries of its type time out;
 *   - CNAMEs are followed (at most 10);
 *   - otherwise OK with the records of the asked type, or NODATA.
 *
 * TXT values are one string; "\x01" separates character-strings (they are
 * concatenated, as dns.c does). Names with \DDD escapes are compared
 * unescaped. */

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dns.h"
#include "spf.h"

#define FAKE_TIMEOUT 0xffff

typedef struct FakeRR {
        const char *name;
        uint16_t type;
        const char *value;
        uint16_t pref;
        size_t value_len; /* 0: strlen(value) (TXT values may hold NULs) */
} FakeRR;

typedef struct FakeAnswer {
        DnsResult res;
        char qname[300];
        char canonical[300];
        DnsRecord recs[64];
} FakeAnswer;

static inline bool fake_name_eq(const char *a, const char *b) {
        size_t na = strlen(a), nb = strlen(b);
        if (na && a[na - 1] == '.')
                na--;
        if (nb && b[nb - 1] == '.')
                nb--;
        return na == nb && strncasecmp(a, b, na) == 0;
}

static inline void fake_answer_done(FakeAnswer *a) {
        for (size_t i = 0; i < a->res.n_records; i++)
                dns_record_done(&a->recs[i]);
        a->res.n_records = 0;
}

/* Fills *a (call fake_answer_done() after use). */
static inline void fake_resolve(const FakeRR *zone, size_t n, const char *qname, uint16_t qtype, FakeAnswer *a) {
        memset(a, 0, sizeof *a);
        snprintf(a->qname, sizeof a->qname, "%s", qname);
        a->res.qname = a->qname;
        a->res.qtype = qtype;
        a->res.records = a->recs;

        char cur[300];
        size_t co = 0;
        for (size_t i = 0; qname[i] && co < sizeof cur - 1; i++) {
                if (qname[i] == '\\' && qname[i + 1] >= '0' && qname[i + 1] <= '9' && qname[i + 2] && qname[i + 3]) {
                        cur[co++] = (char) ((qname[i + 1] - '0') * 100 + (qname[i + 2] - '0') * 10 + (qname[i + 3] - '0'));
                        i += 3;
                } else
                        cur[co++] = qname[i];
        }
        cur[co] = 0;
        for (int hop = 0; hop <= 10; hop++) {
                bool exists = false, seen_type = false, cname = false;
                for (size_t i = 0; i < n; i++) {
                        const FakeRR *rr = &zone[i];
                        if (!fake_name_eq(rr->name, cur))
                                continue;
                        exists = true;
                        if (rr->type == FAKE_TIMEOUT) {
                                if (!seen_type) {
                                        a->res.status = DNS_STATUS_TIMEOUT;
                                        a->res.rcode = DNS_RCODE_SERVFAIL;
                                        fake_answer_done(a);
                                        return;
                                }
                                break;
                        }
                        if (rr->type == DNS_TYPE_CNAME && qtype != DNS_TYPE_CNAME) {
                                snprintf(cur, sizeof cur, "%s", rr->value);
                                snprintf(a->canonical, sizeof a->canonical, "%s", rr->value);
                                a->res.canonical = a->canonical;
                                cname = true;
                                break;
                        }
                        if (rr->type != qtype)
                                continue;
                        seen_type = true;
                        if (strcmp(rr->value, "TIMEOUT") == 0) {
                                a->res.status = DNS_STATUS_TIMEOUT;
                                a->res.rcode = DNS_RCODE_SERVFAIL;
                                fake_answer_done(a);
                                return;
                        }
                        if (a->res.n_records >= 64)
                                continue;
                        DnsRecord *rec = &a->recs[a->res.n_records];
                        memset(rec, 0, sizeof *rec);
                        rec->type = qtype;
                        bool ok = true;
                        switch (qtype) {
                        case DNS_TYPE_A:
                                ok = inet_pton(AF_INET, rr->value, &rec->a) == 1;
                                break;
                        case DNS_TYPE_AAAA:
                                ok = inet_pton(AF_INET6, rr->value, &rec->aaaa) == 1;
                                break;
                        case DNS_TYPE_MX:
                                rec->mx.preference = rr->pref;
                                rec->mx.exchange = strdup(rr->value);
                                break;
                        case DNS_TYPE_PTR:
                                rec->ptr.name = strdup(rr->value);
                                break;
                        case DNS_TYPE_TXT: {
                                size_t l = rr->value_len ?: strlen(rr->value), o = 0;
                                rec->txt.text = malloc(l + 1);
                                rec->txt.n_strings = 1;
                                for (size_t k = 0; rec->txt.text && k < l; k++) {
                                        if (rr->value[k] == '\x01')
                                                rec->txt.n_strings++;
                                        else
                                                rec->txt.text[o++] = rr->value[k];
                                }
                                if (rec->txt.text)
                                        rec->txt.text[o] = 0;
                                rec->txt.len = o;
                                break;
                        }
                        default:
                                ok = false;
                        }
                        if (ok)
                                a->res.n_records++;
                        else
                                dns_record_done(rec);
                }
                if (cname)
                        continue;
                if (!exists) {
                        bool err = strncasecmp(cur, "error.", 6) == 0;
                        a->res.status = err ? DNS_STATUS_SERVFAIL : DNS_STATUS_NXDOMAIN;
                        a->res.rcode = err ? DNS_RCODE_SERVFAIL : DNS_RCODE_NXDOMAIN;
                        fake_answer_done(a);
                        return;
                }
                a->res.status = a->res.n_records > 0 ? DNS_STATUS_OK : DNS_STATUS_NODATA;
                return;
        }
        a->res.status = DNS_STATUS_SERVFAIL;
        a->res.rcode = DNS_RCODE_SERVFAIL;
        fake_answer_done(a);
}

/* Runs a whole check against the table; *ret_queries counts the queries. */
static inline int fake_check(const FakeRR *zone, size_t n, const SpfParams *p, SpfCheck **ret,
                             unsigned *ret_queries) {
        SpfCheck *c = NULL;
        unsigned queries = 0;
        int r = spf_check_new(p, &c);
        if (r < 0)
                return r;
        while (!spf_check_is_done(c)) {
                const char *name;
                uint16_t type;
                r = spf_check_next_query(c, &name, &type);
                if (r <= 0 || ++queries > 1000) {
                        spf_check_free(c);
                        return r < 0 ? r : -EPROTO;
                }
                FakeAnswer *a = malloc(sizeof *a);
                if (!a) {
                        spf_check_free(c);
                        return -ENOMEM;
                }
                fake_resolve(zone, n, name, type, a);
                r = spf_check_answer(c, &a->res);
                fake_answer_done(a);
                free(a);
                if (r < 0) {
                        spf_check_free(c);
                        return r;
                }
        }
        if (ret_queries)
                *ret_queries = queries;
        *ret = c;
        return 0;
}
