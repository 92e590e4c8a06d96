/* SPDX-License-Identifier: MIT */
/* One ESMTP session per accepted connection, on the event loop, never
 * blocking: a line reader (512 octets a command), pipelining (every complete
 * command in the input is handled, the replies go out in one write), DATA
 * and BDAT through the reader of smtpd-data.h into a memfd, relay control,
 * STARTTLS and implicit TLS through smtpd-tls.h, and the hand-over to
 * io.halyard.Queue.Enqueue: the 250 goes out only after the queue answered. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "smtpd-command.h"
#include "smtpd-data.h"
#include "smtpd-policy.h"
#include "smtpd.h"

#define SESSION_IN_MAX (16U * 1024U)
#define SESSION_IN_MIN 1024U /* an idle session holds no buffer at all */
#define SESSION_OUT_MAX (64U * 1024U) /* stop reading while this much is unsent */

typedef enum SessionPhase {
        PHASE_TLS_HANDSHAKE, /* implicit TLS, or after STARTTLS */
        PHASE_COMMAND,
        PHASE_DATA,
        PHASE_BDAT,
        PHASE_QUEUE,         /* waiting for Enqueue's answer */
        PHASE_AUTH,          /* a 334 challenge is out: the next line is the answer */
        PHASE_AUTH_WAIT,     /* password being verified, or the failure delay */
        PHASE_POLICY,        /* the policy waits for a lookup */
        PHASE_STARTTLS,      /* 220 Ready being flushed; input is not read */
        PHASE_CLOSING,       /* last reply being flushed */
} SessionPhase;

struct Session {
        Manager *manager;
        Listener *listener;
        Session *prev, *next;
        int fd;
        sd_event_source *io;
        sd_event_source *timer;
        sd_event_source *defer; /* TLS holds decrypted input the fd won't signal */
        char id[24];
        char ip[INET6_ADDRSTRLEN];
        struct sockaddr_storage sa;
        SessionPhase phase;

        SmtpdTlsSession *tls;
        SmtpdTlsFacts facts;
        bool tls_active;

        char *in;            /* grows from SESSION_IN_MIN to SESSION_IN_MAX as input needs */
        size_t in_cap;
        size_t in_n;
        bool skip_line; /* an overlong command is being skipped to its LF */
        bool eof;

        char *out;
        size_t out_n, out_size;

        char helo[SMTP_COMMAND_LINE_MAX + 1];
        bool ehlo;
        bool greeted;
        unsigned errors;
        unsigned n_commands;
        unsigned n_messages;
        uint64_t started_usec;

        /* AUTH */
        char auth_user[AUTH_USER_MAX + 1]; /* "" until authenticated */
        AuthSasl sasl;
        AuthVerifyRequest *auth_req;
        sd_event_source *auth_delay;

        /* The transaction. */
        bool have_mail;
        SmtpCommand mail;
        json_object *rcpts;
        SmtpDataReader reader;
        int memfd;
        bool bdat_discard;   /* BDAT without a valid transaction: read and drop */
        bool bdat_started;
        Varlink *queue;
        bool queue_reused;   /* from the idle pool: may have gone stale */
        size_t received_len; /* our Received: header at the start of memfd */
        SmtpdArcTxn *arc;    /* arcd's results and requests for this message */

        /* The policy: the phase under way, the command it decides, and
         * $context carried from phase to phase. */
        SmtpdPolicyTask *policy_task;
        PolicyGeneration *policy;      /* pinned per transaction: a reload applies from the next MAIL */
        void (*policy_then)(Session *s, const PolicyResult *r);
        SmtpCommand *policy_cmd; /* allocated on the first policy decision */
        PolicyValue *policy_context;
};

const char *listener_kind_to_string(ListenerKind k) {
        static const char *const t[_LISTENER_MAX] = { "smtp", "submission", "submissions" };
        return k < _LISTENER_MAX ? t[k] : NULL;
}

const char *reject_reason_to_string(RejectReason r) {
        static const char *const t[_REJECT_MAX] = {
                "relay-denied", "syntax", "bad-sequence", "too-many-recipients",
                "message-too-large", "line-too-long", "bare-newline", "too-many-errors",
                "timeout", "too-many-connections", "queue-unavailable", "auth-required", "tls-failed",
                "auth-failed", "too-many-commands", "policy", "auth-unavailable",
        };
        return r < _REJECT_MAX ? t[r] : NULL;
}

uint64_t manager_now_usec(Manager *m) {
        uint64_t now;
        if (sd_event_now(m->event, CLOCK_MONOTONIC, &now) < 0) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                now = (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
        }
        return now;
}

void manager_count(Manager *m, unsigned what) {
        smtpd_stats_add(&m->stats, manager_now_usec(m) / 1000000ULL, what);
}

static void session_process(Session *s);
static void format_ip(const struct sockaddr_storage *sa, char *buf, size_t n);
static void session_update_events(Session *s);
static void session_after(Session *s);
static bool policy_has(Session *s, PolicyPhase phase);
static void session_policy_disconnect(Session *s, const char *why);
static void detached_run_free(DetachedRun *d);

/* ---- output ---------------------------------------------------------- */

static void session_free(Session *s) {
        Manager *m = s->manager;

        if (s->queue) {
                Varlink *q = TAKE_PTR(s->queue);
                varlink_close(q); /* its callback sees s->queue == NULL */
                varlink_unref(q);
        }
        if (s->auth_req)
                auth_verify_cancel(m->verifier, s->auth_req);
        smtpd_arc_txn_free(s->arc);
        smtpd_policy_task_free(s->policy_task);
        policy_generation_unref(s->policy);
        policy_value_unref(s->policy_context);
        auth_sasl_clear(&s->sasl);
        sd_event_source_disable_unref(s->auth_delay);
        if (s->prev)
                s->prev->next = s->next;
        else
                m->sessions = s->next;
        if (s->next)
                s->next->prev = s->prev;
        m->n_sessions--;
        s->listener->n_open--;
        sd_event_source_disable_unref(s->io);
        sd_event_source_disable_unref(s->timer);
        sd_event_source_disable_unref(s->defer);
        smtpd_tls_session_free(s->tls);
        smtpd_tls_facts_done(&s->facts);
        safe_close(s->fd);
        safe_close(s->memfd);
        json_object_put(s->rcpts);
        free(s->out);
        free(s->in);
        free(s->policy_cmd);
        free(s);

        if (daemon_is_draining(m->daemon) && m->n_sessions == 0)
                (void) daemon_exit(m->daemon, 0);
}

/* One journal entry per session, with the TLS facts and the client
 * certificate (what the policy and an operator chasing a relay decision
 * want to see). */
static void session_end(Session *s, const char *why) {
        const SmtpdTlsFacts *t = &s->facts;
        char f[13][700], tls[900] = "";
        const char *fields[ELEMENTSOF(f) + 1];
        size_t n = 0;
#define FIELD(...) (void) (n < ELEMENTSOF(f) && (snprintf(f[n], sizeof f[n], __VA_ARGS__), fields[n] = f[n], n++))
        FIELD("HALYARD_CLIENT_IP=%s", s->ip);
        FIELD("HALYARD_HELO=%s", s->helo);
        FIELD("HALYARD_SESSION_ID=%s", s->id);
        FIELD("HALYARD_LISTENER=%s", listener_kind_to_string(s->listener->kind));
        FIELD("HALYARD_TLS_VERSION=%s", s->tls_active && t->version ? t->version : "none");
        if (s->auth_user[0])
                FIELD("HALYARD_AUTH_USER=%s", s->auth_user);
        if (s->tls_active) {
                const char *verify = t->peer == SMTPD_TLS_PEER_VERIFIED ? "verified" : t->peer_verify_reason;
                FIELD("HALYARD_TLS_CIPHER=%s", t->cipher ?: "unknown");
                FIELD("HALYARD_TLS_RESUMED=%s", t->resumed ? "yes" : "no");
                if (t->sni)
                        FIELD("HALYARD_TLS_SNI=%s", t->sni);
                if (t->peer != SMTPD_TLS_PEER_NONE) {
                        FIELD("HALYARD_TLS_PEER_SUBJECT=%s", t->peer_subject);
                        FIELD("HALYARD_TLS_PEER_ISSUER=%s", t->peer_issuer);
                        FIELD("HALYARD_TLS_PEER_SHA256=%s", t->peer_sha256);
                        FIELD("HALYARD_TLS_PEER_VERIFY=%s", verify ?: "not verified");
                }
                int k = snprintf(tls, sizeof tls, ", %s %s%s", t->version ?: "TLS", t->cipher ?: "",
                                 t->resumed ? " resumed" : "");
                if (t->peer != SMTPD_TLS_PEER_NONE && k > 0 && (size_t) k < sizeof tls)
                        snprintf(tls + k, sizeof tls - (size_t) k, ", client certificate %s (%s%s)", t->peer_subject,
                                 t->peer == SMTPD_TLS_PEER_VERIFIED ? "" : "not verified: ", verify ?: "");
        }
#undef FIELD
        fields[n] = NULL;
        /* close_notify (RFC 8446 6.1), so the client can tell our close from
         * a truncation. One non-blocking try: the last reply is already out,
         * so the socket has room, and nothing waits for the client's. */
        if (s->tls_active && !s->eof)
                (void) smtpd_tls_bye(s->tls);
        log_full(LOG_INFO, 0, fields, "%s: session from %s (helo %s) ended: %s, %u messages%s%s%s", s->id, s->ip,
                 s->helo[0] ? s->helo : "-", why, s->n_messages, tls, s->auth_user[0] ? ", user " : "", s->auth_user);
        if (policy_has(s, POLICY_PHASE_DISCONNECT))
                session_policy_disconnect(s, why);
        session_free(s);
}

static int out_append(Session *s, const char *p, size_t n) {
        if (s->out_n + n > s->out_size) {
                size_t size = MAX(s->out_size * 2, s->out_n + n + 512);
                char *o = realloc(s->out, size);
                if (!o)
                        return -ENOMEM;
                s->out = o;
                s->out_size = size;
        }
        memcpy(s->out + s->out_n, p, n);
        s->out_n += n;
        return 0;
}

static void reply(Session *s, const char *format, ...) _printf_(2, 3);
static void reply(Session *s, const char *format, ...) {
        char buf[1024];
        va_list ap;
        va_start(ap, format);
        int n = vsnprintf(buf, sizeof buf - 2, format, ap);
        va_end(ap);
        if (n < 0)
                return;
        n = MIN(n, (int) sizeof buf - 3);
        buf[n++] = '\r';
        buf[n++] = '\n';
        (void) out_append(s, buf, (size_t) n);
}

static void reject_log(Session *s, RejectReason reason, const char *what) {
        char ip[80], reasonf[80], id[60];
        manager_count(s->manager, COUNT_REJECT_FIRST + reason);
        snprintf(ip, sizeof ip, "HALYARD_CLIENT_IP=%s", s->ip);
        snprintf(reasonf, sizeof reasonf, "HALYARD_REJECT_REASON=%s", reject_reason_to_string(reason));
        snprintf(id, sizeof id, "HALYARD_SESSION_ID=%s", s->id);
        log_event(LOG_NOTICE, LOG_MESSAGE_REJECTED, (const char *const[]){ ip, reasonf, id, NULL },
                  "%s: rejected from %s: %s: %s", s->id, s->ip, reject_reason_to_string(reason), what);
}

/* A refusal of a command: counts towards the error limit. */
static void reply_error(Session *s, RejectReason reason, unsigned code, const char *enhanced, const char *text) {
        reply(s, "%u %s %s", code, enhanced, text);
        reject_log(s, reason, text);
        if (++s->errors >= s->manager->settings.max_errors && s->phase != PHASE_CLOSING) {
                reply(s, "421 4.7.0 %s Too many errors, closing connection", s->manager->settings.hostname);
                reject_log(s, REJECT_TOO_MANY_ERRORS, "error limit reached");
                s->phase = PHASE_CLOSING;
        }
}

/* Writes what is buffered; 0 when all is out or would block, < 0 when the
 * connection broke. */
static int session_flush(Session *s) {
        while (s->out_n > 0) {
                ssize_t k;
                if (s->tls_active) {
                        k = smtpd_tls_write(s->tls, s->out, s->out_n);
                        if (k == -EAGAIN)
                                return 0;
                        if (k < 0)
                                return (int) k;
                } else {
                        k = send(s->fd, s->out, s->out_n, MSG_NOSIGNAL | MSG_DONTWAIT);
                        if (k < 0) {
                                if (errno == EAGAIN || errno == EINTR)
                                        return 0;
                                return -errno;
                        }
                }
                memmove(s->out, s->out + k, s->out_n - (size_t) k);
                s->out_n -= (size_t) k;
        }
        return 0;
}

/* ---- the transaction ------------------------------------------------- */

static void transaction_reset(Session *s) {
        s->have_mail = false;
        json_object_put(s->rcpts);
        s->rcpts = NULL;
        s->memfd = safe_close(s->memfd);
        s->arc = smtpd_arc_txn_free(s->arc);
        s->bdat_discard = false;
        s->bdat_started = false;
}

static bool domain_in(char *const *list, const char *domain) {
        for (char *const *d = list; d && *d; d++)
                if (strcasecmp(*d, domain) == 0)
                        return true;
        return false;
}

static bool client_permitted(Session *s) {
        const SmtpdSettings *c = &s->manager->settings;
        for (size_t i = 0; i < c->n_permit; i++)
                if (config_address_match(&c->permit[i], (const struct sockaddr *) &s->sa))
                        return true;
        return false;
}

/* May relay and use submission: authenticated, or from a permitted network. */
static bool client_trusted(Session *s) {
        return s->auth_user[0] || client_permitted(s);
}

static int memfd_sink(const void *p, size_t n, void *userdata) {
        Session *s = userdata;
        const char *q = p;
        while (n > 0) {
                ssize_t k = write(s->memfd, q, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                q += k;
                n -= (size_t) k;
        }
        return 0;
}

/* For a header comment: no parentheses, backslashes or control octets. */
static void comment_safe(char *out, size_t n, const char *in) {
        size_t i = 0;
        for (; in[i] && i + 1 < n; i++) {
                unsigned char ch = (unsigned char) in[i];
                out[i] = ch < 0x20 || ch > 0x7e || ch == '(' || ch == ')' || ch == '\\' ? '?' : (char) ch;
        }
        out[i] = 0;
}

static int write_received(Session *s) {
        const SmtpdSettings *c = &s->manager->settings;
        char date[64], tlsinfo[200] = "", authinfo[AUTH_USER_MAX + 40] = "";
        struct tm tm;
        time_t now = time(NULL);
        localtime_r(&now, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
        if (s->tls_active)
                snprintf(tlsinfo, sizeof tlsinfo, "\r\n\t(version=%s cipher=%s)",
                         s->facts.version ? s->facts.version : "unknown", s->facts.cipher ? s->facts.cipher : "unknown");
        if (s->auth_user[0] && c->received_auth_user) {
                char user[AUTH_USER_MAX + 1];
                comment_safe(user, sizeof user, s->auth_user);
                snprintf(authinfo, sizeof authinfo, "\r\n\t(authenticated user %s)", user);
        }
        /* RFC 3848: ESMTPA / ESMTPSA once authenticated. */
        char *h = NULL;
        int n = asprintf(&h,
                         "Received: from %s (%s [%s])\r\n"
                         "\tby %s (halyard) with %s%s%s id %s-%u%s%s;\r\n"
                         "\t%s\r\n",
                         s->helo, s->ip, s->ip, c->hostname,
                         s->ehlo ? "ESMTP" : "SMTP", s->tls_active ? "S" : "", s->auth_user[0] ? "A" : "",
                         s->id, s->n_messages + 1, tlsinfo, authinfo, date);
        if (n < 0)
                return -ENOMEM;
        int r = memfd_sink(h, (size_t) n, s);
        free(h);
        s->received_len = (size_t) n;
        return r;
}

/* Opens the memfd with the Received: header and starts the reader. */
static int message_begin(Session *s, bool bdat) {
        s->memfd = memfd_create("smtpd-message", MFD_CLOEXEC);
        if (s->memfd < 0)
                return -errno;
        int r = write_received(s);
        if (r < 0)
                return r;
        SmtpDataOptions o = {
                .max_size = s->manager->settings.max_message_size,
                .flags = (s->mail.body == SMTP_BODY_BINARYMIME ? SMTP_DATA_ALLOW_LONG_LINES : 0) |
                         (s->manager->settings.normalize_bare_newline ? SMTP_DATA_NORMALIZE_BARE_NEWLINE : 0),
                .sink = memfd_sink,
                .userdata = s,
        };
        if (bdat)
                smtp_data_reader_init_bdat(&s->reader, &o);
        else
                smtp_data_reader_init(&s->reader, &o);
        return 0;
}

static RejectReason data_problem_reason(SmtpDataProblem p) {
        switch (p) {
        case SMTP_DATA_TOO_BIG: return REJECT_MESSAGE_TOO_LARGE;
        case SMTP_DATA_BARE_NEWLINE: return REJECT_BARE_NEWLINE;
        default: return REJECT_LINE_TOO_LONG;
        }
}

/* ---- the queue connection pool --------------------------------------- */

static Varlink *queue_pool_take(Manager *m) {
        return smtpd_pool_take(&m->queue_pool);
}

static void queue_pool_give(Manager *m, Varlink *q) {
        smtpd_pool_give(&m->queue_pool, q, !daemon_is_draining(m->daemon));
}

void queue_pool_flush(Manager *m) {
        smtpd_pool_flush(&m->queue_pool);
        smtpd_pool_flush(&m->arc_pool);
}

static void message_enqueue(Session *s, bool fresh);

static int on_enqueue_reply(Varlink *link, json_object *parameters, const char *error,
                            VarlinkReplyFlags flags, void *userdata) {
        Session *s = userdata;
        if (s->queue != link) /* the session is going away */
                return 0;
        s->queue = NULL;
        if (error && s->queue_reused && streq_ptr(error, VARLINK_ERROR_DISCONNECTED)) {
                /* The queue closed a pooled connection (e.g. it restarted)
                 * before taking the call: once more on a new one. */
                varlink_unref(link);
                s->phase = PHASE_COMMAND;
                message_enqueue(s, true);
                if (s->phase == PHASE_QUEUE)
                        return 0;
                session_process(s);
                return 0;
        }
        if (error)
                varlink_unref(link);
        else
                queue_pool_give(s->manager, link);

        const char *id = NULL;
        json_object *v;
        if (!error && json_object_object_get_ex(parameters, "queueId", &v))
                id = json_object_get_string(v);
        if (!id) {
                /* InvalidParameter: the queue refused what we asked of it,
                 * in practice a policy's Queue() route or source address it
                 * does not have: a configuration error, not an outage. */
                bool refused = streq_ptr(error, "org.varlink.service.InvalidParameter");
                reply(s, refused ? "451 4.3.5 Routing refused by the queue (a configuration error), try again later"
                                 : "451 4.3.0 Queue not available, try again later");
                char why[200];
                json_object *param = NULL;
                if (refused)
                        (void) json_object_object_get_ex(parameters, "parameter", &param);
                snprintf(why, sizeof why, "queue answered %s%s%s", error ? error : "no queue id", param ? " " : "",
                         param ? json_object_get_string(param) : "");
                reject_log(s, REJECT_QUEUE_UNAVAILABLE, why);
        } else {
                Manager *m = s->manager;
                char f[6][600];
                s->n_messages++;
                manager_count(m, COUNT_ACCEPTED);
                reply(s, "250 2.0.0 Ok: queued as %s", id);
                snprintf(f[0], sizeof f[0], "HALYARD_QUEUE_ID=%s", id);
                snprintf(f[1], sizeof f[1], "HALYARD_CLIENT_IP=%s", s->ip);
                snprintf(f[2], sizeof f[2], "HALYARD_HELO=%s", s->helo);
                snprintf(f[3], sizeof f[3], "HALYARD_TLS_VERSION=%s", s->tls_active && s->facts.version ? s->facts.version : "none");
                snprintf(f[4], sizeof f[4], "HALYARD_TLS_CIPHER=%s", s->tls_active && s->facts.cipher ? s->facts.cipher : "none");
                snprintf(f[5], sizeof f[5], "HALYARD_SENDER=%s", s->mail.path.address);
                log_event(LOG_INFO, LOG_MESSAGE_ACCEPTED,
                          (const char *const[]){ f[0], f[1], f[2], f[3], f[4], f[5], NULL },
                          "%s: accepted from %s (helo %s), sender <%s>, %zu recipients, %llu bytes", id, s->ip,
                          s->helo, s->mail.path.address, json_object_array_length(s->rcpts),
                          (unsigned long long) s->reader.size);
        }
        transaction_reset(s);
        s->phase = PHASE_COMMAND;
        session_process(s);
        return 0;
}

/* The message is complete and acceptable: hand it to the queue, on a
 * pooled connection unless fresh. */
static void message_enqueue(Session *s, bool fresh) {
        Manager *m = s->manager;
        Varlink *q = fresh ? NULL : queue_pool_take(m);
        int r;

        s->queue_reused = q != NULL;
        if (!q) {
                r = varlink_connect_address(m->event, m->settings.queue_address, &q);
                if (r < 0)
                        goto fail;
                varlink_set_timeout(q, 60ULL * 1000000ULL);
        }
        int fd = dup(s->memfd);
        if (fd < 0) {
                r = -errno;
                goto fail;
        }
        r = varlink_push_fd(q, fd);
        if (r < 0)
                goto fail;

        json_object *p = json_object_new_object(), *client = json_object_new_object();
        const SmtpCommand *mc = &s->mail;
        json_object_object_add(p, "sender", json_object_new_string(mc->path.null ? "" : mc->path.address));
        json_object_object_add(p, "recipients", json_object_get(s->rcpts));
        json_object_object_add(p, "content", json_object_new_int(r));
        json_object_object_add(p, "size", json_object_new_int64((int64_t) s->reader.size));
        if (mc->body == SMTP_BODY_8BITMIME)
                json_object_object_add(p, "body", json_object_new_string("eightBitMime"));
        else if (mc->body == SMTP_BODY_BINARYMIME)
                json_object_object_add(p, "body", json_object_new_string("binaryMime"));
        else if (mc->body == SMTP_BODY_7BIT)
                json_object_object_add(p, "body", json_object_new_string("sevenBit"));
        if (mc->smtputf8)
                json_object_object_add(p, "smtputf8", json_object_new_boolean(true));
        if (mc->ret == SMTP_RET_FULL)
                json_object_object_add(p, "ret", json_object_new_string("full"));
        else if (mc->ret == SMTP_RET_HDRS)
                json_object_object_add(p, "ret", json_object_new_string("headers"));
        if (mc->has_envid)
                json_object_object_add(p, "envid", json_object_new_string(mc->envid));
        json_object_object_add(client, "address", json_object_new_string(s->ip));
        json_object_object_add(client, "helo", json_object_new_string(s->helo));
        if (s->tls_active && s->facts.description)
                json_object_object_add(client, "tls", json_object_new_string(s->facts.description));
        if (s->auth_user[0])
                json_object_object_add(client, "authUser", json_object_new_string(s->auth_user));
        json_object_object_add(p, "client", client);
        s->queue = q;
        r = varlink_invoke(q, "io.halyard.Queue.Enqueue", p, 0, on_enqueue_reply, s);
        json_object_put(p);
        if (r < 0) {
                s->queue = NULL;
                goto fail;
        }
        s->phase = PHASE_QUEUE;
        return;
fail:
        varlink_unref(q);
        reply(s, "451 4.3.0 Queue not available, try again later");
        reject_log(s, REJECT_QUEUE_UNAVAILABLE, strerror(-r));
        transaction_reset(s);
}

static bool policy_has(Session *s, PolicyPhase phase);
static void session_policy(Session *s, PolicyPhase phase, PolicyValue *arguments,
                           void (*then)(Session *s, const PolicyResult *r));
static bool policy_refused(Session *s, const PolicyResult *r);

static void message_commit(Session *s);

/* End of data: header edits from the policy, then the queue. */
static void after_eod(Session *s, const PolicyResult *r) {
        if (policy_refused(s, r)) {
                transaction_reset(s);
                return;
        }
        int fd = -1;
        int k = smtpd_policy_edit_headers(s->memfd, s->received_len, r->actions, &fd);
        if (k < 0) {
                log_warning_errno(k, "%s: applying the policy's header edits failed: %m", s->id);
                reply(s, "451 4.3.0 Local error, try again later");
                transaction_reset(s);
                return;
        }
        if (fd >= 0) {
                safe_close(s->memfd);
                s->memfd = fd;
        }
        smtpd_policy_queue_choices(r->actions, s->rcpts);
        message_commit(s);
}

/* ---- arcd (smtpd-arc.c) ---------------------------------------------- */

void session_arc_facts(Session *s, SmtpdArcFacts *ret) {
        /* While the mailfrom policy decides, the command is not taken yet. */
        const SmtpCommand *mail = s->have_mail ? &s->mail
                                  : s->policy_cmd && s->policy_cmd->verb == SMTP_VERB_MAIL ? s->policy_cmd
                                  : NULL;
        *ret = (SmtpdArcFacts) {
                .manager = s->manager,
                .session_id = s->id,
                .ip = s->ip,
                .helo = s->helo,
                .mail_from = !mail ? NULL : mail->path.null ? "" : mail->path.address,
                .auth_user = s->auth_user,
                .rcpts = s->rcpts,
                .memfd = &s->memfd,
                .txn = &s->arc,
        };
}

static void arc_failed(Session *s, int r) {
        if (r == -EAGAIN) {
                reply(s, "451 4.7.0 Message authentication unavailable, try again later");
                reject_log(s, REJECT_AUTH_UNAVAILABLE, "arcd unavailable (ArcFailure=tempfail)");
        } else {
                log_warning_errno(r, "%s: preparing the message for arcd failed: %m", s->id);
                reply(s, "451 4.3.0 Local error, try again later");
        }
        transaction_reset(s);
}

/* Our continuations after a wait for arcd (PHASE_QUEUE meanwhile). */
static void arc_resume(Session *s, int r, void (*then)(Session *s)) {
        s->phase = PHASE_COMMAND;
        if (r < 0)
                arc_failed(s, r);
        else
                then(s);
        if (s->phase == PHASE_QUEUE || s->phase == PHASE_POLICY)
                return;
        session_process(s);
}

static void message_enqueue_pooled(Session *s) {
        message_enqueue(s, false);
}

static void on_arc_committed(Session *s, int r) {
        arc_resume(s, r, message_enqueue_pooled);
}

/* After every other edit: our A-R, signatures, the seal; then the queue. */
static void message_commit(Session *s) {
        int r = smtpd_arc_commit(s, on_arc_committed);
        if (r > 0)
                s->phase = PHASE_QUEUE;
        else if (r < 0)
                arc_failed(s, r);
        else
                message_enqueue(s, false);
}

static void message_policy(Session *s);

static void on_arc_authenticated(Session *s, int r) {
        arc_resume(s, r, message_policy);
}

/* The reader finished (DATA end marker, or the last BDAT chunk). */
static void message_end(Session *s) {
        SmtpReplyError e;
        if (smtp_data_result(&s->reader, &e) < 0) {
                reply_error(s, data_problem_reason(s->reader.problem), e.code, e.enhanced, e.text);
                transaction_reset(s);
                return;
        }
        /* Authenticate=yes: the results first, so that the policy's
         * spf_result() and friends answer from them. */
        int r = smtpd_arc_authenticate(s, on_arc_authenticated);
        if (r > 0)
                s->phase = PHASE_QUEUE;
        else if (r < 0)
                arc_failed(s, r);
        else
                message_policy(s);
}

/* The eod policy, then the commit. */
static void message_policy(Session *s) {
        if (policy_has(s, POLICY_PHASE_EOD)) {
                PolicyValue *args = policy_array_new(), *mail = NULL;
                int r = args ? smtpd_policy_mail_object(s->memfd, &mail) : -ENOMEM;
                if (r >= 0)
                        r = policy_array_set_str(args, "mail", mail);
                policy_value_unref(mail);
                if (r < 0) {
                        policy_value_unref(args);
                        reply(s, "451 4.3.0 Local error, try again later");
                        transaction_reset(s);
                        return;
                }
                session_policy(s, POLICY_PHASE_EOD, args, after_eod);
                return;
        }
        message_commit(s);
}

/* ---- the policy ------------------------------------------------------ */

static bool policy_has(Session *s, PolicyPhase phase) {
        return s->policy && policy_generation_has_handler(s->policy, phase);
}

/* Sets key to v and drops v (NULL: out of memory). */
static int set_take(PolicyValue *a, const char *key, PolicyValue *v) {
        int r = v ? policy_array_set_str(a, key, v) : -ENOMEM;
        policy_value_unref(v);
        return r;
}

static int set_str(PolicyValue *a, const char *key, const char *v) {
        return v ? set_take(a, key, policy_string_new_cstr(v)) : 0;
}

static PolicyValue *path_facts(const SmtpPath *p) {
        PolicyValue *a = policy_array_new();
        if (!a)
                return NULL;
        int r = set_str(a, "address", p->null ? "" : p->postmaster ? "postmaster" : p->address);
        if (r >= 0)
                r = set_str(a, "localpart", p->postmaster ? "postmaster" : p->local);
        if (r >= 0)
                r = set_str(a, "domain", p->domain);
        return r < 0 ? policy_value_unref(a) : a;
}

static int sockaddr_facts(PolicyValue *a, const struct sockaddr_storage *sa, const char *ip_key, const char *port_key) {
        char ip[INET6_ADDRSTRLEN];
        format_ip(sa, ip, sizeof ip);
        uint16_t port = sa->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *) sa)->sin_port)
                        : sa->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *) sa)->sin6_port) : 0;
        int r = set_str(a, ip_key, ip);
        return r < 0 ? r : set_take(a, port_key, policy_number_new(port));
}

/* $connection: what the policy may know about the client so far. */
static PolicyValue *connection_facts(Session *s) {
        const SmtpdTlsFacts *t = &s->facts;
        struct sockaddr_storage local = {};
        socklen_t len = sizeof local;
        PolicyValue *c = policy_array_new();
        if (!c)
                return NULL;
        int r = set_str(c, "id", s->id);
        if (r >= 0)
                r = sockaddr_facts(c, &s->sa, "remoteip", "remoteport");
        if (r >= 0 && getsockname(s->fd, (struct sockaddr *) &local, &len) >= 0)
                r = sockaddr_facts(c, &local, "localip", "localport");
        if (r >= 0)
                r = set_str(c, "serverid", s->manager->settings.hostname);
        if (r >= 0)
                r = set_str(c, "listener", listener_kind_to_string(s->listener->kind));
        if (r >= 0 && s->helo[0]) {
                PolicyValue *h = policy_array_new();
                r = h ? set_str(h, "verb", s->ehlo ? "EHLO" : "HELO") : -ENOMEM;
                if (r >= 0)
                        r = set_str(h, "host", s->helo);
                r = r < 0 ? (policy_value_unref(h), r) : set_take(c, "helo", h);
        }
        if (r >= 0 && s->tls_active) {
                PolicyValue *tls = policy_array_new();
                r = tls ? set_str(tls, "protocol", t->version) : -ENOMEM;
                if (r >= 0)
                        r = set_str(tls, "cipher", t->cipher);
                if (r >= 0)
                        r = set_str(tls, "sni", t->sni);
                if (r >= 0 && t->peer != SMTPD_TLS_PEER_NONE) {
                        PolicyValue *pc = policy_array_new();
                        r = pc ? set_str(pc, "subject", t->peer_subject) : -ENOMEM;
                        if (r >= 0)
                                r = set_str(pc, "issuer", t->peer_issuer);
                        if (r >= 0)
                                r = set_str(pc, "cn", t->peer_cn);
                        if (r >= 0)
                                r = set_str(pc, "fingerprint_sha256", t->peer_sha256);
                        if (r >= 0)
                                r = set_take(pc, "verified", policy_value_ref(policy_bool(t->peer == SMTPD_TLS_PEER_VERIFIED)));
                        r = r < 0 ? (policy_value_unref(pc), r) : set_take(tls, "peercert", pc);
                }
                r = r < 0 ? (policy_value_unref(tls), r) : set_take(c, "tls", tls);
        }
        if (r >= 0 && s->auth_user[0]) {
                PolicyValue *a = policy_array_new();
                r = a ? set_str(a, "mechanism", auth_mech_to_string(s->sasl.mech)) : -ENOMEM;
                if (r >= 0)
                        r = set_str(a, "username", s->auth_user);
                r = r < 0 ? (policy_value_unref(a), r) : set_take(c, "auth", a);
        }
        return r < 0 ? policy_value_unref(c) : c;
}

/* $transaction: the sender and the recipients accepted so far. */
static PolicyValue *transaction_facts(Session *s) {
        PolicyValue *t = policy_array_new(), *rcpts = policy_array_new();
        int r = t && rcpts ? 0 : -ENOMEM;
        if (r >= 0 && s->have_mail)
                r = set_take(t, "sender", path_facts(&s->mail.path));
        /* Each recipient as $arguments["address"] has it in rcptto, so
         * `foreach (... as $rcpt) $rcpt["domain"]` works in eod. */
        for (size_t i = 0; r >= 0 && s->rcpts && i < json_object_array_length(s->rcpts); i++) {
                const char *address = json_object_get_string(
                        json_object_object_get(json_object_array_get_idx(s->rcpts, i), "address"));
                const char *at = strrchr(address, '@');
                PolicyValue *v = policy_array_new();
                r = v ? set_str(v, "address", address) : -ENOMEM;
                if (r >= 0)
                        r = at ? set_take(v, "localpart", policy_string_new(address, (size_t) (at - address)))
                               : set_str(v, "localpart", address);
                if (r >= 0)
                        r = set_str(v, "domain", at ? at + 1 : "");
                if (r >= 0)
                        r = policy_array_push(rcpts, v);
                policy_value_unref(v);
        }
        if (r >= 0)
                r = set_take(t, "recipients", policy_value_ref(rcpts));
        policy_value_unref(rcpts);
        return r < 0 ? policy_value_unref(t) : t;
}

static void policy_log_actions(const char *client_ip, const char *session_id, const PolicyResult *r) {
        for (size_t i = 0; r->actions && i < policy_array_size(r->actions); i++) {
                PolicyValue *a = policy_array_value_at(r->actions, i);
                PolicyValue *kind = policy_array_get_str(a, "action"), *level = policy_array_get_str(a, "level"),
                            *msg = policy_array_get_str(a, "message"), *at = policy_array_get_str(a, "at");
                if (!kind || policy_value_type(kind) != POLICY_TYPE_STRING ||
                    strcmp(policy_value_string(kind, NULL), "log") != 0 || !msg || policy_value_type(msg) != POLICY_TYPE_STRING)
                        continue;
                const char *l = level && policy_value_type(level) == POLICY_TYPE_STRING ? policy_value_string(level, NULL) : "info";
                int prio = strcmp(l, "debug") == 0 ? LOG_DEBUG : strcmp(l, "notice") == 0 ? LOG_NOTICE :
                           strcmp(l, "warning") == 0 ? LOG_WARNING : strcmp(l, "error") == 0 ? LOG_ERR : LOG_INFO;
                char ip[80], id[60], where[300];
                snprintf(ip, sizeof ip, "HALYARD_CLIENT_IP=%s", client_ip);
                snprintf(id, sizeof id, "HALYARD_SESSION_ID=%s", session_id);
                snprintf(where, sizeof where, "HALYARD_POLICY_AT=%s",
                         at && policy_value_type(at) == POLICY_TYPE_STRING ? policy_value_string(at, NULL) : "");
                log_full(prio, 0, (const char *const[]){ ip, id, where, NULL }, "%s: policy: %s", session_id,
                         policy_value_string(msg, NULL));
        }
}

static void policy_finish(Session *s, const PolicyResult *r) {
        SmtpdPolicyTask *t = TAKE_PTR(s->policy_task);
        PolicyValue *ctx = t ? smtpd_policy_task_context(t) : NULL;
        if (ctx) {
                policy_value_unref(s->policy_context);
                s->policy_context = policy_value_ref(ctx);
        }
        policy_log_actions(s->ip, s->id, r);
        if (r->failed)
                log_warning("%s: policy failed, answering %u %s: %s", s->id, r->code, r->enhanced,
                            r->error ?: "unknown error");
        s->policy_then(s, r);
        smtpd_policy_task_free(t); /* r is the task's */
}

static void on_policy_done(SmtpdPolicyTask *t, const PolicyResult *r, void *userdata) {
        Session *s = userdata;
        s->phase = PHASE_COMMAND;
        policy_finish(s, r);
        session_process(s);
}

/* The disconnect handler runs when the client is gone and nothing can
 * answer it any more: its run is detached from the session and owned by the
 * manager until its lookups are answered (for log() lines and rate()
 * counters). Whatever is left when the loop ends is freed with it. */
struct DetachedRun {
        Manager *manager;
        SmtpdPolicyTask *task;
        DetachedRun *prev, *next;
        char ip[INET6_ADDRSTRLEN];
        char id[24];
};

static void detached_run_free(DetachedRun *d) {
        Manager *m = d->manager;
        smtpd_policy_task_free(d->task);
        if (d->prev)
                d->prev->next = d->next;
        else if (m->detached == d)
                m->detached = d->next;
        if (d->next)
                d->next->prev = d->prev;
        free(d);
}

static void detached_run_finish(DetachedRun *d, const PolicyResult *r) {
        policy_log_actions(d->ip, d->id, r);
        if (r->failed)
                log_warning("%s: disconnect policy failed: %s", d->id, r->error ?: "unknown error");
        detached_run_free(d);
}

static void on_detached_done(SmtpdPolicyTask *t, const PolicyResult *r, void *userdata) {
        detached_run_finish(userdata, r);
}

static bool policy_traced(Session *s);

static void session_policy_disconnect(Session *s, const char *why) {
        Manager *m = s->manager;
        bool remote = strcmp(why, "client disconnected") == 0, local = strcmp(why, "closed") == 0;
        DetachedRun *d = calloc(1, sizeof *d);
        PolicyValue *conn = connection_facts(s), *tx = transaction_facts(s), *args = policy_array_new();
        int r = d && conn && tx && args ? 0 : -ENOMEM;
        if (r >= 0)
                r = set_str(args, "close", remote ? "remote" : "local");
        if (r >= 0 && !remote && !local)
                r = set_str(args, "error", why); /* a timeout, a write failure, a refused TLS... */
        if (r >= 0) {
                PolicyRunParams p = { .connection = conn, .transaction = tx, .arguments = args,
                                      .context = s->policy_context };
                d->manager = m;
                snprintf(d->ip, sizeof d->ip, "%s", s->ip);
                snprintf(d->id, sizeof d->id, "%s", s->id);
                r = smtpd_policy_start(m, s->policy, POLICY_PHASE_DISCONNECT, &p, policy_traced(s) ? s->id : NULL,
                                       on_detached_done, d, &d->task);
        }
        policy_value_unref(conn);
        policy_value_unref(tx);
        policy_value_unref(args);
        if (r < 0) {
                log_warning("%s: disconnect policy not run: %s", s->id, strerror(-r));
                free(d);
        } else if (r > 0)
                detached_run_finish(d, smtpd_policy_task_result(d->task));
        else {
                d->next = m->detached;
                if (d->next)
                        d->next->prev = d;
                m->detached = d;
        }
}

/* The operator asked to trace this client's sessions (PolicyTrace). */
static bool policy_traced(Session *s) {
        Manager *m = s->manager;
        for (unsigned i = 0; i < m->n_trace; i++)
                if (strcmp(m->trace[i], s->ip) == 0)
                        return true;
        return false;
}

/* Runs the policy's handler for phase; then() follows with the result, at
 * once or when the policy's lookups are answered (the session reads no
 * input meanwhile, so pipelined commands wait their turn). Takes arguments. */
static void session_policy(Session *s, PolicyPhase phase, PolicyValue *arguments,
                           void (*then)(Session *s, const PolicyResult *r)) {
        PolicyValue *conn = connection_facts(s), *tx = transaction_facts(s);
        PolicyRunParams p = { .connection = conn, .transaction = tx, .arguments = arguments, .context = s->policy_context };
        int r = conn && tx && arguments ? 0 : -ENOMEM;

        s->policy_then = then;
        if (r >= 0)
                r = smtpd_policy_start_with_message(s->manager, s->policy, phase, &p,
                                                    phase == POLICY_PHASE_EOD ? s->memfd : -1,
                                                    policy_traced(s) ? s->id : NULL, on_policy_done, s, &s->policy_task);
        policy_value_unref(conn);
        policy_value_unref(tx);
        policy_value_unref(arguments);
        if (r < 0) {
                PolicyResult fail = { .verdict = POLICY_VERDICT_DEFER, .code = 451, .enhanced = "4.3.0",
                                      .reason = (char *) "Temporary policy failure", .failed = true,
                                      .error = (char *) strerror(-r) };
                s->policy_task = NULL;
                policy_finish(s, &fail);
        } else if (r > 0)
                policy_finish(s, smtpd_policy_task_result(s->policy_task));
        else
                s->phase = PHASE_POLICY;
}

/* For a Reject() or Defer() verdict: the reply, and true. */
static bool policy_refused(Session *s, const PolicyResult *r) {
        PolicyReply pr;
        if (!policy_result_reply(r, false, &pr))
                return false;
        reply_error(s, REJECT_POLICY, pr.code, pr.enhanced, pr.text);
        if (r->disconnect)
                s->phase = PHASE_CLOSING;
        return true;
}

/* ---- AUTH ------------------------------------------------------------ */

static unsigned auth_flags(Session *s) {
        unsigned f = 0;
        if (s->tls_active)
                f |= AUTH_SASL_TLS;
        if (s->manager->settings.auth_plaintext)
                f |= AUTH_SASL_ALLOW_PLAINTEXT;
        if (s->tls_active && s->facts.peer == SMTPD_TLS_PEER_VERIFIED)
                f |= AUTH_SASL_CLIENT_CERT;
        return f;
}

/* The mechanisms EHLO offers now, or NULL. */
static const char *auth_offer(Session *s) {
        unsigned f = auth_flags(s);
        if (!s->manager->passwd)
                f &= ~(AUTH_SASL_TLS | AUTH_SASL_ALLOW_PLAINTEXT);
        return auth_ehlo_mechanisms(f);
}

static void auth_log(Session *s, int priority, const char *user, const char *what) {
        char ip[80], u[AUTH_USER_MAX + 40], id[60];
        snprintf(ip, sizeof ip, "HALYARD_CLIENT_IP=%s", s->ip);
        snprintf(u, sizeof u, "HALYARD_AUTH_USER=%s", user);
        snprintf(id, sizeof id, "HALYARD_SESSION_ID=%s", s->id);
        log_full(priority, 0, (const char *const[]){ ip, u, id, NULL }, "%s: AUTH %s from %s: user %s: %s", s->id,
                 auth_mech_to_string(s->sasl.mech), s->ip, user, what);
}

static void auth_finish(Session *s) {
        auth_sasl_clear(&s->sasl);
        s->phase = PHASE_COMMAND;
}

static void auth_success(Session *s, const char *user) {
        snprintf(s->auth_user, sizeof s->auth_user, "%s", user);
        manager_count(s->manager, COUNT_AUTH_SUCCESS);
        auth_log(s, LOG_INFO, user, "authenticated");
        reply(s, "235 2.7.0 Authentication successful");
        auth_finish(s);
}

static int on_auth_delay(sd_event_source *es, uint64_t usec, void *userdata) {
        Session *s = userdata;
        auth_finish(s);
        reply_error(s, REJECT_AUTH_FAILED, 535, "5.7.8", "Error: authentication failed");
        session_process(s);
        return 0;
}

/* A failed verification: counted for the address, answered after a delay
 * that grows with the failures, so guessing is slow even over many
 * connections. The session reads nothing meanwhile. */
static void auth_failed(Session *s, const char *user) {
        Manager *m = s->manager;
        int64_t delay = auth_throttle_failure(m->auth_throttle, (const struct sockaddr *) &s->sa, sizeof s->sa);
        manager_count(m, COUNT_AUTH_FAILURE);
        auth_log(s, LOG_NOTICE, user, "authentication failed");
        if (delay < 0)
                delay = 1000000;
        uint64_t when = manager_now_usec(m) + (uint64_t) delay;
        int r = s->auth_delay ? sd_event_source_set_time(s->auth_delay, when)
                              : sd_event_add_time(m->event, &s->auth_delay, CLOCK_MONOTONIC, when, 0, on_auth_delay, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->auth_delay, SD_EVENT_ONESHOT);
        if (r < 0)
                (void) on_auth_delay(NULL, 0, s);
        else
                s->phase = PHASE_AUTH_WAIT;
}

static void on_auth_verified(int result, const char *user, void *userdata) {
        Session *s = userdata;
        s->auth_req = NULL;
        if (result > 0)
                auth_success(s, user);
        else if (result == 0) {
                auth_failed(s, user);
                return;
        } else {
                reply(s, "454 4.7.0 Temporary authentication failure");
                auth_log(s, LOG_WARNING, user, "verification failed");
                auth_finish(s);
        }
        session_process(s);
}

static void auth_verify_builtin(Session *s);

/* The policy decides AUTH: Accept() (optionally naming the user), Reject()
 * (counted and delayed like a wrong password), Defer(), or no decision: the
 * password file. */
static void after_auth_policy(Session *s, const PolicyResult *r) {
        switch (policy_result_verdict(r)) {
        case POLICY_VERDICT_ACCEPT:
                auth_success(s, r->username && *r->username ? r->username : s->sasl.user);
                return;
        case POLICY_VERDICT_REJECT:
                auth_failed(s, s->sasl.user);
                return;
        case POLICY_VERDICT_DEFER:
                reply(s, "454 4.7.0 Temporary authentication failure");
                auth_log(s, LOG_WARNING, s->sasl.user, r->failed ? "policy failed" : "deferred by policy");
                auth_finish(s);
                return;
        default:
                if (!s->manager->passwd) {
                        auth_failed(s, s->sasl.user);
                        return;
                }
                auth_verify_builtin(s);
        }
}

static void auth_step(Session *s, const AuthStep *step) {
        switch (step->kind) {
        case AUTH_STEP_CHALLENGE:
                reply(s, "334 %s", step->challenge);
                s->phase = PHASE_AUTH;
                return;
        case AUTH_STEP_ERROR:
                auth_finish(s);
                reply_error(s, step->code == 538 ? REJECT_AUTH_REQUIRED : REJECT_SYNTAX, (unsigned) step->code,
                            step->enhanced, step->text);
                return;
        case AUTH_STEP_DONE:
                break;
        }
        if (s->sasl.mech == AUTH_MECH_EXTERNAL) {
                /* The identity is the verified certificate's subject CN. */
                const char *cn = s->facts.peer_cn;
                if (!cn || strlen(cn) > AUTH_USER_MAX || (s->sasl.authzid[0] && strcmp(s->sasl.authzid, cn) != 0)) {
                        auth_finish(s);
                        reply_error(s, REJECT_AUTH_FAILED, 535, "5.7.8", "Error: certificate does not authorize this identity");
                        return;
                }
                auth_success(s, cn);
                return;
        }
        if (policy_has(s, POLICY_PHASE_AUTH)) {
                PolicyValue *args = policy_array_new();
                int r = args ? set_str(args, "mechanism", auth_mech_to_string(s->sasl.mech)) : -ENOMEM;
                if (r >= 0)
                        r = set_str(args, "username", s->sasl.user);
                if (r >= 0)
                        r = set_str(args, "password", s->sasl.password);
                /* The password stays until the verdict: no decision means
                 * the password file checks it. */
                if (r < 0)
                        args = policy_value_unref(args);
                session_policy(s, POLICY_PHASE_AUTH, args, after_auth_policy);
                return;
        }
        auth_verify_builtin(s);
}

/* The password against the password file, off the loop. */
static void auth_verify_builtin(Session *s) {
        Manager *m = s->manager;
        s->phase = PHASE_AUTH_WAIT;
        int r = auth_verify(m->verifier, m->passwd, s->sasl.user, s->sasl.password, on_auth_verified, s, &s->auth_req);
        explicit_bzero(s->sasl.password, sizeof s->sasl.password);
        if (r < 0) {
                s->auth_req = NULL;
                reply(s, "454 4.7.0 Temporary authentication failure");
                auth_log(s, LOG_WARNING, s->sasl.user, r == -EBUSY ? "verifier busy" : "verification failed");
                auth_finish(s);
        }
}

static void cmd_auth(Session *s, const SmtpCommand *cmd) {
        Manager *m = s->manager;
        if (!m->passwd && !m->settings.tls_client_ca) {
                reply_error(s, REJECT_SYNTAX, 502, "5.5.1", "Error: authentication not enabled");
                return;
        }
        if (!s->ehlo) {
                reply_error(s, REJECT_BAD_SEQUENCE, 503, "5.5.1", "Error: send EHLO first");
                return;
        }
        if (s->auth_user[0]) {
                reply_error(s, REJECT_BAD_SEQUENCE, 503, "5.5.1", "Error: already authenticated");
                return;
        }
        if (s->have_mail) {
                reply_error(s, REJECT_BAD_SEQUENCE, 503, "5.5.1", "Error: MAIL transaction in progress");
                return;
        }
        AuthMech mech = auth_mech_from_string(cmd->mechanism);
        if ((mech == AUTH_MECH_PLAIN || mech == AUTH_MECH_LOGIN) && !m->passwd) {
                reply_error(s, REJECT_SYNTAX, 504, "5.5.4", "Error: unrecognized authentication type");
                return;
        }
        if (auth_throttle_refused(m->auth_throttle, (const struct sockaddr *) &s->sa, sizeof s->sa)) {
                reply_error(s, REJECT_AUTH_FAILED, 454, "4.7.0", "Too many failed authentications, try again later");
                return;
        }
        char args[SMTP_AUTH_MECH_MAX + SMTP_COMMAND_LINE_MAX + 3];
        snprintf(args, sizeof args, "%s%s%s", cmd->mechanism, cmd->has_initial_response ? " " : "",
                 cmd->has_initial_response ? cmd->initial_response : "");
        AuthStep step;
        if (auth_sasl_start(&s->sasl, args, auth_flags(s), &step) < 0) {
                reply(s, "454 4.7.0 Temporary authentication failure");
                return;
        }
        auth_step(s, &step);
}

/* A line while a 334 challenge is out. */
static void auth_line(Session *s, const char *line, size_t len, bool too_long) {
        AuthStep step;
        if (too_long) {
                auth_finish(s);
                reply_error(s, REJECT_LINE_TOO_LONG, 500, "5.5.6", "Error: authentication line too long");
                return;
        }
        if (auth_sasl_feed(&s->sasl, line, len, &step) < 0) {
                auth_finish(s);
                reply(s, "454 4.7.0 Temporary authentication failure");
                return;
        }
        auth_step(s, &step);
}

/* ---- commands -------------------------------------------------------- */

static void reply_ehlo(Session *s) {
        const SmtpdSettings *c = &s->manager->settings;
        reply(s, "250-%s Hello %s [%s]", c->hostname, s->helo, s->ip);
        reply(s, "250-PIPELINING");
        reply(s, "250-SIZE %llu", (unsigned long long) c->max_message_size);
        reply(s, "250-8BITMIME");
        reply(s, "250-SMTPUTF8");
        reply(s, "250-ENHANCEDSTATUSCODES");
        if (s->manager->tls && !s->tls_active && s->listener->kind != LISTENER_SUBMISSIONS)
                reply(s, "250-STARTTLS");
        const char *mechs = s->auth_user[0] ? NULL : auth_offer(s);
        if (mechs)
                reply(s, "250-AUTH %s", mechs);
        reply(s, "250-DSN");
        reply(s, "250 CHUNKING");
}

static void rcpt_builtin(Session *s, const SmtpCommand *cmd);

/* The command the policy decides on, kept for when the verdict comes. */
static int policy_keep_command(Session *s, const SmtpCommand *cmd) {
        if (!s->policy_cmd) {
                s->policy_cmd = malloc(sizeof *s->policy_cmd);
                if (!s->policy_cmd)
                        return -ENOMEM;
        }
        *s->policy_cmd = *cmd;
        return 0;
}
static void rcpt_add(Session *s, const SmtpCommand *cmd);
static void after_rcpt(Session *s, const PolicyResult *r);

static void reply_helo(Session *s) {
        if (s->ehlo)
                reply_ehlo(s);
        else
                reply(s, "250 %s", s->manager->settings.hostname);
}

/* A refused HELO is forgotten: MAIL needs a new one. */
static void after_helo(Session *s, const PolicyResult *r) {
        if (policy_refused(s, r)) {
                s->helo[0] = 0;
                s->ehlo = false;
                return;
        }
        reply_helo(s);
}

static void cmd_rcpt(Session *s, const SmtpCommand *cmd) {
        const SmtpdSettings *c = &s->manager->settings;
        if (!s->have_mail) {
                reply_error(s, REJECT_BAD_SEQUENCE, 503, "5.5.1", "Error: need MAIL command");
                return;
        }
        if (json_object_array_length(s->rcpts) >= c->max_recipients) {
                reply_error(s, REJECT_TOO_MANY_RECIPIENTS, 452, "4.5.3", "Error: too many recipients");
                return;
        }
        if (policy_has(s, POLICY_PHASE_RCPTTO)) {
                PolicyValue *args = policy_array_new();
                if (policy_keep_command(s, cmd) < 0)
                        args = policy_value_unref(args);
                if (args && set_take(args, "address", path_facts(&cmd->path)) < 0)
                        args = policy_value_unref(args);
                session_policy(s, POLICY_PHASE_RCPTTO, args, after_rcpt);
                return;
        }
        rcpt_builtin(s, cmd);
}

/* Without a decision from the policy: local and relay domains, or a
 * trusted client. Never an open relay. */
static void rcpt_builtin(Session *s, const SmtpCommand *cmd) {
        const SmtpdSettings *c = &s->manager->settings;
        bool ok = cmd->path.postmaster || client_trusted(s) ||
                  domain_in(c->local_domains, cmd->path.domain) || domain_in(c->relay_domains, cmd->path.domain);
        if (!ok) {
                reply_error(s, REJECT_RELAY_DENIED, 554, "5.7.1", "Relay access denied");
                return;
        }
        rcpt_add(s, cmd);
}

static void after_rcpt(Session *s, const PolicyResult *r) {
        if (policy_refused(s, r))
                return;
        if (policy_result_verdict(r) == POLICY_VERDICT_ACCEPT)
                rcpt_add(s, s->policy_cmd);
        else
                rcpt_builtin(s, s->policy_cmd);
}

static void rcpt_add(Session *s, const SmtpCommand *cmd) {
        json_object *r = json_object_new_object();
        json_object_object_add(r, "address", json_object_new_string(cmd->path.postmaster ? "postmaster" : cmd->path.address));
        if (cmd->notify) {
                json_object *n = json_object_new_array();
                if (cmd->notify & SMTP_NOTIFY_NEVER)
                        json_object_array_add(n, json_object_new_string("NEVER"));
                if (cmd->notify & SMTP_NOTIFY_SUCCESS)
                        json_object_array_add(n, json_object_new_string("SUCCESS"));
                if (cmd->notify & SMTP_NOTIFY_FAILURE)
                        json_object_array_add(n, json_object_new_string("FAILURE"));
                if (cmd->notify & SMTP_NOTIFY_DELAY)
                        json_object_array_add(n, json_object_new_string("DELAY"));
                json_object_object_add(r, "notify", n);
        }
        if (cmd->has_orcpt) {
                char o[SMTP_COMMAND_LINE_MAX + SMTP_ORCPT_MAX + 4];
                snprintf(o, sizeof o, "%s;%s", cmd->orcpt_type, cmd->orcpt);
                json_object_object_add(r, "orcpt", json_object_new_string(o));
        }
        json_object_array_add(s->rcpts, r);
        reply(s, "250 2.1.5 Ok");
}

static void mail_accept(Session *s, const SmtpCommand *cmd);
static void after_mail(Session *s, const PolicyResult *r);

static void cmd_mail(Session *s, const SmtpCommand *cmd) {
        const SmtpdSettings *c = &s->manager->settings;
        if (!s->helo[0]) {
                reply_error(s, REJECT_BAD_SEQUENCE, 503, "5.5.1", "Error: send HELO/EHLO first");
                return;
        }
        if (s->have_mail) {
                reply_error(s, REJECT_BAD_SEQUENCE, 503, "5.5.1", "Error: nested MAIL command");
                return;
        }
        if (s->listener->kind != LISTENER_SMTP && !client_trusted(s)) {
                reply_error(s, REJECT_AUTH_REQUIRED, 530, "5.7.0", "Authentication required");
                return;
        }
        if (cmd->has_size && c->max_message_size > 0 && cmd->size > c->max_message_size) {
                reply_error(s, REJECT_MESSAGE_TOO_LARGE, 552, "5.3.4", "Message size exceeds fixed limit");
                return;
        }
        /* A transaction runs on one policy generation from MAIL to its end;
         * a reload meanwhile applies from the next one. */
        if (s->policy != s->manager->policy) {
                policy_generation_unref(s->policy);
                s->policy = policy_generation_ref(s->manager->policy);
        }
        if (policy_has(s, POLICY_PHASE_MAILFROM)) {
                PolicyValue *args = policy_array_new();
                if (policy_keep_command(s, cmd) < 0)
                        args = policy_value_unref(args);
                if (args && set_take(args, "address", path_facts(&cmd->path)) < 0)
                        args = policy_value_unref(args);
                session_policy(s, POLICY_PHASE_MAILFROM, args, after_mail);
                return;
        }
        mail_accept(s, cmd);
}

static void mail_accept(Session *s, const SmtpCommand *cmd) {
        s->mail = *cmd;
        s->have_mail = true;
        s->rcpts = json_object_new_array();
        reply(s, "250 2.1.0 Ok");
}

static void after_mail(Session *s, const PolicyResult *r) {
        if (!policy_refused(s, r))
                mail_accept(s, s->policy_cmd);
}

static void start_data(Session *s, bool bdat, const SmtpCommand *cmd) {
        if (!bdat) {
                if (!s->have_mail) {
                        reply_error(s, REJECT_BAD_SEQUENCE, 503, "5.5.1", "Error: need MAIL command");
                        return;
                }
                if (json_object_array_length(s->rcpts) == 0) {
                        reply_error(s, REJECT_BAD_SEQUENCE, 503, "5.5.1", "Error: need RCPT command");
                        return;
                }
                if (s->bdat_started) {
                        reply_error(s, REJECT_BAD_SEQUENCE, 503, "5.5.1", "Error: DATA after BDAT");
                        return;
                }
                if (message_begin(s, false) < 0) {
                        reply(s, "451 4.3.0 Local error, try again later");
                        transaction_reset(s);
                        return;
                }
                reply(s, "354 End data with <CR><LF>.<CR><LF>");
                s->phase = PHASE_DATA;
                return;
        }

        /* BDAT: the chunk follows at once, so it is read even when refused. */
        if (!s->bdat_started) {
                s->bdat_discard = !s->have_mail || json_object_array_length(s->rcpts) == 0;
                if (!s->bdat_discard && message_begin(s, true) < 0)
                        s->bdat_discard = true;
                if (s->bdat_discard) {
                        SmtpDataOptions o = {};
                        smtp_data_reader_init_bdat(&s->reader, &o);
                }
                s->bdat_started = true;
        }
        (void) smtp_data_reader_bdat(&s->reader, cmd->chunk_size, cmd->last);
        s->phase = PHASE_BDAT;
}

static void bdat_chunk_done(Session *s) {
        s->phase = PHASE_COMMAND;
        if (s->bdat_discard) {
                bool need_mail = !s->have_mail;
                if (s->reader.done)
                        transaction_reset(s);
                reply_error(s, REJECT_BAD_SEQUENCE, 503, "5.5.1", need_mail ? "Error: need MAIL command" : "Error: need RCPT command");
                return;
        }
        if (!s->reader.done) {
                reply(s, "250 2.0.0 %llu octets received", (unsigned long long) s->reader.wire_bytes);
                return;
        }
        message_end(s);
}

static int start_tls(Session *s);

static void handle_line(Session *s, const char *line, size_t len, bool too_long) {
        unsigned flags = SMTP_PARSE_SMTPUTF8 | SMTP_PARSE_8BITMIME | SMTP_PARSE_BINARYMIME | SMTP_PARSE_DSN | SMTP_PARSE_SIZE;
        SmtpCommand cmd;
        SmtpReplyError e;

        if (++s->n_commands > s->manager->settings.max_commands) {
                reply(s, "421 4.7.0 %s Too many commands, closing connection", s->manager->settings.hostname);
                reject_log(s, REJECT_TOO_MANY_COMMANDS, "command limit reached");
                s->phase = PHASE_CLOSING;
                return;
        }
        if (too_long)
                flags |= SMTP_PARSE_LINE_TOO_LONG;
        if (s->have_mail && s->mail.smtputf8)
                flags |= SMTP_PARSE_UTF8_TRANSACTION;
        if (smtp_command_parse(line, len, flags, &cmd, &e) < 0) {
                /* A refused BDAT still has its chunk coming; without a
                 * valid size we cannot find the end of it: close. */
                if (len >= 5 && strncasecmp(line, "BDAT ", 5) == 0) {
                        reply(s, "%u %s %s", e.code, e.enhanced, e.text);
                        reply(s, "421 4.7.0 %s Closing connection", s->manager->settings.hostname);
                        reject_log(s, REJECT_SYNTAX, "bad BDAT");
                        s->phase = PHASE_CLOSING;
                        return;
                }
                reply_error(s, too_long || strcmp(e.enhanced, "5.5.6") == 0 ? REJECT_LINE_TOO_LONG : REJECT_SYNTAX,
                            e.code, e.enhanced, e.text);
                return;
        }
        if (s->bdat_started && !s->bdat_discard && cmd.verb != SMTP_VERB_BDAT && cmd.verb != SMTP_VERB_RSET &&
            cmd.verb != SMTP_VERB_QUIT && cmd.verb != SMTP_VERB_NOOP) {
                reply_error(s, REJECT_BAD_SEQUENCE, 503, "5.5.1", "Error: BDAT transaction in progress");
                return;
        }
        switch (cmd.verb) {
        case SMTP_VERB_EHLO:
        case SMTP_VERB_HELO:
                transaction_reset(s);
                snprintf(s->helo, sizeof s->helo, "%s", cmd.arg);
                s->ehlo = cmd.verb == SMTP_VERB_EHLO;
                if (policy_has(s, POLICY_PHASE_HELO)) {
                        PolicyValue *args = policy_array_new();
                        int r = args ? set_str(args, "verb", s->ehlo ? "EHLO" : "HELO") : -ENOMEM;
                        if (r >= 0)
                                r = set_str(args, "host", s->helo);
                        if (r < 0)
                                args = policy_value_unref(args);
                        session_policy(s, POLICY_PHASE_HELO, args, after_helo);
                        break;
                }
                reply_helo(s);
                break;
        case SMTP_VERB_MAIL:
                cmd_mail(s, &cmd);
                break;
        case SMTP_VERB_RCPT:
                cmd_rcpt(s, &cmd);
                break;
        case SMTP_VERB_DATA:
                start_data(s, false, &cmd);
                break;
        case SMTP_VERB_BDAT:
                start_data(s, true, &cmd);
                break;
        case SMTP_VERB_RSET:
                transaction_reset(s);
                reply(s, "250 2.0.0 Ok");
                break;
        case SMTP_VERB_NOOP:
                reply(s, "250 2.0.0 Ok");
                break;
        case SMTP_VERB_QUIT:
                reply(s, "221 2.0.0 Bye");
                s->phase = PHASE_CLOSING;
                break;
        case SMTP_VERB_HELP:
                reply(s, "214 2.0.0 See RFC 5321");
                break;
        case SMTP_VERB_VRFY:
                reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
                break;
        case SMTP_VERB_EXPN:
                reply_error(s, REJECT_SYNTAX, 502, "5.5.1", "Error: command not implemented");
                break;
        case SMTP_VERB_STARTTLS:
                if (!s->manager->tls || s->tls_active || s->listener->kind == LISTENER_SUBMISSIONS) {
                        reply_error(s, REJECT_SYNTAX, 502, "5.5.1", "Error: command not implemented");
                        break;
                }
                if (cmd.arg[0]) {
                        reply_error(s, REJECT_SYNTAX, 501, "5.5.4", "Syntax: STARTTLS");
                        break;
                }
                if (s->have_mail) {
                        reply_error(s, REJECT_BAD_SEQUENCE, 503, "5.5.1", "Error: MAIL transaction in progress");
                        break;
                }
                reply(s, "220 2.0.0 Ready to start TLS");
                /* CVE-2011-0411: whatever came after the STARTTLS line was
                 * sent in plaintext: drop it, and forget the EHLO. */
                s->in_n = 0;
                s->helo[0] = 0;
                s->ehlo = false;
                s->auth_user[0] = 0; /* RFC 4954 4: forget what was learnt in plaintext */
                s->phase = PHASE_STARTTLS;
                break;
        case SMTP_VERB_AUTH:
                cmd_auth(s, &cmd);
                break;
        default:
                reply_error(s, REJECT_SYNTAX, 500, "5.5.2", "Error: command not recognized");
                break;
        }
}

static void dispatch_line(Session *s, const char *line, size_t len, bool too_long) {
        if (s->phase == PHASE_AUTH)
                auth_line(s, line, len, too_long);
        else
                handle_line(s, line, len, too_long);
}

/* Handles whatever complete input there is. */
static void session_process(Session *s) {
        for (;;) {
                if (s->phase == PHASE_DATA || s->phase == PHASE_BDAT) {
                        if (s->in_n == 0)
                                break;
                        size_t used = 0;
                        int r = smtp_data_feed(&s->reader, s->in, s->in_n, &used);
                        if (r < 0) {
                                reply(s, "451 4.3.0 Local error, try again later");
                                s->phase = PHASE_CLOSING;
                                break;
                        }
                        if (r == 0)
                                used = s->in_n;
                        memmove(s->in, s->in + used, s->in_n - used);
                        s->in_n -= used;
                        if (r == 0)
                                break;
                        if (s->phase == PHASE_DATA) {
                                s->phase = PHASE_COMMAND;
                                message_end(s);
                        } else
                                bdat_chunk_done(s);
                        continue;
                }
                if (s->phase != PHASE_COMMAND && s->phase != PHASE_AUTH)
                        break;
                size_t line_max = s->phase == PHASE_AUTH ? AUTH_SASL_LINE_MAX : SMTP_COMMAND_LINE_MAX;
                if (s->phase == PHASE_COMMAND && daemon_is_draining(s->manager->daemon) && !s->have_mail && s->in_n == 0) {
                        reply(s, "421 4.3.2 %s Service shutting down", s->manager->settings.hostname);
                        s->phase = PHASE_CLOSING;
                        break;
                }
                char *lf = memchr(s->in, '\n', s->in_n);
                if (!lf) {
                        if (s->in_n > line_max + 1) {
                                /* No end in sight: refuse now, skip to the LF. */
                                if (!s->skip_line)
                                        dispatch_line(s, s->in, s->in_n, true);
                                s->skip_line = true;
                                s->in_n = 0;
                        }
                        break;
                }
                size_t n = (size_t) (lf - s->in) + 1, len = n - 1;
                if (len > 0 && s->in[len - 1] == '\r')
                        len--;
                if (s->skip_line)
                        s->skip_line = false;
                else
                        dispatch_line(s, s->in, len, len > line_max);
                if (s->phase == PHASE_STARTTLS)
                        break; /* the input was dropped */
                memmove(s->in, s->in + n, s->in_n - n);
                s->in_n -= n;
        }
        if (s->eof && s->phase != PHASE_QUEUE && s->phase != PHASE_AUTH_WAIT && s->phase != PHASE_POLICY) {
                (void) session_flush(s);
                session_end(s, "client disconnected");
                return;
        }
        session_after(s);
}

/* ---- I/O ------------------------------------------------------------- */

static void session_fail(Session *s, const char *why) {
        session_end(s, why);
}

/* A refusal at connect closes: 554 (RFC 5321 3.1) or 421. */
static void after_connect(Session *s, const PolicyResult *r) {
        s->greeted = true;
        PolicyReply pr;
        if (policy_result_reply(r, true, &pr)) {
                reply(s, "%u %s %s %s", pr.code, pr.enhanced, s->manager->settings.hostname, pr.text);
                reject_log(s, REJECT_POLICY, r->reason ?: "refused at connect");
                s->phase = PHASE_CLOSING;
                return;
        }
        reply(s, "220 %s ESMTP halyard", s->manager->settings.hostname);
}

static void session_greet(Session *s) {
        if (!policy_has(s, POLICY_PHASE_CONNECT)) {
                s->greeted = true;
                reply(s, "220 %s ESMTP halyard", s->manager->settings.hostname);
                return;
        }
        PolicyValue *args = policy_array_new();
        if (args && sockaddr_facts(args, &s->sa, "remoteip", "remoteport") < 0)
                args = policy_value_unref(args);
        session_policy(s, POLICY_PHASE_CONNECT, args, after_connect);
}

static int start_tls(Session *s) {
        int r = smtpd_tls_session_new(s->manager->tls, s->fd, &s->tls);
        if (r < 0)
                return r;
        s->phase = PHASE_TLS_HANDSHAKE;
        return 0;
}

static void do_handshake(Session *s) {
        int r = smtpd_tls_handshake(s->tls);
        if (r == -EAGAIN) {
                session_update_events(s);
                return;
        }
        if (r < 0) {
                char why[300];
                snprintf(why, sizeof why, "TLS handshake failed: %s", smtpd_tls_error(s->tls));
                reject_log(s, REJECT_TLS_FAILED, why);
                session_fail(s, why);
                return;
        }
        r = smtpd_tls_facts(s->tls, &s->facts);
        if (r < 0) {
                session_fail(s, "TLS facts unavailable");
                return;
        }
        s->tls_active = true;
        manager_count(s->manager, COUNT_TLS_SESSIONS);
        s->phase = PHASE_COMMAND;
        if (!s->greeted)
                session_greet(s);
        session_process(s);
}

/* Room for more input: the buffer doubles when full, up to SESSION_IN_MAX. */
static int in_reserve(Session *s) {
        if (s->in_n < s->in_cap)
                return 0;
        if (s->in_cap >= SESSION_IN_MAX)
                return -ENOBUFS;
        size_t cap = s->in_cap ? MIN(s->in_cap * 2, (size_t) SESSION_IN_MAX) : SESSION_IN_MIN;
        char *p = realloc(s->in, cap);
        if (!p)
                return -ENOMEM;
        s->in = p;
        s->in_cap = cap;
        return 0;
}

static int session_read(Session *s) {
        int r = in_reserve(s);
        if (r == -ENOBUFS)
                return 0;
        if (r < 0)
                return r;
        while (s->in_n < s->in_cap) {
                ssize_t k;
                if (s->tls_active) {
                        k = smtpd_tls_read(s->tls, s->in + s->in_n, s->in_cap - s->in_n);
                        if (k == -EAGAIN)
                                return 0;
                        if (k < 0 && k != -ECONNRESET)
                                return (int) k;
                        if (k <= 0) {
                                s->eof = true;
                                return 0;
                        }
                } else {
                        k = recv(s->fd, s->in + s->in_n, s->in_cap - s->in_n, MSG_DONTWAIT);
                        if (k < 0) {
                                if (errno == EAGAIN || errno == EINTR)
                                        return 0;
                                return -errno;
                        }
                        if (k == 0) {
                                s->eof = true;
                                return 0;
                        }
                }
                s->in_n += (size_t) k;
                /* In command mode, stop at a full buffer's worth; one read
                 * per wakeup keeps sessions fair. */
                break;
        }
        return 0;
}

static int on_io(sd_event_source *es, int fd, uint32_t revents, void *userdata);

static int on_defer(sd_event_source *es, void *userdata) {
        return on_io(NULL, -1, EPOLLIN, userdata);
}

static void session_update_events(Session *s) {
        uint32_t ev = 0;
        bool want_read = false;

        if (s->phase == PHASE_TLS_HANDSHAKE) {
                ev = smtpd_tls_wants(s->tls);
                (void) sd_event_source_set_io_events(s->io, ev ? ev : EPOLLIN);
                (void) sd_event_source_set_enabled(s->io, SD_EVENT_ON);
                return;
        }
        if (s->out_n > 0)
                ev |= EPOLLOUT;
        want_read = (s->phase == PHASE_COMMAND || s->phase == PHASE_DATA || s->phase == PHASE_BDAT ||
                     s->phase == PHASE_AUTH) &&
                    s->in_n < SESSION_IN_MAX && s->out_n < SESSION_OUT_MAX && !s->eof;
        if (want_read)
                ev |= EPOLLIN;
        (void) sd_event_source_set_io_events(s->io, ev);
        (void) sd_event_source_set_enabled(s->io, ev ? SD_EVENT_ON : SD_EVENT_OFF);
        if (want_read && s->tls_active && smtpd_tls_pending(s->tls) > 0) {
                if (!s->defer && sd_event_add_defer(s->manager->event, &s->defer, on_defer, s) < 0)
                        return;
                (void) sd_event_source_set_enabled(s->defer, SD_EVENT_ONESHOT);
        } else if (s->defer)
                (void) sd_event_source_set_enabled(s->defer, SD_EVENT_OFF);
}

/* The idle timeout from now, or the end of the session's time if sooner. */
static void session_timer_reset(Session *s) {
        const SmtpdSettings *c = &s->manager->settings;
        uint64_t at = MIN(manager_now_usec(s->manager) + c->timeout_usec, s->started_usec + c->session_timeout_usec);
        (void) sd_event_source_set_time(s->timer, at);
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
}

/* After processing: write, then act on the phase the replies led to. */
static void session_after(Session *s) {
        int r = session_flush(s);
        if (r < 0) {
                session_fail(s, "write failed");
                return;
        }
        if (s->out_n == 0 && s->phase == PHASE_CLOSING) {
                session_end(s, "closed");
                return;
        }
        if (s->out_n == 0 && s->phase == PHASE_STARTTLS) {
                r = start_tls(s);
                if (r < 0) {
                        session_fail(s, "TLS setup failed");
                        return;
                }
                do_handshake(s);
                return;
        }
        session_update_events(s);
}

static int on_io(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Session *s = userdata;

        session_timer_reset(s);
        if (s->phase == PHASE_TLS_HANDSHAKE) {
                do_handshake(s);
                return 0;
        }
        if (revents & EPOLLOUT) {
                int r = session_flush(s);
                if (r < 0) {
                        session_fail(s, "write failed");
                        return 0;
                }
        }
        if ((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
            (s->phase == PHASE_COMMAND || s->phase == PHASE_DATA || s->phase == PHASE_BDAT || s->phase == PHASE_AUTH)) {
                int r = session_read(s);
                if (r < 0) {
                        session_fail(s, "read failed");
                        return 0;
                }
                session_process(s);
                return 0; /* session_process() may have freed s */
        }
        session_after(s);
        return 0;
}

static int on_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        Session *s = userdata;
        Manager *m = s->manager;
        if (s->phase == PHASE_QUEUE || s->phase == PHASE_AUTH_WAIT || s->phase == PHASE_POLICY) {
                /* Not the client's doing; the queue's timeout, the delay or the
                 * policy's deadline ends the wait. */
                (void) sd_event_source_set_time(s->timer, usec + m->settings.timeout_usec);
                (void) sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
                return 0;
        }
        bool total = usec >= s->started_usec + m->settings.session_timeout_usec;
        reply(s, "421 4.4.2 %s Error: %s", m->settings.hostname, total ? "session time limit exceeded" : "timeout exceeded");
        reject_log(s, REJECT_TIMEOUT, total ? "session time limit" : "idle timeout");
        (void) session_flush(s);
        session_end(s, total ? "session time limit" : "timeout");
        return 0;
}

static unsigned count_address(Manager *m, const struct sockaddr_storage *sa) {
        unsigned n = 0;
        for (Session *s = m->sessions; s; s = s->next) {
                if (s->sa.ss_family != sa->ss_family)
                        continue;
                if (sa->ss_family == AF_INET &&
                    ((const struct sockaddr_in *) &s->sa)->sin_addr.s_addr == ((const struct sockaddr_in *) sa)->sin_addr.s_addr)
                        n++;
                else if (sa->ss_family == AF_INET6 &&
                         memcmp(&((const struct sockaddr_in6 *) &s->sa)->sin6_addr, &((const struct sockaddr_in6 *) sa)->sin6_addr, 16) == 0)
                        n++;
        }
        return n;
}

static void format_ip(const struct sockaddr_storage *sa, char *buf, size_t n) {
        if (sa->ss_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *) sa)->sin_addr, buf, n);
        else if (sa->ss_family == AF_INET6) {
                const struct in6_addr *a = &((const struct sockaddr_in6 *) sa)->sin6_addr;
                if (IN6_IS_ADDR_V4MAPPED(a))
                        inet_ntop(AF_INET, &a->s6_addr[12], buf, n);
                else
                        inet_ntop(AF_INET6, a, buf, n);
        } else
                snprintf(buf, n, "unknown");
}

/* ---- the listeners --------------------------------------------------- */

static void refuse(Manager *m, int fd, const struct sockaddr_storage *sa, const char *why) {
        char msg[300], ip[INET6_ADDRSTRLEN] = "", field[80];
        int n = snprintf(msg, sizeof msg, "421 4.7.0 %s %s\r\n", m->settings.hostname, why);
        (void) send(fd, msg, (size_t) MIN(n, (int) sizeof msg - 1), MSG_NOSIGNAL | MSG_DONTWAIT);
        safe_close(fd);
        manager_count(m, COUNT_REJECT_FIRST + REJECT_TOO_MANY_CONNECTIONS);
        format_ip(sa, ip, sizeof ip);
        snprintf(field, sizeof field, "HALYARD_CLIENT_IP=%s", ip);
        log_event(LOG_NOTICE, LOG_MESSAGE_REJECTED, (const char *const[]){ field, "HALYARD_REJECT_REASON=too-many-connections", NULL },
                  "Connection from %s refused: %s", ip, why);
}

#define LISTENER_PAUSE_USEC (100ULL * 1000ULL)

static int on_listener_resume(sd_event_source *es, uint64_t usec, void *userdata) {
        Listener *l = userdata;
        if (l->source)
                (void) sd_event_source_set_enabled(l->source, SD_EVENT_ON);
        return 0;
}

/* Out of file descriptors (or memory): the pending connection stays in the
 * kernel's backlog and the listening socket stays readable, so accepting
 * again at once would spin the loop and flood the journal. Stop listening
 * for a moment; the sessions we have go on, and closing ones free fds. */
static void listener_pause(Listener *l, int error) {
        Manager *m = l->manager;
        uint64_t when = manager_now_usec(m) + LISTENER_PAUSE_USEC;
        int r;

        if (sd_event_source_set_enabled(l->source, SD_EVENT_OFF) < 0)
                return;
        if (l->pause)
                r = sd_event_source_set_time(l->pause, when);
        else
                r = sd_event_add_time(m->event, &l->pause, CLOCK_MONOTONIC, when, 0, on_listener_resume, l);
        if (r >= 0)
                r = sd_event_source_set_enabled(l->pause, SD_EVENT_ONESHOT);
        if (r < 0)
                (void) sd_event_source_set_enabled(l->source, SD_EVENT_ON);
        log_warning_errno(error, "accept() on %s: %m; not accepting for %llu ms (%u sessions open)",
                          listener_kind_to_string(l->kind), LISTENER_PAUSE_USEC / 1000ULL, m->n_sessions);
}

static int on_accept(sd_event_source *es, int lfd, uint32_t revents, void *userdata) {
        Listener *l = userdata;
        Manager *m = l->manager;

        for (unsigned i = 0; i < 64; i++) {
                struct sockaddr_storage sa = {};
                socklen_t salen = sizeof sa;
                int fd = accept4(lfd, (struct sockaddr *) &sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                listener_pause(l, -errno);
                                return 0;
                        }
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(-errno, "accept() on %s failed: %m", listener_kind_to_string(l->kind));
                        return 0;
                }
                /* A v4-mapped client is matched like an IPv4 one. */
                if (sa.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *) &sa)->sin6_addr)) {
                        struct sockaddr_in6 a6 = *(struct sockaddr_in6 *) &sa;
                        struct sockaddr_in *a4 = (struct sockaddr_in *) &sa;
                        memset(&sa, 0, sizeof sa);
                        a4->sin_family = AF_INET;
                        a4->sin_port = a6.sin6_port;
                        memcpy(&a4->sin_addr, &a6.sin6_addr.s6_addr[12], 4);
                }
                if (m->n_sessions >= m->settings.max_connections) {
                        refuse(m, fd, &sa, "Too many connections, try again later");
                        continue;
                }
                if (count_address(m, &sa) >= m->settings.max_per_address) {
                        refuse(m, fd, &sa, "Too many connections from your address, try again later");
                        continue;
                }
                Session *s = calloc(1, sizeof *s);
                if (!s) {
                        safe_close(fd);
                        return 0;
                }
                s->manager = m;
                s->listener = l;
                s->policy = policy_generation_ref(m->policy);
                s->fd = fd;
                s->memfd = -1;
                s->sa = sa;
                format_ip(&sa, s->ip, sizeof s->ip);
                snprintf(s->id, sizeof s->id, "%012llX", (unsigned long long) ((m->id_base + ++m->session_seq) & 0xFFFFFFFFFFFFULL));
                s->next = m->sessions;
                if (m->sessions)
                        m->sessions->prev = s;
                m->sessions = s;
                m->n_sessions++;
                manager_count(m, COUNT_SESSIONS);
                s->started_usec = manager_now_usec(m);
                l->n_open++;
                l->n_total++;
                int r = sd_event_add_io(m->event, &s->io, fd, EPOLLIN, on_io, s);
                if (r >= 0)
                        r = sd_event_add_time(m->event, &s->timer, CLOCK_MONOTONIC, UINT64_MAX, 0, on_timer, s);
                if (r < 0) {
                        session_free(s);
                        continue;
                }
                session_timer_reset(s);
                if (l->kind == LISTENER_SUBMISSIONS) {
                        if (!m->tls || start_tls(s) < 0) {
                                session_end(s, "no TLS for implicit TLS");
                                continue;
                        }
                        do_handshake(s);
                        continue;
                }
                s->phase = PHASE_COMMAND;
                session_greet(s);
                session_after(s);
        }
        return 0;
}

int listener_start(Manager *m, ListenerKind kind, int fd) {
        Listener *l = &m->listeners[kind];
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
                safe_close(fd);
                return -errno;
        }
        l->manager = m;
        l->kind = kind;
        l->fd = fd;
        int r = sd_event_add_io(m->event, &l->source, fd, EPOLLIN, on_accept, l);
        if (r < 0) {
                l->fd = safe_close(fd);
                return r;
        }
        return 0;
}

void listener_stop(Listener *l) {
        l->pause = sd_event_source_disable_unref(l->pause);
        l->source = sd_event_source_disable_unref(l->source);
        l->fd = safe_close(l->fd);
}

void sessions_drain(Manager *m) {
        for (unsigned k = 0; k < _LISTENER_MAX; k++)
                listener_stop(&m->listeners[k]);
        Session *next;
        for (Session *s = m->sessions; s; s = next) {
                next = s->next;
                if (s->phase == PHASE_COMMAND && !s->have_mail) {
                        reply(s, "421 4.3.2 %s Service shutting down", m->settings.hostname);
                        s->phase = PHASE_CLOSING;
                        session_after(s);
                }
        }
        if (m->n_sessions == 0)
                (void) daemon_exit(m->daemon, 0);
}

void sessions_free_all(Manager *m) {
        while (m->sessions)
                session_free(m->sessions);
        while (m->detached)
                detached_run_free(m->detached);
}
