/* SPDX-License-Identifier: MIT */
/* shared/dns.[ch]: the rdata parser on tables of good and hostile inputs,
 * then the resolver against the real fixture (nsd + validating unbound,
 * tests/dns/fixture.sh): every record type, secure/insecure/bogus,
 * NXDOMAIN vs NODATA, SERVFAIL, timeouts, cancel, limits, 500 at once. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../dns/dns-test-util.h"
#include "dns.h"
#include "macro.h"
#include "tap.h"

/* ------------------------------------------------------------------ parser */

static int parse(uint16_t type, const char *bytes, size_t len, DnsRecord *rec) {
        return dns_parse_rdata(type, (const uint8_t *) bytes, len, rec);
}
#define PARSE(type, lit, rec) parse((type), (lit), sizeof(lit) - 1, (rec))

TEST(parse_a_aaaa) {
        DnsRecord rec;
        char buf[INET6_ADDRSTRLEN];

        ASSERT_OK(PARSE(DNS_TYPE_A, "\xc0\x00\x02\x01", &rec));
        ASSERT_STREQ(inet_ntop(AF_INET, &rec.a, buf, sizeof buf), "192.0.2.1");
        dns_record_done(&rec);
        ASSERT_ERR(PARSE(DNS_TYPE_A, "\xc0\x00\x02", &rec), -EBADMSG);
        ASSERT_ERR(PARSE(DNS_TYPE_A, "\xc0\x00\x02\x01\x00", &rec), -EBADMSG);
        ASSERT_ERR(parse(DNS_TYPE_A, NULL, 0, &rec), -EBADMSG);

        ASSERT_OK(PARSE(DNS_TYPE_AAAA, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", &rec));
        ASSERT_STREQ(inet_ntop(AF_INET6, &rec.aaaa, buf, sizeof buf), "2001:db8::1");
        dns_record_done(&rec);
        ASSERT_ERR(PARSE(DNS_TYPE_AAAA, "\x20\x01\x0d\xb8", &rec), -EBADMSG);
        ASSERT_ERR(PARSE(DNS_TYPE_AAAA, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01\x02", &rec), -EBADMSG);
}

TEST(parse_mx_names) {
        static const struct {
                const char *rdata;
                size_t len;
                int ret;
                uint16_t pref;
                const char *exchange;
        } t[] = {
#define R(s) s, sizeof(s) - 1
                { R("\x00\x0a\x02mx\x07""example\x03""com\x00"), 0, 10, "mx.example.com" },
                { R("\x00\x00\x00"), 0, 0, "." },                                  /* null MX */
                { R("\xff\xff\x02MX\x07""ExAmPlE\x00"), 0, 65535, "mx.example" },   /* lower-cased */
                { R("\x00\x01\x03""a.b\x00"), 0, 1, "a\\046b" },                    /* dot inside a label */
                { R("\x00\x01\x03""a\x00z\x00"), 0, 1, "a\\000z" },
                { R("\x00\x01\x02\xff\x20\x00"), 0, 1, "\\255\\032" },
                { R("\x00\x01\x01*\x01x\x00"), 0, 1, "*.x" },
                { R("\x00\x0a"), -EBADMSG, 0, NULL },                               /* short */
                { R("\x00\x0a\x02mx"), -EBADMSG, 0, NULL },                         /* no root label */
                { R("\x00\x0a\x05mx\x00"), -EBADMSG, 0, NULL },                     /* label past end */
                { R("\x00\x0a\xc0\x02"), -EBADMSG, 0, NULL },                       /* pointer to itself */
                { R("\x00\x0a\xc0\x00"), -EBADMSG, 0, NULL },                       /* pointer loop */
                { R("\x00\x0a\x02mx\xc0\x02"), -EBADMSG, 0, NULL },                 /* pointer after a label */
                { R("\x00\x0a\x41mx\x00"), -EBADMSG, 0, NULL },                     /* extended label 01 */
                { R("\x00\x0a\x81mx\x00"), -EBADMSG, 0, NULL },                     /* extended label 10 */
                { R("\x00\x0a\x02mx\x00\x00"), -EBADMSG, 0, NULL },                 /* trailing garbage */
#undef R
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                DnsRecord rec = {};
                int k = parse(DNS_TYPE_MX, t[i].rdata, t[i].len, &rec);
                if (k != t[i].ret)
                        TAP_FAIL("case %zu: returned %d, expected %d", i, k, t[i].ret);
                if (k < 0)
                        continue;
                ASSERT_EQ(rec.mx.preference, t[i].pref);
                ASSERT_STREQ(rec.mx.exchange, t[i].exchange);
                dns_record_done(&rec);
        }
}

TEST(parse_name_limits) {
        uint8_t wire[300];
        char text[DNS_NAME_TEXT_MAX];
        size_t n = 0;

        /* 4 labels of 63 + root = 4*64 + 1 = 257 octets: too long */
        for (int l = 0; l < 4; l++) {
                wire[n++] = 63;
                memset(wire + n, 'a', 63);
                n += 63;
        }
        wire[n++] = 0;
        ASSERT_ERR(dns_name_to_text(wire, n, text), -EBADMSG);

        /* 3 x 63 + one of 61 + root = 255: the longest legal name */
        n = 3 * 64;
        wire[n++] = 61;
        memset(wire + n, 'b', 61);
        n += 61;
        wire[n++] = 0;
        ASSERT_EQ(n, 255);
        ASSERT_OK(dns_name_to_text(wire, n, text));
        ASSERT_EQ(strlen(text), 253);

        /* the same length, every octet needing an escape: the worst case fits */
        for (size_t i = 0; i < n - 1; i++)
                if (i % 64 != 0)
                        wire[i] = 0xff;
        ASSERT_OK(dns_name_to_text(wire, n, text));
        ASSERT_EQ(strlen(text), 4 * 250 + 3);

        /* a label of 64 is an extended label type (0x40): refused */
        wire[0] = 64;
        ASSERT_ERR(dns_name_to_text(wire, n, text), -EBADMSG);
        ASSERT_ERR(dns_name_to_text(wire, 0, text), -EBADMSG);
}

TEST(parse_txt) {
        DnsRecord rec;

        ASSERT_OK(PARSE(DNS_TYPE_TXT, "\x05v=spf\x05""1 -al\x01l", &rec));
        ASSERT_EQ(rec.txt.len, 11);
        ASSERT_EQ(rec.txt.n_strings, 3);
        ASSERT_STREQ(rec.txt.text, "v=spf1 -all");
        dns_record_done(&rec);

        ASSERT_OK(PARSE(DNS_TYPE_TXT, "\x00", &rec)); /* one empty string */
        ASSERT_EQ(rec.txt.len, 0);
        ASSERT_STREQ(rec.txt.text, "");
        dns_record_done(&rec);

        ASSERT_OK(PARSE(DNS_TYPE_TXT, "\x03""a\0b", &rec)); /* NUL inside: len is the truth */
        ASSERT_EQ(rec.txt.len, 3);
        ASSERT_EQ(memcmp(rec.txt.text, "a\0b", 4), 0);
        dns_record_done(&rec);

        ASSERT_ERR(parse(DNS_TYPE_TXT, "", 0, &rec), -EBADMSG);      /* no string at all */
        ASSERT_ERR(PARSE(DNS_TYPE_TXT, "\x05""abc", &rec), -EBADMSG); /* string past end */
        ASSERT_ERR(PARSE(DNS_TYPE_TXT, "\x01""a\x02""b", &rec), -EBADMSG);
}

TEST(parse_tlsa_cname_other) {
        DnsRecord rec;

        ASSERT_OK(PARSE(DNS_TYPE_TLSA, "\x03\x01\x01\xde\xad", &rec));
        ASSERT_EQ(rec.tlsa.usage, 3);
        ASSERT_EQ(rec.tlsa.selector, 1);
        ASSERT_EQ(rec.tlsa.matching_type, 1);
        ASSERT_EQ(rec.tlsa.len, 2);
        ASSERT_EQ(rec.tlsa.data[1], 0xad);
        dns_record_done(&rec);
        ASSERT_OK(PARSE(DNS_TYPE_TLSA, "\x03\x01\x01", &rec)); /* empty data: DANE decides */
        ASSERT_EQ(rec.tlsa.len, 0);
        dns_record_done(&rec);
        ASSERT_ERR(PARSE(DNS_TYPE_TLSA, "\x03\x01", &rec), -EBADMSG);

        ASSERT_OK(PARSE(DNS_TYPE_CNAME, "\x03www\x00", &rec));
        ASSERT_STREQ(rec.cname.target, "www");
        dns_record_done(&rec);
        ASSERT_ERR(PARSE(DNS_TYPE_CNAME, "\xc0\x0c", &rec), -EBADMSG);
        ASSERT_ERR(parse(DNS_TYPE_CNAME, "", 0, &rec), -EBADMSG);

        ASSERT_ERR(PARSE(99, "\x00", &rec), -EOPNOTSUPP);
}

/* ------------------------------------------------------------------ resolver */

typedef struct Got {
        bool done;
        DnsStatus status;
        DnsSecurity security;
        int rcode, error;
        uint32_t ttl;
        size_t n_records, n_malformed;
        char *records;  /* sorted "TYPE data" lines joined with '|' */
        char *canonical;
        char *why_bogus;
        unsigned calls;
} Got;

static void got_done(Got *g) {
        free(g->records);
        free(g->canonical);
        free(g->why_bogus);
}

static char *record_str(const DnsRecord *r) {
        char buf[2 * DNS_NAME_TEXT_MAX + 600], *p = buf;
        size_t left = sizeof buf;
        char a[INET6_ADDRSTRLEN];

#define OUT(...) do { int _w = snprintf(p, left, __VA_ARGS__); if (_w > 0 && (size_t) _w < left) { p += _w; left -= (size_t) _w; } } while (0)
        switch (r->type) {
        case DNS_TYPE_A:
                OUT("A %s", inet_ntop(AF_INET, &r->a, a, sizeof a));
                break;
        case DNS_TYPE_AAAA:
                OUT("AAAA %s", inet_ntop(AF_INET6, &r->aaaa, a, sizeof a));
                break;
        case DNS_TYPE_MX:
                OUT("MX %u %s", r->mx.preference, r->mx.exchange);
                break;
        case DNS_TYPE_CNAME:
                OUT("CNAME %s", r->cname.target);
                break;
        case DNS_TYPE_TXT:
                OUT("TXT ");
                for (size_t i = 0; i < r->txt.len; i++) {
                        unsigned char c = (unsigned char) r->txt.text[i];
                        if (c >= 0x20 && c < 0x7f && c != '\\')
                                OUT("%c", c);
                        else
                                OUT("\\x%02x", c);
                }
                break;
        case DNS_TYPE_TLSA:
                OUT("TLSA %u %u %u ", r->tlsa.usage, r->tlsa.selector, r->tlsa.matching_type);
                for (size_t i = 0; i < r->tlsa.len; i++)
                        OUT("%02x", r->tlsa.data[i]);
                break;
        }
#undef OUT
        return strdup(buf);
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static void on_got(DnsQuery *q, const DnsResult *res, void *userdata) {
        Got *g = userdata;
        char **lines = calloc(res->n_records + 1, sizeof(char *));
        size_t total = 1;

        g->calls++;
        g->done = true;
        g->status = res->status;
        g->security = res->security;
        g->rcode = res->rcode;
        g->error = res->error;
        g->ttl = res->ttl;
        g->n_records = res->n_records;
        g->n_malformed = res->n_malformed;
        g->canonical = res->canonical ? strdup(res->canonical) : NULL;
        g->why_bogus = res->why_bogus ? strdup(res->why_bogus) : NULL;
        for (size_t i = 0; i < res->n_records; i++) {
                lines[i] = record_str(&res->records[i]);
                total += strlen(lines[i]) + 1;
        }
        qsort(lines, res->n_records, sizeof(char *), cmp_str);
        g->records = calloc(1, total);
        for (size_t i = 0; i < res->n_records; i++) {
                if (i > 0)
                        strcat(g->records, "|");
                strcat(g->records, lines[i]);
                free(lines[i]);
        }
        free(lines);
}

static Got resolve(DnsResolver *r, sd_event *e, const char *name, uint16_t type) {
        Got g = {};
        ASSERT_OK(dns_query(r, name, type, on_got, &g, NULL));
        if (!run_until(e, &g.done, 10 * 1000000ULL))
                TAP_FAIL("no answer for %s %s in 10 s", name, dns_type_to_string(type));
        ASSERT_EQ(g.calls, 1);
        return g;
}

typedef struct Env {
        sd_event *e;
        DnsResolver *r;
} Env;

static Env env_new(uint64_t timeout_usec, unsigned max_outstanding) {
        Env v = {};
        ASSERT_OK(sd_event_new(&v.e));
        v.r = fixture_resolver(v.e, timeout_usec, max_outstanding);
        return v;
}

static void env_done(Env *v) {
        dns_resolver_free(v->r);
        sd_event_unref(v->e);
}

TEST(resolve_a_aaaa_secure) {
        Env v = env_new(0, 0);
        Got g = resolve(v.r, v.e, "mx1.halyard.test", DNS_TYPE_A);
        ASSERT_EQ(g.status, DNS_STATUS_OK);
        ASSERT_EQ(g.security, DNS_SECURE);
        ASSERT_STREQ(g.records, "A 192.0.2.1");
        ASSERT_TRUE(g.ttl > 0 && g.ttl <= 300);
        ASSERT_NULL(g.canonical);
        got_done(&g);

        g = resolve(v.r, v.e, "MX1.Halyard.Test.", DNS_TYPE_AAAA);
        ASSERT_EQ(g.status, DNS_STATUS_OK);
        ASSERT_EQ(g.security, DNS_SECURE);
        ASSERT_STREQ(g.records, "AAAA 2001:db8::1");
        got_done(&g);
        env_done(&v);
}

TEST(resolve_mx) {
        Env v = env_new(0, 0);
        Got g = resolve(v.r, v.e, "halyard.test", DNS_TYPE_MX);
        ASSERT_EQ(g.status, DNS_STATUS_OK);
        ASSERT_EQ(g.security, DNS_SECURE);
        ASSERT_STREQ(g.records, "MX 10 mx1.halyard.test|MX 20 mx2.halyard.test");
        got_done(&g);

        g = resolve(v.r, v.e, "nullmx.halyard.test", DNS_TYPE_MX);
        ASSERT_EQ(g.status, DNS_STATUS_OK);
        ASSERT_STREQ(g.records, "MX 0 .");
        got_done(&g);

        g = resolve(v.r, v.e, "ipmx.halyard.test", DNS_TYPE_MX);
        ASSERT_STREQ(g.records, "MX 10 192.0.2.99|MX 20 mx2.halyard.test");
        got_done(&g);
        env_done(&v);
}

TEST(resolve_txt) {
        Env v = env_new(0, 0);
        Got g = resolve(v.r, v.e, "_smtp._tls.halyard.test", DNS_TYPE_TXT);
        ASSERT_EQ(g.status, DNS_STATUS_OK);
        ASSERT_EQ(g.security, DNS_SECURE);
        ASSERT_STREQ(g.records, "TXT v=TLSRPTv1; rua=mailto:tlsrpt@halyard.test");
        got_done(&g);

        g = resolve(v.r, v.e, "halyard.test", DNS_TYPE_TXT);
        ASSERT_STREQ(g.records, "TXT v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all");
        got_done(&g);

        g = resolve(v.r, v.e, "multi.halyard.test", DNS_TYPE_TXT); /* two records stay two */
        ASSERT_EQ(g.n_records, 2);
        ASSERT_STREQ(g.records, "TXT abc|TXT second record");
        got_done(&g);

        g = resolve(v.r, v.e, "empty.halyard.test", DNS_TYPE_TXT);
        ASSERT_STREQ(g.records, "TXT ");
        got_done(&g);

        g = resolve(v.r, v.e, "octets.halyard.test", DNS_TYPE_TXT);
        ASSERT_STREQ(g.records, "TXT x\\x00y\\xff");
        got_done(&g);

        g = resolve(v.r, v.e, "long.halyard.test", DNS_TYPE_TXT);
        ASSERT_EQ(strlen(g.records), 4 + 255 + 4);
        ASSERT_TRUE(strstr(g.records, "901234tail") != NULL);
        got_done(&g);
        env_done(&v);
}

TEST(resolve_tlsa) {
        Env v = env_new(0, 0);
        Got g = resolve(v.r, v.e, "_25._tcp.mx1.halyard.test", DNS_TYPE_TLSA);
        ASSERT_EQ(g.status, DNS_STATUS_OK);
        ASSERT_EQ(g.security, DNS_SECURE);
        ASSERT_STREQ(g.records,
                     "TLSA 2 0 2 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
                     "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
                     "|TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        got_done(&g);

        /* secure denial: no TLSA for mx2 -> no DANE, provably */
        g = resolve(v.r, v.e, "_25._tcp.mx2.halyard.test", DNS_TYPE_TLSA);
        ASSERT_EQ(g.status, DNS_STATUS_NXDOMAIN);
        ASSERT_EQ(g.security, DNS_SECURE);
        got_done(&g);

        /* under the unsigned child: data, but insecure */
        g = resolve(v.r, v.e, "_25._tcp.mx.insecure.halyard.test", DNS_TYPE_TLSA);
        ASSERT_EQ(g.status, DNS_STATUS_OK);
        ASSERT_EQ(g.security, DNS_INSECURE);
        ASSERT_EQ(g.n_records, 1);
        got_done(&g);
        env_done(&v);
}

TEST(resolve_cname) {
        Env v = env_new(0, 0);
        Got g = resolve(v.r, v.e, "cname.halyard.test", DNS_TYPE_CNAME);
        ASSERT_EQ(g.status, DNS_STATUS_OK);
        ASSERT_EQ(g.security, DNS_SECURE);
        ASSERT_STREQ(g.records, "CNAME mx1.halyard.test");
        got_done(&g);

        g = resolve(v.r, v.e, "cname.halyard.test", DNS_TYPE_A); /* followed */
        ASSERT_EQ(g.status, DNS_STATUS_OK);
        ASSERT_EQ(g.security, DNS_SECURE);
        ASSERT_STREQ(g.records, "A 192.0.2.1");
        ASSERT_NOT_NULL(g.canonical);
        ASSERT_STREQ(g.canonical, "mx1.halyard.test");
        got_done(&g);
        env_done(&v);
}

TEST(resolve_nxdomain_nodata) {
        Env v = env_new(0, 0);
        Got g = resolve(v.r, v.e, "no-such-name.halyard.test", DNS_TYPE_A);
        ASSERT_EQ(g.status, DNS_STATUS_NXDOMAIN);
        ASSERT_EQ(g.rcode, DNS_RCODE_NXDOMAIN);
        ASSERT_EQ(g.security, DNS_SECURE);
        ASSERT_EQ(g.n_records, 0);
        ASSERT_FALSE(dns_status_is_temporary(g.status));
        got_done(&g);

        g = resolve(v.r, v.e, "mx2.halyard.test", DNS_TYPE_AAAA);
        ASSERT_EQ(g.status, DNS_STATUS_NODATA);
        ASSERT_EQ(g.rcode, DNS_RCODE_NOERROR);
        ASSERT_EQ(g.security, DNS_SECURE);
        ASSERT_TRUE(g.ttl > 0 && g.ttl <= 300);
        got_done(&g);

        g = resolve(v.r, v.e, "mx.insecure.halyard.test", DNS_TYPE_TXT);
        ASSERT_EQ(g.status, DNS_STATUS_NODATA);
        ASSERT_EQ(g.security, DNS_INSECURE);
        got_done(&g);
        env_done(&v);
}

TEST(resolve_bogus) {
        Env v = env_new(0, 0);
        Got g = resolve(v.r, v.e, "bogus.halyard.test", DNS_TYPE_A);
        ASSERT_EQ(g.status, DNS_STATUS_SERVFAIL);
        ASSERT_EQ(g.security, DNS_BOGUS);
        ASSERT_EQ(g.rcode, DNS_RCODE_SERVFAIL);
        ASSERT_EQ(g.n_records, 0); /* the tampered 192.0.2.67 never reaches the caller */
        ASSERT_NOT_NULL(g.why_bogus);
        ASSERT_TRUE(strstr(g.why_bogus, "bogus.halyard.test") != NULL);
        ASSERT_TRUE(dns_status_is_temporary(g.status));
        printf("# why_bogus: %s\n", g.why_bogus);
        got_done(&g);

        g = resolve(v.r, v.e, "bogusmx.halyard.test", DNS_TYPE_MX);
        ASSERT_EQ(g.security, DNS_BOGUS);
        got_done(&g);

        /* the good records next to it are still secure */
        g = resolve(v.r, v.e, "mx2.halyard.test", DNS_TYPE_A);
        ASSERT_EQ(g.security, DNS_SECURE);
        ASSERT_STREQ(g.records, "A 192.0.2.2");
        got_done(&g);
        env_done(&v);
}

TEST(resolve_servfail) {
        Env v = env_new(0, 0);
        Got g = resolve(v.r, v.e, "host.lame.halyard.test", DNS_TYPE_A);
        ASSERT_EQ(g.status, DNS_STATUS_SERVFAIL);
        ASSERT_EQ(g.rcode, DNS_RCODE_SERVFAIL);
        ASSERT_TRUE(g.security != DNS_SECURE);
        ASSERT_TRUE(dns_status_is_temporary(g.status));
        got_done(&g);
        env_done(&v);
}

/* A forwarder that never answers: a UDP socket we bind and never read. */
static int silent_socket(char addr[64]) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof sa;
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 ||
            getsockname(fd, (struct sockaddr *) &sa, &sl) < 0)
                TAP_FAIL("silent socket: %m");
        snprintf(addr, 64, "127.0.0.1@%u", ntohs(sa.sin_port));
        return fd;
}

TEST(timeout) {
        char addr[64];
        _cleanup_close_ int fd = silent_socket(addr);
        const char *fwd[] = { addr, NULL };
        const char *zones[] = { "halyard.test", NULL };
        DnsConfig cfg = {
                .forwarders = fwd,
                .no_dnssec = true,
                .transparent_zones = zones,
                .timeout_usec = 300 * 1000,
        };
        sd_event *e = NULL;
        DnsResolver *r = NULL;
        Got g[3] = {};

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(dns_resolver_new(e, &cfg, &r));
        uint64_t t0 = now_usec();
        ASSERT_OK(dns_query(r, "a.halyard.test", DNS_TYPE_A, on_got, &g[0], NULL));
        ASSERT_OK(dns_query(r, "b.halyard.test", DNS_TYPE_MX, on_got, &g[1], NULL));
        ASSERT_OK(dns_query(r, "c.halyard.test", DNS_TYPE_TLSA, on_got, &g[2], NULL));
        ASSERT_TRUE(run_until(e, &g[2].done, 5 * 1000000ULL));
        (void) run_until(e, &g[0].done, 1000000ULL);
        (void) run_until(e, &g[1].done, 1000000ULL);
        uint64_t took = now_usec() - t0;
        printf("# 3 timeouts after %.3f s\n", (double) took / 1e6);
        for (int i = 0; i < 3; i++) {
                ASSERT_TRUE(g[i].done);
                ASSERT_EQ(g[i].calls, 1);
                ASSERT_EQ(g[i].status, DNS_STATUS_TIMEOUT);
                ASSERT_EQ(g[i].error, -ETIMEDOUT);
                ASSERT_TRUE(dns_status_is_temporary(g[i].status));
                got_done(&g[i]);
        }
        ASSERT_TRUE(took >= 300 * 1000);
        ASSERT_TRUE(took < 2 * 1000000ULL);

        DnsStats st;
        dns_resolver_get_stats(r, &st);
        ASSERT_EQ(st.timeouts, 3);
        ASSERT_EQ(st.outstanding, 0);
        dns_resolver_free(r);
        sd_event_unref(e);
}

TEST(cancel) {
        Env v = env_new(0, 0);
        Got g = {}, other = {};
        DnsQuery *q = NULL;

        ASSERT_OK(dns_query(v.r, "mx1.halyard.test", DNS_TYPE_A, on_got, &g, &q));
        ASSERT_OK(dns_query(v.r, "mx2.halyard.test", DNS_TYPE_A, on_got, &other, NULL));
        dns_query_cancel(q);
        dns_query_cancel(NULL);
        ASSERT_TRUE(run_until(v.e, &other.done, 10 * 1000000ULL));
        /* give a late answer for the cancelled one every chance to show up */
        bool never = false;
        (void) run_until(v.e, &never, 300 * 1000);
        ASSERT_FALSE(g.done);
        ASSERT_EQ(g.calls, 0);
        ASSERT_STREQ(other.records, "A 192.0.2.2");
        got_done(&other);

        DnsStats st;
        dns_resolver_get_stats(v.r, &st);
        ASSERT_EQ(st.canceled, 1);
        ASSERT_EQ(st.outstanding, 0);
        env_done(&v);
}

/* Callbacks that act on the resolver from inside the dispatch. */
typedef struct Reentry {
        DnsResolver **r;
        DnsQuery *self, *victim;
        Got *victim_got;
        unsigned calls;
        bool done;
        bool free_resolver;
        DnsStatus status;
} Reentry;

static void on_reentry(DnsQuery *q, const DnsResult *res, void *userdata) {
        Reentry *x = userdata;
        x->calls++;
        x->status = res->status;
        dns_query_cancel(q);          /* own handle inside own callback: no-op */
        dns_query_cancel(x->victim);  /* another query: gone, no callback */
        x->victim = NULL;
        if (x->free_resolver)
                *x->r = dns_resolver_free(*x->r); /* deferred teardown path */
        x->done = true;
}

TEST(reentrancy) {
        Env v = env_new(0, 0);
        Got victim = {}, late = {};
        Reentry x = { .r = &v.r };

        /* cancel another query from a callback; the victim (a SERVFAIL
         * that takes unbound a little longer) is most likely still out */
        ASSERT_OK(dns_query(v.r, "mx1.halyard.test", DNS_TYPE_A, on_reentry, &x, &x.self));
        ASSERT_OK(dns_query(v.r, "host.lame.halyard.test", DNS_TYPE_AAAA, on_got, &victim, &x.victim));
        ASSERT_TRUE(run_until(v.e, &x.done, 10 * 1000000ULL));
        ASSERT_EQ(x.calls, 1);
        ASSERT_EQ(x.status, DNS_STATUS_OK);
        if (victim.done) /* it won the race: still exactly once */
                ASSERT_EQ(victim.calls, 1);
        got_done(&victim);

        /* free the resolver from inside a ub_process() callback, with
         * another query outstanding: that one is completed as CANCELED */
        Reentry y = { .r = &v.r, .free_resolver = true };
        ASSERT_OK(dns_query(v.r, "mx2.halyard.test", DNS_TYPE_A, on_reentry, &y, NULL));
        ASSERT_OK(dns_query(v.r, "_25._tcp.mx1.halyard.test", DNS_TYPE_TLSA, on_got, &late, NULL));
        ASSERT_TRUE(run_until(v.e, &y.done, 10 * 1000000ULL));
        ASSERT_NULL(v.r);
        ASSERT_EQ(y.calls, 1);
        if (late.done) {
                ASSERT_EQ(late.calls, 1);
                ASSERT_TRUE(late.status == DNS_STATUS_CANCELED || late.status == DNS_STATUS_OK);
        }
        got_done(&late);
        sd_event_unref(v.e);
}

TEST(free_completes_outstanding) {
        Env v = env_new(0, 0);
        Got g[4] = {};
        for (int i = 0; i < 4; i++)
                ASSERT_OK(dns_query(v.r, "equal.halyard.test", DNS_TYPE_MX, on_got, &g[i], NULL));
        v.r = dns_resolver_free(v.r);
        for (int i = 0; i < 4; i++) {
                ASSERT_EQ(g[i].calls, 1);
                ASSERT_EQ(g[i].status, DNS_STATUS_CANCELED);
                ASSERT_EQ(g[i].error, -ECANCELED);
                got_done(&g[i]);
        }
        sd_event_unref(v.e);
}

TEST(limits_and_bad_input) {
        Env v = env_new(0, 2);
        Got g[3] = {};

        ASSERT_ERR(dns_query(v.r, "", DNS_TYPE_A, on_got, &g[0], NULL), -EINVAL);
        ASSERT_ERR(dns_query(v.r, NULL, DNS_TYPE_A, on_got, &g[0], NULL), -EINVAL);
        ASSERT_ERR(dns_query(v.r, "a..b", DNS_TYPE_A, on_got, &g[0], NULL), -EINVAL);
        ASSERT_ERR(dns_query(v.r, "a b.test", DNS_TYPE_A, on_got, &g[0], NULL), -EINVAL);
        ASSERT_ERR(dns_query(v.r, "a\\.b.test", DNS_TYPE_A, on_got, &g[0], NULL), -EINVAL);
        char big[300];
        memset(big, 'a', sizeof big - 1);
        big[sizeof big - 1] = 0;
        ASSERT_ERR(dns_query(v.r, big, DNS_TYPE_A, on_got, &g[0], NULL), -EINVAL);
        memset(big, 'a', 64);
        strcpy(big + 64, ".halyard.test");
        ASSERT_ERR(dns_query(v.r, big, DNS_TYPE_A, on_got, &g[0], NULL), -EINVAL); /* label of 64 */

        ASSERT_OK(dns_query(v.r, "mx1.halyard.test", DNS_TYPE_A, on_got, &g[0], NULL));
        ASSERT_OK(dns_query(v.r, "mx2.halyard.test", DNS_TYPE_A, on_got, &g[1], NULL));
        ASSERT_ERR(dns_query(v.r, "halyard.test", DNS_TYPE_MX, on_got, &g[2], NULL), -EBUSY);
        ASSERT_TRUE(run_until(v.e, &g[0].done, 10 * 1000000ULL));
        ASSERT_TRUE(run_until(v.e, &g[1].done, 10 * 1000000ULL));
        /* room again */
        Got h = resolve(v.r, v.e, "halyard.test", DNS_TYPE_MX);
        ASSERT_EQ(h.status, DNS_STATUS_OK);
        for (int i = 0; i < 2; i++)
                got_done(&g[i]);
        got_done(&h);
        env_done(&v);
}

TEST(config_errors) {
        sd_event *e = NULL;
        DnsResolver *r = NULL;
        ASSERT_OK(sd_event_new(&e));

        DnsConfig missing_ta = { .trust_anchor_file = "/nonexistent/ta.ds" };
        ASSERT_ERR(dns_resolver_new(e, &missing_ta, &r), -ENOENT);
        const char *bad[] = { "not-an-address", NULL };
        DnsConfig bad_fwd = { .forwarders = bad, .no_dnssec = true };
        ASSERT_ERR(dns_resolver_new(e, &bad_fwd, &r), -EINVAL);
        ASSERT_NULL(r);

        /* defaults: the system trust anchor (dns-root-data), full recursion;
         * created only, nothing is asked (tests stay offline) */
        ASSERT_OK(dns_resolver_new(e, NULL, &r));
        r = dns_resolver_free(r);
        sd_event_unref(e);
}

/* Many queries at once; the loop must keep ticking (nothing blocks it). */
typedef struct Many {
        unsigned done, ok, nx;
        uint64_t last_tick, max_gap;
} Many;

static void on_many(DnsQuery *q, const DnsResult *res, void *userdata) {
        Many *m = userdata;
        m->done++;
        if (res->status == DNS_STATUS_OK && res->security == DNS_SECURE)
                m->ok++;
        if (res->status == DNS_STATUS_NXDOMAIN && res->security == DNS_SECURE)
                m->nx++;
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        Many *m = userdata;
        uint64_t n = now_usec();
        if (m->last_tick && n - m->last_tick > m->max_gap)
                m->max_gap = n - m->last_tick;
        m->last_tick = n;
        return sd_event_source_set_time_relative(s, 5 * 1000) < 0 ? -EIO : 0;
}

TEST(many_concurrent) {
        Env v = env_new(0, 600);
        Many m = {};
        sd_event_source *tick = NULL;
        static const char *const names[] = { "mx1", "mx2", "a.equal", "b.equal", "c.equal", "d.equal", "implicit" };

        ASSERT_OK(sd_event_add_time_relative(v.e, &tick, CLOCK_MONOTONIC, 5 * 1000, 1000, on_tick, &m));
        ASSERT_OK(sd_event_source_set_enabled(tick, SD_EVENT_ON));

        uint64_t t0 = now_usec();
        m.last_tick = t0;
        for (unsigned i = 0; i < 500; i++) {
                char name[64];
                if (i % 2 == 0) /* distinct, uncached: real round trips (secure NXDOMAIN) */
                        snprintf(name, sizeof name, "n%u.halyard.test", i);
                else
                        snprintf(name, sizeof name, "%s.halyard.test", names[i % ELEMENTSOF(names)]);
                ASSERT_OK(dns_query(v.r, name, DNS_TYPE_A, on_many, &m, NULL));
        }
        uint64_t issued = now_usec() - t0;
        DnsStats st;
        dns_resolver_get_stats(v.r, &st);
        ASSERT_EQ(st.outstanding, 500);

        uint64_t end = now_usec() + 20 * 1000000ULL;
        while (m.done < 500 && now_usec() < end)
                ASSERT_OK(sd_event_run(v.e, 100 * 1000));
        on_tick(tick, 0, &m); /* the gap up to the end counts too */
        uint64_t took = now_usec() - t0;
        printf("# 500 queries: issued in %.1f ms, all answered in %.3f s, longest loop stall %.1f ms\n",
               (double) issued / 1e3, (double) took / 1e6, (double) m.max_gap / 1e3);
        ASSERT_EQ(m.done, 500);
        ASSERT_EQ(m.nx, 250);
        ASSERT_EQ(m.ok, 250);
        ASSERT_TRUE(issued < 1000000ULL);
        ASSERT_TRUE(m.max_gap < 500 * 1000);
        sd_event_source_disable_unref(tick);
        env_done(&v);
}

int main(void) {
        return tap_run();
}
