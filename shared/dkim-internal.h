/* SPDX-License-Identifier: MIT */
#pragma once

/* Pieces of dkim.c that arc.c reuses; not for other callers. */

#include "dkim.h"

/* A growing output buffer that tracks the column, for folded fields. The
 * first failure sticks in error; later appends do nothing. */
typedef struct DkimOut {
        char *buf;
        size_t len, cap;
        size_t col;
        int error;
} DkimOut;

void dkim_out_raw(DkimOut *o, const char *p, size_t n);
void dkim_out_str(DkimOut *o, const char *s);
/* "; name=value" (no "; " for the first tag). With fold, a line break is
 * put before the tag when it would pass column 78, and a breakable value
 * (base64) is split across lines. */
void dkim_out_tag(DkimOut *o, bool first, bool fold, const char *name, const char *value, bool breakable);

/* The ":"-joined h= list for these fields (see dkim_signer_sign()). */
int dkim_build_header_list(const MailHeaderField *fields, size_t n_fields, const char *const *names,
                           bool explicit_list, char **ret);

/* Verifies a DKIM-Signature or ARC-Message-Signature against the message's
 * fields and the body hash of its canonicalization/l=. Fills res (never
 * fails for a bad signature: that is a result); returns <0 only for
 * -ENOMEM/-EIO. */
int dkim_verify_signature(const DkimSignature *sig, const MailHeaderField *fields, size_t n_fields,
                          const MailHeaderField *sig_field, DkimBodyHash *body, const DkimKeyEntry *ke,
                          unsigned min_rsa_bits, DkimResult *res);

/* Header section first, then the body to the hashers. Returns 1 when the
 * header section completed in this chunk (*ret_body_off is where the body
 * starts in it), 0 otherwise; a malformed section is recorded in
 * *header_error and not returned. */
int dkim_input_feed(MailHeaders *h, int *header_error, DkimBodySet *bodies, bool headers_done,
                    const void *p, size_t n, size_t *ret_body_off);
