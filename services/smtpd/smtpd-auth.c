/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>

#include "smtpd-auth.h"

/* ======================================================================
 * 1. password file
 * ====================================================================== */

typedef struct PasswdEntry {
        char *user;
        char *hash;
        unsigned line;
} PasswdEntry;

struct AuthPasswd {
        PasswdEntry *entries; /* sorted by user */
        size_t n;
        char *dummy; /* hash of the first entry in file order: cost for unknown users */
};

#define PASSWD_MAX_ERRORS 20

typedef struct ParseCtx {
        const char *name;
        AuthPasswdLogFn log;
        void *userdata;
        unsigned n_errors;
} ParseCtx;

_printf_(4, 5) static void diag(ParseCtx *c, AuthLogLevel level, unsigned line, const char *fmt, ...) {
        char text[512], msg[768];
        va_list ap;

        if (level == AUTH_LOG_ERROR) {
                c->n_errors++;
                if (c->n_errors > PASSWD_MAX_ERRORS + 1)
                        return;
        }
        if (!c->log)
                return;
        if (level == AUTH_LOG_ERROR && c->n_errors == PASSWD_MAX_ERRORS + 1) {
                snprintf(msg, sizeof msg, "%s:%u: too many errors, giving up on reporting", c->name, line);
                c->log(level, msg, c->userdata);
                return;
        }
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        snprintf(msg, sizeof msg, "%s:%u: %s", c->name, line, text);
        c->log(level, msg, c->userdata);
}

static bool is_crypt64(char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               ch == '.' || ch == '/';
}

/* s[0..n) is not NUL-terminated: compare within its length only. */
static bool startswith_n(const char *s, size_t n, const char *prefix) {
        size_t l = strlen(prefix);
        return n >= l && memcmp(s, prefix, l) == 0;
}

/* 1: usable, 0: skipped with a warning, -1: error (reported). */
static int check_hash(ParseCtx *c, unsigned line, const char *h, size_t n) {
        static const char *const good[] = { "$y$", "$gy$", "$7$", "$6$", "$5$", "$2b$", "$2y$" };

        if (n == 0) {
                diag(c, AUTH_LOG_ERROR, line, "empty password hash");
                return -1;
        }
        for (size_t i = 0; i < n; i++)
                if (h[i] <= ' ' || h[i] >= 0x7f || h[i] == ':') {
                        diag(c, AUTH_LOG_ERROR, line, "invalid character in password hash");
                        return -1;
                }
        if (h[0] == '!' || h[0] == '*') {
                diag(c, AUTH_LOG_WARNING, line, "locked entry, skipped");
                return 0;
        }
        if (startswith_n(h, n, "$1$")) {
                diag(c, AUTH_LOG_WARNING, line, "MD5 ($1$) hash refused as too weak, entry skipped");
                return 0;
        }
        if (n == 13) {
                bool des = true;
                for (size_t i = 0; i < n; i++)
                        des = des && is_crypt64(h[i]);
                if (des) {
                        diag(c, AUTH_LOG_WARNING, line, "DES hash refused as too weak, entry skipped");
                        return 0;
                }
        }
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                if (n > strlen(good[i]) + 1 && startswith_n(h, n, good[i]))
                        return 1;
        }
        diag(c, AUTH_LOG_ERROR, line, "unknown or unsupported password hash scheme");
        return -1;
}

static int entry_cmp(const void *a, const void *b) {
        const PasswdEntry *x = a, *y = b;
        int r = strcmp(x->user, y->user);
        if (r != 0)
                return r;
        return x->line < y->line ? -1 : x->line > y->line;
}

static void entries_free(PasswdEntry *e, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(e[i].user);
                if (e[i].hash) {
                        explicit_bzero(e[i].hash, strlen(e[i].hash));
                        free(e[i].hash);
                }
        }
        free(e);
}

AuthPasswd *auth_passwd_free(AuthPasswd *p) {
        if (!p)
                return NULL;
        entries_free(p->entries, p->n);
        if (p->dummy) {
                explicit_bzero(p->dummy, strlen(p->dummy));
                free(p->dummy);
        }
        free(p);
        return NULL;
}

int auth_passwd_parse(const char *name, const char *buf, size_t size,
                      AuthPasswdLogFn log, void *userdata, AuthPasswd **ret) {
        ParseCtx c = { .name = name ? name : "passwd", .log = log, .userdata = userdata };
        _cleanup_(auth_passwd_freep) AuthPasswd *p = NULL;
        size_t cap = 0;
        unsigned line = 0;
        bool too_many = false;

        if ((!buf && size > 0) || !ret)
                return -EINVAL;
        if (size > AUTH_PASSWD_SIZE_MAX) {
                diag(&c, AUTH_LOG_ERROR, 0, "file larger than %u bytes", AUTH_PASSWD_SIZE_MAX);
                return -EFBIG;
        }
        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;

        for (size_t pos = 0; pos < size;) {
                const char *l = buf + pos, *nl = memchr(l, '\n', size - pos);
                size_t n = nl ? (size_t) (nl - l) : size - pos;
                const char *colon;
                size_t ulen;
                int r;

                pos += n + (nl ? 1 : 0);
                line++;
                if (n > 0 && l[n - 1] == '\r')
                        n--;
                if (n > AUTH_PASSWD_LINE_MAX) {
                        diag(&c, AUTH_LOG_ERROR, line, "line longer than %d bytes", AUTH_PASSWD_LINE_MAX);
                        continue;
                }
                if (memchr(l, 0, n)) {
                        diag(&c, AUTH_LOG_ERROR, line, "NUL byte in line");
                        continue;
                }
                if (n > 0 && l[0] == '#')
                        continue;
                size_t blank = 0;
                while (blank < n && (l[blank] == ' ' || l[blank] == '\t'))
                        blank++;
                if (blank == n)
                        continue;
                colon = memchr(l, ':', n);
                if (!colon) {
                        diag(&c, AUTH_LOG_ERROR, line, "expected user:hash");
                        continue;
                }
                ulen = (size_t) (colon - l);
                if (ulen == 0 || ulen > AUTH_USER_MAX) {
                        diag(&c, AUTH_LOG_ERROR, line, "user name empty or longer than %d bytes", AUTH_USER_MAX);
                        continue;
                }
                bool bad = false;
                for (size_t i = 0; i < ulen; i++)
                        bad = bad || (unsigned char) l[i] < 0x20 || l[i] == 0x7f;
                if (bad) {
                        diag(&c, AUTH_LOG_ERROR, line, "control character in user name");
                        continue;
                }
                r = check_hash(&c, line, colon + 1, n - ulen - 1);
                if (r <= 0)
                        continue;
                if (p->n >= AUTH_PASSWD_USERS_MAX) {
                        if (!too_many)
                                diag(&c, AUTH_LOG_ERROR, line, "more than %d users", AUTH_PASSWD_USERS_MAX);
                        too_many = true;
                        continue;
                }
                if (p->n == cap) {
                        size_t ncap = cap ? cap * 2 : 16;
                        PasswdEntry *ne = realloc(p->entries, ncap * sizeof *ne);
                        if (!ne)
                                return -ENOMEM;
                        p->entries = ne;
                        cap = ncap;
                }
                PasswdEntry *e = &p->entries[p->n];
                *e = (PasswdEntry) { .line = line };
                e->user = strndup(l, ulen);
                e->hash = strndup(colon + 1, n - ulen - 1);
                p->n++;
                if (!e->user || !e->hash)
                        return -ENOMEM;
                if (!p->dummy) {
                        p->dummy = strdup(e->hash);
                        if (!p->dummy)
                                return -ENOMEM;
                }
        }

        if (p->n > 1)
                qsort(p->entries, p->n, sizeof *p->entries, entry_cmp);
        for (size_t i = 1; i < p->n; i++)
                if (strcmp(p->entries[i - 1].user, p->entries[i].user) == 0)
                        diag(&c, AUTH_LOG_ERROR, p->entries[i].line, "duplicate user '%s' (first on line %u)",
                             p->entries[i].user, p->entries[i - 1].line);
        if (c.n_errors > 0)
                return -EINVAL;

        *ret = TAKE_PTR(p);
        return 0;
}

const char *auth_passwd_lookup(const AuthPasswd *p, const char *user) {
        size_t lo = 0, hi;

        if (!p || !user)
                return NULL;
        hi = p->n;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int r = strcmp(user, p->entries[mid].user);
                if (r == 0)
                        return p->entries[mid].hash;
                if (r < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return NULL;
}

size_t auth_passwd_size(const AuthPasswd *p) {
        return p ? p->n : 0;
}

/* ======================================================================
 * 2. SASL
 * ====================================================================== */

enum {
        SASL_IDLE,
        SASL_PLAIN_WAIT,     /* PLAIN without initial response: 334 "" sent */
        SASL_LOGIN_USER,     /* 334 Username: sent */
        SASL_LOGIN_PASSWORD, /* 334 Password: sent */
        SASL_EXTERNAL_WAIT,
        SASL_FINISHED,
};

static const char *const mech_names[_AUTH_MECH_MAX] = {
        [AUTH_MECH_PLAIN] = "PLAIN",
        [AUTH_MECH_LOGIN] = "LOGIN",
        [AUTH_MECH_EXTERNAL] = "EXTERNAL",
};

AuthMech auth_mech_from_string(const char *s) {
        if (!s)
                return AUTH_MECH_INVALID;
        for (int i = 0; i < _AUTH_MECH_MAX; i++)
                if (strcasecmp(s, mech_names[i]) == 0)
                        return (AuthMech) i;
        return AUTH_MECH_INVALID;
}

const char *auth_mech_to_string(AuthMech m) {
        return m >= 0 && m < _AUTH_MECH_MAX ? mech_names[m] : NULL;
}

static bool password_mechs_allowed(unsigned flags) {
        return (flags & AUTH_SASL_TLS) || (flags & AUTH_SASL_ALLOW_PLAINTEXT);
}

const char *auth_ehlo_mechanisms(unsigned flags) {
        bool pw = password_mechs_allowed(flags), ext = flags & AUTH_SASL_CLIENT_CERT;
        if (pw && ext)
                return "PLAIN LOGIN EXTERNAL";
        if (pw)
                return "PLAIN LOGIN";
        if (ext)
                return "EXTERNAL";
        return NULL;
}

static int b64_value(char ch) {
        if (ch >= 'A' && ch <= 'Z')
                return ch - 'A';
        if (ch >= 'a' && ch <= 'z')
                return ch - 'a' + 26;
        if (ch >= '0' && ch <= '9')
                return ch - '0' + 52;
        if (ch == '+')
                return 62;
        if (ch == '/')
                return 63;
        return -1;
}

int auth_base64_decode(const char *in, size_t len, char *out, size_t cap) {
        size_t o = 0;

        if ((!in && len > 0) || len % 4 != 0)
                return -EINVAL;
        if (len / 4 * 3 > (size_t) INT32_MAX)
                return -EINVAL;
        for (size_t i = 0; i < len; i += 4) {
                int v[4], pad = 0;
                bool last = i + 4 == len;
                for (int k = 0; k < 4; k++) {
                        if (in[i + k] == '=' && last && k >= 2) {
                                v[k] = 0;
                                pad++;
                                continue;
                        }
                        if (pad > 0) /* data after '=' */
                                return -EINVAL;
                        v[k] = b64_value(in[i + k]);
                        if (v[k] < 0)
                                return -EINVAL;
                }
                /* Non-canonical encodings: unused bits must be zero. */
                if (pad == 2 && (v[1] & 0x0f))
                        return -EINVAL;
                if (pad == 1 && (v[2] & 0x03))
                        return -EINVAL;
                uint32_t w = (uint32_t) v[0] << 18 | (uint32_t) v[1] << 12 | (uint32_t) v[2] << 6 | (uint32_t) v[3];
                size_t nb = 3 - (size_t) pad;
                if (o + nb > cap)
                        return -ENOBUFS;
                out[o++] = (char) (w >> 16);
                if (nb > 1)
                        out[o++] = (char) (w >> 8 & 0xff);
                if (nb > 2)
                        out[o++] = (char) (w & 0xff);
        }
        return (int) o;
}

static void step_error(AuthSasl *s, AuthStep *st, int code, const char *enh, const char *text) {
        s->state = SASL_FINISHED;
        explicit_bzero(s->password, sizeof s->password);
        *st = (AuthStep) { .kind = AUTH_STEP_ERROR, .code = code, .enhanced = enh, .text = text };
}

static void step_challenge(AuthSasl *s, AuthStep *st, int state, const char *challenge) {
        s->state = state;
        *st = (AuthStep) { .kind = AUTH_STEP_CHALLENGE, .challenge = challenge };
}

static void step_done(AuthSasl *s, AuthStep *st) {
        s->state = SASL_FINISHED;
        *st = (AuthStep) { .kind = AUTH_STEP_DONE };
}

#define SASL_DECODED_MAX (AUTH_USER_MAX * 2 + AUTH_PASSWORD_MAX + 2)

/* Decodes a client response: "*" cancels, "=" is empty. Returns the length
 * or -1 after setting an error step. */
static int decode_response(AuthSasl *s, const char *in, size_t len, char *out, size_t cap, AuthStep *st) {
        int r;

        if (len == 1 && in[0] == '*') {
                step_error(s, st, 501, "5.7.0", "Authentication cancelled");
                return -1;
        }
        if (len == 1 && in[0] == '=')
                return 0;
        if (len == 0) {
                /* An empty line is an empty response (RFC 4954 4: "334 " then
                 * an empty line) only as an answer; as an initial response
                 * the "=" form is required, the caller never passes len 0 then. */
                return 0;
        }
        r = auth_base64_decode(in, len, out, cap);
        if (r == -ENOBUFS) {
                step_error(s, st, 501, "5.5.2", "Authentication data too long");
                return -1;
        }
        if (r < 0) {
                step_error(s, st, 501, "5.5.2", "Invalid base64 data");
                return -1;
        }
        return r;
}

static void finish_plain(AuthSasl *s, const char *d, size_t n, AuthStep *st) {
        const char *z1 = memchr(d, 0, n), *z2;
        size_t lz, lc, lp;

        if (!z1 || !(z2 = memchr(z1 + 1, 0, n - (size_t) (z1 + 1 - d))) ||
            memchr(z2 + 1, 0, n - (size_t) (z2 + 1 - d))) {
                step_error(s, st, 501, "5.5.2", "Malformed PLAIN authentication message");
                return;
        }
        lz = (size_t) (z1 - d);
        lc = (size_t) (z2 - z1 - 1);
        lp = n - (size_t) (z2 + 1 - d);
        if (lc == 0 || lp == 0 || lz > AUTH_USER_MAX || lc > AUTH_USER_MAX || lp > AUTH_PASSWORD_MAX) {
                step_error(s, st, 501, "5.5.2", "Malformed PLAIN authentication message");
                return;
        }
        if (lz > 0 && (lz != lc || memcmp(d, z1 + 1, lz) != 0)) {
                step_error(s, st, 535, "5.7.8", "Authorization identity not permitted");
                return;
        }
        memcpy(s->authzid, d, lz);
        s->authzid[lz] = 0;
        memcpy(s->user, z1 + 1, lc);
        s->user[lc] = 0;
        memcpy(s->password, z2 + 1, lp);
        s->password[lp] = 0;
        step_done(s, st);
}

/* LOGIN answers and EXTERNAL authzid: text without NULs, at most max. */
static bool copy_text(char *dst, size_t max, const char *d, size_t n) {
        if (n > max || memchr(d, 0, n))
                return false;
        memcpy(dst, d, n);
        dst[n] = 0;
        return true;
}

static void handle_response(AuthSasl *s, const char *in, size_t len, AuthStep *st) {
        char d[SASL_DECODED_MAX + 1];
        int n = decode_response(s, in, len, d, SASL_DECODED_MAX, st);

        if (n < 0)
                return;
        switch (s->state) {
        case SASL_PLAIN_WAIT:
                finish_plain(s, d, (size_t) n, st);
                break;
        case SASL_LOGIN_USER:
                if (n == 0 || !copy_text(s->user, AUTH_USER_MAX, d, (size_t) n))
                        step_error(s, st, 501, "5.5.2", "Invalid user name");
                else
                        step_challenge(s, st, SASL_LOGIN_PASSWORD, "UGFzc3dvcmQ6");
                break;
        case SASL_LOGIN_PASSWORD:
                if (n == 0 || !copy_text(s->password, AUTH_PASSWORD_MAX, d, (size_t) n))
                        step_error(s, st, 501, "5.5.2", "Invalid password");
                else
                        step_done(s, st);
                break;
        case SASL_EXTERNAL_WAIT:
                if (!copy_text(s->authzid, AUTH_USER_MAX, d, (size_t) n))
                        step_error(s, st, 501, "5.5.2", "Invalid authorization identity");
                else
                        step_done(s, st);
                break;
        default:
                step_error(s, st, 503, "5.5.1", "Bad sequence of commands");
        }
        explicit_bzero(d, sizeof d);
}

int auth_sasl_start(AuthSasl *s, const char *args, unsigned flags, AuthStep *ret) {
        char mech[32];
        const char *sp, *initial = NULL;
        size_t ml;

        if (!s || !args || !ret)
                return -EINVAL;
        *s = (AuthSasl) { .mech = AUTH_MECH_INVALID, .state = SASL_IDLE };

        while (*args == ' ')
                args++;
        sp = strchr(args, ' ');
        ml = sp ? (size_t) (sp - args) : strlen(args);
        if (ml == 0) {
                step_error(s, ret, 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
                return 0;
        }
        if (ml >= sizeof mech) {
                step_error(s, ret, 504, "5.5.4", "Unrecognized authentication type");
                return 0;
        }
        memcpy(mech, args, ml);
        mech[ml] = 0;
        if (sp) {
                while (*sp == ' ')
                        sp++;
                if (*sp) {
                        size_t il = strcspn(sp, " ");
                        const char *rest = sp + il;
                        while (*rest == ' ')
                                rest++;
                        if (*rest) {
                                step_error(s, ret, 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
                                return 0;
                        }
                        initial = sp;
                }
        }

        s->mech = auth_mech_from_string(mech);
        if (s->mech == AUTH_MECH_INVALID) {
                step_error(s, ret, 504, "5.5.4", "Unrecognized authentication type");
                return 0;
        }
        if (s->mech == AUTH_MECH_EXTERNAL && !(flags & AUTH_SASL_CLIENT_CERT)) {
                step_error(s, ret, 535, "5.7.8", "No verified client certificate");
                return 0;
        }
        if (s->mech != AUTH_MECH_EXTERNAL && !password_mechs_allowed(flags)) {
                step_error(s, ret, 538, "5.7.11", "Encryption required for requested authentication mechanism");
                return 0;
        }

        switch (s->mech) {
        case AUTH_MECH_PLAIN:
                s->state = SASL_PLAIN_WAIT;
                break;
        case AUTH_MECH_LOGIN:
                s->state = SASL_LOGIN_USER;
                break;
        default:
                s->state = SASL_EXTERNAL_WAIT;
        }
        if (initial) {
                size_t il = strcspn(initial, " ");
                if (il > AUTH_SASL_LINE_MAX) {
                        step_error(s, ret, 500, "5.5.6", "Authentication exchange line is too long");
                        return 0;
                }
                handle_response(s, initial, il, ret);
                return 0;
        }
        if (s->mech == AUTH_MECH_LOGIN)
                step_challenge(s, ret, SASL_LOGIN_USER, "VXNlcm5hbWU6");
        else
                step_challenge(s, ret, s->state, "");
        return 0;
}

int auth_sasl_feed(AuthSasl *s, const char *line, size_t len, AuthStep *ret) {
        if (!s || (!line && len > 0) || !ret)
                return -EINVAL;
        if (s->state == SASL_IDLE || s->state == SASL_FINISHED)
                return -EINVAL;
        if (len > 0 && line[len - 1] == '\n')
                len--;
        if (len > 0 && line[len - 1] == '\r')
                len--;
        if (len > AUTH_SASL_LINE_MAX) {
                step_error(s, ret, 500, "5.5.6", "Authentication exchange line is too long");
                return 0;
        }
        handle_response(s, line, len, ret);
        return 0;
}

void auth_sasl_clear(AuthSasl *s) {
        if (s)
                explicit_bzero(s, sizeof *s);
}

/* ======================================================================
 * 3. verification in a worker pool
 * ====================================================================== */

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct AuthVerifyRequest {
        AuthVerifyRequest *next;
        int state;
        bool cancelled;
        bool dummy;
        int result;
        char *hash;
        char *password;
        char *user;
        AuthVerifyDone done;
        void *userdata;
};

#define VERIFIER_THREADS_MAX 4

struct AuthVerifier {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_t threads[VERIFIER_THREADS_MAX];
        unsigned n_threads;
        bool stopping;
        AuthVerifyRequest *queue_head, *queue_tail; /* JOB_QUEUED */
        AuthVerifyRequest *done_head, *done_tail;   /* JOB_DONE */
        size_t n_jobs;                              /* all states, not yet dispatched */
        size_t max_pending;
        char dummy[CRYPT_GENSALT_OUTPUT_SIZE];
        int event_fd;
        sd_event_source *source;
};

static void request_free(AuthVerifyRequest *r) {
        if (!r)
                return;
        if (r->password) {
                explicit_bzero(r->password, strlen(r->password));
                free(r->password);
        }
        free(r->hash);
        free(r->user);
        free(r);
}

static void list_append(AuthVerifyRequest **head, AuthVerifyRequest **tail, AuthVerifyRequest *r) {
        r->next = NULL;
        if (*tail)
                (*tail)->next = r;
        else
                *head = r;
        *tail = r;
}

static bool list_remove(AuthVerifyRequest **head, AuthVerifyRequest **tail, AuthVerifyRequest *r) {
        AuthVerifyRequest *prev = NULL;
        for (AuthVerifyRequest *i = *head; i; prev = i, i = i->next) {
                if (i != r)
                        continue;
                if (prev)
                        prev->next = i->next;
                else
                        *head = i->next;
                if (*tail == i)
                        *tail = prev;
                i->next = NULL;
                return true;
        }
        return false;
}

static bool const_time_streq(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        volatile unsigned char d = (unsigned char) (la != lb);
        /* Lengths are not secret (they follow from the scheme); the bytes are. */
        for (size_t i = 0; i < lb; i++)
                d |= (unsigned char) (a[i < la ? i : 0] ^ b[i]);
        return d == 0;
}

static int verify_one(struct crypt_data *cd, AuthVerifyRequest *r) {
        const char *out;

        memset(cd, 0, sizeof *cd);
        out = crypt_rn(r->password, r->hash, cd, (int) sizeof *cd);
        if (!out || out[0] == '*')
                return r->dummy ? 0 : -EINVAL;
        bool eq = const_time_streq(out, r->hash);
        explicit_bzero(cd->output, sizeof cd->output);
        return eq && !r->dummy ? 1 : 0;
}

static void *verifier_worker(void *userdata) {
        AuthVerifier *v = userdata;
        struct crypt_data *cd = malloc(sizeof *cd);

        for (;;) {
                AuthVerifyRequest *r;

                pthread_mutex_lock(&v->lock);
                while (!v->queue_head && !v->stopping)
                        pthread_cond_wait(&v->cond, &v->lock);
                if (v->stopping) {
                        pthread_mutex_unlock(&v->lock);
                        break;
                }
                r = v->queue_head;
                (void) list_remove(&v->queue_head, &v->queue_tail, r);
                r->state = JOB_RUNNING;
                pthread_mutex_unlock(&v->lock);

                int result = cd ? verify_one(cd, r) : -ENOMEM;

                pthread_mutex_lock(&v->lock);
                r->result = result;
                r->state = JOB_DONE;
                explicit_bzero(r->password, strlen(r->password));
                list_append(&v->done_head, &v->done_tail, r);
                pthread_mutex_unlock(&v->lock);

                uint64_t one = 1;
                while (write(v->event_fd, &one, sizeof one) < 0 && errno == EINTR)
                        ;
        }
        if (cd) {
                explicit_bzero(cd, sizeof *cd);
                free(cd);
        }
        return NULL;
}

static void dispatch(AuthVerifier *v, AuthVerifyRequest *list, int force) {
        while (list) {
                AuthVerifyRequest *r = list;
                list = r->next;
                v->n_jobs--;
                if (!r->cancelled && r->done)
                        r->done(force ? force : r->result, r->user, r->userdata);
                request_free(r);
        }
}

static int on_verifier_event(sd_event_source *source _unused_, int fd, uint32_t revents _unused_, void *userdata) {
        AuthVerifier *v = userdata;
        AuthVerifyRequest *list;
        uint64_t x;

        (void) !read(fd, &x, sizeof x);
        pthread_mutex_lock(&v->lock);
        list = v->done_head;
        v->done_head = v->done_tail = NULL;
        pthread_mutex_unlock(&v->lock);
        dispatch(v, list, 0);
        return 0;
}

int auth_verifier_new(sd_event *e, unsigned n_threads, size_t max_pending, AuthVerifier **ret) {
        AuthVerifier *v;
        sigset_t all, old;
        int r;

        if (!e || !ret || n_threads > VERIFIER_THREADS_MAX)
                return -EINVAL;
        v = calloc(1, sizeof *v);
        if (!v)
                return -ENOMEM;
        v->event_fd = -1;
        v->max_pending = max_pending ? max_pending : 64;
        if (pthread_mutex_init(&v->lock, NULL) != 0) {
                free(v);
                return -ENOMEM;
        }
        if (pthread_cond_init(&v->cond, NULL) != 0) {
                pthread_mutex_destroy(&v->lock);
                free(v);
                return -ENOMEM;
        }
        /* For unknown users when the file is empty: yescrypt at its default cost. */
        if (!crypt_gensalt_rn("$y$", 0, NULL, 0, v->dummy, sizeof v->dummy) &&
            !crypt_gensalt_rn("$6$", 0, NULL, 0, v->dummy, sizeof v->dummy)) {
                r = negative_errno();
                goto fail;
        }
        v->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (v->event_fd < 0) {
                r = negative_errno();
                goto fail;
        }
        r = sd_event_add_io(e, &v->source, v->event_fd, EPOLLIN, on_verifier_event, v);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(v->source, "smtpd-auth-verify");

        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        for (unsigned i = 0; i < (n_threads ? n_threads : 2); i++) {
                r = pthread_create(&v->threads[i], NULL, verifier_worker, v);
                if (r != 0)
                        break;
                v->n_threads++;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (v->n_threads == 0) {
                r = -r;
                goto fail;
        }
        *ret = v;
        return 0;

fail:
        auth_verifier_free(v);
        return r;
}

AuthVerifier *auth_verifier_free(AuthVerifier *v) {
        AuthVerifyRequest *done, *queued;

        if (!v)
                return NULL;
        pthread_mutex_lock(&v->lock);
        v->stopping = true;
        pthread_cond_broadcast(&v->cond);
        pthread_mutex_unlock(&v->lock);
        for (unsigned i = 0; i < v->n_threads; i++)
                (void) pthread_join(v->threads[i], NULL);

        done = v->done_head;
        queued = v->queue_head;
        v->done_head = v->done_tail = v->queue_head = v->queue_tail = NULL;
        dispatch(v, done, 0);
        dispatch(v, queued, -ECANCELED);

        v->source = sd_event_source_disable_unref(v->source);
        safe_close(v->event_fd);
        pthread_cond_destroy(&v->cond);
        pthread_mutex_destroy(&v->lock);
        free(v);
        return NULL;
}

int auth_verify(AuthVerifier *v, const AuthPasswd *p, const char *user, const char *password,
                AuthVerifyDone done, void *userdata, AuthVerifyRequest **ret) {
        AuthVerifyRequest *r;
        const char *hash;

        if (!v || !user || !password || !done)
                return -EINVAL;
        if (v->n_jobs >= v->max_pending)
                return -EBUSY;
        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        hash = auth_passwd_lookup(p, user);
        if (!hash) {
                r->dummy = true;
                hash = p && p->dummy ? p->dummy : v->dummy;
        }
        r->hash = strdup(hash);
        r->password = strdup(password);
        r->user = strdup(user);
        if (!r->hash || !r->password || !r->user) {
                request_free(r);
                return -ENOMEM;
        }
        r->done = done;
        r->userdata = userdata;
        r->state = JOB_QUEUED;

        pthread_mutex_lock(&v->lock);
        list_append(&v->queue_head, &v->queue_tail, r);
        v->n_jobs++;
        pthread_cond_signal(&v->cond);
        pthread_mutex_unlock(&v->lock);
        if (ret)
                *ret = r;
        return 0;
}

void auth_verify_cancel(AuthVerifier *v, AuthVerifyRequest *r) {
        bool removed = false;

        if (!v || !r)
                return;
        pthread_mutex_lock(&v->lock);
        if (r->state == JOB_QUEUED)
                removed = list_remove(&v->queue_head, &v->queue_tail, r);
        else
                r->cancelled = true; /* running or done: freed when dispatched */
        pthread_mutex_unlock(&v->lock);
        if (removed) {
                v->n_jobs--;
                request_free(r);
        }
}

size_t auth_verifier_pending(const AuthVerifier *v) {
        return v ? v->n_jobs : 0;
}

/* ======================================================================
 * 4. throttling
 * ====================================================================== */

typedef struct ThrottleKey {
        uint8_t family; /* 4 or 6 */
        uint8_t addr[8];
} ThrottleKey;

typedef struct ThrottleEntry {
        ThrottleKey key;
        unsigned failures;
        uint64_t window_start;
        struct ThrottleEntry *hnext;             /* hash chain */
        struct ThrottleEntry *lru_prev, *lru_next; /* head = most recent */
} ThrottleEntry;

struct AuthThrottle {
        AuthThrottleConfig c;
        AuthClockFn clock;
        void *clock_userdata;
        ThrottleEntry **buckets;
        size_t n_buckets; /* power of two */
        size_t n;
        ThrottleEntry *lru_head, *lru_tail;
        uint64_t seed;
};

static uint64_t monotonic_usec(void *userdata _unused_) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

int auth_throttle_new(const AuthThrottleConfig *config, AuthClockFn clock, void *clock_userdata,
                      AuthThrottle **ret) {
        AuthThrottle *t;

        if (!ret)
                return -EINVAL;
        t = calloc(1, sizeof *t);
        if (!t)
                return -ENOMEM;
        if (config)
                t->c = *config;
        if (!t->c.max_entries)
                t->c.max_entries = 10000;
        if (!t->c.window_usec)
                t->c.window_usec = 10 * 60 * UINT64_C(1000000);
        if (!t->c.max_failures)
                t->c.max_failures = 10;
        if (!t->c.base_delay_usec)
                t->c.base_delay_usec = UINT64_C(1000000);
        if (!t->c.max_delay_usec)
                t->c.max_delay_usec = 30 * UINT64_C(1000000);
        if (t->c.max_entries > (SIZE_MAX / 4) / sizeof(void *)) {
                free(t);
                return -EINVAL;
        }
        t->clock = clock ? clock : monotonic_usec;
        t->clock_userdata = clock_userdata;
        t->n_buckets = 16;
        while (t->n_buckets < t->c.max_entries)
                t->n_buckets <<= 1;
        t->buckets = calloc(t->n_buckets, sizeof *t->buckets);
        if (!t->buckets) {
                free(t);
                return -ENOMEM;
        }
        /* Keyed hash: an attacker picking addresses can not aim at one chain. */
        if (getrandom(&t->seed, sizeof t->seed, GRND_NONBLOCK) != (ssize_t) sizeof t->seed)
                t->seed = (uint64_t) (uintptr_t) t ^ monotonic_usec(NULL);
        *ret = t;
        return 0;
}

AuthThrottle *auth_throttle_free(AuthThrottle *t) {
        if (!t)
                return NULL;
        for (ThrottleEntry *e = t->lru_head, *next; e; e = next) {
                next = e->lru_next;
                free(e);
        }
        free(t->buckets);
        free(t);
        return NULL;
}

static int make_key(const struct sockaddr *sa, socklen_t len, ThrottleKey *k) {
        *k = (ThrottleKey) {};
        if (!sa)
                return -EINVAL;
        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                if (len < (socklen_t) sizeof *in)
                        return -EINVAL;
                k->family = 4;
                memcpy(k->addr, &in->sin_addr, 4);
                return 0;
        }
        if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                if (len < (socklen_t) sizeof *in6)
                        return -EINVAL;
                if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
                        k->family = 4;
                        memcpy(k->addr, in6->sin6_addr.s6_addr + 12, 4);
                } else {
                        k->family = 6;
                        memcpy(k->addr, in6->sin6_addr.s6_addr, 8); /* the /64 */
                }
                return 0;
        }
        return -EAFNOSUPPORT;
}

static size_t key_hash(const AuthThrottle *t, const ThrottleKey *k) {
        uint64_t h = t->seed ^ UINT64_C(0xcbf29ce484222325);
        const uint8_t *b = (const uint8_t *) k;
        for (size_t i = 0; i < sizeof *k; i++) {
                h ^= b[i];
                h *= UINT64_C(0x100000001b3);
        }
        h ^= h >> 29;
        return (size_t) h & (t->n_buckets - 1);
}

static ThrottleEntry *find(AuthThrottle *t, const ThrottleKey *k) {
        for (ThrottleEntry *e = t->buckets[key_hash(t, k)]; e; e = e->hnext)
                if (memcmp(&e->key, k, sizeof *k) == 0)
                        return e;
        return NULL;
}

static void lru_unlink(AuthThrottle *t, ThrottleEntry *e) {
        if (e->lru_prev)
                e->lru_prev->lru_next = e->lru_next;
        else
                t->lru_head = e->lru_next;
        if (e->lru_next)
                e->lru_next->lru_prev = e->lru_prev;
        else
                t->lru_tail = e->lru_prev;
        e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(AuthThrottle *t, ThrottleEntry *e) {
        e->lru_prev = NULL;
        e->lru_next = t->lru_head;
        if (t->lru_head)
                t->lru_head->lru_prev = e;
        else
                t->lru_tail = e;
        t->lru_head = e;
}

static void entry_remove(AuthThrottle *t, ThrottleEntry *e) {
        ThrottleEntry **pp = &t->buckets[key_hash(t, &e->key)];
        while (*pp && *pp != e)
                pp = &(*pp)->hnext;
        if (*pp)
                *pp = e->hnext;
        lru_unlink(t, e);
        t->n--;
        free(e);
}

/* The entry for k with an expired window reset; NULL if none. */
static ThrottleEntry *lookup_current(AuthThrottle *t, const ThrottleKey *k, uint64_t now) {
        ThrottleEntry *e = find(t, k);
        if (e && now - e->window_start >= t->c.window_usec) {
                entry_remove(t, e);
                e = NULL;
        }
        return e;
}

int64_t auth_throttle_failure(AuthThrottle *t, const struct sockaddr *sa, socklen_t len) {
        ThrottleKey k;
        ThrottleEntry *e;
        uint64_t now, delay;
        int r;

        if (!t)
                return -EINVAL;
        r = make_key(sa, len, &k);
        if (r < 0)
                return r;
        now = t->clock(t->clock_userdata);
        e = lookup_current(t, &k, now);
        if (!e) {
                /* Make room: expired entries at the LRU tail first, else the oldest. */
                while (t->lru_tail && (t->n >= t->c.max_entries ||
                                       now - t->lru_tail->window_start >= t->c.window_usec))
                        entry_remove(t, t->lru_tail);
                e = calloc(1, sizeof *e);
                if (!e)
                        return -ENOMEM;
                e->key = k;
                e->window_start = now;
                size_t b = key_hash(t, &k);
                e->hnext = t->buckets[b];
                t->buckets[b] = e;
                t->n++;
        } else
                lru_unlink(t, e);
        lru_push_front(t, e);
        if (e->failures < UINT32_MAX)
                e->failures++;

        delay = t->c.base_delay_usec;
        for (unsigned i = 1; i < e->failures && delay < t->c.max_delay_usec; i++)
                delay *= 2;
        delay = MIN(delay, t->c.max_delay_usec);
        return (int64_t) MIN(delay, (uint64_t) INT64_MAX);
}

unsigned auth_throttle_failures(AuthThrottle *t, const struct sockaddr *sa, socklen_t len) {
        ThrottleKey k;
        ThrottleEntry *e;

        if (!t || make_key(sa, len, &k) < 0)
                return 0;
        e = lookup_current(t, &k, t->clock(t->clock_userdata));
        return e ? e->failures : 0;
}

bool auth_throttle_refused(AuthThrottle *t, const struct sockaddr *sa, socklen_t len) {
        return t && auth_throttle_failures(t, sa, len) >= t->c.max_failures;
}

size_t auth_throttle_size(const AuthThrottle *t) {
        return t ? t->n : 0;
}
