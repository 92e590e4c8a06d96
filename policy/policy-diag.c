/* SPDX-License-Identifier: MIT */
#include "policy-diag.h"

#include <stdarg.h>

void policy_diags_done(PolicyDiags *d) {
        for (size_t i = 0; i < d->n; i++) {
                free(d->items[i].file);
                free(d->items[i].message);
        }
        free(d->items);
        *d = (PolicyDiags) {};
}

void policy_diags_add(PolicyDiags *d, PolicyDiagLevel level, const char *file, unsigned line, unsigned col,
                      const char *fmt, ...) {
        va_list ap;
        char msg[512];

        if (level == POLICY_DIAG_ERROR)
                d->n_errors++;
        else
                d->n_warnings++;
        if (d->n >= POLICY_DIAGS_MAX)
                return;

        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        /* Names from the script end up in messages; keep the line one line. */
        for (char *p = msg; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = '?';

        if (d->n == d->cap) {
                size_t cap = d->cap ? d->cap * 2 : 8;
                PolicyDiag *q = reallocarray(d->items, cap, sizeof *q);
                if (!q) {
                        d->oom = -ENOMEM;
                        return;
                }
                d->items = q;
                d->cap = cap;
        }
        PolicyDiag *g = &d->items[d->n];
        *g = (PolicyDiag) { .level = level, .line = line, .col = col };
        g->file = strdup(file ?: "<input>");
        g->message = strdup(msg);
        if (!g->file || !g->message) {
                free(g->file);
                free(g->message);
                d->oom = -ENOMEM;
                return;
        }
        d->n++;
}

void policy_diag_format(const PolicyDiag *d, char *buf, size_t size) {
        (void) snprintf(buf, size, "%s:%u:%u: %s: %s", d->file, d->line, d->col,
                        d->level == POLICY_DIAG_ERROR ? "error" : "warning", d->message);
}

void policy_diags_print(const PolicyDiags *d, FILE *f) {
        char buf[1024];
        for (size_t i = 0; i < d->n; i++) {
                policy_diag_format(&d->items[i], buf, sizeof buf);
                fprintf(f, "%s\n", buf);
        }
        if (d->n_errors + d->n_warnings > d->n)
                fprintf(f, "(%u more diagnostics not shown)\n", d->n_errors + d->n_warnings - (unsigned) d->n);
}

typedef struct Ranked {
        PolicyDiag d;
        size_t index;
} Ranked;

static int ranked_cmp(const void *a, const void *b) {
        const Ranked *x = a, *y = b;
        int c = strcmp(x->d.file, y->d.file);
        if (c != 0)
                return c;
        if (x->d.line != y->d.line)
                return x->d.line < y->d.line ? -1 : 1;
        if (x->d.col != y->d.col)
                return x->d.col < y->d.col ? -1 : 1;
        return x->index < y->index ? -1 : x->index > y->index;
}

void policy_diags_sort(PolicyDiags *d) {
        Ranked *r = calloc(MAX(d->n, (size_t) 1), sizeof *r);
        if (!r)
                return; /* unsorted is still correct */
        for (size_t i = 0; i < d->n; i++)
                r[i] = (Ranked) { d->items[i], i };
        qsort(r, d->n, sizeof *r, ranked_cmp);
        for (size_t i = 0; i < d->n; i++)
                d->items[i] = r[i].d;
        free(r);
}
