/* SPDX-License-Identifier: MIT */
/* Runs the public ARC test suite (ValiMail arc_test_suite, see
 * ../shared/testdata/arc-test-suite/README.md) against halyard's library:
 * every validation case (175 entries, the four duplicated ids included)
 * and every signing case (17). The data is read from validation.json and
 * signing.json, the suite's YAML flattened to JSON (the YAML is checked
 * to be the same data by check-arc-suite-json.py, a separate test).
 *
 * Each case feeds the message with CRLF line ends in odd-sized chunks (the
 * chunk size varies per case, so the streaming paths are exercised), and
 * answers the key queries from the case's TXT records, as a resolver
 * would: names not listed are NXDOMAIN. Answers are given half before and
 * half after the end of the body, to exercise both orders.
 *
 * Validation: the verdict must equal the expected cv; an empty cv (the
 * sealer already marked the chain failed) must be fail.
 *
 * Signing: the message is validated, then sealed as the next hop with the
 * case's domain, selector, key, authserv-id, h= list and fixed t=, in the
 * suite's standardized layout; cv and the AAR results come from the
 * Authentication-Results fields of srv-id, as the suite specifies. The
 * three produced values are compared with the expected ones the way the
 * upstream harness does (white space removed, split at ";", compared as
 * sets), which compares b= exactly (RSA PKCS#1 v1.5 is deterministic). An
 * expected empty seal means sealing must be refused. Every produced seal
 * is then validated again by a fresh validator (pass for cv=none/pass).
 *
 * No case is skipped. The seven cases of unused_tests.yml, which upstream
 * never runs and whose expected b= values are stale (dkimpy disagrees with
 * six of them too), are checked against dkimpy's output instead, in
 * check-dkimpy-interop.py. Output is TAP, one line per case. */

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "arc.h"
#include "authres.h"
#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(ArcValidator *, arc_validator_free);

static char *to_crlf(const char *s, size_t *ret_len) {
        size_t n = strlen(s), k = 0;
        char *o = malloc(2 * n + 1);
        if (!o)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
                        o[k++] = '\r';
                o[k++] = s[i];
        }
        o[k] = 0;
        *ret_len = k;
        return o;
}

static int answer_from(ArcValidator *v, json_object *txt, const char *name) {
        json_object_object_foreach(txt, key, val) {
                if (strcasecmp(key, name) == 0) {
                        const char *t = json_object_get_string(val);
                        size_t l = strlen(t);
                        return arc_validator_answer(v, name, DKIM_LOOKUP_FOUND, &t, &l, 1);
                }
        }
        return arc_validator_answer(v, name, DKIM_LOOKUP_NOT_FOUND, NULL, NULL, 0);
}

/* Runs the validator over msg; on success *ret is done. */
static int validate(const char *msg, size_t len, json_object *txt, size_t chunk, ArcValidator **ret, char *err, size_t errlen) {
        _cleanup_(arc_validator_freep) ArcValidator *v = NULL;
        ArcValidateParams params = {};
        const char *name;
        int r;

        r = arc_validator_new(&params, &v);
        if (r < 0)
                return r;
        bool half = false;
        for (size_t off = 0; off < len; off += chunk) {
                r = arc_validator_feed(v, msg + off, MIN(chunk, len - off));
                if (r < 0) {
                        snprintf(err, errlen, "feed: %s", strerror(-r));
                        return r;
                }
                /* Answer every other query at once, the rest after the end. */
                while (!half && arc_validator_next_query(v, &name) > 0) {
                        r = answer_from(v, txt, name);
                        if (r < 0)
                                return r;
                        half = true;
                }
        }
        r = arc_validator_feed_end(v);
        if (r < 0)
                return r;
        while (arc_validator_next_query(v, &name) > 0) {
                r = answer_from(v, txt, name);
                if (r < 0)
                        return r;
        }
        if (!arc_validator_is_done(v)) {
                snprintf(err, errlen, "validator not done after all answers");
                return -EIO;
        }
        *ret = TAKE_PTR(v);
        return 0;
}

static bool run_validation(json_object *c, size_t chunk, char *err, size_t errlen) {
        _cleanup_(arc_validator_freep) ArcValidator *v = NULL;
        _cleanup_free_ char *msg = NULL;
        const ArcResult *res;
        size_t len;
        json_object *o;

        json_object_object_get_ex(c, "message", &o);
        msg = to_crlf(json_object_get_string(o), &len);
        json_object_object_get_ex(c, "txt_records", &o);
        if (!msg || validate(msg, len, o, chunk, &v, err, errlen) < 0 || arc_validator_result(v, &res) < 0) {
                if (!err[0])
                        snprintf(err, errlen, "validation did not complete");
                return false;
        }
        json_object_object_get_ex(c, "cv", &o);
        const char *want = json_object_get_string(o);
        ArcStatus expected = strcasecmp(want, "pass") == 0 ? ARC_STATUS_PASS :
                             strcasecmp(want, "none") == 0 ? ARC_STATUS_NONE : ARC_STATUS_FAIL;
        if (res->status != expected) {
                snprintf(err, errlen, "got %s (%s, instance %u), expected %s", arc_status_to_string(res->status),
                         res->reason ? res->reason : "-", res->failed_instance, *want ? want : "(empty: fail)");
                return false;
        }
        return true;
}

/* The upstream comparator: drop all white space, split at ";", drop empty
 * pieces, compare as sets. */
static char **tag_set(const char *s, size_t *ret_n) {
        size_t n = strlen(s), k = 0;
        char *flat = malloc(n + 1);
        if (!flat)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (!strchr(" \t\r\n", s[i]))
                        flat[k++] = s[i];
        flat[k] = 0;
        char **items = calloc(k + 2, sizeof *items);
        size_t m = 0;
        if (!items) {
                free(flat);
                return NULL;
        }
        for (char *save = NULL, *tok = strtok_r(flat, ";", &save); tok; tok = strtok_r(NULL, ";", &save))
                items[m++] = strdup(tok);
        free(flat);
        *ret_n = m;
        return items;
}

static void free_set(char **s, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(s[i]);
        free(s);
}

static bool same_tags(const char *got, const char *want) {
        size_t ng = 0, nw = 0;
        char **g = tag_set(got, &ng), **w = tag_set(want, &nw);
        bool ok = g && w && ng == nw;
        for (size_t i = 0; ok && i < ng; i++) {
                bool found = false;
                for (size_t j = 0; j < nw && !found; j++)
                        found = w[j] && strcmp(g[i], w[j]) == 0;
                ok = found;
        }
        if (g)
                free_set(g, ng);
        if (w)
                free_set(w, nw);
        return ok;
}

/* The value of "Name: value\r\n". */
static const char *field_value(const char *f) {
        const char *c = strchr(f, ':');
        return c ? c + 1 : f;
}

static bool run_signing(json_object *c, size_t chunk, char *err, size_t errlen) {
        _cleanup_(arc_validator_freep) ArcValidator *v = NULL, *check = NULL;
        _cleanup_free_ char *msg = NULL, *results = NULL, *sealed = NULL, *hcopy = NULL;
        gnutls_privkey_t key = NULL;
        ArcSeal seal = {};
        const ArcResult *res;
        const char *arc = NULL;
        json_object *o, *txt;
        size_t len;
        bool ok = false;
        int r;

#define GET(k) (json_object_object_get_ex(c, k, &o) ? json_object_get_string(o) : "")
        json_object_object_get_ex(c, "txt_records", &txt);
        msg = to_crlf(GET("message"), &len);
        if (!msg || validate(msg, len, txt, chunk, &v, err, errlen) < 0 || arc_validator_result(v, &res) < 0) {
                if (!err[0])
                        snprintf(err, errlen, "validation did not complete");
                return false;
        }

        const MailHeaders *h = arc_validator_headers(v);
        r = authres_collect(mail_headers_fields(h), mail_headers_count(h), GET("srv_id"), &results, &arc);
        if (r < 0) {
                snprintf(err, errlen, "authres_collect: %s", strerror(-r));
                return false;
        }

        const char *pem = GET("privatekey");
        if (dkim_privkey_load_pem(pem, strlen(pem), &key) < 0) {
                snprintf(err, errlen, "cannot load the private key");
                return false;
        }

        const char *names[64];
        size_t n_names = 0;
        hcopy = strdup(GET("sig_headers"));
        for (char *save = NULL, *tok = strtok_r(hcopy, ":", &save); tok && n_names < 63; tok = strtok_r(NULL, ":", &save))
                names[n_names++] = tok;
        names[n_names] = NULL;

        ArcSealParams params = {
                .domain = GET("domain"),
                .selector = GET("selector"),
                .key = key,
                .algorithm = DKIM_ALGORITHM_RSA_SHA256,
                .authserv_id = GET("srv_id"),
                .results = results,
                .headers = names,
                .timestamp = strtoull(GET("t"), NULL, 10),
                .cv = !arc ? ARC_SEAL_CV_NONE : strcmp(arc, "pass") == 0 ? ARC_SEAL_CV_PASS :
                      strcmp(arc, "none") == 0 ? ARC_SEAL_CV_NONE : ARC_SEAL_CV_FAIL,
                .min_rsa_bits = 1024,   /* the suite's key has 1024 bits */
                .standardized = true,
        };
        r = arc_validator_seal(v, &params, &seal);

        const char *want_as = GET("AS"), *want_ams = GET("AMS"), *want_aar = GET("AAR");
        if (!*want_as && !*want_ams && !*want_aar) {
                if (r != -EPERM) {
                        snprintf(err, errlen, "sealing should be refused, got %d", r);
                        goto out;
                }
                ok = true;
                goto out;
        }
        if (r < 0) {
                snprintf(err, errlen, "seal: %s (validation: %s)", strerror(-r), arc_status_to_string(res->status));
                goto out;
        }
        /* The suite's cv must also be what our own validation found. */
        ArcStatus ours = res->status;
        if ((seal.cv == ARC_CV_PASS) != (ours == ARC_STATUS_PASS) || (seal.cv == ARC_CV_NONE) != (ours == ARC_STATUS_NONE)) {
                snprintf(err, errlen, "A-R says cv=%s, our validation %s", arc_cv_to_string(seal.cv), arc_status_to_string(ours));
                goto out;
        }
        if (!same_tags(field_value(seal.aar), want_aar)) {
                snprintf(err, errlen, "AAR differs: got %s", seal.aar);
                goto out;
        }
        if (!same_tags(field_value(seal.ams), want_ams)) {
                snprintf(err, errlen, "AMS differs: got %s", seal.ams);
                goto out;
        }
        if (!same_tags(field_value(seal.as), want_as)) {
                snprintf(err, errlen, "AS differs: got %s", seal.as);
                goto out;
        }

        /* The sealed message must validate (a cv=fail seal ends the chain). */
        if (asprintf(&sealed, "%s%s%s%s", seal.as, seal.ams, seal.aar, msg) < 0)
                goto out;
        char err2[256] = "";
        if (validate(sealed, strlen(sealed), txt, chunk + 3, &check, err2, sizeof err2) < 0 ||
            arc_validator_result(check, &res) < 0) {
                snprintf(err, errlen, "re-validation did not complete: %s", err2);
                goto out;
        }
        if (res->status != (seal.cv == ARC_CV_FAIL ? ARC_STATUS_FAIL : ARC_STATUS_PASS)) {
                snprintf(err, errlen, "sealed message validates as %s (%s)", arc_status_to_string(res->status),
                         res->reason ? res->reason : "-");
                goto out;
        }
        ok = true;
out:
        arc_seal_done(&seal);
        gnutls_privkey_deinit(key);
        return ok;
#undef GET
}

int main(int argc, char **argv) {
        /* The suite directory: argument, or $ARC_SUITE_DIR (meson). */
        const char *dir = argc > 1 ? argv[1] : getenv("ARC_SUITE_DIR");
        if (!dir) {
                printf("Bail out! no suite directory (argument or $ARC_SUITE_DIR)\n");
                return 1;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/validation.json", dir);
        json_object *val = json_object_from_file(path);
        snprintf(path, sizeof path, "%s/signing.json", dir);
        json_object *sig = json_object_from_file(path);
        if (!val || !sig || !json_object_is_type(val, json_type_array) || !json_object_is_type(sig, json_type_array)) {
                printf("Bail out! cannot read the suite in %s\n", dir);
                return 1;
        }
        size_t nv = json_object_array_length(val), ns = json_object_array_length(sig);
        unsigned failed = 0, n = 0;

        printf("1..%zu\n", nv + ns);
        for (size_t i = 0; i < nv + ns; i++) {
                bool signing = i >= nv;
                json_object *c = json_object_array_get_idx(signing ? sig : val, signing ? i - nv : i), *id;
                char err[1024] = "";
                json_object_object_get_ex(c, "id", &id);
                size_t chunk = 1 + (i * 37) % 97;
                bool ok = signing ? run_signing(c, chunk, err, sizeof err) : run_validation(c, chunk, err, sizeof err);
                n++;
                if (ok)
                        printf("ok %u - %s %s\n", n, signing ? "sign" : "validate", json_object_get_string(id));
                else {
                        failed++;
                        printf("not ok %u - %s %s\n# %s\n", n, signing ? "sign" : "validate",
                               json_object_get_string(id), err);
                }
        }
        json_object_put(val);
        json_object_put(sig);
        return failed ? 1 : 0;
}
