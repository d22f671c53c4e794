/*
 * TLS on a connection's two sockets, over the ring's bytes: handshakes driven
 * as ciphertext arrives, plaintext handed to whoever reads it, replies
 * encrypted into the send queues.
 *
 * Contract: these functions change only the connection's TLS state, its
 * queues and its flags (CF_TLS_HS, CF_B_TLS_HS, CF_C_EOF). They never close
 * the connection and never start a phase: an error comes back as FG_ERROR
 * with a reason, and the caller (a phase module) decides. Any phase may call
 * them; they call nothing in core/ above the ring.
 */
#ifndef FG_TLSIO_H
#define FG_TLSIO_H

#include "conn_types.h"

/* Starts the client's TLS: at accept (implicit) or after STARTTLS/STLS.
 * From here on the session writes plaintext to c->tout. FG_OK or FG_ERROR
 * (no certificate, or out of memory). */
int tlsio_client_start(struct worker *w, struct conn *c, bool implicit);

/*
 * Ciphertext from the client. Plaintext goes to dst (the session's input, or
 * the backend's queue once relaying); TLS's own records go to the client's
 * send queue. FG_OK (the handshake is done; CF_C_EOF is set when the client
 * sent its close_notify), FG_AGAIN (the handshake goes on: send what is
 * queued and read more) or FG_ERROR with a reason in *why.
 */
int tlsio_client_input(struct worker *w, struct conn *c, const char *data, size_t n,
                       struct buf *dst, const char **why);

/* Encrypts c->tout into the client send queue (nothing during the
 * handshake). FG_OK or FG_ERROR. */
int tlsio_client_encrypt(struct conn *c);

/* Starts the backend's TLS (implicit, or after its STARTTLS answer): the
 * ClientHello is queued for the backend. FG_OK or FG_ERROR. */
int tlsio_backend_start(struct conn *c);

/* Ciphertext from the backend during the login: handshake, then plaintext
 * into the dialogue's input. FG_OK, FG_AGAIN (handshake goes on), FG_DONE
 * (the backend closed TLS cleanly) or FG_ERROR (a TLS failure), the last two
 * with a reason in *why. */
int tlsio_backend_input(struct worker *w, struct conn *c, const char *data, size_t n,
                        const char **why);

/* Encrypts lg->bout into the backend send queue. FG_OK or FG_ERROR. */
int tlsio_backend_encrypt(struct conn *c);

/* Moves the ciphertext a TLS connection queued to the end of q. */
int tlsio_move_out(struct tls_conn *t, struct buf *q);

/* Best effort, at close: a close_notify the peer may read. */
void tlsio_close_notify(struct tls_conn *t, int fd);

/* Frees both sides' TLS and the client's pending plaintext. */
void tlsio_free(struct conn *c);

#endif
