/*
 * The client phase (CONN_PREAUTH): from accept to a login command, and back
 * after a failed login. The greeting, pre-login commands through the
 * protocol's session (proto/), STARTTLS/STLS and the client's TLS handshake.
 *
 * Contract: the dispatcher calls these for a connection in CONN_PREAUTH,
 * CONN_LOGIN or CONN_BACKEND (client bytes read during a login are kept
 * for the session). A login command ends the phase with
 * conn_enter(CONN_LOGIN); a client that leaves, times out or breaks TLS is
 * closed here (conn_close), after which the caller only returns.
 */
#ifndef FG_CLIENT_H
#define FG_CLIENT_H

#include "conn_types.h"

/* Takes a freshly accepted socket: a slot, a session, the greeting (or the
 * TLS handshake first, on an SSL binding), the first receive. */
void client_accept(struct worker *w, const struct listener *l, int fd);

/* Back to reading commands after a failed login: the session has answered
 * the login; commands that came meanwhile run now. */
void client_resume(struct worker *w, struct conn *c);

/* Completions of the client's receive and send. */
void client_on_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe);
void client_on_sent(struct worker *w, struct conn *c, int res);

/* The pre-login timeout: a last word, then close. */
void client_expire(struct worker *w, struct conn *c);

/* Server shutdown or kick: the last word bye (if the session can still say
 * one), then close, logging why. */
void client_shutdown(struct worker *w, struct conn *c, enum sess_bye bye, const char *why);

#endif
