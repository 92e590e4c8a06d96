/* SPDX-License-Identifier: MIT */
/* The results journal: <state>/results/YYYY-MM-DD.log, one append-only file
 * per UTC day of CRC-guarded lines (tlsrpt-store.h). A Record is aggregated
 * in memory at once and its line queued; a timer (CommitInterval=, group
 * commit) writes the queued lines with write() and fdatasync()s the file.
 * A result is safe once that sync returned ("recordsSynced" in GetStatus):
 * after a kill -9 the restart replays every complete line; a torn last line
 * is cut off. When a file grows past CompactSize it is rewritten from the
 * aggregate (one line per row with its count; temp file, fsync, rename,
 * fsync of the directory), so a flood of results keeps the disk bounded like
 * the memory. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "log.h"
#include "macro.h"
#include "tlsrptd.h"

#define FLUSH_NOW_BYTES (256U * 1024U)
#define READ_MAX (64ULL * 1024 * 1024)

uint32_t manager_today(void) {
        return (uint32_t) (time(NULL) / 86400);
}

bool manager_day_reported(Manager *m, uint32_t day) {
        for (size_t i = 0; i < m->n_reported_days; i++)
                if (m->reported_days[i] == day)
                        return true;
        return false;
}

static int results_dir(Manager *m, char **ret) {
        return asprintf(ret, "%s/results", m->state_dir) < 0 ? -ENOMEM : 0;
}

static int day_path(Manager *m, uint32_t day, const char *suffix, char **ret) {
        char d[11];
        tlsrpt_day_to_string(day, d);
        return asprintf(ret, "%s/results/%s.log%s", m->state_dir, d, suffix) < 0 ? -ENOMEM : 0;
}

static int fsync_dir(const char *dir) {
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
                return -errno;
        return 0;
}

static JournalFile *journal_find(Manager *m, uint32_t day) {
        for (size_t i = 0; i < m->n_journals; i++)
                if (m->journals[i].day == day)
                        return &m->journals[i];
        return NULL;
}

static int journal_open(Manager *m, uint32_t day, JournalFile **ret) {
        JournalFile *j = journal_find(m, day);
        if (j) {
                *ret = j;
                return 0;
        }
        _cleanup_free_ char *path = NULL, *dir = NULL;
        int r = day_path(m, day, "", &path);
        if (r < 0 || (r = results_dir(m, &dir)) < 0)
                return r;
        JournalFile *v = realloc(m->journals, (m->n_journals + 1) * sizeof *v);
        if (!v)
                return -ENOMEM;
        m->journals = v;
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0) {
                r = -errno;
                safe_close(fd);
                return r;
        }
        /* A new file's directory entry must be durable too. */
        if (st.st_size == 0 && (r = fsync_dir(dir)) < 0) {
                safe_close(fd);
                return r;
        }
        j = &m->journals[m->n_journals++];
        *j = (JournalFile) { .day = day, .fd = fd, .bytes = (uint64_t) st.st_size,
                             .compact_at = MAX(m->settings.compact_size, (uint64_t) st.st_size * 2) };
        *ret = j;
        return 0;
}

static void journal_file_close(JournalFile *j) {
        safe_close(j->fd);
        free(j->buf);
        *j = (JournalFile) { .fd = -1 };
}

void journal_close_all(Manager *m) {
        for (size_t i = 0; i < m->n_journals; i++)
                journal_file_close(&m->journals[i]);
        free(m->journals);
        m->journals = NULL;
        m->n_journals = 0;
        m->commit_timer = sd_event_source_disable_unref(m->commit_timer);
}

/* Loads one day file into the store; cuts off a torn tail. */
static int journal_replay(Manager *m, uint32_t day, const char *path) {
        _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if ((uint64_t) st.st_size > READ_MAX)
                return -EFBIG;
        size_t size = (size_t) st.st_size;
        _cleanup_free_ char *data = malloc(size + 1);
        if (!data)
                return -ENOMEM;
        size_t got = 0;
        while (got < size) {
                ssize_t k = read(fd, data + got, size - got);
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                got += (size_t) k;
        }
        size_t pos = 0, good_end = 0, bad = 0, refused = 0;
        uint64_t results = 0;
        while (pos < got) {
                char *nl = memchr(data + pos, '\n', got - pos);
                if (!nl)
                        break; /* torn tail: never synced as a whole line */
                size_t n = (size_t) (nl - (data + pos));
                TlsRptLine l;
                if (tlsrpt_line_parse(data + pos, n, &l) < 0 || l.res.day != day)
                        bad++;
                else {
                        int r = tlsrpt_store_add(m->store, &l.res);
                        if (r == -ENOMEM) {
                                tlsrpt_line_done(&l);
                                return r;
                        }
                        if (r < 0)
                                refused++;
                        else
                                results += l.res.count;
                        tlsrpt_line_done(&l);
                }
                pos += n + 1;
                good_end = pos;
        }
        if (good_end < got) {
                log_warning("%s: cutting off %zu bytes of an incomplete last line", path, got - good_end);
                if (ftruncate(fd, (off_t) good_end) < 0 || fdatasync(fd) < 0)
                        return -errno;
        }
        if (bad > 0)
                log_warning("%s: %zu damaged lines skipped", path, bad);
        if (refused > 0)
                log_warning("%s: %zu lines over the configured caps skipped", path, refused);
        log_debug("%s: %llu results loaded", path, (unsigned long long) results);
        m->records_synced += results;
        return 0;
}

int journal_load(Manager *m) {
        _cleanup_free_ char *dir = NULL;
        int r = results_dir(m, &dir);
        if (r < 0)
                return r;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        DIR *d = opendir(dir);
        if (!d)
                return -errno;
        uint32_t today = manager_today();
        struct dirent *de;
        r = 0;
        while ((de = readdir(d))) {
                uint32_t day;
                char name[11];
                size_t l = strlen(de->d_name);
                _cleanup_free_ char *path = NULL;
                if (de->d_name[0] == '.')
                        continue;
                if (asprintf(&path, "%s/%s", dir, de->d_name) < 0) {
                        r = -ENOMEM;
                        break;
                }
                if (l > 8 && strcmp(de->d_name + l - 8, ".log.tmp") == 0) {
                        (void) unlink(path); /* an interrupted compaction */
                        continue;
                }
                if (l != 14 || strcmp(de->d_name + 10, ".log") != 0) {
                        log_warning("%s: unexpected file in the results directory, ignoring", path);
                        continue;
                }
                memcpy(name, de->d_name, 10);
                name[10] = 0;
                if (tlsrpt_day_from_string(name, &day) < 0) {
                        log_warning("%s: unexpected file in the results directory, ignoring", path);
                        continue;
                }
                if (manager_day_reported(m, day) || day + DAYS_KEEP < today) {
                        /* Reported already (the crash came between marking
                         * and deleting), or too old to report. */
                        if (!manager_day_reported(m, day))
                                log_warning("%s: results of %s were never reported and are too old, deleting", path, name);
                        (void) unlink(path);
                        continue;
                }
                int k = journal_replay(m, day, path);
                if (k == -ENOMEM) {
                        r = k;
                        break;
                }
                if (k < 0)
                        log_error_errno(k, "%s: cannot load, ignoring: %m", path);
        }
        closedir(d);
        return r;
}

typedef struct CompactState {
        int fd;
        uint64_t bytes;
} CompactState;

static int compact_row(const TlsRptResult *res, void *userdata) {
        CompactState *c = userdata;
        _cleanup_free_ char *line = NULL;
        size_t n;
        int r = tlsrpt_line_format(res, &line, &n);
        if (r < 0)
                return r;
        r = write_all(c->fd, line, n);
        if (r >= 0)
                c->bytes += n;
        return r;
}

/* Rewrites a day file from the aggregate (everything queued was written). */
static int journal_compact(Manager *m, JournalFile *j) {
        _cleanup_free_ char *path = NULL, *tmp = NULL, *dir = NULL;
        int r;
        if ((r = day_path(m, j->day, "", &path)) < 0 || (r = day_path(m, j->day, ".tmp", &tmp)) < 0 ||
            (r = results_dir(m, &dir)) < 0)
                return r;
        TlsRptDay *day = tlsrpt_store_get_day(m->store, j->day);
        CompactState c = { .fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) };
        if (c.fd < 0)
                return -errno;
        r = day ? tlsrpt_day_foreach_row(day, compact_row, &c) : 0;
        if (r >= 0 && fsync(c.fd) < 0)
                r = -errno;
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r >= 0)
                r = fsync_dir(dir);
        if (r < 0) {
                safe_close(c.fd);
                (void) unlink(tmp);
                return r;
        }
        /* The renamed file is the journal now; append to it from here. */
        int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
        safe_close(c.fd);
        if (fd < 0)
                return -errno;
        safe_close(j->fd);
        j->fd = fd;
        j->bytes = c.bytes;
        j->compact_at = MAX(m->settings.compact_size, c.bytes * 2);
        m->compactions++;
        return 0;
}

int journal_commit(Manager *m) {
        int ret = 0;
        for (size_t i = 0; i < m->n_journals; i++) {
                JournalFile *j = &m->journals[i];
                if (j->n_buf == 0)
                        continue;
                int r = write_all(j->fd, j->buf, j->n_buf);
                if (r >= 0 && fdatasync(j->fd) < 0)
                        r = -errno;
                if (r < 0) {
                        /* Partly written lines are cut off at the next load;
                         * these results live in memory only now. */
                        log_error_errno(r, "Writing the results journal failed, %llu results are not on disk: %m",
                                        (unsigned long long) j->buf_records);
                        j->n_buf = 0;
                        j->buf_records = 0;
                        ret = r;
                        continue;
                }
                m->journal_syncs++;
                m->records_synced += j->buf_records;
                j->bytes += j->n_buf;
                j->n_buf = 0;
                j->buf_records = 0;
                if (j->bytes > j->compact_at) {
                        r = journal_compact(m, j);
                        if (r < 0) {
                                log_warning_errno(r, "Compacting the results journal failed, ignoring: %m");
                                j->compact_at = j->bytes * 2;
                        }
                }
        }
        return ret;
}

static int on_commit_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        (void) journal_commit(m);
        return 0;
}

static int commit_schedule(Manager *m) {
        uint64_t now;
        int r = sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        if (r < 0)
                return r;
        if (!m->commit_timer)
                return sd_event_add_time(m->event, &m->commit_timer, CLOCK_MONOTONIC, now + m->settings.commit_usec, 0,
                                         on_commit_timer, m);
        int enabled;
        if (sd_event_source_get_enabled(m->commit_timer, &enabled) >= 0 && enabled != SD_EVENT_OFF)
                return 0; /* armed already: this result joins that commit */
        r = sd_event_source_set_time(m->commit_timer, now + m->settings.commit_usec);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(m->commit_timer, SD_EVENT_ONESHOT);
}

int journal_record(Manager *m, TlsRptResult *res, const char **reterr_field) {
        uint32_t today = manager_today();
        int r;

        r = tlsrpt_result_check(res, reterr_field);
        if (r < 0)
                return r;
        /* Results for yesterday still come in just after midnight; anything
         * older, in the future or for a day already reported is late. */
        if (res->day > today || res->day + 1 < today || manager_day_reported(m, res->day))
                return -ESTALE;
        JournalFile *j = NULL;
        r = journal_open(m, res->day, &j);
        if (r < 0)
                return r;
        r = tlsrpt_store_add(m->store, res);
        if (r < 0)
                return r;
        _cleanup_free_ char *line = NULL;
        size_t n;
        r = tlsrpt_line_format(res, &line, &n);
        if (r < 0)
                return r;
        if (j->n_buf + n > j->alloc_buf) {
                size_t a = MAX(j->alloc_buf * 2, j->n_buf + n + 4096);
                char *b = realloc(j->buf, a);
                if (!b)
                        return -ENOMEM;
                j->buf = b;
                j->alloc_buf = a;
        }
        memcpy(j->buf + j->n_buf, line, n);
        j->n_buf += n;
        j->buf_records += res->count;
        if (j->n_buf >= FLUSH_NOW_BYTES)
                return journal_commit(m) < 0 ? 0 : 0; /* counted in memory either way */
        r = commit_schedule(m);
        if (r < 0)
                (void) journal_commit(m);
        return 0;
}

int journal_drop_day(Manager *m, uint32_t day) {
        _cleanup_free_ char *path = NULL, *dir = NULL;
        int r;
        for (size_t i = 0; i < m->n_journals; i++)
                if (m->journals[i].day == day) {
                        journal_file_close(&m->journals[i]);
                        m->journals[i] = m->journals[--m->n_journals];
                        break;
                }
        tlsrpt_store_drop_day(m->store, day);
        if ((r = day_path(m, day, "", &path)) < 0 || (r = results_dir(m, &dir)) < 0)
                return r;
        if (unlink(path) < 0 && errno != ENOENT)
                return -errno;
        return fsync_dir(dir);
}
