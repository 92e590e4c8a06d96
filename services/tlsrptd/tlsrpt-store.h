/* SPDX-License-Identifier: MIT */
#pragma once

/* TLS results aggregated the RFC 8460 way, and their on-disk form.
 *
 * Aggregation: per UTC day (days since the epoch), per policy domain, per
 * policy (type + policy strings + mx patterns), a success and a failure
 * count and the failure details grouped by (result-type, sending-mta-ip,
 * receiving-mx-hostname, receiving-mx-helo, receiving-ip,
 * additional-information, failure-reason-code) with a count each.
 *
 * Bounded: at most max_domains domains per day, TLSRPT_POLICIES_MAX policies
 * per domain, max_details failure-detail rows per policy (a failure beyond
 * that is counted in the policy's failure total and in
 * details_overflowed, not listed), and every string is length-capped by the
 * validation in tlsrpt_result_check(). Results beyond the domain or policy
 * caps are refused (-ENOSPC), so memory is bounded by
 * max_domains * TLSRPT_POLICIES_MAX * max_details rows per day.
 *
 * On disk (tlsrptd-journal.c) each day is one append-only file of lines
 *   XXXXXXXX {"d":DAY,"pd":..,"pt":..,"ps":[..],"mx":[..],"k":"s|f|o","n":N,...}\n
 * where XXXXXXXX is the CRC-32 (hex) of the JSON text; replaying the lines
 * through tlsrpt_store_add() rebuilds the aggregate. A compacted file holds
 * one line per aggregate row with its count.
 *
 * Ownership: a TlsRptStore owns everything below it; TlsRptResult fields are
 * borrowed by tlsrpt_store_add() (copied where kept). Nothing here logs. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most sessions one result line or total may count (saturating). */
#define TLSRPT_COUNT_MAX 1000000000000000ULL

#define TLSRPT_POLICIES_MAX 8
#define TLSRPT_POLICY_STRINGS_MAX 64
#define TLSRPT_MX_HOSTS_MAX 32
#define TLSRPT_STRING_MAX 1024   /* one policy string, additional-information, failure-reason-code */
#define TLSRPT_NAME_MAX 253      /* a domain name */
#define TLSRPT_FIELD_MAX 255     /* helo, result-type */
#define TLSRPT_DEFAULT_MAX_DOMAINS 10000
#define TLSRPT_DEFAULT_MAX_DETAILS 100
/* A journal line never exceeds this (the JSON of one result at the caps). */
#define TLSRPT_LINE_MAX (256U * 1024U)

typedef enum TlsRptPolicyType {
        TLSRPT_POLICY_STS,
        TLSRPT_POLICY_TLSA,
        TLSRPT_POLICY_NONE, /* "no-policy-found" */
        _TLSRPT_POLICY_MAX,
        _TLSRPT_POLICY_INVALID = -22,
} TlsRptPolicyType;

const char *tlsrpt_policy_type_to_string(TlsRptPolicyType t);
TlsRptPolicyType tlsrpt_policy_type_from_string(const char *s);

typedef enum TlsRptKind {
        TLSRPT_KIND_SUCCESS,
        TLSRPT_KIND_FAILURE,  /* with a detail row */
        TLSRPT_KIND_OVERFLOW, /* a failure counted without a row (row cap hit) */
} TlsRptKind;

/* The failure-detail fields; NULL = absent (never ""). */
typedef struct TlsRptDetail {
        const char *result_type;
        const char *sending_ip;
        const char *mx_hostname;
        const char *mx_helo;
        const char *receiving_ip;
        const char *additional_info;
        const char *reason_code;
} TlsRptDetail;

/* One result (a Record call, or one journal line with its count). */
typedef struct TlsRptResult {
        uint32_t day;
        const char *policy_domain;
        TlsRptPolicyType policy_type;
        const char *const *policy_strings; /* n_policy_strings entries */
        size_t n_policy_strings;
        const char *const *mx_hosts;
        size_t n_mx_hosts;
        TlsRptKind kind;
        uint64_t count;
        TlsRptDetail detail; /* for TLSRPT_KIND_FAILURE */
} TlsRptResult;

typedef struct TlsRptRow {
        char *f[7]; /* the TlsRptDetail fields in order; NULL = absent */
        uint64_t count;
} TlsRptRow;

typedef struct TlsRptPolicy {
        TlsRptPolicyType type;
        char **strings;
        size_t n_strings;
        char **mx_hosts;
        size_t n_mx_hosts;
        uint64_t successes, failures;
        TlsRptRow *rows;
        size_t n_rows;
} TlsRptPolicy;

typedef struct TlsRptDomain {
        char *name;
        TlsRptPolicy policies[TLSRPT_POLICIES_MAX];
        size_t n_policies;
} TlsRptDomain;

typedef struct TlsRptDay {
        uint32_t day;
        TlsRptDomain **domains; /* sorted by name */
        size_t n_domains, n_alloc;
        uint64_t sessions, successes, failures;
} TlsRptDay;

typedef struct TlsRptStore {
        TlsRptDay **days; /* sorted by day */
        size_t n_days;
        size_t max_domains;
        size_t max_details;
        uint64_t details_overflowed;
} TlsRptStore;

int tlsrpt_store_new(size_t max_domains, size_t max_details, TlsRptStore **ret);
TlsRptStore *tlsrpt_store_free(TlsRptStore *s);

/* Checks a result's fields (lengths, characters, IP syntax, the policy
 * type's rules) and normalises it in place where the RFC wants that: the
 * domain and mx names are expected lower-case A-labels without trailing dot
 * (refused otherwise), no-policy-found drops policy strings and mx hosts,
 * tlsa drops mx hosts. Returns 0, or -EINVAL with *reterr_field (if given)
 * naming the offending field (a static string). */
int tlsrpt_result_check(TlsRptResult *res, const char **reterr_field);

/* Adds a (checked) result. Returns 1 when it was counted, 0 when it was
 * counted as a failure without a detail row (row cap: the result's kind
 * becomes TLSRPT_KIND_OVERFLOW, so a journal written from it replays the
 * same), -ENOSPC when refused by the domain or policy cap, -ENOMEM. */
int tlsrpt_store_add(TlsRptStore *s, TlsRptResult *res);

TlsRptDay *tlsrpt_store_get_day(TlsRptStore *s, uint32_t day);
TlsRptDomain *tlsrpt_day_get_domain(TlsRptDay *d, const char *name);
/* Removes a day (after it was reported). */
void tlsrpt_store_drop_day(TlsRptStore *s, uint32_t day);

/* ---- journal lines ---------------------------------------------------- */

/* Formats a result as one journal line (CRC, space, JSON, '\n') into a new
 * string. */
int tlsrpt_line_format(const TlsRptResult *res, char **ret, size_t *ret_len);

/* A parsed journal line: res points into owned storage, freed with
 * tlsrpt_line_done(). */
typedef struct TlsRptLine {
        TlsRptResult res;
        json_object *json;
        const char **strings; /* the pointer arrays behind res */
} TlsRptLine;

/* Parses one line (without its '\n'; n bytes, not NUL-terminated). Checks
 * the CRC, the JSON shape and every field with tlsrpt_result_check().
 * -EBADMSG for anything malformed. */
int tlsrpt_line_parse(const char *p, size_t n, TlsRptLine *ret);
void tlsrpt_line_done(TlsRptLine *l);

/* Calls fn for every aggregate row of a day as a result with its count (the
 * compacted journal). Stops at fn's negative return. */
int tlsrpt_day_foreach_row(TlsRptDay *d, int (*fn)(const TlsRptResult *res, void *userdata), void *userdata);

/* ---- days ---------------------------------------------------------------- */

/* "YYYY-MM-DD" (11 bytes with the NUL) <-> days since 1970-01-01 (UTC). */
void tlsrpt_day_to_string(uint32_t day, char buf[static 11]);
int tlsrpt_day_from_string(const char *s, uint32_t *ret);
