/* SPDX-License-Identifier: MIT */
/* Fuzzes the policy pipeline end to end: lexer, parser, checker and
 * compiler on the input as an entry file (bytes after a NUL, if any, are
 * the file "lib.hal" it may import), and, when it loads, a run of every
 * phase with a small step budget in which each suspended call is answered
 * with one of a few fixed values (none, an error map, a number, a map);
 * all phases run twice with one cache, so `cache` hits are exercised.
 * Load failures must come with at least one error diagnostic; runs must end
 * with a result, and a failed run must never be an accept. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Input {
        const char *entry;
        size_t entry_len;
        const char *lib;
        size_t lib_len;
} Input;

static int read_input(void *userdata, const char *path, size_t max, char **ret_text, size_t *ret_len) {
        const Input *in = userdata;
        const char *p;
        size_t n;

        if (strcmp(path, "fuzz.hal") == 0) {
                p = in->entry;
                n = in->entry_len;
        } else if (strcmp(path, "lib.hal") == 0 && in->lib) {
                p = in->lib;
                n = in->lib_len;
        } else
                return -ENOENT;
        if (n > max)
                return -EFBIG;
        char *t = malloc(n + 1);
        if (!t)
                return -ENOMEM;
        if (n > 0)
                memcpy(t, p, n);
        t[n] = 0;
        *ret_text = t;
        *ret_len = n;
        return 0;
}

static PolicyValue *answer(unsigned k) {
        PolicyValue *v;
        switch (k % 4) {
        case 0:
                return policy_none();
        case 1:
                v = policy_array_new();
                if (v) {
                        PolicyValue *e = policy_string_new_cstr("timeout");
                        if (!e || policy_array_set_str(v, "error", e) < 0)
                                v = policy_value_unref(v);
                        policy_value_unref(e);
                }
                return v;
        case 2:
                return policy_number_new(k);
        default:
                v = policy_array_new();
                if (v) {
                        if (policy_array_set_str(v, "listed", policy_bool(true)) < 0 ||
                            policy_array_set_str(v, "status", policy_bool(false)) < 0)
                                v = policy_value_unref(v);
                }
                return v;
        }
}

static void run_phase(PolicyGeneration *g, PolicyCache *cache, PolicyPhase phase, unsigned seed) {
        PolicyValue *conn = policy_array_new(), *args = policy_array_new(), *ip = policy_string_new_cstr("192.0.2.1"),
                    *hdrs = policy_array_new(), *payload = policy_array_new(), *mail = NULL;
        PolicyRun *r = NULL;

        if (!conn || !args || !ip || !hdrs || !payload)
                goto finish;
        if (policy_array_set_str(conn, "remoteip", ip) < 0 || policy_array_set_str(payload, "headers", hdrs) < 0)
                goto finish;
        mail = policy_object_new("Mail", payload);
        if (!mail || policy_array_set_str(args, "mail", mail) < 0)
                goto finish;

        PolicyRunParams p = {
                .connection = conn,
                .arguments = args,
                .step_budget = 20000,
                .memory_budget = 4 * 1024 * 1024,
                .cache = cache,
        };
        if (policy_run_new(g, phase, &p, &r) < 0)
                goto finish;
        for (unsigned calls = 0;; calls++) {
                int k = policy_run_step(r);
                if (k < 0 || k == POLICY_RUN_DONE)
                        break;
                if (calls > 64) {
                        (void) policy_run_abort(r, "fuzz: too many calls");
                        continue;
                }
                if (!policy_run_pending(r))
                        abort();
                PolicyValue *v = answer(seed + calls);
                (void) policy_run_resume(r, v);
                policy_value_unref(v);
        }
        const PolicyResult *res = policy_run_result(r);
        if (!res)
                abort();
        if (res->failed && res->verdict == POLICY_VERDICT_ACCEPT)
                abort();
        json_object *j = NULL;
        if (policy_result_to_json(res, &j) >= 0)
                json_object_put(j);
finish:
        policy_run_free(r);
        policy_value_unref(conn);
        policy_value_unref(args);
        policy_value_unref(ip);
        policy_value_unref(hdrs);
        policy_value_unref(payload);
        policy_value_unref(mail);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *nul = memchr(data, 0, size);
        Input in = {
                .entry = (const char *) data,
                .entry_len = nul ? (size_t) (nul - (const char *) data) : size,
        };
        if (nul) {
                in.lib = nul + 1;
                in.lib_len = size - in.entry_len - 1;
        }
        PolicyLoadOptions opts = { .read_file = read_input, .userdata = &in };
        PolicyDiags diags = {};
        PolicyGeneration *g = NULL;

        int r = policy_generation_load("fuzz.hal", &opts, &diags, &g);
        if (r == -EINVAL && diags.n_errors == 0)
                abort(); /* a refusal must say why */
        if (r >= 0) {
                PolicyCache *cache = NULL;
                if (policy_cache_new(&cache) >= 0) {
                        /* twice: the second round meets what the first cached */
                        for (int round = 0; round < 2; round++)
                                for (int p = 0; p < _POLICY_PHASE_MAX; p++)
                                        run_phase(g, cache, (PolicyPhase) p, (unsigned) size + (unsigned) p);
                        policy_cache_free(cache);
                }
                policy_generation_unref(g);
        }
        policy_diags_done(&diags);
        return 0;
}
