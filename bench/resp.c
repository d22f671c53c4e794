#include "resp.h"

#include "../proto/imap_parse.h"

#include <string.h>

/*
 * Appends the bytes of p from *used up to a LF to line (of length *len, at
 * most cap), and moves *used past them and the LF. Returns 1 when a LF ended
 * the line, 0 when the input ran out first, -1 when the line is too long.
 */
static int line_take(char *line, size_t *len, size_t cap, const char *p, size_t n, size_t *used)
{
    const char *nl = memchr(p + *used, '\n', n - *used);
    size_t chunk = nl ? (size_t)(nl - (p + *used)) : n - *used;
    if (*len + chunk > cap)
        return -1;
    memcpy(line + *len, p + *used, chunk);
    *len += chunk;
    *used += chunk + (nl != NULL);
    return nl != NULL;
}

void imr_init(struct imr *r)
{
    r->in_literal = 0;
    r->first_done = 0;
    r->lit_left = 0;
    r->lit_total = 0;
    r->len = 0;
    r->tail_len = 0;
    r->reset = 0;
}

/* "{n}" at the end of s (CRLF removed): 1 with *n_r, 0 when the line does not
 * end in a literal, -1 when the count overflows. A server sends no {n+}. */
static int imr_literal_at_end(const char *s, size_t len, uint64_t *n_r)
{
    bool sync;
    int rc = imap_literal_at_end(s, len, n_r, &sync);
    return rc == 1 && !sync ? 0 : rc;
}

/* Keeps the last bytes of a segment that follows a literal: only its end matters. */
static void imr_tail_add(struct imr *r, const char *p, size_t n)
{
    const size_t cap = sizeof(r->tail);
    if (n >= cap) {
        memcpy(r->tail, p + n - cap, cap);
        r->tail_len = cap;
        return;
    }
    if (r->tail_len + n > cap) {
        size_t drop = r->tail_len + n - cap;
        memmove(r->tail, r->tail + drop, r->tail_len - drop);
        r->tail_len -= drop;
    }
    memcpy(r->tail + r->tail_len, p, n);
    r->tail_len += n;
}

static enum imr_kind imr_kind_of(const char *s, size_t len)
{
    if (len >= 2 && s[0] == '*' && s[1] == ' ')
        return IMR_UNTAGGED;
    if (len >= 1 && s[0] == '+')
        return IMR_CONT;
    return IMR_TAGGED;
}

/* A segment ended at LF: either a literal follows, or the response is complete. */
static int imr_segment_end(struct imr *r, struct imr_resp *out, int *done)
{
    const char *s = r->first_done ? r->tail : r->line;
    size_t len = r->first_done ? r->tail_len : r->len;
    if (len > 0 && s[len - 1] == '\r')
        len--;
    if (!r->first_done)
        r->len = len;
    r->first_done = 1;
    r->tail_len = 0;
    uint64_t n = 0;
    int lit = imr_literal_at_end(s, len, &n);
    if (lit < 0)
        return -1;
    if (lit) {
        r->in_literal = n > 0;
        r->lit_left = n;
        r->lit_total += n;
        return 0;
    }
    out->kind = imr_kind_of(r->line, r->len);
    out->line = r->line;
    out->len = r->len;
    out->literal_bytes = r->lit_total;
    *done = 1;
    return 0;
}

ssize_t imr_feed(struct imr *r, const char *p, size_t n, struct imr_resp *out, int *done)
{
    size_t used = 0;
    *done = 0;
    if (r->reset)
        imr_init(r);
    while (used < n && !*done) {
        if (r->in_literal) {
            uint64_t take = n - used < r->lit_left ? n - used : r->lit_left;
            used += take;
            r->lit_left -= take;
            r->in_literal = r->lit_left > 0;
            continue;
        }
        int ended;
        if (r->first_done) {
            const char *nl = memchr(p + used, '\n', n - used);
            size_t chunk = nl ? (size_t)(nl - (p + used)) : n - used;
            imr_tail_add(r, p + used, chunk);
            used += chunk + (nl != NULL);
            ended = nl != NULL;
        } else {
            ended = line_take(r->line, &r->len, sizeof(r->line), p, n, &used);
        }
        if (ended < 0)
            return -1;
        if (!ended)
            break;
        if (imr_segment_end(r, out, done) < 0)
            return -1;
    }
    /* out->line points into r->line: clear it only when the caller comes back. */
    r->reset = *done;
    return (ssize_t)used;
}

enum { P3_STATUS, P3_LINESTART, P3_DOT, P3_DOT_CR, P3_MID };

/* Starts reading a new response; keeps what p3r_expect() said of it. */
static void p3r_restart(struct p3r *r)
{
    r->state = P3_STATUS;
    r->body_bytes = 0;
    r->len = 0;
    r->kept_len = 0;
    r->kept_truncated = 0;
    r->status = P3R_OK;
    r->reset = 0;
}

void p3r_init(struct p3r *r)
{
    r->multi = 0;
    r->keep = 0;
    p3r_restart(r);
}

void p3r_expect(struct p3r *r, int multi, int keep)
{
    r->multi = multi;
    r->keep = keep;
}

static void p3r_keep(struct p3r *r, const char *p, size_t n)
{
    if (!r->keep)
        return;
    size_t room = sizeof(r->kept) - r->kept_len;
    if (n > room) {
        n = room;
        r->kept_truncated = 1;
    }
    memcpy(r->kept + r->kept_len, p, n);
    r->kept_len += n;
}

static void p3r_complete(struct p3r *r, struct p3r_resp *out, int *done)
{
    out->status = r->status;
    out->line = r->line;
    out->len = r->len;
    out->body_bytes = r->body_bytes;
    out->body = r->kept;
    out->body_len = r->kept_len;
    out->body_truncated = r->kept_truncated;
    *done = 1;
    /* The expectation holds for one response: the caller states the next. */
    r->multi = 0;
    r->keep = 0;
    /* out points into r: clear it only when the caller comes back. */
    r->reset = 1;
}

/* The status line ended: decide whether a body follows. */
static int p3r_status_end(struct p3r *r, struct p3r_resp *out, int *done)
{
    if (r->len > 0 && r->line[r->len - 1] == '\r')
        r->len--;
    if (r->len >= 3 && memcmp(r->line, "+OK", 3) == 0)
        r->status = P3R_OK;
    else if (r->len >= 4 && memcmp(r->line, "-ERR", 4) == 0)
        r->status = P3R_ERR;
    else if (r->len >= 1 && r->line[0] == '+')
        r->status = P3R_CONT;
    else
        return -1;
    if (r->status == P3R_OK && r->multi) {
        r->state = P3_LINESTART;
        return 0;
    }
    p3r_complete(r, out, done);
    return 0;
}

/* Consumes body bytes; returns how many, and completes at ".\r\n". */
static size_t p3r_body(struct p3r *r, const char *p, size_t n, struct p3r_resp *out, int *done)
{
    size_t used = 0;
    while (used < n && !*done) {
        char c = p[used];
        switch (r->state) {
        case P3_LINESTART:
            r->state = c == '.' ? P3_DOT : P3_MID;
            used += c == '.'; /* a leading dot is stuffing or the terminator */
            break;
        case P3_DOT:
            if (c == '\r') {
                r->state = P3_DOT_CR;
                used++;
            } else {
                r->state = P3_MID;
            }
            break;
        case P3_DOT_CR:
            if (c == '\n') {
                used++;
                p3r_complete(r, out, done);
                break;
            }
            /* ".\r" not followed by LF: the CR was content. */
            r->body_bytes++;
            p3r_keep(r, "\r", 1);
            r->state = P3_MID;
            break;
        default: {
            const char *nl = memchr(p + used, '\n', n - used);
            size_t take = nl ? (size_t)(nl - (p + used)) + 1 : n - used;
            r->body_bytes += take;
            p3r_keep(r, p + used, take);
            used += take;
            if (nl)
                r->state = P3_LINESTART;
        }
        }
    }
    return used;
}

ssize_t p3r_feed(struct p3r *r, const char *p, size_t n, struct p3r_resp *out, int *done)
{
    size_t used = 0;
    *done = 0;
    if (r->reset)
        p3r_restart(r);
    while (used < n && !*done) {
        if (r->state != P3_STATUS) {
            used += p3r_body(r, p + used, n - used, out, done);
            continue;
        }
        int ended = line_take(r->line, &r->len, sizeof(r->line), p, n, &used);
        if (ended < 0)
            return -1;
        if (!ended)
            break;
        if (p3r_status_end(r, out, done) < 0)
            return -1;
    }
    return (ssize_t)used;
}
