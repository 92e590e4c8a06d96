/* SPDX-License-Identifier: MIT */
/* TLS results of delivery sessions: one journal entry each
 * (HALYARD_TLS_POLICY, HALYARD_TLS_RESULT) and a oneway
 * io.halyard.TlsRpt.Record call to halyard-tlsrptd ([Queue] TlsRpt=, default
 * unix:/run/halyard/io.halyard.TlsRpt). The call never holds up delivery:
 * the connection is made once and kept; when the service is not there the
 * result is dropped with a debug message, and a later result tries again.
 * Output towards a peer that does not read is bounded by the varlink
 * library's own send buffer limit (the connection is dropped then). */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "queued-tls.h"
#include "queued.h"

#define LOG_MESSAGE_TLS_RESULT "7c1e0b5a3d2f4e6c8a9b0c1d2e3f4a60"

static void tlsrpt_send(Manager *m, const TlsResult *res) {
        if (!m->tlsrpt_address || !*m->tlsrpt_address)
                return;
        if (m->tlsrpt_link && !varlink_is_connected(m->tlsrpt_link))
                m->tlsrpt_link = varlink_unref(m->tlsrpt_link);
        if (!m->tlsrpt_link) {
                int r = varlink_connect_address(m->event, m->tlsrpt_address, &m->tlsrpt_link);
                if (r < 0) {
                        m->tlsrpt_link = NULL;
                        log_debug_errno(r, "TLS reporting service %s not reachable, result dropped: %m", m->tlsrpt_address);
                        return;
                }
        }
        json_object *p = tls_result_to_json(res);
        if (!p)
                return;
        int r = varlink_invoke(m->tlsrpt_link, "io.halyard.TlsRpt.Record", p, VARLINK_CALL_ONEWAY, NULL, NULL);
        json_object_put(p);
        if (r < 0) {
                log_debug_errno(r, "Failed to send a TLS result to %s, dropped: %m", m->tlsrpt_address);
                m->tlsrpt_link = varlink_unref(m->tlsrpt_link);
        }
}

void tlsrpt_record(Manager *m, const char *queue_id, bool send, const TlsResult *res) {
        char f_id[64], f_policy[400], f_result[80], f_mx[300], f_reason[400];
        const char *type = tls_policy_type_to_string(res->policy_type);
        const char *result = res->result == TLS_RESULT_NONE ? "success" : tls_result_type_to_string(res->result);
        char reason[300];

        log_escape(res->failure_reason ? res->failure_reason : "", res->failure_reason ? strlen(res->failure_reason) : 0,
                   reason, sizeof reason);
        snprintf(f_id, sizeof f_id, "HALYARD_QUEUE_ID=%s", queue_id);
        snprintf(f_policy, sizeof f_policy, "HALYARD_TLS_POLICY=%s %.300s", type, res->policy_domain ? res->policy_domain : "");
        snprintf(f_result, sizeof f_result, "HALYARD_TLS_RESULT=%s", result);
        snprintf(f_mx, sizeof f_mx, "HALYARD_TLS_MX=%.255s", res->mx_host ? res->mx_host : "");
        snprintf(f_reason, sizeof f_reason, "HALYARD_TLS_REASON=%s", reason);
        log_event(res->result == TLS_RESULT_NONE ? LOG_INFO : LOG_NOTICE, LOG_MESSAGE_TLS_RESULT,
                  (const char *[]){ f_id, f_policy, f_result, f_mx, f_reason, NULL },
                  "%s: TLS result: policy=%s domain=%.255s mx=%.255s ip=%s result=%s%s%s%s", queue_id, type,
                  res->policy_domain ? res->policy_domain : "", res->mx_host ? res->mx_host : "-",
                  res->receiving_ip ? res->receiving_ip : "-", result, reason[0] ? " (" : "", reason,
                  reason[0] ? ")" : "");
        if (send)
                tlsrpt_send(m, res);
}
