/* SPDX-License-Identifier: MIT */
/* The in-process cache behind `cache [...] f(...)`: one hash table of
 * entries, grouped into buckets per (namespace, function) that carry the
 * size limit, LRU order and the hit/miss/evict counters operators see.
 *
 * An entry is found by a keyed SipHash-2-4 digest (its 128-bit output)
 * of namespace, function and a canonical encoding of the selected arguments
 * (equal exactly when their JSON would be), hashed as they are walked: no
 * key text is built, so a cached call costs no allocation, and the
 * arguments themselves are not kept, so a token or address passed to a
 * cached lookup does not stay in memory in clear text. The keys are random
 * per process, so colliding entries cannot be chosen from outside. */

#include <endian.h>
#include <math.h>
#include <stdio.h>
#include <sys/random.h>

#include "policy-internal.h"

/* Whatever the scripts ask for, the whole cache stays below this. */
#define CACHE_ENTRIES_MAX 1000000U

typedef struct Bucket Bucket;

typedef struct Entry {
        uint64_t hash;          /* first half of the digest: also the table index */
        uint64_t hash2;         /* second half */
        PolicyValue *value;
        uint64_t expires;
        uint64_t generation;
        struct Entry *hnext;
        struct Entry *prev, *next; /* bucket LRU list, most recent first */
        Bucket *bucket;
} Entry;

struct Bucket {
        char *namespace, *function;
        size_t n;
        unsigned max;
        uint64_t hits, misses, evicts;
        Entry *head, *tail;
        Bucket *next;
};

struct PolicyCache {
        uint8_t sipkey[16];
        Entry **table;
        size_t cap, n;
        Bucket *buckets;
};

int policy_cache_new(PolicyCache **ret) {
        PolicyCache *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        if (getrandom(c->sipkey, sizeof c->sipkey, 0) != (ssize_t) sizeof c->sipkey) {
                free(c);
                return -EIO;
        }
        c->cap = 256;
        c->table = calloc(c->cap, sizeof *c->table);
        if (!c->table) {
                free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

static void entry_free(Entry *e) {
        value_unref(e->value);
        free(e);
}

static void entry_unlink(PolicyCache *c, Entry *e) {
        Entry **pp = &c->table[e->hash & (c->cap - 1)];
        while (*pp != e)
                pp = &(*pp)->hnext;
        *pp = e->hnext;
        Bucket *b = e->bucket;
        if (e->prev)
                e->prev->next = e->next;
        else
                b->head = e->next;
        if (e->next)
                e->next->prev = e->prev;
        else
                b->tail = e->prev;
        b->n--;
        c->n--;
        entry_free(e);
}

void policy_cache_clear(PolicyCache *c, const char *namespace) {
        for (Bucket *b = c->buckets; b; b = b->next)
                if (!namespace || strcmp(b->namespace, namespace) == 0)
                        while (b->head)
                                entry_unlink(c, b->head);
}

PolicyCache *policy_cache_free(PolicyCache *c) {
        if (!c)
                return NULL;
        policy_cache_clear(c, NULL);
        while (c->buckets) {
                Bucket *b = c->buckets;
                c->buckets = b->next;
                free(b->namespace);
                free(b->function);
                free(b);
        }
        free(c->table);
        free(c);
        return NULL;
}

static Bucket *bucket_get(PolicyCache *c, const char *namespace, const char *function, bool create) {
        for (Bucket *b = c->buckets; b; b = b->next)
                if (strcmp(b->namespace, namespace) == 0 && strcmp(b->function, function) == 0)
                        return b;
        if (!create)
                return NULL;
        Bucket *b = calloc(1, sizeof *b);
        if (!b)
                return NULL;
        b->namespace = strdup(namespace);
        b->function = strdup(function);
        if (!b->namespace || !b->function) {
                free(b->namespace);
                free(b->function);
                free(b);
                return NULL;
        }
        b->max = 1024;
        b->next = c->buckets;
        c->buckets = b;
        return b;
}

#define ROTL(x, b) (uint64_t) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND(v0, v1, v2, v3)                                                        \
        do {                                                                            \
                v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);               \
                v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                  \
                v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                  \
                v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);               \
        } while (0)

static uint64_t load64(const uint8_t *p) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return le64toh(v);
}

/* SipHash-2-4 with its 128-bit output, fed piece by piece: the pieces
 * collect in buf and are compressed 8 bytes at a time when it fills, which
 * is the same as hashing the concatenation. One pass gives both halves of
 * the entry's digest. */
typedef struct Sip2 {
        uint64_t v0, v1, v2, v3;
        uint8_t buf[64];
        size_t fill;            /* bytes in buf */
        uint64_t total;         /* bytes compressed so far */
} Sip2;

static void sip2_init(Sip2 *s, const uint8_t key[16]) {
        uint64_t k0 = load64(key), k1 = load64(key + 8);
        s->v0 = 0x736f6d6570736575ULL ^ k0;
        s->v1 = 0x646f72616e646f6dULL ^ k1 ^ 0xee; /* 0xee: the 128-bit variant */
        s->v2 = 0x6c7967656e657261ULL ^ k0;
        s->v3 = 0x7465646279746573ULL ^ k1;
        s->fill = 0;
        s->total = 0;
}

/* Compresses the whole 8-byte words of buf; the rest moves to its start. */
static void sip2_flush(Sip2 *s) {
        size_t words = s->fill / 8;
        uint64_t v0 = s->v0, v1 = s->v1, v2 = s->v2, v3 = s->v3;
        for (size_t w = 0; w < words; w++) {
                uint64_t m = load64(s->buf + 8 * w);
                v3 ^= m;
                SIPROUND(v0, v1, v2, v3);
                SIPROUND(v0, v1, v2, v3);
                v0 ^= m;
        }
        s->v0 = v0, s->v1 = v1, s->v2 = v2, s->v3 = v3;
        s->total += 8 * words;
        s->fill -= 8 * words;
        memmove(s->buf, s->buf + 8 * words, s->fill);
}

static void sip2_feed(Sip2 *s, const void *data, size_t n) {
        const uint8_t *p = data;
        while (n > 0) {
                size_t k = MIN(n, sizeof s->buf - s->fill);
                memcpy(s->buf + s->fill, p, k);
                s->fill += k;
                p += k;
                n -= k;
                if (s->fill == sizeof s->buf)
                        sip2_flush(s);
        }
}

static void sip2_byte(Sip2 *s, uint8_t b) {
        if (s->fill == sizeof s->buf)
                sip2_flush(s);
        s->buf[s->fill++] = b;
}

/* Lengths and counts: strings, arrays and names are far below 4 GiB. */
static void sip2_u32(Sip2 *s, uint32_t x) {
        x = htole32(x);
        sip2_feed(s, &x, sizeof x);
}

static void sip2_u64(Sip2 *s, uint64_t x) {
        x = htole64(x);
        sip2_feed(s, &x, sizeof x);
}

static void sip2_final(Sip2 *s, uint64_t *h, uint64_t *h2) {
        sip2_flush(s);
        uint64_t b = (s->total + s->fill) << 56;
        for (size_t i = 0; i < s->fill; i++)
                b |= (uint64_t) s->buf[i] << (8 * i);
        uint64_t v0 = s->v0, v1 = s->v1, v2 = s->v2, v3 = s->v3;
        v3 ^= b;
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        v0 ^= b;
        v2 ^= 0xee;
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        *h = v0 ^ v1 ^ v2 ^ v3;
        v1 ^= 0xdd;
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        *h2 = v0 ^ v1 ^ v2 ^ v3;
}

/* A NUL-terminated piece, NUL included (so ("ab", "c") and ("a", "bc")
 * differ). */
static void sip2_cstr(Sip2 *s, const char *p) {
        sip2_feed(s, p, strlen(p) + 1);
}

static void sip2_bytes(Sip2 *s, const char *p, size_t n) {
        sip2_u32(s, (uint32_t) n);
        sip2_feed(s, p, n);
}

/* The canonical encoding of a value for keys: a tag byte, then lengths and
 * bytes. It distinguishes what policy_value_to_json() distinguishes and
 * nothing more: integral numbers up to 2^53 are integers (-0 is 0),
 * non-finite numbers are null like none, arrays with keys 0..n-1 are lists
 * and others maps whose keys are text (the number 1 and the string "1" name
 * the same member), an object is its class and payload. Depth is bounded by
 * POLICY_VALUE_DEPTH_MAX. */
static void sip2_value(Sip2 *s, const PolicyValue *v) {
        switch (value_type(v)) {
        case POLICY_TYPE_NONE:
                sip2_byte(s, 'n');
                return;
        case POLICY_TYPE_BOOL:
                sip2_byte(s, policy_value_bool(v) ? 't' : 'f');
                return;
        case POLICY_TYPE_NUMBER: {
                double d = policy_value_number(v);
                if (!isfinite(d))
                        sip2_byte(s, 'n');
                else if (d == floor(d) && fabs(d) <= 9007199254740992.0) {
                        sip2_byte(s, 'i');
                        sip2_u64(s, (uint64_t) (int64_t) d);
                } else {
                        uint64_t bits;
                        memcpy(&bits, &d, sizeof bits);
                        sip2_byte(s, 'd');
                        sip2_u64(s, bits);
                }
                return;
        }
        case POLICY_TYPE_STRING: {
                size_t len;
                const char *p = policy_value_string(v, &len);
                sip2_byte(s, 's');
                sip2_bytes(s, p, len);
                return;
        }
        case POLICY_TYPE_ARRAY: {
                size_t n = policy_array_size(v);
                bool list = true;
                for (size_t i = 0; i < n && list; i++) {
                        const PolicyValue *k = policy_array_key_at(v, i);
                        list = value_type(k) == POLICY_TYPE_NUMBER && policy_value_number(k) == (double) i;
                }
                sip2_byte(s, list ? 'l' : 'm');
                sip2_u32(s, (uint32_t) n);
                for (size_t i = 0; i < n; i++) {
                        if (!list) {
                                const PolicyValue *k = policy_array_key_at(v, i);
                                if (value_type(k) == POLICY_TYPE_STRING) {
                                        size_t len;
                                        const char *p = policy_value_string(k, &len);
                                        sip2_bytes(s, p, len);
                                } else {
                                        /* Keys are integral and within 2^53: plain
                                         * decimal, as policy_number_format() writes them. */
                                        char buf[32], *e = buf + sizeof buf, *q = e;
                                        double d = policy_value_number(k);
                                        uint64_t u = (uint64_t) fabs(d);
                                        do
                                                *--q = (char) ('0' + u % 10);
                                        while ((u /= 10) > 0);
                                        if (d < 0)
                                                *--q = '-';
                                        sip2_bytes(s, q, (size_t) (e - q));
                                }
                        }
                        sip2_value(s, policy_array_value_at(v, i));
                }
                return;
        }
        case POLICY_TYPE_OBJECT:
                sip2_byte(s, 'o');
                sip2_cstr(s, policy_object_class(v));
                sip2_value(s, policy_object_payload(v));
                return;
        default:
                sip2_byte(s, '?');
                return;
        }
}

void policy_cache_key(const PolicyCache *c, const char *namespace, const char *function, PolicyValue *const *args,
                      size_t argc, uint32_t argv_mask, PolicyCacheKey *ret) {
        Sip2 s;
        size_t n = 0;

        for (size_t i = 0; i < argc; i++)
                if (i >= 32 || (argv_mask & (1U << i)))
                        n++;
        sip2_init(&s, c->sipkey);
        sip2_cstr(&s, namespace);
        sip2_cstr(&s, function);
        sip2_byte(&s, 'l');
        sip2_u32(&s, (uint32_t) n);
        for (size_t i = 0; i < argc; i++)
                if (i >= 32 || (argv_mask & (1U << i)))
                        sip2_value(&s, args[i]);
        sip2_final(&s, &ret->h, &ret->h2);
}

static Entry *find(PolicyCache *c, uint64_t h, uint64_t h2) {
        for (Entry *e = c->table[h & (c->cap - 1)]; e; e = e->hnext)
                if (e->hash == h && e->hash2 == h2)
                        return e;
        return NULL;
}

static void lru_front(Bucket *b, Entry *e) {
        if (b->head == e)
                return;
        /* unlink */
        if (e->prev)
                e->prev->next = e->next;
        if (e->next)
                e->next->prev = e->prev;
        else
                b->tail = e->prev;
        /* push front */
        e->prev = NULL;
        e->next = b->head;
        if (b->head)
                b->head->prev = e;
        b->head = e;
        if (!b->tail)
                b->tail = e;
}

int policy_cache_lookup(PolicyCache *c, const char *namespace, const char *function, const PolicyCacheKey *key,
                        uint64_t now_usec, uint64_t generation, bool same_generation_only, PolicyValue **ret) {
        Bucket *b = bucket_get(c, namespace, function, true);
        if (!b)
                return -ENOMEM;
        Entry *e = find(c, key->h, key->h2);
        if (e && (e->expires <= now_usec || (same_generation_only && e->generation != generation))) {
                entry_unlink(c, e);
                e = NULL;
        }
        if (!e) {
                b->misses++;
                return 0;
        }
        b->hits++;
        lru_front(b, e);
        *ret = value_ref(e->value);
        return 1;
}

static int grow(PolicyCache *c) {
        size_t cap = c->cap * 2;
        Entry **t = calloc(cap, sizeof *t);
        if (!t)
                return -ENOMEM;
        for (size_t i = 0; i < c->cap; i++)
                while (c->table[i]) {
                        Entry *e = c->table[i];
                        c->table[i] = e->hnext;
                        e->hnext = t[e->hash & (cap - 1)];
                        t[e->hash & (cap - 1)] = e;
                }
        free(c->table);
        c->table = t;
        c->cap = cap;
        return 0;
}

int policy_cache_store(PolicyCache *c, const char *namespace, const char *function, const PolicyCacheKey *key,
                       PolicyValue *value, uint64_t ttl_usec, unsigned size, uint64_t now_usec, uint64_t generation) {
        uint64_t h = key->h, h2 = key->h2;
        Bucket *b = bucket_get(c, namespace, function, true);
        if (!b)
                return -ENOMEM;
        b->max = MAX(size, 1U);
        Entry *e = find(c, h, h2);
        if (e) {
                value_unref(e->value);
                e->value = value_ref(value);
                e->expires = now_usec + ttl_usec;
                e->generation = generation;
                lru_front(b, e);
                return 0;
        }
        if (c->n * 2 >= c->cap && c->cap < (size_t) CACHE_ENTRIES_MAX * 2 && grow(c) < 0)
                return -ENOMEM;
        e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        *e = (Entry) {
                .hash = h,
                .hash2 = h2,
                .value = value_ref(value),
                .expires = now_usec + ttl_usec,
                .generation = generation,
                .bucket = b,
        };
        e->hnext = c->table[h & (c->cap - 1)];
        c->table[h & (c->cap - 1)] = e;
        e->next = b->head;
        if (b->head)
                b->head->prev = e;
        b->head = e;
        if (!b->tail)
                b->tail = e;
        b->n++;
        c->n++;
        while (b->n > b->max || (c->n > CACHE_ENTRIES_MAX && b->n > 0)) {
                if (b->tail == e && b->n == 1)
                        break;
                entry_unlink(c, b->tail);
                b->evicts++;
        }
        return 0;
}

int policy_cache_stats(PolicyCache *c, json_object **ret) {
        _cleanup_(policy_json_putp) json_object *a = json_object_new_array();
        if (!a)
                return -ENOMEM;
        for (Bucket *b = c->buckets; b; b = b->next) {
                json_object *o = json_object_new_object();
                if (!o)
                        return -ENOMEM;
                json_object_object_add(o, "namespace", json_object_new_string(b->namespace));
                json_object_object_add(o, "function", json_object_new_string(b->function));
                json_object_object_add(o, "size", json_object_new_int64((int64_t) b->n));
                json_object_object_add(o, "max_size", json_object_new_int64(b->max));
                json_object_object_add(o, "hits", json_object_new_int64((int64_t) b->hits));
                json_object_object_add(o, "misses", json_object_new_int64((int64_t) b->misses));
                json_object_object_add(o, "evicts", json_object_new_int64((int64_t) b->evicts));
                json_object_array_add(a, o);
        }
        *ret = TAKE_PTR(a);
        return 0;
}
