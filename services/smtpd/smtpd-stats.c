/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "smtpd-stats.h"

static void ring_add(SmtpdStatsRing *r, uint64_t slot, unsigned what) {
        unsigned i = (unsigned) (slot % 60);
        if (r->stamp[i] != slot + 1) {
                r->stamp[i] = slot + 1;
                memset(&r->bucket[i], 0, sizeof r->bucket[i]);
        }
        r->bucket[i].v[what]++;
}

static void ring_sum(const SmtpdStatsRing *r, uint64_t slot, SmtpdCounts *ret) {
        memset(ret, 0, sizeof *ret);
        for (unsigned i = 0; i < 60; i++) {
                /* stamp - 1 is the slot counted; only the 60 up to now count. */
                if (r->stamp[i] == 0 || r->stamp[i] > slot + 1 || r->stamp[i] + 60 <= slot + 1)
                        continue;
                for (unsigned k = 0; k < SMTPD_COUNT_MAX; k++)
                        ret->v[k] += r->bucket[i].v[k];
        }
}

void smtpd_stats_add(SmtpdStats *st, uint64_t now_sec, unsigned what) {
        if (what >= SMTPD_COUNT_MAX)
                return;
        st->total.v[what]++;
        ring_add(&st->seconds, now_sec, what);
        ring_add(&st->minutes, now_sec / 60, what);
}

void smtpd_stats_last_minute(const SmtpdStats *st, uint64_t now_sec, SmtpdCounts *ret) {
        ring_sum(&st->seconds, now_sec, ret);
}

void smtpd_stats_last_hour(const SmtpdStats *st, uint64_t now_sec, SmtpdCounts *ret) {
        ring_sum(&st->minutes, now_sec / 60, ret);
}
