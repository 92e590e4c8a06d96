/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared between the checker, the compiler and the VM; not for embedders. */

#include "policy-builtins.h"
#include "policy.h"

/* The layout of values. policy-value.c owns it; it is here so the VM's
 * hottest paths (type checks, references) inline. */
typedef struct PolicyArrayEntry {
        PolicyValue *key;
        PolicyValue *value;
} PolicyArrayEntry;

struct PolicyValue {
        unsigned refcount; /* 0: static singleton */
        PolicyType type;
        /* Nesting below this value (0 for scalars), kept at most
         * POLICY_VALUE_DEPTH_MAX so freeing, comparing and converting, which
         * recurse, have a bounded stack whatever a script builds. It only
         * grows: replacing a deep element by a shallow one keeps it. */
        unsigned depth;
        size_t size;       /* see policy_value_size() */
        union {
                bool b;
                double n;
                struct {
                        char *s;   /* the bytes follow the struct in the same allocation */
                        size_t len;
                } str;
                struct {
                        PolicyArrayEntry *entries;
                        size_t n, cap;
                        uint32_t *index; /* entry number + 1, 0 = free */
                        size_t index_cap;
                        double next_key;
                } arr;
                struct {
                        char *class;
                        PolicyValue *payload;
                } obj;
        };
};

/* Frees a value whose last reference went (policy-value.c). */
void policy_value_free_last(PolicyValue *v);

static inline PolicyType value_type(const PolicyValue *v) {
        return v ? v->type : POLICY_TYPE_NONE;
}

static inline PolicyValue *value_ref(PolicyValue *v) {
        if (v && v->refcount > 0)
                v->refcount++;
        return v;
}

static inline void value_unref(PolicyValue *v) {
        if (v && v->refcount > 0 && --v->refcount == 0)
                policy_value_free_last(v);
}

typedef enum PolicyOpcode {
        OPC_PUSH_CONST,         /* a: constant pool index */
        OPC_LOAD_LOCAL,         /* a: slot */
        OPC_STORE_LOCAL,        /* a: slot; pops */
        OPC_LOAD_GLOBAL,        /* a: global (const declaration) index */
        OPC_LOAD_SPECIAL,       /* a: PolicySpecial */
        OPC_STORE_CONTEXT,      /* pops into $context */
        OPC_SET_PATH,           /* a: slot (-1: $context), b: n keys, c: append; pops keys and value */
        OPC_INDEX,              /* pops key, container; pushes element */
        OPC_POP,
        OPC_UNARY,              /* a: PolicyOp */
        OPC_BINARY,             /* a: PolicyOp */
        OPC_TO_BOOL,
        OPC_MATCH,              /* a: regex index */
        OPC_JUMP,               /* a: target */
        OPC_JUMP_IF_FALSE,      /* pops; a: target */
        OPC_JUMP_IF_NOT_NONE_POP, /* pops; jumps when it was not none */
        OPC_COALESCE,           /* not none: keep and jump to a; none: pop */
        OPC_INTERP,             /* a: n parts popped, concatenated */
        OPC_NEW_ARRAY,
        OPC_ARRAY_PUSH,         /* pops value, appends to the array below */
        OPC_ARRAY_SET,          /* pops value and key, sets in the array below */
        OPC_CALL_BUILTIN,       /* a: builtin index, b: argc, c: cache site or -1, d: regex index or -1 */
        OPC_CALL_FUNC,          /* a: function index, b: argc, c: cache site or -1 */
        OPC_RETURN,             /* pops the return value */
        OPC_END,                /* end of a handler without verdict */
        OPC_FOREACH_INIT,       /* a: hidden slot pair; pops the collection */
        OPC_FOREACH_NEXT,       /* a: hidden slot pair, b: key slot or -1, c: value slot, d: exit target */
        _OPC_MAX,
} PolicyOpcode;

typedef enum PolicySpecial {
        SPECIAL_CONNECTION,
        SPECIAL_TRANSACTION,
        SPECIAL_ARGUMENTS,
        SPECIAL_CONTEXT,
        SPECIAL_SENDERIP,
        SPECIAL_SENDERHELO,
        SPECIAL_SASLUSERNAME,
        _SPECIAL_MAX,
} PolicySpecial;

typedef struct PolicyInsn {
        uint8_t op;
        int32_t a, b, c, d;
        PolicyLoc loc;
} PolicyInsn;

typedef struct PolicyCode {
        const char *name;       /* function name or phase */
        PolicyInsn *insns;
        size_t n, cap;
        unsigned n_params;
        unsigned n_locals;      /* params included */
} PolicyCode;

/* Strings the VM writes into every action record, made once per
 * generation (see policy_words). */
typedef enum PolicyWord {
        WORD_ACTION,
        WORD_AT,
        WORD_RECIPIENT,
        WORD_OPTIONS,
        WORD_LEVEL,
        WORD_MESSAGE,
        WORD_FIELDS,
        WORD_NAME,
        WORD_VALUE,
        WORD_INDEX,
        WORD_QUEUE,
        WORD_LOG,
        WORD_ADD_HEADER,
        WORD_SET_HEADER,
        WORD_DELETE_HEADER,
        _WORD_MAX,
} PolicyWord;

extern const char *const policy_words[_WORD_MAX];

typedef struct PolicyCacheSite {
        char *namespace;        /* NULL: "" */
        double ttl;             /* seconds; 0 = look up only, never store */
        unsigned size;
        uint32_t argv_mask;     /* bit i: argument i+1 is part of the key */
        bool force;
        bool flush_on_reload;
} PolicyCacheSite;

/* A file_lookup() map, read with the generation. One per path as the
 * policy wrote it (what the builtin receives at run time); names that
 * resolve to the same file share the first one's table (alias). Keys and
 * values point into text. */
#define POLICY_MAP_SIZE_MAX (16U * 1024U * 1024U)
#define POLICY_MAPS_MAX 32U
#define POLICY_MAP_LINE_MAX 4096U

typedef struct PolicyMapEntry {
        const char *key, *value; /* NULL key: free slot */
        uint32_t key_len, value_len;
        uint64_t hash;
} PolicyMapEntry;

typedef struct PolicyMap {
        char *name;             /* as written */
        size_t name_len;
        char *path;             /* resolved against the entry file's directory */
        PolicyLoc loc;          /* the first file_lookup() naming it */
        int alias;              /* index of the map holding the table, or -1 */
        char *text;
        PolicyMapEntry *slots;
        size_t cap, n;
} PolicyMap;

struct PolicyGeneration {
        unsigned refcount;
        uint64_t id;
        PolicyArena *arena;
        PolicyFile *files;
        size_t n_files;
        PolicyCode *functions;
        size_t n_functions;
        PolicyCode *handlers[_POLICY_PHASE_MAX]; /* NULL: no handler */
        PolicyValue **consts;    /* constant pool */
        size_t n_consts, cap_consts;
        PolicyValue **globals;   /* const declarations, evaluated at load */
        size_t n_globals;
        const regex_t **regexes;
        size_t n_regexes, cap_regexes;
        PolicyCacheSite *cache_sites;
        size_t n_cache_sites;
        PolicyValue *words[_WORD_MAX]; /* borrowed from consts; set by policy_compile() */
        PolicyMap *maps;         /* registered by the checker, read by the loader */
        size_t n_maps;
};

/* The checker registers the map a file_lookup() at loc names (name: the
 * constant path as written). Returns 0, -E2BIG past POLICY_MAPS_MAX, or
 * -ENOMEM. */
int policy_generation_add_map(PolicyGeneration *g, const char *name, size_t name_len, PolicyLoc loc);

/* What the checker hands the compiler. */
typedef struct PolicyProgram {
        PolicyNode **functions;  /* NODE_FUNCTION, indexed like generation->functions */
        size_t n_functions;
        PolicyNode *handlers[_POLICY_PHASE_MAX];
        PolicyNode **globals;    /* NODE_CONST */
        size_t n_globals;
        PolicyNode **cache_nodes; /* NODE_CACHE, indexed by cache_site */
        size_t n_cache_nodes;
} PolicyProgram;

void policy_program_done(PolicyProgram *p);

/* Resolves names, checks every rule and evaluates const declarations into
 * g->globals. Errors go to diags; returns -EINVAL if there were any. */
int policy_check(PolicyGeneration *g, PolicyProgram *prog, PolicyDiags *diags);
/* Emits bytecode for a checked program into g. */
int policy_compile(PolicyGeneration *g, const PolicyProgram *prog);

/* Evaluation shared by the VM and the constant folder. On a type error
 * returns -EINVAL with a message in err. */
int policy_eval_unary(PolicyOp op, PolicyValue *a, PolicyValue **ret, char *err, size_t errsize);
int policy_eval_binary(PolicyOp op, PolicyValue *a, PolicyValue *b, PolicyValue **ret, char *err, size_t errsize);
int policy_eval_index(PolicyValue *c, PolicyValue *key, PolicyValue **ret, char *err, size_t errsize);
int policy_eval_concat(PolicyValue *const *parts, size_t n, PolicyValue **ret, char *err, size_t errsize);

/* Cache internals used by the VM. An entry is found by two keyed digests
 * of namespace, function and a canonical encoding of the selected
 * arguments; no key text is built or kept. */
typedef struct PolicyCacheKey {
        uint64_t h, h2;
} PolicyCacheKey;

/* The key of a call: argument i is part of it when bit i of argv_mask is
 * set (arguments past the 32nd always are). Two calls get the same key when
 * the JSON of their selected arguments would be the same. */
void policy_cache_key(const PolicyCache *c, const char *namespace, const char *function, PolicyValue *const *args,
                      size_t argc, uint32_t argv_mask, PolicyCacheKey *ret);
/* Returns 1 on a hit (ret set), 0 on a miss. */
int policy_cache_lookup(PolicyCache *c, const char *namespace, const char *function, const PolicyCacheKey *key,
                        uint64_t now_usec, uint64_t generation, bool same_generation_only, PolicyValue **ret);
int policy_cache_store(PolicyCache *c, const char *namespace, const char *function, const PolicyCacheKey *key,
                       PolicyValue *value, uint64_t ttl_usec, unsigned size, uint64_t now_usec, uint64_t generation);

extern const char *const policy_special_names[_SPECIAL_MAX];
