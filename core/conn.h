/*
 * The connection slot: who owns it, how it is sent on, and how it ends.
 *
 * conn.c owns the slot and everything hanging off it (session, login state,
 * TLS, queues, relay memory): conn_release() frees all of it, whatever the
 * phase. Phase modules (client.c, login.c, relay.c) call down into it; it
 * calls none of them.
 *
 * Lifetime rules, which keep late completions from touching freed memory:
 *  - every SQE that names a connection is tagged with conn_tag(), which
 *    bumps c->inflight; its completion drops it;
 *  - conn_close() cancels and closes both sockets through the ring and
 *    moves the slot to CONN_CLOSING: from then on no handler runs for it;
 *  - the dispatcher calls conn_release() when inflight reaches zero, and
 *    releasing bumps the slot's generation, so a completion from an earlier
 *    life of the slot is recognised (and is a bug if it ever happens).
 * Backend operations are also counted in c->bops: after a failed backend
 * login the next connect waits until the old socket's operations are done.
 *
 * On error every function here either returns a code to its caller or
 * closes the connection itself, as its comment says; after a close the
 * caller only returns.
 */
#ifndef FG_CONN_H
#define FG_CONN_H

#include "../base/log.h"
#include "conn_types.h"

/* The two sockets a connection sends on. */
enum conn_side {
    SIDE_CLIENT,  /* c->fd, queue c->cq */
    SIDE_BACKEND, /* c->bfd, queue c->lg->bq */
};

/* The socket an operation works on: SIDE_CLIENT, SIDE_BACKEND, or -1 for
 * one on neither (cancels, closes, the directory's answer). Counted in
 * c->sideops from conn_tag() to its completion, so that a socket with
 * nothing in flight is closed without a cancel. A relay NOP that stands for
 * a poll counts as one: the count may be high, never low. */
static inline int conn_op_side(enum fg_op op)
{
    switch (op) {
    case OP_C_RECV:
    case OP_C_SEND:
    case OP_C_POLLIN:
    case OP_C_POLLOUT:
        return SIDE_CLIENT;
    case OP_B_CONNECT:
    case OP_B_RECV:
    case OP_B_SEND:
    case OP_B_POLLIN:
    case OP_B_POLLOUT:
        return SIDE_BACKEND;
    default:
        return -1;
    }
}

/* A slot for an accepted socket, in CONN_PREAUTH without a session yet, or
 * NULL after refusing the client (no slot, MaxConnections,
 * MaxConnectionFromSingleIP, shutting down):
 * a clear-text last word on a plain listener, and the socket is closed. */
struct conn *conn_new(struct worker *w, const struct listener *l, int fd);

/*
 * Counts c's client address (c->peer) against MaxConnectionFromSingleIP,
 * once per connection: conn_new does it at accept; a listener whose real
 * client address arrives later (a PROXY protocol header) skips that and
 * calls this once c->peer is the client's. True when admitted (or counted
 * already); false when the address is at its limit, counted in
 * refused_per_ip: the caller refuses the client (the plain-text refusal
 * line on a clear-text binding, none in TLS) and closes it. The count is
 * given back when the slot is released.
 */
bool conn_limit_ip(struct worker *w, struct conn *c);

/* Tags an SQE with c and op, and counts it in c->inflight: the slot is not
 * reused until its completion is in. */
void conn_tag(struct worker *w, struct conn *c, struct io_uring_sqe *sqe, enum fg_op op);

/* Moves c to phase st, keeping the per-phase counters. */
void conn_set_state(struct worker *w, struct conn *c, enum conn_state st);

/* Ends the current phase and names the next: the dispatcher starts it once
 * the running handler returns (login_start, relay_start, client_resume). */
void conn_enter(struct worker *w, struct conn *c, enum conn_state st);

/* Sends what is queued for side, if no send is in flight there. Client TLS
 * records are made first (conn_flush); backend ones by the caller. */
void conn_send(struct worker *w, struct conn *c, enum conn_side side);

/* A send on side completed with res bytes (res >= 0). True when more of the
 * queue went out again; false when the queue has nothing in flight. */
bool conn_sent(struct worker *w, struct conn *c, enum conn_side side, int res);

/* Encrypts and sends what is queued for the client; closes c once the queue
 * is empty if CF_CLOSE_AFTER is set, or at once on a TLS error. */
void conn_flush(struct worker *w, struct conn *c);

/* Encrypts (backend TLS) and sends what the login queued for the backend;
 * out of memory, the backend gets nothing more (its login then times out). */
void conn_flush_backend(struct worker *w, struct conn *c);

/* Arms a client receive, unless one is armed, the client is done, the
 * relay has the socket, or too much input waits unparsed. */
void conn_arm_recv(struct worker *w, struct conn *c);

/* After input was handled: re-arms the receive unless the connection ends. */
void conn_input_done(struct worker *w, struct conn *c);

/* Cancels what is pending on fd and closes it: two SQEs with ops cancel_op
 * and cancel_op + 1. */
void conn_close_fd(struct worker *w, struct conn *c, int fd, enum fg_op cancel_op);

/* Logs the disconnect and closes both sockets; the slot is freed once its
 * completions are in. Safe to call twice. */
void conn_close(struct worker *w, struct conn *c, const char *reason);

/* The protocol's last word of kind bye, without CRLF. */
const char *conn_bye_line(uint8_t proto, enum sess_bye bye);

/* The client's TLS failed: counts it, logs the TLS error, closes c. */
void conn_tls_failed(struct worker *w, struct conn *c, const char *why);

/* Frees the slot and everything it holds; for the dispatcher, when a closing
 * connection's last completion is in, and for a worker that is torn down. */
void conn_release(struct worker *w, struct conn *c);

/* Frees the login's state (credentials wiped). */
void conn_drop_login(struct conn *c);

/* Starts a log line about c, with its session, client, user and backend. */
void conn_log_begin(struct log_line *l, const struct conn *c, enum log_level lvl,
                    const char *event);

/* Protocol log hook for sessions and backend dialogues. */
void conn_plog(void *ctx, const char *dir, const char *line, size_t n);

#endif
