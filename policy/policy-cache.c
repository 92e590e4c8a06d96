/* SPDX-License-Identifier: MIT */
/* The in-process cache behind `cache [...] f(...)`: one hash table of
 * entries, grouped into buckets per (namespace, function) that carry the
 * size limit, LRU order and the hit/miss/evict counters operators see.
 *
 * An entry is found by two keyed SipHash-2-4 digests (128 bits) of
 * namespace, function and the JSON of the selected arguments; the
 * arguments themselves are not kept, so a token or address passed to a
 * cached lookup does not stay in memory in clear text, and the keys are
 * random per process, so colliding entries cannot be chosen from outside. */

#include <stdio.h>
#include <sys/random.h>

#include "policy-internal.h"

/* Whatever the scripts ask for, the whole cache stays below this. */
#define CACHE_ENTRIES_MAX 1000000U

typedef struct Bucket Bucket;

typedef struct Entry {
        uint64_t hash;          /* SipHash with key 0: also the table index */
        uint64_t hash2;         /* SipHash with key 1 */
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
        uint8_t sipkey[2][16];
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
        policy_value_unref(e->value);
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
#define SIPROUND                                                                        \
        do {                                                                            \
                v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);               \
                v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                  \
                v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                  \
                v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);               \
        } while (0)

static uint64_t load64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 7; i >= 0; i--)
                v = (v << 8) | p[i];
        return v;
}

/* SipHash-2-4 over the pieces as one message, each followed by a NUL (so
 * ("ab", "c") and ("a", "bc") differ). */
static uint64_t siphash(const uint8_t key[16], const char *const *pieces, size_t n_pieces) {
        uint64_t k0 = load64(key), k1 = load64(key + 8);
        uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
        uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
        uint8_t block[8];
        size_t fill = 0, total = 0;

        for (size_t i = 0; i < n_pieces; i++) {
                const char *p = pieces[i];
                size_t len = strlen(p) + 1;
                for (size_t j = 0; j < len; j++) {
                        block[fill++] = (uint8_t) p[j];
                        total++;
                        if (fill == 8) {
                                uint64_t m = load64(block);
                                v3 ^= m;
                                SIPROUND;
                                SIPROUND;
                                v0 ^= m;
                                fill = 0;
                        }
                }
        }
        uint64_t b = (uint64_t) total << 56;
        for (size_t i = 0; i < fill; i++)
                b |= (uint64_t) block[i] << (8 * i);
        v3 ^= b;
        SIPROUND;
        SIPROUND;
        v0 ^= b;
        v2 ^= 0xff;
        SIPROUND;
        SIPROUND;
        SIPROUND;
        SIPROUND;
        return v0 ^ v1 ^ v2 ^ v3;
}

static void digest(PolicyCache *c, const char *namespace, const char *function, const char *key, uint64_t *h,
                   uint64_t *h2) {
        const char *pieces[] = { namespace, function, key };
        *h = siphash(c->sipkey[0], pieces, ELEMENTSOF(pieces));
        *h2 = siphash(c->sipkey[1], pieces, ELEMENTSOF(pieces));
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

int policy_cache_lookup(PolicyCache *c, const char *namespace, const char *function, const char *key,
                        uint64_t now_usec, uint64_t generation, bool same_generation_only, PolicyValue **ret) {
        uint64_t h, h2;
        Bucket *b = bucket_get(c, namespace, function, true);
        if (!b)
                return -ENOMEM;
        digest(c, namespace, function, key, &h, &h2);
        Entry *e = find(c, h, h2);
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
        *ret = policy_value_ref(e->value);
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

int policy_cache_store(PolicyCache *c, const char *namespace, const char *function, const char *key,
                       PolicyValue *value, uint64_t ttl_usec, unsigned size, uint64_t now_usec, uint64_t generation) {
        uint64_t h, h2;
        Bucket *b = bucket_get(c, namespace, function, true);
        if (!b)
                return -ENOMEM;
        b->max = MAX(size, 1U);
        digest(c, namespace, function, key, &h, &h2);
        Entry *e = find(c, h, h2);
        if (e) {
                policy_value_unref(e->value);
                e->value = policy_value_ref(value);
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
                .value = policy_value_ref(value),
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
