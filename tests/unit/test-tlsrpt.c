/* SPDX-License-Identifier: MIT */
/* halyard-tlsrptd's pure parts: aggregation and its caps, the journal line
 * format (round trip, damage detection, replay equivalence), the
 * _smtp._tls record parser, mailto: addresses, the report JSON against the
 * RFC 8460 §4.4 field list, gzip, and the report message. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "tap.h"
#include "tlsrpt-report.h"
#include "tlsrpt-store.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define DAY 20784 /* 2026-11-27 */

static const char *const sts_strings[] = { "version: STSv1", "mode: enforce", "mx: mx.example.com", "max_age: 86400" };
static const char *const sts_mx[] = { "mx.example.com" };

static TlsRptResult sts_result(const char *domain, bool success) {
        return (TlsRptResult) {
                .day = DAY,
                .policy_domain = domain,
                .policy_type = TLSRPT_POLICY_STS,
                .policy_strings = sts_strings,
                .n_policy_strings = ELEMENTSOF(sts_strings),
                .mx_hosts = sts_mx,
                .n_mx_hosts = 1,
                .kind = success ? TLSRPT_KIND_SUCCESS : TLSRPT_KIND_FAILURE,
                .count = 1,
        };
}

static void add(TlsRptStore *s, TlsRptResult res, int want) {
        ASSERT_OK(tlsrpt_result_check(&res, NULL));
        ASSERT_EQ(tlsrpt_store_add(s, &res), want);
}

TEST(aggregate_groups_by_policy_and_detail) {
        TlsRptStore *s;
        ASSERT_OK(tlsrpt_store_new(10, 10, &s));
        for (int i = 0; i < 3; i++)
                add(s, sts_result("example.com", true), 1);
        TlsRptResult f = sts_result("example.com", false);
        f.detail = (TlsRptDetail) { .result_type = "certificate-expired", .sending_ip = "192.0.2.1",
                                    .mx_hostname = "mx.example.com", .receiving_ip = "192.0.2.2" };
        add(s, f, 1);
        add(s, f, 1);
        f.detail.sending_ip = "2001:db8::1"; /* another row */
        add(s, f, 1);
        /* Another policy of the same domain: tlsa. */
        static const char *const tlsa[] = { "3 1 1 0123abcd" };
        TlsRptResult t = { .day = DAY, .policy_domain = "example.com", .policy_type = TLSRPT_POLICY_TLSA,
                           .policy_strings = tlsa, .n_policy_strings = 1, .mx_hosts = sts_mx, .n_mx_hosts = 1,
                           .kind = TLSRPT_KIND_SUCCESS, .count = 1 };
        add(s, t, 1);
        TlsRptDay *d = tlsrpt_store_get_day(s, DAY);
        ASSERT_NOT_NULL(d);
        ASSERT_EQ(d->n_domains, 1);
        ASSERT_EQ(d->sessions, 7);
        TlsRptDomain *dom = tlsrpt_day_get_domain(d, "example.com");
        ASSERT_EQ(dom->n_policies, 2);
        ASSERT_EQ(dom->policies[0].successes, 3);
        ASSERT_EQ(dom->policies[0].failures, 3);
        ASSERT_EQ(dom->policies[0].n_rows, 2);
        ASSERT_EQ(dom->policies[0].rows[0].count, 2);
        ASSERT_EQ(dom->policies[0].rows[1].count, 1);
        /* tlsa carries no mx-host (dropped by the check). */
        ASSERT_EQ(dom->policies[1].n_mx_hosts, 0);
        ASSERT_NULL(tlsrpt_day_get_domain(d, "example.org"));
        tlsrpt_store_free(s);
}

TEST(caps) {
        TlsRptStore *s;
        ASSERT_OK(tlsrpt_store_new(2, 3, &s));
        add(s, sts_result("a.example", true), 1);
        add(s, sts_result("b.example", true), 1);
        TlsRptResult r = sts_result("c.example", true);
        ASSERT_OK(tlsrpt_result_check(&r, NULL));
        ASSERT_EQ(tlsrpt_store_add(s, &r), -ENOSPC); /* domain cap */
        /* Row cap: 3 distinct rows, the rest counted without a row. */
        char ip[32];
        for (int i = 0; i < 10; i++) {
                TlsRptResult f = sts_result("a.example", false);
                snprintf(ip, sizeof ip, "192.0.2.%d", i);
                f.detail = (TlsRptDetail) { .result_type = "validation-failure", .receiving_ip = ip };
                ASSERT_OK(tlsrpt_result_check(&f, NULL));
                ASSERT_EQ(tlsrpt_store_add(s, &f), i < 3 ? 1 : 0);
                ASSERT_EQ(f.kind, i < 3 ? TLSRPT_KIND_FAILURE : TLSRPT_KIND_OVERFLOW);
        }
        TlsRptDomain *dom = tlsrpt_day_get_domain(tlsrpt_store_get_day(s, DAY), "a.example");
        ASSERT_EQ(dom->policies[0].n_rows, 3);
        ASSERT_EQ(dom->policies[0].failures, 10);
        ASSERT_EQ(s->details_overflowed, 7);
        /* Policy cap per domain. */
        char mode[32];
        for (int i = 0; i < TLSRPT_POLICIES_MAX + 2; i++) {
                snprintf(mode, sizeof mode, "max_age: %d", i);
                const char *ps[] = { "version: STSv1", mode };
                TlsRptResult p = { .day = DAY, .policy_domain = "b.example", .policy_type = TLSRPT_POLICY_STS,
                                   .policy_strings = ps, .n_policy_strings = 2, .kind = TLSRPT_KIND_SUCCESS, .count = 1 };
                ASSERT_OK(tlsrpt_result_check(&p, NULL));
                ASSERT_EQ(tlsrpt_store_add(s, &p), i + 1 < TLSRPT_POLICIES_MAX ? 1 : -ENOSPC);
        }
        tlsrpt_store_free(s);
}

TEST(result_check) {
        static const struct {
                const char *domain, *type_field, *sip, *rip, *mx, *helo, *rt;
                const char *want; /* NULL = valid */
        } cases[] = {
                { "example.com", NULL, "192.0.2.1", "2001:db8::2", "mx.example.com", "mx.example.com", "tlsa-invalid", NULL },
                { "Example.com", NULL, NULL, NULL, NULL, NULL, NULL, "policyDomain" },
                { "example.com.", NULL, NULL, NULL, NULL, NULL, NULL, "policyDomain" },
                { "", NULL, NULL, NULL, NULL, NULL, NULL, "policyDomain" },
                { "exa mple.com", NULL, NULL, NULL, NULL, NULL, NULL, "policyDomain" },
                { "example.com", NULL, "192.0.2.300", NULL, NULL, NULL, NULL, "sendingMtaIp" },
                { "example.com", NULL, NULL, "mx.example.com", NULL, NULL, NULL, "receivingIp" },
                { "example.com", NULL, NULL, NULL, "mx..example.com", NULL, NULL, "receivingMxHostname" },
                { "example.com", NULL, NULL, NULL, NULL, "helo\r\nX", NULL, "receivingMxHelo" },
                { "example.com", NULL, NULL, NULL, NULL, NULL, "Not A Type", "resultType" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                TlsRptResult r = sts_result(cases[i].domain, false);
                r.detail = (TlsRptDetail) { .result_type = cases[i].rt, .sending_ip = cases[i].sip,
                                            .receiving_ip = cases[i].rip, .mx_hostname = cases[i].mx,
                                            .mx_helo = cases[i].helo };
                const char *bad = NULL;
                int k = tlsrpt_result_check(&r, &bad);
                if (!cases[i].want) {
                        ASSERT_OK(k);
                } else {
                        ASSERT_EQ(k, -EINVAL);
                        ASSERT_STREQ(bad, cases[i].want);
                }
        }
        /* A failure without a type is a validation-failure; no-policy-found
         * keeps no policy strings. */
        TlsRptResult r = sts_result("example.com", false);
        r.policy_type = TLSRPT_POLICY_NONE;
        ASSERT_OK(tlsrpt_result_check(&r, NULL));
        ASSERT_STREQ(r.detail.result_type, "validation-failure");
        ASSERT_EQ(r.n_policy_strings, 0);
        ASSERT_EQ(r.n_mx_hosts, 0);
        const char *bad_mx[] = { "*.*.example.com" };
        r = sts_result("example.com", true);
        r.mx_hosts = bad_mx;
        ASSERT_EQ(tlsrpt_result_check(&r, NULL), -EINVAL);
}

typedef struct Replay {
        TlsRptStore *into;
        size_t lines;
} Replay;

static int replay_row(const TlsRptResult *res, void *userdata) {
        Replay *rp = userdata;
        char *line;
        size_t n;
        ASSERT_OK(tlsrpt_line_format(res, &line, &n));
        ASSERT_EQ(line[n - 1], '\n');
        TlsRptLine l;
        ASSERT_OK(tlsrpt_line_parse(line, n - 1, &l));
        ASSERT_TRUE(tlsrpt_store_add(rp->into, &l.res) >= 0);
        tlsrpt_line_done(&l);
        free(line);
        rp->lines++;
        return 0;
}

static char *report_text(TlsRptStore *s, const char *domain) {
        json_object *j;
        TlsRptMeta meta = { "Org", "postmaster@example.org", "id@example.org" };
        ASSERT_OK(tlsrpt_report_json(tlsrpt_day_get_domain(tlsrpt_store_get_day(s, DAY), domain), DAY, &meta, &j));
        char *t = strdup(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
        json_object_put(j);
        return t;
}

TEST(journal_lines_replay_to_the_same_aggregate) {
        TlsRptStore *a, *b;
        ASSERT_OK(tlsrpt_store_new(10, 2, &a));
        ASSERT_OK(tlsrpt_store_new(10, 2, &b));
        add(a, sts_result("example.com", true), 1);
        for (int i = 0; i < 5; i++) {
                TlsRptResult f = sts_result("example.com", false);
                f.detail = (TlsRptDetail) { .result_type = i % 2 ? "starttls-not-supported" : "certificate-expired",
                                            .mx_helo = i < 3 ? "helo.example.com" : NULL,
                                            .additional_info = "https://example.com/why?x=1",
                                            .reason_code = "X509_V_ERR \"quoted\" \\ ü" };
                add(a, f, i < 3 ? 1 : 0);
        }
        Replay rp = { b, 0 };
        ASSERT_OK(tlsrpt_day_foreach_row(tlsrpt_store_get_day(a, DAY), replay_row, &rp));
        ASSERT_EQ(rp.lines, 4); /* success, 2 rows, overflow */
        char *ta = report_text(a, "example.com"), *tb = report_text(b, "example.com");
        ASSERT_STREQ(ta, tb);
        free(ta);
        free(tb);
        ASSERT_EQ(a->details_overflowed, b->details_overflowed);
        tlsrpt_store_free(a);
        tlsrpt_store_free(b);
}

TEST(journal_line_damage) {
        TlsRptResult r = sts_result("example.com", true);
        char *line;
        size_t n;
        TlsRptLine l;
        ASSERT_OK(tlsrpt_line_format(&r, &line, &n));
        ASSERT_OK(tlsrpt_line_parse(line, n - 1, &l));
        ASSERT_STREQ(l.res.policy_domain, "example.com");
        ASSERT_EQ(l.res.n_policy_strings, 4);
        ASSERT_EQ(l.res.count, 1);
        tlsrpt_line_done(&l);
        /* Every truncation and every single-byte change is refused. */
        for (size_t k = 0; k + 1 < n - 1; k++)
                ASSERT_EQ(tlsrpt_line_parse(line, k, &l), -EBADMSG);
        for (size_t k = 0; k < n - 1; k++) {
                char save = line[k];
                line[k] = save == 'x' ? 'y' : 'x';
                ASSERT_EQ(tlsrpt_line_parse(line, n - 1, &l), -EBADMSG);
                line[k] = save;
        }
        free(line);
        /* Valid CRC over invalid content: refused by the field checks. */
        static const char *const bad_json[] = {
                "{\"d\":1,\"pd\":\"Example.com\",\"pt\":\"sts\",\"k\":\"s\",\"n\":1}",
                "{\"d\":1,\"pd\":\"example.com\",\"pt\":\"sts\",\"k\":\"s\",\"n\":0}",
                "{\"d\":1,\"pd\":\"example.com\",\"pt\":\"xx\",\"k\":\"s\",\"n\":1}",
                "{\"d\":1,\"pd\":\"example.com\",\"pt\":\"sts\",\"k\":\"s\",\"n\":1,\"zz\":1}",
                "{\"d\":1,\"pd\":\"example.com\",\"pt\":\"sts\",\"k\":\"s\",\"n\":1,\"rt\":\"x\"}",
                "{\"d\":1,\"pd\":\"example.com\",\"pt\":\"sts\",\"k\":\"f\",\"n\":1}",
                "{\"d\":1,\"pd\":\"example.com\",\"pt\":\"no-policy-found\",\"ps\":[\"a\"],\"k\":\"s\",\"n\":1}",
                "[1]",
                "{\"d\":1,\"pd\":\"example.com\",\"pt\":\"sts\",\"k\":\"s\",\"n\":1} ",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad_json); i++) {
                char buf[512];
                const char *j = bad_json[i];
                int k = snprintf(buf, sizeof buf, "%08lx %s", crc32(0L, (const Bytef *) j, (uInt) strlen(j)) & 0xffffffffUL, j);
                if (tlsrpt_line_parse(buf, (size_t) k, &l) != -EBADMSG)
                        TAP_FAIL("bad_json[%zu] accepted", i);
        }
}

TEST(record_parser) {
        static const struct {
                const char *txt;
                int want;
                size_t n_rua;
                const char *first;
        } cases[] = {
                { "v=TLSRPTv1; rua=mailto:tlsrpt@example.com", 0, 1, "mailto:tlsrpt@example.com" },
                { "v=TLSRPTv1;rua=mailto:a@example.com,https://rpt.example.com/v1", 0, 2, "mailto:a@example.com" },
                { "v=TLSRPTv1 ; rua=mailto:a@example.com , https://rpt.example.com/v1 ;", 0, 2, "mailto:a@example.com" },
                { "v=TLSRPTv1; ext_1=abc; rua=https://r.example.com/x", 0, 1, "https://r.example.com/x" },
                { "v=TLSRPTv1; rua=ftp://x.example.com/", -ENOENT, 0, NULL },
                { "v=TLSRPTv1; rua=http://x.example.com/,mailto:b@example.com", 0, 1, "mailto:b@example.com" },
                { "v=TLSRPTv1;", -EBADMSG, 0, NULL },
                { "v=TLSRPTv1; rua=", -EBADMSG, 0, NULL },
                { "v=TLSRPTv1; rua=mailto:a@x; rua=mailto:b@x", -EBADMSG, 0, NULL },
                { "v=TLSRPTv1; =x; rua=mailto:a@x", -EBADMSG, 0, NULL },
                { "v=TLSRPTv1; ext=; rua=mailto:a@x", -EBADMSG, 0, NULL },
                { "v=TLSRPTv1 rua=mailto:a@x", -EBADMSG, 0, NULL },
                { "v=tlsrptv1; rua=mailto:a@x", -EBADMSG, 0, NULL },
                { "v=TLSRPTv10; rua=mailto:a@x", -EBADMSG, 0, NULL },
                { "v=TLSRPTv1; rua=mailto:a@x!y", -EBADMSG, 0, NULL },
                { "v=TLSRPTv1; rua=mailto:1@x,mailto:2@x,mailto:3@x,mailto:4@x,mailto:5@x,mailto:6@x", 0, 5, "mailto:1@x" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                TlsRptRecord rec;
                int k = tlsrpt_record_parse(cases[i].txt, strlen(cases[i].txt), &rec);
                if (k != cases[i].want)
                        TAP_FAIL("case %zu (%s): %d != %d", i, cases[i].txt, k, cases[i].want);
                if (k < 0)
                        continue;
                ASSERT_EQ(rec.n_rua, cases[i].n_rua);
                ASSERT_STREQ(rec.rua[0], cases[i].first);
                tlsrpt_record_done(&rec);
        }
        ASSERT_TRUE(tlsrpt_record_is_candidate("v=TLSRPTv1;", 11));
        ASSERT_TRUE(tlsrpt_record_is_candidate("v=TLSRPTv1  ;x", 14));
        ASSERT_FALSE(tlsrpt_record_is_candidate("v=TLSRPTv1", 10));
        ASSERT_FALSE(tlsrpt_record_is_candidate("v=spf1 -all", 11));
        TlsRptRecord rec;
        ASSERT_EQ(tlsrpt_record_parse("v=TLSRPTv1; rua=mailto:a@x\0y", 28, &rec), -EBADMSG);
}

TEST(mailto) {
        char *a;
        ASSERT_OK(tlsrpt_mailto_address("mailto:tlsrpt@example.com", &a));
        ASSERT_STREQ(a, "tlsrpt@example.com");
        free(a);
        ASSERT_OK(tlsrpt_mailto_address("MAILTO:tls%2Brpt@example.com?subject=x", &a));
        ASSERT_STREQ(a, "tls+rpt@example.com");
        free(a);
        ASSERT_EQ(tlsrpt_mailto_address("mailto:a@x,b@y", &a), -EINVAL);
        ASSERT_EQ(tlsrpt_mailto_address("mailto:nodomain", &a), -EINVAL);
        ASSERT_EQ(tlsrpt_mailto_address("mailto:a%0d%0aRCPT@x", &a), -EINVAL);
        ASSERT_EQ(tlsrpt_mailto_address("mailto:a%4@x", &a), -EINVAL);
        ASSERT_EQ(tlsrpt_mailto_address("mailto:a%", &a), -EINVAL);
        ASSERT_EQ(tlsrpt_mailto_address("https://x", &a), -EINVAL);
}

/* RFC 8460 §4.4: the fields, their JSON types, which are required. */
TEST(report_json_fields) {
        TlsRptStore *s;
        ASSERT_OK(tlsrpt_store_new(10, 10, &s));
        add(s, sts_result("example.com", true), 1);
        TlsRptResult f = sts_result("example.com", false);
        f.detail = (TlsRptDetail) { .result_type = "sts-policy-fetch-error", .reason_code = "HTTP 404" };
        add(s, f, 1);
        TlsRptResult n = { .day = DAY, .policy_domain = "example.com", .policy_type = TLSRPT_POLICY_NONE,
                           .kind = TLSRPT_KIND_SUCCESS, .count = 1 };
        add(s, n, 1);
        json_object *j, *v;
        TlsRptMeta meta = { "Example Org", "tlsrpt@example.org", "20261127.example.com.00@example.org" };
        ASSERT_OK(tlsrpt_report_json(tlsrpt_day_get_domain(tlsrpt_store_get_day(s, DAY), "example.com"), DAY, &meta, &j));
        ASSERT_STREQ(json_object_get_string(json_object_object_get(j, "organization-name")), "Example Org");
        ASSERT_STREQ(json_object_get_string(json_object_object_get(j, "contact-info")), "tlsrpt@example.org");
        ASSERT_STREQ(json_object_get_string(json_object_object_get(j, "report-id")), meta.report_id);
        v = json_object_object_get(j, "date-range");
        ASSERT_STREQ(json_object_get_string(json_object_object_get(v, "start-datetime")), "2026-11-27T00:00:00Z");
        ASSERT_STREQ(json_object_get_string(json_object_object_get(v, "end-datetime")), "2026-11-27T23:59:59Z");
        json_object *pols = json_object_object_get(j, "policies");
        ASSERT_TRUE(json_object_is_type(pols, json_type_array));
        ASSERT_EQ(json_object_array_length(pols), 2);
        json_object *p0 = json_object_array_get_idx(pols, 0), *pol = json_object_object_get(p0, "policy");
        ASSERT_STREQ(json_object_get_string(json_object_object_get(pol, "policy-type")), "sts");
        ASSERT_STREQ(json_object_get_string(json_object_object_get(pol, "policy-domain")), "example.com");
        ASSERT_TRUE(json_object_is_type(json_object_object_get(pol, "policy-string"), json_type_array));
        ASSERT_TRUE(json_object_is_type(json_object_object_get(pol, "mx-host"), json_type_array));
        json_object *sum = json_object_object_get(p0, "summary");
        ASSERT_TRUE(json_object_is_type(json_object_object_get(sum, "total-successful-session-count"), json_type_int));
        ASSERT_EQ(json_object_get_int(json_object_object_get(sum, "total-successful-session-count")), 1);
        ASSERT_EQ(json_object_get_int(json_object_object_get(sum, "total-failure-session-count")), 1);
        json_object *fd = json_object_array_get_idx(json_object_object_get(p0, "failure-details"), 0);
        ASSERT_STREQ(json_object_get_string(json_object_object_get(fd, "result-type")), "sts-policy-fetch-error");
        ASSERT_STREQ(json_object_get_string(json_object_object_get(fd, "failure-reason-code")), "HTTP 404");
        ASSERT_EQ(json_object_get_int(json_object_object_get(fd, "failed-session-count")), 1);
        /* Unknown fields are omitted, never "". */
        ASSERT_FALSE(json_object_object_get_ex(fd, "sending-mta-ip", NULL));
        ASSERT_FALSE(json_object_object_get_ex(fd, "receiving-mx-hostname", NULL));
        json_object *p1 = json_object_array_get_idx(pols, 1);
        pol = json_object_object_get(p1, "policy");
        ASSERT_STREQ(json_object_get_string(json_object_object_get(pol, "policy-type")), "no-policy-found");
        ASSERT_FALSE(json_object_object_get_ex(pol, "policy-string", NULL));
        ASSERT_FALSE(json_object_object_get_ex(pol, "mx-host", NULL));
        ASSERT_FALSE(json_object_object_get_ex(p1, "failure-details", NULL));

        /* gzip round trip. */
        size_t len;
        const char *text = json_object_to_json_string_length(j, JSON_C_TO_STRING_PLAIN, &len);
        uint8_t *gz;
        size_t gz_len;
        ASSERT_OK(tlsrpt_gzip(text, len, &gz, &gz_len));
        ASSERT_TRUE(gz_len > 18 && gz[0] == 0x1f && gz[1] == 0x8b);
        z_stream z = { .next_in = gz, .avail_in = (uInt) gz_len };
        char *out = malloc(len + 16);
        z.next_out = (Bytef *) out;
        z.avail_out = (uInt) len + 16;
        ASSERT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
        ASSERT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
        ASSERT_EQ(z.total_out, len);
        ASSERT_TRUE(memcmp(out, text, len) == 0);
        inflateEnd(&z);

        /* The message. */
        char *fn, *msg;
        size_t msg_len;
        ASSERT_OK(tlsrpt_filename("mta.example.org", "example.com", DAY, "00ff", &fn));
        ASSERT_STREQ(fn, "mta.example.org!example.com!1795737600!1795823999!00ff.json.gz");
        TlsRptMail mail = { .from = "noreply@mta.example.org", .to = "tlsrpt@example.com", .submitter = "mta.example.org",
                            .domain = "example.com", .report_id = meta.report_id, .filename = fn, .day = DAY,
                            .date = 1795780000, .message_id = "00ff.0@mta.example.org", .gz = gz, .gz_len = gz_len };
        ASSERT_OK(tlsrpt_mail_build(&mail, &msg, &msg_len));
        ASSERT_EQ(strlen(msg), msg_len);
        ASSERT_NOT_NULL(strstr(msg, "\r\nTLS-Report-Domain: example.com\r\n"));
        ASSERT_NOT_NULL(strstr(msg, "\r\nTLS-Report-Submitter: mta.example.org\r\n"));
        ASSERT_NOT_NULL(strstr(msg, "\r\nSubject: Report Domain: example.com Submitter: mta.example.org\r\n Report-ID: <20261127.example.com.00@example.org>\r\n"));
        ASSERT_NOT_NULL(strstr(msg, "Content-Type: multipart/report; report-type=\"tlsrpt\";"));
        ASSERT_NOT_NULL(strstr(msg, "Content-Type: application/tlsrpt+gzip;"));
        ASSERT_NOT_NULL(strstr(msg, "filename=\"mta.example.org!example.com!1795737600!1795823999!00ff.json.gz\""));
        ASSERT_NOT_NULL(strstr(msg, "\r\nAuto-Submitted: auto-generated\r\n"));
        /* No bare LF anywhere. */
        for (size_t i = 0; i < msg_len; i++)
                if (msg[i] == '\n')
                        ASSERT_TRUE(i > 0 && msg[i - 1] == '\r');
        free(msg);
        free(fn);
        free(out);
        free(gz);
        json_object_put(j);
        tlsrpt_store_free(s);
}

TEST(days) {
        char b[11];
        uint32_t d;
        tlsrpt_day_to_string(0, b);
        ASSERT_STREQ(b, "1970-01-01");
        tlsrpt_day_to_string(DAY, b);
        ASSERT_STREQ(b, "2026-11-27");
        ASSERT_OK(tlsrpt_day_from_string("2026-11-27", &d));
        ASSERT_EQ(d, DAY);
        ASSERT_EQ(tlsrpt_day_from_string("2026-02-31", &d), -EINVAL);
        ASSERT_EQ(tlsrpt_day_from_string("2026-1-27", &d), -EINVAL);
        ASSERT_EQ(tlsrpt_day_from_string("2026-11-27x", &d), -EINVAL);
        ASSERT_EQ(tlsrpt_day_from_string("", &d), -EINVAL);
}

int main(void) {
        return tap_run();
}
