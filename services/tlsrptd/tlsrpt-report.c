/* SPDX-License-Identifier: MIT */
/* RFC 8460 discovery record, report JSON, gzip and report message. */
#include <errno.h>
#include <stdarg.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "macro.h"
#include "tlsrpt-report.h"

/* ---- the _smtp._tls record ---------------------------------------------- */

static bool is_wsp(char c) {
        return c == ' ' || c == '\t';
}

bool tlsrpt_record_is_candidate(const char *p, size_t n) {
        static const char v[] = "v=TLSRPTv1";
        size_t l = sizeof v - 1;
        if (n < l || memcmp(p, v, l) != 0)
                return false;
        size_t i = l;
        while (i < n && is_wsp(p[i]))
                i++;
        return i < n && p[i] == ';';
}

void tlsrpt_record_done(TlsRptRecord *r) {
        for (size_t i = 0; i < r->n_rua; i++)
                free(r->rua[i]);
        *r = (TlsRptRecord) {};
}

static bool ext_name_char(char c, bool first) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
                return true;
        return !first && (c == '_' || c == '-' || c == '.');
}

static bool uri_char(char c) {
        /* RFC 3986 characters minus the ones RFC 8460 wants %-encoded. */
        return c > 0x20 && c < 0x7f && c != ',' && c != ';' && c != '!' && c != '"' && c != '<' && c != '>' &&
               c != '\\' && c != '^' && c != '`' && c != '{' && c != '|' && c != '}';
}

static int add_uri(TlsRptRecord *rec, const char *s, size_t n) {
        if (n == 0 || n > TLSRPT_URI_MAX)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++)
                if (!uri_char(s[i]))
                        return -EBADMSG;
        bool mailto = n > 7 && strncasecmp(s, "mailto:", 7) == 0;
        bool https = n > 8 && strncasecmp(s, "https://", 8) == 0;
        if ((!mailto && !https) || rec->n_rua >= TLSRPT_RUA_MAX) {
                rec->n_ignored++;
                return 0;
        }
        char *u = strndup(s, n);
        if (!u)
                return -ENOMEM;
        rec->rua[rec->n_rua++] = u;
        return 0;
}

int tlsrpt_record_parse(const char *p, size_t n, TlsRptRecord *ret) {
        TlsRptRecord rec = {};
        bool have_rua = false;
        size_t i;
        int r;

        if (!tlsrpt_record_is_candidate(p, n) || memchr(p, 0, n))
                return -EBADMSG;
        i = strlen("v=TLSRPTv1");
        for (;;) {
                /* field-delim */
                while (i < n && is_wsp(p[i]))
                        i++;
                if (i >= n)
                        break;
                if (p[i] != ';') {
                        r = -EBADMSG;
                        goto fail;
                }
                i++;
                while (i < n && is_wsp(p[i]))
                        i++;
                if (i >= n)
                        break; /* trailing delimiter */
                size_t name = i;
                while (i < n && ext_name_char(p[i], i == name))
                        i++;
                size_t name_len = i - name;
                if (name_len == 0 || name_len > 32 || i >= n || p[i] != '=') {
                        r = -EBADMSG;
                        goto fail;
                }
                i++;
                if (name_len == 3 && memcmp(p + name, "rua", 3) == 0) {
                        if (have_rua) {
                                r = -EBADMSG;
                                goto fail;
                        }
                        have_rua = true;
                        for (;;) {
                                size_t u = i;
                                while (i < n && uri_char(p[i]))
                                        i++;
                                r = add_uri(&rec, p + u, i - u);
                                if (r < 0)
                                        goto fail;
                                size_t save = i;
                                while (i < n && is_wsp(p[i]))
                                        i++;
                                if (i < n && p[i] == ',') {
                                        i++;
                                        while (i < n && is_wsp(p[i]))
                                                i++;
                                        continue;
                                }
                                i = save;
                                break;
                        }
                } else {
                        size_t v = i;
                        while (i < n && p[i] >= 0x21 && p[i] <= 0x7e && p[i] != '=' && p[i] != ';')
                                i++;
                        if (i == v) {
                                r = -EBADMSG;
                                goto fail;
                        }
                }
        }
        if (!have_rua) {
                r = -EBADMSG;
                goto fail;
        }
        if (rec.n_rua == 0) {
                r = -ENOENT;
                goto fail;
        }
        *ret = rec;
        return 0;
fail:
        tlsrpt_record_done(&rec);
        return r;
}

static int unhex(char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int tlsrpt_mailto_address(const char *uri, char **ret) {
        if (strncasecmp(uri, "mailto:", 7) != 0)
                return -EINVAL;
        const char *s = uri + 7;
        size_t n = strcspn(s, "?");
        char *a = malloc(n + 1);
        if (!a)
                return -ENOMEM;
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (c == '%') {
                        int h = i + 2 < n ? unhex(s[i + 1]) : -1, l = i + 2 < n ? unhex(s[i + 2]) : -1;
                        if (h < 0 || l < 0) {
                                free(a);
                                return -EINVAL;
                        }
                        c = (char) (h * 16 + l);
                        i += 2;
                }
                a[o++] = c;
        }
        a[o] = 0;
        /* One addr-spec: local@domain, printable, no list, no brackets. */
        const char *at = strrchr(a, '@');
        bool ok = o > 0 && o <= 254 && at && at != a && at[1] && strchr(a, ',') == NULL;
        for (size_t i = 0; ok && i < o; i++)
                ok = a[i] > ' ' && a[i] < 0x7f && a[i] != '<' && a[i] != '>' && a[i] != '(' && a[i] != ')' && a[i] != '"';
        if (!ok) {
                free(a);
                return -EINVAL;
        }
        *ret = a;
        return 0;
}

/* ---- the report JSON --------------------------------------------------- */

static json_object *strv_json(char *const *v, size_t n) {
        json_object *a = json_object_new_array();
        for (size_t i = 0; a && i < n; i++)
                json_object_array_add(a, json_object_new_string(v[i]));
        return a;
}

int tlsrpt_report_json(const TlsRptDomain *dom, uint32_t day, const TlsRptMeta *meta, json_object **ret) {
        static const char *const detail_names[7] = {
                "result-type", "sending-mta-ip", "receiving-mx-hostname", "receiving-mx-helo",
                "receiving-ip", "additional-information", "failure-reason-code",
        };
        char d[11], start[32], end[32];

        tlsrpt_day_to_string(day, d);
        snprintf(start, sizeof start, "%sT00:00:00Z", d);
        snprintf(end, sizeof end, "%sT23:59:59Z", d);

        json_object *o = json_object_new_object(), *range = json_object_new_object(), *pols = json_object_new_array();
        if (!o || !range || !pols) {
                json_object_put(o);
                json_object_put(range);
                json_object_put(pols);
                return -ENOMEM;
        }
        json_object_object_add(o, "organization-name", json_object_new_string(meta->organization));
        json_object_object_add(range, "start-datetime", json_object_new_string(start));
        json_object_object_add(range, "end-datetime", json_object_new_string(end));
        json_object_object_add(o, "date-range", range);
        json_object_object_add(o, "contact-info", json_object_new_string(meta->contact));
        json_object_object_add(o, "report-id", json_object_new_string(meta->report_id));
        for (size_t i = 0; i < dom->n_policies; i++) {
                const TlsRptPolicy *p = &dom->policies[i];
                json_object *pr = json_object_new_object(), *pol = json_object_new_object(), *sum = json_object_new_object();
                json_object_object_add(pol, "policy-type", json_object_new_string(tlsrpt_policy_type_to_string(p->type)));
                if (p->type != TLSRPT_POLICY_NONE && p->n_strings > 0)
                        json_object_object_add(pol, "policy-string", strv_json(p->strings, p->n_strings));
                json_object_object_add(pol, "policy-domain", json_object_new_string(dom->name));
                if (p->type == TLSRPT_POLICY_STS && p->n_mx_hosts > 0)
                        json_object_object_add(pol, "mx-host", strv_json(p->mx_hosts, p->n_mx_hosts));
                json_object_object_add(pr, "policy", pol);
                json_object_object_add(sum, "total-successful-session-count", json_object_new_int64((int64_t) p->successes));
                json_object_object_add(sum, "total-failure-session-count", json_object_new_int64((int64_t) p->failures));
                json_object_object_add(pr, "summary", sum);
                if (p->n_rows > 0) {
                        json_object *fd = json_object_new_array();
                        for (size_t k = 0; k < p->n_rows; k++) {
                                json_object *row = json_object_new_object();
                                for (size_t f = 0; f < 7; f++) {
                                        if (!p->rows[k].f[f])
                                                continue;
                                        json_object_object_add(row, detail_names[f], json_object_new_string(p->rows[k].f[f]));
                                }
                                json_object_object_add(row, "failed-session-count",
                                                       json_object_new_int64((int64_t) p->rows[k].count));
                                json_object_array_add(fd, row);
                        }
                        json_object_object_add(pr, "failure-details", fd);
                }
                json_object_array_add(pols, pr);
        }
        json_object_object_add(o, "policies", pols);
        *ret = o;
        return 0;
}

/* ---- gzip ----------------------------------------------------------- */

int tlsrpt_gzip(const void *p, size_t n, uint8_t **ret, size_t *ret_n) {
        z_stream z = {};
        if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
                return -ENOMEM;
        uLong bound = deflateBound(&z, (uLong) n) + 32;
        uint8_t *out = malloc(bound);
        if (!out) {
                deflateEnd(&z);
                return -ENOMEM;
        }
        z.next_in = (Bytef *) p;
        z.avail_in = (uInt) n;
        z.next_out = out;
        z.avail_out = (uInt) bound;
        int zr = deflate(&z, Z_FINISH);
        size_t produced = bound - z.avail_out;
        deflateEnd(&z);
        if (zr != Z_STREAM_END) {
                free(out);
                return -EIO;
        }
        *ret = out;
        *ret_n = produced;
        return 0;
}

int tlsrpt_filename(const char *submitter, const char *domain, uint32_t day, const char *uid, char **ret) {
        long long begin = (long long) day * 86400;
        if (asprintf(ret, "%s!%s!%lld!%lld!%s.json.gz", submitter, domain, begin, begin + 86399, uid) < 0)
                return -ENOMEM;
        return 0;
}

/* ---- the report message ----------------------------------------------------- */

typedef struct Out {
        char *p;
        size_t n, alloc;
        bool oom;
} Out;

_printf_(2, 3) static void out_printf(Out *o, const char *fmt, ...) {
        va_list ap;
        if (o->oom)
                return;
        for (;;) {
                va_start(ap, fmt);
                int k = vsnprintf(o->p ? o->p + o->n : NULL, o->p ? o->alloc - o->n : 0, fmt, ap);
                va_end(ap);
                if (k < 0) {
                        o->oom = true;
                        return;
                }
                if (o->p && o->n + (size_t) k < o->alloc) {
                        o->n += (size_t) k;
                        return;
                }
                size_t want = MAX(o->alloc * 2, o->n + (size_t) k + 256);
                char *np = realloc(o->p, want);
                if (!np) {
                        o->oom = true;
                        return;
                }
                o->p = np;
                o->alloc = want;
        }
}

static void out_base64(Out *o, const uint8_t *p, size_t n) {
        static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        char line[80];
        size_t l = 0;
        for (size_t i = 0; i < n; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16;
                if (i + 1 < n)
                        v |= (uint32_t) p[i + 1] << 8;
                if (i + 2 < n)
                        v |= p[i + 2];
                line[l++] = b64[(v >> 18) & 63];
                line[l++] = b64[(v >> 12) & 63];
                line[l++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
                line[l++] = i + 2 < n ? b64[v & 63] : '=';
                if (l == 76) {
                        out_printf(o, "%.*s\r\n", (int) l, line);
                        l = 0;
                }
        }
        if (l > 0)
                out_printf(o, "%.*s\r\n", (int) l, line);
}

int tlsrpt_mail_build(const TlsRptMail *m, char **ret, size_t *ret_n) {
        Out o = {};
        char date[64], day[11], boundary[64];
        time_t t = (time_t) m->date;
        struct tm tm;

        gmtime_r(&t, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
        tlsrpt_day_to_string(m->day, day);
        /* Base64 and the text part never contain "=_": a safe boundary. */
        snprintf(boundary, sizeof boundary, "=_tlsrpt_%s", m->message_id);
        for (char *c = boundary; *c; c++)
                if (*c == '@')
                        *c = '.';

        out_printf(&o, "From: <%s>\r\n", m->from);
        out_printf(&o, "To: <%s>\r\n", m->to);
        out_printf(&o, "Date: %s\r\n", date);
        out_printf(&o, "Subject: Report Domain: %s Submitter: %s\r\n Report-ID: <%s>\r\n", m->domain, m->submitter,
                   m->report_id);
        out_printf(&o, "Message-ID: <%s>\r\n", m->message_id);
        out_printf(&o, "TLS-Report-Domain: %s\r\n", m->domain);
        out_printf(&o, "TLS-Report-Submitter: %s\r\n", m->submitter);
        out_printf(&o, "Auto-Submitted: auto-generated\r\n");
        out_printf(&o, "TLS-Required: No\r\n");
        out_printf(&o, "MIME-Version: 1.0\r\n");
        out_printf(&o, "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n boundary=\"%s\"\r\n", boundary);
        out_printf(&o, "\r\n");
        out_printf(&o, "This is a multipart message in MIME format.\r\n\r\n");
        out_printf(&o, "--%s\r\n", boundary);
        out_printf(&o, "Content-Type: text/plain; charset=us-ascii\r\n");
        out_printf(&o, "Content-Transfer-Encoding: 7bit\r\n\r\n");
        out_printf(&o, "This is an aggregate TLS report (RFC 8460) from %s\r\n"
                       "for the policy domain %s, covering %s 00:00:00 to 23:59:59 UTC.\r\n"
                       "The report is the attached gzip-compressed JSON file.\r\n\r\n",
                   m->submitter, m->domain, day);
        out_printf(&o, "--%s\r\n", boundary);
        out_printf(&o, "Content-Type: application/tlsrpt+gzip;\r\n name=\"%s\"\r\n", m->filename);
        out_printf(&o, "Content-Transfer-Encoding: base64\r\n");
        out_printf(&o, "Content-Disposition: attachment;\r\n filename=\"%s\"\r\n\r\n", m->filename);
        out_base64(&o, m->gz, m->gz_len);
        out_printf(&o, "\r\n--%s--\r\n", boundary);
        if (o.oom) {
                free(o.p);
                return -ENOMEM;
        }
        *ret = o.p;
        *ret_n = o.n;
        return 0;
}
