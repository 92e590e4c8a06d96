/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd-data.h"
#include "tap.h"

typedef struct Out {
        char *p;
        size_t n, cap;
        int fail_with;  /* sink returns this when < 0 */
        unsigned calls;
} Out;

static int sink(const void *p, size_t n, void *userdata) {
        Out *o = userdata;
        o->calls++;
        if (o->fail_with < 0)
                return o->fail_with;
        if (o->n + n > o->cap) {
                size_t cap = (o->n + n) * 2 + 64;
                char *q = realloc(o->p, cap);
                if (!q)
                        return -ENOMEM;
                o->p = q;
                o->cap = cap;
        }
        memcpy(o->p + o->n, p, n);
        o->n += n;
        return 0;
}

typedef struct Result {
        long end;       /* offset just after the end marker, -1: not found */
        unsigned code;  /* 0: accepted */
        const char *enhanced;
        uint64_t size, wire, lines;
        bool eight_bit, has_nul;
} Result;

/* Feeds in[0..n) cut at the given positions (ascending, may repeat). */
static Result run(const char *in, size_t n, unsigned flags, uint64_t max_size, const size_t *cuts, size_t ncuts,
                  Out *out) {
        SmtpDataReader r;
        SmtpDataOptions opts = { .max_size = max_size, .flags = flags, .sink = sink, .userdata = out };
        Result res = { .end = -1 };
        smtp_data_reader_init(&r, &opts);
        size_t pos = 0;
        for (size_t c = 0; c <= ncuts; c++) {
                size_t to = c < ncuts ? cuts[c] : n;
                size_t used = 0;
                int k = smtp_data_feed(&r, in + pos, to - pos, &used);
                if (k < 0)
                        TAP_FAIL("feed: %d", k);
                if (k == 0 && used != to - pos)
                        TAP_FAIL("feed returned 0 but used %zu of %zu", used, to - pos);
                if (k == 1) {
                        res.end = (long) (pos + used);
                        if (!r.done)
                                TAP_FAIL("end without done");
                        break;
                }
                pos = to;
        }
        if (res.end < 0 && r.done)
                TAP_FAIL("done without end");
        SmtpReplyError e = {};
        if (smtp_data_result(&r, &e) < 0) {
                res.code = e.code;
                res.enhanced = e.enhanced;
        }
        res.size = r.size;
        res.wire = r.wire_bytes;
        res.lines = r.lines;
        res.eight_bit = r.eight_bit;
        res.has_nul = r.has_nul;
        return res;
}

typedef struct Case {
        const char *in;
        unsigned flags;
        uint64_t max_size;
        const char *out;        /* expected sink output */
        long end;               /* expected end offset, -1 none */
        unsigned code;          /* 0 or expected reply code */
        const char *enhanced;
} Case;

#define NORM SMTP_DATA_NORMALIZE_BARE_NEWLINE
#define BARE 550, "5.6.11"

static const Case cases[] = {
        /* end detection and dot-unstuffing */
        { ".\r\n", 0, 0, "", 3, 0, NULL },
        { "a\r\n.\r\n", 0, 0, "a\r\n", 6, 0, NULL },
        { "\r\n.\r\n", 0, 0, "\r\n", 5, 0, NULL },
        { "a\r\n.\r\nMAIL FROM:<>\r\nRCPT", 0, 0, "a\r\n", 6, 0, NULL },
        { ".\r\n.\r\n", 0, 0, "", 3, 0, NULL },
        { "..a\r\n.\r\n", 0, 0, ".a\r\n", 8, 0, NULL },
        { "a\r\n..\r\n.\r\n", 0, 0, "a\r\n.\r\n", 10, 0, NULL },
        { "a\r\n...\r\n.\r\n", 0, 0, "a\r\n..\r\n", 11, 0, NULL },
        { ".x\r\n.\r\n", 0, 0, "x\r\n", 7, 0, NULL },
        { "a.\r\n.\r\n", 0, 0, "a.\r\n", 7, 0, NULL },
        { "a\r\n. \r\n.\r\n", 0, 0, "a\r\n \r\n", 10, 0, NULL },
        { "a\r\n\r\n\r\n.\r\n", 0, 0, "a\r\n\r\n\r\n", 10, 0, NULL },
        { "a\r\n.\r\n.\r\n", 0, 0, "a\r\n", 6, 0, NULL },
        /* no end yet */
        { "", 0, 0, "", -1, 0, NULL },
        { "a\r\n.", 0, 0, "a\r\n", -1, 0, NULL },
        { "a\r\n.\r", 0, 0, "a\r\n", -1, 0, NULL },
        { "a\r\n.x", 0, 0, "a\r\nx", -1, 0, NULL },
        { "a.\r\n", 0, 0, "a.\r\n", -1, 0, NULL },
        /* smuggling: never an end; rejected by default */
        { "a\n.\nb\r\n.\r\n", 0, 0, "a", 10, BARE },
        { "a\r\n.\nb\r\n.\r\n", 0, 0, "a\r\n.", 11, BARE },
        { "a\n.\r\nb\r\n.\r\n", 0, 0, "a", 11, BARE },
        { "a\r.\rb\r\n.\r\n", 0, 0, "a\r", 10, BARE },
        { "a\r\n.\rb\r\n.\r\n", 0, 0, "a\r\n.\r", 11, BARE },
        { "a\r\n.\r.\r\n.\r\n", 0, 0, "a\r\n.\r", 11, BARE },
        { "a\n.\n", 0, 0, "a", -1, BARE },
        { "a\r\n.\n", 0, 0, "a\r\n.", -1, BARE },
        { "a\n.\r\n", 0, 0, "a", -1, BARE },
        { "a\r.\r", 0, 0, "a\r", -1, BARE },
        { "\n.\n", 0, 0, "", -1, BARE },
        { "a\r\r\n.\r\n", 0, 0, "a\r", 7, BARE },
        /* the same, normalised */
        { "a\n.\nb\r\n.\r\n", NORM, 0, "a\r\n.\r\nb\r\n", 10, 0, NULL },
        { "a\r\n.\nb\r\n.\r\n", NORM, 0, "a\r\n.\r\nb\r\n", 11, 0, NULL },
        { "a\n.\r\nb\r\n.\r\n", NORM, 0, "a\r\n.\r\nb\r\n", 11, 0, NULL },
        { "a\r.\rb\r\n.\r\n", NORM, 0, "a\r\n.\r\nb\r\n", 10, 0, NULL },
        { "a\r\n.\rb\r\n.\r\n", NORM, 0, "a\r\n.\r\nb\r\n", 11, 0, NULL },
        { "a\n..x\r\n.\r\n", NORM, 0, "a\r\n..x\r\n", 10, 0, NULL },
        { "a\n.\n", NORM, 0, "a\r\n.\r\n", -1, 0, NULL },
        { "a\r\r\n.\r\n", NORM, 0, "a\r\n\r\n", 7, 0, NULL },
        { "\n\r\n.\r\n", NORM, 0, "\r\n\r\n", 6, 0, NULL },
        /* size limit: counted after unstuffing, consumed to the end */
        { "1234\r\n.\r\n", 0, 6, "1234\r\n", 9, 0, NULL },
        { "1234\r\n.\r\n", 0, 5, "1234\r", 9, 552, "5.3.4" },
        { "..34\r\n.\r\n", 0, 6, ".34\r\n", 9, 0, NULL },
        { "123456789\r\nmore\r\n.\r\nQUIT\r\n", 0, 4, "1234", 20, 552, "5.3.4" },
        /* first problem wins */
        { "12\n3456\r\n.\r\n", 0, 4, "12", 12, BARE },
        { "123456\n\r\n.\r\n", 0, 4, "1234", 12, 552, "5.3.4" },
};

static void expect(const Case *c, const Result *res, const Out *o, const char *how) {
        size_t want_n = strlen(c->out);
        if (res->end != c->end)
                TAP_FAIL("%s \"%.60s\": end %ld, want %ld", how, c->in, res->end, c->end);
        if (res->code != c->code || (c->code && strcmp(res->enhanced, c->enhanced) != 0))
                TAP_FAIL("%s \"%.60s\": code %u, want %u", how, c->in, res->code, c->code);
        if (o->n != want_n || (want_n > 0 && memcmp(o->p, c->out, want_n) != 0))
                TAP_FAIL("%s \"%.60s\": output \"%.*s\" (%zu), want \"%s\"", how, c->in, (int) o->n, o->p, o->n,
                         c->out);
}

static Result run_case(const Case *c, const size_t *cuts, size_t ncuts, const char *how) {
        Out o = {};
        Result res = run(c->in, strlen(c->in), c->flags, c->max_size, cuts, ncuts, &o);
        expect(c, &res, &o, how);
        free(o.p);
        return res;
}

TEST(table_whole) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                Result res = run_case(&cases[i], NULL, 0, "whole");
                size_t n = strlen(cases[i].in);
                ASSERT_EQ(res.wire, cases[i].end < 0 ? (long) n : cases[i].end);
        }
        printf("# %zu cases\n", sizeof cases / sizeof cases[0]);
}

TEST(table_byte_by_byte) {
        size_t cuts[64];
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                size_t n = strlen(cases[i].in);
                ASSERT_TRUE(n < sizeof cuts / sizeof cuts[0]);
                for (size_t k = 0; k < n; k++)
                        cuts[k] = k + 1;
                run_case(&cases[i], cuts, n, "bytewise");
        }
}

TEST(table_every_split) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                size_t n = strlen(cases[i].in);
                for (size_t a = 0; a <= n; a++) {
                        size_t cuts1[1] = { a };
                        run_case(&cases[i], cuts1, 1, "2-way");
                        for (size_t b = a; b <= n; b++) {
                                size_t cuts2[2] = { a, b };
                                run_case(&cases[i], cuts2, 2, "3-way");
                        }
                }
        }
}

static void feed_all(SmtpDataReader *r, const char *s, size_t n, int want) {
        size_t used = 0;
        int k = smtp_data_feed(r, s, n, &used);
        ASSERT_EQ(k, want);
        if (want == 0)
                ASSERT_EQ(used, n);
}

TEST(smuggling_never_ends) {
        static const char *const attempts[] = {
                "\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r", "\r.\r\n", "\r\n.\r", "\n.\r", "\r\n.\r\r\n",
                "\n..\n", "\n.\n.\r\n", "\r.\n",
        };
        for (unsigned norm = 0; norm < 2; norm++)
                for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
                        Out o = {};
                        SmtpDataOptions opts = { .flags = norm ? NORM : 0, .sink = sink, .userdata = &o };
                        SmtpDataReader r;
                        smtp_data_reader_init(&r, &opts);
                        feed_all(&r, "x", 1, 0);
                        feed_all(&r, attempts[i], strlen(attempts[i]), 0);
                        ASSERT_FALSE(r.done);
                        feed_all(&r, "y", 1, 0);
                        ASSERT_FALSE(r.done);
                        /* the real end marker still works afterwards */
                        size_t used = 0;
                        ASSERT_EQ(smtp_data_feed(&r, "\r\n.\r\nNOOP\r\n", 11, &used), 1);
                        ASSERT_EQ(used, 5);
                        ASSERT_TRUE(r.done);
                        SmtpReplyError e;
                        if (norm) {
                                ASSERT_OK(smtp_data_result(&r, &e));
                                /* the output has only CRLF line ends */
                                for (size_t k = 0; k < o.n; k++) {
                                        if (o.p[k] == '\r')
                                                ASSERT_TRUE(k + 1 < o.n && o.p[k + 1] == '\n');
                                        if (o.p[k] == '\n')
                                                ASSERT_TRUE(k > 0 && o.p[k - 1] == '\r');
                                }
                        } else {
                                ASSERT_EQ(smtp_data_result(&r, &e), -EINVAL);
                                ASSERT_EQ(e.code, 550);
                                ASSERT_STREQ(e.enhanced, "5.6.11");
                        }
                        free(o.p);
                }
}

TEST(after_end) {
        SmtpDataOptions opts = {};
        SmtpDataReader r;
        smtp_data_reader_init(&r, &opts);
        size_t used = 99;
        ASSERT_EQ(smtp_data_feed(&r, ".\r\n", 3, &used), 1);
        ASSERT_EQ(used, 3);
        ASSERT_EQ(smtp_data_feed(&r, "QUIT\r\n", 6, &used), 1);
        ASSERT_EQ(used, 0);
        ASSERT_EQ(r.wire_bytes, 3);
        ASSERT_EQ(r.size, 0);
        ASSERT_EQ(smtp_data_feed(&r, NULL, 0, NULL), 1);
}

static char *repeat(char c, size_t n) {
        char *s = malloc(n + 1);
        if (!s)
                abort();
        memset(s, c, n);
        s[n] = 0;
        return s;
}

static Result run_string(const char *s, size_t n, unsigned flags, Out *o) {
        return run(s, n, flags, 0, NULL, 0, o);
}

TEST(line_length) {
        /* 998 + CRLF = 1000 ok, 999 + CRLF not; a stuffed dot does not count */
        for (size_t len = 997; len <= 1000; len++)
                for (unsigned stuffed = 0; stuffed < 2; stuffed++)
                        for (unsigned allow = 0; allow < 2; allow++) {
                                char *body = repeat('x', len);
                                char *msg = malloc(len + 16);
                                if (!msg)
                                        abort();
                                int m = sprintf(msg, "%s%s\r\n.\r\n", stuffed ? "." : "", body);
                                if (stuffed)
                                        msg[1] = '.'; /* the line starts "..", one dot is content */
                                Out o = {};
                                Result res = run_string(msg, (size_t) m, allow ? SMTP_DATA_ALLOW_LONG_LINES : 0,
                                                        &o);
                                ASSERT_EQ(res.end, m);
                                if (len <= 998 || allow)
                                        ASSERT_EQ(res.code, 0);
                                else {
                                        ASSERT_EQ(res.code, 500);
                                        ASSERT_STREQ(res.enhanced, "5.5.6");
                                }
                                ASSERT_EQ(res.size, len + 2);
                                ASSERT_EQ(res.lines, 1);
                                free(o.p);
                                free(body);
                                free(msg);
                        }
        /* many short lines are fine */
        Out o = {};
        const char *s = "a\r\nb\r\nc\r\n.\r\n";
        Result res = run_string(s, strlen(s), 0, &o);
        ASSERT_EQ(res.lines, 3);
        ASSERT_EQ(res.code, 0);
        free(o.p);
}

TEST(eight_bit_and_nul) {
        Out o = {};
        Result res = run_string("plain\r\n.\r\n", 10, 0, &o);
        ASSERT_FALSE(res.eight_bit);
        ASSERT_FALSE(res.has_nul);
        o.n = 0;
        res = run_string("gr\xc3\xbc\xc3\x9f\r\n.\r\n", 11, 0, &o);
        ASSERT_TRUE(res.eight_bit);
        ASSERT_FALSE(res.has_nul);
        o.n = 0;
        res = run_string("a\0b\r\n.\r\n", 8, 0, &o);
        ASSERT_FALSE(res.eight_bit);
        ASSERT_TRUE(res.has_nul);
        ASSERT_EQ(o.n, 5);
        ASSERT_EQ(res.end, 8);
        free(o.p);
}

TEST(large_message) {
        /* crosses the internal buffer many times; compare with the input */
        size_t lines = 5000, cap = lines * 40 + 8;
        char *in = malloc(cap), *want = malloc(cap);
        if (!in || !want)
                abort();
        size_t n = 0, w = 0;
        for (size_t i = 0; i < lines; i++) {
                char line[64];
                if (i % 7 == 0)
                        in[n++] = '.';
                int k = snprintf(line, sizeof line, "line %zu .\r\n", i);
                memcpy(in + n, line, (size_t) k);
                memcpy(want + w, line, (size_t) k);
                n += (size_t) k;
                w += (size_t) k;
        }
        memcpy(in + n, ".\r\n", 3);
        n += 3;
        size_t cuts[3] = { 1, 4097, n - 2 };
        for (unsigned variant = 0; variant < 2; variant++) {
                Out o = {};
                Result res = run(in, n, 0, 0, cuts, variant ? 3 : 0, &o);
                ASSERT_EQ(res.end, n);
                ASSERT_EQ(res.code, 0);
                ASSERT_EQ(res.lines, lines);
                ASSERT_EQ(o.n, w);
                ASSERT_TRUE(memcmp(o.p, want, w) == 0);
                ASSERT_TRUE(o.calls > 1);
                free(o.p);
        }
        free(in);
        free(want);
}

TEST(sink_error) {
        Out o = { .fail_with = -ENOSPC };
        SmtpDataOptions opts = { .sink = sink, .userdata = &o };
        SmtpDataReader r;
        smtp_data_reader_init(&r, &opts);
        size_t used;
        ASSERT_EQ(smtp_data_feed(&r, "abc\r\n", 5, &used), -ENOSPC);
        ASSERT_EQ(smtp_data_feed(&r, ".\r\n", 3, &used), -ENOSPC);
        ASSERT_EQ(used, 0);
}

TEST(bdat) {
        Out o = {};
        SmtpDataOptions opts = { .sink = sink, .userdata = &o };
        SmtpDataReader r;
        smtp_data_reader_init_bdat(&r, &opts);
        size_t used = 99;
        /* nothing announced yet */
        ASSERT_EQ(smtp_data_feed(&r, "x", 1, &used), 1);
        ASSERT_EQ(used, 0);
        ASSERT_OK(smtp_data_reader_bdat(&r, 8, false));
        ASSERT_EQ(smtp_data_reader_bdat(&r, 1, false), -EINVAL); /* unfinished */
        ASSERT_EQ(smtp_data_feed(&r, "..\r\n", 4, &used), 0);
        ASSERT_EQ(used, 4);
        ASSERT_EQ(smtp_data_feed(&r, ".\r\n\nBDAT 3 LAST\r\n", 17, &used), 1);
        ASSERT_EQ(used, 4);
        ASSERT_FALSE(r.done);
        ASSERT_OK(smtp_data_reader_bdat(&r, 3, true));
        const char *rest = "a\rbQUIT\r\n";
        for (size_t i = 0; i < 2; i++) {
                ASSERT_EQ(smtp_data_feed(&r, rest + i, 1, &used), 0);
                ASSERT_EQ(used, 1);
        }
        ASSERT_EQ(smtp_data_feed(&r, rest + 2, strlen(rest) - 2, &used), 1);
        ASSERT_EQ(used, 1);
        ASSERT_TRUE(r.done);
        ASSERT_EQ(smtp_data_reader_bdat(&r, 1, false), -EINVAL); /* after LAST */
        ASSERT_EQ(o.n, 11);
        ASSERT_TRUE(memcmp(o.p, "..\r\n.\r\n\na\rb", 11) == 0);
        ASSERT_EQ(r.size, 11);
        ASSERT_EQ(r.wire_bytes, 11);
        ASSERT_EQ(r.lines, 3);
        SmtpReplyError e;
        ASSERT_OK(smtp_data_result(&r, &e));
        free(o.p);

        /* BDAT 0 LAST */
        smtp_data_reader_init_bdat(&r, &opts);
        ASSERT_OK(smtp_data_reader_bdat(&r, 0, true));
        ASSERT_TRUE(r.done);
        ASSERT_EQ(smtp_data_feed(&r, "QUIT", 4, &used), 1);
        ASSERT_EQ(used, 0);

        /* not in DATA mode */
        smtp_data_reader_init(&r, &opts);
        ASSERT_EQ(smtp_data_reader_bdat(&r, 1, true), -EINVAL);
}

TEST(bdat_limits) {
        /* size limit over several chunks; reading goes on to the end */
        Out o = {};
        SmtpDataOptions opts = { .max_size = 5, .sink = sink, .userdata = &o };
        SmtpDataReader r;
        SmtpReplyError e;
        size_t used;
        smtp_data_reader_init_bdat(&r, &opts);
        ASSERT_OK(smtp_data_reader_bdat(&r, 4, false));
        ASSERT_EQ(smtp_data_feed(&r, "abcd", 4, &used), 1);
        ASSERT_OK(smtp_data_result(&r, &e));
        ASSERT_OK(smtp_data_reader_bdat(&r, 4, true));
        ASSERT_EQ(smtp_data_feed(&r, "efgh", 4, &used), 1);
        ASSERT_EQ(used, 4);
        ASSERT_TRUE(r.done);
        ASSERT_EQ(smtp_data_result(&r, &e), -EINVAL);
        ASSERT_EQ(e.code, 552);
        ASSERT_STREQ(e.enhanced, "5.3.4");
        ASSERT_EQ(r.size, 8);
        ASSERT_EQ(o.n, 5);
        free(o.p);

        /* long lines: rejected unless allowed (BINARYMIME) */
        char *big = repeat('z', 2000);
        for (unsigned allow = 0; allow < 2; allow++) {
                opts = (SmtpDataOptions) { .flags = allow ? SMTP_DATA_ALLOW_LONG_LINES : 0 };
                smtp_data_reader_init_bdat(&r, &opts);
                ASSERT_OK(smtp_data_reader_bdat(&r, 2000, true));
                ASSERT_EQ(smtp_data_feed(&r, big, 2000, &used), 1);
                ASSERT_EQ(smtp_data_result(&r, &e), allow ? 0 : -EINVAL);
                if (!allow)
                        ASSERT_EQ(e.code, 500);
        }
        free(big);
}

int main(void) {
        return tap_run();
}
