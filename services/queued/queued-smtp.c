/* SPDX-License-Identifier: MIT */
/* The SMTP/LMTP delivery client; see queued-smtp.h for the contract.
 *
 * One state machine per connection. Commands that were sent and wait for a
 * reply sit in a FIFO (pending[]); every complete reply is matched with the
 * head of it. That one mechanism serves lock-step and pipelined (RFC 2920)
 * dialogues and LMTP's one reply per recipient after the final dot. The
 * timer always guards the head of the FIFO (or the body while it is being
 * written) with that stage's timeout. */

#include <arpa/inet.h>
#include <fcntl.h>
#include <gnutls/x509.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/stat.h>

#include "queued-smtp.h"
#include "utf8.h"

#define USEC_PER_SEC 1000000ULL
#define IN_MAX (SMTP_REPLY_LINE_MAX + 2U)        /* one line and its CRLF */
#define OUT_COMMANDS_MAX (SMTP_RCPTS_MAX * (SMTP_ADDRESS_MAX + 64U) + 4096U)
#define BODY_BUFFER 65536U                        /* body bytes queued for the socket at most */
#define BODY_READ (BODY_BUFFER / 2U)              /* stuffing at most doubles */
#define WRITE_PER_DISPATCH (1024U * 1024U)        /* then yield to other connections */
#define KEYWORD_MAX 64U

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

typedef enum Phase {
        PHASE_CONNECTING,
        PHASE_GREETING,
        PHASE_HELLO,
        PHASE_STARTTLS,
        PHASE_HANDSHAKE,
        PHASE_READY,
        PHASE_QUIT,
        PHASE_CLOSED,
} Phase;

typedef enum Cmd {
        CMD_GREETING,
        CMD_EHLO,
        CMD_HELO,
        CMD_STARTTLS,
        CMD_RSET,
        CMD_MAIL,
        CMD_RCPT,
        CMD_DATA,
        CMD_DOT,
        CMD_QUIT,
} Cmd;

typedef struct Pending {
        Cmd cmd;
        size_t index;   /* RCPT: recipient; DOT (LMTP): position in accepted[] */
} Pending;

typedef enum TxnState {
        TXN_NONE,
        TXN_QUEUED,     /* submitted; starts when the session is ready */
        TXN_ACTIVE,
        TXN_DONE,       /* results final, readable until the next send */
} TxnState;

typedef struct Transaction {
        TxnState state;
        char *from;
        char **rcpts;
        size_t n_rcpts;
        SmtpResult *results;
        size_t *accepted;       /* recipients a RCPT was accepted for, in order */
        size_t n_accepted;
        size_t next_rcpt;       /* lock-step: next recipient to send */
        bool pipelined;
        bool mail_failed;
        bool rset;              /* RSET goes first */
        int fd;
        uint64_t size;
        bool eightbit;
        bool smtputf8;
        /* body */
        bool body;              /* writing the content */
        bool body_eof;          /* the final dot is in the output buffer */
        uint64_t offset;
        SmtpDotStuffer stuffer;
} Transaction;

enum {
        EVENT_DONE = 1U << 0,
        EVENT_CLOSED = 1U << 1,
};

struct SmtpClient {
        sd_event *event;
        sd_event_source *io;
        sd_event_source *timer;
        sd_event_source *notify;
        int fd;
        Phase phase;

        /* options */
        bool lmtp;
        SmtpTlsPolicy tls_policy;
        char *helo_name;
        char *peer_name;
        char *tls_server_name;
        char *tls_priority;
        gnutls_certificate_credentials_t tls_creds;     /* borrowed or own */
        bool own_creds;
        SmtpTlsVerifyFn tls_verify;
        void *tls_verify_userdata;
        SmtpTimeouts timeouts;
        SmtpClientEventFn on_event;
        void *userdata;

        gnutls_session_t tls;
        size_t tls_send_pending;        /* size of a record_send that returned AGAIN */

        char *in;
        size_t in_len;
        size_t in_rest;                 /* bytes after the line being handled */
        char *out;
        size_t out_off, out_len, out_cap;
        char *body_in;

        /* the reply being read */
        int r_code;
        size_t r_lines;
        char *r_text;
        size_t r_text_len, r_text_cap;
        char r_enhanced[SMTP_ENHANCED_MAX];

        Pending *pending;
        size_t p_head, p_len, p_cap;

        Transaction txn;
        bool need_rset;
        SmtpSessionFacts facts;
        SmtpResult error;
        unsigned events;
};

static const char *const status_names[_SMTP_STATUS_MAX] = {
        [SMTP_STATUS_PENDING] = "pending",
        [SMTP_STATUS_OK] = "ok",
        [SMTP_STATUS_TEMPFAIL] = "tempfail",
        [SMTP_STATUS_PERMFAIL] = "permfail",
};

static const char *const stage_names[_SMTP_STAGE_MAX] = {
        [SMTP_STAGE_NONE] = "none",
        [SMTP_STAGE_CONNECT] = "connect",
        [SMTP_STAGE_GREETING] = "greeting",
        [SMTP_STAGE_EHLO] = "ehlo",
        [SMTP_STAGE_STARTTLS] = "starttls",
        [SMTP_STAGE_RSET] = "rset",
        [SMTP_STAGE_MAIL] = "mail",
        [SMTP_STAGE_RCPT] = "rcpt",
        [SMTP_STAGE_DATA] = "data",
        [SMTP_STAGE_BODY] = "body",
        [SMTP_STAGE_DOT] = "dot",
        [SMTP_STAGE_QUIT] = "quit",
        [SMTP_STAGE_LOCAL] = "local",
};

static const char *const tls_policy_names[_SMTP_TLS_POLICY_MAX] = {
        [SMTP_TLS_NO] = "no",
        [SMTP_TLS_MAY] = "may",
        [SMTP_TLS_REQUIRE] = "require",
};

const char *smtp_status_to_string(SmtpStatus s) {
        return (unsigned) s < _SMTP_STATUS_MAX ? status_names[s] : NULL;
}

const char *smtp_stage_to_string(SmtpStage s) {
        return (unsigned) s < _SMTP_STAGE_MAX ? stage_names[s] : NULL;
}

const char *smtp_tls_policy_to_string(SmtpTlsPolicy p) {
        return (unsigned) p < _SMTP_TLS_POLICY_MAX ? tls_policy_names[p] : NULL;
}

SmtpTlsPolicy smtp_tls_policy_from_string(const char *s) {
        for (size_t i = 0; s && i < _SMTP_TLS_POLICY_MAX; i++)
                if (strcmp(s, tls_policy_names[i]) == 0)
                        return (SmtpTlsPolicy) i;
        return _SMTP_TLS_POLICY_INVALID;
}

void smtp_timeouts_fill(SmtpTimeouts *t) {
        if (!t->connect)
                t->connect = 30 * USEC_PER_SEC;
        if (!t->greeting)
                t->greeting = 300 * USEC_PER_SEC;
        if (!t->helo)
                t->helo = 300 * USEC_PER_SEC;
        if (!t->tls)
                t->tls = 300 * USEC_PER_SEC;
        if (!t->mail)
                t->mail = 300 * USEC_PER_SEC;
        if (!t->rcpt)
                t->rcpt = 300 * USEC_PER_SEC;
        if (!t->data_init)
                t->data_init = 120 * USEC_PER_SEC;
        if (!t->data_block)
                t->data_block = 180 * USEC_PER_SEC;
        if (!t->data_final)
                t->data_final = 600 * USEC_PER_SEC;
}

static uint64_t scale1(uint64_t v, double f) {
        double x = (double) v * f;
        if (x < 1000.0)
                return 1000;
        if (x > 1e15)
                return (uint64_t) 1e15;
        return (uint64_t) x;
}

void smtp_timeouts_scale(SmtpTimeouts *t, double factor) {
        if (!(factor > 0))
                return;
        smtp_timeouts_fill(t);
        t->connect = scale1(t->connect, factor);
        t->greeting = scale1(t->greeting, factor);
        t->helo = scale1(t->helo, factor);
        t->tls = scale1(t->tls, factor);
        t->mail = scale1(t->mail, factor);
        t->rcpt = scale1(t->rcpt, factor);
        t->data_init = scale1(t->data_init, factor);
        t->data_block = scale1(t->data_block, factor);
        t->data_final = scale1(t->data_final, factor);
}

/* ---- pure helpers: reply lines, enhanced codes, dot-stuffing */

int smtp_reply_line_parse(const char *line, size_t len, int *ret_code, bool *ret_more, size_t *ret_text_offset) {
        if (len < 3)
                return -EBADMSG;
        if (line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' || line[2] < '0' || line[2] > '9')
                return -EBADMSG;
        if (memchr(line, '\0', len))
                return -EBADMSG;
        bool more = false;
        size_t off = 3;
        if (len > 3) {
                if (line[3] == '-')
                        more = true;
                else if (line[3] != ' ')
                        return -EBADMSG;
                off = 4;
        }
        *ret_code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        *ret_more = more;
        *ret_text_offset = off;
        return 0;
}

static size_t digits(const char *s, size_t len, size_t max) {
        size_t n = 0;
        while (n < len && n < max + 1 && s[n] >= '0' && s[n] <= '9')
                n++;
        return n >= 1 && n <= max ? n : 0;
}

size_t smtp_enhanced_code_length(const char *text, size_t len, int code) {
        /* class "." subject(1-3 digits) "." detail(1-3 digits), RFC 3463 */
        if (len < 5 || text[0] != '0' + code / 100 || (text[0] != '2' && text[0] != '4' && text[0] != '5') ||
            text[1] != '.')
                return 0;
        size_t p = 2, n = digits(text + p, len - p, 3);
        if (n == 0)
                return 0;
        p += n;
        if (p >= len || text[p] != '.')
                return 0;
        p++;
        n = digits(text + p, len - p, 3);
        if (n == 0)
                return 0;
        p += n;
        if (p < len && text[p] != ' ')
                return 0;
        return p;
}

size_t smtp_dot_stuff(SmtpDotStuffer *s, const char *in, size_t n, char *out) {
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
                char ch = in[i];
                if (ch == '\n') {
                        if (!s->cr) {
                                out[o++] = '\r';
                                out[o++] = '\n';
                        }
                        s->cr = false;
                        s->line_start = true;
                } else if (ch == '\r') {
                        /* bare CR is a line end too: CRLF now, and an LF right after belongs to it */
                        out[o++] = '\r';
                        out[o++] = '\n';
                        s->cr = true;
                        s->line_start = true;
                } else {
                        if (s->line_start && ch == '.')
                                out[o++] = '.';
                        out[o++] = ch;
                        s->cr = false;
                        s->line_start = false;
                }
        }
        return o;
}

size_t smtp_dot_stuff_finish(SmtpDotStuffer *s, char *out) {
        size_t o = 0;
        if (!s->line_start) {
                out[o++] = '\r';
                out[o++] = '\n';
        }
        memcpy(out + o, ".\r\n", 3);
        s->line_start = true;
        s->cr = false;
        return o + 3;
}

static bool address_valid(const char *a, bool allow_empty, bool *utf8) {
        size_t n = strlen(a);
        if (n == 0)
                return allow_empty;
        if (n > SMTP_ADDRESS_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char) a[i];
                if (ch < 0x21 && ch != ' ')
                        return false;
                if (ch == 0x7f || ch == '<' || ch == '>')
                        return false;
                if (ch >= 0x80)
                        *utf8 = true;
        }
        return utf8_valid(a, n);
}

/* ---- buffers */

static int out_reserve(SmtpClient *c, size_t more, size_t limit) {
        if (c->out_off > 0 && c->out_off == c->out_len)
                c->out_off = c->out_len = 0;
        if (c->out_len + more <= c->out_cap)
                return 0;
        if (c->out_off > 0) {
                memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
                c->out_len -= c->out_off;
                c->out_off = 0;
                if (c->out_len + more <= c->out_cap)
                        return 0;
        }
        /* a TLS record_send that returned AGAIN keeps pointing at out + out_off: moved
         * data is fine (GnuTLS copied it), only the length must stay the same */
        size_t need = c->out_len + more;
        if (need > limit)
                return -ENOBUFS;
        size_t cap = MAX(need, MAX(c->out_cap * 2, (size_t) 4096));
        cap = MIN(cap, limit);
        char *p = realloc(c->out, cap);
        if (!p)
                return -ENOMEM;
        c->out = p;
        c->out_cap = cap;
        return 0;
}

static int out_printf(SmtpClient *c, const char *fmt, ...) _printf_(2, 3);
static int out_printf(SmtpClient *c, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        int r = out_reserve(c, (size_t) n + 1, OUT_COMMANDS_MAX + BODY_BUFFER);
        if (r < 0)
                return r;
        va_start(ap, fmt);
        (void) vsnprintf(c->out + c->out_len, (size_t) n + 1, fmt, ap);
        va_end(ap);
        c->out_len += (size_t) n;
        return 0;
}

static size_t out_pending(const SmtpClient *c) {
        return c->out_len - c->out_off;
}

static int pending_push(SmtpClient *c, Cmd cmd, size_t index) {
        if (c->p_len == 0)
                c->p_head = 0;
        if (c->p_head + c->p_len >= c->p_cap) {
                if (c->p_head > 0) {
                        memmove(c->pending, c->pending + c->p_head, c->p_len * sizeof(Pending));
                        c->p_head = 0;
                }
                if (c->p_len >= c->p_cap) {
                        /* at most RSET, MAIL, every RCPT and DATA, or one reply per recipient after DATA */
                        size_t limit = SMTP_RCPTS_MAX + 8;
                        if (c->p_len >= limit)
                                return -ENOBUFS;
                        size_t cap = MIN(MAX(c->p_cap * 2, (size_t) 8), limit);
                        Pending *p = reallocarray(c->pending, cap, sizeof(Pending));
                        if (!p)
                                return -ENOMEM;
                        c->pending = p;
                        c->p_cap = cap;
                }
        }
        c->pending[c->p_head + c->p_len++] = (Pending) { cmd, index };
        return 0;
}

static const Pending *pending_head(const SmtpClient *c) {
        return c->p_len > 0 ? &c->pending[c->p_head] : NULL;
}

static Pending pending_pop(SmtpClient *c) {
        Pending p = c->pending[c->p_head++];
        c->p_len--;
        return p;
}

/* ---- results */

static void result_set(SmtpResult *r, SmtpStatus status, SmtpStage stage, int code, const char *enhanced,
                       const char *text) {
        r->status = status;
        r->stage = stage;
        r->code = code;
        snprintf(r->enhanced, sizeof r->enhanced, "%s", enhanced ? enhanced : "");
        free(r->text);
        text = text ? text : "";
        /* strlen(), not strnlen(text, MAX): callers pass short NUL-terminated
         * buffers, and a bound larger than them trips -Wstringop-overread. */
        size_t n = MIN(strlen(text), (size_t) SMTP_REPLY_TEXT_MAX);
        r->text = malloc(n + 1);
        if (r->text) {
                memcpy(r->text, text, n);
                r->text[n] = '\0';
        }
}

static SmtpStatus status_of_code(int code) {
        switch (code / 100) {
        case 2:
                return SMTP_STATUS_OK;
        case 5:
                return SMTP_STATUS_PERMFAIL;
        default:
                return SMTP_STATUS_TEMPFAIL;
        }
}

static void txn_clear(Transaction *t) {
        free(t->from);
        for (size_t i = 0; i < t->n_rcpts; i++) {
                free(t->rcpts ? t->rcpts[i] : NULL);
                if (t->results)
                        free(t->results[i].text);
        }
        free(t->rcpts);
        free(t->results);
        free(t->accepted);
        safe_close(t->fd);
        *t = (Transaction) { .fd = -1 };
}

static size_t txn_n_pending(const Transaction *t) {
        size_t n = 0;
        for (size_t i = 0; i < t->n_rcpts; i++)
                n += t->results[i].status == SMTP_STATUS_PENDING;
        return n;
}

/* Gives every recipient still without a final result this one. */
static void txn_fail_pending(Transaction *t, SmtpStatus status, SmtpStage stage, int code, const char *enhanced,
                             const char *text) {
        for (size_t i = 0; i < t->n_rcpts; i++)
                if (t->results[i].status == SMTP_STATUS_PENDING)
                        result_set(&t->results[i], status, stage, code, enhanced, text);
}

/* ---- events and teardown */

static void queue_event(SmtpClient *c, unsigned ev) {
        c->events |= ev;
        if (c->notify)
                (void) sd_event_source_set_enabled(c->notify, SD_EVENT_ONESHOT);
}

static int notify_handler(sd_event_source *s, void *userdata) {
        SmtpClient *c = userdata;
        SmtpClientEvent ev;

        if (c->events & EVENT_DONE) {
                c->events &= ~EVENT_DONE;
                ev = SMTP_CLIENT_EVENT_TRANSACTION_DONE;
        } else if (c->events & EVENT_CLOSED) {
                c->events &= ~EVENT_CLOSED;
                ev = SMTP_CLIENT_EVENT_CLOSED;
        } else
                return 0;
        if (c->events)
                (void) sd_event_source_set_enabled(c->notify, SD_EVENT_ONESHOT);
        /* last thing: the callback may free c */
        if (c->on_event)
                c->on_event(c, ev, c->userdata);
        return 0;
}

static void timer_off(SmtpClient *c) {
        if (c->timer)
                (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
}

static void timer_arm(SmtpClient *c, uint64_t usec) {
        if (!c->timer)
                return;
        (void) sd_event_source_set_time_relative(c->timer, usec);
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
}

static void tls_done(SmtpClient *c) {
        if (c->tls) {
                gnutls_deinit(c->tls);
                c->tls = NULL;
        }
        c->tls_send_pending = 0;
}

static void close_connection(SmtpClient *c) {
        if (c->phase == PHASE_CLOSED)
                return;
        c->io = sd_event_source_disable_unref(c->io);
        tls_done(c);
        c->fd = safe_close(c->fd);
        timer_off(c);
        c->phase = PHASE_CLOSED;
        c->p_len = c->p_head = 0;
        c->in_len = 0;
        c->out_off = c->out_len = 0;
        c->txn.body = false;
        queue_event(c, EVENT_CLOSED);
}

/* A best-effort QUIT before closing on a reply-level failure; never waits. */
static void try_quit(SmtpClient *c) {
        if (c->fd < 0 || c->phase == PHASE_HANDSHAKE || c->tls_send_pending > 0)
                return;
        c->out_off = c->out_len = 0;
        if (out_printf(c, "QUIT\r\n") < 0)
                return;
        if (c->tls)
                (void) gnutls_record_send(c->tls, c->out, c->out_len);
        else
                (void) send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* The session is over: every recipient still pending gets this result. */
static void session_fail(SmtpClient *c, bool quit, SmtpStatus status, SmtpStage stage, int code,
                         const char *enhanced, const char *fmt, ...) _printf_(7, 8);
static void session_fail(SmtpClient *c, bool quit, SmtpStatus status, SmtpStage stage, int code,
                         const char *enhanced, const char *fmt, ...) {
        char text[SMTP_REPLY_TEXT_MAX + 256];
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);

        if (c->phase == PHASE_CLOSED)
                return;
        if (c->error.status == SMTP_STATUS_PENDING)
                result_set(&c->error, status, stage, code, enhanced, text);
        if (quit)
                try_quit(c);
        if (c->txn.state == TXN_QUEUED || c->txn.state == TXN_ACTIVE) {
                txn_fail_pending(&c->txn, status, stage, code, enhanced, text);
                c->txn.state = TXN_DONE;
                queue_event(c, EVENT_DONE);
        }
        close_connection(c);
}

static void txn_finish(SmtpClient *c) {
        c->txn.state = TXN_DONE;
        c->txn.body = false;
        c->need_rset = true;
        c->txn.fd = safe_close(c->txn.fd);
        timer_off(c);
        if (c->out_off == c->out_len) {
                c->out = mfree(c->out);
                c->out_cap = c->out_off = c->out_len = 0;
        }
        c->body_in = mfree(c->body_in);
        queue_event(c, EVENT_DONE);
}

/* ---- timers */

static SmtpStage stage_of_cmd(Cmd cmd) {
        switch (cmd) {
        case CMD_GREETING:
                return SMTP_STAGE_GREETING;
        case CMD_EHLO:
        case CMD_HELO:
                return SMTP_STAGE_EHLO;
        case CMD_STARTTLS:
                return SMTP_STAGE_STARTTLS;
        case CMD_RSET:
                return SMTP_STAGE_RSET;
        case CMD_MAIL:
                return SMTP_STAGE_MAIL;
        case CMD_RCPT:
                return SMTP_STAGE_RCPT;
        case CMD_DATA:
                return SMTP_STAGE_DATA;
        case CMD_DOT:
                return SMTP_STAGE_DOT;
        case CMD_QUIT:
                return SMTP_STAGE_QUIT;
        }
        return SMTP_STAGE_NONE;
}

static const char *what_of_cmd(const SmtpClient *c, Cmd cmd) {
        switch (cmd) {
        case CMD_GREETING:
                return "the greeting";
        case CMD_EHLO:
                return c->lmtp ? "the reply to LHLO" : "the reply to EHLO";
        case CMD_HELO:
                return "the reply to HELO";
        case CMD_STARTTLS:
                return "the reply to STARTTLS";
        case CMD_RSET:
                return "the reply to RSET";
        case CMD_MAIL:
                return "the reply to MAIL FROM";
        case CMD_RCPT:
                return "the reply to RCPT TO";
        case CMD_DATA:
                return "the reply to DATA";
        case CMD_DOT:
                return "the reply to the end of data";
        case CMD_QUIT:
                return "the reply to QUIT";
        }
        return "a reply";
}

static uint64_t timeout_of_cmd(const SmtpClient *c, Cmd cmd) {
        switch (cmd) {
        case CMD_GREETING:
                return c->timeouts.greeting;
        case CMD_MAIL:
                return c->timeouts.mail;
        case CMD_RCPT:
                return c->timeouts.rcpt;
        case CMD_DATA:
                return c->timeouts.data_init;
        case CMD_DOT:
                return c->timeouts.data_final;
        default:
                return c->timeouts.helo;
        }
}

/* (Re)starts the timer for what the session waits for now. */
static void timer_update(SmtpClient *c) {
        const Pending *p;

        switch (c->phase) {
        case PHASE_CLOSED:
                timer_off(c);
                return;
        case PHASE_CONNECTING:
                timer_arm(c, c->timeouts.connect);
                return;
        case PHASE_HANDSHAKE:
                timer_arm(c, c->timeouts.tls);
                return;
        default:
                break;
        }
        if (c->txn.body)
                timer_arm(c, c->timeouts.data_block);
        else if ((p = pending_head(c)))
                timer_arm(c, timeout_of_cmd(c, p->cmd));
        else
                timer_off(c);
}

static double secs(uint64_t usec) {
        return (double) usec / (double) USEC_PER_SEC;
}

static int timer_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        SmtpClient *c = userdata;
        const Pending *p = pending_head(c);

        if (c->phase == PHASE_CONNECTING)
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_CONNECT, 0, "4.4.1",
                             "connect to %s: timed out after %.3gs", c->peer_name, secs(c->timeouts.connect));
        else if (c->phase == PHASE_HANDSHAKE) {
                c->facts.tls_handshake_failed = true;
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_STARTTLS, 0, "4.4.2",
                             "timeout after %.3gs during the TLS handshake with %s", secs(c->timeouts.tls),
                             c->peer_name);
        } else if (c->txn.body)
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_BODY, 0, "4.4.2",
                             "timeout after %.3gs while sending the message body to %s",
                             secs(c->timeouts.data_block), c->peer_name);
        else if (p)
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, stage_of_cmd(p->cmd), 0, "4.4.2",
                             "timeout after %.3gs waiting for %s from %s",
                             secs(timeout_of_cmd(c, p->cmd)), what_of_cmd(c, p->cmd), c->peer_name);
        return 0;
}

/* ---- low-level I/O */

/* > 0 bytes written, 0 would block, < 0 error */
static ssize_t raw_write(SmtpClient *c, const char *p, size_t n) {
        if (c->tls) {
                if (c->tls_send_pending > 0)
                        n = c->tls_send_pending;
                ssize_t k = gnutls_record_send(c->tls, p, n);
                if (k == GNUTLS_E_AGAIN || k == GNUTLS_E_INTERRUPTED) {
                        c->tls_send_pending = n;
                        return 0;
                }
                c->tls_send_pending = 0;
                if (k < 0)
                        return -EPROTO;
                return k;
        }
        ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : negative_errno();
        return k;
}

/* > 0 bytes read, 0 would block, -ECONNRESET for end of stream, < 0 error */
static ssize_t raw_read(SmtpClient *c, char *p, size_t n, bool *ret_tls_error) {
        *ret_tls_error = false;
        if (c->tls) {
                ssize_t k = gnutls_record_recv(c->tls, p, n);
                if (k == GNUTLS_E_AGAIN || k == GNUTLS_E_INTERRUPTED)
                        return 0;
                if (k == 0 || k == GNUTLS_E_PREMATURE_TERMINATION)
                        return -ECONNRESET;
                if (k < 0) {
                        if (!gnutls_error_is_fatal((int) k))
                                return 0;
                        *ret_tls_error = true;
                        return -EPROTO;
                }
                return k;
        }
        ssize_t k = recv(c->fd, p, n, MSG_DONTWAIT);
        if (k == 0)
                return -ECONNRESET;
        if (k < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : negative_errno();
        return k;
}

static SmtpStage current_stage(const SmtpClient *c) {
        const Pending *p = pending_head(c);
        if (c->txn.body)
                return SMTP_STAGE_BODY;
        if (p)
                return stage_of_cmd(p->cmd);
        switch (c->phase) {
        case PHASE_CONNECTING:
                return SMTP_STAGE_CONNECT;
        case PHASE_HANDSHAKE:
                return SMTP_STAGE_STARTTLS;
        default:
                return SMTP_STAGE_NONE;
        }
}

static const char *current_what(const SmtpClient *c) {
        const Pending *p = pending_head(c);
        if (c->txn.body)
                return "while sending the message body";
        if (!p)
                return "while idle";
        switch (p->cmd) {
        case CMD_GREETING:
                return "while waiting for the greeting";
        case CMD_EHLO:
                return c->lmtp ? "after LHLO" : "after EHLO";
        case CMD_HELO:
                return "after HELO";
        case CMD_STARTTLS:
                return "after STARTTLS";
        case CMD_RSET:
                return "after RSET";
        case CMD_MAIL:
                return "after MAIL FROM";
        case CMD_RCPT:
                return "after RCPT TO";
        case CMD_DATA:
                return "after DATA";
        case CMD_DOT:
                return "after the end of data";
        case CMD_QUIT:
                return "after QUIT";
        }
        return "";
}

static void lost_connection(SmtpClient *c, int error) {
        if (c->phase == PHASE_QUIT) {
                close_connection(c);
                return;
        }
        if (error == -ECONNRESET)
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, current_stage(c), 0, "4.4.2",
                             "lost connection with %s %s", c->peer_name, current_what(c));
        else
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, current_stage(c), 0, "4.4.2",
                             "connection with %s failed %s: %s", c->peer_name, current_what(c),
                             strerror(-error));
}

static void protocol_error(SmtpClient *c, const char *what) {
        session_fail(c, false, SMTP_STATUS_TEMPFAIL, current_stage(c), 0, "4.5.0",
                     "protocol error with %s %s: %s", c->peer_name, current_what(c), what);
}

static void update_io(SmtpClient *c) {
        uint32_t ev;

        if (c->phase == PHASE_CLOSED || !c->io)
                return;
        if (c->phase == PHASE_CONNECTING)
                ev = EPOLLOUT;
        else if (c->phase == PHASE_HANDSHAKE)
                ev = gnutls_record_get_direction(c->tls) ? EPOLLOUT : EPOLLIN;
        else {
                ev = EPOLLIN;
                if (out_pending(c) > 0 || (c->txn.body && !c->txn.body_eof))
                        ev |= EPOLLOUT;
        }
        (void) sd_event_source_set_io_events(c->io, ev);
}

/* ---- the dialogue */

static int send_hello(SmtpClient *c);
static void start_txn(SmtpClient *c);
static void do_write(SmtpClient *c);

static void enter_ready(SmtpClient *c) {
        c->phase = PHASE_READY;
        if (c->txn.state == TXN_QUEUED)
                start_txn(c);
}

static void parse_ehlo(SmtpClient *c, const char *text) {
        SmtpSessionFacts *f = &c->facts;

        for (size_t i = 0; i < f->n_keywords; i++)
                f->keywords[i] = mfree(f->keywords[i]);
        f->n_keywords = 0;
        f->extensions = 0;
        f->size_max = 0;

        const char *line = strchr(text, '\n');  /* the first line is the domain */
        while (line) {
                line++;
                const char *end = strchrnul(line, '\n');
                size_t kl = strcspn(line, " \n");
                char kw[KEYWORD_MAX + 1];
                if (kl > 0 && kl <= KEYWORD_MAX) {
                        for (size_t i = 0; i < kl; i++)
                                kw[i] = (char) (line[i] >= 'a' && line[i] <= 'z' ? line[i] - 32 : line[i]);
                        kw[kl] = '\0';
                        if (streq(kw, "PIPELINING"))
                                f->extensions |= SMTP_EXT_PIPELINING;
                        else if (streq(kw, "8BITMIME"))
                                f->extensions |= SMTP_EXT_8BITMIME;
                        else if (streq(kw, "SMTPUTF8"))
                                f->extensions |= SMTP_EXT_SMTPUTF8;
                        else if (streq(kw, "STARTTLS"))
                                f->extensions |= SMTP_EXT_STARTTLS;
                        else if (streq(kw, "ENHANCEDSTATUSCODES"))
                                f->extensions |= SMTP_EXT_ENHANCEDSTATUSCODES;
                        else if (streq(kw, "CHUNKING"))
                                f->extensions |= SMTP_EXT_CHUNKING;
                        else if (streq(kw, "DSN"))
                                f->extensions |= SMTP_EXT_DSN;
                        else if (streq(kw, "SIZE")) {
                                f->extensions |= SMTP_EXT_SIZE;
                                if (line[kl] == ' ') {
                                        char *e;
                                        errno = 0;
                                        unsigned long long v = strtoull(line + kl + 1, &e, 10);
                                        if (errno == 0 && e != line + kl + 1 && (*e == '\n' || *e == '\0' || *e == ' '))
                                                f->size_max = v;
                                }
                        }
                        if (f->n_keywords < SMTP_EXTENSIONS_MAX) {
                                bool dup = false;
                                for (size_t i = 0; i < f->n_keywords; i++)
                                        dup = dup || streq(f->keywords[i], kw);
                                if (!dup) {
                                        char *k = strdup(kw);
                                        if (k)
                                                f->keywords[f->n_keywords++] = k;
                                }
                        }
                }
                line = *end ? end : NULL;
        }
}

static void after_hello(SmtpClient *c) {
        c->facts.hello_done = true;
        if (!c->tls)
                c->facts.starttls_offered = c->facts.extensions & SMTP_EXT_STARTTLS;
        if (!c->tls && c->tls_policy != SMTP_TLS_NO && (c->facts.extensions & SMTP_EXT_STARTTLS)) {
                int r = out_printf(c, "STARTTLS\r\n");
                if (r >= 0)
                        r = pending_push(c, CMD_STARTTLS, 0);
                if (r < 0) {
                        session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_STARTTLS, 0, "4.3.0",
                                     "local error: %s", strerror(-r));
                        return;
                }
                c->phase = PHASE_STARTTLS;
                return;
        }
        if (!c->tls && c->tls_policy == SMTP_TLS_REQUIRE) {
                session_fail(c, true, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_STARTTLS, 0, "4.7.4",
                             "TLS is required, but was not offered by host %s", c->peer_name);
                return;
        }
        enter_ready(c);
}

static int record_tls_facts(SmtpClient *c) {
        SmtpSessionFacts *f = &c->facts;
        const char *s;

        f->tls = true;
        s = gnutls_protocol_get_name(gnutls_protocol_get_version(c->tls));
        f->tls_version = s ? strdup(s) : NULL;
        s = gnutls_cipher_get_name(gnutls_cipher_get(c->tls));
        f->tls_cipher = s ? strdup(s) : NULL;
        char *desc = gnutls_session_get_desc(c->tls);
        if (desc) {
                f->tls_description = strdup(desc);
                gnutls_free(desc);
        }

        unsigned n = 0;
        const gnutls_datum_t *certs = gnutls_certificate_get_peers(c->tls, &n);
        if (certs && n > 0 && gnutls_certificate_type_get(c->tls) == GNUTLS_CRT_X509) {
                gnutls_x509_crt_t crt;
                if (gnutls_x509_crt_init(&crt) >= 0) {
                        gnutls_datum_t dn = {};
                        if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0 &&
                            gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0 && dn.data) {
                                f->peer_subject = strndup((const char *) dn.data, MIN(dn.size, 1024U));
                                gnutls_free(dn.data);
                        }
                        gnutls_x509_crt_deinit(crt);
                }
        }
        return 0;
}

static void handshake_step(SmtpClient *c) {
        int r;

        do
                r = gnutls_handshake(c->tls);
        while (r < 0 && r != GNUTLS_E_AGAIN && !gnutls_error_is_fatal(r));

        if (r == GNUTLS_E_AGAIN)
                return;
        if (r < 0) {
                c->facts.tls_handshake_failed = true;
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_STARTTLS, 0, "4.7.5",
                             "TLS handshake with %s failed: %s", c->peer_name, gnutls_strerror(r));
                return;
        }

        (void) record_tls_facts(c);
        if (c->tls_verify) {
                char reason[512] = "";
                r = c->tls_verify(c, c->tls, reason, sizeof reason, c->tls_verify_userdata);
                if (r < 0) {
                        c->facts.tls_verify_failed = true;
                        session_fail(c, true, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_STARTTLS, 0, "4.7.5",
                                     "TLS verification of %s failed%s%s", c->peer_name, reason[0] ? ": " : "",
                                     reason);
                        return;
                }
                c->facts.tls_verified = r > 0;
        }
        /* RFC 3207 4.2: forget what was learnt before TLS */
        c->facts.extensions = 0;
        c->facts.size_max = 0;
        r = send_hello(c);
        if (r < 0)
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_EHLO, 0, "4.3.0", "local error: %s",
                             strerror(-r));
}

static void start_tls(SmtpClient *c) {
        int r;

        if (c->in_rest > 0) {
                /* plaintext after the 220 would be taken as TLS-protected (CVE-2011-0411) */
                protocol_error(c, "data after the reply to STARTTLS");
                return;
        }
        if (!c->tls_creds) {
                r = gnutls_certificate_allocate_credentials(&c->tls_creds);
                if (r < 0) {
                        c->tls_creds = NULL;
                        goto fail;
                }
                c->own_creds = true;
        }
        r = gnutls_init(&c->tls, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
        if (r < 0) {
                c->tls = NULL;
                goto fail;
        }
        if (c->tls_priority)
                r = gnutls_priority_set_direct(c->tls, c->tls_priority, NULL);
        else
                r = gnutls_set_default_priority(c->tls);
        if (r < 0)
                goto fail;
        r = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, c->tls_creds);
        if (r < 0)
                goto fail;
        if (c->tls_server_name) {
                r = gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, c->tls_server_name, strlen(c->tls_server_name));
                if (r < 0)
                        goto fail;
        }
        gnutls_handshake_set_timeout(c->tls, 0);
        gnutls_transport_set_int(c->tls, c->fd);
        c->phase = PHASE_HANDSHAKE;
        timer_update(c);
        handshake_step(c);
        return;
fail:
        c->facts.tls_handshake_failed = true;
        session_fail(c, true, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_STARTTLS, 0, "4.7.5", "TLS setup failed: %s",
                     gnutls_strerror(r));
}

static int send_hello(SmtpClient *c) {
        int r = out_printf(c, "%s %s\r\n", c->lmtp ? "LHLO" : "EHLO", c->helo_name);
        if (r < 0)
                return r;
        r = pending_push(c, CMD_EHLO, 0);
        if (r < 0)
                return r;
        c->phase = PHASE_HELLO;
        return 0;
}

static int send_mail(SmtpClient *c) {
        Transaction *t = &c->txn;
        char size[40] = "";

        if (c->facts.extensions & SMTP_EXT_SIZE)
                snprintf(size, sizeof size, " SIZE=%" PRIu64, t->size);
        int r = out_printf(c, "MAIL FROM:<%s>%s%s%s\r\n", t->from, size,
                           (t->eightbit || t->smtputf8) && (c->facts.extensions & SMTP_EXT_8BITMIME) ?
                                           " BODY=8BITMIME" : "",
                           t->smtputf8 ? " SMTPUTF8" : "");
        if (r < 0)
                return r;
        return pending_push(c, CMD_MAIL, 0);
}

/* Lock-step: the next recipient that has not been decided locally. */
static bool next_rcpt(Transaction *t, size_t *ret) {
        while (t->next_rcpt < t->n_rcpts) {
                size_t i = t->next_rcpt++;
                if (t->results[i].status == SMTP_STATUS_PENDING) {
                        *ret = i;
                        return true;
                }
        }
        return false;
}

static int send_rcpt(SmtpClient *c, size_t i) {
        int r = out_printf(c, "RCPT TO:<%s>\r\n", c->txn.rcpts[i]);
        if (r < 0)
                return r;
        return pending_push(c, CMD_RCPT, i);
}

static int send_data(SmtpClient *c) {
        int r = out_printf(c, "DATA\r\n");
        if (r < 0)
                return r;
        return pending_push(c, CMD_DATA, 0);
}

/* Lock-step: after MAIL or a RCPT reply, the next RCPT, DATA or the end. */
static int lockstep_next(SmtpClient *c) {
        size_t i;

        if (next_rcpt(&c->txn, &i))
                return send_rcpt(c, i);
        if (c->txn.n_accepted > 0)
                return send_data(c);
        txn_finish(c);
        return 0;
}

static void start_txn(SmtpClient *c) {
        Transaction *t = &c->txn;
        int r = 0;

        t->state = TXN_ACTIVE;
        if (t->smtputf8 && !(c->facts.extensions & SMTP_EXT_SMTPUTF8)) {
                char text[512];
                snprintf(text, sizeof text,
                         "SMTPUTF8 is required, but was not offered by host %s (RFC 6531: the message has "
                         "non-ASCII addresses or headers)", c->peer_name);
                txn_fail_pending(t, SMTP_STATUS_PERMFAIL, SMTP_STAGE_LOCAL, 0, "5.6.7", text);
                txn_finish(c);
                return;
        }
        if (c->facts.size_max > 0 && t->size > c->facts.size_max) {
                char text[256];
                snprintf(text, sizeof text, "message size %" PRIu64 " exceeds size limit %" PRIu64 " of host %s",
                         t->size, c->facts.size_max, c->peer_name);
                txn_fail_pending(t, SMTP_STATUS_PERMFAIL, SMTP_STAGE_LOCAL, 0, "5.3.4", text);
                txn_finish(c);
                return;
        }
        if (txn_n_pending(t) == 0) {
                txn_finish(c);
                return;
        }

        c->facts.transactions++;
        t->pipelined = c->facts.extensions & SMTP_EXT_PIPELINING;
        c->facts.pipelined = t->pipelined;
        t->rset = c->need_rset;
        c->need_rset = false;

        if (t->rset) {
                r = out_printf(c, "RSET\r\n");
                if (r >= 0)
                        r = pending_push(c, CMD_RSET, 0);
        }
        if (r >= 0 && (t->pipelined || !t->rset))
                r = send_mail(c);
        if (r >= 0 && t->pipelined) {
                /* RFC 2920: every RCPT and DATA in the same group, DATA last */
                size_t i;
                while (r >= 0 && next_rcpt(t, &i))
                        r = send_rcpt(c, i);
                if (r >= 0)
                        r = send_data(c);
        }
        if (r < 0) {
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_MAIL, 0, "4.3.0", "local error: %s",
                             strerror(-r));
                return;
        }
        timer_update(c);
}

static void start_body(SmtpClient *c) {
        Transaction *t = &c->txn;
        int r = 0;

        if (!c->body_in) {
                c->body_in = malloc(BODY_READ);
                if (!c->body_in)
                        r = -ENOMEM;
        }
        /* the final reply (LMTP: one per accepted recipient) */
        if (c->lmtp)
                for (size_t k = 0; r >= 0 && k < t->n_accepted; k++)
                        r = pending_push(c, CMD_DOT, k);
        else if (r >= 0)
                r = pending_push(c, CMD_DOT, 0);
        if (r < 0) {
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_BODY, 0, "4.3.0", "local error: %s",
                             strerror(-r));
                return;
        }
        t->body = true;
        t->body_eof = false;
        t->offset = 0;
        t->stuffer = (SmtpDotStuffer) SMTP_DOT_STUFFER_INIT;
        timer_update(c);
}

/* Moves content into the output buffer while there is room. */
static int body_fill(SmtpClient *c) {
        Transaction *t = &c->txn;

        while (t->body && !t->body_eof && out_pending(c) < BODY_BUFFER / 2) {
                ssize_t n = pread(t->fd, c->body_in, BODY_READ, (off_t) t->offset);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                int r = out_reserve(c, n > 0 ? 2 * (size_t) n : 5, OUT_COMMANDS_MAX + BODY_BUFFER);
                if (r < 0)
                        return r;
                if (n == 0) {
                        c->out_len += smtp_dot_stuff_finish(&t->stuffer, c->out + c->out_len);
                        t->body_eof = true;
                        break;
                }
                c->out_len += smtp_dot_stuff(&t->stuffer, c->body_in, (size_t) n, c->out + c->out_len);
                t->offset += (uint64_t) n;
        }
        return 0;
}

static void do_write(SmtpClient *c) {
        size_t written = 0;

        while (c->phase != PHASE_CLOSED && c->phase != PHASE_HANDSHAKE && c->phase != PHASE_CONNECTING) {
                int r = body_fill(c);
                if (r < 0) {
                        session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_BODY, 0, "4.3.0",
                                     "cannot read the message content: %s", strerror(-r));
                        return;
                }
                if (out_pending(c) == 0)
                        break;
                if (written >= WRITE_PER_DISPATCH)
                        break;
                ssize_t k = raw_write(c, c->out + c->out_off, out_pending(c));
                if (k < 0) {
                        lost_connection(c, (int) k);
                        return;
                }
                if (k == 0)
                        break;
                c->out_off += (size_t) k;
                written += (size_t) k;
                if (c->txn.body)
                        timer_update(c);        /* progress restarts the data block timeout */
        }
        if (c->phase == PHASE_CLOSED)
                return;
        if (c->txn.body && c->txn.body_eof && out_pending(c) == 0) {
                c->txn.body = false;
                timer_update(c);                 /* now the final reply's timeout */
        }
        if (out_pending(c) == 0)
                c->out_off = c->out_len = 0;
}

static void handle_reply(SmtpClient *c, int code, const char *enhanced, const char *text) {
        Transaction *t = &c->txn;
        SmtpStatus st = status_of_code(code);
        int r = 0;

        if (c->p_len == 0) {
                if (code == 421)
                        session_fail(c, false, SMTP_STATUS_TEMPFAIL, current_stage(c), code, enhanced,
                                     "%s", text);
                else
                        protocol_error(c, "unexpected reply");
                return;
        }
        Pending p = pending_pop(c);

        switch (p.cmd) {
        case CMD_GREETING:
                if (code / 100 != 2) {
                        /* 5xx too: this host refuses, the next one may not (as Postfix) */
                        session_fail(c, true, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_GREETING, code, enhanced,
                                     "host %s refused to talk to me: %d %s", c->peer_name, code, text);
                        return;
                }
                free(c->facts.greeting);
                c->facts.greeting = strdup(text);
                r = send_hello(c);
                break;

        case CMD_EHLO:
                if (code / 100 == 2) {
                        parse_ehlo(c, text);
                        after_hello(c);
                        break;
                }
                if (code / 100 == 5 && !c->lmtp) {
                        c->facts.helo_fallback = true;
                        r = out_printf(c, "HELO %s\r\n", c->helo_name);
                        if (r >= 0)
                                r = pending_push(c, CMD_HELO, 0);
                        break;
                }
                session_fail(c, true, st == SMTP_STATUS_PERMFAIL ? st : SMTP_STATUS_TEMPFAIL, SMTP_STAGE_EHLO, code,
                             enhanced, "host %s refused %s: %d %s", c->peer_name, c->lmtp ? "LHLO" : "EHLO", code,
                             text);
                return;

        case CMD_HELO:
                if (code / 100 == 2) {
                        parse_ehlo(c, "");
                        after_hello(c);
                        break;
                }
                session_fail(c, true, st == SMTP_STATUS_PERMFAIL ? st : SMTP_STATUS_TEMPFAIL, SMTP_STAGE_EHLO, code,
                             enhanced, "host %s refused HELO: %d %s", c->peer_name, code, text);
                return;

        case CMD_STARTTLS:
                if (code == 220) {
                        start_tls(c);
                        return;
                }
                c->facts.starttls_refused = true;
                if (c->tls_policy == SMTP_TLS_REQUIRE) {
                        session_fail(c, true, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_STARTTLS, code, enhanced,
                                     "TLS is required, but host %s refused STARTTLS: %d %s", c->peer_name, code,
                                     text);
                        return;
                }
                enter_ready(c);
                break;

        case CMD_RSET:
                if (code / 100 != 2) {
                        session_fail(c, true, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_RSET, code, enhanced,
                                     "host %s refused RSET: %d %s", c->peer_name, code, text);
                        return;
                }
                if (t->state == TXN_ACTIVE && !t->pipelined)
                        r = send_mail(c);
                break;

        case CMD_MAIL:
                if (t->state != TXN_ACTIVE)
                        break;
                if (code / 100 != 2) {
                        txn_fail_pending(t, st == SMTP_STATUS_OK ? SMTP_STATUS_TEMPFAIL : st, SMTP_STAGE_MAIL, code,
                                         enhanced, text);
                        t->mail_failed = true;
                        if (!t->pipelined)
                                txn_finish(c);
                        break;
                }
                if (!t->pipelined)
                        r = lockstep_next(c);
                break;

        case CMD_RCPT:
                if (t->state != TXN_ACTIVE || t->mail_failed)
                        break;
                if (code / 100 == 2)
                        t->accepted[t->n_accepted++] = p.index;
                else
                        result_set(&t->results[p.index], st, SMTP_STAGE_RCPT, code, enhanced, text);
                if (!t->pipelined)
                        r = lockstep_next(c);
                break;

        case CMD_DATA:
                if (t->state != TXN_ACTIVE)
                        break;
                if (code == 354) {
                        if (t->mail_failed || t->n_accepted == 0) {
                                /* nobody to send to, yet the peer waits for content: give up on this connection */
                                session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_DATA, code, enhanced,
                                             "host %s accepted DATA without recipients", c->peer_name);
                                return;
                        }
                        start_body(c);
                        break;
                }
                if (!t->mail_failed && t->n_accepted > 0)
                        txn_fail_pending(t, st == SMTP_STATUS_PERMFAIL ? st : SMTP_STATUS_TEMPFAIL, SMTP_STAGE_DATA,
                                         code, enhanced, text);
                txn_finish(c);
                break;

        case CMD_DOT: {
                bool early = t->body;
                if (c->lmtp) {
                        if (p.index < t->n_accepted)
                                result_set(&t->results[t->accepted[p.index]], st, SMTP_STAGE_DOT, code, enhanced,
                                           text);
                } else
                        for (size_t k = 0; k < t->n_accepted; k++)
                                result_set(&t->results[t->accepted[k]], st, SMTP_STAGE_DOT, code, enhanced, text);
                if (early) {
                        session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_BODY, code, enhanced,
                                     "host %s replied before the end of data: %d %s", c->peer_name, code, text);
                        return;
                }
                if (c->p_len == 0)
                        txn_finish(c);
                break;
        }

        case CMD_QUIT:
                close_connection(c);
                return;
        }

        if (r < 0) {
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, stage_of_cmd(p.cmd), 0, "4.3.0", "local error: %s",
                             strerror(-r));
                return;
        }
        timer_update(c);
}

/* One line of a reply (without its line end). */
static void handle_line(SmtpClient *c, const char *line, size_t len) {
        int code;
        bool more;
        size_t off;

        if (smtp_reply_line_parse(line, len, &code, &more, &off) < 0) {
                protocol_error(c, "malformed reply line");
                return;
        }
        if (c->r_lines > 0 && code != c->r_code) {
                protocol_error(c, "reply code changed within a multiline reply");
                return;
        }
        if (++c->r_lines > SMTP_REPLY_LINES_MAX) {
                protocol_error(c, "too many lines in a reply");
                return;
        }
        if (c->r_lines == 1) {
                c->r_code = code;
                c->r_text_len = 0;
                c->r_enhanced[0] = '\0';
        }

        const char *text = line + off;
        size_t tlen = len - off;
        const Pending *p = pending_head(c);
        bool hello = !p || p->cmd == CMD_GREETING || p->cmd == CMD_EHLO || p->cmd == CMD_HELO;
        if (!hello) {
                /* RFC 2034: every line carries the code; taken also when not announced if its class matches */
                size_t n = smtp_enhanced_code_length(text, tlen, code);
                if (n > 0) {
                        if (c->r_lines == 1)
                                snprintf(c->r_enhanced, sizeof c->r_enhanced, "%.*s", (int) n, text);
                        text += n;
                        tlen -= n;
                        if (tlen > 0) {
                                text++;
                                tlen--;
                        }
                }
        }
        /* text kept: lines joined by '\n', at most SMTP_REPLY_TEXT_MAX bytes, buffer grown as needed */
        size_t want = MIN(c->r_text_len + 1 + tlen, (size_t) SMTP_REPLY_TEXT_MAX) + 1;
        if (want > c->r_text_cap) {
                size_t cap = MIN(MAX(want, MAX(c->r_text_cap * 2, (size_t) 256)), (size_t) SMTP_REPLY_TEXT_MAX + 1);
                char *grown = realloc(c->r_text, cap);
                if (!grown) {
                        session_fail(c, false, SMTP_STATUS_TEMPFAIL, current_stage(c), 0, "4.3.0",
                                     "local error: %s", strerror(ENOMEM));
                        return;
                }
                c->r_text = grown;
                c->r_text_cap = cap;
        }
        if (c->r_lines > 1 && c->r_text_len < SMTP_REPLY_TEXT_MAX)
                c->r_text[c->r_text_len++] = '\n';
        size_t k = MIN(tlen, SMTP_REPLY_TEXT_MAX - c->r_text_len);
        memcpy(c->r_text + c->r_text_len, text, k);
        c->r_text_len += k;
        c->r_text[c->r_text_len] = '\0';

        if (more)
                return;
        c->r_lines = 0;
        char enhanced[SMTP_ENHANCED_MAX];
        memcpy(enhanced, c->r_enhanced, sizeof enhanced);
        handle_reply(c, c->r_code, enhanced, c->r_text);
}

static void process_input(SmtpClient *c) {
        size_t start = 0;

        while (c->phase != PHASE_CLOSED) {
                char *nl = memchr(c->in + start, '\n', c->in_len - start);
                if (!nl)
                        break;
                size_t len = (size_t) (nl - (c->in + start));
                size_t next = start + len + 1;
                if (len > 0 && c->in[start + len - 1] == '\r')
                        len--;
                if (len > SMTP_REPLY_LINE_MAX) {
                        protocol_error(c, "reply line too long");
                        return;
                }
                c->in_rest = c->in_len - next;
                handle_line(c, c->in + start, len);
                start = next;
                /* STARTTLS accepted: what follows (nothing, if the peer is honest) must not be parsed */
                if (c->phase == PHASE_HANDSHAKE)
                        break;
        }
        if (c->phase == PHASE_CLOSED)
                return;
        memmove(c->in, c->in + start, c->in_len - start);
        c->in_len -= start;
        if (c->in_len >= IN_MAX)
                protocol_error(c, "reply line too long");
}

static void do_read(SmtpClient *c) {
        while (c->phase != PHASE_CLOSED && c->phase != PHASE_HANDSHAKE) {
                bool tls_error;
                ssize_t k = raw_read(c, c->in + c->in_len, IN_MAX - c->in_len, &tls_error);
                if (k == 0)
                        return;
                if (k < 0) {
                        if (tls_error)
                                session_fail(c, false, SMTP_STATUS_TEMPFAIL, current_stage(c), 0, "4.7.5",
                                             "TLS error with %s %s", c->peer_name, current_what(c));
                        else
                                lost_connection(c, (int) k);
                        return;
                }
                c->in_len += (size_t) k;
                process_input(c);
        }
}

/* Our address on the connection, for TLS reports (sending-mta-ip). */
static void record_local_address(SmtpClient *c) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;

        c->facts.local_address[0] = 0;
        if (getsockname(c->fd, (struct sockaddr *) &ss, &len) < 0)
                return;
        if (ss.ss_family == AF_INET)
                (void) inet_ntop(AF_INET, &((struct sockaddr_in *) &ss)->sin_addr, c->facts.local_address,
                                 sizeof c->facts.local_address);
        else if (ss.ss_family == AF_INET6)
                (void) inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &ss)->sin6_addr, c->facts.local_address,
                                 sizeof c->facts.local_address);
}

static void connect_done(SmtpClient *c) {
        int err = 0;
        socklen_t len = sizeof err;

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
        if (err != 0) {
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_CONNECT, 0, "4.4.1", "connect to %s: %s",
                             c->peer_name, strerror(err));
                return;
        }
        record_local_address(c);
        c->phase = PHASE_GREETING;
        if (pending_push(c, CMD_GREETING, 0) < 0) {
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_CONNECT, 0, "4.3.0", "local error: %s",
                             strerror(ENOMEM));
                return;
        }
        timer_update(c);
}

static int io_handler(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        SmtpClient *c = userdata;

        switch (c->phase) {
        case PHASE_CONNECTING:
                connect_done(c);
                break;
        case PHASE_HANDSHAKE:
                handshake_step(c);
                break;
        case PHASE_CLOSED:
                return 0;
        default:
                if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                        do_read(c);
                break;
        }
        if (c->phase != PHASE_CLOSED && c->phase != PHASE_HANDSHAKE && c->phase != PHASE_CONNECTING)
                do_write(c);
        update_io(c);
        return 0;
}

/* ---- public API */

static int connect_nonblock(const struct sockaddr *sa, socklen_t salen, const struct sockaddr *src, socklen_t srclen,
                            int *ret_fd) {
        _cleanup_close_ int fd = -1;

        if (!sa || !ret_fd || (src && src->sa_family != sa->sa_family))
                return -EINVAL;
        fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fd < 0)
                return negative_errno();
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
        /* The operator's choice of source address (IP reputation pools). */
        if (src && bind(fd, src, srclen) < 0)
                return negative_errno();
        if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS)
                return negative_errno();
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int smtp_connect_nonblock(const struct sockaddr *sa, socklen_t salen, int *ret_fd) {
        return connect_nonblock(sa, salen, NULL, 0, ret_fd);
}

void smtp_client_set_event_handler(SmtpClient *c, SmtpClientEventFn fn, void *userdata) {
        c->on_event = fn;
        c->userdata = userdata;
}

static int client_alloc(sd_event *e, const SmtpClientOptions *o, SmtpClient **ret) {
        _cleanup_(smtp_client_freep) SmtpClient *c = NULL;
        int r;

        if (!e || !o || !o->helo_name || !*o->helo_name || strpbrk(o->helo_name, " \r\n") ||
            strlen(o->helo_name) > 255 || (unsigned) o->tls >= _SMTP_TLS_POLICY_MAX)
                return -EINVAL;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->fd = -1;
        c->txn.fd = -1;
        c->phase = PHASE_CONNECTING;
        c->event = sd_event_ref(e);
        c->lmtp = o->lmtp;
        c->facts.lmtp = o->lmtp;
        c->tls_policy = o->tls;
        c->tls_creds = o->tls_creds;
        c->tls_verify = o->tls_verify;
        c->tls_verify_userdata = o->tls_verify_userdata;
        c->timeouts = o->timeouts;
        smtp_timeouts_fill(&c->timeouts);
        c->on_event = o->on_event;
        c->userdata = o->userdata;
        c->helo_name = strdup(o->helo_name);
        c->peer_name = strdup(o->peer_name ? o->peer_name : "peer");
        if (!c->helo_name || !c->peer_name)
                return -ENOMEM;
        if (o->tls_server_name && !(c->tls_server_name = strdup(o->tls_server_name)))
                return -ENOMEM;
        if (o->tls_priority && !(c->tls_priority = strdup(o->tls_priority)))
                return -ENOMEM;
        c->in = malloc(IN_MAX);
        if (!c->in)
                return -ENOMEM;

        r = sd_event_add_time(e, &c->timer, CLOCK_MONOTONIC, UINT64_MAX, 0, timer_handler, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        r = sd_event_add_defer(e, &c->notify, notify_handler, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->notify, SD_EVENT_OFF);

        *ret = TAKE_PTR(c);
        return 0;
}

static int client_attach(SmtpClient *c, int fd) {
        c->fd = fd;
        int r = sd_event_add_io(c->event, &c->io, fd, EPOLLOUT, io_handler, c);
        if (r < 0)
                return r;
        timer_update(c);
        return 0;
}

int smtp_client_new(sd_event *e, int fd, const SmtpClientOptions *o, SmtpClient **ret) {
        _cleanup_close_ int owned = fd;
        _cleanup_(smtp_client_freep) SmtpClient *c = NULL;
        int r;

        if (fd < 0 || !ret)
                return -EINVAL;
        r = client_alloc(e, o, &c);
        if (r < 0)
                return r;
        r = client_attach(c, TAKE_FD(owned));
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

static void format_peer(const struct sockaddr *sa, char *buf, size_t n) {
        char a[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;

        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                (void) inet_ntop(AF_INET, &in->sin_addr, a, sizeof a);
                port = ntohs(in->sin_port);
        } else if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                (void) inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof a);
                port = ntohs(in6->sin6_port);
        }
        snprintf(buf, n, "[%s]:%u", a, port);
}

int smtp_client_connect(sd_event *e, const struct sockaddr *sa, socklen_t salen, const SmtpClientOptions *o,
                        SmtpClient **ret) {
        _cleanup_(smtp_client_freep) SmtpClient *c = NULL;
        char peer[INET6_ADDRSTRLEN + 16];
        SmtpClientOptions opts;
        int fd = -1, r;

        if (!sa || !o || !ret)
                return -EINVAL;
        opts = *o;
        if (!opts.peer_name) {
                format_peer(sa, peer, sizeof peer);
                opts.peer_name = peer;
        }
        r = client_alloc(e, &opts, &c);
        if (r < 0)
                return r;
        r = connect_nonblock(sa, salen, o->source, o->source_len, &fd);
        if (r < 0)
                session_fail(c, false, SMTP_STATUS_TEMPFAIL, SMTP_STAGE_CONNECT, 0, "4.4.1", "connect to %s: %s",
                             c->peer_name, strerror(-r));
        else {
                r = client_attach(c, fd);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

SmtpClient *smtp_client_free(SmtpClient *c) {
        if (!c)
                return NULL;
        c->io = sd_event_source_disable_unref(c->io);
        c->timer = sd_event_source_disable_unref(c->timer);
        c->notify = sd_event_source_disable_unref(c->notify);
        tls_done(c);
        safe_close(c->fd);
        if (c->own_creds && c->tls_creds)
                gnutls_certificate_free_credentials(c->tls_creds);
        txn_clear(&c->txn);
        free(c->helo_name);
        free(c->peer_name);
        free(c->tls_server_name);
        free(c->tls_priority);
        free(c->in);
        free(c->out);
        free(c->body_in);
        free(c->r_text);
        free(c->pending);
        free(c->error.text);
        SmtpSessionFacts *f = &c->facts;
        free(f->tls_version);
        free(f->tls_cipher);
        free(f->tls_description);
        free(f->peer_subject);
        free(f->greeting);
        for (size_t i = 0; i < f->n_keywords; i++)
                free(f->keywords[i]);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

bool smtp_client_usable(const SmtpClient *c) {
        return c && c->phase != PHASE_CLOSED && c->phase != PHASE_QUIT &&
               (c->txn.state == TXN_NONE || c->txn.state == TXN_DONE);
}

int smtp_client_send(SmtpClient *c, const SmtpMessage *m) {
        Transaction t = { .fd = -1 };
        bool utf8 = false;
        struct stat st;
        int r;

        if (!c || !m || !m->from || !m->rcpts || m->n_rcpts == 0 || m->n_rcpts > SMTP_RCPTS_MAX || m->fd < 0)
                return -EINVAL;
        if (c->phase == PHASE_CLOSED || c->phase == PHASE_QUIT)
                return -ENOTCONN;
        if (c->txn.state == TXN_QUEUED || c->txn.state == TXN_ACTIVE)
                return -EBUSY;
        if (!address_valid(m->from, true, &utf8))
                return -EINVAL;
        if (fstat(m->fd, &st) < 0)
                return negative_errno();

        t.fd = fcntl(m->fd, F_DUPFD_CLOEXEC, 3);
        if (t.fd < 0)
                return negative_errno();
        t.from = strdup(m->from);
        t.rcpts = calloc(m->n_rcpts, sizeof(char *));
        t.results = calloc(m->n_rcpts, sizeof(SmtpResult));
        t.accepted = calloc(m->n_rcpts, sizeof(size_t));
        if (!t.from || !t.rcpts || !t.results || !t.accepted) {
                r = -ENOMEM;
                goto fail;
        }
        t.n_rcpts = m->n_rcpts;
        for (size_t i = 0; i < m->n_rcpts; i++) {
                const char *a = m->rcpts[i] ? m->rcpts[i] : "";
                bool u = false;
                t.rcpts[i] = strdup(a);
                if (!t.rcpts[i]) {
                        r = -ENOMEM;
                        goto fail;
                }
                if (!address_valid(a, false, &u))
                        result_set(&t.results[i], SMTP_STATUS_PERMFAIL, SMTP_STAGE_LOCAL, 0, "5.1.3",
                                   "bad recipient address syntax");
                else
                        utf8 = utf8 || u;
        }
        t.size = m->size > 0 ? m->size : (uint64_t) MAX(st.st_size, (off_t) 0);
        t.eightbit = m->eightbit;
        t.smtputf8 = m->smtputf8 || utf8;
        t.state = TXN_QUEUED;

        txn_clear(&c->txn);
        c->txn = t;
        if (c->phase == PHASE_READY) {
                start_txn(c);
                if (c->phase != PHASE_CLOSED) {
                        do_write(c);
                        update_io(c);
                }
        }
        return 0;
fail:
        txn_clear(&t);
        return r;
}

int smtp_client_quit(SmtpClient *c) {
        if (!c)
                return -EINVAL;
        if (c->phase == PHASE_CLOSED || c->phase == PHASE_QUIT)
                return 0;
        if (c->phase == PHASE_READY && c->txn.state != TXN_ACTIVE && c->txn.state != TXN_QUEUED &&
            out_printf(c, "QUIT\r\n") >= 0 && pending_push(c, CMD_QUIT, 0) >= 0) {
                c->phase = PHASE_QUIT;
                timer_update(c);
                do_write(c);
                update_io(c);
                return 0;
        }
        session_fail(c, false, SMTP_STATUS_TEMPFAIL, current_stage(c), 0, "4.3.0",
                     "session with %s closed before the transaction ended", c->peer_name);
        /* a quit by the caller is not an error of the session */
        c->error.status = SMTP_STATUS_PENDING;
        return 0;
}

size_t smtp_client_n_rcpts(const SmtpClient *c) {
        return c ? c->txn.n_rcpts : 0;
}

const SmtpResult *smtp_client_rcpt_result(const SmtpClient *c, size_t i) {
        return c && i < c->txn.n_rcpts ? &c->txn.results[i] : NULL;
}

const char *smtp_client_rcpt(const SmtpClient *c, size_t i) {
        return c && i < c->txn.n_rcpts ? c->txn.rcpts[i] : NULL;
}

const SmtpResult *smtp_client_error(const SmtpClient *c) {
        return c ? &c->error : NULL;
}

const SmtpSessionFacts *smtp_client_facts(const SmtpClient *c) {
        return c ? &c->facts : NULL;
}
