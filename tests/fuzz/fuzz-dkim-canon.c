/* SPDX-License-Identifier: MIT */
/* Canonicalization. Body: the streaming hasher, fed in uneven chunks and
 * with an l= limit, must hash exactly the first bytes of what the one-shot
 * canonicalizer produces; the output has only CRLF line ends and, relaxed,
 * no WSP before a line end. Header: the output fits n+2 bytes, relaxed
 * output has no CR/LF inside and is a fixed point. */
#include <gnutls/crypto.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dkim-canon.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 2 || size > 256 * 1024)
                return 0;
        uint8_t mode = data[0], lim = data[1];
        const char *p = (const char *) data + 2;
        size_t n = size - 2;
        DkimCanon c = mode & 1 ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE;

        char *canon = NULL;
        size_t clen = 0;
        if (dkim_canon_body(c, p, n, &canon, &clen) < 0)
                return 0;
        for (size_t i = 0; i < clen; i++) {
                if (canon[i] == '\n' && (i == 0 || canon[i - 1] != '\r'))
                        abort();
                if (canon[i] == '\r' && i + 1 < clen && canon[i + 1] == '\n' && c == DKIM_CANON_RELAXED &&
                    i > 0 && (canon[i - 1] == ' ' || canon[i - 1] == '\t'))
                        abort();
        }
        if (clen > 0 && (clen < 2 || canon[clen - 2] != '\r' || canon[clen - 1] != '\n'))
                abort();
        if (c == DKIM_CANON_SIMPLE && clen == 0)
                abort();

        uint64_t limit = mode & 2 ? DKIM_BODY_NO_LIMIT : (uint64_t) lim * 3;
        DkimBodyHash *b = NULL;
        if (dkim_body_hash_new(c, limit, &b) < 0) {
                free(canon);
                return 0;
        }
        for (size_t off = 0, chunk = (mode >> 2) + 1; off < n; off += chunk, chunk = chunk * 7 % 31 + 1)
                if (dkim_body_hash_feed(b, p + off, MIN(chunk, n - off)) < 0)
                        abort();
        uint8_t got[DKIM_SHA256_LEN], want[DKIM_SHA256_LEN];
        uint64_t total = 0;
        if (dkim_body_hash_finish(b, got, &total) < 0)
                abort();
        dkim_body_hash_free(b);
        if (total != clen)
                abort();
        if (gnutls_hash_fast(GNUTLS_DIG_SHA256, canon, (size_t) MIN((uint64_t) clen, limit), want) < 0)
                abort();
        if (memcmp(got, want, sizeof got) != 0)
                abort();
        free(canon);

        /* The same bytes as one header field. */
        char *h1 = malloc(n + 2), *h2 = malloc(n + 4);
        if (!h1 || !h2) {
                free(h1);
                free(h2);
                return 0;
        }
        size_t k1 = dkim_canon_header(c, p, n, true, h1);
        if (k1 > n + 2)
                abort();
        if (c == DKIM_CANON_RELAXED) {
                if (memchr(h1, '\r', k1) || memchr(h1, '\n', k1))
                        abort();
                size_t k2 = dkim_canon_header(c, h1, k1, true, h2);
                if (k2 != k1 || memcmp(h1, h2, k1) != 0)
                        abort();
        }
        free(h1);
        free(h2);
        return 0;
}
