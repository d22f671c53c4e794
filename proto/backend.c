/* Parts of the backend login dialogue shared by IMAP and POP3. */
#include "backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void backend_login_init(struct backend_login *bl, const struct backend_login_ops *ops,
                        const struct backend_login_params *par, struct buf *out)
{
    memset(bl, 0, sizeof *bl);
    bl->ops = ops;
    bl->par = par;
    bl->out = out;
    bl->status = LOGIN_UNAVAILABLE;
    ops->start(bl);
}

enum backend_login_result backend_login_input(struct backend_login *bl)
{
    while (buf_avail(&bl->in) > 0) {
        struct backend_frame f;
        int rc = bl->ops->frame(bl, &f);
        if (rc == FG_AGAIN)
            return BACKEND_AGAIN;
        if (rc == FG_ERROR) {
            backend_reason(bl, "backend response too long", NULL, 0);
            return BACKEND_FAIL;
        }
        backend_log_in(bl, buf_head(&bl->in), f.text);
        enum backend_login_result res = bl->ops->line(bl, buf_head(&bl->in), f.text);
        buf_consume(&bl->in, f.len);
        if (res == BACKEND_STARTTLS)
            buf_consume(&bl->in, buf_avail(&bl->in));
        if (res != BACKEND_AGAIN)
            return res;
    }
    return BACKEND_AGAIN;
}

void backend_login_free(struct backend_login *bl)
{
    buf_free(&bl->in);
    buf_free(&bl->held);
    free(bl->caps);
    bl->caps = NULL;
    bl->caps_len = 0;
}

void backend_send(struct backend_login *bl, bool secret, const char *fmt, ...)
{
    va_list ap;
    uint32_t before = buf_avail(bl->out);

    va_start(ap, fmt);
    int rc = buf_vprintf(bl->out, fmt, ap);
    va_end(ap);
    if (rc != FG_OK)
        return;
    if (bl->plog)
        bl->plog(bl->plog_ctx, "B>",
                 secret ? "<login command redacted>" : buf_head(bl->out) + before,
                 secret ? 24 : buf_avail(bl->out) - before);
    buf_append(bl->out, "\r\n", 2);
}

void backend_log_in(struct backend_login *bl, const char *line, size_t n)
{
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (bl->plog)
        bl->plog(bl->plog_ctx, "B<", line, FG_MIN(n, 300u));
}

void backend_reason(struct backend_login *bl, const char *what, const char *line, size_t n)
{
    size_t o = (size_t)snprintf(bl->reason, sizeof bl->reason, "%s", what);
    if (line && o + 2 < sizeof bl->reason) {
        bl->reason[o++] = ':';
        bl->reason[o++] = ' ';
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        for (size_t i = 0; i < n && o + 1 < sizeof bl->reason; i++) {
            unsigned char c = (unsigned char)line[i];
            bl->reason[o++] = (c < 0x20 || c == 0x7f || c == '"') ? '_' : (char)c;
        }
        bl->reason[o] = 0;
    }
}
