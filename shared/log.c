/* SPDX-License-Identifier: MIT */
/* Logging: journal (native protocol) or "<N>message" lines on stderr.
 *
 * Nothing here allocates: the message is formatted into a stack buffer, the
 * journal entry is an iovec array over stack buffers and the caller's
 * strings. The target, level and identifier are the process-wide state
 * log.h allows. */

#define SD_JOURNAL_SUPPRESS_LOCATION 1

#include "log.h"
#include "utf8.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static LogTarget log_target = LOG_TARGET_AUTO;     /* AUTO until resolved */
static int log_max_level = LOG_INFO;
static char log_identifier[64];

/* Fields log_fullv() sets itself; a caller may not add a second copy. */
static const char *const log_reserved_fields[] = {
        "MESSAGE", "MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER", "ERRNO",
        "SYSLOG_FACILITY", "SYSLOG_PID", "CODE_FILE", "CODE_LINE", "CODE_FUNC",
};

static bool journal_stream_is_stderr(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;
        char *end;

        if (!e || !*e)
                return false;

        /* "device:inode", both decimal, as systemd formats them. */
        errno = 0;
        dev = strtoull(e, &end, 10);
        if (errno != 0 || end == e || *end != ':' || *e == '-')
                return false;
        e = end + 1;
        errno = 0;
        ino = strtoull(e, &end, 10);
        if (errno != 0 || end == e || *end != '\0' || *e == '-')
                return false;

        if (fstat(STDERR_FILENO, &st) < 0)
                return false;

        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

static LogTarget log_resolve_target(void) {
        if (log_target == LOG_TARGET_AUTO)
                log_target = journal_stream_is_stderr() ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR;
        return log_target;
}

static int log_level_from_string(const char *s) {
        static const char *const names[] = {
                [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
                [LOG_ERR] = "err", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
                [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
        };

        if (s[0] >= '0' && s[0] <= '7' && s[1] == '\0')
                return s[0] - '0';
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcasecmp(s, names[i]) == 0)
                        return (int) i;
        /* Common spellings systemd also accepts. */
        if (strcasecmp(s, "error") == 0)
                return LOG_ERR;
        if (strcasecmp(s, "warn") == 0)
                return LOG_WARNING;
        return -EINVAL;
}

void log_setup(const char *identifier, LogTarget target) {
        const char *e;

        if (!identifier)
                identifier = program_invocation_short_name;
        snprintf(log_identifier, sizeof log_identifier, "%s", identifier ? identifier : "");

        /* sd_journal_sendv() reports success when the socket does not exist
         * (libsystemd drops the entry on ENOENT), so a forced journal without
         * journald would lose everything: check once here. With AUTO, a
         * matching $JOURNAL_STREAM already shows journald runs. */
        if (target == LOG_TARGET_JOURNAL && access(JOURNAL_SOCKET, F_OK) < 0)
                target = LOG_TARGET_STDERR;
        log_target = target;
        (void) log_resolve_target();

        e = getenv("HALYARD_LOG_LEVEL");
        if (e && *e) {
                int l = log_level_from_string(e);
                if (l < 0) {
                        char esc[64];
                        log_warning("Invalid $HALYARD_LOG_LEVEL \"%s\", ignoring.",
                                    log_escape(e, strlen(e), esc, sizeof esc));
                } else
                        log_max_level = l;
        }
}

void log_set_max_level(int level) {
        log_max_level = level < LOG_EMERG ? LOG_EMERG : level > LOG_DEBUG ? LOG_DEBUG : level;
}

int log_get_max_level(void) {
        return log_max_level;
}

bool log_to_journal(void) {
        return log_resolve_target() == LOG_TARGET_JOURNAL;
}

static bool field_name_valid_n(const char *p, size_t l) {
        if (l == 0 || l > 64)
                return false;
        if (p[0] == '_' || (p[0] >= '0' && p[0] <= '9'))
                return false;
        for (size_t i = 0; i < l; i++)
                if (!((p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '_'))
                        return false;
        return true;
}

bool log_field_name_valid(const char *field) {
        return field && field_name_valid_n(field, strlen(field));
}

#define ESCAPE_BACKSLASH 1u

/* Next output unit for s[0..n): either a literal run of *consumed bytes or,
 * when escaped, "\xNN" / "\\\\". Writes the unit into out (>= 5 bytes). */
static size_t escape_unit(const unsigned char *s, size_t n, unsigned flags, char out[static 8], size_t *consumed) {
        static const char hex[] = "0123456789abcdef";
        size_t l;

        if (s[0] == '\\' && (flags & ESCAPE_BACKSLASH)) {
                *consumed = 1;
                memcpy(out, "\\\\", 2);
                return 2;
        }

        l = utf8_sequence_len((const char *) s, n);
        if (l == 0 || (l == 1 && (s[0] < 0x20 || s[0] == 0x7F)) ||
            (l == 2 && s[0] == 0xC2 && s[1] < 0xA0)) {
                /* One byte per escape, so a C1 control becomes \xc2\x8N. */
                *consumed = 1;
                out[0] = '\\';
                out[1] = 'x';
                out[2] = hex[s[0] >> 4];
                out[3] = hex[s[0] & 0xF];
                return 4;
        }

        memcpy(out, s, l);
        *consumed = l;
        return l;
}

static char *escape_into(const char *s, size_t len, char *buf, size_t n, unsigned flags) {
        const unsigned char *p = (const unsigned char *) s;
        size_t total = 0, o = 0, i, c;
        char unit[8];

        if (n == 0)
                return buf;
        if (!s)
                len = 0;

        /* First pass: does everything fit? Then no "..." is needed. */
        for (i = 0; i < len && total <= n - 1; i += c)
                total += escape_unit(p + i, len - i, flags, unit, &c);

        if (total <= n - 1) {
                for (i = 0; i < len; i += c) {
                        size_t u = escape_unit(p + i, len - i, flags, unit, &c);
                        memcpy(buf + o, unit, u);
                        o += u;
                }
                buf[o] = '\0';
                return buf;
        }

        if (n - 1 < 3) {
                memset(buf, '.', n - 1);
                buf[n - 1] = '\0';
                return buf;
        }

        for (i = 0; i < len; i += c) {
                size_t u = escape_unit(p + i, len - i, flags, unit, &c);
                if (o + u > n - 1 - 3)
                        break;
                memcpy(buf + o, unit, u);
                o += u;
        }
        memcpy(buf + o, "...", 4);
        return buf;
}

char *log_escape(const char *s, size_t len, char *buf, size_t n) {
        return escape_into(s, len, buf, n, ESCAPE_BACKSLASH);
}

static void write_full(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return;
                }
                p += k;
                n -= (size_t) k;
        }
}

static void log_write_stderr(int level, const char *msg, size_t len) {
        /* Worst case every byte becomes \xNN; "<N>" and "\n" around it. */
        char line[3 + 4 * LOG_MESSAGE_MAX + 2];
        size_t l;

        line[0] = '<';
        line[1] = (char) ('0' + level);
        line[2] = '>';
        escape_into(msg, len, line + 3, sizeof line - 3 - 1, 0);
        l = 3 + strlen(line + 3);
        line[l++] = '\n';
        write_full(STDERR_FILENO, line, l);
}

/* Cuts a string of len bytes in buf (size n > 4) so it fits with "..." at
 * the end, backing off to a UTF-8 character boundary. Returns the new length. */
static size_t truncate_with_mark(char *buf, size_t n) {
        size_t l = n - 1 - 3;

        /* Don't leave half a multibyte character before the mark. */
        for (size_t k = 0; k < 3 && l > 0 && ((unsigned char) buf[l] & 0xC0) == 0x80; k++)
                l--;
        memcpy(buf + l, "...", 4);
        return l + 3;
}

static int log_send_journal(int level, int error, const char *message_id,
                            const char *const *fields, const char *msg_field, size_t msg_field_len) {
        struct iovec iov[5 + LOG_FIELDS_MAX + 1];
        char prio[sizeof "PRIORITY=" + 4];
        char ident[sizeof "SYSLOG_IDENTIFIER=" + sizeof log_identifier];
        char errnobuf[sizeof "ERRNO=" + 12];
        char mid[sizeof "MESSAGE_ID=" + 40];
        char dropped_buf[sizeof "HALYARD_LOG_FIELDS_DROPPED=" + 12];
        size_t k = 0, n_fields = 0;
        unsigned dropped = 0;
        int r;

        iov[k++] = (struct iovec) { (void *) msg_field, msg_field_len };

        r = snprintf(prio, sizeof prio, "PRIORITY=%i", level);
        iov[k++] = (struct iovec) { prio, (size_t) r };

        r = snprintf(ident, sizeof ident, "SYSLOG_IDENTIFIER=%s",
                     log_identifier[0] != '\0' ? log_identifier : program_invocation_short_name);
        if (r > 0 && (size_t) r < sizeof ident)
                iov[k++] = (struct iovec) { ident, (size_t) r };

        if (error != 0) {
                r = snprintf(errnobuf, sizeof errnobuf, "ERRNO=%i", error);
                iov[k++] = (struct iovec) { errnobuf, (size_t) r };
        }

        if (message_id) {
                r = snprintf(mid, sizeof mid, "MESSAGE_ID=%s", message_id);
                if (r > 0 && (size_t) r < sizeof mid)
                        iov[k++] = (struct iovec) { mid, (size_t) r };
        }

        for (const char *const *f = fields; f && *f; f++) {
                const char *eq = strchr(*f, '=');
                bool ok = eq && field_name_valid_n(*f, (size_t) (eq - *f));

                for (size_t i = 0; ok && i < ELEMENTSOF(log_reserved_fields); i++)
                        if (strlen(log_reserved_fields[i]) == (size_t) (eq - *f) &&
                            memcmp(log_reserved_fields[i], *f, (size_t) (eq - *f)) == 0)
                                ok = false;
                if (!ok || n_fields >= LOG_FIELDS_MAX) {
                        dropped++;
                        continue;
                }
                /* Name + '=' + at most LOG_MESSAGE_MAX bytes of value. */
                iov[k++] = (struct iovec) {
                        (void *) *f,
                        (size_t) (eq - *f) + 1 + strnlen(eq + 1, LOG_MESSAGE_MAX),
                };
                n_fields++;
        }

        if (dropped > 0) {
                r = snprintf(dropped_buf, sizeof dropped_buf, "HALYARD_LOG_FIELDS_DROPPED=%u", dropped);
                iov[k++] = (struct iovec) { dropped_buf, (size_t) r };
        }

        return sd_journal_sendv(iov, (int) k);
}

_printf_(5, 0) static int log_internal(int priority, int error, const char *message_id,
                                       const char *const *fields, const char *format, va_list ap) {
        int level = LOG_PRI(priority);
        int saved_errno = errno;
        int e = error < 0 ? -error : error;
        char msg[sizeof "MESSAGE=" - 1 + LOG_MESSAGE_MAX];
        char *text = msg + strlen("MESSAGE=");
        size_t text_size = sizeof msg - strlen("MESSAGE=");
        size_t len;
        int r;

        if (level > log_max_level)
                return error;

        memcpy(msg, "MESSAGE=", strlen("MESSAGE="));

        /* glibc's %m prints strerror(errno). */
        if (e != 0)
                errno = e;
        r = format ? vsnprintf(text, text_size, format, ap) : 0;
        if (r < 0) {
                text[0] = '\0';
                len = 0;
        } else if ((size_t) r >= text_size)
                len = truncate_with_mark(text, text_size);
        else
                len = (size_t) r;

        if (log_resolve_target() != LOG_TARGET_JOURNAL ||
            log_send_journal(level, e, message_id, fields, msg, strlen("MESSAGE=") + len) < 0)
                log_write_stderr(level, text, len);

        errno = saved_errno;
        return error;
}

int log_fullv(int priority, int error, const char *const *fields, const char *format, va_list ap) {
        return log_internal(priority, error, NULL, fields, format, ap);
}

int log_full(int priority, int error, const char *const *fields, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = log_internal(priority, error, NULL, fields, format, ap);
        va_end(ap);
        return r;
}

int log_event(int priority, const char *message_id, const char *const *fields, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        (void) log_internal(priority, 0, message_id, fields, format, ap);
        va_end(ap);
        return 0;
}
