/* SPDX-License-Identifier: MIT */
#pragma once

/* DKIM canonicalization (RFC 6376 §3.4), shared by DKIM and ARC.
 *
 * Headers: one field at a time into a caller buffer (a canonical field is
 * never longer than the raw field plus a CRLF).
 *
 * Body: a streaming hasher. Feed the body in chunks of any size; it keeps
 * only a few bytes of state (pending empty lines are counted, not stored),
 * honours an l= limit by hashing only that many canonical bytes, and hashes
 * with SHA-256 through GnuTLS. A bare LF counts as CRLF, as in
 * mail-header.h. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Relaxed first: a zero-initialized parameter struct signs relaxed/relaxed,
 * the form that survives forwarding. */
typedef enum DkimCanon {
        DKIM_CANON_RELAXED,
        DKIM_CANON_SIMPLE,
        _DKIM_CANON_MAX,
        _DKIM_CANON_INVALID = -EINVAL,
} DkimCanon;

#define DKIM_SHA256_LEN 32U
#define DKIM_BODY_NO_LIMIT UINT64_MAX

/* "simple"/"relaxed" -> enum; _DKIM_CANON_INVALID otherwise. */
DkimCanon dkim_canon_from_string(const char *s, size_t n);
const char *dkim_canon_to_string(DkimCanon c);
/* A c= value: "header/body", or "header" alone with a simple body (RFC 6376
 * §3.5). 0, or -EINVAL with nothing stored. */
int dkim_canon_pair_from_string(const char *s, size_t n, DkimCanon *ret_header, DkimCanon *ret_body);

/* Canonicalizes one raw header field (name, colon, value, with or without
 * the final CRLF) into out, which must have room for n + 2 bytes. The
 * result ends with CRLF unless strip_crlf is set (the signature field itself
 * is hashed without it). Returns the length written. */
size_t dkim_canon_header(DkimCanon c, const char *raw, size_t n, bool strip_crlf, char *out);

typedef struct DkimBodyHash DkimBodyHash;

/* limit: hash at most this many canonical bytes (l=), or
 * DKIM_BODY_NO_LIMIT. Returns 0, -ENOMEM, -EIO (GnuTLS failure). */
int dkim_body_hash_new(DkimCanon c, uint64_t limit, DkimBodyHash **ret);
DkimBodyHash *dkim_body_hash_free(DkimBodyHash *b);

int dkim_body_hash_feed(DkimBodyHash *b, const void *p, size_t n);

/* Ends the body and writes the SHA-256 digest. *ret_length (if given) is the
 * full canonical body length, so a verifier can refuse an l= longer than the
 * body. Only the first call computes; later calls return the same. */
int dkim_body_hash_finish(DkimBodyHash *b, uint8_t ret[DKIM_SHA256_LEN], uint64_t *ret_length);

DkimCanon dkim_body_hash_canon(const DkimBodyHash *b);
uint64_t dkim_body_hash_limit(const DkimBodyHash *b);

/* Canonicalizes a whole body into a newly allocated buffer (tests, fuzzing).
 * Returns 0 or -ENOMEM. */
int dkim_canon_body(DkimCanon c, const void *p, size_t n, char **ret, size_t *ret_len);
