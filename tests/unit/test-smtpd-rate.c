/* SPDX-License-Identifier: MIT */
/* rate(): Halon's contract, the sliding window across window edges, keys
 * kept apart by namespace and interval, and the table's bound. */
#include "smtpd-rate.h"
#include "tap.h"

#define S 1000000ULL

TEST(limit_and_count) {
        _cleanup_(smtpd_rate_freep) SmtpdRate *r = NULL;
        uint64_t n = 99;
        ASSERT_OK(smtpd_rate_new(0, &r));
        ASSERT_EQ(smtpd_rate_hit(r, "conn", "192.0.2.1", 0, 60 * S, 1000 * S, &n), 0);
        ASSERT_EQ(n, 0);
        for (int i = 0; i < 3; i++)
                ASSERT_EQ(smtpd_rate_hit(r, "conn", "192.0.2.1", 3, 60 * S, 1000 * S + i, NULL), 1);
        /* The fourth is over the limit and not counted. */
        ASSERT_EQ(smtpd_rate_hit(r, "conn", "192.0.2.1", 3, 60 * S, 1001 * S, NULL), 0);
        ASSERT_EQ(smtpd_rate_hit(r, "conn", "192.0.2.1", 0, 60 * S, 1001 * S, &n), 0);
        ASSERT_EQ(n, 3);
        /* Other keys, namespaces and intervals are separate counters. */
        ASSERT_EQ(smtpd_rate_hit(r, "conn", "192.0.2.2", 3, 60 * S, 1001 * S, NULL), 1);
        ASSERT_EQ(smtpd_rate_hit(r, "auth", "192.0.2.1", 3, 60 * S, 1001 * S, NULL), 1);
        ASSERT_EQ(smtpd_rate_hit(r, "conn", "192.0.2.1", 3, 3600 * S, 1001 * S, NULL), 1);
        ASSERT_EQ(smtpd_rate_size(r), 4);
}

TEST(sliding_window) {
        _cleanup_(smtpd_rate_freep) SmtpdRate *r = NULL;
        uint64_t n;
        ASSERT_OK(smtpd_rate_new(0, &r));
        /* 10 events at the very end of window 10 (t = 10 min - 1 s). */
        for (int i = 0; i < 10; i++)
                ASSERT_EQ(smtpd_rate_hit(r, "ns", "k", 10, 60 * S, 659 * S, NULL), 1);
        /* Just past the edge almost all of them still count: no burst of 2x. */
        ASSERT_EQ(smtpd_rate_hit(r, "ns", "k", 10, 60 * S, 661 * S, NULL), 0);
        /* Half way through the next window about half count. */
        ASSERT_EQ(smtpd_rate_hit(r, "ns", "k", 0, 60 * S, 690 * S, &n), 0);
        ASSERT_EQ(n, 5);
        ASSERT_EQ(smtpd_rate_hit(r, "ns", "k", 10, 60 * S, 690 * S, NULL), 1);
        /* Two windows later nothing is left. */
        ASSERT_EQ(smtpd_rate_hit(r, "ns", "k", 0, 60 * S, 800 * S, &n), 0);
        ASSERT_EQ(n, 0);
}

TEST(bounded_table) {
        _cleanup_(smtpd_rate_freep) SmtpdRate *r = NULL;
        char key[32];
        uint64_t n;
        ASSERT_OK(smtpd_rate_new(100, &r));
        for (int i = 0; i < 1000; i++) {
                snprintf(key, sizeof key, "k%d", i);
                ASSERT_EQ(smtpd_rate_hit(r, "ns", key, 5, 60 * S, 10 * S, NULL), 1);
        }
        ASSERT_EQ(smtpd_rate_size(r), 100);
        /* The oldest were dropped, the newest kept. */
        ASSERT_EQ(smtpd_rate_hit(r, "ns", "k0", 0, 60 * S, 10 * S, &n), 0);
        ASSERT_EQ(n, 0);
        ASSERT_EQ(smtpd_rate_hit(r, "ns", "k999", 0, 60 * S, 10 * S, &n), 0);
        ASSERT_EQ(n, 1);
}

TEST(bad_arguments) {
        _cleanup_(smtpd_rate_freep) SmtpdRate *r = NULL;
        char big[SMTPD_RATE_KEY_MAX + 2];
        ASSERT_OK(smtpd_rate_new(0, &r));
        memset(big, 'x', sizeof big - 1);
        big[sizeof big - 1] = 0;
        ASSERT_ERR(smtpd_rate_hit(r, "ns", "k", 1, 0, 10 * S, NULL), -EINVAL);
        ASSERT_ERR(smtpd_rate_hit(r, "ns", big, 1, 60 * S, 10 * S, NULL), -EINVAL);
}

int main(void) {
        return tap_run();
}
