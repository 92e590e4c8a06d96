/* SPDX-License-Identifier: MIT */
/* The DATA/BDAT reader. The first input byte picks the options, the rest is
 * the stream after DATA. Invariants:
 *  - the same result (output, end offset, counters, reply) for the whole
 *    input and for odd-sized chunks;
 *  - an end is only reported right after "\r\n.\r\n" (or ".\r\n" at the very
 *    start), so a bare LF or bare CR can never end the data;
 *  - an accepted message, dot-stuffed again and terminated, reads back to
 *    the same content with the end at the same place (round trip);
 *  - with normalisation, an accepted message has only CRLF line ends;
 *  - BDAT consumes exactly the announced octets, unchanged. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd-data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Out {
        char *p;
        size_t n, cap;
} Out;

static int sink(const void *p, size_t n, void *userdata) {
        Out *o = userdata;
        if (o->n + n > o->cap) {
                size_t cap = (o->n + n) * 2 + 64;
                char *q = realloc(o->p, cap);
                if (!q)
                        abort();
                o->p = q;
                o->cap = cap;
        }
        memcpy(o->p + o->n, p, n);
        o->n += n;
        return 0;
}

typedef struct Run {
        Out out;
        long end;
        int result;
        unsigned code;
        SmtpDataReader r;
} Run;

/* chunk == 0: all at once; otherwise chunk sizes cycle through a pattern. */
static void run_data(const char *p, size_t n, const SmtpDataOptions *o, unsigned chunk, Run *run) {
        static const size_t pattern[] = { 1, 2, 3, 5, 7, 143, 1, 4096 };
        SmtpDataOptions opts = *o;
        opts.sink = sink;
        opts.userdata = &run->out;
        *run = (Run) { .end = -1 };
        smtp_data_reader_init(&run->r, &opts);
        size_t pos = 0;
        unsigned k = chunk;
        for (;;) {
                size_t len = chunk ? pattern[k++ % (sizeof pattern / sizeof pattern[0])] : n;
                if (len > n - pos)
                        len = n - pos;
                size_t used = 0;
                int f = smtp_data_feed(&run->r, p + pos, len, &used);
                if (f < 0 || used > len)
                        abort();
                if (f == 1) {
                        run->end = (long) (pos + used);
                        break;
                }
                if (used != len)
                        abort();
                pos += len;
                if (pos >= n)
                        break;
        }
        SmtpReplyError e = {};
        run->result = smtp_data_result(&run->r, &e);
        run->code = run->result < 0 ? e.code : 0;
}

static void same(const Run *a, const Run *b) {
        if (a->end != b->end || a->result != b->result || a->code != b->code || a->out.n != b->out.n ||
            (a->out.n && memcmp(a->out.p, b->out.p, a->out.n) != 0) || a->r.size != b->r.size ||
            a->r.lines != b->r.lines || a->r.wire_bytes != b->r.wire_bytes || a->r.eight_bit != b->r.eight_bit ||
            a->r.has_nul != b->r.has_nul || a->r.done != b->r.done)
                abort();
}

static void fuzz_data(const char *p, size_t n, const SmtpDataOptions *opts) {
        Run a, b;
        run_data(p, n, opts, 0, &a);
        run_data(p, n, opts, 1 + (unsigned) (n % 7), &b);
        same(&a, &b);

        if (a.end >= 0) {
                size_t e = (size_t) a.end;
                bool start = e == 3 && memcmp(p, ".\r\n", 3) == 0;
                if (!start && (e < 5 || memcmp(p + e - 5, "\r\n.\r\n", 5) != 0))
                        abort();
                if (!a.r.done || a.r.wire_bytes != e)
                        abort();
        } else if (a.r.done || a.r.wire_bytes != n)
                abort();

        if (a.end >= 0 && a.result == 0) {
                if (a.out.n > 0 && (a.out.n < 2 || memcmp(a.out.p + a.out.n - 2, "\r\n", 2) != 0))
                        abort();
                if (a.r.size != a.out.n)
                        abort();
                /* no bare CR or LF in an accepted message, in either mode */
                for (size_t i = 0; i < a.out.n; i++) {
                        if (a.out.p[i] == '\r' && (i + 1 >= a.out.n || a.out.p[i + 1] != '\n'))
                                abort();
                        if (a.out.p[i] == '\n' && (i == 0 || a.out.p[i - 1] != '\r'))
                                abort();
                }
                /* round trip: stuff again, terminate, read back */
                char *s = malloc(a.out.n * 2 + 8);
                if (!s)
                        abort();
                size_t m = 0;
                bool bol = true;
                for (size_t i = 0; i < a.out.n; i++) {
                        if (bol && a.out.p[i] == '.')
                                s[m++] = '.';
                        s[m++] = a.out.p[i];
                        bol = a.out.p[i] == '\n';
                }
                memcpy(s + m, ".\r\nX", 4);
                Run c;
                SmtpDataOptions o2 = *opts;
                o2.max_size = 0;
                run_data(s, m + 4, &o2, 0, &c);
                if (c.end != (long) m + 3 || c.result != 0 || c.out.n != a.out.n ||
                    (a.out.n && memcmp(c.out.p, a.out.p, a.out.n) != 0))
                        abort();
                free(c.out.p);
                free(s);
        }
        free(a.out.p);
        free(b.out.p);
}

static void fuzz_bdat(const char *p, size_t n, const SmtpDataOptions *o) {
        Out out = {};
        SmtpDataOptions opts = *o;
        opts.sink = sink;
        opts.userdata = &out;
        SmtpDataReader r;
        smtp_data_reader_init_bdat(&r, &opts);
        /* chunks of n/3, n/3, rest, fed in pieces of 5 */
        size_t sizes[3] = { n / 3, n / 3, n - 2 * (n / 3) };
        size_t pos = 0;
        for (int c = 0; c < 3; c++) {
                if (smtp_data_reader_bdat(&r, sizes[c], c == 2) < 0)
                        abort();
                size_t end = pos + sizes[c];
                for (;;) {
                        size_t len = (n - pos < 5 ? n - pos : 5);
                        size_t used = 0;
                        int f = smtp_data_feed(&r, p + pos, len, &used);
                        if (f < 0 || used > len || pos + used > end)
                                abort();
                        pos += used;
                        if (f == 1)
                                break;
                        if (pos >= n)
                                abort();
                }
                if (pos != end)
                        abort();
        }
        if (!r.done || r.wire_bytes != n || r.size != n)
                abort();
        SmtpReplyError e;
        if (smtp_data_result(&r, &e) == 0 && (out.n != n || (n && memcmp(out.p, p, n) != 0)))
                abort();
        free(out.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        uint8_t sel = data[0];
        SmtpDataOptions opts = {
                .flags = sel & 3u,
                .max_size = (sel & 4) ? (size_t) (sel >> 3) * 16 : 0,
        };
        fuzz_data((const char *) data + 1, size - 1, &opts);
        fuzz_bdat((const char *) data + 1, size - 1, &opts);
        return 0;
}
