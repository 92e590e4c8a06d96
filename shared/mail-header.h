/* SPDX-License-Identifier: MIT */
#pragma once

/* The header section of an Internet message (RFC 5322 §2.2), split into
 * fields with every byte kept, as DKIM and ARC need them: signatures cover
 * the raw text (simple canonicalization) or a form derived from it
 * (relaxed), so nothing may be unfolded or re-encoded on the way in.
 *
 * The parser is incremental: feed any chunks; it reports where the header
 * section ended, so the caller can pass the rest straight to a body hasher
 * without keeping the body. Line ends are normalized: a bare LF counts as
 * CRLF (messages from local submission or from files use LF; DKIM is
 * defined over CRLF), and the stored raw text always uses CRLF.
 *
 * Limits (number of fields, size of one field, size of the whole section)
 * are enforced while reading, before anything grows past them.
 *
 * Ownership: mail_headers_new() returns an object freed with
 * mail_headers_free(); field views returned by the accessors borrow from it
 * and stay valid until it is freed. Every other function borrows. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct MailHeaders MailHeaders;

/* One field: raw[0..raw_len) is the whole field including its final CRLF
 * (one is supplied for a last field that ended with the input), name[0..name_len) the field name without any white space before the
 * colon, value the bytes after the colon up to and without the final CRLF. */
typedef struct MailHeaderField {
        const char *raw;
        size_t raw_len;
        const char *name;
        size_t name_len;
        const char *value;
        size_t value_len;
} MailHeaderField;

typedef struct MailHeaderLimits {
        size_t max_fields;      /* fields in the section */
        size_t max_field_size;  /* bytes of one field, folded lines included */
        size_t max_total;       /* bytes of the whole section */
} MailHeaderLimits;

#define MAIL_HEADER_MAX_FIELDS_DEFAULT 1000U
#define MAIL_HEADER_MAX_FIELD_SIZE_DEFAULT (64U * 1024U)
#define MAIL_HEADER_MAX_TOTAL_DEFAULT (1024U * 1024U)

/* limits may be NULL for the defaults above; a zero member also means its
 * default. Returns 0 or -ENOMEM. */
int mail_headers_new(const MailHeaderLimits *limits, MailHeaders **ret);
MailHeaders *mail_headers_free(MailHeaders *h);

/* Feeds n bytes of the message. Returns 0 when every byte was header and
 * more is needed; 1 when the header section ended, with *ret_consumed the
 * number of bytes of this chunk that belonged to it (the empty line
 * included): the rest of the chunk, and everything fed later, is body.
 * Feeding after 1 was returned is -EALREADY. Errors: -E2BIG when a limit is
 * exceeded, -EBADMSG for a line that is neither a field nor a continuation
 * (no colon, an empty or invalid name, a continuation before any field),
 * -ENOMEM. After an error the object only accepts mail_headers_free(). */
int mail_headers_feed(MailHeaders *h, const void *p, size_t n, size_t *ret_consumed);

/* Ends the input: a message without a body (no empty line) is complete
 * here. Returns 0, or the errors above for a pending partial line. */
int mail_headers_end(MailHeaders *h);

/* True once the header section is complete (after feed returned 1 or end
 * succeeded). Accessors below may only be used then. */
bool mail_headers_complete(const MailHeaders *h);

size_t mail_headers_count(const MailHeaders *h);
/* NULL when i is out of range. Fields are in message order (top first). */
const MailHeaderField *mail_headers_get(const MailHeaders *h, size_t i);
const MailHeaderField *mail_headers_fields(const MailHeaders *h);

/* Case-insensitive (ASCII) name comparison with a NUL-terminated name. */
bool mail_header_field_is(const MailHeaderField *f, const char *name);
bool mail_header_name_eq(const char *a, size_t a_len, const char *b, size_t b_len);

/* One-shot parse of a header section in a buffer, for tests and fuzzing;
 * *ret_body_offset (if given) is where the body starts in p (n when there
 * is no body). Same errors as feed. */
int mail_headers_parse(const void *p, size_t n, const MailHeaderLimits *limits,
                       MailHeaders **ret, size_t *ret_body_offset);

/* Selects fields for a DKIM h= list (RFC 6376 §5.4.2): for each name in
 * order, the last not yet selected field of that name, counting from the
 * bottom; a name with no field left selects nothing (SIZE_MAX in
 * ret_indices: it contributes the empty string, so adding such a field
 * later breaks the signature, which is what over-signing relies on).
 * names[i] has length name_lens[i]. ret_indices has room for n_names.
 * Returns 0, or -ENOMEM. */
int mail_header_fields_select(const MailHeaderField *fields, size_t n_fields,
                              const char *const *names, const size_t *name_lens, size_t n_names,
                              size_t *ret_indices);
