/* SPDX-License-Identifier: MIT */
/* The HPL virtual machine: runs one phase's handler over the generation's
 * bytecode. All state lives in PolicyRun (value stack, frames, pending
 * call), so an EXTERNAL builtin returns to the embedder and the run resumes
 * later from the event loop, with no threads and no C recursion across the
 * call. Every failure of the script ends the run with the tempfail verdict:
 * never an accept. */

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "policy-internal.h"

#define STACK_MAX    8192U
#define FRAMES_MAX   64U
/* Held in the run itself, so a typical handler allocates neither: most
 * calls nest a few deep and most handlers need a few dozen slots. Deeper
 * or bigger runs move to the heap. (Below 1 KiB, a PolicyRun also fits
 * glibc's per-thread cache of freed chunks.) */
#define FRAMES_INLINE 4U
#define STACK_INLINE  24U
#define ACTIONS_MAX  10000U
#define REASON_MAX   512U
/* The deadline is read from the clock every this many steps. */
#define DEADLINE_CHECK_EVERY 256U

typedef struct Frame {
        const PolicyCode *code;
        size_t pc;
        size_t base;
        const PolicyCacheSite *cache_site; /* `cache [...] f()`: store the return value under cache_key */
        PolicyCacheKey cache_key;
} Frame;

struct PolicyRun {
        PolicyGeneration *g;
        PolicyPhase phase;
        PolicyValue *special[4]; /* connection, transaction, arguments, context */

        PolicyValue **stack;            /* stack_inline or malloc'ed */
        size_t sp, cap;
        Frame *frames;                  /* frames_inline or malloc'ed */
        size_t n_frames, cap_frames;

        uint64_t steps, budget, deadline;
        uint64_t next_check;            /* the step at which to look at budget and deadline again */
        uint64_t mem, mem_budget;       /* bytes held by variables and $context */
        uint64_t (*now_usec)(void *userdata);
        double (*wall_clock)(void *userdata);
        void *clock_userdata;
        PolicyCache *cache;
        unsigned error_code;
        char error_enhanced[16];
        const char *error_reason;       /* error_reason_owned or a literal */
        char *error_reason_owned;

        bool suspended;
        PolicyCall call;
        PolicyValue **call_args;
        size_t n_call_args;
        uint64_t next_call_id;
        const char *call_name;          /* the builtin's name, or call_name_buf */
        char call_name_buf[64];
        const PolicyCacheSite *cache_site; /* pending store after resume, under cache_key */
        PolicyCacheKey cache_key;

        bool done;
        PolicyResult result;
        char at_buf[64];                /* result.at when it fits */

        Frame frames_inline[FRAMES_INLINE];
        PolicyValue *stack_inline[STACK_INLINE];
};

/* ---- evaluation helpers (shared with the constant folder) --------------------- */

_printf_(3, 4)
static int type_error(char *err, size_t size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(err, size, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static const char *op_text(PolicyOp op) {
        switch (op) {
        case OP_NEG: return "-";
        case OP_NOT: return "not";
        case OP_ADD: return "+";
        case OP_SUB: return "-";
        case OP_MUL: return "*";
        case OP_DIV: return "/";
        case OP_MOD: return "%";
        case OP_CONCAT: return ".";
        case OP_EQ: return "==";
        case OP_NE: return "!=";
        case OP_LT: return "<";
        case OP_LE: return "<=";
        case OP_GT: return ">";
        case OP_GE: return ">=";
        case OP_IN: return "in";
        default: return "?";
        }
}

static const char *tname(PolicyValue *v) {
        return policy_type_name(value_type(v));
}

int policy_eval_unary(PolicyOp op, PolicyValue *a, PolicyValue **ret, char *err, size_t errsize) {
        if (op == OP_NOT) {
                *ret = policy_bool(!policy_value_truthy(a));
                return 0;
        }
        if (value_type(a) != POLICY_TYPE_NUMBER)
                return type_error(err, errsize, "'-' needs a number, not %s", tname(a));
        *ret = policy_number_new(-policy_value_number(a));
        return *ret ? 0 : -ENOMEM;
}

/* The parts as policy_value_to_string() shows them, copied straight into
 * the result: no intermediate string values. */
int policy_eval_concat(PolicyValue *const *parts, size_t n, PolicyValue **ret, char *err, size_t errsize) {
        typedef struct Piece {
                const char *s;
                size_t len;
                char num[32];
        } Piece;
        Piece small[8], *pcs = small;
        _cleanup_free_ Piece *heap = NULL;
        size_t total = 0;

        if (n > ELEMENTSOF(small)) {
                pcs = heap = reallocarray(NULL, n, sizeof *pcs);
                if (!pcs)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                Piece *p = &pcs[i];
                switch (value_type(parts[i])) {
                case POLICY_TYPE_NONE:
                        p->s = "";
                        break;
                case POLICY_TYPE_BOOL:
                        p->s = policy_value_bool(parts[i]) ? "true" : "false";
                        break;
                case POLICY_TYPE_NUMBER:
                        policy_number_format(policy_value_number(parts[i]), p->num);
                        p->s = p->num;
                        break;
                case POLICY_TYPE_STRING:
                        p->s = policy_value_string(parts[i], &p->len);
                        total += p->len;
                        continue;
                default:
                        return type_error(err, errsize, "cannot make a string of %s (use json_encode())", tname(parts[i]));
                }
                p->len = strlen(p->s);
                total += p->len;
        }
        if (total > POLICY_STRING_MAX)
                return type_error(err, errsize, "string longer than %u bytes", POLICY_STRING_MAX);
        char *buf;
        PolicyValue *v = policy_string_new_buffer(total, &buf);
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if (pcs[i].len > 0)
                        memcpy(buf, pcs[i].s, pcs[i].len);
                buf += pcs[i].len;
        }
        *ret = v;
        return 0;
}

static int compare_strings(PolicyValue *a, PolicyValue *b) {
        size_t la, lb;
        const char *sa = policy_value_string(a, &la), *sb = policy_value_string(b, &lb);
        int c = memcmp(sa, sb, MIN(la, lb));
        if (c != 0)
                return c;
        return la < lb ? -1 : la > lb ? 1 : 0;
}

int policy_eval_binary(PolicyOp op, PolicyValue *a, PolicyValue *b, PolicyValue **ret, char *err, size_t errsize) {
        PolicyType ta = value_type(a), tb = value_type(b);

        switch (op) {
        case OP_ADD:
        case OP_SUB:
        case OP_MUL:
        case OP_DIV:
        case OP_MOD: {
                if (ta != POLICY_TYPE_NUMBER || tb != POLICY_TYPE_NUMBER)
                        return type_error(err, errsize, "'%s' needs numbers, not %s and %s", op_text(op), tname(a), tname(b));
                double x = policy_value_number(a), y = policy_value_number(b), z;
                if ((op == OP_DIV || op == OP_MOD) && y == 0)
                        return type_error(err, errsize, "division by zero");
                z = op == OP_ADD ? x + y : op == OP_SUB ? x - y : op == OP_MUL ? x * y : op == OP_DIV ? x / y : fmod(x, y);
                *ret = policy_number_new(z);
                return *ret ? 0 : -ENOMEM;
        }
        case OP_CONCAT: {
                PolicyValue *parts[2] = { a, b };
                return policy_eval_concat(parts, 2, ret, err, errsize);
        }
        case OP_EQ:
        case OP_NE:
                *ret = policy_bool(policy_value_equal(a, b) == (op == OP_EQ));
                return 0;
        case OP_LT:
        case OP_LE:
        case OP_GT:
        case OP_GE: {
                int c;
                /* Anything else (none included) compares false: a scanner
                 * that is down does not make `ScanSA() > 5` true. */
                if (ta == POLICY_TYPE_NUMBER && tb == POLICY_TYPE_NUMBER) {
                        double x = policy_value_number(a), y = policy_value_number(b);
                        if (isnan(x) || isnan(y)) {
                                *ret = policy_bool(false);
                                return 0;
                        }
                        c = x < y ? -1 : x > y ? 1 : 0;
                } else if (ta == POLICY_TYPE_STRING && tb == POLICY_TYPE_STRING)
                        c = compare_strings(a, b);
                else {
                        *ret = policy_bool(false);
                        return 0;
                }
                *ret = policy_bool(op == OP_LT ? c < 0 : op == OP_LE ? c <= 0 : op == OP_GT ? c > 0 : c >= 0);
                return 0;
        }
        case OP_IN:
                if (tb == POLICY_TYPE_NONE) {
                        *ret = policy_bool(false);
                        return 0;
                }
                if (tb == POLICY_TYPE_ARRAY) {
                        for (size_t i = 0; i < policy_array_size(b); i++)
                                if (policy_value_equal(a, policy_array_value_at(b, i))) {
                                        *ret = policy_bool(true);
                                        return 0;
                                }
                        *ret = policy_bool(false);
                        return 0;
                }
                if (tb == POLICY_TYPE_STRING && ta == POLICY_TYPE_STRING) {
                        size_t la, lb;
                        const char *sa = policy_value_string(a, &la), *sb = policy_value_string(b, &lb);
                        *ret = policy_bool(memmem(sb, lb, sa, la) != NULL);
                        return 0;
                }
                return type_error(err, errsize, "'in' needs an array (or a string in a string), not %s in %s", tname(a), tname(b));
        default:
                return type_error(err, errsize, "unknown operator");
        }
}

int policy_eval_index(PolicyValue *c, PolicyValue *key, PolicyValue **ret, char *err, size_t errsize) {
        switch (value_type(c)) {
        case POLICY_TYPE_NONE:
                *ret = policy_none();
                return 0;
        case POLICY_TYPE_ARRAY: {
                PolicyValue *v = policy_array_get(c, key); /* NULL for an invalid key too */
                if (!v && !policy_key_valid(key) && value_type(key) != POLICY_TYPE_NONE)
                        return type_error(err, errsize, "array keys are strings or integers, not %s", tname(key));
                *ret = value_ref(v ?: policy_none());
                return 0;
        }
        default:
                return type_error(err, errsize, "cannot index a %s", tname(c));
        }
}

/* ---- runs -------------------------------------------------------------------- */

static uint64_t default_now_usec(void *userdata) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000U + (uint64_t) ts.tv_nsec / 1000U;
}

static double default_wall_clock(void *userdata) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_REALTIME, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

uint64_t policy_phase_deadline_default_usec(PolicyPhase phase) {
        switch (phase) {
        case POLICY_PHASE_CONNECT:
                return 10 * 1000000ULL;
        case POLICY_PHASE_EOD:
                return 60 * 1000000ULL;
        case POLICY_PHASE_DISCONNECT:
                return 5 * 1000000ULL;
        default:
                return 15 * 1000000ULL;
        }
}

const char *policy_verdict_to_string(PolicyVerdict v) {
        static const char *const names[_POLICY_VERDICT_MAX] = {
                [POLICY_VERDICT_NONE] = "none",
                [POLICY_VERDICT_ACCEPT] = "accept",
                [POLICY_VERDICT_REJECT] = "reject",
                [POLICY_VERDICT_DEFER] = "defer",
        };
        return v >= 0 && v < _POLICY_VERDICT_MAX ? names[v] : NULL;
}

static void drop_call(PolicyRun *r) {
        for (size_t i = 0; i < r->n_call_args; i++)
                value_unref(r->call_args[i]);
        free(r->call_args);
        r->call_args = NULL;
        r->n_call_args = 0;
        r->suspended = false;
        r->cache_site = NULL;
}

static void clear_stack(PolicyRun *r) {
        while (r->sp > 0)
                value_unref(r->stack[--r->sp]);
        r->n_frames = 0;
}

static void set_at(PolicyRun *r, char *at) {
        if (r->result.at != r->at_buf)
                free(r->result.at);
        r->result.at = at;
}

PolicyRun *policy_run_free(PolicyRun *r) {
        if (!r)
                return NULL;
        drop_call(r);
        clear_stack(r);
        if (r->stack != r->stack_inline)
                free(r->stack);
        if (r->frames != r->frames_inline)
                free(r->frames);
        for (size_t i = 0; i < ELEMENTSOF(r->special); i++)
                value_unref(r->special[i]);
        free(r->result.reason);
        free(r->result.username);
        free(r->result.error);
        set_at(r, NULL);
        value_unref(r->result.options);
        value_unref(r->result.actions);
        free(r->error_reason_owned);
        policy_generation_unref(r->g);
        free(r);
        return NULL;
}

static const char *file_name(PolicyRun *r, PolicyLoc loc) {
        return loc.file < r->g->n_files ? r->g->files[loc.file].path : "?";
}

static char *format_uint(char *end, unsigned u) {
        do
                *--end = (char) ('0' + u % 10);
        while ((u /= 10) > 0);
        return end;
}

/* "file:line:col" into buf when it fits (returns buf), else newly
 * allocated; NULL on OOM. Verdicts and actions record it on every run, so
 * no printf. */
static char *loc_format(PolicyRun *r, PolicyLoc loc, char *buf, size_t size) {
        char nums[2 * 12], *e = nums + sizeof nums, *q;
        const char *file = file_name(r, loc);
        size_t flen = strlen(file), nlen;

        q = format_uint(e, loc.col);
        *--q = ':';
        q = format_uint(q, loc.line);
        *--q = ':';
        nlen = (size_t) (e - q);
        char *out = flen + nlen < size ? buf : malloc(flen + nlen + 1);
        if (!out)
                return NULL;
        memcpy(out, file, flen);
        memcpy(out + flen, q, nlen);
        out[flen + nlen] = 0;
        return out;
}

/* The verdict's location into result.at. */
static int record_at(PolicyRun *r, PolicyLoc loc) {
        set_at(r, NULL);
        r->result.at = loc_format(r, loc, r->at_buf, sizeof r->at_buf);
        return r->result.at ? 0 : -ENOMEM;
}

/* Ends the run with the tempfail verdict. Always returns POLICY_RUN_DONE, or
 * -ENOMEM when even that could not be recorded (still done). */
_printf_(3, 4)
static int run_fail(PolicyRun *r, PolicyLoc loc, const char *fmt, ...) {
        char msg[400];
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);

        drop_call(r);
        clear_stack(r);
        r->done = true;
        PolicyResult *res = &r->result;
        res->failed = true;
        res->verdict = POLICY_VERDICT_DEFER;
        res->code = r->error_code;
        snprintf(res->enhanced, sizeof res->enhanced, "%s", r->error_enhanced);
        free(res->reason);
        res->reason = strdup(r->error_reason);
        res->disconnect = false;
        free(res->error);
        res->error = NULL;
        if (asprintf(&res->error, "%s:%u:%u: %s", file_name(r, loc), loc.line, loc.col, msg) < 0)
                res->error = NULL;
        return res->reason && res->error ? POLICY_RUN_DONE : -ENOMEM;
}

static int oom(PolicyRun *r, PolicyLoc loc) {
        (void) run_fail(r, loc, "out of memory");
        return -ENOMEM;
}

static inline int push(PolicyRun *r, PolicyValue *v);
static void set_next_check(PolicyRun *r);

int policy_run_new(PolicyGeneration *g, PolicyPhase phase, const PolicyRunParams *params, PolicyRun **ret) {
        static const PolicyRunParams defaults = {};
        _cleanup_(policy_run_freep) PolicyRun *r = NULL;

        if (phase < 0 || phase >= _POLICY_PHASE_MAX)
                return -EINVAL;
        if (!params)
                params = &defaults;

        /* Not calloc(): glibc's calloc() bypasses the thread cache. */
        r = malloc(sizeof *r);
        if (!r)
                return -ENOMEM;
        memset(r, 0, sizeof *r);
        r->stack = r->stack_inline;
        r->cap = STACK_INLINE;
        r->frames = r->frames_inline;
        r->cap_frames = FRAMES_INLINE;
        r->g = policy_generation_ref(g);
        r->phase = phase;
        r->special[SPECIAL_CONNECTION] = value_ref(params->connection ?: policy_none());
        r->special[SPECIAL_TRANSACTION] = value_ref(params->transaction ?: policy_none());
        r->special[SPECIAL_ARGUMENTS] = value_ref(params->arguments ?: policy_none());
        r->special[SPECIAL_CONTEXT] = value_ref(params->context ?: policy_none());
        r->budget = params->step_budget ?: POLICY_STEP_BUDGET_DEFAULT;
        r->mem_budget = params->memory_budget ?: POLICY_MEMORY_BUDGET_DEFAULT;
        r->mem = policy_value_size(r->special[SPECIAL_CONTEXT]);
        r->deadline = params->deadline_usec;
        set_next_check(r);
        r->now_usec = params->now_usec ?: default_now_usec;
        r->wall_clock = params->wall_clock ?: default_wall_clock;
        r->clock_userdata = params->clock_userdata;
        r->cache = params->cache;
        r->error_code = params->error_code ?: 451;
        const char *enh = params->error_enhanced ?: "4.3.0";
        size_t enh_len = strnlen(enh, sizeof r->error_enhanced - 1);
        memcpy(r->error_enhanced, enh, enh_len); /* zeroed: NUL-terminated */
        r->error_reason = "Temporary policy failure";
        if (params->error_reason) {
                r->error_reason = r->error_reason_owned = strdup(params->error_reason);
                if (!r->error_reason_owned)
                        return -ENOMEM;
        }
        r->result.actions = policy_array_new();
        r->result.options = policy_none();
        if (!r->result.actions)
                return -ENOMEM;

        const PolicyCode *code = g->handlers[phase];
        if (!code) {
                r->done = true;
                r->result.no_handler = true;
                *ret = TAKE_PTR(r);
                return 0;
        }
        for (unsigned i = 0; i < code->n_locals; i++)
                if (push(r, policy_none()) < 0)
                        return -ENOMEM; /* n_locals is far below STACK_MAX */
        r->frames[0] = (Frame) { .code = code, .pc = 0, .base = 0 };
        r->n_frames = 1;
        *ret = TAKE_PTR(r);
        return 0;
}

static int push_grow(PolicyRun *r, PolicyValue *v) {
        if (r->sp == r->cap) {
                if (r->cap >= STACK_MAX) {
                        value_unref(v);
                        return -E2BIG;
                }
                size_t cap = MIN(r->cap * 2, (size_t) STACK_MAX);
                PolicyValue **q = reallocarray(r->stack == r->stack_inline ? NULL : r->stack, cap, sizeof *q);
                if (!q) {
                        value_unref(v);
                        return -ENOMEM;
                }
                if (r->stack == r->stack_inline)
                        memcpy(q, r->stack_inline, sizeof r->stack_inline);
                r->stack = q;
                r->cap = cap;
        }
        r->stack[r->sp++] = v;
        return 0;
}

static inline int push(PolicyRun *r, PolicyValue *v) {
        /* Takes the reference. */
        if (!v)
                return -ENOMEM;
        if (_unlikely_(r->sp == r->cap))
                return push_grow(r, v);
        r->stack[r->sp++] = v;
        return 0;
}

static PolicyValue *pop(PolicyRun *r) {
        return r->stack[--r->sp];
}

static void pop_n(PolicyRun *r, size_t n) {
        for (size_t i = 0; i < n; i++)
                value_unref(pop(r));
}

static PolicyValue *special_value(PolicyRun *r, int which) {
        PolicyValue *c = r->special[SPECIAL_CONNECTION], *v;
        switch (which) {
        case SPECIAL_SENDERIP:
                v = policy_array_get_str(c, "remoteip");
                break;
        case SPECIAL_SENDERHELO:
                v = policy_array_get_str(policy_array_get_str(c, "helo"), "host");
                break;
        case SPECIAL_SASLUSERNAME:
                v = policy_array_get_str(policy_array_get_str(c, "auth"), "username");
                break;
        default:
                v = r->special[which];
        }
        return v ?: policy_none();
}

static int array_error(int r, char *err, size_t errsize) {
        if (r == -E2BIG)
                return type_error(err, errsize, "array larger than %u entries", POLICY_ARRAY_MAX);
        if (r == -ELOOP)
                return type_error(err, errsize, "arrays nested deeper than %u levels", POLICY_VALUE_DEPTH_MAX);
        return r;
}

/* Sets container[keys...] = value (or appends), copying shared arrays on
 * the way down. Depth is bounded by the parser's nesting limit. */
static int set_path(PolicyValue **c, PolicyValue **keys, size_t n, bool append, PolicyValue *value, char *err,
                    size_t errsize) {
        int r;
        if (value_type(*c) == POLICY_TYPE_NONE) {
                PolicyValue *a = policy_array_new();
                if (!a)
                        return -ENOMEM;
                value_unref(*c);
                *c = a;
        }
        if (value_type(*c) != POLICY_TYPE_ARRAY)
                return type_error(err, errsize, "cannot index a %s", tname(*c));
        r = policy_array_unshare(c);
        if (r < 0)
                return r;
        if (n == 0) {
                r = policy_array_push(*c, value);
                return array_error(r, err, errsize);
        }
        if (!policy_key_valid(keys[0]))
                return type_error(err, errsize, "array keys are strings or integers, not %s", tname(keys[0]));
        if (n == 1 && !append) {
                r = policy_array_set(*c, keys[0], value);
                return array_error(r, err, errsize);
        }
        PolicyValue *inner = value_ref(policy_array_get(*c, keys[0]) ?: policy_none());
        /* Drop the container's reference first, so an unshared inner array is
         * modified in place instead of copied. */
        r = policy_array_set(*c, keys[0], policy_none());
        if (r >= 0)
                r = set_path(&inner, keys + 1, n - 1, append, value, err, errsize);
        if (r >= 0)
                r = policy_array_set(*c, keys[0], inner);
        value_unref(inner);
        return array_error(r, err, errsize);
}

static bool is_error_result(PolicyValue *v) {
        if (value_type(v) == POLICY_TYPE_NONE)
                return true;
        PolicyValue *e = policy_array_get_str(v, "error");
        return e && value_type(e) != POLICY_TYPE_NONE;
}

static const char *string_opt(PolicyValue *opts, const char *key) {
        PolicyValue *v = policy_array_get_str(opts, key);
        return value_type(v) == POLICY_TYPE_STRING ? policy_value_string(v, NULL) : NULL;
}

/* Reply text goes into an SMTP reply: no control characters, bounded. */
static char *sanitize_reason(PolicyValue *v) {
        size_t len;
        const char *s = policy_value_string(v, &len);
        len = MIN(len, (size_t) REASON_MAX);
        char *out = malloc(len + 1);
        if (!out)
                return NULL;
        for (size_t i = 0; i < len; i++)
                out[i] = ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) ? ' ' : s[i];
        out[len] = 0;
        return out;
}

static int do_verdict(PolicyRun *r, const PolicyBuiltin *b, PolicyValue **args, size_t argc, PolicyLoc loc) {
        PolicyResult *res = &r->result;
        PolicyValue *reason = NULL, *opts = NULL;
        unsigned klass;

        if (strcmp(b->name, "Accept") == 0) {
                res->verdict = POLICY_VERDICT_ACCEPT;
                opts = argc > 0 ? args[0] : NULL;
                res->code = 0;
                klass = 2;
        } else if (strcmp(b->name, "Reject") == 0) {
                res->verdict = POLICY_VERDICT_REJECT;
                reason = argc > 0 ? args[0] : NULL;
                opts = argc > 1 ? args[1] : NULL;
                bool auth = r->phase == POLICY_PHASE_AUTH;
                res->code = auth ? 535 : 550;
                snprintf(res->enhanced, sizeof res->enhanced, auth ? "5.7.8" : "5.7.1");
                klass = 5;
        } else {
                res->verdict = POLICY_VERDICT_DEFER;
                reason = argc > 0 ? args[0] : NULL;
                opts = argc > 1 ? args[1] : NULL;
                res->code = 451;
                snprintf(res->enhanced, sizeof res->enhanced, "4.7.1");
                klass = 4;
        }
        if (opts && value_type(opts) != POLICY_TYPE_NONE && value_type(opts) != POLICY_TYPE_ARRAY)
                return run_fail(r, loc, "%s(): options must be an array", b->name);

        PolicyValue *code = policy_array_get_str(opts, "code");
        if (code) {
                double d = value_type(code) == POLICY_TYPE_NUMBER ? policy_value_number(code) : -1;
                if (!(d >= 200 && d <= 599) || d != floor(d) || (unsigned) (d / 100) != klass)
                        return run_fail(r, loc, "%s(): code must be a %uxx SMTP code", b->name, klass);
                res->code = (unsigned) d;
        }
        PolicyValue *enh = policy_array_get_str(opts, "enhanced");
        if (enh) {
                double p[3];
                if (policy_array_size(enh) != 3)
                        return run_fail(r, loc, "%s(): enhanced must be [class, subject, detail]", b->name);
                for (size_t i = 0; i < 3; i++) {
                        PolicyValue *e = policy_array_value_at(enh, i);
                        if (value_type(e) != POLICY_TYPE_NUMBER)
                                return run_fail(r, loc, "%s(): enhanced must be three numbers", b->name);
                        p[i] = policy_value_number(e);
                        if (p[i] != floor(p[i]) || p[i] < 0 || p[i] > 999)
                                return run_fail(r, loc, "%s(): enhanced code part out of range", b->name);
                }
                if ((unsigned) p[0] != klass)
                        return run_fail(r, loc, "%s(): enhanced code class must be %u", b->name, klass);
                snprintf(res->enhanced, sizeof res->enhanced, "%u.%u.%u", (unsigned) p[0], (unsigned) p[1], (unsigned) p[2]);
        }
        if (!reason || value_type(reason) == POLICY_TYPE_NONE)
                reason = policy_array_get_str(opts, "reason");
        if (reason && value_type(reason) == POLICY_TYPE_STRING) {
                res->reason = sanitize_reason(reason);
                if (!res->reason)
                        return oom(r, loc);
        } else if (reason && value_type(reason) != POLICY_TYPE_NONE)
                return run_fail(r, loc, "%s(): the reason must be a string", b->name);
        PolicyValue *disc = policy_array_get_str(opts, "disconnect");
        res->disconnect = disc && policy_value_truthy(disc);
        const char *user = string_opt(opts, "username");
        if (user && r->phase == POLICY_PHASE_AUTH) {
                res->username = strdup(user);
                if (!res->username)
                        return oom(r, loc);
        }
        value_unref(res->options);
        res->options = value_ref(opts ?: policy_none());
        if (record_at(r, loc) < 0)
                return oom(r, loc);
        r->done = true;
        clear_stack(r);
        return POLICY_RUN_DONE;
}

static bool header_name_valid(PolicyValue *v) {
        size_t len;
        if (value_type(v) != POLICY_TYPE_STRING)
                return false;
        const char *s = policy_value_string(v, &len);
        if (len == 0 || len > 128)
                return false;
        for (size_t i = 0; i < len; i++)
                if ((unsigned char) s[i] < 33 || (unsigned char) s[i] > 126 || s[i] == ':')
                        return false;
        return true;
}

static bool header_value_valid(PolicyValue *v) {
        size_t len;
        if (value_type(v) != POLICY_TYPE_STRING)
                return false;
        const char *s = policy_value_string(v, &len);
        /* The embedder folds; a raw CR or LF here would inject headers. */
        return len <= 65536 && !memchr(s, '\r', len) && !memchr(s, '\n', len) && strlen(s) == len;
}

/* A new reference to one of the generation's words. */
static PolicyValue *word(PolicyRun *r, PolicyWord w) {
        if (r->g->words[w])
                return value_ref(r->g->words[w]);
        return policy_string_new_cstr(policy_words[w]);
}

static int set_field(PolicyRun *r, PolicyValue *a, PolicyWord k, PolicyValue *v) {
        _cleanup_(policy_value_unrefp) PolicyValue *key = word(r, k);
        if (!key)
                return -ENOMEM;
        return policy_array_set(a, key, v ?: policy_none());
}

static int do_action(PolicyRun *r, const PolicyBuiltin *b, PolicyValue **args, size_t argc, PolicyLoc loc) {
        _cleanup_(policy_value_unrefp) PolicyValue *a = policy_array_new(), *at = NULL, *kind = NULL;
        char buf[128];
        char *where = loc_format(r, loc, buf, sizeof buf);
        int k;

        if (where) {
                at = policy_string_new_cstr(where);
                if (where != buf)
                        free(where);
        }
        if (!a || !at)
                return -ENOMEM;
        if (policy_array_size(r->result.actions) >= ACTIONS_MAX)
                return run_fail(r, loc, "more than %u actions", ACTIONS_MAX);

        if (strcmp(b->name, "Queue") == 0) {
                kind = word(r, WORD_QUEUE);
                if (argc > 1 && value_type(args[1]) != POLICY_TYPE_ARRAY && value_type(args[1]) != POLICY_TYPE_NONE)
                        return run_fail(r, loc, "Queue(): options must be an array");
                if ((k = set_field(r, a, WORD_RECIPIENT, args[0])) < 0 ||
                    (k = set_field(r, a, WORD_OPTIONS, argc > 1 ? args[1] : NULL)) < 0)
                        return k;
        } else if (strcmp(b->name, "log") == 0) {
                _cleanup_(policy_value_unrefp) PolicyValue *msg = NULL;
                kind = word(r, WORD_LOG);
                if (value_type(args[0]) != POLICY_TYPE_STRING || !policy_log_level_valid(policy_value_string(args[0], NULL)))
                        return run_fail(r, loc, "log(): unknown level");
                if (policy_value_to_string(args[1], &msg) < 0) {
                        _cleanup_free_ char *j = NULL;
                        if (policy_value_to_json_string(args[1], &j) < 0 || !(msg = policy_string_new_cstr(j)))
                                return run_fail(r, loc, "log(): message cannot be shown");
                }
                if ((k = set_field(r, a, WORD_LEVEL, args[0])) < 0 || (k = set_field(r, a, WORD_MESSAGE, msg)) < 0 ||
                    (k = set_field(r, a, WORD_FIELDS, argc > 2 ? args[2] : NULL)) < 0)
                        return k;
        } else if (strcmp(b->name, "addHeader") == 0 || strcmp(b->name, "setHeader") == 0) {
                kind = word(r, b->name[0] == 'a' ? WORD_ADD_HEADER : WORD_SET_HEADER);
                if (!header_name_valid(args[1]))
                        return run_fail(r, loc, "%s(): invalid header name", b->name);
                if (!header_value_valid(args[2]))
                        return run_fail(r, loc, "%s(): header value must be a string without CR, LF or NUL", b->name);
                if ((k = set_field(r, a, WORD_NAME, args[1])) < 0 || (k = set_field(r, a, WORD_VALUE, args[2])) < 0 ||
                    (k = set_field(r, a, WORD_OPTIONS, argc > 3 ? args[3] : NULL)) < 0)
                        return k;
        } else if (strcmp(b->name, "delHeader") == 0) {
                kind = word(r, WORD_DELETE_HEADER);
                if (!header_name_valid(args[1]))
                        return run_fail(r, loc, "delHeader(): invalid header name");
                if ((k = set_field(r, a, WORD_NAME, args[1])) < 0 ||
                    (k = set_field(r, a, WORD_INDEX, argc > 2 ? args[2] : NULL)) < 0)
                        return k;
        } else
                return run_fail(r, loc, "internal error: unknown action");
        if (!kind)
                return -ENOMEM;
        if ((k = set_field(r, a, WORD_ACTION, kind)) < 0 || (k = set_field(r, a, WORD_AT, at)) < 0)
                return k;
        return policy_array_push(r->result.actions, a);
}

static unsigned call_timeout(const PolicyBuiltin *b, PolicyValue **args, size_t argc) {
        unsigned t = b->timeout_ms;
        size_t oi = b->options_arg >= 0 ? (size_t) b->options_arg + (b->receiver ? 1 : 0) : SIZE_MAX;
        if (oi < argc) {
                PolicyValue *v = policy_array_get_str(args[oi], "timeout");
                if (value_type(v) == POLICY_TYPE_NUMBER) {
                        double s = policy_value_number(v);
                        if (s > 0 && s < 86400)
                                t = (unsigned) (s * 1000);
                }
        }
        return t;
}

/* A lookup never outlives the phase: its timeout is clamped to what is
 * left of the deadline (at least 1 ms, so the embedder still gets a
 * well-formed call and its timer fires at once). */
static unsigned clamp_timeout(PolicyRun *r, unsigned t) {
        if (!r->deadline)
                return t;
        uint64_t now = r->now_usec(r->clock_userdata);
        uint64_t left = now < r->deadline ? (r->deadline - now) / 1000 : 0;
        return (unsigned) MAX(MIN((uint64_t) t, left), (uint64_t) 1);
}

static int cache_put(PolicyRun *r, PolicyValue *v) {
        if (!r->cache_site)
                return 0;
        int k = 0;
        if (r->cache_site->ttl > 0 && !is_error_result(v))
                k = policy_cache_store(r->cache, r->cache_site->namespace ?: "", r->call_name, &r->cache_key, v,
                                       (uint64_t) (r->cache_site->ttl * 1e6), r->cache_site->size,
                                       r->now_usec(r->clock_userdata), r->g->id);
        r->cache_site = NULL;
        return k;
}

/* The name calls and errors show: "dnsbl", "ARC::seal", "Mail->signDKIM".
 * Only qualified names are formatted. */
static const char *builtin_name(PolicyRun *r, const PolicyBuiltin *b) {
        const char *pre = b->receiver ?: b->module, *sep = b->receiver ? "->" : "::";
        if (!pre)
                return b->name;
        size_t lp = strlen(pre), ln = strlen(b->name);
        if (lp + 2 + ln >= sizeof r->call_name_buf)
                return policy_builtin_display_name(b, r->call_name_buf, sizeof r->call_name_buf);
        memcpy(r->call_name_buf, pre, lp);
        memcpy(r->call_name_buf + lp, sep, 2);
        memcpy(r->call_name_buf + lp + 2, b->name, ln + 1);
        return r->call_name_buf;
}

static int call_builtin(PolicyRun *r, const PolicyInsn *in) {
        const PolicyBuiltin *b = policy_builtin_at((size_t) in->a);
        size_t argc = (size_t) in->b;
        PolicyValue **args = &r->stack[r->sp - argc];
        PolicyValue *ret = NULL;
        int k;

        if (!b)
                return run_fail(r, in->loc, "internal error: bad builtin");
        r->call_name = builtin_name(r, b);
        if (!(b->phases & POLICY_PHASE_BIT(r->phase)))
                return run_fail(r, in->loc, "%s() is not available in phase '%s'", r->call_name,
                                policy_phase_to_string(r->phase));
        if (b->receiver) {
                if (value_type(args[0]) != POLICY_TYPE_OBJECT || strcmp(policy_object_class(args[0]), b->receiver) != 0)
                        return run_fail(r, in->loc, "->%s() needs a %s object, not %s", b->name, b->receiver, tname(args[0]));
        }

        if (in->c >= 0 && r->cache && (size_t) in->c < r->g->n_cache_sites) {
                const PolicyCacheSite *site = &r->g->cache_sites[in->c];
                PolicyCacheKey key;
                policy_cache_key(r->cache, site->namespace ?: "", r->call_name, args, argc, site->argv_mask, &key);
                if (!site->force) {
                        k = policy_cache_lookup(r->cache, site->namespace ?: "", r->call_name, &key,
                                                r->now_usec(r->clock_userdata), r->g->id, site->flush_on_reload, &ret);
                        if (k < 0)
                                return oom(r, in->loc);
                        if (k > 0) {
                                pop_n(r, argc);
                                k = push(r, ret);
                                return k < 0 ? run_fail(r, in->loc, "value stack overflow") : 0;
                        }
                }
                r->cache_site = site;
                r->cache_key = key;
        }

        switch (b->kind) {
        case POLICY_BUILTIN_PURE: {
                /* Assigned, not initialised: zeroing all of error[] for every
                 * lower() or length() shows in the profile. */
                PolicyBuiltinCtx ctx;
                ctx.regex = in->d >= 0 && (size_t) in->d < r->g->n_regexes ? r->g->regexes[in->d] : NULL;
                ctx.connection = r->special[SPECIAL_CONNECTION];
                ctx.g = r->g;
                /* Only now() reads the wall clock: no clock_gettime() per call. */
                ctx.now = !b->module && !b->receiver && strcmp(b->name, "now") == 0 ? r->wall_clock(r->clock_userdata) : 0;
                ctx.error[0] = 0;
                if (b->needs_regex && !ctx.regex)
                        return run_fail(r, in->loc, "internal error: regex missing");
                k = b->fn(&ctx, args, argc, &ret);
                if (k == -ENOMEM)
                        return oom(r, in->loc);
                if (k < 0)
                        return run_fail(r, in->loc, "%s", ctx.error[0] ? ctx.error : "builtin failed");
                pop_n(r, argc);
                if (cache_put(r, ret) < 0) {
                        value_unref(ret);
                        return oom(r, in->loc);
                }
                k = push(r, ret);
                return k < 0 ? run_fail(r, in->loc, "value stack overflow") : 0;
        }
        case POLICY_BUILTIN_ACTION:
                k = do_action(r, b, args, argc, in->loc);
                if (r->done)
                        return k;
                if (k == -ENOMEM)
                        return oom(r, in->loc);
                if (k < 0)
                        return run_fail(r, in->loc, "%s(): arguments nested too deeply", b->name);
                pop_n(r, argc);
                return push(r, policy_none());
        case POLICY_BUILTIN_FINAL:
                return do_verdict(r, b, args, argc, in->loc);
        case POLICY_BUILTIN_EXTERNAL:
                r->call_args = calloc(MAX(argc, (size_t) 1), sizeof *r->call_args);
                if (!r->call_args)
                        return oom(r, in->loc);
                for (size_t i = 0; i < argc; i++)
                        r->call_args[i] = value_ref(args[i]);
                r->n_call_args = argc;
                pop_n(r, argc);
                r->call = (PolicyCall) {
                        .name = r->call_name,
                        .args = r->call_args,
                        .n_args = argc,
                        .timeout_ms = clamp_timeout(r, call_timeout(b, r->call_args, argc)),
                        .id = ++r->next_call_id,
                        .file = file_name(r, in->loc),
                        .line = in->loc.line,
                        .col = in->loc.col,
                };
                r->suspended = true;
                return POLICY_RUN_SUSPENDED;
        }
        return run_fail(r, in->loc, "internal error: bad builtin kind");
}

static int fall_off(PolicyRun *r, PolicyLoc loc) {
        PolicyResult *res = &r->result;
        res->by_default = true;
        if (r->phase == POLICY_PHASE_AUTH) {
                res->verdict = POLICY_VERDICT_REJECT;
                res->code = 535;
                snprintf(res->enhanced, sizeof res->enhanced, "5.7.8");
        } else if (r->phase == POLICY_PHASE_RCPTTO) {
                res->verdict = POLICY_VERDICT_REJECT;
                res->code = 550;
                snprintf(res->enhanced, sizeof res->enhanced, "5.7.1");
        } else
                res->verdict = POLICY_VERDICT_NONE;
        int k = record_at(r, loc);
        r->done = true;
        clear_stack(r);
        return k < 0 ? k : POLICY_RUN_DONE;
}

/* Frames move to the heap past FRAMES_INLINE calls deep. */
static int grow_frames(PolicyRun *r) {
        size_t cap = MIN(r->cap_frames * 2, (size_t) FRAMES_MAX);
        Frame *q = reallocarray(r->frames == r->frames_inline ? NULL : r->frames, cap, sizeof *q);
        if (!q)
                return -ENOMEM;
        if (r->frames == r->frames_inline)
                memcpy(q, r->frames_inline, sizeof r->frames_inline);
        r->frames = q;
        r->cap_frames = cap;
        return 0;
}

/* The memory budget counts what variables hold (operands on the stack are
 * transient and bounded by the expression): every store adjusts it. */
static void account(PolicyRun *r, size_t before, size_t after) {
        r->mem = r->mem >= before ? r->mem - before : 0;
        r->mem += after;
}

static bool over_budget(PolicyRun *r) {
        return r->mem > r->mem_budget;
}

/* Stores v (taking the reference) into a variable slot. */
static void set_slot(PolicyRun *r, PolicyValue **slot, PolicyValue *v) {
        account(r, policy_value_size(*slot), policy_value_size(v));
        value_unref(*slot);
        *slot = v;
}

#define CHECK_MEMORY(r, loc)                                                    \
        do {                                                                    \
                if (over_budget(r))                                             \
                        return run_fail(r, loc, "memory budget of %" PRIu64 " bytes exceeded", r->mem_budget); \
        } while (0)

#define CHECK_PUSH(r, v, loc)                                                   \
        do {                                                                    \
                int _k = push(r, v);                                            \
                if (_k == -ENOMEM)                                              \
                        return oom(r, loc);                                     \
                if (_k < 0)                                                     \
                        return run_fail(r, loc, "value stack overflow");        \
        } while (0)

/* One comparison per step instead of two: the next step that is over
 * the budget or due for a look at the clock. */
static void set_next_check(PolicyRun *r) {
        uint64_t over = r->budget == UINT64_MAX ? UINT64_MAX : r->budget + 1;
        uint64_t clock = r->deadline ? (r->steps / DEADLINE_CHECK_EVERY + 1) * DEADLINE_CHECK_EVERY : UINT64_MAX;
        r->next_check = MIN(over, clock);
}

static int run_steps(PolicyRun *r) {
        char err[200];
        int k;

        for (;;) {
                Frame *f = &r->frames[r->n_frames - 1];
                const PolicyInsn *in = &f->code->insns[f->pc++];
                PolicyValue **locals = &r->stack[f->base];

                if (_unlikely_(++r->steps >= r->next_check)) {
                        if (r->steps > r->budget)
                                return run_fail(r, in->loc, "step budget of %" PRIu64 " exceeded", r->budget);
                        if (r->deadline && r->steps % DEADLINE_CHECK_EVERY == 0 &&
                            r->now_usec(r->clock_userdata) >= r->deadline)
                                return run_fail(r, in->loc, "deadline exceeded");
                        set_next_check(r);
                }

                switch ((PolicyOpcode) in->op) {
                case OPC_PUSH_CONST:
                        CHECK_PUSH(r, value_ref(r->g->consts[in->a]), in->loc);
                        break;
                case OPC_LOAD_LOCAL:
                        CHECK_PUSH(r, value_ref(locals[in->a]), in->loc);
                        break;
                case OPC_STORE_LOCAL:
                        set_slot(r, &locals[in->a], pop(r));
                        CHECK_MEMORY(r, in->loc);
                        break;
                case OPC_LOAD_GLOBAL:
                        CHECK_PUSH(r, value_ref(r->g->globals[in->a]), in->loc);
                        break;
                case OPC_LOAD_SPECIAL:
                        CHECK_PUSH(r, value_ref(special_value(r, in->a)), in->loc);
                        break;
                case OPC_STORE_CONTEXT:
                        set_slot(r, &r->special[SPECIAL_CONTEXT], pop(r));
                        CHECK_MEMORY(r, in->loc);
                        break;
                case OPC_SET_PATH: {
                        size_t n = (size_t) in->b;
                        PolicyValue *value = pop(r);
                        PolicyValue **target = in->a < 0 ? &r->special[SPECIAL_CONTEXT] : &locals[in->a];
                        PolicyValue *c = *target;
                        size_t before = policy_value_size(c);
                        *target = policy_none();
                        k = set_path(&c, &r->stack[r->sp - n], n, in->c, value, err, sizeof err);
                        *target = c;
                        account(r, before, policy_value_size(c));
                        value_unref(value);
                        pop_n(r, n);
                        if (k == -ENOMEM)
                                return oom(r, in->loc);
                        if (k < 0)
                                return run_fail(r, in->loc, "%s", err);
                        CHECK_MEMORY(r, in->loc);
                        break;
                }
                case OPC_INDEX: {
                        _cleanup_(policy_value_unrefp) PolicyValue *key = pop(r), *c = pop(r);
                        PolicyValue *v = NULL;
                        k = policy_eval_index(c, key, &v, err, sizeof err);
                        if (k < 0)
                                return run_fail(r, in->loc, "%s", err);
                        CHECK_PUSH(r, v, in->loc);
                        break;
                }
                case OPC_POP:
                        value_unref(pop(r));
                        break;
                case OPC_UNARY: {
                        _cleanup_(policy_value_unrefp) PolicyValue *a = pop(r);
                        PolicyValue *v = NULL;
                        k = policy_eval_unary((PolicyOp) in->a, a, &v, err, sizeof err);
                        if (k == -ENOMEM)
                                return oom(r, in->loc);
                        if (k < 0)
                                return run_fail(r, in->loc, "%s", err);
                        CHECK_PUSH(r, v, in->loc);
                        break;
                }
                case OPC_BINARY: {
                        _cleanup_(policy_value_unrefp) PolicyValue *b = pop(r), *a = pop(r);
                        PolicyValue *v = NULL;
                        k = policy_eval_binary((PolicyOp) in->a, a, b, &v, err, sizeof err);
                        if (k == -ENOMEM)
                                return oom(r, in->loc);
                        if (k < 0)
                                return run_fail(r, in->loc, "%s", err);
                        CHECK_PUSH(r, v, in->loc);
                        break;
                }
                case OPC_TO_BOOL: {
                        PolicyValue *a = pop(r);
                        bool t = policy_value_truthy(a);
                        value_unref(a);
                        CHECK_PUSH(r, policy_bool(t), in->loc);
                        break;
                }
                case OPC_MATCH: {
                        _cleanup_(policy_value_unrefp) PolicyValue *a = pop(r);
                        bool m = false;
                        if (value_type(a) == POLICY_TYPE_STRING) {
                                size_t len;
                                const char *s = policy_value_string(a, &len);
                                m = strlen(s) == len && regexec(r->g->regexes[in->a], s, 0, NULL, 0) == 0;
                        }
                        CHECK_PUSH(r, policy_bool(m), in->loc);
                        break;
                }
                case OPC_JUMP:
                        f->pc = (size_t) in->a;
                        break;
                case OPC_JUMP_IF_FALSE: {
                        PolicyValue *a = pop(r);
                        if (!policy_value_truthy(a))
                                f->pc = (size_t) in->a;
                        value_unref(a);
                        break;
                }
                case OPC_JUMP_IF_NOT_NONE_POP: {
                        PolicyValue *a = pop(r);
                        if (value_type(a) != POLICY_TYPE_NONE)
                                f->pc = (size_t) in->a;
                        value_unref(a);
                        break;
                }
                case OPC_COALESCE:
                        if (value_type(r->stack[r->sp - 1]) != POLICY_TYPE_NONE)
                                f->pc = (size_t) in->a;
                        else
                                value_unref(pop(r));
                        break;
                case OPC_INTERP: {
                        size_t n = (size_t) in->a;
                        PolicyValue *v = NULL;
                        k = policy_eval_concat(&r->stack[r->sp - n], n, &v, err, sizeof err);
                        pop_n(r, n);
                        if (k == -ENOMEM)
                                return oom(r, in->loc);
                        if (k < 0)
                                return run_fail(r, in->loc, "%s", err);
                        CHECK_PUSH(r, v, in->loc);
                        break;
                }
                case OPC_NEW_ARRAY:
                        CHECK_PUSH(r, policy_array_new(), in->loc);
                        break;
                case OPC_ARRAY_PUSH:
                case OPC_ARRAY_SET: {
                        _cleanup_(policy_value_unrefp) PolicyValue *v = pop(r), *key = in->op == OPC_ARRAY_SET ? pop(r) : NULL;
                        PolicyValue **a = &r->stack[r->sp - 1];
                        k = policy_array_unshare(a);
                        if (k >= 0)
                                k = key ? policy_array_set(*a, key, v) : policy_array_push(*a, v);
                        if (k == -ENOMEM)
                                return oom(r, in->loc);
                        if (k == -EINVAL)
                                return run_fail(r, in->loc, "array keys are strings or integers, not %s", tname(key));
                        if (k < 0) {
                                (void) array_error(k, err, sizeof err);
                                return run_fail(r, in->loc, "%s", err);
                        }
                        break;
                }
                case OPC_CALL_BUILTIN:
                        k = call_builtin(r, in);
                        /* POLICY_RUN_DONE is 0: a verdict or failure is seen through r->done. */
                        if (k < 0 || r->done)
                                return k < 0 ? k : POLICY_RUN_DONE;
                        if (k == POLICY_RUN_SUSPENDED)
                                return k;
                        break;
                case OPC_CALL_FUNC: {
                        const PolicyCode *code = &r->g->functions[in->a];
                        size_t argc = (size_t) in->b;
                        PolicyCacheKey key = {};
                        const PolicyCacheSite *site = NULL;
                        if (r->n_frames >= FRAMES_MAX)
                                return run_fail(r, in->loc, "calls nested deeper than %u", FRAMES_MAX);
                        if (in->c >= 0 && r->cache && (size_t) in->c < r->g->n_cache_sites) {
                                PolicyValue *hit = NULL;
                                site = &r->g->cache_sites[in->c];
                                policy_cache_key(r->cache, site->namespace ?: "", code->name, &r->stack[r->sp - argc], argc,
                                                 site->argv_mask, &key);
                                k = site->force ? 0 : policy_cache_lookup(r->cache, site->namespace ?: "", code->name, &key,
                                                                          r->now_usec(r->clock_userdata), r->g->id,
                                                                          site->flush_on_reload, &hit);
                                if (k < 0)
                                        return oom(r, in->loc);
                                if (k > 0) {
                                        pop_n(r, argc);
                                        CHECK_PUSH(r, hit, in->loc);
                                        break;
                                }
                        }
                        size_t base = r->sp - argc;
                        for (size_t i = base; i < r->sp; i++)
                                account(r, 0, policy_value_size(r->stack[i]));
                        for (unsigned i = (unsigned) argc; i < code->n_locals; i++)
                                CHECK_PUSH(r, policy_none(), in->loc);
                        CHECK_MEMORY(r, in->loc);
                        if (r->n_frames == r->cap_frames && grow_frames(r) < 0)
                                return oom(r, in->loc);
                        r->frames[r->n_frames++] = (Frame) {
                                .code = code,
                                .pc = 0,
                                .base = base,
                                .cache_site = site,
                                .cache_key = key,
                        };
                        break;
                }
                case OPC_RETURN: {
                        PolicyValue *v = pop(r);
                        if (f->cache_site) {
                                if (f->cache_site->ttl > 0 && !is_error_result(v))
                                        k = policy_cache_store(r->cache, f->cache_site->namespace ?: "", f->code->name,
                                                               &f->cache_key, v, (uint64_t) (f->cache_site->ttl * 1e6),
                                                               f->cache_site->size, r->now_usec(r->clock_userdata), r->g->id);
                                else
                                        k = 0;
                                f->cache_site = NULL;
                                if (k < 0) {
                                        value_unref(v);
                                        return oom(r, in->loc);
                                }
                        }
                        for (size_t i = f->base; i < f->base + f->code->n_locals && i < r->sp; i++)
                                account(r, policy_value_size(r->stack[i]), 0);
                        pop_n(r, r->sp - f->base);
                        r->n_frames--;
                        if (r->n_frames == 0) {
                                value_unref(v);
                                return fall_off(r, in->loc);
                        }
                        CHECK_PUSH(r, v, in->loc);
                        break;
                }
                case OPC_END:
                        return fall_off(r, in->loc);
                case OPC_FOREACH_INIT: {
                        PolicyValue *c = pop(r);
                        if (value_type(c) == POLICY_TYPE_NONE) {
                                c = policy_array_new();
                                if (!c)
                                        return oom(r, in->loc);
                        } else if (value_type(c) != POLICY_TYPE_ARRAY) {
                                PolicyType t = value_type(c);
                                value_unref(c);
                                return run_fail(r, in->loc, "foreach over a %s", policy_type_name(t));
                        }
                        set_slot(r, &locals[in->a], c);
                        PolicyValue *zero = policy_number_new(0);
                        if (!zero)
                                return oom(r, in->loc);
                        set_slot(r, &locals[in->a + 1], zero);
                        CHECK_MEMORY(r, in->loc);
                        break;
                }
                case OPC_FOREACH_NEXT: {
                        PolicyValue *c = locals[in->a];
                        size_t i = (size_t) policy_value_number(locals[in->a + 1]);
                        if (i >= policy_array_size(c)) {
                                /* Release the snapshot now, not at the end of the handler. */
                                set_slot(r, &locals[in->a], policy_none());
                                f->pc = (size_t) in->d;
                                break;
                        }
                        PolicyValue *next = policy_number_new((double) (i + 1));
                        if (!next)
                                return oom(r, in->loc);
                        if (in->b >= 0)
                                set_slot(r, &locals[in->b], value_ref(policy_array_key_at(c, i)));
                        /* c stays alive: the snapshot slot holds it until the loop ends */
                        set_slot(r, &locals[in->c], value_ref(policy_array_value_at(c, i)));
                        set_slot(r, &locals[in->a + 1], next);
                        CHECK_MEMORY(r, in->loc);
                        break;
                }
                default:
                        return run_fail(r, in->loc, "internal error: bad opcode %u", in->op);
                }
        }
}

int policy_run_step(PolicyRun *r) {
        if (r->done)
                return POLICY_RUN_DONE;
        if (r->suspended)
                return -ESTALE;
        int k = run_steps(r);
        r->result.steps = r->steps;
        return k;
}

const PolicyCall *policy_run_pending(const PolicyRun *r) {
        return r->suspended ? &r->call : NULL;
}

int policy_run_resume(PolicyRun *r, PolicyValue *result) {
        if (!r->suspended || r->done)
                return -ESTALE;
        PolicyLoc loc = r->frames[r->n_frames - 1].code->insns[r->frames[r->n_frames - 1].pc - 1].loc;
        PolicyValue *v = value_ref(result ?: policy_none());
        if (cache_put(r, v) < 0) {
                value_unref(v);
                return oom(r, loc);
        }
        drop_call(r);
        int k = push(r, v);
        if (k == -ENOMEM)
                return oom(r, loc);
        if (k < 0)
                return run_fail(r, loc, "value stack overflow") == POLICY_RUN_DONE ? 0 : -ENOMEM;
        return 0;
}

int policy_run_abort(PolicyRun *r, const char *why) {
        if (r->done)
                return 0;
        PolicyLoc loc = { 0, 0, 0 };
        if (r->n_frames > 0) {
                const Frame *f = &r->frames[r->n_frames - 1];
                loc = f->code->insns[f->pc > 0 ? f->pc - 1 : 0].loc;
        }
        int k = run_fail(r, loc, "%s", why ?: "aborted");
        return k < 0 ? k : 0;
}

const PolicyResult *policy_run_result(const PolicyRun *r) {
        return r->done ? &r->result : NULL;
}

PolicyVerdict policy_result_verdict(const PolicyResult *r) {
        return r->by_default || r->no_handler ? POLICY_VERDICT_NONE : r->verdict;
}

bool policy_result_reply(const PolicyResult *r, bool at_connect, PolicyReply *ret) {
        PolicyVerdict v = policy_result_verdict(r);
        if (v != POLICY_VERDICT_REJECT && v != POLICY_VERDICT_DEFER)
                return false;
        bool reject = v == POLICY_VERDICT_REJECT;
        const char *text = r->reason ?: at_connect ? (reject ? "Service refused" : "Service not available, try again later")
                                                   : (reject ? "Rejected by policy" : "Try again later");
        ret->code = r->code ?: at_connect ? (reject ? 554 : 421) : (reject ? 550 : 451);
        ret->enhanced = r->enhanced[0] ? r->enhanced : reject ? "5.7.1" : "4.7.1";
        /* A reply line stays within RFC 5321's 512 octets (4.5.3.1.5); the
         * greeting also carries the host name, up to 255. */
        size_t i = 0, max = at_connect ? 240 : sizeof ret->text - 1;
        for (; text[i] && i < max; i++)
                ret->text[i] = (unsigned char) text[i] < 0x20 || text[i] == 0x7f ? ' ' : text[i];
        ret->text[i] = 0;
        return true;
}

PolicyValue *policy_run_context(const PolicyRun *r) {
        return r->special[SPECIAL_CONTEXT];
}

int policy_result_to_json(const PolicyResult *res, json_object **ret) {
        _cleanup_(policy_json_putp) json_object *o = json_object_new_object();
        json_object *v = NULL;
        int k;

        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "verdict", json_object_new_string(policy_verdict_to_string(res->verdict)));
        if (res->code)
                json_object_object_add(o, "code", json_object_new_int((int) res->code));
        if (res->enhanced[0])
                json_object_object_add(o, "enhanced", json_object_new_string(res->enhanced));
        if (res->reason)
                json_object_object_add(o, "reason", json_object_new_string(res->reason));
        if (res->disconnect)
                json_object_object_add(o, "disconnect", json_object_new_boolean(true));
        if (res->by_default)
                json_object_object_add(o, "by_default", json_object_new_boolean(true));
        if (res->no_handler)
                json_object_object_add(o, "no_handler", json_object_new_boolean(true));
        if (res->failed)
                json_object_object_add(o, "failed", json_object_new_boolean(true));
        if (res->username)
                json_object_object_add(o, "username", json_object_new_string(res->username));
        if (value_type(res->options) != POLICY_TYPE_NONE) {
                k = policy_value_to_json(res->options, &v);
                if (k < 0)
                        return k;
                json_object_object_add(o, "options", v);
        }
        k = policy_value_to_json(res->actions, &v);
        if (k < 0)
                return k;
        json_object_object_add(o, "actions", v ?: json_object_new_array());
        if (res->error)
                json_object_object_add(o, "error", json_object_new_string(res->error));
        if (res->at)
                json_object_object_add(o, "at", json_object_new_string(res->at));
        json_object_object_add(o, "steps", json_object_new_int64((int64_t) res->steps));
        *ret = TAKE_PTR(o);
        return 0;
}
