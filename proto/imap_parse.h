/*
 * IMAP4 byte parsers: client commands, backend response lines, and the
 * astring encoder used when credentials are re-sent to a backend.
 *
 * The command parser is pure and resumable (no I/O, as Dovecot's imap-parser): the caller
 * hands it the bytes of the current command, from its first byte, as many as
 * have arrived; the parser scans only what it has not seen before and keeps
 * its state in struct imap_parser. Arguments are slices (offset, length) into
 * the caller's buffer; quoted strings are unescaped in place. The parser never
 * reads or writes a socket.
 */
#ifndef FG_IMAP_PARSE_H
#define FG_IMAP_PARSE_H

#include "../base/common.h"

/* Enough for ID with its 30 field/value pairs, two list markers, tag and name. */
#define IMAP_MAX_ARGS       70
#define IMAP_MAX_TAG        64
#define IMAP_MAX_LIST_DEPTH 4

enum imap_arg_type {
    IMAP_ARG_ATOM,
    IMAP_ARG_QUOTED,
    IMAP_ARG_LITERAL,
    IMAP_ARG_LIST,     /* "(" */
    IMAP_ARG_LIST_END, /* ")" */
};

struct imap_arg {
    uint8_t type;
    uint32_t off; /* from the start of the command */
    uint32_t len;
};

enum imap_parse_rc {
    IMAP_PARSE_AGAIN,    /* every byte so far is consumed; call again with more */
    IMAP_PARSE_DONE,     /* a command is complete; p->pos is its length */
    IMAP_PARSE_CONTINUE, /* a synchronising literal {n} was accepted: send "+", call again */
    IMAP_PARSE_ERROR,    /* p->err says why; see imap_parse_fatal() */
};

enum imap_parse_err {
    IMAP_ERR_NONE,
    IMAP_ERR_SYNTAX,     /* malformed command; the whole line was consumed */
    IMAP_ERR_TAG,        /* missing or invalid tag: never echo it */
    IMAP_ERR_NUL,        /* a NUL byte in a string or literal */
    IMAP_ERR_ARGS,       /* more than IMAP_MAX_ARGS arguments or lists nested too deep */
    IMAP_ERR_LITERAL,    /* a {n} literal over the size limit; the client sends no data */
    IMAP_ERR_TOO_LONG,   /* fatal: the command exceeds the size limit */
    IMAP_ERR_LITERAL_NS, /* fatal: a {n+} literal over the limit; its data is on its way */
};

struct imap_parser {
    uint32_t pos;      /* next byte to scan */
    uint32_t tok;      /* start of the token being scanned */
    uint32_t wr;       /* write position while unescaping a quoted string */
    uint32_t lit_left; /* literal bytes still to come */
    uint64_t lit_len;  /* literal length being read from {digits} */
    uint32_t max_len;  /* cap on the whole command, literals included */
    uint8_t state;
    uint8_t depth;
    uint8_t nargs;
    uint8_t err;
    bool lit_nonsync;
    bool line_mode; /* read one raw line (a SASL response) instead of a command */
    struct imap_arg args[IMAP_MAX_ARGS];
};

/* Prepares a parser for commands of at most max_len bytes, literals included. */
void imap_parser_init(struct imap_parser *p, uint32_t max_len);

/* Forgets the finished command; call before parsing the next one. */
void imap_parser_reset(struct imap_parser *p);

/* Makes the next parse read one raw line, for an AUTHENTICATE response. */
void imap_parser_expect_line(struct imap_parser *p);

/*
 * Parses the command that starts at buf[0]; len bytes are available.
 * On DONE, args[0] is the tag, args[1] the command name, and the rest its
 * arguments; in line mode, args[0] is the line without its CRLF.
 * On ERROR with a non-fatal err, p->pos is the length of the bad line, which
 * the caller discards; the tag in args[0] may be echoed unless err is
 * IMAP_ERR_TAG (nargs is 0 then).
 */
int imap_parse_command(struct imap_parser *p, char *buf, size_t len);

static inline bool imap_parse_fatal(const struct imap_parser *p)
{
    return p->err == IMAP_ERR_TOO_LONG || p->err == IMAP_ERR_LITERAL_NS;
}

/* True for an ATOM-CHAR (RFC 3501 section 9). */
bool imap_is_atom_char(unsigned char c);

/* True for a byte allowed in a tag: ASTRING-CHAR except "+" and < > & '. */
bool imap_is_tag_char(unsigned char c);

/*
 * Scanner for backend response lines, which may carry literals.
 */
struct imap_resp_scanner {
    uint32_t pos;
    uint32_t lit_left;
    uint32_t max_len;
};

static inline void imap_resp_init(struct imap_resp_scanner *s, uint32_t max_len)
{
    s->pos = 0;
    s->lit_left = 0;
    s->max_len = max_len;
}

/*
 * Finds the end of the response line starting at buf[0], skipping over any
 * literal it carries. Returns FG_OK with *len_r set to the line length
 * (CRLF included), FG_AGAIN, or FG_ERROR when the line exceeds the limit.
 * Reset the scanner with imap_resp_init() before the next line.
 */
int imap_resp_scan(struct imap_resp_scanner *s, const char *buf, size_t len, uint32_t *len_r);

/* How a string must be written so that an IMAP server reads it back unchanged. */
/*
 * Whether line (n bytes, a CR at its end ignored) ends in a literal's
 * announcement, "{size}" or the non-synchronising "{size+}": 1 with the
 * size and whether it synchronises, 0 when it does not, -1 when the size
 * has more than ten digits. Every reader of IMAP lines (commands, backend
 * responses, the load generator's responses) asks this one.
 */
int imap_literal_at_end(const char *line, size_t n, uint64_t *size_r, bool *sync_r);

enum imap_astring_kind {
    IMAP_ASTRING_ATOM,
    IMAP_ASTRING_QUOTED,
    IMAP_ASTRING_LITERAL,
};

/*
 * Chooses the encoding of s: an atom when every byte is an ATOM-CHAR, else a
 * quoted string when every byte is printable ASCII, else a literal (8-bit
 * bytes, controls). An empty string is quoted.
 */
enum imap_astring_kind imap_astring_kind(const char *s, size_t n);

/* Writes s as a quoted string (escaping " and \) into dst; returns the length.
 * dst needs 2 * n + 2 bytes. */
size_t imap_quote(const char *s, size_t n, char *dst);

#endif
