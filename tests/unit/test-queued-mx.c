/* SPDX-License-Identifier: MIT */
/* services/queued/queued-mx: next hops resolved through the real fixture
 * (tests/dns/fixture.sh: nsd + validating unbound, zone halyard.test). */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../dns/dns-test-util.h"
#include "macro.h"
#include "queued-mx.h"
#include "tap.h"

typedef struct MxGot {
        bool done;
        unsigned calls;
        MxStatus status;
        char code[16];
        char reason[600];
        bool implicit, mx_secure;
        size_t n_hosts, n_usable, n_skipped;
        uint32_t ttl;
        char hosts[4096]; /* "name pref S|I [canonical=...] addr addr|..." */
} MxGot;

static void append(char *buf, size_t size, const char *fmt, ...) _printf_(3, 4);
static void append(char *buf, size_t size, const char *fmt, ...) {
        size_t l = strlen(buf);
        va_list ap;
        if (l >= size)
                return;
        va_start(ap, fmt);
        (void) vsnprintf(buf + l, size - l, fmt, ap);
        va_end(ap);
}

static void on_mx_got(MxLookup *l, const MxResult *res, void *userdata) {
        MxGot *g = userdata;
        g->calls++;
        g->done = true;
        g->status = res->status;
        snprintf(g->code, sizeof g->code, "%s", res->enhanced_status ?: "");
        snprintf(g->reason, sizeof g->reason, "%s", res->reason ?: "");
        g->implicit = res->implicit;
        g->mx_secure = res->mx_secure;
        g->n_hosts = res->n_hosts;
        g->n_usable = res->n_usable;
        g->n_skipped = res->n_skipped;
        g->ttl = res->ttl;
        g->hosts[0] = 0;
        for (size_t i = 0; i < res->n_hosts; i++) {
                const MxHost *h = &res->hosts[i];
                append(g->hosts, sizeof g->hosts, "%s%s %u %s", i ? "|" : "", h->name, h->preference,
                       h->secure ? "S" : "I");
                if (h->canonical)
                        append(g->hosts, sizeof g->hosts, " canonical=%s", h->canonical);
                for (size_t j = 0; j < h->n_addresses; j++) {
                        char a[INET6_ADDRSTRLEN];
                        const MxAddress *ad = &h->addresses[j];
                        inet_ntop(ad->family, ad->family == AF_INET ? (const void *) &ad->in : (const void *) &ad->in6,
                                  a, sizeof a);
                        append(g->hosts, sizeof g->hosts, " %s%s", a, ad->secure == h->secure ? "" : "(!)");
                }
                if (h->n_addresses == 0)
                        append(g->hosts, sizeof g->hosts, " -%s(%s)", h->temporary ? "temp" : "", h->error ?: "?");
        }
}

typedef struct Env {
        sd_event *e;
        DnsResolver *r;
} Env;

static Env env_new(void) {
        Env v = {};
        ASSERT_OK(sd_event_new(&v.e));
        v.r = fixture_resolver(v.e, 0, 0);
        return v;
}

static void env_done(Env *v) {
        dns_resolver_free(v->r);
        sd_event_unref(v->e);
}

static MxGot lookup(Env *v, const char *domain, const MxConfig *cfg) {
        MxGot g = {};
        ASSERT_OK(mx_lookup_start(v->r, domain, cfg, on_mx_got, &g, NULL));
        if (!run_until(v->e, &g.done, 15 * 1000000ULL))
                TAP_FAIL("no MX result for %s in 15 s", domain);
        ASSERT_EQ(g.calls, 1);
        return g;
}

TEST(mx_basic_order_and_families) {
        Env v = env_new();
        MxGot g = lookup(&v, "halyard.test", NULL);
        ASSERT_EQ(g.status, MX_OK);
        ASSERT_FALSE(g.implicit);
        ASSERT_TRUE(g.mx_secure);
        ASSERT_EQ(g.n_hosts, 2);
        ASSERT_EQ(g.n_usable, 2);
        ASSERT_STREQ(g.hosts, "mx1.halyard.test 10 S 192.0.2.1 2001:db8::1|mx2.halyard.test 20 S 192.0.2.2");
        ASSERT_TRUE(g.ttl > 0 && g.ttl <= 300);

        MxConfig v6first = { .prefer_ipv6 = true };
        g = lookup(&v, "HALYARD.test.", &v6first);
        ASSERT_STREQ(g.hosts, "mx1.halyard.test 10 S 2001:db8::1 192.0.2.1|mx2.halyard.test 20 S 192.0.2.2");

        MxConfig v4only = { .disable_ipv6 = true };
        g = lookup(&v, "halyard.test", &v4only);
        ASSERT_STREQ(g.hosts, "mx1.halyard.test 10 S 192.0.2.1|mx2.halyard.test 20 S 192.0.2.2");

        MxConfig v6only = { .disable_ipv4 = true };
        g = lookup(&v, "halyard.test", &v6only);
        ASSERT_EQ(g.status, MX_OK);
        ASSERT_EQ(g.n_usable, 1);
        ASSERT_STREQ(g.hosts, "mx1.halyard.test 10 S 2001:db8::1|mx2.halyard.test 20 S -(no AAAA record)");

        MxConfig none = { .disable_ipv4 = true, .disable_ipv6 = true };
        MxGot unused = {};
        ASSERT_ERR(mx_lookup_start(v.r, "halyard.test", &none, on_mx_got, &unused, NULL), -EINVAL);
        ASSERT_ERR(mx_lookup_start(v.r, "[192.0.2.1]", NULL, on_mx_got, &unused, NULL), -EINVAL);
        ASSERT_ERR(mx_lookup_start(v.r, "", NULL, on_mx_got, &unused, NULL), -EINVAL);
        ASSERT_ERR(mx_lookup_start(v.r, ".", NULL, on_mx_got, &unused, NULL), -EINVAL);
        ASSERT_ERR(mx_lookup_start(v.r, "a..b", NULL, on_mx_got, &unused, NULL), -EINVAL);
        ASSERT_EQ(unused.calls, 0);
        env_done(&v);
}

static uint32_t always_zero(uint32_t bound, void *userdata) {
        return 0;
}
static uint32_t always_max(uint32_t bound, void *userdata) {
        return bound - 1;
}

TEST(mx_equal_preference_random) {
        Env v = env_new();

        /* injected: Fisher-Yates with j=0 every step turns [a,b,c] into [b,c,a] */
        MxConfig zero = { .random_uniform = always_zero };
        MxGot g = lookup(&v, "equal.halyard.test", &zero);
        ASSERT_STREQ(g.hosts, "b.equal.halyard.test 10 S 192.0.2.12|c.equal.halyard.test 10 S 192.0.2.13|"
                              "a.equal.halyard.test 10 S 192.0.2.11|d.equal.halyard.test 20 S 192.0.2.14");
        MxConfig max = { .random_uniform = always_max };
        g = lookup(&v, "equal.halyard.test", &max); /* j=i: identity */
        ASSERT_STREQ(g.hosts, "a.equal.halyard.test 10 S 192.0.2.11|b.equal.halyard.test 10 S 192.0.2.12|"
                              "c.equal.halyard.test 10 S 192.0.2.13|d.equal.halyard.test 20 S 192.0.2.14");

        /* the real source, many runs: every equal host comes first often,
         * d (preference 20) is always last. P(a count < 60 of 300) ~ 1e-6. */
        unsigned first[3] = {};
        const unsigned runs = 300;
        for (unsigned i = 0; i < runs; i++) {
                g = lookup(&v, "equal.halyard.test", NULL);
                ASSERT_EQ(g.status, MX_OK);
                ASSERT_EQ(g.n_hosts, 4);
                ASSERT_TRUE(strstr(g.hosts, "|d.equal.halyard.test 20 S 192.0.2.14") != NULL);
                ASSERT_TRUE(g.hosts[1] == '.' && g.hosts[0] >= 'a' && g.hosts[0] <= 'c');
                first[g.hosts[0] - 'a']++;
        }
        printf("# first among equals over %u runs: a=%u b=%u c=%u\n", runs, first[0], first[1], first[2]);
        for (int i = 0; i < 3; i++)
                ASSERT_TRUE(first[i] >= 60);

        MxConfig two = { .max_hosts = 2, .random_uniform = always_max };
        g = lookup(&v, "equal.halyard.test", &two);
        ASSERT_EQ(g.n_hosts, 2);
        ASSERT_EQ(g.n_skipped, 2);
        ASSERT_STREQ(g.hosts, "a.equal.halyard.test 10 S 192.0.2.11|b.equal.halyard.test 10 S 192.0.2.12");
        env_done(&v);
}

TEST(mx_implicit) {
        Env v = env_new();
        MxGot g = lookup(&v, "implicit.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_OK);
        ASSERT_TRUE(g.implicit);
        ASSERT_TRUE(g.mx_secure); /* the NODATA for MX validated */
        ASSERT_STREQ(g.hosts, "implicit.halyard.test 0 S 192.0.2.20 2001:db8::20");

        /* no MX, no address: the domain has no mail service */
        g = lookup(&v, "noaddr.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_PERMANENT);
        ASSERT_STREQ(g.code, "5.1.2");
        ASSERT_TRUE(g.implicit);
        printf("# %s\n", g.reason);

        g = lookup(&v, "no-such-domain.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_PERMANENT);
        ASSERT_STREQ(g.code, "5.1.2");
        ASSERT_TRUE(strstr(g.reason, "does not exist") != NULL);
        ASSERT_TRUE(g.mx_secure);
        env_done(&v);
}

TEST(mx_null) {
        Env v = env_new();
        MxGot g = lookup(&v, "nullmx.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_PERMANENT);
        ASSERT_STREQ(g.code, "5.1.10");
        ASSERT_TRUE(strstr(g.reason, "null MX") != NULL);
        ASSERT_EQ(g.n_hosts, 0); /* its A record is never used */
        ASSERT_TRUE(g.mx_secure);
        printf("# %s\n", g.reason);
        env_done(&v);
}

TEST(mx_odd_exchanges) {
        Env v = env_new();
        /* CNAME as exchange: followed, the target reported */
        MxGot g = lookup(&v, "cnamemx.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_OK);
        ASSERT_STREQ(g.hosts, "cname.halyard.test 10 S canonical=mx1.halyard.test 192.0.2.1 2001:db8::1");

        /* IP literal as exchange: skipped */
        g = lookup(&v, "ipmx.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_OK);
        ASSERT_EQ(g.n_skipped, 1);
        ASSERT_STREQ(g.hosts, "mx2.halyard.test 20 S 192.0.2.2");

        g = lookup(&v, "ipmxonly.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_TEMPORARY);
        ASSERT_STREQ(g.code, "4.4.4");
        ASSERT_EQ(g.n_skipped, 1);

        /* the same host twice: once, at its best preference */
        g = lookup(&v, "dupmx.halyard.test", NULL);
        ASSERT_EQ(g.n_skipped, 1);
        ASSERT_STREQ(g.hosts, "mx1.halyard.test 10 S 192.0.2.1 2001:db8::1|mx2.halyard.test 20 S 192.0.2.2");

        /* one host without any address: kept, skipped by delivery */
        g = lookup(&v, "partial.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_OK);
        ASSERT_EQ(g.n_usable, 1);
        ASSERT_STREQ(g.hosts, "nowhere.halyard.test 10 S -(no A/AAAA record)|mx2.halyard.test 20 S 192.0.2.2");
        env_done(&v);
}

TEST(mx_all_hosts_fail) {
        Env v = env_new();
        MxGot g = lookup(&v, "deadmx.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_TEMPORARY);
        ASSERT_STREQ(g.code, "4.4.4");
        printf("# %s\n", g.reason);

        g = lookup(&v, "lamemx.halyard.test", NULL); /* host lookups SERVFAIL */
        ASSERT_EQ(g.status, MX_TEMPORARY);
        ASSERT_STREQ(g.code, "4.4.3");

        MxConfig v4only = { .disable_ipv6 = true };
        g = lookup(&v, "v6mx.halyard.test", &v4only);
        ASSERT_EQ(g.status, MX_TEMPORARY);
        ASSERT_STREQ(g.code, "4.4.4");
        env_done(&v);
}

TEST(mx_dnssec) {
        Env v = env_new();
        /* bogus MX RRset: temporary, never the tampered data */
        MxGot g = lookup(&v, "bogusmx.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_TEMPORARY);
        ASSERT_STREQ(g.code, "4.4.3");
        ASSERT_TRUE(strstr(g.reason, "DNSSEC") != NULL);
        ASSERT_FALSE(g.mx_secure);
        printf("# %s\n", g.reason);

        /* secure MX, the only host's A bogus (its AAAA securely absent) */
        g = lookup(&v, "bogushost.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_TEMPORARY);
        ASSERT_STREQ(g.code, "4.4.3");

        /* secure MX pointing into the unsigned child */
        g = lookup(&v, "mixed.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_OK);
        ASSERT_TRUE(g.mx_secure);
        ASSERT_STREQ(g.hosts, "mx.insecure.halyard.test 10 I 192.0.2.40 2001:db8::40");

        /* everything insecure below the unsigned delegation */
        g = lookup(&v, "insecure.halyard.test", NULL);
        ASSERT_EQ(g.status, MX_OK);
        ASSERT_FALSE(g.mx_secure);
        ASSERT_STREQ(g.hosts, "mx.insecure.halyard.test 10 I 192.0.2.40 2001:db8::40");
        env_done(&v);
}

TEST(mx_temp_failures) {
        Env v = env_new();
        MxGot g = lookup(&v, "lame.halyard.test", NULL); /* MX lookup itself SERVFAILs */
        ASSERT_EQ(g.status, MX_TEMPORARY);
        ASSERT_STREQ(g.code, "4.4.3");
        env_done(&v);

        /* a resolver whose forwarder never answers: per-query timeout */
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof sa;
        _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(bind(fd, (struct sockaddr *) &sa, sizeof sa));
        ASSERT_OK(getsockname(fd, (struct sockaddr *) &sa, &sl));
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1@%u", ntohs(sa.sin_port));
        const char *fwd[] = { addr, NULL };
        const char *zones[] = { "halyard.test", NULL };
        DnsConfig cfg = { .forwarders = fwd, .no_dnssec = true, .transparent_zones = zones, .timeout_usec = 200000 };
        Env w = {};
        ASSERT_OK(sd_event_new(&w.e));
        ASSERT_OK(dns_resolver_new(w.e, &cfg, &w.r));
        uint64_t t0 = now_usec();
        g = lookup(&w, "halyard.test", NULL);
        ASSERT_EQ(g.status, MX_TEMPORARY);
        ASSERT_STREQ(g.code, "4.4.3");
        ASSERT_TRUE(strstr(g.reason, "timeout") != NULL);
        ASSERT_TRUE(now_usec() - t0 < 2000000ULL);
        printf("# %s\n", g.reason);

        /* the resolver freed under a running lookup: completed, temporary */
        MxGot h = {};
        ASSERT_OK(mx_lookup_start(w.r, "halyard.test", NULL, on_mx_got, &h, NULL));
        w.r = dns_resolver_free(w.r);
        ASSERT_EQ(h.calls, 1);
        ASSERT_EQ(h.status, MX_TEMPORARY);
        sd_event_unref(w.e);
}

TEST(mx_cancel) {
        Env v = env_new();
        MxGot a = {}, b = {};
        MxLookup *la = NULL;

        ASSERT_OK(mx_lookup_start(v.r, "equal.halyard.test", NULL, on_mx_got, &a, &la));
        ASSERT_OK(mx_lookup_start(v.r, "halyard.test", NULL, on_mx_got, &b, NULL));
        mx_lookup_cancel(la);
        mx_lookup_cancel(NULL);
        ASSERT_TRUE(run_until(v.e, &b.done, 15 * 1000000ULL));
        bool never = false;
        (void) run_until(v.e, &never, 300 * 1000);
        ASSERT_EQ(a.calls, 0);
        ASSERT_EQ(b.status, MX_OK);

        /* cancel in the middle: after the MX answer, with host lookups out */
        MxGot c = {};
        MxLookup *lc = NULL;
        ASSERT_OK(mx_lookup_start(v.r, "lamemx.halyard.test", NULL, on_mx_got, &c, &lc));
        uint64_t end = now_usec() + 5000000ULL;
        DnsStats st;
        do {
                ASSERT_OK(sd_event_run(v.e, 10000));
                dns_resolver_get_stats(v.r, &st);
        } while (st.outstanding != 2 && !c.done && now_usec() < end);
        if (!c.done) {
                mx_lookup_cancel(lc);
                dns_resolver_get_stats(v.r, &st);
                ASSERT_EQ(st.outstanding, 0);
                (void) run_until(v.e, &never, 300 * 1000);
                ASSERT_EQ(c.calls, 0);
        }
        env_done(&v);
}

int main(void) {
        return tap_run();
}
