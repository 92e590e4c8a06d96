/* SPDX-License-Identifier: MIT */
#include "spf.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "macro.h"

/* Bounds that keep a hostile record or identity from costing more than a
 * few kilobytes: a longer record is a permerror, a longer identity is
 * malformed (none), a macro expansion past SPF_EXPAND_MAX is a permerror
 * (an explanation is cut there instead). */
#define SPF_RECORD_MAX 8192
#define SPF_NAME_MAX 253
#define SPF_EXPAND_MAX 8192
#define SPF_SENDER_MAX 1024
/* Includes nest at most max_lookups deep (each costs a lookup); this caps
 * the frame stack even when a caller raises max_lookups. */
#define SPF_MAX_DEPTH 32
/* §4.6.4: names looked up per mx and ptr. */
#define SPF_MAX_NAMES 10

typedef enum MechKind {
        MECH_ALL,
        MECH_INCLUDE,
        MECH_A,
        MECH_MX,
        MECH_PTR,
        MECH_IP4,
        MECH_IP6,
        MECH_EXISTS,
} MechKind;

typedef struct Term {
        MechKind kind;
        SpfResultCode qualifier;
        const char *text; /* the whole directive, for the reason */
        size_t text_len;
        const char *spec; /* domain-spec, NULL: <domain> */
        size_t spec_len;
        unsigned cidr4, cidr6;
        uint8_t addr[16]; /* ip4 / ip6 network */
} Term;

typedef struct Frame {
        char domain[SPF_NAME_MAX + 1];
        char *record; /* owned copy of the selected record */
        Term *terms;
        size_t n_terms, pos;
        const char *redirect, *exp; /* domain-specs inside record */
        size_t redirect_len, exp_len;
        bool via_redirect; /* a missing record is a permerror */
} Frame;

typedef enum Step {
        STEP_RECORD,     /* ask TXT for the top frame's domain */
        STEP_RECORD_WAIT,
        STEP_TERMS,      /* evaluate the top frame's term at pos */
        STEP_A_WAIT,
        STEP_EXISTS_WAIT,
        STEP_MX_WAIT,
        STEP_MX_ADDR_WAIT,
        STEP_PTR_WAIT,
        STEP_PTR_ADDR_WAIT,
        STEP_REDIRECT,   /* no mechanism matched: follow redirect= */
        STEP_EXP,        /* fail at the top: expand exp= and ask for it */
        STEP_EXP_WAIT,
        STEP_EXP_TEXT,   /* expand the explanation's text */
        STEP_DONE,
} Step;

struct SpfCheck {
        int family;
        uint8_t ip[16];
        char ip_text[INET6_ADDRSTRLEN]; /* %{c} */
        char ip_dots[72];               /* %{i} */
        char ptr_qname[80];             /* the reverse name */

        char *helo, *sender, *local, *sender_domain, *receiver;
        uint64_t now;
        unsigned max_lookups, max_void;
        const char *identity;

        Frame frames[SPF_MAX_DEPTH];
        unsigned depth;
        Step step;

        /* the query handed out (or about to be) */
        char qname[SPF_NAME_MAX + 1];
        uint16_t qtype;
        bool pending, handed;

        /* mx exchanges or PTR names being looked up */
        char *names[SPF_MAX_NAMES];
        size_t n_names, name_i;
        char target[SPF_NAME_MAX + 1]; /* ptr mechanism's target */
        bool ptr_for_p;                /* computing %{p}, not the ptr mechanism */
        Step p_return;
        bool p_done;
        char p_name[SPF_NAME_MAX + 1];

        char *exp_text;

        unsigned lookups, voids;
        SpfResult res;
        char *reason;
        char *explanation;
};

static const char *const result_names[_SPF_RESULT_MAX] = {
        [SPF_RESULT_NONE] = "none",
        [SPF_RESULT_NEUTRAL] = "neutral",
        [SPF_RESULT_PASS] = "pass",
        [SPF_RESULT_FAIL] = "fail",
        [SPF_RESULT_SOFTFAIL] = "softfail",
        [SPF_RESULT_TEMPERROR] = "temperror",
        [SPF_RESULT_PERMERROR] = "permerror",
};

const char *spf_result_to_string(SpfResultCode r) {
        if ((unsigned) r >= _SPF_RESULT_MAX)
                return "?";
        return result_names[r];
}

/* ------------------------------------------------------------------ helpers */

static char lower(char ch) {
        return ch >= 'A' && ch <= 'Z' ? (char) (ch + 32) : ch;
}

static bool is_alpha(char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_digit(char ch) {
        return ch >= '0' && ch <= '9';
}

static bool is_alnum(char ch) {
        return is_alpha(ch) || is_digit(ch);
}

static bool span_eq_ci(const char *p, size_t n, const char *s) {
        size_t len = strlen(s);
        if (n != len)
                return false;
        for (size_t i = 0; i < n; i++)
                if (lower(p[i]) != lower(s[i]))
                        return false;
        return true;
}

/* A name we can ask the resolver for: labels of 1..63 bytes, at most
 * SPF_NAME_MAX in all, an optional trailing dot, and only bytes dns_query()
 * takes as they are (no space, control or 8-bit byte, no backslash, quote,
 * parenthesis or semicolon: it refuses escapes, so that no label can forge
 * a dot). A macro that expands to anything else names no host: the
 * mechanism does not match, as for an empty label (the suite's preferred
 * reading of that undefined case). multi: a <domain> per §4.3: at least
 * two labels, no domain literal, and not ending in a numeric label. */
static bool name_is_valid(const char *s, bool multi) {
        size_t n = strlen(s), label = 0, labels = 0;

        if (n > 0 && s[n - 1] == '.')
                n--;
        if (n == 0 || n > SPF_NAME_MAX)
                return false;
        for (size_t i = 0; i <= n; i++) {
                if (i == n || s[i] == '.') {
                        if (label == 0 || label > 63)
                                return false;
                        labels++;
                        label = 0;
                        continue;
                }
                unsigned char ch = (unsigned char) s[i];
                if (ch <= 0x20 || ch >= 0x7f || strchr("\\\"();", ch) || (multi && strchr("[]@", ch)))
                        return false;
                label++;
        }
        if (!multi)
                return true;
        size_t b = n;
        while (b > 0 && s[b - 1] != '.')
                b--;
        bool numeric = true;
        for (size_t i = b; i < n; i++)
                if (!(s[i] >= '0' && s[i] <= '9'))
                        numeric = false;
        return labels >= 2 && !numeric;
}

/* A name from an answer (presentation form, \DDD and \X escapes) to raw
 * form; false if it does not fit or is malformed. */
static bool name_unescape(const char *src, char dst[static SPF_NAME_MAX + 1]) {
        size_t o = 0;
        for (size_t i = 0; src[i]; i++) {
                unsigned char ch = (unsigned char) src[i];
                if (ch == '\\') {
                        if (src[i + 1] >= '0' && src[i + 1] <= '9' && src[i + 2] >= '0' && src[i + 2] <= '9' &&
                            src[i + 3] >= '0' && src[i + 3] <= '9') {
                                unsigned v = (unsigned) ((src[i + 1] - '0') * 100 + (src[i + 2] - '0') * 10 +
                                                         (src[i + 3] - '0'));
                                if (v == 0 || v > 255)
                                        return false;
                                ch = (unsigned char) v;
                                i += 3;
                        } else if (src[i + 1]) {
                                ch = (unsigned char) src[++i];
                        } else
                                return false;
                }
                if (o >= SPF_NAME_MAX + 1)
                        return false;
                dst[o++] = (char) ch;
        }
        if (o > 0 && dst[o - 1] == '.')
                o--;
        if (o > SPF_NAME_MAX)
                return false;
        dst[o] = 0;
        return true;
}

/* Copies a name lower-cased without a trailing dot. */
static void name_copy(char dst[static SPF_NAME_MAX + 1], const char *src) {
        size_t n = strlen(src);
        if (n > 0 && src[n - 1] == '.')
                n--;
        n = MIN(n, (size_t) SPF_NAME_MAX);
        for (size_t i = 0; i < n; i++)
                dst[i] = lower(src[i]);
        dst[n] = 0;
}

static bool names_equal(const char *a, const char *b) {
        size_t na = strlen(a), nb = strlen(b);
        if (na > 0 && a[na - 1] == '.')
                na--;
        if (nb > 0 && b[nb - 1] == '.')
                nb--;
        return na == nb && strncasecmp(a, b, na) == 0;
}

/* name is target or below it. */
static bool name_within(const char *name, const char *target) {
        size_t nn = strlen(name), nt = strlen(target);
        if (nn > 0 && name[nn - 1] == '.')
                nn--;
        if (nt > 0 && target[nt - 1] == '.')
                nt--;
        if (nn < nt || nt == 0)
                return false;
        if (strncasecmp(name + nn - nt, target, nt) != 0)
                return false;
        return nn == nt || name[nn - nt - 1] == '.';
}

static bool addr_match(const uint8_t *a, const uint8_t *b, unsigned bits) {
        unsigned full = bits / 8, rest = bits % 8;
        if (memcmp(a, b, full) != 0)
                return false;
        if (rest == 0)
                return true;
        uint8_t mask = (uint8_t) (0xff << (8 - rest));
        return (a[full] & mask) == (b[full] & mask);
}

/* ------------------------------------------------------------------ macros */

typedef struct Buf {
        char *p;
        size_t len, max;
} Buf;

static int buf_put(Buf *b, const char *s, size_t n) {
        if (!b)
                return 0;
        if (n > b->max - b->len)
                return -E2BIG;
        memcpy(b->p + b->len, s, n);
        b->len += n;
        return 0;
}

static bool is_delimiter(char ch) {
        return ch == '.' || ch == '-' || ch == '+' || ch == ',' || ch == '/' || ch == '_' || ch == '=';
}

static bool is_unreserved(char ch) {
        return is_alnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

enum {
        MACRO_EXPLAIN = 1 << 0, /* explain-string: SP and %{c} %{r} %{t} allowed */
};

/* The value of one macro letter; -EAGAIN when %{p} is not computed yet. */
static int macro_value(SpfCheck *c, char letter, const char *domain, char tbuf[static 24], const char **ret) {
        switch (letter) {
        case 's':
                *ret = c->sender;
                return 0;
        case 'l':
                *ret = c->local;
                return 0;
        case 'o':
                *ret = c->sender_domain;
                return 0;
        case 'd':
                *ret = domain;
                return 0;
        case 'i':
                *ret = c->ip_dots;
                return 0;
        case 'p':
                if (!c->p_done)
                        return -EAGAIN;
                *ret = c->p_name;
                return 0;
        case 'v':
                *ret = c->family == AF_INET ? "in-addr" : "ip6";
                return 0;
        case 'h':
                *ret = c->helo ?: "unknown";
                return 0;
        case 'c':
                *ret = c->ip_text;
                return 0;
        case 'r':
                *ret = c->receiver ?: "unknown";
                return 0;
        case 't':
                snprintf(tbuf, 24, "%" PRIu64, c->now);
                *ret = tbuf;
                return 0;
        }
        return -EINVAL;
}

/* §7.3: split on the delimiters, reverse if asked, keep the rightmost
 * `digits` parts (0: all), join with dots; escape if upper-case. */
static int macro_transform(const char *v, unsigned digits, bool reverse, const char *delims, bool escape,
                           Buf *out) {
        size_t n = strlen(v), n_parts = 1;
        for (size_t i = 0; i < n; i++)
                if (strchr(delims, v[i]))
                        n_parts++;

        _cleanup_free_ size_t *start = malloc(n_parts * sizeof(size_t));
        _cleanup_free_ size_t *len = malloc(n_parts * sizeof(size_t));
        if (!start || !len)
                return -ENOMEM;
        size_t k = 0, s = 0;
        for (size_t i = 0; i <= n; i++)
                if (i == n || strchr(delims, v[i])) {
                        start[k] = s;
                        len[k] = i - s;
                        k++;
                        s = i + 1;
                }

        size_t keep = digits == 0 || digits > n_parts ? n_parts : digits;
        for (size_t j = 0; j < keep; j++) {
                /* the j-th of the kept parts, left to right in the (maybe
                 * reversed) list */
                size_t idx = n_parts - keep + j;
                if (reverse)
                        idx = n_parts - 1 - idx;
                int r;
                if (j > 0 && (r = buf_put(out, ".", 1)) < 0)
                        return r;
                const char *p = v + start[idx];
                for (size_t q = 0; q < len[idx]; q++) {
                        if (escape && !is_unreserved(p[q])) {
                                char hex[4];
                                snprintf(hex, sizeof hex, "%%%02X", (unsigned char) p[q]);
                                r = buf_put(out, hex, 3);
                        } else
                                r = buf_put(out, p + q, 1);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* Checks (c == NULL) or expands a macro-string (§7.1). -EINVAL: syntax;
 * -E2BIG: longer than out->max; -EAGAIN: needs %{p}. ret_macro_end: it
 * ends in a macro-expand (for domain-end). */
static int macro_expand(SpfCheck *c, const char *s, size_t n, unsigned flags, const char *domain, Buf *out,
                        bool *ret_macro_end) {
        bool macro_end = false;
        int r;

        for (size_t i = 0; i < n;) {
                char ch = s[i];
                if (ch != '%') {
                        if (!((ch == ' ' && (flags & MACRO_EXPLAIN)) || ((unsigned char) ch >= 0x21 && (unsigned char) ch <= 0x7e)))
                                return -EINVAL;
                        if ((r = buf_put(c ? out : NULL, s + i, 1)) < 0)
                                return r;
                        macro_end = false;
                        i++;
                        continue;
                }
                if (i + 1 >= n)
                        return -EINVAL;
                char nx = s[i + 1];
                if (nx == '%' || nx == '_' || nx == '-') {
                        const char *lit = nx == '%' ? "%" : nx == '_' ? " " : "%20";
                        if ((r = buf_put(c ? out : NULL, lit, strlen(lit))) < 0)
                                return r;
                        macro_end = true;
                        i += 2;
                        continue;
                }
                if (nx != '{')
                        return -EINVAL;
                i += 2;
                if (i >= n)
                        return -EINVAL;
                char letter = s[i++];
                char ll = lower(letter);
                if (!strchr("slodiphv", ll) && !((flags & MACRO_EXPLAIN) && strchr("crt", ll)))
                        return -EINVAL;
                unsigned digits = 0;
                bool have_digits = false;
                while (i < n && is_digit(s[i])) {
                        have_digits = true;
                        digits = MIN(digits * 10 + (unsigned) (s[i] - '0'), 1000u);
                        i++;
                }
                if (have_digits && digits == 0)
                        return -EINVAL;
                bool reverse = false;
                if (i < n && (s[i] == 'r' || s[i] == 'R')) {
                        reverse = true;
                        i++;
                }
                char delims[8] = "";
                size_t nd = 0;
                while (i < n && is_delimiter(s[i])) {
                        if (!strchr(delims, s[i]) && nd < 7) {
                                delims[nd++] = s[i];
                                delims[nd] = 0;
                        }
                        i++;
                }
                if (i >= n || s[i] != '}')
                        return -EINVAL;
                i++;
                macro_end = true;
                if (!c)
                        continue;
                char tbuf[24];
                const char *v;
                if ((r = macro_value(c, ll, domain, tbuf, &v)) < 0)
                        return r;
                r = macro_transform(v, digits, reverse, nd > 0 ? delims : ".", letter != ll, out);
                if (r < 0)
                        return r;
        }
        if (ret_macro_end)
                *ret_macro_end = macro_end;
        return 0;
}

/* toplabel = ( *alphanum ALPHA *alphanum ) /
 *            ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static bool is_toplabel(const char *p, size_t n) {
        bool alpha = false, dash = false;
        if (n == 0)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (is_alpha(p[i]))
                        alpha = true;
                else if (p[i] == '-')
                        dash = true;
                else if (!is_digit(p[i]))
                        return false;
        }
        if (!dash)
                return alpha;
        return is_alnum(p[0]) && is_alnum(p[n - 1]);
}

/* domain-spec = macro-string domain-end; domain-end = ( "." toplabel [ "." ] ) / macro-expand */
static bool domain_spec_is_valid(const char *s, size_t n) {
        bool macro_end;
        if (n == 0 || macro_expand(NULL, s, n, 0, NULL, NULL, &macro_end) < 0)
                return false;
        if (macro_end)
                return true;
        size_t e = n;
        if (s[e - 1] == '.')
                e--;
        size_t b = e;
        while (b > 0 && s[b - 1] != '.')
                b--;
        /* the toplabel must be preceded by a dot that is not itself part of
         * a macro (a literal dot, since macro_end was false) */
        if (b == 0)
                return false;
        return is_toplabel(s + b, e - b);
}

/* Expands a domain-spec (or uses <domain>) into a name to look up: §7.3
 * chops labels off the left beyond 253 characters. 0 and a name that may
 * still be invalid for DNS (the caller treats that as non-existent). */
static int target_expand(SpfCheck *c, const char *spec, size_t spec_len, const char *domain,
                         char ret[static SPF_NAME_MAX + 1]) {
        if (!spec) {
                name_copy(ret, domain);
                return 0;
        }
        _cleanup_free_ char *p = malloc(SPF_EXPAND_MAX + 1);
        if (!p)
                return -ENOMEM;
        Buf b = { .p = p, .max = SPF_EXPAND_MAX };
        int r = macro_expand(c, spec, spec_len, 0, domain, &b, NULL);
        if (r < 0)
                return r;
        p[b.len] = 0;
        if (b.len > 0 && p[b.len - 1] == '.')
                p[--b.len] = 0;
        const char *q = p;
        while (strlen(q) > SPF_NAME_MAX) {
                const char *dot = strchr(q, '.');
                if (!dot) {
                        /* one huge label: an invalid name, never asked */
                        ret[0] = 0;
                        return 0;
                }
                q = dot + 1;
        }
        name_copy(ret, q);
        return 0;
}

/* ------------------------------------------------------------------ parsing */

static int parse_cidr(const char *p, size_t n, unsigned max, unsigned *ret) {
        /* "0" / %x31-39 0*1DIGIT (ip4) or 0*2DIGIT (ip6): no leading zero */
        if (n == 0 || n > 3 || (n > 1 && p[0] == '0'))
                return -EINVAL;
        unsigned v = 0;
        for (size_t i = 0; i < n; i++) {
                if (!is_digit(p[i]))
                        return -EINVAL;
                v = v * 10 + (unsigned) (p[i] - '0');
        }
        if (v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* Strips a trailing dual-cidr-length ("/N", "//M", "/N//M") off [p, p+*n). */
static int strip_dual_cidr(const char *p, size_t *n, Term *t) {
        size_t e = *n, b = e;
        while (b > 0 && is_digit(p[b - 1]))
                b--;
        if (b < e && b >= 2 && p[b - 1] == '/' && p[b - 2] == '/') {
                if (parse_cidr(p + b, e - b, 128, &t->cidr6) < 0)
                        return -EINVAL;
                e = b - 2;
                b = e;
                while (b > 0 && is_digit(p[b - 1]))
                        b--;
        }
        if (b < e && b >= 1 && p[b - 1] == '/' && !(b >= 2 && p[b - 2] == '/')) {
                if (parse_cidr(p + b, e - b, 32, &t->cidr4) < 0)
                        return -EINVAL;
                e = b - 1;
        }
        *n = e;
        return 0;
}

static int parse_directive(const char *p, size_t n, Term *t) {
        *t = (Term) { .qualifier = SPF_RESULT_PASS, .text = p, .text_len = n, .cidr4 = 32, .cidr6 = 128 };

        if (n > 0 && strchr("+-~?", p[0])) {
                t->qualifier = p[0] == '+' ? SPF_RESULT_PASS
                             : p[0] == '-' ? SPF_RESULT_FAIL
                             : p[0] == '~' ? SPF_RESULT_SOFTFAIL
                                           : SPF_RESULT_NEUTRAL;
                p++;
                n--;
        }
        size_t k = 0;
        while (k < n && p[k] != ':' && p[k] != '/')
                k++;
        static const struct {
                const char *name;
                MechKind kind;
        } mechs[] = {
                { "all", MECH_ALL },     { "include", MECH_INCLUDE }, { "a", MECH_A },
                { "mx", MECH_MX },       { "ptr", MECH_PTR },         { "ip4", MECH_IP4 },
                { "ip6", MECH_IP6 },     { "exists", MECH_EXISTS },
        };
        size_t m;
        for (m = 0; m < ELEMENTSOF(mechs); m++)
                if (span_eq_ci(p, k, mechs[m].name))
                        break;
        if (m == ELEMENTSOF(mechs))
                return -EINVAL;
        t->kind = mechs[m].kind;
        const char *rest = p + k;
        size_t rn = n - k;

        switch (t->kind) {
        case MECH_ALL:
                return rn == 0 ? 0 : -EINVAL;
        case MECH_INCLUDE:
        case MECH_EXISTS:
                if (rn < 2 || rest[0] != ':')
                        return -EINVAL;
                t->spec = rest + 1;
                t->spec_len = rn - 1;
                return domain_spec_is_valid(t->spec, t->spec_len) ? 0 : -EINVAL;
        case MECH_A:
        case MECH_MX:
        case MECH_PTR:
                if (t->kind != MECH_PTR && strip_dual_cidr(rest, &rn, t) < 0)
                        return -EINVAL;
                if (rn == 0)
                        return 0;
                if (rn < 2 || rest[0] != ':')
                        return -EINVAL;
                t->spec = rest + 1;
                t->spec_len = rn - 1;
                return domain_spec_is_valid(t->spec, t->spec_len) ? 0 : -EINVAL;
        case MECH_IP4:
        case MECH_IP6: {
                bool v4 = t->kind == MECH_IP4;
                if (rn < 2 || rest[0] != ':')
                        return -EINVAL;
                rest++;
                rn--;
                const char *slash = memchr(rest, '/', rn);
                size_t an = slash ? (size_t) (slash - rest) : rn;
                if (slash && parse_cidr(slash + 1, rn - an - 1, v4 ? 32 : 128, v4 ? &t->cidr4 : &t->cidr6) < 0)
                        return -EINVAL;
                char abuf[INET6_ADDRSTRLEN + 1];
                if (an == 0 || an >= sizeof abuf)
                        return -EINVAL;
                memcpy(abuf, rest, an);
                abuf[an] = 0;
                if (inet_pton(v4 ? AF_INET : AF_INET6, abuf, t->addr) != 1)
                        return -EINVAL;
                return 0;
        }
        }
        return -EINVAL;
}

/* Parses f->record (already known to start with "v=spf1"). */
static int parse_record(Frame *f, const char **ret_why) {
        const char *s = f->record;
        size_t n = strlen(s);

        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e) {
                        *ret_why = "invalid character in SPF record";
                        return -EINVAL;
                }
        size_t n_tokens = 0;
        for (size_t i = 6; i < n; i++)
                if (s[i] != ' ' && s[i - 1] == ' ')
                        n_tokens++;
        f->terms = calloc(n_tokens + 1, sizeof(Term));
        if (!f->terms)
                return -ENOMEM;

        size_t i = 6;
        for (;;) {
                size_t sp = i;
                while (i < n && s[i] == ' ')
                        i++;
                if (i >= n)
                        break;
                if (i == sp) {
                        *ret_why = "terms must be separated by spaces";
                        return -EINVAL;
                }
                size_t b = i;
                while (i < n && s[i] != ' ')
                        i++;
                const char *p = s + b;
                size_t len = i - b;

                /* a modifier is name "=" with name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) */
                size_t k = 0;
                while (k < len && p[k] != '=' && p[k] != ':' && p[k] != '/')
                        k++;
                bool is_name = k > 0 && is_alpha(p[0]);
                for (size_t j = 1; is_name && j < k; j++)
                        if (!is_alnum(p[j]) && p[j] != '-' && p[j] != '_' && p[j] != '.')
                                is_name = false;
                if (k < len && p[k] == '=' && is_name) {
                        const char *v = p + k + 1;
                        size_t vn = len - k - 1;
                        if (span_eq_ci(p, k, "redirect") || span_eq_ci(p, k, "exp")) {
                                bool redir = span_eq_ci(p, k, "redirect");
                                if (redir ? f->redirect != NULL : f->exp != NULL) {
                                        *ret_why = "duplicate modifier";
                                        return -EINVAL;
                                }
                                if (!domain_spec_is_valid(v, vn)) {
                                        *ret_why = "invalid domain-spec";
                                        return -EINVAL;
                                }
                                if (redir) {
                                        f->redirect = v;
                                        f->redirect_len = vn;
                                } else {
                                        f->exp = v;
                                        f->exp_len = vn;
                                }
                        } else if (macro_expand(NULL, v, vn, 0, NULL, NULL, NULL) < 0) {
                                *ret_why = "invalid macro in unknown modifier";
                                return -EINVAL;
                        }
                        continue;
                }
                if (parse_directive(p, len, &f->terms[f->n_terms]) < 0) {
                        *ret_why = "invalid mechanism";
                        return -EINVAL;
                }
                f->n_terms++;
        }
        return 0;
}

/* ------------------------------------------------------------------ machine */

static void frame_done(Frame *f) {
        free(f->record);
        free(f->terms);
        *f = (Frame) {};
}

static void names_clear(SpfCheck *c) {
        for (size_t i = 0; i < c->n_names; i++) {
                free(c->names[i]);
                c->names[i] = NULL;
        }
        c->n_names = c->name_i = 0;
}

static Frame *top(SpfCheck *c) {
        return &c->frames[c->depth - 1];
}

static void finish(SpfCheck *c, SpfResultCode result, const char *reason, size_t reason_len) {
        c->res.result = result;
        free(c->reason);
        c->reason = strndup(reason, reason_len);
        c->res.reason = c->reason ?: "out of memory";
        c->res.explanation = c->explanation;
        c->res.lookups = c->lookups;
        c->res.void_lookups = c->voids;
        c->pending = false;
        c->step = STEP_DONE;
}

static void finish_static(SpfCheck *c, SpfResultCode result, const char *reason) {
        finish(c, result, reason, strlen(reason));
}

/* name passed name_is_valid(): dns_query() takes it as it is. */
static void ask(SpfCheck *c, const char *name, uint16_t type, Step wait) {
        name_copy(c->qname, name);
        c->qtype = type;
        c->pending = true;
        c->handed = false;
        c->step = wait;
}

static uint16_t addr_type(const SpfCheck *c) {
        return c->family == AF_INET ? DNS_TYPE_A : DNS_TYPE_AAAA;
}

/* A DNS-querying term is about to be evaluated: §4.6.4. */
static int count_lookup(SpfCheck *c) {
        if (++c->lookups > c->max_lookups) {
                finish_static(c, SPF_RESULT_PERMERROR, "too many DNS lookups");
                return -ELOOP;
        }
        return 0;
}

static int count_void(SpfCheck *c) {
        if (++c->voids > c->max_void) {
                finish_static(c, SPF_RESULT_PERMERROR, "too many void DNS lookups");
                return -ELOOP;
        }
        return 0;
}

static bool is_void(const DnsResult *r) {
        return r->status == DNS_STATUS_NXDOMAIN || r->status == DNS_STATUS_NODATA ||
               (r->status == DNS_STATUS_OK && r->n_records == 0);
}

static void start_p(SpfCheck *c, Step resume) {
        c->p_return = resume;
        c->ptr_for_p = true;
        names_clear(c);
        ask(c, c->ptr_qname, DNS_TYPE_PTR, STEP_PTR_WAIT);
}

/* The top frame came to a result of its own. */
static void frame_result(SpfCheck *c, SpfResultCode result, const Term *matched) {
        if (result == SPF_RESULT_TEMPERROR || result == SPF_RESULT_PERMERROR) {
                finish_static(c, result, result == SPF_RESULT_TEMPERROR ? "DNS temporary failure" : "permanent error");
                return;
        }
        if (c->depth == 1) {
                if (result == SPF_RESULT_FAIL && top(c)->exp) {
                        c->res.result = result;
                        free(c->reason);
                        c->reason = matched ? strndup(matched->text, matched->text_len) : NULL;
                        c->step = STEP_EXP;
                        return;
                }
                if (matched)
                        finish(c, result, matched->text, matched->text_len);
                else
                        finish_static(c, result, result == SPF_RESULT_NONE ? "no SPF record" : "no mechanism matched");
                return;
        }

        /* §5.2: the include's own result decides whether it matches */
        frame_done(top(c));
        c->depth--;
        Frame *parent = top(c);
        const Term *inc = &parent->terms[parent->pos];
        switch (result) {
        case SPF_RESULT_PASS:
                frame_result(c, inc->qualifier, inc);
                return;
        case SPF_RESULT_NONE:
                finish_static(c, SPF_RESULT_PERMERROR, "included domain has no SPF record");
                return;
        default:
                parent->pos++;
                c->step = STEP_TERMS;
                return;
        }
}

static void term_no_match(SpfCheck *c) {
        top(c)->pos++;
        c->step = STEP_TERMS;
}

static void term_match(SpfCheck *c) {
        const Term *t = &top(c)->terms[top(c)->pos];
        frame_result(c, t->qualifier, t);
}

static bool ip_matches(const SpfCheck *c, const Term *t) {
        if (t->kind == MECH_IP4)
                return c->family == AF_INET && addr_match(c->ip, t->addr, t->cidr4);
        return c->family == AF_INET6 && addr_match(c->ip, t->addr, t->cidr6);
}

static bool answer_matches(const SpfCheck *c, const DnsResult *r, unsigned cidr4, unsigned cidr6) {
        for (size_t i = 0; i < r->n_records; i++) {
                const DnsRecord *rec = &r->records[i];
                if (c->family == AF_INET && rec->type == DNS_TYPE_A &&
                    addr_match(c->ip, (const uint8_t *) &rec->a, cidr4))
                        return true;
                if (c->family == AF_INET6 && rec->type == DNS_TYPE_AAAA &&
                    addr_match(c->ip, (const uint8_t *) &rec->aaaa, cidr6))
                        return true;
        }
        return false;
}

static void eval_term(SpfCheck *c) {
        Frame *f = top(c);
        char name[SPF_NAME_MAX + 1];
        int r;

        if (f->pos >= f->n_terms) {
                if (f->redirect)
                        c->step = STEP_REDIRECT;
                else
                        frame_result(c, SPF_RESULT_NEUTRAL, NULL);
                return;
        }
        const Term *t = &f->terms[f->pos];
        switch (t->kind) {
        case MECH_ALL:
                term_match(c);
                return;
        case MECH_IP4:
        case MECH_IP6:
                if (ip_matches(c, t))
                        term_match(c);
                else
                        term_no_match(c);
                return;
        default:
                break;
        }

        r = target_expand(c, t->spec, t->spec_len, f->domain, name);
        if (r == -EAGAIN) {
                start_p(c, STEP_TERMS);
                return;
        }
        if (r < 0) {
                finish_static(c, SPF_RESULT_PERMERROR, "macro expansion failed");
                return;
        }
        if (count_lookup(c) < 0)
                return;
        /* A name DNS cannot carry does not exist (the suite's preferred
         * reading of the undefined case). */
        bool valid = name_is_valid(name, false);

        switch (t->kind) {
        case MECH_INCLUDE:
                if (!valid) {
                        finish_static(c, SPF_RESULT_PERMERROR, "included domain has no SPF record");
                        return;
                }
                if (c->depth >= SPF_MAX_DEPTH) {
                        finish_static(c, SPF_RESULT_PERMERROR, "includes nested too deep");
                        return;
                }
                c->depth++;
                *top(c) = (Frame) {};
                name_copy(top(c)->domain, name);
                c->step = STEP_RECORD;
                return;
        case MECH_A:
        case MECH_MX:
        case MECH_EXISTS:
                if (!valid) {
                        term_no_match(c);
                        return;
                }
                ask(c, name,
                    t->kind == MECH_MX ? DNS_TYPE_MX : t->kind == MECH_EXISTS ? DNS_TYPE_A : addr_type(c),
                    t->kind == MECH_MX ? STEP_MX_WAIT : t->kind == MECH_EXISTS ? STEP_EXISTS_WAIT : STEP_A_WAIT);
                return;
        case MECH_PTR:
                if (!valid) {
                        term_no_match(c);
                        return;
                }
                name_copy(c->target, name);
                c->ptr_for_p = false;
                names_clear(c);
                ask(c, c->ptr_qname, DNS_TYPE_PTR, STEP_PTR_WAIT);
                return;
        default:
                return;
        }
}

static void on_record(SpfCheck *c, const DnsResult *r) {
        Frame *f = top(c);
        const char *why = NULL;

        if (dns_status_is_temporary(r->status)) {
                finish_static(c, SPF_RESULT_TEMPERROR, "DNS temporary failure fetching the SPF record");
                return;
        }
        const DnsRecord *found = NULL;
        size_t n_found = 0;
        if (r->status == DNS_STATUS_OK)
                for (size_t i = 0; i < r->n_records; i++) {
                        const DnsRecord *rec = &r->records[i];
                        if (rec->type != DNS_TYPE_TXT || rec->txt.len < 6 ||
                            strncasecmp(rec->txt.text, "v=spf1", 6) != 0 ||
                            (rec->txt.len > 6 && rec->txt.text[6] != ' '))
                                continue;
                        found = rec;
                        n_found++;
                }
        if (n_found == 0) {
                if (c->depth > 1)
                        finish_static(c, SPF_RESULT_PERMERROR, "included domain has no SPF record");
                else if (f->via_redirect)
                        finish_static(c, SPF_RESULT_PERMERROR, "redirect domain has no SPF record");
                else
                        finish_static(c, SPF_RESULT_NONE, "no SPF record");
                return;
        }
        if (n_found > 1) {
                finish_static(c, SPF_RESULT_PERMERROR, "more than one SPF record");
                return;
        }
        if (found->txt.len > SPF_RECORD_MAX || memchr(found->txt.text, 0, found->txt.len)) {
                finish_static(c, SPF_RESULT_PERMERROR, found->txt.len > SPF_RECORD_MAX ? "SPF record too long"
                                                                                         : "invalid character in SPF record");
                return;
        }
        f->record = strndup(found->txt.text, found->txt.len);
        if (!f->record) {
                finish_static(c, SPF_RESULT_TEMPERROR, "out of memory");
                return;
        }
        int k = parse_record(f, &why);
        if (k < 0) {
                finish_static(c, k == -ENOMEM ? SPF_RESULT_TEMPERROR : SPF_RESULT_PERMERROR,
                              k == -ENOMEM ? "out of memory" : why);
                return;
        }
        f->pos = 0;
        c->step = STEP_TERMS;
}

static void do_redirect(SpfCheck *c) {
        Frame *f = top(c);
        char name[SPF_NAME_MAX + 1];

        int r = target_expand(c, f->redirect, f->redirect_len, f->domain, name);
        if (r == -EAGAIN) {
                start_p(c, STEP_REDIRECT);
                return;
        }
        if (r < 0) {
                finish_static(c, SPF_RESULT_PERMERROR, "macro expansion failed");
                return;
        }
        if (count_lookup(c) < 0)
                return;
        if (!name_is_valid(name, false)) {
                finish_static(c, SPF_RESULT_PERMERROR, "redirect domain has no SPF record");
                return;
        }
        frame_done(f);
        name_copy(f->domain, name);
        f->via_redirect = true;
        c->step = STEP_RECORD;
}

static void finish_fail(SpfCheck *c) {
        const char *reason = c->reason;
        c->reason = NULL;
        if (reason)
                finish(c, SPF_RESULT_FAIL, reason, strlen(reason));
        else
                finish_static(c, SPF_RESULT_FAIL, "no mechanism matched");
        free((char *) reason);
}

static void do_exp(SpfCheck *c) {
        Frame *f = top(c);
        char name[SPF_NAME_MAX + 1];

        int r = target_expand(c, f->exp, f->exp_len, f->domain, name);
        if (r == -EAGAIN) {
                start_p(c, STEP_EXP);
                return;
        }
        if (r < 0 || !name_is_valid(name, false)) {
                finish_fail(c);
                return;
        }
        ask(c, name, DNS_TYPE_TXT, STEP_EXP_WAIT);
}

static void do_exp_text(SpfCheck *c) {
        _cleanup_free_ char *p = malloc(SPF_EXPAND_MAX + 1);
        if (!p) {
                finish_fail(c);
                return;
        }
        Buf b = { .p = p, .max = SPF_EXPAND_MAX };
        int r = macro_expand(c, c->exp_text, strlen(c->exp_text), MACRO_EXPLAIN, top(c)->domain, &b, NULL);
        if (r == -EAGAIN) {
                start_p(c, STEP_EXP_TEXT);
                return;
        }
        /* an explanation that does not expand is dropped, the fail stays
         * (§6.2); one too long is cut */
        if (r == 0 || r == -E2BIG) {
                p[b.len] = 0;
                free(c->explanation);
                c->explanation = TAKE_PTR(p);
        }
        finish_fail(c);
}

static void ptr_next(SpfCheck *c);

static void ptr_done(SpfCheck *c, const char *validated) {
        if (c->ptr_for_p) {
                name_copy(c->p_name, validated ?: "unknown");
                c->p_done = true;
                names_clear(c);
                c->step = c->p_return;
                return;
        }
        names_clear(c);
        if (validated)
                term_match(c);
        else
                term_no_match(c);
}

static void on_ptr(SpfCheck *c, const DnsResult *r) {
        /* §5.5: a DNS error on the PTR lookup is no match, not temperror */
        if (r->status != DNS_STATUS_OK || r->n_records == 0) {
                if (!c->ptr_for_p && is_void(r) && count_void(c) < 0)
                        return;
                ptr_done(c, NULL);
                return;
        }
        /* the first 10 names only; for the mechanism only those within the
         * target can matter, for %{p} <domain> first, then names below it */
        const char *domain = top(c)->domain;
        for (int pass = 0; pass < 3; pass++)
                for (size_t i = 0; i < MIN(r->n_records, (size_t) SPF_MAX_NAMES); i++) {
                        char n[SPF_NAME_MAX + 1];
                        if (r->records[i].type != DNS_TYPE_PTR || !r->records[i].ptr.name ||
                            !name_unescape(r->records[i].ptr.name, n) || !name_is_valid(n, false))
                                continue;
                        bool take;
                        if (!c->ptr_for_p)
                                take = pass == 0 && name_within(n, c->target);
                        else if (pass == 0)
                                take = names_equal(n, domain);
                        else if (pass == 1)
                                take = !names_equal(n, domain) && name_within(n, domain);
                        else
                                take = !name_within(n, domain);
                        if (!take || c->n_names >= SPF_MAX_NAMES)
                                continue;
                        c->names[c->n_names] = strdup(n);
                        if (!c->names[c->n_names]) {
                                finish_static(c, SPF_RESULT_TEMPERROR, "out of memory");
                                return;
                        }
                        c->n_names++;
                }
        c->name_i = 0;
        ptr_next(c);
}

static void ptr_next(SpfCheck *c) {
        if (c->name_i >= c->n_names) {
                ptr_done(c, NULL);
                return;
        }
        ask(c, c->names[c->name_i], addr_type(c), STEP_PTR_ADDR_WAIT);
}

static void on_ptr_addr(SpfCheck *c, const DnsResult *r) {
        /* §5.5: an error on one name skips it */
        if (r->status == DNS_STATUS_OK && answer_matches(c, r, 32, 128)) {
                char name[SPF_NAME_MAX + 1];
                name_copy(name, c->names[c->name_i]);
                ptr_done(c, name);
                return;
        }
        if (!c->ptr_for_p && is_void(r) && count_void(c) < 0)
                return;
        c->name_i++;
        ptr_next(c);
}

static void mx_next(SpfCheck *c) {
        if (c->name_i >= c->n_names) {
                names_clear(c);
                term_no_match(c);
                return;
        }
        ask(c, c->names[c->name_i], addr_type(c), STEP_MX_ADDR_WAIT);
}

static void on_mx(SpfCheck *c, const DnsResult *r) {
        if (dns_status_is_temporary(r->status)) {
                finish_static(c, SPF_RESULT_TEMPERROR, "DNS temporary failure");
                return;
        }
        if (is_void(r)) {
                if (count_void(c) < 0)
                        return;
                term_no_match(c);
                return;
        }
        if (r->n_records > SPF_MAX_NAMES) {
                finish_static(c, SPF_RESULT_PERMERROR, "more than 10 MX records");
                return;
        }
        names_clear(c);
        for (size_t i = 0; i < r->n_records; i++) {
                char x[SPF_NAME_MAX + 1];
                /* a null MX (RFC 7505) has no address to match */
                if (r->records[i].type != DNS_TYPE_MX || !r->records[i].mx.exchange ||
                    !name_unescape(r->records[i].mx.exchange, x) || !name_is_valid(x, false))
                        continue;
                c->names[c->n_names] = strdup(x);
                if (!c->names[c->n_names]) {
                        finish_static(c, SPF_RESULT_TEMPERROR, "out of memory");
                        return;
                }
                c->n_names++;
        }
        mx_next(c);
}

static void on_mx_addr(SpfCheck *c, const DnsResult *r) {
        const Term *t = &top(c)->terms[top(c)->pos];
        if (dns_status_is_temporary(r->status)) {
                finish_static(c, SPF_RESULT_TEMPERROR, "DNS temporary failure");
                return;
        }
        if (is_void(r)) {
                if (count_void(c) < 0)
                        return;
        } else if (answer_matches(c, r, t->cidr4, t->cidr6)) {
                names_clear(c);
                term_match(c);
                return;
        }
        c->name_i++;
        mx_next(c);
}

static void on_addr(SpfCheck *c, const DnsResult *r, bool exists) {
        const Term *t = &top(c)->terms[top(c)->pos];
        if (dns_status_is_temporary(r->status)) {
                finish_static(c, SPF_RESULT_TEMPERROR, "DNS temporary failure");
                return;
        }
        if (is_void(r)) {
                if (count_void(c) < 0)
                        return;
                term_no_match(c);
                return;
        }
        if (exists || answer_matches(c, r, t->cidr4, t->cidr6))
                term_match(c);
        else
                term_no_match(c);
}

static void on_exp(SpfCheck *c, const DnsResult *r) {
        /* §6.2: anything but exactly one TXT record: no explanation */
        if (r->status != DNS_STATUS_OK || r->n_records != 1 || r->records[0].type != DNS_TYPE_TXT ||
            r->records[0].txt.len > SPF_RECORD_MAX || memchr(r->records[0].txt.text, 0, r->records[0].txt.len)) {
                finish_fail(c);
                return;
        }
        free(c->exp_text);
        c->exp_text = strndup(r->records[0].txt.text, r->records[0].txt.len);
        if (!c->exp_text) {
                finish_fail(c);
                return;
        }
        c->step = STEP_EXP_TEXT;
}

static void run(SpfCheck *c) {
        while (!c->pending && c->step != STEP_DONE) {
                switch (c->step) {
                case STEP_RECORD:
                        ask(c, top(c)->domain, DNS_TYPE_TXT, STEP_RECORD_WAIT);
                        break;
                case STEP_TERMS:
                        eval_term(c);
                        break;
                case STEP_REDIRECT:
                        do_redirect(c);
                        break;
                case STEP_EXP:
                        do_exp(c);
                        break;
                case STEP_EXP_TEXT:
                        do_exp_text(c);
                        break;
                default:
                        /* a wait step without a query: cannot happen */
                        finish_static(c, SPF_RESULT_TEMPERROR, "internal error");
                        break;
                }
        }
}

/* ------------------------------------------------------------------ API */

static int set_ip(SpfCheck *c, const char *text) {
        if (!text)
                return -EINVAL;
        if (inet_pton(AF_INET, text, c->ip) == 1)
                c->family = AF_INET;
        else if (inet_pton(AF_INET6, text, c->ip) == 1) {
                static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
                c->family = AF_INET6;
                /* an IPv4-mapped address is the IPv4 client it stands for */
                if (memcmp(c->ip, mapped, 12) == 0) {
                        memmove(c->ip, c->ip + 12, 4);
                        c->family = AF_INET;
                }
        } else
                return -EINVAL;

        if (!inet_ntop(c->family, c->ip, c->ip_text, sizeof c->ip_text))
                return -EINVAL;
        if (c->family == AF_INET) {
                snprintf(c->ip_dots, sizeof c->ip_dots, "%u.%u.%u.%u", c->ip[0], c->ip[1], c->ip[2], c->ip[3]);
                snprintf(c->ptr_qname, sizeof c->ptr_qname, "%u.%u.%u.%u.in-addr.arpa", c->ip[3], c->ip[2],
                         c->ip[1], c->ip[0]);
        } else {
                static const char hex[] = "0123456789abcdef";
                char *d = c->ip_dots, *q = c->ptr_qname;
                for (int i = 0; i < 32; i++) {
                        uint8_t nib = (uint8_t) ((c->ip[i / 2] >> (i % 2 ? 0 : 4)) & 0xf);
                        uint8_t rnib = (uint8_t) ((c->ip[(31 - i) / 2] >> ((31 - i) % 2 ? 0 : 4)) & 0xf);
                        *d++ = hex[nib];
                        *d++ = i < 31 ? '.' : 0;
                        *q++ = hex[rnib];
                        *q++ = '.';
                }
                strcpy(q, "ip6.arpa");
        }
        return 0;
}

int spf_check_new(const SpfParams *params, SpfCheck **ret) {
        if (!params || !ret)
                return -EINVAL;

        SpfCheck *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        int r = set_ip(c, params->client_ip);
        if (r < 0) {
                free(c);
                return r;
        }
        c->max_lookups = params->max_lookups ?: 10;
        c->max_void = params->max_void_lookups ?: 2;
        c->now = params->now ?: (uint64_t) time(NULL);
        c->res.result = SPF_RESULT_NONE;

        const char *mf = params->mail_from && params->mail_from[0] ? params->mail_from : NULL;
        c->identity = mf ? "mailfrom" : "helo";
        c->res.identity = c->identity;
        if (params->helo && !(c->helo = strdup(params->helo)))
                goto oom;
        if (params->receiver && !(c->receiver = strdup(params->receiver)))
                goto oom;

        const char *id = mf ?: params->helo;
        if (!id || strlen(id) > SPF_SENDER_MAX) {
                c->sender = strdup("");
                c->local = strdup("postmaster");
                c->sender_domain = strdup("");
                if (!c->sender || !c->local || !c->sender_domain)
                        goto oom;
                c->res.sender = c->sender;
                c->res.domain = c->sender_domain;
                finish_static(c, SPF_RESULT_NONE, "no identity to check");
                *ret = c;
                return 0;
        }
        /* §4.3: split at the last "@"; no local-part: postmaster */
        const char *at = mf ? strrchr(mf, '@') : NULL;
        const char *dom = at ? at + 1 : id;
        if (at && at > mf)
                c->local = strndup(mf, (size_t) (at - mf));
        else
                c->local = strdup("postmaster");
        c->sender_domain = strdup(dom);
        if (!c->local || !c->sender_domain)
                goto oom;
        size_t sl = strlen(c->local) + strlen(c->sender_domain) + 2;
        c->sender = malloc(sl);
        if (!c->sender)
                goto oom;
        snprintf(c->sender, sl, "%s@%s", c->local, c->sender_domain);
        c->res.sender = c->sender;
        c->res.domain = c->sender_domain;

        c->depth = 1;
        if (!name_is_valid(dom, true)) {
                /* §4.3: malformed or single-label: none */
                finish_static(c, SPF_RESULT_NONE, "malformed domain");
                *ret = c;
                return 0;
        }
        name_copy(c->frames[0].domain, dom);
        c->step = STEP_RECORD;
        run(c);
        *ret = c;
        return 0;
oom:
        spf_check_free(c);
        return -ENOMEM;
}

SpfCheck *spf_check_free(SpfCheck *c) {
        if (!c)
                return NULL;
        for (unsigned i = 0; i < SPF_MAX_DEPTH; i++)
                frame_done(&c->frames[i]);
        names_clear(c);
        free(c->helo);
        free(c->sender);
        free(c->local);
        free(c->sender_domain);
        free(c->receiver);
        free(c->exp_text);
        free(c->reason);
        free(c->explanation);
        free(c);
        return NULL;
}

int spf_check_next_query(SpfCheck *c, const char **ret_name, uint16_t *ret_type) {
        if (!c)
                return -EINVAL;
        if (!c->pending || c->handed || c->step == STEP_DONE)
                return 0;
        c->handed = true;
        if (ret_name)
                *ret_name = c->qname;
        if (ret_type)
                *ret_type = c->qtype;
        return 1;
}

int spf_check_answer(SpfCheck *c, const DnsResult *result) {
        if (!c || !result)
                return -EINVAL;
        if (!c->pending || c->step == STEP_DONE || !result->qname || result->qtype != c->qtype ||
            !names_equal(result->qname, c->qname))
                return -ENOENT;
        c->pending = c->handed = false;

        switch (c->step) {
        case STEP_RECORD_WAIT:
                on_record(c, result);
                break;
        case STEP_A_WAIT:
                on_addr(c, result, false);
                break;
        case STEP_EXISTS_WAIT:
                on_addr(c, result, true);
                break;
        case STEP_MX_WAIT:
                on_mx(c, result);
                break;
        case STEP_MX_ADDR_WAIT:
                on_mx_addr(c, result);
                break;
        case STEP_PTR_WAIT:
                on_ptr(c, result);
                break;
        case STEP_PTR_ADDR_WAIT:
                on_ptr_addr(c, result);
                break;
        case STEP_EXP_WAIT:
                on_exp(c, result);
                break;
        default:
                return -ENOENT;
        }
        run(c);
        return 0;
}

bool spf_check_is_done(const SpfCheck *c) {
        return !c || c->step == STEP_DONE;
}

int spf_check_result(SpfCheck *c, const SpfResult **ret) {
        if (!c || !ret)
                return -EINVAL;
        if (c->step != STEP_DONE)
                return -EBUSY;
        *ret = &c->res;
        return 0;
}
