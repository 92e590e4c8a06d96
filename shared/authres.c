/* SPDX-License-Identifier: MIT */
#include "authres.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(AuthRes *, authres_free);

AuthRes *authres_free(AuthRes *a) {
        if (!a)
                return NULL;
        free(a->authserv_id);
        for (size_t i = 0; i < a->n_results; i++) {
                free(a->results[i].method);
                free(a->results[i].result);
                free(a->results[i].text);
        }
        free(a->results);
        free(a);
        return NULL;
}

static bool is_space(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Skips white space and (nested) comments. Returns the new position, or
 * SIZE_MAX for an unterminated comment. */
static size_t skip_cfws(const char *p, size_t n, size_t i) {
        for (;;) {
                while (i < n && is_space(p[i]))
                        i++;
                if (i >= n || p[i] != '(')
                        return i;
                unsigned depth = 0;
                for (; i < n; i++) {
                        if (p[i] == '\\') {
                                i++;
                                continue;
                        }
                        if (p[i] == '(')
                                depth++;
                        else if (p[i] == ')' && --depth == 0)
                                break;
                }
                if (i >= n)
                        return SIZE_MAX;
                i++;
        }
}

static bool is_token_char(char c) {
        /* RFC 2045 token: printable ASCII except tspecials and space */
        return (unsigned char) c > 32 && (unsigned char) c < 127 && !strchr("()<>@,;:\\\"/[]?=", c);
}

static bool is_keyword_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static char *dup_lower(const char *p, size_t n) {
        char *s = strndup(p, n);
        if (s)
                for (char *c = s; *c; c++)
                        if (*c >= 'A' && *c <= 'Z')
                                *c = (char) (*c + 32);
        return s;
}

/* Splits at ";" outside comments and quoted strings. Returns the index of
 * the next ";" (or n), SIZE_MAX on imbalance. */
static size_t next_semicolon(const char *p, size_t n, size_t i) {
        unsigned depth = 0;
        bool quoted = false;
        for (; i < n; i++) {
                char c = p[i];
                if (c == '\\') {
                        i++;
                        continue;
                }
                if (quoted) {
                        if (c == '"')
                                quoted = false;
                        continue;
                }
                if (c == '"' && depth == 0)
                        quoted = true;
                else if (c == '(')
                        depth++;
                else if (c == ')') {
                        if (depth == 0)
                                return SIZE_MAX;
                        depth--;
                } else if (c == ';' && depth == 0)
                        return i;
        }
        return depth == 0 && !quoted ? n : SIZE_MAX;
}

static int parse_resinfo(const char *p, size_t n, AuthResInfo *ret) {
        size_t i = skip_cfws(p, n, 0);
        if (i == SIZE_MAX || i >= n)
                return -EINVAL;
        size_t m = i;
        while (i < n && is_keyword_char(p[i]))
                i++;
        size_t mlen = i - m;
        if (mlen == 0)
                return -EINVAL;
        i = skip_cfws(p, n, i);
        if (i != SIZE_MAX && i < n && p[i] == '/') {
                i = skip_cfws(p, n, i + 1);
                while (i != SIZE_MAX && i < n && p[i] >= '0' && p[i] <= '9')
                        i++;
                i = i == SIZE_MAX ? i : skip_cfws(p, n, i);
        }
        if (i == SIZE_MAX || i >= n || p[i] != '=')
                return -EINVAL;
        i = skip_cfws(p, n, i + 1);
        if (i == SIZE_MAX)
                return -EINVAL;
        size_t rs = i;
        while (i < n && is_keyword_char(p[i]))
                i++;
        if (i == rs)
                return -EINVAL;
        /* The rest (reason, properties) is kept as text, not interpreted. */
        size_t a = 0, b = n;
        while (a < b && is_space(p[a]))
                a++;
        while (b > a && is_space(p[b - 1]))
                b--;
        ret->method = dup_lower(p + m, mlen);
        ret->result = dup_lower(p + rs, i - rs);
        ret->text = strndup(p + a, b - a);
        if (!ret->method || !ret->result || !ret->text)
                return -ENOMEM;
        return 0;
}

int authres_parse(const char *p, size_t n, AuthRes **ret) {
        _cleanup_(authres_freep) AuthRes *a = calloc(1, sizeof *a);
        int r;

        if (!a)
                return -ENOMEM;

        size_t end = next_semicolon(p, n, 0);
        if (end == SIZE_MAX)
                return -EINVAL;
        size_t i = skip_cfws(p, end, 0);
        if (i == SIZE_MAX || i >= end)
                return -EINVAL;
        size_t id_start = i;
        if (p[i] == '"') {
                i++;
                while (i < end && p[i] != '"')
                        i += p[i] == '\\' ? 2 : 1;
                if (i >= end)
                        return -EINVAL;
                a->authserv_id = strndup(p + id_start + 1, i - id_start - 1);
                i++;
        } else {
                while (i < end && is_token_char(p[i]))
                        i++;
                if (i == id_start)
                        return -EINVAL;
                a->authserv_id = strndup(p + id_start, i - id_start);
        }
        if (!a->authserv_id)
                return -ENOMEM;
        i = skip_cfws(p, end, i);
        while (i != SIZE_MAX && i < end && p[i] >= '0' && p[i] <= '9')
                i++;    /* authres-version */
        i = i == SIZE_MAX ? i : skip_cfws(p, end, i);
        if (i == SIZE_MAX)
                return -EINVAL;
        if (i < end) {
                /* "id none" without semicolon is the no-result form. */
                size_t w = i;
                while (i < end && is_keyword_char(p[i]))
                        i++;
                if (!(i - w == 4 && strncasecmp(p + w, "none", 4) == 0) || skip_cfws(p, end, i) != end)
                        return -EINVAL;
                a->none = true;
        }

        while (end < n) {
                size_t start = end + 1;
                end = next_semicolon(p, n, start);
                if (end == SIZE_MAX)
                        return -EINVAL;
                size_t s = skip_cfws(p, end, start);
                if (s == SIZE_MAX)
                        return -EINVAL;
                if (s == end)
                        continue;       /* empty (a trailing ";") */
                if (a->none)
                        return -EINVAL;
                if (end - s == 4 && strncasecmp(p + s, "none", 4) == 0) {
                        a->none = true;
                        if (a->n_results > 0)
                                return -EINVAL;
                        continue;
                }
                if (a->n_results >= AUTHRES_MAX_RESULTS)
                        return -E2BIG;
                if (!a->results) {
                        a->results = calloc(AUTHRES_MAX_RESULTS, sizeof *a->results);
                        if (!a->results)
                                return -ENOMEM;
                }
                r = parse_resinfo(p + start, end - start, &a->results[a->n_results]);
                a->n_results++;         /* counted even when partial, so it is freed */
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(a);
        return 0;
}

static const char *static_result(const char *r) {
        static const char *const known[] = {
                "none", "pass", "fail", "neutral", "policy", "temperror", "permerror", "softfail",
        };
        for (size_t i = 0; i < ELEMENTSOF(known); i++)
                if (strcmp(known[i], r) == 0)
                        return known[i];
        return "fail";  /* anything else is not a pass */
}

int authres_collect(const MailHeaderField *fields, size_t n_fields, const char *authserv_id,
                    char **ret_results, const char **ret_arc) {
        char *out = strdup("");
        size_t len = 0;
        const char *arc = NULL;
        int used = 0;

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < n_fields; i++) {
                _cleanup_(authres_freep) AuthRes *a = NULL;
                if (!mail_header_field_is(&fields[i], "Authentication-Results"))
                        continue;
                int r = authres_parse(fields[i].value, fields[i].value_len, &a);
                if (r == -ENOMEM) {
                        free(out);
                        return r;
                }
                if (r < 0 || strcasecmp(a->authserv_id, authserv_id) != 0)
                        continue;
                used++;
                for (size_t j = 0; j < a->n_results; j++) {
                        size_t tl = strlen(a->results[j].text);
                        char *o = realloc(out, len + tl + 3);
                        if (!o) {
                                free(out);
                                return -ENOMEM;
                        }
                        out = o;
                        if (len > 0) {
                                memcpy(out + len, "; ", 2);
                                len += 2;
                        }
                        memcpy(out + len, a->results[j].text, tl + 1);
                        len += tl;
                        if (strcmp(a->results[j].method, "arc") == 0)
                                arc = static_result(a->results[j].result);
                }
        }
        *ret_results = out;
        if (ret_arc)
                *ret_arc = arc;
        return used;
}
