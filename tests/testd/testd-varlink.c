/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.halyard.Test.varlink.h"
#include "log.h"
#include "macro.h"
#include "testd.h"

static int reply_take(Varlink *link, json_object *p) {
        int r = varlink_reply(link, p);
        json_object_put(p);
        return r;
}

static int method_get_status(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        uint64_t now;
        char summary[128];

        sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        snprintf(summary, sizeof summary, "%u connections, %llu calls",
                 varlink_server_n_connections(m->varlink), (unsigned long long) varlink_server_n_calls(m->varlink));
        json_object *p = json_object_new_object();
        json_object_object_add(p, "summary", json_object_new_string(summary));
        json_object_object_add(p, "version", json_object_new_string(HALYARD_VERSION));
        json_object_object_add(p, "pid", json_object_new_int64(getpid()));
        json_object_object_add(p, "uptimeUsec", json_object_new_int64((int64_t) (now - m->started_usec)));
        json_object_object_add(p, "connections", json_object_new_int64(varlink_server_n_connections(m->varlink)));
        json_object_object_add(p, "calls", json_object_new_int64((int64_t) varlink_server_n_calls(m->varlink)));
        json_object_object_add(p, "greeting", json_object_new_string(m->greeting));
        json_object_object_add(p, "configFile", json_object_new_string(m->config_path));
        json_object_object_add(p, "secretLoaded", json_object_new_boolean(m->secret_loaded));
        json_object_object_add(p, "stateDirectory", json_object_new_string(daemon_state_directory("/var/lib/halyard-test")));
        json_object_object_add(p, "draining", json_object_new_boolean(daemon_is_draining(m->daemon)));
        return reply_take(link, p);
}

static int method_ping(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        return varlink_reply(link, NULL);
}

static int method_echo(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        json_object *p = json_object_new_object();
        json_object_object_add(p, "text", json_object_get(json_object_object_get(params, "text")));
        return reply_take(link, p);
}

static int method_stream(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        int64_t n = json_object_get_int64(json_object_object_get(params, "count"));
        if (n < 1 || n > 100000)
                return varlink_error_invalid_parameter(link, "count");
        for (int64_t i = 0; i < n; i++) {
                json_object *p = json_object_new_object();
                json_object_object_add(p, "index", json_object_new_int64(i));
                int r = i + 1 < n ? varlink_notify(link, p) : varlink_reply(link, p);
                json_object_put(p);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int sleep_done(sd_event_source *s, uint64_t usec, void *userdata) {
        Varlink *link = userdata;
        (void) varlink_reply(link, NULL);
        varlink_unref(link);
        sd_event_source_unref(s);
        return 0;
}

static int method_sleep(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        int64_t ms = json_object_get_int64(json_object_object_get(params, "ms"));
        uint64_t now;

        if (ms < 0 || ms > 600000)
                return varlink_error_invalid_parameter(link, "ms");
        sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        int r = sd_event_add_time(m->event, NULL, CLOCK_MONOTONIC, now + (uint64_t) ms * 1000, 0, sleep_done, link);
        if (r < 0)
                return r;
        varlink_ref(link);
        return 0;
}

static int method_read_fd(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        _cleanup_close_ int fd = varlink_take_fd(link, (unsigned) json_object_get_int(json_object_object_get(params, "fd")));
        struct stat st;
        unsigned char head[65];

        if (fd < 0)
                return varlink_error_invalid_parameter(link, "fd");
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                json_object *e = json_object_new_object();
                json_object_object_add(e, "reason", json_object_new_string("not a regular file"));
                int r = varlink_error(link, "io.halyard.Test.Failed", e);
                json_object_put(e);
                return r;
        }
        ssize_t n = pread(fd, head, sizeof head - 1, 0);
        if (n < 0)
                return -errno;
        /* Arbitrary bytes: show them as hexdump's text column does, so the
         * reply is always valid UTF-8. */
        for (ssize_t i = 0; i < n; i++)
                if (head[i] < 0x20 || head[i] > 0x7e)
                        head[i] = '.';
        head[n] = 0;
        json_object *p = json_object_new_object();
        json_object_object_add(p, "size", json_object_new_int64(st.st_size));
        json_object_object_add(p, "head", json_object_new_string((const char *) head));
        return reply_take(link, p);
}

static int method_log(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        const char *qid = json_object_get_string(json_object_object_get(params, "queueId"));
        const char *msg = json_object_get_string(json_object_object_get(params, "message"));
        char field[96], esc[256];

        /* Queue ids are what operators type into journalctl: keep them tame. */
        if (strlen(qid) == 0 || strlen(qid) > 64 || strspn(qid, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != strlen(qid))
                return varlink_error_invalid_parameter(link, "queueId");
        snprintf(field, sizeof field, "HALYARD_QUEUE_ID=%s", qid);
        log_event(LOG_INFO, LOG_MESSAGE_ACCEPTED, (const char *[]){ field, NULL }, "%s: %s", qid,
                  log_escape(msg, strlen(msg), esc, sizeof esc));
        return varlink_reply(link, NULL);
}

int testd_varlink_setup(Manager *m) {
        static const VarlinkMethodBinding methods[] = {
                { "io.halyard.Test.GetStatus", method_get_status, 0 },
                { "io.halyard.Test.Ping", method_ping, 0 },
                { "io.halyard.Test.Echo", method_echo, 0 },
                { "io.halyard.Test.Stream", method_stream, VARLINK_METHOD_REQUIRES_MORE },
                { "io.halyard.Test.Sleep", method_sleep, 0 },
                { "io.halyard.Test.ReadFd", method_read_fd, VARLINK_METHOD_ACCEPTS_FDS },
                { "io.halyard.Test.Log", method_log, 0 },
        };
        return varlink_server_new_service(m->event, "halyard-testd", io_halyard_Test_varlink,
                                          methods, ELEMENTSOF(methods), m, &m->varlink);
}
