/* SPDX-License-Identifier: MIT */
#pragma once

/* halyard-smtpd's context: the listeners, the settings from [Smtpd], the
 * TLS context, the open sessions and the counters GetStatus reports. One
 * Manager per process, owned by main(). */

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "daemon.h"
#include "dns.h"
#include "policy.h"
#include "smtpd-arc.h"
#include "smtpd-auth.h"
#include "smtpd-rate.h"
#include "http.h"
#include "smtpd-redis.h"
#include "smtpd-stats.h"
#include "smtpd-tls.h"
#include "varlink.h"

typedef enum ListenerKind {
        LISTENER_SMTP,
        LISTENER_SUBMISSION,
        LISTENER_SUBMISSIONS, /* implicit TLS */
        _LISTENER_MAX,
} ListenerKind;

typedef enum RejectReason {
        REJECT_RELAY_DENIED,
        REJECT_SYNTAX,
        REJECT_BAD_SEQUENCE,
        REJECT_TOO_MANY_RECIPIENTS,
        REJECT_MESSAGE_TOO_LARGE,
        REJECT_LINE_TOO_LONG,
        REJECT_BARE_NEWLINE,
        REJECT_TOO_MANY_ERRORS,
        REJECT_TIMEOUT,
        REJECT_TOO_MANY_CONNECTIONS,
        REJECT_QUEUE_UNAVAILABLE,
        REJECT_AUTH_REQUIRED,
        REJECT_TLS_FAILED,
        REJECT_AUTH_FAILED,
        REJECT_TOO_MANY_COMMANDS,
        REJECT_POLICY,
        REJECT_AUTH_UNAVAILABLE,
        _REJECT_MAX,
} RejectReason;

_Static_assert(COUNT_REJECT_FIRST + _REJECT_MAX <= SMTPD_COUNT_MAX, "SmtpdCounts too small");

typedef struct Manager Manager;
typedef struct Session Session;
typedef struct DetachedRun DetachedRun;

typedef struct Listener {
        Manager *manager;
        ListenerKind kind;
        int fd;
        sd_event_source *source;
        sd_event_source *pause;        /* re-enables source after running out of fds */
        unsigned n_open;
        uint64_t n_total;
} Listener;

typedef struct SmtpdSettings {
        char *hostname;
        char **local_domains;
        char **relay_domains;
        ConfigAddress *permit;
        size_t n_permit;
        uint64_t max_message_size;
        unsigned max_recipients;
        unsigned max_connections;
        unsigned max_per_address;
        unsigned max_errors;
        unsigned max_commands;
        uint64_t timeout_usec;         /* idle */
        uint64_t session_timeout_usec; /* whole session */
        char *queue_address;
        bool auth_plaintext;           /* PLAIN/LOGIN without TLS */
        bool normalize_bare_newline;   /* bare CR/LF in DATA become CRLF instead of a 550 */
        bool received_auth_user;       /* name the user in Received: */
        bool tls_client_ca;            /* client certificates asked for and verified */
        AuthThrottleConfig auth_throttle;
        char *passwd_name;             /* the password file's credential name */
        char *policy_path;             /* NULL: the built-in behaviour */
        uint64_t policy_timeout_usec;  /* per phase */
        uint64_t policy_step_budget;
        SmtpdArcSettings arc;          /* arcd: Authenticate=, ArcSeal=, DkimSign=... */
        char *spamd_address;           /* SpamdAddress=: ScanSA()'s spamd; NULL: 127.0.0.1:783 */
} SmtpdSettings;

struct Manager {
        sd_event *event;
        Daemon *daemon;
        const char *config_path;
        SmtpdSettings settings;
        SmtpdTlsContext *tls;
        AuthPasswd *passwd;            /* NULL: no PLAIN/LOGIN */
        AuthVerifier *verifier;
        AuthThrottle *auth_throttle;
        PolicyGeneration *policy;      /* NULL: no policy configured */
        PolicyCache *policy_cache;
        SmtpdRate *rate;
        SmtpdRedis *redis;             /* rate(..., [shared => true]) across hosts */
        /* Client addresses whose sessions' policy runs are traced. */
        char trace[16][INET6_ADDRSTRLEN];
        unsigned n_trace;
        DnsResolver *resolver;         /* for the policy's lookups */
        HttpClient *http;              /* the policy's http(), made at its first call */
        VarlinkServer *varlink;
        /* Idle connections to the queue, reused by the next message: a
         * connect, an accept and a handshake less per message. Bounded well
         * below the queue's connection limit. */
        SmtpdPool queue_pool;
        SmtpdPool arc_pool;            /* the same, to halyard-arcd */
        Listener listeners[_LISTENER_MAX];

        Session *sessions;
        unsigned n_sessions;
        DetachedRun *detached;         /* disconnect handlers still waiting for lookups */
        uint64_t session_seq;
        uint64_t id_base;

        SmtpdStats stats;
};

const char *listener_kind_to_string(ListenerKind k);
const char *reject_reason_to_string(RejectReason r);
/* CLOCK_MONOTONIC as the loop sees it. */
uint64_t manager_now_usec(Manager *m);
/* Counts one event (SmtpdCount, or COUNT_REJECT_FIRST + a RejectReason) now. */
void manager_count(Manager *m, unsigned what);

/* smtpd-session.c */
int listener_start(Manager *m, ListenerKind kind, int fd);
void listener_stop(Listener *l);
void sessions_drain(Manager *m);
void sessions_free_all(Manager *m);
void queue_pool_flush(Manager *m);

/* smtpd-varlink.c */
int smtpd_varlink_setup(Manager *m);
