/* SPDX-License-Identifier: MIT */
/* The GetStatus windows: what counts in the last minute and the last hour as
 * time moves on, including after long idle gaps that lap the rings. */
#include "smtpd-stats.h"
#include "tap.h"

static uint64_t minute_of(const SmtpdStats *st, uint64_t now, unsigned what) {
        SmtpdCounts c;
        smtpd_stats_last_minute(st, now, &c);
        return c.v[what];
}

static uint64_t hour_of(const SmtpdStats *st, uint64_t now, unsigned what) {
        SmtpdCounts c;
        smtpd_stats_last_hour(st, now, &c);
        return c.v[what];
}

TEST(counts_within_windows) {
        SmtpdStats st = {};
        uint64_t t0 = 1000000;
        smtpd_stats_add(&st, t0, COUNT_ACCEPTED);
        smtpd_stats_add(&st, t0, COUNT_ACCEPTED);
        smtpd_stats_add(&st, t0 + 30, COUNT_SESSIONS);
        ASSERT_EQ(minute_of(&st, t0 + 30, COUNT_ACCEPTED), 2);
        ASSERT_EQ(minute_of(&st, t0 + 59, COUNT_ACCEPTED), 2);
        /* 60 s later the first second has left the minute, not the hour */
        ASSERT_EQ(minute_of(&st, t0 + 60, COUNT_ACCEPTED), 0);
        ASSERT_EQ(minute_of(&st, t0 + 60, COUNT_SESSIONS), 1);
        ASSERT_EQ(hour_of(&st, t0 + 60, COUNT_ACCEPTED), 2);
        ASSERT_EQ(st.total.v[COUNT_ACCEPTED], 2);
}

TEST(hour_expires) {
        SmtpdStats st = {};
        uint64_t t0 = 7200; /* minute 120 */
        smtpd_stats_add(&st, t0, COUNT_TLS_SESSIONS);
        ASSERT_EQ(hour_of(&st, t0 + 59 * 60, COUNT_TLS_SESSIONS), 1);
        ASSERT_EQ(hour_of(&st, t0 + 60 * 60, COUNT_TLS_SESSIONS), 0);
        ASSERT_EQ(st.total.v[COUNT_TLS_SESSIONS], 1);
}

TEST(lapped_bucket_is_reset) {
        SmtpdStats st = {};
        /* Same ring slot (second 5 and second 65): the old count must not
         * leak into the new one. */
        smtpd_stats_add(&st, 5, COUNT_ACCEPTED);
        smtpd_stats_add(&st, 5, COUNT_ACCEPTED);
        smtpd_stats_add(&st, 65, COUNT_ACCEPTED);
        ASSERT_EQ(minute_of(&st, 65, COUNT_ACCEPTED), 1);
        ASSERT_EQ(hour_of(&st, 65, COUNT_ACCEPTED), 3);
        /* A long idle gap: nothing counts any more. */
        ASSERT_EQ(minute_of(&st, 100000, COUNT_ACCEPTED), 0);
        ASSERT_EQ(hour_of(&st, 100000, COUNT_ACCEPTED), 0);
        ASSERT_EQ(st.total.v[COUNT_ACCEPTED], 3);
}

TEST(time_zero_and_out_of_range) {
        SmtpdStats st = {};
        smtpd_stats_add(&st, 0, COUNT_SESSIONS);
        ASSERT_EQ(minute_of(&st, 0, COUNT_SESSIONS), 1);
        ASSERT_EQ(hour_of(&st, 0, COUNT_SESSIONS), 1);
        smtpd_stats_add(&st, 0, SMTPD_COUNT_MAX); /* ignored */
        ASSERT_EQ(st.total.v[COUNT_SESSIONS], 1);
}

int main(void) {
        return tap_run();
}
