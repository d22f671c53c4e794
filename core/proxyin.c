/*
 * The PROXY protocol header coming in. See proxyin.h.
 *
 * The header's bytes are gathered in a small buffer, since the parser reads
 * the header from its first byte; once a header is whole, the bytes after
 * it in the same buffer are handed back, so that a ClientHello or a
 * pipelined command sent with the header is not lost. The buffer is freed
 * once they are handled: an accepted connection keeps only the few fields
 * its log lines carry.
 */
#include "proxyin.h"

#include <stdlib.h>
#include <string.h>

bool proxyin_trusted(const struct worker *w, const struct conn *c)
{
    return config_cidrs_match(&w->cfg->proto[c->proto].trusted, &c->peer);
}

int proxyin_start(struct conn *c, bool tls)
{
    if (!(c->pp = calloc(1, sizeof *c->pp)))
        return FG_ERROR;
    pp_init(&c->pp->p);
    c->pp->tls = tls;
    return FG_OK;
}

/* Keeps what the log lines and the TLS handshake need of the header. */
static void proxyin_accept(struct conn *c, const struct pp_header *h)
{
    struct conn_proxy *pp = c->pp;
    pp->done = true;
    pp->version = h->version;
    if (!h->local) {
        pp->proxy = c->peer;
        c->peer = h->src;
    }
    memcpy(pp->authority, h->authority, sizeof pp->authority);
    memcpy(pp->ssl_version, h->ssl_version, sizeof pp->ssl_version);
    memcpy(pp->ssl_cipher, h->ssl_cipher, sizeof pp->ssl_cipher);
}

int proxyin_input(struct conn *c, const char *data, size_t n, const char **why, const char **rest_r,
                  size_t *rest_n_r)
{
    struct conn_proxy *pp = c->pp;
    struct pp_header h;

    if (buf_append(&pp->in, data, n) != FG_OK) {
        *why = "out of memory";
        return FG_ERROR;
    }
    switch (pp_parse(&pp->p, (const uint8_t *)buf_head(&pp->in), buf_avail(&pp->in), &h)) {
    case PP_AGAIN:
        return FG_AGAIN;
    case PP_ERROR:
        *why = pp->p.why;
        return FG_ERROR;
    case PP_DONE:
        break;
    }
    proxyin_accept(c, &h);
    *rest_r = buf_head(&pp->in) + h.len;
    *rest_n_r = buf_avail(&pp->in) - h.len;
    return FG_OK;
}

void proxyin_consumed(struct conn *c)
{
    if (c->pp)
        buf_free(&c->pp->in);
}

void proxyin_log(struct log_line *l, const struct conn *c)
{
    const struct conn_proxy *pp = c->pp;
    if (!pp || !pp->done || l->skip)
        return;
    if (pp->proxy.sa.sa_family != AF_UNSPEC) {
        char a[64];
        net_addr_str(&pp->proxy, a, sizeof a);
        log_cstr(l, "proxy", a);
    }
    /* From the balancer, which the client may have told anything. */
    if (pp->authority[0])
        log_cstr(l, "pp_authority", pp->authority);
    if (pp->ssl_version[0])
        log_cstr(l, "pp_ssl", pp->ssl_version);
    if (pp->ssl_cipher[0])
        log_cstr(l, "pp_cipher", pp->ssl_cipher);
}

void proxyin_free(struct conn *c)
{
    if (!c->pp)
        return;
    buf_free(&c->pp->in);
    free(c->pp);
    c->pp = NULL;
}
