/* SPDX-License-Identifier: MIT */
#pragma once

/* The builtin manifest: one table that the checker (names, arity, literal
 * argument types, phases, options, cache use) and the VM (dispatch) both
 * read, so they cannot disagree. `halyard-policy builtins` prints it as
 * JSON for docs and editors.
 *
 * Kinds:
 *  - PURE builtins are computed inline by the VM (string functions, regex,
 *    in_network, the AuthenticationResults builder...).
 *  - ACTION builtins are recorded in the run's action list (Queue, header
 *    edits, log) for the embedder to apply at commit; they return none.
 *  - EXTERNAL builtins are handed to the embedder: the run SUSPENDS with a
 *    PolicyCall and is resumed with the answer (DNS, HTTP, arcd, spamd,
 *    rate, passwd_verify). An embedder that can answer at once (rate)
 *    simply resumes before stepping again. file_lookup() is PURE: its maps
 *    are read with the generation.
 *  - FINAL builtins are the verdicts; they end the handler. */

#include <regex.h>

#include "policy-ast.h"

#define POLICY_BUILTIN_ARGS_MAX 7U

typedef enum PolicyBuiltinKind {
        POLICY_BUILTIN_PURE,
        POLICY_BUILTIN_ACTION,
        POLICY_BUILTIN_EXTERNAL,
        POLICY_BUILTIN_FINAL,
} PolicyBuiltinKind;

typedef struct PolicyBuiltinCtx PolicyBuiltinCtx;
typedef int (*PolicyBuiltinFn)(PolicyBuiltinCtx *ctx, PolicyValue **args, size_t n, PolicyValue **ret);

typedef struct PolicyBuiltin {
        const char *module;         /* "ARC" for ARC::seal, else NULL */
        const char *name;
        const char *receiver;       /* class of a method ("Mail"), NULL for functions */
        unsigned min_args, max_args;
        unsigned arg_types[POLICY_BUILTIN_ARGS_MAX]; /* POLICY_T() masks; 0 = any */
        unsigned phases;            /* POLICY_PHASE_BIT() mask */
        PolicyBuiltinKind kind;
        bool cacheable;             /* may be used with `cache` */
        bool needs_regex;           /* argument 1 is a regex literal compiled at load */
        unsigned timeout_ms;        /* EXTERNAL: default timeout */
        unsigned returns;           /* POLICY_T() mask, for docs */
        int options_arg;            /* 0-based position of an options map, -1 if none */
        const char *const *options; /* its known keys (NULL-terminated) */
        PolicyBuiltinFn fn;         /* PURE */
        const char *doc;
} PolicyBuiltin;

/* Handed to PURE builtins by the VM. */
struct PolicyBuiltinCtx {
        const regex_t *regex;       /* needs_regex builtins */
        PolicyValue *connection;    /* borrowed facts */
        double now;                 /* wall clock, seconds since the epoch */
        const struct PolicyGeneration *g; /* the run's: file_lookup() maps */
        char error[200];            /* set with a negative return */
};

/* file_lookup(): looks key up in the map the policy named `name` (the path
 * as written), loaded with generation g. Returns 1 and the value (bytes
 * owned by g) on a hit, 0 on a miss, -ENOENT when g has no such map. */
int policy_generation_map_lookup(const struct PolicyGeneration *g, const char *name, size_t name_len, const char *key,
                                 size_t key_len, const char **ret_value, size_t *ret_len);

/* Functions: module may be NULL. */
const PolicyBuiltin *policy_builtin_find(const char *module, const char *name);
/* Methods by name (names are unique across classes). */
const PolicyBuiltin *policy_builtin_find_method(const char *name);
/* "ARC::seal", "Mail->signDKIM", "dnsbl" into buf. */
const char *policy_builtin_display_name(const PolicyBuiltin *b, char *buf, size_t size);

size_t policy_builtins_count(void);
const PolicyBuiltin *policy_builtin_at(size_t i);

/* The manifest as JSON (array of objects). */
int policy_builtins_to_json(json_object **ret);

/* Log levels accepted by log(). */
bool policy_log_level_valid(const char *s);
