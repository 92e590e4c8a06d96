/* SPDX-License-Identifier: MIT */
/* The tag=value list parser, and the parsers built on it: DKIM-Signature,
 * ARC-Message-Signature, ARC-Seal and key records. Every tag must point
 * inside the input with a valid name and a value free of ";", names must
 * be distinct, and the signature/key parsers must either succeed with
 * consistent fields or fail with a reason. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dkim.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *p = (const char *) data;
        DkimTagList l = {};

        if (size > 64 * 1024)
                return 0;
        if (dkim_tags_parse(p, size, &l) == 0) {
                if (l.n > DKIM_TAGS_MAX)
                        abort();
                for (size_t i = 0; i < l.n; i++) {
                        const DkimTag *t = &l.tags[i];
                        if (t->name < p || t->name + t->name_len > p + size || t->name_len == 0)
                                abort();
                        if (t->value < p || t->value + t->value_len > p + size || t->after_eq > t->value)
                                abort();
                        if (memchr(t->value, ';', t->value_len) || t->after_eq[-1] != '=')
                                abort();
                        for (size_t j = 0; j < t->name_len; j++) {
                                char c = t->name[j];
                                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                      (j > 0 && ((c >= '0' && c <= '9') || c == '_'))))
                                        abort();
                        }
                        for (size_t j = 0; j < i; j++)
                                if (l.tags[j].name_len == t->name_len && memcmp(l.tags[j].name, t->name, t->name_len) == 0)
                                        abort();
                        char name[80];
                        if (t->name_len < sizeof name) {
                                memcpy(name, t->name, t->name_len);
                                name[t->name_len] = 0;
                                if (dkim_tags_get(&l, name) != t)
                                        abort();
                        }
                }
                dkim_tag_list_done(&l);
        }

        for (DkimSigKind k = DKIM_SIG_DKIM; k <= DKIM_SIG_AS; k++) {
                DkimSignature *s = NULL;
                const char *why = NULL;
                int r = dkim_signature_parse(k, p, size, &s, &why);
                if (r == 0) {
                        if (!s || !s->domain || !s->selector || !s->signature || s->signature_len == 0)
                                abort();
                        if (k != DKIM_SIG_DKIM && (s->instance < 1 || s->instance > ARC_MAX_INSTANCES))
                                abort();
                        if (k == DKIM_SIG_AS && (s->cv < 0 || s->cv >= _ARC_CV_MAX))
                                abort();
                        dkim_signature_free(s);
                } else if (r == -EINVAL && !why)
                        abort();
        }

        DkimKey *key = NULL;
        const char *why = NULL;
        int r = dkim_key_parse(p, size, &key, &why);
        if (r == 0) {
                if (!key->revoked && !key->pubkey)
                        abort();
                dkim_key_free(key);
        } else if (r == -EINVAL && !why)
                abort();
        return 0;
}
