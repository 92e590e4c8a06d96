/* SPDX-License-Identifier: MIT */
/* Fuzzes halyard-tlsrptd's on-disk journal format the way a restart reads
 * it: the input is split at '\n' into lines, each parsed with
 * tlsrpt_line_parse() and, when valid, added to an aggregate with small
 * caps. Every accepted line formats to a line that parses and formats to
 * the same bytes again (the format is canonical), and the
 * aggregate's compacted rows must replay to the same totals. The first byte
 * toggles a CRC-less mode where the CRC is recomputed, so the JSON checks
 * behind it are reached too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "tlsrpt-store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count_row(const TlsRptResult *res, void *userdata) {
        uint64_t *n = userdata;
        char *line;
        size_t len;
        TlsRptLine l;
        if (tlsrpt_line_format(res, &line, &len) < 0)
                return -1;
        if (tlsrpt_line_parse(line, len - 1, &l) < 0)
                abort();
        *n += l.res.count;
        tlsrpt_line_done(&l);
        free(line);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        TlsRptStore *s;
        if (size == 0 || size > 65536 || tlsrpt_store_new(4, 3, &s) < 0)
                return 0;
        bool fix_crc = data[0] & 1;
        const char *p = (const char *) data + 1, *end = (const char *) data + size;
        uint64_t added = 0;
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                size_t n = nl ? (size_t) (nl - p) : (size_t) (end - p);
                char *line = malloc(n + 10);
                size_t ln = n;
                if (!line)
                        break;
                memcpy(line, p, n);
                if (fix_crc && n > 9) {
                        char hex[9];
                        snprintf(hex, sizeof hex, "%08lx", crc32(0L, (const Bytef *) line + 9, (uInt) (n - 9)) & 0xffffffffUL);
                        memcpy(line, hex, 8);
                }
                TlsRptLine l;
                if (tlsrpt_line_parse(line, ln, &l) >= 0) {
                        /* format is canonical: format(parse(format(x))) == format(x) */
                        char *again, *again2;
                        size_t again_len, again2_len;
                        TlsRptLine l2;
                        if (tlsrpt_line_format(&l.res, &again, &again_len) < 0)
                                abort();
                        if (tlsrpt_line_parse(again, again_len - 1, &l2) < 0)
                                abort();
                        if (tlsrpt_line_format(&l2.res, &again2, &again2_len) < 0)
                                abort();
                        if (again_len != again2_len || memcmp(again, again2, again_len) != 0)
                                abort();
                        tlsrpt_line_done(&l2);
                        free(again);
                        free(again2);
                        if (tlsrpt_store_add(s, &l.res) >= 0 && l.res.count < UINT64_MAX / 4 &&
                            added < UINT64_MAX / 4)
                                added += l.res.count;
                        tlsrpt_line_done(&l);
                }
                free(line);
                p += n + 1;
        }
        uint64_t rows = 0, sessions = 0;
        bool saturated = false; /* totals stop at TLSRPT_COUNT_MAX: no equality then */
        for (size_t i = 0; i < s->n_days; i++) {
                sessions += s->days[i]->sessions;
                saturated = saturated || s->days[i]->sessions >= TLSRPT_COUNT_MAX;
                if (tlsrpt_day_foreach_row(s->days[i], count_row, &rows) < 0)
                        abort();
        }
        if (rows != sessions && !saturated)
                abort();
        tlsrpt_store_free(s);
        return 0;
}
