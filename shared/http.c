/* SPDX-License-Identifier: MIT */
/* HTTP(S) through libcurl multi on sd-event (see http.h). The loop glue is
 * the usual one: libcurl tells which sockets to watch (CURLMOPT_SOCKETFUNCTION)
 * and when to call it back (CURLMOPT_TIMERFUNCTION); we watch them with
 * sd-event and hand the readiness to curl_multi_socket_action(). */
#include <curl/curl.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>

#include "http.h"

#define CURL_SONAMES { "libcurl-gnutls.so.4", "libcurl.so.4" }

typedef struct CurlApi {
        void *dl;
        CURLcode (*global_init)(long flags);
        CURLM *(*multi_init)(void);
        CURLMcode (*multi_cleanup)(CURLM *m);
        CURLMcode (*multi_setopt)(CURLM *m, CURLMoption option, ...);
        CURLMcode (*multi_add_handle)(CURLM *m, CURL *e);
        CURLMcode (*multi_remove_handle)(CURLM *m, CURL *e);
        CURLMcode (*multi_socket_action)(CURLM *m, curl_socket_t s, int ev_bitmask, int *running_handles);
        CURLMcode (*multi_assign)(CURLM *m, curl_socket_t sockfd, void *sockp);
        CURLMsg *(*multi_info_read)(CURLM *m, int *msgs_in_queue);
        CURL *(*easy_init)(void);
        void (*easy_cleanup)(CURL *e);
        CURLcode (*easy_setopt)(CURL *e, CURLoption option, ...);
        CURLcode (*easy_getinfo)(CURL *e, CURLINFO info, ...);
        const char *(*easy_strerror)(CURLcode c);
        struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
        void (*slist_free_all)(struct curl_slist *l);
} CurlApi;

struct HttpClient {
        sd_event *event;
        CurlApi api;
        bool api_failed;
        CURLM *multi;
        sd_event_source *timer;
        HttpRequest *requests;
};

struct HttpRequest {
        HttpClient *client;
        CURL *easy;
        struct curl_slist *headers, *resolve, *connect_to;
        char *body;                      /* the request body, copied */
        char *data;                      /* the response body */
        size_t data_len, data_cap, max_size;
        bool too_large;
        uint64_t started;
        char errbuf[CURL_ERROR_SIZE];
        HttpCallback cb;
        void *userdata;
        HttpRequest *prev, *next;
};

typedef struct SockInfo {
        sd_event_source *source;
} SockInfo;

static int curl_api_load(CurlApi *api) {
        static const char *const sonames[] = CURL_SONAMES;
        for (size_t i = 0; !api->dl && i < ELEMENTSOF(sonames); i++)
                api->dl = dlopen(sonames[i], RTLD_NOW | RTLD_LOCAL);
        if (!api->dl)
                return -EOPNOTSUPP;
#define SYM(field, name)                                                        \
        do {                                                                    \
                *(void **) &api->field = dlsym(api->dl, name);                  \
                if (!api->field)                                                \
                        goto fail;                                              \
        } while (0)
        SYM(global_init, "curl_global_init");
        SYM(multi_init, "curl_multi_init");
        SYM(multi_cleanup, "curl_multi_cleanup");
        SYM(multi_setopt, "curl_multi_setopt");
        SYM(multi_add_handle, "curl_multi_add_handle");
        SYM(multi_remove_handle, "curl_multi_remove_handle");
        SYM(multi_socket_action, "curl_multi_socket_action");
        SYM(multi_assign, "curl_multi_assign");
        SYM(multi_info_read, "curl_multi_info_read");
        SYM(easy_init, "curl_easy_init");
        SYM(easy_cleanup, "curl_easy_cleanup");
        SYM(easy_setopt, "curl_easy_setopt");
        SYM(easy_getinfo, "curl_easy_getinfo");
        SYM(easy_strerror, "curl_easy_strerror");
        SYM(slist_append, "curl_slist_append");
        SYM(slist_free_all, "curl_slist_free_all");
#undef SYM
        /* curl_global_init() once per client; libcurl counts the calls. */
        if (api->global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                goto fail;
        return 0;
fail:
        dlclose(api->dl);
        memset(api, 0, sizeof *api);
        return -EOPNOTSUPP;
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

static void request_free(HttpRequest *r) {
        HttpClient *c = r->client;
        if (r->prev)
                r->prev->next = r->next;
        else if (c->requests == r)
                c->requests = r->next;
        if (r->next)
                r->next->prev = r->prev;
        if (r->easy) {
                c->api.multi_remove_handle(c->multi, r->easy);
                c->api.easy_cleanup(r->easy);
        }
        if (r->headers)
                c->api.slist_free_all(r->headers);
        if (r->resolve)
                c->api.slist_free_all(r->resolve);
        if (r->connect_to)
                c->api.slist_free_all(r->connect_to);
        free(r->body);
        free(r->data);
        free(r);
}

void http_request_cancel(HttpRequest *r) {
        if (r)
                request_free(r);
}

static int map_error(CURLcode code) {
        switch (code) {
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_FILESIZE_EXCEEDED:
                return -EFBIG;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_COULDNT_RESOLVE_HOST:
                return -EHOSTUNREACH;
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_URL_MALFORMAT:
                return -EINVAL;
        case CURLE_PEER_FAILED_VERIFICATION: /* also CURLE_SSL_CACERT since 7.62 */
                return -EKEYREJECTED;
        case CURLE_WEIRD_SERVER_REPLY:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
                return -EPROTO;
        default:
                return -EIO;
        }
}

static void request_finish(HttpRequest *r, CURLcode code) {
        HttpClient *c = r->client;
        HttpResponse resp = { .elapsed_usec = now_usec() - r->started };
        char *ctype = NULL, *location = NULL;

        if (r->too_large || code == CURLE_FILESIZE_EXCEEDED) {
                resp.result = -EFBIG;
                resp.error = "response too large";
        } else if (code != CURLE_OK) {
                resp.result = map_error(code);
                resp.error = code == CURLE_OPERATION_TIMEDOUT ? "timeout" : r->errbuf[0] ? r->errbuf : c->api.easy_strerror(code);
        }
        (void) c->api.easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
        if (resp.result == 0) {
                (void) c->api.easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ctype);
                (void) c->api.easy_getinfo(r->easy, CURLINFO_REDIRECT_URL, &location);
                resp.content_type = ctype;
                resp.location = location;
                resp.body = r->data ?: "";
                resp.body_len = r->data_len;
        }
        r->cb(r, &resp, r->userdata);
        request_free(r);
}

static void check_done(HttpClient *c) {
        CURLMsg *msg;
        int left;
        while ((msg = c->api.multi_info_read(c->multi, &left))) {
                if (msg->msg != CURLMSG_DONE)
                        continue;
                HttpRequest *r = NULL;
                CURLcode code = msg->data.result;
                (void) c->api.easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &r);
                if (r)
                        request_finish(r, code);
        }
}

static int on_curl_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        HttpClient *c = userdata;
        int action = (revents & EPOLLIN ? CURL_CSELECT_IN : 0) | (revents & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                     (revents & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
        int running;
        (void) c->api.multi_socket_action(c->multi, fd, action, &running);
        check_done(c);
        return 0;
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        HttpClient *c = userp;
        SockInfo *si = socketp;

        if (what == CURL_POLL_REMOVE) {
                if (si) {
                        sd_event_source_disable_unref(si->source);
                        free(si);
                        c->api.multi_assign(c->multi, fd, NULL);
                }
                return 0;
        }
        uint32_t events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
        if (!si) {
                si = calloc(1, sizeof *si);
                if (!si)
                        return -1;
                if (sd_event_add_io(c->event, &si->source, fd, events, on_curl_io, c) < 0) {
                        free(si);
                        return -1;
                }
                c->api.multi_assign(c->multi, fd, si);
                return 0;
        }
        return sd_event_source_set_io_events(si->source, events) < 0 ? -1 : 0;
}

static int on_curl_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        HttpClient *c = userdata;
        int running;
        (void) c->api.multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(c);
        return 0;
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp) {
        HttpClient *c = userp;
        if (timeout_ms < 0)
                return sd_event_source_set_enabled(c->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
        if (sd_event_source_set_time_relative(c->timer, (uint64_t) timeout_ms * 1000ULL) < 0 ||
            sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT) < 0)
                return -1;
        return 0;
}

int http_client_new(sd_event *e, HttpClient **ret) {
        HttpClient *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(e);
        int r = sd_event_add_time_relative(e, &c->timer, CLOCK_MONOTONIC, 1000000, 0, on_curl_timer, c);
        if (r < 0) {
                http_client_free(c);
                return r;
        }
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        *ret = c;
        return 0;
}

HttpClient *http_client_free(HttpClient *c) {
        if (!c)
                return NULL;
        while (c->requests)
                request_free(c->requests);
        if (c->multi)
                c->api.multi_cleanup(c->multi);
        /* libcurl stays loaded: curl_global_cleanup() is not safe while
         * another user (a second client) may still be running. */
        sd_event_source_disable_unref(c->timer);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

static int ensure_multi(HttpClient *c) {
        if (c->multi)
                return 0;
        if (c->api_failed)
                return -EOPNOTSUPP;
        if (curl_api_load(&c->api) < 0 || !(c->multi = c->api.multi_init())) {
                c->api_failed = true;
                return -EOPNOTSUPP;
        }
        c->api.multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
        c->api.multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
        c->api.multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
        c->api.multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
        return 0;
}

static size_t on_data(char *p, size_t size, size_t n, void *userdata) {
        HttpRequest *r = userdata;
        size_t len = size * n;
        if (len > r->max_size - r->data_len) {
                r->too_large = true;
                return 0; /* ends the transfer with CURLE_WRITE_ERROR */
        }
        if (r->data_len + len + 1 > r->data_cap) {
                size_t cap = MAX(r->data_cap * 2, r->data_len + len + 1);
                cap = MIN(cap, r->max_size + 1);
                char *d = realloc(r->data, cap);
                if (!d)
                        return 0;
                r->data = d;
                r->data_cap = cap;
        }
        memcpy(r->data + r->data_len, p, len);
        r->data_len += len;
        r->data[r->data_len] = 0;
        return len;
}

static bool method_valid(const char *m) {
        static const char *const methods[] = { "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH" };
        for (size_t i = 0; i < ELEMENTSOF(methods); i++)
                if (strcmp(m, methods[i]) == 0)
                        return true;
        return false;
}

/* Appends a NULL-terminated list (NULL: none) to *l. */
static int slist_append_all(CurlApi *api, struct curl_slist **l, const char *const *strv) {
        for (size_t i = 0; strv && strv[i]; i++) {
                struct curl_slist *n = api->slist_append(*l, strv[i]);
                if (!n)
                        return -ENOMEM;
                *l = n;
        }
        return 0;
}

int http_request_start(HttpClient *c, const HttpRequestOptions *o, HttpCallback cb, void *userdata, HttpRequest **ret) {
        const char *method = o->method ?: o->body ? "POST" : "GET";
        int r;

        if (!o->url || (strncasecmp(o->url, "http://", 7) != 0 && strncasecmp(o->url, "https://", 8) != 0) ||
            !method_valid(method))
                return -EINVAL;
        r = ensure_multi(c);
        if (r < 0)
                return r;

        HttpRequest *req = calloc(1, sizeof *req);
        if (!req)
                return -ENOMEM;
        req->client = c;
        req->cb = cb;
        req->userdata = userdata;
        req->max_size = o->max_size ?: HTTP_MAX_SIZE_DEFAULT;
        req->started = now_usec();
        req->next = c->requests;
        if (c->requests)
                c->requests->prev = req;
        c->requests = req;

        CurlApi *api = &c->api;
        req->easy = api->easy_init();
        if (!req->easy) {
                request_free(req);
                return -ENOMEM;
        }
        for (size_t i = 0; o->headers && o->headers[i]; i++) {
                struct curl_slist *l;
                if (i >= HTTP_HEADERS_MAX || strpbrk(o->headers[i], "\r\n") || !strchr(o->headers[i], ':')) {
                        request_free(req);
                        return -EINVAL;
                }
                if (!(l = api->slist_append(req->headers, o->headers[i]))) {
                        request_free(req);
                        return -ENOMEM;
                }
                req->headers = l;
        }
        if (slist_append_all(api, &req->resolve, o->resolve) < 0 ||
            slist_append_all(api, &req->connect_to, o->connect_to) < 0) {
                request_free(req);
                return -ENOMEM;
        }
        uint64_t timeout_ms = (o->timeout_usec ?: HTTP_TIMEOUT_DEFAULT_USEC) / 1000;
        uint64_t connect_timeout_ms = o->connect_timeout_usec ? MIN(o->connect_timeout_usec / 1000, timeout_ms) : timeout_ms;
        CURL *e = req->easy;
        api->easy_setopt(e, CURLOPT_URL, o->url);
        api->easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        api->easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
        api->easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        api->easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) MAX(timeout_ms, 1ULL));
        api->easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) MAX(connect_timeout_ms, 1ULL));
        api->easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) req->max_size);
        api->easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
        api->easy_setopt(e, CURLOPT_WRITEDATA, req);
        api->easy_setopt(e, CURLOPT_PRIVATE, req);
        api->easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf);
        api->easy_setopt(e, CURLOPT_USERAGENT, "halyard");
        if (req->headers)
                api->easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
        if (req->resolve)
                api->easy_setopt(e, CURLOPT_RESOLVE, req->resolve);
        if (req->connect_to)
                api->easy_setopt(e, CURLOPT_CONNECT_TO, req->connect_to);
        if (o->insecure) {
                api->easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
                api->easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        if (o->ca_file)
                api->easy_setopt(e, CURLOPT_CAINFO, o->ca_file);
        if (o->tls12_min)
                api->easy_setopt(e, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
        if (strcmp(method, "HEAD") == 0)
                api->easy_setopt(e, CURLOPT_NOBODY, 1L);
        else if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
                api->easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        if (o->body || strcmp(method, "POST") == 0) {
                req->body = malloc(o->body_len + 1);
                if (!req->body) {
                        request_free(req);
                        return -ENOMEM;
                }
                if (o->body_len)
                        memcpy(req->body, o->body, o->body_len);
                req->body[o->body_len] = 0;
                api->easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
                api->easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) o->body_len);
        }
        if (api->multi_add_handle(c->multi, e) != CURLM_OK) {
                request_free(req);
                return -ENOMEM;
        }
        if (ret)
                *ret = req;
        return 0;
}

char *http_url_encode(const char *s, size_t len) {
        static const char hex[] = "0123456789ABCDEF";
        char *out = malloc(len * 3 + 1), *p = out;
        if (!out)
                return NULL;
        for (size_t i = 0; i < len; i++) {
                unsigned char ch = (unsigned char) s[i];
                if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                    ch == '.' || ch == '_' || ch == '~')
                        *p++ = (char) ch;
                else {
                        *p++ = '%';
                        *p++ = hex[ch >> 4];
                        *p++ = hex[ch & 15];
                }
        }
        *p = 0;
        return out;
}
