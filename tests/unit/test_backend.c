/*
 * The backend login dialogues (IMAP and POP3), driven as the core drives them:
 * scripted server bytes go into bl.in, input() answers into the out buffer.
 * What the IMAP dialogue sends is read back with imap_parse_command, as a
 * real server would read it, so that every credential byte is checked.
 */
#include "../../base/base64.h"
#include "../../proto/backend.h"
#include "harness.h"

#include <stdlib.h>

#define SECRET      "Sup3r$ecret"
#define CLIENT_IP   "192.0.2.10"
#define LOCAL_IP    "198.51.100.5"
#define SESSION_ID  "fg-0001-abc"
#define CLIENT_PORT 50123
#define LOCAL_PORT  993
#define TTL         4

#define GREET_FULL   "* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN ID] Dovecot ready.\r\n"
#define GREET_NO_LIT "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN ID] ready.\r\n"
#define GREET_NO_IR  "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN ID] ready.\r\n"
#define XCLIENT_LINE "XCLIENT ADDR=" CLIENT_IP " PORT=50123 SESSION=" SESSION_ID " TTL=4\r\n"

#define SENT(b)          (int)buf_avail(&(b)->out), buf_head(&(b)->out)
#define CHECK_SENT(b, s) CHECK_MEM(buf_head(&(b)->out), buf_avail(&(b)->out), s)
#define CHECK_SENT_HAS(b, s)                                                                       \
    CHECKF(sent_has(b, s), "sent \"%.*s\" should contain \"%s\"", SENT(b), s)
#define CHECK_SENT_LACKS(b, s)                                                                     \
    CHECKF(!sent_has(b, s), "sent \"%.*s\" must not contain \"%s\"", SENT(b), s)

struct plog_cap {
    char text[16384];
    size_t len;
    int lines;
};

/* A dialogue under test: its parameters, its output and an optional log. */
struct bx {
    struct backend_login_params par;
    struct buf out;
    struct backend_login bl;
    struct plog_cap cap;
};

static void plog_capture(void *ctx, const char *dir, const char *line, size_t n)
{
    struct plog_cap *c = ctx;
    c->lines++;
    int k = snprintf(c->text + c->len, sizeof c->text - c->len, "%s %.*s\n", dir, (int)n, line);
    if (k > 0)
        c->len = FG_MIN(c->len + (size_t)k, sizeof c->text - 1);
}

static void bx_params(struct bx *b, const char *user, const char *pass)
{
    memset(b, 0, sizeof *b);
    b->par.mode = BACKEND_LOGIN_PASSTHROUGH;
    b->par.user = user;
    b->par.user_len = strlen(user);
    b->par.pass = pass;
    b->par.pass_len = strlen(pass);
    b->par.forward = true;
    b->par.client_ip = CLIENT_IP;
    b->par.local_ip = LOCAL_IP;
    b->par.session_id = SESSION_ID;
    b->par.client_port = CLIENT_PORT;
    b->par.local_port = LOCAL_PORT;
    b->par.ttl = TTL;
}

static void bx_master(struct bx *b, const char *mailbox, const char *muser, const char *mpass)
{
    bx_params(b, mailbox, "");
    b->par.mode = BACKEND_LOGIN_MASTER;
    b->par.pass = NULL;
    b->par.master_user = muser;
    b->par.master_user_len = strlen(muser);
    b->par.master_pass = mpass;
    b->par.master_pass_len = strlen(mpass);
}

static void bx_start(struct bx *b, const struct backend_login_ops *ops)
{
    backend_login_init(&b->bl, ops, &b->par, &b->out);
    b->bl.plog = plog_capture;
    b->bl.plog_ctx = &b->cap;
}

static void bx_clear(struct bx *b)
{
    buf_consume(&b->out, buf_avail(&b->out));
}

/* Appends server bytes and runs input(); the output holds only what was sent now. */
static enum backend_login_result bx_feed_n(struct bx *b, const char *s, size_t n)
{
    bx_clear(b);
    buf_append(&b->bl.in, s, n);
    return b->bl.ops->input(&b->bl);
}

static enum backend_login_result bx_feed(struct bx *b, const char *s)
{
    return bx_feed_n(b, s, strlen(s));
}

static void bx_free(struct bx *b)
{
    backend_login_free(&b->bl);
    buf_free(&b->out);
}

static bool sent_has(const struct bx *b, const char *s)
{
    return th_contains(buf_head(&b->out), buf_avail(&b->out), s);
}

static bool log_has(const struct bx *b, const char *s)
{
    return th_contains(b->cap.text, b->cap.len, s);
}

static int b64_val(unsigned char c)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(a, c) : NULL;
    return p ? (int)(p - a) : -1;
}

/* An independent base64 decoder; returns the length or -1. */
static long b64_decode(const char *s, size_t n, unsigned char *dst)
{
    size_t o = 0;
    if (n % 4 != 0)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        int pad = (s[i + 3] == '=') + (s[i + 2] == '=');
        if (pad && i + 4 != n)
            return -1;
        unsigned v = 0;
        for (int k = 0; k < 4; k++) {
            int d = k >= 4 - pad ? 0 : b64_val((unsigned char)s[i + k]);
            if (d < 0)
                return -1;
            v = v << 6 | (unsigned)d;
        }
        dst[o++] = (unsigned char)(v >> 16);
        if (pad < 2)
            dst[o++] = (unsigned char)(v >> 8);
        if (pad < 1)
            dst[o++] = (unsigned char)v;
    }
    return (long)o;
}

/* Checks that b64 (n chars) decodes to exactly want (wn bytes, NULs included). */
static void check_plain(const char *b64, size_t n, const char *want, size_t wn)
{
    unsigned char raw[4096];
    long len = n <= 4 * (sizeof raw / 3) ? b64_decode(b64, n, raw) : -1;
    CHECKF(len == (long)wn && memcmp(raw, want, wn) == 0,
           "PLAIN response \"%.*s\" does not decode to the expected %zu bytes (got %ld)", (int)n,
           b64, wn, len);
}

/* ---- a server reading what the IMAP dialogue sends ------------------------ */

struct srv {
    struct buf cmd; /* bytes received and not yet consumed */
    struct imap_parser p;
    int conts;        /* "+" sent for synchronising literals */
    bool eager;       /* bytes came before the "+" their literal needed */
    bool saw_nonsync; /* a {n+} header was received */
};

static void srv_init(struct srv *sv)
{
    memset(sv, 0, sizeof *sv);
    imap_parser_init(&sv->p, 65536);
}

static void srv_recv(struct srv *sv, struct bx *b)
{
    if (th_contains(buf_head(&b->out), buf_avail(&b->out), "+}\r\n"))
        sv->saw_nonsync = true;
    buf_append(&sv->cmd, buf_head(&b->out), buf_avail(&b->out));
    bx_clear(b);
}

/*
 * Reads the next command, answering each synchronising literal with "+ go".
 * Returns the parser's result; IMAP_PARSE_AGAIN when the dialogue stopped
 * sending before the command was complete.
 */
static int srv_next(struct srv *sv, struct bx *b)
{
    for (;;) {
        srv_recv(sv, b);
        int rc = imap_parse_command(&sv->p, buf_head(&sv->cmd), buf_avail(&sv->cmd));
        if (rc != IMAP_PARSE_CONTINUE)
            return rc;
        sv->conts++;
        if (buf_avail(&sv->cmd) > sv->p.pos)
            sv->eager = true;
        buf_append(&b->bl.in, "+ go\r\n", 6);
        CHECK_INT(b->bl.ops->input(&b->bl), BACKEND_AGAIN);
    }
}

static bool srv_arg_is(const struct srv *sv, unsigned i, const char *s, size_t n)
{
    const struct imap_arg *a = &sv->p.args[i];
    return i < sv->p.nargs && a->len == n && memcmp(buf_head(&sv->cmd) + a->off, s, n) == 0;
}

static void srv_done(struct srv *sv)
{
    buf_consume(&sv->cmd, sv->p.pos);
    imap_parser_reset(&sv->p);
}

/* Reads the next command and checks its tag and name. */
static bool srv_expect(struct srv *sv, struct bx *b, const char *tag, const char *name)
{
    int rc = srv_next(sv, b);
    bool ok = rc == IMAP_PARSE_DONE && srv_arg_is(sv, 0, tag, strlen(tag)) &&
              srv_arg_is(sv, 1, name, strlen(name));
    CHECKF(ok, "expected a \"%s %s\" command; parse rc %d, received \"%.*s\"", tag, name, rc,
           (int)buf_avail(&sv->cmd), buf_head(&sv->cmd));
    return ok;
}

/* ---- IMAP: the forwarding ID and the login ----------------------------------- */

/* The value of an ID field in the parsed F1 ID command, or NULL. */
static const char *id_field(const struct srv *sv, const char *name, uint32_t *len)
{
    const struct imap_arg *a = sv->p.args;
    for (unsigned i = 3; i + 1 < sv->p.nargs; i += 2) {
        if (srv_arg_is(sv, i, name, strlen(name))) {
            *len = a[i + 1].len;
            return buf_head(&sv->cmd) + a[i + 1].off;
        }
    }
    return NULL;
}

static void check_id_field(const struct srv *sv, const char *name, const char *want)
{
    uint32_t n = 0;
    const char *v = id_field(sv, name, &n);
    CHECKF(v && n == strlen(want) && memcmp(v, want, n) == 0,
           "ID field %s: got \"%.*s\", expected \"%s\"", name, v ? (int)n : 6, v ? v : "(none)",
           want);
}

static void test_imap_sends_forwarding_id_and_login_in_one_go(void)
{
    struct bx b;
    struct srv sv;
    bx_params(&b, "alice", "secret");
    bx_start(&b, &imap_backend_ops);
    srv_init(&sv);
    CHECK_INT(bx_feed(&b, GREET_FULL), BACKEND_AGAIN);
    if (srv_expect(&sv, &b, "F1", "ID")) {
        CHECK_INT(sv.p.nargs, 2 + 1 + 12 + 1);
        CHECK_INT(sv.p.args[2].type, IMAP_ARG_LIST);
        check_id_field(&sv, "x-originating-ip", CLIENT_IP);
        check_id_field(&sv, "x-originating-port", "50123");
        check_id_field(&sv, "x-connected-ip", LOCAL_IP);
        check_id_field(&sv, "x-connected-port", "993");
        check_id_field(&sv, "x-session-id", SESSION_ID);
        check_id_field(&sv, "x-proxy-ttl", "4");
    }
    srv_done(&sv);
    if (srv_expect(&sv, &b, "F2", "LOGIN")) {
        CHECK(srv_arg_is(&sv, 2, "alice", 5));
        CHECK(srv_arg_is(&sv, 3, "secret", 6));
        CHECK_INT(sv.p.nargs, 4);
    }
    srv_done(&sv);
    CHECK_INT(buf_avail(&sv.cmd), 0);
    CHECK_INT(sv.conts, 0);
    buf_free(&sv.cmd);
    bx_free(&b);
}

static void test_imap_ok_with_caps_is_ok_and_keeps_following_bytes(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, GREET_FULL), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "* ID (\"name\" \"Dovecot\")\r\nF1 OK ID completed.\r\n"), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "F2 OK [CAPABILITY IMAP4rev1 X] Logged in\r\n* 3 EXISTS\r\nxy"),
              BACKEND_OK);
    CHECK(b.bl.caps != NULL);
    if (b.bl.caps)
        CHECK_MEM(b.bl.caps, b.bl.caps_len, "IMAP4rev1 X");
    CHECK_MEM(buf_head(&b.bl.in), buf_avail(&b.bl.in), "* 3 EXISTS\r\nxy");
    CHECK_SENT(&b, "");
    bx_free(&b);
}

static void test_imap_greeting_without_caps_asks_capability_first(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, "* OK IMAP4 ready.\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "F0 CAPABILITY\r\n");
    CHECK_INT(bx_feed(&b, "* CAPABILITY IMAP4rev1 LITERAL+ ID\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, ""); /* nothing before the tagged OK */
    CHECK_INT(bx_feed(&b, "F0 OK done\r\n"), BACKEND_AGAIN);
    CHECK_SENT_HAS(&b, "F1 ID ("); /* ID learned from the untagged reply */
    CHECK_SENT_HAS(&b, "\r\nF2 LOGIN alice secret\r\n");
    CHECK_INT(bx_feed(&b, "F1 OK\r\nF2 OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n"), BACKEND_OK);
    bx_free(&b);
}

/* "*" alone has no data after its tag: read as an empty slice, never as a
 * null pointer (found by fuzz_backend; UBSan: zero offset applied to null). */
static void test_imap_bare_untagged_line_while_asking_capability(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, "* OK IMAP4 ready.\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "F0 CAPABILITY\r\n");
    CHECK_INT(bx_feed(&b, "*\r\n"), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "* CAPABILITY IMAP4rev1 ID\r\nF0 OK done\r\n"), BACKEND_AGAIN);
    CHECK_SENT_HAS(&b, "\r\nF2 LOGIN alice secret\r\n");
    CHECK_INT(bx_feed(&b, "F1 OK\r\n*\r\nF2 OK hi\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "F3 CAPABILITY\r\n");
    CHECK_INT(bx_feed(&b, "*\r\nF3 OK done\r\n"), BACKEND_OK);
    bx_free(&b);
}

static void test_imap_ok_without_caps_asks_capability_after_login(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, GREET_FULL), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "F1 OK\r\nF2 OK Logged in\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "F3 CAPABILITY\r\n");
    CHECK_INT(bx_feed(&b, "* CAPABILITY IMAP4rev1 Y\r\n"), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "F3 OK done\r\n"), BACKEND_OK);
    CHECK(b.bl.caps != NULL);
    if (b.bl.caps)
        CHECK_MEM(b.bl.caps, b.bl.caps_len, "IMAP4rev1 Y");
    CHECK_SENT(&b, "");
    bx_free(&b);
}

static void test_imap_forward_off_sends_no_id(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    b.par.forward = false;
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, GREET_FULL), BACKEND_AGAIN);
    CHECK_SENT(&b, "F2 LOGIN alice secret\r\n");
    bx_free(&b);
}

static void test_imap_backend_without_id_cap_gets_no_id(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, "* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "F2 LOGIN alice secret\r\n");
    bx_free(&b);
}

static void test_imap_refused_id_does_not_stop_login(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, GREET_FULL), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "F1 BAD Unknown command\r\nF2 OK [CAPABILITY IMAP4rev1] hi\r\n"),
              BACKEND_OK);
    bx_free(&b);
}

/* ---- IMAP: the credential re-encoder --------------------------------------- */

#define A IMAP_ARG_ATOM
#define Q IMAP_ARG_QUOTED
#define L IMAP_ARG_LITERAL

struct cred_case {
    const char *user, *pass;
    uint8_t ukind, pkind; /* how each must travel (RFC 3501 section 9) */
};

/* ATOM-CHARs are sent bare, other printable ASCII quoted, 8-bit and controls as literals. */
static const struct cred_case cred_cases[] = {
        {"alice", "secret", A, A},
        {"alice", "pa+ss", A, A},
        {"alice", "pa/ss", A, A},
        {"alice", "pa&ss", A, A},
        {"alice", "pa=ss", A, A},
        {"alice", "pa?ss", A, A},
        {"alice", "pa[ss", A, A},
        {"alice", "pa}ss", A, A},
        {"alice", "!#$&'+,-./:;<=>?@[^_`|}~", A, A},
        {"alice", "pa%ss", A, Q},
        {"alice", "pa(ss", A, Q},
        {"alice", "pa)ss", A, Q},
        {"alice", "pa]ss", A, Q},
        {"alice", "pa*ss", A, Q},
        {"alice", "pa\\ss", A, Q},
        {"alice", "pa\"ss", A, Q},
        {"alice", "pa{ss", A, Q},
        {"alice", "\\\"", A, Q},
        {"alice", "x{5}", A, Q},
        {"alice", "{5+}", A, Q},
        {"alice", "pass word", A, Q},
        {"alice", " lead", A, Q},
        {"alice", "trail ", A, Q},
        {"alice", "p\xc3\xa4ssw\xc3\xb6rd\xe2\x82\xac", A, L},
        {"alice", "pa\x01ss", A, L},
        {"alice", "pa\tss", A, L},
        {"alice", "pa\r\nss", A, L},
        {"alice@example.com", "secret", A, A},
        {"CORP\\alice", "secret", Q, A},
        {"al ice", "a b", Q, Q},
        {"j\xc3\xbcrgen", "p\xc3\xa4ss", L, L},
        {"j\xc3\xbcrgen", "pa(ss", L, Q},
        {"al\r\nice", "pa\x7f", L, L}, /* DEL is a CTL too */
};

#undef A
#undef Q
#undef L

static void check_login_args(const struct srv *sv, const struct cred_case *c, bool lit_plus)
{
    CHECK_INT(sv->p.nargs, 4);
    CHECKF(srv_arg_is(sv, 2, c->user, strlen(c->user)) &&
                   srv_arg_is(sv, 3, c->pass, strlen(c->pass)),
           "user \"%s\" pass \"%s\" (LITERAL+ %d): the server read other bytes", c->user, c->pass,
           lit_plus);
    CHECKF(sv->p.nargs == 4 && sv->p.args[2].type == c->ukind && sv->p.args[3].type == c->pkind,
           "user \"%s\" pass \"%s\": sent as kinds %d/%d, expected %d/%d", c->user, c->pass,
           sv->p.args[2].type, sv->p.args[3].type, c->ukind, c->pkind);
}

static void check_reencoded(const struct cred_case *c, bool lit_plus)
{
    struct bx b;
    struct srv sv;
    int literals = (c->ukind == IMAP_ARG_LITERAL) + (c->pkind == IMAP_ARG_LITERAL);
    bx_params(&b, c->user, c->pass);
    bx_start(&b, &imap_backend_ops);
    srv_init(&sv);
    CHECK_INT(bx_feed(&b, lit_plus ? GREET_FULL : GREET_NO_LIT), BACKEND_AGAIN);
    if (srv_expect(&sv, &b, "F1", "ID"))
        srv_done(&sv);
    if (srv_expect(&sv, &b, "F2", "LOGIN"))
        check_login_args(&sv, c, lit_plus);
    CHECKF(sv.conts == (lit_plus ? 0 : literals), "pass \"%s\" (LITERAL+ %d): %d continuations",
           c->pass, lit_plus, sv.conts);
    CHECKF(!sv.eager, "pass \"%s\": literal data sent before the server's \"+\"", c->pass);
    CHECKF(lit_plus || !sv.saw_nonsync, "pass \"%s\": {n+} sent to a server without LITERAL+",
           c->pass);
    srv_done(&sv);
    CHECK_INT(bx_feed(&b, "F1 OK\r\nF2 OK [CAPABILITY IMAP4rev1] hi\r\n"), BACKEND_OK);
    buf_free(&sv.cmd);
    bx_free(&b);
}

static void test_imap_credentials_arrive_byte_identical_with_literal_plus(void)
{
    for (size_t i = 0; i < FG_ARRAY_SIZE(cred_cases); i++)
        check_reencoded(&cred_cases[i], true);
}

static void test_imap_credentials_arrive_byte_identical_with_sync_literals(void)
{
    for (size_t i = 0; i < FG_ARRAY_SIZE(cred_cases); i++)
        check_reencoded(&cred_cases[i], false);
}

/* Without LITERAL+, nothing after "{n}\r\n" goes out before the server's "+". */
static void test_imap_sync_literal_waits_for_continuation(void)
{
    struct bx b;
    bx_params(&b, "alice", "p\xc3\xa4ss");
    b.par.forward = false;
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, GREET_NO_LIT), BACKEND_AGAIN);
    CHECK_SENT(&b, "F2 LOGIN alice {5}\r\n");
    CHECK_INT(bx_feed(&b, "+ go\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "p\xc3\xa4ss\r\n");
    CHECK_INT(bx_feed(&b, "F2 OK [CAPABILITY IMAP4rev1] hi\r\n"), BACKEND_OK);
    bx_free(&b);
}

/* A tagged OK while the literal still waits for "+" breaks the protocol: the
 * rest would go out after it and be read as the literal (found by fuzz_backend). */
static void test_imap_ok_before_literal_sent_fails(void)
{
    struct bx b;
    bx_params(&b, "alice", "p\xc3\xa4ss");
    b.par.forward = false;
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, GREET_NO_LIT), BACKEND_AGAIN);
    CHECK_SENT(&b, "F2 LOGIN alice {5}\r\n");
    CHECK_INT(bx_feed(&b, "F2 OK hi\r\n"), BACKEND_FAIL);
    CHECK_SENT(&b, "");
    CHECK(th_contains(b.bl.reason, strlen(b.bl.reason), "before it was sent whole"));
    bx_free(&b);
    /* A refusal of the literal is the server's right: a NO, not a failure. */
    bx_params(&b, "alice", "p\xc3\xa4ss");
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, GREET_NO_LIT), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "F2 NO [AUTHENTICATIONFAILED] no\r\n"), BACKEND_NO);
    bx_free(&b);
}

/* ---- IMAP: refusals ----------------------------------------------------------- */

static void test_imap_no_codes_map_to_login_status(void)
{
    static const struct {
        const char *reply;
        enum backend_login_result res;
        enum login_status st;
    } cases[] = {
            {"F2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", BACKEND_NO, LOGIN_FAILED},
            {"F2 NO [AUTHORIZATIONFAILED] Not allowed.\r\n", BACKEND_NO, LOGIN_DENIED},
            {"F2 NO [EXPIRED] Password expired.\r\n", BACKEND_NO, LOGIN_EXPIRED},
            {"F2 NO [UNAVAILABLE] Try again later.\r\n", BACKEND_NO, LOGIN_UNAVAILABLE},
            {"F2 NO Login failed.\r\n", BACKEND_NO, LOGIN_FAILED},
            {"F2 BAD Invalid arguments.\r\n", BACKEND_FAIL, LOGIN_FAILED},
            {"* BYE Server shutting down.\r\n", BACKEND_FAIL, LOGIN_FAILED},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct bx b;
        bx_params(&b, "alice", SECRET);
        bx_start(&b, &imap_backend_ops);
        CHECK_INT(bx_feed(&b, GREET_FULL), BACKEND_AGAIN);
        CHECK_INT(bx_feed(&b, "F1 OK\r\n"), BACKEND_AGAIN);
        enum backend_login_result res = bx_feed(&b, cases[i].reply);
        CHECKF(res == cases[i].res, "\"%s\": result %d, expected %d", cases[i].reply, res,
               cases[i].res);
        CHECKF(res != BACKEND_NO || b.bl.status == cases[i].st, "\"%s\": status %d, expected %d",
               cases[i].reply, b.bl.status, cases[i].st);
        CHECKF(b.bl.reason[0] != 0 && !th_contains(b.bl.reason, strlen(b.bl.reason), SECRET),
               "\"%s\": reason \"%s\"", cases[i].reply, b.bl.reason);
        bx_free(&b);
    }
}

static void test_imap_preauth_or_bye_greeting_fails_before_sending(void)
{
    static const char *const greetings[] = {
            "* PREAUTH [CAPABILITY IMAP4rev1] Logged in as alice\r\n",
            "* BYE Too many connections\r\n",
            "* NO go away\r\n",
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(greetings); i++) {
        struct bx b;
        bx_params(&b, "alice", SECRET);
        bx_start(&b, &imap_backend_ops);
        CHECKF(bx_feed(&b, greetings[i]) == BACKEND_FAIL, "greeting %zu should fail", i);
        CHECK_SENT(&b, "");
        CHECK(b.bl.reason[0] != 0);
        bx_free(&b);
    }
}

/* ---- IMAP: master-user login ------------------------------------------------- */

static const char master_plain[] = "shared.box\0fg-master\0M@ster pass!";

static void test_imap_master_login_uses_sasl_ir(void)
{
    struct bx b;
    struct srv sv;
    bx_master(&b, "shared.box", "fg-master", "M@ster pass!");
    bx_start(&b, &imap_backend_ops);
    srv_init(&sv);
    CHECK_INT(bx_feed(&b, GREET_FULL), BACKEND_AGAIN);
    if (srv_expect(&sv, &b, "F1", "ID"))
        srv_done(&sv);
    if (srv_expect(&sv, &b, "F2", "AUTHENTICATE")) {
        CHECK_INT(sv.p.nargs, 4);
        CHECK(srv_arg_is(&sv, 2, "PLAIN", 5));
        if (sv.p.nargs == 4)
            check_plain(buf_head(&sv.cmd) + sv.p.args[3].off, sv.p.args[3].len, master_plain,
                        sizeof master_plain - 1);
    }
    CHECK_INT(bx_feed(&b, "F1 OK\r\nF2 OK [CAPABILITY IMAP4rev1] hi\r\n"), BACKEND_OK);
    buf_free(&sv.cmd);
    bx_free(&b);
}

static void test_imap_master_login_without_sasl_ir_waits_for_continuation(void)
{
    struct bx b;
    bx_master(&b, "shared.box", "fg-master", "M@ster pass!");
    b.par.forward = false;
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, GREET_NO_IR), BACKEND_AGAIN);
    CHECK_SENT(&b, "F2 AUTHENTICATE PLAIN\r\n");
    CHECK_INT(bx_feed(&b, "+ \r\n"), BACKEND_AGAIN);
    size_t n = buf_avail(&b.out);
    CHECKF(n > 2 && memcmp(buf_head(&b.out) + n - 2, "\r\n", 2) == 0 &&
                   !memchr(buf_head(&b.out), '\n', n - 1),
           "response \"%.*s\" is not one line", SENT(&b));
    if (n > 2)
        check_plain(buf_head(&b.out), n - 2, master_plain, sizeof master_plain - 1);
    CHECK_INT(bx_feed(&b, "F2 OK [CAPABILITY IMAP4rev1] hi\r\n"), BACKEND_OK);
    bx_free(&b);
}

/* ---- IMAP: byte at a time and the protocol log ------------------------------ */

/* Feeds s one byte at a time; every byte but the last must give AGAIN. */
static enum backend_login_result feed_bytewise(struct bx *b, const char *s, int *early)
{
    size_t n = strlen(s);
    enum backend_login_result res = BACKEND_AGAIN;
    bx_clear(b);
    for (size_t i = 0; i < n; i++) {
        buf_append(&b->bl.in, s + i, 1);
        res = b->bl.ops->input(&b->bl);
        *early += res != BACKEND_AGAIN && i + 1 < n;
    }
    return res;
}

static void test_imap_backend_bytes_one_at_a_time(void)
{
    struct bx b;
    int early = 0;
    bx_params(&b, "alice", "secret");
    b.par.forward = false;
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(feed_bytewise(&b, GREET_FULL, &early), BACKEND_AGAIN);
    CHECK_SENT(&b, "F2 LOGIN alice secret\r\n");
    CHECK_INT(feed_bytewise(&b, "* OK [ALERT] hi\r\nF2 OK [CAPABILITY IMAP4rev1 Z] in\r\n", &early),
              BACKEND_OK);
    CHECK_INT(early, 0);
    if (b.bl.caps)
        CHECK_MEM(b.bl.caps, b.bl.caps_len, "IMAP4rev1 Z");
    CHECK(b.bl.caps != NULL);
    bx_free(&b);
}

static void test_imap_plog_never_shows_password(void)
{
    static const char *const passwords[] = {SECRET, "Sup3r (ecret)", "S\xc3\xbcp3r$ecret"};
    for (size_t i = 0; i < FG_ARRAY_SIZE(passwords); i++) {
        for (int lit_plus = 0; lit_plus < 2; lit_plus++) {
            struct bx b;
            bx_params(&b, "alice", passwords[i]);
            bx_start(&b, &imap_backend_ops);
            bx_feed(&b, lit_plus ? GREET_FULL : GREET_NO_LIT);
            if (sent_has(&b, "}\r\n") && !sent_has(&b, "+}\r\n"))
                CHECK_INT(bx_feed(&b, "+ go\r\n"), BACKEND_AGAIN);
            CHECK_INT(bx_feed(&b, "F1 OK\r\nF2 NO [AUTHENTICATIONFAILED] no\r\n"), BACKEND_NO);
            CHECKF(!log_has(&b, passwords[i]), "log shows \"%s\":\n%s", passwords[i], b.cap.text);
            CHECKF(log_has(&b, "F1 ID") && b.cap.lines >= 4, "log too short:\n%s", b.cap.text);
            bx_free(&b);
        }
    }
}

static void test_imap_plog_never_shows_master_password_or_plain(void)
{
    struct bx b;
    bx_master(&b, "shared.box", "fg-master", "M@ster pass!");
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, GREET_NO_IR), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "+ \r\n"), BACKEND_AGAIN);
    size_t n = buf_avail(&b.out);
    char b64[256];
    snprintf(b64, sizeof b64, "%.*s", n > 2 ? (int)(n - 2) : 0, buf_head(&b.out));
    CHECK_INT(bx_feed(&b, "F1 OK\r\nF2 OK [CAPABILITY IMAP4rev1] hi\r\n"), BACKEND_OK);
    CHECK(strlen(b64) > 8);
    CHECKF(!log_has(&b, b64) && !log_has(&b, "M@ster pass!"), "log shows a secret:\n%s",
           b.cap.text);
    CHECK(log_has(&b, "F1 ID"));
    bx_free(&b);
}

/* ---- POP3 ----------------------------------------------------------------------- */

static void test_pop3_xclient_then_user_pass(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    bx_start(&b, &pop3_backend_ops);
    CHECK_INT(bx_feed(&b, "+OK Dovecot ready.\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, XCLIENT_LINE);
    CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "USER alice\r\n");
    CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "PASS secret\r\n");
    CHECK_INT(bx_feed(&b, "+OK Logged in.\r\nrest"), BACKEND_OK);
    CHECK_SENT(&b, "");
    CHECK_MEM(buf_head(&b.bl.in), buf_avail(&b.bl.in), "rest");
    bx_free(&b);
}

static void test_pop3_refused_xclient_still_logs_in(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    bx_start(&b, &pop3_backend_ops);
    CHECK_INT(bx_feed(&b, "+OK ready\r\n"), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "-ERR Unknown command\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "USER alice\r\n");
    CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "+OK in\r\n"), BACKEND_OK);
    bx_free(&b);
}

static void test_pop3_forward_off_skips_xclient(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    b.par.forward = false;
    bx_start(&b, &pop3_backend_ops);
    CHECK_INT(bx_feed(&b, "+OK ready\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "USER alice\r\n");
    bx_free(&b);
}

static void test_pop3_inner_spaces_go_as_pass(void)
{
    struct bx b;
    bx_params(&b, "alice", "pass word  x");
    b.par.forward = false;
    bx_start(&b, &pop3_backend_ops);
    CHECK_INT(bx_feed(&b, "+OK ready\r\n"), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "PASS pass word  x\r\n");
    bx_free(&b);
}

/* Credentials USER/PASS cannot carry go as AUTH PLAIN; the decoding must be exact. */
static void check_pop3_auth_plain(struct bx *b, const char *want, size_t wn)
{
    size_t n = buf_avail(&b->out);
    const char *p = buf_head(&b->out);
    CHECKF(n > 13 && memcmp(p, "AUTH PLAIN ", 11) == 0 && memcmp(p + n - 2, "\r\n", 2) == 0 &&
                   !memchr(p, '\n', n - 1),
           "sent \"%.*s\", expected one AUTH PLAIN line", (int)n, p);
    if (n > 13 && memcmp(p, "AUTH PLAIN ", 11) == 0)
        check_plain(p + 11, n - 13, want, wn);
}

static void test_pop3_unsafe_credentials_go_as_auth_plain(void)
{
    static const struct {
        const char *user, *pass;
    } cases[] = {
            {"alice", "pa\r\nss"}, {"alice", "pa\nss"},  {"alice", "pa\rss"},
            {"al ice", "secret"},  {"alice", " secret"}, {"alice", "secret "},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct bx b;
        char want[64];
        size_t wn =
                (size_t)snprintf(want, sizeof want, "%c%s%c%s", 0, cases[i].user, 0, cases[i].pass);
        bx_params(&b, cases[i].user, cases[i].pass);
        b.par.forward = false;
        bx_start(&b, &pop3_backend_ops);
        CHECK_INT(bx_feed(&b, "+OK ready\r\n"), BACKEND_AGAIN);
        check_pop3_auth_plain(&b, want, wn);
        CHECK_SENT_LACKS(&b, "USER");
        CHECK_INT(bx_feed(&b, "+OK in\r\n"), BACKEND_OK);
        bx_free(&b);
    }
}

static void test_pop3_master_login_uses_auth_plain(void)
{
    static const char want[] = "mailbox\0master\0pass";
    struct bx b;
    bx_master(&b, "mailbox", "master", "pass");
    bx_start(&b, &pop3_backend_ops);
    CHECK_INT(bx_feed(&b, "+OK ready\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, XCLIENT_LINE);
    CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
    check_pop3_auth_plain(&b, want, sizeof want - 1);
    CHECK_INT(bx_feed(&b, "+OK in\r\n"), BACKEND_OK);
    bx_free(&b);
}

static void test_pop3_err_codes_map_to_login_status(void)
{
    static const struct {
        const char *reply;
        enum login_status st;
    } cases[] = {
            {"-ERR [AUTH] Authentication failed.\r\n", LOGIN_FAILED},
            {"-ERR [IN-USE] Mailbox locked.\r\n", LOGIN_IN_USE},
            {"-ERR [SYS/TEMP] Try later.\r\n", LOGIN_UNAVAILABLE},
            {"-ERR Login failed.\r\n", LOGIN_FAILED},
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(cases); i++) {
        struct bx b;
        bx_params(&b, "alice", SECRET);
        b.par.forward = false;
        bx_start(&b, &pop3_backend_ops);
        CHECK_INT(bx_feed(&b, "+OK ready\r\n"), BACKEND_AGAIN);
        CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
        CHECK_INT(bx_feed(&b, cases[i].reply), BACKEND_NO);
        CHECKF(b.bl.status == cases[i].st, "\"%s\": status %d, expected %d", cases[i].reply,
               b.bl.status, cases[i].st);
        CHECKF(b.bl.reason[0] != 0 && !th_contains(b.bl.reason, strlen(b.bl.reason), SECRET),
               "\"%s\": reason \"%s\"", cases[i].reply, b.bl.reason);
        bx_free(&b);
    }
}

static void test_pop3_err_greeting_fails_before_sending(void)
{
    struct bx b;
    bx_params(&b, "alice", SECRET);
    bx_start(&b, &pop3_backend_ops);
    CHECK_INT(bx_feed(&b, "-ERR [SYS/TEMP] overloaded\r\n"), BACKEND_FAIL);
    CHECK_SENT(&b, "");
    CHECK(b.bl.reason[0] != 0);
    bx_free(&b);
}

static void test_pop3_backend_bytes_one_at_a_time(void)
{
    struct bx b;
    int early = 0;
    bx_params(&b, "alice", "secret");
    bx_start(&b, &pop3_backend_ops);
    CHECK_INT(feed_bytewise(&b, "+OK Dovecot ready.\r\n", &early), BACKEND_AGAIN);
    CHECK_SENT(&b, XCLIENT_LINE);
    CHECK_INT(feed_bytewise(&b, "+OK\r\n", &early), BACKEND_AGAIN);
    CHECK_SENT(&b, "USER alice\r\n");
    CHECK_INT(feed_bytewise(&b, "+OK\n", &early), BACKEND_AGAIN); /* a bare LF too */
    CHECK_SENT(&b, "PASS secret\r\n");
    CHECK_INT(feed_bytewise(&b, "+OK Logged in.\r\n", &early), BACKEND_OK);
    CHECK_INT(early, 0);
    bx_free(&b);
}

static void test_pop3_plog_never_shows_pass_or_plain(void)
{
    static const char *const passwords[] = {SECRET, " " SECRET};
    for (size_t i = 0; i < FG_ARRAY_SIZE(passwords); i++) {
        struct bx b;
        char plain[512] = "";
        bx_params(&b, "alice", passwords[i]);
        bx_start(&b, &pop3_backend_ops);
        CHECK_INT(bx_feed(&b, "+OK ready\r\n"), BACKEND_AGAIN);
        CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
        if (sent_has(&b, "AUTH PLAIN ") && buf_avail(&b.out) > 13)
            snprintf(plain, sizeof plain, "%.*s", (int)buf_avail(&b.out) - 13,
                     buf_head(&b.out) + 11);
        else
            CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
        CHECK_INT(bx_feed(&b, "-ERR [AUTH] no\r\n"), BACKEND_NO);
        CHECK(i == 0 || plain[0] != 0); /* the second password goes as AUTH PLAIN */
        CHECKF(!log_has(&b, SECRET), "log shows the password:\n%s", b.cap.text);
        CHECKF(plain[0] == 0 || !log_has(&b, plain), "log shows the PLAIN response:\n%s",
               b.cap.text);
        CHECKF(log_has(&b, "XCLIENT") && b.cap.lines >= 4, "log too short:\n%s", b.cap.text);
        bx_free(&b);
    }
}

static void test_imap_failed_capability_after_login_drops_stale_caps(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, GREET_FULL), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "F1 OK\r\nF2 OK Logged in\r\n"), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "F3 BAD no\r\n"), BACKEND_OK);
    /* The pre-login list must never be passed on as the post-login one. */
    CHECK(b.bl.caps == NULL && b.bl.caps_len == 0);
    bx_free(&b);
}

static void test_pop3_longest_credentials_are_sent_whole(void)
{
    char user[CRED_NAME_MAX + 1], pass[CRED_PASS_MAX + 1];
    struct bx b;
    memset(user, 'u', CRED_NAME_MAX);
    user[CRED_NAME_MAX] = 0;
    memset(pass, 'p', CRED_PASS_MAX);
    pass[CRED_PASS_MAX] = 0;
    pass[0] = ' '; /* forces AUTH PLAIN, the longest line the dialogue sends */
    bx_params(&b, user, pass);
    b.par.forward = false;
    bx_start(&b, &pop3_backend_ops);
    CHECK_INT(bx_feed(&b, "+OK ready\r\n"), BACKEND_AGAIN);
    CHECK(buf_avail(&b.out) > 1700);
    CHECK(memcmp(buf_head(&b.out), "AUTH PLAIN ", 11) == 0);
    uint8_t raw[2048];
    long n = base64_decode(buf_head(&b.out) + 11, buf_avail(&b.out) - 13, raw);
    CHECK_INT(n, 2 + CRED_NAME_MAX + CRED_PASS_MAX);
    CHECK(n > 0 && memcmp(raw + 1 + CRED_NAME_MAX + 1, pass, CRED_PASS_MAX) == 0);
    bx_free(&b);
}

static void test_pop3_status_words_must_stand_alone(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    bx_start(&b, &pop3_backend_ops);
    /* "+OKAY" is not "+OK": a greeting like that is a failure. */
    CHECK_INT(bx_feed(&b, "+OKAY hi\r\n"), BACKEND_FAIL);
    bx_free(&b);
    bx_params(&b, "alice", "secret");
    b.par.forward = false;
    bx_start(&b, &pop3_backend_ops);
    CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "-ERRor\r\n"), BACKEND_FAIL);
    bx_free(&b);
}

/* ---- STARTTLS / STLS to the backend ------------------------------------------- */

#define CHECK_IN_EMPTY(b)                                                                          \
    CHECKF(buf_avail(&(b)->bl.in) == 0, "bl.in still holds \"%.*s\"", (int)buf_avail(&(b)->bl.in), \
           buf_head(&(b)->bl.in))

/* IMAP up to the handshake: the greeting, S1 STARTTLS, its OK. */
static void imap_to_starttls(struct bx *b, const char *greeting)
{
    b->par.starttls = true;
    bx_start(b, &imap_backend_ops);
    CHECK_INT(bx_feed(b, greeting), BACKEND_AGAIN);
    CHECK_SENT(b, "S1 STARTTLS\r\n"); /* nothing else, least of all the credentials */
    CHECK_INT(bx_feed(b, "S1 OK Begin TLS negotiation now.\r\n"), BACKEND_STARTTLS);
    CHECK_SENT(b, "");
    CHECK_IN_EMPTY(b);
}

/* The core's part after the handshake. */
static void bx_tls_done(struct bx *b)
{
    bx_clear(b);
    b->bl.ops->tls_done(&b->bl);
}

static void test_imap_starttls_then_login(void)
{
    static const char *const greetings[] = {GREET_FULL, "* OK IMAP4 ready.\r\n"};
    for (size_t i = 0; i < FG_ARRAY_SIZE(greetings); i++) {
        struct bx b;
        bx_params(&b, "alice", "secret");
        imap_to_starttls(&b, greetings[i]);
        bx_tls_done(&b);
        CHECK_SENT(&b, "F0 CAPABILITY\r\n");
        CHECK(b.bl.caps == NULL);
        CHECK_INT(bx_feed(&b, "* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN ID\r\n"),
                  BACKEND_AGAIN);
        CHECK_SENT(&b, "");
        CHECK_INT(bx_feed(&b, "F0 OK done\r\n"), BACKEND_AGAIN);
        CHECK_SENT_HAS(&b, "F1 ID (\"x-originating-ip\" \"" CLIENT_IP "\"");
        CHECK_SENT_HAS(&b, "\r\nF2 LOGIN alice secret\r\n");
        CHECK_INT(bx_feed(&b, "F1 OK\r\nF2 OK [CAPABILITY IMAP4rev1 IDLE] in\r\nrest"), BACKEND_OK);
        CHECK(b.bl.caps != NULL);
        if (b.bl.caps)
            CHECK_MEM(b.bl.caps, b.bl.caps_len, "IMAP4rev1 IDLE");
        CHECK_MEM(buf_head(&b.bl.in), buf_avail(&b.bl.in), "rest");
        CHECKF(log_has(&b, "B> S1 STARTTLS") && log_has(&b, "B> F0 CAPABILITY"),
               "log lacks the STARTTLS dialogue:\n%s", b.cap.text);
        bx_free(&b);
    }
}

/* Bytes that followed S1 OK came in clear text: dropped, never read as replies. */
static void test_imap_starttls_drops_bytes_after_ok(void)
{
    static const char *const injected[] = {
            "F2 OK [CAPABILITY IMAP4rev1] fake\r\n",
            "* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID\r\nF0 OK\r\n",
            "F0 OK\r\nF1 OK\r\nF2 OK [CAPABILITY IMAP4rev1] fake\r\n",
            "* BYE gone\r\n",
            "F2 OK partial",
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(injected); i++) {
        struct bx b;
        char in[256];
        bx_params(&b, "alice", "p\xc3\xa4ss");
        b.par.starttls = true;
        bx_start(&b, &imap_backend_ops);
        CHECK_INT(bx_feed(&b, GREET_FULL), BACKEND_AGAIN);
        snprintf(in, sizeof in, "S1 OK Begin TLS\r\n%s", injected[i]);
        enum backend_login_result res = bx_feed(&b, in);
        CHECKF(res == BACKEND_STARTTLS, "\"%s\": result %d, expected BACKEND_STARTTLS", in, res);
        CHECK_IN_EMPTY(&b);
        CHECK_SENT(&b, "");
        CHECK(b.bl.caps == NULL);
        bx_tls_done(&b);
        CHECK_SENT(&b, "F0 CAPABILITY\r\n");
        /* Inside TLS the backend offers nothing special: the injected LITERAL+
         * and ID must not be used. */
        CHECK_INT(bx_feed(&b, "* CAPABILITY IMAP4rev1\r\nF0 OK\r\n"), BACKEND_AGAIN);
        CHECK_SENT(&b, "F2 LOGIN alice {5}\r\n");
        CHECK_INT(bx_feed(&b, "+ go\r\n"), BACKEND_AGAIN);
        CHECK_SENT(&b, "p\xc3\xa4ss\r\n");
        CHECK_INT(bx_feed(&b, "F2 OK [CAPABILITY IMAP4rev1 X] in\r\n"), BACKEND_OK);
        if (b.bl.caps)
            CHECK_MEM(b.bl.caps, b.bl.caps_len, "IMAP4rev1 X");
        bx_free(&b);
    }
}

/* The greeting's (or any pre-TLS) capabilities are not used after TLS. */
static void test_imap_starttls_ignores_pre_tls_capabilities(void)
{
    struct bx b;
    /* pass-through: no LITERAL+ after TLS, so a synchronising literal; no ID */
    bx_params(&b, "alice", "p\xc3\xa4ss");
    b.par.starttls = true;
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, GREET_FULL), BACKEND_AGAIN);
    CHECK_SENT(&b, "S1 STARTTLS\r\n");
    /* capabilities sent while STARTTLS is pending are not trusted either */
    CHECK_INT(bx_feed(&b, "* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR ID AUTH=PLAIN\r\n"),
              BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "S1 OK go\r\n"), BACKEND_STARTTLS);
    bx_tls_done(&b);
    CHECK(!b.bl.lit_plus && !b.bl.sasl_ir && !b.bl.has_id);
    CHECK_INT(bx_feed(&b, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nF0 OK\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "F2 LOGIN alice {5}\r\n");
    CHECK_SENT_LACKS(&b, "+}");
    CHECK_SENT_LACKS(&b, "F1 ID");
    bx_free(&b);

    /* a post-TLS CAPABILITY with no list at all: nothing is assumed */
    bx_params(&b, "alice", "p\xc3\xa4ss");
    imap_to_starttls(&b, GREET_FULL);
    bx_tls_done(&b);
    CHECK_INT(bx_feed(&b, "F0 OK no list\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "F2 LOGIN alice {5}\r\n");
    bx_free(&b);

    /* master user: no SASL-IR after TLS, so AUTHENTICATE waits for "+" */
    bx_master(&b, "shared.box", "fg-master", "M@ster pass!");
    imap_to_starttls(&b, GREET_FULL);
    bx_tls_done(&b);
    CHECK_INT(bx_feed(&b, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nF0 OK\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "F2 AUTHENTICATE PLAIN\r\n");
    CHECK_INT(bx_feed(&b, "+ \r\n"), BACKEND_AGAIN);
    size_t n = buf_avail(&b.out);
    if (n > 2)
        check_plain(buf_head(&b.out), n - 2, master_plain, sizeof master_plain - 1);
    CHECK_INT(bx_feed(&b, "F2 OK [CAPABILITY IMAP4rev1] hi\r\n"), BACKEND_OK);
    bx_free(&b);
}

static void test_imap_starttls_refused_fails(void)
{
    static const char *const replies[] = {
            "S1 NO STARTTLS is not available\r\n",
            "S1 BAD Unknown command\r\n",
            "* BYE Shutting down\r\n",
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(replies); i++) {
        struct bx b;
        bx_params(&b, "alice", SECRET);
        b.par.starttls = true;
        bx_start(&b, &imap_backend_ops);
        CHECK_INT(bx_feed(&b, GREET_FULL), BACKEND_AGAIN);
        enum backend_login_result res = bx_feed(&b, replies[i]);
        CHECKF(res == BACKEND_FAIL, "\"%s\": result %d, expected BACKEND_FAIL", replies[i], res);
        CHECK_SENT(&b, ""); /* no login in clear text */
        CHECKF(i == 2 || th_contains(b.bl.reason, strlen(b.bl.reason), "STARTTLS"),
               "\"%s\": reason \"%s\" should mention STARTTLS", replies[i], b.bl.reason);
        CHECK(b.bl.reason[0] != 0);
        CHECKF(!log_has(&b, SECRET), "log shows the password:\n%s", b.cap.text);
        bx_free(&b);
    }
}

/* While S1 is pending, other lines are not its answer: an F2 OK cannot log in. */
static void test_imap_starttls_waits_for_its_own_tag(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    b.par.starttls = true;
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, GREET_FULL), BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "* OK still here\r\nF2 OK [CAPABILITY IMAP4rev1] fake\r\n"),
              BACKEND_AGAIN);
    CHECK_INT(bx_feed(&b, "F0 OK\r\nS2 OK\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "");
    CHECK(b.bl.caps == NULL);
    CHECK_INT(bx_feed(&b, "S1 OK go\r\n"), BACKEND_STARTTLS);
    bx_free(&b);
}

static void test_imap_starttls_bytes_one_at_a_time(void)
{
    struct bx b;
    int early = 0;
    bx_params(&b, "alice", "secret");
    b.par.starttls = true;
    b.par.forward = false;
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(feed_bytewise(&b, GREET_FULL, &early), BACKEND_AGAIN);
    CHECK_SENT(&b, "S1 STARTTLS\r\n");
    CHECK_INT(feed_bytewise(&b, "S1 OK Begin TLS now\r\n", &early), BACKEND_STARTTLS);
    CHECK_IN_EMPTY(&b);
    bx_tls_done(&b);
    CHECK_SENT(&b, "F0 CAPABILITY\r\n");
    CHECK_INT(feed_bytewise(&b, "* CAPABILITY IMAP4rev1 LITERAL+\r\nF0 OK\r\n", &early),
              BACKEND_AGAIN);
    CHECK_SENT(&b, "F2 LOGIN alice secret\r\n");
    CHECK_INT(feed_bytewise(&b, "F2 OK [CAPABILITY IMAP4rev1 Z] in\r\n", &early), BACKEND_OK);
    CHECK_INT(early, 0);
    bx_free(&b);
}

/* Without starttls nothing changes: no S1 STARTTLS is sent. */
static void test_imap_no_starttls_unless_asked(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    b.par.forward = false;
    bx_start(&b, &imap_backend_ops);
    CHECK_INT(bx_feed(&b, "* OK [CAPABILITY IMAP4rev1 STARTTLS LITERAL+] hi\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "F2 LOGIN alice secret\r\n");
    bx_free(&b);
}

/* POP3 up to the handshake: the greeting, STLS, its +OK. */
static void pop3_to_stls(struct bx *b)
{
    b->par.starttls = true;
    bx_start(b, &pop3_backend_ops);
    CHECK_INT(bx_feed(b, "+OK Dovecot ready.\r\n"), BACKEND_AGAIN);
    CHECK_SENT(b, "STLS\r\n");
    CHECK_INT(bx_feed(b, "+OK Begin TLS negotiation\r\n"), BACKEND_STARTTLS);
    CHECK_SENT(b, "");
    CHECK_IN_EMPTY(b);
}

static void test_pop3_stls_then_xclient_and_login(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    pop3_to_stls(&b);
    bx_tls_done(&b);
    CHECK_SENT(&b, XCLIENT_LINE);
    CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "USER alice\r\n");
    CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
    CHECK_SENT(&b, "PASS secret\r\n");
    CHECK_INT(bx_feed(&b, "+OK Logged in.\r\nrest"), BACKEND_OK);
    CHECK_MEM(buf_head(&b.bl.in), buf_avail(&b.bl.in), "rest");
    CHECKF(log_has(&b, "B> STLS") && !log_has(&b, "secret"), "log:\n%s", b.cap.text);
    bx_free(&b);
}

static void test_pop3_stls_then_login_without_forwarding(void)
{
    struct bx b;
    bx_params(&b, "alice", "secret");
    b.par.forward = false;
    pop3_to_stls(&b);
    bx_tls_done(&b);
    CHECK_SENT(&b, "USER alice\r\n");
    bx_free(&b);

    static const char want[] = "mailbox\0master\0pass";
    bx_master(&b, "mailbox", "master", "pass");
    b.par.forward = false;
    pop3_to_stls(&b);
    bx_tls_done(&b);
    check_pop3_auth_plain(&b, want, sizeof want - 1);
    CHECK_INT(bx_feed(&b, "+OK in\r\n"), BACKEND_OK);
    bx_free(&b);
}

static void test_pop3_stls_drops_bytes_after_ok(void)
{
    static const char *const injected[] = {
            "+OK Logged in.\r\n",
            "+OK\r\n+OK\r\n+OK\r\n",
            "-ERR [IN-USE] fake\r\n",
            "+OK partial",
    };
    for (size_t i = 0; i < FG_ARRAY_SIZE(injected); i++) {
        struct bx b;
        char in[128];
        bx_params(&b, "alice", "secret");
        b.par.starttls = true;
        bx_start(&b, &pop3_backend_ops);
        CHECK_INT(bx_feed(&b, "+OK ready\r\n"), BACKEND_AGAIN);
        snprintf(in, sizeof in, "+OK Begin TLS\r\n%s", injected[i]);
        enum backend_login_result res = bx_feed(&b, in);
        CHECKF(res == BACKEND_STARTTLS, "\"%s\": result %d, expected BACKEND_STARTTLS", in, res);
        CHECK_IN_EMPTY(&b);
        CHECK_SENT(&b, "");
        bx_tls_done(&b);
        CHECK_SENT(&b, XCLIENT_LINE);
        CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
        CHECK_SENT(&b, "USER alice\r\n"); /* the XCLIENT answer, not an injected one */
        CHECK_INT(bx_feed(&b, "+OK\r\n"), BACKEND_AGAIN);
        CHECK_SENT(&b, "PASS secret\r\n");
        CHECK_INT(bx_feed(&b, "+OK in\r\n"), BACKEND_OK);
        bx_free(&b);
    }
}

static void test_pop3_stls_refused_fails(void)
{
    static const char *const replies[] = {"-ERR Command not permitted\r\n", "-ERR\r\n", "+OKAY\r\n",
                                          "* what\r\n"};
    for (size_t i = 0; i < FG_ARRAY_SIZE(replies); i++) {
        struct bx b;
        bx_params(&b, "alice", SECRET);
        b.par.starttls = true;
        bx_start(&b, &pop3_backend_ops);
        CHECK_INT(bx_feed(&b, "+OK ready\r\n"), BACKEND_AGAIN);
        enum backend_login_result res = bx_feed(&b, replies[i]);
        CHECKF(res == BACKEND_FAIL, "\"%s\": result %d, expected BACKEND_FAIL", replies[i], res);
        CHECK_SENT(&b, ""); /* no XCLIENT, no USER in clear text */
        CHECKF(th_contains(b.bl.reason, strlen(b.bl.reason), "STLS"),
               "\"%s\": reason \"%s\" should mention STLS", replies[i], b.bl.reason);
        CHECKF(!log_has(&b, SECRET), "log shows the password:\n%s", b.cap.text);
        bx_free(&b);
    }
}

static void test_pop3_stls_bytes_one_at_a_time(void)
{
    struct bx b;
    int early = 0;
    bx_params(&b, "alice", "secret");
    b.par.starttls = true;
    bx_start(&b, &pop3_backend_ops);
    CHECK_INT(feed_bytewise(&b, "+OK ready\r\n", &early), BACKEND_AGAIN);
    CHECK_SENT(&b, "STLS\r\n");
    CHECK_INT(feed_bytewise(&b, "+OK go\n", &early), BACKEND_STARTTLS);
    CHECK_IN_EMPTY(&b);
    bx_tls_done(&b);
    CHECK_SENT(&b, XCLIENT_LINE);
    CHECK_INT(feed_bytewise(&b, "+OK\r\n", &early), BACKEND_AGAIN);
    CHECK_INT(feed_bytewise(&b, "+OK\r\n", &early), BACKEND_AGAIN);
    CHECK_INT(feed_bytewise(&b, "+OK in\r\n", &early), BACKEND_OK);
    CHECK_INT(early, 0);
    bx_free(&b);
}

int main(void)
{
    test_imap_sends_forwarding_id_and_login_in_one_go();
    test_imap_ok_with_caps_is_ok_and_keeps_following_bytes();
    test_imap_greeting_without_caps_asks_capability_first();
    test_imap_bare_untagged_line_while_asking_capability();
    test_imap_ok_without_caps_asks_capability_after_login();
    test_imap_forward_off_sends_no_id();
    test_imap_backend_without_id_cap_gets_no_id();
    test_imap_refused_id_does_not_stop_login();
    test_imap_credentials_arrive_byte_identical_with_literal_plus();
    test_imap_credentials_arrive_byte_identical_with_sync_literals();
    test_imap_sync_literal_waits_for_continuation();
    test_imap_ok_before_literal_sent_fails();
    test_imap_no_codes_map_to_login_status();
    test_imap_preauth_or_bye_greeting_fails_before_sending();
    test_imap_master_login_uses_sasl_ir();
    test_imap_master_login_without_sasl_ir_waits_for_continuation();
    test_imap_backend_bytes_one_at_a_time();
    test_imap_plog_never_shows_password();
    test_imap_plog_never_shows_master_password_or_plain();
    test_pop3_xclient_then_user_pass();
    test_pop3_refused_xclient_still_logs_in();
    test_pop3_forward_off_skips_xclient();
    test_pop3_inner_spaces_go_as_pass();
    test_pop3_unsafe_credentials_go_as_auth_plain();
    test_pop3_master_login_uses_auth_plain();
    test_pop3_err_codes_map_to_login_status();
    test_pop3_err_greeting_fails_before_sending();
    test_pop3_backend_bytes_one_at_a_time();
    test_pop3_plog_never_shows_pass_or_plain();
    test_imap_failed_capability_after_login_drops_stale_caps();
    test_pop3_longest_credentials_are_sent_whole();
    test_pop3_status_words_must_stand_alone();
    test_imap_starttls_then_login();
    test_imap_starttls_drops_bytes_after_ok();
    test_imap_starttls_ignores_pre_tls_capabilities();
    test_imap_starttls_refused_fails();
    test_imap_starttls_waits_for_its_own_tag();
    test_imap_starttls_bytes_one_at_a_time();
    test_imap_no_starttls_unless_asked();
    test_pop3_stls_then_xclient_and_login();
    test_pop3_stls_then_login_without_forwarding();
    test_pop3_stls_drops_bytes_after_ok();
    test_pop3_stls_refused_fails();
    test_pop3_stls_bytes_one_at_a_time();
    return th_finish("test_backend");
}
