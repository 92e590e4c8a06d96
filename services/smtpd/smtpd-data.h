/* SPDX-License-Identifier: MIT */
#pragma once

/* Incremental reader for a message body after DATA (dot mode) or BDAT
 * (RFC 3030 chunk mode). Pure: no I/O of its own; octets go to a caller
 * sink (e.g. a write() to a memfd). The state survives any chunk boundary:
 * feeding the same input in any chunking gives the same output, the same
 * counters and the same result.
 *
 * DATA mode rules:
 *  - the data ends ONLY at <CRLF> "." <CRLF>, where the first CRLF is a real
 *    CR LF pair (the CRLF that ended the DATA command counts, so ".\r\n"
 *    right away is an empty message). The final ".\r\n" is not output; the
 *    CRLF before it is the end of the last line and is output.
 *  - a line that starts with "." after a real CRLF and is not exactly
 *    ".\r\n" has that first dot removed (RFC 5321 4.5.2), except when the
 *    dot is followed by a bare LF or a bare CR (".\n", ".\rX"): then the
 *    dot is kept as content.
 *  - bare LF (not after CR) and bare CR (not followed by LF) never end a
 *    line for the end-marker or the dot rules: "\n.\n", "\r.\r", "\n.\r\n",
 *    "\r\n.\n", "\r\n.\r" never end the data (SMTP smuggling defence).
 *    Default: the message is rejected once it is complete with
 *    550 5.6.11 (as Postfix's smtpd_forbid_bare_newline). With
 *    SMTP_DATA_NORMALIZE_BARE_NEWLINE, a bare CR or bare LF is written as
 *    CRLF (and counts as a line end for the counters), but the octets that
 *    follow it are still taken literally: no dot removal and no end
 *    detection there.
 *  - text lines are limited to 1000 octets including CRLF (RFC 5321
 *    4.5.3.1.6), counted after dot removal. Default: reject the complete
 *    message with 500 5.5.6; SMTP_DATA_ALLOW_LONG_LINES lifts the limit.
 *  - the size limit (max_size, counted after dot removal) is enforced while
 *    reading: beyond it nothing more goes to the sink, the rest is consumed
 *    up to the end marker, then 552 5.3.4 is reported.
 *  - the first problem (in input order) is the one reported; from that
 *    octet on nothing more is written to the sink (the message will be
 *    refused), but reading goes on to the end marker.
 *
 * BDAT mode: exactly chunk_size octets per chunk, taken literally (no dot
 * removal, no end marker, no bare CR/LF check); the size limit and (unless
 * SMTP_DATA_ALLOW_LONG_LINES, which BINARYMIME callers should set) the line
 * length limit, counted between LFs, apply over all chunks of the message. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtpd-command.h"

#define SMTP_DATA_LINE_MAX 1000 /* octets incl. CRLF */

enum {
        SMTP_DATA_NORMALIZE_BARE_NEWLINE = 1u << 0,
        SMTP_DATA_ALLOW_LONG_LINES = 1u << 1,
};

/* Gets output octets; returns >= 0, or a negative errno that stops the
 * reader (returned by smtp_data_feed(), then sticky). */
typedef int (*SmtpDataSink)(const void *p, size_t n, void *userdata);

typedef struct SmtpDataOptions {
        uint64_t max_size;      /* 0: no limit */
        unsigned flags;         /* SMTP_DATA_* */
        SmtpDataSink sink;      /* NULL: discard */
        void *userdata;
} SmtpDataOptions;

typedef enum SmtpDataProblem {
        SMTP_DATA_OK,
        SMTP_DATA_TOO_BIG,
        SMTP_DATA_BARE_NEWLINE,
        SMTP_DATA_LINE_TOO_LONG,
} SmtpDataProblem;

typedef struct SmtpDataReader {
        /* public, read-only counters */
        uint64_t size;          /* message octets after dot removal */
        uint64_t wire_bytes;    /* octets consumed, end marker included */
        uint64_t lines;         /* line ends seen (CRLF, or LF in BDAT) */
        bool eight_bit;         /* an octet >= 0x80 */
        bool has_nul;           /* a NUL octet */
        bool done;              /* end of data / last BDAT chunk complete */
        SmtpDataProblem problem;

        /* private */
        SmtpDataOptions opts;
        int state;
        bool bdat;
        bool bdat_last;
        uint64_t bdat_left;
        uint64_t line_len;
        int sink_error;
        size_t out_n;
        char out[4096];
} SmtpDataReader;

/* Starts a message in DATA mode. */
void smtp_data_reader_init(SmtpDataReader *r, const SmtpDataOptions *opts);

/* Starts a message in BDAT mode: use instead of smtp_data_reader_init()
 * for the first chunk, then smtp_data_reader_bdat() for each chunk. */
void smtp_data_reader_init_bdat(SmtpDataReader *r, const SmtpDataOptions *opts);

/* Announces the next BDAT chunk. Returns -EINVAL when the reader is in
 * DATA mode, the last chunk was already read, or a chunk is unfinished. */
int smtp_data_reader_bdat(SmtpDataReader *r, uint64_t chunk_size, bool last);

/* Feeds buf[0..n). Returns 1 when the end of the data (DATA mode) or of the
 * current chunk (BDAT mode) was reached: *ret_consumed octets were used and
 * buf[*ret_consumed..n) belongs to what follows (pipelined commands).
 * Once the end was reached (or, in BDAT mode, before a chunk is announced)
 * it returns 1 and consumes nothing. Returns 0 when all n octets were used
 * and more are needed, or the sink's negative errno (sticky).
 * ret_consumed may be NULL. */
int smtp_data_feed(SmtpDataReader *r, const void *buf, size_t n, size_t *ret_consumed);

/* 0 when the message (so far) is acceptable, else -EINVAL with the reply
 * for the end of data: 552 5.3.4, 550 5.6.11 or 500 5.5.6. */
int smtp_data_result(const SmtpDataReader *r, SmtpReplyError *reterr);
