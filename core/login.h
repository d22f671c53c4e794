/*
 * The login phase (CONN_LOGIN, then CONN_BACKEND): the directory resolves the
 * name typed, then forestgate connects to the mailbox's backend (the next
 * copy when one is down), starts TLS if the route says so, and logs in there
 * through the protocol's backend dialogue (proto/).
 *
 * Contract: the dispatcher calls login_start() when the client phase has
 * named CONN_LOGIN, with the session's credentials in c->s->cred, and the
 * handlers below for the login's completions. The phase owns c->lg (freed by
 * conn.c) and the backend socket. It ends in one of two ways:
 *  - success: the client is answered, the session is freed, and
 *    conn_enter(CONN_RELAY) hands both sockets to the relay;
 *  - failure: the client is answered (never saying whether the name or the
 *    password was wrong), the backend socket is given up, and
 *    conn_enter(CONN_PREAUTH) returns the connection to the client phase.
 * A client that leaves during the login is closed by the client phase; the
 * backend socket goes with it.
 */
#ifndef FG_LOGIN_H
#define FG_LOGIN_H

#include "conn_types.h"

/* Sends the credentials to the directory pool; the answer comes back as an
 * OP_LOGIN_DONE completion. */
void login_start(struct worker *w, struct conn *c);

/* The directory answered: refuse, or connect to the route's first host. */
void login_on_directory(struct worker *w, struct conn *c);

/* Completions on the backend socket during the login. */
void login_on_connect(struct worker *w, struct conn *c, int res);
void login_on_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe);
void login_on_sent(struct worker *w, struct conn *c, int res);

/* A cancel or close of a backend socket that was given up completed: the
 * next host's connect may wait for it. */
void login_on_closed(struct worker *w, struct conn *c);

/* ConnectTimeout passed in CONN_BACKEND: the next host, or a failure. */
void login_expire(struct worker *w, struct conn *c);

#endif
