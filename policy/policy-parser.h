/* SPDX-License-Identifier: MIT */
#pragma once

/* Recursive-descent parser for one HPL file (grammar: policy/README.md).
 * Recursion is bounded by POLICY_DEPTH_MAX; deeper input is an error, not a
 * stack overflow. After a syntax error the parser skips to the end of the
 * statement (or the next top-level declaration) and goes on, so one run
 * reports several errors. */

#include "policy-ast.h"
#include "policy-diag.h"

/* Parses text into file->decls (nodes in the arena; node locations carry
 * file_index). Returns 0 when the file parsed without errors, -EINVAL when
 * errors were added to diags, -ENOMEM. file->path must be set. */
int policy_parse(PolicyArena *a, uint32_t file_index, const char *text, size_t n, PolicyFile *file,
                 PolicyDiags *diags);

/* True for words that cannot name a function or a bare array key that is
 * not followed by '=>'. */
bool policy_is_keyword(const char *s);
