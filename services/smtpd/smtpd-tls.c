/* SPDX-License-Identifier: MIT */
#include "smtpd-tls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include "macro.h"

/* The pairs for one name (set): ECDSA/Ed25519 before RSA. */
typedef struct Group {
        gnutls_certificate_credentials_t creds;
        gnutls_x509_crt_t *leaves;      /* to match the SNI against */
        size_t n_leaves;
} Group;

struct SmtpdTlsContext {
        unsigned n_ref;
        Group *groups;                  /* [0]: the default */
        size_t n_groups;
        gnutls_priority_t priority;
        gnutls_datum_t ticket_key;      /* .data NULL: no tickets */
        bool request_client_cert;
        bool have_ca;
        size_t n_pairs;
};

struct SmtpdTlsSession {
        SmtpdTlsContext *ctx;
        gnutls_session_t gs;
        size_t send_pending;            /* bytes GnuTLS holds from an -EAGAIN write */
        char error[256];
};

_printf_(3, 4) static int fail(char *err, size_t errlen, const char *fmt, ...) {
        va_list ap;

        if (err && errlen > 0) {
                va_start(ap, fmt);
                (void) vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return -EINVAL;
}

_printf_(2, 3) static void warn(const SmtpdTlsConfig *cfg, const char *fmt, ...) {
        char buf[512];
        va_list ap;

        if (!cfg->warn)
                return;
        va_start(ap, fmt);
        (void) vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        cfg->warn(buf, cfg->warn_userdata);
}

static int gnutls_to_errno(int r) {
        switch (r) {
        case GNUTLS_E_FILE_ERROR:
                return -ENOENT;
        case GNUTLS_E_MEMORY_ERROR:
                return -ENOMEM;
        default:
                return -EINVAL;
        }
}

/* gnutls_load_file() only says GNUTLS_E_FILE_ERROR; keep errno's reason. */
static int load_file(const char *what, const char *path, gnutls_datum_t *ret, char *err, size_t errlen) {
        FILE *f = fopen(path, "re");
        if (!f) {
                int r = negative_errno();
                (void) fail(err, errlen, "cannot open %s file %s: %s", what, path, strerror(-r));
                return r;
        }
        (void) fclose(f);
        int r = gnutls_load_file(path, ret);
        if (r < 0) {
                (void) fail(err, errlen, "cannot read %s file %s: %s", what, path, gnutls_strerror(r));
                return gnutls_to_errno(r);
        }
        return 0;
}

static void datum_wipe(gnutls_datum_t *d) {
        if (d->data) {
                gnutls_memset(d->data, 0, d->size);
                gnutls_free(d->data);
        }
        d->data = NULL;
        d->size = 0;
}

typedef struct Pair {
        const SmtpdTlsKeyPair *cfg;
        gnutls_datum_t cert, key;
        gnutls_x509_crt_t *chain;
        unsigned n_chain;
        size_t group;
        bool rsa;
        size_t index;
} Pair;

static void pair_done(Pair *p) {
        datum_wipe(&p->key);
        gnutls_free(p->cert.data);
        p->cert.data = NULL;
        for (unsigned i = 0; i < p->n_chain; i++)
                if (p->chain[i])
                        gnutls_x509_crt_deinit(p->chain[i]);
        gnutls_free(p->chain);
        p->chain = NULL;
        p->n_chain = 0;
}

/* Reads and checks one pair; does not add it yet. */
static int pair_load(const SmtpdTlsConfig *cfg, Pair *p, char *err, size_t errlen) {
        const char *cf = p->cfg->cert_file, *kf = p->cfg->key_file;
        int r;

        if (!cf || !kf)
                return fail(err, errlen, "certificate pair %zu: certificate and key file are both needed",
                            p->index + 1);
        r = load_file("certificate", cf, &p->cert, err, errlen);
        if (r < 0)
                return r;
        r = load_file("key", kf, &p->key, err, errlen);
        if (r < 0)
                return r;

        r = gnutls_x509_crt_list_import2(&p->chain, &p->n_chain, &p->cert, GNUTLS_X509_FMT_PEM, 0);
        if (r < 0 || p->n_chain == 0)
                return fail(err, errlen, "certificate file %s: no PEM certificate: %s", cf,
                            r < 0 ? gnutls_strerror(r) : "empty");

        gnutls_x509_privkey_t key;
        r = gnutls_x509_privkey_init(&key);
        if (r < 0)
                return -ENOMEM;
        r = gnutls_x509_privkey_import2(key, &p->key, GNUTLS_X509_FMT_PEM, NULL, 0);
        if (r < 0) {
                gnutls_x509_privkey_deinit(key);
                return fail(err, errlen, "key file %s: no usable unencrypted PEM private key: %s", kf,
                            gnutls_strerror(r));
        }
        /* Compare public key ids: names the files, unlike GnuTLS's own check. */
        unsigned char kid[64], cid[64];
        size_t kid_len = sizeof kid, cid_len = sizeof cid;
        r = gnutls_x509_privkey_get_key_id(key, GNUTLS_KEYID_USE_SHA256, kid, &kid_len);
        gnutls_x509_privkey_deinit(key);
        if (r >= 0)
                r = gnutls_x509_crt_get_key_id(p->chain[0], GNUTLS_KEYID_USE_SHA256, cid, &cid_len);
        if (r < 0)
                return fail(err, errlen, "certificate file %s / key file %s: cannot compare keys: %s", cf, kf,
                            gnutls_strerror(r));
        if (kid_len != cid_len || memcmp(kid, cid, kid_len) != 0)
                return fail(err, errlen, "key file %s does not match the certificate in %s", kf, cf);

        int pk = gnutls_x509_crt_get_pk_algorithm(p->chain[0], NULL);
        p->rsa = pk == GNUTLS_PK_RSA || pk == GNUTLS_PK_RSA_PSS;

        time_t now = time(NULL);
        for (unsigned i = 0; i < p->n_chain; i++) {
                time_t nb = gnutls_x509_crt_get_activation_time(p->chain[i]);
                time_t na = gnutls_x509_crt_get_expiration_time(p->chain[i]);
                char dn[256] = "";
                size_t dn_len = sizeof dn;
                if (gnutls_x509_crt_get_dn(p->chain[i], dn, &dn_len) < 0)
                        dn[0] = 0;
                if (na != (time_t) -1 && na < now)
                        warn(cfg, "certificate file %s: certificate %u (%s) has expired", cf, i + 1, dn);
                else if (nb != (time_t) -1 && nb > now)
                        warn(cfg, "certificate file %s: certificate %u (%s) is not valid yet", cf, i + 1, dn);
        }
        return 0;
}

static bool check_name(gnutls_x509_crt_t crt, const char *name) {
        return gnutls_x509_crt_check_hostname2(crt, name, GNUTLS_VERIFY_DO_NOT_ALLOW_WILDCARDS) != 0;
}

/* Does pair p share a DNS name with pair d? Literally: a wildcard is a name
 * of its own here, not a cover for the names it matches. */
static bool shares_name(const Pair *p, const Pair *d) {
        for (unsigned i = 0;; i++) {
                char name[256];
                size_t len = sizeof name;
                unsigned critical;
                int r = gnutls_x509_crt_get_subject_alt_name(d->chain[0], i, name, &len, &critical);
                if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) {
                        if (i > 0)
                                return false;
                        /* no SANs: the CN */
                        len = sizeof name;
                        if (gnutls_x509_crt_get_dn_by_oid(d->chain[0], GNUTLS_OID_X520_COMMON_NAME, 0, 0,
                                                          name, &len) < 0)
                                return false;
                        return check_name(p->chain[0], name);
                }
                if (r == GNUTLS_SAN_DNSNAME && check_name(p->chain[0], name))
                        return true;
                if (r < 0 && r != GNUTLS_E_SHORT_MEMORY_BUFFER)
                        return false;
        }
}

static int pair_cmp(const void *a, const void *b) {
        const Pair *x = a, *y = b;
        if (x->group != y->group)
                return x->group < y->group ? -1 : 1;
        if (x->rsa != y->rsa)
                return x->rsa ? 1 : -1;
        return x->index < y->index ? -1 : x->index > y->index;
}

int smtpd_tls_context_new(const SmtpdTlsConfig *cfg, SmtpdTlsContext **ret, char *err, size_t errlen) {
        SmtpdTlsContext *ctx = NULL;
        Pair *pairs = NULL;
        int r;

        if (err && errlen > 0)
                err[0] = 0;
        if (!cfg || !ret || !cfg->pairs || cfg->n_pairs == 0)
                return fail(err, errlen, "no certificate/key pair configured");

        ctx = calloc(1, sizeof *ctx);
        pairs = calloc(cfg->n_pairs, sizeof *pairs);
        if (!ctx || !pairs) {
                free(pairs);
                free(ctx);
                return -ENOMEM;
        }
        ctx->n_ref = 1;
        ctx->n_pairs = cfg->n_pairs;
        ctx->request_client_cert = cfg->request_client_cert;

        const char *prio = cfg->priority ?: SMTPD_TLS_DEFAULT_PRIORITY;
        const char *pos = NULL;
        r = gnutls_priority_init2(&ctx->priority, prio, &pos, 0);
        if (r < 0) {
                ctx->priority = NULL;
                r = fail(err, errlen, "bad TLS priority string \"%.200s\" at \"%.60s\": %s", prio, pos ?: "",
                         gnutls_strerror(r));
                goto finish;
        }

        for (size_t i = 0; i < cfg->n_pairs; i++) {
                pairs[i].cfg = &cfg->pairs[i];
                pairs[i].index = i;
                r = pair_load(cfg, &pairs[i], err, errlen);
                if (r < 0)
                        goto finish;
        }
        /* Group by name, in order of first appearance: group 0 has pairs[0]. */
        for (size_t i = 0; i < cfg->n_pairs; i++) {
                size_t j;
                for (j = 0; j < i; j++)
                        if (shares_name(&pairs[i], &pairs[j]))
                                break;
                pairs[i].group = j < i ? pairs[j].group : ctx->n_groups++;
        }
        qsort(pairs, cfg->n_pairs, sizeof *pairs, pair_cmp);
        ctx->groups = calloc(ctx->n_groups, sizeof *ctx->groups);
        if (!ctx->groups) {
                r = -ENOMEM;
                goto finish;
        }
        for (size_t g = 0; g < ctx->n_groups; g++) {
                r = gnutls_certificate_allocate_credentials(&ctx->groups[g].creds);
                if (r < 0) {
                        ctx->groups[g].creds = NULL;
                        r = -ENOMEM;
                        goto finish;
                }
                ctx->groups[g].leaves = calloc(cfg->n_pairs, sizeof *ctx->groups[g].leaves);
                if (!ctx->groups[g].leaves) {
                        r = -ENOMEM;
                        goto finish;
                }
        }

        for (size_t i = 0; i < cfg->n_pairs; i++) {
                Group *g = &ctx->groups[pairs[i].group];
                r = gnutls_certificate_set_x509_key_mem2(g->creds, &pairs[i].cert, &pairs[i].key,
                                                         GNUTLS_X509_FMT_PEM, NULL, 0);
                if (r < 0) {
                        r = fail(err, errlen, "certificate file %s / key file %s: %s", pairs[i].cfg->cert_file,
                                 pairs[i].cfg->key_file, gnutls_strerror(r));
                        goto finish;
                }
                g->leaves[g->n_leaves++] = TAKE_PTR(pairs[i].chain[0]);
        }

        if (cfg->client_ca_file) {
                gnutls_datum_t ca = {};
                r = load_file("client CA", cfg->client_ca_file, &ca, err, errlen);
                if (r < 0)
                        goto finish;
                /* verify_peers goes by the session's credentials: all of them */
                for (size_t g = 0; g < ctx->n_groups; g++) {
                        r = gnutls_certificate_set_x509_trust_mem(ctx->groups[g].creds, &ca, GNUTLS_X509_FMT_PEM);
                        if (r <= 0)
                                break;
                }
                gnutls_free(ca.data);
                if (r <= 0) {
                        r = fail(err, errlen, "client CA file %s: no PEM certificate: %s", cfg->client_ca_file,
                                 r < 0 ? gnutls_strerror(r) : "empty");
                        goto finish;
                }
                ctx->have_ca = true;
        }

        if (!cfg->no_session_tickets) {
                r = smtpd_tls_context_rotate_ticket_key(ctx);
                if (r < 0) {
                        (void) fail(err, errlen, "cannot make a session ticket key: %s", strerror(-r));
                        goto finish;
                }
        }

        *ret = TAKE_PTR(ctx);
        r = 0;
finish:
        for (size_t i = 0; i < cfg->n_pairs; i++)
                pair_done(&pairs[i]);
        free(pairs);
        smtpd_tls_context_unref(ctx);
        return r;
}

SmtpdTlsContext *smtpd_tls_context_ref(SmtpdTlsContext *ctx) {
        if (ctx)
                ctx->n_ref++;
        return ctx;
}

SmtpdTlsContext *smtpd_tls_context_unref(SmtpdTlsContext *ctx) {
        if (!ctx || --ctx->n_ref > 0)
                return NULL;
        datum_wipe(&ctx->ticket_key);
        if (ctx->priority)
                gnutls_priority_deinit(ctx->priority);
        for (size_t g = 0; ctx->groups && g < ctx->n_groups; g++) {
                if (ctx->groups[g].creds)
                        gnutls_certificate_free_credentials(ctx->groups[g].creds);
                for (size_t i = 0; i < ctx->groups[g].n_leaves; i++)
                        gnutls_x509_crt_deinit(ctx->groups[g].leaves[i]);
                free(ctx->groups[g].leaves);
        }
        free(ctx->groups);
        free(ctx);
        return NULL;
}

int smtpd_tls_context_rotate_ticket_key(SmtpdTlsContext *ctx) {
        gnutls_datum_t key = {};

        if (!ctx)
                return -EINVAL;
        int r = gnutls_session_ticket_key_generate(&key);
        if (r < 0)
                return r == GNUTLS_E_MEMORY_ERROR ? -ENOMEM : -EIO;
        /* Sessions copy the key when made (gnutls_session_ticket_enable_server),
         * so the old one can go now. */
        datum_wipe(&ctx->ticket_key);
        ctx->ticket_key = key;
        return 0;
}

size_t smtpd_tls_context_n_pairs(const SmtpdTlsContext *ctx) {
        return ctx ? ctx->n_pairs : 0;
}

/* GnuTLS picks the first pair that fits the client among those whose names
 * match the SNI, else among all, per candidate cipher suite: in TLS 1.2 the
 * server's first suite (ECDHE-ECDSA) then finds the ECDSA pair of another
 * name before the RSA pair of the right one. So each name has credentials of
 * its own, set here, once the SNI is known. */
static int post_client_hello(gnutls_session_t gs) {
        SmtpdTlsSession *s = gnutls_session_get_ptr(gs);
        char name[256];
        size_t len = sizeof name;
        unsigned type;

        if (s->ctx->n_groups <= 1)
                return 0;
        if (gnutls_server_name_get(gs, name, &len, &type, 0) < 0 || type != GNUTLS_NAME_DNS ||
            len >= sizeof name || strlen(name) != len)
                return 0;
        /* exact names first, then wildcards */
        for (unsigned pass = 0; pass < 2; pass++)
                for (size_t g = 0; g < s->ctx->n_groups; g++)
                        for (size_t i = 0; i < s->ctx->groups[g].n_leaves; i++)
                                if (gnutls_x509_crt_check_hostname2(
                                            s->ctx->groups[g].leaves[i], name,
                                            pass == 0 ? GNUTLS_VERIFY_DO_NOT_ALLOW_WILDCARDS : 0)) {
                                        int r = gnutls_credentials_set(gs, GNUTLS_CRD_CERTIFICATE,
                                                                       s->ctx->groups[g].creds);
                                        return r < 0 ? r : 0;
                                }
        return 0;
}

int smtpd_tls_session_new(SmtpdTlsContext *ctx, int fd, SmtpdTlsSession **ret) {
        int r;

        if (!ctx || fd < 0 || !ret)
                return -EINVAL;
        SmtpdTlsSession *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        r = gnutls_init(&s->gs, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
        if (r < 0) {
                free(s);
                return -ENOMEM;
        }
        s->ctx = smtpd_tls_context_ref(ctx);
        r = gnutls_priority_set(s->gs, ctx->priority);
        if (r >= 0)
                r = gnutls_credentials_set(s->gs, GNUTLS_CRD_CERTIFICATE, ctx->groups[0].creds);
        if (r >= 0 && ctx->ticket_key.data)
                r = gnutls_session_ticket_enable_server(s->gs, &ctx->ticket_key);
        if (r < 0) {
                smtpd_tls_session_free(s);
                return -EINVAL;
        }
        if (ctx->request_client_cert) {
                gnutls_certificate_server_set_request(s->gs, GNUTLS_CERT_REQUEST);
                /* Don't list our CAs: a client then offers whatever certificate it
                 * has, and the policy can still go by its fingerprint. */
                gnutls_certificate_send_x509_rdn_sequence(s->gs, 1);
        }
        gnutls_session_set_ptr(s->gs, s);
        gnutls_handshake_set_post_client_hello_function(s->gs, post_client_hello);
        /* the caller's timers bound the handshake */
        gnutls_handshake_set_timeout(s->gs, 0);
        gnutls_transport_set_int(s->gs, fd);
        *ret = s;
        return 0;
}

SmtpdTlsSession *smtpd_tls_session_free(SmtpdTlsSession *s) {
        if (!s)
                return NULL;
        if (s->gs)
                gnutls_deinit(s->gs);
        smtpd_tls_context_unref(s->ctx);
        free(s);
        return NULL;
}

static int set_error(SmtpdTlsSession *s, int r) {
        if (r == GNUTLS_E_FATAL_ALERT_RECEIVED || r == GNUTLS_E_WARNING_ALERT_RECEIVED)
                (void) snprintf(s->error, sizeof s->error, "%s: %s", gnutls_strerror(r),
                                gnutls_alert_get_name(gnutls_alert_get(s->gs)) ?: "?");
        else
                (void) snprintf(s->error, sizeof s->error, "%s", gnutls_strerror(r));
        if (r == GNUTLS_E_PREMATURE_TERMINATION || r == GNUTLS_E_PULL_ERROR || r == GNUTLS_E_PUSH_ERROR)
                return -ECONNRESET;
        if (r == GNUTLS_E_MEMORY_ERROR)
                return -ENOMEM;
        return -EPROTO;
}

int smtpd_tls_handshake(SmtpdTlsSession *s) {
        int r;

        do
                r = gnutls_handshake(s->gs);
        while (r < 0 && r != GNUTLS_E_AGAIN && !gnutls_error_is_fatal(r));
        if (r == GNUTLS_E_AGAIN)
                return -EAGAIN;
        if (r < 0)
                return set_error(s, r);
        s->error[0] = 0;
        return 0;
}

uint32_t smtpd_tls_wants(const SmtpdTlsSession *s) {
        return gnutls_record_get_direction(s->gs) ? EPOLLOUT : EPOLLIN;
}

const char *smtpd_tls_error(const SmtpdTlsSession *s) {
        return s->error;
}

ssize_t smtpd_tls_read(SmtpdTlsSession *s, void *buf, size_t n) {
        for (;;) {
                ssize_t k = gnutls_record_recv(s->gs, buf, n);
                if (k >= 0)
                        return k;
                if (k == GNUTLS_E_AGAIN)
                        return -EAGAIN;
                if (k == GNUTLS_E_INTERRUPTED || k == GNUTLS_E_WARNING_ALERT_RECEIVED)
                        continue;
                if (k == GNUTLS_E_REHANDSHAKE) {
                        /* TLS 1.2 client renegotiation: not supported, say so and go on */
                        (void) gnutls_alert_send(s->gs, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION);
                        continue;
                }
                if (!gnutls_error_is_fatal((int) k))
                        continue;
                return set_error(s, (int) k);
        }
}

size_t smtpd_tls_pending(SmtpdTlsSession *s) {
        return gnutls_record_check_pending(s->gs);
}

ssize_t smtpd_tls_write(SmtpdTlsSession *s, const void *buf, size_t n) {
        ssize_t k;

        if (s->send_pending > 0)
                k = gnutls_record_send(s->gs, NULL, 0);
        else {
                if (n == 0)
                        return 0;
                k = gnutls_record_send(s->gs, buf, n);
        }
        if (k == GNUTLS_E_AGAIN || k == GNUTLS_E_INTERRUPTED) {
                if (s->send_pending == 0)
                        s->send_pending = n;
                return -EAGAIN;
        }
        if (k < 0) {
                s->send_pending = 0;
                return set_error(s, (int) k) == -ECONNRESET ? -EPIPE : -EPROTO;
        }
        if (s->send_pending > 0) {
                k = (ssize_t) s->send_pending;
                s->send_pending = 0;
        }
        return k;
}

int smtpd_tls_bye(SmtpdTlsSession *s) {
        int r = gnutls_bye(s->gs, GNUTLS_SHUT_WR);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
                return -EAGAIN;
        return r < 0 ? set_error(s, r) : 0;
}

static char *datum_to_string(gnutls_datum_t *d) {
        char *s = strndup((const char *) d->data, d->size);
        gnutls_free(d->data);
        d->data = NULL;
        return s;
}

static int peer_facts(SmtpdTlsSession *s, SmtpdTlsFacts *f) {
        unsigned n = 0;
        const gnutls_datum_t *certs = gnutls_certificate_get_peers(s->gs, &n);
        gnutls_x509_crt_t crt;
        gnutls_datum_t d = {};
        int r;

        f->peer = SMTPD_TLS_PEER_NONE;
        if (!certs || n == 0 || gnutls_certificate_type_get2(s->gs, GNUTLS_CTYPE_CLIENT) != GNUTLS_CRT_X509)
                return 0;

        r = gnutls_x509_crt_init(&crt);
        if (r < 0)
                return -ENOMEM;
        r = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
        if (r >= 0)
                r = gnutls_x509_crt_get_dn3(crt, &d, 0);
        if (r >= 0) {
                f->peer_subject = datum_to_string(&d);
                r = gnutls_x509_crt_get_issuer_dn3(crt, &d, 0);
        }
        if (r >= 0)
                f->peer_issuer = datum_to_string(&d);
        if (r >= 0) {
                char cn[256];
                size_t cn_len = sizeof cn - 1;
                /* No CN (or a huge one) is not an error: EXTERNAL just has no name. */
                if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &cn_len) >= 0 &&
                    cn_len > 0 && !memchr(cn, 0, cn_len)) {
                        f->peer_cn = strndup(cn, cn_len);
                        if (!f->peer_cn)
                                r = GNUTLS_E_MEMORY_ERROR;
                }
        }
        gnutls_x509_crt_deinit(crt);
        if (r == GNUTLS_E_MEMORY_ERROR)
                return -ENOMEM;
        if (r < 0)
                return -EPROTO;
        if (!f->peer_subject || !f->peer_issuer)
                return -ENOMEM;

        unsigned char md[32];
        size_t md_len = sizeof md;
        r = gnutls_fingerprint(GNUTLS_DIG_SHA256, &certs[0], md, &md_len);
        if (r < 0 || md_len != sizeof md)
                return -EPROTO;
        for (size_t i = 0; i < md_len; i++)
                (void) snprintf(f->peer_sha256 + 2 * i, 3, "%02x", md[i]);

        unsigned status = 0;
        if (!s->ctx->have_ca)
                f->peer_verify_reason = strdup("no client CA configured");
        else {
                r = gnutls_certificate_verify_peers2(s->gs, &status);
                if (r < 0)
                        f->peer_verify_reason = strdup(gnutls_strerror(r));
                else if (status != 0) {
                        gnutls_datum_t out = {};
                        if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) >= 0) {
                                f->peer_verify_reason = datum_to_string(&out);
                                char *e = f->peer_verify_reason ? strchr(f->peer_verify_reason, 0) : NULL;
                                while (e && e > f->peer_verify_reason && e[-1] == ' ')
                                        *--e = 0;
                        } else
                                f->peer_verify_reason = strdup("not trusted");
                } else {
                        f->peer = SMTPD_TLS_PEER_VERIFIED;
                        return 0;
                }
        }
        if (!f->peer_verify_reason)
                return -ENOMEM;
        f->peer = SMTPD_TLS_PEER_NOT_VERIFIED;
        return 0;
}

int smtpd_tls_facts(SmtpdTlsSession *s, SmtpdTlsFacts *ret) {
        SmtpdTlsFacts f = {};
        int r;

        if (!s || !ret)
                return -EINVAL;
        f.version = gnutls_protocol_get_name(gnutls_protocol_get_version(s->gs));
        f.cipher = gnutls_cipher_get_name(gnutls_cipher_get(s->gs));
        f.resumed = gnutls_session_is_resumed(s->gs);
        f.description = gnutls_session_get_desc(s->gs);
        if (f.description) {
                /* gnutls_free may differ from free */
                char *c = strdup(f.description);
                gnutls_free(f.description);
                f.description = c;
        }

        char name[256];
        size_t len = sizeof name;
        unsigned type;
        if (gnutls_server_name_get(s->gs, name, &len, &type, 0) >= 0 && type == GNUTLS_NAME_DNS) {
                f.sni = strndup(name, len);
                if (!f.sni) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        r = peer_facts(s, &f);
        if (r < 0)
                goto fail;
        *ret = f;
        return 0;
fail:
        smtpd_tls_facts_done(&f);
        return r;
}

void smtpd_tls_facts_done(SmtpdTlsFacts *f) {
        if (!f)
                return;
        free(f->description);
        free(f->sni);
        free(f->peer_subject);
        free(f->peer_issuer);
        free(f->peer_cn);
        free(f->peer_verify_reason);
        *f = (SmtpdTlsFacts){};
}
