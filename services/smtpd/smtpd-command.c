/* SPDX-License-Identifier: MIT */
/* SMTP command line parser; the rules are listed in smtpd-command.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "macro.h"
#include "smtpd-command.h"
#include "utf8.h"

static int fail(SmtpReplyError *reterr, unsigned code, const char *enhanced, const char *text) {
        *reterr = (SmtpReplyError) { .code = code, .enhanced = enhanced, .text = text };
        return -EINVAL;
}

static const char *const verb_table[_SMTP_VERB_MAX] = {
        [SMTP_VERB_UNKNOWN] = NULL,
        [SMTP_VERB_HELO] = "HELO",
        [SMTP_VERB_EHLO] = "EHLO",
        [SMTP_VERB_MAIL] = "MAIL",
        [SMTP_VERB_RCPT] = "RCPT",
        [SMTP_VERB_DATA] = "DATA",
        [SMTP_VERB_BDAT] = "BDAT",
        [SMTP_VERB_RSET] = "RSET",
        [SMTP_VERB_NOOP] = "NOOP",
        [SMTP_VERB_QUIT] = "QUIT",
        [SMTP_VERB_HELP] = "HELP",
        [SMTP_VERB_VRFY] = "VRFY",
        [SMTP_VERB_EXPN] = "EXPN",
        [SMTP_VERB_STARTTLS] = "STARTTLS",
        [SMTP_VERB_AUTH] = "AUTH",
};

const char *smtp_verb_to_string(SmtpVerb v) {
        if ((unsigned) v >= _SMTP_VERB_MAX || !verb_table[v])
                return "UNKNOWN";
        return verb_table[v];
}

static char ascii_upper(char c) {
        return c >= 'a' && c <= 'z' ? (char) (c - 'a' + 'A') : c;
}

static bool is_alpha(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

static bool is_high(char c) {
        return (unsigned char) c >= 0x80;
}

/* s[0..n) equals the upper-case ASCII word w, ignoring case. */
static bool word_eq(const char *s, size_t n, const char *w) {
        size_t k = strlen(w);
        if (n != k)
                return false;
        for (size_t i = 0; i < n; i++)
                if (ascii_upper(s[i]) != w[i])
                        return false;
        return true;
}

static bool has_prefix_nocase(const char *s, size_t n, const char *w) {
        size_t k = strlen(w);
        return n >= k && word_eq(s, k, w);
}

static bool is_atext(char c) {
        return is_alpha(c) || is_digit(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* Length of a well-formed UTF-8 sequence of at least 2 octets at s, else 0. */
static size_t utf8_multi(const char *s, size_t n) {
        if (n == 0 || !is_high(s[0]))
                return 0;
        return utf8_sequence_len(s, n);
}

/* RFC 5321 Domain (with RFC 6531 U-labels: any well-formed non-ASCII
 * sequence counts as a letter). */
static bool domain_valid(const char *s, size_t n, bool *utf8) {
        if (n == 0 || n > SMTP_DOMAIN_MAX)
                return false;
        size_t label = 0;
        char prev = '.';
        for (size_t i = 0; i < n;) {
                char c = s[i];
                if (c == '.') {
                        if (label == 0 || prev == '-')
                                return false;
                        label = 0;
                        prev = '.';
                        i++;
                        continue;
                }
                size_t k = 1;
                if (is_high(c)) {
                        k = utf8_multi(s + i, n - i);
                        if (k == 0)
                                return false;
                        *utf8 = true;
                } else if (c == '-') {
                        if (label == 0)
                                return false;
                } else if (!is_alpha(c) && !is_digit(c))
                        return false;
                label += k;
                if (label > SMTP_LABEL_MAX)
                        return false;
                prev = c;
                i += k;
        }
        return label > 0 && prev != '-';
}

static bool ipv4_valid(const char *s, size_t n) {
        size_t i = 0;
        for (int part = 0; part < 4; part++) {
                if (part > 0) {
                        if (i >= n || s[i] != '.')
                                return false;
                        i++;
                }
                unsigned v = 0, digits = 0;
                while (i < n && is_digit(s[i]) && digits < 4) {
                        v = v * 10 + (unsigned) (s[i] - '0');
                        digits++;
                        i++;
                }
                if (digits == 0 || digits > 3 || v > 255)
                        return false;
        }
        return i == n;
}

/* "[" IPv4 "]" or "[IPv6:" IPv6 "]". General (unregistered) tags are refused. */
static bool address_literal_valid(const char *s, size_t n) {
        if (n < 3 || s[0] != '[' || s[n - 1] != ']')
                return false;
        s++;
        n -= 2;
        if (has_prefix_nocase(s, n, "IPV6:")) {
                char buf[64];
                s += 5;
                n -= 5;
                if (n == 0 || n >= sizeof buf)
                        return false;
                memcpy(buf, s, n);
                buf[n] = 0;
                struct in6_addr a;
                return inet_pton(AF_INET6, buf, &a) == 1;
        }
        return ipv4_valid(s, n);
}

static bool domain_or_literal_valid(const char *s, size_t n, bool *utf8) {
        if (n > 0 && s[0] == '[')
                return n <= SMTP_DOMAIN_MAX && address_literal_valid(s, n);
        return domain_valid(s, n, utf8);
}

/* Local-part at s[0..n), returns octets consumed or 0 on a syntax error. */
static size_t local_part_scan(const char *s, size_t n, bool *utf8) {
        size_t i = 0;
        if (n > 0 && s[0] == '"') {
                for (i = 1; i < n; i++) {
                        char c = s[i];
                        if (c == '"')
                                return i + 1;
                        if (c == '\\') {
                                if (i + 1 >= n || s[i + 1] < 32 || s[i + 1] > 126)
                                        return 0;
                                i++;
                        } else if (is_high(c)) {
                                size_t k = utf8_multi(s + i, n - i);
                                if (k == 0)
                                        return 0;
                                *utf8 = true;
                                i += k - 1;
                        } else if (c < 32 || c > 126)
                                return 0;
                }
                return 0; /* unterminated */
        }
        bool atom = false;
        while (i < n) {
                char c = s[i];
                if (c == '.') {
                        if (!atom)
                                return 0;
                        atom = false;
                        i++;
                } else if (is_high(c)) {
                        size_t k = utf8_multi(s + i, n - i);
                        if (k == 0)
                                return 0;
                        *utf8 = true;
                        atom = true;
                        i += k;
                } else if (is_atext(c)) {
                        atom = true;
                        i++;
                } else
                        break;
        }
        return atom ? i : 0;
}

typedef enum PathResult {
        PATH_OK,
        PATH_SYNTAX,
        PATH_TOO_LONG,
        PATH_NULL_NOT_ALLOWED,
} PathResult;

/* Parses a Path starting at s[0] == '<'. On success sets *consumed to the
 * octets up to and including '>'. */
static PathResult path_parse(const char *s, size_t n, bool is_mail, SmtpPath *path, size_t *consumed) {
        const char *gt = memchr(s, '>', n);
        if (n == 0 || s[0] != '<' || !gt)
                return PATH_SYNTAX;
        /* '>' cannot occur inside a valid path except in a quoted local part */
        size_t i = 1;
        *path = (SmtpPath) {};

        if (i < n && s[i] == '>') {
                if (!is_mail)
                        return PATH_NULL_NOT_ALLOWED;
                path->null = true;
                *consumed = 2;
                return PATH_OK;
        }

        /* Source route: @a,@b: — syntax-checked, then dropped. */
        if (s[i] == '@') {
                for (;;) {
                        if (i >= n || s[i] != '@')
                                return PATH_SYNTAX;
                        i++;
                        size_t start = i;
                        while (i < n && s[i] != ',' && s[i] != ':' && s[i] != '>')
                                i++;
                        bool u = false;
                        if (i >= n || !domain_or_literal_valid(s + start, i - start, &u))
                                return PATH_SYNTAX;
                        if (u)
                                path->utf8 = true;
                        if (s[i] == ':') {
                                i++;
                                break;
                        }
                        if (s[i] != ',')
                                return PATH_SYNTAX;
                        i++;
                }
        }

        size_t lstart = i;
        size_t l = local_part_scan(s + i, n - i, &path->utf8);
        if (l == 0)
                return PATH_SYNTAX;
        i += l;
        if (l > SMTP_LOCAL_PART_MAX)
                return PATH_TOO_LONG;
        memcpy(path->local, s + lstart, l);
        path->local[l] = 0;

        if (i < n && s[i] == '>' && !is_mail && lstart == 1 && word_eq(s + lstart, l, "POSTMASTER")) {
                path->postmaster = true;
                memcpy(path->address, path->local, l + 1);
                *consumed = i + 1;
                return PATH_OK;
        }

        if (i >= n || s[i] != '@')
                return PATH_SYNTAX;
        i++;
        size_t dstart = i;
        if (i < n && s[i] == '[') {
                const char *rb = memchr(s + i, ']', n - i);
                if (!rb)
                        return PATH_SYNTAX;
                i = (size_t) (rb - s) + 1;
        } else
                while (i < n && s[i] != '>')
                        i++;
        if (i >= n || s[i] != '>')
                return PATH_SYNTAX;
        size_t dl = i - dstart;
        if (dl > SMTP_DOMAIN_MAX)
                return PATH_TOO_LONG;
        if (!domain_or_literal_valid(s + dstart, dl, &path->utf8))
                return PATH_SYNTAX;
        i++; /* '>' */
        if (i > SMTP_PATH_MAX)
                return PATH_TOO_LONG;

        memcpy(path->domain, s + dstart, dl);
        path->domain[dl] = 0;
        memcpy(path->address, path->local, l);
        path->address[l] = '@';
        memcpy(path->address + l + 1, path->domain, dl + 1);
        *consumed = i;
        return PATH_OK;
}

static bool xtext_char(char c) {
        return c >= 33 && c <= 126 && c != '+' && c != '=';
}

static int hexval(char c) {
        if (is_digit(c))
                return c - '0';
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int smtp_xtext_decode(const char *in, size_t n, char *out, size_t outsize) {
        size_t o = 0;
        if (n == 0 || outsize == 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                char c = in[i];
                if (c == '+') {
                        if (i + 2 >= n)
                                return -EINVAL;
                        int h = hexval(in[i + 1]), lo = hexval(in[i + 2]);
                        if (h < 0 || lo < 0)
                                return -EINVAL;
                        c = (char) (h * 16 + lo);
                        i += 2;
                } else if (!xtext_char(c))
                        return -EINVAL;
                if (o + 1 >= outsize)
                        return -E2BIG;
                out[o++] = c;
        }
        out[o] = 0;
        return (int) o;
}

/* RFC 3461: the decoded ENVID/ORCPT must be printable US-ASCII (graphic
 * and white space). */
static bool printable_ascii(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 32 && s[i] <= 126) || s[i] == '\t'))
                        return false;
        return true;
}

enum {
        PARAM_SIZE = 1u << 0,
        PARAM_BODY = 1u << 1,
        PARAM_SMTPUTF8 = 1u << 2,
        PARAM_RET = 1u << 3,
        PARAM_ENVID = 1u << 4,
        PARAM_AUTH = 1u << 5,
        PARAM_NOTIFY = 1u << 6,
        PARAM_ORCPT = 1u << 7,
};

#define E_PARAM_SYNTAX 501, "5.5.4"
#define E_PARAM_UNSUPPORTED 555, "5.5.4"

static int param_parse(const char *kw, size_t kwn, const char *val, size_t vn, bool has_val, bool is_mail,
                       unsigned flags, unsigned *seen, SmtpCommand *c, SmtpReplyError *reterr) {
        unsigned which;
        bool want_val = true;

        if (is_mail && word_eq(kw, kwn, "SIZE") && (flags & SMTP_PARSE_SIZE))
                which = PARAM_SIZE;
        else if (is_mail && word_eq(kw, kwn, "BODY"))
                which = PARAM_BODY;
        else if (is_mail && word_eq(kw, kwn, "SMTPUTF8") && (flags & SMTP_PARSE_SMTPUTF8)) {
                which = PARAM_SMTPUTF8;
                want_val = false;
        } else if (is_mail && word_eq(kw, kwn, "RET") && (flags & SMTP_PARSE_DSN))
                which = PARAM_RET;
        else if (is_mail && word_eq(kw, kwn, "ENVID") && (flags & SMTP_PARSE_DSN))
                which = PARAM_ENVID;
        else if (is_mail && word_eq(kw, kwn, "AUTH"))
                which = PARAM_AUTH;
        else if (!is_mail && word_eq(kw, kwn, "NOTIFY") && (flags & SMTP_PARSE_DSN))
                which = PARAM_NOTIFY;
        else if (!is_mail && word_eq(kw, kwn, "ORCPT") && (flags & SMTP_PARSE_DSN))
                which = PARAM_ORCPT;
        else
                return fail(reterr, E_PARAM_UNSUPPORTED, "Unsupported parameter");

        if (*seen & which)
                return fail(reterr, E_PARAM_SYNTAX, "Duplicate parameter");
        *seen |= which;
        if (want_val != has_val)
                return fail(reterr, E_PARAM_SYNTAX, want_val ? "Parameter needs a value" : "Parameter takes no value");

        switch (which) {
        case PARAM_SIZE: {
                if (vn == 0 || vn > 20)
                        return fail(reterr, E_PARAM_SYNTAX, "Bad SIZE value");
                uint64_t v = 0;
                for (size_t i = 0; i < vn; i++) {
                        if (!is_digit(val[i]))
                                return fail(reterr, E_PARAM_SYNTAX, "Bad SIZE value");
                        unsigned d = (unsigned) (val[i] - '0');
                        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
                }
                c->has_size = true;
                c->size = v;
                return 0;
        }
        case PARAM_BODY:
                if (word_eq(val, vn, "7BIT"))
                        c->body = SMTP_BODY_7BIT;
                else if (word_eq(val, vn, "8BITMIME")) {
                        if (!(flags & SMTP_PARSE_8BITMIME))
                                return fail(reterr, E_PARAM_UNSUPPORTED, "8BITMIME not supported");
                        c->body = SMTP_BODY_8BITMIME;
                } else if (word_eq(val, vn, "BINARYMIME")) {
                        if (!(flags & SMTP_PARSE_BINARYMIME))
                                return fail(reterr, E_PARAM_UNSUPPORTED, "BINARYMIME not supported");
                        c->body = SMTP_BODY_BINARYMIME;
                } else
                        return fail(reterr, E_PARAM_SYNTAX, "Bad BODY value");
                return 0;
        case PARAM_SMTPUTF8:
                c->smtputf8 = true;
                return 0;
        case PARAM_RET:
                if (word_eq(val, vn, "FULL"))
                        c->ret = SMTP_RET_FULL;
                else if (word_eq(val, vn, "HDRS"))
                        c->ret = SMTP_RET_HDRS;
                else
                        return fail(reterr, E_PARAM_SYNTAX, "Bad RET value");
                return 0;
        case PARAM_ENVID: {
                int r = smtp_xtext_decode(val, vn, c->envid, sizeof c->envid);
                if (r < 0 || !printable_ascii(c->envid, (size_t) r))
                        return fail(reterr, E_PARAM_SYNTAX, "Bad ENVID value");
                c->has_envid = true;
                return 0;
        }
        case PARAM_AUTH: {
                char scratch[SMTP_COMMAND_LINE_MAX + 1];
                if (smtp_xtext_decode(val, vn, scratch, sizeof scratch) < 0)
                        return fail(reterr, E_PARAM_SYNTAX, "Bad AUTH value");
                return 0; /* accepted and ignored (RFC 4954 5) */
        }
        case PARAM_NOTIFY: {
                unsigned m = 0;
                for (size_t i = 0; i <= vn;) {
                        const char *comma = memchr(val + i, ',', vn - i);
                        size_t e = comma ? (size_t) (comma - val) : vn;
                        unsigned bit;
                        if (word_eq(val + i, e - i, "NEVER"))
                                bit = SMTP_NOTIFY_NEVER;
                        else if (word_eq(val + i, e - i, "SUCCESS"))
                                bit = SMTP_NOTIFY_SUCCESS;
                        else if (word_eq(val + i, e - i, "FAILURE"))
                                bit = SMTP_NOTIFY_FAILURE;
                        else if (word_eq(val + i, e - i, "DELAY"))
                                bit = SMTP_NOTIFY_DELAY;
                        else
                                return fail(reterr, E_PARAM_SYNTAX, "Bad NOTIFY value");
                        if (m & bit)
                                return fail(reterr, E_PARAM_SYNTAX, "Bad NOTIFY value");
                        m |= bit;
                        if (!comma)
                                break;
                        i = e + 1;
                }
                if ((m & SMTP_NOTIFY_NEVER) && m != SMTP_NOTIFY_NEVER)
                        return fail(reterr, E_PARAM_SYNTAX, "NOTIFY=NEVER must be alone");
                c->notify = m;
                return 0;
        }
        case PARAM_ORCPT: {
                const char *semi = memchr(val, ';', vn);
                if (!semi || semi == val)
                        return fail(reterr, E_PARAM_SYNTAX, "Bad ORCPT value");
                size_t tn = (size_t) (semi - val);
                for (size_t i = 0; i < tn; i++)
                        if (!is_alpha(val[i]) && !is_digit(val[i]) && val[i] != '-')
                                return fail(reterr, E_PARAM_SYNTAX, "Bad ORCPT address type");
                int r = smtp_xtext_decode(semi + 1, vn - tn - 1, c->orcpt, sizeof c->orcpt);
                if (r < 0 || !printable_ascii(c->orcpt, (size_t) r))
                        return fail(reterr, E_PARAM_SYNTAX, "Bad ORCPT value");
                memcpy(c->orcpt_type, val, tn);
                c->orcpt_type[tn] = 0;
                c->has_orcpt = true;
                return 0;
        }
        }
        return fail(reterr, E_PARAM_UNSUPPORTED, "Unsupported parameter");
}

static int params_parse(const char *s, size_t n, bool is_mail, unsigned flags, SmtpCommand *c,
                        SmtpReplyError *reterr) {
        unsigned seen = 0;
        size_t i = 0;
        for (;;) {
                while (i < n && s[i] == ' ')
                        i++;
                if (i >= n)
                        return 0;
                size_t start = i;
                while (i < n && s[i] != ' ')
                        i++;
                const char *tok = s + start;
                size_t tn = i - start;
                const char *eq = memchr(tok, '=', tn);
                size_t kwn = eq ? (size_t) (eq - tok) : tn;
                if (kwn == 0 || (!is_alpha(tok[0]) && !is_digit(tok[0])))
                        return fail(reterr, E_PARAM_SYNTAX, "Bad parameter syntax");
                for (size_t k = 1; k < kwn; k++)
                        if (!is_alpha(tok[k]) && !is_digit(tok[k]) && tok[k] != '-')
                                return fail(reterr, E_PARAM_SYNTAX, "Bad parameter syntax");
                const char *val = eq ? eq + 1 : NULL;
                size_t vn = eq ? tn - kwn - 1 : 0;
                if (eq && vn == 0)
                        return fail(reterr, E_PARAM_SYNTAX, "Bad parameter syntax");
                for (size_t k = 0; k < vn;) {
                        if (is_high(val[k])) {
                                size_t q = utf8_multi(val + k, vn - k);
                                if (q == 0 || !(flags & SMTP_PARSE_SMTPUTF8))
                                        return fail(reterr, E_PARAM_SYNTAX, "Bad parameter value");
                                k += q;
                                continue;
                        }
                        if (val[k] < 33 || val[k] > 126 || val[k] == '=')
                                return fail(reterr, E_PARAM_SYNTAX, "Bad parameter value");
                        k++;
                }
                int r = param_parse(tok, kwn, val, vn, eq != NULL, is_mail, flags, &seen, c, reterr);
                if (r < 0)
                        return r;
        }
}

static int mail_rcpt_parse(const char *s, size_t n, bool is_mail, unsigned flags, SmtpCommand *c,
                           SmtpReplyError *reterr) {
        const char *kw = is_mail ? "FROM:" : "TO:";
        unsigned bad_code = 501;
        const char *bad_enh = is_mail ? "5.1.7" : "5.1.3";

        if (!has_prefix_nocase(s, n, kw))
                return fail(reterr, 501, "5.5.4", is_mail ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>");
        size_t i = strlen(kw);
        if (i < n && s[i] == ' ') /* tolerated, as Postfix does */
                i++;
        if (i >= n || s[i] != '<')
                return fail(reterr, 501, "5.5.4", is_mail ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>");

        size_t used = 0;
        switch (path_parse(s + i, n - i, is_mail, &c->path, &used)) {
        case PATH_OK:
                break;
        case PATH_TOO_LONG:
                return fail(reterr, bad_code, bad_enh, "Path too long");
        case PATH_NULL_NOT_ALLOWED:
                return fail(reterr, bad_code, bad_enh, "Null recipient not allowed");
        case PATH_SYNTAX:
        default:
                return fail(reterr, bad_code, bad_enh, is_mail ? "Bad sender address syntax" : "Bad recipient address syntax");
        }
        i += used;
        if (i < n && s[i] != ' ')
                return fail(reterr, bad_code, bad_enh, is_mail ? "Bad sender address syntax" : "Bad recipient address syntax");

        int r = params_parse(s + i, n - i, is_mail, flags, c, reterr);
        if (r < 0)
                return r;

        if (c->path.utf8) {
                bool ok = is_mail ? c->smtputf8 : (flags & SMTP_PARSE_UTF8_TRANSACTION);
                if (!ok)
                        return fail(reterr, 553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
        }
        return 0;
}

/* Free text argument: printable ASCII, SP, HTAB; UTF-8 only when offered. */
static int text_arg(const char *s, size_t n, unsigned flags, SmtpCommand *c, SmtpReplyError *reterr) {
        for (size_t i = 0; i < n;) {
                if (is_high(s[i])) {
                        size_t k = utf8_multi(s + i, n - i);
                        if (k == 0 || !(flags & SMTP_PARSE_SMTPUTF8))
                                return fail(reterr, 501, "5.5.4", "Non-ASCII argument not allowed");
                        i += k;
                        continue;
                }
                if ((s[i] < 32 && s[i] != '\t') || s[i] == 127)
                        return fail(reterr, 501, "5.5.4", "Control character in argument");
                i++;
        }
        memcpy(c->arg, s, n);
        c->arg[n] = 0;
        return 0;
}

static bool base64_valid(const char *s, size_t n) {
        if (n == 1 && s[0] == '=')
                return true;
        if (n == 0 || n % 4 != 0)
                return false;
        size_t pad = 0;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (c == '=') {
                        pad++;
                        continue;
                }
                if (pad > 0)
                        return false;
                if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '/')
                        return false;
        }
        return pad <= 2;
}

void smtp_command_done(SmtpCommand *c) {
        if (c)
                *c = (SmtpCommand) {};
}

int smtp_command_parse(const char *line, size_t len, unsigned flags, SmtpCommand *ret, SmtpReplyError *reterr) {
        if (len > SMTP_COMMAND_LINE_MAX || (flags & SMTP_PARSE_LINE_TOO_LONG))
                return fail(reterr, 500, "5.5.6", "Line too long");
        if (!line && len > 0)
                return fail(reterr, 500, "5.5.2", "Syntax error");
        for (size_t i = 0; i < len; i++)
                if (line[i] == '\0' || line[i] == '\r' || line[i] == '\n')
                        return fail(reterr, 500, "5.5.2", "NUL, CR or LF in command line");

        /* trailing SP are ignored */
        while (len > 0 && line[len - 1] == ' ')
                len--;

        size_t vn = 0;
        while (vn < len && line[vn] != ' ')
                vn++;
        SmtpVerb verb = SMTP_VERB_UNKNOWN;
        for (unsigned v = 1; v < _SMTP_VERB_MAX; v++)
                if (word_eq(line, vn, verb_table[v])) {
                        verb = (SmtpVerb) v;
                        break;
                }
        if (verb == SMTP_VERB_UNKNOWN)
                return fail(reterr, 500, "5.5.2", "Command unrecognized");

        size_t i = vn;
        while (i < len && line[i] == ' ')
                i++;
        const char *a = line + i;
        size_t an = len - i;

        SmtpCommand *c = ret;
        *c = (SmtpCommand) { .verb = verb };

        switch (verb) {
        case SMTP_VERB_HELO:
        case SMTP_VERB_EHLO: {
                const char *syn = verb == SMTP_VERB_HELO ? "Syntax: HELO hostname" : "Syntax: EHLO hostname";
                if (an == 0 || memchr(a, ' ', an) || memchr(a, '\t', an))
                        return fail(reterr, 501, "5.5.4", syn);
                bool u = false;
                if (!domain_or_literal_valid(a, an, &u))
                        return fail(reterr, 501, "5.5.4", "Invalid domain name");
                if (u && !(flags & SMTP_PARSE_SMTPUTF8))
                        return fail(reterr, 501, "5.5.4", "Non-ASCII domain not allowed");
                memcpy(c->arg, a, an);
                c->arg[an] = 0;
                return 0;
        }
        case SMTP_VERB_MAIL:
        case SMTP_VERB_RCPT:
                return mail_rcpt_parse(a, an, verb == SMTP_VERB_MAIL, flags, c, reterr);
        case SMTP_VERB_DATA:
        case SMTP_VERB_RSET:
        case SMTP_VERB_QUIT:
        case SMTP_VERB_STARTTLS:
                if (an > 0)
                        return fail(reterr, 501, "5.5.4", "No parameters allowed");
                return 0;
        case SMTP_VERB_NOOP:
        case SMTP_VERB_HELP:
                return text_arg(a, an, flags, c, reterr);
        case SMTP_VERB_VRFY:
        case SMTP_VERB_EXPN:
                if (an == 0)
                        return fail(reterr, 501, "5.5.4", verb == SMTP_VERB_VRFY ? "Syntax: VRFY address" : "Syntax: EXPN list");
                return text_arg(a, an, flags, c, reterr);
        case SMTP_VERB_BDAT: {
                size_t k = 0;
                uint64_t v = 0;
                while (k < an && is_digit(a[k])) {
                        unsigned d = (unsigned) (a[k] - '0');
                        if (v > (UINT64_MAX - d) / 10)
                                return fail(reterr, 501, "5.5.4", "Chunk size too large");
                        v = v * 10 + d;
                        k++;
                }
                if (k == 0)
                        return fail(reterr, 501, "5.5.4", "Syntax: BDAT size [LAST]");
                c->chunk_size = v;
                size_t j = k;
                while (j < an && a[j] == ' ')
                        j++;
                if (j == an && j == k) /* nothing after the size */
                        return 0;
                if (j == k || !word_eq(a + j, an - j, "LAST"))
                        return fail(reterr, 501, "5.5.4", "Syntax: BDAT size [LAST]");
                c->last = true;
                return 0;
        }
        case SMTP_VERB_AUTH: {
                size_t k = 0;
                while (k < an && a[k] != ' ')
                        k++;
                if (k == 0 || k > SMTP_AUTH_MECH_MAX)
                        return fail(reterr, 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
                for (size_t q = 0; q < k; q++) {
                        if (!is_alpha(a[q]) && !is_digit(a[q]) && a[q] != '-' && a[q] != '_')
                                return fail(reterr, 501, "5.5.4", "Bad SASL mechanism name");
                        c->mechanism[q] = ascii_upper(a[q]);
                }
                c->mechanism[k] = 0;
                size_t j = k;
                while (j < an && a[j] == ' ')
                        j++;
                if (j == an)
                        return 0;
                if (memchr(a + j, ' ', an - j) || !base64_valid(a + j, an - j))
                        return fail(reterr, 501, "5.5.2", "Cannot decode initial response");
                memcpy(c->initial_response, a + j, an - j);
                c->initial_response[an - j] = 0;
                c->has_initial_response = true;
                return 0;
        }
        case SMTP_VERB_UNKNOWN:
        case _SMTP_VERB_MAX:
                break;
        }
        return fail(reterr, 500, "5.5.2", "Command unrecognized");
}
