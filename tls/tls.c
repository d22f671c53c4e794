/*
 * wolfSSL through memory: see tls.h. The WOLFSSL object is created only once
 * the first record (the ClientHello) is buffered, so that its SNI can pick
 * the certificate's context before wolfSSL sees a byte.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "../base/common.h"
#include "tls_resume.h"

/* AEAD with ECDHE only; TLS 1.3's three suites first. */
static const char TLS_CIPHERS[] =
        "TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

#define TLS_RECORD_HEADER 5
#define TLS_HANDSHAKE     0x16

struct tls_site {
    char *name; /* NULL: the default */
    WOLFSSL_CTX *ctx;
};

struct tls_server {
    struct tls_site *sites;
    size_t n;
    size_t dflt;
    _Atomic unsigned refs; /* the owner's, and one per connection */
};

struct tls_store {
    pthread_mutex_t lock; /* taken once per TLS accept and per reload */
    struct tls_server *cur;
};

struct tls_buf {
    uint8_t *p;
    size_t off, len, cap;
};

struct tls_client {
    WOLFSSL_CTX *ctx;
    bool verify;
    uint64_t id; /* names the policy in resumption keys: never reused */
};

static _Atomic uint64_t tls_client_ids;

struct tls_conn {
    struct tls_server *srv; /* NULL on the client side */
    WOLFSSL *ssl;
    struct tls_buf in, out;
    int done; /* handshake complete */
    char sni[TLS_NAME_MAX + 1];
    char err[128];
    /* Client side, with resumption (tls_conn_resume): the session's key in
     * the cache until this connection's session is kept there. */
    uint64_t cl_id;
    char *rkey;
    bool roffered; /* a cached session went out in the ClientHello */
    bool rticket;  /* a ticket came since the session was last kept */
};

int tls_init(void)
{
    return wolfSSL_Init() == WOLFSSL_SUCCESS ? FG_OK : FG_ERROR;
}

void tls_cleanup(void)
{
    wolfSSL_Cleanup();
}

/* ---- byte queues ---- */

/* The queues hold ciphertext only (wolfSSL keeps plaintext in its own
 * buffers, which it wipes), so freeing them needs no wiping. */
static void tbuf_free(struct tls_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Appends n bytes, compacting or growing up to max. FG_OK or FG_ERROR. */
static int tbuf_add(struct tls_buf *b, const void *p, size_t n, size_t max)
{
    if (b->off > 0 && b->len + n > b->cap) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > max)
            return FG_ERROR;
        uint8_t *np = realloc(b->p, cap);
        if (!np)
            return FG_ERROR;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return FG_OK;
}

static size_t tbuf_avail(const struct tls_buf *b)
{
    return b->len - b->off;
}

static void tbuf_consume(struct tls_buf *b, size_t n)
{
    b->off += n;
    if (b->off == b->len)
        b->off = b->len = 0;
}

/* ---- wolfSSL's I/O callbacks: memory only ---- */

static int tls_io_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
    struct tls_conn *c = ctx;
    (void)ssl;
    size_t n = tbuf_avail(&c->in);
    if (n == 0)
        return WOLFSSL_CBIO_ERR_WANT_READ;
    if (n > (size_t)sz)
        n = (size_t)sz;
    memcpy(buf, c->in.p + c->in.off, n);
    tbuf_consume(&c->in, n);
    return (int)n;
}

static int tls_io_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
    struct tls_conn *c = ctx;
    (void)ssl;
    if (tbuf_add(&c->out, buf, (size_t)sz, TLS_OUT_MAX) != FG_OK)
        return WOLFSSL_CBIO_ERR_GENERAL; /* the peer does not read: give up */
    return sz;
}

/* ---- certificates ---- */

static WOLFSSL_CTX *tls_ctx_load(const struct tls_cert *cert, char *err, size_t errlen)
{
    WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
    if (!ctx) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *why = NULL, *file = cert->cert_file;
    if (wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS)
        why = "cannot require TLS 1.2";
    else if (wolfSSL_CTX_set_cipher_list(ctx, TLS_CIPHERS) != WOLFSSL_SUCCESS)
        why = "the AEAD cipher suites are not in this wolfSSL";
    else if (wolfSSL_CTX_use_certificate_chain_file(ctx, cert->cert_file) != WOLFSSL_SUCCESS)
        why = "cannot load the certificate chain (PEM)";
    else if (wolfSSL_CTX_use_PrivateKey_file(ctx, cert->key_file, WOLFSSL_FILETYPE_PEM) !=
             WOLFSSL_SUCCESS)
        why = "cannot load the private key (PEM)", file = cert->key_file;
    else if (wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS)
        why = "the private key does not match the certificate", file = cert->key_file;
    if (why) {
        snprintf(err, errlen, "%s: %s", file, why);
        wolfSSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

struct tls_server *tls_server_new(const struct tls_cert *certs, size_t n, char *err, size_t errlen)
{
    struct tls_server *s = calloc(1, sizeof(*s));
    if (!s || n == 0 || !(s->sites = calloc(n, sizeof(*s->sites)))) {
        snprintf(err, errlen, n == 0 ? "no certificate" : "out of memory");
        free(s);
        return NULL;
    }
    atomic_init(&s->refs, 1);
    int have_default = 0;
    for (size_t i = 0; i < n; i++) {
        struct tls_site *site = &s->sites[s->n];
        if (!(site->ctx = tls_ctx_load(&certs[i], err, errlen))) {
            tls_server_free(s);
            return NULL;
        }
        site->name = certs[i].name ? strdup(certs[i].name) : NULL;
        s->n++;
        if (!certs[i].name && !have_default) {
            s->dflt = i;
            have_default = 1;
        }
    }
    return s;
}

/* Frees the server when its last reference goes. */
void tls_server_free(struct tls_server *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) > 1)
        return;
    for (size_t i = 0; i < s->n; i++) {
        wolfSSL_CTX_free(s->sites[i].ctx);
        free(s->sites[i].name);
    }
    free(s->sites);
    free(s);
}

/* ---- the backend side ---- */

struct tls_client *tls_client_new(const char *ca_file, bool verify, char *err, size_t errlen)
{
    struct tls_client *cl = calloc(1, sizeof(*cl));
    const char *why = NULL;
    if (!cl || !(cl->ctx = wolfSSL_CTX_new(wolfSSLv23_client_method())))
        why = "out of memory";
    else if (wolfSSL_CTX_SetMinVersion(cl->ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS)
        why = "cannot require TLS 1.2";
    else if (wolfSSL_CTX_set_cipher_list(cl->ctx, TLS_CIPHERS) != WOLFSSL_SUCCESS)
        why = "the AEAD cipher suites are not in this wolfSSL";
    else if ((verify || ca_file[0]) &&
             wolfSSL_CTX_load_verify_locations(cl->ctx, ca_file, NULL) != WOLFSSL_SUCCESS)
        why = "cannot load the CA certificates (PEM)";
    if (why) {
        snprintf(err, errlen, "%s: %s", ca_file, why);
        tls_client_free(cl);
        return NULL;
    }
    cl->verify = verify;
    cl->id = atomic_fetch_add(&tls_client_ids, 1) + 1;
    /* TLS 1.2 resumes by ticket where the backend issues them, else by
     * session ID; TLS 1.3 always by ticket. */
    wolfSSL_CTX_UseSessionTicket(cl->ctx);
    wolfSSL_CTX_set_verify(cl->ctx, verify ? WOLFSSL_VERIFY_PEER : WOLFSSL_VERIFY_NONE, NULL);
    return cl;
}

void tls_client_free(struct tls_client *cl)
{
    if (!cl)
        return;
    if (cl->ctx)
        wolfSSL_CTX_free(cl->ctx); /* connections keep it alive through wolfSSL's count */
    free(cl);
}

static void tls_set_io(struct tls_conn *c)
{
    wolfSSL_SSLSetIORecv(c->ssl, tls_io_recv);
    wolfSSL_SSLSetIOSend(c->ssl, tls_io_send);
    wolfSSL_SetIOReadCtx(c->ssl, c);
    wolfSSL_SetIOWriteCtx(c->ssl, c);
}

/* An IPv4 or IPv6 address in text: SNI carries host names only (RFC 6066). */
static bool tls_is_ip(const char *name)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, name, &a4) == 1 || inet_pton(AF_INET6, name, &a6) == 1;
}

struct tls_conn *tls_client_conn(struct tls_client *cl, const char *name)
{
    struct tls_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    size_t len = strlen(name);
    if (len > TLS_NAME_MAX || !(c->ssl = wolfSSL_new(cl->ctx)) ||
        (!tls_is_ip(name) && wolfSSL_UseSNI(c->ssl, WOLFSSL_SNI_HOST_NAME, name,
                                            (unsigned short)len) != WOLFSSL_SUCCESS) ||
        (cl->verify && wolfSSL_check_domain_name(c->ssl, name) != WOLFSSL_SUCCESS)) {
        tls_conn_free(c);
        return NULL;
    }
    memcpy(c->sni, name, len + 1);
    c->cl_id = cl->id;
    tls_set_io(c);
    return c;
}

/* ---- resumption of backend sessions (tls_resume.h keeps them) ---- */

/* wolfSSL has stored a ticket in the connection's session (TLS 1.3: after
 * the handshake, in the first reads). The session is kept by the caller of
 * the call that read it. */
static int tls_on_ticket(WOLFSSL *ssl, const unsigned char *t, int n, void *ctx)
{
    struct tls_conn *c = ctx;
    (void)ssl, (void)t, (void)n;
    c->rticket = true;
    return 0;
}

int tls_conn_resume(struct tls_conn *c, const char *peer)
{
    char key[32 + 64 + TLS_NAME_MAX];
    if (c->srv || c->done || c->rkey)
        return 0;
    snprintf(key, sizeof key, "%llu %s %s", (unsigned long long)c->cl_id, peer, c->sni);
    if (!(c->rkey = strdup(key)))
        return 0;
    wolfSSL_set_SessionTicket_cb(c->ssl, tls_on_ticket, c);
    WOLFSSL_SESSION *s = tls_resume_get(key);
    if (!s)
        return 0;
    /* wolfSSL refuses a session past its lifetime: it is of no more use. */
    if (wolfSSL_set_session(c->ssl, s) != WOLFSSL_SUCCESS) {
        tls_resume_drop(key);
        return 0;
    }
    c->roffered = true;
    return 1;
}

/* Keeps the connection's session for the next connection to the same host
 * and name. wolfSSL goes on updating that session while the connection
 * lives (a later ticket), so it is kept once. */
static void tls_resume_keep(struct tls_conn *c)
{
    WOLFSSL_SESSION *s = wolfSSL_get1_session(c->ssl);
    c->rticket = false;
    if (s)
        tls_resume_put(c->rkey, s);
    free(c->rkey);
    c->rkey = NULL;
}

/* The handshake ended: a session the backend declined, or offered to a
 * handshake that failed, is forgotten. A full handshake's session, or a new
 * ticket, is kept: TLS 1.2's at once (its ticket comes within the
 * handshake), TLS 1.3's once its ticket comes (tls_conn_read). */
static void tls_resume_after_handshake(struct tls_conn *c, bool ok)
{
    bool resumed = ok && wolfSSL_session_reused(c->ssl);
    if (!ok || (c->roffered && !resumed))
        tls_resume_drop(c->rkey);
    if (ok && !c->rticket && wolfSSL_version(c->ssl) == TLS1_3_VERSION)
        return;
    if (ok && (c->rticket || !resumed)) {
        tls_resume_keep(c);
    } else {
        free(c->rkey);
        c->rkey = NULL;
    }
}

/* ---- connections ---- */

struct tls_conn *tls_conn_new(struct tls_server *s)
{
    struct tls_conn *c = calloc(1, sizeof(*c));
    if (c) {
        c->srv = s;
        atomic_fetch_add(&s->refs, 1); /* a reload must not free it under us */
    }
    return c;
}

void tls_conn_free(struct tls_conn *c)
{
    if (!c)
        return;
    if (c->ssl)
        wolfSSL_free(c->ssl);
    free(c->rkey);
    tbuf_free(&c->in);
    tbuf_free(&c->out);
    if (c->srv)
        tls_server_free(c->srv);
    free(c);
}

struct tls_store *tls_store_new(struct tls_server *s)
{
    struct tls_store *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    pthread_mutex_init(&st->lock, NULL);
    st->cur = s;
    return st;
}

void tls_store_free(struct tls_store *st)
{
    if (!st)
        return;
    tls_server_free(st->cur);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

struct tls_conn *tls_store_conn(struct tls_store *st)
{
    pthread_mutex_lock(&st->lock);
    struct tls_conn *c = tls_conn_new(st->cur);
    pthread_mutex_unlock(&st->lock);
    return c;
}

void tls_store_set(struct tls_store *st, struct tls_server *s)
{
    pthread_mutex_lock(&st->lock);
    struct tls_server *old = st->cur;
    st->cur = s;
    pthread_mutex_unlock(&st->lock);
    tls_server_free(old); /* freed when its last connection ends */
}

int tls_store_reload(struct tls_store *st, const struct tls_cert *certs, size_t n, char *err,
                     size_t errlen)
{
    struct tls_server *s = tls_server_new(certs, n, err, errlen);
    if (!s)
        return FG_ERROR; /* the old certificates stay */
    tls_store_set(st, s);
    return FG_OK;
}

int tls_conn_feed(struct tls_conn *c, const void *p, size_t n)
{
    if (tbuf_add(&c->in, p, n, TLS_IN_MAX) != FG_OK) {
        snprintf(c->err, sizeof(c->err), "too much input buffered");
        return FG_ERROR;
    }
    return FG_OK;
}

/* "*.example.com" matches one label in front of example.com, as RFC 6125
 * section 6.4.3 allows for certificates. */
static int tls_wildcard_match(const char *pattern, const char *name)
{
    if (pattern[0] != '*' || pattern[1] != '.')
        return 0;
    const char *dot = strchr(name, '.');
    return dot && dot != name && strcasecmp(dot + 1, pattern + 2) == 0;
}

/* The site whose name the ClientHello's SNI gives (exactly, else by a
 * wildcard), or else the hint's (tls_conn_sni_hint), or the default. */
static struct tls_site *tls_pick_site(struct tls_conn *c, size_t record_len)
{
    unsigned char name[TLS_NAME_MAX + 1];
    unsigned int len = TLS_NAME_MAX;
    struct tls_server *s = c->srv;
    if (wolfSSL_SNI_GetFromBuffer(c->in.p + c->in.off, (unsigned int)record_len,
                                  WOLFSSL_SNI_HOST_NAME, name, &len) == WOLFSSL_SUCCESS &&
        len <= TLS_NAME_MAX) {
        memcpy(c->sni, name, len);
        c->sni[len] = 0;
    }
    if (c->sni[0]) {
        for (size_t i = 0; i < s->n; i++)
            if (s->sites[i].name && strcasecmp(s->sites[i].name, c->sni) == 0)
                return &s->sites[i];
        for (size_t i = 0; i < s->n; i++)
            if (s->sites[i].name && tls_wildcard_match(s->sites[i].name, c->sni))
                return &s->sites[i];
    }
    return &s->sites[s->dflt];
}

/* Creates the WOLFSSL once the first record is in. FG_OK, FG_AGAIN or FG_ERROR. */
static int tls_conn_start(struct tls_conn *c)
{
    size_t have = tbuf_avail(&c->in);
    /* An empty queue may have no memory yet: no arithmetic on NULL. */
    const uint8_t *p = have > 0 ? c->in.p + c->in.off : NULL;
    if (have >= 1 && p[0] != TLS_HANDSHAKE) {
        snprintf(c->err, sizeof(c->err), "not a TLS ClientHello");
        return FG_ERROR;
    }
    if (have < TLS_RECORD_HEADER)
        return FG_AGAIN;
    size_t record = TLS_RECORD_HEADER + ((size_t)p[3] << 8 | p[4]);
    /* A record holds at most 2^14 bytes of plaintext (RFC 8446 section
     * 5.1): waiting for a longer one would only hold the slot. */
    if (record > TLS_RECORD_HEADER + 16384) {
        snprintf(c->err, sizeof(c->err), "not a TLS ClientHello (record too long)");
        return FG_ERROR;
    }
    if (have < record)
        return FG_AGAIN;
    struct tls_site *site = tls_pick_site(c, record);
    if (!(c->ssl = wolfSSL_new(site->ctx))) {
        snprintf(c->err, sizeof(c->err), "out of memory");
        return FG_ERROR;
    }
    tls_set_io(c);
    return FG_OK;
}

/* Maps a wolfSSL result to FG_AGAIN or FG_ERROR, keeping the reason. */
static int tls_fail(struct tls_conn *c, int ret)
{
    int e = wolfSSL_get_error(c->ssl, ret);
    if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE)
        return FG_AGAIN;
    if (e == WOLFSSL_ERROR_ZERO_RETURN)
        snprintf(c->err, sizeof(c->err), "the peer closed TLS");
    else
        wolfSSL_ERR_error_string_n((unsigned long)e, c->err, sizeof(c->err));
    return FG_ERROR;
}

int tls_conn_handshake(struct tls_conn *c)
{
    if (c->done)
        return FG_OK;
    if (!c->ssl) {
        int rc = tls_conn_start(c);
        if (rc != FG_OK)
            return rc;
    }
    int ret = c->srv ? wolfSSL_accept(c->ssl) : wolfSSL_connect(c->ssl);
    if (ret != WOLFSSL_SUCCESS) {
        int rc = tls_fail(c, ret);
        if (rc == FG_ERROR && c->rkey)
            tls_resume_after_handshake(c, false);
        return rc;
    }
    c->done = 1;
    if (c->rkey)
        tls_resume_after_handshake(c, true);
    return FG_OK;
}

ssize_t tls_conn_read(struct tls_conn *c, void *buf, size_t n)
{
    if (!c->done)
        return FG_ERROR;
    int want = n > (size_t)INT32_MAX ? INT32_MAX : (int)n;
    int ret = wolfSSL_read(c->ssl, buf, want);
    if (FG_UNLIKELY(c->rticket) && c->rkey)
        tls_resume_keep(c);
    if (ret > 0)
        return ret;
    if (wolfSSL_get_error(c->ssl, ret) == WOLFSSL_ERROR_ZERO_RETURN) {
        snprintf(c->err, sizeof(c->err), "the peer closed TLS");
        return FG_DONE;
    }
    return tls_fail(c, ret);
}

void tls_conn_close_notify(struct tls_conn *c)
{
    if (c->done)
        wolfSSL_shutdown(c->ssl); /* queues the alert; the peer's is not awaited */
}

int tls_conn_done(const struct tls_conn *c)
{
    return c->done;
}

void tls_conn_trim(struct tls_conn *c)
{
    if (tbuf_avail(&c->in) == 0)
        tbuf_free(&c->in);
    if (tbuf_avail(&c->out) == 0)
        tbuf_free(&c->out);
}

int tls_conn_write(struct tls_conn *c, const void *p, size_t n)
{
    if (!c->done)
        return FG_ERROR;
    while (n > 0) {
        int chunk = n > 16384 ? 16384 : (int)n;
        int ret = wolfSSL_write(c->ssl, p, chunk);
        if (ret <= 0) {
            tls_fail(c, ret);
            return FG_ERROR; /* the output queue takes everything: no "again" */
        }
        p = (const uint8_t *)p + ret;
        n -= (size_t)ret;
    }
    return FG_OK;
}

size_t tls_conn_pending(const struct tls_conn *c, const uint8_t **p_r)
{
    *p_r = c->out.p ? c->out.p + c->out.off : NULL;
    return tbuf_avail(&c->out);
}

void tls_conn_sent(struct tls_conn *c, size_t n)
{
    tbuf_consume(&c->out, n);
}

const char *tls_conn_version(struct tls_conn *c)
{
    return c->ssl ? wolfSSL_get_version(c->ssl) : "";
}

const char *tls_conn_cipher(struct tls_conn *c)
{
    return c->ssl ? wolfSSL_get_cipher_name(c->ssl) : "";
}

const char *tls_conn_sni(const struct tls_conn *c)
{
    return c->sni;
}

void tls_conn_sni_hint(struct tls_conn *c, const char *name)
{
    size_t len = strlen(name);
    if (c->srv && !c->ssl && len <= TLS_NAME_MAX)
        memcpy(c->sni, name, len + 1);
}

int tls_conn_resumed(struct tls_conn *c)
{
    return c->done && wolfSSL_session_reused(c->ssl) ? 1 : 0;
}

const char *tls_conn_error(const struct tls_conn *c)
{
    return c->err[0] ? c->err : "no error";
}
