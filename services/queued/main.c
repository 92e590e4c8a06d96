/* SPDX-License-Identifier: MIT */
/* halyard-queued: the durable outbound queue. Serves io.halyard.Queue on the
 * fd systemd names "varlink" (halyard-queued.socket:
 * /run/halyard/io.halyard.Queue) or on --listen=ADDRESS for development.
 * Keeps its spool in $STATE_DIRECTORY (or --spool=DIR). Reads [Queue] from
 * the halyard configuration; SIGHUP reloads it, SIGTERM drains.
 *
 * Secure delivery ([Queue]):
 *   TLS=no|may|require      the default for destinations without a TLSPolicy=
 *                           entry: no = plaintext; may (default) = DANE where
 *                           secure usable TLSA exist, else MTA-STS where
 *                           published, else opportunistic STARTTLS; require =
 *                           the same, with mandatory STARTTLS as the last step
 *   TLSPolicy=DOMAIN=LEVEL  per destination (".example.org" = its subdomains):
 *                           none, may, encrypt, verify (WebPKI), dane, dane-only
 *   TLSCAFile=PATH          CAs for WebPKI checks of MX certificates (MTA-STS,
 *                           verify); default the system store; read at start
 *   MtaStsCAFile=PATH       CAs for the MTA-STS policy host (HTTPS); default the
 *                           system store; read at start
 *   MtaStsPort=N            TEST ONLY: the policy host's HTTPS port (RFC 8461
 *                           fixes 443); read at start
 *   TlsRpt=ADDRESS|none     where TLS results go (oneway io.halyard.TlsRpt.Record),
 *                           default unix:/run/halyard/io.halyard.TlsRpt
 * The MTA-STS policy cache lives beside the spool (STATE_DIRECTORY/mta-sts). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "queued.h"

#define DEFAULT_MAX_MESSAGE_SIZE (50ULL * 1024 * 1024)

const ConfigKey queued_config_keys[] = {
        { "Queue", "MaxMessageSize", CONFIG_SIZE },
        { "Queue", "HostName", CONFIG_STRING },
        { "Queue", "Routes", CONFIG_LIST },
        { "Queue", "Relayhost", CONFIG_STRING },
        { "Queue", "TLS", CONFIG_STRING },
        { "Queue", "SmtpPort", CONFIG_UINT },
        { "Queue", "SmtpTimeout", CONFIG_DURATION },
        { "Queue", "MaxLifetime", CONFIG_DURATION },
        { "Queue", "DelayWarning", CONFIG_DURATION },
        { "Queue", "RetrySchedule", CONFIG_LIST },
        { "Queue", "MaxConnections", CONFIG_UINT },
        { "Queue", "MaxConnectionsPerDestination", CONFIG_UINT },
        { "Queue", "MaxRecipientsPerTransaction", CONFIG_UINT },
        { "Queue", "IPv4", CONFIG_BOOL },
        { "Queue", "IPv6", CONFIG_BOOL },
        { "Queue", "SourceAddresses", CONFIG_ADDRESSES },
        { "Queue", "SourceBySenderDomain", CONFIG_LIST },
        { "Queue", "TLSPolicy", CONFIG_LIST },
        { "Queue", "TLSCAFile", CONFIG_STRING },
        { "Queue", "TlsRpt", CONFIG_STRING },
        { "Queue", "MtaStsCAFile", CONFIG_STRING },
        { "Queue", "MtaStsPort", CONFIG_UINT },
        DNS_CONFIG_KEYS,
        {}
};

/* Settings that need more than a getter: checked here so that a bad value
 * refuses the whole configuration (at start and on reload). */
static int check_config(Config *c, const char *path) {
        char err[300] = "";
        _cleanup_(config_strv_freep) char **routes = NULL, **retry = NULL;
        const char *relayhost = NULL, *tls = NULL;
        int r;

        (void) config_get_list(c, "Queue", "Routes", &routes);
        (void) config_get_string(c, "Queue", "Relayhost", &relayhost);
        r = deliver_check_routes(routes, relayhost, err, sizeof err);
        if (r >= 0 && config_get_string(c, "Queue", "TLS", &tls) >= 0 && smtp_tls_policy_from_string(tls) < 0) {
                snprintf(err, sizeof err, "invalid TLS=%s (no, may or require)", tls);
                r = -EINVAL;
        }
        if (r >= 0 && config_get_list(c, "Queue", "RetrySchedule", &retry) >= 0)
                for (char **d = retry; *d; d++) {
                        uint64_t usec;
                        if (config_parse_duration(*d, &usec) < 0 || usec < 1000000) {
                                snprintf(err, sizeof err, "invalid RetrySchedule= entry \"%s\" (durations of 1s or more)", *d);
                                r = -EINVAL;
                                break;
                        }
                }
        _cleanup_(config_strv_freep) char **by_domain = NULL;
        if (r >= 0 && config_get_list(c, "Queue", "SourceBySenderDomain", &by_domain) >= 0)
                for (char **e = by_domain; *e; e++) {
                        const char *eq = strchr(*e, '=');
                        ConfigAddress a;
                        if (!eq || eq == *e || config_parse_address(eq + 1, &a) < 0 || a.prefixlen != (a.family == AF_INET ? 32U : 128U)) {
                                snprintf(err, sizeof err, "invalid SourceBySenderDomain= entry \"%s\" (domain=address)", *e);
                                r = -EINVAL;
                                break;
                        }
                }
        _cleanup_(config_strv_freep) char **tls_policy = NULL;
        const char *bad = NULL;
        if (r >= 0 && config_get_list(c, "Queue", "TLSPolicy", &tls_policy) >= 0 && tls_policy_check(tls_policy, &bad) < 0) {
                snprintf(err, sizeof err, "invalid TLSPolicy= entry \"%.100s\" (domain=none|may|encrypt|verify|dane|dane-only)", bad);
                r = -EINVAL;
        }
        uint64_t port;
        if (r >= 0 && config_get_uint(c, "Queue", "MtaStsPort", &port) >= 0 && (port == 0 || port > 65535)) {
                snprintf(err, sizeof err, "invalid MtaStsPort= (1-65535)");
                r = -EINVAL;
        }
        if (r < 0) {
                const char *file = path;
                unsigned line = 0;
                (void) config_get_location(c, "Queue", strstr(err, "RetrySchedule") ? "RetrySchedule" : strstr(err, "SourceBySenderDomain") ? "SourceBySenderDomain" : strstr(err, "TLSPolicy") ? "TLSPolicy" : strstr(err, "MtaStsPort") ? "MtaStsPort" : strstr(err, "TLS=") ? "TLS" : strstr(err, "Relayhost") ? "Relayhost" : "Routes", &file, &line);
                fprintf(stderr, "%s:%u: error: %s\n", file, line, err);
        }
        return r;
}

static void apply_delivery_config(Manager *m, Config *c) {
        uint64_t v, usec;
        bool b;
        const char *s;

        free(m->hostname);
        m->hostname = NULL;
        if (config_get_string(c, "Queue", "HostName", &s) >= 0)
                m->hostname = strdup(s);
        if (!m->hostname) {
                char h[256] = "localhost";
                (void) gethostname(h, sizeof h - 1);
                m->hostname = strdup(h);
        }
        config_strv_free(m->routes);
        m->routes = NULL;
        (void) config_get_list(c, "Queue", "Routes", &m->routes);
        free(m->relayhost);
        m->relayhost = config_get_string(c, "Queue", "Relayhost", &s) >= 0 && *s ? strdup(s) : NULL;
        m->tls_policy = SMTP_TLS_MAY;
        if (config_get_string(c, "Queue", "TLS", &s) >= 0)
                m->tls_policy = smtp_tls_policy_from_string(s);
        m->smtp_port = config_get_uint(c, "Queue", "SmtpPort", &v) >= 0 && v > 0 && v < 65536 ? (uint16_t) v : 25;
        memset(&m->smtp_timeouts, 0, sizeof m->smtp_timeouts);
        if (config_get_duration(c, "Queue", "SmtpTimeout", &usec) >= 0 && usec > 0) {
                uint64_t *t = (uint64_t *) &m->smtp_timeouts;
                for (size_t i = 0; i < sizeof m->smtp_timeouts / sizeof *t; i++)
                        t[i] = usec;
        }
        smtp_timeouts_fill(&m->smtp_timeouts);
        m->max_lifetime_sec = 5 * 24 * 3600;
        if (config_get_duration(c, "Queue", "MaxLifetime", &usec) >= 0)
                m->max_lifetime_sec = usec / 1000000;
        m->delay_warning_sec = 0;
        if (config_get_duration(c, "Queue", "DelayWarning", &usec) >= 0)
                m->delay_warning_sec = usec / 1000000;
        free(m->retry_sec);
        m->retry_sec = NULL;
        m->n_retry = 0;
        _cleanup_(config_strv_freep) char **retry = NULL;
        if (config_get_list(c, "Queue", "RetrySchedule", &retry) < 0) {
                static const char *const def[] = { "5min", "10min", "20min", "40min", "1h", "2h", "4h", NULL };
                retry = calloc(ELEMENTSOF(def), sizeof *retry);
                for (size_t i = 0; retry && def[i]; i++)
                        retry[i] = strdup(def[i]);
        }
        for (char **d = retry; d && *d; d++)
                m->n_retry++;
        m->retry_sec = calloc(m->n_retry ? m->n_retry : 1, sizeof *m->retry_sec);
        for (size_t i = 0; m->retry_sec && i < m->n_retry; i++)
                m->retry_sec[i] = config_parse_duration(retry[i], &usec) >= 0 ? usec / 1000000 : 300;
        if (!m->retry_sec)
                m->n_retry = 0;
        m->max_deliveries = config_get_uint(c, "Queue", "MaxConnections", &v) >= 0 && v > 0 ? (unsigned) MIN(v, 10000U) : 100;
        m->max_per_destination = config_get_uint(c, "Queue", "MaxConnectionsPerDestination", &v) >= 0 && v > 0 ? (unsigned) MIN(v, 1000U) : 10;
        m->max_rcpts_per_transaction = config_get_uint(c, "Queue", "MaxRecipientsPerTransaction", &v) >= 0 && v > 0 ? (size_t) MIN(v, (uint64_t) SMTP_RCPTS_MAX) : 100;
        free(m->source_pool);
        m->source_pool = NULL;
        m->n_source_pool = 0;
        (void) config_get_addresses(c, "Queue", "SourceAddresses", &m->source_pool, &m->n_source_pool);
        free(m->source_by_domain);
        config_strv_free(m->source_domains);
        m->source_by_domain = NULL;
        m->source_domains = NULL;
        m->n_source_by_domain = 0;
        _cleanup_(config_strv_freep) char **by_domain = NULL;
        if (config_get_list(c, "Queue", "SourceBySenderDomain", &by_domain) >= 0) {
                size_t n = 0;
                while (by_domain[n])
                        n++;
                m->source_by_domain = calloc(n ? n : 1, sizeof *m->source_by_domain);
                m->source_domains = calloc(n + 1, sizeof *m->source_domains);
                for (size_t i = 0; m->source_by_domain && m->source_domains && i < n; i++) {
                        char *eq = strchr(by_domain[i], '=');
                        *eq = 0;
                        (void) config_parse_address(eq + 1, &m->source_by_domain[i]);
                        m->source_domains[i] = strdup(by_domain[i]);
                        m->n_source_by_domain = i + 1;
                }
        }
        config_strv_free(m->tls_policy_entries);
        m->tls_policy_entries = NULL;
        (void) config_get_list(c, "Queue", "TLSPolicy", &m->tls_policy_entries);
        free(m->tlsrpt_address);
        m->tlsrpt_address = NULL;
        if (config_get_string(c, "Queue", "TlsRpt", &s) < 0)
                s = "unix:/run/halyard/io.halyard.TlsRpt";
        if (!streq_ptr(s, "none"))
                m->tlsrpt_address = strdup(s);
        m->tlsrpt_link = varlink_unref(m->tlsrpt_link); /* the address may have changed */
        /* Read at start only (credentials and the fetcher are shared by sessions in flight). */
        if (!m->mtasts) {
                free(m->tls_ca_file);
                free(m->mtasts_ca_file);
                m->tls_ca_file = config_get_string(c, "Queue", "TLSCAFile", &s) >= 0 && *s ? strdup(s) : NULL;
                m->mtasts_ca_file = config_get_string(c, "Queue", "MtaStsCAFile", &s) >= 0 && *s ? strdup(s) : NULL;
                m->mtasts_port = config_get_uint(c, "Queue", "MtaStsPort", &v) >= 0 ? (uint16_t) v : 0;
        }
        memset(&m->mx_config, 0, sizeof m->mx_config);
        if (config_get_bool(c, "Queue", "IPv4", &b) >= 0)
                m->mx_config.disable_ipv4 = !b;
        if (config_get_bool(c, "Queue", "IPv6", &b) >= 0)
                m->mx_config.disable_ipv6 = !b;
}

int manager_load_config(Manager *m, const char *path) {
        Config *c = NULL;
        int r = config_load(path, queued_config_keys, &c);
        if (c)
                config_print_diags(c, stderr);
        if (r >= 0)
                r = check_config(c, path);
        if (r < 0) {
                config_free(c);
                return r;
        }
        uint64_t max = DEFAULT_MAX_MESSAGE_SIZE;
        (void) config_get_size(c, "Queue", "MaxMessageSize", &max);
        m->max_message_size = max;
        apply_delivery_config(m, c);
        config_free(m->config);
        m->config = c;
        return 0;
}

static int resolver_setup(Manager *m) {
        return dns_resolver_new_from_config(m->event, m->config, &m->resolver);
}

/* The MTA-STS fetcher with its cache next to the spool. (The WebPKI trust
 * for MX certificates is loaded at its first use: deliver_webpki_creds().) */
static int secure_delivery_setup(Manager *m, const char *spool_dir) {
        _cleanup_free_ char *spool = strdup(spool_dir), *cache = NULL;
        if (!spool)
                return -ENOMEM;
        char *slash = strrchr(spool, '/');
        if (slash && slash != spool)
                *slash = 0;
        else if (slash)
                slash[1] = 0;
        else
                strcpy(spool, ".");
        if (asprintf(&cache, "%s/mta-sts", spool) < 0)
                return -ENOMEM;
        MtaStsConfig mc = {
                .cache_dir = cache,
                .ca_file = m->mtasts_ca_file,
                .port = m->mtasts_port,
        };
        return mtasts_context_new(m->event, m->resolver, &mc, &m->mtasts);
}

static int on_reload(Daemon *d, void *userdata) {
        Manager *m = userdata;
        return manager_load_config(m, m->config_path);
}

static void on_drain(Daemon *d, void *userdata) {
        Manager *m = userdata;
        /* New calls are refused; Enqueue calls in flight finish first (their
         * connections close after the answer), then we exit. */
        varlink_server_drain(m->varlink);
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
        deliver_stop(m);
        mtasts_context_free(m->mtasts);
        varlink_unref(m->tlsrpt_link);
        if (m->webpki_creds)
                gnutls_certificate_free_credentials(m->webpki_creds);
        config_strv_free(m->tls_policy_entries);
        free(m->tlsrpt_address);
        free(m->tls_ca_file);
        free(m->mtasts_ca_file);
        dns_resolver_free(m->resolver);
        free(m->hostname);
        free(m->relayhost);
        free(m->retry_sec);
        config_strv_free(m->routes);
        free(m->source_pool);
        free(m->source_by_domain);
        config_strv_free(m->source_domains);
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
        _cleanup_(manager_free) Manager m = {};
        DaemonCommandLine cl;
        int r;

        r = daemon_parse_command_line(argc, argv, "halyard-queued", "spool", &cl);
        if (r != 0)
                return r > 0 ? 0 : 2;
        m.config_path = cl.config_path;
        const char *spool_dir = cl.directory;

        log_setup("halyard-queued", LOG_TARGET_AUTO);
        r = manager_load_config(&m, m.config_path);
        if (cl.check || r < 0) {
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
        r = resolver_setup(&m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the DNS resolver: %m"), 1;
        r = secure_delivery_setup(&m, spool_dir);
        if (r < 0)
                return log_error_errno(r, "Failed to set up secure delivery: %m"), 1;
        r = deliver_setup(&m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up delivery: %m"), 1;

        static const DaemonCallbacks callbacks = { .drain = on_drain, .reload = on_reload, .status = on_status };
        r = daemon_new(m.event, &callbacks, &m, &m.daemon);
        if (r < 0)
                return log_error_errno(r, "Failed to set up service glue: %m"), 1;

        r = daemon_listen_varlink(m.daemon, m.varlink, cl.listen, "halyard-queued.socket");
        if (r < 0)
                return 1;

        log_event(LOG_INFO, LOG_MESSAGE_SERVICE_STARTED, (const char *[]){ "HALYARD_SERVICE=queued", NULL },
                  "halyard-queued %s: %u messages in the spool", HALYARD_VERSION,
                  m.n_messages[MESSAGE_ACTIVE] + m.n_messages[MESSAGE_DEFERRED] + m.n_messages[MESSAGE_HELD]);
        (void) daemon_ready(m.daemon);
        r = sd_event_loop(m.event);
        return r < 0 ? 1 : r;
}
