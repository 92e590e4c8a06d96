/* SPDX-License-Identifier: MIT */
#pragma once

/* HTTP(S) requests on an sd-event loop, through libcurl's multi interface.
 *
 * libcurl (the GnuTLS flavour, as halyard's TLS is GnuTLS) is opened with
 * dlopen() at the first request, not linked: it pulls in some twenty
 * libraries that would slow every start of a service for a feature used now
 * and then. Without it, requests fail with -EOPNOTSUPP.
 *
 * Every request is bounded: a whole-transfer timeout, a body size cap,
 * http/https only, no redirects followed (a redirect is an answer: its
 * status and Location header come back). Name resolution: the caller may
 * pass the addresses (resolve, in CURLOPT_RESOLVE's "host:port:addr"
 * form) so that DNS goes through its own resolver; otherwise libcurl
 * resolves (its threaded resolver, off the loop). connect_to (in
 * CURLOPT_CONNECT_TO's "host:port:connect-host:connect-port" form) sends
 * a connection elsewhere while the URL's name stays the one TLS checks:
 * tests use it to reach a local endpoint under a real-looking name.
 *
 * Ownership: the client owns its requests; the options are copied at
 * start; the response passed to a callback is valid during the call only.
 * Nothing here logs. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define HTTP_TIMEOUT_DEFAULT_USEC (10ULL * 1000000ULL)
#define HTTP_MAX_SIZE_DEFAULT (1024U * 1024U)
#define HTTP_HEADERS_MAX 32U

typedef struct HttpClient HttpClient;
typedef struct HttpRequest HttpRequest;

typedef struct HttpRequestOptions {
        const char *url;
        const char *method;                 /* NULL: GET, or POST when body is set; else GET/POST/PUT/DELETE/HEAD/PATCH */
        const char *const *headers;         /* "Name: value" request headers, NULL-terminated; NULL: none */
        const void *body;                   /* request body (POST/PUT/PATCH) */
        size_t body_len;
        uint64_t timeout_usec;              /* whole transfer; 0: HTTP_TIMEOUT_DEFAULT_USEC */
        uint64_t connect_timeout_usec;      /* connection set-up; 0: timeout_usec */
        size_t max_size;                    /* response body cap; 0: HTTP_MAX_SIZE_DEFAULT */
        bool insecure;                      /* no TLS certificate/name verification */
        bool tls12_min;                     /* refuse TLS below 1.2 (MTA-STS, RFC 8461 §3.3) */
        const char *ca_file;                /* trust anchors; NULL: the system store */
        const char *const *resolve;         /* "host:port:addr[,addr]" entries, NULL-terminated, or NULL */
        const char *const *connect_to;      /* "host:port:connect-host:connect-port" entries, NULL-terminated, or NULL */
} HttpRequestOptions;

typedef struct HttpResponse {
        /* 0: a complete answer (any status); else a negative errno:
         * -ETIMEDOUT, -EFBIG (body over max_size), -ECONNREFUSED,
         * -EHOSTUNREACH (resolution or routing), -EKEYREJECTED (the
         * server's certificate failed verification: untrusted, expired,
         * wrong name; MTA-STS reports it apart, RFC 8460 sts-webpki-invalid),
         * -EPROTO (not HTTP, other TLS failure), -EINVAL (bad URL or
         * protocol), -EOPNOTSUPP (no libcurl), -EIO (anything else). */
        int result;
        const char *error;                  /* a short text when result < 0 */
        long status;                        /* HTTP status, 0 when none */
        const char *body;                   /* NUL-terminated after body_len bytes */
        size_t body_len;
        const char *content_type;           /* NULL if none */
        const char *location;               /* a redirect's target, NULL if none */
        uint64_t elapsed_usec;
} HttpResponse;

/* Called once per request, from the event loop (never from within
 * http_request_start()); the request is freed when it returns. */
typedef void (*HttpCallback)(HttpRequest *req, const HttpResponse *resp, void *userdata);

int http_client_new(sd_event *e, HttpClient **ret);
/* Cancels the requests in flight (their callbacks do not come). */
HttpClient *http_client_free(HttpClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpClient *, http_client_free);

/* Starts a request. ret may be NULL when the caller never cancels. */
int http_request_start(HttpClient *c, const HttpRequestOptions *o, HttpCallback cb, void *userdata, HttpRequest **ret);
/* Stops a request (NULL is fine); its callback does not come. */
void http_request_cancel(HttpRequest *r);

/* Percent-encodes s (RFC 3986: all but unreserved characters) into a new
 * string; NULL on OOM. */
char *http_url_encode(const char *s, size_t len);
