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

struct pipe_waiter {
    uint32_t slot, gen;
    uint8_t dir;
};

int pipe_pool_init(struct pipe_pool *pp, uint32_t cap, uint32_t nslots)
{
    memset(pp, 0, sizeof *pp);
    pp->fds = malloc(sizeof *pp->fds * cap);
    pp->free = malloc(sizeof *pp->free * cap);
    pp->holes = malloc(sizeof *pp->holes * cap);
    pp->wcap = 2 * nslots;
    pp->waiters = malloc(sizeof *pp->waiters * pp->wcap);
    if (!pp->fds || !pp->free || !pp->holes || !pp->waiters)
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
    free(pp->waiters);
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
    conn_sqe_data(c, sqe, ops[d][out], conn_slot(w, c));
    c->rd[d].wait = out ? RD_OUT : RD_IN;
}

static void relay_wait_pipe(struct worker *w, struct conn *c, int d)
{
    struct pipe_pool *pp = &w->pipes;
    /* Each direction of each slot waits at most once, so this never fills. */
    struct pipe_waiter *pw = &pp->waiters[(pp->whead + pp->nwait) % pp->wcap];
    pw->slot = conn_slot(w, c);
    pw->gen = c->gen;
    pw->dir = (uint8_t)d;
    pp->nwait++;
    c->rd[d].wait = RD_PIPE;
}

/* The source has nothing more to say. */
static void relay_eof(struct worker *w, struct conn *c, int d)
{
    pipe_put(w, &c->rd[d]);
    if (d == 1) {
        conn_close(w, c, "backend closed");
        return;
    }
    /* The client half-closed: pass that on and let the backend finish. */
    c->rd[0].wait = RD_EOF;
    shutdown(c->bfd, SHUT_WR);
}

/* Moves bytes from source to destination until one of them would block. */
static void relay_pump(struct worker *w, struct conn *c, int d)
{
    struct relay_dir *rd = &c->rd[d];
    bool full = true;

    for (int round = 0; round < RELAY_ROUNDS; round++) {
        if (rd->pending == 0) {
            if (rd->pipe < 0 && (rd->pipe = pipe_get(w)) < 0) {
                relay_wait_pipe(w, c, d);
                return;
            }
            ssize_t n = splice(relay_src(c, d), NULL, w->pipes.fds[rd->pipe][1], NULL, FG_PIPE_SZ,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n == 0) {
                relay_eof(w, c, d);
                return;
            }
            if (n < 0) {
                if (errno == EAGAIN) {
                    pipe_put(w, rd);
                    relay_arm(w, c, d, false);
                } else {
                    conn_close(w, c, strerror(errno));
                }
                return;
            }
            rd->pending = (uint32_t)n;
            full = n == FG_PIPE_SZ;
            c->relayed[d] += (uint64_t)n;
            STAT_ADD(w, relayed[d], (uint64_t)n);
            timer_touch(w, c, TL_AUTH + c->proto);
        }
        ssize_t m = splice(w->pipes.fds[rd->pipe][0], NULL, relay_dst(c, d), NULL, rd->pending,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (m < 0 && errno != EAGAIN) {
            conn_close(w, c, strerror(errno));
            return;
        }
        if (m > 0)
            rd->pending -= (uint32_t)m;
        if (rd->pending > 0) {
            relay_arm(w, c, d, true);
            return;
        }
        /* A short read drained the socket: another splice would only say
         * EAGAIN. Wait for the next POLLIN instead. */
        if (!full)
            break;
    }
    /* Drained, or out of turns so that other sessions run: wait for more. */
    pipe_put(w, rd);
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
    c->rd[0] = (struct relay_dir){-1, 0, RD_START};
    c->rd[1] = (struct relay_dir){-1, 0, RD_START};
    /* A receive armed during the login may still bring client bytes; they
     * must reach the backend before anything the relay reads. */
    if (c->flags & CF_C_RECV) {
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_cancel64(sqe, ud_make(OP_C_RECV, conn_slot(w, c), c->gen), 0);
        conn_sqe_data(c, sqe, OP_CANCEL, conn_slot(w, c));
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
        upstream_send_queued(w, c);
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
    pipe_put(w, &c->rd[0]);
    pipe_put(w, &c->rd[1]);
}

/* Hands freed pipes to the sessions that waited for one. */
void relay_pipe_waiters(struct worker *w)
{
    struct pipe_pool *pp = &w->pipes;

    while (pp->nwait > 0 && (pp->nfree > 0 || pp->count < pp->cap || pp->nholes > 0)) {
        struct pipe_waiter pw = pp->waiters[pp->whead];
        pp->whead = (pp->whead + 1) % pp->wcap;
        pp->nwait--;
        struct conn *c = &w->conns[pw.slot];
        if (c->gen != pw.gen || c->state != CONN_RELAY || c->rd[pw.dir].wait != RD_PIPE)
            continue;
        relay_pump(w, c, pw.dir);
    }
}
