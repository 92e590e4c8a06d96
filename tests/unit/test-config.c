/* SPDX-License-Identifier: MIT */
/* Tests for shared/config.c: the typed parsers, the file syntax, the
 * diagnostics' exact text, drop-in ordering on a real directory tree, and
 * the limits. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "macro.h"
#include "tap.h"

static const ConfigKey keys[] = {
        { "Queue", "MaxSize", CONFIG_SIZE },
        { "Queue", "Lifetime", CONFIG_DURATION },
        { "Queue", "Workers", CONFIG_UINT },
        { "Queue", "Directory", CONFIG_STRING },
        { "Smtpd", "Banner", CONFIG_STRING },
        { "Smtpd", "RequireTLS", CONFIG_BOOL },
        { "Smtpd", "Relay", CONFIG_ADDRESSES },
        { "Smtpd", "Domains", CONFIG_LIST },
        { "Smtpd", "Key", CONFIG_LIST_APPEND },
        {}
};

#define USEC_PER_SEC UINT64_C(1000000)

/* All diags as config_print_diags() writes them; caller frees. */
static char *diags_text(const Config *c) {
        char *buf = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&buf, &n);

        if (!f)
                return NULL;
        config_print_diags(c, f);
        fclose(f);
        return buf;
}

static int load(const char *text, size_t len, Config **ret) {
        return config_load_string("t.conf", text, len ? len : strlen(text), keys, ret);
}

/* ---- typed parsers ---- */

TEST(parse_bool) {
        static const struct {
                const char *s;
                int ret;
                bool want;
        } t[] = {
                { "yes", 0, true },    { "YES", 0, true },     { "Yes", 0, true },
                { "no", 0, false },    { "No", 0, false },     { "true", 0, true },
                { "TRUE", 0, true },   { "false", 0, false },  { "False", 0, false },
                { "on", 0, true },     { "ON", 0, true },      { "off", 0, false },
                { "oFF", 0, false },   { "1", 0, true },       { "0", 0, false },
                { " yes ", 0, true },
                { "maybe", -EINVAL, 0 }, { "", -EINVAL, 0 },  { "2", -EINVAL, 0 },
                { "yess", -EINVAL, 0 },  { "ye", -EINVAL, 0 }, { "y", -EINVAL, 0 },
                { "01", -EINVAL, 0 },    { "o", -EINVAL, 0 },  { "yes no", -EINVAL, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                bool b = !t[i].want;

                ASSERT_ERR(config_parse_bool(t[i].s, &b), t[i].ret);
                if (t[i].ret == 0)
                        ASSERT_EQ(b, t[i].want);
                else
                        ASSERT_EQ(b, !t[i].want); /* untouched on failure */
        }
}

TEST(parse_size) {
        static const struct {
                const char *s;
                int ret;
                uint64_t want;
        } t[] = {
                { "0", 0, 0 },
                { "1", 0, 1 },
                { "10B", 0, 10 },
                { "10b", 0, 10 },
                { "1K", 0, 1024 },
                { "1k", 0, 1024 },
                { "1KiB", 0, 1024 },
                { "1kib", 0, 1024 },
                { "1KB", 0, 1024 },
                { "10M", 0, 10485760 },
                { "10 M", 0, 10485760 },
                { "10\tMiB", 0, 10485760 },
                { "50m", 0, 52428800 },
                { "2G", 0, UINT64_C(2147483648) },
                { "2GiB", 0, UINT64_C(2147483648) },
                { "1T", 0, UINT64_C(1099511627776) },
                { "3tib", 0, UINT64_C(3298534883328) },
                { " 7K ", 0, 7168 },
                { "18446744073709551615", 0, UINT64_MAX },
                { "17179869183G", 0, UINT64_C(18446744072635809792) },
                { "16777215T", 0, UINT64_C(18446742974197923840) },
                /* malformed */
                { "", -EINVAL, 0 },
                { " ", -EINVAL, 0 },
                { "10X", -EINVAL, 0 },
                { "M", -EINVAL, 0 },
                { "-1", -EINVAL, 0 },
                { "+1", -EINVAL, 0 },
                { "1.5M", -EINVAL, 0 },
                { "10 M B", -EINVAL, 0 },
                { "10MiBs", -EINVAL, 0 },
                { "0x10", -EINVAL, 0 },
                { "1P", -EINVAL, 0 },
                { "1 0", -EINVAL, 0 },
                { "1K1", -EINVAL, 0 },
                { "99999999999999999999X", -EINVAL, 0 },
                /* overflow */
                { "18446744073709551616", -ERANGE, 0 },
                { "99999999999999999999999", -ERANGE, 0 },
                { "17179869184G", -ERANGE, 0 },
                { "16777216T", -ERANGE, 0 },
                { "18014398509481984K", -ERANGE, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                uint64_t v = 4242;

                ASSERT_ERR(config_parse_size(t[i].s, &v), t[i].ret);
                if (t[i].ret == 0)
                        ASSERT_TRUE(v == t[i].want);
                else
                        ASSERT_EQ(v, 4242);
        }
}

TEST(parse_duration) {
        static const struct {
                const char *s;
                int ret;
                uint64_t want;
        } t[] = {
                { "0", 0, 0 },
                { "30", 0, 30 * USEC_PER_SEC },
                { " 30 ", 0, 30 * USEC_PER_SEC },
                { "30s", 0, 30 * USEC_PER_SEC },
                { "30 s", 0, 30 * USEC_PER_SEC },
                { "30sec", 0, 30 * USEC_PER_SEC },
                { "1second", 0, USEC_PER_SEC },
                { "2 seconds", 0, 2 * USEC_PER_SEC },
                { "5min", 0, 300 * USEC_PER_SEC },
                { "5m", 0, 300 * USEC_PER_SEC },
                { "1 minute", 0, 60 * USEC_PER_SEC },
                { "2minutes", 0, 120 * USEC_PER_SEC },
                { "2h", 0, 7200 * USEC_PER_SEC },
                { "2hr", 0, 7200 * USEC_PER_SEC },
                { "1 hour", 0, 3600 * USEC_PER_SEC },
                { "3hours", 0, 10800 * USEC_PER_SEC },
                { "1d", 0, 86400 * USEC_PER_SEC },
                { "1day", 0, 86400 * USEC_PER_SEC },
                { "2 days", 0, 172800 * USEC_PER_SEC },
                { "1w", 0, 604800 * USEC_PER_SEC },
                { "1week", 0, 604800 * USEC_PER_SEC },
                { "2 weeks", 0, 1209600 * USEC_PER_SEC },
                { "500ms", 0, 500000 },
                { "500msec", 0, 500000 },
                { "10us", 0, 10 },
                { "10usec", 0, 10 },
                { "1h 30min", 0, 5400 * USEC_PER_SEC },
                { "1h30min", 0, 5400 * USEC_PER_SEC },
                { "1h  30min\t15s", 0, 5415 * USEC_PER_SEC },
                { "1h 30", 0, 3630 * USEC_PER_SEC },
                { "1d 1h 1min 1s 1ms 1us", 0, 90061001001 },
                { "18446744073709551615us", 0, UINT64_MAX },
                { "18446744073709551614us 1us", 0, UINT64_MAX },
                /* malformed */
                { "", -EINVAL, 0 },
                { "  ", -EINVAL, 0 },
                { "5 parsecs", -EINVAL, 0 },
                { "5M", -EINVAL, 0 },
                { "5 Min", -EINVAL, 0 },
                { "5H", -EINVAL, 0 },
                { "1.5h", -EINVAL, 0 },
                { "-1s", -EINVAL, 0 },
                { "h", -EINVAL, 0 },
                { "1h,30min", -EINVAL, 0 },
                { "5 min min", -EINVAL, 0 },
                { "5y", -EINVAL, 0 },
                { "infinity", -EINVAL, 0 },
                /* overflow */
                { "18446744073709551616us", -ERANGE, 0 },
                { "18446744073709551615s", -ERANGE, 0 },
                { "99999999999w", -ERANGE, 0 },
                { "18446744073709551615us 1us", -ERANGE, 0 },
                { "99999999999999999999999", -ERANGE, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                uint64_t v = 4242;

                ASSERT_ERR(config_parse_duration(t[i].s, &v), t[i].ret);
                if (t[i].ret == 0)
                        ASSERT_TRUE(v == t[i].want);
                else
                        ASSERT_EQ(v, 4242);
        }
}

TEST(parse_address) {
        static const struct {
                const char *s;
                int ret;
                int family;
                unsigned prefixlen;
                const char *addr; /* inet_pton form of the address bytes */
        } t[] = {
                { "192.0.2.1", 0, AF_INET, 32, "192.0.2.1" },
                { "192.0.2.0/24", 0, AF_INET, 24, "192.0.2.0" },
                { "10.1.2.3/8", 0, AF_INET, 8, "10.1.2.3" }, /* host bits kept */
                { "0.0.0.0/0", 0, AF_INET, 0, "0.0.0.0" },
                { " 198.51.100.7/032 ", 0, AF_INET, 32, "198.51.100.7" },
                { "::1", 0, AF_INET6, 128, "::1" },
                { "::", 0, AF_INET6, 128, "::" },
                { "2001:db8::/32", 0, AF_INET6, 32, "2001:db8::" },
                { "2001:db8::1/128", 0, AF_INET6, 128, "2001:db8::1" },
                { "::ffff:192.0.2.1", 0, AF_INET6, 128, "::ffff:192.0.2.1" },
                { "::/0", 0, AF_INET6, 0, "::" },
                { "300.1.1.1/40", -EINVAL, 0, 0, NULL },
                { "300.1.1.1", -EINVAL, 0, 0, NULL },
                { "1.2.3.4/33", -EINVAL, 0, 0, NULL },
                { "::/129", -EINVAL, 0, 0, NULL },
                { "1.2.3", -EINVAL, 0, 0, NULL },
                { "01.2.3.4", -EINVAL, 0, 0, NULL },
                { "1.2.3.4/", -EINVAL, 0, 0, NULL },
                { "/24", -EINVAL, 0, 0, NULL },
                { "1.2.3.4/-1", -EINVAL, 0, 0, NULL },
                { "1.2.3.4/+8", -EINVAL, 0, 0, NULL },
                { "1.2.3.4/0032", -EINVAL, 0, 0, NULL },
                { "1.2.3.4/24/1", -EINVAL, 0, 0, NULL },
                { "1.2.3.4 /24", -EINVAL, 0, 0, NULL },
                { "fe80::1%eth0", -EINVAL, 0, 0, NULL },
                { "[::1]", -EINVAL, 0, 0, NULL },
                { "example.org", -EINVAL, 0, 0, NULL },
                { "1.2.3.4,5.6.7.8", -EINVAL, 0, 0, NULL },
                { "", -EINVAL, 0, 0, NULL },
                { "1111:2222:3333:4444:5555:6666:7777:8888:9999", -EINVAL, 0, 0, NULL },
                { "0000000000000000000000000000000000000000000000000000001.2.3.4", -EINVAL, 0, 0, NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                ConfigAddress a = { .family = 4242 };
                uint8_t want[16] = {};

                ASSERT_ERR(config_parse_address(t[i].s, &a), t[i].ret);
                if (t[i].ret < 0) {
                        ASSERT_EQ(a.family, 4242);
                        continue;
                }
                ASSERT_EQ(a.family, t[i].family);
                ASSERT_EQ(a.prefixlen, t[i].prefixlen);
                ASSERT_EQ(inet_pton(t[i].family, t[i].addr, want), 1);
                ASSERT_TRUE(memcmp(a.addr, want, t[i].family == AF_INET ? 4 : 16) == 0);
        }
}

static void make_sockaddr(const char *s, struct sockaddr_storage *ss) {
        memset(ss, 0, sizeof *ss);
        if (strchr(s, ':')) {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) ss;

                sin6->sin6_family = AF_INET6;
                ASSERT_EQ(inet_pton(AF_INET6, s, &sin6->sin6_addr), 1);
        } else {
                struct sockaddr_in *sin = (struct sockaddr_in *) ss;

                sin->sin_family = AF_INET;
                ASSERT_EQ(inet_pton(AF_INET, s, &sin->sin_addr), 1);
        }
}

TEST(address_match) {
        static const struct {
                const char *prefix, *peer;
                bool want;
        } t[] = {
                { "192.0.2.0/24", "192.0.2.77", true },
                { "192.0.2.0/24", "192.0.3.1", false },
                { "192.0.2.128/25", "192.0.2.127", false },
                { "192.0.2.128/25", "192.0.2.200", true },
                { "10.1.2.3/8", "10.200.0.1", true },
                { "10.1.2.3/8", "11.1.2.3", false },
                { "192.0.2.1", "192.0.2.1", true },
                { "192.0.2.1", "192.0.2.2", false },
                { "0.0.0.0/0", "203.0.113.9", true },
                { "0.0.0.0/0", "::1", false },
                { "192.0.2.0/24", "::ffff:192.0.2.9", true },  /* v4-mapped peer */
                { "192.0.2.0/24", "::ffff:192.0.3.9", false },
                { "192.0.2.0/24", "::192.0.2.9", false },      /* v4-compatible is not mapped */
                { "192.0.2.0/24", "2001:db8::1", false },
                { "2001:db8::/32", "2001:db8:1::5", true },
                { "2001:db8::/32", "2001:db9::", false },
                { "2001:db8::/33", "2001:db8:7fff::1", true },
                { "2001:db8::/33", "2001:db8:8000::1", false },
                { "2001:db8::/32", "192.0.2.1", false },
                { "::ffff:0:0/96", "192.0.2.1", true },        /* v4 peer, mapped prefix */
                { "::ffff:192.0.2.0/120", "192.0.2.5", true },
                { "::ffff:192.0.2.0/120", "192.0.3.5", false },
                { "::1", "::1", true },
                { "::1", "::2", false },
                { "::/0", "2001:db8::1", true },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                struct sockaddr_storage ss;
                ConfigAddress a;

                ASSERT_OK(config_parse_address(t[i].prefix, &a));
                make_sockaddr(t[i].peer, &ss);
                if (config_address_match(&a, (struct sockaddr *) &ss) != t[i].want)
                        TAP_FAIL("%s vs %s: expected %s", t[i].prefix, t[i].peer, t[i].want ? "match" : "no match");
        }

        /* Other families and NULL never match. */
        ConfigAddress any;
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        struct sockaddr_storage ss;

        ASSERT_OK(config_parse_address("0.0.0.0/0", &any));
        ASSERT_FALSE(config_address_match(&any, (struct sockaddr *) &un));
        ASSERT_FALSE(config_address_match(&any, NULL));
        ASSERT_FALSE(config_address_match(NULL, (struct sockaddr *) &un));
        make_sockaddr("192.0.2.1", &ss);
        any.prefixlen = 33; /* a hand-made bad prefix is not a match-all */
        ASSERT_FALSE(config_address_match(&any, (struct sockaddr *) &ss));
}

/* ---- file syntax ---- */

TEST(syntax_valid) {
        static const struct {
                const char *text;
                const char *section, *name;
                const char *want; /* NULL: not set */
        } t[] = {
                { "[Queue]\nDirectory=/var/spool\n", "Queue", "Directory", "/var/spool" },
                { "[Queue]\nDirectory=/var/spool", "Queue", "Directory", "/var/spool" },
                { "  [Queue]  \n\t Directory \t=   /a b  \n", "Queue", "Directory", "/a b" },
                { "[Queue]\nDirectory = a=b\n", "Queue", "Directory", "a=b" },
                { "# comment\n; comment\n\n   \n[Queue]\n  # Directory=x\n;Directory=y\nDirectory=z\n",
                  "Queue", "Directory", "z" },
                { "[Queue]\nDirectory=x # not a comment\n", "Queue", "Directory", "x # not a comment" },
                /* quotes */
                { "[Queue]\nDirectory=\"  a b  \"\n", "Queue", "Directory", "  a b  " },
                { "[Queue]\nDirectory= \"a\\\"b\\\\c\" \n", "Queue", "Directory", "a\"b\\c" },
                { "[Queue]\nDirectory=\"a\\nb\"\n", "Queue", "Directory", "a\\nb" },
                { "[Queue]\nDirectory=\"\"\n", "Queue", "Directory", "" },
                { "[Queue]\nDirectory=\"#;=[]\"\n", "Queue", "Directory", "#;=[]" },
                { "[Queue]\nDirectory=a \"b\"\n", "Queue", "Directory", "a \"b\"" },
                { "[Queue]\nDirectory=a\\\"b\n", "Queue", "Directory", "a\\\"b" },
                { "[Queue]\nWorkers=\" 8 \"\n", "Queue", "Workers", " 8 " },
                /* continuation lines */
                { "[Smtpd]\nBanner=hello \\\n  world\n", "Smtpd", "Banner", "hello    world" },
                { "[Smtpd]\nBanner=a\\\nb\\\nc\n", "Smtpd", "Banner", "a b c" },
                { "[Smtpd]\nBanner=a\\\n# comment\n; comment\nb\n", "Smtpd", "Banner", "a b" },
                { "[Smtpd]\nBanner=a\\\n", "Smtpd", "Banner", "a" },
                { "[Smtpd]\nBanner=a\\", "Smtpd", "Banner", "a" },
                { "[Smtpd]\nBanner=\\\nx\n", "Smtpd", "Banner", "x" },
                { "[Smtpd]\nBanner=C:\\\\\n", "Smtpd", "Banner", "C:\\\\" },
                { "[Smtpd]\nBanner=a\\\\\\\nb\n", "Smtpd", "Banner", "a\\\\ b" },
                { "[Smtpd]\nBanner=a \\ \n", "Smtpd", "Banner", "a \\" },
                { "[Smtpd]\n# c \\\nBanner=b\n", "Smtpd", "Banner", "b" },
                { "[Smtpd]\nBanner=\"a \\\nb\"\n", "Smtpd", "Banner", "a  b" },
                /* CRLF */
                { "[Queue]\r\nDirectory=x\r\n", "Queue", "Directory", "x" },
                { "[Queue]\r\nDirectory=a\\\r\nb\r\n", "Queue", "Directory", "a b" },
                { "[Queue]\r\nDirectory=\"a b\"\r\n", "Queue", "Directory", "a b" },
                /* set twice, reset */
                { "[Queue]\nDirectory=x\nDirectory=y\n", "Queue", "Directory", "y" },
                { "[Queue]\nDirectory=x\n[Smtpd]\nBanner=b\n[Queue]\nDirectory=y\n", "Queue", "Directory", "y" },
                { "[Queue]\nDirectory=x\nDirectory=\n", "Queue", "Directory", NULL },
                { "[Queue]\nDirectory=x\nDirectory=   \n", "Queue", "Directory", NULL },
                { "[Queue]\nDirectory=x\nDirectory=\nDirectory=z\n", "Queue", "Directory", "z" },
                { "[Queue]\nWorkers=4\nWorkers=\n", "Queue", "Workers", NULL },
                /* case-sensitive names */
                { "[queue]\nDirectory=x\n", "Queue", "Directory", NULL },
                { "[Queue]\ndirectory=x\n", "Queue", "Directory", NULL },
                /* a UTF-8 byte order mark is skipped, only at the start */
                { "\xef\xbb\xbf[Queue]\nDirectory=x\n", "Queue", "Directory", "x" },
                { "[Queue]\nDirectory=\xef\xbb\xbfx\n", "Queue", "Directory", "\xef\xbb\xbfx" },
                /* empty input */
                { "", "Queue", "Directory", NULL },
                { "\n\n\n", "Queue", "Directory", NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                Config *c = NULL;
                const char *v = "untouched";
                int r;

                r = load(t[i].text, 0, &c);
                if (r < 0) {
                        _cleanup_free_ char *d = diags_text(c);
                        TAP_FAIL("case %zu: load failed %d: %s", i, r, d ? d : "");
                }
                r = config_get_string(c, t[i].section, t[i].name, &v);
                if (!t[i].want) {
                        ASSERT_ERR(r, -ENOENT);
                        ASSERT_STREQ(v, "untouched");
                } else {
                        ASSERT_OK(r);
                        if (strcmp(v, t[i].want) != 0)
                                TAP_FAIL("case %zu: \"%s\" != \"%s\"", i, v, t[i].want);
                }
                config_free(c);
        }
}

TEST(syntax_errors) {
        static const struct {
                const char *text;
                size_t len; /* 0: strlen */
                const char *diags;
        } t[] = {
                { "Directory=x\n", 0,
                  "t.conf:1: error: key \"Directory\" outside of a [Section]\n" },
                { "# c\n\nWorkers = 1\n[Queue]\n", 0,
                  "t.conf:3: error: key \"Workers\" outside of a [Section]\n" },
                { "[Queue]\nfoo\n", 0,
                  "t.conf:2: error: missing '=' in \"foo\"\n" },
                { "[Queue]\n  Directory /x  \n", 0,
                  "t.conf:2: error: missing '=' in \"Directory /x\"\n" },
                { "[Queue]\n=x\n", 0,
                  "t.conf:2: error: empty key name\n" },
                { "[Queue]\n  = x\n", 0,
                  "t.conf:2: error: empty key name\n" },
                { "[Queue\n", 0,
                  "t.conf:1: error: malformed section header \"[Queue\"\n" },
                { "[]\n", 0,
                  "t.conf:1: error: malformed section header \"[]\"\n" },
                { "[Qu eue]\n", 0,
                  "t.conf:1: error: malformed section header \"[Qu eue]\"\n" },
                { "[Queue] # x\n", 0,
                  "t.conf:1: error: malformed section header \"[Queue] # x\"\n" },
                { "[[Queue]]\n", 0,
                  "t.conf:1: error: malformed section header \"[[Queue]]\"\n" },
                { "\xef\xbb\xbf\xef\xbb\xbf[Queue]\n", 0,
                  "t.conf:1: error: missing '=' in \"\\xef\\xbb\\xbf[Queue]\"\n" },
                { "[Smt\\\npd]\nBanner=x\n", 0,
                  "t.conf:1: error: malformed section header \"[Smt pd]\"\n" },
                { "[Queue\x1b]\n", 0,
                  "t.conf:1: error: malformed section header \"[Queue\\x1b]\"\n" },
                /* keys under a malformed header are not reported again */
                { "[Queue\nDirectory=x\nFoo=y\n", 0,
                  "t.conf:1: error: malformed section header \"[Queue\"\n" },
                { "[Queue]\nDirectory=a\0b\n", 22,
                  "t.conf:2: error: line contains a NUL byte\n" },
                { "[Queue]\n#\0\n", 11,
                  "t.conf:2: error: line contains a NUL byte\n" },
                { "\0", 1,
                  "t.conf:1: error: line contains a NUL byte\n" },
                { "[Queue]\nDirectory=\"abc\n", 0,
                  "t.conf:2: error: unterminated quoted value for Directory=\n" },
                { "[Queue]\nDirectory=\"abc\\\"\n", 0,
                  "t.conf:2: error: unterminated quoted value for Directory=\n" },
                { "[Queue]\nDirectory=\"a\" b\n", 0,
                  "t.conf:2: error: text after the closing quote for Directory=\n" },
                /* invalid typed values */
                { "[Smtpd]\nRequireTLS=maybe\n", 0,
                  "t.conf:2: error: invalid boolean \"maybe\" for RequireTLS=: expected yes/no, true/false, on/off or 1/0\n" },
                { "[Queue]\n\n\nMaxSize=10X\n", 0,
                  "t.conf:4: error: invalid size \"10X\" for MaxSize=: expected a number with an optional suffix B, K, M, G or T\n" },
                { "[Queue]\nMaxSize=16777216T\n", 0,
                  "t.conf:2: error: invalid size \"16777216T\" for MaxSize=: value out of range\n" },
                { "[Queue]\nLifetime=5 parsecs\n", 0,
                  "t.conf:2: error: invalid duration \"5 parsecs\" for Lifetime=: expected a time span like 30s, 5min or 1h 30min\n" },
                { "[Queue]\nLifetime=99999999999w\n", 0,
                  "t.conf:2: error: invalid duration \"99999999999w\" for Lifetime=: value out of range\n" },
                { "[Smtpd]\nRelay=300.1.1.1/40\n", 0,
                  "t.conf:2: error: invalid address \"300.1.1.1/40\" for Relay=: expected an IPv4 or IPv6 address with an optional /prefix\n" },
                { "[Smtpd]\nRelay=192.0.2.0/24, ::1 ,bogus, 10.0.0.1\n", 0,
                  "t.conf:2: error: invalid address \"bogus\" for Relay=: expected an IPv4 or IPv6 address with an optional /prefix\n" },
                { "[Queue]\nWorkers=-1\n", 0,
                  "t.conf:2: error: invalid number \"-1\" for Workers=: expected a decimal number\n" },
                { "[Queue]\nWorkers=4 5\n", 0,
                  "t.conf:2: error: invalid number \"4 5\" for Workers=: expected a decimal number\n" },
                { "[Queue]\nWorkers=18446744073709551616\n", 0,
                  "t.conf:2: error: invalid number \"18446744073709551616\" for Workers=: value out of range\n" },
                { "[Smtpd]\nRequireTLS=\"\"\n", 0,
                  "t.conf:2: error: invalid boolean \"\" for RequireTLS=: expected yes/no, true/false, on/off or 1/0\n" },
                /* untrusted text is escaped */
                { "[Smtpd]\nRequireTLS=\"a\\\"\x7f\xc3\xa9\"\n", 0,
                  "t.conf:2: error: invalid boolean \"a\\\"\\x7f\\xc3\\xa9\" for RequireTLS=: expected yes/no, true/false, on/off or 1/0\n" },
                /* a continued line is reported at its first line */
                { "[Queue]\nMaxSize=1\\\n0X\n", 0,
                  "t.conf:2: error: invalid size \"1 0X\" for MaxSize=: expected a number with an optional suffix B, K, M, G or T\n" },
                /* CRLF does not shift line numbers; several errors all reported */
                { "[Queue]\r\n\r\nfoo\r\n[Smtpd]\r\nRequireTLS=maybe\r\n", 0,
                  "t.conf:3: error: missing '=' in \"foo\"\n"
                  "t.conf:5: error: invalid boolean \"maybe\" for RequireTLS=: expected yes/no, true/false, on/off or 1/0\n" },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                _cleanup_free_ char *d = NULL;
                Config *c = NULL;

                ASSERT_ERR(load(t[i].text, t[i].len, &c), -EINVAL);
                ASSERT_NOT_NULL(c);
                d = diags_text(c);
                if (!d || strcmp(d, t[i].diags) != 0)
                        TAP_FAIL("case %zu:\n# got:  %s# want: %s", i, d ? d : "(null)\n", t[i].diags);
                for (size_t j = 0; j < config_n_diags(c); j++)
                        ASSERT_TRUE(config_diag(c, j)->error);
                config_free(c);
        }
}

TEST(invalid_value_keeps_previous) {
        Config *c = NULL;
        uint64_t v = 0;
        const char *file;
        unsigned line;

        ASSERT_ERR(load("[Queue]\nMaxSize=1K\nMaxSize=10X\n", 0, &c), -EINVAL);
        ASSERT_OK(config_get_size(c, "Queue", "MaxSize", &v));
        ASSERT_EQ(v, 1024);
        ASSERT_OK(config_get_location(c, "Queue", "MaxSize", &file, &line));
        ASSERT_STREQ(file, "t.conf");
        ASSERT_EQ(line, 2);
        config_free(c);
}

TEST(list_append) {
        Config *c = NULL;
        char **l = NULL;
        const char *file;
        unsigned line;

        /* Repeated: appended; later, a plain list key still overrides. */
        ASSERT_OK(load("[Smtpd]\nKey=a b c\nDomains=x\nKey=d e f\nDomains=y\n", 0, &c));
        ASSERT_OK(config_get_list(c, "Smtpd", "Key", &l));
        ASSERT_STREQ(l[0], "a");
        ASSERT_STREQ(l[2], "c,");
        ASSERT_STREQ(l[3], "d");
        ASSERT_STREQ(l[5], "f");
        ASSERT_TRUE(!l[6]);
        config_strv_free(l);
        ASSERT_OK(config_get_list(c, "Smtpd", "Domains", &l));
        ASSERT_STREQ(l[0], "y");
        ASSERT_TRUE(!l[1]);
        config_strv_free(l);
        ASSERT_OK(config_get_location(c, "Smtpd", "Key", &file, &line));
        ASSERT_EQ(line, 4);
        config_free(c);

        /* An empty assignment resets it. */
        ASSERT_OK(load("[Smtpd]\nKey=a b c\nKey=\nKey=g h i\n", 0, &c));
        ASSERT_OK(config_get_list(c, "Smtpd", "Key", &l));
        ASSERT_STREQ(l[0], "g");
        ASSERT_TRUE(!l[3]);
        config_strv_free(l);
        config_free(c);
}

TEST(unknown_warnings) {
        static const char text[] =
                "[Queue]\n"
                "Foo=1\n"
                "[Bar]\n"
                "X=1\n"
                "Y=2\n"
                "[Queue]\n"
                "Workers=3\n"
                "directory=/x\n"
                "K\x01=1\n"
                "[X-Vendor]\n";
        _cleanup_free_ char *d = NULL;
        Config *c = NULL;
        uint64_t w = 0;

        ASSERT_OK(load(text, 0, &c));
        d = diags_text(c);
        ASSERT_STREQ(d,
                     "t.conf:2: warning: unknown key \"Foo\" in section [Queue], ignoring\n"
                     "t.conf:3: warning: unknown section [Bar], ignoring\n"
                     "t.conf:8: warning: unknown key \"directory\" in section [Queue], ignoring\n"
                     "t.conf:9: warning: unknown key \"K\\x01\" in section [Queue], ignoring\n"
                     "t.conf:10: warning: unknown section [X-Vendor], ignoring\n");
        ASSERT_EQ(config_n_diags(c), 5);
        ASSERT_FALSE(config_diag(c, 0)->error);
        ASSERT_STREQ(config_diag(c, 0)->file, "t.conf");
        ASSERT_EQ(config_diag(c, 0)->line, 2);
        ASSERT_STREQ(config_diag(c, 0)->message, "unknown key \"Foo\" in section [Queue], ignoring");
        ASSERT_NULL(config_diag(c, 5));
        ASSERT_OK(config_get_uint(c, "Queue", "Workers", &w));
        ASSERT_EQ(w, 3);
        config_free(c);

        /* A warning with an error: the load still fails. */
        ASSERT_ERR(load("[Queue]\nFoo=1\nfoo\n", 0, &c), -EINVAL);
        ASSERT_EQ(config_n_diags(c), 2);
        ASSERT_FALSE(config_diag(c, 0)->error);
        ASSERT_TRUE(config_diag(c, 1)->error);
        config_free(c);
}

TEST(long_lines) {
        _cleanup_free_ char *text = malloc(8 + 4097 + 2 + 20);
        _cleanup_free_ char *d = NULL;
        const char *v;
        Config *c = NULL;
        size_t n;

        ASSERT_NOT_NULL(text);
        /* Exactly 4096 bytes: fine (the \r of a CRLF does not count). */
        n = (size_t) sprintf(text, "[Queue]\nDirectory=");
        memset(text + n, 'a', 4096 - 10);
        n += 4096 - 10;
        memcpy(text + n, "\r\n", 3);
        ASSERT_OK(load(text, 0, &c));
        ASSERT_OK(config_get_string(c, "Queue", "Directory", &v));
        ASSERT_EQ(strlen(v), 4086);
        c = config_free(c);
        ASSERT_NULL(c);

        /* 4097 bytes: an error, and the next line is still read. */
        n = (size_t) sprintf(text, "[Queue]\nDirectory=");
        memset(text + n, 'a', 4097 - 10);
        n += 4097 - 10;
        memcpy(text + n, "\nWorkers=1\n", 12);
        ASSERT_ERR(load(text, 0, &c), -EINVAL);
        d = diags_text(c);
        ASSERT_STREQ(d, "t.conf:2: error: line too long (more than 4096 bytes)\n");
        ASSERT_ERR(config_get_string(c, "Queue", "Directory", &v), -ENOENT);
        ASSERT_OK(config_get_string(c, "Queue", "Workers", &v));
        config_free(c);
}

TEST(long_value_by_continuation) {
        /* Continuations may build a logical line longer than 4096 bytes. */
        _cleanup_free_ char *text = malloc(64 * 1024);
        const char *v;
        Config *c = NULL;
        size_t n;

        ASSERT_NOT_NULL(text);
        n = (size_t) sprintf(text, "[Smtpd]\nDomains=");
        for (int i = 0; i < 1000; i++)
                n += (size_t) sprintf(text + n, "d%04d.example.org \\\n", i);
        n += (size_t) sprintf(text + n, "last.example\n");
        ASSERT_OK(load(text, 0, &c));
        ASSERT_OK(config_get_string(c, "Smtpd", "Domains", &v));
        ASSERT_TRUE(strlen(v) > 4096);

        char **l = NULL;
        ASSERT_OK(config_get_list(c, "Smtpd", "Domains", &l));
        size_t k = 0;
        while (l[k])
                k++;
        ASSERT_EQ(k, 1001);
        ASSERT_STREQ(l[0], "d0000.example.org");
        ASSERT_STREQ(l[1000], "last.example");
        config_strv_free(l);
        config_free(c);
}

/* ---- getters ---- */

TEST(getters) {
        static const char text[] =
                "[Queue]\n"
                "MaxSize = 50M\n"
                "Lifetime = 5d 12h\n"
                "Workers = 16\n"
                "Directory = /var/spool/halyard\n"
                "[Smtpd]\n"
                "Banner = \"mx.example.org ESMTP\"\n"
                "RequireTLS = Yes\n"
                "Relay = 192.0.2.0/24, 2001:db8::/32 ,10.0.0.1\t::1\n"
                "Domains = example.org   example.net\texample.com\n";
        Config *c = NULL;
        const char *s = "preset", *file = NULL;
        uint64_t u = 7;
        bool b = false;
        unsigned line = 0;
        ConfigAddress *a = NULL;
        size_t n = 0;
        char **l = NULL;

        ASSERT_OK(load(text, 0, &c));
        ASSERT_EQ(config_n_diags(c), 0);

        ASSERT_OK(config_get_size(c, "Queue", "MaxSize", &u));
        ASSERT_EQ(u, 50 * 1024 * 1024);
        ASSERT_OK(config_get_duration(c, "Queue", "Lifetime", &u));
        ASSERT_TRUE(u == (5 * 86400 + 12 * 3600) * USEC_PER_SEC);
        ASSERT_OK(config_get_uint(c, "Queue", "Workers", &u));
        ASSERT_EQ(u, 16);
        ASSERT_OK(config_get_string(c, "Queue", "Directory", &s));
        ASSERT_STREQ(s, "/var/spool/halyard");
        ASSERT_OK(config_get_string(c, "Smtpd", "Banner", &s));
        ASSERT_STREQ(s, "mx.example.org ESMTP");
        ASSERT_OK(config_get_bool(c, "Smtpd", "RequireTLS", &b));
        ASSERT_TRUE(b);

        ASSERT_OK(config_get_addresses(c, "Smtpd", "Relay", &a, &n));
        ASSERT_EQ(n, 4);
        ASSERT_EQ(a[0].family, AF_INET);
        ASSERT_EQ(a[0].prefixlen, 24);
        ASSERT_EQ(a[1].family, AF_INET6);
        ASSERT_EQ(a[1].prefixlen, 32);
        ASSERT_EQ(a[2].family, AF_INET);
        ASSERT_EQ(a[2].prefixlen, 32);
        ASSERT_EQ(a[2].addr[0], 10);
        ASSERT_EQ(a[3].family, AF_INET6);
        ASSERT_EQ(a[3].addr[15], 1);
        free(a);

        ASSERT_OK(config_get_list(c, "Smtpd", "Domains", &l));
        ASSERT_STREQ(l[0], "example.org");
        ASSERT_STREQ(l[1], "example.net");
        ASSERT_STREQ(l[2], "example.com");
        ASSERT_NULL(l[3]);
        ASSERT_NULL(config_strv_free(l));

        ASSERT_OK(config_get_location(c, "Smtpd", "RequireTLS", &file, &line));
        ASSERT_STREQ(file, "t.conf");
        ASSERT_EQ(line, 8);
        ASSERT_OK(config_get_location(c, "Smtpd", "RequireTLS", NULL, NULL));

        /* Reading a value as the wrong type: -EINVAL, output untouched. */
        b = false;
        ASSERT_ERR(config_get_bool(c, "Queue", "Directory", &b), -EINVAL);
        ASSERT_FALSE(b);
        u = 7;
        ASSERT_ERR(config_get_uint(c, "Queue", "MaxSize", &u), -EINVAL);
        ASSERT_ERR(config_get_size(c, "Queue", "Lifetime", &u), -EINVAL);
        ASSERT_ERR(config_get_duration(c, "Queue", "Directory", &u), -EINVAL);
        ASSERT_EQ(u, 7);
        a = NULL;
        ASSERT_ERR(config_get_addresses(c, "Smtpd", "Domains", &a, &n), -EINVAL);
        ASSERT_NULL(a);
        /* Any value reads as a string or a list. */
        ASSERT_OK(config_get_string(c, "Queue", "MaxSize", &s));
        ASSERT_STREQ(s, "50M");
        ASSERT_OK(config_get_list(c, "Queue", "Lifetime", &l));
        ASSERT_STREQ(l[0], "5d");
        ASSERT_STREQ(l[1], "12h");
        config_strv_free(l);

        /* Unknown or unset keys: -ENOENT, output untouched. */
        s = "preset";
        ASSERT_ERR(config_get_string(c, "Queue", "Nope", &s), -ENOENT);
        ASSERT_ERR(config_get_string(c, "Nope", "Directory", &s), -ENOENT);
        ASSERT_ERR(config_get_string(c, "queue", "Directory", &s), -ENOENT);
        ASSERT_STREQ(s, "preset");
        ASSERT_ERR(config_get_location(c, "Queue", "Nope", &file, &line), -ENOENT);
        config_free(c);

        /* Unset keys of every type. */
        ASSERT_OK(load("", 0, &c));
        u = 99;
        b = true;
        ASSERT_ERR(config_get_size(c, "Queue", "MaxSize", &u), -ENOENT);
        ASSERT_ERR(config_get_duration(c, "Queue", "Lifetime", &u), -ENOENT);
        ASSERT_ERR(config_get_uint(c, "Queue", "Workers", &u), -ENOENT);
        ASSERT_ERR(config_get_bool(c, "Smtpd", "RequireTLS", &b), -ENOENT);
        ASSERT_ERR(config_get_addresses(c, "Smtpd", "Relay", &a, &n), -ENOENT);
        ASSERT_ERR(config_get_list(c, "Smtpd", "Domains", &l), -ENOENT);
        ASSERT_EQ(u, 99);
        ASSERT_TRUE(b);
        config_free(c);
}

TEST(getters_empty_lists) {
        Config *c = NULL;
        ConfigAddress *a = NULL;
        size_t n = 99;
        char **l = NULL;

        ASSERT_OK(load("[Smtpd]\nRelay=\" , ,\"\nDomains=\"  \"\n", 0, &c));
        ASSERT_OK(config_get_addresses(c, "Smtpd", "Relay", &a, &n));
        ASSERT_NOT_NULL(a);
        ASSERT_EQ(n, 0);
        free(a);
        ASSERT_OK(config_get_list(c, "Smtpd", "Domains", &l));
        ASSERT_NOT_NULL(l);
        ASSERT_NULL(l[0]);
        config_strv_free(l);
        config_free(c);
}

TEST(set_twice_location) {
        Config *c = NULL;
        const char *file, *s;
        unsigned line;

        ASSERT_OK(load("[Queue]\nDirectory=/a\n\n[Queue]\nDirectory=/b\n", 0, &c));
        ASSERT_OK(config_get_string(c, "Queue", "Directory", &s));
        ASSERT_STREQ(s, "/b");
        ASSERT_OK(config_get_location(c, "Queue", "Directory", &file, &line));
        ASSERT_EQ(line, 5);
        config_free(c);

        /* After a reset there is no location. */
        ASSERT_OK(load("[Queue]\nDirectory=/a\nDirectory=\n", 0, &c));
        ASSERT_ERR(config_get_location(c, "Queue", "Directory", &file, &line), -ENOENT);
        config_free(c);
}

TEST(key_table) {
        static const ConfigKey dup[] = {
                { "A", "X", CONFIG_BOOL },
                { "A", "X", CONFIG_STRING }, /* the first declaration wins */
                { "A", "Y", CONFIG_STRING },
                {}
        };
        static const ConfigKey bad[] = {
                { NULL, "X", CONFIG_STRING },
                {}
        };
        static const ConfigKey bad_type[] = {
                { "A", "X", (ConfigType) 99 },
                {}
        };
        static const ConfigKey empty[] = { {} };
        Config *c = NULL;
        bool b;

        ASSERT_ERR(config_load_string("t.conf", "[A]\nX=hello\n", 12, dup, &c), -EINVAL);
        config_free(c);
        ASSERT_OK(config_load_string("t.conf", "[A]\nX=on\nY=z\n", 13, dup, &c));
        ASSERT_OK(config_get_bool(c, "A", "X", &b));
        ASSERT_TRUE(b);
        config_free(c);

        c = (Config *) 1;
        ASSERT_ERR(config_load_string("t.conf", "", 0, bad, &c), -EINVAL);
        ASSERT_NULL(c);
        ASSERT_ERR(config_load_string("t.conf", "", 0, bad_type, &c), -EINVAL);
        ASSERT_NULL(c);
        ASSERT_ERR(config_load_string("t.conf", "", 0, NULL, &c), -EINVAL);
        ASSERT_NULL(c);

        /* An empty table: everything is unknown, but that is only a warning. */
        ASSERT_OK(config_load_string("t.conf", "[A]\nX=1\n", 8, empty, &c));
        ASSERT_EQ(config_n_diags(c), 1);
        config_free(c);
}

TEST(null_arguments) {
        Config *c = NULL;
        const char *s;
        bool b;

        ASSERT_ERR(config_load(NULL, keys, &c), -EINVAL);
        ASSERT_ERR(config_load("/nonexistent", keys, NULL), -EINVAL);
        ASSERT_ERR(config_load_string(NULL, "", 0, keys, &c), -EINVAL);
        ASSERT_ERR(config_load_string("t.conf", NULL, 1, keys, &c), -EINVAL);
        ASSERT_OK(config_load_string("t.conf", NULL, 0, keys, &c));
        ASSERT_ERR(config_get_string(c, NULL, "X", &s), -EINVAL);
        ASSERT_ERR(config_get_string(c, "Queue", NULL, &s), -EINVAL);
        ASSERT_ERR(config_get_string(c, "Queue", "Directory", NULL), -EINVAL);
        config_free(c);

        ASSERT_ERR(config_get_bool(NULL, "Smtpd", "RequireTLS", &b), -EINVAL);
        ASSERT_EQ(config_n_diags(NULL), 0);
        ASSERT_NULL(config_diag(NULL, 0));
        ASSERT_NULL(config_free(NULL));
        ASSERT_ERR(config_parse_bool(NULL, &b), -EINVAL);
        config_print_diags(NULL, stdout);
}

/* ---- limits ---- */

TEST(limit_file_size) {
        /* 1024 lines of 1024 bytes = exactly 1 MiB. */
        size_t max = 1024 * 1024;
        _cleanup_free_ char *text = malloc(max + 1);
        _cleanup_free_ char *d = NULL;
        Config *c = NULL;

        ASSERT_NOT_NULL(text);
        for (size_t i = 0; i < max; i += 1024) {
                memset(text + i, '#', 1023);
                text[i + 1023] = '\n';
        }
        ASSERT_OK(load(text, max, &c));
        config_free(c);

        text[max] = 'x';
        ASSERT_ERR(load(text, max + 1, &c), -EINVAL);
        d = diags_text(c);
        ASSERT_STREQ(d, "t.conf:1025: error: file is larger than 1 MiB, ignoring it\n");
        config_free(c);
}

TEST(limit_assignments) {
        size_t size = 8 + 10001 * 10 + 1;
        _cleanup_free_ char *text = malloc(size);
        _cleanup_free_ char *d = NULL;
        Config *c = NULL;
        size_t n;

        ASSERT_NOT_NULL(text);
        n = (size_t) sprintf(text, "[Queue]\n");
        for (int i = 0; i < 10000; i++)
                n += (size_t) sprintf(text + n, "Workers=1\n");
        ASSERT_OK(load(text, n, &c));
        config_free(c);

        n += (size_t) sprintf(text + n, "Workers=1\n");
        ASSERT_ERR(load(text, n, &c), -EINVAL);
        d = diags_text(c);
        ASSERT_STREQ(d, "t.conf:10002: error: too many assignments (limit 10000), ignoring the rest\n");
        config_free(c);
}

TEST(limit_diags) {
        _cleanup_free_ char *text = malloc(8 + 1500 * 6 + 8);
        Config *c = NULL;
        const ConfigDiag *last;
        size_t n;

        ASSERT_NOT_NULL(text);
        n = (size_t) sprintf(text, "[Queue]\n");
        for (int i = 0; i < 1500; i++)
                n += (size_t) sprintf(text + n, "Foo=1\n");
        ASSERT_OK(load(text, n, &c)); /* only warnings */
        ASSERT_EQ(config_n_diags(c), 1000);
        last = config_diag(c, 999);
        ASSERT_FALSE(last->error);
        ASSERT_STREQ(last->message, "too many problems, not reporting more");
        config_free(c);

        /* A suppressed error still fails the load and marks the last diag. */
        n += (size_t) sprintf(text + n, "bad\n");
        ASSERT_ERR(load(text, n, &c), -EINVAL);
        ASSERT_EQ(config_n_diags(c), 1000);
        ASSERT_TRUE(config_diag(c, 999)->error);
        ASSERT_FALSE(config_diag(c, 998)->error);
        config_free(c);
}

/* ---- files and drop-ins ---- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st;
        (void) flag;
        (void) ftw;
        (void) chmod(path, 0700);
        return remove(path) < 0 ? -1 : 0;
}

static void rm_rf(const char *dir) {
        /* Directories were made unreadable by some tests: fix before walking. */
        (void) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *dir, const char *name, const char *content) {
        char path[512];
        FILE *f;

        snprintf(path, sizeof path, "%s/%s", dir, name);
        f = fopen(path, "we");
        if (!f)
                TAP_FAIL("fopen %s: %m", path);
        fputs(content, f);
        ASSERT_EQ(fclose(f), 0);
}

typedef struct TmpTree {
        char dir[64];
        char main[128];  /* dir/halyard.conf */
        char dropin[128]; /* dir/halyard.conf.d */
} TmpTree;

static void tmp_tree(TmpTree *t) {
        snprintf(t->dir, sizeof t->dir, "/tmp/test-config-XXXXXX");
        if (!mkdtemp(t->dir))
                TAP_FAIL("mkdtemp: %m");
        snprintf(t->main, sizeof t->main, "%s/halyard.conf", t->dir);
        snprintf(t->dropin, sizeof t->dropin, "%s/halyard.conf.d", t->dir);
}

TEST(dropins) {
        TmpTree t;
        char path[256], other[256];
        _cleanup_free_ char *d = NULL, *want = NULL;
        Config *c = NULL;
        const char *s, *file;
        unsigned line;
        uint64_t u;

        tmp_tree(&t);
        write_file(t.dir, "halyard.conf",
                   "[Queue]\n"
                   "Directory=/main\n"
                   "Workers=1\n"
                   "MaxSize=1M\n"
                   "Lifetime=1h\n");
        ASSERT_OK(mkdir(t.dropin, 0755));
        write_file(t.dropin, "20-b.conf", "[Queue]\nWorkers=20\nBogus=1\n");
        write_file(t.dropin, "10-a.conf", "# first\n[Queue]\nWorkers=10\nDirectory=/a\n");
        write_file(t.dropin, "99-reset.conf", "[Queue]\nMaxSize=\n");
        /* strcmp order: "B.conf" < "a.conf", unlike a locale's collation. */
        write_file(t.dropin, "a.conf", "[Queue]\nLifetime=2h\n");
        write_file(t.dropin, "B.conf", "[Queue]\nLifetime=3h\n");
        /* Ignored: wrong suffix, hidden, a directory, a device, a bare ".conf". */
        write_file(t.dropin, "30-c.conf.disabled", "[Queue]\nWorkers=999\n");
        write_file(t.dropin, "zz.conf~", "[Queue]\nWorkers=999\n");
        write_file(t.dropin, "zz.CONF", "[Queue]\nWorkers=999\n");
        write_file(t.dropin, ".hidden.conf", "[Smtpd]\nRequireTLS=yes\n");
        write_file(t.dropin, ".conf", "[Smtpd]\nDomains=x\n");
        snprintf(path, sizeof path, "%s/40-dir.conf", t.dropin);
        ASSERT_OK(mkdir(path, 0755));
        snprintf(path, sizeof path, "%s/50-null.conf", t.dropin);
        ASSERT_OK(symlink("/dev/null", path));
        /* A symlink to a regular file is followed; a dangling one is skipped. */
        write_file(t.dir, "other", "[Smtpd]\nBanner=linked\n");
        snprintf(path, sizeof path, "%s/60-link.conf", t.dropin);
        snprintf(other, sizeof other, "%s/other", t.dir);
        ASSERT_OK(symlink(other, path));
        snprintf(path, sizeof path, "%s/61-dangling.conf", t.dropin);
        ASSERT_OK(symlink("/nonexistent/x", path));

        ASSERT_OK(config_load(t.main, keys, &c));
        d = diags_text(c);
        ASSERT_TRUE(asprintf(&want, "%s/20-b.conf:3: warning: unknown key \"Bogus\" in section [Queue], ignoring\n",
                             t.dropin) > 0);
        ASSERT_STREQ(d, want);

        ASSERT_OK(config_get_uint(c, "Queue", "Workers", &u));
        ASSERT_EQ(u, 20);
        ASSERT_OK(config_get_location(c, "Queue", "Workers", &file, &line));
        snprintf(path, sizeof path, "%s/20-b.conf", t.dropin);
        ASSERT_STREQ(file, path);
        ASSERT_EQ(line, 2);

        ASSERT_OK(config_get_string(c, "Queue", "Directory", &s));
        ASSERT_STREQ(s, "/a");
        ASSERT_OK(config_get_location(c, "Queue", "Directory", &file, &line));
        snprintf(path, sizeof path, "%s/10-a.conf", t.dropin);
        ASSERT_STREQ(file, path);
        ASSERT_EQ(line, 4);

        ASSERT_OK(config_get_duration(c, "Queue", "Lifetime", &u));
        ASSERT_TRUE(u == 2 * 3600 * USEC_PER_SEC);
        ASSERT_ERR(config_get_size(c, "Queue", "MaxSize", &u), -ENOENT);
        ASSERT_OK(config_get_string(c, "Smtpd", "Banner", &s));
        ASSERT_STREQ(s, "linked");
        ASSERT_ERR(config_get_string(c, "Smtpd", "RequireTLS", &s), -ENOENT);
        ASSERT_ERR(config_get_string(c, "Smtpd", "Domains", &s), -ENOENT);
        config_free(c);

        /* The main file's own values, and its path as given in locations. */
        snprintf(path, sizeof path, "%s/./halyard.conf", t.dir);
        rm_rf(t.dropin);
        ASSERT_OK(config_load(path, keys, &c));
        ASSERT_OK(config_get_location(c, "Queue", "Directory", &file, &line));
        ASSERT_STREQ(file, path);
        ASSERT_EQ(line, 2);
        config_free(c);

        rm_rf(t.dir);
}

TEST(dropins_without_main) {
        TmpTree t;
        Config *c = NULL;
        uint64_t u;

        tmp_tree(&t);

        /* Neither the file nor the directory: an empty config. */
        ASSERT_OK(config_load(t.main, keys, &c));
        ASSERT_EQ(config_n_diags(c), 0);
        ASSERT_ERR(config_get_uint(c, "Queue", "Workers", &u), -ENOENT);
        config_free(c);

        ASSERT_OK(mkdir(t.dropin, 0755));
        write_file(t.dropin, "x.conf", "[Queue]\nWorkers=5\n");
        ASSERT_OK(config_load(t.main, keys, &c));
        ASSERT_OK(config_get_uint(c, "Queue", "Workers", &u));
        ASSERT_EQ(u, 5);
        config_free(c);

        /* The main path being a directory: skipped like any non-regular file. */
        ASSERT_OK(mkdir(t.main, 0755));
        ASSERT_OK(config_load(t.main, keys, &c));
        ASSERT_OK(config_get_uint(c, "Queue", "Workers", &u));
        config_free(c);

        /* A ".d" that is a regular file is no drop-in directory. */
        rm_rf(t.dropin);
        write_file(t.dir, "halyard.conf.d", "[Queue]\nWorkers=5\n");
        ASSERT_OK(config_load(t.main, keys, &c));
        ASSERT_ERR(config_get_uint(c, "Queue", "Workers", &u), -ENOENT);
        config_free(c);

        rm_rf(t.dir);
}

TEST(dropin_errors) {
        TmpTree t;
        _cleanup_free_ char *d = NULL, *want = NULL;
        Config *c = NULL;
        uint64_t u;

        tmp_tree(&t);
        write_file(t.dir, "halyard.conf", "[Queue]\nWorkers=1\n");
        ASSERT_OK(mkdir(t.dropin, 0755));
        write_file(t.dropin, "10-a.conf", "[Queue]\nMaxSize=10X\n");
        write_file(t.dropin, "20-b.conf", "[Queue]\nWorkers=2\n");

        /* A bad value: -EINVAL, the rest is still read for diagnostics. */
        ASSERT_ERR(config_load(t.main, keys, &c), -EINVAL);
        d = diags_text(c);
        ASSERT_TRUE(asprintf(&want, "%s/10-a.conf:2: error: invalid size \"10X\" for MaxSize=: "
                             "expected a number with an optional suffix B, K, M, G or T\n", t.dropin) > 0);
        ASSERT_STREQ(d, want);
        ASSERT_OK(config_get_uint(c, "Queue", "Workers", &u));
        ASSERT_EQ(u, 2);
        config_free(c);

        rm_rf(t.dir);
}

TEST(unreadable) {
        TmpTree t;
        char path[256];
        _cleanup_free_ char *d = NULL, *want = NULL;
        Config *c = NULL;

        tmp_tree(&t);
        write_file(t.dir, "halyard.conf", "[Queue]\nWorkers=1\n");
        ASSERT_OK(mkdir(t.dropin, 0755));

        /* A symlink loop cannot be read even by root: -ELOOP, named in a diag. */
        snprintf(path, sizeof path, "%s/10-loop.conf", t.dropin);
        ASSERT_OK(symlink("10-loop.conf", path));
        ASSERT_ERR(config_load(t.main, keys, &c), -ELOOP);
        ASSERT_NOT_NULL(c);
        d = diags_text(c);
        ASSERT_TRUE(asprintf(&want, "%s: error: failed to read: %s\n", path, strerror(ELOOP)) > 0);
        ASSERT_STREQ(d, want);
        ASSERT_EQ(config_diag(c, 0)->line, 0);
        config_free(c);
        ASSERT_OK(unlink(path));

        /* Permissions only bind non-root. */
        if (geteuid() != 0) {
                snprintf(path, sizeof path, "%s/10-secret.conf", t.dropin);
                write_file(t.dropin, "10-secret.conf", "[Queue]\nWorkers=2\n");
                ASSERT_OK(chmod(path, 0));
                ASSERT_ERR(config_load(t.main, keys, &c), -EACCES);
                config_free(c);
                ASSERT_OK(unlink(path));

                ASSERT_OK(chmod(t.dropin, 0));
                ASSERT_ERR(config_load(t.main, keys, &c), -EACCES);
                ASSERT_EQ(config_n_diags(c), 1);
                ASSERT_STREQ(config_diag(c, 0)->file, t.dropin);
                config_free(c);
                ASSERT_OK(chmod(t.dropin, 0755));

                ASSERT_OK(chmod(t.main, 0));
                ASSERT_ERR(config_load(t.main, keys, &c), -EACCES);
                ASSERT_STREQ(config_diag(c, 0)->file, t.main);
                config_free(c);
        } else
                printf("# running as root, skipping the permission checks\n");

        rm_rf(t.dir);
}

TEST(large_file_on_disk) {
        TmpTree t;
        _cleanup_free_ char *d = NULL, *want = NULL;
        Config *c = NULL;
        FILE *f;

        tmp_tree(&t);
        f = fopen(t.main, "we");
        ASSERT_NOT_NULL(f);
        fputs("[Queue]\nWorkers=1\n", f);
        for (int i = 0; i < 1024 * 1024 / 8; i++)
                fputs("#234567\n", f);
        ASSERT_EQ(fclose(f), 0);

        ASSERT_ERR(config_load(t.main, keys, &c), -EINVAL);
        d = diags_text(c);
        /* 18 bytes, then 8-byte lines: 1 MiB ends inside line 2 + 131069 + 1. */
        ASSERT_TRUE(asprintf(&want, "%s:131072: error: file is larger than 1 MiB, ignoring it\n", t.main) > 0);
        ASSERT_STREQ(d, want);
        config_free(c);

        rm_rf(t.dir);
}

TEST(limit_dropins) {
        TmpTree t;
        char name[32];
        _cleanup_free_ char *d = NULL, *want = NULL;
        Config *c = NULL;
        uint64_t u;

        tmp_tree(&t);
        ASSERT_OK(mkdir(t.dropin, 0755));
        for (int i = 0; i < 256; i++) {
                snprintf(name, sizeof name, "%03d.conf", i);
                write_file(t.dropin, name, "[Queue]\nWorkers=1\n");
        }
        write_file(t.dropin, "zzz.conf", "[Queue]\nWorkers=256\n");
        /* Not counted: other suffixes. */
        write_file(t.dropin, "zzz.txt", "");

        /* 257 drop-ins: refused. */
        ASSERT_ERR(config_load(t.main, keys, &c), -EINVAL);
        d = diags_text(c);
        ASSERT_TRUE(asprintf(&want, "%s: error: too many drop-in files (limit 256)\n", t.dropin) > 0);
        ASSERT_STREQ(d, want);
        ASSERT_ERR(config_get_uint(c, "Queue", "Workers", &u), -ENOENT);
        config_free(c);

        /* 256: fine, and the last one wins. */
        char path[256];
        snprintf(path, sizeof path, "%s/000.conf", t.dropin);
        ASSERT_OK(unlink(path));
        ASSERT_OK(config_load(t.main, keys, &c));
        ASSERT_OK(config_get_uint(c, "Queue", "Workers", &u));
        ASSERT_EQ(u, 256);
        config_free(c);

        rm_rf(t.dir);
}

TEST(default_path) {
        const char *saved = getenv("HALYARD_CONFIG");
        _cleanup_free_ char *copy = saved ? strdup(saved) : NULL;

        ASSERT_OK(unsetenv("HALYARD_CONFIG"));
        ASSERT_STREQ(config_default_path(), HALYARD_SYSCONFDIR "/halyard/halyard.conf");
        ASSERT_OK(setenv("HALYARD_CONFIG", "", 1));
        ASSERT_STREQ(config_default_path(), HALYARD_SYSCONFDIR "/halyard/halyard.conf");
        ASSERT_OK(setenv("HALYARD_CONFIG", "/tmp/halyard-test.conf", 1));
        ASSERT_STREQ(config_default_path(), "/tmp/halyard-test.conf");

        /* And config_load() of it goes where it points. */
        TmpTree t;
        Config *c = NULL;
        uint64_t u;

        tmp_tree(&t);
        write_file(t.dir, "halyard.conf", "[Queue]\nWorkers=77\n");
        ASSERT_OK(setenv("HALYARD_CONFIG", t.main, 1));
        ASSERT_OK(config_load(config_default_path(), keys, &c));
        ASSERT_OK(config_get_uint(c, "Queue", "Workers", &u));
        ASSERT_EQ(u, 77);
        config_free(c);
        rm_rf(t.dir);

        if (copy)
                ASSERT_OK(setenv("HALYARD_CONFIG", copy, 1));
        else
                ASSERT_OK(unsetenv("HALYARD_CONFIG"));
}

TEST(print_diags) {
        Config *c = NULL;
        _cleanup_free_ char *d = NULL;

        ASSERT_ERR(config_load_string("/etc/halyard/halyard.conf",
                                      "[Queue]\nFoo=1\nMaxSize=10X\n", 26, keys, &c), -EINVAL);
        d = diags_text(c);
        ASSERT_STREQ(d,
                     "/etc/halyard/halyard.conf:2: warning: unknown key \"Foo\" in section [Queue], ignoring\n"
                     "/etc/halyard/halyard.conf:3: error: invalid size \"10X\" for MaxSize=: "
                     "expected a number with an optional suffix B, K, M, G or T\n");
        config_free(c);
}

int main(void) {
        return tap_run();
}
