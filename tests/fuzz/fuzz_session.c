/*
 * libFuzzer target: a whole client session (IMAP or POP3, picked by the
 * first byte) fed the rest in pieces; pending logins are answered with a
 * result taken from the input, and STARTTLS/STLS switches the session to TLS.
 */
#include "../../proto/session.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct sess_conf conf = {.banner = "fuzz",
                             .max_command = 300,
                             .login_type = (uint8_t)(data[0] >> 1) % 3,
                             .starttls = (data[0] & 0x80) != 0};
    const struct sess_ops *ops = (data[0] & 1) ? &pop3_sess_ops : &imap_sess_ops;
    struct buf out = {0};
    struct session *s = ops->create(&conf, &out);
    if (!s)
        return 0;
    s->tls = (data[1] & 1) != 0;
    ops->greeting(s);
    size_t off = 2, step = (size_t)(data[1] >> 1) % 13 + 1;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        buf_append(&s->in, data + off, n);
        off += n;
        enum sess_action act = ops->input(s);
        if (act == SESS_CLOSE)
            break;
        if (act == SESS_STARTTLS) {
            /* The session must have dropped everything after the command. */
            if (buf_avail(&s->in) != 0 || s->tls)
                abort();
            s->tls = true;
        }
        while (act == SESS_LOGIN) {
            if (!s->cred || s->cred->user_len > CRED_NAME_MAX || s->cred->pass_len > CRED_PASS_MAX)
                abort();
            ops->login_done(s, (enum login_status)(data[off % size] % 6), "IMAP4rev1", 9);
            act = ops->input(s);
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
