/* SPDX-License-Identifier: MIT */
/* The SMTP client's parsers of what a remote server sends: reply lines and
 * enhanced status codes; and the dot-stuffer over arbitrary content, whose
 * output must never contain a bare LF, a bare CR, or a line "." before the
 * end. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queued-smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *p = (const char *) data;

        /* Each line of the input as a reply line. */
        for (size_t start = 0; start < size;) {
                const char *nl = memchr(p + start, '\n', size - start);
                size_t len = nl ? (size_t) (nl - (p + start)) : size - start;
                int code;
                bool more;
                size_t off;
                if (smtp_reply_line_parse(p + start, len, &code, &more, &off) >= 0) {
                        if (code < 200 || code > 599 || off > len)
                                abort();
                        size_t e = smtp_enhanced_code_length(p + start + off, len - off, code);
                        if (e > len - off)
                                abort();
                }
                start += len + 1;
        }

        /* The whole input as message content, in uneven chunks. */
        SmtpDotStuffer st = SMTP_DOT_STUFFER_INIT;
        char *out = malloc(2 * size + 8);
        if (!out)
                return 0;
        size_t n = 0;
        for (size_t off = 0, chunk = 1; off < size; off += chunk, chunk = chunk * 3 % 17 + 1)
                n += smtp_dot_stuff(&st, p + off, chunk < size - off ? chunk : size - off, out + n);
        n += smtp_dot_stuff_finish(&st, out + n);
        if (n < 3 || memcmp(out + n - 3, ".\r\n", 3) != 0)
                abort();
        for (size_t i = 0; i < n; i++) {
                if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r'))
                        abort();
                if (out[i] == '\r' && (i + 1 >= n || out[i + 1] != '\n'))
                        abort();
                /* A lone "." line only at the very end. */
                if (out[i] == '.' && (i == 0 || out[i - 1] == '\n') && i + 3 < n && out[i + 1] == '\r')
                        abort();
        }
        free(out);
        return 0;
}
