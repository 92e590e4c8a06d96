/* SPDX-License-Identifier: MIT */
#pragma once

/* systemd glue every service uses: listening sockets by name, notifications
 * (READY/STATUS/WATCHDOG/STOPPING/RELOADING), SIGTERM/SIGINT drain and SIGHUP
 * reload on the event loop, and the directories systemd hands a service
 * ($STATE_DIRECTORY, $RUNTIME_DIRECTORY, $CREDENTIALS_DIRECTORY).
 *
 * Ownership: daemon_new() returns a Daemon freed with daemon_free(), which
 * closes every listening fd not taken with daemon_take_listen_fd(). */

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "varlink.h"

typedef struct Daemon Daemon;

typedef struct DaemonCallbacks {
        /* SIGTERM/SIGINT: stop accepting and finish what is in flight; call
         * daemon_exit() when done (at the latest the stop timeout hits). NULL:
         * exit the loop at once with 0. A second SIGTERM/SIGINT while
         * draining exits the loop at once with 0. */
        void (*drain)(Daemon *d, void *userdata);
        /* SIGHUP: load and check the new configuration; return 0 if it was
         * applied, negative errno if it was refused (the old one stays).
         * Sent RELOADING=1 before and READY=1 + STATUS= after, either way;
         * the outcome is logged (CONFIG_RELOADED / CONFIG_REFUSED). NULL: a
         * SIGHUP only re-sends READY. Ignored while draining. */
        int (*reload)(Daemon *d, void *userdata);
        /* Text for STATUS= after READY and periodically (every 10 s); may be
         * NULL. Write a NUL-terminated line into buf (n bytes), return 0 or
         * negative errno (then no STATUS= is sent). Control characters are
         * replaced by spaces before sending. */
        int (*status)(Daemon *d, char *buf, size_t n, void *userdata);
} DaemonCallbacks;

/* Sets up signal handling (SIGTERM, SIGINT, SIGHUP blocked with
 * sigprocmask() and taken as sd-event sources; they stay blocked after
 * daemon_free()), the watchdog timer when $WATCHDOG_USEC/$WATCHDOG_PID apply
 * to us (WATCHDOG=1 every WATCHDOG_USEC/2), and collects the fds from
 * sd_listen_fds_with_names(), unsetting $LISTEN_* so children do not inherit
 * them. cb may be NULL; cb and userdata must outlive the Daemon (cb is copied).
 * Call from the thread that runs e, before other threads exist. */
int daemon_new(sd_event *e, const DaemonCallbacks *cb, void *userdata, Daemon **ret);
Daemon *daemon_free(Daemon *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(Daemon *, daemon_free)

/* Returns the first inherited fd whose FileDescriptorName= is name and
 * removes it from the set (the caller owns it now), or -ENOENT. The fd is
 * FD_CLOEXEC; its blocking mode is as systemd passed it (sockets units give
 * blocking fds): set O_NONBLOCK yourself if the event loop needs it. */
int daemon_take_listen_fd(Daemon *d, const char *name);
/* Number of inherited fds not yet taken (a service warns about those). */
size_t daemon_n_listen_fds_left(Daemon *d);

/* READY=1 plus STATUS= from the status callback. */
int daemon_ready(Daemon *d);
/* STATUS=text (printf-style, at most 1 KiB; control characters become spaces). */
int daemon_status(Daemon *d, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Exits the loop with code (sd_event_loop() returns it); sends STOPPING=1 if
 * not sent yet. */
int daemon_exit(Daemon *d, int code);
bool daemon_is_draining(const Daemon *d);

/* Directory helpers: $STATE_DIRECTORY / $RUNTIME_DIRECTORY (the first entry of
 * the colon-separated list, if it is an absolute path), else fallback (which
 * must not be NULL). The returned string is a process-wide copy; don't free. */
const char *daemon_state_directory(const char *fallback);
const char *daemon_runtime_directory(const char *fallback);

/* Reads credential name from $CREDENTIALS_DIRECTORY into a new NUL-terminated
 * buffer (max bytes at most, -EFBIG beyond; ret_size, if not NULL, gets the
 * length without the NUL). -ENXIO when no credentials directory is set,
 * -ENOENT when the credential does not exist. Refuses (-EINVAL) an empty name,
 * one with '/' or starting with '.'. A symlink is refused (-ELOOP), a
 * directory (-EISDIR) or other non-regular file (-EBADFD) too. Secrets: the
 * caller should explicit_bzero() the buffer before free(). */
int daemon_read_credential(const char *name, size_t max, char **ret, size_t *ret_size);
/* Path of credential name under $CREDENTIALS_DIRECTORY (new string), for
 * libraries that want a file name (GnuTLS). Same errors (except -EFBIG): the
 * credential must exist and be a regular file, not a symlink. */
int daemon_credential_path(const char *name, char **ret);

/* The command line of a varlink service: --help, --check, --config=PATH,
 * --listen=unix:/path and, when directory_option is not NULL,
 * --<directory_option>=DIR (the spool, the state). */
typedef struct DaemonCommandLine {
        const char *config_path;  /* --config=, else config_default_path() */
        const char *listen;       /* --listen=, or NULL */
        const char *directory;    /* --<directory_option>=, or NULL */
        bool check;               /* load the configuration, report, exit */
} DaemonCommandLine;

/* Returns 0 to go on, 1 when --help printed the usage (exit 0), -EINVAL on
 * an unknown option or a missing argument (getopt said which; exit 2). */
int daemon_parse_command_line(int argc, char **argv, const char *program, const char *directory_option,
                              DaemonCommandLine *ret);

/* Serves varlink on the socket systemd passed as FileDescriptorName=varlink,
 * else on address (--listen=, mode 0666). With neither: an error naming
 * socket_unit, or, when socket_unit is NULL, nothing (varlink is optional
 * there). Logs what failed; returns 0 or negative errno. */
int daemon_listen_varlink(Daemon *d, VarlinkServer *s, const char *address, const char *socket_unit);
