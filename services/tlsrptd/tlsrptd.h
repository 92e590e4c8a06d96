/* SPDX-License-Identifier: MIT */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "daemon.h"
#include "dns.h"
#include "http.h"
#include "tlsrpt-report.h"
#include "tlsrpt-store.h"
#include "varlink.h"

/* MESSAGE_IDs of tlsrptd's journal entries (journalctl MESSAGE_ID=…). */
#define LOG_MESSAGE_TLSRPT_SENT     "5b0c8e7d2a1f4c3e9d8b7a6f5e4d3c20"
#define LOG_MESSAGE_TLSRPT_FAILED   "5b0c8e7d2a1f4c3e9d8b7a6f5e4d3c21"
#define LOG_MESSAGE_TLSRPT_RETRY    "5b0c8e7d2a1f4c3e9d8b7a6f5e4d3c22"
#define LOG_MESSAGE_TLSRPT_NORECORD "5b0c8e7d2a1f4c3e9d8b7a6f5e4d3c23"

/* Reports remembered for ListReports. */
#define REPORTS_KEEP 1000
/* Days whose results are kept when they were never reported. */
#define DAYS_KEEP 7

typedef struct Settings {
        char *organization;
        char *contact;
        char *submitter;
        char *from;
        bool sign;
        char *sign_selector;
        char *sign_domain;         /* DKIM d= (SignDomain=, default the From= domain) */
        size_t max_domains;
        size_t max_details;
        uint64_t commit_usec;      /* group commit interval */
        uint64_t compact_size;     /* journal bytes that trigger a compaction */
        char *queue_address;
        char *arc_address;
        uint64_t https_timeout_usec;
        uint64_t retry_initial_usec;
        uint64_t retry_max_usec;
        uint64_t give_up_usec;     /* drop a destination this long after its first attempt */
        char *test_ca_file;        /* tests only: CA bundle for https rua */
        char **test_connect_to;    /* tests only: HttpRequestOptions.connect_to entries */
} Settings;

typedef struct JournalFile {
        uint32_t day;
        int fd;
        uint64_t bytes;          /* on disk */
        uint64_t compact_at;     /* compact when bytes exceeds this */
        char *buf;               /* lines not written yet */
        size_t n_buf, alloc_buf;
        uint64_t buf_records;    /* results in buf */
} JournalFile;

typedef enum DestStatus {
        DEST_PENDING,
        DEST_RETRYING,
        DEST_ENQUEUED,
        DEST_DELIVERED,
        DEST_FAILED,
        DEST_DROPPED,
        _DEST_STATUS_MAX,
        _DEST_STATUS_INVALID = -22,
} DestStatus;

typedef enum ReportResult {
        REPORT_LOOKUP,
        REPORT_SENDING,
        REPORT_SENT,
        REPORT_FAILED,
        REPORT_NO_RECORD,
        _REPORT_RESULT_MAX,
        _REPORT_RESULT_INVALID = -22,
} ReportResult;

typedef struct Report Report;
typedef struct SendBatch SendBatch;

typedef struct ReportDest {
        Report *report;
        char *uri;
        DestStatus status;
        char *detail;
        unsigned attempts;
        int64_t first_attempt, last_attempt, next_attempt; /* unix seconds; 0 = none */
        bool busy;               /* an attempt is running */
        bool counted;            /* its first outcome was counted for the batch */
        bool omit_tls_report;    /* this attempt: Enqueue refused tlsReport (an older queued) */
        sd_event_source *timer;
        HttpRequest *http;       /* https POST in flight */
        Varlink *link;           /* queue or arcd call in flight */
        char *message;           /* the report message (mailto), while an attempt runs */
        size_t message_len;
} ReportDest;

struct Report {
        struct Manager *manager;
        char *id;       /* report-id, msg-id shaped */
        char *uid;      /* the file name's unique-id and the outbox name */
        char *domain;
        uint32_t day;
        int64_t created;
        uint64_t size;
        ReportResult result;
        char *detail;
        ReportDest *dests;
        size_t n_dests;
        unsigned lookups;
        int64_t first_lookup;
        DnsQuery *query;
        sd_event_source *lookup_timer;
        SendBatch *batch;
        bool counted;   /* lookup outcome counted for the batch */
};

struct SendBatch {
        struct Manager *manager;
        Varlink *link;
        Report **reports;
        size_t n_reports;
        size_t outstanding;
};

typedef struct Manager {
        sd_event *event;
        Daemon *daemon;
        VarlinkServer *varlink;
        Config *config;
        const char *config_path;
        Settings settings;
        char *state_dir;
        uint64_t started_usec;

        TlsRptStore *store;
        JournalFile *journals;
        size_t n_journals;
        sd_event_source *commit_timer;
        uint64_t records_received, records_synced, records_refused, journal_syncs, compactions;
        uint64_t late_results;

        uint32_t *reported_days;
        size_t n_reported_days;
        Report **reports;
        size_t n_reports;
        SendBatch **batches;
        size_t n_batches;
        unsigned n_inflight;       /* destinations with an attempt running */
        bool save_pending;         /* reports.json is behind */
        sd_event_source *save_timer;

        DnsResolver *resolver;
        HttpClient *http;
} Manager;

extern const ConfigKey tlsrptd_config_keys[];

/* The current UTC day. */
uint32_t manager_today(void);

/* tlsrptd-journal.c: the results journal, one file per UTC day under
 * <state>/results/. */
int journal_load(Manager *m);
/* Checks, aggregates and queues one result for the next group commit.
 * -EINVAL (bad field, *reterr_field set), -ENOSPC (cap), -ESTALE (a day not
 * accepted any more). */
int journal_record(Manager *m, TlsRptResult *res, const char **reterr_field);
/* Writes and fdatasync()s everything queued. */
int journal_commit(Manager *m);
/* Forgets a reported day: closes and deletes its file. */
int journal_drop_day(Manager *m, uint32_t day);
void journal_close_all(Manager *m);
bool manager_day_reported(Manager *m, uint32_t day);

/* tlsrptd-reports.c: reports, their persistence (<state>/reports.json and
 * <state>/outbox/UID.json.gz) and their delivery. */
int reports_load(Manager *m);
int reports_save(Manager *m);
/* Builds the reports of the given days (every day before today with
 * results when day is NULL), marks the days reported, starts delivery and
 * answers link once every report had its first attempt(s). */
int reports_send(Manager *m, Varlink *link, const uint32_t *day);
/* The report JSON for a domain and day, for Preview. -ENOENT without results. */
int reports_preview(Manager *m, const char *domain, uint32_t day, json_object **ret);
json_object *report_to_json(const Report *r);
void reports_free_all(Manager *m);
int https_setup(Manager *m);
void https_free(Manager *m);

const char *dest_status_to_string(DestStatus s);
const char *report_result_to_string(ReportResult r);

/* tlsrptd-varlink.c */
int tlsrptd_varlink_setup(Manager *m);
