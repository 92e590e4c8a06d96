/* SPDX-License-Identifier: MIT */

/* Spool group-commit benchmark, run by hand (never by `meson test`):
 *
 *   spool-bench DIR [IN_FLIGHT] [MESSAGES] [SIZE] [fs|files]
 *
 * Keeps IN_FLIGHT enqueues outstanding (a new one is started from each
 * commit callback, as smtpd sessions would), MESSAGES in all, each SIZE bytes
 * from a memfd, and prints messages/s and syncs per message. DIR must be an
 * existing empty directory on the file system to measure; the messages are
 * removed afterwards. */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "queued-spool.h"

typedef struct Bench {
        Spool *spool;
        sd_event *event;
        uint8_t *content;
        size_t size;
        unsigned total, started, done, failed;
        char (*ids)[SPOOL_ID_MAX];
} Bench;

static void on_commit(Spool *s, const char *id, int error, void *userdata);

static int start_one(Bench *b) {
        json_object *env;
        int fd, r;

        fd = memfd_create("bench", MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (write(fd, b->content, b->size) != (ssize_t) b->size) {
                close(fd);
                return -EIO;
        }
        env = json_object_new_object();
        json_object_object_add(env, "from", json_object_new_string("bench@example.org"));
        json_object_object_add(env, "rcpt", json_object_new_string("sink@example.net"));
        r = spool_enqueue(b->spool, fd, env, 0, on_commit, b, b->ids[b->started]);
        json_object_put(env);
        if (r < 0)
                return r;
        b->started++;
        return 0;
}

static void on_commit(Spool *s, const char *id, int error, void *userdata) {
        Bench *b = userdata;

        b->done++;
        if (error < 0)
                b->failed++;
        if (b->started < b->total && start_one(b) < 0)
                b->failed++;
        if (b->done == b->total)
                (void) sd_event_exit(b->event, 0);
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
        Bench b = {};
        SpoolStats st;
        unsigned in_flight;
        double t0, t1;
        int r;

        if (argc < 2) {
                fprintf(stderr, "usage: %s DIR [IN_FLIGHT] [MESSAGES] [SIZE] [fs|files]\n", argv[0]);
                return 2;
        }
        in_flight = argc > 2 ? (unsigned) atoi(argv[2]) : 1;
        b.total = argc > 3 ? (unsigned) atoi(argv[3]) : 2000;
        b.size = argc > 4 ? (size_t) atol(argv[4]) : 4096;
        if (in_flight < 1 || b.total < in_flight)
                return 2;

        b.content = malloc(b.size ? b.size : 1);
        b.ids = calloc(b.total, sizeof *b.ids);
        if (!b.content || !b.ids)
                return 1;
        for (size_t i = 0; i < b.size; i++)
                b.content[i] = (uint8_t) ('a' + i % 26);

        r = sd_event_default(&b.event);
        if (r >= 0)
                r = spool_new(b.event, argv[1], &b.spool);
        if (r >= 0 && argc > 5)
                r = spool_set_sync_mode(b.spool, strcmp(argv[5], "files") == 0 ? SPOOL_SYNC_FILES : SPOOL_SYNC_FS);
        if (r < 0) {
                fprintf(stderr, "setup: %s\n", strerror(-r));
                return 1;
        }

        t0 = now_s();
        for (unsigned i = 0; i < in_flight; i++)
                if (start_one(&b) < 0)
                        return 1;
        r = sd_event_loop(b.event);
        t1 = now_s();
        spool_get_stats(b.spool, &st);

        printf("in_flight=%u messages=%u size=%zu mode=%s: %.0f msg/s, %.3f syncs/msg, %.1f msg/batch, failed=%u\n",
               in_flight, b.total, b.size, argc > 5 ? argv[5] : "default",
               b.total / (t1 - t0), (double) st.syncs / (double) b.total,
               st.batches ? (double) st.committed / (double) st.batches : 0.0, b.failed);

        for (unsigned i = 0; i < b.started; i++)
                (void) spool_remove(b.spool, b.ids[i]);
        spool_free(b.spool);
        sd_event_unref(b.event);
        free(b.ids);
        free(b.content);
        return b.failed ? 1 : 0;
}
