/* SPDX-License-Identifier: MIT */
/* The policy lexer alone (policy/policy-lexer.c): any bytes become a token
 * array ending in exactly one TOK_EOF, positions never run backwards or past
 * the input's lines, and string parts stay inside their token. */

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy-lexer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > 64 * 1024)
                return 0;
        _cleanup_(policy_arena_freep) PolicyArena *a = policy_arena_new();
        assert(a);
        _cleanup_free_ PolicyToken *tokens = NULL;
        size_t n = 0;
        int r = policy_lex(a, (const char *) data, size, &tokens, &n);
        if (r == -E2BIG)
                return 0;
        assert(r >= 0);
        assert(n >= 1 && tokens[n - 1].kind == TOK_EOF);

        uint32_t lines = 1;
        for (size_t i = 0; i < size; i++)
                lines += data[i] == '\n';
        for (size_t i = 0; i < n; i++) {
                const PolicyToken *t = &tokens[i];
                assert(t->kind < _TOK_MAX);
                assert(t->kind != TOK_EOF || i == n - 1);
                assert(t->line >= 1 && t->line <= lines && t->col >= 1);
                if (i > 0)
                        assert(t->line > tokens[i - 1].line ||
                               (t->line == tokens[i - 1].line && t->col >= tokens[i - 1].col));
                for (size_t k = 0; k < t->n_parts; k++) {
                        assert(t->parts[k].text || t->parts[k].len == 0);
                        assert(!t->parts[k].is_var || t->parts[k].len > 0);
                }
                assert(policy_token_kind_name(t->kind));
        }
        return 0;
}
