/* SPDX-License-Identifier: MIT */
/* halyard-queued: the durable outbound queue. Serves io.halyard.Queue on the
 * fd systemd names "varlink" (halyard-queued.socket:
 * /run/halyard/io.halyard.Queue) or on --listen=ADDRESS for development.
 * Keeps its spool in $STATE_DIRECTORY (or --spool=DIR). Reads [Queue] from
 * the halyard configuration; SIGHUP reloads it, SIGTERM drains. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "macro.h"
#include "queued.h"

#define DEFAULT_MAX_MESSAGE_SIZE (50ULL * 1024 * 1024)

const ConfigKey queued_config_keys[] = {
        { "Queue", "MaxMessageSize", CONFIG_SIZE },
        {}
};

int manager_load_config(Manager *m, const char *path) {
        Config *c = NULL;
        int r = config_load(path, queued_config_keys, &c);
        if (c)
                config_print_diags(c, stderr);
        if (r < 0) {
                config_free(c);
                return r;
        }
        uint64_t max = DEFAULT_MAX_MESSAGE_SIZE;
        (void) config_get_size(c, "Queue", "MaxMessageSize", &max);
        m->max_message_size = max;
        config_free(m->config);
        m->config = c;
        return 0;
}

static int on_reload(Daemon *d, void *userdata) {
        Manager *m = userdata;
        return manager_load_config(m, m->config_path);
}

static void on_drain(Daemon *d, void *userdata) {
        Manager *m = userdata;
        /* New calls are refused; Enqueue calls in flight finish first (their
         * connections close after the answer), then we exit. */
        varlink_server_stop_listening(m->varlink);
        if (varlink_server_n_connections(m->varlink) == m->n_monitors) {
                (void) daemon_exit(d, 0);
                return;
        }
        log_info("Draining: %u connections open", varlink_server_n_connections(m->varlink));
}

static int on_status(Daemon *d, char *buf, size_t n, void *userdata) {
        Manager *m = userdata;
        snprintf(buf, n, "%u active, %u deferred, %u held", m->n_messages[MESSAGE_ACTIVE],
                 m->n_messages[MESSAGE_DEFERRED], m->n_messages[MESSAGE_HELD]);
        return 0;
}

static int load_one(Spool *s, const char *id, json_object *envelope, uint64_t size, void *userdata) {
        Manager *m = userdata;
        int r = queue_add(m, id, envelope, size, NULL);
        if (r < 0)
                log_warning_errno(r, "%s: failed to load, ignoring: %m", id);
        return 0;
}

static void manager_free(Manager *m) {
        for (unsigned i = 0; i < m->n_monitors; i++)
                varlink_unref(m->monitors[i]);
        free(m->monitors);
        varlink_server_free(m->varlink);
        spool_free(m->spool);
        queue_free_all(m);
        daemon_free(m->daemon);
        config_free(m->config);
        sd_event_unref(m->event);
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "check", no_argument, NULL, 'c' },
                { "config", required_argument, NULL, 'C' },
                { "listen", required_argument, NULL, 'l' },
                { "spool", required_argument, NULL, 's' },
                {}
        };
        _cleanup_(manager_free) Manager m = {};
        const char *listen = NULL, *spool_dir = NULL;
        bool check = false;
        int c, r;

        m.config_path = config_default_path();
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        printf("Usage: halyard-queued [--check] [--config=PATH] [--listen=unix:/path] [--spool=DIR]\n");
                        return 0;
                case 'c':
                        check = true;
                        break;
                case 'C':
                        m.config_path = optarg;
                        break;
                case 'l':
                        listen = optarg;
                        break;
                case 's':
                        spool_dir = optarg;
                        break;
                default:
                        return 2;
                }

        log_setup("halyard-queued", LOG_TARGET_AUTO);
        r = manager_load_config(&m, m.config_path);
        if (check || r < 0) {
                if (r < 0)
                        log_error("Refusing to start with a bad configuration (%s)", m.config_path);
                return r < 0 ? 1 : 0;
        }

        r = sd_event_default(&m.event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m"), 1;
        sd_event_now(m.event, CLOCK_MONOTONIC, &m.started_usec);

        _cleanup_free_ char *default_spool = NULL;
        if (!spool_dir) {
                if (asprintf(&default_spool, "%s/spool", daemon_state_directory("/var/lib/halyard-queued")) < 0)
                        return log_error("Out of memory"), 1;
                spool_dir = default_spool;
        }
        if (mkdir(spool_dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(-errno, "Failed to create spool directory %s: %m", spool_dir), 1;
        r = spool_new(m.event, spool_dir, &m.spool);
        if (r < 0)
                return log_error_errno(r, "Failed to open the spool in %s: %m", spool_dir), 1;
        r = spool_load(m.spool, load_one, &m);
        if (r < 0)
                return log_error_errno(r, "Failed to load the spool in %s: %m", spool_dir), 1;
        SpoolStats ss;
        spool_get_stats(m.spool, &ss);
        if (ss.quarantined > 0)
                log_warning("%llu damaged or foreign spool files moved to quarantine", (unsigned long long) ss.quarantined);

        r = queued_varlink_setup(&m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up varlink: %m"), 1;

        static const DaemonCallbacks callbacks = { .drain = on_drain, .reload = on_reload, .status = on_status };
        r = daemon_new(m.event, &callbacks, &m, &m.daemon);
        if (r < 0)
                return log_error_errno(r, "Failed to set up service glue: %m"), 1;

        int fd = daemon_take_listen_fd(m.daemon, "varlink");
        if (fd >= 0)
                r = varlink_server_listen_fd(m.varlink, fd);
        else if (listen)
                r = varlink_server_listen_address(m.varlink, listen, 0666);
        else
                /* Started at boot before its socket? systemd passes the fd
                 * either way; without one there is no way to reach us. */
                return log_error("No listening socket: start through halyard-queued.socket or pass --listen=unix:/path"), 1;
        if (r < 0)
                return log_error_errno(r, "Failed to listen: %m"), 1;

        log_event(LOG_INFO, LOG_MESSAGE_SERVICE_STARTED, (const char *[]){ "HALYARD_SERVICE=queued", NULL },
                  "halyard-queued %s: %u messages in the spool", HALYARD_VERSION,
                  m.n_messages[MESSAGE_ACTIVE] + m.n_messages[MESSAGE_DEFERRED] + m.n_messages[MESSAGE_HELD]);
        (void) daemon_ready(m.daemon);
        r = sd_event_loop(m.event);
        return r < 0 ? 1 : r;
}
