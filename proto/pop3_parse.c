#include "pop3_parse.h"

#include <string.h>

int pop3_parse_line(struct pop3_parser *p, const char *buf, size_t len, struct pop3_cmd *cmd)
{
    size_t end = FG_MIN(len, (size_t)p->max_len);
    const char *lf = p->pos < end ? memchr(buf + p->pos, '\n', end - p->pos) : NULL;

    if (!lf) {
        p->pos = (uint32_t)end;
        return end >= p->max_len ? POP3_PARSE_TOO_LONG : POP3_PARSE_AGAIN;
    }
    uint32_t n = (uint32_t)(lf - buf);
    cmd->line_len = n + 1;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    const char *sp = memchr(buf, ' ', n);
    cmd->name_len = sp ? (uint32_t)(sp - buf) : n;
    cmd->arg_off = sp ? cmd->name_len + 1 : n;
    cmd->arg_len = n - cmd->arg_off;
    cmd->has_nul = memchr(buf, 0, n) != NULL;
    p->pos = 0;
    return POP3_PARSE_DONE;
}
