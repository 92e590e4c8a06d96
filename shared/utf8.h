/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* True if s[0..n) is well-formed UTF-8 as RFC 3629 defines it: no overlong
 * forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF. NUL bytes
 * are allowed (they are valid UTF-8); callers that forbid them check. */
bool utf8_valid(const char *s, size_t n);

/* Length of the well-formed UTF-8 sequence that starts s[0..n) (1 for
 * ASCII), or 0 when s does not start with one. n must be at least 1. */
size_t utf8_sequence_len(const char *s, size_t n);
