/* SPDX-License-Identifier: MIT */
/* io.halyard.Smtpd on the fd systemd names "varlink". */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "io.halyard.Smtpd.varlink.h"
#include "smtpd.h"

static json_object *rejects_json(const SmtpdCounts *c) {
        json_object *a = json_object_new_array();
        for (unsigned r = 0; r < _REJECT_MAX; r++) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "reason", json_object_new_string(reject_reason_to_string(r)));
                json_object_object_add(o, "count", json_object_new_int64((int64_t) c->v[COUNT_REJECT_FIRST + r]));
                json_object_array_add(a, o);
        }
        return a;
}

static json_object *counts_json(const SmtpdCounts *c) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "sessions", json_object_new_int64((int64_t) c->v[COUNT_SESSIONS]));
        json_object_object_add(o, "tlsSessions", json_object_new_int64((int64_t) c->v[COUNT_TLS_SESSIONS]));
        json_object_object_add(o, "messagesAccepted", json_object_new_int64((int64_t) c->v[COUNT_ACCEPTED]));
        json_object_object_add(o, "authSuccesses", json_object_new_int64((int64_t) c->v[COUNT_AUTH_SUCCESS]));
        json_object_object_add(o, "authFailures", json_object_new_int64((int64_t) c->v[COUNT_AUTH_FAILURE]));
        json_object_object_add(o, "rejects", rejects_json(c));
        return o;
}

static int method_get_status(Varlink *link, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        Manager *m = varlink_server_get_userdata(varlink_get_server(link));
        const SmtpdCounts *t = &m->stats.total;
        json_object *p = json_object_new_object(), *ls = json_object_new_array();
        char summary[300];
        uint64_t now;
        SmtpdCounts minute, hour;

        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        smtpd_stats_last_minute(&m->stats, now / 1000000ULL, &minute);
        smtpd_stats_last_hour(&m->stats, now / 1000000ULL, &hour);

        uint64_t rejects_hour = 0;
        for (unsigned r = 0; r < _REJECT_MAX; r++)
                rejects_hour += hour.v[COUNT_REJECT_FIRST + r];
        snprintf(summary, sizeof summary,
                 "%u sessions open; accepted %llu in the last minute, %llu in the last hour, %llu in all; "
                 "%llu rejects in the last hour; TLS %.0f%%",
                 m->n_sessions, (unsigned long long) minute.v[COUNT_ACCEPTED],
                 (unsigned long long) hour.v[COUNT_ACCEPTED], (unsigned long long) t->v[COUNT_ACCEPTED],
                 (unsigned long long) rejects_hour,
                 t->v[COUNT_SESSIONS] ? 100.0 * (double) t->v[COUNT_TLS_SESSIONS] / (double) t->v[COUNT_SESSIONS] : 0.0);
        json_object_object_add(p, "summary", json_object_new_string(summary));
        json_object_object_add(p, "version", json_object_new_string(HALYARD_VERSION));
        json_object_object_add(p, "sessions", json_object_new_int64(m->n_sessions));
        for (unsigned k = 0; k < _LISTENER_MAX; k++) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "listener", json_object_new_string(listener_kind_to_string(k)));
                json_object_object_add(o, "open", json_object_new_int64(m->listeners[k].n_open));
                json_object_object_add(o, "total", json_object_new_int64((int64_t) m->listeners[k].n_total));
                json_object_array_add(ls, o);
        }
        json_object_object_add(p, "listeners", ls);
        json_object_object_add(p, "sessionsTotal", json_object_new_int64((int64_t) t->v[COUNT_SESSIONS]));
        json_object_object_add(p, "tlsSessions", json_object_new_int64((int64_t) t->v[COUNT_TLS_SESSIONS]));
        json_object_object_add(p, "tlsShare", json_object_new_double(
                t->v[COUNT_SESSIONS] ? (double) t->v[COUNT_TLS_SESSIONS] / (double) t->v[COUNT_SESSIONS] : 0.0));
        json_object_object_add(p, "messagesAccepted", json_object_new_int64((int64_t) t->v[COUNT_ACCEPTED]));
        json_object_object_add(p, "rejects", rejects_json(t));
        json_object_object_add(p, "total", counts_json(t));
        json_object_object_add(p, "lastMinute", counts_json(&minute));
        json_object_object_add(p, "lastHour", counts_json(&hour));
        if (m->policy && m->settings.policy_path)
                json_object_object_add(p, "policy", json_object_new_string(m->settings.policy_path));
        int r = varlink_reply(link, p);
        json_object_put(p);
        return r;
}

static int method_policy_cache_list(Varlink *link, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        Manager *m = varlink_server_get_userdata(varlink_get_server(link));
        json_object *stats = NULL, *out = json_object_new_array();
        int r = policy_cache_stats(m->policy_cache, &stats);
        if (r < 0) {
                json_object_put(out);
                return varlink_error_errno(link, r);
        }
        /* The library's names, in the interface's spelling. */
        static const char *const keys[][2] = {
                { "namespace", "namespace" }, { "function", "function" }, { "size", "size" }, { "max_size", "maxSize" },
                { "hits", "hits" }, { "misses", "misses" }, { "evicts", "evicts" },
        };
        for (size_t i = 0; i < json_object_array_length(stats); i++) {
                json_object *b = json_object_array_get_idx(stats, i), *o = json_object_new_object(), *v;
                for (size_t k = 0; k < ELEMENTSOF(keys); k++)
                        if (json_object_object_get_ex(b, keys[k][0], &v))
                                json_object_object_add(o, keys[k][1], json_object_get(v));
                json_object_array_add(out, o);
        }
        json_object_put(stats);
        json_object *p = json_object_new_object();
        json_object_object_add(p, "buckets", out);
        r = varlink_reply(link, p);
        json_object_put(p);
        return r;
}

static int method_policy_cache_clear(Varlink *link, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        Manager *m = varlink_server_get_userdata(varlink_get_server(link));
        json_object *ns = NULL;
        (void) json_object_object_get_ex(parameters, "namespace", &ns);
        policy_cache_clear(m->policy_cache, ns && json_object_is_type(ns, json_type_string) ? json_object_get_string(ns) : NULL);
        return varlink_reply(link, NULL);
}

static int method_policy_trace(Varlink *link, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        Manager *m = varlink_server_get_userdata(varlink_get_server(link));
        json_object *a = NULL, *e = NULL;
        (void) json_object_object_get_ex(parameters, "address", &a);
        (void) json_object_object_get_ex(parameters, "enabled", &e);
        if (a && json_object_is_type(a, json_type_string)) {
                /* Canonical text, as sessions print their client's address. */
                char canon[INET6_ADDRSTRLEN];
                unsigned char bin[sizeof(struct in6_addr)];
                const char *addr = json_object_get_string(a);
                if (inet_pton(AF_INET, addr, bin) == 1)
                        inet_ntop(AF_INET, bin, canon, sizeof canon);
                else if (inet_pton(AF_INET6, addr, bin) == 1)
                        inet_ntop(AF_INET6, bin, canon, sizeof canon);
                else
                        return varlink_error_invalid_parameter(link, "address");
                unsigned i = 0;
                while (i < m->n_trace && strcmp(m->trace[i], canon) != 0)
                        i++;
                bool on = !e || json_object_get_boolean(e);
                if (on && i == m->n_trace) {
                        if (m->n_trace >= ELEMENTSOF(m->trace)) {
                                json_object *p = json_object_new_object();
                                json_object_object_add(p, "max", json_object_new_int((int) ELEMENTSOF(m->trace)));
                                int r = varlink_error(link, "io.halyard.Smtpd.TooManyTraces", p);
                                json_object_put(p);
                                return r;
                        }
                        snprintf(m->trace[m->n_trace++], sizeof m->trace[0], "%s", canon);
                } else if (!on && i < m->n_trace)
                        memcpy(m->trace[i], m->trace[--m->n_trace], sizeof m->trace[0]);
        }
        json_object *p = json_object_new_object(), *list = json_object_new_array();
        for (unsigned i = 0; i < m->n_trace; i++)
                json_object_array_add(list, json_object_new_string(m->trace[i]));
        json_object_object_add(p, "addresses", list);
        int r = varlink_reply(link, p);
        json_object_put(p);
        return r;
}

int smtpd_varlink_setup(Manager *m) {
        static const VarlinkMethodBinding methods[] = {
                { "io.halyard.Smtpd.GetStatus", method_get_status, 0 },
                { "io.halyard.Smtpd.PolicyCacheList", method_policy_cache_list, 0 },
                { "io.halyard.Smtpd.PolicyCacheClear", method_policy_cache_clear, 0 },
                { "io.halyard.Smtpd.PolicyTrace", method_policy_trace, 0 },
        };
        return varlink_server_new_service(m->event, "halyard-smtpd", io_halyard_Smtpd_varlink, methods,
                                          ELEMENTSOF(methods), m, &m->varlink);
}
