/* SPDX-License-Identifier: MIT */
#include "macro.h"
#include "tap.h"
#include "utf8.h"

TEST(table) {
        static const struct {
                const char *s;
                size_t n;
                bool valid;
        } cases[] = {
                { "", 0, true },
                { "plain ascii", 11, true },
                { "h\xc3\xa9llo", 6, true },                /* é */
                { "\xe2\x98\x83", 3, true },                /* ☃ */
                { "\xf0\x9f\x93\xa7", 4, true },            /* 📧 */
                { "\xf4\x8f\xbf\xbf", 4, true },            /* U+10FFFF */
                { "\xed\x9f\xbf", 3, true },                /* U+D7FF */
                { "\xee\x80\x80", 3, true },                /* U+E000 */
                { "a\0b", 3, true },
                { "\xff\xfe", 2, false },
                { "ab\xe2\x98", 4, false },                 /* cut short */
                { "\xc0\xaf", 2, false },                   /* overlong '/' */
                { "\xc1\xbf", 2, false },
                { "\xe0\x80\xaf", 3, false },               /* overlong */
                { "\xf0\x80\x80\xaf", 4, false },           /* overlong */
                { "\xed\xa0\x80", 3, false },               /* U+D800 */
                { "\xed\xbf\xbf", 3, false },               /* U+DFFF */
                { "\xf4\x90\x80\x80", 4, false },           /* U+110000 */
                { "\xf5\x80\x80\x80", 4, false },
                { "\x80", 1, false },                       /* lone continuation */
                { "\xc3\x28", 2, false },
                { "\xe2\x28\xa1", 3, false },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (utf8_valid(cases[i].s, cases[i].n) != cases[i].valid)
                        TAP_FAIL("case %zu: expected %s", i, cases[i].valid ? "valid" : "invalid");
}

int main(void) {
        return tap_run();
}
