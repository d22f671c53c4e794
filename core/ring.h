/*
 * A worker's resources and the ring primitives every connection module uses.
 *
 * A worker is one thread per core owning an io_uring ring, its listening
 * sockets, its connection table, its receive buffers, its pipes and its
 * timer lists. A connection stays on the worker that accepted it, so nothing
 * on the per-connection path takes a lock.
 *
 * This is the bottom of core/: it does not know the connection record (a
 * timer is a struct ring_timer inside it) and calls nothing above it. The
 * loop that drives the ring is worker.c, at the top.
 */
#ifndef FG_RING_H
#define FG_RING_H

#include "../directory/dir.h"
#include "config.h"
#include "metrics.h"

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>

#define FG_BUF_GROUP   0
#define FG_RECV_BUF_SZ 4096
#define FG_RECV_BUFS   512 /* a power of two */
#define FG_PIPE_SZ     (64 * 1024)
#define FG_PIPES_IDLE  32 /* idle pipes kept for reuse */

/*
 * user_data of every SQE: the operation, the connection slot and the slot's
 * generation. A completion whose generation no longer matches belongs to a
 * connection that is gone (see conn_release), and is dropped.
 */
enum fg_op {
    OP_NONE,
    OP_ACCEPT,       /* slot field: listener index */
    OP_ACCEPT_RETRY, /* timer before re-arming a paused accept (EMFILE); slot: listener */
    OP_TICK,
    OP_STOP,
    OP_C_RECV,
    OP_C_SEND,
    OP_B_CONNECT,
    OP_B_RECV,
    OP_B_SEND,
    OP_LOGIN_DONE,
    OP_C_POLLIN,  /* relay, client to backend */
    OP_C_POLLOUT, /* relay, backend to client, client full */
    OP_B_POLLIN,  /* relay, backend to client */
    OP_B_POLLOUT, /* relay, client to backend, backend full */
    OP_CANCEL,    /* closing the connection */
    OP_CLOSE,
    OP_B_CANCEL, /* giving up a backend socket during the login */
    OP_B_CLOSE,
    OP_B_BYE, /* relay, the client gone: the backend's time to close is up (bclose.c) */
};

static inline uint64_t ud_make(enum fg_op op, uint32_t slot, uint32_t gen)
{
    return (uint64_t)gen << 32 | (uint64_t)(slot & 0xffffff) << 8 | (uint64_t)op;
}

static inline enum fg_op ud_op(uint64_t ud)
{
    return (enum fg_op)(ud & 0xff);
}

static inline uint32_t ud_slot(uint64_t ud)
{
    return (uint32_t)(ud >> 8) & 0xffffff;
}

static inline uint32_t ud_gen(uint64_t ud)
{
    return (uint32_t)(ud >> 32);
}

/* Connections idle in one phase share a timeout, so a list in order of last
 * activity is also in order of expiry: touching is O(1), expiring O(expired). */
enum timer_class {
    TL_PREAUTH,                    /* + proto */
    TL_AUTH = FG_PROTO_COUNT,      /* + proto */
    TL_PROXY = 2 * FG_PROTO_COUNT, /* + proto: waiting for a PROXY header */
    TL_BACKEND = 3 * FG_PROTO_COUNT,
    TL_COUNT,
};

/* What a connection carries to be on a timer list. */
struct ring_timer {
    struct fg_list node;
    uint32_t last; /* last activity, in worker seconds */
    uint8_t list;  /* enum timer_class; TL_COUNT when on none */
};

struct timer_list {
    struct fg_list head;
    uint32_t timeout; /* seconds; read again at every tick (worker.c) */
};

/* A listener whose accepts failed for want of descriptors or memory: it
 * is retried after a back-off that doubles, until an accept succeeds. */
struct accept_pause {
    bool paused;
    uint64_t since_ms; /* when it paused */
    uint32_t backoff_ms;
    struct __kernel_timespec ts; /* the retry timer's, read at submission */
};

struct listener {
    int fd;
    uint8_t proto;
    bool tls;   /* SSLBindings: TLS from the first byte */
    bool proxy; /* ProxyProtocolBindings: a PROXY header comes before anything else */
    union net_addr addr;
    struct accept_pause pause;
};

struct tls_store;

/* The certificates in force per protocol (NULL: none), replaced by SIGHUP. */
struct fg_tls {
    struct tls_store *store[FG_PROTO_COUNT];
};

#define FG_TLS_CHUNK (16 * 1024) /* a TLS record's plaintext */
/* Plaintext read for a TLS destination at once: four records, one send. */
#define FG_TLS_PLAIN_SZ (64 * 1024)

/* Pipes for the relay, taken only while bytes are in flight. */
struct pipe_pool {
    int (*fds)[2];  /* [i][0] read end, [i][1] write end */
    uint32_t *free; /* stack of open, empty pipes */
    uint32_t nfree;
    uint32_t *holes; /* stack of closed indexes below count */
    uint32_t nholes;
    uint32_t count; /* indexes handed out so far */
    uint32_t cap;   /* RelayPipes */
};

/* Counters, written by the worker only and read by the stats socket and
 * the metrics (metrics.h has the rest). */
struct worker_stats {
    _Atomic uint64_t accepted, refused, logins_ok, logins_failed, backend_errors, timeouts;
    _Atomic uint64_t relay_copies;         /* relay chunks copied because no pipe was free */
    _Atomic uint64_t waits, batched_waits; /* the loop's sleeps in the kernel (ring_wait) */
    _Atomic uint64_t completions;          /* completions the loop handled */
    _Atomic uint64_t relayed[2];           /* bytes: client to backend, backend to client */
    _Atomic uint64_t tls_handshakes, tls_resumed, tls_failed, backend_tls_handshakes;
    _Atomic uint64_t logins_backend_tls, logins_backend_clear; /* by the backend leg */
    /* refused by MaxConnections, MaxConnectionFromSingleIP, MaxConnectionsPerUser */
    _Atomic uint64_t refused_max_conns, refused_per_ip, refused_per_user;
    _Atomic uint64_t accept_paused; /* times a listener paused for want of descriptors */
    _Atomic uint64_t proxy_accepted, proxy_refused; /* PROXY headers */
    _Atomic uint32_t conns, preauth, login, relay, closing, backend_fds, pipes, pipes_busy;
};

struct bhost_table;
struct limits;

struct fg_shared {
    struct limits *limits; /* MaxConnections and the per-address and per-mailbox limits */
    _Atomic bool stopping;
    struct bhost_table *bhosts; /* the backend hosts' health */
};

struct conn;

/*
 * Batched waiting (ring_wait). While several sessions are busy, the worker
 * asks the kernel to wake it once RING_BATCH_WANT completions are ready or
 * BatchWaitMicroseconds have passed, whichever comes first, instead of at
 * every completion: one sleep and wake-up then serves several sessions, and
 * each finds more bytes waiting. Only while the waits do gather: a window
 * whose batched waits brought fewer than two completions and 16 KiB each (a
 * trickle of logons, which would pay a timer wake-up per completion, and its
 * latency) stops batching for a while. A lone session never waits (want is
 * 1), and a worker with nothing to do sleeps until the first completion.
 */
struct ring_batch {
    uint32_t wait_us;      /* BatchWaitMicroseconds; 0 when off or unsupported */
    uint32_t want;         /* completions to wait for: 1 or RING_BATCH_WANT */
    uint32_t active;       /* sessions with a completion in this window */
    uint32_t waits;        /* batched waits in this window */
    uint32_t gathered;     /* the completions they brought */
    uint32_t backoff;      /* windows left without batching: they gathered too little */
    uint64_t bytes;        /* relayed in this window (ring_batch_bytes) */
    uint8_t epoch;         /* the window's number, as a session last saw it */
    uint64_t window_start; /* ms, CLOCK_MONOTONIC_COARSE */
};

struct worker {
    unsigned id;
    pthread_t thread;
    struct io_uring ring;
    const struct fg_config *cfg;
    struct fg_shared *shared;
    struct dir *dir;
    const struct fg_tls *tls;
    char *tls_raw;   /* FG_TLS_CHUNK bytes: ciphertext read by the relay */
    char *tls_plain; /* FG_TLS_PLAIN_SZ bytes: plaintext for a TLS destination */

    struct listener *ls;
    unsigned nls;

    struct conn *conns; /* the slot table, mapped once */
    uint32_t nslots;
    uint32_t *free_slots;
    uint32_t nfree;

    struct io_uring_buf_ring *br;
    char *bufs;

    struct pipe_pool pipes;
    struct timer_list tl[TL_COUNT];
    uint32_t now; /* seconds, monotonic, refreshed every loop */

    int stop_fd; /* eventfd: stop_req or mail is waiting */
    uint64_t stop_val;
    _Atomic bool stop_req;
    pthread_mutex_t mail_lock;
    struct fg_list mail; /* struct wcmd_part, from the stats socket */
    bool stopping;
    bool accepting; /* the listeners are armed: false once draining */
    bool started;
    int ready; /* 0 while starting, 1 running, -1 failed */
    pthread_mutex_t ready_lock;
    pthread_cond_t ready_cond;
    struct __kernel_timespec tick_ts;
    struct ring_batch batch;
    uint32_t refused_logged, refused_quiet; /* log rate limit for refusals */
    uint32_t sid_counter;
    uint8_t sid_salt[3];
    struct worker_stats stats;
    struct metrics_worker metrics;
};

/* A worker's counters have one writer, the worker: no locked instruction. */
#define STAT_ADD(w, f, v) FG_SW_ADD(&(w)->stats.f, (v))
#define STAT_SUB(w, f, v) FG_SW_SUB(&(w)->stats.f, (v))

/* The relay's counters per completion; -Drelay_counters=false compiles them
 * out, to measure what they cost (bench/metricsbench). */
#ifdef FG_NO_RELAY_COUNTERS
#define STAT_RELAY_ADD(w, f, v) ((void)(w), (void)(v))
#else
#define STAT_RELAY_ADD(w, f, v) STAT_ADD(w, f, v)
#endif

/* Creates the ring (the best flags the kernel has) and its provided receive
 * buffers. FG_OK, or FG_ERROR after logging why. On the worker's thread. */
int ring_setup(struct worker *w);

/* Submits what is queued and waits for completions (see struct ring_batch).
 * Returns what io_uring_submit_and_wait returns. */
int ring_wait(struct worker *w);

/* Once per loop, with the completions it handled: closes the activity window
 * every RING_BATCH_WINDOW_MS and chooses how many completions the next waits
 * ask for. */
void ring_batch_window(struct worker *w, uint64_t ms, unsigned ncqes);

/* The relay moved n bytes: what a batched wait brings is measured in bytes
 * too. */
static inline void ring_batch_bytes(struct worker *w, size_t n)
{
    w->batch.bytes += n;
}

/* A session had a completion: counts it once per window. */
static inline void ring_batch_mark(struct worker *w, uint8_t *epoch)
{
    if (*epoch != w->batch.epoch) {
        *epoch = w->batch.epoch;
        w->batch.active++;
    }
}

/* Once per loop: sets w->now and returns the same clock in milliseconds. */
uint64_t ring_clock_ms(struct worker *w);

/* Seconds of CLOCK_MONOTONIC_COARSE: the worker's clock for timeouts. */
uint32_t ring_clock(void);

/* Gets a submission entry, flushing the ring when it is full. Never NULL. */
struct io_uring_sqe *ring_sqe(struct worker *w);

/* The data of a receive completion. The dispatcher gives the buffer back to
 * the ring after the handler returns, so a handler copies what it keeps (and
 * wipes what may be a secret: the buffer is not cleared for its next use). */
char *ring_buf(struct worker *w, struct io_uring_cqe *cqe);
void ring_buf_recycle(struct worker *w, uint16_t bid);

/* Puts t at the tail of timer list tc (it expires after that list's
 * timeout without another touch), or takes it off its list. */
void ring_timer_touch(struct worker *w, struct ring_timer *t, enum timer_class tc);
void ring_timer_remove(struct ring_timer *t);

#endif
