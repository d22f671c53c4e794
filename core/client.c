/*
 * The client phase: accept, greeting, pre-login commands, STARTTLS and the
 * client's TLS handshake. See client.h.
 */
#include "client.h"

#include "../tls/tls.h"
#include "conn.h"
#include "proxyin.h"
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
static bool client_refused(struct worker *w, struct conn *c, bool tls)
{
    struct throttle *thr = w->dir->thr;
    if (!thr || !thr->on || !thr_addr_banned(thr, &c->peer, fg_clock_ms()))
        return false;
    STAT_ADD(w, refused, 1);
    if (tls)
        conn_close(w, c, "address refused by the throttle");
    else
        client_bye(w, c, SESS_BYE_OVERLOAD, "address refused by the throttle");
    return true;
}

/*
 * THE HOOK FOR PER-ADDRESS POLICY. c->peer is now the client's own address
 * for good: the socket's peer, or on a ProxyProtocolBindings address the
 * client a trusted load balancer named (c->pp->proxy is the balancer).
 * Called exactly once per connection, before the greeting and before any
 * TLS handshake, and never for a connection refused before (an untrusted
 * balancer, a bad or late PROXY header). Limits per address and throttling
 * belong here, so that behind a balancer they count clients, not the
 * balancer. Returns false after closing c.
 */
static bool client_proxy_done(struct worker *w, struct conn *c, bool tls)
{
    /* Behind a balancer the address is counted only now (conn_new skips it). */
    if (c->pp && !conn_limit_ip(w, c)) {
        if (tls)
            conn_close(w, c, "MaxConnectionFromSingleIP reached");
        else
            client_bye(w, c, SESS_BYE_PER_IP, "MaxConnectionFromSingleIP reached");
        return false;
    }
    return !client_refused(w, c, tls);
}

/* The client's address is known: the greeting, or the TLS handshake that
 * comes before it on an SSL binding. hint: a name for the certificate when
 * the ClientHello has no SNI (PROXY v2's AUTHORITY), or "". Returns false
 * after closing c. */
static bool client_start(struct worker *w, struct conn *c, bool tls, const char *hint)
{
    if (!client_proxy_done(w, c, tls))
        return false;
    ring_timer_touch(w, &c->timer, TL_PREAUTH + c->proto);
#ifdef FG_DEBUG
    struct log_line ll;
    conn_log_begin(&ll, c, LOG_DEBUG, "connect");
    log_end(&ll);
#endif
    if (tls) {
        /* The greeting waits for the handshake. */
        if (tlsio_client_start(w, c, true) != FG_OK) {
            conn_close(w, c, "out of memory");
            return false;
        }
        if (hint[0])
            tls_conn_sni_hint(c->tls, hint);
    } else {
        c->s->ops->greeting(c->s);
        conn_flush(w, c);
    }
    return c->state != CONN_CLOSING;
}

/* A PROXY binding refuses the connection: no greeting, no TLS, a bare
 * close. why: untrusted, malformed, timeout or incomplete; detail: the
 * parser's reason. */
static void client_proxy_refuse(struct worker *w, struct conn *c, const char *why,
                                const char *detail)
{
    struct log_line l;
    STAT_ADD(w, proxy_refused, 1);
    conn_log_begin(&l, c, LOG_INFO, "proxy_refused");
    log_cstr(&l, "reason", why);
    if (detail)
        log_cstr(&l, "detail", detail);
    log_fmt(&l, "received", "%u", proxyin_received(c));
    log_end(&l);
    conn_close(w, c, "PROXY header refused");
}

void client_accept(struct worker *w, const struct listener *l, int fd)
{
    struct conn *c = conn_new(w, l, fd);

    if (!c)
        return;
    /* Only a trusted balancer may name the client: anyone else is gone
     * before a byte is read. */
    if (l->proxy && !proxyin_trusted(w, c)) {
        client_proxy_refuse(w, c, "untrusted", NULL);
        return;
    }
    c->s = client_ops[l->proto]->create(&w->cfg->proto[l->proto].sess, &c->cq.q);
    if (!c->s) {
        conn_close(w, c, "out of memory");
        return;
    }
    if (plog_enabled(c->proto)) {
        c->s->plog = conn_plog;
        c->s->plog_ctx = c;
    }
    if (l->proxy) {
        /* The header first, within ProxyProtocolTimeout of the accept. */
        if (proxyin_start(c, l->tls) != FG_OK) {
            conn_close(w, c, "out of memory");
            return;
        }
        ring_timer_touch(w, &c->timer, TL_PROXY + c->proto);
    } else if (!client_start(w, c, l->tls, "")) {
        return;
    }
    conn_arm_recv(w, c);
}

/* Runs the session on the bytes received so far and acts on its answer.
 * Only a whole command restarts the pre-login clock (every command is
 * answered, or starts a login, STARTTLS or the close): the bytes of one
 * that never ends, trickled in to hold the connection (a slowloris), do
 * not. */
static void client_run(struct worker *w, struct conn *c)
{
    uint32_t queued = buf_avail(&c->cq.q);
    enum sess_action act = c->s->ops->input(c->s);

    if (c->state == CONN_PREAUTH && (act != SESS_AGAIN || buf_avail(&c->cq.q) > queued))
        ring_timer_touch(w, &c->timer, TL_PREAUTH + c->proto);
    switch (act) {
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
    /* A balancer's health check connects and closes: not a refusal. */
    if (proxyin_waiting(c) && proxyin_received(c) > 0) {
        client_proxy_refuse(w, c, "incomplete", "closed before the header was whole");
        return;
    }
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

static void client_data(struct worker *w, struct conn *c, const char *data, size_t n);

/* A name fit to pick a certificate by: letters, digits, dots and hyphens. */
static bool client_host_name(const char *s)
{
    size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
    return n > 0 && s[n] == 0;
}

/* Bytes while the PROXY header is awaited. Once it is whole, the client
 * starts as on any binding, and the bytes after the header go on as if just
 * received. */
static void client_proxy_input(struct worker *w, struct conn *c, const char *data, size_t n)
{
    const char *why, *rest;
    size_t rest_n;
    int rc = proxyin_input(c, data, n, &why, &rest, &rest_n);

    if (rc == FG_AGAIN) {
        conn_input_done(w, c);
        return;
    }
    if (rc == FG_ERROR) {
        client_proxy_refuse(w, c, "malformed", why);
        return;
    }
    STAT_ADD(w, proxy_accepted, 1);
    const char *hint = client_host_name(c->pp->authority) ? c->pp->authority : "";
    if (!client_start(w, c, c->pp->tls, hint))
        return;
    if (rest_n > 0)
        client_data(w, c, rest, rest_n);
    else
        conn_input_done(w, c);
    proxyin_consumed(c);
}

/* Received bytes, before the relay: to the session, through TLS if any. */
static void client_data(struct worker *w, struct conn *c, const char *data, size_t n)
{
    if (proxyin_waiting(c)) {
        client_proxy_input(w, c, data, n);
        return;
    }
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
        if (handshaking) {
            /* A handshake is timed from its start; the greeting after it
             * starts the clock again, as on a plain binding. */
            client_tls_ready(w, c);
            ring_timer_touch(w, &c->timer, TL_PREAUTH + c->proto);
        }
    } else if (buf_append(&c->s->in, data, n) != FG_OK) {
        conn_close(w, c, "out of memory");
        return;
    }
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
    char *data = ring_buf(w, cqe);
    client_data(w, c, data, (size_t)res);
    /* Before the relay these bytes may be a password in clear text (LOGIN,
     * PASS, AUTHENTICATE): the session copied what it needs, and the buffer
     * goes back to the ring, where it would sit until reused. */
    explicit_bzero(data, (size_t)res);
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
    if (c->s && !c->cq.busy && !(c->flags & CF_TLS_HS) && !proxyin_waiting(c)) {
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
    if (proxyin_waiting(c))
        client_proxy_refuse(w, c, "timeout", "no whole header within ProxyProtocolTimeout");
    else
        client_bye(w, c, SESS_BYE_TIMEOUT, "pre-login timeout");
}

void client_shutdown(struct worker *w, struct conn *c, enum sess_bye bye, const char *why)
{
    if (!c->s)
        conn_close(w, c, why);
    else
        client_bye(w, c, bye, why);
}
