/* SPDX-License-Identifier: MIT */
/* Aggregation of TLS results and the journal line format (tlsrpt-store.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "macro.h"
#include "tlsrpt-store.h"

/* Counts saturate: a journal of lines each claiming a huge count must not
 * wrap the totals into something that no longer parses (found by fuzzing). */
static uint64_t count_add(uint64_t a, uint64_t b) {
        return a > TLSRPT_COUNT_MAX - MIN(b, TLSRPT_COUNT_MAX) ? TLSRPT_COUNT_MAX : a + b;
}

static const char *const policy_type_names[_TLSRPT_POLICY_MAX] = {
        [TLSRPT_POLICY_STS] = "sts",
        [TLSRPT_POLICY_TLSA] = "tlsa",
        [TLSRPT_POLICY_NONE] = "no-policy-found",
};

const char *tlsrpt_policy_type_to_string(TlsRptPolicyType t) {
        return t >= 0 && t < _TLSRPT_POLICY_MAX ? policy_type_names[t] : NULL;
}

TlsRptPolicyType tlsrpt_policy_type_from_string(const char *s) {
        for (int i = 0; s && i < _TLSRPT_POLICY_MAX; i++)
                if (strcmp(s, policy_type_names[i]) == 0)
                        return (TlsRptPolicyType) i;
        return _TLSRPT_POLICY_INVALID;
}

/* ---- days ---------------------------------------------------------------- */

void tlsrpt_day_to_string(uint32_t day, char buf[static 11]) {
        time_t t = (time_t) day * 86400;
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(buf, 11, "%04u-%02u-%02u", (unsigned) (tm.tm_year + 1900) % 10000U, (unsigned) (tm.tm_mon + 1) % 100U,
                 (unsigned) tm.tm_mday % 100U);
}

int tlsrpt_day_from_string(const char *s, uint32_t *ret) {
        unsigned y, m, d;
        char tail;
        if (!s || strlen(s) != 10 || sscanf(s, "%4u-%2u-%2u%c", &y, &m, &d, &tail) != 3 || y < 1970 || y > 9999 ||
            m < 1 || m > 12 || d < 1 || d > 31)
                return -EINVAL;
        struct tm tm = { .tm_year = (int) y - 1900, .tm_mon = (int) m - 1, .tm_mday = (int) d };
        time_t t = timegm(&tm);
        if (t < 0)
                return -EINVAL;
        uint32_t day = (uint32_t) (t / 86400);
        char back[11];
        tlsrpt_day_to_string(day, back);
        if (strcmp(back, s) != 0) /* 2026-02-31 */
                return -EINVAL;
        *ret = day;
        return 0;
}

/* ---- checks ------------------------------------------------------------- */

/* Lower-case A-label domain name, no trailing dot, labels 1-63. */
static bool domain_ok(const char *s) {
        size_t n = strlen(s), label = 0;
        if (n == 0 || n > TLSRPT_NAME_MAX || s[0] == '.' || s[n - 1] == '.')
                return false;
        for (const char *p = s; *p; p++) {
                if (*p == '.') {
                        if (label == 0)
                                return false;
                        label = 0;
                        continue;
                }
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
                        return false;
                if (++label > 63)
                        return false;
        }
        return true;
}

/* An mx pattern: a domain, optionally "*." in front. */
static bool mx_pattern_ok(const char *s) {
        return domain_ok(strncmp(s, "*.", 2) == 0 ? s + 2 : s);
}

static bool ip_ok(const char *s) {
        unsigned char buf[16];
        return strlen(s) < 64 && (inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1);
}

/* Printable UTF-8 text without control characters, 1..max bytes. */
static bool text_ok(const char *s, size_t max) {
        size_t n = strlen(s);
        if (n == 0 || n > max)
                return false;
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

static bool token_ok(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 64)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
                        return false;
        return true;
}

int tlsrpt_result_check(TlsRptResult *res, const char **reterr_field) {
        const char *bad = NULL;

#define BAD(f)                  \
        do {                    \
                bad = (f);      \
                goto fail;      \
        } while (0)

        if (!res->policy_domain || !domain_ok(res->policy_domain))
                BAD("policyDomain");
        if (res->policy_type < 0 || res->policy_type >= _TLSRPT_POLICY_MAX)
                BAD("policyType");
        if (res->policy_type == TLSRPT_POLICY_NONE)
                res->n_policy_strings = 0;
        if (res->policy_type != TLSRPT_POLICY_STS)
                res->n_mx_hosts = 0;
        if (res->n_policy_strings > TLSRPT_POLICY_STRINGS_MAX)
                BAD("policyStrings");
        for (size_t i = 0; i < res->n_policy_strings; i++)
                if (!res->policy_strings[i] || !text_ok(res->policy_strings[i], TLSRPT_STRING_MAX))
                        BAD("policyStrings");
        if (res->n_mx_hosts > TLSRPT_MX_HOSTS_MAX)
                BAD("mxHosts");
        for (size_t i = 0; i < res->n_mx_hosts; i++)
                if (!res->mx_hosts[i] || !mx_pattern_ok(res->mx_hosts[i]))
                        BAD("mxHosts");
        if (res->count == 0 || res->count > TLSRPT_COUNT_MAX)
                BAD("count");
        if (res->kind != TLSRPT_KIND_FAILURE) {
                res->detail = (TlsRptDetail) {};
                return 0;
        }
        TlsRptDetail *d = &res->detail;
        if (!d->result_type)
                d->result_type = "validation-failure";
        if (!token_ok(d->result_type))
                BAD("resultType");
        if (d->sending_ip && !ip_ok(d->sending_ip))
                BAD("sendingMtaIp");
        if (d->receiving_ip && !ip_ok(d->receiving_ip))
                BAD("receivingIp");
        if (d->mx_hostname && !domain_ok(d->mx_hostname))
                BAD("receivingMxHostname");
        if (d->mx_helo && !text_ok(d->mx_helo, TLSRPT_FIELD_MAX))
                BAD("receivingMxHelo");
        if (d->additional_info && !text_ok(d->additional_info, TLSRPT_STRING_MAX))
                BAD("additionalInformation");
        if (d->reason_code && !text_ok(d->reason_code, TLSRPT_STRING_MAX))
                BAD("failureReasonCode");
        return 0;
#undef BAD
fail:
        if (reterr_field)
                *reterr_field = bad;
        return -EINVAL;
}

/* ---- the aggregate ---------------------------------------------------------- */

int tlsrpt_store_new(size_t max_domains, size_t max_details, TlsRptStore **ret) {
        TlsRptStore *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->max_domains = max_domains ? max_domains : TLSRPT_DEFAULT_MAX_DOMAINS;
        s->max_details = max_details;
        *ret = s;
        return 0;
}

static void strv_free_n(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

static void policy_done(TlsRptPolicy *p) {
        strv_free_n(p->strings, p->n_strings);
        strv_free_n(p->mx_hosts, p->n_mx_hosts);
        for (size_t i = 0; i < p->n_rows; i++)
                for (size_t k = 0; k < ELEMENTSOF(p->rows[i].f); k++)
                        free(p->rows[i].f[k]);
        free(p->rows);
}

static void domain_free(TlsRptDomain *d) {
        if (!d)
                return;
        for (size_t i = 0; i < d->n_policies; i++)
                policy_done(&d->policies[i]);
        free(d->name);
        free(d);
}

static void day_free(TlsRptDay *d) {
        if (!d)
                return;
        for (size_t i = 0; i < d->n_domains; i++)
                domain_free(d->domains[i]);
        free(d->domains);
        free(d);
}

TlsRptStore *tlsrpt_store_free(TlsRptStore *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_days; i++)
                day_free(s->days[i]);
        free(s->days);
        free(s);
        return NULL;
}

TlsRptDay *tlsrpt_store_get_day(TlsRptStore *s, uint32_t day) {
        for (size_t i = 0; i < s->n_days; i++)
                if (s->days[i]->day == day)
                        return s->days[i];
        return NULL;
}

void tlsrpt_store_drop_day(TlsRptStore *s, uint32_t day) {
        for (size_t i = 0; i < s->n_days; i++)
                if (s->days[i]->day == day) {
                        day_free(s->days[i]);
                        memmove(s->days + i, s->days + i + 1, (s->n_days - i - 1) * sizeof *s->days);
                        s->n_days--;
                        return;
                }
}

static int day_find(TlsRptDay *d, const char *name, size_t *ret_pos) {
        size_t lo = 0, hi = d->n_domains;
        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                int c = strcmp(d->domains[mid]->name, name);
                if (c == 0) {
                        *ret_pos = mid;
                        return 1;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *ret_pos = lo;
        return 0;
}

TlsRptDomain *tlsrpt_day_get_domain(TlsRptDay *d, const char *name) {
        size_t pos;
        return d && day_find(d, name, &pos) ? d->domains[pos] : NULL;
}

static bool strv_eq(char *const *a, size_t na, const char *const *b, size_t nb) {
        if (na != nb)
                return false;
        for (size_t i = 0; i < na; i++)
                if (strcmp(a[i], b[i]) != 0)
                        return false;
        return true;
}

static int strv_copy(const char *const *v, size_t n, char ***ret) {
        char **c = calloc(n ? n : 1, sizeof *c);
        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (!(c[i] = strdup(v[i]))) {
                        strv_free_n(c, i);
                        return -ENOMEM;
                }
        *ret = c;
        return 0;
}

static const char *detail_field(const TlsRptDetail *d, size_t k) {
        const char *const f[7] = { d->result_type, d->sending_ip, d->mx_hostname, d->mx_helo,
                                   d->receiving_ip, d->additional_info, d->reason_code };
        return f[k];
}

int tlsrpt_store_add(TlsRptStore *s, TlsRptResult *res) {
        TlsRptDay *day = tlsrpt_store_get_day(s, res->day);
        int r;

        if (!day) {
                TlsRptDay **days = realloc(s->days, (s->n_days + 1) * sizeof *days);
                if (!days)
                        return -ENOMEM;
                s->days = days;
                day = calloc(1, sizeof *day);
                if (!day)
                        return -ENOMEM;
                day->day = res->day;
                size_t pos = 0;
                while (pos < s->n_days && s->days[pos]->day < res->day)
                        pos++;
                memmove(s->days + pos + 1, s->days + pos, (s->n_days - pos) * sizeof *s->days);
                s->days[pos] = day;
                s->n_days++;
        }

        size_t pos;
        TlsRptDomain *dom;
        if (day_find(day, res->policy_domain, &pos))
                dom = day->domains[pos];
        else {
                if (day->n_domains >= s->max_domains)
                        return -ENOSPC;
                if (day->n_domains == day->n_alloc) {
                        size_t n = day->n_alloc ? day->n_alloc * 2 : 16;
                        TlsRptDomain **v = realloc(day->domains, n * sizeof *v);
                        if (!v)
                                return -ENOMEM;
                        day->domains = v;
                        day->n_alloc = n;
                }
                dom = calloc(1, sizeof *dom);
                if (!dom || !(dom->name = strdup(res->policy_domain))) {
                        free(dom);
                        return -ENOMEM;
                }
                memmove(day->domains + pos + 1, day->domains + pos, (day->n_domains - pos) * sizeof *day->domains);
                day->domains[pos] = dom;
                day->n_domains++;
        }

        TlsRptPolicy *p = NULL;
        for (size_t i = 0; i < dom->n_policies; i++) {
                TlsRptPolicy *c = &dom->policies[i];
                if (c->type == res->policy_type && strv_eq(c->strings, c->n_strings, res->policy_strings, res->n_policy_strings) &&
                    strv_eq(c->mx_hosts, c->n_mx_hosts, res->mx_hosts, res->n_mx_hosts)) {
                        p = c;
                        break;
                }
        }
        if (!p) {
                if (dom->n_policies >= TLSRPT_POLICIES_MAX)
                        return -ENOSPC;
                p = &dom->policies[dom->n_policies];
                *p = (TlsRptPolicy) { .type = res->policy_type };
                r = strv_copy(res->policy_strings, res->n_policy_strings, &p->strings);
                if (r < 0)
                        return r;
                p->n_strings = res->n_policy_strings;
                r = strv_copy(res->mx_hosts, res->n_mx_hosts, &p->mx_hosts);
                if (r < 0) {
                        policy_done(p);
                        return r;
                }
                p->n_mx_hosts = res->n_mx_hosts;
                dom->n_policies++;
        }

        r = 1;
        if (res->kind == TLSRPT_KIND_FAILURE) {
                TlsRptRow *row = NULL;
                for (size_t i = 0; i < p->n_rows && !row; i++) {
                        size_t k = 0;
                        while (k < 7 && streq_ptr(p->rows[i].f[k], detail_field(&res->detail, k)))
                                k++;
                        if (k == 7)
                                row = &p->rows[i];
                }
                if (!row && p->n_rows >= s->max_details) {
                        res->kind = TLSRPT_KIND_OVERFLOW;
                        s->details_overflowed = count_add(s->details_overflowed, res->count);
                        r = 0;
                } else if (!row) {
                        TlsRptRow *v = realloc(p->rows, (p->n_rows + 1) * sizeof *v);
                        if (!v)
                                return -ENOMEM;
                        p->rows = v;
                        row = &p->rows[p->n_rows];
                        *row = (TlsRptRow) {};
                        for (size_t k = 0; k < 7; k++) {
                                const char *f = detail_field(&res->detail, k);
                                if (f && !(row->f[k] = strdup(f))) {
                                        for (size_t j = 0; j < k; j++)
                                                free(row->f[j]);
                                        return -ENOMEM;
                                }
                        }
                        p->n_rows++;
                }
                if (row)
                        row->count = count_add(row->count, res->count);
        } else if (res->kind == TLSRPT_KIND_OVERFLOW)
                s->details_overflowed = count_add(s->details_overflowed, res->count);

        if (res->kind == TLSRPT_KIND_SUCCESS) {
                p->successes = count_add(p->successes, res->count);
                day->successes = count_add(day->successes, res->count);
        } else {
                p->failures = count_add(p->failures, res->count);
                day->failures = count_add(day->failures, res->count);
        }
        day->sessions = count_add(day->sessions, res->count);
        return r;
}

int tlsrpt_day_foreach_row(TlsRptDay *d, int (*fn)(const TlsRptResult *res, void *userdata), void *userdata) {
        for (size_t i = 0; i < d->n_domains; i++) {
                TlsRptDomain *dom = d->domains[i];
                for (size_t j = 0; j < dom->n_policies; j++) {
                        TlsRptPolicy *p = &dom->policies[j];
                        TlsRptResult res = {
                                .day = d->day,
                                .policy_domain = dom->name,
                                .policy_type = p->type,
                                .policy_strings = (const char *const *) p->strings,
                                .n_policy_strings = p->n_strings,
                                .mx_hosts = (const char *const *) p->mx_hosts,
                                .n_mx_hosts = p->n_mx_hosts,
                        };
                        uint64_t listed = 0;
                        int r;
                        if (p->successes > 0) {
                                res.kind = TLSRPT_KIND_SUCCESS;
                                res.count = p->successes;
                                if ((r = fn(&res, userdata)) < 0)
                                        return r;
                        }
                        for (size_t k = 0; k < p->n_rows; k++) {
                                TlsRptRow *row = &p->rows[k];
                                res.kind = TLSRPT_KIND_FAILURE;
                                res.count = row->count;
                                res.detail = (TlsRptDetail) { row->f[0], row->f[1], row->f[2], row->f[3],
                                                              row->f[4], row->f[5], row->f[6] };
                                listed = count_add(listed, row->count);
                                if ((r = fn(&res, userdata)) < 0)
                                        return r;
                        }
                        res.detail = (TlsRptDetail) {};
                        if (p->failures > listed) {
                                res.kind = TLSRPT_KIND_OVERFLOW;
                                res.count = p->failures - listed;
                                if ((r = fn(&res, userdata)) < 0)
                                        return r;
                        }
                }
        }
        return 0;
}

/* ---- journal lines ------------------------------------------------------------ */

static const char *const detail_keys[7] = { "rt", "si", "rm", "h", "ri", "ai", "rc" };
static const char *const kind_names[] = { [TLSRPT_KIND_SUCCESS] = "s", [TLSRPT_KIND_FAILURE] = "f", [TLSRPT_KIND_OVERFLOW] = "o" };

static json_object *strv_to_json(const char *const *v, size_t n) {
        json_object *a = json_object_new_array();
        for (size_t i = 0; a && i < n; i++)
                json_object_array_add(a, json_object_new_string(v[i]));
        return a;
}

int tlsrpt_line_format(const TlsRptResult *res, char **ret, size_t *ret_len) {
        json_object *o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "d", json_object_new_int64(res->day));
        json_object_object_add(o, "pd", json_object_new_string(res->policy_domain));
        json_object_object_add(o, "pt", json_object_new_string(tlsrpt_policy_type_to_string(res->policy_type)));
        if (res->n_policy_strings)
                json_object_object_add(o, "ps", strv_to_json(res->policy_strings, res->n_policy_strings));
        if (res->n_mx_hosts)
                json_object_object_add(o, "mx", strv_to_json(res->mx_hosts, res->n_mx_hosts));
        json_object_object_add(o, "k", json_object_new_string(kind_names[res->kind]));
        json_object_object_add(o, "n", json_object_new_int64((int64_t) res->count));
        if (res->kind == TLSRPT_KIND_FAILURE)
                for (size_t k = 0; k < 7; k++) {
                        const char *f = detail_field(&res->detail, k);
                        if (f)
                                json_object_object_add(o, detail_keys[k], json_object_new_string(f));
                }
        size_t jl;
        const char *j = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &jl);
        if (!j) {
                json_object_put(o);
                return -ENOMEM;
        }
        uLong crc = crc32(0L, (const Bytef *) j, (uInt) jl);
        char *line;
        int n = asprintf(&line, "%08lx %s\n", crc & 0xffffffffUL, j);
        json_object_put(o);
        if (n < 0)
                return -ENOMEM;
        *ret = line;
        *ret_len = (size_t) n;
        return 0;
}

void tlsrpt_line_done(TlsRptLine *l) {
        json_object_put(l->json);
        free(l->strings);
        *l = (TlsRptLine) {};
}

static int get_strv(json_object *o, const char *key, size_t max, const char **slots, size_t *ret_n) {
        json_object *a;
        if (!json_object_object_get_ex(o, key, &a)) {
                *ret_n = 0;
                return 0;
        }
        if (!json_object_is_type(a, json_type_array))
                return -EBADMSG;
        size_t n = json_object_array_length(a);
        if (n == 0 || n > max)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(a, i);
                if (!json_object_is_type(e, json_type_string))
                        return -EBADMSG;
                slots[i] = json_object_get_string(e);
        }
        *ret_n = n;
        return 0;
}

int tlsrpt_line_parse(const char *p, size_t n, TlsRptLine *ret) {
        static const char *const known[] = { "d", "pd", "pt", "ps", "mx", "k", "n", "rt", "si", "rm", "h", "ri", "ai", "rc" };
        TlsRptLine l = {};
        int r = -EBADMSG;

        if (n < 11 || n > TLSRPT_LINE_MAX || p[8] != ' ')
                return -EBADMSG;
        uLong want = 0;
        for (size_t i = 0; i < 8; i++) {
                char c = p[i];
                int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                if (v < 0)
                        return -EBADMSG;
                want = want * 16 + (uLong) v;
        }
        const char *j = p + 9;
        size_t jl = n - 9;
        if (j[jl - 1] != '}' || memchr(j, 0, jl) || (crc32(0L, (const Bytef *) j, (uInt) jl) & 0xffffffffUL) != want)
                return -EBADMSG;

        json_tokener *tok = json_tokener_new_ex(8);
        if (!tok)
                return -ENOMEM;
        l.json = json_tokener_parse_ex(tok, j, (int) jl);
        bool complete = json_tokener_get_error(tok) == json_tokener_success && json_tokener_get_parse_end(tok) == jl;
        json_tokener_free(tok);
        if (!l.json || !complete || !json_object_is_type(l.json, json_type_object))
                goto fail;
        json_object_object_foreach(l.json, key, val) {
                bool ok = false;
                for (size_t i = 0; i < ELEMENTSOF(known) && !ok; i++)
                        ok = strcmp(key, known[i]) == 0;
                if (!ok)
                        goto fail;
                (void) val;
        }

        json_object *v;
        TlsRptResult *res = &l.res;
        if (!json_object_object_get_ex(l.json, "d", &v) || !json_object_is_type(v, json_type_int) ||
            json_object_get_int64(v) < 0 || json_object_get_int64(v) > 2932896) /* 9999-12-31 */
                goto fail;
        res->day = (uint32_t) json_object_get_int64(v);
        if (!json_object_object_get_ex(l.json, "pd", &v) || !json_object_is_type(v, json_type_string))
                goto fail;
        res->policy_domain = json_object_get_string(v);
        if (!json_object_object_get_ex(l.json, "pt", &v) || !json_object_is_type(v, json_type_string))
                goto fail;
        res->policy_type = tlsrpt_policy_type_from_string(json_object_get_string(v));
        if (res->policy_type < 0)
                goto fail;
        if (!json_object_object_get_ex(l.json, "k", &v) || !json_object_is_type(v, json_type_string))
                goto fail;
        const char *k = json_object_get_string(v);
        if (strcmp(k, "s") == 0)
                res->kind = TLSRPT_KIND_SUCCESS;
        else if (strcmp(k, "f") == 0)
                res->kind = TLSRPT_KIND_FAILURE;
        else if (strcmp(k, "o") == 0)
                res->kind = TLSRPT_KIND_OVERFLOW;
        else
                goto fail;
        if (!json_object_object_get_ex(l.json, "n", &v) || !json_object_is_type(v, json_type_int) ||
            json_object_get_int64(v) <= 0)
                goto fail;
        res->count = (uint64_t) json_object_get_int64(v);

        l.strings = calloc(TLSRPT_POLICY_STRINGS_MAX + TLSRPT_MX_HOSTS_MAX, sizeof *l.strings);
        if (!l.strings) {
                r = -ENOMEM;
                goto fail;
        }
        if (get_strv(l.json, "ps", TLSRPT_POLICY_STRINGS_MAX, l.strings, &res->n_policy_strings) < 0 ||
            get_strv(l.json, "mx", TLSRPT_MX_HOSTS_MAX, l.strings + TLSRPT_POLICY_STRINGS_MAX, &res->n_mx_hosts) < 0)
                goto fail;
        res->policy_strings = l.strings;
        res->mx_hosts = l.strings + TLSRPT_POLICY_STRINGS_MAX;

        const char *f[7] = {};
        for (size_t i = 0; i < 7; i++) {
                if (!json_object_object_get_ex(l.json, detail_keys[i], &v))
                        continue;
                if (res->kind != TLSRPT_KIND_FAILURE || !json_object_is_type(v, json_type_string))
                        goto fail;
                f[i] = json_object_get_string(v);
        }
        if (res->kind == TLSRPT_KIND_FAILURE && !f[0])
                goto fail;
        res->detail = (TlsRptDetail) { f[0], f[1], f[2], f[3], f[4], f[5], f[6] };
        TlsRptResult check = *res;
        if (tlsrpt_result_check(&check, NULL) < 0 || check.n_policy_strings != res->n_policy_strings ||
            check.n_mx_hosts != res->n_mx_hosts)
                goto fail; /* what we write is always normalised already */
        *ret = l;
        return 0;
fail:
        tlsrpt_line_done(&l);
        return r;
}
