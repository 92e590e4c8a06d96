/* SPDX-License-Identifier: MIT */
/* Reference-counted HPL values. Arrays keep entries in insertion order and,
 * once they grow past a few entries, an open-addressing index from key to
 * entry, so a foreach with a lookup per element stays linear. Entries are
 * never removed (the language has no unset), which keeps the index simple. */

#include "policy-internal.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>

/* Below this many entries a linear scan beats hashing. */
#define ARRAY_INDEX_MIN 8U

typedef PolicyArrayEntry Entry;

static PolicyValue value_none = { .refcount = 0, .type = POLICY_TYPE_NONE };
static PolicyValue value_true = { .refcount = 0, .type = POLICY_TYPE_BOOL, .b = true };
static PolicyValue value_false = { .refcount = 0, .type = POLICY_TYPE_BOOL, .b = false };

/* The integers 0..255 are singletons too: array positions, counters,
 * lengths and loop indexes are mostly small, and a run makes them without
 * an allocation. Their size is what an allocated number's would be, so the
 * memory budget counts the same. */
#define SMALL_INTS 256
#define SMALL_INT(i) { .refcount = 0, .type = POLICY_TYPE_NUMBER, .size = sizeof(PolicyValue), .n = (i) }
#define SMALL_INT4(i) SMALL_INT(i), SMALL_INT(i + 1), SMALL_INT(i + 2), SMALL_INT(i + 3)
#define SMALL_INT16(i) SMALL_INT4(i), SMALL_INT4(i + 4), SMALL_INT4(i + 8), SMALL_INT4(i + 12)
#define SMALL_INT64(i) SMALL_INT16(i), SMALL_INT16(i + 16), SMALL_INT16(i + 32), SMALL_INT16(i + 48)
static PolicyValue small_ints[SMALL_INTS] = {
        SMALL_INT64(0), SMALL_INT64(64), SMALL_INT64(128), SMALL_INT64(192),
};

PolicyValue *policy_none(void) {
        return &value_none;
}

PolicyValue *policy_bool(bool b) {
        return b ? &value_true : &value_false;
}

PolicyValue *policy_value_ref(PolicyValue *v) {
        if (v && v->refcount > 0)
                v->refcount++;
        return v;
}

PolicyValue *policy_value_unref(PolicyValue *v) {
        value_unref(v);
        return NULL;
}

void policy_value_free_last(PolicyValue *v) {
        switch (v->type) {
        case POLICY_TYPE_ARRAY:
                for (size_t i = 0; i < v->arr.n; i++) {
                        policy_value_unref(v->arr.entries[i].key);
                        policy_value_unref(v->arr.entries[i].value);
                }
                free(v->arr.entries);
                free(v->arr.index);
                break;
        case POLICY_TYPE_OBJECT:
                free(v->obj.class);
                policy_value_unref(v->obj.payload);
                break;
        default:
                break;
        }
        free(v);
}

PolicyType policy_value_type(const PolicyValue *v) {
        return v ? v->type : POLICY_TYPE_NONE;
}

const char *policy_type_name(PolicyType t) {
        static const char *const names[_POLICY_TYPE_MAX] = {
                [POLICY_TYPE_NONE] = "none",
                [POLICY_TYPE_BOOL] = "bool",
                [POLICY_TYPE_NUMBER] = "number",
                [POLICY_TYPE_STRING] = "string",
                [POLICY_TYPE_ARRAY] = "array",
                [POLICY_TYPE_OBJECT] = "object",
        };
        return t < _POLICY_TYPE_MAX ? names[t] : "?";
}

static PolicyValue *value_alloc(PolicyType t) {
        /* Not calloc(): glibc's calloc() bypasses the thread cache, and a
         * run makes and drops values all the time. */
        PolicyValue *v = malloc(sizeof *v);
        if (!v)
                return NULL;
        *v = (PolicyValue) {
                .refcount = 1,
                .type = t,
                .size = sizeof *v,
        };
        return v;
}

size_t policy_value_size(const PolicyValue *v) {
        return v ? v->size : 0;
}

static size_t size_add(size_t a, size_t b) {
        return a > SIZE_MAX / 2 - b ? SIZE_MAX / 2 : a + b;
}

PolicyValue *policy_number_new(double d) {
        /* -0 stays an allocated number: 1 / -0 is -inf. */
        if (d >= 0 && d < SMALL_INTS && d == (double) (unsigned) d && !signbit(d))
                return &small_ints[(unsigned) d];
        PolicyValue *v = value_alloc(POLICY_TYPE_NUMBER);
        if (v)
                v->n = d;
        return v;
}

PolicyValue *policy_string_new_buffer(size_t n, char **ret_buf) {
        if (n > POLICY_STRING_MAX)
                return NULL;
        /* One allocation for the value and its bytes. */
        PolicyValue *v = malloc(sizeof *v + n + 1);
        if (!v)
                return NULL;
        *v = (PolicyValue) {
                .refcount = 1,
                .type = POLICY_TYPE_STRING,
                .size = sizeof *v + n + 1,
                .str = { .s = (char *) (v + 1), .len = n },
        };
        v->str.s[n] = 0;
        *ret_buf = v->str.s;
        return v;
}

PolicyValue *policy_string_new(const void *p, size_t n) {
        char *buf;
        PolicyValue *v = policy_string_new_buffer(n, &buf);
        if (v && n > 0)
                memcpy(buf, p, n);
        return v;
}

PolicyValue *policy_string_new_cstr(const char *s) {
        return policy_string_new(s, strlen(s));
}

PolicyValue *policy_array_new(void) {
        return value_alloc(POLICY_TYPE_ARRAY);
}

PolicyValue *policy_object_new(const char *class, PolicyValue *payload) {
        PolicyValue *v = value_alloc(POLICY_TYPE_OBJECT);
        if (!v)
                return NULL;
        v->obj.class = strdup(class);
        if (!v->obj.class) {
                free(v);
                return NULL;
        }
        v->obj.payload = value_ref(payload ?: policy_none());
        v->depth = v->obj.payload->depth + 1;
        v->size = size_add(v->size, v->obj.payload->size);
        if (v->depth > POLICY_VALUE_DEPTH_MAX)
                return policy_value_unref(v);
        return v;
}

bool policy_value_bool(const PolicyValue *v) {
        assert(v->type == POLICY_TYPE_BOOL);
        return v->b;
}

double policy_value_number(const PolicyValue *v) {
        assert(v->type == POLICY_TYPE_NUMBER);
        return v->n;
}

const char *policy_value_string(const PolicyValue *v, size_t *ret_len) {
        assert(v->type == POLICY_TYPE_STRING);
        if (ret_len)
                *ret_len = v->str.len;
        return v->str.s;
}

const char *policy_object_class(const PolicyValue *v) {
        assert(v->type == POLICY_TYPE_OBJECT);
        return v->obj.class;
}

PolicyValue *policy_object_payload(const PolicyValue *v) {
        assert(v->type == POLICY_TYPE_OBJECT);
        return v->obj.payload;
}

bool policy_value_truthy(const PolicyValue *v) {
        switch (value_type(v)) {
        case POLICY_TYPE_NONE:
                return false;
        case POLICY_TYPE_BOOL:
                return v->b;
        case POLICY_TYPE_NUMBER:
                return v->n != 0;
        case POLICY_TYPE_STRING:
                return v->str.len > 0;
        case POLICY_TYPE_ARRAY:
                return v->arr.n > 0;
        default:
                return true;
        }
}

bool policy_value_equal(const PolicyValue *a, const PolicyValue *b) {
        if (a == b)
                return true;
        if (value_type(a) != value_type(b))
                return false;
        switch (a->type) {
        case POLICY_TYPE_NONE:
                return true;
        case POLICY_TYPE_BOOL:
                return a->b == b->b;
        case POLICY_TYPE_NUMBER:
                return a->n == b->n;
        case POLICY_TYPE_STRING:
                return a->str.len == b->str.len && memcmp(a->str.s, b->str.s, a->str.len) == 0;
        case POLICY_TYPE_ARRAY:
                if (a->arr.n != b->arr.n)
                        return false;
                /* Arrays nest at most as deep as the script or JSON that built
                 * them, and both are depth-limited. */
                for (size_t i = 0; i < a->arr.n; i++)
                        if (!policy_value_equal(a->arr.entries[i].key, b->arr.entries[i].key) ||
                            !policy_value_equal(a->arr.entries[i].value, b->arr.entries[i].value))
                                return false;
                return true;
        default:
                return false; /* objects are equal only to themselves */
        }
}

/* ---- Arrays ------------------------------------------------------------ */

bool policy_key_valid(const PolicyValue *key) {
        switch (value_type(key)) {
        case POLICY_TYPE_STRING:
                return true;
        case POLICY_TYPE_NUMBER:
                return isfinite(key->n) && key->n == floor(key->n) && fabs(key->n) <= 9007199254740992.0;
        default:
                return false;
        }
}

static uint64_t key_hash(const PolicyValue *key) {
        uint64_t h = 1469598103934665603ULL;
        const unsigned char *p;
        size_t n;
        int64_t i;

        if (key->type == POLICY_TYPE_STRING) {
                p = (const unsigned char *) key->str.s;
                n = key->str.len;
        } else {
                i = (int64_t) key->n;
                p = (const unsigned char *) &i;
                n = sizeof i;
                h ^= 0x9e3779b97f4a7c15ULL; /* numbers and strings never share a hash by accident */
        }
        for (size_t k = 0; k < n; k++) {
                h ^= p[k];
                h *= 1099511628211ULL;
        }
        return h ^ (h >> 29);
}

static bool key_equal(const PolicyValue *a, const PolicyValue *b) {
        if (a->type != b->type)
                return false;
        if (a->type == POLICY_TYPE_NUMBER)
                return a->n == b->n;
        return a->str.len == b->str.len && memcmp(a->str.s, b->str.s, a->str.len) == 0;
}

static int index_rebuild(PolicyValue *a, size_t cap) {
        uint32_t *idx = calloc(cap, sizeof *idx);
        if (!idx)
                return -ENOMEM;
        for (size_t i = 0; i < a->arr.n; i++) {
                size_t slot = key_hash(a->arr.entries[i].key) & (cap - 1);
                while (idx[slot] != 0)
                        slot = (slot + 1) & (cap - 1);
                idx[slot] = (uint32_t) i + 1;
        }
        free(a->arr.index);
        a->arr.index = idx;
        a->arr.index_cap = cap;
        return 0;
}

static ssize_t array_find(const PolicyValue *a, const PolicyValue *key) {
        if (!a->arr.index) {
                for (size_t i = 0; i < a->arr.n; i++)
                        if (key_equal(a->arr.entries[i].key, key))
                                return (ssize_t) i;
                return -1;
        }
        size_t cap = a->arr.index_cap;
        for (size_t slot = key_hash(key) & (cap - 1);; slot = (slot + 1) & (cap - 1)) {
                uint32_t e = a->arr.index[slot];
                if (e == 0)
                        return -1;
                if (key_equal(a->arr.entries[e - 1].key, key))
                        return (ssize_t) e - 1;
        }
}

size_t policy_array_size(const PolicyValue *a) {
        return value_type(a) == POLICY_TYPE_ARRAY ? a->arr.n : 0;
}

PolicyValue *policy_array_key_at(const PolicyValue *a, size_t i) {
        assert(a->type == POLICY_TYPE_ARRAY && i < a->arr.n);
        return a->arr.entries[i].key;
}

PolicyValue *policy_array_value_at(const PolicyValue *a, size_t i) {
        assert(a->type == POLICY_TYPE_ARRAY && i < a->arr.n);
        return a->arr.entries[i].value;
}

PolicyValue *policy_array_get(const PolicyValue *a, const PolicyValue *key) {
        if (value_type(a) != POLICY_TYPE_ARRAY || !policy_key_valid(key))
                return NULL;
        ssize_t i = array_find(a, key);
        return i < 0 ? NULL : a->arr.entries[i].value;
}

PolicyValue *policy_array_get_str(const PolicyValue *a, const char *key) {
        if (value_type(a) != POLICY_TYPE_ARRAY || a->arr.n == 0)
                return NULL; /* e.g. a verdict without options: no strlen() */
        PolicyValue k = {
                .refcount = 0,
                .type = POLICY_TYPE_STRING,
                .str = { .s = (char *) key, .len = strlen(key) },
        };
        return policy_array_get(a, &k);
}

int policy_array_set(PolicyValue *a, PolicyValue *key, PolicyValue *value) {
        assert(a->type == POLICY_TYPE_ARRAY && a->refcount <= 1);
        if (!policy_key_valid(key))
                return -EINVAL;
        if (value->depth + 1 > POLICY_VALUE_DEPTH_MAX)
                return -ELOOP;
        if (value->depth + 1 > a->depth)
                a->depth = value->depth + 1;

        ssize_t i = array_find(a, key);
        if (i >= 0) {
                size_t old = a->arr.entries[i].value->size;
                a->size = size_add(a->size >= old ? a->size - old : 0, value->size);
                policy_value_unref(a->arr.entries[i].value);
                a->arr.entries[i].value = value_ref(value);
                return 0;
        }
        if (a->arr.n >= POLICY_ARRAY_MAX)
                return -E2BIG;
        if (a->arr.n == a->arr.cap) {
                size_t cap = a->arr.cap ? a->arr.cap * 2 : 4;
                Entry *e = reallocarray(a->arr.entries, cap, sizeof *e);
                if (!e)
                        return -ENOMEM;
                a->arr.entries = e;
                a->arr.cap = cap;
        }
        a->arr.entries[a->arr.n++] = (Entry) { value_ref(key), value_ref(value) };
        a->size = size_add(a->size, size_add(sizeof(Entry), size_add(key->size, value->size)));
        if (key->type == POLICY_TYPE_NUMBER && key->n >= a->arr.next_key)
                a->arr.next_key = key->n + 1;

        if (a->arr.n > ARRAY_INDEX_MIN) {
                /* Load factor at most 1/2. */
                if (a->arr.n * 2 > a->arr.index_cap) {
                        size_t cap = 32;
                        while (cap < a->arr.n * 4)
                                cap *= 2;
                        if (index_rebuild(a, cap) < 0) {
                                /* Fall back to scans rather than fail the set. */
                                free(a->arr.index);
                                a->arr.index = NULL;
                                a->arr.index_cap = 0;
                        }
                } else {
                        size_t cap = a->arr.index_cap;
                        size_t slot = key_hash(key) & (cap - 1);
                        while (a->arr.index[slot] != 0)
                                slot = (slot + 1) & (cap - 1);
                        a->arr.index[slot] = (uint32_t) a->arr.n;
                }
        }
        return 0;
}

int policy_array_set_str(PolicyValue *a, const char *key, PolicyValue *value) {
        _cleanup_(policy_value_unrefp) PolicyValue *k = policy_string_new_cstr(key);
        if (!k)
                return -ENOMEM;
        return policy_array_set(a, k, value);
}

int policy_array_push(PolicyValue *a, PolicyValue *value) {
        _cleanup_(policy_value_unrefp) PolicyValue *k = policy_number_new(a->arr.next_key);
        if (!k)
                return -ENOMEM;
        return policy_array_set(a, k, value);
}

int policy_array_unshare(PolicyValue **a) {
        PolicyValue *old = *a;
        assert(old->type == POLICY_TYPE_ARRAY);
        if (old->refcount <= 1)
                return 0;

        _cleanup_(policy_value_unrefp) PolicyValue *n = policy_array_new();
        if (!n)
                return -ENOMEM;
        n->arr.entries = reallocarray(NULL, MAX(old->arr.n, (size_t) 1), sizeof(Entry));
        if (!n->arr.entries)
                return -ENOMEM;
        n->arr.cap = MAX(old->arr.n, (size_t) 1);
        for (size_t i = 0; i < old->arr.n; i++)
                n->arr.entries[i] = (Entry) {
                        value_ref(old->arr.entries[i].key),
                        value_ref(old->arr.entries[i].value),
                };
        n->arr.n = old->arr.n;
        n->arr.next_key = old->arr.next_key;
        n->depth = old->depth;
        n->size = old->size;
        if (old->arr.index) {
                n->arr.index = malloc(old->arr.index_cap * sizeof(uint32_t));
                if (!n->arr.index)
                        return -ENOMEM;
                memcpy(n->arr.index, old->arr.index, old->arr.index_cap * sizeof(uint32_t));
                n->arr.index_cap = old->arr.index_cap;
        }
        policy_value_unref(old);
        *a = TAKE_PTR(n);
        return 0;
}

/* ---- Strings ------------------------------------------------------------ */

void policy_number_format(double d, char buf[static 32]) {
        if (isfinite(d) && d == floor(d) && fabs(d) < 1e15) {
                /* What "%.0f" prints, without printf: exact below 2^53; no "-0". */
                char tmp[24], *e = tmp + sizeof tmp, *q = e;
                uint64_t u = (uint64_t) fabs(d);
                do
                        *--q = (char) ('0' + u % 10);
                while ((u /= 10) > 0);
                if (d < 0)
                        *--q = '-';
                memcpy(buf, q, (size_t) (e - q));
                buf[e - q] = 0;
        } else if (isnan(d))
                snprintf(buf, 32, "nan");
        else
                snprintf(buf, 32, "%.17g", d);
}

int policy_value_to_string(PolicyValue *v, PolicyValue **ret) {
        char buf[32];

        switch (value_type(v)) {
        case POLICY_TYPE_NONE:
                *ret = policy_string_new("", 0);
                break;
        case POLICY_TYPE_BOOL:
                *ret = policy_string_new_cstr(v->b ? "true" : "false");
                break;
        case POLICY_TYPE_NUMBER:
                policy_number_format(v->n, buf);
                *ret = policy_string_new_cstr(buf);
                break;
        case POLICY_TYPE_STRING:
                *ret = value_ref(v);
                break;
        default:
                return -EINVAL;
        }
        return *ret ? 0 : -ENOMEM;
}

/* ---- JSON --------------------------------------------------------------- */

static bool array_is_list(const PolicyValue *a) {
        for (size_t i = 0; i < a->arr.n; i++) {
                const PolicyValue *k = a->arr.entries[i].key;
                if (k->type != POLICY_TYPE_NUMBER || k->n != (double) i)
                        return false;
        }
        return true;
}

static int to_json(const PolicyValue *v, unsigned depth, json_object **ret) {
        _cleanup_(policy_json_putp) json_object *j = NULL;
        int r;

        if (depth > POLICY_JSON_DEPTH_MAX * 4)
                return -ELOOP;

        switch (value_type(v)) {
        case POLICY_TYPE_NONE:
                *ret = NULL;
                return 0;
        case POLICY_TYPE_BOOL:
                j = json_object_new_boolean(v->b);
                break;
        case POLICY_TYPE_NUMBER:
                if (!isfinite(v->n)) {
                        *ret = NULL;
                        return 0;
                }
                if (v->n == floor(v->n) && fabs(v->n) <= 9007199254740992.0)
                        j = json_object_new_int64((int64_t) v->n);
                else
                        j = json_object_new_double(v->n);
                break;
        case POLICY_TYPE_STRING:
                j = json_object_new_string_len(v->str.s, (int) v->str.len);
                break;
        case POLICY_TYPE_ARRAY:
                if (array_is_list(v)) {
                        j = json_object_new_array_ext((int) v->arr.n);
                        if (!j)
                                return -ENOMEM;
                        for (size_t i = 0; i < v->arr.n; i++) {
                                json_object *e = NULL;
                                r = to_json(v->arr.entries[i].value, depth + 1, &e);
                                if (r < 0)
                                        return r;
                                if (json_object_array_add(j, e) < 0) {
                                        json_object_put(e);
                                        return -ENOMEM;
                                }
                        }
                } else {
                        j = json_object_new_object();
                        if (!j)
                                return -ENOMEM;
                        for (size_t i = 0; i < v->arr.n; i++) {
                                const PolicyValue *k = v->arr.entries[i].key;
                                char buf[32];
                                const char *ks = buf;
                                if (k->type == POLICY_TYPE_NUMBER)
                                        policy_number_format(k->n, buf);
                                else
                                        ks = k->str.s;
                                json_object *e = NULL;
                                r = to_json(v->arr.entries[i].value, depth + 1, &e);
                                if (r < 0)
                                        return r;
                                if (json_object_object_add(j, ks, e) < 0) {
                                        json_object_put(e);
                                        return -ENOMEM;
                                }
                        }
                }
                break;
        case POLICY_TYPE_OBJECT: {
                j = json_object_new_object();
                if (!j)
                        return -ENOMEM;
                json_object *e = NULL;
                r = to_json(v->obj.payload, depth + 1, &e);
                if (r < 0)
                        return r;
                if (json_object_object_add(j, "payload", e) < 0) {
                        json_object_put(e);
                        return -ENOMEM;
                }
                e = json_object_new_string(v->obj.class);
                if (!e || json_object_object_add(j, "class", e) < 0) {
                        json_object_put(e);
                        return -ENOMEM;
                }
                break;
        }
        default:
                return -EINVAL;
        }
        if (!j)
                return -ENOMEM;
        *ret = TAKE_PTR(j);
        return 0;
}

int policy_value_to_json(const PolicyValue *v, json_object **ret) {
        return to_json(v, 0, ret);
}

static int from_json(json_object *j, unsigned depth, PolicyValue **ret) {
        _cleanup_(policy_value_unrefp) PolicyValue *v = NULL;
        int r;

        if (depth > POLICY_JSON_DEPTH_MAX)
                return -ELOOP;

        switch (json_object_get_type(j)) {
        case json_type_null:
                *ret = policy_none();
                return 0;
        case json_type_boolean:
                *ret = policy_bool(json_object_get_boolean(j));
                return 0;
        case json_type_int:
                v = policy_number_new((double) json_object_get_int64(j));
                break;
        case json_type_double:
                v = policy_number_new(json_object_get_double(j));
                break;
        case json_type_string:
                v = policy_string_new(json_object_get_string(j), (size_t) json_object_get_string_len(j));
                break;
        case json_type_array: {
                v = policy_array_new();
                if (!v)
                        return -ENOMEM;
                size_t n = json_object_array_length(j);
                for (size_t i = 0; i < n; i++) {
                        _cleanup_(policy_value_unrefp) PolicyValue *e = NULL;
                        r = from_json(json_object_array_get_idx(j, i), depth + 1, &e);
                        if (r < 0)
                                return r;
                        r = policy_array_push(v, e);
                        if (r < 0)
                                return r;
                }
                break;
        }
        case json_type_object:
                v = policy_array_new();
                if (!v)
                        return -ENOMEM;
                json_object_object_foreach(j, key, val) {
                        _cleanup_(policy_value_unrefp) PolicyValue *e = NULL;
                        r = from_json(val, depth + 1, &e);
                        if (r < 0)
                                return r;
                        r = policy_array_set_str(v, key, e);
                        if (r < 0)
                                return r;
                }
                break;
        default:
                return -EINVAL;
        }
        if (!v)
                return -ENOMEM;
        *ret = TAKE_PTR(v);
        return 0;
}

int policy_value_from_json(json_object *j, PolicyValue **ret) {
        return from_json(j, 0, ret);
}

int policy_value_to_json_string(const PolicyValue *v, char **ret) {
        _cleanup_(policy_json_putp) json_object *j = NULL;
        int r = policy_value_to_json(v, &j);
        if (r < 0)
                return r;
        const char *s = j ? json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : "null";
        char *c = strdup(s);
        if (!c)
                return -ENOMEM;
        *ret = c;
        return 0;
}
