/*
 * The relay after login: zero-copy, socket to pipe to socket, with splice(2).
 *
 * Why not IORING_OP_SPLICE: io_uring always punts splice to its io-wq
 * threads (io_splice() refuses IO_URING_F_NONBLOCK), costing a thread hand-off
 * per chunk. Instead the ring reports readiness (POLL_ADD) and the worker
 * calls splice with SPLICE_F_NONBLOCK on its non-blocking sockets, as
 * HAProxy does with epoll.
 *
 * Why pipes from a pool (pipes.c): a pipe is only needed while bytes are in
 * flight, so an idle session holds no pipe and no buffer.
 *
 * When the pool is empty (RelayPipes directions are all stuck behind slow
 * readers), a direction copies through a small buffer instead, like
 * HAProxy past maxpipes: never waiting for a pipe means one stalled client
 * can never hold up another session.
 *
 * When either side speaks TLS the kernel cannot move the bytes alone: the
 * session copies through the same buffer, a record at a time (up to 16 KiB
 * of plaintext): read ciphertext, decrypt into the worker's scratch buffer,
 * encrypt for the other side if it is TLS too, write. TLS holds records it
 * has read ahead, so a direction that used up its turns comes back through
 * a NOP on the ring instead of waiting for a POLLIN that may never come.
 */
#include "relay.h"

#include "../tls/tls.h"
#include "bclose.h"
#include "conn.h"
#include "pipes.h"
#include "tlsio.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RELAY_ROUNDS 8 /* chunks per wake-up, so that one session cannot starve the others */
static bool relay_is_tls(const struct conn *c)
{
    return c->tls || c->btls;
}

/* The TLS that the direction reads from and the one it writes to, or NULL. */
static struct tls_conn *relay_src_tls(const struct conn *c, int d)
{
    return d == 0 ? c->tls : c->btls;
}

static struct tls_conn *relay_dst_tls(const struct conn *c, int d)
{
    return d == 0 ? c->btls : c->tls;
}

static int relay_src(const struct conn *c, int d)
{
    return d == 0 ? c->fd : c->bfd;
}

static int relay_dst(const struct conn *c, int d)
{
    return d == 0 ? c->bfd : c->fd;
}

static const enum fg_op relay_ops[2][2] = {{OP_C_POLLIN, OP_B_POLLOUT},
                                           {OP_B_POLLIN, OP_C_POLLOUT}};

static void relay_arm(struct worker *w, struct conn *c, int d, bool out)
{
    struct io_uring_sqe *sqe = ring_sqe(w);

    io_uring_prep_poll_add(sqe, out ? relay_dst(c, d) : relay_src(c, d), out ? POLLOUT : POLLIN);
    conn_tag(w, c, sqe, relay_ops[d][out]);
    c->rd[d].wait = out ? RD_OUT : RD_IN;
}

/* Comes back to the direction after the other sessions had their turn. */
static void relay_yield(struct worker *w, struct conn *c, int d)
{
    struct io_uring_sqe *sqe = ring_sqe(w);

    io_uring_prep_nop(sqe);
    conn_tag(w, c, sqe, relay_ops[d][0]);
    c->rd[d].wait = RD_IN;
}

/* The source has nothing more to say. */
static void relay_eof(struct worker *w, struct conn *c, int d)
{
    pipes_release(w, &c->rd[d]);
    if (d == 1) {
        conn_close(w, c, "backend closed");
        return;
    }
    /* The client half-closed: pass that on and let the backend finish. */
    c->rd[0].wait = RD_EOF;
    if (c->btls)
        tlsio_close_notify(c->btls, c->bfd);
    bclose_relay_eof(w, c);
}

static void relay_count(struct worker *w, struct conn *c, int d, size_t n)
{
    c->relayed[d] += (uint64_t)n;
    ring_batch_bytes(w, n);
    STAT_RELAY_ADD(w, relayed[d], (uint64_t)n);
}

static size_t relay_queued(const struct tls_conn *t)
{
    const uint8_t *p;
    return tls_conn_pending(t, &p);
}

/*
 * Reading may make TLS answer the peer (a TLS 1.3 KeyUpdate). The answer
 * goes out at once when nothing else is half-written on that socket;
 * otherwise the opposite direction takes it, in order, with its next bytes.
 */
static void relay_answer(struct conn *c, int d, struct tls_conn *src)
{
    const uint8_t *p;
    size_t n = tls_conn_pending(src, &p);
    /* The socket's other writers: the opposite direction, and the login's
     * last bytes still queued for the client (d == 0) or the backend. */
    const struct sendq *login_q = d == 0 ? &c->cq : (c->lg ? &c->lg->bq : NULL);
    if (n == 0 || c->rd[1 - d].pending > 0 || (login_q && !sendq_idle(login_q)))
        return;
    ssize_t m = send(relay_src(c, d), p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (m > 0)
        tls_conn_sent(src, (size_t)m);
}

/* Decrypts a record's plaintext into out, reading ciphertext as needed.
 * Returns the bytes, 0 at the end of the stream (the peer's close_notify, or
 * its socket closed), or -errno. */
static ssize_t relay_decrypt(struct worker *w, struct conn *c, int d, struct tls_conn *src,
                             char *out)
{
    for (;;) {
        ssize_t n = tls_conn_read(src, out, FG_TLS_CHUNK);
        if (n != FG_AGAIN) {
            relay_answer(c, d, src);
            return n == FG_DONE ? 0 : n == FG_ERROR ? -EPROTO : n;
        }
        ssize_t raw = recv(relay_src(c, d), w->tls_raw, FG_TLS_CHUNK, MSG_DONTWAIT);
        if (raw <= 0)
            return raw < 0 ? -errno : 0;
        if (tls_conn_feed(src, w->tls_raw, (size_t)raw) != FG_OK)
            return -EPROTO;
    }
}

/*
 * The copy path with TLS on either side. Returns the bytes now pending for
 * the destination, 0 at the end of the stream, or -errno.
 *
 * Toward a TLS destination the records are sent from its TLS output queue
 * itself (relay_write): no buffer of the direction's own, no second copy.
 * Toward a plain one the plaintext is decrypted into the direction's buffer.
 */
static ssize_t relay_read_tls(struct worker *w, struct conn *c, int d)
{
    struct relay_dir *rd = &c->rd[d];
    struct tls_conn *src = relay_src_tls(c, d), *dst = relay_dst_tls(c, d);
    char *plain;

    if (dst) {
        size_t queued = relay_queued(dst);
        if (queued > 0) /* records already queued for the destination go first */
            return (ssize_t)queued;
        plain = w->tls_plain;
    } else {
        if (!rd->buf && !(rd->buf = malloc(sizeof *rd->buf)))
            return -ENOMEM;
        rd->buf->off = 0;
        plain = rd->buf->data;
    }
    /* From a plain source, up to four records' worth: they go out in one
     * send, as nginx's SSL_write of its whole buffer does. */
    ssize_t n = src ? relay_decrypt(w, c, d, src, plain)
                    : recv(relay_src(c, d), plain, FG_TLS_PLAIN_SZ, MSG_DONTWAIT);
    if (n < 0 && !src)
        n = -errno;
    if (n <= 0)
        return n;
    relay_count(w, c, d, (size_t)n);
    if (!dst)
        return n;
    if (tls_conn_write(dst, plain, (size_t)n) != FG_OK)
        return -EPROTO;
    return (ssize_t)relay_queued(dst);
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

    if (relay_is_tls(c))
        return relay_read_tls(w, c, d);
    if (rd->pipe < 0 && !rd->buf && (rd->pipe = pipes_get(w)) < 0) {
        if (!(rd->buf = malloc(sizeof *rd->buf)))
            return -ENOMEM;
        STAT_RELAY_ADD(w, relay_copies, 1);
    }
    if (rd->pipe >= 0) {
        n = splice(relay_src(c, d), NULL, w->pipes.fds[rd->pipe][1], NULL, FG_PIPE_SZ,
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    } else {
        n = recv(relay_src(c, d), rd->buf->data, RELAY_BUF_SZ, MSG_DONTWAIT);
        rd->buf->off = 0;
    }
    if (n > 0)
        relay_count(w, c, d, (size_t)n);
    return n < 0 ? -errno : n;
}

/* Writes pending bytes to the destination. Returns bytes written or -errno. */
static ssize_t relay_write(struct worker *w, struct conn *c, int d)
{
    struct relay_dir *rd = &c->rd[d];
    struct tls_conn *dst = relay_dst_tls(c, d);
    ssize_t m;

    if (rd->pipe >= 0) {
        m = splice(w->pipes.fds[rd->pipe][0], NULL, relay_dst(c, d), NULL, rd->pending,
                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    } else if (dst) {
        /* Only the bytes counted as pending: a KeyUpdate answer queued since
         * (relay_answer) goes with the next read, in order. */
        const uint8_t *p;
        size_t n = FG_MIN(tls_conn_pending(dst, &p), (size_t)rd->pending);
        m = send(relay_dst(c, d), p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (m > 0)
            tls_conn_sent(dst, (size_t)m);
    } else {
        m = send(relay_dst(c, d), rd->buf->data + rd->buf->off, rd->pending,
                 MSG_DONTWAIT | MSG_NOSIGNAL);
        if (m > 0)
            rd->buf->off += (uint32_t)m;
    }
    return m < 0 ? -errno : m;
}

/* Drops a direction's buffers, and trims its TLS queues, once it waits for
 * its source again. */
static void relay_trim(struct worker *w, struct conn *c, int d)
{
    pipes_release(w, &c->rd[d]);
    if (relay_src_tls(c, d))
        tls_conn_trim(relay_src_tls(c, d));
    if (relay_dst_tls(c, d))
        tls_conn_trim(relay_dst_tls(c, d));
}

/* Moves bytes from source to destination until one of them would block. */
static void relay_pump(struct worker *w, struct conn *c, int d)
{
    struct relay_dir *rd = &c->rd[d];
    bool full = true, tls = relay_is_tls(c);

    for (int round = 0; round < RELAY_ROUNDS; round++) {
        if (rd->pending == 0) {
            ssize_t n = relay_read(w, c, d);
            if (n == 0) {
                relay_eof(w, c, d);
                return;
            }
            if (n == -EAGAIN) {
                relay_trim(w, c, d);
                relay_arm(w, c, d, false);
            } else if (n < 0) {
                conn_close(w, c, n == -EPROTO && tls ? "TLS error" : strerror((int)-n));
            }
            if (n < 0)
                return;
            rd->pending = (uint32_t)n;
            /* With TLS a short read proves nothing: records may be buffered. */
            full = tls || n == (rd->pipe >= 0 ? FG_PIPE_SZ : RELAY_BUF_SZ);
            ring_timer_touch(w, &c->timer, TL_AUTH + c->proto);
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
    relay_trim(w, c, d);
    if (tls)
        relay_yield(w, c, d);
    else
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

/* Both directions run: nothing of the login stays in memory. */
static void relay_drop_login(struct conn *c)
{
    conn_drop_login(c);
    sendq_free(&c->cq);
    buf_free(&c->tout);
    if (c->tls)
        tls_conn_trim(c->tls);
    if (c->btls)
        tls_conn_trim(c->btls);
}

/*
 * Starts each direction once the login's last bytes toward its destination
 * are sent (and, client to backend, once a receive armed during the login
 * has completed), so nothing the relay moves overtakes them.
 */
static void relay_try_begin(struct worker *w, struct conn *c)
{
    if (c->state != CONN_RELAY)
        return;
    if (c->rd[0].wait == RD_START && !(c->flags & CF_C_RECV)) {
        conn_flush_backend(w, c); /* what followed the login command */
        if (sendq_idle(&c->lg->bq)) {
            if (c->flags & CF_C_EOF) {
                c->rd[0].wait = RD_EOF;
                bclose_relay_eof(w, c);
            } else {
                relay_arm(w, c, 0, false);
            }
        }
    }
    if (c->rd[1].wait == RD_START && sendq_idle(&c->cq))
        relay_arm(w, c, 1, false);
    if (c->rd[0].wait != RD_START && c->rd[1].wait != RD_START && c->lg)
        relay_drop_login(c);
}

void relay_start(struct worker *w, struct conn *c)
{
    c->rd[0] = (struct relay_dir){.pipe = -1, .wait = RD_START};
    c->rd[1] = (struct relay_dir){.pipe = -1, .wait = RD_START};
    /* A receive armed during the login may still bring client bytes; they
     * must reach the backend before anything the relay reads. */
    if (c->flags & CF_C_RECV) {
        struct io_uring_sqe *sqe = ring_sqe(w);
        io_uring_prep_cancel64(sqe, ud_make(OP_C_RECV, conn_slot(w, c), c->gen), 0);
        conn_tag(w, c, sqe, OP_CANCEL);
    }
    conn_flush(w, c);
    relay_try_begin(w, c);
}

void relay_on_client_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
    int res = cqe->res;

    c->flags &= ~CF_C_RECV;
    if (res == 0)
        c->flags |= CF_C_EOF; /* passed on to the backend once its direction starts */
    if (res < 0 && res != -ECANCELED && res != -ENOBUFS) {
        conn_close(w, c, strerror(-res));
        return;
    }
    if (res > 0) {
        /* A receive armed during the login finished after it: its bytes go
         * to the backend ahead of anything the relay reads. */
        const char *data = ring_buf(w, cqe), *why;
        struct buf *to = c->btls ? &c->lg->bout : &c->lg->bq.q;
        if (!c->tls) {
            buf_append(to, data, (size_t)res);
        } else if (tlsio_client_input(w, c, data, (size_t)res, to, &why) == FG_ERROR) {
            conn_tls_failed(w, c, why);
            return;
        }
    }
    relay_try_begin(w, c);
}

void relay_on_client_sent(struct worker *w, struct conn *c, int res)
{
    if (res < 0)
        conn_close(w, c, strerror(-res));
    else if (!conn_sent(w, c, SIDE_CLIENT, res))
        relay_try_begin(w, c);
}

void relay_on_backend_sent(struct worker *w, struct conn *c, int res)
{
    c->bops--;
    if (res < 0)
        conn_close(w, c, strerror(-res));
    else if (!conn_sent(w, c, SIDE_BACKEND, res))
        relay_try_begin(w, c);
}

/*
 * The session's last word before the server closes it (kick, the end of a
 * drain): the protocol's BYE line, when it cannot land inside the backend's
 * bytes -- nothing from the backend is half-sent, the login's last bytes
 * are out -- and the socket takes it now. Otherwise the close alone says it.
 */
void relay_bye(struct worker *w, struct conn *c, const char *line, const char *why)
{
    const uint8_t *p;
    char text[160];
    int n = snprintf(text, sizeof text, "%s\r\n", line);
    bool idle = c->rd[1].pending == 0 && !c->rd[1].buf && sendq_idle(&c->cq) &&
                (!c->tls || tls_conn_pending(c->tls, &p) == 0);
    if (idle && n > 0 && (size_t)n < sizeof text) {
        if (!c->tls) {
            ssize_t FG_UNUSED rc = send(c->fd, text, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else if (tls_conn_write(c->tls, text, (size_t)n) == FG_OK) {
            size_t k = tls_conn_pending(c->tls, &p);
            ssize_t FG_UNUSED rc = send(c->fd, p, k, MSG_DONTWAIT | MSG_NOSIGNAL);
        }
    }
    conn_close(w, c, why);
}
