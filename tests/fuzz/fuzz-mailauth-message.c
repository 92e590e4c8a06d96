/* SPDX-License-Identifier: MIT */
/* Whole messages through the state machines: the ARC validator and the DKIM
 * verifier (keys from a fixed table; the first input byte picks the
 * chunking and whether lookups fail temporarily), then a seal and a DKIM
 * signature with a fixed Ed25519 key. Properties: every run completes with
 * a consistent result; sealing fails only in the documented ways; a seal
 * over a passing (or absent) chain validates as pass, and our own DKIM
 * signature verifies, whatever the rest of the message looks like. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arc.h"
#include "dkim.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* RFC 8032 §7.1 test 1 (as RFC 8463 uses it). */
static const char ed25519_pem[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
        "-----END PRIVATE KEY-----\n";

static const struct {
        const char *name, *txt;
} table[] = {
        { "fz._domainkey.fuzz.example", "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=" },
        { "dummy._domainkey.example.org",
          "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB" },
};

static void lookup(const char *name, bool tempfail, DkimLookup *ret, const char **ret_txt) {
        *ret = tempfail ? DKIM_LOOKUP_TEMPFAIL : DKIM_LOOKUP_NOT_FOUND;
        *ret_txt = NULL;
        for (size_t i = 0; i < ELEMENTSOF(table) && !tempfail; i++)
                if (strcasecmp(table[i].name, name) == 0) {
                        *ret = DKIM_LOOKUP_FOUND;
                        *ret_txt = table[i].txt;
                }
}

static const MailHeaderLimits roomy = { .max_fields = 4000, .max_total = 8 * 1024 * 1024 };

static ArcValidator *validate(const char *p, size_t n, size_t chunk, bool tempfail, const MailHeaderLimits *limits) {
        ArcValidator *v = NULL;
        const char *name;
        if (arc_validator_new(&(ArcValidateParams) { .header_limits = limits ? *limits : (MailHeaderLimits) {} }, &v) < 0)
                return NULL;
        for (size_t off = 0; off < n; off += chunk)
                if (arc_validator_feed(v, p + off, MIN(chunk, n - off)) < 0)
                        abort();
        if (arc_validator_feed_end(v) < 0)
                abort();
        while (arc_validator_next_query(v, &name) > 0) {
                DkimLookup l;
                const char *txt;
                lookup(name, tempfail, &l, &txt);
                size_t tl = txt ? strlen(txt) : 0;
                if (arc_validator_answer(v, name, l, &txt, &tl, txt ? 1 : 0) < 0)
                        abort();
        }
        if (!arc_validator_is_done(v))
                abort();
        return v;
}

static DkimVerifier *verify(const char *p, size_t n, size_t chunk, bool tempfail, const MailHeaderLimits *limits) {
        DkimVerifier *v = NULL;
        const char *name;
        if (dkim_verifier_new(&(DkimVerifyParams) { .now = 1764151200, .header_limits = limits ? *limits : (MailHeaderLimits) {} }, &v) < 0)
                return NULL;
        for (size_t off = 0; off < n; off += chunk)
                if (dkim_verifier_feed(v, p + off, MIN(chunk, n - off)) < 0)
                        abort();
        if (dkim_verifier_feed_end(v) < 0)
                abort();
        while (dkim_verifier_next_query(v, &name) > 0) {
                DkimLookup l;
                const char *txt;
                lookup(name, tempfail, &l, &txt);
                size_t tl = txt ? strlen(txt) : 0;
                if (dkim_verifier_answer(v, name, l, &txt, &tl, txt ? 1 : 0) < 0)
                        abort();
        }
        if (!dkim_verifier_is_done(v))
                abort();
        return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1 || size > 256 * 1024)
                return 0;
        uint8_t mode = data[0];
        const char *p = (const char *) data + 1;
        size_t n = size - 1;
        size_t chunk = (mode & 0x3f) * 7 + 1;
        bool tempfail = mode & 0x40;

        gnutls_privkey_t key = NULL;
        if (dkim_privkey_load_pem(ed25519_pem, strlen(ed25519_pem), &key) < 0)
                return 0;

        /* ARC */
        ArcValidator *v = validate(p, n, chunk, tempfail, NULL);
        const ArcResult *res;
        if (!v || arc_validator_result(v, &res) < 0)
                abort();
        if (res->status < 0 || res->status >= _ARC_STATUS_MAX || res->n_sets > ARC_MAX_INSTANCES)
                abort();
        if (res->status == ARC_STATUS_PASS && (res->n_sets < 1 || res->oldest_pass < 1 || res->oldest_pass > res->n_sets))
                abort();
        if (res->status == ARC_STATUS_FAIL && !res->reason)
                abort();
        if (res->temporary && (!tempfail || res->status != ARC_STATUS_FAIL))
                abort();

        ArcStatus before = res->status;
        ArcSeal seal = {};
        ArcSealParams sp = {
                .domain = "fuzz.example", .selector = "fz", .key = key,
                .algorithm = DKIM_ALGORITHM_ED25519_SHA256, .authserv_id = "mx.fuzz.example",
                .results = "arc=none", .timestamp = 1764151200,
        };
        int r = arc_validator_seal(v, &sp, &seal);
        if (r < 0 && r != -EPERM && r != -E2BIG && r != -EAGAIN && r != -EBADMSG && r != -ENOMEM)
                abort();
        if (r == 0 && !tempfail && before != ARC_STATUS_FAIL) {
                char *sealed = NULL;
                if (asprintf(&sealed, "%s%s%s", seal.as, seal.ams, seal.aar) < 0)
                        abort();
                size_t sl = strlen(sealed);
                char *m = malloc(sl + n);
                if (!m)
                        abort();
                memcpy(m, sealed, sl);
                memcpy(m + sl, p, n);
                ArcValidator *w = validate(m, sl + n, chunk + 5, false, &roomy);
                const ArcResult *again;
                if (!w || arc_validator_result(w, &again) < 0)
                        abort();
                if (again->status != ARC_STATUS_PASS || again->n_sets != seal.instance) {
                        fprintf(stderr, "sealed message validates as %s: %s\n", arc_status_to_string(again->status),
                                again->reason ? again->reason : "-");
                        abort();
                }
                arc_validator_free(w);
                free(m);
                free(sealed);
        }
        arc_seal_done(&seal);
        arc_validator_free(v);

        /* DKIM */
        DkimVerifier *dv = verify(p, n, chunk, tempfail, NULL);
        const DkimResult *dres;
        size_t nres;
        if (!dv || dkim_verifier_results(dv, &dres, &nres) < 0)
                abort();
        for (size_t i = 0; i < nres; i++) {
                if (dres[i].status < 0 || dres[i].status >= _DKIM_STATUS_MAX)
                        abort();
                if (dres[i].status != DKIM_STATUS_PASS && !dres[i].reason)
                        abort();
        }
        dkim_verifier_free(dv);

        DkimSigner *s = NULL;
        DkimSignParams dp = {
                .domain = "fuzz.example", .selector = "fz", .key = key,
                .algorithm = DKIM_ALGORITHM_ED25519_SHA256,
                .header_canon = mode & 0x80 ? DKIM_CANON_SIMPLE : DKIM_CANON_RELAXED,
                .body_canon = mode & 0x01 ? DKIM_CANON_SIMPLE : DKIM_CANON_RELAXED,
                .timestamp = 1764151200,
        };
        char *field = NULL;
        if (dkim_signer_new(&dp, &s) < 0)
                abort();
        for (size_t off = 0; off < n; off += chunk)
                if (dkim_signer_feed(s, p + off, MIN(chunk, n - off)) < 0)
                        abort();
        if (dkim_signer_feed_end(s) < 0)
                abort();
        r = dkim_signer_sign(s, &field);
        if (r < 0 && r != -EBADMSG && r != -ENOMEM)
                abort();
        if (r == 0) {
                size_t fl = strlen(field);
                char *m = malloc(fl + n);
                if (!m)
                        abort();
                memcpy(m, field, fl);
                memcpy(m + fl, p, n);
                DkimVerifier *w = verify(m, fl + n, chunk + 3, false, &roomy);
                if (!w || dkim_verifier_results(w, &dres, &nres) < 0 || nres < 1)
                        abort();
                if (dres[0].status != DKIM_STATUS_PASS) {
                        fprintf(stderr, "own signature: %s: %s\n", dkim_status_to_string(dres[0].status), dres[0].reason);
                        abort();
                }
                dkim_verifier_free(w);
                free(m);
                free(field);
        }
        dkim_signer_free(s);
        gnutls_privkey_deinit(key);
        return 0;
}
