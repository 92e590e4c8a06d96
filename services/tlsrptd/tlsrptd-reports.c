/* SPDX-License-Identifier: MIT */
/* Building and delivering reports.
 *
 * SendReports turns each pending day's aggregate into one report per policy
 * domain: JSON, gzip, written to <state>/outbox/UID.json.gz, then
 * <state>/reports.json is rewritten (temp file, fsync, rename) with the new
 * reports and the day marked reported, and only then the day's journal is
 * deleted. A crash in between leaves either the day unreported (it is built
 * again) or reported with its reports waiting in the outbox (they resume),
 * never both. Marking before sending also means a report is never sent
 * twice for a day (mox does the same).
 *
 * Delivery per report: look up _smtp._tls.<domain> (TXT, libunbound async),
 * keep the one record starting "v=TLSRPTv1;", and send to each of its rua
 * (at most TLSRPT_RUA_MAX): mailto: as a multipart/report message handed to
 * halyard-queued (Enqueue, content as a memfd, tlsReport: true), https: as
 * a POST of application/tlsrpt+gzip through shared/http (libcurl on the
 * event loop). A failed attempt is retried with exponential backoff
 * (RetryInitial= doubling up to RetryMax=) and dropped GiveUpAfter= (a day)
 * after the first attempt, with a journal entry either way.
 *
 * DIAGNOSTICS: every destination's final outcome is a journal entry with
 * MESSAGE_ID TLSRPT_SENT or TLSRPT_FAILED and HALYARD_TLSRPT_{DOMAIN,
 * REPORT_ID,URI}; retries log TLSRPT_RETRY; a domain without a usable record
 * logs TLSRPT_NORECORD. Untrusted text (DNS, server replies) is escaped. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "tlsrptd.h"

static const char *const dest_status_names[_DEST_STATUS_MAX] = {
        [DEST_PENDING] = "pending",     [DEST_RETRYING] = "retrying", [DEST_ENQUEUED] = "enqueued",
        [DEST_DELIVERED] = "delivered", [DEST_FAILED] = "failed",     [DEST_DROPPED] = "dropped",
};
static const char *const report_result_names[_REPORT_RESULT_MAX] = {
        [REPORT_LOOKUP] = "lookup", [REPORT_SENDING] = "sending", [REPORT_SENT] = "sent",
        [REPORT_FAILED] = "failed", [REPORT_NO_RECORD] = "noRecord",
};

const char *dest_status_to_string(DestStatus s) {
        return s >= 0 && s < _DEST_STATUS_MAX ? dest_status_names[s] : NULL;
}
const char *report_result_to_string(ReportResult r) {
        return r >= 0 && r < _REPORT_RESULT_MAX ? report_result_names[r] : NULL;
}
static int lookup_name(const char *const *names, int n, const char *s) {
        for (int i = 0; s && i < n; i++)
                if (strcmp(names[i], s) == 0)
                        return i;
        return -EINVAL;
}

static void dest_attempt(ReportDest *d);
static void report_lookup(Report *rep);

/* Deliveries running at once (queue connections and https transfers); more
 * wait a second and try again, so a day with thousands of domains does not
 * open thousands of connections. */
#define INFLIGHT_MAX 32
#define SAVE_DELAY_USEC (500ULL * 1000)
static void mailto_enqueue(ReportDest *d);

/* ---- persistence ---------------------------------------------------------- */

static int outbox_path(Manager *m, const char *uid, char **ret) {
        return asprintf(ret, "%s/outbox/%s.json.gz", m->state_dir, uid) < 0 ? -ENOMEM : 0;
}

static bool report_done(const Report *rep) {
        if (rep->result == REPORT_LOOKUP)
                return false;
        for (size_t i = 0; i < rep->n_dests; i++)
                if (rep->dests[i].status == DEST_PENDING || rep->dests[i].status == DEST_RETRYING)
                        return false;
        return true;
}

json_object *report_to_json(const Report *r) {
        char day[11];
        json_object *o = json_object_new_object(), *dests = json_object_new_array();
        tlsrpt_day_to_string(r->day, day);
        json_object_object_add(o, "reportId", json_object_new_string(r->id));
        json_object_object_add(o, "policyDomain", json_object_new_string(r->domain));
        json_object_object_add(o, "day", json_object_new_string(day));
        json_object_object_add(o, "createdAt", json_object_new_int64(r->created));
        json_object_object_add(o, "size", json_object_new_int64((int64_t) r->size));
        json_object_object_add(o, "result", json_object_new_string(report_result_to_string(r->result)));
        if (r->detail)
                json_object_object_add(o, "detail", json_object_new_string(r->detail));
        for (size_t i = 0; i < r->n_dests; i++) {
                const ReportDest *d = &r->dests[i];
                json_object *j = json_object_new_object();
                json_object_object_add(j, "uri", json_object_new_string(d->uri));
                json_object_object_add(j, "status", json_object_new_string(dest_status_to_string(d->status)));
                if (d->detail)
                        json_object_object_add(j, "detail", json_object_new_string(d->detail));
                json_object_object_add(j, "attempts", json_object_new_int64(d->attempts));
                if (d->last_attempt)
                        json_object_object_add(j, "lastAttempt", json_object_new_int64(d->last_attempt));
                json_object_array_add(dests, j);
        }
        json_object_object_add(o, "destinations", dests);
        return o;
}

int reports_save(Manager *m) {
        json_object *o = json_object_new_object(), *days = json_object_new_array(), *reps = json_object_new_array();
        for (size_t i = 0; i < m->n_reported_days; i++)
                json_object_array_add(days, json_object_new_int64(m->reported_days[i]));
        json_object_object_add(o, "version", json_object_new_int(1));
        json_object_object_add(o, "reportedDays", days);
        for (size_t i = 0; i < m->n_reports; i++) {
                const Report *r = m->reports[i];
                json_object *j = report_to_json(r);
                /* Internal state beside the public fields. */
                json_object_object_add(j, "uid", json_object_new_string(r->uid));
                json_object_object_add(j, "dayNumber", json_object_new_int64(r->day));
                json_object_object_add(j, "lookups", json_object_new_int64(r->lookups));
                json_object_object_add(j, "firstLookup", json_object_new_int64(r->first_lookup));
                json_object *dests = json_object_object_get(j, "destinations");
                for (size_t k = 0; k < r->n_dests; k++) {
                        json_object *dj = json_object_array_get_idx(dests, k);
                        json_object_object_add(dj, "firstAttempt", json_object_new_int64(r->dests[k].first_attempt));
                        json_object_object_add(dj, "nextAttempt", json_object_new_int64(r->dests[k].next_attempt));
                }
                json_object_array_add(reps, j);
        }
        json_object_object_add(o, "reports", reps);

        _cleanup_free_ char *path = NULL, *tmp = NULL;
        int r = 0;
        m->save_pending = false;
        if (asprintf(&path, "%s/reports.json", m->state_dir) < 0 || asprintf(&tmp, "%s/reports.json.tmp", m->state_dir) < 0) {
                json_object_put(o);
                return -ENOMEM;
        }
        size_t len;
        const char *text = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                r = -errno;
        for (size_t off = 0; r >= 0 && off < len;) {
                ssize_t k = write(fd, text + off, len - off);
                if (k < 0 && errno != EINTR)
                        r = -errno;
                else if (k > 0)
                        off += (size_t) k;
        }
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        safe_close(fd);
        json_object_put(o);
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r >= 0) {
                _cleanup_close_ int dfd = open(m->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd < 0 || fsync(dfd) < 0)
                        r = -errno;
        }
        if (r < 0)
                log_error_errno(r, "Failed to save %s: %m", path);
        return r;
}

static int on_save_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        if (m->save_pending)
                (void) reports_save(m);
        return 0;
}

/* Delivery outcomes are saved in groups (one rewrite of reports.json for
 * many outcomes). An outcome lost to a crash in between only means that
 * destination is tried again after the restart. */
static void reports_save_later(Manager *m) {
        uint64_t now;
        m->save_pending = true;
        if (sd_event_now(m->event, CLOCK_MONOTONIC, &now) < 0)
                goto now;
        if (!m->save_timer) {
                if (sd_event_add_time(m->event, &m->save_timer, CLOCK_MONOTONIC, now + SAVE_DELAY_USEC, 0,
                                      on_save_timer, m) < 0)
                        goto now;
                return;
        }
        int enabled;
        if (sd_event_source_get_enabled(m->save_timer, &enabled) >= 0 && enabled != SD_EVENT_OFF)
                return;
        if (sd_event_source_set_time(m->save_timer, now + SAVE_DELAY_USEC) >= 0 &&
            sd_event_source_set_enabled(m->save_timer, SD_EVENT_ONESHOT) >= 0)
                return;
now:
        (void) reports_save(m);
}

static void dest_done(ReportDest *d) {
        d->timer = sd_event_source_disable_unref(d->timer);
        http_request_cancel(TAKE_PTR(d->http));
        if (d->link) {
                Varlink *l = TAKE_PTR(d->link);
                varlink_close(l);
                varlink_unref(l);
        }
        free(d->message);
        d->message = NULL;
        free(d->uri);
        free(d->detail);
}

static void report_free(Report *r) {
        if (!r)
                return;
        dns_query_cancel(r->query);
        r->lookup_timer = sd_event_source_disable_unref(r->lookup_timer);
        for (size_t i = 0; i < r->n_dests; i++)
                dest_done(&r->dests[i]);
        free(r->dests);
        free(r->id);
        free(r->uid);
        free(r->domain);
        free(r->detail);
        free(r);
}

void reports_free_all(Manager *m) {
        if (m->save_pending && m->state_dir)
                (void) reports_save(m);
        m->save_timer = sd_event_source_disable_unref(m->save_timer);
        for (size_t i = 0; i < m->n_batches; i++) {
                varlink_unref(m->batches[i]->link);
                free(m->batches[i]->reports);
                free(m->batches[i]);
        }
        free(m->batches);
        m->batches = NULL;
        m->n_batches = 0;
        for (size_t i = 0; i < m->n_reports; i++)
                report_free(m->reports[i]);
        free(m->reports);
        m->reports = NULL;
        m->n_reports = 0;
        free(m->reported_days);
        m->reported_days = NULL;
        m->n_reported_days = 0;
}

static char *json_strdup(json_object *o, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return strdup(json_object_get_string(v));
}

static int64_t json_int(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : 0;
}

static int report_from_json(Manager *m, json_object *j, Report **ret) {
        Report *r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->manager = m;
        r->id = json_strdup(j, "reportId");
        r->uid = json_strdup(j, "uid");
        r->domain = json_strdup(j, "policyDomain");
        r->detail = json_strdup(j, "detail");
        r->day = (uint32_t) json_int(j, "dayNumber");
        r->created = json_int(j, "createdAt");
        r->size = (uint64_t) json_int(j, "size");
        r->lookups = (unsigned) json_int(j, "lookups");
        r->first_lookup = json_int(j, "firstLookup");
        r->result = lookup_name(report_result_names, _REPORT_RESULT_MAX,
                                json_object_get_string(json_object_object_get(j, "result")));
        json_object *dests = json_object_object_get(j, "destinations");
        if (!r->id || !r->uid || !r->domain || r->result < 0 || !json_object_is_type(dests, json_type_array)) {
                report_free(r);
                return -EBADMSG;
        }
        size_t n = json_object_array_length(dests);
        r->dests = calloc(n ? n : 1, sizeof *r->dests);
        if (!r->dests) {
                report_free(r);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                json_object *dj = json_object_array_get_idx(dests, i);
                ReportDest *d = &r->dests[r->n_dests];
                *d = (ReportDest) { .report = r };
                d->uri = json_strdup(dj, "uri");
                d->detail = json_strdup(dj, "detail");
                d->status = lookup_name(dest_status_names, _DEST_STATUS_MAX,
                                        json_object_get_string(json_object_object_get(dj, "status")));
                d->attempts = (unsigned) json_int(dj, "attempts");
                d->last_attempt = json_int(dj, "lastAttempt");
                d->first_attempt = json_int(dj, "firstAttempt");
                d->next_attempt = json_int(dj, "nextAttempt");
                r->n_dests++;
                if (!d->uri || d->status < 0) {
                        report_free(r);
                        return -EBADMSG;
                }
        }
        *ret = r;
        return 0;
}

int reports_load(Manager *m) {
        _cleanup_free_ char *path = NULL, *outbox = NULL;
        if (asprintf(&path, "%s/reports.json", m->state_dir) < 0 || asprintf(&outbox, "%s/outbox", m->state_dir) < 0)
                return -ENOMEM;
        if (mkdir(outbox, 0700) < 0 && errno != EEXIST)
                return -errno;
        json_object *o = json_object_from_file(path);
        if (!o) {
                if (access(path, F_OK) == 0)
                        log_error("%s: cannot be parsed, starting with no report history", path);
                return 0;
        }
        json_object *days = json_object_object_get(o, "reportedDays"), *reps = json_object_object_get(o, "reports");
        size_t nd = json_object_is_type(days, json_type_array) ? json_object_array_length(days) : 0;
        m->reported_days = calloc(nd ? nd : 1, sizeof *m->reported_days);
        if (!m->reported_days) {
                json_object_put(o);
                return -ENOMEM;
        }
        for (size_t i = 0; i < nd; i++)
                m->reported_days[m->n_reported_days++] = (uint32_t) json_object_get_int64(json_object_array_get_idx(days, i));
        size_t nr = json_object_is_type(reps, json_type_array) ? json_object_array_length(reps) : 0;
        m->reports = calloc(nr ? nr : 1, sizeof *m->reports);
        if (!m->reports) {
                json_object_put(o);
                return -ENOMEM;
        }
        for (size_t i = 0; i < nr; i++) {
                Report *r;
                int k = report_from_json(m, json_object_array_get_idx(reps, i), &r);
                if (k == -ENOMEM) {
                        json_object_put(o);
                        return k;
                }
                if (k < 0) {
                        log_warning("%s: damaged report entry %zu, ignoring", path, i);
                        continue;
                }
                m->reports[m->n_reports++] = r;
        }
        json_object_put(o);

        /* Resume what was in flight: lookups, pending and retrying
         * destinations (an attempt interrupted by the crash counts as not
         * made; a mailto one may then be enqueued twice, which the
         * Report-ID in the subject lets receivers drop). */
        for (size_t i = 0; i < m->n_reports; i++) {
                Report *r = m->reports[i];
                r->counted = true;
                if (r->result == REPORT_LOOKUP) {
                        report_lookup(r);
                        continue;
                }
                for (size_t k = 0; k < r->n_dests; k++) {
                        r->dests[k].counted = true;
                        if (r->dests[k].status == DEST_PENDING || r->dests[k].status == DEST_RETRYING)
                                dest_attempt(&r->dests[k]);
                }
        }
        return 0;
}

/* ---- the batch a SendReports call waits for ------------------------------------ */

static void batch_check(SendBatch *b) {
        if (b->outstanding > 0)
                return;
        Manager *m = b->manager;
        /* What the answer says is on disk before it is sent. */
        if (m->save_pending)
                (void) reports_save(m);
        json_object *p = json_object_new_object(), *a = json_object_new_array();
        for (size_t i = 0; i < b->n_reports; i++)
                json_object_array_add(a, report_to_json(b->reports[i]));
        json_object_object_add(p, "reports", a);
        (void) varlink_reply(b->link, p);
        json_object_put(p);
        for (size_t i = 0; i < b->n_reports; i++)
                b->reports[i]->batch = NULL;
        for (size_t i = 0; i < m->n_batches; i++)
                if (m->batches[i] == b) {
                        m->batches[i] = m->batches[--m->n_batches];
                        break;
                }
        varlink_unref(b->link);
        free(b->reports);
        free(b);
}

static void report_first_outcome(Report *rep) {
        SendBatch *b = rep->batch;
        if (!b)
                return;
        bool all = rep->result != REPORT_LOOKUP || rep->lookups > 0;
        for (size_t i = 0; all && i < rep->n_dests; i++)
                all = rep->dests[i].counted;
        if (!all || rep->counted)
                return;
        rep->counted = true;
        b->outstanding--;
        batch_check(b);
}

/* ---- outcomes ------------------------------------------------------------------ */

static void report_update_result(Report *rep) {
        if (rep->result == REPORT_LOOKUP || rep->result == REPORT_NO_RECORD)
                return;
        bool any_ok = false, pending = false;
        for (size_t i = 0; i < rep->n_dests; i++) {
                DestStatus s = rep->dests[i].status;
                any_ok = any_ok || s == DEST_ENQUEUED || s == DEST_DELIVERED;
                pending = pending || s == DEST_PENDING || s == DEST_RETRYING;
        }
        rep->result = any_ok ? REPORT_SENT : pending ? REPORT_SENDING : REPORT_FAILED;
        if (report_done(rep)) {
                _cleanup_free_ char *p = NULL;
                if (outbox_path(rep->manager, rep->uid, &p) >= 0)
                        (void) unlink(p);
        }
}

_printf_(4, 5) static void log_dest(int priority, const char *msgid, ReportDest *d, const char *fmt, ...) {
        char f[3][TLSRPT_URI_MAX + 64], text[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        snprintf(f[0], sizeof f[0], "HALYARD_TLSRPT_DOMAIN=%s", d->report->domain);
        snprintf(f[1], sizeof f[1], "HALYARD_TLSRPT_REPORT_ID=%s", d->report->id);
        snprintf(f[2], sizeof f[2], "HALYARD_TLSRPT_URI=%s", d->uri);
        log_event(priority, msgid, (const char *const[]){ f[0], f[1], f[2], NULL }, "%s", text);
}

static int on_retry_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ReportDest *d = userdata;
        d->timer = sd_event_source_disable_unref(d->timer);
        dest_attempt(d);
        return 0;
}

static int schedule_at(Manager *m, sd_event_source **src, int64_t at_unix, sd_event_time_handler_t cb, void *userdata) {
        int64_t now = (int64_t) time(NULL);
        uint64_t mono;
        *src = sd_event_source_disable_unref(*src);
        int r = sd_event_now(m->event, CLOCK_MONOTONIC, &mono);
        if (r < 0)
                return r;
        uint64_t delay = at_unix > now ? (uint64_t) (at_unix - now) * 1000000ULL : 0;
        return sd_event_add_time(m->event, src, CLOCK_MONOTONIC, mono + delay, 0, cb, userdata);
}

static uint64_t backoff_usec(Manager *m, unsigned attempts) {
        uint64_t d = m->settings.retry_initial_usec;
        for (unsigned i = 1; i < attempts && d < m->settings.retry_max_usec; i++)
                d *= 2;
        return MIN(d, m->settings.retry_max_usec);
}

/* An attempt ended: ok, a permanent failure, or a temporary one. */
static void dest_outcome(ReportDest *d, DestStatus ok_status, bool ok, bool permanent, const char *detail) {
        Manager *m = d->report->manager;
        int64_t now = (int64_t) time(NULL);

        if (d->busy) {
                d->busy = false;
                m->n_inflight--;
        }
        free(d->detail);
        d->detail = detail ? strdup(detail) : NULL;
        char esc[512];
        log_escape(detail ? detail : "", detail ? strlen(detail) : 0, esc, sizeof esc);
        if (ok) {
                d->status = ok_status;
                log_dest(LOG_INFO, LOG_MESSAGE_TLSRPT_SENT, d, "TLS report %s for %s %s to %s (%s)", d->report->id,
                         d->report->domain, ok_status == DEST_ENQUEUED ? "queued" : "delivered", d->uri, esc);
        } else if (permanent) {
                d->status = DEST_FAILED;
                log_dest(LOG_ERR, LOG_MESSAGE_TLSRPT_FAILED, d, "TLS report %s for %s to %s failed: %s", d->report->id,
                         d->report->domain, d->uri, esc);
        } else if ((uint64_t) (now - d->first_attempt) * 1000000ULL >= m->settings.give_up_usec) {
                d->status = DEST_DROPPED;
                log_dest(LOG_ERR, LOG_MESSAGE_TLSRPT_FAILED, d,
                         "TLS report %s for %s to %s dropped, still failing %llus after the first attempt: %s",
                         d->report->id, d->report->domain, d->uri, (unsigned long long) (now - d->first_attempt), esc);
        } else {
                d->status = DEST_RETRYING;
                d->next_attempt = now + (int64_t) ((backoff_usec(m, d->attempts) + 999999) / 1000000);
                log_dest(LOG_WARNING, LOG_MESSAGE_TLSRPT_RETRY, d, "TLS report %s for %s to %s failed, retrying in %llds: %s",
                         d->report->id, d->report->domain, d->uri, (long long) (d->next_attempt - now), esc);
                if (schedule_at(m, &d->timer, d->next_attempt, on_retry_timer, d) < 0)
                        log_error("Failed to schedule a retry of report %s", d->report->id);
        }
        report_update_result(d->report);
        reports_save_later(m);
        d->counted = true;
        report_first_outcome(d->report);
}

/* ---- mailto: through halyard-queued ---------------------------------------------- */

static int on_enqueue_reply(Varlink *link, json_object *p, const char *error, VarlinkReplyFlags flags, void *userdata) {
        ReportDest *d = userdata;
        if (d->link != link)
                return 0;
        d->link = NULL;
        char detail[300];
        json_object *v;
        if (!error && json_object_object_get_ex(p, "queueId", &v)) {
                snprintf(detail, sizeof detail, "queued as %s", json_object_get_string(v));
                free(d->message);
                d->message = NULL;
                dest_outcome(d, DEST_ENQUEUED, true, false, detail);
        } else {
                const char *param = json_object_get_string(json_object_object_get(p, "parameter"));
                if (streq_ptr(error, VARLINK_ERROR_INVALID_PARAMETER) && streq_ptr(param, "tlsReport") &&
                    !d->omit_tls_report) {
                        /* A halyard-queued older than the tlsReport flag
                         * (units upgraded one at a time): send anyway. */
                        log_warning("halyard-queued does not know tlsReport yet: report %s is queued without it "
                                    "(its delivery then follows the normal TLS policy)", d->report->id);
                        d->omit_tls_report = true;
                        varlink_unref(link);
                        mailto_enqueue(d);
                        return 0;
                }
                snprintf(detail, sizeof detail, "halyard-queued answered %s%s%s", error ? error : "no queue id",
                         param ? " " : "", param ? param : "");
                /* Refused content is permanent; a queue that is down is not. */
                bool permanent = error && (strcmp(error, VARLINK_ERROR_INVALID_PARAMETER) == 0 ||
                                           strcmp(error, "io.halyard.Queue.ContentTooLarge") == 0);
                free(d->message);
                d->message = NULL;
                dest_outcome(d, DEST_ENQUEUED, false, permanent, detail);
        }
        varlink_unref(link);
        return 0;
}

static int memfd_with(const char *p, size_t n) {
        int fd = memfd_create("tlsrpt-report", MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (size_t off = 0; off < n;) {
                ssize_t k = write(fd, p + off, n - off);
                if (k < 0) {
                        int r = -errno;
                        safe_close(fd);
                        return r;
                }
                off += (size_t) k;
        }
        return fd;
}

static void mailto_enqueue(ReportDest *d) {
        Manager *m = d->report->manager;
        _cleanup_free_ char *to = NULL;
        Varlink *q = NULL;
        int r = tlsrpt_mailto_address(d->uri, &to);
        if (r < 0) {
                dest_outcome(d, DEST_ENQUEUED, false, true, "not a usable mailto: address");
                return;
        }
        r = varlink_connect_address(m->event, m->settings.queue_address, &q);
        if (r < 0)
                goto fail;
        varlink_set_timeout(q, 60ULL * 1000000ULL);
        int fd = memfd_with(d->message, d->message_len);
        if (fd < 0) {
                r = fd;
                goto fail;
        }
        r = varlink_push_fd(q, fd);
        if (r < 0)
                goto fail;
        json_object *p = json_object_new_object(), *rcpts = json_object_new_array(), *rc = json_object_new_object(),
                    *notify = json_object_new_array();
        json_object_array_add(notify, json_object_new_string("NEVER"));
        json_object_object_add(rc, "address", json_object_new_string(to));
        /* No DSNs about reports (RFC 8460 §5.3.1; no report loops). */
        json_object_object_add(rc, "notify", notify);
        json_object_array_add(rcpts, rc);
        json_object_object_add(p, "sender", json_object_new_string(m->settings.from));
        json_object_object_add(p, "recipients", rcpts);
        json_object_object_add(p, "content", json_object_new_int(r));
        json_object_object_add(p, "size", json_object_new_int64((int64_t) d->message_len));
        if (!d->omit_tls_report)
                json_object_object_add(p, "tlsReport", json_object_new_boolean(true));
        d->link = q;
        r = varlink_invoke(q, "io.halyard.Queue.Enqueue", p, 0, on_enqueue_reply, d);
        json_object_put(p);
        if (r < 0) {
                d->link = NULL;
                goto fail;
        }
        return;
fail:
        varlink_unref(q);
        char detail[200];
        snprintf(detail, sizeof detail, "cannot reach halyard-queued at %s: %s", m->settings.queue_address, strerror(-r));
        free(d->message);
        d->message = NULL;
        dest_outcome(d, DEST_ENQUEUED, false, false, detail);
}

/* Signing failed: RFC 8460 wants report mail signed, so it is not sent
 * unsigned; the attempt counts as a temporary failure and is retried on the
 * https schedule (RetryInitial= doubling to RetryMax=, dropped after
 * GiveUpAfter=). */
static void mailto_sign_failed(ReportDest *d, const char *why) {
        char detail[300];
        snprintf(detail, sizeof detail, "DKIM signing through %s failed: %s", d->report->manager->settings.arc_address,
                 why);
        free(d->message);
        d->message = NULL;
        dest_outcome(d, DEST_ENQUEUED, false, false, detail);
}

/* What may be prepended: exactly one "DKIM-Signature:" field, CRLF line
 * ends, every continuation line folded (starting with SP or HTAB), nothing
 * that ends the header section or starts another field. */
static bool is_one_dkim_field(const char *h, size_t n) {
        if (n < 16 || strncasecmp(h, "DKIM-Signature:", 15) != 0)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (h[i] == '\r' && (i + 1 >= n || h[i + 1] != '\n'))
                        return false;
                if (h[i] == '\n') {
                        if (i == 0 || h[i - 1] != '\r')
                                return false;
                        if (i + 1 < n && h[i + 1] != ' ' && h[i + 1] != '\t')
                                return false;
                }
        }
        return true;
}

static int on_sign_reply(Varlink *link, json_object *p, const char *error, VarlinkReplyFlags flags, void *userdata) {
        ReportDest *d = userdata;
        if (d->link != link)
                return 0;
        d->link = NULL;
        json_object *v;
        const char *h = NULL;
        if (!error && json_object_object_get_ex(p, "header", &v) && json_object_is_type(v, json_type_string))
                h = json_object_get_string(v);
        size_t hl = h ? strlen(h) : 0;
        if (!h || !is_one_dkim_field(h, hl)) {
                char why[200];
                const char *reason = json_object_get_string(json_object_object_get(p, "reason"));
                snprintf(why, sizeof why, "%s%s%s", error ? error : "the answer is not one DKIM-Signature field",
                         reason ? ": " : "", reason ? reason : "");
                varlink_unref(link);
                mailto_sign_failed(d, why);
                return 0;
        }
        char *msg = malloc(hl + 2 + d->message_len);
        if (!msg) {
                varlink_unref(link);
                mailto_sign_failed(d, "out of memory");
                return 0;
        }
        memcpy(msg, h, hl);
        size_t o = hl;
        if (hl < 2 || memcmp(h + hl - 2, "\r\n", 2) != 0) {
                memcpy(msg + o, "\r\n", 2);
                o += 2;
        }
        memcpy(msg + o, d->message, d->message_len);
        free(d->message);
        d->message = msg;
        d->message_len = o + d->message_len;
        varlink_unref(link);
        mailto_enqueue(d);
        return 0;
}

/* DKIM signature from halyard-arcd (Sign=yes): the signer gets the message
 * as a memfd and answers the DKIM-Signature header to prepend. */
static void mailto_sign(ReportDest *d) {
        Manager *m = d->report->manager;
        Varlink *a = NULL;
        int r = varlink_connect_address(m->event, m->settings.arc_address, &a);
        if (r >= 0) {
                varlink_set_timeout(a, 30ULL * 1000000ULL);
                int fd = memfd_with(d->message, d->message_len);
                r = fd < 0 ? fd : varlink_push_fd(a, fd);
        }
        if (r >= 0) {
                json_object *p = json_object_new_object(), *h = json_object_new_array();
                static const char *const signed_headers[] = { "From", "To", "Subject", "Date", "Message-ID",
                                                              "TLS-Report-Domain", "TLS-Report-Submitter",
                                                              "Content-Type", "MIME-Version" };
                for (size_t i = 0; i < ELEMENTSOF(signed_headers); i++)
                        json_object_array_add(h, json_object_new_string(signed_headers[i]));
                json_object_object_add(p, "content", json_object_new_int(r));
                json_object_object_add(p, "domain", json_object_new_string(m->settings.sign_domain));
                if (m->settings.sign_selector)
                        json_object_object_add(p, "selector", json_object_new_string(m->settings.sign_selector));
                json_object_object_add(p, "headers", h);
                d->link = a;
                r = varlink_invoke(a, "io.halyard.Arc.Sign", p, 0, on_sign_reply, d);
                json_object_put(p);
                if (r >= 0)
                        return;
                d->link = NULL;
        }
        varlink_unref(a);
        mailto_sign_failed(d, strerror(-r));
}

static int read_outbox(Manager *m, const char *uid, uint8_t **ret, size_t *ret_n) {
        _cleanup_free_ char *path = NULL;
        int r = outbox_path(m, uid, &path);
        if (r < 0)
                return r;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size > 64 * 1024 * 1024)
                return -EFBIG;
        size_t n = (size_t) st.st_size, got = 0;
        uint8_t *b = malloc(n ? n : 1);
        if (!b)
                return -ENOMEM;
        while (got < n) {
                ssize_t k = read(fd, b + got, n - got);
                if (k <= 0) {
                        free(b);
                        return k < 0 ? -errno : -EIO;
                }
                got += (size_t) k;
        }
        *ret = b;
        *ret_n = n;
        return 0;
}

/* ---- https: through shared/http ---------------------------------------------------- */

static void on_https_done(HttpRequest *req, const HttpResponse *resp, void *userdata) {
        ReportDest *d = userdata;
        Manager *m = d->report->manager;
        char detail[300];

        d->http = NULL;
        if (resp->result == -ETIMEDOUT)
                snprintf(detail, sizeof detail, "%s after %llus", resp->error ?: "timeout",
                         (unsigned long long) (m->settings.https_timeout_usec / 1000000));
        else if (resp->result < 0)
                snprintf(detail, sizeof detail, "%s", resp->error ?: strerror(-resp->result));
        else
                snprintf(detail, sizeof detail, "HTTP %ld", resp->status);
        dest_outcome(d, DEST_DELIVERED, resp->result == 0 && resp->status >= 200 && resp->status < 300, false, detail);
}

int https_setup(Manager *m) {
        return http_client_new(m->event, &m->http);
}

void https_free(Manager *m) {
        m->http = http_client_free(m->http);
}

static void https_post(ReportDest *d, const uint8_t *gz, size_t gz_len) {
        Manager *m = d->report->manager;
        char ua[64];
        snprintf(ua, sizeof ua, "User-Agent: halyard-tlsrptd/%s", HALYARD_VERSION);
        /* "Expect:" stops libcurl's 100-continue wait before the body. */
        const char *const headers[] = { "Content-Type: application/tlsrpt+gzip", ua, "Expect:", NULL };
        HttpRequestOptions o = {
                .url = d->uri,
                .method = "POST",
                .headers = headers,
                .body = gz,
                .body_len = gz_len,
                .timeout_usec = m->settings.https_timeout_usec,
                .max_size = 1024 * 1024, /* the answer body is not wanted */
                .ca_file = m->settings.test_ca_file,
                .connect_to = (const char *const *) m->settings.test_connect_to,
        };
        /* The request copies the body. */
        int r = http_request_start(m->http, &o, on_https_done, d, &d->http);
        if (r < 0)
                dest_outcome(d, DEST_DELIVERED, false, false,
                             r == -EOPNOTSUPP ? "https needs libcurl, which cannot be loaded" : "cannot start the request");
}

/* ---- one attempt --------------------------------------------------------------- */

static void dest_attempt(ReportDest *d) {
        Report *rep = d->report;
        Manager *m = rep->manager;
        int64_t now = (int64_t) time(NULL);

        if (d->busy)
                return;
        if (d->next_attempt <= now && m->n_inflight >= INFLIGHT_MAX) {
                /* Not an attempt: just later. */
                (void) schedule_at(m, &d->timer, now + 1, on_retry_timer, d);
                return;
        }
        if (d->next_attempt > now) {
                if (schedule_at(m, &d->timer, d->next_attempt, on_retry_timer, d) < 0)
                        log_error("Failed to schedule a retry of report %s", rep->id);
                return;
        }
        _cleanup_free_ uint8_t *gz = NULL;
        size_t gz_len = 0;
        int r = read_outbox(m, rep->uid, &gz, &gz_len);
        if (r < 0) {
                d->attempts++;
                d->last_attempt = now;
                if (!d->first_attempt)
                        d->first_attempt = now;
                dest_outcome(d, DEST_DELIVERED, false, true, "the report file is gone from the outbox");
                return;
        }
        d->busy = true;
        m->n_inflight++;
        d->attempts++;
        d->last_attempt = now;
        if (!d->first_attempt)
                d->first_attempt = now;
        d->next_attempt = 0;
        d->omit_tls_report = false;
        free(d->message);
        d->message = NULL;
        if (strncasecmp(d->uri, "https://", 8) == 0) {
                https_post(d, gz, gz_len);
                return;
        }
        _cleanup_free_ char *to = NULL, *filename = NULL, *msgid = NULL;
        r = tlsrpt_mailto_address(d->uri, &to);
        if (r < 0) {
                dest_outcome(d, DEST_ENQUEUED, false, true, "not a usable mailto: address");
                return;
        }
        if (tlsrpt_filename(m->settings.submitter, rep->domain, rep->day, rep->uid, &filename) < 0 ||
            asprintf(&msgid, "%s.%u.%lld@%s", rep->uid, (unsigned) (d - rep->dests), (long long) now,
                     m->settings.submitter) < 0) {
                dest_outcome(d, DEST_ENQUEUED, false, false, "out of memory");
                return;
        }
        TlsRptMail mail = {
                .from = m->settings.from, .to = to, .submitter = m->settings.submitter, .domain = rep->domain,
                .report_id = rep->id, .filename = filename, .day = rep->day, .date = now, .message_id = msgid,
                .gz = gz, .gz_len = gz_len,
        };
        r = tlsrpt_mail_build(&mail, &d->message, &d->message_len);
        if (r < 0) {
                dest_outcome(d, DEST_ENQUEUED, false, false, "out of memory");
                return;
        }
        if (m->settings.sign)
                mailto_sign(d);
        else
                mailto_enqueue(d);
}

/* ---- the _smtp._tls lookup ----------------------------------------------------- */

static int on_lookup_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Report *rep = userdata;
        rep->lookup_timer = sd_event_source_disable_unref(rep->lookup_timer);
        report_lookup(rep);
        return 0;
}

static void report_no_record(Report *rep, const char *why) {
        Manager *m = rep->manager;
        char f[2][300];
        rep->result = REPORT_NO_RECORD;
        free(rep->detail);
        rep->detail = strdup(why);
        snprintf(f[0], sizeof f[0], "HALYARD_TLSRPT_DOMAIN=%s", rep->domain);
        snprintf(f[1], sizeof f[1], "HALYARD_TLSRPT_REPORT_ID=%s", rep->id);
        log_event(LOG_NOTICE, LOG_MESSAGE_TLSRPT_NORECORD, (const char *const[]){ f[0], f[1], NULL },
                  "TLS report %s for %s not sent: %s", rep->id, rep->domain, why);
        _cleanup_free_ char *p = NULL;
        if (outbox_path(m, rep->uid, &p) >= 0)
                (void) unlink(p);
}

static void on_lookup(DnsQuery *q, const DnsResult *res, void *userdata) {
        Report *rep = userdata;
        Manager *m = rep->manager;
        rep->query = NULL;
        if (res->status == DNS_STATUS_CANCELED)
                return;
        rep->lookups++;
        if (dns_status_is_temporary(res->status)) {
                int64_t now = (int64_t) time(NULL);
                char why[200];
                snprintf(why, sizeof why, "looking up _smtp._tls.%s: %s", rep->domain, dns_status_to_string(res->status));
                if ((uint64_t) (now - rep->first_lookup) * 1000000ULL >= m->settings.give_up_usec) {
                        rep->result = REPORT_FAILED;
                        free(rep->detail);
                        rep->detail = strdup(why);
                        log_error("TLS report %s for %s dropped: %s", rep->id, rep->domain, why);
                } else {
                        free(rep->detail);
                        rep->detail = strdup(why);
                        int64_t at = now + (int64_t) (backoff_usec(m, rep->lookups) / 1000000ULL);
                        log_warning("TLS report %s: %s, trying again later", rep->id, why);
                        if (schedule_at(m, &rep->lookup_timer, at, on_lookup_timer, rep) < 0)
                                log_error("Failed to schedule a lookup for report %s", rep->id);
                }
                reports_save_later(m);
                report_first_outcome(rep);
                return;
        }
        free(rep->detail);
        rep->detail = NULL;
        const DnsRecord *found = NULL;
        size_t candidates = 0;
        for (size_t i = 0; res->status == DNS_STATUS_OK && i < res->n_records; i++)
                if (tlsrpt_record_is_candidate(res->records[i].txt.text, res->records[i].txt.len)) {
                        candidates++;
                        found = &res->records[i];
                }
        TlsRptRecord rec = {};
        if (candidates == 0)
                report_no_record(rep, "no TLSRPT record");
        else if (candidates > 1)
                report_no_record(rep, "more than one TLSRPT record");
        else if (tlsrpt_record_parse(found->txt.text, found->txt.len, &rec) < 0)
                report_no_record(rep, "malformed TLSRPT record or no mailto:/https: rua");
        else {
                rep->dests = calloc(rec.n_rua, sizeof *rep->dests);
                if (!rep->dests) {
                        report_no_record(rep, "out of memory");
                } else {
                        for (size_t i = 0; i < rec.n_rua; i++) {
                                rep->dests[i] = (ReportDest) { .report = rep, .uri = TAKE_PTR(rec.rua[i]) };
                                rep->n_dests++;
                        }
                        rep->result = REPORT_SENDING;
                }
        }
        tlsrpt_record_done(&rec);
        reports_save_later(m);
        if (rep->result == REPORT_NO_RECORD) {
                report_first_outcome(rep);
                return;
        }
        for (size_t i = 0; i < rep->n_dests; i++)
                dest_attempt(&rep->dests[i]);
}

static void report_lookup(Report *rep) {
        Manager *m = rep->manager;
        _cleanup_free_ char *name = NULL;
        if (!rep->first_lookup)
                rep->first_lookup = (int64_t) time(NULL);
        int r = asprintf(&name, "_smtp._tls.%s", rep->domain) < 0 ? -ENOMEM : 0;
        if (r >= 0)
                r = dns_query(m->resolver, name, DNS_TYPE_TXT, on_lookup, rep, &rep->query);
        if (r == -EBUSY) {
                /* The resolver's outstanding-query cap: not a failed lookup. */
                (void) schedule_at(m, &rep->lookup_timer, (int64_t) time(NULL) + 1, on_lookup_timer, rep);
                return;
        }
        if (r < 0) {
                rep->lookups++;
                log_warning_errno(r, "TLS report %s: cannot start the lookup of _smtp._tls.%s, trying again later: %m",
                                  rep->id, rep->domain);
                int64_t at = (int64_t) time(NULL) + (int64_t) (backoff_usec(m, rep->lookups) / 1000000ULL);
                (void) schedule_at(m, &rep->lookup_timer, at, on_lookup_timer, rep);
                report_first_outcome(rep);
        }
}

/* ---- building ---------------------------------------------------------------- */

static int random_hex(char *buf, size_t bytes) {
        uint8_t r[32];
        if (bytes > sizeof r || getrandom(r, bytes, 0) != (ssize_t) bytes)
                return -EIO;
        for (size_t i = 0; i < bytes; i++)
                sprintf(buf + 2 * i, "%02x", r[i]);
        return 0;
}

static int report_meta(Manager *m, const char *domain, uint32_t day, char **ret_id, char **ret_uid) {
        char uid[33], d[11], compact[9];
        int r = random_hex(uid, 8);
        if (r < 0)
                return r;
        tlsrpt_day_to_string(day, d);
        snprintf(compact, sizeof compact, "%.4s%.2s%.2s", d, d + 5, d + 8);
        /* msg-id shaped (dot-atom-text "@" domain), so the JSON and the
         * Subject carry the same string. */
        if (asprintf(ret_id, "%s.%s.%s@%s", compact, domain, uid, m->settings.submitter) < 0)
                return -ENOMEM;
        *ret_uid = strdup(uid);
        if (!*ret_uid) {
                free(*ret_id);
                return -ENOMEM;
        }
        return 0;
}

int reports_preview(Manager *m, const char *domain, uint32_t day, json_object **ret) {
        TlsRptDomain *dom = tlsrpt_day_get_domain(tlsrpt_store_get_day(m->store, day), domain);
        if (!dom)
                return -ENOENT;
        _cleanup_free_ char *id = NULL, *uid = NULL;
        int r = report_meta(m, domain, day, &id, &uid);
        if (r < 0)
                return r;
        TlsRptMeta meta = { m->settings.organization, m->settings.contact, id };
        return tlsrpt_report_json(dom, day, &meta, ret);
}

static int write_file_synced(const char *path, const void *p, size_t n) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        for (size_t off = 0; off < n;) {
                ssize_t k = write(fd, (const char *) p + off, n - off);
                if (k < 0)
                        return -errno;
                off += (size_t) k;
        }
        return fsync(fd) < 0 ? -errno : 0;
}

static int build_report(Manager *m, TlsRptDomain *dom, uint32_t day, Report **ret) {
        Report *rep = calloc(1, sizeof *rep);
        json_object *j = NULL;
        _cleanup_free_ uint8_t *gz = NULL;
        _cleanup_free_ char *path = NULL;
        size_t gz_len, len;
        int r;

        if (!rep)
                return -ENOMEM;
        rep->manager = m;
        rep->day = day;
        rep->created = (int64_t) time(NULL);
        rep->result = REPORT_LOOKUP;
        if (!(rep->domain = strdup(dom->name))) {
                r = -ENOMEM;
                goto fail;
        }
        if ((r = report_meta(m, dom->name, day, &rep->id, &rep->uid)) < 0)
                goto fail;
        TlsRptMeta meta = { m->settings.organization, m->settings.contact, rep->id };
        if ((r = tlsrpt_report_json(dom, day, &meta, &j)) < 0)
                goto fail;
        const char *text = json_object_to_json_string_length(j, JSON_C_TO_STRING_PLAIN, &len);
        if ((r = tlsrpt_gzip(text, len, &gz, &gz_len)) < 0 || (r = outbox_path(m, rep->uid, &path)) < 0 ||
            (r = write_file_synced(path, gz, gz_len)) < 0)
                goto fail;
        rep->size = gz_len;
        json_object_put(j);
        *ret = rep;
        return 0;
fail:
        json_object_put(j);
        report_free(rep);
        return r;
}

static int remember_report(Manager *m, Report *rep) {
        /* The oldest finished report makes room. */
        if (m->n_reports >= REPORTS_KEEP) {
                for (size_t i = 0; i < m->n_reports; i++)
                        if (report_done(m->reports[i]) && !m->reports[i]->batch) {
                                report_free(m->reports[i]);
                                memmove(m->reports + i, m->reports + i + 1, (m->n_reports - i - 1) * sizeof *m->reports);
                                m->n_reports--;
                                break;
                        }
        }
        Report **v = realloc(m->reports, (m->n_reports + 1) * sizeof *v);
        if (!v)
                return -ENOMEM;
        m->reports = v;
        m->reports[m->n_reports++] = rep;
        return 0;
}

static int mark_day_reported(Manager *m, uint32_t day) {
        /* Keep the last 64 marks: older days are never accepted anyway. */
        if (m->n_reported_days >= 64) {
                memmove(m->reported_days, m->reported_days + 1, (m->n_reported_days - 1) * sizeof *m->reported_days);
                m->n_reported_days--;
        }
        uint32_t *v = realloc(m->reported_days, (m->n_reported_days + 1) * sizeof *v);
        if (!v)
                return -ENOMEM;
        m->reported_days = v;
        m->reported_days[m->n_reported_days++] = day;
        return 0;
}

int reports_send(Manager *m, Varlink *link, const uint32_t *only_day) {
        uint32_t today = manager_today();
        int r = 0;

        /* Everything recorded so far goes into the report: sync first. */
        (void) journal_commit(m);

        SendBatch *b = calloc(1, sizeof *b);
        if (!b)
                return -ENOMEM;
        b->manager = m;
        b->link = varlink_ref(link);
        SendBatch **bv = realloc(m->batches, (m->n_batches + 1) * sizeof *bv);
        if (!bv) {
                varlink_unref(b->link);
                free(b);
                return -ENOMEM;
        }
        m->batches = bv;
        m->batches[m->n_batches++] = b;

        size_t first_new = m->n_reports;
        uint32_t days[DAYS_KEEP + 2];
        size_t n_days = 0;
        for (size_t i = 0; i < m->store->n_days && n_days < ELEMENTSOF(days); i++) {
                uint32_t d = m->store->days[i]->day;
                if (only_day ? d == *only_day : d < today)
                        days[n_days++] = d;
        }
        for (size_t i = 0; i < n_days; i++) {
                TlsRptDay *day = tlsrpt_store_get_day(m->store, days[i]);
                size_t before = m->n_reports;
                r = 0;
                for (size_t k = 0; k < day->n_domains; k++) {
                        Report *rep;
                        r = build_report(m, day->domains[k], days[i], &rep);
                        if (r >= 0 && (r = remember_report(m, rep)) < 0)
                                report_free(rep);
                        if (r < 0) {
                                log_error_errno(r, "Failed to build the TLS report for %s: %m", day->domains[k]->name);
                                break;
                        }
                }
                if (r < 0 || (r = mark_day_reported(m, days[i])) < 0 || (r = reports_save(m)) < 0) {
                        /* Not marked: the day stays and is built again next
                         * time; forget what was built of it. */
                        for (size_t k = before; k < m->n_reports; k++) {
                                _cleanup_free_ char *p = NULL;
                                if (outbox_path(m, m->reports[k]->uid, &p) >= 0)
                                        (void) unlink(p);
                                report_free(m->reports[k]);
                        }
                        m->n_reports = before;
                        if (manager_day_reported(m, days[i]))
                                m->n_reported_days--;
                        if (first_new > m->n_reports)
                                first_new = m->n_reports;
                        continue;
                }
                char d[11];
                tlsrpt_day_to_string(days[i], d);
                log_info("Built %zu TLS reports for %s", m->n_reports - before, d);
                r = journal_drop_day(m, days[i]);
                if (r < 0)
                        log_warning_errno(r, "Failed to delete the results of %s (reported already), ignoring: %m", d);
        }

        size_t n_new = m->n_reports - first_new;
        b->reports = calloc(n_new ? n_new : 1, sizeof *b->reports);
        if (!b->reports) {
                batch_check(b); /* answers with what is there (nothing) */
                return 0;
        }
        for (size_t i = 0; i < n_new; i++) {
                Report *rep = m->reports[first_new + i];
                rep->batch = b;
                b->reports[b->n_reports++] = rep;
        }
        b->outstanding = b->n_reports + 1; /* +1: held while starting */
        for (size_t i = 0; i < b->n_reports; i++)
                report_lookup(b->reports[i]);
        b->outstanding--;
        batch_check(b);
        return 0;
}
