/* SPDX-License-Identifier: MIT */
/* SPF check_host() (shared/spf.c) against a DNS table (spf-fake-dns.h):
 * every mechanism, the macro examples of RFC 7208 §7.4, the limits of
 * §4.6.4, the include and redirect result tables of §5.2 and §6.1, syntax
 * errors, and the state machine's API. The openspf suite and the pyspf
 * comparison are in check-spf-suite.py. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "spf-fake-dns.h"
#include "spf.h"
#include "tap.h"

#define ZONE_MAX 64

/* The zone every case shares; a case adds its own records (its record for
 * example.com first). */
static const FakeRR base_zone[] = {
        { "mail.example.com", DNS_TYPE_A, "192.0.2.10", 0, 0 },
        { "mail.example.com", DNS_TYPE_AAAA, "2001:db8::10", 0, 0 },
        { "mx2.example.com", DNS_TYPE_A, "192.0.2.20", 0, 0 },
        { "example.com", DNS_TYPE_MX, "mail.example.com", 10, 0 },
        { "example.com", DNS_TYPE_MX, "mx2.example.com", 20, 0 },
        { "example.com", DNS_TYPE_A, "192.0.2.1", 0, 0 },
        { "10.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "mail.example.com", 0, 0 },
        { "10.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "other.example.net", 0, 0 },
        { "inc-pass.example.com", DNS_TYPE_TXT, "v=spf1 ip4:192.0.2.10 -all", 0, 0 },
        { "inc-fail.example.com", DNS_TYPE_TXT, "v=spf1 -all", 0, 0 },
        { "inc-softfail.example.com", DNS_TYPE_TXT, "v=spf1 ~all", 0, 0 },
        { "inc-neutral.example.com", DNS_TYPE_TXT, "v=spf1 ?all", 0, 0 },
        { "inc-perm.example.com", DNS_TYPE_TXT, "v=spf1 bogus", 0, 0 },
        { "inc-temp.example.com", FAKE_TIMEOUT, "", 0, 0 },
        { "inc-nospf.example.com", DNS_TYPE_TXT, "not spf", 0, 0 },
        { "red-pass.example.com", DNS_TYPE_TXT, "v=spf1 ip4:192.0.2.10 -all", 0, 0 },
        { "red-fail.example.com", DNS_TYPE_TXT, "v=spf1 -all exp=why.example.com", 0, 0 },
        { "why.example.com", DNS_TYPE_TXT, "%{i} may not send for %{d}", 0, 0 },
        { "tmp.example.com", DNS_TYPE_A, "TIMEOUT", 0, 0 },
        { "tmp.example.com", DNS_TYPE_MX, "TIMEOUT", 0, 0 },
        { "empty.example.com", DNS_TYPE_TXT, "unrelated", 0, 0 },
        { "10.2.0.192.list.example.com", DNS_TYPE_A, "127.0.0.2", 0, 0 },
        { "nullmx.example.com", DNS_TYPE_MX, ".", 0, 0 },
};

typedef struct Case {
        const char *name;
        const char *record; /* example.com's TXT; NULL: none */
        const char *ip;
        const char *mail_from;
        SpfResultCode want;
        const char *explanation; /* NULL: not checked */
        const FakeRR extra[6];
} Case;

#define IP "192.0.2.10"
#define OTHER "198.51.100.7"
#define FROM "alice@example.com"

static const Case cases[] = {
        /* results and qualifiers */
        { "pass", "v=spf1 +all", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "implicit-pass", "v=spf1 all", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "fail", "v=spf1 -all", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "softfail", "v=spf1 ~all", IP, FROM, SPF_RESULT_SOFTFAIL, NULL, {} },
        { "neutral", "v=spf1 ?all", IP, FROM, SPF_RESULT_NEUTRAL, NULL, {} },
        { "default-neutral", "v=spf1", IP, FROM, SPF_RESULT_NEUTRAL, NULL, {} },
        { "no-record", NULL, IP, FROM, SPF_RESULT_NONE, NULL, {} },
        { "no-spf-record", "v=spf10 -all", IP, FROM, SPF_RESULT_NONE, NULL, {} },
        { "nxdomain", "v=spf1 -all", IP, "bob@nowhere.example.org", SPF_RESULT_NONE, NULL, {} },
        { "version-case", "V=SPF1 -all", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "two-records", "v=spf1 -all", IP, FROM, SPF_RESULT_PERMERROR, NULL,
          { { "example.com", DNS_TYPE_TXT, "v=spf1 +all", 0, 0 } } },
        { "spf-plus-other-txt", "v=spf1 -all", IP, FROM, SPF_RESULT_FAIL, NULL,
          { { "example.com", DNS_TYPE_TXT, "google-site-verification=x", 0, 0 } } },
        { "record-temp", "v=spf1 +all", IP, "bob@tmp2.example.com", SPF_RESULT_TEMPERROR, NULL,
          { { "tmp2.example.com", FAKE_TIMEOUT, "", 0, 0 } } },
        { "multi-string", "v=spf1 ip4:192.0.2.10\x01 -all", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "first-match-wins", "v=spf1 -ip4:192.0.2.10 +all", IP, FROM, SPF_RESULT_FAIL, NULL, {} },

        /* ip4 / ip6 */
        { "ip4", "v=spf1 ip4:192.0.2.10 -all", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "ip4-cidr", "v=spf1 ip4:192.0.2.0/24 -all", "192.0.2.99", FROM, SPF_RESULT_PASS, NULL, {} },
        { "ip4-cidr-miss", "v=spf1 ip4:192.0.2.0/25 -all", "192.0.2.200", FROM, SPF_RESULT_FAIL, NULL, {} },
        { "ip4-cidr-0", "v=spf1 ip4:0.0.0.0/0 -all", OTHER, FROM, SPF_RESULT_PASS, NULL, {} },
        { "ip4-cidr-odd", "v=spf1 ip4:192.0.2.8/29 -all", "192.0.2.15", FROM, SPF_RESULT_PASS, NULL, {} },
        { "ip4-cidr-odd-miss", "v=spf1 ip4:192.0.2.8/29 -all", "192.0.2.16", FROM, SPF_RESULT_FAIL, NULL, {} },
        { "ip4-v6-client", "v=spf1 ip4:0.0.0.0/0 -all", "2001:db8::1", FROM, SPF_RESULT_FAIL, NULL, {} },
        { "ip4-mapped-client", "v=spf1 ip4:192.0.2.10 -all", "::ffff:192.0.2.10", FROM, SPF_RESULT_PASS, NULL, {} },
        { "ip6", "v=spf1 ip6:2001:db8::/32 -all", "2001:db8:ffff::1", FROM, SPF_RESULT_PASS, NULL, {} },
        { "ip6-miss", "v=spf1 ip6:2001:db8::/33 -all", "2001:db8:ffff::1", FROM, SPF_RESULT_FAIL, NULL, {} },
        { "ip6-v4-client", "v=spf1 ip6:::/0 -all", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "ip4-cidr-33", "v=spf1 ip4:192.0.2.0/33 +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "ip4-cidr-leading-0", "v=spf1 ip4:192.0.2.0/024 +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "ip4-bad", "v=spf1 ip4:192.0.2 +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "ip4-empty", "v=spf1 ip4 +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "ip6-cidr-129", "v=spf1 ip6:::/129 +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "ip6-dual-cidr", "v=spf1 ip6:2001:db8::/32//64 +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },

        /* a */
        { "a", "v=spf1 a -all", "192.0.2.1", FROM, SPF_RESULT_PASS, NULL, {} },
        { "a-target", "v=spf1 a:mail.example.com -all", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "a-miss", "v=spf1 a -all", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "a-cidr", "v=spf1 a/24 -all", "192.0.2.77", FROM, SPF_RESULT_PASS, NULL, {} },
        { "a-target-cidr", "v=spf1 a:mail.example.com/30 -all", "192.0.2.11", FROM, SPF_RESULT_PASS, NULL, {} },
        { "a6", "v=spf1 a:mail.example.com -all", "2001:db8::10", FROM, SPF_RESULT_PASS, NULL, {} },
        { "a6-cidr", "v=spf1 a:mail.example.com//64 -all", "2001:db8::99", FROM, SPF_RESULT_PASS, NULL, {} },
        { "a6-dual-cidr", "v=spf1 a:mail.example.com/32//120 -all", "2001:db8::99", FROM, SPF_RESULT_PASS, NULL, {} },
        { "a6-dual-cidr-miss", "v=spf1 a:mail.example.com/0//127 -all", "2001:db8::99", FROM, SPF_RESULT_FAIL, NULL, {} },
        { "a-cidr-for-v4-only", "v=spf1 a:mail.example.com/0 -all", "2001:db8::99", FROM, SPF_RESULT_FAIL, NULL, {} },
        { "a-temp", "v=spf1 a:tmp.example.com -all", IP, FROM, SPF_RESULT_TEMPERROR, NULL, {} },
        { "a-empty-target", "v=spf1 a: -all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "a-numeric-toplabel", "v=spf1 a:192.0.2.10 -all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "a-only-toplabel", "v=spf1 a:com -all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "a-dash-toplabel", "v=spf1 a:foo.1-2 -all", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "a-bad-dash-toplabel", "v=spf1 a:foo.-ab -all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "a-empty-label", "v=spf1 a:foo..example.com -all", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "a-cname", "v=spf1 a:alias.example.com -all", IP, FROM, SPF_RESULT_PASS, NULL,
          { { "alias.example.com", DNS_TYPE_CNAME, "mail.example.com", 0, 0 } } },

        /* mx */
        { "mx", "v=spf1 mx -all", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "mx-second", "v=spf1 mx -all", "192.0.2.20", FROM, SPF_RESULT_PASS, NULL, {} },
        { "mx-miss", "v=spf1 mx -all", "192.0.2.11", FROM, SPF_RESULT_FAIL, NULL, {} },
        { "mx-cidr", "v=spf1 mx/30 -all", "192.0.2.11", FROM, SPF_RESULT_PASS, NULL, {} },
        { "mx6", "v=spf1 mx -all", "2001:db8::10", FROM, SPF_RESULT_PASS, NULL, {} },
        { "mx6-cidr", "v=spf1 mx//64 -all", "2001:db8::1234", FROM, SPF_RESULT_PASS, NULL, {} },
        { "mx-temp", "v=spf1 mx:tmp.example.com -all", IP, FROM, SPF_RESULT_TEMPERROR, NULL, {} },
        { "mx-null", "v=spf1 mx:nullmx.example.com -all", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "mx-none", "v=spf1 mx:mail.example.com -all", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "mx-addr-temp", "v=spf1 mx:m.example.com -all", IP, FROM, SPF_RESULT_TEMPERROR, NULL,
          { { "m.example.com", DNS_TYPE_MX, "tmp.example.com", 1, 0 } } },

        /* ptr (mail.example.com validates for 192.0.2.10, other.example.net does not) */
        { "ptr", "v=spf1 ptr -all", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "ptr-target", "v=spf1 ptr:mail.example.com -all", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "ptr-unvalidated", "v=spf1 ptr:example.net -all", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "ptr-not-within", "v=spf1 ptr:ample.com -all", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "ptr-no-ptr", "v=spf1 ptr -all", "192.0.2.1", FROM, SPF_RESULT_FAIL, NULL, {} },
        { "ptr-error-no-match", "v=spf1 ptr +all", "192.0.2.55", FROM, SPF_RESULT_PASS, NULL,
          { { "55.2.0.192.in-addr.arpa", FAKE_TIMEOUT, "", 0, 0 } } },
        { "ptr6", "v=spf1 ptr -all", "2001:db8::10", FROM, SPF_RESULT_PASS, NULL,
          { { "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", DNS_TYPE_PTR,
              "mail.example.com", 0, 0 } } },
        { "ptr-cidr", "v=spf1 ptr/24 -all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "p-macro", "v=spf1 exists:%{p}.ok.example.com -all", IP, FROM, SPF_RESULT_PASS, NULL,
          { { "mail.example.com.ok.example.com", DNS_TYPE_A, "127.0.0.2", 0, 0 } } },
        { "p-macro-unknown", "v=spf1 exists:%{p}.ok.example.com -all", OTHER, FROM, SPF_RESULT_PASS, NULL,
          { { "unknown.ok.example.com", DNS_TYPE_A, "127.0.0.2", 0, 0 } } },
        { "p-macro-in-redirect", "v=spf1 redirect=%{p}.r.example.com", IP, FROM, SPF_RESULT_PASS, NULL,
          { { "mail.example.com.r.example.com", DNS_TYPE_TXT, "v=spf1 +all", 0, 0 } } },

        /* exists */
        { "exists", "v=spf1 exists:%{ir}.list.example.com -all", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "exists-miss", "v=spf1 exists:%{ir}.list.example.com -all", OTHER, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "exists-v6-asks-a", "v=spf1 exists:mail.example.com -all", "2001:db8::99", FROM, SPF_RESULT_PASS, NULL, {} },
        { "exists-no-target", "v=spf1 exists -all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "exists-cidr", "v=spf1 exists:mail.example.com/24 -all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },

        /* include, §5.2's table */
        { "include-pass", "v=spf1 include:inc-pass.example.com -all", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "include-pass-qualified", "v=spf1 ~include:inc-pass.example.com -all", IP, FROM, SPF_RESULT_SOFTFAIL, NULL, {} },
        { "include-fail", "v=spf1 include:inc-fail.example.com ?all", IP, FROM, SPF_RESULT_NEUTRAL, NULL, {} },
        { "include-softfail", "v=spf1 include:inc-softfail.example.com ?all", IP, FROM, SPF_RESULT_NEUTRAL, NULL, {} },
        { "include-neutral", "v=spf1 include:inc-neutral.example.com -all", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "include-temperror", "v=spf1 include:inc-temp.example.com +all", IP, FROM, SPF_RESULT_TEMPERROR, NULL, {} },
        { "include-permerror", "v=spf1 include:inc-perm.example.com +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "include-none", "v=spf1 include:nowhere.example.com +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "include-no-spf", "v=spf1 include:inc-nospf.example.com +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "include-no-domain", "v=spf1 include +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "include-own-exp-ignored", "v=spf1 -include:red-fail.example.com ?all", OTHER, FROM, SPF_RESULT_NEUTRAL, NULL, {} },
        { "include-loop", "v=spf1 include:example.com -all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },

        /* redirect, §6.1 */
        { "redirect", "v=spf1 redirect=red-pass.example.com", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "redirect-fail", "v=spf1 redirect=red-pass.example.com", OTHER, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "redirect-after-mechs", "v=spf1 -ip4:198.51.100.7 redirect=red-pass.example.com", IP, FROM,
          SPF_RESULT_PASS, NULL, {} },
        { "redirect-ignored-with-all", "v=spf1 ?all redirect=red-pass.example.com", IP, FROM, SPF_RESULT_NEUTRAL, NULL, {} },
        { "redirect-none", "v=spf1 redirect=nowhere.example.com", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "redirect-twice", "v=spf1 redirect=a.example.com redirect=b.example.com", IP, FROM,
          SPF_RESULT_PERMERROR, NULL, {} },
        { "redirect-loop", "v=spf1 redirect=example.com", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "redirect-exp-from-target", "v=spf1 exp=nowhere.example.com redirect=red-fail.example.com", IP, FROM,
          SPF_RESULT_FAIL, "192.0.2.10 may not send for red-fail.example.com", {} },
        { "redirect-macro", "v=spf1 redirect=%{o}.redir.example.com", IP, FROM, SPF_RESULT_PASS, NULL,
          { { "example.com.redir.example.com", DNS_TYPE_TXT, "v=spf1 a:mail.example.com", 0, 0 } } },

        /* exp, §6.2 */
        { "exp", "v=spf1 -all exp=why.example.com", IP, FROM, SPF_RESULT_FAIL,
          "192.0.2.10 may not send for example.com", {} },
        { "exp-only-on-fail", "v=spf1 ~all exp=why.example.com", IP, FROM, SPF_RESULT_SOFTFAIL, NULL, {} },
        { "exp-missing", "v=spf1 -all exp=nowhere.example.com", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "exp-two-txt", "v=spf1 -all exp=two.example.com", IP, FROM, SPF_RESULT_FAIL, NULL,
          { { "two.example.com", DNS_TYPE_TXT, "one", 0, 0 }, { "two.example.com", DNS_TYPE_TXT, "two", 0, 0 } } },
        { "exp-bad-macro", "v=spf1 -all exp=bad.example.com", IP, FROM, SPF_RESULT_FAIL, NULL,
          { { "bad.example.com", DNS_TYPE_TXT, "oops %{z}", 0, 0 } } },
        { "exp-crt", "v=spf1 -all exp=crt.example.com", "2001:db8::cb01", FROM, SPF_RESULT_FAIL,
          "2001:db8::cb01 at mx.example.org t=1234567890 %_-", { { "crt.example.com", DNS_TYPE_TXT,
          "%{c} at %{r} t=%{t} %%_-", 0, 0 } } },
        { "exp-empty", "v=spf1 -all exp=", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "exp-twice", "v=spf1 -all exp=a.example.com exp=b.example.com", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "exp-temp", "v=spf1 -all exp=tmp3.example.com", IP, FROM, SPF_RESULT_FAIL, NULL,
          { { "tmp3.example.com", FAKE_TIMEOUT, "", 0, 0 } } },

        /* syntax */
        { "unknown-modifier", "v=spf1 foo=bar.%{d} +all", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "unknown-modifier-bad-macro", "v=spf1 foo=%{q} +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "unknown-mechanism", "v=spf1 foo:bar +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "error-after-match", "v=spf1 +all ip4:nope", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "bad-qualifier", "v=spf1 !all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "all-with-arg", "v=spf1 all:foo.com", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "modifier-name-digit", "v=spf1 1x=y +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "tab", "v=spf1 -ip4:192.0.2.10\t+all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "non-ascii", "v=spf1 +all a:\xc3\xa9.example.com", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "trailing-spaces", "v=spf1 -all   ", IP, FROM, SPF_RESULT_FAIL, NULL, {} },
        { "double-space", "v=spf1  ip4:192.0.2.10  -all", IP, FROM, SPF_RESULT_PASS, NULL, {} },
        { "macro-percent-alone", "v=spf1 a:%.example.com +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "macro-unclosed", "v=spf1 a:%{d.example.com +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "macro-c-outside-exp", "v=spf1 exists:%{c}.example.com +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "macro-zero-digit", "v=spf1 exists:%{d0}.example.com +all", IP, FROM, SPF_RESULT_PERMERROR, NULL, {} },
        { "macro-end-ok", "v=spf1 a:%{d} -all", "192.0.2.1", FROM, SPF_RESULT_PASS, NULL, {} },
        { "macro-percent-in-name", "v=spf1 exists:%%%-.sp.example.com -all", IP, FROM, SPF_RESULT_PASS, NULL,
          { { "%%20.sp.example.com", DNS_TYPE_A, "127.0.0.2", 0, 0 } } },
        /* a space is no byte dns_query() asks for: no such host */
        { "macro-space-in-name", "v=spf1 exists:a%_b.sp.example.com -all", IP, FROM, SPF_RESULT_FAIL, NULL,
          { { "a b.sp.example.com", DNS_TYPE_A, "127.0.0.2", 0, 0 } } },

        /* identities */
        { "no-localpart", "v=spf1 exists:%{l}.lp.example.com -all", IP, "@example.com", SPF_RESULT_PASS, NULL,
          { { "postmaster.lp.example.com", DNS_TYPE_A, "127.0.0.2", 0, 0 } } },
        { "single-label", "v=spf1 -all", IP, "bob@localhost", SPF_RESULT_NONE, NULL, {} },
        { "domain-literal", "v=spf1 -all", IP, "bob@[192.0.2.10]", SPF_RESULT_NONE, NULL, {} },
        { "empty-label", "v=spf1 -all", IP, "bob@a..example.com", SPF_RESULT_NONE, NULL, {} },
        { "long-label", "v=spf1 -all", IP,
          "bob@a1234567890123456789012345678901234567890123456789012345678901234.example.com", SPF_RESULT_NONE, NULL, {} },
};

static void build_zone(const Case *k, FakeRR *zone, size_t *n) {
        *n = 0;
        if (k->record)
                zone[(*n)++] = (FakeRR) { "example.com", DNS_TYPE_TXT, k->record, 0, 0 };
        for (size_t i = 0; i < ELEMENTSOF(k->extra) && k->extra[i].name; i++)
                zone[(*n)++] = k->extra[i];
        for (size_t i = 0; i < ELEMENTSOF(base_zone); i++)
                zone[(*n)++] = base_zone[i];
}

TEST(table) {
        unsigned failed = 0;
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const Case *k = &cases[i];
                FakeRR zone[ZONE_MAX];
                size_t n;
                build_zone(k, zone, &n);
                SpfParams p = {
                        .client_ip = k->ip,
                        .helo = "mail.example.com",
                        .mail_from = k->mail_from,
                        .receiver = "mx.example.org",
                        .now = 1234567890,
                };
                SpfCheck *c = NULL;
                const SpfResult *res;
                int r = fake_check(zone, n, &p, &c, NULL);
                if (r < 0) {
                        printf("# %s: check failed: %s\n", k->name, strerror(-r));
                        failed++;
                        continue;
                }
                ASSERT_OK(spf_check_result(c, &res));
                bool ok = res->result == k->want;
                if (k->explanation && !streq_ptr(res->explanation, k->explanation))
                        ok = false;
                if (!k->explanation && res->result != SPF_RESULT_FAIL && res->explanation)
                        ok = false;
                if (!ok) {
                        printf("# %s: want %s (%s), got %s (%s) reason %s\n", k->name, spf_result_to_string(k->want),
                               k->explanation ?: "-", spf_result_to_string(res->result),
                               res->explanation ?: "-", res->reason ?: "-");
                        failed++;
                }
                spf_check_free(c);
        }
        ASSERT_EQ(failed, 0);
}

/* ---------------------------------------------------------------- macros */

/* Expands macro as an explanation for the §7.4 examples' sender. */
static char *expand(const char *ip, const char *macro) {
        FakeRR zone[] = {
                { "email.example.com", DNS_TYPE_TXT, "v=spf1 -all exp=x.example.com", 0, 0 },
                { "x.example.com", DNS_TYPE_TXT, macro, 0, 0 },
                { "mail.email.example.com", DNS_TYPE_A, "192.0.2.3", 0, 0 },
                { "3.2.0.192.in-addr.arpa", DNS_TYPE_PTR, "mail.email.example.com", 0, 0 },
        };
        SpfParams p = { .client_ip = ip, .helo = "helo.example.net", .mail_from = "strong-bad@email.example.com" };
        SpfCheck *c = NULL;
        const SpfResult *res;
        if (fake_check(zone, ELEMENTSOF(zone), &p, &c, NULL) < 0 || spf_check_result(c, &res) < 0) {
                spf_check_free(c);
                return NULL;
        }
        char *s = res->explanation ? strdup(res->explanation) : NULL;
        spf_check_free(c);
        return s;
}

TEST(macros_rfc7208_7_4) {
        static const struct {
                const char *macro, *want;
        } v4[] = {
                { "%{s}", "strong-bad@email.example.com" },
                { "%{o}", "email.example.com" },
                { "%{d}", "email.example.com" },
                { "%{d4}", "email.example.com" },
                { "%{d3}", "email.example.com" },
                { "%{d2}", "example.com" },
                { "%{d1}", "com" },
                { "%{dr}", "com.example.email" },
                { "%{d2r}", "example.email" },
                { "%{l}", "strong-bad" },
                { "%{l-}", "strong.bad" },
                { "%{lr}", "strong-bad" },
                { "%{lr-}", "bad.strong" },
                { "%{l1r-}", "strong" },
                { "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com" },
                { "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com" },
                { "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com" },
                { "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com" },
                { "%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net" },
                /* more than one delimiter, upper case escapes, the rest */
                { "%{l-=}", "strong.bad" },
                { "%{S}", "strong-bad%40email.example.com" },
                { "%{L}", "strong-bad" },
                { "%{h} %{v} %{c} %{i}", "helo.example.net in-addr 192.0.2.3 192.0.2.3" },
                { "%{d99}", "email.example.com" },
                { "%{d2r.}", "example.email" },
                { "a%%b%_c%-d", "a%b c%20d" },
                { "%{p}", "mail.email.example.com" },
                { "%{r}", "unknown" },
        };
        for (size_t i = 0; i < ELEMENTSOF(v4); i++) {
                _cleanup_free_ char *s = expand("192.0.2.3", v4[i].macro);
                if (!streq_ptr(s, v4[i].want))
                        TAP_FAIL("%s: got \"%s\", want \"%s\"", v4[i].macro, s ?: "(null)", v4[i].want);
        }
        _cleanup_free_ char *s6 = expand("2001:db8::cb01", "%{ir}.%{v}._spf.%{d2}");
        ASSERT_STREQ(s6, "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com");
        _cleanup_free_ char *c6 = expand("2001:DB8::CB01", "%{c}");
        ASSERT_STREQ(c6, "2001:db8::cb01");
        _cleanup_free_ char *p6 = expand("2001:db8::cb01", "%{p}");
        ASSERT_STREQ(p6, "unknown");
        /* a bad macro in the explanation drops it, the fail stays */
        ASSERT_NULL(expand("192.0.2.3", "%{x}"));
        ASSERT_NULL(expand("192.0.2.3", "%{d0}"));
        ASSERT_NULL(expand("192.0.2.3", "50%"));
}

/* §7.3: an expanded domain-spec longer than 253 characters loses labels on
 * the left. */
TEST(long_expansion_chopped) {
        char local[200];
        memset(local, 'x', 182);
        local[60] = local[121] = '.';
        local[182] = 0;
        char from[300];
        snprintf(from, sizeof from, "%s@example.com", local);
        /* %{l}.%{l}.example.com is ~500 characters: chopped to fit */
        FakeRR zone[] = {
                { "example.com", DNS_TYPE_TXT, "v=spf1 exists:%{l}.%{l}.example.com -all", 0, 0 },
        };
        SpfParams p = { .client_ip = IP, .mail_from = from };
        SpfCheck *c = NULL;
        const char *name;
        uint16_t type;
        ASSERT_OK(spf_check_new(&p, &c));
        ASSERT_EQ(spf_check_next_query(c, &name, &type), 1);
        FakeAnswer a;
        fake_resolve(zone, 1, name, type, &a);
        ASSERT_OK(spf_check_answer(c, &a.res));
        fake_answer_done(&a);
        ASSERT_EQ(spf_check_next_query(c, &name, &type), 1);
        ASSERT_EQ(type, DNS_TYPE_A);
        ASSERT_TRUE(strlen(name) <= 253);
        ASSERT_TRUE(strlen(name) > 190);
        ASSERT_TRUE(name[0] != '.');
        ASSERT_TRUE(strstr(name, ".example.com") != NULL);
        spf_check_free(c);
}

/* ---------------------------------------------------------------- limits */

static SpfResultCode run_zone(const FakeRR *zone, size_t n, const char *ip, unsigned *ret_lookups,
                              unsigned *ret_voids, unsigned *ret_queries) {
        SpfParams p = { .client_ip = ip, .mail_from = FROM, .helo = "mail.example.com" };
        SpfCheck *c = NULL;
        const SpfResult *res;
        unsigned q = 0;
        if (fake_check(zone, n, &p, &c, &q) < 0 || spf_check_result(c, &res) < 0) {
                spf_check_free(c);
                return _SPF_RESULT_MAX;
        }
        SpfResultCode r = res->result;
        if (ret_lookups)
                *ret_lookups = res->lookups;
        if (ret_voids)
                *ret_voids = res->void_lookups;
        if (ret_queries)
                *ret_queries = q;
        spf_check_free(c);
        return r;
}

TEST(lookup_limit) {
        /* ten a: terms are fine, the eleventh is a permerror */
        char rec10[400] = "v=spf1", rec11[512];
        FakeRR zone[16];
        for (int i = 0; i < 11; i++) {
                char t[32];
                snprintf(t, sizeof t, " a:h%d.example.com", i);
                if (i < 10)
                        strcat(rec10, t);
                zone[i + 1] = (FakeRR) { strdup(t + 3), DNS_TYPE_A, "192.0.2.1", 0, 0 };
        }
        snprintf(rec11, sizeof rec11, "%s a:h10.example.com -all", rec10);
        strcat(rec10, " -all");
        unsigned lookups;
        zone[0] = (FakeRR) { "example.com", DNS_TYPE_TXT, rec10, 0, 0 };
        ASSERT_EQ(run_zone(zone, 12, "192.0.2.99", &lookups, NULL, NULL), SPF_RESULT_FAIL);
        ASSERT_EQ(lookups, 10);
        zone[0].value = rec11;
        ASSERT_EQ(run_zone(zone, 12, "192.0.2.99", &lookups, NULL, NULL), SPF_RESULT_PERMERROR);
        ASSERT_EQ(lookups, 11);
        /* a match before the limit is reached wins */
        ASSERT_EQ(run_zone(zone, 12, "192.0.2.1", NULL, NULL, NULL), SPF_RESULT_PASS);
        for (int i = 1; i < 12; i++)
                free((char *) zone[i].name);
}

TEST(include_chain_bounded) {
        /* a chain of includes 30 deep stops at the lookup limit */
        FakeRR zone[32];
        char names[32][32], recs[32][64];
        for (int i = 0; i < 31; i++) {
                if (i == 0)
                        snprintf(names[i], sizeof names[i], "example.com");
                else
                        snprintf(names[i], sizeof names[i], "c%d.example.com", i);
                snprintf(recs[i], sizeof recs[i], "v=spf1 include:c%d.example.com -all", i + 1);
                zone[i] = (FakeRR) { names[i], DNS_TYPE_TXT, recs[i], 0, 0 };
        }
        unsigned lookups, queries;
        ASSERT_EQ(run_zone(zone, 31, IP, &lookups, NULL, &queries), SPF_RESULT_PERMERROR);
        ASSERT_EQ(lookups, 11);
        ASSERT_EQ(queries, 11);
        /* and the self-include loop too */
        FakeRR loop[] = { { "example.com", DNS_TYPE_TXT, "v=spf1 include:example.com redirect=example.com", 0, 0 } };
        ASSERT_EQ(run_zone(loop, 1, IP, &lookups, NULL, &queries), SPF_RESULT_PERMERROR);
        ASSERT_TRUE(queries <= 11);
}

TEST(void_limit) {
        FakeRR zone[] = {
                { "example.com", DNS_TYPE_TXT, "v=spf1 a:n1.example.com mx:n2.example.com -all", 0, 0 },
                { "n1.example.com", DNS_TYPE_TXT, "exists, no A", 0, 0 },
        };
        unsigned voids;
        ASSERT_EQ(run_zone(zone, 2, IP, NULL, &voids, NULL), SPF_RESULT_FAIL);
        ASSERT_EQ(voids, 2);
        zone[0].value = "v=spf1 a:n1.example.com mx:n2.example.com exists:n3.example.com -all";
        ASSERT_EQ(run_zone(zone, 2, IP, NULL, &voids, NULL), SPF_RESULT_PERMERROR);
        ASSERT_EQ(voids, 3);
}

TEST(mx_and_ptr_name_limits) {
        FakeRR zone[32];
        char names[12][32];
        size_t n = 0;
        zone[n++] = (FakeRR) { "example.com", DNS_TYPE_TXT, "v=spf1 mx -all", 0, 0 };
        for (int i = 0; i < 11; i++) {
                snprintf(names[i], sizeof names[i], "m%d.example.com", i);
                zone[n++] = (FakeRR) { "example.com", DNS_TYPE_MX, names[i], (uint16_t) i, 0 };
                zone[n++] = (FakeRR) { names[i], DNS_TYPE_A, "192.0.2.1", 0, 0 };
        }
        /* 11 MX records: permerror (RFC 7208 §4.6.4) */
        ASSERT_EQ(run_zone(zone, n, "192.0.2.1", NULL, NULL, NULL), SPF_RESULT_PERMERROR);
        /* 10 are looked up */
        ASSERT_EQ(run_zone(zone, n - 2, "192.0.2.99", NULL, NULL, NULL), SPF_RESULT_FAIL);

        /* 11 PTR names: the 11th is ignored (the others have addresses, or
         * their void lookups would end it first) */
        n = 0;
        zone[n++] = (FakeRR) { "example.com", DNS_TYPE_TXT, "v=spf1 ptr -all", 0, 0 };
        for (int i = 0; i < 11; i++)
                zone[n++] = (FakeRR) { "1.2.0.192.in-addr.arpa", DNS_TYPE_PTR, names[i], 0, 0 };
        for (int i = 0; i < 11; i++)
                zone[n++] = (FakeRR) { names[i], DNS_TYPE_A, i == 10 ? "192.0.2.1" : "192.0.2.50", 0, 0 };
        unsigned queries;
        ASSERT_EQ(run_zone(zone, n, "192.0.2.1", NULL, NULL, &queries), SPF_RESULT_FAIL);
        ASSERT_EQ(queries, 12); /* TXT, PTR, 10 A */
        zone[21].value = "192.0.2.1"; /* m9 validates */
        ASSERT_EQ(run_zone(zone, n, "192.0.2.1", NULL, NULL, NULL), SPF_RESULT_PASS);
}

TEST(huge_record) {
        size_t len = 20000;
        char *rec = malloc(len + 1);
        ASSERT_NOT_NULL(rec);
        memset(rec, ' ', len);
        memcpy(rec, "v=spf1", 6);
        for (size_t i = 6; i + 9 <= len; i += 9)
                memcpy(rec + i, " ip4:1.2", 8), rec[i + 8] = 'x';
        rec[len] = 0;
        FakeRR zone[] = { { "example.com", DNS_TYPE_TXT, rec, 0, 0 } };
        ASSERT_EQ(run_zone(zone, 1, IP, NULL, NULL, NULL), SPF_RESULT_PERMERROR);
        free(rec);
}

/* ---------------------------------------------------------------- API */

TEST(api) {
        SpfCheck *c = NULL;
        const char *name;
        uint16_t type;
        const SpfResult *res;

        ASSERT_ERR(spf_check_new(&(SpfParams) { .client_ip = "nope", .mail_from = FROM }, &c), -EINVAL);
        ASSERT_ERR(spf_check_new(&(SpfParams) { .client_ip = NULL, .mail_from = FROM }, &c), -EINVAL);
        ASSERT_NULL(spf_check_free(NULL));

        ASSERT_OK(spf_check_new(&(SpfParams) { .client_ip = IP, .mail_from = FROM }, &c));
        ASSERT_FALSE(spf_check_is_done(c));
        ASSERT_ERR(spf_check_result(c, &res), -EBUSY);
        ASSERT_EQ(spf_check_next_query(c, &name, &type), 1);
        ASSERT_STREQ(name, "example.com");
        ASSERT_EQ(type, DNS_TYPE_TXT);
        /* handed out once: nothing more to ask until answered */
        ASSERT_EQ(spf_check_next_query(c, &name, &type), 0);

        DnsRecord rec = { .type = DNS_TYPE_TXT };
        rec.txt.text = (char *) "v=spf1 ip4:192.0.2.0/24 -all";
        rec.txt.len = strlen(rec.txt.text);
        DnsResult wrong = { .qname = "example.org", .qtype = DNS_TYPE_TXT, .status = DNS_STATUS_OK,
                            .records = &rec, .n_records = 1 };
        ASSERT_ERR(spf_check_answer(c, &wrong), -ENOENT);
        wrong.qname = "example.com";
        wrong.qtype = DNS_TYPE_A;
        ASSERT_ERR(spf_check_answer(c, &wrong), -ENOENT);
        DnsResult right = { .qname = "EXAMPLE.com.", .qtype = DNS_TYPE_TXT, .status = DNS_STATUS_OK,
                            .records = &rec, .n_records = 1 };
        ASSERT_OK(spf_check_answer(c, &right));
        ASSERT_TRUE(spf_check_is_done(c));
        ASSERT_EQ(spf_check_next_query(c, &name, &type), 0);
        ASSERT_ERR(spf_check_answer(c, &right), -ENOENT);
        ASSERT_OK(spf_check_result(c, &res));
        ASSERT_EQ(res->result, SPF_RESULT_PASS);
        ASSERT_STREQ(res->identity, "mailfrom");
        ASSERT_STREQ(res->domain, "example.com");
        ASSERT_STREQ(res->sender, "alice@example.com");
        ASSERT_STREQ(res->reason, "ip4:192.0.2.0/24");
        ASSERT_NULL(res->explanation);
        ASSERT_EQ(res->lookups, 0);
        spf_check_free(c);

        ASSERT_STREQ(spf_result_to_string(SPF_RESULT_SOFTFAIL), "softfail");
        ASSERT_STREQ(spf_result_to_string(SPF_RESULT_TEMPERROR), "temperror");
        ASSERT_STREQ(spf_result_to_string(_SPF_RESULT_MAX), "?");
}

TEST(null_sender_and_helo) {
        SpfCheck *c = NULL;
        const SpfResult *res;
        const char *name;
        uint16_t type;

        /* null sender: postmaster@helo, the HELO identity */
        ASSERT_OK(spf_check_new(&(SpfParams) { .client_ip = IP, .helo = "Mail.Example.com", .mail_from = "" }, &c));
        ASSERT_EQ(spf_check_next_query(c, &name, &type), 1);
        ASSERT_STREQ(name, "mail.example.com");
        FakeRR zone[] = { { "mail.example.com", DNS_TYPE_TXT, "v=spf1 exists:%{l}.%{o}.x.example.com -all", 0, 0 } };
        FakeAnswer a;
        fake_resolve(zone, 1, name, type, &a);
        ASSERT_OK(spf_check_answer(c, &a.res));
        fake_answer_done(&a);
        ASSERT_EQ(spf_check_next_query(c, &name, &type), 1);
        ASSERT_STREQ(name, "postmaster.mail.example.com.x.example.com");
        spf_check_free(c);

        ASSERT_OK(spf_check_new(&(SpfParams) { .client_ip = IP, .helo = "mail.example.com", .mail_from = NULL }, &c));
        ASSERT_OK(spf_check_result(c, &res) == -EBUSY ? 0 : -1);
        spf_check_free(c);
        /* a HELO that is no domain: none at once */
        ASSERT_OK(spf_check_new(&(SpfParams) { .client_ip = IP, .helo = "[192.0.2.10]" }, &c));
        ASSERT_TRUE(spf_check_is_done(c));
        ASSERT_OK(spf_check_result(c, &res));
        ASSERT_EQ(res->result, SPF_RESULT_NONE);
        ASSERT_STREQ(res->identity, "helo");
        ASSERT_STREQ(res->sender, "postmaster@[192.0.2.10]");
        spf_check_free(c);
        /* nothing at all */
        ASSERT_OK(spf_check_new(&(SpfParams) { .client_ip = IP }, &c));
        ASSERT_TRUE(spf_check_is_done(c));
        ASSERT_OK(spf_check_result(c, &res));
        ASSERT_EQ(res->result, SPF_RESULT_NONE);
        spf_check_free(c);
}

TEST(freed_midway) {
        /* freeing with a query outstanding and includes on the stack */
        FakeRR zone[] = {
                { "example.com", DNS_TYPE_TXT, "v=spf1 include:i.example.com -all", 0, 0 },
                { "i.example.com", DNS_TYPE_TXT, "v=spf1 mx -all", 0, 0 },
                { "i.example.com", DNS_TYPE_MX, "mail.example.com", 1, 0 },
        };
        for (int stop = 0; stop < 4; stop++) {
                SpfCheck *c = NULL;
                ASSERT_OK(spf_check_new(&(SpfParams) { .client_ip = IP, .mail_from = FROM }, &c));
                for (int i = 0; i < stop && !spf_check_is_done(c); i++) {
                        const char *name;
                        uint16_t type;
                        ASSERT_EQ(spf_check_next_query(c, &name, &type), 1);
                        FakeAnswer a;
                        fake_resolve(zone, ELEMENTSOF(zone), name, type, &a);
                        ASSERT_OK(spf_check_answer(c, &a.res));
                        fake_answer_done(&a);
                }
                spf_check_free(c);
        }
}

/* dns.c parses the PTR records the ptr mechanism and %{p} ask for. */
TEST(ptr_rdata) {
        static const uint8_t wire[] = "\x04mail\x07" "Example\x03" "com\x00";
        DnsRecord rec;
        ASSERT_OK(dns_parse_rdata(DNS_TYPE_PTR, wire, sizeof wire - 1, &rec));
        ASSERT_EQ(rec.type, DNS_TYPE_PTR);
        ASSERT_STREQ(rec.ptr.name, "mail.example.com");
        dns_record_done(&rec);
        ASSERT_NULL(rec.ptr.name);
        ASSERT_ERR(dns_parse_rdata(DNS_TYPE_PTR, wire, sizeof wire - 2, &rec), -EBADMSG);
        ASSERT_ERR(dns_parse_rdata(DNS_TYPE_PTR, (const uint8_t *) "\xc0\x0c", 2, &rec), -EBADMSG);
        ASSERT_STREQ(dns_type_to_string(DNS_TYPE_PTR), "PTR");
}

int main(void) {
        return tap_run();
}
