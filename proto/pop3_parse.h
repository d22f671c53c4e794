/*
 * POP3 command-line parser (RFC 1939, RFC 2449). Pure and resumable: the
 * caller passes the bytes of the current line from its start; bytes already
 * scanned are not scanned again.
 */
#ifndef FG_POP3_PARSE_H
#define FG_POP3_PARSE_H

#include "../base/common.h"

struct pop3_parser {
    uint32_t pos;     /* bytes scanned, none of them an LF */
    uint32_t max_len; /* cap on a line, CRLF included */
};

struct pop3_cmd {
    uint32_t line_len; /* bytes the line took, CRLF included: the caller consumes them */
    uint32_t name_len; /* the keyword is buf[0 .. name_len) */
    uint32_t arg_off;  /* the argument is everything after the first space */
    uint32_t arg_len;
    bool has_nul;
};

enum pop3_parse_rc {
    POP3_PARSE_AGAIN,
    POP3_PARSE_DONE,
    POP3_PARSE_TOO_LONG, /* fatal: no line end within max_len bytes */
};

static inline void pop3_parser_init(struct pop3_parser *p, uint32_t max_len)
{
    p->pos = 0;
    p->max_len = max_len;
}

/*
 * Parses the line starting at buf[0]. On DONE, fills *cmd and rewinds the
 * parser for the next line. A bare LF is accepted as a line end.
 */
int pop3_parse_line(struct pop3_parser *p, const char *buf, size_t len, struct pop3_cmd *cmd);

#endif
