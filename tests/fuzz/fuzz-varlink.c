/* SPDX-License-Identifier: MIT */
/* Feeds arbitrary bytes to a varlink server connection in odd-sized chunks
 * (the first input byte picks the chunk size) and lets the server answer:
 * framing, JSON parsing, call validation against the IDL, dispatch and the
 * error paths all run on the way. The reply stream is drained and discarded. */
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "macro.h"
#include "varlink.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fuzz_idl[] =
        "interface io.halyard.Fuzz\n"
        "type Item (name: string, count: ?int, kind: (a, b))\n"
        "method Echo(text: string, items: ?[]Item, map: ?[string]int, any: ?object) -> (text: string)\n"
        "method Stream(count: int) -> (index: int)\n"
        "method Unbound() -> ()\n"
        "error Failure (reason: string)\n";

static int method_echo(Varlink *link, json_object *p, VarlinkCallFlags flags, void *userdata) {
        json_object *r = json_object_new_object();
        json_object_object_add(r, "text", json_object_get(json_object_object_get(p, "text")));
        int k = varlink_reply(link, r);
        json_object_put(r);
        return k;
}

static int method_stream(Varlink *link, json_object *p, VarlinkCallFlags flags, void *userdata) {
        int64_t n = json_object_get_int64(json_object_object_get(p, "count"));
        if (n < 0 || n > 8)
                return varlink_error(link, "io.halyard.Fuzz.Failure", NULL);
        for (int64_t i = 0; i < n; i++) {
                json_object *r = json_object_new_object();
                json_object_object_add(r, "index", json_object_new_int64(i));
                int k = (flags & VARLINK_CALL_MORE) && i + 1 < n ? varlink_notify(link, r) : varlink_reply(link, r);
                json_object_put(r);
                if (k < 0 || !(flags & VARLINK_CALL_MORE))
                        break;
        }
        return 0;
}

static void drain(int fd) {
        char buf[65536];
        while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
                ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        sd_event *e = NULL;
        VarlinkServer *s = NULL;
        int sv[2];

        if (size == 0 || size > 256 * 1024)
                return 0;
        signal(SIGPIPE, SIG_IGN);
        size_t chunk = 1 + data[0] % 97;
        data++, size--;

        if (sd_event_new(&e) < 0)
                return 0;
        VarlinkServerInfo info = { "halyard", "fuzz", "0", "" };
        if (varlink_server_new(e, &info, &s) < 0 || varlink_server_add_interface(s, fuzz_idl) < 0 ||
            varlink_server_bind(s, "io.halyard.Fuzz.Echo", method_echo) < 0 ||
            varlink_server_bind(s, "io.halyard.Fuzz.Stream", method_stream) < 0)
                goto out;
        varlink_server_set_limits(s, 4, 64 * 1024);
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
                goto out;
        if (varlink_server_listen_fd(s, sv[1]) < 0) {
                close(sv[0]);
                goto out;
        }
        for (size_t off = 0; off < size; off += chunk) {
                size_t n = MIN(chunk, size - off);
                if (send(sv[0], data + off, n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                        break;
                for (int i = 0; i < 4; i++)
                        (void) sd_event_run(e, 0);
                drain(sv[0]);
        }
        shutdown(sv[0], SHUT_WR);
        for (int i = 0; i < 16 && varlink_server_n_connections(s) > 0; i++) {
                (void) sd_event_run(e, 0);
                drain(sv[0]);
        }
        close(sv[0]);
out:
        varlink_server_free(s);
        sd_event_unref(e);
        return 0;
}
