/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "log.h"
#include "smtpd-rate.h"
#include "smtpd-redis.h"

/* KEYS[1] the current window, KEYS[2] the previous one; ARGV: count, the
 * share of the previous window still inside the interval (0..1), the
 * expiry in ms. The estimate and the limit are the in-process ones
 * (smtpd-rate.c), rounded up so that it errs towards refusing. */
static const char rate_script[] =
        "local cur = tonumber(redis.call('GET', KEYS[1]) or '0') "
        "local prev = tonumber(redis.call('GET', KEYS[2]) or '0') "
        "local est = cur + math.ceil(prev * tonumber(ARGV[2])) "
        "local count = tonumber(ARGV[1]) "
        "if count == 0 then return {0, est} end "
        "if est >= count then return {0, est} end "
        "redis.call('INCR', KEYS[1]) "
        "redis.call('PEXPIRE', KEYS[1], ARGV[3]) "
        "return {1, est + 1}";

struct SmtpdRedis {
        sd_event *event;
        char *host;             /* NULL for a unix socket */
        char *path;
        int port;
        redisAsyncContext *ac;
        sd_event_source *io;
        bool want_read, want_write;
};

struct SmtpdRedisRequest {
        SmtpdRedisRateDone done;
        void *userdata;
        bool canceled;
};

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        SmtpdRedis *r = userdata;
        /* Either call may end in a disconnect that frees the context. */
        if (r->ac && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                redisAsyncHandleRead(r->ac);
        if (r->ac && (revents & EPOLLOUT))
                redisAsyncHandleWrite(r->ac);
        return 0;
}

static void io_update(SmtpdRedis *r) {
        uint32_t ev = (r->want_read ? EPOLLIN : 0) | (r->want_write ? EPOLLOUT : 0);
        if (!r->io) {
                if (!r->ac || sd_event_add_io(r->event, &r->io, r->ac->c.fd, ev, on_io, r) < 0)
                        return;
        } else
                (void) sd_event_source_set_io_events(r->io, ev);
        (void) sd_event_source_set_enabled(r->io, ev ? SD_EVENT_ON : SD_EVENT_OFF);
}

static void ev_add_read(void *p) {
        SmtpdRedis *r = p;
        r->want_read = true;
        io_update(r);
}

static void ev_del_read(void *p) {
        SmtpdRedis *r = p;
        r->want_read = false;
        io_update(r);
}

static void ev_add_write(void *p) {
        SmtpdRedis *r = p;
        r->want_write = true;
        io_update(r);
}

static void ev_del_write(void *p) {
        SmtpdRedis *r = p;
        r->want_write = false;
        io_update(r);
}

static void ev_cleanup(void *p) {
        SmtpdRedis *r = p;
        r->io = sd_event_source_disable_unref(r->io);
        r->want_read = r->want_write = false;
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
        SmtpdRedis *r = ac->ev.data;
        if (status != REDIS_OK)
                log_warning("Redis for rate(): connection lost: %s", ac->errstr);
        r->ac = NULL; /* hiredis frees it */
}

static void on_connect(const redisAsyncContext *ac, int status) {
        SmtpdRedis *r = ac->ev.data;
        if (status != REDIS_OK) {
                log_warning("Redis for rate(): cannot connect: %s", ac->errstr);
                r->ac = NULL; /* freed after this callback */
        }
}

static int ensure_connected(SmtpdRedis *r) {
        if (r->ac)
                return 0;
        redisAsyncContext *ac = r->host ? redisAsyncConnect(r->host, r->port) : redisAsyncConnectUnix(r->path);
        if (!ac)
                return -ENOMEM;
        if (ac->err) {
                log_warning("Redis for rate(): %s", ac->errstr);
                redisAsyncFree(ac);
                return -ECONNREFUSED;
        }
        r->ac = ac;
        ac->ev.data = r;
        ac->ev.addRead = ev_add_read;
        ac->ev.delRead = ev_del_read;
        ac->ev.addWrite = ev_add_write;
        ac->ev.delWrite = ev_del_write;
        ac->ev.cleanup = ev_cleanup;
        (void) redisAsyncSetConnectCallback(ac, on_connect);
        (void) redisAsyncSetDisconnectCallback(ac, on_disconnect);
        /* hiredis asked for write (the connect) before the hooks existed. */
        r->want_write = true;
        io_update(r);
        return 0;
}

int smtpd_redis_new(sd_event *e, const char *address, SmtpdRedis **ret) {
        SmtpdRedis *r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->event = sd_event_ref(e);
        if (strncmp(address, "unix:", 5) == 0)
                r->path = strdup(address + 5);
        else {
                const char *colon = strrchr(address, ':');
                char *end;
                long port = colon ? strtol(colon + 1, &end, 10) : 0;
                if (!colon || *end || port <= 0 || port > 65535) {
                        smtpd_redis_free(r);
                        return -EINVAL;
                }
                const char *h = address;
                size_t hl = (size_t) (colon - address);
                if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
                        h++;
                        hl -= 2;
                }
                r->host = strndup(h, hl);
                r->port = (int) port;
        }
        if (!r->host && !r->path) {
                smtpd_redis_free(r);
                return -ENOMEM;
        }
        *ret = r;
        return 0;
}

SmtpdRedis *smtpd_redis_free(SmtpdRedis *r) {
        if (!r)
                return NULL;
        if (r->ac) {
                redisAsyncContext *ac = TAKE_PTR(r->ac);
                redisAsyncFree(ac); /* pending callbacks run with no reply */
        }
        r->io = sd_event_source_disable_unref(r->io);
        sd_event_unref(r->event);
        free(r->host);
        free(r->path);
        free(r);
        return NULL;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
        SmtpdRedisRequest *req = privdata;
        redisReply *rep = reply;
        int result = -EIO;
        uint64_t events = 0;

        if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 && rep->element[0]->type == REDIS_REPLY_INTEGER &&
            rep->element[1]->type == REDIS_REPLY_INTEGER && rep->element[1]->integer >= 0) {
                result = rep->element[0]->integer ? 1 : 0;
                events = (uint64_t) rep->element[1]->integer;
        } else if (rep && rep->type == REDIS_REPLY_ERROR)
                log_warning("Redis for rate(): %s", rep->str);
        if (!req->canceled)
                req->done(result, events, req->userdata);
        free(req);
}

int smtpd_redis_rate(SmtpdRedis *r, const char *ns, const char *key, uint64_t count, uint64_t interval_usec,
                     uint64_t now_usec, SmtpdRedisRateDone done, void *userdata, SmtpdRedisRequest **ret) {
        if (!r || !ns || !key || interval_usec < 1000 || strlen(ns) + strlen(key) > SMTPD_RATE_KEY_MAX)
                return -EINVAL;
        int k = ensure_connected(r);
        if (k < 0)
                return k;
        uint64_t window = now_usec / interval_usec;
        double share = (double) (interval_usec - now_usec % interval_usec) / (double) interval_usec;
        char cur[SMTPD_RATE_KEY_MAX + 100], prev[SMTPD_RATE_KEY_MAX + 100], c[32], s[32], ttl[32];
        /* Length-prefixed so that no namespace/key pair can spell another's. */
        snprintf(cur, sizeof cur, "halyard:rate:%zu:%s:%s:%llu:%llu", strlen(ns), ns, key,
                 (unsigned long long) interval_usec, (unsigned long long) window);
        snprintf(prev, sizeof prev, "halyard:rate:%zu:%s:%s:%llu:%llu", strlen(ns), ns, key,
                 (unsigned long long) interval_usec, (unsigned long long) (window - 1));
        snprintf(c, sizeof c, "%llu", (unsigned long long) count);
        snprintf(s, sizeof s, "%.6f", share);
        snprintf(ttl, sizeof ttl, "%llu", (unsigned long long) (2 * interval_usec / 1000 + 1000));

        SmtpdRedisRequest *req = calloc(1, sizeof *req);
        if (!req)
                return -ENOMEM;
        req->done = done;
        req->userdata = userdata;
        const char *argv[] = { "EVAL", rate_script, "2", cur, prev, c, s, ttl };
        if (redisAsyncCommandArgv(r->ac, on_reply, req, (int) ELEMENTSOF(argv), argv, NULL) != REDIS_OK) {
                free(req);
                return -ENOTCONN;
        }
        *ret = req;
        return 0;
}

void smtpd_redis_cancel(SmtpdRedisRequest *req) {
        /* hiredis keeps its callback; it frees the request when the reply
         * (or the disconnect) comes. */
        if (req)
                req->canceled = true;
}
