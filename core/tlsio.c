/*
 * TLS on a connection, both sides: the glue between the ring's bytes and
 * tls/ (wolfSSL through memory). See tlsio.h.
 *
 * Client side: received ciphertext is fed to the TLS engine; the handshake
 * runs as bytes arrive; plaintext goes where plain bytes would have gone
 * (the session's input). The session's replies go to c->tout and are
 * encrypted into the client send queue when conn.c sends, so the send path
 * and its in-flight rules do not change.
 *
 * Backend side: the same, with the login dialogue's input (bl->in) and
 * output (lg->bout) in place of the session's.
 *
 * Nothing here blocks: a handshake that needs bytes says so and the worker
 * arms another receive. The pre-login timer is not touched while the client
 * handshakes, so a handshake that stalls or dribbles still ends at
 * PreAuthenticatedConnectionTimeout.
 */
#include "tlsio.h"

#include "../tls/tls.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

int tlsio_move_out(struct tls_conn *t, struct buf *q)
{
    const uint8_t *p;
    size_t n = tls_conn_pending(t, &p);
    if (n == 0)
        return FG_OK;
    if (buf_append(q, p, n) != FG_OK)
        return FG_ERROR;
    tls_conn_sent(t, n);
    return FG_OK;
}

void tlsio_close_notify(struct tls_conn *t, int fd)
{
    const uint8_t *p;
    tls_conn_close_notify(t);
    size_t n = tls_conn_pending(t, &p);
    if (n > 0) {
        ssize_t FG_UNUSED rc = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        tls_conn_sent(t, n);
    }
}

void tlsio_free(struct conn *c)
{
    tls_conn_free(c->tls);
    tls_conn_free(c->btls);
    c->tls = c->btls = NULL;
    buf_free(&c->tout);
}

int tlsio_client_start(struct worker *w, struct conn *c, bool implicit)
{
    struct tls_store *st = w->tls->store[c->proto];

    if (!st || !(c->tls = tls_store_conn(st)))
        return FG_ERROR;
    c->flags |= CF_TLS_HS | (implicit ? CF_TLS_GREET : 0);
    /* From here on the session writes plaintext for encryption, and no
     * clear-text byte can reach it any more. */
    c->s->out = &c->tout;
    c->s->tls = true;
    return FG_OK;
}

/* Appends the plaintext TLS has ready to dst. 0: nothing, 1: some, FG_DONE:
 * the peer closed TLS (after any plaintext before its close_notify), FG_ERROR:
 * a failure. */
static int tlsio_drain(struct tls_conn *t, struct buf *dst)
{
    int got = 0;
    for (;;) {
        if (buf_reserve(dst, FG_TLS_CHUNK) != FG_OK)
            return FG_ERROR;
        ssize_t n = tls_conn_read(t, dst->data + dst->len, dst->cap - dst->len);
        if (n == FG_AGAIN)
            return got;
        if (n == FG_DONE || n == FG_ERROR)
            return (int)n;
        dst->len += (uint32_t)n;
        got = 1;
    }
}

/* The handshake finished: count it. The caller greets (implicit TLS). */
static void tlsio_client_ready(struct worker *w, struct conn *c)
{
    c->flags &= ~CF_TLS_HS;
    STAT_ADD(w, tls_handshakes, 1);
    if (tls_conn_resumed(c->tls))
        STAT_ADD(w, tls_resumed, 1);
}

/* Runs the handshake on what was fed. FG_OK when it is done, FG_AGAIN while
 * it goes on, FG_ERROR with a reason. Its records go to the send queue. */
static int tlsio_client_handshake(struct worker *w, struct conn *c, const char **why)
{
    int rc = tls_conn_handshake(c->tls);
    if (tlsio_move_out(c->tls, &c->cq.q) != FG_OK) {
        *why = "out of memory";
        return FG_ERROR;
    }
    if (rc == FG_ERROR)
        *why = "TLS handshake failed";
    if (rc == FG_OK)
        tlsio_client_ready(w, c);
    return rc;
}

int tlsio_client_input(struct worker *w, struct conn *c, const char *data, size_t n,
                       struct buf *dst, const char **why)
{
    if (tls_conn_feed(c->tls, data, n) != FG_OK) {
        *why = "TLS input overflow";
        return FG_ERROR;
    }
    if (c->flags & CF_TLS_HS) {
        int rc = tlsio_client_handshake(w, c, why);
        if (rc != FG_OK)
            return rc;
    }
    /* A client may send its first command with its last handshake flight. */
    int got = tlsio_drain(c->tls, dst);
    if (got == FG_ERROR) {
        *why = "TLS error";
        return FG_ERROR;
    }
    if (got == FG_DONE)
        c->flags |= CF_C_EOF; /* a clean close, as a TCP FIN: not a TLS error */
    /* Reading may have queued TLS records (a TLS 1.3 KeyUpdate answer). */
    if (tlsio_move_out(c->tls, &c->cq.q) != FG_OK) {
        *why = "out of memory";
        return FG_ERROR;
    }
    /* Both queues are empty now unless a record is half in: a session that
     * waits for its client keeps no TLS buffers. */
    tls_conn_trim(c->tls);
    return FG_OK;
}

/* Encrypts all of plain and queues the records on q; plain is left empty
 * and holds no memory. */
static int tlsio_encrypt(struct tls_conn *t, struct buf *plain, struct buf *q)
{
    if (buf_avail(plain) == 0)
        return FG_OK;
    if (tls_conn_write(t, buf_head(plain), buf_avail(plain)) != FG_OK)
        return FG_ERROR;
    buf_consume(plain, buf_avail(plain));
    buf_trim(plain);
    return tlsio_move_out(t, q);
}

int tlsio_client_encrypt(struct conn *c)
{
    if (!c->tls || (c->flags & CF_TLS_HS))
        return FG_OK;
    return tlsio_encrypt(c->tls, &c->tout, &c->cq.q);
}

int tlsio_backend_start(struct conn *c)
{
    struct conn_login *lg = c->lg;
    const struct backend_target *t = lg->req.route.target;

    /* The name the route gave this host (its [databases] entry, its
     * dNSHostName, DefaultServer), unless TlsServerName overrides it. */
    if (!(c->btls = tls_client_conn(t->policy->tls_cl, backend_tls_name(t, lg->addr_idx))))
        return FG_ERROR;
    /* This worker's last session with this address, name and policy. */
    if (t->policy->resume) {
        char peer[64];
        net_addr_str(&c->baddr, peer, sizeof peer);
        tls_conn_resume(c->btls, peer);
    }
    c->flags |= CF_B_TLS_HS;
    lg->bl.out = &lg->bout;
    /* The ClientHello goes out at once. */
    if (tls_conn_handshake(c->btls) == FG_ERROR)
        return FG_ERROR;
    return tlsio_move_out(c->btls, &lg->bq.q);
}

int tlsio_backend_input(struct worker *w, struct conn *c, const char *data, size_t n,
                        const char **why)
{
    struct conn_login *lg = c->lg;

    *why = "TLS to the backend failed";
    if (tls_conn_feed(c->btls, data, n) != FG_OK)
        return FG_ERROR;
    if (c->flags & CF_B_TLS_HS) {
        int rc = tls_conn_handshake(c->btls);
        if (tlsio_move_out(c->btls, &lg->bq.q) != FG_OK)
            return FG_ERROR;
        if (rc != FG_OK) {
            *why = tls_conn_error(c->btls);
            return rc;
        }
        c->flags &= ~CF_B_TLS_HS;
        STAT_ADD(w, backend_tls_handshakes, 1);
        if (tls_conn_resumed(c->btls))
            FG_SW_ADD(&w->metrics.backend_tls_resumed, 1);
        if (lg->par.starttls)
            lg->bl.ops->tls_done(&lg->bl);
    }
    int got = tlsio_drain(c->btls, &lg->bl.in);
    if (got == FG_DONE) {
        *why = "the backend closed TLS";
        return FG_DONE;
    }
    if (got == FG_ERROR) {
        *why = tls_conn_error(c->btls);
        return FG_ERROR;
    }
    return tlsio_move_out(c->btls, &lg->bq.q);
}

int tlsio_backend_encrypt(struct conn *c)
{
    if (!c->btls || (c->flags & CF_B_TLS_HS))
        return FG_OK;
    return tlsio_encrypt(c->btls, &c->lg->bout, &c->lg->bq.q);
}
