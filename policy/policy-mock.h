/* SPDX-License-Identifier: MIT */
#pragma once

/* A test embedder: answers suspended calls from a table instead of doing
 * I/O. Used by unit tests and by `halyard-policy run` ("mocked lookups").
 * Mocks belong to the unit tier only; the integration tier runs the real
 * smtpd with real DNS (DESIGN).
 *
 * Table entries (JSON): {"call": "dnsbl", "args": ["192.0.2.99", "*"],
 * "result": {...}}. "args" is optional and matches a prefix of the call's
 * arguments ("*" matches anything; for methods the receiver is not part of
 * it). The first matching entry answers. A call that matches nothing ends
 * the run with the tempfail verdict and "no mock for NAME(...)", the way
 * Halon's fakes throw on an unexpected query. */

#include "policy.h"

typedef struct PolicyMock PolicyMock;

int policy_mock_new(json_object *table, PolicyMock **ret);
PolicyMock *policy_mock_free(PolicyMock *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(PolicyMock *, policy_mock_free);

/* Returns 0 and a new reference, or -ENOENT when no entry matches. */
int policy_mock_answer(PolicyMock *m, const PolicyCall *call, PolicyValue **ret);

/* Steps the run to the end, answering every call from the table. Each call
 * made is appended to calls (when given) as {"call", "args", "timeout_ms"}.
 * Returns 0 or -ENOMEM. */
int policy_mock_drive(PolicyMock *m, PolicyRun *r, json_object *calls);

/* Builds the facts for one phase from a fixture object with "connection",
 * "transaction", "arguments" and "context" members; in eod a JSON object in
 * arguments.mail (e.g. {"headers": [["Subject", "hi"]]}) becomes the Mail
 * object. The values go into params (new references the caller drops with
 * policy_mock_params_done()). */
int policy_mock_params_from_json(json_object *fixture, PolicyPhase phase, PolicyRunParams *params);
void policy_mock_params_done(PolicyRunParams *params);

/* A PolicyReadFileFn over in-memory files: userdata is a NULL-terminated
 * array of const char * pairs { path, text, path, text, ..., NULL }. */
int policy_mock_read_file(void *userdata, const char *path, size_t max, char **ret_text, size_t *ret_len);
