/* SPDX-License-Identifier: MIT */
/* DMARC (RFC 7489). See dmarc.h for the API.
 *
 * Organizational domains come from libpsl's psl_registrable_domain(),
 * which applies the Public Suffix List as published: both its ICANN and
 * its PRIVATE sections (PSL_TYPE_ANY), with the implicit "*" rule for
 * unlisted top-level domains. RFC 7489 §3.2 says to use the list, not a
 * part of it, and the private section is what keeps foo.github.io and
 * bar.github.io (different owners) from being one organization. So
 * github.io itself is a public suffix: it has no organizational domain,
 * and relaxed alignment then needs the exact name. */

#include <libpsl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dmarc.h"
#include "macro.h"
#include "utf8.h"

#define DMARC_DEFAULT_PSL "/usr/share/publicsuffix/public_suffix_list.dafsa"
#define DMARC_DEFAULT_RI 86400U
#define DOMAIN_MAX 253U

struct DmarcPsl {
        psl_ctx_t *ctx;
        bool owned;     /* psl_builtin()'s context is static */
};

int dmarc_psl_new(const char *path, DmarcPsl **ret) {
        _cleanup_free_ DmarcPsl *p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;

        if (path) {
                if (access(path, R_OK) < 0)
                        return negative_errno();
                p->ctx = psl_load_file(path);
                if (!p->ctx)
                        return -EINVAL;
                p->owned = true;
        } else {
                p->ctx = psl_load_file(DMARC_DEFAULT_PSL);
                if (!p->ctx)
                        p->ctx = psl_latest(NULL);
                if (p->ctx)
                        p->owned = true;
                else
                        p->ctx = (psl_ctx_t *) psl_builtin();
                if (!p->ctx)
                        return -ENOENT;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

DmarcPsl *dmarc_psl_free(DmarcPsl *p) {
        if (!p)
                return NULL;
        if (p->owned)
                psl_free(p->ctx);
        free(p);
        return NULL;
}

static char ascii_lower(char c) {
        return c >= 'A' && c <= 'Z' ? (char) (c - 'A' + 'a') : c;
}

/* A host name as DMARC meets it: labels of letters, digits, "-" and "_"
 * (_dmarc and other service labels), or UTF-8 (U-labels, RFC 6532 mail);
 * 1..63 bytes each, at most 253 in all, one trailing dot allowed. The
 * normalized copy (lower-cased ASCII, no trailing dot) goes to buf. */
static int domain_normalize(const char *s, size_t n, char buf[static DOMAIN_MAX + 1]) {
        if (n > 0 && s[n - 1] == '.')
                n--;
        if (n == 0 || n > DOMAIN_MAX)
                return -EINVAL;
        if (!utf8_valid(s, n))
                return -EINVAL;

        size_t label = 0;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c == '.') {
                        if (label == 0)
                                return -EINVAL;
                        label = 0;
                } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                           c == '-' || c == '_' || c >= 0x80) {
                        if (++label > 63)
                                return -EINVAL;
                } else
                        return -EINVAL;
                buf[i] = ascii_lower((char) c);
        }
        if (label == 0)
                return -EINVAL;
        buf[n] = 0;
        return 0;
}

/* The organizational domain of a normalized name, borrowed from it, or
 * NULL for a public suffix. */
static const char *org_of(const DmarcPsl *p, const char *norm) {
        return psl_registrable_domain(p->ctx, norm);
}

int dmarc_org_domain(const DmarcPsl *p, const char *name, char **ret) {
        char norm[DOMAIN_MAX + 1];

        if (!p || !name)
                return -EINVAL;
        if (domain_normalize(name, strlen(name), norm) < 0)
                return -EINVAL;
        const char *org = org_of(p, norm);
        if (!org)
                return -EINVAL;
        char *s = strdup(org);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

bool dmarc_aligned(const DmarcPsl *psl, const char *from_domain, const char *domain, bool strict) {
        char a[DOMAIN_MAX + 1], b[DOMAIN_MAX + 1];

        if (!psl || !from_domain || !domain)
                return false;
        if (domain_normalize(from_domain, strlen(from_domain), a) < 0 ||
            domain_normalize(domain, strlen(domain), b) < 0)
                return false;
        if (strcmp(a, b) == 0)
                return true;
        if (strict)
                return false;
        const char *oa = org_of(psl, a), *ob = org_of(psl, b);
        return streq_ptr(oa ?: a, ob ?: b);
}

static const char *const policy_table[_DMARC_POLICY_MAX] = {
        [DMARC_POLICY_NONE] = "none",
        [DMARC_POLICY_QUARANTINE] = "quarantine",
        [DMARC_POLICY_REJECT] = "reject",
};

const char *dmarc_policy_to_string(DmarcPolicy p) {
        if (p < 0 || p >= _DMARC_POLICY_MAX)
                return NULL;
        return policy_table[p];
}

static const char *const result_table[_DMARC_RESULT_MAX] = {
        [DMARC_RESULT_NONE] = "none",
        [DMARC_RESULT_PASS] = "pass",
        [DMARC_RESULT_FAIL] = "fail",
        [DMARC_RESULT_TEMPERROR] = "temperror",
        [DMARC_RESULT_PERMERROR] = "permerror",
};

const char *dmarc_result_to_string(DmarcResultCode r) {
        if ((int) r < 0 || r >= _DMARC_RESULT_MAX)
                return NULL;
        return result_table[r];
}

/* ---- records ---------------------------------------------------------- */

static bool is_wsp(char c) {
        return c == ' ' || c == '\t';
}

static bool token_eq(const char *s, size_t n, const char *lit) {
        size_t l = strlen(lit);
        if (n != l)
                return false;
        for (size_t i = 0; i < n; i++)
                if (ascii_lower(s[i]) != lit[i])
                        return false;
        return true;
}

static void trim(const char **s, size_t *n) {
        while (*n > 0 && is_wsp(**s)) {
                (*s)++;
                (*n)--;
        }
        while (*n > 0 && is_wsp((*s)[*n - 1]))
                (*n)--;
}

bool dmarc_record_is_dmarc1(const char *txt, size_t n) {
        size_t i = 0;

        if (!txt || n < 1 || (txt[0] != 'v' && txt[0] != 'V'))
                return false;
        i = 1;
        while (i < n && is_wsp(txt[i]))
                i++;
        if (i >= n || txt[i] != '=')
                return false;
        i++;
        while (i < n && is_wsp(txt[i]))
                i++;
        if (n - i < 6 || memcmp(txt + i, "DMARC1", 6) != 0)
                return false;
        i += 6;
        while (i < n && is_wsp(txt[i]))
                i++;
        return i == n || txt[i] == ';';
}

DmarcRecord *dmarc_record_free(DmarcRecord *r) {
        if (!r)
                return NULL;
        for (size_t i = 0; i < r->n_rua; i++)
                free(r->rua[i]);
        for (size_t i = 0; i < r->n_ruf; i++)
                free(r->ruf[i]);
        free(r->rua);
        free(r->ruf);
        free(r->rua_max_size);
        free(r->ruf_max_size);
        free(r);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(DmarcRecord *, dmarc_record_free);

static DmarcPolicy policy_from(const char *s, size_t n) {
        for (DmarcPolicy p = 0; p < _DMARC_POLICY_MAX; p++)
                if (token_eq(s, n, policy_table[p]))
                        return p;
        return _DMARC_POLICY_INVALID;
}

/* adkim=/aspf=: 1 strict, 0 relaxed, -EINVAL. */
static int mode_from(const char *s, size_t n) {
        if (token_eq(s, n, "s"))
                return 1;
        if (token_eq(s, n, "r"))
                return 0;
        return -EINVAL;
}

/* 1*DIGIT up to max, else -EINVAL. */
static int parse_uint(const char *s, size_t n, uint64_t max, uint64_t *ret) {
        uint64_t v = 0;

        if (n == 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                if (v > (max - (uint64_t) (s[i] - '0')) / 10)
                        return -EINVAL;
                v = v * 10 + (uint64_t) (s[i] - '0');
        }
        *ret = v;
        return 0;
}

/* Splits s[0..n) at sep, trimming WSP around every element; calls f on
 * each. Stops at the first error f returns. */
static int split_list(const char *s, size_t n, char sep, int (*f)(const char *e, size_t en, void *ud), void *ud) {
        size_t start = 0;
        for (size_t i = 0; i <= n; i++) {
                if (i < n && s[i] != sep)
                        continue;
                const char *e = s + start;
                size_t en = i - start;
                trim(&e, &en);
                int r = f(e, en, ud);
                if (r < 0)
                        return r;
                start = i + 1;
        }
        return 0;
}

static int fo_item(const char *e, size_t n, void *ud) {
        unsigned *mask = ud;
        if (token_eq(e, n, "0"))
                *mask |= DMARC_FO_0;
        else if (token_eq(e, n, "1"))
                *mask |= DMARC_FO_1;
        else if (token_eq(e, n, "d"))
                *mask |= DMARC_FO_D;
        else if (token_eq(e, n, "s"))
                *mask |= DMARC_FO_S;
        else
                return -EINVAL;
        return 0;
}

static int rf_item(const char *e, size_t n, void *ud) {
        /* Format-name = ALPHA *(ALPHA / DIGIT / "-"); only afrf is defined. */
        if (n == 0 || !((e[0] >= 'a' && e[0] <= 'z') || (e[0] >= 'A' && e[0] <= 'Z')))
                return -EINVAL;
        for (size_t i = 1; i < n; i++)
                if (!((e[i] >= 'a' && e[i] <= 'z') || (e[i] >= 'A' && e[i] <= 'Z') ||
                      (e[i] >= '0' && e[i] <= '9') || e[i] == '-'))
                        return -EINVAL;
        return 0;
}

static bool is_hex(char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* An absolute URI (RFC 3986 §3: scheme ":" hier-part ...) checked for its
 * characters only: "," and "!" must be %-encoded inside DMARC URIs
 * (RFC 7489 §6.4), white space and ";" cannot occur. */
static bool uri_valid(const char *s, size_t n) {
        size_t i = 0;

        if (n == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
                return false;
        for (i = 1; i < n && s[i] != ':'; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '+' || s[i] == '-' || s[i] == '.'))
                        return false;
        if (i >= n || i + 1 == n)
                return false;
        for (i++; i < n; i++) {
                char c = s[i];
                if (c == '%') {
                        if (i + 2 >= n || !is_hex(s[i + 1]) || !is_hex(s[i + 2]))
                                return false;
                        i += 2;
                        continue;
                }
                if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
                        continue;
                if (c == 0 || !strchr("-._~:/?#[]@$&'()*+=", c))
                        return false;
        }
        return true;
}

typedef struct UriList {
        char **uris;
        uint64_t *sizes;
        size_t n;
        bool seen_valid;
} UriList;

static int uri_item(const char *e, size_t n, void *ud) {
        UriList *l = ud;
        uint64_t size = 0;

        /* dmarc-uri = URI [ "!" 1*DIGIT [ "k" / "m" / "g" / "t" ] ]; a "!"
         * inside the URI itself is encoded, so the last one is the size. */
        const char *bang = memrchr(e, '!', n);
        if (bang) {
                const char *d = bang + 1;
                size_t dn = (size_t) (e + n - d);
                unsigned shift = 0;
                if (dn > 0) {
                        switch (ascii_lower(d[dn - 1])) {
                        case 'k': shift = 10; dn--; break;
                        case 'm': shift = 20; dn--; break;
                        case 'g': shift = 30; dn--; break;
                        case 't': shift = 40; dn--; break;
                        default: break;
                        }
                }
                if (parse_uint(d, dn, UINT64_MAX >> shift, &size) < 0)
                        return 0; /* an invalid URI: skipped */
                size <<= shift;
                n = (size_t) (bang - e);
        }
        if (!uri_valid(e, n))
                return 0;
        l->seen_valid = true;
        if (l->n >= DMARC_MAX_URIS)
                return 0;

        char *u = strndup(e, n);
        if (!u)
                return -ENOMEM;
        l->uris[l->n] = u;
        l->sizes[l->n] = size;
        l->n++;
        return 0;
}

static int parse_uris(const char *v, size_t n, char ***ret_uris, uint64_t **ret_sizes, size_t *ret_n) {
        UriList l = {};

        /* Repeated tags are ignored before we get here, so this runs once
         * per tag; the arrays are sized for the cap (+ NULL) up front. */
        l.uris = calloc(DMARC_MAX_URIS + 1, sizeof(char *));
        l.sizes = calloc(DMARC_MAX_URIS, sizeof(uint64_t));
        if (!l.uris || !l.sizes) {
                free(l.uris);
                free(l.sizes);
                return -ENOMEM;
        }
        int r = split_list(v, n, ',', uri_item, &l);
        if (r < 0 || l.n == 0) {
                for (size_t i = 0; i < l.n; i++)
                        free(l.uris[i]);
                free(l.uris);
                free(l.sizes);
                return r < 0 ? r : 0;
        }
        *ret_uris = l.uris;
        *ret_sizes = l.sizes;
        *ret_n = l.n;
        return 0;
}

enum {
        TAG_P, TAG_SP, TAG_ADKIM, TAG_ASPF, TAG_PCT, TAG_RUA, TAG_RUF, TAG_FO, TAG_RF, TAG_RI,
        _TAG_MAX,
};
static const char *const tag_names[_TAG_MAX] = {
        [TAG_P] = "p", [TAG_SP] = "sp", [TAG_ADKIM] = "adkim", [TAG_ASPF] = "aspf", [TAG_PCT] = "pct",
        [TAG_RUA] = "rua", [TAG_RUF] = "ruf", [TAG_FO] = "fo", [TAG_RF] = "rf", [TAG_RI] = "ri",
};

static int record_invalid(const char **reterr_reason, const char *why) {
        if (reterr_reason)
                *reterr_reason = why;
        return -EINVAL;
}

int dmarc_record_parse(const char *txt, size_t n, DmarcRecord **ret, const char **reterr_reason) {
        bool seen[_TAG_MAX] = {};
        bool sp_invalid = false;

        if (!txt || !ret)
                return -EINVAL;
        if (!dmarc_record_is_dmarc1(txt, n))
                return record_invalid(reterr_reason, "not a DMARC1 record");
        if (n > DMARC_RECORD_MAX)
                return record_invalid(reterr_reason, "DMARC record too long");

        _cleanup_(dmarc_record_freep) DmarcRecord *rec = calloc(1, sizeof *rec);
        if (!rec)
                return -ENOMEM;
        rec->p = rec->sp = _DMARC_POLICY_INVALID;
        rec->pct = 100;
        rec->fo_mask = DMARC_FO_0;
        rec->ri = DMARC_DEFAULT_RI;

        /* The version tag was checked above; the tag-specs after it. */
        const char *semi = memchr(txt, ';', n);
        size_t i = semi ? (size_t) (semi - txt) + 1 : n;
        while (i < n) {
                const char *spec = txt + i;
                const char *end = memchr(spec, ';', n - i);
                size_t sn = end ? (size_t) (end - spec) : n - i;
                i += sn + 1;

                const char *eq = memchr(spec, '=', sn);
                if (!eq)
                        continue; /* empty or garbage tag-spec: ignored */
                const char *name = spec, *v = eq + 1;
                size_t nn = (size_t) (eq - spec), vn = sn - nn - 1;
                trim(&name, &nn);
                trim(&v, &vn);

                int tag = -1;
                for (int t = 0; t < _TAG_MAX; t++)
                        if (token_eq(name, nn, tag_names[t])) {
                                tag = t;
                                break;
                        }
                if (tag < 0 || seen[tag])
                        continue;
                seen[tag] = true;

                switch (tag) {
                case TAG_P:
                        rec->p = policy_from(v, vn);
                        break;
                case TAG_SP:
                        rec->sp = policy_from(v, vn);
                        sp_invalid = rec->sp < 0;
                        break;
                case TAG_ADKIM:
                case TAG_ASPF: {
                        int m = mode_from(v, vn);
                        if (m >= 0)
                                *(tag == TAG_ADKIM ? &rec->strict_dkim : &rec->strict_spf) = m;
                        break;
                }
                case TAG_PCT: {
                        uint64_t x;
                        if (vn <= 3 && parse_uint(v, vn, 100, &x) >= 0)
                                rec->pct = (unsigned) x;
                        break;
                }
                case TAG_RI: {
                        uint64_t x;
                        if (parse_uint(v, vn, UINT32_MAX, &x) >= 0)
                                rec->ri = (uint32_t) x;
                        break;
                }
                case TAG_FO: {
                        unsigned mask = 0;
                        if (split_list(v, vn, ':', fo_item, &mask) >= 0)
                                rec->fo_mask = mask;
                        break;
                }
                case TAG_RF:
                        /* Only validated: afrf is the one format there is. */
                        (void) split_list(v, vn, ':', rf_item, NULL);
                        break;
                case TAG_RUA:
                case TAG_RUF: {
                        int r = tag == TAG_RUA ? parse_uris(v, vn, &rec->rua, &rec->rua_max_size, &rec->n_rua)
                                               : parse_uris(v, vn, &rec->ruf, &rec->ruf_max_size, &rec->n_ruf);
                        if (r < 0)
                                return r;
                        break;
                }
                }
        }

        /* §6.6.3 step 6: without a valid p= (or with an invalid sp=) the
         * record still counts as p=none when it asks for aggregate reports. */
        if (rec->p < 0 || sp_invalid) {
                if (rec->n_rua == 0)
                        return record_invalid(reterr_reason, rec->p < 0 ? "DMARC record without a valid p= tag"
                                                                        : "DMARC record with an invalid sp= tag");
                rec->p = rec->sp = DMARC_POLICY_NONE;
        }
        if (rec->sp < 0)
                rec->sp = rec->p;

        *ret = TAKE_PTR(rec);
        return 0;
}

/* ---- evaluation ------------------------------------------------------- */

typedef enum EvalState {
        STATE_QUERY_FROM,
        STATE_WAIT_FROM,
        STATE_QUERY_ORG,
        STATE_WAIT_ORG,
        STATE_DONE,
} EvalState;

struct DmarcEval {
        EvalState state;
        char *from_domain, *org_domain, *record_domain;
        char *qname;
        DmarcRecord *record;
        unsigned random;
        /* Alignment is known before any record: both modes are kept and the
         * record's adkim=/aspf= picks one. Each means "passed and aligned". */
        bool spf_relaxed, spf_strict, dkim_relaxed, dkim_strict;
        DmarcResult result;
};

DmarcEval *dmarc_eval_free(DmarcEval *e) {
        if (!e)
                return NULL;
        free(e->from_domain);
        free(e->org_domain);
        free(e->record_domain);
        free(e->qname);
        dmarc_record_free(e->record);
        free(e);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(DmarcEval *, dmarc_eval_free);

static void eval_finish(DmarcEval *e, DmarcResultCode code, const char *reason) {
        e->state = STATE_DONE;
        e->result.result = code;
        e->result.reason = reason;
        e->result.from_domain = e->from_domain;
        e->result.org_domain = e->org_domain;
        e->result.record_domain = e->record_domain;
        e->result.record = e->record;
        free(e->qname);
        e->qname = NULL;
}

/* Sets up the query for _dmarc.<domain>; a name too long to ask for cannot
 * have a record, which is the same as NXDOMAIN. 1 when a query is set,
 * 0 when skipped, -ENOMEM. */
static int eval_set_query(DmarcEval *e, const char *domain, EvalState state) {
        free(e->qname);
        e->qname = NULL;
        if (strlen(domain) + strlen("_dmarc.") > DOMAIN_MAX)
                return 0;
        if (asprintf(&e->qname, "_dmarc.%s", domain) < 0) {
                e->qname = NULL;
                return -ENOMEM;
        }
        e->state = state;
        return 1;
}

/* No record at the name just asked (or it could not be asked): on to the
 * organizational domain once (§6.6.3 step 3), else the result is none. */
static int eval_no_record(DmarcEval *e, bool at_org) {
        if (!at_org && e->org_domain && !streq_ptr(e->org_domain, e->from_domain)) {
                int r = eval_set_query(e, e->org_domain, STATE_QUERY_ORG);
                if (r != 0)
                        return r < 0 ? r : 0;
        }
        eval_finish(e, DMARC_RESULT_NONE, "no DMARC record");
        return 0;
}

int dmarc_eval_new(const DmarcPsl *psl, const DmarcParams *params, DmarcEval **ret) {
        char norm[DOMAIN_MAX + 1];

        if (!psl || !params || !ret)
                return -EINVAL;

        _cleanup_(dmarc_eval_freep) DmarcEval *e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        e->random = params->random % 100; /* documented as 0..99: out of range must not defeat pct=100 */
        e->result.policy = e->result.disposition = DMARC_POLICY_NONE;

        if (!params->from_domain) {
                eval_finish(e, DMARC_RESULT_PERMERROR, "no single RFC5322.From domain");
                *ret = TAKE_PTR(e);
                return 0;
        }
        if (domain_normalize(params->from_domain, strlen(params->from_domain), norm) < 0) {
                eval_finish(e, DMARC_RESULT_PERMERROR, "invalid RFC5322.From domain");
                *ret = TAKE_PTR(e);
                return 0;
        }
        e->from_domain = strdup(norm);
        if (!e->from_domain)
                return -ENOMEM;
        const char *org = org_of(psl, e->from_domain);
        if (org) {
                e->org_domain = strdup(org);
                if (!e->org_domain)
                        return -ENOMEM;
        }

        if (params->spf_pass && params->spf_domain) {
                e->spf_relaxed = dmarc_aligned(psl, e->from_domain, params->spf_domain, false);
                e->spf_strict = dmarc_aligned(psl, e->from_domain, params->spf_domain, true);
        }
        for (size_t i = 0; i < params->n_dkim; i++) {
                if (!params->dkim[i].pass || !params->dkim[i].domain)
                        continue;
                e->dkim_relaxed = e->dkim_relaxed || dmarc_aligned(psl, e->from_domain, params->dkim[i].domain, false);
                e->dkim_strict = e->dkim_strict || dmarc_aligned(psl, e->from_domain, params->dkim[i].domain, true);
        }
        e->result.spf_aligned = e->spf_relaxed;
        e->result.dkim_aligned = e->dkim_relaxed;

        int r = eval_set_query(e, e->from_domain, STATE_QUERY_FROM);
        if (r == 0)
                r = eval_no_record(e, false);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(e);
        return 0;
}

int dmarc_eval_next_query(DmarcEval *e, const char **ret_name) {
        if (!e)
                return -EINVAL;
        switch (e->state) {
        case STATE_QUERY_FROM:
                e->state = STATE_WAIT_FROM;
                break;
        case STATE_QUERY_ORG:
                e->state = STATE_WAIT_ORG;
                break;
        default:
                return 0;
        }
        if (ret_name)
                *ret_name = e->qname;
        return 1;
}

bool dmarc_eval_is_done(const DmarcEval *e) {
        return !e || e->state == STATE_DONE;
}

static bool name_eq(const char *a, const char *b) {
        size_t an = strlen(a), bn = strlen(b);
        if (an > 0 && a[an - 1] == '.')
                an--;
        if (bn > 0 && b[bn - 1] == '.')
                bn--;
        return an == bn && strncasecmp(a, b, an) == 0;
}

/* The record found: policy, alignment, pct. */
static void eval_apply(DmarcEval *e) {
        const DmarcRecord *rec = e->record;
        bool from_org = !streq_ptr(e->record_domain, e->from_domain);

        /* sp= governs subdomains of the domain whose record was used: only
         * when the record came from the organizational domain. */
        e->result.policy = from_org ? rec->sp : rec->p;
        e->result.pct = rec->pct;
        e->result.spf_aligned = rec->strict_spf ? e->spf_strict : e->spf_relaxed;
        e->result.dkim_aligned = rec->strict_dkim ? e->dkim_strict : e->dkim_relaxed;

        if (e->result.spf_aligned || e->result.dkim_aligned) {
                e->result.disposition = DMARC_POLICY_NONE;
                eval_finish(e, DMARC_RESULT_PASS,
                            e->result.dkim_aligned && e->result.spf_aligned ? "aligned DKIM and SPF pass"
                            : e->result.dkim_aligned                         ? "aligned DKIM pass"
                                                                             : "aligned SPF pass");
                return;
        }

        /* §6.6.4: outside the pct= sample the next policy down applies
         * (reject -> quarantine, quarantine -> none). */
        DmarcPolicy d = e->result.policy;
        if (d != DMARC_POLICY_NONE && e->random >= rec->pct)
                d = d == DMARC_POLICY_REJECT ? DMARC_POLICY_QUARANTINE : DMARC_POLICY_NONE;
        e->result.disposition = d;
        eval_finish(e, DMARC_RESULT_FAIL, "no aligned identifier passed");
}

int dmarc_eval_answer(DmarcEval *e, const DnsResult *result) {
        bool at_org;

        if (!e || !result)
                return -EINVAL;
        if (e->state != STATE_WAIT_FROM && e->state != STATE_WAIT_ORG)
                return -ENOENT;
        if (!result->qname || result->qtype != DNS_TYPE_TXT || !name_eq(result->qname, e->qname))
                return -ENOENT;
        at_org = e->state == STATE_WAIT_ORG;

        switch (result->status) {
        case DNS_STATUS_OK:
        case DNS_STATUS_NODATA:
        case DNS_STATUS_NXDOMAIN:
                break;
        default:
                eval_finish(e, DMARC_RESULT_TEMPERROR, "temporary DNS failure");
                return 0;
        }

        /* §6.6.3 steps 2-5: only records starting with v=DMARC1 count;
         * more than one is as good as none. */
        const DnsRecord *found = NULL;
        size_t n_dmarc = 0;
        if (result->status == DNS_STATUS_OK)
                for (size_t i = 0; i < result->n_records; i++) {
                        const DnsRecord *rr = &result->records[i];
                        if (rr->type != DNS_TYPE_TXT || !dmarc_record_is_dmarc1(rr->txt.text, rr->txt.len))
                                continue;
                        n_dmarc++;
                        found = rr;
                }

        if (n_dmarc == 0)
                return eval_no_record(e, at_org);

        e->record_domain = strdup(at_org ? e->org_domain : e->from_domain);
        if (!e->record_domain)
                return -ENOMEM;
        if (n_dmarc > 1) {
                eval_finish(e, DMARC_RESULT_NONE, "multiple DMARC records");
                return 0;
        }

        const char *why = NULL;
        int r = dmarc_record_parse(found->txt.text, found->txt.len, &e->record, &why);
        if (r == -EINVAL) {
                eval_finish(e, DMARC_RESULT_NONE, why ?: "invalid DMARC record");
                return 0;
        }
        if (r < 0)
                return r;
        eval_apply(e);
        return 0;
}

int dmarc_eval_result(DmarcEval *e, const DmarcResult **ret) {
        if (!e || !ret)
                return -EINVAL;
        if (e->state != STATE_DONE)
                return -EBUSY;
        *ret = &e->result;
        return 0;
}

/* ---- RFC5322.From ----------------------------------------------------- */

/* Tokens of RFC 5322 §3.2 after CFWS is dropped: atoms, quoted strings,
 * domain literals and the specials. Comments nest; quoted-pairs are
 * skipped over, never interpreted (only the domain is wanted, and a
 * domain is made of atoms). */
typedef enum TokType {
        TOK_END,
        TOK_ATOM,
        TOK_QSTRING,
        TOK_DLITERAL,
        TOK_SPECIAL,
} TokType;

typedef struct Lexer {
        const char *p;
        size_t n, i;
        TokType type;
        const char *tok;
        size_t tok_len;
        char special;
} Lexer;

static bool is_atext(unsigned char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               (c >= 0x80) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static bool is_fws(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Advances to the next token. -EBADMSG for an unterminated comment,
 * quoted string or literal, or a byte that cannot occur here. */
static int lex_next(Lexer *l) {
        for (;;) {
                while (l->i < l->n && is_fws(l->p[l->i]))
                        l->i++;
                if (l->i >= l->n || l->p[l->i] != '(')
                        break;
                /* A comment: nested, quoted-pairs allowed, NUL is not. */
                size_t depth = 0;
                for (;;) {
                        if (l->i >= l->n)
                                return -EBADMSG;
                        char c = l->p[l->i++];
                        if (c == 0)
                                return -EBADMSG;
                        if (c == '\\') {
                                if (l->i >= l->n || l->p[l->i] == 0)
                                        return -EBADMSG;
                                l->i++;
                        } else if (c == '(')
                                depth++;
                        else if (c == ')' && --depth == 0)
                                break;
                }
        }

        if (l->i >= l->n) {
                l->type = TOK_END;
                return 0;
        }

        size_t start = l->i;
        unsigned char c = (unsigned char) l->p[l->i];
        l->tok = l->p + start;
        if (is_atext(c)) {
                while (l->i < l->n && is_atext((unsigned char) l->p[l->i]))
                        l->i++;
                l->type = TOK_ATOM;
        } else if (c == '"' || c == '[') {
                char close = c == '"' ? '"' : ']';
                l->i++;
                for (;;) {
                        if (l->i >= l->n)
                                return -EBADMSG;
                        char d = l->p[l->i++];
                        if (d == 0 || (close == ']' && d == '['))
                                return -EBADMSG;
                        if (d == '\\') {
                                if (l->i >= l->n || l->p[l->i] == 0)
                                        return -EBADMSG;
                                l->i++;
                        } else if (d == close)
                                break;
                }
                l->type = c == '"' ? TOK_QSTRING : TOK_DLITERAL;
        } else if (strchr("<>:;@,.", c) && c != 0) {
                l->i++;
                l->type = TOK_SPECIAL;
                l->special = (char) c;
        } else
                return -EBADMSG; /* ")", "]", "\\", controls */
        l->tok_len = l->i - start;
        return 0;
}

static bool lex_is(const Lexer *l, char special) {
        return l->type == TOK_SPECIAL && l->special == special;
}

static bool lex_is_word(const Lexer *l) {
        return l->type == TOK_ATOM || l->type == TOK_QSTRING;
}

typedef struct FromState {
        unsigned mailboxes;
        bool literal;                   /* the first mailbox's domain was [...] */
        char domain[DOMAIN_MAX + 2];    /* the first mailbox's domain, as written */
        size_t domain_len;
        bool too_long;
} FromState;

/* domain = dot-atom / domain-literal / obs-domain (atoms and dots with
 * CFWS between them, which the lexer drops). The first mailbox's domain is
 * kept in s. */
static int parse_domain(Lexer *l, FromState *s, bool keep) {
        int r;

        if (l->type == TOK_DLITERAL) {
                if (keep)
                        s->literal = true;
                return lex_next(l);
        }
        for (;;) {
                if (l->type != TOK_ATOM)
                        return -EBADMSG;
                if (keep) {
                        if (s->domain_len + l->tok_len + 1 >= sizeof s->domain)
                                s->too_long = true;
                        else {
                                memcpy(s->domain + s->domain_len, l->tok, l->tok_len);
                                s->domain_len += l->tok_len;
                        }
                }
                r = lex_next(l);
                if (r < 0)
                        return r;
                if (!lex_is(l, '.'))
                        return 0;
                if (keep && !s->too_long)
                        s->domain[s->domain_len++] = '.';
                r = lex_next(l);
                if (r < 0)
                        return r;
        }
}

/* local-part = word *("." word) (dot-atom, quoted-string, obs-local-part),
 * then "@" domain. */
static int parse_addr_spec(Lexer *l, FromState *s, bool keep) {
        int r;

        for (;;) {
                if (!lex_is_word(l))
                        return -EBADMSG;
                r = lex_next(l);
                if (r < 0)
                        return r;
                if (!lex_is(l, '.'))
                        break;
                r = lex_next(l);
                if (r < 0)
                        return r;
        }
        if (!lex_is(l, '@'))
                return -EBADMSG;
        r = lex_next(l);
        if (r < 0)
                return r;
        return parse_domain(l, s, keep);
}

/* After "<": [obs-route] addr-spec ">". obs-route = obs-domain-list ":",
 * obs-domain-list = *(CFWS / ",") "@" domain *("," [CFWS] ["@" domain]). */
static int parse_angle_addr(Lexer *l, FromState *s, bool keep) {
        int r;

        if (lex_is(l, ',') || lex_is(l, '@')) {
                while (lex_is(l, ',')) {
                        r = lex_next(l);
                        if (r < 0)
                                return r;
                }
                if (!lex_is(l, '@'))
                        return -EBADMSG;
                for (;;) {
                        if (lex_is(l, '@')) {
                                r = lex_next(l);
                                if (r < 0)
                                        return r;
                                r = parse_domain(l, s, false);
                                if (r < 0)
                                        return r;
                        }
                        if (lex_is(l, ':'))
                                break;
                        if (!lex_is(l, ','))
                                return -EBADMSG;
                        r = lex_next(l);
                        if (r < 0)
                                return r;
                }
                r = lex_next(l);
                if (r < 0)
                        return r;
        }
        r = parse_addr_spec(l, s, keep);
        if (r < 0)
                return r;
        if (!lex_is(l, '>'))
                return -EBADMSG;
        return lex_next(l);
}

/* One address: a mailbox (name-addr or addr-spec) or, outside a group, a
 * group (display-name ":" [group-list] ";"). Words before the decisive
 * token are either a display name (then "<" or ":") or a local-part (then
 * "@"); the lexer cannot back up, so they are scanned once and classified
 * by shape: local-part is word *("." word), a phrase starts with a word. */
static int parse_address(Lexer *l, FromState *s, bool in_group);

static int parse_mailbox_list(Lexer *l, FromState *s, bool in_group) {
        int r;

        for (;;) {
                /* obs-mbox-list / obs-group-list: empty elements between commas. */
                while (lex_is(l, ',')) {
                        r = lex_next(l);
                        if (r < 0)
                                return r;
                }
                if (l->type == TOK_END || (in_group && lex_is(l, ';')))
                        return 0;
                r = parse_address(l, s, in_group);
                if (r < 0)
                        return r;
                /* Two mailboxes already decide the answer. */
                if (s->mailboxes > 1)
                        return -EBADMSG;
                if (lex_is(l, ','))
                        continue;
                if (l->type == TOK_END || (in_group && lex_is(l, ';')))
                        return 0;
                return -EBADMSG;
        }
}

static int parse_address(Lexer *l, FromState *s, bool in_group) {
        bool keep = s->mailboxes == 0;
        size_t n_tok = 0;
        bool first_is_word = lex_is_word(l), local_shape = true, want_word = true;
        int r;

        /* The lexer position where this address starts, to re-read the
         * words as a local-part once "@" shows that is what they were. */
        Lexer saved = *l;

        while (lex_is_word(l) || lex_is(l, '.')) {
                bool word = lex_is_word(l);
                if (word != want_word)
                        local_shape = false;
                want_word = !word;
                n_tok++;
                r = lex_next(l);
                if (r < 0)
                        return r;
        }
        if (want_word)
                local_shape = false; /* empty, or ends in "." */

        if (lex_is(l, '@')) {
                if (!local_shape)
                        return -EBADMSG;
                *l = saved;
                r = parse_addr_spec(l, s, keep);
                if (r < 0)
                        return r;
                s->mailboxes++;
                return 0;
        }
        if (n_tok > 0 && !first_is_word)
                return -EBADMSG; /* a phrase starts with a word */
        if (lex_is(l, '<')) {
                r = lex_next(l);
                if (r < 0)
                        return r;
                r = parse_angle_addr(l, s, keep);
                if (r < 0)
                        return r;
                s->mailboxes++;
                return 0;
        }
        if (lex_is(l, ':') && !in_group && n_tok > 0) {
                r = lex_next(l);
                if (r < 0)
                        return r;
                r = parse_mailbox_list(l, s, true);
                if (r < 0)
                        return r;
                if (!lex_is(l, ';'))
                        return -EBADMSG;
                return lex_next(l);
        }
        return -EBADMSG;
}

int dmarc_from_domain(const char *value, size_t n, char **ret) {
        Lexer l = { .p = value, .n = n };
        FromState s = {};
        char norm[DOMAIN_MAX + 1];
        int r;

        if (!value || !ret)
                return -EINVAL;
        /* Header fields are capped long before this (mail-header.h) and
         * the parser is linear. 8-bit bytes are atext (RFC 6532); only the
         * domain must be valid UTF-8 (domain_normalize), so a raw Latin-1
         * display name does not cost the message its From domain. */
        r = lex_next(&l);
        if (r < 0)
                return r;
        r = parse_mailbox_list(&l, &s, false);
        if (r < 0)
                return r;
        if (s.mailboxes != 1 || s.literal || s.too_long)
                return -EBADMSG;
        /* A trailing dot cannot come out of the parser: "a@b." fails there. */
        if (domain_normalize(s.domain, s.domain_len, norm) < 0)
                return -EBADMSG;
        char *d = strdup(norm);
        if (!d)
                return -ENOMEM;
        *ret = d;
        return 0;
}

int dmarc_from_domain_fields(const MailHeaderField *fields, size_t n_fields, char **ret) {
        const MailHeaderField *from = NULL;

        if (!fields && n_fields > 0)
                return -EINVAL;
        for (size_t i = 0; i < n_fields; i++) {
                if (!mail_header_field_is(&fields[i], "From"))
                        continue;
                if (from)
                        return -EBADMSG;
                from = &fields[i];
        }
        if (!from)
                return -EBADMSG;
        return dmarc_from_domain(from->value, from->value_len, ret);
}
