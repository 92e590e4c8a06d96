/* SPDX-License-Identifier: MIT */
/* Runs SPF checks described as JSON, one per input line, against a DNS
 * table (spf-fake-dns.h), for check-spf-suite.py (the RFC 7208 test suite
 * and the comparison with pyspf):
 *
 *   {"zone": [[NAME, TYPE, VALUE, PREF], ...], "ip": "1.2.3.4",
 *    "helo": "...", "mailfrom": "...", "receiver": "...", "now": N}
 *
 * TYPE is "A", "AAAA", "MX", "PTR", "TXT", "CNAME" or "TIMEOUT". Each line
 * of output is {"result", "explanation", "reason", "lookups", "void_lookups"}
 * or {"error": "..."}. */

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "spf-fake-dns.h"
#include "spf.h"

static const char *str(json_object *o, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return NULL;
        return json_object_get_string(v);
}

static uint16_t type_from(const char *t) {
        static const struct {
                const char *name;
                uint16_t type;
        } types[] = {
                { "A", DNS_TYPE_A },     { "AAAA", DNS_TYPE_AAAA }, { "MX", DNS_TYPE_MX },
                { "PTR", DNS_TYPE_PTR }, { "TXT", DNS_TYPE_TXT },   { "CNAME", DNS_TYPE_CNAME },
                { "TIMEOUT", FAKE_TIMEOUT },
        };
        for (size_t i = 0; t && i < ELEMENTSOF(types); i++)
                if (strcmp(t, types[i].name) == 0)
                        return types[i].type;
        return 0;
}

static json_object *run_one(json_object *in) {
        json_object *zone_j, *out = json_object_new_object();
        if (!json_object_object_get_ex(in, "zone", &zone_j) || !json_object_is_type(zone_j, json_type_array)) {
                json_object_object_add(out, "error", json_object_new_string("no zone"));
                return out;
        }
        size_t n = json_object_array_length(zone_j);
        _cleanup_free_ FakeRR *zone = calloc(n + 1, sizeof(FakeRR));
        if (!zone)
                abort();
        for (size_t i = 0; i < n; i++) {
                json_object *rr = json_object_array_get_idx(zone_j, i);
                zone[i].name = json_object_get_string(json_object_array_get_idx(rr, 0));
                zone[i].type = type_from(json_object_get_string(json_object_array_get_idx(rr, 1)));
                json_object *v = json_object_array_get_idx(rr, 2);
                zone[i].value = json_object_get_string(v) ?: "";
                zone[i].value_len = v ? (size_t) json_object_get_string_len(v) : 0;
                zone[i].pref = (uint16_t) json_object_get_int(json_object_array_get_idx(rr, 3));
                if (!zone[i].name)
                        zone[i].name = "";
        }
        json_object *now_j;
        SpfParams p = {
                .client_ip = str(in, "ip"),
                .helo = str(in, "helo"),
                .mail_from = str(in, "mailfrom"),
                .receiver = str(in, "receiver"),
                .now = json_object_object_get_ex(in, "now", &now_j) ? (uint64_t) json_object_get_int64(now_j) : 1,
        };
        SpfCheck *c = NULL;
        int r = fake_check(zone, n, &p, &c, NULL);
        if (r < 0) {
                json_object_object_add(out, "error", json_object_new_string(strerror(-r)));
                return out;
        }
        const SpfResult *res;
        if (spf_check_result(c, &res) < 0)
                abort();
        json_object_object_add(out, "result", json_object_new_string(spf_result_to_string(res->result)));
        json_object_object_add(out, "explanation",
                               res->explanation ? json_object_new_string(res->explanation) : NULL);
        json_object_object_add(out, "reason", json_object_new_string(res->reason ?: ""));
        json_object_object_add(out, "identity", json_object_new_string(res->identity ?: ""));
        json_object_object_add(out, "sender", json_object_new_string(res->sender ?: ""));
        json_object_object_add(out, "lookups", json_object_new_int((int) res->lookups));
        json_object_object_add(out, "void_lookups", json_object_new_int((int) res->void_lookups));
        spf_check_free(c);
        return out;
}

int main(void) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;

        while ((len = getline(&line, &cap, stdin)) > 0) {
                json_object *in = json_tokener_parse(line);
                json_object *out;
                if (!in) {
                        out = json_object_new_object();
                        json_object_object_add(out, "error", json_object_new_string("bad JSON"));
                } else
                        out = run_one(in);
                printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
                fflush(stdout);
                json_object_put(out);
                json_object_put(in);
        }
        free(line);
        return 0;
}
