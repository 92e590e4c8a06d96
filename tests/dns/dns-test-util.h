/* SPDX-License-Identifier: MIT */
#pragma once

/* Helpers shared by the DNS unit tests (test-dns.c, test-queued-mx.c): a
 * resolver pointed at the fixture (tests/dns/fixture.sh run exports
 * HALYARD_DNS_*), and running the loop until a flag is set, bounded. */

#include <stdlib.h>
#include <systemd/sd-event.h>
#include <time.h>

#include "dns.h"
#include "tap.h"

static inline uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

static inline const char *fixture_env(const char *name) {
        const char *v = getenv(name);
        if (!v || !*v)
                TAP_FAIL("%s is not set: run through tests/dns/fixture.sh run (meson test does)", name);
        return v;
}

/* A resolver forwarding to the fixture's validating unbound, anchored at
 * the test zone's DS. timeout_usec/max_outstanding 0 = defaults. */
static inline DnsResolver *fixture_resolver(sd_event *e, uint64_t timeout_usec, unsigned max_outstanding) {
        const char *fwd[] = { fixture_env("HALYARD_DNS_FORWARDER"), NULL };
        const char *zones[] = { fixture_env("HALYARD_DNS_ZONE"), NULL };
        DnsConfig cfg = {
                .forwarders = fwd,
                .trust_anchor_file = fixture_env("HALYARD_DNS_TA"),
                .transparent_zones = zones,
                .timeout_usec = timeout_usec,
                .max_outstanding = max_outstanding,
        };
        DnsResolver *r = NULL;
        int k = dns_resolver_new(e, &cfg, &r);
        if (k < 0)
                TAP_FAIL("dns_resolver_new: %d", k);
        return r;
}

/* Runs e until *flag becomes true or timeout_usec passes; returns the flag. */
static inline bool run_until(sd_event *e, const volatile bool *flag, uint64_t timeout_usec) {
        uint64_t end = now_usec() + timeout_usec;
        while (!*flag) {
                uint64_t n = now_usec();
                if (n >= end)
                        break;
                int k = sd_event_run(e, end - n);
                if (k < 0)
                        TAP_FAIL("sd_event_run: %d", k);
        }
        return *flag;
}
