/* SPDX-License-Identifier: MIT */
/* The policy checker (policy/policy-check.c) and compiler, reached with
 * programs that parse: the input bytes steer a small generator of HPL
 * (handlers in any phase, functions, constants, imports of nothing, cache
 * statements with good and bad options, builtins with any arity and
 * literal types, writes to read-only variables, regex literals, verdicts),
 * so mutations exercise the checks rather than the parser's error
 * recovery. A load must either succeed without errors or fail with at
 * least one error placed in the generated text. */

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-diag.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Gen {
        const uint8_t *p;
        size_t n, i;
        size_t len;
        unsigned depth;
        char buf[32 * 1024]; /* last: everything before it is reset per input */
} Gen;

static unsigned pick(Gen *g, unsigned k) {
        return g->i < g->n ? g->p[g->i++] % k : 0;
}

_printf_(2, 3)
static void emit(Gen *g, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = vsnprintf(g->buf + g->len, sizeof g->buf - g->len, fmt, ap);
        va_end(ap);
        if (r > 0)
                g->len = g->len + (size_t) r < sizeof g->buf ? g->len + (size_t) r : sizeof g->buf - 1;
}

static const char *const phases[] = { "connect", "helo", "auth", "mailfrom", "rcptto", "eod", "disconnect" };
static const char *const vars[] = { "$connection", "$transaction", "$arguments", "$context", "$x", "$y", "$CONST",
                                    "$undefined", "$mail" };
static const char *const keys[] = { "remoteip", "address", "domain", "host", "mail", "recipients", "tls", "x" };
static const char *const builtins[] = {
        "length", "lower", "upper", "string", "number", "str_split", "str_join", "keys", "json_decode",
        "json_encode", "now", "in_network", "is_subdomain", "regex_match", "client_cert", "dns_query", "dnsbl",
        "http", "file_lookup", "passwd_verify", "rate", "spf_query", "spf_result", "dkim_result", "dmarc_result",
        "ARC::chainValidate", "ARC::seal", "ScanSA", "ScanRPD", "log", "Queue", "f", "nosuch", "AuthenticationResults",
};
static const char *const methods[] = { "addHeader", "delHeader", "setHeader", "getHeader", "getHeaders", "SPF",
                                       "DKIM", "toString", "signDKIM", "nosuch" };
static const char *const cache_opts[] = { "ttl", "size", "namespace", "argv_filter", "bogus", "update_on_error" };
static const char *const regexes[] = { "^[a-z]+$", "(", "a{2,1}", "x|y", "[[:alpha:]]" };

static void expr(Gen *g);

static void args(Gen *g) {
        unsigned n = pick(g, 5);
        for (unsigned i = 0; i < n; i++) {
                if (i)
                        emit(g, ", ");
                expr(g);
        }
}

static void literal(Gen *g) {
        switch (pick(g, 8)) {
        case 0: emit(g, "%u", pick(g, 200) * 3); break;
        case 1: emit(g, "\"s%u\"", pick(g, 10)); break;
        case 2: emit(g, "\"v=$x %s\"", keys[pick(g, ELEMENTSOF(keys))]); break;
        case 3: emit(g, pick(g, 2) ? "true" : "false"); break;
        case 4: emit(g, "none"); break;
        case 5: emit(g, "[code => %u, enhanced => [%u, 7, 1]]", 200 + pick(g, 400), pick(g, 6)); break;
        case 6: emit(g, "[\"a\", %u]", pick(g, 9)); break;
        default: emit(g, "'%s'", regexes[pick(g, ELEMENTSOF(regexes))]); break;
        }
}

static void expr(Gen *g) {
        if (g->depth > 6 || g->len > sizeof g->buf - 512) {
                literal(g);
                return;
        }
        g->depth++;
        switch (pick(g, 10)) {
        case 0: literal(g); break;
        case 1: emit(g, "%s", vars[pick(g, ELEMENTSOF(vars))]); break;
        case 2: emit(g, "%s[\"%s\"]", vars[pick(g, ELEMENTSOF(vars))], keys[pick(g, ELEMENTSOF(keys))]); break;
        case 3: {
                static const char *const ops[] = { "+", "-", "*", "/", "%", "==", "!=", "<", ">=", "and", "or", ".",
                                                   "??", "=~", "in" };
                emit(g, "(");
                expr(g);
                emit(g, " %s ", ops[pick(g, ELEMENTSOF(ops))]);
                expr(g);
                emit(g, ")");
                break;
        }
        case 4: emit(g, "not "); expr(g); break;
        case 5: case 6:
                emit(g, "%s(", builtins[pick(g, ELEMENTSOF(builtins))]);
                args(g);
                emit(g, ")");
                break;
        case 7:
                emit(g, "%s->%s(", pick(g, 2) ? "$mail" : "AuthenticationResults()", methods[pick(g, ELEMENTSOF(methods))]);
                args(g);
                emit(g, ")");
                break;
        case 8: expr(g); emit(g, " ? "); expr(g); emit(g, " : "); expr(g); break;
        default:
                emit(g, "cache [");
                for (unsigned i = 0, n = pick(g, 3); i < n; i++)
                        emit(g, "%s%s => %u", i ? ", " : "", cache_opts[pick(g, ELEMENTSOF(cache_opts))], pick(g, 100));
                emit(g, "] %s(", builtins[pick(g, ELEMENTSOF(builtins))]);
                args(g);
                emit(g, ")");
                break;
        }
        g->depth--;
}

static void block(Gen *g, unsigned n);

static void statement(Gen *g) {
        switch (pick(g, 9)) {
        case 0: case 1:
                emit(g, "%s = ", pick(g, 3) ? (pick(g, 2) ? "$x" : "$y") : vars[pick(g, ELEMENTSOF(vars))]);
                expr(g);
                emit(g, ";\n");
                break;
        case 2:
                emit(g, "if (");
                expr(g);
                emit(g, ") {\n");
                block(g, pick(g, 3));
                emit(g, "}%s\n", pick(g, 2) ? " else {" : "");
                if (g->buf[g->len - 2] == '{') {
                        block(g, pick(g, 3));
                        emit(g, "}\n");
                }
                break;
        case 3:
                emit(g, "foreach (");
                expr(g);
                emit(g, " as $k => $v) {\n");
                block(g, pick(g, 3));
                emit(g, "}\n");
                break;
        case 4: {
                static const char *const verdicts[] = { "Accept", "Reject", "Defer" };
                emit(g, "%s(", verdicts[pick(g, 3)]);
                args(g);
                emit(g, ");\n");
                break;
        }
        case 5: emit(g, pick(g, 2) ? "return;\n" : "break;\n"); break;
        default: expr(g); emit(g, ";\n"); break;
        }
}

static void block(Gen *g, unsigned n) {
        if (g->depth > 6)
                return;
        g->depth++;
        for (unsigned i = 0; i < n; i++)
                statement(g);
        g->depth--;
}

static void program(Gen *g) {
        if (pick(g, 2)) {
                emit(g, "const $CONST = ");
                literal(g);
                emit(g, ";\n");
        }
        if (pick(g, 2)) {
                emit(g, "function f($a%s) {\n", pick(g, 2) ? ", $b" : "");
                block(g, 1 + pick(g, 3));
                emit(g, "}\n");
        }
        for (unsigned h = 0, n = 1 + pick(g, 3); h < n; h++) {
                emit(g, "on %s {\n", phases[pick(g, ELEMENTSOF(phases))]);
                block(g, 1 + pick(g, 5));
                emit(g, "}\n");
        }
}

static int read_input(void *userdata, const char *path, size_t max, char **ret_text, size_t *ret_len) {
        const Gen *g = userdata;
        if (strcmp(path, "fuzz.hal") != 0)
                return -ENOENT;
        if (g->len > max)
                return -EFBIG;
        *ret_text = strndup(g->buf, g->len);
        if (!*ret_text)
                return -ENOMEM;
        *ret_len = g->len;
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static Gen g;
        memset(&g, 0, offsetof(Gen, buf));
        g.p = data;
        g.n = size;
        g.buf[0] = 0;
        program(&g);

        uint32_t lines = 1;
        for (size_t i = 0; i < g.len; i++)
                lines += g.buf[i] == '\n';
        PolicyLoadOptions opts = { .read_file = read_input, .userdata = &g };
        PolicyDiags diags = {};
        PolicyGeneration *gen = NULL;
        int r = policy_generation_load("fuzz.hal", &opts, &diags, &gen);
        if (r == 0)
                assert(gen && diags.n_errors == 0);
        else if (r == -EINVAL)
                assert(!gen && diags.n_errors > 0);
        else
                assert(r == -ENOMEM);
        for (size_t i = 0; i < diags.n; i++) {
                assert(diags.items[i].line >= 1 && diags.items[i].line <= lines + 1);
                assert(diags.items[i].message && diags.items[i].message[0]);
        }
        policy_generation_unref(gen);
        policy_diags_done(&diags);
        return 0;
}
