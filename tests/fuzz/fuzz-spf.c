/* SPDX-License-Identifier: MIT */
/* SPF check_host() with every DNS answer taken from the input. Lines:
 *
 *   0: the SPF record (example.com's TXT; may hold anything)
 *   1: the MAIL FROM ("" for the null sender)
 *   2: the client address (default 192.0.2.1 if it does not parse)
 *   3…: answers, used in turn and then again from the first: "!" is
 *       NXDOMAIN, "?" SERVFAIL, "" NODATA, otherwise records separated by
 *       "|" (TXT text, an address for A/AAAA, a name for MX and PTR)
 *
 * Invariants: the check ends within a bounded number of queries, asks only
 * for the types it may (names of at most 253 octets), stays within
 * its lookup limits, and its result is coherent (an explanation only on
 * fail). */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "spf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Span {
        const char *p;
        size_t n;
} Span;

#define MAX_LINES 64
#define MAX_QUERIES 400

static void answer(SpfCheck *c, const char *name, uint16_t type, Span s, bool first) {
        DnsRecord recs[16];
        size_t n = 0;
        DnsResult res = { .qname = name, .qtype = type, .records = recs };
        char buf[1024];

        if (first) {
                /* the record itself, as the only TXT */
                recs[0] = (DnsRecord) { .type = DNS_TYPE_TXT };
                recs[0].txt.text = malloc(s.n + 1);
                if (!recs[0].txt.text)
                        abort();
                memcpy(recs[0].txt.text, s.p, s.n);
                recs[0].txt.text[s.n] = 0;
                recs[0].txt.len = s.n;
                n = type == DNS_TYPE_TXT ? 1 : 0;
                if (!n)
                        free(recs[0].txt.text);
                res.status = n ? DNS_STATUS_OK : DNS_STATUS_NODATA;
        } else if (s.n == 1 && s.p[0] == '!') {
                res.status = DNS_STATUS_NXDOMAIN;
        } else if (s.n == 1 && s.p[0] == '?') {
                res.status = DNS_STATUS_SERVFAIL;
        } else {
                size_t b = 0;
                for (size_t i = 0; i <= s.n && n < ELEMENTSOF(recs); i++) {
                        if (i < s.n && s.p[i] != '|')
                                continue;
                        size_t len = MIN(i - b, sizeof buf - 1);
                        memcpy(buf, s.p + b, len);
                        buf[len] = 0;
                        b = i + 1;
                        DnsRecord *r = &recs[n];
                        *r = (DnsRecord) { .type = type };
                        bool ok = true;
                        switch (type) {
                        case DNS_TYPE_A:
                                ok = inet_pton(AF_INET, buf, &r->a) == 1;
                                break;
                        case DNS_TYPE_AAAA:
                                ok = inet_pton(AF_INET6, buf, &r->aaaa) == 1;
                                break;
                        case DNS_TYPE_MX:
                                r->mx.exchange = strdup(buf);
                                break;
                        case DNS_TYPE_PTR:
                                r->ptr.name = strdup(buf);
                                break;
                        case DNS_TYPE_TXT:
                                r->txt.text = strdup(buf);
                                r->txt.len = len;
                                break;
                        default:
                                abort();
                        }
                        if (ok && len > 0)
                                n++;
                        else
                                dns_record_done(r);
                }
                res.status = n ? DNS_STATUS_OK : DNS_STATUS_NODATA;
        }
        res.n_records = n;
        if (spf_check_answer(c, &res) < 0)
                abort();
        for (size_t i = 0; i < n; i++)
                dns_record_done(&recs[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Span lines[MAX_LINES];
        size_t n = 0, b = 0;
        char from[600], ip[64];

        if (size > 64 * 1024)
                return 0;
        for (size_t i = 0; i <= size && n < MAX_LINES; i++)
                if (i == size || data[i] == '\n') {
                        lines[n++] = (Span) { (const char *) data + b, i - b };
                        b = i + 1;
                }

        snprintf(from, sizeof from, "%.*s", n > 1 ? (int) MIN(lines[1].n, sizeof from - 1) : 0,
                 n > 1 ? lines[1].p : "");
        if (n <= 1)
                snprintf(from, sizeof from, "user@example.com");
        snprintf(ip, sizeof ip, "%.*s", n > 2 ? (int) MIN(lines[2].n, sizeof ip - 1) : 0, n > 2 ? lines[2].p : "");

        SpfParams p = { .client_ip = ip, .helo = "helo.example.com", .mail_from = from, .receiver = "mx.example.net",
                        .now = 1 };
        SpfCheck *c = NULL;
        if (spf_check_new(&p, &c) < 0) {
                p.client_ip = "192.0.2.1";
                if (spf_check_new(&p, &c) < 0)
                        abort();
        }

        size_t next = 0, queries = 0;
        while (!spf_check_is_done(c)) {
                const char *name;
                uint16_t type;
                if (spf_check_next_query(c, &name, &type) != 1)
                        abort();
                if (spf_check_next_query(c, &name, &type) != 0)
                        abort();
                if (++queries > MAX_QUERIES)
                        abort();
                if (!name || strlen(name) > 253 || strlen(name) == 0)
                        abort();
                if (type != DNS_TYPE_TXT && type != DNS_TYPE_A && type != DNS_TYPE_AAAA && type != DNS_TYPE_MX &&
                    type != DNS_TYPE_PTR)
                        abort();
                bool first = queries == 1;
                Span s = { "", 0 };
                if (!first && n > 3) {
                        s = lines[3 + next % (n - 3)];
                        next++;
                }
                answer(c, name, type, first ? lines[0] : s, first);
        }
        const SpfResult *res;
        if (spf_check_result(c, &res) < 0)
                abort();
        if ((unsigned) res->result >= _SPF_RESULT_MAX || !res->reason || !res->identity)
                abort();
        if (res->explanation && res->result != SPF_RESULT_FAIL)
                abort();
        if (res->lookups > 11 || res->void_lookups > 3)
                abort();
        spf_check_free(c);
        return 0;
}
