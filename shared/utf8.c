/* SPDX-License-Identifier: MIT */
#include <stdint.h>

#include "utf8.h"

size_t utf8_sequence_len(const char *str, size_t n) {
        const uint8_t *s = (const uint8_t *) str;
        uint8_t c = s[0], lo = 0x80, hi = 0xbf;
        size_t len;

        if (c < 0x80)
                return 1;
        /* The ranges of RFC 3629 section 4, which exclude overlongs and
         * surrogates by bounding the second byte. */
        if (c >= 0xc2 && c <= 0xdf)
                len = 2;
        else if (c >= 0xe0 && c <= 0xef) {
                len = 3;
                if (c == 0xe0)
                        lo = 0xa0;
                else if (c == 0xed)
                        hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
                len = 4;
                if (c == 0xf0)
                        lo = 0x90;
                else if (c == 0xf4)
                        hi = 0x8f;
        } else
                return 0;
        if (n < len || s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < len; i++)
                if (s[i] < 0x80 || s[i] > 0xbf)
                        return 0;
        return len;
}

bool utf8_valid(const char *s, size_t n) {
        while (n > 0) {
                size_t len = utf8_sequence_len(s, n);
                if (len == 0)
                        return false;
                s += len;
                n -= len;
        }
        return true;
}
