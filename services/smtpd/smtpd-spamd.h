/* SPDX-License-Identifier: MIT */
#pragma once

/* A client for SpamAssassin's spamd (the SPAMC/1.5 protocol, as spamc
 * speaks it): one CHECK per scan, on its own connection, driven by the
 * event loop. The message goes as it is (our Received: header included,
 * which spamd's relay rules want); the answer's "Spam: True ; 15.2 / 5.0"
 * line gives the score.
 *
 * Addresses: "IP:PORT", "[IPv6]:PORT", "localhost:PORT", a bare IP or
 * "localhost" (port 783, spamd's default), or a Unix socket as "/path" or
 * "unix:/path". Names other than localhost are refused (-EINVAL): resolving
 * them would block the loop, and spamd belongs on this host or a fixed
 * address anyway.
 *
 * The caller bounds the time (spamd_scan_cancel() from its own timer); the
 * size is bounded here: a message larger than max_size is not sent
 * (-EFBIG), as spamc does not scan one over its --max-size. */

#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define SPAMD_PORT_DEFAULT 783U
#define SPAMD_MAX_SIZE_DEFAULT (500U * 1024U) /* spamc's default */

typedef struct SpamdScan SpamdScan;

/* result: 0 with the score, or a negative errno: -ECONNREFUSED and the
 * like when spamd could not be reached, -EPROTO when its answer was not
 * understood or not EX_OK (0), -ECONNRESET when it closed early. why is
 * a short text for logs and traces. */
typedef void (*SpamdCallback)(int result, double score, const char *why, void *userdata);

/* Parses an address as above; port overrides the one in address when
 * nonzero (not for Unix sockets). */
int spamd_address_parse(const char *address, unsigned port, struct sockaddr_storage *ret, socklen_t *ret_len);

/* Starts scanning the message in fd (read from offset 0 to its end; the
 * fd is not kept). cb is called once, from the event loop, never from
 * within this call; not after spamd_scan_cancel(). */
int spamd_scan_start(sd_event *e, const char *address, unsigned port, int fd, uint64_t max_size,
                     SpamdCallback cb, void *userdata, SpamdScan **ret);
/* Stops a scan (NULL is fine); its callback will not come. */
SpamdScan *spamd_scan_cancel(SpamdScan *s);
