/* SPDX-License-Identifier: MIT */
/* Fuzzes the _smtp._tls TXT record parser (tlsrpt_record_parse) and the
 * mailto: address extraction of each rua it keeps: every kept URI must be
 * mailto: or https:, free of the delimiters RFC 8460 wants %-encoded, and at
 * most TLSRPT_RUA_MAX of them; everything is released (a leak is a
 * finding). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tlsrpt-report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *p = (const char *) data;
        TlsRptRecord rec;
        bool candidate = tlsrpt_record_is_candidate(p, size);
        if (tlsrpt_record_parse(p, size, &rec) < 0)
                return 0;
        if (!candidate || rec.n_rua == 0 || rec.n_rua > TLSRPT_RUA_MAX)
                abort();
        for (size_t i = 0; i < rec.n_rua; i++) {
                const char *u = rec.rua[i];
                if (strncasecmp(u, "mailto:", 7) != 0 && strncasecmp(u, "https://", 8) != 0)
                        abort();
                if (strpbrk(u, ",; \t!") || strlen(u) > TLSRPT_URI_MAX)
                        abort();
                char *a;
                if (tlsrpt_mailto_address(u, &a) >= 0) {
                        if (!strchr(a, '@') || strpbrk(a, " <>\r\n,"))
                                abort();
                        free(a);
                }
        }
        tlsrpt_record_done(&rec);
        return 0;
}
