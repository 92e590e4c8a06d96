/* SPDX-License-Identifier: MIT */
#include "policy-parser.h"

#include <stdarg.h>

#include "policy-lexer.h"

#define FUNCTION_PARAMS_MAX 16U
#define CALL_ARGS_MAX       32U

typedef struct Parser {
        PolicyArena *arena;
        PolicyToken *t;
        size_t n, pos;
        uint32_t file;
        const char *path;
        PolicyDiags *diags;
        unsigned depth;
        unsigned errors;
        int fatal;     /* OOM, or nesting too deep: stop parsing */
} Parser;

static const char *const keywords[] = {
        "if", "else", "foreach", "as", "break", "continue", "return", "and", "or", "not", "in",
        "true", "false", "none", "cache", "const", "function", "on", "import", "from",
};

static bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

bool policy_is_keyword(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(keywords); i++)
                if (streq(s, keywords[i]))
                        return true;
        return false;
}

static PolicyToken *peek(Parser *p) {
        return &p->t[p->pos];
}

static PolicyToken *peek_at(Parser *p, size_t k) {
        return &p->t[MIN(p->pos + k, p->n - 1)];
}

static PolicyToken *next(Parser *p) {
        PolicyToken *t = &p->t[p->pos];
        if (t->kind != TOK_EOF)
                p->pos++;
        return t;
}

static bool is_kw(const PolicyToken *t, const char *kw) {
        return t->kind == TOK_IDENT && streq(t->text, kw);
}

static PolicyLoc loc_of(Parser *p, const PolicyToken *t) {
        return (PolicyLoc) { .file = p->file, .line = t->line, .col = t->col };
}

static void describe(const PolicyToken *t, char *buf, size_t size) {
        switch (t->kind) {
        case TOK_IDENT:
                snprintf(buf, size, "'%.40s'", t->text);
                break;
        case TOK_VAR:
                snprintf(buf, size, "'$%.40s'", t->text);
                break;
        case TOK_NUMBER:
                snprintf(buf, size, "number");
                break;
        default:
                snprintf(buf, size, "%s", policy_token_kind_name(t->kind));
        }
}

_printf_(3, 4)
static void error_at(Parser *p, const PolicyToken *t, const char *fmt, ...) {
        char msg[300];
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        p->errors++;
        policy_diags_add(p->diags, POLICY_DIAG_ERROR, p->path, t->line, t->col, "%s", msg);
}

/* Reports the token we stopped at: lexer errors speak for themselves. */
static void unexpected(Parser *p, const char *wanted) {
        PolicyToken *t = peek(p);
        char what[64];

        if (t->kind == TOK_ERROR) {
                error_at(p, t, "%s", t->text);
                next(p);
                return;
        }
        describe(t, what, sizeof what);
        error_at(p, t, "expected %s, got %s", wanted, what);
}

static bool expect(Parser *p, PolicyTokenKind k) {
        if (peek(p)->kind == k) {
                next(p);
                return true;
        }
        unexpected(p, policy_token_kind_name(k));
        return false;
}

static PolicyNode *node(Parser *p, PolicyNodeKind kind, const PolicyToken *t) {
        PolicyNode *n = policy_node_new(p->arena, kind, loc_of(p, t));
        if (!n)
                p->fatal = -ENOMEM;
        return n;
}

/* Chains such as a.b.c... or a[1][2]... are built in loops, not by
 * recursion, but later passes recurse along them: bound their height too. */
static bool height_ok(Parser *p, PolicyNode *n, const PolicyToken *t) {
        if (policy_node_update_height(n) <= POLICY_DEPTH_MAX)
                return true;
        error_at(p, t, "expression nested too deeply (more than %u levels)", POLICY_DEPTH_MAX);
        p->fatal = -E2BIG;
        return false;
}

static bool enter(Parser *p) {
        if (p->fatal)
                return false;
        if (++p->depth > POLICY_DEPTH_MAX) {
                error_at(p, peek(p), "nesting too deep (more than %u levels)", POLICY_DEPTH_MAX);
                p->fatal = -E2BIG;
                return false;
        }
        return true;
}

static void leave(Parser *p) {
        p->depth--;
}

static int add(Parser *p, PolicyNode *n, PolicyNode *child) {
        int r = policy_node_add(p->arena, n, child);
        if (r < 0) {
                if (r == -E2BIG)
                        error_at(p, peek(p), "too many items");
                p->fatal = r;
        }
        return r;
}

static PolicyNode *parse_expr(Parser *p);
static PolicyNode *parse_stmt(Parser *p);

static PolicyNode *literal(Parser *p, const PolicyToken *t, PolicyValue *v) {
        if (!v) {
                p->fatal = -ENOMEM;
                return NULL;
        }
        if (policy_arena_keep_value(p->arena, v) < 0) {
                policy_value_unref(v);
                p->fatal = -ENOMEM;
                return NULL;
        }
        PolicyNode *n = node(p, NODE_LITERAL, t);
        if (n)
                n->value = v;
        return n;
}

static PolicyNode *string_node(Parser *p, const PolicyToken *t) {
        if (t->kind == TOK_RAWSTRING)
                return literal(p, t, policy_string_new(t->text, t->len));
        if (t->n_parts == 0)
                return literal(p, t, policy_string_new("", 0));
        if (t->n_parts == 1 && !t->parts[0].is_var)
                return literal(p, t, policy_string_new(t->parts[0].text, t->parts[0].len));

        PolicyNode *n = node(p, NODE_INTERP, t);
        if (!n)
                return NULL;
        for (size_t i = 0; i < t->n_parts; i++) {
                const PolicyStrPart *part = &t->parts[i];
                PolicyToken pt = { .line = part->line, .col = part->col };
                PolicyNode *c;
                if (part->is_var) {
                        c = node(p, NODE_VAR, &pt);
                        if (c)
                                c->name = part->text;
                } else
                        c = literal(p, &pt, policy_string_new(part->text, part->len));
                if (!c || add(p, n, c) < 0)
                        return NULL;
        }
        return n;
}

/* "(" [ expr { "," expr } ] ")" into n->items */
static bool parse_args(Parser *p, PolicyNode *n) {
        if (!expect(p, TOK_LPAREN))
                return false;
        if (peek(p)->kind == TOK_RPAREN) {
                next(p);
                return true;
        }
        for (;;) {
                if (n->n_items >= CALL_ARGS_MAX) {
                        error_at(p, peek(p), "too many arguments (at most %u)", CALL_ARGS_MAX);
                        return false;
                }
                PolicyNode *e = parse_expr(p);
                if (!e || add(p, n, e) < 0)
                        return false;
                if (peek(p)->kind == TOK_COMMA) {
                        next(p);
                        continue;
                }
                return expect(p, TOK_RPAREN);
        }
}

static PolicyNode *parse_call(Parser *p) {
        PolicyToken *t = next(p); /* identifier */
        PolicyNode *n = node(p, NODE_CALL, t);
        if (!n)
                return NULL;
        n->name = t->text;
        if (peek(p)->kind == TOK_SCOPE) {
                next(p);
                PolicyToken *f = peek(p);
                if (f->kind != TOK_IDENT) {
                        unexpected(p, "function name after '::'");
                        return NULL;
                }
                next(p);
                n->module = t->text;
                n->name = f->text;
        }
        if (!parse_args(p, n))
                return NULL;
        return n;
}

static PolicyNode *parse_array(Parser *p) {
        PolicyToken *open = next(p); /* '[' */
        PolicyNode *n = node(p, NODE_ARRAY, open);
        if (!n)
                return NULL;

        while (peek(p)->kind != TOK_RBRACKET) {
                PolicyToken *it = peek(p);
                PolicyNode *item = node(p, NODE_ITEM, it);
                if (!item)
                        return NULL;
                if (it->kind == TOK_IDENT && peek_at(p, 1)->kind == TOK_ARROW) {
                        /* bare identifier key = string key */
                        next(p);
                        next(p);
                        item->a = literal(p, it, policy_string_new(it->text, it->len));
                        if (!item->a)
                                return NULL;
                        item->b = parse_expr(p);
                        if (!item->b)
                                return NULL;
                } else {
                        PolicyNode *e = parse_expr(p);
                        if (!e)
                                return NULL;
                        if (peek(p)->kind == TOK_ARROW) {
                                next(p);
                                item->a = e;
                                item->b = parse_expr(p);
                                if (!item->b)
                                        return NULL;
                        } else
                                item->b = e;
                }
                policy_node_update_height(item);
                if (add(p, n, item) < 0)
                        return NULL;
                if (peek(p)->kind == TOK_COMMA) {
                        next(p);
                        continue;
                }
                if (peek(p)->kind != TOK_RBRACKET) {
                        unexpected(p, "',' or ']'");
                        return NULL;
                }
        }
        next(p);
        return height_ok(p, n, open) ? n : NULL;
}

static PolicyNode *parse_primary(Parser *p) {
        PolicyToken *t = peek(p);

        switch (t->kind) {
        case TOK_NUMBER:
                next(p);
                return literal(p, t, policy_number_new(t->number));
        case TOK_STRING:
        case TOK_RAWSTRING:
                next(p);
                return string_node(p, t);
        case TOK_VAR: {
                next(p);
                PolicyNode *n = node(p, NODE_VAR, t);
                if (n)
                        n->name = t->text;
                return n;
        }
        case TOK_LBRACKET:
                return parse_array(p);
        case TOK_LPAREN: {
                next(p);
                PolicyNode *e = parse_expr(p);
                if (!e || !expect(p, TOK_RPAREN))
                        return NULL;
                return e;
        }
        case TOK_IDENT:
                if (is_kw(t, "true") || is_kw(t, "false")) {
                        next(p);
                        return literal(p, t, policy_bool(is_kw(t, "true")));
                }
                if (is_kw(t, "none")) {
                        next(p);
                        return literal(p, t, policy_none());
                }
                if (is_kw(t, "cache")) {
                        next(p);
                        PolicyNode *n = node(p, NODE_CACHE, t);
                        if (!n)
                                return NULL;
                        if (peek(p)->kind != TOK_LBRACKET) {
                                unexpected(p, "'[' (cache options) after 'cache'");
                                return NULL;
                        }
                        n->a = parse_array(p);
                        if (!n->a)
                                return NULL;
                        if (peek(p)->kind != TOK_IDENT || policy_is_keyword(peek(p)->text)) {
                                unexpected(p, "a function call after the cache options");
                                return NULL;
                        }
                        n->b = parse_call(p);
                        if (!n->b)
                                return NULL;
                        return height_ok(p, n, t) ? n : NULL;
                }
                if (policy_is_keyword(t->text)) {
                        error_at(p, t, "unexpected '%.40s'", t->text);
                        return NULL;
                }
                if (peek_at(p, 1)->kind != TOK_LPAREN && peek_at(p, 1)->kind != TOK_SCOPE) {
                        error_at(p, t, "unexpected identifier '%.40s' (variables start with '$')", t->text);
                        return NULL;
                }
                return parse_call(p);
        default:
                unexpected(p, "an expression");
                return NULL;
        }
}

static PolicyNode *parse_postfix(Parser *p) {
        PolicyNode *e = parse_primary(p);
        if (!e)
                return NULL;
        for (;;) {
                PolicyToken *t = peek(p);
                if (t->kind == TOK_LBRACKET) {
                        next(p);
                        PolicyNode *n = node(p, NODE_INDEX, t);
                        if (!n)
                                return NULL;
                        n->a = e;
                        if (peek(p)->kind == TOK_RBRACKET) {
                                error_at(p, peek(p), "'[]' (append) is only allowed on the left of '='");
                                return NULL;
                        }
                        n->b = parse_expr(p);
                        if (!n->b || !expect(p, TOK_RBRACKET) || !height_ok(p, n, t))
                                return NULL;
                        e = n;
                } else if (t->kind == TOK_METHOD) {
                        next(p);
                        PolicyToken *m = peek(p);
                        if (m->kind != TOK_IDENT) {
                                unexpected(p, "method name after '->'");
                                return NULL;
                        }
                        next(p);
                        PolicyNode *n = node(p, NODE_METHOD, m);
                        if (!n)
                                return NULL;
                        n->a = e;
                        n->name = m->text;
                        if (!parse_args(p, n) || !height_ok(p, n, t))
                                return NULL;
                        e = n;
                } else
                        return e;
        }
}

static PolicyNode *parse_unary(Parser *p) {
        PolicyToken *t = peek(p);
        if (t->kind != TOK_MINUS)
                return parse_postfix(p);
        if (!enter(p))
                return NULL;
        next(p);
        PolicyNode *n = node(p, NODE_UNARY, t);
        if (n) {
                n->op = OP_NEG;
                n->a = parse_unary(p);
                if (!n->a)
                        n = NULL;
                else
                        policy_node_update_height(n);
        }
        leave(p);
        return n;
}

typedef struct BinOp {
        PolicyTokenKind tok;
        PolicyOp op;
} BinOp;

static PolicyNode *binary(Parser *p, PolicyNodeKind kind, PolicyOp op, const PolicyToken *t, PolicyNode *l,
                          PolicyNode *r) {
        PolicyNode *n = node(p, kind, t);
        if (!n)
                return NULL;
        n->op = op;
        n->a = l;
        n->b = r;
        return height_ok(p, n, t) ? n : NULL;
}

static PolicyNode *parse_prod(Parser *p) {
        static const BinOp ops[] = { { TOK_STAR, OP_MUL }, { TOK_SLASH, OP_DIV }, { TOK_PERCENT, OP_MOD } };
        PolicyNode *l = parse_unary(p);
        while (l) {
                PolicyToken *t = peek(p);
                size_t i;
                for (i = 0; i < ELEMENTSOF(ops) && ops[i].tok != t->kind; i++)
                        ;
                if (i == ELEMENTSOF(ops))
                        break;
                next(p);
                PolicyNode *r = parse_unary(p);
                l = r ? binary(p, NODE_BINARY, ops[i].op, t, l, r) : NULL;
        }
        return l;
}

static PolicyNode *parse_sum(Parser *p) {
        PolicyNode *l = parse_prod(p);
        while (l && (peek(p)->kind == TOK_PLUS || peek(p)->kind == TOK_MINUS)) {
                PolicyToken *t = next(p);
                PolicyNode *r = parse_prod(p);
                l = r ? binary(p, NODE_BINARY, t->kind == TOK_PLUS ? OP_ADD : OP_SUB, t, l, r) : NULL;
        }
        return l;
}

static PolicyNode *parse_concat(Parser *p) {
        PolicyNode *l = parse_sum(p);
        while (l && peek(p)->kind == TOK_DOT) {
                PolicyToken *t = next(p);
                PolicyNode *r = parse_sum(p);
                l = r ? binary(p, NODE_BINARY, OP_CONCAT, t, l, r) : NULL;
        }
        return l;
}

static PolicyNode *parse_cmp(Parser *p) {
        static const BinOp ops[] = {
                { TOK_EQ, OP_EQ }, { TOK_NE, OP_NE }, { TOK_LT, OP_LT },
                { TOK_LE, OP_LE }, { TOK_GT, OP_GT }, { TOK_GE, OP_GE },
        };
        PolicyNode *l = parse_concat(p);
        if (!l)
                return NULL;
        PolicyToken *t = peek(p);
        if (t->kind == TOK_MATCH) {
                next(p);
                PolicyToken *re = peek(p);
                if (re->kind != TOK_RAWSTRING &&
                    !(re->kind == TOK_STRING && re->n_parts <= 1 && (re->n_parts == 0 || !re->parts[0].is_var))) {
                        error_at(p, re, "the right side of '=~' must be a string literal (a regex)");
                        return NULL;
                }
                next(p);
                PolicyNode *r = string_node(p, re);
                return r ? binary(p, NODE_MATCH, OP_NONE, t, l, r) : NULL;
        }
        if (is_kw(t, "in")) {
                next(p);
                PolicyNode *r = parse_concat(p);
                return r ? binary(p, NODE_BINARY, OP_IN, t, l, r) : NULL;
        }
        for (size_t i = 0; i < ELEMENTSOF(ops); i++)
                if (ops[i].tok == t->kind) {
                        next(p);
                        PolicyNode *r = parse_concat(p);
                        if (!r)
                                return NULL;
                        PolicyNode *n = binary(p, NODE_BINARY, ops[i].op, t, l, r);
                        PolicyToken *u = peek(p);
                        for (size_t j = 0; n && j < ELEMENTSOF(ops); j++)
                                if (ops[j].tok == u->kind || u->kind == TOK_MATCH || is_kw(u, "in")) {
                                        error_at(p, u, "comparisons do not chain; use 'and'");
                                        return NULL;
                                }
                        return n;
                }
        return l;
}

static PolicyNode *parse_not(Parser *p) {
        PolicyToken *t = peek(p);
        if (!is_kw(t, "not"))
                return parse_cmp(p);
        if (!enter(p))
                return NULL;
        next(p);
        PolicyNode *n = node(p, NODE_UNARY, t);
        if (n) {
                n->op = OP_NOT;
                n->a = parse_not(p);
                if (!n->a)
                        n = NULL;
                else
                        policy_node_update_height(n);
        }
        leave(p);
        return n;
}

static PolicyNode *parse_and(Parser *p) {
        PolicyNode *l = parse_not(p);
        while (l && is_kw(peek(p), "and")) {
                PolicyToken *t = next(p);
                PolicyNode *r = parse_not(p);
                l = r ? binary(p, NODE_AND, OP_NONE, t, l, r) : NULL;
        }
        return l;
}

static PolicyNode *parse_or(Parser *p) {
        PolicyNode *l = parse_and(p);
        while (l && is_kw(peek(p), "or")) {
                PolicyToken *t = next(p);
                PolicyNode *r = parse_and(p);
                l = r ? binary(p, NODE_OR, OP_NONE, t, l, r) : NULL;
        }
        return l;
}

static PolicyNode *parse_coalesce(Parser *p) {
        PolicyNode *l = parse_or(p);
        while (l && peek(p)->kind == TOK_COALESCE) {
                PolicyToken *t = next(p);
                PolicyNode *r = parse_or(p);
                l = r ? binary(p, NODE_COALESCE, OP_NONE, t, l, r) : NULL;
        }
        return l;
}

static PolicyNode *parse_expr(Parser *p) {
        if (!enter(p))
                return NULL;
        PolicyNode *c = parse_coalesce(p);
        if (c && peek(p)->kind == TOK_QUESTION) {
                PolicyToken *t = next(p);
                PolicyNode *n = node(p, NODE_TERNARY, t);
                if (!n)
                        c = NULL;
                else {
                        n->a = c;
                        n->b = parse_expr(p);
                        if (n->b && expect(p, TOK_COLON))
                                n->c = parse_expr(p);
                        c = n->b && n->c && height_ok(p, n, t) ? n : NULL;
                }
        }
        leave(p);
        return c;
}

/* Is the statement at pos an assignment? Scans $var { [ ... ] } without
 * parsing (so errors are reported once, by the real parse). */
static bool looks_like_assignment(Parser *p) {
        size_t i = p->pos;
        if (p->t[i].kind != TOK_VAR)
                return false;
        i++;
        while (i < p->n && p->t[i].kind == TOK_LBRACKET) {
                unsigned nest = 0;
                for (; i < p->n; i++) {
                        if (p->t[i].kind == TOK_LBRACKET)
                                nest++;
                        else if (p->t[i].kind == TOK_RBRACKET && --nest == 0)
                                break;
                        else if (p->t[i].kind == TOK_EOF || p->t[i].kind == TOK_SEMICOLON)
                                return false;
                }
                i++;
        }
        return i < p->n && (p->t[i].kind == TOK_ASSIGN || p->t[i].kind == TOK_COALESCE_ASSIGN);
}

static PolicyNode *parse_assignment(Parser *p) {
        PolicyToken *vt = next(p);
        PolicyNode *lv = node(p, NODE_VAR, vt);
        if (!lv)
                return NULL;
        lv->name = vt->text;
        while (peek(p)->kind == TOK_LBRACKET) {
                PolicyToken *t = next(p);
                if (peek(p)->kind == TOK_RBRACKET) {
                        next(p);
                        if (peek(p)->kind == TOK_LBRACKET) {
                                error_at(p, t, "'[]' (append) must be the last index");
                                return NULL;
                        }
                        PolicyNode *n = node(p, NODE_APPEND, t);
                        if (!n)
                                return NULL;
                        n->a = lv;
                        lv = n;
                } else {
                        PolicyNode *n = node(p, NODE_INDEX, t);
                        if (!n)
                                return NULL;
                        n->a = lv;
                        n->b = parse_expr(p);
                        if (!n->b || !expect(p, TOK_RBRACKET))
                                return NULL;
                        lv = n;
                }
                if (!height_ok(p, lv, t))
                        return NULL;
        }
        PolicyToken *op = next(p);
        PolicyNode *n = node(p, NODE_ASSIGN, vt); /* statements are located where they start */
        if (!n)
                return NULL;
        n->op = op->kind == TOK_ASSIGN ? OP_ASSIGN : OP_COALESCE_ASSIGN;
        if (n->op == OP_COALESCE_ASSIGN && lv->kind == NODE_APPEND) {
                error_at(p, op, "'?\?=' cannot append");
                return NULL;
        }
        n->a = lv;
        n->b = parse_expr(p);
        if (!n->b || !expect(p, TOK_SEMICOLON))
                return NULL;
        policy_node_update_height(n);
        return n;
}

static PolicyNode *parse_block(Parser *p);

static PolicyNode *parse_stmt_inner(Parser *p) {
        PolicyToken *t = peek(p);

        if (t->kind == TOK_LBRACE)
                return parse_block(p);
        if (t->kind == TOK_SEMICOLON) {
                error_at(p, t, "empty statement");
                next(p);
                return NULL;
        }
        if (is_kw(t, "if")) {
                next(p);
                PolicyNode *n = node(p, NODE_IF, t);
                if (!n || !expect(p, TOK_LPAREN))
                        return NULL;
                n->a = parse_expr(p);
                if (!n->a || !expect(p, TOK_RPAREN))
                        return NULL;
                n->b = parse_stmt(p);
                if (!n->b)
                        return NULL;
                if (is_kw(peek(p), "else")) {
                        next(p);
                        n->c = parse_stmt(p);
                        if (!n->c)
                                return NULL;
                }
                policy_node_update_height(n);
                return n;
        }
        if (is_kw(t, "foreach")) {
                next(p);
                PolicyNode *n = node(p, NODE_FOREACH, t);
                if (!n || !expect(p, TOK_LPAREN))
                        return NULL;
                n->a = parse_expr(p);
                if (!n->a)
                        return NULL;
                if (!is_kw(peek(p), "as")) {
                        unexpected(p, "'as'");
                        return NULL;
                }
                next(p);
                PolicyToken *v = peek(p);
                if (v->kind != TOK_VAR) {
                        unexpected(p, "a variable after 'as'");
                        return NULL;
                }
                next(p);
                n->name2 = v->text;
                if (peek(p)->kind == TOK_ARROW) {
                        next(p);
                        PolicyToken *v2 = peek(p);
                        if (v2->kind != TOK_VAR) {
                                unexpected(p, "a variable after '=>'");
                                return NULL;
                        }
                        next(p);
                        n->name = v->text;
                        n->name2 = v2->text;
                }
                if (!expect(p, TOK_RPAREN))
                        return NULL;
                n->b = parse_stmt(p);
                if (!n->b)
                        return NULL;
                policy_node_update_height(n);
                return n;
        }
        if (is_kw(t, "break") || is_kw(t, "continue")) {
                next(p);
                PolicyNode *n = node(p, is_kw(t, "break") ? NODE_BREAK : NODE_CONTINUE, t);
                return n && expect(p, TOK_SEMICOLON) ? n : NULL;
        }
        if (is_kw(t, "return")) {
                next(p);
                PolicyNode *n = node(p, NODE_RETURN, t);
                if (!n)
                        return NULL;
                if (peek(p)->kind != TOK_SEMICOLON) {
                        n->a = parse_expr(p);
                        if (!n->a)
                                return NULL;
                }
                if (!expect(p, TOK_SEMICOLON))
                        return NULL;
                policy_node_update_height(n);
                return n;
        }
        if (is_kw(t, "else")) {
                error_at(p, t, "'else' without 'if'");
                next(p);
                return NULL;
        }
        if (is_kw(t, "function") || is_kw(t, "const") || is_kw(t, "on") || is_kw(t, "import")) {
                error_at(p, t, "'%s' is only allowed at the top level of a file", t->text);
                return NULL;
        }
        if (looks_like_assignment(p))
                return parse_assignment(p);

        PolicyNode *n = node(p, NODE_EXPR, t);
        if (!n)
                return NULL;
        n->a = parse_expr(p);
        if (!n->a || !expect(p, TOK_SEMICOLON))
                return NULL;
        policy_node_update_height(n);
        return n;
}

/* Skips to just after the next ';' or to the next '}' of the current block. */
static void sync_stmt(Parser *p) {
        unsigned nest = 0;
        for (;;) {
                PolicyToken *t = peek(p);
                switch (t->kind) {
                case TOK_EOF:
                        return;
                case TOK_SEMICOLON:
                        next(p);
                        if (nest == 0)
                                return;
                        break;
                case TOK_LBRACE:
                        nest++;
                        next(p);
                        break;
                case TOK_RBRACE:
                        if (nest == 0)
                                return;
                        nest--;
                        next(p);
                        if (nest == 0)
                                return;
                        break;
                default:
                        next(p);
                }
        }
}

static PolicyNode *parse_stmt(Parser *p) {
        if (!enter(p))
                return NULL;
        PolicyNode *n = parse_stmt_inner(p);
        leave(p);
        return n;
}

static PolicyNode *parse_block(Parser *p) {
        PolicyToken *open = peek(p);
        if (!expect(p, TOK_LBRACE))
                return NULL;
        PolicyNode *b = node(p, NODE_BLOCK, open);
        if (!b)
                return NULL;
        while (peek(p)->kind != TOK_RBRACE) {
                if (peek(p)->kind == TOK_EOF) {
                        error_at(p, open, "unterminated block: '{' without '}'");
                        return NULL;
                }
                PolicyNode *s = parse_stmt(p);
                if (p->fatal)
                        return NULL;
                if (!s) {
                        sync_stmt(p);
                        continue;
                }
                if (add(p, b, s) < 0)
                        return NULL;
        }
        next(p);
        return b;
}

static PolicyNode *parse_import(Parser *p) {
        PolicyToken *t = next(p);
        PolicyNode *n = node(p, NODE_IMPORT, t);
        if (!n || !expect(p, TOK_LBRACE))
                return NULL;
        for (;;) {
                PolicyToken *nt = peek(p);
                if (nt->kind != TOK_IDENT && nt->kind != TOK_VAR) {
                        unexpected(p, "a function or $constant name");
                        return NULL;
                }
                next(p);
                PolicyNode *c = node(p, nt->kind == TOK_VAR ? NODE_VAR : NODE_CALL, nt);
                if (!c)
                        return NULL;
                c->name = nt->text;
                if (add(p, n, c) < 0)
                        return NULL;
                if (peek(p)->kind == TOK_COMMA) {
                        next(p);
                        continue;
                }
                if (!expect(p, TOK_RBRACE))
                        return NULL;
                break;
        }
        if (!is_kw(peek(p), "from")) {
                unexpected(p, "'from'");
                return NULL;
        }
        next(p);
        PolicyToken *s = peek(p);
        if (s->kind == TOK_RAWSTRING) {
                n->value = policy_string_new(s->text, s->len);
        } else if (s->kind == TOK_STRING && s->n_parts == 1 && !s->parts[0].is_var) {
                n->value = policy_string_new(s->parts[0].text, s->parts[0].len);
        } else {
                unexpected(p, "a file name string without variables");
                return NULL;
        }
        next(p);
        if (!n->value || policy_arena_keep_value(p->arena, n->value) < 0) {
                policy_value_unref(n->value);
                p->fatal = -ENOMEM;
                return NULL;
        }
        return expect(p, TOK_SEMICOLON) ? n : NULL;
}

static PolicyNode *parse_decl(Parser *p) {
        PolicyToken *t = peek(p);

        if (is_kw(t, "import"))
                return parse_import(p);
        if (is_kw(t, "const")) {
                next(p);
                PolicyToken *v = peek(p);
                if (v->kind != TOK_VAR) {
                        unexpected(p, "a $name after 'const'");
                        return NULL;
                }
                next(p);
                PolicyNode *n = node(p, NODE_CONST, v);
                if (!n || !expect(p, TOK_ASSIGN))
                        return NULL;
                n->name = v->text;
                n->a = parse_expr(p);
                if (!n->a || !expect(p, TOK_SEMICOLON))
                        return NULL;
                policy_node_update_height(n);
                return n;
        }
        if (is_kw(t, "function")) {
                next(p);
                PolicyToken *f = peek(p);
                if (f->kind != TOK_IDENT || policy_is_keyword(f->text)) {
                        unexpected(p, "a function name");
                        return NULL;
                }
                next(p);
                PolicyNode *n = node(p, NODE_FUNCTION, f);
                if (!n || !expect(p, TOK_LPAREN))
                        return NULL;
                n->name = f->text;
                if (peek(p)->kind != TOK_RPAREN)
                        for (;;) {
                                PolicyToken *v = peek(p);
                                if (v->kind != TOK_VAR) {
                                        unexpected(p, "a $parameter");
                                        return NULL;
                                }
                                if (n->n_items >= FUNCTION_PARAMS_MAX) {
                                        error_at(p, v, "too many parameters (at most %u)", FUNCTION_PARAMS_MAX);
                                        return NULL;
                                }
                                next(p);
                                PolicyNode *pv = node(p, NODE_VAR, v);
                                if (!pv)
                                        return NULL;
                                pv->name = v->text;
                                if (add(p, n, pv) < 0)
                                        return NULL;
                                if (peek(p)->kind != TOK_COMMA)
                                        break;
                                next(p);
                        }
                if (!expect(p, TOK_RPAREN))
                        return NULL;
                n->b = parse_block(p);
                if (!n->b)
                        return NULL;
                policy_node_update_height(n);
                return n;
        }
        if (is_kw(t, "on")) {
                next(p);
                PolicyToken *ph = peek(p);
                if (ph->kind != TOK_IDENT) {
                        unexpected(p, "a phase name after 'on'");
                        return NULL;
                }
                PolicyPhase phase = policy_phase_from_string(ph->text);
                if (phase < 0) {
                        error_at(p, ph, "unknown phase '%.40s' (connect, helo, auth, mailfrom, rcptto, eod, disconnect)",
                                 ph->text);
                        return NULL;
                }
                next(p);
                PolicyNode *n = node(p, NODE_HANDLER, ph);
                if (!n)
                        return NULL;
                n->phase = phase;
                n->name = ph->text;
                n->b = parse_block(p);
                if (!n->b)
                        return NULL;
                policy_node_update_height(n);
                return n;
        }
        unexpected(p, "'import', 'const', 'function' or 'on'");
        return NULL;
}

/* After a bad declaration: skip to a declaration keyword at the start of a
 * line, which is where the next one almost always begins. */
static void sync_decl(Parser *p) {
        if (peek(p)->kind != TOK_EOF)
                next(p);
        for (;;) {
                PolicyToken *t = peek(p);
                if (t->kind == TOK_EOF)
                        return;
                if (t->col == 1 && (is_kw(t, "import") || is_kw(t, "const") || is_kw(t, "function") || is_kw(t, "on")))
                        return;
                next(p);
        }
}

int policy_parse(PolicyArena *a, uint32_t file_index, const char *text, size_t n, PolicyFile *file,
                 PolicyDiags *diags) {
        _cleanup_free_ PolicyToken *tokens = NULL;
        size_t n_tokens = 0;
        int r;

        if (n > POLICY_FILE_MAX) {
                policy_diags_add(diags, POLICY_DIAG_ERROR, file->path, 1, 1, "file too large (more than %u bytes)",
                                 POLICY_FILE_MAX);
                return -EINVAL;
        }
        r = policy_lex(a, text, n, &tokens, &n_tokens);
        if (r == -E2BIG) {
                policy_diags_add(diags, POLICY_DIAG_ERROR, file->path, 1, 1, "too many tokens (more than %u)",
                                 POLICY_TOKENS_MAX);
                return -EINVAL;
        }
        if (r < 0)
                return r;

        Parser p = {
                .arena = a,
                .t = tokens,
                .n = n_tokens,
                .file = file_index,
                .path = file->path,
                .diags = diags,
        };
        PolicyNode **decls = NULL;
        size_t n_decls = 0, cap = 0;

        while (peek(&p)->kind != TOK_EOF && !p.fatal) {
                PolicyNode *d = parse_decl(&p);
                if (p.fatal)
                        break;
                if (!d) {
                        sync_decl(&p);
                        continue;
                }
                if (n_decls == cap) {
                        size_t ncap = cap ? cap * 2 : 16;
                        PolicyNode **q = policy_arena_alloc(a, ncap * sizeof *q);
                        if (!q) {
                                p.fatal = -ENOMEM;
                                break;
                        }
                        if (n_decls)
                                memcpy(q, decls, n_decls * sizeof *q);
                        decls = q;
                        cap = ncap;
                }
                decls[n_decls++] = d;
        }
        if (p.fatal == -ENOMEM)
                return -ENOMEM;
        file->decls = decls;
        file->n_decls = n_decls;
        return p.errors > 0 || p.fatal ? -EINVAL : 0;
}
