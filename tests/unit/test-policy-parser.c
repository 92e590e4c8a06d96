/* SPDX-License-Identifier: MIT */
/* Lexer and parser: what parses, and the exact file:line:col and text of
 * what does not (as jq's %%FAIL tests do). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "policy-lexer.h"
#include "policy-mock.h"
#include "policy.h"
#include "tap.h"

/* Loads one in-memory file "t.hal"; returns the load result and the first
 * error (formatted) in buf, or "" if none. */
static int load_text(const char *text, char *buf, size_t size, unsigned *ret_errors) {
        const char *files[] = { "t.hal", text, NULL };
        PolicyLoadOptions opts = { .read_file = policy_mock_read_file, .userdata = files };
        PolicyDiags diags = {};
        PolicyGeneration *g = NULL;
        int r = policy_generation_load("t.hal", &opts, &diags, &g);

        /* All errors, one per line, sorted by position. */
        buf[0] = 0;
        size_t o = 0;
        for (size_t i = 0; i < diags.n; i++)
                if (diags.items[i].level == POLICY_DIAG_ERROR && o + 1 < size) {
                        policy_diag_format(&diags.items[i], buf + o, size - o);
                        o += strlen(buf + o);
                        if (o + 1 < size) {
                                buf[o++] = '\n';
                                buf[o] = 0;
                        }
                }
        if (ret_errors)
                *ret_errors = diags.n_errors;
        policy_diags_done(&diags);
        policy_generation_unref(g);
        return r;
}

typedef struct Case {
        const char *text;
        const char *error; /* NULL: must load */
} Case;

static const Case cases[] = {
        /* accepted syntax */
        { "on rcptto { Accept(); }", NULL },
        { "// comment\n/* block\n comment */ on rcptto { Accept(); }", NULL },
        { "on rcptto { $a = [1, 2, x => 3, \"y\" => [4,],]; $a[] = 5; $a[\"k\"][\"j\"] = 6; $a[\"k\"] ?\?= 7; Accept(); }", NULL },
        { "on rcptto { $s = \"a${context}b\\$c\\n\\t\\\"\" . 'raw $x \\n'; Accept(); }", NULL },
        { "on rcptto { $x = 1 ? 2 : 3; $y = -(-1) * 2 % 3 / 4 + 5 - 6; $z = not not true and false or none ?? 1; Accept(); }", NULL },
        { "on rcptto { if (1 < 2) Accept(); else if (2 <= 3) Defer(); else { Reject(); } }", NULL },
        { "on eod { foreach ([1,2] as $k => $v) { if ($k) continue; break; } Accept(); }\non rcptto { Accept(); }", NULL },
        { "on rcptto { $x = \"$\" . \"?param=$1\" . \"50$\"; Accept(); }", NULL },

        /* lexical errors */
        { "on rcptto {\n  $x = \"abc;\n}\n", "t.hal:2:8: error: unterminated string" },
        { "on rcptto { $x = \"a\\qb\"; }", "t.hal:1:20: error: unknown escape sequence in string" },
        { "on rcptto { $x = 'abc; }", "t.hal:1:18: error: unterminated raw string" },
        { "on rcptto { $x = 1; } /* open", "t.hal:1:23: error: unterminated comment" },
        { "on rcptto { $x = 12abc; }", "t.hal:1:18: error: invalid number" },
        { "on rcptto { $x = $ 1; }", "t.hal:1:18: error: '$' must be followed by a variable name" },
        { "on rcptto {\n\t$x = 1 # 2;\n}", "t.hal:2:9: error: unexpected character" },
        { "on rcptto { $x = \"${name\"; }", "t.hal:1:19: error: expected '}' after ${name in string" },

        /* syntax errors */
        { "on connect {\n  $x = (1 + ;\n}\n", "t.hal:2:13: error: expected an expression, got ';'" },
        { "on data { }", "t.hal:1:4: error: unknown phase 'data' (connect, helo, auth, mailfrom, rcptto, eod, disconnect)" },
        { "on rcptto { Accept() }", "t.hal:1:22: error: expected ';', got '}'" },
        { "on rcptto { $x = [1 2]; }", "t.hal:1:21: error: expected ',' or ']', got number" },
        { "on rcptto { $x = $y[]; }", "t.hal:1:21: error: '[]' (append) is only allowed on the left of '='" },
        { "on rcptto { $x[][1] = 2; }", "t.hal:1:15: error: '[]' (append) must be the last index" },
        { "on rcptto { $x = 1 < 2 < 3; }", "t.hal:1:24: error: comparisons do not chain; use 'and'" },
        { "on rcptto { else Accept(); }", "t.hal:1:13: error: 'else' without 'if'" },
        { "on rcptto { function f() { } }", "t.hal:1:13: error: 'function' is only allowed at the top level of a file" },
        { "on rcptto { $x = foo; }", "t.hal:1:18: error: unexpected identifier 'foo' (variables start with '$')" },
        { "on rcptto { $x = if; }", "t.hal:1:18: error: unexpected 'if'" },
        { "on rcptto { ; }", "t.hal:1:13: error: empty statement" },
        { "on rcptto { $x = cache f(); }", "t.hal:1:24: error: expected '[' (cache options) after 'cache', got 'f'" },
        { "on rcptto { $x = \"a\" =~ $re; }", "t.hal:1:25: error: the right side of '=~' must be a string literal (a regex)" },
        { "on rcptto { foreach ($a $v) { } }", "t.hal:1:25: error: expected 'as', got '$v'" },
        { "on rcptto { Accept();", "t.hal:1:11: error: unterminated block: '{' without '}'" },
        { "const X = 1;", "t.hal:1:7: error: expected a $name after 'const', got 'X'" },
        { "function if() { }", "t.hal:1:10: error: expected a function name, got 'if'" },
        { "import { f } from \"lib-$x.hal\";", "t.hal:1:19: error: expected a file name string without variables, got string" },
        { "Accept();", "t.hal:1:1: error: expected 'import', 'const', 'function' or 'on', got 'Accept'" },
        { "on rcptto { $x = ARC::(); }", "t.hal:1:23: error: expected function name after '::', got '('" },
};

TEST(table) {
        char buf[4096];
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                int r = load_text(cases[i].text, buf, sizeof buf, NULL);
                if (!cases[i].error) {
                        if (r < 0)
                                TAP_FAIL("case %zu should load: %.900s", i, buf);
                        continue;
                }
                if (r != -EINVAL)
                        TAP_FAIL("case %zu loaded, expected: %.300s", i, cases[i].error);
                if (!strstr(buf, cases[i].error))
                        TAP_FAIL("case %zu: got \"%.900s\", expected \"%.300s\"", i, buf, cases[i].error);
        }
}

TEST(several_errors_reported) {
        char buf[4096];
        unsigned n = 0;
        ASSERT_ERR(load_text("on rcptto {\n  $a = ;\n  $b = );\n  Accept();\n}\non helo {\n  $c = ];\n}\n", buf, sizeof buf, &n),
                   -EINVAL);
        ASSERT_STREQ(buf, "t.hal:2:8: error: expected an expression, got ';'\n"
                          "t.hal:3:8: error: expected an expression, got ')'\n"
                          "t.hal:7:8: error: expected an expression, got ']'\n");
        ASSERT_EQ(n, 3);
}

static void append(char *buf, size_t *o, const char *s) {
        size_t n = strlen(s);
        memcpy(buf + *o, s, n + 1);
        *o += n;
}

static void nested(char *buf, size_t depth, const char *open, const char *mid, const char *close) {
        size_t o = 0;
        append(buf, &o, "on rcptto { $x = ");
        for (size_t i = 0; i < depth; i++)
                append(buf, &o, open);
        append(buf, &o, mid);
        for (size_t i = 0; i < depth; i++)
                append(buf, &o, close);
        append(buf, &o, "; Accept(); }");
}

TEST(nesting_is_bounded) {
        static char text[1 << 20];
        char buf[4096];
        static const struct {
                const char *open, *mid, *close;
        } shapes[] = {
                { "(", "1", ")" },
                { "[", "1", "]" },
                { "-", "1", "" },
                { "not ", "1", "" },
                { "", "$context", "[1]" },
                { "", "1", " . 1" },
                { "", "1", " ?? 1" },
                { "f(", "1", ")" },
        };
        for (size_t i = 0; i < ELEMENTSOF(shapes); i++) {
                /* shallow enough: parses (f() is unknown, the rest loads) */
                nested(text, 50, shapes[i].open, shapes[i].mid, shapes[i].close);
                int r = load_text(text, buf, sizeof buf, NULL);
                if (i == ELEMENTSOF(shapes) - 1)
                        ASSERT_TRUE(strstr(buf, "unknown function f()") != NULL);
                else if (r < 0)
                        TAP_FAIL("shape %zu at depth 50: %.900s", i, buf);
                /* far too deep: an error, not a stack overflow */
                nested(text, 50000, shapes[i].open, shapes[i].mid, shapes[i].close);
                ASSERT_ERR(load_text(text, buf, sizeof buf, NULL), -EINVAL);
                if (!strstr(buf, "nested too deeply") && !strstr(buf, "nesting too deep"))
                        TAP_FAIL("shape %zu: %.900s", i, buf);
        }
        /* statements */
        size_t o = 0;
        append(text, &o, "on rcptto { ");
        for (int i = 0; i < 30000; i++)
                append(text, &o, "if (1) ");
        append(text, &o, "Accept(); }");
        ASSERT_ERR(load_text(text, buf, sizeof buf, NULL), -EINVAL);
        ASSERT_TRUE(strstr(buf, "nesting too deep") != NULL);
}

static int read_nul(void *userdata, const char *path, size_t max, char **ret_text, size_t *ret_len) {
        static const char text[] = "on rcptto {\n Accept(\0); }";
        char *t = malloc(sizeof text);
        if (!t)
                return -ENOMEM;
        memcpy(t, text, sizeof text);
        *ret_text = t;
        *ret_len = sizeof text - 1;
        return 0;
}

static int read_big(void *userdata, const char *path, size_t max, char **ret_text, size_t *ret_len) {
        return -EFBIG;
}

TEST(file_errors) {
        PolicyDiags diags = {};
        PolicyGeneration *g = NULL;
        char buf[512];
        PolicyLoadOptions opts = { .read_file = read_nul };

        ASSERT_ERR(policy_generation_load("nul.hal", &opts, &diags, &g), -EINVAL);
        ASSERT_TRUE(diags.n > 0);
        policy_diag_format(&diags.items[0], buf, sizeof buf);
        ASSERT_STREQ(buf, "nul.hal:2:9: error: NUL byte in source");
        policy_diags_done(&diags);

        opts.read_file = read_big;
        ASSERT_ERR(policy_generation_load("big.hal", &opts, &diags, &g), -EINVAL);
        policy_diag_format(&diags.items[0], buf, sizeof buf);
        ASSERT_STREQ(buf, "big.hal:1:1: error: cannot read file: File too large (the limit is 1 MiB)");
        policy_diags_done(&diags);

        ASSERT_ERR(policy_generation_load("/nonexistent/x.hal", NULL, &diags, &g), -EINVAL);
        policy_diag_format(&diags.items[0], buf, sizeof buf);
        ASSERT_STREQ(buf, "/nonexistent/x.hal:1:1: error: cannot read file: No such file or directory");
        policy_diags_done(&diags);
        ASSERT_NULL(g);
}

TEST(lexer_tokens) {
        _cleanup_(policy_arena_freep) PolicyArena *a = policy_arena_new();
        _cleanup_free_ PolicyToken *t = NULL;
        size_t n;
        const char *src = "$x ?\?= \"a$b${c}\" => -> :: =~ 1.25 'r'";
        ASSERT_OK(policy_lex(a, src, strlen(src), &t, &n));
        ASSERT_EQ(n, 10);
        ASSERT_EQ(t[9].kind, TOK_EOF);
        ASSERT_EQ(t[0].kind, TOK_VAR);
        ASSERT_STREQ(t[0].text, "x");
        ASSERT_EQ(t[1].kind, TOK_COALESCE_ASSIGN);
        ASSERT_EQ(t[2].kind, TOK_STRING);
        ASSERT_EQ(t[2].n_parts, 3);
        ASSERT_FALSE(t[2].parts[0].is_var);
        ASSERT_TRUE(t[2].parts[1].is_var);
        ASSERT_STREQ(t[2].parts[2].text, "c");
        ASSERT_EQ(t[2].parts[2].col, 12);
        ASSERT_EQ(t[3].kind, TOK_ARROW);
        ASSERT_EQ(t[4].kind, TOK_METHOD);
        ASSERT_EQ(t[5].kind, TOK_SCOPE);
        ASSERT_EQ(t[6].kind, TOK_MATCH);
        ASSERT_EQ(t[7].kind, TOK_NUMBER);
        ASSERT_TRUE(t[7].number == 1.25);
        ASSERT_EQ(t[8].kind, TOK_RAWSTRING);
}

int main(void) {
        return tap_run();
}
