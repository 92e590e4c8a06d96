/* SPDX-License-Identifier: MIT */
#pragma once

/* The operator's policy (policy/, HPL) inside halyard-smtpd: loading a
 * generation, and running one phase of it as a task on the event loop.
 *
 * A task steps the run; when the script calls an I/O builtin the run
 * suspends and the task starts the lookup (DNS through libunbound, password
 * verification on the verifier's threads) and steps on when the answer
 * comes. Builtins answered at once (rate(), and those this build cannot
 * serve, which answer ["error" => ...] as the language promises for a
 * failed lookup) do not suspend the task. Each call has its own timeout and
 * the phase a deadline; an overrun ends the run with the configured
 * tempfail, never an accept. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "policy.h"

typedef struct Manager Manager;
typedef struct SmtpdPolicyTask SmtpdPolicyTask;

/* Called once when a task that suspended finishes (not when it finished
 * within smtpd_policy_start()). The result is valid until the task is
 * freed. */
typedef void (*SmtpdPolicyDone)(SmtpdPolicyTask *t, const PolicyResult *result, void *userdata);

/* Loads path; every diagnostic is logged as "file:line:col: error: ...".
 * -EINVAL when it has errors. */
int smtpd_policy_load(const char *path, PolicyGeneration **ret);

/* Runs phase of generation g (the session's) with params (facts borrowed). Returns 1 when the
 * run finished at once (then smtpd_policy_task_result() has the result and
 * done is never called), 0 when it waits for I/O (done comes later), or a
 * negative errno (no task). trace: a session id to log every lookup, its
 * answer and the verdict under, or NULL. */
int smtpd_policy_start(Manager *m, PolicyGeneration *g, PolicyPhase phase, const PolicyRunParams *params, const char *trace,
                       SmtpdPolicyDone done, void *userdata, SmtpdPolicyTask **ret);
/* The same, with the transaction's message for the lookups that read it
 * (eod: ScanSA(), arcd's): message_fd is borrowed (the task keeps a dup of
 * its own), -1 for none. */
int smtpd_policy_start_with_message(Manager *m, PolicyGeneration *g, PolicyPhase phase, const PolicyRunParams *params,
                                    int message_fd, const char *trace, SmtpdPolicyDone done, void *userdata,
                                    SmtpdPolicyTask **ret);
/* The task's dup of the message (read it with pread()/mmap(), from offset
 * 0: our Received: header first), or -1. Valid while the task lives. */
int smtpd_policy_task_message_fd(const SmtpdPolicyTask *t);
/* Cancels whatever the task waits for; done is not called. */
SmtpdPolicyTask *smtpd_policy_task_free(SmtpdPolicyTask *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(SmtpdPolicyTask *, smtpd_policy_task_free);
const PolicyResult *smtpd_policy_task_result(const SmtpdPolicyTask *t);
/* $context after the run (borrowed), for the next phase. */
PolicyValue *smtpd_policy_task_context(const SmtpdPolicyTask *t);

/* Applies the eod actions that edit headers (add_header, set_header,
 * delete_header, in order) to the message in fd, header block only, and
 * returns a new memfd in *ret_fd (or -1 when there was nothing to change).
 * skip: octets at the start that are ours and not the client's (our
 * Received: header), kept as they are. */
int smtpd_policy_edit_headers(int fd, uint64_t skip, PolicyValue *actions, int *ret_fd);

/* The eod Queue() actions' choices, onto the Enqueue recipients (rcpts:
 * [{address, ...}]): transport => becomes route (a queued Routes= name or
 * a next hop), source_ip => becomes sourceAddress; queued refuses choices
 * it cannot honour. Recipients without a Queue() go the default way; a
 * Queue() for an address that is not a recipient is logged and ignored.
 * The other options (helo, sender, hold, delay) are not carried yet. */
void smtpd_policy_queue_choices(PolicyValue *actions, json_object *rcpts);

/* The Mail object's payload for eod: ["headers" => [[name, value], ...]]
 * from the message's header block (unfolded values). */
int smtpd_policy_mail_object(int fd, PolicyValue **ret);
