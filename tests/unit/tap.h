/* SPDX-License-Identifier: MIT */
#pragma once

/* A tiny TAP producer for meson's `protocol: 'tap'`.
 *
 *   TEST(name) { ASSERT_OK(f()); ASSERT_EQ(a, b); ASSERT_STREQ(s, "x"); }
 *   int main(void) { return tap_run(); }
 *
 * Each TEST registers itself (constructor); a failed assertion ends that test
 * with "not ok" and the reason, the remaining tests still run. */

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct TapTest {
        const char *name;
        void (*fn)(void);
} TapTest;

#define TAP_MAX_TESTS 256
extern TapTest tap_tests[TAP_MAX_TESTS];
extern unsigned tap_n_tests;
extern jmp_buf tap_jmp;
extern char tap_reason[4096];

#define TEST(n)                                                                 \
        static void test_##n(void);                                             \
        __attribute__((constructor)) static void tap_register_##n(void) {       \
                if (tap_n_tests < TAP_MAX_TESTS)                                \
                        tap_tests[tap_n_tests++] = (TapTest){ #n, test_##n };   \
        }                                                                       \
        static void test_##n(void)

#define TAP_FAIL(...)                                                           \
        do {                                                                    \
                int _o = snprintf(tap_reason, sizeof tap_reason, "%.200s:%d: ",     \
                                  __FILE__, __LINE__);                          \
                if (_o > 0 && (size_t) _o < sizeof tap_reason)                  \
                        snprintf(tap_reason + _o, sizeof tap_reason - _o,       \
                                 __VA_ARGS__);                                  \
                longjmp(tap_jmp, 1);                                            \
        } while (0)

#define ASSERT_TRUE(x)                                                          \
        do { if (!(x)) TAP_FAIL("assertion failed: %.300s", #x); } while (0)
#define ASSERT_FALSE(x) ASSERT_TRUE(!(x))
#define ASSERT_OK(x)                                                            \
        do {                                                                    \
                long _r = (long) (x);                                           \
                if (_r < 0)                                                     \
                        TAP_FAIL("%.300s failed: %ld (%s)", #x, _r, strerror((int) -_r)); \
        } while (0)
#define ASSERT_ERR(x, e)                                                        \
        do {                                                                    \
                long _r = (long) (x);                                           \
                if (_r != (long) (e))                                           \
                        TAP_FAIL("%.300s returned %ld, expected %ld", #x, _r, (long) (e)); \
        } while (0)
#define ASSERT_EQ(a, b)                                                         \
        do {                                                                    \
                intmax_t _a = (intmax_t) (a), _b = (intmax_t) (b);              \
                if (_a != _b)                                                   \
                        TAP_FAIL("%.300s == %.300s: %jd != %jd", #a, #b, _a, _b);       \
        } while (0)
#define ASSERT_STREQ(a, b)                                                      \
        do {                                                                    \
                const char *_a = (a), *_b = (b);                                \
                if (!_a || !_b || strcmp(_a, _b) != 0)                          \
                        TAP_FAIL("%.300s == %.300s: \"%.1000s\" != \"%.1000s\"", #a, #b,          \
                                 _a ? _a : "(null)", _b ? _b : "(null)");       \
        } while (0)
#define ASSERT_NULL(x) ASSERT_TRUE((x) == NULL)
#define ASSERT_NOT_NULL(x) ASSERT_TRUE((x) != NULL)

int tap_run(void);
