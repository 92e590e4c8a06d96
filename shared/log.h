/* SPDX-License-Identifier: MIT */
#pragma once

/* Logging for halyard services. To the journal (sd_journal_send) with
 * structured HALYARD_* fields when stderr is connected to it ($JOURNAL_STREAM
 * matches stderr's device:inode, as systemd sets it) or when forced; else one
 * line per entry on stderr prefixed "<N>" with the syslog priority, the form
 * systemd itself parses from services without a journal connection.
 *
 * Library code under shared/ does not log (debug excepted); services log once
 * where they decide what to do. Untrusted text is escaped and capped by the
 * caller with log_escape(). The state below is the only global a service has
 * besides its context struct: the log target and level are process-wide. */

#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

#include "macro.h"

/* One fixed 128-bit MESSAGE_ID per kind of event (journalctl MESSAGE_ID=…). */
#define LOG_MESSAGE_SERVICE_STARTED  "2d8b6a1c4f3e4b7a9c0d1e2f3a4b5c60"
#define LOG_MESSAGE_SERVICE_STOPPING "2d8b6a1c4f3e4b7a9c0d1e2f3a4b5c61"
#define LOG_MESSAGE_CONFIG_RELOADED  "2d8b6a1c4f3e4b7a9c0d1e2f3a4b5c62"
#define LOG_MESSAGE_CONFIG_REFUSED   "2d8b6a1c4f3e4b7a9c0d1e2f3a4b5c63"
#define LOG_MESSAGE_ACCEPTED         "7c1e0b5a3d2f4e6c8a9b0c1d2e3f4a50"
#define LOG_MESSAGE_DELIVERED        "7c1e0b5a3d2f4e6c8a9b0c1d2e3f4a51"
#define LOG_MESSAGE_DEFERRED         "7c1e0b5a3d2f4e6c8a9b0c1d2e3f4a52"
#define LOG_MESSAGE_BOUNCED          "7c1e0b5a3d2f4e6c8a9b0c1d2e3f4a53"
#define LOG_MESSAGE_REJECTED         "7c1e0b5a3d2f4e6c8a9b0c1d2e3f4a54"

typedef enum LogTarget {
        LOG_TARGET_AUTO,    /* journal if stderr is the journal stream, else stderr */
        LOG_TARGET_JOURNAL,
        LOG_TARGET_STDERR,
} LogTarget;

/* Maximum length of a formatted MESSAGE (and of any extra field), in bytes;
 * longer text is cut and ends in "...". */
#define LOG_MESSAGE_MAX 8192
/* Extra fields beyond this many in one call are dropped. */
#define LOG_FIELDS_MAX 32

/* Sets SYSLOG_IDENTIFIER (NULL: program_invocation_short_name; copied) and the
 * target. LOG_TARGET_AUTO picks the journal when $JOURNAL_STREAM's
 * "device:inode" matches fstat(STDERR_FILENO). Reads $HALYARD_LOG_LEVEL (0-7
 * or emerg/alert/crit/err/warning/notice/info/debug; invalid values are
 * ignored with a warning). Without log_setup() the target is AUTO and the
 * level LOG_INFO. LOG_TARGET_JOURNAL means stderr when
 * /run/systemd/journal/socket does not exist at this call (libsystemd
 * silently drops entries then). A journal send that fails falls back to
 * stderr for that entry. */
void log_setup(const char *identifier, LogTarget target);
/* Entries with a priority above level (less severe) are dropped. Clamped to 0..7. */
void log_set_max_level(int level);
int log_get_max_level(void);
/* Whether entries currently go to the journal (the resolved target). */
bool log_to_journal(void);

/* journald's rule for a caller-supplied field name: 1-64 chars of
 * [A-Z0-9_], not starting with a digit or '_' ('_' marks trusted fields). */
bool log_field_name_valid(const char *field);

/* Logs MESSAGE (printf format) with priority and optional extra journal
 * fields given as a NULL-terminated list of "FIELD=value" strings (already
 * formatted). error, if non-zero, is a negative errno appended as ERRNO= and
 * usable as %m in the format. Returns error (so `return log_error_errno(r,...)`
 * works), or 0 when error is 0. errno is preserved.
 *
 * Journal: MESSAGE=, PRIORITY=, SYSLOG_IDENTIFIER=, ERRNO=, MESSAGE_ID= and
 * the extra fields, sent with sd_journal_sendv() so values may hold any byte;
 * no CODE_FILE/CODE_LINE (they would always name log.c). An extra field whose
 * name fails log_field_name_valid(), or that names one of the fields above, is
 * dropped, and HALYARD_LOG_FIELDS_DROPPED=n says how many were.
 * Stderr: one line "<N>message" (N = priority); extra fields are not written;
 * control characters, DEL and invalid UTF-8 in the message become \xNN so one
 * entry stays one line (backslashes are kept as they are). */
int log_fullv(int priority, int error, const char *const *fields, const char *format, va_list ap) _printf_(4, 0);
int log_full(int priority, int error, const char *const *fields, const char *format, ...) _printf_(4, 5);

/* Structured event: MESSAGE_ID plus HALYARD_* fields, e.g.
 * log_event(LOG_INFO, LOG_MESSAGE_ACCEPTED, (const char*[]){"HALYARD_QUEUE_ID=ABC", NULL}, "accepted %s", id); */
int log_event(int priority, const char *message_id, const char *const *fields, const char *format, ...) _printf_(4, 5);

#define log_debug(...)   log_full(LOG_DEBUG, 0, NULL, __VA_ARGS__)
#define log_info(...)    log_full(LOG_INFO, 0, NULL, __VA_ARGS__)
#define log_notice(...)  log_full(LOG_NOTICE, 0, NULL, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, 0, NULL, __VA_ARGS__)
#define log_error(...)   log_full(LOG_ERR, 0, NULL, __VA_ARGS__)
#define log_debug_errno(e, ...)   log_full(LOG_DEBUG, (e), NULL, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full(LOG_WARNING, (e), NULL, __VA_ARGS__)
#define log_error_errno(e, ...)   log_full(LOG_ERR, (e), NULL, __VA_ARGS__)

/* Copies untrusted text (len bytes of s, NULs included) into buf (size n) with
 * control characters (C0, DEL, and the bytes of C1 U+0080-U+009F) and
 * non-UTF-8 bytes escaped as \xNN and '\' as "\\"; valid UTF-8 is kept.
 * When the result would not fit in n-1 bytes it is cut at a character or
 * escape boundary and ends in "...". Always NUL-terminates when n > 0.
 * Returns buf. */
char *log_escape(const char *s, size_t len, char *buf, size_t n);
