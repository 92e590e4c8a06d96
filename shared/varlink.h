/* SPDX-License-Identifier: MIT */
#pragma once

/* The varlink protocol (varlink.org) on sd-event, with json-c.
 *
 * Framing: each message is one JSON object followed by a NUL byte. Input is
 * parsed incrementally across partial reads; one message larger than the
 * connection's limit ends the connection (a server first answers
 * io.halyard.Varlink.MessageTooLarge). Pipelined calls are answered in order:
 * a server dispatches the next call of a connection only after the previous
 * one got its final reply.
 *
 * File descriptors travel next to a message with SCM_RIGHTS (the systemd
 * extension): varlink_push_fd() queues fds for the next message this side
 * sends; varlink_take_fd() takes one received with the message being handled.
 * In JSON an fd is referred to by its index in that message's fd array.
 *
 * Ownership: objects from _new()/_connect*() are freed with _unref()/_free();
 * json_object arguments are borrowed (the functions take their own
 * references where they keep them); json_object pointers handed to
 * callbacks are borrowed for the duration of the callback. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct Varlink Varlink;             /* one connection, either side */
typedef struct VarlinkServer VarlinkServer;

#define VARLINK_DEFAULT_MESSAGE_MAX (16U * 1024U * 1024U)
#define VARLINK_DEFAULT_CONNECTIONS_MAX 4096U
#define VARLINK_DEFAULT_TIMEOUT_USEC (45ULL * 1000000ULL)
#define VARLINK_FDS_MAX 64U

/* Errors synthesised locally by the client side (never sent on the wire
 * except MessageTooLarge, which a server sends before it disconnects). */
#define VARLINK_ERROR_DISCONNECTED "io.halyard.Varlink.Disconnected"
#define VARLINK_ERROR_TIMEOUT "io.halyard.Varlink.TimedOut"
#define VARLINK_ERROR_PROTOCOL "io.halyard.Varlink.Protocol"
#define VARLINK_ERROR_MESSAGE_TOO_LARGE "io.halyard.Varlink.MessageTooLarge"

/* The standard errors of org.varlink.service. */
#define VARLINK_ERROR_INTERFACE_NOT_FOUND "org.varlink.service.InterfaceNotFound"
#define VARLINK_ERROR_METHOD_NOT_FOUND "org.varlink.service.MethodNotFound"
#define VARLINK_ERROR_METHOD_NOT_IMPLEMENTED "org.varlink.service.MethodNotImplemented"
#define VARLINK_ERROR_INVALID_PARAMETER "org.varlink.service.InvalidParameter"
#define VARLINK_ERROR_PERMISSION_DENIED "org.varlink.service.PermissionDenied"
#define VARLINK_ERROR_EXPECTED_MORE "org.varlink.service.ExpectedMore"

typedef enum VarlinkCallFlags {
        VARLINK_CALL_ONEWAY = 1 << 0, /* no reply at all */
        VARLINK_CALL_MORE = 1 << 1,   /* replies with continues:true until the last */
} VarlinkCallFlags;

typedef enum VarlinkReplyFlags {
        VARLINK_REPLY_CONTINUES = 1 << 0, /* more replies follow */
        VARLINK_REPLY_LOCAL = 1 << 1,     /* error made up locally (disconnect, timeout) */
} VarlinkReplyFlags;

/* The interface definition of org.varlink.service, as servers serve it. */
extern const char *const varlink_service_idl;

/* ---- Server ---------------------------------------------------------- */

typedef struct VarlinkServerInfo {
        const char *vendor;  /* "halyard" */
        const char *product; /* "halyard-queued" */
        const char *version;
        const char *url;
} VarlinkServerInfo;

/* A method implementation. parameters is never NULL (an empty object when the
 * call had none) and has already been checked against the interface's IDL.
 * The handler answers with varlink_reply()/varlink_notify()/varlink_error*()
 * now or later (keep a reference with varlink_ref()). Oneway calls are
 * answered the same way; the answer is just not sent. Until the final
 * answer, the connection's next call waits (calls are answered in order),
 * so a handler must answer every call it accepts, oneway ones included. A
 * negative return value with no answer sent is answered with
 * org.varlink.service.InvalidParameter if -EINVAL, else with
 * io.halyard.Varlink.InternalError {errno}. */
typedef int (*VarlinkMethod)(Varlink *link, json_object *parameters, VarlinkCallFlags flags, void *userdata);

/* Connection open/close notifications for a server (optional). */
typedef void (*VarlinkConnectFn)(VarlinkServer *s, Varlink *link, void *userdata);
typedef void (*VarlinkDisconnectFn)(VarlinkServer *s, Varlink *link, void *userdata);

int varlink_server_new(sd_event *e, const VarlinkServerInfo *info, VarlinkServer **ret);
VarlinkServer *varlink_server_free(VarlinkServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(VarlinkServer *, varlink_server_free);
void varlink_server_set_userdata(VarlinkServer *s, void *userdata);
void *varlink_server_get_userdata(VarlinkServer *s);

/* Registers an interface from its IDL text (kept by pointer: pass a string
 * that lives as long as the server, e.g. a constant). Every method the IDL
 * declares but nobody binds answers MethodNotImplemented. */
int varlink_server_add_interface(VarlinkServer *s, const char *idl_text);
typedef enum VarlinkMethodFlags {
        /* Callers must set "more" (else org.varlink.service.ExpectedMore). */
        VARLINK_METHOD_REQUIRES_MORE = 1 << 0,
        /* The method takes fds from the caller. Without it, a call that
         * carries fds is refused with InvalidParameter "fileDescriptors". */
        VARLINK_METHOD_ACCEPTS_FDS = 1 << 1,
} VarlinkMethodFlags;

/* Binds a handler to a fully qualified method ("io.halyard.Queue.Enqueue"),
 * which must be declared in an added interface (-ENOENT otherwise). */
int varlink_server_bind(VarlinkServer *s, const char *method, VarlinkMethod cb);
int varlink_server_bind_full(VarlinkServer *s, const char *method, VarlinkMethod cb, VarlinkMethodFlags flags);
void varlink_server_set_connect_handlers(VarlinkServer *s, VarlinkConnectFn on_connect, VarlinkDisconnectFn on_disconnect);

/* One method of a service's interface, for varlink_server_new_service(). */
typedef struct VarlinkMethodBinding {
        const char *method;
        VarlinkMethod cb;
        VarlinkMethodFlags flags;
} VarlinkMethodBinding;

/* A halyard service's server: GetInfo says vendor "halyard", product (a
 * string that outlives the server) and this build's version; the interface
 * from its IDL text, its methods bound, userdata set. */
int varlink_server_new_service(sd_event *e, const char *product, const char *interface_idl,
                               const VarlinkMethodBinding *methods, size_t n_methods, void *userdata,
                               VarlinkServer **ret);

/* Limits: max connections (new ones beyond are accepted and closed at once,
 * so clients see a clean EOF rather than a hang) and max message size. */
void varlink_server_set_limits(VarlinkServer *s, unsigned connections_max, size_t message_max);

/* Listens on an fd systemd gave us: a listening socket is accepted on, a
 * connected one (varlinkctl's exec: transport) is served as one connection.
 * Takes ownership of fd, also on failure. */
int varlink_server_listen_fd(VarlinkServer *s, int fd);
/* Binds and listens on "unix:/path" or "/path" (an existing socket node is
 * replaced), with the given file mode. */
int varlink_server_listen_address(VarlinkServer *s, const char *address, mode_t mode);
/* Stops accepting new connections (SIGTERM drain); established ones go on. */
void varlink_server_stop_listening(VarlinkServer *s);
/* For a service stopping: stops listening, closes every connection that has
 * no call in progress (idle clients, e.g. connection pools, must not hold
 * the service up), and the others once their call is answered. */
void varlink_server_drain(VarlinkServer *s);
unsigned varlink_server_n_connections(VarlinkServer *s);
/* Calls handled so far (all connections), for GetStatus. */
uint64_t varlink_server_n_calls(VarlinkServer *s);

/* ---- Answers (server side) ------------------------------------------ */

/* Final reply. parameters may be NULL (sent as {}). */
int varlink_reply(Varlink *link, json_object *parameters);
/* Intermediate reply (continues:true); only for calls with VARLINK_CALL_MORE
 * (-EPROTO otherwise). */
int varlink_notify(Varlink *link, json_object *parameters);
/* Final error reply. parameters may be NULL. */
int varlink_error(Varlink *link, const char *error, json_object *parameters);
int varlink_error_invalid_parameter(Varlink *link, const char *parameter);
int varlink_error_errno(Varlink *link, int error);

/* The method currently being handled on this connection, or NULL. */
const char *varlink_current_method(Varlink *link);

/* ---- Client ---------------------------------------------------------- */

/* Called for every reply to a call, and once with a local error when the
 * connection breaks or the call times out. error is NULL for a successful
 * reply. With VARLINK_REPLY_CONTINUES set, more replies follow. */
typedef int (*VarlinkReplyFn)(Varlink *link, json_object *parameters, const char *error,
                              VarlinkReplyFlags flags, void *userdata);

/* Connects (non-blocking) to "unix:/path", "unix:@abstract" or "/path".
 * With e == NULL the connection is for the synchronous calls below. */
int varlink_connect_address(sd_event *e, const char *address, Varlink **ret);
/* Wraps an already connected socket; takes ownership of fd, also on failure. */
int varlink_connect_fd(sd_event *e, int fd, Varlink **ret);

/* Queues a call; replies arrive through cb in order. Several calls may be
 * pipelined. For VARLINK_CALL_ONEWAY cb is never called. */
int varlink_invoke(Varlink *link, const char *method, json_object *parameters,
                   VarlinkCallFlags flags, VarlinkReplyFn cb, void *userdata);

/* Synchronous call (blocking, for the CLI; the link must have no event loop).
 * On success *ret_parameters (borrowed, valid until the next call on link or
 * its unref) holds the reply parameters and *ret_error is NULL, or the error
 * name (borrowed likewise) of an error reply. Returns negative errno only
 * for local failures (connect, I/O, timeout -ETIMEDOUT, protocol -EBADMSG,
 * message too large -EMSGSIZE). For VARLINK_CALL_MORE use
 * varlink_call_more_sync(); for VARLINK_CALL_ONEWAY this returns once sent. */
int varlink_call_sync(Varlink *link, const char *method, json_object *parameters,
                      VarlinkCallFlags flags, json_object **ret_parameters, const char **ret_error);
/* Synchronous "more" call: cb runs for each reply until the last one (or an
 * error reply). Returns 0, cb's negative return value, or a local failure. */
int varlink_call_more_sync(Varlink *link, const char *method, json_object *parameters,
                           VarlinkReplyFn cb, void *userdata);

/* ---- Both sides ------------------------------------------------------ */

Varlink *varlink_ref(Varlink *link);
Varlink *varlink_unref(Varlink *link);
DEFINE_TRIVIAL_CLEANUP_FUNC(Varlink *, varlink_unref);
/* Closes the connection: pending client calls get VARLINK_ERROR_DISCONNECTED. */
void varlink_close(Varlink *link);
bool varlink_is_connected(Varlink *link);

void varlink_set_userdata(Varlink *link, void *userdata);
void *varlink_get_userdata(Varlink *link);
VarlinkServer *varlink_get_server(Varlink *link);
void varlink_set_timeout(Varlink *link, uint64_t usec);       /* client calls; 0 = none */
void varlink_set_message_max(Varlink *link, size_t max);

/* Queues fd to travel with the next message this side sends (a call or a
 * reply). Takes ownership of fd, also on failure. Returns its index (0, 1, …)
 * in that message's fd array, for the JSON to refer to. */
int varlink_push_fd(Varlink *link, int fd);
/* Number of fds received with the message being handled (call or reply). */
unsigned varlink_n_fds(Varlink *link);
/* Takes the index-th fd received with the message being handled; the caller
 * owns it. -ENXIO if there is none at that index (or it was taken already).
 * Fds not taken are closed when the handler returns. */
int varlink_take_fd(Varlink *link, unsigned index);

/* Peer credentials (SO_PEERCRED) of a unix socket connection. */
int varlink_get_peer_uid(Varlink *link, uid_t *ret);
int varlink_get_peer_pid(Varlink *link, pid_t *ret);

/* Address helpers: "unix:/path" → "/path"; NULL for unsupported forms. */
int varlink_address_to_sockaddr(const char *address, void *ret_sockaddr_un, socklen_t *ret_len);
