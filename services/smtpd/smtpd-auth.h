/* SPDX-License-Identifier: MIT */
#pragma once

/* SMTP AUTH (RFC 4954) for halyard-smtpd, in four independent pieces:
 *
 *  1. AuthPasswd: the password file, "user:hash" lines with crypt(3) hashes,
 *     parsed from a buffer (the caller reads the credential with
 *     daemon_read_credential() and explicit_bzero()s it afterwards).
 *  2. AuthSasl: the PLAIN / LOGIN / EXTERNAL exchange as a state machine.
 *     Pure: no I/O, no allocation.
 *  3. AuthVerifier: crypt_rn() of a password against the stored hash in a
 *     small worker pool; the result comes back on the sd-event loop through
 *     an eventfd.
 *  4. AuthThrottle: failures counted per client address (IPv6 by /64),
 *     giving a delay before a failure reply and a refusal threshold.
 *
 * Everything except the verifier's worker threads runs on the loop thread;
 * none of these objects is thread-safe by itself. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define AUTH_USER_MAX 255          /* octets, user names (file and SASL) */
#define AUTH_PASSWORD_MAX 1024     /* octets, SASL passwords */
#define AUTH_PASSWD_LINE_MAX 1024  /* octets per line, without the LF */
#define AUTH_PASSWD_SIZE_MAX (4u << 20)
#define AUTH_PASSWD_USERS_MAX 100000

/* ---- 1. password file ----
 *
 * Format: one "user:hash" per line; lines whose first character is '#' and
 * empty lines (also only spaces/tabs) are ignored; a trailing CR (CRLF files)
 * is dropped. The user name is 1..AUTH_USER_MAX octets, no ':' and no control
 * characters; it is matched case-sensitively and byte for byte (no case
 * folding, no Unicode normalisation: "Alice" and "alice" are different
 * users). The hash is what crypt(3) produced: "$y$" (yescrypt), "$gy$"
 * (gost-yescrypt), "$7$" (scrypt), "$6$" (SHA-512), "$5$" (SHA-256),
 * "$2b$"/"$2y$" (bcrypt), printable ASCII with no spaces.
 *
 * Diagnostics go to log (may be NULL) as "name:line: text":
 *   warnings (entry skipped, file accepted): DES or "$1$" MD5 hashes, and
 *   locked entries whose hash starts with '!' or '*';
 *   errors (file refused, -EINVAL): missing ':', bad user name, duplicate
 *   user, unknown hash scheme or bad characters, NUL byte, line longer than
 *   AUTH_PASSWD_LINE_MAX, more than AUTH_PASSWD_USERS_MAX users.
 * A buffer larger than AUTH_PASSWD_SIZE_MAX is refused with -EFBIG. Every
 * error is reported (up to 20, then one "too many errors" line), not just
 * the first. */

typedef enum AuthLogLevel {
        AUTH_LOG_WARNING,
        AUTH_LOG_ERROR,
} AuthLogLevel;

typedef void (*AuthPasswdLogFn)(AuthLogLevel level, const char *msg, void *userdata);

typedef struct AuthPasswd AuthPasswd;

/* name is used in the messages only (e.g. the credential name). */
int auth_passwd_parse(const char *name, const char *buf, size_t size,
                      AuthPasswdLogFn log, void *userdata, AuthPasswd **ret);
/* Wipes the hashes (explicit_bzero) and frees. */
AuthPasswd *auth_passwd_free(AuthPasswd *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(AuthPasswd *, auth_passwd_free)
/* The stored hash for user, or NULL. Case-sensitive. Borrowed: valid until
 * auth_passwd_free(). */
const char *auth_passwd_lookup(const AuthPasswd *p, const char *user);
size_t auth_passwd_size(const AuthPasswd *p);

/* ---- 2. SASL exchange ----
 *
 * Drive it like this:
 *     auth_sasl_start(&s, "PLAIN dGVzdAB0ZXN0AHRlc3Q=", flags, &step);
 *     while (step.kind == AUTH_STEP_CHALLENGE) {
 *             send "334 " step.challenge;
 *             read a line; auth_sasl_feed(&s, line, len, &step);
 *     }
 *     AUTH_STEP_DONE:  s.user / s.password (PLAIN, LOGIN) or s.authzid
 *                      (EXTERNAL: the session maps the certificate to a
 *                      user and checks authzid is empty or equal) are set;
 *     AUTH_STEP_ERROR: send step.code step.enhanced step.text; the exchange
 *                      is over.
 * Then auth_sasl_clear(&s) (wipes the password).
 *
 * Replies: unknown mechanism 504 5.5.4; missing mechanism or garbage after
 * the initial response 501 5.5.4; PLAIN/LOGIN without TLS (unless
 * AUTH_SASL_ALLOW_PLAINTEXT) 538 5.7.11; EXTERNAL without a verified client
 * certificate 535 5.7.8; "*" 501 5.7.0; bad base64 501 5.5.2; malformed PLAIN
 * message (not exactly two NULs, empty authcid or password, NUL in a LOGIN
 * answer, over-long names) 501 5.5.2; PLAIN authzid not empty and not equal
 * to authcid 535 5.7.8; line over AUTH_SASL_LINE_MAX 500 5.5.6.
 * An initial response "=" is an empty response (RFC 4954 4). A client line
 * may come with or without its CRLF. Base64 is strict (RFC 4648: padding
 * required, no whitespace). LOGIN accepts an initial response as the user
 * name (what Outlook and others send). None of these error replies counts
 * as an authentication failure: only a failed verification does. */

#define AUTH_SASL_LINE_MAX 12288

enum {
        AUTH_SASL_TLS = 1u << 0,              /* connection is under TLS */
        AUTH_SASL_ALLOW_PLAINTEXT = 1u << 1,  /* PLAIN/LOGIN allowed without TLS */
        AUTH_SASL_CLIENT_CERT = 1u << 2,      /* a verified client certificate */
};

typedef enum AuthMech {
        AUTH_MECH_PLAIN,
        AUTH_MECH_LOGIN,
        AUTH_MECH_EXTERNAL,
        _AUTH_MECH_MAX,
        AUTH_MECH_INVALID = -1,
} AuthMech;

/* Case-insensitive; AUTH_MECH_INVALID if unknown. */
AuthMech auth_mech_from_string(const char *s);
const char *auth_mech_to_string(AuthMech m);
/* The EHLO "AUTH" keyword's parameters for these flags ("PLAIN LOGIN",
 * "EXTERNAL", "PLAIN LOGIN EXTERNAL") or NULL when nothing is offered. */
const char *auth_ehlo_mechanisms(unsigned flags);

typedef enum AuthStepKind {
        AUTH_STEP_CHALLENGE,
        AUTH_STEP_DONE,
        AUTH_STEP_ERROR,
} AuthStepKind;

typedef struct AuthStep {
        AuthStepKind kind;
        const char *challenge;  /* CHALLENGE: base64 text after "334 " (may be "") */
        int code;               /* ERROR */
        const char *enhanced;   /* ERROR, e.g. "5.5.2" */
        const char *text;       /* ERROR */
} AuthStep;

typedef struct AuthSasl {
        AuthMech mech;
        int state;
        char authzid[AUTH_USER_MAX + 1];
        char user[AUTH_USER_MAX + 1];
        char password[AUTH_PASSWORD_MAX + 1];
} AuthSasl;

/* args: what follows "AUTH " (mechanism and optional initial response).
 * Returns 0, or -EINVAL for a NULL argument. The step tells what to do. */
int auth_sasl_start(AuthSasl *s, const char *args, unsigned flags, AuthStep *ret);
/* Returns 0; -EINVAL when not waiting for an answer or on NULL arguments. */
int auth_sasl_feed(AuthSasl *s, const char *line, size_t len, AuthStep *ret);
void auth_sasl_clear(AuthSasl *s);

/* Strict base64 decode into out (cap bytes); returns the length, -EINVAL on
 * bad input, -ENOBUFS when out is too small. Exposed for tests. */
int auth_base64_decode(const char *in, size_t len, char *out, size_t cap);

/* ---- 3. verification off the loop ----
 *
 * auth_verify() copies the user's hash (or, for an unknown user, a dummy
 * hash with the cost of the file's first entry, whose result is always
 * "fail") and the password, and queues the job for a worker thread that
 * runs crypt_rn() and compares the output to the hash in constant time.
 * The callback runs on the loop with 1 (ok), 0 (wrong password or unknown
 * user) or a negative errno (crypt failed; -ECANCELED when the verifier is
 * freed first). A request may be cancelled until its callback has run; the
 * callback is then not called. At most max_pending jobs wait or run;
 * beyond that auth_verify() returns -EBUSY (answer 454 4.7.0). */

typedef struct AuthVerifier AuthVerifier;
typedef struct AuthVerifyRequest AuthVerifyRequest;
typedef void (*AuthVerifyDone)(int result, const char *user, void *userdata);

/* n_threads: 1..4 (0 means 2); max_pending 0 means 64. */
int auth_verifier_new(sd_event *e, unsigned n_threads, size_t max_pending, AuthVerifier **ret);
/* Joins the workers (after the job each is running), calls the callbacks of
 * finished jobs with their result and those of queued jobs with -ECANCELED. */
AuthVerifier *auth_verifier_free(AuthVerifier *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(AuthVerifier *, auth_verifier_free)
/* ret (may be NULL) gets a handle for auth_verify_cancel(); it is invalid
 * once the callback has run. p is not referenced after the call returns. */
int auth_verify(AuthVerifier *v, const AuthPasswd *p, const char *user, const char *password,
                AuthVerifyDone done, void *userdata, AuthVerifyRequest **ret);
void auth_verify_cancel(AuthVerifier *v, AuthVerifyRequest *r);
size_t auth_verifier_pending(const AuthVerifier *v);

/* ---- 4. failure throttling ----
 *
 * Failures are counted per client address (IPv4 /32; IPv6 /64; an
 * IPv4-mapped IPv6 address counts as its IPv4 address) in a window that
 * starts with an address's first failure and lasts window_usec; after it
 * the count starts again. The table holds at most max_entries addresses;
 * a full table drops the least recently failed one. A success does not
 * reset the count (one valid account must not reset guessing on others). */

typedef struct AuthThrottleConfig {
        size_t max_entries;       /* 0: 10000 */
        uint64_t window_usec;     /* 0: 10 min */
        unsigned max_failures;    /* 0: 10; refused once this many failed */
        uint64_t base_delay_usec; /* 0: 1 s; delay after the 1st failure */
        uint64_t max_delay_usec;  /* 0: 30 s; delays double up to this */
} AuthThrottleConfig;

typedef uint64_t (*AuthClockFn)(void *userdata); /* microseconds, monotonic */

typedef struct AuthThrottle AuthThrottle;

/* config NULL: defaults. clock NULL: CLOCK_MONOTONIC. */
int auth_throttle_new(const AuthThrottleConfig *config, AuthClockFn clock, void *clock_userdata,
                      AuthThrottle **ret);
AuthThrottle *auth_throttle_free(AuthThrottle *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(AuthThrottle *, auth_throttle_free)
/* Records a failure from sa; returns the delay (µs) to wait before sending
 * the 535 reply, or -EAFNOSUPPORT/-EINVAL for an address that is not
 * AF_INET/AF_INET6 (then nothing is counted; the caller may still delay). */
int64_t auth_throttle_failure(AuthThrottle *t, const struct sockaddr *sa, socklen_t len);
/* True when AUTH from sa should be refused now (454 4.7.0 on AUTH, or 421
 * 4.7.0 and close). Unknown address families are never refused. */
bool auth_throttle_refused(AuthThrottle *t, const struct sockaddr *sa, socklen_t len);
/* Failures counted for sa in the current window. */
unsigned auth_throttle_failures(AuthThrottle *t, const struct sockaddr *sa, socklen_t len);
size_t auth_throttle_size(const AuthThrottle *t);
