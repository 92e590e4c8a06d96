/* SPDX-License-Identifier: MIT */
#pragma once

/* The durable spool of halyard-queued. One message = a content file and an
 * envelope (JSON) under the spool directory. A message is committed only
 * when both, and the directory entries naming them, are on stable storage;
 * the caller acknowledges (SMTP 250) only after the commit callback.
 *
 * Group commit: copying content and syncing happen in one worker thread (a
 * disk wait must not block the event loop); all messages that arrive while
 * a sync is in progress share the next one, so syncs per message fall as
 * concurrency rises. Completions come back to the loop through an eventfd.
 *
 * Ownership: spool_new() returns a Spool freed with spool_free() (which
 * waits for the worker to finish what it has started; messages not yet
 * committed are reported with -ECANCELED). Envelope JSON passed in is
 * borrowed (serialised before the call returns). */

#include <json-c/json.h>
#include <stdint.h>
#include <systemd/sd-event.h>

typedef struct Spool Spool;

#define SPOOL_ID_MAX 32 /* queue ids: [0-9A-Z], time-ordered, unique */

typedef void (*SpoolCommitFn)(Spool *s, const char *id, int error, void *userdata);
/* Called by spool_load() for each intact message: its id, envelope and size. */
typedef int (*SpoolLoadFn)(Spool *s, const char *id, json_object *envelope, uint64_t size, void *userdata);

typedef struct SpoolStats {
        uint64_t committed;      /* messages made durable */
        uint64_t syncs;          /* sync calls issued */
        uint64_t batches;
        uint64_t quarantined;    /* torn/foreign files moved aside at load */
        uint64_t pending;        /* accepted by spool_enqueue, not committed yet */
} SpoolStats;

/* How a batch is made durable: one syncfs() of the spool's file system
 * (default), or fdatasync() of each file plus one fsync() of msg/ (cost
 * independent of other writers on the same file system). */
typedef enum SpoolSyncMode {
        SPOOL_SYNC_FS,
        SPOOL_SYNC_FILES,
        SPOOL_SYNC_DEFAULT = SPOOL_SYNC_FS,
} SpoolSyncMode;

/* Opens (creating) the spool in dir, which must exist, and starts the worker.
 * One Spool per directory at a time (an flock() on it; -EBUSY otherwise).
 * Call spool_load() before the first spool_enqueue(). */
int spool_new(sd_event *e, const char *dir, Spool **ret);
/* Finishes the batch being written, reports every job not yet reported
 * (callbacks run inside spool_free(); spool_enqueue() from them fails with
 * -ESHUTDOWN), joins the worker. Must not be called from a SpoolCommitFn. */
Spool *spool_free(Spool *s);
/* Changes the sync strategy; -EBUSY while messages are pending. */
int spool_set_sync_mode(Spool *s, SpoolSyncMode mode);

/* Stores a new message: content is read from content_fd (from offset 0 to
 * EOF; the spool takes ownership of the fd, also on failure) and the
 * envelope is written next to it. done runs on the event loop once both are
 * durable (error 0, id set) or storing failed (negative errno). Returns the
 * new queue id in ret_id (SPOOL_ID_MAX bytes) at once. Refuses content
 * larger than max_size with -EFBIG (0 = no limit): at once if the fd's size
 * says so, else through done. content_fd must be a regular file (memfd,
 * O_TMPFILE, …; else -EBADFD); envelope must be a JSON object (-EINVAL). */
int spool_enqueue(Spool *s, int content_fd, json_object *envelope, uint64_t max_size,
                  SpoolCommitFn done, void *userdata, char ret_id[SPOOL_ID_MAX]);

/* Walks the committed messages (at start, before any spool_enqueue():
 * -EBUSY after), in id (arrival) order, with each message's latest envelope.
 * Torn or foreign files are moved to the quarantine directory and counted,
 * never fatal; leftovers in tmp/ are deleted. A negative return from cb
 * stops the walk and is returned. */
int spool_load(Spool *s, SpoolLoadFn cb, void *userdata);

/* Replaces a message's envelope (delivery state). Written atomically (new
 * file + rename) beside the committed envelope, which stays as it is; not
 * synced: losing the update in a crash (or a torn update file, which load
 * ignores and quarantines) means a delivery may be repeated, never that a
 * message is lost. -ENOENT if there is no such message. */
int spool_update_envelope(Spool *s, const char *id, json_object *envelope);
/* Removes a delivered or bounced message (not synced: a crash may bring it
 * back, a repeated delivery). -ENOENT if there is no such message. */
int spool_remove(Spool *s, const char *id);
/* The same, done by the worker thread after its next commit batch, so that
 * the event loop never waits on unlink (which can block on discards). Not
 * synced either; spool_free() does what is left. */
int spool_remove_async(Spool *s, const char *id);
/* A read-only fd of the message content (caller closes). */
int spool_open_content(Spool *s, const char *id);

void spool_get_stats(Spool *s, SpoolStats *ret);
