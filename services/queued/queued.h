/* SPDX-License-Identifier: MIT */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "daemon.h"
#include "dns.h"
#include "queued-mtasts.h"
#include "queued-mx.h"
#include "queued-smtp.h"
#include "queued-spool.h"
#include "queued-tls.h"
#include "varlink.h"

typedef enum MessageState {
        MESSAGE_ACTIVE,   /* due, or being delivered */
        MESSAGE_DEFERRED, /* waiting for its next attempt */
        MESSAGE_HELD,     /* kept back by an operator */
        _MESSAGE_STATE_MAX,
} MessageState;

/* One message in the queue. The envelope JSON (as stored in the spool) is
 * the source of truth for recipients and their states; the fields beside it
 * are what the scheduler and the listings need quickly. */
typedef struct Message {
        char id[SPOOL_ID_MAX];
        json_object *envelope;
        MessageState state;
        uint64_t size;
        uint64_t arrival;      /* unix seconds */
        uint64_t next_attempt; /* unix seconds; 0 = now */
        unsigned in_flight;    /* delivery attempts running for it */
        bool waiting;          /* a domain was skipped: its destination was busy */
} Message;

typedef enum QueueEvent {
        EVENT_ACCEPTED,
        EVENT_DELIVERED,
        EVENT_DEFERRED,
        EVENT_BOUNCED,
        EVENT_EXPIRED,
        EVENT_DELETED,
        EVENT_HELD,
        EVENT_RELEASED,
        _EVENT_MAX,
} QueueEvent;

#define RATE_SLOTS 60 /* one per minute over the last hour */

typedef struct Manager {
        sd_event *event;
        Daemon *daemon;
        VarlinkServer *varlink;
        Spool *spool;
        Config *config;
        const char *config_path;

        void *messages; /* tsearch tree of Message*, by id */
        unsigned n_messages[_MESSAGE_STATE_MAX];
        Varlink **monitors;
        unsigned n_monitors;

        /* delivered/bounced counts per minute, a ring over the last hour */
        uint64_t rate_minute[RATE_SLOTS];
        uint64_t delivered[RATE_SLOTS];
        uint64_t bounced[RATE_SLOTS];

        uint64_t max_message_size;
        uint64_t started_usec;

        /* delivery (queued-deliver.c) */
        DnsResolver *resolver;
        MxConfig mx_config;
        char *hostname;             /* EHLO name, Reporting-MTA */
        char **routes;              /* "domain=smtp:[ip]:port" … */
        char *relayhost;
        SmtpTlsPolicy tls_policy;
        SmtpTimeouts smtp_timeouts;
        uint16_t smtp_port;
        uint64_t max_lifetime_sec;
        uint64_t delay_warning_sec; /* 0: none */
        uint64_t *retry_sec;        /* backoff schedule; the last repeats */
        size_t n_retry;
        unsigned max_deliveries;
        unsigned max_per_destination;
        size_t max_rcpts_per_transaction;
        struct Delivery *deliveries;
        unsigned n_deliveries;
        char **dest_names;
        unsigned *dest_active;
        size_t n_dest;
        sd_event_source *scheduler, *kick;
        struct IdleConn *idle;      /* sessions kept for the next transaction */
        unsigned n_idle;
        ConfigAddress *source_pool; /* SourceAddresses= */
        size_t n_source_pool;
        ConfigAddress *source_by_domain; /* SourceBySenderDomain=, with source_domains[] */
        char **source_domains;
        size_t n_source_by_domain;

        /* secure delivery (queued-tls.h, queued-mtasts.h, queued-tlsrpt.c) */
        char **tls_policy_entries;  /* TLSPolicy= "domain=level" */
        char *tlsrpt_address;       /* TlsRpt=; "" or "none": results only logged */
        Varlink *tlsrpt_link;
        char *tls_ca_file;          /* TLSCAFile=: WebPKI trust for MX certificates; NULL: system store */
        char *mtasts_ca_file;       /* MtaStsCAFile=: trust for the policy host; NULL: system store */
        uint16_t mtasts_port;       /* MtaStsPort=: TEST ONLY */
        char *state_dir;            /* parent of the spool: the MTA-STS cache lives in state_dir/mta-sts */
        gnutls_certificate_credentials_t webpki_creds;
        MtaStsContext *mtasts;
} Manager;

extern const ConfigKey queued_config_keys[];

int manager_load_config(Manager *m, const char *path);

/* The message table (queued-queue.c). */
int queue_add(Manager *m, const char *id, json_object *envelope, uint64_t size, Message **ret);
Message *queue_find(Manager *m, const char *id);
void queue_set_state(Manager *m, Message *msg, MessageState state);
int queue_remove(Manager *m, Message *msg);
/* Calls fn for each message in id (arrival) order; stops at fn's negative return. */
int queue_foreach(Manager *m, int (*fn)(Manager *m, Message *msg, void *userdata), void *userdata);
void queue_free_all(Manager *m);
/* Tells Monitor subscribers and counts deliveries/bounces. */
void queue_event(Manager *m, QueueEvent ev, const Message *msg, const char *recipient, const char *detail);
void queue_count_rate(Manager *m, QueueEvent ev, uint64_t now_sec, uint64_t *ret_last_minute, uint64_t *ret_last_hour);

const char *message_state_to_string(MessageState s);
int message_state_from_string(const char *s);
const char *queue_event_to_string(QueueEvent e);

int queued_varlink_setup(Manager *m);

/* Delivery (queued-deliver.c). */
int deliver_setup(Manager *m);
void deliver_stop(Manager *m);
/* Runs the scheduler soon (new mail, Retry, Release). */
void deliver_kick(Manager *m);
/* Stops the delivery attempts running for msg (Delete). */
void deliver_cancel_message(Manager *m, Message *msg);
/* Fails every pending recipient of msg now (with a DSN) and settles it. */
void deliver_bounce_message(Manager *m, Message *msg, const char *reason);
/* Checks Routes= and Relayhost= syntax; fills err. */
int deliver_check_routes(char **routes, const char *relayhost, char *err, size_t errlen);
/* Checks a recipient's own route and source address (Enqueue's route and
 * sourceAddress; NULL: none): -EINVAL for a route that is neither a
 * Routes= name nor a next hop, -EADDRNOTAVAIL for an address that is not
 * one of SourceAddresses=. */
int deliver_check_choice(Manager *m, const char *route, const char *source);
/* The TLS level that applies to domain: its TLSPolicy= entry, else the
 * default from TLS= (no: none, may: dane, require: dane with encrypt as the
 * fallback). ret_fallback: what applies when neither DANE nor MTA-STS does. */
TlsLevel deliver_tls_level(Manager *m, const char *domain, SmtpTlsPolicy *ret_fallback);

/* TLS results (queued-tlsrpt.c): logs res with HALYARD_TLS_POLICY and
 * HALYARD_TLS_RESULT; when send, also a oneway io.halyard.TlsRpt.Record. */
void tlsrpt_record(Manager *m, const char *queue_id, bool send, const TlsResult *res);
