/* SPDX-License-Identifier: MIT */
/* io.halyard.Smtpd on the fd systemd names "varlink". */
#include <stdio.h>

#include "io.halyard.Smtpd.varlink.h"
#include "smtpd.h"

static int method_get_status(Varlink *link, json_object *parameters, VarlinkCallFlags flags, void *userdata) {
        Manager *m = varlink_server_get_userdata(varlink_get_server(link));
        json_object *p = json_object_new_object(), *ls = json_object_new_array(), *rj = json_object_new_array();
        char summary[200];

        snprintf(summary, sizeof summary, "%u sessions, %llu messages accepted", m->n_sessions,
                 (unsigned long long) m->n_accepted);
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
        json_object_object_add(p, "sessionsTotal", json_object_new_int64((int64_t) m->n_sessions_total));
        json_object_object_add(p, "tlsSessions", json_object_new_int64((int64_t) m->n_tls_sessions));
        json_object_object_add(p, "tlsShare", json_object_new_double(
                m->n_sessions_total ? (double) m->n_tls_sessions / (double) m->n_sessions_total : 0.0));
        json_object_object_add(p, "messagesAccepted", json_object_new_int64((int64_t) m->n_accepted));
        for (unsigned r = 0; r < _REJECT_MAX; r++) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "reason", json_object_new_string(reject_reason_to_string(r)));
                json_object_object_add(o, "count", json_object_new_int64((int64_t) m->rejects[r]));
                json_object_array_add(rj, o);
        }
        json_object_object_add(p, "rejects", rj);
        int r = varlink_reply(link, p);
        json_object_put(p);
        return r;
}

int smtpd_varlink_setup(Manager *m) {
        static const VarlinkServerInfo info = {
                .vendor = "halyard",
                .product = "halyard-smtpd",
                .version = HALYARD_VERSION,
                .url = "",
        };
        int r = varlink_server_new(m->event, &info, &m->varlink);
        if (r < 0)
                return r;
        varlink_server_set_userdata(m->varlink, m);
        r = varlink_server_add_interface(m->varlink, io_halyard_Smtpd_varlink);
        if (r < 0)
                return r;
        return varlink_server_bind(m->varlink, "io.halyard.Smtpd.GetStatus", method_get_status);
}
