/*
 * The PROXY protocol header on a connection to a ProxyProtocolBindings
 * address: the load balancer's first bytes, read before anything else --
 * before the greeting on a plain binding, before the TLS handshake on an
 * SSL binding -- and parsed by proto/proxy_proto.c.
 *
 * Contract, as tlsio.h's: these functions change only the connection's
 * PROXY state (c->pp) and, once a header is accepted, c->peer. They never
 * close the connection, never log a refusal and never start a phase: the
 * client phase (client.c) decides. Any module may call them; they call
 * nothing in core/ above the ring.
 */
#ifndef FG_PROXYIN_H
#define FG_PROXYIN_H

#include "../base/log.h"
#include "../proto/proxy_proto.h"
#include "conn_types.h"

/* What a connection keeps of its PROXY header: allocated only on PROXY
 * bindings, freed with the slot. */
struct conn_proxy {
    struct pp_parser p;
    struct buf in;        /* the header's bytes, and any after them, until it is whole */
    bool done;            /* a header was accepted; c->peer is the client it names */
    bool tls;             /* the binding is an SSL binding: TLS follows the header */
    uint8_t version;      /* 1 or 2 */
    union net_addr proxy; /* the balancer's own address; AF_UNSPEC for LOCAL/UNKNOWN */
    char authority[PP_AUTHORITY_MAX + 1];
    char ssl_version[PP_SSL_STR_MAX + 1]; /* PP2_TYPE_SSL: how the balancer's client spoke TLS */
    char ssl_cipher[PP_SSL_STR_MAX + 1];
};

/* Whether the socket's peer may send a PROXY header here (TrustedProxies). */
bool proxyin_trusted(const struct worker *w, const struct conn *c);

/* Sets up the header's state; tls: an SSL binding. FG_OK or FG_ERROR (out
 * of memory). */
int proxyin_start(struct conn *c, bool tls);

/* True while the connection waits for its header. */
static inline bool proxyin_waiting(const struct conn *c)
{
    return c->pp && !c->pp->done;
}

/*
 * Bytes received while waiting for the header. FG_AGAIN: more are needed.
 * FG_ERROR: not a valid header, with the parser's reason in *why. FG_OK: a
 * header was accepted (c->peer is now the client it names, unless it was
 * LOCAL or UNKNOWN) and *rest_r, *rest_n_r are the bytes that followed it,
 * to be handled as if just received; they stay valid until
 * proxyin_consumed().
 */
int proxyin_input(struct conn *c, const char *data, size_t n, const char **why, const char **rest_r,
                  size_t *rest_n_r);

/* The bytes after the header were handled: the header's memory goes. */
void proxyin_consumed(struct conn *c);

/* Bytes the header has received so far, for the log. */
static inline uint32_t proxyin_received(const struct conn *c)
{
    return c->pp ? buf_avail(&c->pp->in) : 0;
}

/* Adds the header's fields to a log line about c: proxy= (the balancer),
 * pp_authority=, pp_ssl=, pp_cipher= when the header had them. */
void proxyin_log(struct log_line *l, const struct conn *c);

void proxyin_free(struct conn *c);

#endif
