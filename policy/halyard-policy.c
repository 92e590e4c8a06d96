/* SPDX-License-Identifier: MIT */
/* halyard-policy: the policy language's tools.
 *
 *   check FILE...   load and check; diagnostics on stderr as
 *                   file:line:col: error: ...; exit 1 on any error
 *   run FILE --phase P --fixture F.json
 *                   run one phase with the facts and mocked lookups of the
 *                   fixture; print the result (verdict, actions, calls,
 *                   $context) as JSON on stdout
 *   builtins        print the builtin manifest as JSON
 *
 * Exit status: 0 success, 1 policy or fixture errors, 2 usage. */

#include <getopt.h>
#include <stdio.h>

#include "policy-builtins.h"
#include "policy-mock.h"
#include "policy.h"

static void help(void) {
        printf("Usage: halyard-policy COMMAND ...\n"
               "\n"
               "Commands:\n"
               "  check FILE...                        Check policies, print errors as file:line:col\n"
               "  run FILE --phase=P --fixture=JSON    Run one phase with mocked lookups, print the result\n"
               "  builtins                             Print the builtin manifest as JSON\n"
               "\n"
               "Options:\n"
               "  -h --help           Show this help\n"
               "     --version        Show the version\n"
               "  -p --phase=PHASE    connect, helo, auth, mailfrom, rcptto, eod or disconnect\n"
               "  -f --fixture=FILE   JSON: connection, transaction, arguments, context, mocks, step_budget\n"
               "  -q --quiet          check: no warnings\n");
}

/* Loads a policy; diagnostics go to stderr (warnings unless quiet). */
static int load(const char *path, bool quiet, PolicyGeneration **ret) {
        PolicyDiags diags = {};
        char buf[1024];
        int r = policy_generation_load(path, NULL, &diags, ret);

        for (size_t i = 0; i < diags.n; i++) {
                if (quiet && diags.items[i].level != POLICY_DIAG_ERROR)
                        continue;
                policy_diag_format(&diags.items[i], buf, sizeof buf);
                fprintf(stderr, "%s\n", buf);
        }
        if (diags.n_errors + diags.n_warnings > diags.n)
                fprintf(stderr, "(%u more diagnostics not shown)\n", diags.n_errors + diags.n_warnings - (unsigned) diags.n);
        if (r == -ENOMEM)
                fprintf(stderr, "%s: out of memory\n", path);
        else if (r < 0)
                fprintf(stderr, "%s: %u error%s\n", path, diags.n_errors, diags.n_errors == 1 ? "" : "s");
        policy_diags_done(&diags);
        return r;
}

static int verb_check(int argc, char **argv, bool quiet) {
        int ret = 0;
        if (argc < 1) {
                fprintf(stderr, "check: no file given\n");
                return 2;
        }
        for (int i = 0; i < argc; i++) {
                _cleanup_(policy_generation_unrefp) PolicyGeneration *g = NULL;
                if (load(argv[i], quiet, &g) < 0)
                        ret = 1;
        }
        return ret;
}

static int verb_run(const char *path, const char *phase_name, const char *fixture_path) {
        _cleanup_(policy_generation_unrefp) PolicyGeneration *g = NULL;
        _cleanup_(policy_mock_freep) PolicyMock *mock = NULL;
        _cleanup_(policy_run_freep) PolicyRun *run = NULL;
        _cleanup_(policy_json_putp) json_object *fixture = NULL, *out = NULL, *calls = NULL;
        PolicyRunParams params = {};
        json_object *j;
        int r;

        PolicyPhase phase = policy_phase_from_string(phase_name);
        if (phase < 0) {
                fprintf(stderr, "run: unknown phase '%s'\n", phase_name ?: "");
                return 2;
        }
        if (load(path, true, &g) < 0)
                return 1;
        if (fixture_path) {
                fixture = json_object_from_file(fixture_path);
                if (!fixture || !json_object_is_type(fixture, json_type_object)) {
                        fprintf(stderr, "%s: not a JSON object\n", fixture_path);
                        return 1;
                }
        }
        j = NULL;
        if (fixture)
                (void) json_object_object_get_ex(fixture, "mocks", &j);
        r = policy_mock_new(j, &mock);
        if (r < 0) {
                fprintf(stderr, "%s: bad \"mocks\": each needs \"call\", optional \"args\" (array), \"result\"\n",
                        fixture_path);
                return 1;
        }
        r = policy_mock_params_from_json(fixture, phase, &params);
        if (r < 0) {
                fprintf(stderr, "%s: bad facts: %s\n", fixture_path, strerror(-r));
                return 1;
        }
        if (fixture && json_object_object_get_ex(fixture, "step_budget", &j))
                params.step_budget = (uint64_t) MAX(json_object_get_int64(j), (int64_t) 1);

        r = policy_run_new(g, phase, &params, &run);
        policy_mock_params_done(&params);
        if (r < 0) {
                fprintf(stderr, "run: %s\n", strerror(-r));
                return 1;
        }
        calls = json_object_new_array();
        if (!calls)
                return 1;
        r = policy_mock_drive(mock, run, calls);
        if (r < 0) {
                fprintf(stderr, "run: %s\n", strerror(-r));
                return 1;
        }
        r = policy_result_to_json(policy_run_result(run), &out);
        if (r < 0)
                return 1;
        json_object_object_add(out, "calls", json_object_get(calls));
        j = NULL;
        if (policy_value_to_json(policy_run_context(run), &j) < 0)
                return 1;
        json_object_object_add(out, "context", j);
        printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                                   JSON_C_TO_STRING_NOSLASHESCAPE));
        return 0;
}

int main(int argc, char **argv) {
        enum { ARG_VERSION = 0x100 };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "phase", required_argument, NULL, 'p' },
                { "fixture", required_argument, NULL, 'f' },
                { "quiet", no_argument, NULL, 'q' },
                {}
        };
        const char *phase = NULL, *fixture = NULL;
        bool quiet = false;
        int c;

        while ((c = getopt_long(argc, argv, "hp:f:q", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("halyard-policy %s\n", HALYARD_VERSION);
                        return 0;
                case 'p':
                        phase = optarg;
                        break;
                case 'f':
                        fixture = optarg;
                        break;
                case 'q':
                        quiet = true;
                        break;
                default:
                        return 2;
                }
        if (optind >= argc) {
                help();
                return 2;
        }
        const char *verb = argv[optind++];
        if (strcmp(verb, "check") == 0)
                return verb_check(argc - optind, argv + optind, quiet);
        if (strcmp(verb, "run") == 0) {
                if (argc - optind != 1) {
                        fprintf(stderr, "run: exactly one policy file\n");
                        return 2;
                }
                return verb_run(argv[optind], phase, fixture);
        }
        if (strcmp(verb, "builtins") == 0) {
                _cleanup_(policy_json_putp) json_object *j = NULL;
                if (policy_builtins_to_json(&j) < 0)
                        return 1;
                printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
                return 0;
        }
        fprintf(stderr, "Unknown command '%s'\n", verb);
        return 2;
}
