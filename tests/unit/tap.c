/* SPDX-License-Identifier: MIT */
#include "tap.h"

TapTest tap_tests[TAP_MAX_TESTS];
unsigned tap_n_tests;
jmp_buf tap_jmp;
char tap_reason[4096];

int tap_run(void) {
        volatile unsigned failed = 0;

        printf("1..%u\n", tap_n_tests);
        for (volatile unsigned i = 0; i < tap_n_tests; i++) {
                tap_reason[0] = 0;
                if (setjmp(tap_jmp) == 0) {
                        tap_tests[i].fn();
                        printf("ok %u - %s\n", i + 1, tap_tests[i].name);
                } else {
                        failed++;
                        printf("not ok %u - %s\n# %s\n", i + 1, tap_tests[i].name, tap_reason);
                }
                fflush(stdout);
        }
        return failed ? 1 : 0;
}
