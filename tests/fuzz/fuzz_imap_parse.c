/*
 * libFuzzer target: the IMAP command parser (proto/imap_parse.c).
 *
 * The first byte picks what the rest is:
 *  - a stream of commands (most values). It is parsed twice, once with every
 *    byte at hand and once fed in random-sized pieces, the bytes yet to
 *    arrive unreadable (ASan). A resumable parser must
 *    not care where its input was split: both runs must see the same
 *    commands, the same errors and the same arguments.
 *  - a credential (first byte 0xff): written as the backend login writes it
 *    (atom, quoted string or literal: imap_astring_kind, imap_quote) inside a
 *    LOGIN command, and parsed back; it must arrive unchanged.
 */
#include "../../proto/imap_parse.h"
#include "fuzz_util.h"

#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_EVENTS  512
#define ASTRING_MAX 1024 /* CRED_PASS_MAX */

/* What the parser returned, with a digest of the arguments it found. */
struct event {
    int rc;
    uint8_t err, nargs;
    uint32_t pos;
    uint64_t args;
};

struct run {
    unsigned n;
    struct event ev[MAX_EVENTS];
};

static void record(struct run *r, const struct imap_parser *p, int rc, const char *buf)
{
    struct event e = {.rc = rc, .err = p->err, .nargs = p->nargs, .pos = p->pos};
    if (rc == IMAP_PARSE_DONE || rc == IMAP_PARSE_ERROR) {
        for (unsigned i = 0; i < p->nargs; i++) {
            e.args = fz_hash(e.args, &p->args[i], sizeof p->args[i]);
            e.args = fz_hash(e.args, buf + p->args[i].off, p->args[i].len);
        }
    }
    if (r->n < MAX_EVENTS)
        r->ev[r->n] = e;
    r->n++;
}

/* What must hold of a finished (or failed) command. */
static void check_command(const struct imap_parser *p, int rc, size_t have)
{
    FZ_CHECK(p->pos > 0 && p->pos <= have);
    FZ_CHECK(p->nargs <= IMAP_MAX_ARGS);
    for (unsigned i = 0; i < p->nargs; i++)
        FZ_CHECK((uint64_t)p->args[i].off + p->args[i].len <= p->pos);
    if (rc == IMAP_PARSE_DONE) {
        FZ_CHECK(p->err == IMAP_ERR_NONE);
        FZ_CHECK(p->line_mode ? p->nargs == 1 : p->nargs >= 2);
    } else {
        FZ_CHECK(p->err != IMAP_ERR_NONE);
        if (p->err == IMAP_ERR_TAG)
            FZ_CHECK(p->nargs == 0); /* a bad tag is never echoed */
    }
}

/* Parses the stream; rng NULL hands every byte over at once. Quoted strings
 * are unescaped in place, inside their command, so one copy of the stream
 * serves: bytes become readable as they arrive, and unreadable again once
 * their command is done. */
static void parse_stream(const uint8_t *data, size_t size, uint32_t max_len, struct fz_rng *rng,
                         struct run *r)
{
    struct imap_parser p;
    struct fz_stream st;
    size_t off = 0, have = 0;

    fz_stream_open(&st, data, size);
    imap_parser_init(&p, max_len);
    while (off < size) {
        size_t left = size - off;
        fz_arrive_next(&st, off, &have, rng, 64);
        char *buf = st.p + off;
        int rc = imap_parse_command(&p, buf, have);
        if (rc == IMAP_PARSE_AGAIN) {
            FZ_CHECK(p.pos == have); /* every byte at hand was scanned */
            if (have == left)
                break;
            continue;
        }
        record(r, &p, rc, buf);
        if (rc == IMAP_PARSE_CONTINUE) {
            FZ_CHECK(p.pos <= have);
            if (have == left && p.pos == have)
                break;
            continue;
        }
        check_command(&p, rc, have);
        if (rc == IMAP_PARSE_ERROR && imap_parse_fatal(&p))
            break;
        fz_consumed(&st, off, p.pos);
        off += p.pos;
        have -= p.pos;
        if ((data[off % size] & 7) == 0)
            imap_parser_expect_line(&p); /* as after AUTHENTICATE */
        else
            imap_parser_reset(&p);
    }
    fz_stream_close(&st);
}

static void check_same(const struct run *a, const struct run *b)
{
    FZ_CHECK(a->n == b->n);
    for (unsigned i = 0; i < a->n && i < MAX_EVENTS; i++) {
        const struct event *x = &a->ev[i], *y = &b->ev[i];
        FZ_CHECK(x->rc == y->rc && x->err == y->err && x->nargs == y->nargs && x->pos == y->pos &&
                 x->args == y->args);
    }
}

/* A credential written as imap_backend_astring writes it, then parsed. */
static void astring_round_trip(const uint8_t *s, size_t n)
{
    enum imap_astring_kind kind = imap_astring_kind((const char *)s, n);
    size_t cap = 2 * n + 64, len = 0;
    char *cmd = malloc(cap);
    struct imap_parser p;

    if (kind == IMAP_ASTRING_LITERAL && memchr(s, 0, n)) {
        free(cmd); /* a NUL never gets this far: cred_set refuses it */
        return;
    }
    memcpy(cmd, "t LOGIN ", 8);
    len = 8;
    if (kind == IMAP_ASTRING_ATOM) {
        FZ_CHECK(n > 0);
        memcpy(cmd + len, s, n);
        len += n;
    } else if (kind == IMAP_ASTRING_QUOTED) {
        for (size_t i = 0; i < n; i++)
            FZ_CHECK(s[i] >= 0x20 && s[i] <= 0x7e);
        len += imap_quote((const char *)s, n, cmd + len);
    } else {
        len += (size_t)snprintf(cmd + len, cap - len, "{%zu}\r\n", n);
        memcpy(cmd + len, s, n);
        len += n;
    }
    memcpy(cmd + len, " p\r\n", 4);
    len += 4;

    char *buf = fz_dup(cmd, len);
    imap_parser_init(&p, (uint32_t)len);
    int rc = imap_parse_command(&p, buf, len);
    if (kind == IMAP_ASTRING_LITERAL) {
        FZ_CHECK(rc == IMAP_PARSE_CONTINUE);
        rc = imap_parse_command(&p, buf, len);
    }
    FZ_CHECK(rc == IMAP_PARSE_DONE && p.pos == len && p.nargs == 4);
    static const uint8_t types[] = {IMAP_ARG_ATOM, IMAP_ARG_QUOTED, IMAP_ARG_LITERAL};
    FZ_CHECK(p.args[2].type == types[kind]);
    FZ_CHECK(p.args[2].len == n && memcmp(buf + p.args[2].off, s, n) == 0);
    FZ_CHECK(p.args[3].len == 1 && buf[p.args[3].off] == 'p');
    free(buf);
    free(cmd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    if (data[0] == 0xff) {
        astring_round_trip(data + 1, FG_MIN(size - 1, (size_t)ASTRING_MAX));
        return 0;
    }
    /* The size limit: small ones reach the "too long" paths. */
    uint32_t max_len = 8 + (uint32_t)data[0] * 8;
    static struct run whole, pieces;
    struct fz_rng rng;

    fz_rng_seed(&rng, data, size);
    whole.n = pieces.n = 0;
    parse_stream(data + 1, size - 1, max_len, NULL, &whole);
    parse_stream(data + 1, size - 1, max_len, &rng, &pieces);
    check_same(&whole, &pieces);
    return 0;
}
