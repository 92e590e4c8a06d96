/* SPDX-License-Identifier: MIT */
/* `halyardctl policy …`: the policy running in halyard-smtpd.
 *   cache list              the `cache` statement's buckets, with hits and misses
 *   cache clear [NAMESPACE] drop cached results (of one namespace, or all)
 *   trace [ADDRESS [on|off]] log the policy's lookups and verdicts for a client */
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "macro.h"
#include "varlink.h"

static int smtpd_call(const CtlOptions *o, const char *method, json_object *params, json_object **ret) {
        _cleanup_(varlink_unrefp) Varlink *link = NULL;
        char address[512];
        const char *error = NULL;
        json_object *reply = NULL;

        snprintf(address, sizeof address, "unix:%s/io.halyard.Smtpd", o->runtime_dir);
        int r = varlink_connect_address(NULL, address, &link);
        if (r < 0) {
                fprintf(stderr, "Failed to connect to halyard-smtpd (%s): %s\n", address, strerror(-r));
                return CTL_EXIT_NOT_RUNNING;
        }
        if (o->timeout_usec > 0)
                varlink_set_timeout(link, o->timeout_usec);
        r = varlink_call_sync(link, method, params, 0, &reply, &error);
        if (r < 0 || error) {
                fprintf(stderr, "%s failed: %s\n", method, r < 0 ? strerror(-r) : error);
                return CTL_EXIT_FAILURE;
        }
        *ret = json_object_get(reply); /* the link owns the borrowed reply */
        return 0;
}

static int cache_list(const CtlOptions *o) {
        json_object *reply = NULL;
        int r = smtpd_call(o, "io.halyard.Smtpd.PolicyCacheList", NULL, &reply);
        if (r != 0)
                return r;
        json_object *buckets = json_object_object_get(reply, "buckets");
        if (o->json_set) {
                ctl_print_json(o, reply);
                json_object_put(reply);
                return 0;
        }
        printf("%-20s %-24s %8s %8s %10s %10s %8s\n", "NAMESPACE", "FUNCTION", "SIZE", "MAX", "HITS", "MISSES", "EVICTS");
        for (size_t i = 0; i < json_object_array_length(buckets); i++) {
                json_object *b = json_object_array_get_idx(buckets, i);
                const char *ns = json_object_get_string(json_object_object_get(b, "namespace"));
                printf("%-20s %-24s %8lld %8lld %10lld %10lld %8lld\n", ns && *ns ? ns : "-",
                       json_object_get_string(json_object_object_get(b, "function")),
                       (long long) json_object_get_int64(json_object_object_get(b, "size")),
                       (long long) json_object_get_int64(json_object_object_get(b, "maxSize")),
                       (long long) json_object_get_int64(json_object_object_get(b, "hits")),
                       (long long) json_object_get_int64(json_object_object_get(b, "misses")),
                       (long long) json_object_get_int64(json_object_object_get(b, "evicts")));
        }
        printf("-- %zu bucket%s\n", json_object_array_length(buckets), json_object_array_length(buckets) == 1 ? "" : "s");
        json_object_put(reply);
        return 0;
}

static int cache_clear(const CtlOptions *o, const char *namespace) {
        json_object *params = json_object_new_object(), *reply = NULL;
        if (namespace)
                json_object_object_add(params, "namespace", json_object_new_string(namespace));
        int r = smtpd_call(o, "io.halyard.Smtpd.PolicyCacheClear", params, &reply);
        json_object_put(params);
        json_object_put(reply);
        if (r == 0)
                printf("Cleared %s\n", namespace ? namespace : "every namespace");
        return r;
}

static int trace(const CtlOptions *o, const char *address, const char *onoff) {
        json_object *params = json_object_new_object(), *reply = NULL;
        if (address) {
                json_object_object_add(params, "address", json_object_new_string(address));
                json_object_object_add(params, "enabled", json_object_new_boolean(!onoff || strcmp(onoff, "off") != 0));
        }
        int r = smtpd_call(o, "io.halyard.Smtpd.PolicyTrace", params, &reply);
        json_object_put(params);
        if (r == 0) {
                json_object *list = json_object_object_get(reply, "addresses");
                printf("Tracing the policy for: ");
                for (size_t i = 0; i < json_object_array_length(list); i++)
                        printf("%s%s", i ? " " : "", json_object_get_string(json_object_array_get_idx(list, i)));
                printf("%s\n", json_object_array_length(list) ? "" : "nobody");
        }
        json_object_put(reply);
        return r;
}

int verb_policy(const CtlOptions *o, int argc, char **argv) {
        if (argc >= 1 && strcmp(argv[0], "trace") == 0 && argc <= 3 &&
            (argc < 3 || strcmp(argv[2], "on") == 0 || strcmp(argv[2], "off") == 0))
                return trace(o, argc > 1 ? argv[1] : NULL, argc > 2 ? argv[2] : NULL);
        if (argc >= 2 && strcmp(argv[0], "cache") == 0) {
                if (strcmp(argv[1], "list") == 0 && argc == 2)
                        return cache_list(o);
                if (strcmp(argv[1], "clear") == 0 && argc <= 3)
                        return cache_clear(o, argc == 3 ? argv[2] : NULL);
        }
        fprintf(stderr, "Usage: halyardctl policy cache list | policy cache clear [NAMESPACE]\n"
                        "       halyardctl policy trace [ADDRESS [on|off]]\n");
        return CTL_EXIT_USAGE;
}
