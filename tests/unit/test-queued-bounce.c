/* SPDX-License-Identifier: MIT */
/* Tests of the DSN builder (services/queued/queued-bounce.c). Every
 * generated report is checked twice: here, on the wire form (CRLF, line
 * length, fields), and by tests/unit/check-dsn.py with Python's email
 * package, which parses it independently. */

#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "queued-bounce.h"
#include "tap.h"

extern char **environ;

#define NOW ((time_t) 1700000000) /* Tue, 14 Nov 2023 22:13:20 +0000 */

static const char small_original[] =
        "Received: from client.example (client.example [192.0.2.1])\r\n"
        "\tby mx.halyard.test; Tue, 14 Nov 2023 20:00:00 +0000\r\n"
        "From: Alice <alice@sender.example>\r\n"
        "To: Bob <bob@rcpt.example>\r\n"
        "Subject: quarterly numbers\r\n"
        "Message-ID: <orig-1@sender.example>\r\n"
        "Date: Tue, 14 Nov 2023 20:00:00 +0000\r\n"
        "\r\n"
        "Hello Bob,\r\n"
        "BODY-MARKER the numbers are attached.\r\n";

static int memfd_with(const void *data, size_t n) {
        int fd = memfd_create("original", MFD_CLOEXEC);
        const char *p = data;

        if (fd < 0)
                return -errno;
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k <= 0) {
                        close(fd);
                        return -EIO;
                }
                p += k;
                n -= (size_t) k;
        }
        return fd;
}

static char *read_all(int fd, size_t *ret_len) {
        struct stat st;
        char *b;

        if (fstat(fd, &st) < 0)
                return NULL;
        b = malloc((size_t) st.st_size + 1);
        if (!b)
                return NULL;
        if (pread(fd, b, (size_t) st.st_size, 0) != st.st_size) {
                free(b);
                return NULL;
        }
        b[st.st_size] = 0;
        if (ret_len)
                *ret_len = (size_t) st.st_size;
        return b;
}

/* Streams the report: CRLF only, no line over 998 octets, ends in CRLF. */
static void check_wire(int fd) {
        uint8_t buf[65536];
        size_t line = 0;
        uint64_t off = 0;
        bool cr = false;

        for (;;) {
                ssize_t k = pread(fd, buf, sizeof buf, (off_t) off);
                ASSERT_TRUE(k >= 0);
                if (k == 0)
                        break;
                for (ssize_t i = 0; i < k; i++) {
                        uint8_t c = buf[i];
                        if (cr) {
                                if (c != '\n')
                                        TAP_FAIL("bare CR at octet %ju", (uintmax_t) (off + i));
                                cr = false;
                                line = 0;
                                continue;
                        }
                        if (c == '\r') {
                                cr = true;
                                continue;
                        }
                        if (c == '\n')
                                TAP_FAIL("bare LF at octet %ju", (uintmax_t) (off + i));
                        if (++line > BOUNCE_LINE_MAX)
                                TAP_FAIL("line longer than 998 octets at octet %ju", (uintmax_t) (off + i));
                }
                off += (uint64_t) k;
        }
        ASSERT_FALSE(cr);
        ASSERT_EQ(line, 0);
}

/* The checker sits next to this file; __FILE__ is relative to the build
 * root, which is two levels above this binary. */
static const char *checker_path(char *buf, size_t n) {
        char exe[PATH_MAX / 2];
        ssize_t k;

        if (__FILE__[0] == '/') {
                snprintf(buf, n, "%s", __FILE__);
        } else {
                k = readlink("/proc/self/exe", exe, sizeof exe - 1);
                if (k < 0)
                        return NULL;
                exe[k] = 0;
                for (int up = 0; up < 3; up++) {
                        char *s = strrchr(exe, '/');
                        if (!s)
                                return NULL;
                        *s = 0;
                }
                snprintf(buf, n, "%s/%s", exe, __FILE__);
        }
        char *s = strrchr(buf, '/');
        if (!s)
                return NULL;
        snprintf(s + 1, n - (size_t) (s + 1 - buf), "check-dsn.py");
        return access(buf, R_OK) == 0 ? buf : NULL;
}

/* Runs check-dsn.py on the report in fd; fails the test with its output. */
static void check_py(int fd, const char *const *checks) {
        char script[PATH_MAX + 64], path[64], out[3000];
        const char *argv[128];
        size_t n = 0, got = 0;
        int pipefd[2], status;
        posix_spawn_file_actions_t fa;
        pid_t pid;

        ASSERT_NOT_NULL(checker_path(script, sizeof script));
        snprintf(path, sizeof path, "/proc/%d/fd/%d", (int) getpid(), fd);
        argv[n++] = "/usr/bin/python3";
        argv[n++] = script;
        argv[n++] = path;
        for (size_t i = 0; checks && checks[i] && n < ELEMENTSOF(argv) - 1; i++)
                argv[n++] = checks[i];
        argv[n] = NULL;

        ASSERT_OK(pipe2(pipefd, O_CLOEXEC));
        ASSERT_EQ(posix_spawn_file_actions_init(&fa), 0);
        ASSERT_EQ(posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1), 0);
        ASSERT_EQ(posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2), 0);
        ASSERT_EQ(posix_spawn(&pid, argv[0], &fa, NULL, (char *const *) argv, environ), 0);
        posix_spawn_file_actions_destroy(&fa);
        close(pipefd[1]);
        for (;;) {
                ssize_t k = read(pipefd[0], out + got, sizeof out - 1 - got);
                if (k <= 0)
                        break;
                got += (size_t) k;
                if (got == sizeof out - 1) {
                        char sink[4096];
                        while (read(pipefd[0], sink, sizeof sink) > 0)
                                ;
                        break;
                }
        }
        out[got] = 0;
        close(pipefd[0]);
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                TAP_FAIL("check-dsn.py: %s", out);
}

#define CHECK_PY(fd, ...) check_py(fd, (const char *const[]) { __VA_ARGS__, NULL })

static BounceOptions test_options(void) {
        BounceOptions o;

        bounce_options_init(&o);
        o.now = NOW;
        return o;
}

static BounceEnvelope test_envelope(void) {
        return (BounceEnvelope) {
                .sender = "alice@sender.example",
                .envid = "QQ314159",
                .reporting_mta = "mx.halyard.test",
                .received_from_mta = "client.example",
                .queue_id = "01HF3ABCDEF",
                .arrival_date = NOW - 3600,
        };
}

static BounceRecipient failed_rcpt(void) {
        return (BounceRecipient) {
                .orcpt_type = "rfc822",
                .orcpt = "bob@rcpt.example",
                .final_recipient = "bob@rcpt.example",
                .action = BOUNCE_ACTION_FAILED,
                .status = "5.1.1",
                .remote_mta = "mx1.rcpt.example",
                .diagnostic = "550 5.1.1 <bob@rcpt.example>: Recipient address rejected: User unknown",
                .last_attempt = NOW - 60,
        };
}

/* Builds a report into a new memfd; returns the fd or a negative errno. */
static int make_dsn(const BounceEnvelope *env, const BounceRecipient *r, size_t n, int orig_fd,
                    const BounceOptions *o, BounceResult *res) {
        int fd = memfd_create("dsn", 0), k;

        if (fd < 0)
                return -errno;
        k = bounce_write(env, r, n, orig_fd, o, fd, res);
        if (k < 0) {
                close(fd);
                return k;
        }
        return fd;
}

/* ---- decisions ---- */

TEST(needed_table) {
        static const struct {
                const char *sender;
                BounceAction action;
                unsigned notify;
                bool want;
        } cases[] = {
                /* NOTIFY absent = FAILURE,DELAY */
                { "a@b.example", BOUNCE_ACTION_FAILED, 0, true },
                { "a@b.example", BOUNCE_ACTION_DELAYED, 0, true },
                { "a@b.example", BOUNCE_ACTION_DELIVERED, 0, false },
                { "a@b.example", BOUNCE_ACTION_RELAYED, 0, false },
                { "a@b.example", BOUNCE_ACTION_EXPANDED, 0, false },
                /* NEVER, alone and (illegally) combined */
                { "a@b.example", BOUNCE_ACTION_FAILED, BOUNCE_NOTIFY_NEVER, false },
                { "a@b.example", BOUNCE_ACTION_DELAYED, BOUNCE_NOTIFY_NEVER, false },
                { "a@b.example", BOUNCE_ACTION_DELIVERED, BOUNCE_NOTIFY_NEVER, false },
                { "a@b.example", BOUNCE_ACTION_FAILED, BOUNCE_NOTIFY_NEVER | BOUNCE_NOTIFY_FAILURE, false },
                /* explicit sets */
                { "a@b.example", BOUNCE_ACTION_FAILED, BOUNCE_NOTIFY_FAILURE, true },
                { "a@b.example", BOUNCE_ACTION_DELAYED, BOUNCE_NOTIFY_FAILURE, false },
                { "a@b.example", BOUNCE_ACTION_DELIVERED, BOUNCE_NOTIFY_FAILURE, false },
                { "a@b.example", BOUNCE_ACTION_FAILED, BOUNCE_NOTIFY_DELAY, false },
                { "a@b.example", BOUNCE_ACTION_DELAYED, BOUNCE_NOTIFY_DELAY, true },
                { "a@b.example", BOUNCE_ACTION_FAILED, BOUNCE_NOTIFY_SUCCESS, false },
                { "a@b.example", BOUNCE_ACTION_DELAYED, BOUNCE_NOTIFY_SUCCESS, false },
                { "a@b.example", BOUNCE_ACTION_DELIVERED, BOUNCE_NOTIFY_SUCCESS, true },
                { "a@b.example", BOUNCE_ACTION_RELAYED, BOUNCE_NOTIFY_SUCCESS, true },
                { "a@b.example", BOUNCE_ACTION_EXPANDED, BOUNCE_NOTIFY_SUCCESS, true },
                { "a@b.example", BOUNCE_ACTION_DELIVERED, BOUNCE_NOTIFY_SUCCESS | BOUNCE_NOTIFY_FAILURE | BOUNCE_NOTIFY_DELAY, true },
                { "a@b.example", BOUNCE_ACTION_DELAYED, BOUNCE_NOTIFY_SUCCESS | BOUNCE_NOTIFY_FAILURE | BOUNCE_NOTIFY_DELAY, true },
                { "a@b.example", BOUNCE_ACTION_FAILED, BOUNCE_NOTIFY_SUCCESS | BOUNCE_NOTIFY_FAILURE, true },
                /* the null sender gets nothing, whatever NOTIFY says */
                { "", BOUNCE_ACTION_FAILED, 0, false },
                { "", BOUNCE_ACTION_FAILED, BOUNCE_NOTIFY_FAILURE, false },
                { "", BOUNCE_ACTION_DELAYED, BOUNCE_NOTIFY_DELAY, false },
                { "", BOUNCE_ACTION_DELIVERED, BOUNCE_NOTIFY_SUCCESS, false },
                { NULL, BOUNCE_ACTION_FAILED, BOUNCE_NOTIFY_FAILURE, false },
                /* an out-of-range action is never reported */
                { "a@b.example", (BounceAction) 17, BOUNCE_NOTIFY_SUCCESS | BOUNCE_NOTIFY_FAILURE | BOUNCE_NOTIFY_DELAY, false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                BounceEnvelope env = { .sender = cases[i].sender, .reporting_mta = "mx.halyard.test" };
                BounceRecipient r = { .final_recipient = "x@y.example", .action = cases[i].action,
                                      .notify = cases[i].notify };
                if (bounce_recipient_needed(&env, &r) != cases[i].want)
                        TAP_FAIL("case %zu: sender=%s action=%d notify=%#x: want %d", i,
                                 cases[i].sender ?: "(null)", (int) cases[i].action, cases[i].notify,
                                 cases[i].want);
                ASSERT_EQ(bounce_needed(&env, &r, 1), cases[i].want ? 1 : 0);
        }
}

TEST(needed_counts_and_nodata) {
        BounceEnvelope env = test_envelope();
        BounceOptions o = test_options();
        BounceRecipient rs[4] = { failed_rcpt(), failed_rcpt(), failed_rcpt(), failed_rcpt() };
        int fd;

        rs[1].notify = BOUNCE_NOTIFY_NEVER;
        rs[2].action = BOUNCE_ACTION_DELIVERED; /* no SUCCESS asked */
        rs[3].action = BOUNCE_ACTION_DELAYED;
        rs[3].status = "4.4.1";
        ASSERT_EQ(bounce_needed(&env, rs, 4), 2);
        ASSERT_EQ(bounce_needed(&env, rs + 1, 2), 0);
        ASSERT_EQ(bounce_needed(&env, rs, 0), 0);

        /* Nothing to report: -ENODATA and nothing written. */
        fd = memfd_create("dsn", MFD_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ASSERT_ERR(bounce_write(&env, rs + 1, 2, -1, &o, fd, NULL), -ENODATA);
        env.sender = "";
        ASSERT_ERR(bounce_write(&env, rs, 4, -1, &o, fd, NULL), -ENODATA);
        env.sender = NULL;
        ASSERT_ERR(bounce_write(&env, rs, 4, -1, &o, fd, NULL), -ENODATA);
        ASSERT_EQ(lseek(fd, 0, SEEK_END), 0);
        close(fd);
}

/* ---- reports ---- */

TEST(failed_full_default_ret) {
        BounceEnvelope env = test_envelope();
        BounceRecipient r = failed_rcpt();
        BounceOptions o = test_options();
        BounceResult res;
        _cleanup_free_ char *text = NULL;
        int orig, fd;

        orig = memfd_with(small_original, sizeof small_original - 1);
        ASSERT_TRUE(orig >= 0);
        fd = make_dsn(&env, &r, 1, orig, &o, &res);
        ASSERT_OK(fd);

        ASSERT_STREQ(res.mail_from, "");
        ASSERT_STREQ(res.rcpt_to, "alice@sender.example");
        ASSERT_FALSE(res.smtputf8);
        ASSERT_FALSE(res.eightbit);
        ASSERT_EQ(res.n_reported, 1);
        ASSERT_EQ(res.returned, BOUNCE_RETURNED_FULL);
        ASSERT_EQ(res.size, (uint64_t) lseek(fd, 0, SEEK_END));

        check_wire(fd);
        text = read_all(fd, NULL);
        ASSERT_NOT_NULL(text);
        ASSERT_TRUE(strncmp(text, "From: \"Mail Delivery System\" <MAILER-DAEMON@mx.halyard.test>\r\n",
                            strlen("From: \"Mail Delivery System\" <MAILER-DAEMON@mx.halyard.test>\r\n")) == 0);
        ASSERT_NOT_NULL(strstr(text, "\r\nTo: <alice@sender.example>\r\n"));
        ASSERT_NOT_NULL(strstr(text, "\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
        ASSERT_NOT_NULL(strstr(text, "\r\nAuto-Submitted: auto-replied\r\n"));
        ASSERT_NOT_NULL(strstr(text, "\r\nReporting-MTA: dns; mx.halyard.test\r\n"));
        ASSERT_NOT_NULL(strstr(text, "\r\nArrival-Date: Tue, 14 Nov 2023 21:13:20 +0000\r\n"));
        ASSERT_NOT_NULL(strstr(text, "\r\nFinal-Recipient: rfc822; bob@rcpt.example\r\n"));
        ASSERT_NOT_NULL(strstr(text, "BODY-MARKER"));

        CHECK_PY(fd,
                 "msg:Subject=Undelivered Mail Returned to Sender",
                 "to=alice@sender.example",
                 "msg:Auto-Submitted=auto-replied",
                 "report-type=delivery-status",
                 "parts=3",
                 "part3=message/rfc822",
                 "cte3=",
                 "pm:Reporting-MTA=dns; mx.halyard.test",
                 "pm:X-Halyard-Queue-ID=01HF3ABCDEF",
                 "pm:Original-Envelope-Id=QQ314159",
                 "pm:Received-From-MTA=dns; client.example",
                 "pm:Arrival-Date=Tue, 14 Nov 2023 21:13:20 +0000",
                 "rcpts=1",
                 "rcpt0:Original-Recipient=rfc822; bob@rcpt.example",
                 "rcpt0:Final-Recipient=rfc822; bob@rcpt.example",
                 "rcpt0:Action=failed",
                 "rcpt0:Status=5.1.1",
                 "rcpt0:Remote-MTA=dns; mx1.rcpt.example",
                 "rcpt0:Diagnostic-Code=smtp; 550 5.1.1 <bob@rcpt.example>: Recipient address rejected: User unknown",
                 "rcpt0:Last-Attempt-Date=Tue, 14 Nov 2023 22:12:20 +0000",
                 "rcpt0:!Will-Retry-Until",
                 "human~<bob@rcpt.example>: delivery failed permanently.",
                 "human~Status: 5.1.1",
                 "human~User unknown",
                 "orig:Subject=quarterly numbers",
                 "orig:Message-ID=<orig-1@sender.example>",
                 "orig~BODY-MARKER");
        close(fd);
        close(orig);
}

TEST(ret_hdrs_returns_header_only) {
        BounceEnvelope env = test_envelope();
        BounceRecipient r = failed_rcpt();
        BounceOptions o = test_options();
        BounceResult res;
        int orig, fd;

        env.ret = BOUNCE_RET_HDRS;
        env.envid = NULL;
        r.orcpt_type = NULL; /* no ORCPT: no Original-Recipient (RFC 3461 §6.3) */
        orig = memfd_with(small_original, sizeof small_original - 1);
        ASSERT_TRUE(orig >= 0);
        fd = make_dsn(&env, &r, 1, orig, &o, &res);
        ASSERT_OK(fd);
        ASSERT_EQ(res.returned, BOUNCE_RETURNED_HEADERS);
        check_wire(fd);
        CHECK_PY(fd, "parts=3", "part3=text/rfc822-headers", "orig:Subject=quarterly numbers",
                 "orig~Message-ID: <orig-1@sender.example>", "orig!~BODY-MARKER", "orig!~Hello Bob",
                 "pm:!Original-Envelope-Id", "rcpt0:!Original-Recipient", "raw!~BODY-MARKER");
        close(fd);
        close(orig);
}

TEST(ret_full_over_cap_returns_header_with_note) {
        BounceEnvelope env = test_envelope();
        BounceRecipient r = failed_rcpt();
        BounceOptions o = test_options();
        BounceResult res;
        int orig, fd;

        env.ret = BOUNCE_RET_FULL;
        o.full_max = 100; /* the original is larger */
        orig = memfd_with(small_original, sizeof small_original - 1);
        ASSERT_TRUE(orig >= 0);
        fd = make_dsn(&env, &r, 1, orig, &o, &res);
        ASSERT_OK(fd);
        ASSERT_EQ(res.returned, BOUNCE_RETURNED_HEADERS);
        check_wire(fd);
        CHECK_PY(fd, "part3=text/rfc822-headers", "orig!~BODY-MARKER",
                 "human~more than the 100 octets returned in full; only its header is attached.");

        /* Exactly at the cap: returned whole. */
        close(fd);
        o.full_max = sizeof small_original - 1;
        fd = make_dsn(&env, &r, 1, orig, &o, &res);
        ASSERT_OK(fd);
        ASSERT_EQ(res.returned, BOUNCE_RETURNED_FULL);
        CHECK_PY(fd, "part3=message/rfc822", "orig~BODY-MARKER", "human!~only its header");
        close(fd);
        close(orig);
}

TEST(delayed_warning) {
        BounceEnvelope env = test_envelope();
        BounceRecipient r = failed_rcpt();
        BounceOptions o = test_options();
        BounceResult res;
        int orig, fd;

        env.ret = BOUNCE_RET_FULL; /* no failure in the report: header only all the same */
        r.action = BOUNCE_ACTION_DELAYED;
        r.status = "4.4.1";
        r.diagnostic = "connect to mx1.rcpt.example[198.51.100.7]:25: Connection timed out";
        r.diagnostic_type = "X-Halyard";
        r.will_retry_until = NOW + 5 * 86400;
        orig = memfd_with(small_original, sizeof small_original - 1);
        ASSERT_TRUE(orig >= 0);
        fd = make_dsn(&env, &r, 1, orig, &o, &res);
        ASSERT_OK(fd);
        ASSERT_EQ(res.returned, BOUNCE_RETURNED_HEADERS);
        check_wire(fd);
        CHECK_PY(fd, "msg:Subject=Delayed Mail (still being retried)", "part3=text/rfc822-headers",
                 "rcpt0:Action=delayed", "rcpt0:Status=4.4.1",
                 "rcpt0:Will-Retry-Until=Sun, 19 Nov 2023 22:13:20 +0000",
                 "rcpt0:Diagnostic-Code=X-Halyard; connect to mx1.rcpt.example[198.51.100.7]:25: Connection timed out",
                 "human~delivery is delayed", "human~you do not need to send it again",
                 "human!~permanent", "orig!~BODY-MARKER");
        close(fd);

        /* NOTIFY=FAILURE: no delay warning. */
        r.notify = BOUNCE_NOTIFY_FAILURE;
        ASSERT_ERR(make_dsn(&env, &r, 1, orig, &o, &res), -ENODATA);
        close(orig);
}

TEST(success_reports) {
        BounceEnvelope env = test_envelope();
        BounceRecipient rs[3] = { failed_rcpt(), failed_rcpt(), failed_rcpt() };
        BounceOptions o = test_options();
        BounceResult res;
        int orig, fd;

        for (size_t i = 0; i < 3; i++) {
                rs[i].notify = BOUNCE_NOTIFY_SUCCESS;
                rs[i].status = "2.0.0";
                rs[i].diagnostic = "250 2.0.0 Ok: queued as 4FF";
        }
        rs[0].action = BOUNCE_ACTION_DELIVERED;
        rs[1].action = BOUNCE_ACTION_RELAYED;
        rs[1].final_recipient = "carol@legacy.example";
        rs[2].action = BOUNCE_ACTION_EXPANDED;
        rs[2].final_recipient = "list@rcpt.example";
        rs[2].status = NULL; /* defaults to 2.0.0 */
        orig = memfd_with(small_original, sizeof small_original - 1);
        ASSERT_TRUE(orig >= 0);
        fd = make_dsn(&env, rs, 3, orig, &o, &res);
        ASSERT_OK(fd);
        ASSERT_EQ(res.n_reported, 3);
        ASSERT_EQ(res.returned, BOUNCE_RETURNED_HEADERS);
        check_wire(fd);
        CHECK_PY(fd, "msg:Subject=Successful Mail Delivery Report", "rcpts=3",
                 "rcpt0:Action=delivered", "rcpt1:Action=relayed", "rcpt2:Action=expanded",
                 "rcpt1:Final-Recipient=rfc822; carol@legacy.example", "rcpt2:Status=2.0.0",
                 "part3=text/rfc822-headers", "human~was delivered", "human~does not send delivery reports",
                 "orig!~BODY-MARKER");
        close(fd);
        close(orig);
}

TEST(mixed_recipients) {
        BounceEnvelope env = test_envelope();
        BounceRecipient rs[5] = { failed_rcpt(), failed_rcpt(), failed_rcpt(), failed_rcpt(), failed_rcpt() };
        BounceOptions o = test_options();
        BounceResult res;
        int orig, fd;

        rs[0].final_recipient = rs[0].orcpt = "one@rcpt.example";
        rs[1].final_recipient = "two@rcpt.example"; /* delayed, but only FAILURE asked */
        rs[1].action = BOUNCE_ACTION_DELAYED;
        rs[1].status = "4.2.2";
        rs[1].notify = BOUNCE_NOTIFY_FAILURE;
        rs[2].final_recipient = "three@rcpt.example"; /* delivered, SUCCESS asked */
        rs[2].orcpt = "Three+tag@rcpt.example";
        rs[2].action = BOUNCE_ACTION_DELIVERED;
        rs[2].status = "2.0.0";
        rs[2].notify = BOUNCE_NOTIFY_SUCCESS | BOUNCE_NOTIFY_FAILURE;
        rs[2].diagnostic = NULL;
        rs[3].final_recipient = "four@rcpt.example"; /* NEVER */
        rs[3].notify = BOUNCE_NOTIFY_NEVER;
        rs[4].final_recipient = "five@rcpt.example"; /* delayed, default NOTIFY */
        rs[4].orcpt_type = NULL;
        rs[4].action = BOUNCE_ACTION_DELAYED;
        rs[4].status = "4.2.2";
        rs[4].diagnostic = "452 4.2.2 Mailbox full";
        rs[4].will_retry_until = NOW + 86400;

        orig = memfd_with(small_original, sizeof small_original - 1);
        ASSERT_TRUE(orig >= 0);
        fd = make_dsn(&env, rs, 5, orig, &o, &res);
        ASSERT_OK(fd);
        ASSERT_EQ(res.n_reported, 3);
        ASSERT_EQ(res.returned, BOUNCE_RETURNED_FULL); /* a failure is in it */
        check_wire(fd);
        CHECK_PY(fd, "msg:Subject=Undelivered Mail Returned to Sender", "rcpts=3",
                 "rcpt0:Final-Recipient=rfc822; one@rcpt.example", "rcpt0:Action=failed",
                 "rcpt1:Final-Recipient=rfc822; three@rcpt.example", "rcpt1:Action=delivered",
                 "rcpt1:Original-Recipient=rfc822; Three+tag@rcpt.example", "rcpt1:!Diagnostic-Code",
                 "rcpt2:Final-Recipient=rfc822; five@rcpt.example", "rcpt2:Action=delayed",
                 "rcpt2:Status=4.2.2", "rcpt2:!Original-Recipient",
                 "rcpt2:Will-Retry-Until=Wed, 15 Nov 2023 22:13:20 +0000",
                 "raw!~two@rcpt.example", "raw!~four@rcpt.example",
                 "human~<one@rcpt.example>: delivery failed", "human~<three@rcpt.example>: delivered.",
                 "human~(originally addressed to <Three+tag@rcpt.example>)",
                 "human~<five@rcpt.example>: delivery is delayed", "human~Mailbox full",
                 "part3=message/rfc822", "orig~BODY-MARKER");
        close(fd);
        close(orig);
}

TEST(injection_in_diagnostic_envid_orcpt) {
        BounceEnvelope env = test_envelope();
        BounceRecipient r = failed_rcpt();
        BounceOptions o = test_options();
        BounceResult res;
        _cleanup_free_ char *diag = NULL, *text = NULL;
        const char *evil = "550 5.1.1 nope\r\nBcc: victim@evil.example\r\n\r\n"
                           "Content-Type: text/html\nX-Injected: 1\rX-Also: 2\t\v\f\x01\x7f end ";
        size_t elen = strlen(evil), n;
        int fd;

        /* the evil prefix, then a 5000-octet token, then more words */
        diag = malloc(elen + 5000 + 64);
        ASSERT_NOT_NULL(diag);
        memcpy(diag, evil, elen);
        memset(diag + elen, 'A', 5000);
        strcpy(diag + elen + 5000, " tail words that never appear");

        r.diagnostic = diag;
        env.envid = "id\r\nBcc: envid@evil.example";
        r.orcpt = "bob@rcpt.example\r\nX-Orcpt-Injected: 1";
        fd = make_dsn(&env, &r, 1, -1, &o, &res);
        ASSERT_OK(fd);
        ASSERT_EQ(res.returned, BOUNCE_RETURNED_NONE);
        check_wire(fd);
        text = read_all(fd, &n);
        ASSERT_NOT_NULL(text);
        ASSERT_NULL(strstr(text, "\r\nBcc:"));
        ASSERT_NULL(strstr(text, "\r\nX-Injected"));
        ASSERT_NULL(strstr(text, "\r\nX-Also"));
        ASSERT_NULL(strstr(text, "\r\nX-Orcpt-Injected"));
        ASSERT_NULL(strstr(text, "\r\nContent-Type: text/html"));
        ASSERT_NULL(strstr(text, "tail words")); /* capped at BOUNCE_DIAGNOSTIC_MAX */
        ASSERT_NULL(memchr(text, '\x01', n));
        ASSERT_NULL(memchr(text, '\x7f', n));
        ASSERT_NULL(strstr(text, "2\t"));
        CHECK_PY(fd, "parts=2",
                 "rcpt0:Diagnostic-Code~smtp; 550 5.1.1 nope Bcc: victim@evil.example Content-Type: text/html X-Injected: 1 X-Also: 2 end AAAA",
                 "rcpt0:Diagnostic-Code~AAA...",
                 "pm:Original-Envelope-Id=id Bcc: envid@evil.example",
                 "rcpt0:Original-Recipient=rfc822; bob@rcpt.example X-Orcpt-Injected: 1",
                 "rawline!^Bcc", "rawline!^X-Injected", "rawline!^X-Orcpt-Injected",
                 "human~Bcc: victim@evil.example");
        close(fd);
}

TEST(non_ascii_diagnostic_in_plain_report) {
        BounceEnvelope env = test_envelope();
        BounceRecipient r = failed_rcpt();
        BounceOptions o = test_options();
        BounceResult res;
        int fd;

        r.diagnostic = "550 5.1.1 Benutzer unbekannt: M\xc3\xbcller \xff\xfe" " broken";
        r.orcpt = "b\xc3\xb6" "b+x=y@rcpt.example"; /* ORCPT may be UTF-8 even in a plain report */
        r.orcpt_type = "utf-8";
        fd = make_dsn(&env, &r, 1, -1, &o, &res);
        ASSERT_OK(fd);
        ASSERT_FALSE(res.smtputf8);
        ASSERT_FALSE(res.eightbit);
        check_wire(fd);
        CHECK_PY(fd, "report-type=delivery-status",
                 "rcpt0:Diagnostic-Code=smtp; 550 5.1.1 Benutzer unbekannt: M?ller ?? broken",
                 "rcpt0:Original-Recipient=utf-8; b\\x{F6}b\\x{2B}x\\x{3D}y@rcpt.example",
                 "human~M?ller");
        close(fd);
}

TEST(smtputf8_global_report) {
        BounceEnvelope env = test_envelope();
        BounceRecipient rs[2] = { failed_rcpt(), failed_rcpt() };
        BounceOptions o = test_options();
        BounceResult res;
        static const char orig_text[] =
                "From: =?utf-8?q?J=C3=B6rg?= <j\xc3\xb6rg@absender.example>\r\n"
                "To: \xc3\xb1" "and\xc3\xba@rcpt.example\r\n"
                "Subject: Gr\xc3\xbc\xc3\x9f" "e\r\n"
                "\r\n"
                "K\xc3\xb6rper BODY-MARKER\r\n";
        int orig, fd;

        env.sender = "j\xc3\xb6rg@absender.example";
        env.smtputf8 = true;
        rs[0].final_recipient = rs[0].orcpt = "\xc3\xb1" "and\xc3\xba@rcpt.example";
        rs[0].orcpt_type = "utf-8";
        rs[0].diagnostic = "550 5.1.1 Empf\xc3\xa4nger unbekannt";
        rs[1].final_recipient = "plain@rcpt.example";
        rs[1].orcpt_type = NULL;
        orig = memfd_with(orig_text, sizeof orig_text - 1);
        ASSERT_TRUE(orig >= 0);
        fd = make_dsn(&env, rs, 2, orig, &o, &res);
        ASSERT_OK(fd);
        ASSERT_TRUE(res.smtputf8);
        ASSERT_TRUE(res.eightbit);
        ASSERT_STREQ(res.rcpt_to, "j\xc3\xb6rg@absender.example");
        check_wire(fd);
        CHECK_PY(fd, "report-type=global-delivery-status", "parts=3", "part3=message/global",
                 "cte3=8bit", "to=j\xc3\xb6rg@absender.example",
                 "pm:X-Halyard-Sender=utf-8; j\xc3\xb6rg@absender.example",
                 "rcpts=2",
                 "rcpt0:Final-Recipient=utf-8; \xc3\xb1" "and\xc3\xba@rcpt.example",
                 "rcpt0:Original-Recipient=utf-8; \xc3\xb1" "and\xc3\xba@rcpt.example",
                 "rcpt0:Diagnostic-Code=smtp; 550 5.1.1 Empf\xc3\xa4nger unbekannt",
                 "rcpt1:Final-Recipient=rfc822; plain@rcpt.example",
                 "human~<\xc3\xb1" "and\xc3\xba@rcpt.example>: delivery failed",
                 "orig~K\xc3\xb6rper BODY-MARKER", "orig~Subject: Gr\xc3\xbc\xc3\x9f" "e");
        close(fd);

        /* Header only: message/global-headers. */
        env.ret = BOUNCE_RET_HDRS;
        fd = make_dsn(&env, rs, 2, orig, &o, &res);
        ASSERT_OK(fd);
        check_wire(fd);
        CHECK_PY(fd, "report-type=global-delivery-status", "part3=message/global-headers",
                 "orig!~BODY-MARKER", "orig~Subject: Gr\xc3\xbc\xc3\x9f" "e");
        close(fd);
        close(orig);
}

TEST(original_line_endings_and_long_lines) {
        BounceEnvelope env = test_envelope();
        BounceRecipient r = failed_rcpt();
        BounceOptions o = test_options();
        BounceResult res;
        char *orig_text;
        size_t n = 0;
        int orig, fd;

        orig_text = malloc(20000);
        ASSERT_NOT_NULL(orig_text);
        n += (size_t) sprintf(orig_text + n, "From: a@sender.example\nSubject: bare LF\rX-Bare-CR: yes\r\nX-Long: ");
        memset(orig_text + n, 'h', 3000);
        n += 3000;
        n += (size_t) sprintf(orig_text + n, "\nTo: bob@rcpt.example\n\nbody line one\rbody line two\n");
        memset(orig_text + n, 'b', 5000);
        n += 5000;
        n += (size_t) sprintf(orig_text + n, "\nLAST-LINE-NO-EOL");

        orig = memfd_with(orig_text, n);
        free(orig_text);
        ASSERT_TRUE(orig >= 0);
        fd = make_dsn(&env, &r, 1, orig, &o, &res);
        ASSERT_OK(fd);
        ASSERT_EQ(res.returned, BOUNCE_RETURNED_FULL);
        check_wire(fd);
        CHECK_PY(fd, "part3=message/rfc822", "orig:Subject=bare LF", "orig:X-Bare-CR=yes",
                 "orig:To=bob@rcpt.example", "orig~body line one", "orig~body line two",
                 "orig~LAST-LINE-NO-EOL");
        close(fd);

        /* Header only: the header ends at the first empty line, whatever
         * the line ends are. */
        env.ret = BOUNCE_RET_HDRS;
        fd = make_dsn(&env, &r, 1, orig, &o, &res);
        ASSERT_OK(fd);
        check_wire(fd);
        CHECK_PY(fd, "part3=text/rfc822-headers", "orig:To=bob@rcpt.example", "orig!~body line");
        close(fd);
        close(orig);
}

TEST(header_end) {
        static const struct {
                const char *in;
                size_t want;
                bool complete;
        } cases[] = {
                { "", 0, false },
                { "\r\n", 0, true },
                { "\n", 0, true },
                { "A: b\r\n\r\nbody", 6, true },
                { "A: b\n\nbody", 5, true },
                { "A: b\r\rbody", 5, true },
                { "A: b\r\n c\r\n\r\n", 10, true },
                { "A: b\r\nB: c\r\n", 12, false },
                { "A: b", 4, false },
                { "A: b\r\n \r\nbody", 13, false }, /* a line of one space is not empty */
                { "A: b\r\n\n", 6, true },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                bool complete;
                size_t got = bounce_header_end((const uint8_t *) cases[i].in, strlen(cases[i].in), &complete);
                if (got != cases[i].want || complete != cases[i].complete)
                        TAP_FAIL("case %zu: got %zu/%d, want %zu/%d", i, got, complete, cases[i].want,
                                 cases[i].complete);
        }
}

TEST(header_cap) {
        BounceEnvelope env = test_envelope();
        BounceRecipient r = failed_rcpt();
        BounceOptions o = test_options();
        BounceResult res;
        size_t n = 0, cap = 3u << 20;
        char *big;
        int orig, fd;

        /* 3 MiB of header lines, then a body */
        big = malloc(cap + 100);
        ASSERT_NOT_NULL(big);
        n += (size_t) sprintf(big, "Subject: huge header\r\n");
        for (unsigned i = 0; n < cap; i++)
                n += (size_t) sprintf(big + n, "X-Filler-%07u: %s\r\n", i, "0123456789012345678901234567890123456789");
        n += (size_t) sprintf(big + n, "\r\nBODY-MARKER\r\n");
        orig = memfd_with(big, n);
        free(big);
        ASSERT_TRUE(orig >= 0);

        env.ret = BOUNCE_RET_HDRS;
        o.header_max = 64 * 1024;
        fd = make_dsn(&env, &r, 1, orig, &o, &res);
        ASSERT_OK(fd);
        ASSERT_EQ(res.returned, BOUNCE_RETURNED_HEADERS);
        ASSERT_TRUE(res.size < 80 * 1024);
        check_wire(fd);
        CHECK_PY(fd, "part3=text/rfc822-headers", "orig:Subject=huge header", "orig!~BODY-MARKER",
                 "human~header was too long to be returned whole");
        close(fd);
        close(orig);
}

/* Hands out zero bytes until told otherwise, so the first boundary is
 * predictable; then counts up. */
typedef struct FakeRandom {
        unsigned zero_calls; /* calls answered with zeros */
        unsigned calls;
        uint8_t next;
} FakeRandom;

static int fake_random(void *buf, size_t n, void *userdata) {
        FakeRandom *f = userdata;
        uint8_t *b = buf;

        if (f->calls++ < f->zero_calls) {
                memset(buf, 0, n);
                return 0;
        }
        for (size_t i = 0; i < n; i++)
                b[i] = f->next++;
        return 0;
}

#define ZERO_BOUNDARY "=_halyard_000000000000000000000000"
#define ZERO_BOUNDARY_PARAM "report-type=delivery-status;\r\n\tboundary=\"" ZERO_BOUNDARY "\""

TEST(boundary_collision) {
        BounceEnvelope env = test_envelope();
        BounceRecipient r = failed_rcpt();
        BounceOptions o = test_options();
        BounceResult res;
        FakeRandom fr = { .zero_calls = 1, .next = 1 };
        static const char orig_text[] =
                "Subject: a forwarded report\r\n"
                "Content-Type: multipart/mixed; boundary=\"" ZERO_BOUNDARY "\"\r\n"
                "\r\n"
                "--" ZERO_BOUNDARY "\r\n"
                "\r\ninner\r\n"
                "--" ZERO_BOUNDARY "--\r\n";
        _cleanup_free_ char *text = NULL;
        int orig, fd;

        o.random = fake_random;
        o.random_userdata = &fr;

        /* Sanity: without a collision the zero boundary is the one used. */
        fd = make_dsn(&env, &r, 1, -1, &o, &res);
        ASSERT_OK(fd);
        text = read_all(fd, NULL);
        ASSERT_NOT_NULL(strstr(text, ZERO_BOUNDARY_PARAM));
        free(TAKE_PTR(text));
        close(fd);

        /* In the original: another boundary is picked. */
        fr = (FakeRandom) { .zero_calls = 1, .next = 1 };
        orig = memfd_with(orig_text, sizeof orig_text - 1);
        ASSERT_TRUE(orig >= 0);
        fd = make_dsn(&env, &r, 1, orig, &o, &res);
        ASSERT_OK(fd);
        text = read_all(fd, NULL);
        ASSERT_NULL(strstr(text, ZERO_BOUNDARY_PARAM));
        ASSERT_TRUE(fr.calls >= 3); /* two boundaries and a Message-ID */
        check_wire(fd);
        CHECK_PY(fd, "parts=3", "part3=message/rfc822", "orig:Subject=a forwarded report", "orig~inner");
        free(TAKE_PTR(text));
        close(fd);

        /* In the peer's text (human and status parts): also avoided. */
        fr = (FakeRandom) { .zero_calls = 1, .next = 1 };
        r.diagnostic = "550 look: --" ZERO_BOUNDARY " there";
        fd = make_dsn(&env, &r, 1, -1, &o, &res);
        ASSERT_OK(fd);
        text = read_all(fd, NULL);
        ASSERT_NULL(strstr(text, ZERO_BOUNDARY_PARAM));
        CHECK_PY(fd, "parts=2", "rcpt0:Diagnostic-Code=smtp; 550 look: --" ZERO_BOUNDARY " there");
        close(fd);

        /* A random source stuck on one value: refused, not a broken report. */
        fr = (FakeRandom) { .zero_calls = 1000 };
        ASSERT_ERR(make_dsn(&env, &r, 1, orig, &o, &res), -EEXIST);
        close(orig);
}

TEST(large_original_streamed) {
        BounceEnvelope env = test_envelope();
        BounceRecipient r = failed_rcpt();
        BounceOptions o = test_options();
        BounceResult res;
        struct rusage before, after;
        const size_t size = 10u << 20;
        char line[200];
        size_t n = 0, ln;
        int orig, fd;

        orig = memfd_create("big", MFD_CLOEXEC);
        ASSERT_TRUE(orig >= 0);
        ln = (size_t) snprintf(line, sizeof line, "Subject: big one\nFrom: a@sender.example\n\n");
        ASSERT_EQ(write(orig, line, ln), (ssize_t) ln);
        n += ln;
        /* LF-only lines, so every line is rewritten on the way */
        memset(line, 'x', 99);
        line[99] = '\n';
        while (n < size) {
                ASSERT_EQ(write(orig, line, 100), 100);
                n += 100;
        }
        ASSERT_EQ(write(orig, "END-MARKER\n", 11), 11);
        n += 11;

        o.full_max = 16u << 20;
        ASSERT_OK(getrusage(RUSAGE_SELF, &before));
        fd = make_dsn(&env, &r, 1, orig, &o, &res);
        ASSERT_OK(fd);
        ASSERT_OK(getrusage(RUSAGE_SELF, &after));
        ASSERT_EQ(res.returned, BOUNCE_RETURNED_FULL);
        /* every LF became CRLF */
        ASSERT_TRUE(res.size > n + n / 100);
        ASSERT_TRUE(res.size < n + n / 100 + 16384);
        /* Bounded memory: the peak did not grow by anything near the 10 MiB
         * copied (ru_maxrss is in KiB; memfd pages written with write()
         * are not mapped, so they do not count). */
        if (after.ru_maxrss - before.ru_maxrss > 4096)
                TAP_FAIL("max RSS grew by %ld KiB", after.ru_maxrss - before.ru_maxrss);
        check_wire(fd);
        CHECK_PY(fd, "part3=message/rfc822", "orig:Subject=big one", "orig~END-MARKER");
        close(fd);
        close(orig);
}

TEST(invalid_input) {
        BounceOptions o = test_options();
        BounceRecipient r;
        BounceEnvelope env;
        int fd, pipefd[2];

        fd = memfd_create("dsn", MFD_CLOEXEC);
        ASSERT_TRUE(fd >= 0);

#define EXPECT_EINVAL(stmt)                                                             \
        do {                                                                            \
                env = test_envelope();                                                  \
                r = failed_rcpt();                                                      \
                stmt;                                                                   \
                ASSERT_ERR(bounce_write(&env, &r, 1, -1, &o, fd, NULL), -EINVAL);       \
        } while (0)

        EXPECT_EINVAL(r.status = "6.1.1");
        EXPECT_EINVAL(r.status = "5.01.1");
        EXPECT_EINVAL(r.status = "5.1");
        EXPECT_EINVAL(r.status = "5.1.1 ");
        EXPECT_EINVAL(r.status = "5.1.1000");
        EXPECT_EINVAL(r.action = (BounceAction) 42);
        EXPECT_EINVAL(r.final_recipient = "bob@rcpt.example\r\nBcc: x@y");
        EXPECT_EINVAL(r.final_recipient = "");
        EXPECT_EINVAL(r.final_recipient = NULL);
        EXPECT_EINVAL(r.final_recipient = "b\xc3@rcpt.example"); /* broken UTF-8 */
        EXPECT_EINVAL(r.remote_mta = "mx.example\r\nX: y");
        EXPECT_EINVAL(r.orcpt_type = "rfc822;x");
        EXPECT_EINVAL(r.diagnostic_type = "smtp\n");
        EXPECT_EINVAL(env.sender = "alice@sender.example\nBcc: x@y");
        EXPECT_EINVAL(env.reporting_mta = "mx halyard");
        EXPECT_EINVAL(env.reporting_mta = NULL);
        EXPECT_EINVAL(env.queue_id = "01H F");
        EXPECT_EINVAL(env.ret = (BounceRet) 9);
        EXPECT_EINVAL(env.received_from_mta = "a\rb");
        ASSERT_EQ(lseek(fd, 0, SEEK_END), 0);

        /* The original must be seekable. */
        env = test_envelope();
        r = failed_rcpt();
        ASSERT_OK(pipe2(pipefd, O_CLOEXEC));
        ASSERT_ERR(bounce_write(&env, &r, 1, pipefd[0], &o, fd, NULL), -ESPIPE);
        close(pipefd[0]);
        close(pipefd[1]);

        /* Write errors come back. */
        ASSERT_ERR(bounce_write(&env, &r, 1, -1, &o, -1, NULL), -EBADF);
        {
                int ro = open("/dev/null", O_RDONLY | O_CLOEXEC);
                ASSERT_TRUE(ro >= 0);
                ASSERT_ERR(bounce_write(&env, &r, 1, -1, &o, ro, NULL), -EBADF);
                close(ro);
        }
        close(fd);
}

TEST(no_original_and_defaults) {
        BounceEnvelope env = {
                .sender = "alice@sender.example",
                .reporting_mta = "mx.halyard.test",
        };
        BounceRecipient r = { .final_recipient = "bob@rcpt.example", .action = BOUNCE_ACTION_FAILED };
        BounceResult res;
        int fd;

        /* NULL options, nothing optional given */
        fd = make_dsn(&env, &r, 1, -1, NULL, &res);
        ASSERT_OK(fd);
        ASSERT_EQ(res.returned, BOUNCE_RETURNED_NONE);
        check_wire(fd);
        CHECK_PY(fd, "parts=2", "rcpt0:Status=5.0.0", "rcpt0:Action=failed", "rcpt0:!Remote-MTA",
                 "rcpt0:!Diagnostic-Code", "rcpt0:!Last-Attempt-Date", "rcpt0:!Original-Recipient",
                 "pm:!X-Halyard-Queue-ID", "pm:!Original-Envelope-Id", "pm:!Arrival-Date",
                 "pm:!Received-From-MTA");
        close(fd);
}

TEST(many_recipients_fold) {
        BounceEnvelope env = test_envelope();
        BounceOptions o = test_options();
        BounceRecipient rs[200];
        char addrs[200][64];
        BounceResult res;
        int fd;

        for (size_t i = 0; i < ELEMENTSOF(rs); i++) {
                snprintf(addrs[i], sizeof addrs[i], "user%03zu@rcpt.example", i);
                rs[i] = failed_rcpt();
                rs[i].final_recipient = rs[i].orcpt = addrs[i];
                /* long but ordinary reply text: folded, not cut */
                rs[i].diagnostic = "550-5.7.1 The user or domain that you are sending to (or from) has a "
                                   "policy that prohibited the mail that you sent. Please contact your "
                                   "domain administrator for further details. To learn more, visit "
                                   "https://support.example/answer/10032169 a1b2c3d4 - gsmtp";
        }
        fd = make_dsn(&env, rs, ELEMENTSOF(rs), -1, &o, &res);
        ASSERT_OK(fd);
        ASSERT_EQ(res.n_reported, 200);
        check_wire(fd);
        CHECK_PY(fd, "rcpts=200", "rcpt199:Final-Recipient=rfc822; user199@rcpt.example",
                 "rcpt0:Diagnostic-Code=smtp; 550-5.7.1 The user or domain that you are sending to (or from) has a "
                 "policy that prohibited the mail that you sent. Please contact your domain administrator for "
                 "further details. To learn more, visit https://support.example/answer/10032169 a1b2c3d4 - gsmtp");
        close(fd);
}

int main(void) {
        return tap_run();
}
