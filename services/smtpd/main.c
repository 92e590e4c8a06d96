/* SPDX-License-Identifier: MIT */
/* halyard-smtpd: the ESMTP intake. Listens on the fds systemd names smtp,
 * submission and submissions (implicit TLS), serves io.halyard.Smtpd on the
 * one named varlink; for development --listen-smtp=127.0.0.1:2525 and
 * friends do the same. Reads [Smtpd] from the halyard configuration; TLS
 * certificates and keys come as systemd credentials. SIGTERM drains. */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "smtpd-policy.h"
#include "smtpd-spamd.h"
#include "smtpd.h"

#define DEFAULT_MAX_MESSAGE_SIZE (50ULL * 1024 * 1024)
#define DEFAULT_QUEUE_ADDRESS "unix:/run/halyard/io.halyard.Queue"
#define DEFAULT_TLS_CERTIFICATE "smtpd-tls.crt"
#define DEFAULT_TLS_KEY "smtpd-tls.key"
#define DEFAULT_PASSWORD_FILE "smtpd-passwd"

static const ConfigKey smtpd_config_keys[] = {
        { "Smtpd", "HostName", CONFIG_STRING },
        { "Smtpd", "LocalDomains", CONFIG_LIST },
        { "Smtpd", "RelayDomains", CONFIG_LIST },
        { "Smtpd", "PermitNetworks", CONFIG_ADDRESSES },
        { "Smtpd", "MaxMessageSize", CONFIG_SIZE },
        { "Smtpd", "MaxRecipients", CONFIG_UINT },
        { "Smtpd", "MaxConnections", CONFIG_UINT },
        { "Smtpd", "MaxConnectionsPerAddress", CONFIG_UINT },
        { "Smtpd", "MaxErrors", CONFIG_UINT },
        { "Smtpd", "Timeout", CONFIG_DURATION },
        { "Smtpd", "SessionTimeout", CONFIG_DURATION },
        { "Smtpd", "MaxCommands", CONFIG_UINT },
        /* reject (550 5.6.11, the default) or normalize (to CRLF). */
        { "Smtpd", "BareNewline", CONFIG_STRING },
        /* A credential name: "user:crypt-hash" lines. */
        { "Smtpd", "AuthPasswordFile", CONFIG_STRING },
        { "Smtpd", "AuthPlaintext", CONFIG_BOOL },
        { "Smtpd", "AuthMaxFailures", CONFIG_UINT },
        { "Smtpd", "AuthFailureWindow", CONFIG_DURATION },
        { "Smtpd", "ReceivedAuthUser", CONFIG_BOOL },
        /* A credential name: PEM CAs; client certificates are then asked for. */
        { "Smtpd", "TLSClientCA", CONFIG_STRING },
        /* Credential names (no paths), pairwise: the n-th key is the n-th
         * certificate's. */
        { "Smtpd", "TLSCertificates", CONFIG_LIST },
        { "Smtpd", "TLSKeys", CONFIG_LIST },
        { "Smtpd", "TLSPriority", CONFIG_STRING },
        { "Smtpd", "Queue", CONFIG_STRING },
        /* The HPL entry file; unset: the built-in behaviour only. */
        { "Smtpd", "Policy", CONFIG_STRING },
        { "Smtpd", "PolicyTimeout", CONFIG_DURATION },
        { "Smtpd", "PolicyStepBudget", CONFIG_UINT },
        /* HOST:PORT or unix:/path of the Redis that rate(..., [shared => true]) uses. */
        { "Smtpd", "RateRedis", CONFIG_STRING },
        /* IP:PORT, [IPv6]:PORT or /path (unix:/path) of the spamd ScanSA() asks. */
        { "Smtpd", "SpamdAddress", CONFIG_STRING },
        DNS_CONFIG_KEYS,
        SMTPD_ARC_CONFIG_KEYS,
        {}
};

static void settings_done(SmtpdSettings *c) {
        free(c->hostname);
        config_strv_free(c->local_domains);
        config_strv_free(c->relay_domains);
        free(c->permit);
        free(c->queue_address);
        free(c->passwd_name);
        free(c->policy_path);
        smtpd_arc_settings_done(&c->arc);
        free(c->spamd_address);
        *c = (SmtpdSettings) {};
}

static void tls_warn(const char *message, void *userdata) {
        log_warning("TLS: %s", message);
}

/* Loads the certificate/key pairs named in the config (or the default
 * credential names, when present). *ret stays NULL when none is there. */
static int load_tls(Config *c, SmtpdTlsContext **ret) {
        _cleanup_(config_strv_freep) char **certs = NULL, **keys = NULL;
        _cleanup_free_ char *client_ca = NULL;
        const char *priority = NULL, *ca_name = NULL;
        bool explicit = config_get_list(c, "Smtpd", "TLSCertificates", &certs) >= 0;
        (void) config_get_list(c, "Smtpd", "TLSKeys", &keys);
        (void) config_get_string(c, "Smtpd", "TLSPriority", &priority);
        size_t n = 0, nk = 0;
        while (certs && certs[n])
                n++;
        while (keys && keys[nk])
                nk++;
        if (explicit && n != nk)
                return log_error_errno(-EINVAL, "TLSCertificates= and TLSKeys= must name as many credentials"), -EINVAL;

        char *paths[32] = {};
        SmtpdTlsKeyPair pairs[16] = {};
        size_t np = 0;
        int r = 0;
        if (!explicit) {
                static const char *const def[] = { DEFAULT_TLS_CERTIFICATE, DEFAULT_TLS_KEY };
                if (daemon_credential_path(def[0], &paths[0]) < 0 || daemon_credential_path(def[1], &paths[1]) < 0) {
                        free(paths[0]);
                        free(paths[1]);
                        *ret = NULL;
                        return 0;
                }
                pairs[0] = (SmtpdTlsKeyPair) { paths[0], paths[1] };
                np = 1;
        } else {
                if (n > ELEMENTSOF(pairs))
                        return log_error_errno(-E2BIG, "Too many TLS certificates (at most %zu)", ELEMENTSOF(pairs)), -E2BIG;
                for (size_t i = 0; i < n; i++) {
                        r = daemon_credential_path(certs[i], &paths[2 * i]);
                        if (r < 0) {
                                log_error_errno(r, "TLS certificate credential %s: %m", certs[i]);
                                goto out;
                        }
                        r = daemon_credential_path(keys[i], &paths[2 * i + 1]);
                        if (r < 0) {
                                log_error_errno(r, "TLS key credential %s: %m", keys[i]);
                                goto out;
                        }
                        pairs[i] = (SmtpdTlsKeyPair) { paths[2 * i], paths[2 * i + 1] };
                }
                np = n;
        }
        if (config_get_string(c, "Smtpd", "TLSClientCA", &ca_name) >= 0 && *ca_name) {
                r = daemon_credential_path(ca_name, &client_ca);
                if (r < 0) {
                        log_error_errno(r, "TLS client CA credential %s: %m", ca_name);
                        goto out;
                }
        }
        if (np > 0) {
                SmtpdTlsConfig tc = { .pairs = pairs, .n_pairs = np, .priority = priority, .warn = tls_warn,
                                      .request_client_cert = client_ca != NULL, .client_ca_file = client_ca };
                char err[512] = "";
                r = smtpd_tls_context_new(&tc, ret, err, sizeof err);
                if (r < 0)
                        log_error_errno(r, "TLS: %s", err);
        }
out:
        for (size_t i = 0; i < ELEMENTSOF(paths); i++)
                free(paths[i]);
        return r;
}

static void passwd_log(AuthLogLevel level, const char *msg, void *userdata) {
        if (level == AUTH_LOG_ERROR)
                log_error("%s", msg);
        else
                log_warning("%s", msg);
}

/* The password file credential: the configured one must exist; the default
 * name is optional. *ret stays NULL without one. */
static int load_passwd(Config *c, bool check, AuthPasswd **ret) {
        const char *name = NULL;
        bool explicit = config_get_string(c, "Smtpd", "AuthPasswordFile", &name) >= 0 && *name;
        char *buf = NULL;
        size_t size = 0;
        int r = daemon_read_credential(explicit ? name : DEFAULT_PASSWORD_FILE, AUTH_PASSWD_SIZE_MAX, &buf, &size);
        if (r < 0) {
                *ret = NULL;
                if (!explicit && (r == -ENOENT || r == -ENXIO))
                        return 0;
                /* systemd lets ExecReload= (--check) see the credentials
                 * directory but not read the main process's copies; the
                 * service checks the file itself when SIGHUP follows. */
                if (check && r == -EACCES) {
                        log_warning("Password file credential %s: not readable here, checked by the service on reload",
                                    explicit ? name : DEFAULT_PASSWORD_FILE);
                        return 0;
                }
                return log_error_errno(r, "Password file credential %s: %m", explicit ? name : DEFAULT_PASSWORD_FILE);
        }
        r = auth_passwd_parse(explicit ? name : DEFAULT_PASSWORD_FILE, buf, size, passwd_log, NULL, ret);
        explicit_bzero(buf, size);
        free(buf);
        if (r < 0)
                return log_error_errno(r, "Password file credential %s refused", explicit ? name : DEFAULT_PASSWORD_FILE);
        return 0;
}

static int load_config(Manager *m, bool check) {
        Config *c = NULL;
        SmtpdSettings n = {};
        SmtpdTlsContext *tls = NULL;
        AuthPasswd *passwd = NULL;
        PolicyGeneration *policy = NULL;
        bool b;
        uint64_t v;
        const char *str;

        int r = config_load(m->config_path, smtpd_config_keys, &c);
        if (c)
                config_print_diags(c, stderr);
        if (r < 0)
                goto out;

        if (config_get_string(c, "Smtpd", "HostName", &str) >= 0 && *str)
                n.hostname = strdup(str);
        else {
                char h[256] = "localhost";
                (void) gethostname(h, sizeof h - 1);
                n.hostname = strdup(h);
        }
        (void) config_get_list(c, "Smtpd", "LocalDomains", &n.local_domains);
        (void) config_get_list(c, "Smtpd", "RelayDomains", &n.relay_domains);
        (void) config_get_addresses(c, "Smtpd", "PermitNetworks", &n.permit, &n.n_permit);
        n.max_message_size = DEFAULT_MAX_MESSAGE_SIZE;
        (void) config_get_size(c, "Smtpd", "MaxMessageSize", &n.max_message_size);
        n.max_recipients = config_get_uint(c, "Smtpd", "MaxRecipients", &v) >= 0 && v > 0 ? (unsigned) MIN(v, 100000U) : 1000;
        n.max_connections = config_get_uint(c, "Smtpd", "MaxConnections", &v) >= 0 && v > 0 ? (unsigned) MIN(v, 1000000U) : 10000;
        n.max_per_address = config_get_uint(c, "Smtpd", "MaxConnectionsPerAddress", &v) >= 0 && v > 0 ? (unsigned) MIN(v, 1000000U) : 50;
        n.max_errors = config_get_uint(c, "Smtpd", "MaxErrors", &v) >= 0 && v > 0 ? (unsigned) MIN(v, 10000U) : 10;
        n.max_commands = config_get_uint(c, "Smtpd", "MaxCommands", &v) >= 0 && v > 0 ? (unsigned) MIN(v, 10000000U) : 10000;
        n.timeout_usec = 300ULL * 1000000ULL;
        if (config_get_duration(c, "Smtpd", "Timeout", &v) >= 0 && v >= 1000000ULL)
                n.timeout_usec = v;
        n.session_timeout_usec = 3600ULL * 1000000ULL;
        if (config_get_duration(c, "Smtpd", "SessionTimeout", &v) >= 0 && v >= 1000000ULL)
                n.session_timeout_usec = v;
        n.auth_plaintext = config_get_bool(c, "Smtpd", "AuthPlaintext", &b) >= 0 && b;
        if (config_get_string(c, "Smtpd", "BareNewline", &str) >= 0) {
                if (strcmp(str, "normalize") == 0)
                        n.normalize_bare_newline = true;
                else if (strcmp(str, "reject") != 0) {
                        const char *file = m->config_path;
                        unsigned line = 0;
                        (void) config_get_location(c, "Smtpd", "BareNewline", &file, &line);
                        r = log_error_errno(-EINVAL, "%s:%u: error: BareNewline= must be reject or normalize, not \"%s\"",
                                            file, line, str);
                        goto out;
                }
        }
        n.received_auth_user = config_get_bool(c, "Smtpd", "ReceivedAuthUser", &b) >= 0 && b;
        if (config_get_uint(c, "Smtpd", "AuthMaxFailures", &v) >= 0 && v > 0)
                n.auth_throttle.max_failures = (unsigned) MIN(v, 100000U);
        if (config_get_duration(c, "Smtpd", "AuthFailureWindow", &v) >= 0 && v >= 1000000ULL)
                n.auth_throttle.window_usec = v;
        n.queue_address = strdup(config_get_string(c, "Smtpd", "Queue", &str) >= 0 && *str ? str : DEFAULT_QUEUE_ADDRESS);
        if (!n.hostname || !n.queue_address) {
                r = -ENOMEM;
                goto out;
        }
        r = smtpd_arc_settings_load(c, m->config_path, n.hostname, &n.arc);
        if (r < 0)
                goto out;
        r = load_tls(c, &tls);
        if (r < 0)
                goto out;
        n.tls_client_ca = config_get_string(c, "Smtpd", "TLSClientCA", &str) >= 0 && *str;
        if (n.tls_client_ca && !tls) {
                r = log_error_errno(-EINVAL, "TLSClientCA= needs a TLS certificate");
                goto out;
        }
        r = load_passwd(c, check, &passwd);
        if (r < 0)
                goto out;
        n.passwd_name = strdup(config_get_string(c, "Smtpd", "AuthPasswordFile", &str) >= 0 && *str ? str
                                                                                          : DEFAULT_PASSWORD_FILE);
        if (!n.passwd_name) {
                r = -ENOMEM;
                goto out;
        }
        n.policy_timeout_usec = 30ULL * 1000000ULL;
        if (config_get_duration(c, "Smtpd", "PolicyTimeout", &v) >= 0 && v >= 100000ULL)
                n.policy_timeout_usec = v;
        n.policy_step_budget = config_get_uint(c, "Smtpd", "PolicyStepBudget", &v) >= 0 && v > 0 ? v : 0;
        if (config_get_string(c, "Smtpd", "SpamdAddress", &str) >= 0 && *str) {
                struct sockaddr_storage sa;
                socklen_t salen;
                if (spamd_address_parse(str, 0, &sa, &salen) < 0) {
                        const char *file = m->config_path;
                        unsigned line = 0;
                        (void) config_get_location(c, "Smtpd", "SpamdAddress", &file, &line);
                        r = log_error_errno(-EINVAL, "%s:%u: error: SpamdAddress=%s: expected IP:PORT, [IPv6]:PORT or /path",
                                            file, line, str);
                        goto out;
                }
                if (!(n.spamd_address = strdup(str))) {
                        r = -ENOMEM;
                        goto out;
                }
        }
        if (config_get_string(c, "Smtpd", "Policy", &str) >= 0 && *str) {
                n.policy_path = strdup(str);
                if (!n.policy_path) {
                        r = -ENOMEM;
                        goto out;
                }
                /* A policy that does not load is refused like a bad config:
                 * at start, and on reload (the old one keeps serving). */
                r = smtpd_policy_load(n.policy_path, &policy);
                if (r < 0) {
                        log_error("Policy %s refused", n.policy_path);
                        goto out;
                }
                if (!check && !m->redis && config_get_string(c, "Smtpd", "RateRedis", &str) >= 0 && *str) {
                        r = smtpd_redis_new(m->event, str, &m->redis);
                        if (r < 0) {
                                log_error_errno(r, "RateRedis=%s: %m", str);
                                goto out;
                        }
                }
                if (!check && !m->resolver) {
                        r = dns_resolver_new_from_config(m->event, c, &m->resolver);
                        if (r < 0) {
                                log_error_errno(r, "Failed to set up DNS for the policy: %m");
                                goto out;
                        }
                }
        }
        if (!check) {
                /* A new throttle only when its settings changed: a reload must
                 * not forgive the failures counted so far. */
                if (!m->auth_throttle || memcmp(&n.auth_throttle, &m->settings.auth_throttle, sizeof n.auth_throttle) != 0) {
                        AuthThrottle *t = NULL;
                        r = auth_throttle_new(&n.auth_throttle, NULL, NULL, &t);
                        if (r < 0)
                                goto out;
                        auth_throttle_free(m->auth_throttle);
                        m->auth_throttle = t;
                }
                settings_done(&m->settings);
                m->settings = n;
                n = (SmtpdSettings) {};
                smtpd_tls_context_unref(m->tls);
                m->tls = TAKE_PTR(tls);
                queue_pool_flush(m); /* the queue's address may have changed */
                auth_passwd_free(m->passwd);
                m->passwd = TAKE_PTR(passwd);
                /* Transactions under way finish on the generation they started with. */
                if (policy)
                        log_info("Policy %s loaded", m->settings.policy_path);
                else if (m->policy)
                        log_info("Policy removed: the built-in behaviour applies");
                policy_generation_unref(m->policy);
                m->policy = TAKE_PTR(policy);
        }
out:
        policy_generation_unref(policy);
        settings_done(&n);
        auth_passwd_free(passwd);
        smtpd_tls_context_unref(tls);
        config_free(c);
        return r;
}

static int on_reload(Daemon *d, void *userdata) {
        return load_config(userdata, false);
}

static void on_drain(Daemon *d, void *userdata) {
        Manager *m = userdata;
        varlink_server_drain(m->varlink);
        queue_pool_flush(m);
        log_info("Draining: %u sessions open", m->n_sessions);
        sessions_drain(m);
}

static int on_status(Daemon *d, char *buf, size_t n, void *userdata) {
        Manager *m = userdata;
        snprintf(buf, n, "%u sessions, %llu messages accepted", m->n_sessions,
                 (unsigned long long) m->stats.total.v[COUNT_ACCEPTED]);
        return 0;
}

static int on_ticket_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        if (m->tls)
                (void) smtpd_tls_context_rotate_ticket_key(m->tls);
        (void) sd_event_source_set_time(s, usec + 12ULL * 3600ULL * 1000000ULL);
        return 0;
}

/* "127.0.0.1:2525", "[::1]:2525" or ":2525" (all addresses). */
static int listen_tcp(const char *spec) {
        struct sockaddr_storage ss = {};
        socklen_t len;
        const char *colon = strrchr(spec, ':');
        if (!colon)
                return -EINVAL;
        char *end;
        unsigned long port = strtoul(colon + 1, &end, 10);
        if (*end || port == 0 || port > 65535)
                return -EINVAL;
        char host[INET6_ADDRSTRLEN + 2] = "";
        size_t hl = (size_t) (colon - spec);
        if (hl >= sizeof host)
                return -EINVAL;
        memcpy(host, spec, hl);
        if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
                host[hl - 1] = 0;
                memmove(host, host + 1, hl - 1);
        }
        struct sockaddr_in *a4 = (struct sockaddr_in *) &ss;
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *) &ss;
        if (host[0] && inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
                a4->sin_family = AF_INET;
                a4->sin_port = htons((uint16_t) port);
                len = sizeof *a4;
        } else if (!host[0] || inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
                a6->sin6_family = AF_INET6;
                a6->sin6_port = htons((uint16_t) port);
                len = sizeof *a6;
        } else
                return -EINVAL;
        int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        int one = 1;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *) &ss, len) < 0 || listen(fd, 1024) < 0) {
                int r = -errno;
                safe_close(fd);
                return r;
        }
        return fd;
}

static void manager_free(Manager *m) {
        sessions_free_all(m);
        queue_pool_flush(m);
        for (unsigned k = 0; k < _LISTENER_MAX; k++)
                listener_stop(&m->listeners[k]);
        varlink_server_free(m->varlink);
        policy_generation_unref(m->policy);
        policy_cache_free(m->policy_cache);
        smtpd_rate_free(m->rate);
        smtpd_redis_free(m->redis);
        http_client_free(m->http);
        dns_resolver_free(m->resolver);
        auth_verifier_free(m->verifier);
        auth_throttle_free(m->auth_throttle);
        auth_passwd_free(m->passwd);
        smtpd_tls_context_unref(m->tls);
        settings_done(&m->settings);
        daemon_free(m->daemon);
        sd_event_unref(m->event);
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "check", no_argument, NULL, 'c' },
                { "config", required_argument, NULL, 'C' },
                { "listen-smtp", required_argument, NULL, '1' },
                { "listen-submission", required_argument, NULL, '2' },
                { "listen-submissions", required_argument, NULL, '3' },
                { "listen-varlink", required_argument, NULL, 'v' },
                {}
        };
        _cleanup_(manager_free) Manager m = {};
        const char *listen[_LISTENER_MAX] = {}, *listen_varlink = NULL;
        bool check = false;
        int c, r;

        for (unsigned k = 0; k < _LISTENER_MAX; k++)
                m.listeners[k].fd = -1;
        m.config_path = config_default_path();
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        printf("Usage: halyard-smtpd [--check] [--config=PATH] [--listen-smtp=ADDR:PORT]\n"
                               "       [--listen-submission=ADDR:PORT] [--listen-submissions=ADDR:PORT]\n"
                               "       [--listen-varlink=unix:/path]\n");
                        return 0;
                case 'c':
                        check = true;
                        break;
                case 'C':
                        m.config_path = optarg;
                        break;
                case '1':
                case '2':
                case '3':
                        listen[c - '1'] = optarg;
                        break;
                case 'v':
                        listen_varlink = optarg;
                        break;
                default:
                        return 2;
                }

        log_setup("halyard-smtpd", LOG_TARGET_AUTO);
        r = sd_event_default(&m.event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m"), 1;
        r = policy_cache_new(&m.policy_cache);
        if (r >= 0)
                r = smtpd_rate_new(0, &m.rate);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate: %m"), 1;
        r = load_config(&m, check);
        if (check || r < 0) {
                if (r < 0)
                        log_error("Refusing to start with a bad configuration (%s)", m.config_path);
                return r < 0 ? 1 : 0;
        }
        if (getrandom(&m.id_base, sizeof m.id_base, 0) != sizeof m.id_base)
                m.id_base = (uint64_t) getpid() << 32;

        r = auth_verifier_new(m.event, 2, 0, &m.verifier);
        if (r < 0)
                return log_error_errno(r, "Failed to start the password verifier: %m"), 1;
        r = smtpd_varlink_setup(&m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up varlink: %m"), 1;

        static const DaemonCallbacks callbacks = { .drain = on_drain, .reload = on_reload, .status = on_status };
        r = daemon_new(m.event, &callbacks, &m, &m.daemon);
        if (r < 0)
                return log_error_errno(r, "Failed to set up service glue: %m"), 1;

        unsigned n_listeners = 0;
        for (unsigned k = 0; k < _LISTENER_MAX; k++) {
                const char *name = listener_kind_to_string(k);
                int fd = daemon_take_listen_fd(m.daemon, name);
                if (fd < 0 && listen[k]) {
                        fd = listen_tcp(listen[k]);
                        if (fd < 0)
                                return log_error_errno(fd, "Failed to listen on %s for %s: %m", listen[k], name), 1;
                }
                if (fd < 0)
                        continue;
                if (k == LISTENER_SUBMISSIONS && !m.tls) {
                        safe_close(fd);
                        log_warning("No TLS certificate: not serving submissions (implicit TLS)");
                        continue;
                }
                r = listener_start(&m, k, fd);
                if (r < 0)
                        return log_error_errno(r, "Failed to serve %s: %m", name), 1;
                n_listeners++;
        }
        if (n_listeners == 0)
                return log_error("No SMTP listener: start through the halyard-smtpd-*.socket units or pass --listen-smtp=ADDR:PORT"), 1;

        r = daemon_listen_varlink(m.daemon, m.varlink, listen_varlink, NULL);
        if (r < 0)
                return 1;
        if (daemon_n_listen_fds_left(m.daemon) > 0)
                log_warning("%zu inherited sockets with unknown names ignored", daemon_n_listen_fds_left(m.daemon));

        uint64_t now;
        (void) sd_event_now(m.event, CLOCK_MONOTONIC, &now);
        r = sd_event_add_time(m.event, NULL, CLOCK_MONOTONIC, now + 12ULL * 3600ULL * 1000000ULL, 0, on_ticket_timer, &m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the ticket key timer: %m"), 1;

        log_event(LOG_INFO, LOG_MESSAGE_SERVICE_STARTED, (const char *[]){ "HALYARD_SERVICE=smtpd", NULL },
                  "halyard-smtpd %s: %u listeners, TLS %s, queue at %s", HALYARD_VERSION, n_listeners,
                  m.tls ? "on" : "off", m.settings.queue_address);
        (void) daemon_ready(m.daemon);
        r = sd_event_loop(m.event);
        return r < 0 ? 1 : r;
}
