/* SPDX-License-Identifier: MIT */
#pragma once

/* ARC (RFC 8617): chain validation and sealing.
 *
 * One ArcValidator per message. It is driven like the DKIM verifier
 * (dkim.h): feed the message in chunks, hand out the key queries it lists,
 * give it the answers, end the input; when arc_validator_is_done() the
 * result is ready, and arc_validator_seal() can add the next ARC set over
 * the very same message without reading it again (the validator always
 * keeps the relaxed body hash a seal needs).
 *
 * Validation (RFC 8617 §5.2): the ARC fields are grouped by i= (at most 50
 * sets, each exactly one AAR, AMS and AS, instances 1..N without gaps); a
 * newest AS with cv=fail ends in fail without crypto; AS(1) must say
 * cv=none and later ones cv=pass; then the newest AMS is verified (body and
 * header hash), then every AS from N down to 1. Older AMSes are verified
 * only to find the oldest passing one (oldest_pass); their failure does not
 * fail the chain.
 *
 * Sealing (§5.1): i = N+1; cv from the validation (or the caller's
 * override); refused beyond 50 sets and on top of a chain whose newest seal
 * already says cv=fail; a chain found failing is sealed with cv=fail and an
 * AS that covers only the new set (§5.1.2). The AMS never lists ARC fields
 * (§4.1.2) and is always relaxed/relaxed with t= and without l=.
 *
 * Results borrow from the validator.
 *
 * How a service drives it (one per message, thousands at once on one loop):
 *
 *   arc_validator_new(&params, &v);
 *   for each chunk read from the message fd:
 *           arc_validator_feed(v, buf, n);
 *           while (arc_validator_next_query(v, &name) > 0)
 *                   start an async TXT lookup of name (dns_query());
 *   arc_validator_feed_end(v);
 *   in each lookup's callback:
 *           arc_validator_answer(v, name, FOUND/NOT_FOUND/TEMPFAIL, txts, lens, n);
 *           if (arc_validator_is_done(v)) -> arc_validator_result(v, &res),
 *                   then, to seal, arc_validator_seal(v, &seal_params, &seal)
 *                   (two signatures: may run on a worker thread, as long as
 *                   nothing else touches v meanwhile).
 *
 * The DNS answers may arrive before the end of the input; is_done() is
 * true only when both happened. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dkim.h"

typedef enum ArcStatus {
        ARC_STATUS_NONE,
        ARC_STATUS_PASS,
        ARC_STATUS_FAIL,
        _ARC_STATUS_MAX,
} ArcStatus;

const char *arc_status_to_string(ArcStatus s);

typedef struct ArcSetResult {
        unsigned instance;
        const DkimSignature *ams;       /* NULL when it did not parse */
        const DkimSignature *as;
        DkimStatus ams_status;          /* PASS/FAIL/...; NEUTRAL when not checked */
        DkimStatus as_status;
        const char *ams_reason, *as_reason;
} ArcSetResult;

typedef struct ArcResult {
        ArcStatus status;
        bool temporary;                 /* fail only because a key lookup failed temporarily */
        const char *reason;             /* static text for fail, NULL otherwise */
        unsigned failed_instance;       /* the set that failed, 0 if none or structural */
        unsigned n_sets;                /* N (0 for none and for a malformed chain) */
        unsigned oldest_pass;           /* lowest i whose AMS and all newer AMSes verify; 0 unless pass */
        const ArcSetResult *sets;       /* sets[0] is instance 1; n_sets of them */
} ArcResult;

/* No clock: ARC signatures have no x= (RFC 8617 §4.1.2), and t= is not
 * checked against the present (the suite's t= values are from 1970). */
typedef struct ArcValidateParams {
        unsigned min_rsa_bits;          /* 0: 1024 */
        MailHeaderLimits header_limits;
} ArcValidateParams;

typedef struct ArcValidator ArcValidator;

int arc_validator_new(const ArcValidateParams *params, ArcValidator **ret);
ArcValidator *arc_validator_free(ArcValidator *v);
/* 0, -ENOMEM, -EIO. A malformed header section is a fail result, not an error. */
int arc_validator_feed(ArcValidator *v, const void *p, size_t n);
int arc_validator_feed_end(ArcValidator *v);
/* 1 with a name to look up (TXT), 0 when nothing more is needed now. */
int arc_validator_next_query(ArcValidator *v, const char **ret_name);
int arc_validator_answer(ArcValidator *v, const char *name, DkimLookup lookup,
                         const char *const *txt, const size_t *txt_len, size_t n_txt);
bool arc_validator_is_done(const ArcValidator *v);
/* -EBUSY until done. */
int arc_validator_result(ArcValidator *v, const ArcResult **ret);
const MailHeaders *arc_validator_headers(const ArcValidator *v);

typedef enum ArcSealCv {
        ARC_SEAL_CV_AUTO,       /* from the validation result */
        ARC_SEAL_CV_NONE,
        ARC_SEAL_CV_PASS,
        ARC_SEAL_CV_FAIL,
} ArcSealCv;

typedef struct ArcSealParams {
        const char *domain, *selector;
        gnutls_privkey_t key;                   /* borrowed */
        DkimAlgorithm algorithm;                /* rsa-sha256 is what receivers accept */
        const char *authserv_id;                /* our ADMD's authserv-id */
        const char *results;                    /* RFC 8601 resinfo list, "; "-separated,
                                                 * e.g. "arc=pass; spf=pass smtp.mailfrom=a.example";
                                                 * NULL or "" for "none" */
        const char *const *headers;             /* AMS h=, NULL-terminated; NULL: dkim_default_sign_headers */
        uint64_t timestamp;                     /* t= */
        ArcSealCv cv;
        unsigned min_rsa_bits;                  /* 0: 2048 */
        bool standardized;                      /* the test suite's layout: sorted tags, no folding */
} ArcSealParams;

/* The three new fields, each "Name: value\r\n", newly allocated; prepend
 * them in the order as, ams, aar. */
typedef struct ArcSeal {
        char *aar, *ams, *as;
        unsigned instance;
        ArcCv cv;
} ArcSeal;

/* Seals the message the validator has read (it must be done). Errors:
 * -EBUSY (not done), -EPERM (the newest existing seal says cv=fail: the
 * chain has ended, do not extend it), -E2BIG (50 sets already),
 * -EAGAIN (the validation failed only temporarily and cv is AUTO),
 * -EBADMSG (the header section was malformed), -EKEYREJECTED, -EINVAL,
 * -ENOMEM. */
int arc_validator_seal(ArcValidator *v, const ArcSealParams *params, ArcSeal *ret);
void arc_seal_done(ArcSeal *s);
