/* SPDX-License-Identifier: MIT */
/* io.halyard.TlsRpt method handlers. */
#include <string.h>
#include <time.h>

#include "io.halyard.TlsRpt.varlink.h"
#include "log.h"
#include "macro.h"
#include "tlsrptd.h"

static const char *opt_string(json_object *params, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(params, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        const char *s = json_object_get_string(v);
        return *s ? s : NULL; /* "" means absent: never emitted */
}

/* A JSON string array into a pointer array (borrowed strings). */
static int opt_strv(json_object *params, const char *key, size_t max, const char **slots, size_t *ret_n) {
        json_object *a;
        *ret_n = 0;
        if (!json_object_object_get_ex(params, key, &a) || json_object_is_type(a, json_type_null))
                return 0;
        size_t n = json_object_array_length(a);
        if (n > max)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                slots[i] = json_object_get_string(json_object_array_get_idx(a, i));
        *ret_n = n;
        return 0;
}

/* Domain names as the RFC wants them in reports: lower case, no trailing
 * dot (a recipient domain may arrive as the sender typed it). Names too long
 * to be valid are passed on unchanged, for the check to refuse. */
static const char *name_normalize(const char *s, char buf[static TLSRPT_NAME_MAX + 2]) {
        size_t n;
        if (!s || (n = strlen(s)) > TLSRPT_NAME_MAX + 1)
                return s;
        for (size_t i = 0; i < n; i++)
                buf[i] = s[i] >= 'A' && s[i] <= 'Z' ? (char) (s[i] - 'A' + 'a') : s[i];
        if (n > 1 && buf[n - 1] == '.')
                n--;
        buf[n] = 0;
        return buf;
}

static int method_record(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        const char *ps[TLSRPT_POLICY_STRINGS_MAX], *mx[TLSRPT_MX_HOSTS_MAX];
        char domain_buf[TLSRPT_NAME_MAX + 2], mxname_buf[TLSRPT_NAME_MAX + 2];
        char mx_buf[TLSRPT_MX_HOSTS_MAX][TLSRPT_NAME_MAX + 2];
        const char *bad = NULL;
        json_object *v;
        int r;

        m->records_received++;
        TlsRptResult res = {
                .policy_domain = name_normalize(opt_string(params, "policyDomain"), domain_buf),
                .policy_type = tlsrpt_policy_type_from_string(opt_string(params, "policyType")),
                .policy_strings = ps,
                .mx_hosts = mx,
                .count = 1,
        };
        int64_t t = (int64_t) time(NULL);
        if (json_object_object_get_ex(params, "time", &v) && json_object_is_type(v, json_type_int))
                t = json_object_get_int64(v);
        if (t < 0) {
                bad = "time";
                goto refuse;
        }
        res.day = (uint32_t) (t / 86400);
        if (opt_strv(params, "policyStrings", ELEMENTSOF(ps), ps, &res.n_policy_strings) < 0) {
                bad = "policyStrings";
                goto refuse;
        }
        if (opt_strv(params, "mxHosts", ELEMENTSOF(mx), mx, &res.n_mx_hosts) < 0) {
                bad = "mxHosts";
                goto refuse;
        }
        for (size_t i = 0; i < res.n_mx_hosts; i++)
                mx[i] = name_normalize(mx[i], mx_buf[i]);
        bool success = json_object_get_boolean(json_object_object_get(params, "success"));
        res.kind = success ? TLSRPT_KIND_SUCCESS : TLSRPT_KIND_FAILURE;
        if (!success)
                res.detail = (TlsRptDetail) {
                        .result_type = opt_string(params, "resultType"),
                        .sending_ip = opt_string(params, "sendingMtaIp"),
                        .mx_hostname = name_normalize(opt_string(params, "receivingMxHostname"), mxname_buf),
                        .mx_helo = opt_string(params, "receivingMxHelo"),
                        .receiving_ip = opt_string(params, "receivingIp"),
                        .additional_info = opt_string(params, "additionalInformation"),
                        .reason_code = opt_string(params, "failureReasonCode"),
                };
        r = journal_record(m, &res, &bad);
        if (r == -EINVAL)
                goto refuse;
        if (r < 0) {
                m->records_refused++;
                if (r == -ESTALE)
                        m->late_results++;
                log_debug_errno(r, "Record for %s refused: %m", res.policy_domain ? res.policy_domain : "?");
                return varlink_error_errno(link, r);
        }
        return varlink_reply(link, NULL);
refuse:
        m->records_refused++;
        return varlink_error_invalid_parameter(link, bad ? bad : "parameters");
}

static uint64_t count_reports(Manager *m, ReportResult which) {
        uint64_t n = 0;
        for (size_t i = 0; i < m->n_reports; i++)
                n += m->reports[i]->result == which;
        return n;
}

static int method_get_status(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        uint32_t today = manager_today();
        TlsRptDay *d = tlsrpt_store_get_day(m->store, today);
        char day[11], summary[256];

        tlsrpt_day_to_string(today, day);
        json_object *p = json_object_new_object(), *pending = json_object_new_array();
        for (size_t i = 0; i < m->store->n_days; i++)
                if (m->store->days[i]->day != today) {
                        char s[11];
                        tlsrpt_day_to_string(m->store->days[i]->day, s);
                        json_object_array_add(pending, json_object_new_string(s));
                }
        uint64_t sent = count_reports(m, REPORT_SENT), failed = count_reports(m, REPORT_FAILED);
        uint64_t in_flight = count_reports(m, REPORT_LOOKUP) + count_reports(m, REPORT_SENDING);
        snprintf(summary, sizeof summary, "%zu domains, %llu sessions today; %llu reports sent, %llu failed",
                 d ? d->n_domains : 0, (unsigned long long) (d ? d->sessions : 0), (unsigned long long) sent,
                 (unsigned long long) failed);
        json_object_object_add(p, "summary", json_object_new_string(summary));
        json_object_object_add(p, "version", json_object_new_string(HALYARD_VERSION));
        json_object_object_add(p, "day", json_object_new_string(day));
        json_object_object_add(p, "domains", json_object_new_int64(d ? (int64_t) d->n_domains : 0));
        json_object_object_add(p, "sessions", json_object_new_int64(d ? (int64_t) d->sessions : 0));
        json_object_object_add(p, "successes", json_object_new_int64(d ? (int64_t) d->successes : 0));
        json_object_object_add(p, "failures", json_object_new_int64(d ? (int64_t) d->failures : 0));
        json_object_object_add(p, "daysPending", pending);
        json_object_object_add(p, "recordsReceived", json_object_new_int64((int64_t) m->records_received));
        json_object_object_add(p, "recordsSynced", json_object_new_int64((int64_t) m->records_synced));
        json_object_object_add(p, "recordsRefused", json_object_new_int64((int64_t) m->records_refused));
        json_object_object_add(p, "detailsOverflowed", json_object_new_int64((int64_t) m->store->details_overflowed));
        json_object_object_add(p, "journalSyncs", json_object_new_int64((int64_t) m->journal_syncs));
        json_object_object_add(p, "compactions", json_object_new_int64((int64_t) m->compactions));
        json_object_object_add(p, "reportsSent", json_object_new_int64((int64_t) sent));
        json_object_object_add(p, "reportsFailed", json_object_new_int64((int64_t) failed));
        json_object_object_add(p, "reportsPending", json_object_new_int64((int64_t) in_flight));
        int r = varlink_reply(link, p);
        json_object_put(p);
        return r;
}

static int parse_day_param(Varlink *link, json_object *params, uint32_t *ret, bool *ret_given) {
        const char *s = opt_string(params, "day");
        *ret_given = s != NULL;
        if (!s) {
                *ret = manager_today();
                return 0;
        }
        if (tlsrpt_day_from_string(s, ret) < 0) {
                json_object *p = json_object_new_object();
                json_object_object_add(p, "day", json_object_new_string(s));
                (void) varlink_error(link, "io.halyard.TlsRpt.InvalidDay", p);
                json_object_put(p);
                return -EINVAL;
        }
        return 0;
}

static int method_preview(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        const char *domain = opt_string(params, "policyDomain");
        uint32_t day;
        bool given;
        if (!domain)
                return varlink_error_invalid_parameter(link, "policyDomain");
        if (parse_day_param(link, params, &day, &given) < 0)
                return 0;
        json_object *report = NULL;
        int r = reports_preview(m, domain, day, &report);
        if (r == -ENOENT) {
                char d[11];
                tlsrpt_day_to_string(day, d);
                json_object *p = json_object_new_object();
                json_object_object_add(p, "policyDomain", json_object_new_string(domain));
                json_object_object_add(p, "day", json_object_new_string(d));
                r = varlink_error(link, "io.halyard.TlsRpt.NoResults", p);
                json_object_put(p);
                return r;
        }
        if (r < 0)
                return r;
        json_object *p = json_object_new_object();
        json_object_object_add(p, "report", report);
        r = varlink_reply(link, p);
        json_object_put(p);
        return r;
}

static int method_send_reports(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        uint32_t day;
        bool given;
        if (parse_day_param(link, params, &day, &given) < 0)
                return 0;
        if (given && day > manager_today()) {
                json_object *p = json_object_new_object();
                json_object_object_add(p, "day", json_object_get(json_object_object_get(params, "day")));
                int r = varlink_error(link, "io.halyard.TlsRpt.InvalidDay", p);
                json_object_put(p);
                return r;
        }
        return reports_send(m, link, given ? &day : NULL);
}

static int method_list_reports(Varlink *link, json_object *params, VarlinkCallFlags flags, void *userdata) {
        Manager *m = userdata;
        json_object *p = json_object_new_object(), *a = json_object_new_array();
        for (size_t i = 0; i < m->n_reports; i++)
                json_object_array_add(a, report_to_json(m->reports[i]));
        json_object_object_add(p, "reports", a);
        int r = varlink_reply(link, p);
        json_object_put(p);
        return r;
}

int tlsrptd_varlink_setup(Manager *m) {
        static const VarlinkMethodBinding methods[] = {
                { "io.halyard.TlsRpt.Record", method_record },
                { "io.halyard.TlsRpt.GetStatus", method_get_status },
                { "io.halyard.TlsRpt.Preview", method_preview },
                { "io.halyard.TlsRpt.SendReports", method_send_reports },
                { "io.halyard.TlsRpt.ListReports", method_list_reports },
        };
        return varlink_server_new_service(m->event, "halyard-tlsrptd", io_halyard_TlsRpt_varlink,
                                          methods, ELEMENTSOF(methods), m, &m->varlink);
}
