/*
 * POP3 login dialogue with a backend.
 *
 *   S: +OK greeting
 *   C: STLS                                        (Tls = starttls; then TLS)
 *   C: XCLIENT ADDR=.. PORT=.. SESSION=.. TTL=..   (Dovecot's proxy forwarding)
 *   C: USER name / PASS password   or   AUTH PLAIN base64
 *
 * Each command waits for its reply: without a CAPA round trip we cannot know
 * that the backend allows pipelining. USER/PASS cannot carry a CR or an LF, nor a
 * space in the name, so such credentials, and master-user logins, go
 * as AUTH PLAIN (RFC 5034) with an initial response; so do passwords with
 * a leading or trailing space, which some servers trim.
 */
#include "backend.h"
#include "sasl_plain.h"

#include <string.h>

#define POP3_BACKEND_MAX_LINE 4096

enum pop3_backend_state {
    PB_GREETING,
    PB_STLS,
    PB_XCLIENT,
    PB_USER,
    PB_PASS,
    PB_AUTH,
};

static bool pop3_backend_userpass_safe(const struct backend_login_params *par)
{
    return par->mode == BACKEND_LOGIN_PASSTHROUGH && par->user_len > 0 &&
           !memchr(par->user, ' ', par->user_len) && !memchr(par->user, '\r', par->user_len) &&
           !memchr(par->user, '\n', par->user_len) && par->pass_len > 0 && par->pass[0] != ' ' &&
           par->pass[par->pass_len - 1] != ' ' && !memchr(par->pass, '\r', par->pass_len) &&
           !memchr(par->pass, '\n', par->pass_len);
}

static void pop3_backend_login(struct backend_login *bl)
{
    const struct backend_login_params *par = bl->par;

    if (pop3_backend_userpass_safe(par)) {
        backend_send(bl, false, "USER %.*s", (int)par->user_len, par->user);
        bl->state = PB_USER;
        return;
    }
    char b64[sasl_plain_encoded_max() + 1];
    size_t n;
    if (par->mode == BACKEND_LOGIN_MASTER)
        n = sasl_plain_encode(par->user, par->user_len, par->master_user, par->master_user_len,
                              par->master_pass, par->master_pass_len, b64);
    else
        n = sasl_plain_encode("", 0, par->user, par->user_len, par->pass, par->pass_len, b64);
    backend_send(bl, true, "AUTH PLAIN %.*s", (int)n, b64);
    explicit_bzero(b64, sizeof b64);
    bl->state = PB_AUTH;
}

/* After the greeting (and TLS): forward the client's address, then log in. */
static void pop3_backend_begin(struct backend_login *bl)
{
    const struct backend_login_params *par = bl->par;
    if (par->forward) {
        backend_send(bl, false, "XCLIENT ADDR=%s PORT=%u SESSION=%s TTL=%u", par->client_ip,
                     par->client_port, par->session_id, par->ttl);
        bl->state = PB_XCLIENT;
    } else {
        pop3_backend_login(bl);
    }
}

/* Maps the response code of a -ERR line to what the client is told. */
static enum login_status pop3_backend_err_status(const char *line, uint32_t n)
{
    if (n < 6 || line[5] != '[')
        return LOGIN_FAILED;
    const char *code = line + 6;
    const char *end = memchr(code, ']', n - 6);
    if (!end)
        return LOGIN_FAILED;
    uint32_t len = (uint32_t)(end - code);
    if (fg_ieq(code, len, "IN-USE"))
        return LOGIN_IN_USE;
    if (fg_ieq(code, len, "SYS/TEMP") || fg_ieq(code, len, "SYS/PERM") ||
        fg_ieq(code, len, "LOGIN-DELAY"))
        return LOGIN_UNAVAILABLE;
    return LOGIN_FAILED;
}

static enum backend_login_result pop3_backend_line(struct backend_login *bl, const char *line,
                                                   uint32_t n)
{
    bool ok = n >= 3 && memcmp(line, "+OK", 3) == 0 && (n == 3 || line[3] == ' ');
    bool err = n >= 4 && memcmp(line, "-ERR", 4) == 0 && (n == 4 || line[4] == ' ');

    switch (bl->state) {
    case PB_GREETING:
        if (!ok) {
            backend_reason(bl, "backend refused", line, n);
            return BACKEND_FAIL;
        }
        if (bl->par->starttls) {
            backend_send(bl, false, "STLS");
            bl->state = PB_STLS;
        } else {
            pop3_backend_begin(bl);
        }
        return BACKEND_AGAIN;
    case PB_STLS:
        if (!ok) {
            backend_reason(bl, "backend refused STLS", line, n);
            return BACKEND_FAIL;
        }
        return BACKEND_STARTTLS;
    case PB_XCLIENT:
        if (!ok)
            backend_reason(bl, "backend refused XCLIENT", line, n);
        pop3_backend_login(bl);
        return BACKEND_AGAIN;
    case PB_USER:
        if (ok) {
            backend_send(bl, true, "PASS %.*s", (int)bl->par->pass_len, bl->par->pass);
            bl->state = PB_PASS;
            return BACKEND_AGAIN;
        }
        break;
    case PB_PASS:
    case PB_AUTH:
        if (ok)
            return BACKEND_OK;
        break;
    }
    backend_reason(bl, "backend refused the login", line, n);
    if (err) {
        bl->status = pop3_backend_err_status(line, n);
        return BACKEND_NO;
    }
    return BACKEND_FAIL;
}

static int pop3_backend_frame(struct backend_login *bl, struct backend_frame *f)
{
    struct pop3_cmd line;
    int rc = pop3_parse_line(&bl->pop3, buf_head(&bl->in), buf_avail(&bl->in), &line);
    if (rc == POP3_PARSE_AGAIN)
        return FG_AGAIN;
    if (rc == POP3_PARSE_TOO_LONG)
        return FG_ERROR;
    f->len = line.line_len;
    f->text = line.arg_off + line.arg_len;
    return FG_OK;
}

static void pop3_backend_start(struct backend_login *bl)
{
    bl->state = PB_GREETING;
    pop3_parser_init(&bl->pop3, POP3_BACKEND_MAX_LINE);
}

const struct backend_login_ops pop3_backend_ops = {
        .start = pop3_backend_start,
        .input = backend_login_input,
        .frame = pop3_backend_frame,
        .line = pop3_backend_line,
        .tls_done = pop3_backend_begin,
};
