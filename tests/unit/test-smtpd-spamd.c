/* SPDX-License-Identifier: MIT */
/* The spamd client (ScanSA()): addresses, the SPAMC/1.5 CHECK request as
 * spamd reads it, the score from the answer, answers that are errors, a
 * refused connection, the size cap and cancellation. The peer is a thread
 * that speaks the protocol's server side from a script; the integration
 * test runs a real spamd. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtpd-spamd.h"
#include "tap.h"

typedef struct Peer {
        int listen_fd;
        uint16_t port;
        const char *answer;  /* written after the request, then closed */
        char request[8192];
        size_t request_len;
        pthread_t thread;
} Peer;

static void *peer_run(void *userdata) {
        Peer *p = userdata;
        int fd = accept(p->listen_fd, NULL, NULL);
        if (fd < 0)
                return NULL;
        /* Header, then Content-length octets. */
        size_t want = SIZE_MAX;
        while (p->request_len < sizeof p->request - 1 && p->request_len < want) {
                ssize_t k = read(fd, p->request + p->request_len, sizeof p->request - 1 - p->request_len);
                if (k <= 0)
                        break;
                p->request_len += (size_t) k;
                p->request[p->request_len] = 0;
                char *end = strstr(p->request, "\r\n\r\n"), *cl = strstr(p->request, "Content-length: ");
                if (end && cl)
                        want = (size_t) (end + 4 - p->request) + strtoul(cl + 16, NULL, 10);
        }
        if (p->answer)
                (void) !write(fd, p->answer, strlen(p->answer));
        close(fd);
        return NULL;
}

static void peer_start(Peer *p, const char *answer) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof sa;
        memset(p, 0, sizeof *p);
        p->answer = answer;
        p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(p->listen_fd >= 0);
        ASSERT_OK(bind(p->listen_fd, (struct sockaddr *) &sa, sizeof sa));
        ASSERT_OK(listen(p->listen_fd, 4));
        ASSERT_OK(getsockname(p->listen_fd, (struct sockaddr *) &sa, &len));
        p->port = ntohs(sa.sin_port);
        ASSERT_EQ(pthread_create(&p->thread, NULL, peer_run, p), 0);
}

static void peer_stop(Peer *p) {
        shutdown(p->listen_fd, SHUT_RDWR);
        pthread_join(p->thread, NULL);
        close(p->listen_fd);
}

typedef struct Outcome {
        bool done;
        int result;
        double score;
} Outcome;

static void on_scan(int result, double score, const char *why, void *userdata) {
        Outcome *o = userdata;
        o->done = true;
        o->result = result;
        o->score = score;
}

static int message_fd(const char *text) {
        int fd = memfd_create("msg", MFD_CLOEXEC);
        if (fd >= 0 && write(fd, text, strlen(text)) != (ssize_t) strlen(text)) {
                close(fd);
                return -1;
        }
        return fd;
}

static Outcome scan(const char *answer, Peer *p) {
        sd_event *e = NULL;
        SpamdScan *s = NULL;
        Outcome o = {};
        char addr[64];
        int fd = message_fd("Subject: hi\r\n\r\nhello\r\n");

        peer_start(p, answer);
        snprintf(addr, sizeof addr, "127.0.0.1:%u", p->port);
        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(spamd_scan_start(e, addr, 0, fd, 0, on_scan, &o, &s));
        close(fd); /* not kept */
        for (int i = 0; i < 1000 && !o.done; i++)
                ASSERT_OK(sd_event_run(e, 100000));
        peer_stop(p);
        sd_event_unref(e);
        ASSERT_TRUE(o.done);
        return o;
}

TEST(address_parse) {
        struct sockaddr_storage sa;
        socklen_t len;
        ASSERT_OK(spamd_address_parse("127.0.0.1:7830", 0, &sa, &len));
        ASSERT_EQ(sa.ss_family, AF_INET);
        ASSERT_EQ(ntohs(((struct sockaddr_in *) &sa)->sin_port), 7830);
        ASSERT_OK(spamd_address_parse("127.0.0.1", 0, &sa, &len));
        ASSERT_EQ(ntohs(((struct sockaddr_in *) &sa)->sin_port), SPAMD_PORT_DEFAULT);
        ASSERT_OK(spamd_address_parse("127.0.0.1:7830", 9999, &sa, &len));
        ASSERT_EQ(ntohs(((struct sockaddr_in *) &sa)->sin_port), 9999);
        ASSERT_OK(spamd_address_parse("localhost:1", 0, &sa, &len));
        ASSERT_EQ(sa.ss_family, AF_INET);
        ASSERT_OK(spamd_address_parse("[::1]:783", 0, &sa, &len));
        ASSERT_EQ(sa.ss_family, AF_INET6);
        ASSERT_OK(spamd_address_parse("::1", 0, &sa, &len));
        ASSERT_EQ(sa.ss_family, AF_INET6);
        ASSERT_OK(spamd_address_parse("unix:/run/spamd.sock", 0, &sa, &len));
        ASSERT_EQ(sa.ss_family, AF_UNIX);
        ASSERT_OK(spamd_address_parse("/run/spamd.sock", 0, &sa, &len));
        ASSERT_OK(spamd_address_parse(NULL, 0, &sa, &len));
        /* names would need a blocking lookup */
        ASSERT_ERR(spamd_address_parse("spamd.example:783", 0, &sa, &len), -EINVAL);
        ASSERT_ERR(spamd_address_parse("127.0.0.1:0", 0, &sa, &len), -EINVAL);
        ASSERT_ERR(spamd_address_parse("127.0.0.1:65536", 0, &sa, &len), -EINVAL);
        ASSERT_ERR(spamd_address_parse("[::1", 0, &sa, &len), -EINVAL);
        ASSERT_ERR(spamd_address_parse("127.0.0.1:x", 0, &sa, &len), -EINVAL);
}

TEST(check_score) {
        Peer p;
        Outcome o = scan("SPAMD/1.1 0 EX_OK\r\nSpam: True ; 7.5 / 5.0\r\n\r\n", &p);
        ASSERT_EQ(o.result, 0);
        ASSERT_TRUE(o.score > 7.49 && o.score < 7.51);
        const char *want = "CHECK SPAMC/1.5\r\nContent-length: 22\r\n\r\nSubject: hi\r\n\r\nhello\r\n";
        ASSERT_STREQ(p.request, want);

        o = scan("SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nspam: False ; -1.2 / 5.0\r\n\r\n", &p);
        ASSERT_EQ(o.result, 0);
        ASSERT_TRUE(o.score < -1.19 && o.score > -1.21);
}

TEST(answers_that_are_not_a_score) {
        Peer p;
        ASSERT_EQ(scan("SPAMD/1.0 76 Bad header line: X\r\n\r\n", &p).result, -EPROTO);
        ASSERT_EQ(scan("SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", &p).result, -EPROTO);
        ASSERT_EQ(scan("HTTP/1.1 200 OK\r\n\r\n", &p).result, -EPROTO);
        ASSERT_EQ(scan("SPAMD/1.1 0 EX_OK\r\nSpam: True ; nan\r\n\r\n", &p).result, -EPROTO);
        ASSERT_EQ(scan(NULL, &p).result, -ECONNRESET);
}

TEST(refused_too_large_cancelled) {
        sd_event *e = NULL;
        SpamdScan *s = NULL;
        Outcome o = {};
        Peer p;
        int fd = message_fd("Subject: hi\r\n\r\nhello\r\n");
        ASSERT_OK(sd_event_new(&e));

        /* A port nobody listens on (the peer's, once closed). */
        peer_start(&p, NULL);
        uint16_t port = p.port;
        peer_stop(&p);
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
        ASSERT_OK(spamd_scan_start(e, addr, 0, fd, 0, on_scan, &o, &s));
        for (int i = 0; i < 100 && !o.done; i++)
                ASSERT_OK(sd_event_run(e, 100000));
        ASSERT_TRUE(o.done);
        ASSERT_EQ(o.result, -ECONNREFUSED);

        ASSERT_ERR(spamd_scan_start(e, addr, 0, fd, 10, on_scan, &o, &s), -EFBIG);

        /* Cancelled: no callback. */
        o = (Outcome) {};
        ASSERT_OK(spamd_scan_start(e, addr, 0, fd, 0, on_scan, &o, &s));
        spamd_scan_cancel(s);
        for (int i = 0; i < 5; i++)
                ASSERT_OK(sd_event_run(e, 10000));
        ASSERT_FALSE(o.done);
        close(fd);
        sd_event_unref(e);
}

int main(void) {
        return tap_run();
}
