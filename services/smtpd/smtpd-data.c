/* SPDX-License-Identifier: MIT */
/* Incremental DATA/BDAT reader; the rules are listed in smtpd-data.h. */
#include <errno.h>
#include <string.h>

#include "macro.h"
#include "smtpd-data.h"

enum {
        S_LINE_START, /* after a real CRLF (or at the start of DATA) */
        S_TEXT,       /* inside a line, dot rules off */
        S_CR,         /* CR seen inside a line, LF expected */
        S_DOT,        /* "." at the start of a line */
        S_DOT_CR,     /* ".\r" at the start of a line */
        S_END,
};

static void set_problem(SmtpDataReader *r, SmtpDataProblem p) {
        if (r->problem == SMTP_DATA_OK)
                r->problem = p;
}

static int flush(SmtpDataReader *r) {
        if (r->out_n == 0)
                return 0;
        size_t n = r->out_n;
        r->out_n = 0;
        if (!r->opts.sink)
                return 0;
        int k = r->opts.sink(r->out, n, r->opts.userdata);
        if (k < 0) {
                r->sink_error = k;
                return k;
        }
        return 0;
}

static int emit(SmtpDataReader *r, char c) {
        r->size++;
        if (r->opts.max_size > 0 && r->size > r->opts.max_size)
                set_problem(r, SMTP_DATA_TOO_BIG);
        if ((unsigned char) c >= 0x80)
                r->eight_bit = true;
        else if (c == 0)
                r->has_nul = true;
        if (r->problem != SMTP_DATA_OK)
                return 0;
        r->out[r->out_n++] = c;
        if (r->out_n == sizeof r->out)
                return flush(r);
        return 0;
}

static int content(SmtpDataReader *r, char c) {
        r->line_len++;
        if (r->line_len > SMTP_DATA_LINE_MAX - 2 && !(r->opts.flags & SMTP_DATA_ALLOW_LONG_LINES))
                set_problem(r, SMTP_DATA_LINE_TOO_LONG);
        return emit(r, c);
}

static void line_end(SmtpDataReader *r) {
        r->lines++;
        r->line_len = 0;
}

/* A bare CR (already emitted) or a bare LF (not yet emitted). */
static int bare_newline(SmtpDataReader *r, bool lf) {
        int k;
        if (r->opts.flags & SMTP_DATA_NORMALIZE_BARE_NEWLINE) {
                if (lf && (k = emit(r, '\r')) < 0)
                        return k;
                if ((k = emit(r, '\n')) < 0)
                        return k;
                line_end(r);
                return 0;
        }
        set_problem(r, SMTP_DATA_BARE_NEWLINE);
        if (lf)
                return emit(r, '\n');
        return 0;
}

static void reader_init(SmtpDataReader *r, const SmtpDataOptions *opts, bool bdat) {
        *r = (SmtpDataReader) {
                .opts = *opts,
                .state = S_LINE_START,
                .bdat = bdat,
        };
}

void smtp_data_reader_init(SmtpDataReader *r, const SmtpDataOptions *opts) {
        reader_init(r, opts, false);
}

void smtp_data_reader_init_bdat(SmtpDataReader *r, const SmtpDataOptions *opts) {
        reader_init(r, opts, true);
}

int smtp_data_reader_bdat(SmtpDataReader *r, uint64_t chunk_size, bool last) {
        if (!r->bdat || r->bdat_last || r->bdat_left > 0)
                return -EINVAL;
        r->bdat_left = chunk_size;
        r->bdat_last = last;
        if (chunk_size == 0 && last)
                r->done = true;
        return 0;
}

/* One octet in DATA mode; returns 1 at the end marker. */
static int step(SmtpDataReader *r, char c) {
        int k;
        for (;;)
                switch (r->state) {
                case S_LINE_START:
                        if (c == '.') {
                                r->state = S_DOT;
                                return 0;
                        }
                        r->state = S_TEXT;
                        continue;
                case S_TEXT:
                        if (c == '\r') {
                                r->state = S_CR;
                                return emit(r, c);
                        }
                        if (c == '\n')
                                return bare_newline(r, true);
                        return content(r, c);
                case S_CR:
                        if (c == '\n') {
                                r->state = S_LINE_START;
                                line_end(r);
                                return emit(r, c);
                        }
                        /* bare CR, then c inside a line (c may be CR again) */
                        r->state = S_TEXT;
                        if ((k = bare_newline(r, false)) < 0)
                                return k;
                        continue;
                case S_DOT:
                        if (c == '\r') {
                                r->state = S_DOT_CR;
                                return 0;
                        }
                        r->state = S_TEXT;
                        /* ".\n": not a stuffed line, the dot is content */
                        if (c == '\n' && (k = content(r, '.')) < 0)
                                return k;
                        /* else the stuffed dot is dropped, c starts the line */
                        continue;
                case S_DOT_CR:
                        if (c == '\n') {
                                r->state = S_END;
                                r->done = true;
                                return 1;
                        }
                        /* ".\r" + not LF: the dot is content, the CR is bare */
                        if ((k = content(r, '.')) < 0 || (k = emit(r, '\r')) < 0)
                                return k;
                        r->state = S_CR;
                        continue;
                default:
                        return 1;
                }
}

int smtp_data_feed(SmtpDataReader *r, const void *buf, size_t n, size_t *ret_consumed) {
        const char *p = buf;
        size_t i = 0;
        int k = 0;

        if (ret_consumed)
                *ret_consumed = 0;
        if (r->sink_error < 0)
                return r->sink_error;

        if (r->bdat) {
                if (r->bdat_left == 0)
                        return 1;
                size_t take = (uint64_t) n < r->bdat_left ? n : (size_t) r->bdat_left;
                for (; i < take; i++) {
                        char c = p[i];
                        if (c == '\n')
                                line_end(r);
                        else if (c != '\r') {
                                r->line_len++;
                                if (r->line_len > SMTP_DATA_LINE_MAX - 2 &&
                                    !(r->opts.flags & SMTP_DATA_ALLOW_LONG_LINES))
                                        set_problem(r, SMTP_DATA_LINE_TOO_LONG);
                        }
                        if ((k = emit(r, c)) < 0)
                                break;
                }
                r->wire_bytes += i;
                r->bdat_left -= i;
                if (k >= 0)
                        k = flush(r);
                if (ret_consumed)
                        *ret_consumed = i;
                if (k < 0)
                        return k;
                if (r->bdat_left > 0)
                        return 0;
                if (r->bdat_last)
                        r->done = true;
                return 1;
        }

        if (r->state == S_END)
                return 1;
        int end = 0;
        for (; i < n; i++) {
                k = step(r, p[i]);
                if (k < 0)
                        break;
                if (k > 0) {
                        end = 1;
                        i++;
                        break;
                }
        }
        r->wire_bytes += i;
        if (k >= 0)
                k = flush(r);
        if (ret_consumed)
                *ret_consumed = i;
        if (k < 0)
                return k;
        return end;
}

int smtp_data_result(const SmtpDataReader *r, SmtpReplyError *reterr) {
        switch (r->problem) {
        case SMTP_DATA_OK:
                return 0;
        case SMTP_DATA_TOO_BIG:
                *reterr = (SmtpReplyError) { 552, "5.3.4", "Message size exceeds fixed limit" };
                break;
        case SMTP_DATA_BARE_NEWLINE:
                *reterr = (SmtpReplyError) { 550, "5.6.11", "Bare CR or LF in message content" };
                break;
        case SMTP_DATA_LINE_TOO_LONG:
                *reterr = (SmtpReplyError) { 500, "5.5.6", "Message line longer than 1000 octets" };
                break;
        }
        return -EINVAL;
}
