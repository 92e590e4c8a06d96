/* SPDX-License-Identifier: MIT */
#pragma once

/* HPL values: none, bool, number, string, array, object.
 *
 * Numbers are IEEE doubles (the note's choice): integers are exact up to
 * 2^53, which covers counts, ports, SMTP codes and unix times. Strings are
 * length-counted bytes (binary safe) with a NUL after the last byte so they
 * can be handed to libc. Arrays are ordered; each entry has a key that is a
 * string or an integral number, so one type serves as list, map or both
 * (as in HSL). Objects are opaque handles made by builtins (the Mail object
 * of eod, the AuthenticationResults builder); they carry a class name and a
 * payload value.
 *
 * Ownership: values are reference counted and immutable once shared.
 * Functions named _new/_ref return a new reference; every other function
 * borrows its arguments unless its name ends in _take, which consumes the
 * argument named in its comment. The few mutators (policy_array_set...)
 * require the array to be unshared (refcount 1); policy_array_unshare()
 * gives copy-on-write. none, true and false are static singletons, on which
 * ref/unref are no-ops. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* Limits that keep a script's memory bounded whatever its input. */
#define POLICY_STRING_MAX (1024U * 1024U)
#define POLICY_ARRAY_MAX  65536U
#define POLICY_JSON_DEPTH_MAX 32U
/* Arrays (and objects) nested deeper than this cannot be built. */
#define POLICY_VALUE_DEPTH_MAX 64U

typedef enum PolicyType {
        POLICY_TYPE_NONE,
        POLICY_TYPE_BOOL,
        POLICY_TYPE_NUMBER,
        POLICY_TYPE_STRING,
        POLICY_TYPE_ARRAY,
        POLICY_TYPE_OBJECT,
        _POLICY_TYPE_MAX,
} PolicyType;

/* Bit masks of types, for the builtin manifest. */
#define POLICY_T(t) (1U << (t))
#define POLICY_T_ANY ((1U << _POLICY_TYPE_MAX) - 1)

typedef struct PolicyValue PolicyValue;

static inline void policy_json_putp(json_object **j) {
        if (*j)
                json_object_put(*j);
}

PolicyValue *policy_value_ref(PolicyValue *v);
PolicyValue *policy_value_unref(PolicyValue *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(PolicyValue *, policy_value_unref);

PolicyType policy_value_type(const PolicyValue *v);
const char *policy_type_name(PolicyType t);

/* Singletons: never NULL, no allocation. */
PolicyValue *policy_none(void);
PolicyValue *policy_bool(bool b);

/* Return NULL on OOM (or, for strings, when longer than POLICY_STRING_MAX). */
PolicyValue *policy_number_new(double d);
PolicyValue *policy_string_new(const void *p, size_t n);
PolicyValue *policy_string_new_cstr(const char *s);
/* A new string of n bytes that the caller fills in through *ret_buf before
 * handing the value on (the NUL after them is written already). */
PolicyValue *policy_string_new_buffer(size_t n, char **ret_buf);
PolicyValue *policy_array_new(void);
/* class is copied; payload is referenced (may be NULL = none). NULL also
 * when the payload is nested too deeply. */
PolicyValue *policy_object_new(const char *class, PolicyValue *payload);

bool policy_value_bool(const PolicyValue *v);     /* only for bools */
double policy_value_number(const PolicyValue *v); /* only for numbers */
/* Only for strings; the bytes are followed by a NUL. */
const char *policy_value_string(const PolicyValue *v, size_t *ret_len);
const char *policy_object_class(const PolicyValue *v);
PolicyValue *policy_object_payload(const PolicyValue *v); /* borrowed */

/* Approximate bytes a value holds, elements included (shared elements
 * counted each time they appear): what the VM's memory budget counts. */
size_t policy_value_size(const PolicyValue *v);

/* Truthiness: none, false, 0, "" and [] are false. */
bool policy_value_truthy(const PolicyValue *v);
/* Strict equality: no coercion; arrays compare entry by entry in order. */
bool policy_value_equal(const PolicyValue *a, const PolicyValue *b);

/* Arrays. Keys are strings or integral numbers; any other key is -EINVAL. */
size_t policy_array_size(const PolicyValue *a);
PolicyValue *policy_array_key_at(const PolicyValue *a, size_t i);   /* borrowed */
PolicyValue *policy_array_value_at(const PolicyValue *a, size_t i); /* borrowed */
/* Borrowed value or NULL when absent. */
PolicyValue *policy_array_get(const PolicyValue *a, const PolicyValue *key);
PolicyValue *policy_array_get_str(const PolicyValue *a, const char *key);
/* Mutators: a must be unshared. They take a new reference to key/value.
 * -E2BIG when the array would exceed POLICY_ARRAY_MAX, -ELOOP when value
 * is nested POLICY_VALUE_DEPTH_MAX deep already. */
int policy_array_set(PolicyValue *a, PolicyValue *key, PolicyValue *value);
int policy_array_set_str(PolicyValue *a, const char *key, PolicyValue *value);
/* Appends under the next integer key (one more than the largest so far). */
int policy_array_push(PolicyValue *a, PolicyValue *value);
/* Consumes *a and returns (in *a) an unshared array with the same entries. */
int policy_array_unshare(PolicyValue **a);
/* True when the key type is usable in an array. */
bool policy_key_valid(const PolicyValue *key);

/* Formats a number the way scripts see it: integers without a fraction. */
void policy_number_format(double d, char buf[static 32]);
/* Converts a scalar to the string "." and interpolation use: none → "",
 * bools → "true"/"false", numbers formatted, strings as they are. Arrays and
 * objects are -EINVAL. Returns a new reference. */
int policy_value_to_string(PolicyValue *v, PolicyValue **ret);

/* JSON. Arrays whose keys are exactly 0..n-1 become JSON arrays, others
 * objects (integer keys as decimal text). Objects become
 * {"class": ..., "payload": ...}. Non-finite numbers become null. */
int policy_value_to_json(const PolicyValue *v, json_object **ret);
/* JSON arrays become lists, objects become maps (string keys), null none.
 * Depth is bounded by POLICY_JSON_DEPTH_MAX (-ELOOP). */
int policy_value_from_json(json_object *j, PolicyValue **ret);
/* Compact JSON text of a value, newly allocated; for cache keys, logs and tests. */
int policy_value_to_json_string(const PolicyValue *v, char **ret);
