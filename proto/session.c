/* Helpers shared by the IMAP and POP3 sessions. */
#include "session.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void sess_reply(struct session *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 3)
        n = (int)sizeof line - 3;
    if (s->plog)
        s->plog(s->plog_ctx, "S", line, (size_t)n);
    line[n++] = '\r';
    line[n++] = '\n';
    buf_append(s->out, line, (size_t)n);
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

void sess_release(struct session *s)
{
    buf_free(&s->in);
    cred_free(s->cred);
    s->cred = NULL;
}
