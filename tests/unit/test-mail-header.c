/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "mail-header.h"
#include "tap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(MailHeaders *, mail_headers_free);

typedef struct Case {
        const char *input;
        int want;               /* 0 or the error */
        size_t n_fields;
        size_t body_offset;     /* where the body starts; (size_t)-1: the end */
} Case;

static const Case cases[] = {
        { "", 0, 0, 0 },
        { "\r\n", 0, 0, 2 },
        { "\n", 0, 0, 1 },
        { "\r\nbody", 0, 0, 2 },
        { "A: b\r\n\r\nbody", 0, 1, 8 },
        { "A: b\n\nbody", 0, 1, 6 },
        { "A: b", 0, 1, 4 },
        { "A: b\r\n", 0, 1, 6 },
        { "A: b\r\n c\r\n\td\r\nB:e\r\n\r\n", 0, 2, 21 },
        { "From : x\r\n\r\n", 0, 1, 12 },
        { "X-Empty:\r\n\r\n", 0, 1, 12 },
        { "A:\r\n \r\n\r\n", 0, 1, 9 },
        { " A: b\r\n\r\n", -EBADMSG, 0, 0 },
        { "no colon\r\n\r\n", -EBADMSG, 0, 0 },
        { ": empty name\r\n\r\n", -EBADMSG, 0, 0 },
        { "A b: c\r\n\r\n", -EBADMSG, 0, 0 },
        { "A\x01: c\r\n\r\n", -EBADMSG, 0, 0 },
        { "Fr\xc3\xb6m: c\r\n\r\n", -EBADMSG, 0, 0 },
        { "A: b\r\nbody without blank line\r\n", -EBADMSG, 0, 0 },
};

TEST(table) {
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const Case *c = &cases[i];
                _cleanup_(mail_headers_freep) MailHeaders *h = NULL;
                size_t off = 0, len = strlen(c->input);
                int r = mail_headers_parse(c->input, len, NULL, &h, &off);
                if (r != c->want)
                        TAP_FAIL("case %zu: got %d, want %d", i, r, c->want);
                if (r < 0)
                        continue;
                ASSERT_EQ(mail_headers_count(h), c->n_fields);
                if (off != c->body_offset)
                        TAP_FAIL("case %zu: body at %zu, want %zu", i, off, c->body_offset);
        }
}

TEST(fields_keep_raw_bytes) {
        _cleanup_(mail_headers_freep) MailHeaders *h = NULL;
        const char *m = "Subject:  Hello\r\n  World \r\nfrom: a@b\n\r\nbody\r\n";
        size_t off;

        ASSERT_OK(mail_headers_parse(m, strlen(m), NULL, &h, &off));
        ASSERT_EQ(mail_headers_count(h), 2);
        const MailHeaderField *f = mail_headers_get(h, 0);
        ASSERT_EQ(f->raw_len, strlen("Subject:  Hello\r\n  World \r\n"));
        ASSERT_TRUE(memcmp(f->raw, "Subject:  Hello\r\n  World \r\n", f->raw_len) == 0);
        ASSERT_EQ(f->name_len, 7);
        ASSERT_EQ(f->value_len, strlen("  Hello\r\n  World "));
        ASSERT_TRUE(memcmp(f->value, "  Hello\r\n  World ", f->value_len) == 0);
        /* a bare LF is stored as CRLF */
        f = mail_headers_get(h, 1);
        ASSERT_EQ(f->raw_len, strlen("from: a@b\r\n"));
        ASSERT_TRUE(memcmp(f->raw, "from: a@b\r\n", f->raw_len) == 0);
        ASSERT_TRUE(mail_header_field_is(f, "FROM"));
        ASSERT_FALSE(mail_header_field_is(f, "FRO"));
        ASSERT_NULL(mail_headers_get(h, 2));
        ASSERT_TRUE(memcmp(m + off, "body\r\n", 6) == 0);
}

TEST(last_field_gets_crlf) {
        _cleanup_(mail_headers_freep) MailHeaders *h = NULL;
        ASSERT_OK(mail_headers_parse("A: b", 4, NULL, &h, NULL));
        const MailHeaderField *f = mail_headers_get(h, 0);
        ASSERT_EQ(f->raw_len, 6);
        ASSERT_TRUE(memcmp(f->raw, "A: b\r\n", 6) == 0);
        ASSERT_EQ(f->value_len, 2);
}

/* Every split of the input into two chunks, and byte by byte, gives the
 * same fields and the same body offset. */
TEST(chunking) {
        const char *m = "A: 1\r\nB: 2\r\n 3\nC:4\r\n\r\nbody\r\n";
        size_t n = strlen(m);

        for (size_t split = 0; split <= n; split++) {
                _cleanup_(mail_headers_freep) MailHeaders *h = NULL;
                size_t used = 0, total;
                int r;

                ASSERT_OK(mail_headers_new(NULL, &h));
                r = mail_headers_feed(h, m, split, &used);
                ASSERT_OK(r);
                if (r == 1)
                        total = used;
                else {
                        r = mail_headers_feed(h, m + split, n - split, &used);
                        ASSERT_EQ(r, 1);
                        total = split + used;
                }
                ASSERT_EQ(total, 22);
                ASSERT_EQ(mail_headers_count(h), 3);
                ASSERT_EQ(mail_headers_get(h, 1)->raw_len, strlen("B: 2\r\n 3\r\n"));
                ASSERT_ERR(mail_headers_feed(h, "x", 1, &used), -EALREADY);
        }

        _cleanup_(mail_headers_freep) MailHeaders *h = NULL;
        ASSERT_OK(mail_headers_new(NULL, &h));
        size_t i, used = 0;
        for (i = 0; i < n; i++) {
                int r = mail_headers_feed(h, m + i, 1, &used);
                ASSERT_OK(r);
                if (r == 1)
                        break;
        }
        ASSERT_EQ(i, 21);
        ASSERT_EQ(mail_headers_count(h), 3);
}

TEST(limits) {
        MailHeaderLimits l = { .max_fields = 2, .max_field_size = 20, .max_total = 64 };
        _cleanup_(mail_headers_freep) MailHeaders *a = NULL, *b = NULL, *c = NULL, *d = NULL;

        ASSERT_ERR(mail_headers_parse("A: 1\r\nB: 2\r\nC: 3\r\n\r\n", 20, &l, &a, NULL), -E2BIG);
        ASSERT_OK(mail_headers_parse("A: 1\r\nB: 2\r\n\r\n", 14, &l, &a, NULL));
        /* one field over 20 bytes, also through continuation lines */
        ASSERT_ERR(mail_headers_parse("A: 12345678901234567890\r\n\r\n", 27, &l, &b, NULL), -E2BIG);
        ASSERT_ERR(mail_headers_parse("A: 1234567\r\n 1234567\r\n\r\n", 24, &l, &c, NULL), -E2BIG);
        /* the whole section, even when no line ever ends */
        char big[200];
        memset(big, 'x', sizeof big);
        big[0] = 'A';
        big[1] = ':';
        ASSERT_OK(mail_headers_new(&l, &d));
        ASSERT_ERR(mail_headers_feed(d, big, sizeof big, NULL), -E2BIG);
        /* and the error sticks */
        ASSERT_ERR(mail_headers_feed(d, "\r\n\r\n", 4, NULL), -E2BIG);
        ASSERT_ERR(mail_headers_end(d), -E2BIG);
}

TEST(select_bottom_up) {
        _cleanup_(mail_headers_freep) MailHeaders *h = NULL;
        const char *m =
                "Received: 1\r\n"    /* 0 */
                "From: a\r\n"        /* 1 */
                "Received: 2\r\n"    /* 2 */
                "Subject: s\r\n"     /* 3 */
                "received: 3\r\n"    /* 4 */
                "\r\n";
        const char *names[] = { "received", "from", "RECEIVED", "received", "received", "to", "from", "" };
        size_t lens[ELEMENTSOF(names)], idx[ELEMENTSOF(names)];

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                lens[i] = strlen(names[i]);
        ASSERT_OK(mail_headers_parse(m, strlen(m), NULL, &h, NULL));
        ASSERT_OK(mail_header_fields_select(mail_headers_fields(h), mail_headers_count(h), names, lens,
                                            ELEMENTSOF(names), idx));
        ASSERT_EQ(idx[0], 4);
        ASSERT_EQ(idx[1], 1);
        ASSERT_EQ(idx[2], 2);
        ASSERT_EQ(idx[3], 0);
        ASSERT_EQ(idx[4], SIZE_MAX);    /* no fourth Received */
        ASSERT_EQ(idx[5], SIZE_MAX);    /* no To */
        ASSERT_EQ(idx[6], SIZE_MAX);    /* From over-signed */
        ASSERT_EQ(idx[7], SIZE_MAX);    /* empty name */
}

TEST(not_complete) {
        _cleanup_(mail_headers_freep) MailHeaders *h = NULL;
        ASSERT_OK(mail_headers_new(NULL, &h));
        ASSERT_OK(mail_headers_feed(h, "A: b\r\n", 6, NULL));
        ASSERT_FALSE(mail_headers_complete(h));
        ASSERT_EQ(mail_headers_count(h), 0);
        ASSERT_NULL(mail_headers_get(h, 0));
        ASSERT_OK(mail_headers_end(h));
        ASSERT_TRUE(mail_headers_complete(h));
        ASSERT_EQ(mail_headers_count(h), 1);
}

int main(void) {
        return tap_run();
}
