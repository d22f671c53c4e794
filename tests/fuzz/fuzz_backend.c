/*
 * libFuzzer target: the backend login dialogues (proto/imap_backend.c,
 * pop3_backend.c), fed arbitrary server bytes.
 *
 * Input: a flags byte (POP3 or IMAP, pass-through or master user, address
 * forwarding, STARTTLS/STLS), the lengths and bytes of the user name and the
 * password, then the server's bytes, fed in random-sized pieces. While the
 * dialogue reads its input buffer, the consumed bytes and the spare room are
 * fenced off (ASan).
 *
 * Checked: nothing after a STARTTLS answer survives into TLS; no password
 * reaches the protocol log; and what was sent to the server, read back by
 * forestgate's own IMAP or POP3 command parser as a server would read it,
 * parses, and carries the credentials byte for byte (LOGIN astrings, USER and
 * PASS, or a SASL PLAIN message with the right three fields).
 */
#include "../../base/base64.h"
#include "../../proto/backend.h"
#include "../../proto/sasl_plain.h"
#include "fuzz_util.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct creds {
    struct backend_login_params par;
    char user[64], pass[72];
};

/* Lines sent to the backend must never show a password in the log. */
static void plog(void *ctx, const char *dir, const char *line, size_t n)
{
    const struct creds *c = ctx;
    const struct backend_login_params *par = &c->par;
    if (strcmp(dir, "B>") != 0)
        return;
    if (par->mode == BACKEND_LOGIN_PASSTHROUGH &&
        !memmem(par->user, par->user_len, par->pass, par->pass_len))
        FZ_CHECK(!memmem(line, n, par->pass, par->pass_len));
    if (!memmem(par->user, par->user_len, par->master_pass, par->master_pass_len))
        FZ_CHECK(!memmem(line, n, par->master_pass, par->master_pass_len));
}

static bool slice_is(const char *buf, const struct imap_arg *a, const char *s, size_t n)
{
    return a->len == n && memcmp(buf + a->off, s, n) == 0;
}

/* A SASL PLAIN message in base64 must hold exactly these three fields. */
static void check_plain(const char *b64, size_t n, const struct backend_login_params *par)
{
    bool master = par->mode == BACKEND_LOGIN_MASTER;
    const char *z = master ? par->user : "", *u = master ? par->master_user : par->user;
    const char *p = master ? par->master_pass : par->pass;
    size_t zn = master ? par->user_len : 0, un = master ? par->master_user_len : par->user_len;
    size_t pn = master ? par->master_pass_len : par->pass_len;
    uint8_t *raw = fz_alloc(base64_decoded_max(n));
    long rn = base64_decode(b64, n, raw);
    struct cred c = {0};
    FZ_CHECK(rn == (long)(zn + un + pn + 2));
    /* An empty mailbox name (no login attribute, no alias) makes an empty
     * authcid, which RFC 4616 forbids: the backend refuses it, as it should. */
    if (un == 0) {
        free(raw);
        return;
    }
    FZ_CHECK(sasl_plain_decode(raw, (size_t)rn, &c) == FG_OK);
    FZ_CHECK(c.authzid_len == zn && memcmp(c.authzid, z, zn) == 0);
    FZ_CHECK(c.user_len == un && memcmp(c.user, u, un) == 0);
    FZ_CHECK(c.pass_len == pn && memcmp(c.pass, p, pn) == 0);
    free(raw);
}

/* One command the proxy sent, as the IMAP server reads it. */
static void check_imap_command(struct imap_parser *p, const char *cmd,
                               const struct backend_login_params *par)
{
    const struct imap_arg *a = p->args;
    if (p->line_mode) { /* the AUTHENTICATE response */
        check_plain(cmd + a[0].off, a[0].len, par);
        return;
    }
    if (!slice_is(cmd, &a[0], "F2", 2))
        return;
    if (slice_is(cmd, &a[1], "LOGIN", 5)) {
        FZ_CHECK(par->mode == BACKEND_LOGIN_PASSTHROUGH && p->nargs == 4);
        FZ_CHECK(slice_is(cmd, &a[2], par->user, par->user_len));
        FZ_CHECK(slice_is(cmd, &a[3], par->pass, par->pass_len));
    } else {
        FZ_CHECK(slice_is(cmd, &a[1], "AUTHENTICATE", 12) && slice_is(cmd, &a[2], "PLAIN", 5));
        FZ_CHECK(par->mode == BACKEND_LOGIN_MASTER && (p->nargs == 3 || p->nargs == 4));
        if (p->nargs == 4)
            check_plain(cmd + a[3].off, a[3].len, par);
    }
}

/* Everything sent to the IMAP backend must parse; the login must carry the credentials. */
static void check_sent_imap(const struct buf *out, const struct backend_login_params *par)
{
    if (buf_avail(out) == 0)
        return;
    char *sent = fz_dup(buf_head(out), buf_avail(out));
    size_t off = 0, n = buf_avail(out);
    struct imap_parser p;

    imap_parser_init(&p, UINT32_MAX);
    while (off < n) {
        int rc = imap_parse_command(&p, sent + off, n - off);
        if (rc == IMAP_PARSE_AGAIN)
            break; /* the rest waits for a "+" */
        if (rc == IMAP_PARSE_CONTINUE)
            continue;
        FZ_CHECK(rc == IMAP_PARSE_DONE);
        check_imap_command(&p, sent + off, par);
        bool sasl = !p.line_mode && p.nargs == 3 &&
                    slice_is(sent + off, &p.args[1], "AUTHENTICATE", 12);
        off += p.pos;
        if (sasl)
            imap_parser_expect_line(&p);
        else
            imap_parser_reset(&p);
    }
    free(sent);
}

/* The POP3 lines sent: USER, PASS or AUTH PLAIN carry the credentials. */
static void check_sent_pop3(const struct buf *out, const struct backend_login_params *par)
{
    if (buf_avail(out) == 0)
        return;
    char *sent = fz_dup(buf_head(out), buf_avail(out));
    size_t off = 0, n = buf_avail(out);
    struct pop3_parser p;
    struct pop3_cmd c;

    pop3_parser_init(&p, UINT32_MAX);
    while (off < n && pop3_parse_line(&p, sent + off, n - off, &c) == POP3_PARSE_DONE) {
        const char *l = sent + off, *arg = l + c.arg_off;
        FZ_CHECK(c.line_len >= 2 && l[c.line_len - 2] == '\r' && !c.has_nul);
        if (fg_ieq(l, c.name_len, "USER"))
            FZ_CHECK(c.arg_len == par->user_len && memcmp(arg, par->user, c.arg_len) == 0);
        if (fg_ieq(l, c.name_len, "PASS"))
            FZ_CHECK(c.arg_len == par->pass_len && memcmp(arg, par->pass, c.arg_len) == 0);
        if (fg_ieq(l, c.name_len, "AUTH")) {
            FZ_CHECK(c.arg_len > 6 && memcmp(arg, "PLAIN ", 6) == 0);
            check_plain(arg + 6, c.arg_len - 6, par);
        }
        off += c.line_len;
    }
    free(sent);
}

/* The user name and password from the input; a NUL never gets this far. */
static void read_creds(struct fz *f, struct creds *c)
{
    const uint8_t *p;
    uint8_t flags = fz_u8(f);
    size_t un = fz_bytes(f, fz_u8(f) % sizeof c->user, &p);
    memcpy(c->user, p, un);
    memcpy(c->pass, "Pw!", 3); /* distinct from every fixed word sent */
    size_t pn = fz_bytes(f, fz_u8(f) % (sizeof c->pass - 3), &p) + 3;
    memcpy(c->pass + 3, p, pn - 3);
    for (size_t i = 0; i < un; i++)
        c->user[i] = c->user[i] ? c->user[i] : 1;
    for (size_t i = 0; i < pn; i++)
        c->pass[i] = c->pass[i] ? c->pass[i] : 1;
    c->par = (struct backend_login_params){.mode = (flags & 2) ? BACKEND_LOGIN_MASTER
                                                               : BACKEND_LOGIN_PASSTHROUGH,
                                           .user = c->user,
                                           .user_len = un,
                                           .pass = c->pass,
                                           .pass_len = pn,
                                           .master_user = "master",
                                           .master_user_len = 6,
                                           .master_pass = "Mp!secret",
                                           .master_pass_len = 9,
                                           .forward = (flags & 4) != 0,
                                           .starttls = (flags & 0x80) != 0,
                                           .client_ip = "192.0.2.1",
                                           .local_ip = "192.0.2.2",
                                           .session_id = "fuzz",
                                           .client_port = 1,
                                           .local_port = 2,
                                           .ttl = 5};
}

static void check_state(const struct backend_login *bl, enum backend_login_result r)
{
    FZ_CHECK(bl->nheld <= FG_ARRAY_SIZE(bl->held_parts));
    FZ_CHECK(memchr(bl->reason, 0, sizeof bl->reason));
    for (const char *c = bl->reason; *c; c++)
        FZ_CHECK((unsigned char)*c >= 0x20 && *c != 0x7f);
    FZ_CHECK(!bl->caps || bl->caps[bl->caps_len] == 0);
    FZ_CHECK(r != BACKEND_NO || bl->status <= LOGIN_IN_USE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static struct creds c;
    struct fz f = {data, size, 0};
    struct fz_rng rng;
    struct buf out = {0};
    struct backend_login bl;
    bool pop3 = data[0] & 1;

    read_creds(&f, &c);
    fz_rng_seed(&rng, data, size);
    backend_login_init(&bl, pop3 ? &pop3_backend_ops : &imap_backend_ops, &c.par, &out);
    bl.plog = plog;
    bl.plog_ctx = &c;
    for (size_t off = f.pos; off < size;) {
        size_t n = fz_piece(&rng, 32);
        n = FG_MIN(n, size - off);
        buf_append(&bl.in, data + off, n);
        off += n;
        FZ_BUF_FENCE(&bl.in);
        enum backend_login_result r = bl.ops->input(&bl);
        FZ_BUF_UNFENCE(&bl.in);
        check_state(&bl, r);
        if (r == BACKEND_STARTTLS) {
            /* What followed the answer must be gone before the handshake. */
            FZ_CHECK(buf_avail(&bl.in) == 0);
            bl.ops->tls_done(&bl);
            continue;
        }
        if (r != BACKEND_AGAIN)
            break;
    }
    if (pop3)
        check_sent_pop3(&out, &c.par);
    else
        check_sent_imap(&out, &c.par);
    backend_login_free(&bl);
    buf_free(&out);
    return 0;
}
