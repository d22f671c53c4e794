/*
 * IMAP4 command parser (RFC 3501 section 9, RFC 9051, RFC 7888 literals).
 *
 * One state machine scans the command a byte at a time and never goes back.
 * Errors do not stop the scan at once: the rest of the line is consumed first
 * (state SKIP) so that the caller can answer and carry on with the next
 * command, the way a client expects. Only a command over the size limit, or
 * a non-synchronising literal whose data is already on its way, is fatal.
 */
#include "imap_parse.h"

#include <string.h>

enum imap_state {
    ST_TAG,
    ST_NAME,
    ST_ARG_START, /* after SP or "(" */
    ST_AFTER_ARG, /* after an argument or ")" */
    ST_ATOM,
    ST_QUOTED,
    ST_QUOTED_ESC,
    ST_LIT_LEN,   /* reading {digits */
    ST_LIT_CLOSE, /* read "+", expecting "}" */
    ST_LIT_CR,
    ST_LIT_LF,
    ST_LIT_DATA,
    ST_CR, /* CR seen at end of line, expecting LF */
    ST_SKIP,
    ST_LINE, /* line mode */
};

bool imap_is_atom_char(unsigned char c)
{
    if (c <= 0x1f || c >= 0x7f)
        return false;
    switch (c) {
    case '(':
    case ')':
    case '{':
    case ' ':
    case '%':
    case '*':
    case '"':
    case '\\':
    case ']':
        return false;
    default:
        return true;
    }
}

bool imap_is_tag_char(unsigned char c)
{
    /* Stricter than RFC 3501: tags are echoed, and no client uses markup
     * characters in them, so refusing < > & ' keeps a browser's cross-protocol
     * POST to port 143 from getting its own HTML reflected back. */
    if (c == '<' || c == '>' || c == '&' || c == '\'')
        return false;
    return (imap_is_atom_char(c) || c == ']') && c != '+';
}

/*
 * An argument atom also takes '\': RFC 3501 makes it a quoted-special, but
 * Exchange accepts `a LOGIN DOMAIN\user pass` unquoted, and clients and
 * scripts send logon names that way (Python's imaplib among them).
 */
static bool imap_is_arg_char(unsigned char c)
{
    return imap_is_atom_char(c) || c == ']' || c == '\\';
}

void imap_parser_init(struct imap_parser *p, uint32_t max_len)
{
    memset(p, 0, sizeof *p);
    p->max_len = max_len;
}

void imap_parser_reset(struct imap_parser *p)
{
    uint32_t max = p->max_len;
    /* args[] needs no clearing: nargs bounds every read of it. */
    p->pos = p->tok = p->wr = p->lit_left = 0;
    p->lit_len = 0;
    p->state = ST_TAG;
    p->depth = p->nargs = p->err = 0;
    p->lit_nonsync = p->line_mode = false;
    p->max_len = max;
}

void imap_parser_expect_line(struct imap_parser *p)
{
    imap_parser_reset(p);
    p->line_mode = true;
    p->state = ST_LINE;
}

/* Records the first error of the line and skips to its end. */
static void imap_fail(struct imap_parser *p, enum imap_parse_err err)
{
    if (p->err == IMAP_ERR_NONE)
        p->err = (uint8_t)err;
    p->state = ST_SKIP;
}

static bool imap_push_arg(struct imap_parser *p, enum imap_arg_type t, uint32_t off, uint32_t len)
{
    if (p->nargs >= IMAP_MAX_ARGS) {
        imap_fail(p, IMAP_ERR_ARGS);
        return false;
    }
    p->args[p->nargs].type = (uint8_t)t;
    p->args[p->nargs].off = off;
    p->args[p->nargs].len = len;
    p->nargs++;
    return true;
}

/* The line ended at the LF just consumed. */
static int imap_end_of_line(struct imap_parser *p)
{
    if (p->err == IMAP_ERR_NONE && p->depth != 0)
        p->err = IMAP_ERR_SYNTAX;
    if (p->err == IMAP_ERR_NONE && p->nargs < 2)
        p->err = IMAP_ERR_SYNTAX;
    if (p->err == IMAP_ERR_TAG)
        p->nargs = 0;
    return p->err == IMAP_ERR_NONE ? IMAP_PARSE_DONE : IMAP_PARSE_ERROR;
}

/* A literal header {n} or {n+} and its CRLF have been read. */
static int imap_literal_header(struct imap_parser *p)
{
    bool too_big = (uint64_t)p->pos + p->lit_len > p->max_len;

    if (too_big && p->lit_nonsync) {
        p->err = IMAP_ERR_LITERAL_NS;
        return IMAP_PARSE_ERROR;
    }
    if (!p->lit_nonsync && (too_big || p->err != IMAP_ERR_NONE)) {
        /* The client waits for "+" before it sends more: from its point of
         * view the line ends here, so answer now. */
        if (p->err == IMAP_ERR_NONE)
            p->err = IMAP_ERR_LITERAL;
        if (p->err == IMAP_ERR_TAG)
            p->nargs = 0;
        return IMAP_PARSE_ERROR;
    }
    p->lit_left = (uint32_t)p->lit_len;
    if (p->err == IMAP_ERR_NONE)
        imap_push_arg(p, IMAP_ARG_LITERAL, p->pos, p->lit_left);
    p->state = ST_LIT_DATA;
    return p->lit_nonsync ? IMAP_PARSE_AGAIN : IMAP_PARSE_CONTINUE;
}

/* Consumes literal data in bulk; returns the new position. */
static uint32_t imap_literal_data(struct imap_parser *p, const char *buf, size_t len)
{
    uint32_t n = (uint32_t)FG_MIN((size_t)p->lit_left, len - p->pos);
    if (memchr(buf + p->pos, 0, n) != NULL && p->err == IMAP_ERR_NONE)
        p->err = IMAP_ERR_NUL;
    p->lit_left -= n;
    if (p->lit_left == 0)
        p->state = p->err == IMAP_ERR_NONE ? ST_AFTER_ARG : ST_SKIP;
    return p->pos + n;
}

/* The first byte of an argument. Returns false when the line ended. */
static void imap_arg_start(struct imap_parser *p, unsigned char c)
{
    switch (c) {
    case '"':
        p->tok = p->pos + 1;
        p->wr = p->tok;
        p->state = ST_QUOTED;
        break;
    case '{':
        p->lit_len = 0;
        p->tok = p->pos + 1;
        p->lit_nonsync = false;
        p->state = ST_LIT_LEN;
        break;
    case '(':
        if (p->depth >= IMAP_MAX_LIST_DEPTH) {
            imap_fail(p, IMAP_ERR_ARGS);
            break;
        }
        if (imap_push_arg(p, IMAP_ARG_LIST, p->pos, 0))
            p->depth++;
        break;
    case ')':
        /* Only an empty list may close right after its "(". */
        if (p->depth == 0 || p->args[p->nargs - 1].type != IMAP_ARG_LIST) {
            imap_fail(p, IMAP_ERR_SYNTAX);
            break;
        }
        if (imap_push_arg(p, IMAP_ARG_LIST_END, p->pos, 0)) {
            p->depth--;
            p->state = ST_AFTER_ARG;
        }
        break;
    default:
        if (imap_is_arg_char(c)) {
            p->tok = p->pos;
            p->state = ST_ATOM;
        } else {
            imap_fail(p, c == 0 ? IMAP_ERR_NUL : IMAP_ERR_SYNTAX);
        }
    }
}

static void imap_after_arg(struct imap_parser *p, unsigned char c)
{
    if (c == ' ') {
        p->state = ST_ARG_START;
    } else if (c == ')' && p->depth > 0) {
        if (imap_push_arg(p, IMAP_ARG_LIST_END, p->pos, 0))
            p->depth--;
    } else {
        imap_fail(p, IMAP_ERR_SYNTAX);
    }
}

static void imap_lit_len(struct imap_parser *p, unsigned char c)
{
    if (c >= '0' && c <= '9' && p->pos - p->tok < 10) {
        p->lit_len = p->lit_len * 10 + (uint64_t)(c - '0');
    } else if (c == '+' && p->pos > p->tok) {
        p->lit_nonsync = true;
        p->state = ST_LIT_CLOSE;
    } else if (c == '}' && p->pos > p->tok) {
        p->state = ST_LIT_CR;
    } else {
        imap_fail(p, IMAP_ERR_SYNTAX);
    }
}

static void imap_quoted(struct imap_parser *p, char *buf, unsigned char c)
{
    if (c == '"') {
        if (imap_push_arg(p, IMAP_ARG_QUOTED, p->tok, p->wr - p->tok))
            p->state = ST_AFTER_ARG;
    } else if (c == '\\') {
        p->state = ST_QUOTED_ESC;
    } else if (c == 0) {
        imap_fail(p, IMAP_ERR_NUL);
    } else {
        /* 8-bit bytes are accepted, as UTF8=ACCEPT servers and Dovecot do. */
        buf[p->wr++] = (char)c;
    }
}

/* Takes a CR where the line may end. Returns true when the byte was taken. */
static bool imap_eol_byte(struct imap_parser *p, unsigned char c)
{
    if (c != '\r')
        return false;
    p->state = ST_CR;
    return true;
}

/*
 * A line that failed to parse ends in a literal header: its data belongs to
 * the bad command and must be skipped, or it would be read as commands.
 * Returns true when a literal follows (p->lit_left is set).
 */
static bool imap_skip_literal(struct imap_parser *p, const char *buf, uint32_t lf)
{
    uint64_t n;
    bool sync;

    /* {n} needs our "+", which a failed command never gets. */
    if (imap_literal_at_end(buf, lf, &n, &sync) != 1 || sync)
        return false;
    if ((uint64_t)p->pos + n > p->max_len) {
        p->err = IMAP_ERR_LITERAL_NS;
        return true;
    }
    p->lit_left = (uint32_t)n;
    p->state = ST_LIT_DATA;
    return true;
}

/* The LF at p->pos - 1 ended a line. Returns a parse result, or -1 to go on. */
static int imap_on_lf(struct imap_parser *p, const char *buf)
{
    uint32_t lf = p->pos - 1;
    uint32_t e = (lf > 0 && buf[lf - 1] == '\r') ? lf - 1 : lf;

    switch (p->state) {
    case ST_LINE:
        p->nargs = 1;
        p->args[0] = (struct imap_arg){IMAP_ARG_ATOM, 0, e};
        return p->err == IMAP_ERR_NONE ? IMAP_PARSE_DONE : IMAP_PARSE_ERROR;
    case ST_LIT_CR:
    case ST_LIT_LF: {
        int rc = imap_literal_header(p);
        return rc == IMAP_PARSE_AGAIN ? -1 : rc;
    }
    case ST_NAME:
    case ST_ATOM:
        if (e <= p->tok)
            imap_fail(p, IMAP_ERR_SYNTAX);
        else
            imap_push_arg(p, IMAP_ARG_ATOM, p->tok, e - p->tok);
        break;
    case ST_TAG:
        imap_fail(p, IMAP_ERR_TAG);
        break;
    case ST_SKIP:
        if (imap_skip_literal(p, buf, lf))
            return p->err == IMAP_ERR_LITERAL_NS ? IMAP_PARSE_ERROR : -1;
        break;
    case ST_AFTER_ARG:
    case ST_ARG_START: /* a trailing space is tolerated */
    case ST_CR:
        break;
    default: /* inside a string or a literal header */
        imap_fail(p, IMAP_ERR_SYNTAX);
    }
    return imap_end_of_line(p);
}

/* Feeds one byte that is not an LF to the state machine. */
static void imap_step(struct imap_parser *p, char *buf, unsigned char c)
{
    switch (p->state) {
    case ST_LINE:
        if (c == 0 && p->err == IMAP_ERR_NONE)
            p->err = IMAP_ERR_NUL;
        break;
    case ST_TAG:
        if (c == ' ' && p->pos > 0) {
            imap_push_arg(p, IMAP_ARG_ATOM, 0, p->pos);
            p->tok = p->pos + 1;
            p->state = ST_NAME;
        } else if (c == '\r') {
            p->state = ST_CR;
        } else if (!imap_is_tag_char(c) || p->pos >= IMAP_MAX_TAG) {
            imap_fail(p, IMAP_ERR_TAG);
        }
        break;
    case ST_NAME:
        if ((c == ' ' || c == '\r') && p->pos > p->tok) {
            imap_push_arg(p, IMAP_ARG_ATOM, p->tok, p->pos - p->tok);
            p->state = c == ' ' ? ST_ARG_START : ST_CR;
        } else if (!imap_is_atom_char(c)) {
            imap_fail(p, IMAP_ERR_SYNTAX);
        }
        break;
    case ST_ARG_START:
        if (!imap_eol_byte(p, c))
            imap_arg_start(p, c);
        break;
    case ST_AFTER_ARG:
        if (!imap_eol_byte(p, c))
            imap_after_arg(p, c);
        break;
    case ST_ATOM:
        if (imap_is_arg_char(c))
            break;
        if (imap_push_arg(p, IMAP_ARG_ATOM, p->tok, p->pos - p->tok)) {
            p->state = ST_AFTER_ARG;
            if (!imap_eol_byte(p, c))
                imap_after_arg(p, c);
        }
        break;
    case ST_QUOTED:
        if (c == '\r')
            imap_fail(p, IMAP_ERR_SYNTAX);
        else
            imap_quoted(p, buf, c);
        break;
    case ST_QUOTED_ESC:
        if (c == '"' || c == '\\') {
            buf[p->wr++] = (char)c;
            p->state = ST_QUOTED;
        } else {
            imap_fail(p, IMAP_ERR_SYNTAX);
        }
        break;
    case ST_LIT_LEN:
        imap_lit_len(p, c);
        break;
    case ST_LIT_CLOSE:
        if (c == '}')
            p->state = ST_LIT_CR;
        else
            imap_fail(p, IMAP_ERR_SYNTAX);
        break;
    case ST_LIT_CR:
        if (c == '\r')
            p->state = ST_LIT_LF;
        else
            imap_fail(p, IMAP_ERR_SYNTAX);
        break;
    case ST_LIT_LF: /* a CR not followed by LF */
    case ST_CR:
        imap_fail(p, IMAP_ERR_SYNTAX);
        break;
    default: /* ST_SKIP */
        break;
    }
}

int imap_parse_command(struct imap_parser *p, char *buf, size_t len)
{
    size_t end = FG_MIN(len, (size_t)p->max_len);

    while (p->pos < end) {
        if (p->state == ST_LIT_DATA) {
            p->pos = imap_literal_data(p, buf, end);
            continue;
        }
        if (p->state == ST_SKIP || p->state == ST_LINE) {
            /* Nothing to parse until the end of the line: jump there. */
            const char *lf = memchr(buf + p->pos, '\n', end - p->pos);
            uint32_t stop = lf ? (uint32_t)(lf - buf) : (uint32_t)end;
            if (p->state == ST_LINE && memchr(buf + p->pos, 0, stop - p->pos))
                p->err = IMAP_ERR_NUL;
            p->pos = stop;
            if (!lf)
                break;
        }
        unsigned char c = (unsigned char)buf[p->pos];
        if (c == '\n') {
            p->pos++;
            int rc = imap_on_lf(p, buf);
            if (rc >= 0)
                return rc;
            continue;
        }
        imap_step(p, buf, c); /* sees p->pos as the position of c */
        p->pos++;
    }
    if (p->pos >= p->max_len) {
        p->err = IMAP_ERR_TOO_LONG;
        return IMAP_PARSE_ERROR;
    }
    return IMAP_PARSE_AGAIN;
}

int imap_resp_scan(struct imap_resp_scanner *s, const char *buf, size_t len, uint32_t *len_r)
{
    while (s->pos < len) {
        if (s->lit_left > 0) {
            uint32_t n = (uint32_t)FG_MIN((size_t)s->lit_left, len - s->pos);
            s->lit_left -= n;
            s->pos += n;
            continue;
        }
        const char *lf = memchr(buf + s->pos, '\n', len - s->pos);
        if (!lf) {
            s->pos = (uint32_t)len;
            break;
        }
        uint32_t eol = (uint32_t)(lf - buf);
        s->pos = eol + 1;
        /* A line that ends in {n} (CRLF after it) continues after n bytes;
         * a server never sends the client's {n+}. */
        uint64_t n;
        bool sync;
        if (imap_literal_at_end(buf, eol, &n, &sync) != 1 || !sync) {
            *len_r = s->pos;
            return s->pos > s->max_len ? FG_ERROR : FG_OK;
        }
        if (n > s->max_len)
            return FG_ERROR;
        s->lit_left = (uint32_t)n;
    }
    return s->pos > s->max_len ? FG_ERROR : FG_AGAIN;
}

int imap_literal_at_end(const char *line, size_t n, uint64_t *size_r, bool *sync_r)
{
    if (n > 0 && line[n - 1] == '\r')
        n--;
    if (n < 3 || line[n - 1] != '}')
        return 0;
    size_t e = n - 1;
    bool sync = line[e - 1] != '+';
    e -= !sync;
    size_t i = e;
    while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9')
        i--;
    if (i == e || i == 0 || line[i - 1] != '{')
        return 0;
    if (e - i > 10)
        return -1;
    uint64_t v = 0;
    for (size_t k = i; k < e; k++)
        v = v * 10 + (uint64_t)(line[k] - '0');
    *size_r = v;
    *sync_r = sync;
    return 1;
}

enum imap_astring_kind imap_astring_kind(const char *s, size_t n)
{
    enum imap_astring_kind k = n == 0 ? IMAP_ASTRING_QUOTED : IMAP_ASTRING_ATOM;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e)
            return IMAP_ASTRING_LITERAL;
        if (!imap_is_atom_char(c))
            k = IMAP_ASTRING_QUOTED;
    }
    return k;
}

size_t imap_quote(const char *s, size_t n, char *dst)
{
    size_t o = 0;
    dst[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            dst[o++] = '\\';
        dst[o++] = s[i];
    }
    dst[o++] = '"';
    return o;
}
