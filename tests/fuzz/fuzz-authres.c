/* SPDX-License-Identifier: MIT */
/* Authentication-Results values: a parse either fails or yields an
 * authserv-id and results whose method and result are non-empty keywords;
 * collecting over a header section built from the input never fails
 * except for memory. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "authres.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *p = (const char *) data;
        AuthRes *a = NULL;

        if (size > 64 * 1024)
                return 0;
        if (authres_parse(p, size, &a) == 0) {
                if (!a->authserv_id || a->n_results > AUTHRES_MAX_RESULTS)
                        abort();
                for (size_t i = 0; i < a->n_results; i++)
                        if (!a->results[i].method[0] || !a->results[i].result[0] || !a->results[i].text[0])
                                abort();
                if (a->none && a->n_results > 0)
                        abort();
                authres_free(a);
        }

        /* As the value of Authentication-Results fields in a message. */
        static const char prefix[] = "Authentication-Results:";
        char *msg = malloc(sizeof prefix + size + 4);
        if (!msg)
                return 0;
        memcpy(msg, prefix, sizeof prefix - 1);
        memcpy(msg + sizeof prefix - 1, p, size);
        memcpy(msg + sizeof prefix - 1 + size, "\r\n\r\n", 4);
        MailHeaders *h = NULL;
        if (mail_headers_parse(msg, sizeof prefix - 1 + size + 4, NULL, &h, NULL) == 0) {
                char *res = NULL;
                const char *arc = NULL;
                int r = authres_collect(mail_headers_fields(h), mail_headers_count(h), "mx.example.org", &res, &arc);
                if (r < 0 && r != -ENOMEM)
                        abort();
                free(res);
                mail_headers_free(h);
        }
        free(msg);
        return 0;
}
