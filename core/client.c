/*
 * The client phase: accept, greeting, pre-login commands, STARTTLS and the
 * client's TLS handshake. See client.h.
 */
#include "client.h"

#include "../tls/tls.h"
#include "conn.h"
#include "tlsio.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

static const struct sess_ops *const client_ops[FG_PROTO_COUNT] = {&imap_sess_ops, &pop3_sess_ops};

/* The client's TLS handshake is done: an implicit-TLS session greets now. */
static void client_tls_ready(struct worker *w, struct conn *c)
{
    (void)w;
#ifdef FG_DEBUG
    struct log_line l;
    conn_log_begin(&l, c, LOG_DEBUG, "tls");
    log_cstr(&l, "cipher", tls_conn_cipher(c->tls));
    log_cstr(&l, "sni", tls_conn_sni(c->tls));
    log_end(&l);
#endif
    if (c->flags & CF_TLS_GREET) {
        c->flags &= ~CF_TLS_GREET;
        c->s->ops->greeting(c->s);
    }
}

static void client_bye(struct worker *w, struct conn *c, enum sess_bye why, const char *reason);

/* An address the throttle refuses (AddressFailureThreshold) is turned away
 * at once: a plain binding hears why, a TLS binding gets a bare close, as
 * for any refusal before the handshake. */
static bool client_refused(struct worker *w, struct conn *c, const struct listener *l)
{
    struct throttle *thr = w->dir->thr;
    if (!thr || !thr->on || !thr_addr_banned(thr, &c->peer, fg_clock_ms()))
        return false;
    STAT_ADD(w, refused, 1);
    if (l->tls)
        conn_close(w, c, "address refused by the throttle");
    else
        client_bye(w, c, SESS_BYE_OVERLOAD, "address refused by the throttle");
    return true;
}

void client_accept(struct worker *w, const struct listener *l, int fd)
{
    struct conn *c = conn_new(w, l, fd);

    if (!c)
        return;
    c->s = client_ops[l->proto]->create(&w->cfg->proto[l->proto].sess, &c->cq.q);
    if (!c->s) {
        conn_close(w, c, "out of memory");
        return;
    }
    if (plog_fds[c->proto] >= 0) {
        c->s->plog = conn_plog;
        c->s->plog_ctx = c;
    }
    if (client_refused(w, c, l))
        return;
    ring_timer_touch(w, &c->timer, TL_PREAUTH + c->proto);
#ifdef FG_DEBUG
    struct log_line ll;
    conn_log_begin(&ll, c, LOG_DEBUG, "connect");
    log_end(&ll);
#endif
    if (l->tls) {
        /* The greeting waits for the handshake. */
        if (tlsio_client_start(w, c, true) != FG_OK) {
            conn_close(w, c, "out of memory");
            return;
        }
    } else {
        c->s->ops->greeting(c->s);
        conn_flush(w, c);
    }
    conn_arm_recv(w, c);
}

/* Runs the session on the bytes received so far and acts on its answer. */
static void client_run(struct worker *w, struct conn *c)
{
    switch (c->s->ops->input(c->s)) {
    case SESS_AGAIN:
        break;
    case SESS_LOGIN:
        conn_enter(w, c, CONN_LOGIN);
        break;
    case SESS_CLOSE:
        c->flags |= CF_CLOSE_AFTER;
        c->why = "client logged out";
        break;
    case SESS_STARTTLS:
        /* The OK goes out in clear text; then only TLS records count. */
        conn_flush(w, c);
        if (tlsio_client_start(w, c, false) != FG_OK)
            conn_close(w, c, "out of memory");
        break;
    }
    if (c->state != CONN_CLOSING)
        conn_flush(w, c);
}

void client_resume(struct worker *w, struct conn *c)
{
    ring_timer_touch(w, &c->timer, TL_PREAUTH + c->proto);
    client_run(w, c);
    conn_input_done(w, c);
}

/* The client will send nothing more. */
static void client_on_eof(struct worker *w, struct conn *c)
{
    c->flags |= CF_C_EOF;
    if (c->state == CONN_PREAUTH) {
        /* Commands that arrived were served; send their replies. */
        c->flags |= CF_CLOSE_AFTER;
        c->why = "client closed";
        conn_flush(w, c);
    } else {
        /* Nobody is left to log in for: free the backend at once, as
         * Dovecot's and nginx's login processes do. */
        conn_close(w, c, "client closed during login");
    }
}

/* Received bytes, before the relay: to the session, through TLS if any. */
static void client_data(struct worker *w, struct conn *c, const char *data, size_t n)
{
    if (c->tls) {
        bool handshaking = c->flags & CF_TLS_HS;
        const char *why;
        int rc = tlsio_client_input(w, c, data, n, &c->s->in, &why);
        if (rc == FG_ERROR) {
            conn_tls_failed(w, c, why);
            return;
        }
        if (rc == FG_AGAIN) {
            conn_flush(w, c); /* the handshake's next flight */
            conn_input_done(w, c);
            return;
        }
        if (handshaking)
            client_tls_ready(w, c);
    } else if (buf_append(&c->s->in, data, n) != FG_OK) {
        conn_close(w, c, "out of memory");
        return;
    }
    /* A handshake is timed from its start, not from its last byte. */
    if (c->state == CONN_PREAUTH && !(c->flags & CF_TLS_HS))
        ring_timer_touch(w, &c->timer, TL_PREAUTH + c->proto);
    client_run(w, c);
    if (c->state != CONN_CLOSING && (c->flags & CF_C_EOF))
        client_on_eof(w, c); /* the client's close_notify */
    conn_input_done(w, c);
}

void client_on_recv(struct worker *w, struct conn *c, struct io_uring_cqe *cqe)
{
    int res = cqe->res;

    c->flags &= ~CF_C_RECV;
    if (res == -ENOBUFS) {
        /* Buffers go back to the ring as completions are reaped. */
        conn_arm_recv(w, c);
        return;
    }
    if (res == 0) {
        client_on_eof(w, c);
        return;
    }
    if (res < 0) {
        conn_close(w, c, strerror(-res));
        return;
    }
    client_data(w, c, ring_buf(w, cqe), (size_t)res);
}

void client_on_sent(struct worker *w, struct conn *c, int res)
{
    if (res < 0)
        conn_close(w, c, strerror(-res));
    else if (!conn_sent(w, c, SIDE_CLIENT, res))
        conn_flush(w, c);
}

/* Sends a last word without waiting for it, then closes: a client that does
 * not read must not keep its connection open. Inside TLS the word is
 * encrypted; during a handshake there is nobody to say it to. */
static void client_bye(struct worker *w, struct conn *c, enum sess_bye why, const char *reason)
{
    if (c->s && !c->cq.busy && !(c->flags & CF_TLS_HS)) {
        buf_free(&c->cq.q);
        sess_bye(c->s, why);
        if (c->tls && tlsio_client_encrypt(c) != FG_OK)
            buf_free(&c->cq.q);
        ssize_t FG_UNUSED rc =
                send(c->fd, buf_head(&c->cq.q), buf_avail(&c->cq.q), MSG_DONTWAIT | MSG_NOSIGNAL);
        buf_free(&c->cq.q);
    }
    conn_close(w, c, reason);
}

void client_expire(struct worker *w, struct conn *c)
{
    client_bye(w, c, SESS_BYE_TIMEOUT, "pre-login timeout");
}

void client_shutdown(struct worker *w, struct conn *c)
{
    if (!c->s)
        conn_close(w, c, "server shutdown");
    else
        client_bye(w, c, SESS_BYE_SHUTDOWN, "server shutdown");
}
