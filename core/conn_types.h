/*
 * The connection record: a client connection and, once it logs in, its
 * backend connection. Types only; conn.h has the functions that own it.
 *
 * A connection moves through phases, one module each, all below the
 * dispatcher (worker.c) and above conn.c:
 *
 *   CONN_PREAUTH  client.c  greeting, commands, STARTTLS, the TLS handshake
 *   CONN_LOGIN    login.c   the directory resolves the name
 *   CONN_BACKEND  login.c   connect, backend TLS, the backend's login dialogue
 *   CONN_RELAY    relay.c   bytes both ways until either side closes
 *   CONN_CLOSING  conn.c    sockets closed, waiting for the last completions
 *
 * A phase never calls another: it ends by naming the next with conn_enter(),
 * and the dispatcher starts that one.
 */
#ifndef FG_CONN_TYPES_H
#define FG_CONN_TYPES_H

#include "../proto/backend.h"
#include "bhost.h"
#include "limits.h"
#include "ring.h"

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
    CF_ENTER = 1 << 13,      /* conn_enter() named the next phase; the dispatcher starts it */
};

enum relay_wait {
    RD_START, /* waiting for the login's last bytes to be sent */
    RD_IN,    /* POLLIN armed on the source */
    RD_OUT,   /* POLLOUT armed on the destination */
    RD_EOF,   /* the client half-closed; passed on to the backend */
};

struct relay_buf;
struct tls_conn;
struct conn_proxy;

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
    uint64_t started_us, dir_queued_us; /* the logon's and its directory request's start */
    uint8_t addr_throttle;              /* enum thr_reason: the address throttle's decision */
    char client_ip[INET6_ADDRSTRLEN], local_ip[INET6_ADDRSTRLEN];
};

struct conn {
    uint32_t gen;
    uint16_t inflight;
    uint16_t flags;
    uint8_t state;
    uint8_t proto;
    uint8_t bops;        /* backend operations in flight */
    uint8_t batch_epoch; /* the worker's batch window of its last completion */
    uint8_t sideops[2];  /* operations in flight on fd and on bfd (conn_op_side) */
    int fd, bfd;
    uint32_t started;
    struct ring_timer timer; /* the phase's timeout */
    struct session *s;       /* until the relay starts */
    struct conn_login *lg;   /* from the first login until the relay starts */
    struct sendq cq;         /* bytes to the client (ciphertext with TLS) */
    struct tls_conn *tls;    /* the client's TLS, from SSLBindings or STARTTLS on */
    struct tls_conn *btls;   /* the backend's TLS */
    struct conn_proxy *pp;   /* PROXY bindings: the header's state, then what it said */
    struct buf tout;         /* client TLS: replies waiting to be encrypted */
    struct relay_dir rd[2];  /* 0: client to backend, 1: backend to client */
    union net_addr peer;
    union net_addr baddr; /* the backend, once chosen */
    struct bhost *bh;     /* its health; NULL when untracked */
    char sid[17];
    struct limits_hold lim_ip;   /* MaxConnectionFromSingleIP: what the client address counted */
    struct limits_hold lim_user; /* MaxConnectionsPerUser: from the backend login on */
    char *user;                  /* the login name, for the log */
    char *mailbox;               /* the mailbox it logged in to, for show sessions */
    const char *why;             /* why it closes, with CF_CLOSE_AFTER */
    uint64_t relayed[2];
};

static inline uint32_t conn_slot(const struct worker *w, const struct conn *c)
{
    return (uint32_t)(c - w->conns);
}

#endif
