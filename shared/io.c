/* SPDX-License-Identifier: MIT */
#include "io.h"

#include <errno.h>
#include <unistd.h>

int write_all(int fd, const void *p, size_t n) {
        const char *q = p;
        while (n > 0) {
                ssize_t k = write(fd, q, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                q += k;
                n -= (size_t) k;
        }
        return 0;
}
