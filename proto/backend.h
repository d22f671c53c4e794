/*
 * The login dialogue with a backend server, one per protocol.
 *
 * Like the client sessions it is pure: the core appends the backend's bytes
 * to bl->in and calls ops->input; the dialogue appends what to send to
 * bl->out. It asks for STARTTLS/STLS first when told to, forwards the
 * client's address (IMAP ID, POP3 XCLIENT), then logs in, and reports the
 * outcome.
 */
#ifndef FG_BACKEND_H
#define FG_BACKEND_H

#include "imap_parse.h"
#include "pop3_parse.h"
#include "session.h"

enum backend_login_mode {
    BACKEND_LOGIN_PASSTHROUGH, /* the client's own name and password */
    BACKEND_LOGIN_MASTER,      /* SASL PLAIN: authzid = mailbox, authcid = master user */
};

/* Who to log in as, and what to forward. The strings must outlive the dialogue. */
struct backend_login_params {
    enum backend_login_mode mode;
    const char *user; /* pass-through: the login name; master: the mailbox */
    size_t user_len;
    const char *pass; /* pass-through only */
    size_t pass_len;
    const char *master_user;
    size_t master_user_len;
    const char *master_pass;
    size_t master_pass_len;
    bool forward;  /* send the client's address */
    bool starttls; /* STARTTLS/STLS after the greeting */
    const char *client_ip, *local_ip, *session_id;
    uint16_t client_port, local_port;
    unsigned ttl;
};

enum backend_login_result {
    BACKEND_AGAIN,    /* waiting for the backend */
    BACKEND_OK,       /* logged in; caps (IMAP) and any bytes after the reply are in bl */
    BACKEND_NO,       /* the backend refused: bl->status says how to tell the client */
    BACKEND_FAIL,     /* the backend broke the protocol or went away: UNAVAILABLE */
    BACKEND_STARTTLS, /* do the TLS handshake, then call ops->tls_done; every
                         byte the backend sent after its answer was dropped */
};

struct backend_login {
    const struct backend_login_ops *ops;
    const struct backend_login_params *par;
    struct buf in;   /* bytes from the backend; after OK, what follows the reply */
    struct buf *out; /* bytes to the backend */
    struct buf held; /* login command parts waiting for a "+" continuation */
    uint32_t held_parts[3];
    uint8_t nheld;
    uint8_t state;
    bool lit_plus, sasl_ir, auth_plain, has_id; /* backend capabilities */
    enum login_status status;                   /* with BACKEND_NO */
    struct imap_resp_scanner scan;
    struct pop3_parser pop3;
    char *caps; /* IMAP: the post-login capability list, malloc'd */
    size_t caps_len;
    char reason[160]; /* what went wrong, for the event log; never holds a password */
    sess_plog_fn *plog;
    void *plog_ctx;
};

/* The next complete response in bl->in: the bytes it takes (its CRLF and
 * any literal included) and the length of its text without the CRLF. */
struct backend_frame {
    uint32_t len, text;
};

struct backend_login_ops {
    /* Prepares bl; the backend speaks first. */
    void (*start)(struct backend_login *bl);
    /* Consumes complete responses from bl->in: backend_login_input, the one
     * loop both protocols share around their frame and line below. */
    enum backend_login_result (*input)(struct backend_login *bl);
    /* Finds the next response: FG_OK, FG_AGAIN (incomplete) or FG_ERROR
     * (longer than the protocol allows). */
    int (*frame)(struct backend_login *bl, struct backend_frame *f);
    /* Acts on one response's text. */
    enum backend_login_result (*line)(struct backend_login *bl, const char *line, uint32_t n);
    /* The STARTTLS handshake is done: the dialogue goes on inside TLS. */
    void (*tls_done)(struct backend_login *bl);
};

extern const struct backend_login_ops imap_backend_ops;
extern const struct backend_login_ops pop3_backend_ops;

/* Sets up a dialogue; out is where bytes to the backend go. */
void backend_login_init(struct backend_login *bl, const struct backend_login_ops *ops,
                        const struct backend_login_params *par, struct buf *out);

/* Consumes complete responses from bl->in, one at a time: each is logged,
 * handed to ops->line and consumed. After BACKEND_STARTTLS every byte that
 * came with it is dropped: it came in clear text. */
enum backend_login_result backend_login_input(struct backend_login *bl);

/* Wipes and frees what the dialogue holds. */
void backend_login_free(struct backend_login *bl);

/* Sends one line to the backend (CRLF added); secret lines are logged redacted. */
void backend_send(struct backend_login *bl, bool secret, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Logs a line from the backend. */
void backend_log_in(struct backend_login *bl, const char *line, size_t n);

/* Records why the login failed, for the event log. */
void backend_reason(struct backend_login *bl, const char *what, const char *line, size_t n);

#endif
