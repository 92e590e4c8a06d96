/* SPDX-License-Identifier: MIT */
/* The varlink core against raw sockets (to see the exact bytes) and against
 * its own async and sync clients. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "tap.h"
#include "varlink.h"

static const char test_idl[] =
        "# Test interface for the varlink core.\n"
        "interface io.halyard.Test\n"
        "\n"
        "type Item (name: string, count: ?int)\n"
        "\n"
        "# Returns what it was given.\n"
        "method Echo(text: string, number: ?int, items: ?[]Item, tags: ?[string]string) -> (text: string, number: ?int)\n"
        "method Stream(count: int) -> (index: int)\n"
        "method Later(text: string) -> (text: string)\n"
        "method Fail(code: int) -> ()\n"
        "method ReadFd(fd: int) -> (content: string)\n"
        "method MakeFd(content: string) -> (fd: int)\n"
        "method Big(size: int) -> (data: string)\n"
        "method Never() -> ()\n"
        "method Unbound() -> ()\n"
        "error Failure (code: int, reason: string)\n";

typedef struct Ctx {
        sd_event *event;
        VarlinkServer *server;
        Varlink *later; /* a call answered from a timer */
        json_object *later_params;
        unsigned oneway_calls;
} Ctx;

static int method_echo(Varlink *link, json_object *p, VarlinkCallFlags flags, void *userdata) {
        Ctx *c = userdata;
        if (flags & VARLINK_CALL_ONEWAY)
                c->oneway_calls++;
        json_object *r = json_object_new_object();
        json_object_object_add(r, "text", json_object_get(json_object_object_get(p, "text")));
        json_object *n;
        if (json_object_object_get_ex(p, "number", &n) && n)
                json_object_object_add(r, "number", json_object_get(n));
        int k = varlink_reply(link, r);
        json_object_put(r);
        return k;
}

static int method_stream(Varlink *link, json_object *p, VarlinkCallFlags flags, void *userdata) {
        int64_t n = json_object_get_int64(json_object_object_get(p, "count"));
        for (int64_t i = 0; i < n; i++) {
                json_object *r = json_object_new_object();
                json_object_object_add(r, "index", json_object_new_int64(i));
                int k = i + 1 < n ? varlink_notify(link, r) : varlink_reply(link, r);
                json_object_put(r);
                if (k < 0)
                        return k;
        }
        return 0;
}

static int later_fire(sd_event_source *s, uint64_t usec, void *userdata) {
        Ctx *c = userdata;
        json_object *r = json_object_new_object();
        json_object_object_add(r, "text", json_object_get(json_object_object_get(c->later_params, "text")));
        varlink_reply(c->later, r);
        json_object_put(r);
        c->later = varlink_unref(c->later);
        json_object_put(c->later_params);
        c->later_params = NULL;
        sd_event_source_unref(s);
        return 0;
}

/* Answers 20 ms later, so pipelined calls behind it must wait. */
static int method_later(Varlink *link, json_object *p, VarlinkCallFlags flags, void *userdata) {
        Ctx *c = userdata;
        c->later = varlink_ref(link);
        c->later_params = json_object_get(p);
        uint64_t now;
        sd_event_now(c->event, CLOCK_MONOTONIC, &now);
        return sd_event_add_time(c->event, NULL, CLOCK_MONOTONIC, now + 20000, 0, later_fire, c);
}

static int method_fail(Varlink *link, json_object *p, VarlinkCallFlags flags, void *userdata) {
        int code = json_object_get_int(json_object_object_get(p, "code"));
        if (code == 0)
                return -EIO; /* no reply: the core answers InternalError */
        json_object *e = json_object_new_object();
        json_object_object_add(e, "code", json_object_new_int(code));
        json_object_object_add(e, "reason", json_object_new_string("asked to fail"));
        int k = varlink_error(link, "io.halyard.Test.Failure", e);
        json_object_put(e);
        return k;
}

static int method_read_fd(Varlink *link, json_object *p, VarlinkCallFlags flags, void *userdata) {
        int idx = json_object_get_int(json_object_object_get(p, "fd"));
        _cleanup_close_ int fd = varlink_take_fd(link, (unsigned) idx);
        if (fd < 0)
                return varlink_error_invalid_parameter(link, "fd");
        char buf[256];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        if (n < 0)
                return -errno;
        buf[n] = 0;
        json_object *r = json_object_new_object();
        json_object_object_add(r, "content", json_object_new_string(buf));
        int k = varlink_reply(link, r);
        json_object_put(r);
        return k;
}

static int make_memfd(const char *content) {
        int fd = memfd_create("test", MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (write(fd, content, strlen(content)) != (ssize_t) strlen(content)) {
                close(fd);
                return -EIO;
        }
        return fd;
}

static int method_make_fd(Varlink *link, json_object *p, VarlinkCallFlags flags, void *userdata) {
        int fd = make_memfd(json_object_get_string(json_object_object_get(p, "content")));
        if (fd < 0)
                return fd;
        int idx = varlink_push_fd(link, fd);
        if (idx < 0)
                return idx;
        json_object *r = json_object_new_object();
        json_object_object_add(r, "fd", json_object_new_int(idx));
        int k = varlink_reply(link, r);
        json_object_put(r);
        return k;
}

static int method_big(Varlink *link, json_object *p, VarlinkCallFlags flags, void *userdata) {
        int64_t size = json_object_get_int64(json_object_object_get(p, "size"));
        _cleanup_free_ char *s = malloc((size_t) size + 1);
        memset(s, 'x', (size_t) size);
        s[size] = 0;
        json_object *r = json_object_new_object();
        json_object_object_add(r, "data", json_object_new_string(s));
        int k = varlink_reply(link, r);
        json_object_put(r);
        return k;
}

static int method_never(Varlink *link, json_object *p, VarlinkCallFlags flags, void *userdata) {
        return 0; /* keeps the call pending forever */
}

static void ctx_init(Ctx *c) {
        memset(c, 0, sizeof *c);
        ASSERT_OK(sd_event_new(&c->event));
        VarlinkServerInfo info = { "halyard", "halyard-test", "1.2.3", "https://example.invalid/halyard" };
        ASSERT_OK(varlink_server_new(c->event, &info, &c->server));
        varlink_server_set_userdata(c->server, c);
        ASSERT_OK(varlink_server_add_interface(c->server, test_idl));
        ASSERT_OK(varlink_server_bind(c->server, "io.halyard.Test.Echo", method_echo));
        ASSERT_OK(varlink_server_bind_full(c->server, "io.halyard.Test.Stream", method_stream, VARLINK_METHOD_REQUIRES_MORE));
        ASSERT_OK(varlink_server_bind(c->server, "io.halyard.Test.Later", method_later));
        ASSERT_OK(varlink_server_bind(c->server, "io.halyard.Test.Fail", method_fail));
        ASSERT_OK(varlink_server_bind_full(c->server, "io.halyard.Test.ReadFd", method_read_fd, VARLINK_METHOD_ACCEPTS_FDS));
        ASSERT_OK(varlink_server_bind(c->server, "io.halyard.Test.MakeFd", method_make_fd));
        ASSERT_OK(varlink_server_bind(c->server, "io.halyard.Test.Big", method_big));
        ASSERT_OK(varlink_server_bind(c->server, "io.halyard.Test.Never", method_never));
        ASSERT_ERR(varlink_server_bind(c->server, "io.halyard.Test.Missing", method_echo), -ENOENT);
        ASSERT_ERR(varlink_server_bind(c->server, "io.halyard.Nope.Echo", method_echo), -ENOENT);
}

static void ctx_done(Ctx *c) {
        varlink_unref(c->later);
        json_object_put(c->later_params);
        varlink_server_free(c->server);
        sd_event_unref(c->event);
}

/* A raw client: one end of a socketpair whose other end the server serves. */
static int raw_connect(Ctx *c) {
        int sv[2];
        ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
        ASSERT_OK(varlink_server_listen_fd(c->server, sv[1]));
        return sv[0];
}

static void raw_send(int fd, const char *s) {
        size_t n = strlen(s) + 1; /* with the NUL */
        ASSERT_EQ(write(fd, s, n), (ssize_t) n);
}

static void spin(Ctx *c, unsigned rounds) {
        for (unsigned i = 0; i < rounds; i++)
                ASSERT_OK(sd_event_run(c->event, 1000));
}

/* Runs the loop until a full message (NUL-terminated) arrives on fd, and
 * returns it (static buffer), or NULL on EOF. */
static char raw_buf[1 << 20];
static size_t raw_len;
static const char *raw_recv(Ctx *c, int fd) {
        static char msg[1 << 20];
        for (unsigned tries = 0; tries < 5000; tries++) {
                char *nul = memchr(raw_buf, 0, raw_len);
                if (nul) {
                        size_t k = (size_t) (nul - raw_buf) + 1;
                        memcpy(msg, raw_buf, k);
                        memmove(raw_buf, raw_buf + k, raw_len - k);
                        raw_len -= k;
                        return msg;
                }
                ssize_t n = recv(fd, raw_buf + raw_len, sizeof raw_buf - raw_len, MSG_DONTWAIT);
                if (n == 0)
                        return NULL;
                if (n > 0) {
                        raw_len += (size_t) n;
                        continue;
                }
                ASSERT_OK(sd_event_run(c->event, 2000));
        }
        TAP_FAIL("no reply");
}

static void raw_reset(void) {
        raw_len = 0;
}

TEST(get_info_and_description) {
        Ctx c;
        ctx_init(&c);
        raw_reset();
        _cleanup_close_ int fd = raw_connect(&c);

        raw_send(fd, "{\"method\":\"org.varlink.service.GetInfo\"}");
        ASSERT_STREQ(raw_recv(&c, fd),
                     "{\"parameters\":{\"vendor\":\"halyard\",\"product\":\"halyard-test\",\"version\":\"1.2.3\","
                     "\"url\":\"https://example.invalid/halyard\",\"interfaces\":[\"org.varlink.service\",\"io.halyard.Test\"]}}");

        raw_send(fd, "{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":{\"interface\":\"io.halyard.Test\"}}");
        json_object *o = json_tokener_parse(raw_recv(&c, fd));
        ASSERT_NOT_NULL(o);
        ASSERT_STREQ(json_object_get_string(json_object_object_get(json_object_object_get(o, "parameters"), "description")), test_idl);
        json_object_put(o);

        raw_send(fd, "{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":{\"interface\":\"io.example.Nope\"}}");
        ASSERT_STREQ(raw_recv(&c, fd), "{\"error\":\"org.varlink.service.InterfaceNotFound\",\"parameters\":{\"interface\":\"io.example.Nope\"}}");
        ctx_done(&c);
}

TEST(standard_errors) {
        static const struct {
                const char *call, *reply;
        } cases[] = {
                { "{\"method\":\"io.halyard.Test.Nope\"}",
                  "{\"error\":\"org.varlink.service.MethodNotFound\",\"parameters\":{\"method\":\"io.halyard.Test.Nope\"}}" },
                { "{\"method\":\"io.example.Other.Call\",\"parameters\":{}}",
                  "{\"error\":\"org.varlink.service.InterfaceNotFound\",\"parameters\":{\"interface\":\"io.example.Other\"}}" },
                { "{\"method\":\"io.halyard.Test.Unbound\",\"parameters\":{}}",
                  "{\"error\":\"org.varlink.service.MethodNotImplemented\",\"parameters\":{\"method\":\"io.halyard.Test.Unbound\"}}" },
                { "{\"method\":\"io.halyard.Test.Echo\",\"parameters\":{}}",
                  "{\"error\":\"org.varlink.service.InvalidParameter\",\"parameters\":{\"parameter\":\"text\"}}" },
                { "{\"method\":\"io.halyard.Test.Echo\",\"parameters\":{\"text\":5}}",
                  "{\"error\":\"org.varlink.service.InvalidParameter\",\"parameters\":{\"parameter\":\"text\"}}" },
                { "{\"method\":\"io.halyard.Test.Echo\",\"parameters\":{\"text\":\"a\",\"bogus\":1}}",
                  "{\"error\":\"org.varlink.service.InvalidParameter\",\"parameters\":{\"parameter\":\"bogus\"}}" },
                { "{\"method\":\"io.halyard.Test.Echo\",\"parameters\":{\"text\":\"a\",\"items\":[{\"name\":1}]}}",
                  "{\"error\":\"org.varlink.service.InvalidParameter\",\"parameters\":{\"parameter\":\"items\"}}" },
                { "{\"method\":\"io.halyard.Test.Stream\",\"parameters\":{\"count\":2}}",
                  "{\"error\":\"org.varlink.service.ExpectedMore\",\"parameters\":{}}" },
                { "{\"method\":\"io.halyard.Test.Fail\",\"parameters\":{\"code\":7}}",
                  "{\"error\":\"io.halyard.Test.Failure\",\"parameters\":{\"code\":7,\"reason\":\"asked to fail\"}}" },
                { "{\"method\":\"io.halyard.Test.Fail\",\"parameters\":{\"code\":0}}",
                  "{\"error\":\"io.halyard.Varlink.InternalError\",\"parameters\":{\"errno\":5}}" },
                { "{\"method\":\"io.halyard.Test.Echo\",\"parameters\":{\"text\":\"x\"},\"upgrade\":true}",
                  "{\"error\":\"org.varlink.service.MethodNotImplemented\",\"parameters\":{\"method\":\"io.halyard.Test.Echo\"}}" },
                /* tolerant: null parameters, unknown top-level keys */
                { "{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":null,\"io.example.ext\":1}",
                  NULL },
        };
        Ctx c;
        ctx_init(&c);
        raw_reset();
        _cleanup_close_ int fd = raw_connect(&c);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                raw_send(fd, cases[i].call);
                const char *r = raw_recv(&c, fd);
                ASSERT_NOT_NULL(r);
                if (cases[i].reply)
                        ASSERT_STREQ(r, cases[i].reply);
                else
                        ASSERT_TRUE(strncmp(r, "{\"parameters\":{\"vendor\"", 23) == 0);
        }
        ctx_done(&c);
}

TEST(partial_reads_byte_by_byte) {
        Ctx c;
        ctx_init(&c);
        raw_reset();
        _cleanup_close_ int fd = raw_connect(&c);
        const char *call = "{\"method\":\"io.halyard.Test.Echo\",\"parameters\":{\"text\":\"h\\u00e9llo\",\"number\":42}}";
        for (size_t i = 0; i <= strlen(call); i++) {
                ASSERT_EQ(write(fd, call + i, 1), 1);
                spin(&c, 2);
                if (i < strlen(call)) {
                        char b;
                        ASSERT_EQ(recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK), -1);
                }
        }
        ASSERT_STREQ(raw_recv(&c, fd), "{\"parameters\":{\"text\":\"h\xc3\xa9llo\",\"number\":42}}");
        ctx_done(&c);
}

TEST(pipelined_calls_answered_in_order) {
        Ctx c;
        ctx_init(&c);
        raw_reset();
        _cleanup_close_ int fd = raw_connect(&c);
        /* One write holding many calls; an asynchronous one in the middle and
         * a oneway one that must not be answered. */
        char all[65536];
        size_t len = 0;
        for (int i = 0; i < 50; i++) {
                int k;
                if (i == 10)
                        k = snprintf(all + len, sizeof all - len, "{\"method\":\"io.halyard.Test.Later\",\"parameters\":{\"text\":\"later\"}}");
                else if (i == 20)
                        k = snprintf(all + len, sizeof all - len, "{\"method\":\"io.halyard.Test.Echo\",\"parameters\":{\"text\":\"quiet\"},\"oneway\":true}");
                else
                        k = snprintf(all + len, sizeof all - len, "{\"method\":\"io.halyard.Test.Echo\",\"parameters\":{\"text\":\"%d\"}}", i);
                len += (size_t) k + 1; /* keep the NUL snprintf wrote */
        }
        ASSERT_EQ(write(fd, all, len), (ssize_t) len);
        for (int i = 0; i < 50; i++) {
                if (i == 20)
                        continue;
                char want[128];
                if (i == 10)
                        snprintf(want, sizeof want, "{\"parameters\":{\"text\":\"later\"}}");
                else
                        snprintf(want, sizeof want, "{\"parameters\":{\"text\":\"%d\"}}", i);
                ASSERT_STREQ(raw_recv(&c, fd), want);
        }
        ASSERT_EQ(c.oneway_calls, 1);
        ASSERT_EQ(varlink_server_n_calls(c.server), 50);
        ctx_done(&c);
}

TEST(more_replies_continue_until_last) {
        Ctx c;
        ctx_init(&c);
        raw_reset();
        _cleanup_close_ int fd = raw_connect(&c);
        raw_send(fd, "{\"method\":\"io.halyard.Test.Stream\",\"parameters\":{\"count\":3},\"more\":true}");
        ASSERT_STREQ(raw_recv(&c, fd), "{\"parameters\":{\"index\":0},\"continues\":true}");
        ASSERT_STREQ(raw_recv(&c, fd), "{\"parameters\":{\"index\":1},\"continues\":true}");
        ASSERT_STREQ(raw_recv(&c, fd), "{\"parameters\":{\"index\":2}}");
        /* "more" on a method with one answer: a single reply without continues. */
        raw_send(fd, "{\"method\":\"io.halyard.Test.Echo\",\"parameters\":{\"text\":\"m\"},\"more\":true}");
        ASSERT_STREQ(raw_recv(&c, fd), "{\"parameters\":{\"text\":\"m\"}}");
        ctx_done(&c);
}

TEST(oversize_message_gets_error_and_close) {
        Ctx c;
        ctx_init(&c);
        varlink_server_set_limits(c.server, 0, 1024);
        raw_reset();
        _cleanup_close_ int fd = raw_connect(&c);
        char big[2048];
        memset(big, ' ', sizeof big);
        ASSERT_EQ(write(fd, big, sizeof big), (ssize_t) sizeof big);
        ASSERT_STREQ(raw_recv(&c, fd), "{\"error\":\"io.halyard.Varlink.MessageTooLarge\",\"parameters\":{\"limit\":1024}}");
        ASSERT_NULL(raw_recv(&c, fd));
        ASSERT_EQ(varlink_server_n_connections(c.server), 0);

        /* A reply over the limit is replaced by the same error. */
        raw_reset();
        _cleanup_close_ int fd2 = raw_connect(&c);
        raw_send(fd2, "{\"method\":\"io.halyard.Test.Big\",\"parameters\":{\"size\":4000}}");
        ASSERT_STREQ(raw_recv(&c, fd2), "{\"error\":\"io.halyard.Varlink.MessageTooLarge\",\"parameters\":{\"limit\":1024}}");
        raw_send(fd2, "{\"method\":\"io.halyard.Test.Big\",\"parameters\":{\"size\":10}}");
        ASSERT_STREQ(raw_recv(&c, fd2), "{\"parameters\":{\"data\":\"xxxxxxxxxx\"}}");
        ctx_done(&c);
}

TEST(bad_json_closes_connection) {
        static const char *bad[] = {
                "{\"method\":", "[1,2]", "\"str\"", "{\"parameters\":{}}", "{\"method\":5}",
                "{\"method\":\"a.b.C\",\"parameters\":[]}", "{\"method\":\"a.b.C\",\"oneway\":true,\"more\":true}",
                "{\"method\":\"io.halyard.Test.Echo\"} trailing",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                Ctx c;
                ctx_init(&c);
                raw_reset();
                _cleanup_close_ int fd = raw_connect(&c);
                raw_send(fd, bad[i]);
                ASSERT_NULL(raw_recv(&c, fd));
                ctx_done(&c);
        }
}

TEST(half_close_still_answered) {
        Ctx c;
        ctx_init(&c);
        raw_reset();
        _cleanup_close_ int fd = raw_connect(&c);
        raw_send(fd, "{\"method\":\"io.halyard.Test.Later\",\"parameters\":{\"text\":\"a\"}}");
        raw_send(fd, "{\"method\":\"io.halyard.Test.Echo\",\"parameters\":{\"text\":\"b\"}}");
        ASSERT_OK(shutdown(fd, SHUT_WR));
        ASSERT_STREQ(raw_recv(&c, fd), "{\"parameters\":{\"text\":\"a\"}}");
        ASSERT_STREQ(raw_recv(&c, fd), "{\"parameters\":{\"text\":\"b\"}}");
        ASSERT_NULL(raw_recv(&c, fd));
        spin(&c, 3);
        ASSERT_EQ(varlink_server_n_connections(c.server), 0);
        ctx_done(&c);
}

TEST(connection_limit) {
        Ctx c;
        ctx_init(&c);
        varlink_server_set_limits(c.server, 2, 0);
        char dir[] = "/tmp/halyard-test-XXXXXX";
        ASSERT_NOT_NULL(mkdtemp(dir));
        char path[128];
        snprintf(path, sizeof path, "unix:%s/sock", dir);
        ASSERT_OK(varlink_server_listen_address(c.server, path, 0600));

        int fds[3];
        for (int i = 0; i < 3; i++) {
                fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                snprintf(sa.sun_path, sizeof sa.sun_path, "%s/sock", dir);
                ASSERT_OK(connect(fds[i], (struct sockaddr *) &sa, sizeof sa));
                spin(&c, 3);
        }
        ASSERT_EQ(varlink_server_n_connections(c.server), 2);
        /* The third was accepted and closed at once: a clean EOF, no hang. */
        raw_reset();
        (void) send(fds[2], "{}", 3, MSG_NOSIGNAL);
        ASSERT_NULL(raw_recv(&c, fds[2]));
        raw_reset();
        raw_send(fds[0], "{\"method\":\"io.halyard.Test.Echo\",\"parameters\":{\"text\":\"ok\"}}");
        ASSERT_STREQ(raw_recv(&c, fds[0]), "{\"parameters\":{\"text\":\"ok\"}}");
        for (int i = 0; i < 3; i++)
                close(fds[i]);
        ctx_done(&c);
        snprintf(path, sizeof path, "%s/sock", dir);
        unlink(path);
        rmdir(dir);
}

/* ---- the async client --------------------------------------------------- */

typedef struct Got {
        unsigned replies, errors, continues, local;
        char last_error[128];
        char last_text[128];
        int last_fd;
        int64_t sum;
} Got;

static int got_reply(Varlink *link, json_object *p, const char *error, VarlinkReplyFlags flags, void *userdata) {
        Got *g = userdata;
        if (error) {
                g->errors++;
                snprintf(g->last_error, sizeof g->last_error, "%s", error);
                if (flags & VARLINK_REPLY_LOCAL)
                        g->local++;
                return 0;
        }
        g->replies++;
        if (flags & VARLINK_REPLY_CONTINUES)
                g->continues++;
        json_object *v;
        if (json_object_object_get_ex(p, "text", &v))
                snprintf(g->last_text, sizeof g->last_text, "%s", json_object_get_string(v));
        if (json_object_object_get_ex(p, "index", &v))
                g->sum += json_object_get_int64(v);
        if (json_object_object_get_ex(p, "fd", &v))
                g->last_fd = varlink_take_fd(link, (unsigned) json_object_get_int(v));
        return 0;
}

static void async_client(Ctx *c, Varlink **ret) {
        int sv[2];
        ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
        ASSERT_OK(varlink_server_listen_fd(c->server, sv[1]));
        ASSERT_OK(varlink_connect_fd(c->event, sv[0], ret));
}

static void run_until(Ctx *c, const unsigned *counter, unsigned want) {
        for (unsigned i = 0; i < 100000 && *counter < want; i++)
                ASSERT_OK(sd_event_run(c->event, 10000));
        ASSERT_EQ(*counter, want);
}

TEST(async_client_calls_more_errors) {
        Ctx c;
        ctx_init(&c);
        Varlink *l;
        async_client(&c, &l);
        Got g = { 0 };
        json_object *p = json_tokener_parse("{\"text\":\"hi\"}");
        ASSERT_OK(varlink_invoke(l, "io.halyard.Test.Echo", p, 0, got_reply, &g));
        json_object_put(p);
        p = json_tokener_parse("{\"count\":5}");
        ASSERT_OK(varlink_invoke(l, "io.halyard.Test.Stream", p, VARLINK_CALL_MORE, got_reply, &g));
        json_object_put(p);
        p = json_tokener_parse("{\"code\":3}");
        ASSERT_OK(varlink_invoke(l, "io.halyard.Test.Fail", p, 0, got_reply, &g));
        json_object_put(p);
        ASSERT_ERR(varlink_invoke(l, "io.halyard.Test.Echo", NULL, VARLINK_CALL_MORE | VARLINK_CALL_ONEWAY, got_reply, &g), -EINVAL);
        run_until(&c, &g.errors, 1);
        ASSERT_EQ(g.replies, 6);
        ASSERT_EQ(g.continues, 4);
        ASSERT_EQ(g.sum, 0 + 1 + 2 + 3 + 4);
        ASSERT_STREQ(g.last_error, "io.halyard.Test.Failure");
        ASSERT_STREQ(g.last_text, "hi");
        varlink_unref(l);
        ctx_done(&c);
}

TEST(fd_passing_both_ways) {
        Ctx c;
        ctx_init(&c);
        Varlink *l;
        async_client(&c, &l);
        Got g = { .last_fd = -1 };

        /* Several fd-carrying calls pipelined with plain ones in between. */
        for (int i = 0; i < 5; i++) {
                char content[32];
                snprintf(content, sizeof content, "body %d", i);
                int idx = varlink_push_fd(l, make_memfd(content));
                ASSERT_EQ(idx, 0);
                json_object *p = json_object_new_object();
                json_object_object_add(p, "fd", json_object_new_int(idx));
                ASSERT_OK(varlink_invoke(l, "io.halyard.Test.ReadFd", p, 0, got_reply, &g));
                json_object_put(p);
                p = json_tokener_parse("{\"text\":\"between\"}");
                ASSERT_OK(varlink_invoke(l, "io.halyard.Test.Echo", p, 0, got_reply, &g));
                json_object_put(p);
        }
        run_until(&c, &g.replies, 10);
        ASSERT_EQ(g.errors, 0);

        /* The server sends an fd back. */
        json_object *p = json_tokener_parse("{\"content\":\"from the server\"}");
        ASSERT_OK(varlink_invoke(l, "io.halyard.Test.MakeFd", p, 0, got_reply, &g));
        json_object_put(p);
        run_until(&c, &g.replies, 11);
        ASSERT_TRUE(g.last_fd >= 0);
        char buf[64] = { 0 };
        ASSERT_EQ(pread(g.last_fd, buf, sizeof buf - 1, 0), 15);
        ASSERT_STREQ(buf, "from the server");
        close(g.last_fd);

        /* fds sent to a method that takes none are refused by name. */
        ASSERT_EQ(varlink_push_fd(l, make_memfd("x")), 0);
        p = json_tokener_parse("{\"text\":\"x\"}");
        ASSERT_OK(varlink_invoke(l, "io.halyard.Test.Echo", p, 0, got_reply, &g));
        json_object_put(p);
        run_until(&c, &g.errors, 1);
        ASSERT_STREQ(g.last_error, VARLINK_ERROR_INVALID_PARAMETER);
        varlink_unref(l);
        ctx_done(&c);
}

TEST(client_timeout_and_disconnect) {
        Ctx c;
        ctx_init(&c);
        Varlink *l;
        async_client(&c, &l);
        varlink_set_timeout(l, 50000);
        Got g = { 0 };
        ASSERT_OK(varlink_invoke(l, "io.halyard.Test.Never", NULL, 0, got_reply, &g));
        ASSERT_OK(varlink_invoke(l, "io.halyard.Test.Never", NULL, 0, got_reply, &g));
        run_until(&c, &g.errors, 2);
        ASSERT_EQ(g.local, 2);
        ASSERT_STREQ(g.last_error, VARLINK_ERROR_TIMEOUT);
        ASSERT_FALSE(varlink_is_connected(l));
        ASSERT_ERR(varlink_invoke(l, "io.halyard.Test.Never", NULL, 0, got_reply, &g), -ENOTCONN);
        varlink_unref(l);

        /* The server going away fails what is pending. */
        async_client(&c, &l);
        Got g2 = { 0 };
        ASSERT_OK(varlink_invoke(l, "io.halyard.Test.Never", NULL, 0, got_reply, &g2));
        spin(&c, 5);
        c.server = varlink_server_free(c.server);
        run_until(&c, &g2.errors, 1);
        ASSERT_STREQ(g2.last_error, VARLINK_ERROR_DISCONNECTED);
        varlink_unref(l);
        ctx_done(&c);
}

TEST(many_connections_pipelining) {
        /* 200 connections each pipelining 100 calls: nothing lost, all in order. */
        enum { CONNS = 200, CALLS = 100 };
        Ctx c;
        ctx_init(&c);
        Varlink *links[CONNS];
        static Got got[CONNS];
        unsigned total = 0;
        memset(got, 0, sizeof got);
        for (int i = 0; i < CONNS; i++) {
                async_client(&c, &links[i]);
                for (int k = 0; k < CALLS; k++) {
                        json_object *p = json_object_new_object();
                        json_object_object_add(p, "count", json_object_new_int(1));
                        ASSERT_OK(varlink_invoke(links[i], "io.halyard.Test.Stream", p, VARLINK_CALL_MORE, got_reply, &got[i]));
                        json_object_put(p);
                }
        }
        for (unsigned round = 0; round < 200000 && total < CONNS * CALLS; round++) {
                ASSERT_OK(sd_event_run(c.event, 100000));
                total = 0;
                for (int i = 0; i < CONNS; i++)
                        total += got[i].replies;
        }
        ASSERT_EQ(total, CONNS * CALLS);
        for (int i = 0; i < CONNS; i++) {
                ASSERT_EQ(got[i].errors, 0);
                varlink_unref(links[i]);
        }
        ASSERT_EQ(varlink_server_n_calls(c.server), CONNS * CALLS);
        ctx_done(&c);
}

/* ---- the sync client against a server in a child process ------------------ */

static pid_t spawn_server(char *dir, char *address, size_t n) {
        ASSERT_NOT_NULL(mkdtemp(dir));
        snprintf(address, n, "unix:%s/io.halyard.Test", dir);
        int pipefd[2];
        ASSERT_OK(pipe(pipefd));
        pid_t pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                Ctx c;
                ctx_init(&c);
                if (varlink_server_listen_address(c.server, address, 0600) < 0)
                        _exit(1);
                (void) write(pipefd[1], "R", 1);
                for (;;)
                        if (sd_event_run(c.event, UINT64_MAX) < 0)
                                _exit(1);
        }
        char b;
        ASSERT_EQ(read(pipefd[0], &b, 1), 1);
        close(pipefd[0]);
        close(pipefd[1]);
        return pid;
}

static int collect(Varlink *link, json_object *p, const char *error, VarlinkReplyFlags flags, void *userdata) {
        Got *g = userdata;
        return got_reply(link, p, error, flags, g);
}

TEST(sync_client) {
        char dir[] = "/tmp/halyard-test-XXXXXX", address[128];
        pid_t pid = spawn_server(dir, address, sizeof address);

        Varlink *l;
        ASSERT_OK(varlink_connect_address(NULL, address, &l));
        json_object *reply;
        const char *error;
        json_object *p = json_tokener_parse("{\"text\":\"sync\",\"number\":-3}");
        ASSERT_OK(varlink_call_sync(l, "io.halyard.Test.Echo", p, 0, &reply, &error));
        json_object_put(p);
        ASSERT_NULL(error);
        ASSERT_STREQ(json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN), "{\"text\":\"sync\",\"number\":-3}");

        ASSERT_OK(varlink_call_sync(l, "io.halyard.Test.Nope", NULL, 0, &reply, &error));
        ASSERT_STREQ(error, VARLINK_ERROR_METHOD_NOT_FOUND);
        ASSERT_STREQ(json_object_get_string(json_object_object_get(reply, "method")), "io.halyard.Test.Nope");

        p = json_tokener_parse("{\"text\":\"one\"}");
        ASSERT_OK(varlink_call_sync(l, "io.halyard.Test.Echo", p, VARLINK_CALL_ONEWAY, &reply, &error));
        json_object_put(p);
        ASSERT_NULL(reply);

        Got g = { 0 };
        p = json_tokener_parse("{\"count\":4}");
        ASSERT_OK(varlink_call_more_sync(l, "io.halyard.Test.Stream", p, collect, &g));
        json_object_put(p);
        ASSERT_EQ(g.replies, 4);
        ASSERT_EQ(g.continues, 3);

        /* fd both ways on the sync path */
        ASSERT_EQ(varlink_push_fd(l, make_memfd("sync body")), 0);
        p = json_tokener_parse("{\"fd\":0}");
        ASSERT_OK(varlink_call_sync(l, "io.halyard.Test.ReadFd", p, 0, &reply, &error));
        json_object_put(p);
        ASSERT_NULL(error);
        ASSERT_STREQ(json_object_get_string(json_object_object_get(reply, "content")), "sync body");

        /* a reply larger than our limit is a local error, not a hang */
        varlink_set_message_max(l, 512);
        p = json_tokener_parse("{\"size\":2000}");
        ASSERT_ERR(varlink_call_sync(l, "io.halyard.Test.Big", p, 0, &reply, &error), -EMSGSIZE);
        json_object_put(p);
        varlink_unref(l);

        /* timeout */
        ASSERT_OK(varlink_connect_address(NULL, address, &l));
        varlink_set_timeout(l, 100000);
        ASSERT_ERR(varlink_call_sync(l, "io.halyard.Test.Never", NULL, 0, &reply, &error), -ETIMEDOUT);
        varlink_unref(l);

        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        ASSERT_ERR(varlink_connect_address(NULL, address, &l), -ECONNREFUSED);
        ASSERT_ERR(varlink_connect_address(NULL, "tcp:127.0.0.1:1", &l), -EPROTONOSUPPORT);
        char path[160];
        snprintf(path, sizeof path, "%s/io.halyard.Test", dir);
        unlink(path);
        rmdir(dir);
}

TEST(addresses) {
        struct sockaddr_un sa;
        socklen_t sl;
        ASSERT_OK(varlink_address_to_sockaddr("unix:/run/halyard/io.halyard.Queue", &sa, &sl));
        ASSERT_OK(varlink_address_to_sockaddr("/run/halyard/io.halyard.Queue", &sa, &sl));
        ASSERT_OK(varlink_address_to_sockaddr("unix:@abstract", &sa, &sl));
        ASSERT_ERR(varlink_address_to_sockaddr("unix:/run/x;mode=0666", &sa, &sl), -EINVAL);
        ASSERT_ERR(varlink_address_to_sockaddr("unix:", &sa, &sl), -EINVAL);
        ASSERT_ERR(varlink_address_to_sockaddr("relative", &sa, &sl), -EPROTONOSUPPORT);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        return tap_run();
}
