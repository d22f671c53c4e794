/*
 * The connection slot: allocation and refusal, phases, sending, logging,
 * close and release. See conn.h.
 */
#include "conn.h"

#include "../base/base64.h"
#include "../directory/krb.h"
#include "../tls/tls.h"
#include "pipes.h"
#include "proxyin.h"
#include "tlsio.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef FG_TSAN
#include <sanitizer/tsan_interface.h>
#endif

static const struct sess_ops *const conn_ops[FG_PROTO_COUNT] = {&imap_sess_ops, &pop3_sess_ops};

/*
 * A descriptor's number, closed through the ring by one worker
 * (conn_close_fd), can come back to another worker from the ring's accept.
 * The kernel orders the two, but ThreadSanitizer sees neither the close nor
 * the accept: it took the new owner's first recv on the number for a race
 * with the old owner's socket() (test_tls.py, a backend socket's number
 * reused for a client). Under ThreadSanitizer each number is a sync object,
 * released before its close is queued and acquired when an accept hands it
 * out; other builds do nothing.
 */
#ifdef FG_TSAN
static char conn_fd_sync[1 << 16]; /* by number; a collision only adds an edge */

static void conn_fd_release(int fd)
{
    __tsan_release(&conn_fd_sync[(unsigned)fd & (sizeof conn_fd_sync - 1)]);
}

static void conn_fd_acquire(int fd)
{
    __tsan_acquire(&conn_fd_sync[(unsigned)fd & (sizeof conn_fd_sync - 1)]);
}
#else
static void conn_fd_release(int fd FG_UNUSED) {}
static void conn_fd_acquire(int fd FG_UNUSED) {}
#endif

void conn_set_state(struct worker *w, struct conn *c, enum conn_state st)
{
    _Atomic uint32_t *counters[] = {
            [CONN_PREAUTH] = &w->stats.preauth, [CONN_LOGIN] = &w->stats.login,
            [CONN_BACKEND] = &w->stats.login,   [CONN_RELAY] = &w->stats.relay,
            [CONN_CLOSING] = &w->stats.closing,
    };
    static const enum metrics_phase phases[] = {
            [CONN_FREE] = MP_COUNT,    [CONN_PREAUTH] = MP_PREAUTH, [CONN_LOGIN] = MP_LOGIN,
            [CONN_BACKEND] = MP_LOGIN, [CONN_RELAY] = MP_RELAY,     [CONN_CLOSING] = MP_CLOSING,
    };
    if (c->state != CONN_FREE && counters[c->state])
        FG_SW_SUB(counters[c->state], 1);
    if (st != CONN_FREE && counters[st])
        FG_SW_ADD(counters[st], 1);
    metrics_phase_move(&w->metrics, c->proto, phases[c->state], phases[st]);
    c->state = (uint8_t)st;
}

void conn_log_begin(struct log_line *l, const struct conn *c, enum log_level lvl, const char *event)
{
    char peer[64];
    log_begin(l, lvl, event);
    if (l->skip)
        return;
    net_addr_str(&c->peer, peer, sizeof peer);
    log_cstr(l, "session", c->sid);
    log_cstr(l, "proto", conn_ops[c->proto]->name);
    log_cstr(l, "client", peer);
    if (c->user)
        log_cstr(l, "user", c->user);
    else if (c->s && c->s->cred)
        log_str(l, "user", c->s->cred->user, c->s->cred->user_len);
    if (c->baddr.sa.sa_family != AF_UNSPEC) {
        char b[64];
        net_addr_str(&c->baddr, b, sizeof b);
        log_cstr(l, "backend", b);
    }
    if (c->tls && tls_conn_done(c->tls))
        log_cstr(l, "tls", tls_conn_version(c->tls));
    proxyin_log(l, c);
}

void conn_plog(void *ctx, const char *dir, const char *line, size_t n)
{
    const struct conn *c = ctx;
    if (plog_enabled(c->proto)) /* off again: this session stops logging too */
        plog_write((enum fg_proto)c->proto, c->sid, dir, line, n);
}

/*
 * A session id unique across workers, restarts and instances behind one load
 * balancer: accept time, a random per-worker salt, the worker and a counter,
 * 12 bytes in base64url (16 characters, like Dovecot's), safe in IMAP strings
 * and POP3 XCLIENT.
 */
static void conn_make_sid(struct worker *w, struct conn *c)
{
    uint8_t raw[12];
    uint32_t t = (uint32_t)time(NULL), n = ++w->sid_counter;

    for (int i = 0; i < 4; i++) {
        raw[i] = (uint8_t)(t >> (24 - 8 * i));
        raw[8 + i] = (uint8_t)(n >> (24 - 8 * i));
    }
    memcpy(raw + 4, w->sid_salt, 3);
    raw[7] = (uint8_t)w->id;
    c->sid[base64url_encode(raw, sizeof raw, c->sid)] = 0;
}

/* Refuses a connection we have no room for, or its address no more, with
 * the protocol's last word bye, without a slot or before its slot is used.
 * A TLS client gets no clear-text line: it could not read it, and a
 * handshake is the cost a limit is there to refuse. */
static void conn_refuse(struct worker *w, int fd, const struct listener *l, enum sess_bye bye,
                        const char *why)
{
    uint8_t proto = l->proto;
    char line[128];
    int n = snprintf(line, sizeof line, "%s\r\n", conn_ops[proto]->bye[bye]);
    if (!l->tls) {
        ssize_t FG_UNUSED rc = send(fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    close(fd);
    STAT_ADD(w, refused, 1);
    /* Under a flood, one line a second per worker says it all. */
    w->refused_quiet++;
    if (w->refused_logged != w->now) {
        log_msg(LOG_WARN, "refused", "%u %s connection(s) refused: %s", w->refused_quiet,
                conn_ops[proto]->name, why);
        w->refused_logged = w->now;
        w->refused_quiet = 0;
    }
}

const char *conn_bye_line(uint8_t proto, enum sess_bye bye)
{
    return conn_ops[proto]->bye[bye];
}

static struct conn *conn_alloc(struct worker *w, const struct listener *l, int fd)
{
    if (w->nfree == 0 || w->stopping) {
        conn_refuse(w, fd, l, SESS_BYE_OVERLOAD,
                    w->stopping ? "shutting down" : "no free connection slot");
        return NULL;
    }
    if (!limits_conn_acquire(w->shared->limits, l->proto)) {
        STAT_ADD(w, refused_max_conns, 1);
        conn_refuse(w, fd, l, SESS_BYE_OVERLOAD, "MaxConnections reached");
        return NULL;
    }
    struct conn *c = &w->conns[w->free_slots[--w->nfree]];
    uint32_t gen = c->gen;
    memset(c, 0, sizeof *c);
    c->gen = gen;
    c->fd = fd;
    c->bfd = -1;
    c->proto = l->proto;
    c->timer.list = TL_COUNT;
    c->started = w->now;
    c->rd[0].pipe = c->rd[1].pipe = -1;
    fg_list_init(&c->timer.node);
    STAT_ADD(w, conns, 1);
    return c;
}

bool conn_limit_ip(struct worker *w, struct conn *c)
{
    if (limits_ip_acquire(w->shared->limits, c->proto, &c->peer, &c->lim_ip))
        return true;
    STAT_ADD(w, refused_per_ip, 1);
    return false;
}

struct conn *conn_new(struct worker *w, const struct listener *l, int fd)
{
    socklen_t len = sizeof(union net_addr);
    conn_fd_acquire(fd); /* before anything uses the number, refusal included */
    struct conn *c = conn_alloc(w, l, fd);

    if (!c)
        return NULL;
    if (getpeername(fd, &c->peer.sa, &len) < 0)
        c->peer.sa.sa_family = AF_UNSPEC;
    /* Behind a balancer the client's address comes with the PROXY header:
     * client_proxy_done() counts it then. */
    if (!l->proxy && !conn_limit_ip(w, c)) {
        char ip[INET6_ADDRSTRLEN], why[96];
        net_addr_ip(&c->peer, ip, sizeof ip);
        snprintf(why, sizeof why, "MaxConnectionFromSingleIP reached by %s", ip);
        conn_refuse(w, fd, l, SESS_BYE_PER_IP, why);
        conn_release(w, c); /* nothing is in flight yet: the slot goes straight back */
        return NULL;
    }
    STAT_ADD(w, accepted, 1);
    FG_SW_ADD(&w->metrics.accepted[c->proto], 1);
    conn_make_sid(w, c);
    conn_set_state(w, c, CONN_PREAUTH);
    return c;
}

void conn_tag(struct worker *w, struct conn *c, struct io_uring_sqe *sqe, enum fg_op op)
{
    io_uring_sqe_set_data64(sqe, ud_make(op, conn_slot(w, c), c->gen));
    c->inflight++;
    int side = conn_op_side(op);
    if (side >= 0)
        c->sideops[side]++;
}

void conn_enter(struct worker *w, struct conn *c, enum conn_state st)
{
    conn_set_state(w, c, st);
    c->flags |= CF_ENTER;
}

static struct sendq *conn_queue(struct conn *c, enum conn_side side)
{
    return side == SIDE_CLIENT ? &c->cq : &c->lg->bq;
}

/* One send of p..p+n on side's socket. Backend sends are also counted in
 * c->bops, so a backend socket given up during the login is not reused
 * before they are in. */
static void conn_send_chunk(struct worker *w, struct conn *c, enum conn_side side, const char *p,
                            uint32_t n)
{
    struct io_uring_sqe *sqe = ring_sqe(w);
    io_uring_prep_send(sqe, side == SIDE_CLIENT ? c->fd : c->bfd, p, n, MSG_NOSIGNAL);
    conn_tag(w, c, sqe, side == SIDE_CLIENT ? OP_C_SEND : OP_B_SEND);
    if (side == SIDE_BACKEND)
        c->bops++;
}

void conn_send(struct worker *w, struct conn *c, enum conn_side side)
{
    const char *p;
    uint32_t n;
    if (sendq_start(conn_queue(c, side), &p, &n))
        conn_send_chunk(w, c, side, p, n);
}

bool conn_sent(struct worker *w, struct conn *c, enum conn_side side, int res)
{
    const char *p;
    uint32_t n;
    if (!sendq_done(conn_queue(c, side), (uint32_t)res, &p, &n))
        return false;
    conn_send_chunk(w, c, side, p, n);
    return true;
}

void conn_tls_failed(struct worker *w, struct conn *c, const char *why)
{
    struct log_line l;
    STAT_ADD(w, tls_failed, 1);
    conn_log_begin(&l, c, LOG_INFO, "tls_error");
    log_cstr(&l, "reason", tls_conn_error(c->tls));
    log_end(&l);
    conn_close(w, c, why);
}

void conn_drop_login(struct conn *c)
{
    struct conn_login *lg = c->lg;
    if (!lg)
        return;
    backend_login_free(&lg->bl);
    krb_sess_free(lg->req.krb);
    sendq_free(&lg->bq);
    buf_free(&lg->bout);
    explicit_bzero(lg, sizeof *lg);
    free(lg);
    c->lg = NULL;
}

void conn_flush_backend(struct worker *w, struct conn *c)
{
    if (c->btls && tlsio_backend_encrypt(c) != FG_OK) {
        buf_free(&c->lg->bout); /* out of memory: the backend gets nothing more */
        return;
    }
    conn_send(w, c, SIDE_BACKEND);
}

void conn_arm_recv(struct worker *w, struct conn *c)
{
    if (c->flags & (CF_C_RECV | CF_CLOSE_AFTER | CF_C_EOF))
        return;
    if (c->state != CONN_PREAUTH && c->state != CONN_LOGIN && c->state != CONN_BACKEND)
        return;
    /* Back-pressure: while a login is pending, input piles up unparsed. */
    if (buf_avail(&c->s->in) > 2 * c->s->conf->max_command)
        return;
    struct io_uring_sqe *sqe = ring_sqe(w);
    io_uring_prep_recv(sqe, c->fd, NULL, FG_RECV_BUF_SZ, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = FG_BUF_GROUP;
    conn_tag(w, c, sqe, OP_C_RECV);
    c->flags |= CF_C_RECV;
}

void conn_input_done(struct worker *w, struct conn *c)
{
    if (c->state != CONN_CLOSING)
        conn_arm_recv(w, c);
}

void conn_flush(struct worker *w, struct conn *c)
{
    if (c->tls && tlsio_client_encrypt(c) != FG_OK) {
        conn_close(w, c, "TLS error");
        return;
    }
    conn_send(w, c, SIDE_CLIENT);
    if ((c->flags & CF_CLOSE_AFTER) && sendq_idle(&c->cq))
        conn_close(w, c, c->why);
}

void conn_close_fd(struct worker *w, struct conn *c, int fd, enum fg_op cancel_op)
{
    if (io_uring_sq_space_left(&w->ring) < 2)
        io_uring_submit(&w->ring);
    struct io_uring_sqe *sqe = ring_sqe(w);
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    sqe->flags |= IOSQE_IO_HARDLINK;
    conn_tag(w, c, sqe, cancel_op);
    sqe = ring_sqe(w);
    conn_fd_release(fd);
    io_uring_prep_close(sqe, fd);
    conn_tag(w, c, sqe, cancel_op + 1);
}

/* The client's socket as the connection ends: its close is the completion
 * that releases the slot, so it always goes through the ring; the cancel
 * only when something is in flight on it. */
static void conn_close_client(struct worker *w, struct conn *c)
{
    if (c->sideops[SIDE_CLIENT] > 0) {
        conn_close_fd(w, c, c->fd, OP_CANCEL);
        return;
    }
    struct io_uring_sqe *sqe = ring_sqe(w);
    conn_fd_release(c->fd);
    io_uring_prep_close(sqe, c->fd);
    conn_tag(w, c, sqe, OP_CLOSE);
}

/* The backend's socket as the connection ends. Usually nothing is in flight
 * on it (the backend's FIN was its last completion): then close(2) at once,
 * instead of a cancel and a close and their two completions. */
static void conn_close_backend(struct worker *w, struct conn *c)
{
    if (c->sideops[SIDE_BACKEND] > 0) {
        conn_close_fd(w, c, c->bfd, OP_CANCEL);
        return;
    }
    conn_fd_release(c->bfd);
    close(c->bfd);
}

void conn_close(struct worker *w, struct conn *c, const char *reason)
{
    struct log_line l;

    if (c->state == CONN_CLOSING || c->state == CONN_FREE)
        return;
    conn_log_begin(&l, c, c->user ? LOG_INFO : LOG_DEBUG, "disconnect");
    log_cstr(&l, "reason", reason ? reason : "closed");
    log_fmt(&l, "duration_s", "%u", w->now - c->started);
    if (c->state == CONN_RELAY)
        log_fmt(&l, "bytes", "%llu/%llu", (unsigned long long)c->relayed[0],
                (unsigned long long)c->relayed[1]);
    log_end(&l);
    ring_timer_remove(&c->timer);
    /* A close_notify, when it cannot cut a record in two. */
    if (c->tls && tls_conn_done(c->tls) && !c->cq.busy && buf_avail(&c->cq.q) == 0 &&
        (c->state != CONN_RELAY || c->rd[1].pending == 0))
        tlsio_close_notify(c->tls, c->fd);
    pipes_release(w, &c->rd[0]);
    pipes_release(w, &c->rd[1]);
    conn_close_client(w, c);
    c->fd = -1;
    if (c->bfd >= 0) {
        conn_close_backend(w, c);
        c->bfd = -1;
        STAT_SUB(w, backend_fds, 1);
    }
    conn_set_state(w, c, CONN_CLOSING);
}

void conn_release(struct worker *w, struct conn *c)
{
    if (c->s)
        c->s->ops->destroy(c->s);
    c->s = NULL;
    conn_drop_login(c);
    tlsio_free(c);
    proxyin_free(c);
    sendq_free(&c->cq);
    if (c->flags & CF_B_SESSION)
        atomic_fetch_sub_explicit(&c->bh->sessions, 1, memory_order_relaxed);
    free(c->user);
    c->user = NULL;
    free(c->mailbox);
    c->mailbox = NULL;
    conn_set_state(w, c, CONN_FREE);
    c->gen++;
    limits_release(w->shared->limits, &c->lim_ip);
    limits_release(w->shared->limits, &c->lim_user);
    limits_conn_release(w->shared->limits, c->proto);
    STAT_SUB(w, conns, 1);
    w->free_slots[w->nfree++] = conn_slot(w, c);
}
