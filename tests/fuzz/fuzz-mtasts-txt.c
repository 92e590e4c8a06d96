/* SPDX-License-Identifier: MIT */
/* The `_mta-sts` TXT record parser (RFC 8461 §3.1) over arbitrary bytes.
 * Invariants: an accepted record starts with "v=STSv1" and yields an id of
 * 1 to 32 letters and digits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queued-mtasts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char id[MTASTS_ID_MAX + 1];
        int r = mtasts_txt_parse((const char *) data, size, id);
        if (r < 0 && r != -EBADMSG)
                abort();
        if (r <= 0)
                return 0;
        if (size < 7 || memcmp(data, "v=STSv1", 7) != 0)
                abort();
        size_t n = strlen(id);
        if (n == 0 || n > MTASTS_ID_MAX)
                abort();
        for (size_t i = 0; i < n; i++)
                if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z')))
                        abort();
        return 0;
}
