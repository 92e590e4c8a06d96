/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd-rate.h"

typedef struct RateEntry RateEntry;
struct RateEntry {
        RateEntry *hash_next;
        RateEntry *lru_prev, *lru_next;
        uint64_t hash;
        uint64_t interval;
        uint64_t window;       /* index of the current window: now / interval */
        uint64_t current, previous;
        size_t key_len;
        char key[];            /* namespace NUL key */
};

struct SmtpdRate {
        RateEntry **buckets;
        size_t n_buckets;      /* a power of two */
        size_t n_entries, max_entries;
        RateEntry *lru_head, *lru_tail; /* head: most recently used */
};

int smtpd_rate_new(size_t max_entries, SmtpdRate **ret) {
        SmtpdRate *r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->max_entries = max_entries ?: 100000;
        r->n_buckets = 1024;
        while (r->n_buckets < r->max_entries && r->n_buckets < (1u << 20))
                r->n_buckets <<= 1;
        r->buckets = calloc(r->n_buckets, sizeof *r->buckets);
        if (!r->buckets) {
                free(r);
                return -ENOMEM;
        }
        *ret = r;
        return 0;
}

SmtpdRate *smtpd_rate_free(SmtpdRate *r) {
        if (!r)
                return NULL;
        for (RateEntry *e = r->lru_head, *next; e; e = next) {
                next = e->lru_next;
                free(e);
        }
        free(r->buckets);
        free(r);
        return NULL;
}

size_t smtpd_rate_size(const SmtpdRate *r) {
        return r->n_entries;
}

/* FNV-1a */
static uint64_t hash_bytes(const char *p, size_t n) {
        uint64_t h = 0xcbf29ce484222325ULL;
        for (size_t i = 0; i < n; i++) {
                h ^= (unsigned char) p[i];
                h *= 0x100000001b3ULL;
        }
        return h;
}

static void lru_unlink(SmtpdRate *r, RateEntry *e) {
        if (e->lru_prev)
                e->lru_prev->lru_next = e->lru_next;
        else
                r->lru_head = e->lru_next;
        if (e->lru_next)
                e->lru_next->lru_prev = e->lru_prev;
        else
                r->lru_tail = e->lru_prev;
        e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(SmtpdRate *r, RateEntry *e) {
        e->lru_next = r->lru_head;
        if (r->lru_head)
                r->lru_head->lru_prev = e;
        r->lru_head = e;
        if (!r->lru_tail)
                r->lru_tail = e;
}

static void entry_remove(SmtpdRate *r, RateEntry *e) {
        RateEntry **p = &r->buckets[e->hash & (r->n_buckets - 1)];
        while (*p != e)
                p = &(*p)->hash_next;
        *p = e->hash_next;
        lru_unlink(r, e);
        r->n_entries--;
        free(e);
}

/* Moves the windows on to now's. */
static void entry_advance(RateEntry *e, uint64_t window) {
        if (window == e->window)
                return;
        e->previous = window == e->window + 1 ? e->current : 0;
        e->current = 0;
        e->window = window;
}

/* The events in the last interval: the current window's, plus the share of
 * the previous window that the sliding interval still covers. */
static uint64_t entry_estimate(const RateEntry *e, uint64_t now) {
        uint64_t into = now % e->interval;
        long double share = (long double) (e->interval - into) / (long double) e->interval;
        /* Rounded up: the estimate errs towards refusing. */
        return e->current + (uint64_t) ceill((long double) e->previous * share);
}

int smtpd_rate_hit(SmtpdRate *r, const char *ns, const char *key, uint64_t count, uint64_t interval_usec,
                   uint64_t now_usec, uint64_t *ret_events) {
        if (!r || !ns || !key || interval_usec == 0)
                return -EINVAL;
        size_t nl = strlen(ns), kl = strlen(key), len = nl + 1 + kl;
        if (len > SMTPD_RATE_KEY_MAX)
                return -EINVAL;
        char buf[SMTPD_RATE_KEY_MAX + 1];
        memcpy(buf, ns, nl);
        buf[nl] = 0;
        memcpy(buf + nl + 1, key, kl);
        /* The interval is part of the key: the same name limited per minute
         * and per hour is two counters. */
        uint64_t h = hash_bytes(buf, len) ^ (interval_usec * 0x9e3779b97f4a7c15ULL);

        RateEntry *e = r->buckets[h & (r->n_buckets - 1)];
        while (e && !(e->hash == h && e->interval == interval_usec && e->key_len == len && memcmp(e->key, buf, len) == 0))
                e = e->hash_next;
        uint64_t window = now_usec / interval_usec;
        if (!e) {
                if (count == 0) {
                        if (ret_events)
                                *ret_events = 0;
                        return 0;
                }
                if (r->n_entries >= r->max_entries)
                        entry_remove(r, r->lru_tail);
                e = calloc(1, sizeof *e + len);
                if (!e)
                        return -ENOMEM;
                memcpy(e->key, buf, len);
                e->key_len = len;
                e->hash = h;
                e->interval = interval_usec;
                e->window = window;
                RateEntry **b = &r->buckets[h & (r->n_buckets - 1)];
                e->hash_next = *b;
                *b = e;
                r->n_entries++;
        } else
                lru_unlink(r, e);
        lru_push_front(r, e);
        entry_advance(e, window);

        uint64_t events = entry_estimate(e, now_usec);
        if (count == 0) {
                if (ret_events)
                        *ret_events = events;
                return 0;
        }
        if (events >= count)
                return 0;
        e->current++;
        return 1;
}
