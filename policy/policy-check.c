/* SPDX-License-Identifier: MIT */
/* The checker: name resolution, the manifest rules, the call graph and the
 * constant folder. It annotates nodes (slot, resolved, builtin, regex,
 * cache_site) for the compiler; policy-check.h lists the rules. */

#include "policy-check.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include "policy-internal.h"
#include "policy-parser.h"

#define LOCALS_MAX 256U
#define CACHE_SIZE_MAX 1000000U

const char *const policy_special_names[_SPECIAL_MAX] = {
        [SPECIAL_CONNECTION] = "connection",
        [SPECIAL_TRANSACTION] = "transaction",
        [SPECIAL_ARGUMENTS] = "arguments",
        [SPECIAL_CONTEXT] = "context",
        [SPECIAL_SENDERIP] = "senderip",
        [SPECIAL_SENDERHELO] = "senderhelo",
        [SPECIAL_SASLUSERNAME] = "saslusername",
};

const char *const *policy_phase_arguments(PolicyPhase p) {
        static const char *const connect[] = { "remoteip", "remoteport", "localip", "localport", "serverid", NULL };
        static const char *const helo[] = { "verb", "host", NULL };
        static const char *const auth[] = { "mechanism", "username", "password", NULL };
        static const char *const mail[] = { "address", "params", NULL };
        static const char *const eod[] = { "mail", NULL };
        static const char *const disconnect[] = { "close", "reply", "error", NULL };
        switch (p) {
        case POLICY_PHASE_CONNECT: return connect;
        case POLICY_PHASE_HELO: return helo;
        case POLICY_PHASE_AUTH: return auth;
        case POLICY_PHASE_MAILFROM:
        case POLICY_PHASE_RCPTTO: return mail;
        case POLICY_PHASE_EOD: return eod;
        case POLICY_PHASE_DISCONNECT: return disconnect;
        default: return NULL;
        }
}

/* ---- symbol tables ---------------------------------------------------------- */

typedef struct Sym {
        const char *name;   /* functions plain, constants with '$' */
        bool is_const;
        bool imported;
        int index;          /* function or global index */
} Sym;

typedef struct SymTab {
        Sym *slots;
        size_t cap, n;
} SymTab;

static uint64_t str_hash(const char *s) {
        uint64_t h = 1469598103934665603ULL;
        for (; *s; s++) {
                h ^= (unsigned char) *s;
                h *= 1099511628211ULL;
        }
        return h;
}

static Sym *symtab_find(const SymTab *t, const char *name) {
        if (t->cap == 0)
                return NULL;
        for (size_t i = str_hash(name) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
                if (!t->slots[i].name)
                        return NULL;
                if (strcmp(t->slots[i].name, name) == 0)
                        return &t->slots[i];
        }
}

static int symtab_add(SymTab *t, Sym s) {
        if ((t->n + 1) * 2 > t->cap) {
                size_t cap = t->cap ? t->cap * 2 : 32;
                Sym *slots = calloc(cap, sizeof *slots);
                if (!slots)
                        return -ENOMEM;
                for (size_t i = 0; i < t->cap; i++) {
                        if (!t->slots[i].name)
                                continue;
                        size_t j = str_hash(t->slots[i].name) & (cap - 1);
                        while (slots[j].name)
                                j = (j + 1) & (cap - 1);
                        slots[j] = t->slots[i];
                }
                free(t->slots);
                t->slots = slots;
                t->cap = cap;
        }
        size_t j = str_hash(s.name) & (t->cap - 1);
        while (t->slots[j].name)
                j = (j + 1) & (t->cap - 1);
        t->slots[j] = s;
        t->n++;
        return 0;
}

/* ---- checker state ------------------------------------------------------------ */

typedef struct Local {
        const char *name;
        int slot;
} Local;

typedef struct Edge {
        int callee;
        PolicyNode *site;
} Edge;

typedef struct Use {
        const PolicyBuiltin *b;
        PolicyNode *site;
} Use;

typedef struct FnInfo {
        Edge *edges;
        size_t n_edges, cap_edges;
        Use *uses;
        size_t n_uses, cap_uses;
        unsigned phases;    /* phases from which it can be reached */
        int color;          /* DFS: 0 white, 1 grey, 2 black */
} FnInfo;

typedef struct Checker {
        PolicyGeneration *g;
        PolicyProgram *prog;
        PolicyDiags *diags;
        SymTab *syms;       /* per file */
        FnInfo *fn;         /* per function */
        size_t *postorder;  /* functions, callees before callers (DFS finish order) */
        size_t n_postorder;
        PolicyNode **cached_calls; /* `cache [...] f()` of user functions */
        size_t n_cached_calls;
        int *global_file;   /* file of each global */
        int *global_state;  /* 0 pending, 1 evaluating, 2 done, 3 failed */
        int *file_state;
        unsigned errors;
        int oom;

        /* current body */
        int file;
        int function;       /* -1 in a handler */
        PolicyPhase phase;  /* _POLICY_PHASE_INVALID in a function */
        Local locals[LOCALS_MAX];
        unsigned n_locals;
        unsigned n_slots;
        SymTab assigned;    /* names the body assigns anywhere */
        unsigned loops;
        bool sealed;        /* an ARC::seal() call came earlier in this body */
} Checker;

static const char *file_path(Checker *ck, const PolicyNode *n) {
        return ck->g->files[n->loc.file].path;
}

_printf_(3, 4)
static void error(Checker *ck, const PolicyNode *n, const char *fmt, ...) {
        char msg[400];
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        ck->errors++;
        policy_diags_add(ck->diags, POLICY_DIAG_ERROR, file_path(ck, n), n->loc.line, n->loc.col, "%s", msg);
}

_printf_(3, 4)
static void warning(Checker *ck, const PolicyNode *n, const char *fmt, ...) {
        char msg[400];
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        policy_diags_add(ck->diags, POLICY_DIAG_WARNING, file_path(ck, n), n->loc.line, n->loc.col, "%s", msg);
}

static const char *bname(const PolicyBuiltin *b, char *buf, size_t size) {
        return policy_builtin_display_name(b, buf, size);
}

static int special_of(const char *name) {
        for (int i = 0; i < _SPECIAL_MAX; i++)
                if (strcmp(name, policy_special_names[i]) == 0)
                        return i;
        return -1;
}

static const char *dollar(Checker *ck, const char *name) {
        size_t n = strlen(name);
        char *s = policy_arena_alloc(ck->g->arena, n + 2);
        if (!s) {
                ck->oom = -ENOMEM;
                return NULL;
        }
        s[0] = '$';
        memcpy(s + 1, name, n + 1);
        return s;
}

static Sym *find_const(Checker *ck, int file, const char *name) {
        char buf[300];
        if (strlen(name) > 256)
                return NULL;
        snprintf(buf, sizeof buf, "$%s", name);
        return symtab_find(&ck->syms[file], buf);
}

static Local *find_local(Checker *ck, const char *name) {
        for (unsigned i = 0; i < ck->n_locals; i++)
                if (strcmp(ck->locals[i].name, name) == 0)
                        return &ck->locals[i];
        return NULL;
}

static int new_slot(Checker *ck, const PolicyNode *at) {
        if (ck->n_slots >= LOCALS_MAX) {
                error(ck, at, "too many local variables (at most %u)", LOCALS_MAX);
                return -1;
        }
        return (int) ck->n_slots++;
}

static int define_local(Checker *ck, const char *name, const PolicyNode *at) {
        Local *l = find_local(ck, name);
        if (l)
                return l->slot;
        if (ck->n_locals >= LOCALS_MAX) {
                error(ck, at, "too many local variables (at most %u)", LOCALS_MAX);
                return -1;
        }
        int slot = new_slot(ck, at);
        if (slot < 0)
                return -1;
        ck->locals[ck->n_locals++] = (Local) { name, slot };
        return slot;
}

static void add_assigned(Checker *ck, const char *name) {
        if (symtab_find(&ck->assigned, name))
                return;
        if (symtab_add(&ck->assigned, (Sym) { .name = name }) < 0)
                ck->oom = -ENOMEM;
}

static bool was_assigned(Checker *ck, const char *name) {
        return symtab_find(&ck->assigned, name) != NULL;
}

static const PolicyNode *lvalue_root(const PolicyNode *n) {
        while (n->kind == NODE_INDEX || n->kind == NODE_APPEND)
                n = n->a;
        return n;
}

/* Names a body assigns anywhere, to tell "used before assignment" from
 * "unknown". */
static void collect_assigned(Checker *ck, const PolicyNode *n) {
        if (!n)
                return;
        switch (n->kind) {
        case NODE_ASSIGN:
                add_assigned(ck, lvalue_root(n->a)->name);
                return;
        case NODE_FOREACH:
                if (n->name)
                        add_assigned(ck, n->name);
                add_assigned(ck, n->name2);
                collect_assigned(ck, n->b);
                return;
        case NODE_BLOCK:
                for (size_t i = 0; i < n->n_items; i++)
                        collect_assigned(ck, n->items[i]);
                return;
        case NODE_IF:
                collect_assigned(ck, n->b);
                collect_assigned(ck, n->c);
                return;
        default:
                return;
        }
}

static void add_use(Checker *ck, const PolicyBuiltin *b, PolicyNode *site) {
        if (ck->function < 0)
                return;
        FnInfo *f = &ck->fn[ck->function];
        if (f->n_uses == f->cap_uses) {
                size_t cap = f->cap_uses ? f->cap_uses * 2 : 8;
                Use *q = reallocarray(f->uses, cap, sizeof *q);
                if (!q) {
                        ck->oom = -ENOMEM;
                        return;
                }
                f->uses = q;
                f->cap_uses = cap;
        }
        f->uses[f->n_uses++] = (Use) { b, site };
}

static void add_edge(Checker *ck, int callee, PolicyNode *site) {
        if (ck->function < 0)
                return;
        FnInfo *f = &ck->fn[ck->function];
        if (f->n_edges == f->cap_edges) {
                size_t cap = f->cap_edges ? f->cap_edges * 2 : 8;
                Edge *q = reallocarray(f->edges, cap, sizeof *q);
                if (!q) {
                        ck->oom = -ENOMEM;
                        return;
                }
                f->edges = q;
                f->cap_edges = cap;
        }
        f->edges[f->n_edges++] = (Edge) { callee, site };
}

static void add_cached_function(Checker *ck, PolicyNode *call) {
        PolicyNode **q = reallocarray(ck->cached_calls, ck->n_cached_calls + 1, sizeof *q);
        if (!q) {
                ck->oom = -ENOMEM;
                return;
        }
        ck->cached_calls = q;
        q[ck->n_cached_calls++] = call;
}

/* ---- builtin call rules ------------------------------------------------------- */

/* Type of an argument if it is known at load, -1 otherwise. */
static int literal_type(const PolicyNode *n) {
        switch (n->kind) {
        case NODE_LITERAL:
                return (int) policy_value_type(n->value);
        case NODE_ARRAY:
                return POLICY_TYPE_ARRAY;
        case NODE_INTERP:
                return POLICY_TYPE_STRING;
        default:
                return -1;
        }
}

static const char *types_text(unsigned mask, char *buf, size_t size) {
        size_t o = 0;
        buf[0] = 0;
        for (int t = 0; t < _POLICY_TYPE_MAX; t++) {
                if (!(mask & POLICY_T(t)))
                        continue;
                int k = snprintf(buf + o, size - o, "%s%s", o ? " or " : "", policy_type_name((PolicyType) t));
                if (k < 0 || (size_t) k >= size - o)
                        break;
                o += (size_t) k;
        }
        return buf;
}

static const char *literal_key(const PolicyNode *item) {
        if (!item->a || item->a->kind != NODE_LITERAL || policy_value_type(item->a->value) != POLICY_TYPE_STRING)
                return NULL;
        return policy_value_string(item->a->value, NULL);
}

static const PolicyNode *option_value(const PolicyNode *opts, const char *key) {
        for (size_t i = 0; i < opts->n_items; i++) {
                const char *k = literal_key(opts->items[i]);
                if (k && strcmp(k, key) == 0)
                        return opts->items[i]->b;
        }
        return NULL;
}

static bool is_number_literal(const PolicyNode *n, double *ret) {
        if (!n || n->kind != NODE_LITERAL || policy_value_type(n->value) != POLICY_TYPE_NUMBER)
                return false;
        *ret = policy_value_number(n->value);
        return true;
}

static void check_verdict_options(Checker *ck, const PolicyBuiltin *b, const PolicyNode *opts) {
        double code, d;
        const PolicyNode *c = option_value(opts, "code");
        unsigned klass = strcmp(b->name, "Reject") == 0 ? 5 : strcmp(b->name, "Defer") == 0 ? 4 : 2;

        if (c && is_number_literal(c, &code)) {
                if (code != floor(code) || code < 200 || code > 599)
                        error(ck, c, "%s(): code must be an SMTP reply code", b->name);
                else if ((unsigned) code / 100 != klass)
                        error(ck, c, "%s(): code %u is not a %uxx code", b->name, (unsigned) code, klass);
        }
        const PolicyNode *e = option_value(opts, "enhanced");
        if (e && e->kind == NODE_ARRAY) {
                if (e->n_items != 3)
                        error(ck, e, "%s(): enhanced must be [class, subject, detail]", b->name);
                else if (is_number_literal(e->items[0]->b, &d) && d != (double) klass)
                        error(ck, e, "%s(): enhanced code class %g does not match %uxx", b->name, d, klass);
                for (size_t i = 0; i < e->n_items; i++)
                        if (is_number_literal(e->items[i]->b, &d) && (d < 0 || d > 999 || d != floor(d)))
                                error(ck, e->items[i], "%s(): enhanced code part out of range", b->name);
        } else if (e && literal_type(e) >= 0)
                error(ck, e, "%s(): enhanced must be [class, subject, detail]", b->name);
}

/* A literal option value must be one of choices (NULL-terminated); a value
 * computed at run time is checked by whoever takes it. */
static void check_option_choice(Checker *ck, const PolicyBuiltin *b, const PolicyNode *opts, const char *key,
                                const char *const *choices) {
        const PolicyNode *v = option_value(opts, key);
        if (!v || v->kind != NODE_LITERAL)
                return;
        const char *s = policy_value_type(v->value) == POLICY_TYPE_STRING ? policy_value_string(v->value, NULL) : NULL;
        char list[160] = "";
        for (size_t i = 0; choices[i]; i++) {
                if (s && strcmp(s, choices[i]) == 0)
                        return;
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", choices[i]);
        }
        error(ck, v, "%s(): %s must be one of %s", b->name, key, list);
}

static void check_sign_options(Checker *ck, const PolicyBuiltin *b, const PolicyNode *opts) {
        static const char *const canonicalizations[] = { "relaxed/relaxed", "relaxed/simple", "simple/relaxed",
                                                         "simple/simple", "relaxed", "simple", NULL };
        static const char *const algorithms[] = { "rsa-sha256", "ed25519-sha256", NULL };
        check_option_choice(ck, b, opts, "canonicalization", canonicalizations);
        check_option_choice(ck, b, opts, "algorithm", algorithms);
}

static void compile_regex(Checker *ck, PolicyNode *at, PolicyNode *lit, regex_t **ret) {
        if (!lit || lit->kind != NODE_LITERAL || policy_value_type(lit->value) != POLICY_TYPE_STRING) {
                error(ck, at, "the regex must be a string literal (it is compiled at load)");
                return;
        }
        size_t len;
        const char *s = policy_value_string(lit->value, &len);
        if (strlen(s) != len) {
                error(ck, lit, "regex contains a NUL byte");
                return;
        }
        regex_t *re = calloc(1, sizeof *re);
        if (!re) {
                ck->oom = -ENOMEM;
                return;
        }
        int r = regcomp(re, s, REG_EXTENDED);
        if (r != 0) {
                char buf[160];
                regerror(r, re, buf, sizeof buf);
                free(re);
                error(ck, lit, "bad regex: %s", buf);
                return;
        }
        if (policy_arena_keep_regex(ck->g->arena, re) < 0) {
                regfree(re);
                free(re);
                ck->oom = -ENOMEM;
                return;
        }
        *ret = re;
}

/* file_lookup(): maps are read with the generation, so the path must be
 * known at load: a string literal or a constant. */
static void check_map_path(Checker *ck, PolicyNode *call) {
        PolicyNode *a = call->items[0];
        PolicyValue *v = NULL;

        if (a->kind == NODE_LITERAL)
                v = a->value;
        else if (a->kind == NODE_VAR && a->resolved == RESOLVE_CONST) {
                if (ck->global_state[a->slot] == 3)
                        return; /* the constant's error is reported */
                v = ck->g->globals[a->slot];
        }
        if (policy_value_type(v) != POLICY_TYPE_STRING) {
                error(ck, a, "file_lookup() needs the map's path as a literal string or a constant: "
                             "maps are loaded with the policy");
                return;
        }
        size_t len;
        const char *path = policy_value_string(v, &len);
        if (len == 0 || strlen(path) != len) {
                error(ck, a, "invalid map path in file_lookup()");
                return;
        }
        int r = policy_generation_add_map(ck->g, path, len, call->loc);
        if (r == -E2BIG)
                error(ck, call, "too many maps (at most %u)", POLICY_MAPS_MAX);
        else if (r < 0)
                ck->oom = r;
}

static void check_builtin_call(Checker *ck, PolicyNode *n, const PolicyBuiltin *b, bool method) {
        char name[96];
        size_t argc = n->n_items;

        bname(b, name, sizeof name);
        if (argc < b->min_args || argc > b->max_args) {
                if (b->min_args == b->max_args)
                        error(ck, n, "%s() takes %u argument%s, %zu given", name, b->min_args,
                              b->min_args == 1 ? "" : "s", argc);
                else
                        error(ck, n, "%s() takes %u to %u arguments, %zu given", name, b->min_args, b->max_args, argc);
                return;
        }
        for (size_t i = 0; i < argc; i++) {
                int t = literal_type(n->items[i]);
                unsigned mask = b->arg_types[i];
                char buf[80];
                if (t >= 0 && mask && !(mask & POLICY_T(t)))
                        error(ck, n->items[i], "argument %zu of %s() must be %s, not %s", i + 1, name,
                              types_text(mask, buf, sizeof buf), policy_type_name((PolicyType) t));
        }
        if (b->options && b->options_arg >= 0 && (size_t) b->options_arg < argc) {
                const PolicyNode *opts = n->items[b->options_arg];
                if (opts->kind == NODE_ARRAY) {
                        for (size_t i = 0; i < opts->n_items; i++) {
                                const PolicyNode *it = opts->items[i];
                                const char *k = literal_key(it);
                                if (!it->a) {
                                        error(ck, it, "options of %s() are key => value pairs", name);
                                        continue;
                                }
                                if (!k)
                                        continue;
                                bool known = false;
                                for (size_t j = 0; b->options[j]; j++)
                                        known = known || strcmp(b->options[j], k) == 0;
                                if (!known)
                                        error(ck, it->a, "unknown option '%.60s' for %s()", k, name);
                        }
                        if (b->kind == POLICY_BUILTIN_FINAL)
                                check_verdict_options(ck, b, opts);
                        else if (strcmp(b->name, "signDKIM") == 0)
                                check_sign_options(ck, b, opts);
                }
        }
        if (!method && strcmp(name, "log") == 0 && argc > 0 && n->items[0]->kind == NODE_LITERAL &&
            policy_value_type(n->items[0]->value) == POLICY_TYPE_STRING &&
            !policy_log_level_valid(policy_value_string(n->items[0]->value, NULL)))
                error(ck, n->items[0], "unknown log level '%.40s' (debug, info, notice, warning, error)",
                      policy_value_string(n->items[0]->value, NULL));
        if (b->needs_regex && argc > 0)
                compile_regex(ck, n, n->items[0], &n->regex);
        if (!method && !b->module && strcmp(b->name, "file_lookup") == 0)
                check_map_path(ck, n);

        /* The ARC seal signs the message as it is then: a later header edit
         * would break it. Checked in source order within one body. */
        if (b->module && strcmp(b->module, "ARC") == 0 && strcmp(b->name, "seal") == 0)
                ck->sealed = true;
        else if (ck->sealed && b->receiver && strcmp(b->receiver, "Mail") == 0 && b->kind == POLICY_BUILTIN_ACTION)
                warning(ck, n, "->%s() after ARC::seal(): the seal does not cover this change", b->name);

        /* Phase availability: direct in a handler, via the call graph in functions. */
        if (ck->function < 0) {
                if (!(b->phases & POLICY_PHASE_BIT(ck->phase)))
                        error(ck, n, "%s() is not available in phase '%s'", name, policy_phase_to_string(ck->phase));
        } else
                add_use(ck, b, n);
}

/* ---- expressions ------------------------------------------------------------- */

static void check_expr(Checker *ck, PolicyNode *n);

static void check_var_read(Checker *ck, PolicyNode *n) {
        int sp = special_of(n->name);
        if (sp >= 0) {
                n->resolved = RESOLVE_SPECIAL;
                n->slot = sp;
                return;
        }
        Local *l = find_local(ck, n->name);
        if (l) {
                n->resolved = RESOLVE_LOCAL;
                n->slot = l->slot;
                return;
        }
        Sym *s = find_const(ck, ck->file, n->name);
        if (s) {
                n->resolved = RESOLVE_CONST;
                n->slot = s->index;
                return;
        }
        if (was_assigned(ck, n->name))
                error(ck, n, "variable $%.60s is used before it is assigned", n->name);
        else
                error(ck, n, "unknown variable $%.60s", n->name);
}

static void check_args(Checker *ck, PolicyNode *n) {
        for (size_t i = 0; i < n->n_items; i++)
                check_expr(ck, n->items[i]);
}

static void check_call(Checker *ck, PolicyNode *n) {
        check_args(ck, n);
        if (!n->module) {
                Sym *s = symtab_find(&ck->syms[ck->file], n->name);
                if (s && !s->is_const) {
                        PolicyNode *fn = ck->prog->functions[s->index];
                        n->resolved = RESOLVE_FUNCTION;
                        n->slot = s->index;
                        if (n->n_items != fn->n_items)
                                error(ck, n, "%.60s() takes %zu argument%s, %zu given", n->name, fn->n_items,
                                      fn->n_items == 1 ? "" : "s", n->n_items);
                        add_edge(ck, s->index, n);
                        return;
                }
        }
        const PolicyBuiltin *b = policy_builtin_find(n->module, n->name);
        if (!b) {
                if (n->module)
                        error(ck, n, "unknown function %.40s::%.60s()", n->module, n->name);
                else
                        error(ck, n, "unknown function %.60s()", n->name);
                return;
        }
        n->resolved = RESOLVE_BUILTIN;
        n->builtin = b;
        check_builtin_call(ck, n, b, false);
}

static void check_cache(Checker *ck, PolicyNode *n) {
        static const char *const known[] = { "ttl", "size", "namespace", "argv_filter", "force", "flush_on_reload" };
        PolicyNode *opts = n->a, *call = n->b;
        PolicyCacheSite site = { .ttl = 60, .size = 1024, .argv_mask = UINT32_MAX };

        check_call(ck, call);
        if (call->resolved == RESOLVE_FUNCTION)
                add_cached_function(ck, call); /* must not act or decide: checked with the call graph */
        const PolicyBuiltin *b = call->builtin;
        if (b && !b->cacheable) {
                char name[96];
                error(ck, call, "%s() cannot be used with cache", bname(b, name, sizeof name));
        }
        for (size_t i = 0; i < opts->n_items; i++) {
                PolicyNode *it = opts->items[i];
                const char *k = literal_key(it);
                if (!k) {
                        error(ck, it, "cache options are literal key => value pairs");
                        continue;
                }
                size_t j;
                for (j = 0; j < ELEMENTSOF(known) && strcmp(known[j], k) != 0; j++)
                        ;
                if (j == ELEMENTSOF(known)) {
                        error(ck, it->a, "unknown cache option '%.60s' (ttl, size, namespace, argv_filter, force, flush_on_reload)", k);
                        continue;
                }
                PolicyNode *v = it->b;
                double d;
                if (strcmp(k, "ttl") == 0 || strcmp(k, "size") == 0) {
                        if (!is_number_literal(v, &d) || d < 0 || d != floor(d) || d > (strcmp(k, "ttl") == 0 ? 31536000 : CACHE_SIZE_MAX) ||
                            (strcmp(k, "size") == 0 && d < 1)) {
                                error(ck, v, "cache option '%s' must be a literal %s", k,
                                      strcmp(k, "ttl") == 0 ? "number of seconds (0 to 31536000)" : "entry count (1 to 1000000)");
                                continue;
                        }
                        if (strcmp(k, "ttl") == 0)
                                site.ttl = d;
                        else
                                site.size = (unsigned) d;
                } else if (strcmp(k, "namespace") == 0) {
                        if (v->kind != NODE_LITERAL || policy_value_type(v->value) != POLICY_TYPE_STRING) {
                                error(ck, v, "cache option 'namespace' must be a string literal");
                                continue;
                        }
                        site.namespace = (char *) policy_value_string(v->value, NULL);
                } else if (strcmp(k, "argv_filter") == 0) {
                        if (v->kind != NODE_ARRAY) {
                                error(ck, v, "cache option 'argv_filter' must be a literal list of argument positions");
                                continue;
                        }
                        site.argv_mask = 0;
                        for (size_t m = 0; m < v->n_items; m++) {
                                if (!is_number_literal(v->items[m]->b, &d) || v->items[m]->a || d != floor(d) || d < 1 ||
                                    d > (double) MAX(call->n_items, (size_t) 1)) {
                                        error(ck, v->items[m], "argv_filter entries are argument positions 1 to %zu",
                                              call->n_items);
                                        continue;
                                }
                                site.argv_mask |= 1U << ((unsigned) d - 1);
                        }
                } else {
                        if (v->kind != NODE_LITERAL || policy_value_type(v->value) != POLICY_TYPE_BOOL) {
                                error(ck, v, "cache option '%s' must be true or false", k);
                                continue;
                        }
                        if (strcmp(k, "force") == 0)
                                site.force = policy_value_bool(v->value);
                        else
                                site.flush_on_reload = policy_value_bool(v->value);
                }
        }
        /* Record the site even on errors: indexes stay dense. */
        PolicyCacheSite *q = reallocarray(ck->g->cache_sites, ck->g->n_cache_sites + 1, sizeof *q);
        PolicyNode **qn = reallocarray(ck->prog->cache_nodes, ck->prog->n_cache_nodes + 1, sizeof *qn);
        if (q)
                ck->g->cache_sites = q;
        if (qn)
                ck->prog->cache_nodes = qn;
        if (!q || !qn) {
                ck->oom = -ENOMEM;
                return;
        }
        n->cache_site = (int) ck->g->n_cache_sites;
        ck->g->cache_sites[ck->g->n_cache_sites++] = site;
        ck->prog->cache_nodes[ck->prog->n_cache_nodes++] = n;
}

static void check_expr(Checker *ck, PolicyNode *n) {
        if (ck->oom)
                return;
        switch (n->kind) {
        case NODE_LITERAL:
                return;
        case NODE_INTERP:
        case NODE_ARRAY:
                for (size_t i = 0; i < n->n_items; i++)
                        check_expr(ck, n->items[i]);
                return;
        case NODE_ITEM:
                if (n->a)
                        check_expr(ck, n->a);
                check_expr(ck, n->b);
                return;
        case NODE_VAR:
                check_var_read(ck, n);
                return;
        case NODE_INDEX:
                check_expr(ck, n->a);
                check_expr(ck, n->b);
                if (n->a->kind == NODE_VAR && n->a->resolved == RESOLVE_SPECIAL && n->a->slot == SPECIAL_ARGUMENTS &&
                    ck->function < 0 && n->b->kind == NODE_LITERAL &&
                    policy_value_type(n->b->value) == POLICY_TYPE_STRING) {
                        const char *k = policy_value_string(n->b->value, NULL);
                        const char *const *args = policy_phase_arguments(ck->phase);
                        bool found = false;
                        for (size_t i = 0; args && args[i]; i++)
                                found = found || strcmp(args[i], k) == 0;
                        if (!found)
                                error(ck, n->b, "$arguments[\"%.40s\"] is not available in phase '%s'", k,
                                      policy_phase_to_string(ck->phase));
                }
                return;
        case NODE_CALL:
                check_call(ck, n);
                return;
        case NODE_METHOD: {
                check_expr(ck, n->a);
                check_args(ck, n);
                const PolicyBuiltin *b = policy_builtin_find_method(n->name);
                if (!b) {
                        error(ck, n, "unknown method ->%.60s()", n->name);
                        return;
                }
                n->resolved = RESOLVE_BUILTIN;
                n->builtin = b;
                check_builtin_call(ck, n, b, true);
                return;
        }
        case NODE_CACHE:
                check_cache(ck, n);
                return;
        case NODE_UNARY:
                check_expr(ck, n->a);
                return;
        case NODE_BINARY:
                check_expr(ck, n->a);
                check_expr(ck, n->b);
                if ((n->op == OP_EQ || n->op == OP_NE) && n->a->kind == NODE_LITERAL && n->b->kind == NODE_LITERAL) {
                        PolicyType ta = policy_value_type(n->a->value), tb = policy_value_type(n->b->value);
                        if ((ta == POLICY_TYPE_BOOL && tb == POLICY_TYPE_NUMBER) ||
                            (ta == POLICY_TYPE_NUMBER && tb == POLICY_TYPE_BOOL))
                                warning(ck, n, "a number never equals a bool ('==' does not convert)");
                }
                return;
        case NODE_COALESCE:
                /* `$x ?? default` is how a script asks "assigned yet?": a local
                 * assigned later in the body reads as none here. */
                if (n->a->kind == NODE_VAR && special_of(n->a->name) < 0 && !find_local(ck, n->a->name) &&
                    !find_const(ck, ck->file, n->a->name) && was_assigned(ck, n->a->name)) {
                        n->a->resolved = RESOLVE_LOCAL;
                        n->a->slot = define_local(ck, n->a->name, n->a);
                } else
                        check_expr(ck, n->a);
                check_expr(ck, n->b);
                return;
        case NODE_AND:
        case NODE_OR:
                check_expr(ck, n->a);
                check_expr(ck, n->b);
                return;
        case NODE_TERNARY:
                check_expr(ck, n->a);
                check_expr(ck, n->b);
                check_expr(ck, n->c);
                return;
        case NODE_MATCH:
                check_expr(ck, n->a);
                compile_regex(ck, n, n->b, &n->regex);
                return;
        default:
                error(ck, n, "internal error: unexpected node in expression");
                return;
        }
}

/* ---- statements -------------------------------------------------------------- */

static bool is_final_call(const PolicyNode *s) {
        if (s->kind != NODE_EXPR || s->a->kind != NODE_CALL)
                return false;
        const PolicyBuiltin *b = s->a->builtin;
        return b && b->kind == POLICY_BUILTIN_FINAL;
}

static void check_lvalue(Checker *ck, PolicyNode *lv, PolicyNode *assign) {
        /* Keys first: they are evaluated before the store. */
        for (PolicyNode *p = lv; p->kind == NODE_INDEX || p->kind == NODE_APPEND; p = p->a)
                if (p->kind == NODE_INDEX)
                        check_expr(ck, p->b);
        PolicyNode *root = (PolicyNode *) lvalue_root(lv);
        int sp = special_of(root->name);
        if (sp == SPECIAL_CONTEXT) {
                root->resolved = RESOLVE_SPECIAL;
                root->slot = sp;
                return;
        }
        if (sp >= 0) {
                error(ck, root, "cannot assign to read-only variable $%s", root->name);
                return;
        }
        if (find_const(ck, ck->file, root->name) && !find_local(ck, root->name)) {
                error(ck, root, "cannot assign to constant $%.60s", root->name);
                return;
        }
        root->resolved = RESOLVE_LOCAL;
        root->slot = define_local(ck, root->name, root);
}

/* Returns true when the statement always ends the handler or function (a
 * verdict or return on every path), or leaves the loop (break/continue). */
static bool check_stmt(Checker *ck, PolicyNode *s) {
        if (ck->oom)
                return false;
        switch (s->kind) {
        case NODE_BLOCK: {
                bool ends = false;
                for (size_t i = 0; i < s->n_items; i++) {
                        if (ends) {
                                warning(ck, s->items[i], "unreachable code");
                                ends = false; /* warn once per block */
                                for (size_t j = i; j < s->n_items; j++)
                                        (void) check_stmt(ck, s->items[j]);
                                return true;
                        }
                        ends = check_stmt(ck, s->items[i]);
                }
                return ends;
        }
        case NODE_IF: {
                check_expr(ck, s->a);
                bool a = check_stmt(ck, s->b);
                bool b = s->c ? check_stmt(ck, s->c) : false;
                return a && b;
        }
        case NODE_FOREACH: {
                check_expr(ck, s->a);
                s->slot = new_slot(ck, s);
                (void) new_slot(ck, s); /* the iterator's position */
                s->slot_key = s->name ? define_local(ck, s->name, s) : -1;
                s->slot_value = define_local(ck, s->name2, s);
                if (s->name && special_of(s->name) >= 0)
                        error(ck, s, "cannot assign to read-only variable $%s", s->name);
                if (special_of(s->name2) >= 0)
                        error(ck, s, "cannot assign to read-only variable $%s", s->name2);
                ck->loops++;
                (void) check_stmt(ck, s->b);
                ck->loops--;
                return false;
        }
        case NODE_BREAK:
        case NODE_CONTINUE:
                if (ck->loops == 0)
                        error(ck, s, "'%s' outside foreach", s->kind == NODE_BREAK ? "break" : "continue");
                return true;
        case NODE_RETURN:
                if (s->a) {
                        if (ck->function < 0)
                                error(ck, s, "a handler cannot return a value (end it with a verdict)");
                        check_expr(ck, s->a);
                }
                return true;
        case NODE_ASSIGN:
                /* With ??= the compiler also reads the target, through the
                 * resolution check_lvalue() records (an unassigned local reads
                 * as none there). */
                check_expr(ck, s->b);
                check_lvalue(ck, s->a, s);
                return false;
        case NODE_EXPR:
                check_expr(ck, s->a);
                return is_final_call(s);
        default:
                error(ck, s, "internal error: unexpected statement");
                return false;
        }
}

static void body_begin(Checker *ck, int file, int function, PolicyPhase phase) {
        ck->file = file;
        ck->function = function;
        ck->phase = phase;
        ck->n_locals = 0;
        ck->n_slots = 0;
        free(ck->assigned.slots);
        ck->assigned = (SymTab) {};
        ck->loops = 0;
        ck->sealed = false;
}

static void check_function(Checker *ck, int index) {
        PolicyNode *fn = ck->prog->functions[index];
        body_begin(ck, (int) fn->loc.file, index, _POLICY_PHASE_INVALID);
        for (size_t i = 0; i < fn->n_items; i++) {
                PolicyNode *pv = fn->items[i];
                if (special_of(pv->name) >= 0)
                        error(ck, pv, "parameter $%s shadows a read-only variable", pv->name);
                if (find_local(ck, pv->name))
                        error(ck, pv, "duplicate parameter $%.60s", pv->name);
                pv->slot = define_local(ck, pv->name, pv);
        }
        collect_assigned(ck, fn->b);
        (void) check_stmt(ck, fn->b);
        fn->slot = (int) ck->n_slots; /* locals needed */
}

static void check_handler(Checker *ck, PolicyNode *h) {
        body_begin(ck, (int) h->loc.file, -1, h->phase);
        collect_assigned(ck, h->b);
        bool ends = check_stmt(ck, h->b);
        h->slot = (int) ck->n_slots;
        if (!ends && h->phase == POLICY_PHASE_RCPTTO)
                warning(ck, h, "handler 'rcptto' can end without a verdict; then smtpd's built-in relay rules decide");
        if (!ends && h->phase == POLICY_PHASE_AUTH)
                warning(ck, h, "handler 'auth' can end without a verdict; then the password file decides");
}

/* ---- call graph ----------------------------------------------------------------- */

/* Iterative DFS with an explicit stack: a long call chain must not deepen
 * the C stack. */
static void check_recursion(Checker *ck) {
        size_t n = ck->prog->n_functions;
        if (n == 0)
                return;
        size_t *stack_fn = calloc(n, sizeof *stack_fn);
        size_t *stack_edge = calloc(n, sizeof *stack_edge);
        ck->postorder = calloc(n, sizeof *ck->postorder);
        if (!stack_fn || !stack_edge || !ck->postorder) {
                free(stack_fn);
                free(stack_edge);
                ck->oom = -ENOMEM;
                return;
        }
        for (size_t root = 0; root < n; root++) {
                if (ck->fn[root].color != 0)
                        continue;
                size_t sp = 0;
                stack_fn[sp] = root;
                stack_edge[sp] = 0;
                ck->fn[root].color = 1;
                sp++;
                while (sp > 0) {
                        size_t f = stack_fn[sp - 1];
                        FnInfo *fi = &ck->fn[f];
                        if (stack_edge[sp - 1] >= fi->n_edges) {
                                fi->color = 2;
                                ck->postorder[ck->n_postorder++] = f;
                                sp--;
                                continue;
                        }
                        Edge *e = &fi->edges[stack_edge[sp - 1]++];
                        FnInfo *ci = &ck->fn[e->callee];
                        if (ci->color == 1) {
                                error(ck, e->site, "recursion is not allowed: %.60s() calls %.60s(), which is already being called",
                                      ck->prog->functions[f]->name, ck->prog->functions[e->callee]->name);
                                continue;
                        }
                        if (ci->color == 0) {
                                ci->color = 1;
                                stack_fn[sp] = (size_t) e->callee;
                                stack_edge[sp] = 0;
                                sp++;
                        }
                }
        }
        free(stack_fn);
        free(stack_edge);
}

/* Which phases reach each function: handlers' direct calls, then along the
 * (acyclic) edges until nothing changes. */
static void check_function_phases(Checker *ck) {
        /* Callers before callees: one pass in reverse finish order suffices
         * (with recursion, already reported, the result is only partial). */
        for (size_t k = ck->n_postorder; k > 0; k--) {
                size_t f = ck->postorder[k - 1];
                for (size_t e = 0; e < ck->fn[f].n_edges; e++)
                        ck->fn[ck->fn[f].edges[e].callee].phases |= ck->fn[f].phases;
        }
        for (size_t f = 0; f < ck->prog->n_functions; f++)
                for (size_t u = 0; u < ck->fn[f].n_uses; u++) {
                        const Use *use = &ck->fn[f].uses[u];
                        unsigned bad = ck->fn[f].phases & ~use->b->phases;
                        if (!bad)
                                continue;
                        int p = __builtin_ctz(bad);
                        char name[96];
                        error(ck, use->site, "%s() is not available in phase '%s' (function %.60s() is called from there)",
                              bname(use->b, name, sizeof name), policy_phase_to_string((PolicyPhase) p),
                              ck->prog->functions[f]->name);
                }
}

/* A cached function's result replaces the call on a hit, so the function
 * must not do anything else: no verdicts, actions, or calls with effects or
 * per-transaction answers (the builtins that are not cacheable), also
 * through the functions it calls. Callees come first in postorder. */
static void check_cached_functions(Checker *ck) {
        size_t n = ck->prog->n_functions;
        if (ck->n_cached_calls == 0 || n == 0)
                return;
        const PolicyBuiltin **why = calloc(n, sizeof *why);
        if (!why) {
                ck->oom = -ENOMEM;
                return;
        }
        for (size_t k = 0; k < ck->n_postorder; k++) {
                size_t f = ck->postorder[k];
                for (size_t u = 0; u < ck->fn[f].n_uses && !why[f]; u++) {
                        const PolicyBuiltin *b = ck->fn[f].uses[u].b;
                        if (b->kind == POLICY_BUILTIN_FINAL || b->kind == POLICY_BUILTIN_ACTION ||
                            (b->kind == POLICY_BUILTIN_EXTERNAL && !b->cacheable))
                                why[f] = b;
                }
                for (size_t e = 0; e < ck->fn[f].n_edges && !why[f]; e++)
                        why[f] = why[ck->fn[f].edges[e].callee];
        }
        for (size_t i = 0; i < ck->n_cached_calls; i++) {
                const PolicyNode *call = ck->cached_calls[i];
                const PolicyBuiltin *b = why[call->slot];
                char name[96];
                if (b)
                        error(ck, call, "%.60s() cannot be used with cache: it calls %s()", call->name,
                              bname(b, name, sizeof name));
        }
        free(why);
}

/* Marks the phases of functions called directly from handlers. */
static void mark_handler_calls(Checker *ck, const PolicyNode *n, unsigned phase_bit) {
        if (!n)
                return;
        if (n->kind == NODE_CALL && n->resolved == RESOLVE_FUNCTION)
                ck->fn[n->slot].phases |= phase_bit;
        mark_handler_calls(ck, n->a, phase_bit);
        mark_handler_calls(ck, n->b, phase_bit);
        mark_handler_calls(ck, n->c, phase_bit);
        for (size_t i = 0; i < n->n_items; i++)
                mark_handler_calls(ck, n->items[i], phase_bit);
}

/* ---- constants ------------------------------------------------------------------ */

static int eval_file_consts(Checker *ck, int file);

static int const_eval(Checker *ck, PolicyNode *n, PolicyValue **ret) {
        char err[200] = "";
        int r;

        switch (n->kind) {
        case NODE_LITERAL:
                *ret = policy_value_ref(n->value);
                return 0;
        case NODE_VAR: {
                Sym *s = special_of(n->name) < 0 ? find_const(ck, ck->file, n->name) : NULL;
                if (!s) {
                        error(ck, n, "$%.60s is not a constant", n->name);
                        return -EINVAL;
                }
                int f = ck->global_file[s->index];
                if (f != ck->file && ck->file_state[f] == 0) {
                        int saved = ck->file;
                        r = eval_file_consts(ck, f);
                        ck->file = saved;
                        if (r < 0)
                                return r;
                }
                if (ck->global_state[s->index] == 3)
                        return -EINVAL; /* already reported */
                if (ck->global_state[s->index] != 2) {
                        error(ck, n, f == ck->file ? "constant $%.60s is used before its definition"
                                                   : "constant $%.60s depends on this file's constants (import cycle)", n->name);
                        return -EINVAL;
                }
                n->resolved = RESOLVE_CONST;
                n->slot = s->index;
                *ret = policy_value_ref(ck->g->globals[s->index]);
                return 0;
        }
        case NODE_ARRAY: {
                _cleanup_(policy_value_unrefp) PolicyValue *a = policy_array_new();
                if (!a)
                        return -ENOMEM;
                for (size_t i = 0; i < n->n_items; i++) {
                        PolicyNode *it = n->items[i];
                        _cleanup_(policy_value_unrefp) PolicyValue *k = NULL, *v = NULL;
                        if (it->a && (r = const_eval(ck, it->a, &k)) < 0)
                                return r;
                        if ((r = const_eval(ck, it->b, &v)) < 0)
                                return r;
                        r = k ? policy_array_set(a, k, v) : policy_array_push(a, v);
                        if (r == -EINVAL) {
                                error(ck, it, "array keys are strings or integers");
                                return r;
                        }
                        if (r == -ELOOP) {
                                error(ck, it, "arrays nested deeper than %u levels", POLICY_VALUE_DEPTH_MAX);
                                return -EINVAL;
                        }
                        if (r < 0)
                                return r;
                }
                *ret = TAKE_PTR(a);
                return 0;
        }
        case NODE_INTERP: {
                _cleanup_free_ PolicyValue **parts = calloc(MAX(n->n_items, (size_t) 1), sizeof *parts);
                size_t got = 0;
                if (!parts)
                        return -ENOMEM;
                r = 0;
                for (; got < n->n_items; got++)
                        if ((r = const_eval(ck, n->items[got], &parts[got])) < 0)
                                break;
                if (r >= 0)
                        r = policy_eval_concat(parts, got, ret, err, sizeof err);
                for (size_t i = 0; i < got; i++)
                        policy_value_unref(parts[i]);
                if (r < 0 && !err[0])
                        return r; /* a part's error, already reported */
                break;
        }
        case NODE_UNARY: {
                _cleanup_(policy_value_unrefp) PolicyValue *a = NULL;
                if ((r = const_eval(ck, n->a, &a)) < 0)
                        return r;
                r = policy_eval_unary(n->op, a, ret, err, sizeof err);
                break;
        }
        case NODE_BINARY: {
                _cleanup_(policy_value_unrefp) PolicyValue *a = NULL, *b = NULL;
                if ((r = const_eval(ck, n->a, &a)) < 0 || (r = const_eval(ck, n->b, &b)) < 0)
                        return r;
                r = policy_eval_binary(n->op, a, b, ret, err, sizeof err);
                break;
        }
        case NODE_INDEX: {
                _cleanup_(policy_value_unrefp) PolicyValue *a = NULL, *b = NULL;
                if ((r = const_eval(ck, n->a, &a)) < 0 || (r = const_eval(ck, n->b, &b)) < 0)
                        return r;
                r = policy_eval_index(a, b, ret, err, sizeof err);
                break;
        }
        case NODE_COALESCE:
        case NODE_AND:
        case NODE_OR: {
                _cleanup_(policy_value_unrefp) PolicyValue *a = NULL, *b = NULL;
                if ((r = const_eval(ck, n->a, &a)) < 0 || (r = const_eval(ck, n->b, &b)) < 0)
                        return r;
                if (n->kind == NODE_COALESCE)
                        *ret = policy_value_ref(policy_value_type(a) != POLICY_TYPE_NONE ? a : b);
                else if (n->kind == NODE_AND)
                        *ret = policy_bool(policy_value_truthy(a) && policy_value_truthy(b));
                else
                        *ret = policy_bool(policy_value_truthy(a) || policy_value_truthy(b));
                return 0;
        }
        case NODE_TERNARY: {
                _cleanup_(policy_value_unrefp) PolicyValue *c = NULL;
                if ((r = const_eval(ck, n->a, &c)) < 0)
                        return r;
                return const_eval(ck, policy_value_truthy(c) ? n->b : n->c, ret);
        }
        default:
                error(ck, n, "a const initialiser must be a constant expression (literals, arrays, operators, other constants)");
                return -EINVAL;
        }
        if (r == -EINVAL)
                error(ck, n, "%s", err);
        return r;
}

static int eval_file_consts(Checker *ck, int file) {
        PolicyFile *f = &ck->g->files[file];
        ck->file_state[file] = 1;
        for (size_t i = 0; i < f->n_decls; i++) {
                PolicyNode *d = f->decls[i];
                if (d->kind != NODE_CONST || d->slot < 0 || ck->global_state[d->slot] != 0)
                        continue;
                ck->file = file;
                ck->global_state[d->slot] = 1;
                PolicyValue *v = NULL;
                int r = const_eval(ck, d->a, &v);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        ck->global_state[d->slot] = 3;
                        ck->g->globals[d->slot] = policy_none();
                        continue;
                }
                ck->g->globals[d->slot] = v;
                ck->global_state[d->slot] = 2;
        }
        ck->file_state[file] = 2;
        return 0;
}

/* ---- declarations ---------------------------------------------------------------- */

static int collect_decls(Checker *ck) {
        PolicyGeneration *g = ck->g;
        int r;

        for (size_t fi = 0; fi < g->n_files; fi++) {
                PolicyFile *f = &g->files[fi];
                for (size_t i = 0; i < f->n_decls; i++) {
                        PolicyNode *d = f->decls[i];
                        switch (d->kind) {
                        case NODE_HANDLER:
                                if (!f->is_entry) {
                                        error(ck, d, "handlers ('on %s') are only allowed in the entry file", d->name);
                                        break;
                                }
                                if (ck->prog->handlers[d->phase]) {
                                        error(ck, d, "duplicate handler for phase '%s'", d->name);
                                        break;
                                }
                                ck->prog->handlers[d->phase] = d;
                                break;
                        case NODE_FUNCTION: {
                                if (policy_builtin_find(NULL, d->name)) {
                                        error(ck, d, "function %.60s() would hide the builtin of the same name", d->name);
                                        break;
                                }
                                if (symtab_find(&ck->syms[fi], d->name)) {
                                        error(ck, d, "duplicate function %.60s()", d->name);
                                        break;
                                }
                                PolicyNode **q = reallocarray(ck->prog->functions, ck->prog->n_functions + 1, sizeof *q);
                                if (!q)
                                        return -ENOMEM;
                                ck->prog->functions = q;
                                q[ck->prog->n_functions] = d;
                                r = symtab_add(&ck->syms[fi], (Sym) { d->name, false, false, (int) ck->prog->n_functions });
                                if (r < 0)
                                        return r;
                                ck->prog->n_functions++;
                                break;
                        }
                        case NODE_CONST: {
                                const char *name = dollar(ck, d->name);
                                if (!name)
                                        return -ENOMEM;
                                if (special_of(d->name) >= 0) {
                                        error(ck, d, "constant $%s would hide a read-only variable", d->name);
                                        break;
                                }
                                if (symtab_find(&ck->syms[fi], name)) {
                                        error(ck, d, "duplicate constant $%.60s", d->name);
                                        break;
                                }
                                PolicyNode **q = reallocarray(ck->prog->globals, ck->prog->n_globals + 1, sizeof *q);
                                if (!q)
                                        return -ENOMEM;
                                ck->prog->globals = q;
                                q[ck->prog->n_globals] = d;
                                d->slot = (int) ck->prog->n_globals;
                                r = symtab_add(&ck->syms[fi], (Sym) { name, true, false, d->slot });
                                if (r < 0)
                                        return r;
                                ck->prog->n_globals++;
                                break;
                        }
                        default:
                                break;
                        }
                }
        }

        /* Imports bind names declared in the target file itself (no re-export). */
        for (size_t fi = 0; fi < g->n_files; fi++) {
                PolicyFile *f = &g->files[fi];
                for (size_t i = 0; i < f->n_decls; i++) {
                        PolicyNode *d = f->decls[i];
                        if (d->kind != NODE_IMPORT || d->slot < 0)
                                continue;
                        for (size_t k = 0; k < d->n_items; k++) {
                                PolicyNode *nm = d->items[k];
                                bool is_const = nm->kind == NODE_VAR;
                                const char *key = is_const ? dollar(ck, nm->name) : nm->name;
                                if (!key)
                                        return -ENOMEM;
                                Sym *s = symtab_find(&ck->syms[d->slot], key);
                                if (!s || s->imported || s->is_const != is_const) {
                                        error(ck, nm, "%s does not define %s%.60s%s", g->files[d->slot].path,
                                              is_const ? "constant " : "function ", key, is_const ? "" : "()");
                                        continue;
                                }
                                Sym *mine = symtab_find(&ck->syms[fi], key);
                                if (mine) {
                                        if (mine->index == s->index && mine->is_const == s->is_const)
                                                continue; /* imported twice: harmless */
                                        error(ck, nm, "%.60s is already defined in this file", key);
                                        continue;
                                }
                                r = symtab_add(&ck->syms[fi], (Sym) { key, is_const, true, s->index });
                                if (r < 0)
                                        return r;
                        }
                }
        }
        return 0;
}

void policy_program_done(PolicyProgram *p) {
        free(p->functions);
        free(p->globals);
        free(p->cache_nodes);
        *p = (PolicyProgram) {};
}

int policy_check(PolicyGeneration *g, PolicyProgram *prog, PolicyDiags *diags) {
        Checker ck = {
                .g = g,
                .prog = prog,
                .diags = diags,
        };
        int r;

        ck.syms = calloc(MAX(g->n_files, (size_t) 1), sizeof *ck.syms);
        ck.file_state = calloc(MAX(g->n_files, (size_t) 1), sizeof(int));
        if (!ck.syms || !ck.file_state) {
                r = -ENOMEM;
                goto finish;
        }
        r = collect_decls(&ck);
        if (r < 0)
                goto finish;

        ck.fn = calloc(MAX(prog->n_functions, (size_t) 1), sizeof *ck.fn);
        ck.global_file = calloc(MAX(prog->n_globals, (size_t) 1), sizeof(int));
        ck.global_state = calloc(MAX(prog->n_globals, (size_t) 1), sizeof(int));
        g->globals = calloc(MAX(prog->n_globals, (size_t) 1), sizeof *g->globals);
        if (!ck.fn || !ck.global_file || !ck.global_state || !g->globals) {
                r = -ENOMEM;
                goto finish;
        }
        g->n_globals = prog->n_globals;
        for (size_t i = 0; i < prog->n_globals; i++)
                ck.global_file[i] = (int) prog->globals[i]->loc.file;

        for (size_t f = 0; f < g->n_files; f++)
                if (ck.file_state[f] == 0 && (r = eval_file_consts(&ck, (int) f)) < 0)
                        goto finish;

        for (size_t i = 0; i < prog->n_functions && !ck.oom; i++)
                check_function(&ck, (int) i);
        for (int p = 0; p < _POLICY_PHASE_MAX && !ck.oom; p++)
                if (prog->handlers[p]) {
                        check_handler(&ck, prog->handlers[p]);
                        mark_handler_calls(&ck, prog->handlers[p]->b, POLICY_PHASE_BIT(p));
                }
        if (ck.oom) {
                r = ck.oom;
                goto finish;
        }
        check_recursion(&ck);
        if (!ck.oom)
                check_function_phases(&ck);
        if (!ck.oom)
                check_cached_functions(&ck);
        if (ck.oom) {
                r = ck.oom;
                goto finish;
        }

        if (g->n_files > 0 && !prog->handlers[POLICY_PHASE_RCPTTO])
                policy_diags_add(diags, POLICY_DIAG_WARNING, g->files[0].path, 1, 1,
                                 "no 'on rcptto' handler: recipients are left to the built-in relay control");
        r = ck.errors > 0 ? -EINVAL : 0;

finish:
        if (ck.syms)
                for (size_t f = 0; f < g->n_files; f++)
                        free(ck.syms[f].slots);
        free(ck.syms);
        if (ck.fn)
                for (size_t f = 0; f < prog->n_functions; f++) {
                        free(ck.fn[f].edges);
                        free(ck.fn[f].uses);
                }
        free(ck.fn);
        free(ck.postorder);
        free(ck.cached_calls);
        free(ck.global_file);
        free(ck.global_state);
        free(ck.file_state);
        free(ck.assigned.slots);
        return r;
}
