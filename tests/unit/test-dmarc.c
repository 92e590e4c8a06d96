/* SPDX-License-Identifier: MIT */
/* DMARC: record parsing (valid, invalid, defaults, the §6.6.3 step 6
 * fallback to p=none), organizational domains from Debian's Public Suffix
 * List (and from a small list of our own, to pin the semantics), alignment,
 * the evaluation's query sequence against a table of DNS answers, policy
 * and pct= selection, temperror, and RFC5322.From domain extraction. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dmarc.h"
#include "macro.h"
#include "mail-header.h"
#include "tap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(DmarcRecord *, dmarc_record_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(DmarcPsl *, dmarc_psl_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(DmarcEval *, dmarc_eval_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(MailHeaders *, mail_headers_free);

static DmarcRecord *parse_ok(const char *txt) {
        DmarcRecord *r = NULL;
        const char *why = NULL;
        int k = dmarc_record_parse(txt, strlen(txt), &r, &why);
        if (k < 0)
                TAP_FAIL("parse of \"%.200s\" failed: %d (%s)", txt, k, why ? why : "-");
        return r;
}

/* ---- records ---- */

TEST(record_full) {
        _cleanup_(dmarc_record_freep) DmarcRecord *r = parse_ok(
                "v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=s; pct=50; "
                "rua=mailto:a@example.com, mailto:b@example.net!10m; ruf=mailto:f@example.com!5; "
                "fo=1:d; ri=3600; rf=afrf");
        ASSERT_EQ(r->p, DMARC_POLICY_REJECT);
        ASSERT_EQ(r->sp, DMARC_POLICY_QUARANTINE);
        ASSERT_TRUE(r->strict_dkim);
        ASSERT_TRUE(r->strict_spf);
        ASSERT_EQ(r->pct, 50);
        ASSERT_EQ(r->n_rua, 2);
        ASSERT_STREQ(r->rua[0], "mailto:a@example.com");
        ASSERT_STREQ(r->rua[1], "mailto:b@example.net");
        ASSERT_NULL(r->rua[2]);
        ASSERT_EQ(r->rua_max_size[0], 0);
        ASSERT_EQ(r->rua_max_size[1], 10ULL << 20);
        ASSERT_EQ(r->n_ruf, 1);
        ASSERT_STREQ(r->ruf[0], "mailto:f@example.com");
        ASSERT_NULL(r->ruf[1]);
        ASSERT_EQ(r->ruf_max_size[0], 5);
        ASSERT_EQ(r->fo_mask, DMARC_FO_1 | DMARC_FO_D);
        ASSERT_EQ(r->ri, 3600);
}

TEST(record_defaults) {
        _cleanup_(dmarc_record_freep) DmarcRecord *r = parse_ok("v=DMARC1; p=quarantine");
        ASSERT_EQ(r->p, DMARC_POLICY_QUARANTINE);
        ASSERT_EQ(r->sp, DMARC_POLICY_QUARANTINE); /* sp defaults to p */
        ASSERT_FALSE(r->strict_dkim);
        ASSERT_FALSE(r->strict_spf);
        ASSERT_EQ(r->pct, 100);
        ASSERT_NULL(r->rua);
        ASSERT_NULL(r->ruf);
        ASSERT_EQ(r->n_rua, 0);
        ASSERT_EQ(r->fo_mask, DMARC_FO_0);
        ASSERT_EQ(r->ri, 86400);
}

TEST(record_syntax_leniency) {
        /* White space around "=" and ";", tag names and keywords in any case,
         * a trailing ";" and empty tag-specs. */
        _cleanup_(dmarc_record_freep) DmarcRecord *a = parse_ok("v = DMARC1 ;P = Reject ;  SP=NONE;; ADKIM=S ;");
        ASSERT_EQ(a->p, DMARC_POLICY_REJECT);
        ASSERT_EQ(a->sp, DMARC_POLICY_NONE);
        ASSERT_TRUE(a->strict_dkim);
        ASSERT_FALSE(a->strict_spf);

        /* Unknown tags, tag-specs without "=", repeated tags (first wins). */
        _cleanup_(dmarc_record_freep) DmarcRecord *b = parse_ok("v=DMARC1; foo=bar; junk; p=reject; p=none; np=none; psd=y");
        ASSERT_EQ(b->p, DMARC_POLICY_REJECT);

        /* Invalid values of other tags: the tag is ignored. */
        static const char *const ignored[] = {
                "v=DMARC1; p=none; pct=150",
                "v=DMARC1; p=none; pct=-1",
                "v=DMARC1; p=none; pct=abc",
                "v=DMARC1; p=none; pct=",
                "v=DMARC1; p=none; pct=0100",
                "v=DMARC1; p=none; adkim=x; aspf=strict",
                "v=DMARC1; p=none; fo=2",
                "v=DMARC1; p=none; fo=1:x",
                "v=DMARC1; p=none; ri=99999999999",
                "v=DMARC1; p=none; ri=1h",
                "v=DMARC1; p=none; rf=afrf:",
                "v=DMARC1; p=none; rua=not a uri",
        };
        for (size_t i = 0; i < ELEMENTSOF(ignored); i++) {
                _cleanup_(dmarc_record_freep) DmarcRecord *r = parse_ok(ignored[i]);
                ASSERT_EQ(r->p, DMARC_POLICY_NONE);
                ASSERT_EQ(r->pct, 100);
                ASSERT_FALSE(r->strict_dkim);
                ASSERT_FALSE(r->strict_spf);
                ASSERT_EQ(r->fo_mask, DMARC_FO_0);
                ASSERT_EQ(r->ri, 86400);
                ASSERT_EQ(r->n_rua, 0);
        }

        _cleanup_(dmarc_record_freep) DmarcRecord *c = parse_ok("v=DMARC1;p=none;pct=0;fo=0:1:d:s");
        ASSERT_EQ(c->pct, 0);
        ASSERT_EQ(c->fo_mask, DMARC_FO_0 | DMARC_FO_1 | DMARC_FO_D | DMARC_FO_S);
}

TEST(record_invalid) {
        static const struct {
                const char *txt;
        } bad[] = {
                { "" },
                { "v=DMARC1" },                         /* no p=, no rua= */
                { "v=DMARC1;" },
                { "v=DMARC2; p=reject" },
                { "v=dmarc1; p=reject" },               /* the version is case-sensitive */
                { "v=DMARC10; p=reject" },
                { "v=DMARC1 p=reject" },
                { " v=DMARC1; p=reject" },              /* must start with v= */
                { "p=reject; v=DMARC1" },
                { "v=spf1 -all" },
                { "v=DMARC1; p=block" },
                { "v=DMARC1; p=" },
                { "v=DMARC1; p=reject; sp=block" },     /* §6.6.3 step 6, no rua */
                { "v=DMARC1; p=bogus; rua=nocolon" },
                { "v=DMARC1; p=bogus; rua=mailto:" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                DmarcRecord *r = NULL;
                const char *why = NULL;
                int k = dmarc_record_parse(bad[i].txt, strlen(bad[i].txt), &r, &why);
                if (k != -EINVAL)
                        TAP_FAIL("\"%s\": %d", bad[i].txt, k);
                ASSERT_NULL(r);
                ASSERT_NOT_NULL(why);
        }

        /* Longer than the cap, otherwise fine. */
        size_t n = DMARC_RECORD_MAX + 1;
        _cleanup_free_ char *big = malloc(n + 1);
        ASSERT_NOT_NULL(big);
        memset(big, ' ', n);
        memcpy(big, "v=DMARC1; p=reject;", 19);
        big[n] = 0;
        DmarcRecord *r = NULL;
        const char *why = NULL;
        ASSERT_ERR(dmarc_record_parse(big, n, &r, &why), -EINVAL);
        ASSERT_STREQ(why, "DMARC record too long");
        ASSERT_OK(dmarc_record_parse(big, DMARC_RECORD_MAX, &r, &why));
        dmarc_record_free(r);

        /* A NUL inside a value makes that value invalid, nothing worse. */
        static const char nul[] = "v=DMARC1; p=reject; pct=5\0; adkim=s";
        ASSERT_OK(dmarc_record_parse(nul, sizeof nul - 1, &r, &why));
        ASSERT_EQ(r->pct, 100);
        ASSERT_TRUE(r->strict_dkim);
        dmarc_record_free(r);
}

TEST(record_rua_makes_p_none) {
        static const char *const cases[] = {
                "v=DMARC1; rua=mailto:r@example.com",
                "v=DMARC1; p=bogus; rua=mailto:r@example.com",
                "v=DMARC1; p=reject; sp=bogus; rua=mailto:r@example.com",
                "v=DMARC1; p=; rua=junk, mailto:r@example.com",
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(dmarc_record_freep) DmarcRecord *r = parse_ok(cases[i]);
                ASSERT_EQ(r->p, DMARC_POLICY_NONE);
                ASSERT_EQ(r->sp, DMARC_POLICY_NONE);
                ASSERT_EQ(r->n_rua, 1);
                ASSERT_STREQ(r->rua[0], "mailto:r@example.com");
        }
}

TEST(record_uris) {
        /* Invalid URIs are skipped, sizes parsed, the list is capped. */
        _cleanup_(dmarc_record_freep) DmarcRecord *r = parse_ok(
                "v=DMARC1; p=none; rua=mailto:a@x.example!1k , nocolon, mailto:b@x.example!2g,"
                "mailto:c%2Cd@x.example!3t, mailto:bad!size, https://r.example/x?y=1, mailto:sp ace@x, mailto:e@x!1x");
        ASSERT_EQ(r->n_rua, 4);
        ASSERT_STREQ(r->rua[0], "mailto:a@x.example");
        ASSERT_EQ(r->rua_max_size[0], 1024);
        ASSERT_STREQ(r->rua[1], "mailto:b@x.example");
        ASSERT_EQ(r->rua_max_size[1], 2ULL << 30);
        ASSERT_STREQ(r->rua[2], "mailto:c%2Cd@x.example");
        ASSERT_EQ(r->rua_max_size[2], 3ULL << 40);
        ASSERT_STREQ(r->rua[3], "https://r.example/x?y=1");
        ASSERT_NULL(r->rua[4]);

        char txt[2048] = "v=DMARC1; p=none; ruf=";
        for (unsigned i = 0; i < 3 * DMARC_MAX_URIS; i++) {
                char one[64];
                snprintf(one, sizeof one, "%smailto:r%u@example.com", i ? "," : "", i);
                strcat(txt, one);
        }
        _cleanup_(dmarc_record_freep) DmarcRecord *c = parse_ok(txt);
        ASSERT_EQ(c->n_ruf, DMARC_MAX_URIS);
        ASSERT_STREQ(c->ruf[DMARC_MAX_URIS - 1], "mailto:r7@example.com");
        ASSERT_NULL(c->ruf[DMARC_MAX_URIS]);

        /* An oversized size is an invalid URI, not an overflow. */
        _cleanup_(dmarc_record_freep) DmarcRecord *o = parse_ok("v=DMARC1; p=none; rua=mailto:a@x!99999999999999999999, mailto:b@x!16777216t");
        ASSERT_EQ(o->n_rua, 0);
}

TEST(record_is_dmarc1) {
        ASSERT_TRUE(dmarc_record_is_dmarc1("v=DMARC1", 8));
        ASSERT_TRUE(dmarc_record_is_dmarc1("V=DMARC1;", 9));
        ASSERT_TRUE(dmarc_record_is_dmarc1("v\t= DMARC1 ; p=none", 19));
        ASSERT_FALSE(dmarc_record_is_dmarc1("v=DMARC1x", 9));
        ASSERT_FALSE(dmarc_record_is_dmarc1("v=DMARC", 7));
        ASSERT_FALSE(dmarc_record_is_dmarc1("v=DMARC1", 7));
        ASSERT_FALSE(dmarc_record_is_dmarc1("", 0));
        ASSERT_FALSE(dmarc_record_is_dmarc1("x=DMARC1", 8));
        ASSERT_FALSE(dmarc_record_is_dmarc1("vv=DMARC1", 9));
}

TEST(strings) {
        ASSERT_STREQ(dmarc_policy_to_string(DMARC_POLICY_NONE), "none");
        ASSERT_STREQ(dmarc_policy_to_string(DMARC_POLICY_QUARANTINE), "quarantine");
        ASSERT_STREQ(dmarc_policy_to_string(DMARC_POLICY_REJECT), "reject");
        ASSERT_NULL(dmarc_policy_to_string(_DMARC_POLICY_INVALID));
        ASSERT_STREQ(dmarc_result_to_string(DMARC_RESULT_PASS), "pass");
        ASSERT_STREQ(dmarc_result_to_string(DMARC_RESULT_TEMPERROR), "temperror");
        ASSERT_STREQ(dmarc_result_to_string(DMARC_RESULT_PERMERROR), "permerror");
        ASSERT_NULL(dmarc_result_to_string(_DMARC_RESULT_MAX));
}

/* ---- organizational domains ---- */

static void check_org(const DmarcPsl *psl, const char *name, const char *want) {
        _cleanup_free_ char *org = NULL;
        int r = dmarc_org_domain(psl, name, &org);
        if (!want) {
                if (r != -EINVAL)
                        TAP_FAIL("org(%s): %d \"%s\", expected -EINVAL", name, r, r >= 0 ? org : "");
                return;
        }
        if (r < 0)
                TAP_FAIL("org(%s): %d, expected %s", name, r, want);
        if (strcmp(org, want) != 0)
                TAP_FAIL("org(%s): %s, expected %s", name, org, want);
}

TEST(org_domain_debian_psl) {
        _cleanup_(dmarc_psl_freep) DmarcPsl *psl = NULL;
        ASSERT_OK(dmarc_psl_new(NULL, &psl));

        check_org(psl, "example.com", "example.com");
        check_org(psl, "a.b.example.com", "example.com");
        check_org(psl, "example.co.uk", "example.co.uk");
        check_org(psl, "mail.example.co.uk", "example.co.uk");
        check_org(psl, "WWW.Example.COM.", "example.com");
        /* A public suffix has no organizational domain. */
        check_org(psl, "com", NULL);
        check_org(psl, "co.uk", NULL);
        /* The PRIVATE section counts (PSL_TYPE_ANY): github.io is a public
         * suffix, so every user's site is its own organization. */
        check_org(psl, "github.io", NULL);
        check_org(psl, "foo.github.io", "foo.github.io");
        check_org(psl, "a.b.foo.github.io", "foo.github.io");
        /* Wildcard and exception rules (*.kobe.jp, !city.kobe.jp). */
        check_org(psl, "a.b.c.kobe.jp", "b.c.kobe.jp");
        check_org(psl, "www.city.kobe.jp", "city.kobe.jp");
        /* An unlisted TLD is a public suffix by the implicit "*" rule. */
        check_org(psl, "mx.halyard.test", "halyard.test");
        check_org(psl, "test", NULL);
        /* A-labels stay as they are. */
        check_org(psl, "www.xn--85x722f.xn--55qx5d.cn", "xn--85x722f.xn--55qx5d.cn");
        /* Malformed names. */
        check_org(psl, "", NULL);
        check_org(psl, ".", NULL);
        check_org(psl, "a..example.com", NULL);
        check_org(psl, ".example.com", NULL);
        check_org(psl, "a b.example.com", NULL);
        check_org(psl, "a@example.com", NULL);
        check_org(psl, "example.com..", NULL);

        char longname[300];
        memset(longname, 'a', sizeof longname);
        for (size_t i = 60; i < sizeof longname; i += 61)
                longname[i] = '.';
        memcpy(longname + sizeof longname - 5, ".com", 5);
        check_org(psl, longname, NULL);
        memset(longname, 'a', 70);
        memcpy(longname + 70, ".com", 5);
        check_org(psl, longname, NULL); /* a 70-byte label */
}

TEST(org_domain_own_list) {
        char path[] = "/tmp/test-dmarc-psl-XXXXXX";
        int fd = mkstemp(path);
        ASSERT_TRUE(fd >= 0);
        static const char list[] =
                "// ===BEGIN ICANN DOMAINS===\n"
                "com\n"
                "uk\n"
                "co.uk\n"
                "// ===END ICANN DOMAINS===\n"
                "// ===BEGIN PRIVATE DOMAINS===\n"
                "pages.example.com\n"
                "// ===END PRIVATE DOMAINS===\n";
        ASSERT_EQ(write(fd, list, sizeof list - 1), (ssize_t) (sizeof list - 1));
        close(fd);

        _cleanup_(dmarc_psl_freep) DmarcPsl *psl = NULL;
        int r = dmarc_psl_new(path, &psl);
        unlink(path);
        ASSERT_OK(r);
        check_org(psl, "a.example.com", "example.com");
        check_org(psl, "pages.example.com", NULL);
        check_org(psl, "me.pages.example.com", "me.pages.example.com");
        check_org(psl, "x.example.co.uk", "example.co.uk");

        DmarcPsl *none = NULL;
        ASSERT_ERR(dmarc_psl_new("/nonexistent/psl.dafsa", &none), -ENOENT);
        ASSERT_NULL(none);
}

TEST(alignment) {
        _cleanup_(dmarc_psl_freep) DmarcPsl *psl = NULL;
        ASSERT_OK(dmarc_psl_new(NULL, &psl));

        ASSERT_TRUE(dmarc_aligned(psl, "example.com", "example.com", true));
        ASSERT_TRUE(dmarc_aligned(psl, "example.com", "EXAMPLE.com.", true));
        ASSERT_FALSE(dmarc_aligned(psl, "example.com", "mail.example.com", true));
        ASSERT_TRUE(dmarc_aligned(psl, "example.com", "mail.example.com", false));
        ASSERT_TRUE(dmarc_aligned(psl, "news.example.com", "mail.example.com", false));
        ASSERT_FALSE(dmarc_aligned(psl, "news.example.com", "mail.example.com", true));
        ASSERT_FALSE(dmarc_aligned(psl, "example.com", "example.net", false));
        ASSERT_FALSE(dmarc_aligned(psl, "example.co.uk", "other.co.uk", false));
        ASSERT_FALSE(dmarc_aligned(psl, "example.co.uk", "co.uk", false));
        /* Public suffixes align only with themselves. */
        ASSERT_FALSE(dmarc_aligned(psl, "foo.github.io", "github.io", false));
        ASSERT_FALSE(dmarc_aligned(psl, "foo.github.io", "bar.github.io", false));
        ASSERT_TRUE(dmarc_aligned(psl, "x.foo.github.io", "foo.github.io", false));
        ASSERT_TRUE(dmarc_aligned(psl, "github.io", "github.io", false));
        ASSERT_FALSE(dmarc_aligned(psl, "example.com", NULL, false));
        ASSERT_FALSE(dmarc_aligned(psl, "example.com", "", false));
        ASSERT_FALSE(dmarc_aligned(psl, "example.com", "bad..example.com", false));
}

/* ---- evaluation ---- */

typedef struct Answer {
        const char *name;
        DnsStatus status;
        const char *txt[4];
} Answer;

/* Runs e against the table, answering in the order the queries come;
 * queries not in the table are NXDOMAIN. The names asked go to log. */
static void run(DmarcEval *e, const Answer *table, size_t n_table, char *log, size_t log_size) {
        const char *name;
        log[0] = 0;
        unsigned rounds = 0;
        while (dmarc_eval_next_query(e, &name) > 0) {
                if (++rounds > 4)
                        TAP_FAIL("too many queries");
                ASSERT_EQ(dmarc_eval_next_query(e, &name), 0); /* waiting */
                if (log[0])
                        strncat(log, ",", log_size - strlen(log) - 1);
                strncat(log, name, log_size - strlen(log) - 1);

                DnsRecord recs[4] = {};
                DnsResult res = { .qname = name, .qtype = DNS_TYPE_TXT, .status = DNS_STATUS_NXDOMAIN };
                for (size_t i = 0; i < n_table; i++) {
                        if (strcmp(table[i].name, name) != 0)
                                continue;
                        res.status = table[i].status;
                        for (size_t j = 0; j < 4 && table[i].txt[j]; j++) {
                                recs[j].type = DNS_TYPE_TXT;
                                recs[j].txt.text = (char *) table[i].txt[j];
                                recs[j].txt.len = strlen(table[i].txt[j]);
                                recs[j].txt.n_strings = 1;
                                res.n_records = j + 1;
                        }
                        res.records = recs;
                        break;
                }
                ASSERT_OK(dmarc_eval_answer(e, &res));
        }
        ASSERT_TRUE(dmarc_eval_is_done(e));
}

typedef struct EvalCase {
        const char *label;
        const char *from;
        const char *spf_domain;
        bool spf_pass;
        DmarcAuthDomain dkim[3];
        unsigned random;
        Answer dns[3];
        /* expected */
        const char *queries;
        DmarcResultCode result;
        const char *record_domain;
        DmarcPolicy policy, disposition;
        bool spf_aligned, dkim_aligned;
} EvalCase;

#define NOTHING NULL, false, { { NULL, false } }

static const EvalCase eval_cases[] = {
        /* The query sequence and its fallbacks. */
        { "record at the From domain", "example.com", NOTHING, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_REJECT },
        { "org fallback after NXDOMAIN", "mail.example.com", NOTHING, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; sp=quarantine" } } },
          "_dmarc.mail.example.com,_dmarc.example.com", DMARC_RESULT_FAIL, "example.com",
          DMARC_POLICY_QUARANTINE, DMARC_POLICY_QUARANTINE },
        { "org fallback after NODATA", "a.b.example.co.uk", NOTHING, 0,
          { { "_dmarc.a.b.example.co.uk", DNS_STATUS_NODATA },
            { "_dmarc.example.co.uk", DNS_STATUS_OK, { "v=DMARC1; p=quarantine" } } },
          "_dmarc.a.b.example.co.uk,_dmarc.example.co.uk", DMARC_RESULT_FAIL, "example.co.uk",
          DMARC_POLICY_QUARANTINE, DMARC_POLICY_QUARANTINE },
        { "org fallback when only other TXT", "mail.example.com", NOTHING, 0,
          { { "_dmarc.mail.example.com", DNS_STATUS_OK, { "v=spf1 -all", "hello", "v=DMARC2; p=reject" } },
            { "_dmarc.example.com", DNS_STATUS_OK, { "some text", "v=DMARC1; p=none" } } },
          "_dmarc.mail.example.com,_dmarc.example.com", DMARC_RESULT_FAIL, "example.com",
          DMARC_POLICY_NONE, DMARC_POLICY_NONE },
        { "no record anywhere", "mail.example.com", NOTHING, 0, {},
          "_dmarc.mail.example.com,_dmarc.example.com", DMARC_RESULT_NONE, NULL, DMARC_POLICY_NONE, DMARC_POLICY_NONE },
        { "From domain is the org domain: one query", "example.com", NOTHING, 0, {},
          "_dmarc.example.com", DMARC_RESULT_NONE, NULL, DMARC_POLICY_NONE, DMARC_POLICY_NONE },
        { "From domain is a public suffix: one query", "github.io", NOTHING, 0, {},
          "_dmarc.github.io", DMARC_RESULT_NONE, NULL, DMARC_POLICY_NONE, DMARC_POLICY_NONE },
        { "private-section org domain", "x.foo.github.io", NOTHING, 0,
          { { "_dmarc.foo.github.io", DNS_STATUS_OK, { "v=DMARC1; p=reject" } },
            { "_dmarc.github.io", DNS_STATUS_OK, { "v=DMARC1; p=none" } } },
          "_dmarc.x.foo.github.io,_dmarc.foo.github.io", DMARC_RESULT_FAIL, "foo.github.io",
          DMARC_POLICY_REJECT, DMARC_POLICY_REJECT },
        { "several DMARC records: none, no fallback", "mail.example.com", NOTHING, 0,
          { { "_dmarc.mail.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject", "v=DMARC1; p=none" } },
            { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject" } } },
          "_dmarc.mail.example.com", DMARC_RESULT_NONE, "mail.example.com", DMARC_POLICY_NONE, DMARC_POLICY_NONE },
        { "one valid and one invalid DMARC1 record: none", "example.com", NOTHING, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject", "v=DMARC1; p=nope" } } },
          "_dmarc.example.com", DMARC_RESULT_NONE, "example.com", DMARC_POLICY_NONE, DMARC_POLICY_NONE },
        { "DMARC1 record without p=: none, no fallback", "mail.example.com", NOTHING, 0,
          { { "_dmarc.mail.example.com", DNS_STATUS_OK, { "v=DMARC1; adkim=s" } },
            { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject" } } },
          "_dmarc.mail.example.com", DMARC_RESULT_NONE, "mail.example.com", DMARC_POLICY_NONE, DMARC_POLICY_NONE },
        { "invalid p= with rua=: as p=none", "example.com", NOTHING, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=rejectt; rua=mailto:d@example.com" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_NONE, DMARC_POLICY_NONE },

        /* Temporary failures. */
        { "SERVFAIL at the From domain", "mail.example.com", NOTHING, 0,
          { { "_dmarc.mail.example.com", DNS_STATUS_SERVFAIL } },
          "_dmarc.mail.example.com", DMARC_RESULT_TEMPERROR, NULL, DMARC_POLICY_NONE, DMARC_POLICY_NONE },
        { "timeout at the org domain", "mail.example.com", NOTHING, 0,
          { { "_dmarc.example.com", DNS_STATUS_TIMEOUT } },
          "_dmarc.mail.example.com,_dmarc.example.com", DMARC_RESULT_TEMPERROR, NULL, DMARC_POLICY_NONE, DMARC_POLICY_NONE },
        { "local resolver error", "example.com", NOTHING, 0,
          { { "_dmarc.example.com", DNS_STATUS_ERROR } },
          "_dmarc.example.com", DMARC_RESULT_TEMPERROR, NULL, DMARC_POLICY_NONE, DMARC_POLICY_NONE },

        /* Alignment: SPF. */
        { "SPF pass, relaxed aligned", "example.com", "bounces.example.com", true, { { NULL, false } }, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject" } } },
          "_dmarc.example.com", DMARC_RESULT_PASS, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_NONE, true, false },
        { "SPF pass, strict not aligned", "example.com", "bounces.example.com", true, { { NULL, false } }, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; aspf=s" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_REJECT, false, false },
        { "SPF pass, strict aligned", "example.com", "EXAMPLE.COM", true, { { NULL, false } }, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; aspf=s" } } },
          "_dmarc.example.com", DMARC_RESULT_PASS, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_NONE, true, false },
        { "SPF aligned but not passing", "example.com", "example.com", false, { { NULL, false } }, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=quarantine" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_QUARANTINE, DMARC_POLICY_QUARANTINE },
        { "SPF pass for another organization", "example.com", "example.net", true, { { NULL, false } }, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=quarantine" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_QUARANTINE, DMARC_POLICY_QUARANTINE },

        /* Alignment: DKIM. */
        { "DKIM pass, relaxed aligned (From subdomain)", "news.example.com", NULL, false,
          { { "example.com", true } }, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject" } } },
          "_dmarc.news.example.com,_dmarc.example.com", DMARC_RESULT_PASS, "example.com", DMARC_POLICY_REJECT,
          DMARC_POLICY_NONE, false, true },
        { "DKIM pass, strict not aligned", "news.example.com", NULL, false,
          { { "example.com", true } }, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; adkim=s" } } },
          "_dmarc.news.example.com,_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_REJECT,
          DMARC_POLICY_REJECT, false, false },
        { "DKIM: failing aligned, passing unaligned, then passing aligned", "example.com", NULL, false,
          { { "example.com", false }, { "example.org", true }, { "Example.COM", true } }, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; adkim=s" } } },
          "_dmarc.example.com", DMARC_RESULT_PASS, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_NONE, false, true },
        { "DKIM: only a failing aligned signature", "example.com", NULL, false,
          { { "example.com", false }, { "example.org", true } }, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_REJECT, false, false },
        { "both aligned", "example.com", "example.com", true, { { "mail.example.com", true } }, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject" } } },
          "_dmarc.example.com", DMARC_RESULT_PASS, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_NONE, true, true },
        { "strict SPF, relaxed DKIM", "example.com", "mail.example.com", true, { { "mail.example.com", true } }, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; aspf=s; adkim=r" } } },
          "_dmarc.example.com", DMARC_RESULT_PASS, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_NONE, false, true },

        /* p= versus sp=. */
        { "sp= ignored for the From domain's own record", "mail.example.com", NOTHING, 0,
          { { "_dmarc.mail.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; sp=none" } } },
          "_dmarc.mail.example.com", DMARC_RESULT_FAIL, "mail.example.com", DMARC_POLICY_REJECT, DMARC_POLICY_REJECT },
        { "sp= for a subdomain via the org record", "mail.example.com", NOTHING, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; sp=none" } } },
          "_dmarc.mail.example.com,_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_NONE, DMARC_POLICY_NONE },
        { "sp= absent: p= for subdomains", "mail.example.com", NOTHING, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=quarantine" } } },
          "_dmarc.mail.example.com,_dmarc.example.com", DMARC_RESULT_FAIL, "example.com",
          DMARC_POLICY_QUARANTINE, DMARC_POLICY_QUARANTINE },
        { "sp= for the org domain itself is not used", "example.com", NOTHING, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=none; sp=reject" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_NONE, DMARC_POLICY_NONE },

        /* pct= with fixed random values. */
        { "pct=50, random 49: in sample", "example.com", NOTHING, 49,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; pct=50" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_REJECT },
        { "pct=50, random 50: reject -> quarantine", "example.com", NOTHING, 50,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; pct=50" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_QUARANTINE },
        { "pct=10, random 99: quarantine -> none", "example.com", NOTHING, 99,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=quarantine; pct=10" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_QUARANTINE, DMARC_POLICY_NONE },
        { "pct=0, random 0: never in sample", "example.com", NOTHING, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; pct=0" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_QUARANTINE },
        { "pct=100, random 99: always", "example.com", NOTHING, 99,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=quarantine; pct=100" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_QUARANTINE, DMARC_POLICY_QUARANTINE },
        { "pct on a sp= policy", "a.example.com", NOTHING, 80,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=none; sp=reject; pct=25" } } },
          "_dmarc.a.example.com,_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_REJECT,
          DMARC_POLICY_QUARANTINE },
        { "random out of range wraps: 150 is 50", "example.com", NOTHING, 150,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; pct=100" } } },
          "_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_REJECT },
        { "pass ignores pct", "example.com", "example.com", true, { { NULL, false } }, 99,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject; pct=1" } } },
          "_dmarc.example.com", DMARC_RESULT_PASS, "example.com", DMARC_POLICY_REJECT, DMARC_POLICY_NONE, true, false },

        /* Names: case and trailing dot of the From domain. */
        { "From domain normalized", "Mail.Example.COM.", NOTHING, 0,
          { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=reject" } } },
          "_dmarc.mail.example.com,_dmarc.example.com", DMARC_RESULT_FAIL, "example.com", DMARC_POLICY_REJECT,
          DMARC_POLICY_REJECT },
};

TEST(eval_table) {
        _cleanup_(dmarc_psl_freep) DmarcPsl *psl = NULL;
        ASSERT_OK(dmarc_psl_new(NULL, &psl));

        for (size_t i = 0; i < ELEMENTSOF(eval_cases); i++) {
                const EvalCase *c = &eval_cases[i];
                size_t n_dkim = 0;
                while (n_dkim < ELEMENTSOF(c->dkim) && c->dkim[n_dkim].domain)
                        n_dkim++;
                DmarcParams params = {
                        .from_domain = c->from,
                        .spf_domain = c->spf_domain,
                        .spf_pass = c->spf_pass,
                        .dkim = c->dkim,
                        .n_dkim = n_dkim,
                        .random = c->random,
                };
                size_t n_dns = 0;
                while (n_dns < ELEMENTSOF(c->dns) && c->dns[n_dns].name)
                        n_dns++;

                _cleanup_(dmarc_eval_freep) DmarcEval *e = NULL;
                ASSERT_OK(dmarc_eval_new(psl, &params, &e));
                char log[512];
                run(e, c->dns, n_dns, log, sizeof log);

                const DmarcResult *res = NULL;
                ASSERT_OK(dmarc_eval_result(e, &res));
                if (strcmp(log, c->queries) != 0)
                        TAP_FAIL("%s: queries %s, expected %s", c->label, log, c->queries);
                if (res->result != c->result)
                        TAP_FAIL("%s: result %s, expected %s (%s)", c->label, dmarc_result_to_string(res->result),
                                 dmarc_result_to_string(c->result), res->reason);
                if (!streq_ptr(res->record_domain, c->record_domain))
                        TAP_FAIL("%s: record domain %s", c->label, res->record_domain ?: "(null)");
                if (res->policy != c->policy || res->disposition != c->disposition)
                        TAP_FAIL("%s: policy %s disposition %s", c->label, dmarc_policy_to_string(res->policy),
                                 dmarc_policy_to_string(res->disposition));
                if (res->result == DMARC_RESULT_PASS || res->result == DMARC_RESULT_FAIL) {
                        if (res->spf_aligned != c->spf_aligned || res->dkim_aligned != c->dkim_aligned)
                                TAP_FAIL("%s: aligned spf=%d dkim=%d", c->label, res->spf_aligned, res->dkim_aligned);
                        ASSERT_NOT_NULL(res->record);
                } else
                        ASSERT_NULL(res->record);
                ASSERT_NOT_NULL(res->reason);
                ASSERT_NOT_NULL(res->from_domain);
        }
}

TEST(eval_result_fields) {
        _cleanup_(dmarc_psl_freep) DmarcPsl *psl = NULL;
        ASSERT_OK(dmarc_psl_new(NULL, &psl));
        DmarcParams params = { .from_domain = "news.example.co.uk", .random = 10 };
        _cleanup_(dmarc_eval_freep) DmarcEval *e = NULL;
        ASSERT_OK(dmarc_eval_new(psl, &params, &e));
        const Answer dns[] = { { "_dmarc.example.co.uk", DNS_STATUS_OK, { "v=DMARC1; p=reject; pct=20; rua=mailto:x@example.co.uk" } } };
        char log[256];
        run(e, dns, 1, log, sizeof log);
        const DmarcResult *res;
        ASSERT_OK(dmarc_eval_result(e, &res));
        ASSERT_STREQ(res->from_domain, "news.example.co.uk");
        ASSERT_STREQ(res->org_domain, "example.co.uk");
        ASSERT_STREQ(res->record_domain, "example.co.uk");
        ASSERT_EQ(res->pct, 20);
        ASSERT_EQ(res->record->n_rua, 1);
        ASSERT_EQ(res->disposition, DMARC_POLICY_REJECT);
        ASSERT_STREQ(res->reason, "no aligned identifier passed");
}

TEST(eval_permerror) {
        _cleanup_(dmarc_psl_freep) DmarcPsl *psl = NULL;
        ASSERT_OK(dmarc_psl_new(NULL, &psl));
        static const char *const froms[] = { NULL, "", "bad..example.com", "exa mple.com", "[192.0.2.1]" };
        for (size_t i = 0; i < ELEMENTSOF(froms); i++) {
                DmarcParams params = { .from_domain = froms[i], .spf_pass = true, .spf_domain = "example.com" };
                _cleanup_(dmarc_eval_freep) DmarcEval *e = NULL;
                ASSERT_OK(dmarc_eval_new(psl, &params, &e));
                const char *name;
                ASSERT_EQ(dmarc_eval_next_query(e, &name), 0);
                ASSERT_TRUE(dmarc_eval_is_done(e));
                const DmarcResult *res;
                ASSERT_OK(dmarc_eval_result(e, &res));
                ASSERT_EQ(res->result, DMARC_RESULT_PERMERROR);
                ASSERT_NULL(res->from_domain);
                ASSERT_NULL(res->record);
                ASSERT_EQ(res->disposition, DMARC_POLICY_NONE);
        }
}

TEST(eval_protocol) {
        _cleanup_(dmarc_psl_freep) DmarcPsl *psl = NULL;
        ASSERT_OK(dmarc_psl_new(NULL, &psl));
        DmarcParams params = { .from_domain = "mail.example.com" };
        _cleanup_(dmarc_eval_freep) DmarcEval *e = NULL;
        ASSERT_OK(dmarc_eval_new(psl, &params, &e));

        const DmarcResult *res;
        ASSERT_ERR(dmarc_eval_result(e, &res), -EBUSY);
        DnsResult nx = { .qname = "_dmarc.mail.example.com", .qtype = DNS_TYPE_TXT, .status = DNS_STATUS_NXDOMAIN };
        ASSERT_ERR(dmarc_eval_answer(e, &nx), -ENOENT); /* nothing asked yet */

        const char *name;
        ASSERT_EQ(dmarc_eval_next_query(e, &name), 1);
        ASSERT_STREQ(name, "_dmarc.mail.example.com");
        ASSERT_FALSE(dmarc_eval_is_done(e));

        DnsResult wrong = nx;
        wrong.qname = "_dmarc.example.com";
        ASSERT_ERR(dmarc_eval_answer(e, &wrong), -ENOENT);
        wrong = nx;
        wrong.qtype = DNS_TYPE_A;
        ASSERT_ERR(dmarc_eval_answer(e, &wrong), -ENOENT);

        /* The resolver's spelling of the name may differ in case and dot. */
        DnsResult upper = nx;
        upper.qname = "_DMARC.Mail.Example.com.";
        ASSERT_OK(dmarc_eval_answer(e, &upper));
        ASSERT_EQ(dmarc_eval_next_query(e, &name), 1);
        ASSERT_STREQ(name, "_dmarc.example.com");
        ASSERT_ERR(dmarc_eval_answer(e, &nx), -ENOENT); /* a stale answer */

        /* Malformed TXT rdata is counted by the resolver and never seen here;
         * the type of each record is checked anyway. */
        DnsRecord recs[2] = {
                { .type = DNS_TYPE_A },
                { .type = DNS_TYPE_TXT, .txt = { .text = (char *) "v=DMARC1; p=reject", .len = 18, .n_strings = 1 } },
        };
        DnsResult ok = { .qname = "_dmarc.example.com", .qtype = DNS_TYPE_TXT, .status = DNS_STATUS_OK,
                         .records = recs, .n_records = 2 };
        ASSERT_OK(dmarc_eval_answer(e, &ok));
        ASSERT_TRUE(dmarc_eval_is_done(e));
        ASSERT_EQ(dmarc_eval_next_query(e, &name), 0);
        ASSERT_ERR(dmarc_eval_answer(e, &ok), -ENOENT);
        ASSERT_OK(dmarc_eval_result(e, &res));
        ASSERT_EQ(res->result, DMARC_RESULT_FAIL);
        ASSERT_EQ(res->policy, DMARC_POLICY_REJECT);

        ASSERT_NULL(dmarc_eval_free(NULL));
        ASSERT_NULL(dmarc_psl_free(NULL));
        ASSERT_NULL(dmarc_record_free(NULL));
}

TEST(eval_long_names) {
        /* _dmarc.<From domain> longer than a DNS name can be: not asked,
         * straight to the organizational domain. */
        _cleanup_(dmarc_psl_freep) DmarcPsl *psl = NULL;
        ASSERT_OK(dmarc_psl_new(NULL, &psl));
        char from[260] = "";
        while (strlen(from) + 12 < 250)
                strcat(from, "abcdefghij.");
        strcat(from, "example.com");
        ASSERT_TRUE(strlen(from) > 246 && strlen(from) <= 253);
        DmarcParams params = { .from_domain = from };
        _cleanup_(dmarc_eval_freep) DmarcEval *e = NULL;
        ASSERT_OK(dmarc_eval_new(psl, &params, &e));
        const Answer dns[] = { { "_dmarc.example.com", DNS_STATUS_OK, { "v=DMARC1; p=quarantine" } } };
        char log[512];
        run(e, dns, 1, log, sizeof log);
        ASSERT_STREQ(log, "_dmarc.example.com");
        const DmarcResult *res;
        ASSERT_OK(dmarc_eval_result(e, &res));
        ASSERT_EQ(res->result, DMARC_RESULT_FAIL);
        ASSERT_EQ(res->policy, DMARC_POLICY_QUARANTINE);
}

/* ---- RFC5322.From ---- */

typedef struct FromCase {
        const char *in;
        const char *want; /* NULL: -EBADMSG */
} FromCase;

static const FromCase from_cases[] = {
        { "user@example.com", "example.com" },
        { " user@example.com ", "example.com" },
        { "user@Sub.Example.COM", "sub.example.com" },
        { "John Doe <John.Doe@Example.COM>", "example.com" },
        { "<j@example.com>", "example.com" },
        { "\"Doe, John\" <j@example.org>", "example.org" },
        { "\"<evil@attacker.example>\" <j@example.org>", "example.org" },
        { "\"evil@attacker.example\" <j@example.org>", "example.org" },
        { "j@example.org (John Doe)", "example.org" },
        { "(comment (nested \\) ) ) j@example.org", "example.org" },
        { "John (x@attacker.example) <j@example.org>", "example.org" },
        { "j(c)@(c)example.org", "example.org" },
        { "John <@route1.example,@route2.example:j@example.org>", "example.org" },
        { "<,@route1.example,,@route2.example:j@example.org>", "example.org" },
        { "Group: j@example.org;", "example.org" },
        { "Group: , j@example.org, ;", "example.org" },
        { "Group : John <j@example.org> ; (trailing)", "example.org" },
        { "=?utf-8?q?J=C3=BCrgen?= <j@example.de>", "example.de" },
        { "\"quoted local\"@example.net", "example.net" },
        { "\"a\\\"b\"@example.net", "example.net" },
        { "j.doe@example.net", "example.net" },
        { "john . doe @ example . net", "example.net" },
        { "John\r\n <j@example.com>", "example.com" },
        { "John\r\n\t<j@example.com>\r\n", "example.com" },
        { ",j@example.com,", "example.com" },
        { ", , j@example.com", "example.com" },
        { "Dr. J. Doe <j@example.com>", "example.com" },
        { "J\xc3\xbcrgen <j@example.com>", "example.com" },
        { "J\xfcrgen <j@example.com>", "example.com" },               /* raw Latin-1 name: still usable */
        { "j@b\xc3\xbc" "cher.example", "b\xc3\xbc" "cher.example" },
        { "j\xc3\xa9@example.com", "example.com" },
        { "j@_dmarc-ish.example.com", "_dmarc-ish.example.com" },
        { "a+tag@xn--bcher-kva.example", "xn--bcher-kva.example" },
        { "\"\"@example.com", "example.com" },

        { "", NULL },
        { "   ", NULL },
        { "(only a comment)", NULL },
        { "a@example.com, b@example.org", NULL },
        { "a@example.com, a@example.com", NULL },
        { "a@example.com b@example.org", NULL },
        { "<a@example.com> <b@example.org>", NULL },
        { "a@example.com <b@example.org>", NULL },
        { "Group: a@x.example, b@y.example;", NULL },
        { "Group: a@x.example;, b@y.example", NULL },
        { "undisclosed-recipients:;", NULL },
        { "Group: a@x.example", NULL },                   /* no ";" */
        { "G1: G2: a@b.example;;", NULL },                /* nested group */
        { ": a@b.example;", NULL },                       /* group without name */
        { "no-at-sign", NULL },
        { "John Doe", NULL },
        { "John Doe j@example.com", NULL },
        { "<>", NULL },
        { "<j@example.com", NULL },
        { "j@example.com>", NULL },
        { "\"unterminated <j@example.com>", NULL },
        { "(unterminated j@example.com", NULL },
        { "j@example.com)", NULL },
        { "j@[192.0.2.1]", NULL },
        { "John <j@[IPv6:2001:db8::1]>", NULL },
        { "j@[unterminated", NULL },
        { "j@example.com.", NULL },
        { "j@.example.com", NULL },
        { "j@example..com", NULL },
        { "j@exa$mple.com", NULL },
        { "j@exa/mple.com", NULL },
        { "j@@example.com", NULL },
        { "a@b@example.com", NULL },
        { "j@", NULL },
        { "@example.com", NULL },
        { ".j@example.com", NULL },
        { "j.@example.com", NULL },
        { "j..k@example.com", NULL },
        { "From: j@example.com", NULL },
        { "j@example.com;", NULL },
        { "j@example.com\\", NULL },
        { "j@example.com\x01", NULL },
        { "<@route.example j@example.com>", NULL },
        { "<@route.example:>", NULL },
        { "j@b\xc3.example", NULL },                      /* invalid UTF-8 in the domain */
        { "<j@example.com>>", NULL },
        { ".Name <j@example.com>", NULL },
};

TEST(from_domain_table) {
        for (size_t i = 0; i < ELEMENTSOF(from_cases); i++) {
                const FromCase *c = &from_cases[i];
                _cleanup_free_ char *d = NULL;
                int r = dmarc_from_domain(c->in, strlen(c->in), &d);
                if (c->want) {
                        if (r < 0)
                                TAP_FAIL("\"%s\": %d, expected %s", c->in, r, c->want);
                        if (strcmp(d, c->want) != 0)
                                TAP_FAIL("\"%s\": %s, expected %s", c->in, d, c->want);
                } else if (r != -EBADMSG)
                        TAP_FAIL("\"%s\": %d \"%s\", expected -EBADMSG", c->in, r, r >= 0 ? d : "");
        }
}

TEST(from_domain_binary) {
        _cleanup_free_ char *d = NULL;
        static const char nul[] = "j@example.com\0x@evil.example";
        ASSERT_ERR(dmarc_from_domain(nul, sizeof nul - 1, &d), -EBADMSG);
        static const char nul2[] = "\"a\0b\"@example.com";
        ASSERT_ERR(dmarc_from_domain(nul2, sizeof nul2 - 1, &d), -EBADMSG);
        /* Only n bytes count: no reading to a NUL. */
        ASSERT_OK(dmarc_from_domain("j@example.comXYZ", 13, &d));
        ASSERT_STREQ(d, "example.com");

        /* An overlong domain. */
        char big[400] = "j@";
        while (strlen(big) < 300)
                strcat(big, "abcdefgh.");
        strcat(big, "com");
        _cleanup_free_ char *d2 = NULL;
        ASSERT_ERR(dmarc_from_domain(big, strlen(big), &d2), -EBADMSG);

        /* Many empty list elements, deep comments: linear, no recursion. */
        size_t n = 200000;
        _cleanup_free_ char *many = malloc(n + 32);
        ASSERT_NOT_NULL(many);
        memset(many, ',', n);
        strcpy(many + n, "j@example.com");
        _cleanup_free_ char *d3 = NULL;
        ASSERT_OK(dmarc_from_domain(many, strlen(many), &d3));
        ASSERT_STREQ(d3, "example.com");
        memset(many, '(', n / 2);
        memset(many + n / 2, ')', n / 2);
        _cleanup_free_ char *d4 = NULL;
        ASSERT_OK(dmarc_from_domain(many, strlen(many), &d4));
        ASSERT_STREQ(d4, "example.com");
}

TEST(from_domain_fields) {
        static const struct {
                const char *msg;
                const char *want;
        } cases[] = {
                { "From: Someone <a@Example.com>\r\nTo: b@example.org\r\n\r\nbody", "example.com" },
                { "To: b@example.org\r\nFROM:a@example.net\r\n\r\n", "example.net" },
                { "From: John\r\n <a@example.com>\r\nSubject: x\r\n\r\n", "example.com" },
                { "From: a@example.com\r\nFrom: a@example.com\r\n\r\n", NULL },
                { "To: b@example.org\r\n\r\n", NULL },
                { "From: a@example.com, b@example.com\r\n\r\n", NULL },
                { "Sender: a@example.com\r\nReply-To: c@example.com\r\n\r\n", NULL },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(mail_headers_freep) MailHeaders *h = NULL;
                ASSERT_OK(mail_headers_parse(cases[i].msg, strlen(cases[i].msg), NULL, &h, NULL));
                _cleanup_free_ char *d = NULL;
                int r = dmarc_from_domain_fields(mail_headers_fields(h), mail_headers_count(h), &d);
                if (cases[i].want) {
                        ASSERT_OK(r);
                        ASSERT_STREQ(d, cases[i].want);
                } else
                        ASSERT_ERR(r, -EBADMSG);
        }
        char *d = NULL;
        ASSERT_ERR(dmarc_from_domain_fields(NULL, 0, &d), -EBADMSG);
}

int main(void) {
        return tap_run();
}
