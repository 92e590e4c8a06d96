/* SPDX-License-Identifier: MIT */
/* The load-time checker: one case per rule, each with its exact
 * file:line:col diagnostic; and the example policies of the design note,
 * which must load cleanly. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-mock.h"
#include "policy.h"
#include "tap.h"

/* Loads t.hal (plus an optional lib.hal and lib2.hal); all diagnostics,
 * sorted, one per line into buf. */
static int load(const char *t, const char *lib, const char *lib2, char *buf, size_t size) {
        const char *files[] = { "t.hal", t, "lib.hal", lib ?: "", "lib2.hal", lib2 ?: "", NULL };
        if (!lib)
                files[2] = NULL;
        else if (!lib2)
                files[4] = NULL;
        PolicyLoadOptions opts = { .read_file = policy_mock_read_file, .userdata = files };
        PolicyDiags diags = {};
        PolicyGeneration *g = NULL;
        int r = policy_generation_load("t.hal", &opts, &diags, &g);
        size_t o = 0;

        buf[0] = 0;
        for (size_t i = 0; i < diags.n && o + 2 < size; i++) {
                policy_diag_format(&diags.items[i], buf + o, size - o);
                o += strlen(buf + o);
                if (o + 1 < size) {
                        buf[o++] = '\n';
                        buf[o] = 0;
                }
        }
        policy_diags_done(&diags);
        policy_generation_unref(g);
        return r;
}

typedef struct Case {
        const char *t, *lib, *lib2;
        const char *diag;  /* a line that must be among the diagnostics; NULL: none at all */
        bool loads;        /* warnings only */
} Case;

#define ERR(t, d) { t, NULL, NULL, d, false }
#define WARN(t, d) { t, NULL, NULL, d, true }
#define OK(t) { t, NULL, NULL, NULL, true }

static const Case cases[] = {
        /* names */
        ERR("on rcptto { Reject($nope); }", "t.hal:1:20: error: unknown variable $nope"),
        ERR("on rcptto { Reject($x); $x = 1; }", "t.hal:1:20: error: variable $x is used before it is assigned"),
        ERR("on rcptto { Reject(\"a $nope b\"); }", "t.hal:1:23: error: unknown variable $nope"),
        ERR("on rcptto { nope(); }", "t.hal:1:13: error: unknown function nope()"),
        ERR("on eod { ARC::nope(); }", "t.hal:1:10: error: unknown function ARC::nope()"),
        ERR("on eod { $arguments[\"mail\"]->nope(); }", "t.hal:1:30: error: unknown method ->nope()"),
        OK("function f($a) { if ($a) { $b = 1; } return $b ?? 2; }\non rcptto { $x = f(1); Accept(); }"),

        /* arity and literal types */
        ERR("on rcptto { Reject(1, 2, 3); }", "t.hal:1:13: error: Reject() takes 0 to 2 arguments, 3 given"),
        ERR("on rcptto { $x = lower(); }", "t.hal:1:18: error: lower() takes 1 argument, 0 given"),
        ERR("function f($a) { return $a; }\non rcptto { $x = f(); }", "t.hal:2:18: error: f() takes 1 argument, 0 given"),
        ERR("on rcptto { $x = lower(5); }", "t.hal:1:24: error: argument 1 of lower() must be none or string, not number"),
        ERR("on rcptto { $x = dnsbl(\"1.2.3.4\", [\"zone\"]); }",
            "t.hal:1:35: error: argument 2 of dnsbl() must be string, not array"),

        /* options */
        ERR("on rcptto { Reject(\"x\", [bogus => 1]); }", "t.hal:1:26: error: unknown option 'bogus' for Reject()"),
        ERR("on rcptto { Defer(\"x\", [code => 550]); }", "t.hal:1:33: error: Defer(): code 550 is not a 4xx code"),
        ERR("on rcptto { Reject(\"x\", [enhanced => [4, 7, 1]]); }",
            "t.hal:1:38: error: Reject(): enhanced code class 4 does not match 5xx"),
        ERR("on rcptto { log(\"loud\", \"x\"); Accept(); }",
            "t.hal:1:17: error: unknown log level 'loud' (debug, info, notice, warning, error)"),

        /* phases */
        ERR("on connect { Queue(\"a\"); }\non rcptto { Accept(); }",
            "t.hal:1:14: error: Queue() is not available in phase 'connect'"),
        ERR("function f() { ScanSA(); }\non connect { f(); }\non rcptto { Accept(); }",
            "t.hal:1:16: error: ScanSA() is not available in phase 'connect' (function f() is called from there)"),
        ERR("on connect { $x = $arguments[\"mail\"]; }", "t.hal:1:30: error: $arguments[\"mail\"] is not available in phase 'connect'"),
        ERR("on disconnect { Accept(); }", "t.hal:1:17: error: Accept() is not available in phase 'disconnect'"),
        ERR("on rcptto { $x = AuthenticationResults()->DKIM(); }",
            "t.hal:1:43: error: AuthenticationResults->DKIM() is not available in phase 'rcptto'"),
        OK("function f() { return 1; }\non connect { f(); }\non rcptto { f(); Accept(); }"),

        /* read-only variables */
        ERR("on rcptto { $connection = 1; }", "t.hal:1:13: error: cannot assign to read-only variable $connection"),
        ERR("on rcptto { $arguments[\"x\"] = 1; }", "t.hal:1:13: error: cannot assign to read-only variable $arguments"),
        ERR("on rcptto { $senderip = \"x\"; }", "t.hal:1:13: error: cannot assign to read-only variable $senderip"),
        ERR("const $C = 1;\non rcptto { $C = 2; }", "t.hal:2:13: error: cannot assign to constant $C"),
        ERR("on rcptto { foreach ([1] as $arguments) { } }", "t.hal:1:13: error: cannot assign to read-only variable $arguments"),
        ERR("function f($connection) { }", "t.hal:1:12: error: parameter $connection shadows a read-only variable"),
        OK("on rcptto { $context[\"a\"][] = 1; $context[\"b\"] ?\?= 2; $context = $context; Accept(); }"),

        /* cache */
        ERR("on rcptto { $x = cache [] rate(\"a\", \"b\", 1, 2); }", "t.hal:1:27: error: rate() cannot be used with cache"),
        ERR("on rcptto { $x = cache [tll => 5] dns_query(\"a\"); }",
            "t.hal:1:25: error: unknown cache option 'tll' (ttl, size, namespace, argv_filter, force, flush_on_reload)"),
        ERR("on rcptto { $t = 5; $x = cache [ttl => $t] dns_query(\"a\"); }",
            "t.hal:1:40: error: cache option 'ttl' must be a literal number of seconds (0 to 31536000)"),
        ERR("on rcptto { $x = cache [argv_filter => [3]] dns_query(\"a\"); }",
            "t.hal:1:41: error: argv_filter entries are argument positions 1 to 1"),
        ERR("on rcptto { $x = cache [namespace => 5] dns_query(\"a\"); }",
            "t.hal:1:38: error: cache option 'namespace' must be a string literal"),
        ERR("on rcptto { $x = cache [force => 1] dns_query(\"a\"); }",
            "t.hal:1:34: error: cache option 'force' must be true or false"),
        ERR("function f() { log(\"info\", \"x\"); return 1; }\non rcptto { $x = cache [] f(); Accept(); }",
            "t.hal:2:27: error: f() cannot be used with cache: it calls log()"),
        ERR("function g() { return rate(\"a\", \"b\", 1, 2); }\nfunction f($x) { return g(); }\n"
            "on rcptto { $x = cache [argv_filter => [1]] f(1); Accept(); }",
            "t.hal:3:45: error: f() cannot be used with cache: it calls rate()"),
        OK("function f($d) { $r = dns_query($d); return $r[\"result\"] ?? none; }\n"
           "on rcptto { $x = cache [ttl => 5] f(\"a\"); Accept(); }"),
        OK("on rcptto { $x = cache [ttl => 0, size => 10, namespace => \"n\", argv_filter => [1], force => true, "
           "flush_on_reload => false] dns_query(\"a\", [timeout => 1]); Accept(); }"),

        /* regexes */
        ERR("on rcptto { $x = \"a\" =~ '('; }", "t.hal:1:25: error: bad regex: "),
        ERR("on rcptto { $r = \"x\"; $x = regex_match($r, \"a\"); }",
            "t.hal:1:28: error: the regex must be a string literal (it is compiled at load)"),
        ERR("on rcptto { $x = regex_match('a{2,1}', \"a\"); }", "t.hal:1:30: error: bad regex: "),

        /* call graph */
        ERR("function f() { return g(); }\nfunction g() { return f(); }\non rcptto { $x = f(); }",
            "t.hal:2:23: error: recursion is not allowed: g() calls f(), which is already being called"),
        ERR("function f() { return f(); }", "t.hal:1:23: error: recursion is not allowed: f() calls f(), which is already being called"),

        /* statements and declarations */
        ERR("on rcptto { break; }", "t.hal:1:13: error: 'break' outside foreach"),
        ERR("function f() { continue; }", "t.hal:1:16: error: 'continue' outside foreach"),
        ERR("on rcptto { return 1; }", "t.hal:1:13: error: a handler cannot return a value (end it with a verdict)"),
        ERR("on rcptto { Accept(); }\non rcptto { Accept(); }", "t.hal:2:4: error: duplicate handler for phase 'rcptto'"),
        ERR("function f() { }\nfunction f() { }", "t.hal:2:10: error: duplicate function f()"),
        ERR("const $A = 1;\nconst $A = 2;", "t.hal:2:7: error: duplicate constant $A"),
        ERR("function lower($x) { return $x; }", "t.hal:1:10: error: function lower() would hide the builtin of the same name"),
        ERR("const $A = lower(\"x\");",
            "t.hal:1:12: error: a const initialiser must be a constant expression (literals, arrays, operators, other constants)"),
        ERR("const $A = $B;\nconst $B = 1;", "t.hal:1:12: error: constant $B is used before its definition"),
        ERR("const $A = 1 + \"x\";", "t.hal:1:14: error: '+' needs numbers, not number and string"),
        ERR("const $A = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]];\nconst $B = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[$A]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]];",
            "t.hal:2:28: error: arrays nested deeper than 64 levels"),
        ERR("const $context = 1;", "t.hal:1:7: error: constant $context would hide a read-only variable"),
        OK("const $N = \"n\";\nconst $A = [\"a\" => 1 + 2 * 3, $N => -1];\nconst $B = $A[\"a\"] . \"-$N\" ?? none;\non rcptto { Accept(); }"),
        ERR("const $A = [1];\nconst $B = \"-$A\";", "t.hal:2:12: error: cannot make a string of array (use json_encode())"),

        /* imports */
        { "import { f } from \"lib.hal\";\non rcptto { Accept(); }", "on connect { }\nfunction f() { }", NULL,
          "lib.hal:1:4: error: handlers ('on connect') are only allowed in the entry file", false },
        { "import { g } from \"lib.hal\";\non rcptto { Accept(); }", "function f() { }", NULL,
          "t.hal:1:10: error: lib.hal does not define function g()", false },
        { "import { $G } from \"lib.hal\";\non rcptto { Accept(); }", "function f() { }", NULL,
          "t.hal:1:10: error: lib.hal does not define constant $G", false },
        ERR("import { g } from \"nope.hal\";\non rcptto { Accept(); }", "t.hal:1:1: error: cannot import nope.hal: No such file or directory"),
        ERR("import { g } from \"t.hal\";\non rcptto { Accept(); }", "t.hal:1:1: error: the entry file cannot be imported"),
        { "function f() { }\nimport { f } from \"lib.hal\";\non rcptto { Accept(); }", "function f() { }", NULL,
          "t.hal:2:10: error: f is already defined in this file", false },
        /* a cycle between helpers loads; names stay private unless imported */
        { "import { f, $K } from \"./sub/../lib.hal\";\non rcptto { $x = f() . $K; Accept(); }",
          "import { g } from \"lib2.hal\";\nconst $K = \"k\";\nfunction f() { return g(); }",
          "import { $K } from \"lib.hal\";\nfunction g() { return $K; }", NULL, true },
        { "import { f } from \"lib.hal\";\non rcptto { $x = g(); Accept(); }", "function f() { }\nfunction g() { }", NULL,
          "t.hal:2:18: error: unknown function g()", false },
        { "import { f } from \"lib.hal\";\non connect { f(); }\non rcptto { Accept(); }", "function f() { Queue(\"x\"); }", NULL,
          "lib.hal:1:16: error: Queue() is not available in phase 'connect' (function f() is called from there)", false },

        /* warnings */
        WARN("on rcptto { Accept(); $x = 1; }", "t.hal:1:23: warning: unreachable code"),
        WARN("on rcptto { if (1) { return; } else { Reject(); } $x = 1; }", "t.hal:1:51: warning: unreachable code"),
        WARN("on rcptto { $x = 1; }", "t.hal:1:4: warning: handler 'rcptto' can end without a verdict; then smtpd's built-in relay rules decide"),
        WARN("on auth { $x = 1; }\non rcptto { Accept(); }",
             "t.hal:1:4: warning: handler 'auth' can end without a verdict; then the password file decides"),
        WARN("on eod { $m = $arguments[\"mail\"]; ARC::seal(\"s\", \"d\", \"k\", [], \"\"); $m->addHeader(\"X\", \"y\"); Accept(); }\n"
             "on rcptto { Accept(); }",
             "t.hal:1:73: warning: ->addHeader() after ARC::seal(): the seal does not cover this change"),
        WARN("on connect { Accept(); }", "t.hal:1:1: warning: no 'on rcptto' handler: recipients are left to the built-in relay control"),
        WARN("on rcptto { if (5 == true) Accept(); Accept(); }", "t.hal:1:19: warning: a number never equals a bool ('==' does not convert)"),
};

TEST(rules) {
        static char buf[16384];
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const Case *c = &cases[i];
                int r = load(c->t, c->lib, c->lib2, buf, sizeof buf);
                if (c->loads && r < 0)
                        TAP_FAIL("case %zu should load:\n%.2000s", i, buf);
                if (!c->loads && r != -EINVAL)
                        TAP_FAIL("case %zu should fail to load (%d):\n%.2000s", i, r, buf);
                if (!c->diag && buf[0])
                        TAP_FAIL("case %zu should have no diagnostics:\n%.2000s", i, buf);
                if (c->diag && !strstr(buf, c->diag))
                        TAP_FAIL("case %zu: expected\n  %.500s\ngot\n%.2000s", i, c->diag, buf);
        }
}

TEST(errors_are_collected) {
        static char buf[16384];
        ASSERT_ERR(load("on rcptto { $a = $b; nope(); Reject(1, 2, 3); }\nfunction lower() { }", NULL, NULL, buf, sizeof buf),
                   -EINVAL);
        ASSERT_STREQ(buf, "t.hal:1:18: error: unknown variable $b\n"
                          "t.hal:1:22: error: unknown function nope()\n"
                          "t.hal:1:30: error: Reject() takes 0 to 2 arguments, 3 given\n"
                          "t.hal:2:10: error: function lower() would hide the builtin of the same name\n");
}

static const char *examples_dir(void) {
        const char *d = getenv("POLICY_EXAMPLES");
        return d ?: "policy/examples";
}

TEST(examples_load) {
        const char *dir = examples_dir();
        DIR *d = opendir(dir);
        unsigned n = 0;
        ASSERT_NOT_NULL(d);
        struct dirent *de;
        while ((de = readdir(d))) {
                size_t len = strlen(de->d_name);
                if (len < 5 || strcmp(de->d_name + len - 4, ".hal") != 0)
                        continue;
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
                PolicyDiags diags = {};
                PolicyGeneration *g = NULL;
                int r = policy_generation_load(path, NULL, &diags, &g);
                if (r < 0 || diags.n > 0) {
                        char first[1024] = "";
                        if (diags.n > 0)
                                policy_diag_format(&diags.items[0], first, sizeof first);
                        closedir(d);
                        TAP_FAIL("%s: %d, %s", de->d_name, r, first);
                }
                ASSERT_TRUE(policy_generation_has_handler(g, POLICY_PHASE_RCPTTO));
                policy_diags_done(&diags);
                policy_generation_unref(g);
                n++;
        }
        closedir(d);
        ASSERT_EQ(n, 4);
}

int main(void) {
        return tap_run();
}
