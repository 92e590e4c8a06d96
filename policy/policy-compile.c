/* SPDX-License-Identifier: MIT */
/* Bytecode for a checked program. A stack machine (rather than walking the
 * tree at run time) is what makes suspension cheap: the whole state of a
 * run is a program counter, a value stack and a frame stack, so a call to
 * an EXTERNAL builtin simply returns to the embedder and resumes later. */

#include "policy-internal.h"

#define CODE_MAX (1U << 20)

typedef struct Loop {
        size_t next;            /* FOREACH_NEXT: continue jumps here */
        size_t *breaks;
        size_t n_breaks, cap_breaks;
        struct Loop *outer;
} Loop;

typedef struct Compiler {
        PolicyGeneration *g;
        PolicyCode *code;
        Loop *loop;
        bool in_handler;
        int err;
} Compiler;

static size_t emit(Compiler *c, PolicyOpcode op, int32_t a, int32_t b, int32_t cc, int32_t d, PolicyLoc loc) {
        PolicyCode *code = c->code;
        if (c->err)
                return 0;
        if (code->n >= CODE_MAX) {
                c->err = -E2BIG;
                return 0;
        }
        if (code->n == code->cap) {
                size_t cap = code->cap ? code->cap * 2 : 64;
                PolicyInsn *q = reallocarray(code->insns, cap, sizeof *q);
                if (!q) {
                        c->err = -ENOMEM;
                        return 0;
                }
                code->insns = q;
                code->cap = cap;
        }
        code->insns[code->n] = (PolicyInsn) { .op = (uint8_t) op, .a = a, .b = b, .c = cc, .d = d, .loc = loc };
        return code->n++;
}

static void patch(Compiler *c, size_t at) {
        if (!c->err)
                c->code->insns[at].a = (int32_t) c->code->n;
}

static int32_t add_const(Compiler *c, PolicyValue *v) {
        PolicyGeneration *g = c->g;
        if (c->err)
                return 0;
        if (g->n_consts == g->cap_consts) {
                size_t cap = g->cap_consts ? g->cap_consts * 2 : 64;
                PolicyValue **q = reallocarray(g->consts, cap, sizeof *q);
                if (!q) {
                        c->err = -ENOMEM;
                        return 0;
                }
                g->consts = q;
                g->cap_consts = cap;
        }
        g->consts[g->n_consts] = policy_value_ref(v);
        return (int32_t) g->n_consts++;
}

static int32_t add_regex(Compiler *c, const regex_t *re) {
        PolicyGeneration *g = c->g;
        if (c->err || !re)
                return -1;
        if (g->n_regexes == g->cap_regexes) {
                size_t cap = g->cap_regexes ? g->cap_regexes * 2 : 16;
                const regex_t **q = reallocarray(g->regexes, cap, sizeof *q);
                if (!q) {
                        c->err = -ENOMEM;
                        return -1;
                }
                g->regexes = q;
                g->cap_regexes = cap;
        }
        g->regexes[g->n_regexes] = re;
        return (int32_t) g->n_regexes++;
}

static int32_t builtin_index(const PolicyBuiltin *b) {
        for (size_t i = 0; i < policy_builtins_count(); i++)
                if (policy_builtin_at(i) == b)
                        return (int32_t) i;
        return -1;
}

static void compile_expr(Compiler *c, const PolicyNode *n);

static void compile_load_var(Compiler *c, const PolicyNode *n) {
        switch (n->resolved) {
        case RESOLVE_LOCAL:
                emit(c, OPC_LOAD_LOCAL, n->slot, 0, 0, 0, n->loc);
                break;
        case RESOLVE_CONST:
                emit(c, OPC_LOAD_GLOBAL, n->slot, 0, 0, 0, n->loc);
                break;
        case RESOLVE_SPECIAL:
                emit(c, OPC_LOAD_SPECIAL, n->slot, 0, 0, 0, n->loc);
                break;
        default:
                c->err = -EINVAL;
        }
}

static void compile_call(Compiler *c, const PolicyNode *n, int32_t cache_site) {
        for (size_t i = 0; i < n->n_items; i++)
                compile_expr(c, n->items[i]);
        if (n->resolved == RESOLVE_FUNCTION) {
                emit(c, OPC_CALL_FUNC, n->slot, (int32_t) n->n_items, cache_site, 0, n->loc);
                return;
        }
        emit(c, OPC_CALL_BUILTIN, builtin_index(n->builtin), (int32_t) n->n_items, cache_site, add_regex(c, n->regex),
             n->loc);
}

static void compile_expr(Compiler *c, const PolicyNode *n) {
        size_t j1, j2;

        if (c->err)
                return;
        switch (n->kind) {
        case NODE_LITERAL:
                emit(c, OPC_PUSH_CONST, add_const(c, n->value), 0, 0, 0, n->loc);
                return;
        case NODE_INTERP:
                for (size_t i = 0; i < n->n_items; i++)
                        compile_expr(c, n->items[i]);
                emit(c, OPC_INTERP, (int32_t) n->n_items, 0, 0, 0, n->loc);
                return;
        case NODE_VAR:
                compile_load_var(c, n);
                return;
        case NODE_ARRAY:
                emit(c, OPC_NEW_ARRAY, 0, 0, 0, 0, n->loc);
                for (size_t i = 0; i < n->n_items; i++) {
                        const PolicyNode *it = n->items[i];
                        if (it->a) {
                                compile_expr(c, it->a);
                                compile_expr(c, it->b);
                                emit(c, OPC_ARRAY_SET, 0, 0, 0, 0, it->loc);
                        } else {
                                compile_expr(c, it->b);
                                emit(c, OPC_ARRAY_PUSH, 0, 0, 0, 0, it->loc);
                        }
                }
                return;
        case NODE_INDEX:
                compile_expr(c, n->a);
                compile_expr(c, n->b);
                emit(c, OPC_INDEX, 0, 0, 0, 0, n->loc);
                return;
        case NODE_CALL:
                compile_call(c, n, -1);
                return;
        case NODE_METHOD:
                compile_expr(c, n->a);
                for (size_t i = 0; i < n->n_items; i++)
                        compile_expr(c, n->items[i]);
                emit(c, OPC_CALL_BUILTIN, builtin_index(n->builtin), (int32_t) n->n_items + 1, -1, -1, n->loc);
                return;
        case NODE_CACHE:
                compile_call(c, n->b, n->cache_site);
                return;
        case NODE_UNARY:
                compile_expr(c, n->a);
                emit(c, OPC_UNARY, n->op, 0, 0, 0, n->loc);
                return;
        case NODE_BINARY:
                compile_expr(c, n->a);
                compile_expr(c, n->b);
                emit(c, OPC_BINARY, n->op, 0, 0, 0, n->loc);
                return;
        case NODE_AND:
                compile_expr(c, n->a);
                j1 = emit(c, OPC_JUMP_IF_FALSE, 0, 0, 0, 0, n->loc);
                compile_expr(c, n->b);
                emit(c, OPC_TO_BOOL, 0, 0, 0, 0, n->loc);
                j2 = emit(c, OPC_JUMP, 0, 0, 0, 0, n->loc);
                patch(c, j1);
                emit(c, OPC_PUSH_CONST, add_const(c, policy_bool(false)), 0, 0, 0, n->loc);
                patch(c, j2);
                return;
        case NODE_OR:
                compile_expr(c, n->a);
                j1 = emit(c, OPC_JUMP_IF_FALSE, 0, 0, 0, 0, n->loc);
                emit(c, OPC_PUSH_CONST, add_const(c, policy_bool(true)), 0, 0, 0, n->loc);
                j2 = emit(c, OPC_JUMP, 0, 0, 0, 0, n->loc);
                patch(c, j1);
                compile_expr(c, n->b);
                emit(c, OPC_TO_BOOL, 0, 0, 0, 0, n->loc);
                patch(c, j2);
                return;
        case NODE_COALESCE:
                compile_expr(c, n->a);
                j1 = emit(c, OPC_COALESCE, 0, 0, 0, 0, n->loc);
                compile_expr(c, n->b);
                patch(c, j1);
                return;
        case NODE_TERNARY:
                compile_expr(c, n->a);
                j1 = emit(c, OPC_JUMP_IF_FALSE, 0, 0, 0, 0, n->loc);
                compile_expr(c, n->b);
                j2 = emit(c, OPC_JUMP, 0, 0, 0, 0, n->loc);
                patch(c, j1);
                compile_expr(c, n->c);
                patch(c, j2);
                return;
        case NODE_MATCH:
                compile_expr(c, n->a);
                emit(c, OPC_MATCH, add_regex(c, n->regex), 0, 0, 0, n->loc);
                return;
        default:
                c->err = -EINVAL;
        }
}

static void add_break(Compiler *c, size_t at) {
        Loop *l = c->loop;
        if (l->n_breaks == l->cap_breaks) {
                size_t cap = l->cap_breaks ? l->cap_breaks * 2 : 4;
                size_t *q = reallocarray(l->breaks, cap, sizeof *q);
                if (!q) {
                        c->err = -ENOMEM;
                        return;
                }
                l->breaks = q;
                l->cap_breaks = cap;
        }
        l->breaks[l->n_breaks++] = at;
}

/* Keys of an lvalue chain, outermost index first. */
static size_t lvalue_chain(const PolicyNode *lv, const PolicyNode **keys, size_t max, bool *append) {
        size_t n = 0;
        *append = false;
        for (const PolicyNode *p = lv; p->kind == NODE_INDEX || p->kind == NODE_APPEND; p = p->a) {
                if (p->kind == NODE_APPEND) {
                        *append = true;
                        continue;
                }
                if (n < max)
                        keys[n] = p->b;
                n++;
        }
        /* reverse: root-side key first */
        for (size_t i = 0; i < n / 2 && n <= max; i++) {
                const PolicyNode *t = keys[i];
                keys[i] = keys[n - 1 - i];
                keys[n - 1 - i] = t;
        }
        return n;
}

static void compile_assign(Compiler *c, const PolicyNode *s) {
        const PolicyNode *lv = s->a, *root = lv;
        while (root->kind == NODE_INDEX || root->kind == NODE_APPEND)
                root = root->a;
        bool ctx = root->resolved == RESOLVE_SPECIAL;
        const PolicyNode *keys[POLICY_DEPTH_MAX + 1];
        bool append;
        size_t n = lvalue_chain(lv, keys, ELEMENTSOF(keys), &append);
        size_t skip = 0;

        if (n > POLICY_DEPTH_MAX) {
                c->err = -E2BIG;
                return;
        }
        if (s->op == OP_COALESCE_ASSIGN) {
                compile_load_var(c, root);
                for (size_t i = 0; i < n; i++) {
                        compile_expr(c, keys[i]);
                        emit(c, OPC_INDEX, 0, 0, 0, 0, keys[i]->loc);
                }
                skip = emit(c, OPC_JUMP_IF_NOT_NONE_POP, 0, 0, 0, 0, s->loc);
        }
        if (n == 0 && !append) {
                compile_expr(c, s->b);
                if (ctx)
                        emit(c, OPC_STORE_CONTEXT, 0, 0, 0, 0, s->loc);
                else
                        emit(c, OPC_STORE_LOCAL, root->slot, 0, 0, 0, s->loc);
        } else {
                for (size_t i = 0; i < n; i++)
                        compile_expr(c, keys[i]);
                compile_expr(c, s->b);
                emit(c, OPC_SET_PATH, ctx ? -1 : root->slot, (int32_t) n, append, 0, s->loc);
        }
        if (s->op == OP_COALESCE_ASSIGN)
                patch(c, skip);
}

static void compile_stmt(Compiler *c, const PolicyNode *s) {
        size_t j1, j2;

        if (c->err)
                return;
        switch (s->kind) {
        case NODE_BLOCK:
                for (size_t i = 0; i < s->n_items; i++)
                        compile_stmt(c, s->items[i]);
                return;
        case NODE_IF:
                compile_expr(c, s->a);
                j1 = emit(c, OPC_JUMP_IF_FALSE, 0, 0, 0, 0, s->loc);
                compile_stmt(c, s->b);
                if (s->c) {
                        j2 = emit(c, OPC_JUMP, 0, 0, 0, 0, s->loc);
                        patch(c, j1);
                        compile_stmt(c, s->c);
                        patch(c, j2);
                } else
                        patch(c, j1);
                return;
        case NODE_FOREACH: {
                Loop loop = { .outer = c->loop };
                compile_expr(c, s->a);
                emit(c, OPC_FOREACH_INIT, s->slot, 0, 0, 0, s->loc);
                loop.next = emit(c, OPC_FOREACH_NEXT, s->slot, s->slot_key, s->slot_value, 0, s->loc);
                c->loop = &loop;
                compile_stmt(c, s->b);
                c->loop = loop.outer;
                emit(c, OPC_JUMP, (int32_t) loop.next, 0, 0, 0, s->loc);
                if (!c->err) {
                        c->code->insns[loop.next].d = (int32_t) c->code->n;
                        for (size_t i = 0; i < loop.n_breaks; i++)
                                patch(c, loop.breaks[i]);
                }
                free(loop.breaks);
                return;
        }
        case NODE_BREAK:
                add_break(c, emit(c, OPC_JUMP, 0, 0, 0, 0, s->loc));
                return;
        case NODE_CONTINUE:
                emit(c, OPC_JUMP, (int32_t) c->loop->next, 0, 0, 0, s->loc);
                return;
        case NODE_RETURN:
                if (c->in_handler) {
                        emit(c, OPC_END, 0, 0, 0, 0, s->loc);
                        return;
                }
                if (s->a)
                        compile_expr(c, s->a);
                else
                        emit(c, OPC_PUSH_CONST, add_const(c, policy_none()), 0, 0, 0, s->loc);
                emit(c, OPC_RETURN, 0, 0, 0, 0, s->loc);
                return;
        case NODE_ASSIGN:
                compile_assign(c, s);
                return;
        case NODE_EXPR:
                compile_expr(c, s->a);
                emit(c, OPC_POP, 0, 0, 0, 0, s->loc);
                return;
        default:
                c->err = -EINVAL;
        }
}

static PolicyLoc end_loc(const PolicyNode *body) {
        return body->loc;
}

const char *const policy_words[_WORD_MAX] = {
        [WORD_ACTION] = "action",
        [WORD_AT] = "at",
        [WORD_RECIPIENT] = "recipient",
        [WORD_OPTIONS] = "options",
        [WORD_LEVEL] = "level",
        [WORD_MESSAGE] = "message",
        [WORD_FIELDS] = "fields",
        [WORD_NAME] = "name",
        [WORD_VALUE] = "value",
        [WORD_INDEX] = "index",
        [WORD_QUEUE] = "queue",
        [WORD_LOG] = "log",
        [WORD_ADD_HEADER] = "add_header",
        [WORD_SET_HEADER] = "set_header",
        [WORD_DELETE_HEADER] = "delete_header",
};

int policy_compile(PolicyGeneration *g, const PolicyProgram *prog) {
        Compiler c = { .g = g };

        /* The VM's action records use these on every run: keep one copy in
         * the constant pool instead of allocating them per action. */
        for (size_t i = 0; i < _WORD_MAX; i++) {
                _cleanup_(policy_value_unrefp) PolicyValue *w = policy_string_new_cstr(policy_words[i]);
                if (!w)
                        return -ENOMEM;
                int32_t at = add_const(&c, w);
                if (c.err)
                        return c.err;
                g->words[i] = g->consts[at];
        }

        g->functions = calloc(MAX(prog->n_functions, (size_t) 1), sizeof *g->functions);
        if (!g->functions)
                return -ENOMEM;
        g->n_functions = prog->n_functions;
        for (size_t i = 0; i < prog->n_functions && !c.err; i++) {
                const PolicyNode *fn = prog->functions[i];
                PolicyCode *code = &g->functions[i];
                code->name = fn->name;
                code->n_params = (unsigned) fn->n_items;
                code->n_locals = (unsigned) fn->slot;
                c.code = code;
                c.in_handler = false;
                compile_stmt(&c, fn->b);
                emit(&c, OPC_PUSH_CONST, add_const(&c, policy_none()), 0, 0, 0, end_loc(fn->b));
                emit(&c, OPC_RETURN, 0, 0, 0, 0, end_loc(fn->b));
        }
        for (int p = 0; p < _POLICY_PHASE_MAX && !c.err; p++) {
                const PolicyNode *h = prog->handlers[p];
                if (!h)
                        continue;
                PolicyCode *code = calloc(1, sizeof *code);
                if (!code)
                        return -ENOMEM;
                g->handlers[p] = code;
                code->name = policy_phase_to_string((PolicyPhase) p);
                code->n_locals = (unsigned) h->slot;
                c.code = code;
                c.in_handler = true;
                compile_stmt(&c, h->b);
                emit(&c, OPC_END, 0, 0, 0, 0, end_loc(h->b));
        }
        return c.err;
}
