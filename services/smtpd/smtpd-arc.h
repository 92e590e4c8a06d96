/* SPDX-License-Identifier: MIT */
#pragma once

/* halyard-smtpd's side of io.halyard.Arc (halyard-arcd), which alone holds
 * the keys and does the cryptography:
 *
 * - at end of data, with Authenticate=yes, one Authenticate call on the
 *   spooled message; its header becomes our Authentication-Results field,
 *   and incoming ones that claim our authserv-id are dropped (RFC 8601 §5);
 * - after every other edit (the policy's included), Sign for authenticated
 *   submissions (DkimSign=, DkimSignDomains=) and Seal for relayed mail
 *   (ArcSeal=, ArcSealDomains=), each result prepended; a seal covers the
 *   message as it will leave (RFC 8617);
 * - the policy's spf_result(), dkim_result(), dmarc_result(),
 *   ARC::chainValidate() and AuthenticationResults->toString() answer from
 *   the transaction's one Authenticate (memoised); ARC::seal() and
 *   Mail->signDKIM() are recorded and done at commit, like the policy's
 *   other header edits, so the signatures cover those edits.
 *
 * Every call is asynchronous on the loop, over pooled connections. When
 * arcd fails or times out, ArcFailure= decides: accept (the default; the
 * message goes on without our fields, logged) or tempfail (451 4.7.0). */

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "policy.h"
#include "varlink.h"

typedef struct Manager Manager;
typedef struct Session Session;
typedef struct SmtpdPolicyTask SmtpdPolicyTask;
typedef struct SmtpdArcTxn SmtpdArcTxn;

/* ---- idle connection pool (the queue's and arcd's) ---------------------- */

/* Idle client connections to one service, reused by the next call: a
 * connect, an accept and a handshake less per message. Bounded well below
 * the services' connection limits. */
typedef struct SmtpdPool {
        Varlink *idle[16];
        unsigned n_idle;
} SmtpdPool;

/* A connected idle link (owned by the caller now), or NULL. */
Varlink *smtpd_pool_take(SmtpdPool *p);
/* Takes link: kept when keep, connected and there is room, else closed. */
void smtpd_pool_give(SmtpdPool *p, Varlink *link, bool keep);
void smtpd_pool_flush(SmtpdPool *p);

/* ---- settings ([Smtpd]) --------------------------------------------------- */

#define SMTPD_ARC_DEFAULT_SOCKET "unix:/run/halyard/io.halyard.Arc"

typedef struct SmtpdArcSettings {
        char *socket;            /* ArcSocket= */
        char *authserv_id;       /* AuthservId=, default HostName= */
        bool authenticate;       /* Authenticate= */
        bool failure_tempfail;   /* ArcFailure=tempfail */
        bool seal_all;           /* ArcSeal= */
        char **seal_domains;     /* ArcSealDomains= */
        char *seal_domain;       /* ArcSealDomain= (arcd's default key when unset) */
        char *seal_selector;     /* ArcSealSelector= */
        bool sign;               /* DkimSign= */
        char **sign_domains;     /* DkimSignDomains= */
        uint64_t timeout_usec;   /* ArcTimeout= */
} SmtpdArcSettings;

#define SMTPD_ARC_CONFIG_KEYS                                     \
        { "Smtpd", "ArcSocket", CONFIG_STRING },                  \
        { "Smtpd", "AuthservId", CONFIG_STRING },                 \
        { "Smtpd", "Authenticate", CONFIG_BOOL },                 \
        { "Smtpd", "ArcFailure", CONFIG_STRING },                 \
        { "Smtpd", "ArcSeal", CONFIG_BOOL },                      \
        { "Smtpd", "ArcSealDomains", CONFIG_LIST },               \
        { "Smtpd", "ArcSealDomain", CONFIG_STRING },              \
        { "Smtpd", "ArcSealSelector", CONFIG_STRING },            \
        { "Smtpd", "DkimSign", CONFIG_BOOL },                     \
        { "Smtpd", "DkimSignDomains", CONFIG_LIST },              \
        { "Smtpd", "ArcTimeout", CONFIG_DURATION }

/* Reads the keys above; errors (a bad ArcFailure=) are logged with file
 * and line. config_path names the file for messages without a location. */
int smtpd_arc_settings_load(const Config *c, const char *config_path, const char *hostname, SmtpdArcSettings *ret);
void smtpd_arc_settings_done(SmtpdArcSettings *s);

/* ---- the session's view --------------------------------------------------- */

/* What smtpd-session.c lends this module about a session; pointers stay
 * valid while the session lives (memfd and txn may be replaced through
 * them). */
typedef struct SmtpdArcFacts {
        Manager *manager;
        const char *session_id;
        const char *ip;
        const char *helo;
        const char *mail_from;   /* NULL before MAIL FROM, "" for <> */
        const char *auth_user;   /* "" unless authenticated */
        json_object *rcpts;      /* [{ "address": ... }, ...] */
        int *memfd;              /* -1 before the end of data */
        SmtpdArcTxn **txn;
} SmtpdArcFacts;

/* smtpd-session.c */
void session_arc_facts(Session *s, SmtpdArcFacts *ret);

/* Called once when a step started by smtpd_arc_authenticate() or
 * smtpd_arc_commit() is finished: r == 0 go on, r < 0 answer 451 4.7.0
 * (arcd failed and ArcFailure=tempfail). */
typedef void (*SmtpdArcDone)(Session *s, int r);

/* At end of data, before the policy: Authenticate when configured.
 * Returns 0 when there is nothing to wait for (done is not called), 1 when
 * done follows, or < 0 to answer 451 4.7.0 at once. */
int smtpd_arc_authenticate(Session *s, SmtpdArcDone done);
/* After the policy's edits, right before the queue: our A-R (and no forged
 * one), DKIM signatures, the ARC seal. Same returns as above. */
int smtpd_arc_commit(Session *s, SmtpdArcDone done);

/* The transaction's state: every call under way is dropped (its callback
 * never runs). */
SmtpdArcTxn *smtpd_arc_txn_free(SmtpdArcTxn *t);

/* ---- policy builtins ------------------------------------------------------ */

/* How smtpd-policy.c takes the answer to a suspended call. */
typedef void (*SmtpdArcAnswer)(SmtpdPolicyTask *t, PolicyValue *v);

bool smtpd_arc_policy_builtin(const char *name);
/* Answers c for session s: 0 with *ret_now set (answered now), 1 when
 * answer(t, value) follows (always before c->timeout_ms has passed). */
int smtpd_arc_policy_call(Session *s, const PolicyCall *c, SmtpdArcAnswer answer, SmtpdPolicyTask *t,
                          PolicyValue **ret_now);
