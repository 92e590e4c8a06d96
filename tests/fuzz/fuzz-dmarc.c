/* SPDX-License-Identifier: MIT */
/* DMARC records and RFC5322.From values. The same input is a TXT record
 * (parse, then an evaluation that gets it as the From domain's answer)
 * and a From field value. A record parse either fails with a reason or
 * gives values in range with capped, NULL-terminated URI lists; a From
 * domain is a lower-cased host name that parses back to itself. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmarc.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_uris(char **uris, const uint64_t *sizes, size_t n) {
        if (!uris) {
                if (n != 0 || sizes)
                        abort();
                return;
        }
        if (n == 0 || n > DMARC_MAX_URIS || !sizes || uris[n])
                abort();
        for (size_t i = 0; i < n; i++)
                if (!uris[i] || !strchr(uris[i], ':') || strpbrk(uris[i], " \t;,!"))
                        abort();
}

static void fuzz_record(const char *p, size_t size) {
        DmarcRecord *r = NULL;
        const char *why = NULL;
        int k = dmarc_record_parse(p, size, &r, &why);
        if (k == 0) {
                if (!dmarc_record_is_dmarc1(p, size) || size > DMARC_RECORD_MAX)
                        abort();
                if (r->p < 0 || r->p >= _DMARC_POLICY_MAX || r->sp < 0 || r->sp >= _DMARC_POLICY_MAX)
                        abort();
                if (r->pct > 100 || r->fo_mask == 0 || r->fo_mask > 0xf)
                        abort();
                check_uris(r->rua, r->rua_max_size, r->n_rua);
                check_uris(r->ruf, r->ruf_max_size, r->n_ruf);
                dmarc_record_free(r);
        } else if (k != -EINVAL || !why || r)
                abort();
}

/* The PSL is read once: loading it per input would dominate the run. */
static DmarcPsl *psl;

static void fuzz_eval(const char *p, size_t size, const char *from) {
        DmarcAuthDomain dkim[] = { { "example.com", true }, { from, true } };
        DmarcParams params = {
                .from_domain = from,
                .spf_domain = "bounce.example.com",
                .spf_pass = size % 2,
                .dkim = dkim,
                .n_dkim = size % 3,
                .random = (unsigned) (size % 100),
        };
        DmarcEval *e = NULL;
        if (dmarc_eval_new(psl, &params, &e) < 0)
                return;
        const char *name;
        unsigned rounds = 0;
        while (dmarc_eval_next_query(e, &name) > 0) {
                if (++rounds > 2)
                        abort();
                /* Like the resolver's: NUL-terminated, NULs inside allowed. */
                char *text = malloc(size + 1);
                if (!text)
                        break;
                memcpy(text, p, size);
                text[size] = 0;
                DnsRecord rec = { .type = DNS_TYPE_TXT, .txt = { .text = text, .len = size, .n_strings = 1 } };
                DnsResult res = { .qname = name, .qtype = DNS_TYPE_TXT, .status = DNS_STATUS_OK,
                                  .records = &rec, .n_records = 1 };
                int k = dmarc_eval_answer(e, &res);
                free(text);
                if (k < 0)
                        break;
        }
        const DmarcResult *res;
        if (dmarc_eval_is_done(e) && dmarc_eval_result(e, &res) == 0) {
                if (!dmarc_result_to_string(res->result) || !res->reason)
                        abort();
                if (res->disposition > res->policy)
                        abort();
                if (res->result == DMARC_RESULT_PASS && res->disposition != DMARC_POLICY_NONE)
                        abort();
                if ((res->result == DMARC_RESULT_PASS || res->result == DMARC_RESULT_FAIL) != (res->record != NULL))
                        abort();
        }
        dmarc_eval_free(e);
}

static void fuzz_from(const char *p, size_t size) {
        char *d = NULL;
        int k = dmarc_from_domain(p, size, &d);
        if (k < 0) {
                if (k != -EBADMSG && k != -ENOMEM)
                        abort();
                return;
        }
        size_t n = strlen(d);
        if (n == 0 || n > 253 || d[0] == '.' || d[n - 1] == '.' || strstr(d, ".."))
                abort();
        for (size_t i = 0; i < n; i++)
                if ((d[i] >= 'A' && d[i] <= 'Z') || strchr(" @<>()[]\\\",;:", d[i]))
                        abort();
        /* It reads back as itself. */
        char *again = NULL, *addr = NULL;
        if (asprintf(&addr, "x@%s", d) < 0)
                abort();
        if (dmarc_from_domain(addr, strlen(addr), &again) < 0 || strcmp(again, d) != 0)
                abort();
        free(addr);
        free(again);

        fuzz_eval(p, size, d);
        free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *p = (const char *) data;

        if (size > 64 * 1024)
                return 0;
        if (!psl && dmarc_psl_new(NULL, &psl) < 0)
                abort();

        fuzz_record(p, size);
        fuzz_from(p, size);
        fuzz_eval(p, size, "mail.example.com");
        return 0;
}
