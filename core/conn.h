/*
 * A client connection and, once it logs in, its backend connection.
 *
 * Lifetime rules, which keep late completions from touching freed memory:
 *  - every SQE that names a connection bumps c->inflight; its completion
 *    drops it;
 *  - conn_close() cancels and closes both sockets through the ring, and the
 *    slot is released only when inflight reaches zero;
 *  - releasing bumps the slot's generation, so a completion from an earlier
 *    life of the slot can be recognised (and is a bug if it ever happens).
 * Backend operations are also counted in c->bops: after a failed backend
 * login the next connect waits until the old socket's operations are done.
 */
#ifndef FG_CONN_H
#define FG_CONN_H

#include "../base/log.h"
#include "../proto/backend.h"
#include "bhost.h"
#include "worker.h"

enum conn_state {
    CONN_FREE,
    CONN_PREAUTH, /* reading commands */
    CONN_LOGIN,   /* the directory is resolving the login */
    CONN_BACKEND, /* connecting to and logging in at the backend */
    CONN_RELAY,   /* relaying both ways */
    CONN_CLOSING, /* sockets closed, waiting for completions */
};

enum conn_flags {
    CF_C_RECV = 1 << 0,      /* a client receive is armed */
    CF_B_RECV = 1 << 1,      /* a backend receive is armed */
    CF_CLOSE_AFTER = 1 << 2, /* close once the client send queue is empty */
    CF_B_ABORTED = 1 << 3,   /* the backend socket was given up; its completions are stale */
    CF_B_CONNECT = 1 << 4,   /* a backend connect waits for stale completions */
    CF_GREETED = 1 << 5,     /* the backend sent its greeting */
    CF_C_EOF = 1 << 6,       /* the client shut down its sending side */
    CF_TLS_HS = 1 << 7,      /* the client's TLS handshake is under way */
    CF_TLS_GREET = 1 << 8,   /* implicit TLS: greet once the handshake is done */
    CF_B_TLS_HS = 1 << 9,    /* the backend's TLS handshake is under way */
    CF_B_UP = 1 << 10,       /* the backend greeted, over TLS if its route says so */
    CF_B_PROBE = 1 << 11,    /* this connection probes a host that was down */
    CF_B_SESSION = 1 << 12,  /* counted in c->bh->sessions */
};

enum relay_wait {
    RD_START, /* waiting for the login's last bytes to be sent */
    RD_IN,    /* POLLIN armed on the source */
    RD_OUT,   /* POLLOUT armed on the destination */
    RD_EOF,   /* the client half-closed; passed on to the backend */
};

struct relay_buf;
struct tls_conn;

/* One direction of the relay. Pipe and buffer exist only while bytes are
 * in flight; at most one of them. */
struct relay_dir {
    int32_t pipe;          /* index in the pipe pool, -1 when none */
    uint32_t pending;      /* bytes in the pipe or the buffer */
    struct relay_buf *buf; /* copy buffer, when no pipe was free */
    uint8_t wait;
};

/* State of a login, from the directory request to the backend's answer. */
struct conn_login {
    struct dir_request req;
    struct backend_login bl;
    struct backend_login_params par;
    struct sendq bq;   /* bytes to the backend (ciphertext with TLS) */
    struct buf bout;   /* backend TLS: the dialogue's plaintext, before encryption */
    unsigned addr_idx; /* the route's address being tried */
    uint8_t tried;     /* addresses connected to */
    uint32_t dir_started_ms;
    char client_ip[INET6_ADDRSTRLEN], local_ip[INET6_ADDRSTRLEN];
};

struct conn {
    uint32_t gen;
    uint16_t inflight;
    uint16_t flags;
    uint8_t state;
    uint8_t proto;
    uint8_t tclass; /* timer list, TL_COUNT when on none */
    uint8_t bops;   /* backend operations in flight */
    int fd, bfd;
    uint32_t last; /* last activity, in worker seconds */
    uint32_t started;
    struct fg_list tnode;
    struct session *s;      /* until the relay starts */
    struct conn_login *lg;  /* from the first login until the relay starts */
    struct sendq cq;        /* bytes to the client (ciphertext with TLS) */
    struct tls_conn *tls;   /* the client's TLS, from SSLBindings or STARTTLS on */
    struct tls_conn *btls;  /* the backend's TLS */
    struct buf tout;        /* client TLS: replies waiting to be encrypted */
    struct relay_dir rd[2]; /* 0: client to backend, 1: backend to client */
    union net_addr peer;
    union net_addr baddr; /* the backend, once chosen */
    struct bhost *bh;     /* its health; NULL when untracked */
    char sid[17];
    char *user;      /* the login name, for the log */
    const char *why; /* why it closes, with CF_CLOSE_AFTER */
    uint64_t relayed[2];
};

/* Takes a freshly accepted socket. */
void conn_accept(struct worker *w, struct listener *l, int fd);

/* Completion handlers. */
void conn_on_c_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe);
void conn_on_c_send(struct worker *w, struct conn *c, int res);

/* Runs the session on the bytes received so far and acts on its answer. */
void conn_run_session(struct worker *w, struct conn *c);

/* After input was handled: re-arms the receive unless the connection ends. */
void conn_input_done(struct worker *w, struct conn *c);

/* Sends what is queued for the client. */
void conn_flush(struct worker *w, struct conn *c);

/* Arms a client receive, unless one is armed or too much input is buffered. */
void conn_arm_recv(struct worker *w, struct conn *c);

/* Cancels what is pending on fd and closes it: two SQEs with ops cancel_op
 * and cancel_op + 1. */
void conn_close_fd(struct worker *w, struct conn *c, int fd, enum fg_op cancel_op);

/* Closes both sockets and frees the slot once its completions are in. */
void conn_close(struct worker *w, struct conn *c, const char *reason);

/* Called when inflight drops to zero on a closing connection. */
void conn_release(struct worker *w, struct conn *c);

/* The connection's phase timed out. */
void conn_expire(struct worker *w, struct conn *c);

/* Server shutdown: a last word, then close. */
void conn_shutdown(struct worker *w, struct conn *c);

void conn_set_state(struct worker *w, struct conn *c, enum conn_state st);

/* Queues an SQE for c: sets user_data and counts it in flight. */
void conn_sqe_data(struct worker *w, struct conn *c, struct io_uring_sqe *sqe, enum fg_op op);

static inline uint32_t conn_slot(const struct worker *w, const struct conn *c)
{
    return (uint32_t)(c - w->conns);
}

/* Starts a log line about c, with its session, client, user and backend. */
void conn_log_begin(struct log_line *l, const struct conn *c, enum log_level lvl,
                    const char *event);

/* Protocol log hook for sessions and backend dialogues. */
void conn_plog(void *ctx, const char *dir, const char *line, size_t n);

/* upstream.c: the login, from directory request to relay. */
void upstream_login_start(struct worker *w, struct conn *c);
void upstream_on_login_done(struct worker *w, struct conn *c);
void upstream_on_connect(struct worker *w, struct conn *c, int res);
void upstream_on_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe);
void upstream_on_send(struct worker *w, struct conn *c, int res);
void upstream_expire(struct worker *w, struct conn *c);
void upstream_free(struct conn *c);
/* Sends what is queued for the backend, if no send is in flight. */
void upstream_flush(struct worker *w, struct conn *c);
/* A backend operation completed: returns false when it was stale. */
bool upstream_op_done(struct worker *w, struct conn *c);

/* tlsio.c: TLS over the ring's bytes, for both sides of a connection. */
/* Starts the client's TLS: at accept (implicit) or after STARTTLS/STLS. */
int tlsio_client_start(struct worker *w, struct conn *c, bool implicit);
/* Ciphertext from the client. Plaintext goes to the session's input, or to
 * `relay` once relaying. Returns FG_OK, or FG_ERROR after closing c. */
int tlsio_client_input(struct worker *w, struct conn *c, const char *data, size_t n,
                       struct buf *relay);
/* Encrypts c->tout into the client send queue. FG_OK or FG_ERROR. */
int tlsio_client_encrypt(struct conn *c);
/* Starts the backend's TLS (implicit, or after its STARTTLS answer). */
int tlsio_backend_start(struct worker *w, struct conn *c);
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
void tlsio_free(struct conn *c);

/* relay.c */
void relay_start(struct worker *w, struct conn *c);
void relay_maybe_go(struct worker *w, struct conn *c);
void relay_on_poll(struct worker *w, struct conn *c, enum fg_op op, int res);
void relay_release(struct worker *w, struct conn *c);
int pipe_pool_init(struct pipe_pool *pp, uint32_t cap);
void pipe_pool_free(struct pipe_pool *pp);

/* worker.c: the data of a receive completion. The dispatcher gives the
 * buffer back to the ring after the handler returns. */
const char *worker_buf(struct worker *w, struct io_uring_cqe *cqe, uint16_t *bid_r);
void worker_buf_recycle(struct worker *w, uint16_t bid);

#endif
