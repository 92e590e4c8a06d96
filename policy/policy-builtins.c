/* SPDX-License-Identifier: MIT */
/* The builtin manifest and the PURE builtins. */

#include "policy-builtins.h"

#include <arpa/inet.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

#define T_NONE   POLICY_T(POLICY_TYPE_NONE)
#define T_BOOL   POLICY_T(POLICY_TYPE_BOOL)
#define T_NUM    POLICY_T(POLICY_TYPE_NUMBER)
#define T_STR    POLICY_T(POLICY_TYPE_STRING)
#define T_ARR    POLICY_T(POLICY_TYPE_ARRAY)
#define T_OBJ    POLICY_T(POLICY_TYPE_OBJECT)
#define T_ANY    POLICY_T_ANY

#define PH(x) POLICY_PHASE_BIT(POLICY_PHASE_##x)
#define PH_ALL POLICY_PHASES_ALL
#define PH_VERDICT (POLICY_PHASES_ALL & ~PH(DISCONNECT))

_printf_(2, 3)
static int fail(PolicyBuiltinCtx *ctx, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static int ret_value(PolicyValue *v, PolicyValue **ret) {
        if (!v)
                return -ENOMEM;
        *ret = v;
        return 0;
}

static bool is_type(PolicyValue *v, PolicyType t) {
        return policy_value_type(v) == t;
}

/* ---- strings -------------------------------------------------------------- */

static int bi_length(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        switch (policy_value_type(a[0])) {
        case POLICY_TYPE_NONE:
                return ret_value(policy_number_new(0), ret);
        case POLICY_TYPE_STRING: {
                size_t len;
                (void) policy_value_string(a[0], &len);
                return ret_value(policy_number_new((double) len), ret);
        }
        case POLICY_TYPE_ARRAY:
                return ret_value(policy_number_new((double) policy_array_size(a[0])), ret);
        default:
                return fail(ctx, "length() of a %s", policy_type_name(policy_value_type(a[0])));
        }
}

static int case_map(PolicyBuiltinCtx *ctx, PolicyValue *v, bool up, PolicyValue **ret) {
        size_t len;
        if (is_type(v, POLICY_TYPE_NONE))
                return ret_value(policy_none(), ret);
        if (!is_type(v, POLICY_TYPE_STRING))
                return fail(ctx, "%s() of a %s", up ? "upper" : "lower", policy_type_name(policy_value_type(v)));
        const char *s = policy_value_string(v, &len);
        _cleanup_free_ char *c = malloc(len + 1);
        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                char ch = s[i];
                if (up && ch >= 'a' && ch <= 'z')
                        ch = (char) (ch - 'a' + 'A');
                else if (!up && ch >= 'A' && ch <= 'Z')
                        ch = (char) (ch - 'A' + 'a');
                c[i] = ch;
        }
        return ret_value(policy_string_new(c, len), ret);
}

static int bi_lower(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        return case_map(ctx, a[0], false, ret);
}

static int bi_upper(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        return case_map(ctx, a[0], true, ret);
}

static int bi_string(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        int r = policy_value_to_string(a[0], ret);
        if (r == -EINVAL)
                return fail(ctx, "string() of a %s (use json_encode())", policy_type_name(policy_value_type(a[0])));
        return r;
}

static int bi_number(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        switch (policy_value_type(a[0])) {
        case POLICY_TYPE_NUMBER:
                return ret_value(policy_value_ref(a[0]), ret);
        case POLICY_TYPE_BOOL:
                return ret_value(policy_number_new(policy_value_bool(a[0]) ? 1 : 0), ret);
        case POLICY_TYPE_STRING: {
                size_t len;
                const char *s = policy_value_string(a[0], &len);
                char *end;
                if (len == 0 || len > 64 || strlen(s) != len)
                        return ret_value(policy_none(), ret);
                double d = strtod(s, &end);
                if (*end != 0 || !isfinite(d))
                        return ret_value(policy_none(), ret);
                return ret_value(policy_number_new(d), ret);
        }
        default:
                return ret_value(policy_none(), ret);
        }
}

static int bi_str_split(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        size_t len, slen;
        int r;
        if (is_type(a[0], POLICY_TYPE_NONE))
                return ret_value(policy_array_new(), ret);
        if (!is_type(a[0], POLICY_TYPE_STRING) || !is_type(a[1], POLICY_TYPE_STRING))
                return fail(ctx, "str_split() needs two strings");
        const char *s = policy_value_string(a[0], &len);
        const char *sep = policy_value_string(a[1], &slen);
        if (slen == 0)
                return fail(ctx, "str_split() with an empty separator");

        _cleanup_(policy_value_unrefp) PolicyValue *out = policy_array_new();
        if (!out)
                return -ENOMEM;
        size_t start = 0;
        for (size_t i = 0; i + slen <= len;) {
                if (memcmp(s + i, sep, slen) == 0) {
                        _cleanup_(policy_value_unrefp) PolicyValue *piece = policy_string_new(s + start, i - start);
                        if (!piece)
                                return -ENOMEM;
                        r = policy_array_push(out, piece);
                        if (r < 0)
                                return r == -E2BIG ? fail(ctx, "str_split(): too many pieces") : r;
                        i += slen;
                        start = i;
                } else
                        i++;
        }
        _cleanup_(policy_value_unrefp) PolicyValue *piece = policy_string_new(s + start, len - start);
        if (!piece)
                return -ENOMEM;
        r = policy_array_push(out, piece);
        if (r < 0)
                return r == -E2BIG ? fail(ctx, "str_split(): too many pieces") : r;
        *ret = TAKE_PTR(out);
        return 0;
}

static int bi_str_join(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        size_t slen;
        if (!is_type(a[0], POLICY_TYPE_ARRAY) || !is_type(a[1], POLICY_TYPE_STRING))
                return fail(ctx, "str_join() needs an array and a string");
        const char *sep = policy_value_string(a[1], &slen);
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        for (size_t i = 0; i < policy_array_size(a[0]); i++) {
                _cleanup_(policy_value_unrefp) PolicyValue *s = NULL;
                if (policy_value_to_string(policy_array_value_at(a[0], i), &s) < 0)
                        return fail(ctx, "str_join(): element %zu is not a scalar", i);
                size_t el;
                const char *e = policy_value_string(s, &el);
                size_t add = el + (i > 0 ? slen : 0);
                if (len + add > POLICY_STRING_MAX)
                        return fail(ctx, "str_join(): result too long");
                char *q = realloc(buf, len + add + 1);
                if (!q)
                        return -ENOMEM;
                buf = q;
                if (i > 0) {
                        memcpy(buf + len, sep, slen);
                        len += slen;
                }
                memcpy(buf + len, e, el);
                len += el;
        }
        return ret_value(policy_string_new(buf ?: "", len), ret);
}

static int bi_keys(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        if (is_type(a[0], POLICY_TYPE_NONE))
                return ret_value(policy_array_new(), ret);
        if (!is_type(a[0], POLICY_TYPE_ARRAY))
                return fail(ctx, "keys() of a %s", policy_type_name(policy_value_type(a[0])));
        _cleanup_(policy_value_unrefp) PolicyValue *out = policy_array_new();
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < policy_array_size(a[0]); i++) {
                int r = policy_array_push(out, policy_array_key_at(a[0], i));
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(out);
        return 0;
}

static int bi_json_decode(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        size_t len;
        if (!is_type(a[0], POLICY_TYPE_STRING))
                return ret_value(policy_none(), ret);
        const char *s = policy_value_string(a[0], &len);
        json_tokener *tok = json_tokener_new_ex(POLICY_JSON_DEPTH_MAX);
        if (!tok)
                return -ENOMEM;
        _cleanup_(policy_json_putp) json_object *j = json_tokener_parse_ex(tok, s, (int) len);
        enum json_tokener_error e = json_tokener_get_error(tok);
        size_t used = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        if (e != json_tokener_success || used != len)
                return ret_value(policy_none(), ret);
        int r = policy_value_from_json(j, ret);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return ret_value(policy_none(), ret);
        return 0;
}

static int bi_json_encode(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        _cleanup_free_ char *s = NULL;
        int r = policy_value_to_json_string(a[0], &s);
        if (r < 0)
                return r == -ENOMEM ? r : fail(ctx, "json_encode(): value cannot be encoded");
        PolicyValue *v = policy_string_new_cstr(s);
        if (!v)
                return fail(ctx, "json_encode(): result too long");
        *ret = v;
        return 0;
}

/* The map was read with the generation (the checker made sure the path is
 * a constant, so it is the same string here). Keys are exact bytes:
 * scripts lower() them themselves. */
static int bi_file_lookup(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        size_t name_len, key_len, len;
        const char *name = policy_value_string(a[0], &name_len), *key, *value;

        if (policy_value_type(a[1]) != POLICY_TYPE_STRING) {
                *ret = policy_none();
                return 0;
        }
        key = policy_value_string(a[1], &key_len);
        if (!name)
                return fail(ctx, "file_lookup() needs the map's path as a string");
        int r = policy_generation_map_lookup(ctx->g, name, name_len, key, key_len, &value, &len);
        if (r < 0)
                return fail(ctx, "file_lookup(): no map %.100s was loaded with the policy", name);
        if (r == 0) {
                *ret = policy_none();
                return 0;
        }
        *ret = policy_string_new(value, len);
        return *ret ? 0 : -ENOMEM;
}

static int bi_now(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        return ret_value(policy_number_new(ctx->now), ret);
}

/* ---- networks and names ------------------------------------------------------ */

typedef struct Addr {
        int family;
        unsigned char b[16];
} Addr;

static bool parse_ip(const char *s, Addr *a) {
        if (inet_pton(AF_INET, s, a->b) == 1) {
                a->family = AF_INET;
                return true;
        }
        if (inet_pton(AF_INET6, s, a->b) == 1) {
                a->family = AF_INET6;
                return true;
        }
        return false;
}

/* 1: in, 0: not in, -1: not a CIDR */
static int cidr_contains(const char *cidr, const Addr *ip) {
        char buf[64];
        size_t len = strlen(cidr);
        if (len == 0 || len >= sizeof buf)
                return -1;
        memcpy(buf, cidr, len + 1);
        char *slash = strchr(buf, '/');
        long bits = -1;
        if (slash) {
                char *end;
                *slash = 0;
                bits = strtol(slash + 1, &end, 10);
                if (*end || end == slash + 1)
                        return -1;
        }
        Addr net;
        if (!parse_ip(buf, &net))
                return -1;
        long max = net.family == AF_INET ? 32 : 128;
        if (bits < 0)
                bits = max;
        if (bits > max)
                return -1;
        if (net.family != ip->family)
                return 0;
        for (long i = 0; i < bits; i++) {
                unsigned m = 0x80U >> (i % 8);
                if ((net.b[i / 8] & m) != (ip->b[i / 8] & m))
                        return 0;
        }
        return 1;
}

static int bi_in_network(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        Addr ip;
        if (!is_type(a[0], POLICY_TYPE_STRING) || !parse_ip(policy_value_string(a[0], NULL), &ip))
                return ret_value(policy_bool(false), ret);
        if (is_type(a[1], POLICY_TYPE_STRING)) {
                int c = cidr_contains(policy_value_string(a[1], NULL), &ip);
                if (c < 0)
                        return fail(ctx, "in_network(): '%.60s' is not a network", policy_value_string(a[1], NULL));
                return ret_value(policy_bool(c > 0), ret);
        }
        if (!is_type(a[1], POLICY_TYPE_ARRAY))
                return fail(ctx, "in_network() needs a network or a list of networks");
        for (size_t i = 0; i < policy_array_size(a[1]); i++) {
                PolicyValue *e = policy_array_value_at(a[1], i);
                if (!is_type(e, POLICY_TYPE_STRING))
                        return fail(ctx, "in_network(): network list entry %zu is not a string", i);
                int c = cidr_contains(policy_value_string(e, NULL), &ip);
                if (c < 0)
                        return fail(ctx, "in_network(): '%.60s' is not a network", policy_value_string(e, NULL));
                if (c > 0)
                        return ret_value(policy_bool(true), ret);
        }
        return ret_value(policy_bool(false), ret);
}

static int bi_is_subdomain(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        size_t nl, pl;
        if (!is_type(a[0], POLICY_TYPE_STRING) || !is_type(a[1], POLICY_TYPE_STRING))
                return ret_value(policy_bool(false), ret);
        const char *name = policy_value_string(a[0], &nl);
        const char *parent = policy_value_string(a[1], &pl);
        while (nl > 0 && name[nl - 1] == '.')
                nl--;
        while (pl > 0 && parent[pl - 1] == '.')
                pl--;
        if (pl == 0 || nl < pl || strncasecmp(name + nl - pl, parent, pl) != 0)
                return ret_value(policy_bool(false), ret);
        return ret_value(policy_bool(nl == pl || name[nl - pl - 1] == '.'), ret);
}

#define REGEX_GROUPS_MAX 10

static int bi_regex_match(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        regmatch_t m[REGEX_GROUPS_MAX];
        size_t len;
        if (!is_type(a[1], POLICY_TYPE_STRING))
                return ret_value(policy_none(), ret);
        const char *s = policy_value_string(a[1], &len);
        if (strlen(s) != len) /* regexec stops at NUL: never match past one */
                return ret_value(policy_none(), ret);
        if (regexec(ctx->regex, s, REGEX_GROUPS_MAX, m, 0) != 0)
                return ret_value(policy_none(), ret);
        _cleanup_(policy_value_unrefp) PolicyValue *out = policy_array_new();
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < REGEX_GROUPS_MAX && i <= ctx->regex->re_nsub; i++) {
                _cleanup_(policy_value_unrefp) PolicyValue *g =
                        m[i].rm_so < 0 ? policy_none() : policy_string_new(s + m[i].rm_so, (size_t) (m[i].rm_eo - m[i].rm_so));
                if (!g)
                        return -ENOMEM;
                int r = policy_array_push(out, g);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(out);
        return 0;
}

static int bi_client_cert(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        PolicyValue *tls = policy_array_get_str(ctx->connection, "tls");
        PolicyValue *cert = tls ? policy_array_get_str(tls, "peercert") : NULL;
        return ret_value(policy_value_ref(cert ?: policy_none()), ret);
}

/* ---- Mail object (eod) --------------------------------------------------------- */

/* The Mail payload is ["headers" => [[name, value], ...]] as the embedder
 * builds it; names compare case-insensitively. */
static int mail_headers(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, bool all, PolicyValue **ret) {
        if (!is_type(a[1], POLICY_TYPE_STRING))
                return fail(ctx, "header name must be a string");
        const char *want = policy_value_string(a[1], NULL);
        double index = 0;
        if (!all && n > 2) {
                if (!is_type(a[2], POLICY_TYPE_NUMBER))
                        return fail(ctx, "header index must be a number");
                index = policy_value_number(a[2]);
        }
        PolicyValue *headers = policy_array_get_str(policy_object_payload(a[0]), "headers");
        _cleanup_(policy_value_unrefp) PolicyValue *out = all ? policy_array_new() : NULL;
        if (all && !out)
                return -ENOMEM;
        double seen = 0;
        for (size_t i = 0; i < policy_array_size(headers); i++) {
                PolicyValue *h = policy_array_value_at(headers, i);
                if (policy_array_size(h) < 2)
                        continue;
                PolicyValue *hn = policy_array_value_at(h, 0);
                if (!is_type(hn, POLICY_TYPE_STRING))
                        continue;
                if (strcasecmp(policy_value_string(hn, NULL), want) != 0)
                        continue;
                PolicyValue *hv = policy_array_value_at(h, 1);
                if (all) {
                        int r = policy_array_push(out, hv);
                        if (r < 0)
                                return r;
                } else if (seen++ == index)
                        return ret_value(policy_value_ref(hv), ret);
        }
        return ret_value(all ? TAKE_PTR(out) : policy_none(), ret);
}

static int bi_get_header(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        return mail_headers(ctx, a, n, false, ret);
}

static int bi_get_headers(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        return mail_headers(ctx, a, n, true, ret);
}

/* ---- AuthenticationResults builder ---------------------------------------------- */

/* The builder is an immutable object: each method returns a new one with one
 * more method entry. ->toString() is EXTERNAL, because the embedder holds
 * the transaction's memoised SPF/DKIM/DMARC results and the authserv-id. */
static int ar_new(PolicyValue *options, PolicyValue *methods, PolicyValue **ret) {
        _cleanup_(policy_value_unrefp) PolicyValue *p = policy_array_new();
        if (!p)
                return -ENOMEM;
        int r = policy_array_set_str(p, "options", options);
        if (r < 0)
                return r;
        r = policy_array_set_str(p, "methods", methods);
        if (r < 0)
                return r;
        return ret_value(policy_object_new("AuthenticationResults", p), ret);
}

static int bi_ar(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        _cleanup_(policy_value_unrefp) PolicyValue *methods = policy_array_new();
        if (!methods)
                return -ENOMEM;
        return ar_new(n > 0 ? a[0] : policy_none(), methods, ret);
}

static int ar_add(PolicyBuiltinCtx *ctx, PolicyValue *self, const char *method, PolicyValue *result,
                  PolicyValue *props, PolicyValue **ret) {
        PolicyValue *payload = policy_object_payload(self);
        _cleanup_(policy_value_unrefp) PolicyValue *methods = policy_value_ref(policy_array_get_str(payload, "methods"));
        _cleanup_(policy_value_unrefp) PolicyValue *entry = policy_array_new();
        int r;

        if (!entry)
                return -ENOMEM;
        if (!methods || policy_array_size(methods) >= 64)
                return fail(ctx, "AuthenticationResults: too many methods");
        r = policy_array_unshare(&methods);
        if (r < 0)
                return r;
        _cleanup_(policy_value_unrefp) PolicyValue *m = policy_string_new_cstr(method);
        if (!m)
                return -ENOMEM;
        if ((r = policy_array_set_str(entry, "method", m)) < 0 ||
            (r = policy_array_set_str(entry, "result", result)) < 0 ||
            (r = policy_array_set_str(entry, "props", props)) < 0 ||
            (r = policy_array_push(methods, entry)) < 0)
                return r;
        return ar_new(policy_array_get_str(payload, "options") ?: policy_none(), methods, ret);
}

static int bi_ar_spf(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        return ar_add(ctx, a[0], "spf", policy_none(), n > 1 ? a[1] : policy_none(), ret);
}

static int bi_ar_dkim(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        return ar_add(ctx, a[0], "dkim", policy_none(), n > 1 ? a[1] : policy_none(), ret);
}

static int bi_ar_dmarc(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        return ar_add(ctx, a[0], "dmarc", policy_none(), n > 1 ? a[1] : policy_none(), ret);
}

static int bi_ar_add_method(PolicyBuiltinCtx *ctx, PolicyValue **a, size_t n, PolicyValue **ret) {
        if (!is_type(a[1], POLICY_TYPE_STRING))
                return fail(ctx, "addMethod(): method name must be a string");
        return ar_add(ctx, a[0], policy_value_string(a[1], NULL), a[2], n > 3 ? a[3] : policy_none(), ret);
}

/* ---- the table ----------------------------------------------------------------- */

static const char *const opts_accept[] = { "reason", "code", "enhanced", "username", NULL };
static const char *const opts_reject[] = { "reason", "code", "enhanced", "disconnect", NULL };
/* Queue()'s choices are per recipient, as queued keeps them; a held or
 * delayed recipient would hold back the whole message, so those are not
 * offered (the check refuses them). */
static const char *const opts_queue[] = { "transport", "source_ip", "sender", "helo", NULL };
static const char *const opts_header[] = { "position", "encode", NULL };
static const char *const opts_timeout[] = { "timeout", NULL };
static const char *const opts_dns[] = { "type", "timeout", NULL };
static const char *const opts_http[] = { "timeout", "method", "headers", "body", "max_size", "tls_verify", NULL };
static const char *const opts_rate[] = { "sync", "shared", NULL };
static const char *const opts_scan[] = { "timeout", "host", "port", "max_size", NULL };
static const char *const opts_dkim[] = { "timeout", "headers", "canonicalization", "algorithm", NULL };
static const char *const opts_arc[] = { "timeout", "headers", NULL };
static const char *const opts_ar[] = { "authserv_id", NULL };

#define NOOPT .options_arg = -1

static const PolicyBuiltin builtins[] = {
        /* verdicts */
        { .name = "Accept", .max_args = 1, .arg_types = { T_ARR }, .phases = PH_VERDICT,
          .kind = POLICY_BUILTIN_FINAL, .options_arg = 0, .options = opts_accept, .returns = T_NONE,
          .doc = "accept; in auth, [username => ...] names the user" },
        { .name = "Reject", .max_args = 2, .arg_types = { T_STR | T_NONE, T_ARR }, .phases = PH_VERDICT,
          .kind = POLICY_BUILTIN_FINAL, .options_arg = 1, .options = opts_reject, .returns = T_NONE,
          .doc = "reject, default 550 5.7.1 (auth: 535 5.7.8)" },
        { .name = "Defer", .max_args = 2, .arg_types = { T_STR | T_NONE, T_ARR }, .phases = PH_VERDICT,
          .kind = POLICY_BUILTIN_FINAL, .options_arg = 1, .options = opts_reject, .returns = T_NONE,
          .doc = "temporary failure, default 451 4.7.1" },

        /* actions */
        { .name = "Queue", .min_args = 1, .max_args = 2, .arg_types = { T_ARR | T_STR, T_ARR },
          .phases = PH(EOD), .kind = POLICY_BUILTIN_ACTION, .options_arg = 1, .options = opts_queue,
          .returns = T_NONE, .doc = "route one recipient" },
        { .name = "log", .min_args = 2, .max_args = 3, .arg_types = { T_STR, T_ANY, T_ARR }, .phases = PH_ALL,
          .kind = POLICY_BUILTIN_ACTION, NOOPT, .returns = T_NONE, .doc = "structured journal entry" },
        { .name = "addHeader", .receiver = "Mail", .min_args = 2, .max_args = 3, .arg_types = { T_STR, T_STR, T_ARR },
          .phases = PH(EOD), .kind = POLICY_BUILTIN_ACTION, .options_arg = 2, .options = opts_header,
          .returns = T_NONE },
        { .name = "delHeader", .receiver = "Mail", .min_args = 1, .max_args = 2, .arg_types = { T_STR, T_NUM },
          .phases = PH(EOD), .kind = POLICY_BUILTIN_ACTION, NOOPT, .returns = T_NONE },
        { .name = "setHeader", .receiver = "Mail", .min_args = 2, .max_args = 2, .arg_types = { T_STR, T_STR },
          .phases = PH(EOD), .kind = POLICY_BUILTIN_ACTION, NOOPT, .returns = T_NONE },

        /* pure */
        { .name = "getHeader", .receiver = "Mail", .min_args = 1, .max_args = 2, .arg_types = { T_STR, T_NUM },
          .phases = PH(EOD), .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_get_header, .returns = T_STR | T_NONE },
        { .name = "getHeaders", .receiver = "Mail", .min_args = 1, .max_args = 1, .arg_types = { T_STR },
          .phases = PH(EOD), .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_get_headers, .returns = T_ARR },
        { .name = "length", .min_args = 1, .max_args = 1, .arg_types = { T_STR | T_ARR | T_NONE }, .phases = PH_ALL,
          .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_length, .returns = T_NUM },
        { .name = "lower", .min_args = 1, .max_args = 1, .arg_types = { T_STR | T_NONE }, .phases = PH_ALL,
          .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_lower, .returns = T_STR | T_NONE },
        { .name = "upper", .min_args = 1, .max_args = 1, .arg_types = { T_STR | T_NONE }, .phases = PH_ALL,
          .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_upper, .returns = T_STR | T_NONE },
        { .name = "string", .min_args = 1, .max_args = 1, .arg_types = { T_NONE | T_BOOL | T_NUM | T_STR },
          .phases = PH_ALL, .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_string, .returns = T_STR },
        { .name = "number", .min_args = 1, .max_args = 1, .phases = PH_ALL, .kind = POLICY_BUILTIN_PURE, NOOPT,
          .fn = bi_number, .returns = T_NUM | T_NONE },
        { .name = "str_split", .min_args = 2, .max_args = 2, .arg_types = { T_STR | T_NONE, T_STR },
          .phases = PH_ALL, .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_str_split, .returns = T_ARR },
        { .name = "str_join", .min_args = 2, .max_args = 2, .arg_types = { T_ARR, T_STR }, .phases = PH_ALL,
          .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_str_join, .returns = T_STR },
        { .name = "keys", .min_args = 1, .max_args = 1, .arg_types = { T_ARR | T_NONE }, .phases = PH_ALL,
          .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_keys, .returns = T_ARR },
        { .name = "json_decode", .min_args = 1, .max_args = 1, .arg_types = { T_STR | T_NONE }, .phases = PH_ALL,
          .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_json_decode, .returns = T_ANY },
        { .name = "json_encode", .min_args = 1, .max_args = 1, .phases = PH_ALL, .kind = POLICY_BUILTIN_PURE, NOOPT,
          .fn = bi_json_encode, .returns = T_STR },
        { .name = "now", .phases = PH_ALL, .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_now, .returns = T_NUM },
        { .name = "in_network", .min_args = 2, .max_args = 2, .arg_types = { T_STR | T_NONE, T_STR | T_ARR },
          .phases = PH_ALL, .kind = POLICY_BUILTIN_PURE, .cacheable = true, NOOPT, .fn = bi_in_network,
          .returns = T_BOOL },
        { .name = "is_subdomain", .min_args = 2, .max_args = 2, .arg_types = { T_STR | T_NONE, T_STR },
          .phases = PH_ALL, .kind = POLICY_BUILTIN_PURE, .cacheable = true, NOOPT, .fn = bi_is_subdomain,
          .returns = T_BOOL },
        { .name = "regex_match", .min_args = 2, .max_args = 2, .arg_types = { T_STR, T_STR | T_NONE },
          .phases = PH_ALL, .kind = POLICY_BUILTIN_PURE, .cacheable = true, .needs_regex = true, NOOPT,
          .fn = bi_regex_match, .returns = T_ARR | T_NONE, .doc = "POSIX ERE literal; captures or none" },
        { .name = "client_cert", .phases = PH_ALL, .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_client_cert,
          .returns = T_ARR | T_NONE,
          .doc = "$connection[\"tls\"][\"peercert\"] or none: subject, issuer, san, fingerprint_sha256, verified" },
        { .name = "AuthenticationResults", .max_args = 1, .arg_types = { T_ARR },
          .phases = PH(MAILFROM) | PH(RCPTTO) | PH(EOD), .kind = POLICY_BUILTIN_PURE, .options_arg = 0,
          .options = opts_ar, .fn = bi_ar, .returns = T_OBJ },
        { .name = "SPF", .receiver = "AuthenticationResults", .max_args = 1, .arg_types = { T_ARR },
          .phases = PH(MAILFROM) | PH(RCPTTO) | PH(EOD), .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_ar_spf,
          .returns = T_OBJ },
        { .name = "DKIM", .receiver = "AuthenticationResults", .max_args = 1, .arg_types = { T_ARR },
          .phases = PH(EOD), .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_ar_dkim, .returns = T_OBJ },
        { .name = "DMARC", .receiver = "AuthenticationResults", .max_args = 1, .arg_types = { T_ARR },
          .phases = PH(EOD), .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_ar_dmarc, .returns = T_OBJ },
        { .name = "addMethod", .receiver = "AuthenticationResults", .min_args = 2, .max_args = 3,
          .arg_types = { T_STR, T_STR | T_NONE, T_ARR }, .phases = PH(MAILFROM) | PH(RCPTTO) | PH(EOD),
          .kind = POLICY_BUILTIN_PURE, NOOPT, .fn = bi_ar_add_method, .returns = T_OBJ },

        /* external: the run suspends */
        { .name = "toString", .receiver = "AuthenticationResults", .max_args = 1, .arg_types = { T_ARR },
          .phases = PH(MAILFROM) | PH(RCPTTO) | PH(EOD), .kind = POLICY_BUILTIN_EXTERNAL, .timeout_ms = 5000,
          .options_arg = 0, .options = opts_ar, .returns = T_STR,
          .doc = "the header value; the embedder fills in the transaction's memoised results" },
        { .name = "signDKIM", .receiver = "Mail", .min_args = 3, .max_args = 4, .arg_types = { T_STR, T_STR, T_STR, T_ARR },
          .phases = PH(EOD), .kind = POLICY_BUILTIN_EXTERNAL, .timeout_ms = 5000, .options_arg = 3,
          .options = opts_dkim, .returns = T_BOOL | T_ARR, .doc = "varlink call to arcd" },
        { .name = "dns_query", .min_args = 1, .max_args = 2, .arg_types = { T_STR, T_ARR }, .phases = PH_ALL,
          .kind = POLICY_BUILTIN_EXTERNAL, .cacheable = true, .timeout_ms = 5000, .options_arg = 1,
          .options = opts_dns, .returns = T_ARR },
        { .name = "dnsbl", .min_args = 2, .max_args = 3, .arg_types = { T_STR | T_NONE, T_STR, T_ARR },
          .phases = PH_ALL, .kind = POLICY_BUILTIN_EXTERNAL, .cacheable = true, .timeout_ms = 2000,
          .options_arg = 2, .options = opts_timeout, .returns = T_ARR },
        { .name = "http", .min_args = 1, .max_args = 3, .arg_types = { T_STR, T_ARR, T_ARR }, .phases = PH_ALL,
          .kind = POLICY_BUILTIN_EXTERNAL, .cacheable = true, .timeout_ms = 5000, .options_arg = 1,
          .options = opts_http, .returns = T_ARR },
        { .name = "file_lookup", .min_args = 2, .max_args = 2, .arg_types = { T_STR, T_STR | T_NONE },
          .phases = PH_ALL, .kind = POLICY_BUILTIN_PURE, .cacheable = true, NOOPT, .fn = bi_file_lookup,
          .returns = T_STR | T_NONE },
        { .name = "passwd_verify", .min_args = 3, .max_args = 3, .arg_types = { T_STR, T_STR | T_NONE, T_STR | T_NONE },
          .phases = PH(AUTH), .kind = POLICY_BUILTIN_EXTERNAL, .timeout_ms = 2000, NOOPT, .returns = T_BOOL },
        { .name = "rate", .min_args = 4, .max_args = 5, .arg_types = { T_STR, T_STR | T_NUM | T_NONE, T_NUM, T_NUM, T_ARR },
          .phases = PH_ALL, .kind = POLICY_BUILTIN_EXTERNAL, .timeout_ms = 1000, .options_arg = 4,
          .options = opts_rate, .returns = T_BOOL | T_NUM | T_NONE, .doc = "Halon semantics" },
        { .name = "spf_query", .min_args = 3, .max_args = 4, .arg_types = { T_STR, T_STR | T_NONE, T_STR | T_NONE, T_ARR },
          .phases = PH_ALL, .kind = POLICY_BUILTIN_EXTERNAL, .cacheable = true, .timeout_ms = 5000,
          .options_arg = 3, .options = opts_timeout, .returns = T_ARR },
        { .name = "spf_result", .phases = PH(MAILFROM) | PH(RCPTTO) | PH(EOD), .kind = POLICY_BUILTIN_EXTERNAL,
          .timeout_ms = 5000, NOOPT, .returns = T_ARR },
        { .name = "dkim_result", .phases = PH(EOD), .kind = POLICY_BUILTIN_EXTERNAL, .timeout_ms = 5000, NOOPT,
          .returns = T_ARR },
        { .name = "dmarc_result", .phases = PH(EOD), .kind = POLICY_BUILTIN_EXTERNAL, .timeout_ms = 5000, NOOPT,
          .returns = T_ARR },
        { .module = "ARC", .name = "chainValidate", .max_args = 1, .arg_types = { T_OBJ }, .phases = PH(EOD),
          .kind = POLICY_BUILTIN_EXTERNAL, .timeout_ms = 5000, NOOPT, .returns = T_ARR },
        { .module = "ARC", .name = "seal", .min_args = 5, .max_args = 6,
          .arg_types = { T_STR, T_STR, T_STR, T_ARR, T_STR, T_ARR }, .phases = PH(EOD),
          .kind = POLICY_BUILTIN_EXTERNAL, .timeout_ms = 5000, .options_arg = 5, .options = opts_arc,
          .returns = T_BOOL | T_ARR, .doc = "varlink call to arcd (Seal)" },
        { .name = "ScanSA", .max_args = 1, .arg_types = { T_ARR }, .phases = PH(EOD), .kind = POLICY_BUILTIN_EXTERNAL,
          .timeout_ms = 20000, .options_arg = 0, .options = opts_scan, .returns = T_NUM | T_NONE },
        { .name = "ScanRPD", .max_args = 1, .arg_types = { T_ARR }, .phases = PH(EOD), .kind = POLICY_BUILTIN_EXTERNAL,
          .timeout_ms = 10000, .options_arg = 0, .options = opts_scan, .returns = T_NUM | T_NONE },
};

const PolicyBuiltin *policy_builtin_find(const char *module, const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(builtins); i++)
                if (!builtins[i].receiver && streq_ptr(builtins[i].module, module) && strcmp(builtins[i].name, name) == 0)
                        return &builtins[i];
        return NULL;
}

const PolicyBuiltin *policy_builtin_find_method(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(builtins); i++)
                if (builtins[i].receiver && strcmp(builtins[i].name, name) == 0)
                        return &builtins[i];
        return NULL;
}

const char *policy_builtin_display_name(const PolicyBuiltin *b, char *buf, size_t size) {
        if (b->receiver)
                snprintf(buf, size, "%s->%s", b->receiver, b->name);
        else if (b->module)
                snprintf(buf, size, "%s::%s", b->module, b->name);
        else
                snprintf(buf, size, "%s", b->name);
        return buf;
}

size_t policy_builtins_count(void) {
        return ELEMENTSOF(builtins);
}

const PolicyBuiltin *policy_builtin_at(size_t i) {
        return i < ELEMENTSOF(builtins) ? &builtins[i] : NULL;
}

bool policy_log_level_valid(const char *s) {
        static const char *const levels[] = { "debug", "info", "notice", "warning", "error" };
        for (size_t i = 0; i < ELEMENTSOF(levels); i++)
                if (strcmp(s, levels[i]) == 0)
                        return true;
        return false;
}

static json_object *types_json(unsigned mask) {
        json_object *a = json_object_new_array();
        if (!a)
                return NULL;
        for (int t = 0; t < _POLICY_TYPE_MAX; t++)
                if (mask & POLICY_T(t))
                        json_object_array_add(a, json_object_new_string(policy_type_name((PolicyType) t)));
        return a;
}

int policy_builtins_to_json(json_object **ret) {
        static const char *const kinds[] = { "pure", "action", "external", "final" };
        _cleanup_(policy_json_putp) json_object *all = json_object_new_array();
        char buf[96];

        if (!all)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(builtins); i++) {
                const PolicyBuiltin *b = &builtins[i];
                json_object *o = json_object_new_object(), *ph = json_object_new_array(), *args = json_object_new_array();
                if (!o || !ph || !args) {
                        json_object_put(o);
                        json_object_put(ph);
                        json_object_put(args);
                        return -ENOMEM;
                }
                json_object_object_add(o, "name", json_object_new_string(policy_builtin_display_name(b, buf, sizeof buf)));
                json_object_object_add(o, "kind", json_object_new_string(kinds[b->kind]));
                json_object_object_add(o, "min_args", json_object_new_int((int) b->min_args));
                json_object_object_add(o, "max_args", json_object_new_int((int) b->max_args));
                for (unsigned k = 0; k < b->max_args; k++)
                        json_object_array_add(args, types_json(b->arg_types[k] ?: POLICY_T_ANY));
                json_object_object_add(o, "arguments", args);
                for (int p = 0; p < _POLICY_PHASE_MAX; p++)
                        if (b->phases & POLICY_PHASE_BIT(p))
                                json_object_array_add(ph, json_object_new_string(policy_phase_to_string((PolicyPhase) p)));
                json_object_object_add(o, "phases", ph);
                json_object_object_add(o, "suspends", json_object_new_boolean(b->kind == POLICY_BUILTIN_EXTERNAL));
                json_object_object_add(o, "cacheable", json_object_new_boolean(b->cacheable));
                if (b->timeout_ms)
                        json_object_object_add(o, "timeout_ms", json_object_new_int((int) b->timeout_ms));
                json_object_object_add(o, "returns", types_json(b->returns));
                if (b->options) {
                        json_object *opts = json_object_new_array();
                        for (size_t k = 0; opts && b->options[k]; k++)
                                json_object_array_add(opts, json_object_new_string(b->options[k]));
                        json_object_object_add(o, "options", opts);
                }
                if (b->doc)
                        json_object_object_add(o, "doc", json_object_new_string(b->doc));
                json_object_array_add(all, o);
        }
        *ret = TAKE_PTR(all);
        return 0;
}
