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
#define ACTIONS_MAX  10000U
#define REASON_MAX   512U
/* The deadline is read from the clock every this many steps. */
#define DEADLINE_CHECK_EVERY 256U

static char *mfree_char(char *p) {
        free(p);
        return NULL;
}

typedef struct Frame {
        const PolicyCode *code;
        size_t pc;
        size_t base;
        char *cache_key;                /* `cache [...] f()`: store the return value under it */
        const PolicyCacheSite *cache_site;
} Frame;

struct PolicyRun {
        PolicyGeneration *g;
        PolicyPhase phase;
        PolicyValue *special[4]; /* connection, transaction, arguments, context */

        PolicyValue **stack;
        size_t sp, cap;
        Frame frames[FRAMES_MAX];
        size_t n_frames;

        uint64_t steps, budget, deadline;
        uint64_t mem, mem_budget;       /* bytes held by variables and $context */
        uint64_t (*now_usec)(void *userdata);
        double (*wall_clock)(void *userdata);
        void *clock_userdata;
        PolicyCache *cache;
        unsigned error_code;
        char error_enhanced[16];
        char *error_reason;

        bool suspended;
        PolicyCall call;
        PolicyValue **call_args;
        size_t n_call_args;
        uint64_t next_call_id;
        char call_name[96];
        const char *cache_namespace;      /* pending store after resume */
        char *cache_key;
        const PolicyCacheSite *cache_site;

        bool done;
        PolicyResult result;
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
        return policy_type_name(policy_value_type(v));
}

int policy_eval_unary(PolicyOp op, PolicyValue *a, PolicyValue **ret, char *err, size_t errsize) {
        if (op == OP_NOT) {
                *ret = policy_bool(!policy_value_truthy(a));
                return 0;
        }
        if (policy_value_type(a) != POLICY_TYPE_NUMBER)
                return type_error(err, errsize, "'-' needs a number, not %s", tname(a));
        *ret = policy_number_new(-policy_value_number(a));
        return *ret ? 0 : -ENOMEM;
}

int policy_eval_concat(PolicyValue *const *parts, size_t n, PolicyValue **ret, char *err, size_t errsize) {
        _cleanup_free_ PolicyValue **strs = calloc(MAX(n, (size_t) 1), sizeof *strs);
        size_t total = 0, got = 0;
        int r = 0;

        if (!strs)
                return -ENOMEM;
        for (; got < n; got++) {
                r = policy_value_to_string(parts[got], &strs[got]);
                if (r < 0)
                        break;
                size_t len;
                (void) policy_value_string(strs[got], &len);
                total += len;
        }
        if (r == -EINVAL)
                r = type_error(err, errsize, "cannot make a string of %s (use json_encode())", tname(parts[got]));
        else if (r >= 0 && total > POLICY_STRING_MAX)
                r = type_error(err, errsize, "string longer than %u bytes", POLICY_STRING_MAX);
        if (r >= 0) {
                char *buf = malloc(total + 1);
                if (!buf)
                        r = -ENOMEM;
                else {
                        size_t o = 0;
                        for (size_t i = 0; i < n; i++) {
                                size_t len;
                                const char *s = policy_value_string(strs[i], &len);
                                if (len > 0)
                                        memcpy(buf + o, s, len);
                                o += len;
                        }
                        *ret = policy_string_new(buf, total);
                        free(buf);
                        if (!*ret)
                                r = -ENOMEM;
                }
        }
        for (size_t i = 0; i < got; i++)
                policy_value_unref(strs[i]);
        return r;
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
        PolicyType ta = policy_value_type(a), tb = policy_value_type(b);

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
        switch (policy_value_type(c)) {
        case POLICY_TYPE_NONE:
                *ret = policy_none();
                return 0;
        case POLICY_TYPE_ARRAY: {
                if (!policy_key_valid(key)) {
                        if (policy_value_type(key) == POLICY_TYPE_NONE) {
                                *ret = policy_none();
                                return 0;
                        }
                        return type_error(err, errsize, "array keys are strings or integers, not %s", tname(key));
                }
                PolicyValue *v = policy_array_get(c, key);
                *ret = policy_value_ref(v ?: policy_none());
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
                policy_value_unref(r->call_args[i]);
        free(r->call_args);
        r->call_args = NULL;
        r->n_call_args = 0;
        r->suspended = false;
        r->cache_key = mfree_char(r->cache_key);
        r->cache_site = NULL;
}

static void clear_stack(PolicyRun *r) {
        while (r->sp > 0)
                policy_value_unref(r->stack[--r->sp]);
        while (r->n_frames > 0) {
                Frame *f = &r->frames[--r->n_frames];
                f->cache_key = mfree_char(f->cache_key);
        }
}

PolicyRun *policy_run_free(PolicyRun *r) {
        if (!r)
                return NULL;
        drop_call(r);
        clear_stack(r);
        free(r->stack);
        for (size_t i = 0; i < ELEMENTSOF(r->special); i++)
                policy_value_unref(r->special[i]);
        free(r->result.reason);
        free(r->result.username);
        free(r->result.error);
        free(r->result.at);
        policy_value_unref(r->result.options);
        policy_value_unref(r->result.actions);
        free(r->error_reason);
        policy_generation_unref(r->g);
        free(r);
        return NULL;
}

static const char *file_name(PolicyRun *r, PolicyLoc loc) {
        return loc.file < r->g->n_files ? r->g->files[loc.file].path : "?";
}

static char *loc_text(PolicyRun *r, PolicyLoc loc) {
        char *s = NULL;
        if (asprintf(&s, "%s:%u:%u", file_name(r, loc), loc.line, loc.col) < 0)
                return NULL;
        return s;
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

int policy_run_new(PolicyGeneration *g, PolicyPhase phase, const PolicyRunParams *params, PolicyRun **ret) {
        static const PolicyRunParams defaults = {};
        _cleanup_(policy_run_freep) PolicyRun *r = NULL;

        if (phase < 0 || phase >= _POLICY_PHASE_MAX)
                return -EINVAL;
        if (!params)
                params = &defaults;

        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->g = policy_generation_ref(g);
        r->phase = phase;
        r->special[SPECIAL_CONNECTION] = policy_value_ref(params->connection ?: policy_none());
        r->special[SPECIAL_TRANSACTION] = policy_value_ref(params->transaction ?: policy_none());
        r->special[SPECIAL_ARGUMENTS] = policy_value_ref(params->arguments ?: policy_none());
        r->special[SPECIAL_CONTEXT] = policy_value_ref(params->context ?: policy_none());
        r->budget = params->step_budget ?: POLICY_STEP_BUDGET_DEFAULT;
        r->mem_budget = params->memory_budget ?: POLICY_MEMORY_BUDGET_DEFAULT;
        r->mem = policy_value_size(r->special[SPECIAL_CONTEXT]);
        r->deadline = params->deadline_usec;
        r->now_usec = params->now_usec ?: default_now_usec;
        r->wall_clock = params->wall_clock ?: default_wall_clock;
        r->clock_userdata = params->clock_userdata;
        r->cache = params->cache;
        r->error_code = params->error_code ?: 451;
        snprintf(r->error_enhanced, sizeof r->error_enhanced, "%s", params->error_enhanced ?: "4.3.0");
        r->error_reason = strdup(params->error_reason ?: "Temporary policy failure");
        r->result.actions = policy_array_new();
        r->result.options = policy_none();
        if (!r->error_reason || !r->result.actions)
                return -ENOMEM;

        const PolicyCode *code = g->handlers[phase];
        if (!code) {
                r->done = true;
                r->result.no_handler = true;
                *ret = TAKE_PTR(r);
                return 0;
        }
        r->cap = 64;
        r->stack = calloc(r->cap, sizeof *r->stack);
        if (!r->stack)
                return -ENOMEM;
        for (unsigned i = 0; i < code->n_locals; i++)
                r->stack[r->sp++] = policy_none();
        r->frames[0] = (Frame) { .code = code, .pc = 0, .base = 0 };
        r->n_frames = 1;
        *ret = TAKE_PTR(r);
        return 0;
}

static int push(PolicyRun *r, PolicyValue *v) {
        /* Takes the reference. */
        if (!v)
                return -ENOMEM;
        if (r->sp == r->cap) {
                if (r->cap >= STACK_MAX) {
                        policy_value_unref(v);
                        return -E2BIG;
                }
                size_t cap = MIN(r->cap * 2, (size_t) STACK_MAX);
                PolicyValue **q = reallocarray(r->stack, cap, sizeof *q);
                if (!q) {
                        policy_value_unref(v);
                        return -ENOMEM;
                }
                r->stack = q;
                r->cap = cap;
        }
        r->stack[r->sp++] = v;
        return 0;
}

static PolicyValue *pop(PolicyRun *r) {
        return r->stack[--r->sp];
}

static void pop_n(PolicyRun *r, size_t n) {
        for (size_t i = 0; i < n; i++)
                policy_value_unref(pop(r));
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
        if (policy_value_type(*c) == POLICY_TYPE_NONE) {
                PolicyValue *a = policy_array_new();
                if (!a)
                        return -ENOMEM;
                policy_value_unref(*c);
                *c = a;
        }
        if (policy_value_type(*c) != POLICY_TYPE_ARRAY)
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
        PolicyValue *inner = policy_value_ref(policy_array_get(*c, keys[0]) ?: policy_none());
        /* Drop the container's reference first, so an unshared inner array is
         * modified in place instead of copied. */
        r = policy_array_set(*c, keys[0], policy_none());
        if (r >= 0)
                r = set_path(&inner, keys + 1, n - 1, append, value, err, errsize);
        if (r >= 0)
                r = policy_array_set(*c, keys[0], inner);
        policy_value_unref(inner);
        return array_error(r, err, errsize);
}

static bool is_error_result(PolicyValue *v) {
        if (policy_value_type(v) == POLICY_TYPE_NONE)
                return true;
        PolicyValue *e = policy_array_get_str(v, "error");
        return e && policy_value_type(e) != POLICY_TYPE_NONE;
}

static const char *string_opt(PolicyValue *opts, const char *key) {
        PolicyValue *v = policy_array_get_str(opts, key);
        return policy_value_type(v) == POLICY_TYPE_STRING ? policy_value_string(v, NULL) : NULL;
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
        if (opts && policy_value_type(opts) != POLICY_TYPE_NONE && policy_value_type(opts) != POLICY_TYPE_ARRAY)
                return run_fail(r, loc, "%s(): options must be an array", b->name);

        PolicyValue *code = policy_array_get_str(opts, "code");
        if (code) {
                double d = policy_value_type(code) == POLICY_TYPE_NUMBER ? policy_value_number(code) : -1;
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
                        if (policy_value_type(e) != POLICY_TYPE_NUMBER)
                                return run_fail(r, loc, "%s(): enhanced must be three numbers", b->name);
                        p[i] = policy_value_number(e);
                        if (p[i] != floor(p[i]) || p[i] < 0 || p[i] > 999)
                                return run_fail(r, loc, "%s(): enhanced code part out of range", b->name);
                }
                if ((unsigned) p[0] != klass)
                        return run_fail(r, loc, "%s(): enhanced code class must be %u", b->name, klass);
                snprintf(res->enhanced, sizeof res->enhanced, "%u.%u.%u", (unsigned) p[0], (unsigned) p[1], (unsigned) p[2]);
        }
        if (!reason || policy_value_type(reason) == POLICY_TYPE_NONE)
                reason = policy_array_get_str(opts, "reason");
        if (reason && policy_value_type(reason) == POLICY_TYPE_STRING) {
                res->reason = sanitize_reason(reason);
                if (!res->reason)
                        return oom(r, loc);
        } else if (reason && policy_value_type(reason) != POLICY_TYPE_NONE)
                return run_fail(r, loc, "%s(): the reason must be a string", b->name);
        PolicyValue *disc = policy_array_get_str(opts, "disconnect");
        res->disconnect = disc && policy_value_truthy(disc);
        const char *user = string_opt(opts, "username");
        if (user && r->phase == POLICY_PHASE_AUTH) {
                res->username = strdup(user);
                if (!res->username)
                        return oom(r, loc);
        }
        policy_value_unref(res->options);
        res->options = policy_value_ref(opts ?: policy_none());
        res->at = loc_text(r, loc);
        if (!res->at)
                return oom(r, loc);
        r->done = true;
        clear_stack(r);
        return POLICY_RUN_DONE;
}

static bool header_name_valid(PolicyValue *v) {
        size_t len;
        if (policy_value_type(v) != POLICY_TYPE_STRING)
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
        if (policy_value_type(v) != POLICY_TYPE_STRING)
                return false;
        const char *s = policy_value_string(v, &len);
        /* The embedder folds; a raw CR or LF here would inject headers. */
        return len <= 65536 && !memchr(s, '\r', len) && !memchr(s, '\n', len) && strlen(s) == len;
}

static int set_field(PolicyValue *a, const char *k, PolicyValue *v) {
        return policy_array_set_str(a, k, v ?: policy_none());
}

static int do_action(PolicyRun *r, const PolicyBuiltin *b, PolicyValue **args, size_t argc, PolicyLoc loc) {
        _cleanup_(policy_value_unrefp) PolicyValue *a = policy_array_new(), *at = NULL, *kind = NULL;
        _cleanup_free_ char *where = loc_text(r, loc);
        int k;

        if (!a || !where)
                return -ENOMEM;
        if (policy_array_size(r->result.actions) >= ACTIONS_MAX)
                return run_fail(r, loc, "more than %u actions", ACTIONS_MAX);
        at = policy_string_new_cstr(where);
        if (!at)
                return -ENOMEM;

        if (strcmp(b->name, "Queue") == 0) {
                kind = policy_string_new_cstr("queue");
                if (argc > 1 && policy_value_type(args[1]) != POLICY_TYPE_ARRAY && policy_value_type(args[1]) != POLICY_TYPE_NONE)
                        return run_fail(r, loc, "Queue(): options must be an array");
                if ((k = set_field(a, "recipient", args[0])) < 0 || (k = set_field(a, "options", argc > 1 ? args[1] : NULL)) < 0)
                        return k;
        } else if (strcmp(b->name, "log") == 0) {
                _cleanup_(policy_value_unrefp) PolicyValue *msg = NULL;
                kind = policy_string_new_cstr("log");
                if (policy_value_type(args[0]) != POLICY_TYPE_STRING || !policy_log_level_valid(policy_value_string(args[0], NULL)))
                        return run_fail(r, loc, "log(): unknown level");
                if (policy_value_to_string(args[1], &msg) < 0) {
                        _cleanup_free_ char *j = NULL;
                        if (policy_value_to_json_string(args[1], &j) < 0 || !(msg = policy_string_new_cstr(j)))
                                return run_fail(r, loc, "log(): message cannot be shown");
                }
                if ((k = set_field(a, "level", args[0])) < 0 || (k = set_field(a, "message", msg)) < 0 ||
                    (k = set_field(a, "fields", argc > 2 ? args[2] : NULL)) < 0)
                        return k;
        } else if (strcmp(b->name, "addHeader") == 0 || strcmp(b->name, "setHeader") == 0) {
                kind = policy_string_new_cstr(b->name[0] == 'a' ? "add_header" : "set_header");
                if (!header_name_valid(args[1]))
                        return run_fail(r, loc, "%s(): invalid header name", b->name);
                if (!header_value_valid(args[2]))
                        return run_fail(r, loc, "%s(): header value must be a string without CR, LF or NUL", b->name);
                if ((k = set_field(a, "name", args[1])) < 0 || (k = set_field(a, "value", args[2])) < 0 ||
                    (k = set_field(a, "options", argc > 3 ? args[3] : NULL)) < 0)
                        return k;
        } else if (strcmp(b->name, "delHeader") == 0) {
                kind = policy_string_new_cstr("delete_header");
                if (!header_name_valid(args[1]))
                        return run_fail(r, loc, "delHeader(): invalid header name");
                if ((k = set_field(a, "name", args[1])) < 0 || (k = set_field(a, "index", argc > 2 ? args[2] : NULL)) < 0)
                        return k;
        } else
                return run_fail(r, loc, "internal error: unknown action");
        if (!kind)
                return -ENOMEM;
        if ((k = set_field(a, "action", kind)) < 0 || (k = set_field(a, "at", at)) < 0)
                return k;
        return policy_array_push(r->result.actions, a);
}

static unsigned call_timeout(const PolicyBuiltin *b, PolicyValue **args, size_t argc) {
        unsigned t = b->timeout_ms;
        size_t oi = b->options_arg >= 0 ? (size_t) b->options_arg + (b->receiver ? 1 : 0) : SIZE_MAX;
        if (oi < argc) {
                PolicyValue *v = policy_array_get_str(args[oi], "timeout");
                if (policy_value_type(v) == POLICY_TYPE_NUMBER) {
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

/* Cache key: the selected arguments as JSON. */
static int cache_key(const PolicyCacheSite *site, PolicyValue **args, size_t argc, char **ret) {
        _cleanup_(policy_value_unrefp) PolicyValue *sel = policy_array_new();
        if (!sel)
                return -ENOMEM;
        for (size_t i = 0; i < argc; i++)
                if (i >= 32 || (site->argv_mask & (1U << i))) {
                        int r = policy_array_push(sel, args[i]);
                        if (r < 0)
                                return r;
                }
        return policy_value_to_json_string(sel, ret);
}

static int cache_put(PolicyRun *r, PolicyValue *v) {
        if (!r->cache_site || !r->cache_key)
                return 0;
        int k = 0;
        if (r->cache_site->ttl > 0 && !is_error_result(v))
                k = policy_cache_store(r->cache, r->cache_site->namespace ?: "", r->call_name, r->cache_key, v,
                                       (uint64_t) (r->cache_site->ttl * 1e6), r->cache_site->size,
                                       r->now_usec(r->clock_userdata), r->g->id);
        r->cache_key = mfree_char(r->cache_key);
        r->cache_site = NULL;
        return k;
}

static int call_builtin(PolicyRun *r, const PolicyInsn *in) {
        const PolicyBuiltin *b = policy_builtin_at((size_t) in->a);
        size_t argc = (size_t) in->b;
        PolicyValue **args = &r->stack[r->sp - argc];
        PolicyValue *ret = NULL;
        int k;

        if (!b)
                return run_fail(r, in->loc, "internal error: bad builtin");
        policy_builtin_display_name(b, r->call_name, sizeof r->call_name);
        if (!(b->phases & POLICY_PHASE_BIT(r->phase)))
                return run_fail(r, in->loc, "%s() is not available in phase '%s'", r->call_name,
                                policy_phase_to_string(r->phase));
        if (b->receiver) {
                if (policy_value_type(args[0]) != POLICY_TYPE_OBJECT || strcmp(policy_object_class(args[0]), b->receiver) != 0)
                        return run_fail(r, in->loc, "->%s() needs a %s object, not %s", b->name, b->receiver, tname(args[0]));
        }

        if (in->c >= 0 && r->cache && (size_t) in->c < r->g->n_cache_sites) {
                const PolicyCacheSite *site = &r->g->cache_sites[in->c];
                _cleanup_free_ char *key = NULL;
                k = cache_key(site, args, argc, &key);
                if (k < 0)
                        return k == -ENOMEM ? oom(r, in->loc) : run_fail(r, in->loc, "arguments cannot form a cache key");
                if (!site->force) {
                        k = policy_cache_lookup(r->cache, site->namespace ?: "", r->call_name, key,
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
                r->cache_key = TAKE_PTR(key);
        }

        switch (b->kind) {
        case POLICY_BUILTIN_PURE: {
                PolicyBuiltinCtx ctx = {
                        .regex = in->d >= 0 && (size_t) in->d < r->g->n_regexes ? r->g->regexes[in->d] : NULL,
                        .connection = r->special[SPECIAL_CONNECTION],
                        .now = r->wall_clock(r->clock_userdata),
                };
                if (b->needs_regex && !ctx.regex)
                        return run_fail(r, in->loc, "internal error: regex missing");
                k = b->fn(&ctx, args, argc, &ret);
                if (k == -ENOMEM)
                        return oom(r, in->loc);
                if (k < 0)
                        return run_fail(r, in->loc, "%s", ctx.error[0] ? ctx.error : "builtin failed");
                pop_n(r, argc);
                if (cache_put(r, ret) < 0) {
                        policy_value_unref(ret);
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
                        r->call_args[i] = policy_value_ref(args[i]);
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
        res->at = loc_text(r, loc);
        r->done = true;
        clear_stack(r);
        return res->at ? POLICY_RUN_DONE : -ENOMEM;
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
        policy_value_unref(*slot);
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

int policy_run_step(PolicyRun *r) {
        char err[200];
        int k;

        if (r->done)
                return POLICY_RUN_DONE;
        if (r->suspended)
                return -ESTALE;

        for (;;) {
                Frame *f = &r->frames[r->n_frames - 1];
                const PolicyInsn *in = &f->code->insns[f->pc++];
                PolicyValue **locals = &r->stack[f->base];

                r->result.steps = ++r->steps;
                if (r->steps > r->budget)
                        return run_fail(r, in->loc, "step budget of %" PRIu64 " exceeded", r->budget);
                if (r->deadline && r->steps % DEADLINE_CHECK_EVERY == 0 && r->now_usec(r->clock_userdata) >= r->deadline)
                        return run_fail(r, in->loc, "deadline exceeded");

                switch ((PolicyOpcode) in->op) {
                case OPC_PUSH_CONST:
                        CHECK_PUSH(r, policy_value_ref(r->g->consts[in->a]), in->loc);
                        break;
                case OPC_LOAD_LOCAL:
                        CHECK_PUSH(r, policy_value_ref(locals[in->a]), in->loc);
                        break;
                case OPC_STORE_LOCAL:
                        set_slot(r, &locals[in->a], pop(r));
                        CHECK_MEMORY(r, in->loc);
                        break;
                case OPC_LOAD_GLOBAL:
                        CHECK_PUSH(r, policy_value_ref(r->g->globals[in->a]), in->loc);
                        break;
                case OPC_LOAD_SPECIAL:
                        CHECK_PUSH(r, policy_value_ref(special_value(r, in->a)), in->loc);
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
                        policy_value_unref(value);
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
                        policy_value_unref(pop(r));
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
                        policy_value_unref(a);
                        CHECK_PUSH(r, policy_bool(t), in->loc);
                        break;
                }
                case OPC_MATCH: {
                        _cleanup_(policy_value_unrefp) PolicyValue *a = pop(r);
                        bool m = false;
                        if (policy_value_type(a) == POLICY_TYPE_STRING) {
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
                        policy_value_unref(a);
                        break;
                }
                case OPC_JUMP_IF_NOT_NONE_POP: {
                        PolicyValue *a = pop(r);
                        if (policy_value_type(a) != POLICY_TYPE_NONE)
                                f->pc = (size_t) in->a;
                        policy_value_unref(a);
                        break;
                }
                case OPC_COALESCE:
                        if (policy_value_type(r->stack[r->sp - 1]) != POLICY_TYPE_NONE)
                                f->pc = (size_t) in->a;
                        else
                                policy_value_unref(pop(r));
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
                        _cleanup_free_ char *key = NULL;
                        const PolicyCacheSite *site = NULL;
                        if (r->n_frames >= FRAMES_MAX)
                                return run_fail(r, in->loc, "calls nested deeper than %u", FRAMES_MAX);
                        if (in->c >= 0 && r->cache && (size_t) in->c < r->g->n_cache_sites) {
                                PolicyValue *hit = NULL;
                                site = &r->g->cache_sites[in->c];
                                k = cache_key(site, &r->stack[r->sp - argc], argc, &key);
                                if (k == -ENOMEM)
                                        return oom(r, in->loc);
                                if (k < 0)
                                        return run_fail(r, in->loc, "arguments cannot form a cache key");
                                k = site->force ? 0 : policy_cache_lookup(r->cache, site->namespace ?: "", code->name, key,
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
                        r->frames[r->n_frames++] = (Frame) {
                                .code = code,
                                .pc = 0,
                                .base = base,
                                .cache_key = TAKE_PTR(key),
                                .cache_site = site,
                        };
                        break;
                }
                case OPC_RETURN: {
                        PolicyValue *v = pop(r);
                        if (f->cache_key) {
                                if (f->cache_site->ttl > 0 && !is_error_result(v))
                                        k = policy_cache_store(r->cache, f->cache_site->namespace ?: "", f->code->name,
                                                               f->cache_key, v, (uint64_t) (f->cache_site->ttl * 1e6),
                                                               f->cache_site->size, r->now_usec(r->clock_userdata), r->g->id);
                                else
                                        k = 0;
                                f->cache_key = mfree_char(f->cache_key);
                                if (k < 0) {
                                        policy_value_unref(v);
                                        return oom(r, in->loc);
                                }
                        }
                        for (size_t i = f->base; i < f->base + f->code->n_locals && i < r->sp; i++)
                                account(r, policy_value_size(r->stack[i]), 0);
                        pop_n(r, r->sp - f->base);
                        r->n_frames--;
                        if (r->n_frames == 0) {
                                policy_value_unref(v);
                                return fall_off(r, in->loc);
                        }
                        CHECK_PUSH(r, v, in->loc);
                        break;
                }
                case OPC_END:
                        return fall_off(r, in->loc);
                case OPC_FOREACH_INIT: {
                        PolicyValue *c = pop(r);
                        if (policy_value_type(c) == POLICY_TYPE_NONE) {
                                c = policy_array_new();
                                if (!c)
                                        return oom(r, in->loc);
                        } else if (policy_value_type(c) != POLICY_TYPE_ARRAY) {
                                PolicyType t = policy_value_type(c);
                                policy_value_unref(c);
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
                                set_slot(r, &locals[in->b], policy_value_ref(policy_array_key_at(c, i)));
                        /* c stays alive: the snapshot slot holds it until the loop ends */
                        set_slot(r, &locals[in->c], policy_value_ref(policy_array_value_at(c, i)));
                        set_slot(r, &locals[in->a + 1], next);
                        CHECK_MEMORY(r, in->loc);
                        break;
                }
                default:
                        return run_fail(r, in->loc, "internal error: bad opcode %u", in->op);
                }
        }
}

const PolicyCall *policy_run_pending(const PolicyRun *r) {
        return r->suspended ? &r->call : NULL;
}

int policy_run_resume(PolicyRun *r, PolicyValue *result) {
        if (!r->suspended || r->done)
                return -ESTALE;
        PolicyLoc loc = r->frames[r->n_frames - 1].code->insns[r->frames[r->n_frames - 1].pc - 1].loc;
        PolicyValue *v = policy_value_ref(result ?: policy_none());
        if (cache_put(r, v) < 0) {
                policy_value_unref(v);
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
        if (policy_value_type(res->options) != POLICY_TYPE_NONE) {
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
