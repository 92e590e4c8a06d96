/* SPDX-License-Identifier: MIT */
/* shared/http: URL encoding, and requests through libcurl on sd-event
 * against a scripted HTTP peer (a thread): status and body of an answer,
 * a POST with headers as the peer received it, the body cap, the
 * timeout, refused connections, bad URLs, cancellation, and connect_to
 * (another address under the URL's name). Skipped (but still passing)
 * where libcurl cannot be loaded. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "tap.h"

typedef struct Peer {
        int listen_fd;
        uint16_t port;
        const char *answer;  /* NULL: read, then stay silent until stopped */
        char request[8192];
        size_t request_len;
        pthread_t thread;
} Peer;

static void *peer_run(void *userdata) {
        Peer *p = userdata;
        int fd = accept(p->listen_fd, NULL, NULL);
        if (fd < 0)
                return NULL;
        size_t want = SIZE_MAX;
        while (p->request_len < sizeof p->request - 1 && p->request_len < want) {
                ssize_t k = read(fd, p->request + p->request_len, sizeof p->request - 1 - p->request_len);
                if (k <= 0)
                        break;
                p->request_len += (size_t) k;
                p->request[p->request_len] = 0;
                char *end = strstr(p->request, "\r\n\r\n"), *cl = strcasestr(p->request, "Content-Length: ");
                if (end)
                        want = (size_t) (end + 4 - p->request) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
        }
        if (p->answer)
                (void) !write(fd, p->answer, strlen(p->answer));
        else {
                char c;
                (void) !read(fd, &c, 1); /* until the client gives up */
        }
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
        long status;
        char body[256];
        char ctype[64];
} Outcome;

static void on_done(HttpRequest *req, const HttpResponse *resp, void *userdata) {
        Outcome *o = userdata;
        o->done = true;
        o->result = resp->result;
        o->status = resp->status;
        if (resp->body)
                snprintf(o->body, sizeof o->body, "%.*s", (int) MIN(resp->body_len, sizeof o->body - 1), resp->body);
        if (resp->content_type)
                snprintf(o->ctype, sizeof o->ctype, "%s", resp->content_type);
}

/* 1: done, 0: libcurl missing (the test is skipped). */
static int request(HttpRequestOptions *opts, Peer *p, const char *answer, const char *path, Outcome *o) {
        sd_event *e = NULL;
        char url[128];
        int r;

        *o = (Outcome) {};
        if (p)
                peer_start(p, answer);
        snprintf(url, sizeof url, "http://127.0.0.1:%u%s", p ? p->port : 9, path);
        opts->url = url;
        ASSERT_OK(sd_event_new(&e));
        HttpClient *c = NULL;
        ASSERT_OK(http_client_new(e, &c));
        r = http_request_start(c, opts, on_done, o, NULL);
        if (r == -EOPNOTSUPP) {
                http_client_free(c);
                sd_event_unref(e);
                if (p)
                        peer_stop(p);
                return 0;
        }
        ASSERT_OK(r);
        for (int i = 0; i < 200 && !o->done; i++)
                ASSERT_OK(sd_event_run(e, 100000));
        http_client_free(c);
        if (p)
                peer_stop(p);
        sd_event_unref(e);
        ASSERT_TRUE(o->done);
        return 1;
}

TEST(url_encode) {
        char *s = http_url_encode("a b&c=d/ü~._-", strlen("a b&c=d/ü~._-"));
        ASSERT_STREQ(s, "a%20b%26c%3Dd%2F%C3%BC~._-");
        free(s);
        s = http_url_encode("", 0);
        ASSERT_STREQ(s, "");
        free(s);
}

TEST(get_and_post) {
        Peer p;
        Outcome o;
        HttpRequestOptions opts = {};
        if (!request(&opts, &p, "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                                "Connection: close\r\n\r\nhello", "/x?a=1", &o))
                return; /* no libcurl here */
        ASSERT_EQ(o.result, 0);
        ASSERT_EQ(o.status, 201);
        ASSERT_STREQ(o.body, "hello");
        ASSERT_STREQ(o.ctype, "text/plain");
        ASSERT_TRUE(strncmp(p.request, "GET /x?a=1 HTTP/1.1\r\n", 21) == 0);

        const char *const headers[] = { "X-Test: yes", NULL };
        opts = (HttpRequestOptions) { .headers = headers, .body = "k=v", .body_len = 3 };
        ASSERT_EQ(request(&opts, &p, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "/p", &o), 1);
        ASSERT_EQ(o.result, 0);
        ASSERT_EQ(o.status, 404);
        ASSERT_STREQ(o.body, "");
        ASSERT_TRUE(strncmp(p.request, "POST /p HTTP/1.1\r\n", 18) == 0);
        ASSERT_TRUE(strstr(p.request, "\r\nX-Test: yes\r\n") != NULL);
        ASSERT_TRUE(strstr(p.request, "\r\n\r\nk=v") != NULL);
}

TEST(limits_and_failures) {
        Peer p;
        Outcome o;
        HttpRequestOptions opts = { .max_size = 4 };
        if (!request(&opts, &p, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n0123456789", "/", &o))
                return;
        ASSERT_EQ(o.result, -EFBIG);

        opts = (HttpRequestOptions) { .timeout_usec = 300000 };
        ASSERT_EQ(request(&opts, &p, NULL, "/", &o), 1);
        ASSERT_EQ(o.result, -ETIMEDOUT);

        /* The peer's port once it is gone. */
        peer_start(&p, NULL);
        uint16_t port = p.port;
        peer_stop(&p);
        sd_event *e = NULL;
        HttpClient *c = NULL;
        char url[64];
        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(http_client_new(e, &c));
        snprintf(url, sizeof url, "http://127.0.0.1:%u/", port);
        o = (Outcome) {};
        ASSERT_OK(http_request_start(c, &(HttpRequestOptions) { .url = url }, on_done, &o, NULL));
        for (int i = 0; i < 100 && !o.done; i++)
                ASSERT_OK(sd_event_run(e, 100000));
        ASSERT_EQ(o.result, -ECONNREFUSED);

        ASSERT_ERR(http_request_start(c, &(HttpRequestOptions) { .url = "ftp://127.0.0.1/" }, on_done, &o, NULL), -EINVAL);
        ASSERT_ERR(http_request_start(c, &(HttpRequestOptions) { .url = url, .method = "TRACE" }, on_done, &o, NULL), -EINVAL);
        const char *const bad[] = { "X-Evil: a\r\nX-Injected: b", NULL };
        ASSERT_ERR(http_request_start(c, &(HttpRequestOptions) { .url = url, .headers = bad }, on_done, &o, NULL), -EINVAL);

        /* Cancelled: no callback; freeing the client with one in flight. */
        HttpRequest *req = NULL;
        o = (Outcome) {};
        ASSERT_OK(http_request_start(c, &(HttpRequestOptions) { .url = url }, on_done, &o, &req));
        http_request_cancel(req);
        ASSERT_OK(http_request_start(c, &(HttpRequestOptions) { .url = url }, on_done, &o, NULL));
        http_client_free(c);
        ASSERT_FALSE(o.done);
        sd_event_unref(e);
}

/* connect_to sends the connection to the peer while the URL, and so the
 * Host: header (and TLS's name), keep a name that does not resolve. */
TEST(connect_to) {
        Peer p;
        Outcome o = {};
        sd_event *e = NULL;
        HttpClient *c = NULL;
        char entry[96];

        peer_start(&p, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        snprintf(entry, sizeof entry, "report.halyard.invalid:8443:127.0.0.1:%u", p.port);
        const char *const connect_to[] = { "other.invalid:80:127.0.0.1:9", entry, NULL };
        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(http_client_new(e, &c));
        HttpRequestOptions opts = { .url = "http://report.halyard.invalid:8443/r", .connect_to = connect_to };
        int r = http_request_start(c, &opts, on_done, &o, NULL);
        if (r == -EOPNOTSUPP) { /* no libcurl here */
                http_client_free(c);
                sd_event_unref(e);
                peer_stop(&p);
                return;
        }
        ASSERT_OK(r);
        for (int i = 0; i < 200 && !o.done; i++)
                ASSERT_OK(sd_event_run(e, 100000));
        http_client_free(c);
        peer_stop(&p);
        sd_event_unref(e);
        ASSERT_TRUE(o.done);
        ASSERT_EQ(o.result, 0);
        ASSERT_EQ(o.status, 200);
        ASSERT_STREQ(o.body, "ok");
        ASSERT_TRUE(strncmp(p.request, "GET /r HTTP/1.1\r\n", 17) == 0);
        ASSERT_TRUE(strcasestr(p.request, "\r\nHost: report.halyard.invalid:8443\r\n") != NULL);
}

int main(void) {
        return tap_run();
}
