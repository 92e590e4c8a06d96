/* SPDX-License-Identifier: MIT */
/* SPAMC/1.5 CHECK against spamd, non-blocking (see smtpd-spamd.h).
 *
 * The exchange (spamd's spamd/PROTOCOL):
 *   > CHECK SPAMC/1.5\r\n
 *   > Content-length: <octets>\r\n
 *   > \r\n
 *   > <message>
 *   < SPAMD/1.1 0 EX_OK\r\n
 *   < Spam: True ; 1005.2 / 5.0\r\n
 *   < \r\n
 * and spamd closes the connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "smtpd-spamd.h"

/* The CHECK answer is a few short lines; anything longer is not spamd. */
#define RESPONSE_MAX 4096U

struct SpamdScan {
        sd_event_source *io;
        int sock;
        bool connected;
        char head[96];
        size_t head_len;
        char *msg;              /* the mapped message */
        size_t msg_len;
        size_t sent;            /* of head + message */
        char resp[RESPONSE_MAX + 1];
        size_t resp_len;
        SpamdCallback cb;
        void *userdata;
};

int spamd_address_parse(const char *address, unsigned port, struct sockaddr_storage *ret, socklen_t *ret_len) {
        char host[INET6_ADDRSTRLEN + 8];
        const char *colon = NULL;
        unsigned long p = SPAMD_PORT_DEFAULT;

        if (!address || !*address)
                address = "127.0.0.1";
        memset(ret, 0, sizeof *ret);
        if (strncmp(address, "unix:", 5) == 0)
                address += 5;
        if (address[0] == '/') {
                struct sockaddr_un *un = (struct sockaddr_un *) ret;
                size_t n = strlen(address);
                if (n >= sizeof un->sun_path)
                        return -ENAMETOOLONG;
                un->sun_family = AF_UNIX;
                memcpy(un->sun_path, address, n + 1);
                *ret_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + 1);
                return 0;
        }
        if (address[0] == '[') {
                const char *end = strchr(address, ']');
                if (!end || (size_t) (end - address - 1) >= sizeof host || (end[1] && end[1] != ':'))
                        return -EINVAL;
                memcpy(host, address + 1, (size_t) (end - address - 1));
                host[end - address - 1] = 0;
                colon = end[1] == ':' ? end + 1 : NULL;
        } else {
                colon = strchr(address, ':');
                if (colon && strchr(colon + 1, ':'))
                        colon = NULL; /* a bare IPv6 address */
                size_t n = colon ? (size_t) (colon - address) : strlen(address);
                if (n >= sizeof host)
                        return -EINVAL;
                memcpy(host, address, n);
                host[n] = 0;
        }
        if (colon) {
                char *e;
                errno = 0;
                p = strtoul(colon + 1, &e, 10);
                if (errno || *e || p == 0 || p > 65535)
                        return -EINVAL;
        }
        if (port > 0) {
                if (port > 65535)
                        return -EINVAL;
                p = port;
        }
        if (strcasecmp(host, "localhost") == 0)
                strcpy(host, "127.0.0.1");
        struct sockaddr_in *in4 = (struct sockaddr_in *) ret;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ret;
        if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
                in4->sin_family = AF_INET;
                in4->sin_port = htons((uint16_t) p);
                *ret_len = sizeof *in4;
        } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons((uint16_t) p);
                *ret_len = sizeof *in6;
        } else
                return -EINVAL;
        return 0;
}

SpamdScan *spamd_scan_cancel(SpamdScan *s) {
        if (!s)
                return NULL;
        sd_event_source_disable_unref(s->io);
        safe_close(s->sock);
        if (s->msg && s->msg != MAP_FAILED)
                munmap(s->msg, s->msg_len);
        free(s);
        return NULL;
}

static void scan_finish(SpamdScan *s, int result, double score, const char *why) {
        SpamdCallback cb = s->cb;
        void *userdata = s->userdata;
        spamd_scan_cancel(s);
        cb(result, score, why, userdata);
}

/* The answer, complete once spamd closed (or the header block ended). */
static int parse_response(SpamdScan *s, double *ret_score, const char **ret_why) {
        char *line = s->resp, *end;
        unsigned code;
        int n = 0;

        s->resp[s->resp_len] = 0;
        end = strstr(line, "\r\n");
        if (!end || sscanf(line, "SPAMD/%*u.%*u %u %n", &code, &n) != 1 || n == 0) {
                *ret_why = "not a spamd answer";
                return -EPROTO;
        }
        if (code != 0) {
                *ret_why = "spamd answered an error";
                return -EPROTO;
        }
        for (line = end + 2; (end = strstr(line, "\r\n")) && end != line; line = end + 2) {
                if (strncasecmp(line, "Spam:", 5) != 0)
                        continue;
                const char *semi = memchr(line, ';', (size_t) (end - line));
                char *e;
                if (!semi)
                        break;
                double score = strtod(semi + 1, &e);
                if (e == semi + 1 || !isfinite(score))
                        break;
                *ret_score = score;
                return 0;
        }
        *ret_why = "spamd answered no score";
        return -EPROTO;
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        SpamdScan *s = userdata;

        if (!s->connected) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(s->sock, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                        err = errno;
                if (err != 0) {
                        scan_finish(s, -err, 0, "spamd cannot be reached");
                        return 0;
                }
                s->connected = true;
        }
        if (revents & EPOLLOUT) {
                size_t total = s->head_len + s->msg_len;
                while (s->sent < total) {
                        const char *p = s->sent < s->head_len ? s->head + s->sent : s->msg + (s->sent - s->head_len);
                        size_t n = s->sent < s->head_len ? s->head_len - s->sent : total - s->sent;
                        ssize_t k = send(s->sock, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                        if (k < 0) {
                                if (errno == EAGAIN || errno == EINTR)
                                        return 0;
                                scan_finish(s, -errno, 0, "sending to spamd failed");
                                return 0;
                        }
                        s->sent += (size_t) k;
                }
                if (sd_event_source_set_io_events(s->io, EPOLLIN) < 0) {
                        scan_finish(s, -ENOMEM, 0, "event loop");
                        return 0;
                }
                return 0;
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                for (;;) {
                        if (s->resp_len >= RESPONSE_MAX) {
                                scan_finish(s, -EPROTO, 0, "spamd's answer is too long");
                                return 0;
                        }
                        ssize_t k = recv(s->sock, s->resp + s->resp_len, RESPONSE_MAX - s->resp_len, MSG_DONTWAIT);
                        if (k < 0) {
                                if (errno == EAGAIN || errno == EINTR)
                                        break;
                                scan_finish(s, -errno, 0, "reading from spamd failed");
                                return 0;
                        }
                        if (k == 0) {
                                double score = 0;
                                const char *why = NULL;
                                if (s->resp_len == 0 || s->sent < s->head_len + s->msg_len) {
                                        scan_finish(s, -ECONNRESET, 0, "spamd closed the connection without an answer");
                                        return 0;
                                }
                                int r = parse_response(s, &score, &why);
                                scan_finish(s, r, score, why ?: "ok");
                                return 0;
                        }
                        s->resp_len += (size_t) k;
                }
                /* The header block ended: no need to wait for the close. */
                s->resp[s->resp_len] = 0;
                if (strstr(s->resp, "\r\n\r\n")) {
                        double score = 0;
                        const char *why = NULL;
                        int r = parse_response(s, &score, &why);
                        scan_finish(s, r, score, why ?: "ok");
                }
        }
        return 0;
}

int spamd_scan_start(sd_event *e, const char *address, unsigned port, int fd, uint64_t max_size,
                     SpamdCallback cb, void *userdata, SpamdScan **ret) {
        struct sockaddr_storage sa;
        socklen_t salen;
        struct stat st;
        int r;

        r = spamd_address_parse(address, port, &sa, &salen);
        if (r < 0)
                return r;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (max_size == 0)
                max_size = SPAMD_MAX_SIZE_DEFAULT;
        if (st.st_size <= 0)
                return -EINVAL;
        if ((uint64_t) st.st_size > max_size)
                return -EFBIG;

        SpamdScan *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->sock = -1;
        s->cb = cb;
        s->userdata = userdata;
        s->msg_len = (size_t) st.st_size;
        s->msg = mmap(NULL, s->msg_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (s->msg == MAP_FAILED) {
                r = -errno;
                goto fail;
        }
        s->head_len = (size_t) snprintf(s->head, sizeof s->head, "CHECK SPAMC/1.5\r\nContent-length: %zu\r\n\r\n",
                                        s->msg_len);
        s->sock = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->sock < 0) {
                r = -errno;
                goto fail;
        }
        if (connect(s->sock, (struct sockaddr *) &sa, salen) < 0 && errno != EINPROGRESS) {
                r = -errno;
                goto fail;
        }
        r = sd_event_add_io(e, &s->io, s->sock, EPOLLOUT, on_io, s);
        if (r < 0)
                goto fail;
        *ret = s;
        return 0;
fail:
        spamd_scan_cancel(s);
        return r;
}
