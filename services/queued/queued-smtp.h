/* SPDX-License-Identifier: MIT */
#pragma once

/* The SMTP/LMTP client of halyard-queued: one asynchronous session on the
 * sd-event loop over a non-blocking TCP socket.
 *
 *   connect -> greeting -> EHLO (HELO on 5xx) | LHLO -> STARTTLS (policy)
 *   -> EHLO again -> [RSET] MAIL -> RCPT x N -> DATA -> body -> reply(s)
 *   -> idle (next transaction on the same connection) | QUIT
 *
 * Commands are pipelined (RFC 2920: RSET, MAIL, every RCPT and DATA in one
 * write) when the peer offers PIPELINING. The body is streamed from an fd in
 * chunks with CRLF normalisation and dot-stuffing, only as fast as the socket
 * takes it. Every wait has a timeout (RFC 5321 4.5.3.2 by default). Nothing
 * blocks, except pread() of the message content (a local file).
 *
 * Results are per recipient: success, temporary failure (4xx, connection,
 * timeout, TLS, protocol errors) or permanent failure (5xx, or a local
 * decision such as SMTPUTF8 required but not offered), each with the reply
 * code (0 for a local result), the enhanced status code and a text.
 *
 * Certificate checks are not done here: the verify hook (SmtpTlsVerifyFn)
 * sees the GnuTLS session after the handshake and decides (DANE, MTA-STS).
 *
 * Events (a transaction finished, the session closed) are delivered from a
 * deferred event source, never from inside an smtp_client_*() call, so the
 * callback may call smtp_client_send(), smtp_client_quit() or
 * smtp_client_free() on the session.
 *
 * Ownership: smtp_client_new()/smtp_client_connect() return a session freed
 * with smtp_client_free() (closes the socket without QUIT). Strings in the
 * options and in SmtpMessage are copied; the message fd is duplicated.
 * Pointers returned by the getters stay valid until the next
 * smtp_client_send() or smtp_client_free(). */

#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct SmtpClient SmtpClient;

#define SMTP_RCPTS_MAX 1000U            /* recipients per transaction */
#define SMTP_ADDRESS_MAX 256U           /* a path without <> (RFC 5321 4.5.3.1.3) */
#define SMTP_REPLY_LINE_MAX 4096U       /* one reply line, CRLF excluded */
#define SMTP_REPLY_LINES_MAX 100U       /* lines in one reply */
#define SMTP_REPLY_TEXT_MAX 16384U      /* reply text kept (lines joined by '\n') */
#define SMTP_EXTENSIONS_MAX 32U         /* EHLO keywords remembered */
#define SMTP_ENHANCED_MAX 16U           /* "5.123.456" + NUL fits */

typedef enum SmtpTlsPolicy {
        SMTP_TLS_NO,        /* never STARTTLS */
        SMTP_TLS_MAY,       /* STARTTLS when offered; plaintext only if not offered */
        SMTP_TLS_REQUIRE,   /* not offered, refused or failed: temporary failure */
        _SMTP_TLS_POLICY_MAX,
        _SMTP_TLS_POLICY_INVALID = -EINVAL,
} SmtpTlsPolicy;

typedef enum SmtpExtension {
        SMTP_EXT_PIPELINING          = 1U << 0,
        SMTP_EXT_SIZE                = 1U << 1,
        SMTP_EXT_8BITMIME            = 1U << 2,
        SMTP_EXT_SMTPUTF8            = 1U << 3,
        SMTP_EXT_STARTTLS            = 1U << 4,
        SMTP_EXT_ENHANCEDSTATUSCODES = 1U << 5,
        SMTP_EXT_CHUNKING            = 1U << 6,
        SMTP_EXT_DSN                 = 1U << 7,
} SmtpExtension;

typedef enum SmtpStatus {
        SMTP_STATUS_PENDING,
        SMTP_STATUS_OK,
        SMTP_STATUS_TEMPFAIL,
        SMTP_STATUS_PERMFAIL,
        _SMTP_STATUS_MAX,
} SmtpStatus;

/* Where a result came from: the command it answered or the step that failed. */
typedef enum SmtpStage {
        SMTP_STAGE_NONE,
        SMTP_STAGE_CONNECT,
        SMTP_STAGE_GREETING,
        SMTP_STAGE_EHLO,        /* EHLO, HELO or LHLO */
        SMTP_STAGE_STARTTLS,    /* the command, the handshake or the verify hook */
        SMTP_STAGE_RSET,
        SMTP_STAGE_MAIL,
        SMTP_STAGE_RCPT,
        SMTP_STAGE_DATA,        /* the reply to DATA */
        SMTP_STAGE_BODY,        /* while sending the content */
        SMTP_STAGE_DOT,         /* the reply (LMTP: replies) after the final dot */
        SMTP_STAGE_QUIT,
        SMTP_STAGE_LOCAL,       /* decided before talking (SMTPUTF8, SIZE, address syntax) */
        _SMTP_STAGE_MAX,
} SmtpStage;

typedef struct SmtpResult {
        SmtpStatus status;
        SmtpStage stage;
        int code;                            /* reply code; 0: decided locally */
        char enhanced[SMTP_ENHANCED_MAX];    /* "4.4.2", or "" */
        char *text;                          /* reply text or local reason; NULL while pending */
} SmtpResult;

/* Per-stage timeouts in microseconds; 0 picks the default. */
typedef struct SmtpTimeouts {
        uint64_t connect;       /* TCP connect, 30 s */
        uint64_t greeting;      /* initial 220, 5 min */
        uint64_t helo;          /* EHLO/HELO/LHLO, STARTTLS, RSET, QUIT replies, 5 min */
        uint64_t tls;           /* TLS handshake, 5 min */
        uint64_t mail;          /* MAIL reply, 5 min */
        uint64_t rcpt;          /* each RCPT reply, 5 min */
        uint64_t data_init;     /* DATA reply (354), 2 min */
        uint64_t data_block;    /* no write progress while sending the body, 3 min */
        uint64_t data_final;    /* reply after the final dot (LMTP: each), 10 min */
} SmtpTimeouts;

/* Fills in defaults for the fields that are 0. */
void smtp_timeouts_fill(SmtpTimeouts *t);
/* Multiplies every timeout (after filling defaults) by factor (> 0); never below 1 ms. */
void smtp_timeouts_scale(SmtpTimeouts *t, double factor);

typedef struct SmtpSessionFacts {
        bool lmtp;
        bool helo_fallback;          /* EHLO refused, HELO used */
        bool tls;                    /* STARTTLS completed */
        bool tls_verified;           /* the verify hook said verified (> 0) */
        char *tls_version;           /* "TLS1.3" */
        char *tls_cipher;            /* "AES-256-GCM" */
        char *tls_description;       /* gnutls_session_get_desc() */
        char *peer_subject;          /* peer certificate subject DN, if any */
        char *greeting;              /* text of the 220 greeting */
        unsigned extensions;         /* SmtpExtension bits of the last EHLO */
        uint64_t size_max;           /* SIZE parameter, 0 = none announced */
        char *keywords[SMTP_EXTENSIONS_MAX]; /* EHLO keywords, upper case */
        size_t n_keywords;
        bool pipelined;              /* the last transaction's commands were pipelined */
        /* For TLS reporting (RFC 8460): what happened to STARTTLS. */
        bool hello_done;             /* EHLO/HELO/LHLO was answered (the peer speaks SMTP) */
        bool starttls_offered;       /* the EHLO before TLS listed STARTTLS */
        bool starttls_refused;       /* the peer answered STARTTLS with something other than 220 */
        bool tls_handshake_failed;   /* the TLS handshake (or its setup) failed or timed out */
        bool tls_verify_failed;      /* the verify hook rejected the peer */
        char local_address[46];      /* our end of the connection (INET6_ADDRSTRLEN), "" if unknown */
        unsigned transactions;       /* transactions started on this connection */
} SmtpSessionFacts;

typedef enum SmtpClientEvent {
        SMTP_CLIENT_EVENT_TRANSACTION_DONE,  /* every recipient has a final result */
        SMTP_CLIENT_EVENT_CLOSED,            /* the connection is gone (QUIT, error, peer) */
} SmtpClientEvent;

typedef void (*SmtpClientEventFn)(SmtpClient *c, SmtpClientEvent event, void *userdata);

/* After the TLS handshake: < 0 rejects the peer (the session fails
 * temporarily, stage STARTTLS), 0 accepts it unverified, > 0 accepts it
 * verified. reason (may be left empty) is used in the failure text. */
typedef int (*SmtpTlsVerifyFn)(SmtpClient *c, gnutls_session_t tls, char *reason, size_t reason_size,
                               void *userdata);

typedef struct SmtpClientOptions {
        bool lmtp;                                 /* LHLO, one reply per recipient after the dot */
        SmtpTlsPolicy tls;
        const char *helo_name;                     /* required */
        const char *peer_name;                     /* for texts, e.g. "mx.example[192.0.2.1]:25"; may be NULL */
        const char *tls_server_name;                /* SNI; NULL: none */
        const char *tls_priority;                  /* NULL: "NORMAL" */
        gnutls_certificate_credentials_t tls_creds; /* borrowed; NULL: the session makes its own, no trust store */
        SmtpTlsVerifyFn tls_verify;                /* NULL: accept unverified */
        void *tls_verify_userdata;
        SmtpTimeouts timeouts;
        SmtpClientEventFn on_event;
        void *userdata;
        /* smtp_client_connect(): bind to this local address first; NULL: any. */
        const struct sockaddr *source;
        socklen_t source_len;
} SmtpClientOptions;

typedef struct SmtpMessage {
        const char *from;                 /* reverse-path without <>; "" is the null sender */
        const char *const *rcpts;         /* forward-paths without <> */
        size_t n_rcpts;                   /* 1..SMTP_RCPTS_MAX */
        int fd;                           /* content, read with pread() from 0 to EOF; duplicated */
        uint64_t size;                    /* for SIZE=; 0: the fd's size */
        bool eightbit;                    /* the content has 8-bit bytes: BODY=8BITMIME if offered */
        bool smtputf8;                    /* needs SMTPUTF8 (UTF-8 headers); implied by non-ASCII addresses */
} SmtpMessage;

/* Starts a non-blocking connect; the fd (SOCK_NONBLOCK|SOCK_CLOEXEC) is
 * returned while the connect is in progress. */
int smtp_connect_nonblock(const struct sockaddr *sa, socklen_t salen, int *ret_fd);

/* A session on fd (connected, or being connected by smtp_connect_nonblock();
 * the session owns fd from here on, also on failure). */
int smtp_client_new(sd_event *e, int fd, const SmtpClientOptions *o, SmtpClient **ret);
/* Connects to sa (timeouts.connect) and starts a session. A connect that
 * fails at once still returns a session, which reports the failure through
 * its events like any later failure. */
int smtp_client_connect(sd_event *e, const struct sockaddr *sa, socklen_t salen,
                        const SmtpClientOptions *o, SmtpClient **ret);
SmtpClient *smtp_client_free(SmtpClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(SmtpClient *, smtp_client_free);

/* Starts a transaction (queued until the session is ready). -EBUSY while a
 * transaction is running, -ENOTCONN after the session closed, -EINVAL for a
 * bad sender, no recipients or more than SMTP_RCPTS_MAX. A recipient with a
 * bad syntax fails permanently on its own (stage LOCAL) and is not sent. */
int smtp_client_send(SmtpClient *c, const SmtpMessage *m);
/* Hands the session's events to another handler (a connection kept for the
 * next transaction to the same destination changes owner). */
void smtp_client_set_event_handler(SmtpClient *c, SmtpClientEventFn fn, void *userdata);
/* Sends QUIT when idle (else just closes); CLOSED follows. */
int smtp_client_quit(SmtpClient *c);

/* Whether a new transaction can be started now or after the greeting. */
bool smtp_client_usable(const SmtpClient *c);
size_t smtp_client_n_rcpts(const SmtpClient *c);
const SmtpResult *smtp_client_rcpt_result(const SmtpClient *c, size_t i);
const char *smtp_client_rcpt(const SmtpClient *c, size_t i);
/* Why the session closed (status PENDING when it closed cleanly or is open). */
const SmtpResult *smtp_client_error(const SmtpClient *c);
const SmtpSessionFacts *smtp_client_facts(const SmtpClient *c);

const char *smtp_status_to_string(SmtpStatus s);
const char *smtp_stage_to_string(SmtpStage s);
const char *smtp_tls_policy_to_string(SmtpTlsPolicy p);
SmtpTlsPolicy smtp_tls_policy_from_string(const char *s);

/* Exposed for tests and fuzzing. */
/* Parses one reply line: code, whether more lines follow, and the text
 * after the separator. -EBADMSG for anything that is not a reply line. */
int smtp_reply_line_parse(const char *line, size_t len, int *ret_code, bool *ret_more, size_t *ret_text_offset);
/* Length of a leading enhanced status code "c.sss.ddd" followed by a space or
 * the end, whose class c matches the reply code's first digit; 0 if none. */
size_t smtp_enhanced_code_length(const char *text, size_t len, int code);

/* Transforms message content for DATA: bare LF and bare CR become CRLF, a '.'
 * starting a line is doubled. State carries across calls. */
typedef struct SmtpDotStuffer {
        bool line_start;
        bool cr;
} SmtpDotStuffer;
#define SMTP_DOT_STUFFER_INIT { .line_start = true, .cr = false }
/* Writes at most 2*n bytes to out; returns the bytes written. */
size_t smtp_dot_stuff(SmtpDotStuffer *s, const char *in, size_t n, char *out);
/* The end of the body: CRLF if the last line was not ended, then ".\r\n". Writes at most 5 bytes. */
size_t smtp_dot_stuff_finish(SmtpDotStuffer *s, char *out);
