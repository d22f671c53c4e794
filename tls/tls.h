/*
 * TLS for forestgate's connections, with wolfSSL driven through memory only.
 *
 * The worker's ring does every socket read and write. A TLS connection is a
 * pair of byte queues around a WOLFSSL object: the worker feeds the
 * ciphertext it received (tls_conn_feed), drives the handshake or reads the
 * plaintext, and sends whatever ciphertext the engine queued
 * (tls_conn_pending / tls_conn_sent). wolfSSL's I/O callbacks
 * (wolfSSL_SSLSetIORecv/IOSend) only move bytes between those queues and
 * answer "want read" when the input is empty, so no call here ever blocks or
 * touches a socket -- the same contract as proto/'s parsers.
 *
 * Certificates: one per name, chosen by the client's SNI before the
 * handshake starts (read from the buffered ClientHello): an exact name, else
 * a wildcard name ("*.example.com"), else the default one.
 * TLS 1.2 and 1.3 only, AEAD ciphers with ECDHE only.
 *
 * Resumption is stateless, with session tickets: wolfSSL's ticket callback
 * encrypts them with keys kept per certificate context (shared by every
 * worker, so a ticket from one worker resumes on another) and rotates the
 * keys itself (WOLFSSL_TICKET_KEY_LIFETIME, one hour by default).
 * Backend connections resume too, from a per-thread cache of the sessions
 * their backends gave (tls_conn_resume, tls_resume.h).
 */
#ifndef FG_TLS_H
#define FG_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TLS_IN_MAX   (64 * 1024)   /* ciphertext buffered before it is consumed */
#define TLS_OUT_MAX  (1024 * 1024) /* ciphertext queued before the peer reads it */
#define TLS_NAME_MAX 255           /* longest SNI host name */

struct tls_cert {
    const char *name; /* host name the certificate serves; NULL for the default */
    const char *cert_file;
    const char *key_file;
};

struct tls_server;
struct tls_conn;

/* Once per process, before any other call. Returns FG_OK or FG_ERROR. */
int tls_init(void);
void tls_cleanup(void);

/*
 * Loads the certificates (PEM chain and key); the first without a name, or
 * else the first, is the default. Returns NULL with a reason in err.
 */
struct tls_server *tls_server_new(const struct tls_cert *certs, size_t n, char *err, size_t errlen);
/* Drops the caller's reference; connections keep theirs until they end. */
void tls_server_free(struct tls_server *s);

/*
 * The certificates in force, shared by the workers and replaced by SIGHUP:
 * a new connection takes the current set, a connection keeps the set it
 * started with, and a set is freed with its last connection. A reload that
 * fails keeps the current set.
 */
struct tls_store;
struct tls_store *tls_store_new(struct tls_server *s); /* takes s's reference */
void tls_store_free(struct tls_store *st);
struct tls_conn *tls_store_conn(struct tls_store *st);
/* Puts s (the caller's reference) in force; the old set goes with its last
 * connection. */
void tls_store_set(struct tls_store *st, struct tls_server *s);
/* FG_OK, or FG_ERROR with the reason in err and the old certificates kept. */
int tls_store_reload(struct tls_store *st, const struct tls_cert *certs, size_t n, char *err,
                     size_t errlen);

/*
 * The backend side: forestgate as a TLS client that verifies the backend's
 * certificate against a CA file and a name (the name is also sent as SNI,
 * unless it is an IP address, which SNI cannot carry).
 */
struct tls_client;
/* verify false: encrypt, but check neither the certificate nor the name
 * (ca_file may then be ""). Returns NULL with a reason in err. */
struct tls_client *tls_client_new(const char *ca_file, bool verify, char *err, size_t errlen);
void tls_client_free(struct tls_client *cl);
/* A client-side connection to the host `name`; NULL when out of memory. */
struct tls_conn *tls_client_conn(struct tls_client *cl, const char *name);
/*
 * Client side, before the handshake: resumes the session of this thread's
 * last connection to the same peer ("address:port"), name and tls_client,
 * if it has one that has not expired, and keeps this connection's session
 * for the next (see tls_resume.h). Returns 1 when a session was offered.
 * Whether the backend took it: tls_conn_resumed() after the handshake.
 */
int tls_conn_resume(struct tls_conn *c, const char *peer);

/* A server-side connection; NULL when out of memory. */
struct tls_conn *tls_conn_new(struct tls_server *s);
/* Frees the connection; its buffers are wiped. */
void tls_conn_free(struct tls_conn *c);

/* Appends ciphertext received from the peer. FG_ERROR if over TLS_IN_MAX. */
int tls_conn_feed(struct tls_conn *c, const void *p, size_t n);

/*
 * Drives the handshake. FG_OK once it is complete; FG_AGAIN when it needs
 * more input (send what tls_conn_pending() holds first); FG_ERROR when it
 * failed (a reason is in tls_conn_error()).
 */
int tls_conn_handshake(struct tls_conn *c);

/*
 * Decrypts into buf. Returns the bytes (> 0), FG_AGAIN when a whole record
 * has not arrived, FG_DONE on the peer's close_notify (a clean end), or
 * FG_ERROR on a failure (a reason is in tls_conn_error()).
 */
ssize_t tls_conn_read(struct tls_conn *c, void *buf, size_t n);

/* Queues a close_notify alert (after the handshake only). */
void tls_conn_close_notify(struct tls_conn *c);

/* 1 once the handshake is complete. */
int tls_conn_done(const struct tls_conn *c);

/* Frees the empty ciphertext queues, so an idle connection holds only
 * wolfSSL's own state. */
void tls_conn_trim(struct tls_conn *c);

/* Encrypts n bytes into the output queue. FG_OK or FG_ERROR. */
int tls_conn_write(struct tls_conn *c, const void *p, size_t n);

/* The queued ciphertext to send, and how much of it was sent. */
size_t tls_conn_pending(const struct tls_conn *c, const uint8_t **p_r);
void tls_conn_sent(struct tls_conn *c, size_t n);

/* After the handshake: "TLSv1.3", the cipher suite, the SNI name or "". */
const char *tls_conn_version(struct tls_conn *c);
const char *tls_conn_cipher(struct tls_conn *c);
const char *tls_conn_sni(const struct tls_conn *c);
/*
 * Server side, before the handshake: a host name to choose the certificate
 * by when the ClientHello carries no SNI -- the name a load balancer that
 * passes TLS through saw (PROXY v2's AUTHORITY). tls_conn_sni() then gives
 * this name. A name longer than TLS_NAME_MAX is ignored.
 */
void tls_conn_sni_hint(struct tls_conn *c, const char *name);
/* After the handshake: 1 when it resumed a session (a ticket, or on the
 * client side a TLS 1.2 session ID), else 0. */
int tls_conn_resumed(struct tls_conn *c);
/* Why the last call failed, for the event log. */
const char *tls_conn_error(const struct tls_conn *c);

#endif
