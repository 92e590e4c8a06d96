/* SPDX-License-Identifier: MIT */
/* MTA-STS pieces that need no network: the TXT record and policy parsers,
 * MX pattern matching, the on-disk cache. (The HTTPS fetch on the event loop
 * is exercised against a real server in tests/integration/test_mtasts.py.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queued-mtasts.h"
#include "tap.h"

TEST(txt_records) {
        static const struct {
                const char *txt;
                int want;
                const char *id;
        } cases[] = {
                { "v=STSv1; id=20160831085700Z;", 1, "20160831085700Z" },
                { "v=STSv1; id=abc", 1, "abc" },
                { "v=STSv1;id=abc;", 1, "abc" },
                { "v=STSv1 ;  id=X1 ;  ", 1, "X1" },
                { "v=STSv1; ext.x_y-z=val; id=1", 1, "1" },
                { "v=STSv1; id=12345678901234567890123456789012", 1, "12345678901234567890123456789012" },
                { "v=STSv1; id=123456789012345678901234567890123", -EBADMSG, NULL }, /* 33 chars */
                { "v=STSv1;", -EBADMSG, NULL },                                   /* no id */
                { "v=STSv1; id=", -EBADMSG, NULL },
                { "v=STSv1; id=a-b", -EBADMSG, NULL },                            /* id is ALPHA/DIGIT */
                { "v=STSv1; id=a; id=b", -EBADMSG, NULL },
                { "v=STSv1 id=a", -EBADMSG, NULL },
                { "v=STSv1; =x; id=a", -EBADMSG, NULL },
                { "v=STSv2; id=a", 0, NULL },                                     /* someone else's */
                { "v=spf1 -all", 0, NULL },
                { "", 0, NULL },
                { "V=STSv1; id=a", 0, NULL },                                     /* case-sensitive */
        };
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
                char id[MTASTS_ID_MAX + 1] = "";
                int r = mtasts_txt_parse(cases[i].txt, strlen(cases[i].txt), id);
                if (r != cases[i].want)
                        TAP_FAIL("\"%s\": %d, expected %d", cases[i].txt, r, cases[i].want);
                if (cases[i].id)
                        ASSERT_STREQ(id, cases[i].id);
        }
}

TEST(policy_valid) {
        static const char text[] = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
                                   "mx: backupmx.example.com\r\nmax_age: 604800\r\n";
        MtaStsPolicy p;
        ASSERT_OK(mtasts_policy_parse(text, strlen(text), &p));
        ASSERT_EQ(p.mode, MTASTS_MODE_ENFORCE);
        ASSERT_EQ(p.max_age, 604800);
        ASSERT_STREQ(p.mx[0], "mail.example.com");
        ASSERT_STREQ(p.mx[1], "*.example.net");
        ASSERT_STREQ(p.mx[2], "backupmx.example.com");
        ASSERT_NULL(p.mx[3]);
        ASSERT_STREQ(p.lines[0], "version: STSv1");
        ASSERT_STREQ(p.lines[5], "max_age: 604800");
        ASSERT_NULL(p.lines[6]);
        ASSERT_TRUE(mtasts_policy_allows(&p, "mail.example.com"));
        ASSERT_TRUE(mtasts_policy_allows(&p, "MX1.example.NET."));
        ASSERT_FALSE(mtasts_policy_allows(&p, "a.b.example.net"));
        ASSERT_FALSE(mtasts_policy_allows(&p, "example.net"));
        MtaStsPolicy c;
        ASSERT_OK(mtasts_policy_copy(&p, &c));
        mtasts_policy_done(&p);
        ASSERT_STREQ(c.mx[1], "*.example.net");
        ASSERT_EQ(c.max_age, 604800);
        mtasts_policy_done(&c);
}

TEST(policy_cases) {
        static const struct {
                const char *text;
                int want;
                int mode;
                unsigned max_age;
        } cases[] = {
                { "version: STSv1\nmode: testing\nmx: a.example\nmax_age: 86400\n", 0, MTASTS_MODE_TESTING, 86400 },
                { "version: STSv1\nmode: none\nmax_age: 1", 0, MTASTS_MODE_NONE, 1 },           /* no mx needed, no final EOL */
                { "version:STSv1\nmode:enforce\nmx:a.example\nmax_age:   5   \n", 0, MTASTS_MODE_ENFORCE, 5 },
                { "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 99999999999\n", -EBADMSG, 0, 0 }, /* 11 digits */
                { "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999\n", 0, MTASTS_MODE_ENFORCE, MTASTS_MAX_AGE_MAX },
                { "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nfoo: bar\n", 0, MTASTS_MODE_ENFORCE, 1 },
                { "version: STSv1\nmode: enforce\nmode: none\nmx: a.example\nmax_age: 1\n", 0, MTASTS_MODE_ENFORCE, 1 },
                { "mode: enforce\nmx: a.example\nmax_age: 1\n", -EBADMSG, 0, 0 },               /* no version */
                { "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", -EBADMSG, 0, 0 },
                { "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n", -EBADMSG, 0, 0 },
                { "version: STSv1\nmode: enforce\nmax_age: 1\n", -EBADMSG, 0, 0 },              /* enforce without mx */
                { "version: STSv1\nmode: testing\nmx: a.example\n", -EBADMSG, 0, 0 },           /* no max_age */
                { "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", -EBADMSG, 0, 0 },
                { "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n", -EBADMSG, 0, 0 },
                { "version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n", -EBADMSG, 0, 0 },
                { "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\ngarbage\n", -EBADMSG, 0, 0 },
                { "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n: x\n", -EBADMSG, 0, 0 },
                { "<html>version: STSv1</html>", -EBADMSG, 0, 0 },
                { "", -EBADMSG, 0, 0 },
        };
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
                MtaStsPolicy p;
                int r = mtasts_policy_parse(cases[i].text, strlen(cases[i].text), &p);
                if (r != cases[i].want)
                        TAP_FAIL("case %zu: %d, expected %d", i, r, cases[i].want);
                if (r < 0)
                        continue;
                ASSERT_EQ(p.mode, cases[i].mode);
                ASSERT_EQ(p.max_age, cases[i].max_age);
                mtasts_policy_done(&p);
        }
        /* over the size limit */
        size_t n = MTASTS_POLICY_MAX + 1;
        char *big = malloc(n);
        ASSERT_NOT_NULL(big);
        memset(big, '\n', n);
        MtaStsPolicy p;
        ASSERT_ERR(mtasts_policy_parse(big, n, &p), -EBADMSG);
        free(big);
}

TEST(mx_match) {
        static const struct {
                const char *pattern, *host;
                bool want;
        } cases[] = {
                { "mx.example.com", "mx.example.com", true },
                { "mx.example.com", "MX.Example.COM.", true },
                { "mx.example.com.", "mx.example.com", true },
                { "mx.example.com", "mx.example.co", false },
                { "mx.example.com", "xmx.example.com", false },
                { "*.example.com", "mx.example.com", true },
                { "*.example.com", "a.b.example.com", false },
                { "*.example.com", "example.com", false },
                { "*.example.com", ".example.com", false },
                { "*.example.com", "mxexample.com", false },
                { "", "x", false },
                { "x", "", false },
        };
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
                if (mtasts_mx_match(cases[i].pattern, cases[i].host) != cases[i].want)
                        TAP_FAIL("\"%s\" vs \"%s\": expected %d", cases[i].pattern, cases[i].host, cases[i].want);
}

TEST(cache_roundtrip) {
        char dir[] = "/tmp/test-mtasts-XXXXXX";
        ASSERT_NOT_NULL(mkdtemp(dir));
        char sub[64];
        snprintf(sub, sizeof sub, "%s/cache", dir);
        ASSERT_OK(mtasts_cache_write(sub, "Example.ORG.", "id1", 1234, "version: STSv1\r\n"));
        char *id = NULL, *text = NULL;
        uint64_t fetched = 0;
        ASSERT_OK(mtasts_cache_read(sub, "example.org", &id, &fetched, &text));
        ASSERT_STREQ(id, "id1");
        ASSERT_EQ(fetched, 1234);
        ASSERT_STREQ(text, "version: STSv1\r\n");
        free(id);
        free(text);
        ASSERT_ERR(mtasts_cache_read(sub, "example.net", &id, &fetched, &text), -ENOENT);
        /* names that would leave the directory or are not host names */
        ASSERT_ERR(mtasts_cache_write(sub, "../etc", "x", 1, "x"), -EINVAL);
        ASSERT_ERR(mtasts_cache_write(sub, "a/b", "x", 1, "x"), -EINVAL);
        ASSERT_ERR(mtasts_cache_write(sub, ".hidden", "x", 1, "x"), -EINVAL);
        ASSERT_ERR(mtasts_cache_write(sub, "", "x", 1, "x"), -EINVAL);
        /* a damaged file is refused, not trusted */
        char path[128];
        snprintf(path, sizeof path, "%s/broken.example.json", sub);
        FILE *f = fopen(path, "w");
        ASSERT_NOT_NULL(f);
        fputs("{\"id\": 1}", f);
        fclose(f);
        ASSERT_ERR(mtasts_cache_read(sub, "broken.example", &id, &fetched, &text), -EBADMSG);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        ASSERT_EQ(system(cmd), 0);
}

int main(void) {
        return tap_run();
}
