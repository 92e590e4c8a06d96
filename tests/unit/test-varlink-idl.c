/* SPDX-License-Identifier: MIT */
/* Tests for the varlink IDL parser (valid and invalid texts, with the exact
 * error position) and the JSON validator (each type, nullability, unknown
 * and missing fields, limits). */

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "tap.h"
#include "varlink-idl.h"
#include "varlink.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(VarlinkIdl *, varlink_idl_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

/* What every halyard varlink server serves (shared/org.varlink.service.varlink). */
#define org_varlink_service varlink_service_idl

/* Parses or ends the test with the parser's message. */
static VarlinkIdl *parse_ok(const char *text) {
        VarlinkIdlError e = {};
        VarlinkIdl *idl = NULL;
        int r = varlink_idl_parse(text, &idl, &e);
        if (r < 0)
                TAP_FAIL("parse failed (%d) at %u:%u: %s\n--- text:\n%.300s", r, e.line, e.column, e.message, text);
        if (!idl)
                TAP_FAIL("parse succeeded but returned no object");
        return idl;
}

static json_object *json(const char *s) {
        json_object *o = json_tokener_parse(s);
        if (!o && strcmp(s, "null") != 0)
                TAP_FAIL("bad JSON in test: %s", s);
        return o;
}

TEST(org_varlink_service) {
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = parse_ok(org_varlink_service);
        _cleanup_(json_object_putp) json_object *info = NULL, *bad = NULL, *in = NULL,
                                                *param = json("{\"parameter\":\"interface\"}");
        _cleanup_free_ char *field = NULL;

        ASSERT_STREQ(varlink_idl_name(idl), "org.varlink.service");
        ASSERT_EQ(varlink_idl_n_methods(idl), 2);
        ASSERT_STREQ(varlink_idl_method_name(idl, 0), "GetInfo");
        ASSERT_STREQ(varlink_idl_method_name(idl, 1), "GetInterfaceDescription");
        ASSERT_NULL(varlink_idl_method_name(idl, 2));
        ASSERT_TRUE(varlink_idl_has_method(idl, "GetInfo"));
        ASSERT_TRUE(varlink_idl_has_method(idl, "GetInterfaceDescription"));
        ASSERT_FALSE(varlink_idl_has_method(idl, "GetInfoX"));
        ASSERT_FALSE(varlink_idl_has_method(idl, "InterfaceNotFound"));

        static const char *const errors[] = {
                "InterfaceNotFound", "MethodNotFound", "MethodNotImplemented",
                "InvalidParameter", "PermissionDenied", "ExpectedMore",
        };
        for (size_t i = 0; i < ELEMENTSOF(errors); i++) {
                if (!varlink_idl_has_error(idl, errors[i]))
                        TAP_FAIL("error %s not declared", errors[i]);
                if (varlink_idl_has_method(idl, errors[i]))
                        TAP_FAIL("error %s reported as a method", errors[i]);
        }
        ASSERT_FALSE(varlink_idl_has_error(idl, "GetInfo"));

        ASSERT_OK(varlink_idl_validate_input(idl, "GetInfo", NULL, NULL));
        info = json("{\"vendor\":\"halyard\",\"product\":\"halyard-queued\",\"version\":\"0.1\","
                    "\"url\":\"https://example.org\",\"interfaces\":[\"org.varlink.service\",\"io.halyard.Queue\"]}");
        ASSERT_OK(varlink_idl_validate_output(idl, "GetInfo", info, NULL));

        bad = json("{\"vendor\":\"halyard\",\"product\":\"p\",\"version\":\"0.1\",\"url\":\"u\",\"interfaces\":[1]}");
        ASSERT_ERR(varlink_idl_validate_output(idl, "GetInfo", bad, &field), -EINVAL);
        ASSERT_STREQ(field, "interfaces");

        in = json("{\"interface\":\"io.halyard.Queue\"}");
        ASSERT_OK(varlink_idl_validate_input(idl, "GetInterfaceDescription", in, NULL));
        ASSERT_ERR(varlink_idl_validate_input(idl, "GetInfo", in, NULL), -EINVAL);

        ASSERT_OK(varlink_idl_validate_error(idl, "PermissionDenied", NULL, NULL));
        field = (free(field), NULL);
        ASSERT_ERR(varlink_idl_validate_error(idl, "InvalidParameter", NULL, &field), -EINVAL);
        ASSERT_STREQ(field, "parameter");
        ASSERT_OK(varlink_idl_validate_error(idl, "InvalidParameter", param, NULL));
}

static const char *const valid_idls[] = {
        "interface a.b\nmethod F() -> ()\n",
        /* no final newline, CR LF and lone CR line ends, tabs */
        "interface a.b\nmethod F() -> ()",
        "interface a.b\r\nmethod F() -> ()\r\nmethod G() -> ()\r\n",
        "interface a.b\rmethod F() -> ()\r",
        "\tinterface\ta.b\n\tmethod\tF\t(\t)\t->\t(\t)\n",
        /* comments and blank lines everywhere whitespace may be */
        "# doc\n\n   interface a.b # trailing\n\n# method doc\n# more\nmethod F(\n  # c\n  a: int, # c2\n\n  b: ?string # c3\n) # c4\n -> # c5\n ( # c6\n ) # at EOF",
        "interface a.b\nmethod F() -> () # comment at end without newline",
        "interface a.b\nmethod F ( a : int , b : string ) -> ( c : bool )\n",
        /* every scalar, nullable and container form */
        "interface a.b\nmethod F(b: bool, i: int, f: float, s: string, o: object) -> ()\n",
        "interface a.b\nmethod F(a: ?bool, b: ?int, c: ?float, d: ?string, e: ?object) -> ()\n",
        "interface a.b\nmethod F(a: []int, b: [string]int, c: [string](), d: ?[]string, e: ?[string]string) -> ()\n",
        "interface a.b\nmethod F(a: [][]int, b: [string][]int, c: [][string]float, d: ?[][string][]bool) -> ()\n",
        "interface a.b\nmethod F(a: (b: (c: (d: int))), e: ?(x, y), f: [](g: ?string)) -> ()\n",
        "interface a.b\nmethod F(a: (one, two, three), b: []()) -> (c: ())\n",
        /* named types, declared before or after use, recursive */
        "interface a.b\ntype T (a: int)\nmethod F(t: T) -> (u: ?T)\n",
        "interface a.b\nmethod F(t: T) -> (l: []T, m: [string]T)\ntype T (n: ?T, c: []T)\n",
        "interface a.b\ntype A (b: ?B)\ntype B (a: ?A)\nmethod F(a: A) -> ()\n",
        "interface a.b\ntype Color (red, green, blue)\ntype Empty ()\nerror E (c: Color, e: Empty)\n",
        "interface a.b\ntype String (s: string)\ntype Int (i: int)\nmethod F(a: String, b: Int) -> ()\n",
        /* only types, only errors */
        "interface a.b\ntype T ()\n",
        "interface a.b\nerror E ()\n",
        /* interface and field name forms */
        "interface io.halyard.Queue\nmethod F() -> ()\n",
        "interface a-b.c--d.e1\nmethod F() -> ()\n",
        "interface A.1\nmethod F() -> ()\n",
        "interface org.example.foo-bar.x9\nmethod F() -> ()\n",
        "interface a.b\nmethod F(camelCase: int, snake_case_x: int, x1: int, X: int, a1_b2: int) -> ()\n",
        "interface a.b\nmethod F(interface: string, method: string, type: int, error: bool, bool: int) -> ()\n",
        "interface a.b\ntype E (interface, int, a_b, X9)\nmethod F(e: E) -> ()\n",
        "interface a.b\nmethod A9() -> ()\nmethod ABC() -> ()\nmethod Z() -> ()\n",
};

TEST(parse_valid) {
        for (size_t i = 0; i < ELEMENTSOF(valid_idls); i++) {
                VarlinkIdlError e = {};
                VarlinkIdl *idl = NULL;
                int r = varlink_idl_parse(valid_idls[i], &idl, &e);
                if (r < 0)
                        TAP_FAIL("valid case %zu failed (%d) at %u:%u: %s", i, r, e.line, e.column, e.message);
                if (!idl || !varlink_idl_name(idl))
                        TAP_FAIL("valid case %zu: no interface name", i);
                varlink_idl_free(idl);
        }
}

static const struct {
        const char *text;
        unsigned line, column;
        const char *message; /* a substring of the message */
} invalid_idls[] = {
        { "", 1, 1, "expected 'interface'" },
        { "# only a comment\n", 2, 1, "expected 'interface'" },
        { "method Foo() -> ()\n", 1, 1, "expected 'interface'" },
        { "interfaces a.b\nmethod F() -> ()\n", 1, 1, "expected 'interface'" },
        { "interface\n", 2, 1, "expected interface name" },
        { "interface foo\nmethod F() -> ()\n", 1, 11, "invalid interface name 'foo'" },
        { "interface .foo.bar\nmethod F() -> ()\n", 1, 11, "invalid interface name" },
        { "interface foo-.bar\nmethod F() -> ()\n", 1, 11, "invalid interface name" },
        { "interface foo.bar-\nmethod F() -> ()\n", 1, 11, "invalid interface name" },
        { "interface foo..bar\nmethod F() -> ()\n", 1, 11, "invalid interface name" },
        { "interface foo.bar.\nmethod F() -> ()\n", 1, 11, "invalid interface name" },
        { "interface foo_bar.baz\nmethod F() -> ()\n", 1, 11, "invalid interface name 'foo_bar.baz'" },
        { "interface 1foo.bar\nmethod F() -> ()\n", 1, 11, "invalid interface name" },
        { "interface foo.bar\n", 2, 1, "at least one member" },
        { "interface foo.bar # just a comment", 1, 35, "at least one member" },
        { "interface foo.bar method F() -> ()\n", 1, 19, "expected end of line after interface name" },
        { "interface foo.bar\nmethod F() -> () method G() -> ()\n", 2, 18, "expected end of line after declaration" },
        { "interface foo.bar\nmethod F() -> (a: int) trailing\n", 2, 24, "expected end of line after declaration" },
        { "interface foo.bar\nmethod F() -> (a: int))\n", 2, 23, "expected end of line after declaration" },
        { "interface foo.bar\nmethod f() -> ()\n", 2, 8, "invalid method name 'f'" },
        { "interface foo.bar\nmethod F_x() -> ()\n", 2, 8, "invalid method name 'F_x'" },
        { "interface foo.bar\ntype t (a: int)\n", 2, 6, "invalid type name 't'" },
        { "interface foo.bar\nerror 9E ()\n", 2, 7, "invalid error name '9E'" },
        { "interface foo.bar\nmethod () -> ()\n", 2, 8, "expected method name" },
        { "interface foo.bar\nmethod F(a int) -> ()\n", 2, 12, "expected ':' after field name" },
        { "interface foo.bar\nmethod F() ()\n", 2, 12, "expected '->' after method parameters" },
        { "interface foo.bar\nmethod F()\n", 3, 1, "expected '->' after method parameters" },
        { "interface foo.bar\nmethod F() - > ()\n", 2, 12, "expected '->' after method parameters" },
        { "interface foo.bar\nmethod F() -> a\n", 2, 15, "expected '(' after '->'" },
        { "interface foo.bar\nmethod F -> ()\n", 2, 10, "expected '(' after method name" },
        { "interface foo.bar\ntype T string\n", 2, 8, "expected '(' after type name" },
        { "interface foo.bar\ntype T []string\n", 2, 8, "expected '(' after type name" },
        { "interface foo.bar\nmethod F() -> (a: Foo)\n", 2, 19, "unknown type 'Foo'" },
        { "interface foo.bar\nmethod F() -> (a: foo)\n", 2, 19, "unknown type 'foo'" },
        { "interface foo.bar\nmethod F() -> (a: strïng)\n", 2, 19, "unknown type 'str'" },
        { "interface foo.bar\nmethod F() -> (a: Int_x)\n", 2, 19, "unknown type 'Int_x'" },
        { "interface foo.bar\nmethod F() -> (a: string)\ntype T (x: Undefined)\n", 3, 12, "unknown type 'Undefined'" },
        { "interface foo.bar\nmethod F() -> (a: []?int)\n", 2, 21, "'?' is only allowed at the start" },
        { "interface foo.bar\nmethod F() -> (a: ??int)\n", 2, 20, "'?' is only allowed at the start" },
        { "interface foo.bar\nmethod F() -> (a: [string]?int)\n", 2, 27, "'?' is only allowed at the start" },
        { "interface foo.bar\nmethod F() -> (a: ?[]?int)\n", 2, 22, "'?' is only allowed at the start" },
        { "interface foo.bar\nmethod F() -> (a: [int]string)\n", 2, 19, "expected '[]' or '[string]'" },
        { "interface foo.bar\nmethod F() -> (a: [ ]string)\n", 2, 19, "expected '[]' or '[string]'" },
        { "interface foo.bar\nmethod F() -> (a: [])\n", 2, 21, "expected type" },
        { "interface foo.bar\nmethod F() -> (a: )\n", 2, 19, "expected type" },
        { "interface foo.bar\n\n  # doc\n  method F(a: ? int) -> ()\n", 4, 16, "expected type" },
        { "interface foo.bar\ntype T (a: int, a: string)\n", 2, 17, "duplicate field 'a'" },
        { "interface foo.bar\ntype T (b: int, a: int, c: (x: int, x: int), a: int)\n", 2, 37, "duplicate field 'x'" },
        { "interface foo.bar\ntype T (a, b, a)\n", 2, 15, "duplicate enum value 'a'" },
        { "interface foo.bar\ntype T (a: int)\nmethod T() -> ()\n", 3, 8, "duplicate member name 'T'" },
        { "interface foo.bar\nerror E ()\nmethod F() -> ()\nerror E (a: int)\n", 4, 7, "duplicate member name 'E'" },
        { "interface foo.bar\nerror E (a, b)\n", 2, 11, "expected ':' after field name" },
        { "interface foo.bar\nmethod F(a, b) -> ()\n", 2, 11, "expected ':' after field name" },
        { "interface foo.bar\nmethod F() -> (a)\n", 2, 17, "expected ':' after field name" },
        { "interface foo.bar\ntype T (a, b: int)\n", 2, 13, "unexpected ':' in enum" },
        { "interface foo.bar\ntype T (a: int, b)\n", 2, 18, "expected ':' after field name" },
        { "interface foo.bar\ntype T (a: int,)\n", 2, 16, "expected field name" },
        { "interface foo.bar\ntype T (a, )\n", 2, 12, "expected enum value" },
        { "interface foo.bar\ntype T (a: int\n", 3, 1, "expected ',' or ')'" },
        { "interface foo.bar\ntype T (a: int; b: int)\n", 2, 15, "expected ',' or ')'" },
        { "interface foo.bar\nmethod F(", 2, 10, "expected field name" },
        { "interface foo.bar\ntype T (a_: int)\n", 2, 9, "invalid field name 'a_'" },
        { "interface foo.bar\ntype T (a__b: int)\n", 2, 9, "invalid field name 'a__b'" },
        { "interface foo.bar\ntype T (_a: int)\n", 2, 9, "invalid field name '_a'" },
        { "interface foo.bar\ntype T (1a: int)\n", 2, 9, "invalid field name '1a'" },
        { "interface foo.bar\ntype T (a-b: int)\n", 2, 10, "expected ',' or ')'" },
        { "interface foo.bar\nmethod F(a-b: int) -> ()\n", 2, 11, "expected ':' after field name" },
        { "interface foo.bar\ntype T (ok, no_)\n", 2, 13, "invalid enum value 'no_'" },
        { "interface foo.bar\nmethod F() -> ()\nerror E (a: string)\ntype X (e: E)\n", 4, 12, "'E' is an error, not a type" },
        { "interface foo.bar\nmethod F() -> ()\ntype X (e: []F)\n", 3, 14, "'F' is a method, not a type" },
        { "interface foo.bar\nmethod F() -> ()\nfoo Bar()\n", 3, 1, "expected 'type', 'method' or 'error', got 'foo'" },
        { "interface foo.bar\nmethod F() -> ()\ninterface foo.baz\n", 3, 1, "got 'interface'" },
        { "interface foo.bar\nmethod F() -> ()\n-\n", 3, 1, "expected 'type', 'method' or 'error'" },
        { "interface foo.bar\r\nmethod F() -> (x: Bad)\r\n", 2, 19, "unknown type 'Bad'" },
        { "interface foo.bar\rmethod F() -> (x: Bad)\r", 2, 19, "unknown type 'Bad'" },
        { "interface foo.bar\nmethod F() -> (x: int)\n\x01\n", 3, 1, "expected 'type', 'method' or 'error'" },
};

TEST(parse_invalid) {
        for (size_t i = 0; i < ELEMENTSOF(invalid_idls); i++) {
                VarlinkIdlError e = {};
                VarlinkIdl *idl = NULL;
                int r = varlink_idl_parse(invalid_idls[i].text, &idl, &e);
                if (r != -EINVAL) {
                        varlink_idl_free(idl);
                        TAP_FAIL("invalid case %zu: returned %d, expected -EINVAL", i, r);
                }
                if (idl)
                        TAP_FAIL("invalid case %zu: *ret was set on failure", i);
                if (e.line != invalid_idls[i].line || e.column != invalid_idls[i].column ||
                    !strstr(e.message, invalid_idls[i].message))
                        TAP_FAIL("invalid case %zu: got %u:%u \"%s\", expected %u:%u \"%s\"", i,
                                 e.line, e.column, e.message,
                                 invalid_idls[i].line, invalid_idls[i].column, invalid_idls[i].message);
        }
}

TEST(parse_error_without_reterr) {
        VarlinkIdl *idl = NULL;
        ASSERT_ERR(varlink_idl_parse("interface x\n", &idl, NULL), -EINVAL);
        ASSERT_NULL(idl);
}

TEST(parse_success_leaves_reterr) {
        VarlinkIdlError e = { .line = 7, .column = 9, .message = "untouched" };
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = NULL;
        ASSERT_OK(varlink_idl_parse("interface a.b\nmethod F() -> ()\n", &idl, &e));
        ASSERT_EQ(e.line, 7);
        ASSERT_EQ(e.column, 9);
        ASSERT_STREQ(e.message, "untouched");
}

TEST(method_order) {
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = parse_ok(
                "interface a.b\n"
                "method Zeta() -> ()\n"
                "type Alpha (x: int)\n"
                "method Beta() -> ()\n"
                "error Gamma ()\n"
                "method Alpha2() -> ()\n");
        ASSERT_EQ(varlink_idl_n_methods(idl), 3);
        ASSERT_STREQ(varlink_idl_method_name(idl, 0), "Zeta");
        ASSERT_STREQ(varlink_idl_method_name(idl, 1), "Beta");
        ASSERT_STREQ(varlink_idl_method_name(idl, 2), "Alpha2");
        ASSERT_NULL(varlink_idl_method_name(idl, 3));
        ASSERT_FALSE(varlink_idl_has_method(idl, "Alpha"));
        ASSERT_FALSE(varlink_idl_has_error(idl, "Alpha"));
        ASSERT_TRUE(varlink_idl_has_error(idl, "Gamma"));
        ASSERT_FALSE(varlink_idl_has_method(idl, ""));
        ASSERT_FALSE(varlink_idl_has_method(idl, "zeta"));
}

/* ---- Limits ---------------------------------------------------------- */

/* Appends s at p (no terminator); returns the new end. */
static char *append(char *p, const char *s) {
        size_t n = strlen(s);
        memcpy(p, s, n);
        return p + n;
}

static char *nested_structs(unsigned levels) {
        /* method F(a: (a: (... a: int ...))): levels counts every '(' */
        char *s = malloc(64 + (size_t) levels * 8);
        if (!s)
                return NULL;
        char *p = append(s, "interface a.b\nmethod F(");
        for (unsigned i = 1; i < levels; i++)
                p = append(p, "a: (");
        p = append(p, "a: int");
        for (unsigned i = 0; i < levels; i++)
                p = append(p, ")");
        p = append(p, " -> ()\n");
        *p = 0;
        return s;
}

static char *nested_arrays(unsigned levels) {
        /* method F(a: [][]...int): the method's '(' is one level */
        char *s = malloc(64 + (size_t) levels * 2);
        if (!s)
                return NULL;
        char *p = append(s, "interface a.b\nmethod F(a: ");
        for (unsigned i = 0; i < levels; i++)
                p = append(p, "[]");
        p = append(p, "int) -> ()\n");
        *p = 0;
        return s;
}

TEST(limit_depth) {
        _cleanup_free_ char *ok = nested_structs(64), *deep = nested_structs(65);
        _cleanup_free_ char *ok_a = nested_arrays(63), *deep_a = nested_arrays(64);
        VarlinkIdlError e = {};
        VarlinkIdl *idl = NULL;

        ASSERT_NOT_NULL(ok);
        ASSERT_NOT_NULL(deep);
        ASSERT_NOT_NULL(ok_a);
        ASSERT_NOT_NULL(deep_a);

        varlink_idl_free(parse_ok(ok));
        ASSERT_ERR(varlink_idl_parse(deep, &idl, &e), -EINVAL);
        ASSERT_TRUE(strstr(e.message, "nesting too deep") != NULL);
        /* the 65th '(' ends the 64th "a: (", which starts at 10 + 63 * 4 */
        ASSERT_EQ(e.line, 2);
        ASSERT_EQ(e.column, 10 + 63 * 4 + 3);

        varlink_idl_free(parse_ok(ok_a));
        ASSERT_ERR(varlink_idl_parse(deep_a, &idl, &e), -EINVAL);
        ASSERT_TRUE(strstr(e.message, "nesting too deep") != NULL);
        ASSERT_EQ(e.column, 13 + 63 * 2);
        ASSERT_NULL(idl);
}

TEST(limit_hostile_nesting) {
        /* Far beyond the limit: must fail cleanly, not exhaust the stack. */
        const unsigned n = 200000;
        _cleanup_free_ char *s = malloc(32 + n * 4);
        VarlinkIdlError e = {};
        VarlinkIdl *idl = NULL;

        ASSERT_NOT_NULL(s);
        strcpy(s, "interface a.b\nmethod F(");
        char *p = s + strlen(s);
        for (unsigned i = 0; i < n; i++, p += 4)
                memcpy(p, "a: (", 4);
        *p = 0;
        ASSERT_ERR(varlink_idl_parse(s, &idl, &e), -EINVAL);
        ASSERT_TRUE(strstr(e.message, "nesting too deep") != NULL);

        strcpy(s, "interface a.b\nmethod F(a: ");
        p = s + strlen(s);
        for (unsigned i = 0; i < n; i++, p += 2)
                memcpy(p, "[]", 2);
        *p = 0;
        ASSERT_ERR(varlink_idl_parse(s, &idl, &e), -EINVAL);
        ASSERT_TRUE(strstr(e.message, "nesting too deep") != NULL);
}

static char *many_members(unsigned n) {
        char *s = malloc(32 + (size_t) n * 32);
        if (!s)
                return NULL;
        char *p = append(s, "interface a.b\n");
        for (unsigned i = 0; i < n; i++) {
                char line[32];
                snprintf(line, sizeof line, "method M%u() -> ()\n", i);
                p = append(p, line);
        }
        *p = 0;
        return s;
}

TEST(limit_members) {
        _cleanup_free_ char *ok = many_members(4096), *over = many_members(4097);
        VarlinkIdlError e = {};
        VarlinkIdl *idl = NULL;

        ASSERT_NOT_NULL(ok);
        ASSERT_NOT_NULL(over);
        idl = parse_ok(ok);
        ASSERT_EQ(varlink_idl_n_methods(idl), 4096);
        ASSERT_STREQ(varlink_idl_method_name(idl, 4095), "M4095");
        ASSERT_TRUE(varlink_idl_has_method(idl, "M1234"));
        ASSERT_FALSE(varlink_idl_has_method(idl, "M4096"));
        idl = varlink_idl_free(idl);

        ASSERT_ERR(varlink_idl_parse(over, &idl, &e), -EINVAL);
        ASSERT_EQ(e.line, 4098);
        ASSERT_EQ(e.column, 1);
        ASSERT_TRUE(strstr(e.message, "too many members") != NULL);
}

TEST(limit_size) {
        const size_t max = 1024 * 1024;
        _cleanup_free_ char *s = malloc(max + 2);
        VarlinkIdlError e = {};
        VarlinkIdl *idl = NULL;

        ASSERT_NOT_NULL(s);
        const char *head = "interface a.b\nmethod F() -> ()\n#";
        memset(s, 'x', max + 1);
        memcpy(s, head, strlen(head));
        s[max] = 0;
        varlink_idl_free(parse_ok(s)); /* exactly 1 MiB */

        s[max] = 'x';
        s[max + 1] = 0;
        ASSERT_ERR(varlink_idl_parse(s, &idl, &e), -EINVAL);
        ASSERT_EQ(e.line, 1);
        ASSERT_EQ(e.column, 1);
        ASSERT_TRUE(strstr(e.message, "too long") != NULL);
        ASSERT_NULL(idl);
}

/* ---- Validation ------------------------------------------------------ */

static const char test_idl[] =
        "interface io.halyard.Test\n"
        "type Color (red, green, blue)\n"
        "type Point (x: int, y: int)\n"
        "type Node (value: int, children: ?[]Node)\n"
        "type Tags ()\n"
        "method Scalars(b: bool, i: int, f: float, s: string, o: object) -> ()\n"
        "method Nullable(a: ?int, b: ?[]string, c: ?[string]int, d: ?Point, e: ?Color) -> ()\n"
        "method Compound(color: Color, mode: (one, two), points: []Point, map: [string]int,\n"
        "                set: [string](), tags: [string]Tags,\n"
        "                nested: (p: Point, q: ?(r: []float)), tree: Node) -> (ok: bool)\n"
        "method NoArgs() -> ()\n"
        "error Failed (reason: string, code: ?int)\n"
        "error Empty ()\n";

#define COMPOUND_OK                                                                            \
        "\"color\":\"red\",\"mode\":\"two\",\"points\":[{\"x\":1,\"y\":2},{\"x\":-3,\"y\":0}]," \
        "\"map\":{\"a\":1},\"set\":{\"x\":{}},\"tags\":{},"                                      \
        "\"nested\":{\"p\":{\"x\":0,\"y\":0},\"q\":{\"r\":[1,2.5]}},"                             \
        "\"tree\":{\"value\":1,\"children\":[{\"value\":2},{\"value\":3,\"children\":[]}]}"

static const struct {
        const char *method;
        const char *json;  /* NULL: no parameters */
        const char *field; /* NULL: valid */
} input_cases[] = {
        /* scalars */
        { "Scalars", "{\"b\":true,\"i\":1,\"f\":1.5,\"s\":\"x\",\"o\":{}}", NULL },
        { "Scalars", "{\"b\":false,\"i\":-9223372036854775807,\"f\":2,\"s\":\"\",\"o\":{\"any\":[1,null]}}", NULL },
        { "Scalars", "{\"b\":0,\"i\":1,\"f\":1.5,\"s\":\"x\",\"o\":{}}", "b" },
        { "Scalars", "{\"b\":\"true\",\"i\":1,\"f\":1.5,\"s\":\"x\",\"o\":{}}", "b" },
        { "Scalars", "{\"b\":true,\"i\":1.0,\"f\":1.5,\"s\":\"x\",\"o\":{}}", "i" },
        { "Scalars", "{\"b\":true,\"i\":\"1\",\"f\":1.5,\"s\":\"x\",\"o\":{}}", "i" },
        { "Scalars", "{\"b\":true,\"i\":1,\"f\":\"1.5\",\"s\":\"x\",\"o\":{}}", "f" },
        { "Scalars", "{\"b\":true,\"i\":1,\"f\":true,\"s\":\"x\",\"o\":{}}", "f" },
        { "Scalars", "{\"b\":true,\"i\":1,\"f\":1.5,\"s\":7,\"o\":{}}", "s" },
        { "Scalars", "{\"b\":true,\"i\":1,\"f\":1.5,\"s\":null,\"o\":{}}", "s" },
        { "Scalars", "{\"b\":true,\"i\":1,\"f\":1.5,\"s\":\"x\",\"o\":[]}", "o" },
        { "Scalars", "{\"b\":true,\"i\":1,\"f\":1.5,\"s\":\"x\",\"o\":\"{}\"}", "o" },
        { "Scalars", "{\"b\":true,\"i\":1,\"f\":1.5,\"s\":\"x\"}", "o" },
        { "Scalars", "{\"o\":{},\"s\":\"x\",\"f\":1.5,\"b\":true}", "i" },
        { "Scalars", "{}", "b" },
        { "Scalars", NULL, "b" },
        { "Scalars", "{\"b\":true,\"i\":1,\"f\":1.5,\"s\":\"x\",\"o\":{},\"extra\":1}", "extra" },
        { "Scalars", "{\"B\":true}", "B" },
        /* nullable: absent, null or of the type */
        { "Nullable", "{}", NULL },
        { "Nullable", NULL, NULL },
        { "Nullable", "null", NULL },
        { "Nullable", "{\"a\":null,\"b\":null,\"c\":null,\"d\":null,\"e\":null}", NULL },
        { "Nullable", "{\"a\":1,\"b\":[\"x\"],\"c\":{\"k\":1},\"d\":{\"x\":1,\"y\":2},\"e\":\"blue\"}", NULL },
        { "Nullable", "{\"a\":\"x\"}", "a" },
        { "Nullable", "{\"b\":[null]}", "b" },
        { "Nullable", "{\"b\":\"x\"}", "b" },
        { "Nullable", "{\"c\":{\"k\":\"v\"}}", "c" },
        { "Nullable", "{\"c\":{\"k\":null}}", "c" },
        { "Nullable", "{\"c\":[]}", "c" },
        { "Nullable", "{\"d\":{\"x\":1}}", "d" },
        { "Nullable", "{\"d\":{\"x\":1,\"y\":2,\"z\":3}}", "d" },
        { "Nullable", "{\"d\":{\"x\":1,\"y\":null}}", "d" },
        { "Nullable", "{\"e\":\"Blue\"}", "e" },
        { "Nullable", "{\"f\":null}", "f" },
        /* enums, arrays, maps, sets, nested and recursive structs */
        { "Compound", "{" COMPOUND_OK "}", NULL },
        { "Compound", "{" COMPOUND_OK ",\"x\":1}", "x" },
        { "Compound", "{" COMPOUND_OK ",\"color\":\"purple\"}", "color" },
        { "Compound", "{" COMPOUND_OK ",\"color\":\"\"}", "color" },
        { "Compound", "{" COMPOUND_OK ",\"color\":0}", "color" },
        { "Compound", "{" COMPOUND_OK ",\"mode\":\"three\"}", "mode" },
        { "Compound", "{" COMPOUND_OK ",\"mode\":\"red\"}", "mode" },
        { "Compound", "{" COMPOUND_OK ",\"points\":[]}", NULL },
        { "Compound", "{" COMPOUND_OK ",\"points\":{}}", "points" },
        { "Compound", "{" COMPOUND_OK ",\"points\":[{\"x\":1,\"y\":2},{\"x\":1}]}", "points" },
        { "Compound", "{" COMPOUND_OK ",\"points\":[{\"x\":1,\"y\":2},null]}", "points" },
        { "Compound", "{" COMPOUND_OK ",\"points\":[{\"x\":1,\"y\":2.5}]}", "points" },
        { "Compound", "{" COMPOUND_OK ",\"map\":{}}", NULL },
        { "Compound", "{" COMPOUND_OK ",\"map\":{\"a\":1,\"b\":\"2\"}}", "map" },
        { "Compound", "{" COMPOUND_OK ",\"map\":[1]}", "map" },
        { "Compound", "{" COMPOUND_OK ",\"set\":{\"a\":{},\"b\":{},\"c\":1,\"d\":null}}", NULL },
        { "Compound", "{" COMPOUND_OK ",\"set\":[\"a\"]}", "set" },
        { "Compound", "{" COMPOUND_OK ",\"tags\":{\"a\":{}}}", NULL },
        { "Compound", "{" COMPOUND_OK ",\"tags\":\"a\"}", "tags" },
        { "Compound", "{" COMPOUND_OK ",\"nested\":{\"p\":{\"x\":0,\"y\":0}}}", NULL },
        { "Compound", "{" COMPOUND_OK ",\"nested\":{\"p\":{\"x\":0,\"y\":0},\"q\":null}}", NULL },
        { "Compound", "{" COMPOUND_OK ",\"nested\":{\"p\":{\"x\":0,\"y\":0},\"q\":{}}}", "nested" },
        { "Compound", "{" COMPOUND_OK ",\"nested\":{\"p\":{\"x\":0,\"y\":0},\"q\":{\"r\":[\"1\"]}}}", "nested" },
        { "Compound", "{" COMPOUND_OK ",\"nested\":{\"p\":{\"x\":0,\"y\":\"0\"}}}", "nested" },
        { "Compound", "{" COMPOUND_OK ",\"nested\":{\"p\":{\"x\":0,\"y\":0},\"extra\":1}}", "nested" },
        { "Compound", "{" COMPOUND_OK ",\"tree\":{\"value\":1,\"children\":[{\"value\":2,\"children\":[{}]}]}}", "tree" },
        { "Compound", "{" COMPOUND_OK ",\"tree\":{\"value\":1,\"children\":[{\"value\":2,\"children\":[{\"value\":\"3\"}]}]}}", "tree" },
        { "Compound", "{" COMPOUND_OK ",\"tree\":{\"value\":1,\"children\":null}}", NULL },
        { "Compound", "{\"mode\":\"one\"}", "color" },
        /* no arguments */
        { "NoArgs", NULL, NULL },
        { "NoArgs", "{}", NULL },
        { "NoArgs", "{\"a\":1}", "a" },
        { "NoArgs", "{\"a\":null}", "a" },
        { "NoArgs", "[]", "parameters" },
        { "NoArgs", "\"x\"", "parameters" },
        { "NoArgs", "1", "parameters" },
};

TEST(validate_input_table) {
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = parse_ok(test_idl);

        for (size_t i = 0; i < ELEMENTSOF(input_cases); i++) {
                json_object *params = input_cases[i].json ? json(input_cases[i].json) : NULL;
                char *field = NULL;
                int r = varlink_idl_validate_input(idl, input_cases[i].method, params, &field);
                json_object_put(params);

                if (!input_cases[i].field) {
                        if (r != 0 || field) {
                                TAP_FAIL("input case %zu (%s %s): returned %d, field %s, expected valid", i,
                                         input_cases[i].method, input_cases[i].json ?: "NULL",
                                         r, field ?: "(null)");
                        }
                        continue;
                }
                if (r != -EINVAL || !field || strcmp(field, input_cases[i].field) != 0) {
                        TAP_FAIL("input case %zu (%s %s): returned %d, field %s, expected -EINVAL, field %s",
                                 i, input_cases[i].method, input_cases[i].json ?: "NULL",
                                 r, field ?: "(null)", input_cases[i].field);
                }
                free(field);
        }
}

TEST(validate_output_and_errors) {
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = parse_ok(test_idl);
        _cleanup_(json_object_putp) json_object *ok = json("{\"ok\":true}"), *empty = json("{}"),
                                                *wrong = json("{\"ok\":1}"), *failed = json("{\"reason\":\"disk\"}"),
                                                *failed2 = json("{\"reason\":\"disk\",\"code\":null}"),
                                                *failed3 = json("{\"reason\":\"disk\",\"code\":1.5}"),
                                                *code_only = json("{\"code\":1}");
        char *field = NULL;

        ASSERT_OK(varlink_idl_validate_output(idl, "Compound", ok, NULL));
        ASSERT_ERR(varlink_idl_validate_output(idl, "Compound", empty, &field), -EINVAL);
        ASSERT_STREQ(field, "ok");
        field = (free(field), NULL);
        ASSERT_ERR(varlink_idl_validate_output(idl, "Compound", NULL, &field), -EINVAL);
        ASSERT_STREQ(field, "ok");
        field = (free(field), NULL);
        ASSERT_ERR(varlink_idl_validate_output(idl, "Compound", wrong, &field), -EINVAL);
        ASSERT_STREQ(field, "ok");
        field = (free(field), NULL);
        ASSERT_OK(varlink_idl_validate_output(idl, "Scalars", NULL, NULL));
        ASSERT_OK(varlink_idl_validate_output(idl, "Scalars", empty, NULL));
        ASSERT_ERR(varlink_idl_validate_output(idl, "Scalars", ok, NULL), -EINVAL);

        ASSERT_OK(varlink_idl_validate_error(idl, "Failed", failed, NULL));
        ASSERT_OK(varlink_idl_validate_error(idl, "Failed", failed2, NULL));
        ASSERT_ERR(varlink_idl_validate_error(idl, "Failed", failed3, &field), -EINVAL);
        ASSERT_STREQ(field, "code");
        field = (free(field), NULL);
        ASSERT_ERR(varlink_idl_validate_error(idl, "Failed", code_only, &field), -EINVAL);
        ASSERT_STREQ(field, "reason");
        field = (free(field), NULL);
        ASSERT_ERR(varlink_idl_validate_error(idl, "Failed", NULL, NULL), -EINVAL);
        ASSERT_OK(varlink_idl_validate_error(idl, "Empty", NULL, NULL));
        ASSERT_OK(varlink_idl_validate_error(idl, "Empty", empty, NULL));
        ASSERT_ERR(varlink_idl_validate_error(idl, "Empty", ok, &field), -EINVAL);
        ASSERT_STREQ(field, "ok");
        field = (free(field), NULL);
}

TEST(validate_not_declared) {
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = parse_ok(test_idl);
        char *field = NULL;

        ASSERT_ERR(varlink_idl_validate_input(idl, "Nope", NULL, &field), -ENOENT);
        ASSERT_ERR(varlink_idl_validate_output(idl, "Nope", NULL, &field), -ENOENT);
        ASSERT_ERR(varlink_idl_validate_error(idl, "Nope", NULL, &field), -ENOENT);
        /* a member of another kind is not declared as that kind */
        ASSERT_ERR(varlink_idl_validate_input(idl, "Failed", NULL, &field), -ENOENT);
        ASSERT_ERR(varlink_idl_validate_input(idl, "Color", NULL, &field), -ENOENT);
        ASSERT_ERR(varlink_idl_validate_output(idl, "Point", NULL, &field), -ENOENT);
        ASSERT_ERR(varlink_idl_validate_error(idl, "Scalars", NULL, &field), -ENOENT);
        ASSERT_ERR(varlink_idl_validate_error(idl, "Color", NULL, &field), -ENOENT);
        ASSERT_ERR(varlink_idl_validate_input(idl, "io.halyard.Test.Scalars", NULL, &field), -ENOENT);
        ASSERT_NULL(field);
}

TEST(validate_ret_field_untouched_on_success) {
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = parse_ok(test_idl);
        char sentinel[] = "sentinel";
        char *field = sentinel;

        ASSERT_OK(varlink_idl_validate_input(idl, "NoArgs", NULL, &field));
        ASSERT_TRUE(field == sentinel);
        ASSERT_ERR(varlink_idl_validate_input(idl, "Missing", NULL, &field), -ENOENT);
        ASSERT_TRUE(field == sentinel);
}

TEST(validate_enum_embedded_nul) {
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = parse_ok(test_idl);
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        _cleanup_free_ char *field = NULL;

        ASSERT_NOT_NULL(o);
        ASSERT_OK(json_object_object_add(o, "e", json_object_new_string_len("red\0x", 5)));
        ASSERT_ERR(varlink_idl_validate_input(idl, "Nullable", o, &field), -EINVAL);
        ASSERT_STREQ(field, "e");
        ASSERT_OK(json_object_object_add(o, "e", json_object_new_string_len("red", 3)));
        ASSERT_OK(varlink_idl_validate_input(idl, "Nullable", o, NULL));
}

/* A hand-built object far deeper than json-c's parser would allow must be
 * refused, not recursed into without end. */
TEST(validate_deep_json) {
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = parse_ok(
                "interface a.b\ntype N (n: ?N)\nmethod F(n: N) -> ()\n");
        _cleanup_free_ char *field = NULL;

        for (unsigned depth = 1; depth <= 100000; depth *= 10) {
                json_object *inner = json_object_new_object();
                ASSERT_NOT_NULL(inner);
                for (unsigned i = 0; i < depth; i++) {
                        json_object *outer = json_object_new_object();
                        ASSERT_NOT_NULL(outer);
                        ASSERT_OK(json_object_object_add(outer, "n", inner));
                        inner = outer;
                }
                int r = varlink_idl_validate_input(idl, "F", inner, &field);
                /* json_object_put() recurses itself; keep it out of trouble */
                while (inner) {
                        json_object *next = NULL;
                        json_object_object_get_ex(inner, "n", &next);
                        json_object_get(next);
                        json_object_put(inner);
                        inner = next;
                }
                /* up to 128 levels are followed */
                if (depth <= 100) {
                        ASSERT_OK(r);
                        ASSERT_NULL(field);
                } else {
                        ASSERT_ERR(r, -EINVAL);
                        ASSERT_STREQ(field, "n");
                        field = (free(field), NULL);
                }
        }
}

TEST(validate_int_vs_float) {
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = parse_ok(
                "interface a.b\nmethod F(i: int, f: float) -> ()\n");
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();

        ASSERT_NOT_NULL(o);
        ASSERT_OK(json_object_object_add(o, "i", json_object_new_int64(INT64_MIN)));
        ASSERT_OK(json_object_object_add(o, "f", json_object_new_uint64(UINT64_MAX)));
        ASSERT_OK(varlink_idl_validate_input(idl, "F", o, NULL));
        ASSERT_OK(json_object_object_add(o, "i", json_object_new_double(3.0)));
        ASSERT_ERR(varlink_idl_validate_input(idl, "F", o, NULL), -EINVAL);
        ASSERT_OK(json_object_object_add(o, "i", json_object_new_uint64(UINT64_MAX)));
        ASSERT_OK(json_object_object_add(o, "f", json_object_new_double(-0.5)));
        ASSERT_OK(varlink_idl_validate_input(idl, "F", o, NULL));
}

TEST(forward_and_recursive_types) {
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = parse_ok(
                "interface a.b\n"
                "method F(a: A) -> (l: [string]B)\n"
                "type A (b: ?B, v: int)\n"
                "type B (a: ?A, kind: Kind)\n"
                "type Kind (x, y)\n");
        _cleanup_(json_object_putp) json_object *in = json("{\"a\":{\"v\":1,\"b\":{\"kind\":\"x\",\"a\":{\"v\":2}}}}"),
                                                *bad = json("{\"a\":{\"v\":1,\"b\":{\"kind\":\"z\"}}}"),
                                                *out = json("{\"l\":{\"k\":{\"kind\":\"y\"}}}");
        _cleanup_free_ char *field = NULL;

        ASSERT_OK(varlink_idl_validate_input(idl, "F", in, NULL));
        ASSERT_ERR(varlink_idl_validate_input(idl, "F", bad, &field), -EINVAL);
        ASSERT_STREQ(field, "a");
        ASSERT_OK(varlink_idl_validate_output(idl, "F", out, NULL));
}

int main(void) {
        return tap_run();
}
