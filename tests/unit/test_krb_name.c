/*
 * The pure parts of Kerberos logons (directory/krb_name.c): a principal's
 * logon name, the service a ticket's target names, and the service of the
 * ticket in a client's first GSS token.
 *
 * Every input is handed over as an exact copy that ends at a guard page (a
 * read past its end faults) and, for the tokens' truncations, also as a heap
 * block of exactly that size (ASan reports a read past it). The tokens are
 * built here, with a small DER writer, as MIT's and Windows' initiators send
 * them: RFC 2743's framing, krb5's OID and TOK_ID, an AP-REQ (RFC 4120
 * 5.5.1) whose ticket names imap/mail.example or pop/mail.example.
 */
#include "../../directory/krb.h"
#include "harness.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- krb_map_principal ---- */

/* Maps principal (n bytes) and authzid (an bytes), each from a guard copy,
 * into out (pre-filled, so a missing NUL shows). A success must end in a
 * NUL at the returned length with none before it. */
static size_t map(const char *principal, size_t n, const char *authzid, size_t an,
                  char out[CRED_NAME_MAX + 1], bool *enterprise)
{
    char *p = th_guard_copy(principal, n), *a = th_guard_copy(authzid, an);
    memset(out, 'X', CRED_NAME_MAX + 1);
    *enterprise = true;
    size_t r = krb_map_principal(p, n, a, an, out, enterprise);
    th_guard_free(p, n);
    th_guard_free(a, an);
    CHECKF(r <= CRED_NAME_MAX, "map(\"%.*s\"): length %zu over CRED_NAME_MAX", (int)n, principal,
           r);
    if (r > 0 && r <= CRED_NAME_MAX)
        CHECKF(out[r] == 0 && strlen(out) == r, "map(\"%.*s\"): %zu, but strlen(out) is %zu",
               (int)n, principal, r, strnlen(out, CRED_NAME_MAX + 1));
    return r;
}

static void map_ok_n(int line, const char *principal, size_t n, const char *authzid, size_t an,
                     const char *want, bool want_enterprise)
{
    char out[CRED_NAME_MAX + 1];
    bool ent;
    size_t r = map(principal, n, authzid, an, out, &ent);
    th_checks++;
    if (r != strlen(want) || memcmp(out, want, r) != 0 || ent != want_enterprise)
        th_fail(__FILE__, line,
                "map(\"%.*s\", \"%.*s\") = %zu \"%.*s\" enterprise %d, expected \"%s\" enterprise "
                "%d",
                (int)n, principal, (int)an, authzid, r, (int)r, out, ent, want, want_enterprise);
}

static void map_no_n(int line, const char *principal, size_t n, const char *authzid, size_t an)
{
    char out[CRED_NAME_MAX + 1];
    bool ent;
    size_t r = map(principal, n, authzid, an, out, &ent);
    th_checks++;
    if (r != 0)
        th_fail(__FILE__, line, "map(\"%.*s\", \"%.*s\") = %zu \"%.*s\", expected a refusal",
                (int)n, principal, (int)an, authzid, r, (int)r, out);
}

#define MAP_OK(p, a, want, ent) map_ok_n(__LINE__, p, strlen(p), a, strlen(a), want, ent)
#define MAP_NO(p, a)            map_no_n(__LINE__, p, strlen(p), a, strlen(a))
/* With a literal's own length: for NULs inside. */
#define MAP_NO_LIT(p, a) map_no_n(__LINE__, p, sizeof p - 1, a, sizeof a - 1)

static void test_map(void)
{
    /* a user principal: its realm names the domain */
    MAP_OK("alice@CORP.EXAMPLE", "", "alice@CORP.EXAMPLE", false);
    /* an enterprise principal: the UPN it carries */
    MAP_OK("alice.smith\\@corp.com@CORP.EXAMPLE", "", "alice.smith@corp.com", true);
    /* an authzid that is the principal itself asks for its own mailbox */
    MAP_OK("alice@CORP.EXAMPLE", "alice@CORP.EXAMPLE", "alice@CORP.EXAMPLE", false);
    MAP_OK("alice@CORP.EXAMPLE", "ALICE@corp.example", "alice@CORP.EXAMPLE", false);
    MAP_OK("alice@CORP.EXAMPLE", "alice", "alice@CORP.EXAMPLE", false);
    MAP_OK("alice@CORP.EXAMPLE", "Alice", "alice@CORP.EXAMPLE", false);
    MAP_OK("alice.smith\\@corp.com@CORP.EXAMPLE", "alice.smith@corp.com", "alice.smith@corp.com",
           true);
    MAP_OK("alice.smith\\@corp.com@CORP.EXAMPLE", "ALICE.SMITH@CORP.COM", "alice.smith@corp.com",
           true);
    MAP_OK("alice.smith\\@corp.com@CORP.EXAMPLE", "alice.smith\\@corp.com@CORP.EXAMPLE",
           "alice.smith@corp.com", true);
    /* another names a mailbox alias */
    MAP_OK("alice@CORP.EXAMPLE", "shared", "alice@CORP.EXAMPLE\\shared", false);
    MAP_OK("alice.smith\\@corp.com@CORP.EXAMPLE", "shared", "alice.smith@corp.com\\shared", true);
    MAP_OK("alice@CORP.EXAMPLE", "alic", "alice@CORP.EXAMPLE\\alic", false);
    MAP_OK("alice@CORP.EXAMPLE", "alice@CORP", "alice@CORP.EXAMPLE\\alice@CORP", false);
    /* '\\' is a backslash */
    MAP_OK("a\\\\b@R", "", "a\\b@R", false);
    /* the own name is the name unescaped, too */
    MAP_OK("a\\\\b@R", "A\\B@r", "a\\b@R", false);
    MAP_OK("a\\\\b@R", "a\\b", "a\\b@R", false);
    MAP_OK("a\\\\\\@b@R", "", "a\\@b", true);

    /* no user: a service, no realm, an empty realm or user */
    MAP_NO("imap/host@R", "");
    MAP_NO("imap/host@R", "shared");
    MAP_NO("a/b/c@R", "");
    MAP_NO("/b@R", "");
    MAP_NO("alice", "");
    MAP_NO("alice", "alice");
    MAP_NO("alice@", "");
    MAP_NO("@R", "");
    MAP_NO("@", "");
    MAP_NO("", "");
    MAP_NO("alice\\@R", ""); /* the '@' is escaped: no realm */
    /* escapes other than \@ and \\ stand for bytes no logon name holds */
    MAP_NO("a\\/b@R", "");
    MAP_NO("a\\n@R", "");
    MAP_NO("a\\t@R", "");
    MAP_NO("a\\0@R", "");
    MAP_NO("a\\b@R", "");
    MAP_NO("a\\x@R", "");
    MAP_NO("a\\", "");
    /* control bytes */
    MAP_NO("a\nb@R", "");
    MAP_NO("a\tb@R", "");
    MAP_NO("\x01@R", "");
    MAP_NO("a\x1f@R", "");
    MAP_NO("a\x7f@R", "");
    MAP_NO("\x1b@R", "");
    /* a NUL inside the principal or the authzid */
    MAP_NO_LIT("al\0ice@R", "");
    MAP_NO_LIT("alice@R\0", "");
    MAP_NO_LIT("alice@CORP\0.EXAMPLE", "");
    MAP_NO_LIT("alice@R", "sh\0ared");
    MAP_NO_LIT("alice@R", "\0");
    MAP_NO_LIT("alice@R", "alice@R\0");
}

/* Results of exactly CRED_NAME_MAX bytes fit; one more does not. */
static void test_map_lengths(void)
{
    char p[600], a[600], want[600];

    /* user@R from the principal alone */
    for (size_t user = CRED_NAME_MAX - 4; user <= CRED_NAME_MAX + 2; user++) {
        memset(p, 'u', user);
        memcpy(p + user, "@R", 3);
        if (user + 2 <= CRED_NAME_MAX)
            map_ok_n(__LINE__, p, user + 2, "", 0, p, false);
        else
            map_no_n(__LINE__, p, user + 2, "", 0);
    }
    /* a long realm */
    for (size_t realm = CRED_NAME_MAX - 4; realm <= CRED_NAME_MAX; realm++) {
        memcpy(p, "bob@", 4);
        memset(p + 4, 'R', realm);
        p[4 + realm] = 0;
        if (4 + realm <= CRED_NAME_MAX)
            map_ok_n(__LINE__, p, 4 + realm, "", 0, p, false);
        else
            map_no_n(__LINE__, p, 4 + realm, "", 0);
    }
    /* an enterprise name: the UPN unescaped must fit, the realm goes */
    for (size_t upn = CRED_NAME_MAX - 2; upn <= CRED_NAME_MAX + 2; upn++) {
        size_t user = upn - 5; /* user@c.om */
        memset(p, 'e', user);
        memcpy(p + user, "\\@c.om@CORP.EXAMPLE", 20);
        memset(want, 'e', user);
        memcpy(want + user, "@c.om", 6);
        if (upn <= CRED_NAME_MAX)
            map_ok_n(__LINE__, p, strlen(p), "", 0, want, true);
        else
            map_no_n(__LINE__, p, strlen(p), "", 0);
    }
    /* the alias: "alice@R\" is 8 bytes */
    for (size_t an = CRED_NAME_MAX - 10; an <= CRED_NAME_MAX + 10; an++) {
        memset(a, 's', an);
        a[an] = 0;
        memcpy(want, "alice@R\\", 8);
        memcpy(want + 8, a, an + 1);
        if (8 + an <= CRED_NAME_MAX)
            map_ok_n(__LINE__, "alice@R", 7, a, an, want, false);
        else
            map_no_n(__LINE__, "alice@R", 7, a, an);
    }
    /* an authzid far longer than any name */
    memset(a, 's', sizeof a);
    map_no_n(__LINE__, "alice@R", 7, a, sizeof a);
    /* a user part of over CRED_NAME_MAX escaped bytes that unescapes to fewer */
    size_t k = 0;
    for (size_t i = 0; i < 150; i++) {
        p[k++] = '\\';
        p[k++] = '\\';
    }
    memcpy(p + k, "@R", 3);
    memset(want, '\\', 150);
    memcpy(want + 150, "@R", 3);
    map_ok_n(__LINE__, p, k + 2, "", 0, want, false);
}

/* ---- krb_service_ok ---- */

static bool svc_ok(const char *target, size_t n, enum fg_proto proto)
{
    char *t = th_guard_copy(target, n);
    bool ok = krb_service_ok(t, n, proto);
    th_guard_free(t, n);
    return ok;
}

#define SVC(t, proto, want)                                                                        \
    CHECKF(svc_ok(t, strlen(t), proto) == (want), "krb_service_ok(\"%s\", %s) is not %s", t,       \
           #proto, (want) ? "true" : "false")

static void test_service_ok(void)
{
    SVC("imap/host@R", FG_PROTO_IMAP, true);
    SVC("imap/host@R", FG_PROTO_POP3, false);
    SVC("pop/host@R", FG_PROTO_POP3, true);
    SVC("pop/host@R", FG_PROTO_IMAP, false);
    SVC("IMAP/h@R", FG_PROTO_IMAP, true);
    SVC("Pop/h@R", FG_PROTO_POP3, true);
    SVC("imap/mail.example", FG_PROTO_IMAP, true);
    SVC("imap@R/x", FG_PROTO_IMAP, true); /* a '/' in the realm splits no name */
    SVC("pop@R/x", FG_PROTO_IMAP, false);
    /* what krb_token_service gives: the first component alone */
    SVC("imap", FG_PROTO_IMAP, true);
    SVC("pop", FG_PROTO_POP3, true);
    SVC("imap", FG_PROTO_POP3, false);
    SVC("pop", FG_PROTO_IMAP, false);
    /* another service, or a near one */
    SVC("imaps/h@R", FG_PROTO_IMAP, false);
    SVC("ima/h@R", FG_PROTO_IMAP, false);
    SVC("ima", FG_PROTO_IMAP, false);
    SVC("pop3/h@R", FG_PROTO_POP3, false);
    SVC("po/h@R", FG_PROTO_POP3, false);
    SVC("host/h@R", FG_PROTO_IMAP, false);
    SVC("HTTP/h@R", FG_PROTO_POP3, false);
    SVC("/imap@R", FG_PROTO_IMAP, false);
    SVC("", FG_PROTO_IMAP, false);
    SVC("", FG_PROTO_POP3, false);
    /* an escaped '/' separates nothing */
    SVC("imap\\/x@R", FG_PROTO_IMAP, false);
    SVC("pop\\/x@R", FG_PROTO_POP3, false);
    SVC("imap\\@x", FG_PROTO_IMAP, false);
    /* no protocol beyond the two */
    CHECK(!svc_ok("imap", 4, FG_PROTO_COUNT));
    CHECK(!svc_ok("imap", 4, (enum fg_proto) - 1));
    /* a NUL is a byte like another: "imap\0" is not "imap" */
    CHECK(!svc_ok("imap\0", 5, FG_PROTO_IMAP));
}

/* ---- krb_token_service ---- */

/* A DER writer: blobs by value, each a TLV or a run of them. */
struct blob {
    size_t n;
    uint8_t p[2048];
};

static struct blob raw(const void *p, size_t n)
{
    struct blob b;
    if (n > sizeof b.p)
        abort();
    b.n = n;
    memcpy(b.p, p, n);
    return b;
}

static struct blob str(const char *s)
{
    return raw(s, strlen(s));
}

static struct blob cat(struct blob a, struct blob b)
{
    if (a.n + b.n > sizeof a.p)
        abort();
    memcpy(a.p + a.n, b.p, b.n);
    a.n += b.n;
    return a;
}

/* tag, the length (short form below 128, else 0x81 or 0x82), contents. */
static struct blob tlv(uint8_t tag, struct blob c)
{
    struct blob b;
    size_t h = 0;
    b.p[h++] = tag;
    if (c.n < 0x80) {
        b.p[h++] = (uint8_t)c.n;
    } else if (c.n < 0x100) {
        b.p[h++] = 0x81;
        b.p[h++] = (uint8_t)c.n;
    } else {
        b.p[h++] = 0x82;
        b.p[h++] = (uint8_t)(c.n >> 8);
        b.p[h++] = (uint8_t)c.n;
    }
    if (h + c.n > sizeof b.p)
        abort();
    memcpy(b.p + h, c.p, c.n);
    b.n = h + c.n;
    return b;
}

static struct blob integer(uint8_t v)
{
    return tlv(0x02, raw(&v, 1));
}

/* EncryptedData ::= SEQUENCE { [0] etype, [1] kvno OPTIONAL, [2] cipher } */
static struct blob encrypted(size_t cipher_len, bool kvno)
{
    uint8_t cipher[1024];
    for (size_t i = 0; i < cipher_len; i++)
        cipher[i] = (uint8_t)(i * 37 + 11);
    struct blob b = tlv(0xa0, integer(18)); /* aes256-cts-hmac-sha1-96 */
    if (kvno)
        b = cat(b, tlv(0xa1, integer(2)));
    return tlv(0x30, cat(b, tlv(0xa2, tlv(0x04, raw(cipher, cipher_len)))));
}

/* What a token may be built with, and how it may be damaged. */
struct tok {
    const char *service, *host, *realm;
    size_t enc_len;       /* the ticket's enc-part cipher */
    uint8_t oid[11];      /* 06 09 <krb5> */
    uint8_t tok_id[2];    /* 01 00: KRB_AP_REQ */
    uint8_t gss_tag;      /* 0x60 */
    uint8_t ap_tag;       /* 0x6e: [APPLICATION 14] */
    uint8_t ap_seq_tag;   /* 0x30 */
    uint8_t ticket_field; /* 0xa3: [3] Ticket */
    uint8_t ticket_tag;   /* 0x61: [APPLICATION 1] */
    uint8_t sname_field;  /* 0xa2: [2] sname */
    uint8_t sname_tag;    /* 0x30 */
    uint8_t names_field;  /* 0xa1: [1] name-string */
    uint8_t names_tag;    /* 0x30 */
    uint8_t string_tag;   /* 0x1b: GeneralString */
    bool no_ticket;       /* the AP-REQ without its [3] */
};

static struct tok tok_default(void)
{
    struct tok t = {
            .service = "imap",
            .host = "mail.example",
            .realm = "CORP.EXAMPLE",
            .enc_len = 200,
            .oid = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02},
            .tok_id = {0x01, 0x00},
            .gss_tag = 0x60,
            .ap_tag = 0x6e,
            .ap_seq_tag = 0x30,
            .ticket_field = 0xa3,
            .ticket_tag = 0x61,
            .sname_field = 0xa2,
            .sname_tag = 0x30,
            .names_field = 0xa1,
            .names_tag = 0x30,
            .string_tag = 0x1b,
    };
    return t;
}

static struct blob build(const struct tok *t)
{
    struct blob names = tlv(t->string_tag, str(t->service));
    if (t->host)
        names = cat(names, tlv(t->string_tag, str(t->host)));
    struct blob sname = tlv(t->sname_tag, cat(tlv(0xa0, integer(2)), /* KRB_NT_SRV_INST */
                                              tlv(t->names_field, tlv(t->names_tag, names))));
    struct blob ticket = tlv(0xa0, integer(5)); /* tkt-vno */
    ticket = cat(ticket, tlv(0xa1, tlv(0x1b, str(t->realm))));
    ticket = cat(ticket, tlv(t->sname_field, sname));
    ticket = cat(ticket, tlv(0xa3, encrypted(t->enc_len, true)));
    ticket = tlv(t->ticket_tag, tlv(0x30, ticket));

    static const uint8_t ap_options[] = {0x00, 0x20, 0x00, 0x00, 0x00}; /* mutual-required */
    struct blob ap = tlv(0xa0, integer(5));                             /* pvno */
    ap = cat(ap, tlv(0xa1, integer(14)));                               /* KRB_AP_REQ */
    ap = cat(ap, tlv(0xa2, tlv(0x03, raw(ap_options, sizeof ap_options))));
    if (!t->no_ticket)
        ap = cat(ap, tlv(t->ticket_field, ticket));
    ap = cat(ap, tlv(0xa4, encrypted(64, false))); /* the authenticator */
    ap = tlv(t->ap_tag, tlv(t->ap_seq_tag, ap));

    struct blob inner = cat(raw(t->oid, sizeof t->oid), raw(t->tok_id, sizeof t->tok_id));
    return tlv(t->gss_tag, cat(inner, ap));
}

/* The service, read from a guard copy and from an exact heap copy: both
 * must agree. out is NUL-terminated here for the messages. */
static size_t service(const uint8_t *tok, size_t n, char *out, size_t max)
{
    char *g = th_guard_copy(tok, n);
    size_t r = krb_token_service((const uint8_t *)g, n, out, max);
    th_guard_free(g, n);
    uint8_t *h = malloc(n ? n : 1);
    if (!h)
        abort();
    memcpy(h, tok, n);
    char out2[128];
    size_t r2 = krb_token_service(h, n, out2, max < sizeof out2 ? max : sizeof out2);
    free(h);
    CHECKF(r == r2 && memcmp(out, out2, r) == 0, "two copies of one token read differently");
    CHECKF(r <= max, "service of %zu bytes, max %zu", r, max);
    out[r <= max ? r : 0] = 0;
    return r;
}

static size_t service_of(const struct tok *t, char *out, size_t max)
{
    struct blob b = build(t);
    return service(b.p, b.n, out, max);
}

#define SERVICE_IS(t, want)                                                                        \
    do {                                                                                           \
        char th_o[128];                                                                            \
        size_t th_r = service_of(t, th_o, 64);                                                     \
        CHECK_MEM(th_o, th_r, want);                                                               \
    } while (0)

#define SERVICE_NONE(t)                                                                            \
    do {                                                                                           \
        char th_o[128];                                                                            \
        CHECK_INT(service_of(t, th_o, 64), 0);                                                     \
    } while (0)

static void test_token(void)
{
    struct tok t = tok_default();
    char out[128];

    SERVICE_IS(&t, "imap");
    t.service = "pop";
    SERVICE_IS(&t, "pop");
    t.service = "HTTP";
    SERVICE_IS(&t, "HTTP");
    t.service = "imap";
    t.host = NULL; /* a one-component sname */
    SERVICE_IS(&t, "imap");

    /* the lengths' forms: 0x81 at the top for a small enc-part, 0x82 (and
     * 0x82 in the enc-part itself) for one over 255 bytes */
    t = tok_default();
    t.enc_len = 16;
    struct blob b = build(&t);
    CHECK(b.p[0] == 0x60 && b.p[1] == 0x81);
    SERVICE_IS(&t, "imap");
    t.enc_len = 600;
    b = build(&t);
    CHECK(b.p[0] == 0x60 && b.p[1] == 0x82 && (size_t)(b.p[2] << 8 | b.p[3]) == b.n - 4);
    CHECK(th_contains((const char *)b.p, b.n, "\xa2\x82\x02\x5c\x04\x82\x02\x58"));
    SERVICE_IS(&t, "imap");

    /* the service must fit max; no NUL is added */
    t = tok_default();
    b = build(&t);
    memset(out, 'X', sizeof out);
    CHECK_INT(krb_token_service(b.p, b.n, out, 4), 4);
    CHECK(memcmp(out, "imapX", 5) == 0);
    CHECK_INT(service(b.p, b.n, out, 3), 0);
    CHECK_INT(service(b.p, b.n, out, 0), 0);
    char lng[80];
    memset(lng, 's', 70);
    lng[70] = 0;
    t.service = lng;
    CHECK_INT(service_of(&t, out, 69), 0);
    CHECK_INT(service_of(&t, out, 70), 70);
    /* no empty service, none with a NUL */
    t.service = "";
    SERVICE_NONE(&t);
    t = tok_default();
    b = build(&t);
    uint8_t *m = memmem(b.p, b.n, "\x1b\x04imap", 6);
    CHECK(m != NULL);
    if (m) {
        m[3] = 0; /* "i\0ap" */
        CHECK_INT(service(b.p, b.n, out, 64), 0);
    }

    /* another mechanism: MS's krb5 OID (SPNEGO's would be shorter), another
     * arc of the OID, SPNEGO itself */
    t = tok_default();
    t.oid[5] = 0x82; /* 1.2.840.48018.1.2.2 */
    SERVICE_NONE(&t);
    t = tok_default();
    t.oid[10] = 0x03; /* 1.2.840.113554.1.2.3 */
    SERVICE_NONE(&t);
    t = tok_default();
    t.oid[1] = 0x0a;
    SERVICE_NONE(&t);
    static const uint8_t spnego[] = {0x60, 0x0a, 0x06, 0x06, 0x2b, 0x06,
                                     0x01, 0x05, 0x05, 0x02, 0xa0, 0x00};
    CHECK_INT(service(spnego, sizeof spnego, out, 64), 0);

    /* another token: an AP-REP, an error, a wrap token */
    static const uint8_t ids[][2] = {
            {0x02, 0x00}, {0x03, 0x00}, {0x01, 0x01}, {0x00, 0x01}, {0x04, 0x04}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        t = tok_default();
        memcpy(t.tok_id, ids[i], 2);
        SERVICE_NONE(&t);
    }

    /* no ticket */
    t = tok_default();
    t.no_ticket = true;
    SERVICE_NONE(&t);

    /* the wrong tags, one at a time */
    t = tok_default();
    t.gss_tag = 0x30;
    SERVICE_NONE(&t);
    t = tok_default();
    t.gss_tag = 0x61;
    SERVICE_NONE(&t);
    t = tok_default();
    t.ap_tag = 0x6f; /* [APPLICATION 15]: an AP-REP */
    SERVICE_NONE(&t);
    t = tok_default();
    t.ap_tag = 0x7e; /* KRB-ERROR */
    SERVICE_NONE(&t);
    t = tok_default();
    t.ap_seq_tag = 0x31;
    SERVICE_NONE(&t);
    t = tok_default();
    t.ticket_field = 0xa5;
    SERVICE_NONE(&t);
    t = tok_default();
    t.ticket_tag = 0x62;
    SERVICE_NONE(&t);
    t = tok_default();
    t.ticket_tag = 0x30;
    SERVICE_NONE(&t);
    t = tok_default();
    t.sname_field = 0xa4;
    SERVICE_NONE(&t);
    t = tok_default();
    t.sname_tag = 0x31;
    SERVICE_NONE(&t);
    t = tok_default();
    t.names_field = 0xa2;
    SERVICE_NONE(&t);
    t = tok_default();
    t.names_tag = 0x31;
    SERVICE_NONE(&t);
    t = tok_default();
    t.string_tag = 0x0c; /* UTF8String: not Kerberos' */
    SERVICE_NONE(&t);

    /* lengths that point past their end */
    t = tok_default();
    b = build(&t);
    CHECK(b.p[1] == 0x82);
    uint8_t bad[2100];
    size_t len = (size_t)(b.p[2] << 8 | b.p[3]);
    memcpy(bad, b.p, b.n);
    bad[2] = (uint8_t)((len + 1) >> 8); /* the framing: one byte more than there is */
    bad[3] = (uint8_t)(len + 1);
    CHECK_INT(service(bad, b.n, out, 64), 0);
    memcpy(bad, b.p, b.n);
    bad[2] = 0xff; /* far more */
    CHECK_INT(service(bad, b.n, out, 64), 0);
    memcpy(bad, b.p, b.n);
    bad[1] = 0x84; /* four length bytes: 0x01xx0609, far more */
    CHECK_INT(service(bad, b.n, out, 64), 0);
    memcpy(bad, b.p, b.n);
    bad[1] = 0x85; /* five length bytes: too many */
    CHECK_INT(service(bad, b.n, out, 64), 0);
    memcpy(bad, b.p, b.n);
    bad[1] = 0x80; /* indefinite: not DER */
    CHECK_INT(service(bad, b.n, out, 64), 0);
    memcpy(bad, b.p, b.n);
    m = memmem(bad, b.n, "\x1b\x04imap", 6);
    CHECK(m != NULL);
    if (m) {
        m[1] = 0x7f; /* the service's string runs past its SEQUENCE OF */
        CHECK_INT(service(bad, b.n, out, 64), 0);
        m[1] = 0x84; /* a long form that the SEQUENCE OF cannot hold */
        CHECK_INT(service(bad, b.n, out, 64), 0);
    }
    /* the only component, one byte longer than its SEQUENCE OF */
    t.host = NULL;
    b = build(&t);
    memcpy(bad, b.p, b.n);
    m = memmem(bad, b.n, "\x30\x06\x1b\x04imap", 8);
    CHECK(m != NULL);
    if (m) {
        m[3] = 0x05;
        CHECK_INT(service(bad, b.n, out, 64), 0);
    }
    /* the AP-REQ's [3], 256 bytes longer than the AP-REQ */
    t = tok_default();
    b = build(&t);
    memcpy(bad, b.p, b.n);
    m = NULL;
    for (size_t i = 0; i + 4 < b.n && !m; i++)
        if (bad[i] == 0xa3 && bad[i + 1] == 0x82 && bad[i + 4] == 0x61)
            m = bad + i;
    CHECK(m != NULL);
    if (m) {
        m[2]++;
        CHECK_INT(service(bad, b.n, out, 64), 0);
    }

    /* extra bytes after a whole token change nothing */
    t = tok_default();
    b = build(&t);
    memcpy(bad, b.p, b.n);
    memset(bad + b.n, 0, 8);
    CHECK_INT(service(bad, b.n + 8, out, 64), 4);
}

/* Every prefix of a good token is no token, and is read inside itself:
 * the guard page, and an exact heap block under ASan. */
static void test_token_truncated(void)
{
    static const size_t enc[] = {16, 200, 300};
    static const char *const svc[] = {"imap", "pop"};
    for (size_t e = 0; e < sizeof enc / sizeof enc[0]; e++) {
        for (size_t s = 0; s < 2; s++) {
            struct tok t = tok_default();
            t.enc_len = enc[e];
            t.service = svc[s];
            struct blob b = build(&t);
            char out[128];
            CHECK_MEM(out, service(b.p, b.n, out, 64), svc[s]);
            for (size_t cut = 0; cut < b.n; cut++) {
                size_t r = service(b.p, cut, out, 64);
                CHECKF(r == 0, "%s token (enc-part %zu) cut at %zu of %zu: \"%s\"", svc[s], enc[e],
                       cut, b.n, out);
            }
        }
    }
}

/* Every byte flipped in every way: reads stay inside, and a service that
 * comes out fits max and holds no NUL. */
static void test_token_flipped(void)
{
    struct tok t = tok_default();
    t.enc_len = 20;
    struct blob b = build(&t);
    for (size_t i = 0; i < b.n; i++) {
        for (unsigned x = 1; x < 256; x <<= 1) {
            b.p[i] ^= (uint8_t)x;
            char out[128];
            size_t r = service(b.p, b.n, out, 8);
            CHECKF(r <= 8 && memchr(out, 0, r) == NULL, "byte %zu ^ %#x: %zu", i, x, r);
            b.p[i] ^= (uint8_t)x;
        }
    }
}

int main(void)
{
    test_map();
    test_map_lengths();
    test_service_ok();
    test_token();
    test_token_truncated();
    test_token_flipped();
    return th_finish("test_krb_name");
}
