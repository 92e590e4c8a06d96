/* SPDX-License-Identifier: MIT */
/* halyard-arcd's own pieces: the DNS answer cache (TTL, negative answers,
 * no temporary failures, bounded size, deep copies) and the signing worker
 * pool (work on threads, completion on the loop, cancel at free). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "arcd.h"
#include "tap.h"

#define SEC 1000000ULL

static DnsResult txt_result(const char *name, DnsStatus status, uint32_t ttl, const char *text, DnsRecord *rec) {
        DnsResult r = { .qname = name, .qtype = DNS_TYPE_TXT, .status = status, .ttl = ttl };
        if (text) {
                rec->type = DNS_TYPE_TXT;
                rec->txt.text = (char *) text;
                rec->txt.len = strlen(text);
                rec->txt.n_strings = 1;
                r.records = rec;
                r.n_records = 1;
        }
        return r;
}

TEST(cache_ttl) {
        DnsCache *c;
        DnsRecord rec;
        char text[] = "v=DKIM1; p=abc";
        ASSERT_OK(dns_cache_new(16, &c));
        DnsResult r = txt_result("Sel._domainkey.Example.ORG.", DNS_STATUS_OK, 60, text, &rec);
        ASSERT_OK(dns_cache_put(c, &r, 1000 * SEC));
        /* The caller's buffer may go: the cache keeps a copy. */
        memset(text, 'x', sizeof text - 1);
        const DnsResult *got = dns_cache_get(c, "sel._domainkey.example.org", DNS_TYPE_TXT, 1010 * SEC);
        ASSERT_TRUE(got);
        ASSERT_EQ(got->n_records, 1);
        ASSERT_STREQ(got->records[0].txt.text, "v=DKIM1; p=abc");
        ASSERT_TRUE(got->status == DNS_STATUS_OK);
        /* Another type is another entry. */
        ASSERT_TRUE(!dns_cache_get(c, "sel._domainkey.example.org", DNS_TYPE_A, 1010 * SEC));
        /* Expired after the TTL, and dropped. */
        ASSERT_TRUE(!dns_cache_get(c, "sel._domainkey.example.org", DNS_TYPE_TXT, 1060 * SEC));
        ASSERT_EQ(dns_cache_size(c), 0);
        dns_cache_free(c);
}

TEST(cache_negative_and_temporary) {
        DnsCache *c;
        ASSERT_OK(dns_cache_new(16, &c));
        DnsResult nx = txt_result("gone.example", DNS_STATUS_NXDOMAIN, 30, NULL, NULL);
        DnsResult fail = txt_result("broken.example", DNS_STATUS_SERVFAIL, 30, NULL, NULL);
        DnsResult timeout = txt_result("slow.example", DNS_STATUS_TIMEOUT, 30, NULL, NULL);
        DnsResult zero = txt_result("zero.example", DNS_STATUS_NODATA, 0, NULL, NULL);
        ASSERT_OK(dns_cache_put(c, &nx, 0));
        ASSERT_OK(dns_cache_put(c, &fail, 0));
        ASSERT_OK(dns_cache_put(c, &timeout, 0));
        ASSERT_OK(dns_cache_put(c, &zero, 0));
        const DnsResult *got = dns_cache_get(c, "gone.example", DNS_TYPE_TXT, 1);
        ASSERT_TRUE(got && got->status == DNS_STATUS_NXDOMAIN);
        ASSERT_TRUE(!dns_cache_get(c, "broken.example", DNS_TYPE_TXT, 1));
        ASSERT_TRUE(!dns_cache_get(c, "slow.example", DNS_TYPE_TXT, 1));
        ASSERT_TRUE(!dns_cache_get(c, "zero.example", DNS_TYPE_TXT, 1));
        ASSERT_EQ(dns_cache_size(c), 1);
        dns_cache_free(c);
}

TEST(cache_bounded) {
        DnsCache *c;
        char name[64];
        ASSERT_OK(dns_cache_new(8, &c));
        for (unsigned i = 0; i < 100; i++) {
                snprintf(name, sizeof name, "n%u.example", i);
                /* Later names live longer: the oldest-expiring go first. */
                DnsResult r = txt_result(name, DNS_STATUS_NODATA, 100 + i, NULL, NULL);
                ASSERT_OK(dns_cache_put(c, &r, 0));
                ASSERT_TRUE(dns_cache_size(c) <= 8);
        }
        ASSERT_EQ(dns_cache_size(c), 8);
        ASSERT_TRUE(dns_cache_get(c, "n99.example", DNS_TYPE_TXT, SEC));
        ASSERT_TRUE(!dns_cache_get(c, "n0.example", DNS_TYPE_TXT, SEC));
        /* Replacing a name does not grow the cache. */
        DnsResult again = txt_result("n99.example", DNS_STATUS_NXDOMAIN, 500, NULL, NULL);
        ASSERT_OK(dns_cache_put(c, &again, 0));
        ASSERT_EQ(dns_cache_size(c), 8);
        ASSERT_TRUE(dns_cache_get(c, "n99.example", DNS_TYPE_TXT, SEC)->status == DNS_STATUS_NXDOMAIN);
        dns_cache_free(c);
}

typedef struct Counter {
        pthread_t loop_thread;
        unsigned worked, done, canceled;
        bool wrong_thread;
        sd_event *e;
        unsigned expect;
} Counter;

static int work(void *userdata) {
        Counter *c = userdata;
        __atomic_add_fetch(&c->worked, 1, __ATOMIC_SEQ_CST);
        return 7;
}

static void done(int result, void *userdata) {
        Counter *c = userdata;
        if (!pthread_equal(pthread_self(), c->loop_thread))
                c->wrong_thread = true;
        if (result == -ECANCELED)
                c->canceled++;
        else if (result == 7)
                c->done++;
        if (c->e && c->done == c->expect)
                sd_event_exit(c->e, 0);
}

TEST(worker_pool) {
        sd_event *e;
        Worker *w;
        Counter c = { .loop_thread = pthread_self(), .expect = 50 };
        ASSERT_OK(sd_event_new(&e));
        c.e = e;
        ASSERT_OK(worker_new(e, 2, 64, &w));
        for (unsigned i = 0; i < 50; i++)
                ASSERT_OK(worker_submit(w, work, done, &c));
        ASSERT_OK(sd_event_loop(e));
        ASSERT_EQ(c.done, 50);
        ASSERT_FALSE(c.wrong_thread);
        /* Beyond max_pending: refused (a fresh loop: the first one has exited). */
        c.e = NULL;
        sd_event *e2;
        Worker *small;
        ASSERT_OK(sd_event_new(&e2));
        ASSERT_OK(worker_new(e2, 1, 2, &small));
        ASSERT_OK(worker_submit(small, work, done, &c));
        ASSERT_OK(worker_submit(small, work, done, &c));
        ASSERT_ERR(worker_submit(small, work, done, &c), -EBUSY);
        /* Freeing completes everything: done or canceled, on this thread. */
        worker_free(small);
        ASSERT_EQ(c.done + c.canceled, 52);
        ASSERT_FALSE(c.wrong_thread);
        worker_free(w);
        sd_event_unref(e2);
        sd_event_unref(e);
}

int main(void) {
        return tap_run();
}
