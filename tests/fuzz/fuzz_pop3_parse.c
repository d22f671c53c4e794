/*
 * libFuzzer target: the POP3 command-line parser (proto/pop3_parse.c).
 *
 * The first byte sets the line limit, the rest is a stream of lines. As for
 * IMAP, the stream is parsed twice, whole and in random-sized pieces (the
 * bytes yet to arrive unreadable), and both runs must find the
 * same lines. Every line found is checked against its bytes: it ends at its
 * first LF, the keyword and argument are where the spaces say, and has_nul
 * tells the truth.
 */
#include "../../proto/pop3_parse.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_EVENTS 1024

struct run {
    unsigned n;
    uint64_t ev[MAX_EVENTS];
};

static void check_line(const struct pop3_cmd *c, const char *buf, size_t have, uint32_t max_len)
{
    FZ_CHECK(c->line_len > 0 && c->line_len <= have && c->line_len <= max_len);
    FZ_CHECK(buf[c->line_len - 1] == '\n');
    FZ_CHECK(!memchr(buf, '\n', c->line_len - 1)); /* the first LF ends it */
    size_t n = c->line_len - 1;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    FZ_CHECK(c->name_len <= n && !memchr(buf, ' ', c->name_len));
    FZ_CHECK((uint64_t)c->arg_off + c->arg_len == n);
    if (c->name_len < n)
        FZ_CHECK(buf[c->name_len] == ' ' && c->arg_off == c->name_len + 1);
    else
        FZ_CHECK(c->arg_off == n && c->arg_len == 0);
    FZ_CHECK(c->has_nul == (memchr(buf, 0, n) != NULL));
}

/* Parses the stream; rng NULL hands every byte over at once. Bytes become
 * readable as they arrive, and unreadable again once their line is done. */
static void parse_stream(const uint8_t *data, size_t size, uint32_t max_len, struct fz_rng *rng,
                         struct run *r)
{
    struct pop3_parser p;
    struct fz_stream st;
    size_t off = 0, have = 0;

    fz_stream_open(&st, data, size);
    pop3_parser_init(&p, max_len);
    while (off < size) {
        size_t left = size - off;
        fz_arrive_next(&st, off, &have, rng, 32);
        const char *buf = st.p + off;
        struct pop3_cmd c;
        int rc = pop3_parse_line(&p, buf, have, &c);
        if (rc == POP3_PARSE_AGAIN) {
            FZ_CHECK(p.pos == have && have < max_len && !memchr(buf, '\n', have));
            if (have == left)
                break;
            continue;
        }
        if (rc == POP3_PARSE_TOO_LONG) {
            FZ_CHECK(have >= max_len && !memchr(buf, '\n', max_len));
            if (r->n < MAX_EVENTS)
                r->ev[r->n] = UINT64_MAX;
            r->n++;
            break;
        }
        FZ_CHECK(rc == POP3_PARSE_DONE && p.pos == 0);
        check_line(&c, buf, have, max_len);
        if (r->n < MAX_EVENTS)
            r->ev[r->n] = fz_hash(
                    fz_hash(0,
                            (uint32_t[]){c.line_len, c.name_len, c.arg_off, c.arg_len, c.has_nul},
                            5 * sizeof(uint32_t)),
                    buf, c.line_len);
        r->n++;
        fz_consumed(&st, off, c.line_len);
        off += c.line_len;
        have -= c.line_len;
    }
    fz_stream_close(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t max_len = 1 + (uint32_t)data[0] * 4;
    static struct run whole, pieces;
    struct fz_rng rng;

    fz_rng_seed(&rng, data, size);
    whole.n = pieces.n = 0;
    parse_stream(data + 1, size - 1, max_len, NULL, &whole);
    parse_stream(data + 1, size - 1, max_len, &rng, &pieces);
    FZ_CHECK(whole.n == pieces.n);
    for (unsigned i = 0; i < whole.n && i < MAX_EVENTS; i++)
        FZ_CHECK(whole.ev[i] == pieces.ev[i]);
    return 0;
}
