/* SPDX-License-Identifier: MIT */
#pragma once

/* Counters for GetStatus: since start, and over the last minute and the last
 * hour. The windows are rings of buckets (60 one-second buckets, 60
 * one-minute buckets) stamped with the second or minute they count, so a
 * bucket left over from an earlier lap is recognised and skipped without a
 * timer sweeping them. The clock is passed in (seconds, monotonic) so the
 * arithmetic is testable. */

#include <stdint.h>

typedef enum SmtpdCount {
        COUNT_SESSIONS,
        COUNT_TLS_SESSIONS,
        COUNT_ACCEPTED,
        COUNT_AUTH_SUCCESS,
        COUNT_AUTH_FAILURE,
        COUNT_REJECT_FIRST, /* one counter per RejectReason from here */
} SmtpdCount;

#define SMTPD_COUNT_MAX 32

typedef struct SmtpdCounts {
        uint64_t v[SMTPD_COUNT_MAX];
} SmtpdCounts;

typedef struct SmtpdStatsRing {
        uint64_t stamp[60];      /* the second (or minute) + 1 a bucket counts; 0 unused */
        SmtpdCounts bucket[60];
} SmtpdStatsRing;

typedef struct SmtpdStats {
        SmtpdCounts total;
        SmtpdStatsRing seconds, minutes;
} SmtpdStats;

void smtpd_stats_add(SmtpdStats *st, uint64_t now_sec, unsigned what);
/* The sums over the last 60 seconds and over the last 60 minutes (the
 * current minute included, so "hour" may reach back 60 minutes less a
 * fraction). */
void smtpd_stats_last_minute(const SmtpdStats *st, uint64_t now_sec, SmtpdCounts *ret);
void smtpd_stats_last_hour(const SmtpdStats *st, uint64_t now_sec, SmtpdCounts *ret);
