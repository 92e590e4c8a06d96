/* SPDX-License-Identifier: MIT */
/* arc-bench: halyard's ARC library on one core, no I/O (what halyard-arcd
 * does per message minus varlink and DNS; keys come from a table):
 *
 *   arc-bench raw-sign KEY.pem SECONDS             GnuTLS RSA sign of a SHA-256 digest
 *   arc-bench validate MSG KEYS SECONDS            full validation of MSG's chain
 *   arc-bench seal MSG KEYS KEY.pem DOMAIN SELECTOR SECONDS
 *                                                  validation + a new ARC set
 *
 * KEYS is a file of lines "NAME TXT" (NAME like sel._domainkey.example.org).
 * Prints operations per second. Run by tests/bench/run-arcd-bench. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "arc.h"
#include "dkim.h"

static char *slurp(const char *path, size_t *ret_n) {
        FILE *f = fopen(path, "rb");
        if (!f) {
                perror(path);
                exit(2);
        }
        char *buf = NULL;
        size_t n = 0, a = 0;
        for (;;) {
                if (n + 65536 > a) {
                        a = (a + 65536) * 2;
                        buf = realloc(buf, a);
                        if (!buf)
                                exit(2);
                }
                size_t k = fread(buf + n, 1, 65536, f);
                n += k;
                if (k == 0)
                        break;
        }
        fclose(f);
        buf[n] = 0;
        *ret_n = n;
        return buf;
}

typedef struct Keys {
        char **names, **txt;
        size_t n;
} Keys;

static void keys_load(const char *path, Keys *k) {
        size_t n;
        char *text = slurp(path, &n), *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *sp = strchr(line, ' ');
                if (!sp)
                        continue;
                *sp = 0;
                k->names = realloc(k->names, (k->n + 1) * sizeof(char *));
                k->txt = realloc(k->txt, (k->n + 1) * sizeof(char *));
                k->names[k->n] = strdup(line);
                k->txt[k->n] = strdup(sp + 1);
                k->n++;
        }
        free(text);
}

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Validates msg; returns the validator (done) for sealing. */
static ArcValidator *validate(const char *msg, size_t n, const Keys *k) {
        ArcValidateParams p = {};
        ArcValidator *v;
        const char *name;
        if (arc_validator_new(&p, &v) < 0 || arc_validator_feed(v, msg, n) < 0 || arc_validator_feed_end(v) < 0)
                exit(1);
        while (arc_validator_next_query(v, &name) > 0) {
                size_t i;
                for (i = 0; i < k->n; i++)
                        if (strcasecmp(k->names[i], name) == 0)
                                break;
                if (i < k->n) {
                        const char *t = k->txt[i];
                        size_t l = strlen(t);
                        (void) arc_validator_answer(v, name, DKIM_LOOKUP_FOUND, &t, &l, 1);
                } else
                        (void) arc_validator_answer(v, name, DKIM_LOOKUP_NOT_FOUND, NULL, NULL, 0);
        }
        if (!arc_validator_is_done(v))
                exit(1);
        return v;
}

static gnutls_privkey_t load_key(const char *path) {
        size_t n;
        char *pem = slurp(path, &n);
        gnutls_privkey_t key;
        if (dkim_privkey_load_pem(pem, n, &key) < 0) {
                fprintf(stderr, "%s: not a private key\n", path);
                exit(2);
        }
        free(pem);
        return key;
}

int main(int argc, char **argv) {
        if (argc >= 4 && strcmp(argv[1], "raw-sign") == 0) {
                gnutls_privkey_t key = load_key(argv[2]);
                double secs = atof(argv[3]), t0 = now();
                uint8_t digest[DKIM_SHA256_LEN] = { 1, 2, 3 };
                unsigned long ops = 0;
                while (now() - t0 < secs) {
                        uint8_t *sig;
                        size_t len;
                        digest[0] = (uint8_t) ops;
                        if (dkim_privkey_sign(key, DKIM_ALGORITHM_RSA_SHA256, 0, digest, &sig, &len) < 0)
                                return 1;
                        free(sig);
                        ops++;
                }
                printf("%.0f\n", ops / (now() - t0));
                return 0;
        }
        if (argc >= 5 && strcmp(argv[1], "validate") == 0) {
                size_t n;
                char *msg = slurp(argv[2], &n);
                Keys k = {};
                keys_load(argv[3], &k);
                double secs = atof(argv[4]), t0 = now();
                unsigned long ops = 0;
                ArcValidator *v = validate(msg, n, &k);
                const ArcResult *res;
                if (arc_validator_result(v, &res) < 0 || res->status != ARC_STATUS_PASS) {
                        fprintf(stderr, "chain does not pass: %s\n", res ? res->reason : "?");
                        return 1;
                }
                arc_validator_free(v);
                while (now() - t0 < secs) {
                        arc_validator_free(validate(msg, n, &k));
                        ops++;
                }
                printf("%.0f\n", ops / (now() - t0));
                return 0;
        }
        if (argc >= 8 && strcmp(argv[1], "seal") == 0) {
                size_t n;
                char *msg = slurp(argv[2], &n);
                Keys k = {};
                keys_load(argv[3], &k);
                gnutls_privkey_t key = load_key(argv[4]);
                double secs = atof(argv[7]), t0 = now();
                unsigned long ops = 0;
                while (now() - t0 < secs) {
                        ArcValidator *v = validate(msg, n, &k);
                        ArcSealParams p = {
                                .domain = argv[5],
                                .selector = argv[6],
                                .key = key,
                                .algorithm = DKIM_ALGORITHM_RSA_SHA256,
                                .authserv_id = "bench.example",
                                .results = "arc=pass",
                                .timestamp = 1700000000,
                        };
                        ArcSeal s = {};
                        if (arc_validator_seal(v, &p, &s) < 0)
                                return 1;
                        arc_seal_done(&s);
                        arc_validator_free(v);
                        ops++;
                }
                printf("%.0f\n", ops / (now() - t0));
                return 0;
        }
        fprintf(stderr, "usage: arc-bench raw-sign KEY SECONDS | validate MSG KEYS SECONDS | "
                        "seal MSG KEYS KEY DOMAIN SELECTOR SECONDS\n");
        return 2;
}
