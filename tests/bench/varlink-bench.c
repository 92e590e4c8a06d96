/* SPDX-License-Identifier: MIT */
/* A varlink load generator: N connections to ADDRESS, each keeping DEPTH
 * calls of METHOD in flight, for SECONDS; prints calls/second. It speaks the
 * wire protocol directly (no halyard code), so it measures any varlink
 * server the same way.
 *
 *   varlink-bench ADDRESS METHOD PARAMS_JSON CONNECTIONS DEPTH SECONDS */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct Conn {
        int fd;
        unsigned in_flight;
        size_t out_off; /* bytes of the current batch written */
        size_t out_len;
} Conn;

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
        if (argc != 7) {
                fprintf(stderr, "Usage: %s ADDRESS METHOD PARAMS_JSON CONNECTIONS DEPTH SECONDS\n", argv[0]);
                return 2;
        }
        const char *path = strncmp(argv[1], "unix:", 5) == 0 ? argv[1] + 5 : argv[1];
        unsigned nconn = (unsigned) atoi(argv[4]), depth = (unsigned) atoi(argv[5]);
        double seconds = atof(argv[6]);
        if (nconn < 1 || nconn > 10000 || depth < 1 || depth > 1000 || seconds <= 0 || seconds > 600) {
                fprintf(stderr, "bad arguments\n");
                return 2;
        }

        char call[1024];
        int clen = snprintf(call, sizeof call, "{\"method\":\"%s\",\"parameters\":%s}", argv[2], argv[3]);
        if (clen < 0 || (size_t) clen + 1 >= sizeof call)
                return 2;
        size_t one = (size_t) clen + 1; /* with the NUL */
        char *batch = malloc(one * depth);
        for (unsigned i = 0; i < depth; i++)
                memcpy(batch + i * one, call, one);

        int ep = epoll_create1(EPOLL_CLOEXEC);
        Conn *conns = calloc(nconn, sizeof *conns);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        for (unsigned i = 0; i < nconn; i++) {
                conns[i].fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (connect(conns[i].fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
                        perror("connect");
                        return 1;
                }
                struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
                epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
                /* Fill the window: blocking write of the whole first batch. */
                if (write(conns[i].fd, batch, one * depth) != (ssize_t) (one * depth)) {
                        perror("write");
                        return 1;
                }
                conns[i].in_flight = depth;
        }

        unsigned long long done = 0, errors = 0;
        double start = now(), end = start + seconds;
        char buf[65536];
        struct epoll_event evs[256];
        bool stopping = false;
        unsigned long long outstanding = (unsigned long long) nconn * depth;
        while (outstanding > 0) {
                double t = now();
                if (!stopping && t >= end)
                        stopping = true;
                if (t > end + 10) {
                        fprintf(stderr, "replies missing: %llu\n", outstanding);
                        return 1;
                }
                int n = epoll_wait(ep, evs, 256, 1000);
                for (int k = 0; k < n; k++) {
                        Conn *c = &conns[evs[k].data.u32];
                        ssize_t r = read(c->fd, buf, sizeof buf);
                        if (r <= 0) {
                                fprintf(stderr, "connection closed by server\n");
                                return 1;
                        }
                        unsigned replies = 0;
                        for (ssize_t j = 0; j < r; j++)
                                if (buf[j] == 0)
                                        replies++;
                        /* Cheap error check: any reply carrying "error". */
                        if (memmem(buf, (size_t) r, "\"error\"", 7))
                                errors++;
                        c->in_flight -= replies;
                        outstanding -= replies;
                        done += replies;
                        if (!stopping && replies > 0) {
                                if (write(c->fd, batch, one * replies) != (ssize_t) (one * replies)) {
                                        perror("write");
                                        return 1;
                                }
                                c->in_flight += replies;
                                outstanding += replies;
                        }
                }
        }
        double elapsed = now() - start;
        printf("%.0f\n", (double) done / elapsed);
        fprintf(stderr, "%llu calls in %.2f s over %u connections, depth %u, %llu error batches\n", done, elapsed, nconn, depth,
                errors);
        return errors ? 1 : 0;
}
