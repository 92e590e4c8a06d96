/* SPDX-License-Identifier: MIT */
#include "policy-ast.h"

#include <stdalign.h>

#define ARENA_CHUNK_MIN  4096U
#define ARENA_CHUNK_MAX  (256U * 1024U)
#define NODE_ITEMS_MAX   65536U

typedef struct ArenaChunk {
        struct ArenaChunk *next;
        size_t used, size;
        max_align_t data[];
} ArenaChunk;

typedef struct ArenaKeep {
        struct ArenaKeep *next;
        PolicyValue *value;
        regex_t *regex;
} ArenaKeep;

struct PolicyArena {
        ArenaChunk *chunks;
        ArenaKeep *keep;
};

PolicyArena *policy_arena_new(void) {
        return calloc(1, sizeof(PolicyArena));
}

PolicyArena *policy_arena_free(PolicyArena *a) {
        if (!a)
                return NULL;
        while (a->keep) {
                ArenaKeep *k = a->keep;
                a->keep = k->next;
                policy_value_unref(k->value);
                if (k->regex) {
                        regfree(k->regex);
                        free(k->regex);
                }
                free(k);
        }
        while (a->chunks) {
                ArenaChunk *c = a->chunks;
                a->chunks = c->next;
                free(c);
        }
        free(a);
        return NULL;
}

void *policy_arena_alloc(PolicyArena *a, size_t size) {
        const size_t align = alignof(max_align_t);

        if (size > (size_t) 64 * 1024 * 1024)
                return NULL;
        size = (size + align - 1) & ~(align - 1);
        if (size == 0)
                size = align;

        ArenaChunk *c = a->chunks;
        if (!c || c->size - c->used < size) {
                size_t want = c ? MIN(c->size * 2, (size_t) ARENA_CHUNK_MAX) : ARENA_CHUNK_MIN;
                want = MAX(want, size);
                c = malloc(sizeof(ArenaChunk) + want);
                if (!c)
                        return NULL;
                c->next = a->chunks;
                c->used = 0;
                c->size = want;
                a->chunks = c;
        }
        void *p = (char *) c->data + c->used;
        c->used += size;
        memset(p, 0, size);
        return p;
}

char *policy_arena_strndup(PolicyArena *a, const char *s, size_t n) {
        char *p = policy_arena_alloc(a, n + 1);
        if (!p)
                return NULL;
        if (n > 0)
                memcpy(p, s, n);
        p[n] = 0;
        return p;
}

int policy_arena_keep_value(PolicyArena *a, PolicyValue *v) {
        ArenaKeep *k = calloc(1, sizeof *k);
        if (!k)
                return -ENOMEM;
        k->value = v;
        k->next = a->keep;
        a->keep = k;
        return 0;
}

int policy_arena_keep_regex(PolicyArena *a, regex_t *re) {
        ArenaKeep *k = calloc(1, sizeof *k);
        if (!k)
                return -ENOMEM;
        k->regex = re;
        k->next = a->keep;
        a->keep = k;
        return 0;
}

static const char *const phase_names[_POLICY_PHASE_MAX] = {
        [POLICY_PHASE_CONNECT] = "connect",
        [POLICY_PHASE_HELO] = "helo",
        [POLICY_PHASE_AUTH] = "auth",
        [POLICY_PHASE_MAILFROM] = "mailfrom",
        [POLICY_PHASE_RCPTTO] = "rcptto",
        [POLICY_PHASE_EOD] = "eod",
        [POLICY_PHASE_DISCONNECT] = "disconnect",
};

const char *policy_phase_to_string(PolicyPhase p) {
        return p >= 0 && p < _POLICY_PHASE_MAX ? phase_names[p] : NULL;
}

PolicyPhase policy_phase_from_string(const char *s) {
        for (int p = 0; p < _POLICY_PHASE_MAX; p++)
                if (streq_ptr(s, phase_names[p]))
                        return (PolicyPhase) p;
        return _POLICY_PHASE_INVALID;
}

PolicyNode *policy_node_new(PolicyArena *a, PolicyNodeKind kind, PolicyLoc loc) {
        PolicyNode *n = policy_arena_alloc(a, sizeof *n);
        if (!n)
                return NULL;
        n->kind = kind;
        n->loc = loc;
        n->slot = -1;
        n->cache_site = -1;
        n->slot_key = -1;
        n->slot_value = -1;
        return n;
}

int policy_node_add(PolicyArena *a, PolicyNode *n, PolicyNode *child) {
        if (n->n_items >= NODE_ITEMS_MAX)
                return -E2BIG;
        /* Capacity is the next power of two; the arena cannot realloc, so the
         * old array is abandoned to it (at most doubling the space used). */
        size_t cap = 4;
        while (cap < n->n_items)
                cap *= 2;
        if (n->n_items == 0 || n->n_items == cap) {
                size_t ncap = n->n_items == 0 ? 4 : cap * 2;
                PolicyNode **items = policy_arena_alloc(a, ncap * sizeof *items);
                if (!items)
                        return -ENOMEM;
                if (n->n_items > 0)
                        memcpy(items, n->items, n->n_items * sizeof *items);
                n->items = items;
        }
        n->items[n->n_items++] = child;
        if (child && child->height + 1 > n->height)
                n->height = child->height + 1;
        return 0;
}

unsigned policy_node_update_height(PolicyNode *n) {
        unsigned h = 0;
        PolicyNode *kids[3] = { n->a, n->b, n->c };
        for (size_t i = 0; i < 3; i++)
                if (kids[i] && kids[i]->height + 1 > h)
                        h = kids[i]->height + 1;
        for (size_t i = 0; i < n->n_items; i++)
                if (n->items[i] && n->items[i]->height + 1 > h)
                        h = n->items[i]->height + 1;
        n->height = h;
        return h;
}
