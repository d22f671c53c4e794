/*
 * The load generator's response readers and histogram. The readers are fed
 * every response whole, byte at a time, and split at every position, and
 * must give the same responses each way: a bench that miscounts a literal or
 * a dot-stuffed line would report throughput of data it never checked.
 */
#include <stdlib.h>

#include "../../bench/hist.h"
#include "../../bench/resp.h"
#include "harness.h"

#define MAXR 16

struct got {
    int n;
    enum imr_kind kind[MAXR];
    char line[MAXR][128];
    uint64_t lit[MAXR];
    int error;
};

/* Feeds data in pieces of at most `step` bytes (0 = split once at `split`). */
static void imr_run(const char *data, size_t n, size_t step, size_t split, struct got *g)
{
    struct imr *r = malloc(sizeof(*r));
    imr_init(r);
    memset(g, 0, sizeof(*g));
    size_t off = 0;
    while (off < n) {
        size_t len = step ? step : (off < split ? split - off : n - off);
        if (len > n - off)
            len = n - off;
        char *piece = th_guard_copy(data + off, len);
        size_t used = 0;
        while (used < len) {
            struct imr_resp out;
            int done;
            ssize_t u = imr_feed(r, piece + used, len - used, &out, &done);
            if (u < 0) {
                g->error = 1;
                th_guard_free(piece, len);
                free(r);
                return;
            }
            used += (size_t)u;
            if (done && g->n < MAXR) {
                g->kind[g->n] = out.kind;
                snprintf(g->line[g->n], sizeof(g->line[0]), "%.*s", (int)out.len, out.line);
                g->lit[g->n] = out.literal_bytes;
                g->n++;
            }
        }
        th_guard_free(piece, len);
        off += len;
    }
    free(r);
}

static void same(const struct got *a, const struct got *b, const char *how)
{
    CHECKF(a->n == b->n && a->error == b->error, "%s: %d responses (error %d), whole gave %d (%d)",
           how, b->n, b->error, a->n, a->error);
    for (int i = 0; i < a->n && i < b->n; i++) {
        CHECKF(a->kind[i] == b->kind[i] && a->lit[i] == b->lit[i] &&
                       strcmp(a->line[i], b->line[i]) == 0,
               "%s: response %d differs: '%s' %llu vs '%s' %llu", how, i, b->line[i],
               (unsigned long long)b->lit[i], a->line[i], (unsigned long long)a->lit[i]);
    }
}

static void test_imr_stream(void)
{
    static const char s[] = "* OK [CAPABILITY IMAP4rev1] ready\r\n"
                            "+ go ahead\r\n"
                            "* 1 FETCH (UID 1 RFC822.SIZE 12 BODY[] {12}\r\nab\r\n{3}\r\n.\r\n)\r\n"
                            "* 2 FETCH (BODY[HEADER] {4}\r\nx\r\n\r BODY[TEXT] {0}\r\n)\r\n"
                            "* 3 FETCH (BODY[] {2}\r\n}\n)\n"
                            "b1 OK done\r\n";
    struct got whole, g;
    imr_run(s, sizeof(s) - 1, sizeof(s), 0, &whole);
    CHECK_INT(whole.n, 6);
    CHECK_INT(whole.error, 0);
    CHECK_INT(whole.kind[0], IMR_UNTAGGED);
    CHECK(strcmp(whole.line[0], "* OK [CAPABILITY IMAP4rev1] ready") == 0);
    CHECK_INT(whole.kind[1], IMR_CONT);
    /* A literal's own "{3}\r\n" is data, not a new literal. */
    CHECK(strcmp(whole.line[2], "* 1 FETCH (UID 1 RFC822.SIZE 12 BODY[] {12}") == 0);
    CHECK_INT(whole.lit[2], 12);
    CHECK_INT(whole.lit[3], 4); /* two literals, one empty */
    CHECK_INT(whole.lit[4], 2); /* bare LF line ends are accepted */
    CHECK_INT(whole.kind[5], IMR_TAGGED);
    CHECK(strcmp(whole.line[5], "b1 OK done") == 0);
    imr_run(s, sizeof(s) - 1, 1, 0, &g);
    same(&whole, &g, "byte at a time");
    for (size_t k = 1; k < sizeof(s) - 1; k++) {
        imr_run(s, sizeof(s) - 1, 0, k, &g);
        char how[32];
        snprintf(how, sizeof(how), "split at %zu", k);
        same(&whole, &g, how);
    }
}

static void test_imr_limits(void)
{
    struct got g;
    size_t n = RESP_LINE_MAX + 10;
    char *long_line = malloc(n);
    memset(long_line, 'a', n);
    long_line[n - 2] = '\r';
    long_line[n - 1] = '\n';
    imr_run(long_line, n, n, 0, &g);
    CHECK_INT(g.error, 1);
    free(long_line);

    static const char huge[] = "* 1 FETCH (BODY[] {12345678901234567890}\r\n";
    imr_run(huge, sizeof(huge) - 1, 7, 0, &g);
    CHECK_INT(g.error, 1);

    /* "{x}" and "{}" are not literals: the line is a response of its own. */
    static const char notlit[] = "* OK {x}\r\n* OK {}\r\n";
    imr_run(notlit, sizeof(notlit) - 1, 1, 0, &g);
    CHECK_INT(g.n, 2);
    CHECK_INT(g.lit[0], 0);
}

/* A 1 MB literal is counted, not stored: any size passes through the reader. */
static void test_imr_big_literal(void)
{
    size_t body = 1 << 20;
    const char head[] = "* 1 FETCH (RFC822.SIZE 1048576 BODY[] {1048576}\r\n";
    const char tail[] = ")\r\nb2 OK\r\n";
    size_t n = sizeof(head) - 1 + body + sizeof(tail) - 1;
    char *s = malloc(n);
    memcpy(s, head, sizeof(head) - 1);
    memset(s + sizeof(head) - 1, '\n', body); /* newlines inside must not end a line */
    memcpy(s + sizeof(head) - 1 + body, tail, sizeof(tail) - 1);
    struct got g;
    imr_run(s, n, 65536, 0, &g);
    CHECK_INT(g.n, 2);
    CHECK_INT(g.lit[0], body);
    CHECK(strcmp(g.line[1], "b2 OK") == 0);
    free(s);
}

struct p3got {
    int n;
    enum p3r_status st[MAXR];
    char line[MAXR][64];
    uint64_t body[MAXR];
    char kept[MAXR][128];
    int error;
};

/* Feeds POP3 responses; the i-th is expected multi-line if multi[i]. */
static void p3r_run(const char *data, size_t n, size_t step, size_t split, const int *multi,
                    struct p3got *g)
{
    struct p3r *r = malloc(sizeof(*r));
    p3r_init(r);
    p3r_expect(r, multi[0], 1);
    memset(g, 0, sizeof(*g));
    size_t off = 0;
    while (off < n && !g->error) {
        size_t len = step ? step : (off < split ? split - off : n - off);
        if (len > n - off)
            len = n - off;
        char *piece = th_guard_copy(data + off, len);
        size_t used = 0;
        while (used < len) {
            struct p3r_resp out;
            int done;
            ssize_t u = p3r_feed(r, piece + used, len - used, &out, &done);
            if (u < 0) {
                g->error = 1;
                break;
            }
            used += (size_t)u;
            if (done && g->n < MAXR) {
                g->st[g->n] = out.status;
                snprintf(g->line[g->n], sizeof(g->line[0]), "%.*s", (int)out.len, out.line);
                g->body[g->n] = out.body_bytes;
                snprintf(g->kept[g->n], sizeof(g->kept[0]), "%.*s", (int)out.body_len, out.body);
                g->n++;
                p3r_expect(r, multi[g->n], 1);
            }
        }
        th_guard_free(piece, len);
        off += len;
    }
    free(r);
}

static void p3same(const struct p3got *a, const struct p3got *b, const char *how)
{
    CHECKF(a->n == b->n && a->error == b->error, "%s: %d responses, whole gave %d", how, b->n,
           a->n);
    for (int i = 0; i < a->n && i < b->n; i++)
        CHECKF(a->st[i] == b->st[i] && a->body[i] == b->body[i] &&
                       strcmp(a->kept[i], b->kept[i]) == 0 && strcmp(a->line[i], b->line[i]) == 0,
               "%s: response %d differs", how, i);
}

static void test_p3r_stream(void)
{
    static const char s[] = "+OK MOCK ready\r\n"
                            "+OK 13 octets\r\n"
                            "..a\r\n"
                            "b\r\n"
                            ".\rc\r\n"
                            "\r\n"
                            ".\r\n"
                            "-ERR no such message\r\n"
                            "+ \r\n"
                            "+OK\r\n"
                            ".\r\n";
    /* greeting, RETR, RETR that fails, AUTH continuation, LIST of nothing */
    static const int multi[] = {0, 1, 1, 0, 1, 0};
    struct p3got whole, g;
    p3r_run(s, sizeof(s) - 1, sizeof(s), 0, multi, &whole);
    CHECK_INT(whole.error, 0);
    CHECK_INT(whole.n, 5);
    CHECK_INT(whole.st[0], P3R_OK);
    CHECK(strcmp(whole.line[1], "+OK 13 octets") == 0);
    /* ".a\r\n" "b\r\n" "\rc\r\n" "\r\n": stuffing dots removed, 13 bytes. */
    CHECK_INT(whole.body[1], 13);
    CHECK(strcmp(whole.kept[1], ".a\r\nb\r\n\rc\r\n\r\n") == 0);
    CHECK_INT(whole.st[2], P3R_ERR); /* -ERR has no body even when one was expected */
    CHECK_INT(whole.body[2], 0);
    CHECK_INT(whole.st[3], P3R_CONT);
    CHECK_INT(whole.st[4], P3R_OK);
    CHECK_INT(whole.body[4], 0);
    p3r_run(s, sizeof(s) - 1, 1, 0, multi, &g);
    p3same(&whole, &g, "byte at a time");
    for (size_t k = 1; k < sizeof(s) - 1; k++) {
        p3r_run(s, sizeof(s) - 1, 0, k, multi, &g);
        char how[32];
        snprintf(how, sizeof(how), "split at %zu", k);
        p3same(&whole, &g, how);
    }
    static const char junk[] = "HTTP/1.0 200 OK\r\n";
    p3r_run(junk, sizeof(junk) - 1, 3, 0, multi, &g);
    CHECK_INT(g.error, 1);
}

static void test_hist(void)
{
    static struct hist h, h2;
    hist_init(&h);
    CHECK_INT(hist_quantile(&h, 0.5), 0);
    /* 1..100000 us, once each. */
    for (uint64_t v = 1; v <= 100000; v++)
        hist_record(&h, v * 1000);
    CHECK_INT(h.count, 100000);
    CHECK_INT(h.max_ns, 100000000);
    struct {
        double q;
        double want_us;
    } cases[] = {{0.5, 50000}, {0.9, 90000}, {0.99, 99000}, {0.999, 99900}, {0.0, 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        double got = (double)hist_quantile(&h, cases[i].q) / 1000.0;
        double err = (got - cases[i].want_us) / cases[i].want_us;
        CHECKF(err < 0.016 && err > -0.016, "q %.3f: %.1f us, want %.1f", cases[i].q, got,
               cases[i].want_us);
    }
    CHECK_INT(hist_quantile(&h, 1.0), 100000000);
    /* Every value maps to a bucket whose value is within 1/64 of it. */
    for (uint64_t v = 1; v < (1ull << 40); v = v * 3 + 1) {
        uint64_t b = hist_value(hist_index(v));
        double err = ((double)b - (double)v) / (double)v;
        CHECKF(err < 1.0 / 64 && err > -1.0 / 64, "value %llu in bucket of %llu",
               (unsigned long long)v, (unsigned long long)b);
    }
    CHECK_INT(hist_index(UINT64_MAX), HIST_BUCKETS - 1);
    hist_init(&h2);
    hist_record(&h2, 7);
    hist_merge(&h2, &h);
    CHECK_INT(h2.count, 100001);
    CHECK_INT(h2.min_ns, 7);
    CHECK_INT(h2.max_ns, 100000000);
}

int main(void)
{
    test_imr_stream();
    test_imr_limits();
    test_imr_big_literal();
    test_p3r_stream();
    test_hist();
    return th_finish("test_bench_resp");
}
