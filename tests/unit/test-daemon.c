/* SPDX-License-Identifier: MIT */
/* daemon.c: credentials, state/runtime directories, listen fds by name,
 * signals on a running sd-event loop, and the real sd_notify() path
 * (READY/STATUS/RELOADING/STOPPING/WATCHDOG datagrams on a socket we bind). */

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "tap.h"

/* --- helpers ------------------------------------------------------------- */

static void reset_environment(void) {
        static const char *const vars[] = {
                "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
                "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY",
                "STATE_DIRECTORY", "RUNTIME_DIRECTORY",
        };
        for (size_t i = 0; i < ELEMENTSOF(vars); i++)
                unsetenv(vars[i]);
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        return remove(path);
}

static void rm_rf(const char *dir) {
        (void) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *make_tempdir(void) {
        char *d = strdup("/tmp/halyard-test-daemon-XXXXXX");
        ASSERT_NOT_NULL(d);
        ASSERT_NOT_NULL(mkdtemp(d));
        return d;
}

static void write_file(const char *dir, const char *name, const char *data, size_t len) {
        char p[4096];
        int fd;

        snprintf(p, sizeof p, "%s/%s", dir, name);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ASSERT_TRUE(fd >= 0);
        ASSERT_TRUE(write(fd, data, len) == (ssize_t) len);
        close(fd);
}

/* A datagram socket standing in for systemd's notify socket. */
typedef struct Notify {
        char dir[64];
        int fd;
        char msgs[128][512];
        size_t n;
} Notify;

static void notify_open(Notify *n, const char *dir) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        memset(n, 0, sizeof *n);
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s/notify", dir);
        n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT_TRUE(n->fd >= 0);
        ASSERT_OK(bind(n->fd, (struct sockaddr *) &sa, sizeof sa));
        ASSERT_OK(setenv("NOTIFY_SOCKET", sa.sun_path, 1));
}

/* Appends all datagrams waiting on the socket to n->msgs. */
static void notify_drain(Notify *n) {
        for (;;) {
                char buf[512];
                ssize_t k = recv(n->fd, buf, sizeof buf - 1, 0);
                if (k < 0)
                        break;
                buf[k] = '\0';
                if (n->n < ELEMENTSOF(n->msgs))
                        memcpy(n->msgs[n->n++], buf, (size_t) k + 1);
        }
}

static size_t notify_count(const Notify *n, const char *prefix) {
        size_t c = 0;
        for (size_t i = 0; i < n->n; i++)
                if (strncmp(n->msgs[i], prefix, strlen(prefix)) == 0)
                        c++;
        return c;
}

/* Index of the first message at or after from starting with prefix, or -1. */
static long notify_find(const Notify *n, size_t from, const char *prefix) {
        for (size_t i = from; i < n->n; i++)
                if (strncmp(n->msgs[i], prefix, strlen(prefix)) == 0)
                        return (long) i;
        return -1;
}

static void notify_close(Notify *n) {
        safe_close(n->fd);
        unsetenv("NOTIFY_SOCKET");
}

/* Runs fn(userdata) after usec on e's monotonic clock. */
typedef void (*Step)(void *userdata);
typedef struct StepCall {
        Step fn;
        void *userdata;
} StepCall;

static int on_step(sd_event_source *s, uint64_t usec, void *userdata) {
        StepCall *c = userdata;
        c->fn(c->userdata);
        return 0;
}

static void at(sd_event *e, uint64_t usec, StepCall *c) {
        ASSERT_OK(sd_event_add_time_relative(e, NULL, CLOCK_MONOTONIC, usec, 1000, on_step, c));
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), -ETIMEDOUT);
}

static void safety_timeout(sd_event *e, uint64_t usec) {
        ASSERT_OK(sd_event_add_time_relative(e, NULL, CLOCK_MONOTONIC, usec, 1000, on_timeout, NULL));
}

/* --- credentials --------------------------------------------------------- */

TEST(credentials) {
        _cleanup_free_ char *dir = NULL;
        char *buf = NULL, p[4096];
        size_t size = 12345;

        reset_environment();
        dir = make_tempdir();
        write_file(dir, "tls-key", "secret\n", 7);
        write_file(dir, "empty", "", 0);
        write_file(dir, ".hidden", "x", 1);
        snprintf(p, sizeof p, "%s/link", dir);
        ASSERT_OK(symlink("tls-key", p));
        snprintf(p, sizeof p, "%s/subdir", dir);
        ASSERT_OK(mkdir(p, 0700));
        snprintf(p, sizeof p, "%s/fifo", dir);
        ASSERT_OK(mkfifo(p, 0600));

        /* No $CREDENTIALS_DIRECTORY. */
        ASSERT_ERR(daemon_read_credential("tls-key", 4096, &buf, &size), -ENXIO);
        ASSERT_ERR(daemon_credential_path("tls-key", &buf), -ENXIO);
        ASSERT_OK(setenv("CREDENTIALS_DIRECTORY", "", 1));
        ASSERT_ERR(daemon_read_credential("tls-key", 4096, &buf, &size), -ENXIO);
        ASSERT_NULL(buf);
        ASSERT_EQ(size, 12345);         /* untouched on failure */

        ASSERT_OK(setenv("CREDENTIALS_DIRECTORY", dir, 1));

        ASSERT_OK(daemon_read_credential("tls-key", 4096, &buf, &size));
        ASSERT_EQ(size, 7);
        ASSERT_STREQ(buf, "secret\n");
        free(buf);
        buf = NULL;

        /* Exactly max is fine, one less is too big. */
        ASSERT_OK(daemon_read_credential("tls-key", 7, &buf, NULL));
        ASSERT_STREQ(buf, "secret\n");
        free(buf);
        buf = NULL;
        ASSERT_ERR(daemon_read_credential("tls-key", 6, &buf, &size), -EFBIG);
        ASSERT_ERR(daemon_read_credential("tls-key", 0, &buf, &size), -EFBIG);
        ASSERT_NULL(buf);

        ASSERT_OK(daemon_read_credential("empty", 0, &buf, &size));
        ASSERT_EQ(size, 0);
        ASSERT_STREQ(buf, "");
        free(buf);
        buf = NULL;

        ASSERT_ERR(daemon_read_credential("missing", 4096, &buf, &size), -ENOENT);
        ASSERT_ERR(daemon_read_credential("a/b", 4096, &buf, &size), -EINVAL);
        ASSERT_ERR(daemon_read_credential("../tls-key", 4096, &buf, &size), -EINVAL);
        ASSERT_ERR(daemon_read_credential(".hidden", 4096, &buf, &size), -EINVAL);
        ASSERT_ERR(daemon_read_credential("..", 4096, &buf, &size), -EINVAL);
        ASSERT_ERR(daemon_read_credential("", 4096, &buf, &size), -EINVAL);
        ASSERT_ERR(daemon_read_credential(NULL, 4096, &buf, &size), -EINVAL);
        ASSERT_ERR(daemon_read_credential("link", 4096, &buf, &size), -ELOOP);
        ASSERT_ERR(daemon_read_credential("subdir", 4096, &buf, &size), -EISDIR);
        /* A FIFO is refused without blocking on open. */
        ASSERT_ERR(daemon_read_credential("fifo", 4096, &buf, &size), -EBADFD);
        ASSERT_NULL(buf);

        /* Paths: same checks, the file must be there. */
        ASSERT_OK(daemon_credential_path("tls-key", &buf));
        snprintf(p, sizeof p, "%s/tls-key", dir);
        ASSERT_STREQ(buf, p);
        free(buf);
        buf = NULL;
        ASSERT_ERR(daemon_credential_path("missing", &buf), -ENOENT);
        ASSERT_ERR(daemon_credential_path("link", &buf), -ELOOP);
        ASSERT_ERR(daemon_credential_path("subdir", &buf), -EISDIR);
        ASSERT_ERR(daemon_credential_path("x/y", &buf), -EINVAL);
        ASSERT_ERR(daemon_credential_path(".hidden", &buf), -EINVAL);
        ASSERT_NULL(buf);

        /* A directory that does not exist means no credential either. */
        ASSERT_OK(setenv("CREDENTIALS_DIRECTORY", "/nonexistent-halyard-credentials", 1));
        ASSERT_ERR(daemon_read_credential("tls-key", 4096, &buf, &size), -ENOENT);

        reset_environment();
        rm_rf(dir);
}

TEST(credentials_large) {
        _cleanup_free_ char *dir = NULL, *big = NULL, *buf = NULL;
        const size_t n = 300 * 1024;
        size_t size = 0;

        reset_environment();
        dir = make_tempdir();
        big = malloc(n);
        ASSERT_NOT_NULL(big);
        for (size_t i = 0; i < n; i++)
                big[i] = (char) (i % 251);     /* NULs included */
        write_file(dir, "blob", big, n);
        ASSERT_OK(setenv("CREDENTIALS_DIRECTORY", dir, 1));

        ASSERT_OK(daemon_read_credential("blob", n, &buf, &size));
        ASSERT_EQ(size, n);
        ASSERT_TRUE(memcmp(buf, big, n) == 0);
        ASSERT_EQ(buf[n], '\0');
        ASSERT_ERR(daemon_read_credential("blob", n - 1, &buf, &size), -EFBIG);

        reset_environment();
        rm_rf(dir);
}

/* --- directories --------------------------------------------------------- */

TEST(directories) {
        static const char *const fb = "/var/lib/fallback";
        static const struct {
                const char *value;
                const char *want;       /* NULL: the fallback */
        } table[] = {
                { "/var/lib/halyard", "/var/lib/halyard" },
                { "/var/lib/a:/var/lib/b", "/var/lib/a" },
                { "/var/lib/a:", "/var/lib/a" },
                { "/var/lib/x:/var/lib/halyard-queue:/var/lib/z", "/var/lib/x" },
                { "", NULL },
                { ":/var/lib/b", NULL },
                { "relative/dir", NULL },
        };

        reset_environment();
        ASSERT_TRUE(daemon_state_directory(fb) == fb);
        ASSERT_TRUE(daemon_runtime_directory(fb) == fb);

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                ASSERT_OK(setenv("STATE_DIRECTORY", table[i].value, 1));
                ASSERT_OK(setenv("RUNTIME_DIRECTORY", table[i].value, 1));
                const char *s = daemon_state_directory(fb), *r = daemon_runtime_directory(fb);
                if (!table[i].want) {
                        ASSERT_TRUE(s == fb);
                        ASSERT_TRUE(r == fb);
                } else {
                        ASSERT_STREQ(s, table[i].want);
                        ASSERT_STREQ(r, table[i].want);
                }
        }

        /* The two are independent. */
        ASSERT_OK(setenv("STATE_DIRECTORY", "/var/lib/halyard", 1));
        ASSERT_OK(setenv("RUNTIME_DIRECTORY", "/run/halyard:/run/other", 1));
        ASSERT_STREQ(daemon_state_directory(fb), "/var/lib/halyard");
        ASSERT_STREQ(daemon_runtime_directory(fb), "/run/halyard");
        /* Stable: same pointer, same contents. */
        ASSERT_TRUE(daemon_state_directory(fb) == daemon_state_directory(fb));

        reset_environment();
}

/* --- listen fds ---------------------------------------------------------- */

/* Puts two fresh sockets on fds 3 and 4 as systemd would, with names. Returns
 * their inode numbers in ino[0] (fd 3), ino[1] (fd 4). */
static bool fd_open(int fd) {
        return fcntl(fd, F_GETFD) >= 0;
}

static void fake_socket_activation(const char *names, ino_t ino[2]) {
        char pid[32];

        /* Whatever sits on 3 and 4 (an sd_event's epoll fd...) would be lost. */
        ASSERT_FALSE(fd_open(3));
        ASSERT_FALSE(fd_open(4));
        for (int i = 0; i < 2; i++) {
                struct stat st;
                int s = socket(AF_UNIX, SOCK_STREAM, 0), hi;

                ASSERT_TRUE(s >= 0);
                hi = fcntl(s, F_DUPFD, 100);    /* out of the way of 3 and 4 */
                ASSERT_TRUE(hi >= 0);
                close(s);
                ASSERT_TRUE(dup2(hi, 3 + i) == 3 + i);
                close(hi);
                ASSERT_OK(fstat(3 + i, &st));
                ino[i] = st.st_ino;
        }
        snprintf(pid, sizeof pid, "%d", (int) getpid());
        ASSERT_OK(setenv("LISTEN_PID", pid, 1));
        ASSERT_OK(setenv("LISTEN_FDS", "2", 1));
        ASSERT_OK(setenv("LISTEN_FDNAMES", names, 1));
}

static ino_t fd_inode(int fd) {
        struct stat st;
        ASSERT_OK(fstat(fd, &st));
        return st.st_ino;
}

TEST(listen_fds_by_name) {
        static const char *const orders[] = { "varlink:smtp", "smtp:varlink" };

        for (size_t o = 0; o < ELEMENTSOF(orders); o++) {
                _cleanup_(sd_event_unrefp) sd_event *e = NULL;
                Daemon *d = NULL;
                ino_t ino[2];
                int smtp, varlink;

                reset_environment();
                fake_socket_activation(orders[o], ino);
                ino_t want_smtp = o == 0 ? ino[1] : ino[0], want_varlink = o == 0 ? ino[0] : ino[1];

                ASSERT_OK(sd_event_new(&e));
                ASSERT_OK(daemon_new(e, NULL, NULL, &d));
                /* Environment consumed, so children don't see it. */
                ASSERT_NULL(getenv("LISTEN_FDS"));
                ASSERT_NULL(getenv("LISTEN_PID"));
                ASSERT_NULL(getenv("LISTEN_FDNAMES"));

                ASSERT_EQ(daemon_n_listen_fds_left(d), 2);
                smtp = daemon_take_listen_fd(d, "smtp");
                ASSERT_OK(smtp);
                ASSERT_EQ(fd_inode(smtp), want_smtp);
                ASSERT_TRUE(fcntl(smtp, F_GETFD) & FD_CLOEXEC);
                ASSERT_EQ(daemon_n_listen_fds_left(d), 1);
                ASSERT_ERR(daemon_take_listen_fd(d, "smtp"), -ENOENT);
                ASSERT_ERR(daemon_take_listen_fd(d, "submission"), -ENOENT);
                varlink = daemon_take_listen_fd(d, "varlink");
                ASSERT_OK(varlink);
                ASSERT_EQ(fd_inode(varlink), want_varlink);
                ASSERT_EQ(daemon_n_listen_fds_left(d), 0);

                d = daemon_free(d);
                ASSERT_NULL(d);
                /* Taken fds are ours: still open after daemon_free(). */
                ASSERT_TRUE(fd_open(smtp));
                ASSERT_TRUE(fd_open(varlink));
                close(smtp);
                close(varlink);
        }
        reset_environment();
}

static int parse(const char *directory_option, DaemonCommandLine *cl, ...) {
        char *argv[16] = { (char *) "halyard-x" };
        int argc = 1;
        va_list ap;
        va_start(ap, cl);
        for (char *a; (a = va_arg(ap, char *)) && argc < 15;)
                argv[argc++] = a;
        va_end(ap);
        return daemon_parse_command_line(argc, argv, "halyard-x", directory_option, cl);
}

TEST(command_line) {
        DaemonCommandLine cl;

        ASSERT_OK(parse("spool", &cl, NULL));
        ASSERT_STREQ(cl.config_path, config_default_path());
        ASSERT_NULL(cl.listen);
        ASSERT_NULL(cl.directory);
        ASSERT_FALSE(cl.check);

        ASSERT_EQ(parse("spool", &cl, "--check", "--config=/etc/x.conf", "--listen", "unix:/run/x",
                        "--spool=/var/spool/x", NULL), 0);
        ASSERT_TRUE(cl.check);
        ASSERT_STREQ(cl.config_path, "/etc/x.conf");
        ASSERT_STREQ(cl.listen, "unix:/run/x");
        ASSERT_STREQ(cl.directory, "/var/spool/x");

        /* Parsed again from the start (getopt keeps its place otherwise). */
        ASSERT_OK(parse("state", &cl, "--state=/var/lib/x", NULL));
        ASSERT_STREQ(cl.directory, "/var/lib/x");
        ASSERT_FALSE(cl.check);

        /* A service without a directory option does not take one. */
        ASSERT_ERR(parse(NULL, &cl, "--spool=/tmp", NULL), -EINVAL);
        ASSERT_ERR(parse("spool", &cl, "--bogus", NULL), -EINVAL);
        ASSERT_ERR(parse("spool", &cl, "--config", NULL), -EINVAL);
        ASSERT_ERR(parse("spool", &cl, "stray", NULL), -EINVAL);

        /* The usage goes to stdout, which carries TAP here: away with it. */
        fflush(stdout);
        int saved = dup(STDOUT_FILENO), null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        ASSERT_OK(saved);
        ASSERT_OK(dup2(null, STDOUT_FILENO));
        int r = parse(NULL, &cl, "--help", NULL);
        fflush(stdout);
        ASSERT_OK(dup2(saved, STDOUT_FILENO));
        close(saved);
        close(null);
        ASSERT_EQ(r, 1);
}

/* A fresh loop per step, created after fds 3 and 4 are in place. */
static sd_event *new_event(sd_event **e) {
        *e = sd_event_unref(*e);
        ASSERT_OK(sd_event_new(e));
        return *e;
}

TEST(listen_fds_untaken_closed) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Daemon *d = NULL;
        ino_t ino[2];
        int a, b;

        reset_environment();

        /* Same name twice: taken in order. */
        fake_socket_activation("smtp:smtp", ino);
        ASSERT_OK(daemon_new(new_event(&e), NULL, NULL, &d));
        a = daemon_take_listen_fd(d, "smtp");
        b = daemon_take_listen_fd(d, "smtp");
        ASSERT_EQ(a, 3);
        ASSERT_EQ(b, 4);
        ASSERT_ERR(daemon_take_listen_fd(d, "smtp"), -ENOENT);
        d = daemon_free(d);
        close(a);
        close(b);

        /* Nothing taken: daemon_free() closes both. */
        fake_socket_activation("varlink:smtp", ino);
        ASSERT_OK(daemon_new(new_event(&e), NULL, NULL, &d));
        ASSERT_EQ(daemon_n_listen_fds_left(d), 2);
        d = daemon_free(d);
        ASSERT_FALSE(fd_open(3));
        ASSERT_FALSE(fd_open(4));

        /* No names: systemd's "unknown". */
        fake_socket_activation("x:y", ino);
        unsetenv("LISTEN_FDNAMES");
        ASSERT_OK(daemon_new(new_event(&e), NULL, NULL, &d));
        ASSERT_EQ(daemon_take_listen_fd(d, "unknown"), 3);
        d = daemon_free(d);
        close(3);
        ASSERT_FALSE(fd_open(4));

        /* Not for us (LISTEN_PID of another process): nothing collected. */
        fake_socket_activation("varlink:smtp", ino);
        ASSERT_OK(setenv("LISTEN_PID", "1", 1));
        ASSERT_OK(daemon_new(new_event(&e), NULL, NULL, &d));
        ASSERT_EQ(daemon_n_listen_fds_left(d), 0);
        d = daemon_free(d);
        ASSERT_TRUE(fd_open(3));
        close(3);
        close(4);

        /* Names and fds disagree: refused. */
        fake_socket_activation("only-one", ino);
        ASSERT_ERR(daemon_new(new_event(&e), NULL, NULL, &d), -EINVAL);
        ASSERT_NULL(d);
        close(3);
        close(4);

        ASSERT_NULL(daemon_free(NULL));
        ASSERT_ERR(daemon_take_listen_fd(NULL, "smtp"), -EINVAL);
        reset_environment();
}

/* --- signals ------------------------------------------------------------- */

typedef struct SignalCtx {
        sd_event *e;
        Daemon *d;
        int reloads;
        int refuse;             /* errno the reload callback returns */
        int drains;
        bool draining_seen;
        int exit_code;
        StepCall exit_call;
        char status_text[64];
} SignalCtx;

static int cb_reload(Daemon *d, void *userdata) {
        SignalCtx *c = userdata;
        c->reloads++;
        return c->refuse;
}

static void step_exit(void *userdata) {
        SignalCtx *c = userdata;
        (void) daemon_exit(c->d, c->exit_code);
        /* A signal after daemon_exit() must not change the exit code. */
        raise(SIGTERM);
}

static void cb_drain_then_exit(Daemon *d, void *userdata) {
        SignalCtx *c = userdata;
        c->drains++;
        c->draining_seen = daemon_is_draining(d);
        /* SIGHUP while draining is ignored. */
        raise(SIGHUP);
        c->exit_call = (StepCall) { step_exit, c };
        at(c->e, 30 * 1000, &c->exit_call);
}

static void cb_drain_forever(Daemon *d, void *userdata) {
        SignalCtx *c = userdata;
        c->drains++;
}

static int cb_status(Daemon *d, char *buf, size_t n, void *userdata) {
        SignalCtx *c = userdata;
        snprintf(buf, n, "%s", c->status_text);
        return 0;
}

static void step_sighup(void *userdata) {
        raise(SIGHUP);
}
static void step_sighup_refused(void *userdata) {
        SignalCtx *c = userdata;
        c->refuse = -EINVAL;
        snprintf(c->status_text, sizeof c->status_text, "still old config");
        raise(SIGHUP);
}
static void step_sigterm(void *userdata) {
        raise(SIGTERM);
}
static void step_sigint(void *userdata) {
        raise(SIGINT);
}

TEST(signals_reload_and_drain) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_free_ char *dir = NULL;
        const DaemonCallbacks cb = { .drain = cb_drain_then_exit, .reload = cb_reload, .status = cb_status };
        SignalCtx c = { .exit_code = 42 };
        Notify n;
        long i;

        reset_environment();
        dir = make_tempdir();
        notify_open(&n, dir);
        snprintf(c.status_text, sizeof c.status_text, "serving\nMAINPID=1");

        ASSERT_OK(sd_event_new(&e));
        c.e = e;
        ASSERT_OK(daemon_new(e, &cb, &c, &c.d));
        ASSERT_FALSE(daemon_is_draining(c.d));
        ASSERT_OK(daemon_ready(c.d));

        StepCall s1 = { step_sighup, &c }, s2 = { step_sighup_refused, &c }, s3 = { step_sigterm, &c };
        at(e, 20 * 1000, &s1);
        at(e, 60 * 1000, &s2);
        at(e, 100 * 1000, &s3);
        safety_timeout(e, 5 * 1000 * 1000);

        ASSERT_EQ(sd_event_loop(e), 42);
        ASSERT_EQ(c.reloads, 2);        /* the SIGHUP while draining was ignored */
        ASSERT_EQ(c.drains, 1);
        ASSERT_TRUE(c.draining_seen);
        ASSERT_TRUE(daemon_is_draining(c.d));

        notify_drain(&n);
        /* READY, then (RELOADING, READY) twice, then STOPPING once. */
        ASSERT_STREQ(n.msgs[0], "READY=1\nSTATUS=serving MAINPID=1");
        i = notify_find(&n, 1, "RELOADING=1\nMONOTONIC_USEC=");
        ASSERT_TRUE(i == 1);
        ASSERT_STREQ(n.msgs[2], "READY=1\nSTATUS=serving MAINPID=1");
        ASSERT_TRUE(notify_find(&n, 3, "RELOADING=1") == 3);
        ASSERT_STREQ(n.msgs[4], "READY=1\nSTATUS=still old config");
        ASSERT_STREQ(n.msgs[5], "STOPPING=1");
        ASSERT_EQ(n.n, 6);
        ASSERT_EQ(notify_count(&n, "MAINPID="), 0);

        c.d = daemon_free(c.d);
        notify_close(&n);
        rm_rf(dir);
        reset_environment();
}

TEST(signals_second_sigterm_exits) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_free_ char *dir = NULL;
        const DaemonCallbacks cb = { .drain = cb_drain_forever };
        SignalCtx c = { 0 };
        Notify n;

        reset_environment();
        dir = make_tempdir();
        notify_open(&n, dir);
        ASSERT_OK(sd_event_new(&e));
        c.e = e;
        ASSERT_OK(daemon_new(e, &cb, &c, &c.d));

        /* SIGINT starts the drain like SIGTERM; a SIGTERM while draining ends it. */
        StepCall s1 = { step_sigint, &c }, s2 = { step_sigterm, &c };
        at(e, 10 * 1000, &s1);
        at(e, 50 * 1000, &s2);
        safety_timeout(e, 5 * 1000 * 1000);

        ASSERT_EQ(sd_event_loop(e), 0);
        ASSERT_EQ(c.drains, 1);
        notify_drain(&n);
        ASSERT_EQ(notify_count(&n, "STOPPING=1"), 1);

        c.d = daemon_free(c.d);
        notify_close(&n);
        rm_rf(dir);
        reset_environment();
}

TEST(signals_no_callbacks) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Daemon *d = NULL;

        reset_environment();
        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(daemon_new(e, NULL, NULL, &d));
        /* No reload callback: SIGHUP only re-sends READY; no drain: exit 0. */
        StepCall s1 = { step_sighup, NULL }, s2 = { step_sigterm, NULL };
        at(e, 10 * 1000, &s1);
        at(e, 30 * 1000, &s2);
        safety_timeout(e, 5 * 1000 * 1000);
        ASSERT_EQ(sd_event_loop(e), 0);
        d = daemon_free(d);

        /* A second Daemon on a new loop in the same process works. */
        sd_event *e2 = NULL;
        ASSERT_OK(sd_event_new(&e2));
        ASSERT_OK(daemon_new(e2, NULL, NULL, &d));
        at(e2, 10 * 1000, &s2);
        safety_timeout(e2, 5 * 1000 * 1000);
        ASSERT_EQ(sd_event_loop(e2), 0);
        d = daemon_free(d);
        sd_event_unref(e2);
}

/* --- notifications ------------------------------------------------------- */

TEST(notify_status_and_exit) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_free_ char *dir = NULL;
        Daemon *d = NULL;
        Notify n;

        reset_environment();
        /* Without $NOTIFY_SOCKET everything is a no-op that succeeds. */
        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(daemon_new(e, NULL, NULL, &d));
        ASSERT_OK(daemon_ready(d));
        ASSERT_OK(daemon_status(d, "x"));
        d = daemon_free(d);

        dir = make_tempdir();
        notify_open(&n, dir);
        ASSERT_OK(daemon_new(e, NULL, NULL, &d));
        ASSERT_OK(daemon_ready(d));                     /* no status callback */
        ASSERT_OK(daemon_status(d, "queue %d, %s", 5, "ok"));
        ASSERT_OK(daemon_status(d, "evil\nREADY=1\rX"));
        ASSERT_OK(daemon_exit(d, 7));
        ASSERT_TRUE(daemon_is_draining(d));
        (void) daemon_exit(d, 7);                        /* STOPPING=1 only once */
        ASSERT_EQ(sd_event_loop(e), 7);

        notify_drain(&n);
        ASSERT_EQ(n.n, 4);
        ASSERT_STREQ(n.msgs[0], "READY=1");
        ASSERT_STREQ(n.msgs[1], "STATUS=queue 5, ok");
        ASSERT_STREQ(n.msgs[2], "STATUS=evil READY=1 X");
        ASSERT_STREQ(n.msgs[3], "STOPPING=1");

        d = daemon_free(d);
        notify_close(&n);
        rm_rf(dir);
        reset_environment();
}

/* --- watchdog ------------------------------------------------------------ */

static void step_plain_exit(void *userdata) {
        sd_event_exit(userdata, 0);
}

TEST(watchdog) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_free_ char *dir = NULL;
        Daemon *d = NULL;
        char pid[32];
        Notify n;

        reset_environment();
        dir = make_tempdir();
        notify_open(&n, dir);
        snprintf(pid, sizeof pid, "%d", (int) getpid());
        ASSERT_OK(setenv("WATCHDOG_USEC", "200000", 1));
        ASSERT_OK(setenv("WATCHDOG_PID", pid, 1));

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(daemon_new(e, NULL, NULL, &d));
        ASSERT_OK(daemon_ready(d));
        StepCall stop = { step_plain_exit, e };
        at(e, 350 * 1000, &stop);
        safety_timeout(e, 5 * 1000 * 1000);
        ASSERT_EQ(sd_event_loop(e), 0);

        notify_drain(&n);
        ASSERT_STREQ(n.msgs[0], "READY=1");
        /* Pings every 100 ms: 3 expected in 350 ms; allow for a slow host. */
        ASSERT_TRUE(notify_count(&n, "WATCHDOG=1") >= 1);
        ASSERT_TRUE(notify_count(&n, "WATCHDOG=1") <= 4);
        d = daemon_free(d);

        /* WATCHDOG_PID of another process: no pings. */
        n.n = 0;
        ASSERT_OK(setenv("WATCHDOG_PID", "1", 1));
        sd_event *e2 = NULL;
        ASSERT_OK(sd_event_new(&e2));
        ASSERT_OK(daemon_new(e2, NULL, NULL, &d));
        StepCall stop2 = { step_plain_exit, e2 };
        at(e2, 250 * 1000, &stop2);
        ASSERT_EQ(sd_event_loop(e2), 0);
        notify_drain(&n);
        ASSERT_EQ(notify_count(&n, "WATCHDOG=1"), 0);
        d = daemon_free(d);
        sd_event_unref(e2);

        notify_close(&n);
        rm_rf(dir);
        reset_environment();
}

int main(void) {
        /* The daemon logs signal and reload outcomes; keep them on stderr. */
        log_setup("test-daemon", LOG_TARGET_STDERR);
        return tap_run();
}
