/* SPDX-License-Identifier: MIT */
#pragma once

/* Authentication-Results (RFC 8601) values: enough of a parser to find the
 * fields of one authserv-id, read their results, and carry their resinfo
 * text into an ARC-Authentication-Results field unchanged (comments
 * included), which is what ARC sealers do (RFC 8617 §4.1.1).
 *
 * Ownership: authres_parse() returns a new AuthRes freed with
 * authres_free(); all strings inside are its own. */

#include <stdbool.h>
#include <stddef.h>

#include "mail-header.h"

#define AUTHRES_MAX_RESULTS 64U

typedef struct AuthResInfo {
        char *method;   /* lower-case, without "/version" */
        char *result;   /* lower-case */
        char *text;     /* the whole resinfo, white space at both ends trimmed */
} AuthResInfo;

typedef struct AuthRes {
        char *authserv_id;
        AuthResInfo *results;
        size_t n_results;
        bool none;      /* "none": no results at all */
} AuthRes;

/* Parses a field value (after the colon). -EINVAL for a malformed value
 * (no authserv-id, unbalanced comment or quote, a resinfo without
 * method=result), -E2BIG beyond AUTHRES_MAX_RESULTS, -ENOMEM. */
int authres_parse(const char *value, size_t n, AuthRes **ret);
AuthRes *authres_free(AuthRes *a);

/* Collects the results of every Authentication-Results field whose
 * authserv-id is authserv_id (case-insensitive), in message order, as
 * one "; "-joined resinfo list (newly allocated; "" when there are none).
 * *ret_arc (if given) is the result of the "arc" method among them (a
 * static string "none", "pass", "fail", ...), or NULL if there is none.
 * Malformed fields are skipped. Returns the number of fields used, or
 * -ENOMEM. */
int authres_collect(const MailHeaderField *fields, size_t n_fields, const char *authserv_id,
                    char **ret_results, const char **ret_arc);
