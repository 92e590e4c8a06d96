/* SPDX-License-Identifier: MIT */
/* smtp-tls-load: STARTTLS session load generator for tests/bench/run-smtpd-bench.
 *
 * N threads, each with blocking sockets, run sessions back to back until a
 * session count or a time limit is reached. One session: connect, 220, EHLO,
 * STARTTLS, 220, TLS handshake (no certificate verification: this is a load
 * generator), EHLO, MAIL, RCPT, DATA, a small message, QUIT, close. With -r
 * each thread offers the session (ticket) of its previous session.
 *
 * Prints one line of key=value pairs on stdout:
 *   sessions= failures= elapsed= rate= resumed= p50_ms= p99_ms= rsa= ecdsa= other= desc=...
 * (rsa/ecdsa: the server's signature algorithm per session) and the first
 * failure reason on stderr. Exit status 0 when at least one session
 * succeeded and none failed, 1 when some failed, 2 on usage errors.
 *
 *   smtp-tls-load [-c SESSIONS] [-n COUNT] [-t SECONDS] [-s SIZE] [-r] [-p PRIORITY]
 *                 [-f FROM] [-T TO] [-H HELO] [-S SERVERNAME] HOST:PORT */
#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 2000
#define MAX_LAT (1U << 20)
#define IO_TIMEOUT_SEC 30

static struct sockaddr_in addr;
static const char *priority = "NORMAL";
static const char *mail_from = "sender@bench.test", *rcpt_to = "rcpt@bench.test", *helo = "client.bench.test";
static const char *servername;
static int resume;
static long max_sessions; /* 0: until the time limit */
static double deadline;
static char *message;
static size_t message_len;
static gnutls_certificate_credentials_t xcred;

static atomic_long started, done, failed, resumed, n_rsa, n_ecdsa, n_other;
static atomic_uint n_lat;
static float *lat_ms;
static pthread_mutex_t desc_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_desc[256], first_error[256];

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

typedef struct Conn {
        int fd;
        gnutls_session_t tls; /* NULL: plain */
        char buf[8192];
        size_t off, n;
        char err[240];
        char last[120]; /* the last reply line, for failure reports */
} Conn;

static int fail(Conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(Conn *c, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, sizeof c->err, fmt, ap);
        va_end(ap);
        return -1;
}

static int conn_write(Conn *c, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k;
                if (c->tls) {
                        k = gnutls_record_send(c->tls, p, n);
                        if (k == GNUTLS_E_AGAIN || k == GNUTLS_E_INTERRUPTED)
                                continue;
                        if (k < 0)
                                return fail(c, "TLS send: %s", gnutls_strerror((int) k));
                } else {
                        k = send(c->fd, p, n, MSG_NOSIGNAL);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k < 0)
                                return fail(c, "send: %s", strerror(errno));
                }
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

static int conn_fill(Conn *c) {
        if (c->off > 0 && c->off == c->n)
                c->off = c->n = 0;
        if (c->n == sizeof c->buf) {
                if (c->off == 0)
                        return fail(c, "reply line too long");
                memmove(c->buf, c->buf + c->off, c->n - c->off);
                c->n -= c->off;
                c->off = 0;
        }
        for (;;) {
                ssize_t k;
                if (c->tls) {
                        k = gnutls_record_recv(c->tls, c->buf + c->n, sizeof c->buf - c->n);
                        if (k == GNUTLS_E_AGAIN || k == GNUTLS_E_INTERRUPTED)
                                continue;
                        if (k < 0)
                                return fail(c, "TLS recv: %s", gnutls_strerror((int) k));
                } else {
                        k = recv(c->fd, c->buf + c->n, sizeof c->buf - c->n, 0);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k < 0)
                                return fail(c, "recv: %s", strerror(errno));
                }
                if (k == 0)
                        return fail(c, "connection closed by server");
                c->n += (size_t) k;
                return 0;
        }
}

/* Reads one (multi-line) reply; returns its code, -1 on failure. */
static int reply(Conn *c, const char *what) {
        for (;;) {
                char *start = c->buf + c->off, *nl;
                while (!(nl = memchr(start, '\n', c->n - c->off))) {
                        if (conn_fill(c) < 0) {
                                char e[sizeof c->err];
                                memcpy(e, c->err, sizeof e);
                                return fail(c, "%s: %s", what, e);
                        }
                        start = c->buf + c->off;
                }
                size_t len = (size_t) (nl - start) + 1;
                snprintf(c->last, sizeof c->last, "%.*s", (int) (len > 2 ? (len > 100 ? 100 : len - 2) : 0), start);
                c->off += len;
                if (len < 4 || start[0] < '1' || start[0] > '5')
                        return fail(c, "%s: bad reply line", what);
                if (start[3] != '-') {
                        return (start[0] - '0') * 100 + (start[1] - '0') * 10 + (start[2] - '0');
                }
        }
}

static int command(Conn *c, const char *line, int want, const char *what) {
        if (line && conn_write(c, line, strlen(line)) < 0)
                return -1;
        int code = reply(c, what);
        if (code < 0)
                return -1;
        if (code != want)
                return fail(c, "%s: wanted %d, got \"%s\"", what, want, c->last);
        return 0;
}

static int handshake(Conn *c, gnutls_datum_t *sdata) {
        int r = gnutls_init(&c->tls, GNUTLS_CLIENT);
        if (r < 0) {
                c->tls = NULL;
                return fail(c, "gnutls_init: %s", gnutls_strerror(r));
        }
        const char *errpos = NULL;
        r = gnutls_priority_set_direct(c->tls, priority, &errpos);
        if (r < 0)
                return fail(c, "priority \"%s\" at \"%s\": %s", priority, errpos ? errpos : "", gnutls_strerror(r));
        r = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, xcred);
        if (r < 0)
                return fail(c, "credentials: %s", gnutls_strerror(r));
        if (servername)
                (void) gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, servername, strlen(servername));
        if (resume && sdata->data)
                (void) gnutls_session_set_data(c->tls, sdata->data, sdata->size);
        gnutls_transport_set_int(c->tls, c->fd);
        gnutls_handshake_set_timeout(c->tls, IO_TIMEOUT_SEC * 1000);
        do
                r = gnutls_handshake(c->tls);
        while (r < 0 && !gnutls_error_is_fatal(r));
        if (r < 0)
                return fail(c, "handshake: %s", gnutls_strerror(r));
        if (gnutls_session_is_resumed(c->tls))
                resumed++;
        gnutls_sign_algorithm_t sig = gnutls_sign_algorithm_get(c->tls);
        gnutls_pk_algorithm_t pk = sig > 0 ? gnutls_sign_get_pk_algorithm(sig) : GNUTLS_PK_UNKNOWN;
        if (pk == GNUTLS_PK_RSA || pk == GNUTLS_PK_RSA_PSS)
                n_rsa++;
        else if (pk == GNUTLS_PK_ECDSA)
                n_ecdsa++;
        else
                n_other++; /* e.g. a resumed session: no signature */
        return 0;
}

static int session(gnutls_datum_t *sdata) {
        Conn c = { .fd = -1 };
        char line[600];
        int r = -1;

        c.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c.fd < 0) {
                fail(&c, "socket: %s", strerror(errno));
                goto out;
        }
        int one = 1;
        (void) setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct timeval tv = { .tv_sec = IO_TIMEOUT_SEC };
        (void) setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void) setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(c.fd, (struct sockaddr *) &addr, sizeof addr) < 0) {
                fail(&c, "connect: %s", strerror(errno));
                goto out;
        }
        if (command(&c, NULL, 220, "greeting") < 0)
                goto out;
        snprintf(line, sizeof line, "EHLO %s\r\n", helo);
        if (command(&c, line, 250, "EHLO") < 0 || command(&c, "STARTTLS\r\n", 220, "STARTTLS") < 0)
                goto out;
        if (c.off != c.n) {
                fail(&c, "data after the STARTTLS reply");
                goto out;
        }
        c.off = c.n = 0;
        if (handshake(&c, sdata) < 0)
                goto out;
        if (command(&c, line, 250, "EHLO after STARTTLS") < 0)
                goto out;
        snprintf(line, sizeof line, "MAIL FROM:<%s>\r\n", mail_from);
        if (command(&c, line, 250, "MAIL") < 0)
                goto out;
        snprintf(line, sizeof line, "RCPT TO:<%s>\r\n", rcpt_to);
        if (command(&c, line, 250, "RCPT") < 0 || command(&c, "DATA\r\n", 354, "DATA") < 0)
                goto out;
        if (conn_write(&c, message, message_len) < 0 || command(&c, NULL, 250, "end of data") < 0)
                goto out;
        if (command(&c, "QUIT\r\n", 221, "QUIT") < 0)
                goto out;
        if (resume) {
                /* TLS 1.3 tickets arrive after the handshake: take the session now. */
                gnutls_datum_t d = {};
                if (gnutls_session_get_data2(c.tls, &d) >= 0) {
                        gnutls_free(sdata->data);
                        *sdata = d;
                }
        }
        pthread_mutex_lock(&desc_lock);
        if (!first_desc[0]) {
                char *desc = gnutls_session_get_desc(c.tls);
                snprintf(first_desc, sizeof first_desc, "%s", desc ? desc : "?");
                gnutls_free(desc);
        }
        pthread_mutex_unlock(&desc_lock);
        (void) gnutls_bye(c.tls, GNUTLS_SHUT_WR);
        r = 0;
out:
        if (r < 0) {
                pthread_mutex_lock(&desc_lock);
                if (!first_error[0])
                        snprintf(first_error, sizeof first_error, "%s", c.err);
                pthread_mutex_unlock(&desc_lock);
        }
        if (c.tls)
                gnutls_deinit(c.tls);
        if (c.fd >= 0)
                close(c.fd);
        return r;
}

static void *worker(void *arg) {
        gnutls_datum_t sdata = {};
        for (;;) {
                if (now() >= deadline)
                        break;
                long k = atomic_fetch_add(&started, 1);
                if (max_sessions > 0 && k >= max_sessions)
                        break;
                double t0 = now();
                if (session(&sdata) < 0) {
                        failed++;
                        gnutls_free(sdata.data);
                        sdata = (gnutls_datum_t) {};
                        usleep(10000); /* no busy loop against a refusing server */
                        continue;
                }
                done++;
                unsigned i = atomic_fetch_add(&n_lat, 1);
                if (i < MAX_LAT)
                        lat_ms[i] = (float) ((now() - t0) * 1000.0);
        }
        gnutls_free(sdata.data);
        return NULL;
}

static int cmp_float(const void *a, const void *b) {
        float x = *(const float *) a, y = *(const float *) b;
        return x < y ? -1 : x > y;
}

static void usage(void) {
        fprintf(stderr, "usage: smtp-tls-load [-c SESSIONS] [-n COUNT] [-t SECONDS] [-s SIZE] [-r] [-p PRIORITY]\n"
                        "                     [-f FROM] [-T TO] [-H HELO] [-S SERVERNAME] HOST:PORT\n");
}

int main(int argc, char **argv) {
        long threads = 20, size = 1024;
        double seconds = 10;
        int opt;
        while ((opt = getopt(argc, argv, "c:n:t:s:rp:f:T:H:S:h")) != -1)
                switch (opt) {
                case 'c': threads = strtol(optarg, NULL, 10); break;
                case 'n': max_sessions = strtol(optarg, NULL, 10); break;
                case 't': seconds = strtod(optarg, NULL); break;
                case 's': size = strtol(optarg, NULL, 10); break;
                case 'r': resume = 1; break;
                case 'p': priority = optarg; break;
                case 'f': mail_from = optarg; break;
                case 'T': rcpt_to = optarg; break;
                case 'H': helo = optarg; break;
                case 'S': servername = optarg; break;
                default: usage(); return 2;
                }
        if (optind != argc - 1 || threads < 1 || threads > MAX_THREADS || size < 0 || size > 64L * 1024 * 1024 ||
            seconds <= 0 || seconds > 3600 || max_sessions < 0) {
                usage();
                return 2;
        }
        char host[64];
        const char *colon = strrchr(argv[optind], ':');
        if (!colon || (size_t) (colon - argv[optind]) >= sizeof host) {
                usage();
                return 2;
        }
        snprintf(host, sizeof host, "%.*s", (int) (colon - argv[optind]), argv[optind]);
        addr.sin_family = AF_INET;
        addr.sin_port = htons((uint16_t) atoi(colon + 1));
        if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 || addr.sin_port == 0) {
                fprintf(stderr, "smtp-tls-load: HOST must be an IPv4 address and PORT a port\n");
                return 2;
        }

        /* The message: a few headers, then lines of 76 'x' up to SIZE, dot-terminated. */
        message = malloc((size_t) size + 256);
        if (!message)
                return 1;
        int k = snprintf(message, 256, "From: <%s>\r\nTo: <%s>\r\nSubject: tls bench\r\n\r\n", mail_from, rcpt_to);
        message_len = (size_t) (k > 0 ? k : 0);
        while (message_len + 78 <= (size_t) size) {
                memset(message + message_len, 'x', 76);
                memcpy(message + message_len + 76, "\r\n", 2);
                message_len += 78;
        }
        memcpy(message + message_len, ".\r\n", 3);
        message_len += 3;

        lat_ms = calloc(MAX_LAT, sizeof *lat_ms);
        if (!lat_ms || gnutls_global_init() < 0 || gnutls_certificate_allocate_credentials(&xcred) < 0)
                return 1;

        pthread_t *t = calloc((size_t) threads, sizeof *t);
        if (!t)
                return 1;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        double t0 = now();
        deadline = t0 + seconds;
        long n_threads = 0;
        for (long i = 0; i < threads; i++) {
                if (pthread_create(&t[i], &attr, worker, NULL) != 0) {
                        fprintf(stderr, "smtp-tls-load: could only start %ld threads\n", i);
                        break;
                }
                n_threads++;
        }
        for (long i = 0; i < n_threads; i++)
                pthread_join(t[i], NULL);
        double elapsed = now() - t0;

        unsigned n = atomic_load(&n_lat);
        if (n > MAX_LAT)
                n = MAX_LAT;
        qsort(lat_ms, n, sizeof *lat_ms, cmp_float);
        double p50 = n ? lat_ms[n / 2] : 0, p99 = n ? lat_ms[(size_t) ((double) (n - 1) * 0.99)] : 0;
        printf("sessions=%ld failures=%ld elapsed=%.3f rate=%.1f resumed=%ld p50_ms=%.2f p99_ms=%.2f "
               "rsa=%ld ecdsa=%ld other=%ld desc=%s\n",
               (long) done, (long) failed, elapsed, elapsed > 0 ? (double) done / elapsed : 0.0, (long) resumed, p50, p99,
               (long) n_rsa, (long) n_ecdsa, (long) n_other, first_desc[0] ? first_desc : "-");
        if (first_error[0])
                fprintf(stderr, "smtp-tls-load: first failure: %s\n", first_error);
        gnutls_certificate_free_credentials(xcred);
        gnutls_global_deinit();
        free(t);
        free(lat_ms);
        free(message);
        return failed ? 1 : done ? 0 : 1;
}
