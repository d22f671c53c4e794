/* Helpers shared by the IMAP and POP3 sessions. */
#include "session.h"

#include "../base/base64.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sess_reply(struct session *s, const char *fmt, ...)
{
    va_list ap;
    uint32_t before = buf_avail(s->out);

    va_start(ap, fmt);
    int rc = buf_vprintf(s->out, fmt, ap);
    va_end(ap);
    if (rc != FG_OK)
        return;
    if (s->plog)
        s->plog(s->plog_ctx, "S", buf_head(s->out) + before, buf_avail(s->out) - before);
    buf_append(s->out, "\r\n", 2);
}

void sess_log_client(struct session *s, const char *line, size_t n)
{
    if (!s->plog)
        return;
    char esc[512];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < sizeof esc; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(esc + o, sizeof esc - o, "\\x%02x", c);
        } else {
            esc[o++] = (char)c;
        }
    }
    s->plog(s->plog_ctx, "C", esc, o);
}

void *sess_alloc(size_t size, const struct sess_ops *ops, const struct sess_conf *conf,
                 struct buf *out)
{
    struct session *s = calloc(1, size);
    if (!s)
        return NULL;
    s->ops = ops;
    s->conf = conf;
    s->out = out;
    return s;
}

static void sess_release(struct session *s)
{
    buf_free(&s->in);
    cred_free(s->cred);
    s->cred = NULL;
}

void sess_free(struct session *s, size_t size)
{
    if (!s)
        return;
    sess_release(s);
    explicit_bzero(s, size);
    free(s);
}

void sess_challenge(struct session *s, const uint8_t *tok, size_t n)
{
    char *b64 = malloc(base64_encoded_len(n) + 1);
    if (!b64) {
        sess_reply(s, "+ ");
        return;
    }
    base64_encode(tok, n, b64);
    b64[base64_encoded_len(n)] = 0;
    sess_reply(s, "+ %s", b64);
    free(b64);
}

struct cred *sess_gss_cred(const char *b64, size_t n, bool first, bool *bad_b64)
{
    struct cred *cr;
    *bad_b64 = false;
    if (n == 1 && b64[0] == '=')
        n = 0;
    if (n > 0 && base64_decoded_max(n) == 0) {
        *bad_b64 = true;
        return NULL;
    }
    if (base64_decoded_max(n) > SASL_GSS_TOKEN_MAX || !(cr = cred_new()))
        return NULL;
    cr->mech = CRED_MECH_GSSAPI;
    cr->gss_first = first;
    if (n > 0) {
        long len =
                (cr->blob = malloc(base64_decoded_max(n))) ? base64_decode(b64, n, cr->blob) : -1;
        if (len < 0) {
            *bad_b64 = cr->blob != NULL;
            cred_free(cr);
            return NULL;
        }
        cr->blob_len = (uint32_t)len;
    }
    return cr;
}
