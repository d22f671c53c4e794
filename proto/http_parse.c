/* The request head's state machine. See http_parse.h. */
#include "http_parse.h"

#include <string.h>

enum http_state {
    HS_METHOD,
    HS_PATH,
    HS_VERSION,
    HS_LINE_LF,  /* after a CR ending a line */
    HS_LINE,     /* at a line's start: a header, or the blank line */
    HS_NAME,     /* a header's name */
    HS_VALUE,    /* a header's value */
    HS_BLANK_LF, /* after the blank line's CR */
};

void http_parse_init(struct http_parse *p)
{
    memset(p, 0, sizeof *p);
    p->state = HS_METHOD;
}

/* RFC 9110's tchar: what a method and a header name are made of. */
static bool http_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static enum http_rc http_fail(struct http_parse *p, uint16_t status)
{
    p->status = status;
    return HTTP_ERROR;
}

static enum http_rc http_method_byte(struct http_parse *p, unsigned char ch)
{
    if (ch == ' ' && p->mlen > 0) {
        p->method = p->mlen == 3 && memcmp(p->mbuf, "GET", 3) == 0    ? HTTP_GET
                    : p->mlen == 4 && memcmp(p->mbuf, "HEAD", 4) == 0 ? HTTP_HEAD
                                                                      : HTTP_OTHER;
        p->state = HS_PATH;
        return HTTP_AGAIN;
    }
    if (!http_tchar(ch) || p->mlen >= HTTP_METHOD_MAX)
        return http_fail(p, 400);
    p->mbuf[p->mlen++] = (char)ch;
    return HTTP_AGAIN;
}

static enum http_rc http_path_byte(struct http_parse *p, unsigned char ch)
{
    if (ch == ' ' && p->plen > 0) {
        p->path[p->plen] = 0;
        p->state = HS_VERSION;
        return HTTP_AGAIN;
    }
    if (ch <= ' ' || ch >= 0x7f)
        return http_fail(p, 400);
    if (p->plen < HTTP_PATH_MAX)
        p->path[p->plen++] = (char)ch;
    else
        p->path_long = true;
    return HTTP_AGAIN;
}

/* "HTTP/1.0" or "HTTP/1.1", then the line's end. */
static enum http_rc http_version_byte(struct http_parse *p, unsigned char ch)
{
    static const char want[] = "HTTP/1.";
    if (p->vlen < sizeof want - 1) {
        if (ch != (unsigned char)want[p->vlen++])
            return http_fail(p, 400);
        return HTTP_AGAIN;
    }
    if (p->vlen == sizeof want - 1) {
        if (ch != '0' && ch != '1')
            return http_fail(p, 400);
        p->minor = (uint8_t)(ch - '0');
        p->vlen++;
        return HTTP_AGAIN;
    }
    if (ch == '\r')
        p->state = HS_LINE_LF;
    else if (ch == '\n')
        p->state = HS_LINE;
    else
        return http_fail(p, 400);
    return HTTP_AGAIN;
}

/* A header line's bytes, and the blank line that ends the head. */
static enum http_rc http_header_byte(struct http_parse *p, unsigned char ch)
{
    switch (p->state) {
    case HS_LINE_LF:
        if (ch != '\n')
            return http_fail(p, 400);
        p->state = HS_LINE;
        return HTTP_AGAIN;
    case HS_LINE:
        if (ch == '\r') {
            p->state = HS_BLANK_LF;
            return HTTP_AGAIN;
        }
        if (ch == '\n')
            return HTTP_DONE;
        if (!http_tchar(ch))
            return http_fail(p, 400); /* obsolete line folding included */
        p->state = HS_NAME;
        return HTTP_AGAIN;
    case HS_NAME:
        if (ch == ':')
            p->state = HS_VALUE;
        else if (!http_tchar(ch))
            return http_fail(p, 400);
        return HTTP_AGAIN;
    case HS_VALUE:
        if (ch == '\r')
            p->state = HS_LINE_LF;
        else if (ch == '\n')
            p->state = HS_LINE;
        else if ((ch < ' ' && ch != '\t') || ch == 0x7f)
            return http_fail(p, 400);
        return HTTP_AGAIN;
    case HS_BLANK_LF:
        return ch == '\n' ? HTTP_DONE : http_fail(p, 400);
    }
    return http_fail(p, 400);
}

enum http_rc http_parse_feed(struct http_parse *p, const char *data, size_t n, size_t *used_r)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)data[i];
        enum http_rc rc;
        if (p->used >= HTTP_HEAD_MAX)
            return http_fail(p, 431);
        p->used++;
        if (p->state == HS_METHOD)
            rc = http_method_byte(p, ch);
        else if (p->state == HS_PATH)
            rc = http_path_byte(p, ch);
        else if (p->state == HS_VERSION)
            rc = http_version_byte(p, ch);
        else
            rc = http_header_byte(p, ch);
        if (rc != HTTP_AGAIN) {
            *used_r = i + 1;
            return rc;
        }
    }
    *used_r = n;
    return HTTP_AGAIN;
}

bool http_parse_path_is(const struct http_parse *p, const char *path)
{
    size_t n = strcspn(p->path, "?");
    return !p->path_long && strlen(path) == n && memcmp(p->path, path, n) == 0;
}
