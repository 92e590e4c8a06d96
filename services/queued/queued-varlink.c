/* SPDX-License-Identifier: MIT */
/* io.halyard.Queue method handlers. */
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io.halyard.Queue.varlink.h"
#include "log.h"
#include "macro.h"
#include "queued.h"

#define RECIPIENTS_MAX 1000
#define ADDRESS_MAX 256 /* RFC 5321 4.5.3.1.3: a path is at most 256 octets */

static int reply_take(Varlink *link, json_object *p) {
        int r = varlink_reply(link, p);
        json_object_put(p);
        return r;
}

static int error_no_such_message(Varlink *link, const char *id) {
        json_object *p = json_object_new_object();
        json_object_object_add(p, "queueId", json_object_new_string(id));
        int r = varlink_error(link, "io.halyard.Queue.NoSuchMessage", p);
        json_object_put(p);
        return r;
}

/* Envelope addresses end up in SMTP commands, DSNs and logs: printable
 * text, no spaces or angle brackets, bounded. UTF-8 is allowed (SMTPUTF8). */
static bool address_ok(const char *a, bool may_be_empty) {
        size_t n = strlen(a);
        if (n == 0)
                return may_be_empty;
        if (n > ADDRESS_MAX)
                return false;
        for (const unsigned char *p = (const unsigned char *) a; *p; p++)
                if (*p <= ' ' || *p == 0x7f || *p == '<' || *p == '>')
                        return false;
        return true;
}

/* An EHLO name we would send: a domain name (letters, digits, hyphens, dots,
 * at most 255 octets), as RFC 5321 4.1.1.1 wants when not an address literal. */
static bool helo_name_ok(const char *h) {
        static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.";
        size_t n = strlen(h);
        return n > 0 && n <= 255 && h[0] != '.' && h[0] != '-' && strspn(h, allowed) == n;
}

typedef struct EnqueueRequest {
        Manager *m;
        Varlink *link;
        json_object *envelope;
        char id[SPOOL_ID_MAX];
} EnqueueRequest;

static void enqueue_committed(Spool *s, const char *id, int error, void *userdata) {
        EnqueueRequest *req = userdata;
        Manager *m = req->m;

        if (error < 0) {
                char reason[128];
                snprintf(reason, sizeof reason, "storing the message failed: %s", strerror(-error));
                log_error_errno(error, "Spool commit of %s failed: %m", id);
                json_object *p = json_object_new_object();
                json_object_object_add(p, "reason", json_object_new_string(reason));
                (void) varlink_error(req->link, "io.halyard.Queue.SpoolFailure", p);
                json_object_put(p);
        } else {
                Message *msg = NULL;
                uint64_t size = (uint64_t) json_object_get_int64(json_object_object_get(req->envelope, "size"));
                int r = queue_add(m, id, req->envelope, size, &msg);
                if (r < 0)
                        /* Durable anyway: the next start picks it up. */
                        log_error_errno(r, "Failed to index %s, it is delivered after a restart: %m", id);
                char f_id[64], f_from[300];
                snprintf(f_id, sizeof f_id, "HALYARD_QUEUE_ID=%s", id);
                snprintf(f_from, sizeof f_from, "HALYARD_SENDER=%s",
                         json_object_get_string(json_object_object_get(req->envelope, "sender")));
                json_object *rcpts = json_object_object_get(req->envelope, "recipients");
                log_event(LOG_INFO, LOG_MESSAGE_ACCEPTED, (const char *[]){ f_id, f_from, NULL },
                          "%s: accepted, from=<%s>, size=%llu, nrcpt=%zu", id,
                          json_object_get_string(json_object_object_get(req->envelope, "sender")),
                          (unsigned long long) size, json_object_array_length(rcpts));
                if (msg) {
                        queue_event(m, EVENT_ACCEPTED, msg, NULL, NULL);
                        deliver_kick(m);
                }
                json_object *p = json_object_new_object();
                json_object_object_add(p, "queueId", json_object_new_string(id));
                (void) reply_take(req->link, p);
        }
        varlink_unref(req->link);
        json_object_put(req->envelope);
        free(req);
}

static json_object *copy_string_field(json_object *from, const char *key) {
        json_object *v = json_object_object_get(from, key);
        return v ? json_object_get(v) : NULL;
}

static int method_enqueue(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        json_object *rcpts = json_object_object_get(params, "recipients");
        const char *sender = json_object_get_string(json_object_object_get(params, "sender"));
        int r;

        _cleanup_close_ int fd = varlink_take_fd(link, (unsigned) json_object_get_int(json_object_object_get(params, "content")));
        if (fd < 0)
                return varlink_error_invalid_parameter(link, "content");
        if (!address_ok(sender, true))
                return varlink_error_invalid_parameter(link, "sender");
        size_t n = json_object_array_length(rcpts);
        if (n == 0 || n > RECIPIENTS_MAX)
                return varlink_error_invalid_parameter(link, "recipients");

        /* The stored envelope: what the client said plus delivery state. */
        json_object *env = json_object_new_object(), *list = json_object_new_array();
        if (!env || !list) {
                json_object_put(env);
                json_object_put(list);
                return -ENOMEM;
        }
        json_object_object_add(env, "sender", json_object_new_string(sender));
        for (size_t i = 0; i < n; i++) {
                json_object *in = json_object_array_get_idx(rcpts, i), *out = json_object_new_object();
                const char *addr = json_object_get_string(json_object_object_get(in, "address"));
                if (!address_ok(addr, false)) {
                        json_object_put(out);
                        json_object_put(list);
                        json_object_put(env);
                        return varlink_error_invalid_parameter(link, "recipients");
                }
                json_object_object_add(out, "address", json_object_new_string(addr));
                json_object *v;
                if ((v = copy_string_field(in, "notify")))
                        json_object_object_add(out, "notify", v);
                if ((v = copy_string_field(in, "orcpt")))
                        json_object_object_add(out, "orcpt", v);
                /* The policy's routing choices (smtpd's Queue()): refused
                 * here, not at delivery, when queued would not honour them. */
                const char *route = json_object_get_string(json_object_object_get(in, "route"));
                const char *source = json_object_get_string(json_object_object_get(in, "sourceAddress"));
                json_object *own_sender = json_object_object_get(in, "sender");
                json_object *own_helo = json_object_object_get(in, "helo");
                if (deliver_check_choice(m, route, source) < 0 ||
                    (own_sender && !address_ok(json_object_get_string(own_sender), true)) ||
                    (own_helo && !helo_name_ok(json_object_get_string(own_helo)))) {
                        json_object_put(out);
                        json_object_put(list);
                        json_object_put(env);
                        return varlink_error_invalid_parameter(link, "recipients");
                }
                if ((v = copy_string_field(in, "route")))
                        json_object_object_add(out, "route", v);
                if ((v = copy_string_field(in, "sourceAddress")))
                        json_object_object_add(out, "sourceAddress", v);
                if ((v = copy_string_field(in, "sender")))
                        json_object_object_add(out, "sender", v);
                if ((v = copy_string_field(in, "helo")))
                        json_object_object_add(out, "helo", v);
                json_object_object_add(out, "state", json_object_new_string("pending"));
                json_object_object_add(out, "attempts", json_object_new_int(0));
                json_object_array_add(list, out);
        }
        json_object_object_add(env, "recipients", list);
        static const char *const copied[] = { "body", "smtputf8", "ret", "envid", "client", "tlsReport" };
        for (size_t i = 0; i < ELEMENTSOF(copied); i++) {
                json_object *v = copy_string_field(params, copied[i]);
                if (v)
                        json_object_object_add(env, copied[i], v);
        }
        json_object_object_add(env, "arrival", json_object_new_int64((int64_t) time(NULL)));
        json_object_object_add(env, "state", json_object_new_string("active"));
        json_object_object_add(env, "nextAttempt", json_object_new_int64(0));

        /* The size the spool will store is the content's, known now. */
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                json_object_put(env);
                return varlink_error_invalid_parameter(link, "content");
        }
        if (m->max_message_size > 0 && (uint64_t) st.st_size > m->max_message_size) {
                json_object_put(env);
                json_object *p = json_object_new_object();
                json_object_object_add(p, "limit", json_object_new_int64((int64_t) m->max_message_size));
                r = varlink_error(link, "io.halyard.Queue.ContentTooLarge", p);
                json_object_put(p);
                return r;
        }
        json_object_object_add(env, "size", json_object_new_int64(st.st_size));

        EnqueueRequest *req = calloc(1, sizeof *req);
        if (!req) {
                json_object_put(env);
                return -ENOMEM;
        }
        req->m = m;
        req->link = varlink_ref(link);
        req->envelope = env;
        r = spool_enqueue(m->spool, TAKE_FD(fd), env, m->max_message_size, enqueue_committed, req, req->id);
        if (r < 0) {
                varlink_unref(req->link);
                json_object_put(env);
                free(req);
                if (r == -EFBIG) {
                        json_object *p = json_object_new_object();
                        json_object_object_add(p, "limit", json_object_new_int64((int64_t) m->max_message_size));
                        r = varlink_error(link, "io.halyard.Queue.ContentTooLarge", p);
                        json_object_put(p);
                        return r;
                }
                return r;
        }
        /* Answered from enqueue_committed(), once durable. */
        return 0;
}

static const char *address_domain(const char *a);

static json_object *message_info(Manager *m, const Message *msg) {
        json_object *p = json_object_new_object(), *rcpts = json_object_new_array();
        json_object_object_add(p, "queueId", json_object_new_string(msg->id));
        json_object_object_add(p, "state", json_object_new_string(message_state_to_string(msg->state)));
        json_object_object_add(p, "sender", json_object_get(json_object_object_get(msg->envelope, "sender")));
        json_object_object_add(p, "size", json_object_new_int64((int64_t) msg->size));
        json_object_object_add(p, "arrivalTime", json_object_new_int64((int64_t) msg->arrival));
        if (msg->state == MESSAGE_DEFERRED)
                json_object_object_add(p, "nextAttemptTime", json_object_new_int64((int64_t) msg->next_attempt));
        json_object *list = json_object_object_get(msg->envelope, "recipients");
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                json_object *in = json_object_array_get_idx(list, i), *out = json_object_new_object(), *v;
                json_object_object_add(out, "address", json_object_get(json_object_object_get(in, "address")));
                json_object_object_add(out, "state", json_object_get(json_object_object_get(in, "state")));
                json_object_object_add(out, "attempts", json_object_new_int(json_object_get_int(json_object_object_get(in, "attempts"))));
                static const char *const choices[] = { "lastError", "route", "sourceAddress", "sender", "helo" };
                for (size_t k = 0; k < ELEMENTSOF(choices); k++)
                        if ((v = json_object_object_get(in, choices[k])))
                                json_object_object_add(out, choices[k], json_object_get(v));
                json_object_array_add(rcpts, out);
        }
        json_object_object_add(p, "recipients", rcpts);

        /* The TLS policy per destination domain: what the last attempt
         * applied, else what the configuration says. */
        json_object *dests = json_object_new_array(), *applied = json_object_object_get(msg->envelope, "tlsPolicies");
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                const char *dom = address_domain(json_object_get_string(json_object_object_get(json_object_array_get_idx(list, i), "address")));
                bool seen = false;
                for (size_t k = 0; k < json_object_array_length(dests) && !seen; k++)
                        seen = strcasecmp(json_object_get_string(json_object_object_get(json_object_array_get_idx(dests, k), "domain")), dom) == 0;
                if (seen)
                        continue;
                json_object *d = json_object_new_object(), *a = json_object_object_get(applied, dom);
                char text[200];
                if (!a) {
                        SmtpTlsPolicy fb;
                        TlsLevel l = deliver_tls_level(m, dom, &fb);
                        snprintf(text, sizeof text, "%s (not attempted yet)", tls_level_to_string(l));
                }
                json_object_object_add(d, "domain", json_object_new_string(dom));
                json_object_object_add(d, "tlsPolicy", a ? json_object_get(a) : json_object_new_string(text));
                json_object_array_add(dests, d);
        }
        json_object_object_add(p, "destinations", dests);
        return p;
}

static const char *address_domain(const char *a) {
        const char *at = strrchr(a, '@');
        return at ? at + 1 : "";
}

static bool message_has_domain(const Message *msg, const char *domain) {
        json_object *list = json_object_object_get(msg->envelope, "recipients");
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                const char *a = json_object_get_string(json_object_object_get(json_object_array_get_idx(list, i), "address"));
                if (strcasecmp(address_domain(a), domain) == 0)
                        return true;
        }
        return false;
}

typedef struct DomainTally {
        char **names;
        int64_t *counts;
        size_t n;
        uint64_t oldest;
} DomainTally;

static int tally_domains(Manager *m, Message *msg, void *userdata) {
        DomainTally *t = userdata;
        if (t->oldest == 0 || msg->arrival < t->oldest)
                t->oldest = msg->arrival;
        json_object *list = json_object_object_get(msg->envelope, "recipients");
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                json_object *rc = json_object_array_get_idx(list, i);
                if (!streq_ptr(json_object_get_string(json_object_object_get(rc, "state")), "pending"))
                        continue;
                const char *d = address_domain(json_object_get_string(json_object_object_get(rc, "address")));
                size_t k;
                for (k = 0; k < t->n; k++)
                        if (strcasecmp(t->names[k], d) == 0)
                                break;
                if (k == t->n) {
                        /* Bounded: the status shows the first 100 domains. */
                        if (t->n >= 100)
                                continue;
                        char **nn = realloc(t->names, (t->n + 1) * sizeof *nn);
                        if (!nn)
                                return -ENOMEM;
                        t->names = nn;
                        int64_t *nc = realloc(t->counts, (t->n + 1) * sizeof *nc);
                        if (!nc)
                                return -ENOMEM;
                        t->counts = nc;
                        t->names[t->n] = strdup(d);
                        t->counts[t->n++] = 0;
                }
                t->counts[k]++;
        }
        return 0;
}

static int method_get_status(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        DomainTally t = {};
        uint64_t now = (uint64_t) time(NULL), dmin, dhour, bmin, bhour;
        SpoolStats ss;
        char summary[160];

        int r = queue_foreach(m, tally_domains, &t);
        queue_count_rate(m, EVENT_DELIVERED, now, &dmin, &dhour);
        queue_count_rate(m, EVENT_BOUNCED, now, &bmin, &bhour);
        spool_get_stats(m->spool, &ss);
        snprintf(summary, sizeof summary, "%u active, %u deferred, %u held; %llu delivered in the last hour",
                 m->n_messages[MESSAGE_ACTIVE], m->n_messages[MESSAGE_DEFERRED], m->n_messages[MESSAGE_HELD],
                 (unsigned long long) dhour);

        json_object *p = json_object_new_object(), *domains = json_object_new_array();
        json_object_object_add(p, "summary", json_object_new_string(summary));
        json_object_object_add(p, "version", json_object_new_string(HALYARD_VERSION));
        json_object_object_add(p, "active", json_object_new_int64(m->n_messages[MESSAGE_ACTIVE]));
        json_object_object_add(p, "deferred", json_object_new_int64(m->n_messages[MESSAGE_DEFERRED]));
        json_object_object_add(p, "held", json_object_new_int64(m->n_messages[MESSAGE_HELD]));
        for (size_t i = 0; i < t.n; i++) {
                json_object *d = json_object_new_object();
                json_object_object_add(d, "domain", json_object_new_string(t.names[i] ? t.names[i] : ""));
                json_object_object_add(d, "messages", json_object_new_int64(t.counts[i]));
                json_object_array_add(domains, d);
                free(t.names[i]);
        }
        free(t.names);
        free(t.counts);
        json_object_object_add(p, "domains", domains);
        json_object_object_add(p, "oldestAgeSeconds", json_object_new_int64(t.oldest ? (int64_t) (now - t.oldest) : 0));
        json_object_object_add(p, "deliveredLastMinute", json_object_new_int64((int64_t) dmin));
        json_object_object_add(p, "deliveredLastHour", json_object_new_int64((int64_t) dhour));
        json_object_object_add(p, "bouncedLastMinute", json_object_new_int64((int64_t) bmin));
        json_object_object_add(p, "bouncedLastHour", json_object_new_int64((int64_t) bhour));
        json_object_object_add(p, "spoolCommitted", json_object_new_int64((int64_t) ss.committed));
        json_object_object_add(p, "spoolSyncs", json_object_new_int64((int64_t) ss.syncs));
        if (r < 0) {
                json_object_put(p);
                return r;
        }
        return reply_take(link, p);
}

typedef struct ListFilter {
        Varlink *link;
        int state;
        const char *domain, *sender;
} ListFilter;

static int list_one(Manager *m, Message *msg, void *userdata) {
        ListFilter *f = userdata;
        if (f->state >= 0 && (int) msg->state != f->state)
                return 0;
        if (f->sender && !streq_ptr(json_object_get_string(json_object_object_get(msg->envelope, "sender")), f->sender))
                return 0;
        if (f->domain && !message_has_domain(msg, f->domain))
                return 0;
        json_object *p = json_object_new_object();
        json_object_object_add(p, "message", message_info(m, msg));
        int r = varlink_notify(f->link, p);
        json_object_put(p);
        return r;
}

static int method_list(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        ListFilter f = { .link = link, .state = -1 };
        json_object *v;

        if ((v = json_object_object_get(params, "state")))
                f.state = message_state_from_string(json_object_get_string(v));
        if ((v = json_object_object_get(params, "domain")))
                f.domain = json_object_get_string(v);
        if ((v = json_object_object_get(params, "sender")))
                f.sender = json_object_get_string(v);
        int r = queue_foreach(m, list_one, &f);
        if (r < 0)
                return r;
        return varlink_reply(link, NULL);
}

static Message *find_or_error(Manager *m, Varlink *link, json_object *params, int *ret) {
        const char *id = json_object_get_string(json_object_object_get(params, "queueId"));
        Message *msg = queue_find(m, id);
        if (!msg)
                *ret = error_no_such_message(link, id);
        return msg;
}

static int method_show(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        int r = 0;
        Message *msg = find_or_error(userdata, link, params, &r);
        if (!msg)
                return r;
        json_object *p = json_object_new_object();
        json_object_object_add(p, "message", message_info(userdata, msg));
        return reply_take(link, p);
}

static int persist(Manager *m, Message *msg) {
        int r = spool_update_envelope(m->spool, msg->id, msg->envelope);
        if (r < 0)
                log_warning_errno(r, "%s: failed to update the stored envelope, ignoring: %m", msg->id);
        return r;
}

static int method_hold_release(Varlink *link, json_object *params, bool hold, Manager *m) {
        int r = 0;
        Message *msg = find_or_error(m, link, params, &r);
        if (!msg)
                return r;
        if (hold && msg->state != MESSAGE_HELD) {
                queue_set_state(m, msg, MESSAGE_HELD);
                queue_event(m, EVENT_HELD, msg, NULL, NULL);
        } else if (!hold && msg->state == MESSAGE_HELD) {
                queue_set_state(m, msg, MESSAGE_ACTIVE);
                msg->next_attempt = 0;
                queue_event(m, EVENT_RELEASED, msg, NULL, NULL);
                deliver_kick(m);
        }
        (void) persist(m, msg);
        return varlink_reply(link, NULL);
}

static int method_hold(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        return method_hold_release(link, params, true, userdata);
}

static int method_release(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        return method_hold_release(link, params, false, userdata);
}

static int method_delete(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        int r = 0;
        Message *msg = find_or_error(m, link, params, &r);
        if (!msg)
                return r;
        deliver_cancel_message(m, msg);
        char f_id[64];
        snprintf(f_id, sizeof f_id, "HALYARD_QUEUE_ID=%s", msg->id);
        log_full(LOG_NOTICE, 0, (const char *[]){ f_id, NULL }, "%s: deleted by the operator", msg->id);
        queue_event(m, EVENT_DELETED, msg, NULL, NULL);
        r = spool_remove(m->spool, msg->id);
        if (r < 0)
                return r;
        queue_remove(m, msg);
        return varlink_reply(link, NULL);
}

static int method_bounce(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        int r = 0;
        Message *msg = find_or_error(m, link, params, &r);
        if (!msg)
                return r;
        /* Settling may remove msg: answer first. */
        r = varlink_reply(link, NULL);
        deliver_bounce_message(m, msg, "delivery cancelled by the administrator");
        return r;
}

typedef struct RetryDomain {
        const char *domain;
        int64_t count;
} RetryDomain;

static void make_due(Manager *m, Message *msg) {
        if (msg->state == MESSAGE_DEFERRED)
                queue_set_state(m, msg, MESSAGE_ACTIVE);
        msg->next_attempt = 0;
}

static int retry_domain(Manager *m, Message *msg, void *userdata) {
        RetryDomain *rd = userdata;
        if (msg->state != MESSAGE_HELD && message_has_domain(msg, rd->domain)) {
                make_due(m, msg);
                rd->count++;
        }
        return 0;
}

static int method_retry(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        json_object *id = json_object_object_get(params, "queueId"), *domain = json_object_object_get(params, "domain");
        RetryDomain rd = { .count = 0 };
        int r = 0;

        if (!id == !domain)
                return varlink_error_invalid_parameter(link, id ? "domain" : "queueId");
        if (id) {
                Message *msg = find_or_error(m, link, params, &r);
                if (!msg)
                        return r;
                if (msg->state != MESSAGE_HELD) {
                        make_due(m, msg);
                        rd.count = 1;
                }
        } else {
                rd.domain = json_object_get_string(domain);
                queue_foreach(m, retry_domain, &rd);
        }
        if (rd.count > 0)
                deliver_kick(m);
        json_object *p = json_object_new_object();
        json_object_object_add(p, "count", json_object_new_int64(rd.count));
        return reply_take(link, p);
}

static int method_monitor(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        Varlink **n = realloc(m->monitors, (m->n_monitors + 1) * sizeof *n);
        if (!n)
                return -ENOMEM;
        m->monitors = n;
        m->monitors[m->n_monitors++] = varlink_ref(link);
        /* Never answered finally: the stream ends when the client hangs up. */
        return 0;
}

static void on_disconnect(VarlinkServer *s, Varlink *link, void *userdata) {
        Manager *m = userdata;
        for (unsigned i = 0; i < m->n_monitors; i++)
                if (m->monitors[i] == link) {
                        varlink_unref(link);
                        m->monitors[i] = m->monitors[--m->n_monitors];
                        break;
                }
        if (daemon_is_draining(m->daemon) && varlink_server_n_connections(s) == 0)
                (void) daemon_exit(m->daemon, 0);
}

int queued_varlink_setup(Manager *m) {
        static const VarlinkMethodBinding methods[] = {
                { "io.halyard.Queue.Enqueue", method_enqueue, VARLINK_METHOD_ACCEPTS_FDS },
                { "io.halyard.Queue.GetStatus", method_get_status, 0 },
                { "io.halyard.Queue.List", method_list, VARLINK_METHOD_REQUIRES_MORE },
                { "io.halyard.Queue.Show", method_show, 0 },
                { "io.halyard.Queue.Retry", method_retry, 0 },
                { "io.halyard.Queue.Hold", method_hold, 0 },
                { "io.halyard.Queue.Release", method_release, 0 },
                { "io.halyard.Queue.Delete", method_delete, 0 },
                { "io.halyard.Queue.Bounce", method_bounce, 0 },
                { "io.halyard.Queue.Monitor", method_monitor, VARLINK_METHOD_REQUIRES_MORE },
        };
        int r = varlink_server_new_service(m->event, "halyard-queued", io_halyard_Queue_varlink,
                                           methods, ELEMENTSOF(methods), m, &m->varlink);
        if (r < 0)
                return r;
        varlink_server_set_connect_handlers(m->varlink, NULL, on_disconnect);
        return 0;
}
