/* SPDX-License-Identifier: MIT */
/* The MTA-STS policy text parser (RFC 8461 §3.2) over arbitrary bytes (what
 * a policy host sends), and MX pattern matching with every pattern it
 * accepts. Invariants: a parsed policy has a valid mode, max_age within a
 * year, mx patterns for enforce/testing, and each pattern matches a host
 * built from it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queued-mtasts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        MtaStsPolicy p;

        if (mtasts_policy_parse((const char *) data, size, &p) < 0)
                return 0;
        if ((unsigned) p.mode >= _MTASTS_MODE_MAX || p.max_age > MTASTS_MAX_AGE_MAX || !p.lines || !p.mx)
                abort();
        if (p.mode != MTASTS_MODE_NONE && !p.mx[0])
                abort();
        for (char **m = p.mx; *m; m++) {
                char host[600];
                if ((*m)[0] == '*')
                        snprintf(host, sizeof host, "x%s", *m + 1);
                else
                        snprintf(host, sizeof host, "%s", *m);
                if (!mtasts_mx_match(*m, host) || !mtasts_policy_allows(&p, host))
                        abort();
                if ((*m)[0] == '*' && mtasts_mx_match(*m, *m + 2))
                        abort(); /* "*.a.b" never matches "a.b" */
        }
        MtaStsPolicy c;
        if (mtasts_policy_copy(&p, &c) == 0) {
                for (size_t i = 0; p.lines[i] || c.lines[i]; i++)
                        if (!p.lines[i] || !c.lines[i] || strcmp(p.lines[i], c.lines[i]) != 0)
                                abort();
                mtasts_policy_done(&c);
        }
        mtasts_policy_done(&p);
        return 0;
}
