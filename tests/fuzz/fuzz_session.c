/*
 * libFuzzer target: a whole client session (IMAP or POP3, picked by the
 * first byte) fed the rest in pieces; pending logins are answered with a
 * result taken from the input, and STARTTLS/STLS switches the session to TLS.
 * With GSSAPI offered (a bit of the second byte), a GSSAPI step may instead
 * be answered with a challenge made of input bytes, as the core does while
 * the Kerberos exchange goes on.
 * While the session reads its input buffer, the bytes it has consumed and
 * the buffer's spare room are fenced off (ASan), and every protocol log
 * line is read whole.
 */
#include "../../proto/session.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The protocol log: each line must be readable for its length. */
static void plog(void *ctx, const char *dir, const char *line, size_t n)
{
    *(uint64_t *)ctx = fz_hash(fz_hash(*(uint64_t *)ctx, dir, strlen(dir)), line, n);
}

/* Runs the session over its input with the buffer fenced. */
static enum sess_action input(struct session *s)
{
    FZ_BUF_FENCE(&s->in);
    enum sess_action act = s->ops->input(s);
    FZ_BUF_UNFENCE(&s->in);
    return act;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct sess_conf conf = {.banner = "fuzz",
                             .max_command = 300,
                             .login_type = (uint8_t)(data[0] >> 1) % 3,
                             .starttls = (data[0] & 0x80) != 0,
                             .gssapi = (data[1] & 0x40) != 0};
    const struct sess_ops *ops = (data[0] & 1) ? &pop3_sess_ops : &imap_sess_ops;
    struct buf out = {0};
    struct session *s = ops->create(&conf, &out);
    if (!s)
        return 0;
    uint64_t logged = 0;
    s->plog = plog;
    s->plog_ctx = &logged;
    s->tls = (data[1] & 1) != 0;
    ops->greeting(s);
    size_t off = 2, step = (size_t)(data[1] >> 1) % 13 + 1;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        buf_append(&s->in, data + off, n);
        off += n;
        enum sess_action act = input(s);
        if (act == SESS_CLOSE)
            break;
        if (act == SESS_STARTTLS) {
            /* The session must have dropped everything after the command. */
            FZ_CHECK(buf_avail(&s->in) == 0 && !s->tls);
            s->tls = true;
        }
        while (act == SESS_LOGIN) {
            FZ_CHECK(s->cred && s->cred->user_len <= CRED_NAME_MAX &&
                     s->cred->pass_len <= CRED_PASS_MAX);
            FZ_CHECK(s->cred->mech != CRED_MECH_GSSAPI ||
                     (conf.gssapi && s->cred->blob_len <= SASL_GSS_TOKEN_MAX &&
                      (s->cred->blob != NULL) == (s->cred->blob_len > 0)));
            uint8_t pick = data[off % size];
            if (s->cred->mech == CRED_MECH_GSSAPI && (pick & 1)) {
                size_t cn = FG_MIN((size_t)(pick >> 1), size - off);
                ops->sasl_challenge(s, data + off, cn);
            } else {
                ops->login_done(s, (enum login_status)(pick % (LOGIN_TOO_MANY + 1)), "IMAP4rev1",
                                9);
            }
            act = input(s);
        }
        if (act == SESS_CLOSE)
            break;
        buf_consume(&out, buf_avail(&out));
    }
    sess_bye(s, SESS_BYE_TIMEOUT);
    ops->destroy(s);
    buf_free(&out);
    return 0;
}
