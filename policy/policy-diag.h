/* SPDX-License-Identifier: MIT */
#pragma once

/* Load-time diagnostics, collected rather than stopping at the first, and
 * printed as "file:line:col: error: message" (the format compilers use, so
 * editors jump to the spot). */

#include <stdio.h>

#include "macro.h"

/* More than this and the rest are dropped: one typo should not bury the log. */
#define POLICY_DIAGS_MAX 100U

typedef enum PolicyDiagLevel {
        POLICY_DIAG_ERROR,
        POLICY_DIAG_WARNING,
} PolicyDiagLevel;

typedef struct PolicyDiag {
        PolicyDiagLevel level;
        char *file;
        unsigned line, col;
        char *message;
} PolicyDiag;

typedef struct PolicyDiags {
        PolicyDiag *items;
        size_t n, cap;
        unsigned n_errors, n_warnings; /* including dropped ones */
        int oom;                       /* a diagnostic could not be stored */
} PolicyDiags;

void policy_diags_done(PolicyDiags *d);
_printf_(6, 7)
void policy_diags_add(PolicyDiags *d, PolicyDiagLevel level, const char *file, unsigned line, unsigned col,
                      const char *fmt, ...);
/* Orders by file, line and column (stable), as a reader expects. */
void policy_diags_sort(PolicyDiags *d);
/* "file:line:col: error: message" into buf (always NUL-terminated). */
void policy_diag_format(const PolicyDiag *d, char *buf, size_t size);
/* Writes each diagnostic on its own line; messages never contain raw control
 * bytes (they are escaped when added). */
void policy_diags_print(const PolicyDiags *d, FILE *f);
