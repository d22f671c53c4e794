/*
 * The relay after login: zero-copy, socket to pipe to socket, with splice(2).
 *
 * Why not IORING_OP_SPLICE: io_uring always punts splice to its io-wq
 * threads (io_splice() refuses IO_URING_F_NONBLOCK), costing a thread hand-off
 * per chunk. Instead the ring reports readiness (POLL_ADD) and the worker
 * calls splice with SPLICE_F_NONBLOCK on its non-blocking sockets, as
 * HAProxy does with epoll.
 *
 * Why pipes from a pool: a pipe is only needed while bytes are in flight.
 * An idle session holds no pipe and no buffer, only its two sockets, so
 * thousands of idle sessions cost almost nothing and stay far from the
 * open-files limit. A pipe that is empty again goes back to the pool.
 *
 * When the pool is empty (RelayPipes directions are all stuck behind slow
 * readers), a direction copies through a small buffer instead, like
 * HAProxy past maxpipes: never waiting for a pipe means one stalled client
 * can never hold up another session.
 */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RELAY_ROUNDS 8 /* chunks per wake-up, so that one session cannot starve the others */
#define RELAY_BUF_SZ (16 * 1024)

/* The copy buffer of a direction that got no pipe, while bytes are pending. */
struct relay_buf {
    uint32_t off;
    char data[RELAY_BUF_SZ];
};

int pipe_pool_init(struct pipe_pool *pp, uint32_t cap)
{
    memset(pp, 0, sizeof *pp);
    pp->fds = malloc(sizeof *pp->fds * cap);
    pp->free = malloc(sizeof *pp->free * cap);
    pp->holes = malloc(sizeof *pp->holes * cap);
    if (!pp->fds || !pp->free || !pp->holes)
        return FG_ERROR;
    pp->cap = cap;
    return FG_OK;
}

void pipe_pool_free(struct pipe_pool *pp)
{
    for (uint32_t i = 0; i < pp->nfree; i++) {
        close(pp->fds[pp->free[i]][0]);
        close(pp->fds[pp->free[i]][1]);
    }
    free(pp->fds);
    free(pp->free);
    free(pp->holes);
    memset(pp, 0, sizeof *pp);
}

/* Returns a pipe index, or -1 when the pool is exhausted. */
static int32_t pipe_get(struct worker *w)
{
    struct pipe_pool *pp = &w->pipes;
    uint32_t i;

    if (pp->nfree > 0) {
        i = pp->free[--pp->nfree];
    } else {
        if (pp->nholes > 0)
            i = pp->holes[--pp->nholes];
        else if (pp->count < pp->cap)
            i = pp->count++;
        else
            return -1;
        if (pipe2(pp->fds[i], O_NONBLOCK | O_CLOEXEC) < 0) {
            pp->holes[pp->nholes++] = i;
            return -1;
        }
        fcntl(pp->fds[i][1], F_SETPIPE_SZ, FG_PIPE_SZ);
        STAT_ADD(w, pipes, 1);
    }
    STAT_ADD(w, pipes_busy, 1);
    return (int32_t)i;
}

/* Gives a pipe back. A pipe that still holds bytes is closed, not reused. */
static void pipe_put(struct worker *w, struct relay_dir *rd)
{
    struct pipe_pool *pp = &w->pipes;
    uint32_t i = (uint32_t)rd->pipe;

    if (rd->pipe < 0)
        return;
    rd->pipe = -1;
    STAT_SUB(w, pipes_busy, 1);
    if (rd->pending > 0 || pp->nfree >= FG_PIPES_IDLE) {
        close(pp->fds[i][0]);
        close(pp->fds[i][1]);
        pp->holes[pp->nholes++] = i;
        STAT_SUB(w, pipes, 1);
    } else {
        pp->free[pp->nfree++] = i;
    }
}

/* Drops what a direction holds while bytes are in flight. */
static void relay_idle(struct worker *w, struct relay_dir *rd)
{
    pipe_put(w, rd);
    free(rd->buf);
    rd->buf = NULL;
    rd->pending = 0;
}

static int relay_src(const struct conn *c, int d)
{
    return d == 0 ? c->fd : c->bfd;
}

static int relay_dst(const struct conn *c, int d)
{
    return d == 0 ? c->bfd : c->fd;
}

static void relay_arm(struct worker *w, struct conn *c, int d, bool out)
{
    static const enum fg_op ops[2][2] = {{OP_C_POLLIN, OP_B_POLLOUT}, {OP_B_POLLIN, OP_C_POLLOUT}};
    struct io_uring_sqe *sqe = worker_sqe(w);

    io_uring_prep_poll_add(sqe, out ? relay_dst(c, d) : relay_src(c, d), out ? POLLOUT : POLLIN);
    conn_sqe_data(w, c, sqe, ops[d][out]);
    c->rd[d].wait = out ? RD_OUT : RD_IN;
}

/* The source has nothing more to say. */
static void relay_eof(struct worker *w, struct conn *c, int d)
{
    relay_idle(w, &c->rd[d]);
    if (d == 1) {
        conn_close(w, c, "backend closed");
        return;
    }
    /* The client half-closed: pass that on and let the backend finish. */
    c->rd[0].wait = RD_EOF;
    shutdown(c->bfd, SHUT_WR);
}

/*
 * Reads a chunk from the source into the direction's pipe, or into a copy
 * buffer when no pipe is free. Returns the bytes read, 0 at end of stream,
 * or -errno.
 */
static ssize_t relay_read(struct worker *w, struct conn *c, int d)
{
    struct relay_dir *rd = &c->rd[d];
    ssize_t n;

    if (rd->pipe < 0 && !rd->buf && (rd->pipe = pipe_get(w)) < 0) {
        if (!(rd->buf = malloc(sizeof *rd->buf)))
            return -ENOMEM;
        STAT_ADD(w, relay_copies, 1);
    }
    if (rd->pipe >= 0) {
        n = splice(relay_src(c, d), NULL, w->pipes.fds[rd->pipe][1], NULL, FG_PIPE_SZ,
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    } else {
        n = recv(relay_src(c, d), rd->buf->data, RELAY_BUF_SZ, MSG_DONTWAIT);
        rd->buf->off = 0;
    }
    return n < 0 ? -errno : n;
}

/* Writes pending bytes to the destination. Returns bytes written or -errno. */
static ssize_t relay_write(struct worker *w, struct conn *c, int d)
{
    struct relay_dir *rd = &c->rd[d];
    ssize_t m;

    if (rd->pipe >= 0) {
        m = splice(w->pipes.fds[rd->pipe][0], NULL, relay_dst(c, d), NULL, rd->pending,
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    } else {
        m = send(relay_dst(c, d), rd->buf->data + rd->buf->off, rd->pending,
                 MSG_DONTWAIT | MSG_NOSIGNAL);
        if (m > 0)
            rd->buf->off += (uint32_t)m;
    }
    return m < 0 ? -errno : m;
}

/* Moves bytes from source to destination until one of them would block. */
static void relay_pump(struct worker *w, struct conn *c, int d)
{
    struct relay_dir *rd = &c->rd[d];
    bool full = true;

    for (int round = 0; round < RELAY_ROUNDS; round++) {
        if (rd->pending == 0) {
            ssize_t n = relay_read(w, c, d);
            if (n == 0) {
                relay_eof(w, c, d);
                return;
            }
            if (n == -EAGAIN) {
                relay_idle(w, rd);
                relay_arm(w, c, d, false);
            } else if (n < 0) {
                conn_close(w, c, strerror((int)-n));
            }
            if (n < 0)
                return;
            rd->pending = (uint32_t)n;
            full = n == (rd->pipe >= 0 ? FG_PIPE_SZ : RELAY_BUF_SZ);
            c->relayed[d] += (uint64_t)n;
            STAT_ADD(w, relayed[d], (uint64_t)n);
            timer_touch(w, c, TL_AUTH + c->proto);
        }
        ssize_t m = relay_write(w, c, d);
        if (m < 0 && m != -EAGAIN) {
            conn_close(w, c, strerror((int)-m));
            return;
        }
        if (m > 0)
            rd->pending -= (uint32_t)m;
        if (rd->pending > 0) {
            relay_arm(w, c, d, true); /* the destination is full */
            return;
        }
        /* A short read drained the socket: another read would only say
         * EAGAIN. Wait for the next POLLIN instead. */
        if (!full)
            break;
    }
    /* Drained, or out of turns so that other sessions run: wait for more. */
    relay_idle(w, rd);
    relay_arm(w, c, d, false);
}

void relay_on_poll(struct worker *w, struct conn *c, enum fg_op op, int res)
{
    int d = (op == OP_C_POLLIN || op == OP_B_POLLOUT) ? 0 : 1;
    if (res < 0) {
        conn_close(w, c, strerror(-res));
        return;
    }
    relay_pump(w, c, d);
}

void relay_start(struct worker *w, struct conn *c)
{
    c->rd[0] = (struct relay_dir){.pipe = -1, .wait = RD_START};
    c->rd[1] = (struct relay_dir){.pipe = -1, .wait = RD_START};
    /* A receive armed during the login may still bring client bytes; they
     * must reach the backend before anything the relay reads. */
    if (c->flags & CF_C_RECV) {
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_cancel64(sqe, ud_make(OP_C_RECV, conn_slot(w, c), c->gen), 0);
        conn_sqe_data(w, c, sqe, OP_CANCEL);
    }
    conn_flush(w, c);
    relay_maybe_go(w, c);
}

void relay_maybe_go(struct worker *w, struct conn *c)
{
    struct conn_login *lg = c->lg;

    if (c->state != CONN_RELAY)
        return;
    if (c->rd[0].wait == RD_START && !(c->flags & CF_C_RECV)) {
        upstream_flush(w, c);
        if (sendq_idle(&lg->bq)) {
            if (c->flags & CF_C_EOF) {
                c->rd[0].wait = RD_EOF;
                shutdown(c->bfd, SHUT_WR);
            } else {
                relay_arm(w, c, 0, false);
            }
        }
    }
    if (c->rd[1].wait == RD_START && sendq_idle(&c->cq))
        relay_arm(w, c, 1, false);
    if (c->rd[0].wait != RD_START && c->rd[1].wait != RD_START && lg) {
        /* The login is over: nothing of it stays in memory. */
        upstream_free(c);
        sendq_free(&c->cq);
    }
}

void relay_release(struct worker *w, struct conn *c)
{
    relay_idle(w, &c->rd[0]);
    relay_idle(w, &c->rd[1]);
}
