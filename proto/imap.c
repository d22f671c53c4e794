/*
 * IMAP4 client session before login (RFC 3501, RFC 9051).
 *
 * Commands come from a dispatch table. Replies follow Exchange's wording where
 * clients or scripts are known to match on it ("Command received in Invalid
 * state.", "LOGIN failed."), and carry RFC 5530 response codes.
 */
#include "imap_parse.h"
#include "sasl_plain.h"
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FG_VERSION
#define FG_VERSION "dev"
#endif

enum imap_sess_state {
    IMAP_S_COMMAND, /* reading commands */
    IMAP_S_SASL,    /* waiting for the AUTHENTICATE response line */
    IMAP_S_LOGIN,   /* a login is being checked */
};

struct imap_session {
    struct session s;
    struct imap_parser p;
    uint8_t state;
    bool authenticate; /* the pending login came from AUTHENTICATE, not LOGIN */
    bool gss;          /* the SASL exchange under way is GSSAPI's, not PLAIN's */
    bool gss_first;    /* GSSAPI: the next response is the exchange's first */
    char tag[IMAP_MAX_TAG + 1];
};

/* The current command: its bytes and parsed arguments. */
struct imap_cmd_ctx {
    struct imap_session *is;
    char *buf;
    const struct imap_arg *args;
    unsigned nargs;
};

struct imap_cmd {
    const char *name;
    enum sess_action (*fn)(struct imap_cmd_ctx *c);
};

static struct imap_session *imap_of(struct session *s)
{
    return FG_CONTAINER_OF(s, struct imap_session, s);
}

static bool imap_login_allowed(const struct session *s)
{
    return s->tls || s->conf->login_type == LOGIN_TYPE_PLAIN_TEXT_LOGIN;
}

static bool imap_auth_allowed(const struct session *s)
{
    return s->tls || s->conf->login_type != LOGIN_TYPE_SECURE;
}

static bool imap_starttls_offered(const struct session *s)
{
    return s->conf->starttls && !s->tls;
}

/* The pre-login capability list; it changes with LoginType and TLS, so a
 * client must ask again after STARTTLS (RFC 9051 section 6.2.1). */
static const char *imap_caps(const struct session *s, char *dst, size_t n)
{
    snprintf(dst, n, "IMAP4rev1 ID LITERAL+ SASL-IR%s%s%s%s",
             imap_starttls_offered(s) ? " STARTTLS" : "",
             imap_login_allowed(s) ? "" : " LOGINDISABLED",
             imap_auth_allowed(s) ? " AUTH=PLAIN" : "",
             imap_auth_allowed(s) && s->conf->gssapi ? " AUTH=GSSAPI" : "");
    return dst;
}

static bool imap_arg_is_string(const struct imap_arg *a)
{
    return a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_QUOTED || a->type == IMAP_ARG_LITERAL;
}

static bool imap_arg_is_nil(const struct imap_cmd_ctx *c, const struct imap_arg *a)
{
    return a->type == IMAP_ARG_ATOM && fg_ieq(c->buf + a->off, a->len, "NIL");
}

static const char *imap_tag(const struct imap_cmd_ctx *c)
{
    return c->is->tag;
}

static enum sess_action imap_bad(struct imap_cmd_ctx *c, const char *text)
{
    struct session *s = &c->is->s;
    sess_reply(s, "%s BAD %s", imap_tag(c), text);
    if (sess_invalid(s)) {
        sess_reply(s, "* BYE Too many invalid commands.");
        return SESS_CLOSE;
    }
    return SESS_AGAIN;
}

static enum sess_action imap_cmd_capability(struct imap_cmd_ctx *c)
{
    char caps[128];
    if (c->nargs != 2)
        return imap_bad(c, "CAPABILITY takes no arguments.");
    sess_reply(&c->is->s, "* CAPABILITY %s", imap_caps(&c->is->s, caps, sizeof caps));
    sess_reply(&c->is->s, "%s OK CAPABILITY completed.", imap_tag(c));
    return SESS_AGAIN;
}

static enum sess_action imap_cmd_noop(struct imap_cmd_ctx *c)
{
    if (c->nargs != 2)
        return imap_bad(c, "NOOP takes no arguments.");
    sess_reply(&c->is->s, "%s OK NOOP completed.", imap_tag(c));
    return SESS_AGAIN;
}

/*
 * STARTTLS (RFC 9051 section 6.2.1). Whatever the client sent after the
 * command is dropped before the handshake: bytes injected in clear text
 * must never run as commands inside TLS (CVE-2011-0411 and kin).
 */
static enum sess_action imap_cmd_starttls(struct imap_cmd_ctx *c)
{
    struct session *s = &c->is->s;

    if (c->nargs != 2)
        return imap_bad(c, "STARTTLS takes no arguments.");
    if (s->tls)
        return imap_bad(c, "TLS is already active.");
    if (!s->conf->starttls)
        return imap_bad(c, "STARTTLS is not available on this server.");
    sess_reply(s, "%s OK Begin TLS negotiation now.", imap_tag(c));
    c->is->p.pos = buf_avail(&s->in); /* the caller consumes up to here: everything */
    return SESS_STARTTLS;
}

static enum sess_action imap_cmd_logout(struct imap_cmd_ctx *c)
{
    if (c->nargs != 2)
        return imap_bad(c, "LOGOUT takes no arguments.");
    sess_reply(&c->is->s, "* BYE Logging out.");
    sess_reply(&c->is->s, "%s OK LOGOUT completed.", imap_tag(c));
    return SESS_CLOSE;
}

/* Appends name=value to the kept client ID, printable bytes only. */
static void imap_keep_id(struct session *s, const char *k, size_t kn, const char *v, size_t vn)
{
    size_t o = strlen(s->client_id);
    size_t room = sizeof s->client_id - 1;
    const char *parts[2] = {k, v};
    size_t lens[2] = {kn, vn};

    for (int i = 0; i < 2 && o < room; i++) {
        if (i == 0 && o > 0)
            s->client_id[o++] = ' ';
        for (size_t j = 0; j < lens[i] && o < room; j++) {
            unsigned char ch = (unsigned char)parts[i][j];
            s->client_id[o++] = (ch < 0x20 || ch == 0x7f || ch == ' ') ? '_' : (char)ch;
        }
        if (i == 0 && o < room)
            s->client_id[o++] = '=';
    }
    s->client_id[o] = 0;
}

/* ID (RFC 2971): NIL or a list of up to 30 field/value pairs. */
static enum sess_action imap_cmd_id(struct imap_cmd_ctx *c)
{
    const struct imap_arg *a = c->args;
    unsigned n = c->nargs;

    if (n == 3 && imap_arg_is_nil(c, &a[2]))
        goto reply;
    if (n < 4 || a[2].type != IMAP_ARG_LIST || a[n - 1].type != IMAP_ARG_LIST_END)
        return imap_bad(c, "Invalid ID arguments.");
    unsigned fields = n - 4;
    if (fields % 2 != 0 || fields / 2 > 30)
        return imap_bad(c, "Invalid ID arguments.");
    for (unsigned i = 3; i + 1 < n - 1; i += 2) {
        const struct imap_arg *k = &a[i], *v = &a[i + 1];
        bool v_nil = imap_arg_is_nil(c, v);
        if (!imap_arg_is_string(k) || k->len > 30 || !(v_nil || imap_arg_is_string(v)) ||
            v->len > 1024)
            return imap_bad(c, "Invalid ID arguments.");
    }
    c->is->s.client_id[0] = 0;
    for (unsigned i = 3; i + 1 < n - 1; i += 2)
        imap_keep_id(&c->is->s, c->buf + a[i].off, a[i].len, c->buf + a[i + 1].off,
                     imap_arg_is_nil(c, &a[i + 1]) ? 0 : a[i + 1].len);
reply:
    sess_reply(&c->is->s, "* ID (\"name\" \"forestgate\" \"version\" \"%s\")", FG_VERSION);
    sess_reply(&c->is->s, "%s OK ID completed.", imap_tag(c));
    return SESS_AGAIN;
}

/*
 * Writes the command to the protocol log with the arguments from index keep
 * on replaced by a marker: they are a password or a SASL response.
 */
static void imap_log_redacted(struct imap_cmd_ctx *c, unsigned keep)
{
    char line[400];
    size_t o = 0;

    for (unsigned i = 0; i < c->nargs && i < keep && o < sizeof line - 20; i++) {
        int n = snprintf(line + o, sizeof line - 20 - o, "%s%.*s", i ? " " : "",
                         (int)c->args[i].len, c->buf + c->args[i].off);
        o = FG_MIN(o + (size_t)(n > 0 ? n : 0), sizeof line - 20);
    }
    if (c->nargs > keep)
        o += (size_t)snprintf(line + o, sizeof line - o, " <redacted>");
    sess_log_client(&c->is->s, line, o);
}

/* Waits for a SASL response line; GSSAPI's may be longer than a command. */
static void imap_sasl_enter(struct imap_session *is)
{
    is->state = IMAP_S_SASL;
    if (is->gss)
        is->p.max_len = FG_MAX(is->s.conf->max_command, (uint32_t)SASL_GSS_LINE_MAX);
}

static void imap_sasl_leave(struct imap_session *is)
{
    is->state = IMAP_S_COMMAND;
    is->p.max_len = is->s.conf->max_command;
}

/* Takes ownership of fresh credentials and asks the core for a login. */
static enum sess_action imap_start_login(struct imap_session *is, struct cred *cr,
                                         bool authenticate)
{
    is->s.cred = cr;
    is->authenticate = authenticate;
    is->state = IMAP_S_LOGIN;
    is->s.invalid = 0;
    return SESS_LOGIN;
}

static enum sess_action imap_login_refused(struct imap_cmd_ctx *c, struct cred *cr,
                                           const char *what)
{
    cred_free(cr);
    sess_reply(&c->is->s, "%s NO [AUTHENTICATIONFAILED] %s failed.", imap_tag(c), what);
    return SESS_AGAIN;
}

static enum sess_action imap_cmd_login(struct imap_cmd_ctx *c)
{
    const struct imap_arg *a = c->args;
    struct session *s = &c->is->s;

    if (c->nargs != 4 || !imap_arg_is_string(&a[2]) || !imap_arg_is_string(&a[3]))
        return imap_bad(c, "LOGIN expects a user name and a password.");
    imap_log_redacted(c, 3);
    if (!imap_login_allowed(s)) {
        sess_reply(s, "%s NO [PRIVACYREQUIRED] LOGIN is not allowed without TLS on this server.",
                   imap_tag(c));
        return SESS_AGAIN;
    }
    struct cred *cr = cred_new();
    if (!cr) {
        sess_reply(s, "%s NO [UNAVAILABLE] Out of memory.", imap_tag(c));
        return SESS_AGAIN;
    }
    cr->mech = CRED_MECH_LOGIN;
    if (cred_set(cr->user, &cr->user_len, CRED_NAME_MAX, c->buf + a[2].off, a[2].len) ||
        cred_set(cr->pass, &cr->pass_len, CRED_PASS_MAX, c->buf + a[3].off, a[3].len))
        return imap_login_refused(c, cr, "LOGIN");
    return imap_start_login(c->is, cr, false);
}

/* A GSSAPI response: the core runs the exchange's next step. */
static enum sess_action imap_gss_response(struct imap_cmd_ctx *c, const char *b64, size_t n)
{
    bool bad_b64;
    struct cred *cr = sess_gss_cred(b64, n, c->is->gss_first, &bad_b64);
    if (!cr) {
        if (bad_b64)
            return imap_bad(c, "Invalid base64 in AUTHENTICATE response.");
        sess_reply(&c->is->s, "%s NO [AUTHENTICATIONFAILED] AUTHENTICATE failed.", imap_tag(c));
        return SESS_AGAIN;
    }
    c->is->gss_first = false;
    return imap_start_login(c->is, cr, true);
}

/* Decodes a SASL PLAIN response ("=" is empty) and starts the login. */
static enum sess_action imap_sasl_response(struct imap_cmd_ctx *c, const char *b64, size_t n)
{
    if (c->is->gss)
        return imap_gss_response(c, b64, n);
    struct cred *cr = cred_new();

    if (!cr) {
        sess_reply(&c->is->s, "%s NO [UNAVAILABLE] Out of memory.", imap_tag(c));
        return SESS_AGAIN;
    }
    switch (sasl_plain_response(b64, n, cr)) {
    case SASL_BAD_BASE64:
        cred_free(cr);
        return imap_bad(c, "Invalid base64 in AUTHENTICATE response.");
    case SASL_BAD_PLAIN:
        return imap_login_refused(c, cr, "AUTHENTICATE");
    default:
        return imap_start_login(c->is, cr, true);
    }
}

static enum sess_action imap_cmd_authenticate(struct imap_cmd_ctx *c)
{
    const struct imap_arg *a = c->args;
    struct session *s = &c->is->s;

    if (c->nargs < 3 || c->nargs > 4 || a[2].type != IMAP_ARG_ATOM ||
        (c->nargs == 4 && a[3].type != IMAP_ARG_ATOM))
        return imap_bad(c, "AUTHENTICATE expects a mechanism and an optional response.");
    imap_log_redacted(c, 3);
    bool gss = s->conf->gssapi && fg_ieq(c->buf + a[2].off, a[2].len, "GSSAPI");
    if (!gss && !fg_ieq(c->buf + a[2].off, a[2].len, "PLAIN")) {
        sess_reply(s, "%s NO Unsupported authentication mechanism.", imap_tag(c));
        return SESS_AGAIN;
    }
    if (!imap_auth_allowed(s)) {
        sess_reply(s,
                   "%s NO [PRIVACYREQUIRED] Authentication is not allowed without TLS on "
                   "this server.",
                   imap_tag(c));
        return SESS_AGAIN;
    }
    c->is->gss = gss;
    c->is->gss_first = gss;
    if (c->nargs == 4)
        return imap_sasl_response(c, c->buf + a[3].off, a[3].len);
    imap_sasl_enter(c->is);
    sess_reply(s, "+ ");
    return SESS_AGAIN;
}

/* Commands of the authenticated and selected states: refused before login. */
static const char *const imap_later_cmds[] = {
        "SELECT",      "EXAMINE",      "CREATE",   "DELETE", "RENAME",    "SUBSCRIBE",
        "UNSUBSCRIBE", "LIST",         "LSUB",     "STATUS", "APPEND",    "CHECK",
        "CLOSE",       "EXPUNGE",      "SEARCH",   "FETCH",  "STORE",     "COPY",
        "MOVE",        "UID",          "IDLE",     "ENABLE", "NAMESPACE", "UNSELECT",
        "GETQUOTA",    "GETQUOTAROOT", "SETQUOTA", "GETACL", "SETACL",    "MYRIGHTS",
        "LISTRIGHTS",  "XLIST",        "COMPRESS", "NOTIFY", "SORT",      "THREAD",
        "GETMETADATA", "SETMETADATA",
};

static const struct imap_cmd imap_cmds[] = {
        {"CAPABILITY", imap_cmd_capability}, {"NOOP", imap_cmd_noop},
        {"LOGOUT", imap_cmd_logout},         {"ID", imap_cmd_id},
        {"LOGIN", imap_cmd_login},           {"AUTHENTICATE", imap_cmd_authenticate},
        {"STARTTLS", imap_cmd_starttls},
};

static enum sess_action imap_dispatch(struct imap_cmd_ctx *c)
{
    const struct imap_arg *name = &c->args[1];
    const char *nm = c->buf + name->off;

    for (size_t i = 0; i < FG_ARRAY_SIZE(imap_cmds); i++) {
        if (fg_ieq(nm, name->len, imap_cmds[i].name)) {
            enum sess_action act = imap_cmds[i].fn(c);
            return act;
        }
    }
    for (size_t i = 0; i < FG_ARRAY_SIZE(imap_later_cmds); i++) {
        if (fg_ieq(nm, name->len, imap_later_cmds[i]))
            return imap_bad(c, "Command received in Invalid state.");
    }
    return imap_bad(c, "Unknown command.");
}

/* A command line that failed to parse. */
static enum sess_action imap_parse_failed(struct imap_session *is)
{
    struct session *s = &is->s;
    static const char *const why[] = {
            [IMAP_ERR_SYNTAX] = "Syntax error.",
            [IMAP_ERR_TAG] = "Missing or invalid tag.",
            [IMAP_ERR_NUL] = "NUL bytes are not allowed.",
            [IMAP_ERR_ARGS] = "Too many arguments.",
            [IMAP_ERR_LITERAL] = "Literal too large.",
            [IMAP_ERR_TOO_LONG] = "Command too long.",
            [IMAP_ERR_LITERAL_NS] = "Literal too large.",
    };
    const char *text = why[is->p.err] ? why[is->p.err] : "Syntax error.";

    if (imap_parse_fatal(&is->p)) {
        sess_reply(s, "* BAD %s", text);
        sess_reply(s, "* BYE Closing connection.");
        return SESS_CLOSE;
    }
    /* Echo the tag only when it parsed as a valid tag. */
    if (is->state == IMAP_S_SASL)
        sess_reply(s, "%s BAD %s", is->tag, text);
    else if (is->p.nargs >= 1 && is->p.err != IMAP_ERR_TAG)
        sess_reply(s, "%.*s BAD %s", (int)is->p.args[0].len, buf_head(&s->in), text);
    else
        sess_reply(s, "* BAD %s", text);
    if (sess_invalid(s)) {
        sess_reply(s, "* BYE Too many invalid commands.");
        return SESS_CLOSE;
    }
    return SESS_AGAIN;
}

/* A complete command or SASL line has been parsed; act on it. */
static enum sess_action imap_complete(struct imap_session *is)
{
    struct imap_cmd_ctx c = {is, buf_head(&is->s.in), is->p.args, is->p.nargs};

    if (is->state == IMAP_S_SASL) {
        const struct imap_arg *line = &is->p.args[0];
        sess_log_client(&is->s, "<SASL response redacted>", 24);
        imap_sasl_leave(is);
        if (line->len == 1 && c.buf[0] == '*') {
            sess_reply(&is->s, "%s BAD AUTHENTICATE cancelled.", is->tag);
            return SESS_AGAIN;
        }
        return imap_sasl_response(&c, c.buf, line->len);
    }
    snprintf(is->tag, sizeof is->tag, "%.*s", (int)is->p.args[0].len, c.buf);
    if (!fg_ieq(c.buf + is->p.args[1].off, is->p.args[1].len, "LOGIN") &&
        !fg_ieq(c.buf + is->p.args[1].off, is->p.args[1].len, "AUTHENTICATE"))
        sess_log_client(&is->s, c.buf, FG_MIN(is->p.pos, 300u));
    return imap_dispatch(&c);
}

static enum sess_action imap_input(struct session *s)
{
    struct imap_session *is = imap_of(s);

    while (is->state != IMAP_S_LOGIN && buf_avail(&s->in) > 0) {
        uint8_t invalid_before = s->invalid;
        int rc = imap_parse_command(&is->p, buf_head(&s->in), buf_avail(&s->in));
        enum sess_action act = SESS_AGAIN;

        if (rc == IMAP_PARSE_AGAIN)
            return SESS_AGAIN;
        if (rc == IMAP_PARSE_CONTINUE) {
            sess_reply(s, "+ Ready for literal data.");
            continue;
        }
        if (rc == IMAP_PARSE_ERROR) {
            act = imap_parse_failed(is);
            if (is->state == IMAP_S_SASL)
                imap_sasl_leave(is);
        } else {
            act = imap_complete(is);
            if (s->invalid == invalid_before && act != SESS_CLOSE)
                s->invalid = 0;
        }
        if (act == SESS_CLOSE)
            return act;
        buf_consume(&s->in, is->p.pos);
        if (is->state == IMAP_S_SASL)
            imap_parser_expect_line(&is->p);
        else
            imap_parser_reset(&is->p);
        if (act == SESS_LOGIN || act == SESS_STARTTLS)
            return act;
    }
    return SESS_AGAIN;
}

static void imap_greeting(struct session *s)
{
    char caps[128];
    sess_reply(s, "* OK [CAPABILITY %s] %s", imap_caps(s, caps, sizeof caps), s->conf->banner);
}

static void imap_login_done(struct session *s, enum login_status st, const char *caps, size_t n)
{
    struct imap_session *is = imap_of(s);
    const char *what = is->authenticate ? "AUTHENTICATE" : "LOGIN";

    cred_free(s->cred);
    s->cred = NULL;
    is->state = IMAP_S_COMMAND;
    switch (st) {
    case LOGIN_OK:
        if (caps && n > 0)
            sess_reply(s, "%s OK [CAPABILITY %.*s] %s completed.", is->tag, (int)n, caps, what);
        else
            sess_reply(s, "%s OK %s completed.", is->tag, what);
        break;
    case LOGIN_DENIED:
        sess_reply(s, "%s NO [AUTHORIZATIONFAILED] %s failed.", is->tag, what);
        break;
    case LOGIN_EXPIRED:
        sess_reply(s, "%s NO [EXPIRED] %s failed: the password has expired.", is->tag, what);
        break;
    case LOGIN_UNAVAILABLE:
    case LOGIN_IN_USE:
        sess_reply(s, "%s NO [UNAVAILABLE] The server is unavailable. Try again later.", is->tag);
        break;
    case LOGIN_TOO_MANY:
        sess_reply(s, "%s NO [UNAVAILABLE] Too many connections for this user.", is->tag);
        break;
    case LOGIN_FAILED:
    default:
        sess_reply(s, "%s NO [AUTHENTICATIONFAILED] %s failed.", is->tag, what);
        break;
    }
}

static void imap_sasl_challenge(struct session *s, const uint8_t *tok, size_t n)
{
    struct imap_session *is = imap_of(s);
    cred_free(s->cred);
    s->cred = NULL;
    imap_sasl_enter(is);
    imap_parser_expect_line(&is->p);
    sess_challenge(s, tok, n);
}

static struct session *imap_create(const struct sess_conf *conf, struct buf *out)
{
    struct imap_session *is = sess_alloc(sizeof *is, &imap_sess_ops, conf, out);
    if (is)
        imap_parser_init(&is->p, conf->max_command);
    return is ? &is->s : NULL;
}

static void imap_destroy(struct session *s)
{
    sess_free(s, sizeof(struct imap_session));
}

const struct sess_ops imap_sess_ops = {
        .name = "imap",
        .create = imap_create,
        .destroy = imap_destroy,
        .greeting = imap_greeting,
        .input = imap_input,
        .login_done = imap_login_done,
        .sasl_challenge = imap_sasl_challenge,
        .bye = {[SESS_BYE_TIMEOUT] = "* BYE Disconnected for inactivity.",
                [SESS_BYE_SHUTDOWN] = "* BYE Server shutting down.",
                [SESS_BYE_OVERLOAD] = "* BYE [UNAVAILABLE] Too many connections.",
                [SESS_BYE_PER_IP] = "* BYE [UNAVAILABLE] Too many connections from your address.",
                [SESS_BYE_KICKED] = "* BYE Disconnected by an administrator."},
};
