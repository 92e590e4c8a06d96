/* SPDX-License-Identifier: MIT */
#pragma once

/* The policy's rate(namespace, key, count, interval) in process: Halon's
 * contract (count > 0 counts one event and says whether it was within count
 * per interval; an event over the limit is not counted; count 0 asks for the
 * number of events in the last interval). A sliding window approximated
 * from two fixed windows (the current one, and the previous one weighted
 * by how much of it still overlaps), so each key costs a few words whatever
 * its count, and a burst at a window edge cannot pass twice the limit. The
 * table holds at most max_entries keys; the least recently used goes first. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define SMTPD_RATE_KEY_MAX 1024

typedef struct SmtpdRate SmtpdRate;

int smtpd_rate_new(size_t max_entries, SmtpdRate **ret);
SmtpdRate *smtpd_rate_free(SmtpdRate *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(SmtpdRate *, smtpd_rate_free);

/* count > 0: returns 1 (counted, within the limit) or 0 (over it).
 * count == 0: returns 0 and *ret_events (may be NULL otherwise) holds the
 * events in the last interval (the estimate, rounded up). -EINVAL for interval 0 or a
 * key (namespace plus key) over SMTPD_RATE_KEY_MAX; -ENOMEM. */
int smtpd_rate_hit(SmtpdRate *r, const char *ns, const char *key, uint64_t count, uint64_t interval_usec,
                   uint64_t now_usec, uint64_t *ret_events);
size_t smtpd_rate_size(const SmtpdRate *r);
