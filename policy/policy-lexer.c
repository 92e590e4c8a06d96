/* SPDX-License-Identifier: MIT */
/* Hand-written HPL lexer. Lines and columns are 1-based; a column counts
 * bytes, so a tab is one column (what most editors' "go to column" does with
 * byte offsets too). */

#include "policy-lexer.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct Lexer {
        PolicyArena *arena;
        const char *p, *end;
        uint32_t line, col;
        PolicyToken *tokens;
        size_t n, cap;
} Lexer;

static bool is_ident_start(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

static bool is_ident_char(char c) {
        return is_ident_start(c) || is_digit(c);
}

static void advance(Lexer *lx, size_t k) {
        for (size_t i = 0; i < k && lx->p < lx->end; i++, lx->p++) {
                if (*lx->p == '\n') {
                        lx->line++;
                        lx->col = 1;
                } else
                        lx->col++;
        }
}

static PolicyToken *emit(Lexer *lx, PolicyTokenKind kind, uint32_t line, uint32_t col) {
        if (lx->n >= POLICY_TOKENS_MAX)
                return NULL;
        if (lx->n == lx->cap) {
                size_t cap = lx->cap ? lx->cap * 2 : 256;
                PolicyToken *t = reallocarray(lx->tokens, cap, sizeof *t);
                if (!t)
                        return NULL;
                lx->tokens = t;
                lx->cap = cap;
        }
        PolicyToken *t = &lx->tokens[lx->n++];
        *t = (PolicyToken) { .kind = kind, .line = line, .col = col };
        return t;
}

static int emit_error(Lexer *lx, uint32_t line, uint32_t col, const char *msg) {
        PolicyToken *t = emit(lx, TOK_ERROR, line, col);
        if (!t)
                return lx->n >= POLICY_TOKENS_MAX ? -E2BIG : -ENOMEM;
        t->text = msg;
        t->len = strlen(msg);
        return 0;
}

/* A growable byte buffer for decoding one string; malloc'ed, since strings
 * may reach the file size and the arena cannot grow in place. */
typedef struct Buf {
        char *p;
        size_t n, cap;
} Buf;

static int buf_put(Buf *b, const char *s, size_t n) {
        if (b->n + n > b->cap) {
                size_t cap = MAX(b->cap * 2, b->n + n + 64);
                char *q = realloc(b->p, cap);
                if (!q)
                        return -ENOMEM;
                b->p = q;
                b->cap = cap;
        }
        memcpy(b->p + b->n, s, n);
        b->n += n;
        return 0;
}

typedef struct Parts {
        PolicyStrPart *p;
        size_t n, cap;
} Parts;

static int parts_add(Parts *ps, PolicyStrPart part) {
        if (ps->n == ps->cap) {
                size_t cap = ps->cap ? ps->cap * 2 : 4;
                PolicyStrPart *q = reallocarray(ps->p, cap, sizeof *q);
                if (!q)
                        return -ENOMEM;
                ps->p = q;
                ps->cap = cap;
        }
        ps->p[ps->n++] = part;
        return 0;
}

/* Moves the pending literal bytes into a part. */
static int flush_literal(Lexer *lx, Buf *b, Parts *ps, uint32_t line, uint32_t col) {
        if (b->n == 0)
                return 0;
        char *s = policy_arena_strndup(lx->arena, b->p, b->n);
        if (!s)
                return -ENOMEM;
        int r = parts_add(ps, (PolicyStrPart) { .is_var = false, .text = s, .len = b->n, .line = line, .col = col });
        b->n = 0;
        return r;
}

static int lex_string(Lexer *lx) {
        uint32_t line = lx->line, col = lx->col;
        uint32_t lit_line = 0, lit_col = 0;
        _cleanup_free_ char *bufp = NULL;
        Buf b = {};
        Parts ps = {};
        int r = 0;

        advance(lx, 1);
        for (;;) {
                if (lx->p >= lx->end) {
                        r = emit_error(lx, line, col, "unterminated string");
                        goto finish;
                }
                char c = *lx->p;
                if (c == '"') {
                        advance(lx, 1);
                        break;
                }
                if (b.n == 0) {
                        lit_line = lx->line;
                        lit_col = lx->col;
                }
                if (c == '\\') {
                        if (lx->p + 1 >= lx->end) {
                                r = emit_error(lx, line, col, "unterminated string");
                                goto finish;
                        }
                        const char *dec;
                        switch (lx->p[1]) {
                        case '"': dec = "\""; break;
                        case '\\': dec = "\\"; break;
                        case '$': dec = "$"; break;
                        case 'n': dec = "\n"; break;
                        case 'r': dec = "\r"; break;
                        case 't': dec = "\t"; break;
                        default: {
                                uint32_t el = lx->line, ec = lx->col;
                                /* Skip the rest so one bad escape gives one error. */
                                while (lx->p < lx->end && *lx->p != '"')
                                        advance(lx, *lx->p == '\\' && lx->p + 1 < lx->end ? 2 : 1);
                                advance(lx, 1);
                                r = emit_error(lx, el, ec, "unknown escape sequence in string");
                                goto finish;
                        }
                        }
                        r = buf_put(&b, dec, 1);
                        if (r < 0)
                                goto finish;
                        advance(lx, 2);
                        continue;
                }
                if (c == '$' && lx->p + 1 < lx->end &&
                    (is_ident_start(lx->p[1]) || (lx->p[1] == '{' && lx->p + 2 < lx->end && is_ident_start(lx->p[2])))) {
                        uint32_t vl = lx->line, vc = lx->col;
                        r = flush_literal(lx, &b, &ps, lit_line, lit_col);
                        if (r < 0)
                                goto finish;
                        bool braced = lx->p[1] == '{';
                        advance(lx, braced ? 2 : 1);
                        const char *s = lx->p;
                        while (lx->p < lx->end && is_ident_char(*lx->p))
                                advance(lx, 1);
                        size_t n = (size_t) (lx->p - s);
                        if (braced) {
                                if (lx->p >= lx->end || *lx->p != '}') {
                                        while (lx->p < lx->end && *lx->p != '"')
                                                advance(lx, 1);
                                        advance(lx, 1);
                                        r = emit_error(lx, vl, vc, "expected '}' after ${name in string");
                                        goto finish;
                                }
                                advance(lx, 1);
                        }
                        char *name = policy_arena_strndup(lx->arena, s, n);
                        if (!name) {
                                r = -ENOMEM;
                                goto finish;
                        }
                        r = parts_add(&ps, (PolicyStrPart) { .is_var = true, .text = name, .len = n, .line = vl, .col = vc });
                        if (r < 0)
                                goto finish;
                        continue;
                }
                if (b.n >= POLICY_STRING_MAX) {
                        while (lx->p < lx->end && *lx->p != '"')
                                advance(lx, 1);
                        advance(lx, 1);
                        r = emit_error(lx, line, col, "string literal too long");
                        goto finish;
                }
                r = buf_put(&b, &c, 1);
                if (r < 0)
                        goto finish;
                advance(lx, 1);
        }

        r = flush_literal(lx, &b, &ps, lit_line, lit_col);
        if (r < 0)
                goto finish;
        PolicyToken *t = emit(lx, TOK_STRING, line, col);
        if (!t) {
                r = lx->n >= POLICY_TOKENS_MAX ? -E2BIG : -ENOMEM;
                goto finish;
        }
        if (ps.n > 0) {
                t->parts = policy_arena_alloc(lx->arena, ps.n * sizeof *t->parts);
                if (!t->parts) {
                        r = -ENOMEM;
                        goto finish;
                }
                memcpy(t->parts, ps.p, ps.n * sizeof *t->parts);
        }
        t->n_parts = ps.n;
finish:
        bufp = b.p;
        free(ps.p);
        return r;
}

static int lex_one(Lexer *lx) {
        static const struct {
                const char *s;
                PolicyTokenKind k;
        } punct[] = {
                /* longest first */
                { "\?\?=", TOK_COALESCE_ASSIGN },
                { "??", TOK_COALESCE }, { "==", TOK_EQ }, { "!=", TOK_NE }, { "<=", TOK_LE },
                { ">=", TOK_GE }, { "=~", TOK_MATCH }, { "=>", TOK_ARROW }, { "->", TOK_METHOD },
                { "::", TOK_SCOPE },
                { "{", TOK_LBRACE }, { "}", TOK_RBRACE }, { "(", TOK_LPAREN }, { ")", TOK_RPAREN },
                { "[", TOK_LBRACKET }, { "]", TOK_RBRACKET }, { ",", TOK_COMMA }, { ";", TOK_SEMICOLON },
                { "=", TOK_ASSIGN }, { "?", TOK_QUESTION }, { ":", TOK_COLON }, { "<", TOK_LT },
                { ">", TOK_GT }, { ".", TOK_DOT }, { "+", TOK_PLUS }, { "-", TOK_MINUS },
                { "*", TOK_STAR }, { "/", TOK_SLASH }, { "%", TOK_PERCENT },
        };
        uint32_t line = lx->line, col = lx->col;
        const char *s = lx->p;
        char c = *s;
        PolicyToken *t;

        if (is_ident_start(c) || (c == '$' && lx->p + 1 < lx->end && is_ident_start(lx->p[1]))) {
                bool var = c == '$';
                if (var)
                        advance(lx, 1);
                const char *b = lx->p;
                while (lx->p < lx->end && is_ident_char(*lx->p))
                        advance(lx, 1);
                if ((size_t) (lx->p - b) > 256)
                        return emit_error(lx, line, col, "identifier too long");
                t = emit(lx, var ? TOK_VAR : TOK_IDENT, line, col);
                if (!t)
                        return -ENOMEM;
                t->len = (size_t) (lx->p - b);
                t->text = policy_arena_strndup(lx->arena, b, t->len);
                return t->text ? 0 : -ENOMEM;
        }
        if (is_digit(c)) {
                while (lx->p < lx->end && is_digit(*lx->p))
                        advance(lx, 1);
                if (lx->p + 1 < lx->end && *lx->p == '.' && is_digit(lx->p[1])) {
                        advance(lx, 1);
                        while (lx->p < lx->end && is_digit(*lx->p))
                                advance(lx, 1);
                }
                if (lx->p < lx->end && is_ident_char(*lx->p)) {
                        while (lx->p < lx->end && is_ident_char(*lx->p))
                                advance(lx, 1);
                        return emit_error(lx, line, col, "invalid number");
                }
                if ((size_t) (lx->p - s) > 64)
                        return emit_error(lx, line, col, "number too long");
                char tmp[80];
                memcpy(tmp, s, (size_t) (lx->p - s));
                tmp[lx->p - s] = 0;
                t = emit(lx, TOK_NUMBER, line, col);
                if (!t)
                        return -ENOMEM;
                t->number = strtod(tmp, NULL);
                t->text = s;
                t->len = (size_t) (lx->p - s);
                return 0;
        }
        if (c == '"')
                return lex_string(lx);
        if (c == '\'') {
                advance(lx, 1);
                const char *b = lx->p;
                while (lx->p < lx->end && *lx->p != '\'')
                        advance(lx, 1);
                if (lx->p >= lx->end)
                        return emit_error(lx, line, col, "unterminated raw string");
                size_t n = (size_t) (lx->p - b);
                advance(lx, 1);
                if (n > POLICY_STRING_MAX)
                        return emit_error(lx, line, col, "string literal too long");
                t = emit(lx, TOK_RAWSTRING, line, col);
                if (!t)
                        return -ENOMEM;
                t->len = n;
                t->text = policy_arena_strndup(lx->arena, b, n);
                return t->text ? 0 : -ENOMEM;
        }
        for (size_t i = 0; i < ELEMENTSOF(punct); i++) {
                size_t n = strlen(punct[i].s);
                if ((size_t) (lx->end - lx->p) >= n && memcmp(lx->p, punct[i].s, n) == 0) {
                        advance(lx, n);
                        return emit(lx, punct[i].k, line, col) ? 0 : -ENOMEM;
                }
        }
        advance(lx, 1);
        if (c == 0)
                return emit_error(lx, line, col, "NUL byte in source");
        if (c == '$')
                return emit_error(lx, line, col, "'$' must be followed by a variable name");
        return emit_error(lx, line, col, "unexpected character");
}

int policy_lex(PolicyArena *a, const char *text, size_t n, PolicyToken **ret_tokens, size_t *ret_n) {
        Lexer lx = {
                .arena = a,
                .p = text,
                .end = text + n,
                .line = 1,
                .col = 1,
        };
        unsigned errors = 0;
        int r;

        while (lx.p < lx.end) {
                char c = *lx.p;
                if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
                        advance(&lx, 1);
                        continue;
                }
                if (c == '/' && lx.p + 1 < lx.end && lx.p[1] == '/') {
                        while (lx.p < lx.end && *lx.p != '\n')
                                advance(&lx, 1);
                        continue;
                }
                if (c == '/' && lx.p + 1 < lx.end && lx.p[1] == '*') {
                        uint32_t line = lx.line, col = lx.col;
                        advance(&lx, 2);
                        while (lx.p + 1 < lx.end && !(lx.p[0] == '*' && lx.p[1] == '/'))
                                advance(&lx, 1);
                        if (lx.p + 1 >= lx.end) {
                                lx.p = lx.end;
                                r = emit_error(&lx, line, col, "unterminated comment");
                                if (r < 0)
                                        goto fail;
                                break;
                        }
                        advance(&lx, 2);
                        continue;
                }
                size_t before = lx.n;
                r = lex_one(&lx);
                if (r < 0)
                        goto fail;
                if (lx.n > before && lx.tokens[lx.n - 1].kind == TOK_ERROR && ++errors >= 50)
                        break; /* garbage input: the parser reports the first errors anyway */
        }
        if (!emit(&lx, TOK_EOF, lx.line, lx.col)) {
                r = lx.n >= POLICY_TOKENS_MAX ? -E2BIG : -ENOMEM;
                goto fail;
        }
        *ret_tokens = lx.tokens;
        *ret_n = lx.n;
        return 0;
fail:
        free(lx.tokens);
        return r == -ENOMEM && lx.n >= POLICY_TOKENS_MAX ? -E2BIG : r;
}

const char *policy_token_kind_name(PolicyTokenKind k) {
        static const char *const names[_TOK_MAX] = {
                [TOK_EOF] = "end of file", [TOK_ERROR] = "error", [TOK_IDENT] = "identifier",
                [TOK_VAR] = "variable", [TOK_NUMBER] = "number", [TOK_STRING] = "string",
                [TOK_RAWSTRING] = "string", [TOK_LBRACE] = "'{'", [TOK_RBRACE] = "'}'",
                [TOK_LPAREN] = "'('", [TOK_RPAREN] = "')'", [TOK_LBRACKET] = "'['",
                [TOK_RBRACKET] = "']'", [TOK_COMMA] = "','", [TOK_SEMICOLON] = "';'",
                [TOK_ASSIGN] = "'='", [TOK_COALESCE_ASSIGN] = "'?\?='", [TOK_COALESCE] = "'?\?'",
                [TOK_QUESTION] = "'?'", [TOK_COLON] = "':'", [TOK_EQ] = "'=='", [TOK_NE] = "'!='",
                [TOK_LT] = "'<'", [TOK_LE] = "'<='", [TOK_GT] = "'>'", [TOK_GE] = "'>='",
                [TOK_MATCH] = "'=~'", [TOK_DOT] = "'.'", [TOK_PLUS] = "'+'", [TOK_MINUS] = "'-'",
                [TOK_STAR] = "'*'", [TOK_SLASH] = "'/'", [TOK_PERCENT] = "'%'", [TOK_ARROW] = "'=>'",
                [TOK_METHOD] = "'->'", [TOK_SCOPE] = "'::'",
        };
        return k < _TOK_MAX ? names[k] : "?";
}
