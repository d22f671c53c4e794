/*
 * Response readers of the load generator: pure, resumable, no I/O (the
 * caller reads and feeds whatever arrived, split anywhere).
 *
 * imr_*: IMAP responses. A response is a line, or lines joined by literals
 * ("* 1 FETCH (BODY[] {1234}\r\n<1234 bytes>)\r\n"). Literal bytes are
 * counted, never copied, so a 1 MB FETCH costs one pass over the data.
 *
 * p3r_*: POP3 responses. A status line (+OK, -ERR, or "+ " for a SASL
 * continuation) and, when the caller expects one, a dot-terminated
 * multi-line body whose dot-stuffing is undone while counting.
 */
#ifndef FGB_RESP_H
#define FGB_RESP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RESP_LINE_MAX 4096 /* first line of a response; longer is a protocol error */
#define RESP_KEEP_MAX 1024 /* POP3 body bytes kept for the caller (LIST, UIDL) */

enum imr_kind { IMR_UNTAGGED, IMR_CONT, IMR_TAGGED };

struct imr {
    int in_literal;
    int first_done;    /* the first line of this response is complete */
    uint64_t lit_left; /* literal bytes still to come */
    uint64_t lit_total;
    size_t len;      /* bytes in line[] */
    size_t tail_len; /* bytes in tail[] */
    int reset;       /* a response was returned: start afresh on the next feed */
    char tail[24];   /* the end of a segment after a literal, to find "{n}" */
    char line[RESP_LINE_MAX];
};

struct imr_resp {
    enum imr_kind kind;
    const char *line; /* the first line, without CRLF; valid until the next feed */
    size_t len;
    uint64_t literal_bytes; /* sum of all literals in the response */
};

void imr_init(struct imr *r);
/*
 * Consumes bytes of p up to the end of one complete response. Returns the
 * number consumed and sets *done to 1 when *out holds a response (call again
 * with the rest); returns -1 on a protocol error (line too long, bad literal).
 */
ssize_t imr_feed(struct imr *r, const char *p, size_t n, struct imr_resp *out, int *done);

enum p3r_status { P3R_OK, P3R_ERR, P3R_CONT };

struct p3r {
    int state;
    int multi; /* the response being read has a body if +OK */
    int keep;  /* keep body bytes in kept[] */
    int reset; /* a response was returned: start afresh on the next feed */
    uint64_t body_bytes;
    size_t len;
    size_t kept_len;
    int kept_truncated;
    enum p3r_status status;
    char line[RESP_LINE_MAX];
    char kept[RESP_KEEP_MAX];
};

struct p3r_resp {
    enum p3r_status status;
    const char *line; /* status line without CRLF */
    size_t len;
    uint64_t body_bytes; /* after removing dot-stuffing, CRLFs included */
    const char *body;    /* kept body, when asked for */
    size_t body_len;
    int body_truncated;
};

void p3r_init(struct p3r *r);
/* Says what the next response is: multi = dot-terminated body after +OK; keep = keep it. */
void p3r_expect(struct p3r *r, int multi, int keep);
/* As imr_feed. */
ssize_t p3r_feed(struct p3r *r, const char *p, size_t n, struct p3r_resp *out, int *done);

#endif
