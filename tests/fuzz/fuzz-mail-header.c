/* SPDX-License-Identifier: MIT */
/* The header section parser, fed in uneven chunks (the first byte picks
 * the chunking and the limits): it must agree with the one-shot parse, keep
 * every field inside its buffer ending in CRLF with a non-empty name, and
 * the bottom-up selection must only pick matching, distinct fields. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "mail-header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

DEFINE_TRIVIAL_CLEANUP_FUNC(MailHeaders *, mail_headers_free);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(mail_headers_freep) MailHeaders *a = NULL, *b = NULL;
        if (size < 1 || size > 1024 * 1024)
                return 0;
        uint8_t mode = data[0];
        const char *p = (const char *) data + 1;
        size_t n = size - 1;
        MailHeaderLimits small = { .max_fields = 8, .max_field_size = 64, .max_total = 512 };
        const MailHeaderLimits *limits = mode & 0x80 ? &small : NULL;
        size_t body_a = 0, body_b = 0;

        int ra = mail_headers_parse(p, n, limits, &a, &body_a);

        if (mail_headers_new(limits, &b) < 0)
                return 0;
        int rb = 0;
        size_t off = 0, chunk = (mode & 0x0f) + 1;
        while (off < n) {
                size_t used = 0, len = MIN(chunk, n - off);
                rb = mail_headers_feed(b, p + off, len, &used);
                if (rb < 0)
                        break;
                if (used > len)
                        abort();
                if (rb == 1) {
                        body_b = off + used;
                        break;
                }
                off += len;
                chunk = chunk * 5 % 23 + 1;
        }
        if (rb == 0) {
                rb = mail_headers_end(b);
                body_b = n;
        }
        if (rb > 0)
                rb = 0;
        if (ra == -ENOMEM || rb == -ENOMEM)
                return 0;
        if (ra != rb)
                abort();
        if (ra < 0)
                return 0;
        if (body_a != body_b || body_a > n)
                abort();

        size_t count = mail_headers_count(a);
        if (count != mail_headers_count(b))
                abort();
        const MailHeaderField *fields = mail_headers_fields(a);
        for (size_t i = 0; i < count; i++) {
                const MailHeaderField *f = &fields[i], *g = mail_headers_get(b, i);
                if (f->raw_len != g->raw_len || memcmp(f->raw, g->raw, f->raw_len) != 0)
                        abort();
                if (f->name_len == 0 || f->raw_len < f->name_len + 3 || f->name != f->raw)
                        abort();
                if (f->raw[f->raw_len - 2] != '\r' || f->raw[f->raw_len - 1] != '\n')
                        abort();
                if (f->value < f->raw || f->value + f->value_len + 2 != f->raw + f->raw_len)
                        abort();
                if (memchr(f->name, ':', f->name_len))
                        abort();
        }

        /* Select every field's own name, plus names that may not exist. */
        const char *names[10];
        size_t lens[10], idx[10], k = 0;
        for (size_t i = 0; i < count && k < 8; i++, k++) {
                names[k] = fields[i].name;
                lens[k] = fields[i].name_len;
        }
        names[k] = "from";
        lens[k++] = 4;
        names[k] = "";
        lens[k++] = 0;
        if (mail_header_fields_select(fields, count, names, lens, k, idx) < 0)
                return 0;
        for (size_t i = 0; i < k; i++) {
                if (idx[i] == SIZE_MAX)
                        continue;
                if (idx[i] >= count || !mail_header_name_eq(fields[idx[i]].name, fields[idx[i]].name_len, names[i], lens[i]))
                        abort();
                for (size_t j = 0; j < i; j++)
                        if (idx[j] == idx[i])
                                abort();
        }
        return 0;
}
