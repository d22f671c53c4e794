/*
 * POP3 client session in the AUTHORIZATION state (RFC 1939, RFC 2449,
 * RFC 5034, RFC 3206 response codes).
 */
#include "pop3_parse.h"
#include "sasl_plain.h"
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum pop3_sess_state {
    POP3_S_COMMAND,
    POP3_S_SASL,  /* waiting for the AUTH PLAIN response line */
    POP3_S_LOGIN, /* a login is being checked */
};

struct pop3_session {
    struct session s;
    struct pop3_parser p;
    uint8_t state;
    bool gss;          /* the SASL exchange under way is GSSAPI's, not PLAIN's */
    bool gss_first;    /* GSSAPI: the next response is the exchange's first */
    uint16_t user_len; /* from USER, waiting for PASS */
    char user[CRED_NAME_MAX + 1];
};

struct pop3_cmd_ctx {
    struct pop3_session *ps;
    const char *arg;
    uint32_t arg_len;
};

struct pop3_cmd_def {
    const char *name;
    enum sess_action (*fn)(struct pop3_cmd_ctx *c);
};

static struct pop3_session *pop3_of(struct session *s)
{
    return FG_CONTAINER_OF(s, struct pop3_session, s);
}

static bool pop3_userpass_allowed(const struct session *s)
{
    return s->tls || s->conf->login_type == LOGIN_TYPE_PLAIN_TEXT_LOGIN;
}

static bool pop3_auth_allowed(const struct session *s)
{
    return s->tls || s->conf->login_type != LOGIN_TYPE_SECURE;
}

static enum sess_action pop3_invalid(struct session *s, const char *text)
{
    sess_reply(s, "-ERR %s", text);
    if (sess_invalid(s)) {
        sess_reply(s, "-ERR Too many invalid commands.");
        return SESS_CLOSE;
    }
    return SESS_AGAIN;
}

static enum sess_action pop3_cmd_capa(struct pop3_cmd_ctx *c)
{
    struct session *s = &c->ps->s;
    sess_reply(s, "+OK Capability list follows");
    sess_reply(s, "TOP");
    sess_reply(s, "UIDL");
    if (pop3_userpass_allowed(s))
        sess_reply(s, "USER");
    if (pop3_auth_allowed(s))
        sess_reply(s, s->conf->gssapi ? "SASL PLAIN GSSAPI" : "SASL PLAIN");
    if (s->conf->starttls && !s->tls)
        sess_reply(s, "STLS");
    sess_reply(s, "RESP-CODES");
    sess_reply(s, "AUTH-RESP-CODE");
    sess_reply(s, "PIPELINING");
    sess_reply(s, ".");
    return SESS_AGAIN;
}

/* STLS (RFC 2595 section 4). What followed the command is dropped by the
 * caller: clear-text bytes must never run as commands inside TLS. */
static enum sess_action pop3_cmd_stls(struct pop3_cmd_ctx *c)
{
    struct session *s = &c->ps->s;

    if (c->arg_len > 0)
        return pop3_invalid(s, "STLS takes no arguments.");
    if (s->tls) {
        sess_reply(s, "-ERR Command not permitted when TLS active.");
        return SESS_AGAIN;
    }
    if (!s->conf->starttls)
        return pop3_invalid(s, "STLS is not available on this server.");
    c->ps->user_len = 0; /* a USER given in clear text does not carry over */
    sess_reply(s, "+OK Begin TLS negotiation.");
    return SESS_STARTTLS;
}

static enum sess_action pop3_cmd_quit(struct pop3_cmd_ctx *c)
{
    sess_reply(&c->ps->s, "+OK Logging out.");
    return SESS_CLOSE;
}

static enum sess_action pop3_cmd_user(struct pop3_cmd_ctx *c)
{
    struct pop3_session *ps = c->ps;
    struct session *s = &ps->s;

    ps->user_len = 0;
    if (c->arg_len == 0)
        return pop3_invalid(s, "USER needs a user name.");
    if (!pop3_userpass_allowed(s)) {
        sess_reply(s, "-ERR [AUTH] USER/PASS is not allowed without TLS on this server.");
        return SESS_AGAIN;
    }
    /* An over-long or NUL-bearing name fails later, at PASS, like a wrong
     * password: the client learns nothing from USER alone. */
    if (cred_set(ps->user, &ps->user_len, CRED_NAME_MAX, c->arg, c->arg_len) != FG_OK)
        ps->user_len = UINT16_MAX;
    sess_reply(s, "+OK");
    return SESS_AGAIN;
}

static enum sess_action pop3_start_login(struct pop3_session *ps, struct cred *cr)
{
    ps->s.cred = cr;
    ps->state = POP3_S_LOGIN;
    ps->user_len = 0;
    return SESS_LOGIN;
}

static enum sess_action pop3_refused(struct session *s, struct cred *cr)
{
    cred_free(cr);
    sess_reply(s, "-ERR [AUTH] Logon failure: unknown user name or bad password.");
    return SESS_AGAIN;
}

static enum sess_action pop3_cmd_pass(struct pop3_cmd_ctx *c)
{
    struct pop3_session *ps = c->ps;
    struct session *s = &ps->s;

    if (!pop3_userpass_allowed(s)) {
        sess_reply(s, "-ERR [AUTH] USER/PASS is not allowed without TLS on this server.");
        return SESS_AGAIN;
    }
    if (ps->user_len == 0)
        return pop3_invalid(s, "No user name given: send USER first.");
    struct cred *cr = cred_new();
    if (!cr) {
        sess_reply(s, "-ERR [SYS/TEMP] Out of memory.");
        return SESS_AGAIN;
    }
    cr->mech = CRED_MECH_USERPASS;
    bool bad_user = ps->user_len == UINT16_MAX;
    ps->user_len = bad_user ? 0 : ps->user_len;
    if (bad_user || cred_set(cr->user, &cr->user_len, CRED_NAME_MAX, ps->user, ps->user_len) ||
        cred_set(cr->pass, &cr->pass_len, CRED_PASS_MAX, c->arg, c->arg_len)) {
        ps->user_len = 0;
        return pop3_refused(s, cr);
    }
    return pop3_start_login(ps, cr);
}

/* Waits for a SASL response line; GSSAPI's may be longer than a command. */
static void pop3_sasl_enter(struct pop3_session *ps)
{
    ps->state = POP3_S_SASL;
    if (ps->gss)
        ps->p.max_len = FG_MAX(ps->s.conf->max_command, (uint32_t)SASL_GSS_LINE_MAX);
}

static void pop3_sasl_leave(struct pop3_session *ps)
{
    ps->state = POP3_S_COMMAND;
    ps->p.max_len = ps->s.conf->max_command;
}

/* A GSSAPI response: the core runs the exchange's next step. */
static enum sess_action pop3_gss_response(struct pop3_session *ps, const char *b64, size_t n)
{
    bool bad_b64;
    struct cred *cr = sess_gss_cred(b64, n, ps->gss_first, &bad_b64);
    if (!cr) {
        if (bad_b64)
            return pop3_invalid(&ps->s, "Invalid base64 in AUTH response.");
        sess_reply(&ps->s, "-ERR [AUTH] Logon failure: unknown user name or bad password.");
        return SESS_AGAIN;
    }
    ps->gss_first = false;
    return pop3_start_login(ps, cr);
}

/* Decodes a SASL PLAIN response and starts the login. */
static enum sess_action pop3_sasl_response(struct pop3_session *ps, const char *b64, size_t n)
{
    if (ps->gss)
        return pop3_gss_response(ps, b64, n);
    struct cred *cr = cred_new();

    if (!cr) {
        sess_reply(&ps->s, "-ERR [SYS/TEMP] Out of memory.");
        return SESS_AGAIN;
    }
    switch (sasl_plain_response(b64, n, cr)) {
    case SASL_BAD_BASE64:
        cred_free(cr);
        return pop3_invalid(&ps->s, "Invalid base64 in AUTH response.");
    case SASL_BAD_PLAIN:
        return pop3_refused(&ps->s, cr);
    default:
        return pop3_start_login(ps, cr);
    }
}

static enum sess_action pop3_cmd_auth(struct pop3_cmd_ctx *c)
{
    struct pop3_session *ps = c->ps;
    struct session *s = &ps->s;
    const char *sp = memchr(c->arg, ' ', c->arg_len);
    uint32_t mech_len = sp ? (uint32_t)(sp - c->arg) : c->arg_len;

    if (c->arg_len == 0) {
        /* The pre-RFC 5034 listing that Outlook-era clients send. */
        sess_reply(s, "+OK");
        if (pop3_auth_allowed(s))
            sess_reply(s, "PLAIN");
        if (pop3_auth_allowed(s) && s->conf->gssapi)
            sess_reply(s, "GSSAPI");
        sess_reply(s, ".");
        return SESS_AGAIN;
    }
    bool gss = s->conf->gssapi && fg_ieq(c->arg, mech_len, "GSSAPI");
    if (!gss && !fg_ieq(c->arg, mech_len, "PLAIN")) {
        sess_reply(s, "-ERR Unsupported authentication mechanism.");
        return SESS_AGAIN;
    }
    if (!pop3_auth_allowed(s)) {
        sess_reply(s, "-ERR [AUTH] Authentication is not allowed without TLS on this server.");
        return SESS_AGAIN;
    }
    ps->gss = gss;
    ps->gss_first = gss;
    if (sp)
        return pop3_sasl_response(ps, sp + 1, c->arg_len - mech_len - 1);
    pop3_sasl_enter(ps);
    sess_reply(s, "+ ");
    return SESS_AGAIN;
}

/* TRANSACTION-state commands: refused before login. */
static const char *const pop3_later_cmds[] = {
        "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "LAST",
};

static const struct pop3_cmd_def pop3_cmds[] = {
        {"CAPA", pop3_cmd_capa}, {"USER", pop3_cmd_user}, {"PASS", pop3_cmd_pass},
        {"AUTH", pop3_cmd_auth}, {"QUIT", pop3_cmd_quit}, {"STLS", pop3_cmd_stls},
};

/* Writes the command to the protocol log, hiding passwords and SASL data. */
static void pop3_log_command(struct session *s, const char *line, uint32_t n,
                             const struct pop3_cmd_def *def)
{
    if (def == NULL || (def->fn != pop3_cmd_pass && def->fn != pop3_cmd_auth)) {
        sess_log_client(s, line, FG_MIN(n, 300u));
        return;
    }
    char red[64];
    int len = snprintf(red, sizeof red, "%s <redacted>", def->name);
    sess_log_client(s, red, (size_t)len);
}

/* The line answering "+ " after AUTH PLAIN. */
static enum sess_action pop3_sasl_line(struct pop3_session *ps, const char *line, uint32_t n)
{
    sess_log_client(&ps->s, "<SASL response redacted>", 24);
    pop3_sasl_leave(ps);
    if (n == 1 && line[0] == '*') {
        sess_reply(&ps->s, "-ERR Authentication cancelled.");
        return SESS_AGAIN;
    }
    return pop3_sasl_response(ps, line, n);
}

static enum sess_action pop3_line(struct pop3_session *ps, const char *line,
                                  const struct pop3_cmd *cmd)
{
    struct session *s = &ps->s;
    uint32_t n = cmd->arg_off + cmd->arg_len;
    struct pop3_cmd_ctx c = {ps, line + cmd->arg_off, cmd->arg_len};

    if (ps->state == POP3_S_SASL)
        return pop3_sasl_line(ps, line, n);
    for (size_t i = 0; i < FG_ARRAY_SIZE(pop3_cmds); i++) {
        if (fg_ieq(line, cmd->name_len, pop3_cmds[i].name)) {
            pop3_log_command(s, line, n, &pop3_cmds[i]);
            if (cmd->has_nul)
                return pop3_invalid(s, "NUL bytes are not allowed.");
            return pop3_cmds[i].fn(&c);
        }
    }
    pop3_log_command(s, line, n, NULL);
    if (cmd->has_nul)
        return pop3_invalid(s, "NUL bytes are not allowed.");
    for (size_t i = 0; i < FG_ARRAY_SIZE(pop3_later_cmds); i++) {
        if (fg_ieq(line, cmd->name_len, pop3_later_cmds[i]))
            return pop3_invalid(s, "Command not valid in this state.");
    }
    return pop3_invalid(s, "Unknown command.");
}

static enum sess_action pop3_input(struct session *s)
{
    struct pop3_session *ps = pop3_of(s);

    while (ps->state != POP3_S_LOGIN && buf_avail(&s->in) > 0) {
        struct pop3_cmd cmd;
        int rc = pop3_parse_line(&ps->p, buf_head(&s->in), buf_avail(&s->in), &cmd);

        if (rc == POP3_PARSE_AGAIN)
            return SESS_AGAIN;
        if (rc == POP3_PARSE_TOO_LONG) {
            sess_reply(s, "-ERR Command line too long.");
            return SESS_CLOSE;
        }
        uint8_t invalid_before = s->invalid;
        enum sess_action act = pop3_line(ps, buf_head(&s->in), &cmd);
        if (act == SESS_CLOSE)
            return act;
        if (s->invalid == invalid_before)
            s->invalid = 0;
        buf_consume(&s->in, cmd.line_len);
        if (act == SESS_STARTTLS)
            buf_consume(&s->in, buf_avail(&s->in));
        if (act == SESS_LOGIN || act == SESS_STARTTLS)
            return act;
    }
    return SESS_AGAIN;
}

static void pop3_greeting(struct session *s)
{
    /* No APOP timestamp: APOP cannot be checked against a directory. */
    sess_reply(s, "+OK %s", s->conf->banner);
}

static void pop3_login_done(struct session *s, enum login_status st, const char *caps, size_t n)
{
    struct pop3_session *ps = pop3_of(s);
    (void)caps;
    (void)n;

    cred_free(s->cred);
    s->cred = NULL;
    ps->state = POP3_S_COMMAND;
    switch (st) {
    case LOGIN_OK:
        sess_reply(s, "+OK Logged in.");
        break;
    case LOGIN_DENIED:
        sess_reply(s, "-ERR [AUTH] You are not allowed to open this mailbox.");
        break;
    case LOGIN_EXPIRED:
        sess_reply(s, "-ERR [AUTH] The password has expired.");
        break;
    case LOGIN_UNAVAILABLE:
        sess_reply(s, "-ERR [SYS/TEMP] The server is unavailable. Try again later.");
        break;
    case LOGIN_IN_USE:
        sess_reply(s, "-ERR [IN-USE] The mailbox is in use.");
        break;
    case LOGIN_TOO_MANY:
        sess_reply(s, "-ERR [IN-USE] Too many connections for this user.");
        break;
    case LOGIN_FAILED:
    default:
        sess_reply(s, "-ERR [AUTH] Logon failure: unknown user name or bad password.");
        break;
    }
}

static void pop3_sasl_challenge(struct session *s, const uint8_t *tok, size_t n)
{
    struct pop3_session *ps = pop3_of(s);
    cred_free(s->cred);
    s->cred = NULL;
    pop3_sasl_enter(ps);
    sess_challenge(s, tok, n);
}

static struct session *pop3_create(const struct sess_conf *conf, struct buf *out)
{
    struct pop3_session *ps = sess_alloc(sizeof *ps, &pop3_sess_ops, conf, out);
    if (ps)
        pop3_parser_init(&ps->p, conf->max_command);
    return ps ? &ps->s : NULL;
}

static void pop3_destroy(struct session *s)
{
    sess_free(s, sizeof(struct pop3_session));
}

const struct sess_ops pop3_sess_ops = {
        .name = "pop3",
        .create = pop3_create,
        .destroy = pop3_destroy,
        .greeting = pop3_greeting,
        .input = pop3_input,
        .login_done = pop3_login_done,
        .sasl_challenge = pop3_sasl_challenge,
        .bye = {[SESS_BYE_TIMEOUT] = "-ERR Disconnected for inactivity.",
                [SESS_BYE_SHUTDOWN] = "-ERR [SYS/TEMP] Server shutting down.",
                [SESS_BYE_OVERLOAD] = "-ERR [SYS/TEMP] Too many connections.",
                [SESS_BYE_PER_IP] = "-ERR [SYS/TEMP] Too many connections from your address.",
                [SESS_BYE_KICKED] = "-ERR [SYS/TEMP] Disconnected by an administrator."},
};
