/* SPDX-License-Identifier: MIT */
/* Load client for halyard-queued's intake, run by hand (never by `meson
 * test`; tests/bench/run-queue-bench drives it). It speaks the varlink wire
 * protocol directly (no halyard code), like an smtpd handing messages over:
 *
 *   queue-bench enqueue ADDRESS CLIENTS COUNT SIZE SECONDS [RCPT]
 *       CLIENTS connections, each with one io.halyard.Queue.Enqueue in flight
 *       (the server answers a connection's calls in order, so more would only
 *       queue up); each call passes a fresh memfd holding a SIZE-byte message
 *       (SCM_RIGHTS on the sendmsg of the call's first byte) and is answered
 *       once the message is durable. Stops starting calls after COUNT calls
 *       or SECONDS, whichever comes first, then waits (at most 60 s more) for
 *       the answers. Prints one line of key=value: acked, errors, elapsed
 *       seconds, msg/s, ack latency p50/p99 in ms.
 *   queue-bench status ADDRESS
 *       Prints the parameters of io.halyard.Queue.GetStatus as JSON.
 *   queue-bench fsync DIR COUNT
 *       Disk reference: COUNT times create a file in DIR, write 4 KiB, fsync,
 *       close; prints files/s (the files are removed).
 *
 * ADDRESS is unix:/path or /path. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int connect_unix(const char *address) {
        const char *path = strncmp(address, "unix:", 5) == 0 ? address + 5 : address;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(path) >= sizeof sa.sun_path) {
                fprintf(stderr, "socket path too long\n");
                return -1;
        }
        strcpy(sa.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
                perror("connect");
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        return fd;
}

/* ---- enqueue load ---------------------------------------------------------------- */

typedef struct Client {
        int fd;
        bool busy;
        double sent_at;
        size_t in_len; /* bytes of the current reply so far */
        char in[4096];
} Client;

static char *body;
static size_t body_len, msg_size;
static const char *rcpt = "sink@bench.test";

/* A message of exactly msg_size bytes (headers of a fixed length + body of
 * 76-char CRLF lines ending in CRLF), with a unique Message-ID, in a new
 * memfd. */
static int make_content(unsigned long long seq) {
        char hdr[512];
        int h = snprintf(hdr, sizeof hdr,
                         "From: <bench@bench.test>\r\nTo: <%s>\r\nSubject: queue-bench %010llu\r\n"
                         "Message-ID: <%010llu.%010ld@queue-bench.bench.test>\r\n\r\n",
                         rcpt, seq, seq, (long) getpid());
        if (h < 0 || (size_t) h >= sizeof hdr)
                return -1;
        size_t blen = msg_size > (size_t) h ? msg_size - (size_t) h : 0;
        int fd = memfd_create("queue-bench", MFD_CLOEXEC);
        if (fd < 0)
                return -1;
        struct iovec iov[2] = { { hdr, (size_t) h }, { body, blen } };
        size_t want = (size_t) h + blen;
        if (writev(fd, iov, 2) != (ssize_t) want) {
                close(fd);
                return -1;
        }
        return fd;
}

static int send_call(Client *c, unsigned long long seq) {
        char call[768];
        int len = snprintf(call, sizeof call,
                           "{\"method\":\"io.halyard.Queue.Enqueue\",\"parameters\":{\"sender\":\"bench@bench.test\","
                           "\"recipients\":[{\"address\":\"%s\"}],\"content\":0}}",
                           rcpt);
        if (len < 0 || (size_t) len + 1 >= sizeof call)
                return -1;
        int mfd = make_content(seq);
        if (mfd < 0) {
                perror("memfd");
                return -1;
        }
        union {
                struct cmsghdr cmsg;
                char buf[CMSG_SPACE(sizeof(int))];
        } control;
        memset(&control, 0, sizeof control);
        /* The whole call (with its NUL) in one sendmsg that carries the fd. */
        struct iovec iov = { call, (size_t) len + 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf };
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &mfd, sizeof(int));
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        close(mfd);
        if (n != len + 1) {
                perror("sendmsg");
                return -1;
        }
        c->busy = true;
        c->sent_at = now();
        return 0;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static int cmd_enqueue(int argc, char **argv) {
        if (argc < 7) {
                fprintf(stderr, "usage: queue-bench enqueue ADDRESS CLIENTS COUNT SIZE SECONDS [RCPT]\n");
                return 2;
        }
        unsigned nclients = (unsigned) atoi(argv[3]);
        unsigned long long count = strtoull(argv[4], NULL, 10);
        msg_size = (size_t) atol(argv[5]);
        double seconds = atof(argv[6]);
        if (argc > 7)
                rcpt = argv[7];
        if (nclients < 1 || nclients > 4096 || count < 1 || count > 10000000 || msg_size < 64 ||
            msg_size > 64 * 1024 * 1024 || seconds <= 0 || seconds > 3600 || strlen(rcpt) > 256) {
                fprintf(stderr, "bad arguments\n");
                return 2;
        }

        /* Body: 74 printable characters + CRLF per line. */
        body_len = msg_size;
        body = malloc(body_len + 1);
        double *lat = calloc(count, sizeof *lat);
        Client *cl = calloc(nclients, sizeof *cl);
        if (!body || !lat || !cl)
                return 1;
        for (size_t i = 0; i < body_len; i++)
                body[i] = (i % 76 == 74) ? '\r' : (i % 76 == 75) ? '\n' : (char) ('a' + (i % 76) % 26);
        /* The header length is the same for every message: end the body
         * part that is sent with CRLF and no bare CR before it. */
        char hdr_probe[512];
        int hl = snprintf(hdr_probe, sizeof hdr_probe,
                          "From: <bench@bench.test>\r\nTo: <%s>\r\nSubject: queue-bench %010llu\r\n"
                          "Message-ID: <%010llu.%010ld@queue-bench.bench.test>\r\n\r\n",
                          rcpt, 0ULL, 0ULL, 0L);
        if (hl > 0 && msg_size >= (size_t) hl + 3) {
                size_t blen = msg_size - (size_t) hl;
                body[blen - 3] = body[blen - 3] == '\r' ? 'x' : body[blen - 3];
                body[blen - 2] = '\r';
                body[blen - 1] = '\n';
        }

        int ep = epoll_create1(EPOLL_CLOEXEC);
        for (unsigned i = 0; i < nclients; i++) {
                cl[i].fd = connect_unix(argv[2]);
                if (cl[i].fd < 0)
                        return 1;
                struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
                if (epoll_ctl(ep, EPOLL_CTL_ADD, cl[i].fd, &ev) < 0) {
                        perror("epoll_ctl");
                        return 1;
                }
        }

        unsigned long long started = 0, acked = 0, errors = 0, outstanding = 0;
        double t0 = now(), stop_at = t0 + seconds, t_last = t0;
        for (unsigned i = 0; i < nclients && started < count; i++) {
                if (send_call(&cl[i], started) < 0)
                        return 1;
                started++;
                outstanding++;
        }

        struct epoll_event evs[256];
        char first_error[256] = "";
        while (outstanding > 0) {
                double t = now();
                if (t > stop_at + 60) {
                        fprintf(stderr, "queue-bench: %llu answers missing after %.0f s\n", outstanding, t - t0);
                        break;
                }
                int n = epoll_wait(ep, evs, 256, 1000);
                if (n < 0 && errno != EINTR) {
                        perror("epoll_wait");
                        return 1;
                }
                for (int k = 0; k < n; k++) {
                        Client *c = &cl[evs[k].data.u32];
                        ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len - 1);
                        if (r <= 0) {
                                fprintf(stderr, "queue-bench: connection closed by the server\n");
                                return 1;
                        }
                        c->in_len += (size_t) r;
                        char *nul = memchr(c->in, 0, c->in_len);
                        if (!nul) {
                                if (c->in_len >= sizeof c->in - 1) {
                                        fprintf(stderr, "queue-bench: reply too long\n");
                                        return 1;
                                }
                                continue;
                        }
                        /* One call in flight per connection: exactly one reply. */
                        double ta = now();
                        if (strstr(c->in, "\"error\"")) {
                                if (!errors)
                                        snprintf(first_error, sizeof first_error, "%.200s", c->in);
                                errors++;
                        } else if (strstr(c->in, "\"queueId\"")) {
                                lat[acked++] = ta - c->sent_at;
                                t_last = ta;
                        } else
                                errors++;
                        size_t rest = c->in_len - (size_t) (nul + 1 - c->in);
                        memmove(c->in, nul + 1, rest);
                        c->in_len = rest;
                        c->busy = false;
                        outstanding--;
                        if (started < count && ta < stop_at) {
                                if (send_call(c, started) < 0)
                                        return 1;
                                started++;
                                outstanding++;
                        }
                }
        }
        double elapsed = t_last - t0;
        qsort(lat, acked, sizeof *lat, cmp_double);
        double p50 = acked ? lat[acked / 2] : 0, p99 = acked ? lat[(acked * 99) / 100 < acked ? (acked * 99) / 100 : acked - 1] : 0;
        printf("acked=%llu errors=%llu missing=%llu elapsed=%.3f rate=%.1f p50_ms=%.2f p99_ms=%.2f\n", acked, errors,
               outstanding, elapsed, elapsed > 0 ? (double) acked / elapsed : 0.0, p50 * 1e3, p99 * 1e3);
        if (errors)
                fprintf(stderr, "queue-bench: %llu errors, first: %s\n", errors, first_error);
        return errors || outstanding ? 1 : 0;
}

/* ---- GetStatus ------------------------------------------------------------------- */

static int cmd_status(int argc, char **argv) {
        if (argc != 3) {
                fprintf(stderr, "usage: queue-bench status ADDRESS\n");
                return 2;
        }
        int fd = connect_unix(argv[2]);
        if (fd < 0)
                return 1;
        static const char call[] = "{\"method\":\"io.halyard.Queue.GetStatus\",\"parameters\":{}}";
        if (write(fd, call, sizeof call) != (ssize_t) sizeof call) { /* sizeof includes the NUL */
                perror("write");
                return 1;
        }
        char buf[65536];
        size_t len = 0;
        while (len < sizeof buf - 1) {
                ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
                if (r <= 0)
                        break;
                len += (size_t) r;
                if (memchr(buf, 0, len))
                        break;
        }
        close(fd);
        buf[len] = 0;
        if (!strstr(buf, "\"parameters\"") || strstr(buf, "\"error\"")) {
                fprintf(stderr, "queue-bench: bad GetStatus reply: %s\n", buf);
                return 1;
        }
        printf("%s\n", buf);
        return 0;
}

/* ---- disk reference -------------------------------------------------------------- */

static int cmd_fsync(int argc, char **argv) {
        if (argc != 4) {
                fprintf(stderr, "usage: queue-bench fsync DIR COUNT\n");
                return 2;
        }
        int count = atoi(argv[3]);
        if (count < 1 || count > 1000000)
                return 2;
        char blk[4096], path[4096];
        memset(blk, 'x', sizeof blk);
        double t0 = now();
        for (int i = 0; i < count; i++) {
                snprintf(path, sizeof path, "%s/f.%d", argv[2], i);
                int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
                if (fd < 0 || write(fd, blk, sizeof blk) != (ssize_t) sizeof blk || fsync(fd) < 0) {
                        perror(path);
                        return 1;
                }
                close(fd);
        }
        double t = now() - t0;
        for (int i = 0; i < count; i++) {
                snprintf(path, sizeof path, "%s/f.%d", argv[2], i);
                (void) unlink(path);
        }
        printf("%.1f\n", count / t);
        return 0;
}

int main(int argc, char **argv) {
        if (argc >= 2 && strcmp(argv[1], "enqueue") == 0)
                return cmd_enqueue(argc, argv);
        if (argc >= 2 && strcmp(argv[1], "status") == 0)
                return cmd_status(argc, argv);
        if (argc >= 2 && strcmp(argv[1], "fsync") == 0)
                return cmd_fsync(argc, argv);
        fprintf(stderr, "usage: queue-bench enqueue|status|fsync ...\n");
        return 2;
}
