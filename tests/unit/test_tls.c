/*
 * tls/: real handshakes between a wolfSSL client and tls_conn, in memory,
 * the bytes handed over one at a time (the worker may receive any split).
 * The certificates come from make_certs.sh at build time (FG_CERT_DIR).
 */
#include <stdlib.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include "../../base/common.h"
#include "../../tls/tls.h"
#include "../../tls/tls_resume.h"
#include "harness.h"

static char cert_dir[512];

static const char *path(const char *file)
{
    static char buf[16][600]; /* enough for one initializer's calls */
    static int i;
    i = (i + 1) % 16;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", cert_dir, file);
    return buf[i];
}

/* The client's side of the wire: what the server queued, not yet read. */
struct wire {
    const uint8_t *p;
    size_t n;
    struct tls_conn *srv;
    size_t step; /* bytes handed over per call */
    int hold;    /* the server's bytes are held back: the client waits */
};

static int cli_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
    struct wire *w = ctx;
    (void)ssl;
    const uint8_t *p;
    size_t n = tls_conn_pending(w->srv, &p);
    if (n == 0 || w->hold)
        return WOLFSSL_CBIO_ERR_WANT_READ;
    if (n > (size_t)sz)
        n = (size_t)sz;
    if (n > w->step)
        n = w->step;
    memcpy(buf, p, n);
    tls_conn_sent(w->srv, n);
    return (int)n;
}

static int cli_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
    struct wire *w = ctx;
    (void)ssl;
    /* Hand the server the bytes in steps, driving it after each. */
    for (int off = 0; off < sz; off += (int)w->step) {
        size_t n = (size_t)(sz - off) < w->step ? (size_t)(sz - off) : w->step;
        if (tls_conn_feed(w->srv, buf + off, n) != FG_OK)
            return WOLFSSL_CBIO_ERR_GENERAL;
        int rc = tls_conn_handshake(w->srv);
        if (rc == FG_ERROR)
            return WOLFSSL_CBIO_ERR_GENERAL;
    }
    return sz;
}

struct client {
    WOLFSSL_CTX *ctx;
    WOLFSSL *ssl;
    struct wire wire;
};

/* A client context that trusts only `trust` (a PEM file) and speaks `method`. */
static WOLFSSL_CTX *client_ctx(WOLFSSL_METHOD *method, const char *trust)
{
    WOLFSSL_CTX *ctx = wolfSSL_CTX_new(method);
    CHECK(ctx != NULL);
    CHECK_INT(wolfSSL_CTX_load_verify_locations(ctx, trust, NULL), WOLFSSL_SUCCESS);
    wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, NULL);
    return ctx;
}

/* A client on ctx, offering `sni` (or none), wired to srv in steps of `step` bytes. */
static void client_attach(struct client *cl, WOLFSSL_CTX *ctx, const char *sni,
                          struct tls_conn *srv, size_t step)
{
    cl->ctx = ctx;
    cl->ssl = wolfSSL_new(ctx);
    if (sni)
        CHECK_INT(wolfSSL_UseSNI(cl->ssl, WOLFSSL_SNI_HOST_NAME, sni, (unsigned short)strlen(sni)),
                  WOLFSSL_SUCCESS);
    cl->wire = (struct wire){.srv = srv, .step = step};
    wolfSSL_SSLSetIORecv(cl->ssl, cli_recv);
    wolfSSL_SSLSetIOSend(cl->ssl, cli_send);
    wolfSSL_SetIOReadCtx(cl->ssl, &cl->wire);
    wolfSSL_SetIOWriteCtx(cl->ssl, &cl->wire);
}

static void client_new(struct client *cl, WOLFSSL_METHOD *method, const char *trust,
                       const char *sni, struct tls_conn *srv, size_t step)
{
    client_attach(cl, client_ctx(method, trust), sni, srv, step);
}

static void client_free(struct client *cl)
{
    wolfSSL_free(cl->ssl);
    wolfSSL_CTX_free(cl->ctx);
}

/* Runs the handshake to its end; returns 1 if both sides completed it. */
static int handshake(struct client *cl, struct tls_conn *srv)
{
    for (int round = 0; round < 100000; round++) {
        int ret = wolfSSL_connect(cl->ssl);
        int srv_rc = tls_conn_handshake(srv);
        if (ret == WOLFSSL_SUCCESS && srv_rc == FG_OK)
            return 1;
        if (srv_rc == FG_ERROR)
            return 0;
        if (ret != WOLFSSL_SUCCESS) {
            int e = wolfSSL_get_error(cl->ssl, ret);
            if (e != WOLFSSL_ERROR_WANT_READ && e != WOLFSSL_ERROR_WANT_WRITE)
                return 0;
        }
    }
    return 0;
}

static struct tls_server *two_sites(void)
{
    struct tls_cert certs[] = {
            {NULL, path("a.crt"), path("a.key")},
            {"a.example", path("a.crt"), path("a.key")},
            {"b.example", path("b.crt"), path("b.key")},
    };
    char err[256] = "";
    struct tls_server *s = tls_server_new(certs, 3, err, sizeof(err));
    CHECKF(s != NULL, "tls_server_new: %s", err);
    return s;
}

/* Plaintext both ways after the handshake, the wire split byte by byte. */
static void check_data(struct client *cl, struct tls_conn *srv)
{
    const char req[] = "a1 CAPABILITY\r\n";
    CHECK_INT(wolfSSL_write(cl->ssl, req, (int)strlen(req)), (int)strlen(req));
    char got[64] = "";
    ssize_t n = tls_conn_read(srv, got, sizeof(got) - 1);
    CHECKF(n == (ssize_t)strlen(req) && memcmp(got, req, strlen(req)) == 0, "server read %zd bytes",
           n);
    CHECK_INT(tls_conn_read(srv, got, sizeof(got)), FG_AGAIN); /* nothing more */
    char big[40000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    CHECK_INT(tls_conn_write(srv, big, sizeof(big)), FG_OK);
    char back[40000];
    size_t have = 0;
    while (have < sizeof(back)) {
        int r = wolfSSL_read(cl->ssl, back + have, (int)(sizeof(back) - have));
        if (r <= 0)
            break;
        have += (size_t)r;
    }
    CHECK_INT(have, sizeof(big));
    CHECK(memcmp(back, big, sizeof(big)) == 0);
}

static void test_tls13_byte_at_a_time(void)
{
    struct tls_server *s = two_sites();
    struct tls_conn *srv = tls_conn_new(s);
    struct client cl;
    client_new(&cl, wolfTLSv1_3_client_method(), path("a.crt"), NULL, srv, 1);
    CHECKF(handshake(&cl, srv), "handshake: %s", tls_conn_error(srv));
    CHECK(strcmp(tls_conn_version(srv), "TLSv1.3") == 0);
    CHECKF(strstr(tls_conn_cipher(srv), "GCM") || strstr(tls_conn_cipher(srv), "CHACHA"),
           "cipher %s", tls_conn_cipher(srv));
    CHECK(strcmp(tls_conn_sni(srv), "") == 0);
    check_data(&cl, srv);
    client_free(&cl);
    tls_conn_free(srv);
    tls_server_free(s);
}

/* The SNI picks the certificate: a client trusting only b's accepts it only for b. */
static void test_sni(void)
{
    struct tls_server *s = two_sites();
    struct {
        const char *sni, *trust;
        int ok;
    } cases[] = {
            {"b.example", "b.crt", 1}, {"B.EXAMPLE", "b.crt", 1}, {"a.example", "a.crt", 1},
            {"b.example", "a.crt", 0}, {"c.example", "a.crt", 1}, /* unknown: the default */
            {"c.example", "b.crt", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        struct tls_conn *srv = tls_conn_new(s);
        struct client cl;
        client_new(&cl, wolfSSLv23_client_method(), path(cases[i].trust), cases[i].sni, srv, 7);
        int ok = handshake(&cl, srv);
        CHECKF(ok == cases[i].ok, "SNI %s trusting %s: handshake %d", cases[i].sni, cases[i].trust,
               ok);
        if (ok)
            CHECK(strcasecmp(tls_conn_sni(srv), cases[i].sni) == 0);
        client_free(&cl);
        tls_conn_free(srv);
    }
    tls_server_free(s);
}

/* A hint (PROXY v2's AUTHORITY) picks the certificate when the ClientHello
 * has no SNI; a ClientHello's own SNI still wins. */
static void test_sni_hint(void)
{
    struct tls_server *s = two_sites();
    struct {
        const char *sni, *hint, *trust, *seen;
        int ok;
    } cases[] = {
            {NULL, "b.example", "b.crt", "b.example", 1},
            {NULL, "B.Example", "b.crt", "B.Example", 1},
            {NULL, "c.example", "a.crt", "c.example", 1}, /* unknown: the default */
            {"a.example", "b.example", "a.crt", "a.example", 1},
            {"a.example", "b.example", "b.crt", NULL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        struct tls_conn *srv = tls_conn_new(s);
        struct client cl;
        tls_conn_sni_hint(srv, cases[i].hint);
        client_new(&cl, wolfSSLv23_client_method(), path(cases[i].trust), cases[i].sni, srv, 5);
        int ok = handshake(&cl, srv);
        CHECKF(ok == cases[i].ok, "SNI %s, hint %s, trusting %s: handshake %d",
               cases[i].sni ? cases[i].sni : "(none)", cases[i].hint, cases[i].trust, ok);
        if (ok)
            CHECK(strcmp(tls_conn_sni(srv), cases[i].seen) == 0);
        client_free(&cl);
        tls_conn_free(srv);
    }
    tls_server_free(s);
}

static void test_tls12(void)
{
    struct tls_server *s = two_sites();
    const char *sites[][2] = {{"a.example", "a.crt"}, {"b.example", "b.crt"}};
    for (size_t i = 0; i < 2; i++) {
        struct tls_conn *srv = tls_conn_new(s);
        struct client cl;
        client_new(&cl, wolfTLSv1_2_client_method(), path(sites[i][1]), sites[i][0], srv, 3);
        CHECKF(handshake(&cl, srv), "TLS 1.2 handshake: %s", tls_conn_error(srv));
        CHECK(strcmp(tls_conn_version(srv), "TLSv1.2") == 0);
        /* ECDHE and an AEAD, with the certificate's own signature type. */
        const char *cipher = tls_conn_cipher(srv);
        CHECKF(strstr(cipher, "ECDHE") && (strstr(cipher, "GCM") || strstr(cipher, "CHACHA")),
               "cipher %s", cipher);
        CHECKF(strstr(cipher, i == 0 ? "ECDSA" : "RSA") != NULL, "cipher %s", cipher);
        check_data(&cl, srv);
        client_free(&cl);
        tls_conn_free(srv);
    }
    tls_server_free(s);
}

/* A ticket from a first handshake resumes a second, in TLS 1.3 and 1.2. */
static void test_resumption(void)
{
    struct tls_server *s = two_sites();
    WOLFSSL_METHOD *(*methods[])(void) = {wolfTLSv1_3_client_method, wolfTLSv1_2_client_method};
    for (size_t m = 0; m < 2; m++) {
        WOLFSSL_CTX *cctx = client_ctx(methods[m](), path("b.crt"));
        WOLFSSL_SESSION *ticket = NULL;
        for (int round = 0; round < 2; round++) {
            struct tls_conn *srv = tls_conn_new(s);
            struct client cl;
            client_attach(&cl, cctx, "b.example", srv, 5);
            wolfSSL_UseSessionTicket(cl.ssl);
            if (ticket)
                CHECK_INT(wolfSSL_set_session(cl.ssl, ticket), WOLFSSL_SUCCESS);
            CHECKF(handshake(&cl, srv), "round %d: %s", round, tls_conn_error(srv));
            check_data(&cl, srv); /* TLS 1.3 sends its ticket after the handshake */
            CHECKF(tls_conn_resumed(srv) == round, "method %zu round %d: resumed %d", m, round,
                   tls_conn_resumed(srv));
            if (!ticket)
                ticket = wolfSSL_get1_session(cl.ssl);
            wolfSSL_free(cl.ssl);
            tls_conn_free(srv);
        }
        wolfSSL_SESSION_free(ticket);
        wolfSSL_CTX_free(cctx);
    }
    tls_server_free(s);
}

static struct tls_server *one_site(const char *crt, const char *key)
{
    struct tls_cert cert = {NULL, path(crt), path(key)};
    char err[256] = "";
    struct tls_server *s = tls_server_new(&cert, 1, err, sizeof(err));
    CHECKF(s != NULL, "tls_server_new: %s", err);
    return s;
}

/* SIGHUP's reload: sessions keep their certificate, new ones get the new one. */
static void test_reload(void)
{
    struct tls_store *st = tls_store_new(one_site("a.crt", "a.key"));
    /* One session done with a, one in the middle of its handshake. */
    struct tls_conn *done = tls_store_conn(st), *mid = tls_store_conn(st);
    struct client c1, c2;
    client_new(&c1, wolfSSLv23_client_method(), path("a.crt"), NULL, done, 64);
    CHECK(handshake(&c1, done));
    client_new(&c2, wolfSSLv23_client_method(), path("a.crt"), NULL, mid, 64);
    c2.wire.hold = 1;
    wolfSSL_connect(c2.ssl); /* the ClientHello is in; the answer waits on the wire */
    CHECK(tls_conn_handshake(mid) == FG_AGAIN);
    const uint8_t *pending;
    CHECK(tls_conn_pending(mid, &pending) > 0);

    struct tls_cert b = {NULL, path("b.crt"), path("b.key")};
    char err[256] = "";
    CHECKF(tls_store_reload(st, &b, 1, err, sizeof(err)) == FG_OK, "reload: %s", err);
    c2.wire.hold = 0;
    CHECK(handshake(&c2, mid)); /* finishes with a, the certificate it began with */
    check_data(&c1, done);
    check_data(&c2, mid);

    struct tls_conn *next = tls_store_conn(st);
    struct client c3;
    client_new(&c3, wolfSSLv23_client_method(), path("b.crt"), NULL, next, 64);
    CHECK(handshake(&c3, next)); /* new sessions get b */

    /* A bad certificate at reload: refused with the reason, b stays. */
    struct tls_cert bad = {NULL, path("b.crt"), path("a.key")};
    CHECK(tls_store_reload(st, &bad, 1, err, sizeof(err)) == FG_ERROR);
    CHECKF(strstr(err, "does not match") != NULL, "%s", err);
    struct tls_conn *after = tls_store_conn(st);
    struct client c4;
    client_new(&c4, wolfSSLv23_client_method(), path("b.crt"), NULL, after, 64);
    CHECK(handshake(&c4, after));

    struct client *cls[] = {&c1, &c2, &c3, &c4};
    struct tls_conn *conns[] = {done, mid, next, after};
    for (size_t i = 0; i < 4; i++) {
        client_free(cls[i]);
        tls_conn_free(conns[i]); /* the last of a's frees a */
    }
    tls_store_free(st);
}

/* Moves pending ciphertext from one engine to the other; returns bytes moved. */
static size_t pump(struct tls_conn *from, struct tls_conn *to)
{
    const uint8_t *p;
    size_t n = tls_conn_pending(from, &p);
    if (n && tls_conn_feed(to, p, n) == FG_OK)
        tls_conn_sent(from, n);
    return n;
}

/* Both engines, ours on both ends: 1 if both completed the handshake. */
static int engines_handshake(struct tls_conn *cli, struct tls_conn *srv)
{
    for (int round = 0; round < 100; round++) {
        int a = tls_conn_handshake(cli), b = tls_conn_handshake(srv);
        if (a == FG_ERROR || b == FG_ERROR)
            return 0;
        if (a == FG_OK && b == FG_OK)
            return 1;
        if (pump(cli, srv) + pump(srv, cli) == 0 && !(a == FG_OK && b == FG_OK))
            return 0;
    }
    return 0;
}

/* The backend side: the certificate checked against the CA file and the name. */
static void test_backend_client(void)
{
    struct tls_server *s = two_sites();
    char err[256] = "";
    struct {
        const char *ca, *name;
        int ok;
    } cases[] = {
            {"b.crt", "b.example", 1}, /* the right CA and name */
            {"b.crt", "x.example", 0}, /* the right CA, another name */
            {"a.crt", "b.example", 0}, /* a CA that did not sign it */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        struct tls_client *cl = tls_client_new(path(cases[i].ca), true, err, sizeof(err));
        CHECKF(cl != NULL, "tls_client_new: %s", err);
        struct tls_conn *cli = tls_client_conn(cl, cases[i].name);
        struct tls_conn *srv = tls_conn_new(s);
        int ok = engines_handshake(cli, srv);
        CHECKF(ok == cases[i].ok, "CA %s name %s: %d (%s)", cases[i].ca, cases[i].name, ok,
               tls_conn_error(cli));
        if (ok) {
            /* The name went out as SNI: the server chose b's certificate by it. */
            CHECK(strcmp(tls_conn_sni(srv), "b.example") == 0);
            CHECK_INT(tls_conn_write(cli, "x LOGIN u p\r\n", 13), FG_OK);
            pump(cli, srv);
            char got[32];
            CHECK_INT(tls_conn_read(srv, got, sizeof(got)), 13);
            /* A close_notify is a clean end, told apart from a failure. */
            tls_conn_close_notify(srv);
            pump(srv, cli);
            CHECK_INT(tls_conn_read(cli, got, sizeof(got)), FG_DONE);
            static const uint8_t bad[] = {23, 3,  3,  0,  24, 1,  2,  3,  4,  5,  6,  7,  8,  9, 10,
                                          11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24};
            CHECK_INT(tls_conn_feed(srv, bad, sizeof bad), FG_OK);
            CHECK_INT(tls_conn_read(srv, got, sizeof(got)), FG_ERROR);
        }
        tls_conn_free(cli);
        tls_conn_free(srv);
        tls_client_free(cl);
    }
    /* TlsVerify = false: no CA needed, any name; an address goes out without SNI. */
    struct tls_client *cl = tls_client_new("", false, err, sizeof(err));
    CHECKF(cl != NULL, "tls_client_new without verification: %s", err);
    for (int i = 0; i < 2; i++) {
        struct tls_conn *cli = tls_client_conn(cl, i ? "127.0.0.1" : "x.example");
        struct tls_conn *srv = tls_conn_new(s);
        CHECKF(engines_handshake(cli, srv), "unverified handshake %d: %s", i, tls_conn_error(cli));
        CHECK(strcmp(tls_conn_sni(srv), i ? "" : "x.example") == 0);
        tls_conn_free(cli);
        tls_conn_free(srv);
    }
    tls_client_free(cl);
    CHECK(tls_client_new("/nonexistent-ca.pem", true, err, sizeof(err)) == NULL);
    CHECKF(strstr(err, "cannot load the CA") != NULL, "%s", err);
    tls_server_free(s);
}

static size_t kept_at_handshake; /* sessions cached when the last handshake ended */

/* One backend logon through cl to `peer` by `name`, against s: the
 * handshake, then the greeting (after which a TLS 1.3 ticket is in).
 * Returns -1 when the handshake failed, else whether it resumed; *offered
 * says whether a cached session went out. */
static int backend_logon(struct tls_client *cl, struct tls_server *s, const char *peer,
                         const char *name, int *offered)
{
    struct tls_conn *cli = tls_client_conn(cl, name);
    struct tls_conn *srv = tls_conn_new(s);
    CHECK(cli != NULL && srv != NULL);
    *offered = tls_conn_resume(cli, peer);
    int rc = -1;
    if (engines_handshake(cli, srv)) {
        CHECK_INT(tls_conn_resumed(cli), tls_conn_resumed(srv));
        kept_at_handshake = tls_resume_count();
        CHECK_INT(tls_conn_write(srv, "* OK\r\n", 6), FG_OK);
        pump(srv, cli);
        char got[16];
        CHECK_INT(tls_conn_read(cli, got, sizeof got), 6);
        rc = tls_conn_resumed(cli);
    }
    tls_conn_free(cli);
    tls_conn_free(srv);
    return rc;
}

/* Backend sessions: kept per policy, address and name, offered to that
 * one only; a declined one replaced; one whose handshake fails dropped. */
static void test_backend_resumption(void)
{
    struct tls_server *s = two_sites();
    char err[256] = "";
    struct tls_client *cl = tls_client_new(path("b.crt"), true, err, sizeof(err));
    struct tls_client *cl2 = tls_client_new(path("b.crt"), true, err, sizeof(err));
    struct tls_client *any = tls_client_new("", false, err, sizeof(err));
    CHECKF(cl && cl2 && any, "tls_client_new: %s", err);
    const char *p1 = "127.0.0.1:993", *p2 = "127.0.0.2:993";
    int offered;

    CHECK_INT(tls_resume_count(), 0);
    CHECK_INT(backend_logon(cl, s, p1, "b.example", &offered), 0);
    /* TLS 1.3: the session is kept once its ticket came, not before. */
    CHECK(!offered && kept_at_handshake == 0 && tls_resume_count() == 1);
    for (int i = 0; i < 3; i++) {
        CHECK_INT(backend_logon(cl, s, p1, "b.example", &offered), 1);
        CHECK(offered);
    }
    CHECK_INT(tls_resume_count(), 1);
    /* Another address, another policy (the same CA, another tls_client),
     * another name: each a full handshake, and a session of its own. */
    CHECK_INT(backend_logon(cl, s, p2, "b.example", &offered), 0);
    CHECK(!offered);
    CHECK_INT(backend_logon(cl2, s, p1, "b.example", &offered), 0);
    CHECK(!offered);
    CHECK_INT(backend_logon(any, s, p1, "a.example", &offered), 0);
    CHECK(!offered);
    CHECK_INT(backend_logon(any, s, p1, "x.example", &offered), 0);
    CHECK(!offered);
    CHECK_INT(backend_logon(any, s, p1, "x.example", &offered), 1);
    CHECK_INT(tls_resume_count(), 5);

    /* The backend restarted (new ticket keys): the session is declined, a
     * full handshake verifies the certificate, and its session replaces it. */
    struct tls_server *s2 = two_sites();
    CHECK_INT(backend_logon(cl, s2, p1, "b.example", &offered), 0);
    CHECK(offered);
    CHECK_INT(backend_logon(cl, s2, p1, "b.example", &offered), 1);
    CHECK_INT(tls_resume_count(), 5);

    /* Then a certificate that does not verify: the logon fails, and the
     * session is dropped rather than offered again. */
    struct tls_server *bad = one_site("a.crt", "a.key");
    CHECK_INT(backend_logon(cl, bad, p1, "b.example", &offered), -1);
    CHECK(offered);
    CHECK_INT(tls_resume_count(), 4);
    CHECK_INT(backend_logon(cl, s2, p1, "b.example", &offered), 0);
    CHECK(!offered);

    tls_server_free(bad);
    tls_server_free(s2);
    tls_client_free(any);
    tls_client_free(cl2);
    tls_client_free(cl);
    tls_server_free(s);
}

static void test_not_tls(void)
{
    struct tls_server *s = two_sites();
    struct tls_conn *srv = tls_conn_new(s);
    CHECK_INT(tls_conn_handshake(srv), FG_AGAIN); /* nothing yet */
    CHECK_INT(tls_conn_feed(srv, "\x16\x03\x01", 3), FG_OK);
    CHECK_INT(tls_conn_handshake(srv), FG_AGAIN); /* a partial record header */
    tls_conn_free(srv);

    srv = tls_conn_new(s);
    CHECK_INT(tls_conn_feed(srv, "a LOGIN u p\r\n", 13), FG_OK);
    CHECK_INT(tls_conn_handshake(srv), FG_ERROR);
    CHECK(strstr(tls_conn_error(srv), "not a TLS ClientHello") != NULL);
    tls_conn_free(srv);

    /* A handshake record of garbage: wolfSSL refuses it. */
    srv = tls_conn_new(s);
    uint8_t junk[5 + 64] = {0x16, 0x03, 0x01, 0x00, 64};
    memset(junk + 5, 0xee, 64);
    CHECK_INT(tls_conn_feed(srv, junk, sizeof(junk)), FG_OK);
    CHECK_INT(tls_conn_handshake(srv), FG_ERROR);
    tls_conn_free(srv);

    /* Input beyond the limit is refused, not buffered. */
    srv = tls_conn_new(s);
    static uint8_t lots[TLS_IN_MAX + 1];
    CHECK_INT(tls_conn_feed(srv, lots, sizeof(lots)), FG_ERROR);
    tls_conn_free(srv);
    tls_server_free(s);
}

static void test_bad_certificates(void)
{
    char err[256];
    struct {
        struct tls_cert cert;
        const char *says;
    } cases[] = {
            {{NULL, "/nonexistent.crt", "/nonexistent.key"}, "cannot load the certificate chain"},
            {{NULL, path("a.crt"), "/nonexistent.key"}, "cannot load the private key"},
            {{NULL, path("a.crt"), path("b.key")}, "does not match"},
            {{NULL, path("a.key"), path("a.key")}, "cannot load the certificate chain"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        err[0] = 0;
        struct tls_server *s = tls_server_new(&cases[i].cert, 1, err, sizeof(err));
        CHECKF(s == NULL && strstr(err, cases[i].says), "case %zu: %s", i, err);
        tls_server_free(s);
    }
    CHECK(tls_server_new(NULL, 0, err, sizeof(err)) == NULL);
}

int main(void)
{
    const char *dir = getenv("FG_CERT_DIR");
    if (!dir) {
        fprintf(stderr, "FG_CERT_DIR is not set (meson test sets it)\n");
        return 1;
    }
    snprintf(cert_dir, sizeof(cert_dir), "%s", dir);
    CHECK_INT(tls_init(), FG_OK);
    test_tls13_byte_at_a_time();
    test_sni();
    test_sni_hint();
    test_tls12();
    test_resumption();
    test_reload();
    test_backend_client();
    test_backend_resumption();
    test_not_tls();
    test_bad_certificates();
    tls_cleanup();
    return th_finish("test_tls");
}
