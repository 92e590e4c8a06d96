/* SPDX-License-Identifier: MIT */
#pragma once

/* HPL tokens. The lexer turns a whole file into a token array up front
 * (files are at most POLICY_FILE_MAX bytes), so the parser can look ahead
 * freely. Token texts and decoded strings live in the arena. */

#include "policy-ast.h"

#define POLICY_FILE_MAX   (1024U * 1024U)
#define POLICY_TOKENS_MAX (256U * 1024U)

typedef enum PolicyTokenKind {
        TOK_EOF,
        TOK_ERROR,     /* text: the message */
        TOK_IDENT,     /* keywords too: the parser tells them apart */
        TOK_VAR,       /* text: the name without '$' */
        TOK_NUMBER,    /* number */
        TOK_STRING,    /* parts: literal pieces and $variables */
        TOK_RAWSTRING, /* text/len: the bytes between the quotes */
        TOK_LBRACE, TOK_RBRACE, TOK_LPAREN, TOK_RPAREN, TOK_LBRACKET, TOK_RBRACKET,
        TOK_COMMA, TOK_SEMICOLON, TOK_ASSIGN, TOK_COALESCE_ASSIGN, TOK_COALESCE,
        TOK_QUESTION, TOK_COLON, TOK_EQ, TOK_NE, TOK_LT, TOK_LE, TOK_GT, TOK_GE,
        TOK_MATCH, TOK_DOT, TOK_PLUS, TOK_MINUS, TOK_STAR, TOK_SLASH, TOK_PERCENT,
        TOK_ARROW,     /* => */
        TOK_METHOD,    /* -> */
        TOK_SCOPE,     /* :: */
        _TOK_MAX,
} PolicyTokenKind;

typedef struct PolicyStrPart {
        bool is_var;
        const char *text; /* decoded bytes, or the variable name */
        size_t len;
        uint32_t line, col;
} PolicyStrPart;

typedef struct PolicyToken {
        PolicyTokenKind kind;
        uint32_t line, col;
        const char *text;
        size_t len;
        double number;
        PolicyStrPart *parts;
        size_t n_parts;
} PolicyToken;

/* Tokenises text[0..n). Lexical errors become TOK_ERROR tokens (the parser
 * reports them with their position). The array always ends with TOK_EOF.
 * Returns -ENOMEM, or -E2BIG past POLICY_TOKENS_MAX tokens. */
int policy_lex(PolicyArena *a, const char *text, size_t n, PolicyToken **ret_tokens, size_t *ret_n);

const char *policy_token_kind_name(PolicyTokenKind k);
