/* SPDX-License-Identifier: MIT */
#pragma once

/* One SMTP command line, parsed. Pure: no I/O, no allocation, no global
 * state. The parser borrows the input line and copies everything it keeps
 * into the SmtpCommand, so a SmtpCommand is a plain value (it may be copied
 * with '=' and needs no destructor).
 *
 * Rules (RFC 5321, 1870, 3461, 3030, 4954, 6152, 6531):
 *  - the line comes without its CRLF; more than 510 octets (512 with CRLF,
 *    RFC 5321 4.5.3.1.4) or SMTP_PARSE_LINE_TOO_LONG → 500 5.5.6;
 *    NUL, CR or LF inside the line → 500 5.5.2;
 *  - verbs and keywords are case-insensitive; one or more SP separate the
 *    verb and the arguments and trailing SP are ignored (as Postfix does);
 *  - MAIL FROM:<path> / RCPT TO:<path>, optional SP after the colon; the
 *    angle brackets are required; source routes are accepted and dropped;
 *    "<>" only for MAIL; RCPT TO:<Postmaster> (no domain) is accepted;
 *  - limits: path 256 octets incl. "<" ">", local part 64, domain 255,
 *    label 63;
 *  - non-ASCII (valid UTF-8 only) in a MAIL path needs the SMTPUTF8
 *    parameter, in a RCPT path SMTP_PARSE_UTF8_TRANSACTION (the MAIL of this
 *    transaction had SMTPUTF8), otherwise 553 5.6.7; in EHLO/HELO/VRFY/EXPN/
 *    HELP/NOOP arguments SMTP_PARSE_SMTPUTF8 (else 501 5.5.4);
 *  - an ESMTP parameter is accepted only when its extension is enabled in
 *    the flags (SIZE, 8BITMIME/BINARYMIME, SMTPUTF8, DSN), otherwise or when
 *    unknown 555 5.5.4; duplicates and bad values 501 5.5.4. AUTH=<value>
 *    on MAIL is accepted (xtext-checked) and ignored. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_COMMAND_LINE_MAX 510 /* octets, without CRLF */
#define SMTP_PATH_MAX 256         /* incl. "<" and ">" */
#define SMTP_LOCAL_PART_MAX 64
#define SMTP_DOMAIN_MAX 255
#define SMTP_LABEL_MAX 63
#define SMTP_ENVID_MAX 100        /* decoded, RFC 3461 4.4 */
#define SMTP_ORCPT_MAX 500        /* RFC 3461 4.2 */
#define SMTP_AUTH_MECH_MAX 20     /* RFC 4422 3.1 */

typedef enum SmtpVerb {
        SMTP_VERB_UNKNOWN,
        SMTP_VERB_HELO,
        SMTP_VERB_EHLO,
        SMTP_VERB_MAIL,
        SMTP_VERB_RCPT,
        SMTP_VERB_DATA,
        SMTP_VERB_BDAT,
        SMTP_VERB_RSET,
        SMTP_VERB_NOOP,
        SMTP_VERB_QUIT,
        SMTP_VERB_HELP,
        SMTP_VERB_VRFY,
        SMTP_VERB_EXPN,
        SMTP_VERB_STARTTLS,
        SMTP_VERB_AUTH,
        _SMTP_VERB_MAX,
} SmtpVerb;

/* Flags for smtp_command_parse(): which extensions the server offered in
 * this session, plus what the caller knows about the line. */
enum {
        SMTP_PARSE_SMTPUTF8 = 1u << 0,          /* SMTPUTF8 offered */
        SMTP_PARSE_8BITMIME = 1u << 1,          /* BODY=8BITMIME */
        SMTP_PARSE_BINARYMIME = 1u << 2,        /* BODY=BINARYMIME */
        SMTP_PARSE_DSN = 1u << 3,               /* RET ENVID NOTIFY ORCPT */
        SMTP_PARSE_SIZE = 1u << 4,              /* SIZE= */
        SMTP_PARSE_UTF8_TRANSACTION = 1u << 5,  /* MAIL had SMTPUTF8 (for RCPT) */
        SMTP_PARSE_LINE_TOO_LONG = 1u << 6,     /* caller cut the line: 500 5.5.6 */
};

typedef enum SmtpBody {
        SMTP_BODY_UNSPECIFIED,
        SMTP_BODY_7BIT,
        SMTP_BODY_8BITMIME,
        SMTP_BODY_BINARYMIME,
} SmtpBody;

typedef enum SmtpRet {
        SMTP_RET_UNSPECIFIED,
        SMTP_RET_FULL,
        SMTP_RET_HDRS,
} SmtpRet;

enum {
        SMTP_NOTIFY_NEVER = 1u << 0,
        SMTP_NOTIFY_SUCCESS = 1u << 1,
        SMTP_NOTIFY_FAILURE = 1u << 2,
        SMTP_NOTIFY_DELAY = 1u << 3,
};

typedef struct SmtpPath {
        bool null;        /* "<>" */
        bool postmaster;  /* "<Postmaster>" without a domain (RCPT only) */
        bool utf8;        /* contains non-ASCII (UTF-8) */
        char local[SMTP_LOCAL_PART_MAX + 1];   /* as written, quotes kept */
        char domain[SMTP_DOMAIN_MAX + 1];      /* domain or "[literal]" */
        char address[SMTP_PATH_MAX + 1];       /* local@domain, no route */
} SmtpPath;

typedef struct SmtpCommand {
        SmtpVerb verb;

        /* HELO/EHLO: domain or address literal. VRFY/EXPN/HELP/NOOP: the
         * argument string as given ("" when none). */
        char arg[SMTP_COMMAND_LINE_MAX + 1];

        /* MAIL/RCPT */
        SmtpPath path;

        /* MAIL parameters */
        bool has_size;
        uint64_t size;    /* saturates at UINT64_MAX */
        SmtpBody body;
        bool smtputf8;
        SmtpRet ret;
        bool has_envid;
        char envid[SMTP_ENVID_MAX + 1];        /* xtext-decoded */

        /* RCPT parameters */
        unsigned notify;  /* SMTP_NOTIFY_*, 0 when not given */
        bool has_orcpt;
        char orcpt_type[SMTP_COMMAND_LINE_MAX + 1]; /* e.g. "rfc822" */
        char orcpt[SMTP_ORCPT_MAX + 1];        /* xtext-decoded */

        /* BDAT */
        uint64_t chunk_size;
        bool last;

        /* AUTH */
        char mechanism[SMTP_AUTH_MECH_MAX + 1]; /* upper-cased */
        bool has_initial_response;
        char initial_response[SMTP_COMMAND_LINE_MAX + 1]; /* base64 or "=" */
} SmtpCommand;

/* What the server should answer to a refused line. Strings are static. */
typedef struct SmtpReplyError {
        unsigned code;            /* 500, 501, 553, 555 */
        const char *enhanced;     /* "5.5.2" */
        const char *text;         /* short human text, no code, no CRLF */
} SmtpReplyError;

/* Parses line[0..len) (no CRLF). Returns 0 and fills *ret, or -EINVAL and
 * fills *reterr (then *ret is unspecified). An unknown verb is an error
 * (500 5.5.2). Both out pointers must be non-NULL. */
int smtp_command_parse(const char *line, size_t len, unsigned flags,
                       SmtpCommand *ret, SmtpReplyError *reterr);

/* Nothing is allocated; kept so callers may treat SmtpCommand like other
 * halyard values. Resets *c. */
void smtp_command_done(SmtpCommand *c);

const char *smtp_verb_to_string(SmtpVerb v);

/* Decodes RFC 3461 xtext in[0..n) into out (NUL-terminated, at most
 * outsize-1 octets). Returns the decoded length, or -EINVAL on bad syntax
 * ("+" not followed by two upper-case hex digits, a char outside
 * %d33-42/%d44-60/%d62-126, empty input), -E2BIG when it does not fit. */
int smtp_xtext_decode(const char *in, size_t n, char *out, size_t outsize);
