/* SPDX-License-Identifier: MIT */
/* log.c: stderr line format, %m, level filtering, escaping and truncation,
 * log_escape(), $JOURNAL_STREAM matching, field-name validation, and the
 * native journal protocol (against a fake journald socket in a private mount
 * namespace, and against the real journald when one runs). */

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-id128.h>
#include <systemd/sd-journal.h>

#include "log.h"
#include "tap.h"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

/* --- stderr capture ------------------------------------------------------ */

static int capture_fd = -1, saved_stderr = -1;

static void capture_begin(void) {
        capture_fd = memfd_create("stderr", MFD_CLOEXEC);
        ASSERT_TRUE(capture_fd >= 0);
        saved_stderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
        ASSERT_TRUE(saved_stderr >= 0);
        ASSERT_TRUE(dup2(capture_fd, STDERR_FILENO) == STDERR_FILENO);
}

/* Restores stderr and returns what was written (static buffer). */
static const char *capture_end(size_t *ret_len) {
        static char buf[64 * 1024];
        ssize_t k;

        k = pread(capture_fd, buf, sizeof buf - 1, 0);
        (void) dup2(saved_stderr, STDERR_FILENO);
        close(saved_stderr);
        close(capture_fd);
        saved_stderr = capture_fd = -1;
        ASSERT_TRUE(k >= 0);
        buf[k] = '\0';
        if (ret_len)
                *ret_len = (size_t) k;
        return buf;
}

static void stderr_target(void) {
        unsetenv("HALYARD_LOG_LEVEL");
        log_setup("test-log", LOG_TARGET_STDERR);
        log_set_max_level(LOG_INFO);
}

/* --- stderr format ------------------------------------------------------- */

TEST(stderr_format) {
        stderr_target();
        ASSERT_FALSE(log_to_journal());

        capture_begin();
        ASSERT_EQ(log_info("hello"), 0);
        ASSERT_EQ(log_error("x=%d %s", 5, "y"), 0);
        ASSERT_EQ(log_warning("w"), 0);
        ASSERT_EQ(log_full(LOG_DAEMON | LOG_NOTICE, 0, NULL, "facility %s", "masked"), 0);
        ASSERT_STREQ(capture_end(NULL), "<6>hello\n<3>x=5 y\n<4>w\n<5>facility masked\n");
}

TEST(stderr_errno) {
        stderr_target();

        capture_begin();
        errno = EBADF;
        ASSERT_EQ(log_error_errno(-ENOENT, "open %s: %m", "/x"), -ENOENT);
        ASSERT_EQ(errno, EBADF);        /* errno is preserved */
        ASSERT_EQ(log_warning_errno(-EACCES, "%m, ignoring"), -EACCES);
        /* Filtered entries still return the error. */
        ASSERT_EQ(log_debug_errno(-EIO, "nope: %m"), -EIO);
        /* A positive errno is accepted too. */
        ASSERT_EQ(log_full(LOG_ERR, EPERM, NULL, "%m"), EPERM);
        ASSERT_STREQ(capture_end(NULL),
                     "<3>open /x: No such file or directory\n"
                     "<4>Permission denied, ignoring\n"
                     "<3>Operation not permitted\n");
}

TEST(level_filter) {
        stderr_target();

        log_set_max_level(LOG_NOTICE);
        ASSERT_EQ(log_get_max_level(), LOG_NOTICE);
        capture_begin();
        log_debug("debug");
        log_info("info");
        log_notice("notice");
        log_error("error");
        ASSERT_STREQ(capture_end(NULL), "<5>notice\n<3>error\n");

        log_set_max_level(LOG_DEBUG);
        capture_begin();
        log_debug("debug");
        ASSERT_STREQ(capture_end(NULL), "<7>debug\n");

        log_set_max_level(99);
        ASSERT_EQ(log_get_max_level(), LOG_DEBUG);
        log_set_max_level(-3);
        ASSERT_EQ(log_get_max_level(), LOG_EMERG);
}

TEST(level_from_environment) {
        static const struct {
                const char *value;
                int want;
        } table[] = {
                { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "notice", LOG_NOTICE },
                { "warning", LOG_WARNING }, { "WARN", LOG_WARNING }, { "err", LOG_ERR },
                { "error", LOG_ERR }, { "crit", LOG_CRIT }, { "0", 0 }, { "3", 3 }, { "7", 7 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                log_set_max_level(LOG_INFO);
                ASSERT_OK(setenv("HALYARD_LOG_LEVEL", table[i].value, 1));
                log_setup("test-log", LOG_TARGET_STDERR);
                ASSERT_EQ(log_get_max_level(), table[i].want);
        }

        /* Invalid values keep the level and say so. */
        static const char *const bad[] = { "8", "-1", "bogus", "1 ", "infoo" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                log_set_max_level(LOG_NOTICE);
                ASSERT_OK(setenv("HALYARD_LOG_LEVEL", bad[i], 1));
                capture_begin();
                log_setup("test-log", LOG_TARGET_STDERR);
                const char *out = capture_end(NULL);
                ASSERT_EQ(log_get_max_level(), LOG_NOTICE);
                ASSERT_TRUE(strncmp(out, "<4>Invalid $HALYARD_LOG_LEVEL", 29) == 0);
        }

        /* Unset: the level set before stays. */
        unsetenv("HALYARD_LOG_LEVEL");
        log_set_max_level(LOG_ERR);
        log_setup("test-log", LOG_TARGET_STDERR);
        ASSERT_EQ(log_get_max_level(), LOG_ERR);
        stderr_target();
}

TEST(stderr_escaping) {
        stderr_target();

        capture_begin();
        log_info("a\nb\tc\x01" "d\x7f" "e\xff" "f\xc3\xa9g\\h\r");
        log_info("multi\nline\nentry");
        ASSERT_STREQ(capture_end(NULL),
                     "<6>a\\x0ab\\x09c\\x01d\\x7fe\\xfff\xc3\xa9g\\h\\x0d\n"
                     "<6>multi\\x0aline\\x0aentry\n");
}

TEST(stderr_truncation) {
        static char big[LOG_MESSAGE_MAX + 2000];
        char want[LOG_MESSAGE_MAX + 16];
        size_t len;
        const char *out;

        stderr_target();

        memset(big, 'a', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        capture_begin();
        log_info("%s", big);
        out = capture_end(&len);
        /* 8 KiB buffer: 8188 bytes of text, "...", NUL. */
        ASSERT_EQ(len, 3 + (LOG_MESSAGE_MAX - 4) + 3 + 1);
        memcpy(want, "<6>", 3);
        memset(want + 3, 'a', LOG_MESSAGE_MAX - 4);
        strcpy(want + 3 + LOG_MESSAGE_MAX - 4, "...\n");
        ASSERT_STREQ(out, want);

        /* Never cut inside a UTF-8 character: "é" straddles the cut point. */
        memset(big, 'a', sizeof big - 1);
        big[LOG_MESSAGE_MAX - 5] = (char) 0xc3;
        big[LOG_MESSAGE_MAX - 4] = (char) 0xa9;
        capture_begin();
        log_info("%s", big);
        out = capture_end(&len);
        ASSERT_EQ(len, 3 + (LOG_MESSAGE_MAX - 5) + 3 + 1);
        ASSERT_STREQ(out + len - 5, "a...\n");

        /* Exactly at the limit: no mark. */
        memset(big, 'b', sizeof big - 1);
        big[LOG_MESSAGE_MAX - 1] = '\0';
        capture_begin();
        log_info("%s", big);
        out = capture_end(&len);
        ASSERT_EQ(len, 3 + LOG_MESSAGE_MAX - 1 + 1);
        ASSERT_STREQ(out + len - 3, "bb\n");
}

/* --- log_escape ---------------------------------------------------------- */

TEST(escape_table) {
        static const struct {
                const char *in;
                size_t len;     /* 0: strlen(in) */
                size_t n;       /* 0: 256 */
                const char *want;
        } table[] = {
                { "", 0, 0, "" },
                { "hello", 0, 0, "hello" },
                { "a\nb", 0, 0, "a\\x0ab" },
                { "tab\there", 0, 0, "tab\\x09here" },
                { "back\\slash", 0, 0, "back\\\\slash" },
                { "\x7f", 0, 0, "\\x7f" },
                { "\x1b[31m", 0, 0, "\\x1b[31m" },
                { "a\0b", 3, 0, "a\\x00b" },
                { "\xff\xfe", 0, 0, "\\xff\\xfe" },
                { "caf\xc3\xa9", 0, 0, "caf\xc3\xa9" },                   /* é kept */
                { "\xe2\x82\xac", 0, 0, "\xe2\x82\xac" },                 /* € kept */
                { "\xf0\x9f\x98\x80", 0, 0, "\xf0\x9f\x98\x80" },         /* U+1F600 kept */
                { "\xc3", 0, 0, "\\xc3" },                                /* truncated sequence */
                { "\xc3x", 0, 0, "\\xc3x" },
                { "\xc0\xaf", 0, 0, "\\xc0\\xaf" },                       /* overlong '/' */
                { "\xe0\x80\xaf", 0, 0, "\\xe0\\x80\\xaf" },              /* overlong */
                { "\xed\xa0\x80", 0, 0, "\\xed\\xa0\\x80" },              /* surrogate */
                { "\xf4\x90\x80\x80", 0, 0, "\\xf4\\x90\\x80\\x80" },     /* > U+10FFFF */
                { "\xf8\x88\x80\x80\x80", 0, 0, "\\xf8\\x88\\x80\\x80\\x80" },
                { "\xc2\x85", 0, 0, "\\xc2\\x85" },                       /* C1 NEL */
                { "\xc2\xa0", 0, 0, "\xc2\xa0" },                         /* NBSP kept */
                { "hello", 3, 0, "hel" },                                 /* len honoured */
                /* Cutting: n-1 bytes at most, "..." at the end. */
                { "abcdefg", 0, 8, "abcdefg" },                           /* exact fit */
                { "abcdefgh", 0, 8, "abcd..." },
                { "ab\ncdef", 0, 8, "ab..." },                            /* escape not split */
                { "ab\\cdef", 0, 8, "ab\\\\..." },
                { "abc\xc3\xa9zzz", 0, 8, "abc..." },                     /* é not split */
                { "ab\xc3\xa9zzzz", 0, 8, "ab\xc3\xa9..." },
                { "abcdef", 0, 4, "..." },
                { "abcdef", 0, 3, ".." },
                { "abcdef", 0, 1, "" },
                { "ab", 0, 3, "ab" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                char buf[256];
                size_t n = table[i].n ? table[i].n : sizeof buf;
                size_t len = table[i].len ? table[i].len : strlen(table[i].in);

                memset(buf, 'X', sizeof buf);
                ASSERT_TRUE(log_escape(table[i].in, len, buf, n) == buf);
                if (strcmp(buf, table[i].want) != 0)
                        TAP_FAIL("entry %zu: got \"%s\", want \"%s\"", i, buf, table[i].want);
                ASSERT_TRUE(strlen(buf) < n);
                ASSERT_TRUE(n == sizeof buf || buf[n] == 'X');  /* nothing past n */
        }

        /* n == 0 writes nothing. */
        char one = 'Q';
        ASSERT_TRUE(log_escape("abc", 3, &one, 0) == &one);
        ASSERT_EQ(one, 'Q');

        /* Worst case fits: every byte escaped. */
        char in[64], out[4 * sizeof in + 1];
        memset(in, 0x01, sizeof in);
        log_escape(in, sizeof in, out, sizeof out);
        ASSERT_EQ(strlen(out), 4 * sizeof in);
}

/* --- $JOURNAL_STREAM ----------------------------------------------------- */

TEST(journal_stream_matching) {
        struct stat st;
        char v[128];

        /* stderr is a memfd for the test; JOURNAL_STREAM names it or not. */
        capture_begin();
        ASSERT_OK(fstat(STDERR_FILENO, &st));

        snprintf(v, sizeof v, "%llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
        ASSERT_OK(setenv("JOURNAL_STREAM", v, 1));
        log_setup("test-log", LOG_TARGET_AUTO);
        bool match = log_to_journal();

        snprintf(v, sizeof v, "%llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino + 1);
        ASSERT_OK(setenv("JOURNAL_STREAM", v, 1));
        log_setup("test-log", LOG_TARGET_AUTO);
        bool mismatch_ino = log_to_journal();

        snprintf(v, sizeof v, "%llu:%llu", (unsigned long long) st.st_dev + 1, (unsigned long long) st.st_ino);
        ASSERT_OK(setenv("JOURNAL_STREAM", v, 1));
        log_setup("test-log", LOG_TARGET_AUTO);
        bool mismatch_dev = log_to_journal();

        static const char *const bad[] = { "", "garbage", "1:", ":1", "1:2x", "1", "-1:-1", "1:2:3" };
        bool any_bad = false;
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                ASSERT_OK(setenv("JOURNAL_STREAM", bad[i], 1));
                log_setup("test-log", LOG_TARGET_AUTO);
                any_bad = any_bad || log_to_journal();
        }

        unsetenv("JOURNAL_STREAM");
        log_setup("test-log", LOG_TARGET_AUTO);
        bool unset = log_to_journal();

        /* Forced targets ignore the variable. */
        log_setup("test-log", LOG_TARGET_JOURNAL);
        bool forced_journal = log_to_journal();
        log_setup("test-log", LOG_TARGET_STDERR);
        bool forced_stderr = log_to_journal();

        (void) capture_end(NULL);
        stderr_target();

        ASSERT_TRUE(match);
        ASSERT_FALSE(mismatch_ino);
        ASSERT_FALSE(mismatch_dev);
        ASSERT_FALSE(any_bad);
        ASSERT_FALSE(unset);
        /* A forced journal needs the socket (else entries would vanish). */
        ASSERT_EQ(forced_journal, access(JOURNAL_SOCKET, F_OK) == 0);
        ASSERT_FALSE(forced_stderr);
}

/* --- field names --------------------------------------------------------- */

TEST(field_name_valid) {
        static const struct {
                const char *name;
                bool valid;
        } table[] = {
                { "HALYARD_QUEUE_ID", true },
                { "A", true },
                { "A1", true },
                { "A_", true },
                { "MESSAGE_ID", true },
                { "_PID", false },
                { "__CURSOR", false },
                { "1ABC", false },
                { "", false },
                { "lower", false },
                { "Mixed", false },
                { "A-B", false },
                { "A=B", false },
                { "A B", false },
                { "\xc3\x84", false },
                { "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", true },  /* 64 */
                { "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", false }, /* 65 */
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (log_field_name_valid(table[i].name) != table[i].valid)
                        TAP_FAIL("\"%s\": expected %s", table[i].name, table[i].valid ? "valid" : "invalid");
        ASSERT_FALSE(log_field_name_valid(NULL));
}

/* --- journal: native protocol against a fake journald -------------------- */

typedef struct Field {
        char name[65];
        char value[256];
        size_t value_len;
} Field;

/* Parses one native-protocol datagram ("NAME=value\n" or "NAME\n" + le64
 * length + value + "\n"). Returns the number of fields or -1. */
static int parse_native(const char *p, size_t n, Field *f, int max) {
        const char *end = p + n;
        int k = 0;

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                const char *eq;
                size_t nlen, vlen;
                const char *v;

                if (!nl || k >= max)
                        return -1;
                eq = memchr(p, '=', (size_t) (nl - p));
                if (eq) {
                        nlen = (size_t) (eq - p);
                        v = eq + 1;
                        vlen = (size_t) (nl - v);
                        p = nl + 1;
                } else {
                        uint64_t l = 0;
                        nlen = (size_t) (nl - p);
                        if (end - (nl + 1) < 8)
                                return -1;
                        for (int b = 7; b >= 0; b--)
                                l = (l << 8) | (unsigned char) nl[1 + b];
                        v = nl + 9;
                        if ((uint64_t) (end - v) < l + 1 || v[l] != '\n')
                                return -1;
                        vlen = (size_t) l;
                        p = v + l + 1;
                }
                if (nlen >= sizeof f[k].name || vlen >= sizeof f[k].value)
                        return -1;
                memcpy(f[k].name, eq ? eq - nlen : nl - nlen, nlen);
                f[k].name[nlen] = '\0';
                memcpy(f[k].value, v, vlen);
                f[k].value[vlen] = '\0';
                f[k].value_len = vlen;
                k++;
        }
        return k;
}

static int field_count(const Field *f, int n, const char *name) {
        int c = 0;
        for (int i = 0; i < n; i++)
                if (strcmp(f[i].name, name) == 0)
                        c++;
        return c;
}

static const char *field_get(const Field *f, int n, const char *name) {
        for (int i = 0; i < n; i++)
                if (strcmp(f[i].name, name) == 0)
                        return f[i].value;
        return NULL;
}

static int report_fd = -1;

#define CHILD_CHECK(x)                                                          \
        do {                                                                    \
                if (!(x)) {                                                     \
                        dprintf(report_fd, "%s:%d: %s", __FILE__, __LINE__, #x); \
                        _exit(1);                                               \
                }                                                               \
        } while (0)
#define CHILD_FIELD(f, n, name, want)                                           \
        do {                                                                    \
                const char *_v = field_get(f, n, name);                         \
                if (!_v || strcmp(_v, want) != 0) {                             \
                        dprintf(report_fd, "%s:%d: %s=\"%s\", want \"%s\"",     \
                                __FILE__, __LINE__, name, _v ? _v : "(none)", want); \
                        _exit(1);                                               \
                }                                                               \
        } while (0)

static int recv_entry(int fd, Field *f, int max) {
        static char buf[128 * 1024];
        ssize_t k = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (k < 0)
                return -1;
        return parse_native(buf, (size_t) k, f, max);
}

/* In the child: private /run with our own journal socket. 2 = no namespace. */
static void fake_journald_child(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = JOURNAL_SOCKET };
        Field f[64];
        int fd, n;

        if (unshare(CLONE_NEWNS) < 0 ||
            mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0) {
                dprintf(report_fd, "no private mount namespace: %s", strerror(errno));
                _exit(2);
        }
        CHILD_CHECK(mkdir("/run/systemd", 0755) == 0);
        CHILD_CHECK(mkdir("/run/systemd/journal", 0755) == 0);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        CHILD_CHECK(fd >= 0);
        CHILD_CHECK(bind(fd, (struct sockaddr *) &sa, sizeof sa) == 0);

        unsetenv("HALYARD_LOG_LEVEL");
        log_setup("test-log", LOG_TARGET_JOURNAL);
        log_set_max_level(LOG_INFO);
        CHILD_CHECK(log_to_journal());

        /* stderr must stay silent: nothing falls back. */
        int devnull_check = memfd_create("stderr", MFD_CLOEXEC);
        CHILD_CHECK(devnull_check >= 0);
        CHILD_CHECK(dup2(devnull_check, STDERR_FILENO) == STDERR_FILENO);

        /* 1: an event with fields, some of them refused. */
        log_event(LOG_INFO, LOG_MESSAGE_ACCEPTED,
                  (const char *[]) {
                          "HALYARD_QUEUE_ID=ABC123",
                          "HALYARD_MULTI=line1\nline2",
                          "_PID=1",                 /* trusted field: refused */
                          "bad-name=x",             /* invalid name: refused */
                          "PRIORITY=0",             /* would duplicate ours: refused */
                          "NOEQUALS",               /* no '=': refused */
                          "HALYARD_EMPTY=",
                          NULL },
                  "accepted %s", "ABC123");
        n = recv_entry(fd, f, 64);
        CHILD_CHECK(n > 0);
        CHILD_FIELD(f, n, "MESSAGE", "accepted ABC123");
        CHILD_FIELD(f, n, "PRIORITY", "6");
        CHILD_FIELD(f, n, "SYSLOG_IDENTIFIER", "test-log");
        CHILD_FIELD(f, n, "MESSAGE_ID", LOG_MESSAGE_ACCEPTED);
        CHILD_FIELD(f, n, "HALYARD_QUEUE_ID", "ABC123");
        CHILD_FIELD(f, n, "HALYARD_MULTI", "line1\nline2");
        CHILD_FIELD(f, n, "HALYARD_EMPTY", "");
        CHILD_FIELD(f, n, "HALYARD_LOG_FIELDS_DROPPED", "4");
        CHILD_CHECK(field_count(f, n, "PRIORITY") == 1);
        CHILD_CHECK(field_count(f, n, "_PID") == 0);
        CHILD_CHECK(field_count(f, n, "bad-name") == 0);
        CHILD_CHECK(field_count(f, n, "NOEQUALS") == 0);
        CHILD_CHECK(field_count(f, n, "ERRNO") == 0);
        CHILD_CHECK(field_count(f, n, "CODE_FILE") == 0);
        CHILD_CHECK(n == 8);

        /* 2: an error with %m, a newline in MESSAGE (sent as is). */
        CHILD_CHECK(log_error_errno(-EACCES, "denied\nagain: %m") == -EACCES);
        n = recv_entry(fd, f, 64);
        CHILD_CHECK(n > 0);
        CHILD_FIELD(f, n, "MESSAGE", "denied\nagain: Permission denied");
        CHILD_FIELD(f, n, "PRIORITY", "3");
        CHILD_FIELD(f, n, "ERRNO", "13");
        CHILD_CHECK(field_count(f, n, "MESSAGE_ID") == 0);
        CHILD_CHECK(field_count(f, n, "HALYARD_LOG_FIELDS_DROPPED") == 0);

        /* 3: filtered entries send nothing. */
        log_debug("not sent");
        CHILD_CHECK(recv_entry(fd, f, 64) < 0 && errno == EAGAIN);

        /* 4: journald stopped (socket refuses): the entry goes to stderr. */
        close(fd);
        log_notice("fallback");
        char out[64] = "";
        ssize_t k = pread(devnull_check, out, sizeof out - 1, 0);
        CHILD_CHECK(k >= 0);
        out[k] = '\0';
        CHILD_CHECK(strcmp(out, "<5>fallback\n") == 0);

        /* 5: no socket at all: a forced journal target is stderr. */
        CHILD_CHECK(unlink(JOURNAL_SOCKET) == 0);
        log_setup("test-log", LOG_TARGET_JOURNAL);
        CHILD_CHECK(!log_to_journal());

        _exit(0);
}

TEST(journal_native_protocol) {
        int p[2], status;
        char reason[512] = "";
        pid_t pid;
        ssize_t k;

        ASSERT_OK(pipe2(p, O_CLOEXEC));
        fflush(stdout);
        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                close(p[0]);
                report_fd = p[1];
                fake_journald_child();
        }
        close(p[1]);
        k = read(p[0], reason, sizeof reason - 1);
        close(p[0]);
        reason[k > 0 ? k : 0] = '\0';
        ASSERT_TRUE(waitpid(pid, &status, 0) == pid);
        ASSERT_TRUE(WIFEXITED(status));
        if (WEXITSTATUS(status) == 2) {
                printf("# SKIP journal_native_protocol: %s\n", reason);
                return;
        }
        if (WEXITSTATUS(status) != 0)
                TAP_FAIL("child: %s", reason);
}

/* --- journal: the real journald ------------------------------------------ */

TEST(journal_roundtrip) {
        _cleanup_(sd_journal_closep) sd_journal *j = NULL;
        sd_id128_t id;
        char idstr[SD_ID128_STRING_MAX], match[64], field[64];
        const void *data;
        size_t len;
        int r;

        if (access(JOURNAL_SOCKET, F_OK) < 0) {
                printf("# SKIP journal_roundtrip: no journald (%s missing)\n", JOURNAL_SOCKET);
                return;
        }
        r = sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY);
        if (r < 0) {
                printf("# SKIP journal_roundtrip: cannot open the journal: %s\n", strerror(-r));
                return;
        }

        ASSERT_OK(sd_id128_randomize(&id));
        sd_id128_to_string(id, idstr);
        snprintf(field, sizeof field, "HALYARD_TEST_ID=%s", idstr);

        log_setup("test-log", LOG_TARGET_JOURNAL);
        log_set_max_level(LOG_INFO);
        log_event(LOG_NOTICE, LOG_MESSAGE_DELIVERED, (const char *[]) { field, "_PID=1", NULL },
                  "roundtrip %s", idstr);
        stderr_target();

        snprintf(match, sizeof match, "HALYARD_TEST_ID=%s", idstr);
        ASSERT_OK(sd_journal_add_match(j, match, 0));
        for (int tries = 0;; tries++) {
                r = sd_journal_next(j);
                ASSERT_OK(r);
                if (r > 0)
                        break;
                if (tries >= 20) {
                        printf("# journal_roundtrip: entry not found within 10 s\n");
                        ASSERT_TRUE(false);
                }
                ASSERT_OK(sd_journal_wait(j, 500000));
        }

        ASSERT_OK(sd_journal_get_data(j, "MESSAGE", &data, &len));
        snprintf(match, sizeof match, "MESSAGE=roundtrip %s", idstr);
        ASSERT_TRUE(len == strlen(match) && memcmp(data, match, len) == 0);
        ASSERT_OK(sd_journal_get_data(j, "MESSAGE_ID", &data, &len));
        ASSERT_TRUE(len == strlen("MESSAGE_ID=" LOG_MESSAGE_DELIVERED) &&
                    memcmp(data, "MESSAGE_ID=" LOG_MESSAGE_DELIVERED, len) == 0);
        ASSERT_OK(sd_journal_get_data(j, "PRIORITY", &data, &len));
        ASSERT_TRUE(len == strlen("PRIORITY=5") && memcmp(data, "PRIORITY=5", len) == 0);
        ASSERT_OK(sd_journal_get_data(j, "_PID", &data, &len));
        snprintf(match, sizeof match, "_PID=%d", (int) getpid());
        ASSERT_TRUE(len == strlen(match) && memcmp(data, match, len) == 0);
}

int main(void) {
        return tap_run();
}
