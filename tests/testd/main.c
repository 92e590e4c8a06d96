/* SPDX-License-Identifier: MIT */
/* halyard-testd: the foundation's test service, wired the way every halyard
 * service is. Serves io.halyard.Test on the fd systemd names "varlink"
 * (halyard-testd.socket: /run/halyard/io.halyard.Test), or on --listen=ADDRESS
 * for development. Reads [Test] from the halyard configuration, the optional
 * credential "test-secret", and answers SIGHUP (reload) and SIGTERM (drain). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "testd.h"

#define DRAIN_TIMEOUT_USEC (10ULL * 1000000ULL)

const ConfigKey testd_config_keys[] = {
        { "Test", "Greeting", CONFIG_STRING },
        { "Test", "MaxConnections", CONFIG_UINT },
        { "Test", "MessageMax", CONFIG_SIZE },
        { "Test", "DrainTimeout", CONFIG_DURATION },
        {}
};

int manager_load_config(Manager *m, const char *path) {
        Config *c = NULL;
        int r = config_load(path, testd_config_keys, &c);
        if (c)
                config_print_diags(c, stderr);
        if (r < 0) {
                config_free(c);
                return r;
        }
        const char *greeting = "hello";
        (void) config_get_string(c, "Test", "Greeting", &greeting);
        char *g = strdup(greeting);
        if (!g) {
                config_free(c);
                return -ENOMEM;
        }
        free(m->greeting);
        m->greeting = g;
        config_free(m->config);
        m->config = c;
        if (m->varlink) {
                uint64_t conns = 0, msg = 0;
                (void) config_get_uint(c, "Test", "MaxConnections", &conns);
                (void) config_get_size(c, "Test", "MessageMax", &msg);
                varlink_server_set_limits(m->varlink, (unsigned) MIN(conns, 65536U), (size_t) msg);
        }
        return 0;
}

static int on_reload(Daemon *d, void *userdata) {
        Manager *m = userdata;
        return manager_load_config(m, m->config_path);
}

static int drain_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        log_warning("Drain timeout: closing %u connections", varlink_server_n_connections(m->varlink));
        return daemon_exit(m->daemon, 0);
}

static void on_drain(Daemon *d, void *userdata) {
        Manager *m = userdata;
        uint64_t timeout = DRAIN_TIMEOUT_USEC;

        /* Stop taking connections; let the ones open finish their calls. */
        varlink_server_stop_listening(m->varlink);
        if (varlink_server_n_connections(m->varlink) == 0) {
                (void) daemon_exit(d, 0);
                return;
        }
        (void) config_get_duration(m->config, "Test", "DrainTimeout", &timeout);
        log_info("Draining: %u connections open", varlink_server_n_connections(m->varlink));
        (void) sd_event_add_time_relative(m->event, &m->drain_timer, CLOCK_MONOTONIC, timeout, 0, drain_timeout, m);
}

static int on_status(Daemon *d, char *buf, size_t n, void *userdata) {
        Manager *m = userdata;
        snprintf(buf, n, "serving io.halyard.Test: %u connections, %llu calls", varlink_server_n_connections(m->varlink),
                 (unsigned long long) varlink_server_n_calls(m->varlink));
        return 0;
}

static void on_disconnect(VarlinkServer *s, Varlink *link, void *userdata) {
        Manager *m = userdata;
        if (daemon_is_draining(m->daemon) && varlink_server_n_connections(s) == 0)
                (void) daemon_exit(m->daemon, 0);
}

static void manager_free(Manager *m) {
        varlink_server_free(m->varlink);
        sd_event_source_disable_unref(m->drain_timer);
        daemon_free(m->daemon);
        config_free(m->config);
        free(m->greeting);
        sd_event_unref(m->event);
}

int main(int argc, char **argv) {
        _cleanup_(manager_free) Manager m = {};
        DaemonCommandLine cl;
        int r;

        r = daemon_parse_command_line(argc, argv, "halyard-testd", NULL, &cl);
        if (r != 0)
                return r > 0 ? 0 : 2;
        m.config_path = cl.config_path;

        log_setup("halyard-testd", LOG_TARGET_AUTO);
        if (cl.check) {
                r = manager_load_config(&m, m.config_path);
                return r < 0 ? 1 : 0;
        }

        r = sd_event_default(&m.event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m"), 1;
        sd_event_now(m.event, CLOCK_MONOTONIC, &m.started_usec);

        r = testd_varlink_setup(&m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up varlink: %m"), 1;
        varlink_server_set_connect_handlers(m.varlink, NULL, on_disconnect);
        r = manager_load_config(&m, m.config_path);
        if (r < 0)
                return log_error_errno(r, "Refusing to start with a bad configuration (%s)", m.config_path), 1;

        static const DaemonCallbacks callbacks = { .drain = on_drain, .reload = on_reload, .status = on_status };
        r = daemon_new(m.event, &callbacks, &m, &m.daemon);
        if (r < 0)
                return log_error_errno(r, "Failed to set up service glue: %m"), 1;

        r = daemon_listen_varlink(m.daemon, m.varlink, cl.listen, "halyard-testd.socket");
        if (r < 0)
                return 1;

        _cleanup_free_ char *secret = NULL;
        r = daemon_read_credential("test-secret", 4096, &secret, NULL);
        m.secret_loaded = r >= 0;
        if (r < 0 && r != -ENOENT && r != -ENXIO)
                log_warning_errno(r, "Failed to read credential test-secret, ignoring: %m");

        log_event(LOG_INFO, LOG_MESSAGE_SERVICE_STARTED, (const char *[]){ "HALYARD_SERVICE=testd", NULL },
                  "halyard-testd %s serving io.halyard.Test", HALYARD_VERSION);
        (void) daemon_ready(m.daemon);
        r = sd_event_loop(m.event);
        log_info("halyard-testd stopped");
        return r < 0 ? 1 : r;
}
