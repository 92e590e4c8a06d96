/* SPDX-License-Identifier: MIT */
#pragma once

/* halyard-smtpd's TLS: a server context (certificates, priorities, session
 * tickets, client-certificate policy) shared by all connections, and a
 * non-blocking per-connection session on a socket fd for STARTTLS (smtp,
 * submission) and implicit TLS (submissions).
 *
 * Certificate selection. Several certificate/key pairs may be configured.
 * Pairs whose certificates share a DNS name (subjectAltName, else CN) form
 * a group with credentials of its own; the group of pairs[0] is the
 * default. Once the ClientHello is in, the SNI picks the group: the first
 * with a certificate for exactly that name, else the first whose wildcard
 * matches (RFC 6125); no SNI or no match: the default group. Within the group GnuTLS
 * picks the first pair whose key the client can use (its
 * signature_algorithms, and in TLS 1.2 its cipher suites); ECDSA and
 * Ed25519 pairs are put before RSA: they are much cheaper to sign with
 * (GnuTLS signs RSA-2048 ~6x slower than OpenSSL), and a client that cannot
 * use them gets the group's RSA pair. (GnuTLS's own SNI matching, all pairs
 * in one credentials structure, is not used: in TLS 1.2 it tries each
 * cipher suite in turn and takes, for the first ECDHE-ECDSA suite, the ECDSA
 * pair of *another* name before the RSA pair of the right one.)
 *
 * Session tickets. A random ticket key is generated when the context is
 * made and replaced by smtpd_tls_context_rotate_ticket_key(), which the
 * caller calls on a timer. GnuTLS takes one key per session, so a rotation
 * immediately invalidates every ticket issued before it (the client then
 * does a full handshake); rotate at most as often as one accepts that. The
 * key is never written anywhere: a ticket key on disk (state directory,
 * backups) would let whoever reads it decrypt the recorded TLS 1.2 sessions
 * resumed with it, and undo the forward secrecy that rotating buys; an MTA's
 * clients reconnect rarely enough that one full handshake per client after a
 * restart costs little. Several instances sharing a key would need a
 * secret distribution channel; not done.
 *
 * Plaintext injection (CVE-2011-0411). GnuTLS reads the handshake directly
 * from the fd. Anything the session layer already read from the socket
 * before STARTTLS was accepted (pipelined after the STARTTLS line) is
 * plaintext and must not be processed after the handshake as if it were
 * protected: the session layer must discard its input buffer (or reject the
 * client) before calling smtpd_tls_session_new(); it must also forget the
 * EHLO state (RFC 3207 4.2). Bytes that arrive on the socket after that are
 * read by GnuTLS, so a plaintext command there fails the handshake. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "macro.h"

/* TLS 1.3 and 1.2 only (RFC 8996: 1.0/1.1 need SHA-1/MD5 PRFs and CBC
 * without AEAD). TLS 1.2 key exchange ECDHE only: no static RSA (no forward
 * secrecy, Bleichenbacher/ROBOT oracles), no finite-field DHE (slow to
 * compute, and every TLS 1.2 client of the last decade has ECDHE). The
 * server's order of preference (%SERVER_PRECEDENCE), which is NORMAL's: AEAD
 * (AES-GCM, ChaCha20-Poly1305, AES-CCM) first. Kept on purpose from NORMAL,
 * because on port 25 a failed handshake means the message comes in
 * plaintext (RFC 7435 opportunistic security): AES-CBC-SHA1 suites (old TLS
 * 1.2 stacks; GnuTLS has Lucky13 countermeasures and uses encrypt-then-MAC
 * when offered) and SHA-1 handshake signatures (what a TLS 1.2 client
 * without the signature_algorithms extension gets, RFC 5246 7.4.1.4.1; a
 * forgery would need a real-time chosen-prefix collision). NORMAL itself
 * excludes RC4, 3DES, NULL, export and anonymous suites, and the system
 * crypto policy (/etc/gnutls/config) still applies on top. */
#define SMTPD_TLS_DEFAULT_PRIORITY \
        "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-RSA:-DHE-RSA:-DHE-DSS:%SERVER_PRECEDENCE"

/* File names: for systemd credentials, the caller resolves them with
 * daemon_credential_path() (shared/daemon.h), e.g. LoadCredential=
 * tls-mx-ecdsa.pem:/etc/halyard/... in the unit. */
typedef struct SmtpdTlsKeyPair {
        const char *cert_file;          /* PEM: leaf certificate, then its chain */
        const char *key_file;           /* PEM: the leaf's unencrypted private key */
} SmtpdTlsKeyPair;

typedef struct SmtpdTlsConfig {
        const SmtpdTlsKeyPair *pairs;   /* at least one; pairs[0] names the default */
        size_t n_pairs;
        const char *priority;           /* NULL: SMTPD_TLS_DEFAULT_PRIORITY */
        bool request_client_cert;       /* ask (not require) for a client certificate */
        const char *client_ca_file;     /* PEM CAs to verify it against; may be NULL */
        bool no_session_tickets;
        /* Non-fatal findings (expired or not yet valid certificate...). */
        void (*warn)(const char *message, void *userdata);
        void *warn_userdata;
} SmtpdTlsConfig;

typedef struct SmtpdTlsContext SmtpdTlsContext;
typedef struct SmtpdTlsSession SmtpdTlsSession;

/* Loads everything in cfg. On error returns < 0 (-ENOENT, -EACCES... for a
 * file, -EINVAL for bad contents or a key that is not the certificate's, the
 * priority string or config) with a message naming the file in err. */
int smtpd_tls_context_new(const SmtpdTlsConfig *cfg, SmtpdTlsContext **ret, char *err, size_t errlen);
SmtpdTlsContext *smtpd_tls_context_ref(SmtpdTlsContext *ctx);
SmtpdTlsContext *smtpd_tls_context_unref(SmtpdTlsContext *ctx);
/* New ticket key for sessions made from now on (see above). */
int smtpd_tls_context_rotate_ticket_key(SmtpdTlsContext *ctx);
DEFINE_TRIVIAL_CLEANUP_FUNC(SmtpdTlsContext *, smtpd_tls_context_unref);
size_t smtpd_tls_context_n_pairs(const SmtpdTlsContext *ctx);

/* A server session on fd (non-blocking, not taken: the caller closes it
 * after smtpd_tls_session_free()). Holds a reference on ctx. */
int smtpd_tls_session_new(SmtpdTlsContext *ctx, int fd, SmtpdTlsSession **ret);
SmtpdTlsSession *smtpd_tls_session_free(SmtpdTlsSession *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(SmtpdTlsSession *, smtpd_tls_session_free);

/* 0: done; -EAGAIN: call again when smtpd_tls_wants() is ready; else the
 * handshake failed (-EPROTO, -ECONNRESET for EOF...), smtpd_tls_error() says
 * why. */
int smtpd_tls_handshake(SmtpdTlsSession *s);
/* EPOLLIN or EPOLLOUT: what the last -EAGAIN waits for. */
uint32_t smtpd_tls_wants(const SmtpdTlsSession *s);
const char *smtpd_tls_error(const SmtpdTlsSession *s);

/* > 0 bytes; 0 end of stream (close_notify); -EAGAIN (see
 * smtpd_tls_wants()); -ECONNRESET EOF without close_notify; -EPROTO. A
 * read may leave decrypted bytes buffered: check smtpd_tls_pending() before
 * waiting for the fd. */
ssize_t smtpd_tls_read(SmtpdTlsSession *s, void *buf, size_t n);
size_t smtpd_tls_pending(SmtpdTlsSession *s);
/* > 0 bytes taken; -EAGAIN: call again with the same buffer (GnuTLS keeps
 * the record it already made and the later return counts those bytes);
 * -EPIPE/-EPROTO... on failure. */
ssize_t smtpd_tls_write(SmtpdTlsSession *s, const void *buf, size_t n);
/* Sends close_notify: 0 or -EAGAIN (call again) or < 0. */
int smtpd_tls_bye(SmtpdTlsSession *s);

typedef enum SmtpdTlsPeerVerify {
        SMTPD_TLS_PEER_NONE,            /* no certificate presented (or not requested) */
        SMTPD_TLS_PEER_VERIFIED,        /* chains to client_ca_file and is valid now */
        SMTPD_TLS_PEER_NOT_VERIFIED,    /* see peer_verify_reason */
} SmtpdTlsPeerVerify;

typedef struct SmtpdTlsFacts {
        const char *version;            /* "TLS1.3": GnuTLS's static strings */
        const char *cipher;             /* "AES-256-GCM" */
        char *description;              /* "(TLS1.3)-(ECDHE-X25519)-(...)" */
        char *sni;                      /* the name the client asked for, or NULL */
        bool resumed;
        SmtpdTlsPeerVerify peer;
        char *peer_subject;             /* RFC 4514 DNs, NULL when no peer certificate */
        char *peer_issuer;
        char *peer_cn;                  /* the subject's first CN, or NULL */
        char peer_sha256[65];           /* lowercase hex of the DER certificate, or "" */
        char *peer_verify_reason;       /* when NOT_VERIFIED */
} SmtpdTlsFacts;

/* After a completed handshake. Free the strings with smtpd_tls_facts_done(). */
int smtpd_tls_facts(SmtpdTlsSession *s, SmtpdTlsFacts *ret);
void smtpd_tls_facts_done(SmtpdTlsFacts *f);
