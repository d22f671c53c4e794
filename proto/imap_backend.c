/*
 * IMAP4 login dialogue with a backend.
 *
 *   S: * OK [CAPABILITY ...] greeting       (else we ask: F0 CAPABILITY)
 *   C: S1 STARTTLS                          (Tls = starttls; then TLS, F0 CAPABILITY)
 *   C: F1 ID ("x-originating-ip" ...)       (Dovecot's proxy forwarding)
 *   C: F2 LOGIN user pass  |  F2 AUTHENTICATE PLAIN base64
 *   S: F2 OK [CAPABILITY ...] ...           (else we ask: F3 CAPABILITY)
 *
 * ID and the login are pipelined: IMAP allows it and it saves a round trip.
 * Credentials are re-encoded as atom, quoted string or literal, so that every
 * byte a client can send arrives unchanged.
 */
#include "backend.h"
#include "sasl_plain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IMAP_BACKEND_MAX_LINE 65536

enum imap_backend_state {
    IB_GREETING,
    IB_STARTTLS, /* S1 STARTTLS sent */
    IB_CAPS,     /* F0 CAPABILITY sent */
    IB_LOGIN,    /* F1 ID and F2 login sent */
    IB_POSTCAPS, /* F3 CAPABILITY sent */
};

enum imap_resp_status { R_OTHER, R_OK, R_NO, R_BAD, R_BYE, R_PREAUTH };

struct imap_resp {
    bool untagged, cont;
    const char *tag;
    uint32_t tag_len;
    uint8_t status;
    const char *code; /* inside [ ] */
    uint32_t code_len;
    const char *data; /* after the tag */
    uint32_t data_len;
};

static bool imap_word(const char **p, const char *end, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(end - *p) < n || !fg_ieq(*p, n, word) || (*p + n < end && (*p)[n] != ' '))
        return false;
    *p += n;
    return true;
}

/* Splits a response line (without CRLF) into tag, status and response code. */
static void imap_resp_split(const char *line, uint32_t n, struct imap_resp *r)
{
    const char *end = line + n, *p;
    static const char *const names[] = {"OK", "NO", "BAD", "BYE", "PREAUTH"};

    memset(r, 0, sizeof *r);
    if (n > 0 && line[0] == '+') {
        r->cont = true;
        return;
    }
    p = memchr(line, ' ', n);
    r->tag = line;
    r->tag_len = p ? (uint32_t)(p - line) : n;
    r->untagged = r->tag_len == 1 && line[0] == '*';
    r->data = end; /* a bare tag ("*") has empty data, never a null pointer */
    if (!p)
        return;
    p++;
    r->data = p;
    r->data_len = (uint32_t)(end - p);
    for (size_t i = 0; i < FG_ARRAY_SIZE(names); i++) {
        if (imap_word(&p, end, names[i])) {
            r->status = (uint8_t)(i + 1);
            break;
        }
    }
    if (r->status != R_OTHER && end - p >= 2 && p[0] == ' ' && p[1] == '[') {
        const char *close = memchr(p + 2, ']', (size_t)(end - p - 2));
        if (close) {
            r->code = p + 2;
            r->code_len = (uint32_t)(close - r->code);
        }
    }
}

static bool imap_tag_is(const struct imap_resp *r, const char *tag)
{
    return !r->untagged && !r->cont && r->tag_len == strlen(tag) &&
           memcmp(r->tag, tag, r->tag_len) == 0;
}

/* Takes a capability list: remembers it and notes what the login may use. */
static void imap_backend_caps(struct backend_login *bl, const char *caps, size_t n)
{
    free(bl->caps);
    bl->caps = malloc(n + 1);
    bl->caps_len = bl->caps ? n : 0;
    if (bl->caps) {
        memcpy(bl->caps, caps, n);
        bl->caps[n] = 0;
    }
    bl->lit_plus = bl->sasl_ir = bl->auth_plain = bl->has_id = false;
    for (const char *p = caps, *end = caps + n; p < end;) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        size_t len = sp ? (size_t)(sp - p) : (size_t)(end - p);
        if (fg_ieq(p, len, "LITERAL+"))
            bl->lit_plus = true;
        else if (fg_ieq(p, len, "SASL-IR"))
            bl->sasl_ir = true;
        else if (fg_ieq(p, len, "AUTH=PLAIN"))
            bl->auth_plain = true;
        else if (fg_ieq(p, len, "ID"))
            bl->has_id = true;
        p += len + 1;
    }
}

/* A response code "CAPABILITY ..." or untagged data "CAPABILITY ..." */
static bool imap_backend_take_caps(struct backend_login *bl, const char *s, uint32_t n)
{
    const char *p = s, *end = s + n;
    if (!imap_word(&p, end, "CAPABILITY"))
        return false;
    if (p < end)
        p++;
    imap_backend_caps(bl, p, (size_t)(end - p));
    return true;
}

/* Moves the next part of the login command into the send queue. */
static void imap_backend_release(struct backend_login *bl)
{
    uint32_t n = bl->held_parts[0];
    buf_append(bl->out, buf_head(&bl->held), n);
    buf_consume(&bl->held, n);
    bl->nheld--;
    memmove(bl->held_parts, bl->held_parts + 1, sizeof bl->held_parts[0] * bl->nheld);
}

/* Ends a part of the login command: what follows waits for a "+". */
static void imap_backend_cut(struct backend_login *bl, uint32_t *start)
{
    if (bl->nheld < FG_ARRAY_SIZE(bl->held_parts))
        bl->held_parts[bl->nheld++] = bl->held.len - *start;
    *start = bl->held.len;
}

/* Appends s as an astring; a synchronising literal cuts the command. */
static void imap_backend_astring(struct backend_login *bl, uint32_t *start, const char *s, size_t n)
{
    char quoted[2 * CRED_PASS_MAX + 2];

    switch (imap_astring_kind(s, n)) {
    case IMAP_ASTRING_ATOM:
        buf_append(&bl->held, s, n);
        break;
    case IMAP_ASTRING_QUOTED:
        buf_append(&bl->held, quoted, imap_quote(s, n, quoted));
        explicit_bzero(quoted, sizeof quoted);
        break;
    case IMAP_ASTRING_LITERAL:
        buf_printf(&bl->held, "{%zu%s}\r\n", n, bl->lit_plus ? "+" : "");
        if (!bl->lit_plus)
            imap_backend_cut(bl, start);
        buf_append(&bl->held, s, n);
        break;
    }
}

static void imap_backend_forward(struct backend_login *bl)
{
    const struct backend_login_params *par = bl->par;
    backend_send(bl, false,
                 "F1 ID (\"x-originating-ip\" \"%s\" \"x-originating-port\" \"%u\" "
                 "\"x-connected-ip\" \"%s\" \"x-connected-port\" \"%u\" \"x-session-id\" \"%s\" "
                 "\"x-proxy-ttl\" \"%u\")",
                 par->client_ip, par->client_port, par->local_ip, par->local_port, par->session_id,
                 par->ttl);
}

/* Builds the login command into bl->held and sends its first part. */
static void imap_backend_login(struct backend_login *bl)
{
    const struct backend_login_params *par = bl->par;
    uint32_t start = 0;

    if (par->forward && bl->has_id)
        imap_backend_forward(bl);
    buf_free(&bl->held);
    bl->nheld = 0;
    if (par->mode == BACKEND_LOGIN_MASTER) {
        char b64[sasl_plain_encoded_max() + 1];
        size_t n =
                sasl_plain_encode(par->user, par->user_len, par->master_user, par->master_user_len,
                                  par->master_pass, par->master_pass_len, b64);
        buf_puts(&bl->held, "F2 AUTHENTICATE PLAIN");
        if (bl->sasl_ir) {
            buf_puts(&bl->held, " ");
        } else {
            buf_puts(&bl->held, "\r\n");
            imap_backend_cut(bl, &start);
        }
        buf_append(&bl->held, b64, n);
        explicit_bzero(b64, sizeof b64);
    } else {
        buf_puts(&bl->held, "F2 LOGIN ");
        imap_backend_astring(bl, &start, par->user, par->user_len);
        buf_puts(&bl->held, " ");
        imap_backend_astring(bl, &start, par->pass, par->pass_len);
    }
    buf_puts(&bl->held, "\r\n");
    imap_backend_cut(bl, &start);
    if (bl->plog)
        bl->plog(bl->plog_ctx, "B>",
                 par->mode == BACKEND_LOGIN_MASTER ? "F2 AUTHENTICATE PLAIN <redacted>"
                                                   : "F2 LOGIN <redacted>",
                 par->mode == BACKEND_LOGIN_MASTER ? 32 : 19);
    imap_backend_release(bl);
    bl->state = IB_LOGIN;
}

static enum login_status imap_backend_no_status(const struct imap_resp *r)
{
    if (!r->code)
        return LOGIN_FAILED;
    const char *end = memchr(r->code, ' ', r->code_len);
    uint32_t n = end ? (uint32_t)(end - r->code) : r->code_len;
    if (fg_ieq(r->code, n, "AUTHORIZATIONFAILED"))
        return LOGIN_DENIED;
    if (fg_ieq(r->code, n, "EXPIRED"))
        return LOGIN_EXPIRED;
    if (fg_ieq(r->code, n, "UNAVAILABLE") || fg_ieq(r->code, n, "SERVERBUG") ||
        fg_ieq(r->code, n, "LIMIT") || fg_ieq(r->code, n, "INUSE"))
        return LOGIN_UNAVAILABLE;
    return LOGIN_FAILED;
}

static enum backend_login_result imap_backend_greeting(struct backend_login *bl,
                                                       const struct imap_resp *r, const char *line,
                                                       uint32_t n)
{
    if (!r->untagged || r->status != R_OK) {
        backend_reason(bl, r->status == R_PREAUTH ? "backend sent PREAUTH" : "backend refused",
                       line, n);
        return BACKEND_FAIL;
    }
    if (bl->par->starttls) {
        /* Capabilities seen before TLS are not to be trusted after it. */
        backend_send(bl, false, "S1 STARTTLS");
        bl->state = IB_STARTTLS;
        return BACKEND_AGAIN;
    }
    if (r->code && imap_backend_take_caps(bl, r->code, r->code_len)) {
        imap_backend_login(bl);
    } else {
        backend_send(bl, false, "F0 CAPABILITY");
        bl->state = IB_CAPS;
    }
    return BACKEND_AGAIN;
}

/* The reply to the login command. */
static enum backend_login_result imap_backend_logged_in(struct backend_login *bl,
                                                        const struct imap_resp *r, const char *line,
                                                        uint32_t n)
{
    if (r->status == R_OK && bl->nheld > 0) {
        /* Parts of the command still wait for a "+": an OK now would leave
         * them unsent and the next bytes read as the literal. */
        backend_reason(bl, "backend accepted the login before it was sent whole", line, n);
        return BACKEND_FAIL;
    }
    if (r->status == R_OK) {
        if (r->code && imap_backend_take_caps(bl, r->code, r->code_len))
            return BACKEND_OK;
        backend_send(bl, false, "F3 CAPABILITY");
        bl->state = IB_POSTCAPS;
        return BACKEND_AGAIN;
    }
    backend_reason(bl, "backend refused the login", line, n);
    if (r->status == R_NO) {
        bl->status = imap_backend_no_status(r);
        return BACKEND_NO;
    }
    return BACKEND_FAIL;
}

static enum backend_login_result imap_backend_line(struct backend_login *bl, const char *line,
                                                   uint32_t n)
{
    struct imap_resp r;
    imap_resp_split(line, n, &r);

    if (r.untagged && r.status == R_BYE) {
        backend_reason(bl, "backend closed", line, n);
        return BACKEND_FAIL;
    }
    switch (bl->state) {
    case IB_GREETING:
        return imap_backend_greeting(bl, &r, line, n);
    case IB_STARTTLS:
        if (!imap_tag_is(&r, "S1"))
            return BACKEND_AGAIN;
        if (r.status != R_OK) {
            backend_reason(bl, "backend refused STARTTLS", line, n);
            return BACKEND_FAIL;
        }
        return BACKEND_STARTTLS;
    case IB_CAPS:
        if (r.untagged && imap_backend_take_caps(bl, r.data, r.data_len))
            return BACKEND_AGAIN;
        if (!imap_tag_is(&r, "F0"))
            return BACKEND_AGAIN;
        if (r.status != R_OK) {
            backend_reason(bl, "CAPABILITY failed", line, n);
            return BACKEND_FAIL;
        }
        imap_backend_login(bl);
        return BACKEND_AGAIN;
    case IB_LOGIN:
        if (r.cont) {
            if (bl->nheld == 0) {
                backend_reason(bl, "unexpected continuation", NULL, 0);
                return BACKEND_FAIL;
            }
            imap_backend_release(bl);
            return BACKEND_AGAIN;
        }
        if (imap_tag_is(&r, "F1") && r.status != R_OK)
            backend_reason(bl, "backend refused ID", line, n);
        if (imap_tag_is(&r, "F2"))
            return imap_backend_logged_in(bl, &r, line, n);
        return BACKEND_AGAIN;
    case IB_POSTCAPS:
        if (r.untagged && imap_backend_take_caps(bl, r.data, r.data_len))
            return BACKEND_AGAIN;
        if (!imap_tag_is(&r, "F3"))
            return BACKEND_AGAIN;
        if (r.status != R_OK) {
            /* Logged in all the same; only the list is unknown. Never pass
             * on the pre-login one. */
            free(bl->caps);
            bl->caps = NULL;
            bl->caps_len = 0;
        }
        return BACKEND_OK;
    }
    return BACKEND_FAIL;
}

static int imap_backend_frame(struct backend_login *bl, struct backend_frame *f)
{
    int rc = imap_resp_scan(&bl->scan, buf_head(&bl->in), buf_avail(&bl->in), &f->len);
    if (rc != FG_OK)
        return rc;
    const char *line = buf_head(&bl->in);
    f->text = f->len;
    while (f->text > 0 && (line[f->text - 1] == '\n' || line[f->text - 1] == '\r'))
        f->text--;
    /* The response is consumed before the next scan, which starts afresh. */
    imap_resp_init(&bl->scan, IMAP_BACKEND_MAX_LINE);
    return FG_OK;
}

static void imap_backend_start(struct backend_login *bl)
{
    bl->state = IB_GREETING;
    imap_resp_init(&bl->scan, IMAP_BACKEND_MAX_LINE);
}

static void imap_backend_tls_done(struct backend_login *bl)
{
    free(bl->caps);
    bl->caps = NULL;
    bl->caps_len = 0;
    backend_send(bl, false, "F0 CAPABILITY");
    bl->state = IB_CAPS;
}

const struct backend_login_ops imap_backend_ops = {
        .start = imap_backend_start,
        .input = backend_login_input,
        .frame = imap_backend_frame,
        .line = imap_backend_line,
        .tls_done = imap_backend_tls_done,
};
