/* SPDX-License-Identifier: MIT */
#pragma once

/* The syntax tree of HPL files, and the arena it lives in.
 *
 * Every node, name and string of a loaded policy is allocated from one
 * PolicyArena owned by the generation, so a failed load or a dropped
 * generation is freed in one walk over the chunks, never over the tree. */

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy-phase.h"
#include "policy-value.h"

/* Deepest nesting of expressions and statements a file may have. The parser,
 * checker and compiler recurse along the tree, so this bounds their stack. */
#define POLICY_DEPTH_MAX 100U

typedef struct PolicyArena PolicyArena;

PolicyArena *policy_arena_new(void);
PolicyArena *policy_arena_free(PolicyArena *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(PolicyArena *, policy_arena_free);
/* Zeroed memory, or NULL on OOM (or when n is absurd). */
void *policy_arena_alloc(PolicyArena *a, size_t n);
char *policy_arena_strndup(PolicyArena *a, const char *s, size_t n);
/* Values and compiled regexes whose lifetime is the arena's. */
int policy_arena_keep_value(PolicyArena *a, PolicyValue *v);
int policy_arena_keep_regex(PolicyArena *a, regex_t *re);

/* Where something is: file index into the generation's file table. */
typedef struct PolicyLoc {
        uint32_t file;
        uint32_t line;
        uint32_t col;
} PolicyLoc;

typedef enum PolicyNodeKind {
        /* expressions */
        NODE_LITERAL,   /* value */
        NODE_INTERP,    /* items: literal strings and NODE_VAR */
        NODE_VAR,       /* name (without '$') */
        NODE_ARRAY,     /* items: NODE_ITEM */
        NODE_ITEM,      /* a: key or NULL, b: value; name: bare-identifier key */
        NODE_INDEX,     /* a[b] */
        NODE_CALL,      /* module::name(items) */
        NODE_METHOD,    /* a->name(items) */
        NODE_CACHE,     /* a: options (NODE_ARRAY), b: NODE_CALL */
        NODE_UNARY,     /* op a */
        NODE_BINARY,    /* a op b */
        NODE_AND,
        NODE_OR,
        NODE_COALESCE,
        NODE_TERNARY,   /* a ? b : c */
        NODE_MATCH,     /* a =~ regex (b is the literal) */
        /* statements */
        NODE_BLOCK,     /* items */
        NODE_IF,        /* a cond, b then, c else */
        NODE_FOREACH,   /* a collection, name key var or NULL, name2 value var, b body */
        NODE_BREAK,
        NODE_CONTINUE,
        NODE_RETURN,    /* a or NULL */
        NODE_ASSIGN,    /* a lvalue (NODE_VAR / NODE_INDEX / NODE_APPEND chain), b value; op '=' or '?' for ??= */
        NODE_APPEND,    /* a[] as an lvalue */
        NODE_EXPR,      /* a */
        /* declarations */
        NODE_IMPORT,    /* items: NODE_VAR (constants), NODE_CALL (function names); value: path; slot: file index */
        NODE_CONST,     /* name, a */
        NODE_FUNCTION,  /* name, params (items: NODE_VAR), b body */
        NODE_HANDLER,   /* phase, b body */
        _NODE_KIND_MAX,
} PolicyNodeKind;

typedef enum PolicyOp {
        OP_NONE,
        OP_NEG, OP_NOT,
        OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MOD, OP_CONCAT,
        OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN,
        OP_ASSIGN, OP_COALESCE_ASSIGN,
} PolicyOp;

typedef struct PolicyNode PolicyNode;
struct PolicyNode {
        PolicyNodeKind kind;
        PolicyOp op;
        PolicyLoc loc;
        unsigned height;          /* longest path to a leaf, bounded by POLICY_DEPTH_MAX */
        PolicyNode *a, *b, *c;
        PolicyNode **items;
        size_t n_items;
        const char *name;         /* identifier, variable or function name */
        const char *module;       /* NODE_CALL: "ARC" in ARC::seal */
        const char *name2;        /* NODE_FOREACH: value variable */
        PolicyValue *value;       /* NODE_LITERAL, NODE_IMPORT path; owned by the arena */
        PolicyPhase phase;        /* NODE_HANDLER */
        regex_t *regex;           /* NODE_MATCH; NODE_CALL regex_match: compiled by the checker */
        /* Filled in by the checker: */
        int slot;                 /* local slot, const index, special variable, function index */
        int resolved;             /* PolicyResolve */
        const void *builtin;      /* NODE_CALL/NODE_METHOD: the manifest entry */
        int cache_site;           /* NODE_CACHE */
        int slot_key, slot_value; /* NODE_FOREACH: local slots (-1: no key variable) */
};

typedef enum PolicyResolve {
        RESOLVE_NONE,
        RESOLVE_LOCAL,
        RESOLVE_CONST,
        RESOLVE_SPECIAL,
        RESOLVE_FUNCTION,
        RESOLVE_BUILTIN,
} PolicyResolve;

/* One parsed file. */
typedef struct PolicyFile {
        char *path;               /* as shown in diagnostics */
        char *dir;                /* of the entry file: every import resolves against it */
        PolicyNode **decls;
        size_t n_decls;
        bool is_entry;
} PolicyFile;

PolicyNode *policy_node_new(PolicyArena *a, PolicyNodeKind kind, PolicyLoc loc);
/* Appends to n->items; -ENOMEM, or -E2BIG past 65536 items. */
int policy_node_add(PolicyArena *a, PolicyNode *n, PolicyNode *child);
/* Recomputes n->height from its children. */
unsigned policy_node_update_height(PolicyNode *n);
