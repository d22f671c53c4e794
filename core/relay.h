/*
 * The relay phase (CONN_RELAY): bytes both ways between the client and the
 * backend until either side closes or AuthenticatedConnectionTimeout
 * passes. splice through a pipe when neither side is TLS, a record at a time
 * through a buffer when either is (see relay.c for why).
 *
 * Contract: the dispatcher calls relay_start() when the login phase has
 * named CONN_RELAY, and the handlers below for the connection's completions
 * from then on. The login's last bytes (its answer to the client, client
 * bytes that followed the login command) go out before the relay moves
 * anything, and the login's state is freed as soon as both directions run.
 * Every error and either side's close ends in conn_close(); a client's
 * half-close is passed on to the backend, which may still answer.
 */
#ifndef FG_RELAY_H
#define FG_RELAY_H

#include "conn_types.h"

void relay_start(struct worker *w, struct conn *c);

/* A POLLIN/POLLOUT (or a yield's NOP) for one direction: move what can be
 * moved, then wait again. */
void relay_on_poll(struct worker *w, struct conn *c, enum fg_op op, int res);

/* The client receive armed during the login completed after it. */
void relay_on_client_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe);

/* The login's last sends completed, toward the client and the backend. */
void relay_on_client_sent(struct worker *w, struct conn *c, int res);
void relay_on_backend_sent(struct worker *w, struct conn *c, int res);

/* Closes a relayed session, with line (the protocol's BYE) first when it
 * can go out whole between the backend's bytes. */
void relay_bye(struct worker *w, struct conn *c, const char *line, const char *why);

#endif
