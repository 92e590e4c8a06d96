/* SPDX-License-Identifier: MIT */
/* A small cache of DNS answers in front of libunbound. libunbound caches
 * too, but its answers still cost a round trip through its thread and a
 * pipe; key records are asked for again and again (a 3-hop ARC chain needs
 * 4 key lookups per message, mostly the same few names), and GetStatus
 * reports the hit rate. Entries expire with the answer's TTL (capped); when
 * full, the entry closest to expiry goes. Temporary failures are never
 * cached. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "arcd.h"
#include "macro.h"

typedef struct CacheEntry {
        struct CacheEntry *next;
        char *key;              /* "TYPE/name" */
        uint64_t expires_usec;
        DnsResult result;       /* deep copy */
        char *qname, *canonical;
} CacheEntry;

#define CACHE_BUCKETS 1024U

struct DnsCache {
        CacheEntry *buckets[CACHE_BUCKETS];
        size_t n, max;
};

static unsigned hash(const char *s) {
        unsigned h = 5381;
        for (; *s; s++)
                h = h * 33 + (unsigned char) *s;
        return h % CACHE_BUCKETS;
}

static void entry_free(CacheEntry *e) {
        if (!e)
                return;
        for (size_t i = 0; i < e->result.n_records; i++)
                dns_record_done(&e->result.records[i]);
        free(e->result.records);
        free(e->qname);
        free(e->canonical);
        free(e->key);
        free(e);
}

int dns_cache_new(size_t max, DnsCache **ret) {
        DnsCache *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->max = max ? max : ARCD_CACHE_MAX;
        *ret = c;
        return 0;
}

DnsCache *dns_cache_free(DnsCache *c) {
        if (!c)
                return NULL;
        for (unsigned b = 0; b < CACHE_BUCKETS; b++)
                while (c->buckets[b]) {
                        CacheEntry *e = c->buckets[b];
                        c->buckets[b] = e->next;
                        entry_free(e);
                }
        free(c);
        return NULL;
}

size_t dns_cache_size(DnsCache *c) {
        return c ? c->n : 0;
}

static char *make_key(const char *name, uint16_t type) {
        size_t n = strlen(name);
        while (n > 1 && name[n - 1] == '.')
                n--;
        char *k = malloc(n + 8);
        if (!k)
                return NULL;
        int p = snprintf(k, 8, "%u/", type);
        for (size_t i = 0; i < n; i++)
                k[p + i] = name[i] >= 'A' && name[i] <= 'Z' ? (char) (name[i] + 32) : name[i];
        k[p + n] = 0;
        return k;
}

static void unlink_entry(DnsCache *c, unsigned b, CacheEntry *e) {
        for (CacheEntry **p = &c->buckets[b]; *p; p = &(*p)->next)
                if (*p == e) {
                        *p = e->next;
                        c->n--;
                        entry_free(e);
                        return;
                }
}

const DnsResult *dns_cache_get(DnsCache *c, const char *name, uint16_t type, uint64_t now_usec) {
        _cleanup_free_ char *k = make_key(name, type);
        if (!k)
                return NULL;
        unsigned b = hash(k);
        for (CacheEntry *e = c->buckets[b]; e; e = e->next)
                if (strcmp(e->key, k) == 0) {
                        if (e->expires_usec <= now_usec) {
                                unlink_entry(c, b, e);
                                return NULL;
                        }
                        return &e->result;
                }
        return NULL;
}

static int record_copy(const DnsRecord *src, DnsRecord *dst) {
        *dst = *src;
        switch (src->type) {
        case DNS_TYPE_TXT:
                dst->txt.text = malloc(src->txt.len + 1);
                if (!dst->txt.text)
                        return -ENOMEM;
                memcpy(dst->txt.text, src->txt.text, src->txt.len);
                dst->txt.text[src->txt.len] = 0;
                return 0;
        case DNS_TYPE_MX:
                dst->mx.exchange = strdup(src->mx.exchange);
                return dst->mx.exchange ? 0 : -ENOMEM;
        case DNS_TYPE_PTR:
                dst->ptr.name = strdup(src->ptr.name);
                return dst->ptr.name ? 0 : -ENOMEM;
        case DNS_TYPE_CNAME:
                dst->cname.target = strdup(src->cname.target);
                return dst->cname.target ? 0 : -ENOMEM;
        case DNS_TYPE_TLSA:
                dst->tlsa.data = malloc(MAX(src->tlsa.len, 1U));
                if (!dst->tlsa.data)
                        return -ENOMEM;
                memcpy(dst->tlsa.data, src->tlsa.data, src->tlsa.len);
                return 0;
        case DNS_TYPE_A:
        case DNS_TYPE_AAAA:
                return 0;
        default:
                return -EOPNOTSUPP;
        }
}

int dns_cache_put(DnsCache *c, const DnsResult *r, uint64_t now_usec) {
        if (r->status != DNS_STATUS_OK && r->status != DNS_STATUS_NODATA && r->status != DNS_STATUS_NXDOMAIN)
                return 0;
        if (r->ttl == 0 || !r->qname)
                return 0;
        _cleanup_free_ char *k = make_key(r->qname, r->qtype);
        if (!k)
                return -ENOMEM;
        unsigned b = hash(k);
        for (CacheEntry *e = c->buckets[b]; e; e = e->next)
                if (strcmp(e->key, k) == 0) {
                        unlink_entry(c, b, e);
                        break;
                }
        if (c->n >= c->max) {
                /* Evict the entry closest to expiry (expired ones first). */
                CacheEntry *victim = NULL;
                unsigned vb = 0;
                for (unsigned i = 0; i < CACHE_BUCKETS; i++)
                        for (CacheEntry *e = c->buckets[i]; e; e = e->next)
                                if (!victim || e->expires_usec < victim->expires_usec) {
                                        victim = e;
                                        vb = i;
                                }
                if (victim)
                        unlink_entry(c, vb, victim);
        }
        CacheEntry *e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        e->result = *r;
        e->result.records = NULL;
        e->result.n_records = 0;
        e->result.why_bogus = NULL;
        e->qname = strdup(r->qname);
        e->canonical = r->canonical ? strdup(r->canonical) : NULL;
        e->result.qname = e->qname;
        e->result.canonical = e->canonical;
        if (!e->qname || (r->canonical && !e->canonical)) {
                entry_free(e);
                return -ENOMEM;
        }
        if (r->n_records > 0) {
                e->result.records = calloc(r->n_records, sizeof(DnsRecord));
                if (!e->result.records) {
                        entry_free(e);
                        return -ENOMEM;
                }
                for (size_t i = 0; i < r->n_records; i++) {
                        int q = record_copy(&r->records[i], &e->result.records[e->result.n_records]);
                        if (q < 0) {
                                entry_free(e);
                                return q == -EOPNOTSUPP ? 0 : q;
                        }
                        e->result.n_records++;
                }
        }
        uint32_t ttl = MIN(r->ttl, ARCD_CACHE_TTL_MAX);
        e->expires_usec = now_usec + (uint64_t) ttl * 1000000ULL;
        e->key = TAKE_PTR(k);
        e->next = c->buckets[b];
        c->buckets[b] = e;
        c->n++;
        return 0;
}
