/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

/* Writes all n bytes of p to a blocking fd (regular files, memfds),
 * retrying after EINTR and short writes. 0, or negative errno (-EIO when
 * write() makes no progress). */
int write_all(int fd, const void *p, size_t n);
