/* SPDX-License-Identifier: MIT */
/* policy-bench: what evaluating the policy costs per phase, without I/O.
 *
 *   policy-bench POLICY [RUNS] [PHASE]
 *
 * Loads (compiles) POLICY once, then for each phase (or only PHASE) runs the
 * handler RUNS times with fixed facts, straight on the VM: policy_run_new(),
 * steps, answers to suspended calls from a table (as an embedder whose
 * lookups answer at once), policy_run_free(). One shared PolicyCache, so a
 * `cache`d lookup misses on the warm-up run and hits afterwards. Prints one
 * line per phase: ns per run (median of 5 rounds), VM steps per run,
 * suspensions per run, the verdict. Run by hand (tests/bench/run-policy-bench),
 * never from `meson test`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy-mock.h"
#include "policy.h"

#define ROUNDS 5

/* What the policy's lookups answer. The directory says 200 for everyone. */
static const char mocks_json[] =
        "[{\"call\": \"http\", \"result\": {\"status\": 200}},"
        " {\"call\": \"ScanSA\", \"result\": 2.5},"
        " {\"call\": \"dnsbl\", \"result\": {\"listed\": false}}]";

/* Facts as halyard-smtpd builds them for a client that is not trusted. */
static const char facts_json[] =
        "{\"connection\": {\"id\": \"s1\", \"remoteip\": \"192.0.2.7\", \"remoteport\": 40000,"
        "  \"localip\": \"127.0.0.1\", \"localport\": 25, \"serverid\": \"mx.bench.test\", \"listener\": \"smtp\","
        "  \"helo\": {\"verb\": \"EHLO\", \"host\": \"client.sender.example\"}},"
        " \"transaction\": {\"sender\": {\"address\": \"alice@sender.example\", \"localpart\": \"alice\","
        "  \"domain\": \"sender.example\"}, \"recipients\": [{\"address\": \"bob@bench.test\", \"localpart\": \"bob\", \"domain\": \"bench.test\"},"
        " {\"address\": \"carol@example.net\", \"localpart\": \"carol\", \"domain\": \"example.net\"}]},"
        " \"context\": {}}";

static const char *const args_json[_POLICY_PHASE_MAX] = {
        [POLICY_PHASE_CONNECT] = "{\"remoteip\": \"192.0.2.7\", \"remoteport\": 40000}",
        [POLICY_PHASE_HELO] = "{\"verb\": \"EHLO\", \"host\": \"client.sender.example\"}",
        [POLICY_PHASE_MAILFROM] = "{\"address\": {\"address\": \"alice@sender.example\", \"localpart\": \"alice\","
                                  " \"domain\": \"sender.example\"}}",
        [POLICY_PHASE_RCPTTO] = "{\"address\": {\"address\": \"Dave@Bench.test\", \"localpart\": \"Dave\","
                                " \"domain\": \"Bench.test\"}}",
        [POLICY_PHASE_EOD] = "{\"mail\": {\"headers\": [[\"Received\", \"from client.sender.example ([192.0.2.7])\"],"
                             " [\"From\", \"Alice <alice@sender.example>\"], [\"To\", \"bob@bench.test\"],"
                             " [\"Subject\", \"[BULK] quarterly numbers\"], [\"Date\", \"Fri, 27 Nov 2026 10:00:00 +0000\"],"
                             " [\"Message-ID\", \"<1@sender.example>\"], [\"MIME-Version\", \"1.0\"],"
                             " [\"Content-Type\", \"text/plain\"]]}}",
};

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

/* One run to the end; the result's verdict, steps and suspensions. */
static int run_once(PolicyGeneration *g, PolicyPhase phase, const PolicyRunParams *p, PolicyMock *mock,
                    PolicyVerdict *ret_verdict, uint64_t *ret_steps, unsigned *ret_suspended) {
        PolicyRun *run = NULL;
        unsigned suspended = 0;
        int r = policy_run_new(g, phase, p, &run);
        if (r < 0)
                return r;
        for (;;) {
                r = policy_run_step(run);
                if (r < 0 || r == POLICY_RUN_DONE)
                        break;
                suspended++;
                PolicyValue *v = NULL;
                r = policy_mock_answer(mock, policy_run_pending(run), &v);
                if (r >= 0)
                        r = policy_run_resume(run, v);
                policy_value_unref(v);
                if (r < 0)
                        break;
        }
        /* A lookup without a mock leaves the run unfinished: no result. */
        const PolicyResult *res = r >= 0 ? policy_run_result(run) : NULL;
        if (!res) {
                fprintf(stderr, "%s: %s\n", policy_phase_to_string(phase),
                        r < 0 ? strerror(-r) : "the run did not finish");
                policy_run_free(run);
                return r < 0 ? r : -EINVAL;
        }
        if (res->failed) {
                fprintf(stderr, "%s: %s\n", policy_phase_to_string(phase), res->error ?: "failed");
                r = -EINVAL;
        }
        *ret_verdict = res->verdict;
        *ret_steps = res->steps;
        *ret_suspended = suspended;
        policy_run_free(run);
        return r < 0 ? r : 0;
}

int main(int argc, char **argv) {
        if (argc < 2) {
                fprintf(stderr, "usage: policy-bench POLICY [RUNS] [PHASE]\n");
                return 2;
        }
        unsigned long runs = argc > 2 ? strtoul(argv[2], NULL, 10) : 100000;
        PolicyPhase only = argc > 3 ? policy_phase_from_string(argv[3]) : (PolicyPhase) -1;
        if (runs < 1 || (argc > 3 && only < 0)) {
                fprintf(stderr, "bad RUNS or PHASE\n");
                return 2;
        }

        PolicyDiags diags = {};
        PolicyGeneration *g = NULL;
        uint64_t t0 = now_ns();
        int r = policy_generation_load(argv[1], NULL, &diags, &g);
        uint64_t load_ns = now_ns() - t0;
        policy_diags_print(&diags, stderr);
        policy_diags_done(&diags);
        if (r < 0)
                return 1;

        json_object *mocks = json_tokener_parse(mocks_json), *facts = json_tokener_parse(facts_json);
        PolicyMock *mock = NULL;
        PolicyCache *cache = NULL;
        if (!mocks || !facts || policy_mock_new(mocks, &mock) < 0 || policy_cache_new(&cache) < 0)
                return 1;
        printf("policy %s: loaded and compiled in %.1f us\n", argv[1], load_ns / 1000.0);
        printf("%-10s %10s %8s %10s %s\n", "phase", "ns/run", "steps", "suspended", "verdict");

        static const PolicyPhase phases[] = { POLICY_PHASE_CONNECT, POLICY_PHASE_HELO, POLICY_PHASE_MAILFROM,
                                              POLICY_PHASE_RCPTTO, POLICY_PHASE_EOD };
        for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++) {
                PolicyPhase ph = phases[i];
                if (only >= 0 && ph != only)
                        continue;
                if (!policy_generation_has_handler(g, ph))
                        continue;
                json_object *fx = json_tokener_parse(facts_json), *a = json_tokener_parse(args_json[ph]);
                json_object_object_add(fx, "arguments", a);
                PolicyRunParams p = { .cache = cache };
                if (policy_mock_params_from_json(fx, ph, &p) < 0)
                        return 1;
                json_object_put(fx);

                PolicyVerdict v;
                uint64_t steps;
                unsigned susp;
                /* warm-up: fills the cache */
                if (run_once(g, ph, &p, mock, &v, &steps, &susp) < 0)
                        return 1;
                uint64_t per[ROUNDS];
                unsigned long per_round = (runs + ROUNDS - 1) / ROUNDS;
                unsigned long total_susp = 0;
                for (int k = 0; k < ROUNDS; k++) {
                        uint64_t s = now_ns();
                        for (unsigned long n = 0; n < per_round; n++) {
                                if (run_once(g, ph, &p, mock, &v, &steps, &susp) < 0)
                                        return 1;
                                total_susp += susp;
                        }
                        per[k] = (now_ns() - s) / per_round;
                }
                qsort(per, ROUNDS, sizeof per[0], cmp_u64);
                printf("%-10s %10llu %8llu %10.2f %s  (rounds %llu..%llu ns)\n", policy_phase_to_string(ph),
                       (unsigned long long) per[ROUNDS / 2], (unsigned long long) steps,
                       (double) total_susp / (double) (per_round * ROUNDS), policy_verdict_to_string(v),
                       (unsigned long long) per[0], (unsigned long long) per[ROUNDS - 1]);
                policy_mock_params_done(&p);
        }
        json_object_put(mocks);
        json_object_put(facts);
        policy_cache_free(cache);
        policy_mock_free(mock);
        policy_generation_unref(g);
        return 0;
}
