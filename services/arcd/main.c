/* SPDX-License-Identifier: MIT */
/* halyard-arcd: message authentication (DKIM, SPF, DMARC, ARC) and signing
 * (DKIM, ARC sealing). Serves io.halyard.Arc on the fd systemd names
 * "varlink" (halyard-arcd.socket: /run/halyard/io.halyard.Arc) or on
 * --listen=ADDRESS for development. It alone holds the private keys, which
 * come as systemd credentials ([Arc] Key=DOMAIN SELECTOR CREDENTIAL). Reads
 * [Arc] and [DNS] from the halyard configuration; SIGHUP reloads it (keys
 * included), SIGTERM finishes the calls in flight and exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "arcd.h"
#include "log.h"
#include "macro.h"

const ConfigKey arcd_config_keys[] = {
        { "Arc", "AuthservId", CONFIG_STRING },
        /* Words in groups of three: DOMAIN SELECTOR CREDENTIAL ... */
        { "Arc", "Key", CONFIG_LIST_APPEND },
        { "Arc", "SealDomain", CONFIG_STRING },
        { "Arc", "SealSelector", CONFIG_STRING },
        { "Arc", "MinRsaBits", CONFIG_UINT },
        { "Arc", "MaxMessageSize", CONFIG_SIZE },
        DNS_CONFIG_KEYS,
        {}
};

Settings *settings_ref(Settings *s) {
        if (s)
                s->n_ref++;
        return s;
}

Settings *settings_unref(Settings *s) {
        if (!s || --s->n_ref > 0)
                return NULL;
        for (size_t i = 0; i < s->n_keys; i++) {
                if (s->keys[i].key)
                        gnutls_privkey_deinit(s->keys[i].key);
                free(s->keys[i].domain);
                free(s->keys[i].selector);
                free(s->keys[i].credential);
        }
        free(s->keys);
        free(s->authserv_id);
        free(s->seal_domain);
        free(s->seal_selector);
        free(s);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Settings *, settings_unref)

const ArcdKey *settings_find_key(const Settings *s, const char *domain, const char *selector, DkimAlgorithm algorithm) {
        if (!s || !domain)
                return NULL;
        for (size_t i = 0; i < s->n_keys; i++)
                if (strcasecmp(s->keys[i].domain, domain) == 0 &&
                    (!selector || strcmp(s->keys[i].selector, selector) == 0) &&
                    (algorithm < 0 || s->keys[i].algorithm == algorithm))
                        return &s->keys[i];
        return NULL;
}

static void lower(char *s) {
        for (; s && *s; s++)
                if (*s >= 'A' && *s <= 'Z')
                        *s = (char) (*s + 32);
}

/* Reports a problem with a key at the Key= line. */
static int key_error(Config *c, const char *path, const char *key, const char *fmt, ...) _printf_(4, 5);
static int key_error(Config *c, const char *path, const char *key, const char *fmt, ...) {
        const char *file = path;
        unsigned line = 0;
        char msg[600];
        va_list ap;
        (void) config_get_location(c, "Arc", key, &file, &line);
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        fprintf(stderr, "%s:%u: error: %s\n", file, line, msg);
        return -EINVAL;
}

static int load_key(Config *c, const char *path, ArcdKey *k) {
        _cleanup_free_ char *pem = NULL;
        size_t n = 0;
        int r = daemon_read_credential(k->credential, ARCD_KEY_PEM_MAX, &pem, &n);
        if (r == -ENXIO)
                return key_error(c, path, "Key",
                                 "key %s/%s: credential \"%s\" not available: no $CREDENTIALS_DIRECTORY "
                                 "(give it with LoadCredential=%s:/path/to/key.pem)",
                                 k->domain, k->selector, k->credential, k->credential);
        if (r == -ENOENT)
                return key_error(c, path, "Key",
                                 "key %s/%s: credential \"%s\" not found in $CREDENTIALS_DIRECTORY (%s)",
                                 k->domain, k->selector, k->credential, getenv("CREDENTIALS_DIRECTORY"));
        if (r < 0)
                return key_error(c, path, "Key", "key %s/%s: cannot read credential \"%s\": %s", k->domain,
                                 k->selector, k->credential, strerror(-r));
        r = dkim_privkey_load_pem(pem, n, &k->key);
        explicit_bzero(pem, n);
        if (r < 0)
                return key_error(c, path, "Key", "key %s/%s: credential \"%s\" is not a PEM RSA or Ed25519 private key",
                                 k->domain, k->selector, k->credential);
        unsigned bits = 0;
        int alg = gnutls_privkey_get_pk_algorithm(k->key, &bits);
        k->bits = bits;
        if (alg == GNUTLS_PK_RSA) {
                k->algorithm = DKIM_ALGORITHM_RSA_SHA256;
                if (bits < 2048)
                        return key_error(c, path, "Key", "key %s/%s: RSA key of %u bits, at least 2048 are needed to sign",
                                         k->domain, k->selector, bits);
        } else if (alg == GNUTLS_PK_EDDSA_ED25519) {
                k->algorithm = DKIM_ALGORITHM_ED25519_SHA256;
                k->bits = 256;
        } else
                return key_error(c, path, "Key", "key %s/%s: unsupported key type (RSA or Ed25519)", k->domain,
                                 k->selector);
        return 0;
}

static int settings_from_config(Config *c, const char *path, Settings **ret) {
        _cleanup_(settings_unrefp) Settings *s = calloc(1, sizeof *s);
        _cleanup_(config_strv_freep) char **words = NULL;
        char host[256] = "localhost";
        const char *str;
        uint64_t v;
        int r;

        if (!s)
                return -ENOMEM;
        s->n_ref = 1;
        (void) gethostname(host, sizeof host - 1);
        if (config_get_string(c, "Arc", "AuthservId", &str) >= 0 && *str) {
                if (strpbrk(str, " \t;()\"\\"))
                        return key_error(c, path, "AuthservId", "invalid AuthservId=%s (a domain name)", str);
                s->authserv_id = strdup(str);
        } else
                s->authserv_id = strdup(host);
        if (!s->authserv_id)
                return -ENOMEM;
        s->min_rsa_bits = 1024;
        if (config_get_uint(c, "Arc", "MinRsaBits", &v) >= 0) {
                if (v < 512 || v > 16384)
                        return key_error(c, path, "MinRsaBits", "invalid MinRsaBits=%llu (512..16384)",
                                         (unsigned long long) v);
                s->min_rsa_bits = (unsigned) v;
        }
        s->max_message_size = ARCD_DEFAULT_MAX_MESSAGE_SIZE;
        if (config_get_size(c, "Arc", "MaxMessageSize", &v) >= 0)
                s->max_message_size = MAX(v, 1024U);

        if (config_get_list(c, "Arc", "Key", &words) >= 0 && words) {
                size_t n = 0;
                while (words[n])
                        n++;
                /* A trailing comma on a triple is allowed as a separator. */
                for (size_t i = 0; i < n; i++) {
                        size_t l = strlen(words[i]);
                        if (l > 0 && words[i][l - 1] == ',')
                                words[i][l - 1] = 0;
                }
                if (n % 3 != 0)
                        return key_error(c, path, "Key",
                                         "Key= takes DOMAIN SELECTOR CREDENTIAL triples, got %zu word%s", n,
                                         n == 1 ? "" : "s");
                s->keys = calloc(n / 3 + 1, sizeof(ArcdKey));
                if (!s->keys)
                        return -ENOMEM;
                for (size_t i = 0; i < n; i += 3) {
                        ArcdKey *k = &s->keys[s->n_keys++];
                        k->domain = strdup(words[i]);
                        k->selector = strdup(words[i + 1]);
                        k->credential = strdup(words[i + 2]);
                        if (!k->domain || !k->selector || !k->credential)
                                return -ENOMEM;
                        lower(k->domain);
                        if (!dkim_domain_valid(k->domain, strlen(k->domain)))
                                return key_error(c, path, "Key", "invalid domain \"%s\" in Key=", words[i]);
                        if (!dkim_domain_valid(k->selector, strlen(k->selector)))
                                return key_error(c, path, "Key", "invalid selector \"%s\" in Key=", words[i + 1]);
                        if (settings_find_key(s, k->domain, k->selector, _DKIM_ALGORITHM_INVALID) != k)
                                return key_error(c, path, "Key", "key %s/%s given twice", k->domain, k->selector);
                        r = load_key(c, path, k);
                        if (r < 0)
                                return r;
                }
        }

        const char *sd = NULL, *ss = NULL;
        (void) config_get_string(c, "Arc", "SealDomain", &sd);
        (void) config_get_string(c, "Arc", "SealSelector", &ss);
        if (sd && !*sd)
                sd = NULL;
        if (ss && !*ss)
                ss = NULL;
        if (sd || ss) {
                const ArcdKey *k = NULL;
                for (size_t i = 0; i < s->n_keys && !k; i++)
                        if ((!sd || strcasecmp(s->keys[i].domain, sd) == 0) &&
                            (!ss || strcmp(s->keys[i].selector, ss) == 0))
                                k = &s->keys[i];
                if (!k)
                        return key_error(c, path, sd ? "SealDomain" : "SealSelector",
                                         "no Key= for SealDomain=%s SealSelector=%s", sd ? sd : "(any)",
                                         ss ? ss : "(any)");
                s->seal_domain = strdup(k->domain);
                s->seal_selector = strdup(k->selector);
        } else {
                /* The first RSA key: receivers accept only rsa-sha256 in ARC. */
                for (size_t i = 0; i < s->n_keys; i++)
                        if (s->keys[i].algorithm == DKIM_ALGORITHM_RSA_SHA256) {
                                s->seal_domain = strdup(s->keys[i].domain);
                                s->seal_selector = strdup(s->keys[i].selector);
                                break;
                        }
        }
        *ret = TAKE_PTR(s);
        return 0;
}

static int manager_load_config(Manager *m, const char *path) {
        Config *c = NULL;
        Settings *s = NULL;
        int r = config_load(path, arcd_config_keys, &c);
        if (c)
                config_print_diags(c, stderr);
        if (r >= 0)
                r = settings_from_config(c, path, &s);
        if (r < 0) {
                config_free(c);
                return r;
        }
        settings_unref(m->settings);
        m->settings = s;
        config_free(m->config);
        m->config = c;
        return 0;
}

static int on_reload(Daemon *d _unused_, void *userdata) {
        Manager *m = userdata;
        /* The resolver stays: [DNS] changes need a restart. */
        return manager_load_config(m, m->config_path);
}

static void on_drain(Daemon *d, void *userdata) {
        Manager *m = userdata;
        varlink_server_stop_listening(m->varlink);
        if (m->in_flight == 0)
                (void) daemon_exit(d, 0);
        /* else the last call to finish exits (arcd-varlink.c). */
}

static int on_status(Daemon *d _unused_, char *buf, size_t n, void *userdata) {
        Manager *m = userdata;
        snprintf(buf, n, "%zu keys, %u in flight, %llu calls", m->settings->n_keys, m->in_flight,
                 (unsigned long long) (m->calls[0] + m->calls[1] + m->calls[2]));
        return 0;
}

static void manager_free(Manager *m) {
        /* Workers first: their callbacks answer and free their calls. */
        m->worker = worker_free(m->worker);
        arcd_jobs_abort(m);
        dns_resolver_free(m->resolver);
        dns_cache_free(m->cache);
        varlink_server_free(m->varlink);
        daemon_free(m->daemon);
        settings_unref(m->settings);
        config_free(m->config);
        arcd_psl_free(m);
        sd_event_unref(m->event);
}

int main(int argc, char **argv) {
        _cleanup_(manager_free) Manager m = {};
        DaemonCommandLine cl;
        int r;

        r = daemon_parse_command_line(argc, argv, "halyard-arcd", NULL, &cl);
        if (r != 0)
                return r > 0 ? 0 : 2;
        m.config_path = cl.config_path;

        log_setup("halyard-arcd", LOG_TARGET_AUTO);
        r = manager_load_config(&m, m.config_path);
        if (cl.check || r < 0) {
                if (r < 0)
                        log_error("Refusing to start with a bad configuration (%s)", m.config_path);
                return r < 0 ? 1 : 0;
        }
        if (m.settings->n_keys == 0)
                log_info("No [Arc] Key= configured: Seal and Sign will answer NoKey");

        r = sd_event_default(&m.event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m"), 1;
        /* Before any thread (libunbound's, the signing workers) exists, so
         * they inherit the blocked signals. */
        static const DaemonCallbacks callbacks = { .drain = on_drain, .reload = on_reload, .status = on_status };
        r = daemon_new(m.event, &callbacks, &m, &m.daemon);
        if (r < 0)
                return log_error_errno(r, "Failed to set up service glue: %m"), 1;
        r = dns_cache_new(ARCD_CACHE_MAX, &m.cache);
        if (r < 0)
                return log_error_errno(r, "Failed to set up: %m"), 1;
        r = dns_resolver_new_from_config(m.event, m.config, &m.resolver);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the DNS resolver: %m"), 1;
        r = arcd_psl_setup(&m);
        if (r < 0)
                return log_error_errno(r, "Failed to load the Public Suffix List: %m"), 1;
        r = worker_new(m.event, ARCD_WORKER_THREADS, ARCD_WORKER_MAX_PENDING, &m.worker);
        if (r < 0)
                return log_error_errno(r, "Failed to start the signing threads: %m"), 1;

        r = arcd_varlink_setup(&m);
        if (r < 0)
                return log_error_errno(r, "Failed to set up varlink: %m"), 1;
        r = daemon_listen_varlink(m.daemon, m.varlink, cl.listen, "halyard-arcd.socket");
        if (r < 0)
                return 1;

        log_event(LOG_INFO, LOG_MESSAGE_SERVICE_STARTED, (const char *[]){ "HALYARD_SERVICE=arcd", NULL },
                  "halyard-arcd %s: %zu keys, authserv-id %s", HALYARD_VERSION, m.settings->n_keys,
                  m.settings->authserv_id);
        (void) daemon_ready(m.daemon);
        r = sd_event_loop(m.event);
        return r < 0 ? 1 : r;
}
