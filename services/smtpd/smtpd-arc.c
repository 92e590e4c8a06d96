/* SPDX-License-Identifier: MIT */
/* halyard-smtpd and halyard-arcd: see smtpd-arc.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "log.h"
#include "macro.h"
#include "smtpd-arc.h"
#include "smtpd.h"

/* The header block we look at for From: and Authentication-Results:. */
#define ARC_HEADER_BLOCK_MAX (1024U * 1024U)
/* Deferred Sign/Seal requests of one transaction (the policy's and ours). */
#define ARC_OPS_MAX 8U
/* A suspended policy call is answered this long before its own timeout
 * fires, so the policy task never moves on while our call is under way. */
#define ARC_POLICY_MARGIN_USEC (200ULL * 1000ULL)

/* ---- idle connection pool -------------------------------------------------- */

Varlink *smtpd_pool_take(SmtpdPool *p) {
        while (p->n_idle > 0) {
                Varlink *l = p->idle[--p->n_idle];
                if (varlink_is_connected(l))
                        return l;
                varlink_unref(l);
        }
        return NULL;
}

void smtpd_pool_give(SmtpdPool *p, Varlink *link, bool keep) {
        if (keep && p->n_idle < ELEMENTSOF(p->idle) && varlink_is_connected(link))
                p->idle[p->n_idle++] = link;
        else {
                varlink_close(link);
                varlink_unref(link);
        }
}

void smtpd_pool_flush(SmtpdPool *p) {
        while (p->n_idle > 0) {
                Varlink *l = p->idle[--p->n_idle];
                varlink_close(l);
                varlink_unref(l);
        }
}

/* ---- settings ---------------------------------------------------------------- */

void smtpd_arc_settings_done(SmtpdArcSettings *s) {
        free(s->socket);
        free(s->authserv_id);
        config_strv_free(s->seal_domains);
        free(s->seal_domain);
        free(s->seal_selector);
        config_strv_free(s->sign_domains);
        *s = (SmtpdArcSettings) {};
}

static int dup_setting(const Config *c, const char *name, const char *def, char **ret) {
        const char *str = NULL;
        if (config_get_string(c, "Smtpd", name, &str) < 0 || !*str)
                str = def;
        if (!str) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(str);
        return *ret ? 0 : -ENOMEM;
}

int smtpd_arc_settings_load(const Config *c, const char *config_path, const char *hostname, SmtpdArcSettings *ret) {
        SmtpdArcSettings n = { .timeout_usec = 10ULL * 1000000ULL };
        const char *str;
        uint64_t v;
        bool b;
        int r;

        if ((r = dup_setting(c, "ArcSocket", SMTPD_ARC_DEFAULT_SOCKET, &n.socket)) < 0 ||
            (r = dup_setting(c, "AuthservId", hostname, &n.authserv_id)) < 0 ||
            (r = dup_setting(c, "ArcSealDomain", NULL, &n.seal_domain)) < 0 ||
            (r = dup_setting(c, "ArcSealSelector", NULL, &n.seal_selector)) < 0)
                goto fail;
        n.authenticate = config_get_bool(c, "Smtpd", "Authenticate", &b) >= 0 && b;
        n.seal_all = config_get_bool(c, "Smtpd", "ArcSeal", &b) >= 0 && b;
        n.sign = config_get_bool(c, "Smtpd", "DkimSign", &b) >= 0 && b;
        (void) config_get_list(c, "Smtpd", "ArcSealDomains", &n.seal_domains);
        (void) config_get_list(c, "Smtpd", "DkimSignDomains", &n.sign_domains);
        if (config_get_duration(c, "Smtpd", "ArcTimeout", &v) >= 0 && v >= 100000ULL)
                n.timeout_usec = v;
        if (config_get_string(c, "Smtpd", "ArcFailure", &str) >= 0) {
                if (strcmp(str, "tempfail") == 0)
                        n.failure_tempfail = true;
                else if (strcmp(str, "accept") != 0) {
                        const char *file = config_path;
                        unsigned line = 0;
                        (void) config_get_location(c, "Smtpd", "ArcFailure", &file, &line);
                        r = log_error_errno(-EINVAL, "%s:%u: error: ArcFailure= must be accept or tempfail, not \"%s\"",
                                            file, line, str);
                        goto fail;
                }
        }
        *ret = n;
        return 0;
fail:
        smtpd_arc_settings_done(&n);
        return r;
}

/* ---- the transaction ------------------------------------------------------- */

typedef struct ArcOp {
        bool seal;
        char *domain;            /* NULL: arcd's default key */
        char *selector;
        char *auth_results;      /* Seal: the AAR body; NULL: ours */
        json_object *headers;    /* Sign: the h= list, or NULL */
        char *canonicalization;  /* Sign: c=, or NULL for arcd's relaxed/relaxed */
        char *algorithm;         /* Sign: which of the domain's keys, or NULL */
        bool from_policy;
} ArcOp;

typedef void (*ArcReplyFn)(SmtpdArcTxn *t, json_object *parameters, const char *error);

struct SmtpdArcTxn {
        Session *session;

        /* The call under way. */
        Varlink *link;
        bool link_reused;
        const char *method;
        json_object *params;     /* kept for one retry on a stale pooled link */
        int content_fd;          /* what "content" refers to, -1 for none */
        uint64_t timeout_usec;
        ArcReplyFn on_reply;

        /* Authenticate, once per transaction. */
        json_object *auth;       /* the reply's parameters */
        char *auth_error;        /* it failed: the reason, and it is not asked again */
        json_object *spf;        /* before the end of data: SPF alone, for spf_from */
        char *spf_from;

        ArcOp ops[ARC_OPS_MAX];
        size_t n_ops, op_next;
        bool policy_sealed;
        SmtpdArcDone done;

        /* A policy call waiting for Authenticate. */
        SmtpdArcAnswer answer;
        SmtpdPolicyTask *task;
        char call_name[48];
        PolicyValue *call_arg;   /* toString's receiver and options */
        PolicyValue *call_opts;
};

static void op_done(ArcOp *op) {
        free(op->domain);
        free(op->selector);
        free(op->auth_results);
        json_object_put(op->headers);
        free(op->canonicalization);
        free(op->algorithm);
        *op = (ArcOp) {};
}

static void txn_drop_call(SmtpdArcTxn *t) {
        if (t->link) {
                Varlink *l = TAKE_PTR(t->link);
                varlink_close(l); /* its callback sees t->link != l */
                varlink_unref(l);
        }
        json_object_put(t->params);
        t->params = NULL;
        t->content_fd = safe_close(t->content_fd);
}

SmtpdArcTxn *smtpd_arc_txn_free(SmtpdArcTxn *t) {
        if (!t)
                return NULL;
        txn_drop_call(t);
        json_object_put(t->auth);
        json_object_put(t->spf);
        free(t->auth_error);
        free(t->spf_from);
        for (size_t i = 0; i < t->n_ops; i++)
                op_done(&t->ops[i]);
        policy_value_unref(t->call_arg);
        policy_value_unref(t->call_opts);
        free(t);
        return NULL;
}

static SmtpdArcTxn *txn_get(Session *s, const SmtpdArcFacts *f) {
        if (!*f->txn) {
                SmtpdArcTxn *t = calloc(1, sizeof *t);
                if (!t)
                        return NULL;
                t->session = s;
                t->content_fd = -1;
                *f->txn = t;
        }
        return *f->txn;
}

static void arc_log(const SmtpdArcFacts *f, int prio, const char *format, ...) _printf_(3, 4);
static void arc_log(const SmtpdArcFacts *f, int prio, const char *format, ...) {
        char msg[1024], ip[80], id[60];
        va_list ap;
        va_start(ap, format);
        vsnprintf(msg, sizeof msg, format, ap);
        va_end(ap);
        snprintf(ip, sizeof ip, "HALYARD_CLIENT_IP=%s", f->ip);
        snprintf(id, sizeof id, "HALYARD_SESSION_ID=%s", f->session_id);
        log_full(prio, 0, (const char *const[]){ ip, id, NULL }, "%s: arcd: %s", f->session_id, msg);
}

/* ---- calls ------------------------------------------------------------------ */

static int txn_invoke(SmtpdArcTxn *t, bool fresh);

/* A local failure (no answer from arcd), as opposed to an error arcd gave. */
static bool error_is_local(const char *error) {
        return !error || strncmp(error, "io.halyard.Varlink.", 19) == 0 ||
               strncmp(error, "org.varlink.service.", 20) == 0;
}

static int on_arc_reply(Varlink *link, json_object *parameters, const char *error, VarlinkReplyFlags flags,
                        void *userdata) {
        SmtpdArcTxn *t = userdata;
        if (t->link != link) /* dropped */
                return 0;
        SmtpdArcFacts f;
        session_arc_facts(t->session, &f);
        Manager *m = f.manager;

        t->link = NULL;
        if (error && t->link_reused && streq_ptr(error, VARLINK_ERROR_DISCONNECTED)) {
                /* arcd closed a pooled connection (it restarted, or went idle)
                 * before taking the call: once more on a new one. */
                varlink_unref(link);
                if (txn_invoke(t, true) >= 0)
                        return 0;
                error = VARLINK_ERROR_DISCONNECTED;
        } else if (error && error_is_local(error))
                varlink_unref(link);
        else /* an answer, errors from arcd included: the connection is fine */
                smtpd_pool_give(&m->arc_pool, link, !daemon_is_draining(m->daemon));

        json_object *keep = json_object_get(parameters);
        ArcReplyFn cb = t->on_reply;
        json_object_put(t->params);
        t->params = NULL;
        t->content_fd = safe_close(t->content_fd);
        cb(t, parameters, error); /* may free t */
        json_object_put(keep);
        return 0;
}

/* Sends t->method with t->params (and t->content_fd as "content"). */
static int txn_invoke(SmtpdArcTxn *t, bool fresh) {
        SmtpdArcFacts f;
        session_arc_facts(t->session, &f);
        Manager *m = f.manager;
        Varlink *l = fresh ? NULL : smtpd_pool_take(&m->arc_pool);
        int r;

        t->link_reused = l != NULL;
        if (!l) {
                r = varlink_connect_address(m->event, m->settings.arc.socket, &l);
                if (r < 0)
                        return r;
        }
        varlink_set_timeout(l, t->timeout_usec);
        if (t->content_fd >= 0) {
                int fd = fcntl(t->content_fd, F_DUPFD_CLOEXEC, 3);
                if (fd < 0) {
                        r = -errno;
                        varlink_unref(l);
                        return r;
                }
                r = varlink_push_fd(l, fd);
                if (r < 0) {
                        varlink_unref(l);
                        return r;
                }
                json_object_object_add(t->params, "content", json_object_new_int(r));
        }
        t->link = l;
        r = varlink_invoke(l, t->method, t->params, 0, on_arc_reply, t);
        if (r < 0) {
                t->link = NULL;
                varlink_unref(l);
        }
        return r;
}

/* Starts a call; takes params. content: the fd to pass (borrowed). */
static int txn_call(SmtpdArcTxn *t, const char *method, json_object *params, int content, uint64_t timeout_usec,
                    ArcReplyFn cb) {
        if (!params)
                return -ENOMEM;
        txn_drop_call(t);
        t->method = method;
        t->params = params;
        t->on_reply = cb;
        t->timeout_usec = timeout_usec;
        if (content >= 0) {
                t->content_fd = fcntl(content, F_DUPFD_CLOEXEC, 3);
                if (t->content_fd < 0)
                        return -errno;
        }
        int r = txn_invoke(t, false);
        if (r < 0) {
                json_object_put(t->params);
                t->params = NULL;
                t->content_fd = safe_close(t->content_fd);
        }
        return r;
}

static void add_str(json_object *o, const char *key, const char *v) {
        if (v)
                json_object_object_add(o, key, json_object_new_string(v));
}

static json_object *authenticate_params(const SmtpdArcFacts *f, bool spf_only) {
        json_object *p = json_object_new_object();
        if (!p)
                return NULL;
        add_str(p, "clientIp", f->ip);
        add_str(p, "helo", f->helo[0] ? f->helo : NULL);
        add_str(p, "mailFrom", f->mail_from);
        add_str(p, "authservId", f->manager->settings.arc.authserv_id);
        if (spf_only) {
                json_object *checks = json_object_new_array();
                json_object_array_add(checks, json_object_new_string("spf"));
                json_object_object_add(p, "checks", checks);
        }
        return p;
}

static const char *error_text(json_object *parameters, const char *error, char *buf, size_t n) {
        json_object *v;
        const char *why = NULL;
        if (parameters && (json_object_object_get_ex(parameters, "reason", &v) ||
                           json_object_object_get_ex(parameters, "errno", &v)))
                why = json_object_get_string(v);
        snprintf(buf, n, "%s%s%s", error ?: "failed", why ? ": " : "", why ?: "");
        return buf;
}


/* ---- message rewriting -------------------------------------------------------- */

typedef struct Mapped {
        char *data;
        size_t size;
} Mapped;

static int map_fd(int fd, Mapped *ret) {
        struct stat st;
        *ret = (Mapped) {};
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size == 0)
                return -EINVAL;
        void *p = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
                return -errno;
        *ret = (Mapped) { p, (size_t) st.st_size };
        return 0;
}

static void unmap(Mapped *m) {
        if (m->data)
                munmap(m->data, m->size);
        *m = (Mapped) {};
}

/* Calls cb for each header field: [start, end) raw, with folded lines.
 * Returns the offset where the header ends. */
static size_t header_walk(const Mapped *m, void (*cb)(const char *p, size_t n, void *userdata), void *userdata) {
        size_t pos = 0, limit = MIN(m->size, (size_t) ARC_HEADER_BLOCK_MAX);
        while (pos < limit) {
                const char *line = m->data + pos;
                if (line[0] == '\r' || line[0] == '\n')
                        break;
                size_t end = pos;
                /* The field with its continuation lines. */
                do {
                        const char *lf = memchr(m->data + end, '\n', limit - end);
                        end = lf ? (size_t) (lf - m->data) + 1 : limit;
                } while (end < limit && (m->data[end] == ' ' || m->data[end] == '\t'));
                const char *colon = memchr(line, ':', end - pos);
                if (!colon)
                        break;
                cb(line, end - pos, userdata);
                pos = end;
        }
        return pos;
}

static bool name_is(const char *p, size_t n, const char *name) {
        size_t k = strlen(name);
        if (n <= k || strncasecmp(p, name, k) != 0)
                return false;
        size_t i = k;
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
                i++;
        return i < n && p[i] == ':';
}

/* Does this Authentication-Results field claim authserv_id? Its value
 * starts, after white space and comments, with the authserv-id. */
static bool authres_claims(const char *p, size_t n, const char *authserv_id) {
        const char *colon = memchr(p, ':', n);
        size_t i = (size_t) (colon - p) + 1;
        for (;;) {
                while (i < n && strchr(" \t\r\n", p[i]))
                        i++;
                if (i < n && p[i] == '(') {
                        unsigned depth = 0;
                        for (; i < n; i++) {
                                if (p[i] == '\\' && i + 1 < n)
                                        i++;
                                else if (p[i] == '(')
                                        depth++;
                                else if (p[i] == ')' && --depth == 0) {
                                        i++;
                                        break;
                                }
                        }
                        continue;
                }
                break;
        }
        size_t start = i;
        while (i < n && !strchr(" \t\r\n;(", p[i]))
                i++;
        size_t k = strlen(authserv_id);
        return i - start == k && strncasecmp(p + start, authserv_id, k) == 0;
}

typedef struct RewriteCtx {
        int out;
        int r;
        const char *authserv_id;   /* drop A-R fields claiming it; NULL: keep all */
        unsigned dropped;
} RewriteCtx;

static void rewrite_field(const char *p, size_t n, void *userdata) {
        RewriteCtx *c = userdata;
        if (c->r < 0)
                return;
        if (c->authserv_id && name_is(p, n, "Authentication-Results") && authres_claims(p, n, c->authserv_id)) {
                c->dropped++;
                return;
        }
        c->r = write_all(c->out, p, n);
}

/* A new memfd: prepend, then the message from fd without the A-R fields
 * that claim authserv_id (when given). */
static int message_rewrite(int fd, const char *prepend, const char *authserv_id, unsigned *ret_dropped, int *ret_fd) {
        Mapped m;
        int r = map_fd(fd, &m);
        if (r < 0)
                return r;
        RewriteCtx c = { .authserv_id = authserv_id };
        c.out = memfd_create("smtpd-message", MFD_CLOEXEC);
        if (c.out < 0) {
                r = -errno;
                unmap(&m);
                return r;
        }
        c.r = prepend ? write_all(c.out, prepend, strlen(prepend)) : 0;
        size_t body = c.r >= 0 ? header_walk(&m, rewrite_field, &c) : 0;
        r = c.r;
        if (r >= 0)
                r = write_all(c.out, m.data + body, m.size - body);
        unmap(&m);
        if (r < 0) {
                safe_close(c.out);
                return r;
        }
        if (ret_dropped)
                *ret_dropped = c.dropped;
        *ret_fd = c.out;
        return 0;
}

typedef struct FromCtx {
        char domain[256];
        bool found;
} FromCtx;

static void from_field(const char *p, size_t n, void *userdata) {
        FromCtx *c = userdata;
        if (c->found || !name_is(p, n, "From"))
                return;
        c->found = true;
        const char *at = NULL;
        for (size_t i = 0; i < n; i++)
                if (p[i] == '@')
                        at = p + i;
        if (!at)
                return;
        size_t k = 0;
        for (const char *q = at + 1; q < p + n && k + 1 < sizeof c->domain && !strchr(" \t\r\n>,;()\"", *q); q++)
                c->domain[k++] = *q;
        c->domain[k] = 0;
}

/* The RFC5322.From domain, "" when there is none. */
static int message_from_domain(int fd, char *buf, size_t n) {
        Mapped m;
        int r = map_fd(fd, &m);
        if (r < 0)
                return r;
        FromCtx c = {};
        (void) header_walk(&m, from_field, &c);
        unmap(&m);
        snprintf(buf, n, "%s", c.domain);
        return 0;
}

static bool domain_in(char *const *list, const char *domain) {
        for (char *const *d = list; d && *d; d++)
                if (strcasecmp(*d, domain) == 0)
                        return true;
        return false;
}

/* ---- end of data: Authenticate ---------------------------------------------- */

static void finish(SmtpdArcTxn *t, int r) {
        SmtpdArcDone done = TAKE_PTR(t->done);
        if (done)
                done(t->session, r); /* may free t */
}

/* The outcome of a failed call: go on (accept) or tempfail. */
static int failure_verdict(const SmtpdArcFacts *f) {
        return f->manager->settings.arc.failure_tempfail ? -EAGAIN : 0;
}

static void on_authenticated(SmtpdArcTxn *t, json_object *parameters, const char *error) {
        SmtpdArcFacts f;
        session_arc_facts(t->session, &f);
        if (error) {
                char why[300];
                free(t->auth_error);
                t->auth_error = strdup(error_text(parameters, error, why, sizeof why));
                arc_log(&f, LOG_WARNING, "Authenticate failed (%s), %s", why,
                        f.manager->settings.arc.failure_tempfail ? "answering 451" : "accepting without Authentication-Results");
                finish(t, failure_verdict(&f));
                return;
        }
        json_object_put(t->auth);
        t->auth = json_object_get(parameters);
        finish(t, 0);
}

static int start_authenticate(SmtpdArcTxn *t, const SmtpdArcFacts *f, uint64_t timeout_usec, ArcReplyFn cb) {
        return txn_call(t, "io.halyard.Arc.Authenticate", authenticate_params(f, false), *f->memfd, timeout_usec, cb);
}

int smtpd_arc_authenticate(Session *s, SmtpdArcDone done) {
        SmtpdArcFacts f;
        session_arc_facts(s, &f);
        const SmtpdArcSettings *c = &f.manager->settings.arc;
        /* An authenticated submission is ours to vouch for (DkimSign=), not
         * to judge: its client address says nothing about SPF or DMARC. */
        if (!c->authenticate || f.auth_user[0])
                return 0;
        SmtpdArcTxn *t = txn_get(s, &f);
        if (!t)
                return -ENOMEM;
        if (t->auth || t->auth_error)
                return 0;
        int r = start_authenticate(t, &f, c->timeout_usec, on_authenticated);
        if (r < 0) {
                char why[200];
                t->auth_error = strdup(strerror(-r));
                snprintf(why, sizeof why, "%s", strerror(-r));
                arc_log(&f, LOG_WARNING, "Authenticate failed (%s), %s", why,
                        c->failure_tempfail ? "answering 451" : "accepting without Authentication-Results");
                return failure_verdict(&f);
        }
        t->done = done;
        return 1;
}

/* ---- commit: A-R, signatures, seal ------------------------------------------ */

static const char *auth_header(SmtpdArcTxn *t) {
        json_object *v;
        return t->auth && json_object_object_get_ex(t->auth, "header", &v) ? json_object_get_string(v) : NULL;
}

/* Replaces the message with prepend + message. */
static int prepend_to_message(const SmtpdArcFacts *f, const char *prepend) {
        int fd = -1;
        int r = message_rewrite(*f->memfd, prepend, NULL, NULL, &fd);
        if (r < 0)
                return r;
        safe_close(*f->memfd);
        *f->memfd = fd;
        return 0;
}

static void commit_next(SmtpdArcTxn *t);

static void on_op_reply(SmtpdArcTxn *t, json_object *parameters, const char *error) {
        SmtpdArcFacts f;
        session_arc_facts(t->session, &f);
        ArcOp *op = &t->ops[t->op_next - 1];
        const char *what = op->seal ? "Seal" : "Sign";
        if (error) {
                char why[300];
                error_text(parameters, error, why, sizeof why);
                if (error_is_local(error) && f.manager->settings.arc.failure_tempfail) {
                        arc_log(&f, LOG_WARNING, "%s for %s failed (%s), answering 451", what, op->domain ?: "the default key", why);
                        finish(t, -EAGAIN);
                        return;
                }
                if (streq_ptr(error, "io.halyard.Arc.NoKey"))
                        /* Not one of our signing domains: nothing to do. */
                        arc_log(&f, LOG_INFO, "no %s key for %s in arcd, not %s", op->seal ? "sealing" : "signing",
                                op->domain ?: "the default domain", op->seal ? "sealed" : "signed");
                else
                        arc_log(&f, LOG_WARNING, "%s for %s failed (%s), the message goes on without it", what,
                                op->domain ?: "the default key", why);
                commit_next(t);
                return;
        }
        char *text = NULL;
        size_t len = 0;
        FILE *w = open_memstream(&text, &len);
        int r = w ? 0 : -ENOMEM;
        json_object *v;
        if (r >= 0 && op->seal && json_object_object_get_ex(parameters, "headers", &v) &&
            json_object_is_type(v, json_type_array))
                for (size_t i = 0; i < json_object_array_length(v); i++)
                        fputs(json_object_get_string(json_object_array_get_idx(v, i)) ?: "", w);
        else if (r >= 0 && !op->seal && json_object_object_get_ex(parameters, "header", &v))
                fputs(json_object_get_string(v) ?: "", w);
        if (w && fclose(w) != 0)
                r = -ENOMEM;
        if (r >= 0 && len > 0)
                r = prepend_to_message(&f, text);
        free(text);
        if (r < 0) {
                arc_log(&f, LOG_ERR, "adding the %s result failed: %s", what, strerror(-r));
                finish(t, -EAGAIN);
                return;
        }
        if (op->seal && json_object_object_get_ex(parameters, "instance", &v)) {
                json_object *cv = NULL;
                (void) json_object_object_get_ex(parameters, "cv", &cv);
                arc_log(&f, LOG_INFO, "sealed as ARC instance %d (cv=%s)", json_object_get_int(v),
                        cv ? json_object_get_string(cv) : "?");
        } else if (!op->seal)
                arc_log(&f, LOG_INFO, "DKIM-signed for %s", op->domain);
        commit_next(t);
}

/* A header value on one line (the AAR body is one line for arcd). */
static char *unfold(const char *v) {
        if (!v)
                return NULL;
        char *u = malloc(strlen(v) + 1), *o = u;
        if (!u)
                return NULL;
        for (const char *p = v; *p; p++) {
                if (*p == '\r' || *p == '\n') {
                        while (p[1] == '\r' || p[1] == '\n' || p[1] == ' ' || p[1] == '\t')
                                p++;
                        *o++ = ' ';
                } else
                        *o++ = *p;
        }
        *o = 0;
        return u;
}

/* Starts the next Sign or Seal: 1 when one is under way, 0 when none is
 * left, -EAGAIN for a tempfail. */
static int commit_start_next(SmtpdArcTxn *t) {
        SmtpdArcFacts f;
        session_arc_facts(t->session, &f);
        const SmtpdArcSettings *c = &f.manager->settings.arc;
        while (t->op_next < t->n_ops) {
                ArcOp *op = &t->ops[t->op_next++];
                json_object *p = json_object_new_object();
                if (!p)
                        return -ENOMEM;
                add_str(p, "domain", op->domain);
                add_str(p, "selector", op->selector);
                if (op->seal) {
                        _cleanup_free_ char *aar = unfold(op->auth_results ?: auth_header(t));
                        add_str(p, "authResults", aar);
                        add_str(p, "clientIp", f.ip);
                        add_str(p, "helo", f.helo[0] ? f.helo : NULL);
                        add_str(p, "mailFrom", f.mail_from);
                } else {
                        if (op->headers)
                                json_object_object_add(p, "headers", json_object_get(op->headers));
                        add_str(p, "canonicalization", op->canonicalization);
                        add_str(p, "algorithm", op->algorithm);
                }
                int r = txn_call(t, op->seal ? "io.halyard.Arc.Seal" : "io.halyard.Arc.Sign", p, *f.memfd,
                                 c->timeout_usec, on_op_reply);
                if (r >= 0)
                        return 1;
                arc_log(&f, LOG_WARNING, "%s for %s failed (%s)%s", op->seal ? "Seal" : "Sign",
                        op->domain ?: "the default key", strerror(-r), c->failure_tempfail ? ", answering 451" : ", the message goes on without it");
                if (c->failure_tempfail)
                        return -EAGAIN;
        }
        return 0;
}

static void commit_next(SmtpdArcTxn *t) {
        int r = commit_start_next(t);
        if (r <= 0)
                finish(t, r);
}

static ArcOp *op_add(SmtpdArcTxn *t) {
        if (t->n_ops >= ARC_OPS_MAX)
                return NULL;
        return &t->ops[t->n_ops++];
}

static bool relayed_for_seal(const SmtpdArcFacts *f) {
        const SmtpdArcSettings *c = &f->manager->settings.arc;
        if (c->seal_all)
                return true;
        for (size_t i = 0; c->seal_domains && f->rcpts && i < json_object_array_length(f->rcpts); i++) {
                json_object *a = json_object_object_get(json_object_array_get_idx(f->rcpts, i), "address");
                const char *addr = a ? json_object_get_string(a) : NULL;
                const char *at = addr ? strrchr(addr, '@') : NULL;
                if (at && domain_in(c->seal_domains, at + 1))
                        return true;
        }
        return false;
}

int smtpd_arc_commit(Session *s, SmtpdArcDone done) {
        SmtpdArcFacts f;
        session_arc_facts(s, &f);
        const SmtpdArcSettings *c = &f.manager->settings.arc;
        SmtpdArcTxn *t = *f.txn;
        int r;

        bool sign = f.auth_user[0] && (c->sign || c->sign_domains);
        bool seal = relayed_for_seal(&f);
        if (!c->authenticate && !sign && !seal && (!t || t->n_ops == 0))
                return 0;
        if (!t && !(t = txn_get(s, &f)))
                return -ENOMEM;

        /* Our A-R on top, and none that claims to be ours from before. */
        if (c->authenticate) {
                _cleanup_free_ char *ar = NULL;
                const char *h = auth_header(t);
                if (h && asprintf(&ar, "Authentication-Results: %s%s", h,
                                  strlen(h) >= 2 && strcmp(h + strlen(h) - 2, "\r\n") == 0 ? "" : "\r\n") < 0)
                        return -ENOMEM;
                int fd = -1;
                unsigned dropped = 0;
                r = message_rewrite(*f.memfd, ar, c->authserv_id, &dropped, &fd);
                if (r < 0)
                        return r;
                safe_close(*f.memfd);
                *f.memfd = fd;
                if (dropped > 0)
                        arc_log(&f, LOG_NOTICE, "removed %u Authentication-Results field%s claiming %s", dropped,
                                dropped == 1 ? "" : "s", c->authserv_id);
        }

        /* Signatures before the seal: the seal covers them. The policy's
         * requests were recorded in order; ours come after them. */
        if (sign) {
                char domain[256] = "";
                (void) message_from_domain(*f.memfd, domain, sizeof domain);
                bool policy_signed = false;
                for (size_t i = 0; i < t->n_ops; i++)
                        policy_signed = policy_signed || (!t->ops[i].seal && t->ops[i].domain &&
                                                          strcasecmp(t->ops[i].domain, domain) == 0);
                if (domain[0] && !policy_signed && (!c->sign_domains || domain_in(c->sign_domains, domain))) {
                        ArcOp *op = op_add(t);
                        if (op && !(op->domain = strdup(domain)))
                                return -ENOMEM;
                }
        }
        /* Seals last (a stable sort: signatures first). */
        if (seal && !t->policy_sealed) {
                ArcOp *op = op_add(t);
                if (op) {
                        op->seal = true;
                        if ((c->seal_domain && !(op->domain = strdup(c->seal_domain))) ||
                            (c->seal_selector && !(op->selector = strdup(c->seal_selector))))
                                return -ENOMEM;
                }
        }
        ArcOp sorted[ARC_OPS_MAX];
        size_t k = 0;
        for (int pass = 0; pass < 2; pass++)
                for (size_t i = 0; i < t->n_ops; i++)
                        if (t->ops[i].seal == (pass == 1))
                                sorted[k++] = t->ops[i];
        memcpy(t->ops, sorted, k * sizeof *sorted);

        if (t->n_ops == 0)
                return 0;
        t->op_next = 0;
        r = commit_start_next(t);
        if (r > 0)
                t->done = done;
        return r;
}

/* ---- policy builtins ---------------------------------------------------------- */

bool smtpd_arc_policy_builtin(const char *name) {
        static const char *const names[] = {
                "spf_result", "dkim_result", "dmarc_result", "ARC::chainValidate", "ARC::seal",
                "Mail->signDKIM", "AuthenticationResults->toString",
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq_ptr(name, names[i]))
                        return true;
        return false;
}

static PolicyValue *value_from_json(json_object *j) {
        PolicyValue *v = NULL;
        return policy_value_from_json(j, &v) < 0 ? NULL : v;
}

static PolicyValue *error_value(const char *text) {
        json_object *o = json_object_new_object();
        add_str(o, "error", text);
        PolicyValue *v = value_from_json(o);
        json_object_put(o);
        return v;
}

static const char *jstr(json_object *o, const char *key) {
        json_object *v;
        return o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
                       ? json_object_get_string(v) : NULL;
}

static void copy_key(json_object *to, const char *to_key, json_object *from, const char *key) {
        json_object *v;
        if (from && json_object_object_get_ex(from, key, &v) && v)
                json_object_object_add(to, to_key, json_object_get(v));
}

/* spf_result(): ["result", "reason", "domain", "identity"]. */
static json_object *spf_shape(json_object *spf) {
        json_object *o = json_object_new_object();
        if (!spf) {
                add_str(o, "result", "none");
                return o;
        }
        copy_key(o, "result", spf, "result");
        copy_key(o, "reason", spf, "reason");
        copy_key(o, "domain", spf, "domain");
        copy_key(o, "identity", spf, "identity");
        copy_key(o, "mailfrom", spf, "mailFrom");
        return o;
}

/* dkim_result(): [["result", "domain", "selector", "reason"], ...]. */
static json_object *dkim_shape(json_object *dkim) {
        json_object *a = json_object_new_array();
        for (size_t i = 0; dkim && i < json_object_array_length(dkim); i++) {
                json_object *d = json_object_array_get_idx(dkim, i), *o = json_object_new_object();
                copy_key(o, "result", d, "result");
                copy_key(o, "domain", d, "domain");
                copy_key(o, "selector", d, "selector");
                copy_key(o, "reason", d, "reason");
                copy_key(o, "algorithm", d, "algorithm");
                json_object_array_add(a, o);
        }
        return a;
}

/* dmarc_result(): ["result", "policy", "pdomain", "spf_align", "dkim_align"]. */
static json_object *dmarc_shape(json_object *dmarc) {
        json_object *o = json_object_new_object();
        if (!dmarc) {
                add_str(o, "result", "none");
                return o;
        }
        copy_key(o, "result", dmarc, "result");
        copy_key(o, "policy", dmarc, "policy");
        copy_key(o, "disposition", dmarc, "disposition");
        copy_key(o, "pdomain", dmarc, "fromDomain");
        copy_key(o, "orgdomain", dmarc, "orgDomain");
        copy_key(o, "spf_align", dmarc, "spfAligned");
        copy_key(o, "dkim_align", dmarc, "dkimAligned");
        copy_key(o, "reason", dmarc, "reason");
        return o;
}

/* ARC::chainValidate(): ["status", "oldestpass", "sets", "error"]. */
static json_object *chain_shape(json_object *arc) {
        json_object *o = json_object_new_object();
        if (!arc) {
                add_str(o, "status", "none");
                json_object_object_add(o, "oldestpass", json_object_new_int(0));
                return o;
        }
        copy_key(o, "status", arc, "status");
        copy_key(o, "oldestpass", arc, "oldestPass");
        copy_key(o, "sets", arc, "sets");
        copy_key(o, "error", arc, "reason");
        copy_key(o, "temporary", arc, "temporary");
        copy_key(o, "failedinstance", arc, "failedInstance");
        return o;
}

/* An RFC 8601 value: a token, or a quoted string. */
static void ar_value(FILE *w, const char *v) {
        /* Addresses (local@domain) and domains stay bare. */
        bool token = *v != 0;
        for (const char *p = v; *p && token; p++)
                token = (unsigned char) *p > ' ' && (unsigned char) *p < 0x7f && !strchr("()<>,;:\\\"[]?=", *p);
        if (token) {
                fputs(v, w);
                return;
        }
        fputc('"', w);
        for (const char *p = v; *p; p++) {
                if (*p == '"' || *p == '\\')
                        fputc('\\', w);
                if ((unsigned char) *p >= ' ')
                        fputc(*p, w);
        }
        fputc('"', w);
}

static void ar_props(FILE *w, PolicyValue *props, const char *const *skip) {
        for (size_t i = 0; props && policy_value_type(props) == POLICY_TYPE_ARRAY && i < policy_array_size(props); i++) {
                PolicyValue *k = policy_array_key_at(props, i), *v = policy_array_value_at(props, i);
                if (policy_value_type(k) != POLICY_TYPE_STRING)
                        continue;
                const char *key = policy_value_string(k, NULL);
                bool skipped = false;
                for (const char *const *s = skip; s && *s && !skipped; s++)
                        skipped = strcasecmp(*s, key) == 0;
                if (skipped)
                        continue;
                char num[64];
                const char *val = NULL;
                if (policy_value_type(v) == POLICY_TYPE_STRING)
                        val = policy_value_string(v, NULL);
                else if (policy_value_type(v) == POLICY_TYPE_NUMBER) {
                        policy_number_format(policy_value_number(v), num);
                        val = num;
                } else if (policy_value_type(v) == POLICY_TYPE_BOOL)
                        val = policy_value_truthy(v) ? "true" : "false";
                if (!val)
                        continue;
                fprintf(w, " %s=", key);
                ar_value(w, val);
        }
}

static bool props_have(PolicyValue *props, const char *key) {
        return props && policy_value_type(props) == POLICY_TYPE_ARRAY && policy_array_get_str(props, key);
}

/* AuthenticationResults->toString(): the builder's methods, the argument-less
 * SPF/DKIM/DMARC filled in from Authenticate's results (temperror when it
 * failed). */
static PolicyValue *render_ar(SmtpdArcTxn *t, const SmtpdArcFacts *f, PolicyValue *self, PolicyValue *opts) {
        PolicyValue *payload = self ? policy_object_payload(self) : NULL;
        PolicyValue *methods = payload ? policy_array_get_str(payload, "methods") : NULL;
        PolicyValue *bopts = payload ? policy_array_get_str(payload, "options") : NULL;
        PolicyValue *id = opts ? policy_array_get_str(opts, "authserv_id") : NULL;
        if (!id && bopts && policy_value_type(bopts) == POLICY_TYPE_ARRAY)
                id = policy_array_get_str(bopts, "authserv_id");
        const char *authserv_id = id && policy_value_type(id) == POLICY_TYPE_STRING ? policy_value_string(id, NULL)
                                                                                   : f->manager->settings.arc.authserv_id;
        /* Before the end of data only SPF is known. */
        json_object *auth = *f->memfd >= 0 ? t->auth : t->spf;
        char *text = NULL;
        size_t len = 0;
        FILE *w = open_memstream(&text, &len);
        if (!w)
                return NULL;
        fputs(authserv_id, w);
        unsigned n = 0;
        for (size_t i = 0; methods && i < policy_array_size(methods); i++) {
                PolicyValue *e = policy_array_value_at(methods, i);
                PolicyValue *mv = policy_array_get_str(e, "method"), *rv = policy_array_get_str(e, "result"),
                            *props = policy_array_get_str(e, "props");
                const char *method = mv && policy_value_type(mv) == POLICY_TYPE_STRING ? policy_value_string(mv, NULL) : NULL;
                const char *result = rv && policy_value_type(rv) == POLICY_TYPE_STRING ? policy_value_string(rv, NULL) : NULL;
                if (!method)
                        continue;
                if (result) {
                        fprintf(w, "; %s=%s", method, result);
                        ar_props(w, props, NULL);
                        n++;
                        continue;
                }
                json_object *v = NULL;
                if (strcmp(method, "spf") == 0) {
                        json_object *spf = auth && json_object_object_get_ex(auth, "spf", &v) ? v : NULL;
                        fprintf(w, "; spf=%s", auth ? jstr(spf, "result") ?: "none" : "temperror");
                        if (!props_have(props, "smtp.mailfrom") && !props_have(props, "smtp.helo") && spf) {
                                const char *mf = jstr(spf, "mailFrom");
                                if (mf && strcmp(jstr(spf, "identity") ?: "", "helo") != 0) {
                                        fputs(" smtp.mailfrom=", w);
                                        ar_value(w, mf);
                                } else if (jstr(spf, "domain")) {
                                        fputs(" smtp.helo=", w);
                                        ar_value(w, jstr(spf, "domain"));
                                }
                        }
                        ar_props(w, props, NULL);
                        n++;
                } else if (strcmp(method, "dkim") == 0) {
                        json_object *dkim = auth && json_object_object_get_ex(auth, "dkim", &v) ? v : NULL;
                        size_t nd = dkim && json_object_is_type(dkim, json_type_array) ? json_object_array_length(dkim) : 0;
                        if (nd == 0) {
                                fprintf(w, "; dkim=%s", auth ? "none" : "temperror");
                                ar_props(w, props, NULL);
                                n++;
                        }
                        for (size_t k = 0; k < nd; k++) {
                                json_object *d = json_object_array_get_idx(dkim, k);
                                fprintf(w, "; dkim=%s", jstr(d, "result") ?: "neutral");
                                if (jstr(d, "domain")) {
                                        fputs(" header.d=", w);
                                        ar_value(w, jstr(d, "domain"));
                                }
                                if (jstr(d, "selector")) {
                                        fputs(" header.s=", w);
                                        ar_value(w, jstr(d, "selector"));
                                }
                                if (jstr(d, "signaturePrefix")) {
                                        fputs(" header.b=", w);
                                        ar_value(w, jstr(d, "signaturePrefix"));
                                }
                                ar_props(w, props, NULL);
                                n++;
                        }
                } else if (strcmp(method, "dmarc") == 0) {
                        json_object *dm = auth && json_object_object_get_ex(auth, "dmarc", &v) ? v : NULL;
                        fprintf(w, "; dmarc=%s", auth ? jstr(dm, "result") ?: "none" : "temperror");
                        if (jstr(dm, "fromDomain") && !props_have(props, "header.from")) {
                                fputs(" header.from=", w);
                                ar_value(w, jstr(dm, "fromDomain"));
                        }
                        ar_props(w, props, NULL);
                        n++;
                } else {
                        fprintf(w, "; %s=none", method);
                        ar_props(w, props, NULL);
                        n++;
                }
        }
        if (n == 0)
                fputs("; none", w);
        if (fclose(w) != 0) {
                free(text);
                return NULL;
        }
        PolicyValue *s = policy_string_new(text, len);
        free(text);
        return s;
}

/* The answer to a call that needs Authenticate's results, now that they
 * are there (or failed). */
static PolicyValue *answer_from_memo(SmtpdArcTxn *t, const SmtpdArcFacts *f, const char *name, PolicyValue *arg,
                                     PolicyValue *opts) {
        if (strcmp(name, "AuthenticationResults->toString") == 0)
                return render_ar(t, f, arg, opts);
        bool eod = *f->memfd >= 0;
        json_object *memo = eod ? t->auth : t->spf;
        if (!memo)
                return error_value(t->auth_error ?: "arcd gave no answer");
        json_object *v = NULL, *o;
        if (strcmp(name, "spf_result") == 0)
                o = spf_shape(json_object_object_get_ex(memo, "spf", &v) ? v : NULL);
        else if (strcmp(name, "dkim_result") == 0)
                o = dkim_shape(json_object_object_get_ex(memo, "dkim", &v) ? v : NULL);
        else if (strcmp(name, "dmarc_result") == 0)
                o = dmarc_shape(json_object_object_get_ex(memo, "dmarc", &v) ? v : NULL);
        else
                o = chain_shape(json_object_object_get_ex(memo, "arc", &v) ? v : NULL);
        PolicyValue *r = value_from_json(o);
        json_object_put(o);
        return r;
}

static void on_policy_authenticated(SmtpdArcTxn *t, json_object *parameters, const char *error) {
        SmtpdArcFacts f;
        session_arc_facts(t->session, &f);
        bool eod = *f.memfd >= 0;
        if (error) {
                char why[300];
                error_text(parameters, error, why, sizeof why);
                arc_log(&f, LOG_WARNING, "Authenticate for the policy failed: %s", why);
                if (eod) {
                        free(t->auth_error);
                        t->auth_error = strdup(why);
                }
        } else if (eod) {
                json_object_put(t->auth);
                t->auth = json_object_get(parameters);
        } else {
                json_object_put(t->spf);
                t->spf = json_object_get(parameters);
        }
        PolicyValue *v = error && !eod && !t->call_arg ? error_value(error)
                                                       : answer_from_memo(t, &f, t->call_name, t->call_arg, t->call_opts);
        SmtpdArcAnswer answer = TAKE_PTR(t->answer);
        SmtpdPolicyTask *task = TAKE_PTR(t->task);
        t->call_arg = policy_value_unref(t->call_arg);
        t->call_opts = policy_value_unref(t->call_opts);
        answer(task, v); /* may free t; takes v */
}

static char *arg_strdup(const PolicyCall *c, size_t i) {
        if (i >= c->n_args || policy_value_type(c->args[i]) != POLICY_TYPE_STRING)
                return NULL;
        return strdup(policy_value_string(c->args[i], NULL));
}

/* ARC::seal(sel, domain, keyref, chain, authres[, opts]) and
 * Mail->signDKIM(sel, domain, keyref[, opts]): recorded for the commit.
 * keyref names the key in arcd's configuration; arcd picks it by domain
 * and selector. */
static PolicyValue *record_op(SmtpdArcTxn *t, const PolicyCall *c, bool seal) {
        size_t base = seal ? 0 : 1; /* signDKIM's receiver comes first */
        if (seal && t->policy_sealed)
                return error_value("ARC::seal() was called already for this message");
        ArcOp *op = op_add(t);
        if (!op)
                return error_value("too many signatures for one message");
        op->seal = seal;
        op->from_policy = true;
        op->selector = arg_strdup(c, base);
        op->domain = arg_strdup(c, base + 1);
        if (seal)
                op->auth_results = arg_strdup(c, 4);
        size_t opts_at = seal ? 5 : base + 3;
        PolicyValue *opts = c->n_args > opts_at ? c->args[opts_at] : NULL;
        bool have_opts = opts && policy_value_type(opts) == POLICY_TYPE_ARRAY;
        PolicyValue *h = have_opts ? policy_array_get_str(opts, "headers") : NULL;
        if (!seal && h && policy_value_type(h) == POLICY_TYPE_ARRAY && policy_value_to_json(h, &op->headers) < 0)
                op->headers = NULL;
        if (!seal && have_opts) {
                PolicyValue *canon = policy_array_get_str(opts, "canonicalization");
                PolicyValue *alg = policy_array_get_str(opts, "algorithm");
                if (canon && policy_value_type(canon) == POLICY_TYPE_STRING)
                        op->canonicalization = strdup(policy_value_string(canon, NULL));
                if (alg && policy_value_type(alg) == POLICY_TYPE_STRING)
                        op->algorithm = strdup(policy_value_string(alg, NULL));
        }
        if (!op->domain || !op->selector) {
                op_done(op);
                t->n_ops--;
                return error_value("selector and domain must be strings");
        }
        if (seal)
                t->policy_sealed = true;
        return policy_value_ref(policy_bool(true));
}

int smtpd_arc_policy_call(Session *s, const PolicyCall *c, SmtpdArcAnswer answer, SmtpdPolicyTask *task,
                          PolicyValue **ret_now) {
        SmtpdArcFacts f;
        session_arc_facts(s, &f);
        SmtpdArcTxn *t = txn_get(s, &f);
        *ret_now = NULL;
        if (!t)
                return -ENOMEM;
        if (strcmp(c->name, "ARC::seal") == 0 || strcmp(c->name, "Mail->signDKIM") == 0) {
                *ret_now = record_op(t, c, c->name[0] == 'A');
                return 0;
        }

        bool eod = *f.memfd >= 0;
        PolicyValue *arg = strcmp(c->name, "AuthenticationResults->toString") == 0 && c->n_args > 0 ? c->args[0] : NULL;
        PolicyValue *opts = arg && c->n_args > 1 ? c->args[1] : NULL;
        bool known = eod ? (t->auth || t->auth_error) : (t->spf && streq_ptr(t->spf_from, f.mail_from));
        /* toString() without SPF/DKIM/DMARC needs no results. */
        bool needed = true;
        if (arg) {
                PolicyValue *payload = policy_object_payload(arg), *methods = payload ? policy_array_get_str(payload, "methods") : NULL;
                needed = false;
                for (size_t i = 0; methods && i < policy_array_size(methods); i++) {
                        PolicyValue *r = policy_array_get_str(policy_array_value_at(methods, i), "result");
                        needed = needed || !r || policy_value_type(r) != POLICY_TYPE_STRING;
                }
        }
        if (known || !needed) {
                *ret_now = answer_from_memo(t, &f, c->name, arg, opts);
                return 0;
        }
        if (t->link) {
                *ret_now = error_value("arcd is busy with this message");
                return 0;
        }

        /* Answer before the policy's own timeout for the call fires. */
        uint64_t timeout = (uint64_t) (c->timeout_ms ? c->timeout_ms : 5000) * 1000ULL;
        timeout = timeout > 2 * ARC_POLICY_MARGIN_USEC ? timeout - ARC_POLICY_MARGIN_USEC : timeout / 2;
        int r;
        if (eod)
                r = start_authenticate(t, &f, timeout, on_policy_authenticated);
        else {
                /* SPF needs the envelope only; the content is an empty message. */
                _cleanup_close_ int empty = memfd_create("smtpd-empty", MFD_CLOEXEC);
                free(t->spf_from);
                t->spf_from = f.mail_from ? strdup(f.mail_from) : NULL;
                json_object_put(t->spf);
                t->spf = NULL;
                r = empty < 0 ? -errno
                              : txn_call(t, "io.halyard.Arc.Authenticate", authenticate_params(&f, true), empty, timeout,
                                         on_policy_authenticated);
        }
        if (r < 0) {
                /* Answered like a failed call: toString() still gives a
                 * header (with temperror), the others ["error" => ...]. */
                char why[200];
                snprintf(why, sizeof why, "arcd: %s", strerror(-r));
                arc_log(&f, LOG_WARNING, "Authenticate for the policy failed: %s", why);
                if (eod) {
                        free(t->auth_error);
                        t->auth_error = strdup(why);
                }
                *ret_now = eod || arg ? answer_from_memo(t, &f, c->name, arg, opts) : error_value(why);
                return 0;
        }
        t->answer = answer;
        t->task = task;
        snprintf(t->call_name, sizeof t->call_name, "%s", c->name);
        t->call_arg = policy_value_ref(arg);
        t->call_opts = policy_value_ref(opts);
        return 1;
}
