/* SPDX-License-Identifier: MIT */

/* The spool on a real file system ($TMPDIR, else /var/tmp): commit and
 * reload byte for byte, limits, update/remove, group-commit counters,
 * quarantine of hand-made torn and foreign files, spool_free() with jobs in
 * flight, and crash safety: a driver process enqueues messages and is
 * SIGKILLed at random moments; every message it acknowledged must load
 * intact afterwards. */

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "macro.h"
#include "queued-spool.h"
#include "tap.h"

/* ---- helpers ---- */

static char *temp_dirs[TAP_MAX_TESTS * 2];
static unsigned n_temp_dirs;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) remove(path);
        return 0;
}

static void remove_temp_dirs(void) {
        for (unsigned i = 0; i < n_temp_dirs; i++) {
                (void) nftw(temp_dirs[i], rm_one, 16, FTW_DEPTH | FTW_PHYS);
                free(temp_dirs[i]);
        }
}

/* A new empty directory, removed at exit (also when a test failed). */
static const char *make_temp_dir(void) {
        const char *base = getenv("TMPDIR");
        char *d;

        if (asprintf(&d, "%s/test-spool.XXXXXX", base && *base ? base : "/var/tmp") < 0)
                TAP_FAIL("asprintf");
        if (!mkdtemp(d))
                TAP_FAIL("mkdtemp %.500s: %m", d);
        if (n_temp_dirs == 0)
                atexit(remove_temp_dirs);
        if (n_temp_dirs >= ELEMENTSOF(temp_dirs))
                TAP_FAIL("too many temp dirs");
        temp_dirs[n_temp_dirs++] = d;
        return d;
}

static int make_memfd(const void *p, size_t n) {
        int fd = memfd_create("content", MFD_CLOEXEC);
        if (fd < 0)
                TAP_FAIL("memfd_create: %m");
        if (n > 0 && write(fd, p, n) != (ssize_t) n)
                TAP_FAIL("write memfd: %m");
        return fd;
}

static uint8_t *pattern(size_t n, unsigned seed) {
        uint8_t *p = malloc(n ? n : 1);
        uint32_t x = seed * 2654435761U + 1;
        if (!p)
                TAP_FAIL("malloc");
        for (size_t i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                p[i] = (uint8_t) x;
        }
        return p;
}

static json_object *make_envelope(const char *from, unsigned n) {
        json_object *o = json_object_new_object(), *rcpt = json_object_new_array();
        json_object_object_add(o, "from", json_object_new_string(from));
        for (unsigned i = 0; i < n; i++) {
                char b[64];
                snprintf(b, sizeof b, "rcpt%u@example.net", i);
                json_object_array_add(rcpt, json_object_new_string(b));
        }
        json_object_object_add(o, "rcpt", rcpt);
        json_object_object_add(o, "unicode", json_object_new_string("h\xc3\xa9llo \"quoted\" \\ /"));
        return o;
}

/* Reads all of fd from offset 0. */
static uint8_t *read_fd(int fd, size_t *ret_n) {
        struct stat st;
        uint8_t *p;
        size_t off = 0;

        if (fstat(fd, &st) < 0)
                TAP_FAIL("fstat: %m");
        p = malloc((size_t) st.st_size + 1);
        if (!p)
                TAP_FAIL("malloc");
        while (off < (size_t) st.st_size) {
                ssize_t k = pread(fd, p + off, (size_t) st.st_size - off, (off_t) off);
                if (k <= 0)
                        TAP_FAIL("pread: %zd %m", k);
                off += (size_t) k;
        }
        *ret_n = off;
        return p;
}

typedef struct Ack {
        unsigned fired;
        int error;
        char id[SPOOL_ID_MAX];
        unsigned *counter;
} Ack;

static void on_ack(Spool *s, const char *id, int error, void *userdata) {
        Ack *a = userdata;
        a->fired++;
        a->error = error;
        snprintf(a->id, sizeof a->id, "%s", id);
        if (a->counter)
                (*a->counter)++;
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static void run_until(sd_event *e, const unsigned *counter, unsigned want) {
        uint64_t deadline = now_usec() + 60 * 1000000ULL;
        while (*counter < want) {
                if (now_usec() > deadline)
                        TAP_FAIL("timeout: %u of %u callbacks", *counter, want);
                int r = sd_event_run(e, 100 * 1000);
                if (r < 0)
                        TAP_FAIL("sd_event_run: %d", r);
        }
}

typedef struct Loaded {
        unsigned n;
        char ids[16384][SPOOL_ID_MAX];
        json_object *env[16384];
        uint64_t size[16384];
} Loaded;

static int on_load(Spool *s, const char *id, json_object *envelope, uint64_t size, void *userdata) {
        Loaded *l = userdata;
        if (l->n >= ELEMENTSOF(l->ids))
                return -E2BIG;
        snprintf(l->ids[l->n], SPOOL_ID_MAX, "%s", id);
        l->env[l->n] = json_object_get(envelope);
        l->size[l->n] = size;
        l->n++;
        return 0;
}

static void loaded_done(Loaded *l) {
        for (unsigned i = 0; i < l->n; i++)
                json_object_put(l->env[i]);
        free(l);
}

static int loaded_find(const Loaded *l, const char *id) {
        for (unsigned i = 0; i < l->n; i++)
                if (strcmp(l->ids[i], id) == 0)
                        return (int) i;
        return -1;
}

static Loaded *load_dir(sd_event *e, const char *dir, SpoolStats *ret_stats) {
        Spool *s = NULL;
        Loaded *l = calloc(1, sizeof *l);
        if (!l)
                TAP_FAIL("calloc");
        ASSERT_OK(spool_new(e, dir, &s));
        ASSERT_OK(spool_load(s, on_load, l));
        if (ret_stats)
                spool_get_stats(s, ret_stats);
        spool_free(s);
        return l;
}

static unsigned count_entries(const char *dir, const char *sub) {
        char p[4096];
        struct dirent *de;
        unsigned n = 0;
        DIR *d;

        snprintf(p, sizeof p, "%s/%s", dir, sub);
        d = opendir(p);
        if (!d)
                TAP_FAIL("opendir %.500s: %m", p);
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        n++;
        closedir(d);
        return n;
}

static bool path_exists(const char *dir, const char *sub, const char *id, const char *ext) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s/%s%s", dir, sub, id, ext);
        return lstat(p, &st) == 0;
}

static void write_path(const char *dir, const char *sub, const char *name, const void *data, size_t n) {
        char p[4096];
        int fd;
        snprintf(p, sizeof p, "%s/%s/%s", dir, sub, name);
        fd = open(p, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0600);
        if (fd < 0)
                TAP_FAIL("open %.500s: %m", p);
        if (n > 0 && write(fd, data, n) != (ssize_t) n)
                TAP_FAIL("write %.500s: %m", p);
        close(fd);
}

static char *read_path(const char *dir, const char *sub, const char *name, size_t *ret_n) {
        char p[4096];
        uint8_t *b;
        int fd;
        snprintf(p, sizeof p, "%s/%s/%s", dir, sub, name);
        fd = open(p, O_RDONLY|O_CLOEXEC);
        if (fd < 0)
                TAP_FAIL("open %.500s: %m", p);
        b = read_fd(fd, ret_n);
        b[*ret_n] = 0;
        close(fd);
        return (char *) b;
}

static bool id_valid(const char *id) {
        if (strlen(id) != 18)
                return false;
        for (const char *c = id; *c; c++)
                if (!strchr("0123456789ABCDEFGHJKMNPQRSTVWXYZ", *c))
                        return false;
        return true;
}

/* Commits n messages with the given contents; returns their ids (filled in acks). */
static void commit_all(sd_event *e, Spool *s, Ack *acks, unsigned n, uint8_t **contents, const size_t *sizes) {
        unsigned done = 0;
        for (unsigned i = 0; i < n; i++) {
                json_object *env = make_envelope("sender@example.org", i + 1);
                char id[SPOOL_ID_MAX];
                acks[i] = (Ack) { .counter = &done };
                ASSERT_OK(spool_enqueue(s, make_memfd(contents[i], sizes[i]), env, 0, on_ack, &acks[i], id));
                json_object_put(env);
        }
        run_until(e, &done, n);
        for (unsigned i = 0; i < n; i++) {
                ASSERT_EQ(acks[i].fired, 1);
                ASSERT_OK(acks[i].error);
        }
}

/* ---- tests ---- */

TEST(enqueue_reload_byte_for_byte) {
        const char *dir = make_temp_dir();
        const size_t sizes[] = { 100, 0, 5 * 1024 * 1024, 4096, 70000 };
        enum { N = ELEMENTSOF(sizes) };
        uint8_t *contents[N];
        json_object *envs[N];
        Ack acks[N];
        char ids[N][SPOOL_ID_MAX];
        unsigned done = 0;
        sd_event *e = NULL;
        Spool *s = NULL;
        SpoolStats st;
        Loaded *l;

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(spool_new(e, dir, &s));
        ASSERT_OK(spool_load(s, on_load, &(Loaded) {}));

        for (unsigned i = 0; i < N; i++) {
                int fd;
                contents[i] = pattern(sizes[i], i);
                envs[i] = make_envelope(i % 2 ? "" : "a@example.org", i);
                if (i == 3) {
                        /* A regular file whose offset sits at its end: the spool reads from 0. */
                        char p[4096];
                        snprintf(p, sizeof p, "%s/content-file", dir);
                        fd = open(p, O_RDWR|O_CREAT|O_TRUNC|O_CLOEXEC, 0600);
                        ASSERT_TRUE(fd >= 0);
                        ASSERT_EQ(write(fd, contents[i], sizes[i]), (ssize_t) sizes[i]);
                } else
                        fd = make_memfd(contents[i], sizes[i]);
                acks[i] = (Ack) { .counter = &done };
                ASSERT_OK(spool_enqueue(s, fd, envs[i], 0, on_ack, &acks[i], ids[i]));
                ASSERT_TRUE(id_valid(ids[i]));
                if (i > 0)
                        ASSERT_TRUE(strcmp(ids[i - 1], ids[i]) < 0); /* sorted by arrival */
        }
        spool_get_stats(s, &st);
        ASSERT_TRUE(st.pending > 0 || done == N);
        run_until(e, &done, N);

        for (unsigned i = 0; i < N; i++) {
                ASSERT_EQ(acks[i].fired, 1);
                ASSERT_OK(acks[i].error);
                ASSERT_STREQ(acks[i].id, ids[i]);
                /* Content readable through the open spool too. */
                size_t n;
                int fd = spool_open_content(s, ids[i]);
                ASSERT_OK(fd);
                uint8_t *b = read_fd(fd, &n);
                close(fd);
                ASSERT_EQ(n, sizes[i]);
                ASSERT_TRUE(n == 0 || memcmp(b, contents[i], n) == 0);
                free(b);
        }
        spool_get_stats(s, &st);
        ASSERT_EQ(st.committed, N);
        ASSERT_EQ(st.pending, 0);
        ASSERT_TRUE(st.batches >= 1 && st.syncs <= st.batches);
        spool_free(s);

        /* Files on disk: 0600, nothing left in tmp/. */
        for (unsigned i = 0; i < N; i++) {
                char p[4096];
                struct stat fst;
                snprintf(p, sizeof p, "%s/msg/%s.data", dir, ids[i]);
                ASSERT_OK(stat(p, &fst));
                ASSERT_EQ(fst.st_mode & 07777, 0600);
                snprintf(p, sizeof p, "%s/msg/%s.env", dir, ids[i]);
                ASSERT_OK(stat(p, &fst));
                ASSERT_EQ(fst.st_mode & 07777, 0600);
        }
        ASSERT_EQ(count_entries(dir, "tmp"), 0);
        ASSERT_EQ(count_entries(dir, "msg"), 2 * N);

        /* A new Spool finds every message, in arrival order, envelope and content equal. */
        l = load_dir(e, dir, &st);
        ASSERT_EQ(l->n, N);
        ASSERT_EQ(st.quarantined, 0);
        ASSERT_OK(spool_new(e, dir, &s));
        for (unsigned i = 0; i < N; i++) {
                size_t n;
                ASSERT_STREQ(l->ids[i], ids[i]);
                ASSERT_EQ(l->size[i], sizes[i]);
                ASSERT_STREQ(json_object_to_json_string_ext(l->env[i], JSON_C_TO_STRING_PLAIN),
                             json_object_to_json_string_ext(envs[i], JSON_C_TO_STRING_PLAIN));
                int fd = spool_open_content(s, ids[i]);
                ASSERT_OK(fd);
                uint8_t *b = read_fd(fd, &n);
                close(fd);
                ASSERT_EQ(n, sizes[i]);
                ASSERT_TRUE(n == 0 || memcmp(b, contents[i], n) == 0);
                free(b);
                free(contents[i]);
                json_object_put(envs[i]);
        }
        spool_free(s);
        loaded_done(l);
        sd_event_unref(e);
}

TEST(ids_unique_and_sorted) {
        const char *dir = make_temp_dir(), *dir2 = make_temp_dir();
        enum { N = 300 };
        static char ids[N][SPOOL_ID_MAX];
        static Ack acks[N];
        unsigned done = 0;
        sd_event *e = NULL;
        Spool *a = NULL, *b = NULL, *c = NULL;
        json_object *env = make_envelope("x@example.org", 1);

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(spool_new(e, dir, &a));
        /* One Spool per directory (a lock); a second Spool elsewhere stands for a
         * second process started at the same moment. */
        ASSERT_ERR(spool_new(e, dir, &c), -EBUSY);
        ASSERT_OK(spool_new(e, dir2, &b));
        for (unsigned i = 0; i < N; i++) {
                acks[i] = (Ack) { .counter = &done };
                ASSERT_OK(spool_enqueue(i % 2 ? b : a, make_memfd("x", 1), env, 0, on_ack, &acks[i], ids[i]));
                ASSERT_TRUE(id_valid(ids[i]));
                if (i >= 2)
                        ASSERT_TRUE(strcmp(ids[i - 2], ids[i]) < 0);
        }
        run_until(e, &done, N);
        for (unsigned i = 0; i < N; i++) {
                ASSERT_OK(acks[i].error);
                for (unsigned j = 0; j < i; j++)
                        ASSERT_TRUE(strcmp(ids[i], ids[j]) != 0);
        }
        /* The time component: the first 9 characters are milliseconds since the epoch. */
        static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        uint64_t t = 0;
        for (unsigned i = 0; i < 9; i++)
                t = t * 32 + (uint64_t) (strchr(alphabet, ids[0][i]) - alphabet);
        struct timespec now;
        ASSERT_OK(clock_gettime(CLOCK_REALTIME, &now));
        uint64_t now_ms = (uint64_t) now.tv_sec * 1000 + (uint64_t) now.tv_nsec / 1000000;
        ASSERT_TRUE(t <= now_ms + 1000 && now_ms - t < 60 * 1000);
        spool_free(a);
        spool_free(b);
        /* The lock goes with the Spool. */
        ASSERT_OK(spool_new(e, dir, &c));
        spool_free(c);
        json_object_put(env);
        sd_event_unref(e);
}

TEST(limits_and_bad_arguments) {
        const char *dir = make_temp_dir();
        uint8_t *c = pattern(1000, 7);
        json_object *env = make_envelope("x@example.org", 1);
        json_object *notobj = json_object_new_string("x");
        char id[SPOOL_ID_MAX];
        unsigned done = 0;
        Ack ack = { .counter = &done };
        sd_event *e = NULL;
        Spool *s = NULL;
        SpoolStats st;
        int fd, p[2];

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(spool_new(e, dir, &s));

        /* Too large by its size: refused at once, the fd is closed. */
        fd = make_memfd(c, 1000);
        ASSERT_ERR(spool_enqueue(s, fd, env, 999, on_ack, &ack, id), -EFBIG);
        ASSERT_TRUE(fcntl(fd, F_GETFD) < 0 && errno == EBADF);
        /* Exactly the limit is fine. */
        ASSERT_OK(spool_enqueue(s, make_memfd(c, 1000), env, 1000, on_ack, &ack, id));
        run_until(e, &done, 1);
        ASSERT_OK(ack.error);

        /* A file whose size says 0 but that reads longer (procfs): refused by the copy. */
        fd = open("/proc/self/status", O_RDONLY|O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ack = (Ack) { .counter = &done };
        char id2[SPOOL_ID_MAX];
        ASSERT_OK(spool_enqueue(s, fd, env, 16, on_ack, &ack, id2));
        run_until(e, &done, 2);
        ASSERT_ERR(ack.error, -EFBIG);
        ASSERT_FALSE(path_exists(dir, "msg", id2, ".data"));
        ASSERT_FALSE(path_exists(dir, "msg", id2, ".env"));
        ASSERT_FALSE(path_exists(dir, "tmp", id2, ".data"));
        ASSERT_EQ(count_entries(dir, "tmp"), 0);

        /* Not a file, not an object, no callback. */
        ASSERT_OK(pipe2(p, O_CLOEXEC));
        ASSERT_ERR(spool_enqueue(s, p[0], env, 0, on_ack, &ack, id), -EBADFD);
        close(p[1]);
        ASSERT_ERR(spool_enqueue(s, make_memfd("x", 1), notobj, 0, on_ack, &ack, id), -EINVAL);
        ASSERT_ERR(spool_enqueue(s, make_memfd("x", 1), env, 0, NULL, &ack, id), -EINVAL);
        ASSERT_ERR(spool_enqueue(s, -1, env, 0, on_ack, &ack, id), -EINVAL);

        /* Load after an enqueue would race the worker in tmp/. */
        ASSERT_ERR(spool_load(s, on_load, &(Loaded) {}), -EBUSY);

        spool_get_stats(s, &st);
        ASSERT_EQ(st.committed, 1);
        ASSERT_EQ(st.pending, 0);
        spool_free(s);

        /* The spool directory must exist. */
        char missing[4096];
        snprintf(missing, sizeof missing, "%s/does-not-exist", dir);
        ASSERT_ERR(spool_new(e, missing, &s), -ENOENT);

        free(c);
        json_object_put(env);
        json_object_put(notobj);
        sd_event_unref(e);
}

TEST(update_remove_open) {
        const char *dir = make_temp_dir();
        size_t sizes[2] = { 10, 20 };
        uint8_t *contents[2] = { pattern(10, 1), pattern(20, 2) };
        Ack acks[2];
        sd_event *e = NULL;
        Spool *s = NULL;
        Loaded *l;
        int fd;

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(spool_new(e, dir, &s));
        commit_all(e, s, acks, 2, contents, sizes);

        json_object *upd = json_object_new_object();
        json_object_object_add(upd, "state", json_object_new_string("deferred"));
        json_object_object_add(upd, "attempts", json_object_new_int(3));
        ASSERT_OK(spool_update_envelope(s, acks[0].id, upd));
        /* Twice: the second replaces the first. */
        json_object_object_add(upd, "attempts", json_object_new_int(4));
        ASSERT_OK(spool_update_envelope(s, acks[0].id, upd));
        ASSERT_EQ(count_entries(dir, "tmp"), 0);

        ASSERT_ERR(spool_update_envelope(s, "0000000000000000ZZ", upd), -ENOENT);
        ASSERT_ERR(spool_update_envelope(s, "bad/../id", upd), -EINVAL);
        ASSERT_ERR(spool_update_envelope(s, "", upd), -EINVAL);
        ASSERT_ERR(spool_open_content(s, "0000000000000000ZZ"), -ENOENT);
        ASSERT_ERR(spool_open_content(s, "../../etc/passwd"), -EINVAL);
        ASSERT_ERR(spool_remove(s, "0000000000000000ZZ"), -ENOENT);
        ASSERT_ERR(spool_remove(s, "0000000000000000zz"), -EINVAL);

        fd = spool_open_content(s, acks[1].id);
        ASSERT_OK(fd);
        ASSERT_TRUE((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY);
        ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        close(fd);

        /* Remove the second; update the removed one fails. */
        ASSERT_OK(spool_remove(s, acks[1].id));
        ASSERT_ERR(spool_remove(s, acks[1].id), -ENOENT);
        ASSERT_ERR(spool_open_content(s, acks[1].id), -ENOENT);
        ASSERT_ERR(spool_update_envelope(s, acks[1].id, upd), -ENOENT);
        spool_free(s);

        l = load_dir(e, dir, NULL);
        ASSERT_EQ(l->n, 1);
        ASSERT_STREQ(l->ids[0], acks[0].id);
        ASSERT_STREQ(json_object_to_json_string_ext(l->env[0], JSON_C_TO_STRING_PLAIN),
                     "{\"state\":\"deferred\",\"attempts\":4}");
        ASSERT_EQ(l->size[0], 10);
        loaded_done(l);

        /* Removing an updated message takes its update along; the worker
         * does it (async), at the latest when the spool is freed. */
        ASSERT_OK(spool_new(e, dir, &s));
        ASSERT_ERR(spool_remove_async(s, "bad/../id"), -EINVAL);
        ASSERT_OK(spool_remove_async(s, acks[0].id));
        spool_free(s);
        ASSERT_EQ(count_entries(dir, "msg"), 0);

        json_object_put(upd);
        free(contents[0]);
        free(contents[1]);
        sd_event_unref(e);
}

TEST(group_commit_stats) {
        const char *dir = make_temp_dir();
        enum { N = 50 };
        static Ack acks[N];
        uint8_t *c = pattern(4096, 3);
        json_object *env = make_envelope("x@example.org", 2);
        unsigned done = 0;
        sd_event *e = NULL;
        Spool *s = NULL;
        SpoolStats st;

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(spool_new(e, dir, &s));
        for (unsigned i = 0; i < N; i++) {
                char id[SPOOL_ID_MAX];
                acks[i] = (Ack) { .counter = &done };
                ASSERT_OK(spool_enqueue(s, make_memfd(c, 4096), env, 0, on_ack, &acks[i], id));
        }
        run_until(e, &done, N);
        for (unsigned i = 0; i < N; i++)
                ASSERT_OK(acks[i].error);
        spool_get_stats(s, &st);
        printf("# 50 concurrent: %" PRIu64 " batches, %" PRIu64 " syncs\n", st.batches, st.syncs);
        ASSERT_EQ(st.committed, N);
        ASSERT_EQ(st.pending, 0);
        ASSERT_TRUE(st.syncs <= st.batches);
        ASSERT_TRUE(st.syncs <= N / 10);

        /* The per-file strategy: 2 fdatasync per message + 1 fsync of msg/ per batch. */
        ASSERT_OK(spool_set_sync_mode(s, SPOOL_SYNC_FILES));
        SpoolStats before = st;
        done = 0;
        for (unsigned i = 0; i < N; i++) {
                char id[SPOOL_ID_MAX];
                acks[i] = (Ack) { .counter = &done };
                ASSERT_OK(spool_enqueue(s, make_memfd(c, 4096), env, 0, on_ack, &acks[i], id));
        }
        ASSERT_ERR(spool_set_sync_mode(s, SPOOL_SYNC_FS), -EBUSY);
        run_until(e, &done, N);
        for (unsigned i = 0; i < N; i++)
                ASSERT_OK(acks[i].error);
        spool_get_stats(s, &st);
        ASSERT_EQ(st.committed - before.committed, N);
        ASSERT_EQ(st.syncs - before.syncs, 2 * N + (st.batches - before.batches));
        spool_free(s);

        Loaded *l = load_dir(e, dir, NULL);
        ASSERT_EQ(l->n, 2 * N);
        loaded_done(l);
        free(c);
        json_object_put(env);
        sd_event_unref(e);
}

typedef struct FreeCtx {
        unsigned fired, ok, canceled, shutdown;
        Spool *s;
        json_object *env;
} FreeCtx;

static void on_free_ack(Spool *s, const char *id, int error, void *userdata) {
        FreeCtx *c = userdata;
        char nid[SPOOL_ID_MAX];
        c->fired++;
        if (error == 0)
                c->ok++;
        else if (error == -ECANCELED)
                c->canceled++;
        /* Enqueueing while the spool is being freed is refused. */
        if (spool_enqueue(s, make_memfd("y", 1), c->env, 0, on_free_ack, c, nid) == -ESHUTDOWN)
                c->shutdown++;
}

TEST(free_with_jobs_in_flight) {
        const char *dir = make_temp_dir();
        enum { N = 200 };
        uint8_t *c = pattern(64 * 1024, 5);
        FreeCtx ctx = { .env = make_envelope("x@example.org", 1) };
        sd_event *e = NULL;
        Spool *s = NULL;

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(spool_new(e, dir, &s));
        for (unsigned i = 0; i < N; i++) {
                char id[SPOOL_ID_MAX];
                ASSERT_OK(spool_enqueue(s, make_memfd(c, 64 * 1024), ctx.env, 0, on_free_ack, &ctx, id));
        }
        /* No loop iteration: every result comes from spool_free(). */
        spool_free(s);
        printf("# spool_free with %u in flight: %u committed, %u canceled\n", N, ctx.ok, ctx.canceled);
        ASSERT_EQ(ctx.fired, N);
        ASSERT_EQ(ctx.ok + ctx.canceled, N);
        ASSERT_EQ(ctx.shutdown, N);

        Loaded *l = load_dir(e, dir, NULL);
        ASSERT_EQ(l->n, ctx.ok);
        loaded_done(l);
        ASSERT_EQ(count_entries(dir, "tmp"), 0);
        free(c);
        json_object_put(ctx.env);
        sd_event_unref(e);
}

static void replace_in_file(const char *dir, const char *name, const char *from, const char *to) {
        size_t n;
        char *t = read_path(dir, "msg", name, &n), *p = strstr(t, from), *out;
        if (!p)
                TAP_FAIL("%.500s not in %.500s", from, name);
        if (asprintf(&out, "%.*s%s%s", (int) (p - t), t, to, p + strlen(from)) < 0)
                TAP_FAIL("asprintf");
        write_path(dir, "msg", name, out, strlen(out));
        free(out);
        free(t);
}

static void path_of(char *buf, size_t n, const char *dir, const char *sub, const char *id, const char *ext) {
        snprintf(buf, n, "%s/%s/%s%s", dir, sub, id, ext);
}

TEST(quarantine_torn_and_foreign) {
        const char *dir = make_temp_dir();
        enum { N = 12 };
        size_t sizes[N];
        uint8_t *contents[N];
        Ack acks[N];
        char p[4096], q[4096];
        sd_event *e = NULL;
        Spool *s = NULL;
        SpoolStats st;
        unsigned expect_quarantined = 0;
        int fd;

        for (unsigned i = 0; i < N; i++) {
                sizes[i] = 1000 + i;
                contents[i] = pattern(sizes[i], 100 + i);
        }
        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(spool_new(e, dir, &s));
        commit_all(e, s, acks, N, contents, sizes);
        /* 0: envelope updated (valid .upd); 1: torn .upd; 2: untouched. */
        json_object *upd = json_object_new_object();
        json_object_object_add(upd, "state", json_object_new_string("updated"));
        ASSERT_OK(spool_update_envelope(s, acks[0].id, upd));
        ASSERT_OK(spool_update_envelope(s, acks[1].id, upd));
        spool_free(s);

        /* 1: the update file torn (cut in half): the committed envelope stands. */
        path_of(p, sizeof p, dir, "msg", acks[1].id, ".upd");
        ASSERT_OK(truncate(p, 10));
        expect_quarantined += 1;
        /* 3: envelope without data. */
        path_of(p, sizeof p, dir, "msg", acks[3].id, ".data");
        ASSERT_OK(unlink(p));
        expect_quarantined += 1;
        /* 4: short data. */
        path_of(p, sizeof p, dir, "msg", acks[4].id, ".data");
        ASSERT_OK(truncate(p, (off_t) sizes[4] - 1));
        expect_quarantined += 2;
        /* 5: same size, one byte flipped: CRC mismatch. */
        path_of(p, sizeof p, dir, "msg", acks[5].id, ".data");
        fd = open(p, O_WRONLY|O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        uint8_t flipped = contents[5][500] ^ 0x01;
        ASSERT_EQ(pwrite(fd, &flipped, 1, 500), 1);
        close(fd);
        expect_quarantined += 2;
        /* 6: garbage envelope. */
        char name[64];
        snprintf(name, sizeof name, "%s.env", acks[6].id);
        write_path(dir, "msg", name, "\x00\x01garbage{{", 11);
        expect_quarantined += 2;
        /* 7: unknown format version. */
        snprintf(name, sizeof name, "%s.env", acks[7].id);
        replace_in_file(dir, name, "\"version\":1", "\"version\":2");
        expect_quarantined += 2;
        /* 8: data without envelope (a crash between the two renames). */
        path_of(p, sizeof p, dir, "msg", acks[8].id, ".env");
        ASSERT_OK(unlink(p));
        expect_quarantined += 1;
        /* 9: the .data is a FIFO: must neither hang nor pass. */
        path_of(p, sizeof p, dir, "msg", acks[9].id, ".data");
        ASSERT_OK(unlink(p));
        ASSERT_OK(mkfifo(p, 0600));
        expect_quarantined += 2;
        /* 10: the .data is a 10 GiB sparse file: the size check refuses it without reading. */
        path_of(p, sizeof p, dir, "msg", acks[10].id, ".data");
        ASSERT_OK(truncate(p, 10LL << 30));
        expect_quarantined += 2;
        /* 11: envelope naming another id (a file copied from elsewhere). */
        snprintf(name, sizeof name, "%s.env", acks[11].id);
        replace_in_file(dir, name, acks[11].id, acks[2].id);
        expect_quarantined += 2;

        /* Foreign names, a foreign extension of a good id, directories. */
        write_path(dir, "msg", "hello.txt", "hi", 2);
        write_path(dir, "msg", ".hidden", "", 0);
        snprintf(name, sizeof name, "%s.bak", acks[2].id);
        write_path(dir, "msg", name, "x", 1);
        snprintf(name, sizeof name, "%s.envx", acks[0].id);
        write_path(dir, "msg", name, "x", 1);
        snprintf(p, sizeof p, "%s/msg/somedir", dir);
        ASSERT_OK(mkdir(p, 0700));
        snprintf(q, sizeof q, "%s/msg/somedir/inner", dir);
        ASSERT_OK(mkdir(q, 0700));
        snprintf(p, sizeof p, "%s/msg/0000000000000000AB.env", dir);
        ASSERT_OK(mkdir(p, 0700));
        snprintf(p, sizeof p, "%s/msg/0000000000000000AB.data", dir);
        ASSERT_OK(symlink("/etc/passwd", p));
        snprintf(p, sizeof p, "%s/msg/link", dir);
        ASSERT_OK(symlink("/nonexistent", p));
        expect_quarantined += 8;

        /* tmp/ leftovers: files are deleted, a directory is moved aside. */
        write_path(dir, "tmp", "0000000000000000AC.data", "partial", 7);
        write_path(dir, "tmp", "0000000000000000AC.env", "{\"vers", 6);
        write_path(dir, "tmp", "junk", "", 0);
        snprintf(p, sizeof p, "%s/tmp/adir", dir);
        ASSERT_OK(mkdir(p, 0700));
        expect_quarantined += 1;

        uint64_t t0 = now_usec();
        Loaded *l = load_dir(e, dir, &st);
        uint64_t took = now_usec() - t0;
        printf("# load of %u messages with %u bad entries: %" PRIu64 " us\n", N, expect_quarantined, took);
        ASSERT_TRUE(took < 5 * 1000000); /* the 10 GiB file was not read */

        ASSERT_EQ(l->n, 3);
        ASSERT_STREQ(l->ids[0], acks[0].id);
        ASSERT_STREQ(l->ids[1], acks[1].id);
        ASSERT_STREQ(l->ids[2], acks[2].id);
        ASSERT_STREQ(json_object_to_json_string_ext(l->env[0], JSON_C_TO_STRING_PLAIN), "{\"state\":\"updated\"}");
        json_object *orig = make_envelope("sender@example.org", 2);
        ASSERT_STREQ(json_object_to_json_string_ext(l->env[1], JSON_C_TO_STRING_PLAIN),
                     json_object_to_json_string_ext(orig, JSON_C_TO_STRING_PLAIN));
        json_object_put(orig);
        ASSERT_EQ(l->size[2], sizes[2]);
        loaded_done(l);

        ASSERT_EQ(st.quarantined, expect_quarantined);
        ASSERT_EQ(count_entries(dir, "quarantine"), expect_quarantined);
        ASSERT_EQ(count_entries(dir, "tmp"), 0);
        /* Left in msg/: 0 (data, env, upd), 1 (data, env), 2 (data, env). */
        ASSERT_EQ(count_entries(dir, "msg"), 7);

        /* A second load finds a clean spool. */
        l = load_dir(e, dir, &st);
        ASSERT_EQ(l->n, 3);
        ASSERT_EQ(st.quarantined, 0);
        loaded_done(l);

        json_object_put(upd);
        for (unsigned i = 0; i < N; i++)
                free(contents[i]);
        sd_event_unref(e);
}

static int on_load_fail(Spool *s, const char *id, json_object *envelope, uint64_t size, void *userdata) {
        unsigned *n = userdata;
        return ++*n == 2 ? -ENOTRECOVERABLE : 0;
}

TEST(load_callback_error_stops) {
        const char *dir = make_temp_dir();
        size_t sizes[3] = { 1, 2, 3 };
        uint8_t *contents[3] = { pattern(1, 1), pattern(2, 2), pattern(3, 3) };
        Ack acks[3];
        sd_event *e = NULL;
        Spool *s = NULL;
        unsigned n = 0;

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(spool_new(e, dir, &s));
        commit_all(e, s, acks, 3, contents, sizes);
        spool_free(s);
        ASSERT_OK(spool_new(e, dir, &s));
        ASSERT_ERR(spool_load(s, on_load_fail, &n), -ENOTRECOVERABLE);
        ASSERT_EQ(n, 2);
        spool_free(s);
        for (unsigned i = 0; i < 3; i++)
                free(contents[i]);
        sd_event_unref(e);
}

/* ---- crash safety ---- */

static char *driver_path(void) {
        const char *env = getenv("SPOOL_CRASH_DRIVER");
        char self[4096], *slash, *p;
        ssize_t n;

        if (env && *env)
                return strdup(env);
        /* Run by hand: the driver is built next to this test. */
        n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0)
                return NULL;
        self[n] = 0;
        slash = strrchr(self, '/');
        if (!slash)
                return NULL;
        *slash = 0;
        if (asprintf(&p, "%s/spool-crash-driver", self) < 0)
                return NULL;
        return p;
}

typedef struct Acked {
        char id[SPOOL_ID_MAX];
        uint32_t crc;
        uint64_t size;
} Acked;

TEST(crash_safety_sigkill) {
        const char *dir = make_temp_dir(), *outdir = make_temp_dir();
        enum { ROUNDS = 20, MAX_ACKED = 16384 };
        Acked *acked = calloc(MAX_ACKED, sizeof *acked);
        unsigned n_acked = 0, total_checked = 0, max_quarantined = 0;
        _cleanup_free_ char *driver = driver_path();
        uint64_t start = now_usec();
        unsigned seed = (unsigned) (time(NULL) ^ getpid());
        sd_event *e = NULL;
        Spool *s = NULL;

        ASSERT_NOT_NULL(acked);
        ASSERT_NOT_NULL(driver);
        if (access(driver, X_OK) < 0)
                TAP_FAIL("driver %.500s: %m", driver);
        printf("# crash driver %s, seed %u\n", driver, seed);
        srand(seed);
        ASSERT_OK(sd_event_new(&e));

        for (unsigned round = 0; round < ROUNDS; round++) {
                char out[4096], seedarg[32], line[256];
                unsigned delay_ms = 50 + (unsigned) rand() % 251, new_acked = 0;
                int status;
                pid_t pid;
                FILE *f;

                /* Stop early rather than overrun the time budget. */
                if (now_usec() - start > 45 * 1000000ULL) {
                        printf("# time budget reached after %u rounds\n", round);
                        break;
                }

                snprintf(out, sizeof out, "%s/acks-%u", outdir, round);
                snprintf(seedarg, sizeof seedarg, "%d", rand());
                int outfd = open(out, O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0600);
                ASSERT_TRUE(outfd >= 0);
                fflush(stdout);
                pid = fork();
                ASSERT_TRUE(pid >= 0);
                if (pid == 0) {
                        int devnull = open("/dev/null", O_WRONLY);
                        dup2(outfd, STDOUT_FILENO);
                        if (devnull >= 0)
                                dup2(devnull, STDERR_FILENO);
                        execl(driver, driver, dir, "8", seedarg, (char *) NULL);
                        _exit(127);
                }
                close(outfd);
                struct timespec ts = { .tv_sec = 0, .tv_nsec = (long) delay_ms * 1000000L };
                nanosleep(&ts, NULL);
                ASSERT_OK(kill(pid, SIGKILL));
                ASSERT_EQ(waitpid(pid, &status, 0), pid);
                if (!WIFSIGNALED(status))
                        TAP_FAIL("round %u: driver ended by itself (status %d) instead of being killed", round, status);

                /* Every complete line is an acknowledgement. */
                f = fopen(out, "re");
                ASSERT_NOT_NULL(f);
                while (fgets(line, sizeof line, f)) {
                        Acked a = {};
                        char *nl = strchr(line, '\n');
                        if (!nl)
                                break; /* cut by the kill: not an acknowledgement */
                        if (sscanf(line, "%31s %" SCNx32 " %" SCNu64, a.id, &a.crc, &a.size) != 3)
                                TAP_FAIL("round %u: bad line %.500s", round, line);
                        if (n_acked >= MAX_ACKED)
                                TAP_FAIL("more than %u acknowledgements to track", MAX_ACKED);
                        acked[n_acked++] = a;
                        new_acked++;
                }
                fclose(f);

                /* Every acknowledgement so far (all rounds) must load intact. */
                SpoolStats st;
                Loaded *l = calloc(1, sizeof *l);
                ASSERT_NOT_NULL(l);
                ASSERT_OK(spool_new(e, dir, &s));
                ASSERT_OK(spool_load(s, on_load, l));
                spool_get_stats(s, &st);
                max_quarantined = MAX(max_quarantined, (unsigned) st.quarantined);
                for (unsigned i = 0; i < n_acked; i++) {
                        int k = loaded_find(l, acked[i].id);
                        size_t n;
                        if (k < 0)
                                TAP_FAIL("round %u: acknowledged %.500s lost", round, acked[i].id);
                        ASSERT_EQ(l->size[k], acked[i].size);
                        json_object *v;
                        ASSERT_TRUE(json_object_object_get_ex(l->env[k], "crc32", &v));
                        ASSERT_EQ(json_object_get_int64(v), acked[i].crc);
                        int fd = spool_open_content(s, acked[i].id);
                        ASSERT_OK(fd);
                        uint8_t *b = read_fd(fd, &n);
                        close(fd);
                        ASSERT_EQ(n, acked[i].size);
                        ASSERT_EQ(crc32(crc32(0L, Z_NULL, 0), b, (uInt) n), acked[i].crc);
                        free(b);
                        total_checked++;
                }
                /* And nothing torn is ever loaded, acknowledged or not. */
                for (unsigned k = 0; k < l->n; k++) {
                        json_object *v;
                        size_t n;
                        ASSERT_TRUE(json_object_object_get_ex(l->env[k], "crc32", &v));
                        int fd = spool_open_content(s, l->ids[k]);
                        ASSERT_OK(fd);
                        uint8_t *b = read_fd(fd, &n);
                        close(fd);
                        ASSERT_EQ(n, l->size[k]);
                        ASSERT_EQ(crc32(crc32(0L, Z_NULL, 0), b, (uInt) n), json_object_get_int64(v));
                        free(b);
                }
                printf("# round %u: killed after %u ms, %u new acks, %u acked total, %u on disk, %" PRIu64
                       " quarantined\n", round, delay_ms, new_acked, n_acked, l->n, st.quarantined);
                spool_free(s);
                loaded_done(l);

                /* Keep the spool small: drop what was checked, now and then. */
                if (round % 5 == 4) {
                        ASSERT_OK(spool_new(e, dir, &s));
                        Loaded *all = calloc(1, sizeof *all);
                        ASSERT_NOT_NULL(all);
                        ASSERT_OK(spool_load(s, on_load, all));
                        for (unsigned i = 0; i < all->n; i++)
                                ASSERT_OK(spool_remove(s, all->ids[i]));
                        spool_free(s);
                        loaded_done(all);
                        n_acked = 0;
                }
        }
        printf("# crash safety: %u acknowledged-message checks, %" PRIu64 " ms\n",
               total_checked, (now_usec() - start) / 1000);
        ASSERT_TRUE(total_checked > 0);
        free(acked);
        sd_event_unref(e);
}

int main(void) {
        return tap_run();
}
