/* SPDX-License-Identifier: MIT */
#pragma once

/* HPL, the halyard policy language: the embedding API.
 *
 * 1. Load: policy_generation_load() reads the entry file and its imports,
 *    parses, checks and compiles them into a PolicyGeneration. Diagnostics
 *    (errors and warnings, "file:line:col: error: ...") go to a PolicyDiags
 *    the caller owns. On any error there is no generation, and a reloading
 *    daemon keeps its old one.
 *
 * 2. Run one phase: policy_run_new() pins the generation (a reference), so a
 *    reload may swap in a new generation while runs of the old one finish.
 *    policy_run_step() executes until the handler ends (POLICY_RUN_DONE) or
 *    an EXTERNAL builtin is called (POLICY_RUN_SUSPENDED). Never blocks, never
 *    recurses in C across a call, needs no threads.
 *
 * 3. Suspended: policy_run_pending() describes the call (qualified name,
 *    arguments, default or script-given timeout, source location). The
 *    embedder starts the I/O, returns to its event loop, and when the answer
 *    (or its failure, as a value such as ["error" => "timeout"]) arrives
 *    calls policy_run_resume() and then policy_run_step() again. Thousands
 *    of suspended runs cost only their own memory.
 *
 * 4. Done: policy_run_result() holds the verdict (or "no decision"), the
 *    recorded actions (Queue, header edits, log) and, after a script error,
 *    step-budget overrun or deadline, the configured tempfail verdict (451
 *    4.3.0 by default) plus the error text with file:line:col. A script
 *    failure is never an accept. policy_run_context() is the connection's
 *    $context after the run, to hand to the next phase.
 *
 * Deadlines: the embedder arms a timer per phase and calls
 * policy_run_abort() when it fires (typically while suspended); the step
 * loop also checks params.deadline_usec itself against params.now_usec(),
 * and a PolicyCall's timeout_ms is already clamped to what is left of it.
 *
 * Ownership: _new/_ref return references the caller releases; values passed
 * in are borrowed (a reference is taken when kept). Nothing here logs. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "policy-diag.h"
#include "policy-phase.h"
#include "policy-value.h"

typedef struct PolicyGeneration PolicyGeneration;
typedef struct PolicyRun PolicyRun;
typedef struct PolicyCache PolicyCache;

/* Limits of one policy (entry file plus imports). */
#define POLICY_FILES_MAX        32U
#define POLICY_TOTAL_SIZE_MAX   (4U * 1024U * 1024U)
#define POLICY_STEP_BUDGET_DEFAULT 1000000U
#define POLICY_MEMORY_BUDGET_DEFAULT (64U * 1024U * 1024U)

/* Reads a whole file; returns 0 and a malloc'ed buffer (NUL-terminated,
 * *ret_len bytes before the NUL) or a negative errno. -EFBIG when larger
 * than max bytes. */
typedef int (*PolicyReadFileFn)(void *userdata, const char *path, size_t max, char **ret_text, size_t *ret_len);

typedef struct PolicyLoadOptions {
        PolicyReadFileFn read_file; /* policy files and file_lookup() maps; NULL: the file system */
        void *userdata;
        uint64_t generation_id;     /* carried into results and cache entries; 0 → 1 */
} PolicyLoadOptions;

/* Loads a policy. Returns 0 and a generation, -EINVAL when diagnostics hold
 * errors (load failures of the entry file included), or -ENOMEM. Warnings
 * alone do not fail. opts may be NULL. */
int policy_generation_load(const char *path, const PolicyLoadOptions *opts, PolicyDiags *diags,
                           PolicyGeneration **ret);
PolicyGeneration *policy_generation_ref(PolicyGeneration *g);
PolicyGeneration *policy_generation_unref(PolicyGeneration *g);
DEFINE_TRIVIAL_CLEANUP_FUNC(PolicyGeneration *, policy_generation_unref);
uint64_t policy_generation_id(const PolicyGeneration *g);
bool policy_generation_has_handler(const PolicyGeneration *g, PolicyPhase phase);

/* The note's default phase deadlines (connect 10 s, helo/auth/mailfrom/
 * rcptto 15 s, eod 60 s, disconnect 5 s), in microseconds; the embedder's
 * configuration may override them. */
uint64_t policy_phase_deadline_default_usec(PolicyPhase phase);

typedef enum PolicyVerdict {
        POLICY_VERDICT_NONE,   /* no decision: continue (or the embedder's built-in default) */
        POLICY_VERDICT_ACCEPT,
        POLICY_VERDICT_REJECT,
        POLICY_VERDICT_DEFER,
        _POLICY_VERDICT_MAX,
} PolicyVerdict;

const char *policy_verdict_to_string(PolicyVerdict v);

typedef struct PolicyRunParams {
        /* Facts, borrowed for the call (references are taken). NULL = none. */
        PolicyValue *connection;
        PolicyValue *transaction;
        PolicyValue *arguments;
        PolicyValue *context;          /* the connection's $context so far */
        uint64_t step_budget;          /* 0: POLICY_STEP_BUDGET_DEFAULT */
        uint64_t memory_budget;        /* bytes held in variables and $context; 0: POLICY_MEMORY_BUDGET_DEFAULT */
        uint64_t deadline_usec;        /* absolute, on now_usec()'s clock; 0: none */
        uint64_t (*now_usec)(void *userdata); /* monotonic; NULL: CLOCK_MONOTONIC */
        double (*wall_clock)(void *userdata); /* now(); NULL: CLOCK_REALTIME */
        void *clock_userdata;
        PolicyCache *cache;            /* NULL: `cache` always calls through */
        /* The tempfail for script errors and deadlines; 0/NULL: 451 4.3.0
         * "Temporary policy failure". */
        unsigned error_code;
        const char *error_enhanced;
        const char *error_reason;
} PolicyRunParams;

/* A suspended call to an EXTERNAL builtin. For methods args[0] is the
 * receiver object. Valid until the run is resumed or freed. */
typedef struct PolicyCall {
        const char *name;              /* "dnsbl", "ARC::seal", "Mail->signDKIM" */
        PolicyValue *const *args;
        size_t n_args;
        unsigned timeout_ms;           /* the script's `timeout` option, else the manifest default */
        uint64_t id;                   /* 1, 2, ... per run */
        const char *file;
        unsigned line, col;
} PolicyCall;

typedef struct PolicyResult {
        PolicyVerdict verdict;
        unsigned code;                 /* 0 with VERDICT_NONE */
        char enhanced[16];             /* "5.7.1" or "" */
        char *reason;                  /* NULL: the embedder's default text */
        bool disconnect;
        bool by_default;               /* the handler ended without a verdict and the phase default applied */
        bool no_handler;               /* no handler for this phase: the embedder's built-in behaviour applies */
        bool failed;                   /* script error, budget or deadline: verdict is the tempfail */
        char *username;                /* auth: Accept([username => ...]) */
        PolicyValue *options;          /* the verdict's options as given (none if absent) */
        PolicyValue *actions;          /* list of ["action" => ..., ...] in order */
        char *error;                   /* "file:line:col: message" when failed */
        char *at;                      /* "file:line:col" of the verdict */
        uint64_t steps;
} PolicyResult;

typedef enum PolicyRunState {
        POLICY_RUN_DONE,
        POLICY_RUN_SUSPENDED,
} PolicyRunState;

/* Creates a run of one phase. params may be NULL. */
int policy_run_new(PolicyGeneration *g, PolicyPhase phase, const PolicyRunParams *params, PolicyRun **ret);
PolicyRun *policy_run_free(PolicyRun *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(PolicyRun *, policy_run_free);

/* Runs until done or suspended. Returns a PolicyRunState, or -ENOMEM (the
 * run is then done with the tempfail verdict), or -ESTALE when called while
 * suspended. */
int policy_run_step(PolicyRun *r);
const PolicyCall *policy_run_pending(const PolicyRun *r);
/* Supplies the pending call's result (borrowed). -ESTALE if not suspended. */
int policy_run_resume(PolicyRun *r, PolicyValue *result);
/* Ends the run now with the tempfail verdict and the given reason (for
 * the embedder's deadline timer). No-op on a finished run. */
int policy_run_abort(PolicyRun *r, const char *why);
/* Valid once policy_run_step() returned POLICY_RUN_DONE. */
const PolicyResult *policy_run_result(const PolicyRun *r);
PolicyValue *policy_run_context(const PolicyRun *r);

/* The script's own verdict: NONE when a phase default applied or no handler
 * ran, so that the embedder's built-in rules (local domains, trusted
 * clients) decide. */
PolicyVerdict policy_result_verdict(const PolicyResult *r);

typedef struct PolicyReply {
        unsigned code;
        const char *enhanced;
        char text[400]; /* control characters replaced by spaces */
} PolicyReply;

/* For the script's Reject() or Defer(): the SMTP reply, and true; false for
 * any other outcome. At connect the defaults are 554/421 (RFC 5321 3.1),
 * elsewhere 550/451. */
bool policy_result_reply(const PolicyResult *r, bool at_connect, PolicyReply *ret);

/* The result as JSON: verdict, code, enhanced, reason, disconnect, flags,
 * actions, error, at. */
int policy_result_to_json(const PolicyResult *r, json_object **ret);

/* The in-process cache behind `cache [...] call(...)`. One per process,
 * shared by all runs and generations (entries survive reloads unless the
 * call says flush_on_reload => true). policy_cache_new() returns -EIO if
 * no random hash key can be had. */
int policy_cache_new(PolicyCache **ret);
PolicyCache *policy_cache_free(PolicyCache *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(PolicyCache *, policy_cache_free);
/* Drops entries of one namespace (NULL: all). */
void policy_cache_clear(PolicyCache *c, const char *namespace);
/* [{namespace, function, size, max_size, hits, misses, evicts}] */
int policy_cache_stats(PolicyCache *c, json_object **ret);
