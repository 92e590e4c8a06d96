/* SPDX-License-Identifier: MIT */
/* The DSN builder of halyard-queued; see queued-bounce.h for the contract.
 *
 * The report is assembled in three steps: the two generated parts (the
 * human explanation and the machine-readable status) are built in memory,
 * their size bounded by the recipient count and the per-field caps; the
 * part of the original to be returned is scanned once (header end, 8-bit
 * octets, the chosen MIME boundary); then everything is written, the
 * original streamed through a small buffer that re-terminates lines with
 * CRLF and breaks lines longer than 998 octets. */

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "macro.h"
#include "queued-bounce.h"
#include "utf8.h"

#define IO_CHUNK          (64u * 1024u)
#define TEXT_WIDTH        76u   /* human part: wrap column */
#define FOLD_WIDTH        78u   /* status fields: fold column */
#define HARD_SPLIT        900u  /* longest unbroken run on a line we generate */
#define ADDRESS_MAX       512u
#define HOSTNAME_MAX      255u
#define BOUNDARY_RANDOM   24u
#define BOUNDARY_TRIES    16u
#define BOUNDARY_PREFIX   "=_halyard_"

static const char *const action_table[_BOUNCE_ACTION_MAX] = {
        [BOUNCE_ACTION_FAILED] = "failed",
        [BOUNCE_ACTION_DELAYED] = "delayed",
        [BOUNCE_ACTION_DELIVERED] = "delivered",
        [BOUNCE_ACTION_RELAYED] = "relayed",
        [BOUNCE_ACTION_EXPANDED] = "expanded",
};

const char *bounce_action_to_string(BounceAction a) {
        if (a < 0 || a >= _BOUNCE_ACTION_MAX)
                return NULL;
        return action_table[a];
}

void bounce_options_init(BounceOptions *o) {
        *o = (BounceOptions) {
                .full_max = BOUNCE_FULL_MAX_DEFAULT,
                .header_max = BOUNCE_HEADER_MAX_DEFAULT,
        };
}

/* ---- decisions ---- */

static bool is_null_sender(const BounceEnvelope *env) {
        return !env->sender || env->sender[0] == '\0';
}

bool bounce_recipient_needed(const BounceEnvelope *env, const BounceRecipient *r) {
        unsigned notify = r->notify;

        /* RFC 5321 §6.1: nothing goes to <>, which is also what keeps a
         * report from ever being answered by another report. */
        if (!env || is_null_sender(env))
                return false;
        if (notify == 0)
                notify = BOUNCE_NOTIFY_FAILURE | BOUNCE_NOTIFY_DELAY;
        if (notify & BOUNCE_NOTIFY_NEVER)
                return false;

        switch (r->action) {
        case BOUNCE_ACTION_FAILED:
                return notify & BOUNCE_NOTIFY_FAILURE;
        case BOUNCE_ACTION_DELAYED:
                return notify & BOUNCE_NOTIFY_DELAY;
        case BOUNCE_ACTION_DELIVERED:
        case BOUNCE_ACTION_RELAYED:
        case BOUNCE_ACTION_EXPANDED:
                return notify & BOUNCE_NOTIFY_SUCCESS;
        default:
                return false;
        }
}

size_t bounce_needed(const BounceEnvelope *env, const BounceRecipient *rcpts, size_t n) {
        size_t k = 0;

        for (size_t i = 0; i < n; i++)
                if (bounce_recipient_needed(env, &rcpts[i]))
                        k++;
        return k;
}

/* ---- a growable text buffer ---- */

typedef struct Buf {
        char *data;
        size_t len, cap;
        int error;
} Buf;

static void buf_done(Buf *b) {
        free(b->data);
        *b = (Buf) {};
}

static void buf_add(Buf *b, const void *p, size_t n) {
        if (b->error || n == 0)
                return;
        if (b->len + n + 1 > b->cap) {
                size_t cap = MAX(b->cap * 2, b->len + n + 1);
                cap = MAX(cap, (size_t) 256);
                char *d = realloc(b->data, cap);
                if (!d) {
                        b->error = -ENOMEM;
                        return;
                }
                b->data = d;
                b->cap = cap;
        }
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = 0;
}

static void buf_puts(Buf *b, const char *s) {
        buf_add(b, s, strlen(s));
}

_printf_(2, 3) static void buf_printf(Buf *b, const char *fmt, ...) {
        va_list ap;
        char small[256];
        int k;

        va_start(ap, fmt);
        k = vsnprintf(small, sizeof small, fmt, ap);
        va_end(ap);
        if (k < 0) {
                b->error = b->error ?: -EINVAL;
                return;
        }
        if ((size_t) k < sizeof small) {
                buf_add(b, small, k);
                return;
        }
        _cleanup_free_ char *big = malloc((size_t) k + 1);
        if (!big) {
                b->error = b->error ?: -ENOMEM;
                return;
        }
        va_start(ap, fmt);
        (void) vsnprintf(big, (size_t) k + 1, fmt, ap);
        va_end(ap);
        buf_add(b, big, k);
}

/* ---- a buffered writer ---- */

typedef struct Out {
        int fd;
        int error;
        size_t n;
        uint64_t total;
        uint8_t *buf;
} Out;

static void out_flush(Out *o) {
        size_t done = 0;

        while (!o->error && done < o->n) {
                ssize_t k = write(o->fd, o->buf + done, o->n - done);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        o->error = negative_errno();
                } else if (k == 0)
                        o->error = -EIO;
                else
                        done += (size_t) k;
        }
        o->n = 0;
}

static void out_add(Out *o, const void *p, size_t n) {
        const uint8_t *s = p;

        while (!o->error && n > 0) {
                size_t k = MIN(n, IO_CHUNK - o->n);
                memcpy(o->buf + o->n, s, k);
                o->n += k;
                o->total += k;
                s += k;
                n -= k;
                if (o->n == IO_CHUNK)
                        out_flush(o);
        }
}

static void out_puts(Out *o, const char *s) {
        out_add(o, s, strlen(s));
}

static inline void out_byte(Out *o, uint8_t c) {
        if (o->n == IO_CHUNK)
                out_flush(o);
        if (o->error)
                return;
        o->buf[o->n++] = c;
        o->total++;
}

/* ---- small helpers ---- */

static int random_fill(const BounceOptions *o, void *p, size_t n) {
        uint8_t *b = p;

        if (o->random)
                return o->random(p, n, o->random_userdata);
        while (n > 0) {
                ssize_t k = getrandom(b, n, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                b += k;
                n -= (size_t) k;
        }
        return 0;
}

/* RFC 5322 date-time, always in UTC so the output does not depend on TZ
 * or locale. */
static void format_date(time_t t, char out[static 64]) {
        static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
        static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
        struct tm tm;

        if (!gmtime_r(&t, &tm) || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 || tm.tm_mon > 11) {
                snprintf(out, 64, "Thu, 01 Jan 1970 00:00:00 +0000");
                return;
        }
        snprintf(out, 64, "%s, %02d %s %04d %02d:%02d:%02d +0000",
                 days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static bool has_non_ascii(const char *s) {
        for (; s && *s; s++)
                if ((uint8_t) *s >= 0x80)
                        return true;
        return false;
}

/* An envelope address as smtpd accepted it: printable, well-formed UTF-8,
 * no CR/LF or other controls, not absurdly long. */
static bool address_ok(const char *a) {
        size_t n;

        if (!a)
                return false;
        n = strlen(a);
        if (n == 0 || n > ADDRESS_MAX || !utf8_valid(a, n))
                return false;
        for (size_t i = 0; i < n; i++) {
                uint8_t c = a[i];
                if (c < 0x20 || c == 0x7f)
                        return false;
        }
        return true;
}

/* A host name (or address literal) for "dns;" fields: LDH, dots,
 * and the characters of [IPv6:...] literals. */
static bool hostname_ok(const char *h) {
        size_t n;

        if (!h)
                return false;
        n = strlen(h);
        if (n == 0 || n > HOSTNAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = h[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      strchr("-._:[]", c)))
                        return false;
        }
        return true;
}

/* An atom for address and diagnostic types ("rfc822", "utf-8", "smtp"). */
static bool type_ok(const char *t) {
        size_t n;

        if (!t)
                return false;
        n = strlen(t);
        if (n == 0 || n > 32)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = t[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
                        return false;
        }
        return true;
}

static bool queue_id_ok(const char *q) {
        size_t n = strlen(q);

        if (n == 0 || n > 64)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = q[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '_' || c == '.'))
                        return false;
        }
        return true;
}

/* "class.subject.detail" of RFC 3463: class 2, 4 or 5, then 1-3 digits
 * twice, without leading zeros beyond "0". */
static bool status_ok(const char *s) {
        if (!s || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
                return false;
        s += 2;
        for (int part = 0; part < 2; part++) {
                size_t k = 0;
                while (s[k] >= '0' && s[k] <= '9')
                        k++;
                if (k == 0 || k > 3 || (k > 1 && s[0] == '0'))
                        return false;
                s += k;
                if (part == 0) {
                        if (*s != '.')
                                return false;
                        s++;
                }
        }
        return *s == '\0';
}

static const char *status_default(BounceAction a) {
        switch (a) {
        case BOUNCE_ACTION_FAILED:
                return "5.0.0";
        case BOUNCE_ACTION_DELAYED:
                return "4.0.0";
        default:
                return "2.0.0";
        }
}

/* Untrusted text (peer replies, ENVID, ORCPT) made safe for one header-like
 * line: controls (CR, LF, TAB, NUL, DEL, ...) become spaces, runs of spaces
 * collapse, the ends are trimmed; non-ASCII is kept as UTF-8 when utf8 is
 * set and well-formed, else each character becomes '?'. At most max
 * octets are kept (on a character boundary), then "...". */
static char *sanitize(const char *s, size_t max, bool utf8) {
        size_t n = s ? strlen(s) : 0, o = 0;
        bool space = true, truncated = false;
        char *r = malloc(MIN(n, max) + 4);

        if (!r)
                return NULL;
        for (size_t i = 0; i < n;) {
                uint8_t c = s[i];
                size_t k = 1;
                char repl[4];
                size_t rl;

                if (c < 0x20 || c == 0x7f || c == ' ') {
                        i++;
                        if (!space && o < max) {
                                r[o++] = ' ';
                                space = true;
                        }
                        continue;
                }
                if (c < 0x80) {
                        repl[0] = c;
                        rl = 1;
                } else {
                        k = utf8_sequence_len(s + i, n - i);
                        if (k == 0) {
                                k = 1;
                                repl[0] = '?';
                                rl = 1;
                        } else if (utf8) {
                                memcpy(repl, s + i, k);
                                rl = k;
                        } else {
                                repl[0] = '?';
                                rl = 1;
                        }
                }
                if (o + rl > max) {
                        truncated = true;
                        break;
                }
                memcpy(r + o, repl, rl);
                o += rl;
                i += k;
                space = false;
        }
        while (o > 0 && r[o - 1] == ' ')
                o--;
        if (truncated) {
                memcpy(r + o, "...", 3);
                o += 3;
        }
        r[o] = 0;
        return r;
}

/* RFC 6533 utf-8-addr-xtext: the 7-bit form of a "utf-8" address for a
 * message/delivery-status (non-global) report. QCHARs stay, everything
 * else becomes \x{HEX}. Input must be valid UTF-8. */
static void xtext_utf8_addr(Buf *b, const char *a) {
        size_t n = strlen(a);

        for (size_t i = 0; i < n;) {
                uint8_t c = a[i];
                if (c > 0x20 && c < 0x7f && c != '+' && c != '=' && c != '\\') {
                        buf_add(b, &a[i], 1);
                        i++;
                        continue;
                }
                size_t k = c < 0x80 ? 1 : utf8_sequence_len(a + i, n - i);
                uint32_t cp;
                if (k == 0) {
                        k = 1;
                        cp = 0xfffd;
                } else if (k == 1)
                        cp = c;
                else {
                        cp = c & (0xff >> (k + 1));
                        for (size_t j = 1; j < k; j++)
                                cp = (cp << 6) | ((uint8_t) a[i + j] & 0x3f);
                }
                buf_printf(b, "\\x{%" PRIX32 "}", cp);
                i += k;
        }
}

/* Start of the character that contains s[i] (back over continuation octets). */
static size_t utf8_floor(const char *s, size_t i) {
        while (i > 0 && ((uint8_t) s[i] & 0xc0) == 0x80)
                i--;
        return i;
}

/* Appends "name: value" folded (RFC 5322 §2.2.3): lines are broken before
 * a space once they pass FOLD_WIDTH, and a run without spaces longer than
 * HARD_SPLIT is split with CRLF SP (which adds a space on unfolding; only
 * pathological input gets there). Value must not contain CR/LF. */
static void add_field(Buf *b, const char *name, const char *value) {
        size_t col = strlen(name) + 1, n = strlen(value);

        buf_puts(b, name);
        buf_puts(b, ":");
        for (size_t i = 0; i < n;) {
                size_t j = i, w;

                while (j < n && value[j] == ' ')
                        j++;
                w = j;
                while (w < n && value[w] != ' ')
                        w++;
                /* value[i..j) spaces (normally one), value[j..w) a word */
                if (j == w) {
                        i = w;
                        continue;
                }
                if (col + 1 + (w - j) > FOLD_WIDTH && col > 1 + strlen(name)) {
                        buf_puts(b, "\r\n");
                        col = 0;
                }
                buf_puts(b, " ");
                col++;
                while (w - j > 0) {
                        size_t room = HARD_SPLIT - MIN(col, HARD_SPLIT - 1), k = w - j;
                        if (k > room) {
                                k = utf8_floor(value, j + room) - j;
                                if (k == 0)
                                        k = room;
                        }
                        buf_add(b, value + j, k);
                        col += k;
                        j += k;
                        if (j < w) {
                                buf_puts(b, "\r\n ");
                                col = 1;
                        }
                }
                i = w;
        }
        buf_puts(b, "\r\n");
}

_printf_(3, 4) static void add_fieldf(Buf *b, const char *name, const char *fmt, ...) {
        _cleanup_free_ char *v = NULL;
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vasprintf(&v, fmt, ap);
        va_end(ap);
        if (k < 0) {
                v = NULL;
                b->error = b->error ?: -ENOMEM;
                return;
        }
        add_field(b, name, v);
}

/* Appends text word-wrapped at TEXT_WIDTH, every line starting with
 * indent spaces; words longer than the line are split (on character
 * boundaries). Text must not contain CR/LF. */
static void add_wrapped(Buf *b, const char *text, size_t indent) {
        size_t n = strlen(text), col = 0;
        char pad[16];

        indent = MIN(indent, sizeof pad - 1);
        memset(pad, ' ', indent);
        pad[indent] = 0;

        for (size_t i = 0; i < n;) {
                size_t j = i, w;

                while (j < n && text[j] == ' ')
                        j++;
                w = j;
                while (w < n && text[w] != ' ')
                        w++;
                if (j == w)
                        break;
                while (j < w) {
                        size_t k = w - j, width = TEXT_WIDTH - indent;
                        if (col > 0 && col + 1 + k > TEXT_WIDTH) {
                                buf_puts(b, "\r\n");
                                col = 0;
                        }
                        if (col == 0) {
                                buf_puts(b, pad);
                                col = indent;
                        } else {
                                buf_puts(b, " ");
                                col++;
                        }
                        if (k > width) {
                                k = utf8_floor(text, j + width) - j;
                                if (k == 0)
                                        k = width;
                        }
                        buf_add(b, text + j, k);
                        col += k;
                        j += k;
                        if (j < w) {
                                buf_puts(b, "\r\n");
                                col = 0;
                        }
                }
                i = w;
        }
        if (col > 0)
                buf_puts(b, "\r\n");
}

/* ---- reading the original ---- */

/* Line ends are CRLF, LF or a lone CR, as copy_original() sees them. */
typedef struct HeaderScan {
        uint64_t pos;           /* offset of the next octet */
        uint64_t line_start;
        uint64_t last_line_end; /* just past the last complete line */
        size_t line_len;
        bool pending_cr;
        bool found;
        uint64_t end;           /* valid when found */
} HeaderScan;

static void header_scan(HeaderScan *h, const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n && !h->found; i++, h->pos++) {
                uint8_t c = p[i];

                if (h->pending_cr) {
                        h->pending_cr = false;
                        if (c == '\n') {
                                h->line_start = h->last_line_end = h->pos + 1;
                                continue;
                        }
                }
                if (c == '\r' || c == '\n') {
                        if (h->line_len == 0) {
                                h->found = true;
                                h->end = h->line_start;
                                break;
                        }
                        h->line_len = 0;
                        h->line_start = h->last_line_end = h->pos + 1;
                        h->pending_cr = c == '\r';
                } else
                        h->line_len++;
        }
}

size_t bounce_header_end(const uint8_t *p, size_t n, bool *ret_complete) {
        HeaderScan h = {};

        header_scan(&h, p, n);
        if (ret_complete)
                *ret_complete = h.found;
        return h.found ? (size_t) h.end : n;
}

static int pread_full(int fd, uint8_t *buf, size_t n, uint64_t off, size_t *ret) {
        size_t done = 0;

        while (done < n) {
                ssize_t k = pread(fd, buf + done, n - done, (off_t) (off + done));
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (k == 0)
                        break;
                done += (size_t) k;
        }
        *ret = done;
        return 0;
}

typedef struct Original {
        uint64_t size;        /* of the whole original */
        uint64_t header_end;  /* octets of header returned (complete lines) */
        bool header_truncated;
        uint64_t copy_len;    /* octets of the original that go into the report */
        bool eightbit;        /* within copy_len */
} Original;

static int original_measure(int fd, size_t header_max, Original *ret) {
        _cleanup_free_ uint8_t *buf = NULL;
        HeaderScan h = {};
        struct stat st;
        uint64_t limit;
        int r;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -ESPIPE;
        buf = malloc(IO_CHUNK);
        if (!buf)
                return -ENOMEM;

        *ret = (Original) { .size = (uint64_t) st.st_size };
        limit = MIN(ret->size, (uint64_t) header_max);
        while (!h.found && h.pos < limit) {
                size_t k;
                r = pread_full(fd, buf, MIN((uint64_t) IO_CHUNK, limit - h.pos), h.pos, &k);
                if (r < 0)
                        return r;
                if (k == 0)
                        return -EIO; /* shrank under us */
                header_scan(&h, buf, k);
        }
        if (h.found)
                ret->header_end = h.end;
        else if (ret->size <= header_max)
                ret->header_end = ret->size; /* all header, no body */
        else {
                ret->header_end = h.last_line_end;
                ret->header_truncated = true;
        }
        return 0;
}

/* One pass over original[0..copy_len): notes 8-bit octets and whether
 * "--" boundary occurs anywhere (line breaks we insert are CR, LF and SP,
 * none of them in a boundary, so no new occurrence can appear later). */
static int original_scan(int fd, Original *orig, const char *boundary, bool *ret_found) {
        _cleanup_free_ uint8_t *buf = NULL;
        char pat[128];
        size_t plen, keep = 0;
        uint64_t off = 0;
        int r;

        plen = (size_t) snprintf(pat, sizeof pat, "--%s", boundary);
        buf = malloc(IO_CHUNK + sizeof pat);
        if (!buf)
                return -ENOMEM;
        *ret_found = false;
        while (off < orig->copy_len) {
                size_t k;
                r = pread_full(fd, buf + keep, MIN((uint64_t) IO_CHUNK, orig->copy_len - off), off, &k);
                if (r < 0)
                        return r;
                if (k == 0)
                        return -EIO;
                for (size_t i = keep; i < keep + k && !orig->eightbit; i++)
                        if (buf[i] >= 0x80)
                                orig->eightbit = true;
                if (memmem(buf, keep + k, pat, plen)) {
                        *ret_found = true;
                        return 0;
                }
                off += k;
                /* keep the tail, an occurrence may span two reads */
                size_t total = keep + k, tail = MIN(total, plen - 1);
                memmove(buf, buf + total - tail, tail);
                keep = tail;
        }
        return 0;
}

/* Copies original[0..len) re-terminating every line with CRLF (lone CR
 * and LF included) and breaking lines at BOUNCE_LINE_MAX octets; in the
 * header a break continues with a space (folding), in the body it does
 * not. Ends with a line end. */
static int copy_original(int fd, uint64_t len, Out *out) {
        _cleanup_free_ uint8_t *buf = NULL;
        bool pending_cr = false, in_header = true;
        size_t line = 0;
        uint64_t off = 0;
        int r;

        buf = malloc(IO_CHUNK);
        if (!buf)
                return -ENOMEM;
        while (off < len && !out->error) {
                size_t k;
                r = pread_full(fd, buf, MIN((uint64_t) IO_CHUNK, len - off), off, &k);
                if (r < 0)
                        return r;
                if (k == 0)
                        return -EIO;
                for (size_t i = 0; i < k; i++) {
                        uint8_t c = buf[i];

                        if (pending_cr) {
                                pending_cr = false;
                                if (c == '\n')
                                        continue;
                        }
                        if (c == '\r' || c == '\n') {
                                if (line == 0)
                                        in_header = false;
                                out_add(out, "\r\n", 2);
                                line = 0;
                                pending_cr = c == '\r';
                                continue;
                        }
                        if (line >= BOUNCE_LINE_MAX) {
                                if (in_header) {
                                        out_add(out, "\r\n ", 3);
                                        line = 1;
                                } else {
                                        out_add(out, "\r\n", 2);
                                        line = 0;
                                }
                        }
                        out_byte(out, c);
                        line++;
                }
                off += k;
        }
        if (line > 0)
                out_add(out, "\r\n", 2);
        return out->error;
}

/* ---- the generated parts ---- */

typedef struct Report {
        const BounceEnvelope *env;
        const BounceRecipient *rcpts;
        size_t n_rcpts;
        bool utf8;          /* RFC 6533 global report */
        bool any_failed, any_delayed, any_success;
        time_t now;
} Report;

static const char *outcome_phrase(BounceAction a) {
        switch (a) {
        case BOUNCE_ACTION_FAILED:
                return "delivery failed permanently.";
        case BOUNCE_ACTION_DELAYED:
                return "delivery is delayed; it is still being retried.";
        case BOUNCE_ACTION_DELIVERED:
                return "delivered.";
        case BOUNCE_ACTION_RELAYED:
                return "relayed to a system that does not send delivery reports; this is the last report you will get for it.";
        case BOUNCE_ACTION_EXPANDED:
                return "delivered to a mailing list or alias, which passed it on to its members.";
        default:
                return "unknown outcome.";
        }
}

/* Address display form for the human part. */
static char *display_address(const Report *rep, const char *a) {
        return sanitize(a, ADDRESS_MAX, rep->utf8);
}

static int build_human(const Report *rep, const Original *orig, BounceReturned returned,
                       uint64_t full_max, Buf *b) {
        const BounceEnvelope *env = rep->env;
        char date[64];

        buf_printf(b, "This is the mail delivery system at %s.\r\n\r\n", env->reporting_mta);
        if (rep->any_failed)
                add_wrapped(b, "Your message could not be delivered to one or more of its recipients. "
                               "This is a permanent error; the reasons are listed below.", 0);
        if (rep->any_delayed) {
                if (rep->any_failed)
                        buf_puts(b, "\r\n");
                add_wrapped(b, "Your message has not been delivered yet to one or more of its recipients. "
                               "It stays in the queue and delivery will be retried; you do not need to "
                               "send it again.", 0);
        }
        if (rep->any_success) {
                if (rep->any_failed || rep->any_delayed)
                        buf_puts(b, "\r\n");
                add_wrapped(b, "Your message was delivered to the recipients listed below for which "
                               "you asked to be told of success.", 0);
        }
        buf_puts(b, "\r\n");
        if (env->arrival_date > 0) {
                _cleanup_(buf_done) Buf t = {};
                format_date(env->arrival_date, date);
                buf_printf(&t, "The message was received on %s", date);
                if (env->queue_id)
                        buf_printf(&t, " (queue id %s)", env->queue_id);
                buf_puts(&t, ".");
                if (t.error)
                        return t.error;
                add_wrapped(b, t.data, 0);
                buf_done(&t);
                buf_puts(b, "\r\n");
        }

        for (size_t i = 0; i < rep->n_rcpts; i++) {
                const BounceRecipient *r = &rep->rcpts[i];
                _cleanup_free_ char *fr = NULL, *orcpt = NULL, *diag = NULL;
                _cleanup_(buf_done) Buf t = {};

                if (!bounce_recipient_needed(env, r))
                        continue;
                fr = display_address(rep, r->final_recipient);
                if (!fr)
                        return -ENOMEM;
                buf_printf(&t, "<%s>: %s", fr, outcome_phrase(r->action));
                if (r->orcpt) {
                        orcpt = sanitize(r->orcpt, BOUNCE_ORCPT_MAX, rep->utf8);
                        if (!orcpt)
                                return -ENOMEM;
                        if (!streq_ptr(orcpt, fr) && orcpt[0])
                                buf_printf(&t, " (originally addressed to <%s>)", orcpt);
                }
                if (t.error)
                        return t.error;
                add_wrapped(b, t.data, 0);
                buf_done(&t);

                buf_printf(b, "    Status: %s\r\n", r->status ?: status_default(r->action));
                if (r->remote_mta)
                        buf_printf(b, "    Remote server: %s\r\n", r->remote_mta);
                if (r->diagnostic) {
                        diag = sanitize(r->diagnostic, BOUNCE_DIAGNOSTIC_MAX, rep->utf8);
                        if (!diag)
                                return -ENOMEM;
                        if (diag[0]) {
                                buf_puts(b, r->remote_mta ? "    The remote server said:\r\n"
                                                          : "    Reason:\r\n");
                                add_wrapped(b, diag, 8);
                        }
                }
                if (r->last_attempt > 0) {
                        format_date(r->last_attempt, date);
                        buf_printf(b, "    Last attempt: %s\r\n", date);
                }
                if (r->action == BOUNCE_ACTION_DELAYED && r->will_retry_until > 0) {
                        format_date(r->will_retry_until, date);
                        buf_printf(b, "    Will be retried until: %s\r\n", date);
                }
                buf_puts(b, "\r\n");
        }

        if (returned == BOUNCE_RETURNED_HEADERS && rep->any_failed && env->ret != BOUNCE_RET_HDRS &&
            orig->size > full_max) {
                _cleanup_(buf_done) Buf t = {};
                buf_printf(&t, "The original message was %" PRIu64 " octets long, more than the "
                           "%" PRIu64 " octets returned in full; only its header is attached.",
                           orig->size, full_max);
                if (t.error)
                        return t.error;
                add_wrapped(b, t.data, 0);
                buf_done(&t);
                buf_puts(b, "\r\n");
        }
        if (returned == BOUNCE_RETURNED_HEADERS && orig->header_truncated) {
                add_wrapped(b, "The original message's header was too long to be returned whole; "
                               "it is cut short.", 0);
                buf_puts(b, "\r\n");
        }
        return b->error;
}

/* "type; address" for the status part: raw in a global report, the
 * utf-8-addr-xtext form for non-ASCII in a plain one. */
static void add_address_field(Buf *b, const Report *rep, const char *name, const char *type,
                              const char *addr) {
        Buf v = {};
        bool non_ascii = has_non_ascii(addr);

        bool utf8_type;

        if (non_ascii || !type)
                type = non_ascii ? "utf-8" : "rfc822";
        utf8_type = strcasecmp(type, "utf-8") == 0;
        buf_printf(&v, "%s; ", type);
        /* RFC 6533 §3: a "utf-8" address in a plain report is in its 7-bit
         * utf-8-addr-xtext form; a global report carries it as it is. */
        if (utf8_type && !rep->utf8)
                xtext_utf8_addr(&v, addr);
        else
                buf_puts(&v, addr);
        if (v.error)
                b->error = b->error ?: v.error;
        else
                add_field(b, name, v.data);
        buf_done(&v);
}

static int build_status(const Report *rep, Buf *b) {
        const BounceEnvelope *env = rep->env;
        char date[64];

        add_fieldf(b, "Reporting-MTA", "dns; %s", env->reporting_mta);
        if (env->queue_id)
                add_field(b, "X-Halyard-Queue-ID", env->queue_id);
        add_address_field(b, rep, "X-Halyard-Sender", NULL, env->sender);
        if (env->envid) {
                _cleanup_free_ char *e = sanitize(env->envid, BOUNCE_ENVID_MAX, false);
                if (!e)
                        return -ENOMEM;
                if (e[0])
                        add_field(b, "Original-Envelope-Id", e);
        }
        if (env->received_from_mta) {
                add_fieldf(b, "Received-From-MTA", "dns; %s", env->received_from_mta);
        }
        if (env->arrival_date > 0) {
                format_date(env->arrival_date, date);
                add_field(b, "Arrival-Date", date);
        }

        for (size_t i = 0; i < rep->n_rcpts; i++) {
                const BounceRecipient *r = &rep->rcpts[i];

                if (!bounce_recipient_needed(env, r))
                        continue;
                buf_puts(b, "\r\n");
                /* RFC 3461 §6.3: Original-Recipient exactly when ORCPT was given. */
                if (r->orcpt_type && r->orcpt) {
                        _cleanup_free_ char *o = sanitize(r->orcpt, BOUNCE_ORCPT_MAX, true);
                        if (!o)
                                return -ENOMEM;
                        if (o[0])
                                add_address_field(b, rep, "Original-Recipient", r->orcpt_type, o);
                }
                add_address_field(b, rep, "Final-Recipient", NULL, r->final_recipient);
                add_field(b, "Action", bounce_action_to_string(r->action));
                add_field(b, "Status", r->status ?: status_default(r->action));
                if (r->remote_mta) {
                        add_fieldf(b, "Remote-MTA", "dns; %s", r->remote_mta);
                }
                if (r->diagnostic) {
                        _cleanup_free_ char *d = sanitize(r->diagnostic, BOUNCE_DIAGNOSTIC_MAX, rep->utf8);
                        if (!d)
                                return -ENOMEM;
                        if (d[0])
                                add_fieldf(b, "Diagnostic-Code", "%s; %s", r->diagnostic_type ?: "smtp", d);
                }
                if (r->last_attempt > 0) {
                        format_date(r->last_attempt, date);
                        add_field(b, "Last-Attempt-Date", date);
                }
                if (r->action == BOUNCE_ACTION_DELAYED && r->will_retry_until > 0) {
                        format_date(r->will_retry_until, date);
                        add_field(b, "Will-Retry-Until", date);
                }
        }
        return b->error;
}

static int validate(const BounceEnvelope *env, const BounceRecipient *rcpts, size_t n) {
        if (!env || (n > 0 && !rcpts))
                return -EINVAL;
        if (!hostname_ok(env->reporting_mta))
                return -EINVAL;
        if (env->received_from_mta && !hostname_ok(env->received_from_mta))
                return -EINVAL;
        if (env->queue_id && !queue_id_ok(env->queue_id))
                return -EINVAL;
        if (env->ret < 0 || env->ret >= _BOUNCE_RET_MAX)
                return -EINVAL;
        if (!is_null_sender(env) && !address_ok(env->sender))
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                const BounceRecipient *r = &rcpts[i];

                if (!bounce_action_to_string(r->action))
                        return -EINVAL;
                if (!address_ok(r->final_recipient))
                        return -EINVAL;
                if (r->status && !status_ok(r->status))
                        return -EINVAL;
                if (r->remote_mta && !hostname_ok(r->remote_mta))
                        return -EINVAL;
                if (r->orcpt_type && !type_ok(r->orcpt_type))
                        return -EINVAL;
                if (r->diagnostic_type && !type_ok(r->diagnostic_type))
                        return -EINVAL;
        }
        return 0;
}

static int make_boundary(const BounceOptions *o, char out[static 64]) {
        static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        uint8_t rnd[BOUNDARY_RANDOM];
        size_t p;
        int r;

        r = random_fill(o, rnd, sizeof rnd);
        if (r < 0)
                return r;
        p = (size_t) snprintf(out, 64, "%s", BOUNDARY_PREFIX);
        for (size_t i = 0; i < sizeof rnd; i++)
                out[p++] = alphabet[rnd[i] % (sizeof alphabet - 1)];
        out[p] = 0;
        return 0;
}

static bool text_has(const Buf *b, const char *boundary) {
        char pat[128];
        size_t plen = (size_t) snprintf(pat, sizeof pat, "--%s", boundary);

        return b->data && memmem(b->data, b->len, pat, plen);
}

static bool text_is_8bit(const Buf *b) {
        for (size_t i = 0; i < b->len; i++)
                if ((uint8_t) b->data[i] >= 0x80)
                        return true;
        return false;
}

static void out_fold_header(Out *out, const char *name, const char *value) {
        Buf b = {};

        add_field(&b, name, value);
        if (b.error)
                out->error = out->error ?: b.error;
        else
                out_add(out, b.data, b.len);
        buf_done(&b);
}

int bounce_write(const BounceEnvelope *env, const BounceRecipient *rcpts, size_t n_rcpts,
                 int original_fd, const BounceOptions *opts, int out_fd, BounceResult *ret) {
        _cleanup_(buf_done) Buf human = {}, status = {};
        _cleanup_free_ uint8_t *obuf = NULL;
        BounceOptions defaults;
        Report rep = {};
        Original orig = {};
        BounceReturned returned = BOUNCE_RETURNED_NONE;
        char boundary[64], date[64], msgid_rnd[8];
        bool eightbit, found = true;
        const char *subject;
        size_t n_reported;
        Out out = {};
        int r;

        if (!opts) {
                bounce_options_init(&defaults);
                opts = &defaults;
        }
        if (out_fd < 0)
                return -EBADF;
        r = validate(env, rcpts, n_rcpts);
        if (r < 0)
                return r;
        n_reported = bounce_needed(env, rcpts, n_rcpts);
        if (n_reported == 0)
                return -ENODATA;

        rep = (Report) {
                .env = env,
                .rcpts = rcpts,
                .n_rcpts = n_rcpts,
                .utf8 = env->smtputf8 || has_non_ascii(env->sender),
                .now = opts->now > 0 ? opts->now : time(NULL),
        };
        for (size_t i = 0; i < n_rcpts; i++) {
                if (!bounce_recipient_needed(env, &rcpts[i]))
                        continue;
                if (has_non_ascii(rcpts[i].final_recipient))
                        rep.utf8 = true;
                switch (rcpts[i].action) {
                case BOUNCE_ACTION_FAILED:
                        rep.any_failed = true;
                        break;
                case BOUNCE_ACTION_DELAYED:
                        rep.any_delayed = true;
                        break;
                default:
                        rep.any_success = true;
                }
        }

        /* What of the original goes back (RFC 3461 §4.3). */
        if (original_fd >= 0) {
                r = original_measure(original_fd, opts->header_max, &orig);
                if (r < 0)
                        return r;
                if (rep.any_failed && env->ret != BOUNCE_RET_HDRS && orig.size <= opts->full_max) {
                        returned = BOUNCE_RETURNED_FULL;
                        orig.copy_len = orig.size;
                } else {
                        returned = BOUNCE_RETURNED_HEADERS;
                        orig.copy_len = orig.header_end;
                }
        }

        r = build_human(&rep, &orig, returned, opts->full_max, &human);
        if (r < 0)
                return r;
        r = build_status(&rep, &status);
        if (r < 0)
                return r;

        /* A boundary that occurs nowhere in what it encloses. */
        for (unsigned try = 0; found; try++) {
                if (try >= BOUNDARY_TRIES)
                        return -EEXIST;
                r = make_boundary(opts, boundary);
                if (r < 0)
                        return r;
                found = text_has(&human, boundary) || text_has(&status, boundary);
                if (!found && returned != BOUNCE_RETURNED_NONE) {
                        r = original_scan(original_fd, &orig, boundary, &found);
                        if (r < 0)
                                return r;
                }
        }
        eightbit = text_is_8bit(&human) || text_is_8bit(&status) || orig.eightbit;

        obuf = malloc(IO_CHUNK);
        if (!obuf)
                return -ENOMEM;
        out = (Out) { .fd = out_fd, .buf = obuf };

        if (rep.any_failed)
                subject = "Undelivered Mail Returned to Sender";
        else if (rep.any_delayed)
                subject = "Delayed Mail (still being retried)";
        else
                subject = "Successful Mail Delivery Report";

        /* The header of the report. */
        out_puts(&out, "From: \"Mail Delivery System\" <MAILER-DAEMON@");
        out_puts(&out, env->reporting_mta);
        out_puts(&out, ">\r\n");
        out_puts(&out, "To: <");
        out_puts(&out, env->sender);
        out_puts(&out, ">\r\n");
        out_puts(&out, "Subject: ");
        out_puts(&out, subject);
        out_puts(&out, "\r\n");
        format_date(rep.now, date);
        out_fold_header(&out, "Date", date);
        r = random_fill(opts, msgid_rnd, sizeof msgid_rnd);
        if (r < 0)
                return r;
        {
                _cleanup_(buf_done) Buf id = {};
                buf_printf(&id, "<%" PRIdMAX ".", (intmax_t) rep.now);
                for (size_t i = 0; i < sizeof msgid_rnd; i++)
                        buf_printf(&id, "%02x", (uint8_t) msgid_rnd[i]);
                buf_printf(&id, ".dsn@%s>", env->reporting_mta);
                if (id.error)
                        return id.error;
                out_fold_header(&out, "Message-ID", id.data);
                buf_done(&id);
        }
        out_puts(&out, "Auto-Submitted: auto-replied\r\n");
        out_puts(&out, "MIME-Version: 1.0\r\n");
        out_puts(&out, "Content-Type: multipart/report; report-type=");
        out_puts(&out, rep.utf8 ? "global-delivery-status;" : "delivery-status;");
        out_puts(&out, "\r\n\tboundary=\"");
        out_puts(&out, boundary);
        out_puts(&out, "\"\r\n");
        if (eightbit)
                out_puts(&out, "Content-Transfer-Encoding: 8bit\r\n");
        out_puts(&out, "\r\nThis is a MIME-encapsulated message (a delivery status notification).\r\n");

        /* 1: for people. */
        out_puts(&out, "\r\n--");
        out_puts(&out, boundary);
        out_puts(&out, "\r\nContent-Description: Notification\r\n");
        if (text_is_8bit(&human))
                out_puts(&out, "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n");
        else
                out_puts(&out, "Content-Type: text/plain; charset=us-ascii\r\n");
        out_puts(&out, "\r\n");
        out_add(&out, human.data, human.len);

        /* 2: for programs. */
        out_puts(&out, "\r\n--");
        out_puts(&out, boundary);
        out_puts(&out, "\r\nContent-Description: Delivery report\r\n");
        if (rep.utf8)
                out_puts(&out, "Content-Type: message/global-delivery-status\r\n");
        else
                out_puts(&out, "Content-Type: message/delivery-status\r\n");
        if (text_is_8bit(&status))
                out_puts(&out, "Content-Transfer-Encoding: 8bit\r\n");
        out_puts(&out, "\r\n");
        out_add(&out, status.data, status.len);

        /* 3: the original, or its header. */
        if (returned != BOUNCE_RETURNED_NONE) {
                out_puts(&out, "\r\n--");
                out_puts(&out, boundary);
                if (returned == BOUNCE_RETURNED_FULL)
                        out_puts(&out, "\r\nContent-Description: Undelivered message\r\nContent-Type: ");
                else
                        out_puts(&out, "\r\nContent-Description: Message header\r\nContent-Type: ");
                if (rep.utf8)
                        out_puts(&out, returned == BOUNCE_RETURNED_FULL ? "message/global" : "message/global-headers");
                else
                        out_puts(&out, returned == BOUNCE_RETURNED_FULL ? "message/rfc822" : "text/rfc822-headers");
                out_puts(&out, "\r\n");
                if (orig.eightbit)
                        out_puts(&out, "Content-Transfer-Encoding: 8bit\r\n");
                out_puts(&out, "\r\n");
                r = copy_original(original_fd, orig.copy_len, &out);
                if (r < 0)
                        return r;
        }

        out_puts(&out, "\r\n--");
        out_puts(&out, boundary);
        out_puts(&out, "--\r\n");
        out_flush(&out);
        if (out.error)
                return out.error;

        if (ret)
                *ret = (BounceResult) {
                        .mail_from = "",
                        .rcpt_to = env->sender,
                        .smtputf8 = rep.utf8,
                        .eightbit = eightbit,
                        .n_reported = (unsigned) n_reported,
                        .returned = returned,
                        .size = out.total,
                };
        return 0;
}
