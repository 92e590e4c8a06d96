/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dns.h"
#include "io.h"
#include "log.h"
#include "smtpd-policy.h"
#include "smtpd-redis.h"
#include "smtpd-spamd.h"
#include "smtpd.h"

/* The header block we read for the Mail object and header edits. */
#define HEADER_BLOCK_MAX (1024U * 1024U)
#define HEADER_FIELDS_MAX 1000U

struct SmtpdPolicyTask {
        Manager *manager;
        PolicyRun *run;
        SmtpdPolicyDone done;
        void *userdata;
        bool starting;                 /* inside smtpd_policy_start() */
        bool finished;

        sd_event_source *deadline;
        sd_event_source *call_timer;   /* the suspended call's own timeout */
        DnsQuery *dns;
        AuthVerifyRequest *verify;
        SmtpdRedisRequest *redis;
        SpamdScan *spamd;
        HttpRequest *http;
        char http_host[DNS_NAME_TEXT_MAX]; /* http(): the URL's host name being resolved */
        uint16_t http_port;
        bool http_aaaa;                /* http(): the AAAA query is under way (no A records) */
        int message_fd;                /* eod: the transaction's message (ours, a dup), else -1 */
        bool none_on_failure;          /* the pending call answers none, not ["error" => ...], on failure */
        bool sa_done;                  /* ScanSA() memoised for this transaction (one eod run) */
        PolicyValue *sa_result;
        bool rate_count_only;
        uint16_t dns_type;
        bool dnsbl;
        char trace[32];                /* the session id while tracing, else "" */
};

int smtpd_policy_load(const char *path, PolicyGeneration **ret) {
        PolicyDiags diags = {};
        int r = policy_generation_load(path, NULL, &diags, ret);
        policy_diags_sort(&diags);
        for (size_t i = 0; i < diags.n; i++) {
                char line[1024];
                policy_diag_format(&diags.items[i], line, sizeof line);
                if (diags.items[i].level == POLICY_DIAG_ERROR)
                        log_error("%s", line);
                else
                        log_warning("%s", line);
        }
        if (r < 0 && diags.n_errors == 0)
                log_error_errno(r, "Policy %s: %m", path);
        policy_diags_done(&diags);
        return r;
}

/* ---- answering suspended calls ----------------------------------------- */

static PolicyValue *error_value(const char *text) {
        PolicyValue *a = policy_array_new();
        PolicyValue *s = policy_string_new_cstr(text);
        if (!a || !s || policy_array_set_str(a, "error", s) < 0) {
                policy_value_unref(a);
                a = NULL;
        }
        policy_value_unref(s);
        return a;
}

static void task_step(SmtpdPolicyTask *t);

/* Tracing: every lookup the script makes, with its arguments (a password
 * shown as "***") and its answer, and the verdict, as journal entries with
 * the session's id. */
static void trace_log(SmtpdPolicyTask *t, const char *format, ...) _printf_(2, 3);
static void trace_log(SmtpdPolicyTask *t, const char *format, ...) {
        char msg[2048], id[64];
        va_list ap;
        va_start(ap, format);
        vsnprintf(msg, sizeof msg, format, ap);
        va_end(ap);
        snprintf(id, sizeof id, "HALYARD_SESSION_ID=%s", t->trace);
        log_full(LOG_INFO, 0, (const char *const[]){ id, "HALYARD_POLICY_TRACE=1", NULL }, "%s: policy trace: %s",
                 t->trace, msg);
}

static void trace_value(PolicyValue *v, char *buf, size_t n) {
        _cleanup_free_ char *j = NULL;
        if (policy_value_to_json_string(v, &j) < 0)
                snprintf(buf, n, "?");
        else
                snprintf(buf, n, "%.*s%s", (int) MIN(strlen(j), n - 5), j, strlen(j) > n - 5 ? "..." : "");
}

static void trace_call(SmtpdPolicyTask *t, const PolicyCall *c) {
        char args[1024] = "", one[300];
        for (size_t i = 0; i < c->n_args; i++) {
                if (strcmp(c->name, "passwd_verify") == 0 && i == 2)
                        snprintf(one, sizeof one, "\"***\"");
                else
                        trace_value(c->args[i], one, sizeof one);
                size_t k = strlen(args);
                snprintf(args + k, sizeof args - k, "%s%s", i ? ", " : "", one);
        }
        trace_log(t, "%s:%u:%u: %s(%s)", c->file ?: "?", c->line, c->col, c->name, args);
}

static void trace_answer(SmtpdPolicyTask *t, PolicyValue *v) {
        char buf[1024];
        const PolicyCall *c = policy_run_pending(t->run);
        trace_value(v, buf, sizeof buf);
        trace_log(t, "%s:%u:%u: %s -> %s", c && c->file ? c->file : "?", c ? c->line : 0, c ? c->col : 0,
                  c ? c->name : "?", buf);
}

static void task_cancel_io(SmtpdPolicyTask *t) {
        if (t->dns) {
                dns_query_cancel(t->dns);
                t->dns = NULL;
        }
        if (t->verify) {
                auth_verify_cancel(t->manager->verifier, t->verify);
                t->verify = NULL;
        }
        if (t->redis) {
                smtpd_redis_cancel(t->redis);
                t->redis = NULL;
        }
        t->spamd = spamd_scan_cancel(t->spamd);
        if (t->http) {
                http_request_cancel(t->http);
                t->http = NULL;
        }
        if (t->call_timer)
                (void) sd_event_source_set_enabled(t->call_timer, SD_EVENT_OFF);
}

/* The answer to the pending call; the run goes on. Takes v. */
static void task_answer(SmtpdPolicyTask *t, PolicyValue *v) {
        task_cancel_io(t);
        if (t->trace[0] && v)
                trace_answer(t, v);
        if (!v)
                (void) policy_run_abort(t->run, "out of memory");
        else if (policy_run_resume(t->run, v) < 0)
                (void) policy_run_abort(t->run, "resume failed");
        policy_value_unref(v);
        task_step(t);
}

static void scan_sa_answer(SmtpdPolicyTask *t, int result, double score, const char *why);

static int on_call_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        SmtpdPolicyTask *t = userdata;
        if (t->spamd)
                scan_sa_answer(t, -ETIMEDOUT, 0, "no answer from spamd in time");
        else if (t->none_on_failure)
                task_answer(t, policy_value_ref(policy_none()));
        else
                task_answer(t, error_value("timeout"));
        return 0;
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        SmtpdPolicyTask *t = userdata;
        task_cancel_io(t);
        (void) policy_run_abort(t->run, "policy deadline exceeded");
        task_step(t);
        return 0;
}

static const char *dns_error_text(DnsStatus st) {
        switch (st) {
        case DNS_STATUS_NXDOMAIN: return "nxdomain";
        case DNS_STATUS_TIMEOUT: return "timeout";
        case DNS_STATUS_SERVFAIL: return "servfail";
        default: return "error";
        }
}

static int record_to_value(const DnsRecord *rec, PolicyValue **ret) {
        char buf[INET6_ADDRSTRLEN + 16];
        switch (rec->type) {
        case DNS_TYPE_A:
                inet_ntop(AF_INET, &rec->a, buf, sizeof buf);
                *ret = policy_string_new_cstr(buf);
                break;
        case DNS_TYPE_AAAA:
                inet_ntop(AF_INET6, &rec->aaaa, buf, sizeof buf);
                *ret = policy_string_new_cstr(buf);
                break;
        case DNS_TYPE_TXT:
                *ret = policy_string_new(rec->txt.text, rec->txt.len);
                break;
        case DNS_TYPE_MX: {
                PolicyValue *a = policy_array_new(), *pref = policy_number_new(rec->mx.preference),
                            *host = policy_string_new_cstr(rec->mx.exchange);
                int r = a && pref && host ? policy_array_set_str(a, "priority", pref) : -ENOMEM;
                if (r >= 0)
                        r = policy_array_set_str(a, "host", host);
                policy_value_unref(pref);
                policy_value_unref(host);
                if (r < 0) {
                        policy_value_unref(a);
                        return r;
                }
                *ret = a;
                break;
        }
        default:
                return -EOPNOTSUPP;
        }
        return *ret ? 0 : -ENOMEM;
}

static void on_dns(DnsQuery *q, const DnsResult *res, void *userdata) {
        SmtpdPolicyTask *t = userdata;
        PolicyValue *v = NULL;
        int r = 0;

        t->dns = NULL;
        if (t->dnsbl) {
                /* Not listed is an answer, not a failure. */
                v = policy_array_new();
                if (!v) {
                        task_answer(t, NULL);
                        return;
                }
                if (res->status == DNS_STATUS_NXDOMAIN || res->status == DNS_STATUS_NODATA)
                        r = policy_array_set_str(v, "listed", policy_bool(false));
                else if (res->status == DNS_STATUS_OK) {
                        PolicyValue *codes = policy_array_new();
                        r = codes ? policy_array_set_str(v, "listed", policy_bool(true)) : -ENOMEM;
                        for (size_t i = 0; r >= 0 && i < res->n_records; i++) {
                                PolicyValue *c = NULL;
                                r = record_to_value(&res->records[i], &c);
                                if (r >= 0)
                                        r = policy_array_push(codes, c);
                                policy_value_unref(c);
                        }
                        if (r >= 0)
                                r = policy_array_set_str(v, "codes", codes);
                        policy_value_unref(codes);
                } else {
                        policy_value_unref(v);
                        v = error_value(dns_error_text(res->status));
                }
        } else if (res->status == DNS_STATUS_OK || res->status == DNS_STATUS_NODATA) {
                PolicyValue *list = policy_array_new();
                v = policy_array_new();
                r = list && v ? 0 : -ENOMEM;
                for (size_t i = 0; r >= 0 && i < res->n_records; i++) {
                        PolicyValue *c = NULL;
                        r = record_to_value(&res->records[i], &c);
                        if (r >= 0)
                                r = policy_array_push(list, c);
                        policy_value_unref(c);
                }
                if (r >= 0)
                        r = policy_array_set_str(v, "result", list);
                if (r >= 0 && res->security == DNS_SECURE)
                        r = policy_array_set_str(v, "dnssec", policy_bool(true));
                policy_value_unref(list);
        } else
                v = error_value(dns_error_text(res->status));
        if (r < 0) {
                policy_value_unref(v);
                v = NULL;
        }
        task_answer(t, v);
}

static const char *arg_string(const PolicyCall *c, size_t i) {
        if (i >= c->n_args || policy_value_type(c->args[i]) != POLICY_TYPE_STRING)
                return NULL;
        return policy_value_string(c->args[i], NULL);
}

static double arg_number(const PolicyCall *c, size_t i, double def) {
        if (i >= c->n_args || policy_value_type(c->args[i]) != POLICY_TYPE_NUMBER)
                return def;
        return policy_value_number(c->args[i]);
}

/* The DNSBL name for ip under zone: reversed octets, or nibbles for IPv6. */
static int dnsbl_name(const char *ip, const char *zone, char *buf, size_t size) {
        struct in_addr a4;
        struct in6_addr a6;
        int n;
        if (inet_pton(AF_INET, ip, &a4) == 1) {
                const unsigned char *b = (const unsigned char *) &a4;
                n = snprintf(buf, size, "%u.%u.%u.%u.%s", b[3], b[2], b[1], b[0], zone);
        } else if (inet_pton(AF_INET6, ip, &a6) == 1) {
                size_t k = 0;
                for (int i = 15; i >= 0 && k + 4 < size; i--) {
                        static const char hex[] = "0123456789abcdef";
                        buf[k++] = hex[a6.s6_addr[i] & 0xf];
                        buf[k++] = '.';
                        buf[k++] = hex[a6.s6_addr[i] >> 4];
                        buf[k++] = '.';
                }
                n = snprintf(buf + k, size - k, "%s", zone);
                n = n < 0 ? n : (int) (k + (size_t) n);
        } else
                return -EINVAL;
        return n < 0 || (size_t) n >= size ? -ENAMETOOLONG : 0;
}

static int start_dns(SmtpdPolicyTask *t, const char *name, uint16_t type) {
        Manager *m = t->manager;
        if (!m->resolver)
                return -ENOTCONN;
        t->dns_type = type;
        return dns_query(m->resolver, name, type, on_dns, t, &t->dns);
}

static void on_redis_rate(int result, uint64_t events, void *userdata) {
        SmtpdPolicyTask *t = userdata;
        t->redis = NULL;
        if (result < 0)
                task_answer(t, policy_value_ref(policy_none())); /* Halon: none on error */
        else if (t->rate_count_only)
                task_answer(t, policy_number_new((double) events));
        else
                task_answer(t, policy_value_ref(policy_bool(result > 0)));
}

static uint64_t realtime_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

static void on_verified(int result, const char *user, void *userdata) {
        SmtpdPolicyTask *t = userdata;
        t->verify = NULL;
        task_answer(t, result < 0 ? policy_value_ref(policy_none()) : policy_value_ref(policy_bool(result > 0)));
}

/* ScanSA(): spamd's score, or none when there is none to be had (spamd
 * down, slow, refusing, or the message over max_size), which makes
 * `ScanSA() > 5` false: content scoring fails open, as the note wants.
 * The outcome is memoised for the transaction. */
static void scan_sa_answer(SmtpdPolicyTask *t, int result, double score, const char *why) {
        t->spamd = spamd_scan_cancel(t->spamd);
        if (result < 0)
                log_warning("%s%sScanSA(): %s (%s), answering none", t->trace, t->trace[0] ? ": " : "", why,
                            strerror(-result));
        policy_value_unref(t->sa_result);
        t->sa_result = result < 0 ? policy_value_ref(policy_none()) : policy_number_new(score);
        t->sa_done = t->sa_result != NULL;
        task_answer(t, policy_value_ref(t->sa_result));
}

static void on_spamd(int result, double score, const char *why, void *userdata) {
        SmtpdPolicyTask *t = userdata;
        t->spamd = NULL;
        scan_sa_answer(t, result, score, why);
}

/* Starts the scan; 1 when started, 0 with *ret_now. Options host (an
 * address as SpamdAddress= takes), port and max_size override the
 * configuration. */
static int scan_sa_start(SmtpdPolicyTask *t, const PolicyCall *c, PolicyValue **ret_now) {
        Manager *m = t->manager;
        PolicyValue *opts = c->n_args > 0 && policy_value_type(c->args[0]) == POLICY_TYPE_ARRAY ? c->args[0] : NULL;
        PolicyValue *hv = opts ? policy_array_get_str(opts, "host") : NULL, *pv = opts ? policy_array_get_str(opts, "port") : NULL,
                    *sv = opts ? policy_array_get_str(opts, "max_size") : NULL;
        const char *address = hv && policy_value_type(hv) == POLICY_TYPE_STRING ? policy_value_string(hv, NULL)
                                                                                : m->settings.spamd_address;
        double port = pv && policy_value_type(pv) == POLICY_TYPE_NUMBER ? policy_value_number(pv) : 0;
        double max = sv && policy_value_type(sv) == POLICY_TYPE_NUMBER ? policy_value_number(sv) : 0;
        const char *why = NULL;
        int r;

        if (t->sa_done) {
                *ret_now = policy_value_ref(t->sa_result);
                return 0;
        }
        if (t->message_fd < 0) {
                r = -EBADF;
                why = "no message";
        } else if (port < 0 || port > 65535 || max < 0 || max > (double) UINT32_MAX) {
                r = -EINVAL;
                why = "bad port or max_size option";
        } else {
                r = spamd_scan_start(m->event, address, (unsigned) port, t->message_fd, (uint64_t) max, on_spamd, t, &t->spamd);
                why = r == -EFBIG ? "message larger than max_size, not scanned" : r == -EINVAL ? "bad spamd address" : "cannot connect to spamd";
        }
        if (r < 0) {
                /* Answered at once: scan_sa_answer() would step the run from
                 * inside task_dispatch(), so only record and log here. */
                log_full(r == -EFBIG ? LOG_INFO : LOG_WARNING, 0, NULL, "%s%sScanSA(): %s (%s), answering none",
                         t->trace, t->trace[0] ? ": " : "", why, strerror(-r));
                t->sa_result = policy_value_ref(policy_none());
                t->sa_done = true;
                *ret_now = policy_value_ref(policy_none());
                return 0;
        }
        return 1;
}

/* ---- http() ------------------------------------------------------------ */

#define HTTP_POLICY_MAX_SIZE_DEFAULT (256U * 1024U)

/* ["status" => 200, "body" => "...", "json" => ... (when the body is JSON),
 * "content_type" => ..., "location" => ... (a redirect's)], or
 * ["error" => "timeout" | text]: a status of 404 or 500 is an answer, not
 * an error. */
static void on_http(HttpRequest *req, const HttpResponse *resp, void *userdata) {
        SmtpdPolicyTask *t = userdata;
        t->http = NULL;
        if (resp->result < 0) {
                char text[300];
                snprintf(text, sizeof text, "%s", resp->result == -ETIMEDOUT ? "timeout" : resp->error ?: strerror(-resp->result));
                task_answer(t, error_value(text));
                return;
        }
        PolicyValue *v = policy_array_new(), *status = policy_number_new((double) resp->status),
                    *body = policy_string_new(resp->body, resp->body_len), *json = NULL;
        int r = v && status && body ? policy_array_set_str(v, "status", status) : -ENOMEM;
        if (r >= 0)
                r = policy_array_set_str(v, "body", body);
        if (r >= 0 && resp->content_type) {
                PolicyValue *ct = policy_string_new_cstr(resp->content_type);
                r = ct ? policy_array_set_str(v, "content_type", ct) : -ENOMEM;
                policy_value_unref(ct);
        }
        if (r >= 0 && resp->location) {
                PolicyValue *loc = policy_string_new_cstr(resp->location);
                r = loc ? policy_array_set_str(v, "location", loc) : -ENOMEM;
                policy_value_unref(loc);
        }
        if (r >= 0 && resp->body_len > 0 && resp->content_type && strstr(resp->content_type, "json")) {
                json_tokener *tok = json_tokener_new_ex(POLICY_JSON_DEPTH_MAX);
                json_object *j = tok ? json_tokener_parse_ex(tok, resp->body, (int) resp->body_len) : NULL;
                if (tok && json_tokener_get_error(tok) == json_tokener_success &&
                    json_tokener_get_parse_end(tok) == resp->body_len && policy_value_from_json(j, &json) >= 0)
                        r = policy_array_set_str(v, "json", json);
                json_object_put(j);
                if (tok)
                        json_tokener_free(tok);
        }
        policy_value_unref(status);
        policy_value_unref(body);
        policy_value_unref(json);
        if (r < 0) {
                policy_value_unref(v);
                v = NULL;
        }
        task_answer(t, v);
}

/* The URL with $1...$9 replaced by the URL-encoded arguments (scalars as
 * string() shows them). A $ not followed by a digit stays. */
static int http_url(const char *url, PolicyValue *args, char **ret, const char **ret_why) {
        size_t n = strlen(url), len = 0, cap = n + 1;
        _cleanup_free_ char *out = malloc(cap);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const char *piece = url + i;
                size_t plen = 1;
                _cleanup_free_ char *enc = NULL;
                if (url[i] == '$' && url[i + 1] >= '1' && url[i + 1] <= '9') {
                        size_t k = (size_t) (url[i + 1] - '1');
                        PolicyValue *a = args && policy_value_type(args) == POLICY_TYPE_ARRAY && k < policy_array_size(args)
                                                 ? policy_array_value_at(args, k) : NULL;
                        _cleanup_(policy_value_unrefp) PolicyValue *sv = NULL;
                        size_t sl;
                        if (!a || policy_value_to_string(a, &sv) < 0) {
                                *ret_why = a ? "http(): a URL argument is not a scalar" : "http(): no argument for a $N in the URL";
                                return -EINVAL;
                        }
                        const char *str = policy_value_string(sv, &sl);
                        enc = http_url_encode(str, sl);
                        if (!enc)
                                return -ENOMEM;
                        piece = enc;
                        plen = strlen(enc);
                        i++;
                }
                if (len + plen + 1 > cap) {
                        if (len + plen + 1 > 64 * 1024) {
                                *ret_why = "http(): URL too long";
                                return -E2BIG;
                        }
                        cap = MAX(cap * 2, len + plen + 1);
                        char *o = realloc(out, cap);
                        if (!o)
                                return -ENOMEM;
                        out = o;
                }
                memcpy(out + len, piece, plen);
                len += plen;
        }
        out[len] = 0;
        *ret = TAKE_PTR(out);
        return 0;
}

/* The host of an http(s) URL when it is a name (not an address literal),
 * and its port. */
static bool url_host_name(const char *url, char *host, size_t size, uint16_t *ret_port) {
        bool https = strncasecmp(url, "https://", 8) == 0;
        const char *p = url + (https ? 8 : strncasecmp(url, "http://", 7) == 0 ? 7 : 0);
        size_t n = strcspn(p, "/?#");
        const char *at = memchr(p, '@', n);
        struct in_addr a4;
        if (p == url)
                return false;
        if (at) {
                n -= (size_t) (at + 1 - p);
                p = at + 1;
        }
        if (n == 0 || p[0] == '[')
                return false; /* IPv6 literal */
        const char *colon = memchr(p, ':', n);
        size_t hl = colon ? (size_t) (colon - p) : n;
        unsigned long port = https ? 443 : 80;
        if (colon) {
                char *e;
                port = strtoul(colon + 1, &e, 10);
                if (e != p + n || port == 0 || port > 65535)
                        return false;
        }
        if (hl == 0 || hl >= size)
                return false;
        memcpy(host, p, hl);
        host[hl] = 0;
        if (inet_pton(AF_INET, host, &a4) == 1)
                return false;
        *ret_port = (uint16_t) port;
        return true;
}

static void on_http_dns(DnsQuery *q, const DnsResult *res, void *userdata);

/* Starts the request of c, the pending http() call: 1 when under way
 * (the request, or first the name's addresses through our resolver, so
 * that http() sees the DNS every other lookup sees), else 0 and *why.
 * resolve: the addresses found, as CURLOPT_RESOLVE takes them. */
static int http_launch(SmtpdPolicyTask *t, const PolicyCall *c, const char *resolve, const char **ret_why) {
        Manager *m = t->manager;
        const char *url = arg_string(c, 0), *why = "http(): the URL must be a string";
        PolicyValue *opts = c->n_args > 1 && policy_value_type(c->args[1]) == POLICY_TYPE_ARRAY ? c->args[1] : NULL;
        PolicyValue *args = c->n_args > 2 ? c->args[2] : NULL;
        _cleanup_free_ char *full = NULL;
        const char *headers[HTTP_HEADERS_MAX + 1] = {};
        char *owned[HTTP_HEADERS_MAX] = {};
        size_t n_headers = 0;
        int r = url ? http_url(url, args, &full, &why) : -EINVAL;

        HttpRequestOptions o = {
                .url = full,
                .timeout_usec = (uint64_t) (c->timeout_ms ? c->timeout_ms : 5000) * 1000ULL,
                .max_size = HTTP_POLICY_MAX_SIZE_DEFAULT,
        };
        if (r >= 0 && opts) {
                PolicyValue *mv = policy_array_get_str(opts, "method"), *bv = policy_array_get_str(opts, "body"),
                            *sv = policy_array_get_str(opts, "max_size"), *tv = policy_array_get_str(opts, "tls_verify"),
                            *hv = policy_array_get_str(opts, "headers");
                if (mv && policy_value_type(mv) == POLICY_TYPE_STRING)
                        o.method = policy_value_string(mv, NULL);
                if (bv && policy_value_type(bv) == POLICY_TYPE_STRING)
                        o.body = policy_value_string(bv, &o.body_len);
                if (sv && policy_value_type(sv) == POLICY_TYPE_NUMBER && policy_value_number(sv) >= 1)
                        o.max_size = (size_t) MIN(policy_value_number(sv), (double) POLICY_STRING_MAX);
                if (tv && policy_value_type(tv) == POLICY_TYPE_BOOL)
                        o.insecure = !policy_value_bool(tv);
                /* ["X-A: b", ...] or ["X-A" => "b", ...] */
                for (size_t i = 0; r >= 0 && hv && policy_value_type(hv) == POLICY_TYPE_ARRAY && i < policy_array_size(hv); i++) {
                        PolicyValue *k = policy_array_key_at(hv, i), *v = policy_array_value_at(hv, i);
                        if (n_headers >= HTTP_HEADERS_MAX || policy_value_type(v) != POLICY_TYPE_STRING) {
                                why = "http(): too many headers, or one is not a string";
                                r = -EINVAL;
                        } else if (policy_value_type(k) == POLICY_TYPE_STRING) {
                                if (asprintf(&owned[n_headers], "%s: %s", policy_value_string(k, NULL), policy_value_string(v, NULL)) < 0) {
                                        owned[n_headers] = NULL;
                                        r = -ENOMEM;
                                } else
                                        headers[n_headers] = owned[n_headers], n_headers++;
                        } else
                                headers[n_headers++] = policy_value_string(v, NULL);
                }
                o.headers = headers;
        }
        if (r >= 0 && !resolve && m->resolver && url_host_name(full, t->http_host, sizeof t->http_host, &t->http_port)) {
                t->http_aaaa = false;
                r = dns_query(m->resolver, t->http_host, DNS_TYPE_A, on_http_dns, t, &t->dns);
                why = NULL;
        } else if (r >= 0) {
                const char *const rv[] = { resolve, NULL };
                o.resolve = resolve ? rv : NULL;
                if (!m->http)
                        r = http_client_new(m->event, &m->http);
                if (r >= 0)
                        r = http_request_start(m->http, &o, on_http, t, &t->http);
                why = r == -EINVAL ? "http(): bad URL, method or header" : r == -EOPNOTSUPP ? "http(): libcurl is not available" : NULL;
        }
        for (size_t i = 0; i < n_headers; i++)
                free(owned[i]);
        if (r < 0) {
                *ret_why = why ?: strerror(-r);
                return 0;
        }
        return 1;
}

static void on_http_dns(DnsQuery *q, const DnsResult *res, void *userdata) {
        SmtpdPolicyTask *t = userdata;
        const PolicyCall *c = policy_run_pending(t->run);
        const char *why = NULL;
        char resolve[DNS_NAME_TEXT_MAX + 16 + 8 * (INET6_ADDRSTRLEN + 1)];
        int k;

        t->dns = NULL;
        if (res->status == DNS_STATUS_NODATA && !t->http_aaaa) {
                t->http_aaaa = true;
                if (dns_query(t->manager->resolver, t->http_host, DNS_TYPE_AAAA, on_http_dns, t, &t->dns) >= 0)
                        return;
                t->dns = NULL;
        }
        if (res->status != DNS_STATUS_OK || res->n_records == 0 || !c) {
                char text[100];
                snprintf(text, sizeof text, "dns: %s", res->status == DNS_STATUS_NODATA ? "no address" : dns_error_text(res->status));
                task_answer(t, error_value(text));
                return;
        }
        k = snprintf(resolve, sizeof resolve, "%s:%u:", t->http_host, t->http_port);
        for (size_t i = 0; i < res->n_records && i < 8 && k > 0 && (size_t) k < sizeof resolve; i++) {
                char a[INET6_ADDRSTRLEN + 2];
                if (res->records[i].type == DNS_TYPE_A)
                        inet_ntop(AF_INET, &res->records[i].a, a, sizeof a);
                else
                        snprintf(a, sizeof a, "["), inet_ntop(AF_INET6, &res->records[i].aaaa, a + 1, sizeof a - 2),
                                strcat(a, "]");
                k += snprintf(resolve + k, sizeof resolve - (size_t) k, "%s%s", i ? "," : "", a);
        }
        if (http_launch(t, c, resolve, &why) == 0)
                task_answer(t, error_value(why));
}

/* Starts http(url[, options[, args]]); 1 when started, 0 with *ret_now. */
static int http_start(SmtpdPolicyTask *t, const PolicyCall *c, PolicyValue **ret_now) {
        const char *why = NULL;
        if (http_launch(t, c, NULL, &why) > 0)
                return 1;
        *ret_now = error_value(why);
        return 0;
}

/* Starts the pending call, or answers it at once. Returns 1 when an answer
 * will come through a callback. */
static int task_dispatch(SmtpdPolicyTask *t, const PolicyCall *c, PolicyValue **ret_now) {
        Manager *m = t->manager;
        char buf[DNS_NAME_TEXT_MAX];
        int r;

        *ret_now = NULL;
        t->dnsbl = false;
        t->none_on_failure = false;
        if (strcmp(c->name, "dns_query") == 0) {
                const char *name = arg_string(c, 0), *type = "A";
                PolicyValue *tv = c->n_args > 1 ? policy_array_get_str(c->args[1], "type") : NULL;
                if (tv && policy_value_type(tv) == POLICY_TYPE_STRING)
                        type = policy_value_string(tv, NULL);
                uint16_t qt = strcasecmp(type, "A") == 0 ? DNS_TYPE_A : strcasecmp(type, "AAAA") == 0 ? DNS_TYPE_AAAA :
                              strcasecmp(type, "MX") == 0 ? DNS_TYPE_MX : strcasecmp(type, "TXT") == 0 ? DNS_TYPE_TXT : 0;
                if (!name || qt == 0) {
                        *ret_now = error_value(qt == 0 ? "unsupported record type" : "bad name");
                        return 0;
                }
                r = start_dns(t, name, qt);
        } else if (strcmp(c->name, "dnsbl") == 0) {
                const char *ip = arg_string(c, 0), *zone = arg_string(c, 1);
                if (!ip || !zone || dnsbl_name(ip, zone, buf, sizeof buf) < 0) {
                        *ret_now = error_value("bad address or zone");
                        return 0;
                }
                t->dnsbl = true;
                r = start_dns(t, buf, DNS_TYPE_A);
        } else if (strcmp(c->name, "rate") == 0) {
                const char *ns = arg_string(c, 0), *key = arg_string(c, 1);
                double count = arg_number(c, 2, -1), interval = arg_number(c, 3, 0);
                if (!key && c->n_args > 1 && policy_value_type(c->args[1]) == POLICY_TYPE_NUMBER) {
                        policy_number_format(policy_value_number(c->args[1]), buf);
                        key = buf;
                }
                PolicyValue *opts = c->n_args > 4 ? c->args[4] : NULL;
                PolicyValue *shared = opts ? policy_array_get_str(opts, "shared") ?: policy_array_get_str(opts, "sync") : NULL;
                bool valid = ns && key && count >= 0 && interval >= 0.001 && interval < 1e7;
                if (valid && m->redis && shared && policy_value_truthy(shared)) {
                        /* Counted across every smtpd host that shares the Redis. */
                        t->rate_count_only = count == 0;
                        r = smtpd_redis_rate(m->redis, ns, key, (uint64_t) count, (uint64_t) (interval * 1e6),
                                             realtime_usec(), on_redis_rate, t, &t->redis);
                        if (r < 0) {
                                *ret_now = policy_value_ref(policy_none());
                                return 0;
                        }
                        goto started;
                }
                uint64_t events = 0;
                r = valid
                            ? smtpd_rate_hit(m->rate, ns, key, (uint64_t) count, (uint64_t) (interval * 1e6),
                                             manager_now_usec(m), &events)
                            : -EINVAL;
                if (r < 0)
                        *ret_now = policy_value_ref(policy_none()); /* Halon: none on error */
                else if (count == 0)
                        *ret_now = policy_number_new((double) events);
                else
                        *ret_now = policy_value_ref(policy_bool(r > 0));
                return 0;
        } else if (strcmp(c->name, "passwd_verify") == 0) {
                /* The one password file smtpd holds: the credential named by
                 * AuthPasswordFile= (with or without "credential:"). */
                const char *file = arg_string(c, 0), *user = arg_string(c, 1), *pass = arg_string(c, 2);
                if (file && strncmp(file, "credential:", 11) == 0)
                        file += 11;
                if (!m->passwd || !file || strcmp(file, m->settings.passwd_name) != 0) {
                        *ret_now = policy_value_ref(policy_none());
                        return 0;
                }
                if (!user || !pass) {
                        *ret_now = policy_value_ref(policy_bool(false));
                        return 0;
                }
                r = auth_verify(m->verifier, m->passwd, user, pass, on_verified, t, &t->verify);
        } else if (strcmp(c->name, "http") == 0) {
                if (http_start(t, c, ret_now) == 0)
                        return 0;
                goto started;
        } else if (strcmp(c->name, "ScanSA") == 0) {
                if (scan_sa_start(t, c, ret_now) == 0)
                        return 0;
                t->none_on_failure = true;
                goto started;
        } else if (strcmp(c->name, "ScanRPD") == 0) {
                /* HSL's ScanRPD asked Cyren's RPD; there is no such service
                 * here. none is what the language gives for a classifier
                 * that cannot answer (so `ScanRPD() > 5` is false). */
                if (t->trace[0])
                        trace_log(t, "ScanRPD(): no RPD classifier is available to halyard-smtpd, answering none");
                *ret_now = policy_value_ref(policy_none());
                return 0;
        } else if (smtpd_arc_policy_builtin(c->name)) {
                /* arcd's builtins (smtpd-arc.c), for the session the task
                 * runs for; an answer that waits comes before the call's
                 * timeout. */
                r = smtpd_arc_policy_call(t->userdata, c, task_answer, t, ret_now);
                if (r == 0)
                        return 0;
        } else {
                /* What this build does not serve yet (arcd, HTTP, spamd...):
                 * a failed lookup, as the language defines it. */
                char text[160];
                snprintf(text, sizeof text, "%s is not available in halyard-smtpd yet", c->name);
                *ret_now = error_value(text);
                return 0;
        }
        if (r < 0) {
                *ret_now = error_value(strerror(-r));
                return 0;
        }
started:;
        uint64_t when = manager_now_usec(m) + (uint64_t) (c->timeout_ms ? c->timeout_ms : 5000) * 1000ULL;
        r = t->call_timer ? sd_event_source_set_time(t->call_timer, when)
                          : sd_event_add_time(m->event, &t->call_timer, CLOCK_MONOTONIC, when, 0, on_call_timeout, t);
        if (r >= 0)
                r = sd_event_source_set_enabled(t->call_timer, SD_EVENT_ONESHOT);
        if (r < 0) {
                task_cancel_io(t);
                *ret_now = error_value(strerror(-r));
                return 0;
        }
        return 1;
}

static void task_step(SmtpdPolicyTask *t) {
        for (;;) {
                int r = policy_run_step(t->run);
                if (r == POLICY_RUN_SUSPENDED) {
                        PolicyValue *now = NULL;
                        if (t->trace[0])
                                trace_call(t, policy_run_pending(t->run));
                        if (task_dispatch(t, policy_run_pending(t->run), &now) > 0)
                                return; /* a callback steps on */
                        if (t->trace[0] && now)
                                trace_answer(t, now);
                        if (!now)
                                (void) policy_run_abort(t->run, "out of memory");
                        else
                                (void) policy_run_resume(t->run, now);
                        policy_value_unref(now);
                        continue;
                }
                break; /* done (or -ENOMEM, which also ends the run with the tempfail) */
        }
        t->finished = true;
        task_cancel_io(t);
        if (t->trace[0]) {
                const PolicyResult *res = policy_run_result(t->run);
                trace_log(t, "%s: %s%s %u %s%s%s%s%s, %llu steps", res->at ?: "end of handler",
                          policy_verdict_to_string(res->verdict), res->by_default ? " (by default)" : "",
                          res->code, res->enhanced, res->reason ? " " : "", res->reason ?: "",
                          res->error ? ": " : "", res->error ?: "", (unsigned long long) res->steps);
        }
        (void) sd_event_source_set_enabled(t->deadline, SD_EVENT_OFF);
        if (!t->starting && t->done)
                t->done(t, policy_run_result(t->run), t->userdata);
}

int smtpd_policy_start(Manager *m, PolicyGeneration *g, PolicyPhase phase, const PolicyRunParams *params, const char *trace,
                       SmtpdPolicyDone done, void *userdata, SmtpdPolicyTask **ret) {
        return smtpd_policy_start_with_message(m, g, phase, params, -1, trace, done, userdata, ret);
}

int smtpd_policy_start_with_message(Manager *m, PolicyGeneration *g, PolicyPhase phase, const PolicyRunParams *params,
                                    int message_fd, const char *trace, SmtpdPolicyDone done, void *userdata,
                                    SmtpdPolicyTask **ret) {
        PolicyRunParams p = *params;
        SmtpdPolicyTask *t = calloc(1, sizeof *t);
        int r;

        if (!t)
                return -ENOMEM;
        t->manager = m;
        t->message_fd = -1;
        if (message_fd >= 0) {
                /* Our own descriptor: the session may swap its memfd while
                 * a lookup still reads this one. */
                t->message_fd = fcntl(message_fd, F_DUPFD_CLOEXEC, 3);
                if (t->message_fd < 0) {
                        free(t);
                        return -errno;
                }
        }
        if (trace)
                snprintf(t->trace, sizeof t->trace, "%s", trace);
        t->done = done;
        t->userdata = userdata;
        p.cache = m->policy_cache;
        p.step_budget = m->settings.policy_step_budget;
        p.deadline_usec = manager_now_usec(m) + m->settings.policy_timeout_usec;
        r = policy_run_new(g, phase, &p, &t->run);
        if (r >= 0)
                r = sd_event_add_time(m->event, &t->deadline, CLOCK_MONOTONIC, p.deadline_usec, 0, on_deadline, t);
        if (r < 0) {
                smtpd_policy_task_free(t);
                return r;
        }
        t->starting = true;
        task_step(t);
        t->starting = false;
        *ret = t;
        return t->finished ? 1 : 0;
}

SmtpdPolicyTask *smtpd_policy_task_free(SmtpdPolicyTask *t) {
        if (!t)
                return NULL;
        task_cancel_io(t);
        sd_event_source_disable_unref(t->call_timer);
        sd_event_source_disable_unref(t->deadline);
        policy_run_free(t->run);
        policy_value_unref(t->sa_result);
        safe_close(t->message_fd);
        free(t);
        return NULL;
}

int smtpd_policy_task_message_fd(const SmtpdPolicyTask *t) {
        return t->message_fd;
}

const PolicyResult *smtpd_policy_task_result(const SmtpdPolicyTask *t) {
        return t->finished ? policy_run_result(t->run) : NULL;
}

PolicyValue *smtpd_policy_task_context(const SmtpdPolicyTask *t) {
        return policy_run_context(t->run);
}

/* ---- the message's header block ------------------------------------------ */

typedef struct HeaderField {
        size_t start, end;   /* raw octets, with the folded lines and the CRLF */
        size_t name_len;
        bool deleted;
} HeaderField;

typedef struct HeaderBlock {
        char *data;          /* mapped message */
        size_t size;
        size_t body;         /* offset of the empty line ending the header (or size) */
        HeaderField *fields;
        size_t n_fields;
} HeaderBlock;

static void header_block_done(HeaderBlock *h) {
        if (h->data && h->data != MAP_FAILED)
                munmap(h->data, h->size);
        free(h->fields);
        *h = (HeaderBlock) {};
}

/* Splits the header fields from skip on. A line that is neither a field nor
 * a continuation ends the header (the rest is body, as a reader would see it). */
static int header_block_parse(int fd, uint64_t skip, HeaderBlock *h) {
        struct stat st;
        *h = (HeaderBlock) {};
        if (fstat(fd, &st) < 0)
                return -errno;
        h->size = (size_t) st.st_size;
        if (h->size == 0 || skip > h->size)
                return -EINVAL;
        h->data = mmap(NULL, h->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (h->data == MAP_FAILED)
                return -errno;
        size_t pos = (size_t) skip, limit = MIN(h->size, (size_t) skip + HEADER_BLOCK_MAX);
        while (pos < limit) {
                const char *line = h->data + pos;
                const char *lf = memchr(line, '\n', limit - pos);
                size_t len = lf ? (size_t) (lf - line) + 1 : limit - pos;
                if ((line[0] == ' ' || line[0] == '\t') && h->n_fields > 0) {
                        h->fields[h->n_fields - 1].end = pos + len;
                        pos += len;
                        continue;
                }
                const char *colon = memchr(line, ':', len);
                size_t nl = colon ? (size_t) (colon - line) : 0;
                bool name_ok = nl > 0;
                for (size_t i = 0; i < nl && name_ok; i++)
                        name_ok = line[i] > 32 && line[i] < 127;
                if (!name_ok || h->n_fields >= HEADER_FIELDS_MAX)
                        break;
                HeaderField *n = realloc(h->fields, (h->n_fields + 1) * sizeof *n);
                if (!n)
                        return -ENOMEM;
                h->fields = n;
                h->fields[h->n_fields++] = (HeaderField) { .start = pos, .end = pos + len, .name_len = nl };
                pos += len;
        }
        h->body = pos;
        return 0;
}

static bool field_is(const HeaderBlock *h, const HeaderField *f, const char *name) {
        return f->name_len == strlen(name) && strncasecmp(h->data + f->start, name, f->name_len) == 0;
}

/* The unfolded value without leading blanks and the line end. */
static PolicyValue *field_value(const HeaderBlock *h, const HeaderField *f) {
        size_t i = f->start + f->name_len + 1, n = 0;
        char *v = malloc(f->end - f->start + 1);
        if (!v)
                return NULL;
        while (i < f->end && (h->data[i] == ' ' || h->data[i] == '\t'))
                i++;
        for (; i < f->end; i++)
                if (h->data[i] != '\r' && h->data[i] != '\n')
                        v[n++] = h->data[i];
        PolicyValue *s = policy_string_new(v, n);
        free(v);
        return s;
}

int smtpd_policy_mail_object(int fd, PolicyValue **ret) {
        HeaderBlock h = {};
        PolicyValue *payload = policy_array_new(), *list = policy_array_new();
        int r = payload && list ? header_block_parse(fd, 0, &h) : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < h.n_fields; i++) {
                PolicyValue *pair = policy_array_new(), *name = policy_string_new(h.data + h.fields[i].start, h.fields[i].name_len),
                            *value = field_value(&h, &h.fields[i]);
                r = pair && name && value ? policy_array_push(pair, name) : -ENOMEM;
                if (r >= 0)
                        r = policy_array_push(pair, value);
                if (r >= 0)
                        r = policy_array_push(list, pair);
                policy_value_unref(pair);
                policy_value_unref(name);
                policy_value_unref(value);
        }
        if (r >= 0)
                r = policy_array_set_str(payload, "headers", list);
        if (r >= 0)
                *ret = policy_object_new("Mail", payload);
        if (r >= 0 && !*ret)
                r = -ENOMEM;
        header_block_done(&h);
        policy_value_unref(list);
        policy_value_unref(payload);
        return r;
}

static const char *action_str(PolicyValue *a, const char *key) {
        PolicyValue *v = policy_array_get_str(a, key);
        return v && policy_value_type(v) == POLICY_TYPE_STRING ? policy_value_string(v, NULL) : NULL;
}

void smtpd_policy_queue_choices(PolicyValue *actions, json_object *rcpts) {
        for (size_t i = 0; i < policy_array_size(actions); i++) {
                PolicyValue *a = policy_array_value_at(actions, i);
                const char *kind = action_str(a, "action");
                if (!kind || strcmp(kind, "queue") != 0)
                        continue;
                /* Queue("bob@example.org", ...) or Queue(["address" => ...], ...) */
                PolicyValue *rv = policy_array_get_str(a, "recipient");
                const char *addr = rv && policy_value_type(rv) == POLICY_TYPE_STRING ? policy_value_string(rv, NULL)
                                   : rv && policy_value_type(rv) == POLICY_TYPE_ARRAY ? action_str(rv, "address")
                                                                                       : NULL;
                PolicyValue *opts = policy_array_get_str(a, "options");
                const char *route = NULL, *source = NULL, *sender = NULL, *helo = NULL;
                if (opts && policy_value_type(opts) == POLICY_TYPE_ARRAY) {
                        route = action_str(opts, "transport");
                        source = action_str(opts, "source_ip");
                        helo = action_str(opts, "helo");
                        /* sender => "list-bounces@example.org", or an address array */
                        PolicyValue *sv = policy_array_get_str(opts, "sender");
                        sender = sv && policy_value_type(sv) == POLICY_TYPE_ARRAY ? action_str(sv, "address")
                                                                                  : action_str(opts, "sender");
                }
                json_object *target = NULL;
                for (size_t k = 0; addr && !target && k < json_object_array_length(rcpts); k++) {
                        json_object *o = json_object_array_get_idx(rcpts, k);
                        if (strcasecmp(json_object_get_string(json_object_object_get(o, "address")) ?: "", addr) == 0)
                                target = o;
                }
                if (!target) {
                        log_warning("Queue(%.256s) at %s: not a recipient of this transaction, ignored", addr ?: "?",
                                    action_str(a, "at") ?: "?");
                        continue;
                }
                /* The later call wins, as the last Queue() for a recipient
                 * is the script's decision. */
                json_object_object_del(target, "route");
                json_object_object_del(target, "sourceAddress");
                json_object_object_del(target, "sender");
                json_object_object_del(target, "helo");
                if (route)
                        json_object_object_add(target, "route", json_object_new_string(route));
                if (source)
                        json_object_object_add(target, "sourceAddress", json_object_new_string(source));
                if (sender)
                        json_object_object_add(target, "sender", json_object_new_string(sender));
                if (helo)
                        json_object_object_add(target, "helo", json_object_new_string(helo));
        }
}

int smtpd_policy_edit_headers(int fd, uint64_t skip, PolicyValue *actions, int *ret_fd) {
        HeaderBlock h = {};
        _cleanup_free_ char *head = NULL;
        size_t head_len = 0;
        bool any = false;
        int r, out = -1;

        *ret_fd = -1;
        for (size_t i = 0; i < policy_array_size(actions); i++) {
                const char *kind = action_str(policy_array_value_at(actions, i), "action");
                any = any || (kind && strstr(kind, "_header"));
        }
        if (!any)
                return 0;
        r = header_block_parse(fd, skip, &h);
        if (r < 0)
                goto done;

        /* Additions at the top go right below our Received:, in the order
         * the script made them; at the bottom, above the empty line. */
        size_t n_top = 0, n_bottom = 0;
        const char *top[256][2], *bottom[256][2];
        for (size_t i = 0; i < policy_array_size(actions); i++) {
                PolicyValue *a = policy_array_value_at(actions, i);
                const char *kind = action_str(a, "action"), *name = action_str(a, "name"), *value = action_str(a, "value");
                if (!kind || !name)
                        continue;
                if (strcmp(kind, "delete_header") == 0 || strcmp(kind, "set_header") == 0) {
                        PolicyValue *iv = policy_array_get_str(a, "index");
                        bool one = iv && policy_value_type(iv) == POLICY_TYPE_NUMBER;
                        double want = one ? policy_value_number(iv) : 0;
                        unsigned seen = 0;
                        for (size_t k = 0; k < h.n_fields; k++)
                                if (!h.fields[k].deleted && field_is(&h, &h.fields[k], name) && (!one || seen++ == (unsigned) want))
                                        h.fields[k].deleted = true;
                        if (kind[0] == 'd')
                                continue;
                }
                if (!value)
                        continue;
                PolicyValue *opts = policy_array_get_str(a, "options");
                PolicyValue *pos = opts && policy_value_type(opts) == POLICY_TYPE_ARRAY ? policy_array_get_str(opts, "position") : NULL;
                bool at_bottom = pos && policy_value_type(pos) == POLICY_TYPE_STRING && strcmp(policy_value_string(pos, NULL), "bottom") == 0;
                if (at_bottom && n_bottom < ELEMENTSOF(bottom)) {
                        bottom[n_bottom][0] = name;
                        bottom[n_bottom++][1] = value;
                } else if (!at_bottom && n_top < ELEMENTSOF(top)) {
                        top[n_top][0] = name;
                        top[n_top++][1] = value;
                } else {
                        r = -E2BIG;
                        goto done;
                }
        }

        out = memfd_create("smtpd-message", MFD_CLOEXEC);
        if (out < 0) {
                r = -errno;
                goto done;
        }
        /* The new header section is assembled in memory and written at
         * once, then the body: two writes, not four per field. */
        FILE *f = open_memstream(&head, &head_len);
        if (!f) {
                r = -errno;
                goto done;
        }
        fwrite(h.data, 1, (size_t) skip, f);
        for (size_t i = 0; i < n_top; i++)
                fprintf(f, "%s: %s\r\n", top[i][0], top[i][1]);
        for (size_t k = 0; k < h.n_fields; k++)
                if (!h.fields[k].deleted)
                        fwrite(h.data + h.fields[k].start, 1, h.fields[k].end - h.fields[k].start, f);
        for (size_t i = 0; i < n_bottom; i++)
                fprintf(f, "%s: %s\r\n", bottom[i][0], bottom[i][1]);
        r = ferror(f) ? -ENOMEM : 0;
        if (fclose(f) != 0 && r >= 0)
                r = -ENOMEM;
        if (r >= 0)
                r = write_all(out, head, head_len);
        if (r >= 0)
                r = write_all(out, h.data + h.body, h.size - h.body);
        if (r >= 0) {
                *ret_fd = out;
                out = -1;
        }
done:
        safe_close(out);
        header_block_done(&h);
        return r;
}
