/* SPDX-License-Identifier: MIT */
/* Delivery: the scheduler picks due messages, groups their pending
 * recipients by domain, finds the next hops (a configured route, the
 * relayhost, or MX), talks SMTP/LMTP to them, records per-recipient results,
 * and settles each message: delivered, deferred with backoff, or failed with
 * a DSN to the sender. Everything runs on the event loop. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "queued-bounce.h"
#include "queued-mx.h"
#include "queued-smtp.h"
#include "queued.h"

#define SCHEDULE_INTERVAL_USEC (1ULL * 1000000ULL)

typedef struct Target {
        char *host;
        struct sockaddr_storage sa;
        socklen_t salen;
        ssize_t policy; /* index into Delivery.hosts, -1: none (a literal route) */
} Target;

/* DANE state of one MX host (RFC 7672 §2.2). */
typedef enum HostDane {
        HOST_DANE_NONE,     /* not looked up, insecure, or securely no TLSA */
        HOST_DANE_USABLE,   /* secure TLSA with usable records: authenticate */
        HOST_DANE_UNUSABLE, /* secure TLSA, none usable: TLS mandatory, unauthenticated */
        HOST_DANE_FAILED,   /* bogus or failed lookup: this host is not used */
} HostDane;

typedef struct HostPolicy {
        char *name;
        char *canonical;  /* where the host's secure CNAMEs led, NULL if none */
        const char *base; /* the TLSA base domain: canonical first, then name (RFC 7672 2.2.2) */
        struct Delivery *d;
        DnsQuery *query;
        HostDane dane;
        DaneTlsa tlsa;
        char why[300];
} HostPolicy;

/* How one session is secured, and what its TLS result says. */
typedef enum SessionMode {
        MODE_NONE,        /* plaintext */
        MODE_MAY,         /* opportunistic */
        MODE_ENCRYPT,     /* TLS mandatory, no authentication */
        MODE_VERIFY,      /* TLS mandatory, WebPKI */
        MODE_DANE,        /* TLS mandatory, DANE */
        MODE_DANE_ENCRYPT,/* TLS mandatory because of unusable TLSA */
        MODE_STS_ENFORCE, /* TLS mandatory, WebPKI (MTA-STS enforce) */
        MODE_STS_TESTING, /* opportunistic, checked and reported (MTA-STS testing) */
        _MODE_MAX,
} SessionMode;

static const char *const mode_names[_MODE_MAX] = {
        [MODE_NONE] = "none", [MODE_MAY] = "may", [MODE_ENCRYPT] = "encrypt", [MODE_VERIFY] = "verify",
        [MODE_DANE] = "dane", [MODE_DANE_ENCRYPT] = "dane-encrypt", [MODE_STS_ENFORCE] = "sts-enforce",
        [MODE_STS_TESTING] = "sts-testing",
};

typedef struct Session {
        SessionMode mode;
        bool reused, reported;
        TlsPolicyType type;
        const char *policy_domain;
        const char *const *strings;
        const char *const *mx;
        TlsResultType verify;          /* set by the verify hook */
        char verify_reason[300];
        TlsResultType forced;          /* a policy-level failure that this session carries */
        char forced_reason[300];
} Session;

/* One attempt to deliver one message's pending recipients in one domain. */
typedef struct Delivery {
        Manager *m;
        Message *msg;
        char *domain;
        size_t *idx; /* indexes into the envelope's recipients */
        const char **rcpts;
        size_t n;
        bool lmtp;
        uint16_t port;
        const char *route;  /* the recipients' own route (Enqueue's route), borrowed from the envelope; NULL: the domain's */
        const char *source; /* the recipients' own source address (sourceAddress), borrowed; NULL: the configured choice */
        const char *sender; /* MAIL FROM: the recipients' own sender, else the message's; borrowed */
        const char *helo;   /* the recipients' own EHLO name, borrowed; NULL: HostName= */
        MxLookup *mx;
        Target *targets;
        size_t n_targets, cur;
        SmtpClient *client;
        int content_fd;
        char last_error[512];
        bool last_error_permanent;
        char enhanced[SMTP_ENHANCED_MAX];
        /* secure delivery */
        TlsLevel level;
        SmtpTlsPolicy fallback;      /* when neither DANE nor MTA-STS applies */
        HostPolicy *hosts;
        size_t n_hosts;
        unsigned lookups;            /* TLSA and MTA-STS lookups outstanding */
        MtaStsLookup *sts_lookup;
        MtaStsPolicy sts;            /* mode NONE: no policy */
        bool have_sts;
        TlsResultType sts_failure;
        char sts_reason[300];
        Session sess;
        struct Delivery *next; /* in m->deliveries */
} Delivery;

/* A connection kept after its transaction, for the next one to the same
 * next hop (RFC 5321 allows many transactions per session). */
typedef struct IdleConn {
        Manager *m;
        SmtpClient *client;
        char *host;
        struct sockaddr_storage sa;
        socklen_t salen;
        bool lmtp;
        SessionMode mode; /* a kept session is only reused under the same TLS mode */
        sd_event_source *timer;
        struct IdleConn *next;
} IdleConn;

#define IDLE_CONN_USEC (5ULL * 1000000ULL)
#define IDLE_CONN_MAX 100U

static void idle_conn_free(IdleConn *ic) {
        if (!ic)
                return;
        Manager *m = ic->m;
        for (IdleConn **p = (IdleConn **) &m->idle; *p; p = &(*p)->next)
                if (*p == ic) {
                        *p = ic->next;
                        m->n_idle--;
                        break;
                }
        sd_event_source_disable_unref(ic->timer);
        smtp_client_free(ic->client);
        free(ic->host);
        free(ic);
}

static void idle_event(SmtpClient *c, SmtpClientEvent ev, void *userdata) {
        /* Only CLOSED can happen to an idle session: the peer hung up. */
        idle_conn_free(userdata);
}

static int idle_expired(sd_event_source *s, uint64_t usec, void *userdata) {
        IdleConn *ic = userdata;
        /* QUIT, then the CLOSED event frees it. */
        if (smtp_client_quit(ic->client) < 0)
                idle_conn_free(ic);
        return 0;
}

static void idle_park(Manager *m, SmtpClient *c, const char *host, const struct sockaddr_storage *sa, socklen_t salen,
                      bool lmtp, SessionMode mode) {
        IdleConn *ic = m->n_idle < IDLE_CONN_MAX ? calloc(1, sizeof *ic) : NULL;
        if (!ic || !(ic->host = strdup(host)) ||
            sd_event_add_time_relative(m->event, &ic->timer, CLOCK_MONOTONIC, IDLE_CONN_USEC, 0, idle_expired, ic) < 0) {
                if (ic)
                        free(ic->host);
                free(ic);
                (void) smtp_client_quit(c);
                smtp_client_free(c);
                return;
        }
        ic->m = m;
        ic->client = c;
        ic->sa = *sa;
        ic->salen = salen;
        ic->lmtp = lmtp;
        ic->mode = mode;
        ic->next = m->idle;
        m->idle = ic;
        m->n_idle++;
        smtp_client_set_event_handler(c, idle_event, ic);
}

/* Takes an idle session to this next hop, or NULL. */
static SmtpClient *idle_take(Manager *m, const char *host, const struct sockaddr_storage *sa, socklen_t salen, bool lmtp,
                             SessionMode mode) {
        for (IdleConn *ic = m->idle; ic; ic = ic->next) {
                if (ic->lmtp != lmtp || ic->mode != mode || ic->salen != salen || memcmp(&ic->sa, sa, salen) != 0 || strcmp(ic->host, host) != 0 ||
                    !smtp_client_usable(ic->client))
                        continue;
                SmtpClient *c = TAKE_PTR(ic->client);
                idle_conn_free(ic);
                return c;
        }
        return NULL;
}

static const char *address_domain(const char *a) {
        const char *at = strrchr(a, '@');
        return at ? at + 1 : "";
}

static json_object *envelope_recipients(Message *msg) {
        return json_object_object_get(msg->envelope, "recipients");
}

/* The envelope sender for recipient rc: its own (the policy's Queue()
 * choice), else the message's. */
static const char *recipient_sender(Message *msg, json_object *rc) {
        json_object *own = json_object_object_get(rc, "sender");
        return json_object_get_string(own ?: json_object_object_get(msg->envelope, "sender"));
}

/* ---- destinations: concurrency per domain ----------------------------------------- */

static unsigned *dest_slot(Manager *m, const char *domain, bool create) {
        for (size_t i = 0; i < m->n_dest; i++)
                if (strcasecmp(m->dest_names[i], domain) == 0)
                        return &m->dest_active[i];
        if (!create)
                return NULL;
        char **n = realloc(m->dest_names, (m->n_dest + 1) * sizeof *n);
        if (!n)
                return NULL;
        m->dest_names = n;
        unsigned *a = realloc(m->dest_active, (m->n_dest + 1) * sizeof *a);
        if (!a)
                return NULL;
        m->dest_active = a;
        m->dest_names[m->n_dest] = strdup(domain);
        if (!m->dest_names[m->n_dest])
                return NULL;
        m->dest_active[m->n_dest] = 0;
        return &m->dest_active[m->n_dest++];
}

/* One delivery to domain ended; a destination with none left is forgotten,
 * so the table holds only the busy ones. */
static void dest_release(Manager *m, const char *domain) {
        unsigned *active = dest_slot(m, domain, false);
        if (!active)
                return;
        if (*active > 0)
                (*active)--;
        if (*active == 0) {
                size_t i = (size_t) (active - m->dest_active);
                free(m->dest_names[i]);
                m->dest_names[i] = m->dest_names[--m->n_dest];
                m->dest_active[i] = m->dest_active[m->n_dest];
        }
}

/* ---- routes from the configuration ------------------------------------------------- */

/* "[192.0.2.1]:25", "[2001:db8::1]:2525", "mail.example:587" (MX lookup on the name). */
static int parse_nexthop(const char *s, char **ret_host, uint16_t *ret_port, bool *ret_literal) {
        const char *colon;
        _cleanup_free_ char *host = NULL;
        bool literal = false;

        if (s[0] == '[') {
                const char *end = strchr(s, ']');
                if (!end)
                        return -EINVAL;
                host = strndup(s + 1, (size_t) (end - s - 1));
                colon = end[1] == ':' ? end + 1 : NULL;
                if (end[1] && !colon)
                        return -EINVAL;
                literal = true;
        } else {
                colon = strrchr(s, ':');
                host = colon ? strndup(s, (size_t) (colon - s)) : strdup(s);
        }
        if (!host || !*host)
                return -EINVAL;
        unsigned long port = 25;
        if (colon) {
                char *e;
                port = strtoul(colon + 1, &e, 10);
                if (*e || port == 0 || port > 65535)
                        return -EINVAL;
        }
        if (literal) {
                struct in6_addr a6;
                struct in_addr a4;
                if (inet_pton(AF_INET, host, &a4) != 1 && inet_pton(AF_INET6, host, &a6) != 1)
                        return -EINVAL;
        }
        *ret_host = TAKE_PTR(host);
        *ret_port = (uint16_t) port;
        *ret_literal = literal;
        return 0;
}

/* The Routes= entry named key ("key=smtp:NEXTHOP", "key=lmtp:NEXTHOP"), or
 * NULL. Borrowed string. */
static const char *route_lookup(Manager *m, const char *domain, bool *ret_lmtp) {
        *ret_lmtp = false;
        for (char **r = m->routes; r && *r; r++) {
                const char *eq = strchr(*r, '=');
                if (!eq || (size_t) (eq - *r) != strlen(domain) || strncasecmp(*r, domain, strlen(domain)) != 0)
                        continue;
                const char *v = eq + 1;
                if (strncmp(v, "lmtp:", 5) == 0) {
                        *ret_lmtp = true;
                        return v + 5;
                }
                return strncmp(v, "smtp:", 5) == 0 ? v + 5 : v;
        }
        return NULL;
}

/* The route for a domain: its entry in [Queue] Routes=, else Relayhost=,
 * else NULL (MX). Borrowed string. */
static const char *route_for(Manager *m, const char *domain, bool *ret_lmtp) {
        return route_lookup(m, domain, ret_lmtp) ?: m->relayhost;
}

/* A recipient's own route (Enqueue's route): a Routes= entry by its name,
 * else a next hop as Routes= takes one. Borrowed string. */
static const char *route_choice(Manager *m, const char *choice, bool *ret_lmtp) {
        const char *r = route_lookup(m, choice, ret_lmtp);
        if (r)
                return r;
        if (strncmp(choice, "lmtp:", 5) == 0) {
                *ret_lmtp = true;
                return choice + 5;
        }
        return strncmp(choice, "smtp:", 5) == 0 ? choice + 5 : choice;
}

int deliver_check_choice(Manager *m, const char *route, const char *source) {
        if (route) {
                /* A Routes= name, one of the Routes= targets as written, or
                 * an address literal ("[192.0.2.1]:25"): a policy cannot send
                 * mail to a name of its choosing. */
                _cleanup_free_ char *host = NULL;
                uint16_t port;
                bool lit = false, lmtp, known = route_lookup(m, route, &lmtp) != NULL;
                for (char **r = m->routes; !known && r && *r; r++) {
                        const char *eq = strchr(*r, '=');
                        known = eq && strcmp(eq + 1, route) == 0;
                }
                if (!known && (!*route || parse_nexthop(route_choice(m, route, &lmtp), &host, &port, &lit) < 0 || !lit))
                        return -EINVAL;
        }
        if (source) {
                uint8_t a[16] = {};
                int family = inet_pton(AF_INET, source, a) == 1 ? AF_INET : inet_pton(AF_INET6, source, a) == 1 ? AF_INET6 : 0;
                bool found = false;
                for (size_t i = 0; family && !found && i < m->n_source_pool; i++)
                        found = m->source_pool[i].family == family &&
                                memcmp(m->source_pool[i].addr, a, family == AF_INET ? 4 : 16) == 0;
                if (!found)
                        return -EADDRNOTAVAIL;
        }
        return 0;
}

int deliver_check_routes(char **routes, const char *relayhost, char *err, size_t errlen) {
        for (char **r = routes; r && *r; r++) {
                const char *eq = strchr(*r, '=');
                _cleanup_free_ char *host = NULL;
                uint16_t port;
                bool lit;
                const char *v = eq ? eq + 1 : NULL;
                if (v && (strncmp(v, "lmtp:", 5) == 0 || strncmp(v, "smtp:", 5) == 0))
                        v += 5;
                if (!eq || eq == *r || !v || parse_nexthop(v, &host, &port, &lit) < 0) {
                        snprintf(err, errlen, "invalid route \"%s\" (expected domain=smtp:[ip]:port or domain=lmtp:host:port)", *r);
                        return -EINVAL;
                }
        }
        if (relayhost) {
                _cleanup_free_ char *host = NULL;
                uint16_t port;
                bool lit;
                if (parse_nexthop(relayhost, &host, &port, &lit) < 0) {
                        snprintf(err, errlen, "invalid Relayhost=%s (expected [ip]:port or host:port)", relayhost);
                        return -EINVAL;
                }
        }
        return 0;
}

/* ---- settling a message ------------------------------------------------------------ */

static void log_recipient(Manager *m, Message *msg, const char *rcpt, const char *message_id, int priority,
                          const char *relay, const char *status, const char *text, const char *tls) {
        char f_id[64], f_rcpt[300], f_relay[300], f_status[32], f_delay[48], f_tls[160];
        uint64_t delay = (uint64_t) time(NULL) - msg->arrival;

        snprintf(f_id, sizeof f_id, "HALYARD_QUEUE_ID=%s", msg->id);
        snprintf(f_rcpt, sizeof f_rcpt, "HALYARD_RCPT=%s", rcpt);
        snprintf(f_relay, sizeof f_relay, "HALYARD_RELAY=%s", relay ? relay : "none");
        snprintf(f_status, sizeof f_status, "HALYARD_DSN_STATUS=%s", status ? status : "");
        snprintf(f_delay, sizeof f_delay, "HALYARD_DELAY=%llu", (unsigned long long) delay);
        snprintf(f_tls, sizeof f_tls, "HALYARD_TLS=%s", tls ? tls : "none");
        char esc[600];
        log_escape(text ? text : "", text ? strlen(text) : 0, esc, sizeof esc);
        log_event(priority, message_id, (const char *[]){ f_id, f_rcpt, f_relay, f_status, f_delay, f_tls, NULL },
                  "%s: to=<%s>, relay=%s, delay=%llus, tls=%s, dsn=%s, %s", msg->id, rcpt, relay ? relay : "none",
                  (unsigned long long) delay, tls ? tls : "none", status ? status : "", esc);
}

static void set_recipient(json_object *rc, const char *state, const char *error) {
        json_object_object_add(rc, "state", json_object_new_string(state));
        json_object_object_add(rc, "attempts",
                               json_object_new_int(json_object_get_int(json_object_object_get(rc, "attempts")) + 1));
        if (error)
                json_object_object_add(rc, "lastError", json_object_new_string(error));
}

static unsigned notify_flags(json_object *rc) {
        json_object *n = json_object_object_get(rc, "notify");
        unsigned f = 0;
        if (!json_object_is_type(n, json_type_array))
                return 0;
        for (size_t i = 0; i < json_object_array_length(n); i++) {
                const char *s = json_object_get_string(json_object_array_get_idx(n, i));
                if (strcasecmp(s, "NEVER") == 0)
                        f |= BOUNCE_NOTIFY_NEVER;
                else if (strcasecmp(s, "SUCCESS") == 0)
                        f |= BOUNCE_NOTIFY_SUCCESS;
                else if (strcasecmp(s, "FAILURE") == 0)
                        f |= BOUNCE_NOTIFY_FAILURE;
                else if (strcasecmp(s, "DELAY") == 0)
                        f |= BOUNCE_NOTIFY_DELAY;
        }
        return f;
}

typedef struct DsnJob {
        Manager *m;
        json_object *envelope;
} DsnJob;

static void dsn_committed(Spool *s, const char *id, int error, void *userdata) {
        DsnJob *job = userdata;
        Manager *m = job->m;
        Message *msg;

        if (error < 0)
                log_error_errno(error, "Failed to store a delivery status notification: %m");
        else if (queue_add(m, id, job->envelope, (uint64_t) json_object_get_int64(json_object_object_get(job->envelope, "size")), &msg) >= 0) {
                queue_event(m, EVENT_ACCEPTED, msg, NULL, "delivery status notification");
                deliver_kick(m);
        }
        json_object_put(job->envelope);
        free(job);
}

/* Whether recipient rc belongs in a DSN of this action: failed and not
 * reported yet (each failure is reported once, as soon as it is known), or
 * still pending for a delay warning. */
static bool dsn_wants(json_object *rc, BounceAction action) {
        const char *state = json_object_get_string(json_object_object_get(rc, "state"));
        if (action == BOUNCE_ACTION_FAILED)
                return streq_ptr(state, "failed") && !json_object_get_boolean(json_object_object_get(rc, "reported"));
        return streq_ptr(state, "pending");
}

/* Writes a DSN about the recipients of msg whose envelope sender is sender
 * and queues it to that sender. Nothing for the null sender or NOTIFY=NEVER. */
static void send_dsn_to(Manager *m, Message *msg, BounceAction action, const char *sender) {
        json_object *rcpts = envelope_recipients(msg);
        size_t n = json_object_array_length(rcpts), k = 0;
        _cleanup_free_ BounceRecipient *br = calloc(n ? n : 1, sizeof *br);
        _cleanup_free_ char (*types)[32] = calloc(n ? n : 1, sizeof *types);
        if (!br || !types)
                return;
        for (size_t i = 0; i < n; i++) {
                json_object *rc = json_object_array_get_idx(rcpts, i);
                if (!dsn_wants(rc, action) || !streq_ptr(recipient_sender(msg, rc), sender))
                        continue;
                if (action == BOUNCE_ACTION_FAILED)
                        json_object_object_add(rc, "reported", json_object_new_boolean(true));
                const char *orcpt = json_object_get_string(json_object_object_get(rc, "orcpt"));
                const char *semi = orcpt ? strchr(orcpt, ';') : NULL;
                br[k] = (BounceRecipient){
                        .final_recipient = json_object_get_string(json_object_object_get(rc, "address")),
                        .action = action,
                        .status = json_object_get_string(json_object_object_get(rc, "status")),
                        .diagnostic = json_object_get_string(json_object_object_get(rc, "lastError")),
                        .remote_mta = json_object_get_string(json_object_object_get(rc, "remoteMta")),
                        .last_attempt = (time_t) json_object_get_int64(json_object_object_get(rc, "lastAttempt")),
                        .will_retry_until = action == BOUNCE_ACTION_DELAYED ? (time_t) (msg->arrival + m->max_lifetime_sec) : 0,
                        .notify = notify_flags(rc),
                };
                if (semi) {
                        /* Keep the ORCPT type and address as the client sent them. */
                        snprintf(types[k], sizeof types[k], "%.*s", (int) MIN((size_t) (semi - orcpt), sizeof types[k] - 1), orcpt);
                        br[k].orcpt_type = types[k];
                        br[k].orcpt = semi + 1;
                }
                k++;
        }
        const char *ret = json_object_get_string(json_object_object_get(msg->envelope, "ret"));
        BounceEnvelope be = {
                .sender = sender,
                .envid = json_object_get_string(json_object_object_get(msg->envelope, "envid")),
                .ret = streq_ptr(ret, "headers") ? BOUNCE_RET_HDRS : streq_ptr(ret, "full") ? BOUNCE_RET_FULL : BOUNCE_RET_DEFAULT,
                .smtputf8 = json_object_get_boolean(json_object_object_get(msg->envelope, "smtputf8")),
                .arrival_date = (time_t) msg->arrival,
                .reporting_mta = m->hostname,
                .queue_id = msg->id,
        };
        if (k == 0 || bounce_needed(&be, br, k) == 0)
                return;

        _cleanup_close_ int out = memfd_create("dsn", MFD_CLOEXEC);
        _cleanup_close_ int orig = spool_open_content(m->spool, msg->id);
        BounceOptions o;
        BounceResult res;
        bounce_options_init(&o);
        if (out < 0 || bounce_write(&be, br, k, orig, &o, out, &res) < 0) {
                log_error("%s: failed to write a delivery status notification", msg->id);
                return;
        }
        json_object *env = json_object_new_object(), *list = json_object_new_array(), *rc = json_object_new_object();
        json_object_object_add(env, "sender", json_object_new_string(""));
        json_object_object_add(rc, "address", json_object_new_string(sender));
        json_object_object_add(rc, "state", json_object_new_string("pending"));
        json_object_object_add(rc, "attempts", json_object_new_int(0));
        json_object_array_add(list, rc);
        json_object_object_add(env, "recipients", list);
        if (res.smtputf8)
                json_object_object_add(env, "smtputf8", json_object_new_boolean(true));
        if (res.eightbit)
                json_object_object_add(env, "body", json_object_new_string("eightBitMime"));
        json_object_object_add(env, "arrival", json_object_new_int64((int64_t) time(NULL)));
        json_object_object_add(env, "state", json_object_new_string("active"));
        json_object_object_add(env, "nextAttempt", json_object_new_int64(0));
        json_object_object_add(env, "size", json_object_new_int64((int64_t) res.size));
        json_object_object_add(env, "dsnFor", json_object_new_string(msg->id));
        char id[SPOOL_ID_MAX];
        DsnJob *job = calloc(1, sizeof *job);
        if (!job) {
                json_object_put(env);
                return;
        }
        job->m = m;
        job->envelope = env;
        int r = spool_enqueue(m->spool, TAKE_FD(out), env, 0, dsn_committed, job, id);
        if (r < 0) {
                json_object_put(env);
                free(job);
        }
        if (r < 0)
                log_error_errno(r, "%s: failed to queue a delivery status notification: %m", msg->id);
        else
                log_info("%s: %s notification %s to <%s>", msg->id, action == BOUNCE_ACTION_FAILED ? "non-delivery" : "delay",
                         id, sender);
}

/* One DSN per envelope sender among the recipients concerned: recipients
 * the policy gave their own sender report to it, the rest to the message's. */
static void send_dsn(Manager *m, Message *msg, BounceAction action) {
        json_object *rcpts = envelope_recipients(msg);
        size_t n = json_object_array_length(rcpts);
        for (size_t i = 0; i < n; i++) {
                json_object *rc = json_object_array_get_idx(rcpts, i);
                if (!dsn_wants(rc, action))
                        continue;
                const char *sender = recipient_sender(msg, rc);
                bool seen = false;
                for (size_t j = 0; j < i && !seen; j++) {
                        json_object *o = json_object_array_get_idx(rcpts, j);
                        seen = dsn_wants(o, action) && streq_ptr(recipient_sender(msg, o), sender);
                }
                if (!seen)
                        send_dsn_to(m, msg, action, sender);
        }
}

static uint64_t retry_delay(Manager *m, unsigned attempts) {
        if (m->n_retry == 0)
                return 300;
        return m->retry_sec[MIN(attempts ? attempts - 1 : 0, m->n_retry - 1)];
}

/* Called when no delivery for msg is running any more. */
static void message_settle(Manager *m, Message *msg) {
        json_object *rcpts = envelope_recipients(msg);
        size_t pending = 0, failed = 0, n = json_object_array_length(rcpts);
        uint64_t now = (uint64_t) time(NULL);

        for (size_t i = 0; i < n; i++) {
                const char *st = json_object_get_string(json_object_object_get(json_object_array_get_idx(rcpts, i), "state"));
                pending += streq_ptr(st, "pending");
                failed += streq_ptr(st, "failed");
        }
        if (pending > 0 && now >= msg->arrival + m->max_lifetime_sec) {
                /* Give up: what is still pending fails as expired. */
                for (size_t i = 0; i < n; i++) {
                        json_object *rc = json_object_array_get_idx(rcpts, i);
                        if (!streq_ptr(json_object_get_string(json_object_object_get(rc, "state")), "pending"))
                                continue;
                        const char *last = json_object_get_string(json_object_object_get(rc, "lastError"));
                        char why[700];
                        snprintf(why, sizeof why, "message expired after %llus in the queue%s%s",
                                 (unsigned long long) (now - msg->arrival), last ? "; last error: " : "", last ? last : "");
                        json_object_object_add(rc, "state", json_object_new_string("failed"));
                        json_object_object_add(rc, "status", json_object_new_string("4.4.7"));
                        json_object_object_add(rc, "lastError", json_object_new_string(why));
                        const char *addr = json_object_get_string(json_object_object_get(rc, "address"));
                        log_recipient(m, msg, addr, LOG_MESSAGE_BOUNCED, LOG_NOTICE, NULL, "4.4.7", why, NULL);
                        queue_event(m, EVENT_EXPIRED, msg, addr, why);
                        failed++;
                }
                pending = 0;
        }
        if (failed > 0)
                send_dsn(m, msg, BOUNCE_ACTION_FAILED);
        if (pending == 0) {
                (void) spool_remove_async(m->spool, msg->id);
                queue_remove(m, msg);
                return;
        }
        if (msg->waiting) {
                /* Part of it never went out because its destination was at
                 * its connection limit: that costs no attempt and no backoff. */
                msg->waiting = false;
                msg->next_attempt = 0;
                if (msg->state == MESSAGE_DEFERRED)
                        queue_set_state(m, msg, MESSAGE_ACTIVE);
                return;
        }
        unsigned attempts = (unsigned) json_object_get_int(json_object_object_get(msg->envelope, "attempts")) + 1;
        json_object_object_add(msg->envelope, "attempts", json_object_new_int((int) attempts));
        msg->next_attempt = now + retry_delay(m, attempts);
        json_object_object_add(msg->envelope, "nextAttempt", json_object_new_int64((int64_t) msg->next_attempt));
        if (msg->state != MESSAGE_HELD)
                queue_set_state(m, msg, MESSAGE_DEFERRED);
        if (m->delay_warning_sec > 0 && now >= msg->arrival + m->delay_warning_sec &&
            !json_object_get_boolean(json_object_object_get(msg->envelope, "delayWarned"))) {
                json_object_object_add(msg->envelope, "delayWarned", json_object_new_boolean(true));
                send_dsn(m, msg, BOUNCE_ACTION_DELAYED);
        }
        (void) spool_update_envelope(m->spool, msg->id, msg->envelope);
}

/* ---- one delivery ------------------------------------------------------------------- */

static void delivery_free(Delivery *d) {
        if (!d)
                return;
        mx_lookup_cancel(d->mx);
        mtasts_lookup_cancel(d->sts_lookup);
        for (size_t i = 0; i < d->n_hosts; i++) {
                dns_query_cancel(d->hosts[i].query);
                dane_tlsa_done(&d->hosts[i].tlsa);
                free(d->hosts[i].name);
                free(d->hosts[i].canonical);
        }
        free(d->hosts);
        mtasts_policy_done(&d->sts);
        smtp_client_free(d->client);
        for (size_t i = 0; i < d->n_targets; i++)
                free(d->targets[i].host);
        free(d->targets);
        free(d->idx);
        free(d->rcpts);
        free(d->domain);
        safe_close(d->content_fd);
        free(d);
}

static void delivery_done(Delivery *d) {
        Manager *m = d->m;
        Message *msg = d->msg;
        dest_release(m, d->domain);
        m->n_deliveries--;
        for (Delivery **p = &m->deliveries; *p; p = &(*p)->next)
                if (*p == d) {
                        *p = d->next;
                        break;
                }
        delivery_free(d);
        if (--msg->in_flight == 0)
                message_settle(m, msg);
        deliver_kick(m);
}

/* Every recipient of the delivery gets the same outcome (no peer reached). */
static void delivery_fail_all(Delivery *d, bool permanent, const char *status, const char *why) {
        json_object *rcpts = envelope_recipients(d->msg);
        for (size_t i = 0; i < d->n; i++) {
                json_object *rc = json_object_array_get_idx(rcpts, d->idx[i]);
                set_recipient(rc, permanent ? "failed" : "pending", why);
                json_object_object_add(rc, "status", json_object_new_string(status));
                json_object_object_add(rc, "lastAttempt", json_object_new_int64((int64_t) time(NULL)));
                log_recipient(d->m, d->msg, d->rcpts[i], permanent ? LOG_MESSAGE_BOUNCED : LOG_MESSAGE_DEFERRED,
                              permanent ? LOG_NOTICE : LOG_INFO, NULL, status, why, NULL);
                queue_event(d->m, permanent ? EVENT_BOUNCED : EVENT_DEFERRED, d->msg, d->rcpts[i], why);
        }
        delivery_done(d);
}

static void delivery_try_next(Delivery *d);

static void format_result_text(const SmtpResult *r, char *buf, size_t n) {
        if (r->code > 0)
                snprintf(buf, n, "%d %s%s%s", r->code, r->enhanced, r->enhanced[0] ? " " : "", r->text ? r->text : "");
        else
                snprintf(buf, n, "%s", r->text ? r->text : "failed");
        for (char *p = buf; *p; p++)
                if (*p == '\n' || *p == '\r')
                        *p = ' ';
}

/* Whether any recipient's result came from the MAIL stage or later: the
 * peer was reached and took part in the transaction. */
static bool session_reached_mail(SmtpClient *c, size_t n) {
        for (size_t i = 0; i < n && i < smtp_client_n_rcpts(c); i++) {
                const SmtpResult *r = smtp_client_rcpt_result(c, i);
                if (r->status != SMTP_STATUS_TEMPFAIL)
                        return true;
                switch (r->stage) {
                case SMTP_STAGE_CONNECT:
                case SMTP_STAGE_GREETING:
                case SMTP_STAGE_EHLO:
                case SMTP_STAGE_STARTTLS:
                        break;
                default:
                        return true;
                }
        }
        return false;
}

/* ---- secure delivery: policy per session, verify hooks, TLS results -------------- */

TlsLevel deliver_tls_level(Manager *m, const char *domain, SmtpTlsPolicy *ret_fallback) {
        TlsLevel l = tls_policy_lookup(m->tls_policy_entries, domain, _TLS_LEVEL_INVALID);
        SmtpTlsPolicy fallback = l == TLS_LEVEL_NONE ? SMTP_TLS_NO : SMTP_TLS_MAY;

        if (l < 0) {
                /* No entry: TLS= decides. no: none at all; may: published
                 * policies (DANE, MTA-STS), else opportunistic; require:
                 * published policies, else encrypted. */
                l = m->tls_policy == SMTP_TLS_NO ? TLS_LEVEL_NONE : TLS_LEVEL_DANE;
                fallback = m->tls_policy;
        }
        if (ret_fallback)
                *ret_fallback = fallback;
        return l;
}

/* WebPKI trust for MX certificates (MTA-STS, TLSPolicy=verify): TLSCAFile=
 * or the system store, loaded at the first use (a local file read; not at
 * start, where it would slow every restart for a rarely used feature). */
static gnutls_certificate_credentials_t webpki_creds(Manager *m) {
        if (m->webpki_creds)
                return m->webpki_creds;
        if (gnutls_certificate_allocate_credentials(&m->webpki_creds) < 0) {
                m->webpki_creds = NULL;
                return NULL;
        }
        int r = m->tls_ca_file ? gnutls_certificate_set_x509_trust_file(m->webpki_creds, m->tls_ca_file, GNUTLS_X509_FMT_PEM)
                               : gnutls_certificate_set_x509_system_trust(m->webpki_creds);
        if (r <= 0)
                log_warning("No trusted CAs loaded%s%s (%s): WebPKI checks will fail", m->tls_ca_file ? " from " : "",
                            m->tls_ca_file ? m->tls_ca_file : "", r < 0 ? gnutls_strerror(r) : "empty");
        return m->webpki_creds;
}

static bool message_is_tls_report(const Message *msg) {
        return json_object_get_boolean(json_object_object_get(msg->envelope, "tlsReport"));
}

static void target_address(const Target *t, char *buf, size_t n) {
        buf[0] = 0;
        if (t->sa.ss_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *) &t->sa)->sin_addr, buf, (socklen_t) n);
        else if (t->sa.ss_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) &t->sa)->sin6_addr, buf, (socklen_t) n);
}

/* The first word of the greeting: the receiving MX's own name. */
static void greeting_name(const SmtpSessionFacts *f, char *buf, size_t n) {
        buf[0] = 0;
        if (!f || !f->greeting)
                return;
        size_t k = strcspn(f->greeting, " \n\r\t");
        snprintf(buf, n, "%.*s", (int) MIN(k, n - 1), f->greeting);
}

/* Records which TLS policy the domain's last attempt used, for Show. */
static void note_destination_policy(Delivery *d, const char *text) {
        json_object *tls = json_object_object_get(d->msg->envelope, "tlsPolicies");
        if (!json_object_is_type(tls, json_type_object)) {
                tls = json_object_new_object();
                if (!tls)
                        return;
                json_object_object_add(d->msg->envelope, "tlsPolicies", tls);
        }
        json_object_object_add(tls, d->domain, json_object_new_string(text));
}

static void emit_result(Delivery *d, const Target *t, const SmtpSessionFacts *facts, TlsResultType type,
                        const char *reason) {
        char ip[INET6_ADDRSTRLEN], helo[256];
        target_address(t, ip, sizeof ip);
        greeting_name(facts, helo, sizeof helo);
        TlsResult r = {
                .policy_type = d->sess.type,
                .policy_domain = d->sess.policy_domain,
                .policy_strings = d->sess.strings,
                .mx_patterns = d->sess.mx,
                .mx_host = t->host,
                .mx_helo = helo,
                .receiving_ip = ip,
                .sending_ip = facts && facts->local_address[0] ? facts->local_address : NULL,
                .result = type,
                .failure_reason = type != TLS_RESULT_NONE ? reason : NULL,
        };
        tlsrpt_record(d->m, d->msg->id, !message_is_tls_report(d->msg), &r);
}

/* The session's TLS result, once: at the end of a new (not reused)
 * session that got as far as EHLO. Sessions that never talked SMTP
 * (connection failures) are not TLS results (RFC 8460 §4.3.4). */
static void session_report(Delivery *d, SmtpClient *c) {
        const SmtpSessionFacts *f = smtp_client_facts(c);
        Target *t = &d->targets[d->cur];
        TlsResultType type;
        const char *reason = NULL;

        if (d->sess.reported || d->sess.reused || d->sess.mode == MODE_NONE || !f || !f->hello_done)
                return;
        if (f->tls_verify_failed) {
                type = d->sess.verify;
                reason = d->sess.verify_reason;
        } else if (f->tls_handshake_failed) {
                type = TLS_RESULT_VALIDATION_FAILURE;
                reason = "TLS handshake failed";
        } else if (!f->tls) {
                if (f->starttls_offered && !f->starttls_refused)
                        return; /* the session ended before STARTTLS could happen */
                type = TLS_RESULT_STARTTLS_NOT_SUPPORTED;
                reason = f->starttls_refused ? "STARTTLS refused" : "STARTTLS not offered";
        } else if (d->sess.verify != TLS_RESULT_NONE) {
                type = d->sess.verify; /* MTA-STS testing: delivered, reported */
                reason = d->sess.verify_reason;
        } else if (d->sess.forced != TLS_RESULT_NONE) {
                type = d->sess.forced;
                reason = d->sess.forced_reason;
        } else
                type = TLS_RESULT_NONE;
        d->sess.reported = true;
        emit_result(d, t, f, type, reason);
}

static int verify_dane(SmtpClient *c, gnutls_session_t tls, char *reason, size_t reason_size, void *userdata) {
        Delivery *d = userdata;
        const Target *t = &d->targets[d->cur];
        const HostPolicy *h = &d->hosts[t->policy];
        unsigned n = 0;
        const gnutls_datum_t *chain = gnutls_certificate_get_peers(tls, &n);
        /* reference identifiers (RFC 7672 3.2.3): the TLSA base domain and the MX host name */
        const char *names[] = { h->base, h->base != h->name ? h->name : NULL, NULL };
        TlsResultType type = TLS_RESULT_VALIDATION_FAILURE;

        int r = dane_verify_chain(&h->tlsa, chain, n, names, &type, d->sess.verify_reason, sizeof d->sess.verify_reason);
        if (r > 0)
                return 1;
        if (r < 0)
                snprintf(d->sess.verify_reason, sizeof d->sess.verify_reason, "local error: %s", strerror(-r));
        d->sess.verify = r < 0 ? TLS_RESULT_VALIDATION_FAILURE : type;
        snprintf(reason, reason_size, "DANE: %s (%s)", tls_result_type_to_string(d->sess.verify), d->sess.verify_reason);
        return -1;
}

/* WebPKI for the MX host name; hard for MTA-STS enforce and verify, soft
 * (recorded, delivered) for MTA-STS testing. */
static int verify_webpki(SmtpClient *c, gnutls_session_t tls, char *reason, size_t reason_size, void *userdata) {
        Delivery *d = userdata;
        const Target *t = &d->targets[d->cur];
        unsigned status = 0;

        int r = gnutls_certificate_verify_peers3(tls, t->host, &status);
        if (r == 0 && status == 0)
                return 1;
        gnutls_datum_t msg = {};
        if (r == 0)
                (void) gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &msg, 0);
        snprintf(d->sess.verify_reason, sizeof d->sess.verify_reason, "%s",
                 r < 0 ? gnutls_strerror(r) : msg.data ? (const char *) msg.data : "not valid");
        gnutls_free(msg.data);
        d->sess.verify = r < 0 ? TLS_RESULT_VALIDATION_FAILURE : tls_webpki_status_to_result(status);
        if (d->sess.mode == MODE_STS_TESTING)
                return 0;
        snprintf(reason, reason_size, "%s (%s)", tls_result_type_to_string(d->sess.verify), d->sess.verify_reason);
        return -1;
}

/* Decides how the session to t is secured. false: t must not be used
 * (its TLS result is already recorded, d->last_error says why). */
static bool session_prepare(Delivery *d, const Target *t, SmtpClientOptions *o) {
        HostPolicy *h = t->policy >= 0 ? &d->hosts[t->policy] : NULL;
        Session *s = &d->sess;
        char ptext[400];

        *s = (Session){ .type = TLS_POLICY_NO_POLICY_FOUND, .policy_domain = d->domain };
        o->tls_verify = NULL;
        o->tls_verify_userdata = d;
        o->tls_creds = NULL;

        if (h && h->dane == HOST_DANE_FAILED) {
                s->type = TLS_POLICY_TLSA;
                s->policy_domain = h->base;
                snprintf(d->last_error, sizeof d->last_error, "%.200s: %s", t->host, h->why);
                snprintf(ptext, sizeof ptext, "%s: tlsa %s (DNSSEC failure)", tls_level_to_string(d->level), h->base);
                note_destination_policy(d, ptext);
                emit_result(d, t, NULL, TLS_RESULT_DNSSEC_INVALID, h->why);
                return false;
        }
        if (h && (h->dane == HOST_DANE_USABLE || h->dane == HOST_DANE_UNUSABLE)) {
                s->type = TLS_POLICY_TLSA;
                s->policy_domain = h->base;
                o->tls_server_name = h->base; /* SNI: the TLSA base domain (RFC 7672 8.1) */
                s->strings = (const char *const *) h->tlsa.strings;
                s->mode = h->dane == HOST_DANE_USABLE ? MODE_DANE : MODE_DANE_ENCRYPT;
                o->tls = SMTP_TLS_REQUIRE;
                if (s->mode == MODE_DANE)
                        o->tls_verify = verify_dane;
                snprintf(ptext, sizeof ptext, "%s: tlsa %s (%s)", tls_level_to_string(d->level), h->base,
                         s->mode == MODE_DANE ? "authenticated" : "no usable records, encrypted");
                note_destination_policy(d, ptext);
                return true;
        }
        if (d->level == TLS_LEVEL_DANE_ONLY) {
                s->type = TLS_POLICY_TLSA;
                s->policy_domain = h ? h->name : t->host;
                snprintf(d->last_error, sizeof d->last_error, "%.200s: DANE required, but there are no secure usable TLSA records",
                         t->host);
                note_destination_policy(d, "dane-only: no secure TLSA records");
                emit_result(d, t, NULL, TLS_RESULT_DANE_REQUIRED, "no secure usable TLSA records");
                return false;
        }
        if (d->have_sts && d->sts.mode != MTASTS_MODE_NONE) {
                s->type = TLS_POLICY_STS;
                s->strings = (const char *const *) d->sts.lines;
                s->mx = (const char *const *) d->sts.mx;
                bool enforce = d->sts.mode == MTASTS_MODE_ENFORCE;
                snprintf(ptext, sizeof ptext, "%s: sts %s", tls_level_to_string(d->level), mtasts_mode_to_string(d->sts.mode));
                note_destination_policy(d, ptext);
                if (!mtasts_policy_allows(&d->sts, t->host)) {
                        if (enforce) {
                                snprintf(d->last_error, sizeof d->last_error,
                                         "%.200s: MX host not allowed by the MTA-STS policy of %s", t->host, d->domain);
                                emit_result(d, t, NULL, TLS_RESULT_VALIDATION_FAILURE, "mtasts-policy-mx-mismatch");
                                return false;
                        }
                        s->forced = TLS_RESULT_VALIDATION_FAILURE;
                        snprintf(s->forced_reason, sizeof s->forced_reason, "mtasts-policy-mx-mismatch");
                }
                s->mode = enforce ? MODE_STS_ENFORCE : MODE_STS_TESTING;
                o->tls = enforce ? SMTP_TLS_REQUIRE : SMTP_TLS_MAY;
                o->tls_verify = verify_webpki;
                o->tls_creds = webpki_creds(d->m);
                return true;
        }
        if (d->sts_failure != TLS_RESULT_NONE) {
                /* The policy could not be had: delivered as without one, reported. */
                s->type = TLS_POLICY_STS;
                s->forced = d->sts_failure;
                snprintf(s->forced_reason, sizeof s->forced_reason, "%s", d->sts_reason);
        }
        switch (d->level == TLS_LEVEL_DANE ? (d->fallback == SMTP_TLS_REQUIRE ? TLS_LEVEL_ENCRYPT : d->fallback == SMTP_TLS_NO ? TLS_LEVEL_NONE : TLS_LEVEL_MAY) : d->level) {
        case TLS_LEVEL_NONE:
                s->mode = MODE_NONE;
                o->tls = SMTP_TLS_NO;
                break;
        case TLS_LEVEL_ENCRYPT:
                s->mode = MODE_ENCRYPT;
                o->tls = SMTP_TLS_REQUIRE;
                break;
        case TLS_LEVEL_VERIFY:
                s->mode = MODE_VERIFY;
                o->tls = SMTP_TLS_REQUIRE;
                o->tls_verify = verify_webpki;
                o->tls_creds = webpki_creds(d->m);
                break;
        default:
                s->mode = MODE_MAY;
                o->tls = SMTP_TLS_MAY;
                break;
        }
        snprintf(ptext, sizeof ptext, "%s: %s%s", tls_level_to_string(d->level), mode_names[s->mode],
                 d->sts_failure != TLS_RESULT_NONE ? " (MTA-STS policy unavailable)" : "");
        note_destination_policy(d, ptext);
        return true;
}

static void on_smtp_event(SmtpClient *c, SmtpClientEvent ev, void *userdata) {
        Delivery *d = userdata;
        const SmtpSessionFacts *facts = smtp_client_facts(c);
        Target *t = &d->targets[d->cur];
        char relay[400], tls[160] = "none";

        {
                char addr[INET6_ADDRSTRLEN] = "";
                if (t->sa.ss_family == AF_INET)
                        inet_ntop(AF_INET, &((struct sockaddr_in *) &t->sa)->sin_addr, addr, sizeof addr);
                else
                        inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &t->sa)->sin6_addr, addr, sizeof addr);
                snprintf(relay, sizeof relay, "%s[%s]:%u", t->host, addr, d->port);
        }
        if (facts && facts->tls)
                snprintf(tls, sizeof tls, "%s %s%s", facts->tls_version ? facts->tls_version : "TLS",
                         facts->tls_cipher ? facts->tls_cipher : "", facts->tls_verified ? " verified" : "");
        session_report(d, c);

        if (ev == SMTP_CLIENT_EVENT_TRANSACTION_DONE && !session_reached_mail(c, d->n)) {
                /* Never got as far as MAIL (connect, greeting, EHLO, TLS):
                 * like a broken connection, another next hop may do better. */
                const SmtpResult *r = smtp_client_rcpt_result(c, 0);
                char text[700];
                format_result_text(r, text, sizeof text);
                snprintf(d->last_error, sizeof d->last_error, "%.200s: %.300s", relay, text);
                d->last_error_permanent = false;
                snprintf(d->enhanced, sizeof d->enhanced, "%s", r->enhanced[0] ? r->enhanced : "4.4.1");
                d->client = smtp_client_free(d->client);
                d->cur++;
                delivery_try_next(d);
                return;
        }
        if (ev == SMTP_CLIENT_EVENT_TRANSACTION_DONE) {
                json_object *rcpts = envelope_recipients(d->msg);
                for (size_t i = 0; i < d->n && i < smtp_client_n_rcpts(c); i++) {
                        const SmtpResult *r = smtp_client_rcpt_result(c, i);
                        json_object *rc = json_object_array_get_idx(rcpts, d->idx[i]);
                        char text[700];
                        format_result_text(r, text, sizeof text);
                        const char *status = r->enhanced[0] ? r->enhanced : r->status == SMTP_STATUS_OK ? "2.0.0"
                                             : r->status == SMTP_STATUS_PERMFAIL                   ? "5.0.0"
                                                                                                   : "4.0.0";
                        json_object_object_add(rc, "status", json_object_new_string(status));
                        json_object_object_add(rc, "remoteMta", json_object_new_string(t->host));
                        json_object_object_add(rc, "lastAttempt", json_object_new_int64((int64_t) time(NULL)));
                        if (r->status == SMTP_STATUS_OK) {
                                set_recipient(rc, "delivered", NULL);
                                log_recipient(d->m, d->msg, d->rcpts[i], LOG_MESSAGE_DELIVERED, LOG_INFO, relay, status, text, tls);
                                queue_event(d->m, EVENT_DELIVERED, d->msg, d->rcpts[i], text);
                        } else if (r->status == SMTP_STATUS_PERMFAIL) {
                                set_recipient(rc, "failed", text);
                                log_recipient(d->m, d->msg, d->rcpts[i], LOG_MESSAGE_BOUNCED, LOG_NOTICE, relay, status, text, tls);
                                queue_event(d->m, EVENT_BOUNCED, d->msg, d->rcpts[i], text);
                        } else {
                                set_recipient(rc, "pending", text);
                                log_recipient(d->m, d->msg, d->rcpts[i], LOG_MESSAGE_DEFERRED, LOG_INFO, relay, status, text, tls);
                                queue_event(d->m, EVENT_DEFERRED, d->msg, d->rcpts[i], text);
                        }
                }
                d->n = 0; /* results recorded */
                /* A session that greeted with a recipient's own EHLO name is
                 * not kept: kept sessions are not keyed by it. */
                if (smtp_client_usable(c) && !d->helo) {
                        idle_park(d->m, TAKE_PTR(d->client), t->host, &t->sa, t->salen, d->lmtp, d->sess.mode);
                        delivery_done(d);
                } else
                        (void) smtp_client_quit(c); /* CLOSED follows and tidies up */
                return;
        }

        /* CLOSED */
        if (d->n == 0) {
                delivery_done(d);
                return;
        }
        /* The session ended before results: a connection-level failure.
         * Another address or MX host may do better. */
        const SmtpResult *err = smtp_client_error(c);
        char text[700];
        format_result_text(err, text, sizeof text);
        snprintf(d->last_error, sizeof d->last_error, "%.200s: %.300s", relay, text);
        d->last_error_permanent = err->status == SMTP_STATUS_PERMFAIL && err->stage != SMTP_STAGE_CONNECT &&
                                  err->stage != SMTP_STAGE_GREETING && err->stage != SMTP_STAGE_EHLO;
        snprintf(d->enhanced, sizeof d->enhanced, "%s", err->enhanced[0] ? err->enhanced : "4.4.1");
        d->client = smtp_client_free(d->client);
        d->cur++;
        delivery_try_next(d);
}

/* The local address for a connection: the sender domain's own, else one of
 * the pool picked by hashing the queue id (stable across retries), in the
 * target's family. False: let the kernel choose. */
static bool pick_source(Manager *m, Message *msg, const char *sender, const char *want, int family,
                        struct sockaddr_storage *ret, socklen_t *ret_len) {
        const char *domain = address_domain(sender);
        const ConfigAddress *pick = NULL;
        ConfigAddress chosen = { .family = family };
        size_t n = 0;

        /* The recipients' own choice (checked against SourceAddresses= at
         * Enqueue), when it is of the target's family. */
        if (want && inet_pton(family, want, chosen.addr) == 1)
                pick = &chosen;
        for (size_t i = 0; !pick && i < m->n_source_by_domain; i++)
                if (strcasecmp(m->source_domains[i], domain) == 0 &&
                    m->source_by_domain[i].family == family)
                        pick = &m->source_by_domain[i];
        if (!pick) {
                for (size_t i = 0; i < m->n_source_pool; i++)
                        n += m->source_pool[i].family == family;
                if (n == 0)
                        return false;
                uint32_t h = 2166136261u; /* FNV-1a */
                for (const char *p = msg->id; *p; p++)
                        h = (h ^ (uint8_t) *p) * 16777619u;
                size_t k = h % n;
                for (size_t i = 0; i < m->n_source_pool; i++)
                        if (m->source_pool[i].family == family && k-- == 0)
                                pick = &m->source_pool[i];
        }
        if (!pick)
                return false;
        memset(ret, 0, sizeof *ret);
        if (family == AF_INET) {
                struct sockaddr_in *s = (struct sockaddr_in *) ret;
                s->sin_family = AF_INET;
                memcpy(&s->sin_addr, pick->addr, 4);
                *ret_len = sizeof *s;
        } else {
                struct sockaddr_in6 *s = (struct sockaddr_in6 *) ret;
                s->sin6_family = AF_INET6;
                memcpy(&s->sin6_addr, pick->addr, 16);
                *ret_len = sizeof *s;
        }
        return true;
}

/* A session to t: a kept one (when allowed and there is one) or a new
 * connection, from the configured source address. */
static int delivery_open(Delivery *d, Target *t, SmtpClientOptions *o, bool allow_reuse, bool *ret_reused) {
        struct sockaddr_storage src;
        socklen_t srclen = 0;

        if (pick_source(d->m, d->msg, d->sender, d->source, t->sa.ss_family, &src, &srclen)) {
                o->source = (const struct sockaddr *) &src;
                o->source_len = srclen;
        }
        /* Kept sessions are not keyed by source address: only reused without one. */
        if (allow_reuse && srclen == 0 && !d->helo && (d->client = idle_take(d->m, t->host, &t->sa, t->salen, d->lmtp, d->sess.mode))) {
                smtp_client_set_event_handler(d->client, on_smtp_event, d);
                *ret_reused = true;
                return 0;
        }
        *ret_reused = false;
        int r = smtp_client_connect(d->m->event, (struct sockaddr *) &t->sa, t->salen, o, &d->client);
        o->source = NULL;
        return r;
}

static void delivery_try_next(Delivery *d) {
        Manager *m = d->m;

        if (d->cur >= d->n_targets) {
                delivery_fail_all(d, d->last_error_permanent, d->last_error_permanent ? d->enhanced : "4.4.1",
                                  d->last_error[0] ? d->last_error : "no next hop could be reached");
                return;
        }
        Target *t = &d->targets[d->cur];
        SmtpClientOptions o = {
                .lmtp = d->lmtp,
                .tls = m->tls_policy,
                .helo_name = d->helo ?: m->hostname,
                .peer_name = t->host,
                .tls_server_name = t->host,
                .timeouts = m->smtp_timeouts,
                .on_event = on_smtp_event,
                .userdata = d,
        };
        if (!session_prepare(d, t, &o)) {
                /* RFC 7672 2.2, RFC 8461 4.2: never this host, never plaintext instead */
                d->last_error_permanent = false;
                snprintf(d->enhanced, sizeof d->enhanced, "4.7.5");
                d->cur++;
                delivery_try_next(d);
                return;
        }
        bool reused = false;
        int r = delivery_open(d, t, &o, true, &reused);
        d->sess.reused = reused;
        if (r < 0) {
                snprintf(d->last_error, sizeof d->last_error, "%s: connect: %s", t->host, strerror(-r));
                d->cur++;
                delivery_try_next(d);
                return;
        }
        struct stat st;
        bool eightbit = streq_ptr(json_object_get_string(json_object_object_get(d->msg->envelope, "body")), "eightBitMime");
        SmtpMessage sm = {
                .from = d->sender,
                .rcpts = d->rcpts,
                .n_rcpts = d->n,
                .fd = d->content_fd,
                .size = fstat(d->content_fd, &st) == 0 ? (uint64_t) st.st_size : 0,
                .eightbit = eightbit,
                .smtputf8 = json_object_get_boolean(json_object_object_get(d->msg->envelope, "smtputf8")),
        };
        r = smtp_client_send(d->client, &sm);
        if (r < 0 && reused) {
                /* The kept session went away meanwhile: a fresh one. */
                d->client = smtp_client_free(d->client);
                r = delivery_open(d, t, &o, false, &reused);
                d->sess.reused = false;
                if (r >= 0)
                        r = smtp_client_send(d->client, &sm);
        }
        if (r < 0) {
                snprintf(d->last_error, sizeof d->last_error, "%s: %s", t->host, strerror(-r));
                d->client = smtp_client_free(d->client);
                d->cur++;
                delivery_try_next(d);
        }
}

static int add_target(Delivery *d, const char *host, int family, const void *addr) {
        Target *t = realloc(d->targets, (d->n_targets + 1) * sizeof *t);
        if (!t)
                return -ENOMEM;
        d->targets = t;
        t = &d->targets[d->n_targets];
        memset(t, 0, sizeof *t);
        t->policy = -1;
        t->host = strdup(host);
        if (!t->host)
                return -ENOMEM;
        if (family == AF_INET) {
                struct sockaddr_in *s = (struct sockaddr_in *) &t->sa;
                s->sin_family = AF_INET;
                s->sin_port = htons(d->port);
                memcpy(&s->sin_addr, addr, sizeof s->sin_addr);
                t->salen = sizeof *s;
        } else {
                struct sockaddr_in6 *s = (struct sockaddr_in6 *) &t->sa;
                s->sin6_family = AF_INET6;
                s->sin6_port = htons(d->port);
                memcpy(&s->sin6_addr, addr, sizeof s->sin6_addr);
                t->salen = sizeof *s;
        }
        d->n_targets++;
        return 0;
}

/* Every TLSA and MTA-STS lookup answered: start connecting. */
static void lookups_done(Delivery *d) {
        if (d->lookups == 0 && !d->mx)
                delivery_try_next(d);
}

static void on_tlsa(DnsQuery *q, const DnsResult *res, void *userdata);

/* Looks up the TLSA RRset of h's current base domain. */
static int tlsa_query(Delivery *d, HostPolicy *h) {
        char qname[DNS_NAME_TEXT_MAX + 32];
        snprintf(qname, sizeof qname, "_%u._tcp.%s", d->port, h->base);
        int r = dns_query(d->m->resolver, qname, DNS_TYPE_TLSA, on_tlsa, h, &h->query);
        if (r < 0) {
                h->query = NULL;
                h->dane = HOST_DANE_FAILED;
                snprintf(h->why, sizeof h->why, "TLSA lookup of %.200s could not be started: %s", qname, strerror(-r));
        }
        return r;
}

static void on_tlsa(DnsQuery *q, const DnsResult *res, void *userdata) {
        HostPolicy *h = userdata;
        Delivery *d = h->d;
        h->query = NULL;

        if (res->security == DNS_BOGUS) {
                h->dane = HOST_DANE_FAILED;
                snprintf(h->why, sizeof h->why, "TLSA lookup of %.100s is bogus: %.150s", res->qname,
                         res->why_bogus ? res->why_bogus : "DNSSEC validation failed");
        } else if (dns_status_is_temporary(res->status)) {
                /* RFC 7672 2.2: a failed TLSA lookup of a secure host makes it unusable */
                h->dane = HOST_DANE_FAILED;
                snprintf(h->why, sizeof h->why, "TLSA lookup of %.200s failed: %s", res->qname, dns_status_to_string(res->status));
        } else if (res->status == DNS_STATUS_OK && res->security == DNS_SECURE && res->n_records > 0) {
                if (dane_tlsa_from_records(res->records, res->n_records, &h->tlsa) < 0) {
                        h->dane = HOST_DANE_FAILED;
                        snprintf(h->why, sizeof h->why, "out of memory");
                } else
                        h->dane = h->tlsa.n_records > 0 ? HOST_DANE_USABLE : HOST_DANE_UNUSABLE;
        } else if (res->status == DNS_STATUS_OK && res->security == DNS_SECURE) {
                /* secure, but every record malformed: nothing usable, yet TLSA exist */
                h->dane = HOST_DANE_UNUSABLE;
        } else {
                h->dane = HOST_DANE_NONE; /* insecure, or securely no TLSA */
                if (h->base != h->name) {
                        /* nothing at the CNAME target: the MX host name itself (RFC 7672 2.2.2) */
                        h->base = h->name;
                        if (tlsa_query(d, h) >= 0)
                                return; /* still one lookup outstanding for h */
                }
        }
        d->lookups--;
        lookups_done(d);
}

static void on_sts(MtaStsLookup *l, const MtaStsOutcome *o, void *userdata) {
        Delivery *d = userdata;
        d->sts_lookup = NULL;
        if (o->policy && mtasts_policy_copy(o->policy, &d->sts) >= 0)
                d->have_sts = true;
        if (o->failure != TLS_RESULT_NONE) {
                snprintf(d->sts_reason, sizeof d->sts_reason, "%s", o->failure_reason ? o->failure_reason : "");
                if (!d->have_sts)
                        d->sts_failure = o->failure;
                char esc[400];
                log_escape(d->sts_reason, strlen(d->sts_reason), esc, sizeof esc);
                log_notice("%s: MTA-STS policy of %s: %s (%s)%s", d->msg->id, d->domain, tls_result_type_to_string(o->failure),
                           esc, d->have_sts ? ", using the cached policy" : "");
        }
        d->lookups--;
        lookups_done(d);
}

/* The TLSA lookups for the MX hosts (RFC 7672 2.2: only when the MX answer
 * and the host's addresses are secure). */
static int start_tlsa_lookups(Delivery *d, const MxResult *res) {
        d->hosts = calloc(res->n_hosts ? res->n_hosts : 1, sizeof *d->hosts);
        if (!d->hosts)
                return -ENOMEM;
        for (size_t i = 0; i < res->n_hosts; i++) {
                HostPolicy *h = &d->hosts[d->n_hosts];
                h->d = d;
                if (!(h->name = strdup(res->hosts[i].name)))
                        return -ENOMEM;
                d->n_hosts++;
                h->base = h->name;
                if (res->hosts[i].canonical && strcmp(res->hosts[i].canonical, h->name) != 0) {
                        if (!(h->canonical = strdup(res->hosts[i].canonical)))
                                return -ENOMEM;
                        h->base = h->canonical;
                }
                for (size_t k = 0; k < d->n_targets; k++)
                        if (d->targets[k].policy < 0 && strcmp(d->targets[k].host, h->name) == 0)
                                d->targets[k].policy = (ssize_t) (d->n_hosts - 1);
                if (!(d->level == TLS_LEVEL_DANE || d->level == TLS_LEVEL_DANE_ONLY) || !res->mx_secure ||
                    !res->hosts[i].secure || res->hosts[i].n_addresses == 0)
                        continue;
                if (tlsa_query(d, h) >= 0)
                        d->lookups++;
        }
        return 0;
}

static void on_mx(MxLookup *l, const MxResult *res, void *userdata) {
        Delivery *d = userdata;
        d->mx = NULL;
        if (res->status != MX_OK) {
                char why[600];
                snprintf(why, sizeof why, "%s: %s", res->domain, res->reason ? res->reason : "lookup failed");
                if (d->sts_lookup) {
                        mtasts_lookup_cancel(d->sts_lookup);
                        d->sts_lookup = NULL;
                }
                if (res->mx_bogus && d->level != TLS_LEVEL_NONE) {
                        /* RFC 8460 4.3.2: a bogus MX RRset is a DNSSEC failure of the domain's policy */
                        TlsResult r = {
                                .policy_type = TLS_POLICY_TLSA,
                                .policy_domain = d->domain,
                                .result = TLS_RESULT_DNSSEC_INVALID,
                                .failure_reason = "MX lookup failed DNSSEC validation",
                        };
                        tlsrpt_record(d->m, d->msg->id, !message_is_tls_report(d->msg), &r);
                }
                delivery_fail_all(d, res->status == MX_PERMANENT, res->enhanced_status ? res->enhanced_status : "4.4.3", why);
                return;
        }
        for (size_t i = 0; i < res->n_hosts; i++)
                for (size_t k = 0; k < res->hosts[i].n_addresses; k++) {
                        const MxAddress *a = &res->hosts[i].addresses[k];
                        if (add_target(d, res->hosts[i].name, a->family, a->family == AF_INET ? (const void *) &a->in : (const void *) &a->in6) < 0) {
                                delivery_fail_all(d, false, "4.3.0", "out of memory");
                                return;
                        }
                }
        if (start_tlsa_lookups(d, res) < 0) {
                delivery_fail_all(d, false, "4.3.0", "out of memory");
                return;
        }
        lookups_done(d);
}

/* The level for d: RFC 8460 5.3.1, a TLS report is never held back by DANE
 * or MTA-STS failures (it is often about them): opportunistic TLS only. */
static TlsLevel delivery_level(Delivery *d) {
        TlsLevel l = deliver_tls_level(d->m, d->domain, &d->fallback);
        if (message_is_tls_report(d->msg) && l != TLS_LEVEL_NONE) {
                d->fallback = SMTP_TLS_MAY;
                return TLS_LEVEL_MAY;
        }
        return l;
}

static int delivery_start(Manager *m, Message *msg, const char *domain, const char *route, const char *source,
                          const char *sender, const char *helo, size_t *idx, size_t n) {
        Delivery *d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        d->m = m;
        d->msg = msg;
        d->route = route;
        d->source = source;
        d->sender = sender;
        d->helo = helo;
        d->content_fd = -1;
        d->domain = strdup(domain);
        d->idx = idx;
        d->n = n;
        d->rcpts = calloc(n, sizeof *d->rcpts);
        if (!d->domain || !d->rcpts) {
                d->idx = NULL;
                delivery_free(d);
                return -ENOMEM;
        }
        json_object *rcpts = envelope_recipients(msg);
        for (size_t i = 0; i < n; i++)
                d->rcpts[i] = json_object_get_string(json_object_object_get(json_object_array_get_idx(rcpts, idx[i]), "address"));
        d->content_fd = spool_open_content(m->spool, msg->id);

        unsigned *active = dest_slot(m, domain, true);
        if (active)
                (*active)++;
        m->n_deliveries++;
        msg->in_flight++;
        d->next = m->deliveries;
        m->deliveries = d;

        if (d->content_fd < 0) {
                delivery_fail_all(d, false, "4.3.0", "the message content cannot be read from the spool");
                return 0;
        }

        const char *hop = d->route ? route_choice(m, d->route, &d->lmtp) : route_for(m, domain, &d->lmtp);
        if (hop) {
                _cleanup_free_ char *host = NULL;
                bool literal;
                if (parse_nexthop(hop, &host, &d->port, &literal) < 0) {
                        delivery_fail_all(d, false, "4.3.5", "invalid route in the configuration");
                        return 0;
                }
                if (literal) {
                        d->level = delivery_level(d);
                        struct in_addr a4;
                        struct in6_addr a6;
                        int r = inet_pton(AF_INET, host, &a4) == 1 ? add_target(d, host, AF_INET, &a4)
                                : inet_pton(AF_INET6, host, &a6) == 1 ? add_target(d, host, AF_INET6, &a6)
                                                                      : -EINVAL;
                        if (r < 0) {
                                delivery_fail_all(d, false, "4.3.5", "invalid route address");
                                return 0;
                        }
                        delivery_try_next(d);
                        return 0;
                }
                /* A name: its MX (or address) records, on the route's port.
                 * DANE applies to those hosts; MTA-STS does not (it is about
                 * the recipient domain's own MX). */
                d->level = delivery_level(d);
                int r = mx_lookup_start(m->resolver, host, &m->mx_config, on_mx, d, &d->mx);
                if (r < 0)
                        delivery_fail_all(d, false, "4.4.3", "DNS lookup could not be started");
                return 0;
        }
        d->port = m->smtp_port;
        d->level = delivery_level(d);
        int r = mx_lookup_start(m->resolver, domain, &m->mx_config, on_mx, d, &d->mx);
        if (r < 0) {
                delivery_fail_all(d, false, "4.4.3", "DNS lookup could not be started");
                return 0;
        }
        /* MTA-STS, in parallel with the MX lookup; DANE wins per host where both apply. */
        if (d->level == TLS_LEVEL_DANE && m->mtasts && mtasts_lookup_start(m->mtasts, domain, on_sts, d, &d->sts_lookup) >= 0)
                d->lookups++;
        return 0;
}

/* Starts deliveries for every domain of msg with pending recipients. */
static void message_deliver(Manager *m, Message *msg) {
        json_object *rcpts = envelope_recipients(msg);
        size_t n = json_object_array_length(rcpts);
        _cleanup_free_ bool *taken = calloc(n ? n : 1, sizeof *taken);
        if (!taken)
                return;

        msg->in_flight++; /* held until every group has started */
        for (size_t i = 0; i < n; i++) {
                json_object *rc = json_object_array_get_idx(rcpts, i);
                if (taken[i] || !streq_ptr(json_object_get_string(json_object_object_get(rc, "state")), "pending"))
                        continue;
                const char *domain = address_domain(json_object_get_string(json_object_object_get(rc, "address")));
                /* One transaction per domain and per route, source, sender
                 * and EHLO name the policy chose for some recipients
                 * (Enqueue's route, sourceAddress, sender, helo). */
                const char *route = json_object_get_string(json_object_object_get(rc, "route"));
                const char *source = json_object_get_string(json_object_object_get(rc, "sourceAddress"));
                const char *sender = recipient_sender(msg, rc);
                const char *helo = json_object_get_string(json_object_object_get(rc, "helo"));
                unsigned *active = dest_slot(m, domain, true);
                if (active && *active >= m->max_per_destination) {
                        msg->waiting = true; /* not an attempt: the next round takes it */
                        continue;
                }
                size_t *idx = calloc(MIN(n, m->max_rcpts_per_transaction), sizeof *idx), k = 0;
                if (!idx)
                        break;
                for (size_t j = i; j < n && k < m->max_rcpts_per_transaction; j++) {
                        json_object *o = json_object_array_get_idx(rcpts, j);
                        if (taken[j] || !streq_ptr(json_object_get_string(json_object_object_get(o, "state")), "pending"))
                                continue;
                        if (strcasecmp(address_domain(json_object_get_string(json_object_object_get(o, "address"))), domain) != 0 ||
                            !streq_ptr(json_object_get_string(json_object_object_get(o, "route")), route) ||
                            !streq_ptr(json_object_get_string(json_object_object_get(o, "sourceAddress")), source) ||
                            !streq_ptr(recipient_sender(msg, o), sender) ||
                            !streq_ptr(json_object_get_string(json_object_object_get(o, "helo")), helo))
                                continue;
                        taken[j] = true;
                        idx[k++] = j;
                }
                if (delivery_start(m, msg, domain, route, source, sender, helo, idx, k) < 0)
                        free(idx);
        }
        if (--msg->in_flight == 0)
                message_settle(m, msg);
}

typedef struct Pick {
        uint64_t now;
        Message **due;
        size_t n, max;
} Pick;

static int pick_due(Manager *m, Message *msg, void *userdata) {
        Pick *p = userdata;
        if (p->n >= p->max)
                return -ENOSPC; /* enough for this round */
        if (msg->in_flight || msg->state == MESSAGE_HELD || msg->next_attempt > p->now)
                return 0;
        p->due[p->n++] = msg;
        return 0;
}

static int schedule(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        if (daemon_is_draining(m->daemon) || m->n_deliveries >= m->max_deliveries)
                goto rearm;
        Pick p = { .now = (uint64_t) time(NULL), .max = m->max_deliveries - m->n_deliveries };
        p.due = calloc(p.max, sizeof *p.due);
        if (!p.due)
                goto rearm;
        (void) queue_foreach(m, pick_due, &p);
        for (size_t i = 0; i < p.n && m->n_deliveries < m->max_deliveries; i++) {
                if (p.due[i]->state == MESSAGE_DEFERRED)
                        queue_set_state(m, p.due[i], MESSAGE_ACTIVE);
                message_deliver(m, p.due[i]);
        }
        free(p.due);
rearm:
        if (s)
                (void) sd_event_source_set_time_relative(s, SCHEDULE_INTERVAL_USEC);
        return 0;
}

static int kick_handler(sd_event_source *s, void *userdata) {
        return schedule(NULL, 0, userdata);
}

void deliver_kick(Manager *m) {
        if (m->kick)
                (void) sd_event_source_set_enabled(m->kick, SD_EVENT_ONESHOT);
}

int deliver_setup(Manager *m) {
        int r = sd_event_add_time_relative(m->event, &m->scheduler, CLOCK_MONOTONIC, SCHEDULE_INTERVAL_USEC, 0, schedule, m);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(m->scheduler, SD_EVENT_ON);
        if (r < 0)
                return r;
        r = sd_event_add_defer(m->event, &m->kick, kick_handler, m);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(m->kick, SD_EVENT_ONESHOT);
}

void deliver_cancel_message(Manager *m, Message *msg) {
        for (Delivery **p = &m->deliveries; *p;) {
                Delivery *d = *p;
                if (d->msg != msg) {
                        p = &d->next;
                        continue;
                }
                *p = d->next;
                dest_release(m, d->domain);
                m->n_deliveries--;
                delivery_free(d);
        }
        msg->in_flight = 0;
}

void deliver_bounce_message(Manager *m, Message *msg, const char *reason) {
        json_object *rcpts = envelope_recipients(msg);

        deliver_cancel_message(m, msg);
        for (size_t i = 0; i < json_object_array_length(rcpts); i++) {
                json_object *rc = json_object_array_get_idx(rcpts, i);
                if (!streq_ptr(json_object_get_string(json_object_object_get(rc, "state")), "pending"))
                        continue;
                const char *addr = json_object_get_string(json_object_object_get(rc, "address"));
                json_object_object_add(rc, "state", json_object_new_string("failed"));
                json_object_object_add(rc, "status", json_object_new_string("5.0.0"));
                json_object_object_add(rc, "lastError", json_object_new_string(reason));
                log_recipient(m, msg, addr, LOG_MESSAGE_BOUNCED, LOG_NOTICE, NULL, "5.0.0", reason, NULL);
                queue_event(m, EVENT_BOUNCED, msg, addr, reason);
        }
        message_settle(m, msg);
}

void deliver_stop(Manager *m) {
        while (m->deliveries) {
                Delivery *d = m->deliveries;
                m->deliveries = d->next;
                d->msg->in_flight = 0;
                delivery_free(d);
        }
        m->n_deliveries = 0;
        while (m->idle)
                idle_conn_free(m->idle);
        m->scheduler = sd_event_source_disable_unref(m->scheduler);
        m->kick = sd_event_source_disable_unref(m->kick);
        for (size_t i = 0; i < m->n_dest; i++)
                free(m->dest_names[i]);
        free(m->dest_names);
        free(m->dest_active);
        m->dest_names = NULL;
        m->dest_active = NULL;
        m->n_dest = 0;
}
