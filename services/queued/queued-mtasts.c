/* SPDX-License-Identifier: MIT */
/* MTA-STS: TXT discovery, policy parsing, HTTPS fetch on the event loop through
 * shared/http (libcurl), and the on-disk cache (see queued-mtasts.h). */
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "http.h"
#include "queued-mtasts.h"

static const char *const mode_names[_MTASTS_MODE_MAX] = {
        [MTASTS_MODE_NONE] = "none",
        [MTASTS_MODE_TESTING] = "testing",
        [MTASTS_MODE_ENFORCE] = "enforce",
};

const char *mtasts_mode_to_string(MtaStsMode m) {
        return (unsigned) m < _MTASTS_MODE_MAX ? mode_names[m] : NULL;
}

static bool is_alnum(char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_wsp(char c) {
        return c == ' ' || c == '\t';
}

/* ---- TXT record (RFC 8461 3.1) ---- */

int mtasts_txt_parse(const char *txt, size_t len, char ret_id[static MTASTS_ID_MAX + 1]) {
        static const char version[] = "v=STSv1";
        const char *p = txt, *end = txt + len;
        char id[MTASTS_ID_MAX + 1] = "";
        bool have_id = false;

        if (len < sizeof version - 1 || memcmp(txt, version, sizeof version - 1) != 0)
                return 0;
        p += sizeof version - 1;
        /* 1*(field-delim field) [field-delim]; field-delim = *WSP ";" *WSP */
        for (;;) {
                while (p < end && is_wsp(*p))
                        p++;
                if (p == end)
                        break;
                if (*p != ';')
                        return -EBADMSG;
                p++;
                while (p < end && is_wsp(*p))
                        p++;
                if (p == end)
                        break;
                /* field: name "=" value */
                const char *name = p;
                if (!is_alnum(*p))
                        return -EBADMSG;
                p++;
                while (p < end && (is_alnum(*p) || *p == '_' || *p == '-' || *p == '.') && p - name < 32)
                        p++;
                if (p == end || *p != '=')
                        return -EBADMSG;
                size_t nlen = (size_t) (p - name);
                p++;
                const char *value = p;
                while (p < end && (unsigned char) *p >= 0x21 && (unsigned char) *p <= 0x7e && *p != ';' && *p != '=')
                        p++;
                size_t vlen = (size_t) (p - value);
                if (vlen == 0)
                        return -EBADMSG;
                if (nlen == 2 && memcmp(name, "id", 2) == 0) {
                        if (have_id || vlen > MTASTS_ID_MAX)
                                return -EBADMSG;
                        for (size_t i = 0; i < vlen; i++)
                                if (!is_alnum(value[i]))
                                        return -EBADMSG;
                        memcpy(id, value, vlen);
                        id[vlen] = 0;
                        have_id = true;
                }
        }
        if (!have_id)
                return -EBADMSG;
        memcpy(ret_id, id, sizeof id);
        return 1;
}

/* ---- policy text (RFC 8461 3.2) ---- */

void mtasts_policy_done(MtaStsPolicy *p) {
        if (!p)
                return;
        for (char **s = p->mx; s && *s; s++)
                free(*s);
        free(p->mx);
        for (char **s = p->lines; s && *s; s++)
                free(*s);
        free(p->lines);
        memset(p, 0, sizeof *p);
}

static char **strv_copy(char *const *v) {
        size_t n = 0;
        while (v && v[n])
                n++;
        char **c = calloc(n + 1, sizeof *c);
        for (size_t i = 0; c && i < n; i++)
                if (!(c[i] = strdup(v[i]))) {
                        for (size_t k = 0; k < i; k++)
                                free(c[k]);
                        free(c);
                        return NULL;
                }
        return c;
}

int mtasts_policy_copy(const MtaStsPolicy *p, MtaStsPolicy *ret) {
        MtaStsPolicy c = { .mode = p->mode, .max_age = p->max_age };
        c.mx = strv_copy(p->mx);
        c.lines = strv_copy(p->lines);
        if (!c.mx || !c.lines) {
                mtasts_policy_done(&c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

static int strv_push(char ***v, size_t *n, const char *s, size_t len) {
        char **nv = realloc(*v, (*n + 2) * sizeof *nv);
        if (!nv)
                return -ENOMEM;
        *v = nv;
        if (!(nv[*n] = strndup(s, len)))
                return -ENOMEM;
        nv[++*n] = NULL;
        return 0;
}

/* A pattern: a domain name, optionally "*." + a domain name; LDH labels. */
static bool mx_pattern_valid(const char *s, size_t len) {
        if (len >= 2 && s[0] == '*' && s[1] == '.') {
                s += 2;
                len -= 2;
        }
        if (len == 0 || len > 253)
                return false;
        size_t label = 0;
        bool any = false; /* "." alone (or "*.") names nothing: found by fuzzing */
        for (size_t i = 0; i < len; i++) {
                if (s[i] == '.') {
                        if (label == 0 && i + 1 != len)
                                return false;
                        label = 0;
                        continue;
                }
                if (!(is_alnum(s[i]) || s[i] == '-' || s[i] == '_') || ++label > 63)
                        return false;
                any = true;
        }
        return any;
}

int mtasts_policy_parse(const char *text, size_t len, MtaStsPolicy *ret) {
        MtaStsPolicy p = { .mode = _MTASTS_MODE_INVALID };
        size_t n_mx = 0, n_lines = 0;
        bool have_version = false, have_max_age = false, have_mode = false;
        const char *s = text, *end = text + len;
        int r;

        if (len > MTASTS_POLICY_MAX)
                return -EBADMSG;
        p.mx = calloc(1, sizeof *p.mx);
        p.lines = calloc(1, sizeof *p.lines);
        if (!p.mx || !p.lines) {
                r = -ENOMEM;
                goto fail;
        }
        while (s < end) {
                const char *eol = memchr(s, '\n', (size_t) (end - s));
                const char *next = eol ? eol + 1 : end;
                const char *le = eol ? eol : end;
                if (le > s && le[-1] == '\r')
                        le--;
                const char *colon = memchr(s, ':', (size_t) (le - s));
                if (le == s) { /* empty line: allowed (e.g. the last CRLF) */
                        s = next;
                        continue;
                }
                if (!colon || colon == s) {
                        r = -EBADMSG;
                        goto fail;
                }
                /* field-name: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".") */
                for (const char *q = s; q < colon; q++)
                        if (!(is_alnum(*q) || (q > s && (*q == '_' || *q == '-' || *q == '.'))) || q - s >= 32) {
                                r = -EBADMSG;
                                goto fail;
                        }
                size_t klen = (size_t) (colon - s);
                const char *v = colon + 1, *ve = le;
                while (v < ve && is_wsp(*v))
                        v++;
                while (ve > v && is_wsp(ve[-1]))
                        ve--;
                for (const char *q = v; q < ve; q++)
                        if ((unsigned char) *q < 0x20 || *q == 0x7f) {
                                r = -EBADMSG;
                                goto fail;
                        }
                size_t vlen = (size_t) (ve - v);
                bool keep = true;
                if (klen == 7 && memcmp(s, "version", 7) == 0) {
                        if (!have_version) {
                                if (vlen != 5 || memcmp(v, "STSv1", 5) != 0) {
                                        r = -EBADMSG;
                                        goto fail;
                                }
                                have_version = true;
                        } else
                                keep = false;
                } else if (klen == 4 && memcmp(s, "mode", 4) == 0) {
                        if (!have_mode) {
                                p.mode = _MTASTS_MODE_INVALID;
                                for (int m = 0; m < _MTASTS_MODE_MAX; m++)
                                        if (vlen == strlen(mode_names[m]) && memcmp(v, mode_names[m], vlen) == 0)
                                                p.mode = (MtaStsMode) m;
                                if (p.mode < 0) {
                                        r = -EBADMSG;
                                        goto fail;
                                }
                                have_mode = true;
                        } else
                                keep = false;
                } else if (klen == 7 && memcmp(s, "max_age", 7) == 0) {
                        if (!have_max_age) {
                                uint64_t a = 0;
                                if (vlen == 0 || vlen > 10) {
                                        r = -EBADMSG;
                                        goto fail;
                                }
                                for (size_t i = 0; i < vlen; i++) {
                                        if (v[i] < '0' || v[i] > '9') {
                                                r = -EBADMSG;
                                                goto fail;
                                        }
                                        a = a * 10 + (uint64_t) (v[i] - '0');
                                }
                                p.max_age = (uint32_t) MIN(a, (uint64_t) MTASTS_MAX_AGE_MAX);
                                have_max_age = true;
                        } else
                                keep = false;
                } else if (klen == 2 && memcmp(s, "mx", 2) == 0) {
                        if (!mx_pattern_valid(v, vlen)) {
                                r = -EBADMSG;
                                goto fail;
                        }
                        if (n_mx < MTASTS_MX_MAX && (r = strv_push(&p.mx, &n_mx, v, vlen)) < 0)
                                goto fail;
                } /* other keys: ignored, but kept in the lines */
                if (keep && n_lines < MTASTS_MX_MAX + 16) {
                        char line[600];
                        int k = snprintf(line, sizeof line, "%.*s: %.*s", (int) MIN(klen, 64U), s, (int) MIN(vlen, 500U), v);
                        if ((r = strv_push(&p.lines, &n_lines, line, (size_t) MIN(k, (int) sizeof line - 1))) < 0)
                                goto fail;
                }
                s = next;
        }
        if (!have_version || !have_mode || !have_max_age || (p.mode != MTASTS_MODE_NONE && n_mx == 0)) {
                r = -EBADMSG;
                goto fail;
        }
        *ret = p;
        return 0;
fail:
        mtasts_policy_done(&p);
        return r;
}

static size_t name_len(const char *s) {
        size_t n = strlen(s);
        while (n > 0 && s[n - 1] == '.')
                n--;
        return n;
}

bool mtasts_mx_match(const char *pattern, const char *host) {
        size_t pl = name_len(pattern), hl = name_len(host);
        if (pl == 0 || hl == 0)
                return false;
        if (pl >= 2 && pattern[0] == '*' && pattern[1] == '.') {
                /* "*.example.com": exactly one label before "example.com" */
                const char *dot = memchr(host, '.', hl);
                if (!dot || dot == host)
                        return false;
                size_t rest = hl - (size_t) (dot + 1 - host);
                return rest == pl - 2 && strncasecmp(dot + 1, pattern + 2, rest) == 0;
        }
        return pl == hl && strncasecmp(pattern, host, hl) == 0;
}

bool mtasts_policy_allows(const MtaStsPolicy *p, const char *host) {
        for (char **m = p->mx; m && *m; m++)
                if (mtasts_mx_match(*m, host))
                        return true;
        return false;
}

/* ---- cache ---- */

/* Domains become file names: only [a-z0-9.-_], no leading dot, no "..". */
static int cache_path(const char *dir, const char *domain, char **ret) {
        size_t n = name_len(domain);
        if (n == 0 || n > 253 || domain[0] == '.')
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                char c = domain[i];
                if (!(is_alnum(c) || c == '-' || c == '_' || c == '.') || (c == '.' && domain[i + 1] == '.'))
                        return -EINVAL;
        }
        if (asprintf(ret, "%s/%.*s.json", dir, (int) n, domain) < 0)
                return -ENOMEM;
        for (char *p = *ret + strlen(dir); *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char) (*p - 'A' + 'a');
        return 0;
}

int mtasts_cache_read(const char *dir, const char *domain, char **ret_id, uint64_t *ret_fetched, char **ret_text) {
        _cleanup_free_ char *path = NULL;
        int r = cache_path(dir, domain, &path);
        if (r < 0)
                return r;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        _cleanup_free_ char *buf = malloc(MTASTS_POLICY_MAX * 2 + 1024);
        if (!buf)
                return -ENOMEM;
        size_t len = 0;
        for (;;) {
                ssize_t k = read(fd, buf + len, MTASTS_POLICY_MAX * 2 + 1023 - len);
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                len += (size_t) k;
                if (len >= MTASTS_POLICY_MAX * 2 + 1023)
                        return -EFBIG;
        }
        buf[len] = 0;
        json_object *o = json_tokener_parse(buf);
        if (!o)
                return -EBADMSG;
        json_object *id = json_object_object_get(o, "id"), *f = json_object_object_get(o, "fetched"),
                    *t = json_object_object_get(o, "policy");
        if (!json_object_is_type(id, json_type_string) || !json_object_is_type(f, json_type_int) ||
            !json_object_is_type(t, json_type_string)) {
                json_object_put(o);
                return -EBADMSG;
        }
        char *ids = strdup(json_object_get_string(id)), *texts = strdup(json_object_get_string(t));
        uint64_t fetched = (uint64_t) json_object_get_int64(f);
        json_object_put(o);
        if (!ids || !texts) {
                free(ids);
                free(texts);
                return -ENOMEM;
        }
        *ret_id = ids;
        *ret_fetched = fetched;
        *ret_text = texts;
        return 0;
}

int mtasts_cache_write(const char *dir, const char *domain, const char *id, uint64_t fetched, const char *text) {
        _cleanup_free_ char *path = NULL, *tmp = NULL;
        int r = cache_path(dir, domain, &path);
        if (r < 0)
                return r;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        if (asprintf(&tmp, "%s.tmp", path) < 0)
                return -ENOMEM;
        json_object *o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "id", json_object_new_string(id));
        json_object_object_add(o, "fetched", json_object_new_int64((int64_t) fetched));
        json_object_object_add(o, "policy", json_object_new_string(text));
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        size_t len = strlen(s);
        _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                json_object_put(o);
                return -errno;
        }
        r = 0;
        for (size_t off = 0; off < len;) {
                ssize_t k = write(fd, s + off, len - off);
                if (k < 0) {
                        r = -errno;
                        break;
                }
                off += (size_t) k;
        }
        json_object_put(o);
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                (void) unlink(tmp);
        return r;
}

/* ---- the context ---- */

/* RFC 8461 3.3 / 5.1: a failed fetch is not repeated for the same domain
 * and policy id for a while; meanwhile the failure stands. */
#define MTASTS_FAILURES_MAX 256U
#define MTASTS_RETRY_AFTER_SEC 300U

typedef struct FetchFailure {
        char domain[254];
        char id[MTASTS_ID_MAX + 1];
        uint64_t when;
        TlsResultType type;
        char reason[200];
} FetchFailure;

struct MtaStsContext {
        sd_event *event;
        DnsResolver *resolver;
        char *cache_dir;
        char *ca_file;
        uint16_t port;
        uint64_t timeout_usec;
        HttpClient *http;
        FetchFailure failures[MTASTS_FAILURES_MAX]; /* recent failed fetches, oldest replaced first */
        MtaStsLookup *lookups; /* every lookup in flight */
};

typedef enum LookupStep {
        STEP_TXT,
        STEP_ADDRESS,
        STEP_FETCH,
        STEP_DONE,
} LookupStep;

struct MtaStsLookup {
        MtaStsContext *ctx;
        char *domain;
        char *host; /* mta-sts.<domain> */
        MtaStsCallback cb;
        void *userdata;
        LookupStep step;
        DnsQuery *q_txt, *q_a, *q_aaaa;
        char addrs[512]; /* for the request's resolve entry (CURLOPT_RESOLVE) */
        char txt_id[MTASTS_ID_MAX + 1];
        bool have_txt;
        /* the cached policy */
        char *cache_id;
        uint64_t cache_fetched;
        MtaStsPolicy cached;
        bool have_cached;
        /* the transfer */
        HttpRequest *req;
        MtaStsPolicy fetched;
        sd_event_source *defer; /* delivers the outcome outside the caller's stack */
        MtaStsOutcome outcome;
        char reason[300];
        MtaStsLookup *next;
};

int mtasts_context_new(sd_event *e, DnsResolver *resolver, const MtaStsConfig *cfg, MtaStsContext **ret) {
        MtaStsContext *ctx = calloc(1, sizeof *ctx);
        if (!ctx)
                return -ENOMEM;
        ctx->event = sd_event_ref(e);
        ctx->resolver = resolver;
        ctx->port = cfg ? cfg->port : 0;
        ctx->timeout_usec = cfg && cfg->timeout_usec ? cfg->timeout_usec : MTASTS_FETCH_TIMEOUT_USEC;
        if ((cfg && cfg->cache_dir && !(ctx->cache_dir = strdup(cfg->cache_dir))) ||
            (cfg && cfg->ca_file && !(ctx->ca_file = strdup(cfg->ca_file)))) {
                mtasts_context_free(ctx);
                return -ENOMEM;
        }
        /* libcurl itself is loaded at the first fetch (see http.h). */
        int r = http_client_new(e, &ctx->http);
        if (r < 0) {
                mtasts_context_free(ctx);
                return r;
        }
        *ret = ctx;
        return 0;
}

static void lookup_free(MtaStsLookup *l);

MtaStsContext *mtasts_context_free(MtaStsContext *ctx) {
        if (!ctx)
                return NULL;
        while (ctx->lookups)
                lookup_free(ctx->lookups); /* unlinks itself */
        http_client_free(ctx->http);
        free(ctx->cache_dir);
        free(ctx->ca_file);
        sd_event_unref(ctx->event);
        free(ctx);
        return NULL;
}

/* ---- one lookup ---- */

static void lookup_free(MtaStsLookup *l) {
        if (!l)
                return;
        for (MtaStsLookup **p = &l->ctx->lookups; *p; p = &(*p)->next)
                if (*p == l) {
                        *p = l->next;
                        break;
                }
        dns_query_cancel(l->q_txt);
        dns_query_cancel(l->q_a);
        dns_query_cancel(l->q_aaaa);
        http_request_cancel(l->req);
        sd_event_source_disable_unref(l->defer);
        free(l->cache_id);
        mtasts_policy_done(&l->cached);
        mtasts_policy_done(&l->fetched);
        free(l->domain);
        free(l->host);
        free(l);
}

void mtasts_lookup_cancel(MtaStsLookup *l) {
        if (l && l->step != STEP_DONE)
                lookup_free(l);
}

static int on_defer(sd_event_source *s, void *userdata) {
        MtaStsLookup *l = userdata;
        l->step = STEP_DONE;
        l->cb(l, &l->outcome, l->userdata);
        lookup_free(l);
        return 0;
}

/* Ends the lookup: the outcome goes out from a deferred event. */
static void finish(MtaStsLookup *l, const MtaStsPolicy *policy, bool from_cache, TlsResultType failure, const char *reason) {
        l->outcome = (MtaStsOutcome){
                .domain = l->domain,
                .policy = policy,
                .from_cache = from_cache,
                .failure = failure,
                .failure_reason = failure != TLS_RESULT_NONE ? l->reason : NULL,
        };
        if (reason && reason != l->reason)
                snprintf(l->reason, sizeof l->reason, "%s", reason);
        if (sd_event_add_defer(l->ctx->event, &l->defer, on_defer, l) < 0) {
                /* no way to call back later: call now (callers cope: never from start) */
                on_defer(NULL, l);
        }
}

static uint64_t now_sec(void) {
        return (uint64_t) time(NULL);
}

static bool cached_valid(const MtaStsLookup *l) {
        return l->have_cached && l->cache_fetched + l->cached.max_age > now_sec();
}

/* Half of max_age has gone by: time to refresh (RFC 8461 5.1, "before max_age ends"). */
static bool cached_fresh(const MtaStsLookup *l) {
        return cached_valid(l) && l->cache_fetched + l->cached.max_age / 2 > now_sec();
}

static FetchFailure *failure_find(MtaStsContext *ctx, const char *domain, const char *id) {
        for (size_t i = 0; i < MTASTS_FAILURES_MAX; i++)
                if (ctx->failures[i].when && strcasecmp(ctx->failures[i].domain, domain) == 0 && strcmp(ctx->failures[i].id, id) == 0)
                        return &ctx->failures[i];
        return NULL;
}

static void failure_note(MtaStsLookup *l, TlsResultType type) {
        MtaStsContext *ctx = l->ctx;
        FetchFailure *f = failure_find(ctx, l->domain, l->txt_id);
        if (!f) {
                f = &ctx->failures[0];
                for (size_t i = 1; i < MTASTS_FAILURES_MAX; i++)
                        if (ctx->failures[i].when < f->when)
                                f = &ctx->failures[i];
        }
        snprintf(f->domain, sizeof f->domain, "%s", l->domain);
        snprintf(f->id, sizeof f->id, "%s", l->txt_id);
        snprintf(f->reason, sizeof f->reason, "%.199s", l->reason);
        f->type = type;
        f->when = (uint64_t) time(NULL);
}

static void fetch_failed(MtaStsLookup *l, TlsResultType type) {
        if (l->step == STEP_ADDRESS || l->step == STEP_FETCH)
                failure_note(l, type);
        if (cached_valid(l))
                finish(l, &l->cached, true, type, l->reason);
        else
                finish(l, NULL, false, type, l->reason);
}

static void on_fetched(HttpRequest *req, const HttpResponse *resp, void *userdata) {
        MtaStsLookup *l = userdata;
        const char *ctype = resp->content_type;

        l->req = NULL; /* freed by shared/http after this call */
        if (resp->result < 0) {
                /* RFC 8460: a certificate that does not verify is reported
                 * apart from other fetch failures. */
                snprintf(l->reason, sizeof l->reason, "%s%s", resp->result == -EFBIG ? "policy larger than 64 KiB: " : "",
                         resp->error ?: strerror(-resp->result));
                fetch_failed(l, resp->result == -EKEYREJECTED ? TLS_RESULT_STS_WEBPKI_INVALID : TLS_RESULT_STS_POLICY_FETCH_ERROR);
                return;
        }
        /* Redirects are not followed (RFC 8461 3.3): a 3xx fails here. */
        if (resp->status != 200) {
                snprintf(l->reason, sizeof l->reason, "bad https response code: %ld", resp->status);
                fetch_failed(l, TLS_RESULT_STS_POLICY_FETCH_ERROR);
                return;
        }
        /* text/plain, parameters allowed */
        if (!ctype || strncasecmp(ctype, "text/plain", 10) != 0 || (ctype[10] && ctype[10] != ';' && ctype[10] != ' ')) {
                snprintf(l->reason, sizeof l->reason, "bad content type: %.100s", ctype ? ctype : "(none)");
                fetch_failed(l, TLS_RESULT_STS_POLICY_INVALID);
                return;
        }
        if (mtasts_policy_parse(resp->body, resp->body_len, &l->fetched) < 0) {
                snprintf(l->reason, sizeof l->reason, "invalid policy text");
                fetch_failed(l, TLS_RESULT_STS_POLICY_INVALID);
                return;
        }
        if (l->ctx->cache_dir)
                (void) mtasts_cache_write(l->ctx->cache_dir, l->domain, l->have_txt ? l->txt_id : l->cache_id ? l->cache_id : "",
                                          now_sec(), resp->body);
        finish(l, &l->fetched, false, TLS_RESULT_NONE, NULL);
}

static void start_fetch(MtaStsLookup *l) {
        MtaStsContext *ctx = l->ctx;
        char url[400], resolve[700];
        unsigned port = ctx->port ? ctx->port : 443;
        /* All DNS goes through our resolver: libcurl gets the addresses. */
        const char *const resolves[] = { resolve, NULL };
        static const char *const headers[] = { "User-Agent: halyard-queued (MTA-STS)", NULL };

        if (!l->addrs[0]) {
                snprintf(l->reason, sizeof l->reason, "%s has no address", l->host);
                fetch_failed(l, TLS_RESULT_STS_POLICY_FETCH_ERROR);
                return;
        }
        l->step = STEP_FETCH;
        if (port == 443)
                snprintf(url, sizeof url, "https://%s/.well-known/mta-sts.txt", l->host);
        else
                snprintf(url, sizeof url, "https://%s:%u/.well-known/mta-sts.txt", l->host, port);
        snprintf(resolve, sizeof resolve, "%s:%u:%s", l->host, port, l->addrs);
        /* shared/http verifies the certificate and its name, and follows
         * no redirect. */
        const HttpRequestOptions o = {
                .url = url,
                .method = "GET",
                .headers = headers,
                .timeout_usec = ctx->timeout_usec,
                .connect_timeout_usec = MIN(ctx->timeout_usec, 30ULL * 1000000ULL),
                .max_size = MTASTS_POLICY_MAX,
                .tls12_min = true,
                .ca_file = ctx->ca_file,
                .resolve = resolves,
        };
        int r = http_request_start(ctx->http, &o, on_fetched, l, &l->req);
        if (r < 0) {
                l->req = NULL;
                if (r == -EOPNOTSUPP)
                        snprintf(l->reason, sizeof l->reason, "libcurl (GnuTLS) could not be loaded");
                else
                        snprintf(l->reason, sizeof l->reason, "could not start the transfer: %s", strerror(-r));
                fetch_failed(l, TLS_RESULT_STS_POLICY_FETCH_ERROR);
        }
}

static void on_address(DnsQuery *q, const DnsResult *res, void *userdata) {
        MtaStsLookup *l = userdata;
        if (q == l->q_a)
                l->q_a = NULL;
        else
                l->q_aaaa = NULL;
        for (size_t i = 0; i < res->n_records; i++) {
                char a[INET6_ADDRSTRLEN + 2];
                if (res->records[i].type == DNS_TYPE_A)
                        inet_ntop(AF_INET, &res->records[i].a, a, sizeof a);
                else if (res->records[i].type == DNS_TYPE_AAAA) {
                        char b[INET6_ADDRSTRLEN];
                        inet_ntop(AF_INET6, &res->records[i].aaaa, b, sizeof b);
                        snprintf(a, sizeof a, "[%s]", b);
                } else
                        continue;
                size_t used = strlen(l->addrs);
                if (used + strlen(a) + 2 < sizeof l->addrs)
                        snprintf(l->addrs + used, sizeof l->addrs - used, "%s%s", used ? "," : "", a);
        }
        if (!l->q_a && !l->q_aaaa)
                start_fetch(l);
}

static void start_address(MtaStsLookup *l) {
        l->step = STEP_ADDRESS;
        if (dns_query(l->ctx->resolver, l->host, DNS_TYPE_A, on_address, l, &l->q_a) < 0)
                l->q_a = NULL;
        if (dns_query(l->ctx->resolver, l->host, DNS_TYPE_AAAA, on_address, l, &l->q_aaaa) < 0)
                l->q_aaaa = NULL;
        if (!l->q_a && !l->q_aaaa) {
                snprintf(l->reason, sizeof l->reason, "DNS lookup of %s could not be started", l->host);
                fetch_failed(l, TLS_RESULT_STS_POLICY_FETCH_ERROR);
        }
}

static void on_txt(DnsQuery *q, const DnsResult *res, void *userdata) {
        MtaStsLookup *l = userdata;
        unsigned n_sts = 0;
        l->q_txt = NULL;

        if (res->status == DNS_STATUS_OK)
                for (size_t i = 0; i < res->n_records; i++) {
                        char id[MTASTS_ID_MAX + 1];
                        int r = mtasts_txt_parse(res->records[i].txt.text, res->records[i].txt.len, id);
                        if (r == 0)
                                continue;
                        n_sts++; /* a malformed STSv1 record counts: two records mean none */
                        if (r > 0)
                                memcpy(l->txt_id, id, sizeof id);
                        l->have_txt = r > 0;
                }
        if (n_sts != 1)
                l->have_txt = false;

        if (!l->have_txt) {
                /* No (valid) record: a cached policy still applies until it expires. */
                if (cached_valid(l))
                        finish(l, &l->cached, true, TLS_RESULT_NONE, NULL);
                else
                        finish(l, NULL, false, TLS_RESULT_NONE, NULL);
                return;
        }
        if (cached_fresh(l) && streq_ptr(l->cache_id, l->txt_id)) {
                finish(l, &l->cached, true, TLS_RESULT_NONE, NULL);
                return;
        }
        FetchFailure *f = failure_find(l->ctx, l->domain, l->txt_id);
        if (f && f->when + MTASTS_RETRY_AFTER_SEC > now_sec()) {
                snprintf(l->reason, sizeof l->reason, "%s (not fetched again within %us)", f->reason, MTASTS_RETRY_AFTER_SEC);
                fetch_failed(l, f->type);
                return;
        }
        start_address(l);
}

int mtasts_lookup_start(MtaStsContext *ctx, const char *domain, MtaStsCallback cb, void *userdata, MtaStsLookup **ret) {
        MtaStsLookup *l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->ctx = ctx;
        l->cb = cb;
        l->userdata = userdata;
        l->next = ctx->lookups;
        ctx->lookups = l;
        _cleanup_free_ char *txt_name = NULL;
        if (!(l->domain = strndup(domain, name_len(domain))) || asprintf(&l->host, "mta-sts.%s", l->domain) < 0 ||
            asprintf(&txt_name, "_mta-sts.%s", l->domain) < 0) {
                l->host = NULL;
                lookup_free(l);
                return -ENOMEM;
        }
        if (ctx->cache_dir) {
                _cleanup_free_ char *text = NULL;
                if (mtasts_cache_read(ctx->cache_dir, l->domain, &l->cache_id, &l->cache_fetched, &text) >= 0 &&
                    mtasts_policy_parse(text, strlen(text), &l->cached) >= 0)
                        l->have_cached = true;
        }
        int r = dns_query(ctx->resolver, txt_name, DNS_TYPE_TXT, on_txt, l, &l->q_txt);
        if (r < 0) {
                lookup_free(l);
                return r;
        }
        if (ret)
                *ret = l;
        return 0;
}
