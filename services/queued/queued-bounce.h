/* SPDX-License-Identifier: MIT */
#pragma once

/* Delivery status notifications (bounces, delay warnings, success reports)
 * for halyard-queued.
 *
 *   RFC 3461  the SMTP DSN extension: NOTIFY, RET, ENVID, ORCPT
 *   RFC 3464  the message/delivery-status format
 *   RFC 3462/6522  multipart/report
 *   RFC 6533  internationalized DSNs: message/global-delivery-status, the
 *             "utf-8" address type, message/global(-headers)
 *   RFC 3834  Auto-Submitted: auto-replied
 *   RFC 5321 §4.5.5/§6.1  never a DSN to the null sender (so never a bounce
 *             of a bounce)
 *
 * The caller describes the original transaction (BounceEnvelope) and the
 * outcome per recipient (BounceRecipient), asks bounce_needed() whether any
 * recipient must be reported, and if so has bounce_write() put a complete
 * RFC 5322 message into an fd (a memfd it then enqueues). The new message's
 * envelope is MAIL FROM:<> and RCPT TO:<original sender> (BounceResult).
 *
 * Ownership: everything passed in is borrowed and only read during the
 * call; nothing is kept. Strings that come from the network (ENVID, ORCPT,
 * the peer's reply text) are sanitised here: control characters (CR, LF,
 * NUL, ...) never reach the output, their length is capped, non-ASCII is
 * kept only where the DSN is an internationalized one. Addresses and host
 * names are expected to have been validated by smtpd; ones that contain
 * control characters or malformed UTF-8 are refused with -EINVAL.
 *
 * Output: CRLF line endings throughout, no line longer than 998 octets
 * (the original is re-terminated and over-long lines are broken), a MIME
 * boundary checked against everything it encloses. The functions never log
 * and keep no state between calls. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef enum BounceAction {
        BOUNCE_ACTION_FAILED,
        BOUNCE_ACTION_DELAYED,
        BOUNCE_ACTION_DELIVERED,
        BOUNCE_ACTION_RELAYED,  /* handed to a system that sends no DSNs */
        BOUNCE_ACTION_EXPANDED, /* delivered to a list/alias that expanded it */
        _BOUNCE_ACTION_MAX,
        _BOUNCE_ACTION_INVALID = -EINVAL,
} BounceAction;

/* NOTIFY= of RFC 3461, as flags. 0 means the client gave no NOTIFY, which
 * halyard treats as FAILURE,DELAY (RFC 3461 §4.1 leaves FAILURE or
 * FAILURE,DELAY to the implementation). NEVER wins over anything it is
 * (illegally) combined with. */
enum {
        BOUNCE_NOTIFY_NEVER   = 1u << 0,
        BOUNCE_NOTIFY_SUCCESS = 1u << 1,
        BOUNCE_NOTIFY_FAILURE = 1u << 2,
        BOUNCE_NOTIFY_DELAY   = 1u << 3,
};

typedef enum BounceRet {
        BOUNCE_RET_DEFAULT, /* no RET=: like FULL, within the size cap */
        BOUNCE_RET_FULL,
        BOUNCE_RET_HDRS,
        _BOUNCE_RET_MAX,
        _BOUNCE_RET_INVALID = -EINVAL,
} BounceRet;

typedef struct BounceEnvelope {
        const char *sender;            /* MAIL FROM reverse-path without <>; NULL or "" = null sender */
        const char *envid;             /* ENVID, xtext-decoded; NULL = none */
        BounceRet ret;
        bool smtputf8;                 /* the original transaction used SMTPUTF8 */
        time_t arrival_date;           /* 0 = unknown, field omitted */
        const char *reporting_mta;     /* our host name (required) */
        const char *received_from_mta; /* the client's name; NULL = omitted */
        const char *queue_id;          /* NULL = omitted */
} BounceEnvelope;

typedef struct BounceRecipient {
        const char *orcpt_type;        /* ORCPT addr-type ("rfc822", "utf-8"); NULL = no ORCPT */
        const char *orcpt;             /* ORCPT address, xtext-decoded (untrusted) */
        const char *final_recipient;   /* the RCPT TO address (required) */
        BounceAction action;
        const char *status;            /* enhanced code "5.1.1"; NULL = X.0.0 of the action's class */
        const char *remote_mta;        /* host name; NULL = omitted */
        const char *diagnostic_type;   /* NULL = "smtp" */
        const char *diagnostic;        /* the peer's reply, e.g. "550 5.1.1 <x>: user unknown" (untrusted) */
        time_t last_attempt;           /* 0 = omitted */
        time_t will_retry_until;       /* delayed only; 0 = omitted */
        unsigned notify;               /* BOUNCE_NOTIFY_* flags; 0 = no NOTIFY given */
} BounceRecipient;

typedef int (*BounceRandomFn)(void *buf, size_t n, void *userdata);

typedef struct BounceOptions {
        uint64_t full_max;     /* largest original returned whole; larger ones: headers only, with a note */
        size_t header_max;     /* at most this much of the original's header is returned */
        time_t now;            /* Date: of the report; 0 = time(NULL) */
        BounceRandomFn random; /* NULL = getrandom(); tests supply their own */
        void *random_userdata;
} BounceOptions;

#define BOUNCE_FULL_MAX_DEFAULT   (UINT64_C(1) << 20)
#define BOUNCE_HEADER_MAX_DEFAULT ((size_t) 1 << 20)
#define BOUNCE_DIAGNOSTIC_MAX     1000 /* octets of peer text kept */
#define BOUNCE_ENVID_MAX          100  /* RFC 3461 §4.4 */
#define BOUNCE_ORCPT_MAX          500  /* RFC 3461 §4.2 */
#define BOUNCE_LINE_MAX           998  /* RFC 5322 §2.1.1, octets before CRLF */

void bounce_options_init(BounceOptions *o);

typedef enum BounceReturned {
        BOUNCE_RETURNED_NONE,    /* no original given (fd < 0) */
        BOUNCE_RETURNED_HEADERS,
        BOUNCE_RETURNED_FULL,
} BounceReturned;

typedef struct BounceResult {
        const char *mail_from;    /* always "" (MAIL FROM:<>) */
        const char *rcpt_to;      /* the original sender, borrowed from the envelope */
        bool smtputf8;            /* the report must be sent with SMTPUTF8 */
        bool eightbit;            /* the report contains 8-bit octets (BODY=8BITMIME) */
        unsigned n_reported;      /* recipients in the report */
        BounceReturned returned;
        uint64_t size;            /* octets written */
} BounceResult;

/* Whether recipient r of a message with envelope env is to be reported:
 * never to the null sender, never for NOTIFY=NEVER, failures unless NOTIFY
 * lacks FAILURE, delays unless NOTIFY lacks DELAY, successes (delivered,
 * relayed, expanded) only with NOTIFY=SUCCESS. */
bool bounce_recipient_needed(const BounceEnvelope *env, const BounceRecipient *r);

/* How many of the n recipients are to be reported; 0 = send nothing. */
size_t bounce_needed(const BounceEnvelope *env, const BounceRecipient *rcpts, size_t n);

/* Writes the report about the recipients bounce_recipient_needed() selects
 * into out_fd (at its current offset). The original is read with pread()
 * from original_fd (offset 0 to EOF, seekable, not modified; -1 = none) in
 * bounded memory. o may be NULL for the defaults. ret may be NULL.
 *
 * What is returned of the original: RET=HDRS, or a report without any
 * failure (RFC 3461 §4.3), gives the header only; otherwise the whole
 * message up to o->full_max octets, the header only above that.
 *
 * Returns 0, or -ENODATA when no recipient is to be reported (nothing
 * written), -EINVAL for a malformed envelope/recipient (bad address, host
 * name, status code, action), -ESPIPE for an original that cannot be
 * pread(), other negative errnos from I/O. On failure out_fd may hold a
 * partial report. */
int bounce_write(const BounceEnvelope *env, const BounceRecipient *rcpts, size_t n_rcpts,
                 int original_fd, const BounceOptions *o, int out_fd, BounceResult *ret);

/* Where the header of a message in p[0..n) ends: the offset of the empty
 * line that ends it, or n when there is none. Lines end in CRLF, LF or a
 * lone CR (as the report's copy of the original re-terminates them). Sets
 * *ret_complete when the empty line was found. */
size_t bounce_header_end(const uint8_t *p, size_t n, bool *ret_complete);

const char *bounce_action_to_string(BounceAction a);
