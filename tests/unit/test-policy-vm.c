/* SPDX-License-Identifier: MIT */
/* Evaluation: expressions, statements, verdicts and defaults, suspension
 * and resumption, budgets and deadlines, the cache statement, and the
 * golden runs of the example policies (policy/tests/golden). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy-mock.h"
#include "policy.h"
#include "tap.h"

static PolicyGeneration *gen_id(const char *text, uint64_t id) {
        const char *files[] = { "t.hal", text, NULL };
        PolicyLoadOptions opts = { .read_file = policy_mock_read_file, .userdata = files, .generation_id = id };
        PolicyDiags diags = {};
        PolicyGeneration *g = NULL;
        int r = policy_generation_load("t.hal", &opts, &diags, &g);
        if (r < 0) {
                char buf[600] = "";
                for (size_t i = 0; i < diags.n; i++)
                        if (diags.items[i].level == POLICY_DIAG_ERROR) {
                                policy_diag_format(&diags.items[i], buf, sizeof buf);
                                break;
                        }
                policy_diags_done(&diags);
                TAP_FAIL("load failed: %d %s", r, buf);
        }
        policy_diags_done(&diags);
        return g;
}

static PolicyGeneration *gen(const char *text) {
        return gen_id(text, 1);
}

/* Runs a phase with facts and mocks from a JSON fixture text; returns the
 * result JSON with "calls" and "context" added. */
static json_object *run_with(PolicyGeneration *g, PolicyPhase phase, const char *fixture, PolicyRunParams *extra) {
        json_object *fx = fixture ? json_tokener_parse(fixture) : NULL, *mocks = NULL, *out = NULL, *calls, *ctx = NULL;
        PolicyMock *m = NULL;
        PolicyRun *r = NULL;
        PolicyRunParams params = extra ? *extra : (PolicyRunParams) {};

        if (fixture && !fx)
                TAP_FAIL("bad fixture JSON");
        if (fx)
                (void) json_object_object_get_ex(fx, "mocks", &mocks);
        ASSERT_OK(policy_mock_new(mocks, &m));
        ASSERT_OK(policy_mock_params_from_json(fx, phase, &params));
        ASSERT_OK(policy_run_new(g, phase, &params, &r));
        policy_mock_params_done(&params);
        calls = json_object_new_array();
        ASSERT_OK(policy_mock_drive(m, r, calls));
        ASSERT_OK(policy_result_to_json(policy_run_result(r), &out));
        json_object_object_add(out, "calls", calls);
        ASSERT_OK(policy_value_to_json(policy_run_context(r), &ctx));
        json_object_object_add(out, "context", ctx);
        policy_run_free(r);
        policy_mock_free(m);
        json_object_put(fx);
        return out;
}

static json_object *run_text(const char *text, PolicyPhase phase, const char *fixture) {
        PolicyGeneration *g = gen(text);
        json_object *o = run_with(g, phase, fixture, NULL);
        policy_generation_unref(g);
        return o;
}

static const char *field(json_object *o, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !v)
                return "(absent)";
        if (json_object_is_type(v, json_type_string))
                return json_object_get_string(v);
        return json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* The reason of a Reject(): scripts below report values through it. */
static void expect_reason(const char *text, const char *fixture, const char *want) {
        json_object *o = run_text(text, POLICY_PHASE_RCPTTO, fixture);
        const char *got = field(o, "reason");
        if (strcmp(got, want) != 0) {
                char err[400];
                snprintf(err, sizeof err, "%s", field(o, "error"));
                json_object_put(o);
                TAP_FAIL("reason \"%.300s\" != \"%.300s\" (error: %.300s)", got, want, err);
        }
        json_object_put(o);
}

TEST(interpolation_and_concat) {
        expect_reason("on rcptto { $n = 5; $s = \"x\"; Reject(\"n=$n ${s}y \\$n $1 50$ \" . 1.5 . true . none); }", NULL,
                      "n=5 xy $n $1 50$ 1.5true");
        expect_reason("on rcptto { Reject(\"ip $senderip helo $senderhelo user $saslusername.\"); }",
                      "{\"connection\": {\"remoteip\": \"192.0.2.1\", \"helo\": {\"host\": \"h.example\"}}}",
                      "ip 192.0.2.1 helo h.example user .");
}

TEST(coalesce_and_missing_data) {
        expect_reason("on rcptto { Reject(json_encode([none ?? \"d\", false ?? 1, $context[\"a\"][\"b\"][\"c\"] ?? \"deep\", "
                      "$connection[\"x\"], 0 ?? 2])); }",
                      NULL, "[\"d\",false,\"deep\",null,0]");
        /* ??= assigns only when none */
        expect_reason("on rcptto { $a = [x => 1]; $a[\"x\"] ?\?= 2; $a[\"y\"] ?\?= 3; $b ?\?= 4; Reject(json_encode([$a, $b])); }",
                      NULL, "[{\"x\":1,\"y\":3},4]");
}

TEST(arrays_and_maps) {
        expect_reason("on rcptto { $m = [a => 1, \"b\" => 2, 5, 6]; $m[] = 7; $m[\"c\"][\"d\"] = 8; $m[\"a\"] = 9; "
                      "Reject(json_encode($m) . \" \" . json_encode(keys($m)) . \" \" . length($m) . $m[1]); }",
                      NULL, "{\"a\":9,\"b\":2,\"0\":5,\"1\":6,\"2\":7,\"c\":{\"d\":8}} [\"a\",\"b\",0,1,2,\"c\"] 66");
        /* assignment copies: the original is not changed */
        expect_reason("on rcptto { $a = [1]; $b = $a; $b[] = 2; $context[\"x\"] = $a; $context[\"x\"][] = 3; "
                      "Reject(json_encode([$a, $b, $context[\"x\"]])); }",
                      NULL, "[[1],[1,2],[1,3]]");
        expect_reason("on rcptto { Reject(string(\"b\" in [\"a\", \"b\"]) . string(\"x\" in [\"a\"]) . string(\"bc\" in \"abcd\") "
                      ". string(1 in none)); }",
                      NULL, "truefalsetruefalse");
}

TEST(foreach_is_bounded_by_a_snapshot) {
        expect_reason("on rcptto { $a = [1, 2, 3]; $n = 0; foreach ($a as $v) { $a[] = $v; $n = $n + 1; } "
                      "Reject($n . \" \" . length($a)); }",
                      NULL, "3 6");
        expect_reason("on rcptto { $s = \"\"; foreach ([a => 1, b => 2, c => 3, d => 4] as $k => $v) { "
                      "if ($k == \"b\") continue; if ($v > 3) break; $s = $s . $k . $v; } Reject($s); }",
                      NULL, "a1c3");
        expect_reason("on rcptto { $n = 0; foreach ($context[\"none\"] as $v) { $n = 1; } Reject(\"n$n\"); }", NULL, "n0");
        /* `$s ?? x` may read a local before its first assignment */
        expect_reason("on rcptto { foreach ([1, 2, 3] as $v) $s = ($s ?? \"\") . $v; Reject($s); }", NULL, "123");
        expect_reason("on rcptto { $n = \"\"; foreach ([[1, 2], [3]] as $row) foreach ($row as $x) $n = $n . $x; Reject($n); }",
                      NULL, "123");
}

TEST(short_circuit) {
        /* dnsbl() has no mock: were it called, the run would fail. */
        json_object *o = run_text("on rcptto { if (false and dnsbl(\"1\", \"z\")) Defer(); if (true or dnsbl(\"1\", \"z\")) "
                                  "$x = 1 ?? dnsbl(\"1\", \"z\"); $y = true ? 1 : dnsbl(\"1\", \"z\"); Reject(\"ok\"); }",
                                  POLICY_PHASE_RCPTTO, NULL);
        ASSERT_STREQ(field(o, "reason"), "ok");
        ASSERT_STREQ(field(o, "calls"), "[]");
        json_object_put(o);
        expect_reason("on rcptto { Reject(json_encode([1 and 2, 0 or \"\", not [], not 0])); }", NULL,
                      "[true,false,true,true]");
}

TEST(comparisons_and_arithmetic) {
        expect_reason("on rcptto { Reject(json_encode([5 == true, \"1\" == 1, none == none, [1] == [1], none > 5, none < 5, "
                      "\"a\" < \"b\", 2 <= 2, 7 % 3, 7 / 2, -(3 - 5), \"abc\" =~ '^a.c$', \"x\" =~ '^a'])); }",
                      NULL, "[false,false,true,true,false,false,true,true,1,3.5,2,true,false]");
}

TEST(functions) {
        expect_reason("function add($a, $b) { return $a + $b; }\n"
                      "function twice($x) { $r = add($x, $x); return $r; }\n"
                      "function nothing() { }\n"
                      "on rcptto { $r = 1; Reject(twice(add(1, 2)) . \" \" . $r . json_encode(nothing())); }",
                      NULL, "6 1null");
}

TEST(builtins_pure) {
        expect_reason("on rcptto { Reject(json_encode([lower(\"AbC\"), upper(\"x\"), length(\"abc\"), number(\"12.5\"), "
                      "number(\"x\"), str_split(\"a,b,,c\", \",\"), str_join([\"a\", 1, true], \"-\"), "
                      "in_network(\"10.1.2.3\", [\"192.0.2.0/24\", \"10.0.0.0/8\"]), in_network(\"2001:db8::1\", \"2001:db8::/32\"), "
                      "in_network(\"10.1.2.3\", \"10.1.2.4/32\"), is_subdomain(\"a.Example.com.\", \"example.com\"), "
                      "is_subdomain(\"badexample.com\", \"example.com\"), regex_match('^([a-z]+)@(.*)$', \"joe@x.org\"), "
                      "json_decode(\"{\\\"a\\\":[1,null]}\"), json_decode(\"{bad\")])); }",
                      NULL,
                      "[\"abc\",\"X\",3,12.5,null,[\"a\",\"b\",\"\",\"c\"],\"a-1-true\",true,true,false,true,false,"
                      "[\"joe@x.org\",\"joe\",\"x.org\"],{\"a\":[1,null]},null]");
        expect_reason("on rcptto { Reject(json_encode([client_cert()[\"verified\"], client_cert()[\"fingerprint_sha256\"]])); }",
                      "{\"connection\": {\"tls\": {\"peercert\": {\"verified\": true, \"fingerprint_sha256\": \"ab\"}}}}",
                      "[true,\"ab\"]");
}

TEST(verdicts_and_defaults) {
        json_object *o;

        o = run_text("on rcptto { Reject(\"go\\r\\naway\", [code => 554, enhanced => [5, 7, 26], disconnect => true]); }",
                     POLICY_PHASE_RCPTTO, NULL);
        ASSERT_STREQ(field(o, "verdict"), "reject");
        ASSERT_STREQ(field(o, "code"), "554");
        ASSERT_STREQ(field(o, "enhanced"), "5.7.26");
        ASSERT_STREQ(field(o, "reason"), "go  away"); /* never a raw CRLF into a reply */
        ASSERT_STREQ(field(o, "disconnect"), "true");
        ASSERT_STREQ(field(o, "at"), "t.hal:1:13");
        json_object_put(o);

        o = run_text("on rcptto { Defer(); }", POLICY_PHASE_RCPTTO, NULL);
        ASSERT_STREQ(field(o, "code"), "451");
        ASSERT_STREQ(field(o, "enhanced"), "4.7.1");
        json_object_put(o);

        o = run_text("on auth { Accept([username => \"joe\"]); }\non rcptto { Accept(); }", POLICY_PHASE_AUTH, NULL);
        ASSERT_STREQ(field(o, "verdict"), "accept");
        ASSERT_STREQ(field(o, "username"), "joe");
        json_object_put(o);

        /* falling off the end */
        PolicyGeneration *g = gen("on connect { $x = 1; }\non auth { $x = 1; }\non rcptto { $x = 1; }\non eod { }");
        o = run_with(g, POLICY_PHASE_RCPTTO, NULL, NULL);
        ASSERT_STREQ(field(o, "verdict"), "reject");
        ASSERT_STREQ(field(o, "code"), "550");
        ASSERT_STREQ(field(o, "enhanced"), "5.7.1");
        ASSERT_STREQ(field(o, "by_default"), "true");
        json_object_put(o);
        o = run_with(g, POLICY_PHASE_AUTH, NULL, NULL);
        ASSERT_STREQ(field(o, "code"), "535");
        ASSERT_STREQ(field(o, "enhanced"), "5.7.8");
        json_object_put(o);
        o = run_with(g, POLICY_PHASE_CONNECT, NULL, NULL);
        ASSERT_STREQ(field(o, "verdict"), "none");
        ASSERT_STREQ(field(o, "by_default"), "true");
        json_object_put(o);
        o = run_with(g, POLICY_PHASE_HELO, NULL, NULL);
        ASSERT_STREQ(field(o, "verdict"), "none");
        ASSERT_STREQ(field(o, "no_handler"), "true");
        json_object_put(o);
        policy_generation_unref(g);

        /* `return;` in a handler ends it like falling off */
        o = run_text("on rcptto { if (true) return; Accept(); }", POLICY_PHASE_RCPTTO, NULL);
        ASSERT_STREQ(field(o, "by_default"), "true");
        json_object_put(o);
}

TEST(script_errors_tempfail) {
        static const struct {
                const char *text, *error;
        } cases[] = {
                { "on rcptto { $x = \"a\" + 1; Accept(); }", "t.hal:1:22: '+' needs numbers, not string and number" },
                { "on rcptto { $x = 1 / 0; Accept(); }", "t.hal:1:20: division by zero" },
                { "on rcptto { $x = \"s\"[0]; Accept(); }", "t.hal:1:21: cannot index a string" },
                { "on rcptto { foreach (\"s\" as $c) { } Accept(); }", "t.hal:1:13: foreach over a string" },
                { "on rcptto { $x = \"a\" . [1]; Accept(); }", "t.hal:1:22: cannot make a string of array (use json_encode())" },
                { "on rcptto { $c = 450; Reject(\"x\", [code => $c]); }", "t.hal:1:23: Reject(): code must be a 5xx SMTP code" },
                { "on rcptto { $x = in_network(\"1.2.3.4\", \"nonsense\"); Accept(); }",
                  "t.hal:1:18: in_network(): 'nonsense' is not a network" },
                { "on rcptto { $x = dnsbl(\"1.2.3.4\", \"z\"); Accept(); }", "t.hal:1:18: no mock for dnsbl() at t.hal:1:18" },
                { "on rcptto { $a = [1]; $a[true] = 1; Accept(); }", "t.hal:1:23: array keys are strings or integers, not bool" },
                { "on rcptto { $a = []; foreach (str_split(\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\", \"x\") as $v) "
                  "$a = [$a]; Accept(); }", "t.hal:1:133: arrays nested deeper than 64 levels" },
                { "on rcptto { $a = []; foreach ([1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,"
                  "31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65] as $v) "
                  "$a[] = $a; Accept(); }", "memory budget of 67108864 bytes exceeded" }, /* shared parts count each time */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_object *o = run_text(cases[i].text, POLICY_PHASE_RCPTTO, NULL);
                ASSERT_STREQ(field(o, "verdict"), "defer");
                ASSERT_STREQ(field(o, "code"), "451");
                ASSERT_STREQ(field(o, "enhanced"), "4.3.0");
                ASSERT_STREQ(field(o, "reason"), "Temporary policy failure");
                ASSERT_STREQ(field(o, "failed"), "true");
                if (!strstr(field(o, "error"), cases[i].error)) {
                        char got[300];
                        snprintf(got, sizeof got, "%s", field(o, "error"));
                        json_object_put(o);
                        TAP_FAIL("case %zu: \"%s\" != \"%s\"", i, got, cases[i].error);
                }
                json_object_put(o);
        }

        /* the tempfail is configurable */
        PolicyGeneration *g = gen("on rcptto { $x = 1 / 0; }");
        PolicyRunParams p = { .error_code = 421, .error_enhanced = "4.3.2", .error_reason = "Try later" };
        json_object *o = run_with(g, POLICY_PHASE_RCPTTO, NULL, &p);
        ASSERT_STREQ(field(o, "code"), "421");
        ASSERT_STREQ(field(o, "enhanced"), "4.3.2");
        ASSERT_STREQ(field(o, "reason"), "Try later");
        json_object_put(o);
        policy_generation_unref(g);
}

TEST(step_budget) {
        PolicyGeneration *g = gen("on rcptto { $n = 0; foreach ($context[\"big\"] as $v) { $n = $n + $v; } Accept(); }");
        char fx[200000];
        size_t o = (size_t) sprintf(fx, "{\"context\": {\"big\": [");
        for (int i = 0; i < 10000; i++)
                o += (size_t) sprintf(fx + o, "%s1", i ? "," : "");
        sprintf(fx + o, "]}}");

        PolicyRunParams p = { .step_budget = 1000 };
        json_object *r = run_with(g, POLICY_PHASE_RCPTTO, fx, &p);
        ASSERT_STREQ(field(r, "verdict"), "defer");
        ASSERT_STREQ(field(r, "failed"), "true");
        ASSERT_TRUE(strstr(field(r, "error"), "step budget of 1000 exceeded") != NULL);
        ASSERT_STREQ(field(r, "steps"), "1001");
        json_object_put(r);

        /* the default budget is enough for 10000 elements */
        r = run_with(g, POLICY_PHASE_RCPTTO, fx, NULL);
        ASSERT_STREQ(field(r, "verdict"), "accept");
        json_object_put(r);
        policy_generation_unref(g);
}

TEST(memory_budget) {
        PolicyGeneration *g = gen("function keep($x) { $copy = [$x, $x]; return 1; }\n"
                                  "on rcptto { $a = []; $s = \"0123456789012345678901234567890123456789\"; "
                                  "foreach ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10] as $i) { $a[] = $s . $i; keep($a); } Accept(); }");
        PolicyRunParams p = { .memory_budget = 2000 };
        json_object *r = run_with(g, POLICY_PHASE_RCPTTO, NULL, &p);
        ASSERT_STREQ(field(r, "failed"), "true");
        ASSERT_TRUE(strstr(field(r, "error"), "memory budget of 2000 bytes exceeded") != NULL);
        json_object_put(r);
        p.memory_budget = 100000;
        r = run_with(g, POLICY_PHASE_RCPTTO, NULL, &p);
        ASSERT_STREQ(field(r, "verdict"), "accept");
        json_object_put(r);
        policy_generation_unref(g);

        /* $context counts too, from the start */
        g = gen("on rcptto { $context[\"x\"] = 1; Accept(); }");
        p.memory_budget = 64;
        r = run_with(g, POLICY_PHASE_RCPTTO, "{\"context\": {\"big\": \"0123456789012345678901234567890123456789\"}}", &p);
        ASSERT_STREQ(field(r, "failed"), "true");
        json_object_put(r);
        policy_generation_unref(g);
}

static uint64_t fake_clock(void *userdata) {
        uint64_t *t = userdata;
        return *t += 1000; /* every reading is 1 ms later */
}

TEST(deadline) {
        PolicyGeneration *g = gen("on rcptto { $n = 0; foreach ($context[\"big\"] as $v) { $n = $n + 1; } Accept(); }");
        char fx[100000];
        size_t o = (size_t) sprintf(fx, "{\"context\": {\"big\": [");
        for (int i = 0; i < 5000; i++)
                o += (size_t) sprintf(fx + o, "%s1", i ? "," : "");
        sprintf(fx + o, "]}}");
        uint64_t t = 0;
        PolicyRunParams p = { .deadline_usec = 5000, .now_usec = fake_clock, .clock_userdata = &t };
        json_object *r = run_with(g, POLICY_PHASE_RCPTTO, fx, &p);
        ASSERT_STREQ(field(r, "failed"), "true");
        ASSERT_TRUE(strstr(field(r, "error"), "deadline exceeded") != NULL);
        json_object_put(r);
        policy_generation_unref(g);

        /* lookup timeouts are clamped to what is left of the deadline */
        t = 0;
        p = (PolicyRunParams) { .deadline_usec = 3000000, .now_usec = fake_clock, .clock_userdata = &t };
        PolicyGeneration *g2 = gen("on eod { $r = ScanSA(); $s = http(\"u\", [timeout => 0.5]); Accept(); }\non rcptto { Accept(); }");
        PolicyRun *run = NULL;
        ASSERT_OK(policy_run_new(g2, POLICY_PHASE_EOD, &p, &run));
        ASSERT_EQ(policy_run_step(run), POLICY_RUN_SUSPENDED);
        ASSERT_EQ(policy_run_pending(run)->timeout_ms, 2999); /* not ScanSA's 20 s */
        ASSERT_OK(policy_run_resume(run, policy_none()));
        ASSERT_EQ(policy_run_step(run), POLICY_RUN_SUSPENDED);
        ASSERT_EQ(policy_run_pending(run)->timeout_ms, 500);
        policy_run_free(run);
        policy_generation_unref(g2);
}

TEST(suspend_and_resume) {
        PolicyGeneration *g = gen("on connect {\n  $r = dnsbl($senderip, \"zen.example\", [timeout => 1.5]);\n"
                                  "  if ($r[\"listed\"]) Reject(\"listed\");\n  Accept();\n}\non rcptto { Accept(); }");
        _cleanup_(policy_value_unrefp) PolicyValue *conn = NULL, *ip = policy_string_new_cstr("192.0.2.7"),
                                                   *answer = NULL;
        conn = policy_array_new();
        ASSERT_OK(policy_array_set_str(conn, "remoteip", ip));
        PolicyRunParams p = { .connection = conn };
        PolicyRun *r = NULL;
        ASSERT_OK(policy_run_new(g, POLICY_PHASE_CONNECT, &p, &r));
        ASSERT_ERR(policy_run_resume(r, policy_none()), -ESTALE);
        ASSERT_EQ(policy_run_step(r), POLICY_RUN_SUSPENDED);
        ASSERT_NULL(policy_run_result(r));
        const PolicyCall *c = policy_run_pending(r);
        ASSERT_NOT_NULL(c);
        ASSERT_STREQ(c->name, "dnsbl");
        ASSERT_EQ(c->n_args, 3);
        ASSERT_STREQ(policy_value_string(c->args[0], NULL), "192.0.2.7");
        ASSERT_EQ(c->timeout_ms, 1500);
        ASSERT_EQ(c->id, 1);
        ASSERT_STREQ(c->file, "t.hal");
        ASSERT_EQ(c->line, 2);
        ASSERT_EQ(c->col, 8);
        ASSERT_ERR(policy_run_step(r), -ESTALE);

        /* the generation may be dropped (a reload) while the run is suspended */
        policy_generation_unref(g);

        json_object *j = json_tokener_parse("{\"listed\": true}");
        ASSERT_OK(policy_value_from_json(j, &answer));
        json_object_put(j);
        ASSERT_OK(policy_run_resume(r, answer));
        ASSERT_NULL(policy_run_pending(r));
        ASSERT_EQ(policy_run_step(r), POLICY_RUN_DONE);
        const PolicyResult *res = policy_run_result(r);
        ASSERT_EQ(res->verdict, POLICY_VERDICT_REJECT);
        ASSERT_STREQ(res->reason, "listed");
        ASSERT_STREQ(res->at, "t.hal:3:21");
        ASSERT_EQ(policy_run_step(r), POLICY_RUN_DONE);
        policy_run_free(r);
}

TEST(many_suspended_runs) {
        PolicyGeneration *g = gen("on rcptto { $a = $arguments[\"address\"]; $r = http(\"https://dir/$1\", [], [$a]); "
                                  "if ($r[\"status\"] == 200) Accept(); Reject(\"no $a\"); }");
        enum { N = 2000 };
        PolicyRun **runs = calloc(N, sizeof *runs);
        ASSERT_NOT_NULL(runs);
        for (int i = 0; i < N; i++) {
                char addr[32];
                snprintf(addr, sizeof addr, "u%d@example.com", i);
                _cleanup_(policy_value_unrefp) PolicyValue *args = policy_array_new(), *a = policy_string_new_cstr(addr);
                ASSERT_OK(policy_array_set_str(args, "address", a));
                PolicyRunParams p = { .arguments = args };
                ASSERT_OK(policy_run_new(g, POLICY_PHASE_RCPTTO, &p, &runs[i]));
                ASSERT_EQ(policy_run_step(runs[i]), POLICY_RUN_SUSPENDED);
        }
        policy_generation_unref(g);
        /* answer in reverse order: even ones exist */
        for (int i = N - 1; i >= 0; i--) {
                const PolicyCall *c = policy_run_pending(runs[i]);
                char want[32];
                snprintf(want, sizeof want, "u%d@example.com", i);
                ASSERT_STREQ(policy_value_string(policy_array_value_at(c->args[2], 0), NULL), want);
                _cleanup_(policy_value_unrefp) PolicyValue *ans = policy_array_new(), *st = policy_number_new(i % 2 ? 404 : 200);
                ASSERT_OK(policy_array_set_str(ans, "status", st));
                ASSERT_OK(policy_run_resume(runs[i], ans));
                ASSERT_EQ(policy_run_step(runs[i]), POLICY_RUN_DONE);
                ASSERT_EQ(policy_run_result(runs[i])->verdict, i % 2 ? POLICY_VERDICT_REJECT : POLICY_VERDICT_ACCEPT);
                policy_run_free(runs[i]);
        }
        free(runs);
}

TEST(abort_while_suspended) {
        PolicyGeneration *g = gen("on rcptto { Accept(); }\non eod { $r = ScanSA(); Accept(); }");
        PolicyRun *r = NULL;
        ASSERT_OK(policy_run_new(g, POLICY_PHASE_EOD, NULL, &r));
        ASSERT_EQ(policy_run_step(r), POLICY_RUN_SUSPENDED);
        ASSERT_OK(policy_run_abort(r, "phase deadline of 60s passed"));
        ASSERT_NULL(policy_run_pending(r));
        ASSERT_EQ(policy_run_step(r), POLICY_RUN_DONE);
        const PolicyResult *res = policy_run_result(r);
        ASSERT_EQ(res->verdict, POLICY_VERDICT_DEFER);
        ASSERT_EQ(res->code, 451);
        ASSERT_TRUE(res->failed);
        ASSERT_STREQ(res->error, "t.hal:2:15: phase deadline of 60s passed");
        ASSERT_ERR(policy_run_resume(r, policy_none()), -ESTALE);
        policy_run_free(r);
        policy_generation_unref(g);
}

TEST(lookup_failures_are_values) {
        const char *policy = "on rcptto { $r = dnsbl(\"1.2.3.4\", \"z\"); if ($r[\"error\"] ?? none) Defer(\"dnsbl: \" . $r[\"error\"]); "
                             "$s = ScanSA(); if ($s > 5) Reject(); Accept(); }";
        (void) policy;
        json_object *o = run_text("on rcptto { $r = dnsbl(\"1.2.3.4\", \"z\"); if ($r[\"error\"] ?? none) Defer(\"dnsbl: \" . $r[\"error\"]); "
                                  "Accept(); }",
                                  POLICY_PHASE_RCPTTO, "{\"mocks\": [{\"call\": \"dnsbl\", \"result\": {\"error\": \"timeout\"}}]}");
        ASSERT_STREQ(field(o, "verdict"), "defer");
        ASSERT_STREQ(field(o, "reason"), "dnsbl: timeout");
        ASSERT_STREQ(field(o, "failed"), "(absent)");
        json_object_put(o);
        /* a scanner that is down (none) does not make "> 5" true */
        o = run_text("on eod { if (ScanSA() > 5) Reject(); Accept(); }\non rcptto { Accept(); }", POLICY_PHASE_EOD,
                     "{\"mocks\": [{\"call\": \"ScanSA\", \"result\": null}]}");
        ASSERT_STREQ(field(o, "verdict"), "accept");
        json_object_put(o);
}

TEST(actions_and_mail) {
        json_object *o = run_text(
                "on eod {\n  $m = $arguments[\"mail\"];\n  $m->addHeader(\"X-Subject\", $m->getHeader(\"subject\") ?? \"none\");\n"
                "  $m->delHeader(\"Received\", 1);\n  $m->setHeader(\"X-N\", string(length($m->getHeaders(\"received\"))));\n"
                "  foreach ($transaction[\"recipients\"] as $r) Queue($r, [transport => \"t\"]);\n"
                "  log(\"info\", \"done\");\n  Accept();\n}\non rcptto { Accept(); }",
                POLICY_PHASE_EOD,
                "{\"arguments\": {\"mail\": {\"headers\": [[\"Subject\", \"hi\"], [\"Received\", \"a\"], [\"received\", \"b\"]]}},"
                " \"transaction\": {\"recipients\": [\"a@x\", \"b@x\"]}}");
        ASSERT_STREQ(field(o, "actions"),
                     "[{\"name\":\"X-Subject\",\"value\":\"hi\",\"options\":null,\"action\":\"add_header\",\"at\":\"t.hal:3:7\"},"
                     "{\"name\":\"Received\",\"index\":1,\"action\":\"delete_header\",\"at\":\"t.hal:4:7\"},"
                     "{\"name\":\"X-N\",\"value\":\"2\",\"options\":null,\"action\":\"set_header\",\"at\":\"t.hal:5:7\"},"
                     "{\"recipient\":\"a@x\",\"options\":{\"transport\":\"t\"},\"action\":\"queue\",\"at\":\"t.hal:6:46\"},"
                     "{\"recipient\":\"b@x\",\"options\":{\"transport\":\"t\"},\"action\":\"queue\",\"at\":\"t.hal:6:46\"},"
                     "{\"level\":\"info\",\"message\":\"done\",\"fields\":null,\"action\":\"log\",\"at\":\"t.hal:7:3\"}]");
        json_object_put(o);

        /* header injection is a script error */
        o = run_text("on eod { $arguments[\"mail\"]->addHeader(\"X-A\", \"a\\r\\nBcc: evil\"); Accept(); }\non rcptto { Accept(); }",
                     POLICY_PHASE_EOD, "{\"arguments\": {\"mail\": {\"headers\": []}}}");
        ASSERT_STREQ(field(o, "failed"), "true");
        ASSERT_TRUE(strstr(field(o, "error"), "header value must be a string without CR, LF or NUL") != NULL);
        json_object_put(o);
}

TEST(authentication_results_builder) {
        json_object *o = run_text(
                "on eod { $h = AuthenticationResults()->SPF([\"smtp.client-ip\" => \"192.0.2.1\"])->DKIM()->DMARC()"
                "->addMethod(\"arc\", \"pass\", [\"header.oldest-pass\" => \"0\"])->toString(); Accept([reason => $h]); }\n"
                "on rcptto { Accept(); }",
                POLICY_PHASE_EOD,
                "{\"mocks\": [{\"call\": \"AuthenticationResults->toString\", \"result\": \"mx; spf=pass\"}]}");
        ASSERT_STREQ(field(o, "reason"), "mx; spf=pass");
        ASSERT_TRUE(strstr(field(o, "calls"), "{\"method\":\"arc\",\"result\":\"pass\",\"props\":{\"header.oldest-pass\":\"0\"}}") !=
                    NULL);
        json_object_put(o);
}

TEST(context_persists) {
        PolicyGeneration *g = gen("on connect { $context[\"n\"] = ($context[\"n\"] ?? 0) + 1; Accept(); }\non rcptto { Accept(); }");
        PolicyValue *ctx = policy_none();
        for (int i = 0; i < 3; i++) {
                PolicyRun *r = NULL;
                PolicyRunParams p = { .context = ctx };
                ASSERT_OK(policy_run_new(g, POLICY_PHASE_CONNECT, &p, &r));
                ASSERT_EQ(policy_run_step(r), POLICY_RUN_DONE);
                policy_value_unref(ctx);
                ctx = policy_value_ref(policy_run_context(r));
                policy_run_free(r);
        }
        ASSERT_EQ(policy_value_number(policy_array_get_str(ctx, "n")), 3);
        policy_value_unref(ctx);
        policy_generation_unref(g);
}

/* ---- cache ---------------------------------------------------------------- */

static unsigned count_calls(json_object *o) {
        json_object *c;
        ASSERT_TRUE(json_object_object_get_ex(o, "calls", &c));
        return (unsigned) json_object_array_length(c);
}

TEST(cache_statement) {
        PolicyGeneration *g = gen("on rcptto { $r = cache [ttl => 10, size => 2, argv_filter => [1], namespace => \"n\"] "
                                  "dns_query($context[\"q\"], [timeout => $context[\"t\"]]); Reject(json_encode($r)); }");
        PolicyCache *cache = NULL;
        uint64_t t = 0;
        ASSERT_OK(policy_cache_new(&cache));
        PolicyRunParams p = { .cache = cache, .now_usec = fake_clock, .clock_userdata = &t };
        const char *mocks = "\"mocks\": [{\"call\": \"dns_query\", \"args\": [\"fail\"], \"result\": {\"error\": \"servfail\"}},"
                            "{\"call\": \"dns_query\", \"result\": {\"result\": [1]}}]";
        char fx[512];
        json_object *o;

        snprintf(fx, sizeof fx, "{\"context\": {\"q\": \"a\", \"t\": 1}, %s}", mocks);
        o = run_with(g, POLICY_PHASE_RCPTTO, fx, &p);
        ASSERT_EQ(count_calls(o), 1); /* miss */
        json_object_put(o);
        snprintf(fx, sizeof fx, "{\"context\": {\"q\": \"a\", \"t\": 2}, %s}", mocks);
        o = run_with(g, POLICY_PHASE_RCPTTO, fx, &p);
        ASSERT_EQ(count_calls(o), 0); /* hit: argument 2 is not part of the key */
        ASSERT_STREQ(field(o, "reason"), "{\"result\":[1]}");
        json_object_put(o);
        /* errors are not stored */
        snprintf(fx, sizeof fx, "{\"context\": {\"q\": \"fail\"}, %s}", mocks);
        for (int i = 0; i < 2; i++) {
                o = run_with(g, POLICY_PHASE_RCPTTO, fx, &p);
                ASSERT_EQ(count_calls(o), 1);
                json_object_put(o);
        }
        /* size 2: b and c push a out */
        snprintf(fx, sizeof fx, "{\"context\": {\"q\": \"b\"}, %s}", mocks);
        json_object_put(run_with(g, POLICY_PHASE_RCPTTO, fx, &p));
        snprintf(fx, sizeof fx, "{\"context\": {\"q\": \"c\"}, %s}", mocks);
        json_object_put(run_with(g, POLICY_PHASE_RCPTTO, fx, &p));
        snprintf(fx, sizeof fx, "{\"context\": {\"q\": \"a\"}, %s}", mocks);
        o = run_with(g, POLICY_PHASE_RCPTTO, fx, &p);
        ASSERT_EQ(count_calls(o), 1);
        json_object_put(o);
        /* ttl: 10 s later it is gone */
        o = run_with(g, POLICY_PHASE_RCPTTO, fx, &p);
        ASSERT_EQ(count_calls(o), 0);
        json_object_put(o);
        t += 11 * 1000000ULL;
        o = run_with(g, POLICY_PHASE_RCPTTO, fx, &p);
        ASSERT_EQ(count_calls(o), 1);
        json_object_put(o);

        json_object *stats = NULL;
        ASSERT_OK(policy_cache_stats(cache, &stats));
        ASSERT_STREQ(json_object_to_json_string_ext(stats, JSON_C_TO_STRING_PLAIN),
                     "[{\"namespace\":\"n\",\"function\":\"dns_query\",\"size\":2,\"max_size\":2,\"hits\":2,\"misses\":7,\"evicts\":2}]");
        json_object_put(stats);
        policy_cache_clear(cache, "n");
        o = run_with(g, POLICY_PHASE_RCPTTO, fx, &p);
        ASSERT_EQ(count_calls(o), 1);
        json_object_put(o);
        policy_generation_unref(g);

        /* a user function: the whole call, suspensions inside included, is cached */
        g = gen("function lookup($d) { $r = http(\"https://x/$1\", [], [$d]); return $r[\"status\"] ?? none; }\n"
                "on rcptto { $s = cache [ttl => 60, namespace => \"f\"] lookup($context[\"d\"]); Reject(string($s)); }");
        const char *fxf = "{\"context\": {\"d\": \"a\"}, \"mocks\": [{\"call\": \"http\", \"result\": {\"status\": 204}}]}";
        o = run_with(g, POLICY_PHASE_RCPTTO, fxf, &p);
        ASSERT_EQ(count_calls(o), 1);
        ASSERT_STREQ(field(o, "reason"), "204");
        json_object_put(o);
        o = run_with(g, POLICY_PHASE_RCPTTO, fxf, &p);
        ASSERT_EQ(count_calls(o), 0);
        ASSERT_STREQ(field(o, "reason"), "204");
        json_object_put(o);
        policy_generation_unref(g);

        /* force always calls; flush_on_reload misses across generations */
        PolicyGeneration *g1 = gen_id("on rcptto { $r = cache [force => true] dns_query(\"x\"); $s = cache [flush_on_reload => true] "
                                      "dnsbl(\"1\", \"z\"); Accept(); }", 1);
        PolicyGeneration *g2 = gen_id("on rcptto { $r = cache [force => true] dns_query(\"x\"); $s = cache [flush_on_reload => true] "
                                      "dnsbl(\"1\", \"z\"); Accept(); }", 2);
        const char *fx2 = "{\"mocks\": [{\"call\": \"dns_query\", \"result\": [1]}, {\"call\": \"dnsbl\", \"result\": {\"listed\": false}}]}";
        o = run_with(g1, POLICY_PHASE_RCPTTO, fx2, &p);
        ASSERT_EQ(count_calls(o), 2);
        json_object_put(o);
        o = run_with(g1, POLICY_PHASE_RCPTTO, fx2, &p);
        ASSERT_EQ(count_calls(o), 1); /* dns_query forced, dnsbl hit */
        json_object_put(o);
        o = run_with(g2, POLICY_PHASE_RCPTTO, fx2, &p);
        ASSERT_EQ(count_calls(o), 2); /* new generation: dnsbl misses */
        json_object_put(o);
        policy_generation_unref(g1);
        policy_generation_unref(g2);
        policy_cache_free(cache);
}

/* ---- golden runs --------------------------------------------------------------- */

static char *read_all(const char *path) {
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        char *buf = NULL;
        size_t n = 0;
        ssize_t k = getdelim(&buf, &n, '\0', f);
        fclose(f);
        if (k < 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* policy/tests/golden/NAME.json: {"policy": "examples/x.hal", "phase": "...",
 * fixture members..., "expect": {...}}; every member of "expect" must equal
 * the result's. */
TEST(golden) {
        /* Paths in results are as loaded: relative to policy/. */
        const char *root = getenv("POLICY_ROOT") ?: "policy";
        const char *dir = "tests/golden";
        ASSERT_OK(chdir(root) < 0 ? -errno : 0);
        DIR *d = opendir(dir);
        unsigned n = 0;
        ASSERT_NOT_NULL(d);
        struct dirent *de;
        while ((de = readdir(d))) {
                size_t len = strlen(de->d_name);
                if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0)
                        continue;
                char path[4096], ppath[4096];
                snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
                _cleanup_free_ char *text = read_all(path);
                ASSERT_NOT_NULL(text);
                json_object *fx = json_tokener_parse(text), *pol, *ph, *expect;
                ASSERT_NOT_NULL(fx);
                ASSERT_TRUE(json_object_object_get_ex(fx, "policy", &pol));
                ASSERT_TRUE(json_object_object_get_ex(fx, "phase", &ph));
                ASSERT_TRUE(json_object_object_get_ex(fx, "expect", &expect));
                snprintf(ppath, sizeof ppath, "%s", json_object_get_string(pol));
                PolicyDiags diags = {};
                PolicyGeneration *g = NULL;
                ASSERT_OK(policy_generation_load(ppath, NULL, &diags, &g));
                policy_diags_done(&diags);
                PolicyPhase phase = policy_phase_from_string(json_object_get_string(ph));
                ASSERT_TRUE(phase >= 0);
                json_object *got = run_with(g, phase, text, NULL);
                json_object_object_foreach(expect, key, want) {
                        json_object *have = NULL;
                        (void) json_object_object_get_ex(got, key, &have);
                        if (!json_object_equal(want, have)) {
                                char w[600], h[600];
                                snprintf(w, sizeof w, "%s", json_object_to_json_string(want));
                                snprintf(h, sizeof h, "%s", have ? json_object_to_json_string(have) : "(absent)");
                                closedir(d);
                                TAP_FAIL("%s: %s: expected %s, got %s", de->d_name, key, w, h);
                        }
                }
                json_object_put(got);
                json_object_put(fx);
                policy_generation_unref(g);
                n++;
        }
        closedir(d);
        ASSERT_TRUE(n >= 4);
}

int main(void) {
        return tap_run();
}
