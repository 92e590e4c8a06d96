/* SPDX-License-Identifier: MIT */
#include "mail-header.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

typedef struct FieldSpan {
        size_t start, end;      /* in buf, end after the CRLF */
        size_t name_len;
        size_t value_off;       /* offset from start of the byte after the colon */
} FieldSpan;

struct MailHeaders {
        MailHeaderLimits limits;
        char *buf;
        size_t len, cap;
        size_t line_start;      /* offset of the line being assembled */
        FieldSpan *spans;
        size_t n_spans, cap_spans;
        bool open_field;        /* spans[n_spans-1] may still get continuation lines */
        bool complete;
        int error;              /* sticky: once failed, always failed */
        MailHeaderField *fields;        /* built on completion, pointers into buf */
};

int mail_headers_new(const MailHeaderLimits *limits, MailHeaders **ret) {
        MailHeaders *h = calloc(1, sizeof *h);
        if (!h)
                return -ENOMEM;
        h->limits = (MailHeaderLimits) {
                .max_fields = MAIL_HEADER_MAX_FIELDS_DEFAULT,
                .max_field_size = MAIL_HEADER_MAX_FIELD_SIZE_DEFAULT,
                .max_total = MAIL_HEADER_MAX_TOTAL_DEFAULT,
        };
        if (limits) {
                if (limits->max_fields > 0)
                        h->limits.max_fields = limits->max_fields;
                if (limits->max_field_size > 0)
                        h->limits.max_field_size = limits->max_field_size;
                if (limits->max_total > 0)
                        h->limits.max_total = limits->max_total;
        }
        *ret = h;
        return 0;
}

MailHeaders *mail_headers_free(MailHeaders *h) {
        if (!h)
                return NULL;
        free(h->buf);
        free(h->spans);
        free(h->fields);
        free(h);
        return NULL;
}

static int buf_append(MailHeaders *h, const char *p, size_t n) {
        /* +2: room for the CR we may insert before a bare LF */
        if (n > h->limits.max_total || h->len > h->limits.max_total - n)
                return -E2BIG;
        if (h->len + n + 2 > h->cap) {
                size_t cap = MAX(h->cap * 2, (size_t) 1024);
                while (cap < h->len + n + 2)
                        cap *= 2;
                cap = MIN(cap, h->limits.max_total + 2);
                char *b = realloc(h->buf, cap);
                if (!b)
                        return -ENOMEM;
                h->buf = b;
                h->cap = cap;
        }
        memcpy(h->buf + h->len, p, n);
        h->len += n;
        return 0;
}

static bool is_wsp(char c) {
        return c == ' ' || c == '\t';
}

static bool is_ftext(unsigned char c) {
        return c >= 33 && c <= 126 && c != ':';
}

/* Takes the complete line buf[line_start..len), which ends with CRLF. Returns
 * 1 for the empty line that ends the section. */
static int process_line(MailHeaders *h) {
        size_t start = h->line_start, end = h->len;
        const char *line = h->buf + start;
        size_t content = end - start - 2;

        h->line_start = end;

        if (content == 0)
                return 1;

        if (is_wsp(line[0])) {
                if (!h->open_field)
                        return -EBADMSG;
                FieldSpan *s = &h->spans[h->n_spans - 1];
                if (end - s->start > h->limits.max_field_size)
                        return -E2BIG;
                s->end = end;
                return 0;
        }

        size_t i = 0;
        while (i < content && is_ftext((unsigned char) line[i]))
                i++;
        size_t name_len = i;
        while (i < content && is_wsp(line[i]))
                i++;
        if (name_len == 0 || i >= content || line[i] != ':')
                return -EBADMSG;

        if (h->n_spans >= h->limits.max_fields)
                return -E2BIG;
        if (end - start > h->limits.max_field_size)
                return -E2BIG;
        if (h->n_spans == h->cap_spans) {
                size_t cap = MAX(h->cap_spans * 2, (size_t) 32);
                FieldSpan *s = realloc(h->spans, cap * sizeof *s);
                if (!s)
                        return -ENOMEM;
                h->spans = s;
                h->cap_spans = cap;
        }
        h->spans[h->n_spans++] = (FieldSpan) {
                .start = start,
                .end = end,
                .name_len = name_len,
                .value_off = i + 1,
        };
        h->open_field = true;
        return 0;
}

static int finish(MailHeaders *h) {
        h->fields = calloc(MAX(h->n_spans, (size_t) 1), sizeof *h->fields);
        if (!h->fields)
                return -ENOMEM;
        for (size_t i = 0; i < h->n_spans; i++) {
                const FieldSpan *s = &h->spans[i];
                h->fields[i] = (MailHeaderField) {
                        .raw = h->buf + s->start,
                        .raw_len = s->end - s->start,
                        .name = h->buf + s->start,
                        .name_len = s->name_len,
                        .value = h->buf + s->start + s->value_off,
                        .value_len = s->end - s->start - s->value_off - 2,
                };
        }
        h->complete = true;
        return 0;
}

int mail_headers_feed(MailHeaders *h, const void *data, size_t n, size_t *ret_consumed) {
        const char *p = data;
        size_t done = 0;
        int r;

        if (h->error)
                return h->error;
        if (h->complete)
                return -EALREADY;

        while (done < n) {
                const char *nl = memchr(p + done, '\n', n - done);
                size_t chunk = nl ? (size_t) (nl - (p + done)) : n - done;

                r = buf_append(h, p + done, chunk);
                if (r < 0)
                        return (h->error = r);
                done += chunk;
                if (!nl)
                        break;

                /* The line end: CRLF stays, a bare LF becomes CRLF. */
                if (h->len > h->line_start && h->buf[h->len - 1] == '\r')
                        r = buf_append(h, "\n", 1);
                else
                        r = buf_append(h, "\r\n", 2);
                if (r < 0)
                        return (h->error = r);
                done++;

                r = process_line(h);
                if (r < 0)
                        return (h->error = r);
                if (r > 0) {
                        r = finish(h);
                        if (r < 0)
                                return (h->error = r);
                        if (ret_consumed)
                                *ret_consumed = done;
                        return 1;
                }
        }
        if (ret_consumed)
                *ret_consumed = done;
        return 0;
}

int mail_headers_end(MailHeaders *h) {
        int r;

        if (h->error)
                return h->error;
        if (h->complete)
                return 0;
        if (h->len > h->line_start) {
                /* A final line without line end gets one, so every field
                 * ends the same way. A lone CR there was meant as one. */
                if (h->buf[h->len - 1] == '\r')
                        r = buf_append(h, "\n", 1);
                else
                        r = buf_append(h, "\r\n", 2);
                if (r < 0)
                        return (h->error = r);
                r = process_line(h);
                if (r < 0)
                        return (h->error = r);
        }
        r = finish(h);
        if (r < 0)
                return (h->error = r);
        return 0;
}

bool mail_headers_complete(const MailHeaders *h) {
        return h->complete;
}

size_t mail_headers_count(const MailHeaders *h) {
        return h->complete ? h->n_spans : 0;
}

const MailHeaderField *mail_headers_get(const MailHeaders *h, size_t i) {
        if (!h->complete || i >= h->n_spans)
                return NULL;
        return &h->fields[i];
}

const MailHeaderField *mail_headers_fields(const MailHeaders *h) {
        return h->complete ? h->fields : NULL;
}

static char ascii_lower(char c) {
        return c >= 'A' && c <= 'Z' ? (char) (c + 32) : c;
}

bool mail_header_name_eq(const char *a, size_t a_len, const char *b, size_t b_len) {
        if (a_len != b_len)
                return false;
        for (size_t i = 0; i < a_len; i++)
                if (ascii_lower(a[i]) != ascii_lower(b[i]))
                        return false;
        return true;
}

bool mail_header_field_is(const MailHeaderField *f, const char *name) {
        return mail_header_name_eq(f->name, f->name_len, name, strlen(name));
}

int mail_headers_parse(const void *p, size_t n, const MailHeaderLimits *limits,
                       MailHeaders **ret, size_t *ret_body_offset) {
        MailHeaders *h = NULL;
        size_t consumed = 0;
        int r;

        r = mail_headers_new(limits, &h);
        if (r < 0)
                return r;
        r = mail_headers_feed(h, p, n, &consumed);
        if (r == 0) {
                consumed = n;
                r = mail_headers_end(h);
        }
        if (r < 0) {
                mail_headers_free(h);
                return r;
        }
        if (ret_body_offset)
                *ret_body_offset = consumed;
        *ret = h;
        return 0;
}

int mail_header_fields_select(const MailHeaderField *fields, size_t n_fields,
                              const char *const *names, const size_t *name_lens, size_t n_names,
                              size_t *ret_indices) {
        /* used[] marks fields already taken by an earlier h= entry, so a
         * repeated name walks further up. Quadratic, but both counts are
         * bounded by the callers' limits. */
        bool *used = calloc(MAX(n_fields, (size_t) 1), sizeof *used);
        if (!used)
                return -ENOMEM;

        for (size_t i = 0; i < n_names; i++) {
                ret_indices[i] = SIZE_MAX;
                for (size_t j = n_fields; j > 0; j--) {
                        const MailHeaderField *f = &fields[j - 1];
                        if (used[j - 1] || !mail_header_name_eq(f->name, f->name_len, names[i], name_lens[i]))
                                continue;
                        used[j - 1] = true;
                        ret_indices[i] = j - 1;
                        break;
                }
        }
        free(used);
        return 0;
}
