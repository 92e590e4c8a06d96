/* SPDX-License-Identifier: MIT */
#include "dkim-canon.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

DkimCanon dkim_canon_from_string(const char *s, size_t n) {
        if (n == 6 && memcmp(s, "simple", 6) == 0)
                return DKIM_CANON_SIMPLE;
        if (n == 7 && memcmp(s, "relaxed", 7) == 0)
                return DKIM_CANON_RELAXED;
        return _DKIM_CANON_INVALID;
}

int dkim_canon_pair_from_string(const char *s, size_t n, DkimCanon *ret_header, DkimCanon *ret_body) {
        const char *slash = memchr(s, '/', n);
        size_t hl = slash ? (size_t) (slash - s) : n;
        DkimCanon h = dkim_canon_from_string(s, hl);
        DkimCanon b = slash ? dkim_canon_from_string(slash + 1, n - hl - 1) : DKIM_CANON_SIMPLE;
        if (h < 0 || b < 0)
                return -EINVAL;
        *ret_header = h;
        *ret_body = b;
        return 0;
}

const char *dkim_canon_to_string(DkimCanon c) {
        switch (c) {
        case DKIM_CANON_SIMPLE:
                return "simple";
        case DKIM_CANON_RELAXED:
                return "relaxed";
        default:
                return NULL;
        }
}

static bool is_wsp(char c) {
        return c == ' ' || c == '\t';
}

size_t dkim_canon_header(DkimCanon c, const char *raw, size_t n, bool strip_crlf, char *out) {
        size_t k = 0;

        /* Both forms end the field with exactly one CRLF (or none). */
        if (n >= 2 && raw[n - 2] == '\r' && raw[n - 1] == '\n')
                n -= 2;
        else if (n >= 1 && raw[n - 1] == '\n')
                n -= 1;

        if (c == DKIM_CANON_SIMPLE) {
                memcpy(out, raw, n);
                k = n;
        } else {
                /* Relaxed (§3.4.2): lower-case the name, drop WSP before and
                 * after the colon, unfold, collapse WSP runs to one SP,
                 * drop trailing WSP. */
                size_t i = 0;
                while (i < n && raw[i] != ':') {
                        char ch = raw[i++];
                        if (is_wsp(ch) || ch == '\r' || ch == '\n')
                                continue;
                        out[k++] = ch >= 'A' && ch <= 'Z' ? (char) (ch + 32) : ch;
                }
                if (i < n) {
                        out[k++] = ':';
                        i++;
                }
                bool space = false, started = false;
                for (; i < n; i++) {
                        char ch = raw[i];
                        if (ch == '\r' || ch == '\n')
                                continue;
                        if (is_wsp(ch)) {
                                space = true;
                                continue;
                        }
                        if (space && started)
                                out[k++] = ' ';
                        space = false;
                        started = true;
                        out[k++] = ch;
                }
        }
        if (!strip_crlf) {
                out[k++] = '\r';
                out[k++] = '\n';
        }
        return k;
}

/* The canonicalizer core emits through a sink, so the same state machine
 * feeds a hash (production) or a buffer (tests, fuzzing). */
typedef struct Sink {
        int (*write)(struct Sink *s, const char *p, size_t n);
} Sink;

typedef struct Canon {
        DkimCanon canon;
        uint64_t pending_crlf;  /* empty lines not yet known to be inside the body */
        uint64_t length;        /* canonical bytes produced so far */
        bool cr;                /* a CR was seen and its LF not yet */
        bool line_content;      /* the current line produced content */
        bool wsp;               /* relaxed: a WSP run is pending in this line */
        bool finished;
        char out[4096];
        size_t n_out;
        Sink *sink;
} Canon;

static int canon_flush(Canon *c) {
        if (c->n_out == 0)
                return 0;
        int r = c->sink->write(c->sink, c->out, c->n_out);
        c->n_out = 0;
        return r;
}

static int canon_emit(Canon *c, char ch) {
        c->length++;
        c->out[c->n_out++] = ch;
        if (c->n_out == sizeof c->out)
                return canon_flush(c);
        return 0;
}

static int canon_content(Canon *c, char ch) {
        int r;

        if (!c->line_content) {
                /* Empty lines followed by content are part of the body. */
                for (; c->pending_crlf > 0; c->pending_crlf--) {
                        r = canon_emit(c, '\r');
                        if (r >= 0)
                                r = canon_emit(c, '\n');
                        if (r < 0)
                                return r;
                }
        }
        if (c->wsp) {
                /* Relaxed: a WSP run inside a line, leading ones included,
                 * is one SP; a trailing one never reaches here. */
                c->wsp = false;
                r = canon_emit(c, ' ');
                if (r < 0)
                        return r;
        }
        c->line_content = true;
        return canon_emit(c, ch);
}

static int canon_eol(Canon *c) {
        int r = 0;

        if (c->line_content) {
                r = canon_emit(c, '\r');
                if (r >= 0)
                        r = canon_emit(c, '\n');
        } else
                c->pending_crlf++;
        c->line_content = false;
        c->wsp = false;
        return r;
}

static int canon_feed(Canon *c, const char *p, size_t n) {
        int r;

        for (size_t i = 0; i < n; i++) {
                char ch = p[i];

                if (c->cr) {
                        c->cr = false;
                        if (ch == '\n') {
                                r = canon_eol(c);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        /* A CR not followed by LF is ordinary content. */
                        r = canon_content(c, '\r');
                        if (r < 0)
                                return r;
                }
                if (ch == '\r') {
                        c->cr = true;
                        continue;
                }
                if (ch == '\n') {
                        r = canon_eol(c);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (c->canon == DKIM_CANON_RELAXED && is_wsp(ch)) {
                        c->wsp = true;
                        continue;
                }
                r = canon_content(c, ch);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int canon_finish(Canon *c) {
        int r;

        if (c->finished)
                return 0;
        c->finished = true;
        if (c->cr) {
                c->cr = false;
                r = canon_content(c, '\r');
                if (r < 0)
                        return r;
        }
        /* A last line without line end gets one (§3.4.3, §3.4.4). */
        if (c->line_content) {
                r = canon_eol(c);
                if (r < 0)
                        return r;
        }
        /* An empty body is CRLF in simple, empty in relaxed. */
        if (c->canon == DKIM_CANON_SIMPLE && c->length == 0) {
                r = canon_emit(c, '\r');
                if (r >= 0)
                        r = canon_emit(c, '\n');
                if (r < 0)
                        return r;
        }
        return canon_flush(c);
}

struct DkimBodyHash {
        Sink sink;              /* first: the sink callback finds us by it */
        Canon canon;
        uint64_t limit;
        uint64_t hashed;
        gnutls_hash_hd_t hash;
        bool done;
        uint8_t digest[DKIM_SHA256_LEN];
};

static int hash_write(Sink *s, const char *p, size_t n) {
        DkimBodyHash *b = (DkimBodyHash *) s;
        if (b->hashed >= b->limit)
                return 0;
        if (n > b->limit - b->hashed)
                n = (size_t) (b->limit - b->hashed);
        if (gnutls_hash(b->hash, p, n) < 0)
                return -EIO;
        b->hashed += n;
        return 0;
}

int dkim_body_hash_new(DkimCanon c, uint64_t limit, DkimBodyHash **ret) {
        if (c < 0 || c >= _DKIM_CANON_MAX)
                return -EINVAL;
        DkimBodyHash *b = calloc(1, sizeof *b);
        if (!b)
                return -ENOMEM;
        if (gnutls_hash_init(&b->hash, GNUTLS_DIG_SHA256) < 0) {
                free(b);
                return -EIO;
        }
        b->sink.write = hash_write;
        b->canon.canon = c;
        b->canon.sink = &b->sink;
        b->limit = limit;
        *ret = b;
        return 0;
}

DkimBodyHash *dkim_body_hash_free(DkimBodyHash *b) {
        if (!b)
                return NULL;
        if (b->hash)
                gnutls_hash_deinit(b->hash, NULL);
        free(b);
        return NULL;
}

int dkim_body_hash_feed(DkimBodyHash *b, const void *p, size_t n) {
        if (b->done)
                return -EALREADY;
        return canon_feed(&b->canon, p, n);
}

int dkim_body_hash_finish(DkimBodyHash *b, uint8_t ret[DKIM_SHA256_LEN], uint64_t *ret_length) {
        if (!b->done) {
                int r = canon_finish(&b->canon);
                if (r < 0)
                        return r;
                gnutls_hash_output(b->hash, b->digest);
                b->done = true;
        }
        memcpy(ret, b->digest, DKIM_SHA256_LEN);
        if (ret_length)
                *ret_length = b->canon.length;
        return 0;
}

DkimCanon dkim_body_hash_canon(const DkimBodyHash *b) {
        return b->canon.canon;
}

uint64_t dkim_body_hash_limit(const DkimBodyHash *b) {
        return b->limit;
}

typedef struct BufSink {
        Sink sink;
        char *buf;
        size_t len, cap;
} BufSink;

static int buf_write(Sink *s, const char *p, size_t n) {
        BufSink *b = (BufSink *) s;
        if (b->len + n > b->cap) {
                size_t cap = MAX(b->cap * 2, b->len + n);
                char *nb = realloc(b->buf, cap);
                if (!nb)
                        return -ENOMEM;
                b->buf = nb;
                b->cap = cap;
        }
        memcpy(b->buf + b->len, p, n);
        b->len += n;
        return 0;
}

int dkim_canon_body(DkimCanon c, const void *p, size_t n, char **ret, size_t *ret_len) {
        BufSink s = { .sink.write = buf_write };
        Canon canon = { .canon = c, .sink = &s.sink };
        int r;

        if (c < 0 || c >= _DKIM_CANON_MAX)
                return -EINVAL;
        r = canon_feed(&canon, p, n);
        if (r >= 0)
                r = canon_finish(&canon);
        if (r >= 0)
                r = buf_write(&s.sink, "", 1);  /* NUL, not counted */
        if (r < 0) {
                free(s.buf);
                return r;
        }
        *ret = s.buf;
        *ret_len = s.len - 1;
        return 0;
}
