/* SPDX-License-Identifier: MIT */
/* SMTP AUTH parsing: the password file parser and the SASL state machine.
 * First byte: bit 0 picks the parser, bits 1-3 the SASL flags.
 * Invariants: a parsed file looks every user up to a hash; the SASL machine
 * ends in DONE with NUL-terminated bounded strings, or an ERROR with a
 * 5xx code, an enhanced code of the same class and a text. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd-auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_sasl(const char *p, size_t n, unsigned flags) {
        char first[AUTH_SASL_LINE_MAX + 64];
        const char *nl = memchr(p, '\n', n);
        size_t l = nl ? (size_t) (nl - p) : n;
        AuthSasl s;
        AuthStep st;

        if (l >= sizeof first)
                return;
        memcpy(first, p, l);
        first[l] = 0;
        if (auth_sasl_start(&s, first, flags, &st) < 0)
                abort();
        p += l + (nl ? 1 : 0);
        n -= l + (nl ? 1 : 0);
        while (st.kind == AUTH_STEP_CHALLENGE) {
                if (!st.challenge)
                        abort();
                nl = memchr(p, '\n', n);
                l = nl ? (size_t) (nl - p) : n;
                if (auth_sasl_feed(&s, p, l, &st) < 0)
                        abort();
                if (!nl)
                        break;
                p += l + 1;
                n -= l + 1;
        }
        if (st.kind == AUTH_STEP_DONE) {
                if (strlen(s.user) > AUTH_USER_MAX || strlen(s.authzid) > AUTH_USER_MAX ||
                    strlen(s.password) > AUTH_PASSWORD_MAX)
                        abort();
                if (s.mech != AUTH_MECH_EXTERNAL && (!s.user[0] || !s.password[0]))
                        abort();
        } else if (st.kind == AUTH_STEP_ERROR) {
                if (st.code < 500 || st.code > 599 || !st.enhanced || st.enhanced[0] != '5' || !st.text)
                        abort();
        }
        auth_sasl_clear(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1 || size > 65536)
                return 0;
        if (data[0] & 1) {
                AuthPasswd *p = NULL;
                int r = auth_passwd_parse("fuzz", (const char *) data + 1, size - 1, NULL, NULL, &p);
                if (r >= 0 && !p)
                        abort();
                if (r < 0 && p)
                        abort();
                auth_passwd_free(p);
        } else
                fuzz_sasl((const char *) data + 1, size - 1, (data[0] >> 1) & 7);
        return 0;
}
