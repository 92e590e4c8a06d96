/* SPDX-License-Identifier: MIT */
/* A command-line front end to the mail authentication library, for tests
 * that pit it against other implementations (check-dkimpy-interop.py). It
 * reads a message on stdin and feeds it to the library in small chunks;
 * key lookups are answered from a JSON object {"name": "TXT", ...} (names
 * not in it are NXDOMAIN).
 *
 *   mailauth-tool dkim-sign    KEY.pem DOMAIN SELECTOR ALGORITHM T   -> the DKIM-Signature field
 *   mailauth-tool dkim-verify  DNS.json                              -> one status per signature
 *   mailauth-tool arc-seal     KEY.pem DOMAIN SELECTOR AUTHSERV-ID T DNS.json
 *                                                                    -> AS, AMS, AAR fields
 *   mailauth-tool arc-validate DNS.json                              -> "STATUS N OLDEST-PASS"
 *   mailauth-tool arc-seal-suite KEY.pem DOMAIN SELECTOR SRV-ID T H-LIST DNS.json
 *                                                                    -> AS, AMS, AAR fields
 *
 * arc-seal-suite seals the way the ARC test suite specifies: cv and the AAR
 * results from the Authentication-Results fields of SRV-ID, h= exactly
 * H-LIST (colon-separated), the suite's standardized layout, and a 1024-bit
 * key allowed. */

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arc.h"
#include "authres.h"
#include "dkim.h"
#include "macro.h"

#define CHUNK 113

static char *read_all(FILE *f, size_t *ret_len) {
        size_t n = 0, cap = 0;
        char *buf = NULL;
        for (;;) {
                if (n + 4096 + 1 > cap) {
                        cap = (n + 4096 + 1) * 2;
                        char *b = realloc(buf, cap);
                        if (!b) {
                                free(buf);
                                return NULL;
                        }
                        buf = b;
                }
                size_t k = fread(buf + n, 1, cap - n - 1, f);
                if (k == 0)
                        break;
                n += k;
        }
        if (!buf)
                buf = calloc(1, 1);
        else
                buf[n] = 0;
        *ret_len = n;
        return buf;
}

static gnutls_privkey_t load_key(const char *path) {
        FILE *f = fopen(path, "re");
        size_t n;
        gnutls_privkey_t key = NULL;
        if (!f)
                return NULL;
        _cleanup_free_ char *pem = read_all(f, &n);
        fclose(f);
        if (!pem || dkim_privkey_load_pem(pem, n, &key) < 0)
                return NULL;
        return key;
}

static int answer(json_object *dns, const char *name,
                  int (*fn)(void *, const char *, DkimLookup, const char *const *, const size_t *, size_t), void *obj) {
        json_object *v;
        if (json_object_object_get_ex(dns, name, &v)) {
                const char *t = json_object_get_string(v);
                size_t l = strlen(t);
                return fn(obj, name, DKIM_LOOKUP_FOUND, &t, &l, 1);
        }
        return fn(obj, name, DKIM_LOOKUP_NOT_FOUND, NULL, NULL, 0);
}

static int verifier_answer(void *o, const char *n, DkimLookup l, const char *const *t, const size_t *tl, size_t c) {
        return dkim_verifier_answer(o, n, l, t, tl, c);
}

static int validator_answer(void *o, const char *n, DkimLookup l, const char *const *t, const size_t *tl, size_t c) {
        return arc_validator_answer(o, n, l, t, tl, c);
}

static int run_validator(const char *msg, size_t len, json_object *dns, ArcValidator **ret) {
        ArcValidator *v = NULL;
        const char *name;
        int r = arc_validator_new(NULL, &v);
        for (size_t off = 0; r >= 0 && off < len; off += CHUNK)
                r = arc_validator_feed(v, msg + off, MIN((size_t) CHUNK, len - off));
        if (r >= 0)
                r = arc_validator_feed_end(v);
        while (r >= 0 && arc_validator_next_query(v, &name) > 0)
                r = answer(dns, name, validator_answer, v);
        if (r < 0) {
                arc_validator_free(v);
                return r;
        }
        *ret = v;
        return 0;
}

int main(int argc, char **argv) {
        _cleanup_free_ char *msg = NULL;
        size_t len;
        int r;

        if (argc < 2)
                goto usage;
        msg = read_all(stdin, &len);
        if (!msg)
                return 1;

        if (strcmp(argv[1], "dkim-sign") == 0 && argc == 7) {
                gnutls_privkey_t key = load_key(argv[2]);
                DkimAlgorithm alg = dkim_algorithm_from_string(argv[5], strlen(argv[5]));
                DkimSigner *s = NULL;
                char *field = NULL;
                if (!key || alg < 0)
                        return 1;
                DkimSignParams p = {
                        .domain = argv[3], .selector = argv[4], .key = key, .algorithm = alg,
                        .header_canon = DKIM_CANON_RELAXED, .body_canon = DKIM_CANON_RELAXED,
                        .timestamp = strtoull(argv[6], NULL, 10),
                };
                r = dkim_signer_new(&p, &s);
                for (size_t off = 0; r >= 0 && off < len; off += CHUNK)
                        r = dkim_signer_feed(s, msg + off, MIN((size_t) CHUNK, len - off));
                if (r >= 0)
                        r = dkim_signer_feed_end(s);
                if (r >= 0)
                        r = dkim_signer_sign(s, &field);
                dkim_signer_free(s);
                gnutls_privkey_deinit(key);
                if (r < 0) {
                        fprintf(stderr, "dkim-sign: %s\n", strerror(-r));
                        return 1;
                }
                fputs(field, stdout);
                free(field);
                return 0;
        }

        if (strcmp(argv[1], "dkim-verify") == 0 && argc == 3) {
                json_object *dns = json_object_from_file(argv[2]);
                DkimVerifier *v = NULL;
                const DkimResult *res;
                const char *name;
                size_t n;
                if (!dns)
                        return 1;
                r = dkim_verifier_new(NULL, &v);
                for (size_t off = 0; r >= 0 && off < len; off += CHUNK)
                        r = dkim_verifier_feed(v, msg + off, MIN((size_t) CHUNK, len - off));
                if (r >= 0)
                        r = dkim_verifier_feed_end(v);
                while (r >= 0 && dkim_verifier_next_query(v, &name) > 0)
                        r = answer(dns, name, verifier_answer, v);
                if (r >= 0)
                        r = dkim_verifier_results(v, &res, &n);
                if (r < 0) {
                        fprintf(stderr, "dkim-verify: %s\n", strerror(-r));
                        return 1;
                }
                for (size_t i = 0; i < n; i++)
                        printf("%s %s\n", dkim_status_to_string(res[i].status), res[i].reason ? res[i].reason : "");
                dkim_verifier_free(v);
                json_object_put(dns);
                return 0;
        }

        if (strcmp(argv[1], "arc-validate") == 0 && argc == 3) {
                json_object *dns = json_object_from_file(argv[2]);
                ArcValidator *v = NULL;
                const ArcResult *res;
                if (!dns)
                        return 1;
                r = run_validator(msg, len, dns, &v);
                if (r >= 0)
                        r = arc_validator_result(v, &res);
                if (r < 0) {
                        fprintf(stderr, "arc-validate: %s\n", strerror(-r));
                        return 1;
                }
                printf("%s %u %u %s\n", arc_status_to_string(res->status), res->n_sets, res->oldest_pass,
                       res->reason ? res->reason : "");
                arc_validator_free(v);
                json_object_put(dns);
                return 0;
        }

        if (strcmp(argv[1], "arc-seal-suite") == 0 && argc == 9) {
                gnutls_privkey_t key = load_key(argv[2]);
                json_object *dns = json_object_from_file(argv[8]);
                ArcValidator *v = NULL;
                ArcSeal seal = {};
                _cleanup_free_ char *results = NULL, *hcopy = strdup(argv[7]);
                const char *arc = NULL, *names[128];
                size_t n_names = 0;
                if (!key || !dns || !hcopy)
                        return 1;
                for (char *save = NULL, *tok = strtok_r(hcopy, ":", &save); tok && n_names < 127;
                     tok = strtok_r(NULL, ":", &save))
                        names[n_names++] = tok;
                names[n_names] = NULL;
                r = run_validator(msg, len, dns, &v);
                if (r >= 0) {
                        const MailHeaders *h = arc_validator_headers(v);
                        r = authres_collect(mail_headers_fields(h), mail_headers_count(h), argv[5], &results, &arc);
                }
                if (r >= 0) {
                        ArcSealParams p = {
                                .domain = argv[3], .selector = argv[4], .key = key,
                                .algorithm = DKIM_ALGORITHM_RSA_SHA256, .authserv_id = argv[5],
                                .results = results, .headers = names,
                                .timestamp = strtoull(argv[6], NULL, 10),
                                .cv = !arc ? ARC_SEAL_CV_NONE : strcmp(arc, "pass") == 0 ? ARC_SEAL_CV_PASS :
                                      strcmp(arc, "none") == 0 ? ARC_SEAL_CV_NONE : ARC_SEAL_CV_FAIL,
                                .min_rsa_bits = 1024,
                                .standardized = true,
                        };
                        r = arc_validator_seal(v, &p, &seal);
                }
                arc_validator_free(v);
                gnutls_privkey_deinit(key);
                json_object_put(dns);
                if (r < 0) {
                        fprintf(stderr, "arc-seal-suite: %s\n", strerror(-r));
                        return 1;
                }
                printf("%s%s%s", seal.as, seal.ams, seal.aar);
                arc_seal_done(&seal);
                return 0;
        }

        if (strcmp(argv[1], "arc-seal") == 0 && argc == 8) {
                gnutls_privkey_t key = load_key(argv[2]);
                json_object *dns = json_object_from_file(argv[7]);
                ArcValidator *v = NULL;
                ArcSeal seal = {};
                if (!key || !dns)
                        return 1;
                r = run_validator(msg, len, dns, &v);
                if (r >= 0) {
                        const ArcResult *res;
                        _cleanup_free_ char *results = NULL;
                        r = arc_validator_result(v, &res);
                        if (r >= 0 && asprintf(&results, "arc=%s", arc_status_to_string(res->status)) < 0)
                                r = -ENOMEM;
                        ArcSealParams p = {
                                .domain = argv[3], .selector = argv[4], .key = key,
                                .algorithm = DKIM_ALGORITHM_RSA_SHA256, .authserv_id = argv[5],
                                .results = results, .timestamp = strtoull(argv[6], NULL, 10),
                        };
                        if (r >= 0)
                                r = arc_validator_seal(v, &p, &seal);
                }
                arc_validator_free(v);
                gnutls_privkey_deinit(key);
                json_object_put(dns);
                if (r < 0) {
                        fprintf(stderr, "arc-seal: %s\n", strerror(-r));
                        return 1;
                }
                printf("%s%s%s", seal.as, seal.ams, seal.aar);
                arc_seal_done(&seal);
                return 0;
        }

usage:
        fprintf(stderr, "usage: see the comment at the top of mailauth-tool.c\n");
        return 2;
}
