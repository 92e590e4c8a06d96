/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "smtpd-command.h"
#include "tap.h"

#define U8 SMTP_PARSE_SMTPUTF8
#define B8 SMTP_PARSE_8BITMIME
#define BIN SMTP_PARSE_BINARYMIME
#define DSN SMTP_PARSE_DSN
#define SZ SMTP_PARSE_SIZE
#define U8T SMTP_PARSE_UTF8_TRANSACTION
#define ALL (U8 | B8 | BIN | DSN | SZ)

typedef struct Case {
        const char *line;
        unsigned flags;
        SmtpVerb verb;          /* on success */
        unsigned code;          /* 0: must parse */
        const char *enhanced;
} Case;

#define OK(l, f, v) { l, f, SMTP_VERB_##v, 0, NULL }
#define NO(l, f, c, e) { l, f, SMTP_VERB_UNKNOWN, c, e }

static const Case cases[] = {
        /* verbs */
        OK("QUIT", 0, QUIT),
        OK("quit", 0, QUIT),
        OK("QuIt ", 0, QUIT),
        OK("RSET", 0, RSET),
        OK("DATA", 0, DATA),
        OK("STARTTLS", 0, STARTTLS),
        OK("NOOP", 0, NOOP),
        OK("NOOP anything goes here", 0, NOOP),
        OK("HELP", 0, HELP),
        OK("HELP MAIL", 0, HELP),
        OK("VRFY postmaster", 0, VRFY),
        OK("EXPN staff", 0, EXPN),
        NO("", 0, 500, "5.5.2"),
        NO("   ", 0, 500, "5.5.2"),
        NO("FOO", 0, 500, "5.5.2"),
        NO("MAILFROM:<a@b.c>", 0, 500, "5.5.2"),
        NO("QUITX", 0, 500, "5.5.2"),
        NO("\xc3\xa4", ALL, 500, "5.5.2"),
        NO(" QUIT", 0, 500, "5.5.2"),
        NO("DATA x", 0, 501, "5.5.4"),
        NO("RSET now", 0, 501, "5.5.4"),
        NO("QUIT please", 0, 501, "5.5.4"),
        NO("STARTTLS x", 0, 501, "5.5.4"),
        NO("VRFY", 0, 501, "5.5.4"),
        NO("EXPN", 0, 501, "5.5.4"),
        NO("VRFY j\xc3\xb6rg", 0, 501, "5.5.4"),
        OK("VRFY j\xc3\xb6rg", U8, VRFY),
        NO("VRFY \xff", U8, 501, "5.5.4"),
        NO("NOOP a\x01", 0, 501, "5.5.4"),
        NO("NOOP a\rb", 0, 500, "5.5.2"),
        NO("NOOP a\nb", 0, 500, "5.5.2"),
        NO("NOOP", SMTP_PARSE_LINE_TOO_LONG, 500, "5.5.6"),

        /* HELO / EHLO */
        OK("HELO example.com", 0, HELO),
        OK("EHLO mail.example.org", 0, EHLO),
        OK("ehlo localhost", 0, EHLO),
        OK("EHLO a-b.c-d.e", 0, EHLO),
        OK("EHLO 123.example", 0, EHLO),
        OK("EHLO xn--bcher-kva.example", 0, EHLO),
        OK("EHLO [192.0.2.1]", 0, EHLO),
        OK("EHLO [0.0.0.0]", 0, EHLO),
        OK("EHLO [255.255.255.255]", 0, EHLO),
        OK("EHLO [IPv6:2001:db8::1]", 0, EHLO),
        OK("EHLO [ipv6:::1]", 0, EHLO),
        OK("EHLO [IPv6:::ffff:192.0.2.1]", 0, EHLO),
        OK("EHLO example.com   ", 0, EHLO),
        OK("EHLO b\xc3\xbc" "cher.example", U8, EHLO),
        NO("EHLO b\xc3\xbc" "cher.example", 0, 501, "5.5.4"),
        NO("EHLO", 0, 501, "5.5.4"),
        NO("HELO", 0, 501, "5.5.4"),
        NO("EHLO a b", 0, 501, "5.5.4"),
        NO("EHLO -a.com", 0, 501, "5.5.4"),
        NO("EHLO a-.com", 0, 501, "5.5.4"),
        NO("EHLO a..com", 0, 501, "5.5.4"),
        NO("EHLO .a.com", 0, 501, "5.5.4"),
        NO("EHLO a.com.", 0, 501, "5.5.4"),
        NO("EHLO a_b.com", 0, 501, "5.5.4"),
        NO("EHLO [256.1.1.1]", 0, 501, "5.5.4"),
        NO("EHLO [1.2.3]", 0, 501, "5.5.4"),
        NO("EHLO [1.2.3.4.5]", 0, 501, "5.5.4"),
        NO("EHLO [1.2.3.0004]", 0, 501, "5.5.4"),
        NO("EHLO [IPv6:zz::1]", 0, 501, "5.5.4"),
        NO("EHLO [IPv6:1.2.3.4]", 0, 501, "5.5.4"),
        NO("EHLO [x-tag:foo]", 0, 501, "5.5.4"),
        NO("EHLO [192.0.2.1", 0, 501, "5.5.4"),
        NO("EHLO []", 0, 501, "5.5.4"),
        NO("EHLO \xff.example", U8, 501, "5.5.4"),

        /* MAIL */
        OK("MAIL FROM:<a@b.c>", 0, MAIL),
        OK("mail from:<a@b.c>", 0, MAIL),
        OK("MAIL FROM: <a@b.c>", 0, MAIL),
        OK("MAIL FROM:<>", 0, MAIL),
        OK("MAIL FROM:<> ", 0, MAIL),
        OK("MAIL FROM:<@r1.example,@r2.example:a@b.c>", 0, MAIL),
        OK("MAIL FROM:<\"a b\"@b.c>", 0, MAIL),
        OK("MAIL FROM:<\"a\\\"b\"@b.c>", 0, MAIL),
        OK("MAIL FROM:<\"\"@b.c>", 0, MAIL),
        OK("MAIL FROM:<a.b.c@[192.0.2.1]>", 0, MAIL),
        OK("MAIL FROM:<a@[IPv6:2001:db8::2]>", 0, MAIL),
        OK("MAIL FROM:<!#$%&'*+-/=?^_`{|}~@b.c>", 0, MAIL),
        OK("MAIL FROM:<a@b.c> SIZE=1000", SZ, MAIL),
        OK("MAIL FROM:<a@b.c> size=0", SZ, MAIL),
        OK("MAIL FROM:<a@b.c> BODY=7BIT", 0, MAIL),
        OK("MAIL FROM:<a@b.c> BODY=8BITMIME", B8, MAIL),
        OK("MAIL FROM:<a@b.c> body=binarymime", BIN, MAIL),
        OK("MAIL FROM:<a@b.c> SMTPUTF8", U8, MAIL),
        OK("MAIL FROM:<a@b.c> RET=FULL ENVID=abc+2Bdef", DSN, MAIL),
        OK("MAIL FROM:<a@b.c> RET=hdrs", DSN, MAIL),
        OK("MAIL FROM:<a@b.c> AUTH=<>", 0, MAIL),
        OK("MAIL FROM:<a@b.c> AUTH=e+3Dmc2@example.com", 0, MAIL),
        OK("MAIL FROM:<a@b.c>  SIZE=1  BODY=8BITMIME  ", ALL, MAIL),
        OK("MAIL FROM:<j\xc3\xb6rg@b.c> SMTPUTF8", U8, MAIL),
        OK("MAIL FROM:<j\xc3\xb6rg@b\xc3\xbc" "cher.example> SMTPUTF8", U8, MAIL),
        OK("MAIL FROM:<\"j\xc3\xb6 rg\"@b.c> SMTPUTF8", U8, MAIL),
        NO("MAIL", 0, 501, "5.5.4"),
        NO("MAIL FROM:", 0, 501, "5.5.4"),
        NO("MAIL FROM", 0, 501, "5.5.4"),
        NO("MAIL TO:<a@b.c>", 0, 501, "5.5.4"),
        NO("MAIL FROM:a@b.c", 0, 501, "5.5.4"),
        NO("MAIL FROM:  <a@b.c>", 0, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c", 0, 501, "5.1.7"),
        NO("MAIL FROM:<a@b.c>x", 0, 501, "5.1.7"),
        NO("MAIL FROM:<a..b@c.d>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<.a@c.d>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<a.@c.d>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<a b@c.d>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<a@>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<@b.c>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<a>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<postmaster>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<a@b@c.d>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<a@-b.c>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<a@[300.1.1.1]>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<a@[1.2.3.4>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<\"a@b.c>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<\"a\tb\"@b.c>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<@r1.example:>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<@r1.example,a@b.c>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<@:a@b.c>", 0, 501, "5.1.7"),
        NO("MAIL FROM:<\xc3@b.c> SMTPUTF8", U8, 501, "5.1.7"),
        NO("MAIL FROM:<a@b.c> SIZE=10", 0, 555, "5.5.4"),
        NO("MAIL FROM:<a@b.c> SIZE=abc", SZ, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> SIZE=", SZ, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> SIZE", SZ, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> SIZE=-1", SZ, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> SIZE=123456789012345678901", SZ, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> SIZE=1 SIZE=2", SZ, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> FOO=bar", ALL, 555, "5.5.4"),
        NO("MAIL FROM:<a@b.c> X-FOO", ALL, 555, "5.5.4"),
        NO("MAIL FROM:<a@b.c> =x", ALL, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> -X=1", ALL, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> SIZE=1=2", ALL, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> BODY=8BITMIME", 0, 555, "5.5.4"),
        NO("MAIL FROM:<a@b.c> BODY=BINARYMIME", B8, 555, "5.5.4"),
        NO("MAIL FROM:<a@b.c> BODY=9BIT", ALL, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> BODY=7BIT BODY=7BIT", ALL, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> SMTPUTF8", 0, 555, "5.5.4"),
        NO("MAIL FROM:<a@b.c> SMTPUTF8=yes", U8, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> RET=FULL", 0, 555, "5.5.4"),
        NO("MAIL FROM:<a@b.c> RET=NONE", DSN, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> ENVID=a+2b", DSN, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> ENVID=a+2", DSN, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> ENVID=a+", DSN, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> ENVID=+00", DSN, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> ENVID=+C3+A4", DSN, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> ENVID=", DSN, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> AUTH=", 0, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> AUTH", 0, 501, "5.5.4"),
        NO("MAIL FROM:<a@b.c> NOTIFY=NEVER", DSN, 555, "5.5.4"),
        NO("MAIL FROM:<a@b.c> ORCPT=rfc822;a@b.c", DSN, 555, "5.5.4"),
        NO("MAIL FROM:<a@b.c> ENVID=\xc3\xa4", DSN, 501, "5.5.4"),
        NO("MAIL FROM:<j\xc3\xb6rg@b.c>", U8, 553, "5.6.7"),
        NO("MAIL FROM:<a@b\xc3\xbc" "cher.example>", ALL, 553, "5.6.7"),
        NO("MAIL FROM:<j\xc3\xb6rg@b.c> SMTPUTF8", 0, 555, "5.5.4"),

        /* RCPT */
        OK("RCPT TO:<a@b.c>", 0, RCPT),
        OK("rcpt to: <a@b.c>", 0, RCPT),
        OK("RCPT TO:<Postmaster>", 0, RCPT),
        OK("RCPT TO:<postmaster>", 0, RCPT),
        OK("RCPT TO:<Postmaster@b.c>", 0, RCPT),
        OK("RCPT TO:<@r.example:a@b.c>", 0, RCPT),
        OK("RCPT TO:<a@b.c> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b.c", DSN, RCPT),
        OK("RCPT TO:<a@b.c> NOTIFY=never", DSN, RCPT),
        OK("RCPT TO:<a@b.c> NOTIFY=DELAY,SUCCESS,FAILURE", DSN, RCPT),
        OK("RCPT TO:<j\xc3\xb6rg@b.c>", U8T, RCPT),
        NO("RCPT TO:<>", 0, 501, "5.1.3"),
        NO("RCPT TO:<a>", 0, 501, "5.1.3"),
        NO("RCPT TO:<a@b.c>>", 0, 501, "5.1.3"),
        NO("RCPT TO:<a@b..c>", 0, 501, "5.1.3"),
        NO("RCPT TO:", 0, 501, "5.5.4"),
        NO("RCPT FROM:<a@b.c>", 0, 501, "5.5.4"),
        NO("RCPT TO:<a@b.c> NOTIFY=NEVER,SUCCESS", DSN, 501, "5.5.4"),
        NO("RCPT TO:<a@b.c> NOTIFY=FOO", DSN, 501, "5.5.4"),
        NO("RCPT TO:<a@b.c> NOTIFY=SUCCESS,SUCCESS", DSN, 501, "5.5.4"),
        NO("RCPT TO:<a@b.c> NOTIFY=SUCCESS,", DSN, 501, "5.5.4"),
        NO("RCPT TO:<a@b.c> NOTIFY=SUCCESS NOTIFY=DELAY", DSN, 501, "5.5.4"),
        NO("RCPT TO:<a@b.c> NOTIFY=SUCCESS", 0, 555, "5.5.4"),
        NO("RCPT TO:<a@b.c> ORCPT=rfc822", DSN, 501, "5.5.4"),
        NO("RCPT TO:<a@b.c> ORCPT=;a@b.c", DSN, 501, "5.5.4"),
        NO("RCPT TO:<a@b.c> ORCPT=rfc 822;a", DSN, 501, "5.5.4"),
        NO("RCPT TO:<a@b.c> ORCPT=rfc822;a+ZZ", DSN, 501, "5.5.4"),
        NO("RCPT TO:<a@b.c> SIZE=10", ALL, 555, "5.5.4"),
        NO("RCPT TO:<a@b.c> AUTH=<>", ALL, 555, "5.5.4"),
        NO("RCPT TO:<a@b.c> SMTPUTF8", ALL, 555, "5.5.4"),
        NO("RCPT TO:<j\xc3\xb6rg@b.c>", ALL, 553, "5.6.7"),

        /* BDAT */
        OK("BDAT 100", 0, BDAT),
        OK("BDAT 0 LAST", 0, BDAT),
        OK("bdat 5 last", 0, BDAT),
        OK("BDAT 18446744073709551615", 0, BDAT),
        NO("BDAT", 0, 501, "5.5.4"),
        NO("BDAT x", 0, 501, "5.5.4"),
        NO("BDAT -1", 0, 501, "5.5.4"),
        NO("BDAT 10 FIRST", 0, 501, "5.5.4"),
        NO("BDAT 10LAST", 0, 501, "5.5.4"),
        NO("BDAT 10 LAST x", 0, 501, "5.5.4"),
        NO("BDAT 18446744073709551616", 0, 501, "5.5.4"),

        /* AUTH */
        OK("AUTH PLAIN", 0, AUTH),
        OK("AUTH PLAIN AGFAAGI=", 0, AUTH),
        OK("AUTH PLAIN =", 0, AUTH),
        OK("auth login", 0, AUTH),
        OK("AUTH SCRAM-SHA-256", 0, AUTH),
        NO("AUTH", 0, 501, "5.5.4"),
        NO("AUTH P@AIN", 0, 501, "5.5.4"),
        NO("AUTH ABCDEFGHIJKLMNOPQRSTU", 0, 501, "5.5.4"),
        NO("AUTH PLAIN !!!!", 0, 501, "5.5.2"),
        NO("AUTH PLAIN abc", 0, 501, "5.5.2"),
        NO("AUTH PLAIN ab=c", 0, 501, "5.5.2"),
        NO("AUTH PLAIN a===", 0, 501, "5.5.2"),
        NO("AUTH PLAIN AGFAAGI= x", 0, 501, "5.5.2"),
};

static void check(const char *line, size_t len, const Case *c) {
        SmtpCommand cmd;
        SmtpReplyError e = {};
        int r = smtp_command_parse(line, len, c->flags, &cmd, &e);
        if (c->code == 0) {
                if (r != 0)
                        TAP_FAIL("\"%.200s\": want success, got %d %u %s %s", c->line, r, e.code,
                                 e.enhanced ? e.enhanced : "", e.text ? e.text : "");
                if (cmd.verb != c->verb)
                        TAP_FAIL("\"%.200s\": verb %s, want %s", c->line, smtp_verb_to_string(cmd.verb),
                                 smtp_verb_to_string(c->verb));
        } else {
                if (r != -EINVAL)
                        TAP_FAIL("\"%.200s\": want %u %s, got %d", c->line, c->code, c->enhanced, r);
                if (e.code != c->code || !e.enhanced || strcmp(e.enhanced, c->enhanced) != 0 || !e.text ||
                    !e.text[0])
                        TAP_FAIL("\"%.200s\": want %u %s, got %u %s", c->line, c->code, c->enhanced, e.code,
                                 e.enhanced ? e.enhanced : "(null)");
        }
}

TEST(table) {
        volatile unsigned bad = 0;
        for (volatile size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                /* report every failing row, not only the first */
                jmp_buf saved;
                memcpy(saved, tap_jmp, sizeof saved);
                if (setjmp(tap_jmp) == 0)
                        check(cases[i].line, strlen(cases[i].line), &cases[i]);
                else {
                        printf("# %s\n", tap_reason);
                        bad++;
                }
                memcpy(tap_jmp, saved, sizeof saved);
        }
        printf("# %zu table cases\n", sizeof cases / sizeof cases[0]);
        if (bad > 0)
                TAP_FAIL("%u of %zu table cases failed", bad, sizeof cases / sizeof cases[0]);
}

static SmtpCommand parse_ok(const char *line, unsigned flags) {
        SmtpCommand c;
        SmtpReplyError e = {};
        int r = smtp_command_parse(line, strlen(line), flags, &c, &e);
        if (r != 0)
                TAP_FAIL("\"%.200s\": %d %u %s", line, r, e.code, e.enhanced ? e.enhanced : "");
        return c;
}

static void want_err(const char *line, size_t len, unsigned flags, unsigned code, const char *enh) {
        Case c = { .line = "(built)", .flags = flags, .code = code, .enhanced = enh };
        check(line, len, &c);
}

TEST(nul_and_cr) {
        want_err("NOOP\0x", 6, 0, 500, "5.5.2");
        want_err("\0", 1, 0, 500, "5.5.2");
        want_err("MAIL FROM:<a\0@b.c>", 18, 0, 500, "5.5.2");
        want_err("QUIT\r", 5, 0, 500, "5.5.2");
        want_err("QUIT\n", 5, 0, 500, "5.5.2");
        /* the length is what counts, not a NUL terminator */
        SmtpCommand c;
        SmtpReplyError e;
        ASSERT_EQ(smtp_command_parse("QUITTING", 4, 0, &c, &e), 0);
        ASSERT_EQ(c.verb, SMTP_VERB_QUIT);
        ASSERT_EQ(smtp_command_parse(NULL, 0, 0, &c, &e), -EINVAL);
        ASSERT_EQ(e.code, 500);
}

TEST(line_length) {
        char buf[600];
        memcpy(buf, "NOOP ", 5);
        memset(buf + 5, 'x', sizeof buf - 5);
        SmtpCommand c;
        SmtpReplyError e;
        ASSERT_EQ(smtp_command_parse(buf, 510, 0, &c, &e), 0);
        ASSERT_EQ(strlen(c.arg), 505);
        want_err(buf, 511, 0, 500, "5.5.6");
        want_err(buf, sizeof buf, 0, 500, "5.5.6");
        /* even a well-formed short command when the caller says it was cut */
        want_err("QUIT", 4, SMTP_PARSE_LINE_TOO_LONG, 500, "5.5.6");
}

static void build_path(char *buf, size_t bufsize, const char *verb, size_t local, size_t domain) {
        size_t o = (size_t) snprintf(buf, bufsize, "%s:<", verb);
        memset(buf + o, 'l', local);
        o += local;
        buf[o++] = '@';
        /* labels of up to 63 octets */
        for (size_t i = 0; i < domain; i++)
                buf[o++] = (i % 64 == 63) ? '.' : 'd';
        buf[o++] = '>';
        buf[o] = 0;
}

TEST(address_limits) {
        char buf[1024];
        SmtpCommand c;

        build_path(buf, sizeof buf, "MAIL FROM", 64, 20);
        c = parse_ok(buf, 0);
        ASSERT_EQ(strlen(c.path.local), 64);
        build_path(buf, sizeof buf, "MAIL FROM", 65, 20);
        want_err(buf, strlen(buf), 0, 501, "5.1.7");
        build_path(buf, sizeof buf, "RCPT TO", 65, 20);
        want_err(buf, strlen(buf), 0, 501, "5.1.3");

        /* label of 63 ok, 64 not */
        build_path(buf, sizeof buf, "RCPT TO", 1, 63);
        parse_ok(buf, 0);
        snprintf(buf, sizeof buf, "RCPT TO:<a@%064d.example>", 0);
        want_err(buf, strlen(buf), 0, 501, "5.1.3");

        /* whole path: "<" + 64 + "@" + 189 + ">" = 256 ok, 257 not */
        build_path(buf, sizeof buf, "MAIL FROM", 64, 189);
        c = parse_ok(buf, 0);
        ASSERT_EQ(strlen(c.path.address), 254);
        build_path(buf, sizeof buf, "MAIL FROM", 64, 190);
        want_err(buf, strlen(buf), 0, 501, "5.1.7");

        /* domain of 255 ok with a short local part, 256 not */
        build_path(buf, sizeof buf, "RCPT TO", 1, 251);
        parse_ok(buf, 0);
        build_path(buf, sizeof buf, "RCPT TO", 1, 256);
        want_err(buf, strlen(buf), 0, 501, "5.1.3");

        /* EHLO domain length */
        char h[300] = "EHLO ";
        for (size_t i = 0; i < 255; i++)
                h[5 + i] = (i % 64 == 63) ? '.' : 'h';
        h[5 + 255] = 0;
        parse_ok(h, 0);
        h[5 + 255] = 'h';
        h[5 + 256] = 0;
        want_err(h, strlen(h), 0, 501, "5.5.4");
}

TEST(mail_fields) {
        SmtpCommand c = parse_ok("mail from: <@r1.example,@[192.0.2.9]:\"x y\"@Example.COM> size=12345 "
                                 "BODY=8bitmime RET=HDRS ENVID=q+2Bq SMTPUTF8 AUTH=<>",
                                 ALL);
        ASSERT_EQ(c.verb, SMTP_VERB_MAIL);
        ASSERT_FALSE(c.path.null);
        ASSERT_STREQ(c.path.local, "\"x y\"");
        ASSERT_STREQ(c.path.domain, "Example.COM");
        ASSERT_STREQ(c.path.address, "\"x y\"@Example.COM");
        ASSERT_TRUE(c.has_size);
        ASSERT_EQ(c.size, 12345);
        ASSERT_EQ(c.body, SMTP_BODY_8BITMIME);
        ASSERT_EQ(c.ret, SMTP_RET_HDRS);
        ASSERT_TRUE(c.has_envid);
        ASSERT_STREQ(c.envid, "q+q");
        ASSERT_TRUE(c.smtputf8);
        ASSERT_FALSE(c.path.utf8);

        c = parse_ok("MAIL FROM:<>", 0);
        ASSERT_TRUE(c.path.null);
        ASSERT_STREQ(c.path.address, "");
        ASSERT_FALSE(c.has_size);
        ASSERT_EQ(c.body, SMTP_BODY_UNSPECIFIED);
        ASSERT_EQ(c.ret, SMTP_RET_UNSPECIFIED);

        c = parse_ok("MAIL FROM:<a@b.c> SIZE=99999999999999999999", SZ);
        ASSERT_EQ(c.size, UINT64_MAX);

        c = parse_ok("MAIL FROM:<j\xc3\xb6rg@b.c> SMTPUTF8", U8);
        ASSERT_TRUE(c.path.utf8);
        ASSERT_STREQ(c.path.local, "j\xc3\xb6rg");

        c = parse_ok("MAIL FROM:<a@[IPv6:2001:db8::2]>", 0);
        ASSERT_STREQ(c.path.domain, "[IPv6:2001:db8::2]");
}

TEST(rcpt_fields) {
        SmtpCommand c = parse_ok("RCPT TO:<a@b.c> NOTIFY=success,Delay ORCPT=rfc822;a+2Bb+40b.c", DSN);
        ASSERT_STREQ(c.path.address, "a@b.c");
        ASSERT_EQ(c.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_DELAY);
        ASSERT_TRUE(c.has_orcpt);
        ASSERT_STREQ(c.orcpt_type, "rfc822");
        ASSERT_STREQ(c.orcpt, "a+b@b.c");

        c = parse_ok("RCPT TO:<a@b.c> NOTIFY=NEVER", DSN);
        ASSERT_EQ(c.notify, SMTP_NOTIFY_NEVER);
        c = parse_ok("RCPT TO:<a@b.c>", DSN);
        ASSERT_EQ(c.notify, 0);
        ASSERT_FALSE(c.has_orcpt);

        c = parse_ok("RCPT TO:<PostMaster>", 0);
        ASSERT_TRUE(c.path.postmaster);
        ASSERT_STREQ(c.path.address, "PostMaster");
        c = parse_ok("RCPT TO:<@a.example,@b.example:x@y.z>", 0);
        ASSERT_STREQ(c.path.address, "x@y.z");
        ASSERT_FALSE(c.path.postmaster);
}

TEST(other_fields) {
        SmtpCommand c = parse_ok("EHLO [IPv6:2001:db8::1]", 0);
        ASSERT_STREQ(c.arg, "[IPv6:2001:db8::1]");
        c = parse_ok("HELO  mx.example  ", 0);
        ASSERT_STREQ(c.arg, "mx.example");
        c = parse_ok("BDAT 4096", 0);
        ASSERT_EQ(c.chunk_size, 4096);
        ASSERT_FALSE(c.last);
        c = parse_ok("BDAT 0 last", 0);
        ASSERT_EQ(c.chunk_size, 0);
        ASSERT_TRUE(c.last);
        c = parse_ok("BDAT 18446744073709551615 LAST", 0);
        ASSERT_EQ(c.chunk_size, UINT64_MAX);
        c = parse_ok("auth plain AGFAAGI=", 0);
        ASSERT_STREQ(c.mechanism, "PLAIN");
        ASSERT_TRUE(c.has_initial_response);
        ASSERT_STREQ(c.initial_response, "AGFAAGI=");
        c = parse_ok("AUTH LOGIN", 0);
        ASSERT_FALSE(c.has_initial_response);
        c = parse_ok("VRFY  John Smith ", 0);
        ASSERT_STREQ(c.arg, "John Smith");
        c = parse_ok("NOOP", 0);
        ASSERT_STREQ(c.arg, "");
        smtp_command_done(&c);
        ASSERT_EQ(c.verb, SMTP_VERB_UNKNOWN);
}

TEST(xtext) {
        char out[16];
        ASSERT_EQ(smtp_xtext_decode("abc", 3, out, sizeof out), 3);
        ASSERT_STREQ(out, "abc");
        ASSERT_EQ(smtp_xtext_decode("a+2Bb+3D", 8, out, sizeof out), 4);
        ASSERT_STREQ(out, "a+b=");
        ASSERT_EQ(smtp_xtext_decode("+41", 3, out, sizeof out), 1);
        ASSERT_STREQ(out, "A");
        ASSERT_EQ(smtp_xtext_decode("", 0, out, sizeof out), -EINVAL);
        ASSERT_EQ(smtp_xtext_decode("a=b", 3, out, sizeof out), -EINVAL);
        ASSERT_EQ(smtp_xtext_decode("a b", 3, out, sizeof out), -EINVAL);
        ASSERT_EQ(smtp_xtext_decode("+4", 2, out, sizeof out), -EINVAL);
        ASSERT_EQ(smtp_xtext_decode("+4g", 3, out, sizeof out), -EINVAL);
        ASSERT_EQ(smtp_xtext_decode("+4a", 3, out, sizeof out), -EINVAL);
        ASSERT_EQ(smtp_xtext_decode("a\x80", 2, out, sizeof out), -EINVAL);
        ASSERT_EQ(smtp_xtext_decode("0123456789abcdef", 16, out, sizeof out), -E2BIG);
        ASSERT_EQ(smtp_xtext_decode("0123456789abcde", 15, out, sizeof out), 15);
}

TEST(envid_orcpt_limits) {
        char buf[600];
        int o = snprintf(buf, sizeof buf, "MAIL FROM:<a@b.c> ENVID=");
        memset(buf + o, 'e', 100);
        buf[o + 100] = 0;
        SmtpCommand c = parse_ok(buf, DSN);
        ASSERT_EQ(strlen(c.envid), 100);
        buf[o + 100] = 'e';
        buf[o + 101] = 0;
        want_err(buf, strlen(buf), DSN, 501, "5.5.4");
}

TEST(verb_names) {
        ASSERT_STREQ(smtp_verb_to_string(SMTP_VERB_STARTTLS), "STARTTLS");
        ASSERT_STREQ(smtp_verb_to_string(SMTP_VERB_UNKNOWN), "UNKNOWN");
        ASSERT_STREQ(smtp_verb_to_string(_SMTP_VERB_MAX), "UNKNOWN");
}

int main(void) {
        return tap_run();
}
