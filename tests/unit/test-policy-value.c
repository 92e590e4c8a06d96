/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "policy-value.h"
#include "tap.h"

static PolicyValue *from_json(const char *text) {
        json_object *j = json_tokener_parse(text);
        PolicyValue *v = NULL;
        int r = policy_value_from_json(j, &v);
        json_object_put(j);
        return r < 0 ? NULL : v;
}

static char *to_json(const PolicyValue *v) {
        char *s = NULL;
        return policy_value_to_json_string(v, &s) < 0 ? NULL : s;
}

TEST(singletons) {
        ASSERT_EQ(policy_value_type(policy_none()), POLICY_TYPE_NONE);
        ASSERT_TRUE(policy_value_bool(policy_bool(true)));
        ASSERT_FALSE(policy_value_bool(policy_bool(false)));
        /* ref/unref on singletons are no-ops */
        ASSERT_TRUE(policy_value_ref(policy_none()) == policy_none());
        ASSERT_NULL(policy_value_unref(policy_none()));
        ASSERT_EQ(policy_value_type(policy_none()), POLICY_TYPE_NONE);
        ASSERT_NULL(policy_value_unref(NULL));
}

TEST(truthiness) {
        _cleanup_(policy_value_unrefp) PolicyValue *zero = policy_number_new(0), *one = policy_number_new(1),
                                                   *empty = policy_string_new("", 0), *s = policy_string_new_cstr("0"),
                                                   *a = policy_array_new();
        ASSERT_FALSE(policy_value_truthy(policy_none()));
        ASSERT_FALSE(policy_value_truthy(policy_bool(false)));
        ASSERT_FALSE(policy_value_truthy(zero));
        ASSERT_FALSE(policy_value_truthy(empty));
        ASSERT_FALSE(policy_value_truthy(a));
        ASSERT_TRUE(policy_value_truthy(one));
        ASSERT_TRUE(policy_value_truthy(s)); /* "0" is a non-empty string */
        ASSERT_OK(policy_array_push(a, policy_none()));
        ASSERT_TRUE(policy_value_truthy(a));
}

TEST(strings_binary_safe) {
        _cleanup_(policy_value_unrefp) PolicyValue *s = policy_string_new("a\0b", 3), *t = policy_string_new("a\0c", 3);
        size_t len;
        const char *p = policy_value_string(s, &len);
        ASSERT_EQ(len, 3);
        ASSERT_EQ(p[1], 0);
        ASSERT_EQ(p[3], 0); /* NUL after the bytes */
        ASSERT_FALSE(policy_value_equal(s, t));
        ASSERT_NULL(policy_string_new("x", POLICY_STRING_MAX + 1));
}

TEST(equality_is_strict) {
        _cleanup_(policy_value_unrefp) PolicyValue *one = policy_number_new(1), *s1 = policy_string_new_cstr("1");
        ASSERT_FALSE(policy_value_equal(one, policy_bool(true)));
        ASSERT_FALSE(policy_value_equal(one, s1));
        ASSERT_FALSE(policy_value_equal(policy_none(), policy_bool(false)));
        ASSERT_TRUE(policy_value_equal(policy_none(), policy_none()));
}

TEST(arrays_keys_and_order) {
        _cleanup_(policy_value_unrefp) PolicyValue *a = policy_array_new(), *k = policy_string_new_cstr("k"),
                                                   *half = policy_number_new(1.5), *v = policy_number_new(7);
        ASSERT_OK(policy_array_push(a, v));          /* key 0 */
        ASSERT_OK(policy_array_set(a, k, v));        /* key "k" */
        ASSERT_OK(policy_array_push(a, v));          /* key 1 */
        ASSERT_ERR(policy_array_set(a, half, v), -EINVAL);
        ASSERT_ERR(policy_array_set(a, policy_bool(true), v), -EINVAL);
        ASSERT_EQ(policy_array_size(a), 3);
        _cleanup_free_ char *j = to_json(a);
        ASSERT_STREQ(j, "{\"0\":7,\"k\":7,\"1\":7}");
        ASSERT_NOT_NULL(policy_array_get_str(a, "k"));
        ASSERT_NULL(policy_array_get_str(a, "missing"));
}

TEST(arrays_index_many_keys) {
        _cleanup_(policy_value_unrefp) PolicyValue *a = policy_array_new();
        char buf[32];
        for (int i = 0; i < 5000; i++) {
                snprintf(buf, sizeof buf, "key%d", i);
                _cleanup_(policy_value_unrefp) PolicyValue *v = policy_number_new(i);
                ASSERT_OK(policy_array_set_str(a, buf, v));
        }
        for (int i = 0; i < 5000; i += 7) {
                snprintf(buf, sizeof buf, "key%d", i);
                PolicyValue *v = policy_array_get_str(a, buf);
                ASSERT_NOT_NULL(v);
                ASSERT_EQ(policy_value_number(v), i);
        }
        /* replacing keeps the size */
        _cleanup_(policy_value_unrefp) PolicyValue *x = policy_number_new(-1);
        ASSERT_OK(policy_array_set_str(a, "key42", x));
        ASSERT_EQ(policy_array_size(a), 5000);
        ASSERT_EQ(policy_value_number(policy_array_get_str(a, "key42")), -1);
}

TEST(arrays_limit) {
        _cleanup_(policy_value_unrefp) PolicyValue *a = policy_array_new();
        for (unsigned i = 0; i < POLICY_ARRAY_MAX; i++)
                ASSERT_OK(policy_array_push(a, policy_none()));
        ASSERT_ERR(policy_array_push(a, policy_none()), -E2BIG);
}

TEST(sizes) {
        static const char thousand[1000] = "x";
        _cleanup_(policy_value_unrefp) PolicyValue *s = policy_string_new(thousand, sizeof thousand), *a = policy_array_new(),
                                                   *t = policy_string_new_cstr("y");
        ASSERT_TRUE(policy_value_size(s) > 1000);
        size_t empty = policy_value_size(a);
        ASSERT_OK(policy_array_push(a, s));
        ASSERT_OK(policy_array_push(a, s));
        ASSERT_TRUE(policy_value_size(a) > empty + 2000);
        /* replacing an element gives its bytes back */
        _cleanup_(policy_value_unrefp) PolicyValue *k = policy_number_new(0);
        ASSERT_OK(policy_array_set(a, k, t));
        ASSERT_TRUE(policy_value_size(a) < empty + 1500);
        ASSERT_EQ(policy_value_size(policy_none()), 0);
}

TEST(nesting_limit) {
        PolicyValue *v = policy_array_new();
        for (unsigned i = 1; i <= POLICY_VALUE_DEPTH_MAX; i++) {
                PolicyValue *outer = policy_array_new();
                ASSERT_OK(policy_array_push(outer, v));
                policy_value_unref(v);
                v = outer;
        }
        _cleanup_(policy_value_unrefp) PolicyValue *top = policy_array_new();
        ASSERT_ERR(policy_array_push(top, v), -ELOOP);
        ASSERT_NULL(policy_object_new("Mail", v));
        policy_value_unref(v);
}

TEST(copy_on_write) {
        _cleanup_(policy_value_unrefp) PolicyValue *a = from_json("[1,2,3]");
        PolicyValue *b = policy_value_ref(a);
        ASSERT_OK(policy_array_unshare(&b)); /* shared: copies */
        ASSERT_TRUE(a != b);
        ASSERT_OK(policy_array_push(b, policy_none()));
        ASSERT_EQ(policy_array_size(a), 3);
        ASSERT_EQ(policy_array_size(b), 4);
        PolicyValue *c = b;
        ASSERT_OK(policy_array_unshare(&c)); /* unshared: same object */
        ASSERT_TRUE(c == b);
        policy_value_unref(c);
}

TEST(json_round_trip) {
        static const char *const cases[] = {
                "null", "true", "false", "1", "-2.5", "\"x\"", "[]", "[1,[2,[3]]]",
                "{\"a\":{\"b\":[null,true]},\"c\":\"d\"}", "9007199254740992",
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(policy_value_unrefp) PolicyValue *v = from_json(cases[i]);
                ASSERT_NOT_NULL(v);
                _cleanup_free_ char *s = to_json(v);
                ASSERT_STREQ(s, cases[i]);
        }
}

TEST(json_depth_limit) {
        char buf[200];
        size_t n = 0;
        for (unsigned i = 0; i < POLICY_JSON_DEPTH_MAX + 2; i++)
                buf[n++] = '[';
        for (unsigned i = 0; i < POLICY_JSON_DEPTH_MAX + 2; i++)
                buf[n++] = ']';
        buf[n] = 0;
        json_tokener *tok = json_tokener_new_ex(200);
        json_object *j = json_tokener_parse_ex(tok, buf, (int) n);
        json_tokener_free(tok);
        ASSERT_NOT_NULL(j);
        PolicyValue *v = NULL;
        ASSERT_ERR(policy_value_from_json(j, &v), -ELOOP);
        json_object_put(j);
}

TEST(number_format_and_to_string) {
        static const struct {
                double d;
                const char *s;
        } cases[] = {
                { 0, "0" }, { -0.0, "0" }, { 42, "42" }, { -7, "-7" }, { 1.5, "1.5" }, { 1e15, "1000000000000000" }, { 1e300, "1.0000000000000001e+300" },
                { 0.1, "0.10000000000000001" },
        };
        char buf[32];
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                policy_number_format(cases[i].d, buf);
                ASSERT_STREQ(buf, cases[i].s);
        }
        _cleanup_(policy_value_unrefp) PolicyValue *s1 = NULL, *s2 = NULL, *a = policy_array_new(), *s3 = NULL;
        ASSERT_OK(policy_value_to_string(policy_none(), &s1));
        ASSERT_STREQ(policy_value_string(s1, NULL), "");
        ASSERT_OK(policy_value_to_string(policy_bool(true), &s2));
        ASSERT_STREQ(policy_value_string(s2, NULL), "true");
        ASSERT_ERR(policy_value_to_string(a, &s3), -EINVAL);
}

TEST(objects) {
        _cleanup_(policy_value_unrefp) PolicyValue *p = from_json("{\"headers\":[]}");
        _cleanup_(policy_value_unrefp) PolicyValue *o = policy_object_new("Mail", p);
        ASSERT_STREQ(policy_object_class(o), "Mail");
        ASSERT_TRUE(policy_object_payload(o) == p);
        ASSERT_TRUE(policy_value_truthy(o));
        _cleanup_free_ char *s = to_json(o);
        ASSERT_STREQ(s, "{\"payload\":{\"headers\":[]},\"class\":\"Mail\"}");
}

int main(void) {
        return tap_run();
}
