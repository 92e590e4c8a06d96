/* SPDX-License-Identifier: MIT */
/* halyard-tlsrptd: SMTP TLS reporting (RFC 8460). Serves io.halyard.TlsRpt
 * on the fd systemd names "varlink" (halyard-tlsrptd.socket:
 * /run/halyard/io.halyard.TlsRpt) or on --listen=ADDRESS for development:
 * halyard-queued sends one oneway Record per TLS outcome; SendReports
 * (halyard-tlsrptd.timer, daily, through halyardctl tlsrpt send) builds and
 * sends the reports. Keeps its journal and reports in $STATE_DIRECTORY (or
 * --state=DIR). Reads [TlsRpt] and [DNS] from the halyard configuration;
 * SIGHUP reloads it, SIGTERM writes what is queued and exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "tlsrptd.h"

const ConfigKey tlsrptd_config_keys[] = {
        { "TlsRpt", "OrganizationName", CONFIG_STRING },
        { "TlsRpt", "ContactInfo", CONFIG_STRING },
        { "TlsRpt", "Submitter", CONFIG_STRING },
        { "TlsRpt", "From", CONFIG_STRING },
        { "TlsRpt", "Sign", CONFIG_BOOL },
        { "TlsRpt", "SignSelector", CONFIG_STRING },
        { "TlsRpt", "SignDomain", CONFIG_STRING },
        { "TlsRpt", "MaxDomains", CONFIG_UINT },
        { "TlsRpt", "MaxFailureDetails", CONFIG_UINT },
        { "TlsRpt", "CommitInterval", CONFIG_DURATION },
        { "TlsRpt", "CompactSize", CONFIG_SIZE },
        { "TlsRpt", "QueueAddress", CONFIG_STRING },
        { "TlsRpt", "ArcAddress", CONFIG_STRING },
        { "TlsRpt", "HttpsTimeout", CONFIG_DURATION },
        { "TlsRpt", "RetryInitial", CONFIG_DURATION },
        { "TlsRpt", "RetryMax", CONFIG_DURATION },
        { "TlsRpt", "GiveUpAfter", CONFIG_DURATION },
        /* Tests only: the CA of a test https endpoint, and curl's
         * CONNECT_TO ("host:port:connect-host:connect-port") entries. */
        { "TlsRpt", "TestHttpsCAFile", CONFIG_STRING },
        { "TlsRpt", "TestHttpsConnectTo", CONFIG_LIST },
        DNS_CONFIG_KEYS,
        /* The host name other services use, the default submitter. */
        { "Queue", "HostName", CONFIG_STRING },
        {}
};

static void settings_done(Settings *s) {
        free(s->organization);
        free(s->contact);
        free(s->submitter);
        free(s->from);
        free(s->sign_selector);
        free(s->sign_domain);
        free(s->queue_address);
        free(s->arc_address);
        free(s->test_ca_file);
        config_strv_free(s->test_connect_to);
        *s = (Settings) {};
}

static char *string_or(Config *c, const char *section, const char *key, const char *def) {
        const char *s;
        return strdup(config_get_string(c, section, key, &s) >= 0 && *s ? s : def);
}

static int settings_from_config(Config *c, Settings *ret) {
        Settings s = {};
        char host[256] = "localhost", buf[600];
        uint64_t v;
        const char *str;

        (void) gethostname(host, sizeof host - 1);
        if (config_get_string(c, "Queue", "HostName", &str) >= 0 && *str)
                snprintf(host, sizeof host, "%s", str);
        s.submitter = string_or(c, "TlsRpt", "Submitter", host);
        s.organization = string_or(c, "TlsRpt", "OrganizationName", s.submitter ? s.submitter : host);
        snprintf(buf, sizeof buf, "postmaster@%s", s.submitter ? s.submitter : host);
        s.contact = string_or(c, "TlsRpt", "ContactInfo", buf);
        snprintf(buf, sizeof buf, "noreply-tlsrpt@%s", s.submitter ? s.submitter : host);
        s.from = string_or(c, "TlsRpt", "From", buf);
        s.sign = false;
        (void) config_get_bool(c, "TlsRpt", "Sign", &s.sign);
        if (config_get_string(c, "TlsRpt", "SignSelector", &str) >= 0 && *str)
                s.sign_selector = strdup(str);
        /* d= aligned with the From: domain, which is what DMARC looks at. */
        const char *at = s.from ? strrchr(s.from, '@') : NULL;
        s.sign_domain = string_or(c, "TlsRpt", "SignDomain", at && at[1] ? at + 1 : host);
        s.max_domains = config_get_uint(c, "TlsRpt", "MaxDomains", &v) >= 0 && v > 0 ? (size_t) MIN(v, 1000000U)
                                                                                     : TLSRPT_DEFAULT_MAX_DOMAINS;
        s.max_details = config_get_uint(c, "TlsRpt", "MaxFailureDetails", &v) >= 0 ? (size_t) MIN(v, 100000U)
                                                                                    : TLSRPT_DEFAULT_MAX_DETAILS;
        s.commit_usec = 200000;
        if (config_get_duration(c, "TlsRpt", "CommitInterval", &v) >= 0)
                s.commit_usec = MAX(v, 1000U);
        s.compact_size = 4ULL * 1024 * 1024;
        if (config_get_size(c, "TlsRpt", "CompactSize", &v) >= 0)
                s.compact_size = MAX(v, 4096U);
        s.queue_address = string_or(c, "TlsRpt", "QueueAddress", "unix:" HALYARD_RUNDIR "/io.halyard.Queue");
        s.arc_address = string_or(c, "TlsRpt", "ArcAddress", "unix:" HALYARD_RUNDIR "/io.halyard.Arc");
        s.https_timeout_usec = 60ULL * 1000000;
        if (config_get_duration(c, "TlsRpt", "HttpsTimeout", &v) >= 0 && v >= 1000000)
                s.https_timeout_usec = v;
        s.retry_initial_usec = 60ULL * 1000000;
        if (config_get_duration(c, "TlsRpt", "RetryInitial", &v) >= 0 && v >= 1000000)
                s.retry_initial_usec = v;
        s.retry_max_usec = 3600ULL * 1000000;
        if (config_get_duration(c, "TlsRpt", "RetryMax", &v) >= 0 && v >= 1000000)
                s.retry_max_usec = v;
        s.retry_max_usec = MAX(s.retry_max_usec, s.retry_initial_usec);
        s.give_up_usec = 86400ULL * 1000000;
        if (config_get_duration(c, "TlsRpt", "GiveUpAfter", &v) >= 0 && v >= 1000000)
                s.give_up_usec = v;
        if (config_get_string(c, "TlsRpt", "TestHttpsCAFile", &str) >= 0 && *str)
                s.test_ca_file = strdup(str);
        (void) config_get_list(c, "TlsRpt", "TestHttpsConnectTo", &s.test_connect_to);
        if (!s.submitter || !s.organization || !s.contact || !s.from || !s.queue_address || !s.arc_address ||
            !s.sign_domain) {
                settings_done(&s);
                return -ENOMEM;
        }
        *ret = s;
        return 0;
}

/* Values that need more than a getter; a bad one refuses the config. */
static int check_config(Config *c, const char *path) {
        const char *s, *key = NULL;
        char err[300] = "";
        if (config_get_string(c, "TlsRpt", "Submitter", &s) >= 0 && (!*s || strpbrk(s, " \t@!/<>\""))) {
                key = "Submitter";
                snprintf(err, sizeof err, "invalid Submitter=%s (a domain name)", s);
        } else if (config_get_string(c, "TlsRpt", "From", &s) >= 0 && (!strchr(s, '@') || strpbrk(s, " \t<>\""))) {
                key = "From";
                snprintf(err, sizeof err, "invalid From=%s (an address local@domain)", s);
        } else if (config_get_string(c, "TlsRpt", "SignDomain", &s) >= 0 && (!*s || strpbrk(s, " \t@!/<>\""))) {
                key = "SignDomain";
                snprintf(err, sizeof err, "invalid SignDomain=%s (a domain name)", s);
        } else if (config_get_string(c, "TlsRpt", "ContactInfo", &s) >= 0 && !*s) {
                key = "ContactInfo";
                snprintf(err, sizeof err, "ContactInfo= must not be empty");
        }
        if (!key)
                return 0;
        const char *file = path;
        unsigned line = 0;
        (void) config_get_location(c, "TlsRpt", key, &file, &line);
        fprintf(stderr, "%s:%u: error: %s\n", file, line, err);
        return -EINVAL;
}

static int manager_load_config(Manager *m, const char *path) {
        Config *c = NULL;
        Settings s;
        int r = config_load(path, tlsrptd_config_keys, &c);
        if (c)
                config_print_diags(c, stderr);
        if (r >= 0)
                r = check_config(c, path);
        if (r >= 0)
                r = settings_from_config(c, &s);
        if (r < 0) {
                config_free(c);
                return r;
        }
        settings_done(&m->settings);
        m->settings = s;
        if (m->store) {
                m->store->max_domains = s.max_domains;
                m->store->max_details = s.max_details;
        }
        config_free(m->config);
        m->config = c;
        return 0;
}

static int resolver_setup(Manager *m) {
        return dns_resolver_new_from_config(m->event, m->config, &m->resolver);
}

static int on_reload(Daemon *d, void *userdata) {
        Manager *m = userdata;
        return manager_load_config(m, m->config_path);
}

static void on_drain(Daemon *d, void *userdata) {
        Manager *m = userdata;
        varlink_server_stop_listening(m->varlink);
        /* What was recorded is written; deliveries in flight resume from
         * reports.json at the next start. */
        (void) journal_commit(m);
        (void) daemon_exit(d, 0);
}

static int on_status(Daemon *d, char *buf, size_t n, void *userdata) {
        Manager *m = userdata;
        TlsRptDay *day = tlsrpt_store_get_day(m->store, manager_today());
        snprintf(buf, n, "%zu domains, %llu sessions today", day ? day->n_domains : 0,
                 (unsigned long long) (day ? day->sessions : 0));
        return 0;
}

static void manager_free(Manager *m) {
        if (m->n_journals)
                (void) journal_commit(m);
        reports_free_all(m);
        https_free(m);
        dns_resolver_free(m->resolver);
        journal_close_all(m);
        tlsrpt_store_free(m->store);
        varlink_server_free(m->varlink);
        daemon_free(m->daemon);
        settings_done(&m->settings);
        config_free(m->config);
        free(m->state_dir);
        sd_event_unref(m->event);
}

int main(int argc, char **argv) {
        _cleanup_(manager_free) Manager m = {};
        DaemonCommandLine cl;
        int r;

        r = daemon_parse_command_line(argc, argv, "halyard-tlsrptd", "state", &cl);
        if (r != 0)
                return r > 0 ? 0 : 2;
        m.config_path = cl.config_path;
        const char *state = cl.directory;

        log_setup("halyard-tlsrptd", LOG_TARGET_AUTO);
        r = manager_load_config(&m, m.config_path);
        if (cl.check || r < 0) {
                if (r < 0)
                        log_error("Refusing to start with a bad configuration (%s)", m.config_path);
                return r < 0 ? 1 : 0;
        }
        if (m.settings.sign)
                log_info("Sign=yes: report mail is DKIM-signed for %s through %s (and waits while it does not answer)",
                         m.settings.sign_domain, m.settings.arc_address);

        r = sd_event_default(&m.event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m"), 1;
        sd_event_now(m.event, CLOCK_MONOTONIC, &m.started_usec);
        /* Signals are blocked here, before libunbound's resolver thread and
         * libcurl exist: the threads inherit the mask, so SIGTERM always
         * reaches the event loop. */
        static const DaemonCallbacks callbacks = { .drain = on_drain, .reload = on_reload, .status = on_status };
        r = daemon_new(m.event, &callbacks, &m, &m.daemon);
        if (r < 0)
                return log_error_errno(r, "Failed to set up service glue: %m"), 1;

        m.state_dir = strdup(state ? state : daemon_state_directory("/var/lib/halyard-tlsrptd"));
        if (!m.state_dir)
                return log_error("Out of memory"), 1;
        if (mkdir(m.state_dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(-errno, "Failed to create %s: %m", m.state_dir), 1;
        r = tlsrpt_store_new(m.settings.max_domains, m.settings.max_details, &m.store);
        if (r < 0)
                return log_error_errno(r, "Failed to set up: %m"), 1;
        r = resolver_setup(&m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the DNS resolver: %m"), 1;
        r = https_setup(&m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the HTTP client: %m"), 1;
        /* Reports first: they say which days were reported already. */
        r = reports_load(&m);
        if (r < 0)
                return log_error_errno(r, "Failed to load the reports in %s: %m", m.state_dir), 1;
        r = journal_load(&m);
        if (r < 0)
                return log_error_errno(r, "Failed to load the results in %s: %m", m.state_dir), 1;

        r = tlsrptd_varlink_setup(&m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up varlink: %m"), 1;
        r = daemon_listen_varlink(m.daemon, m.varlink, cl.listen, "halyard-tlsrptd.socket");
        if (r < 0)
                return 1;

        TlsRptDay *today = tlsrpt_store_get_day(m.store, manager_today());
        log_event(LOG_INFO, LOG_MESSAGE_SERVICE_STARTED, (const char *[]){ "HALYARD_SERVICE=tlsrptd", NULL },
                  "halyard-tlsrptd %s: %llu results today, %zu days to report", HALYARD_VERSION,
                  (unsigned long long) (today ? today->sessions : 0), m.store->n_days - (today ? 1 : 0));
        (void) daemon_ready(m.daemon);
        r = sd_event_loop(m.event);
        return r < 0 ? 1 : r;
}
