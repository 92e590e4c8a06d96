/* SPDX-License-Identifier: MIT */
/* The policy parser alone (policy/policy-parser.c, over the lexer): any
 * bytes parse, or fail with at least one error diagnostic placed inside the
 * input; a clean parse reports no error; nesting is bounded (no stack
 * overflow on deep input). */

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy-diag.h"
#include "policy-parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > 64 * 1024)
                return 0;
        _cleanup_(policy_arena_freep) PolicyArena *a = policy_arena_new();
        assert(a);
        PolicyFile file = { .path = (char *) "fuzz.hal", .dir = (char *) ".", .is_entry = true };
        PolicyDiags diags = {};
        int r = policy_parse(a, 0, (const char *) data, size, &file, &diags);

        uint32_t lines = 1;
        for (size_t i = 0; i < size; i++)
                lines += data[i] == '\n';
        if (r == 0)
                assert(diags.n_errors == 0);
        else if (r == -EINVAL)
                assert(diags.n_errors > 0);
        else
                assert(r == -ENOMEM);
        for (size_t i = 0; i < diags.n; i++) {
                char buf[1024];
                assert(diags.items[i].line >= 1 && diags.items[i].line <= lines + 1);
                policy_diag_format(&diags.items[i], buf, sizeof buf);
                assert(strncmp(buf, "fuzz.hal:", 9) == 0);
        }
        for (size_t i = 0; i < file.n_decls; i++)
                assert(file.decls[i]);
        policy_diags_done(&diags);
        return 0;
}
