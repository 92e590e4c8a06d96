/* SPDX-License-Identifier: MIT */
/* systemd glue: listening fds by name, sd_notify() state, signals and the
 * watchdog on the sd-event loop, and the directories/credentials systemd
 * hands a service. This is main-level glue, so unlike the rest of shared/
 * it logs (signal and reload outcomes). */

#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "config.h"
#include "log.h"

#define DAEMON_STATUS_INTERVAL_USEC (10ULL * 1000000ULL)
#define DAEMON_STATUS_MAX 1024

struct Daemon {
        sd_event *event;
        DaemonCallbacks cb;
        void *userdata;

        sd_event_source *sigterm_source;
        sd_event_source *sigint_source;
        sd_event_source *sighup_source;
        sd_event_source *watchdog_source;
        sd_event_source *status_source;
        uint64_t watchdog_usec;

        /* Inherited fds; a taken one is -1. names[i] belongs to fds[i]. */
        int *fds;
        char **names;
        size_t n_fds;

        bool draining;
        bool stopping_sent;
        bool exit_requested;
};

/* sd_notify() returns > 0 when sent, 0 without $NOTIFY_SOCKET. */
static int notify(const char *state) {
        int r = sd_notify(0, state);
        return r < 0 ? r : 0;
}

/* STATUS= is one line of a newline-separated assignment list: a newline in
 * the text would let it add assignments of its own (MAINPID=, READY=). */
static void status_sanitize(char *s) {
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7F)
                        *s = ' ';
}

/* Fills buf with "STATUS=<callback text>" or returns a negative errno. */
static int status_from_callback(Daemon *d, char *buf, size_t n) {
        const size_t prefix = strlen("STATUS=");
        int r;

        if (!d->cb.status)
                return -ENODATA;
        if (n <= prefix + 1)
                return -ENOBUFS;

        memcpy(buf, "STATUS=", prefix);
        buf[prefix] = '\0';
        r = d->cb.status(d, buf + prefix, n - prefix, d->userdata);
        if (r < 0)
                return r;
        buf[n - 1] = '\0';
        status_sanitize(buf + prefix);
        return 0;
}

/* READY=1 plus STATUS= from the callback when it has one. */
static int notify_ready(Daemon *d) {
        char msg[sizeof "READY=1\n" + sizeof "STATUS=" + DAEMON_STATUS_MAX];
        const size_t prefix = strlen("READY=1\n");

        memcpy(msg, "READY=1\n", prefix + 1);
        if (status_from_callback(d, msg + prefix, sizeof msg - prefix) < 0)
                msg[prefix - 1] = '\0';
        return notify(msg);
}

static void notify_stopping(Daemon *d) {
        if (d->stopping_sent)
                return;
        d->stopping_sent = true;
        (void) notify("STOPPING=1");
}

static int on_terminate(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Daemon *d = userdata;
        const char *sig = si->ssi_signo == SIGINT ? "SIGINT" : "SIGTERM";

        if (d->exit_requested)
                return 0;       /* keep the code daemon_exit() was given */
        if (d->draining) {
                log_notice("Received %s again while draining, exiting now.", sig);
                (void) daemon_exit(d, 0);
                return 0;
        }

        d->draining = true;
        notify_stopping(d);
        log_event(LOG_NOTICE, LOG_MESSAGE_SERVICE_STOPPING,
                  (const char *[]) { si->ssi_signo == SIGINT ? "HALYARD_SIGNAL=SIGINT" : "HALYARD_SIGNAL=SIGTERM", NULL },
                  "Received %s, stopping.", sig);

        if (d->cb.drain)
                d->cb.drain(d, d->userdata);
        else
                (void) daemon_exit(d, 0);
        return 0;
}

static int on_reload(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Daemon *d = userdata;
        char msg[64];
        struct timespec ts;
        int r = 0;

        if (d->draining) {
                log_debug("Received SIGHUP while draining, ignoring.");
                return 0;
        }

        /* MONOTONIC_USEC= is what Type=notify-reload (systemd >= 253) wants
         * with RELOADING=1; older managers ignore it. */
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0)
                snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
                         (unsigned long long) ts.tv_sec * 1000000ULL + (unsigned long long) ts.tv_nsec / 1000ULL);
        else
                snprintf(msg, sizeof msg, "RELOADING=1");
        (void) notify(msg);

        if (d->cb.reload) {
                r = d->cb.reload(d, d->userdata);
                if (r < 0)
                        log_event(LOG_WARNING, LOG_MESSAGE_CONFIG_REFUSED, NULL,
                                  "Configuration reload refused, keeping the old configuration: %s",
                                  strerror(-r));
                else
                        log_event(LOG_NOTICE, LOG_MESSAGE_CONFIG_RELOADED, NULL, "Configuration reloaded.");
        }

        (void) notify_ready(d);
        return 0;
}

static int on_watchdog(sd_event_source *s, uint64_t usec, void *userdata) {
        Daemon *d = userdata;
        int r;

        (void) notify("WATCHDOG=1");

        r = sd_event_source_set_time_relative(s, d->watchdog_usec / 2);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        if (r < 0)
                log_error_errno(r, "Failed to rearm watchdog timer, the service manager will kill us: %m");
        return 0;
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Daemon *d = userdata;
        char msg[sizeof "STATUS=" + DAEMON_STATUS_MAX];

        if (status_from_callback(d, msg, sizeof msg) >= 0)
                (void) notify(msg);

        if (sd_event_source_set_time_relative(s, DAEMON_STATUS_INTERVAL_USEC) >= 0)
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

static int daemon_collect_listen_fds(Daemon *d) {
        char **names = NULL;
        int n;

        n = sd_listen_fds_with_names(1, &names);
        if (n <= 0)
                return n;

        d->fds = calloc((size_t) n, sizeof(int));
        if (!d->fds) {
                for (int i = 0; i < n; i++) {
                        safe_close(SD_LISTEN_FDS_START + i);
                        free(names[i]);
                }
                free(names);
                return -ENOMEM;
        }
        for (int i = 0; i < n; i++)
                d->fds[i] = SD_LISTEN_FDS_START + i;
        d->names = names;
        d->n_fds = (size_t) n;
        return 0;
}

int daemon_new(sd_event *e, const DaemonCallbacks *cb, void *userdata, Daemon **ret) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        sigset_t mask;
        int r;

        if (!e || !ret)
                return -EINVAL;

        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        d->event = sd_event_ref(e);
        if (cb)
                d->cb = *cb;
        d->userdata = userdata;

        /* systemd starts services with a soft limit of 1024 fds (for
         * select() users) and a high hard limit; an epoll server with
         * thousands of connections raises its own soft limit. */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) >= 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }

        /* sd-event in 252 takes signals via signalfd and needs them blocked. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return negative_errno();

        r = sd_event_add_signal(e, &d->sigterm_source, SIGTERM, on_terminate, d);
        if (r < 0)
                return r;
        r = sd_event_add_signal(e, &d->sigint_source, SIGINT, on_terminate, d);
        if (r < 0)
                return r;
        r = sd_event_add_signal(e, &d->sighup_source, SIGHUP, on_reload, d);
        if (r < 0)
                return r;

        r = sd_watchdog_enabled(0, &d->watchdog_usec);
        if (r < 0)
                log_warning_errno(r, "Invalid $WATCHDOG_USEC/$WATCHDOG_PID, not sending watchdog pings: %m");
        else if (r > 0 && d->watchdog_usec >= 2) {
                r = sd_event_add_time_relative(e, &d->watchdog_source, CLOCK_MONOTONIC,
                                               d->watchdog_usec / 2, MAX(d->watchdog_usec / 20, (uint64_t) 1),
                                               on_watchdog, d);
                if (r < 0)
                        return r;
        }

        if (d->cb.status) {
                r = sd_event_add_time_relative(e, &d->status_source, CLOCK_MONOTONIC,
                                               DAEMON_STATUS_INTERVAL_USEC, 1000000ULL,
                                               on_status_timer, d);
                if (r < 0)
                        return r;
        }

        r = daemon_collect_listen_fds(d);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(d);
        return 0;
}

Daemon *daemon_free(Daemon *d) {
        if (!d)
                return NULL;

        sd_event_source_disable_unref(d->sigterm_source);
        sd_event_source_disable_unref(d->sigint_source);
        sd_event_source_disable_unref(d->sighup_source);
        sd_event_source_disable_unref(d->watchdog_source);
        sd_event_source_disable_unref(d->status_source);

        for (size_t i = 0; i < d->n_fds; i++) {
                safe_close(d->fds[i]);
                free(d->names[i]);
        }
        free(d->fds);
        free(d->names);

        sd_event_unref(d->event);
        free(d);
        return NULL;
}

int daemon_take_listen_fd(Daemon *d, const char *name) {
        if (!d || !name)
                return -EINVAL;

        for (size_t i = 0; i < d->n_fds; i++)
                if (d->fds[i] >= 0 && streq_ptr(d->names[i], name))
                        return TAKE_FD(d->fds[i]);
        return -ENOENT;
}

size_t daemon_n_listen_fds_left(Daemon *d) {
        size_t n = 0;

        if (!d)
                return 0;
        for (size_t i = 0; i < d->n_fds; i++)
                if (d->fds[i] >= 0)
                        n++;
        return n;
}

int daemon_ready(Daemon *d) {
        if (!d)
                return -EINVAL;
        return notify_ready(d);
}

int daemon_status(Daemon *d, const char *format, ...) {
        char msg[sizeof "STATUS=" + DAEMON_STATUS_MAX];
        const size_t prefix = strlen("STATUS=");
        va_list ap;
        int r;

        if (!format)
                return -EINVAL;

        memcpy(msg, "STATUS=", prefix);
        va_start(ap, format);
        r = vsnprintf(msg + prefix, sizeof msg - prefix, format, ap);
        va_end(ap);
        if (r < 0)
                return -EINVAL;
        status_sanitize(msg + prefix);
        return notify(msg);
}

int daemon_exit(Daemon *d, int code) {
        if (!d)
                return -EINVAL;
        d->draining = true;
        d->exit_requested = true;
        notify_stopping(d);
        return sd_event_exit(d->event, code);
}

bool daemon_is_draining(const Daemon *d) {
        return d && d->draining;
}

/* First entry of a colon-separated directory list, kept in cache (the
 * variables are constant for the life of the process). */
static const char *first_directory(const char *variable, char *cache, size_t n, const char *fallback) {
        const char *e = getenv(variable);
        size_t l;

        if (!e || e[0] != '/')
                return fallback;
        l = strcspn(e, ":");
        if (l >= n)
                return fallback;
        if (strncmp(cache, e, l) != 0 || cache[l] != '\0') {
                memcpy(cache, e, l);
                cache[l] = '\0';
        }
        return cache;
}

const char *daemon_state_directory(const char *fallback) {
        static char cache[PATH_MAX];
        return first_directory("STATE_DIRECTORY", cache, sizeof cache, fallback);
}

const char *daemon_runtime_directory(const char *fallback) {
        static char cache[PATH_MAX];
        return first_directory("RUNTIME_DIRECTORY", cache, sizeof cache, fallback);
}

static int credential_directory(const char *name, const char **ret) {
        const char *e;

        if (!name || !*name || name[0] == '.' || strchr(name, '/') || strlen(name) > NAME_MAX)
                return -EINVAL;
        e = getenv("CREDENTIALS_DIRECTORY");
        if (!e || !*e)
                return -ENXIO;
        *ret = e;
        return 0;
}

static int regular_file_check(const struct stat *st) {
        if (S_ISREG(st->st_mode))
                return 0;
        if (S_ISLNK(st->st_mode))
                return -ELOOP;
        if (S_ISDIR(st->st_mode))
                return -EISDIR;
        return -EBADFD;
}

/* Frees a buffer that may hold part of a secret. */
static void free_erase(char *p, size_t n) {
        if (p) {
                explicit_bzero(p, n);
                free(p);
        }
}

int daemon_read_credential(const char *name, size_t max, char **ret, size_t *ret_size) {
        _cleanup_close_ int dfd = -1, fd = -1;
        const char *dir;
        struct stat st;
        char *buf;
        size_t cap, size = 0;
        int r;

        if (!ret)
                return -EINVAL;
        r = credential_directory(name, &dir);
        if (r < 0)
                return r;

        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return negative_errno();
        /* O_NONBLOCK so a FIFO planted there cannot block us before fstat(). */
        fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        r = regular_file_check(&st);
        if (r < 0)
                return r;
        if (st.st_size < 0 || (uintmax_t) st.st_size > (uintmax_t) max)
                return -EFBIG;

        cap = (size_t) st.st_size;
        buf = malloc(cap + 1);
        if (!buf)
                return -ENOMEM;

        for (;;) {
                ssize_t k;

                if (size == cap) {
                        /* Full: the file may have grown since fstat(). */
                        char probe;
                        size_t ncap;
                        char *nbuf;

                        k = read(fd, &probe, 1);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k < 0) {
                                r = negative_errno();
                                free_erase(buf, cap + 1);
                                return r;
                        }
                        if (k == 0)
                                break;
                        if (cap >= max) {
                                explicit_bzero(&probe, 1);
                                free_erase(buf, cap + 1);
                                return -EFBIG;
                        }
                        /* cap < max here, so ncap > cap. */
                        ncap = cap <= max / 2 ? MAX(cap * 2, (size_t) 64) : max;
                        ncap = MIN(ncap, max);
                        nbuf = ncap < SIZE_MAX ? malloc(ncap + 1) : NULL;
                        if (!nbuf) {
                                explicit_bzero(&probe, 1);
                                free_erase(buf, cap + 1);
                                return -ENOMEM;
                        }
                        memcpy(nbuf, buf, size);
                        nbuf[size++] = probe;
                        explicit_bzero(&probe, 1);
                        free_erase(buf, cap + 1);
                        buf = nbuf;
                        cap = ncap;
                        continue;
                }

                k = read(fd, buf + size, cap - size);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        r = negative_errno();
                        free_erase(buf, cap + 1);
                        return r;
                }
                if (k == 0)
                        break;
                size += (size_t) k;
        }

        buf[size] = '\0';
        *ret = buf;
        if (ret_size)
                *ret_size = size;
        return 0;
}

int daemon_credential_path(const char *name, char **ret) {
        _cleanup_free_ char *p = NULL;
        const char *dir;
        struct stat st;
        int r;

        if (!ret)
                return -EINVAL;
        r = credential_directory(name, &dir);
        if (r < 0)
                return r;

        if (asprintf(&p, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        if (fstatat(AT_FDCWD, p, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return negative_errno();
        r = regular_file_check(&st);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(p);
        return 0;
}

int daemon_parse_command_line(int argc, char **argv, const char *program, const char *directory_option,
                              DaemonCommandLine *ret) {
        const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "check", no_argument, NULL, 'c' },
                { "config", required_argument, NULL, 'C' },
                { "listen", required_argument, NULL, 'l' },
                /* Last, so that a NULL name ends the table without it. */
                { directory_option, required_argument, NULL, 'd' },
                {}
        };
        DaemonCommandLine cl = { .config_path = config_default_path() };
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        printf("Usage: %s [--check] [--config=PATH] [--listen=unix:/path]", program);
                        if (directory_option)
                                printf(" [--%s=DIR]", directory_option);
                        printf("\n");
                        return 1;
                case 'c':
                        cl.check = true;
                        break;
                case 'C':
                        cl.config_path = optarg;
                        break;
                case 'l':
                        cl.listen = optarg;
                        break;
                case 'd':
                        cl.directory = optarg;
                        break;
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "%s: unexpected argument '%s'\n", program, argv[optind]);
                return -EINVAL;
        }
        *ret = cl;
        return 0;
}

int daemon_listen_varlink(Daemon *d, VarlinkServer *s, const char *address, const char *socket_unit) {
        int r, fd = daemon_take_listen_fd(d, "varlink");
        if (fd >= 0)
                r = varlink_server_listen_fd(s, fd);
        else if (address)
                r = varlink_server_listen_address(s, address, 0666);
        else if (socket_unit)
                /* Started at boot before its socket? systemd passes the fd
                 * either way; without one there is no way to reach us. */
                return log_error_errno(-ENOENT, "No listening socket: start through %s or pass --listen=unix:/path",
                                       socket_unit);
        else
                return 0;
        if (r < 0)
                return log_error_errno(r, "Failed to listen for varlink: %m");
        return 0;
}
