/* SPDX-License-Identifier: MIT */
/* io.halyard.Arc: one Job per call. The message comes as a passed fd, read
 * in chunks (a regular file or memfd at once from offset 0, anything else
 * through an I/O source so a slow pipe never blocks the loop) into the
 * state machines of shared/ (DKIM verifier, ARC validator, DKIM signer, SPF
 * check, DMARC evaluation). Their key and record queries go to the answer
 * cache (arcd-dns.c) or to libunbound; the answers are handed back as they
 * come. When everything is known, Authenticate replies at once, and Seal
 * and Sign hand the signing to the worker threads (arcd-worker.c); the reply
 * is sent from the loop when the worker is done. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "arcd.h"
#include "authres.h"
#include "io.halyard.Arc.varlink.h"
#include "log.h"
#include "macro.h"
#if ARCD_WITH_SPF_DMARC
#include "dmarc.h"
#include "spf.h"
#endif

#define READ_CHUNK (256U * 1024U)
/* Read at most this much per loop iteration, so one big message does not
 * hold up every other call. */
#define READ_SLICE (4U * 1024U * 1024U)
/* A call whose input never ends (a pipe left open) or whose lookups hang
 * is answered with an error after this long; DNS has its own timeout. */
#define JOB_TIMEOUT_USEC (120ULL * 1000000ULL)

enum {
        CHECK_SPF = 1 << 0,
        CHECK_DKIM = 1 << 1,
        CHECK_DMARC = 1 << 2,
        CHECK_ARC = 1 << 3,
        CHECK_ALL = CHECK_SPF | CHECK_DKIM | CHECK_DMARC | CHECK_ARC,
};

enum {
        CONSUMER_DKIM = 1 << 0,
        CONSUMER_ARC = 1 << 1,
        CONSUMER_SPF = 1 << 2,
        CONSUMER_DMARC = 1 << 3,
};

typedef struct Lookup {
        struct Lookup *next;
        Job *job;
        char *name;
        uint16_t type;
        unsigned consumers;
        DnsQuery *query;
} Lookup;

struct Job {
        Job *next, *prev;
        Manager *m;
        Settings *settings;
        Varlink *link;
        ArcdMethod method;

        int fd;
        bool regular;
        uint64_t offset;
        sd_event_source *io;
        sd_event_source *timer;
        sd_event_source *defer;         /* the next slice of a regular file */
        bool input_done;
        bool in_worker;
        bool finished;

        unsigned checks;
        char *client_ip, *helo, *mail_from, *authserv_id, *auth_results;
        const ArcdKey *key;
        char **sign_headers;

        DkimVerifier *dkim;
        ArcValidator *arc;
        DkimSigner *signer;
#if ARCD_WITH_SPF_DMARC
        SpfCheck *spf;
        DmarcEval *dmarc;
#endif
        bool dmarc_started;
        Lookup *lookups;

        /* Worker input and output. */
        char *aar_results;
        char *seal_authserv_id;
        char *signature;
        ArcSeal seal;
};

/* ---- helpers ---------------------------------------------------------- */

static const char *opt_string(json_object *params, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(params, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        const char *s = json_object_get_string(v);
        return *s ? s : NULL;
}

static char *strdup_or_null(const char *s) {
        return s ? strdup(s) : NULL;
}

static uint64_t now_usec(Manager *m) {
        uint64_t t = 0;
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &t);
        return t;
}

static bool str_has_ctl(const char *s) {
        for (; s && *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        return true;
        return false;
}

static void json_add_string(json_object *o, const char *key, const char *v) {
        if (v)
                json_object_object_add(o, key, json_object_new_string(v));
}

/* A growing string. */
typedef struct Buf {
        char *p;
        size_t n, alloc;
        bool oom;
        bool fold;      /* resinfo separator: folded for our A-R field, plain for the AAR */
} Buf;

static void buf_add(Buf *b, const char *s, size_t n) {
        if (b->oom)
                return;
        if (b->n + n + 1 > b->alloc) {
                size_t a = MAX(b->alloc * 2, b->n + n + 64);
                char *p = realloc(b->p, a);
                if (!p) {
                        b->oom = true;
                        return;
                }
                b->p = p;
                b->alloc = a;
        }
        memcpy(b->p + b->n, s, n);
        b->n += n;
        b->p[b->n] = 0;
}

static void buf_puts(Buf *b, const char *s) {
        buf_add(b, s, strlen(s));
}

static void buf_printf(Buf *b, const char *fmt, ...) _printf_(2, 3);
static void buf_printf(Buf *b, const char *fmt, ...) {
        char tmp[1024];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        buf_add(b, tmp, MIN((size_t) n, sizeof tmp - 1));
}

/* An RFC 8601 pvalue: a token as is, anything else as a quoted-string. */
static void buf_pvalue(Buf *b, const char *v) {
        bool plain = *v != 0;
        for (const char *p = v; *p && plain; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      strchr(".-_@+!#$%&'*^`{|}~", *p)))
                        plain = false;
        if (plain) {
                buf_puts(b, v);
                return;
        }
        buf_puts(b, "\"");
        for (const char *p = v; *p; p++) {
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        continue;
                if (*p == '"' || *p == '\\')
                        buf_puts(b, "\\");
                buf_add(b, p, 1);
        }
        buf_puts(b, "\"");
}

static void buf_sep(Buf *b) {
        if (b->n > 0)
                buf_puts(b, b->fold ? ";\r\n\t" : "; ");
}

/* ---- jobs --------------------------------------------------------------- */

static Job *job_free(Job *j) {
        if (!j)
                return NULL;
        Manager *m = j->m;
        while (j->lookups) {
                Lookup *l = j->lookups;
                j->lookups = l->next;
                dns_query_cancel(l->query);
                free(l->name);
                free(l);
        }
        if (j->prev)
                j->prev->next = j->next;
        else if (m->jobs == j)
                m->jobs = j->next;
        if (j->next)
                j->next->prev = j->prev;
        sd_event_source_disable_unref(j->io);
        sd_event_source_disable_unref(j->timer);
        sd_event_source_disable_unref(j->defer);
        safe_close(j->fd);
        dkim_verifier_free(j->dkim);
        arc_validator_free(j->arc);
        dkim_signer_free(j->signer);
#if ARCD_WITH_SPF_DMARC
        spf_check_free(j->spf);
        dmarc_eval_free(j->dmarc);
#endif
        arc_seal_done(&j->seal);
        free(j->signature);
        free(j->aar_results);
        free(j->seal_authserv_id);
        free(j->client_ip);
        free(j->helo);
        free(j->mail_from);
        free(j->authserv_id);
        free(j->auth_results);
        config_strv_free(j->sign_headers);
        varlink_unref(j->link);
        settings_unref(j->settings);
        free(j);
        m->in_flight--;
        if (m->in_flight == 0 && m->daemon && daemon_is_draining(m->daemon))
                (void) daemon_exit(m->daemon, 0);
        return NULL;
}

static const char *const method_names[_ARCD_METHOD_MAX] = {
        [ARCD_METHOD_AUTHENTICATE] = "Authenticate",
        [ARCD_METHOD_SEAL] = "Seal",
        [ARCD_METHOD_SIGN] = "Sign",
        [ARCD_METHOD_GET_STATUS] = "GetStatus",
};

/* One journal entry per call outcome worth a look, with fields to filter
 * on (journalctl HALYARD_ARC_METHOD=Seal). */
static void job_log(Job *j, int priority, int error, const char *outcome) {
        char method[64], domain[300], selector[300], escaped[200];
        snprintf(method, sizeof method, "HALYARD_ARC_METHOD=%s", method_names[j->method]);
        snprintf(domain, sizeof domain, "HALYARD_ARC_DOMAIN=%s", j->key ? j->key->domain : "");
        snprintf(selector, sizeof selector, "HALYARD_ARC_SELECTOR=%s", j->key ? j->key->selector : "");
        log_escape(outcome, strlen(outcome), escaped, sizeof escaped);
        log_full(priority, error, (const char *[]){ "HALYARD_SERVICE=arcd", method, domain, selector, NULL },
                 "%s%s%s: %s", method_names[j->method], j->key ? " with " : "", j->key ? j->key->domain : "",
                 escaped);
}

static void job_reply(Job *j, json_object *p) {
        if (j->finished)
                return;
        j->finished = true;
        (void) varlink_reply(j->link, p);
}

static void job_error(Job *j, const char *error, const char *key, const char *value) {
        if (j->finished)
                return;
        j->finished = true;
        j->m->failures[j->method]++;
        job_log(j, LOG_DEBUG, 0, value ? value : error);
        json_object *p = json_object_new_object();
        if (key)
                json_add_string(p, key, value ? value : "");
        (void) varlink_error(j->link, error, p);
        json_object_put(p);
}

static void job_error_errno(Job *j, int r) {
        if (j->finished)
                return;
        j->finished = true;
        j->m->failures[j->method]++;
        job_log(j, r == -ETIMEDOUT || r == -ENOMEM ? LOG_WARNING : LOG_DEBUG, r, strerror(-r));
        (void) varlink_error_errno(j->link, r);
}

/* Both return 1 when the job was freed (the caller must not touch it). */
static int job_advance(Job *j);

/* Hands an answer to one consumer. */
static void deliver(Job *j, unsigned consumer, const char *name, const DnsResult *res) {
        int r = 0;
        if (consumer & (CONSUMER_DKIM | CONSUMER_ARC)) {
                DkimLookup lookup = res->status == DNS_STATUS_OK ? DKIM_LOOKUP_FOUND
                                    : res->status == DNS_STATUS_NODATA || res->status == DNS_STATUS_NXDOMAIN
                                            ? DKIM_LOOKUP_NOT_FOUND
                                            : DKIM_LOOKUP_TEMPFAIL;
                size_t n = res->n_records;
                const char **txt = calloc(n + 1, sizeof(char *));
                size_t *len = calloc(n + 1, sizeof(size_t));
                size_t k = 0;
                if (!txt || !len) {
                        free(txt);
                        free(len);
                        job_error_errno(j, -ENOMEM);
                        return;
                }
                for (size_t i = 0; i < n; i++)
                        if (res->records[i].type == DNS_TYPE_TXT) {
                                txt[k] = res->records[i].txt.text;
                                len[k++] = res->records[i].txt.len;
                        }
                if (lookup == DKIM_LOOKUP_FOUND && k == 0)
                        lookup = DKIM_LOOKUP_NOT_FOUND;
                if ((consumer & CONSUMER_DKIM) && j->dkim)
                        r = dkim_verifier_answer(j->dkim, name, lookup, txt, len, k);
                if (r >= 0 && (consumer & CONSUMER_ARC) && j->arc)
                        r = arc_validator_answer(j->arc, name, lookup, txt, len, k);
                free(txt);
                free(len);
        }
#if ARCD_WITH_SPF_DMARC
        if (r >= 0 && (consumer & CONSUMER_SPF) && j->spf) {
                DnsResult copy = *res;
                copy.qname = name;
                r = spf_check_answer(j->spf, &copy);
        }
        if (r >= 0 && (consumer & CONSUMER_DMARC) && j->dmarc) {
                DnsResult copy = *res;
                copy.qname = name;
                r = dmarc_eval_answer(j->dmarc, &copy);
        }
#endif
        if (r < 0 && r != -EALREADY && r != -ENOENT)
                job_error_errno(j, r);
}

static void on_dns(DnsQuery *q _unused_, const DnsResult *res, void *userdata) {
        Lookup *l = userdata;
        Job *j = l->job;
        Manager *m = j->m;

        for (Lookup **p = &j->lookups; *p; p = &(*p)->next)
                if (*p == l) {
                        *p = l->next;
                        break;
                }
        if (res->status != DNS_STATUS_CANCELED)
                (void) dns_cache_put(m->cache, res, now_usec(m));
        deliver(j, l->consumers, l->name, res);
        free(l->name);
        free(l);
        (void) job_advance(j);
}

/* Asks for name/type on behalf of a consumer: from the cache, by joining a
 * lookup of the same name in flight, or with a new query. Returns 1 when an
 * answer was delivered synchronously. */
static int request(Job *j, unsigned consumer, const char *name, uint16_t type) {
        Manager *m = j->m;
        const DnsResult *cached = dns_cache_get(m->cache, name, type, now_usec(m));
        if (cached) {
                m->dns_cache_hits++;
                _cleanup_free_ char *copy = strdup(name);
                if (!copy)
                        return -ENOMEM;
                deliver(j, consumer, copy, cached);
                return 1;
        }
        for (Lookup *l = j->lookups; l; l = l->next)
                if (l->type == type && strcasecmp(l->name, name) == 0) {
                        l->consumers |= consumer;
                        return 0;
                }
        Lookup *l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->job = j;
        l->type = type;
        l->consumers = consumer;
        l->name = strdup(name);
        if (!l->name) {
                free(l);
                return -ENOMEM;
        }
        int r = dns_query(m->resolver, name, type, on_dns, l, &l->query);
        if (r < 0) {
                /* Answer as a temporary failure (a bad name: not found). */
                DnsResult fake = {
                        .qname = l->name,
                        .qtype = type,
                        .status = r == -EINVAL ? DNS_STATUS_NXDOMAIN : DNS_STATUS_SERVFAIL,
                        .rcode = r == -EINVAL ? DNS_RCODE_NXDOMAIN : DNS_RCODE_SERVFAIL,
                        .error = r,
                };
                deliver(j, consumer, l->name, &fake);
                free(l->name);
                free(l);
                return 1;
        }
        m->dns_queries++;
        l->next = j->lookups;
        j->lookups = l;
        return 0;
}

_unused_ static const MailHeaders *job_headers(Job *j) {
        const MailHeaders *h = NULL;
        if (j->dkim)
                h = dkim_verifier_headers(j->dkim);
        if (!h && j->arc)
                h = arc_validator_headers(j->arc);
        return h;
}

#if ARCD_WITH_SPF_DMARC
static int start_dmarc(Job *j) {
        const SpfResult *spf = NULL;
        const DkimResult *dk = NULL;
        size_t n_dk = 0;
        _cleanup_free_ char *from = NULL;
        const MailHeaders *h = job_headers(j);

        if (j->spf && spf_check_result(j->spf, &spf) < 0)
                spf = NULL;
        if (j->dkim)
                (void) dkim_verifier_results(j->dkim, &dk, &n_dk);
        if (h) {
                const MailHeaderField *from_field = NULL;
                size_t n_from = 0;
                for (size_t i = 0; i < mail_headers_count(h); i++) {
                        const MailHeaderField *f = mail_headers_get(h, i);
                        if (mail_header_field_is(f, "From")) {
                                from_field = f;
                                n_from++;
                        }
                }
                if (n_from == 1)
                        (void) dmarc_from_domain(from_field->value, from_field->value_len, &from);
        }
        DmarcAuthDomain *auth = calloc(n_dk + 1, sizeof *auth);
        if (!auth)
                return -ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < n_dk; i++)
                if (dk[i].signature)
                        auth[k++] = (DmarcAuthDomain) { .domain = dk[i].signature->domain,
                                                        .pass = dk[i].status == DKIM_STATUS_PASS };
        unsigned rnd = 0;
        (void) !getrandom(&rnd, sizeof rnd, GRND_NONBLOCK);
        DmarcParams p = {
                .from_domain = from,
                .spf_domain = spf ? spf->domain : NULL,
                .spf_pass = spf && spf->result == SPF_RESULT_PASS,
                .dkim = auth,
                .n_dkim = k,
                .random = rnd % 100,
        };
        int r = dmarc_eval_new(j->m->psl, &p, &j->dmarc);
        free(auth);
        return r;
}
#endif

static int job_complete(Job *j);

static int job_advance(Job *j) {
        const char *name;
        bool progress = true;
        int r;

        while (progress && !j->finished) {
                progress = false;
                while (j->dkim && dkim_verifier_next_query(j->dkim, &name) > 0) {
                        r = request(j, CONSUMER_DKIM, name, DNS_TYPE_TXT);
                        if (r < 0)
                                goto fail;
                        progress |= r > 0;
                }
                while (j->arc && arc_validator_next_query(j->arc, &name) > 0) {
                        r = request(j, CONSUMER_ARC, name, DNS_TYPE_TXT);
                        if (r < 0)
                                goto fail;
                        progress |= r > 0;
                }
#if ARCD_WITH_SPF_DMARC
                uint16_t type;
                while (j->spf && !spf_check_is_done(j->spf) && spf_check_next_query(j->spf, &name, &type) > 0) {
                        _cleanup_free_ char *copy = strdup(name);
                        if (!copy)
                                { r = -ENOMEM; goto fail; }
                        r = request(j, CONSUMER_SPF, copy, type);
                        if (r < 0)
                                goto fail;
                        progress |= r > 0;
                }
                if ((j->checks & CHECK_DMARC) && !j->dmarc_started && j->input_done &&
                    (!j->dkim || dkim_verifier_is_done(j->dkim)) && (!j->spf || spf_check_is_done(j->spf))) {
                        j->dmarc_started = true;
                        r = start_dmarc(j);
                        if (r < 0)
                                goto fail;
                        progress = true;
                }
                while (j->dmarc && !dmarc_eval_is_done(j->dmarc) && dmarc_eval_next_query(j->dmarc, &name) > 0) {
                        _cleanup_free_ char *copy = strdup(name);
                        if (!copy)
                                { r = -ENOMEM; goto fail; }
                        r = request(j, CONSUMER_DMARC, copy, DNS_TYPE_TXT);
                        if (r < 0)
                                goto fail;
                        progress |= r > 0;
                }
#endif
        }
        if (j->finished)
                goto done;
        if (!j->input_done || j->in_worker)
                return 0;
        if (j->dkim && !dkim_verifier_is_done(j->dkim))
                return 0;
        if (j->arc && !arc_validator_is_done(j->arc))
                return 0;
#if ARCD_WITH_SPF_DMARC
        if (j->spf && !spf_check_is_done(j->spf))
                return 0;
        if ((j->checks & CHECK_DMARC) && (!j->dmarc_started || (j->dmarc && !dmarc_eval_is_done(j->dmarc))))
                return 0;
#endif
        return job_complete(j);
fail:
        job_error_errno(j, r);
done:
        if (j->in_worker)
                return 0;
        job_free(j);
        return 1;
}

/* ---- results to JSON and to an Authentication-Results value ------------- */

static json_object *dkim_json(const DkimResult *d) {
        json_object *o = json_object_new_object();
        json_add_string(o, "result", dkim_status_to_string(d->status));
        json_add_string(o, "reason", d->reason);
        if (d->signature) {
                const DkimSignature *s = d->signature;
                json_add_string(o, "domain", s->domain);
                json_add_string(o, "selector", s->selector);
                json_add_string(o, "algorithm", dkim_algorithm_to_string(s->algorithm));
                json_add_string(o, "identity", s->identity);
                if (s->signature_b64) {
                        char prefix[9];
                        snprintf(prefix, sizeof prefix, "%s", s->signature_b64);
                        json_add_string(o, "signaturePrefix", prefix);
                }
        }
        if (d->key_bits)
                json_object_object_add(o, "keyBits", json_object_new_int64(d->key_bits));
        if (d->testing)
                json_object_object_add(o, "testing", json_object_new_boolean(true));
        return o;
}

static json_object *arc_json(const ArcResult *a) {
        json_object *o = json_object_new_object(), *sets = json_object_new_array();
        json_add_string(o, "status", arc_status_to_string(a->status));
        json_object_object_add(o, "temporary", json_object_new_boolean(a->temporary));
        json_add_string(o, "reason", a->reason);
        if (a->failed_instance)
                json_object_object_add(o, "failedInstance", json_object_new_int64(a->failed_instance));
        json_object_object_add(o, "sets", json_object_new_int64(a->n_sets));
        json_object_object_add(o, "oldestPass", json_object_new_int64(a->oldest_pass));
        for (unsigned i = 0; i < a->n_sets; i++) {
                const ArcSetResult *s = &a->sets[i];
                json_object *e = json_object_new_object();
                json_object_object_add(e, "instance", json_object_new_int64(s->instance));
                json_add_string(e, "amsResult", dkim_status_to_string(s->ams_status));
                json_add_string(e, "asResult", dkim_status_to_string(s->as_status));
                if (s->ams)
                        json_add_string(e, "amsDomain", s->ams->domain);
                if (s->as)
                        json_add_string(e, "asDomain", s->as->domain);
                const char *reason = s->as_reason ? s->as_reason : s->ams_reason;
                json_add_string(e, "reason", reason);
                json_object_array_add(sets, e);
        }
        json_object_object_add(o, "perSet", sets);
        return o;
}

/* The resinfo list (no authserv-id) of what this job found. */
static int job_resinfo(Job *j, Buf *b) {
#if ARCD_WITH_SPF_DMARC
        if (j->spf) {
                const SpfResult *s;
                if (spf_check_result(j->spf, &s) >= 0) {
                        buf_sep(b);
                        buf_printf(b, "spf=%s", spf_result_to_string(s->result));
                        if (s->identity && strcmp(s->identity, "helo") == 0) {
                                buf_puts(b, " smtp.helo=");
                                buf_pvalue(b, s->domain ? s->domain : "");
                        } else if (s->sender) {
                                buf_puts(b, " smtp.mailfrom=");
                                buf_pvalue(b, s->sender);
                        }
                }
        }
#endif
        if ((j->checks & CHECK_DKIM) && j->dkim) {
                const DkimResult *d;
                size_t n = 0;
                if (dkim_verifier_results(j->dkim, &d, &n) >= 0) {
                        if (n == 0) {
                                buf_sep(b);
                                buf_puts(b, "dkim=none");
                        }
                        for (size_t i = 0; i < n; i++) {
                                buf_sep(b);
                                buf_printf(b, "dkim=%s", dkim_status_to_string(d[i].status));
                                if (d[i].key_bits && d[i].signature)
                                        buf_printf(b, " (%u-bit %s key)", d[i].key_bits,
                                                   d[i].signature->algorithm == DKIM_ALGORITHM_ED25519_SHA256 ? "ed25519"
                                                                                                               : "rsa");
                                if (d[i].reason) {
                                        buf_puts(b, " reason=");
                                        buf_pvalue(b, d[i].reason);
                                }
                                if (d[i].signature) {
                                        const DkimSignature *s = d[i].signature;
                                        buf_puts(b, " header.d=");
                                        buf_pvalue(b, s->domain);
                                        if (s->identity) {
                                                buf_puts(b, " header.i=");
                                                buf_pvalue(b, s->identity);
                                        }
                                        buf_puts(b, " header.s=");
                                        buf_pvalue(b, s->selector);
                                        buf_printf(b, " header.a=%s", dkim_algorithm_to_string(s->algorithm));
                                        if (s->signature_b64) {
                                                char prefix[9];
                                                snprintf(prefix, sizeof prefix, "%s", s->signature_b64);
                                                buf_puts(b, " header.b=");
                                                buf_pvalue(b, prefix);
                                        }
                                }
                        }
                }
        }
#if ARCD_WITH_SPF_DMARC
        if (j->dmarc) {
                const DmarcResult *d;
                if (dmarc_eval_result(j->dmarc, &d) >= 0) {
                        buf_sep(b);
                        buf_printf(b, "dmarc=%s", dmarc_result_to_string(d->result));
                        if (d->record)
                                buf_printf(b, " (p=%s dis=%s)", dmarc_policy_to_string(d->policy),
                                           dmarc_policy_to_string(d->disposition));
                        if (d->from_domain) {
                                buf_puts(b, " header.from=");
                                buf_pvalue(b, d->from_domain);
                        }
                }
        }
#endif
        if ((j->checks & CHECK_ARC) && j->arc) {
                const ArcResult *a;
                if (arc_validator_result(j->arc, &a) >= 0) {
                        buf_sep(b);
                        buf_printf(b, "arc=%s", arc_status_to_string(a->status));
                        if (a->status == ARC_STATUS_FAIL && a->reason) {
                                buf_puts(b, " reason=");
                                buf_pvalue(b, a->reason);
                        }
                        if (a->status == ARC_STATUS_PASS)
                                buf_printf(b, " header.oldest-pass=%u", a->oldest_pass);
                        /* Only with a chain: without one the address would
                         * travel in our AAR for nothing (OpenARC #146). */
                        if (a->status != ARC_STATUS_NONE && j->client_ip) {
                                buf_puts(b, " smtp.remote-ip=");
                                buf_pvalue(b, j->client_ip);
                        }
                }
        }
        return b->oom ? -ENOMEM : 0;
}

static json_object *authenticate_json(Job *j, const char *authserv_id) {
        json_object *p = json_object_new_object(), *dk = json_object_new_array();
#if ARCD_WITH_SPF_DMARC
        if (j->spf) {
                const SpfResult *s;
                if (spf_check_result(j->spf, &s) >= 0) {
                        json_object *o = json_object_new_object();
                        json_add_string(o, "result", spf_result_to_string(s->result));
                        json_add_string(o, "identity", s->identity ? s->identity : "mailfrom");
                        json_add_string(o, "domain", s->domain ? s->domain : "");
                        json_add_string(o, "mailFrom", s->sender);
                        json_add_string(o, "reason", s->reason);
                        json_object_object_add(o, "lookups", json_object_new_int64(s->lookups));
                        json_object_object_add(o, "voidLookups", json_object_new_int64(s->void_lookups));
                        json_object_object_add(p, "spf", o);
                }
        }
        if (j->dmarc) {
                const DmarcResult *d;
                if (dmarc_eval_result(j->dmarc, &d) >= 0) {
                        json_object *o = json_object_new_object();
                        json_add_string(o, "result", dmarc_result_to_string(d->result));
                        json_add_string(o, "fromDomain", d->from_domain);
                        json_add_string(o, "orgDomain", d->org_domain);
                        json_add_string(o, "recordDomain", d->record_domain);
                        if (d->record) {
                                json_add_string(o, "policy", dmarc_policy_to_string(d->policy));
                                json_add_string(o, "disposition", dmarc_policy_to_string(d->disposition));
                                json_object_object_add(o, "pct", json_object_new_int64(d->pct));
                        }
                        json_object_object_add(o, "spfAligned", json_object_new_boolean(d->spf_aligned));
                        json_object_object_add(o, "dkimAligned", json_object_new_boolean(d->dkim_aligned));
                        json_add_string(o, "reason", d->reason);
                        json_object_object_add(p, "dmarc", o);
                }
        }
#endif
        if ((j->checks & CHECK_DKIM) && j->dkim) {
                const DkimResult *d;
                size_t n = 0;
                if (dkim_verifier_results(j->dkim, &d, &n) >= 0)
                        for (size_t i = 0; i < n; i++)
                                json_object_array_add(dk, dkim_json(&d[i]));
        }
        json_object_object_add(p, "dkim", dk);
        if ((j->checks & CHECK_ARC) && j->arc) {
                const ArcResult *a;
                if (arc_validator_result(j->arc, &a) >= 0)
                        json_object_object_add(p, "arc", arc_json(a));
        }
        Buf b = { .fold = true };
        (void) job_resinfo(j, &b);
        Buf h = {};
        buf_puts(&h, authserv_id);
        if (b.n == 0)
                buf_puts(&h, "; none");
        else {
                buf_puts(&h, ";\r\n\t");
                buf_add(&h, b.p, b.n);
        }
        json_add_string(p, "header", h.oom || b.oom ? authserv_id : h.p);
        free(b.p);
        free(h.p);
        return p;
}

/* ---- signing on the workers ---------------------------------------------- */

static int work_sign(void *userdata) {
        Job *j = userdata;
        return dkim_signer_sign(j->signer, &j->signature);
}

static int work_seal(void *userdata) {
        Job *j = userdata;
        ArcSealParams p = {
                .domain = j->key->domain,
                .selector = j->key->selector,
                .key = j->key->key,
                .algorithm = j->key->algorithm,
                .authserv_id = j->seal_authserv_id,
                .results = j->aar_results,
                .timestamp = (uint64_t) time(NULL),
                .cv = ARC_SEAL_CV_AUTO,
        };
        return arc_validator_seal(j->arc, &p, &j->seal);
}

static void on_signed(int r, void *userdata) {
        Job *j = userdata;
        j->in_worker = false;
        if (r == -EBADMSG)
                job_error(j, "io.halyard.Arc.BadMessage", "reason",
                          "malformed header section, or not exactly one From field");
        else if (r < 0)
                job_error_errno(j, r);
        else {
                json_object *p = json_object_new_object();
                json_add_string(p, "header", j->signature);
                job_reply(j, p);
                json_object_put(p);
        }
        job_free(j);
}

static void on_sealed(int r, void *userdata) {
        Job *j = userdata;
        j->in_worker = false;
        if (r == -EPERM)
                job_error(j, "io.halyard.Arc.SealRefused", "reason",
                          "the newest ARC-Seal says cv=fail: the chain has ended");
        else if (r == -E2BIG)
                job_error(j, "io.halyard.Arc.SealRefused", "reason", "the message has 50 ARC sets already");
        else if (r == -EAGAIN)
                job_error(j, "io.halyard.Arc.TemporaryFailure", "reason",
                          "a key lookup failed temporarily: the chain cannot be judged now");
        else if (r == -EBADMSG)
                job_error(j, "io.halyard.Arc.BadMessage", "reason", "malformed header section");
        else if (r < 0)
                job_error_errno(j, r);
        else {
                json_object *p = json_object_new_object(), *h = json_object_new_array();
                json_object_object_add(p, "instance", json_object_new_int64(j->seal.instance));
                json_add_string(p, "cv", arc_cv_to_string(j->seal.cv));
                json_object_array_add(h, json_object_new_string(j->seal.as));
                json_object_array_add(h, json_object_new_string(j->seal.ams));
                json_object_array_add(h, json_object_new_string(j->seal.aar));
                json_object_object_add(p, "headers", h);
                job_reply(j, p);
                json_object_put(p);
        }
        job_free(j);
}

/* authResults unfolded (CRLF/LF + white space -> one space); NULL (as for
 * OOM, answered InvalidParameter) for any other control character, which
 * could end the AAR field and start another. */
static char *unfold(const char *s) {
        char *u = malloc(strlen(s) + 1), *o = u;
        if (!u)
                return NULL;
        for (const char *p = s; *p; p++) {
                if (*p == '\r' || *p == '\n') {
                        while (p[1] == '\r' || p[1] == '\n')
                                p++;
                        if (p[1] != ' ' && p[1] != '\t' && p[1] != 0) {
                                free(u);
                                return NULL;
                        }
                        *o++ = ' ';
                        while (p[1] == ' ' || p[1] == '\t')
                                p++;
                } else if (*p == '\t')
                        *o++ = ' ';
                else if ((unsigned char) *p < 0x20 || *p == 0x7f) {
                        free(u);
                        return NULL;
                } else
                        *o++ = *p;
        }
        *o = 0;
        return u;
}

/* The AAR body from the caller's authResults: an A-R value with or without
 * the authserv-id. */
static int seal_results_from_param(Job *j) {
        const char *s = j->auth_results;
        while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
                s++;
        const char *semi = strchr(s, ';');
        size_t first = semi ? (size_t) (semi - s) : strlen(s);
        bool has_id = memchr(s, '=', first) == NULL;
        const char *rest = s;
        if (has_id) {
                size_t n = first;
                while (n > 0 && strchr(" \t\r\n", s[n - 1]))
                        n--;
                j->seal_authserv_id = strndup(s, n);
                if (!j->seal_authserv_id)
                        return -ENOMEM;
                rest = semi ? semi + 1 : s + first;
        } else {
                j->seal_authserv_id = strdup(j->settings->authserv_id);
                if (!j->seal_authserv_id)
                        return -ENOMEM;
        }
        while (*rest == ' ' || *rest == '\t' || *rest == '\r' || *rest == '\n')
                rest++;
        size_t n = strlen(rest);
        while (n > 0 && strchr(" \t\r\n;", rest[n - 1]))
                n--;
        if (n == 4 && strncasecmp(rest, "none", 4) == 0)
                n = 0;
        j->aar_results = strndup(rest, n);
        return j->aar_results ? 0 : -ENOMEM;
}

static int job_complete(Job *j) {
        Manager *m = j->m;
        int r;

        switch (j->method) {
        case ARCD_METHOD_AUTHENTICATE: {
                json_object *p = authenticate_json(j, j->authserv_id ? j->authserv_id : j->settings->authserv_id);
                job_reply(j, p);
                json_object_put(p);
                job_free(j);
                return 1;
        }
        case ARCD_METHOD_SIGN:
                j->in_worker = true;
                j->timer = sd_event_source_disable_unref(j->timer);
                r = worker_submit(m->worker, work_sign, on_signed, j);
                break;
        case ARCD_METHOD_SEAL: {
                const ArcResult *a;
                if (arc_validator_result(j->arc, &a) >= 0) {
                        if (a->n_sets >= ARC_MAX_INSTANCES) {
                                job_error(j, "io.halyard.Arc.SealRefused", "reason",
                                          "the message has 50 ARC sets already");
                                job_free(j);
                                return 1;
                        }
                }
                if (j->auth_results)
                        r = seal_results_from_param(j);
                else {
                        Buf b = {};
                        r = job_resinfo(j, &b);
                        j->aar_results = b.p ? b.p : strdup("");
                        j->seal_authserv_id = strdup(j->settings->authserv_id);
                        if (!j->aar_results || !j->seal_authserv_id)
                                r = -ENOMEM;
                }
                if (r >= 0) {
                        j->in_worker = true;
                        j->timer = sd_event_source_disable_unref(j->timer);
                        r = worker_submit(m->worker, work_seal, on_sealed, j);
                }
                break;
        }
        default:
                r = -EINVAL;
        }
        if (r < 0) {
                j->in_worker = false;
                job_error_errno(j, r);
                job_free(j);
                return 1;
        }
        return 0;
}

/* ---- reading the message ------------------------------------------------- */

static int job_feed(Job *j, const void *p, size_t n) {
        int r = 0;
        if (j->dkim)
                r = dkim_verifier_feed(j->dkim, p, n);
        if (r >= 0 && j->arc)
                r = arc_validator_feed(j->arc, p, n);
        if (r >= 0 && j->signer)
                r = dkim_signer_feed(j->signer, p, n);
        return r;
}

static int job_feed_end(Job *j) {
        int r = 0;
        j->input_done = true;
        j->io = sd_event_source_disable_unref(j->io);
        j->fd = safe_close(j->fd);
        if (j->dkim)
                r = dkim_verifier_feed_end(j->dkim);
        if (r >= 0 && j->arc)
                r = arc_validator_feed_end(j->arc);
        if (r >= 0 && j->signer)
                r = dkim_signer_feed_end(j->signer);
        return r;
}

/* Reads what is there, at most READ_SLICE: 1 at the end of the input, 0
 * to wait for a pipe or socket (EAGAIN), 2 when a slice of a regular file
 * was read and more follows, negative errno. */
static int job_read(Job *j) {
        char *buf = malloc(READ_CHUNK);
        if (!buf)
                return -ENOMEM;
        int r = 0;
        for (size_t slice = 0;; slice += READ_CHUNK) {
                if (slice >= READ_SLICE) {
                        r = j->regular ? 2 : 0; /* a pipe's I/O source fires again */
                        break;
                }
                ssize_t n = j->regular ? pread(j->fd, buf, READ_CHUNK, (off_t) j->offset)
                                       : read(j->fd, buf, READ_CHUNK);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = errno == EAGAIN ? 0 : -errno;
                        break;
                }
                if (n == 0) {
                        r = 1;
                        break;
                }
                j->offset += (uint64_t) n;
                if (j->offset > j->settings->max_message_size) {
                        r = -EFBIG;
                        break;
                }
                r = job_feed(j, buf, (size_t) n);
                if (r < 0)
                        break;
                /* Queries become known once the header section is in. */
                if (job_advance(j) > 0) {
                        free(buf);
                        return -ECANCELED; /* j is gone */
                }
        }
        free(buf);
        return r;
}

static void job_input_error(Job *j, int r) {
        if (r == -ECANCELED)
                return;
        if (r == -EFBIG) {
                char reason[128];
                snprintf(reason, sizeof reason, "the message is larger than MaxMessageSize=%llu bytes",
                         (unsigned long long) j->settings->max_message_size);
                job_error(j, "io.halyard.Arc.BadMessage", "reason", reason);
        } else
                job_error_errno(j, r);
}

static int on_continue(sd_event_source *s _unused_, void *userdata);

static void job_after_read(Job *j, int r) {
        if (r == -ECANCELED)
                return;
        if (r == 2) {
                if (j->defer)
                        r = sd_event_source_set_enabled(j->defer, SD_EVENT_ONESHOT);
                else
                        r = sd_event_add_defer(j->m->event, &j->defer, on_continue, j);
                if (r >= 0)
                        return;
        }
        if (r < 0) {
                job_input_error(j, r);
                job_free(j);
                return;
        }
        if (r == 0)
                return;
        r = job_feed_end(j);
        if (r < 0) {
                job_error_errno(j, r);
                job_free(j);
                return;
        }
        (void) job_advance(j);
}

static int on_continue(sd_event_source *s _unused_, void *userdata) {
        Job *j = userdata;
        job_after_read(j, job_read(j));
        return 0;
}

static int on_readable(sd_event_source *s _unused_, int fd _unused_, uint32_t revents _unused_, void *userdata) {
        Job *j = userdata;
        job_after_read(j, job_read(j));
        return 0;
}

static int job_start_input(Job *j) {
        struct stat st;
        if (fstat(j->fd, &st) < 0)
                return -errno;
        j->regular = S_ISREG(st.st_mode);
        if (j->regular) {
                if ((uint64_t) st.st_size > j->settings->max_message_size)
                        return -EFBIG;
                job_after_read(j, job_read(j));
                return 0;
        }
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        int fl = fcntl(j->fd, F_GETFL);
        if (fl < 0 || fcntl(j->fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return -errno;
        return sd_event_add_io(j->m->event, &j->io, j->fd, EPOLLIN, on_readable, j);
}

/* ---- method handlers -------------------------------------------------- */

static int job_new(Manager *m, Varlink *link, ArcdMethod method, json_object *params, Job **ret) {
        json_object *v;
        Job *j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        j->m = m;
        j->fd = -1;
        j->method = method;
        j->link = varlink_ref(link);
        j->settings = settings_ref(m->settings);
        m->in_flight++;
        j->next = m->jobs;
        if (m->jobs)
                m->jobs->prev = j;
        m->jobs = j;

        if (!json_object_object_get_ex(params, "content", &v) || !json_object_is_type(v, json_type_int) ||
            json_object_get_int64(v) < 0) {
                job_error(j, VARLINK_ERROR_INVALID_PARAMETER, "parameter", "content");
                job_free(j);
                return 0;
        }
        j->fd = varlink_take_fd(link, (unsigned) json_object_get_int64(v));
        if (j->fd < 0) {
                job_error(j, VARLINK_ERROR_INVALID_PARAMETER, "parameter", "content");
                job_free(j);
                return 0;
        }
        *ret = j;
        return 1;
}

static int on_job_timeout(sd_event_source *s _unused_, uint64_t usec _unused_, void *userdata) {
        Job *j = userdata;
        if (j->in_worker)
                return 0;
        log_debug("%s call timed out (%s)", j->input_done ? "DNS" : "input",
                  j->method == ARCD_METHOD_SEAL ? "Seal" : j->method == ARCD_METHOD_SIGN ? "Sign" : "Authenticate");
        job_error_errno(j, -ETIMEDOUT);
        job_free(j);
        return 0;
}

static int job_go(Job *j) {
        int r = sd_event_add_time_relative(j->m->event, &j->timer, CLOCK_MONOTONIC, JOB_TIMEOUT_USEC, 0,
                                           on_job_timeout, j);
        if (r < 0) {
                job_error_errno(j, r);
                job_free(j);
                return 0;
        }
        r = job_start_input(j);
        if (r < 0) {
                job_input_error(j, r);
                job_free(j);
        }
        return 0;
}

static int job_bad_param(Job *j, const char *name) {
        job_error(j, VARLINK_ERROR_INVALID_PARAMETER, "parameter", name);
        job_free(j);
        return 0;
}

static int job_setup_checks(Job *j, json_object *params) {
        const char *s;
        int r;

        j->client_ip = strdup_or_null(opt_string(params, "clientIp"));
        j->helo = strdup_or_null(opt_string(params, "helo"));
        j->mail_from = strdup_or_null(opt_string(params, "mailFrom"));
        if (str_has_ctl(j->client_ip) || str_has_ctl(j->helo) || str_has_ctl(j->mail_from))
                return -EINVAL;
        if ((s = opt_string(params, "authservId"))) {
                if (strpbrk(s, " \t;()\"\\") || str_has_ctl(s))
                        return -EINVAL;
                j->authserv_id = strdup(s);
        }
        if (j->checks & (CHECK_DKIM | CHECK_DMARC)) {
                DkimVerifyParams p = { .min_rsa_bits = j->settings->min_rsa_bits };
                r = dkim_verifier_new(&p, &j->dkim);
                if (r < 0)
                        return r;
        }
        if (j->checks & CHECK_ARC) {
                ArcValidateParams p = { .min_rsa_bits = j->settings->min_rsa_bits };
                r = arc_validator_new(&p, &j->arc);
                if (r < 0)
                        return r;
        }
#if ARCD_WITH_SPF_DMARC
        if ((j->checks & (CHECK_SPF | CHECK_DMARC)) && j->client_ip) {
                const char *mf = j->mail_from;
                if (mf && mf[0] == '<') {
                        /* tolerate the angle brackets of the SMTP command */
                        size_t n = strlen(mf);
                        if (n >= 2 && mf[n - 1] == '>') {
                                char *x = strndup(mf + 1, n - 2);
                                if (!x)
                                        return -ENOMEM;
                                free(j->mail_from);
                                j->mail_from = x;
                        }
                }
                SpfParams p = {
                        .client_ip = j->client_ip,
                        .helo = j->helo,
                        .mail_from = j->mail_from,
                        .receiver = j->authserv_id ? j->authserv_id : j->settings->authserv_id,
                };
                r = spf_check_new(&p, &j->spf);
                if (r == -EINVAL)
                        return -EADDRNOTAVAIL;
                if (r < 0)
                        return r;
        }
#endif
        return 0;
}

static int parse_checks(json_object *params, unsigned *ret) {
        json_object *a;
        *ret = CHECK_ALL;
        if (!json_object_object_get_ex(params, "checks", &a) || json_object_is_type(a, json_type_null))
                return 0;
        unsigned c = 0;
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                const char *s = json_object_get_string(json_object_array_get_idx(a, i));
                if (streq_ptr(s, "spf"))
                        c |= CHECK_SPF;
                else if (streq_ptr(s, "dkim"))
                        c |= CHECK_DKIM;
                else if (streq_ptr(s, "dmarc"))
                        c |= CHECK_DMARC;
                else if (streq_ptr(s, "arc"))
                        c |= CHECK_ARC;
                else
                        return -EINVAL;
        }
        *ret = c;
        return 0;
}

static int method_authenticate(Varlink *link, json_object *params, VarlinkCallFlags flags _unused_, void *userdata) {
        Manager *m = userdata;
        Job *j = NULL;
        unsigned checks;

        m->calls[ARCD_METHOD_AUTHENTICATE]++;
        if (job_new(m, link, ARCD_METHOD_AUTHENTICATE, params, &j) <= 0)
                return 0;
        if (parse_checks(params, &checks) < 0)
                return job_bad_param(j, "checks");
        j->checks = checks;
        int r = job_setup_checks(j, params);
        if (r == -EADDRNOTAVAIL)
                return job_bad_param(j, "clientIp");
        if (r == -EINVAL)
                return job_bad_param(j, "authservId");
        if (r < 0) {
                job_error_errno(j, r);
                job_free(j);
                return 0;
        }
        return job_go(j);
}

static int method_seal(Varlink *link, json_object *params, VarlinkCallFlags flags _unused_, void *userdata) {
        Manager *m = userdata;
        Job *j = NULL;

        m->calls[ARCD_METHOD_SEAL]++;
        if (job_new(m, link, ARCD_METHOD_SEAL, params, &j) <= 0)
                return 0;
        const char *domain = opt_string(params, "domain"), *selector = opt_string(params, "selector");
        if (domain && !selector)
                /* ARC wants rsa-sha256 (receivers do not take Ed25519 seals). */
                j->key = settings_find_key(j->settings, domain, NULL, DKIM_ALGORITHM_RSA_SHA256)
                                 ?: settings_find_key(j->settings, domain, NULL, _DKIM_ALGORITHM_INVALID);
        else if (domain)
                j->key = settings_find_key(j->settings, domain, selector, _DKIM_ALGORITHM_INVALID);
        else
                j->key = settings_find_key(j->settings, j->settings->seal_domain,
                                           selector ? selector : j->settings->seal_selector, _DKIM_ALGORITHM_INVALID);
        if (!j->key) {
                job_error(j, "io.halyard.Arc.NoKey", "domain",
                          domain ? domain : j->settings->seal_domain ? j->settings->seal_domain : "");
                job_free(j);
                return 0;
        }
        const char *ar = opt_string(params, "authResults");
        if (ar) {
                j->auth_results = unfold(ar);
                if (!j->auth_results)
                        return job_bad_param(j, "authResults");
                j->checks = CHECK_ARC;
        } else
                j->checks = CHECK_ALL;
        int r = job_setup_checks(j, params);
        if (r == -EADDRNOTAVAIL)
                return job_bad_param(j, "clientIp");
        if (r < 0) {
                job_error_errno(j, r);
                job_free(j);
                return 0;
        }
        return job_go(j);
}

static int method_sign(Varlink *link, json_object *params, VarlinkCallFlags flags _unused_, void *userdata) {
        Manager *m = userdata;
        Job *j = NULL;
        json_object *a;

        m->calls[ARCD_METHOD_SIGN]++;
        if (job_new(m, link, ARCD_METHOD_SIGN, params, &j) <= 0)
                return 0;
        const char *domain = opt_string(params, "domain"), *selector = opt_string(params, "selector");
        const char *algorithm = opt_string(params, "algorithm"), *canon = opt_string(params, "canonicalization");
        DkimAlgorithm alg = algorithm ? dkim_algorithm_from_string(algorithm, strlen(algorithm)) : _DKIM_ALGORITHM_INVALID;
        if (algorithm && alg < 0)
                return job_bad_param(j, "algorithm");
        DkimCanon header_canon = DKIM_CANON_RELAXED, body_canon = DKIM_CANON_RELAXED;
        if (canon && dkim_canon_pair_from_string(canon, strlen(canon), &header_canon, &body_canon) < 0)
                return job_bad_param(j, "canonicalization");
        j->key = settings_find_key(j->settings, domain, selector, alg);
        if (!j->key) {
                if (j->finished)
                        return 0;
                j->finished = true;
                m->failures[ARCD_METHOD_SIGN]++;
                json_object *p = json_object_new_object();
                json_add_string(p, "domain", domain ? domain : "");
                json_add_string(p, "selector", selector);
                (void) varlink_error(link, "io.halyard.Arc.NoKey", p);
                json_object_put(p);
                job_free(j);
                return 0;
        }
        if (json_object_object_get_ex(params, "headers", &a) && json_object_is_type(a, json_type_array)) {
                size_t n = json_object_array_length(a);
                if (n == 0 || n > 256)
                        return job_bad_param(j, "headers");
                j->sign_headers = calloc(n + 1, sizeof(char *));
                if (!j->sign_headers)
                        return job_bad_param(j, "headers");
                for (size_t i = 0; i < n; i++) {
                        const char *h = json_object_get_string(json_object_array_get_idx(a, i));
                        if (!h || !*h || strpbrk(h, ": \t\r\n;"))
                                return job_bad_param(j, "headers");
                        j->sign_headers[i] = strdup(h);
                        if (!j->sign_headers[i])
                                return job_bad_param(j, "headers");
                }
        }
        DkimSignParams p = {
                .domain = j->key->domain,
                .selector = j->key->selector,
                .key = j->key->key,
                .algorithm = j->key->algorithm,
                .header_canon = header_canon,
                .body_canon = body_canon,
                .headers = (const char *const *) j->sign_headers,
                .timestamp = (uint64_t) time(NULL),
        };
        int r = dkim_signer_new(&p, &j->signer);
        if (r < 0) {
                job_error_errno(j, r);
                job_free(j);
                return 0;
        }
        return job_go(j);
}

static int method_get_status(Varlink *link, json_object *params _unused_, VarlinkCallFlags flags _unused_,
                             void *userdata) {
        Manager *m = userdata;
        const Settings *s = m->settings;
        char summary[256];

        m->calls[ARCD_METHOD_GET_STATUS]++;
        json_object *p = json_object_new_object(), *keys = json_object_new_array(), *methods = json_object_new_array();
        for (size_t i = 0; i < s->n_keys; i++) {
                const ArcdKey *k = &s->keys[i];
                json_object *o = json_object_new_object();
                json_add_string(o, "domain", k->domain);
                json_add_string(o, "selector", k->selector);
                json_add_string(o, "algorithm", dkim_algorithm_to_string(k->algorithm));
                json_object_object_add(o, "bits", json_object_new_int64(k->bits));
                json_object_object_add(o, "seal", json_object_new_boolean(streq_ptr(k->domain, s->seal_domain) &&
                                                                          streq_ptr(k->selector, s->seal_selector)));
                json_object_object_add(o, "sign", json_object_new_boolean(true));
                json_object_array_add(keys, o);
        }
        for (unsigned i = 0; i < _ARCD_METHOD_MAX; i++) {
                json_object *o = json_object_new_object();
                json_add_string(o, "method", method_names[i]);
                json_object_object_add(o, "calls", json_object_new_int64((int64_t) m->calls[i]));
                json_object_object_add(o, "failures", json_object_new_int64((int64_t) m->failures[i]));
                json_object_array_add(methods, o);
        }
        snprintf(summary, sizeof summary, "%zu key%s, %llu authenticated, %llu sealed, %llu signed, %u in flight",
                 s->n_keys, s->n_keys == 1 ? "" : "s", (unsigned long long) m->calls[ARCD_METHOD_AUTHENTICATE],
                 (unsigned long long) m->calls[ARCD_METHOD_SEAL], (unsigned long long) m->calls[ARCD_METHOD_SIGN],
                 m->in_flight);
        json_add_string(p, "summary", summary);
        json_add_string(p, "version", HALYARD_VERSION);
        json_object_object_add(p, "keys", keys);
        json_object_object_add(p, "methods", methods);
        json_object_object_add(p, "dnsQueries", json_object_new_int64((int64_t) m->dns_queries));
        json_object_object_add(p, "dnsCacheHits", json_object_new_int64((int64_t) m->dns_cache_hits));
        json_object_object_add(p, "inFlight", json_object_new_int64(m->in_flight));
        int r = varlink_reply(link, p);
        json_object_put(p);
        return r;
}

void arcd_jobs_abort(Manager *m) {
        while (m->jobs) {
                Job *j = m->jobs;
                j->finished = true;
                job_free(j);
        }
}

int arcd_psl_setup(Manager *m) {
#if ARCD_WITH_SPF_DMARC
        DmarcPsl *p = NULL;
        int r = dmarc_psl_new(NULL, &p);
        if (r < 0)
                return r;
        m->psl = p;
#else
        (void) m;
#endif
        return 0;
}

void arcd_psl_free(Manager *m) {
#if ARCD_WITH_SPF_DMARC
        dmarc_psl_free(m->psl);
#endif
        m->psl = NULL;
}

int arcd_varlink_setup(Manager *m) {
        static const VarlinkMethodBinding methods[] = {
                { "io.halyard.Arc.Authenticate", method_authenticate, VARLINK_METHOD_ACCEPTS_FDS },
                { "io.halyard.Arc.Seal", method_seal, VARLINK_METHOD_ACCEPTS_FDS },
                { "io.halyard.Arc.Sign", method_sign, VARLINK_METHOD_ACCEPTS_FDS },
                { "io.halyard.Arc.GetStatus", method_get_status, 0 },
        };
        return varlink_server_new_service(m->event, "halyard-arcd", io_halyard_Arc_varlink,
                                          methods, ELEMENTSOF(methods), m, &m->varlink);
}
