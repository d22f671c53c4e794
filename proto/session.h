/*
 * One interface for both protocols (as nginx's ngx_mail_protocol_t): core/ drives an IMAP or a POP3
 * client session through struct sess_ops without knowing which it is.
 *
 * A session is pure: it reads bytes from s->in and appends replies to s->out.
 * It never touches a socket, so the same code runs under a worker, in a unit
 * test and in a fuzzer. When it needs the login checked it returns SESS_LOGIN
 * with s->cred filled; the core resolves the login asynchronously and hands
 * the outcome back through ops->login_done.
 */
#ifndef FG_SESSION_H
#define FG_SESSION_H

#include "../base/buf.h"
#include "../base/cred.h"
#include "../base/login.h"

/* The settings a session reads. */
struct sess_conf {
    const char *banner;
    uint32_t max_command; /* MaxCommandSize: a command, literals included */
    uint8_t login_type;
    bool starttls; /* a certificate is configured: STARTTLS/STLS are offered */
    bool gssapi;   /* EnableGSSAPIAndNTLMAuth, with a key for the protocol's service */
};

/* A GSSAPI response line: base64 of a token of up to 48 KiB (Windows'
 * MaxTokenSize), beyond MaxCommandSize's default. */
#define SASL_GSS_TOKEN_MAX 49152
#define SASL_GSS_LINE_MAX  65600

enum sess_action {
    SESS_AGAIN,    /* waiting for more input */
    SESS_LOGIN,    /* s->cred is ready: start the login */
    SESS_CLOSE,    /* send what is queued, then close */
    SESS_STARTTLS, /* send what is queued, then the TLS handshake; the session
                      has dropped every byte that followed the command */
};

enum sess_bye {
    SESS_BYE_TIMEOUT,
    SESS_BYE_SHUTDOWN,
    SESS_BYE_OVERLOAD, /* sent without a session, to a connection refused at once */
    SESS_BYE_PER_IP,   /* the same, refused for its address (MaxConnectionFromSingleIP) */
    SESS_BYE_KICKED,   /* an administrator ended the session (kick) */
    SESS_BYE_COUNT,
};

/* Protocol log hook: dir is "C" (from client) or "S" (to client). */
typedef void sess_plog_fn(void *ctx, const char *dir, const char *line, size_t n);

struct session {
    const struct sess_ops *ops;
    const struct sess_conf *conf;
    struct buf in;     /* client bytes not yet consumed */
    struct buf *out;   /* replies go here */
    struct cred *cred; /* set from SESS_LOGIN until login_done */
    sess_plog_fn *plog;
    void *plog_ctx;
    uint8_t invalid;     /* invalid commands in a row */
    bool tls;            /* the client connection is encrypted: set by the core */
    char client_id[256]; /* the client's ID fields, for the log */
};

struct sess_ops {
    const char *name; /* "imap" or "pop3" */
    /* Allocates a session; returns NULL when out of memory. */
    struct session *(*create)(const struct sess_conf *conf, struct buf *out);
    void (*destroy)(struct session *s);
    void (*greeting)(struct session *s);
    /* Consumes complete commands from s->in, appending replies to s->out. */
    enum sess_action (*input)(struct session *s);
    /* The pending login finished. caps is the backend's post-login capability
     * list (IMAP), or NULL. The session wipes and frees s->cred. */
    void (*login_done)(struct session *s, enum login_status st, const char *caps, size_t caps_n);
    /* A multi-step SASL login (GSSAPI) goes on: the server's next challenge
     * is sent, and the session waits for the client's response. The session
     * wipes and frees s->cred. */
    void (*sasl_challenge)(struct session *s, const uint8_t *tok, size_t n);
    /* Last words before the core closes the connection, without CRLF. */
    const char *bye[SESS_BYE_COUNT];
};

extern const struct sess_ops imap_sess_ops;
extern const struct sess_ops pop3_sess_ops;

/* Appends a reply line (CRLF added) and writes it to the protocol log. */
void sess_reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes a client line to the protocol log, escaping control bytes. */
void sess_log_client(struct session *s, const char *line, size_t n);

/* Appends the session's last word for why. */
static inline void sess_bye(struct session *s, enum sess_bye why)
{
    sess_reply(s, "%s", s->ops->bye[why]);
}

/* Allocates a protocol's session of size bytes, whose struct begins with
 * struct session; NULL when out of memory. */
void *sess_alloc(size_t size, const struct sess_ops *ops, const struct sess_conf *conf,
                 struct buf *out);

/* Frees a session from sess_alloc of that size: input, credentials and the
 * protocol's state are wiped first. NULL is ignored. */
void sess_free(struct session *s, size_t size);

/* Sends a SASL challenge: "+ " and the token in base64. */
void sess_challenge(struct session *s, const uint8_t *tok, size_t n);

/* A GSSAPI response line, decoded into a fresh credential record (NULL: bad
 * base64, too long, or out of memory; *bad_b64 says which). "=" or an empty
 * line is an empty response. first: the exchange's first response. */
struct cred *sess_gss_cred(const char *b64, size_t n, bool first, bool *bad_b64);

/* Counts an invalid command; true when the limit of five in a row is hit. */
static inline bool sess_invalid(struct session *s)
{
    return ++s->invalid >= 5;
}

#endif
