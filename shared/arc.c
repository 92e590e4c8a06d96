/* SPDX-License-Identifier: MIT */
#include "arc.h"

#include <gnutls/crypto.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dkim-internal.h"
#include "macro.h"

const char *arc_status_to_string(ArcStatus s) {
        switch (s) {
        case ARC_STATUS_NONE:
                return "none";
        case ARC_STATUS_PASS:
                return "pass";
        case ARC_STATUS_FAIL:
                return "fail";
        default:
                return NULL;
        }
}

typedef struct ArcSetInfo {
        size_t aar, ams, as;            /* field indices, SIZE_MAX when absent */
        DkimSignature *ams_sig, *as_sig;
        const char *ams_error;
        size_t ams_key, as_key, ams_body;
        bool ams_usable;                /* parsed, key and body registered */
} ArcSetInfo;

struct ArcValidator {
        ArcValidateParams params;
        MailHeaders *headers;
        int header_error;
        bool headers_done, ended, evaluated;
        DkimBodySet bodies;
        DkimKeyTable keys;
        size_t seal_body;               /* relaxed, no limit: what a new AMS signs */

        bool has_arc;
        bool ended_chain;               /* the newest seal says cv=fail */
        const char *fail_reason;        /* structural failure, found before crypto */
        unsigned max_instance;          /* highest i= seen anywhere */
        unsigned n_sets;
        ArcSetInfo sets[ARC_MAX_INSTANCES + 1];         /* [1..50] */

        ArcSetResult set_results[ARC_MAX_INSTANCES];
        ArcResult result;
};

int arc_validator_new(const ArcValidateParams *params, ArcValidator **ret) {
        ArcValidator *v = calloc(1, sizeof *v);
        int r;

        if (!v)
                return -ENOMEM;
        if (params)
                v->params = *params;
        if (v->params.min_rsa_bits == 0)
                v->params.min_rsa_bits = 1024;
        for (size_t i = 0; i <= ARC_MAX_INSTANCES; i++)
                v->sets[i].aar = v->sets[i].ams = v->sets[i].as = SIZE_MAX;
        r = mail_headers_new(&v->params.header_limits, &v->headers);
        if (r >= 0)
                r = dkim_body_set_add(&v->bodies, DKIM_CANON_RELAXED, DKIM_BODY_NO_LIMIT, &v->seal_body);
        if (r < 0) {
                arc_validator_free(v);
                return r;
        }
        *ret = v;
        return 0;
}

ArcValidator *arc_validator_free(ArcValidator *v) {
        if (!v)
                return NULL;
        mail_headers_free(v->headers);
        dkim_body_set_done(&v->bodies);
        dkim_key_table_done(&v->keys);
        for (size_t i = 0; i <= ARC_MAX_INSTANCES; i++) {
                dkim_signature_free(v->sets[i].ams_sig);
                dkim_signature_free(v->sets[i].as_sig);
        }
        free(v);
        return NULL;
}

/* The AAR value must start with "i=N;" (RFC 8617 §4.1.1). Returns the
 * instance, or 0 when malformed; out-of-range values come back as is so
 * the caller can tell "too many" from "malformed". */
static unsigned aar_instance(const char *p, size_t n) {
        size_t i = 0;
        uint64_t v = 0;

        while (i < n && strchr(" \t\r\n", p[i]) && p[i])
                i++;
        if (i + 1 >= n || p[i] != 'i')
                return 0;
        i++;
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
                i++;
        if (i >= n || p[i] != '=')
                return 0;
        i++;
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
                i++;
        size_t d = i;
        while (i < n && p[i] >= '0' && p[i] <= '9' && i - d < 6)
                v = v * 10 + (uint64_t) (p[i++] - '0');
        if (i == d)
                return 0;
        while (i < n && strchr(" \t\r\n", p[i]) && p[i])
                i++;
        if (i >= n || p[i] != ';')
                return 0;
        return (unsigned) v;
}

/* The i= of an AMS or AS, from a tag parse only: 0 when malformed. */
static unsigned sig_instance(const char *p, size_t n) {
        DkimTagList tags = {};
        unsigned v = 0;

        if (dkim_tags_parse(p, n, &tags) < 0)
                return 0;
        const DkimTag *t = dkim_tags_get(&tags, "i");
        if (t && t->value_len > 0 && t->value_len <= 6) {
                bool ok = true;
                for (size_t i = 0; i < t->value_len; i++) {
                        ok = ok && t->value[i] >= '0' && t->value[i] <= '9';
                        v = v * 10 + (unsigned) (t->value[i] - '0');
                }
                if (!ok)
                        v = 0;
        }
        dkim_tag_list_done(&tags);
        return v;
}

static void structural_fail(ArcValidator *v, const char *why) {
        if (!v->fail_reason)
                v->fail_reason = why;
}

static int validator_on_headers(ArcValidator *v) {
        const MailHeaderField *fields = mail_headers_fields(v->headers);
        size_t n = mail_headers_count(v->headers);
        int r;

        v->headers_done = true;

        /* 1. Group the ARC fields by instance. */
        for (size_t i = 0; i < n; i++) {
                const MailHeaderField *f = &fields[i];
                unsigned inst;
                size_t *slot_of_set;
                int kind;

                if (mail_header_field_is(f, "ARC-Authentication-Results"))
                        kind = 0;
                else if (mail_header_field_is(f, "ARC-Message-Signature"))
                        kind = 1;
                else if (mail_header_field_is(f, "ARC-Seal"))
                        kind = 2;
                else
                        continue;
                v->has_arc = true;

                inst = kind == 0 ? aar_instance(f->value, f->value_len) : sig_instance(f->value, f->value_len);
                if (inst == 0) {
                        structural_fail(v, kind == 0 ? "ARC-Authentication-Results without a valid i= prefix" :
                                        kind == 1 ? "ARC-Message-Signature without a valid i= tag" :
                                                    "ARC-Seal without a valid i= tag");
                        continue;
                }
                if (inst > ARC_MAX_INSTANCES) {
                        structural_fail(v, "more than 50 ARC sets");
                        v->max_instance = ARC_MAX_INSTANCES + 1;
                        continue;
                }
                v->max_instance = MAX(v->max_instance, inst);
                ArcSetInfo *set = &v->sets[inst];
                slot_of_set = kind == 0 ? &set->aar : kind == 1 ? &set->ams : &set->as;
                if (*slot_of_set != SIZE_MAX) {
                        structural_fail(v, "duplicate ARC field for one instance");
                        continue;
                }
                *slot_of_set = i;
        }

        if (!v->has_arc)
                return 0;

        /* A chain whose newest seal says cv=fail has ended (RFC 8617
         * §5.1.2): we must neither validate further nor extend it. */
        if (v->max_instance >= 1 && v->max_instance <= ARC_MAX_INSTANCES &&
            v->sets[v->max_instance].as != SIZE_MAX) {
                const MailHeaderField *f = &fields[v->sets[v->max_instance].as];
                DkimTagList tags = {};
                if (dkim_tags_parse(f->value, f->value_len, &tags) >= 0) {
                        const DkimTag *t = dkim_tags_get(&tags, "cv");
                        if (t && t->value_len == 4 && strncasecmp(t->value, "fail", 4) == 0) {
                                v->ended_chain = true;
                                structural_fail(v, "the newest ARC-Seal says cv=fail");
                        }
                }
                dkim_tag_list_done(&tags);
        }
        if (v->fail_reason)
                return 0;

        /* 2. Instances 1..N, each complete. */
        unsigned N = v->max_instance;
        for (unsigned i = 1; i <= N; i++) {
                const ArcSetInfo *set = &v->sets[i];
                if (set->aar == SIZE_MAX || set->ams == SIZE_MAX || set->as == SIZE_MAX) {
                        structural_fail(v, "an ARC set is missing a field");
                        return 0;
                }
        }
        v->n_sets = N;

        /* 3. Every seal parses and carries the right cv=. */
        for (unsigned i = 1; i <= N; i++) {
                ArcSetInfo *set = &v->sets[i];
                const MailHeaderField *f = &fields[set->as];
                const char *why = NULL;
                r = dkim_signature_parse(DKIM_SIG_AS, f->value, f->value_len, &set->as_sig, &why);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        structural_fail(v, why);
                        return 0;
                }
                if (set->as_sig->cv != (i == 1 ? ARC_CV_NONE : ARC_CV_PASS)) {
                        structural_fail(v, i == 1 ? "ARC-Seal i=1 must say cv=none" : "ARC-Seal i>1 must say cv=pass");
                        return 0;
                }
                r = dkim_key_table_add(&v->keys, set->as_sig->selector, set->as_sig->domain, &set->as_key);
                if (r < 0)
                        return r;
        }

        /* 4. The message signatures: the newest must be valid; older ones
         * only matter for oldest-pass. */
        for (unsigned i = N; i >= 1; i--) {
                ArcSetInfo *set = &v->sets[i];
                const MailHeaderField *f = &fields[set->ams];
                r = dkim_signature_parse(DKIM_SIG_AMS, f->value, f->value_len, &set->ams_sig, &set->ams_error);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        if (i == N) {
                                structural_fail(v, set->ams_error);
                                return 0;
                        }
                        continue;
                }
                r = dkim_key_table_add(&v->keys, set->ams_sig->selector, set->ams_sig->domain, &set->ams_key);
                if (r < 0)
                        return r;
                r = dkim_body_set_add(&v->bodies, set->ams_sig->body_canon,
                                      set->ams_sig->has_length ? set->ams_sig->length : DKIM_BODY_NO_LIMIT,
                                      &set->ams_body);
                if (r < 0)
                        return r;
                set->ams_usable = true;
        }
        return 0;
}

int arc_validator_feed(ArcValidator *v, const void *p, size_t n) {
        size_t off;
        int r;

        if (v->ended)
                return -EALREADY;
        r = dkim_input_feed(v->headers, &v->header_error, &v->bodies, v->headers_done, p, n, &off);
        if (r <= 0)
                return r;
        r = validator_on_headers(v);
        if (r < 0)
                return r;
        return dkim_body_set_feed(&v->bodies, (const char *) p + off, n - off);
}

int arc_validator_feed_end(ArcValidator *v) {
        int r;

        if (v->ended)
                return 0;
        v->ended = true;
        if (v->header_error || v->headers_done)
                return 0;
        r = mail_headers_end(v->headers);
        if (r == -EBADMSG || r == -E2BIG) {
                v->header_error = r;
                return 0;
        }
        if (r < 0)
                return r;
        return validator_on_headers(v);
}

int arc_validator_next_query(ArcValidator *v, const char **ret_name) {
        return dkim_key_table_next_query(&v->keys, ret_name);
}

int arc_validator_answer(ArcValidator *v, const char *name, DkimLookup lookup,
                         const char *const *txt, const size_t *txt_len, size_t n_txt) {
        return dkim_key_table_answer(&v->keys, name, lookup, txt, txt_len, n_txt);
}

bool arc_validator_is_done(const ArcValidator *v) {
        return v->ended && dkim_key_table_complete(&v->keys);
}

const MailHeaders *arc_validator_headers(const ArcValidator *v) {
        return v->headers_done ? v->headers : NULL;
}

static int hash_field(gnutls_hash_hd_t h, const char *raw, size_t n, bool strip_crlf) {
        _cleanup_free_ char *buf = malloc(n + 2);
        if (!buf)
                return -ENOMEM;
        size_t k = dkim_canon_header(DKIM_CANON_RELAXED, raw, n, strip_crlf, buf);
        return gnutls_hash(h, buf, k) < 0 ? -EIO : 0;
}

/* The seal's hash input (RFC 8617 §5.1.1): sets first..last-1 whole, then
 * AAR(last), AMS(last) and AS(last) with b= emptied and no CRLF. */
static int seal_digest(const MailHeaderField *fields, const ArcSetInfo *sets, unsigned first, unsigned last,
                       uint8_t ret[DKIM_SHA256_LEN]) {
        gnutls_hash_hd_t h;
        int r = 0;

        if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0)
                return -EIO;
        for (unsigned i = first; i <= last && r >= 0; i++) {
                const MailHeaderField *aar = &fields[sets[i].aar], *ams = &fields[sets[i].ams], *as = &fields[sets[i].as];
                r = hash_field(h, aar->raw, aar->raw_len, false);
                if (r >= 0)
                        r = hash_field(h, ams->raw, ams->raw_len, false);
                if (r < 0)
                        break;
                if (i < last)
                        r = hash_field(h, as->raw, as->raw_len, false);
                else {
                        _cleanup_free_ char *stripped = NULL;
                        size_t len = 0;
                        r = dkim_field_strip_b(as->raw, as->raw_len, &stripped, &len);
                        if (r >= 0)
                                r = hash_field(h, stripped, len, true);
                }
        }
        gnutls_hash_deinit(h, r >= 0 ? ret : NULL);
        return r;
}

static int fail_result(ArcValidator *v, unsigned instance, const char *why, bool temporary) {
        v->result.status = ARC_STATUS_FAIL;
        v->result.reason = why;
        v->result.failed_instance = instance;
        v->result.temporary = temporary;
        return 0;
}

static int evaluate(ArcValidator *v) {
        const MailHeaderField *fields = mail_headers_fields(v->headers);
        size_t n_fields = mail_headers_count(v->headers);
        unsigned N = v->n_sets;
        int r;

        v->result = (ArcResult) { .status = ARC_STATUS_NONE, .sets = v->set_results };

        if (v->header_error)
                return fail_result(v, 0, v->header_error == -E2BIG ? "header section over the limits" :
                                                                     "malformed header section", false);
        if (!v->has_arc)
                return 0;
        if (v->fail_reason)
                return fail_result(v, 0, v->fail_reason, false);

        v->result.n_sets = N;
        for (unsigned i = 1; i <= N; i++)
                v->set_results[i - 1] = (ArcSetResult) {
                        .instance = i,
                        .ams = v->sets[i].ams_sig,
                        .as = v->sets[i].as_sig,
                        .ams_status = DKIM_STATUS_NEUTRAL,
                        .as_status = DKIM_STATUS_NEUTRAL,
                        .ams_reason = v->sets[i].ams_error,
                };

        /* The newest AMS. */
        ArcSetInfo *newest = &v->sets[N];
        DkimResult res = {};
        r = dkim_verify_signature(newest->ams_sig, fields, n_fields, &fields[newest->ams],
                                  v->bodies.items[newest->ams_body], &v->keys.entries[newest->ams_key],
                                  v->params.min_rsa_bits, &res);
        if (r < 0)
                return r;
        v->set_results[N - 1].ams_status = res.status;
        v->set_results[N - 1].ams_reason = res.reason;
        if (res.status != DKIM_STATUS_PASS)
                return fail_result(v, N, res.reason ? res.reason : "ARC-Message-Signature does not verify",
                                   res.status == DKIM_STATUS_TEMPERROR);

        /* Every seal, newest first. */
        for (unsigned i = N; i >= 1; i--) {
                const ArcSetInfo *set = &v->sets[i];
                const DkimKeyEntry *ke = &v->keys.entries[set->as_key];
                ArcSetResult *sr = &v->set_results[i - 1];
                uint8_t digest[DKIM_SHA256_LEN];
                const char *why = NULL;

                if (ke->lookup == DKIM_LOOKUP_TEMPFAIL || !ke->key) {
                        sr->as_status = ke->lookup == DKIM_LOOKUP_TEMPFAIL ? DKIM_STATUS_TEMPERROR : DKIM_STATUS_PERMERROR;
                        sr->as_reason = ke->reason ? ke->reason : "no key";
                        return fail_result(v, i, sr->as_reason, ke->lookup == DKIM_LOOKUP_TEMPFAIL);
                }
                r = seal_digest(fields, v->sets, 1, i, digest);
                if (r == -ENOMEM || r == -EIO)
                        return r;
                if (r < 0) {
                        sr->as_status = DKIM_STATUS_PERMERROR;
                        sr->as_reason = "malformed ARC-Seal";
                        return fail_result(v, i, sr->as_reason, false);
                }
                r = dkim_key_verify(ke->key, set->as_sig->algorithm, v->params.min_rsa_bits, digest,
                                    set->as_sig->signature, set->as_sig->signature_len, &why);
                if (r < 0) {
                        sr->as_status = DKIM_STATUS_FAIL;
                        sr->as_reason = why;
                        return fail_result(v, i, why, false);
                }
                sr->as_status = DKIM_STATUS_PASS;
        }

        /* oldest-pass: walk down while older AMSes still verify. */
        unsigned oldest = N;
        for (unsigned i = N - 1; i >= 1; i--) {
                ArcSetInfo *set = &v->sets[i];
                if (!set->ams_usable)
                        break;
                res = (DkimResult) {};
                r = dkim_verify_signature(set->ams_sig, fields, n_fields, &fields[set->ams],
                                          v->bodies.items[set->ams_body], &v->keys.entries[set->ams_key],
                                          v->params.min_rsa_bits, &res);
                if (r < 0)
                        return r;
                v->set_results[i - 1].ams_status = res.status;
                v->set_results[i - 1].ams_reason = res.reason;
                if (res.status != DKIM_STATUS_PASS)
                        break;
                oldest = i;
        }

        v->result.status = ARC_STATUS_PASS;
        v->result.oldest_pass = oldest;
        return 0;
}

int arc_validator_result(ArcValidator *v, const ArcResult **ret) {
        if (!arc_validator_is_done(v))
                return -EBUSY;
        if (!v->evaluated) {
                int r = evaluate(v);
                if (r < 0)
                        return r;
                v->evaluated = true;
        }
        *ret = &v->result;
        return 0;
}

void arc_seal_done(ArcSeal *s) {
        if (!s)
                return;
        free(s->aar);
        free(s->ams);
        free(s->as);
        *s = (ArcSeal) {};
}

/* Builds a signature field as prefix + b-value + suffix, so the text that is
 * signed (b= empty) and the one sent differ only in b='s value. */
typedef struct SigText {
        DkimOut prefix, suffix;
} SigText;

static void sig_text_done(SigText *t) {
        free(t->prefix.buf);
        free(t->suffix.buf);
}

static int sig_text_join(SigText *t, bool fold, const char *b64, char **ret, size_t *ret_len) {
        DkimOut o = { .col = t->prefix.col };
        dkim_out_raw(&o, t->prefix.buf, t->prefix.len);
        o.col = t->prefix.col;
        if (b64) {
                size_t n = strlen(b64);
                for (size_t i = 0; i < n;) {
                        size_t room = fold ? (o.col < 76 ? 76 - o.col : 0) : n - i;
                        if (room == 0) {
                                dkim_out_str(&o, "\r\n\t");
                                continue;
                        }
                        size_t take = MIN(room, n - i);
                        dkim_out_raw(&o, b64 + i, take);
                        i += take;
                }
        }
        if (t->suffix.len > 0)
                dkim_out_raw(&o, t->suffix.buf, t->suffix.len);
        if (o.error) {
                free(o.buf);
                return o.error;
        }
        *ret = o.buf;
        *ret_len = o.len;
        return 0;
}

static int split_list(const char *hlist, char ***ret_names, size_t *ret_n) {
        size_t n = 1;
        for (const char *c = hlist; *c; c++)
                n += *c == ':';
        char **names = calloc(n + 1, sizeof *names);
        if (!names)
                return -ENOMEM;
        size_t k = 0;
        const char *p = hlist;
        while (*p) {
                const char *e = strchrnul(p, ':');
                names[k] = strndup(p, (size_t) (e - p));
                if (!names[k]) {
                        for (size_t i = 0; i < k; i++)
                                free(names[i]);
                        free(names);
                        return -ENOMEM;
                }
                k++;
                p = *e ? e + 1 : e;
        }
        *ret_names = names;
        *ret_n = k;
        return 0;
}

static void free_list(char **names, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

int arc_validator_seal(ArcValidator *v, const ArcSealParams *p, ArcSeal *ret) {
        const ArcResult *result;
        ArcCv cv;
        unsigned instance;
        char num[32], inst[16];
        int r;

        if (!p || !p->domain || !p->selector || !p->key || !p->authserv_id ||
            !dkim_domain_valid(p->domain, strlen(p->domain)) || !dkim_domain_valid(p->selector, strlen(p->selector)) ||
            p->algorithm < 0 || p->algorithm >= _DKIM_ALGORITHM_MAX || !*p->authserv_id ||
            strpbrk(p->authserv_id, " \t\r\n;()\""))
                return -EINVAL;
        if (p->results && strpbrk(p->results, "\r\n"))
                return -EINVAL;
        r = arc_validator_result(v, &result);
        if (r < 0)
                return r;
        if (v->header_error)
                return -EBADMSG;
        if (v->ended_chain)
                return -EPERM;

        switch (p->cv) {
        case ARC_SEAL_CV_AUTO:
                if (result->status == ARC_STATUS_FAIL && result->temporary)
                        return -EAGAIN;
                cv = result->status == ARC_STATUS_NONE ? ARC_CV_NONE :
                     result->status == ARC_STATUS_PASS ? ARC_CV_PASS : ARC_CV_FAIL;
                break;
        case ARC_SEAL_CV_NONE:
                cv = ARC_CV_NONE;
                break;
        case ARC_SEAL_CV_PASS:
                cv = ARC_CV_PASS;
                break;
        case ARC_SEAL_CV_FAIL:
                cv = ARC_CV_FAIL;
                break;
        default:
                return -EINVAL;
        }
        /* A passing or empty chain needs its sets intact to be covered; a
         * caller's override cannot make a broken chain sealable as pass. */
        /* cv=none is for i=1 only, and i=1 is cv=none unless the message
         * carries ARC fields so malformed that no instance could be read:
         * that chain is marked failed at i=1. */
        if (cv == ARC_CV_NONE && v->max_instance != 0)
                return -EINVAL;
        if (cv != ARC_CV_NONE && v->max_instance == 0 && !(cv == ARC_CV_FAIL && v->has_arc))
                return -EINVAL;
        if (cv == ARC_CV_PASS && (v->fail_reason || v->n_sets == 0 || v->n_sets != v->max_instance))
                return -EINVAL;
        instance = v->max_instance + 1;
        if (instance > ARC_MAX_INSTANCES)
                return -E2BIG;

        const MailHeaderField *fields = mail_headers_fields(v->headers);
        size_t n_fields = mail_headers_count(v->headers);
        _cleanup_free_ char *aar = NULL, *hlist = NULL, *bh64 = NULL, *ams = NULL, *as = NULL;
        _cleanup_free_ char *ams_b64 = NULL, *as_b64 = NULL;
        _cleanup_free_ uint8_t *sig = NULL;
        _cleanup_free_ MailHeaderField *all = NULL;
        size_t aar_len, ams_len = 0, as_len = 0, sig_len = 0;
        uint8_t bh[DKIM_SHA256_LEN], digest[DKIM_SHA256_LEN];
        bool fold = !p->standardized;

        snprintf(inst, sizeof inst, "%u", instance);
        snprintf(num, sizeof num, "%" PRIu64, p->timestamp);

        /* ARC-Authentication-Results */
        {
                _cleanup_free_ char *flat = NULL;
                if (asprintf(&flat, "ARC-Authentication-Results: i=%u; %s; %s", instance, p->authserv_id,
                             p->results && *p->results ? p->results : "none") < 0)
                        return -ENOMEM;
                /* Folded at spaces (unfolding restores the text, and the
                 * seal hashes it relaxed anyway); a token longer than a
                 * line stays whole. */
                DkimOut o = {};
                const char *q = flat;
                while (*q) {
                        const char *sp = strchrnul(q + 1, ' ');
                        size_t l = (size_t) (sp - q);
                        if (fold && *q == ' ' && o.col + l > 78 && o.col > 1) {
                                dkim_out_str(&o, "\r\n\t");
                                dkim_out_raw(&o, q + 1, l - 1);
                        } else
                                dkim_out_raw(&o, q, l);
                        q = sp;
                }
                dkim_out_str(&o, "\r\n");
                if (o.error) {
                        free(o.buf);
                        return o.error;
                }
                aar = o.buf;
                aar_len = o.len;
        }

        /* The new AMS sees the message as it will be: our AAR on top. */
        all = calloc(n_fields + 3, sizeof *all);
        if (!all)
                return -ENOMEM;
        size_t aar_name = strlen("ARC-Authentication-Results");
        all[0] = (MailHeaderField) {
                .raw = aar, .raw_len = aar_len, .name = aar, .name_len = aar_name,
                .value = aar + aar_name + 1, .value_len = aar_len - aar_name - 3,
        };
        if (n_fields > 0)
                memcpy(all + 1, fields, n_fields * sizeof *fields);

        const char *const *names = p->headers ? p->headers : dkim_default_sign_headers;
        for (size_t i = 0; names[i]; i++)
                if (strcasecmp(names[i], "ARC-Seal") == 0)
                        return -EINVAL;   /* RFC 8617 §4.1.2 */
        r = dkim_build_header_list(fields, n_fields, names, p->headers != NULL, &hlist);
        if (r < 0)
                return r;
        r = dkim_body_hash_finish(v->bodies.items[v->seal_body], bh, NULL);
        if (r < 0)
                return r;
        bh64 = dkim_base64_encode(bh, sizeof bh);
        if (!bh64)
                return -ENOMEM;

        {
                SigText t = {};
                const char *alg = dkim_algorithm_to_string(p->algorithm);
                dkim_out_str(&t.prefix, "ARC-Message-Signature: ");
                if (p->standardized) {
                        /* Sorted tags, b= in second place: the suite's layout. */
                        dkim_out_tag(&t.prefix, true, false, "a", alg, false);
                        dkim_out_str(&t.prefix, "; b=");
                        dkim_out_str(&t.suffix, "; bh=");
                        dkim_out_str(&t.suffix, bh64);
                        dkim_out_str(&t.suffix, "; c=relaxed/relaxed; d=");
                        dkim_out_str(&t.suffix, p->domain);
                        dkim_out_str(&t.suffix, "; h=");
                        dkim_out_str(&t.suffix, hlist);
                        dkim_out_str(&t.suffix, "; i=");
                        dkim_out_str(&t.suffix, inst);
                        dkim_out_str(&t.suffix, "; s=");
                        dkim_out_str(&t.suffix, p->selector);
                        dkim_out_str(&t.suffix, "; t=");
                        dkim_out_str(&t.suffix, num);
                } else {
                        dkim_out_tag(&t.prefix, true, fold, "i", inst, false);
                        dkim_out_tag(&t.prefix, false, fold, "a", alg, false);
                        dkim_out_tag(&t.prefix, false, fold, "c", "relaxed/relaxed", false);
                        dkim_out_tag(&t.prefix, false, fold, "d", p->domain, false);
                        dkim_out_tag(&t.prefix, false, fold, "s", p->selector, false);
                        dkim_out_tag(&t.prefix, false, fold, "t", num, false);
                        dkim_out_str(&t.prefix, ";");
                        dkim_out_str(&t.prefix, t.prefix.col + 4 > 78 ? "\r\n\th=" : " h=");
                        const char *q = hlist;
                        while (*q) {
                                const char *e = strchrnul(q, ':');
                                size_t l = (size_t) (e - q);
                                if (q != hlist) {
                                        dkim_out_str(&t.prefix, ":");
                                        if (t.prefix.col + l > 77)
                                                dkim_out_str(&t.prefix, "\r\n\t");
                                }
                                dkim_out_raw(&t.prefix, q, l);
                                q = *e ? e + 1 : e;
                        }
                        dkim_out_tag(&t.prefix, false, fold, "bh", bh64, true);
                        dkim_out_str(&t.prefix, ";");
                        dkim_out_str(&t.prefix, t.prefix.col + 3 > 78 ? "\r\n\tb=" : " b=");
                }
                dkim_out_str(&t.suffix, "\r\n");
                if (t.prefix.error || t.suffix.error) {
                        sig_text_done(&t);
                        return -ENOMEM;
                }

                _cleanup_free_ char *unsigned_text = NULL;
                size_t unsigned_len = 0;
                char **hn = NULL;
                size_t n_hn = 0;
                r = sig_text_join(&t, fold, NULL, &unsigned_text, &unsigned_len);
                if (r >= 0)
                        r = split_list(hlist, &hn, &n_hn);
                if (r >= 0) {
                        r = dkim_hash_headers(DKIM_CANON_RELAXED, all, n_fields + 1, hn, n_hn,
                                              unsigned_text, unsigned_len, digest);
                        free_list(hn, n_hn);
                }
                if (r >= 0)
                        r = dkim_privkey_sign(p->key, p->algorithm, p->min_rsa_bits, digest, &sig, &sig_len);
                if (r >= 0) {
                        ams_b64 = dkim_base64_encode(sig, sig_len);
                        r = ams_b64 ? sig_text_join(&t, fold, ams_b64, &ams, &ams_len) : -ENOMEM;
                }
                sig_text_done(&t);
                if (r < 0)
                        return r;
                free(sig);
                sig = NULL;
        }

        /* ARC-Seal over the chain (or, for cv=fail, over our set alone). */
        {
                SigText t = {};
                const char *alg = dkim_algorithm_to_string(p->algorithm);
                dkim_out_str(&t.prefix, "ARC-Seal: ");
                if (p->standardized) {
                        dkim_out_tag(&t.prefix, true, false, "a", alg, false);
                        dkim_out_str(&t.prefix, "; b=");
                        dkim_out_str(&t.suffix, "; cv=");
                        dkim_out_str(&t.suffix, arc_cv_to_string(cv));
                        dkim_out_str(&t.suffix, "; d=");
                        dkim_out_str(&t.suffix, p->domain);
                        dkim_out_str(&t.suffix, "; i=");
                        dkim_out_str(&t.suffix, inst);
                        dkim_out_str(&t.suffix, "; s=");
                        dkim_out_str(&t.suffix, p->selector);
                        dkim_out_str(&t.suffix, "; t=");
                        dkim_out_str(&t.suffix, num);
                } else {
                        dkim_out_tag(&t.prefix, true, fold, "i", inst, false);
                        dkim_out_tag(&t.prefix, false, fold, "a", alg, false);
                        dkim_out_tag(&t.prefix, false, fold, "cv", arc_cv_to_string(cv), false);
                        dkim_out_tag(&t.prefix, false, fold, "d", p->domain, false);
                        dkim_out_tag(&t.prefix, false, fold, "s", p->selector, false);
                        dkim_out_tag(&t.prefix, false, fold, "t", num, false);
                        dkim_out_str(&t.prefix, ";");
                        dkim_out_str(&t.prefix, t.prefix.col + 3 > 78 ? "\r\n\tb=" : " b=");
                }
                dkim_out_str(&t.suffix, "\r\n");
                if (t.prefix.error || t.suffix.error) {
                        sig_text_done(&t);
                        return -ENOMEM;
                }

                _cleanup_free_ char *unsigned_text = NULL;
                size_t unsigned_len = 0;
                r = sig_text_join(&t, fold, NULL, &unsigned_text, &unsigned_len);
                if (r >= 0) {
                        /* Lay the new set out like the existing ones, then
                         * hash with the same code the validator uses. */
                        MailHeaderField nf[3];
                        ArcSetInfo sets[ARC_MAX_INSTANCES + 1];
                        _cleanup_free_ MailHeaderField *chain = calloc(3 * (size_t) instance, sizeof *chain);
                        unsigned first = cv == ARC_CV_FAIL ? instance : 1;
                        if (!chain)
                                r = -ENOMEM;
                        else {
                                size_t k = 0;
                                for (unsigned i = 1; i < instance && cv != ARC_CV_FAIL; i++) {
                                        chain[k] = fields[v->sets[i].aar];
                                        sets[i].aar = k++;
                                        chain[k] = fields[v->sets[i].ams];
                                        sets[i].ams = k++;
                                        chain[k] = fields[v->sets[i].as];
                                        sets[i].as = k++;
                                }
                                nf[0] = all[0];
                                nf[1] = (MailHeaderField) { .raw = ams, .raw_len = ams_len };
                                nf[2] = (MailHeaderField) { .raw = unsigned_text, .raw_len = unsigned_len };
                                for (int j = 0; j < 3; j++)
                                        chain[k + (size_t) j] = nf[j];
                                sets[instance].aar = k;
                                sets[instance].ams = k + 1;
                                sets[instance].as = k + 2;
                                r = seal_digest(chain, sets, first, instance, digest);
                        }
                }
                if (r >= 0)
                        r = dkim_privkey_sign(p->key, p->algorithm, p->min_rsa_bits, digest, &sig, &sig_len);
                if (r >= 0) {
                        as_b64 = dkim_base64_encode(sig, sig_len);
                        r = as_b64 ? sig_text_join(&t, fold, as_b64, &as, &as_len) : -ENOMEM;
                }
                sig_text_done(&t);
                if (r < 0)
                        return r;
        }

        *ret = (ArcSeal) {
                .aar = TAKE_PTR(aar),
                .ams = TAKE_PTR(ams),
                .as = TAKE_PTR(as),
                .instance = instance,
                .cv = cv,
        };
        return 0;
}
