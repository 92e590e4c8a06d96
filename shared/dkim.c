/* SPDX-License-Identifier: MIT */
#include "dkim.h"

#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dkim-internal.h"
#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(DkimSignature *, dkim_signature_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(DkimKey *, dkim_key_free);

static void tag_list_donep(DkimTagList *l) {
        dkim_tag_list_done(l);
}

static char ascii_lower(char c) {
        return c >= 'A' && c <= 'Z' ? (char) (c + 32) : c;
}

static bool span_eq_ci(const char *p, size_t n, const char *s) {
        size_t len = strlen(s);
        if (n != len)
                return false;
        for (size_t i = 0; i < n; i++)
                if (ascii_lower(p[i]) != ascii_lower(s[i]))
                        return false;
        return true;
}

static char *strndup_lower(const char *p, size_t n) {
        char *s = malloc(n + 1);
        if (!s)
                return NULL;
        for (size_t i = 0; i < n; i++)
                s[i] = ascii_lower(p[i]);
        s[n] = 0;
        return s;
}

const char *dkim_algorithm_to_string(DkimAlgorithm a) {
        switch (a) {
        case DKIM_ALGORITHM_RSA_SHA256:
                return "rsa-sha256";
        case DKIM_ALGORITHM_ED25519_SHA256:
                return "ed25519-sha256";
        default:
                return NULL;
        }
}

DkimAlgorithm dkim_algorithm_from_string(const char *s, size_t n) {
        if (span_eq_ci(s, n, "rsa-sha256"))
                return DKIM_ALGORITHM_RSA_SHA256;
        if (span_eq_ci(s, n, "ed25519-sha256"))
                return DKIM_ALGORITHM_ED25519_SHA256;
        return _DKIM_ALGORITHM_INVALID;
}

const char *arc_cv_to_string(ArcCv cv) {
        switch (cv) {
        case ARC_CV_NONE:
                return "none";
        case ARC_CV_PASS:
                return "pass";
        case ARC_CV_FAIL:
                return "fail";
        default:
                return NULL;
        }
}

static ArcCv arc_cv_from_string(const char *s, size_t n) {
        if (span_eq_ci(s, n, "none"))
                return ARC_CV_NONE;
        if (span_eq_ci(s, n, "pass"))
                return ARC_CV_PASS;
        if (span_eq_ci(s, n, "fail"))
                return ARC_CV_FAIL;
        return _ARC_CV_INVALID;
}

const char *dkim_status_to_string(DkimStatus s) {
        static const char *const table[_DKIM_STATUS_MAX] = {
                [DKIM_STATUS_PASS] = "pass",
                [DKIM_STATUS_FAIL] = "fail",
                [DKIM_STATUS_NEUTRAL] = "neutral",
                [DKIM_STATUS_POLICY] = "policy",
                [DKIM_STATUS_TEMPERROR] = "temperror",
                [DKIM_STATUS_PERMERROR] = "permerror",
        };
        return s >= 0 && s < _DKIM_STATUS_MAX ? table[s] : NULL;
}

/* Base64 */

static int b64_value(char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

int dkim_base64_decode(const char *s, size_t n, uint8_t **ret, size_t *ret_len) {
        uint8_t *out = malloc(n / 4 * 3 + 3);
        if (!out)
                return -ENOMEM;
        uint32_t acc = 0;
        size_t k = 0, nchars = 0, pad = 0;

        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
                        continue;
                if (c == '=') {
                        pad++;
                        continue;
                }
                int v = b64_value(c);
                if (v < 0 || pad > 0)
                        goto fail;      /* data after padding, or a foreign byte */
                acc = (acc << 6) | (uint32_t) v;
                nchars++;
                if (nchars % 4 == 0) {
                        out[k++] = (uint8_t) (acc >> 16);
                        out[k++] = (uint8_t) (acc >> 8);
                        out[k++] = (uint8_t) acc;
                        acc = 0;
                }
        }
        switch (nchars % 4) {
        case 0:
                if (pad != 0)
                        goto fail;
                break;
        case 2:
                if (pad != 0 && pad != 2)
                        goto fail;
                out[k++] = (uint8_t) (acc >> 4);
                break;
        case 3:
                if (pad != 0 && pad != 1)
                        goto fail;
                out[k++] = (uint8_t) (acc >> 10);
                out[k++] = (uint8_t) (acc >> 2);
                break;
        default:
                goto fail;
        }
        *ret = out;
        *ret_len = k;
        return 0;
fail:
        free(out);
        return -EINVAL;
}

char *dkim_base64_encode(const uint8_t *p, size_t n) {
        static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        char *s = malloc((n + 2) / 3 * 4 + 1);
        if (!s)
                return NULL;
        size_t k = 0;
        for (size_t i = 0; i < n; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16;
                if (i + 1 < n)
                        v |= (uint32_t) p[i + 1] << 8;
                if (i + 2 < n)
                        v |= p[i + 2];
                s[k++] = alphabet[(v >> 18) & 63];
                s[k++] = alphabet[(v >> 12) & 63];
                s[k++] = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
                s[k++] = i + 2 < n ? alphabet[v & 63] : '=';
        }
        s[k] = 0;
        return s;
}

bool dkim_domain_valid(const char *s, size_t n) {
        if (n == 0 || n > 253)
                return false;
        size_t label = 0;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c == '.') {
                        if (label == 0 || s[i - 1] == '-')
                                return false;
                        label = 0;
                        continue;
                }
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                          c == '_' || c >= 0x80 || (c == '-' && label > 0);
                if (!ok || ++label > 63)
                        return false;
        }
        return label > 0 && s[n - 1] != '-';
}

static int parse_uint(const char *p, size_t n, size_t max_digits, uint64_t *ret) {
        uint64_t v = 0;
        if (n == 0 || n > max_digits)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (p[i] < '0' || p[i] > '9')
                        return -EINVAL;
                if (v > (UINT64_MAX - 9) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (p[i] - '0');
        }
        *ret = v;
        return 0;
}

/* Signatures */

DkimSignature *dkim_signature_free(DkimSignature *s) {
        if (!s)
                return NULL;
        free(s->domain);
        free(s->selector);
        for (size_t i = 0; i < s->n_headers; i++)
                free(s->headers[i]);
        free(s->headers);
        free(s->signature);
        free(s->signature_b64);
        free(s->identity);
        free(s);
        return NULL;
}

#define FAIL(why)                               \
        do {                                    \
                if (reterr_reason)              \
                        *reterr_reason = (why); \
                return -EINVAL;                 \
        } while (0)

static int parse_header_list(DkimSignature *s, const DkimTag *t) {
        _cleanup_free_ char *v = dkim_tag_value_strip(t);
        if (!v)
                return -ENOMEM;
        size_t n = 1;
        for (const char *p = v; *p; p++)
                n += *p == ':';
        if (n > 256)
                return -E2BIG;
        s->headers = calloc(n, sizeof *s->headers);
        if (!s->headers)
                return -ENOMEM;
        const char *p = v;
        for (;;) {
                const char *e = strchr(p, ':');
                size_t len = e ? (size_t) (e - p) : strlen(p);
                /* An empty name ("a::b", "h=") names no field; RFC 6376
                 * requires one, but the ARC suite expects such lists to
                 * verify as signed (the empty name selects nothing). */
                for (size_t i = 0; i < len; i++)
                        if ((unsigned char) p[i] < 33 || (unsigned char) p[i] > 126)
                                return -EINVAL;
                s->headers[s->n_headers] = strndup_lower(p, len);
                if (!s->headers[s->n_headers])
                        return -ENOMEM;
                s->n_headers++;
                if (!e)
                        break;
                p = e + 1;
        }
        return 0;
}

static bool headers_include(const DkimSignature *s, const char *name) {
        for (size_t i = 0; i < s->n_headers; i++)
                if (strcmp(s->headers[i], name) == 0)
                        return true;
        return false;
}

int dkim_signature_parse(DkimSigKind kind, const char *value, size_t n,
                         DkimSignature **ret, const char **reterr_reason) {
        _cleanup_(tag_list_donep) DkimTagList tags = {};
        _cleanup_(dkim_signature_freep) DkimSignature *s = NULL;
        const DkimTag *t;
        int r;

        r = dkim_tags_parse(value, n, &tags);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                FAIL("malformed tag list");

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->kind = kind;
        /* Without c=, DKIM means simple/simple (RFC 6376 §3.5). For an AMS
         * the ARC suite, dkimpy and mailauth use relaxed/relaxed (Mail::DKIM
         * and OpenARC simple: ../shared/notes/arc.md §6); we follow the
         * suite, and always emit c= ourselves. */
        s->header_canon = s->body_canon = kind == DKIM_SIG_AMS ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE;

        if (kind == DKIM_SIG_DKIM) {
                t = dkim_tags_get(&tags, "v");
                if (!t || t->value_len != 1 || t->value[0] != '1')
                        FAIL("missing or unsupported v= tag");
        }

        t = dkim_tags_get(&tags, "a");
        if (!t)
                FAIL("missing a= tag");
        s->algorithm = dkim_algorithm_from_string(t->value, t->value_len);
        if (s->algorithm < 0)
                FAIL("unsupported algorithm");

        t = dkim_tags_get(&tags, "b");
        if (!t || t->value_len == 0)
                FAIL("missing b= tag");
        s->signature_b64 = dkim_tag_value_strip(t);
        if (!s->signature_b64)
                return -ENOMEM;
        r = dkim_base64_decode(t->value, t->value_len, &s->signature, &s->signature_len);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || s->signature_len == 0)
                FAIL("b= is not base64");

        t = dkim_tags_get(&tags, "d");
        if (!t || !dkim_domain_valid(t->value, t->value_len))
                FAIL("missing or invalid d= tag");
        s->domain = strndup_lower(t->value, t->value_len);
        if (!s->domain)
                return -ENOMEM;

        t = dkim_tags_get(&tags, "s");
        if (!t || !dkim_domain_valid(t->value, t->value_len))
                FAIL("missing or invalid s= tag");
        s->selector = strndup_lower(t->value, t->value_len);
        if (!s->selector)
                return -ENOMEM;

        t = dkim_tags_get(&tags, "t");
        if (t) {
                if (parse_uint(t->value, t->value_len, 12, &s->timestamp) < 0)
                        FAIL("invalid t= tag");
                s->has_timestamp = true;
        }

        if (kind == DKIM_SIG_AS) {
                if (dkim_tags_get(&tags, "h"))
                        FAIL("h= is not allowed in ARC-Seal");
                t = dkim_tags_get(&tags, "cv");
                if (!t)
                        FAIL("missing cv= tag");
                s->cv = arc_cv_from_string(t->value, t->value_len);
                if (s->cv < 0)
                        FAIL("invalid cv= tag");
                /* The seal is always relaxed (RFC 8617 §5.1.1). */
                s->header_canon = DKIM_CANON_RELAXED;
        } else {
                t = dkim_tags_get(&tags, "bh");
                if (!t)
                        FAIL("missing bh= tag");
                _cleanup_free_ uint8_t *bh = NULL;
                size_t bh_len = 0;
                r = dkim_base64_decode(t->value, t->value_len, &bh, &bh_len);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 || bh_len != DKIM_SHA256_LEN)
                        FAIL("bh= is not a base64 SHA-256 digest");
                memcpy(s->body_hash, bh, DKIM_SHA256_LEN);

                t = dkim_tags_get(&tags, "c");
                if (t && dkim_canon_pair_from_string(t->value, t->value_len, &s->header_canon, &s->body_canon) < 0)
                        FAIL("invalid c= tag");

                t = dkim_tags_get(&tags, "h");
                if (!t)
                        FAIL("missing h= tag");
                r = parse_header_list(s, t);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        FAIL("invalid h= tag");
                if (kind == DKIM_SIG_DKIM && !headers_include(s, "from"))
                        FAIL("h= does not include From");
                if (kind == DKIM_SIG_AMS && headers_include(s, "arc-seal"))
                        FAIL("h= includes ARC-Seal");

                t = dkim_tags_get(&tags, "l");
                if (t) {
                        if (parse_uint(t->value, t->value_len, 19, &s->length) < 0)
                                FAIL("invalid l= tag");
                        s->has_length = true;
                }
        }

        if (kind == DKIM_SIG_DKIM) {
                t = dkim_tags_get(&tags, "x");
                if (t) {
                        if (parse_uint(t->value, t->value_len, 12, &s->expire) < 0)
                                FAIL("invalid x= tag");
                        s->has_expire = true;
                        if (s->has_timestamp && s->expire < s->timestamp)
                                FAIL("x= is before t=");
                }
                t = dkim_tags_get(&tags, "q");
                if (t && !(t->value_len >= 7 && memmem(t->value, t->value_len, "dns/txt", 7)))
                        FAIL("unsupported q= tag");
                t = dkim_tags_get(&tags, "i");
                if (t) {
                        const char *at = memchr(t->value, '@', t->value_len);
                        if (!at)
                                FAIL("invalid i= tag");
                        const char *dom = at + 1;
                        size_t dl = t->value_len - (size_t) (dom - t->value);
                        size_t sl = strlen(s->domain);
                        /* i= must be d= or a subdomain of it (§3.5). */
                        if (dl < sl || !span_eq_ci(dom + dl - sl, sl, s->domain) ||
                            (dl > sl && dom[dl - sl - 1] != '.'))
                                FAIL("i= is not within d=");
                        s->identity = strndup(t->value, t->value_len);
                } else {
                        s->identity = malloc(strlen(s->domain) + 2);
                        if (s->identity)
                                sprintf(s->identity, "@%s", s->domain);
                }
                if (!s->identity)
                        return -ENOMEM;
        } else {
                uint64_t i;
                t = dkim_tags_get(&tags, "i");
                if (!t || parse_uint(t->value, t->value_len, 2, &i) < 0 || i < 1 || i > ARC_MAX_INSTANCES)
                        FAIL("missing or invalid i= tag");
                s->instance = (unsigned) i;
        }

        *ret = TAKE_PTR(s);
        return 0;
}

char *dkim_key_name(const char *selector, const char *domain) {
        char *s = NULL;
        if (asprintf(&s, "%s._domainkey.%s", selector, domain) < 0)
                return NULL;
        return s;
}

/* Keys */

DkimKey *dkim_key_free(DkimKey *k) {
        if (!k)
                return NULL;
        if (k->pubkey)
                gnutls_pubkey_deinit(k->pubkey);
        free(k);
        return NULL;
}

/* Some publishers put a bare PKCS#1 RSAPublicKey in p= instead of a
 * SubjectPublicKeyInfo; wrap it so GnuTLS can import it. */
static int import_rsa_pkcs1(gnutls_pubkey_t pub, const uint8_t *der, size_t len) {
        static const uint8_t alg[] = {
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
        };
        if (len > 65000)
                return -EINVAL;
        size_t bitstr_len = len + 1;
        uint8_t hdr_bit[4], hdr_seq[4];
        size_t nb = 0, ns = 0;

        hdr_bit[nb++] = 0x03;
        if (bitstr_len < 128)
                hdr_bit[nb++] = (uint8_t) bitstr_len;
        else {
                hdr_bit[nb++] = 0x82;
                hdr_bit[nb++] = (uint8_t) (bitstr_len >> 8);
                hdr_bit[nb++] = (uint8_t) bitstr_len;
        }
        size_t inner = sizeof alg + nb + bitstr_len;
        hdr_seq[ns++] = 0x30;
        if (inner < 128)
                hdr_seq[ns++] = (uint8_t) inner;
        else {
                hdr_seq[ns++] = 0x82;
                hdr_seq[ns++] = (uint8_t) (inner >> 8);
                hdr_seq[ns++] = (uint8_t) inner;
        }
        _cleanup_free_ uint8_t *spki = malloc(ns + inner);
        if (!spki)
                return -ENOMEM;
        size_t k = 0;
        memcpy(spki + k, hdr_seq, ns);
        k += ns;
        memcpy(spki + k, alg, sizeof alg);
        k += sizeof alg;
        memcpy(spki + k, hdr_bit, nb);
        k += nb;
        spki[k++] = 0;
        memcpy(spki + k, der, len);
        k += len;
        gnutls_datum_t d = { .data = spki, .size = (unsigned) k };
        return gnutls_pubkey_import(pub, &d, GNUTLS_X509_FMT_DER) < 0 ? -EINVAL : 0;
}

static bool list_has(const DkimTag *t, const char *item) {
        /* colon-separated, with optional FWS around items */
        size_t n = strlen(item);
        const char *p = t->value, *end = t->value + t->value_len;
        while (p <= end) {
                const char *e = memchr(p, ':', (size_t) (end - p));
                if (!e)
                        e = end;
                const char *a = p, *b = e;
                while (a < b && strchr(" \t\r\n", *a))
                        a++;
                while (b > a && strchr(" \t\r\n", b[-1]))
                        b--;
                if ((size_t) (b - a) == n && span_eq_ci(a, n, item))
                        return true;
                p = e + 1;
        }
        return false;
}

int dkim_key_parse(const char *txt, size_t n, DkimKey **ret, const char **reterr_reason) {
        _cleanup_(tag_list_donep) DkimTagList tags = {};
        _cleanup_(dkim_key_freep) DkimKey *k = NULL;
        const DkimTag *t;
        int r;

        r = dkim_tags_parse(txt, n, &tags);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                FAIL("malformed key record");

        t = dkim_tags_get(&tags, "v");
        if (t && (tags.tags != t || !(t->value_len == 5 && memcmp(t->value, "DKIM1", 5) == 0)))
                FAIL("key record v= is not DKIM1 or not first");

        k = calloc(1, sizeof *k);
        if (!k)
                return -ENOMEM;

        k->algorithm = DKIM_ALGORITHM_RSA_SHA256;
        t = dkim_tags_get(&tags, "k");
        if (t) {
                if (span_eq_ci(t->value, t->value_len, "rsa"))
                        k->algorithm = DKIM_ALGORITHM_RSA_SHA256;
                else if (span_eq_ci(t->value, t->value_len, "ed25519"))
                        k->algorithm = DKIM_ALGORITHM_ED25519_SHA256;
                else
                        FAIL("unsupported key type");
        }

        t = dkim_tags_get(&tags, "h");
        if (t && !list_has(t, "sha256"))
                FAIL("key does not allow sha256");
        t = dkim_tags_get(&tags, "s");
        if (t && !list_has(t, "email") && !list_has(t, "*"))
                FAIL("key is not for email");
        t = dkim_tags_get(&tags, "t");
        if (t) {
                k->testing = list_has(t, "y");
                k->strict_identity = list_has(t, "s");
        }

        t = dkim_tags_get(&tags, "p");
        if (!t)
                FAIL("key record without p=");
        if (t->value_len == 0) {
                k->revoked = true;
                *ret = TAKE_PTR(k);
                return 0;
        }

        _cleanup_free_ uint8_t *der = NULL;
        size_t der_len = 0;
        r = dkim_base64_decode(t->value, t->value_len, &der, &der_len);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                FAIL("p= is not base64");

        if (gnutls_pubkey_init(&k->pubkey) < 0)
                return -ENOMEM;

        if (k->algorithm == DKIM_ALGORITHM_ED25519_SHA256) {
                /* RFC 8463 §4: p= is the raw 32-byte public key. */
                if (der_len != 32)
                        FAIL("Ed25519 key is not 32 bytes");
                gnutls_datum_t x = { .data = der, .size = 32 };
                if (gnutls_pubkey_import_ecc_raw(k->pubkey, GNUTLS_ECC_CURVE_ED25519, &x, NULL) < 0)
                        FAIL("invalid Ed25519 key");
                k->bits = 256;
        } else {
                gnutls_datum_t d = { .data = der, .size = (unsigned) der_len };
                if (gnutls_pubkey_import(k->pubkey, &d, GNUTLS_X509_FMT_DER) < 0) {
                        gnutls_pubkey_deinit(k->pubkey);
                        if (gnutls_pubkey_init(&k->pubkey) < 0) {
                                k->pubkey = NULL;
                                return -ENOMEM;
                        }
                        if (import_rsa_pkcs1(k->pubkey, der, der_len) < 0)
                                FAIL("p= is not an RSA public key");
                }
                unsigned bits = 0;
                if (gnutls_pubkey_get_pk_algorithm(k->pubkey, &bits) != GNUTLS_PK_RSA)
                        FAIL("p= is not an RSA public key");
                k->bits = bits;
        }

        *ret = TAKE_PTR(k);
        return 0;
}

int dkim_key_verify(const DkimKey *k, DkimAlgorithm a, unsigned min_rsa_bits,
                    const uint8_t digest[DKIM_SHA256_LEN], const uint8_t *sig, size_t sig_len,
                    const char **reterr_reason) {
        gnutls_datum_t h = { .data = (uint8_t *) digest, .size = DKIM_SHA256_LEN };
        gnutls_datum_t s = { .data = (uint8_t *) sig, .size = (unsigned) sig_len };
        int r;

        if (k->revoked || !k->pubkey) {
                if (reterr_reason)
                        *reterr_reason = "key revoked";
                return -EKEYREJECTED;
        }
        if (k->algorithm != a) {
                if (reterr_reason)
                        *reterr_reason = "key type does not match a=";
                return -EKEYREJECTED;
        }
        if (a == DKIM_ALGORITHM_RSA_SHA256) {
                if (k->bits < (min_rsa_bits ? min_rsa_bits : 1024)) {
                        if (reterr_reason)
                                *reterr_reason = "RSA key too small";
                        return -EKEYREJECTED;
                }
                r = gnutls_pubkey_verify_hash2(k->pubkey, GNUTLS_SIGN_RSA_SHA256, 0, &h, &s);
        } else
                r = gnutls_pubkey_verify_data2(k->pubkey, GNUTLS_SIGN_EDDSA_ED25519, 0, &h, &s);
        if (r < 0) {
                if (reterr_reason)
                        *reterr_reason = "signature does not verify";
                return -EBADMSG;
        }
        return 0;
}

int dkim_privkey_load_pem(const char *pem, size_t n, gnutls_privkey_t *ret) {
        gnutls_privkey_t k;
        gnutls_datum_t d = { .data = (uint8_t *) pem, .size = (unsigned) n };

        if (n > UINT32_MAX)
                return -EINVAL;
        if (gnutls_privkey_init(&k) < 0)
                return -ENOMEM;
        if (gnutls_privkey_import_x509_raw(k, &d, GNUTLS_X509_FMT_PEM, NULL, 0) < 0) {
                gnutls_privkey_deinit(k);
                return -EINVAL;
        }
        *ret = k;
        return 0;
}

int dkim_privkey_sign(gnutls_privkey_t key, DkimAlgorithm a, unsigned min_rsa_bits,
                      const uint8_t digest[DKIM_SHA256_LEN], uint8_t **ret, size_t *ret_len) {
        gnutls_datum_t h = { .data = (uint8_t *) digest, .size = DKIM_SHA256_LEN };
        gnutls_datum_t sig = {};
        unsigned bits = 0;
        int pk = gnutls_privkey_get_pk_algorithm(key, &bits);
        int r;

        if (a == DKIM_ALGORITHM_RSA_SHA256) {
                if (pk != GNUTLS_PK_RSA)
                        return -EINVAL;
                if (bits < (min_rsa_bits ? min_rsa_bits : 2048))
                        return -EKEYREJECTED;
                r = gnutls_privkey_sign_hash2(key, GNUTLS_SIGN_RSA_SHA256, 0, &h, &sig);
        } else if (a == DKIM_ALGORITHM_ED25519_SHA256) {
                if (pk != GNUTLS_PK_EDDSA_ED25519)
                        return -EINVAL;
                r = gnutls_privkey_sign_data2(key, GNUTLS_SIGN_EDDSA_ED25519, 0, &h, &sig);
        } else
                return -EINVAL;
        if (r < 0)
                return r == GNUTLS_E_MEMORY_ERROR ? -ENOMEM : -EIO;

        uint8_t *out = malloc(MAX(sig.size, 1u));
        if (!out) {
                gnutls_free(sig.data);
                return -ENOMEM;
        }
        memcpy(out, sig.data, sig.size);
        *ret_len = sig.size;
        gnutls_free(sig.data);
        *ret = out;
        return 0;
}

int dkim_field_strip_b(const char *raw, size_t n, char **ret, size_t *ret_len) {
        _cleanup_(tag_list_donep) DkimTagList tags = {};
        const char *colon = memchr(raw, ':', n);
        int r;

        if (!colon)
                return -EINVAL;
        size_t voff = (size_t) (colon + 1 - raw);
        size_t vlen = n - voff;
        /* The tag parser must not see the field's final CRLF as FWS. */
        if (vlen >= 2 && raw[n - 2] == '\r' && raw[n - 1] == '\n')
                vlen -= 2;
        r = dkim_tags_parse(raw + voff, vlen, &tags);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        const DkimTag *b = dkim_tags_get(&tags, "b");
        if (!b)
                return -EINVAL;
        size_t cut_start = (size_t) (b->after_eq - raw);
        size_t cut_end = (size_t) (b->value + b->value_len - raw);
        char *out = malloc(n - (cut_end - cut_start) + 1);
        if (!out)
                return -ENOMEM;
        memcpy(out, raw, cut_start);
        memcpy(out + cut_start, raw + cut_end, n - cut_end);
        *ret_len = n - (cut_end - cut_start);
        out[*ret_len] = 0;
        *ret = out;
        return 0;
}

static int hash_canon_field(gnutls_hash_hd_t h, DkimCanon c, const char *raw, size_t n, bool strip_crlf) {
        _cleanup_free_ char *buf = malloc(n + 2);
        if (!buf)
                return -ENOMEM;
        size_t k = dkim_canon_header(c, raw, n, strip_crlf, buf);
        return gnutls_hash(h, buf, k) < 0 ? -EIO : 0;
}

int dkim_hash_headers(DkimCanon c, const MailHeaderField *fields, size_t n_fields,
                      char *const *names, size_t n_names,
                      const char *sig_field, size_t sig_len, uint8_t ret[DKIM_SHA256_LEN]) {
        _cleanup_free_ size_t *idx = calloc(MAX(n_names, (size_t) 1), sizeof *idx);
        _cleanup_free_ size_t *lens = calloc(MAX(n_names, (size_t) 1), sizeof *lens);
        gnutls_hash_hd_t h;
        int r;

        if (!idx || !lens)
                return -ENOMEM;
        for (size_t i = 0; i < n_names; i++)
                lens[i] = strlen(names[i]);
        r = mail_header_fields_select(fields, n_fields, (const char *const *) names, lens, n_names, idx);
        if (r < 0)
                return r;
        if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0)
                return -EIO;
        for (size_t i = 0; i < n_names && r >= 0; i++)
                if (idx[i] != SIZE_MAX)
                        r = hash_canon_field(h, c, fields[idx[i]].raw, fields[idx[i]].raw_len, false);
        if (r >= 0)
                r = hash_canon_field(h, c, sig_field, sig_len, true);
        gnutls_hash_deinit(h, r >= 0 ? ret : NULL);
        return r;
}

/* Key table */

int dkim_key_table_add(DkimKeyTable *t, const char *selector, const char *domain, size_t *ret_index) {
        _cleanup_free_ char *name = dkim_key_name(selector, domain);
        if (!name)
                return -ENOMEM;
        for (size_t i = 0; i < t->n; i++)
                if (strcmp(t->entries[i].name, name) == 0) {
                        *ret_index = i;
                        return 0;
                }
        if (t->n == t->cap) {
                size_t cap = MAX(t->cap * 2, (size_t) 4);
                DkimKeyEntry *e = realloc(t->entries, cap * sizeof *e);
                if (!e)
                        return -ENOMEM;
                t->entries = e;
                t->cap = cap;
        }
        t->entries[t->n] = (DkimKeyEntry) { .name = TAKE_PTR(name) };
        *ret_index = t->n++;
        return 0;
}

int dkim_key_table_next_query(DkimKeyTable *t, const char **ret_name) {
        for (size_t i = 0; i < t->n; i++)
                if (!t->entries[i].asked) {
                        t->entries[i].asked = true;
                        *ret_name = t->entries[i].name;
                        return 1;
                }
        return 0;
}

int dkim_key_table_answer(DkimKeyTable *t, const char *name, DkimLookup lookup,
                          const char *const *txt, const size_t *txt_len, size_t n_txt) {
        DkimKeyEntry *e = NULL;
        for (size_t i = 0; i < t->n; i++)
                if (strcasecmp(t->entries[i].name, name) == 0) {
                        e = &t->entries[i];
                        break;
                }
        if (!e || !e->asked)
                return -ENOENT;
        if (e->answered)
                return -EALREADY;
        e->answered = true;
        e->lookup = lookup;
        if (lookup == DKIM_LOOKUP_TEMPFAIL) {
                e->reason = "key lookup failed temporarily";
                return 0;
        }
        e->reason = "no key record";
        if (lookup != DKIM_LOOKUP_FOUND)
                return 0;
        for (size_t i = 0; i < n_txt; i++) {
                const char *why = NULL;
                int r = dkim_key_parse(txt[i], txt_len[i], &e->key, &why);
                if (r == -ENOMEM)
                        return r;
                if (r >= 0) {
                        e->reason = NULL;
                        return 0;
                }
                e->reason = why;
        }
        return 0;
}

bool dkim_key_table_complete(const DkimKeyTable *t) {
        for (size_t i = 0; i < t->n; i++)
                if (!t->entries[i].answered)
                        return false;
        return true;
}

void dkim_key_table_done(DkimKeyTable *t) {
        for (size_t i = 0; i < t->n; i++) {
                free(t->entries[i].name);
                dkim_key_free(t->entries[i].key);
        }
        free(t->entries);
        *t = (DkimKeyTable) {};
}

/* Body sets */

int dkim_body_set_add(DkimBodySet *s, DkimCanon c, uint64_t limit, size_t *ret_index) {
        for (size_t i = 0; i < s->n; i++)
                if (dkim_body_hash_canon(s->items[i]) == c && dkim_body_hash_limit(s->items[i]) == limit) {
                        *ret_index = i;
                        return 0;
                }
        DkimBodyHash **items = realloc(s->items, (s->n + 1) * sizeof *items);
        if (!items)
                return -ENOMEM;
        s->items = items;
        int r = dkim_body_hash_new(c, limit, &s->items[s->n]);
        if (r < 0)
                return r;
        *ret_index = s->n++;
        return 0;
}

int dkim_body_set_feed(DkimBodySet *s, const void *p, size_t n) {
        for (size_t i = 0; i < s->n; i++) {
                int r = dkim_body_hash_feed(s->items[i], p, n);
                if (r < 0)
                        return r;
        }
        return 0;
}

void dkim_body_set_done(DkimBodySet *s) {
        for (size_t i = 0; i < s->n; i++)
                dkim_body_hash_free(s->items[i]);
        free(s->items);
        *s = (DkimBodySet) {};
}

/* Verifier */

typedef struct VerifySig {
        size_t field;           /* index in the header section */
        DkimSignature *sig;
        const char *parse_error;
        size_t key;             /* in the key table */
        size_t body;            /* in the body set */
        bool checked;           /* within max_signatures and parsed */
} VerifySig;

struct DkimVerifier {
        DkimVerifyParams params;
        MailHeaders *headers;
        int header_error;       /* -EBADMSG/-E2BIG: malformed section */
        bool headers_done, ended, evaluated;
        DkimBodySet bodies;
        DkimKeyTable keys;
        VerifySig *sigs;
        size_t n_sigs;
        DkimResult *results;
};

int dkim_verifier_new(const DkimVerifyParams *params, DkimVerifier **ret) {
        DkimVerifier *v = calloc(1, sizeof *v);
        int r;

        if (!v)
                return -ENOMEM;
        if (params)
                v->params = *params;
        if (v->params.max_signatures == 0)
                v->params.max_signatures = DKIM_MAX_SIGNATURES_DEFAULT;
        if (v->params.min_rsa_bits == 0)
                v->params.min_rsa_bits = 1024;
        if (v->params.now == 0)
                v->params.now = (uint64_t) time(NULL);
        r = mail_headers_new(&v->params.header_limits, &v->headers);
        if (r < 0) {
                free(v);
                return r;
        }
        *ret = v;
        return 0;
}

DkimVerifier *dkim_verifier_free(DkimVerifier *v) {
        if (!v)
                return NULL;
        mail_headers_free(v->headers);
        dkim_body_set_done(&v->bodies);
        dkim_key_table_done(&v->keys);
        for (size_t i = 0; i < v->n_sigs; i++)
                dkim_signature_free(v->sigs[i].sig);
        free(v->sigs);
        free(v->results);
        free(v);
        return NULL;
}

static int verifier_on_headers(DkimVerifier *v) {
        size_t n = mail_headers_count(v->headers);
        unsigned checked = 0;
        int r;

        v->headers_done = true;
        for (size_t i = 0; i < n; i++) {
                const MailHeaderField *f = mail_headers_get(v->headers, i);
                if (!mail_header_field_is(f, "DKIM-Signature"))
                        continue;
                VerifySig *s = realloc(v->sigs, (v->n_sigs + 1) * sizeof *s);
                if (!s)
                        return -ENOMEM;
                v->sigs = s;
                s = &v->sigs[v->n_sigs++];
                *s = (VerifySig) { .field = i };
                if (checked >= v->params.max_signatures)
                        continue;
                checked++;
                r = dkim_signature_parse(DKIM_SIG_DKIM, f->value, f->value_len, &s->sig, &s->parse_error);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        continue;
                r = dkim_key_table_add(&v->keys, s->sig->selector, s->sig->domain, &s->key);
                if (r < 0)
                        return r;
                r = dkim_body_set_add(&v->bodies, s->sig->body_canon,
                                      s->sig->has_length ? s->sig->length : DKIM_BODY_NO_LIMIT, &s->body);
                if (r < 0)
                        return r;
                s->checked = true;
        }
        return 0;
}

/* Shared by verifier, signer and validator: header section first, then the
 * body to the hashers. Returns 1 when the header section just completed. */
int dkim_input_feed(MailHeaders *h, int *header_error, DkimBodySet *bodies, bool headers_done,
                      const void *p, size_t n, size_t *ret_body_off) {
        size_t used = 0;
        int r;

        *ret_body_off = 0;
        if (*header_error)
                return 0;
        if (headers_done)
                return dkim_body_set_feed(bodies, p, n);
        r = mail_headers_feed(h, p, n, &used);
        if (r == -EBADMSG || r == -E2BIG) {
                *header_error = r;
                return 0;
        }
        if (r < 0)
                return r;
        *ret_body_off = used;
        return r;
}

int dkim_verifier_feed(DkimVerifier *v, const void *p, size_t n) {
        size_t off;
        int r;

        if (v->ended)
                return -EALREADY;
        r = dkim_input_feed(v->headers, &v->header_error, &v->bodies, v->headers_done, p, n, &off);
        if (r <= 0)
                return r;
        r = verifier_on_headers(v);
        if (r < 0)
                return r;
        return dkim_body_set_feed(&v->bodies, (const char *) p + off, n - off);
}

int dkim_verifier_feed_end(DkimVerifier *v) {
        int r;

        if (v->ended)
                return 0;
        v->ended = true;
        if (v->header_error)
                return 0;
        if (!v->headers_done) {
                r = mail_headers_end(v->headers);
                if (r == -EBADMSG || r == -E2BIG) {
                        v->header_error = r;
                        return 0;
                }
                if (r < 0)
                        return r;
                r = verifier_on_headers(v);
                if (r < 0)
                        return r;
        }
        return 0;
}

int dkim_verifier_next_query(DkimVerifier *v, const char **ret_name) {
        return dkim_key_table_next_query(&v->keys, ret_name);
}

int dkim_verifier_answer(DkimVerifier *v, const char *name, DkimLookup lookup,
                         const char *const *txt, const size_t *txt_len, size_t n_txt) {
        return dkim_key_table_answer(&v->keys, name, lookup, txt, txt_len, n_txt);
}

bool dkim_verifier_is_done(const DkimVerifier *v) {
        return v->ended && dkim_key_table_complete(&v->keys);
}

const MailHeaders *dkim_verifier_headers(const DkimVerifier *v) {
        return v->headers_done ? v->headers : NULL;
}

static void set_result(DkimResult *res, DkimStatus st, const char *why) {
        res->status = st;
        res->reason = why;
}

/* Verifies one signature of kind DKIM or AMS against the message. The key
 * entry must be answered. */
int dkim_verify_signature(const DkimSignature *sig, const MailHeaderField *fields, size_t n_fields, const MailHeaderField *sig_field,
                                    DkimBodyHash *body, const DkimKeyEntry *ke, unsigned min_rsa_bits,
                                    DkimResult *res) {
        uint8_t bh[DKIM_SHA256_LEN], digest[DKIM_SHA256_LEN];
        uint64_t body_len = 0;
        const char *why = NULL;
        int r;

        res->signature = sig;
        if (ke->lookup == DKIM_LOOKUP_TEMPFAIL) {
                set_result(res, DKIM_STATUS_TEMPERROR, ke->reason);
                return 0;
        }
        if (!ke->key) {
                set_result(res, DKIM_STATUS_PERMERROR, ke->reason ? ke->reason : "no key");
                return 0;
        }
        res->key_bits = ke->key->bits;
        res->testing = ke->key->testing;
        if (sig->kind == DKIM_SIG_DKIM && ke->key->strict_identity) {
                const char *at = strchr(sig->identity, '@');
                if (!at || strcasecmp(at + 1, sig->domain) != 0) {
                        set_result(res, DKIM_STATUS_PERMERROR, "key requires i= domain to equal d=");
                        return 0;
                }
        }

        r = dkim_body_hash_finish(body, bh, &body_len);
        if (r < 0)
                return r;
        if (sig->has_length && sig->length > body_len) {
                set_result(res, DKIM_STATUS_FAIL, "l= is longer than the body");
                return 0;
        }
        if (memcmp(bh, sig->body_hash, DKIM_SHA256_LEN) != 0) {
                set_result(res, DKIM_STATUS_FAIL, "body hash does not match");
                return 0;
        }

        _cleanup_free_ char *stripped = NULL;
        size_t stripped_len = 0;
        r = dkim_field_strip_b(sig_field->raw, sig_field->raw_len, &stripped, &stripped_len);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                set_result(res, DKIM_STATUS_PERMERROR, "malformed signature field");
                return 0;
        }
        r = dkim_hash_headers(sig->header_canon, fields, n_fields,
                              sig->headers, sig->n_headers, stripped, stripped_len, digest);
        if (r < 0)
                return r;
        r = dkim_key_verify(ke->key, sig->algorithm, min_rsa_bits, digest, sig->signature, sig->signature_len, &why);
        if (r == -EKEYREJECTED) {
                set_result(res, ke->key->revoked ? DKIM_STATUS_PERMERROR : DKIM_STATUS_POLICY, why);
                return 0;
        }
        if (r < 0) {
                set_result(res, DKIM_STATUS_FAIL, why);
                return 0;
        }
        set_result(res, DKIM_STATUS_PASS, NULL);
        return 0;
}

int dkim_verifier_results(DkimVerifier *v, const DkimResult **ret, size_t *ret_n) {
        int r;

        if (!dkim_verifier_is_done(v))
                return -EBUSY;
        if (!v->evaluated) {
                v->results = calloc(MAX(v->n_sigs, (size_t) 1), sizeof *v->results);
                if (!v->results)
                        return -ENOMEM;
                for (size_t i = 0; i < v->n_sigs; i++) {
                        VerifySig *s = &v->sigs[i];
                        DkimResult *res = &v->results[i];
                        res->signature = s->sig;
                        if (!s->sig) {
                                if (s->parse_error)
                                        set_result(res, DKIM_STATUS_PERMERROR, s->parse_error);
                                else
                                        set_result(res, DKIM_STATUS_NEUTRAL, "over the signature limit");
                                continue;
                        }
                        if (s->sig->has_expire && v->params.now > s->sig->expire) {
                                set_result(res, DKIM_STATUS_PERMERROR, "signature expired");
                                continue;
                        }
                        r = dkim_verify_signature(s->sig, mail_headers_fields(v->headers), mail_headers_count(v->headers),
                                                  mail_headers_get(v->headers, s->field),
                                                     v->bodies.items[s->body], &v->keys.entries[s->key],
                                                     v->params.min_rsa_bits, res);
                        if (r < 0) {
                                free(v->results);
                                v->results = NULL;
                                return r;
                        }
                }
                v->evaluated = true;
        }
        *ret = v->results;
        *ret_n = v->n_sigs;
        return 0;
}

/* Signing */

const char *const dkim_default_sign_headers[] = {
        "from", "to", "cc", "subject", "date", "message-id", "reply-to",
        "in-reply-to", "references", "mime-version", "content-type",
        "content-transfer-encoding", "list-id", "list-unsubscribe",
        "list-unsubscribe-post", "list-post", "sender", NULL,
};

static bool is_oversigned(const char *name) {
        static const char *const set[] = {
                "from", "subject", "date", "to", "cc", "reply-to", "message-id",
        };
        for (size_t i = 0; i < ELEMENTSOF(set); i++)
                if (strcasecmp(set[i], name) == 0)
                        return true;
        return false;
}

/* Builds the h= list for the fields at hand: explicit lists are used as
 * given; the default list names each present field as often as it occurs
 * and the over-signed ones once more. Returns a ":"-joined string. */
int dkim_build_header_list(const MailHeaderField *fields, size_t n_fields, const char *const *names,
                             bool explicit_list, char **ret) {
        size_t cap = 256, len = 0;
        char *s = malloc(cap);
        if (!s)
                return -ENOMEM;
        s[0] = 0;
        for (size_t i = 0; names[i]; i++) {
                size_t count = 0;
                if (explicit_list)
                        count = 1;
                else {
                        for (size_t j = 0; j < n_fields; j++)
                                if (mail_header_field_is(&fields[j], names[i]))
                                        count++;
                        if (is_oversigned(names[i]))
                                count++;
                }
                size_t nl = strlen(names[i]);
                for (size_t k = 0; k < count; k++) {
                        if (len + nl + 2 > cap) {
                                cap = (len + nl + 2) * 2;
                                char *ns = realloc(s, cap);
                                if (!ns) {
                                        free(s);
                                        return -ENOMEM;
                                }
                                s = ns;
                        }
                        if (len > 0)
                                s[len++] = ':';
                        for (size_t c = 0; c < nl; c++)
                                s[len++] = ascii_lower(names[i][c]);
                        s[len] = 0;
                }
        }
        *ret = s;
        return 0;
}

struct DkimSigner {
        DkimSignParams params;
        MailHeaders *headers;
        int header_error;
        bool headers_done, ended;
        DkimBodySet bodies;
};

int dkim_signer_new(const DkimSignParams *params, DkimSigner **ret) {
        int r;

        if (!params || !params->domain || !params->selector || !params->key ||
            !dkim_domain_valid(params->domain, strlen(params->domain)) ||
            !dkim_domain_valid(params->selector, strlen(params->selector)) ||
            params->header_canon < 0 || params->header_canon >= _DKIM_CANON_MAX ||
            params->body_canon < 0 || params->body_canon >= _DKIM_CANON_MAX ||
            params->algorithm < 0 || params->algorithm >= _DKIM_ALGORITHM_MAX)
                return -EINVAL;
        DkimSigner *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->params = *params;
        size_t idx;
        r = mail_headers_new(&s->params.header_limits, &s->headers);
        if (r >= 0)
                r = dkim_body_set_add(&s->bodies, params->body_canon, DKIM_BODY_NO_LIMIT, &idx);
        if (r < 0) {
                dkim_signer_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

DkimSigner *dkim_signer_free(DkimSigner *s) {
        if (!s)
                return NULL;
        mail_headers_free(s->headers);
        dkim_body_set_done(&s->bodies);
        free(s);
        return NULL;
}

int dkim_signer_feed(DkimSigner *s, const void *p, size_t n) {
        size_t off;
        int r;

        if (s->ended)
                return -EALREADY;
        r = dkim_input_feed(s->headers, &s->header_error, &s->bodies, s->headers_done, p, n, &off);
        if (r <= 0)
                return r;
        s->headers_done = true;
        return dkim_body_set_feed(&s->bodies, (const char *) p + off, n - off);
}

int dkim_signer_feed_end(DkimSigner *s) {
        if (s->ended)
                return 0;
        s->ended = true;
        if (s->header_error || s->headers_done)
                return 0;
        int r = mail_headers_end(s->headers);
        if (r == -EBADMSG || r == -E2BIG) {
                s->header_error = r;
                return 0;
        }
        if (r < 0)
                return r;
        s->headers_done = true;
        return 0;
}

/* Appends "; tag=value" style text with folding: a line never grows past
 * 78 columns where it can be broken (between tags, inside b=/bh=/h=). */

void dkim_out_raw(DkimOut *o, const char *p, size_t n) {
        if (o->error)
                return;
        if (o->len + n + 1 > o->cap) {
                size_t cap = MAX(o->cap * 2, o->len + n + 256);
                char *b = realloc(o->buf, cap);
                if (!b) {
                        o->error = -ENOMEM;
                        return;
                }
                o->buf = b;
                o->cap = cap;
        }
        memcpy(o->buf + o->len, p, n);
        o->len += n;
        o->buf[o->len] = 0;
        for (size_t i = 0; i < n; i++)
                o->col = p[i] == '\n' ? 0 : o->col + 1;
}

void dkim_out_str(DkimOut *o, const char *s) {
        dkim_out_raw(o, s, strlen(s));
}

/* One tag, preceded by "; " (or nothing for the first), folded before it
 * when it would not fit; long values are broken at break_chars (or
 * anywhere for base64). */
void dkim_out_tag(DkimOut *o, bool first, bool fold, const char *name, const char *value, bool breakable) {
        /* For a breakable value only the name counts: the decision must
         * not depend on b='s value, which is empty when signing. */
        size_t need = strlen(name) + 1 + (breakable ? 1 : strlen(value) + 1);
        if (!first) {
                dkim_out_str(o, ";");
                if (fold && o->col + 1 + need > 78)
                        dkim_out_str(o, "\r\n\t");
                else
                        dkim_out_str(o, " ");
        }
        dkim_out_str(o, name);
        dkim_out_str(o, "=");
        if (!fold || !breakable) {
                dkim_out_str(o, value);
                return;
        }
        size_t n = strlen(value);
        for (size_t i = 0; i < n;) {
                size_t room = o->col < 76 ? 76 - o->col : 0;
                if (room == 0) {
                        dkim_out_str(o, "\r\n\t");
                        continue;
                }
                size_t take = MIN(room, n - i);
                dkim_out_raw(o, value + i, take);
                i += take;
        }
}

int dkim_signer_sign(DkimSigner *s, char **ret) {
        const DkimSignParams *p = &s->params;
        _cleanup_free_ char *hlist = NULL, *bh64 = NULL, *b64 = NULL;
        _cleanup_free_ uint8_t *sig = NULL;
        uint8_t bh[DKIM_SHA256_LEN], digest[DKIM_SHA256_LEN];
        size_t sig_len = 0;
        char num[32];
        int r;

        if (!s->ended)
                return -EBUSY;
        if (s->header_error)
                return -EBADMSG;

        const MailHeaderField *fields = mail_headers_fields(s->headers);
        size_t n_fields = mail_headers_count(s->headers);
        /* RFC 5322 wants exactly one From; signing a message with two lets
         * a verifier and a mail reader disagree on which one was signed. */
        size_t n_from = 0;
        for (size_t i = 0; i < n_fields; i++)
                n_from += mail_header_field_is(&fields[i], "From");
        if (n_from != 1)
                return -EBADMSG;
        r = dkim_build_header_list(fields, n_fields, p->headers ? p->headers : dkim_default_sign_headers,
                              p->headers != NULL, &hlist);
        if (r < 0)
                return r;
        r = dkim_body_hash_finish(s->bodies.items[0], bh, NULL);
        if (r < 0)
                return r;
        bh64 = dkim_base64_encode(bh, sizeof bh);
        if (!bh64)
                return -ENOMEM;

        /* The field is built twice: with b= empty to sign (the form a
         * verifier reconstructs), then with the signature. Everything
         * before b= is identical, and b= is last, so folding of the
         * signature cannot change the signed text. */
        for (int pass = 0; pass < 2; pass++) {
                DkimOut o = {};
                char canon[32];
                dkim_out_str(&o, "DKIM-Signature: ");
                dkim_out_tag(&o, true, true, "v", "1", false);
                dkim_out_tag(&o, false, true, "a", dkim_algorithm_to_string(p->algorithm), false);
                snprintf(canon, sizeof canon, "%s/%s", dkim_canon_to_string(p->header_canon),
                         dkim_canon_to_string(p->body_canon));
                dkim_out_tag(&o, false, true, "c", canon, false);
                dkim_out_tag(&o, false, true, "d", p->domain, false);
                dkim_out_tag(&o, false, true, "s", p->selector, false);
                if (p->identity)
                        dkim_out_tag(&o, false, true, "i", p->identity, false);
                snprintf(num, sizeof num, "%" PRIu64, p->timestamp);
                dkim_out_tag(&o, false, true, "t", num, false);
                if (p->expire_after > 0) {
                        snprintf(num, sizeof num, "%" PRIu64, p->timestamp + p->expire_after);
                        dkim_out_tag(&o, false, true, "x", num, false);
                }
                /* h= may break at colons only; emit it name by name. */
                {
                        dkim_out_str(&o, ";");
                        dkim_out_str(&o, o.col + 4 > 78 ? "\r\n\th=" : " h=");
                        const char *q = hlist;
                        while (*q) {
                                const char *e = strchr(q, ':');
                                size_t l = e ? (size_t) (e - q) : strlen(q);
                                if (q != hlist) {
                                        dkim_out_str(&o, ":");
                                        if (o.col + l > 77)
                                                dkim_out_str(&o, "\r\n\t");
                                }
                                dkim_out_raw(&o, q, l);
                                q += l + (e ? 1 : 0);
                                if (!e)
                                        break;
                        }
                }
                dkim_out_tag(&o, false, true, "bh", bh64, true);
                dkim_out_tag(&o, false, true, "b", pass == 0 ? "" : b64, true);
                if (o.error) {
                        free(o.buf);
                        return o.error;
                }
                if (pass == 0) {
                        size_t n_names = 1;
                        for (const char *c = hlist; *c; c++)
                                n_names += *c == ':';
                        _cleanup_free_ char **names = calloc(n_names, sizeof *names);
                        _cleanup_free_ char *copy = strdup(hlist);
                        if (!names || !copy) {
                                free(o.buf);
                                return -ENOMEM;
                        }
                        size_t k = 0;
                        for (char *save = NULL, *tok = strtok_r(copy, ":", &save); tok && k < n_names;
                             tok = strtok_r(NULL, ":", &save))
                                names[k++] = tok;
                        r = dkim_hash_headers(p->header_canon, fields, n_fields, names, k, o.buf, o.len, digest);
                        free(o.buf);
                        if (r < 0)
                                return r;
                        r = dkim_privkey_sign(p->key, p->algorithm, p->min_rsa_bits, digest, &sig, &sig_len);
                        if (r < 0)
                                return r;
                        b64 = dkim_base64_encode(sig, sig_len);
                        if (!b64)
                                return -ENOMEM;
                } else {
                        dkim_out_str(&o, "\r\n");
                        if (o.error) {
                                free(o.buf);
                                return o.error;
                        }
                        *ret = o.buf;
                }
        }
        return 0;
}
