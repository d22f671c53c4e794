/*
 * libFuzzer target: the PROXY protocol parser (proto/proxy_proto.c).
 *
 * The input is what a connection's first bytes could be. It is parsed
 * whole, and again in random-sized pieces (the bytes yet to arrive
 * unreadable), and both runs must agree: the same result, the same reason,
 * the same header. Then:
 *  - a header never takes more bytes than there were, and the parser
 *    answered as soon as its last byte arrived: its first len bytes alone
 *    give the same header, and one byte fewer is not yet a header;
 *  - a v1 header ends in CRLF, a v2 header is 16 bytes and its length;
 *  - the addresses of a header that has them, encoded by pp_encode_v2 and
 *    parsed again, come back the same.
 */
#include "../../proto/proxy_proto.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct pp_run {
    enum pp_rc rc;
    const char *why;
    size_t fed; /* bytes the parser had when it answered */
    struct pp_header h;
};

/* Feeds data as it arrives; rng NULL hands it over at once. */
static void pp_run(const uint8_t *data, size_t size, struct fz_rng *rng, struct pp_run *r)
{
    struct fz_stream st;
    struct pp_parser p;
    size_t have = 0;

    fz_stream_open(&st, data, size);
    pp_init(&p);
    memset(&r->h, 0, sizeof r->h);
    do {
        fz_arrive_next(&st, 0, &have, rng, 16);
        r->rc = pp_parse(&p, (const uint8_t *)st.p, have, &r->h);
    } while (r->rc == PP_AGAIN && have < size);
    r->why = p.why;
    r->fed = have;
    FZ_CHECK((r->rc == PP_ERROR) == (p.why != NULL));
    fz_stream_close(&st);
}

/* The header's own length, shape and addresses. */
static void check_header(const uint8_t *data, size_t size, const struct pp_header *h)
{
    FZ_CHECK(h->len > 0 && h->len <= size);
    if (h->version == 1) {
        FZ_CHECK(h->len <= PP_V1_MAX && data[h->len - 2] == '\r' && data[h->len - 1] == '\n');
        FZ_CHECK(!memchr(data, '\n', h->len - 1));
    } else {
        FZ_CHECK(h->version == 2 && h->len >= PP_V2_HDR && h->len <= PP_V2_MAX);
        FZ_CHECK(h->len == PP_V2_HDR + (size_t)(data[14] << 8 | data[15]));
    }
    FZ_CHECK(strlen(h->authority) <= PP_AUTHORITY_MAX && h->unique_id_len <= PP_UNIQUE_ID_MAX);
    if (h->local)
        return;
    FZ_CHECK(h->src.sa.sa_family == h->dst.sa.sa_family);
    FZ_CHECK(h->src.sa.sa_family == AF_INET || h->src.sa.sa_family == AF_INET6);

    uint8_t out[128];
    struct pp_parser p;
    struct pp_header back;
    size_t n = pp_encode_v2(out, sizeof out, &h->src, &h->dst);
    pp_init(&p);
    FZ_CHECK(n > 0 && pp_parse(&p, out, n, &back) == PP_DONE && back.len == n && !back.local);
    FZ_CHECK(memcmp(&back.src, &h->src, sizeof back.src) == 0);
    FZ_CHECK(memcmp(&back.dst, &h->dst, sizeof back.dst) == 0);
}

/* A header is found on its last byte: exactly its bytes give it again,
 * and one fewer does not. */
static void check_prefix(const uint8_t *data, const struct pp_header *h)
{
    struct pp_run r;
    pp_run(data, h->len, NULL, &r);
    FZ_CHECK(r.rc == PP_DONE && memcmp(&r.h, h, sizeof r.h) == 0);
    pp_run(data, h->len - 1u, NULL, &r);
    FZ_CHECK(r.rc == PP_AGAIN);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pp_run whole, pieces;
    struct fz_rng rng;

    if (size > 4096)
        return 0; /* no header is longer than 1536 bytes */
    fz_rng_seed(&rng, data, size);
    pp_run(data, size, NULL, &whole);
    pp_run(data, size, &rng, &pieces);
    FZ_CHECK(whole.rc == pieces.rc && whole.why == pieces.why);
    FZ_CHECK(whole.fed <= size && pieces.fed <= size);
    if (whole.rc == PP_DONE) {
        FZ_CHECK(memcmp(&whole.h, &pieces.h, sizeof whole.h) == 0);
        FZ_CHECK(pieces.fed >= whole.h.len);
        check_header(data, size, &whole.h);
        check_prefix(data, &whole.h);
    }
    if (whole.rc == PP_AGAIN)
        FZ_CHECK(size < PP_V2_MAX); /* more than the longest header cannot still be one */
    return 0;
}
