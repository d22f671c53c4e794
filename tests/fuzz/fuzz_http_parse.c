/*
 * libFuzzer target: the metrics listener's request head parser
 * (proto/http_parse.c).
 *
 * The input is what an HTTP client could send. It is fed whole, and again
 * in random-sized pieces (each piece readable only once it arrived; the
 * bytes already taken poisoned again, since the parser must not look back),
 * and both runs must agree on the result, the status, the method, the path
 * and where the head ended. A head that is done ends with LF and took no
 * more than HTTP_HEAD_MAX bytes; a path kept is NUL-terminated within its
 * buffer and free of spaces and controls.
 */
#include "../../proto/http_parse.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct hp_run {
    enum http_rc rc;
    size_t end; /* bytes taken when it answered */
    struct http_parse p;
};

static void hp_run(const uint8_t *data, size_t size, struct fz_rng *rng, struct hp_run *r)
{
    struct fz_stream st;
    size_t have = 0, off = 0, used = 0;

    fz_stream_open(&st, data, size);
    http_parse_init(&r->p);
    r->rc = HTTP_AGAIN;
    while (r->rc == HTTP_AGAIN && off < size) {
        fz_arrive_next(&st, off, &have, rng, 32);
        r->rc = http_parse_feed(&r->p, st.p + off, have, &used);
        FZ_CHECK(used <= have);
        fz_consumed(&st, off, used);
        off += used;
        have -= used;
    }
    r->end = off;
    fz_stream_close(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct hp_run whole, pieces;
    struct fz_rng rng;

    if (size > 2 * HTTP_HEAD_MAX)
        return 0;
    fz_rng_seed(&rng, data, size);
    hp_run(data, size, NULL, &whole);
    hp_run(data, size, &rng, &pieces);
    FZ_CHECK(whole.rc == pieces.rc && whole.end == pieces.end);
    FZ_CHECK(whole.end <= size && whole.end <= HTTP_HEAD_MAX);
    if (whole.rc == HTTP_ERROR)
        FZ_CHECK(whole.p.status == pieces.p.status &&
                 (whole.p.status == 400 || whole.p.status == 431));
    if (whole.rc == HTTP_DONE) {
        FZ_CHECK(data[whole.end - 1] == '\n');
        FZ_CHECK(whole.p.method == pieces.p.method && whole.p.minor == pieces.p.minor);
        FZ_CHECK(strcmp(whole.p.path, pieces.p.path) == 0);
        FZ_CHECK(whole.p.plen > 0 && whole.p.plen <= HTTP_PATH_MAX);
        for (size_t i = 0; i < whole.p.plen; i++)
            FZ_CHECK((unsigned char)whole.p.path[i] > ' ' && (unsigned char)whole.p.path[i] < 0x7f);
    }
    if (whole.rc == HTTP_AGAIN)
        FZ_CHECK(size < HTTP_HEAD_MAX + 1);
    return 0;
}
