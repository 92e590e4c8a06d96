/* SPDX-License-Identifier: MIT */
/* The SMTP command line parser: each input line under several flag sets.
 * Invariants: a result is either a parsed command with bounded,
 * NUL-terminated strings, or a 5xx reply with an enhanced code and a text;
 * the same input gives the same answer twice. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd-command.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_str(const char *s, size_t cap) {
        if (!memchr(s, 0, cap))
                abort();
}

static void one(const char *p, size_t n, unsigned flags) {
        SmtpCommand c, c2;
        SmtpReplyError e = {}, e2 = {};
        int r = smtp_command_parse(p, n, flags, &c, &e);
        int r2 = smtp_command_parse(p, n, flags, &c2, &e2);
        if (r != r2)
                abort();
        if (r < 0) {
                if (r != -EINVAL || e.code < 500 || e.code > 555 || !e.enhanced || e.enhanced[0] != '5' ||
                    !e.text || !e.text[0] || e.code != e2.code || strcmp(e.enhanced, e2.enhanced) != 0)
                        abort();
                if (n > SMTP_COMMAND_LINE_MAX && e.code != 500)
                        abort();
                return;
        }
        if (r != 0 || c.verb <= SMTP_VERB_UNKNOWN || c.verb >= _SMTP_VERB_MAX || c.verb != c2.verb)
                abort();
        if (n > SMTP_COMMAND_LINE_MAX || memchr(p, 0, n) || memchr(p, '\r', n) || memchr(p, '\n', n))
                abort();
        check_str(c.arg, sizeof c.arg);
        check_str(c.path.local, sizeof c.path.local);
        check_str(c.path.domain, sizeof c.path.domain);
        check_str(c.path.address, sizeof c.path.address);
        check_str(c.envid, sizeof c.envid);
        check_str(c.orcpt, sizeof c.orcpt);
        check_str(c.orcpt_type, sizeof c.orcpt_type);
        check_str(c.mechanism, sizeof c.mechanism);
        check_str(c.initial_response, sizeof c.initial_response);
        if (strcmp(c.arg, c2.arg) != 0 || strcmp(c.path.address, c2.path.address) != 0)
                abort();
        if (c.verb == SMTP_VERB_MAIL || c.verb == SMTP_VERB_RCPT) {
                if (strlen(c.path.local) > SMTP_LOCAL_PART_MAX || strlen(c.path.domain) > SMTP_DOMAIN_MAX ||
                    strlen(c.path.address) + 2 > SMTP_PATH_MAX)
                        abort();
                if (c.path.null && c.verb != SMTP_VERB_MAIL)
                        abort();
                if (c.path.utf8 && c.verb == SMTP_VERB_MAIL && !c.smtputf8)
                        abort();
                if (c.path.utf8 && c.verb == SMTP_VERB_RCPT && !(flags & SMTP_PARSE_UTF8_TRANSACTION))
                        abort();
        }
        if (c.notify & SMTP_NOTIFY_NEVER && c.notify != SMTP_NOTIFY_NEVER)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const unsigned flag_sets[] = {
                0,
                SMTP_PARSE_SMTPUTF8 | SMTP_PARSE_8BITMIME | SMTP_PARSE_BINARYMIME | SMTP_PARSE_DSN |
                        SMTP_PARSE_SIZE | SMTP_PARSE_UTF8_TRANSACTION,
                SMTP_PARSE_DSN | SMTP_PARSE_SIZE,
        };
        const char *p = (const char *) data;

        /* the whole input as one line (may hold CR, LF, NUL, be too long) */
        for (size_t f = 0; f < sizeof flag_sets / sizeof flag_sets[0]; f++)
                one(p, size, flag_sets[f]);

        /* and each LF-separated line, without a trailing CR */
        for (size_t start = 0; start < size;) {
                const char *nl = memchr(p + start, '\n', size - start);
                size_t len = nl ? (size_t) (nl - (p + start)) : size - start;
                size_t l = len;
                if (l > 0 && p[start + l - 1] == '\r')
                        l--;
                for (size_t f = 0; f < sizeof flag_sets / sizeof flag_sets[0]; f++)
                        one(p + start, l, flag_sets[f]);
                start += len + 1;
        }
        return 0;
}
