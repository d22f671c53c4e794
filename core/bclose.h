/*
 * Closing backend connections so that the backend closes first.
 *
 * The side that sends the first FIN keeps the connection in TIME_WAIT for a
 * minute. On forestgate that holds one of the ~28,000 ephemeral ports toward
 * the backend's address and port (or SourceAddresses' share of them); on the
 * backend it holds nothing scarce (its port is its listener's). So where the
 * protocol allows, forestgate asks the backend to close (IMAP LOGOUT, POP3
 * QUIT before any mail has been touched) and closes its own side only after
 * the backend's FIN, or after BCLOSE_WAIT_MS at most.
 *
 * During the login the waiting is done on a dup() of the backend socket by
 * a chain of linked operations on the worker's ring that nothing answers
 * (OP_NONE): the connection closes its own descriptor at once, as before, and
 * is neither held nor told. In the relay the connection itself waits: it
 * closes at the backend's FIN, as it always did, and a timer on the ring
 * (which holds no descriptor and no slot) bounds the wait.
 */
#ifndef FG_BCLOSE_H
#define FG_BCLOSE_H

#include "conn_types.h"

#define BCLOSE_GRACE_MS 20
#define BCLOSE_WAIT_MS  1000

/*
 * During the login: the backend socket is given up (a failed or refused
 * logon, a host that misbehaved). Call before closing c->bfd; returns a
 * second descriptor of the socket to pass to bclose_login_bye once c->bfd's
 * close is queued, or -1 when there is nothing to say (no greeting yet, TLS
 * or a STARTTLS route to the backend) or no descriptor to spare: then c->bfd's close is all.
 */
int bclose_login_keep(const struct conn *c);

/* Sends LOGOUT / QUIT on fd, waits for the backend's FIN (bounded), reads
 * its answer away so the close is a FIN and not a reset, and closes fd. */
void bclose_login_bye(struct worker *w, int fd, int proto);

/*
 * In the relay: the client has ended its side. Passing that on at once with
 * a FIN would make forestgate the first to close. Instead an IMAP backend in
 * the clear is sent LOGOUT (harmless in any state; a backend that has closed
 * already, after the client's own LOGOUT, is not), and forestgate's FIN goes
 * out once the backend's has come in, or BCLOSE_WAIT_MS later at most. POP3
 * gets no QUIT: it would commit the client's deletions, which only the client
 * may ask for; nor does a TLS backend, which has had its close_notify. They
 * are given BCLOSE_GRACE_MS to close by themselves (a client's QUIT just
 * before its close), then forestgate's FIN goes out.
 */
void bclose_relay_eof(struct worker *w, struct conn *c);

/* The timer bclose_relay_eof armed (OP_B_BYE). A connection that has closed
 * meanwhile is left alone. */
void bclose_on_timer(struct worker *w, uint64_t user_data);

#endif
