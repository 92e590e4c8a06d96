/* SPDX-License-Identifier: MIT */
#pragma once

/* rate() shared by several smtpd hosts: the same sliding-window estimate as
 * smtpd-rate.h, kept in Redis (hiredis, asynchronous on sd-event) and
 * checked-and-counted atomically by a Lua script, so two hosts cannot both
 * let the last allowed event through. Windows are cut on the wall clock
 * (hosts' monotonic clocks differ); keys expire two intervals after their
 * window. The connection is made on first use and again after a failure;
 * a request that fails (no server, broken connection) reports an error and
 * the policy sees none, as rate() promises. */

#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct SmtpdRedis SmtpdRedis;
typedef struct SmtpdRedisRequest SmtpdRedisRequest;

/* result: 1 counted (within the limit), 0 over the limit (or, for count 0,
 * the estimate in events), < 0 an error. */
typedef void (*SmtpdRedisRateDone)(int result, uint64_t events, void *userdata);

/* address: "HOST:PORT" (IPv4/IPv6 literal or name as hiredis resolves it;
 * use an address, resolving would block) or "unix:/path". */
int smtpd_redis_new(sd_event *e, const char *address, SmtpdRedis **ret);
SmtpdRedis *smtpd_redis_free(SmtpdRedis *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(SmtpdRedis *, smtpd_redis_free);

/* Starts the check; done runs later (never from within this call) unless
 * the request is cancelled first. now_usec: CLOCK_REALTIME. */
int smtpd_redis_rate(SmtpdRedis *r, const char *ns, const char *key, uint64_t count, uint64_t interval_usec,
                     uint64_t now_usec, SmtpdRedisRateDone done, void *userdata, SmtpdRedisRequest **ret);
void smtpd_redis_cancel(SmtpdRedisRequest *req);
