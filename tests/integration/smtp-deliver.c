/* SPDX-License-Identifier: MIT */
/* smtp-deliver: drives queued's SMTP/LMTP client (queued-smtp.c) against a
 * real peer, for the integration tests.
 *
 *   smtp-deliver [--lmtp] [--starttls=no|may|require] [--helo NAME]
 *                [--timeout-scale X] [--repeat N] [--smtputf8]
 *                [--tls-verify=accept|reject] [--sni NAME]
 *                HOST PORT FROM RCPT... < message
 *
 * The message is read from stdin into a memfd (at most 64 MiB); 8-bit bytes
 * anywhere set BODY=8BITMIME, non-ASCII bytes in the header (or --smtputf8)
 * make it need SMTPUTF8. --repeat N sends it N times over one connection.
 *
 * Output, one JSON object per line: one per recipient and transaction
 *   {"transaction":1,"rcpt":"a@x","status":"ok|tempfail|permfail","code":250,
 *    "enhanced":"2.0.0","text":"...","stage":"dot","pipelined":true}
 * and a last line {"session":{...facts, "error":{...}|null}}.
 * Exit status: 0 every recipient delivered, 2 some failed, 1 usage or setup error. */

#include <getopt.h>
#include <json-c/json.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <systemd/sd-event.h>

#include "log.h"
#include "macro.h"
#include "queued-smtp.h"
#include "utf8.h"

#define MESSAGE_MAX (64U * 1024U * 1024U)

typedef struct Driver {
        sd_event *event;
        SmtpClient *client;
        SmtpMessage message;
        unsigned repeat;
        unsigned sent;
        bool any_failed;
        bool verify_reject;
} Driver;

/* Valid UTF-8, newlines and tabs stay; other control bytes and invalid
 * UTF-8 become \xNN, so the JSON output is always valid UTF-8. */
static json_object *jstr(const char *s) {
        _cleanup_free_ char *buf = NULL;
        size_t n, o = 0;

        if (!s)
                return NULL;
        n = strlen(s);
        buf = malloc(n * 4 + 1);
        if (!buf)
                return NULL;
        for (size_t i = 0; i < n;) {
                unsigned char ch = (unsigned char) s[i];
                size_t k = utf8_sequence_len(s + i, n - i);
                if (k == 0 || (ch < 0x20 && ch != '\n' && ch != '\t') || ch == 0x7f) {
                        o += (size_t) sprintf(buf + o, "\\x%02X", ch);
                        i++;
                        continue;
                }
                memcpy(buf + o, s + i, k);
                o += k;
                i += k;
        }
        buf[o] = '\0';
        return json_object_new_string(buf);
}

static json_object *result_json(const SmtpResult *r, json_object *o) {
        json_object_object_add(o, "status", json_object_new_string(smtp_status_to_string(r->status)));
        json_object_object_add(o, "code", json_object_new_int(r->code));
        json_object_object_add(o, "enhanced", json_object_new_string(r->enhanced));
        json_object_object_add(o, "text", jstr(r->text ? r->text : ""));
        json_object_object_add(o, "stage", json_object_new_string(smtp_stage_to_string(r->stage)));
        return o;
}

static void print_json(json_object *o) {
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        fflush(stdout);
        json_object_put(o);
}

static void print_session(Driver *d) {
        const SmtpSessionFacts *f = smtp_client_facts(d->client);
        const SmtpResult *e = smtp_client_error(d->client);
        json_object *s = json_object_new_object(), *top = json_object_new_object();
        json_object *kw = json_object_new_array();

        json_object_object_add(s, "lmtp", json_object_new_boolean(f->lmtp));
        json_object_object_add(s, "helo_fallback", json_object_new_boolean(f->helo_fallback));
        json_object_object_add(s, "tls", json_object_new_boolean(f->tls));
        json_object_object_add(s, "tls_version", jstr(f->tls_version));
        json_object_object_add(s, "tls_cipher", jstr(f->tls_cipher));
        json_object_object_add(s, "tls_description", jstr(f->tls_description));
        json_object_object_add(s, "peer_subject", jstr(f->peer_subject));
        json_object_object_add(s, "tls_verified", json_object_new_boolean(f->tls_verified));
        json_object_object_add(s, "greeting", jstr(f->greeting));
        for (size_t i = 0; i < f->n_keywords; i++)
                json_object_array_add(kw, jstr(f->keywords[i]));
        json_object_object_add(s, "extensions", kw);
        json_object_object_add(s, "size_max", json_object_new_int64((int64_t) f->size_max));
        json_object_object_add(s, "pipelining_used", json_object_new_boolean(f->pipelined));
        json_object_object_add(s, "transactions", json_object_new_int((int) f->transactions));
        json_object_object_add(s, "error",
                               e->status == SMTP_STATUS_PENDING ? NULL : result_json(e, json_object_new_object()));
        json_object_object_add(top, "session", s);
        print_json(top);
}

static void on_event(SmtpClient *c, SmtpClientEvent ev, void *userdata) {
        Driver *d = userdata;
        int r;

        if (ev == SMTP_CLIENT_EVENT_CLOSED) {
                print_session(d);
                (void) sd_event_exit(d->event, 0);
                return;
        }

        const SmtpSessionFacts *f = smtp_client_facts(c);
        for (size_t i = 0; i < smtp_client_n_rcpts(c); i++) {
                const SmtpResult *res = smtp_client_rcpt_result(c, i);
                json_object *o = json_object_new_object();
                json_object_object_add(o, "transaction", json_object_new_int((int) d->sent));
                json_object_object_add(o, "rcpt", jstr(smtp_client_rcpt(c, i)));
                result_json(res, o);
                json_object_object_add(o, "pipelined", json_object_new_boolean(f->pipelined));
                print_json(o);
                if (res->status != SMTP_STATUS_OK)
                        d->any_failed = true;
        }

        if (d->sent < d->repeat && smtp_client_usable(c)) {
                r = smtp_client_send(c, &d->message);
                if (r >= 0) {
                        d->sent++;
                        return;
                }
                log_error_errno(r, "send: %m");
                d->any_failed = true;
        }
        (void) smtp_client_quit(c);
}

static int verify(SmtpClient *c, gnutls_session_t tls, char *reason, size_t n, void *userdata) {
        Driver *d = userdata;
        if (d->verify_reject) {
                snprintf(reason, n, "rejected by --tls-verify=reject");
                return -EPERM;
        }
        return 1;
}

/* stdin into a memfd; notes 8-bit bytes and non-ASCII header bytes. */
static int read_message(int *ret_fd, uint64_t *ret_size, bool *ret_8bit, bool *ret_utf8_header) {
        _cleanup_close_ int fd = memfd_create("smtp-deliver", MFD_CLOEXEC);
        char buf[65536];
        uint64_t size = 0;
        bool eightbit = false, utf8_header = false, in_header = true, line_start = true;

        if (fd < 0)
                return negative_errno();
        for (;;) {
                ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        break;
                if (size + (uint64_t) n > MESSAGE_MAX)
                        return -EFBIG;
                for (ssize_t i = 0; i < n; i++) {
                        unsigned char ch = (unsigned char) buf[i];
                        if (ch >= 0x80) {
                                eightbit = true;
                                if (in_header)
                                        utf8_header = true;
                        }
                        if (ch == '\n') {
                                if (line_start)
                                        in_header = false;
                                line_start = true;
                        } else if (ch != '\r')
                                line_start = false;
                }
                for (ssize_t o = 0; o < n;) {
                        ssize_t k = write(fd, buf + o, (size_t) (n - o));
                        if (k < 0)
                                return negative_errno();
                        o += k;
                }
                size += (uint64_t) n;
        }
        *ret_fd = TAKE_FD(fd);
        *ret_size = size;
        *ret_8bit = eightbit;
        *ret_utf8_header = utf8_header;
        return 0;
}

static void usage(void) {
        fprintf(stderr, "usage: smtp-deliver [--lmtp] [--starttls=no|may|require] [--helo NAME] "
                        "[--timeout-scale X] [--repeat N] [--smtputf8] [--tls-verify=accept|reject] "
                        "[--sni NAME] HOST PORT FROM RCPT... < message\n");
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "lmtp", no_argument, NULL, 'l' },
                { "starttls", required_argument, NULL, 's' },
                { "helo", required_argument, NULL, 'h' },
                { "timeout-scale", required_argument, NULL, 't' },
                { "repeat", required_argument, NULL, 'r' },
                { "smtputf8", no_argument, NULL, 'u' },
                { "tls-verify", required_argument, NULL, 'v' },
                { "sni", required_argument, NULL, 'n' },
                {},
        };
        SmtpClientOptions o = { .tls = SMTP_TLS_MAY, .helo_name = "smtp-deliver.test" };
        Driver d = { .repeat = 1 };
        _cleanup_close_ int fd = -1;
        bool force_utf8 = false, eightbit, utf8_header;
        double scale = 1.0;
        uint64_t size;
        int c, r;

        log_setup(NULL, LOG_TARGET_STDERR);
        (void) signal(SIGPIPE, SIG_IGN);

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case 'l':
                        o.lmtp = true;
                        break;
                case 's':
                        o.tls = smtp_tls_policy_from_string(optarg);
                        if (o.tls < 0) {
                                usage();
                                return 1;
                        }
                        break;
                case 'h':
                        o.helo_name = optarg;
                        break;
                case 't':
                        scale = strtod(optarg, NULL);
                        if (!(scale > 0)) {
                                usage();
                                return 1;
                        }
                        break;
                case 'r':
                        d.repeat = (unsigned) strtoul(optarg, NULL, 10);
                        if (d.repeat < 1 || d.repeat > 100) {
                                usage();
                                return 1;
                        }
                        break;
                case 'u':
                        force_utf8 = true;
                        break;
                case 'v':
                        o.tls_verify = verify;
                        o.tls_verify_userdata = &d;
                        d.verify_reject = streq_ptr(optarg, "reject");
                        break;
                case 'n':
                        o.tls_server_name = optarg;
                        break;
                default:
                        usage();
                        return 1;
                }
        }
        if (argc - optind < 4) {
                usage();
                return 1;
        }
        const char *host = argv[optind], *port = argv[optind + 1];

        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
        struct addrinfo *ai = NULL;
        r = getaddrinfo(host, port, &hints, &ai);
        if (r != 0) {
                log_error("%s:%s: %s (numeric addresses only)", host, port, gai_strerror(r));
                return 1;
        }

        r = read_message(&fd, &size, &eightbit, &utf8_header);
        if (r < 0) {
                freeaddrinfo(ai);
                log_error_errno(r, "reading the message: %m");
                return 1;
        }

        d.message = (SmtpMessage) {
                .from = argv[optind + 2],
                .rcpts = (const char *const *) (argv + optind + 3),
                .n_rcpts = (size_t) (argc - optind - 3),
                .fd = fd,
                .size = size,
                .eightbit = eightbit,
                .smtputf8 = force_utf8 || utf8_header,
        };
        smtp_timeouts_scale(&o.timeouts, scale);
        o.on_event = on_event;
        o.userdata = &d;

        r = sd_event_new(&d.event);
        if (r >= 0)
                r = smtp_client_connect(d.event, ai->ai_addr, ai->ai_addrlen, &o, &d.client);
        freeaddrinfo(ai);
        if (r < 0) {
                log_error_errno(r, "setting up the client: %m");
                sd_event_unref(d.event);
                return 1;
        }
        r = smtp_client_send(d.client, &d.message);
        if (r < 0) {
                log_error_errno(r, "send: %m");
                smtp_client_free(d.client);
                sd_event_unref(d.event);
                return 1;
        }
        d.sent = 1;

        r = sd_event_loop(d.event);
        smtp_client_free(d.client);
        sd_event_unref(d.event);
        if (r < 0) {
                log_error_errno(r, "event loop: %m");
                return 1;
        }
        return d.any_failed ? 2 : 0;
}
