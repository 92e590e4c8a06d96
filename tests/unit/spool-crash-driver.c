/* SPDX-License-Identifier: MIT */

/* Crash-test driver for the spool (used by test-queued-spool):
 *
 *   spool-crash-driver DIR IN_FLIGHT SEED
 *
 * Opens the spool in DIR (loading it, which cleans up after the previous
 * kill), then enqueues messages forever with IN_FLIGHT outstanding. Each
 * message's content is pseudo-random (0 bytes to 256 KiB, mostly small), its
 * envelope records the content's CRC32. Only from the commit callback, i.e.
 * once the spool says the message is durable, it prints
 *
 *   <id> <crc32 hex> <size>\n
 *
 * on stdout, line-buffered: a line on stdout is an acknowledgement. The test
 * SIGKILLs the driver at a random moment and checks every printed id. The
 * driver ends by itself after 30 s (alarm) should the test die first. */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "queued-spool.h"

typedef struct Driver {
        Spool *spool;
        uint64_t rng;
        uint64_t seq;
        uint8_t *buf;
} Driver;

#define DRIVER_MAX_SIZE (256U * 1024U)

static uint64_t next_rand(Driver *d) {
        /* xorshift64* */
        d->rng ^= d->rng >> 12;
        d->rng ^= d->rng << 25;
        d->rng ^= d->rng >> 27;
        return d->rng * UINT64_C(2685821657736338717);
}

typedef struct Pending {
        Driver *driver;
        uint32_t crc;
        size_t size;
} Pending;

static void on_commit(Spool *s, const char *id, int error, void *userdata);

static int start_one(Driver *d) {
        char id[SPOOL_ID_MAX];
        json_object *env;
        Pending *p;
        int fd, r;

        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->driver = d;
        switch (next_rand(d) % 16) {
        case 0:
                p->size = 0;
                break;
        case 1:
                p->size = (size_t) (next_rand(d) % DRIVER_MAX_SIZE);
                break;
        default:
                p->size = (size_t) (next_rand(d) % 16384);
        }
        for (size_t i = 0; i < p->size; i += 8) {
                uint64_t v = next_rand(d);
                memcpy(d->buf + i, &v, p->size - i < 8 ? p->size - i : 8);
        }
        p->crc = (uint32_t) crc32(crc32(0L, Z_NULL, 0), d->buf, (uInt) p->size);

        fd = memfd_create("crash", MFD_CLOEXEC);
        if (fd < 0 || (p->size > 0 && write(fd, d->buf, p->size) != (ssize_t) p->size)) {
                if (fd >= 0)
                        close(fd);
                free(p);
                return -EIO;
        }
        env = json_object_new_object();
        json_object_object_add(env, "seq", json_object_new_int64((int64_t) d->seq++));
        json_object_object_add(env, "crc32", json_object_new_int64((int64_t) p->crc));
        json_object_object_add(env, "size", json_object_new_int64((int64_t) p->size));
        r = spool_enqueue(d->spool, fd, env, 0, on_commit, p, id);
        json_object_put(env);
        if (r < 0)
                free(p);
        return r;
}

static void on_commit(Spool *s, const char *id, int error, void *userdata) {
        Pending *p = userdata;
        Driver *d = p->driver;

        if (error == 0)
                printf("%s %08" PRIx32 " %zu\n", id, p->crc, p->size);
        free(p);
        if (start_one(d) < 0)
                exit(EXIT_FAILURE);
}

static int on_load(Spool *s, const char *id, json_object *envelope, uint64_t size, void *userdata) {
        return 0;
}

int main(int argc, char **argv) {
        Driver d = {};
        sd_event *e = NULL;
        unsigned in_flight;
        int r;

        if (argc != 4) {
                fprintf(stderr, "usage: %s DIR IN_FLIGHT SEED\n", argv[0]);
                return 2;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        alarm(30);

        in_flight = (unsigned) strtoul(argv[2], NULL, 10);
        d.rng = strtoull(argv[3], NULL, 10) | 1;
        d.buf = malloc(DRIVER_MAX_SIZE + 8);
        if (!d.buf || in_flight == 0)
                return 2;

        r = sd_event_default(&e);
        if (r >= 0)
                r = spool_new(e, argv[1], &d.spool);
        if (r >= 0)
                r = spool_load(d.spool, on_load, NULL);
        for (unsigned i = 0; r >= 0 && i < in_flight; i++)
                r = start_one(&d);
        if (r >= 0)
                r = sd_event_loop(e);
        fprintf(stderr, "spool-crash-driver: %s\n", strerror(r < 0 ? -r : 0));
        spool_free(d.spool);
        sd_event_unref(e);
        free(d.buf);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
