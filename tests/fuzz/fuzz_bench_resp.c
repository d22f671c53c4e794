/*
 * libFuzzer target: the load generator's response readers (bench/resp.c),
 * which read whatever a server under test sends.
 *
 * The first byte picks the reader (IMAP or POP3) and, for POP3, the
 * expectations (multi-line body, keep it) of each response in turn; the
 * rest is the server's bytes. They are read twice, whole and in random-sized
 * pieces (each a block of exactly the bytes at hand), and both runs must
 * return the same responses -- the same lines, literal byte counts, bodies
 * -- and fail at the same point: a reader that depends on how TCP split the
 * stream would report wrong figures.
 */
#include "../../bench/resp.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_EVENTS 512

struct run {
    unsigned n;
    uint64_t ev[MAX_EVENTS];
    bool error;
};

static void record(struct run *r, uint64_t h)
{
    if (r->n < MAX_EVENTS)
        r->ev[r->n] = h;
    r->n++;
}

static uint64_t imr_digest(const struct imr_resp *o)
{
    FZ_CHECK(o->len <= RESP_LINE_MAX);
    uint64_t h = fz_hash(0, o->line, o->len);
    h = fz_hash(h, &o->literal_bytes, sizeof o->literal_bytes);
    return fz_hash(h, (uint32_t[]){o->kind}, sizeof(uint32_t));
}

static uint64_t p3r_digest(const struct p3r_resp *o)
{
    FZ_CHECK(o->len <= RESP_LINE_MAX && o->body_len <= RESP_KEEP_MAX);
    FZ_CHECK(o->body_len <= o->body_bytes); /* what is kept was counted */
    uint64_t h = fz_hash(0, o->line, o->len);
    h = fz_hash(h, o->body, o->body_len);
    h = fz_hash(h, &o->body_bytes, sizeof o->body_bytes);
    return fz_hash(h, (uint32_t[]){o->status, (uint32_t)o->body_truncated}, 2 * sizeof(uint32_t));
}

/* One feed of a piece; returns the bytes used, or -1 on a protocol error. */
static ssize_t feed(bool pop3, struct imr *ir, struct p3r *pr, const char *p, size_t n,
                    uint8_t expect, struct run *r)
{
    int done = 0;
    ssize_t u;
    if (pop3) {
        struct p3r_resp o;
        p3r_expect(pr, expect & 1, (expect >> 1) & 1);
        u = p3r_feed(pr, p, n, &o, &done);
        if (done)
            record(r, p3r_digest(&o));
    } else {
        struct imr_resp o;
        u = imr_feed(ir, p, n, &o, &done);
        if (done)
            record(r, imr_digest(&o));
    }
    FZ_CHECK(u <= (ssize_t)n);
    FZ_CHECK(u != 0 || done || n == 0); /* progress, or a response */
    return u;
}

/* rng NULL: every byte at hand at once. The POP3 expectations are stated
 * before each response, from the expectation bits, as a client does. */
static void read_stream(bool pop3, uint8_t expect, const uint8_t *data, size_t size,
                        struct fz_rng *rng, struct run *r)
{
    static struct imr ir;
    static struct p3r pr;
    size_t off = 0;
    imr_init(&ir);
    p3r_init(&pr);
    while (off < size) {
        size_t n = rng ? fz_piece(rng, 64) : size - off;
        if (n > size - off)
            n = size - off;
        char *piece = fz_dup(data + off, n);
        size_t used = 0;
        while (used < n) {
            unsigned before = r->n;
            uint8_t e = (uint8_t)(expect >> (2 * (r->n % 4)));
            ssize_t u = feed(pop3, &ir, &pr, piece + used, n - used, e, r);
            if (u < 0) {
                r->error = true;
                free(piece);
                return;
            }
            used += (size_t)u;
            if (u == 0 && r->n == before)
                break;
        }
        free(piece);
        off += n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    static struct run whole, pieces;
    struct fz_rng rng;
    bool pop3 = data[0] & 1;
    uint8_t expect = data[1];

    fz_rng_seed(&rng, data, size);
    memset(&whole, 0, sizeof whole);
    memset(&pieces, 0, sizeof pieces);
    read_stream(pop3, expect, data + 2, size - 2, NULL, &whole);
    read_stream(pop3, expect, data + 2, size - 2, &rng, &pieces);
    FZ_CHECK(whole.n == pieces.n && whole.error == pieces.error);
    for (unsigned i = 0; i < whole.n && i < MAX_EVENTS; i++)
        FZ_CHECK(whole.ev[i] == pieces.ev[i]);
    return 0;
}
