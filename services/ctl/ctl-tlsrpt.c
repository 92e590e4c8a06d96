/* SPDX-License-Identifier: MIT */
/* `halyardctl tlsrpt …`: halyard-tlsrptd's TLS reporting (RFC 8460).
 *   status                 results collected today, reports sent/failed
 *   preview DOMAIN [DAY]   the report JSON that would be sent now
 *   reports                reports built so far and where they went
 *   send [DAY]             build and send the reports of the complete days
 *                          (or of DAY), what halyard-tlsrptd.timer runs */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "macro.h"
#include "varlink.h"

/* SendReports waits for DNS and the first delivery attempts. */
#define SEND_TIMEOUT_USEC (10ULL * 60 * 1000000)

static int tlsrpt_call(const CtlOptions *o, const char *method, json_object *params, uint64_t timeout,
                       Varlink **link, json_object **ret) {
        char address[512], full[128];
        const char *error = NULL;
        snprintf(address, sizeof address, "unix:%s/io.halyard.TlsRpt", o->runtime_dir);
        int r = varlink_connect_address(NULL, address, link);
        if (r < 0) {
                fprintf(stderr, "Failed to connect to halyard-tlsrptd (%s): %s\n", address, strerror(-r));
                return CTL_EXIT_NOT_RUNNING;
        }
        varlink_set_timeout(*link, o->timeout_usec > 0 ? o->timeout_usec : timeout);
        snprintf(full, sizeof full, "io.halyard.TlsRpt.%s", method);
        r = varlink_call_sync(*link, full, params, 0, ret, &error);
        if (r < 0) {
                fprintf(stderr, "%s failed: %s\n", method, strerror(-r));
                return CTL_EXIT_FAILURE;
        }
        if (error) {
                if (strcmp(error, "io.halyard.TlsRpt.NoResults") == 0)
                        fprintf(stderr, "No results for %s on %s\n",
                                json_object_get_string(json_object_object_get(*ret, "policyDomain")),
                                json_object_get_string(json_object_object_get(*ret, "day")));
                else if (strcmp(error, "io.halyard.TlsRpt.InvalidDay") == 0)
                        fprintf(stderr, "Invalid day: %s (YYYY-MM-DD, not in the future)\n",
                                json_object_get_string(json_object_object_get(*ret, "day")));
                else
                        fprintf(stderr, "%s failed: %s %s\n", method, error,
                                json_object_to_json_string_ext(*ret, JSON_C_TO_STRING_PLAIN));
                return CTL_EXIT_FAILURE;
        }
        return 0;
}

static long long get_int(json_object *o, const char *key) {
        return (long long) json_object_get_int64(json_object_object_get(o, key));
}

static const char *get_str(json_object *o, const char *key) {
        const char *s = json_object_get_string(json_object_object_get(o, key));
        return s ? s : "";
}

static void print_reports(json_object *reports) {
        size_t n = json_object_array_length(reports);
        printf("%-10s %-30s %-9s %s\n", "DAY", "POLICY DOMAIN", "RESULT", "REPORT-ID / DESTINATIONS");
        for (size_t i = 0; i < n; i++) {
                json_object *r = json_object_array_get_idx(reports, i), *dests = json_object_object_get(r, "destinations");
                const char *detail = get_str(r, "detail");
                printf("%-10s %-30s %-9s %s%s%s\n", get_str(r, "day"), get_str(r, "policyDomain"), get_str(r, "result"),
                       get_str(r, "reportId"), *detail ? ": " : "", detail);
                for (size_t k = 0; k < json_object_array_length(dests); k++) {
                        json_object *d = json_object_array_get_idx(dests, k);
                        const char *dd = get_str(d, "detail");
                        printf("%52s%s %s (%lld attempts)%s%s\n", "", get_str(d, "uri"), get_str(d, "status"),
                               get_int(d, "attempts"), *dd ? ": " : "", dd);
                }
        }
        printf("-- %zu report%s\n", n, n == 1 ? "" : "s");
}

int verb_tlsrpt(const CtlOptions *o, int argc, char **argv) {
        _cleanup_(varlink_unrefp) Varlink *link = NULL;
        json_object *reply = NULL, *params = NULL;
        const char *verb = argc > 0 ? argv[0] : NULL;
        int r;

        if (verb && strcmp(verb, "status") == 0 && argc == 1) {
                if ((r = tlsrpt_call(o, "GetStatus", NULL, 45ULL * 1000000, &link, &reply)))
                        return r;
                if (o->json_set) {
                        ctl_print_json(o, reply);
                        return CTL_EXIT_OK;
                }
                json_object *pending = json_object_object_get(reply, "daysPending");
                printf("Day (UTC):        %s\n", get_str(reply, "day"));
                printf("Domains today:    %lld\n", get_int(reply, "domains"));
                printf("Sessions today:   %lld (%lld successful, %lld failed)\n", get_int(reply, "sessions"),
                       get_int(reply, "successes"), get_int(reply, "failures"));
                printf("Days to report:   ");
                for (size_t i = 0; i < json_object_array_length(pending); i++)
                        printf("%s%s", i ? " " : "", json_object_get_string(json_object_array_get_idx(pending, i)));
                printf("%s\n", json_object_array_length(pending) ? "" : "none");
                printf("Results:          %lld received, %lld on disk, %lld refused, %lld details over the cap\n",
                       get_int(reply, "recordsReceived"), get_int(reply, "recordsSynced"), get_int(reply, "recordsRefused"),
                       get_int(reply, "detailsOverflowed"));
                printf("Reports:          %lld sent, %lld failed, %lld in progress\n", get_int(reply, "reportsSent"),
                       get_int(reply, "reportsFailed"), get_int(reply, "reportsPending"));
                return CTL_EXIT_OK;
        }
        if (verb && strcmp(verb, "preview") == 0 && (argc == 2 || argc == 3)) {
                params = json_object_new_object();
                json_object_object_add(params, "policyDomain", json_object_new_string(argv[1]));
                if (argc == 3)
                        json_object_object_add(params, "day", json_object_new_string(argv[2]));
                r = tlsrpt_call(o, "Preview", params, 45ULL * 1000000, &link, &reply);
                json_object_put(params);
                if (r)
                        return r;
                /* The report itself, pretty unless --json=short. */
                CtlOptions po = *o;
                if (!o->json_set)
                        po.json = JSON_PRETTY;
                ctl_print_json(&po, json_object_object_get(reply, "report"));
                return CTL_EXIT_OK;
        }
        if (verb && strcmp(verb, "reports") == 0 && argc == 1) {
                if ((r = tlsrpt_call(o, "ListReports", NULL, 45ULL * 1000000, &link, &reply)))
                        return r;
                if (o->json_set)
                        ctl_print_json(o, json_object_object_get(reply, "reports"));
                else
                        print_reports(json_object_object_get(reply, "reports"));
                return CTL_EXIT_OK;
        }
        if (verb && strcmp(verb, "send") == 0 && argc <= 2) {
                params = json_object_new_object();
                if (argc == 2)
                        json_object_object_add(params, "day", json_object_new_string(argv[1]));
                r = tlsrpt_call(o, "SendReports", params, SEND_TIMEOUT_USEC, &link, &reply);
                json_object_put(params);
                if (r)
                        return r;
                if (o->json_set)
                        ctl_print_json(o, json_object_object_get(reply, "reports"));
                else
                        print_reports(json_object_object_get(reply, "reports"));
                return CTL_EXIT_OK;
        }
        fprintf(stderr, "Usage: halyardctl tlsrpt status | preview DOMAIN [YYYY-MM-DD] | reports | send [YYYY-MM-DD]\n");
        return CTL_EXIT_USAGE;
}
