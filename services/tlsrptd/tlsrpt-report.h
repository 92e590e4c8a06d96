/* SPDX-License-Identifier: MIT */
#pragma once

/* RFC 8460 reports: the discovery record, the report JSON, gzip, and the
 * report message for mailto: destinations. Pure functions (no I/O, no
 * logging); outputs are new allocations owned by the caller. */

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "tlsrpt-store.h"

/* At most this many rua URIs of a record are used (RFC 8460 puts no limit;
 * one record must not turn one report into many). */
#define TLSRPT_RUA_MAX 5
#define TLSRPT_URI_MAX 2048

typedef struct TlsRptRecord {
        char *rua[TLSRPT_RUA_MAX]; /* mailto: and https: URIs only, in record order */
        size_t n_rua;
        size_t n_ignored; /* other schemes, or beyond TLSRPT_RUA_MAX */
} TlsRptRecord;

/* Whether a TXT record's text (its strings joined) starts with
 * "v=TLSRPTv1" followed by a field delimiter (RFC 8460 §3: the others are
 * not TLSRPT records and are dropped before counting). */
bool tlsrpt_record_is_candidate(const char *p, size_t n);
/* Parses a candidate record (n bytes, may hold NUL: refused). Unknown
 * extension fields are ignored; rua is required. Returns 0, -EBADMSG for a
 * malformed record (or one without usable rua: -ENOENT). */
int tlsrpt_record_parse(const char *p, size_t n, TlsRptRecord *ret);
void tlsrpt_record_done(TlsRptRecord *r);

/* The recipient address of a mailto: URI (percent-decoded, query dropped;
 * only the first address of a list). -EINVAL if it is not one address. */
int tlsrpt_mailto_address(const char *uri, char **ret);

typedef struct TlsRptMeta {
        const char *organization;
        const char *contact;
        const char *report_id;
} TlsRptMeta;

/* The report JSON for one domain and day (§4.4 field list): date-range
 * 00:00:00Z..23:59:59Z, policies in the domain's order, failure-details
 * only where there are rows, absent fields omitted. */
int tlsrpt_report_json(const TlsRptDomain *dom, uint32_t day, const TlsRptMeta *meta, json_object **ret);

/* gzip (RFC 1952) of n bytes. */
int tlsrpt_gzip(const void *p, size_t n, uint8_t **ret, size_t *ret_n);

/* §5.1 file name: submitter!domain!begin!end!uid.json.gz */
int tlsrpt_filename(const char *submitter, const char *domain, uint32_t day, const char *uid, char **ret);

typedef struct TlsRptMail {
        const char *from;      /* addr-spec */
        const char *to;        /* addr-spec */
        const char *submitter; /* domain */
        const char *domain;    /* the policy domain */
        const char *report_id; /* msg-id shaped: left@right */
        const char *filename;
        uint32_t day;
        int64_t date;          /* unix seconds for Date: */
        const char *message_id;/* without <> */
        const uint8_t *gz;
        size_t gz_len;
} TlsRptMail;

/* The §5.3 message: multipart/report; report-type="tlsrpt", a text/plain
 * part and the application/tlsrpt+gzip attachment (base64), with
 * TLS-Report-Domain, TLS-Report-Submitter, the RFC's Subject,
 * Auto-Submitted: auto-generated and TLS-Required: No. CRLF line ends. */
int tlsrpt_mail_build(const TlsRptMail *m, char **ret, size_t *ret_n);
