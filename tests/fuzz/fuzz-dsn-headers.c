/* SPDX-License-Identifier: MIT */
/* Fuzzes the DSN builder's handling of untrusted input: the original
 * message (header extraction, line re-termination, long-line breaking,
 * boundary scan) and the peer's reply text (sanitising, folding).
 *
 * Input: [flags octet] [diagnostic text] NUL [original message]. Without a
 * NUL the whole input is the original. The flags pick RET, the size cap,
 * the header cap and SMTPUTF8. The report must always come out with CRLF
 * line ends only, no line over 998 octets, and the header end must be
 * consistent; anything else aborts.
 *
 * The fuzz targets link only the shared library, so the module under test
 * is compiled in here. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "macro.h"
#include "queued-bounce.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fixed_random(void *buf, size_t n, void *userdata) {
        uint8_t *b = buf;
        unsigned *state = userdata;

        for (size_t i = 0; i < n; i++)
                b[i] = (uint8_t) ((*state = *state * 1103515245u + 12345u) >> 16);
        return 0;
}

static void check_header_end(const uint8_t *p, size_t n) {
        bool complete;
        size_t e = bounce_header_end(p, n, &complete);

        if (e > n)
                abort();
        if (!complete) {
                if (e != n)
                        abort();
                return;
        }
        /* the empty line starts at e: e is 0 or follows a line end */
        if (e >= n || (p[e] != '\r' && p[e] != '\n'))
                abort();
        if (e > 0 && p[e - 1] != '\n' && p[e - 1] != '\r')
                abort();
}

static void check_wire(int fd) {
        uint8_t buf[65536];
        size_t line = 0;
        off_t off = 0;
        bool cr = false;

        for (;;) {
                ssize_t k = pread(fd, buf, sizeof buf, off);
                if (k < 0)
                        abort();
                if (k == 0)
                        break;
                for (ssize_t i = 0; i < k; i++) {
                        uint8_t c = buf[i];
                        if (cr) {
                                if (c != '\n')
                                        abort();
                                cr = false;
                                line = 0;
                        } else if (c == '\r')
                                cr = true;
                        else if (c == '\n' || ++line > BOUNCE_LINE_MAX)
                                abort();
                }
                off += k;
        }
        if (cr || line != 0)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *diag = NULL;
        _cleanup_close_ int orig = -1, out = -1;
        const uint8_t *nul, *msg = data;
        uint8_t flags = 0;
        size_t msg_len = size;
        unsigned seed = 1;
        BounceOptions o;
        BounceResult res;
        int r;

        if (size > 256 * 1024)
                return 0;
        check_header_end(data, size);

        if (size > 0) {
                flags = data[0];
                msg = data + 1;
                msg_len = size - 1;
        }
        nul = memchr(msg, 0, msg_len);
        if (nul) {
                diag = strndup((const char *) msg, (size_t) (nul - msg));
                if (!diag)
                        return 0;
                msg_len -= (size_t) (nul - msg) + 1;
                msg = nul + 1;
        }

        BounceEnvelope env = {
                .sender = (flags & 0x10) ? "j\xc3\xb6rg@sender.example" : "alice@sender.example",
                .envid = diag,
                .ret = (BounceRet) (flags % 3),
                .smtputf8 = flags & 0x10,
                .reporting_mta = "mx.halyard.test",
                .queue_id = "01FUZZ",
                .arrival_date = 1700000000,
        };
        BounceRecipient rcpts[2] = {
                {
                        .orcpt_type = "utf-8",
                        .orcpt = diag,
                        .final_recipient = "bob@rcpt.example",
                        .action = (flags & 0x20) ? BOUNCE_ACTION_DELAYED : BOUNCE_ACTION_FAILED,
                        .status = (flags & 0x20) ? "4.4.1" : "5.1.1",
                        .remote_mta = "mx1.rcpt.example",
                        .diagnostic = diag,
                        .last_attempt = 1700000100,
                        .will_retry_until = 1700500000,
                },
                {
                        .final_recipient = "carol@rcpt.example",
                        .action = BOUNCE_ACTION_DELIVERED,
                        .notify = BOUNCE_NOTIFY_SUCCESS,
                        .diagnostic = diag,
                },
        };

        bounce_options_init(&o);
        o.now = 1700000200;
        o.full_max = (flags & 0x40) ? 64 : 1 << 20;
        o.header_max = (flags & 0x80) ? 100 : 1 << 20;
        o.random = fixed_random;
        o.random_userdata = &seed;

        orig = memfd_create("fuzz-original", MFD_CLOEXEC);
        out = memfd_create("fuzz-dsn", MFD_CLOEXEC);
        if (orig < 0 || out < 0)
                return 0;
        if (msg_len > 0 && write(orig, msg, msg_len) != (ssize_t) msg_len)
                return 0;

        r = bounce_write(&env, rcpts, 2, orig, &o, out, &res);
        if (r == -EEXIST) /* the input holds every boundary the fixed generator makes */
                return 0;
        if (r < 0)
                abort();
        if (res.size != (uint64_t) lseek(out, 0, SEEK_END))
                abort();
        check_wire(out);
        return 0;
}
