/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>

#include "macro.h"
#include "org.varlink.service.varlink.h"
#include "utf8.h"
#include "varlink.h"
#include "varlink-idl.h"

/* Bytes asked of the kernel per read; the input buffer grows as needed up to
 * the message limit. */
#define READ_SIZE (64U * 1024U)
/* Stop reading more input while this much is parsed-pending (a call is in
 * flight or the peer does not read its replies): that is our backpressure. */
#define INPUT_PENDING_MAX (256U * 1024U)
/* Stop dispatching further calls while this much output waits to be written. */
#define OUTPUT_PENDING_MAX (1U * 1024U * 1024U)
/* A "more" stream that outruns its reader is cut here (-ENOBUFS). */
#define OUTPUT_HARD_MAX(link) MAX((link)->message_max * 4U, 16U * 1024U * 1024U)
#define ACCEPT_BURST 64

/* The org.varlink.service definition every server serves (varlink.h). */
const char *const varlink_service_idl = org_varlink_service_varlink;

typedef struct VarlinkMethodEntry {
        char *name; /* unqualified */
        VarlinkMethod cb;
        VarlinkMethodFlags flags;
} VarlinkMethodEntry;

typedef struct VarlinkInterface {
        const char *idl_text;
        VarlinkIdl *idl;
        VarlinkMethodEntry *methods;
        unsigned n_methods;
} VarlinkInterface;

struct VarlinkServer {
        sd_event *event;
        VarlinkServerInfo info;
        VarlinkInterface *interfaces;
        unsigned n_interfaces;

        sd_event_source **listeners;
        unsigned n_listeners;
        sd_event_source *accept_pause; /* re-enables the listeners after running out of fds */

        Varlink **connections; /* unordered; link->server_index is its slot */
        unsigned n_connections;
        bool draining;         /* connections end once nothing is owed on them */
        unsigned connections_max;
        size_t message_max;
        uint64_t n_calls;

        VarlinkConnectFn on_connect;
        VarlinkDisconnectFn on_disconnect;
        void *userdata;
};

/* fds that arrived with the byte at absolute input offset `offset`. */
typedef struct FdBatch {
        uint64_t offset;
        int fds[VARLINK_FDS_MAX];
        unsigned n;
} FdBatch;

/* fds to send with the output bytes [start, end) (absolute offsets). */
typedef struct FdAttachment {
        uint64_t start, end;
        int fds[VARLINK_FDS_MAX];
        unsigned n;
} FdAttachment;

typedef struct PendingCall {
        VarlinkReplyFn cb;
        void *userdata;
        VarlinkCallFlags flags;
        uint64_t deadline; /* CLOCK_MONOTONIC usec, 0 = none */
} PendingCall;

struct Varlink {
        unsigned n_ref;
        int fd;
        sd_event *event;
        sd_event_source *io;
        sd_event_source *defer;
        sd_event_source *timer;

        VarlinkServer *server; /* NULL on the client side */
        unsigned server_index;

        /* input */
        char *in;
        size_t in_size, in_pos, in_cap;
        uint64_t in_base; /* absolute offset of in[0] */
        FdBatch *fd_batches;
        unsigned n_fd_batches;
        bool read_eof;
        json_tokener *tok;

        /* the message being handled */
        int msg_fds[VARLINK_FDS_MAX];
        unsigned n_msg_fds;

        /* output */
        char *out;
        size_t out_size, out_pos, out_cap;
        uint64_t out_base; /* absolute offset of out[0] */
        FdAttachment *attachments;
        unsigned n_attachments;
        int push_fds[VARLINK_FDS_MAX];
        unsigned n_push_fds;

        /* server side: the call in progress */
        json_object *call;
        const char *call_method;
        VarlinkCallFlags call_flags;
        bool call_pending;
        bool dispatching;

        /* client side */
        PendingCall *pending;
        unsigned n_pending, pending_cap;
        uint64_t timeout;
        json_object *sync_reply; /* last reply of a sync call */
        char *sync_error;
        bool sync_done;
        int sync_result;

        size_t message_max;
        bool connected;
        struct ucred ucred;
        bool have_ucred;
        void *userdata;
};

static int varlink_process(Varlink *link);
static void varlink_update_events(Varlink *link);
static void varlink_disconnect(Varlink *link);

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

static void close_fds(int *fds, unsigned n) {
        for (unsigned i = 0; i < n; i++)
                safe_close(fds[i]);
}

static int grow(char **buf, size_t *cap, size_t need) {
        if (need <= *cap)
                return 0;
        size_t n = *cap ? *cap : 4096;
        while (n < need) {
                if (n > SIZE_MAX / 2)
                        return -ENOMEM;
                n *= 2;
        }
        char *p = realloc(*buf, n);
        if (!p)
                return -ENOMEM;
        *buf = p;
        *cap = n;
        return 0;
}

/* ---- lifecycle -------------------------------------------------------- */

static int varlink_new(sd_event *e, int fd, Varlink **ret) {
        Varlink *link = calloc(1, sizeof *link);
        if (!link) {
                safe_close(fd);
                return -ENOMEM;
        }
        link->n_ref = 1;
        link->fd = fd;
        link->event = e ? sd_event_ref(e) : NULL;
        link->message_max = VARLINK_DEFAULT_MESSAGE_MAX;
        link->timeout = VARLINK_DEFAULT_TIMEOUT_USEC;
        link->connected = true;
        socklen_t sl = sizeof link->ucred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &link->ucred, &sl) == 0 && sl == sizeof link->ucred)
                link->have_ucred = true;
        *ret = link;
        return 0;
}

static int io_handler(sd_event_source *s, int fd, uint32_t revents, void *userdata);
static int defer_handler(sd_event_source *s, void *userdata);
static int timer_handler(sd_event_source *s, uint64_t usec, void *userdata);

static int varlink_attach_event(Varlink *link) {
        int r;

        if (!link->event)
                return 0;
        r = sd_event_add_io(link->event, &link->io, link->fd, EPOLLIN, io_handler, link);
        if (r < 0)
                return r;
        r = sd_event_add_defer(link->event, &link->defer, defer_handler, link);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(link->defer, SD_EVENT_OFF);
}

static void varlink_free(Varlink *link) {
        /* disconnect takes and drops a reference of its own: keep it from
         * coming back here. */
        link->n_ref = 1;
        varlink_disconnect(link);
        free(link->in);
        free(link->out);
        free(link->fd_batches);
        free(link->attachments);
        free(link->pending);
        json_object_put(link->sync_reply);
        free(link->sync_error);
        if (link->tok)
                json_tokener_free(link->tok);
        if (link->event)
                sd_event_unref(link->event);
        free(link);
}

Varlink *varlink_ref(Varlink *link) {
        if (link)
                link->n_ref++;
        return link;
}

Varlink *varlink_unref(Varlink *link) {
        if (!link)
                return NULL;
        assert(link->n_ref > 0);
        if (--link->n_ref == 0)
                varlink_free(link);
        return NULL;
}

static void server_remove_connection(VarlinkServer *s, Varlink *link) {
        unsigned i = link->server_index;
        assert(i < s->n_connections && s->connections[i] == link);
        s->connections[i] = s->connections[--s->n_connections];
        s->connections[i]->server_index = i;
        link->server = NULL;
        if (s->on_disconnect)
                s->on_disconnect(s, link, s->userdata);
        varlink_unref(link);
}

/* Fails every pending client call with a local error. */
static void fail_pending(Varlink *link, const char *error) {
        while (link->n_pending > 0) {
                PendingCall c = link->pending[0];
                memmove(link->pending, link->pending + 1, --link->n_pending * sizeof *link->pending);
                if (c.cb)
                        c.cb(link, NULL, error, VARLINK_REPLY_LOCAL, c.userdata);
        }
}

static void varlink_disconnect(Varlink *link) {
        if (!link->connected && link->fd < 0)
                return;
        link->connected = false;
        link->io = sd_event_source_disable_unref(link->io);
        link->defer = sd_event_source_disable_unref(link->defer);
        link->timer = sd_event_source_disable_unref(link->timer);
        link->fd = safe_close(link->fd);
        for (unsigned i = 0; i < link->n_fd_batches; i++)
                close_fds(link->fd_batches[i].fds, link->fd_batches[i].n);
        link->n_fd_batches = 0;
        for (unsigned i = 0; i < link->n_attachments; i++)
                close_fds(link->attachments[i].fds, link->attachments[i].n);
        link->n_attachments = 0;
        close_fds(link->push_fds, link->n_push_fds);
        link->n_push_fds = 0;
        close_fds(link->msg_fds, link->n_msg_fds);
        link->n_msg_fds = 0;
        json_object_put(link->call);
        link->call = NULL;
        link->call_pending = false;

        /* Keep ourselves alive while callbacks run. */
        varlink_ref(link);
        fail_pending(link, VARLINK_ERROR_DISCONNECTED);
        if (link->server)
                server_remove_connection(link->server, link);
        varlink_unref(link);
}

void varlink_close(Varlink *link) {
        if (link)
                varlink_disconnect(link);
}

bool varlink_is_connected(Varlink *link) {
        return link && link->connected;
}

void varlink_set_userdata(Varlink *link, void *userdata) {
        link->userdata = userdata;
}
void *varlink_get_userdata(Varlink *link) {
        return link->userdata;
}
VarlinkServer *varlink_get_server(Varlink *link) {
        return link->server;
}
void varlink_set_timeout(Varlink *link, uint64_t usec) {
        link->timeout = usec;
}
void varlink_set_message_max(Varlink *link, size_t max) {
        link->message_max = max;
}

int varlink_get_peer_uid(Varlink *link, uid_t *ret) {
        if (!link->have_ucred)
                return -ENODATA;
        *ret = link->ucred.uid;
        return 0;
}

int varlink_get_peer_pid(Varlink *link, pid_t *ret) {
        if (!link->have_ucred)
                return -ENODATA;
        *ret = link->ucred.pid;
        return 0;
}

/* ---- output ----------------------------------------------------------- */

static size_t out_pending(const Varlink *link) {
        return link->out_size - link->out_pos;
}

/* Appends one complete message (JSON text without the NUL, given in parts)
 * to the output, with the fds queued by varlink_push_fd(). */
static int enqueue_message_parts(Varlink *link, const struct iovec *parts, size_t n_parts) {
        size_t len = 0;
        int r;

        for (size_t i = 0; i < n_parts; i++)
                len += parts[i].iov_len;

        if (!link->connected)
                return -ENOTCONN;
        if (len + 1 > link->message_max)
                return -EMSGSIZE;
        if (out_pending(link) + len + 1 > OUTPUT_HARD_MAX(link))
                return -ENOBUFS;

        /* Compact before growing. */
        if (link->out_pos > 0 && link->out_pos == link->out_size) {
                link->out_base += link->out_pos;
                link->out_pos = link->out_size = 0;
        } else if (link->out_pos > link->out_cap / 2) {
                memmove(link->out, link->out + link->out_pos, out_pending(link));
                link->out_base += link->out_pos;
                link->out_size -= link->out_pos;
                link->out_pos = 0;
        }

        r = grow(&link->out, &link->out_cap, link->out_size + len + 1);
        if (r < 0)
                return r;

        if (link->n_push_fds > 0) {
                FdAttachment *a = realloc(link->attachments, (link->n_attachments + 1) * sizeof *a);
                if (!a)
                        return -ENOMEM;
                link->attachments = a;
                a = &link->attachments[link->n_attachments++];
                a->start = link->out_base + link->out_size;
                a->end = a->start + len + 1;
                memcpy(a->fds, link->push_fds, link->n_push_fds * sizeof(int));
                a->n = link->n_push_fds;
                link->n_push_fds = 0;
        }

        for (size_t i = 0; i < n_parts; i++) {
                memcpy(link->out + link->out_size, parts[i].iov_base, parts[i].iov_len);
                link->out_size += parts[i].iov_len;
        }
        link->out[link->out_size++] = 0;
        return 0;
}

static int enqueue_message(Varlink *link, const char *json, size_t len) {
        struct iovec part = { .iov_base = (void *) json, .iov_len = len };
        return enqueue_message_parts(link, &part, 1);
}

static int enqueue_json(Varlink *link, json_object *o) {
        size_t len;
        const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        if (!s)
                return -ENOMEM;
        return enqueue_message(link, s, len);
}

/* Writes as much output as the socket takes. Returns 0, or -errno on a
 * broken connection. */
static int flush_output(Varlink *link) {
        while (out_pending(link) > 0) {
                uint64_t pos = link->out_base + link->out_pos;
                size_t len = out_pending(link);
                FdAttachment *a = link->n_attachments > 0 ? &link->attachments[0] : NULL;
                struct iovec iov;
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
                union {
                        struct cmsghdr cmsg;
                        char buf[CMSG_SPACE(sizeof(int) * VARLINK_FDS_MAX)];
                } control;
                bool with_fds = false;

                if (a && a->start == pos) {
                        /* The fds ride on the first bytes of their message, and
                         * that sendmsg carries nothing of the next message, so
                         * the receiver can tell whose fds they are. */
                        len = MIN(len, (size_t) (a->end - pos));
                        memset(&control, 0, sizeof control);
                        mh.msg_control = control.buf;
                        mh.msg_controllen = CMSG_SPACE(sizeof(int) * a->n);
                        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                        c->cmsg_level = SOL_SOCKET;
                        c->cmsg_type = SCM_RIGHTS;
                        c->cmsg_len = CMSG_LEN(sizeof(int) * a->n);
                        memcpy(CMSG_DATA(c), a->fds, sizeof(int) * a->n);
                        with_fds = true;
                } else if (a && a->start > pos)
                        len = MIN(len, (size_t) (a->start - pos));

                iov.iov_base = link->out + link->out_pos;
                iov.iov_len = len;
                ssize_t n = sendmsg(link->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        return -errno;
                }
                if (with_fds) {
                        close_fds(a->fds, a->n);
                        memmove(link->attachments, link->attachments + 1, --link->n_attachments * sizeof *a);
                }
                link->out_pos += (size_t) n;
        }
        return 0;
}

/* ---- input ------------------------------------------------------------ */

static int read_input(Varlink *link) {
        int r;

        if (link->in_pos > 0 && (link->in_pos == link->in_size || link->in_pos > link->in_cap / 2)) {
                memmove(link->in, link->in + link->in_pos, link->in_size - link->in_pos);
                link->in_base += link->in_pos;
                link->in_size -= link->in_pos;
                link->in_pos = 0;
        }
        r = grow(&link->in, &link->in_cap, link->in_size + READ_SIZE);
        if (r < 0)
                return r;

        struct iovec iov = { .iov_base = link->in + link->in_size, .iov_len = link->in_cap - link->in_size };
        union {
                struct cmsghdr cmsg;
                char buf[CMSG_SPACE(sizeof(int) * VARLINK_FDS_MAX)];
        } control;
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = control.buf,
                .msg_controllen = sizeof control.buf,
        };
        ssize_t n = recvmsg(link->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                return -errno;
        }

        int fds[VARLINK_FDS_MAX];
        unsigned n_fds = 0;
        bool bad = (mh.msg_flags & MSG_CTRUNC) != 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                unsigned k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                int *p = (int *) (void *) CMSG_DATA(c);
                for (unsigned i = 0; i < k; i++) {
                        if (n_fds < VARLINK_FDS_MAX)
                                fds[n_fds++] = p[i];
                        else {
                                safe_close(p[i]);
                                bad = true;
                        }
                }
        }
        if (bad || (n_fds > 0 && n == 0)) {
                close_fds(fds, n_fds);
                return -EBADMSG;
        }

        if (n == 0) {
                link->read_eof = true;
                return 0;
        }

        if (n_fds > 0) {
                /* The kernel ends a read right after the chunk that carried
                 * fds, and senders put fds on the first bytes of their
                 * message only: so the fds belong to the message holding the
                 * last byte read now. */
                FdBatch *b = realloc(link->fd_batches, (link->n_fd_batches + 1) * sizeof *b);
                if (!b) {
                        close_fds(fds, n_fds);
                        return -ENOMEM;
                }
                link->fd_batches = b;
                b = &link->fd_batches[link->n_fd_batches++];
                b->offset = link->in_base + link->in_size + (size_t) n - 1;
                memcpy(b->fds, fds, n_fds * sizeof(int));
                b->n = n_fds;
        }
        link->in_size += (size_t) n;
        return 1;
}

/* Finds the next complete message. Returns 1 and sets *ret (parsed object)
 * and moves its fds to msg_fds; 0 if none is complete yet; -EMSGSIZE if the
 * incomplete one is already too large; -EBADMSG on bad JSON or fds. */
static int next_message(Varlink *link, json_object **ret) {
        char *start = link->in + link->in_pos;
        size_t avail = link->in_size - link->in_pos;
        if (avail == 0)
                return 0;
        char *nul = memchr(start, 0, avail);

        if (!nul)
                return avail >= link->message_max ? -EMSGSIZE : 0;
        size_t len = (size_t) (nul - start);
        if (len + 1 > link->message_max)
                return -EMSGSIZE;

        uint64_t abs_start = link->in_base + link->in_pos, abs_end = abs_start + len;
        link->in_pos += len + 1;

        assert(link->n_msg_fds == 0);
        while (link->n_fd_batches > 0 && link->fd_batches[0].offset <= abs_end) {
                FdBatch *b = &link->fd_batches[0];
                if (b->offset < abs_start || link->n_msg_fds > 0) {
                        /* Two batches for one message, or fds not at its start:
                         * nothing a conforming sender does. */
                        close_fds(b->fds, b->n);
                        memmove(link->fd_batches, link->fd_batches + 1, --link->n_fd_batches * sizeof *b);
                        return -EBADMSG;
                }
                memcpy(link->msg_fds, b->fds, b->n * sizeof(int));
                link->n_msg_fds = b->n;
                memmove(link->fd_batches, link->fd_batches + 1, --link->n_fd_batches * sizeof *b);
        }

        if (!link->tok) {
                /* Depth 64 is plenty for any halyard interface. */
                link->tok = json_tokener_new_ex(64);
                if (!link->tok)
                        return -ENOMEM;
        }
        /* Strict JSON and well-formed UTF-8 only (json-c lets overlong forms
         * and surrogates through): what we accept we may echo. */
        if (!utf8_valid(start, len))
                return -EBADMSG;
        json_tokener_reset(link->tok);
        json_tokener_set_flags(link->tok, JSON_TOKENER_STRICT);
        json_object *o = json_tokener_parse_ex(link->tok, start, (int) len);
        enum json_tokener_error jerr = json_tokener_get_error(link->tok);
        size_t used = json_tokener_get_parse_end(link->tok);
        if (!o || jerr != json_tokener_success || used != len || !json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return -EBADMSG;
        }
        *ret = o;
        return 1;
}

static void release_message_fds(Varlink *link) {
        close_fds(link->msg_fds, link->n_msg_fds);
        link->n_msg_fds = 0;
}

unsigned varlink_n_fds(Varlink *link) {
        return link->n_msg_fds;
}

int varlink_take_fd(Varlink *link, unsigned index) {
        if (index >= link->n_msg_fds || link->msg_fds[index] < 0)
                return -ENXIO;
        return TAKE_FD(link->msg_fds[index]);
}

int varlink_push_fd(Varlink *link, int fd) {
        if (fd < 0)
                return -EBADF;
        if (link->n_push_fds >= VARLINK_FDS_MAX) {
                safe_close(fd);
                return -ENOBUFS;
        }
        link->push_fds[link->n_push_fds] = fd;
        return (int) link->n_push_fds++;
}

/* ---- server: answering ------------------------------------------------- */

static bool name_is_valid(const char *s) {
        if (!s || !*s || strlen(s) > 255)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '.' || *p == '-' || *p == '_'))
                        return false;
        return true;
}

static void call_done(Varlink *link) {
        json_object_put(link->call);
        link->call = NULL;
        link->call_method = NULL;
        link->call_pending = false;
        /* Not from inside dispatch: let the loop go on with the next call. */
        if (!link->dispatching && link->defer)
                (void) sd_event_source_set_enabled(link->defer, SD_EVENT_ONESHOT);
}

/* Sends {"parameters":P[,"continues":true]} or {"error":E,"parameters":P}. */
static int send_reply(Varlink *link, const char *error, json_object *parameters, bool continues) {
        const char *p = "{}";
        size_t plen = 2;
        char head[300];
        int r;

        if (parameters) {
                if (!json_object_is_type(parameters, json_type_object))
                        return -EINVAL;
                p = json_object_to_json_string_length(parameters, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &plen);
                if (!p)
                        return -ENOMEM;
        }
        int hlen = error ? snprintf(head, sizeof head, "{\"error\":\"%s\",\"parameters\":", error)
                         : snprintf(head, sizeof head, "{\"parameters\":");
        const char *tail = continues ? ",\"continues\":true}" : "}";
        struct iovec parts[] = {
                { .iov_base = head, .iov_len = (size_t) hlen },
                { .iov_base = (void *) p, .iov_len = plen },
                { .iov_base = (void *) tail, .iov_len = strlen(tail) },
        };
        r = enqueue_message_parts(link, parts, ELEMENTSOF(parts));
        if (r == -EMSGSIZE && !error) {
                /* Tell the caller rather than leave it waiting. */
                json_object *e = json_object_new_object();
                if (e)
                        json_object_object_add(e, "limit", json_object_new_int64((int64_t) link->message_max));
                (void) send_reply(link, VARLINK_ERROR_MESSAGE_TOO_LARGE, e, false);
                json_object_put(e);
        }
        return r;
}

static int answer(Varlink *link, const char *error, json_object *parameters, bool continues) {
        int r;

        if (!link->call_pending)
                return -EBADMSG;
        if (error && !name_is_valid(error))
                return -EINVAL;
        if (continues && !(link->call_flags & VARLINK_CALL_MORE))
                return -EPROTO;
        if (link->call_flags & VARLINK_CALL_ONEWAY) {
                if (!continues)
                        call_done(link);
                return 0;
        }

        r = send_reply(link, error, parameters, continues);
        if (r == -EMSGSIZE) {
                /* A final error reply went out instead; the call is over. */
                call_done(link);
                return r;
        }
        if (r < 0) {
                /* Out of buffer or memory: the stream cannot go on. */
                varlink_disconnect(link);
                return r;
        }
        if (!continues)
                call_done(link);
        else if (!link->dispatching && link->defer)
                (void) sd_event_source_set_enabled(link->defer, SD_EVENT_ONESHOT);
        return 0;
}

int varlink_reply(Varlink *link, json_object *parameters) {
        return answer(link, NULL, parameters, false);
}

int varlink_notify(Varlink *link, json_object *parameters) {
        return answer(link, NULL, parameters, true);
}

int varlink_error(Varlink *link, const char *error, json_object *parameters) {
        return answer(link, error, parameters, false);
}

static int error_with_string(Varlink *link, const char *error, const char *key, const char *value) {
        json_object *p = json_object_new_object();
        if (!p)
                return -ENOMEM;
        if (json_object_object_add(p, key, json_object_new_string(value ? value : "")) < 0) {
                json_object_put(p);
                return -ENOMEM;
        }
        int r = varlink_error(link, error, p);
        json_object_put(p);
        return r;
}

int varlink_error_invalid_parameter(Varlink *link, const char *parameter) {
        return error_with_string(link, VARLINK_ERROR_INVALID_PARAMETER, "parameter", parameter);
}

int varlink_error_errno(Varlink *link, int error) {
        json_object *p = json_object_new_object();
        if (!p)
                return -ENOMEM;
        json_object_object_add(p, "errno", json_object_new_int(error < 0 ? -error : error));
        int r = varlink_error(link, "io.halyard.Varlink.InternalError", p);
        json_object_put(p);
        return r;
}

const char *varlink_current_method(Varlink *link) {
        return link->call_pending ? link->call_method : NULL;
}

/* ---- server: dispatching ------------------------------------------------ */

static VarlinkInterface *server_find_interface(VarlinkServer *s, const char *name, size_t len) {
        for (unsigned i = 0; i < s->n_interfaces; i++) {
                const char *n = varlink_idl_name(s->interfaces[i].idl);
                if (strlen(n) == len && memcmp(n, name, len) == 0)
                        return &s->interfaces[i];
        }
        return NULL;
}

static int builtin_get_info(Varlink *link, VarlinkServer *s) {
        json_object *p = json_object_new_object(), *ifs = json_object_new_array();
        if (!p || !ifs) {
                json_object_put(p);
                json_object_put(ifs);
                return -ENOMEM;
        }
        json_object_object_add(p, "vendor", json_object_new_string(s->info.vendor ? s->info.vendor : ""));
        json_object_object_add(p, "product", json_object_new_string(s->info.product ? s->info.product : ""));
        json_object_object_add(p, "version", json_object_new_string(s->info.version ? s->info.version : ""));
        json_object_object_add(p, "url", json_object_new_string(s->info.url ? s->info.url : ""));
        for (unsigned i = 0; i < s->n_interfaces; i++)
                json_object_array_add(ifs, json_object_new_string(varlink_idl_name(s->interfaces[i].idl)));
        json_object_object_add(p, "interfaces", ifs);
        int r = varlink_reply(link, p);
        json_object_put(p);
        return r;
}

static int builtin_get_interface_description(Varlink *link, VarlinkServer *s, json_object *params) {
        const char *name = json_object_get_string(json_object_object_get(params, "interface"));
        VarlinkInterface *iface = server_find_interface(s, name, strlen(name));
        if (!iface)
                return error_with_string(link, VARLINK_ERROR_INTERFACE_NOT_FOUND, "interface", name);
        json_object *p = json_object_new_object();
        if (!p)
                return -ENOMEM;
        json_object_object_add(p, "description", json_object_new_string(iface->idl_text));
        int r = varlink_reply(link, p);
        json_object_put(p);
        return r;
}

/* Takes the call object; answers it now or leaves it pending. Returns
 * negative errno only for a protocol violation that ends the connection. */
static int server_dispatch(Varlink *link, json_object *call) {
        VarlinkServer *s = link->server;
        json_object *method_o = NULL, *params = NULL, *v;
        VarlinkCallFlags flags = 0;
        int r;

        link->call = call;
        link->call_pending = true;
        link->call_flags = 0;
        s->n_calls++;

        /* Tolerant of what we receive: unknown keys are ignored, missing or
         * null parameters mean {}. But a call must name its method. */
        if (!json_object_object_get_ex(call, "method", &method_o) || !json_object_is_type(method_o, json_type_string))
                return -EBADMSG;
        if (json_object_object_get_ex(call, "parameters", &params) && params &&
            !json_object_is_type(params, json_type_object))
                return -EBADMSG;
        if (json_object_object_get_ex(call, "oneway", &v) && v) {
                if (!json_object_is_type(v, json_type_boolean))
                        return -EBADMSG;
                if (json_object_get_boolean(v))
                        flags |= VARLINK_CALL_ONEWAY;
        }
        if (json_object_object_get_ex(call, "more", &v) && v) {
                if (!json_object_is_type(v, json_type_boolean))
                        return -EBADMSG;
                if (json_object_get_boolean(v))
                        flags |= VARLINK_CALL_MORE;
        }
        if ((flags & VARLINK_CALL_ONEWAY) && (flags & VARLINK_CALL_MORE))
                return -EBADMSG;
        link->call_flags = flags;

        const char *method = json_object_get_string(method_o);
        link->call_method = method;
        if (!params) {
                params = json_object_new_object();
                if (!params)
                        return -ENOMEM;
                json_object_object_add(call, "parameters", params);
        }

        bool upgrade = json_object_object_get_ex(call, "upgrade", &v) && json_object_get_boolean(v);
        const char *dot = strrchr(method, '.');
        VarlinkInterface *iface = dot ? server_find_interface(s, method, (size_t) (dot - method)) : NULL;
        if (!iface) {
                if (!dot || !name_is_valid(method))
                        return error_with_string(link, VARLINK_ERROR_METHOD_NOT_FOUND, "method", method);
                _cleanup_free_ char *ifname = strndup(method, (size_t) (dot - method));
                return error_with_string(link, VARLINK_ERROR_INTERFACE_NOT_FOUND, "interface", ifname);
        }
        const char *member = dot + 1;
        if (!varlink_idl_has_method(iface->idl, member))
                return error_with_string(link, VARLINK_ERROR_METHOD_NOT_FOUND, "method", method);
        if (upgrade)
                return error_with_string(link, VARLINK_ERROR_METHOD_NOT_IMPLEMENTED, "method", method);

        _cleanup_free_ char *bad = NULL;
        r = varlink_idl_validate_input(iface->idl, member, params, &bad);
        if (r == -EINVAL)
                return varlink_error_invalid_parameter(link, bad ? bad : "parameters");
        if (r < 0)
                return varlink_error_errno(link, r);

        if (iface == &s->interfaces[0]) {
                if (link->n_msg_fds > 0)
                        return varlink_error_invalid_parameter(link, "fileDescriptors");
                if (strcmp(member, "GetInfo") == 0)
                        return builtin_get_info(link, s);
                return builtin_get_interface_description(link, s, params);
        }

        VarlinkMethodEntry *m = NULL;
        for (unsigned i = 0; i < iface->n_methods; i++)
                if (strcmp(iface->methods[i].name, member) == 0)
                        m = &iface->methods[i];
        if (!m || !m->cb)
                return error_with_string(link, VARLINK_ERROR_METHOD_NOT_IMPLEMENTED, "method", method);
        if ((m->flags & VARLINK_METHOD_REQUIRES_MORE) && !(flags & VARLINK_CALL_MORE))
                return varlink_error(link, VARLINK_ERROR_EXPECTED_MORE, NULL);
        if (link->n_msg_fds > 0 && !(m->flags & VARLINK_METHOD_ACCEPTS_FDS))
                return varlink_error_invalid_parameter(link, "fileDescriptors");

        r = m->cb(link, params, flags, s->userdata);
        if (r < 0 && link->call_pending && link->call == call) {
                if (r == -EINVAL)
                        return varlink_error_invalid_parameter(link, "parameters");
                return varlink_error_errno(link, r);
        }
        return 0;
}

static bool has_complete_message(const Varlink *link) {
        return link->in_size > link->in_pos && memchr(link->in + link->in_pos, 0, link->in_size - link->in_pos);
}

static bool server_can_dispatch(const Varlink *link) {
        return link->connected && !link->call_pending && out_pending(link) < OUTPUT_PENDING_MAX;
}

static int server_process_input(Varlink *link) {
        int r;

        /* Bounded per round so one busy connection cannot starve the others. */
        for (unsigned budget = 128; budget > 0 && server_can_dispatch(link); budget--) {
                json_object *call = NULL;
                r = next_message(link, &call);
                if (r == 0)
                        return 0;
                if (r == -EMSGSIZE) {
                        /* Say why before hanging up; the stream cannot be resynced. */
                        json_object *p = json_object_new_object();
                        if (p)
                                json_object_object_add(p, "limit", json_object_new_int64((int64_t) link->message_max));
                        (void) send_reply(link, VARLINK_ERROR_MESSAGE_TOO_LARGE, p, false);
                        json_object_put(p);
                        (void) flush_output(link);
                        return r;
                }
                if (r < 0)
                        return r;

                r = server_dispatch(link, call);
                release_message_fds(link);
                /* A failure after an answer went out (a reply over the size
                 * limit, replaced by an error) leaves the connection usable. */
                if (r < 0 && link->call_pending)
                        return r;
        }
        return 0;
}

/* ---- client: replies ------------------------------------------------------ */

static int client_handle_reply(Varlink *link, json_object *reply) {
        json_object *params = NULL, *err = NULL, *cont = NULL;

        if (link->n_pending == 0)
                return -EBADMSG;
        if (json_object_object_get_ex(reply, "parameters", &params) && params &&
            !json_object_is_type(params, json_type_object))
                return -EBADMSG;
        if (json_object_object_get_ex(reply, "error", &err) && err && !json_object_is_type(err, json_type_string))
                return -EBADMSG;
        bool continues = json_object_object_get_ex(reply, "continues", &cont) && json_object_get_boolean(cont);

        PendingCall c = link->pending[0];
        if (continues && (!(c.flags & VARLINK_CALL_MORE) || err))
                return -EBADMSG;
        if (!continues) {
                memmove(link->pending, link->pending + 1, --link->n_pending * sizeof *link->pending);
                if (link->timer) {
                        if (link->n_pending > 0 && link->pending[0].deadline > 0) {
                                (void) sd_event_source_set_time(link->timer, link->pending[0].deadline);
                                (void) sd_event_source_set_enabled(link->timer, SD_EVENT_ONESHOT);
                        } else
                                (void) sd_event_source_set_enabled(link->timer, SD_EVENT_OFF);
                }
        }

        json_object *empty = NULL;
        if (!params)
                params = empty = json_object_new_object();
        int r = c.cb ? c.cb(link, params, err ? json_object_get_string(err) : NULL,
                            continues ? VARLINK_REPLY_CONTINUES : 0, c.userdata)
                     : 0;
        json_object_put(empty);
        (void) r;
        return 0;
}

static int client_process_input(Varlink *link) {
        int r;

        while (link->connected) {
                json_object *reply = NULL;
                r = next_message(link, &reply);
                if (r <= 0)
                        return r;
                r = client_handle_reply(link, reply);
                release_message_fds(link);
                json_object_put(reply);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- event loop glue ------------------------------------------------------ */

static void varlink_update_events(Varlink *link) {
        if (!link->io)
                return;
        uint32_t ev = 0;
        size_t unparsed = link->in_size - link->in_pos;
        bool busy = link->server ? (link->call_pending || out_pending(link) >= OUTPUT_PENDING_MAX)
                                 : false;
        if (!link->read_eof && !(busy && unparsed >= INPUT_PENDING_MAX))
                ev |= EPOLLIN;
        if (out_pending(link) > 0)
                ev |= EPOLLOUT;
        (void) sd_event_source_set_io_events(link->io, ev);
        /* epoll reports a hang-up whatever we ask for: after EOF with nothing
         * to write, only an answer (through the defer source) wakes us. */
        (void) sd_event_source_set_enabled(link->io, ev ? SD_EVENT_ON : SD_EVENT_OFF);
}

/* One round of work: read what is there, handle complete messages, write.
 * Returns negative errno when the connection must end. */
static int varlink_process(Varlink *link) {
        int r;

        link->dispatching = true;
        r = link->server ? server_process_input(link) : client_process_input(link);
        link->dispatching = false;
        if (r < 0)
                return r;
        if (!link->connected)
                return 0;
        r = flush_output(link);
        if (r < 0)
                return r;

        /* Draining: a connection with no call in progress and its answers
         * out is done; pipelined calls not yet taken are not answered. */
        if (link->server && link->server->draining && !link->call_pending && out_pending(link) == 0)
                return -ECONNRESET;
        if (link->read_eof) {
                /* A peer that shut down its write side still gets the answers
                 * to everything it sent before. */
                bool more_work = link->server && (link->call_pending || has_complete_message(link));
                if (!more_work && out_pending(link) == 0)
                        return -ECONNRESET;
        }
        return 0;
}

static void varlink_run(Varlink *link, bool readable) {
        _cleanup_(varlink_unrefp) Varlink *ref = varlink_ref(link);
        int r = 0;

        if (readable && link->connected) {
                r = read_input(link);
                if (r < 0)
                        goto fail;
        }
        r = varlink_process(link);
        if (r < 0)
                goto fail;
        /* Input may hold complete messages we could not handle yet. */
        if (link->server && server_can_dispatch(link) && has_complete_message(link) && link->defer)
                (void) sd_event_source_set_enabled(link->defer, SD_EVENT_ONESHOT);
        varlink_update_events(link);
        return;
fail:
        varlink_disconnect(link);
}

static int io_handler(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Varlink *link = userdata;
        varlink_run(link, revents & (EPOLLIN | EPOLLHUP | EPOLLERR));
        return 0;
}

static int defer_handler(sd_event_source *s, void *userdata) {
        varlink_run(userdata, false);
        return 0;
}

static int timer_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        Varlink *link = userdata;
        _cleanup_(varlink_unrefp) Varlink *ref = varlink_ref(link);
        /* Replies are matched by order, so a late reply would be taken for
         * the next call's: a timeout ends the connection. */
        fail_pending(link, VARLINK_ERROR_TIMEOUT);
        varlink_disconnect(link);
        return 0;
}

/* ---- server setup ---------------------------------------------------------- */

static int server_add_interface_internal(VarlinkServer *s, const char *idl_text) {
        VarlinkIdl *idl = NULL;
        int r = varlink_idl_parse(idl_text, &idl, NULL);
        if (r < 0)
                return r;
        if (server_find_interface(s, varlink_idl_name(idl), strlen(varlink_idl_name(idl)))) {
                varlink_idl_free(idl);
                return -EEXIST;
        }
        VarlinkInterface *n = realloc(s->interfaces, (s->n_interfaces + 1) * sizeof *n);
        if (!n) {
                varlink_idl_free(idl);
                return -ENOMEM;
        }
        s->interfaces = n;
        s->interfaces[s->n_interfaces++] = (VarlinkInterface){ .idl_text = idl_text, .idl = idl };
        return 0;
}

int varlink_server_new(sd_event *e, const VarlinkServerInfo *info, VarlinkServer **ret) {
        VarlinkServer *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(e);
        if (info)
                s->info = *info;
        s->connections_max = VARLINK_DEFAULT_CONNECTIONS_MAX;
        s->message_max = VARLINK_DEFAULT_MESSAGE_MAX;
        int r = server_add_interface_internal(s, varlink_service_idl);
        if (r < 0) {
                varlink_server_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

VarlinkServer *varlink_server_free(VarlinkServer *s) {
        if (!s)
                return NULL;
        varlink_server_stop_listening(s);
        while (s->n_connections > 0)
                varlink_disconnect(s->connections[0]);
        free(s->connections);
        for (unsigned i = 0; i < s->n_interfaces; i++) {
                varlink_idl_free(s->interfaces[i].idl);
                for (unsigned j = 0; j < s->interfaces[i].n_methods; j++)
                        free(s->interfaces[i].methods[j].name);
                free(s->interfaces[i].methods);
        }
        free(s->interfaces);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

void varlink_server_set_userdata(VarlinkServer *s, void *userdata) {
        s->userdata = userdata;
}
void *varlink_server_get_userdata(VarlinkServer *s) {
        return s->userdata;
}
void varlink_server_set_connect_handlers(VarlinkServer *s, VarlinkConnectFn on_connect, VarlinkDisconnectFn on_disconnect) {
        s->on_connect = on_connect;
        s->on_disconnect = on_disconnect;
}
void varlink_server_set_limits(VarlinkServer *s, unsigned connections_max, size_t message_max) {
        if (connections_max > 0)
                s->connections_max = connections_max;
        if (message_max > 0)
                s->message_max = message_max;
}
unsigned varlink_server_n_connections(VarlinkServer *s) {
        return s->n_connections;
}
uint64_t varlink_server_n_calls(VarlinkServer *s) {
        return s->n_calls;
}

int varlink_server_add_interface(VarlinkServer *s, const char *idl_text) {
        return server_add_interface_internal(s, idl_text);
}

int varlink_server_bind_full(VarlinkServer *s, const char *method, VarlinkMethod cb, VarlinkMethodFlags flags) {
        const char *dot = method ? strrchr(method, '.') : NULL;
        if (!dot || !cb)
                return -EINVAL;
        VarlinkInterface *iface = server_find_interface(s, method, (size_t) (dot - method));
        if (!iface || iface == &s->interfaces[0] || !varlink_idl_has_method(iface->idl, dot + 1))
                return -ENOENT;
        for (unsigned i = 0; i < iface->n_methods; i++)
                if (strcmp(iface->methods[i].name, dot + 1) == 0) {
                        iface->methods[i].cb = cb;
                        iface->methods[i].flags = flags;
                        return 0;
                }
        VarlinkMethodEntry *m = realloc(iface->methods, (iface->n_methods + 1) * sizeof *m);
        if (!m)
                return -ENOMEM;
        iface->methods = m;
        char *name = strdup(dot + 1);
        if (!name)
                return -ENOMEM;
        iface->methods[iface->n_methods++] = (VarlinkMethodEntry){ .name = name, .cb = cb, .flags = flags };
        return 0;
}

int varlink_server_new_service(sd_event *e, const char *product, const char *interface_idl,
                               const VarlinkMethodBinding *methods, size_t n_methods, void *userdata,
                               VarlinkServer **ret) {
        const VarlinkServerInfo info = {
                .vendor = "halyard", .product = product, .version = HALYARD_VERSION, .url = "",
        };
        _cleanup_(varlink_server_freep) VarlinkServer *s = NULL;
        int r = varlink_server_new(e, &info, &s);
        if (r < 0)
                return r;
        varlink_server_set_userdata(s, userdata);
        r = varlink_server_add_interface(s, interface_idl);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_methods; i++) {
                r = varlink_server_bind_full(s, methods[i].method, methods[i].cb, methods[i].flags);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(s);
        return 0;
}

int varlink_server_bind(VarlinkServer *s, const char *method, VarlinkMethod cb) {
        return varlink_server_bind_full(s, method, cb, 0);
}

static int server_add_connection(VarlinkServer *s, int fd) {
        Varlink *link;
        int r;

        if (s->n_connections >= s->connections_max) {
                safe_close(fd);
                return -EMFILE;
        }
        r = varlink_new(s->event, fd, &link);
        if (r < 0)
                return r;
        link->message_max = s->message_max;
        r = varlink_attach_event(link);
        if (r < 0) {
                varlink_unref(link);
                return r;
        }
        Varlink **c = realloc(s->connections, (s->n_connections + 1) * sizeof *c);
        if (!c) {
                varlink_disconnect(link);
                varlink_unref(link);
                return -ENOMEM;
        }
        s->connections = c;
        link->server = s;
        link->server_index = s->n_connections;
        s->connections[s->n_connections++] = link; /* the server owns the reference */
        if (s->on_connect)
                s->on_connect(s, link, s->userdata);
        return 0;
}

#define ACCEPT_PAUSE_USEC (100ULL * 1000ULL)

static void listeners_enable(VarlinkServer *s, int how) {
        for (unsigned i = 0; i < s->n_listeners; i++)
                (void) sd_event_source_set_enabled(s->listeners[i], how);
}

static int on_accept_resume(sd_event_source *src, uint64_t usec, void *userdata) {
        listeners_enable(userdata, SD_EVENT_ON);
        return 0;
}

/* Out of fds or memory: the connection waits in the backlog and the socket
 * stays readable, so retrying at once would spin. Stop listening for a
 * moment; closing connections free fds meanwhile. */
static void accept_pause(VarlinkServer *s) {
        uint64_t now;
        int r = sd_event_now(s->event, CLOCK_MONOTONIC, &now);
        if (r >= 0)
                r = s->accept_pause ? sd_event_source_set_time(s->accept_pause, now + ACCEPT_PAUSE_USEC)
                                    : sd_event_add_time(s->event, &s->accept_pause, CLOCK_MONOTONIC,
                                                        now + ACCEPT_PAUSE_USEC, 0, on_accept_resume, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->accept_pause, SD_EVENT_ONESHOT);
        if (r >= 0)
                listeners_enable(s, SD_EVENT_OFF);
}

static int accept_handler(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        VarlinkServer *s = userdata;
        for (int i = 0; i < ACCEPT_BURST; i++) {
                int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (c < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                                accept_pause(s);
                        /* else EAGAIN, or a transient error (ECONNABORTED):
                         * try again at the next wakeup. */
                        return 0;
                }
                (void) server_add_connection(s, c);
        }
        return 0;
}

int varlink_server_listen_fd(VarlinkServer *s, int fd) {
        int listening = 0;
        socklen_t sl = sizeof listening;
        int r;

        if (fd < 0)
                return -EBADF;
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                r = negative_errno();
                safe_close(fd);
                return r;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &sl) < 0) {
                r = negative_errno();
                safe_close(fd);
                return r;
        }
        if (!listening)
                return server_add_connection(s, fd);

        sd_event_source **l = realloc(s->listeners, (s->n_listeners + 1) * sizeof *l);
        if (!l) {
                safe_close(fd);
                return -ENOMEM;
        }
        s->listeners = l;
        r = sd_event_add_io(s->event, &s->listeners[s->n_listeners], fd, EPOLLIN, accept_handler, s);
        if (r < 0) {
                safe_close(fd);
                return r;
        }
        (void) sd_event_source_set_io_fd_own(s->listeners[s->n_listeners], true);
        s->n_listeners++;
        return 0;
}

int varlink_address_to_sockaddr(const char *address, void *ret_sockaddr_un, socklen_t *ret_len) {
        struct sockaddr_un *sa = ret_sockaddr_un;
        const char *path = address;

        if (!address)
                return -EINVAL;
        if (strncmp(address, "unix:", 5) == 0)
                path = address + 5;
        else if (address[0] != '/' && strncmp(address, "./", 2) != 0)
                return -EPROTONOSUPPORT;
        if (strpbrk(path, ";?#"))
                return -EINVAL;
        size_t len = strlen(path);
        if (len == 0 || len >= sizeof sa->sun_path)
                return -EINVAL;
        memset(sa, 0, sizeof *sa);
        sa->sun_family = AF_UNIX;
        memcpy(sa->sun_path, path, len);
        if (path[0] == '@')
                sa->sun_path[0] = 0; /* abstract namespace */
        *ret_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '@' ? 0 : 1));
        return 0;
}

int varlink_server_listen_address(VarlinkServer *s, const char *address, mode_t mode) {
        struct sockaddr_un sa;
        socklen_t sl;
        int r;

        r = varlink_address_to_sockaddr(address, &sa, &sl);
        if (r < 0)
                return r;
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (sa.sun_path[0]) {
                struct stat st;
                if (lstat(sa.sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
                        (void) unlink(sa.sun_path);
        }
        mode_t old = umask(~mode & 0777);
        r = bind(fd, (struct sockaddr *) &sa, sl);
        umask(old);
        if (r < 0)
                return -errno;
        if (listen(fd, SOMAXCONN) < 0)
                return -errno;
        return varlink_server_listen_fd(s, TAKE_FD(fd));
}

void varlink_server_stop_listening(VarlinkServer *s) {
        s->accept_pause = sd_event_source_disable_unref(s->accept_pause);
        for (unsigned i = 0; i < s->n_listeners; i++)
                sd_event_source_disable_unref(s->listeners[i]);
        free(s->listeners);
        s->listeners = NULL;
        s->n_listeners = 0;
}

void varlink_server_drain(VarlinkServer *s) {
        varlink_server_stop_listening(s);
        s->draining = true;
        /* From the end: a disconnect moves the last connection into its slot. */
        for (unsigned i = s->n_connections; i > 0; i--) {
                if (i > s->n_connections)
                        continue;
                Varlink *link = s->connections[i - 1];
                if (!link->call_pending && out_pending(link) == 0)
                        varlink_disconnect(link);
        }
}

/* ---- client setup ------------------------------------------------------------ */

int varlink_connect_fd(sd_event *e, int fd, Varlink **ret) {
        Varlink *link;
        int r = varlink_new(e, fd, &link);
        if (r < 0)
                return r;
        if (e) {
                int fl = fcntl(fd, F_GETFL);
                if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
                        r = negative_errno();
                        varlink_unref(link);
                        return r;
                }
        }
        r = varlink_attach_event(link);
        if (r < 0) {
                varlink_unref(link);
                return r;
        }
        *ret = link;
        return 0;
}

int varlink_connect_address(sd_event *e, const char *address, Varlink **ret) {
        struct sockaddr_un sa;
        socklen_t sl;
        int r = varlink_address_to_sockaddr(address, &sa, &sl);
        if (r < 0)
                return r;
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (e ? SOCK_NONBLOCK : 0), 0);
        if (fd < 0)
                return -errno;
        if (!e) {
                /* A full backlog must not hang the CLI forever. */
                struct timeval tv = { .tv_sec = VARLINK_DEFAULT_TIMEOUT_USEC / 1000000ULL };
                (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        }
        if (connect(fd, (struct sockaddr *) &sa, sl) < 0)
                /* Non-blocking AF_UNIX connects either succeed at once or fail
                 * (EAGAIN: the listener's backlog is full). */
                return -errno;
        if (!e) {
                struct timeval tv = { 0 };
                (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        }
        return varlink_connect_fd(e, TAKE_FD(fd), ret);
}

static int enqueue_call(Varlink *link, const char *method, json_object *parameters, VarlinkCallFlags flags,
                        VarlinkReplyFn cb, void *userdata) {
        int r;

        if (!link->connected)
                return -ENOTCONN;
        if (link->server)
                return -EPERM;
        if (!name_is_valid(method) || !strchr(method, '.'))
                return -EINVAL;
        if ((flags & VARLINK_CALL_ONEWAY) && (flags & VARLINK_CALL_MORE))
                return -EINVAL;
        if (parameters && !json_object_is_type(parameters, json_type_object))
                return -EINVAL;

        if (!(flags & VARLINK_CALL_ONEWAY) && link->n_pending == link->pending_cap) {
                unsigned n = link->pending_cap ? link->pending_cap * 2 : 8;
                PendingCall *p = realloc(link->pending, n * sizeof *p);
                if (!p)
                        return -ENOMEM;
                link->pending = p;
                link->pending_cap = n;
        }

        json_object *call = json_object_new_object();
        if (!call)
                return -ENOMEM;
        json_object_object_add(call, "method", json_object_new_string(method));
        json_object_object_add(call, "parameters", parameters ? json_object_get(parameters) : json_object_new_object());
        if (flags & VARLINK_CALL_ONEWAY)
                json_object_object_add(call, "oneway", json_object_new_boolean(true));
        if (flags & VARLINK_CALL_MORE)
                json_object_object_add(call, "more", json_object_new_boolean(true));
        r = enqueue_json(link, call);
        json_object_put(call);
        if (r < 0)
                return r;

        if (flags & VARLINK_CALL_ONEWAY)
                return 0;
        uint64_t deadline = link->timeout > 0 ? now_usec() + link->timeout : 0;
        link->pending[link->n_pending++] = (PendingCall){ cb, userdata, flags, deadline };
        return 0;
}

int varlink_invoke(Varlink *link, const char *method, json_object *parameters, VarlinkCallFlags flags,
                   VarlinkReplyFn cb, void *userdata) {
        int r;

        if (!link->event)
                return -ENOTTY;
        r = enqueue_call(link, method, parameters, flags, cb, userdata);
        if (r < 0)
                return r;
        if (link->n_pending == 1 && link->pending[0].deadline > 0) {
                if (!link->timer) {
                        r = sd_event_add_time(link->event, &link->timer, CLOCK_MONOTONIC, link->pending[0].deadline,
                                              0, timer_handler, link);
                        if (r < 0)
                                return r;
                } else {
                        (void) sd_event_source_set_time(link->timer, link->pending[0].deadline);
                        (void) sd_event_source_set_enabled(link->timer, SD_EVENT_ONESHOT);
                }
        }
        /* Written from the loop, so a burst of invokes becomes one write. */
        (void) sd_event_source_set_enabled(link->defer, SD_EVENT_ONESHOT);
        varlink_update_events(link);
        return 0;
}

/* ---- synchronous client ---------------------------------------------------------- */

typedef struct SyncMore {
        VarlinkReplyFn cb;
        void *userdata;
} SyncMore;

static int sync_reply_cb(Varlink *link, json_object *parameters, const char *error, VarlinkReplyFlags flags,
                         void *userdata) {
        SyncMore *more = userdata;

        if (flags & VARLINK_REPLY_LOCAL) {
                link->sync_result = -ECONNRESET;
                link->sync_done = true;
                return 0;
        }
        if (more) {
                int r = more->cb(link, parameters, error, flags, more->userdata);
                if (r < 0) {
                        link->sync_result = r;
                        link->sync_done = true;
                }
                if (!(flags & VARLINK_REPLY_CONTINUES))
                        link->sync_done = true;
                return 0;
        }
        json_object_put(link->sync_reply);
        link->sync_reply = json_object_get(parameters);
        free(link->sync_error);
        link->sync_error = error ? strdup(error) : NULL;
        if (error && !link->sync_error)
                link->sync_result = -ENOMEM;
        link->sync_done = true;
        return 0;
}

/* Blocks until the pending call is done or the deadline passes. */
static int sync_wait(Varlink *link, bool want_reply) {
        uint64_t deadline = link->timeout > 0 ? now_usec() + link->timeout : 0;
        int r;

        link->sync_done = false;
        link->sync_result = 0;
        for (;;) {
                r = flush_output(link);
                if (r < 0)
                        return r;
                if (want_reply) {
                        r = client_process_input(link);
                        if (r < 0)
                                return r;
                        if (link->sync_done)
                                return link->sync_result;
                } else if (out_pending(link) == 0)
                        return 0;
                if (link->read_eof)
                        return -ECONNRESET;

                int timeout_ms = -1;
                if (deadline > 0) {
                        uint64_t n = now_usec();
                        if (n >= deadline)
                                return -ETIMEDOUT;
                        timeout_ms = (int) ((deadline - n + 999) / 1000);
                }
                struct pollfd p = { .fd = link->fd, .events = (short) ((want_reply ? POLLIN : 0) | (out_pending(link) ? POLLOUT : 0)) };
                r = poll(&p, 1, timeout_ms);
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (r > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
                        r = read_input(link);
                        if (r < 0)
                                return r;
                }
        }
}

static int sync_fail(Varlink *link, int r) {
        /* After a local failure the connection's state is unknown. */
        if (r == -EMSGSIZE || r == -EBADMSG || r == -ETIMEDOUT || r == -ECONNRESET)
                varlink_disconnect(link);
        return r;
}

int varlink_call_sync(Varlink *link, const char *method, json_object *parameters, VarlinkCallFlags flags,
                      json_object **ret_parameters, const char **ret_error) {
        int r;

        if (link->event)
                return -EBUSY;
        if (flags & VARLINK_CALL_MORE)
                return -EINVAL;
        r = enqueue_call(link, method, parameters, flags, sync_reply_cb, NULL);
        if (r < 0)
                return r;
        r = sync_wait(link, !(flags & VARLINK_CALL_ONEWAY));
        if (r < 0)
                return sync_fail(link, r);
        if (flags & VARLINK_CALL_ONEWAY) {
                if (ret_parameters)
                        *ret_parameters = NULL;
                if (ret_error)
                        *ret_error = NULL;
                return 0;
        }
        if (ret_parameters)
                *ret_parameters = link->sync_reply;
        if (ret_error)
                *ret_error = link->sync_error;
        return 0;
}

int varlink_call_more_sync(Varlink *link, const char *method, json_object *parameters, VarlinkReplyFn cb,
                           void *userdata) {
        SyncMore more = { cb, userdata };
        int r;

        if (link->event)
                return -EBUSY;
        r = enqueue_call(link, method, parameters, VARLINK_CALL_MORE, sync_reply_cb, &more);
        if (r < 0)
                return r;
        r = sync_wait(link, true);
        if (r < 0) {
                /* The callback is on our stack frame: drop it before returning. */
                link->n_pending = 0;
                return sync_fail(link, r);
        }
        return 0;
}
